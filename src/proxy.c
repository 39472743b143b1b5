/* proxy: one request's life.
 *
 * evhttp has read the whole request when proxy_handle() runs. The request is
 * routed, an endpoint of its group is picked, and the upstream room carries
 * the exchange; the response head and body are relayed to the client as they
 * arrive. A request's state (struct preq) ends in preq_finish() only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

#include "front.h"
#include "log.h"
#include "mono.h"
#include "openapi.h"
#include "proxy.h"
#include "router.h"
#include "tls.h"
#include "upstream.h"

/* A failed endpoint of a load_balance or failover group is skipped this long. */
#define ENDPOINT_SUSPEND_US	(5 * 1000000ULL)

struct proxy {
	struct evhttp *http;
	struct front *front;
	struct upstream *up;
	const struct router *rt;
	struct limits_conf lim;
	uint64_t next_rid;
	uint64_t *shared_rid;		/* --workers: one sequence for all of them */
	size_t inflight;
	int stopping;
};

struct preq {
	struct proxy *p;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	uint64_t rid;
	uint64_t start_us;
	int method;
	const char *method_name;
	struct ep_group *group;
	size_t start_idx;		/* first endpoint tried */
	size_t tries;			/* endpoints tried so far */
	struct endpoint *ep;
	struct url *url;		/* held for the whole exchange */
	char *target;			/* upstream path and query */
	size_t rem_off;			/* remainder after the base path, in path[] */
	const char *query;		/* raw query in the request URI, or NULL */
	struct up_exchange ex;
	struct evbuffer *chunk;
	int status;
	uint64_t bytes;
	int started;			/* response head sent to the client */
	int close_after;		/* close the client connection after the response */
	char path[];			/* normalized path, max_uri + 1 bytes */
};


/* Header names the gateway treats specially, told apart by length and first
 * letter before any string comparison: this runs for every header of every
 * request and response. */
enum hdr_kind { HK_OTHER = 0, HK_HOP, HK_HOST, HK_CONTENT_LENGTH, HK_EXPECT, HK_XFF, HK_XFPROTO, HK_XFHOST };

static enum hdr_kind hdr_kind(const char *k)
{
	size_t n = strlen(k);

	switch (n) {
	case 2:
		return strcasecmp(k, "TE") == 0 ? HK_HOP : HK_OTHER;
	case 4:
		return strcasecmp(k, "Host") == 0 ? HK_HOST : HK_OTHER;
	case 6:
		return strcasecmp(k, "Expect") == 0 ? HK_EXPECT : HK_OTHER;
	case 7:
		return strcasecmp(k, "Trailer") == 0 || strcasecmp(k, "Upgrade") == 0 ? HK_HOP : HK_OTHER;
	case 10:
		if (strcasecmp(k, "Connection") == 0 || strcasecmp(k, "Keep-Alive") == 0)
			return HK_HOP;
		break;
	case 14:
		if (strcasecmp(k, "Content-Length") == 0)
			return HK_CONTENT_LENGTH;
		break;
	case 15:
		if (strcasecmp(k, "X-Forwarded-For") == 0)
			return HK_XFF;
		break;
	case 16:
		if (strcasecmp(k, "X-Forwarded-Host") == 0)
			return HK_XFHOST;
		break;
	case 17:
		if (strcasecmp(k, "X-Forwarded-Proto") == 0)
			return HK_XFPROTO;
		if (strcasecmp(k, "Transfer-Encoding") == 0)
			return HK_HOP;
		break;
	}
	/* Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, ... */
	if (n > 6 && (k[0] == 'P' || k[0] == 'p') && strncasecmp(k, "Proxy-", 6) == 0)
		return HK_HOP;
	return HK_OTHER;
}

static int list_has_token(const char *list, const char *name)
{
	size_t nl = strlen(name);

	for (const char *p = list; *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *s = p;

		while (*p && *p != ',')
			p++;
		const char *e = p;

		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == nl && strncasecmp(s, name, nl) == 0)
			return 1;
	}
	return 0;
}

int proxy_hop_header(const char *name, const char *conn)
{
	return hdr_kind(name) == HK_HOP || (conn != NULL && list_has_token(conn, name));
}

