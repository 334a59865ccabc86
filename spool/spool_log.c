/*
 * spool_log.c - segments, group commit and scanning for one spool log.
 *
 * See spool_log.h for the contract and docs/spool-format.md for the bytes.
 *
 * Invariants (asserted):
 * - Commit slots are used round-robin; the slot at ack_index is the oldest
 *   commit in flight, and callbacks run only from it, in slot order, so
 *   acknowledgements follow log order.
 * - A slot's bytes start on a SPOOL_BLOCK_SIZE boundary of its segment and
 *   its write length is a multiple of SPOOL_BLOCK_SIZE; the segment's write
 *   offset only grows, so no committed block is written twice.
 * - Once error != 0 no append is ever acknowledged again.
 * - A segment file is <id>.prep while it is zeroed, <id>.ready once that
 *   and its new name are durable, and <id>.seg from its activation: the
 *   first commit into it is written while the rename and the directory
 *   sync run, but no commit in it is acknowledged before both completed.
 *   A crash before that leaves a .ready file that may hold unacknowledged
 *   records under its id, so start-up gives every adopted .ready file a
 *   fresh id (its old bytes then fail the place check, as in a recycled
 *   file) and never scans it.
 */
#include "spool_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../engine/eng_common.h"
#include "../ring/ring.h"

#define SPOOL_ZERO_CHUNK_SIZE (1u << 20)
#define SPOOL_ZERO_OPS 4u
/* While nothing waits for the segment: one zero write this size at a time
 * (each commit's cache flush then carries at most this much of them). */
#define SPOOL_ZERO_PACED_SIZE (256u << 10)
#define SPOOL_RESUBMITS_MAX 64u
#define SPOOL_PAD_RESERVE (SPOOL_BLOCK_SIZE + SPOOL_RECORD_HEADER_SIZE)
#define SPOOL_PREP_RETRY_NS (1000ull * 1000ull * 1000ull)
#define SPOOL_SPARES_MAX 4u

_Static_assert(SPOOL_BLOCK_SIZE % SPOOL_RECORD_ALIGN == 0, "block holds whole alignment units");

enum spool_seg_state {
	SPOOL_SEG_PREPARING,
	SPOOL_SEG_READY,
	SPOOL_SEG_ACTIVE,
	SPOOL_SEG_CLOSED,
};

struct spool_seg {
	struct spool_log *log;
	uint64_t id;
	int fd;
	enum spool_seg_state state;
	uint64_t write_offset;
	uint32_t commits_in_flight;
	/* Preparation. */
	uint64_t zero_offset;
	uint32_t zero_in_flight;
	int32_t prep_error;
	bool activating; /* .ready -> .seg rename or its directory sync in flight */
	struct ring_op zero_ops[SPOOL_ZERO_OPS];
	struct ring_op sync_op; /* file sync, rename, directory sync: one at a time */
	char old_name[32];	/* renameat names, relative to the log's directory */
	char new_name[32];
	struct spool_seg *next; /* ready / preparing / closing lists */
};

enum spool_slot_state {
	SPOOL_SLOT_FREE,
	SPOOL_SLOT_FILLING,
	SPOOL_SLOT_WRITING,
	SPOOL_SLOT_SYNCING,
	SPOOL_SLOT_DONE,
};

struct spool_slot {
	struct spool_log *log;
	uint8_t *buf;
	uint32_t buf_size;
	uint32_t reg_size; /* the registered head of buf (WRITE_FIXED) */
	uint16_t buf_index;
	enum spool_slot_state state;
	struct spool_seg *seg;
	uint64_t seg_offset;
	uint32_t used;
	uint32_t write_len;
	uint32_t written;
	uint32_t resubmits;
	int32_t result;
	uint64_t seq;
	struct spool_append *head;
	struct spool_append *tail;
	struct ring_op op;
};

struct spool_log {
	struct ring *ring;
	struct spool_log_config cfg;
	char dir[PATH_MAX];
	int dir_fd;
	int32_t error;
	uint64_t next_seq;
	uint64_t last_segment_id;
	/* Pending appends, FIFO. */
	struct spool_append *pending_head;
	struct spool_append *pending_tail;
	uint32_t pending_count;
	uint32_t in_slots_count;
	/* Commit slots. */
	struct spool_slot slots[SPOOL_COMMIT_SLOTS_MAX];
	uint32_t fill_index;
	uint32_t ack_index;
	uint8_t *slot_memory;
	size_t slot_memory_size;
	uint16_t buf_first_index;
	bool buffers_registered;
	bool hooked;
	bool closing;
	uint32_t recycling; /* renamed segments waiting for their directory sync */
	bool below_reserve; /* the last segment creation was held back by the reserve */
	bool prep_failed_at_start; /* the last preparation failed before any I/O */
	uint32_t unlinks_in_flight; /* deletions and recycles waiting for a sync */
	uint32_t activations; /* segments whose .seg name is not durable yet */
	/* Segments. */
	struct spool_seg *active;
	struct spool_seg *ready_head;
	uint32_t ready_count;
	struct spool_seg *preparing;
	uint64_t prep_retry_at_ns;
	int32_t prep_error;
	uint8_t *zero_buf;
	spool_segment_closed_fn *closed_fn;
	void *closed_ctx;
	spool_ack_fn *ack_fn;
	void *ack_ctx;
	spool_place_fn *place_fn;
	void *place_ctx;
	struct spool_log_stats stats;
};

static void spool_log_hook(void *ctx);
static void spool_slot_submit(struct spool_log *log, struct spool_slot *slot);
static void spool_prep_start(struct spool_log *log);

void
spool_log_segment_path(const char *dir, uint64_t segment_id, char *out, size_t out_size)
{
	spool_log_file_path(dir, segment_id, SPOOL_FILE_SEG, out, out_size);
}

static void
spool_log_set_error(struct spool_log *log, int32_t error)
{
	ENG_ASSERT(error < 0);
	if (log->error == 0) {
		log->error = error;
		fprintf(stderr, "ringmail: spool %s: unhealthy after write error: %s\n", log->dir,
			strerror(-error));
	}
	log->stats.failures++;
}

/* ---- segment preparation ---- */

static uint64_t
spool_next_segment_id(struct spool_log *log)
{
	uint64_t now_us = eng_now_realtime_ns() / 1000u;
	uint64_t id = ENG_MAX(log->last_segment_id + 1, now_us);
	id = ENG_MAX(id, log->cfg.first_segment_id);
	log->last_segment_id = id;
	ENG_ASSERT(id != 0);
	return id;
}

static void
spool_seg_free(struct spool_seg *seg)
{
	ENG_ASSERT(seg != NULL);
	ENG_ASSERT(seg->commits_in_flight == 0);
	if (seg->fd >= 0)
		close(seg->fd);
	free(seg);
}

