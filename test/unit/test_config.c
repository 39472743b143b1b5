/* Unit tests for the config room: the YAML loader, OpenAPI + x-wso2-* and the
 * gateway file. Runs with test/data as the working directory. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "endpoint.h"
#include "log.h"
#include "openapi.h"
#include "tap.h"

static struct cfg_errors errs;

static void show_errors(void)
{
	for (size_t i = 0; i < errs.n; i++)
		printf("#   error: %s\n", errs.msgs[i]);
}

/* Some error starts with 'prefix' ("file:line:col:") and contains 'word'. */
static int has_err(const char *prefix, const char *word)
{
	for (size_t i = 0; i < errs.n; i++)
		if (strncmp(errs.msgs[i], prefix, strlen(prefix)) == 0 && strstr(errs.msgs[i], word))
			return 1;
	show_errors();
	return 0;
}

static struct config *load_ok(const char *path)
{
	struct config *c;

	cfg_errors_clear(&errs);
	c = config_load(path, &errs);
	ok(c != NULL && errs.n == 0, "%s loads", path);
	if (!c)
		show_errors();
	return c;
}

static void load_bad(const char *path)
{
	struct config *c;

	cfg_errors_clear(&errs);
	c = config_load(path, &errs);
	ok(c == NULL && errs.n > 0, "%s is rejected", path);
	config_free(c);
}

static const struct api_resource *find_res(const struct api *a, const char *path)
{
	for (size_t i = 0; i < a->nres; i++)
		if (strcmp(a->res[i].path, path) == 0)
			return &a->res[i];
	return NULL;
}

static const char *spec0(const struct ep_group *g)
{
	return g && g->neps ? g->eps[0].spec : NULL;
}

static void test_yaml(void)
{
	struct cfg_doc *d;
	const char *json = "{\"a\": {\"b\": [1, \"two\", null]}, \"c\": true}";
	char *big;

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.json", json, strlen(json), &errs);
	ok(d != NULL, "JSON parses");
	if (d) {
		const struct cfg_node *b = cfg_map_get(cfg_map_get(d->root, "a"), "b");

		ok(b && b->type == CFG_SEQ && b->n == 3, "JSON list of 3");
		is_str(b && b->n == 3 ? b->items[1]->value : NULL, "two", "JSON string item");
		ok(b && b->n == 3 && !b->items[1]->plain && b->items[2]->plain, "plain flag");
		is_int(d->root->line, 1, "root line");
		is_int(b ? b->col : 0, 13, "1-based column of the list");
		ok(cfg_map_get(d->root, "zz") == NULL, "missing key is NULL");
		cfg_doc_free(d);
	}

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.yaml", "? [a, b]\n: 1\nok: 2\n", 18, &errs);
	ok(d == NULL && has_err("mem.yaml:1:3:", "must be a scalar"), "non-scalar key rejected");

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.yaml", "a: *nope\n", 9, &errs);
	ok(d == NULL && has_err("mem.yaml:1:4:", "*nope"), "undefined alias rejected");

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.yaml", "a: &x [1, *x]\n", 14, &errs);
	ok(d == NULL && has_err("mem.yaml:1:11:", "recursive"), "recursive alias rejected");

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.yaml", "k: &k v\n*k : 1\nb: *k\n", 20, &errs);
	ok(d != NULL && errs.n == 0, "alias of a scalar as key and value");
	if (d)
		is_str(cfg_map_get(d->root, "b") ? cfg_map_get(d->root, "b")->value : NULL, "v", "alias value");
	cfg_doc_free(d);

	{
		char buf[512];
		size_t n = 0;

		for (int i = 0; i < 20; i++)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "k%d: %d\n", i == 19 ? 3 : i, i);
		cfg_errors_clear(&errs);
		d = cfg_doc_parse("many.yaml", buf, n, &errs);
		ok(d == NULL && has_err("many.yaml:20:1:", "first at line 4, column 1"), "duplicate key in a large mapping");
	}

	cfg_errors_clear(&errs);
	d = cfg_doc_parse("mem.yaml", "", 0, &errs);
	ok(d == NULL && has_err("mem.yaml: ", "empty"), "empty document rejected");

	cfg_errors_clear(&errs);
	big = calloc(1, (size_t)CFG_MAX_FILE_BYTES + 2);
	memset(big, ' ', (size_t)CFG_MAX_FILE_BYTES + 1);
	d = cfg_doc_parse("big.yaml", big, (size_t)CFG_MAX_FILE_BYTES + 1, &errs);
	ok(d == NULL && has_err("big.yaml: ", "too large"), "oversized document rejected");
	free(big);

	cfg_errors_clear(&errs);
	cfg_error(&errs, "f.yaml", NULL, "plain %d", 1);
	is_str(errs.n ? errs.msgs[0] : NULL, "f.yaml: plain 1", "cfg_error without a node");
	cfg_errors_clear(&errs);
	{
		struct cfg_node at = { .line = 3, .col = 7 };

		cfg_error(&errs, "f.yaml", &at, "bad \x1b[31m%s", "x");
		is_str(errs.n ? errs.msgs[0] : NULL, "f.yaml:3:7: bad ?[31mx", "cfg_error with position, control bytes masked");
	}
	is_int(method_from_name("patch", 5), M_PATCH, "method_from_name is case-insensitive");
	is_int(method_from_name("get", 2), -1, "method_from_name checks the length");
	is_str(method_name(M_OPTIONS), "OPTIONS", "method_name");
}

