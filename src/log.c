/* log: leveled diagnostics on stderr and the access log on stdout or a file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "mono.h"

static int log_level = LOG_INFO;
static char log_worker[16];	/* "/w2" in a worker process, else empty */
static FILE *access_fp;
static int access_owned;	/* access_fp is a file we opened */
static int access_regular;	/* access_fp is a regular file, not a pipe */

/* Access lines wait here until the event loop has run the callbacks of its
 * turn; then they go out together. One write per request was 11% of the
 * gateway's throughput; one per turn batches every request that turn ended. */
static char access_buf[65536];
static size_t access_len;
static struct event *access_flush_ev;	/* NULL: write each line at once */

/* A pipe's reader (a container runtime, a log shipper) can stall. The pipe
 * is then non-blocking: the lines wait in access_buf until it has room, and
 * lines that do not fit are dropped and counted, rather than the whole
 * gateway stopping in write(). */
static struct event_base *access_base;
static struct event *access_room_ev;	/* the pipe has room again */
static uint64_t access_dropped;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_set_level(int level)
{
	if (level < LOG_ERR)
		level = LOG_ERR;
	if (level > LOG_DEBUG)
		level = LOG_DEBUG;
	log_level = level;
}

int log_get_level(void)
{
	return log_level;
}

void log_set_worker(unsigned idx)
{
	snprintf(log_worker, sizeof(log_worker), "/w%u", idx);
}

/* strftime is the costly part of a timestamp and changes once a second. */
static size_t log_timestamp(char *buf, size_t len)
{
	static time_t cached_sec = -1;
	static char cached[24];
	struct timeval tv;
	struct tm tm;
	unsigned ms;
	size_t n;

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != cached_sec) {
		gmtime_r(&tv.tv_sec, &tm);
		if (strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			cached[0] = '\0';
		cached_sec = tv.tv_sec;
	}
	n = strlen(cached);
	if (len < n + 6) {
		buf[0] = '\0';
		return 0;
	}
	memcpy(buf, cached, n);
	ms = (unsigned)(tv.tv_usec / 1000);
	buf[n++] = '.';
	buf[n++] = (char)('0' + ms / 100);
	buf[n++] = (char)('0' + ms / 10 % 10);
	buf[n++] = (char)('0' + ms % 10);
	buf[n++] = 'Z';
	buf[n] = '\0';
	return n;
}

void log_msg(int level, const char *room, const char *fmt, ...)
{
	char line[2048], ts[40];
	va_list ap;
	int n;

	if (level > log_level)
		return;
	log_timestamp(ts, sizeof(ts));
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	/* One fprintf per line so concurrent writers (workers) do not interleave. */
	fprintf(stderr, "%s %-5s [%s%s] %s\n", ts, level_names[level], room, log_worker, line);
}

/* With --workers several processes share the access log. The kernel keeps
 * one append to a regular file whole, whatever its size, but one write to a
 * pipe only up to PIPE_BUF bytes: a file gets the batch in one write, a pipe
 * gets pieces of whole lines that fit in PIPE_BUF (log_access keeps its
 * lines that short). Returns how many bytes went out. */
static size_t access_write(const char *p, size_t len)
{
	size_t done = 0;

	while (done < len) {
		size_t n = len - done;
		ssize_t w;

		if (!access_regular && n > PIPE_BUF) {
			const char *nl = memrchr(p + done, '\n', PIPE_BUF);

			n = nl != NULL ? (size_t)(nl - (p + done)) + 1 : PIPE_BUF;
		}
		w = write(fileno(access_fp), p + done, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		if (w <= 0)
			return len;	/* a disk error: the lines are lost */
		done += (size_t)w;
	}
	return done;
}

static void access_room_cb(evutil_socket_t fd, short what, void *arg);

static void access_flush(void)
{
	size_t done;

	if (access_fp == NULL) {
		access_len = 0;
		return;
	}
	done = access_write(access_buf, access_len);
	memmove(access_buf, access_buf + done, access_len - done);
	access_len -= done;
	if (access_len > 0) {
		if (access_room_ev == NULL && access_base != NULL)
			access_room_ev = event_new(access_base, fileno(access_fp), EV_WRITE,
			    access_room_cb, NULL);
		if (access_room_ev != NULL)
			event_add(access_room_ev, NULL);
	} else if (access_dropped > 0) {
		log_warn("log", "access log: writing again; %llu lines were dropped while its "
		    "reader did not read", (unsigned long long)access_dropped);
		access_dropped = 0;
	}
}

static void access_room_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	access_flush();
}