/* Every Connection header's tokens, joined: a message may carry several. */
static char *connection_tokens(struct evkeyvalq *h)
{
	struct evkeyval *kv;
	size_t len = 0;
	char *s;

	TAILQ_FOREACH(kv, h, next)
		if (strcasecmp(kv->key, "Connection") == 0)
			len += strlen(kv->value) + 1;
	if (len == 0)
		return NULL;
	s = malloc(len + 1);
	if (s == NULL)
		return NULL;
	s[0] = '\0';
	TAILQ_FOREACH(kv, h, next) {
		if (strcasecmp(kv->key, "Connection") == 0) {
			strcat(s, kv->value);
			strcat(s, ",");
		}
	}
	return s;
}

static void add_str(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, s, strlen(s));
}

static void add_header(struct evbuffer *out, const char *k, const char *v)
{
	add_str(out, k);
	evbuffer_add(out, ": ", 2);
	add_str(out, v);
	evbuffer_add(out, "\r\n", 2);
}

int proxy_build_head(struct evbuffer *out, const struct proxy_fwd *f, struct evkeyvalq *in)
{
	struct evkeyval *kv;
	char *conn = connection_tokens(in);
	const char *xff = NULL, *host = NULL;

	add_str(out, f->method);
	evbuffer_add(out, " ", 1);
	add_str(out, f->target);
	evbuffer_add(out, " HTTP/1.1\r\n", 11);
	add_header(out, "Host", f->url->authority);
	TAILQ_FOREACH(kv, in, next) {
		switch (hdr_kind(kv->key)) {
		case HK_HOST:
			if (host == NULL)
				host = kv->value;
			continue;
		case HK_XFF:
			xff = kv->value;	/* the last one is the nearest hop */
			continue;
		case HK_OTHER:
			if (conn == NULL || !list_has_token(conn, kv->key))
				add_header(out, kv->key, kv->value);
			continue;
		default:
			/* Hop-by-hop; the gateway frames the body itself; Expect
			 * was answered by the front; X-Forwarded-Proto/Host
			 * describe this hop. */
			continue;
		}
	}
	add_str(out, "X-Forwarded-For: ");
	if (xff != NULL) {
		add_str(out, xff);
		evbuffer_add(out, ", ", 2);
	}
	add_str(out, f->client_addr);
	evbuffer_add(out, "\r\n", 2);
	add_header(out, "X-Forwarded-Proto", f->proto);
	if (host != NULL)
		add_header(out, "X-Forwarded-Host", host);
	if (f->body_len >= 0) {
		char num[24];

		snprintf(num, sizeof(num), "%lld", (long long)f->body_len);
		add_header(out, "Content-Length", num);
	}
	evbuffer_add(out, "\r\n", 2);
	free(conn);
	return 0;
}

void proxy_filter_response_headers(struct evkeyvalq *h, int status)
{
	struct evkeyval *kv, *next;
	char *conn = connection_tokens(h);

	for (kv = TAILQ_FIRST(h); kv != NULL; kv = next) {
		next = TAILQ_NEXT(kv, next);
		/* A 204 has no body, so no length either. */
		if (proxy_hop_header(kv->key, conn) ||
		    (status == 204 && strcasecmp(kv->key, "Content-Length") == 0)) {
			TAILQ_REMOVE(h, kv, next);
			free(kv->key);
			free(kv->value);
			free(kv);
		}
	}
	free(conn);
}

static const char *method_str(enum evhttp_cmd_type t, int *m)
{
	switch (t) {
	case EVHTTP_REQ_GET: *m = M_GET; return "GET";
	case EVHTTP_REQ_HEAD: *m = M_HEAD; return "HEAD";
	case EVHTTP_REQ_POST: *m = M_POST; return "POST";
	case EVHTTP_REQ_PUT: *m = M_PUT; return "PUT";
	case EVHTTP_REQ_DELETE: *m = M_DELETE; return "DELETE";
	case EVHTTP_REQ_PATCH: *m = M_PATCH; return "PATCH";
	case EVHTTP_REQ_OPTIONS: *m = M_OPTIONS; return "OPTIONS";
	case EVHTTP_REQ_TRACE: *m = M_TRACE; return "TRACE";
	case EVHTTP_REQ_CONNECT: *m = -1; return "CONNECT";
	}
	*m = -1;
	return "-";
}

