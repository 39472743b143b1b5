/* log: leveled diagnostics on stderr and the access log. */
#ifndef MGW_LOG_H
#define MGW_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_set_level(int level);
int log_get_level(void);
/* In worker process idx, every line names it: "[proxy/w1]". */
void log_set_worker(unsigned idx);

/* One line on stderr: "2026-12-03T17:50:01.123Z warn  [room] message".
 * 'room' names the subsystem; request-scoped lines put "rid=N" in the message. */
void log_msg(int level, const char *room, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_err(room, ...)   log_msg(LOG_ERR, room, __VA_ARGS__)
#define log_warn(room, ...)  log_msg(LOG_WARN, room, __VA_ARGS__)
#define log_info(room, ...)  log_msg(LOG_INFO, room, __VA_ARGS__)
#define log_debug(room, ...) \
	do { if (log_get_level() >= LOG_DEBUG) log_msg(LOG_DEBUG, room, __VA_ARGS__); } while (0)

/* Access log: "-" is stdout, NULL or "off" disables it, anything else is a file
 * opened for append. Returns -1 with errno set when the file cannot be opened. */
int log_access_open(const char *target);
/* With a base, access lines are written once per turn of its loop rather
 * than one write per request; NULL flushes and goes back to writing at once
 * (before the base is freed). */
struct event_base;
int log_access_attach(struct event_base *base);
int log_access_enabled(void);
void log_access_close(void);

struct log_access_rec {
	const char *client;	/* "127.0.0.1:50212" */
	const char *method;
	const char *target;	/* as the client sent it */
	int status;
	uint64_t bytes;		/* response body bytes sent to the client */
	const char *backend;	/* upstream URL or "-" */
	uint64_t usec;		/* total time */
	uint64_t rid;
};
void log_access(const struct log_access_rec *rec);

#endif
