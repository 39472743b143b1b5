/* tls: OpenSSL contexts for HTTPS listeners, HTTPS backends and HTTPS etcd.
 *
 * Files are read by us (cfg_file_read) and handed to OpenSSL from memory, so
 * that every problem is reported against the file and the gateway file line
 * that named it: missing, unreadable, not PEM, no certificate, an encrypted
 * or missing key, a key that does not belong to the certificate. An expired
 * or not yet valid certificate is a warning: the operator may be about to
 * replace it, and refusing to start would take the whole gateway down.
 *
 * Listeners: TLS 1.2 and 1.3 only, ECDHE+AEAD ciphers for TLS 1.2 by default,
 * no renegotiation, no compression, ALPN http/1.1 (or http/1.0), SNI served:
 * with several certificates the one whose name matches is picked, else the
 * first. The whole chain in the certificate file is sent.
 *
 * Clients: TLS 1.2+, the peer's chain verified against a CA file or the
 * system store, its name checked (DNS name, or IP address for an IP literal),
 * SNI sent for names, ALPN http/1.1 offered, no renegotiation. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define TLS_MAX_FILE	(16u << 20)

struct tls_server {
	SSL_CTX **ctx;		/* one per certificate; [0] is the default */
	X509 **leaf;		/* not owned: the leaf of ctx[i] */
	size_t n;
	char *summary;
};

/* ---- reporting ---- */

static void tls_report(struct cfg_errors *e, const char *cfgfile, const struct conf_file *f,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void tls_report(struct cfg_errors *e, const char *cfgfile, const struct conf_file *f,
    const char *fmt, ...)
{
	char msg[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (f->line > 0) {
		struct cfg_node at = { .line = f->line, .col = f->col };

		cfg_error(e, cfgfile, &at, "%s: %s", f->path, msg);
	} else {
		cfg_error(e, f->src ? f->src : cfgfile, NULL, "%s: %s", f->path, msg);
	}
}

/* The last OpenSSL reason on the error queue (and clear it). */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e, last = 0;
	const char *r;

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last == 0)
		return "unknown error";
	r = ERR_reason_error_string(last);
	if (r == NULL) {
		ERR_error_string_n(last, buf, len);
		return buf;
	}
	snprintf(buf, len, "%s", r);
	return buf;
}

/* Never prompt on the terminal for a key passphrase. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* Read a PEM file; reports and returns NULL when it is missing, unreadable
 * or has no PEM block at all. */
static char *read_pem(struct cfg_errors *e, const char *cfgfile, const struct conf_file *f,
    size_t *len)
{
	char *buf = cfg_file_read(f->path, TLS_MAX_FILE, len);

	if (buf == NULL) {
		if (errno == EFBIG)
			tls_report(e, cfgfile, f, "file too large (the limit is %u bytes)", TLS_MAX_FILE);
		else if (errno == ENOENT)
			tls_report(e, cfgfile, f, "no such file");
		else
			tls_report(e, cfgfile, f, "cannot read: %s", strerror(errno));
		return NULL;
	}
	if (strstr(buf, "-----BEGIN ") == NULL) {
		tls_report(e, cfgfile, f, "not a PEM file (no '-----BEGIN' line; DER files must be "
		    "converted with openssl x509 -inform der)");
		free(buf);
		return NULL;
	}
	return buf;
}

static void fmt_time(const ASN1_TIME *t, char *buf, size_t len)
{
	struct tm tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "(unknown date)");
}

static void cert_name(X509 *x, char *buf, size_t len)
{
	X509_NAME *n = X509_get_subject_name(x);

	buf[0] = '\0';
	if (n == NULL || X509_NAME_get_text_by_NID(n, NID_commonName, buf, (int)len) < 0)
		X509_NAME_oneline(n, buf, (int)len);
}

