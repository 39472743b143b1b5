/* main: command line, configuration, wiring, signals and the event loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include <event2/event.h>
#include <event2/http.h>

#include "config.h"
#include "discovery.h"
#include "endpoint.h"
#include "front.h"
#include "log.h"
#include "mgw_version.h"
#include "openapi.h"
#include "proxy.h"
#include "router.h"
#include "tls.h"
#include "upstream.h"
#include "workers.h"

#define EXIT_USAGE 2
/* In-flight requests get this long to finish after SIGTERM. */
#define DRAIN_MS 10000

struct cli {
	const char *config;
	int check;
	int verbose;
	const char *etcdurl;
	const char *etcduser;
	char *etcdpass;
	const char *etcdpass_file;
	long etcdtimer;		/* -1: not given */
	unsigned workers;	/* 0: not given */
	const char *access_log;
	const char *etcdcafile;
	const char *etcdcert;
	const char *etcdkey;
};

struct gateway {
	struct event_base *base;
	struct config *cfg;
	struct router *rt;
	struct evhttp *http;
	struct front *front;
	struct upstream *up;
	struct proxy *proxy;
	struct disc *disc;
	struct tls_server **tls_listeners;	/* parallel to cfg->listeners */
	SSL_CTX *tls_backend;			/* https backends */
	SSL_CTX *tls_etcd;			/* https etcd members */
	struct event *sigterm, *sigint, *sighup;
	struct event *drain;
	uint64_t drain_left_ms;
	const char *access_log;
	uint64_t *rid_counter;		/* --workers: shared by every worker */
};

static void usage(FILE *fp)
{
	fprintf(fp,
	    "usage: mgw-evd -c FILE [-t] [-v] [options]\n"
	    "\n"
	    "  -c, --config FILE          OpenAPI document or gateway file to serve\n"
	    "  -t, --test                 check the configuration, print what would be served, exit\n"
	    "  -v, --verbose              debug logging\n"
	    "      --etcdurl URL[,URL]    etcd cluster members (http://host:2379)\n"
	    "      --etcdusername NAME    etcd user\n"
	    "      --etcdpassword PASS    etcd password (visible in ps: prefer the two below)\n"
	    "      --etcdpassword-file F  read the etcd password from a file\n"
	    "                             (or set MGW_ETCD_PASSWORD in the environment)\n"
	    "      --etcdtimer MS         etcd poll period in milliseconds (default 10000)\n"
	    "      --etcdcafile FILE      CA certificates for https etcd (default: the system store)\n"
	    "      --etcdcert FILE        client certificate for etcd (mutual TLS)\n"
	    "      --etcdkey FILE         its private key (default: in the --etcdcert file)\n"
	    "      --access-log TARGET    '-' (stdout, default), 'off', or a file\n"
	    "      --workers N            N worker processes sharing the ports (default 1)\n"
	    "  -h, --help                 this text\n"
	    "      --version              print the version\n");
}

static int bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "mgw-evd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see mgw-evd -h)\n");
	return EXIT_USAGE;
}

