/* config: the gateway configuration, in either of its two shapes:
 *   - a bare OpenAPI document (openapi:/swagger: at the top): one API;
 *   - a gateway file: listeners, limits, log, etcd and apis.
 * The whole load goes into fresh structs; every error is collected with
 * file:line:col; a load with any error returns NULL and keeps nothing. */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "endpoint.h"
#include "log.h"
#include "openapi.h"

#define DEFAULT_ADDRESS		"0.0.0.0"
#define DEFAULT_PORT		9090
#define PASSWORD_FILE_MAX	(64u * 1024)

/* ---- the limits table: name, place, range and default together ---- */

struct limit_def {
	const char *name;
	size_t off;
	int is_size;		/* size_t field, else unsigned */
	unsigned long long min, max, def;
};

#define LIM_SIZE(n, f, mn, mx, d) { n, offsetof(struct limits_conf, f), 1, mn, mx, d }
#define LIM_UINT(n, f, mn, mx, d) { n, offsetof(struct limits_conf, f), 0, mn, mx, d }

static const struct limit_def limit_defs[] = {
	LIM_SIZE("max_uri_bytes",        max_uri,              64,  1048576,          8192),
	LIM_SIZE("max_header_bytes",     max_header,           512, 1048576,          16384),
	LIM_SIZE("max_body_bytes",       max_body,             1,   1099511627776ull, 10485760),
	LIM_UINT("header_timeout_ms",    header_timeout_ms,    100, 3600000,          10000),
	LIM_UINT("idle_timeout_ms",      idle_timeout_ms,      100, 86400000,         60000),
	LIM_UINT("connect_timeout_ms",   connect_timeout_ms,   10,  600000,           5000),
	LIM_UINT("pool_max_idle",        pool_max_idle,        1,   65536,            256),
	LIM_UINT("pool_idle_timeout_ms", pool_idle_timeout_ms, 100, 86400000,         60000),
	LIM_UINT("max_connections",      max_connections,      1,   1000000,          10000),
	LIM_UINT("tls_handshake_timeout_ms", tls_handshake_timeout_ms, 100, 600000,   10000),
};
#define NLIMITS (sizeof(limit_defs) / sizeof(limit_defs[0]))

static void limit_store(struct limits_conf *l, const struct limit_def *d, unsigned long long v)
{
	char *p = (char *)l + d->off;

	if (d->is_size)
		*(size_t *)(void *)p = (size_t)v;
	else
		*(unsigned *)(void *)p = (unsigned)v;
}

static const char *const gateway_keys[] = {
	"listeners", "limits", "log", "etcd", "backend_tls", "workers", "apis", NULL
};
static const char *const listener_keys[] = { "address", "port", "tls", NULL };
static const char *const listener_tls_keys[] = {
	"certificate", "key", "certificates", "ciphers", "min_version", NULL
};
static const char *const cert_item_keys[] = { "certificate", "key", NULL };
static const char *const backend_tls_keys[] = {
	"ca_file", "verify", "no_verify_origins", "cert_file", "key_file", NULL
};
static const char *const log_keys[] = { "level", "access_log", NULL };
static const char *const etcd_keys[] = {
	"urls", "username", "password", "password_env", "password_file", "timer_ms", "timeout_ms",
	"api_prefix", "ca_file", "cert_file", "key_file", NULL
};
static const char *const api_item_keys[] = { "file", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };

struct gw {
	struct config *c;
	struct cfg_errors *e;
	const char *file;
	char *dir;		/* directory of the gateway file, "" for the cwd */
	int failed;
};

#define gw_err(g, at, ...) do { cfg_error((g)->e, (g)->file, (at), __VA_ARGS__); (g)->failed = 1; } while (0)

static int is_null(const struct cfg_node *n)
{
	return !n || (n->type == CFG_SCALAR && n->plain &&
	    (n->len == 0 || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
	    strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0));
}

