/* Unit tests of the etcd client's pure parts: base64, txn bodies, txn replies,
 * error classification, API prefix choice and applying values to slots.
 * The reply texts are the ones measured against etcd 3.4 (see
 * ../shared/reference/etcd-v3-json.md). No network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <jansson.h>

#include "discovery.h"
#include "log.h"
#include "tap.h"

#define S(x) x, strlen(x)

static void
test_b64(void)
{
	static const struct { const char *plain, *enc; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
		{ "petstore", "cGV0c3RvcmU=" },
		{ "http://127.0.0.1:9001/v2", "aHR0cDovLzEyNy4wLjAuMTo5MDAxL3Yy" },
	};
	size_t i, n;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = disc_b64_encode(v[i].plain, strlen(v[i].plain), &n);
		unsigned char *d = disc_b64_decode(v[i].enc, strlen(v[i].enc), &n);

		is_str(e, v[i].enc, "b64 encode '%s'", v[i].plain);
		is_str((char *)d, v[i].plain, "b64 decode '%s'", v[i].enc);
		is_int(n, strlen(v[i].plain), "b64 decoded length of '%s'", v[i].enc);
		free(e);
		free(d);
	}
	/* binary with NUL and high bytes round-trips */
	{
		unsigned char bin[256], *d;
		char *e;

		for (i = 0; i < 256; i++)
			bin[i] = (unsigned char)i;
		e = disc_b64_encode(bin, 256, &n);
		d = disc_b64_decode(e, n, &n);
		ok(d != NULL && n == 256 && memcmp(d, bin, 256) == 0, "b64 round-trips 256 bytes");
		free(e);
		free(d);
	}
	ok(disc_b64_decode(S("Zm9v!"), &n) == NULL, "b64 rejects a bad character");
	ok(disc_b64_decode(S("Z"), &n) == NULL, "b64 rejects a lone char");
	ok(disc_b64_decode(S("Zh=="), &n) == NULL, "b64 rejects non-canonical trailing bits");
	{
		unsigned char *d = disc_b64_decode(S("Zm8"), &n);

		ok(d != NULL && n == 2 && memcmp(d, "fo", 2) == 0, "b64 accepts missing padding");
		free(d);
	}
}

static void
test_txn_body(void)
{
	const char *keys[] = { "petstore", "a/b" };
	char *body = disc_txn_body(keys, 2, 0);
	json_t *j = body ? json_loads(body, 0, NULL) : NULL;
	json_t *s = json_object_get(j, "success");

	ok(j != NULL, "txn body is JSON");
	is_int(json_array_size(s), 2, "txn body has one op per key");
	is_str(json_string_value(json_object_get(json_object_get(json_array_get(s, 0),
	    "request_range"), "key")), "cGV0c3RvcmU=", "key 0 is base64 of 'petstore'");
	is_str(json_string_value(json_object_get(json_object_get(json_array_get(s, 1),
	    "request_range"), "key")), "YS9i", "key 1 is base64 of 'a/b'");
	ok(json_object_get(j, "compare") == NULL, "no compare clause");
	ok(json_object_get(json_object_get(json_array_get(s, 0), "request_range"),
	    "min_mod_revision") == NULL, "no filter without min_rev");
	json_decref(j);
	free(body);

	body = disc_txn_body(keys, 2, 42);
	j = body ? json_loads(body, 0, NULL) : NULL;
	s = json_object_get(j, "success");
	is_str(json_string_value(json_object_get(json_object_get(json_array_get(s, 1),
	    "request_range"), "min_mod_revision")), "42", "min_rev as an int64 string on each range");
	json_decref(j);
	free(body);

	body = disc_txn_body(keys, 0, 0);
	is_str(body, "{\"success\":[]}", "the probe is an empty txn");
	free(body);

	is_int(disc_txn_count(1, DISC_MAX_TXN_OPS), 1, "1 key -> 1 txn");
	is_int(disc_txn_count(128, DISC_MAX_TXN_OPS), 1, "128 keys -> 1 txn");
	is_int(disc_txn_count(129, DISC_MAX_TXN_OPS), 2, "129 keys -> 2 txns");
	is_int(disc_txn_count(1000, DISC_MAX_TXN_OPS), 8, "1000 keys -> 8 txns");
	is_int(disc_txn_count(0, DISC_MAX_TXN_OPS), 0, "0 keys -> no txn");
}

