/* endpoint: backend URLs, endpoint specs and endpoint groups. No I/O here. */
#ifndef MGW_ENDPOINT_H
#define MGW_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

/* An absolute http(s) URL, parsed once. Reference counted because a request in
 * flight keeps the URL it started with while discovery may replace it. */
struct url {
	unsigned refs;
	int tls;		/* https */
	char *text;		/* the URL as given (trimmed) */
	char *host;		/* without IPv6 brackets */
	uint16_t port;		/* explicit or scheme default */
	char *authority;	/* Host header value: host[:port], port omitted when default */
	char *origin;		/* "http://host:port": the connection pool key */
	char *path;		/* "" or starts with '/'; query and fragment are rejected */
	void *pool;		/* upstream pool cache, owned by the upstream room */
};

/* Parse an absolute http:// or https:// URL. On error returns NULL and sets
 * *err to a static message ("missing host", "port out of range", ...). */
struct url *url_parse(const char *text, const char **err);
struct url *url_ref(struct url *u);
void url_unref(struct url *u);

/* Join the endpoint path and the request remainder (after the API base path)
 * with exactly one '/', then append "?query" when query is non-NULL (even if
 * empty, so "?" is kept byte for byte). Returns a malloc'd string, never an
 * empty path ("/" at least). */
char *url_join(const struct url *u, const char *remainder, size_t rlen, const char *query);

struct disc_slot;

/* One entry of an endpoint's urls list. */
struct endpoint {
	char *spec;		/* original text, for messages */
	char *key;		/* etcd key; NULL for a plain URL */
	struct url *def;	/* the plain URL, or the etcd default */
	struct disc_slot *slot;	/* set at wiring time when discovery runs */
	unsigned line, col;	/* where it was written */
	/* runtime health for failover/load_balance (monotonic usec; 0 = healthy) */
	uint64_t down_until;
	int failing;		/* connects fail: logged once, until it answers again */
};

/* Parse "http://x/y" or "etcd (key, http://default)". Returns 0, or -1 with
 * a message in errbuf naming the offending text. */
int endpoint_parse(const char *text, struct endpoint *out, char *errbuf, size_t errlen);
void endpoint_clear(struct endpoint *ep);

/* The URL to use now: the discovered one if any, else the default. */
struct url *endpoint_url(const struct endpoint *ep);

enum group_type { GROUP_HTTP = 0, GROUP_LOAD_BALANCE, GROUP_FAILOVER };

struct ep_group {
	enum group_type type;
	struct endpoint *eps;
	size_t neps;
	unsigned timeout_ms;	/* advanceEndpointConfig.timeoutInMillis, default 60000 */
	unsigned rr;		/* load_balance cursor */
	char *name;		/* x-wso2-endpoints name, or NULL for inline */
};

void ep_group_free(struct ep_group *g);
const char *group_type_name(enum group_type t);

#endif
