/*
 * eng_deliver.h - a shard's delivery loop (docs/engine.md "The delivery
 * loop"): recipients recovered from or injected into this shard's spool
 * are grouped into jobs per destination domain and handed to the shard
 * that owns the domain; the owner delivers them over its pool of eng_conn
 * and sends each outcome back to the writer shard, which journals it; once
 * the journal record is durable one delivery-log line is written.
 *
 * Flow:
 *   eng_deliver_recovered() / eng_deliver_injected() (and stored DSNs):
 *     copy the envelope once (atomic refcount, immutable once handed off;
 *     the body only when injected: a recovered body is read back later),
 *     add the recipient to a job of its domain (at most
 *     max_recipients_per_transaction per job) on the new list.
 *   every loop turn (a ring hook): drain the mailbox (JOB: adopt; OUTCOME:
 *     journal; RELEASE: back to the pool), give new jobs to their owner
 *     (eng_domain_owner: adopt here, or the outbox to that shard), then
 *     schedule (unless [engine] hold): due jobs leave the retry heap (a
 *     binary min-heap on the next attempt); one without a body is first
 *     read back from the writer shard's spool (READ / LOADED mail when the
 *     writer is another shard), within a prefetch window and the shard's
 *     share of memory_budget; jobs with their body are routed and queued
 *     on their eng_dest: a static route; else the destination's MX
 *     addresses (eng_dns_route_resolve on the shard's resolver and cache,
 *     one lookup in flight per destination): NXDOMAIN bounces 5.1.2, null
 *     MX 5.1.10, no address 5.4.4, TEMPFAIL defers 4.4.3. A refused or
 *     timed-out connect moves to the next address; a full round of failures
 *     backs the destination off. Destinations with work open connections
 *     (eng_dest_want_connection); READY connections take jobs
 *     (eng_dest_next_job). Last, the outboxes are flushed and wakes posted.
 *   connection events map to outcomes: 2xx delivered, 5xx bounced, 4xx (or
 *     an unknown outcome) deferred to now + eng_config_retry_delay_ns, or
 *     expired past max_queue_lifetime.
 *   outcomes (ops from the owner's preallocated pool) go to the writer
 *     shard; a bounce or expiry of a message with a sender first stores its
 *     DSN ([engine] dsn), then spool_write_outcome; the ack writes the log
 *     line (eng_logfile, the node's one file) and the op goes home.
 *
 * Invariants:
 * - every recipient handed in gets exactly one outcome per attempt, and at
 *   most one final outcome (spool accounting), journaled by the shard
 *   whose spool holds the message;
 * - one shard (the owner) holds every job and connection of a domain, so
 *   destination limits are exact for the node;
 * - outcome ops in use + reserved <= ENG_DELIVER_OUTCOMES per shard; a job
 *   is started only when an outcome is reserved for each of its recipients,
 *   so an event never finds the pool empty;
 * - a message is freed by whichever shard drops its last reference.
 *
 * Ownership: the delivery state belongs to one shard thread and borrows
 * its ring, spool, config (the shard's current one), the node's mailbox
 * mesh and log file. Jobs move between shards by pointer (one owner at a
 * time); messages are shared read-only (an injected body is freed by the
 * last job that holds it, on any shard). Messages, jobs, destinations and
 * read-back bodies are heap memory; the bodies held (injected and read
 * back) are bounded per shard by memory_budget / shards, except one read
 * at a time. Connections and outcome ops are preallocated at create.
 *
 * Attempt counts: each outcome journals the recipient's count (OUTCOME
 * version 2); a recovered recipient goes on from it, in the log and on the
 * retry schedule (a version-1 deferral counts 1).
 *
 * XXX: names in static routes are not resolved (IP literals only).
 */
#ifndef ENG_DELIVER_H
#define ENG_DELIVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng_config.h"
#include "eng_limit.h"
#include "ring/ring.h"
#include "spool/spool.h"

/* Connections per shard when [engine] delivery_connections is 0. */
#define ENG_DELIVER_CONNS 64u
/* Outcome ops in flight per shard: journal appends awaiting their ack. */
#define ENG_DELIVER_OUTCOMES 8192u
/* Destinations hash table buckets (a power of two). */
#define ENG_DELIVER_DEST_BUCKETS 1024u

_Static_assert((ENG_DELIVER_DEST_BUCKETS & (ENG_DELIVER_DEST_BUCKETS - 1u)) == 0,
	       "buckets are a power of two");
_Static_assert(ENG_DELIVER_OUTCOMES >= 1000u,
	       "a full transaction (SMTP_RCPTS_PER_TRANSACTION_MAX) can be reserved");

struct eng_deliver;