/* Measured on etcd 3.4: a present key, then a missing one (no kvs, no count). */
static const char txn_reply[] =
    "{\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":\"10276657743932975437\","
    "\"revision\":\"4\",\"raft_term\":\"2\"},\"succeeded\":true,\"responses\":["
    "{\"response_range\":{\"header\":{\"revision\":\"4\"},\"kvs\":[{\"key\":\"cGV0c3RvcmU=\","
    "\"create_revision\":\"2\",\"mod_revision\":\"4\",\"version\":\"3\","
    "\"value\":\"aHR0cDovLzEyNy4wLjAuMTo5MDAxL3Yy\"}],\"count\":\"1\"}},"
    "{\"response_range\":{\"header\":{\"revision\":\"4\"}}}]}";

static void
test_txn_parse(void)
{
	struct disc_header hdr;
	struct disc_kv kv[3];
	const char *why;
	int r;

	r = disc_txn_parse(S(txn_reply), 2, kv, &hdr, &why);
	is_int(r, 0, "txn reply parses");
	is_int(hdr.revision, 4, "header revision read");
	ok(hdr.cluster_id == 14841639068965178418ull, "cluster_id above INT64_MAX read");
	ok(kv[0].present, "key 0 present");
	is_str(kv[0].value, "http://127.0.0.1:9001/v2", "key 0 value decoded");
	is_int(kv[0].mod_revision, 4, "int64 as a JSON string ('mod_revision':'4')");
	ok(!kv[1].present && kv[1].value == NULL, "missing kvs means absent");
	disc_kv_clear(kv, 2);

	/* min_mod_revision, measured on etcd 3.4: unchanged, changed, missing */
	r = disc_txn_parse(S("{\"header\":{\"revision\":\"3\"},\"succeeded\":true,\"responses\":["
	    "{\"response_range\":{\"header\":{\"revision\":\"3\"},\"count\":\"1\"}},"
	    "{\"response_range\":{\"header\":{\"revision\":\"3\"},\"kvs\":[{\"key\":\"Yg==\","
	    "\"create_revision\":\"3\",\"mod_revision\":\"3\",\"version\":\"1\",\"value\":\"eQ==\"}],"
	    "\"count\":\"1\"}},{\"response_range\":{\"header\":{\"revision\":\"3\"}}}]}"), 3, kv, &hdr, &why);
	ok(r == 0 && kv[0].present && kv[0].unchanged && kv[0].value == NULL,
	    "a count without kvs is a key present and unchanged");
	ok(kv[1].present && !kv[1].unchanged && kv[1].value && strcmp(kv[1].value, "y") == 0,
	    "a changed key comes with its value");
	ok(!kv[2].present && !kv[2].unchanged, "no count, no kvs: missing");
	disc_kv_clear(kv, 3);
	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"count\":[]}}]}"), 1, kv, &hdr, &why);
	ok(r < 0, "a count that is not an int64 is an error");

	/* the revision probe: an empty txn, answered with a header only */
	r = disc_txn_parse(S("{\"header\":{\"cluster_id\":\"6001611773266757492\",\"member_id\":"
	    "\"13049071153751544597\",\"revision\":\"17\",\"raft_term\":\"2\"},\"succeeded\":true}"),
	    0, kv, &hdr, &why);
	ok(r == 0 && hdr.revision == 17 && hdr.cluster_id == 6001611773266757492ull,
	    "empty txn reply gives the revision");
	r = disc_txn_parse(S("{\"succeeded\":true}"), 0, kv, &hdr, &why);
	ok(r == 0 && hdr.revision == 0, "no header: revision unknown (0)");
	r = disc_txn_parse(S("{\"header\":{\"revision\":\"x\"},\"succeeded\":true}"), 0, kv, &hdr, &why);
	ok(r == 0 && hdr.revision == 0, "a revision that is not an int64 is unknown");
	r = disc_txn_parse(S("{\"header\":{\"revision\":\"5\"},\"responses\":7}"), 1, kv, &hdr, &why);
	ok(r < 0 && hdr.revision == 0, "a refused reply leaves no revision");

	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[]}}]}"), 1, kv, NULL, &why);
	ok(r == 0 && !kv[0].present, "empty kvs means absent");
	disc_kv_clear(kv, 1);

	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[{\"key\":\"YQ==\","
	    "\"mod_revision\":\"9\"}],\"count\":\"1\"}}]}"), 1, kv, NULL, &why);
	ok(r == 0 && kv[0].present && kv[0].value && kv[0].len == 0,
	    "kv without 'value' (proto3 empty) is present and empty");
	disc_kv_clear(kv, 1);

	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[{\"mod_revision\":5,"
	    "\"value\":\"eA==\"}]}}]}"), 1, kv, NULL, &why);
	ok(r == 0 && kv[0].mod_revision == 5, "int64 as a JSON number is accepted too");
	disc_kv_clear(kv, 1);

	r = disc_txn_parse(S(txn_reply), 3, kv, NULL, &why);
	ok(r < 0 && why, "wrong number of responses is refused (%s)", why ? why : "");
	ok(!kv[0].present && kv[0].value == NULL, "out is cleared on failure");

	r = disc_txn_parse(S("404 page not found\n"), 1, kv, NULL, &why);
	ok(r < 0 && why && strstr(why, "JSON"), "non-JSON 404 body is an error (%s)", why ? why : "");
	r = disc_txn_parse("", 0, 1, kv, NULL, &why);
	ok(r < 0 && why && strstr(why, "empty"), "empty body is an error");
	r = disc_txn_parse(S("\x01\x02garbage{{{"), 1, kv, NULL, &why);
	ok(r < 0, "garbage is an error");
	r = disc_txn_parse(S("[1,2]"), 1, kv, NULL, &why);
	ok(r < 0, "a JSON array is an error");
	r = disc_txn_parse(S("{\"header\":{}}"), 1, kv, NULL, &why);
	ok(r < 0, "no 'responses' is an error");
	r = disc_txn_parse(S("{\"responses\":[{\"response_put\":{}}]}"), 1, kv, NULL, &why);
	ok(r < 0, "a response that is not a response_range is an error");
	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[{\"value\":\"!!\"}]}}]}"),
	    1, kv, NULL, &why);
	ok(r < 0 && why && strstr(why, "base64"), "a value that is not base64 is an error");
	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[{\"value\":\"eA==\","
	    "\"mod_revision\":\"four\"}]}}]}"), 1, kv, NULL, &why);
	ok(r < 0, "a mod_revision that is not an int64 is an error");
	r = disc_txn_parse(S("{\"responses\":[{\"response_range\":{\"kvs\":[{\"value\":\"eA==\"}]}},"
	    "{\"response_range\":{\"kvs\":\"x\"}}]}"), 2, kv, NULL, &why);
	ok(r < 0 && kv[0].value == NULL, "a bad second response clears the first");
}

