/* openapi: OpenAPI 3.x / Swagger 2.0 documents with WSO2 API Microgateway 3.x
 * extensions (x-wso2-basePath, x-wso2-production-endpoints,
 * x-wso2-sandbox-endpoints, x-wso2-endpoints) -> struct api.
 *
 * Every problem is reported with file:line:col and loading goes on, so one run
 * shows all of them; a document with any error builds nothing. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "endpoint.h"
#include "log.h"
#include "openapi.h"

#define REF_PREFIX	"#/x-wso2-endpoints/"
#define REF_MAX_HOPS	32
#define TIMEOUT_DEFAULT	60000u
#define TIMEOUT_MAX	86400000ull
#define MAX_TEMPLATES	64

static const char *const method_names[M__COUNT] = {
	[M_GET] = "GET", [M_HEAD] = "HEAD", [M_POST] = "POST", [M_PUT] = "PUT",
	[M_DELETE] = "DELETE", [M_PATCH] = "PATCH", [M_OPTIONS] = "OPTIONS", [M_TRACE] = "TRACE",
};

const char *method_name(enum http_method m)
{
	return (unsigned)m < M__COUNT ? method_names[m] : "?";
}

int method_from_name(const char *name, size_t len)
{
	for (int m = 0; m < M__COUNT; m++)
		if (strlen(method_names[m]) == len && strncasecmp(method_names[m], name, len) == 0)
			return m;
	return -1;
}

/* ---- the loading context ---- */

enum { NE_NEW = 0, NE_BUSY, NE_DONE, NE_FAILED };

struct named_ep {
	const struct cfg_node *key;	/* the name, as written */
	const struct cfg_node *node;	/* its endpoint object (or a reference) */
	struct ep_group *g;
	int state;
};

struct oa {
	const char *file;
	const struct cfg_node *root;
	struct cfg_errors *e;
	struct api *api;
	int failed;
	int v3;
	struct named_ep *named;
	size_t nnamed;
	int api_prod_bad;		/* API-level production endpoint had errors */
	int fb_state;			/* 0 not tried, 1 tried */
	struct ep_group *fallback;	/* from servers / schemes+host+basePath */
};

#define oa_err(o, at, ...) do { cfg_error((o)->e, (o)->file, (at), __VA_ARGS__); (o)->failed = 1; } while (0)

static int is_null(const struct cfg_node *n)
{
	return !n || (n->type == CFG_SCALAR && n->plain &&
	    (n->len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
	    strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0));
}

static const char *type_word(const struct cfg_node *n)
{
	if (!n)
		return "nothing";
	return n->type == CFG_MAP ? "a mapping" : n->type == CFG_SEQ ? "a list" : "a scalar";
}

static int register_group(struct oa *o, struct ep_group *g)
{
	struct ep_group **ng = realloc(o->api->groups, (o->api->ngroups + 1) * sizeof(*ng));

	if (!ng) {
		ep_group_free(g);
		return -1;
	}
	o->api->groups = ng;
	ng[o->api->ngroups++] = g;
	return 0;
}

/* Parse a non-negative decimal integer; -1 if it is not one. */
static int parse_ull(const struct cfg_node *n, unsigned long long *out)
{
	unsigned long long v = 0;
	const char *p;

	if (!n || n->type != CFG_SCALAR || n->len == 0)
		return -1;
	p = n->value;
	if (*p == '+')
		p++;
	if (!*p)
		return -1;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if (v > (~0ull - 9) / 10)
			return -1;
		v = v * 10 + (unsigned)(*p - '0');
	}
	*out = v;
	return 0;
}

/* ---- endpoint groups ---- */

static struct ep_group *build_group(struct oa *o, const struct cfg_node *obj, const char *name)
{
	const struct cfg_node *urls = NULL, *type = NULL, *adv = NULL, *k;
	enum group_type gt = GROUP_HTTP;
	unsigned timeout = TIMEOUT_DEFAULT;
	int bad = 0;
	struct ep_group *g;
	char errbuf[512];

