/* upstream: pooled HTTP/1.1 client connections to backends.
 *
 * Each connection runs at most one exchange at a time. A connection is closed
 * through up_conn_close() only; while a handler callback runs, the close is
 * deferred so that nothing is freed under libevent's or our own feet.
 *
 * https origins use openssl bufferevents with deferred callbacks: libevent
 * 2.1 may report a close before it hands over the bytes read in the same
 * pass, and deferral restores the order (read, then event). A body that ends
 * with the connection is complete only on close_notify (RFC 9112 9.8): a TLS
 * connection closed without it is reported as truncated. */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/http.h>
#include <event2/util.h>

#include "log.h"
#include "tls.h"
#include "upstream.h"

enum up_state {
	US_CONNECTING,
	US_IDLE,	/* pooled, no exchange */
	US_HEAD,	/* waiting for (more of) a response head */
	US_BODY_LEN,	/* Content-Length body */
	US_CHUNK_SIZE,
	US_CHUNK_DATA,
	US_CHUNK_CRLF,
	US_TRAILERS,
	US_BODY_EOF,	/* body delimited by the connection close */
	US_DONE,	/* the response is complete (a head without body) */
};

struct up_pool {
	struct upstream *up;
	struct up_pool *next;		/* hash chain */
	char *origin;
	char *host;
	uint16_t port;
	int tls;
	int verify;			/* https: verify the peer's certificate and name */
	char tls_err[200];		/* the TLS failure last logged, "" while it works */
	int dirty_logged;		/* a close without close_notify was explained */
	struct sockaddr_storage sa;	/* when the host is a literal address */
	int salen;
	TAILQ_HEAD(, up_conn) idle;
	unsigned nidle;
};

struct up_conn {
	TAILQ_ENTRY(up_conn) link;	/* in pool->idle while US_IDLE */
	struct up_pool *pool;
	struct bufferevent *bev;
	struct up_exchange *ex;
	enum up_state state;
	int reused;			/* served an exchange before this one */
	int got_bytes;			/* a byte of the current response arrived */
	int keepalive;
	int in_cb;			/* inside a handler callback */
	int dead;			/* close once the callback returns */
	int tls_open;			/* handshake done, no close or error seen */
	int64_t remaining;
};

struct upstream {
	struct event_base *base;
	struct evdns_base *dns;		/* created on the first host name */
	struct up_settings set;
	struct up_pool **buckets;
	size_t nbuckets;
};

static void up_readcb(struct bufferevent *bev, void *arg);
static void up_eventcb(struct bufferevent *bev, short what, void *arg);
static int up_connect(struct up_pool *pool, struct up_exchange *ex);

const char *up_error_name(enum up_error e)
{
	switch (e) {
	case UP_ECONNECT: return "connect failed";
	case UP_ECONNTIMEOUT: return "connect timed out";
	case UP_ETIMEOUT: return "response timed out";
	case UP_EPROTO: return "invalid response";
	case UP_ECLOSED: return "connection closed before the response ended";
	case UP_ETLS: return "TLS handshake failed";
	}
	return "error";
}

