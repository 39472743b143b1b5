/* Unit tests for the endpoint room: url_parse, url_join, endpoint_parse, groups. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "endpoint.h"
#include "discovery.h"

struct good_url {
	const char *text;
	int tls;
	const char *host;
	unsigned port;
	const char *authority;
	const char *origin;
	const char *path;
};

static const struct good_url good_urls[] = {
	{ "http://example.com", 0, "example.com", 80, "example.com", "http://example.com:80", "" },
	{ "http://example.com/", 0, "example.com", 80, "example.com", "http://example.com:80", "/" },
	{ "https://example.com", 1, "example.com", 443, "example.com", "https://example.com:443", "" },
	{ "HTTPS://api.example.com/v2/", 1, "api.example.com", 443, "api.example.com",
	  "https://api.example.com:443", "/v2/" },
	{ "HtTp://h/v2", 0, "h", 80, "h", "http://h:80", "/v2" },
	{ "http://127.0.0.1:8080/a/b", 0, "127.0.0.1", 8080, "127.0.0.1:8080",
	  "http://127.0.0.1:8080", "/a/b" },
	{ "http://h:80/x", 0, "h", 80, "h", "http://h:80", "/x" },
	{ "https://h:443", 1, "h", 443, "h", "https://h:443", "" },
	{ "https://h:80", 1, "h", 80, "h:80", "https://h:80", "" },
	{ "http://h:443", 0, "h", 443, "h:443", "http://h:443", "" },
	{ "http://h:1", 0, "h", 1, "h:1", "http://h:1", "" },
	{ "http://h:65535/", 0, "h", 65535, "h:65535", "http://h:65535", "/" },
	{ "http://h:00080", 0, "h", 80, "h", "http://h:80", "" },
	{ "http://[::1]", 0, "::1", 80, "[::1]", "http://[::1]:80", "" },
	{ "http://[::1]:9000/p", 0, "::1", 9000, "[::1]:9000", "http://[::1]:9000", "/p" },
	{ "https://[2001:db8::1]/", 1, "2001:db8::1", 443, "[2001:db8::1]",
	  "https://[2001:db8::1]:443", "/" },
	{ "http://[::ffff:1.2.3.4]:81", 0, "::ffff:1.2.3.4", 81, "[::ffff:1.2.3.4]:81",
	  "http://[::ffff:1.2.3.4]:81", "" },
	{ "  http://h/a  ", 0, "h", 80, "h", "http://h:80", "/a" },
	{ "http://h/a%2Fb/c,d;e=f", 0, "h", 80, "h", "http://h:80", "/a%2Fb/c,d;e=f" },
	{ "http://my_host-1.local~x/", 0, "my_host-1.local~x", 80, "my_host-1.local~x",
	  "http://my_host-1.local~x:80", "/" },
};

struct bad_url {
	const char *text;
	const char *why;	/* substring of the error */
};

static const struct bad_url bad_urls[] = {
	{ "", "empty" },
	{ "   ", "empty" },
	{ "ftp://h/", "http" },
	{ "h/path", "http" },
	{ "//h/path", "http" },
	{ "http:/h", "http" },
	{ "httpx://h", "http" },
	{ "http://", "missing host" },
	{ "http:///path", "missing host" },
	{ "http://:80/", "missing host" },
	{ "http://user@h/", "user info" },
	{ "http://user:pw@h/", "user info" },
	{ "http://h/a?x=1", "query" },
	{ "http://h?", "query" },
	{ "http://h/a#frag", "fragment" },
	{ "http://h/a b", "space" },
	{ "http://h/a\tb", "control" },
	{ "http://h/\x01", "control" },
	{ "http://h\x7f/", "control" },
	{ "http://h/\xc3\xa9", "non-ASCII" },
	{ "http://h:/", "empty port" },
	{ "http://h:0/", "out of range" },
	{ "http://h:65536/", "out of range" },
	{ "http://h:99999999999999999999/", "out of range" },
	{ "http://h:8a/", "not a number" },
	{ "http://h:-1/", "not a number" },
	{ "http://h:80:81/", "not a number" },
	{ "http://[::1/", "]" },
	{ "http://[]/", "missing host" },
	{ "http://[zz::1]/", "IPv6" },
	{ "http://[fe80::1%25eth0]/", "IPv6" },
	{ "http://[::1]x/", "after IPv6" },
	{ "http://[::1]:/", "empty port" },
	{ "http://h%41/", "invalid character in host" },
	{ "http://h!/", "invalid character in host" },
	{ "http://h/a%zz", "escape" },
	{ "http://h/a%4", "escape" },
};