	for (size_t i = 0; i < obj->n; i++) {
		k = obj->keys[i];
		if (strcmp(k->value, "urls") == 0)
			urls = obj->items[i];
		else if (strcmp(k->value, "type") == 0)
			type = obj->items[i];
		else if (strcmp(k->value, "advanceEndpointConfig") == 0)
			adv = obj->items[i];
		else
			log_warn("openapi", "%s:%u:%u: ignoring unsupported endpoint key '%.80s'",
			    o->file, k->line, k->col, k->value);
	}
	if (type && !is_null(type)) {
		if (type->type != CFG_SCALAR) {
			oa_err(o, type, "endpoint type must be http, load_balance or failover, not %s",
			    type_word(type));
			bad = 1;
		} else if (strcmp(type->value, "http") == 0) {
			gt = GROUP_HTTP;
		} else if (strcmp(type->value, "load_balance") == 0) {
			gt = GROUP_LOAD_BALANCE;
		} else if (strcmp(type->value, "failover") == 0) {
			gt = GROUP_FAILOVER;
		} else {
			oa_err(o, type, "unknown endpoint type '%.80s' (expected http, load_balance or failover)",
			    type->value);
			bad = 1;
		}
	}
	if (adv && !is_null(adv)) {
		if (adv->type != CFG_MAP) {
			oa_err(o, adv, "advanceEndpointConfig must be a mapping, not %s", type_word(adv));
			bad = 1;
		} else {
			for (size_t i = 0; i < adv->n; i++) {
				unsigned long long v;

				k = adv->keys[i];
				if (strcmp(k->value, "timeoutInMillis") != 0) {
					log_warn("openapi", "%s:%u:%u: ignoring unsupported advanceEndpointConfig key '%.80s'",
					    o->file, k->line, k->col, k->value);
					continue;
				}
				if (parse_ull(adv->items[i], &v) < 0 || v < 1 || v > TIMEOUT_MAX) {
					oa_err(o, adv->items[i], "timeoutInMillis must be an integer from 1 to %llu",
					    TIMEOUT_MAX);
					bad = 1;
				} else {
					timeout = (unsigned)v;
				}
			}
		}
	}
	if (!urls) {
		oa_err(o, obj, "endpoint has no 'urls'");
		return NULL;
	}
	if (urls->type != CFG_SEQ || urls->n == 0) {
		oa_err(o, urls, "'urls' must be a non-empty list of URLs");
		return NULL;
	}
	if (gt == GROUP_HTTP && urls->n > 1) {
		oa_err(o, type ? type : urls, "type http takes one url; use load_balance or failover");
		bad = 1;
	}
	if (!(g = calloc(1, sizeof(*g))) || !(g->eps = calloc(urls->n, sizeof(*g->eps)))) {
		free(g);
		oa_err(o, obj, "out of memory");
		return NULL;
	}
	g->type = gt;
	g->timeout_ms = timeout;
	for (size_t i = 0; i < urls->n; i++) {
		const struct cfg_node *u = urls->items[i];

		if (u->type != CFG_SCALAR) {
			oa_err(o, u, "a url must be a string, not %s", type_word(u));
			bad = 1;
			continue;
		}
		if (endpoint_parse(u->value, &g->eps[g->neps], errbuf, sizeof(errbuf)) < 0) {
			oa_err(o, u, "%s", errbuf);
			bad = 1;
			continue;
		}
		g->eps[g->neps].line = u->line;
		g->eps[g->neps].col = u->col;
		g->neps++;
	}
	if (!bad && name && !(g->name = strdup(name)))
		bad = 1;
	if (bad) {
		ep_group_free(g);
		return NULL;
	}
	if (register_group(o, g) < 0) {
		oa_err(o, obj, "out of memory");
		return NULL;
	}
	return g;
}

static struct ep_group *resolve_named(struct oa *o, size_t i, const struct cfg_node *ref);