static void ms_to_tv(unsigned ms, struct timeval *tv)
{
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

struct upstream *upstream_new(struct event_base *base, const struct up_settings *s)
{
	struct upstream *up = calloc(1, sizeof(*up));

	if (up == NULL)
		return NULL;
	up->base = base;
	up->set = *s;
	up->nbuckets = 256;
	up->buckets = calloc(up->nbuckets, sizeof(*up->buckets));
	if (up->buckets == NULL) {
		free(up);
		return NULL;
	}
	return up;
}

/* The single close path of a backend connection. */
static void up_conn_close(struct up_conn *c)
{
	if (c->in_cb) {
		c->dead = 1;
		return;
	}
	if (c->state == US_IDLE) {
		TAILQ_REMOVE(&c->pool->idle, c, link);
		c->pool->nidle--;
	}
	if (c->ex != NULL)
		c->ex->conn = NULL;
	if (c->tls_open)
		tls_close_notify(c->bev);
	bufferevent_free(c->bev);
	free(c);
}

void upstream_drain_idle(struct upstream *up)
{
	for (size_t i = 0; i < up->nbuckets; i++)
		for (struct up_pool *p = up->buckets[i]; p != NULL; p = p->next)
			while (!TAILQ_EMPTY(&p->idle))
				up_conn_close(TAILQ_FIRST(&p->idle));
}

void upstream_free(struct upstream *up)
{
	if (up == NULL)
		return;
	upstream_drain_idle(up);
	for (size_t i = 0; i < up->nbuckets; i++) {
		struct up_pool *p = up->buckets[i], *next;

		for (; p != NULL; p = next) {
			next = p->next;
			free(p->origin);
			free(p->host);
			free(p);
		}
	}
	free(up->buckets);
	if (up->dns != NULL)
		evdns_base_free(up->dns, 0);
	free(up);
}

static size_t hash_str(const char *s)
{
	size_t h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

/* Is the origin's certificate verified? Said once per origin when not. */
static void up_pool_tls(struct upstream *up, struct up_pool *p)
{
	p->verify = up->set.tls_verify;
	for (size_t i = 0; p->verify && i < up->set.tls_nno_verify; i++)
		if (strcmp(up->set.tls_no_verify[i], p->origin) == 0)
			p->verify = 0;
	if (!p->verify && up->set.tls_ctx != NULL)
		log_warn("upstream", "%s: TLS certificate and host name NOT verified (backend_tls %s): "
		    "for lab use only", p->origin, up->set.tls_verify ? "no_verify_origins" : "verify: false");
}

static struct up_pool *up_pool_get(struct upstream *up, struct url *u)
{
	struct up_pool *p;
	size_t b;
	char portstr[8];

	if (u->pool != NULL)
		return u->pool;
	b = hash_str(u->origin) % up->nbuckets;
	for (p = up->buckets[b]; p != NULL; p = p->next)
		if (strcmp(p->origin, u->origin) == 0)
			break;
	if (p == NULL) {
		p = calloc(1, sizeof(*p));
		if (p == NULL)
			return NULL;
		p->up = up;
		p->origin = strdup(u->origin);
		p->host = strdup(u->host);
		if (p->origin == NULL || p->host == NULL) {
			free(p->origin);
			free(p->host);
			free(p);
			return NULL;
		}
		p->port = u->port;
		p->tls = u->tls;
		if (p->tls)
			up_pool_tls(up, p);
		TAILQ_INIT(&p->idle);
		snprintf(portstr, sizeof(portstr), "%u", (unsigned)u->port);
		/* A literal address needs no resolver: keep the sockaddr. */
		p->salen = sizeof(p->sa);
		{
			char buf[300];

			if (strchr(u->host, ':') != NULL)
				snprintf(buf, sizeof(buf), "[%s]:%s", u->host, portstr);
			else
				snprintf(buf, sizeof(buf), "%s:%s", u->host, portstr);
			if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)&p->sa, &p->salen) != 0)
				p->salen = 0;
		}
		p->next = up->buckets[b];
		up->buckets[b] = p;
	}
	u->pool = p;
	return p;
}

/* Called after a handler callback: honours a close requested inside it. */
static int up_after_cb(struct up_conn *c)
{
	c->in_cb--;
	if (c->dead && c->in_cb == 0) {
		up_conn_close(c);
		return -1;
	}
	return 0;
}

static void up_fail(struct up_conn *c, enum up_error err)
{
	struct up_exchange *ex = c->ex;

	c->ex = NULL;
	if (ex != NULL)
		ex->conn = NULL;
	up_conn_close(c);
	if (ex != NULL)
		ex->h->error(ex->arg, err, ex->got_head);
}