/* Warn about a certificate outside its validity period. */
static void check_validity(struct cfg_errors *w, const char *cfgfile, const struct conf_file *f,
    X509 *x, const char *what)
{
	char name[256], when[64];

	if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
		cert_name(x, name, sizeof(name));
		fmt_time(X509_get0_notAfter(x), when, sizeof(when));
		tls_report(w, cfgfile, f, "%s '%s' expired on %s", what, name, when);
	} else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
		cert_name(x, name, sizeof(name));
		fmt_time(X509_get0_notBefore(x), when, sizeof(when));
		tls_report(w, cfgfile, f, "%s '%s' is not valid before %s", what, name, when);
	}
}

/* Load a certificate chain and its key into ctx. Returns the leaf (owned by
 * ctx) or NULL after reporting. */
static X509 *load_chain_and_key(SSL_CTX *ctx, const char *cfgfile, const struct conf_file *cf,
    const struct conf_file *kf, struct cfg_errors *e, struct cfg_errors *w)
{
	char *buf, rbuf[256];
	size_t len;
	BIO *bio;
	X509 *leaf = NULL, *x;
	EVP_PKEY *key;
	int nchain = 0;

	ERR_clear_error();
	if ((buf = read_pem(e, cfgfile, cf, &len)) == NULL)
		return NULL;
	bio = BIO_new_mem_buf(buf, (int)len);
	if (bio == NULL || (leaf = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL)) == NULL) {
		tls_report(e, cfgfile, cf, "no certificate in the PEM file (%s)", ssl_reason(rbuf, sizeof(rbuf)));
		goto fail;
	}
	if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
		tls_report(e, cfgfile, cf, "certificate refused: %s", ssl_reason(rbuf, sizeof(rbuf)));
		goto fail;
	}
	check_validity(w, cfgfile, cf, leaf, "certificate");
	/* The rest of the file is the chain, sent after the leaf. */
	while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
		check_validity(w, cfgfile, cf, x, "chain certificate");
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			tls_report(e, cfgfile, cf, "chain certificate refused: %s", ssl_reason(rbuf, sizeof(rbuf)));
			goto fail;
		}
		nchain++;
	}
	{
		/* The loop ends at the end of the file ("no start line"), or at a
		 * block that does not decode: then the chain would go out short. */
		unsigned long err = ERR_peek_last_error();

		if (err != 0 && !(ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE)) {
			tls_report(e, cfgfile, cf, "certificate %d of the file (the chain) cannot be read: %s", nchain + 2,
			    ssl_reason(rbuf, sizeof(rbuf)));
			goto fail;
		}
	}
	ERR_clear_error();
	BIO_free(bio);
	bio = NULL;
	free(buf);
	buf = NULL;

	if ((buf = read_pem(e, cfgfile, kf, &len)) == NULL)
		goto fail;
	bio = BIO_new_mem_buf(buf, (int)len);
	key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
	if (key == NULL) {
		if (strstr(buf, "ENCRYPTED") != NULL)
			tls_report(e, cfgfile, kf, "the private key is encrypted; give an unencrypted "
			    "key (readable by the gateway only)");
		else
			tls_report(e, cfgfile, kf, "no private key in the PEM file (%s)",
			    ssl_reason(rbuf, sizeof(rbuf)));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		EVP_PKEY_free(key);
		ERR_clear_error();
		tls_report(e, cfgfile, kf, "the private key does not match the certificate in %s",
		    cf->path);
		goto fail;
	}
	EVP_PKEY_free(key);
	BIO_free(bio);
	free(buf);
	X509_free(leaf);	/* ctx holds its own reference */
	(void)nchain;
	ERR_clear_error();
	return SSL_CTX_get0_certificate(ctx);
fail:
	BIO_free(bio);
	free(buf);
	X509_free(leaf);
	ERR_clear_error();
	return NULL;
}