static void preq_log(struct preq *r)
{
	char client[80];
	const char *addr = "-";
	ev_uint16_t port = 0;

	if (!log_access_enabled())
		return;
	if (r->evcon != NULL)
		evhttp_connection_get_peer(r->evcon, (char **)&addr, &port);
	snprintf(client, sizeof(client), "%s:%u", addr ? addr : "-", (unsigned)port);
	struct log_access_rec rec = {
		.client = client,
		.method = r->method_name,
		.target = evhttp_request_get_uri(r->req),
		.status = r->status,
		.bytes = r->bytes,
		.backend = r->url ? r->url->text : "-",
		.usec = mono_us() - r->start_us,
		.rid = r->rid,
	};
	log_access(&rec);
}

/* The single end of a request's state. 'reply' finishes the client response
 * (send_reply_end); without it evhttp or the caller has dealt with it. */
static void preq_free(struct preq *r)
{
	r->p->inflight--;
	if (r->url != NULL)
		url_unref(r->url);
	if (r->ex.head != NULL)
		evbuffer_free(r->ex.head);
	if (r->chunk != NULL)
		evbuffer_free(r->chunk);
	free(r->target);
	free(r);
}

static void preq_detach(struct preq *r)
{
	front_request_done(r->p->front, r->req);
}

static void preq_fault(struct preq *r, int status, int code, const char *message, const char *desc)
{
	struct evbuffer *b = evhttp_request_get_output_buffer(r->req);
	struct evkeyvalq *oh = evhttp_request_get_output_headers(r->req);
	char body[512];
	int n = front_fault_body(body, sizeof(body), code, message, desc);

	evhttp_add_header(oh, "Content-Type", "application/json");
	if (r->close_after)
		evhttp_add_header(oh, "Connection", "close");
	/* evhttp sends a body even after the head of a HEAD answer, where the
	 * client expects the next response. */
	if (r->method != M_HEAD)
		evbuffer_add(b, body, (size_t)n);
	r->status = status;
	r->bytes = r->method == M_HEAD ? 0 : (uint64_t)n;
	preq_detach(r);
	preq_log(r);
	evhttp_send_reply(r->req, status, NULL, NULL);
	preq_free(r);
}

static void preq_bad_gateway(struct preq *r, const char *desc)
{
	preq_fault(r, 502, 101503, "Runtime Error", desc);
}

/* The client connection went away (evhttp is freeing it). */
static void preq_client_closed(void *arg)
{
	struct preq *r = arg;

	log_debug("proxy", "rid=%llu client closed the connection", (unsigned long long)r->rid);
	upstream_abort(&r->ex);
	/* 499: the client left; 503: the gateway is stopping and drops it. */
	if (!r->started)
		r->status = r->p->stopping ? 503 : 499;
	preq_log(r);
	r->evcon = NULL;
	/* A request evhttp detached from its failing connection is ours to free;
	 * one still attached goes with the connection. */
	if (evhttp_request_get_connection(r->req) == NULL)
		evhttp_request_free(r->req);
	preq_free(r);
}

static void on_head(void *arg, int status, int64_t clen, int bodyless)
{
	struct preq *r = arg;
	struct evkeyvalq *oh = evhttp_request_get_output_headers(r->req);
	struct evkeyvalq *ih = evhttp_request_get_input_headers(r->req);

	if (r->ep->failing) {
		log_info("proxy", "endpoint %s answers again", r->url->text);
		r->ep->failing = 0;
	}
	proxy_filter_response_headers(oh, status);
	if (r->close_after)
		evhttp_add_header(oh, "Connection", "close");
	/* An HTTP/1.0 client cannot take chunks: without a length the body ends
	 * with the connection, so it must not stay open. */
	if (clen < 0 && !bodyless) {
		/* evhttp 2.1 has no accessor for the version: http_struct.h is
		 * its public layout. */
		if (r->req->major == 1 && r->req->minor == 0)
			evhttp_remove_header(ih, "Connection");
	}
	r->status = status;
	r->started = 1;
	evhttp_send_reply_start(r->req, status, NULL);
}

