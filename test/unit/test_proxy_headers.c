/* Header filtering and the upstream request head. */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "endpoint.h"
#include "proxy.h"
#include "tap.h"

static char *head_of(struct proxy_fwd *f, struct evkeyvalq *in)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	proxy_build_head(b, f, in);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static int has_line(const char *head, const char *line)
{
	char want[512];

	snprintf(want, sizeof(want), "\r\n%s\r\n", line);
	return strstr(head, want) != NULL;
}

static int has_name(const char *head, const char *name)
{
	char want[128];

	snprintf(want, sizeof(want), "\r\n%s:", name);
	return strcasestr(head, want) != NULL;
}

static void test_hop(void)
{
	ok(proxy_hop_header("Connection", NULL), "Connection is hop-by-hop");
	ok(proxy_hop_header("keep-alive", NULL), "Keep-Alive, any case");
	ok(proxy_hop_header("TE", NULL), "TE");
	ok(proxy_hop_header("Trailer", NULL), "Trailer");
	ok(proxy_hop_header("transfer-encoding", NULL), "Transfer-Encoding");
	ok(proxy_hop_header("Upgrade", NULL), "Upgrade");
	ok(proxy_hop_header("Proxy-Authorization", NULL), "Proxy-Authorization");
	ok(proxy_hop_header("Proxy-Whatever", NULL), "every Proxy-* header");
	ok(!proxy_hop_header("Content-Type", NULL), "Content-Type is end-to-end");
	ok(!proxy_hop_header("X-Foo", NULL), "X-Foo is end-to-end by itself");
	ok(proxy_hop_header("X-Foo", "close, X-Foo"), "X-Foo named by Connection");
	ok(proxy_hop_header("x-foo", " X-FOO ,x-bar"), "Connection tokens: case and spaces");
	ok(!proxy_hop_header("X-Foobar", "X-Foo"), "no prefix match on tokens");
	ok(!proxy_hop_header("X-Fo", "X-Foo"), "no partial token match");
}

static void test_head(void)
{
	const char *err;
	struct url *u = url_parse("http://10.0.0.7:8080/v2", &err);
	struct url *u80 = url_parse("http://backend.example/v2", &err);
	struct evkeyvalq in;
	char *h;

	TAILQ_INIT(&in);
	evhttp_add_header(&in, "Host", "gw.example:9090");
	evhttp_add_header(&in, "User-Agent", "t/1");
	evhttp_add_header(&in, "Connection", "keep-alive, X-Secret");
	evhttp_add_header(&in, "X-Secret", "drop me");
	evhttp_add_header(&in, "Keep-Alive", "timeout=5");
	evhttp_add_header(&in, "TE", "trailers");
	evhttp_add_header(&in, "Transfer-Encoding", "chunked");
	evhttp_add_header(&in, "Content-Length", "999");
	evhttp_add_header(&in, "Expect", "100-continue");
	evhttp_add_header(&in, "Upgrade", "h2c");
	evhttp_add_header(&in, "Proxy-Authorization", "Basic x");
	evhttp_add_header(&in, "X-Forwarded-For", "192.0.2.1");
	evhttp_add_header(&in, "X-Forwarded-Proto", "https");
	evhttp_add_header(&in, "X-Forwarded-Host", "spoofed");
	evhttp_add_header(&in, "Accept", "application/json");
	evhttp_add_header(&in, "Cookie", "a=1");
	evhttp_add_header(&in, "Cookie", "b=2");

	struct proxy_fwd f = {
		.method = "PATCH", .target = "/v2/pet/1?x=%2F", .url = u,
		.client_addr = "127.0.0.1", .proto = "http", .body_len = 5,
	};
	h = head_of(&f, &in);
	ok(strncmp(h, "PATCH /v2/pet/1?x=%2F HTTP/1.1\r\n", 32) == 0, "request line keeps the target byte for byte");
	ok(has_line(h, "Host: 10.0.0.7:8080"), "Host is the backend authority");
	ok(!strstr(h, "gw.example:9090\r\nUser"), "client Host not forwarded as Host");
	ok(has_line(h, "User-Agent: t/1"), "end-to-end header kept");
	ok(has_line(h, "Accept: application/json"), "Accept kept");
	ok(has_line(h, "Cookie: a=1") && has_line(h, "Cookie: b=2"), "repeated headers kept in order");
	ok(!has_name(h, "Connection"), "Connection removed");
	ok(!has_name(h, "X-Secret"), "header named by Connection removed");
	ok(!has_name(h, "Keep-Alive"), "Keep-Alive removed");
	ok(!has_name(h, "TE"), "TE removed");
	ok(!has_name(h, "Transfer-Encoding"), "Transfer-Encoding removed");
	ok(!has_name(h, "Upgrade"), "Upgrade removed");
	ok(!has_name(h, "Proxy-Authorization"), "Proxy-* removed");
	ok(!has_name(h, "Expect"), "Expect removed");
	ok(has_line(h, "Content-Length: 5"), "Content-Length is the real body length");
	ok(!strstr(h, "999"), "client Content-Length not forwarded");
	ok(has_line(h, "X-Forwarded-For: 192.0.2.1, 127.0.0.1"), "X-Forwarded-For appended");
	ok(has_line(h, "X-Forwarded-Proto: http"), "X-Forwarded-Proto set by the gateway");
	ok(!strstr(h, "X-Forwarded-Proto: https"), "client X-Forwarded-Proto replaced");
	ok(has_line(h, "X-Forwarded-Host: gw.example:9090"), "X-Forwarded-Host is the client's Host");
	ok(!strstr(h, "spoofed"), "client X-Forwarded-Host replaced");
	ok(strlen(h) > 4 && strcmp(h + strlen(h) - 4, "\r\n\r\n") == 0, "head ends with an empty line");
	free(h);

	evhttp_clear_headers(&in);
	f.method = "GET";
	f.target = "/v2/";
	f.url = u80;
	f.body_len = -1;
	h = head_of(&f, &in);
	ok(has_line(h, "Host: backend.example"), "default port left out of Host");
	ok(!has_name(h, "Content-Length"), "no Content-Length without a body");
	ok(has_line(h, "X-Forwarded-For: 127.0.0.1"), "X-Forwarded-For created");
	ok(!has_name(h, "X-Forwarded-Host"), "no X-Forwarded-Host without a client Host");
	free(h);

	f.method = "POST";
	f.body_len = 0;
	h = head_of(&f, &in);
	ok(has_line(h, "Content-Length: 0"), "empty POST body framed with Content-Length: 0");
	free(h);
	url_unref(u);
	url_unref(u80);
}

