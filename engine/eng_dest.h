/*
 * eng_dest.h - one destination's queue and admission decisions, pure.
 *
 * A destination (a domain, or later an MX roll-up) is owned by exactly one
 * shard, so its state is plain integers and its limits are exact without
 * locks (DESIGN.md "Domain ownership"). This module holds no I/O and reads
 * no clock: the shard passes now_ns in and acts on the decisions:
 *
 *   eng_dest_want_connection()  open one more connection now, wait until a
 *                               time, or nothing to do
 *   eng_dest_next_job()         what a READY connection does: send a job,
 *                               wait for a rate token, go idle, or quit
 *   eng_dest_connection_*()     bookkeeping when connections open and close
 *
 * Limits held (each a test in tests/engine/test_dest.c):
 * - connections open or opening <= settings.max_connections, and the
 *   node-wide eng_global_limit is taken for each of them;
 * - connections opened in any window <= connection burst + rate x window;
 * - messages started in any window <= message burst + rate x window;
 * - messages on one connection <= max_messages_per_connection;
 * - after a failed connection (refused, timed out, 421) no new one opens
 *   before the back-off ends: 30 s, doubling per consecutive failure, at
 *   most 10 min; the queue waits, it does not spin.
 *
 * Jobs are the caller's structs with an embedded struct eng_job (intrusive
 * FIFO); the destination never allocates and never frees them.
 */
#ifndef ENG_DEST_H
#define ENG_DEST_H

#include <stdbool.h>
#include <stdint.h>

#include "eng_config.h"
#include "eng_limit.h"

#define ENG_DEST_BACKOFF_BASE_NS (30ull * 1000000000ull)
#define ENG_DEST_BACKOFF_MAX_NS (600ull * 1000000000ull)

/* Embedded in the caller's job (a message's recipients for this domain). */
struct eng_job {
	struct eng_job *next;
	bool queued;
};

struct eng_dest_stats {
	uint64_t connections_opened;
	uint64_t connections_failed;
	uint64_t jobs_started;
	uint64_t rate_waits;
	uint64_t backoffs;
};

struct eng_dest {
	char domain[ENG_DOMAIN_SIZE];
	uint32_t domain_len;
	struct eng_destination settings;
	struct eng_bucket message_bucket;
	struct eng_bucket connection_bucket;
	struct eng_counter connections; /* open or opening */
	uint32_t idle_connections;	/* open, READY, with nothing to send */
	uint32_t opening_connections;	/* taken by want_connection, not yet up */
	struct eng_job *head;
	struct eng_job *tail;
	uint64_t queued_count;
	uint64_t backoff_until_ns;
	uint32_t consecutive_failures;
	struct eng_dest_stats stats;
};

enum eng_dest_open {
	ENG_DEST_OPEN_NONE,	/* nothing queued, or enough connections */
	ENG_DEST_OPEN_NOW,	/* a connection slot was taken: open one */
	ENG_DEST_OPEN_WAIT,	/* limited until *wake_ns (rate or back-off) */
	ENG_DEST_OPEN_FULL,	/* at a connection cap: a close will tell */
};

enum eng_dest_action {
	ENG_DEST_SEND,	/* *job is dequeued: send it */
	ENG_DEST_WAIT,	/* rate limited until *wake_ns; stay READY */
	ENG_DEST_IDLE,	/* nothing queued: idle (quit after idle_timeout) */
	ENG_DEST_QUIT,	/* max messages on this connection: quit it */
};

/* settings are copied (a reload calls eng_dest_set_settings). */
void eng_dest_init(struct eng_dest *dest, const char *domain, uint32_t domain_len,
		   const struct eng_destination *settings, uint64_t now_ns);
void eng_dest_set_settings(struct eng_dest *dest, const struct eng_destination *settings,
			   uint64_t now_ns);

/* Queue a job at the back (new or retried) or the front (a job a failed
 * connection hands back keeps its place). */
void eng_dest_push(struct eng_dest *dest, struct eng_job *job);
void eng_dest_push_front(struct eng_dest *dest, struct eng_job *job);
bool eng_dest_is_empty(const struct eng_dest *dest);
/* Take the first queued job off the queue (no limit applies), or NULL:
 * the caller gives it an outcome without a connection. */
struct eng_job *eng_dest_take(struct eng_dest *dest);

/* Should the shard open another connection? On NOW a connection slot and a
 * node-wide slot are taken; release them with eng_dest_connection_closed. */
enum eng_dest_open eng_dest_want_connection(struct eng_dest *dest, struct eng_global_limit *node,
					    uint64_t now_ns, uint64_t *wake_ns);

/* A connection that just became READY, having sent messages_sent so far.
 * Leaves idle_connections accounting to the caller's IDLE handling. */
enum eng_dest_action eng_dest_next_job(struct eng_dest *dest, uint32_t messages_sent,
				       uint64_t now_ns, struct eng_job **job, uint64_t *wake_ns);

/* The connection got its greeting and EHLO through: failures reset, and
 * it no longer counts as opening. */
void eng_dest_connection_up(struct eng_dest *dest);
/* A connection ended. was_up: eng_dest_connection_up was called for it
 * (else it still counted as opening). failed: refused, timed out, closed
 * by a 421, or refused before it was up — the destination backs off.
 * Releases both slots. */
void eng_dest_connection_closed(struct eng_dest *dest, struct eng_global_limit *node, bool was_up,
				bool failed, uint64_t now_ns);

#endif /* ENG_DEST_H */