static void on_drained(struct evhttp_connection *evcon, void *arg)
{
	struct preq *r = arg;
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);

	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		upstream_resume(&r->ex);
}

static int on_body(void *arg, struct evbuffer *src, size_t n)
{
	struct preq *r = arg;
	struct bufferevent *bev;

	evbuffer_remove_buffer(src, r->chunk, n);
	r->bytes += n;
	evhttp_send_reply_chunk_with_cb(r->req, r->chunk, on_drained, r);
	/* Bytes the socket would not take yet pile up in evhttp's buffer: stop
	 * reading the backend until they are gone. */
	bev = evhttp_connection_get_bufferevent(r->evcon);
	return evbuffer_get_length(bufferevent_get_output(bev)) > 0;
}

static void on_done(void *arg)
{
	struct preq *r = arg;

	preq_detach(r);
	preq_log(r);
	evhttp_send_reply_end(r->req);
	preq_free(r);
}

static int preq_try_next(struct preq *r);

/* X-Forwarded-Proto: how the client reached the gateway. */
static const char *preq_proto(const struct preq *r)
{
	struct bufferevent *bev = r->evcon ? evhttp_connection_get_bufferevent(r->evcon) : NULL;

	return bev != NULL && tls_is_tls(bev) ? "https" : "http";
}

static void on_error(void *arg, enum up_error err, int sent_head)
{
	struct preq *r = arg;
	uint64_t now = mono_us();

	if (sent_head) {
		/* Mid-body: the client must see a broken response, not a short one
		 * that looks complete. Closing its connection says so. */
		log_warn("proxy", "rid=%llu %s: %s after the response started", (unsigned long long)r->rid,
		    r->url->text, up_error_name(err));
		struct evhttp_connection *evcon = r->evcon;

		front_on_close(r->p->front, r->req, NULL, NULL);
		preq_log(r);
		preq_free(r);
		evhttp_connection_free(evcon);
		return;
	}
	/* A failed TLS handshake is a failed connection: nothing was sent. */
	if (err == UP_ECONNECT || err == UP_ECONNTIMEOUT || err == UP_ETLS) {
		/* Logged when the endpoint starts failing and when it answers
		 * again, not once per request. */
		if (!r->ep->failing)
			log_warn("proxy", "endpoint %s: %s%s", r->url->text, up_error_name(err),
			    r->group->neps > 1 ? "; the group's other endpoints are used meanwhile" : "");
		r->ep->failing = 1;
		if (r->group->neps > 1)
			r->ep->down_until = now + ENDPOINT_SUSPEND_US;
		log_debug("proxy", "rid=%llu %s: %s", (unsigned long long)r->rid, r->url->text,
		    up_error_name(err));
		if (r->tries < r->group->neps && preq_try_next(r) == 0)
			return;
		if (err == UP_ECONNTIMEOUT)
			preq_fault(r, 504, 101504, "Runtime Error", "Timeout connecting to the back end");
		else
			preq_bad_gateway(r, "Error connecting to the back end");
		return;
	}
	log_info("proxy", "rid=%llu %s%s: %s", (unsigned long long)r->rid, r->url->origin, r->target,
	    up_error_name(err));
	if (err == UP_ETIMEOUT)
		preq_fault(r, 504, 101504, "Runtime Error", "Timeout waiting for the back end");
	else
		preq_bad_gateway(r, "Invalid or broken response from the back end");
}

static const struct up_handler preq_handler = { on_head, on_body, on_done, on_error };

/* Start the exchange with the next endpoint of the group. Returns -1 when
 * every endpoint was tried. */