static void test_good_openapi(void)
{
	const struct api_resource *r;
	struct config *c;
	struct api *a;

	c = load_ok("good/petstore-oa3.yaml");
	if (!c)
		return;
	is_int(c->napis, 1, "bare OpenAPI: one API");
	is_int(c->nlisteners, 1, "bare OpenAPI: default listener");
	is_str(c->listeners[0].address, "0.0.0.0", "default address");
	is_int(c->listeners[0].port, 9090, "default port");
	is_int(c->limits.max_body, 10485760, "default max_body");
	is_int(c->etcd.timer_ms, 10000, "default etcd timer");
	a = c->apis[0];
	is_str(a->base_path, "/petstore/v1", "base path normalized (trailing / dropped)");
	is_int(a->line, 6, "api line is x-wso2-basePath's");
	is_int(a->col, 18, "api col is x-wso2-basePath's");
	is_str(a->title, "Swagger Petstore", "title");
	is_str(a->version, "1.0.5", "version");
	is_int(a->nres, 3, "three resources (the one without operations contributes nothing)");
	is_str(spec0(a->prod), "http://127.0.0.1:8081/api", "API-level production endpoint");
	is_str(spec0(a->sandbox), "http://127.0.0.1:8090", "API-level sandbox via #/x-wso2-endpoints list form");
	is_str(a->sandbox ? a->sandbox->name : NULL, "sandbox", "named group keeps its name");

	r = find_res(a, "/pet");
	ok(r && r->methods == ((1u << M_POST) | (1u << M_PUT)), "/pet: POST and PUT");
	if (r) {
		is_int(r->line, 23, "resource line");
		is_int(r->col, 3, "resource col");
		ok(r->prod[M_POST] == a->prod, "POST /pet falls back to the API level");
		is_int(r->prod[M_PUT] ? (int)r->prod[M_PUT]->type : -1, GROUP_LOAD_BALANCE, "PUT /pet: referenced load_balance");
		is_int(r->prod[M_PUT] ? r->prod[M_PUT]->neps : 0, 2, "load_balance group has 2 endpoints");
		is_int(r->prod[M_PUT] ? r->prod[M_PUT]->timeout_ms : 0, 5000, "timeoutInMillis");
		if (r->prod[M_PUT] && r->prod[M_PUT]->neps == 2) {
			is_str(r->prod[M_PUT]->eps[1].key, "pets-b", "etcd key");
			is_int(r->prod[M_PUT]->eps[1].line, 19, "endpoint line");
			is_int(r->prod[M_PUT]->eps[1].col, 11, "endpoint col");
		}
		ok(r->sandbox[M_POST] == a->sandbox, "sandbox inherited");
	}
	r = find_res(a, "/pet/{petId}");
	ok(r && r->methods == ((1u << M_GET) | (1u << M_DELETE)), "/pet/{petId}: GET and DELETE");
	if (r) {
		is_int(r->prod[M_GET] ? (int)r->prod[M_GET]->type : -1, GROUP_FAILOVER, "GET: path-level failover");
		is_int(r->prod[M_GET] ? r->prod[M_GET]->timeout_ms : 0, 60000, "default timeout");
		is_str(r->prod[M_DELETE] && r->prod[M_DELETE]->neps ? r->prod[M_DELETE]->eps[0].key : NULL,
		    "pet.delete", "DELETE: operation level wins, etcd key trimmed");
		ok(r->prod[M_DELETE] && r->prod[M_DELETE]->type == GROUP_HTTP, "type defaults to http");
	}
	r = find_res(a, "/user/{username}");
	ok(r && r->methods == ((1u << M_GET) | (1u << M_PATCH)), "$ref path item followed");
	if (r) {
		is_str(spec0(r->sandbox[M_PATCH]), "http://127.0.0.1:8091", "operation-level sandbox");
		ok(r->prod[M_PATCH] == a->prod, "operation without production endpoint uses the API's");
	}
	ok(find_res(a, "/store/inventory") == NULL, "path without operations has no resource");
	config_free(c);

	c = load_ok("good/petstore-sw2.yaml");
	if (c) {
		a = c->apis[0];
		is_str(a->base_path, "/v2", "Swagger 2: base path from basePath");
		is_str(spec0(a->prod), "https://petstore.example.com:8443/v2", "Swagger 2: schemes[0]://host basePath");
		r = find_res(a, "/pet/{petId}");
		ok(r && r->methods == ((1u << M_GET) | (1u << M_POST)), "Swagger 2 methods");
		if (r) {
			ok(r->prod[M_GET] == a->prod, "Swagger 2 GET uses the fallback");
			is_str(spec0(r->prod[M_POST]), "http://10.0.0.1:9000/x", "Swagger 2 operation level");
		}
		config_free(c);
	}

	c = load_ok("good/servers-oa3.json");
	if (c) {
		a = c->apis[0];
		is_str(a->base_path, "/svc", "JSON: base path from servers[0].url");
		is_str(spec0(a->prod), "http://127.0.0.1:7000/svc/", "JSON: servers[0].url is the endpoint");
		r = find_res(a, "/a");
		ok(r && r->methods == ((1u << M_GET) | (1u << M_HEAD)), "JSON: GET and HEAD");
		config_free(c);
	}

	c = load_ok("good/named-map.yaml");
	if (c) {
		a = c->apis[0];
		is_str(a->base_path, "/named", "leading slash added");
		is_int(a->prod ? (int)a->prod->type : -1, GROUP_FAILOVER, "map-form x-wso2-endpoints through a reference chain");
		is_int(a->prod ? a->prod->timeout_ms : 0, 1500, "named group timeout");
		is_int(a->ngroups, 1, "one group owned, shared by references");
		config_free(c);
	}

	c = load_ok("good/sandbox-only.yaml");
	if (c) {
		r = find_res(c->apis[0], "/s");
		ok(r && !r->prod[M_GET] && r->sandbox[M_GET], "sandbox-only resource is allowed");
		config_free(c);
	}
}

