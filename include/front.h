/* front: the client-facing side around evhttp: listeners, accept back-off, the
 * connection cap, and a per-connection guard that answers 414 / 431 / 408
 * itself where evhttp would only reset the connection. */
#ifndef MGW_FRONT_H
#define MGW_FRONT_H

#include <stddef.h>
#include "config.h"

struct event_base;
struct evhttp;
struct evhttp_request;
struct front;
struct tls_server;

struct front *front_new(struct event_base *base, struct evhttp *http, const struct limits_conf *lim);
/* Bind every listener or none. Errors are logged; returns -1 on failure.
 * tls (may be NULL) is parallel to l: the certificates of each HTTPS
 * listener, NULL for a plain one. Each HTTPS listener gets its own evhttp
 * instance (see front_https_server). With reuseport, several worker
 * processes bind the same ports (SO_REUSEPORT) and the kernel spreads the
 * connections. */
int front_listen(struct front *f, const struct listener_conf *l, size_t n,
    struct tls_server *const *tls, int reuseport);
/* Check that no other process holds the ports, before workers bind them
 * with SO_REUSEPORT (which would silently share them with that process). */
int front_probe(const struct listener_conf *l, size_t n);
/* The evhttp instance of the i-th HTTPS listener, NULL past the last: the
 * request handler must be set on each, as on the plain one. */
struct evhttp *front_https_server(const struct front *f, size_t i);
/* Free the HTTPS evhttp instances and their connections: call next to
 * evhttp_free() of the plain instance, before the proxy goes. */
void front_free_https(struct front *f);
/* Stop accepting (graceful shutdown). */
void front_stop_accepting(struct front *f);
/* Connections with response bytes not yet handed to the kernel: a request
 * is no longer in flight once its last byte is queued, not once it is sent. */
size_t front_output_pending(const struct front *f);
size_t front_conn_count(const struct front *f);
void front_free(struct front *f);

/* The proxy tells the guard where a connection stands, so the header timer
 * runs only while a request head is being read. */
void front_request_done(struct front *f, struct evhttp_request *req);

/* Call fn(arg) if the client connection of req goes away before
 * front_request_done(); evhttp's close callback belongs to the guard. */
typedef void (*front_close_fn)(void *arg);
void front_on_close(struct front *f, struct evhttp_request *req, front_close_fn fn, void *arg);

/* The WSO2-style JSON fault body shared by every error answer. */
int front_fault_body(char *buf, size_t len, int code, const char *message, const char *description);

/* Is a Transfer-Encoding value (n bytes) "chunked" alone, in any case, with
 * optional whitespace around it? The only coding the gateway accepts. */
int front_te_chunked(const char *v, size_t n);

#endif
