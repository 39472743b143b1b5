/* workers: scaling across cores without threads. The master forks N worker
 * processes, each a whole gateway on its own event loop; the workers share
 * the listen ports through SO_REUSEPORT, so the kernel spreads connections.
 * The master watches them, restarts one that dies, and passes signals on. */
#ifndef MGW_WORKERS_H
#define MGW_WORKERS_H

enum workers_role {
	WORKERS_CHILD,		/* this process is worker *idx: run the gateway */
	WORKERS_DONE,		/* the master, after every worker ended: exit with *status */
};

enum workers_role workers_run(unsigned n, unsigned *idx, int *status);

#endif
