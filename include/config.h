/* config: YAML files into plain structs. Every error is "file:line:col: message";
 * all errors of a load are collected; nothing is applied unless the load succeeded. */
#ifndef MGW_CONFIG_H
#define MGW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* ---- a budgeted YAML tree (aliases resolved with a node budget, depth and
 * size capped, duplicate and non-scalar keys rejected) ---- */
enum cfg_type { CFG_SCALAR, CFG_SEQ, CFG_MAP };

struct cfg_node {
	enum cfg_type type;
	unsigned line, col;		/* 1-based position in the file */
	char *value;			/* CFG_SCALAR: NUL-terminated text */
	size_t len;
	int plain;			/* unquoted scalar (so "null", "~", "true" mean something) */
	struct cfg_node **keys;		/* CFG_MAP: scalar key nodes */
	struct cfg_node **items;	/* CFG_SEQ: items; CFG_MAP: values (parallel to keys) */
	size_t n;
};

struct cfg_doc {
	char *file;			/* path as given, used in messages */
	struct cfg_node *root;
	void *arena;			/* owns every node */
};

struct cfg_errors {
	char **msgs;
	size_t n;
};

#define CFG_MAX_FILE_BYTES	(16u << 20)
#define CFG_MAX_DEPTH		64
#define CFG_MAX_NODES		1000000	/* after alias expansion */
#define CFG_MAX_WORKERS		64

void cfg_error(struct cfg_errors *e, const char *file, const struct cfg_node *at,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void cfg_errors_print(const struct cfg_errors *e);	/* one per line on stderr */
void cfg_errors_clear(struct cfg_errors *e);

/* Load a YAML (or JSON) file. NULL on failure, with errors appended. */
struct cfg_doc *cfg_doc_load(const char *path, struct cfg_errors *e);
/* Same, from memory (tests, inline documents); 'name' is used in messages. */
struct cfg_doc *cfg_doc_parse(const char *name, const char *buf, size_t len, struct cfg_errors *e);
void cfg_doc_free(struct cfg_doc *d);
/* Read a whole file (at most 'max' bytes) into a NUL-terminated malloc'd
 * buffer. NULL with errno set on failure (EFBIG when larger than 'max'). */
char *cfg_file_read(const char *path, size_t max, size_t *len);
const struct cfg_node *cfg_map_get(const struct cfg_node *map, const char *key);
/* The name in the NULL-terminated list nearest to word, within maxd edits:
 * the "did you mean" of a typo. NULL when none is that close. */
const char *cfg_closest(const char *word, const char *const *names, size_t maxd);

/* ---- the gateway configuration ---- */

/* A file named by the configuration: its path (a relative one resolved
 * against the gateway file's directory) and where it was written. line 0:
 * it came from the command-line option 'src' ("--etcdcafile"). */
struct conf_file {
	char *path;			/* NULL: not given */
	unsigned line, col;
	const char *src;
};

/* One certificate of an HTTPS listener: the chain file (leaf first, then the
 * intermediates; all are sent) and its private key. */
struct tls_cert_conf {
	struct conf_file cert;
	struct conf_file key;		/* defaults to the certificate file */
};

struct listener_tls {
	struct tls_cert_conf *certs;	/* the first is the default; SNI picks by name */
	size_t ncerts;
	char *ciphers;			/* TLS 1.2 cipher list; NULL: TLS_DEFAULT_CIPHERS */
	int min_version;		/* 12 (default) or 13 */
	unsigned line, col;
};

/* TLS as a client: to backends (backend_tls) and to etcd. */
struct tls_client_conf {
	struct conf_file ca_file;	/* path NULL: the system trust store */
	struct conf_file cert_file;	/* client certificate chain (mutual TLS), optional */
	struct conf_file key_file;	/* its key; defaults to cert_file */
	int verify;			/* verify the peer (default 1); backends only */
	unsigned verify_line, verify_col;
	char **no_verify;		/* backend origins ("https://host:port") not verified */
	size_t nno_verify;
};

struct listener_conf {
	char *address;		/* "0.0.0.0", "127.0.0.1", "::" */
	uint16_t port;
	struct listener_tls *tls;	/* NULL: plain HTTP */
	unsigned line, col;
};

struct limits_conf {
	size_t max_uri;			/* 414 above; default 8192 */
	size_t max_header;		/* 431 above (request line + headers); default 16384 */
	size_t max_body;		/* 413 above; default 10 MiB */
	unsigned header_timeout_ms;	/* 408 when a started request head takes longer; default 10000 */
	unsigned idle_timeout_ms;	/* idle keep-alive client connection; default 60000 */
	unsigned connect_timeout_ms;	/* backend connect; default 5000 */
	unsigned pool_max_idle;		/* idle keep-alive connections kept per backend origin; default 256 */
	unsigned pool_idle_timeout_ms;	/* idle backend connection lifetime; default 60000 */
	unsigned max_connections;	/* client connections; default 10000 */
	unsigned tls_handshake_timeout_ms; /* client TLS handshake on an HTTPS listener; default 10000 */
};

struct etcd_conf {
	char **urls;			/* cluster members; empty = discovery off */
	size_t nurls;
	char *username;
	char *password;			/* resolved value, never logged */
	unsigned timer_ms;		/* poll period; default 10000 */
	unsigned timeout_ms;		/* per etcd request; default 3000 */
	char *api_prefix;		/* "/v3", "/v3beta", "/v3alpha" or NULL = find out */
	struct tls_client_conf tls;	/* for https:// members */
};

struct log_conf {
	int level;			/* enum log_level; default LOG_INFO */
	char *access_log;		/* "-" (stdout, default), "off", or a path */
};

struct api;

struct config {
	char *file;
	struct listener_conf *listeners;
	size_t nlisteners;
	struct limits_conf limits;
	struct etcd_conf etcd;
	struct tls_client_conf backend_tls;
	struct log_conf log;
	struct api **apis;
	size_t napis;
	unsigned workers;		/* worker processes; 1 = the single process itself */
};

/* Load either shape: a bare OpenAPI document (openapi:/swagger: at top) or a
 * gateway file (listeners:/apis:/...). NULL on failure with every error in e. */
struct config *config_load(const char *path, struct cfg_errors *e);
void config_defaults(struct config *c);
void config_free(struct config *c);
void conf_file_set(struct conf_file *f, char *path, unsigned line, unsigned col, const char *src);

#endif
