/* router: (method, normalized path) -> API resource.
 *
 * Two levels of segment tries, built once per configuration:
 *
 *   base trie      one node per base-path segment; a node where a base path
 *                  ends holds its API and that API's resource trie.
 *   resource trie  one node per template segment. Each node has
 *                    - a hash table of literal children (exact raw bytes),
 *                    - a short list of "mixed" children for segments such as
 *                      "{name}.json" (grouped by shape, so one per shape),
 *                    - at most one full-template child ("{id}").
 *
 * A lookup walks one node per request segment; it never scans a list of APIs
 * or resources, so its cost does not grow with their number. Literal children
 * are tried first, then mixed ones, then the template child, with
 * backtracking: for /a/{x}/c and /a/b/d, the request /a/b/c goes down the
 * literal "b", fails at "c", and comes back to match the template. Each node
 * sits at a fixed depth, so backtracking visits every trie node at most once.
 *
 * Decisions (documented in mgw-evd.yaml(5) as well):
 *   - Base paths may nest (/a and /a/b are two APIs). The longest base path
 *     that matches on whole segments wins; if the rest then matches no
 *     resource of that API the answer is 404 (or 405): there is no fall back
 *     to the shorter base path, so an API never sees requests meant for
 *     another one by accident.
 *   - Trailing slashes are significant: "/pet/1/" does not match "/pet/{id}"
 *     and "/pet/" does not match "/pet" (declare "/pet/" to accept it). The
 *     only exception is the resource "/", which matches both the remainders
 *     "" and "/" (so base path "/petstore/v1" with resource "/" answers both
 *     "/petstore/v1" and "/petstore/v1/").
 *   - When several resources match the path, the most specific one (literal
 *     segments first, left to right) is the match; if it does not declare
 *     the method the answer is 405 with its Allow, even if a less specific
 *     template declares the method.
 *   - Segments are compared as raw bytes: escapes are not decoded, so "%2F"
 *     never splits a segment and "a%62" is not "ab".
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"
#include "config.h"
#include "openapi.h"

#define TOK_ANY1	(-1)	/* one byte */
#define TOK_STAR	(-2)	/* zero or more bytes */

struct rnode {
	char *seg;			/* literal segment (literal children), or the shape */
	size_t slen;
	uint64_t hash;

	struct rnode **lit;		/* open addressing, power-of-two capacity */
	size_t lcap, nlit;
	struct rnode **mix;		/* mixed children, best first */
	size_t nmix;
	struct rnode *var;		/* "{x}" child */

	int *prog;			/* mixed node: compiled shape */
	size_t plen;
	size_t lits;			/* mixed node: literal bytes (priority) */
	size_t order;			/* mixed node: insertion order (tie break) */

	const struct api_resource *res;	/* resource trie: a template ends here */
	const struct api *api;		/* base trie: a base path ends here */
	struct rnode *rroot;		/* base trie: the API's resource trie */
};

struct router {
	struct rnode *base;
};

static uint64_t
seg_hash(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h ^ (h >> 29);
}

static struct rnode *
node_new(const char *seg, size_t slen)
{
	struct rnode *n = calloc(1, sizeof(*n));

	if (n == NULL)
		return NULL;
	n->seg = malloc(slen + 1);
	if (n->seg == NULL) {
		free(n);
		return NULL;
	}
	memcpy(n->seg, seg, slen);
	n->seg[slen] = '\0';
	n->slen = slen;
	n->hash = seg_hash(seg, slen);
	return n;
}

static void
node_free(struct rnode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->lcap; i++)
		node_free(n->lit[i]);
	for (i = 0; i < n->nmix; i++)
		node_free(n->mix[i]);
	node_free(n->var);
	node_free(n->rroot);
	free(n->lit);
	free(n->mix);
	free(n->prog);
	free(n->seg);
	free(n);
}

static const struct rnode *
lit_get(const struct rnode *n, const char *seg, size_t slen)
{
	uint64_t h;
	size_t i, mask;

	if (n->nlit == 0)
		return NULL;
	h = seg_hash(seg, slen);
	mask = n->lcap - 1;
	for (i = (size_t)h & mask;; i = (i + 1) & mask) {
		const struct rnode *c = n->lit[i];

		if (c == NULL)
			return NULL;
		if (c->hash == h && c->slen == slen && memcmp(c->seg, seg, slen) == 0)
			return c;
	}
}