static void
spool_prep_fail(struct spool_log *log, struct spool_seg *seg, int32_t res)
{
	char path[PATH_MAX];
	ENG_ASSERT(log->preparing == seg);
	ENG_ASSERT(res < 0);
	seg->prep_error = res;
	if (seg->zero_in_flight > 0)
		return; /* the last completion finishes the failure */
	spool_log_file_path(log->dir, seg->id, SPOOL_FILE_PREP, path, sizeof(path));
	(void)unlink(path);
	spool_log_file_path(log->dir, seg->id, SPOOL_FILE_READY, path, sizeof(path));
	(void)unlink(path);
	log->preparing = NULL;
	log->prep_error = seg->prep_error;
	log->prep_retry_at_ns = eng_now_monotonic_ns() + SPOOL_PREP_RETRY_NS;
	spool_seg_free(seg);
}

static void
spool_prep_dir_synced(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	(void)cqe_flags;
	ENG_ASSERT(log->preparing == seg);
	if (res < 0) {
		spool_prep_fail(log, seg, res);
		return;
	}
	seg->state = SPOOL_SEG_READY;
	log->preparing = NULL;
	log->prep_error = 0;
	/* Append to the ready list: used in preparation order; each segment
	 * takes a fresh id when it becomes active (spool_seg_activate). */
	struct spool_seg **tail = &log->ready_head;
	while (*tail != NULL)
		tail = &(*tail)->next;
	seg->next = NULL;
	*tail = seg;
	log->ready_count++;
	log->stats.segments_created++;
}

/* Relative names for a rename of seg's file inside the log's directory. */
static void
spool_seg_names(struct spool_seg *seg, enum spool_file_state from, enum spool_file_state to)
{
	spool_log_file_path(".", seg->id, from, seg->old_name, sizeof(seg->old_name));
	spool_log_file_path(".", seg->id, to, seg->new_name, sizeof(seg->new_name));
}

/* <id>.prep is now <id>.ready: make the name durable. */
static void
spool_prep_renamed(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	(void)cqe_flags;
	if (res < 0) {
		spool_prep_fail(log, seg, res);
		return;
	}
	seg->sync_op.callback = spool_prep_dir_synced;
	seg->sync_op.ctx = seg;
	seg->sync_op.tag = SPOOL_TAG_PREPARE;
	if (ring_prep_fsync(log->ring, &seg->sync_op, log->dir_fd, false) < 0)
		spool_prep_fail(log, seg, -EBUSY);
}

/* Zeros durable in the file: rename <id>.prep to <id>.ready. */
static void
spool_prep_file_synced(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	(void)cqe_flags;
	if (res < 0) {
		spool_prep_fail(log, seg, res);
		return;
	}
	spool_seg_names(seg, SPOOL_FILE_PREP, SPOOL_FILE_READY);
	seg->sync_op.callback = spool_prep_renamed;
	seg->sync_op.ctx = seg;
	seg->sync_op.tag = SPOOL_TAG_PREPARE;
	if (ring_prep_renameat(log->ring, &seg->sync_op, log->dir_fd, seg->old_name, log->dir_fd,
			       seg->new_name, 0) < 0)
		spool_prep_fail(log, seg, -EBUSY);
}

static void spool_prep_zero_done(struct ring_op *op, int32_t res, uint32_t cqe_flags);

/* No segment is ready or being recycled to follow the active one. */
static bool
spool_pool_is_empty(const struct spool_log *log)
{
	return log->ready_count == 0 && log->recycling == 0;
}

/*
 * The next append waits for a preparation: no segment is active (the last
 * one filled up, or none yet at start-up), ready or being recycled.
 * Appends queued behind busy commit slots do not count: they wait for a
 * slot, not for a segment.
 */
static bool
spool_segment_is_lacking(const struct spool_log *log)
{
	return log->active == NULL && spool_pool_is_empty(log);
}

/*
 * Keep zero writes in flight: SPOOL_ZERO_OPS of SPOOL_ZERO_CHUNK_SIZE when
 * appends wait for the segment; one of SPOOL_ZERO_CHUNK_SIZE when the
 * active segment is the last one (nothing ready or being recycled), so a
 * fast-growing queue does not run into the preparation; else one of
 * SPOOL_ZERO_PACED_SIZE. The zeros are volatile until a cache flush, and
 * on a disk without FUA every commit is write + flush: 4 MiB of zeros at
 * once make the next commit's flush carry them all, and a 64 MiB segment
 * stalled every commit for ~100 ms (docs/BENCHMARKS.md 1.5 finding 1).
 * Paced, each flush carries at most one chunk of them.
 */
static void
spool_prep_zero_more(struct spool_log *log, struct spool_seg *seg)
{
	bool urgent = spool_segment_is_lacking(log);
	uint32_t ops = urgent ? SPOOL_ZERO_OPS : 1u;
	uint32_t chunk = spool_pool_is_empty(log) ? SPOOL_ZERO_CHUNK_SIZE : SPOOL_ZERO_PACED_SIZE;
	for (uint32_t i = 0; i < SPOOL_ZERO_OPS && seg->zero_offset < log->cfg.segment_size; i++) {
		struct ring_op *op = &seg->zero_ops[i];
		if (op->in_flight)
			continue;
		if (seg->zero_in_flight >= ops)
			break;
		uint64_t left = log->cfg.segment_size - seg->zero_offset;
		uint32_t len = (uint32_t)ENG_MIN(left, (uint64_t)chunk);
		op->callback = spool_prep_zero_done;
		op->ctx = seg;
		op->tag = SPOOL_TAG_PREPARE;
		if (ring_prep_write(log->ring, op, seg->fd, log->zero_buf, len, seg->zero_offset, 0) <
		    0) {
			spool_prep_fail(log, seg, -EBUSY);
			return;
		}
		seg->zero_in_flight++;
		seg->zero_offset += len;
	}
}

static void
spool_prep_zero_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	(void)cqe_flags;
	ENG_ASSERT(seg->zero_in_flight > 0);
	seg->zero_in_flight--;
	if (res >= 0 && (uint32_t)res != op->len) {
		/* Short: rewind so the remainder is zeroed again. */
		res = -EIO;
	}
	if (res < 0 || seg->prep_error < 0) {
		spool_prep_fail(log, seg, res < 0 ? res : seg->prep_error);
		return;
	}
	if (seg->zero_offset < log->cfg.segment_size) {
		spool_prep_zero_more(log, seg);
		return;
	}
	if (seg->zero_in_flight > 0)
		return;
	seg->sync_op.callback = spool_prep_file_synced;
	seg->sync_op.ctx = seg;
	seg->sync_op.tag = SPOOL_TAG_PREPARE;
	if (ring_prep_fsync(log->ring, &seg->sync_op, seg->fd, false) < 0)
		spool_prep_fail(log, seg, -EBUSY);
}

/* A new segment must leave the free-space reserve intact. */
static bool
spool_prep_has_room(struct spool_log *log)
{
	struct statvfs st;
	if (log->cfg.free_space_reserve == 0 || statvfs(log->dir, &st) != 0)
		return true;
	uint64_t free_bytes = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
	return free_bytes >= log->cfg.free_space_reserve + log->cfg.segment_size;
}

