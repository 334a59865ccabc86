/*
 * spool.h - a shard's durable spool: messages, the outcome journal,
 * recovery, segment reclamation, health and the free-space reserve.
 *
 * Layout under spool_dir/<shard>/ (docs/spool-format.md):
 *   msg/<id>.seg         message records, group-committed
 *   journal/<id>.seg     per-recipient OUTCOME records, group-committed
 *   {msg,journal}/<id>.ready, .prep  segments prepared / being prepared:
 *                        never scanned; .ready adopted at start-up without
 *                        zeroing, .prep deleted (spool_log.h)
 *   quarantine/          copies of corrupt spans found by recovery
 *
 * Accounting (DESIGN.md spool invariant 4): a message segment counts its
 * live recipients: +rcpt_count when the message record is durable, -1 when
 * a final outcome (delivered, bounced, expired) for one of them is durable
 * in the journal. A closed segment at zero live recipients is deleted; a
 * journal segment is deleted once no live message segment is referenced by
 * any of its records. The caller gives each recipient at most one final
 * outcome.
 *
 * Recovery (spool_open): replay the journals, then scan the message
 * segments (streamed through one reused window: memory does not grow with
 * the segment size, and the zeros after a log's end are not read) and hand
 * back every recipient without a final outcome, once,
 * with its last deferral time. Corrupt spans are copied to quarantine/ and
 * counted; torn tails are ignored (never acknowledged). New records always
 * go to new segments.
 *
 * Health: any write or sync failure makes the spool unhealthy until
 * restart (never "retry the fsync, then acknowledge"). Below the free-space
 * reserve plus one segment (what the next preparation takes) new messages
 * are refused with -ENOSPC; journal records still go through (their
 * segments are pre-allocated).
 */
#ifndef SPOOL_H
#define SPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "spool_log.h"
#include "spool_read.h"
#include "spool_record.h"

struct ring;
struct spool;

struct spool_config {
	const char *dir; /* spool_dir; the shard's folder is created inside */
	uint16_t shard;
	uint64_t segment_size;		/* message segments, default 64 MiB */
	uint64_t journal_segment_size;	/* default 16 MiB */
	uint32_t commit_size_max;	/* default 1 MiB */
	uint32_t commit_slots;		/* commits in flight, default 4 */
	uint32_t message_size_max;	/* largest body, default 10 MiB */
	uint32_t recipients_max;	/* per message, default 1000 */
	uint32_t ready_segments;	/* prepared ahead, default 2 */
	uint64_t free_space_reserve;	/* bytes, default 512 MiB */
	bool use_fdatasync;		/* default false: RWF_DSYNC */
	bool allow_volatile;		/* accept tmpfs/ramfs: tests only */
	uint32_t read_fds;		/* segment fds cached for reads, default 16 */
};

void spool_config_defaults(struct spool_config *cfg);

/* A recipient handed back by recovery. msg is valid during the callback. */
struct spool_recovered {
	struct spool_location location;
	uint32_t rcpt_index;
	enum spool_rcpt_state state; /* PENDING or DEFERRED */
	uint64_t next_attempt_ns;
	/* Attempts counted by its latest OUTCOME (0: none yet), or
	 * SPOOL_ATTEMPTS_UNKNOWN from a version-1 record. */
	uint32_t attempts;
	const struct spool_message *msg;
};

typedef void spool_recover_fn(void *ctx, const struct spool_recovered *rcpt);

struct spool_recovery_stats {
	uint64_t message_segments;
	uint64_t journal_segments;
	uint64_t messages;
	uint64_t outcomes;
	uint64_t recipients_live;
	uint64_t recipients_final;
	uint64_t corrupt_spans;	/* quarantined */
	uint64_t holes;
	uint64_t torn_tails;
	uint64_t unknown_versions; /* of those spans, ones with a record version
				    * (or type) this build does not read */
	uint64_t segments_deleted;
	uint64_t journal_segments_deleted;
	uint64_t duration_ns;
	uint64_t bytes_read;  /* read from segment files by the scan */
	uint64_t window_size; /* largest scan window allocated (memory) */
	uint64_t window_allocs; /* scan window (re)allocations: 1 when reused */
};

/*
 * Open (and recover) a shard's spool on ring. fn sees every non-final
 * recipient. Start-up only: blocks until recovery is done and the first
 * segments are ready. Returns NULL with one clear line in err.
 */
struct spool *spool_open(struct ring *ring, const struct spool_config *cfg, spool_recover_fn *fn,
			 void *ctx, struct spool_recovery_stats *stats, char *err, size_t err_size);
void spool_close(struct spool *sp);

/*
 * Write a message record: op->type, op->input.message and op->callback set
 * by the caller. The callback runs with 0 once the record is durable, or
 * -errno. Returns 0, or -EIO (unhealthy), -ENOSPC (below the reserve),
 * -EMSGSIZE (over a bound); then the callback does not run.
 */
int spool_write_message(struct spool *sp, struct spool_append *op)
	__attribute__((warn_unused_result));

/* Write an outcome (journal) record; same contract. */
int spool_write_outcome(struct spool *sp, struct spool_append *op)
	__attribute__((warn_unused_result));

/* Install fn as the message log's place hook (spool_log.h): it sees
 * every message append, with its location, before the record is encoded. */
void spool_set_message_place_hook(struct spool *sp, spool_place_fn *fn, void *ctx);

bool spool_is_healthy(const struct spool *sp);
/* True while new messages would be refused for lack of space: free space
 * below free_space_reserve + segment_size (0 reserve: never). */
bool spool_is_below_reserve(struct spool *sp);
uint32_t spool_pending(const struct spool *sp);
/* Live recipients counted in message segments (for tests and stats). */
uint64_t spool_live_recipients(const struct spool *sp);
uint32_t spool_live_segments(const struct spool *sp);
const struct spool_log_stats *spool_message_stats(const struct spool *sp);
const struct spool_log_stats *spool_journal_stats(const struct spool *sp);

/* Largest MESSAGE record this spool writes (from message_size_max and
 * recipients_max): size read buffers with spool_read_buffer_size(this). */
uint32_t spool_message_record_size_max(const struct spool *sp);

/* The shard's record reader (spool_read.c; the API is spool_read.h). */
struct spool_reader *spool_reader_get(struct spool *sp);

/* Paths of the shard's folders (for tools and tests). */
void spool_shard_path(const char *spool_dir, uint16_t shard, const char *sub, char *out,
		      size_t out_size);

#endif /* SPOOL_H */
