/*
 * petstore-backend: a small, fast petstore-like JSON backend for the demo, the
 * integration tests and the benchmark. libevent evhttp, one thread.
 *
 *   petstore-backend [-a ADDR] [-p PORT] [-q]
 *
 *   GET  /v2/pet/findByStatus?status=available[,pending,sold]
 *   GET  /v2/pet/{id}
 *   POST /v2/pet            (JSON object echoed back with an id)
 *   PUT  /v2/pet            (same)
 *   GET  /v2/health
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#define MAX_BODY	(1u << 20)

struct pet {
	long id;
	const char *name;
	const char *category;
	const char *status;
	char *json;		/* pre-rendered */
	size_t jsonlen;
};

static struct pet pets[] = {
	{ 1, "doggie", "Dogs", "available", NULL, 0 },
	{ 2, "kitty", "Cats", "available", NULL, 0 },
	{ 3, "nemo", "Fish", "pending", NULL, 0 },
	{ 4, "rex", "Dogs", "sold", NULL, 0 },
	{ 5, "tweety", "Birds", "available", NULL, 0 },
	{ 6, "garfield", "Cats", "sold", NULL, 0 },
	{ 7, "bubbles", "Fish", "available", NULL, 0 },
	{ 8, "rocky", "Dogs", "pending", NULL, 0 },
	{ 9, "polly", "Birds", "available", NULL, 0 },
	{ 10, "felix", "Cats", "available", NULL, 0 },
};
#define NPETS (sizeof(pets) / sizeof(pets[0]))

static int quiet;
/* -n: names this instance in an X-Backend header. */
static const char *backend_name;
static long next_id = 1000;

static void
pets_render(void)
{
	for (size_t i = 0; i < NPETS; i++) {
		struct pet *p = &pets[i];
		char buf[512];
		int n = snprintf(buf, sizeof(buf),
		    "{\"id\":%ld,\"category\":{\"id\":%zu,\"name\":\"%s\"},"
		    "\"name\":\"%s\",\"photoUrls\":[\"https://example.com/pets/%ld.jpg\"],"
		    "\"tags\":[{\"id\":%ld,\"name\":\"tag%ld\"}],\"status\":\"%s\"}",
		    p->id, i % 4 + 1, p->category, p->name, p->id, p->id, p->id, p->status);
		if (n < 0 || (size_t)n >= sizeof(buf))
			abort();
		p->json = strdup(buf);
		if (p->json == NULL)
			abort();
		p->jsonlen = (size_t)n;
	}
}

static void
log_req(struct evhttp_request *req, int code, size_t bytes)
{
	if (quiet)
		return;
	const char *m;
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET: m = "GET"; break;
	case EVHTTP_REQ_HEAD: m = "HEAD"; break;
	case EVHTTP_REQ_POST: m = "POST"; break;
	case EVHTTP_REQ_PUT: m = "PUT"; break;
	case EVHTTP_REQ_DELETE: m = "DELETE"; break;
	case EVHTTP_REQ_PATCH: m = "PATCH"; break;
	case EVHTTP_REQ_OPTIONS: m = "OPTIONS"; break;
	case EVHTTP_REQ_TRACE: m = "TRACE"; break;
	default: m = "OTHER"; break;
	}
	char *peer = NULL;
	ev_uint16_t port = 0;
	struct evhttp_connection *c = evhttp_request_get_connection(req);
	if (c != NULL)
		evhttp_connection_get_peer(c, &peer, &port);
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(stderr, "%s %s:%u \"%s %s\" %d %zu\n", ts, peer ? peer : "-",
	    (unsigned)port, m, evhttp_request_get_uri(req), code, bytes);
}

/* Send 'body' (ownership of the evbuffer stays with the caller). */
static void
reply(struct evhttp_request *req, int code, const char *reason, struct evbuffer *body)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	char len[32];
	size_t n = evbuffer_get_length(body);
	snprintf(len, sizeof(len), "%zu", n);
	evhttp_add_header(oh, "Content-Type", "application/json");
	evhttp_add_header(oh, "Content-Length", len);
	if (backend_name != NULL)
		evhttp_add_header(oh, "X-Backend", backend_name);
	log_req(req, code, n);
	evhttp_send_reply(req, code, reason, body);
}

static void
reply_str(struct evhttp_request *req, int code, const char *reason, const char *json)
{
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add_reference(b, json, strlen(json), NULL, NULL);
	reply(req, code, reason, b);
	evbuffer_free(b);
}

static void
reply_error(struct evhttp_request *req, int code, const char *reason, int ecode,
    const char *message)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "{\"code\":%d,\"type\":\"error\",\"message\":\"%s\"}",
	    ecode, message);
	reply_str(req, code, reason, buf);
}

/* ---- a minimal JSON validator: accepts one JSON value, reports whether it
 * is an object and whether that object has a top-level "id" member ---- */
struct jscan {
	const char *p, *end;
	int depth;
};