struct eng_deliver_stats {
	uint64_t recipients_recovered;
	uint64_t recipients_dropped; /* out of memory at recovery: left in the spool */
	uint64_t messages_injected;
	uint64_t recipients_injected;
	uint64_t jobs_created;
	uint64_t jobs_handed_off; /* written here, sent to their owner shard */
	uint64_t jobs_adopted;	  /* owned here (from here or another shard) */
	uint64_t delivered;
	uint64_t bounced;
	uint64_t deferred;
	uint64_t outcome_errors; /* journal refused or failed the record */
	uint64_t dsns_stored;	 /* DSN messages written to this shard's spool */
	uint64_t dsn_errors;	 /* not built or not stored (bounce left live) */
	uint64_t log_errors;	 /* delivery-log write failed */
	uint64_t connections_opened;
	uint64_t connections_failed;
	uint64_t bodies_read;	    /* bodies read back from a spool for a job */
	uint64_t body_read_retries; /* reads refused for now (busy reader, full SQ) */
	uint64_t body_read_errors;  /* unreadable or failed CRC: never sent */
	uint64_t bodies_dropped;    /* dropped at a deferral (read back later) */
	uint64_t rcpt_replies_voided; /* RCPT 4xx/5xx voided by a broken session: deferred */
	uint64_t messages_quarantined; /* unreadable read-back: quarantined, never sent */
};

/*
 * Create a shard's delivery state on ring: the connection pool, the
 * outcome pool, the shard's resolver ([engine] dns_servers,
 * else /etc/resolv.conf) and DNS cache, and the schedule hook on ring. *config is the
 * shard's config pointer, read on every use (a reload replaces it). node
 * is the node-wide connection limit. body_account counts the bytes of
 * bodies this shard holds; it must outlive every shard's destroy (another
 * shard may free a body charged to it last). Call before spool_open
 * (recovery hands recipients in), then eng_deliver_attach_spool. Returns NULL with one line
 * in err.
 */
struct eng_deliver *eng_deliver_create(struct ring *ring, const struct eng_config *const *config,
				       struct eng_global_limit *node, _Atomic uint64_t *body_account,
				       uint32_t shard_index, char *err, size_t err_size);

struct ring_mailbox_mesh;
struct eng_logfile_shared;

/* Open the delivery log (the node's shared file, eng_logfile.h) on this
 * shard's ring; NULL or an empty path: no log. Call after create. Returns 0
 * or -errno with one line in err. */
int eng_deliver_attach_log(struct eng_deliver *deliver, struct eng_logfile_shared *shared,
			   char *err, size_t err_size);

/* With more than one shard: hand jobs to owner shards and outcomes back to
 * writer shards through mesh (the node's; this shard attached its ring).
 * Call once, after create and before eng_deliver_attach_spool. */
void eng_deliver_attach_mesh(struct eng_deliver *deliver, struct ring_mailbox_mesh *mesh);

/* The spool is open: outcomes can be written from the next loop turn on. */
void eng_deliver_attach_spool(struct eng_deliver *deliver, struct spool *spool);

/* Recovery callback body: copy what is needed from rcpt (valid only during
 * the call) and queue the recipient. */
void eng_deliver_recovered(struct eng_deliver *deliver, const struct spool_recovered *rcpt);

/*
 * A message just written to this shard's spool (the listener's append
 * callback, after the record is durable): write one Reception delivery-log
 * line (client_name / client_ip: the SMTP client as seen by the listener,
 * NULL or "" if unknown) and queue every recipient for delivery (handed to
 * the shard that owns its domain). msg is valid only during the call: the
 * message is copied once into memory, so a recipient delivered soon after
 * injection is sent from memory and never read back from disk. Call on the
 * shard's own thread, after eng_deliver_attach_spool.
 */
void eng_deliver_injected(struct eng_deliver *d, const struct spool_location *loc,
			  const struct spool_message *msg, const char *client_name,
			  const char *client_ip);

/*
 * Phase 1 of a stop (DRAIN): take no new work (no retries, no new
 * connections, no jobs handed to other shards), let transactions in flight
 * finish for [engine] stop_grace, then abort the rest (their recipients
 * deferred, due at once, not counted as an attempt). The loop keeps
 * running: outcomes of other shards are still journaled here. fn(ctx) is
 * called once from a loop turn when this shard is drained: no connection
 * open, every outcome op of its pool back (so journaled by its writer),
 * nothing in its outboxes. Runs the ring (the resolver's teardown): call
 * from the shard's loop, not from a ring callback or hook.
 */
typedef void eng_deliver_drained_fn(void *ctx);
void eng_deliver_drain(struct eng_deliver *deliver, eng_deliver_drained_fn *fn, void *ctx);
bool eng_deliver_is_drained(const struct eng_deliver *deliver);

/*
 * Phase 2 (STOP), once every shard is drained: free the jobs still in
 * this shard's inbound mail, cancel the timer. Without a drain before (one
 * shard, a failed start) it drains first, with no grace, running the ring
 * until drained (bounded). Stop: destroy the resolver (pending lookups leave their jobs for the
 * next start), abort every connection and run the ring until each is CLOSED and
 * every outcome op was acknowledged (bounded). The spool stays open; close
 * it after this. Then eng_deliver_destroy.
 */
void eng_deliver_stop(struct eng_deliver *deliver);

/* Free everything (after stop, or if the loop never ran). NULL is fine. */
void eng_deliver_destroy(struct eng_deliver *deliver);

const struct eng_deliver_stats *eng_deliver_stats_get(const struct eng_deliver *deliver);

#endif /* ENG_DELIVER_H */