static const char *type_word(const struct cfg_node *n)
{
	return n->type == CFG_MAP ? "a mapping" : n->type == CFG_SEQ ? "a list" : "a scalar";
}

/* Report every key of 'map' that is not in 'allowed' (typos are not ignored). */
static void check_keys(struct gw *g, const struct cfg_node *map, const char *const *allowed,
    const char *where)
{
	for (size_t i = 0; i < map->n; i++) {
		const char *k = map->keys[i]->value, *best;
		size_t j;

		for (j = 0; allowed[j] && strcmp(k, allowed[j]) != 0; j++)
			;
		if (allowed[j])
			continue;
		best = cfg_closest(k, allowed, 2);
		if (best)
			gw_err(g, map->keys[i], "unknown key '%.80s' in %s (did you mean '%s'?)", k, where, best);
		else
			gw_err(g, map->keys[i], "unknown key '%.80s' in %s", k, where);
	}
}

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

/* An integer in [min, max]; reports and returns -1 otherwise. */
static int get_range(struct gw *g, const struct cfg_node *n, const char *name,
    unsigned long long min, unsigned long long max, unsigned long long *out)
{
	if (parse_ull(n, out) < 0 || *out < min || *out > max) {
		gw_err(g, n, "%s must be an integer from %llu to %llu, not '%.40s'", name, min, max,
		    n->type == CFG_SCALAR ? n->value : type_word(n));
		return -1;
	}
	return 0;
}

static const struct cfg_node *get_str(struct gw *g, const struct cfg_node *n, const char *name)
{
	if (n->type != CFG_SCALAR || is_null(n) || n->len == 0) {
		gw_err(g, n, "%s must be a non-empty string", name);
		return NULL;
	}
	return n;
}

static char *path_join(const char *dir, const char *p)
{
	char *out;

	if (p[0] == '/' || !dir[0])
		return strdup(p);
	if (asprintf(&out, "%s/%s", dir, p) < 0)
		return NULL;
	return out;
}

/* ---- TLS settings (the files themselves are checked by the tls room) ---- */

void conf_file_set(struct conf_file *f, char *path, unsigned line, unsigned col, const char *src)
{
	free(f->path);
	f->path = path;
	f->line = line;
	f->col = col;
	f->src = src;
}

/* A file path relative to the gateway file; reports and returns -1 if bad. */
static int get_file(struct gw *g, const struct cfg_node *n, const char *name, struct conf_file *out)
{
	char *p;

	if (!get_str(g, n, name))
		return -1;
	if (memchr(n->value, '\0', n->len)) {
		gw_err(g, n, "%s must not contain a NUL byte", name);
		return -1;
	}
	if (!(p = path_join(g->dir, n->value))) {
		gw_err(g, n, "out of memory");
		return -1;
	}
	conf_file_set(out, p, n->line, n->col, NULL);
	return 0;
}

static int get_bool(struct gw *g, const struct cfg_node *n, const char *name, int *out)
{
	if (n->type == CFG_SCALAR && (strcmp(n->value, "true") == 0 || strcmp(n->value, "yes") == 0)) {
		*out = 1;
		return 0;
	}
	if (n->type == CFG_SCALAR && (strcmp(n->value, "false") == 0 || strcmp(n->value, "no") == 0)) {
		*out = 0;
		return 0;
	}
	gw_err(g, n, "%s must be true or false", name);
	return -1;
}

static void tls_client_conf_clear(struct tls_client_conf *t)
{
	free(t->ca_file.path);
	free(t->cert_file.path);
	free(t->key_file.path);
	for (size_t i = 0; i < t->nno_verify; i++)
		free(t->no_verify[i]);
	free(t->no_verify);
	memset(t, 0, sizeof(*t));
	t->verify = 1;
}

static void listener_tls_free(struct listener_tls *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->ncerts; i++) {
		free(t->certs[i].cert.path);
		free(t->certs[i].key.path);
	}
	free(t->certs);
	free(t->ciphers);
	free(t);
}

