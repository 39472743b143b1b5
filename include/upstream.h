/* upstream: HTTP/1.1 client connections to backends, pooled per origin. A lean
 * client on bufferevents rather than evhttp_connection: it understands interim
 * 1xx responses, frames every body itself and streams the response. */
#ifndef MGW_UPSTREAM_H
#define MGW_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "endpoint.h"

struct evdns_base;
struct ssl_ctx_st;
struct upstream;
struct up_conn;

struct up_settings {
	unsigned connect_timeout_ms;
	unsigned pool_max_idle;		/* idle connections kept per origin */
	unsigned pool_idle_timeout_ms;
	size_t max_response_head;	/* status line + headers of a backend response */
	/* https backends: the client context (NULL: https endpoints refused),
	 * whether peers are verified, and the origins exempted from it. */
	struct ssl_ctx_st *tls_ctx;
	/* Makes tls_ctx on the first https origin when it is NULL: OpenSSL's
	 * set-up costs a few MiB that a plain-HTTP gateway need not pay. */
	struct ssl_ctx_st *(*tls_ctx_make)(void *arg);
	void *tls_ctx_arg;
	int tls_verify;
	char *const *tls_no_verify;	/* "https://host:port", as struct url's origin */
	size_t tls_nno_verify;
};

enum up_error {
	UP_ECONNECT = 1,	/* refused, unreachable, DNS: nothing was sent */
	UP_ECONNTIMEOUT,	/* connect did not complete in time: nothing was sent */
	UP_ETIMEOUT,		/* no response byte within the endpoint timeout */
	UP_EPROTO,		/* the backend's response is not valid HTTP/1.x */
	UP_ECLOSED,		/* the backend closed or reset before the response ended */
	UP_ETLS,		/* TLS handshake failed (or no TLS context): nothing was sent */
};
const char *up_error_name(enum up_error e);

struct up_handler {
	/* The final response head, its headers now in ex->resp_headers. 'clen'
	 * is the Content-Length or -1; 'bodyless' is set for HEAD, 204 and 304. */
	void (*head)(void *arg, int status, int64_t clen, int bodyless);
	/* Move exactly n bytes out of src. Return nonzero to pause reading until
	 * upstream_resume(). */
	int (*body)(void *arg, struct evbuffer *src, size_t n);
	void (*done)(void *arg);
	/* 'sent_head' tells whether head() was called already. */
	void (*error)(void *arg, enum up_error err, int sent_head);
};

/* One request/response exchange, embedded in the caller's request state. */
struct up_exchange {
	struct evbuffer *head;		/* request line + headers + CRLF, not consumed */
	struct evbuffer *body;		/* NULL or the body, not consumed */
	int idempotent;
	int head_only;			/* HEAD request: the response has no body */
	unsigned timeout_ms;		/* endpoint timeoutInMillis */
	/* Where the final response's headers go, as received (the client's
	 * response headers: one copy instead of two). Interim 1xx heads never
	 * land here; on a broken head it is left empty. */
	struct evkeyvalq *resp_headers;
	const struct up_handler *h;
	void *arg;
	/* private */
	struct up_conn *conn;
	int retried;
	int got_head;
};

struct upstream *upstream_new(struct event_base *base, const struct up_settings *s);
void upstream_free(struct upstream *up);

/* Start an exchange with the origin of 'u'. Callbacks run later, never from
 * inside this call. Returns 0, or -1 when no connection could be started (the
 * error callback is not called then). */
int upstream_start(struct upstream *up, struct url *u, struct up_exchange *ex);
/* Give up on an exchange (the client went away): its connection is closed, no
 * callback of it runs afterwards. */
void upstream_abort(struct up_exchange *ex);
void upstream_resume(struct up_exchange *ex);

/* Close every idle pooled connection (shutdown). */
void upstream_drain_idle(struct upstream *up);

#endif