/* Returns -1 to go on, or an exit status. */
static int cli_parse(int argc, char **argv, struct cli *c)
{
	enum { O_URL = 256, O_USER, O_PASS, O_PASSFILE, O_TIMER, O_ACCESS, O_VERSION, O_CAFILE,
	    O_CERT, O_KEY, O_WORKERS };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, O_VERSION },
		{ "etcdurl", required_argument, NULL, O_URL },
		{ "etcdusername", required_argument, NULL, O_USER },
		{ "etcdpassword", required_argument, NULL, O_PASS },
		{ "etcdpassword-file", required_argument, NULL, O_PASSFILE },
		{ "etcdtimer", required_argument, NULL, O_TIMER },
		{ "access-log", required_argument, NULL, O_ACCESS },
		{ "etcdcafile", required_argument, NULL, O_CAFILE },
		{ "etcdcert", required_argument, NULL, O_CERT },
		{ "etcdkey", required_argument, NULL, O_KEY },
		{ "workers", required_argument, NULL, O_WORKERS },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	c->etcdtimer = -1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:tvh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': c->config = optarg; break;
		case 't': c->check = 1; break;
		case 'v': c->verbose = 1; break;
		case 'h': usage(stdout); return 0;
		case O_VERSION: printf("mgw-evd %s\n", MGW_VERSION); return 0;
		case O_URL: c->etcdurl = optarg; break;
		case O_USER: c->etcduser = optarg; break;
		case O_PASS:
			c->etcdpass = strdup(optarg);
			/* Hide it from ps as far as we can. */
			memset(optarg, 'x', strlen(optarg));
			break;
		case O_PASSFILE: c->etcdpass_file = optarg; break;
		case O_TIMER: {
			char *end;

			errno = 0;
			c->etcdtimer = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || c->etcdtimer < 100 || c->etcdtimer > 86400000)
				return bad_usage("--etcdtimer takes milliseconds from 100 to 86400000, not '%s'", optarg);
			break;
		}
		case O_ACCESS: c->access_log = optarg; break;
		case O_WORKERS: {
			char *end;
			long n;

			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > CFG_MAX_WORKERS)
				return bad_usage("--workers takes a number of processes from 1 to 64, not '%s'", optarg);
			c->workers = (unsigned)n;
			break;
		}
		case O_CAFILE: c->etcdcafile = optarg; break;
		case O_CERT: c->etcdcert = optarg; break;
		case O_KEY: c->etcdkey = optarg; break;
		case ':':
			return bad_usage("option %s needs a value", argv[optind - 1]);
		default:
			/* Long options that take no value land here too ("--version=1"). */
			return bad_usage("unknown option or unexpected value: %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (c->config == NULL)
		return bad_usage("%s", "-c FILE is required");
	if (c->etcdpass && c->etcdpass_file)
		return bad_usage("%s", "--etcdpassword and --etcdpassword-file exclude each other");
	if (c->etcdkey && !c->etcdcert)
		return bad_usage("%s", "--etcdkey needs --etcdcert (the certificate it belongs to)");
	return -1;
}

static char *read_secret_file(const char *path)
{
	FILE *fp = fopen(path, "re");
	char buf[4096];
	size_t n;

	if (fp == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* A trailing newline is the editor's, not the password's. */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return strdup(buf);
}

static void replace_str(char **slot, char *value)
{
	free(*slot);
	*slot = value;
}

/* Flags over environment over the file over defaults. */
static int cli_apply(struct cli *c, struct config *cfg)
{
	struct etcd_conf *e = &cfg->etcd;
	const char *env;

	if (c->etcdurl != NULL) {
		char *list = strdup(c->etcdurl), *save = NULL, *tok;
		size_t n = 0;

		for (size_t i = 0; i < e->nurls; i++)
			free(e->urls[i]);
		free(e->urls);
		e->urls = calloc(strlen(c->etcdurl) / 2 + 2, sizeof(char *));
		e->nurls = 0;
		for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			const char *err;
			struct url *u;

			while (*tok == ' ')
				tok++;
			u = url_parse(tok, &err);
			if (u == NULL) {
				fprintf(stderr, "mgw-evd: --etcdurl: '%s': %s\n", tok, err);
				free(list);
				return EXIT_USAGE;
			}
			url_unref(u);
			e->urls[n++] = strdup(tok);
		}
		e->nurls = n;
		free(list);
		if (n == 0) {
			fprintf(stderr, "mgw-evd: --etcdurl: no URL given\n");
			return EXIT_USAGE;
		}
	}
	if (c->etcduser != NULL)
		replace_str(&e->username, strdup(c->etcduser));
	if (c->etcdpass != NULL) {
		replace_str(&e->password, c->etcdpass);
		c->etcdpass = NULL;
	} else if (c->etcdpass_file != NULL) {
		char *s = read_secret_file(c->etcdpass_file);

		if (s == NULL) {
			fprintf(stderr, "mgw-evd: --etcdpassword-file: %s: %s\n", c->etcdpass_file, strerror(errno));
			return EXIT_USAGE;
		}
		replace_str(&e->password, s);
	} else if ((env = getenv("MGW_ETCD_PASSWORD")) != NULL) {
		replace_str(&e->password, strdup(env));
		/* /proc/PID/environ shows the original block: blank it there. */
		memset((char *)env, 'x', strlen(env));
	}
	if (c->etcdtimer > 0)
		e->timer_ms = (unsigned)c->etcdtimer;
	if (c->etcdcafile != NULL)
		conf_file_set(&e->tls.ca_file, strdup(c->etcdcafile), 0, 0, "--etcdcafile");
	if (c->etcdcert != NULL) {
		/* The file's key belongs to the file's certificate. */
		conf_file_set(&e->tls.cert_file, strdup(c->etcdcert), 0, 0, "--etcdcert");
		conf_file_set(&e->tls.key_file, strdup(c->etcdkey ? c->etcdkey : c->etcdcert), 0, 0,
		    c->etcdkey ? "--etcdkey" : "--etcdcert");
	}
	if (c->workers > 0)
		cfg->workers = c->workers;
	if (c->verbose)
		cfg->log.level = LOG_DEBUG;
	if (c->access_log != NULL)
		replace_str(&cfg->log.access_log, strdup(c->access_log));
	return -1;
}

