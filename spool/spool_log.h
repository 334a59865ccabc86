/*
 * spool_log.h - one append-only, group-committed log of records over a
 * directory of pre-zeroed O_DIRECT segment files, driven by one ring.
 *
 * A shard's spool has two logs: messages and the journal of recipient
 * outcomes. Both work the same way:
 *
 * - Segment files are created ahead of need (a pool of ready segments):
 *   `<dir>/<segment id, 16 hex>.prep` opened O_DIRECT, fallocated, zeros
 *   written over the whole file through the ring, fsynced, renamed to
 *   `<id>.ready`, the directory fsynced. A commit is then a pure overwrite
 *   of written extents: no metadata, no io-wq (io_uring.md 4.2). When the
 *   log first commits into a ready segment it renames it `<id>.seg` and
 *   syncs the directory through the ring; no commit in it is acknowledged
 *   before both completed. Recovery scans only `.seg` files; spool_log_create
 *   deletes `.prep` files and adopts `.ready` ones (under fresh ids)
 *   without zeroing them again. Reclaimed segments are recycled into
 *   `.ready` files (rename, directory fsync).
 * - Appends queue caller-owned struct spool_append ops. At the start of
 *   each loop turn (a ring hook) everything queued is encoded into the
 *   open commit slot, padded to a 4096-byte boundary with a PAD record and
 *   written with one WRITE_FIXED | RWF_DSYNC (or a write, then one
 *   fdatasync). Up to commit_slots commits are in flight at once.
 * - An append's callback runs with result 0 only after the completion that
 *   covers its bytes, and after every earlier commit of the log completed
 *   successfully: callbacks run in log order (DESIGN.md spool invariant 1).
 * - Every commit starts on a 4096-byte boundary past the previous one, so
 *   acknowledged bytes are never rewritten (invariant 2).
 * - A failed data or sync write (EIO, ENOSPC, ...) fails every append it
 *   covered and every later one, and turns the log unhealthy for good:
 *   never "retry the fsync, then acknowledge". EAGAIN/EINTR resubmit; a
 *   short write resubmits the remainder.
 *
 * Ownership: the log borrows the ring; an append op and the input it points
 * to (message spans) are borrowed until its callback runs.
 */
#ifndef SPOOL_LOG_H
#define SPOOL_LOG_H

#include <stdbool.h>
#include <stdint.h>

#include "spool_record.h"

struct ring;
struct spool_log;
struct spool_append;

#define SPOOL_BLOCK_SIZE 4096u

/* ring_op.tag values of the log's own ops, for fault hooks in tests. */
enum spool_op_tag {
	SPOOL_TAG_COMMIT_WRITE = 0x5101,
	SPOOL_TAG_COMMIT_SYNC = 0x5102,
	SPOOL_TAG_PREPARE = 0x5103,
	SPOOL_TAG_DELETE = 0x5104,
	SPOOL_TAG_ACTIVATE = 0x5105, /* .ready -> .seg rename and its directory sync */
};
#define SPOOL_COMMIT_SLOTS_MAX 8u

typedef void spool_append_cb(struct spool_append *op, int32_t result);

struct spool_append {
	/* Filled by the caller. */
	spool_append_cb *callback;
	void *ctx;
	uint8_t type; /* SPOOL_RECORD_MESSAGE or SPOOL_RECORD_OUTCOME */
	union {
		const struct spool_message *message;
		const struct spool_outcome *outcome;
	} input;
	/* Filled by the log when the record is placed. */
	struct spool_location location;
	uint64_t commit_seq;
	uint32_t record_size;
	/* Private. */
	struct spool_append *next;
};

struct spool_log_config {
	const char *dir;	  /* must exist */
	uint16_t shard;
	uint64_t segment_size;	  /* multiple of SPOOL_BLOCK_SIZE */
	uint32_t commit_size_max; /* flush a commit at this size */
	uint32_t commit_slots;	  /* commits in flight, 1..SPOOL_COMMIT_SLOTS_MAX */
	uint32_t record_size_max; /* largest single record accepted */
	uint32_t ready_segments;  /* segments kept prepared ahead */
	bool use_fdatasync;	  /* write + fdatasync instead of RWF_DSYNC */
	uint64_t first_segment_id; /* ids allocated from max(this, clock) */
	bool allow_volatile;	   /* accept tmpfs/ramfs (tests only) */
	uint64_t free_space_reserve; /* no new segment below this much free space */
	/* Hand each commit to the kernel as soon as the flush queued it
	 * (ring_submit) instead of with the turn's one submit after every
	 * hook: for the log whose acks clients wait for (messages), so the
	 * device starts before the other hooks' work (the journal's encoding,
	 * the engine's). Costs one more io_uring_enter per committing turn. */
	bool submit_early;
};

