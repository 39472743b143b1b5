/* router: (method, path) -> API resource. Built once per config; lookups do not
 * allocate and do not grow with the number of APIs or resources. */
#ifndef MGW_ROUTER_H
#define MGW_ROUTER_H

#include <stddef.h>
#include "openapi.h"

struct router;

/* Build from the loaded APIs; duplicate base paths and templates that match the
 * same requests are errors (reported with file:line:col). NULL on failure. */
struct router *router_build(struct api **apis, size_t napis, struct cfg_errors *e);
void router_free(struct router *r);

enum route_status {
	ROUTE_OK = 0,
	ROUTE_NOT_FOUND,	/* 404 */
	ROUTE_BAD_METHOD,	/* 405: allow holds the path's methods */
	ROUTE_BAD_PATH,		/* 400: climbs above the root, NUL, bad escape */
};

struct route {
	const struct api *api;
	const struct api_resource *res;
	const char *remainder;	/* points into the normalized path: after the base path */
	size_t rlen;
	unsigned allow;		/* method bits, for 405 */
};

/* Normalize the raw request path (no query) into buf: resolve "." and ".."
 * segments (also written %2e / %2E), collapse nothing else, keep every other
 * escape as sent (%2F stays %2F). Returns the length, or -1 for a path that
 * climbs above "/", contains %00 or a malformed escape, or exceeds buflen. */
int router_normalize(const char *path, size_t len, char *buf, size_t buflen);
/* The same, also telling how many leading bytes of the result no ".." ever
 * climbed back over (SIZE_MAX when there was no ".."): a path whose dot
 * segments climbed above the base path of the API it lands in is refused. */
int router_normalize_kept(const char *path, size_t len, char *buf, size_t buflen, size_t *kept);

/* Match an already normalized path. HEAD matches where GET is declared. */
enum route_status router_match(const struct router *r, int method, const char *npath,
    size_t nlen, struct route *out);

#endif
