/*
 * eng_auth_worker.h - SMTP AUTH password checks off the shards' rings.
 *
 * What: one worker thread per node runs eng_auth_check (crypt(3): a few
 * milliseconds of CPU per attempt for yescrypt) for every shard, so a
 * shard's ring never stalls on a hash: the session that sent AUTH waits
 * for its answer, every other session of the shard goes on.
 *
 * How: a shard fills a caller-owned struct eng_auth_job (a copy of the
 * credentials; it lives in the connection) and submits it into a bounded
 * FIFO (ENG_AUTH_QUEUE_MAX jobs; full: -EAGAIN, the listener answers
 * 454 4.7.0). The worker checks it, puts it on the shard's done list and
 * bumps the shard's eventfd, which the shard's ring polls; the shard then
 * takes its done jobs (eng_auth_worker_take) and answers the sessions.
 * The eventfd is written while the worker holds the lock that the taker
 * takes, so a job seen done is never touched by the worker again.
 *
 * Tables: the auth_file of every listener that has one is loaded at
 * create (a missing, unreadable or malformed file fails the start-up with
 * one line naming file and line) and again by eng_auth_worker_reload (the
 * main thread, at SIGHUP): a file that fails to load keeps the previous
 * table, with one line on stderr. Only the worker reads tables, so a
 * reload just hands the new ones over; the worker installs them between
 * two checks and frees the old ones. The set of listeners that offer
 * AUTH is fixed at start (auth_file needs a restart); its content is not.
 *
 * Ownership: the node owns the worker (create before the shards start,
 * destroy after they were joined). Jobs are borrowed from submit until
 * they come back from take. Eventfds belong to the worker and stay open
 * until destroy, so a shard never races with their closing.
 */
#ifndef ENG_AUTH_WORKER_H
#define ENG_AUTH_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng_auth.h"
#include "eng_config.h"

/* Jobs waiting or being checked, node-wide. At ~5 ms a check, a full
 * queue is ~0.3 s of work: beyond it a client is told to come back. */
#define ENG_AUTH_QUEUE_MAX 64u

struct eng_auth_worker;

struct eng_auth_job {
	/* Filled by the submitter. */
	void *ctx;
	uint32_t shard_index;
	uint32_t listener_index;
	bool refuse; /* check anyway (same cost), answer false: e.g. authzid */
	uint32_t user_len;
	uint32_t password_len;
	char user[ENG_AUTH_USER_SIZE];
	char password[ENG_AUTH_PASSWORD_MAX];
	/* Filled by the worker. */
	bool ok;
	/* Private. */
	struct eng_auth_job *next;
};

/*
 * Load the auth_file of every listener of config and start the worker.
 * Returns 0 with *out NULL when no listener has an auth_file (no thread),
 * 0 with *out set, or -errno with one line in err ("listener main:
 * /etc/ringmail/auth:3: expected user:hash ...").
 */
int eng_auth_worker_create(const struct eng_config *config, struct eng_auth_worker **out,
			   char *err, size_t err_size) ENG_WARN_UNUSED;
/* Stop and join the worker, close the eventfds, free the tables. Every
 * shard must have stopped. NULL is fine. */
void eng_auth_worker_destroy(struct eng_auth_worker *worker);

/* Does listener index offer AUTH (it had an auth_file at start)? */
bool eng_auth_worker_offers(const struct eng_auth_worker *worker, uint32_t listener_index);

/* SIGHUP, on the main thread: read the auth_files again (the paths given
 * at start). A file that fails keeps its previous table: one line on
 * stderr per such file. Returns the number of files that failed. */
uint32_t eng_auth_worker_reload(struct eng_auth_worker *worker);

/* On shard shard_index's thread, once: the eventfd to poll for done jobs
 * (readable when some are waiting). Returns the fd or -errno. */
int eng_auth_worker_attach(struct eng_auth_worker *worker, uint32_t shard_index);

/* Queue job (fields "filled by the submitter" set). 0, or -EAGAIN when
 * the queue is full (the job is not taken). */
int eng_auth_worker_submit(struct eng_auth_worker *worker, struct eng_auth_job *job)
	ENG_WARN_UNUSED;

/* On the shard's thread, after its eventfd polled readable: reset the
 * eventfd and return the shard's done jobs (a list through ->next, in no
 * particular order; NULL when none). */
struct eng_auth_job *eng_auth_worker_take(struct eng_auth_worker *worker, uint32_t shard_index);

/* Counters for tests and stats. */
struct eng_auth_worker_stats {
	uint64_t checked;
	uint64_t refused_full; /* submits answered -EAGAIN */
	uint64_t reloads;      /* tables replaced by a reload */
};
void eng_auth_worker_stats_get(struct eng_auth_worker *worker, struct eng_auth_worker_stats *out);

#endif /* ENG_AUTH_WORKER_H */
