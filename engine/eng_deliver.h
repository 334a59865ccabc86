/*
 * eng_deliver.h - a shard's delivery loop (first vertical slice, docs/engine.md
 * "The delivery loop"): recovered recipients are grouped into jobs per
 * destination domain, sent over static routes with a fixed pool of
 * eng_conn, and every recipient's outcome is journaled; once the journal
 * record is durable one delivery-log line is written.
 *
 * Flow:
 *   recovery callback -> eng_deliver_recovered(): copy the message once
 *     (refcounted), add the recipient to a job of its domain (at most
 *     max_recipients_per_transaction per job); jobs wait on the retry list.
 *   every loop turn (a ring hook): due retry jobs are routed and queued on
 *     their eng_dest: a static route; else the destination's MX addresses
 *     (eng_dns_route_resolve on the shard's resolver and cache, one lookup
 *     in flight per destination, jobs parked until it ends, the address
 *     list kept until its TTL): NXDOMAIN bounces 5.1.2, null MX 5.1.10, no
 *     address 5.4.4, TEMPFAIL defers 4.4.3 on the retry schedule without
 *     backing the destination off. MX connections go to [engine] smtp_port
 *     of the current address; a refused or timed-out connect moves the
 *     destination to the next address in order (wrapping), and only a
 *     full round of failures backs it off. Destinations
 *     with work open connections (eng_dest_want_connection); READY
 *     connections take jobs (eng_dest_next_job).
 *   connection events map to outcomes: 2xx delivered, 5xx bounced, 4xx (or
 *     an unknown outcome) deferred to now + eng_config_retry_delay_ns.
 *   outcomes go through spool_write_outcome (ops from a preallocated pool);
 *     the journal ack writes the delivery-log line.
 *
 * Invariants:
 * - every recipient handed in gets exactly one outcome per attempt, and at
 *   most one final outcome (spool accounting);
 * - outcome ops in use + reserved <= ENG_DELIVER_OUTCOMES; a job is started
 *   only when an outcome is reserved for each of its recipients, so an
 *   event never finds the pool empty;
 * - a message is freed when its last job and its last outcome op let go.
 *
 * Ownership: the delivery state belongs to one shard thread and borrows
 * its ring, spool and config (the shard's current one). Messages, jobs and
 * destinations are heap memory allocated at recovery (XXX: from pools
 * sized by memory_budget, and bodies read back with spool_read_message
 * beyond it). Connections and outcome ops are preallocated at create.
 *
 * XXX: a recipient is delivered by the shard that holds its message; the
 * hand-off to the owner shard (eng_domain_owner) through the mailbox is the
 * next step. XXX: no expiry at max_queue_lifetime, no DSNs, no TLS; names
 * in static routes are not resolved yet (IP literals only).
 */
#ifndef ENG_DELIVER_H
#define ENG_DELIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "eng_config.h"
#include "eng_limit.h"
#include "ring/ring.h"
#include "spool/spool.h"

/* Connections per shard (XXX: from config). */
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
	uint64_t jobs_created;
	uint64_t delivered;
	uint64_t bounced;
	uint64_t deferred;
	uint64_t outcome_errors; /* journal refused or failed the record */
	uint64_t log_errors;	 /* delivery-log write failed */
	uint64_t connections_opened;
	uint64_t connections_failed;
};

/*
 * Create a shard's delivery state on ring: the connection pool, the
 * outcome pool, the delivery log (config->engine.delivery_log, opened
 * O_APPEND; none if empty), the shard's resolver ([engine] dns_servers,
 * else /etc/resolv.conf) and DNS cache, and the schedule hook on ring. *config is the
 * shard's config pointer, read on every use (a reload replaces it). node
 * is the node-wide connection limit. Call before spool_open (recovery hands
 * recipients in), then eng_deliver_attach_spool. Returns NULL with one line
 * in err.
 */
struct eng_deliver *eng_deliver_create(struct ring *ring, const struct eng_config *const *config,
				       struct eng_global_limit *node, uint32_t shard_index,
				       char *err, size_t err_size);

/* The spool is open: outcomes can be written from the next loop turn on. */
void eng_deliver_attach_spool(struct eng_deliver *deliver, struct spool *spool);

/* Recovery callback body: copy what is needed from rcpt (valid only during
 * the call) and queue the recipient. */
void eng_deliver_recovered(struct eng_deliver *deliver, const struct spool_recovered *rcpt);

/*
 * Stop: destroy the resolver (pending lookups leave their jobs for the
 * next start), abort every connection and run the ring until each is CLOSED and
 * every outcome op was acknowledged (bounded). The spool stays open; close
 * it after this. Then eng_deliver_destroy.
 */
void eng_deliver_stop(struct eng_deliver *deliver);

/* Free everything (after stop, or if the loop never ran). NULL is fine. */
void eng_deliver_destroy(struct eng_deliver *deliver);

const struct eng_deliver_stats *eng_deliver_stats_get(const struct eng_deliver *deliver);

#endif /* ENG_DELIVER_H */
