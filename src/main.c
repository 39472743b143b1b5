/* main: command line, configuration, wiring, signals and the event loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
#include "upstream.h"

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
	const char *access_log;
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
	struct event *sigterm, *sigint, *sighup;
	struct event *drain;
	uint64_t drain_left_ms;
	const char *access_log;
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
	    "      --access-log TARGET    '-' (stdout, default), 'off', or a file\n"
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
	enum { O_URL = 256, O_USER, O_PASS, O_PASSFILE, O_TIMER, O_ACCESS, O_VERSION };
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
	}
	if (c->etcdtimer > 0)
		e->timer_ms = (unsigned)c->etcdtimer;
	if (c->verbose)
		cfg->log.level = LOG_DEBUG;
	if (c->access_log != NULL)
		replace_str(&cfg->log.access_log, strdup(c->access_log));
	return -1;
}

static void print_plan(const struct config *cfg)
{
	printf("configuration %s is valid\n", cfg->file);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		printf("listen %s:%u http\n", cfg->listeners[i].address, (unsigned)cfg->listeners[i].port);
	if (cfg->etcd.nurls > 0) {
		printf("etcd");
		for (size_t i = 0; i < cfg->etcd.nurls; i++)
			printf(" %s", cfg->etcd.urls[i]);
		printf(" every %ums%s\n", cfg->etcd.timer_ms, cfg->etcd.username ? " with auth" : "");
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
				printf("  %-7s %s%s ->", method_name(m), api->base_path, res->path);
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
	if (proxy_inflight(gw->proxy) == 0 || gw->drain_left_ms <= 100) {
		if (proxy_inflight(gw->proxy) > 0)
			log_warn("main", "%zu requests still in flight, stopping anyway", proxy_inflight(gw->proxy));
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
		log_info("main", "second signal: stopping now");
		proxy_stopping(gw->proxy);
		event_base_loopexit(gw->base, NULL);
		return;
	}
	log_info("main", "%s: stopping (no new connections, %zu requests in flight)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", proxy_inflight(gw->proxy));
	front_stop_accepting(gw->front);
	gw->drain_left_ms = DRAIN_MS;
	gw->drain = event_new(gw->base, -1, EV_PERSIST, drain_cb, gw);
	event_add(gw->drain, &tv);
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
	proxy_free(gw->proxy);
	upstream_free(gw->up);
	front_free(gw->front);
	router_free(gw->rt);
	config_free(gw->cfg);
	if (gw->base)
		event_base_free(gw->base);
	log_access_close();
}

static int gateway_run(struct gateway *gw)
{
	struct config *cfg = gw->cfg;
	struct event_config *ecfg;
	size_t netcd;

	/* The changelist folds the enable/disable pairs evhttp does around
	 * every request into one epoll_ctl (measured: about 20% fewer cycles). */
	ecfg = event_config_new();
	if (ecfg == NULL)
		return 1;
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	gw->base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	/* Two priorities: the front's per-connection set-up runs before any I/O. */
	if (gw->base == NULL || event_base_priority_init(gw->base, 2) != 0) {
		log_err("main", "cannot create the event loop");
		return 1;
	}
	struct up_settings us = {
		.connect_timeout_ms = cfg->limits.connect_timeout_ms,
		.pool_max_idle = cfg->limits.pool_max_idle,
		.pool_idle_timeout_ms = cfg->limits.pool_idle_timeout_ms,
		.max_response_head = 65536,
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
	if (cfg->etcd.nurls > 0) {
		gw->disc = disc_new(gw->base, &cfg->etcd);
		if (gw->disc == NULL) {
			log_err("main", "cannot start etcd discovery (see the lines above)");
			return 1;
		}
	}
	netcd = wire_discovery(cfg, gw->disc);
	if (front_listen(gw->front, cfg->listeners, cfg->nlisteners) != 0)
		return 1;
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
	struct cfg_errors errs = { 0 };
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
	if (cli.check) {
		print_plan(gw.cfg);
		router_free(gw.rt);
		config_free(gw.cfg);
		return 0;
	}
	log_set_level(gw.cfg->log.level);
	gw.access_log = gw.cfg->log.access_log;
	if (log_access_open(gw.access_log) != 0) {
		log_err("main", "cannot open access log %s: %s", gw.access_log, strerror(errno));
		router_free(gw.rt);
		config_free(gw.cfg);
		return 1;
	}
	rc = gateway_run(&gw) == 0 ? 0 : 1;
	gateway_free(&gw);
	return rc;
}