/* {certificate, key}: key defaults to the certificate file (one PEM with both). */
static int load_cert_pair(struct gw *g, const struct cfg_node *map, struct tls_cert_conf *out)
{
	const struct cfg_node *c = cfg_map_get(map, "certificate"), *k = cfg_map_get(map, "key");

	if (!c) {
		gw_err(g, k ? k : map, "tls: a certificate is needed (a PEM file: the certificate, then "
		    "its intermediates)");
		return -1;
	}
	if (get_file(g, c, "certificate", &out->cert) < 0)
		return -1;
	if (k)
		return get_file(g, k, "key", &out->key);
	if (!(out->key.path = strdup(out->cert.path))) {
		gw_err(g, c, "out of memory");
		return -1;
	}
	out->key.line = c->line;
	out->key.col = c->col;
	return 0;
}

/* A listener's tls: {certificate, key} or {certificates: [{certificate, key}, ...]},
 * with optional ciphers and min_version. */
static struct listener_tls *load_listener_tls(struct gw *g, const struct cfg_node *n)
{
	struct listener_tls *t;
	const struct cfg_node *list, *x;
	int bad = 0;

	if (n->type != CFG_MAP) {
		gw_err(g, n, "tls must be a mapping {certificate, key}");
		return NULL;
	}
	check_keys(g, n, listener_tls_keys, "a listener's tls");
	if (!(t = calloc(1, sizeof(*t)))) {
		gw_err(g, n, "out of memory");
		return NULL;
	}
	t->line = n->line;
	t->col = n->col;
	t->min_version = 12;
	list = cfg_map_get(n, "certificates");
	if (list && (cfg_map_get(n, "certificate") || cfg_map_get(n, "key"))) {
		gw_err(g, list, "tls: give either certificate/key or certificates, not both");
		bad = 1;
	} else if (list) {
		if (list->type != CFG_SEQ || list->n == 0) {
			gw_err(g, list, "tls certificates must be a non-empty list of {certificate, key}");
			bad = 1;
		} else if (!(t->certs = calloc(list->n, sizeof(*t->certs)))) {
			gw_err(g, list, "out of memory");
			bad = 1;
		} else {
			for (size_t i = 0; i < list->n; i++) {
				const struct cfg_node *it = list->items[i];

				if (it->type != CFG_MAP) {
					gw_err(g, it, "a certificates entry must be a mapping {certificate, key}");
					bad = 1;
					continue;
				}
				check_keys(g, it, cert_item_keys, "a certificates entry");
				if (load_cert_pair(g, it, &t->certs[t->ncerts]) < 0) {
					free(t->certs[t->ncerts].cert.path);
					free(t->certs[t->ncerts].key.path);
					memset(&t->certs[t->ncerts], 0, sizeof(t->certs[0]));
					bad = 1;
					continue;
				}
				t->ncerts++;
			}
		}
	} else if (!(t->certs = calloc(1, sizeof(*t->certs)))) {
		gw_err(g, n, "out of memory");
		bad = 1;
	} else if (load_cert_pair(g, n, &t->certs[0]) == 0) {
		t->ncerts = 1;
	} else {
		free(t->certs[0].cert.path);
		free(t->certs[0].key.path);
		memset(&t->certs[0], 0, sizeof(t->certs[0]));
		bad = 1;
	}
	if ((x = cfg_map_get(n, "ciphers"))) {
		if (!get_str(g, x, "ciphers"))
			bad = 1;
		else if (!(t->ciphers = strdup(x->value)))
			bad = 1;
	}
	if ((x = cfg_map_get(n, "min_version"))) {
		if (x->type == CFG_SCALAR && (strcmp(x->value, "1.2") == 0 || strcmp(x->value, "TLSv1.2") == 0)) {
			t->min_version = 12;
		} else if (x->type == CFG_SCALAR && (strcmp(x->value, "1.3") == 0 ||
		    strcmp(x->value, "TLSv1.3") == 0)) {
			t->min_version = 13;
		} else {
			gw_err(g, x, "min_version must be \"1.2\" or \"1.3\" (older TLS versions are not offered)");
			bad = 1;
		}
	}
	if (bad) {
		listener_tls_free(t);
		return NULL;
	}
	return t;
}