static int preq_try_next(struct preq *r)
{
	struct ep_group *g = r->group;
	uint64_t now = mono_us();
	size_t i, idx = 0, n = g->neps;

	/* Healthy endpoints first; when all left are suspended, the next in
	 * order is tried anyway rather than failing without trying. */
	for (i = r->tries; i < n; i++) {
		idx = (r->start_idx + i) % n;
		if (g->eps[idx].down_until <= now)
			break;
	}
	if (i == n) {
		if (r->tries >= n)
			return -1;
		i = r->tries;
		idx = (r->start_idx + i) % n;
	}
	r->tries = i + 1;	/* skipped endpoints count as tried */
	r->ep = &g->eps[idx];
	if (r->url != NULL)
		url_unref(r->url);
	r->url = url_ref(endpoint_url(r->ep));
	free(r->target);
	r->target = url_join(r->url, r->path + r->rem_off, strlen(r->path + r->rem_off), r->query);
	if (r->target == NULL)
		return -1;

	struct evbuffer *body = evhttp_request_get_input_buffer(r->req);
	size_t blen = evbuffer_get_length(body);
	struct evkeyvalq *ih = evhttp_request_get_input_headers(r->req);
	char *addr = NULL;
	ev_uint16_t port;
	int64_t clen = -1;

	if (blen > 0 || r->method == M_POST || r->method == M_PUT || r->method == M_PATCH ||
	    evhttp_find_header(ih, "Content-Length") != NULL ||
	    evhttp_find_header(ih, "Transfer-Encoding") != NULL)
		clen = (int64_t)blen;
	evhttp_connection_get_peer(r->evcon, &addr, &port);
	struct proxy_fwd fwd = {
		.method = r->method_name,
		.target = r->target,
		.url = r->url,
		.client_addr = addr ? addr : "unknown",
		.proto = preq_proto(r),
		.body_len = clen,
	};
	if (r->ex.head == NULL)
		r->ex.head = evbuffer_new();
	else
		evbuffer_drain(r->ex.head, evbuffer_get_length(r->ex.head));
	if (r->ex.head == NULL)
		return -1;
	proxy_build_head(r->ex.head, &fwd, ih);
	r->ex.body = blen > 0 ? body : NULL;
	r->ex.idempotent = r->method != M_POST && r->method != M_PATCH;
	r->ex.head_only = r->method == M_HEAD;
	r->ex.timeout_ms = g->timeout_ms;
	r->ex.resp_headers = evhttp_request_get_output_headers(r->req);
	r->ex.h = &preq_handler;
	r->ex.arg = r;
	log_debug("proxy", "rid=%llu %s %s -> %s%s", (unsigned long long)r->rid, r->method_name,
	    evhttp_request_get_uri(r->req), r->url->origin, r->target);
	return upstream_start(r->p->up, r->url, &r->ex);
}

static void allow_header(unsigned bits, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int m = 0; m < M__COUNT; m++) {
		if (!(bits & (1u << m)))
			continue;
		off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? ", " : "", method_name(m));
		if (off >= len)
			break;
	}
}

/* Size of the request head as received, near enough for the 431 limit (the
 * front guard counts exact bytes; this catches what it cannot see, such as a
 * pipelined head). */
static size_t head_size(struct evhttp_request *req)
{
	struct evkeyval *kv;
	size_t n = strlen(evhttp_request_get_uri(req)) + 16;

	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next)
		n += strlen(kv->key) + strlen(kv->value) + 4;
	return n;
}

/* Did the dot segments of the raw path climb above the base path of the API
 * it starts in, or of the API it lands in? 'kept' is how much of the
 * normalized path no ".." climbed back over. */
static int climbs_out(const struct router *rt, const char *raw, size_t rawlen, size_t kept)
{
	struct route from;
	size_t blen;

	router_match(rt, -1, raw, rawlen, &from);
	if (from.api == NULL)
		return kept == 0;	/* from no API back up to the root */
	blen = strlen(from.api->base_path);
	return kept < blen && !(blen == 1 && from.api->base_path[0] == '/');
}

static int is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* What evhttp lets through but a proxy must not pass on (RFC 9112): header
 * names that are not tokens ("Transfer-Encoding : chunked" would reach a
 * lenient backend as framing the gateway never saw), control bytes, a target
 * with spaces, a missing or doubled Host, and ambiguous body framing. Returns
 * NULL, or why the request is refused with *status (400 or 501; the
 * connection is closed after the answer). *close_after is set when the
 * request is served but the connection must not be reused: Transfer-Encoding
 * with Content-Length, as a peer may have framed the body by the other
 * header. */
