/* front: listeners and the per-connection guard in front of evhttp.
 *
 * evhttp answers an over-long head with 413 and a slow one with a silent
 * close. Users expect 414, 431 and 408, so each accepted connection gets a
 * guard: a callback on the socket's input buffer watches the bytes of each
 * request head as they arrive (without copying them), and when a limit is
 * crossed the guard takes the socket's callbacks over from evhttp, writes the
 * answer, and frees the evhttp connection once it is out. A transfer coding
 * evhttp would misframe is refused the same way, before evhttp reads the head.
 *
 * evhttp owns the connection; the guard lives exactly as long as it: it is
 * attached to the evhttp connection right after the accept (by an event of
 * the highest priority, so before any I/O of that socket is handled) and
 * freed from the connection's close callback.
 *
 * HTTPS listeners: the bufferevent callback is per evhttp instance, so each
 * HTTPS listener has its own evhttp (with its own certificates), whose
 * callback wraps the accepted socket in an openssl bufferevent. The guard
 * watches the decrypted bytes the same way, and also closes a connection
 * whose TLS handshake does not complete within tls_handshake_timeout_ms.
 * close_notify is sent when a connection is closed between requests only:
 * never when the gateway aborts a response, which must not look complete. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "front.h"
#include "log.h"
#include "mono.h"
#include "tls.h"

/* Sockets whose TLS set-up failed, closed before any of their I/O. */
#define FRONT_MAX_DOOMED	16

enum fc_state {
	FC_WAIT_HEAD,	/* between requests or inside a head */
	FC_IN_REQUEST,	/* head complete: body, handling, response */
	FC_REJECTED,	/* an error answer is going out */
};

struct front_conn {
	LIST_ENTRY(front_conn) link;
	struct front *f;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;	/* NULL until attached */
	struct event attach;
	enum fc_state state;
	uint64_t head_start_ms;		/* first byte of the current head; 0 = none yet */
	size_t head_bytes;
	size_t line_bytes;
	char line[40];			/* start of the current line: finds Content-Length, Transfer-Encoding */
	int last_cr;			/* the line so far ends with CR */
	int te_lines;			/* Transfer-Encoding headers in this head */
	int in_first_line;
	int fd;
	int tls;			/* accepted on an HTTPS listener */
	int hs_done;			/* its TLS handshake completed */
	uint64_t accept_ms;
	uint64_t idle_since_ms;		/* accept, or the end of the last response */
	front_close_fn on_close;	/* the request in flight wants to know */
	void *on_close_arg;
};

struct front_listener {
	struct evconnlistener *lev;
};

/* One HTTPS listener: its evhttp instance and certificates. */
struct front_https {
	struct front *f;
	struct evhttp *http;
	struct tls_server *tls;		/* not owned */
};

/* evhttp_bind_listener() takes the listener's callback argument for itself,
 * so the accept error callback finds the front here (one per process). */
static struct front *front_active;

struct front {
	struct event_base *base;
	struct evhttp *http;
	struct limits_conf lim;
	LIST_HEAD(, front_conn) conns;
	size_t nconns;
	struct front_conn **byfd;	/* fd -> guard, for the proxy's notifications */
	size_t nbyfd;
	struct front_listener *listeners;
	size_t nlisteners;
	struct front_https *https;
	size_t nhttps;
	struct bufferevent *doomed[FRONT_MAX_DOOMED];
	size_t ndoomed;
	struct event *doom;		/* closes the doomed sockets, before their I/O */
	struct event *sweep;		/* header and TLS handshake timeouts */
	struct event *resume;		/* accept back-off */
	int paused;			/* accepting paused (fd exhaustion or the cap) */
	int stopping;
	unsigned backoff_ms;
};


int front_fault_body(char *buf, size_t len, int code, const char *message, const char *description)
{
	return snprintf(buf, len, "{\"fault\":{\"code\":%d,\"message\":\"%s\",\"description\":\"%s\"}}",
	    code, message, description);
}

static const char *status_reason(int status)
{
	switch (status) {
	case 408: return "Request Timeout";
	case 414: return "URI Too Long";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	default: return "Bad Request";
	}
}

