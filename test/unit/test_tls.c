/* Unit tests for the TLS settings of the gateway file and the pure parts of
 * the tls room (no network, no certificate files). Runs in test/data. */
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "config.h"
#include "log.h"
#include "tls.h"
#include "tap.h"

static struct cfg_errors errs;

static int has_err(const char *prefix, const char *word)
{
	for (size_t i = 0; i < errs.n; i++)
		if (strncmp(errs.msgs[i], prefix, strlen(prefix)) == 0 && strstr(errs.msgs[i], word))
			return 1;
	for (size_t i = 0; i < errs.n; i++)
		printf("#   error: %s\n", errs.msgs[i]);
	return 0;
}

static void test_good(void)
{
	struct config *c;
	const struct listener_tls *t;

	cfg_errors_clear(&errs);
	c = config_load("good/gateway-tls.yaml", &errs);
	ok(c != NULL && errs.n == 0, "gateway-tls.yaml loads");
	if (c == NULL) {
		has_err("", "");
		return;
	}
	is_int(c->nlisteners, 3, "three listeners");
	ok(c->listeners[0].tls == NULL, "the first is plain");
	t = c->listeners[1].tls;
	ok(t != NULL && t->ncerts == 1, "the second has one certificate");
	if (t != NULL && t->ncerts == 1) {
		is_str(t->certs[0].cert.path, "good/tls/chain.pem", "certificate relative to the file");
		is_str(t->certs[0].key.path, "good/tls/key.pem", "key relative to the file");
		is_int(t->certs[0].cert.line, 7, "certificate line");
		is_int(t->certs[0].cert.col, 20, "certificate column");
		is_int(t->min_version, 13, "min_version 1.3");
		is_str(t->ciphers, "ECDHE-RSA-AES128-GCM-SHA256", "ciphers");
	}
	t = c->listeners[2].tls;
	ok(t != NULL && t->ncerts == 2, "the third has two certificates (SNI)");
	if (t != NULL && t->ncerts == 2) {
		is_str(t->certs[0].key.path, "good/tls/a.key", "first key");
		is_str(t->certs[1].cert.path, "/etc/mgw/b.pem", "absolute path kept");
		is_str(t->certs[1].key.path, "/etc/mgw/b.pem", "key defaults to the certificate file");
		is_int(t->min_version, 12, "min_version defaults to 1.2");
		ok(t->ciphers == NULL, "default ciphers");
	}
	is_int(c->limits.tls_handshake_timeout_ms, 2500, "tls_handshake_timeout_ms");
	is_str(c->etcd.tls.ca_file.path, "good/tls/ca.pem", "etcd ca_file");
	is_str(c->etcd.tls.cert_file.path, "good/tls/client.pem", "etcd cert_file");
	is_str(c->etcd.tls.key_file.path, "good/tls/client.pem", "etcd key_file defaults to cert_file");
	is_str(c->backend_tls.ca_file.path, "good/tls/backends-ca.pem", "backend ca_file");
	is_int(c->backend_tls.verify, 0, "backend verify: false");
	is_int(c->backend_tls.nno_verify, 2, "two unverified origins");
	if (c->backend_tls.nno_verify == 2) {
		is_str(c->backend_tls.no_verify[0], "https://lab.example:8443", "origin as given");
		is_str(c->backend_tls.no_verify[1], "https://10.0.0.1:443", "origin with the default port");
	}
	config_free(c);

	cfg_errors_clear(&errs);
	c = config_load("good/gateway.yaml", &errs);
	ok(c != NULL, "a file without TLS");
	if (c != NULL) {
		is_int(c->backend_tls.verify, 1, "backends are verified by default");
		ok(c->backend_tls.ca_file.path == NULL, "system trust store by default");
		is_int(c->limits.tls_handshake_timeout_ms, 10000, "handshake timeout default");
		for (size_t i = 0; i < c->nlisteners; i++)
			ok(c->listeners[i].tls == NULL, "listener %zu is plain", i);
	}
	config_free(c);
}

