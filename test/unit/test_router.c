/* Unit tests for the router room: normalization, base paths, templates, errors, scale. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "config.h"
#include "openapi.h"
#include "router.h"

#define B(m) (1u << (m))

struct rdef {
	const char *path;
	unsigned methods;
};

static struct api *
mkapi(const char *file, const char *title, const char *base, unsigned line,
    const struct rdef *defs, size_t n)
{
	struct api *a = calloc(1, sizeof(*a));
	size_t i;

	a->file = strdup(file);
	a->title = strdup(title);
	a->base_path = strdup(base);
	a->line = line;
	a->col = 3;
	a->nres = n;
	a->res = calloc(n ? n : 1, sizeof(*a->res));
	for (i = 0; i < n; i++) {
		a->res[i].path = strdup(defs[i].path);
		a->res[i].methods = defs[i].methods;
		a->res[i].line = line + 10 + (unsigned)i;
		a->res[i].col = 5;
	}
	return a;
}

static void
freeapi(struct api *a)
{
	size_t i;

	for (i = 0; i < a->nres; i++)
		free(a->res[i].path);
	free(a->res);
	free(a->file);
	free(a->title);
	free(a->base_path);
	free(a);
}

/* ---- normalize ---- */

struct norm_case {
	const char *in;
	const char *want;	/* NULL: -1 */
};

static const struct norm_case norms[] = {
	{ "/", "/" },
	{ "/a/b", "/a/b" },
	{ "/a/b/", "/a/b/" },
	{ "/a/./b", "/a/b" },
	{ "/a/../b", "/b" },
	{ "/a/b/..", "/a/" },
	{ "/a/b/.", "/a/b/" },
	{ "/.", "/" },
	{ "/./", "/" },
	{ "/a/..", "/" },
	{ "/a/%2e/b", "/a/b" },
	{ "/a/%2E/b", "/a/b" },
	{ "/a/%2e%2E/b", "/b" },
	{ "/a/%2E%2e/b", "/b" },
	{ "/a/.%2E/b", "/b" },
	{ "/a/%2e./b", "/b" },
	{ "/a/b/%2e%2e", "/a/" },
	{ "/a/b/%2e", "/a/b/" },
	{ "/petstore/v1/%2e%2e/v2/pet", "/petstore/v2/pet" },
	{ "/a/b/c/../../d", "/a/d" },
	{ "/a//b", "/a//b" },
	{ "//", "//" },
	{ "/a//../b", "/a/b" },
	{ "/...", "/..." },
	{ "/.a/a./..a", "/.a/a./..a" },
	{ "/a/%2e%2e%2e", "/a/%2e%2e%2e" },
	{ "/a/%2e.x", "/a/%2e.x" },
	{ "/a%2Fb", "/a%2Fb" },
	{ "/a%2fb/../c", "/c" },
	{ "/a/%2F../c", "/a/%2F../c" },
	{ "/a%20b/%41", "/a%20b/%41" },
	{ "/a;b=c/d", "/a;b=c/d" },
	{ "/..", NULL },
	{ "/../a", NULL },
	{ "/a/../..", NULL },
	{ "/a/../../b", NULL },
	{ "/%2e%2e", NULL },
	{ "/%2E%2E/etc/passwd", NULL },
	{ "/a/%2e%2e/%2E%2E/x", NULL },
	{ "/a%00b", NULL },
	{ "/a/%00", NULL },
	{ "/a%", NULL },
	{ "/a%2", NULL },
	{ "/a%g1", NULL },
	{ "/a%1g", NULL },
	{ "/a/%%32e", NULL },
	{ "", NULL },
	{ "a/b", NULL },
	{ "*", NULL },
};