static void test_good_gateway(void)
{
	struct config *c;

	c = load_ok("good/gateway.yaml");
	if (c) {
		is_int(c->nlisteners, 2, "two listeners");
		if (c->nlisteners == 2) {
			is_str(c->listeners[0].address, "127.0.0.1", "listener 1 address");
			is_int(c->listeners[0].port, 9095, "listener 1 port");
			is_str(c->listeners[1].address, "::", "listener 2 IPv6");
		}
		is_int(c->limits.max_uri, 4096, "max_uri_bytes set");
		is_int(c->limits.max_body, 1048576, "max_body_bytes set");
		is_int(c->limits.connect_timeout_ms, 2000, "connect_timeout_ms set");
		is_int(c->limits.max_connections, 500, "max_connections set");
		is_int(c->limits.max_header, 16384, "max_header_bytes default");
		is_int(c->limits.pool_max_idle, 256, "pool_max_idle default");
		is_int(c->log.level, LOG_DEBUG, "log level");
		is_str(c->log.access_log, "off", "access_log off");
		is_int(c->etcd.nurls, 2, "comma-separated etcd urls");
		if (c->etcd.nurls == 2)
			is_str(c->etcd.urls[1], "http://127.0.0.2:2379", "etcd url trimmed");
		is_str(c->etcd.username, "root", "etcd username");
		is_str(c->etcd.password, "s3cret", "password_file relative to the gateway file, newline stripped");
		is_int(c->etcd.timer_ms, 500, "timer_ms");
		is_int(c->etcd.timeout_ms, 1000, "timeout_ms");
		is_str(c->etcd.api_prefix, "/v3", "api_prefix");
		is_int(c->napis, 3, "three APIs");
		if (c->napis == 3) {
			is_str(c->apis[0]->file, "good/petstore-oa3.yaml", "API path relative to the gateway file");
			is_str(c->apis[1]->base_path, "/v2", "{file: path} form");
			is_str(c->apis[2]->base_path, "/inline", "inline API");
			is_str(c->apis[2]->file, "good/gateway.yaml", "inline API names the gateway file");
		}
		config_free(c);
	}

	setenv("MGW_TEST_ETCD_PW", "from-env", 1);
	c = load_ok("good/gateway-env.yaml");
	if (c) {
		is_str(c->etcd.password, "from-env", "password_env");
		is_int(c->etcd.nurls, 1, "etcd urls list");
		is_int(c->nlisteners, 1, "default listener in a gateway file");
		is_str(c->log.access_log, "-", "access_log default");
		config_free(c);
	}
	unsetenv("MGW_TEST_ETCD_PW");
}

