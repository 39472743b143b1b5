/* tls: OpenSSL contexts for the three hops: HTTPS listeners, HTTPS backends
 * and HTTPS etcd. Everything here runs at start-up except the small per
 * connection helpers at the end. */
#ifndef MGW_TLS_H
#define MGW_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "config.h"

struct bufferevent;

/* The built-in TLS 1.2 cipher list of listeners: ECDHE key exchange with
 * AEAD ciphers only (TLS 1.3 uses OpenSSL's default suites, all AEAD). */
#define TLS_DEFAULT_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Start-up problems are appended to e (errors: nothing is served) or w
 * (warnings: an expired or not yet valid certificate), each as
 * "gateway-file:line:col: path: message" (or "--flag: path: message" for a
 * file given on the command line). 'cfgfile' names the gateway file. */

/* ---- listeners ---- */
struct tls_server;

/* Contexts for one HTTPS listener: one per certificate, the first is the
 * default and SNI picks another whose name matches. NULL on error. */
struct tls_server *tls_server_new(const char *cfgfile, const struct listener_tls *conf,
    struct cfg_errors *e, struct cfg_errors *w);
/* A fresh SSL for an accepted connection (server mode), or NULL. */
SSL *tls_server_ssl(struct tls_server *s);
/* "CN=localhost, expires 2027-01-01 00:00:00 UTC" for each certificate. */
const char *tls_server_summary(const struct tls_server *s);
void tls_server_free(struct tls_server *s);

/* ---- clients: backends and etcd ---- */

/* A client context: peer verification against conf->ca_file or the system
 * trust store, the optional client certificate, ALPN http/1.1, TLS 1.2+.
 * NULL on error. */
SSL_CTX *tls_client_ctx(const char *cfgfile, const struct tls_client_conf *conf,
    struct cfg_errors *e, struct cfg_errors *w);
/* A fresh client SSL for 'host' (no brackets): SNI unless host is an IP
 * literal; the certificate must match host (DNS name or IP address) when
 * 'verify' is set, else nothing about the peer is checked. NULL on error. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *host, int verify);

/* ---- per connection ---- */

/* Why the TLS connection of an openssl bufferevent failed, for a log line:
 * "certificate verify failed: <X509_verify_cert_error_string>" when the
 * peer's certificate was refused, else the OpenSSL reason of the failure
 * ("unexpected eof while reading", "wrong version number", ...). Returns buf,
 * or NULL when the bufferevent holds no TLS reason (a plain socket error).
 * Drains the bufferevent's OpenSSL error list. */
const char *tls_failure(struct bufferevent *bev, char *buf, size_t len);

/* Did the connection get as far as writing (the ClientHello)? Tells a TCP
 * connect failure from a TLS handshake failure. */
int tls_wrote_bytes(struct bufferevent *bev);

/* Send close_notify on an established connection about to be closed, if its
 * output is flushed (best effort, never blocks); clears OpenSSL's error queue. */
void tls_close_notify(struct bufferevent *bev);

/* Is this an openssl bufferevent? */
int tls_is_tls(struct bufferevent *bev);

/* Has the handshake of this connection completed? */
int tls_handshake_done(struct bufferevent *bev);

#endif