/* Start preparing one segment: open <id>.prep, fallocate, then zero it,
 * fsync it, rename it to <id>.ready and sync the directory on the ring. */
static void
spool_prep_start(struct spool_log *log)
{
	char path[PATH_MAX];
	ENG_ASSERT(log->preparing == NULL);
	log->below_reserve = !spool_prep_has_room(log);
	log->prep_failed_at_start = true; /* until the zeroing is under way */
	if (log->below_reserve) {
		log->prep_error = -ENOSPC;
		log->prep_retry_at_ns = eng_now_monotonic_ns() + SPOOL_PREP_RETRY_NS;
		return;
	}
	struct spool_seg *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		return;
	seg->log = log;
	seg->id = spool_next_segment_id(log);
	seg->state = SPOOL_SEG_PREPARING;
	spool_log_file_path(log->dir, seg->id, SPOOL_FILE_PREP, path, sizeof(path));
	seg->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	int32_t err = 0;
	if (seg->fd < 0) {
		err = -errno;
	} else if (fallocate(seg->fd, 0, 0, (off_t)log->cfg.segment_size) != 0) {
		err = -errno;
		(void)unlink(path);
	}
	if (err < 0) {
		log->prep_error = err;
		log->prep_retry_at_ns = eng_now_monotonic_ns() + SPOOL_PREP_RETRY_NS;
		spool_seg_free(seg);
		return;
	}
	log->preparing = seg;
	log->prep_failed_at_start = false;
	spool_prep_zero_more(log, seg);
}

/* ---- commit slots ---- */

static struct spool_slot *
spool_slot_filling(struct spool_log *log)
{
	struct spool_slot *slot = &log->slots[log->fill_index];
	if (slot->state == SPOOL_SLOT_FILLING)
		return slot;
	if (slot->state != SPOOL_SLOT_FREE)
		return NULL; /* every slot is in flight */
	return slot;
}

/* Bind a free slot to the active segment at its write offset. */
static void
spool_slot_open(struct spool_log *log, struct spool_slot *slot, struct spool_seg *seg)
{
	ENG_ASSERT(slot->state == SPOOL_SLOT_FREE);
	ENG_ASSERT(seg->state == SPOOL_SEG_ACTIVE);
	ENG_ASSERT(seg->write_offset % SPOOL_BLOCK_SIZE == 0);
	slot->state = SPOOL_SLOT_FILLING;
	slot->seg = seg;
	slot->seg_offset = seg->write_offset;
	slot->used = 0;
	slot->written = 0;
	slot->resubmits = 0;
	slot->result = 0;
	slot->seq = log->next_seq++;
	slot->head = NULL;
	slot->tail = NULL;
	seg->commits_in_flight++;
}

static uint32_t
spool_append_record_size(const struct spool_append *op)
{
	if (op->type == SPOOL_RECORD_MESSAGE)
		return spool_message_record_size(op->input.message);
	ENG_ASSERT(op->type == SPOOL_RECORD_OUTCOME);
	return SPOOL_OUTCOME_RECORD_SIZE;
}

static void
spool_slot_encode(struct spool_log *log, struct spool_slot *slot, struct spool_append *op)
{
	struct spool_location loc = {
		.segment_id = slot->seg->id,
		.offset = (uint32_t)(slot->seg_offset + slot->used),
		.shard = log->cfg.shard,
	};
	uint8_t *at = slot->buf + slot->used;
	uint32_t room = slot->buf_size - slot->used;
	uint32_t size;
	op->location = loc;
	if (log->place_fn != NULL)
		log->place_fn(log->place_ctx, op); /* may rewrite input bytes, not sizes */
	if (op->type == SPOOL_RECORD_MESSAGE)
		size = spool_message_encode(at, room, op->input.message, slot->seq, &loc);
	else
		size = spool_outcome_encode(at, room, op->input.outcome, slot->seq, &loc);
	ENG_ASSERT(size == op->record_size);
	op->location = loc;
	op->commit_seq = slot->seq;
	op->next = NULL;
	if (slot->tail != NULL)
		slot->tail->next = op;
	else
		slot->head = op;
	slot->tail = op;
	slot->used += size;
	log->in_slots_count++;
	log->stats.appends++;
	log->stats.appended_bytes += size;
}

static void
spool_segment_retire(struct spool_log *log, struct spool_seg *seg)
{
	ENG_ASSERT(seg->state == SPOOL_SEG_CLOSED);
	ENG_ASSERT(seg->commits_in_flight == 0);
	ENG_ASSERT(!seg->activating);
	uint64_t id = seg->id;
	spool_seg_free(seg);
	if (log->closed_fn != NULL)
		log->closed_fn(log->closed_ctx, id);
}

/* The active segment is full: close it; it retires when commits drain. */
static void
spool_active_close(struct spool_log *log)
{
	struct spool_seg *seg = log->active;
	ENG_ASSERT(seg != NULL);
	seg->state = SPOOL_SEG_CLOSED;
	log->active = NULL;
	if (seg->commits_in_flight == 0 && !seg->activating)
		spool_segment_retire(log, seg);
}

static void spool_ack_in_order(struct spool_log *log);

static void
spool_activate_synced(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	(void)cqe_flags;
	ENG_ASSERT(seg->activating);
	ENG_ASSERT(log->activations > 0);
	if (res < 0) /* the .seg name may not survive a crash: ack nothing */
		spool_log_set_error(log, res);
	seg->activating = false;
	log->activations--;
	/* With commits in flight the ack loop retires a closed seg (and may
	 * free it right here); without, no slot names it and it retires now. */
	bool retire = seg->state == SPOOL_SEG_CLOSED && seg->commits_in_flight == 0;
	spool_ack_in_order(log); /* commits waiting for the name */
	if (retire)
		spool_segment_retire(log, seg);
}

static void
spool_activate_renamed(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_seg *seg = op->ctx;
	struct spool_log *log = seg->log;
	if (res < 0) {
		spool_activate_synced(op, res, cqe_flags);
		return;
	}
	seg->sync_op.callback = spool_activate_synced;
	int ret = ring_prep_fsync(log->ring, &seg->sync_op, log->dir_fd, false);
	ENG_ASSERT(ret == 0); /* ring_get_sqe flushes a full SQ */
}

/* A ready segment joins the log under a fresh id: <old>.ready ->
 * <new>.seg, then the directory sync. Commits may be written meanwhile;
 * none is acknowledged before both completed (spool_ack_in_order).
 *
 * The fresh id keeps segment ids in activation order, which is log order:
 * recovery replays segments (the journal's outcomes above all) by id, so a
 * later DEFERRED record must sit in a higher id than an earlier one. Ids
 * given at preparation are not in that order: a recycled file becomes
 * ready at once under a new id while a segment prepared before it is
 * still being zeroed, and is then used first. A crash before the rename is
 * durable leaves <old>.ready, which start-up adopts under a fresh id and
 * never scans; nothing in it was acknowledged. */