static const char *request_check(struct evhttp_request *req, int *close_after, int *status)
{
	struct evkeyval *kv;
	const char *cl = NULL, *coding = NULL;
	int te = 0, hosts = 0;

	*status = 400;
	for (const unsigned char *u = (const unsigned char *)evhttp_request_get_uri(req); *u; u++)
		if (*u <= ' ' || *u == 0x7f)
			return "The request target contains spaces or control characters";
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next) {
		const unsigned char *p = (const unsigned char *)kv->key;

		if (*p == '\0')
			return "A request header has an empty name";
		for (; *p; p++)
			if (!is_tchar(*p))
				return "A request header name is not a valid token";
		for (p = (const unsigned char *)kv->value; *p; p++)
			if ((*p < ' ' && *p != '\t') || *p == 0x7f)
				return "A request header value contains control characters";
		switch (hdr_kind(kv->key)) {
		case HK_HOST:
			hosts++;
			break;
		case HK_CONTENT_LENGTH:
			if (kv->value[0] == '\0' || strspn(kv->value, "0123456789") != strlen(kv->value))
				return "The request has an invalid Content-Length";
			if (cl != NULL && strcmp(cl, kv->value) != 0)
				return "The request has conflicting Content-Length headers";
			cl = kv->value;
			break;
		case HK_HOP:
			if (strcasecmp(kv->key, "Transfer-Encoding") == 0) {
				te++;
				coding = kv->value;
			}
			break;
		default:
			break;
		}
	}
	if (hosts > 1 || (hosts == 0 && req->major == 1 && req->minor >= 1))
		return "An HTTP/1.1 request needs exactly one Host header";
	if (te > 0 && req->major == 1 && req->minor == 0)
		return "An HTTP/1.0 request cannot have a Transfer-Encoding";
	/* The front refuses other codings before evhttp reads the head, but
	 * never sees a pipelined one. evhttp's reading of the header varies
	 * with its version, and it reads no body for HEAD or TRACE: unless it
	 * read chunks, the bytes after the head may be a request, and the
	 * answer closes the connection before they are parsed. */
	if (te > 0 && (te > 1 || !front_te_chunked(coding, strlen(coding)) || !req->chunked ||
	    evhttp_request_get_command(req) == EVHTTP_REQ_HEAD ||
	    evhttp_request_get_command(req) == EVHTTP_REQ_TRACE)) {
		*status = 501;
		return "The request's Transfer-Encoding is not supported: only chunked is";
	}
	/* evhttp reads no body for some methods (HEAD; which others depends on
	 * its version): the bytes it left would be parsed as the next request,
	 * so the answer closes the connection before that can happen. */
	if (te == 0 && cl != NULL &&
	    strtoull(cl, NULL, 10) != evbuffer_get_length(evhttp_request_get_input_buffer(req)))
		return "The request's method cannot carry a body here";
	*close_after = te && cl != NULL;
	return NULL;
}