static void
test_normalize(void)
{
	char buf[256];
	size_t i;
	int n;

	for (i = 0; i < sizeof(norms) / sizeof(norms[0]); i++) {
		const struct norm_case *c = &norms[i];

		memset(buf, 'X', sizeof(buf));
		n = router_normalize(c->in, strlen(c->in), buf, sizeof(buf));
		if (c->want == NULL) {
			is_int(n, -1, "normalize '%s' is rejected", c->in);
		} else {
			ok(n >= 0, "normalize '%s' succeeds", c->in);
			if (n >= 0) {
				buf[n] = '\0';
				is_str(buf, c->want, "normalize '%s'", c->in);
			}
		}
	}
	/* raw NUL inside the length */
	is_int(router_normalize("/a\0b", 4, buf, sizeof(buf)), -1, "raw NUL refused");
	/* length, not NUL, delimits */
	n = router_normalize("/a/b?x=1", 4, buf, sizeof(buf));
	is_int(n, 4, "length-delimited input");
	/* overflow */
	is_int(router_normalize("/abcd", 5, buf, 3), -1, "overflow is -1");
	is_int(router_normalize("/abcd", 5, buf, 5), 5, "exact fit");
	is_int(router_normalize("/a/.", 4, buf, 2), -1, "overflow on trailing slash");
}

/* ---- matching ---- */

static const struct rdef petstore[] = {
	{ "/pet", B(M_GET) | B(M_POST) },
	{ "/pet/{petId}", B(M_GET) | B(M_DELETE) },
	{ "/pet/findByStatus", B(M_GET) },
	{ "/", B(M_GET) },
	{ "/store/order/", B(M_POST) },
	{ "/a/{x}/c", B(M_GET) },
	{ "/a/b/d", B(M_GET) },
	{ "/files/{name}.json", B(M_GET) },
	{ "/files/{name}", B(M_PUT) },
	{ "/deep/{a}/b/{c}/d", B(M_GET) },
	{ "/deep/x/{b}/y/e", B(M_GET) },
};
static const struct rdef admin[] = {
	{ "/users", B(M_GET) },
};
static const struct rdef rootdefs[] = {
	{ "/health", B(M_GET) },
};
/* literal before template, and template before literal */
static const struct rdef lit_first[] = {
	{ "/x/me", B(M_GET) },
	{ "/x/{id}", B(M_GET) },
};
static const struct rdef tmpl_first[] = {
	{ "/x/{id}", B(M_GET) },
	{ "/x/me", B(M_GET) },
};

struct match_case {
	int method;
	const char *path;
	enum route_status want;
	int api;		/* index into the apis array, -1: none */
	const char *res;	/* template, or NULL */
	const char *rem;	/* remainder, or NULL: not checked */
};

static const char *
mname(int m)
{
	static const char *names[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
	    "OPTIONS", "TRACE" };

	return m >= 0 && m < M__COUNT ? names[m] : "?";
}

static void
run_match(const struct router *r, struct api **apis, const struct match_case *c)
{
	struct route rt;
	enum route_status st;

	memset(&rt, 0x5a, sizeof(rt));
	st = router_match(r, c->method, c->path, strlen(c->path), &rt);
	is_int(st, c->want, "%s %s -> status %d", mname(c->method),
	    c->path, c->want);
	if (c->api >= 0)
		ok(rt.api == apis[c->api], "  %s: api #%d", c->path, c->api);
	if (c->res != NULL)
		is_str(rt.res ? rt.res->path : NULL, c->res, "  %s: resource", c->path);
	else if (c->want == ROUTE_NOT_FOUND)
		ok(rt.res == NULL, "  %s: no resource", c->path);
	if (c->rem != NULL) {
		ok(rt.remainder != NULL && rt.remainder >= c->path &&
		    rt.remainder <= c->path + strlen(c->path), "  remainder points into the path");
		if (rt.remainder != NULL) {
			char tmp[512];

			snprintf(tmp, sizeof(tmp), "%.*s", (int)rt.rlen, rt.remainder);
			is_str(tmp, c->rem, "  %s: remainder", c->path);
		}
	}
}