static void
spool_seg_activate(struct spool_log *log, struct spool_seg *seg)
{
	ENG_ASSERT(!seg->activating);
	ENG_ASSERT(seg->commits_in_flight == 0 && seg->write_offset == 0);
	seg->activating = true;
	log->activations++;
	spool_log_file_path(".", seg->id, SPOOL_FILE_READY, seg->old_name, sizeof(seg->old_name));
	seg->id = spool_next_segment_id(log);
	spool_log_file_path(".", seg->id, SPOOL_FILE_SEG, seg->new_name, sizeof(seg->new_name));
	seg->sync_op.callback = spool_activate_renamed;
	seg->sync_op.ctx = seg;
	seg->sync_op.tag = SPOOL_TAG_ACTIVATE;
	int ret = ring_prep_renameat(log->ring, &seg->sync_op, log->dir_fd, seg->old_name,
				     log->dir_fd, seg->new_name, 0);
	ENG_ASSERT(ret == 0);
}

static struct spool_seg *
spool_active_get(struct spool_log *log)
{
	if (log->active != NULL)
		return log->active;
	struct spool_seg *seg = log->ready_head;
	if (seg == NULL)
		return NULL;
	log->ready_head = seg->next;
	log->ready_count--;
	seg->next = NULL;
	seg->state = SPOOL_SEG_ACTIVE;
	seg->write_offset = 0;
	log->active = seg;
	spool_seg_activate(log, seg);
	return seg;
}

static void
spool_fail_list(struct spool_append *head, int32_t error)
{
	uint32_t bound = 0;
	while (head != NULL) {
		struct spool_append *next = head->next;
		ENG_ASSERT(bound++ < UINT32_MAX);
		head->callback(head, error);
		head = next;
	}
}

/* One placement step for op: 1 placed, 0 must wait, -1 try again (a
 * commit or the segment was closed to make room). */
static int
spool_place_step(struct spool_log *log, struct spool_append *op)
{
	struct spool_slot *slot = spool_slot_filling(log);
	if (slot == NULL)
		return 0;
	bool filling = slot->state == SPOOL_SLOT_FILLING;
	struct spool_seg *seg = filling ? slot->seg : spool_active_get(log);
	if (seg == NULL)
		return 0;
	uint64_t start = filling ? slot->seg_offset : seg->write_offset;
	uint32_t used = filling ? slot->used : 0;
	if (start + used + op->record_size + SPOOL_PAD_RESERVE > log->cfg.segment_size) {
		/* Segment full: commit what it has, then move to the next. */
		if (filling)
			spool_slot_submit(log, slot);
		spool_active_close(log);
		return -1;
	}
	if (used + op->record_size + SPOOL_PAD_RESERVE > slot->buf_size) {
		ENG_ASSERT(filling);
		spool_slot_submit(log, slot);
		return -1;
	}
	if (!filling)
		spool_slot_open(log, slot, seg);
	spool_slot_encode(log, slot, op);
	if (slot->used >= log->cfg.commit_size_max)
		spool_slot_submit(log, slot);
	return 1;
}

/* Place one pending append; returns false when it must wait. At most two
 * retries: one to close a commit, one to close the segment. */
static bool
spool_place_one(struct spool_log *log, struct spool_append *op)
{
	for (int tries = 0; tries < 3; tries++) {
		int step = spool_place_step(log, op);
		if (step >= 0)
			return step == 1;
	}
	ENG_PANIC("record never fits a fresh commit in a fresh segment");
	return false;
}

/*
 * Appends still pending when no segment exists or is coming (none active,
 * ready, being prepared or recycled) and the last preparation failed:
 * fail them with its error instead of waiting for a retry that may never
 * succeed (the client gets a 4xx at once rather than a timeout at its
 * final dot; no record was written, so nothing acknowledged is at stake).
 * A preparation that failed before any I/O (below the reserve; ENOSPC
 * from fallocate with no reserve configured; EMFILE) costs a statvfs or
 * an open to try again, so it is tried again first, whatever the retry
 * delay: space freed a moment ago is used at once. One that failed in its
 * I/O waits for the delay. The log stays healthy either way.
 */
static void
spool_fail_unplaceable(struct spool_log *log)
{
	if (log->pending_head == NULL || log->prep_error >= 0 || log->preparing != NULL ||
	    !spool_segment_is_lacking(log) || log->closing)
		return;
	if (log->prep_failed_at_start)
		spool_prep_start(log);
	if (log->preparing != NULL || log->prep_error >= 0)
		return;
	struct spool_append *head = log->pending_head;
	log->pending_head = log->pending_tail = NULL;
	log->pending_count = 0;
	log->stats.appends_failed_no_segment++;
	spool_fail_list(head, log->prep_error);
}

void
spool_log_flush(struct spool_log *log)
{
	ENG_ASSERT(log != NULL);
	if (log->error != 0) {
		struct spool_append *head = log->pending_head;
		log->pending_head = log->pending_tail = NULL;
		log->pending_count = 0;
		spool_fail_list(head, log->error);
		return;
	}
	uint64_t commits_before = log->stats.commits;
	while (log->pending_head != NULL) {
		struct spool_append *op = log->pending_head;
		struct spool_append *next = op->next; /* placing reuses op->next */
		if (!spool_place_one(log, op))
			break;
		log->pending_head = next;
		if (next == NULL)
			log->pending_tail = NULL;
		log->pending_count--;
	}
	struct spool_slot *slot = &log->slots[log->fill_index];
	if (slot->state == SPOOL_SLOT_FILLING && slot->used > 0)
		spool_slot_submit(log, slot);
	if (log->cfg.submit_early && log->stats.commits != commits_before)
		(void)ring_submit(log->ring); /* on error the turn's submit retries */
	/* The pool, plus one to become active when there is none. */
	uint32_t wanted = log->cfg.ready_segments + (log->active == NULL ? 1u : 0u);
	bool want_more = log->ready_count + log->recycling < wanted;
	if (want_more && log->preparing == NULL && !log->closing &&
	    eng_now_monotonic_ns() >= log->prep_retry_at_ns)
		spool_prep_start(log);
	else if (log->preparing != NULL && log->preparing->zero_in_flight < SPOOL_ZERO_OPS &&
		 log->preparing->zero_offset < log->cfg.segment_size &&
		 spool_segment_is_lacking(log))
		spool_prep_zero_more(log, log->preparing); /* paced until now: hurry */
	spool_fail_unplaceable(log);
}

static void
spool_log_hook(void *ctx)
{
	spool_log_flush(ctx);
}

/* ---- commit completion ---- */

static void spool_slot_write_done(struct ring_op *op, int32_t res, uint32_t cqe_flags);