static void front_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void front_http_setup(struct front *f, struct evhttp *http);

static void front_accept_set(struct front *f, int on)
{
	for (size_t i = 0; i < f->nlisteners; i++) {
		if (on)
			evconnlistener_enable(f->listeners[i].lev);
		else
			evconnlistener_disable(f->listeners[i].lev);
	}
}

/* evhttp is freeing the connection: the guard goes with it. */
static void front_closed(struct evhttp_connection *evcon, void *arg)
{
	struct front_conn *c = arg;
	struct front *f = c->f;

	(void)evcon;
	if (c->on_close != NULL)
		c->on_close(c->on_close_arg);
	if (c->tls) {
		char why[200];

		if (!c->hs_done && !tls_handshake_done(c->bev)) {
			if (tls_failure(c->bev, why, sizeof(why)) != NULL)
				log_debug("front", "fd=%d TLS handshake failed: %s", c->fd, why);
		} else if (c->state != FC_IN_REQUEST) {
			/* Between requests, or after a rejection was written:
			 * nothing was cut short. */
			tls_close_notify(c->bev);
		}
	}
	LIST_REMOVE(c, link);
	f->nconns--;
	if (c->fd >= 0 && (size_t)c->fd < f->nbyfd && f->byfd[c->fd] == c)
		f->byfd[c->fd] = NULL;
	if (f->paused && !f->stopping && f->nconns < f->lim.max_connections && f->backoff_ms == 0) {
		f->paused = 0;
		front_accept_set(f, 1);
	}
	evbuffer_remove_cb(bufferevent_get_input(c->bev), front_input_cb, c);
	free(c);
}

static void front_reject_done(struct bufferevent *bev, void *arg)
{
	struct front_conn *c = arg;

	(void)bev;
	evhttp_connection_free(c->evcon);
}

static void front_reject_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	front_reject_done(bev, arg);
}

/* Answer with an error and close. The socket's callbacks are taken from
 * evhttp, so it never sees the rest of this connection. */
static void front_reject(struct front_conn *c, int status)
{
	char body[256], head[256];
	int blen, hlen;
	const char *desc = status == 408 ? "The request head was not received in time" :
	    status == 413 ? "The request body is larger than the gateway accepts" :
	    status == 414 ? "The request URI is longer than the gateway accepts" :
	    status == 501 ? "The request's Transfer-Encoding is not supported: only chunked is" :
	    "The request headers are larger than the gateway accepts";
	struct evbuffer *in = bufferevent_get_input(c->bev);

	c->state = FC_REJECTED;
	blen = front_fault_body(body, sizeof(body), 900000 + status, status_reason(status), desc);
	hlen = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %d\r\nConnection: close\r\n\r\n", status, status_reason(status), blen);
	bufferevent_setcb(c->bev, NULL, front_reject_done, front_reject_event, c);
	bufferevent_disable(c->bev, EV_READ);
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_write(c->bev, head, (size_t)hlen);
	bufferevent_write(c->bev, body, (size_t)blen);
	bufferevent_enable(c->bev, EV_WRITE);
	log_info("front", "fd=%d request rejected with %d (%s)", c->fd, status, status_reason(status));
}

/* A declared body over the limit is refused before it is read, with the same
 * JSON fault as every other answer (evhttp's own 413 is an HTML page). */
static int front_body_too_large(const struct front_conn *c)
{
	static const char name[] = "content-length:";
	size_t n = c->line_bytes < sizeof(c->line) ? c->line_bytes : sizeof(c->line);
	size_t i = sizeof(name) - 1;
	unsigned long long v = 0;

	if (n <= i || strncasecmp(c->line, name, i) != 0)
		return 0;
	while (i < n && (c->line[i] == ' ' || c->line[i] == '\t'))
		i++;
	if (i == n && c->line_bytes > n)
		return 1;	/* digits beyond what is kept: far too large */
	for (; i < n && c->line[i] >= '0' && c->line[i] <= '9'; i++) {
		v = v * 10 + (unsigned)(c->line[i] - '0');
		if (v > c->f->lim.max_body)
			return 1;
	}
	return i == n && c->line_bytes > n;
}