/* Decode one JSON-pointer token (with URI-fragment percent escapes) into buf. */
static int ptr_token(const char *s, size_t n, char *buf, size_t blen)
{
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == '%') {
			unsigned v = 0;

			if (i + 2 >= n)
				return -1;
			for (size_t k = 1; k <= 2; k++) {
				char h = s[i + k];

				v <<= 4;
				if (h >= '0' && h <= '9')
					v |= (unsigned)(h - '0');
				else if (h >= 'a' && h <= 'f')
					v |= (unsigned)(h - 'a' + 10);
				else if (h >= 'A' && h <= 'F')
					v |= (unsigned)(h - 'A' + 10);
				else
					return -1;
			}
			if (v == 0)
				return -1;
			c = (char)v;
			i += 2;
		} else if (c == '~') {
			if (i + 1 >= n)
				return -1;
			if (s[i + 1] == '0')
				c = '~';
			else if (s[i + 1] == '1')
				c = '/';
			else
				return -1;
			i++;
		}
		if (j + 1 >= blen)
			return -1;
		buf[j++] = c;
	}
	buf[j] = '\0';
	return (int)j;
}

static size_t named_find(const struct oa *o, const char *name)
{
	for (size_t i = 0; i < o->nnamed; i++)
		if (strcmp(o->named[i].key->value, name) == 0)
			return i;
	return (size_t)-1;
}

/* OpenAPI fixes the keys of a path item; an operation's are free, but an
 * x-wso2-* key that is nearly a supported one is a typo that would silently
 * route elsewhere. Keys of other x-wso2-* extensions (throttling, CORS, ...)
 * are WSO2 features mgw-evd does not implement: a warning, not an error. */
static const char *const path_item_keys[] = {
	"get", "put", "post", "delete", "options", "head", "patch", "trace",
	"summary", "description", "servers", "parameters", "$ref",
	"x-wso2-production-endpoints", "x-wso2-sandbox-endpoints", NULL,
};
static const char *const operation_keys[] = {
	"x-wso2-production-endpoints", "x-wso2-sandbox-endpoints", NULL,
};
static const char *const root_wso2_keys[] = {
	"x-wso2-basePath", "x-wso2-production-endpoints", "x-wso2-sandbox-endpoints",
	"x-wso2-endpoints", NULL,
};

static void oa_check_keys(struct oa *o, const struct cfg_node *map, const char *const *known,
    const char *where)
{
	int strict = known == path_item_keys;

	if (map == NULL || map->type != CFG_MAP)
		return;
	for (size_t i = 0; i < map->n; i++) {
		const struct cfg_node *k = map->keys[i];
		const char *best;
		size_t j;

		for (j = 0; known[j] && strcmp(k->value, known[j]) != 0; j++)
			;
		if (known[j])
			continue;
		int wso2 = strncasecmp(k->value, "x-wso2-", 7) == 0;

		if (!wso2 && (!strict || strncasecmp(k->value, "x-", 2) == 0))
			continue;	/* operation fields and other vendors' extensions */
		best = cfg_closest(k->value, known, 2);
		if (best != NULL)
			oa_err(o, k, "unknown key '%.80s' in %s (did you mean '%s'?)", k->value, where, best);
		else if (strict && !wso2)
			oa_err(o, k, "unknown key '%.80s' in %s", k->value, where);
		else
			log_warn("openapi", "%s:%u:%u: '%.80s' is not supported by mgw-evd and is ignored",
			    o->file, k->line, k->col, k->value);
	}
}

/* An endpoint value: an object, or a "#/x-wso2-endpoints/<name>" reference. */
static struct ep_group *parse_group(struct oa *o, const struct cfg_node *n, const char *what)
{
	char name[512];
	size_t i;

	if (n->type == CFG_MAP)
		return build_group(o, n, NULL);
	if (n->type != CFG_SCALAR || is_null(n)) {
		oa_err(o, n, "%s: expected an endpoint object {urls: [...]} or a "
		    "\"" REF_PREFIX "<name>\" reference, not %s", what,
		    is_null(n) ? "nothing" : type_word(n));
		return NULL;
	}
	if (strncmp(n->value, REF_PREFIX, strlen(REF_PREFIX)) != 0) {
		oa_err(o, n, "%s: '%.120s' is not a reference of the form \"" REF_PREFIX "<name>\"",
		    what, n->value);
		return NULL;
	}
	if (ptr_token(n->value + strlen(REF_PREFIX), n->len - strlen(REF_PREFIX), name, sizeof(name)) <= 0 ||
	    (i = named_find(o, name)) == (size_t)-1) {
		oa_err(o, n, "reference '%.120s' points nowhere: no such entry in x-wso2-endpoints",
		    n->value);
		return NULL;
	}
	return resolve_named(o, i, n);
}

