/*
 * spool_recover.h - rebuild a shard's state from its segments and journal.
 *
 * Used by spool_open() at start-up and by the offline inspector. Reads
 * only; deletes nothing. Corrupt spans are copied into quarantine_dir when
 * it is not NULL.
 *
 * Order: every journal segment first (OUTCOME records, later records win
 * per recipient), then every message segment; for each recipient of each
 * valid MESSAGE record the sink's rcpt_fn sees its state (PENDING when
 * the journal has nothing for it). message_segment_fn sees each message
 * segment with its count of non-final recipients; journal_segment_fn each
 * journal segment with the message segments its records name.
 */
#ifndef SPOOL_RECOVER_H
#define SPOOL_RECOVER_H

#include <stdint.h>

#include "spool.h"

struct spool_recover_sink {
	void *ctx;
	spool_recover_fn *rcpt_fn;
	void (*message_segment_fn)(void *ctx, uint64_t segment_id, uint64_t live);
	void (*journal_segment_fn)(void *ctx, uint64_t segment_id, const uint64_t *refs,
				   uint32_t ref_count);
	/* Optional: every corrupt span, hole and torn tail, for reports. */
	spool_scan_fn *damage_fn;
};

int spool_recover_shard(const char *msg_dir, const char *journal_dir, const char *quarantine_dir,
			uint16_t shard, const struct spool_recover_sink *sink,
			struct spool_recovery_stats *stats, uint64_t *max_segment_id, char *err,
			size_t err_size);

#endif /* SPOOL_RECOVER_H */