static void print_tls_client(const char *what, const struct tls_client_conf *t)
{
	printf("%s tls: CA %s%s%s%s\n", what, t->ca_file.path ? t->ca_file.path : "the system store",
	    t->cert_file.path ? ", client certificate " : "",
	    t->cert_file.path ? t->cert_file.path : "",
	    t->verify ? "" : ", NOT VERIFIED");
}

static void print_plan(const struct config *cfg, struct tls_server *const *tls)
{
	printf("configuration %s is valid\n", cfg->file);
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (tls != NULL && tls[i] != NULL)
			printf("listen %s:%u https (%s)\n", cfg->listeners[i].address,
			    (unsigned)cfg->listeners[i].port, tls_server_summary(tls[i]));
		else
			printf("listen %s:%u http\n", cfg->listeners[i].address,
			    (unsigned)cfg->listeners[i].port);
	}
	print_tls_client("backend", &cfg->backend_tls);
	for (size_t i = 0; i < cfg->backend_tls.nno_verify; i++)
		printf("backend tls: %s NOT VERIFIED\n", cfg->backend_tls.no_verify[i]);
	if (cfg->etcd.nurls > 0) {
		printf("etcd");
		for (size_t i = 0; i < cfg->etcd.nurls; i++)
			printf(" %s", cfg->etcd.urls[i]);
		printf(" every %ums%s\n", cfg->etcd.timer_ms, cfg->etcd.username ? " with auth" : "");
		for (size_t i = 0; i < cfg->etcd.nurls; i++) {
			if (strncmp(cfg->etcd.urls[i], "https:", 6) == 0) {
				print_tls_client("etcd", &cfg->etcd.tls);
				break;
			}
		}
	} else {
		printf("etcd not configured: etcd endpoints use their default URLs\n");
	}
	for (size_t a = 0; a < cfg->napis; a++) {
		const struct api *api = cfg->apis[a];

		printf("api %s %s (%s)\n", api->base_path, api->title ? api->title : "",
		    api->version ? api->version : "");
		for (size_t r = 0; r < api->nres; r++) {
			const struct api_resource *res = &api->res[r];

			for (int m = 0; m < M__COUNT; m++) {
				const struct ep_group *g = res->prod[m];

				if (!(res->methods & (1u << m)))
					continue;
				/* A base path of "/" adds nothing in front of the resource. */
				printf("  %-7s %s%s ->", method_name(m),
				    strcmp(api->base_path, "/") == 0 ? "" : api->base_path, res->path);
				if (g == NULL) {
					printf(" (no production endpoint)\n");
					continue;
				}
				printf(" %s", group_type_name(g->type));
				for (size_t e = 0; e < g->neps; e++)
					printf(" %s", g->eps[e].spec);
				printf(" timeout %ums\n", g->timeout_ms);
			}
		}
	}
}