static struct ep_group *resolve_named(struct oa *o, size_t i, const struct cfg_node *ref)
{
	struct named_ep *ne = &o->named[i];

	switch (ne->state) {
	case NE_DONE:
		return ne->g;
	case NE_FAILED:
		return NULL;	/* already reported where it is defined */
	case NE_BUSY:
		oa_err(o, ref, "reference loop through '" REF_PREFIX "%.80s'", ne->key->value);
		return NULL;
	default:
		break;
	}
	ne->state = NE_BUSY;
	if (ne->node->type == CFG_MAP)
		ne->g = build_group(o, ne->node, ne->key->value);
	else
		ne->g = parse_group(o, ne->node, ne->key->value);
	ne->state = ne->g ? NE_DONE : NE_FAILED;
	return ne->g;
}

static int named_add(struct oa *o, const struct cfg_node *key, const struct cfg_node *val)
{
	struct named_ep *nn;
	size_t j;

	if ((j = named_find(o, key->value)) != (size_t)-1) {
		oa_err(o, key, "x-wso2-endpoints: duplicate name '%.80s' (first at line %u, column %u)",
		    key->value, o->named[j].key->line, o->named[j].key->col);
		return 0;
	}
	if (!(nn = realloc(o->named, (o->nnamed + 1) * sizeof(*nn)))) {
		oa_err(o, key, "out of memory");
		return -1;
	}
	o->named = nn;
	memset(&nn[o->nnamed], 0, sizeof(*nn));
	nn[o->nnamed].key = key;
	nn[o->nnamed].node = val;
	o->nnamed++;
	return 0;
}

/* x-wso2-endpoints: a list of single-key mappings (WSO2's form) or a mapping. */
static void load_named(struct oa *o)
{
	const struct cfg_node *xe = cfg_map_get(o->root, "x-wso2-endpoints");

	if (is_null(xe))
		return;
	if (xe->type == CFG_MAP) {
		for (size_t i = 0; i < xe->n; i++)
			if (named_add(o, xe->keys[i], xe->items[i]) < 0)
				return;
	} else if (xe->type == CFG_SEQ) {
		for (size_t i = 0; i < xe->n; i++) {
			const struct cfg_node *it = xe->items[i];

			if (it->type != CFG_MAP) {
				oa_err(o, it, "x-wso2-endpoints entries must be mappings {name: {urls: [...]}}, not %s",
				    type_word(it));
				continue;
			}
			for (size_t j = 0; j < it->n; j++)
				if (named_add(o, it->keys[j], it->items[j]) < 0)
					return;
		}
	} else {
		oa_err(o, xe, "x-wso2-endpoints must be a list or a mapping of named endpoints");
		return;
	}
	/* validate them all, used or not */
	for (size_t i = 0; i < o->nnamed; i++)
		resolve_named(o, i, o->named[i].key);
}

/* ---- base path, servers ---- */

static char *base_path_normalize(const char *s, size_t len, const char **why)
{
	char *out, *w;
	size_t i = 0;

	if (len == 0) {
		*why = "empty base path";
		return NULL;
	}
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)s[k];

		if (c <= 0x20 || c == 0x7f) {
			*why = "whitespace or control character in base path";
			return NULL;
		}
		if (c == '?' || c == '#') {
			*why = "'?' and '#' are not allowed in a base path";
			return NULL;
		}
		if (c == '{' || c == '}') {
			*why = "path templates ('{...}') are not allowed in a base path";
			return NULL;
		}
		if (c == '%' || c == '\\') {
			*why = "'%' and '\\' are not allowed in a base path";
			return NULL;
		}
	}
	if (!(out = malloc(len + 2))) {
		*why = "out of memory";
		return NULL;
	}
	w = out;
	while (i < len) {
		size_t b;

		while (i < len && s[i] == '/')
			i++;
		b = i;
		while (i < len && s[i] != '/')
			i++;
		if (i == b)
			break;
		if ((i - b == 1 && s[b] == '.') || (i - b == 2 && s[b] == '.' && s[b + 1] == '.')) {
			free(out);
			*why = "'.' and '..' segments are not allowed in a base path";
			return NULL;
		}
		*w++ = '/';
		memcpy(w, s + b, i - b);
		w += i - b;
	}
	if (w == out)
		*w++ = '/';
	*w = '\0';
	return out;
}