static void
test_classify(void)
{
	char msg[200];

	is_int(disc_classify(200, S(txn_reply), msg, sizeof(msg)), DISC_OK, "200 JSON is ok");
	is_int(disc_classify(0, NULL, 0, msg, sizeof(msg)), DISC_TRANSPORT, "no reply is transport");
	/* the chunked 401 body (evhttp strips the chunking and the trailer) */
	is_int(disc_classify(401, S("{\"error\":\"etcdserver: invalid auth token\","
	    "\"message\":\"etcdserver: invalid auth token\",\"code\":16}"), msg, sizeof(msg)),
	    DISC_AUTH_INVALID, "401 code 16 is an invalid token");
	is_str(msg, "etcdserver: invalid auth token", "message kept for the log");
	/* etcd 3.6: no 'error', code and message only */
	is_int(disc_classify(401, S("{\"code\":16,\"message\":\"etcdserver: invalid auth token\"}"),
	    msg, sizeof(msg)), DISC_AUTH_INVALID, "3.6-style code 16 without 'error'");
	is_int(disc_classify(400, S("{\"code\":16,\"message\":\"x\"}"), msg, sizeof(msg)),
	    DISC_AUTH_INVALID, "code 16 wins over the status");
	is_int(disc_classify(400, S("{\"error\":\"etcdserver: authentication failed, invalid user ID "
	    "or password\",\"message\":\"etcdserver: authentication failed, invalid user ID or "
	    "password\",\"code\":3}"), msg, sizeof(msg)), DISC_AUTH_FAILED,
	    "400 code 3 authentication failed is a wrong password");
	is_int(disc_classify(400, S("{\"error\":\"etcdserver: user name is empty\",\"message\":"
	    "\"etcdserver: user name is empty\",\"code\":3}"), msg, sizeof(msg)), DISC_AUTH_REQUIRED,
	    "400 code 3 user name is empty: auth required");
	is_int(disc_classify(400, S("{\"error\":\"etcdserver: authentication is not enabled\","
	    "\"message\":\"etcdserver: authentication is not enabled\",\"code\":9}"), msg, sizeof(msg)),
	    DISC_AUTH_DISABLED, "code 9 authentication is not enabled");
	is_int(disc_classify(400, S("{\"code\":9}"), msg, sizeof(msg)), DISC_AUTH_DISABLED,
	    "code 9 without a message");
	is_int(disc_classify(400, S("{\"error\":\"etcdserver: too many operations in txn request\","
	    "\"message\":\"etcdserver: too many operations in txn request\",\"code\":3}"),
	    msg, sizeof(msg)), DISC_TOO_MANY_OPS, "too many operations in txn");
	is_int(disc_classify(403, S("{\"message\":\"etcdserver: permission denied\",\"code\":7}"),
	    msg, sizeof(msg)), DISC_PERMISSION, "code 7 permission denied");
	is_int(disc_classify(503, S("{\"message\":\"etcdserver: request timed out\",\"code\":14}"),
	    msg, sizeof(msg)), DISC_UNAVAILABLE, "code 14 is unavailable");
	is_int(disc_classify(404, S("404 page not found\n"), msg, sizeof(msg)), DISC_NOT_FOUND,
	    "plain-text 404 is not found (wrong prefix)");
	ok(strstr(msg, "404 page not found") != NULL, "404 text in the message: %s", msg);
	is_int(disc_classify(400, S("400 Bad Request: invalid header name"), msg, sizeof(msg)),
	    DISC_ERROR, "plain-text 400 is an error");
	is_int(disc_classify(502, S("<html>bad gateway</html>"), msg, sizeof(msg)),
	    DISC_UNAVAILABLE, "non-JSON 5xx is unavailable");
	is_int(disc_classify(200, S("garbage"), msg, sizeof(msg)), DISC_GARBAGE,
	    "200 with a non-JSON body is garbage");
	is_int(disc_classify(200, "", 0, msg, sizeof(msg)), DISC_GARBAGE, "200 empty body is garbage");
	is_int(disc_classify(200, S("[]"), msg, sizeof(msg)), DISC_GARBAGE, "200 JSON array is garbage");
	is_int(disc_classify(400, S("{\"message\":\"etcdserver: weird\",\"code\":3}"), msg, sizeof(msg)),
	    DISC_ERROR, "unknown code 3 message is an error");
	is_int(disc_classify(400, S("{\"message\":\"bad\x01\\nline\",\"code\":3}"), msg, sizeof(msg)),
	    DISC_ERROR, "control bytes in a message...");
	ok(strchr(msg, '\n') == NULL && strchr(msg, '\x01') == NULL, "...never reach the log line");
}