static void test_response(void)
{
	struct evkeyvalq from;

	TAILQ_INIT(&from);
	evhttp_add_header(&from, "Content-Type", "application/json");
	evhttp_add_header(&from, "Content-Length", "12");
	evhttp_add_header(&from, "Connection", "X-Internal");
	evhttp_add_header(&from, "X-Internal", "1");
	evhttp_add_header(&from, "Keep-Alive", "timeout=5");
	evhttp_add_header(&from, "Transfer-Encoding", "chunked");
	evhttp_add_header(&from, "Trailer", "X-Sum");
	evhttp_add_header(&from, "Upgrade", "websocket");
	evhttp_add_header(&from, "Proxy-Authenticate", "Basic");
	evhttp_add_header(&from, "Set-Cookie", "a=1");
	evhttp_add_header(&from, "Set-Cookie", "b=2");
	proxy_filter_response_headers(&from, 200);

	is_str(evhttp_find_header(&from, "Content-Type"), "application/json", "Content-Type copied");
	is_str(evhttp_find_header(&from, "Content-Length"), "12", "Content-Length kept");
	ok(evhttp_find_header(&from, "Connection") == NULL, "Connection dropped");
	ok(evhttp_find_header(&from, "X-Internal") == NULL, "header named by Connection dropped");
	ok(evhttp_find_header(&from, "Keep-Alive") == NULL, "Keep-Alive dropped");
	ok(evhttp_find_header(&from, "Transfer-Encoding") == NULL, "Transfer-Encoding dropped");
	ok(evhttp_find_header(&from, "Trailer") == NULL, "Trailer dropped");
	ok(evhttp_find_header(&from, "Upgrade") == NULL, "Upgrade dropped");
	ok(evhttp_find_header(&from, "Proxy-Authenticate") == NULL, "Proxy-* dropped");
	{
		int n = 0;
		struct evkeyval *kv;

		TAILQ_FOREACH(kv, &from, next)
			n += strcmp(kv->key, "Set-Cookie") == 0;
		is_int(n, 2, "both Set-Cookie headers kept");
	}
	evhttp_clear_headers(&from);
	evhttp_add_header(&from, "Content-Length", "0");
	evhttp_add_header(&from, "X-Id", "7");
	proxy_filter_response_headers(&from, 204);
	ok(evhttp_find_header(&from, "Content-Length") == NULL, "no Content-Length on a 204");
	is_str(evhttp_find_header(&from, "X-Id"), "7", "other headers of a 204 kept");
	evhttp_clear_headers(&from);
}

int main(void)
{
	test_hop();
	test_head();
	test_response();
	return tap_done();
}