static const struct cfg_node *servers0_url(const struct oa *o)
{
	const struct cfg_node *sv = cfg_map_get(o->root, "servers"), *u;

	if (!sv || sv->type != CFG_SEQ || sv->n == 0 || sv->items[0]->type != CFG_MAP)
		return NULL;
	u = cfg_map_get(sv->items[0], "url");
	return u && u->type == CFG_SCALAR ? u : NULL;
}

static int is_http_url(const char *s)
{
	return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

static void load_base_path(struct oa *o)
{
	const struct cfg_node *n = cfg_map_get(o->root, "x-wso2-basePath");
	const char *p, *why = NULL;
	size_t len;

	if (n) {
		if (n->type != CFG_SCALAR || is_null(n)) {
			oa_err(o, n, "x-wso2-basePath must be a path such as /petstore/v1");
			return;
		}
		p = n->value;
		len = n->len;
	} else if (o->v3 && (n = servers0_url(o))) {
		p = n->value;
		if (strstr(p, "://")) {
			p = strstr(p, "://") + 3;
			p += strcspn(p, "/?#");
		}
		len = strcspn(p, "?#");
		if (len == 0) {
			p = "/";
			len = 1;
		}
	} else if (!o->v3 && (n = cfg_map_get(o->root, "basePath")) && n->type == CFG_SCALAR) {
		p = n->value;
		len = n->len;
	} else {
		oa_err(o, o->root, "no x-wso2-basePath (and no %s to take a base path from)",
		    o->v3 ? "servers[0].url" : "basePath");
		return;
	}
	if (!(o->api->base_path = base_path_normalize(p, len, &why))) {
		oa_err(o, n, "invalid base path '%.120s': %s", n->value, why);
		return;
	}
	o->api->line = n->line;
	o->api->col = n->col;
}

/* The API-level production endpoint when no x-wso2 one is given: OpenAPI 3
 * servers[0].url or Swagger 2 schemes[0]://host basePath. Built on first use. */
static struct ep_group *fallback_group(struct oa *o)
{
	const struct cfg_node *at, *host, *bp, *sch;
	char *url = NULL, errbuf[512];
	const char *scheme = "http";
	struct ep_group *g;

	if (o->fb_state)
		return o->fallback;
	o->fb_state = 1;
	if (o->v3) {
		if (!(at = servers0_url(o)) || !is_http_url(at->value))
			return NULL;
		url = strdup(at->value);
	} else {
		host = cfg_map_get(o->root, "host");
		if (!host || host->type != CFG_SCALAR || is_null(host))
			return NULL;
		at = host;
		sch = cfg_map_get(o->root, "schemes");
		if (sch && sch->type == CFG_SEQ) {
			for (size_t i = 0; i < sch->n; i++) {
				if (sch->items[i]->type == CFG_SCALAR &&
				    (strcmp(sch->items[i]->value, "http") == 0 ||
				    strcmp(sch->items[i]->value, "https") == 0)) {
					scheme = sch->items[i]->value;
					break;
				}
			}
		}
		bp = cfg_map_get(o->root, "basePath");
		if (asprintf(&url, "%s://%s%s", scheme, host->value,
		    bp && bp->type == CFG_SCALAR && strcmp(bp->value, "/") != 0 ? bp->value : "") < 0)
			url = NULL;
	}
	g = url ? calloc(1, sizeof(*g)) : NULL;
	if (!g || !(g->eps = calloc(1, sizeof(*g->eps)))) {
		free(g);
		free(url);
		oa_err(o, at, "out of memory");
		return NULL;
	}
	g->type = GROUP_HTTP;
	g->timeout_ms = TIMEOUT_DEFAULT;
	if (endpoint_parse(url, &g->eps[0], errbuf, sizeof(errbuf)) < 0) {
		oa_err(o, at, "%s (from %s)", errbuf, o->v3 ? "servers[0].url" : "schemes, host and basePath");
		free(url);
		ep_group_free(g);
		return NULL;
	}
	free(url);
	g->eps[0].line = at->line;
	g->eps[0].col = at->col;
	g->neps = 1;
	if (register_group(o, g) < 0) {
		oa_err(o, at, "out of memory");
		return NULL;
	}
	o->fallback = g;
	return g;
}

/* ---- paths ---- */

static const char *check_template(const char *p, size_t len)
{
	struct { const char *s; size_t n; } names[MAX_TEMPLATES];
	size_t nn = 0, i = 0;

	if (len == 0 || p[0] != '/')
		return "a path must start with '/'";
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)p[k];

		if (c <= 0x20 || c == 0x7f)
			return "whitespace or control character in path";
		if (c == '?' || c == '#')
			return "'?' and '#' are not allowed in a path";
	}
	while (i < len) {
		size_t b = ++i;	/* skip '/' */
		const char *ob, *cb;

		while (i < len && p[i] != '/')
			i++;
		if (i == b) {
			if (i < len)
				return "empty path segment ('//')";
			break;	/* a trailing '/' */
		}
		ob = memchr(p + b, '{', i - b);
		cb = memchr(p + b, '}', i - b);
		if (!ob && !cb)
			continue;
		if (p[b] != '{' || p[i - 1] != '}' || i - b < 3 ||
		    memchr(p + b + 1, '{', i - b - 2) || memchr(p + b + 1, '}', i - b - 2))
			return "a template must be a whole path segment such as '{id}'";
		for (size_t k = 0; k < nn; k++)
			if (names[k].n == i - b - 2 && memcmp(names[k].s, p + b + 1, i - b - 2) == 0)
				return "template name used twice in one path";
		if (nn == MAX_TEMPLATES)
			return "too many templates in one path";
		names[nn].s = p + b + 1;
		names[nn++].n = i - b - 2;
	}
	return NULL;
}