int front_te_chunked(const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* Any coding but chunked alone is refused (501) before evhttp reads the
 * head: by its version, evhttp reads no body then, and takes the body for the
 * next request, or de-chunks one whose other codings would be lost. Several
 * headers make a list of codings. */
static int front_te_refused(struct front_conn *c)
{
	static const char name[] = "transfer-encoding:";
	size_t i = sizeof(name) - 1;

	if (c->line_bytes < i || strncasecmp(c->line, name, i) != 0)
		return 0;
	if (c->te_lines++ > 0 || c->line_bytes > sizeof(c->line))
		return 1;	/* a list, or too long to be "chunked" */
	return !front_te_chunked(c->line + i, c->line_bytes - i - (size_t)c->last_cr);
}

/* Watch head bytes: request line and head size, and where the head ends. */
static void front_scan(struct front_conn *c, const unsigned char *p, size_t n)
{
	const struct limits_conf *lim = &c->f->lim;
	const unsigned char *end = p + n;

	if (c->head_start_ms == 0)
		c->head_start_ms = mono_ms();
	while (p < end && c->state == FC_WAIT_HEAD) {
		const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t seg = (size_t)((nl ? nl : end) - p);

		if (seg > 0) {
			if (c->line_bytes < sizeof(c->line)) {
				size_t k = sizeof(c->line) - c->line_bytes;

				memcpy(c->line + c->line_bytes, p, seg < k ? seg : k);
			}
			c->line_bytes += seg;
			c->head_bytes += seg;
			c->last_cr = p[seg - 1] == '\r';
			/* Method, two spaces and "HTTP/1.1" around the target. */
			if (c->in_first_line && c->line_bytes > lim->max_uri + 32) {
				front_reject(c, 414);
				return;
			}
			if (c->head_bytes > lim->max_header) {
				front_reject(c, c->in_first_line ? 414 : 431);
				return;
			}
		}
		if (nl == NULL)
			return;
		p = nl + 1;
		c->head_bytes++;
		if (c->line_bytes == 0 || (c->line_bytes == 1 && c->last_cr)) {
			/* Empty lines before a request line are tolerated; after
			 * it, the empty line ends the head. */
			c->line_bytes = 0;
			if (!c->in_first_line) {
				c->state = FC_IN_REQUEST;
				c->head_start_ms = 0;
			}
			continue;
		}
		if (!c->in_first_line && front_body_too_large(c)) {
			front_reject(c, 413);
			return;
		}
		if (!c->in_first_line && front_te_refused(c)) {
			front_reject(c, 501);
			return;
		}
		c->in_first_line = 0;
		c->line_bytes = 0;
	}
}

static void front_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct front_conn *c = arg;
	struct evbuffer_iovec vec[8];
	struct evbuffer_ptr ptr;
	size_t len, off;
	int nvec;

	if (c->state != FC_WAIT_HEAD || info->n_added == 0)
		return;
	/* The new bytes are at the end of the buffer. */
	len = evbuffer_get_length(buf);
	off = len - info->n_added;
	while (c->state == FC_WAIT_HEAD && off < len) {
		if (evbuffer_ptr_set(buf, &ptr, off, EVBUFFER_PTR_SET) != 0)
			break;
		nvec = evbuffer_peek(buf, (ev_ssize_t)(len - off), &ptr, vec, 8);
		if (nvec <= 0)
			break;
		for (int i = 0; i < nvec && i < 8 && c->state == FC_WAIT_HEAD; i++) {
			size_t l = vec[i].iov_len;

			if (l > len - off)
				l = len - off;
			front_scan(c, vec[i].iov_base, l);
			off += l;
		}
	}
}

