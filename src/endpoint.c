/* endpoint: backend URLs, endpoint specs ("http(s)://..." and
 * "etcd (key, default)") and endpoint groups. Pure parsing, no I/O.
 *
 * Everything here reads untrusted text (config files, etcd values): every
 * byte is checked, nothing is decoded, and errors quote the offending text
 * with control bytes escaped. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"
#include "discovery.h"

#define URL_MAX_LEN	8192	/* a backend URL longer than this is a mistake */

static int
is_ws(char c)
{
	return c == ' ' || c == '\t';
}

static int
is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
is_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Bytes we never accept anywhere in a URL: controls, space, DEL, non-ASCII
 * (a backend URL is ASCII; international names must be punycode). */
static int
is_bad_byte(unsigned char c)
{
	return c <= 0x20 || c >= 0x7f;
}

static char *
xstrndup(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p == NULL)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static char *
xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : p;
}

static void
url_free(struct url *u)
{
	if (u == NULL)
		return;
	free(u->text);
	free(u->host);
	free(u->authority);
	free(u->origin);
	free(u->path);
	free(u);
}

/* Host as a registered name: letters, digits, '-', '.', '_', '~' (what DNS
 * and /etc/hosts can actually resolve; percent-encoded names are refused). */
static const char *
check_reg_name(const char *h, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = h[i];

		if (!is_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~')
			return "invalid character in host";
	}
	return NULL;
}

struct url *
url_parse(const char *text, const char **err)
{
	const char *s, *e, *p, *auth, *auth_end, *host, *host_end, *port_s = NULL;
	const char *dummy;
	struct url *u;
	size_t len, hlen;
	unsigned long port = 0;
	int tls, bracket = 0;

	if (err == NULL)
		err = &dummy;
	*err = NULL;
	if (text == NULL) {
		*err = "empty URL";
		return NULL;
	}
	/* Trim surrounding blanks (an etcd value may end with a newline). */
	s = text;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		e--;
	len = (size_t)(e - s);
	if (len == 0) {
		*err = "empty URL";
		return NULL;
	}
	if (len > URL_MAX_LEN) {
		*err = "URL too long";
		return NULL;
	}
	if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
		tls = 0;
		auth = s + 7;
	} else if (len >= 8 && strncasecmp(s, "https://", 8) == 0) {
		tls = 1;
		auth = s + 8;
	} else {
		*err = "not an absolute http:// or https:// URL";
		return NULL;
	}
	for (p = s; p < e; p++) {
		if (*p == '\0' || is_bad_byte((unsigned char)*p)) {
			*err = "space, control or non-ASCII character in URL";
			return NULL;
		}
	}
	for (p = auth; p < e; p++) {
		if (*p == '?') {
			*err = "query string not allowed in an endpoint URL";
			return NULL;
		}
		if (*p == '#') {
			*err = "fragment not allowed in an endpoint URL";
			return NULL;
		}
	}
	auth_end = auth;
	while (auth_end < e && *auth_end != '/')
		auth_end++;
	for (p = auth; p < auth_end; p++) {
		if (*p == '@') {
			*err = "user info not allowed in an endpoint URL";
			return NULL;
		}
	}
	if (auth == auth_end) {
		*err = "missing host";
		return NULL;
	}
	if (*auth == '[') {
		char tmp[INET6_ADDRSTRLEN + 1];
		struct in6_addr a6;

		bracket = 1;
		host = auth + 1;
		host_end = memchr(host, ']', (size_t)(auth_end - host));
		if (host_end == NULL) {
			*err = "missing ']' after IPv6 address";
			return NULL;
		}
		hlen = (size_t)(host_end - host);
		if (hlen == 0) {
			*err = "missing host";
			return NULL;
		}
		if (hlen >= sizeof(tmp)) {
			*err = "invalid IPv6 address";
			return NULL;
		}
		memcpy(tmp, host, hlen);
		tmp[hlen] = '\0';
		if (inet_pton(AF_INET6, tmp, &a6) != 1) {
			*err = "invalid IPv6 address";
			return NULL;
		}
		p = host_end + 1;
		if (p < auth_end) {
			if (*p != ':') {
				*err = "unexpected text after IPv6 address";
				return NULL;
			}
			port_s = p + 1;
		}
	} else {
		host = auth;
		host_end = memchr(auth, ':', (size_t)(auth_end - auth));
		if (host_end != NULL)
			port_s = host_end + 1;
		else
			host_end = auth_end;
		hlen = (size_t)(host_end - host);
		if (hlen == 0) {
			*err = "missing host";
			return NULL;
		}
		if ((*err = check_reg_name(host, hlen)) != NULL)
			return NULL;
	}
	if (port_s != NULL) {
		if (port_s == auth_end) {
			*err = "empty port";
			return NULL;
		}
		for (p = port_s; p < auth_end; p++) {
			if (*p < '0' || *p > '9') {
				*err = "port is not a number";
				return NULL;
			}
			port = port * 10 + (unsigned long)(*p - '0');
			if (port > 65535) {
				*err = "port out of range (1..65535)";
				return NULL;
			}
		}
		if (port == 0) {
			*err = "port out of range (1..65535)";
			return NULL;
		}
	} else {
		port = tls ? 443 : 80;
	}
	/* Path: kept as given, but escapes must be well formed. */
	for (p = auth_end; p < e; p++) {
		if (*p == '%' && (e - p < 3 || !is_hex(p[1]) || !is_hex(p[2]))) {
			*err = "malformed percent escape in path";
			return NULL;
		}
	}

	u = calloc(1, sizeof(*u));
	if (u == NULL) {
		*err = "out of memory";
		return NULL;
	}
	u->refs = 1;
	u->tls = tls;
	u->port = (uint16_t)port;
	u->text = xstrndup(s, len);
	u->host = xstrndup(host, hlen);
	u->path = xstrndup(auth_end, (size_t)(e - auth_end));
	{
		const char *lb = bracket ? "[" : "", *rb = bracket ? "]" : "";
		int dflt = port == (tls ? 443u : 80u);

		if (port_s != NULL && !dflt)
			u->authority = xasprintf("%s%.*s%s:%lu", lb, (int)hlen, host, rb, port);
		else
			u->authority = xasprintf("%s%.*s%s", lb, (int)hlen, host, rb);
		u->origin = xasprintf("%s://%s%.*s%s:%lu", tls ? "https" : "http", lb,
		    (int)hlen, host, rb, port);
	}
	if (u->text == NULL || u->host == NULL || u->path == NULL || u->authority == NULL ||
	    u->origin == NULL) {
		url_free(u);
		*err = "out of memory";
		return NULL;
	}
	return u;
}