/* Point every etcd endpoint at its discovery slot. Returns the number of
 * etcd endpoints. */
static size_t wire_discovery(struct config *cfg, struct disc *d)
{
	size_t n = 0;

	for (size_t a = 0; a < cfg->napis; a++) {
		struct api *api = cfg->apis[a];

		for (size_t g = 0; g < api->ngroups; g++) {
			struct ep_group *grp = api->groups[g];

			for (size_t e = 0; e < grp->neps; e++) {
				if (grp->eps[e].key == NULL)
					continue;
				n++;
				if (d != NULL)
					grp->eps[e].slot = disc_slot(d, grp->eps[e].key);
			}
		}
	}
	return n;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gateway *gw = arg;

	(void)fd;
	(void)what;
	if ((proxy_inflight(gw->proxy) == 0 && front_output_pending(gw->front) == 0) ||
	    gw->drain_left_ms <= 100) {
		if (proxy_inflight(gw->proxy) > 0 || front_output_pending(gw->front) > 0)
			log_warn("main", "stopping anyway: requests in flight: %zu, responses not yet sent: %zu",
			    proxy_inflight(gw->proxy), front_output_pending(gw->front));
		proxy_stopping(gw->proxy);
		event_base_loopexit(gw->base, NULL);
		return;
	}
	gw->drain_left_ms -= 100;
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct gateway *gw = arg;
	struct timeval tv = { 0, 100000 };

	(void)what;
	if (sig == SIGHUP) {
		/* Log rotation: reopen the access log file. */
		if (gw->access_log != NULL && log_access_open(gw->access_log) != 0)
			log_err("main", "cannot reopen access log %s: %s", gw->access_log, strerror(errno));
		else
			log_info("main", "access log reopened");
		return;
	}
	if (gw->drain != NULL) {
		/* systemd and pkill signal a worker and its master together, and
		 * the master passes its signal on: the same stop request arrives
		 * twice within moments. Only a later one means "now". */
		if (DRAIN_MS - gw->drain_left_ms < 1000)
			return;
		log_info("main", "second signal: stopping now");
		proxy_stopping(gw->proxy);
		event_base_loopexit(gw->base, NULL);
		return;
	}
	log_info("main", "%s: stopping (no new connections; requests in flight: %zu)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", proxy_inflight(gw->proxy));
	front_stop_accepting(gw->front);
	gw->drain_left_ms = DRAIN_MS;
	gw->drain = event_new(gw->base, -1, EV_PERSIST, drain_cb, gw);
	event_add(gw->drain, &tv);
}

static void gateway_tls_free(struct gateway *gw)
{
	for (size_t i = 0; gw->tls_listeners != NULL && i < gw->cfg->nlisteners; i++)
		tls_server_free(gw->tls_listeners[i]);
	free(gw->tls_listeners);
	gw->tls_listeners = NULL;
	SSL_CTX_free(gw->tls_backend);
	SSL_CTX_free(gw->tls_etcd);
	gw->tls_backend = gw->tls_etcd = NULL;
}

static int backend_tls_wanted(const struct config *cfg)
{
	const struct tls_client_conf *b = &cfg->backend_tls;

	if (b->ca_file.path != NULL || b->cert_file.path != NULL || !b->verify || b->nno_verify > 0)
		return 1;
	for (size_t a = 0; a < cfg->napis; a++)
		for (size_t g = 0; g < cfg->apis[a]->ngroups; g++)
			for (size_t i = 0; i < cfg->apis[a]->groups[g]->neps; i++)
				if (cfg->apis[a]->groups[g]->eps[i].def->tls)
					return 1;
	return 0;
}