/* The client side of TLS: backend_tls, or the TLS keys of etcd (which has no
 * verify switch: etcd is always verified). */
static void load_tls_client(struct gw *g, const struct cfg_node *n, struct tls_client_conf *t,
    int backend)
{
	const struct cfg_node *x, *c, *k;

	if ((x = cfg_map_get(n, "ca_file")))
		get_file(g, x, "ca_file", &t->ca_file);
	c = cfg_map_get(n, "cert_file");
	k = cfg_map_get(n, "key_file");
	if (k && !c)
		gw_err(g, k, "key_file needs cert_file (the client certificate it belongs to)");
	if (c && get_file(g, c, "cert_file", &t->cert_file) == 0) {
		if (k) {
			get_file(g, k, "key_file", &t->key_file);
		} else if (!(t->key_file.path = strdup(t->cert_file.path))) {
			gw_err(g, c, "out of memory");
		} else {
			t->key_file.line = c->line;
			t->key_file.col = c->col;
		}
	}
	if (!backend)
		return;
	if ((x = cfg_map_get(n, "verify")) && get_bool(g, x, "verify", &t->verify) == 0) {
		t->verify_line = x->line;
		t->verify_col = x->col;
	}
	if ((x = cfg_map_get(n, "no_verify_origins"))) {
		if (x->type != CFG_SEQ) {
			gw_err(g, x, "no_verify_origins must be a list of https://host:port origins");
			return;
		}
		if (!(t->no_verify = calloc(x->n + 1, sizeof(*t->no_verify)))) {
			gw_err(g, x, "out of memory");
			return;
		}
		for (size_t i = 0; i < x->n; i++) {
			const struct cfg_node *it = x->items[i];
			const char *why = NULL;
			struct url *u;

			if (!get_str(g, it, "an origin"))
				continue;
			if (!(u = url_parse(it->value, &why))) {
				gw_err(g, it, "no_verify_origins: '%.120s' is not a URL: %s", it->value,
				    why ? why : "invalid");
				continue;
			}
			if (!u->tls || (u->path[0] && strcmp(u->path, "/") != 0))
				gw_err(g, it, "no_verify_origins: '%.120s' is not an https origin "
				    "(https://host[:port], without a path)", it->value);
			else if (!(t->no_verify[t->nno_verify] = strdup(u->origin)))
				gw_err(g, it, "out of memory");
			else
				t->nno_verify++;
			url_unref(u);
		}
	}
}

static void load_backend_tls(struct gw *g, const struct cfg_node *n)
{
	if (is_null(n))
		return;
	if (n->type != CFG_MAP) {
		gw_err(g, n, "backend_tls must be a mapping {ca_file, verify, ...}");
		return;
	}
	check_keys(g, n, backend_tls_keys, "backend_tls");
	load_tls_client(g, n, &g->c->backend_tls, 1);
}

/* ---- sections ---- */