static void front_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front *f = arg;
	struct front_conn *c, *next;
	uint64_t now = mono_ms();

	(void)fd;
	(void)what;
	for (c = LIST_FIRST(&f->conns); c != NULL; c = next) {
		next = LIST_NEXT(c, link);
		if (c->tls && !c->hs_done && c->evcon != NULL) {
			if (tls_handshake_done(c->bev)) {
				c->hs_done = 1;
			} else if (now - c->accept_ms >= f->lim.tls_handshake_timeout_ms) {
				/* A client stalling in the handshake costs its
				 * connection only. This frees c. */
				log_debug("front", "fd=%d TLS handshake not completed within %ums: closing",
				    c->fd, f->lim.tls_handshake_timeout_ms);
				evhttp_connection_free(c->evcon);
				continue;
			}
		}
		if (c->evcon != NULL && c->state == FC_WAIT_HEAD && c->head_start_ms != 0 &&
		    now - c->head_start_ms >= f->lim.header_timeout_ms) {
			front_reject(c, 408);
		} else if (c->evcon != NULL && c->state == FC_WAIT_HEAD && c->head_start_ms == 0 &&
		    now - c->idle_since_ms >= f->lim.idle_timeout_ms + f->lim.header_timeout_ms) {
			/* No request head began within the idle time: evhttp's own
			 * idle timer is re-armed by any socket read, TLS records
			 * trickled a byte at a time included, so this bound is
			 * absolute. This frees c. */
			log_debug("front", "fd=%d no request within %ums: closing", c->fd,
			    f->lim.idle_timeout_ms + f->lim.header_timeout_ms);
			evhttp_connection_free(c->evcon);
		}
	}
}

/* evhttp builds its connection around the bufferevent after front_bevcb
 * returns; this runs before any I/O of the socket is handled. */
static void front_attach_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front_conn *c = arg;
	struct front *f = c->f;
	void *cbarg = NULL;

	(void)fd;
	(void)what;
	bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
	c->evcon = cbarg;
	c->fd = bufferevent_getfd(c->bev);
	evhttp_connection_set_closecb(c->evcon, front_closed, c);
	if (c->fd >= 0) {
		int one = 1;

		/* A response leaves in several writes (the head, body pieces as the
		 * backend sends them, TLS records): without this, Nagle holds the
		 * last small one until the client's delayed ACK, 40 ms later. */
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (c->fd >= 0 && (size_t)c->fd >= f->nbyfd) {
		size_t n = f->nbyfd ? f->nbyfd : 1024;
		struct front_conn **nb;

		while (n <= (size_t)c->fd)
			n *= 2;
		nb = realloc(f->byfd, n * sizeof(*nb));
		if (nb == NULL)
			return;
		memset(nb + f->nbyfd, 0, (n - f->nbyfd) * sizeof(*nb));
		f->byfd = nb;
		f->nbyfd = n;
	}
	if (c->fd >= 0)
		f->byfd[c->fd] = c;
}

/* Each piece of a TLS connection's output buffer becomes its own TLS record
 * and write(): a response's head and body would take two. Up to one record's
 * worth of pending output is kept in one piece (measured: one syscall and
 * one record less per small response). */
static void front_tls_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	size_t len;

	(void)arg;
	if (info->n_added == 0)
		return;
	len = evbuffer_get_length(buf);
	if (len <= 16384 && evbuffer_peek(buf, -1, NULL, NULL, 0) > 1)
		evbuffer_pullup(buf, -1);
}

/* The guard of a new connection around its bufferevent (consumed). */
static struct front_conn *front_guard(struct front *f, struct event_base *base,
    struct bufferevent *bev, int tls)
{
	struct front_conn *c;

	if (bev == NULL)
		return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		bufferevent_free(bev);
		return NULL;
	}
	c->f = f;
	c->fd = -1;
	c->in_first_line = 1;
	c->tls = tls;
	c->bev = bev;
	c->accept_ms = c->idle_since_ms = mono_ms();
	if (evbuffer_add_cb(bufferevent_get_input(c->bev), front_input_cb, c) == NULL ||
	    (tls && evbuffer_add_cb(bufferevent_get_output(c->bev), front_tls_out_cb, NULL) == NULL)) {
		bufferevent_free(c->bev);
		free(c);
		return NULL;
	}
	event_assign(&c->attach, base, -1, 0, front_attach_cb, c);
	event_priority_set(&c->attach, 0);
	event_active(&c->attach, EV_TIMEOUT, 1);
	LIST_INSERT_HEAD(&f->conns, c, link);
	f->nconns++;
	if (f->backoff_ms != 0) {
		log_info("front", "accepting connections again");
		f->backoff_ms = 0;
	}
	if (f->nconns >= f->lim.max_connections && !f->paused) {
		log_warn("front", "%zu client connections: accepting paused until one closes", f->nconns);
		f->paused = 1;
		front_accept_set(f, 0);
	}
	return c;
}