static void
js_ws(struct jscan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* On success *keyid is set when the string is exactly "id". */
static int
js_string(struct jscan *s, int *isid)
{
	const char *start;
	if (s->p >= s->end || *s->p != '"')
		return -1;
	start = ++s->p;
	while (s->p < s->end && *s->p != '"') {
		unsigned char c = (unsigned char)*s->p;
		if (c < 0x20)
			return -1;
		if (c == '\\') {
			s->p++;
			if (s->p >= s->end)
				return -1;
			if (*s->p == 'u') {
				for (int i = 0; i < 4; i++) {
					s->p++;
					if (s->p >= s->end || !isxdigit((unsigned char)*s->p))
						return -1;
				}
			} else if (strchr("\"\\/bfnrt", *s->p) == NULL) {
				return -1;
			}
		}
		s->p++;
	}
	if (s->p >= s->end)
		return -1;
	if (isid != NULL)
		*isid = (s->p - start == 2 && start[0] == 'i' && start[1] == 'd');
	s->p++;
	return 0;
}

static int js_value(struct jscan *s, int *hasid);

static int
js_number(struct jscan *s)
{
	const char *st = s->p;
	if (s->p < s->end && *s->p == '-')
		s->p++;
	if (s->p >= s->end || !isdigit((unsigned char)*s->p))
		return -1;
	while (s->p < s->end && (isdigit((unsigned char)*s->p) || strchr(".eE+-", *s->p) != NULL))
		s->p++;
	return s->p > st ? 0 : -1;
}

static int
js_lit(struct jscan *s, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return -1;
	s->p += n;
	return 0;
}

static int
js_value(struct jscan *s, int *hasid)
{
	js_ws(s);
	if (s->p >= s->end)
		return -1;
	if (++s->depth > 64)
		return -1;
	int rc = 0;
	switch (*s->p) {
	case '{':
		s->p++;
		js_ws(s);
		rc = 1;
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			break;
		}
		for (;;) {
			int isid = 0;
			js_ws(s);
			if (js_string(s, &isid) < 0)
				return -1;
			if (isid && hasid != NULL)
				*hasid = 1;
			js_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return -1;
			s->p++;
			if (js_value(s, NULL) < 0)
				return -1;
			js_ws(s);
			if (s->p < s->end && *s->p == ',') {
				s->p++;
				continue;
			}
			if (s->p < s->end && *s->p == '}') {
				s->p++;
				break;
			}
			return -1;
		}
		break;
	case '[':
		s->p++;
		js_ws(s);
		if (s->p < s->end && *s->p == ']') {
			s->p++;
			break;
		}
		for (;;) {
			if (js_value(s, NULL) < 0)
				return -1;
			js_ws(s);
			if (s->p < s->end && *s->p == ',') {
				s->p++;
				continue;
			}
			if (s->p < s->end && *s->p == ']') {
				s->p++;
				break;
			}
			return -1;
		}
		break;
	case '"':
		if (js_string(s, NULL) < 0)
			return -1;
		break;
	case 't': if (js_lit(s, "true") < 0) return -1; break;
	case 'f': if (js_lit(s, "false") < 0) return -1; break;
	case 'n': if (js_lit(s, "null") < 0) return -1; break;
	default:
		if (js_number(s) < 0)
			return -1;
		break;
	}
	s->depth--;
	return rc;
}