/* Resolve a local "$ref" JSON pointer, following chains; NULL on error. */
static const struct cfg_node *follow_ref(struct oa *o, const struct cfg_node *refnode)
{
	const struct cfg_node *seen[REF_MAX_HOPS];
	size_t nseen = 0;
	const struct cfg_node *cur = refnode, *n, *r0 = refnode;
	char tok[1024];

	for (;;) {
		const char *s, *e;

		if (cur->type != CFG_SCALAR) {
			oa_err(o, cur, "$ref must be a string");
			return NULL;
		}
		for (size_t k = 0; k < nseen; k++) {
			if (seen[k] == cur) {
				oa_err(o, r0, "$ref loop: '%.120s' leads back to itself", r0->value);
				return NULL;
			}
		}
		if (nseen == REF_MAX_HOPS) {
			oa_err(o, r0, "$ref '%.120s': more than %d references in a chain", r0->value, REF_MAX_HOPS);
			return NULL;
		}
		seen[nseen++] = cur;
		if (cur->value[0] != '#' || (cur->value[1] != '/' && cur->value[1] != '\0')) {
			oa_err(o, cur, "$ref '%.120s': only local references (\"#/...\") are supported",
			    cur->value);
			return NULL;
		}
		n = o->root;
		s = cur->value + 1;
		while (*s == '/') {
			int tl;

			s++;
			e = s + strcspn(s, "/");
			tl = ptr_token(s, (size_t)(e - s), tok, sizeof(tok));
			if (tl < 0) {
				n = NULL;
				break;
			}
			if (n->type == CFG_MAP) {
				n = cfg_map_get(n, tok);
			} else if (n->type == CFG_SEQ) {
				unsigned long long ix = 0;
				struct cfg_node tmp = { .type = CFG_SCALAR, .value = tok, .len = (size_t)tl };

				n = parse_ull(&tmp, &ix) == 0 && ix < n->n ? n->items[ix] : NULL;
			} else {
				n = NULL;
			}
			if (!n)
				break;
			s = e;
		}
		if (!n) {
			oa_err(o, cur, "$ref '%.120s' points nowhere", cur->value);
			return NULL;
		}
		if (n->type == CFG_MAP && cfg_map_get(n, "$ref")) {
			cur = cfg_map_get(n, "$ref");
			continue;
		}
		return n;
	}
}