static void load_listeners(struct gw *g, const struct cfg_node *n)
{
	struct listener_conf *ls;
	size_t nl = 0;

	if (n->type != CFG_SEQ || n->n == 0) {
		gw_err(g, n, "listeners must be a non-empty list of {address, port}");
		return;
	}
	if (!(ls = calloc(n->n, sizeof(*ls)))) {
		gw_err(g, n, "out of memory");
		return;
	}
	for (size_t i = 0; i < n->n; i++) {
		const struct cfg_node *it = n->items[i], *a, *p, *t;
		unsigned long long port = DEFAULT_PORT;
		struct listener_tls *tls = NULL;
		const char *addr = DEFAULT_ADDRESS;
		unsigned char sa[16];
		int bad = 0;

		if (it->type != CFG_MAP) {
			gw_err(g, it, "a listener must be a mapping {address, port}, not %s", type_word(it));
			continue;
		}
		check_keys(g, it, listener_keys, "a listener");
		if ((a = cfg_map_get(it, "address"))) {
			if (!get_str(g, a, "address")) {
				bad = 1;
			} else if (inet_pton(AF_INET, a->value, sa) != 1 && inet_pton(AF_INET6, a->value, sa) != 1) {
				gw_err(g, a, "address '%.80s' is not an IPv4 or IPv6 address "
				    "(such as 0.0.0.0, 127.0.0.1 or ::)", a->value);
				bad = 1;
			} else {
				addr = a->value;
			}
		}
		if (!(p = cfg_map_get(it, "port"))) {
			gw_err(g, it, "listener has no port");
			bad = 1;
		} else if (get_range(g, p, "port", 1, 65535, &port) < 0) {
			bad = 1;
		}
		if (bad)
			continue;
		for (size_t j = 0; j < nl; j++) {
			if (ls[j].port == port && strcmp(ls[j].address, addr) == 0) {
				gw_err(g, it, "listener %s port %llu is already declared at line %u, column %u",
				    addr, port, ls[j].line, ls[j].col);
				bad = 1;
				break;
			}
		}
		if (bad)
			continue;
		if ((t = cfg_map_get(it, "tls")) && !is_null(t) && !(tls = load_listener_tls(g, t)))
			continue;
		if (!(ls[nl].address = strdup(addr))) {
			gw_err(g, it, "out of memory");
			listener_tls_free(tls);
			continue;
		}
		ls[nl].tls = tls;
		ls[nl].port = (uint16_t)port;
		ls[nl].line = it->line;
		ls[nl].col = it->col;
		nl++;
	}
	for (size_t i = 0; i < g->c->nlisteners; i++) {
		free(g->c->listeners[i].address);
		listener_tls_free(g->c->listeners[i].tls);
	}
	free(g->c->listeners);
	g->c->listeners = ls;
	g->c->nlisteners = nl;
}

static void load_limits(struct gw *g, const struct cfg_node *n)
{
	const char *names[NLIMITS + 1];

	if (is_null(n))
		return;
	if (n->type != CFG_MAP) {
		gw_err(g, n, "limits must be a mapping");
		return;
	}
	for (size_t j = 0; j < NLIMITS; j++)
		names[j] = limit_defs[j].name;
	names[NLIMITS] = NULL;
	check_keys(g, n, names, "limits");
	for (size_t j = 0; j < NLIMITS; j++) {
		const struct limit_def *d = &limit_defs[j];
		const struct cfg_node *v = cfg_map_get(n, d->name);
		unsigned long long x;

		if (v && get_range(g, v, d->name, d->min, d->max, &x) == 0)
			limit_store(&g->c->limits, d, x);
	}
}

static void load_log(struct gw *g, const struct cfg_node *n)
{
	const struct cfg_node *lv, *al;
	int level = -1;

	if (is_null(n))
		return;
	if (n->type != CFG_MAP) {
		gw_err(g, n, "log must be a mapping {level, access_log}");
		return;
	}
	check_keys(g, n, log_keys, "log");
	if ((lv = cfg_map_get(n, "level"))) {
		for (int i = 0; lv->type == CFG_SCALAR && level_names[i]; i++)
			if (strcmp(lv->value, level_names[i]) == 0)
				level = i;
		if (level < 0)
			gw_err(g, lv, "log level must be error, warn, info or debug");
		else
			g->c->log.level = level;
	}
	if ((al = cfg_map_get(n, "access_log")) && get_str(g, al, "access_log")) {
		char *v;

		if (strcmp(al->value, "-") == 0 || strcmp(al->value, "off") == 0)
			v = strdup(al->value);
		else
			v = path_join(g->dir, al->value);
		if (!v) {
			gw_err(g, al, "out of memory");
			return;
		}
		free(g->c->log.access_log);
		g->c->log.access_log = v;
	}
}