/* ---- handlers ---- */
static void
find_by_status(struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	const char *status = NULL;

	q.tqh_first = NULL;
	q.tqh_last = &q.tqh_first;
	if (query != NULL && evhttp_parse_query_str(query, &q) == 0)
		status = evhttp_find_header(&q, "status");
	if (status == NULL || *status == '\0') {
		evhttp_clear_headers(&q);
		reply_error(req, 400, "Bad Request", 400, "Invalid status value");
		return;
	}
	/* status may be a comma separated list */
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_clear_headers(&q);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add(b, "[", 1);
	int first = 1;
	for (size_t i = 0; i < NPETS; i++) {
		const char *s = status;
		size_t plen = strlen(pets[i].status);
		int match = 0;
		while (*s != '\0') {
			const char *e = strchr(s, ',');
			size_t n = e ? (size_t)(e - s) : strlen(s);
			if (n == plen && strncmp(s, pets[i].status, n) == 0)
				match = 1;
			s += n;
			if (*s == ',')
				s++;
		}
		if (!match)
			continue;
		if (!first)
			evbuffer_add(b, ",", 1);
		first = 0;
		evbuffer_add_reference(b, pets[i].json, pets[i].jsonlen, NULL, NULL);
	}
	evbuffer_add(b, "]", 1);
	evhttp_clear_headers(&q);
	reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
get_pet(struct evhttp_request *req, const char *idstr)
{
	char *end;
	errno = 0;
	long id = strtol(idstr, &end, 10);
	if (*idstr == '\0' || *end != '\0' || errno != 0 || !isdigit((unsigned char)*idstr)) {
		reply_error(req, 400, "Bad Request", 400, "Invalid ID supplied");
		return;
	}
	for (size_t i = 0; i < NPETS; i++) {
		if (pets[i].id == id) {
			reply_str(req, 200, "OK", pets[i].json);
			return;
		}
	}
	reply_error(req, 404, "Not Found", 1, "Pet not found");
}

static void
post_pet(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	if (n == 0 || n > MAX_BODY) {
		reply_error(req, n ? 413 : 400, n ? "Payload Too Large" : "Bad Request", 400,
		    n ? "Body too large" : "Invalid input");
		return;
	}
	const char *body = (const char *)evbuffer_pullup(in, -1);
	struct jscan s = { body, body + n, 0 };
	int hasid = 0;
	int rc = js_value(&s, &hasid);
	js_ws(&s);
	if (rc != 1 || s.p != s.end) {
		reply_error(req, 400, "Bad Request", 400, "Invalid input");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	if (hasid) {
		evbuffer_add(b, body, n);
	} else {
		/* insert "id" as the first member */
		const char *brace = memchr(body, '{', n);
		size_t pre = (size_t)(brace - body) + 1;
		const char *rest = brace + 1;
		size_t restlen = n - pre;
		const char *q = rest;
		while (q < body + n && isspace((unsigned char)*q))
			q++;
		evbuffer_add(b, body, pre);
		evbuffer_add_printf(b, "\"id\":%ld%s", next_id++, *q == '}' ? "" : ",");
		evbuffer_add(b, rest, restlen);
	}
	reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
handle(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int is_get = (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD);

	if (path == NULL) {
		reply_error(req, 400, "Bad Request", 400, "Bad request");
		return;
	}
	if (strcmp(path, "/v2/health") == 0 || strcmp(path, "/health") == 0) {
		if (is_get)
			reply_str(req, 200, "OK", "{\"status\":\"UP\"}");
		else
			reply_error(req, 405, "Method Not Allowed", 405, "Method not allowed");
		return;
	}
	if (strcmp(path, "/v2/pet/findByStatus") == 0) {
		if (is_get)
			find_by_status(req);
		else
			reply_error(req, 405, "Method Not Allowed", 405, "Method not allowed");
		return;
	}
	if (strcmp(path, "/v2/pet") == 0 || strcmp(path, "/v2/pet/") == 0) {
		if (cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT)
			post_pet(req);
		else
			reply_error(req, 405, "Method Not Allowed", 405, "Method not allowed");
		return;
	}
	if (strncmp(path, "/v2/pet/", 8) == 0 && strchr(path + 8, '/') == NULL) {
		if (is_get)
			get_pet(req, path + 8);
		else
			reply_error(req, 405, "Method Not Allowed", 405, "Method not allowed");
		return;
	}
	reply_error(req, 404, "Not Found", 404, "Not found");
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct event_base *base = arg;
	if (!quiet)
		fprintf(stderr, "petstore-backend: signal %d, exiting\n", (int)sig);
	event_base_loopexit(base, NULL);
}

static void
usage(FILE *f)
{
	fprintf(f, "usage: petstore-backend [-a ADDR] [-p PORT] [-n NAME] [-q]\n"
	    "  -n NAME  add 'X-Backend: NAME' to every response (tells instances apart)\n");
}

int
main(int argc, char **argv)
{
	const char *addr = "127.0.0.1";
	long port = 8081;
	int c;

	while ((c = getopt(argc, argv, "a:p:n:qh")) != -1) {
		switch (c) {
		case 'n':
			backend_name = optarg;
			break;
		case 'a':
			addr = optarg;
			break;
		case 'p': {
			char *end;
			errno = 0;
			port = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535) {
				fprintf(stderr, "petstore-backend: bad port '%s'\n", optarg);
				return 2;
			}
			break;
		}
		case 'q':
			quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	pets_render();

	struct event_base *base = event_base_new();
	if (base == NULL) {
		fprintf(stderr, "petstore-backend: event_base_new failed\n");
		return 1;
	}
	struct evhttp *http = evhttp_new(base);
	if (http == NULL) {
		fprintf(stderr, "petstore-backend: evhttp_new failed\n");
		return 1;
	}
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_body_size(http, MAX_BODY);
	evhttp_set_timeout(http, 60);
	evhttp_set_gencb(http, handle, NULL);
	if (evhttp_bind_socket(http, addr, (ev_uint16_t)port) != 0) {
		fprintf(stderr, "petstore-backend: cannot listen on %s:%ld: %s\n", addr, port,
		    strerror(errno));
		return 1;
	}
	struct event *sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	struct event *sigint = evsignal_new(base, SIGINT, on_signal, base);
	if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0 ||
	    evsignal_add(sigint, NULL) != 0) {
		fprintf(stderr, "petstore-backend: cannot install signal handlers\n");
		return 1;
	}
	if (!quiet)
		fprintf(stderr, "petstore-backend: listening on %s:%ld\n", addr, port);

	event_base_dispatch(base);

	event_free(sigterm);
	event_free(sigint);
	evhttp_free(http);
	event_base_free(base);
	for (size_t i = 0; i < NPETS; i++)
		free(pets[i].json);
	return 0;
}