static void
test_version(void)
{
	char ver[40];

	is_str(disc_prefix_for_version(S("{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}"),
	    ver, sizeof(ver)), "/v3", "3.4 -> /v3");
	is_str(ver, "3.4.23", "version reported");
	is_str(disc_prefix_for_version(S("{\"etcdserver\":\"3.5.9\",\"etcdcluster\":\"3.5.0\"}"),
	    ver, sizeof(ver)), "/v3", "3.5 -> /v3");
	is_str(disc_prefix_for_version(S("{\"etcdserver\":\"3.3.25\"}"), ver, sizeof(ver)),
	    "/v3beta", "3.3 -> /v3beta");
	is_str(disc_prefix_for_version(S("{\"etcdserver\":\"3.2.32\"}"), ver, sizeof(ver)),
	    "/v3alpha", "3.2 -> /v3alpha");
	ok(disc_prefix_for_version(S("404 page not found"), ver, sizeof(ver)) == NULL,
	    "non-JSON /version -> NULL");
	ok(disc_prefix_for_version(S("{\"version\":\"1.0\"}"), ver, sizeof(ver)) == NULL,
	    "not etcd -> NULL");
	ok(disc_prefix_for_version(S("{\"etcdserver\":\"2.3.8\"}"), ver, sizeof(ver)) == NULL,
	    "etcd v2 -> NULL");
}