static int etcd_add_url(struct gw *g, const struct cfg_node *at, const char *s, size_t len)
{
	struct etcd_conf *ec = &g->c->etcd;
	const char *why = NULL;
	struct url *u;
	char *t, **nu;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (!len) {
		gw_err(g, at, "etcd: empty URL in urls");
		return -1;
	}
	if (!(t = strndup(s, len)))
		return -1;
	if (!(u = url_parse(t, &why))) {
		gw_err(g, at, "etcd: invalid URL '%.120s': %s", t, why ? why : "not an http(s) URL");
		free(t);
		return -1;
	}
	url_unref(u);
	if (!(nu = realloc(ec->urls, (ec->nurls + 1) * sizeof(*nu)))) {
		free(t);
		return -1;
	}
	ec->urls = nu;
	nu[ec->nurls++] = t;
	return 0;
}

static void load_etcd(struct gw *g, const struct cfg_node *n)
{
	struct etcd_conf *ec = &g->c->etcd;
	const struct cfg_node *x, *pw, *pe, *pf;
	unsigned long long v;
	int nsrc;

	if (is_null(n))
		return;
	if (n->type != CFG_MAP) {
		gw_err(g, n, "etcd must be a mapping");
		return;
	}
	load_tls_client(g, n, &ec->tls, 0);
	check_keys(g, n, etcd_keys, "etcd");
	if ((x = cfg_map_get(n, "urls"))) {
		if (x->type == CFG_SEQ) {
			for (size_t i = 0; i < x->n; i++) {
				if (x->items[i]->type != CFG_SCALAR)
					gw_err(g, x->items[i], "etcd: a URL must be a string");
				else
					etcd_add_url(g, x->items[i], x->items[i]->value, x->items[i]->len);
			}
		} else if (x->type == CFG_SCALAR && !is_null(x)) {
			const char *s = x->value;

			for (;;) {
				size_t l = strcspn(s, ",");

				etcd_add_url(g, x, s, l);
				if (!s[l])
					break;
				s += l + 1;
			}
		} else {
			gw_err(g, x, "etcd urls must be a list or a comma-separated string of http(s) URLs");
		}
	}
	if ((x = cfg_map_get(n, "username")) && get_str(g, x, "username") && !(ec->username = strdup(x->value)))
		gw_err(g, x, "out of memory");
	if ((x = cfg_map_get(n, "timer_ms")) && get_range(g, x, "timer_ms", 100, 86400000, &v) == 0)
		ec->timer_ms = (unsigned)v;
	if ((x = cfg_map_get(n, "timeout_ms")) && get_range(g, x, "timeout_ms", 10, 600000, &v) == 0)
		ec->timeout_ms = (unsigned)v;
	if ((x = cfg_map_get(n, "api_prefix"))) {
		if (x->type != CFG_SCALAR || (strcmp(x->value, "/v3") != 0 &&
		    strcmp(x->value, "/v3beta") != 0 && strcmp(x->value, "/v3alpha") != 0))
			gw_err(g, x, "api_prefix must be /v3, /v3beta or /v3alpha");
		else if (!(ec->api_prefix = strdup(x->value)))
			gw_err(g, x, "out of memory");
	}

	pw = cfg_map_get(n, "password");
	pe = cfg_map_get(n, "password_env");
	pf = cfg_map_get(n, "password_file");
	nsrc = !!pw + !!pe + !!pf;
	if (nsrc > 1) {
		gw_err(g, pw ? (pe ? pe : pf) : pf, "etcd: give at most one of password, password_env and password_file");
		return;
	}
	if (pw) {
		if (pw->type != CFG_SCALAR)
			gw_err(g, pw, "password must be a string");
		else if (!(ec->password = strdup(pw->value)))
			gw_err(g, pw, "out of memory");
	} else if (pe && get_str(g, pe, "password_env")) {
		const char *val = getenv(pe->value);

		if (!val)
			gw_err(g, pe, "password_env: environment variable '%.80s' is not set", pe->value);
		else if (!(ec->password = strdup(val)))
			gw_err(g, pe, "out of memory");
	} else if (pf && get_str(g, pf, "password_file")) {
		char *path = path_join(g->dir, pf->value), *buf;
		size_t len;

		if (!path) {
			gw_err(g, pf, "out of memory");
			return;
		}
		if (!(buf = cfg_file_read(path, PASSWORD_FILE_MAX, &len))) {
			gw_err(g, pf, "cannot read password_file '%.200s': %s", path,
			    errno == EFBIG ? "file too large" : strerror(errno));
		} else if (memchr(buf, '\0', len)) {
			gw_err(g, pf, "password_file '%.200s' contains a NUL byte", path);
			explicit_bzero(buf, len);
			free(buf);
		} else {
			while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
				buf[--len] = '\0';
			ec->password = buf;
		}
		free(path);
	}
}

