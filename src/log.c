/* log: leveled diagnostics on stderr and the access log on stdout or a file. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int log_level = LOG_INFO;
static FILE *access_fp;
static int access_owned;	/* access_fp is a file we opened */

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

static size_t log_timestamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(buf + n, len - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
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
	fprintf(stderr, "%s %-5s [%s] %s\n", ts, level_names[level], room, line);
}

int log_access_open(const char *target)
{
	FILE *fp;

	log_access_close();
	if (target == NULL || strcmp(target, "off") == 0)
		return 0;
	/* log_access() writes each line with one write(2), unbuffered: a
	 * container's log collector sees each request at once. */
	if (strcmp(target, "-") == 0) {
		access_fp = stdout;
		return 0;
	}
	fp = fopen(target, "ae");
	if (fp == NULL)
		return -1;
	access_fp = fp;
	access_owned = 1;
	return 0;
}

int log_access_enabled(void)
{
	return access_fp != NULL;
}

void log_access_close(void)
{
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
	int n;

	if (access_fp == NULL)
		return;
	log_timestamp(ts, sizeof(ts));
	n = snprintf(line, sizeof(line), "%s %s \"%s %s\" %d %llu %s %llu.%03llums rid=%llu\n",
	    ts, r->client, log_escape(r->method, method, sizeof(method)),
	    log_escape(r->target, target, sizeof(target)), r->status,
	    (unsigned long long)r->bytes, r->backend ? r->backend : "-",
	    (unsigned long long)(r->usec / 1000), (unsigned long long)(r->usec % 1000),
	    (unsigned long long)r->rid);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* One write per line, past stdio: with --workers several processes
	 * append to the same file, and a line split over two writes would
	 * interleave with another worker's. */
	if (write(fileno(access_fp), line, (size_t)n) < 0 && errno == EINTR)
		(void)!write(fileno(access_fp), line, (size_t)n);
}