static const struct match_case cases[] = {
	{ M_GET, "/petstore/v1/pet", ROUTE_OK, 0, "/pet", "/pet" },
	{ M_POST, "/petstore/v1/pet", ROUTE_OK, 0, "/pet", "/pet" },
	{ M_GET, "/petstore/v1/pet/1", ROUTE_OK, 0, "/pet/{petId}", "/pet/1" },
	{ M_DELETE, "/petstore/v1/pet/abc", ROUTE_OK, 0, "/pet/{petId}", "/pet/abc" },
	{ M_GET, "/petstore/v1/pet/findByStatus", ROUTE_OK, 0, "/pet/findByStatus", NULL },
	{ M_GET, "/petstore/v1/pet/a%2Fb", ROUTE_OK, 0, "/pet/{petId}", "/pet/a%2Fb" },
	{ M_GET, "/petstore/v1/pet/findBy%53tatus", ROUTE_OK, 0, "/pet/{petId}", NULL },
	{ M_GET, "/petstore/v1/pet/1/", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/pet/", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/pet//", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/pet/1/x", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1//pet", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1", ROUTE_OK, 0, "/", "" },
	{ M_GET, "/petstore/v1/", ROUTE_OK, 0, "/", "/" },
	{ M_POST, "/petstore/v1/store/order/", ROUTE_OK, 0, "/store/order/", "/store/order/" },
	{ M_POST, "/petstore/v1/store/order", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/a/b/c", ROUTE_OK, 0, "/a/{x}/c", "/a/b/c" },
	{ M_GET, "/petstore/v1/a/b/d", ROUTE_OK, 0, "/a/b/d", NULL },
	{ M_GET, "/petstore/v1/a/z/c", ROUTE_OK, 0, "/a/{x}/c", NULL },
	{ M_GET, "/petstore/v1/a/z/d", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/a//c", ROUTE_NOT_FOUND, 0, NULL, NULL },
	{ M_GET, "/petstore/v1/files/x.json", ROUTE_OK, 0, "/files/{name}.json", NULL },
	{ M_GET, "/petstore/v1/files/a.b.json", ROUTE_OK, 0, "/files/{name}.json", NULL },
	{ M_PUT, "/petstore/v1/files/x", ROUTE_OK, 0, "/files/{name}", NULL },
	{ M_GET, "/petstore/v1/files/.json", ROUTE_BAD_METHOD, 0, "/files/{name}", NULL },
	{ M_GET, "/petstore/v1/deep/x/b/y/d", ROUTE_OK, 0, "/deep/{a}/b/{c}/d", NULL },
	{ M_GET, "/petstore/v1/deep/x/q/y/e", ROUTE_OK, 0, "/deep/x/{b}/y/e", NULL },
	{ M_GET, "/petstore/v1/deep/x/b/y/e", ROUTE_OK, 0, "/deep/x/{b}/y/e", NULL },
	{ M_HEAD, "/petstore/v1/pet/1", ROUTE_OK, 0, "/pet/{petId}", NULL },
	{ M_PUT, "/petstore/v1/pet", ROUTE_BAD_METHOD, 0, "/pet", NULL },
	{ M_DELETE, "/petstore/v1/pet/findByStatus", ROUTE_BAD_METHOD, 0, "/pet/findByStatus", NULL },
	{ M_HEAD, "/petstore/v1/store/order/", ROUTE_BAD_METHOD, 0, "/store/order/", NULL },
	{ -1, "/petstore/v1/pet", ROUTE_BAD_METHOD, 0, "/pet", NULL },
	{ M__COUNT, "/petstore/v1/pet", ROUTE_BAD_METHOD, 0, "/pet", NULL },
	/* nested base paths: the longest wins, no fall back */
	{ M_GET, "/petstore/v1/admin/users", ROUTE_OK, 1, "/users", "/users" },
	{ M_GET, "/petstore/v1/admin/pet", ROUTE_NOT_FOUND, 1, NULL, "/pet" },
	{ M_GET, "/petstore/v1/admin", ROUTE_NOT_FOUND, 1, NULL, "" },
	{ M_GET, "/petstore/v1/adminx/users", ROUTE_NOT_FOUND, 0, NULL, NULL },
	/* root API: the remainder is the whole path */
	{ M_GET, "/health", ROUTE_OK, 2, "/health", "/health" },
	{ M_GET, "/petstore/v1x/pet", ROUTE_NOT_FOUND, 2, NULL, "/petstore/v1x/pet" },
	{ M_GET, "/petstore", ROUTE_NOT_FOUND, 2, NULL, "/petstore" },
	{ M_GET, "/Petstore/v1/pet", ROUTE_NOT_FOUND, 2, NULL, NULL },
	/* literal beats template in both declaration orders */
	{ M_GET, "/lf/x/me", ROUTE_OK, 3, "/x/me", NULL },
	{ M_GET, "/lf/x/you", ROUTE_OK, 3, "/x/{id}", NULL },
	{ M_GET, "/tf/x/me", ROUTE_OK, 4, "/x/me", NULL },
	{ M_GET, "/tf/x/you", ROUTE_OK, 4, "/x/{id}", NULL },
	{ M_GET, "/tf/x/", ROUTE_NOT_FOUND, 4, NULL, NULL },
};

static const struct match_case noroot_cases[] = {
	{ M_GET, "/petstore/v1x/pet", ROUTE_NOT_FOUND, -1, NULL, NULL },
	{ M_GET, "/petstore", ROUTE_NOT_FOUND, -1, NULL, NULL },
	{ M_GET, "/", ROUTE_NOT_FOUND, -1, NULL, NULL },
	{ M_GET, "/petstore/v1/pet", ROUTE_OK, 0, "/pet", "/pet" },
};

static void
test_match(void)
{
	struct api *apis[5];
	struct cfg_errors e = { 0 };
	struct router *r;
	struct route rt;
	size_t i;

	apis[0] = mkapi("pet.yaml", "Petstore", "/petstore/v1", 4, petstore,
	    sizeof(petstore) / sizeof(petstore[0]));
	apis[1] = mkapi("admin.yaml", "Admin", "/petstore/v1/admin", 4, admin, 1);
	apis[2] = mkapi("root.yaml", "Root", "/", 4, rootdefs, 1);
	apis[3] = mkapi("lf.yaml", "LF", "/lf", 4, lit_first, 2);
	apis[4] = mkapi("tf.yaml", "TF", "/tf", 4, tmpl_first, 2);

	r = router_build(apis, 5, &e);
	ok(r != NULL, "router builds");
	is_int(e.n, 0, "no errors");
	if (r == NULL) {
		cfg_errors_print(&e);
		return;
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_match(r, apis, &cases[i]);

	/* allow bits */
	router_match(r, M_PUT, "/petstore/v1/pet", 16, &rt);
	is_int(rt.allow, B(M_GET) | B(M_HEAD) | B(M_POST), "405 allow: GET HEAD POST");
	router_match(r, M_GET, "/petstore/v1/store/order/", 25, &rt);
	is_int(rt.allow, B(M_POST), "405 allow: POST only, no HEAD");
	router_match(r, M_GET, "/petstore/v1/pet/1", 18, &rt);
	is_int(rt.allow, B(M_GET) | B(M_HEAD) | B(M_DELETE), "allow also set on success");
	/* length, not NUL, delimits the path */
	is_int(router_match(r, M_GET, "/petstore/v1/pet/1/zzz", 18, &rt), ROUTE_OK,
	    "npath used by length");
	is_int(rt.rlen, 6, "rlen by length");
	is_int(router_match(r, M_GET, "", 0, &rt), ROUTE_NOT_FOUND, "empty path");
	router_free(r);

	/* without the root API: nothing falls through to it */
	r = router_build(apis, 2, &e);
	ok(r != NULL, "router without root builds");
	for (i = 0; r && i < sizeof(noroot_cases) / sizeof(noroot_cases[0]); i++)
		run_match(r, apis, &noroot_cases[i]);
	router_free(r);

	/* an empty router */
	r = router_build(NULL, 0, &e);
	ok(r != NULL, "empty router builds");
	is_int(router_match(r, M_GET, "/x", 2, &rt), ROUTE_NOT_FOUND, "empty router: 404");
	router_free(r);
	router_free(NULL);

	for (i = 0; i < 5; i++)
		freeapi(apis[i]);
	cfg_errors_clear(&e);
}

/* ---- build errors ---- */

static int
has_error(const struct cfg_errors *e, const char *a, const char *b, const char *c)
{
	size_t i;

	for (i = 0; i < e->n; i++) {
		if (strstr(e->msgs[i], a) && (!b || strstr(e->msgs[i], b)) &&
		    (!c || strstr(e->msgs[i], c)))
			return 1;
	}
	return 0;
}

static void
show_errors(const struct cfg_errors *e)
{
	size_t i;

	for (i = 0; i < e->n; i++)
		printf("#   error: %s\n", e->msgs[i]);
}

static void
test_errors(void)
{
	static const struct rdef one[] = { { "/a", B(M_GET) } };
	static const struct rdef equiv[] = {
		{ "/pet/{id}", B(M_GET) },
		{ "/pet/{id}/", B(M_GET) },		/* different: trailing slash */
		{ "/pet/{petId}", B(M_POST) },		/* same requests as /pet/{id} */
		{ "/f/{a}.json", B(M_GET) },
		{ "/f/{b}.json", B(M_GET) },		/* same as /f/{a}.json */
		{ "/f/x.{b}", B(M_GET) },		/* overlaps but not the same: fine */
		{ "/bad/{x", B(M_GET) },
		{ "nolead", B(M_GET) },
	};
	struct api *apis[3];
	struct cfg_errors e = { 0 };
	struct router *r;

	apis[0] = mkapi("one.yaml", "First", "/x", 7, one, 1);
	apis[1] = mkapi("two.yaml", "Second", "/y", 3, one, 1);
	apis[2] = mkapi("three.yaml", "Third", "/x", 9, one, 1);
	r = router_build(apis, 3, &e);
	ok(r == NULL, "duplicate base path fails the build");
	is_int(e.n, 1, "one error");
	ok(has_error(&e, "three.yaml:9:3", "base path /x already used by API 'First'",
	    "(one.yaml:7)"), "duplicate base path message");
	show_errors(&e);
	router_free(r);
	cfg_errors_clear(&e);
	freeapi(apis[0]);
	freeapi(apis[1]);
	freeapi(apis[2]);

	apis[0] = mkapi("eq.yaml", "Eq", "/eq", 20, equiv, sizeof(equiv) / sizeof(equiv[0]));
	r = router_build(apis, 1, &e);
	ok(r == NULL, "equivalent templates fail the build");
	is_int(e.n, 4, "every problem reported");
	ok(has_error(&e, "eq.yaml:32:5", "/pet/{petId}", "/pet/{id}"), "equivalent templates message");
	ok(has_error(&e, "eq.yaml:34:5", "/f/{b}.json", "/f/{a}.json"), "equivalent mixed templates");
	ok(has_error(&e, "/bad/{x", "unbalanced", NULL), "unbalanced brace");
	ok(has_error(&e, "nolead", "start with '/'", NULL), "template without leading slash");
	show_errors(&e);
	router_free(r);
	cfg_errors_clear(&e);
	freeapi(apis[0]);

	/* the same literal path twice */
	{
		static const struct rdef dup[] = { { "/a/b", B(M_GET) }, { "/a/b", B(M_PUT) } };

		apis[0] = mkapi("dup.yaml", "Dup", "/", 1, dup, 2);
		r = router_build(apis, 1, &e);
		ok(r == NULL && e.n == 1, "duplicate literal path is an error");
		router_free(r);
		cfg_errors_clear(&e);
		freeapi(apis[0]);
	}
}

/* ---- scale ---- */

#define NBIG 10000
#define NAPIS 1000

static void
test_scale(void)
{
	struct rdef *defs = calloc(NBIG * 2, sizeof(*defs));
	char (*names)[32] = calloc(NBIG * 2, sizeof(*names));
	struct api **apis = calloc(NAPIS + 1, sizeof(*apis));
	struct cfg_errors e = { 0 };
	struct router *r;
	struct route rt;
	char path[128];
	size_t i, good = 0;
	int n;

	for (i = 0; i < NBIG; i++) {
		snprintf(names[2 * i], sizeof(names[0]), "/r%zu/{id}", i);
		snprintf(names[2 * i + 1], sizeof(names[0]), "/items/{id}/r%zu", i);
		defs[2 * i].path = names[2 * i];
		defs[2 * i].methods = B(M_GET);
		defs[2 * i + 1].path = names[2 * i + 1];
		defs[2 * i + 1].methods = B(M_POST);
	}
	apis[0] = mkapi("big.yaml", "Big", "/big", 1, defs, NBIG * 2);
	for (i = 1; i <= NAPIS; i++) {
		char base[32];

		snprintf(base, sizeof(base), "/api%zu/v1", i);
		apis[i] = mkapi("many.yaml", "Many", base, (unsigned)i, defs, 2);
	}
	r = router_build(apis, NAPIS + 1, &e);
	ok(r != NULL, "router with %d resources and %d APIs builds", NBIG * 2, NAPIS + 1);
	show_errors(&e);
	if (r == NULL)
		goto out;
	for (i = 0; i < NBIG; i++) {
		n = snprintf(path, sizeof(path), "/big/r%zu/x%zu", i, i);
		if (router_match(r, M_GET, path, (size_t)n, &rt) == ROUTE_OK &&
		    rt.res == &apis[0]->res[2 * i])
			good++;
		n = snprintf(path, sizeof(path), "/big/items/%zu/r%zu", i, i);
		if (router_match(r, M_POST, path, (size_t)n, &rt) == ROUTE_OK &&
		    rt.res == &apis[0]->res[2 * i + 1])
			good++;
	}
	is_int(good, NBIG * 2, "every one of %d resources routes to itself", NBIG * 2);
	good = 0;
	for (i = 1; i <= NAPIS; i++) {
		n = snprintf(path, sizeof(path), "/api%zu/v1/r0/abc", i);
		if (router_match(r, M_GET, path, (size_t)n, &rt) == ROUTE_OK && rt.api == apis[i] &&
		    rt.res == &apis[i]->res[0] && rt.rlen == 7)
			good++;
	}
	is_int(good, NAPIS, "every one of %d APIs routes to itself", NAPIS);
	is_int(router_match(r, M_GET, "/big/r10000/x", 13, &rt), ROUTE_NOT_FOUND, "r10000 is 404");
	is_int(router_match(r, M_GET, "/big/r5/x/y", 11, &rt), ROUTE_NOT_FOUND, "too deep is 404");
	is_int(router_match(r, M_GET, "/api1001/v1/r0/x", 16, &rt), ROUTE_NOT_FOUND, "api1001 is 404");
	is_int(router_match(r, M_GET, "/big/items/1/r1", 15, &rt), ROUTE_BAD_METHOD, "405 in big API");
	is_int(rt.allow, B(M_POST), "405 allow in big API");
	router_free(r);
out:
	cfg_errors_clear(&e);
	for (i = 0; i <= NAPIS; i++)
		freeapi(apis[i]);
	free(apis);
	free(names);
	free(defs);
}

int
main(void)
{
	test_normalize();
	test_match();
	test_errors();
	test_scale();
	return tap_done();
}