static void up_send(struct up_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct timeval tv;
	struct up_exchange *ex = c->ex;

	/* With writing disabled, adding the request does not arm a write event:
	 * a plain socket gets it in one write right here, and a write event is
	 * armed only for what the kernel would not take. */
	bufferevent_disable(c->bev, EV_WRITE);
	evbuffer_add_buffer_reference(out, ex->head);
	if (ex->body != NULL && evbuffer_get_length(ex->body) > 0)
		evbuffer_add_buffer_reference(out, ex->body);
	if (!c->pool->tls)
		evbuffer_write(out, bufferevent_getfd(c->bev));
	ms_to_tv(ex->timeout_ms, &tv);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	c->state = US_HEAD;
	c->got_bytes = 0;
	c->keepalive = 1;
	bufferevent_enable(c->bev, evbuffer_get_length(out) > 0 ? EV_READ | EV_WRITE : EV_READ);
}

/* A reused connection died before any byte of the response: the request may
 * never have reached the backend, so an idempotent one is sent once more on a
 * fresh connection. */
static int up_maybe_retry(struct up_conn *c)
{
	struct up_exchange *ex = c->ex;

	if (ex == NULL || !c->reused || c->got_bytes || !ex->idempotent || ex->retried)
		return 0;
	struct up_pool *pool = c->pool;

	ex->retried = 1;
	c->ex = NULL;
	ex->conn = NULL;
	up_conn_close(c);
	log_debug("upstream", "stale pooled connection to %s, retrying once", pool->origin);
	if (up_connect(pool, ex) != 0)
		ex->h->error(ex->arg, UP_ECONNECT, 0);
	return 1;
}

static void up_to_idle(struct up_conn *c)
{
	struct up_pool *pool = c->pool;
	struct timeval tv;

	if (!c->keepalive || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
	    pool->nidle >= pool->up->set.pool_max_idle) {
		up_conn_close(c);
		return;
	}
	c->state = US_IDLE;
	c->reused = 1;
	/* Reading stays on so that a backend closing the idle connection is seen
	 * at once; the read timeout is the pool's idle lifetime. */
	ms_to_tv(pool->up->set.pool_idle_timeout_ms, &tv);
	bufferevent_set_timeouts(c->bev, &tv, NULL);
	bufferevent_enable(c->bev, EV_READ);
	/* Most recently used first: it is the most likely to be alive, and the
	 * cold end ages out by the idle timeout. */
	TAILQ_INSERT_HEAD(&pool->idle, c, link);
	pool->nidle++;
}

static void up_finish(struct up_conn *c)
{
	struct up_exchange *ex = c->ex;

	c->ex = NULL;
	ex->conn = NULL;
	up_to_idle(c);
	ex->h->done(ex->arg);
}

static int header_has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *p = value;

	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *start = p;

		while (*p && *p != ',')
			p++;
		const char *end = p;

		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0)
			return 1;
	}
	return 0;
}

/* Parse "HTTP/1.x NNN reason". Returns the status or -1. */
static int parse_status_line(const char *p, size_t len, int *minor)
{
	int status;

	if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
	    p[8] != ' ')
		return -1;
	*minor = p[7] - '0';
	if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
		return -1;
	if (len > 12 && p[12] != ' ')
		return -1;
	status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	return status;
}