static void test_bad(void)
{
	struct config *c;
	const char *f = "bad/gateway-tls.yaml";

	cfg_errors_clear(&errs);
	c = config_load(f, &errs);
	ok(c == NULL, "%s is rejected", f);
	config_free(c);
	ok(has_err("bad/gateway-tls.yaml:5:12:", "a certificate is needed"), "key without certificate");
	ok(has_err("bad/gateway-tls.yaml:6:20:", "min_version must be \"1.2\" or \"1.3\""), "TLS 1.1 refused");
	ok(has_err("bad/gateway-tls.yaml:11:21:", "either certificate/key or certificates"),
	    "certificate and certificates together");
	ok(has_err("bad/gateway-tls.yaml:14:10:", "tls must be a mapping"), "tls: yes");
	ok(has_err("bad/gateway-tls.yaml:17:13:", "key_file needs cert_file"), "etcd key_file alone");
	ok(has_err("bad/gateway-tls.yaml:18:3:", "unknown key 'verify' in etcd"), "no verify switch for etcd");
	ok(has_err("bad/gateway-tls.yaml:20:11:", "verify must be true or false"), "verify: maybe");
	ok(has_err("bad/gateway-tls.yaml:21:23:", "'http://x:1' is not an https origin"), "http origin");
	ok(has_err("bad/gateway-tls.yaml:21:37:", "'https://h/path' is not an https origin"), "origin with a path");
	ok(has_err("bad/gateway-tls.yaml:21:55:", "'not a url' is not a URL"), "not a URL");
	ok(has_err("bad/gateway-tls.yaml:22:12:", "ca_file must be a non-empty string"), "empty ca_file");
}

static void test_tls_files(void)
{
	struct cfg_errors e = { 0 }, w = { 0 };
	struct tls_cert_conf cc = {
		.cert = { .path = (char *)"no/such/cert.pem", .line = 3, .col = 20 },
		.key = { .path = (char *)"no/such/key.pem", .line = 4, .col = 12 },
	};
	struct listener_tls lt = { .certs = &cc, .ncerts = 1, .min_version = 12 };
	struct tls_client_conf cl = { .ca_file = { .path = (char *)"good/gateway.yaml", .src = "--etcdcafile" },
		.verify = 1 };
	struct tls_server *s;
	SSL_CTX *ctx;

	s = tls_server_new("gw.yaml", &lt, &e, &w);
	ok(s == NULL, "a missing certificate file fails");
	is_int(e.n, 1, "one error");
	if (e.n > 0)
		is_str(e.msgs[0], "gw.yaml:3:20: no/such/cert.pem: no such file", "named with its position");
	cfg_errors_clear(&e);

	ctx = tls_client_ctx("gw.yaml", &cl, &e, &w);
	ok(ctx == NULL, "a CA file that is not PEM fails");
	if (e.n > 0)
		ok(strncmp(e.msgs[0], "--etcdcafile: good/gateway.yaml: not a PEM file", 47) == 0,
		    "flag-given file named by the flag: %s", e.msgs[0]);
	cfg_errors_clear(&e);

	cl.ca_file.path = NULL;
	ctx = tls_client_ctx("gw.yaml", &cl, &e, &w);
	ok(ctx != NULL && e.n == 0, "a client context on the system trust store");
	if (ctx != NULL) {
		SSL *ssl = tls_client_ssl(ctx, "127.0.0.1", 1);

		ok(ssl != NULL, "client SSL for an IP literal");
		ok(ssl && SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) == NULL, "no SNI for an IP");
		ok(ssl && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER), "verified");
		SSL_free(ssl);
		ssl = tls_client_ssl(ctx, "backend.example", 1);
		is_str(ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL, "backend.example",
		    "SNI for a name");
		ok(ssl && strcmp(SSL_get0_peername(ssl) ? SSL_get0_peername(ssl) : "", "") == 0,
		    "no peer name before a handshake");
		SSL_free(ssl);
		ssl = tls_client_ssl(ctx, "::1", 0);
		ok(ssl && SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE, "verify off when asked");
		SSL_free(ssl);
		SSL_CTX_free(ctx);
	}
	cfg_errors_clear(&e);
	cfg_errors_clear(&w);
}

int main(void)
{
	log_set_level(LOG_ERR);
	test_good();
	test_bad();
	test_tls_files();
	cfg_errors_clear(&errs);
	return tap_done();
}