static int
lit_put(struct rnode *n, struct rnode *c)
{
	size_t i, mask;

	if ((n->nlit + 1) * 2 > n->lcap) {
		size_t ncap = n->lcap ? n->lcap * 2 : 4, j;
		struct rnode **t = calloc(ncap, sizeof(*t));

		if (t == NULL)
			return -1;
		for (j = 0; j < n->lcap; j++) {
			struct rnode *o = n->lit[j];

			if (o == NULL)
				continue;
			for (i = (size_t)o->hash & (ncap - 1); t[i] != NULL; i = (i + 1) & (ncap - 1))
				;
			t[i] = o;
		}
		free(n->lit);
		n->lit = t;
		n->lcap = ncap;
	}
	mask = n->lcap - 1;
	for (i = (size_t)c->hash & mask; n->lit[i] != NULL; i = (i + 1) & mask)
		;
	n->lit[i] = c;
	n->nlit++;
	return 0;
}

/* Find or add the literal child 'seg'. */
static struct rnode *
lit_child(struct rnode *n, const char *seg, size_t slen)
{
	struct rnode *c = (struct rnode *)lit_get(n, seg, slen);

	if (c != NULL)
		return c;
	if ((c = node_new(seg, slen)) == NULL)
		return NULL;
	if (lit_put(n, c) != 0) {
		node_free(c);
		return NULL;
	}
	return c;
}

/* ---- template segments ---- */

enum seg_kind { SEG_LITERAL, SEG_VAR, SEG_MIXED, SEG_BAD };

static enum seg_kind
seg_classify(const char *s, size_t n)
{
	size_t i, opens = 0;
	int in = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '{') {
			if (in)
				return SEG_BAD;
			in = 1;
			opens++;
		} else if (s[i] == '}') {
			if (!in)
				return SEG_BAD;
			in = 0;
		}
	}
	if (in)
		return SEG_BAD;
	if (opens == 0)
		return SEG_LITERAL;
	if (opens == 1 && s[0] == '{' && s[n - 1] == '}')
		return SEG_VAR;
	return SEG_MIXED;
}

/* "{name}.{ext}" -> shape "{}.{}" and program [ANY1 STAR '.' ANY1 STAR]:
 * a variable matches one or more bytes. */
static struct rnode *
mixed_node(const char *s, size_t n, size_t order)
{
	char *shape = malloc(n + 1);
	int *prog = malloc((n + 1) * sizeof(*prog));
	size_t i, sl = 0, pl = 0, lits = 0;
	struct rnode *c = NULL;

	if (shape == NULL || prog == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		if (s[i] == '{') {
			while (s[i] != '}')
				i++;
			shape[sl++] = '{';
			shape[sl++] = '}';
			prog[pl++] = TOK_ANY1;
			prog[pl++] = TOK_STAR;
		} else {
			shape[sl++] = s[i];
			prog[pl++] = (unsigned char)s[i];
			lits++;
		}
	}
	if ((c = node_new(shape, sl)) == NULL)
		goto out;
	c->prog = prog;
	c->plen = pl;
	c->lits = lits;
	c->order = order;
	prog = NULL;
out:
	free(shape);
	free(prog);
	return c;
}

/* Wildcard match with backtracking on the last star only: O(len * plen). */
static int
mixed_match(const struct rnode *m, const char *s, size_t n)
{
	const int *t = m->prog;
	size_t ti = 0, si = 0, star_t = SIZE_MAX, star_s = 0;

	while (si < n) {
		if (ti < m->plen && t[ti] == TOK_STAR) {
			star_t = ti++;
			star_s = si;
		} else if (ti < m->plen && (t[ti] == TOK_ANY1 || t[ti] == (unsigned char)s[si])) {
			ti++;
			si++;
		} else if (star_t != SIZE_MAX) {
			ti = star_t + 1;
			si = ++star_s;
		} else {
			return 0;
		}
	}
	while (ti < m->plen && t[ti] == TOK_STAR)
		ti++;
	return ti == m->plen;
}

static int
mixed_better(const struct rnode *a, const struct rnode *b)
{
	if (a->lits != b->lits)
		return a->lits > b->lits;
	if (a->plen != b->plen)		/* same literals: fewer variables first */
		return a->plen < b->plen;
	return a->order < b->order;
}

static struct rnode *
mixed_child(struct rnode *n, const char *s, size_t len, size_t order)
{
	struct rnode *c, **t;
	size_t i, j;

	c = mixed_node(s, len, order);
	if (c == NULL)
		return NULL;
	for (i = 0; i < n->nmix; i++) {
		if (n->mix[i]->slen == c->slen && memcmp(n->mix[i]->seg, c->seg, c->slen) == 0) {
			node_free(c);
			return n->mix[i];
		}
	}
	t = realloc(n->mix, (n->nmix + 1) * sizeof(*t));
	if (t == NULL) {
		node_free(c);
		return NULL;
	}
	n->mix = t;
	for (i = 0; i < n->nmix && mixed_better(n->mix[i], c); i++)
		;
	for (j = n->nmix; j > i; j--)
		n->mix[j] = n->mix[j - 1];
	n->mix[i] = c;
	n->nmix++;
	return c;
}