static int parse_content_length(const char *v, int64_t *out)
{
	int64_t n = 0;

	while (*v == ' ' || *v == '\t')
		v++;
	if (*v < '0' || *v > '9')
		return -1;
	for (; *v >= '0' && *v <= '9'; v++) {
		if (n > (INT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (*v - '0');
	}
	while (*v == ' ' || *v == '\t')
		v++;
	if (*v != '\0')
		return -1;
	*out = n;
	return 0;
}

/* chunk-size [ chunk-ext ] (RFC 9112 7.1): hex digits only, then extensions,
 * ignored, after a ';' that whitespace may precede. strtoull would take a
 * sign, "0x" and leading spaces, which another parser of the same bytes
 * may not. Returns -1 when malformed or beyond int64_t. */
static int parse_chunk_size(const char *p, size_t len, int64_t *out)
{
	const char *start = p, *end = p + len;
	int64_t n = 0;

	for (; p < end; p++) {
		int lc = *p | 0x20;
		int d = *p >= '0' && *p <= '9' ? *p - '0' : lc >= 'a' && lc <= 'f' ? lc - 'a' + 10 : -1;

		if (d < 0)
			break;
		if (n > INT64_MAX >> 4)
			return -1;
		n = n * 16 + d;
	}
	if (p == start)
		return -1;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p < end && *p != ';')
		return -1;
	*out = n;
	return 0;
}

/* Find the end of a response head in p[0..len): the offset just past the empty
 * line, or 0 when it has not arrived yet. Bare LF line ends are accepted. */
static size_t find_head_end(const char *p, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n')
			return i + 2;
		if (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Parse one complete head. Returns the status, 0 for an interim response that
 * was skipped, -1 on a protocol error. */
static int up_parse_head(struct up_conn *c, char *p, size_t len, int64_t *clen)
{
	struct up_exchange *ex = c->ex;
	char *line, *end = p + len, *eol;
	int status, minor, have_te = 0, have_cl = 0;

	/* The head is read as C strings: a NUL would cut a value short. */
	if (memchr(p, '\0', len) != NULL)
		return -1;
	eol = memchr(p, '\n', len);
	if (eol == NULL)
		return -1;
	status = parse_status_line(p, (size_t)(eol - p) - (eol > p && eol[-1] == '\r'), &minor);
	if (status < 0)
		return -1;
	if (status >= 100 && status < 200) {
		/* 101 would switch protocols: the gateway strips Upgrade, so a
		 * backend switching anyway is broken. Other 1xx are interim. */
		return status == 101 ? -1 : 0;
	}
	*clen = -1;
	c->keepalive = minor == 1;
	for (line = eol + 1; line < end; line = eol + 1) {
		char *colon, *v, *ve;

		eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			return -1;
		ve = eol;
		if (ve > line && ve[-1] == '\r')
			ve--;
		if (ve == line)
			break;			/* the empty line */
		if (*line == ' ' || *line == '\t')
			return -1;		/* obsolete line folding */
		colon = memchr(line, ':', (size_t)(ve - line));
		if (colon == NULL || colon == line)
			return -1;
		for (char *q = line; q < colon; q++)
			if (*q == ' ' || *q == '\t')
				return -1;	/* whitespace before the colon */
		*colon = '\0';
		v = colon + 1;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		*ve = '\0';
		if (strcasecmp(line, "Content-Length") == 0) {
			int64_t n;

			if (parse_content_length(v, &n) != 0 || (have_cl && n != *clen))
				return -1;
			have_cl = 1;
			*clen = n;
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			/* The body is passed on re-chunked with no coding named:
			 * any coding but chunked alone would be lost. Several
			 * headers make a list. */
			if (have_te || strcasecmp(v, "chunked") != 0)
				return -1;
			have_te = 1;
		} else if (strcasecmp(line, "Connection") == 0) {
			if (header_has_token(v, "close"))
				c->keepalive = 0;
			else if (minor == 0 && header_has_token(v, "keep-alive"))
				c->keepalive = 1;
		}
		if (evhttp_add_header(ex->resp_headers, line, v) != 0)
			return -1;
	}
	if (ex->head_only || status == 204 || status == 304) {
		c->state = US_DONE;	/* no body: complete after the head */
	} else if (have_te) {
		c->state = US_CHUNK_SIZE;
		*clen = -1;		/* Transfer-Encoding overrides Content-Length */
		evhttp_remove_header(ex->resp_headers, "Content-Length");
	} else if (have_cl) {
		c->state = US_BODY_LEN;
		c->remaining = *clen;
	} else {
		c->state = US_BODY_EOF;
		c->keepalive = 0;
	}
	return status;
}

/* Pass up to n body bytes to the handler. Returns -1 when the connection or
 * the exchange went away inside the callback, 1 when paused, 0 otherwise. */
static int up_deliver(struct up_conn *c, struct evbuffer *in, size_t n)
{
	struct up_exchange *ex = c->ex;
	int pause;

	if (n == 0)
		return 0;
	c->in_cb++;
	pause = ex->h->body(ex->arg, in, n);
	if (up_after_cb(c) != 0 || c->ex != ex)
		return -1;
	if (pause) {
		bufferevent_disable(c->bev, EV_READ);
		return 1;
	}
	return 0;
}

/* Read a CRLF-terminated line of at most 'max' bytes. Returns its length
 * (without the line end) and drains it, 0 with *incomplete set when more data
 * is needed, -1 when it is too long. */
static ssize_t up_take_line(struct evbuffer *in, char *buf, size_t max, int *incomplete)
{
	struct evbuffer_ptr pos = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
	size_t len;

	*incomplete = 0;
	if (pos.pos < 0) {
		if (evbuffer_get_length(in) > max)
			return -1;
		*incomplete = 1;
		return 0;
	}
	len = (size_t)pos.pos;
	if (len > max)
		return -1;
	evbuffer_remove(in, buf, len + 1);
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return (ssize_t)len;
}

static void up_process(struct up_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct up_exchange *ex = c->ex;
	char line[256];
	int incomplete, r;
	ssize_t len;

	for (;;) {
		size_t avail = evbuffer_get_length(in);

		switch (c->state) {
		case US_CONNECTING:
		case US_IDLE:
		case US_DONE:
			return;
		case US_HEAD: {
			size_t max = c->pool->up->set.max_response_head;
			size_t want = avail < max ? avail : max;
			struct evbuffer_iovec first;
			char *p = NULL;
			size_t end = 0;
			int64_t clen;
			int status;

			if (avail == 0)
				return;
			/* The head nearly always lies in the first chain, next to the
			 * start of the body: parse it there. Pulling up 'want' bytes
			 * instead copied up to 64 KiB of body into a fresh chain on
			 * every response. */
			if (evbuffer_peek(in, -1, NULL, &first, 1) > 0) {
				p = first.iov_base;
				end = find_head_end(p, first.iov_len < want ? first.iov_len : want);
			}
			if (end == 0) {
				p = (char *)evbuffer_pullup(in, (ev_ssize_t)want);
				end = find_head_end(p, want);
			}
			if (end == 0) {
				if (avail >= max) {
					up_fail(c, UP_EPROTO);
					return;
				}
				return;
			}
			status = up_parse_head(c, p, end, &clen);
			evbuffer_drain(in, end);
			if (status < 0) {
				evhttp_clear_headers(ex->resp_headers);
				up_fail(c, UP_EPROTO);
				return;
			}
			if (status == 0)
				continue;	/* interim 1xx: the final head follows */
			ex->got_head = 1;
			{
				enum up_state next = c->state;

				c->in_cb++;
				ex->h->head(ex->arg, status, clen, next == US_DONE);
				if (up_after_cb(c) != 0 || c->ex != ex)
					return;
				if (next == US_DONE || (next == US_BODY_LEN && c->remaining == 0)) {
					up_finish(c);
					return;
				}
			}
			break;
		}
		case US_BODY_LEN: {
			size_t n = avail < (uint64_t)c->remaining ? avail : (size_t)c->remaining;

			if (n == 0)
				return;
			c->remaining -= (int64_t)n;
			r = up_deliver(c, in, n);
			if (r < 0)
				return;
			if (c->remaining == 0) {
				up_finish(c);
				return;
			}
			if (r > 0)
				return;
			break;
		}
		case US_CHUNK_SIZE:
			len = up_take_line(in, line, sizeof(line) - 1, &incomplete);
			if (incomplete)
				return;
			if (len < 0 || parse_chunk_size(line, (size_t)len, &c->remaining) != 0) {
				up_fail(c, UP_EPROTO);
				return;
			}
			c->state = c->remaining == 0 ? US_TRAILERS : US_CHUNK_DATA;
			break;
		case US_CHUNK_DATA: {
			size_t n = avail < (uint64_t)c->remaining ? avail : (size_t)c->remaining;

			if (n == 0)
				return;
			c->remaining -= (int64_t)n;
			if (c->remaining == 0)
				c->state = US_CHUNK_CRLF;
			r = up_deliver(c, in, n);
			if (r != 0)
				return;
			break;
		}
		case US_CHUNK_CRLF: {
			const char *p;

			if (avail == 0)
				return;
			p = (const char *)evbuffer_pullup(in, avail < 2 ? 1 : 2);
			if (p[0] == '\r' && avail < 2)
				return;
			if (p[0] == '\n') {
				evbuffer_drain(in, 1);
			} else if (p[0] == '\r' && p[1] == '\n') {
				evbuffer_drain(in, 2);
			} else {
				up_fail(c, UP_EPROTO);
				return;
			}
			c->state = US_CHUNK_SIZE;
			break;
		}
		case US_TRAILERS:
			/* Trailers are dropped: the client gets a plain chunked end. */
			len = up_take_line(in, line, sizeof(line) - 1, &incomplete);
			if (len < 0) {
				/* A long trailer line: drain it in pieces. */
				struct evbuffer_ptr pos = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);

				if (pos.pos < 0) {
					evbuffer_drain(in, avail);
					return;
				}
				evbuffer_drain(in, (size_t)pos.pos + 1);
				break;
			}
			if (incomplete)
				return;
			if (len == 0) {
				up_finish(c);
				return;
			}
			break;
		case US_BODY_EOF:
			r = up_deliver(c, in, avail);
			if (r != 0 || avail == 0)
				return;
			break;
		}
	}
}

static void up_read_into(struct evbuffer *in, evutil_socket_t fd);

/* libevent 2.1 reads at most 4 KiB per read event, so a 64 KiB body takes
 * sixteen turns of the loop. Take what the socket already holds in one go; an
 * end of file or an error is left for the bufferevent's next read to report. */
static void up_read_more(struct up_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evutil_socket_t fd = bufferevent_getfd(c->bev);

	/* A socket bufferevent keeps the end of its input frozen between its
	 * own reads. */
	evbuffer_unfreeze(in, 0);
	up_read_into(in, fd);
	evbuffer_freeze(in, 0);
}

static void up_read_into(struct evbuffer *in, evutil_socket_t fd)
{
	for (int i = 0; i < 4; i++) {
		struct evbuffer_iovec v[2];
		int nv = evbuffer_reserve_space(in, 65536, v, 2);
		size_t room = 0, left;
		ssize_t n;

		if (nv <= 0)
			return;
		for (int k = 0; k < nv; k++)
			room += v[k].iov_len;
		/* struct evbuffer_iovec has the layout of struct iovec. */
		n = readv(fd, (struct iovec *)v, nv);
		if (n <= 0) {
			evbuffer_commit_space(in, v, 0);
			return;
		}
		left = (size_t)n;
		for (int k = 0; k < nv; k++) {
			size_t take = left < v[k].iov_len ? left : v[k].iov_len;

			v[k].iov_len = take;
			left -= take;
		}
		evbuffer_commit_space(in, v, nv);
		if ((size_t)n < room)
			return;		/* the socket is empty */
	}
}

static void up_readcb(struct bufferevent *bev, void *arg)
{
	struct up_conn *c = arg;

	if (c->ex == NULL) {
		/* Bytes on an idle connection: the backend is confused; drop it. */
		up_conn_close(c);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		c->got_bytes = 1;
	if (!c->pool->tls)
		up_read_more(c);
	up_process(c);
}

/* The TCP connection to an https origin was made, the TLS one was not. The
 * reason is logged when it changes, not once per request. */
static void up_tls_failed(struct up_conn *c, short what, const char *known)
{
	struct up_pool *p = c->pool;
	char why[200];

	if (known != NULL)
		snprintf(why, sizeof(why), "%s", known);
	else if (what & BEV_EVENT_TIMEOUT)
		snprintf(why, sizeof(why), "handshake not completed within connect_timeout_ms (%ums)",
		    p->up->set.connect_timeout_ms);
	else if (tls_failure(c->bev, why, sizeof(why)) == NULL)
		snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	if (strcmp(p->tls_err, why) != 0) {
		log_warn("upstream", "backend %s: TLS handshake failed: %s", p->origin, why);
		snprintf(p->tls_err, sizeof(p->tls_err), "%s", why);
	} else {
		log_debug("upstream", "backend %s: TLS handshake failed: %s", p->origin, why);
	}
	up_fail(c, (what & BEV_EVENT_TIMEOUT) ? UP_ECONNTIMEOUT : UP_ETLS);
}

/* RFC 9112 9.8: a body delimited by the close is complete only when the TLS
 * close was authenticated (close_notify); otherwise it may have been cut
 * short by anyone on the path, and the client is told so by the abort. */
static void up_tls_truncated(struct up_conn *c)
{
	struct up_pool *p = c->pool;
	char why[200];

	if (tls_failure(c->bev, why, sizeof(why)) == NULL)
		snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	if (!p->dirty_logged)
		log_warn("upstream", "backend %s closed its TLS connection without close_notify (%s) "
		    "during a body delimited by the close: the response is treated as truncated; "
		    "the backend should send Content-Length or chunked bodies, or close_notify",
		    p->origin, why);
	else
		log_debug("upstream", "backend %s: close-delimited body ended without close_notify (%s)",
		    p->origin, why);
	p->dirty_logged = 1;
	up_fail(c, UP_ECLOSED);
}

static void up_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct up_conn *c = arg;

	if (what & BEV_EVENT_CONNECTED) {
		evutil_socket_t fd = bufferevent_getfd(bev);
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (c->pool->tls) {
			c->tls_open = 1;
			if (c->pool->tls_err[0] != '\0') {
				log_info("upstream", "backend %s: TLS handshake succeeds again", c->pool->origin);
				c->pool->tls_err[0] = '\0';
			}
		}
		up_send(c);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		c->tls_open = 0;
	if (c->ex == NULL) {
		/* An idle connection closed or timed out: normal pool ageing. */
		up_conn_close(c);
		return;
	}
	if (c->state == US_CONNECTING) {
		if (c->pool->tls && tls_wrote_bytes(bev)) {
			up_tls_failed(c, what, NULL);
			return;
		}
		if (what & BEV_EVENT_ERROR) {
			int dnserr = bufferevent_socket_get_dns_error(bev);

			log_debug("upstream", "connect to %s failed: %s", c->pool->origin,
			    dnserr ? evutil_gai_strerror(dnserr) :
			    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		}
		up_fail(c, (what & BEV_EVENT_TIMEOUT) ? UP_ECONNTIMEOUT : UP_ECONNECT);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		up_fail(c, UP_ETIMEOUT);
		return;
	}
	/* EOF or error while an exchange runs. */
	if (c->state == US_BODY_EOF && (what & BEV_EVENT_EOF)) {
		/* Deliver what is left, then the close ends the body. */
		up_process(c);
		if (c->ex != NULL && c->state == US_BODY_EOF) {
			c->keepalive = 0;
			up_finish(c);
		}
		return;
	}
	if (c->state == US_BODY_EOF && c->pool->tls && (what & BEV_EVENT_ERROR)) {
		up_process(c);
		if (c->ex != NULL && c->state == US_BODY_EOF)
			up_tls_truncated(c);
		return;
	}
	if (up_maybe_retry(c))
		return;
	/* With TLS 1.3 the client's side of the handshake ends before the
	 * server has checked it: a backend that wants a client certificate
	 * answers the first request with an alert. That is a TLS failure (and
	 * the group's next endpoint may do), not a broken response. */
	if (c->pool->tls && !c->reused && !c->got_bytes && (what & BEV_EVENT_ERROR)) {
		char why[200];

		if (tls_failure(bev, why, sizeof(why)) != NULL) {
			up_tls_failed(c, what, why);
			return;
		}
	}
	up_fail(c, UP_ECLOSED);
}

static int up_connect(struct up_pool *pool, struct up_exchange *ex)
{
	struct upstream *up = pool->up;
	struct up_conn *c;
	struct timeval tv;
	int rc;

	if (pool->tls && up->set.tls_ctx == NULL && up->set.tls_ctx_make != NULL)
		up->set.tls_ctx = up->set.tls_ctx_make(up->set.tls_ctx_arg);
	if (pool->tls && up->set.tls_ctx == NULL) {
		log_warn("upstream", "%s: no TLS context for https backends", pool->origin);
		return -1;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -1;
	c->pool = pool;
	if (pool->tls) {
		SSL *ssl = tls_client_ssl(up->set.tls_ctx, pool->host, pool->verify);

		/* On failure the SSL goes with it (CLOSE_ON_FREE). */
		c->bev = ssl == NULL ? NULL : bufferevent_openssl_socket_new(up->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	} else {
		c->bev = bufferevent_socket_new(up->base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (c->bev != NULL)
		bufferevent_set_max_single_write(c->bev, 1 << 20);
	if (c->bev == NULL) {
		free(c);
		return -1;
	}
	c->ex = ex;
	ex->conn = c;
	c->state = US_CONNECTING;
	bufferevent_setcb(c->bev, up_readcb, NULL, up_eventcb, c);
	ms_to_tv(up->set.connect_timeout_ms, &tv);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	/* Connect errors are reported through the event callback, on the next
	 * loop iteration, so the caller never sees a callback inside this call. */
	if (pool->salen > 0) {
		rc = bufferevent_socket_connect(c->bev, (struct sockaddr *)&pool->sa, pool->salen);
	} else {
		if (up->dns == NULL)
			up->dns = evdns_base_new(up->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
			    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		rc = bufferevent_socket_connect_hostname(c->bev, up->dns, AF_UNSPEC, pool->host,
		    pool->port);
	}
	if (rc != 0) {
		/* bufferevent_socket_connect fails synchronously for immediate errors
		 * (e.g. no route); report it like any other connect failure. */
		bufferevent_trigger_event(c->bev, BEV_EVENT_ERROR, BEV_TRIG_DEFER_CALLBACKS);
	}
	return 0;
}

int upstream_start(struct upstream *up, struct url *u, struct up_exchange *ex)
{
	struct up_pool *pool = up_pool_get(up, u);
	struct up_conn *c;

	if (pool == NULL)
		return -1;
	ex->retried = 0;
	ex->got_head = 0;
	ex->conn = NULL;
	c = TAILQ_FIRST(&pool->idle);
	if (c == NULL)
		return up_connect(pool, ex);
	TAILQ_REMOVE(&pool->idle, c, link);
	pool->nidle--;
	c->ex = ex;
	ex->conn = c;
	up_send(c);
	return 0;
}

void upstream_abort(struct up_exchange *ex)
{
	struct up_conn *c = ex->conn;

	if (c == NULL)
		return;
	c->ex = NULL;
	ex->conn = NULL;
	up_conn_close(c);
}

void upstream_resume(struct up_exchange *ex)
{
	struct up_conn *c = ex->conn;

	if (c == NULL)
		return;
	bufferevent_enable(c->bev, EV_READ);
	/* Bytes may already wait in the input buffer; no read event would come
	 * for them. */
	up_process(c);
}
