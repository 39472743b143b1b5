/* discovery: the etcd v3 JSON client and the key -> URL table (its only writer). */
#ifndef MGW_DISCOVERY_H
#define MGW_DISCOVERY_H

#include <stddef.h>
#include "config.h"
#include "endpoint.h"

struct event_base;
struct ssl_ctx_st;

/* One etcd key. Endpoints point at their slot, so a request reads the current
 * URL without a hash lookup. 'url' is NULL while the key is absent (or was never
 * read): the endpoint's default applies then. */
struct disc_slot {
	char *key;
	struct url *url;
};

struct disc;

struct disc *disc_new(struct event_base *base, const struct etcd_conf *conf);
/* The client context for https members (not owned; must outlive d). Without
 * it an https member cannot be reached. */
void disc_set_tls(struct disc *d, struct ssl_ctx_st *ctx);
/* Find or create the slot of a key (wiring time only). */
struct disc_slot *disc_slot(struct disc *d, const char *key);
/* First poll now, then every timer_ms; polls never overlap. */
int disc_start(struct disc *d);
void disc_free(struct disc *d);

/* ---- pure parts, exposed for the unit tests (no network) ---- */

/* etcd refuses a txn with more than --max-txn-ops operations (default 128). */
#define DISC_MAX_TXN_OPS	128

/* Standard base64 with padding. Return malloc'd buffers (decode output is
 * NUL-terminated for convenience, *outlen excludes the NUL); NULL on bad input. */
char *disc_b64_encode(const void *data, size_t len, size_t *outlen);
unsigned char *disc_b64_decode(const char *s, size_t len, size_t *outlen);

/* Number of txns needed for nkeys keys at max_ops operations per txn. */
size_t disc_txn_count(size_t nkeys, size_t max_ops);
/* {"success":[{"request_range":{"key":"<b64>"}}, ...]} for keys[0..n), with
 * "min_mod_revision" on each range when min_rev > 0: etcd then sends the value
 * only of keys modified at min_rev or later, and a bare count for the others.
 * An empty txn (n = 0) only fetches the header. malloc'd. */
char *disc_txn_body(const char *const *keys, size_t n, long long min_rev);

/* One key of a txn reply. */
struct disc_kv {
	int present;		/* the key exists (kvs non-empty, or a count) */
	int unchanged;		/* present, but not modified since min_rev: no value */
	char *value;		/* decoded value, NUL-terminated; NULL when absent */
	size_t len;
	long long mod_revision;	/* int64s arrive as JSON strings */
};
/* The reply's header: which cluster answered, at which store revision. A
 * revision of 0 means the reply did not say. */
struct disc_header {
	unsigned long long cluster_id;
	long long revision;
};
/* Parse a /kv/txn reply holding n request_range answers into out[0..n), and
 * its header into *hdr (optional). Returns 0, or -1 with *why set (static
 * text) on anything malformed; out is then left cleared. Free with
 * disc_kv_clear. */
int disc_txn_parse(const char *body, size_t len, size_t n, struct disc_kv *out,
    struct disc_header *hdr, const char **why);
void disc_kv_clear(struct disc_kv *kv, size_t n);

/* What an etcd reply means for the client. */
enum disc_class {
	DISC_OK = 0,		/* 2xx with a JSON object */
	DISC_TRANSPORT,		/* no HTTP reply: refused, reset, timed out */
	DISC_GARBAGE,		/* not an etcd JSON reply (non-JSON, empty, wrong shape) */
	DISC_NOT_FOUND,		/* 404 page not found: wrong API prefix */
	DISC_AUTH_INVALID,	/* 401 / code 16: token expired or invalidated */
	DISC_AUTH_FAILED,	/* code 3 "authentication failed": wrong user or password */
	DISC_AUTH_DISABLED,	/* code 9 "authentication is not enabled" */
	DISC_AUTH_REQUIRED,	/* code 3 "user name is empty": auth on, no token sent */
	DISC_PERMISSION,	/* code 7 permission denied */
	DISC_TOO_MANY_OPS,	/* code 3 "too many operations in txn request" */
	DISC_UNAVAILABLE,	/* 5xx, code 14 unavailable / 4 deadline: try another member */
	DISC_ERROR,		/* any other etcd error */
};
/* Classify a reply by HTTP status (0 = no reply), then `code`, then
 * `message`/`error`. msg (optional) receives a printable reason. */
enum disc_class disc_classify(int status, const char *body, size_t len, char *msg, size_t msglen);
const char *disc_class_name(enum disc_class c);

/* API prefix for a GET /version reply ({"etcdserver":"3.4.23",...}):
 * "/v3" (3.4+), "/v3beta" (3.3), "/v3alpha" (3.2 and older); NULL if the reply
 * is not etcd's. */
const char *disc_prefix_for_version(const char *body, size_t len, char *ver, size_t verlen);

/* Apply one key's result to its slot: a valid http(s) URL replaces the slot's
 * URL; an invalid one is warned about once and the previous URL stays; absent
 * sets the default (url NULL). Returns 1 when the slot's URL changed. */
int disc_apply(struct disc *d, struct disc_slot *s, const struct disc_kv *kv);
/* Slots of d, in wiring order (for tests and the poll). */
size_t disc_nslots(const struct disc *d);

#endif