static struct disc_kv
kv_of(const char *v)
{
	struct disc_kv kv = { 0 };

	if (v != NULL) {
		kv.present = 1;
		kv.value = (char *)v;
		kv.len = strlen(v);
	}
	return kv;
}

static void
test_apply(void)
{
	struct event_base *base = event_base_new();
	char *urls[] = { (char *)"http://127.0.0.1:1" };
	struct etcd_conf conf = { .urls = urls, .nurls = 1, .timer_ms = 500, .timeout_ms = 200 };
	struct disc *d = disc_new(base, &conf);
	struct disc_slot *s, *t, *keys[300];
	struct disc_kv kv;
	struct url *held;
	char name[32];
	size_t i;

	ok(d != NULL, "disc_new");
	s = disc_slot(d, "petstore");
	t = disc_slot(d, "other");
	ok(s && t && s != t, "two slots");
	ok(disc_slot(d, "petstore") == s, "find-or-create returns the same slot");
	ok(s->url == NULL, "a new slot has no URL (the default applies)");
	for (i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "key-%zu", i);
		keys[i] = disc_slot(d, name);
	}
	for (i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "key-%zu", i);
		if (disc_slot(d, name) != keys[i] || strcmp(keys[i]->key, name) != 0)
			break;
	}
	is_int(i, 300, "300 slots found again after the hash grew");
	ok(disc_slot(d, "petstore") == s, "first slot still found");
	is_int(disc_nslots(d), 302, "302 slots");
	is_int(disc_txn_count(disc_nslots(d), DISC_MAX_TXN_OPS), 3, "302 keys -> 3 txns");

	kv = kv_of("http://127.0.0.1:9001/v2");
	is_int(disc_apply(d, s, &kv), 1, "a URL value changes the slot");
	is_str(s->url ? s->url->text : NULL, "http://127.0.0.1:9001/v2", "slot URL set");
	is_int(disc_apply(d, s, &kv), 0, "same value again: no change");
	held = url_ref(s->url);		/* a request in flight */

	kv = kv_of("not a url");
	is_int(disc_apply(d, s, &kv), 0, "a value that is not a URL changes nothing");
	is_str(s->url ? s->url->text : NULL, "http://127.0.0.1:9001/v2", "previous URL kept");
	kv = kv_of("ftp://x/y");
	is_int(disc_apply(d, s, &kv), 0, "ftp:// is refused");
	kv = kv_of("/relative/path");
	is_int(disc_apply(d, s, &kv), 0, "a relative path is refused");
	kv = kv_of("");
	is_int(disc_apply(d, s, &kv), 0, "an empty value is refused");
	kv.present = 1;
	kv.value = (char *)"http://a\0b";
	kv.len = 10;
	is_int(disc_apply(d, s, &kv), 0, "a value with a NUL byte is refused");

	kv = kv_of("http://127.0.0.1:9002/v3\n");
	is_int(disc_apply(d, s, &kv), 1, "a new URL (trailing newline trimmed) replaces it");
	is_str(s->url ? s->url->text : NULL, "http://127.0.0.1:9002/v3", "slot URL replaced");
	is_str(held->text, "http://127.0.0.1:9001/v2", "the in-flight request keeps its URL");
	url_unref(held);

	kv = kv_of(NULL);
	is_int(disc_apply(d, s, &kv), 1, "a deleted key changes the slot");
	ok(s->url == NULL, "deleted key -> default (NULL)");
	is_int(disc_apply(d, s, &kv), 0, "still deleted: no change");
	kv = kv_of("not a url");
	is_int(disc_apply(d, s, &kv), 0, "a bad value after delete keeps the default");
	ok(s->url == NULL, "still the default");
	kv = kv_of("https://example.com:8443/api");
	is_int(disc_apply(d, t, &kv), 1, "https URL accepted");
	ok(t->url && t->url->tls && t->url->port == 8443, "https URL parsed");

	disc_free(d);

	/* a disc freed with a poll in flight (nobody listening on port 1 or the
	 * request still connecting) must not call back into freed memory */
	d = disc_new(base, &conf);
	disc_slot(d, "a");
	is_int(disc_start(d), 0, "disc_start with a dead member");
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	disc_free(d);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ok(1, "disc_free with a request in flight");

	/* a member that accepts and never answers: the request is in flight */
	{
		struct sockaddr_in sa = { .sin_family = AF_INET };
		socklen_t sl = sizeof(sa);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		char url[64];
		struct timeval tv = { 0, 350000 };

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		bind(fd, (struct sockaddr *)&sa, sizeof(sa));
		listen(fd, 16);
		getsockname(fd, (struct sockaddr *)&sa, &sl);
		snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sa.sin_port));
		urls[0] = url;
		d = disc_new(base, &conf);
		s = disc_slot(d, "a");
		is_int(disc_start(d), 0, "disc_start with a hanging member");
		event_base_loop(base, EVLOOP_NONBLOCK);
		event_base_loop(base, EVLOOP_NONBLOCK);
		disc_free(d);
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
		ok(1, "disc_free with a request sent and unanswered");

		/* the hard deadline (200 ms) ends the poll; the slot keeps its default */
		d = disc_new(base, &conf);
		s = disc_slot(d, "a");
		is_int(disc_start(d), 0, "disc_start again");
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
		ok(s->url == NULL, "hanging member: default kept after the deadline");
		disc_free(d);
		close(fd);
	}

	conf.nurls = 0;
	d = disc_new(base, &conf);
	ok(d == NULL, "no URLs -> no discovery");
	urls[0] = (char *)"not a url";
	conf.nurls = 1;
	d = disc_new(base, &conf);
	ok(d == NULL, "no usable URL -> no discovery");
	event_base_free(base);
}