struct url *
url_ref(struct url *u)
{
	if (u != NULL)
		u->refs++;
	return u;
}

void
url_unref(struct url *u)
{
	if (u == NULL)
		return;
	if (u->refs > 1) {
		u->refs--;
		return;
	}
	url_free(u);
}

char *
url_join(const struct url *u, const char *remainder, size_t rlen, const char *query)
{
	const char *path = u && u->path ? u->path : "";
	size_t plen = strlen(path), qlen = query ? strlen(query) : 0, n = 0;
	int slash = 0;
	char *out;

	if (remainder == NULL)
		rlen = 0;
	/* Exactly one '/' at the join. */
	if (plen > 0 && path[plen - 1] == '/' && rlen > 0 && remainder[0] == '/') {
		remainder++;
		rlen--;
	} else if (rlen > 0 && remainder[0] != '/' && (plen == 0 || path[plen - 1] != '/')) {
		slash = 1;	/* defensive: the remainder should start with '/' */
	} else if (plen == 0 && rlen == 0) {
		slash = 1;	/* never an empty path */
	}
	out = malloc(plen + (size_t)slash + rlen + (query ? 1 + qlen : 0) + 1);
	if (out == NULL)
		return NULL;
	memcpy(out, path, plen);
	n = plen;
	if (slash)
		out[n++] = '/';
	if (rlen > 0)
		memcpy(out + n, remainder, rlen);
	n += rlen;
	if (query != NULL) {
		out[n++] = '?';
		memcpy(out + n, query, qlen);
		n += qlen;
	}
	out[n] = '\0';
	return out;
}

/* ---- endpoint specs ---- */

/* Quote untrusted text for a message: control and non-ASCII bytes as \xNN,
 * long text cut with "...". */
static const char *
quote(const char *s, char *buf, size_t buflen)
{
	size_t n = 0;

	if (buflen < 8) {
		if (buflen > 0)
			buf[0] = '\0';
		return buf;
	}
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		size_t need = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? 4 : 1;

		if (n + need + 4 >= buflen) {
			memcpy(buf + n, "...", 3);
			n += 3;
			break;
		}
		if (need == 4) {
			snprintf(buf + n, 5, "\\x%02x", c);
			n += 4;
		} else {
			buf[n++] = (char)c;
		}
	}
	buf[n] = '\0';
	return buf;
}