/* The lazy path of the backend TLS context (see backend_tls_wanted). */
static SSL_CTX *backend_tls_make(void *arg)
{
	struct gateway *gw = arg;
	struct cfg_errors e = { 0 }, w = { 0 };

	gw->tls_backend = tls_client_ctx(gw->cfg->file, &gw->cfg->backend_tls, &e, &w);
	for (size_t i = 0; i < e.n; i++)
		log_err("tls", "%s", e.msgs[i]);
	for (size_t i = 0; i < w.n; i++)
		log_warn("tls", "%s", w.msgs[i]);
	cfg_errors_clear(&e);
	cfg_errors_clear(&w);
	return gw->tls_backend;
}

/* Every certificate, key and CA file, checked before anything is served.
 * Returns 0, or -1 with every problem in e; warnings go to w. */
static int gateway_tls(struct gateway *gw, struct cfg_errors *e, struct cfg_errors *w)
{
	struct config *cfg = gw->cfg;
	const struct etcd_conf *ec = &cfg->etcd;
	int etcd_https = 0, bad = 0;

	gw->tls_listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*gw->tls_listeners));
	if (gw->tls_listeners == NULL) {
		cfg_error(e, cfg->file, NULL, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		if (cfg->listeners[i].tls == NULL)
			continue;
		gw->tls_listeners[i] = tls_server_new(cfg->file, cfg->listeners[i].tls, e, w);
		if (gw->tls_listeners[i] == NULL)
			bad = 1;
	}
	/* Checked at start-up when anything asks for it; otherwise made on the
	 * first https origin (an etcd key may name one later). */
	if (backend_tls_wanted(cfg) &&
	    (gw->tls_backend = tls_client_ctx(cfg->file, &cfg->backend_tls, e, w)) == NULL)
		bad = 1;
	for (size_t i = 0; i < ec->nurls; i++)
		etcd_https |= strncmp(ec->urls[i], "https:", 6) == 0;
	if (etcd_https) {
		if ((gw->tls_etcd = tls_client_ctx(cfg->file, &ec->tls, e, w)) == NULL)
			bad = 1;
	} else if (ec->tls.ca_file.path != NULL || ec->tls.cert_file.path != NULL) {
		const struct conf_file *f = ec->tls.ca_file.path ? &ec->tls.ca_file : &ec->tls.cert_file;
		struct cfg_node at = { .line = f->line, .col = f->col };

		cfg_error(w, f->line ? cfg->file : f->src, f->line ? &at : NULL,
		    "etcd TLS files are set but no etcd URL is https: they are not used");
	}
	return bad ? -1 : 0;
}

/* Loudly, at start-up: what is not verified. */
static void gateway_tls_warn(const struct config *cfg)
{
	const struct tls_client_conf *b = &cfg->backend_tls;

	if (!b->verify)
		log_warn("tls", "backend_tls verify: false (%s:%u:%u): the certificates and host names "
		    "of ALL https backends are NOT verified: for lab use only", cfg->file,
		    b->verify_line, b->verify_col);
	for (size_t i = 0; b->verify && i < b->nno_verify; i++)
		log_warn("tls", "backend_tls no_verify_origins: %s is NOT verified: for lab use only",
		    b->no_verify[i]);
}

static void gateway_free(struct gateway *gw)
{
	if (gw->sigterm) event_free(gw->sigterm);
	if (gw->sigint) event_free(gw->sigint);
	if (gw->sighup) event_free(gw->sighup);
	if (gw->drain) event_free(gw->drain);
	disc_free(gw->disc);
	/* evhttp first: freeing its connections ends the requests in flight,
	 * which still use the proxy, the upstream pools and the guards. */
	if (gw->http)
		evhttp_free(gw->http);
	front_free_https(gw->front);
	proxy_free(gw->proxy);
	upstream_free(gw->up);
	front_free(gw->front);
	router_free(gw->rt);
	gateway_tls_free(gw);
	config_free(gw->cfg);
	log_access_attach(NULL);
	if (gw->base)
		event_base_free(gw->base);
	log_access_close();
}