/* Trust anchors from a PEM file (one or more certificates). */
static int load_ca_file(SSL_CTX *ctx, const char *cfgfile, const struct conf_file *f,
    struct cfg_errors *e)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_INFO) *infos;
	char *buf;
	size_t len;
	BIO *bio;
	int n = 0;

	ERR_clear_error();
	if ((buf = read_pem(e, cfgfile, f, &len)) == NULL)
		return -1;
	bio = BIO_new_mem_buf(buf, (int)len);
	infos = bio ? PEM_X509_INFO_read_bio(bio, NULL, no_passphrase, NULL) : NULL;
	for (int i = 0; infos != NULL && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *xi = sk_X509_INFO_value(infos, i);

		if (xi->x509 != NULL && X509_STORE_add_cert(store, xi->x509) == 1)
			n++;
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	BIO_free(bio);
	free(buf);
	ERR_clear_error();
	if (n == 0) {
		tls_report(e, cfgfile, f, "no CA certificate in the PEM file");
		return -1;
	}
	return 0;
}

/* What every context shares: TLS 1.2 at least, no renegotiation or
 * compression, and buffers given back by idle keep-alive connections. */
static SSL_CTX *tls_ctx_new(const SSL_METHOD *method, const char *cfgfile, struct cfg_errors *e)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	char rbuf[256];

	if (ctx == NULL) {
		cfg_error(e, cfgfile, NULL, "cannot create a TLS context: %s", ssl_reason(rbuf, sizeof(rbuf)));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	return ctx;
}

/* ---- listeners ---- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char ours[] = "\x08http/1.1\x08http/1.0";
	unsigned char *o;

	(void)ssl;
	(void)arg;
	if (inlen == 0)
		return SSL_TLSEXT_ERR_NOACK;
	if (SSL_select_next_proto(&o, outlen, ours, sizeof(ours) - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;	/* RFC 7301: no_application_protocol */
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