static struct bufferevent *front_bevcb(struct event_base *base, void *arg)
{
	struct front_conn *c = front_guard(arg, base, bufferevent_socket_new(base, -1, 0), 0);

	if (c == NULL)
		return NULL;
	/* libevent writes at most 16 KiB per write event by default: a 64 KiB
	 * response would take four turns of the loop. */
	bufferevent_set_max_single_write(c->bev, 1 << 20);
	return c->bev;
}

static void front_doom_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front *f = arg;

	(void)fd;
	(void)what;
	while (f->ndoomed > 0) {
		struct bufferevent *bev = f->doomed[--f->ndoomed];
		void *evcon = NULL;

		bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
		if (evcon != NULL)
			evhttp_connection_free(evcon);
	}
}

static struct bufferevent *front_bevcb_tls(struct event_base *base, void *arg)
{
	struct front_https *h = arg;
	struct front *f = h->f;
	SSL *ssl = tls_server_ssl(h->tls);
	struct bufferevent *bev = NULL;
	struct front_conn *c;

	/* On failure the SSL is freed with the bufferevent (CLOSE_ON_FREE). */
	if (ssl != NULL)
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
		    BEV_OPT_CLOSE_ON_FREE);
	if ((c = front_guard(f, base, bev, 1)) != NULL)
		return c->bev;
	/* Out of memory. Given no bufferevent, evhttp would make a plain one
	 * and speak clear HTTP on this port: it gets one that is closed, with
	 * its connection, before any of its I/O is handled. */
	log_err("front", "out of memory setting up TLS for a new connection: closing it");
	if (f->ndoomed == FRONT_MAX_DOOMED || (bev = bufferevent_socket_new(base, -1, 0)) == NULL)
		return NULL;
	f->doomed[f->ndoomed++] = bev;
	event_active(f->doom, EV_TIMEOUT, 1);
	return bev;
}

static struct front_conn *front_conn_of(struct front *f, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	evutil_socket_t fd;

	if (evcon == NULL)
		return NULL;
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd < 0 || (size_t)fd >= f->nbyfd || f->byfd[fd] == NULL || f->byfd[fd]->evcon != evcon)
		return NULL;
	return f->byfd[fd];
}

void front_on_close(struct front *f, struct evhttp_request *req, front_close_fn fn, void *arg)
{
	struct front_conn *c = front_conn_of(f, req);

	if (c == NULL)
		return;
	c->on_close = fn;
	c->on_close_arg = arg;
	/* A pipelined request evhttp found already buffered was never watched
	 * as a head: it is in flight now all the same. */
	if (fn != NULL && c->state == FC_WAIT_HEAD)
		c->state = FC_IN_REQUEST;
}

void front_request_done(struct front *f, struct evhttp_request *req)
{
	struct front_conn *c = front_conn_of(f, req);

	if (c == NULL)
		return;
	c->on_close = NULL;
	c->on_close_arg = NULL;
	if (c->state != FC_IN_REQUEST)
		return;
	c->state = FC_WAIT_HEAD;
	c->head_bytes = 0;
	c->line_bytes = 0;
	c->te_lines = 0;
	c->in_first_line = 1;
	/* A pipelined next request may already be buffered: its clock starts now. */
	c->idle_since_ms = mono_ms();
	c->head_start_ms = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ? c->idle_since_ms : 0;
}

static void front_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front *f = arg;

	(void)fd;
	(void)what;
	/* The back-off is reset by the next accept that succeeds, not here:
	 * while descriptors stay exhausted it keeps growing. */
	if (f->stopping || f->nconns >= f->lim.max_connections)
		return;
	f->paused = 0;
	front_accept_set(f, 1);
}