static void
spool_slot_write(struct spool_log *log, struct spool_slot *slot)
{
	ENG_ASSERT(slot->written < slot->write_len);
	ENG_ASSERT(slot->written % SPOOL_BLOCK_SIZE == 0);
	slot->op.callback = spool_slot_write_done;
	slot->op.ctx = slot;
	slot->op.tag = SPOOL_TAG_COMMIT_WRITE;
	int rw_flags = log->cfg.use_fdatasync ? 0 : RWF_DSYNC;
	const uint8_t *at = slot->buf + slot->written;
	uint32_t len = slot->write_len - slot->written;
	uint64_t offset = slot->seg_offset + slot->written;
	int ret;
	if (slot->write_len <= slot->reg_size)
		ret = ring_prep_write_fixed(log->ring, &slot->op, slot->seg->fd, at, len, offset,
					    slot->buf_index, rw_flags);
	else /* a huge record: beyond the registered head */
		ret = ring_prep_write(log->ring, &slot->op, slot->seg->fd, at, len, offset,
				      rw_flags);
	ENG_ASSERT(ret == 0); /* ring_get_sqe flushes a full SQ */
}

/* Pad to a block boundary and write the commit. */
static void
spool_slot_submit(struct spool_log *log, struct spool_slot *slot)
{
	ENG_ASSERT(slot->state == SPOOL_SLOT_FILLING);
	ENG_ASSERT(slot->used > 0);
	uint32_t gap = ENG_ALIGN_UP(slot->used, SPOOL_BLOCK_SIZE) - slot->used;
	if (gap != 0 && gap < SPOOL_RECORD_HEADER_SIZE)
		gap += SPOOL_BLOCK_SIZE;
	if (gap != 0) {
		struct spool_location loc = {
			.segment_id = slot->seg->id,
			.offset = (uint32_t)(slot->seg_offset + slot->used),
			.shard = log->cfg.shard,
		};
		uint32_t n = spool_pad_encode(slot->buf + slot->used, slot->buf_size - slot->used,
					      gap, slot->seq, &loc);
		ENG_ASSERT(n == gap);
	}
	slot->write_len = slot->used + gap;
	ENG_ASSERT(slot->write_len % SPOOL_BLOCK_SIZE == 0);
	ENG_ASSERT(slot->seg_offset + slot->write_len <= log->cfg.segment_size);
	slot->seg->write_offset = slot->seg_offset + slot->write_len;
	slot->state = SPOOL_SLOT_WRITING;
	log->fill_index = (log->fill_index + 1) % log->cfg.commit_slots;
	log->stats.commits++;
	log->stats.commit_bytes += slot->write_len;
	spool_slot_write(log, slot);
}

/* Acknowledge finished commits from the oldest, in log order. */
static void
spool_ack_in_order(struct spool_log *log)
{
	for (uint32_t n = 0; n < log->cfg.commit_slots; n++) {
		struct spool_slot *slot = &log->slots[log->ack_index];
		if (slot->state != SPOOL_SLOT_DONE || slot->seg->activating)
			return; /* not durable, or its segment's name not yet */
		if (slot->result < 0)
			spool_log_set_error(log, slot->result);
		int32_t result = log->error != 0 ? log->error : 0;
		struct spool_append *head = slot->head;
		struct spool_seg *seg = slot->seg;
		ENG_ASSERT(seg->commits_in_flight > 0);
		seg->commits_in_flight--;
		slot->state = SPOOL_SLOT_FREE;
		slot->head = slot->tail = NULL;
		slot->seg = NULL;
		log->ack_index = (log->ack_index + 1) % log->cfg.commit_slots;
		for (struct spool_append *op = head; op != NULL;) {
			struct spool_append *next = op->next;
			ENG_ASSERT(log->in_slots_count > 0);
			log->in_slots_count--;
			if (log->ack_fn != NULL)
				log->ack_fn(log->ack_ctx, op, result);
			op->callback(op, result);
			op = next;
		}
		if (seg->state == SPOOL_SEG_CLOSED && seg->commits_in_flight == 0 &&
		    !seg->activating)
			spool_segment_retire(log, seg);
	}
}

static void
spool_slot_finish(struct spool_log *log, struct spool_slot *slot, int32_t result)
{
	slot->state = SPOOL_SLOT_DONE;
	slot->result = result;
	if (result < 0)
		spool_log_set_error(log, result);
	spool_ack_in_order(log);
}

static void
spool_slot_sync_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_slot *slot = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(slot->state == SPOOL_SLOT_SYNCING);
	/* A failed sync is final: never retried, never acknowledged. */
	spool_slot_finish(slot->log, slot, res < 0 ? res : 0);
}

static void
spool_slot_write_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_slot *slot = op->ctx;
	struct spool_log *log = slot->log;
	(void)cqe_flags;
	ENG_ASSERT(slot->state == SPOOL_SLOT_WRITING);
	uint32_t want = slot->write_len - slot->written;
	if (res == -EAGAIN || res == -EINTR || (res >= 0 && (uint32_t)res < want)) {
		if (++slot->resubmits > SPOOL_RESUBMITS_MAX) {
			spool_slot_finish(log, slot, -EIO);
			return;
		}
		if (res > 0) {
			/* Short write: keep whole blocks, rewrite from there. */
			log->stats.short_writes++;
			slot->written += ENG_ALIGN_DOWN((uint32_t)res, SPOOL_BLOCK_SIZE);
		}
		log->stats.resubmits++;
		spool_slot_write(log, slot);
		return;
	}
	if (res < 0) {
		spool_slot_finish(log, slot, res);
		return;
	}
	ENG_ASSERT((uint32_t)res == want);
	slot->written = slot->write_len;
	if (!log->cfg.use_fdatasync) {
		spool_slot_finish(log, slot, 0);
		return;
	}
	slot->state = SPOOL_SLOT_SYNCING;
	slot->op.callback = spool_slot_sync_done;
	slot->op.tag = SPOOL_TAG_COMMIT_SYNC;
	int ret = ring_prep_fsync(log->ring, &slot->op, slot->seg->fd, true);
	ENG_ASSERT(ret == 0);
}

/* ---- public ---- */

int
spool_log_append(struct spool_log *log, struct spool_append *op)
{
	ENG_ASSERT(op != NULL);
	ENG_ASSERT(op->callback != NULL);
	if (log->error != 0)
		return -EIO;
	uint32_t size = spool_append_record_size(op);
	if (size == 0 || size > log->cfg.record_size_max)
		return -EMSGSIZE;
	op->record_size = size;
	op->next = NULL;
	if (log->pending_tail != NULL)
		log->pending_tail->next = op;
	else
		log->pending_head = op;
	log->pending_tail = op;
	log->pending_count++;
	return 0;
}