static int
ep_fail(char *errbuf, size_t errlen, const char *text, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
ep_fail(char *errbuf, size_t errlen, const char *text, const char *fmt, ...)
{
	char q[256], why[256];
	va_list ap;

	if (errbuf == NULL || errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(errbuf, errlen, "invalid endpoint \"%s\": %s", quote(text, q, sizeof(q)), why);
	return -1;
}

/* Trim spaces and tabs: [*b, *e). */
static void
trim(const char **b, const char **e)
{
	while (*b < *e && is_ws(**b))
		(*b)++;
	while (*e > *b && is_ws((*e)[-1]))
		(*e)--;
}

int
endpoint_parse(const char *text, struct endpoint *out, char *errbuf, size_t errlen)
{
	const char *s, *e, *p, *open, *close, *comma, *kb, *ke, *db, *de;
	const char *why = NULL;
	struct url *u;
	char *key, *def;
	int depth;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (out == NULL)
		return -1;
	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return ep_fail(errbuf, errlen, "", "empty endpoint");
	s = text;
	e = text + strlen(text);
	trim(&s, &e);
	if (s == e)
		return ep_fail(errbuf, errlen, text, "empty endpoint");

	/* "etcd" then blanks or '(' starts the etcd form; anything else is a URL. */
	if (e - s >= 4 && memcmp(s, "etcd", 4) == 0 && (s + 4 == e || is_ws(s[4]) || s[4] == '(')) {
		p = s + 4;
		while (p < e && is_ws(*p))
			p++;
		if (p == e || *p != '(')
			return ep_fail(errbuf, errlen, text, "expected '(' after 'etcd'");
		open = p;
		if (e[-1] != ')') {
			if (memchr(open, ')', (size_t)(e - open)) != NULL)
				return ep_fail(errbuf, errlen, text, "unexpected text after ')'");
			return ep_fail(errbuf, errlen, text, "missing ')'");
		}
		close = e - 1;
		comma = memchr(open + 1, ',', (size_t)(close - open - 1));
		if (comma == NULL)
			return ep_fail(errbuf, errlen, text,
			    "missing ',' between the etcd key and the default URL");
		kb = open + 1;
		ke = comma;
		trim(&kb, &ke);
		if (kb == ke)
			return ep_fail(errbuf, errlen, text, "empty etcd key");
		for (p = kb; p < ke; p++) {
			unsigned char c = (unsigned char)*p;

			if (c == '(' || c == ')')
				return ep_fail(errbuf, errlen, text,
				    "unexpected '%c' in the etcd key (ambiguous)", c);
			if (c <= 0x20 || c == 0x7f)
				return ep_fail(errbuf, errlen, text,
				    "etcd key contains whitespace or a control character");
		}
		db = comma + 1;
		de = close;
		trim(&db, &de);
		if (db == de)
			return ep_fail(errbuf, errlen, text, "missing default URL after ','");
		/* Parentheses inside the default must balance, else it is unclear
		 * which ')' closes the etcd form. */
		depth = 0;
		for (p = db; p < de; p++) {
			if (*p == '(')
				depth++;
			else if (*p == ')' && --depth < 0)
				break;
		}
		if (depth != 0)
			return ep_fail(errbuf, errlen, text,
			    "unbalanced parentheses in the default URL (ambiguous)");
		key = xstrndup(kb, (size_t)(ke - kb));
		def = xstrndup(db, (size_t)(de - db));
		if (key == NULL || def == NULL) {
			free(key);
			free(def);
			return ep_fail(errbuf, errlen, text, "out of memory");
		}
		u = url_parse(def, &why);
		if (u == NULL) {
			char q[256];

			ep_fail(errbuf, errlen, text, "default URL \"%s\" is not valid: %s",
			    quote(def, q, sizeof(q)), why);
			free(key);
			free(def);
			return -1;
		}
		free(def);
		out->key = key;
	} else {
		u = url_parse(text, &why);
		if (u == NULL)
			return ep_fail(errbuf, errlen, text, "%s", why);
	}
	out->spec = strdup(text);
	if (out->spec == NULL) {
		free(out->key);
		out->key = NULL;
		url_unref(u);
		return ep_fail(errbuf, errlen, text, "out of memory");
	}
	out->def = u;
	return 0;
}

void
endpoint_clear(struct endpoint *ep)
{
	if (ep == NULL)
		return;
	free(ep->spec);
	free(ep->key);
	url_unref(ep->def);
	ep->spec = NULL;
	ep->key = NULL;
	ep->def = NULL;
	ep->slot = NULL;
}

struct url *
endpoint_url(const struct endpoint *ep)
{
	if (ep->slot != NULL && ep->slot->url != NULL)
		return ep->slot->url;
	return ep->def;
}

void
ep_group_free(struct ep_group *g)
{
	size_t i;

	if (g == NULL)
		return;
	for (i = 0; i < g->neps; i++)
		endpoint_clear(&g->eps[i]);
	free(g->eps);
	free(g->name);
	free(g);
}

const char *
group_type_name(enum group_type t)
{
	switch (t) {
	case GROUP_HTTP:
		return "http";
	case GROUP_LOAD_BALANCE:
		return "load_balance";
	case GROUP_FAILOVER:
		return "failover";
	}
	return "unknown";
}
