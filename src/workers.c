/* workers: the master process of --workers N.
 *
 * The master runs no event loop: it waits for signals synchronously
 * (sigtimedwait) with SIGCHLD, SIGTERM, SIGINT and SIGHUP blocked, so no
 * handler ever runs between fork and exec-like code paths. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mono.h"
#include "workers.h"

/* A worker that dies this soon after its start, this many times in a row, is
 * not restarted again: the fault is in the set-up (a port taken, a file gone),
 * and a restart loop would only hide it. */
#define QUICK_DEATH_MS	1000
#define QUICK_DEATHS	5

struct worker {
	pid_t pid;		/* 0: not running */
	uint64_t started_ms;
	unsigned quick_deaths;
};


/* Returns 0 in the new child, 1 in the master, -1 when fork failed. */
static int worker_spawn(struct worker *w, unsigned idx, const sigset_t *oldmask)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_err("workers", "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* A worker outliving a killed master would hold the port forever. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() == 1)
			_exit(0);
		/* Out of the terminal's process group: a Ctrl-C reaches the master
		 * only, which passes it on once (a second one would mean "now"). */
		setpgid(0, 0);
		sigprocmask(SIG_SETMASK, oldmask, NULL);
		return 0;
	}
	w->pid = pid;
	w->started_ms = mono_ms();
	log_info("workers", "worker %u started (pid %d)", idx, (int)pid);
	return 1;
}

static void workers_signal(struct worker *w, unsigned n, int sig)
{
	for (unsigned i = 0; i < n; i++)
		if (w[i].pid > 0)
			kill(w[i].pid, sig);
}

/* Start worker i. Returns 1 in the new child; in the master 0, after
 * stopping everything when the fork failed. */
static int worker_start(struct worker *w, unsigned n, unsigned i, const sigset_t *oldmask,
    int *stopping, int *failed)
{
	int r = worker_spawn(&w[i], i, oldmask);

	if (r < 0) {
		*stopping = *failed = 1;
		workers_signal(w, n, SIGTERM);
	}
	return r == 0;
}

static unsigned workers_alive(const struct worker *w, unsigned n)
{
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++)
		k += w[i].pid > 0;
	return k;
}

enum workers_role workers_run(unsigned n, unsigned *idx, int *status)
{
	struct worker *w = calloc(n, sizeof(*w));
	sigset_t set, oldmask;
	int stopping = 0, failed = 0;

	*status = 0;
	if (w == NULL) {
		log_err("workers", "out of memory");
		*status = 1;
		return WORKERS_DONE;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, &oldmask);
	for (unsigned i = 0; i < n && !stopping; i++) {
		if (worker_start(w, n, i, &oldmask, &stopping, &failed)) {
			free(w);
			*idx = i;
			return WORKERS_CHILD;
		}
	}
	log_info("workers", "master pid %d running %u workers", (int)getpid(), n);
	while (!stopping || workers_alive(w, n) > 0) {
		struct timespec tick = { 1, 0 };
		int sig = sigtimedwait(&set, NULL, &tick);

		if (sig == SIGTERM || sig == SIGINT) {
			if (stopping)
				log_info("workers", "second signal: workers stop now");
			else
				log_info("workers", "%s: stopping %u workers", sig == SIGTERM ? "SIGTERM" : "SIGINT",
				    workers_alive(w, n));
			stopping = 1;
			/* A worker drains on the first signal, stops on the second. */
			workers_signal(w, n, sig);
			continue;
		}
		if (sig == SIGHUP) {
			workers_signal(w, n, SIGHUP);
			continue;
		}
		/* SIGCHLD, or the tick: reap whatever ended. */
		for (;;) {
			int st;
			pid_t pid = waitpid(-1, &st, WNOHANG);
			unsigned i;

			if (pid <= 0)
				break;
			for (i = 0; i < n && w[i].pid != pid; i++)
				;
			if (i == n)
				continue;
			w[i].pid = 0;
			if (stopping) {
				if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
					failed = 1;
				continue;
			}
			if (WIFSIGNALED(st))
				log_warn("workers", "worker %u (pid %d) killed by signal %d; restarting it", i, (int)pid,
				    WTERMSIG(st));
			else
				log_warn("workers", "worker %u (pid %d) exited with status %d; restarting it", i, (int)pid,
				    WEXITSTATUS(st));
			if (mono_ms() - w[i].started_ms < QUICK_DEATH_MS)
				w[i].quick_deaths++;
			else
				w[i].quick_deaths = 0;
			if (w[i].quick_deaths >= QUICK_DEATHS) {
				log_err("workers", "worker %u keeps dying at start-up; stopping the gateway", i);
				stopping = failed = 1;
				workers_signal(w, n, SIGTERM);
				continue;
			}
			if (worker_start(w, n, i, &oldmask, &stopping, &failed)) {
				free(w);
				*idx = i;
				return WORKERS_CHILD;
			}
		}
	}
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	free(w);
	log_info("workers", "all workers stopped");
	*status = failed ? 1 : 0;
	return WORKERS_DONE;
}