static void
test_url_parse(void)
{
	size_t i;

	for (i = 0; i < sizeof(good_urls) / sizeof(good_urls[0]); i++) {
		const struct good_url *g = &good_urls[i];
		const char *err = "unset";
		struct url *u = url_parse(g->text, &err);

		ok(u != NULL, "url_parse accepts '%s'", g->text);
		if (u == NULL) {
			printf("#   error: %s\n", err ? err : "(null)");
			continue;
		}
		ok(err == NULL, "no error for '%s'", g->text);
		is_int(u->tls, g->tls, "  tls");
		is_str(u->host, g->host, "  host of '%s'", g->text);
		is_int(u->port, g->port, "  port of '%s'", g->text);
		is_str(u->authority, g->authority, "  authority of '%s'", g->text);
		is_str(u->origin, g->origin, "  origin of '%s'", g->text);
		is_str(u->path, g->path, "  path of '%s'", g->text);
		is_int(u->refs, 1, "  refs start at 1");
		url_unref(u);
	}
	for (i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		const struct bad_url *b = &bad_urls[i];
		const char *err = NULL;
		struct url *u = url_parse(b->text, &err);

		ok(u == NULL, "url_parse rejects bad URL #%zu", i);
		ok(err != NULL && strstr(err, b->why) != NULL, "  reason mentions '%s' (got '%s')",
		    b->why, err ? err : "(null)");
		url_unref(u);
	}
	ok(url_parse(NULL, NULL) == NULL, "NULL text, NULL err");

	/* text is the trimmed URL as given */
	{
		struct url *u = url_parse(" http://H:8080/x/ \n", NULL);

		ok(u != NULL, "trimmed parse");
		if (u != NULL) {
			is_str(u->text, "http://H:8080/x/", "text is trimmed, case kept");
			struct url *r = url_ref(u);

			ok(r == u, "url_ref returns its argument");
			is_int(u->refs, 2, "refs after url_ref");
			url_unref(u);
			is_int(u->refs, 1, "refs after one unref");
			url_unref(u);	/* freed: valgrind checks */
		}
		url_unref(NULL);
		ok(url_ref(NULL) == NULL, "url_ref(NULL)");
	}
}

struct join_case {
	const char *base;
	const char *rem;
	const char *query;
	const char *want;
};

static const struct join_case joins[] = {
	{ "http://h/v2/", "/pet", NULL, "/v2/pet" },
	{ "http://h/v2", "/pet", NULL, "/v2/pet" },
	{ "http://h", "", NULL, "/" },
	{ "http://h/", "", NULL, "/" },
	{ "http://h", "/pet/1", NULL, "/pet/1" },
	{ "http://h/", "/pet/1", NULL, "/pet/1" },
	{ "http://h/v2", "", NULL, "/v2" },
	{ "http://h/v2/", "", NULL, "/v2/" },
	{ "http://h/v2", "/", NULL, "/v2/" },
	{ "http://h/v2/", "/", NULL, "/v2/" },
	{ "http://h/v2", "/pet/", NULL, "/v2/pet/" },
	{ "http://h/v2", "/a%2Fb", NULL, "/v2/a%2Fb" },
	{ "http://h/v2", "/pet", "", "/v2/pet?" },
	{ "http://h/v2", "/pet", "a=%2F&b", "/v2/pet?a=%2F&b" },
	{ "http://h/v2", "/pet", "x=1&x=2&&=;+%20", "/v2/pet?x=1&x=2&&=;+%20" },
	{ "http://h", "", "q", "/?q" },
	{ "http://h", "", "", "/?" },
	{ "http://h/v2/", "", "k=v", "/v2/?k=v" },
};