static void test_bad(void)
{
	load_bad("bad/typos.yaml");
	ok(has_err("bad/typos.yaml:4:1:", "did you mean 'x-wso2-production-endpoints'"),
	    "a near-miss x-wso2 key at the top is an error with a hint");
	ok(has_err("bad/typos.yaml:9:5:", "did you mean 'get'"), "a misspelt method is an error with a hint");
	ok(has_err("bad/typos.yaml:11:5:", "did you mean 'x-wso2-sandbox-endpoints'"),
	    "a near-miss x-wso2 key in a path item");
	ok(has_err("bad/typos.yaml:15:7:", "did you mean 'x-wso2-production-endpoints'"),
	    "a near-miss x-wso2 key in an operation");
	ok(has_err("bad/typos.yaml:18:5:", "unknown key 'bogus' in a path item"), "an unknown path item key");
	ok(!has_err("bad/typos.yaml:6:", ""), "another WSO2 extension is only a warning");

	load_bad("bad/dup-key.yaml");
	ok(has_err("bad/dup-key.yaml:7:5:", "duplicate key 'get'"), "duplicate key in a path item");
	ok(has_err("bad/dup-key.yaml:8:1:", "first at line 3, column 1"), "duplicate key names both positions");

	load_bad("bad/laughs.yaml");
	ok(has_err("bad/laughs.yaml:", "alias expansion"), "billion laughs stopped by the node budget");

	load_bad("bad/deep.yaml");
	ok(has_err("bad/deep.yaml:2:70:", "nesting deeper than 64"), "nesting depth capped");

	load_bad("bad/utf8.yaml");
	ok(has_err("bad/utf8.yaml:3:13:", "UTF-8"), "invalid UTF-8 at its position");

	load_bad("bad/syntax.yaml");
	ok(has_err("bad/syntax.yaml:4:2:", "expected key"), "libyaml syntax error with position");

	load_bad("bad/multi-doc.yaml");
	ok(has_err("bad/multi-doc.yaml:2:1:", "second document"), "multiple documents rejected");

	load_bad("bad/endpoints.yaml");
	ok(errs.n >= 8, "every endpoint error reported (%zu)", errs.n);
	ok(has_err("bad/endpoints.yaml:6:12:", "reference loop"), "x-wso2-endpoints reference loop");
	ok(has_err("bad/endpoints.yaml:11:16:", "ftp://example.com/x"), "bad URL names the text");
	ok(has_err("bad/endpoints.yaml:15:16:", "missing ','"), "malformed etcd(...) entry");
	ok(has_err("bad/endpoints.yaml:18:36:", "#/x-wso2-endpoints/nope"), "dangling reference named");
	ok(has_err("bad/endpoints.yaml:22:15:", "type http takes one url"), "http type with 2 urls");
	ok(has_err("bad/endpoints.yaml:28:50:", "timeoutInMillis"), "timeoutInMillis range");
	ok(has_err("bad/endpoints.yaml:29:3:", "whole path segment"), "template inside a segment");
	ok(has_err("bad/endpoints.yaml:31:63:", "round_robin"), "unknown endpoint type");
	ok(has_err("bad/endpoints.yaml:32:3:", "used twice"), "template name used twice");

	load_bad("bad/ref-loop.yaml");
	ok(has_err("bad/ref-loop.yaml:7:11:", "$ref loop"), "$ref loop detected");
	ok(has_err("bad/ref-loop.yaml:9:11:", "points nowhere"), "dangling $ref");
	ok(has_err("bad/ref-loop.yaml:11:11:", "only local"), "remote $ref refused");

	load_bad("bad/noep.yaml");
	ok(has_err("bad/noep.yaml:3:18:", "'..'"), "dot segment in base path");
	ok(has_err("bad/noep.yaml:6:5:", "no production endpoint for GET /pet/{id}"), "no production endpoint");
	ok(has_err("bad/noep.yaml:7:3:", "must start with '/'"), "path without leading slash");

	load_bad("bad/gateway-unknown.yaml");
	ok(has_err("bad/gateway-unknown.yaml:1:1:", "did you mean 'listeners'"), "unknown gateway key with a hint");
	ok(has_err("bad/gateway-unknown.yaml:4:19:", "from 1 to"), "zero limit rejected with the range");
	ok(has_err("bad/gateway-unknown.yaml:5:20:", "'abc'"), "non-integer limit rejected");
	ok(has_err("bad/gateway-unknown.yaml:6:3:", "unknown key 'max_uri' in limits"), "unknown limit");
	ok(has_err("bad/gateway-unknown.yaml:8:10:", "log level"), "bad log level");
	ok(has_err("bad/gateway-unknown.yaml:10:33:", "ftp://x"), "bad etcd URL");
	ok(has_err("bad/gateway-unknown.yaml:12:17:", "at most one"), "two password sources");
	ok(has_err("bad/gateway-unknown.yaml:14:5:", "No such file"), "missing API file at the gateway's line");
	ok(has_err("bad/gateway-unknown.yaml:16:5:", "unknown key 'extra'"), "unknown key in an apis entry");

	load_bad("bad/gateway-listen.yaml");
	ok(has_err("bad/gateway-listen.yaml:2:14:", "not an IPv4 or IPv6"), "bad listener address");
	ok(has_err("bad/gateway-listen.yaml:3:11:", "1 to 65535"), "port out of range");
	ok(has_err("bad/gateway-listen.yaml:5:5:", "already declared"), "duplicate listener");
	ok(has_err("bad/gateway-listen.yaml:6:5:", "no port"), "listener without port");
	ok(has_err("bad/gateway-listen.yaml:8:18:", "password_file"), "unreadable password_file");
	ok(has_err("bad/gateway-listen.yaml:12:5:", "apis entry"), "bad apis entry");

	load_bad("bad/gateway-env.yaml");
	ok(has_err("bad/gateway-env.yaml:3:17:", "is not set"), "unset password_env");
	ok(has_err("bad/gateway-env.yaml:4:13:", "100 to"), "timer_ms minimum");
	ok(has_err("bad/broken-api.yaml:1:1:", "x-wso2-basePath"), "errors inside an API file name that file");

	load_bad("no-such-file.yaml");
	ok(has_err("no-such-file.yaml: ", "No such file"), "missing top-level file");
}

int main(void)
{
	log_set_level(LOG_ERR);	/* keep warnings out of the TAP stream */
	test_yaml();
	test_good_openapi();
	test_good_gateway();
	test_bad();
	cfg_errors_clear(&errs);
	return tap_done();
}