/* ---- a scripted etcd on the same event_base (raw sockets): exercises the
 * client's real path, including chunked error replies with an HTTP trailer ---- */

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

struct fake {
	struct evconnlistener *l;
	int port;
	int n_version, n_auth, n_txn;
	int txn_401;		/* answer this many txns with 401 code 16 first */
	int auth_bad;		/* wrong password */
	int auth_disabled;
	const char *txn_body;	/* 200 body of a txn */
	char last_auth_hdr[128];
};

static void
fake_reply(struct bufferevent *bev, int status, const char *body, int chunked)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	const char *reason = status == 200 ? "OK" : status == 401 ? "Unauthorized" : "Bad Request";

	if (chunked) {
		evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		    "Trailer: Grpc-Trailer-Content-Type\r\nTransfer-Encoding: chunked\r\n\r\n"
		    "%zx\r\n%s\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n",
		    status, reason, strlen(body), body);
	} else {
		evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n%s", status, reason, strlen(body), body);
	}
}

static void
fake_read(struct bufferevent *bev, void *arg)
{
	struct fake *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		char *head, *cl, *auth;
		size_t hlen, blen = 0;

		if (end.pos < 0)
			return;
		hlen = (size_t)end.pos + 4;
		head = malloc(hlen + 1);
		evbuffer_copyout(in, head, hlen);
		head[hlen] = '\0';
		if ((cl = strcasestr(head, "\r\nContent-Length:")) != NULL)
			blen = strtoul(cl + 17, NULL, 10);
		if (evbuffer_get_length(in) < hlen + blen) {
			free(head);
			return;
		}
		evbuffer_drain(in, hlen + blen);
		f->last_auth_hdr[0] = '\0';
		if ((auth = strcasestr(head, "\r\nAuthorization: ")) != NULL)
			sscanf(auth + 17, "%127[^\r]", f->last_auth_hdr);
		if (strncmp(head, "GET /version ", 13) == 0) {
			f->n_version++;
			fake_reply(bev, 200, "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}", 0);
		} else if (strncmp(head, "POST /v3/auth/authenticate ", 27) == 0) {
			f->n_auth++;
			if (f->auth_bad)
				fake_reply(bev, 400, "{\"error\":\"etcdserver: authentication failed, invalid "
				    "user ID or password\",\"message\":\"etcdserver: authentication failed, "
				    "invalid user ID or password\",\"code\":3}", 1);
			else if (f->auth_disabled)
				fake_reply(bev, 400, "{\"error\":\"etcdserver: authentication is not enabled\","
				    "\"message\":\"etcdserver: authentication is not enabled\",\"code\":9}", 1);
			else
				fake_reply(bev, 200, "{\"header\":{\"revision\":\"3\"},\"token\":\"gsSFNEelBQvVPVSc.10\"}", 0);
		} else if (strncmp(head, "POST /v3/kv/txn ", 16) == 0) {
			f->n_txn++;
			if (f->txn_401 > 0) {
				f->txn_401--;
				fake_reply(bev, 401, "{\"error\":\"etcdserver: invalid auth token\",\"message\":"
				    "\"etcdserver: invalid auth token\",\"code\":16}", 1);
			} else {
				fake_reply(bev, 200, f->txn_body, 0);
			}
		} else {
			static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Type: "
			    "text/plain\r\nContent-Length: 19\r\n\r\n404 page not found\n";

			bufferevent_write(bev, nf, strlen(nf));
		}
		free(head);
	}
}