static int
spool_log_check_config(const struct spool_log_config *cfg, char *err, size_t err_size)
{
	const char *why = NULL;
	if (cfg->segment_size == 0 || cfg->segment_size % SPOOL_BLOCK_SIZE != 0)
		why = "segment size must be a positive multiple of 4096";
	else if (cfg->segment_size > UINT32_MAX)
		why = "segment size must be below 4 GiB";
	else if (cfg->commit_slots == 0 || cfg->commit_slots > SPOOL_COMMIT_SLOTS_MAX)
		why = "commit slots must be 1..8";
	else if (cfg->commit_size_max < SPOOL_BLOCK_SIZE)
		why = "commit size must be at least 4096";
	else if (cfg->record_size_max < SPOOL_OUTCOME_RECORD_SIZE ||
		 cfg->record_size_max > SPOOL_RECORD_SIZE_MAX)
		why = "record size max out of range";
	else if ((uint64_t)cfg->record_size_max + 2 * SPOOL_PAD_RESERVE > cfg->segment_size)
		why = "segment size must exceed the largest record";
	if (why == NULL)
		return 0;
	snprintf(err, err_size, "spool %s: %s", cfg->dir, why);
	return -EINVAL;
}

/*
 * Commit buffers. A slot holds up to commit_size_max of records plus one
 * record of up to record_size_max (tens of MiB in the daemon: the largest
 * message), so the whole area is large; it is mapped, not allocated and
 * cleared, so pages are only touched when a record reaches them. Only
 * the head of each slot, which holds every commit not made of one huge
 * record, is registered (pinned) for WRITE_FIXED; a commit longer than
 * that goes out as a plain write from the same memory. Registering and
 * clearing the whole area cost about 2 s of start-up per shard here
 * (docs/BENCHMARKS.md §1.8).
 */
static uint32_t
spool_slot_reg_size(const struct spool_log_config *cfg, uint32_t slot_size)
{
	uint64_t head = 2ull * cfg->commit_size_max + 2ull * SPOOL_PAD_RESERVE;
	return (uint32_t)ENG_MIN((uint64_t)slot_size, ENG_ALIGN_UP(head, SPOOL_BLOCK_SIZE));
}

static int
spool_log_alloc_slots(struct spool_log *log, char *err, size_t err_size)
{
	uint32_t slot_size = ENG_ALIGN_UP(log->cfg.commit_size_max + log->cfg.record_size_max +
						  2 * SPOOL_PAD_RESERVE,
					  SPOOL_BLOCK_SIZE);
	size_t total = (size_t)slot_size * log->cfg.commit_slots;
	void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED ||
	    posix_memalign((void **)&log->zero_buf, SPOOL_BLOCK_SIZE, SPOOL_ZERO_CHUNK_SIZE) != 0) {
		if (mem != MAP_FAILED)
			munmap(mem, total);
		snprintf(err, err_size, "spool %s: out of memory for commit buffers", log->dir);
		return -ENOMEM;
	}
	memset(log->zero_buf, 0, SPOOL_ZERO_CHUNK_SIZE);
	log->slot_memory = mem; /* page aligned, zero filled by the kernel */
	log->slot_memory_size = total;
	uint32_t reg_size = spool_slot_reg_size(&log->cfg, slot_size);
	struct iovec iov[SPOOL_COMMIT_SLOTS_MAX];
	for (uint32_t i = 0; i < log->cfg.commit_slots; i++) {
		struct spool_slot *slot = &log->slots[i];
		slot->log = log;
		slot->buf = log->slot_memory + (size_t)i * slot_size;
		slot->buf_size = slot_size;
		slot->reg_size = reg_size;
		slot->buf_index = 0; /* set after registration */
		slot->state = SPOOL_SLOT_FREE;
		iov[i].iov_base = slot->buf;
		iov[i].iov_len = reg_size;
	}
	int ret = ring_register_buffers(log->ring, iov, log->cfg.commit_slots,
					&log->buf_first_index);
	if (ret < 0) {
		snprintf(err, err_size, "spool %s: cannot register commit buffers: %s (RLIMIT_MEMLOCK?)",
			 log->dir, strerror(-ret));
		return ret;
	}
	log->buffers_registered = true;
	for (uint32_t i = 0; i < log->cfg.commit_slots; i++)
		log->slots[i].buf_index = (uint16_t)(log->buf_first_index + i);
	return 0;
}

/* Memory-backed filesystems lose everything on power loss: an
 * acknowledgement there promises nothing, so refuse unless asked. */
static int
spool_log_check_durable(struct spool_log *log, char *err, size_t err_size)
{
	struct statfs st;
	if (statfs(log->dir, &st) != 0) {
		int e = errno;
		snprintf(err, err_size, "spool %s: statfs: %s", log->dir, strerror(e));
		return -e;
	}
	bool volatile_fs = st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
	if (!volatile_fs || log->cfg.allow_volatile)
		return 0;
	snprintf(err, err_size,
		 "spool %s: on tmpfs/ramfs, which does not survive power loss; put the spool on "
		 "a disk filesystem that supports O_DIRECT (ext4, xfs)",
		 log->dir);
	return -EINVAL;
}

/* O_DIRECT must work where the spool lives. */
static int
spool_log_check_direct(struct spool_log *log, char *err, size_t err_size)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/.direct-probe", log->dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		snprintf(err, err_size,
			 "spool %s: cannot open a file with O_DIRECT: %s (the spool must be on a "
			 "filesystem that supports O_DIRECT, such as ext4 or xfs, not tmpfs)",
			 log->dir, strerror(e));
		return -e;
	}
	int ret = 0;
	if (pwrite(fd, log->zero_buf, SPOOL_BLOCK_SIZE, 0) != (ssize_t)SPOOL_BLOCK_SIZE) {
		ret = -errno;
		snprintf(err, err_size, "spool %s: a 4096-byte O_DIRECT write failed: %s", log->dir,
			 strerror(errno));
	}
	close(fd);
	unlink(path);
	return ret;
}

/* Start-up: delete what was being prepared (<id>.prep). */
static int
spool_log_discard_prep(struct spool_log *log)
{
	char path[PATH_MAX];
	uint64_t *ids = NULL;
	uint32_t count = 0;
	int ret = spool_log_list_files(log->dir, SPOOL_FILE_PREP, &ids, &count);
	for (uint32_t i = 0; i < count; i++) {
		log->last_segment_id = ENG_MAX(log->last_segment_id, ids[i]);
		spool_log_file_path(log->dir, ids[i], SPOOL_FILE_PREP, path, sizeof(path));
		if (unlink(path) == 0)
			log->stats.segments_discarded++;
	}
	free(ids);
	return ret;
}

/* Open an adopted <old>.ready and rename it to <new id>.ready; NULL (and
 * the file deleted) when its size is not this log's. */