static void front_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct front *f = front_active;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv;

	(void)lev;
	(void)arg;
	if (f == NULL)
		return;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		log_warn("front", "accept: %s", evutil_socket_error_to_string(err));
		return;
	}
	/* Out of descriptors: spinning on accept would burn the CPU without
	 * serving anyone. Pause, and back off while it persists. */
	if (f->backoff_ms == 0)
		log_warn("front", "accept: %s; pausing accepts, backing off up to 2000ms until one succeeds",
		    evutil_socket_error_to_string(err));
	f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : 100;
	if (f->backoff_ms > 2000)
		f->backoff_ms = 2000;
	f->paused = 1;
	front_accept_set(f, 0);
	tv.tv_sec = f->backoff_ms / 1000;
	tv.tv_usec = (f->backoff_ms % 1000) * 1000;
	evtimer_add(f->resume, &tv);
}

struct front *front_new(struct event_base *base, struct evhttp *http, const struct limits_conf *lim)
{
	struct front *f = calloc(1, sizeof(*f));
	struct timeval tv;
	unsigned tick;

	if (f == NULL)
		return NULL;
	f->base = base;
	f->http = http;
	f->lim = *lim;
	LIST_INIT(&f->conns);
	f->sweep = event_new(base, -1, EV_PERSIST, front_sweep_cb, f);
	f->resume = evtimer_new(base, front_resume_cb, f);
	f->doom = event_new(base, -1, 0, front_doom_cb, f);
	if (f->sweep == NULL || f->resume == NULL || f->doom == NULL) {
		front_free(f);
		return NULL;
	}
	event_priority_set(f->doom, 0);
	/* A quarter of the header (or TLS handshake) timeout keeps the answer
	 * within 25% late. */
	tick = lim->header_timeout_ms / 4;
	if (lim->tls_handshake_timeout_ms > 0 && lim->tls_handshake_timeout_ms / 4 < tick)
		tick = lim->tls_handshake_timeout_ms / 4;
	if (tick < 50)
		tick = 50;
	if (tick > 1000)
		tick = 1000;
	tv.tv_sec = tick / 1000;
	tv.tv_usec = (tick % 1000) * 1000;
	event_add(f->sweep, &tv);

	front_active = f;
	evhttp_set_bevcb(http, front_bevcb, f);
	front_http_setup(f, http);
	return f;
}

/* The settings every evhttp instance of the front shares. */
static void front_http_setup(struct front *f, struct evhttp *http)
{
	const struct limits_conf *lim = &f->lim;
	struct timeval tv;

	/* evhttp's own cap sits above ours so that the guard answers first. */
	evhttp_set_max_headers_size(http, (ev_ssize_t)(lim->max_header + lim->max_uri + 1024));
	evhttp_set_max_body_size(http, (ev_ssize_t)lim->max_body);
	tv.tv_sec = lim->idle_timeout_ms / 1000;
	tv.tv_usec = (lim->idle_timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(http, &tv);
	evhttp_set_default_content_type(http, NULL);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	    EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
}

int front_listen(struct front *f, const struct listener_conf *l, size_t n,
    struct tls_server *const *tls, int reuseport)
{
	size_t ntls = 0;

	for (size_t i = 0; tls != NULL && i < n; i++)
		ntls += tls[i] != NULL;
	f->listeners = calloc(n, sizeof(*f->listeners));
	if (f->listeners == NULL && n > 0)
		return -1;
	f->https = calloc(ntls, sizeof(*f->https));
	if (f->https == NULL && ntls > 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		int sslen = sizeof(ss);
		char buf[300];
		struct evconnlistener *lev;
		struct evhttp *http = f->http;
		struct tls_server *t = tls != NULL ? tls[i] : NULL;

		snprintf(buf, sizeof(buf), strchr(l[i].address, ':') ? "[%s]:%u" : "%s:%u",
		    l[i].address, (unsigned)l[i].port);
		if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)&ss, &sslen) != 0) {
			log_err("front", "listener %s: not a numeric address", buf);
			return -1;
		}
		lev = evconnlistener_new_bind(f->base, NULL, NULL,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED |
		    (reuseport ? LEV_OPT_REUSEABLE_PORT : 0), 1024, (struct sockaddr *)&ss, sslen);
		if (lev == NULL) {
			log_err("front", "cannot listen on %s: %s", buf,
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
			return -1;
		}
		f->listeners[i].lev = lev;
		f->nlisteners++;
		if (t != NULL) {
			struct front_https *h = &f->https[f->nhttps];

			if ((http = evhttp_new(f->base)) == NULL) {
				log_err("front", "cannot serve %s: out of memory", buf);
				return -1;
			}
			h->f = f;
			h->http = http;
			h->tls = t;
			f->nhttps++;
			evhttp_set_bevcb(http, front_bevcb_tls, h);
			front_http_setup(f, http);
		}
		if (evhttp_bind_listener(http, lev) == NULL) {
			log_err("front", "cannot serve %s", buf);
			return -1;
		}
		evconnlistener_set_error_cb(lev, front_accept_error_cb);
		if (t != NULL)
			log_info("front", "listening on %s (https: %s)", buf, tls_server_summary(t));
		else
			log_info("front", "listening on %s (http)", buf);
	}
	front_accept_set(f, 1);
	return 0;
}