/* Called for every append just before its own callback, with the same
 * result: lets the spool account recipients per segment. */
typedef void spool_ack_fn(void *ctx, struct spool_append *op, int32_t result);
void spool_log_set_ack_hook(struct spool_log *log, spool_ack_fn *fn, void *ctx);

/* Called for every append when it is placed, with op->location set and
 * before its record is encoded: the owner of the input may still rewrite
 * bytes of it in place (never its size), e.g. the listener writes the
 * queue id into the Received: header it prepended. */
typedef void spool_place_fn(void *ctx, struct spool_append *op);
void spool_log_set_place_hook(struct spool_log *log, spool_place_fn *fn, void *ctx);

/* Called when a segment is closed (full) and its last commit completed. */
typedef void spool_segment_closed_fn(void *ctx, uint64_t segment_id);

struct spool_log_stats {
	uint64_t appends;
	uint64_t appended_bytes;
	uint64_t commits;
	uint64_t commit_bytes;	/* bytes written, padding included */
	uint64_t short_writes;
	uint64_t resubmits;
	uint64_t failures;
	uint64_t segments_created;
	uint64_t segments_deleted;
	uint64_t segments_recycled;
	uint64_t segments_adopted;  /* .ready files taken over at start-up, not zeroed */
	uint64_t segments_discarded; /* .prep files deleted at start-up */
	/* Flushes that failed the pending appends because no segment could be
	 * made (the last preparation's error: ENOSPC, EIO, ...). */
	uint64_t appends_failed_no_segment;
};

/* Create a log on ring. Sets err and returns NULL on failure (directory
 * missing, O_DIRECT unsupported, buffer registration failure). Blocks
 * until the first segment is ready (start-up only). */
struct spool_log *spool_log_create(struct ring *ring, const struct spool_log_config *cfg,
				   char *err, size_t err_size);
void spool_log_destroy(struct spool_log *log);

void spool_log_set_closed_callback(struct spool_log *log, spool_segment_closed_fn *fn, void *ctx);

/*
 * Queue an append. Returns 0 (callback will run), -EIO if the log is
 * unhealthy, -EMSGSIZE if the record is larger than record_size_max or
 * breaks a record bound. On error the callback does not run. The callback
 * gets 0 once the record is durable, or a negative errno: the log's error
 * once unhealthy, or the last segment preparation's error (e.g. -ENOSPC)
 * when no segment is active, ready or being prepared to place it in.
 */
int spool_log_append(struct spool_log *log, struct spool_append *op)
	__attribute__((warn_unused_result));

/* Flush now what is queued (also runs as a ring hook every turn). */
void spool_log_flush(struct spool_log *log);

bool spool_log_is_healthy(const struct spool_log *log);
/* First error seen (-errno), 0 while healthy. */
int spool_log_error(const struct spool_log *log);
/* Appends queued or in flight, not yet called back. */
uint32_t spool_log_pending(const struct spool_log *log);
const struct spool_log_stats *spool_log_stats_get(const struct spool_log *log);

/* Id of the segment being written, 0 if none. */
uint64_t spool_log_active_segment(const struct spool_log *log);
/* True if segment_id has commits in flight or is the active segment. */
bool spool_log_segment_is_busy(const struct spool_log *log, uint64_t segment_id);

/* Delete a closed segment file (unlink, then directory fsync through the
 * ring); done_fn runs once the directory sync completed (res 0 or -errno). */
typedef void spool_delete_done_fn(void *ctx, uint64_t segment_id, int32_t res);
int spool_log_delete_segment(struct spool_log *log, uint64_t segment_id,
			     spool_delete_done_fn *done_fn, void *ctx)
	__attribute__((warn_unused_result));

/* Reclaim a closed segment by recycling its file into the ready pool
 * under a new id (rename, then directory fsync): no re-zeroing, so a
 * spool in steady state writes each byte once. The old records stay in
 * the file but carry the old segment id, so recovery never takes them for
 * the new segment's (they fail the place check and end its log). Falls
 * back to deletion when the pool is full. done_fn as for deletion: the
 * old id is durably gone. */
int spool_log_recycle_segment(struct spool_log *log, uint64_t segment_id,
			      spool_delete_done_fn *done_fn, void *ctx)
	__attribute__((warn_unused_result));

