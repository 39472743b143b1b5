/*
 * discovery: the etcd v3 JSON client and the key -> URL table (its only writer).
 *
 * One poll fetches every key in one round trip: POST {prefix}/kv/txn with one
 * request_range per key, at most max_ops (128) per txn; larger key sets go as
 * several txns sent at once, each on its own connection. A poll is a small
 * state machine over the current cluster member:
 *
 *   [prefix unknown] GET /version -> /v3 | /v3beta | /v3alpha
 *   [username, no token, auth not known disabled] POST {prefix}/auth/authenticate
 *   POST {prefix}/kv/txn x N  -> apply each txn that succeeded
 *
 * Failures: transport error, timeout, garbage or 5xx from a member -> the next
 * member is tried in the same poll (each member at most once per poll), and the
 * member that answered is remembered for the next poll. 401 / code 16 -> forget
 * the token, re-authenticate and resend the failed txns once. Wrong password ->
 * one error line, then authenticate again only after a back-off (doubling up to
 * 60 s). Errors are logged once per state change, never once per poll.
 *
 * Every request has its own hard deadline (timeout_ms) besides evhttp's socket
 * timeouts: a member that hangs is dropped by freeing its connection.
 * evhttp callbacks never act inline: they copy the reply into the call and
 * activate one deferred event, so nothing is re-entered and no connection is
 * freed under its own callback.
 *
 * https members: each TCP connection gets a fresh SSL (verified against the
 * etcd CA file or the system store, host name checked, optional client
 * certificate). evhttp would reconnect a closed connection with the SSL of
 * the old one, so a closed https connection is replaced instead.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "discovery.h"
#include "log.h"
#include "mono.h"
#include "tls.h"

#define ROOM			"etcd"
/* A txn reply holds at most 128 keys whose values are URLs: a few KiB each at
 * most. A reply far beyond that is not etcd answering about URLs, and parsing
 * megabytes of it would stall the loop that serves traffic. */
#define DISC_MAX_BODY		(2u << 20)
#define DISC_MAX_HEADERS	(64u << 10)
#define DISC_BACKOFF_MAX_MS	60000u
#define DISC_LOGVAL		160	/* bytes of a value shown in a log line */
/* etcd wiped and made again with the same flags has the same cluster id and
 * counts revisions from 1 again: whatever the probe says, every key is read
 * at least this often. */
#define DISC_FULL_READ_MS	60000u

/* ---------------------------------------------------------------- types */

enum slot_state { SLOT_UNKNOWN = 0, SLOT_ABSENT, SLOT_SET };

struct dslot {
	struct disc_slot pub;	/* first: endpoints hold &pub */
	char *raw;		/* last value seen (applied or refused) */
	size_t rawlen;
	enum slot_state state;
};

struct member {
	struct url *url;
	char *base;			/* url path without a trailing '/' */
	const char *prefix;		/* API prefix, NULL = find out */
	unsigned probe;			/* prefix probes after 404s */
	int failed;			/* logged as unreachable */
	struct evhttp_connection **conns;
	size_t nconns;
};

enum call_kind { CALL_VERSION, CALL_AUTH, CALL_TXN };

struct call {
	struct disc *d;
	enum call_kind kind;
	size_t member, conn, batch;
	struct evhttp_request *req;	/* NULL once evhttp is done with it */
	struct event *deadline;
	int done;
	int status;			/* HTTP status, 0 = no reply */
	const char *reason;		/* for status 0 */
	char why[200];			/* a TLS reason, pointed to by reason */
	char *body;
	size_t bodylen;
	struct call *next;
};

enum batch_state { B_TODO, B_SENT, B_DONE, B_FAILED };

struct batch {
	size_t first, n;		/* n = 0: the revision probe */
	long long min_rev;		/* > 0: only values changed since */
	struct disc_header hdr;		/* of its reply */
	enum batch_state state;
	enum disc_class cls;
	char msg[160];
};

enum auth_state { AUTH_NONE, AUTH_OK, AUTH_BAD };

struct disc {
	struct event_base *base;
	struct evdns_base *dns;
	struct member *members;
	size_t nmembers, cur;

	char *username, *password;
	unsigned timer_ms, timeout_ms;

	struct dslot **slots;
	size_t nslots, capslots;
	size_t *hash;			/* slot index + 1, 0 = empty */
	size_t hashcap;

	struct event *timer;
	struct event *done_ev;		/* deferred completion of calls */
	struct call *calls;

	/* the poll in progress */
	int busy;
	size_t tried;			/* members tried in this poll */
	int auth_retried;
	struct batch *batches;
	size_t nbatches, pending;
	size_t max_ops;
	uint64_t poll_started;
	unsigned long long polls;
	/* The store revision every slot is at least as new as (0 = unknown).
	 * While etcd answers the same revision nothing can have changed, so a
	 * poll first sends an empty txn and reads the keys only if it moved. */
	struct disc_header seen;
	uint64_t seen_at;		/* when every key was last read with its value */
	int probing;			/* the poll in progress is that probe */
	int reading_all;		/* it reads every key with its value */

	/* auth */
	char *token;
	int auth_disabled;
	enum auth_state auth;
	uint64_t auth_retry_at;
	unsigned auth_backoff_ms;

	/* state logged once per change */
	int down;			/* no member answered */
	enum disc_class problem;	/* last non-member problem logged */
	int first_ok;			/* a poll has succeeded */
	char *prefix_owned;		/* api_prefix override, or NULL */
	SSL_CTX *tls;			/* for https members; not owned */
};

static void step(struct disc *d);
static void poll_end(struct disc *d, int ok);

/* ---------------------------------------------------------------- helpers */


static void
secret_free(char *s)
{
	if (s != NULL) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* A value made printable for a log line: control bytes escaped, long values cut. */
static const char *
printable(const char *s, size_t len, char *buf, size_t buflen)
{
	size_t i, o = 0;

	if (s == NULL)
		return "(null)";
	for (i = 0; i < len && o + 8 < buflen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'')
			o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", c);
		else
			buf[o++] = (char)c;
	}
	if (i < len && o + 4 <= buflen) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o < buflen ? o : buflen - 1] = '\0';
	return buf;
}

static const char *
url_or_default(const struct url *u)
{
	return u ? u->text : "(default)";
}