static int gateway_run(struct gateway *gw)
{
	struct config *cfg = gw->cfg;
	struct event_config *ecfg;
	size_t netcd;

	/* Response bodies pass through buffer chains that are freed as soon as
	 * the client has them, so the heap top rises and falls by the bytes in
	 * flight. glibc's default 128 KiB trim threshold gave that memory back
	 * with brk() and faulted it in again on the next responses (measured:
	 * 7 page faults and a quarter of the CPU of a 64 KiB GET). Keep a few
	 * MiB of free heap instead; setting the threshold also freezes glibc's
	 * adaptive mmap threshold, so fix that one above the largest chains. */
	mallopt(M_TRIM_THRESHOLD, 4 << 20);
	mallopt(M_TOP_PAD, 1 << 20);
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
	/* The changelist folds the enable/disable pairs evhttp does around
	 * every request into one epoll_ctl (measured: about 20% fewer cycles). */
	ecfg = event_config_new();
	if (ecfg == NULL)
		return 1;
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	gw->base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	/* Two priorities: the front's per-connection set-up runs before any I/O. */
	if (gw->base == NULL || event_base_priority_init(gw->base, 2) != 0 ||
	    log_access_attach(gw->base) != 0) {
		log_err("main", "cannot create the event loop");
		return 1;
	}
	struct up_settings us = {
		.connect_timeout_ms = cfg->limits.connect_timeout_ms,
		.pool_max_idle = cfg->limits.pool_max_idle,
		.pool_idle_timeout_ms = cfg->limits.pool_idle_timeout_ms,
		.max_response_head = 65536,
		.tls_ctx = gw->tls_backend,
		.tls_ctx_make = backend_tls_make,
		.tls_ctx_arg = gw,
		.tls_verify = cfg->backend_tls.verify,
		.tls_no_verify = cfg->backend_tls.no_verify,
		.tls_nno_verify = cfg->backend_tls.nno_verify,
	};
	gw->http = evhttp_new(gw->base);
	gw->up = upstream_new(gw->base, &us);
	if (gw->http == NULL || gw->up == NULL)
		return 1;
	gw->front = front_new(gw->base, gw->http, &cfg->limits);
	if (gw->front == NULL)
		return 1;
	gw->proxy = proxy_new(gw->http, gw->front, gw->up, gw->rt, &cfg->limits);
	if (gw->proxy == NULL)
		return 1;
	if (gw->rid_counter != NULL)
		proxy_share_rids(gw->proxy, gw->rid_counter);
	if (cfg->etcd.nurls > 0) {
		gw->disc = disc_new(gw->base, &cfg->etcd);
		if (gw->disc == NULL) {
			log_err("main", "cannot start etcd discovery (see the lines above)");
			return 1;
		}
		disc_set_tls(gw->disc, gw->tls_etcd);
	}
	netcd = wire_discovery(cfg, gw->disc);
	if (front_listen(gw->front, cfg->listeners, cfg->nlisteners, gw->tls_listeners, cfg->workers > 1) != 0)
		return 1;
	for (size_t i = 0; front_https_server(gw->front, i) != NULL; i++)
		proxy_serve(gw->proxy, front_https_server(gw->front, i));
	if (gw->disc != NULL) {
		if (disc_start(gw->disc) != 0)
			return 1;
	} else if (netcd > 0) {
		log_info("main", "no etcd configured: %zu etcd endpoint%s use%s the default URL", netcd,
		    netcd == 1 ? "" : "s", netcd == 1 ? "s" : "");
	}
	gw->sigterm = evsignal_new(gw->base, SIGTERM, signal_cb, gw);
	gw->sigint = evsignal_new(gw->base, SIGINT, signal_cb, gw);
	gw->sighup = evsignal_new(gw->base, SIGHUP, signal_cb, gw);
	evsignal_add(gw->sigterm, NULL);
	evsignal_add(gw->sigint, NULL);
	evsignal_add(gw->sighup, NULL);
	log_info("main", "mgw-evd %s serving %zu API%s from %s", MGW_VERSION, cfg->napis,
	    cfg->napis == 1 ? "" : "s", cfg->file);
	event_base_dispatch(gw->base);
	log_info("main", "stopped");
	return 0;
}