struct evhttp *front_https_server(const struct front *f, size_t i)
{
	return i < f->nhttps ? f->https[i].http : NULL;
}

void front_free_https(struct front *f)
{
	if (f == NULL)
		return;
	/* Their listeners, and maybe the plain ones, are freed with the
	 * evhttp instances: a closing connection must not re-enable them. */
	f->stopping = 1;
	for (size_t i = 0; i < f->nhttps; i++)
		evhttp_free(f->https[i].http);
	f->nhttps = 0;
}

void front_stop_accepting(struct front *f)
{
	f->stopping = 1;
	front_accept_set(f, 0);
	/* A disabled listener still completes handshakes into its backlog, and
	 * those clients are reset when the process exits. Shut down, the socket
	 * leaves the LISTEN state: new clients are refused at once and can try
	 * another instance. The descriptor stays the listener's, to close when
	 * it is freed. */
	for (size_t i = 0; i < f->nlisteners; i++)
		shutdown(evconnlistener_get_fd(f->listeners[i].lev), SHUT_RD);
}

size_t front_output_pending(const struct front *f)
{
	const struct front_conn *c;
	size_t n = 0;

	LIST_FOREACH(c, &f->conns, link)
		n += c->bev != NULL && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;
	return n;
}

size_t front_conn_count(const struct front *f)
{
	return f->nconns;
}

/* Call after evhttp_free(), which freed every connection and so every guard
 * that was attached; one accepted in the loop's last turn may remain. */
void front_free(struct front *f)
{
	struct front_conn *c;

	if (f == NULL)
		return;
	while ((c = LIST_FIRST(&f->conns)) != NULL) {
		LIST_REMOVE(c, link);
		event_del(&c->attach);
		free(c);
	}
	if (f->sweep)
		event_free(f->sweep);
	if (f->resume)
		event_free(f->resume);
	if (f->doom)
		event_free(f->doom);
	free(f->byfd);
	free(f->listeners);
	free(f->https);
	if (front_active == f)
		front_active = NULL;
	free(f);
}

int front_probe(const struct listener_conf *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage ss;
		int sslen = sizeof(ss), one = 1, rc;
		char buf[300];
		evutil_socket_t fd;

		snprintf(buf, sizeof(buf), strchr(l[i].address, ':') ? "[%s]:%u" : "%s:%u",
		    l[i].address, (unsigned)l[i].port);
		if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)&ss, &sslen) != 0)
			continue;	/* front_listen reports it */
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		rc = bind(fd, (struct sockaddr *)&ss, (socklen_t)sslen);
		evutil_closesocket(fd);
		if (rc != 0) {
			log_err("front", "cannot listen on %s: %s", buf, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
			return -1;
		}
	}
	return 0;
}