static void
test_url_join(void)
{
	size_t i;

	for (i = 0; i < sizeof(joins) / sizeof(joins[0]); i++) {
		const struct join_case *j = &joins[i];
		struct url *u = url_parse(j->base, NULL);
		char *got;

		ok(u != NULL, "join base '%s' parses", j->base);
		if (u == NULL)
			continue;
		got = url_join(u, j->rem, strlen(j->rem), j->query);
		is_str(got, j->want, "url_join('%s', '%s', %s%s%s)", j->base, j->rem,
		    j->query ? "'" : "", j->query ? j->query : "NULL", j->query ? "'" : "");
		free(got);
		url_unref(u);
	}
	/* the remainder is taken by length, not NUL */
	{
		struct url *u = url_parse("http://h/v2", NULL);
		char *got = url_join(u, "/pet/1?ignored", 6, NULL);

		is_str(got, "/v2/pet/1", "remainder used by length");
		free(got);
		url_unref(u);
	}
}

struct ep_good {
	const char *text;
	const char *key;	/* NULL: plain URL */
	const char *def_text;
	const char *def_path;
};

static const struct ep_good ep_goods[] = {
	{ "http://x", NULL, "http://x", "" },
	{ "  https://x/a  ", NULL, "https://x/a", "/a" },
	{ "etcd(k,http://x)", "k", "http://x", "" },
	{ "etcd (k, http://x)", "k", "http://x", "" },
	{ "etcd ( k , http://x/a,b )", "k", "http://x/a,b", "/a,b" },
	{ "etcd\t(\tk\t,\thttp://x/\t)", "k", "http://x/", "/" },
	{ "  etcd   (  petstore/v1  ,  http://10.0.0.1:9000/api  )  ", "petstore/v1",
	  "http://10.0.0.1:9000/api", "/api" },
	{ "etcd (k, http://h/a,b,c)", "k", "http://h/a,b,c", "/a,b,c" },
	{ "etcd (/services/pet, https://[::1]:8443/p)", "/services/pet",
	  "https://[::1]:8443/p", "/p" },
	{ "etcd (k, http://h/f(x))", "k", "http://h/f(x)", "/f(x)" },
	{ "etcd (k=v:1, http://h)", "k=v:1", "http://h", "" },
};

struct ep_bad {
	const char *text;
	const char *why;
};

static const struct ep_bad ep_bads[] = {
	{ "", "empty endpoint" },
	{ "  ", "empty endpoint" },
	{ "etcd (, http://x)", "empty etcd key" },
	{ "etcd (  , http://x)", "empty etcd key" },
	{ "etcd (a b, http://x)", "whitespace or a control" },
	{ "etcd (a\x01, http://x)", "whitespace or a control" },
	{ "etcd (k http://x)", "missing ','" },
	{ "etcd (k, http://x", "missing ')'" },
	{ "etcd (k, http://x) trailing", "after ')'" },
	{ "etcd (k, http://x)(", "after ')'" },
	{ "etcd (k, ftp://x)", "not an absolute http" },
	{ "etcd (k, x)", "not an absolute http" },
	{ "etcd (k, http://x:99999)", "port out of range" },
	{ "etcd (k, http://x?a=1)", "query" },
	{ "etcd (k, )", "missing default URL" },
	{ "etcd (k,)", "missing default URL" },
	{ "etcd ((k, http://x)", "unexpected '('" },
	{ "etcd (k), http://x)", "unexpected ')'" },
	{ "etcd (k, http://x))", "unbalanced" },
	{ "etcd (k, http://x/(a)", "unbalanced" },
	{ "etcd k, http://x)", "expected '('" },
	{ "etcd", "expected '('" },
	{ "ETCD (k, http://x)", "not an absolute http" },
	{ "etcdx (k, http://x)", "not an absolute http" },
	{ "http://h/a b", "space" },
	{ "http://u@h/", "user info" },
	{ "mailto:x@y", "not an absolute http" },
};