/* ---- build ---- */

static void
api_error(struct cfg_errors *e, const struct api *a, unsigned line, unsigned col,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
api_error(struct cfg_errors *e, const struct api *a, unsigned line, unsigned col,
    const char *fmt, ...)
{
	struct cfg_node at = { .line = line, .col = col };
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg_error(e, a->file ? a->file : "-", &at, "%s", msg);
}

static int
add_resource(struct rnode *root, const struct api *a, const struct api_resource *res,
    size_t order, struct cfg_errors *e)
{
	const char *path = res->path, *p, *end, *s;
	struct rnode *n = root;

	if (path == NULL || path[0] != '/') {
		api_error(e, a, res->line, res->col,
		    "path template '%s' must start with '/'", path ? path : "");
		return -1;
	}
	end = path + strlen(path);
	for (p = path; p < end; p = s) {
		const char *seg = p + 1;

		for (s = seg; s < end && *s != '/'; s++)
			;
		switch (seg_classify(seg, (size_t)(s - seg))) {
		case SEG_LITERAL:
			n = lit_child(n, seg, (size_t)(s - seg));
			break;
		case SEG_VAR:
			if (n->var == NULL)
				n->var = node_new("{}", 2);
			n = n->var;
			break;
		case SEG_MIXED:
			n = mixed_child(n, seg, (size_t)(s - seg), order);
			break;
		case SEG_BAD:
			api_error(e, a, res->line, res->col,
			    "path template '%s' has an unbalanced '{' or '}'", path);
			return -1;
		}
		if (n == NULL) {
			api_error(e, a, res->line, res->col, "out of memory");
			return -1;
		}
	}
	if (n->res != NULL) {
		api_error(e, a, res->line, res->col,
		    "path %s matches the same requests as %s (line %u)", res->path,
		    n->res->path, n->res->line);
		return -1;
	}
	n->res = res;
	return 0;
}

struct router *
router_build(struct api **apis, size_t napis, struct cfg_errors *e)
{
	struct router *r = calloc(1, sizeof(*r));
	size_t i, j;
	int errors = 0;

	if (r == NULL || (r->base = node_new("", 0)) == NULL) {
		free(r);
		cfg_error(e, "router", NULL, "out of memory");
		return NULL;
	}
	for (i = 0; i < napis; i++) {
		const struct api *a = apis[i];
		const char *bp, *p, *end, *s;
		struct rnode *n = r->base;

		if (a == NULL)
			continue;
		bp = a->base_path ? a->base_path : "/";
		if (bp[0] != '/') {
			api_error(e, a, a->line, a->col, "base path '%s' must start with '/'", bp);
			errors++;
			continue;
		}
		end = bp + strlen(bp);
		if (end - bp == 1)
			end = bp;	/* "/" is the root */
		for (p = bp; p < end && n != NULL; p = s) {
			const char *seg = p + 1;

			for (s = seg; s < end && *s != '/'; s++)
				;
			n = lit_child(n, seg, (size_t)(s - seg));
		}
		if (n == NULL) {
			cfg_error(e, "router", NULL, "out of memory");
			errors++;
			break;
		}
		if (n->api != NULL) {
			api_error(e, a, a->line, a->col, "base path %s already used by API '%s' (%s:%u)",
			    bp, n->api->title ? n->api->title : "",
			    n->api->file ? n->api->file : "-", n->api->line);
			errors++;
			continue;
		}
		n->api = a;
		if ((n->rroot = node_new("", 0)) == NULL) {
			cfg_error(e, "router", NULL, "out of memory");
			errors++;
			break;
		}
		for (j = 0; j < a->nres; j++) {
			if (add_resource(n->rroot, a, &a->res[j], j, e) != 0)
				errors++;
		}
	}
	if (errors) {
		router_free(r);
		return NULL;
	}
	return r;
}

void
router_free(struct router *r)
{
	if (r == NULL)
		return;
	node_free(r->base);
	free(r);
}

/* ---- normalize ---- */

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* 1 for ".", 2 for "..", also spelled %2e / %2E in any mix; else 0. */
static int
dot_segment(const char *s, size_t n)
{
	size_t i = 0;
	int dots = 0;

	while (i < n) {
		if (s[i] == '.')
			i++;
		else if (s[i] == '%' && n - i >= 3 && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E'))
			i += 3;
		else
			return 0;
		if (++dots > 2)
			return 0;
	}
	return dots;
}

int
router_normalize(const char *path, size_t len, char *buf, size_t buflen)
{
	return router_normalize_kept(path, len, buf, buflen, NULL);
}

int
router_normalize_kept(const char *path, size_t len, char *buf, size_t buflen, size_t *kept)
{
	const char *p, *end = path + len, *s;
	size_t n = 0, i, low = SIZE_MAX;
	int trailing = 0;

	if (path == NULL || len == 0 || path[0] != '/' || buf == NULL)
		return -1;
	if (len > INT32_MAX)
		return -1;
	/* Escapes: well formed and never NUL; raw NUL refused too. */
	for (i = 0; i < len; i++) {
		if (path[i] == '\0')
			return -1;
		if (path[i] == '%') {
			int h, l;

			if (len - i < 3 || (h = hexval(path[i + 1])) < 0 || (l = hexval(path[i + 2])) < 0)
				return -1;
			if (h == 0 && l == 0)
				return -1;
			i += 2;
		}
	}
	/* remove_dot_segments (RFC 3986 5.2.4) over raw segments: the output is a
	 * run of "/segment"; ".." drops the last one and may not climb above "/". */
	for (p = path; p < end; p = s) {
		const char *seg = p + 1;
		size_t sl;

		for (s = seg; s < end && *s != '/'; s++)
			;
		sl = (size_t)(s - seg);
		switch (dot_segment(seg, sl)) {
		case 1:
			trailing = 1;
			break;
		case 2:
			if (n == 0)
				return -1;
			while (buf[--n] != '/')
				;
			if (n < low)
				low = n;
			trailing = 1;
			break;
		default:
			if (n + 1 + sl > buflen)
				return -1;
			buf[n++] = '/';
			memcpy(buf + n, seg, sl);
			n += sl;
			trailing = 0;
			break;
		}
	}
	if (trailing || n == 0) {
		if (n + 1 > buflen)
			return -1;
		buf[n++] = '/';
	}
	if (n < buflen)
		buf[n] = '\0';	/* a convenience when there is room */
	if (kept != NULL)
		*kept = low;
	return (int)n;
}

/* ---- match ---- */

/* p is at the '/' before the next segment, or at end when none is left. */
static const struct rnode *
res_match(const struct rnode *n, const char *p, const char *end)
{
	const struct rnode *c, *r;
	const char *seg, *s;
	size_t sl, i;

	if (p == end)
		return n->res != NULL ? n : NULL;
	seg = p + 1;
	s = memchr(seg, '/', (size_t)(end - seg));
	if (s == NULL)
		s = end;
	sl = (size_t)(s - seg);
	if ((c = lit_get(n, seg, sl)) != NULL && (r = res_match(c, s, end)) != NULL)
		return r;
	if (sl == 0)
		return NULL;	/* variables never match an empty segment */
	for (i = 0; i < n->nmix; i++) {
		if (mixed_match(n->mix[i], seg, sl) && (r = res_match(n->mix[i], s, end)) != NULL)
			return r;
	}
	if (n->var != NULL)
		return res_match(n->var, s, end);
	return NULL;
}

enum route_status
router_match(const struct router *r, int method, const char *npath, size_t nlen,
    struct route *out)
{
	const struct rnode *n, *best = NULL, *hit;
	const char *end = npath + nlen, *p = npath, *best_p = npath, *rp, *rend;
	unsigned allow;

	memset(out, 0, sizeof(*out));
	if (r == NULL || npath == NULL || nlen == 0 || npath[0] != '/')
		return ROUTE_NOT_FOUND;
	/* Longest base path on whole segments. */
	n = r->base;
	if (n->api != NULL)
		best = n;
	while (p < end) {
		const char *seg = p + 1, *s = memchr(seg, '/', (size_t)(end - seg));

		if (s == NULL)
			s = end;
		if ((n = lit_get(n, seg, (size_t)(s - seg))) == NULL)
			break;
		p = s;
		if (n->api != NULL) {
			best = n;
			best_p = p;
		}
	}
	if (best == NULL)
		return ROUTE_NOT_FOUND;
	out->api = best->api;
	out->remainder = best_p;
	out->rlen = (size_t)(end - best_p);
	/* The remainder "" is matched as "/". */
	if (out->rlen == 0) {
		rp = "/";
		rend = rp + 1;
	} else {
		rp = best_p;
		rend = end;
	}
	hit = res_match(best->rroot, rp, rend);
	if (hit == NULL)
		return ROUTE_NOT_FOUND;
	out->res = hit->res;
	allow = hit->res->methods;
	if (allow & (1u << M_GET))
		allow |= 1u << M_HEAD;
	out->allow = allow;
	if (method < 0 || method >= M__COUNT || !(allow & (1u << method)))
		return ROUTE_BAD_METHOD;
	return ROUTE_OK;
}