static void
fake_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		bufferevent_free(bev);
}

static void
fake_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l), fd,
	    BEV_OPT_CLOSE_ON_FREE);

	bufferevent_setcb(bev, fake_read, NULL, fake_event, arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
fake_start(struct event_base *base, struct fake *f)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->l = evconnlistener_new_bind(base, fake_accept, f, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
	    16, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(evconnlistener_get_fd(f->l), (struct sockaddr *)&sa, &sl);
	f->port = ntohs(sa.sin_port);
}

static void
run_for(struct event_base *base, long ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* Run the loop until cond holds, at most ms milliseconds (valgrind is slow). */
#define RUN_UNTIL(base, cond, ms) do { \
	int left_ = (ms) / 10; \
	while (!(cond) && left_-- > 0) \
		run_for(base, 10); \
} while (0)

static const char one_key_reply[] =
    "{\"header\":{\"revision\":\"5\"},\"succeeded\":true,\"responses\":[{\"response_range\":"
    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{\"key\":\"cGV0c3RvcmU=\",\"create_revision\":\"2\","
    "\"mod_revision\":\"5\",\"version\":\"2\",\"value\":\"aHR0cDovLzEyNy4wLjAuMTo5MDAxL3Yy\"}],"
    "\"count\":\"1\"}}]}";

static void
test_client(void)
{
	struct event_base *base = event_base_new();
	char url[64], *urls[] = { url };
	struct etcd_conf conf = { .urls = urls, .nurls = 1, .timer_ms = 100, .timeout_ms = 500,
	    .username = (char *)"root", .password = (char *)"pw" };
	struct fake f = { 0 };
	struct disc *d;
	struct disc_slot *s;

	fake_start(base, &f);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f.port);

	/* token expired: 401 code 16 in a chunked body with a trailer -> re-auth, retry once */
	f.txn_401 = 1;
	f.txn_body = one_key_reply;
	d = disc_new(base, &conf);
	s = disc_slot(d, "petstore");
	disc_start(d);
	RUN_UNTIL(base, s->url != NULL, 3000);
	is_str(s->url ? s->url->text : NULL, "http://127.0.0.1:9001/v2",
	    "first poll: 401 code 16 (chunked, trailer) -> re-auth and retry in the same poll");
	is_int(f.n_auth, 2, "authenticated twice");
	is_int(f.n_txn, 2, "txn sent twice");
	is_int(f.n_version, 1, "/version asked once");
	is_str(f.last_auth_hdr, "gsSFNEelBQvVPVSc.10", "Authorization: <token>, no Bearer");
	RUN_UNTIL(base, f.n_txn >= 4, 3000);
	is_int(f.n_auth, 2, "the token is reused by later polls");
	ok(f.n_txn >= 4, "later polls ran (%d txns)", f.n_txn);
	disc_free(d);

	/* wrong password: chunked 400 code 3 with a trailer -> back-off, no tight loop */
	memset(&f.n_version, 0, sizeof(int) * 3);
	f.auth_bad = 1;
	d = disc_new(base, &conf);
	s = disc_slot(d, "petstore");
	disc_start(d);
	RUN_UNTIL(base, f.n_auth > 0, 3000);
	run_for(base, 700);
	is_int(f.n_auth, 1, "wrong password: one authenticate in 700 ms at a 100 ms period");
	is_int(f.n_txn, 0, "no txn without a token");
	ok(s->url == NULL, "defaults kept");
	disc_free(d);

	/* auth disabled on the server: no token, no header */
	memset(&f.n_version, 0, sizeof(int) * 3);
	f.auth_bad = 0;
	f.auth_disabled = 1;
	d = disc_new(base, &conf);
	s = disc_slot(d, "petstore");
	disc_start(d);
	RUN_UNTIL(base, f.n_txn >= 2, 3000);
	is_int(f.n_auth, 1, "auth disabled: authenticate asked once");
	ok(f.n_txn >= 2, "polls go on without a token");
	is_str(f.last_auth_hdr, "", "no Authorization header");
	ok(s->url != NULL, "value read");
	disc_free(d);

	/* garbage txn reply: nothing applied, polling goes on */
	memset(&f.n_version, 0, sizeof(int) * 3);
	f.txn_body = "<html>not etcd</html>";
	conf.username = NULL;
	d = disc_new(base, &conf);
	s = disc_slot(d, "petstore");
	disc_start(d);
	RUN_UNTIL(base, f.n_txn >= 2, 3000);
	ok(s->url == NULL, "garbage txn reply: nothing applied");
	ok(f.n_txn >= 2, "polling goes on");
	disc_free(d);

	evconnlistener_free(f.l);
	run_for(base, 10);
	event_base_free(base);
}

int
main(void)
{
	log_set_level(getenv("TEST_VERBOSE") ? LOG_DEBUG : LOG_ERR);
	test_b64();
	test_txn_body();
	test_txn_parse();
	test_classify();
	test_version();
	test_apply();
	test_client();
	return tap_done();
}