int main(int argc, char **argv)
{
	struct cli cli = { 0 };
	struct cfg_errors errs = { 0 }, warns = { 0 };
	struct gateway gw = { 0 };
	int rc;

	if ((rc = cli_parse(argc, argv, &cli)) >= 0) {
		free(cli.etcdpass);
		return rc;
	}
	signal(SIGPIPE, SIG_IGN);
	gw.cfg = config_load(cli.config, &errs);
	if (gw.cfg != NULL && (rc = cli_apply(&cli, gw.cfg)) >= 0) {
		free(cli.etcdpass);
		config_free(gw.cfg);
		return rc;
	}
	free(cli.etcdpass);
	if (gw.cfg != NULL)
		gw.rt = router_build(gw.cfg->apis, gw.cfg->napis, &errs);
	if (gw.cfg == NULL || gw.rt == NULL) {
		cfg_errors_print(&errs);
		fprintf(stderr, "mgw-evd: %s: %zu error%s, nothing served\n", cli.config, errs.n,
		    errs.n == 1 ? "" : "s");
		cfg_errors_clear(&errs);
		config_free(gw.cfg);
		return 1;
	}
	cfg_errors_clear(&errs);
	if (gateway_tls(&gw, &errs, &warns) != 0) {
		cfg_errors_print(&errs);
		for (size_t i = 0; i < warns.n; i++)
			fprintf(stderr, "mgw-evd: warning: %s\n", warns.msgs[i]);
		fprintf(stderr, "mgw-evd: %s: %zu error%s, nothing served\n", cli.config, errs.n,
		    errs.n == 1 ? "" : "s");
		cfg_errors_clear(&errs);
		cfg_errors_clear(&warns);
		gateway_tls_free(&gw);
		router_free(gw.rt);
		config_free(gw.cfg);
		return 1;
	}
	if (cli.check) {
		for (size_t i = 0; i < warns.n; i++)
			fprintf(stderr, "mgw-evd: warning: %s\n", warns.msgs[i]);
		cfg_errors_clear(&warns);
		print_plan(gw.cfg, gw.tls_listeners);
		gateway_tls_free(&gw);
		router_free(gw.rt);
		config_free(gw.cfg);
		return 0;
	}
	log_set_level(gw.cfg->log.level);
	for (size_t i = 0; i < warns.n; i++)
		log_warn("tls", "%s", warns.msgs[i]);
	cfg_errors_clear(&warns);
	gateway_tls_warn(gw.cfg);
	gw.access_log = gw.cfg->log.access_log;
	if (log_access_open(gw.access_log) != 0) {
		log_err("main", "cannot open access log %s: %s", gw.access_log, strerror(errno));
		gateway_tls_free(&gw);
		router_free(gw.rt);
		config_free(gw.cfg);
		return 1;
	}
	if (gw.cfg->workers > 1) {
		unsigned idx;
		enum workers_role role = WORKERS_DONE;

		/* The master returns only when every worker has ended. A worker
		 * restarted later inherits the same shared counter. */
		rc = 1;
		gw.rid_counter = mmap(NULL, sizeof(*gw.rid_counter), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (gw.rid_counter == MAP_FAILED) {
			log_err("main", "cannot share memory between workers: %s", strerror(errno));
			gw.rid_counter = NULL;
		} else if (front_probe(gw.cfg->listeners, gw.cfg->nlisteners) == 0) {
			role = workers_run(gw.cfg->workers, &idx, &rc);
		}
		if (role == WORKERS_DONE) {
			if (gw.rid_counter != NULL)
				munmap(gw.rid_counter, sizeof(*gw.rid_counter));
			gateway_tls_free(&gw);
			router_free(gw.rt);
			config_free(gw.cfg);
			log_access_close();
			return rc;
		}
		log_set_worker(idx);
	}
	rc = gateway_run(&gw) == 0 ? 0 : 1;
	gateway_free(&gw);
	return rc;
}
