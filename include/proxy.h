/* proxy: one request's life: route, pick an endpoint, forward, relay, faults. */
#ifndef MGW_PROXY_H
#define MGW_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "config.h"
#include "endpoint.h"

struct event_base;
struct evhttp;
struct front;
struct upstream;
struct router;
struct proxy;

struct proxy *proxy_new(struct evhttp *http, struct front *front, struct upstream *up,
    const struct router *rt, const struct limits_conf *lim);
/* Serve the requests of another evhttp instance (an HTTPS listener's). */
void proxy_serve(struct proxy *p, struct evhttp *http);
/* Number requests from a counter in memory shared with the other worker
 * processes, so that a request id names one request across all of them. */
void proxy_share_rids(struct proxy *p, uint64_t *counter);
size_t proxy_inflight(const struct proxy *p);
/* Requests dropped from now on are the gateway's doing (logged as 503). */
void proxy_stopping(struct proxy *p);
void proxy_free(struct proxy *p);

/* Is this header hop-by-hop, either by its name or because the message's
 * Connection header (conn, may be NULL) names it? */
int proxy_hop_header(const char *name, const char *conn);

/* The upstream request head: request line, Host, the client's end-to-end
 * headers, X-Forwarded-*, and Content-Length when body_len >= 0. */
struct proxy_fwd {
	const char *method;
	const char *target;		/* joined path and query */
	const struct url *url;
	const char *client_addr;	/* for X-Forwarded-For */
	const char *proto;		/* "http" or "https" */
	int64_t body_len;		/* -1: no Content-Length */
};
int proxy_build_head(struct evbuffer *out, const struct proxy_fwd *f, struct evkeyvalq *in);

/* Drop a backend response's hop-by-hop headers (and a 204's length) in place. */
void proxy_filter_response_headers(struct evkeyvalq *h, int status);

#endif