static void load_path(struct oa *o, const struct cfg_node *key, const struct cfg_node *item)
{
	const struct cfg_node *tgt = NULL, *ops[M__COUNT] = { 0 }, *opkeys[M__COUNT] = { 0 }, *ref, *x;
	struct ep_group *pprod = NULL, *psand = NULL;
	struct api_resource *r;
	const char *why;
	int bad = 0;

	if ((why = check_template(key->value, key->len))) {
		oa_err(o, key, "invalid path '%.120s': %s", key->value, why);
		bad = 1;
	}
	if (is_null(item))
		return;
	if (item->type != CFG_MAP) {
		oa_err(o, item, "path item '%.120s' must be a mapping, not %s", key->value, type_word(item));
		return;
	}
	if ((ref = cfg_map_get(item, "$ref"))) {
		if (!(tgt = follow_ref(o, ref)))
			return;
		if (tgt->type != CFG_MAP) {
			oa_err(o, ref, "$ref '%.120s' must point to a path item mapping, not %s",
			    ref->type == CFG_SCALAR ? ref->value : "?", type_word(tgt));
			return;
		}
	}
	oa_check_keys(o, item, path_item_keys, "a path item");
	/* the path item's own keys win over the referenced ones */
	for (int pass = 0; pass < 2; pass++) {
		const struct cfg_node *m = pass ? tgt : item;
		int seen[M__COUNT] = { 0 };

		for (size_t i = 0; m && i < m->n; i++) {
			int meth = method_from_name(m->keys[i]->value, m->keys[i]->len);

			if (meth < 0)
				continue;
			if (seen[meth]) {
				oa_err(o, m->keys[i], "method %s declared twice in path '%.120s'",
				    method_name((enum http_method)meth), key->value);
				bad = 1;
				continue;
			}
			seen[meth] = 1;
			if (ops[meth])
				continue;
			ops[meth] = m->items[i];
			opkeys[meth] = m->keys[i];
		}
	}
	if ((x = cfg_map_get(item, "x-wso2-production-endpoints")) ||
	    (tgt && (x = cfg_map_get(tgt, "x-wso2-production-endpoints"))))
		if (!(pprod = parse_group(o, x, "x-wso2-production-endpoints")))
			bad = 1;
	if ((x = cfg_map_get(item, "x-wso2-sandbox-endpoints")) ||
	    (tgt && (x = cfg_map_get(tgt, "x-wso2-sandbox-endpoints"))))
		if (!(psand = parse_group(o, x, "x-wso2-sandbox-endpoints")))
			bad = 1;

	r = &o->api->res[o->api->nres];
	memset(r, 0, sizeof(*r));
	for (int m = 0; m < M__COUNT; m++) {
		struct ep_group *prod = NULL, *sand = NULL;
		const struct cfg_node *op = ops[m];

		if (!opkeys[m])
			continue;
		if (!is_null(op) && op->type != CFG_MAP) {
			oa_err(o, op, "operation %s %.120s must be a mapping, not %s",
			    method_name((enum http_method)m), key->value, type_word(op));
			bad = 1;
			continue;
		}
		oa_check_keys(o, op, operation_keys, "an operation");
		if ((x = cfg_map_get(op, "x-wso2-production-endpoints")) &&
		    !(prod = parse_group(o, x, "x-wso2-production-endpoints")))
			bad = 1;
		if ((x = cfg_map_get(op, "x-wso2-sandbox-endpoints")) &&
		    !(sand = parse_group(o, x, "x-wso2-sandbox-endpoints")))
			bad = 1;
		if (bad)
			continue;
		prod = prod ? prod : pprod ? pprod : o->api->prod ? o->api->prod : fallback_group(o);
		sand = sand ? sand : psand ? psand : o->api->sandbox;
		if (!prod && !sand && o->api_prod_bad) {
			bad = 1;	/* already reported at API level */
			continue;
		}
		if (!prod && !sand) {
			oa_err(o, opkeys[m], "no production endpoint for %s %.120s",
			    method_name((enum http_method)m), key->value);
			bad = 1;
			continue;
		}
		r->prod[m] = prod;
		r->sandbox[m] = sand;
		r->methods |= 1u << m;
	}
	if (bad || !r->methods)
		return;
	if (!(r->path = strdup(key->value))) {
		oa_err(o, key, "out of memory");
		return;
	}
	r->line = key->line;
	r->col = key->col;
	o->api->nres++;
}