static void add_api(struct gw *g, struct api *a, const struct cfg_node *at)
{
	struct api **na = realloc(g->c->apis, (g->c->napis + 1) * sizeof(*na));

	if (!na) {
		api_free(a);
		gw_err(g, at, "out of memory");
		return;
	}
	g->c->apis = na;
	na[g->c->napis++] = a;
}

static void load_api_file(struct gw *g, const struct cfg_node *pathnode)
{
	struct cfg_doc *doc;
	struct api *a;
	char *path, *buf;
	size_t len;

	if (!get_str(g, pathnode, "an API file path"))
		return;
	if (!(path = path_join(g->dir, pathnode->value))) {
		gw_err(g, pathnode, "out of memory");
		return;
	}
	if (!(buf = cfg_file_read(path, CFG_MAX_FILE_BYTES, &len))) {
		if (errno == EFBIG)
			gw_err(g, pathnode, "API file '%.200s' is too large (the limit is %u bytes)", path,
			    (unsigned)CFG_MAX_FILE_BYTES);
		else
			gw_err(g, pathnode, "cannot read API file '%.200s': %s", path, strerror(errno));
		free(path);
		return;
	}
	doc = cfg_doc_parse(path, buf, len, g->e);
	free(buf);
	free(path);
	if (!doc) {
		g->failed = 1;
		return;
	}
	if (!(a = openapi_load(doc, doc->root, g->e)))
		g->failed = 1;
	else
		add_api(g, a, pathnode);
	cfg_doc_free(doc);
}

static void load_apis(struct gw *g, const struct cfg_doc *doc, const struct cfg_node *n)
{
	if (n->type != CFG_SEQ || n->n == 0) {
		gw_err(g, n, "apis must be a non-empty list of API files or inline OpenAPI documents");
		return;
	}
	for (size_t i = 0; i < n->n; i++) {
		const struct cfg_node *it = n->items[i], *f;
		struct api *a;

		if (it->type == CFG_SCALAR) {
			load_api_file(g, it);
		} else if (it->type == CFG_MAP &&
		    (cfg_map_get(it, "openapi") || cfg_map_get(it, "swagger"))) {
			if (!(a = openapi_load(doc, it, g->e)))
				g->failed = 1;
			else
				add_api(g, a, it);
		} else if (it->type == CFG_MAP && (f = cfg_map_get(it, "file"))) {
			check_keys(g, it, api_item_keys, "an apis entry");
			load_api_file(g, f);
		} else {
			gw_err(g, it, "an apis entry must be a file path, {file: path} or an inline "
			    "OpenAPI document (with openapi: or swagger:)");
		}
	}
}