/* ---------------------------------------------------------------- base64 */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *
disc_b64_encode(const void *data, size_t len, size_t *outlen)
{
	const unsigned char *p = data;
	size_t n = 4 * ((len + 2) / 3), i, o = 0;
	char *out = malloc(n + 1);

	if (out == NULL)
		return NULL;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = b64chars[v >> 6 & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		out[o++] = b64chars[v >> 18 & 63];
		out[o++] = b64chars[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	if (outlen)
		*outlen = o;
	return out;
}

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* Accepts padded and unpadded input (and the URL-safe alphabet); rejects
 * anything else, including bits left over in the last character. */
unsigned char *
disc_b64_decode(const char *s, size_t len, size_t *outlen)
{
	unsigned char *out;
	uint32_t acc = 0;
	size_t o = 0, i, nd;
	int bits = 0;

	while (len > 0 && s[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return NULL;
	nd = len;
	out = malloc(nd / 4 * 3 + 3 + 1);
	if (out == NULL)
		return NULL;
	for (i = 0; i < nd; i++) {
		int v = b64val((unsigned char)s[i]);

		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) {		/* non-canonical trailing bits */
		free(out);
		return NULL;
	}
	out[o] = '\0';
	if (outlen)
		*outlen = o;
	return out;
}

/* ---------------------------------------------------------------- txn body */

size_t
disc_txn_count(size_t nkeys, size_t max_ops)
{
	if (max_ops == 0)
		max_ops = DISC_MAX_TXN_OPS;
	return (nkeys + max_ops - 1) / max_ops;
}

char *
disc_txn_body(const char *const *keys, size_t n, long long min_rev)
{
	struct evbuffer *b = evbuffer_new();
	char *out = NULL;
	size_t i, len;

	if (b == NULL)
		return NULL;
	evbuffer_add(b, "{\"success\":[", 12);
	for (i = 0; i < n; i++) {
		char *k = disc_b64_encode(keys[i], strlen(keys[i]), &len);

		if (k == NULL)
			goto out;
		if (min_rev > 0)
			evbuffer_add_printf(b, "%s{\"request_range\":{\"key\":\"%s\",\"min_mod_revision\":\"%lld\"}}",
			    i ? "," : "", k, min_rev);
		else
			evbuffer_add_printf(b, "%s{\"request_range\":{\"key\":\"%s\"}}", i ? "," : "", k);
		free(k);
	}
	evbuffer_add(b, "]}", 2);
	len = evbuffer_get_length(b);
	out = malloc(len + 1);
	if (out != NULL) {
		evbuffer_remove(b, out, len);
		out[len] = '\0';
	}
out:
	evbuffer_free(b);
	return out;
}

/* ---------------------------------------------------------------- replies */

/* etcd's int64s are JSON strings; accept integers as well. */
static int
json_int64(const json_t *v, long long *out)
{
	char *end;

	if (json_is_integer(v)) {
		*out = (long long)json_integer_value(v);
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	errno = 0;
	*out = strtoll(json_string_value(v), &end, 10);
	if (errno || end == json_string_value(v) || *end != '\0')
		return -1;
	return 0;
}

void
disc_kv_clear(struct disc_kv *kv, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(kv[i].value);
		memset(&kv[i], 0, sizeof(kv[i]));
	}
}

/* A header that cannot be read leaves the revision at 0 (unknown), which
 * only costs a full read on the next poll. */
static void
header_parse(const json_t *root, struct disc_header *hdr)
{
	const json_t *h = json_object_get(root, "header");
	const json_t *cid = json_object_get(h, "cluster_id");
	long long rev;

	memset(hdr, 0, sizeof(*hdr));
	if (json_int64(json_object_get(h, "revision"), &rev) < 0 || rev <= 0)
		return;
	/* cluster_id is a uint64: above INT64_MAX, so strtoull, not json_int64 */
	if (json_is_string(cid)) {
		char *end;

		errno = 0;
		hdr->cluster_id = strtoull(json_string_value(cid), &end, 10);
		if (errno || *end != '\0')
			return;
	}
	hdr->revision = rev;
}

int
disc_txn_parse(const char *body, size_t len, size_t n, struct disc_kv *out,
    struct disc_header *hdr, const char **why)
{
	const char *dummy;
	struct disc_header hdummy;
	json_t *root, *resps, *v;
	json_error_t jerr;
	size_t i;

	if (why == NULL)
		why = &dummy;
	if (hdr == NULL)
		hdr = &hdummy;
	*why = NULL;
	memset(hdr, 0, sizeof(*hdr));
	memset(out, 0, n * sizeof(*out));
	if (body == NULL || len == 0) {
		*why = "empty reply";
		return -1;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL) {
		*why = "reply is not JSON";
		return -1;
	}
	if (!json_is_object(root)) {
		*why = "reply is not a JSON object";
		goto bad;
	}
	header_parse(root, hdr);
	resps = json_object_get(root, "responses");
	if (resps == NULL && n == 0) {
		json_decref(root);
		return 0;
	}
	if (!json_is_array(resps)) {
		*why = "reply has no 'responses' array";
		goto bad;
	}
	if (json_array_size(resps) != n) {
		*why = "reply has the wrong number of responses";
		goto bad;
	}
	for (i = 0; i < n; i++) {
		json_t *rr = json_object_get(json_array_get(resps, i), "response_range");
		json_t *kvs, *kv, *val;
		long long rev = 0;

		if (!json_is_object(rr)) {
			*why = "a response is not a response_range";
			goto bad;
		}
		kvs = json_object_get(rr, "kvs");
		if (kvs == NULL || (json_is_array(kvs) && json_array_size(kvs) == 0)) {
			/* A missing key has no kvs and no count. With min_mod_revision
			 * etcd counts before it filters: a count without kvs is a key
			 * that exists and has not changed. */
			if ((v = json_object_get(rr, "count")) != NULL) {
				if (json_int64(v, &rev) < 0) {
					*why = "'count' is not an int64";
					goto bad;
				}
				out[i].present = out[i].unchanged = rev > 0;
			}
			continue;
		}
		if (!json_is_array(kvs) || !json_is_object(kv = json_array_get(kvs, 0))) {
			*why = "'kvs' is not an array of objects";
			goto bad;
		}
		if ((v = json_object_get(kv, "mod_revision")) != NULL && json_int64(v, &rev) < 0) {
			*why = "'mod_revision' is not an int64";
			goto bad;
		}
		val = json_object_get(kv, "value");
		out[i].present = 1;
		out[i].mod_revision = rev;
		if (val == NULL) {	/* proto3 leaves out an empty value */
			out[i].value = strdup("");
			out[i].len = 0;
		} else if (json_is_string(val)) {
			out[i].value = (char *)disc_b64_decode(json_string_value(val),
			    json_string_length(val), &out[i].len);
			if (out[i].value == NULL) {
				*why = "'value' is not base64";
				goto bad;
			}
		} else {
			*why = "'value' is not a string";
			goto bad;
		}
		if (out[i].value == NULL) {
			*why = "out of memory";
			goto bad;
		}
	}
	json_decref(root);
	return 0;
bad:
	disc_kv_clear(out, n);
	memset(hdr, 0, sizeof(*hdr));
	json_decref(root);
	return -1;
}

const char *
disc_class_name(enum disc_class c)
{
	static const char *const names[] = {
		"ok", "transport", "garbage", "not found", "invalid auth token",
		"authentication failed", "auth not enabled", "auth required",
		"permission denied", "too many operations", "unavailable", "error",
	};

	return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}

enum disc_class
disc_classify(int status, const char *body, size_t len, char *msg, size_t msglen)
{
	char tmp[200];
	json_t *j = NULL;
	const char *m = NULL;
	long long code = -1;
	enum disc_class c;

	if (msg == NULL) {
		msg = tmp;
		msglen = sizeof(tmp);
	}
	msg[0] = '\0';
	if (status <= 0) {
		snprintf(msg, msglen, "no reply");
		return DISC_TRANSPORT;
	}
	if (body != NULL && len > 0)
		j = json_loadb(body, len, 0, NULL);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	if (j != NULL) {
		json_t *v = json_object_get(j, "code");

		if (v != NULL && json_int64(v, &code) < 0)
			code = -1;
		v = json_object_get(j, "message");
		if (!json_is_string(v) || json_string_length(v) == 0)
			v = json_object_get(j, "error");
		if (json_is_string(v))
			m = json_string_value(v);
	}
	if (m != NULL) {
		printable(m, strlen(m), msg, msglen);
	} else if (body != NULL && len > 0) {
		size_t l = 0;

		while (l < len && l < 80 && body[l] != '\n' && body[l] != '\r')
			l++;
		printable(body, l, tmp, sizeof(tmp));
		snprintf(msg, msglen, "HTTP %d: %s", status, tmp);
	} else {
		snprintf(msg, msglen, "HTTP %d, empty body", status);
	}

	if (status >= 200 && status < 300) {
		if (j != NULL && code <= 0) {
			c = DISC_OK;
		} else {
			if (j == NULL)
				snprintf(msg, msglen, "%s", len ? "reply is not JSON" : "empty reply");
			c = j == NULL ? DISC_GARBAGE : DISC_ERROR;
		}
		goto out;
	}
	if (j == NULL) {
		/* plain text: "404 page not found", "400 Bad Request: invalid header name" */
		if (status == 404)
			c = DISC_NOT_FOUND;
		else if (status >= 500)
			c = DISC_UNAVAILABLE;
		else if (status == 401)
			c = DISC_AUTH_INVALID;
		else
			c = status >= 400 && status < 500 ? DISC_ERROR : DISC_GARBAGE;
		goto out;
	}
	if (status == 401 || code == 16) {
		c = DISC_AUTH_INVALID;
		goto out;
	}
	if (m != NULL && strstr(m, "authentication is not enabled")) {
		c = DISC_AUTH_DISABLED;
	} else if (m != NULL && strstr(m, "authentication failed")) {
		c = DISC_AUTH_FAILED;
	} else if (m != NULL && strstr(m, "user name is empty")) {
		c = DISC_AUTH_REQUIRED;
	} else if (m != NULL && (strstr(m, "invalid auth token") ||
	    strstr(m, "revision of auth store is old"))) {
		c = DISC_AUTH_INVALID;
	} else if (m != NULL && strstr(m, "too many operations")) {
		c = DISC_TOO_MANY_OPS;
	} else if (code == 7 || (m != NULL && strstr(m, "permission denied"))) {
		c = DISC_PERMISSION;
	} else if (code == 9 && m == NULL) {
		c = DISC_AUTH_DISABLED;
	} else if (code == 14 || code == 4 || status >= 500) {
		c = DISC_UNAVAILABLE;
	} else if (status == 404) {
		c = DISC_NOT_FOUND;
	} else {
		c = DISC_ERROR;
	}
out:
	json_decref(j);
	return c;
}

const char *
disc_prefix_for_version(const char *body, size_t len, char *ver, size_t verlen)
{
	json_t *j, *v;
	const char *p = NULL;
	unsigned major = 0, minor = 0;

	if (ver && verlen)
		ver[0] = '\0';
	if (body == NULL || len == 0)
		return NULL;
	j = json_loadb(body, len, 0, NULL);
	if (j == NULL)
		return NULL;
	v = json_object_get(j, "etcdserver");
	if (json_is_string(v) && sscanf(json_string_value(v), "%u.%u", &major, &minor) == 2) {
		if (ver && verlen)
			printable(json_string_value(v), json_string_length(v), ver, verlen);
		if (major > 3 || (major == 3 && minor >= 4))
			p = "/v3";
		else if (major == 3 && minor == 3)
			p = "/v3beta";
		else if (major == 3)
			p = "/v3alpha";
	}
	json_decref(j);
	return p;
}

/* ---------------------------------------------------------------- slots */

static uint64_t
hash_key(const char *s)
{
	uint64_t h = 14695981039346656037ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static int
hash_grow(struct disc *d)
{
	size_t cap = d->hashcap ? d->hashcap * 2 : 64, i;
	size_t *h = calloc(cap, sizeof(*h));

	if (h == NULL)
		return -1;
	for (i = 0; i < d->nslots; i++) {
		size_t j = (size_t)hash_key(d->slots[i]->pub.key) & (cap - 1);

		while (h[j])
			j = (j + 1) & (cap - 1);
		h[j] = i + 1;
	}
	free(d->hash);
	d->hash = h;
	d->hashcap = cap;
	return 0;
}

struct disc_slot *
disc_slot(struct disc *d, const char *key)
{
	struct dslot *s;
	size_t j;

	if (d == NULL || key == NULL)
		return NULL;
	if (d->hashcap) {
		j = (size_t)hash_key(key) & (d->hashcap - 1);
		for (; d->hash[j]; j = (j + 1) & (d->hashcap - 1))
			if (strcmp(d->slots[d->hash[j] - 1]->pub.key, key) == 0)
				return &d->slots[d->hash[j] - 1]->pub;
	}
	if ((d->nslots + 1) * 10 > d->hashcap * 7 && hash_grow(d) < 0)
		return NULL;
	if (d->nslots == d->capslots) {
		size_t cap = d->capslots ? d->capslots * 2 : 16;
		struct dslot **n = realloc(d->slots, cap * sizeof(*n));

		if (n == NULL)
			return NULL;
		d->slots = n;
		d->capslots = cap;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL || (s->pub.key = strdup(key)) == NULL) {
		free(s);
		return NULL;
	}
	d->slots[d->nslots++] = s;
	j = (size_t)hash_key(key) & (d->hashcap - 1);
	while (d->hash[j])
		j = (j + 1) & (d->hashcap - 1);
	d->hash[j] = d->nslots;
	return &s->pub;
}

size_t
disc_nslots(const struct disc *d)
{
	return d ? d->nslots : 0;
}

int
disc_apply(struct disc *d, struct disc_slot *ps, const struct disc_kv *kv)
{
	struct dslot *s = (struct dslot *)ps;
	char kbuf[DISC_LOGVAL + 8], vbuf[DISC_LOGVAL + 8];
	const char *err = NULL;
	struct url *u;

	(void)d;
	if (kv->unchanged)
		return 0;
	if (!kv->present) {
		free(s->raw);
		s->raw = NULL;
		s->rawlen = 0;
		if (s->state == SLOT_ABSENT)
			return 0;
		printable(s->pub.key, strlen(s->pub.key), kbuf, sizeof(kbuf));
		if (s->pub.url != NULL) {
			log_info(ROOM, "etcd key '%s': %s -> (default) (key not found in etcd)",
			    kbuf, s->pub.url->text);
			url_unref(s->pub.url);
			s->pub.url = NULL;
			s->state = SLOT_ABSENT;
			return 1;
		}
		if (s->state == SLOT_UNKNOWN)
			log_info(ROOM, "etcd key '%s' is not set in etcd; its default URL applies", kbuf);
		else
			log_info(ROOM, "etcd key '%s' was deleted; its default URL applies", kbuf);
		s->state = SLOT_ABSENT;
		return 0;
	}
	if (s->raw != NULL && s->rawlen == kv->len && memcmp(s->raw, kv->value, kv->len) == 0)
		return 0;	/* seen already: applied, or refused and warned about */
	free(s->raw);
	s->raw = malloc(kv->len + 1);
	if (s->raw != NULL) {
		memcpy(s->raw, kv->value, kv->len);
		s->raw[kv->len] = '\0';
		s->rawlen = kv->len;
	}
	s->state = SLOT_SET;
	printable(s->pub.key, strlen(s->pub.key), kbuf, sizeof(kbuf));
	if (memchr(kv->value, '\0', kv->len) != NULL) {
		u = NULL;
		err = "value contains a NUL byte";
	} else {
		u = url_parse(kv->value, &err);
	}
	if (u == NULL) {
		log_warn(ROOM, "etcd key '%s': ignoring value '%s' (%s); keeping %s", kbuf, printable(kv->value, kv->len, vbuf, sizeof(vbuf)),
		    err ? err : "not an absolute http(s) URL", url_or_default(s->pub.url));
		return 0;
	}
	if (s->pub.url != NULL && strcmp(s->pub.url->text, u->text) == 0) {
		url_unref(u);
		return 0;
	}
	log_info(ROOM, "etcd key '%s': %s -> %s", kbuf, url_or_default(s->pub.url), u->text);
	url_unref(s->pub.url);
	s->pub.url = u;
	return 1;
}

/* ---------------------------------------------------------------- calls */

static void
call_free(struct call *c)
{
	if (c->deadline)
		event_free(c->deadline);
	free(c->body);
	free(c);
}

static void
call_unlink(struct disc *d, struct call *c)
{
	struct call **pp;

	for (pp = &d->calls; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			return;
		}
}

static void
call_error_cb(enum evhttp_request_error err, void *arg)
{
	struct call *c = arg;

	switch (err) {
	case EVREQ_HTTP_TIMEOUT:	c->reason = "timed out"; break;
	case EVREQ_HTTP_EOF:		c->reason = "connection closed"; break;
	case EVREQ_HTTP_INVALID_HEADER:	c->reason = "invalid HTTP reply"; break;
	case EVREQ_HTTP_BUFFER_ERROR:	c->reason = "connection error"; break;
	case EVREQ_HTTP_DATA_TOO_LONG:	c->reason = "reply too large"; break;
	default:			c->reason = "request failed"; break;
	}
	/* evhttp has reset the connection, but its bufferevent keeps the TLS
	 * reason: a refused certificate, a handshake alert... */
	{
		struct member *m = &c->d->members[c->member];
		char why[160];

		if (m->url->tls && c->conn < m->nconns && m->conns[c->conn] != NULL &&
		    tls_failure(evhttp_connection_get_bufferevent(m->conns[c->conn]), why,
		    sizeof(why)) != NULL) {
			snprintf(c->why, sizeof(c->why), "TLS: %s", why);
			c->reason = c->why;
		}
	}
}

/* evhttp's callback: copy what is needed, finish later (never inline). */
static void
call_done_cb(struct evhttp_request *req, void *arg)
{
	struct call *c = arg;

	c->req = NULL;
	c->done = 1;
	if (c->deadline)
		event_del(c->deadline);
	if (req != NULL && evhttp_request_get_response_code(req) > 0) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t n = in ? evbuffer_get_length(in) : 0;

		c->status = evhttp_request_get_response_code(req);
		c->body = malloc(n + 1);
		if (c->body != NULL) {
			if (n)
				evbuffer_copyout(in, c->body, n);
			c->body[n] = '\0';
			c->bodylen = n;
		}
	} else {
		c->status = 0;
		if (c->reason == NULL)
			c->reason = "connection failed";
	}
	event_active(c->d->done_ev, EV_WRITE, 0);
}

/* Hard deadline of one request: drop its connection (evhttp frees the request
 * without calling back), then complete the call as timed out. */
static void
call_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct call *c = arg;
	struct disc *d = c->d;
	struct member *m = &d->members[c->member];

	if (c->done)
		return;
	if (c->conn < m->nconns && m->conns[c->conn] != NULL) {
		evhttp_connection_free(m->conns[c->conn]);
		m->conns[c->conn] = NULL;
	}
	c->req = NULL;
	c->done = 1;
	c->status = 0;
	c->reason = "timed out";
	event_active(d->done_ev, EV_WRITE, 0);
}

static int
host_is_numeric(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

static struct evhttp_connection *
member_conn(struct disc *d, struct member *m, size_t i)
{
	struct evhttp_connection *conn;
	struct timeval tv;

	if (i >= m->nconns) {
		struct evhttp_connection **n = realloc(m->conns, (i + 1) * sizeof(*n));

		if (n == NULL)
			return NULL;
		memset(n + m->nconns, 0, (i + 1 - m->nconns) * sizeof(*n));
		m->conns = n;
		m->nconns = i + 1;
	}
	if (m->conns[i] != NULL) {
		if (!m->url->tls || bufferevent_getfd(evhttp_connection_get_bufferevent(m->conns[i])) >= 0)
			return m->conns[i];
		/* A closed https connection: no request is on it (one call per
		 * connection at a time); a fresh one gets a fresh SSL. */
		evhttp_connection_free(m->conns[i]);
		m->conns[i] = NULL;
	}
	if (d->dns == NULL && !host_is_numeric(m->url->host)) {
		d->dns = evdns_base_new(d->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (d->dns == NULL)
			d->dns = evdns_base_new(d->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	}
	if (m->url->tls) {
		SSL *ssl = d->tls != NULL ? tls_client_ssl(d->tls, m->url->host, 1) : NULL;
		struct bufferevent *bev;

		if (ssl == NULL)
			return NULL;
		/* Deferred callbacks: the bytes read with a close come first. On
		 * failure the SSL goes with the bufferevent (CLOSE_ON_FREE). */
		bev = bufferevent_openssl_socket_new(d->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (bev == NULL)
			return NULL;
		conn = evhttp_connection_base_bufferevent_new(d->base, d->dns, bev, m->url->host,
		    m->url->port);
		if (conn == NULL) {
			bufferevent_free(bev);
			return NULL;
		}
	} else {
		conn = evhttp_connection_base_new(d->base, d->dns, m->url->host, m->url->port);
	}
	if (conn == NULL)
		return NULL;
	tv.tv_sec = d->timeout_ms / 1000;
	tv.tv_usec = (d->timeout_ms % 1000) * 1000;
	evhttp_connection_set_timeout_tv(conn, &tv);
	evhttp_connection_set_retries(conn, 0);
	evhttp_connection_set_max_body_size(conn, DISC_MAX_BODY);
	evhttp_connection_set_max_headers_size(conn, DISC_MAX_HEADERS);
	m->conns[i] = conn;
	return conn;
}

/* Send one request to the current member. The reply arrives through done_ev.
 * Returns -1 if it could not even be queued. */
static int
call_send(struct disc *d, enum call_kind kind, size_t conn_i, size_t batch,
    const char *path, const char *body, size_t bodylen)
{
	struct member *m = &d->members[d->cur];
	struct evhttp_connection *conn = member_conn(d, m, conn_i);
	struct evkeyvalq *h;
	struct call *c;
	struct timeval tv;
	char uri[1024];

	if (conn == NULL)
		return -1;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return -1;
	c->d = d;
	c->kind = kind;
	c->member = d->cur;
	c->conn = conn_i;
	c->batch = batch;
	c->deadline = evtimer_new(d->base, call_deadline_cb, c);
	c->req = evhttp_request_new(call_done_cb, c);
	if (c->deadline == NULL || c->req == NULL) {
		if (c->req)
			evhttp_request_free(c->req);
		call_free(c);
		return -1;
	}
	evhttp_request_set_error_cb(c->req, call_error_cb);
	h = evhttp_request_get_output_headers(c->req);
	evhttp_add_header(h, "Host", m->url->authority);
	evhttp_add_header(h, "Accept", "application/json");
	if (body != NULL) {
		evhttp_add_header(h, "Content-Type", "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(c->req), body, bodylen);
	}
	if (kind == CALL_TXN && d->token != NULL)
		evhttp_add_header(h, "Authorization", d->token);
	snprintf(uri, sizeof(uri), "%s%s%s", m->base,
	    kind == CALL_VERSION ? "" : m->prefix, path);
	c->next = d->calls;
	d->calls = c;
	tv.tv_sec = d->timeout_ms / 1000;
	tv.tv_usec = (d->timeout_ms % 1000) * 1000;
	evtimer_add(c->deadline, &tv);
	/* evhttp may call back synchronously (connection refused at once):
	 * call_done_cb only records the result, so that is harmless. */
	if (evhttp_make_request(conn, c->req, body ? EVHTTP_REQ_POST : EVHTTP_REQ_GET, uri) < 0) {
		/* the request is gone (freed by evhttp or never queued): fail the call */
		if (!c->done) {
			c->req = NULL;
			c->done = 1;
			c->status = 0;
			c->reason = "could not send the request";
			event_active(d->done_ev, EV_WRITE, 0);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- poll */

static const char *
member_name(const struct disc *d, size_t i)
{
	return d->members[i].url->text;
}

static void
member_ok(struct disc *d, size_t i)
{
	struct member *m = &d->members[i];

	if (m->failed) {
		log_info(ROOM, "etcd %s reachable again", member_name(d, i));
		m->failed = 0;
	}
	if (d->down) {
		if (d->nmembers > 1)
			log_info(ROOM, "etcd cluster reachable again through %s", member_name(d, i));
		d->down = 0;
	}
}

/* The current member failed at transport level (or answered garbage): try the
 * next one in this poll, unless every member has been tried. */
static void
member_failed(struct disc *d, const char *why)
{
	struct member *m = &d->members[d->cur];
	size_t i;

	if (!m->failed) {
		if (d->nmembers > 1)
			log_warn(ROOM, "etcd %s unreachable: %s; trying the next member",
			    member_name(d, d->cur), why);
		else
			log_warn(ROOM, "etcd %s unreachable: %s; keeping the last known URLs "
			    "(defaults for keys never read) and polling every %ums",
			    member_name(d, d->cur), why, d->timer_ms);
		m->failed = 1;
	}
	if (d->tried < d->nmembers) {
		d->cur = (d->cur + 1) % d->nmembers;
		d->tried++;
		for (i = 0; i < d->nbatches; i++)
			if (d->batches[i].state == B_FAILED)
				d->batches[i].state = B_TODO;
		step(d);
		return;
	}
	if (!d->down && d->nmembers > 1)
		log_err(ROOM, "etcd: no cluster member answered; keeping the last known URLs "
		    "(defaults for keys never read) and polling every %ums", d->timer_ms);
	d->down = 1;
	poll_end(d, 0);
}

/* A problem that is not a member's fault, logged once until it changes. */
static void
problem(struct disc *d, enum disc_class c, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
problem(struct disc *d, enum disc_class c, int level, const char *fmt, ...)
{
	char line[600];
	va_list ap;

	if (d->problem == c)
		return;
	d->problem = c;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(level, ROOM, "%s", line);
}

enum read_mode {
	READ_PROBE,	/* an empty txn: has the store revision moved? */
	READ_CHANGED,	/* every key, values only of those changed since seen */
	READ_ALL,	/* every key with its value */
};

/* The batches of a poll. */
static int
batches_make(struct disc *d, enum read_mode mode)
{
	int probe = mode == READ_PROBE;
	size_t i, nb = probe ? 1 : disc_txn_count(d->nslots, d->max_ops);

	free(d->batches);
	d->nbatches = 0;
	d->batches = calloc(nb, sizeof(*d->batches));
	if (d->batches == NULL)
		return -1;
	d->nbatches = nb;
	for (i = 0; i < nb && !probe; i++) {
		d->batches[i].first = i * d->max_ops;
		d->batches[i].n = d->nslots - d->batches[i].first < d->max_ops ?
		    d->nslots - d->batches[i].first : d->max_ops;
		if (mode == READ_CHANGED)
			d->batches[i].min_rev = d->seen.revision + 1;
	}
	d->probing = probe;
	d->reading_all = mode == READ_ALL;
	return 0;
}

static void
send_txns(struct disc *d)
{
	size_t i, j, sent = 0;

	for (i = 0; i < d->nbatches; i++) {
		struct batch *b = &d->batches[i];
		const char **keys;
		char *body;

		if (b->state != B_TODO)
			continue;
		keys = NULL;
		if (b->n > 0 && (keys = malloc(b->n * sizeof(*keys))) == NULL)
			goto fail;
		for (j = 0; j < b->n; j++)
			keys[j] = d->slots[b->first + j]->pub.key;
		body = disc_txn_body(keys, b->n, b->min_rev);
		free(keys);
		if (body == NULL)
			goto fail;
		b->state = B_SENT;
		d->pending++;
		sent++;
		if (call_send(d, CALL_TXN, i, i, "/kv/txn", body, strlen(body)) < 0) {
			d->pending--;
			b->state = B_FAILED;
			b->cls = DISC_TRANSPORT;
			snprintf(b->msg, sizeof(b->msg), "could not send the request");
			sent--;
		}
		free(body);
		continue;
fail:
		b->state = B_FAILED;
		b->cls = DISC_ERROR;
		snprintf(b->msg, sizeof(b->msg), "out of memory");
	}
	if (sent == 0 && d->pending == 0) {
		log_err(ROOM, "etcd: could not send any request to %s", member_name(d, d->cur));
		poll_end(d, 0);
	}
}

static void
step(struct disc *d)
{
	struct member *m = &d->members[d->cur];

	if (m->prefix == NULL) {
		if (call_send(d, CALL_VERSION, 0, 0, "/version", NULL, 0) < 0)
			member_failed(d, "could not send the request");
		return;
	}
	if (d->username != NULL && d->token == NULL && !d->auth_disabled) {
		json_t *j;
		char *body;

		if (d->auth == AUTH_BAD && mono_ms() < d->auth_retry_at) {
			poll_end(d, 0);		/* backing off after a wrong password */
			return;
		}
		j = json_pack("{s:s,s:s}", "name", d->username, "password",
		    d->password ? d->password : "");
		body = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (body == NULL || call_send(d, CALL_AUTH, 0, 0, "/auth/authenticate",
		    body, strlen(body)) < 0) {
			secret_free(body);
			member_failed(d, "could not send the request");
			return;
		}
		secret_free(body);
		return;
	}
	send_txns(d);
}

static void
on_version(struct disc *d, struct call *c)
{
	struct member *m = &d->members[c->member];
	static const char *const probes[] = { "/v3", "/v3beta", "/v3alpha" };
	char msg[200], ver[40];
	enum disc_class cls = disc_classify(c->status, c->body, c->bodylen, msg, sizeof(msg));
	const char *p;

	if (cls == DISC_NOT_FOUND) {
		/* no /version here (a proxy in front?): probe the prefixes in turn */
		m->prefix = probes[m->probe % 3];
		log_info(ROOM, "etcd: %s has no /version; trying API prefix %s",
		    member_name(d, c->member), m->prefix);
		member_ok(d, c->member);
		step(d);
		return;
	}
	if (cls != DISC_OK) {
		member_failed(d, c->status ? msg : c->reason);
		return;
	}
	p = disc_prefix_for_version(c->body, c->bodylen, ver, sizeof(ver));
	if (p == NULL) {
		member_failed(d, "GET /version did not answer like etcd");
		return;
	}
	m->prefix = p;
	member_ok(d, c->member);
	log_info(ROOM, "etcd: using API prefix %s at %s (etcd %s)", p, member_name(d, c->member), ver);
	step(d);
}

/* A 404 on a prefixed path: the prefix is wrong for this member. */
static void
prefix_wrong(struct disc *d, struct member *m, size_t mi)
{
	static const char *const probes[] = { "/v3", "/v3beta", "/v3alpha" };

	if (d->prefix_owned != NULL) {
		problem(d, DISC_NOT_FOUND, LOG_ERR, "etcd %s answered 404 under the configured "
		    "API prefix %s; check etcd api_prefix (/v3, /v3beta or /v3alpha)",
		    member_name(d, mi), m->prefix);
		return;
	}
	m->probe++;
	problem(d, DISC_NOT_FOUND, LOG_ERR, "etcd %s answered 404 under API prefix %s; "
	    "trying %s next", member_name(d, mi), m->prefix, probes[m->probe % 3]);
	m->prefix = probes[m->probe % 3];
}

static void
on_auth(struct disc *d, struct call *c)
{
	char msg[200];
	enum disc_class cls = disc_classify(c->status, c->body, c->bodylen, msg, sizeof(msg));
	json_t *j, *t;
	unsigned start;

	switch (cls) {
	case DISC_OK:
		j = json_loadb(c->body, c->bodylen, 0, NULL);
		t = json_object_get(j, "token");
		if (!json_is_string(t) || json_string_length(t) == 0 ||
		    strpbrk(json_string_value(t), "\r\n") != NULL) {
			json_decref(j);
			member_failed(d, "authenticate answered without a usable token");
			return;
		}
		d->token = strdup(json_string_value(t));
		json_decref(j);
		member_ok(d, c->member);
		if (d->auth != AUTH_OK)
			log_info(ROOM, "Etcd Authentication Successful (user '%s' at %s)",
			    d->username, member_name(d, c->member));
		else
			log_debug(ROOM, "etcd: re-authenticated as '%s'", d->username);
		d->auth = AUTH_OK;
		d->auth_backoff_ms = 0;
		if (d->problem == DISC_AUTH_FAILED)
			d->problem = DISC_OK;
		step(d);
		return;
	case DISC_AUTH_DISABLED:
		member_ok(d, c->member);
		if (!d->auth_disabled)
			log_info(ROOM, "etcd %s has authentication disabled; sending requests "
			    "without a token", member_name(d, c->member));
		d->auth_disabled = 1;
		d->auth = AUTH_NONE;
		step(d);
		return;
	case DISC_AUTH_FAILED:
		member_ok(d, c->member);
		start = d->timer_ms > 1000 ? d->timer_ms : 1000;
		if (d->auth_backoff_ms == 0)
			d->auth_backoff_ms = start;
		else if (d->auth_backoff_ms < DISC_BACKOFF_MAX_MS)
			d->auth_backoff_ms = d->auth_backoff_ms * 2 > DISC_BACKOFF_MAX_MS ?
			    DISC_BACKOFF_MAX_MS : d->auth_backoff_ms * 2;
		d->auth_retry_at = mono_ms() + d->auth_backoff_ms;
		if (d->auth != AUTH_BAD)
			log_err(ROOM, "etcd authentication failed for user '%s' at %s: %s; "
			    "etcd keys keep their last known URLs (defaults for keys never read); "
			    "retrying with back-off (%u ms, doubling up to %u ms)",
			    d->username, member_name(d, c->member), msg, d->auth_backoff_ms,
			    DISC_BACKOFF_MAX_MS);
		else
			log_debug(ROOM, "etcd authentication failed again; next try in %u ms",
			    d->auth_backoff_ms);
		d->auth = AUTH_BAD;
		d->problem = DISC_AUTH_FAILED;
		poll_end(d, 0);
		return;
	case DISC_NOT_FOUND:
		member_ok(d, c->member);
		prefix_wrong(d, &d->members[c->member], c->member);
		poll_end(d, 0);
		return;
	case DISC_TRANSPORT:
	case DISC_GARBAGE:
	case DISC_UNAVAILABLE:
		member_failed(d, c->status ? msg : c->reason);
		return;
	default:
		member_ok(d, c->member);
		problem(d, cls, LOG_ERR, "etcd authenticate as '%s' at %s failed: %s",
		    d->username, member_name(d, c->member), msg);
		poll_end(d, 0);
		return;
	}
}

static void
apply_batch(struct disc *d, struct batch *b, const char *body, size_t len)
{
	struct disc_kv *kv = calloc(b->n ? b->n : 1, sizeof(*kv));
	const char *why = NULL;
	size_t i;

	if (kv == NULL || disc_txn_parse(body, len, b->n, kv, &b->hdr, &why) < 0) {
		b->state = B_FAILED;
		b->cls = DISC_GARBAGE;
		snprintf(b->msg, sizeof(b->msg), "%s", why ? why : "out of memory");
		free(kv);
		return;
	}
	/* A key read as missing that was set may have been deleted, or an etcd
	 * that counts after it filters may have hidden it: read the batch again
	 * without the filter before moving anything to its default. */
	for (i = 0; i < b->n && b->min_rev > 0; i++)
		if (!kv[i].present && d->slots[b->first + i]->state == SLOT_SET) {
			disc_kv_clear(kv, b->n);
			free(kv);
			b->min_rev = 0;
			b->state = B_TODO;
			return;
		}
	for (i = 0; i < b->n; i++)
		disc_apply(d, &d->slots[b->first + i]->pub, &kv[i]);
	disc_kv_clear(kv, b->n);
	free(kv);
	b->state = B_DONE;
}

/* The probe answered: read every key only if the store moved on. */
static void
probe_done(struct disc *d)
{
	const struct disc_header *h = &d->batches[0].hdr;	/* freed below */
	/* A revision that went back is a store made anew (wiped, restored from
	 * a snapshot) under the same cluster id: what changed since our
	 * revision means nothing there. */
	int same = h->revision >= d->seen.revision && h->revision != 0 &&
	    h->cluster_id == d->seen.cluster_id;

	if (same && h->revision == d->seen.revision) {
		poll_end(d, 1);
		return;
	}
	log_debug(ROOM, "etcd: store revision %lld -> %lld; reading %s", d->seen.revision,
	    h->revision, same ? "the values changed since" : "every key");
	if (batches_make(d, same ? READ_CHANGED : READ_ALL) < 0) {
		log_err(ROOM, "etcd: out of memory starting a poll");
		poll_end(d, 0);
		return;
	}
	step(d);
}

/* Every key was read, each txn at its own revision: the slots are at least
 * as new as the oldest of them. Only a read of every value restarts the
 * clock of the periodic full read: under steady writes every poll reads
 * the changes, and the full read must still come. */
static void
read_done(struct disc *d)
{
	struct disc_header seen = d->batches[0].hdr;
	size_t i;

	for (i = 1; i < d->nbatches && seen.revision != 0; i++) {
		const struct disc_header *h = &d->batches[i].hdr;

		if (h->revision == 0 || h->cluster_id != seen.cluster_id)
			seen.revision = 0;
		else if (h->revision < seen.revision)
			seen.revision = h->revision;
	}
	/* The store went back between the probe and the reads: read it all. */
	if (!d->reading_all && seen.revision < d->seen.revision)
		seen.revision = 0;
	d->seen = seen;
	if (d->reading_all)
		d->seen_at = mono_ms();
	poll_end(d, 1);
}

static void
txns_finished(struct disc *d)
{
	size_t i, nfail = 0;
	int auth = 0, member = 0;
	struct batch *first = NULL;

	for (i = 0; i < d->nbatches; i++) {
		struct batch *b = &d->batches[i];

		if (b->state != B_FAILED)
			continue;
		nfail++;
		if (first == NULL)
			first = b;
		if (b->cls == DISC_AUTH_INVALID || b->cls == DISC_AUTH_REQUIRED)
			auth = 1;
		if (b->cls == DISC_TRANSPORT || b->cls == DISC_GARBAGE || b->cls == DISC_UNAVAILABLE)
			member = 1;
	}
	if (nfail == 0) {
		if (d->probing)
			probe_done(d);
		else
			read_done(d);
		return;
	}
	if (auth && d->username != NULL && !d->auth_retried) {
		/* token expired, etcd restarted, or auth enabled since: once per poll */
		log_debug(ROOM, "etcd: token rejected (%s); re-authenticating", first->msg);
		d->auth_retried = 1;
		secret_free(d->token);
		d->token = NULL;
		d->auth_disabled = 0;
		for (i = 0; i < d->nbatches; i++)
			if (d->batches[i].state == B_FAILED)
				d->batches[i].state = B_TODO;
		step(d);
		return;
	}
	if (member) {
		for (i = 0; i < d->nbatches; i++)
			if (d->batches[i].state == B_FAILED && (d->batches[i].cls == DISC_TRANSPORT ||
			    d->batches[i].cls == DISC_GARBAGE || d->batches[i].cls == DISC_UNAVAILABLE)) {
				first = &d->batches[i];
				break;
			}
		member_failed(d, first->msg);
		return;
	}
	switch (first->cls) {
	case DISC_AUTH_REQUIRED:
		problem(d, first->cls, LOG_ERR, "etcd %s requires authentication: set "
		    "--etcdusername and a password; etcd keys keep their defaults",
		    member_name(d, d->cur));
		break;
	case DISC_AUTH_INVALID:
		problem(d, first->cls, LOG_ERR, "etcd %s rejects the token right after "
		    "authenticating (%s); keeping the last known URLs", member_name(d, d->cur),
		    first->msg);
		break;
	case DISC_TOO_MANY_OPS:
		if (d->max_ops > 1)
			d->max_ops /= 2;
		problem(d, first->cls, LOG_WARN, "etcd %s refuses txns of %zu operations (%s); "
		    "using %zu per txn from the next poll (raise etcd --max-txn-ops)",
		    member_name(d, d->cur), first->n, first->msg, d->max_ops);
		d->problem = DISC_OK;	/* log again if a smaller size fails too */
		break;
	case DISC_NOT_FOUND:
		prefix_wrong(d, &d->members[d->cur], d->cur);
		break;
	case DISC_PERMISSION:
		problem(d, first->cls, LOG_ERR, "etcd user '%s' may not read the keys at %s (%s); "
		    "grant it read access", d->username ? d->username : "(none)",
		    member_name(d, d->cur), first->msg);
		break;
	default:
		problem(d, first->cls, LOG_ERR, "etcd %s: reading keys failed: %s",
		    member_name(d, d->cur), first->msg);
		break;
	}
	poll_end(d, 0);
}

static void
on_txn(struct disc *d, struct call *c)
{
	struct batch *b;
	enum disc_class cls;

	if (c->batch >= d->nbatches)
		return;
	b = &d->batches[c->batch];
	d->pending--;
	/* A txn reply is parsed once, by apply_batch, which calls anything that
	 * is not a well-formed reply garbage: classifying a 2xx would parse the
	 * whole body a second time (half the cost of a poll of 10,000 keys). */
	if (c->status >= 200 && c->status < 300)
		cls = DISC_OK;
	else
		cls = disc_classify(c->status, c->body, c->bodylen, b->msg, sizeof(b->msg));
	if (cls == DISC_OK) {
		apply_batch(d, b, c->body, c->bodylen);
	} else {
		b->state = B_FAILED;
		b->cls = cls;
		if (c->status == 0)
			snprintf(b->msg, sizeof(b->msg), "%s", c->reason);
	}
	/* The member is fine only if the reply was usable too: a valid JSON
	 * reply whose content is garbage must not reset the fault (it would be
	 * logged as gone and back on every poll). */
	if (b->state == B_DONE || (b->cls != DISC_TRANSPORT && b->cls != DISC_GARBAGE &&
	    b->cls != DISC_UNAVAILABLE))
		member_ok(d, c->member);
	if (b->state == B_TODO)
		send_txns(d);
	else if (d->pending == 0)
		txns_finished(d);
}

/* One finished call per turn of the loop: parsing a txn reply of 128 keys
 * takes about a millisecond, and the replies of a poll arrive together, so
 * handling them all at once would hold up every client request meanwhile.
 * A zero timeout runs the next one after the loop has looked at its
 * sockets again. */
static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval now = { 0, 0 };
	struct disc *d = arg;
	struct call *c, *more;

	for (c = d->calls; c != NULL && !c->done; c = c->next)
		;
	if (c == NULL)
		return;
	call_unlink(d, c);
	if (d->busy) {
		switch (c->kind) {
		case CALL_VERSION:	on_version(d, c); break;
		case CALL_AUTH:		on_auth(d, c); break;
		case CALL_TXN:		on_txn(d, c); break;
		}
	}
	call_free(c);
	for (more = d->calls; more != NULL && !more->done; more = more->next)
		;
	if (more != NULL)
		event_add(d->done_ev, &now);
}

static void
poll_begin(struct disc *d)
{
	if (d->nslots == 0)
		return;
	if (batches_make(d, d->seen.revision != 0 && mono_ms() - d->seen_at < DISC_FULL_READ_MS ?
	    READ_PROBE : READ_ALL) < 0) {
		log_err(ROOM, "etcd: out of memory starting a poll");
		return;
	}
	d->busy = 1;
	d->tried = 1;
	d->auth_retried = 0;
	d->pending = 0;
	d->poll_started = mono_ms();
	d->polls++;
	step(d);
}

static void
poll_end(struct disc *d, int ok)
{
	size_t i, set = 0;

	if (ok) {
		if (d->problem != DISC_OK && d->problem != DISC_AUTH_FAILED)
			log_info(ROOM, "etcd: keys read again from %s", member_name(d, d->cur));
		d->problem = DISC_OK;
		if (!d->first_ok) {
			for (i = 0; i < d->nslots; i++)
				set += d->slots[i]->pub.url != NULL;
			log_info(ROOM, "etcd: read %zu key%s from %s in %zu txn%s (%zu set, %zu using "
			    "their default)", d->nslots, d->nslots == 1 ? "" : "s",
			    member_name(d, d->cur), d->nbatches, d->nbatches == 1 ? "" : "s",
			    set, d->nslots - set);
			d->first_ok = 1;
		}
	} else {
		memset(&d->seen, 0, sizeof(d->seen));	/* some keys may be stale */
	}
	log_debug(ROOM, "etcd: poll %llu %s in %llu ms%s", d->polls, ok ? "done" : "failed",
	    (unsigned long long)(mono_ms() - d->poll_started),
	    ok && d->probing ? " (revision unchanged)" : "");
	free(d->batches);
	d->batches = NULL;
	d->nbatches = 0;
	d->pending = 0;
	d->busy = 0;
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct disc *d = arg;

	if (d->busy) {
		log_debug(ROOM, "etcd: previous poll still running; skipping this tick");
		return;
	}
	poll_begin(d);
}

/* ---------------------------------------------------------------- life */

struct disc *
disc_new(struct event_base *base, const struct etcd_conf *conf)
{
	struct disc *d;
	size_t i;

	if (base == NULL || conf == NULL || conf->nurls == 0)
		return NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->base = base;
	d->timer_ms = conf->timer_ms ? conf->timer_ms : 10000;
	d->timeout_ms = conf->timeout_ms ? conf->timeout_ms : 3000;
	d->max_ops = DISC_MAX_TXN_OPS;
	if ((d->members = calloc(conf->nurls, sizeof(*d->members))) == NULL)
		goto fail;
	for (i = 0; i < conf->nurls; i++) {
		const char *err = NULL;
		struct url *u = url_parse(conf->urls[i], &err);
		struct member *m;
		size_t l;

		if (u == NULL) {
			log_err(ROOM, "etcd URL '%s' ignored: %s", conf->urls[i], err ? err : "invalid");
			continue;
		}
		m = &d->members[d->nmembers++];
		m->url = u;
		l = strlen(u->path);
		while (l > 0 && u->path[l - 1] == '/')
			l--;
		if ((m->base = strndup(u->path, l)) == NULL)
			goto fail;
	}
	if (d->nmembers == 0) {
		log_err(ROOM, "etcd: no usable etcd URL; etcd keys use their defaults");
		goto fail;
	}
	if (conf->api_prefix != NULL && conf->api_prefix[0] != '\0') {
		/* keep our own copy: the conf may be reloaded and freed */
		size_t l = strlen(conf->api_prefix);

		while (l > 1 && conf->api_prefix[l - 1] == '/')
			l--;
		d->prefix_owned = malloc(l + 2);
		if (d->prefix_owned == NULL)
			goto fail;
		/* "v3" and "/v3/" both mean "/v3" */
		snprintf(d->prefix_owned, l + 2, "%s%.*s", conf->api_prefix[0] == '/' ? "" : "/",
		    (int)l, conf->api_prefix);
		for (i = 0; i < d->nmembers; i++)
			d->members[i].prefix = d->prefix_owned;
	}
	if (conf->username != NULL && conf->username[0] != '\0') {
		if ((d->username = strdup(conf->username)) == NULL)
			goto fail;
		if (conf->password != NULL && (d->password = strdup(conf->password)) == NULL)
			goto fail;
	}
	d->timer = event_new(base, -1, EV_PERSIST, timer_cb, d);
	d->done_ev = event_new(base, -1, 0, done_cb, d);
	if (d->timer == NULL || d->done_ev == NULL)
		goto fail;
	return d;
fail:
	disc_free(d);
	return NULL;
}

void
disc_set_tls(struct disc *d, SSL_CTX *ctx)
{
	if (d != NULL)
		d->tls = ctx;
}

int
disc_start(struct disc *d)
{
	struct timeval tv;
	size_t i;

	if (d == NULL)
		return -1;
	if (d->nslots == 0) {
		log_info(ROOM, "etcd: no endpoint uses an etcd key; not polling");
		return 0;
	}
	tv.tv_sec = d->timer_ms / 1000;
	tv.tv_usec = (d->timer_ms % 1000) * 1000;
	if (event_add(d->timer, &tv) < 0)
		return -1;
	{
		char list[512];
		size_t o = 0;

		list[0] = '\0';
		for (i = 0; i < d->nmembers && o < sizeof(list); i++)
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
			    member_name(d, i));
		log_info(ROOM, "etcd cluster: %s (API prefix %s)", list,
		    d->prefix_owned ? d->prefix_owned : "from GET /version");
	}
	log_info(ROOM, "Etcd periodic timer task started with a periodic time of %ums "
	    "(%zu key%s, request timeout %ums%s)", d->timer_ms, d->nslots,
	    d->nslots == 1 ? "" : "s", d->timeout_ms,
	    d->username ? ", authenticating" : "");
	poll_begin(d);
	return 0;
}

void
disc_free(struct disc *d)
{
	size_t i, j;
	struct call *c;

	if (d == NULL)
		return;
	if (d->timer)
		event_free(d->timer);
	/* free the connections first: evhttp drops their requests without
	 * calling back, so no callback can reach the calls freed below */
	for (i = 0; i < d->nmembers; i++) {
		struct member *m = &d->members[i];

		for (j = 0; j < m->nconns; j++)
			if (m->conns[j])
				evhttp_connection_free(m->conns[j]);
		free(m->conns);
		free(m->base);
		url_unref(m->url);
	}
	free(d->members);
	while ((c = d->calls) != NULL) {
		d->calls = c->next;
		call_free(c);
	}
	if (d->done_ev)
		event_free(d->done_ev);
	if (d->dns)
		evdns_base_free(d->dns, 0);
	for (i = 0; i < d->nslots; i++) {
		url_unref(d->slots[i]->pub.url);
		free(d->slots[i]->pub.key);
		free(d->slots[i]->raw);
		free(d->slots[i]);
	}
	free(d->slots);
	free(d->hash);
	free(d->batches);
	free(d->prefix_owned);
	free(d->username);
	secret_free(d->password);
	secret_free(d->token);
	free(d);
}