static void load_paths(struct oa *o)
{
	const struct cfg_node *paths = cfg_map_get(o->root, "paths");

	if (is_null(paths)) {
		oa_err(o, paths ? paths : o->root, "no paths: the API has no resources");
		return;
	}
	if (paths->type != CFG_MAP) {
		oa_err(o, paths, "paths must be a mapping of path templates");
		return;
	}
	if (!(o->api->res = calloc(paths->n, sizeof(*o->api->res)))) {
		oa_err(o, paths, "out of memory");
		return;
	}
	for (size_t i = 0; i < paths->n; i++) {
		if (strncmp(paths->keys[i]->value, "x-", 2) == 0)
			continue;	/* specification extensions */
		load_path(o, paths->keys[i], paths->items[i]);
	}
}

static void load_info(struct oa *o)
{
	const struct cfg_node *info = cfg_map_get(o->root, "info"), *t, *v;

	t = cfg_map_get(info, "title");
	v = cfg_map_get(info, "version");
	if (t && t->type == CFG_SCALAR && !(o->api->title = strdup(t->value)))
		oa_err(o, t, "out of memory");
	if (v && v->type == CFG_SCALAR && !(o->api->version = strdup(v->value)))
		oa_err(o, v, "out of memory");
}

struct api *openapi_load(const struct cfg_doc *doc, const struct cfg_node *root, struct cfg_errors *e)
{
	struct oa o = { .file = doc ? doc->file : "?", .root = root, .e = e };
	const struct cfg_node *ver, *x;

	if (!root || root->type != CFG_MAP) {
		cfg_error(e, o.file, root, "an OpenAPI document must be a mapping");
		return NULL;
	}
	if ((ver = cfg_map_get(root, "openapi"))) {
		o.v3 = 1;
		if (ver->type != CFG_SCALAR || strncmp(ver->value, "3.", 2) != 0) {
			cfg_error(e, o.file, ver, "unsupported OpenAPI version '%.40s' (expected 3.x)",
			    ver->type == CFG_SCALAR ? ver->value : "?");
			return NULL;
		}
	} else if ((ver = cfg_map_get(root, "swagger"))) {
		if (ver->type != CFG_SCALAR || strcmp(ver->value, "2.0") != 0) {
			cfg_error(e, o.file, ver, "unsupported Swagger version '%.40s' (expected \"2.0\")",
			    ver->type == CFG_SCALAR ? ver->value : "?");
			return NULL;
		}
	} else {
		cfg_error(e, o.file, root, "not an OpenAPI document: no 'openapi: 3.x' or 'swagger: \"2.0\"'");
		return NULL;
	}
	if (!(o.api = calloc(1, sizeof(*o.api))) || !(o.api->file = strdup(o.file))) {
		free(o.api);
		cfg_error(e, o.file, NULL, "out of memory");
		return NULL;
	}
	load_info(&o);
	load_base_path(&o);
	load_named(&o);
	oa_check_keys(&o, root, root_wso2_keys, "the document");
	if ((x = cfg_map_get(root, "x-wso2-production-endpoints")) &&
	    !(o.api->prod = parse_group(&o, x, "x-wso2-production-endpoints")))
		o.api_prod_bad = 1;
	if ((x = cfg_map_get(root, "x-wso2-sandbox-endpoints")) &&
	    !(o.api->sandbox = parse_group(&o, x, "x-wso2-sandbox-endpoints")))
		o.failed = 1;
	load_paths(&o);
	if (!o.api->prod && o.fallback)
		o.api->prod = o.fallback;
	free(o.named);
	if (o.failed) {
		api_free(o.api);
		return NULL;
	}
	return o.api;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->nres; i++)
		free(a->res[i].path);
	free(a->res);
	for (size_t i = 0; i < a->ngroups; i++)
		ep_group_free(a->groups[i]);
	free(a->groups);
	free(a->file);
	free(a->title);
	free(a->version);
	free(a->base_path);
	free(a);
}