/* ---- the whole thing ---- */

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->workers = 1;
	for (size_t i = 0; i < NLIMITS; i++)
		limit_store(&c->limits, &limit_defs[i], limit_defs[i].def);
	c->etcd.timer_ms = 10000;
	c->etcd.timeout_ms = 3000;
	c->etcd.tls.verify = 1;
	c->backend_tls.verify = 1;
	c->log.level = LOG_INFO;
	c->log.access_log = strdup("-");
	if ((c->listeners = calloc(1, sizeof(*c->listeners)))) {
		if ((c->listeners[0].address = strdup(DEFAULT_ADDRESS))) {
			c->listeners[0].port = DEFAULT_PORT;
			c->nlisteners = 1;
		}
	}
}

void config_free(struct config *c)
{
	if (!c)
		return;
	free(c->file);
	for (size_t i = 0; i < c->nlisteners; i++) {
		free(c->listeners[i].address);
		listener_tls_free(c->listeners[i].tls);
	}
	free(c->listeners);
	tls_client_conf_clear(&c->etcd.tls);
	tls_client_conf_clear(&c->backend_tls);
	for (size_t i = 0; i < c->etcd.nurls; i++)
		free(c->etcd.urls[i]);
	free(c->etcd.urls);
	free(c->etcd.username);
	if (c->etcd.password) {
		explicit_bzero(c->etcd.password, strlen(c->etcd.password));
		free(c->etcd.password);
	}
	free(c->etcd.api_prefix);
	free(c->log.access_log);
	for (size_t i = 0; i < c->napis; i++)
		api_free(c->apis[i]);
	free(c->apis);
	free(c);
}

struct config *config_load(const char *path, struct cfg_errors *e)
{
	struct gw g = { .e = e, .file = path };
	const struct cfg_node *root, *x;
	struct cfg_doc *doc;
	const char *slash;

	if (!(doc = cfg_doc_load(path, e)))
		return NULL;
	root = doc->root;
	if (!(g.c = calloc(1, sizeof(*g.c)))) {
		cfg_error(e, path, NULL, "out of memory");
		cfg_doc_free(doc);
		return NULL;
	}
	config_defaults(g.c);
	slash = strrchr(path, '/');
	g.dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup("");
	if (!(g.c->file = strdup(path)) || !g.dir || !g.c->log.access_log || !g.c->nlisteners) {
		gw_err(&g, NULL, "out of memory");
	} else if (root->type != CFG_MAP) {
		gw_err(&g, root, "the top level must be a mapping (a gateway file or an OpenAPI document), not %s",
		    type_word(root));
	} else if (cfg_map_get(root, "openapi") || cfg_map_get(root, "swagger")) {
		struct api *a = openapi_load(doc, root, e);

		if (!a)
			g.failed = 1;
		else
			add_api(&g, a, root);
	} else {
		check_keys(&g, root, gateway_keys, "the gateway file");
		if ((x = cfg_map_get(root, "listeners")))
			load_listeners(&g, x);
		if ((x = cfg_map_get(root, "limits")))
			load_limits(&g, x);
		if ((x = cfg_map_get(root, "log")))
			load_log(&g, x);
		if ((x = cfg_map_get(root, "etcd")))
			load_etcd(&g, x);
		if ((x = cfg_map_get(root, "backend_tls")))
			load_backend_tls(&g, x);
		if ((x = cfg_map_get(root, "workers"))) {
			unsigned long long n;

			if (get_range(&g, x, "workers", 1, CFG_MAX_WORKERS, &n) == 0)
				g.c->workers = (unsigned)n;
		}
		if ((x = cfg_map_get(root, "apis")))
			load_apis(&g, doc, x);
		else
			gw_err(&g, root, "no apis: the gateway has nothing to serve");
	}
	free(g.dir);
	cfg_doc_free(doc);
	if (g.failed) {
		config_free(g.c);
		return NULL;
	}
	return g.c;
}
