/* config_yaml: a budgeted YAML (and JSON) tree loader on the libyaml event parser.
 *
 * The file is untrusted input: its size, nesting depth and node count (after
 * alias expansion) are capped; aliases share the anchored node instead of
 * copying it, but every use counts the whole anchored subtree against the
 * budget, so a "billion laughs" document fails after CFG_MAX_NODES instead of
 * eating memory. Duplicate and non-scalar mapping keys are errors. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "config.h"

#define CFG_MAX_ERRORS	200

/* ---- errors ---- */

void cfg_error(struct cfg_errors *e, const char *file, const struct cfg_node *at,
    const char *fmt, ...)
{
	char msg[1024], line[1400], **m;
	va_list ap;
	int n;

	if (!e)
		return;
	if (e->n > CFG_MAX_ERRORS)
		return;
	if (e->n == CFG_MAX_ERRORS) {
		snprintf(line, sizeof(line), "%s: too many errors, giving up", file ? file : "config");
	} else {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (file && at)
			n = snprintf(line, sizeof(line), "%s:%u:%u: %s", file, at->line, at->col, msg);
		else if (file)
			n = snprintf(line, sizeof(line), "%s: %s", file, msg);
		else
			n = snprintf(line, sizeof(line), "%s", msg);
		(void)n;
	}
	/* the text may quote the file: keep terminal control bytes out of it */
	for (unsigned char *p = (unsigned char *)line; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	m = realloc(e->msgs, (e->n + 1) * sizeof(*m));
	if (!m)
		return;
	e->msgs = m;
	if (!(m[e->n] = strdup(line)))
		return;
	e->n++;
}

void cfg_errors_print(const struct cfg_errors *e)
{
	for (size_t i = 0; e && i < e->n; i++)
		fprintf(stderr, "%s\n", e->msgs[i]);
}

void cfg_errors_clear(struct cfg_errors *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		free(e->msgs[i]);
	free(e->msgs);
	e->msgs = NULL;
	e->n = 0;
}

/* ---- arena: bump allocation in chunks, freed at once ---- */

#define ARENA_CHUNK	(64u * 1024)

struct chunk {
	struct chunk *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct chunk *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	struct chunk *c;
	size_t cap;

	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	if (n == 0)
		n = sizeof(max_align_t);
	c = a->head;
	if (c && c->cap - c->used >= n) {
		void *p = (char *)c->data + c->used;
		c->used += n;
		return p;
	}
	cap = n > ARENA_CHUNK / 4 ? n : ARENA_CHUNK;
	if (!(c = calloc(1, sizeof(*c) + cap)))
		return NULL;
	c->cap = cap;
	c->used = n;
	if (a->head && cap == n) {
		/* a big dedicated chunk: keep the current one for small allocations */
		c->next = a->head->next;
		a->head->next = c;
	} else {
		c->next = a->head;
		a->head = c;
	}
	return c->data;
}

static void arena_free(struct arena *a)
{
	struct chunk *c, *n;

	if (!a)
		return;
	for (c = a->head; c; c = n) {
		n = c->next;
		free(c);
	}
	free(a);
}

/* ---- reading files ---- */

char *cfg_file_read(const char *path, size_t max, size_t *len)
{
	struct stat st;
	size_t cap, n = 0;
	char *buf, *nb;
	ssize_t r;
	int fd, saved;

	/* Non-blocking open: a FIFO with no writer would hang the start-up. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		goto fail;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		goto fail;
	}
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
	if (cap > max + 1)
		cap = max + 1;
	if (!(buf = malloc(cap + 1)))
		goto fail;
	for (;;) {
		if (n == cap) {
			if (cap > max) {
				free(buf);
				errno = EFBIG;
				goto fail;
			}
			cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
			if (!(nb = realloc(buf, cap + 1))) {
				free(buf);
				goto fail;
			}
			buf = nb;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			saved = errno;
			free(buf);
			errno = saved;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max) {
		free(buf);
		errno = EFBIG;
		goto fail;
	}
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return NULL;
}

/* ---- the loader ---- */

struct anchor {
	char *name;
	struct cfg_node *node;
	size_t count;		/* nodes in the subtree, aliases expanded */
	struct anchor *next;
};

struct frame {
	struct cfg_node *node;
	struct cfg_node **keys, **items;
	size_t n, cap;
	struct cfg_node *key;	/* map: key waiting for its value */
	int have_key, bad_key;
	char *anchor;
	size_t count;
};

struct loader {
	const char *name;
	const char *buf;
	size_t len;
	struct cfg_errors *e;
	struct arena *ar;
	struct frame stack[CFG_MAX_DEPTH];
	int depth;
	struct anchor **htab;
	size_t hsize, nanchors;
	size_t total;
	int failed;		/* errors reported, keep going if we can */
	int fatal;		/* stop now */
	struct cfg_node *root;
};

static void ld_err(struct loader *l, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void ld_err(struct loader *l, unsigned line, unsigned col, const char *fmt, ...)
{
	struct cfg_node at = { .line = line, .col = col };
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg_error(l->e, l->name, line ? &at : NULL, "%s", msg);
	l->failed = 1;
}

static size_t hash_str(const char *s)
{
	size_t h = 5381;

	while (*s)
		h = h * 33 ^ (unsigned char)*s++;
	return h;
}

static struct anchor *anchor_find(struct loader *l, const char *name)
{
	struct anchor *a;

	if (!l->hsize)
		return NULL;
	for (a = l->htab[hash_str(name) & (l->hsize - 1)]; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			return a;
	return NULL;
}

static int anchor_set(struct loader *l, char *name, struct cfg_node *node, size_t count)
{
	struct anchor *a, **nt;
	size_t i, h;

	if ((a = anchor_find(l, name))) {	/* redefinition: the later one wins */
		free(name);
		a->node = node;
		a->count = count;
		return 0;
	}
	if (l->nanchors >= l->hsize) {
		size_t ns = l->hsize ? l->hsize * 2 : 64;

		if (!(nt = calloc(ns, sizeof(*nt))))
			return -1;
		for (i = 0; i < l->hsize; i++) {
			while ((a = l->htab[i])) {
				l->htab[i] = a->next;
				h = hash_str(a->name) & (ns - 1);
				a->next = nt[h];
				nt[h] = a;
			}
		}
		free(l->htab);
		l->htab = nt;
		l->hsize = ns;
	}
	if (!(a = calloc(1, sizeof(*a))))
		return -1;
	a->name = name;
	a->node = node;
	a->count = count;
	h = hash_str(name) & (l->hsize - 1);
	a->next = l->htab[h];
	l->htab[h] = a;
	l->nanchors++;
	return 0;
}

static void anchors_free(struct loader *l)
{
	struct anchor *a;

	for (size_t i = 0; i < l->hsize; i++) {
		while ((a = l->htab[i])) {
			l->htab[i] = a->next;
			free(a->name);
			free(a);
		}
	}
	free(l->htab);
}

static int budget(struct loader *l, size_t count, const yaml_mark_t *m, const char *what)
{
	if (count > CFG_MAX_NODES || l->total + count > CFG_MAX_NODES) {
		ld_err(l, (unsigned)m->line + 1, (unsigned)m->column + 1,
		    "%s: document has more than %u nodes after alias expansion "
		    "(too many or recursive aliases?)", what, (unsigned)CFG_MAX_NODES);
		l->fatal = 1;
		return -1;
	}
	l->total += count;
	return 0;
}

static int push_child(struct loader *l, struct cfg_node *node, size_t count)
{
	struct frame *f;
	void *p;

	if (l->depth == 0) {
		l->root = node;
		return 0;
	}
	f = &l->stack[l->depth - 1];
	f->count += count;
	if (f->node->type == CFG_MAP && !f->have_key) {
		f->have_key = 1;
		f->key = node;
		f->bad_key = node->type != CFG_SCALAR;
		if (f->bad_key)
			ld_err(l, node->line, node->col, "mapping key must be a scalar, not a %s",
			    node->type == CFG_MAP ? "mapping" : "sequence");
		return 0;
	}
	if (f->node->type == CFG_MAP) {
		f->have_key = 0;
		if (f->bad_key)
			return 0;
	}
	if (f->n == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 8;

		if (!(p = realloc(f->items, nc * sizeof(*f->items))))
			return -1;
		f->items = p;
		if (f->node->type == CFG_MAP) {
			if (!(p = realloc(f->keys, nc * sizeof(*f->keys))))
				return -1;
			f->keys = p;
		}
		f->cap = nc;
	}
	if (f->node->type == CFG_MAP)
		f->keys[f->n] = f->key;
	f->items[f->n++] = node;
	return 0;
}

struct kidx {
	const struct cfg_node *k;
	size_t i;
};

static int kidx_cmp(const void *a, const void *b)
{
	const struct kidx *x = a, *y = b;
	size_t n = x->k->len < y->k->len ? x->k->len : y->k->len;
	int c = memcmp(x->k->value, y->k->value, n);

	if (c)
		return c;
	if (x->k->len != y->k->len)
		return x->k->len < y->k->len ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

static void check_dups(struct loader *l, const struct cfg_node *map)
{
	struct kidx *ix;
	size_t i, first;

	if (map->n < 2)
		return;
	if (map->n <= 8) {	/* the common case: no allocation */
		for (i = 1; i < map->n; i++)
			for (size_t j = 0; j < i; j++)
				if (map->keys[i]->len == map->keys[j]->len &&
				    memcmp(map->keys[i]->value, map->keys[j]->value, map->keys[i]->len) == 0) {
					ld_err(l, map->keys[i]->line, map->keys[i]->col,
					    "duplicate key '%.80s' (first at line %u, column %u)",
					    map->keys[i]->value, map->keys[j]->line, map->keys[j]->col);
					break;
				}
		return;
	}
	if (!(ix = malloc(map->n * sizeof(*ix)))) {
		ld_err(l, map->line, map->col, "out of memory");
		return;
	}
	for (i = 0; i < map->n; i++) {
		ix[i].k = map->keys[i];
		ix[i].i = i;
	}
	qsort(ix, map->n, sizeof(*ix), kidx_cmp);
	for (first = 0, i = 1; i < map->n; i++) {
		if (ix[i].k->len == ix[first].k->len &&
		    memcmp(ix[i].k->value, ix[first].k->value, ix[i].k->len) == 0)
			ld_err(l, ix[i].k->line, ix[i].k->col,
			    "duplicate key '%.80s' (first at line %u, column %u)",
			    ix[i].k->value, ix[first].k->line, ix[first].k->col);
		else
			first = i;
	}
	free(ix);
}

static int open_collection(struct loader *l, yaml_event_t *ev, enum cfg_type t)
{
	const yaml_mark_t *m = &ev->start_mark;
	const unsigned char *anchor;
	struct cfg_node *node;
	struct frame *f;

	if (l->depth >= CFG_MAX_DEPTH) {
		ld_err(l, (unsigned)m->line + 1, (unsigned)m->column + 1,
		    "nesting deeper than %d levels", CFG_MAX_DEPTH);
		l->fatal = 1;
		return -1;
	}
	if (budget(l, 1, m, t == CFG_MAP ? "mapping" : "sequence") < 0)
		return -1;
	if (!(node = arena_alloc(l->ar, sizeof(*node))))
		return -1;
	memset(node, 0, sizeof(*node));
	node->type = t;
	node->line = (unsigned)m->line + 1;
	node->col = (unsigned)m->column + 1;
	anchor = t == CFG_MAP ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
	f = &l->stack[l->depth++];
	memset(f, 0, sizeof(*f));
	f->node = node;
	f->count = 1;
	if (anchor && !(f->anchor = strdup((const char *)anchor)))
		return -1;
	return 0;
}

static int close_collection(struct loader *l)
{
	struct frame *f = &l->stack[l->depth - 1];
	struct cfg_node *node = f->node;
	size_t count = f->count;
	int rc = 0;

	node->n = f->n;
	if (f->n) {
		if (!(node->items = arena_alloc(l->ar, f->n * sizeof(*node->items))))
			rc = -1;
		else
			memcpy(node->items, f->items, f->n * sizeof(*node->items));
		if (rc == 0 && node->type == CFG_MAP) {
			if (!(node->keys = arena_alloc(l->ar, f->n * sizeof(*node->keys))))
				rc = -1;
			else
				memcpy(node->keys, f->keys, f->n * sizeof(*node->keys));
		}
	}
	free(f->items);
	free(f->keys);
	f->items = f->keys = NULL;
	if (rc == 0 && node->type == CFG_MAP)
		check_dups(l, node);
	if (rc == 0 && f->anchor) {
		rc = anchor_set(l, f->anchor, node, count);
		f->anchor = NULL;
	}
	free(f->anchor);
	f->anchor = NULL;
	l->depth--;
	if (rc == 0)
		rc = push_child(l, node, count);
	return rc;
}

static void report_parser_error(struct loader *l, const yaml_parser_t *p)
{
	unsigned line = 1, col = 1;
	size_t off;
	int value;

	switch (p->error) {
	case YAML_MEMORY_ERROR:
		ld_err(l, 0, 0, "out of memory while parsing");
		break;
	case YAML_READER_ERROR:
		off = p->problem_offset;
		value = p->problem_value;
		/* a bad trailing octet: point at the sequence's leading byte */
		if (p->problem && strstr(p->problem, "trailing UTF-8")) {
			for (size_t k = 1; k <= 3 && k <= off && off <= l->len; k++) {
				unsigned char c = (unsigned char)l->buf[off - k];

				if (c >= 0xc0) {
					off -= k;
					value = c;
					break;
				}
				if ((c & 0xc0) != 0x80)
					break;
			}
		}
		/* libyaml gives a byte offset: turn it into line:col ourselves */
		for (size_t i = 0; i < off && i < l->len; i++) {
			if (l->buf[i] == '\n') {
				line++;
				col = 1;
			} else if (((unsigned char)l->buf[i] & 0xc0) != 0x80) {
				col++;
			}
		}
		if (value != -1)
			ld_err(l, line, col, "invalid input: %s (byte 0x%02x at offset %zu)",
			    p->problem ? p->problem : "bad byte", (unsigned)value & 0xffu, off);
		else
			ld_err(l, line, col, "invalid input: %s (at offset %zu)",
			    p->problem ? p->problem : "bad byte", off);
		break;
	case YAML_SCANNER_ERROR:
	case YAML_PARSER_ERROR:
	default:
		if (p->context)
			ld_err(l, (unsigned)p->problem_mark.line + 1, (unsigned)p->problem_mark.column + 1,
			    "%s (%s at line %u, column %u)", p->problem ? p->problem : "syntax error",
			    p->context, (unsigned)p->context_mark.line + 1,
			    (unsigned)p->context_mark.column + 1);
		else
			ld_err(l, (unsigned)p->problem_mark.line + 1, (unsigned)p->problem_mark.column + 1,
			    "%s", p->problem ? p->problem : "syntax error");
		break;
	}
}

static int on_scalar(struct loader *l, yaml_event_t *ev)
{
	const yaml_mark_t *m = &ev->start_mark;
	struct cfg_node *node;
	char *name = NULL;

	if (budget(l, 1, m, "scalar") < 0)
		return -1;
	if (!(node = arena_alloc(l->ar, sizeof(*node))))
		return -1;
	memset(node, 0, sizeof(*node));
	node->type = CFG_SCALAR;
	node->line = (unsigned)m->line + 1;
	node->col = (unsigned)m->column + 1;
	node->len = ev->data.scalar.length;
	node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	if (!(node->value = arena_alloc(l->ar, node->len + 1)))
		return -1;
	memcpy(node->value, ev->data.scalar.value, node->len);
	node->value[node->len] = '\0';
	if (ev->data.scalar.anchor) {
		if (!(name = strdup((const char *)ev->data.scalar.anchor)) ||
		    anchor_set(l, name, node, 1) < 0) {
			free(name);
			return -1;
		}
	}
	return push_child(l, node, 1);
}

static int on_alias(struct loader *l, yaml_event_t *ev)
{
	const yaml_mark_t *m = &ev->start_mark;
	const char *name = (const char *)ev->data.alias.anchor;
	struct anchor *a = anchor_find(l, name);

	if (!a) {
		/* also what a self-referencing alias looks like: the anchor is
		 * registered only once its node is complete */
		ld_err(l, (unsigned)m->line + 1, (unsigned)m->column + 1,
		    "alias '*%.80s' refers to no complete anchor (undefined or recursive)", name);
		l->fatal = 1;
		return -1;
	}
	if (budget(l, a->count, m, "alias") < 0)
		return -1;
	return push_child(l, a->node, a->count);
}

struct cfg_doc *cfg_doc_parse(const char *name, const char *buf, size_t len, struct cfg_errors *e)
{
	struct loader l = { .name = name, .buf = buf, .len = len, .e = e };
	struct cfg_doc *doc = NULL;
	yaml_parser_t p;
	yaml_event_t ev;
	int done = 0, ndocs = 0, rc;

	if (len > CFG_MAX_FILE_BYTES) {
		cfg_error(e, name, NULL, "file too large (%zu bytes; the limit is %u)", len,
		    (unsigned)CFG_MAX_FILE_BYTES);
		return NULL;
	}
	if (!(l.ar = calloc(1, sizeof(*l.ar))) || !yaml_parser_initialize(&p)) {
		free(l.ar);
		cfg_error(e, name, NULL, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	while (!done && !l.fatal) {
		if (!yaml_parser_parse(&p, &ev)) {
			report_parser_error(&l, &p);
			l.fatal = 1;
			break;
		}
		rc = 0;
		switch (ev.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++ndocs > 1) {
				ld_err(&l, (unsigned)ev.start_mark.line + 1, (unsigned)ev.start_mark.column + 1,
				    "a second document in the file; only one is allowed");
				l.fatal = 1;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_ALIAS_EVENT:
			rc = on_alias(&l, &ev);
			break;
		case YAML_SCALAR_EVENT:
			rc = on_scalar(&l, &ev);
			break;
		case YAML_SEQUENCE_START_EVENT:
			rc = open_collection(&l, &ev, CFG_SEQ);
			break;
		case YAML_MAPPING_START_EVENT:
			rc = open_collection(&l, &ev, CFG_MAP);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			rc = close_collection(&l);
			break;
		default:
			break;
		}
		if (rc < 0 && !l.fatal) {
			ld_err(&l, 0, 0, "out of memory");
			l.fatal = 1;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&p);
	while (l.depth > 0) {
		struct frame *f = &l.stack[--l.depth];

		free(f->items);
		free(f->keys);
		free(f->anchor);
	}
	anchors_free(&l);
	if (!l.failed && !l.root) {
		cfg_error(e, name, NULL, "empty document");
		l.failed = 1;
	}
	if (l.failed || l.fatal || !(doc = calloc(1, sizeof(*doc))) || !(doc->file = strdup(name))) {
		if (!l.failed && !l.fatal)
			cfg_error(e, name, NULL, "out of memory");
		free(doc);
		arena_free(l.ar);
		return NULL;
	}
	doc->root = l.root;
	doc->arena = l.ar;
	return doc;
}

struct cfg_doc *cfg_doc_load(const char *path, struct cfg_errors *e)
{
	struct cfg_doc *doc;
	size_t len;
	char *buf;

	if (!(buf = cfg_file_read(path, CFG_MAX_FILE_BYTES, &len))) {
		if (errno == EFBIG)
			cfg_error(e, path, NULL, "file too large (the limit is %u bytes)",
			    (unsigned)CFG_MAX_FILE_BYTES);
		else
			cfg_error(e, path, NULL, "cannot read: %s", strerror(errno));
		return NULL;
	}
	doc = cfg_doc_parse(path, buf, len, e);
	free(buf);
	return doc;
}

void cfg_doc_free(struct cfg_doc *d)
{
	if (!d)
		return;
	arena_free(d->arena);
	free(d->file);
	free(d);
}

const struct cfg_node *cfg_map_get(const struct cfg_node *map, const char *key)
{
	size_t kl;

	if (!map || map->type != CFG_MAP || !key)
		return NULL;
	kl = strlen(key);
	for (size_t i = 0; i < map->n; i++)
		if (map->keys[i]->len == kl && memcmp(map->keys[i]->value, key, kl) == 0)
			return map->items[i];
	return NULL;
}

/* Levenshtein distance, capped: names are short. */
static size_t cfg_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		prev[j] = j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t d = prev[j - 1] + (a[i - 1] != b[j - 1]);

			if (prev[j] + 1 < d)
				d = prev[j] + 1;
			if (cur[j - 1] + 1 < d)
				d = cur[j - 1] + 1;
			cur[j] = d;
		}
		memcpy(prev, cur, (lb + 1) * sizeof(*prev));
	}
	return prev[lb];
}

const char *cfg_closest(const char *word, const char *const *names, size_t maxd)
{
	const char *best = NULL;
	size_t bd = maxd + 1;

	for (size_t j = 0; names[j]; j++) {
		size_t d = cfg_edit_distance(word, names[j]);

		if (d < bd) {
			bd = d;
			best = names[j];
		}
	}
	return best;
}