/* SNI: the certificate whose names match, else the default (the first). */
static int sni_select(SSL *ssl, int *al, void *arg)
{
	struct tls_server *s = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)al;
	if (name == NULL || s->n < 2)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < s->n; i++) {
		if (X509_check_host(s->leaf[i], name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1) {
			if (i > 0)
				SSL_set_SSL_CTX(ssl, s->ctx[i]);
			break;
		}
	}
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx(const char *cfgfile, const struct listener_tls *conf, struct cfg_errors *e)
{
	static const unsigned char sid[] = "mgw-evd";
	SSL_CTX *ctx = tls_ctx_new(TLS_server_method(), cfgfile, e);

	if (ctx == NULL)
		return NULL;
	if (conf->min_version == 13)
		SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (SSL_CTX_set_cipher_list(ctx, conf->ciphers ? conf->ciphers : TLS_DEFAULT_CIPHERS) != 1) {
		struct cfg_node at = { .line = conf->line, .col = conf->col };

		ERR_clear_error();
		cfg_error(e, cfgfile, &at, "tls ciphers: no usable cipher in '%.200s'",
		    conf->ciphers ? conf->ciphers : TLS_DEFAULT_CIPHERS);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct tls_server *tls_server_new(const char *cfgfile, const struct listener_tls *conf,
    struct cfg_errors *e, struct cfg_errors *w)
{
	struct tls_server *s = calloc(1, sizeof(*s));
	size_t off = 0, cap = 256 * (conf->ncerts + 1);
	int bad = 0;

	if (s == NULL || (s->ctx = calloc(conf->ncerts, sizeof(*s->ctx))) == NULL ||
	    (s->leaf = calloc(conf->ncerts, sizeof(*s->leaf))) == NULL ||
	    (s->summary = malloc(cap)) == NULL) {
		cfg_error(e, cfgfile, NULL, "out of memory");
		tls_server_free(s);
		return NULL;
	}
	s->summary[0] = '\0';
	for (size_t i = 0; i < conf->ncerts; i++) {
		const struct tls_cert_conf *cc = &conf->certs[i];
		char name[200], when[64];

		if ((s->ctx[i] = server_ctx(cfgfile, conf, e)) == NULL) {
			bad = 1;
			break;
		}
		s->n++;
		if ((s->leaf[i] = load_chain_and_key(s->ctx[i], cfgfile, &cc->cert, &cc->key, e, w)) == NULL) {
			bad = 1;
			continue;
		}
		SSL_CTX_set_tlsext_servername_callback(s->ctx[i], sni_select);
		SSL_CTX_set_tlsext_servername_arg(s->ctx[i], s);
		cert_name(s->leaf[i], name, sizeof(name));
		fmt_time(X509_get0_notAfter(s->leaf[i]), when, sizeof(when));
		off += (size_t)snprintf(s->summary + off, cap - off, "%sCN=%s, expires %s",
		    i ? "; " : "", name, when);
		if (off >= cap)
			off = cap - 1;
	}
	if (bad) {
		tls_server_free(s);
		return NULL;
	}
	return s;
}

SSL *tls_server_ssl(struct tls_server *s)
{
	return SSL_new(s->ctx[0]);
}

const char *tls_server_summary(const struct tls_server *s)
{
	return s->summary;
}

void tls_server_free(struct tls_server *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; s->ctx != NULL && i < s->n; i++)
		SSL_CTX_free(s->ctx[i]);
	free(s->ctx);
	free(s->leaf);
	free(s->summary);
	free(s);
}

/* ---- clients ---- */

SSL_CTX *tls_client_ctx(const char *cfgfile, const struct tls_client_conf *conf,
    struct cfg_errors *e, struct cfg_errors *w)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_CTX *ctx = tls_ctx_new(TLS_client_method(), cfgfile, e);
	char rbuf[256];
	int bad = 0;

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (conf->ca_file.path != NULL) {
		if (load_ca_file(ctx, cfgfile, &conf->ca_file, e) != 0)
			bad = 1;
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		/* /etc/ssl/certs (OpenSSL's directory), or SSL_CERT_FILE/SSL_CERT_DIR */
		cfg_error(e, cfgfile, NULL, "cannot use the system trust store: %s",
		    ssl_reason(rbuf, sizeof(rbuf)));
		bad = 1;
	}
	if (conf->cert_file.path != NULL &&
	    load_chain_and_key(ctx, cfgfile, &conf->cert_file, &conf->key_file, e, w) == NULL)
		bad = 1;
	ERR_clear_error();
	if (bad) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int is_ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *tls_client_ssl(SSL_CTX *ctx, const char *host, int verify)
{
	SSL *ssl = SSL_new(ctx);
	int ip = is_ip_literal(host);

	if (ssl == NULL)
		return NULL;
	/* RFC 6066: no IP literals in SNI. */
	if (!ip && SSL_set_tlsext_host_name(ssl, host) != 1)
		goto fail;
	if (!verify) {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	} else if (ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
			goto fail;
	} else {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, host) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	ERR_clear_error();
	return NULL;
}

/* ---- per connection ---- */

const char *tls_failure(struct bufferevent *bev, char *buf, size_t len)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	unsigned long e, first = 0;
	long vr;

	if (ssl == NULL)
		return NULL;
	/* libevent keeps the last few errors, newest first; small values are
	 * SSL_get_error() codes it stores alongside, not OpenSSL reasons. */
	while ((e = bufferevent_get_openssl_error(bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			first = e;
	vr = SSL_get_verify_result(ssl);
	if ((SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) && vr != X509_V_OK) {
		snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
		return buf;
	}
	if (first != 0) {
		const char *r = ERR_reason_error_string(first);

		if (r != NULL)
			snprintf(buf, len, "%s", r);
		else
			ERR_error_string_n(first, buf, len);
		return buf;
	}
	return NULL;
}

int tls_wrote_bytes(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	BIO *b = ssl ? SSL_get_wbio(ssl) : NULL;

	return b != NULL && BIO_number_written(b) > 0;
}

void tls_close_notify(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	if (ssl == NULL || !SSL_is_init_finished(ssl) ||
	    evbuffer_get_length(bufferevent_get_output(bev)) > 0 ||
	    bufferevent_getfd(bev) < 0)
		return;
	SSL_shutdown(ssl);
	ERR_clear_error();
}

int tls_is_tls(struct bufferevent *bev)
{
	return bufferevent_openssl_get_ssl(bev) != NULL;
}

int tls_handshake_done(struct bufferevent *bev)
{
	SSL *ssl = bufferevent_openssl_get_ssl(bev);

	return ssl != NULL && SSL_is_init_finished(ssl);
}