static struct spool_seg *
spool_log_adopt_one(struct spool_log *log, uint64_t old_id)
{
	char from[PATH_MAX], to[PATH_MAX];
	spool_log_file_path(log->dir, old_id, SPOOL_FILE_READY, from, sizeof(from));
	struct spool_seg *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		return NULL;
	seg->log = log;
	seg->fd = open(from, O_RDWR | O_DIRECT | O_CLOEXEC);
	struct stat st;
	if (seg->fd < 0 || fstat(seg->fd, &st) != 0 ||
	    (uint64_t)st.st_size != log->cfg.segment_size) {
		(void)unlink(from); /* an older configuration's size */
		spool_seg_free(seg);
		return NULL;
	}
	seg->id = spool_next_segment_id(log);
	spool_log_file_path(log->dir, seg->id, SPOOL_FILE_READY, to, sizeof(to));
	if (rename(from, to) != 0) {
		spool_seg_free(seg);
		return NULL;
	}
	seg->state = SPOOL_SEG_READY;
	return seg;
}

/*
 * Start-up: take over the <id>.ready files left by the last run without
 * zeroing them again. Each gets a fresh id first: a crash between a
 * segment's first commit write and its .seg name becoming durable leaves
 * unacknowledged records under the old id, which then fail the place
 * check. Ids stay above every id seen, so the pool stays in id order. At
 * most the pool and its spares are kept; the rest are deleted.
 */
static int
spool_log_adopt_ready(struct spool_log *log, char *err, size_t err_size)
{
	char path[PATH_MAX];
	uint64_t *ids = NULL;
	uint32_t count = 0;
	int ret = spool_log_discard_prep(log);
	if (ret == 0)
		ret = spool_log_list_files(log->dir, SPOOL_FILE_READY, &ids, &count);
	if (ret < 0) {
		snprintf(err, err_size, "spool %s: cannot list: %s", log->dir, strerror(-ret));
		return ret;
	}
	if (count > 0)
		log->last_segment_id = ENG_MAX(log->last_segment_id, ids[count - 1]);
	struct spool_seg **tail = &log->ready_head;
	for (uint32_t i = 0; i < count; i++) {
		if (log->ready_count >= log->cfg.ready_segments + 1 + SPOOL_SPARES_MAX) {
			spool_log_file_path(log->dir, ids[i], SPOOL_FILE_READY, path, sizeof(path));
			if (unlink(path) == 0)
				log->stats.segments_discarded++;
			continue;
		}
		struct spool_seg *seg = spool_log_adopt_one(log, ids[i]);
		if (seg == NULL)
			continue;
		*tail = seg;
		tail = &seg->next;
		log->ready_count++;
		log->stats.segments_adopted++;
	}
	free(ids);
	if ((count > 0 || log->stats.segments_discarded > 0) && fsync(log->dir_fd) != 0) {
		int e = errno;
		snprintf(err, err_size, "spool %s: directory fsync: %s", log->dir, strerror(e));
		return -e;
	}
	return 0;
}

struct spool_log *
spool_log_create(struct ring *ring, const struct spool_log_config *cfg, char *err,
		 size_t err_size)
{
	ENG_ASSERT(ring != NULL);
	ENG_ASSERT(cfg != NULL && cfg->dir != NULL);
	if (spool_log_check_config(cfg, err, err_size) < 0)
		return NULL;
	struct spool_log *log = calloc(1, sizeof(*log));
	if (log == NULL)
		return NULL;
	log->ring = ring;
	log->cfg = *cfg;
	snprintf(log->dir, sizeof(log->dir), "%s", cfg->dir);
	log->cfg.dir = log->dir;
	log->next_seq = 1;
	log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (log->dir_fd < 0) {
		snprintf(err, err_size, "spool %s: %s", log->dir, strerror(errno));
		free(log);
		return NULL;
	}
	if (spool_log_alloc_slots(log, err, err_size) < 0 ||
	    spool_log_check_durable(log, err, err_size) < 0 ||
	    spool_log_check_direct(log, err, err_size) < 0 ||
	    spool_log_adopt_ready(log, err, err_size) < 0) {
		spool_log_destroy(log);
		return NULL;
	}
	ring_add_hook(ring, spool_log_hook, log);
	log->hooked = true;
	/* Start-up: wait for the first segment (bounded by the prep retry).
	 * Not only for its preparation to start: the caller may close the
	 * log from another thread before its ring ever runs (a daemon whose
	 * start-up fails), and nothing may be in flight then. A start-up that
	 * adopted .ready files from the last run waits for nothing. */
	for (uint32_t turns = 0; log->ready_count == 0; turns++) {
		spool_log_flush(log);
		if (log->prep_error == -ENOSPC && log->below_reserve)
			break; /* start anyway: segments come when space does */
		if (log->prep_error < 0 && log->preparing == NULL) {
			snprintf(err, err_size, "spool %s: cannot create a segment: %s", log->dir,
				 strerror(-log->prep_error));
			spool_log_destroy(log);
			return NULL;
		}
		ENG_ASSERT(turns < 1000000);
		(void)ring_run_once(ring, 100ull * 1000ull * 1000ull);
	}
	return log;
}

void
spool_log_destroy(struct spool_log *log)
{
	if (log == NULL)
		return;
	/* The caller stops the loop first; drain what is in flight. */
	log->closing = true;
	for (uint32_t turns = 0; turns < 100000; turns++) {
		bool busy = log->preparing != NULL || log->unlinks_in_flight > 0 ||
			    log->activations > 0;
		for (uint32_t i = 0; i < log->cfg.commit_slots; i++)
			busy = busy || log->slots[i].state == SPOOL_SLOT_WRITING ||
			       log->slots[i].state == SPOOL_SLOT_SYNCING;
		if (!busy)
			break;
		(void)ring_run_once(log->ring, 10ull * 1000ull * 1000ull);
	}
	while (log->ready_head != NULL) {
		struct spool_seg *seg = log->ready_head;
		log->ready_head = seg->next;
		spool_seg_free(seg);
	}
	if (log->active != NULL) {
		log->active->commits_in_flight = 0;
		spool_seg_free(log->active);
	}
	if (log->hooked)
		ring_remove_hook(log->ring, spool_log_hook, log);
	if (log->buffers_registered)
		ring_unregister_buffers(log->ring, log->buf_first_index, log->cfg.commit_slots);
	if (log->dir_fd >= 0)
		close(log->dir_fd);
	if (log->slot_memory != NULL)
		munmap(log->slot_memory, log->slot_memory_size);
	free(log->zero_buf);
	free(log);
}

void
spool_log_set_ack_hook(struct spool_log *log, spool_ack_fn *fn, void *ctx)
{
	log->ack_fn = fn;
	log->ack_ctx = ctx;
}

void
spool_log_set_place_hook(struct spool_log *log, spool_place_fn *fn, void *ctx)
{
	log->place_fn = fn;
	log->place_ctx = ctx;
}

void
spool_log_set_closed_callback(struct spool_log *log, spool_segment_closed_fn *fn, void *ctx)
{
	log->closed_fn = fn;
	log->closed_ctx = ctx;
}

bool
spool_log_is_healthy(const struct spool_log *log)
{
	return log->error == 0;
}