/*
 * A segment file's name tells its state (docs/spool-format.md 4.1):
 *   <id>.prep   being prepared (zero-filled, fsynced); deleted at start-up
 *   <id>.ready  prepared and its name durable; never held an acknowledged
 *               record; adopted at start-up without zeroing, never scanned
 *   <id>.seg    in the log: renamed from .ready (and the directory synced)
 *               before any commit in it is acknowledged; recovery scans these
 */
enum spool_file_state {
	SPOOL_FILE_SEG,
	SPOOL_FILE_READY,
	SPOOL_FILE_PREP,
};

/* Segment file path helpers (no allocation; out must hold PATH_MAX). */
void spool_log_segment_path(const char *dir, uint64_t segment_id, char *out, size_t out_size);
void spool_log_file_path(const char *dir, uint64_t segment_id, enum spool_file_state state,
			 char *out, size_t out_size);

/* ---- Offline scanning (recovery, the inspector) ---- */

enum spool_scan_event {
	SPOOL_SCAN_RECORD,	/* a valid record */
	SPOOL_SCAN_CORRUPT,	/* invalid bytes followed by valid records */
	SPOOL_SCAN_HOLE,	/* unwritten (zero) bytes followed by valid records */
	SPOOL_SCAN_TORN_TAIL,	/* invalid bytes after the last valid record */
};

struct spool_scan_item {
	enum spool_scan_event event;
	uint64_t segment_id;
	uint32_t offset;
	uint32_t size;			 /* record size, or span size */
	struct spool_record_header header; /* SPOOL_SCAN_RECORD only */
	const uint8_t *data;		 /* the bytes (valid until the callback returns) */
	enum spool_decode_result why;	 /* for CORRUPT / TORN_TAIL */
};

/* Return 0 to go on, non-zero to stop the scan with that value. */
typedef int spool_scan_fn(void *ctx, const struct spool_scan_item *item);

struct spool_scan_stats {
	uint64_t segments;
	uint64_t records;
	uint64_t bytes_valid;
	uint64_t corrupt_spans;
	uint64_t holes;
	uint64_t torn_tails;
	uint64_t bytes_read;  /* read from the files */
	uint64_t reads;	      /* read calls */
	uint64_t window_size; /* largest window allocated */
	uint64_t window_allocs; /* window (re)allocations */
};

/*
 * Scans stream each segment through one reused, aligned window of
 * SPOOL_SCAN_WINDOW_SIZE bytes (grown only to hold one larger record or
 * damaged span), so memory does not depend on the segment size. After a
 * bad place the search for a later valid record looks at most
 * SPOOL_SCAN_LOOKAHEAD_SIZE past it (past the end of the record its header
 * claims, if the header reads): the zeros after a log's end cost one
 * window, not the rest of the segment (docs/spool-format.md 4.3).
 */
#define SPOOL_SCAN_WINDOW_SIZE (4u << 20)
#define SPOOL_SCAN_LOOKAHEAD_SIZE (4u << 20)

/* Caller-owned; start as { NULL, 0 }; release when done. */
struct spool_scan_window {
	uint8_t *buf;
	uint64_t size;
};
void spool_scan_window_release(struct spool_scan_window *win);

/*
 * Scan every segment of dir in id order, fsyncing each file and the
 * directory first (never decide on data that was not durably written).
 * Segment ids are returned in ids (sorted) if not NULL. Returns 0, or
 * -errno on an I/O error (with a message in err).
 */
int spool_log_scan(const char *dir, uint16_t shard, spool_scan_fn *fn, void *ctx,
		   struct spool_scan_stats *stats, char *err, size_t err_size);

/* Scan one segment file (with a window of its own). */
int spool_log_scan_segment(const char *dir, uint16_t shard, uint64_t segment_id,
			   spool_scan_fn *fn, void *ctx, struct spool_scan_stats *stats,
			   char *err, size_t err_size);
/* The same through the caller's window, reused from segment to segment. */
int spool_log_scan_segment_in(struct spool_scan_window *win, const char *dir, uint16_t shard,
			      uint64_t segment_id, spool_scan_fn *fn, void *ctx,
			      struct spool_scan_stats *stats, char *err, size_t err_size);

/* List segment ids (`<id>.seg` files) in dir, sorted ascending. *ids is
 * malloc'd. Files in other states (.ready, .prep) are not listed. */
int spool_log_list_segments(const char *dir, uint64_t **ids, uint32_t *count);
/* The same for the files of one state. */
int spool_log_list_files(const char *dir, enum spool_file_state state, uint64_t **ids,
			 uint32_t *count);

#endif /* SPOOL_LOG_H */