static void proxy_handle(struct evhttp_request *req, void *arg)
{
	struct proxy *p = arg;
	const char *uri = evhttp_request_get_uri(req);
	size_t ulen = strlen(uri);
	struct preq *r;
	struct route rt;
	const char *path = uri, *q, *why;
	size_t plen, kept;
	int nlen, status;

	/* Only the struct is cleared: zeroing the path buffer (max_uri bytes)
	 * was the largest single cost of a request. */
	r = malloc(sizeof(*r) + p->lim.max_uri + 1);
	if (r == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	memset(r, 0, sizeof(*r));
	p->inflight++;
	r->p = p;
	r->req = req;
	r->evcon = evhttp_request_get_connection(req);
	r->rid = p->shared_rid != NULL ? __atomic_add_fetch(p->shared_rid, 1, __ATOMIC_RELAXED) :
	    ++p->next_rid;
	r->start_us = mono_us();
	r->method_name = method_str(evhttp_request_get_command(req), &r->method);
	r->chunk = evbuffer_new();
	if (r->chunk == NULL) {
		preq_fault(r, 500, 101500, "Internal Error", "Out of memory");
		return;
	}
	if (ulen > p->lim.max_uri) {
		preq_fault(r, 414, 900414, "URI Too Long", "The request URI is longer than the gateway accepts");
		return;
	}
	if (head_size(req) > p->lim.max_header) {
		preq_fault(r, 431, 900431, "Request Header Fields Too Large",
		    "The request headers are larger than the gateway accepts");
		return;
	}
	if ((why = request_check(req, &r->close_after, &status)) != NULL) {
		r->close_after = 1;
		preq_fault(r, status, 900000 + status, status == 501 ? "Not Implemented" : "Bad Request", why);
		return;
	}
	/* Absolute-form targets (proxy style) carry the path after the authority;
	 * a target starting with "//" is a path, whatever evhttp made of it. */
	if (uri[0] != '/') {
		const char *s = strstr(uri, "://");

		path = s ? strchr(s + 3, '/') : NULL;
		if (path == NULL || strncasecmp(uri, "http", 4) != 0) {
			preq_fault(r, 400, 900400, "Bad Request", "The request target is not a path");
			return;
		}
	}
	q = strchr(path, '?');
	plen = q ? (size_t)(q - path) : strlen(path);
	r->query = q ? q + 1 : NULL;
	if (memchr(path, '#', plen) != NULL ||
	    (nlen = router_normalize_kept(path, plen, r->path, p->lim.max_uri + 1, &kept)) < 0) {
		preq_fault(r, 400, 900400, "Bad Request", "The request path is not valid");
		return;
	}
	if (kept != SIZE_MAX && climbs_out(p->rt, path, plen, kept)) {
		preq_fault(r, 400, 900400, "Bad Request", "The request path climbs above the API base path");
		return;
	}
	switch (router_match(p->rt, r->method, r->path, (size_t)nlen, &rt)) {
	case ROUTE_OK:
		break;
	case ROUTE_NOT_FOUND:
		preq_fault(r, 404, 900906, "No matching resource found for given API Request",
		    "The requested resource is not available.");
		return;
	case ROUTE_BAD_METHOD: {
		char allow[128];

		allow_header(rt.allow, allow, sizeof(allow));
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
		preq_fault(r, 405, 900906, "Method not allowed",
		    "The method is not allowed for the requested resource.");
		return;
	}
	case ROUTE_BAD_PATH:
		preq_fault(r, 400, 900400, "Bad Request", "The request path is not valid");
		return;
	}
	r->rem_off = (size_t)(rt.remainder - r->path);
	r->group = rt.res->prod[r->method];
	if (r->group == NULL && r->method == M_HEAD)
		r->group = rt.res->prod[M_GET];
	if (r->group == NULL || r->group->neps == 0) {
		preq_fault(r, 503, 101503, "Service Unavailable", "No production endpoint is available for this resource");
		return;
	}
	r->start_idx = r->group->type == GROUP_LOAD_BALANCE ? r->group->rr++ % r->group->neps : 0;
	front_on_close(p->front, req, preq_client_closed, r);
	while (preq_try_next(r) != 0) {
		if (r->tries >= r->group->neps) {
			preq_bad_gateway(r, "Error connecting to the back end");
			return;
		}
	}
}

struct proxy *proxy_new(struct evhttp *http, struct front *front, struct upstream *up,
    const struct router *rt, const struct limits_conf *lim)
{
	struct proxy *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->http = http;
	p->front = front;
	p->up = up;
	p->rt = rt;
	p->lim = *lim;
	evhttp_set_gencb(http, proxy_handle, p);
	return p;
}

void proxy_serve(struct proxy *p, struct evhttp *http)
{
	evhttp_set_gencb(http, proxy_handle, p);
}

void proxy_stopping(struct proxy *p)
{
	p->stopping = 1;
}

void proxy_share_rids(struct proxy *p, uint64_t *counter)
{
	p->shared_rid = counter;
}

size_t proxy_inflight(const struct proxy *p)
{
	return p->inflight;
}

void proxy_free(struct proxy *p)
{
	free(p);
}