int
spool_log_error(const struct spool_log *log)
{
	return log->error;
}

uint32_t
spool_log_pending(const struct spool_log *log)
{
	return log->pending_count + log->in_slots_count;
}

const struct spool_log_stats *
spool_log_stats_get(const struct spool_log *log)
{
	return &log->stats;
}

uint64_t
spool_log_active_segment(const struct spool_log *log)
{
	return log->active != NULL ? log->active->id : 0;
}

bool
spool_log_segment_is_busy(const struct spool_log *log, uint64_t segment_id)
{
	if (log->active != NULL && log->active->id == segment_id)
		return true;
	for (uint32_t i = 0; i < log->cfg.commit_slots; i++) {
		const struct spool_slot *slot = &log->slots[i];
		if (slot->state != SPOOL_SLOT_FREE && slot->seg != NULL &&
		    slot->seg->id == segment_id)
			return true;
	}
	return false;
}

/* ---- deletion ---- */

struct spool_delete {
	struct ring_op op;
	struct spool_log *log;
	uint64_t segment_id;
	struct spool_seg *recycled; /* the file under its new id, or NULL */
	spool_delete_done_fn *done_fn;
	void *ctx;
};

/* A recycled file joins the ready pool only once its new name is durable:
 * a crash before that leaves it under its old name, whose records the
 * journal still marks final. */
static void
spool_recycle_ready(struct spool_log *log, struct spool_seg *seg, int32_t res)
{
	char path[PATH_MAX];
	ENG_ASSERT(log->recycling > 0);
	log->recycling--;
	if (res < 0) {
		spool_log_file_path(log->dir, seg->id, SPOOL_FILE_READY, path, sizeof(path));
		(void)unlink(path);
	}
	if (res < 0 || log->closing) { /* a durable .ready is adopted at the next start */
		spool_seg_free(seg);
		return;
	}
	seg->state = SPOOL_SEG_READY;
	struct spool_seg **tail = &log->ready_head;
	while (*tail != NULL)
		tail = &(*tail)->next;
	seg->next = NULL;
	*tail = seg;
	log->ready_count++;
	log->stats.segments_recycled++;
}

static void
spool_delete_synced(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct spool_delete *del = ENG_CONTAINER_OF(op, struct spool_delete, op);
	(void)cqe_flags;
	ENG_ASSERT(del->log->unlinks_in_flight > 0);
	del->log->unlinks_in_flight--;
	if (res < 0) {
		/* The unlink or rename may not be durable: a crash could bring the
		 * old file back while its journal goes. Stop acknowledging. */
		spool_log_set_error(del->log, res);
	}
	if (del->recycled != NULL)
		spool_recycle_ready(del->log, del->recycled, res);
	if (del->done_fn != NULL)
		del->done_fn(del->ctx, del->segment_id, res);
	free(del);
}

/* Rename the file to a fresh id and open it; NULL when that fails. */
static struct spool_seg *
spool_recycle_rename(struct spool_log *log, uint64_t segment_id)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct spool_seg *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		return NULL;
	seg->log = log;
	seg->id = spool_next_segment_id(log);
	seg->state = SPOOL_SEG_PREPARING;
	spool_log_segment_path(log->dir, segment_id, from, sizeof(from));
	spool_log_file_path(log->dir, seg->id, SPOOL_FILE_READY, to, sizeof(to));
	struct stat st;
	seg->fd = open(from, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (seg->fd < 0 || fstat(seg->fd, &st) != 0 ||
	    (uint64_t)st.st_size != log->cfg.segment_size || rename(from, to) != 0) {
		spool_seg_free(seg); /* a size from an older config: delete instead */
		return NULL;
	}
	return seg;
}

/* The directory sync that makes an unlink or a rename durable; done_fn
 * runs after it. */
static void
spool_delete_sync_dir(struct spool_log *log, struct spool_delete *del, uint64_t segment_id,
		      spool_delete_done_fn *done_fn, void *ctx)
{
	ENG_ASSERT(del != NULL);
	ENG_ASSERT(segment_id != 0);
	log->unlinks_in_flight++;
	del->log = log;
	del->segment_id = segment_id;
	del->done_fn = done_fn;
	del->ctx = ctx;
	del->op.callback = spool_delete_synced;
	del->op.ctx = del;
	del->op.tag = SPOOL_TAG_DELETE;
	int ret = ring_prep_fsync(log->ring, &del->op, log->dir_fd, false);
	ENG_ASSERT(ret == 0);
}

/* Start recycling segment_id now (rename, directory sync). */
static int
spool_recycle_start(struct spool_log *log, uint64_t segment_id, spool_delete_done_fn *done_fn,
		    void *ctx)
{
	ENG_ASSERT(segment_id != 0);
	struct spool_delete *del = calloc(1, sizeof(*del));
	if (del == NULL)
		return -ENOMEM;
	del->recycled = spool_recycle_rename(log, segment_id);
	if (del->recycled == NULL) {
		free(del);
		return spool_log_delete_segment(log, segment_id, done_fn, ctx);
	}
	log->recycling++;
	spool_delete_sync_dir(log, del, segment_id, done_fn, ctx);
	return 0;
}

int
spool_log_recycle_segment(struct spool_log *log, uint64_t segment_id,
			  spool_delete_done_fn *done_fn, void *ctx)
{
	ENG_ASSERT(segment_id != 0);
	ENG_ASSERT(!spool_log_segment_is_busy(log, segment_id));
	uint32_t pool = log->ready_count + log->recycling + (log->preparing != NULL ? 1u : 0u);
	uint32_t wanted = log->cfg.ready_segments + (log->active == NULL ? 1u : 0u);
	/* Keep up to SPOOL_SPARES_MAX files beyond the pool: a spare costs a
	 * rename where a new segment costs writing it full of zeros. */
	if (log->closing || pool >= wanted + SPOOL_SPARES_MAX)
		return spool_log_delete_segment(log, segment_id, done_fn, ctx);
	return spool_recycle_start(log, segment_id, done_fn, ctx);
}

int
spool_log_delete_segment(struct spool_log *log, uint64_t segment_id, spool_delete_done_fn *done_fn,
			 void *ctx)
{
	char path[PATH_MAX];
	ENG_ASSERT(segment_id != 0);
	ENG_ASSERT(!spool_log_segment_is_busy(log, segment_id));
	struct spool_delete *del = calloc(1, sizeof(*del));
	if (del == NULL)
		return -ENOMEM;
	spool_log_segment_path(log->dir, segment_id, path, sizeof(path));
	/* XXX: unlink is synchronous; a 64 MiB extent free is cheap on ext4
	 * and happens once per segment. IORING_OP_UNLINKAT would move it. */
	if (unlink(path) != 0 && errno != ENOENT) {
		int e = errno;
		free(del);
		return -e;
	}
	log->stats.segments_deleted++;
	spool_delete_sync_dir(log, del, segment_id, done_fn, ctx);
	return 0;
}