static void
test_endpoint_parse(void)
{
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(ep_goods) / sizeof(ep_goods[0]); i++) {
		const struct ep_good *g = &ep_goods[i];
		struct endpoint ep;
		int rc;

		memset(&ep, 0xa5, sizeof(ep));
		rc = endpoint_parse(g->text, &ep, err, sizeof(err));
		is_int(rc, 0, "endpoint_parse accepts '%s'", g->text);
		if (rc != 0) {
			printf("#   %s\n", err);
			continue;
		}
		is_str(ep.spec, g->text, "  spec is a copy of the text");
		ok(ep.spec != g->text, "  spec is a copy, not the pointer");
		is_str(ep.key, g->key, "  key");
		ok(ep.def != NULL, "  default URL set");
		if (ep.def != NULL) {
			is_str(ep.def->text, g->def_text, "  default URL text");
			is_str(ep.def->path, g->def_path, "  default URL path");
		}
		ok(ep.slot == NULL && ep.down_until == 0 && ep.line == 0 && ep.col == 0,
		    "  slot NULL, down_until/line/col 0");
		ok(endpoint_url(&ep) == ep.def, "  endpoint_url without slot is the default");
		endpoint_clear(&ep);
		ok(ep.spec == NULL && ep.key == NULL && ep.def == NULL, "  cleared");
	}
	for (i = 0; i < sizeof(ep_bads) / sizeof(ep_bads[0]); i++) {
		const struct ep_bad *b = &ep_bads[i];
		struct endpoint ep;
		int rc;

		err[0] = '\0';
		rc = endpoint_parse(b->text, &ep, err, sizeof(err));
		is_int(rc, -1, "endpoint_parse rejects bad spec #%zu", i);
		ok(strstr(err, b->why) != NULL, "  message mentions '%s': %s", b->why, err);
		ok(strncmp(err, "invalid endpoint \"", 18) == 0, "  message quotes the text");
		ok(ep.spec == NULL && ep.key == NULL && ep.def == NULL, "  nothing left allocated");
		endpoint_clear(&ep);
	}
	/* the message quotes the whole offending text, control bytes escaped */
	endpoint_parse("etcd (k, http://x) junk", &(struct endpoint){ 0 }, err, sizeof(err));
	ok(strstr(err, "\"etcd (k, http://x) junk\"") != NULL, "message quotes the text: %s", err);
	endpoint_parse("etcd (a\nb, http://x)", &(struct endpoint){ 0 }, err, sizeof(err));
	ok(strstr(err, "a\\x0ab") != NULL && strchr(err, '\n') == NULL,
	    "control bytes escaped in messages: %s", err);
	endpoint_parse("etcd (k, ftp://x)", &(struct endpoint){ 0 }, err, sizeof(err));
	ok(strstr(err, "\"ftp://x\"") != NULL, "bad default quoted: %s", err);
	/* small error buffers are fine */
	{
		char tiny[8];

		is_int(endpoint_parse("etcd (", &(struct endpoint){ 0 }, tiny, sizeof(tiny)), -1,
		    "tiny errbuf");
		ok(strlen(tiny) < sizeof(tiny), "tiny errbuf terminated");
		is_int(endpoint_parse("bad", &(struct endpoint){ 0 }, NULL, 0), -1, "NULL errbuf");
	}
}

static void
test_endpoint_url_slot(void)
{
	struct endpoint ep;
	struct disc_slot slot = { .key = (char *)"k", .url = NULL };
	char err[256];

	is_int(endpoint_parse("etcd (k, http://default/)", &ep, err, sizeof(err)), 0, "parse for slot");
	ep.slot = &slot;
	ok(endpoint_url(&ep) == ep.def, "slot without URL: default");
	slot.url = url_parse("http://discovered:9/", NULL);
	ok(endpoint_url(&ep) == slot.url, "slot with URL: discovered");
	is_str(endpoint_url(&ep)->host, "discovered", "discovered host");
	url_unref(slot.url);
	endpoint_clear(&ep);
}

static void
test_groups(void)
{
	struct ep_group *g = calloc(1, sizeof(*g));
	char err[256];

	is_str(group_type_name(GROUP_HTTP), "http", "group http");
	is_str(group_type_name(GROUP_LOAD_BALANCE), "load_balance", "group load_balance");
	is_str(group_type_name(GROUP_FAILOVER), "failover", "group failover");
	g->type = GROUP_FAILOVER;
	g->name = strdup("backends");
	g->neps = 2;
	g->eps = calloc(2, sizeof(*g->eps));
	is_int(endpoint_parse("http://a/", &g->eps[0], err, sizeof(err)), 0, "group ep 0");
	is_int(endpoint_parse("etcd (b, http://b/)", &g->eps[1], err, sizeof(err)), 0, "group ep 1");
	ep_group_free(g);	/* valgrind checks it frees everything */
	ep_group_free(NULL);
	ok(1, "ep_group_free");
}

int
main(void)
{
	test_url_parse();
	test_url_join();
	test_endpoint_parse();
	test_endpoint_url_slot();
	test_groups();
	return tap_done();
}
