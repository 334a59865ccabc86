/*
 * spool_read.h - read a MESSAGE record back by its location, through the
 * shard's ring, with O_DIRECT (io_uring.md 7.5 item 7).
 *
 * Delivery sends the body as it lies in the record (SMTP wire form). On the
 * hot path it comes from memory; a retry after eviction or a restart reads
 * the record back from its segment with this reader:
 *
 *   1. One 4096-aligned READ covering the record's 40-byte header (one
 *      block, two when the header straddles a block boundary).
 *   2. The header gives the record size; if the record runs past what was
 *      read, one more READ brings the rest, from the end of the first read
 *      up to the next 4096 boundary past the record.
 *   3. spool_record_check() with the location as the expected place (magic,
 *      size, CRC over the whole record, segment id / offset / shard), then
 *      spool_message_decode(). Only then does the callback see the bytes.
 *
 * Short reads keep the whole blocks they brought and resubmit the rest
 * (O_DIRECT needs aligned offsets); -EAGAIN and -EINTR resubmit; at most
 * SPOOL_READ_RESUBMITS_MAX resubmits per read, then -EIO.
 *
 * Segment files are opened O_RDONLY | O_DIRECT on first use and kept in a
 * small per-spool cache keyed by segment id (spool_config.read_fds slots,
 * least recently used replaced). A cached fd is closed when its segment is
 * deleted, or when it is replaced; never while a read on it is in flight
 * (slots are reference counted). XXX: the open(2) on a cache miss is
 * synchronous (IORING_OP_OPENAT would move it to the ring); it happens
 * once per segment while the cache holds it.
 *
 * Reading a record in the ACTIVE segment works: its bytes are durable, and
 * never rewritten, once its append was acknowledged. Reading a location
 * before its append's callback ran with 0 is a caller error: the bytes may
 * not be on disk yet, and the read then fails to verify (-EBADMSG).
 *
 * Ownership: struct spool_read, its buffer and its recipient array are
 * caller-owned and borrowed by the spool (owned by the ring) from
 * spool_read_message() returning 0 until the callback runs. The decoded
 * view in op->message points into op->buf and op->rcpts and stays valid
 * until the op is reused or the caller frees them. The op may be reused
 * from inside its own callback.
 *
 * No allocation on the read path: the fd cache is sized at spool_open.
 */
#ifndef SPOOL_READ_H
#define SPOOL_READ_H

#include <stdbool.h>
#include <stdint.h>

#include "../ring/ring.h"
#include "spool_record.h"

struct spool;
struct spool_read;
struct spool_reader;

/* ring_op.tag of the reader's reads, for fault hooks in tests (continues
 * enum spool_op_tag in spool_log.h). */
#define SPOOL_TAG_READ 0x5105u

/* Bounds. Slots of the fd cache: one per segment a shard delivers from at
 * once; 256 is far above a shard's live segments at 64 MiB each. */
#define SPOOL_READ_FDS_DEFAULT 16u
#define SPOOL_READ_FDS_MAX 256u
#define SPOOL_READ_RESUBMITS_MAX 64u

typedef void spool_read_cb(struct spool_read *op, int32_t result);

struct spool_read {
	/* Filled by the caller. */
	spool_read_cb *callback;
	void *ctx;
	uint8_t *buf;		  /* 4096-aligned, e.g. posix_memalign */
	uint32_t buf_size;	  /* multiple of 4096, >= spool_read_buffer_size(record) */
	struct spool_span *rcpts; /* room for the record's recipients */
	uint32_t rcpts_capacity;
	/* Filled by the spool when the callback runs with 0. */
	struct spool_message message;
	struct spool_record_header header;
	/* Private. */
	struct spool_reader *reader;
	struct spool_location location;
	uint32_t fd_index;
	uint32_t record_offset; /* of the record in buf */
	uint32_t want;		/* bytes of buf to fill from the file, 4096-aligned */
	uint32_t done;		/* bytes of buf filled so far, 4096-aligned */
	uint32_t resubmits;
	bool busy;
	bool size_known;
	struct ring_op op;
};

struct spool_read_stats {
	uint64_t reads;		/* spool_read_message() calls that started */
	uint64_t records;	/* callbacks with 0 */
	uint64_t bytes;		/* bytes read from segments */
	uint64_t short_reads;
	uint64_t resubmits;
	uint64_t failures;	/* callbacks with an error */
	uint64_t bad_records;	/* of which -EBADMSG */
	uint64_t fd_opens;
	uint64_t fd_closes;
};

/*
 * Bytes of buffer a read needs for a record of up to record_size_max bytes:
 * the record rounded up to 4096, plus one block because the record starts
 * anywhere inside its first block.
 */
uint32_t spool_read_buffer_size(uint32_t record_size_max);

/*
 * Read the MESSAGE record at loc into op->buf, verify and decode it.
 * op->callback, ctx, buf, buf_size, rcpts and rcpts_capacity are set by the
 * caller; op is not in flight.
 *
 * Returns 0: the callback runs later, from the ring, with
 *   0         the record verified; op->message is the decoded view and
 *             op->header its header;
 *   -EBADMSG  the bytes at loc are not a valid MESSAGE record placed there
 *             (corrupt, wrong offset, unwritten, another record type, or
 *             past the end of the segment);
 *   -EMSGSIZE the header claims more than buf_size holds (no bytes past
 *             the first read are trusted or handed out);
 *   -ENOBUFS  the record is valid but has more recipients than
 *             rcpts_capacity;
 *   -EIO, -errno from the read, or -EIO after too many resubmits.
 * Returns -errno, and the callback does not run:
 *   -EINVAL   loc is not this shard's or its offset is not 8-aligned;
 *   -ENOENT   the segment file does not exist (deleted);
 *   -EAGAIN   every fd cache slot has a read in flight (backpressure);
 *   -EBUSY    no submission queue entry; other -errno from open(2).
 */
int spool_read_message(struct spool *sp, const struct spool_location *loc,
		       struct spool_read *op) __attribute__((warn_unused_result));

const struct spool_read_stats *spool_read_stats_get(struct spool *sp);
/* Segment fds open in the cache (tests, stats). */
uint32_t spool_read_fds_open(struct spool *sp);

/* ---- For spool.c: the reader's life cycle and the deletion hook ---- */

/* Create the reader of a shard whose message segments live in msg_dir.
 * fd_slots: 1..SPOOL_READ_FDS_MAX. Returns NULL on allocation failure. */
struct spool_reader *spool_reader_create(struct ring *ring, const char *msg_dir, uint16_t shard,
					 uint32_t fd_slots);
/* Drains reads in flight (their callbacks run), closes every fd. Not from
 * inside a ring callback. */
void spool_reader_destroy(struct spool_reader *reader);
/* The segment is being deleted: close its cached fd (once no read uses it)
 * and never hand it out again. */
void spool_reader_forget_segment(struct spool_reader *reader, uint64_t segment_id);

#endif /* SPOOL_READ_H */