static void access_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	/* Waiting for room already: the room callback writes. */
	if (access_room_ev == NULL || !event_pending(access_room_ev, EV_WRITE, NULL))
		access_flush();
}

static void access_room_free(void)
{
	if (access_room_ev != NULL)
		event_free(access_room_ev);
	access_room_ev = NULL;
}

int log_access_attach(struct event_base *base)
{
	access_flush();
	access_room_free();
	if (access_flush_ev != NULL)
		event_free(access_flush_ev);
	access_flush_ev = NULL;
	access_base = base;
	if (base == NULL)
		return 0;
	access_flush_ev = event_new(base, -1, 0, access_flush_cb, NULL);
	return access_flush_ev != NULL ? 0 : -1;
}

int log_access_open(const char *target)
{
	FILE *fp;
	struct stat st;

	log_access_close();
	if (target == NULL || strcmp(target, "off") == 0)
		return 0;
	if (strcmp(target, "-") == 0) {
		fp = stdout;
	} else {
		fp = fopen(target, "ae");
		if (fp == NULL)
			return -1;
		access_owned = 1;
	}
	access_fp = fp;
	access_regular = fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode);
	if (!access_regular && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
		fcntl(fileno(fp), F_SETFL, fcntl(fileno(fp), F_GETFL) | O_NONBLOCK);
	return 0;
}

int log_access_enabled(void)
{
	return access_fp != NULL;
}

void log_access_close(void)
{
	uint64_t give_up = mono_ms() + 1000;

	/* A slow reader gets a second to take the last lines; a stalled one
	 * must not hold up a stop. */
	access_flush();
	while (access_len > 0 && access_fp != NULL && mono_ms() < give_up) {
		struct pollfd pfd = { .fd = fileno(access_fp), .events = POLLOUT };

		if (poll(&pfd, 1, (int)(give_up - mono_ms())) <= 0)
			break;
		access_flush();
	}
	access_room_free();
	for (const char *p = access_buf; (p = memchr(p, '\n', access_len - (size_t)(p - access_buf))) != NULL; p++)
		access_dropped++;
	if (access_dropped > 0)
		log_warn("log", "access log: %llu lines dropped (its reader did not read)",
		    (unsigned long long)access_dropped);
	access_len = 0;
	access_dropped = 0;
	if (access_fp != NULL && access_owned)
		fclose(access_fp);
	access_fp = NULL;
	access_owned = 0;
}

/* Request text comes from the client: quotes, backslashes, control and
 * non-ASCII bytes are written as \xHH, so a line cannot be forged or carry
 * terminal escapes. Returns dst. */
static const char *log_escape(const char *src, char *dst, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < len; p++) {
		if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[*p >> 4];
			dst[o++] = hex[*p & 15];
		} else {
			dst[o++] = (char)*p;
		}
	}
	dst[o] = '\0';
	return dst;
}

void log_access(const struct log_access_rec *r)
{
	static char line[16384];
	char ts[40], target[8192], method[64];
	/* On a pipe a line must go out in one write of at most PIPE_BUF bytes
	 * to stay whole among the workers' lines: a long target is cut. */
	size_t cap = access_regular ? sizeof(line) : PIPE_BUF;
	int n;

	if (access_fp == NULL)
		return;
	log_timestamp(ts, sizeof(ts));
	n = snprintf(line, cap, "%s %s \"%s %s\" %d %llu %s %llu.%03llums rid=%llu\n",
	    ts, r->client, log_escape(r->method, method, sizeof(method)),
	    log_escape(r->target, target, access_regular ? sizeof(target) : PIPE_BUF / 2), r->status,
	    (unsigned long long)r->bytes, r->backend ? r->backend : "-",
	    (unsigned long long)(r->usec / 1000), (unsigned long long)(r->usec % 1000),
	    (unsigned long long)r->rid);
	if (n < 0)
		return;
	if ((size_t)n >= cap) {
		n = (int)cap - 1;
		line[n - 1] = '\n';
	}
	if (access_len + (size_t)n > sizeof(access_buf))
		access_flush();
	if (access_len + (size_t)n > sizeof(access_buf)) {
		if (access_dropped++ == 0)
			log_warn("log", "access log: its reader does not keep up; dropping lines "
			    "until it does");
		return;
	}
	/* Made active now, the flush runs after the callbacks already queued
	 * for this turn of the loop. */
	if (access_len == 0 && access_flush_ev != NULL)
		event_active(access_flush_ev, 0, 0);
	memcpy(access_buf + access_len, line, (size_t)n);
	access_len += (size_t)n;
	if (access_flush_ev == NULL)
		access_flush();
}
