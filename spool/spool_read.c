/*
 * spool_read.c - asynchronous, verified reads of MESSAGE records.
 *
 * See spool_read.h for the contract and docs/spool-format.md ("Reading a
 * record back") for the steps.
 *
 * Invariants (asserted):
 * - An op in flight has busy set, holds one reference on its fd slot and
 *   is counted in reads_in_flight; all three are undone together in
 *   spool_read_finish(), just before the callback.
 * - done and want are multiples of SPOOL_BLOCK_SIZE, done < want <=
 *   buf_size while a read is in flight, and buf[0] is the file offset of
 *   the record's offset rounded down to a block: every read the kernel sees
 *   is block-aligned in memory, in the file and in length (O_DIRECT).
 * - A slot's fd is closed only when no read holds it (refs == 0): a read
 *   prepared but not yet submitted still names the fd by number.
 * - The callback sees result 0 only after spool_record_check() accepted
 *   the whole record at its expected place and spool_message_decode()
 *   decoded it. Bytes from disk are validated, never asserted on.
 */
#include "spool_read.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/eng_common.h"
#include "../ring/ring.h"
#include "spool.h"
#include "spool_log.h"

/* The record size field of the header (docs/spool-format.md 1.1). */
#define SPOOL_READ_SIZE_FIELD_OFFSET 8u
#define SPOOL_READ_NONE UINT32_MAX
#define SPOOL_READ_DRAIN_TURNS 100000u

_Static_assert(SPOOL_READ_SIZE_FIELD_OFFSET + 4u <= SPOOL_RECORD_HEADER_SIZE, "size in header");
_Static_assert(SPOOL_RECORD_HEADER_SIZE <= SPOOL_BLOCK_SIZE, "a header spans at most 2 blocks");
_Static_assert(SPOOL_READ_FDS_DEFAULT <= SPOOL_READ_FDS_MAX, "default fd slots in range");
_Static_assert((uint64_t)SPOOL_RECORD_SIZE_MAX + 2u * SPOOL_BLOCK_SIZE < UINT32_MAX,
	       "a read buffer size fits 32 bits");

struct spool_read_fd {
	uint64_t segment_id; /* 0: the slot is free */
	int fd;		     /* -1 when free */
	uint32_t refs;	     /* reads in flight on fd */
	uint64_t used_tick;  /* for least-recently-used replacement */
	bool stale;	     /* segment deleted: close once refs is 0 */
};

struct spool_reader {
	struct ring *ring;
	char msg_dir[PATH_MAX];
	uint16_t shard;
	uint32_t fd_slots;
	uint32_t fds_open;
	uint64_t tick;
	uint32_t reads_in_flight;
	struct spool_read_stats stats;
	struct spool_read_fd fds[];
};

uint32_t
spool_read_buffer_size(uint32_t record_size_max)
{
	ENG_ASSERT(record_size_max >= SPOOL_RECORD_HEADER_SIZE);
	ENG_ASSERT(record_size_max <= SPOOL_RECORD_SIZE_MAX);
	uint32_t size = ENG_ALIGN_UP(record_size_max, SPOOL_BLOCK_SIZE) + SPOOL_BLOCK_SIZE;
	ENG_ASSERT(size >= 2 * SPOOL_BLOCK_SIZE); /* the header read may need two blocks */
	return size;
}

/* ---- the fd cache ---- */

static void
spool_read_fd_close(struct spool_reader *reader, uint32_t at)
{
	struct spool_read_fd *slot = &reader->fds[at];
	ENG_ASSERT(slot->refs == 0);
	ENG_ASSERT(slot->fd >= 0);
	(void)close(slot->fd);
	slot->fd = -1;
	slot->segment_id = 0;
	slot->stale = false;
	ENG_ASSERT(reader->fds_open > 0);
	reader->fds_open--;
	reader->stats.fd_closes++;
}

static uint32_t
spool_read_fd_find(const struct spool_reader *reader, uint64_t segment_id)
{
	ENG_ASSERT(segment_id != 0);
	ENG_ASSERT(reader->fd_slots <= SPOOL_READ_FDS_MAX);
	for (uint32_t i = 0; i < reader->fd_slots; i++) {
		const struct spool_read_fd *slot = &reader->fds[i];
		if (slot->segment_id == segment_id && !slot->stale)
			return i;
	}
	return SPOOL_READ_NONE;
}

/* A free slot, else the least recently used one no read holds. */
static uint32_t
spool_read_fd_victim(const struct spool_reader *reader)
{
	uint32_t best = SPOOL_READ_NONE;
	ENG_ASSERT(reader->fd_slots >= 1);
	for (uint32_t i = 0; i < reader->fd_slots; i++) {
		const struct spool_read_fd *slot = &reader->fds[i];
		if (slot->fd < 0)
			return i;
		if (slot->refs != 0)
			continue;
		if (best == SPOOL_READ_NONE || slot->used_tick < reader->fds[best].used_tick)
			best = i;
	}
	ENG_ASSERT(best == SPOOL_READ_NONE || reader->fds[best].refs == 0);
	return best;
}

/* Open segment_id into slot at, replacing what it held. The old fd is
 * closed only once the new open succeeded. */
static int
spool_read_fd_open(struct spool_reader *reader, uint32_t at, uint64_t segment_id)
{
	char path[PATH_MAX];
	struct spool_read_fd *slot = &reader->fds[at];
	ENG_ASSERT(slot->refs == 0);
	ENG_ASSERT(segment_id != 0);
	spool_log_segment_path(reader->msg_dir, segment_id, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (slot->fd >= 0)
		spool_read_fd_close(reader, at);
	slot->fd = fd;
	slot->segment_id = segment_id;
	slot->stale = false;
	reader->fds_open++;
	reader->stats.fd_opens++;
	ENG_ASSERT(reader->fds_open <= reader->fd_slots);
	return 0;
}

static int
spool_read_fd_acquire(struct spool_reader *reader, uint64_t segment_id, uint32_t *index)
{
	uint32_t at = spool_read_fd_find(reader, segment_id);
	if (at == SPOOL_READ_NONE) {
		at = spool_read_fd_victim(reader);
		if (at == SPOOL_READ_NONE)
			return -EAGAIN;
		int ret = spool_read_fd_open(reader, at, segment_id);
		if (ret < 0)
			return ret;
	}
	struct spool_read_fd *slot = &reader->fds[at];
	ENG_ASSERT(slot->fd >= 0);
	ENG_ASSERT(slot->segment_id == segment_id);
	slot->refs++;
	slot->used_tick = ++reader->tick;
	*index = at;
	return 0;
}

static void
spool_read_fd_release(struct spool_reader *reader, uint32_t at)
{
	ENG_ASSERT(at < reader->fd_slots);
	struct spool_read_fd *slot = &reader->fds[at];
	ENG_ASSERT(slot->refs > 0);
	slot->refs--;
	if (slot->refs == 0 && slot->stale)
		spool_read_fd_close(reader, at);
}

void
spool_reader_forget_segment(struct spool_reader *reader, uint64_t segment_id)
{
	ENG_ASSERT(reader != NULL);
	ENG_ASSERT(segment_id != 0);
	uint32_t at = spool_read_fd_find(reader, segment_id);
	if (at == SPOOL_READ_NONE)
		return;
	reader->fds[at].stale = true;
	if (reader->fds[at].refs == 0)
		spool_read_fd_close(reader, at);
}

/* ---- life cycle ---- */

struct spool_reader *
spool_reader_create(struct ring *ring, const char *msg_dir, uint16_t shard, uint32_t fd_slots)
{
	ENG_ASSERT(ring != NULL && msg_dir != NULL);
	ENG_ASSERT(fd_slots >= 1 && fd_slots <= SPOOL_READ_FDS_MAX);
	struct spool_reader *reader =
		calloc(1, sizeof(*reader) + fd_slots * sizeof(struct spool_read_fd));
	if (reader == NULL)
		return NULL;
	reader->ring = ring;
	snprintf(reader->msg_dir, sizeof(reader->msg_dir), "%s", msg_dir);
	reader->shard = shard;
	reader->fd_slots = fd_slots;
	for (uint32_t i = 0; i < fd_slots; i++)
		reader->fds[i].fd = -1;
	return reader;
}

void
spool_reader_destroy(struct spool_reader *reader)
{
	if (reader == NULL)
		return;
	/* The caller stops issuing reads; those in flight complete first, so
	 * no fd is closed under a prepared read and no buffer is left to the
	 * kernel. */
	for (uint32_t turns = 0; reader->reads_in_flight > 0; turns++) {
		ENG_ASSERT(turns < SPOOL_READ_DRAIN_TURNS);
		(void)ring_run_once(reader->ring, 10ull * 1000ull * 1000ull);
	}
	for (uint32_t i = 0; i < reader->fd_slots; i++) {
		ENG_ASSERT(reader->fds[i].refs == 0);
		if (reader->fds[i].fd >= 0)
			spool_read_fd_close(reader, i);
	}
	ENG_ASSERT(reader->fds_open == 0);
	free(reader);
}

/* ---- one read ---- */

/* File offset of buf[0]: the record's offset rounded down to a block. */
static uint64_t
spool_read_base(const struct spool_read *op)
{
	ENG_ASSERT(op->location.offset % SPOOL_RECORD_ALIGN == 0);
	ENG_ASSERT(op->record_offset == op->location.offset % SPOOL_BLOCK_SIZE);
	return ENG_ALIGN_DOWN((uint64_t)op->location.offset, (uint64_t)SPOOL_BLOCK_SIZE);
}

static uint32_t
spool_read_le32(const uint8_t *p)
{
	ENG_ASSERT(p != NULL);
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void spool_read_completed(struct ring_op *rop, int32_t res, uint32_t cqe_flags);

/* Read buf[done, want) from the segment. */
static int
spool_read_submit(struct spool_read *op)
{
	struct spool_reader *reader = op->reader;
	ENG_ASSERT(op->done < op->want);
	ENG_ASSERT(op->want <= op->buf_size);
	ENG_ASSERT(op->done % SPOOL_BLOCK_SIZE == 0 && op->want % SPOOL_BLOCK_SIZE == 0);
	int fd = reader->fds[op->fd_index].fd;
	ENG_ASSERT(fd >= 0);
	op->op.callback = spool_read_completed;
	op->op.ctx = op;
	op->op.tag = (uint16_t)SPOOL_TAG_READ;
	return ring_prep_read(reader->ring, &op->op, fd, op->buf + op->done, op->want - op->done,
			      spool_read_base(op) + op->done);
}

static void
spool_read_finish(struct spool_read *op, int32_t result)
{
	struct spool_reader *reader = op->reader;
	ENG_ASSERT(op->busy);
	ENG_ASSERT(result <= 0);
	ENG_ASSERT(reader->reads_in_flight > 0);
	spool_read_fd_release(reader, op->fd_index);
	reader->reads_in_flight--;
	op->busy = false;
	if (result == 0) {
		reader->stats.records++;
	} else {
		/* Never leave a view of unverified bytes behind. */
		memset(&op->message, 0, sizeof(op->message));
		memset(&op->header, 0, sizeof(op->header));
		reader->stats.failures++;
		if (result == -EBADMSG)
			reader->stats.bad_records++;
	}
	op->callback(op, result);
}

/* The whole record is in buf and checked: decode it into op->message. */
static int32_t
spool_read_decode(struct spool_read *op, const struct spool_record_header *hdr)
{
	ENG_ASSERT(hdr->size <= op->done - op->record_offset);
	ENG_ASSERT(hdr->location.offset == op->location.offset);
	if (hdr->type != SPOOL_RECORD_MESSAGE)
		return -EBADMSG; /* an OUTCOME or PAD placed here: not a message */
	enum spool_decode_result r = spool_message_decode(op->buf + op->record_offset, hdr->size,
							  &op->message, op->rcpts,
							  op->rcpts_capacity);
	if (r == SPOOL_DECODE_SHORT)
		return -ENOBUFS; /* valid, but more recipients than rcpts holds */
	if (r != SPOOL_DECODE_OK)
		return -EBADMSG;
	op->header = *hdr;
	return 0;
}

/* The header said the record runs past the bytes read: read the rest.
 * Returns 0 (a read is in flight) or -errno to finish with. */
static int32_t
spool_read_grow(struct spool_read *op)
{
	ENG_ASSERT(!op->size_known);
	ENG_ASSERT(op->done - op->record_offset >= SPOOL_RECORD_HEADER_SIZE);
	/* SHORT from spool_record_check: magic, version and the size bounds
	 * were checked; the size is not yet covered by the CRC. */
	uint32_t size = spool_read_le32(op->buf + op->record_offset + SPOOL_READ_SIZE_FIELD_OFFSET);
	uint64_t end = (uint64_t)op->record_offset + size;
	uint64_t need = ENG_ALIGN_UP(end, (uint64_t)SPOOL_BLOCK_SIZE);
	if (need <= op->done)
		return -EBADMSG; /* cannot be SHORT with these bytes: never trust it */
	if (need > op->buf_size)
		return -EMSGSIZE;
	op->size_known = true;
	op->want = (uint32_t)need;
	return spool_read_submit(op);
}

/* Every wanted byte arrived: check, then read more or finish. */
static void
spool_read_advance(struct spool_read *op)
{
	ENG_ASSERT(op->done == op->want);
	ENG_ASSERT(op->done > op->record_offset);
	struct spool_record_header hdr;
	enum spool_decode_result r = spool_record_check(op->buf + op->record_offset,
							op->done - op->record_offset,
							&op->location, &hdr);
	if (r == SPOOL_DECODE_SHORT && !op->size_known) {
		int32_t ret = spool_read_grow(op);
		if (ret < 0)
			spool_read_finish(op, ret);
		return;
	}
	spool_read_finish(op, r == SPOOL_DECODE_OK ? spool_read_decode(op, &hdr) : -EBADMSG);
}

/* Resubmit the rest after a short read, -EAGAIN or -EINTR; bounded. */
static void
spool_read_resubmit(struct spool_read *op, uint32_t got)
{
	struct spool_reader *reader = op->reader;
	ENG_ASSERT(got < op->want - op->done);
	if (++op->resubmits > SPOOL_READ_RESUBMITS_MAX) {
		spool_read_finish(op, -EIO);
		return;
	}
	if (got > 0) {
		/* O_DIRECT: keep whole blocks, read the ragged rest again. */
		reader->stats.short_reads++;
		op->done += ENG_ALIGN_DOWN(got, SPOOL_BLOCK_SIZE);
	}
	reader->stats.resubmits++;
	int ret = spool_read_submit(op);
	if (ret < 0)
		spool_read_finish(op, ret);
}

/* The one place a read's cqe->res is mapped. */
static void
spool_read_completed(struct ring_op *rop, int32_t res, uint32_t cqe_flags)
{
	struct spool_read *op = rop->ctx;
	(void)cqe_flags;
	ENG_ASSERT(op->busy);
	ENG_ASSERT(op->done < op->want);
	uint32_t asked = op->want - op->done;
	if (res == -EAGAIN || res == -EINTR) {
		spool_read_resubmit(op, 0);
		return;
	}
	if (res < 0) {
		spool_read_finish(op, res);
		return;
	}
	if (res == 0) {
		/* End of file before the record's end: nothing valid lies here. */
		spool_read_finish(op, -EBADMSG);
		return;
	}
	ENG_ASSERT((uint32_t)res <= asked); /* the kernel never returns more */
	op->reader->stats.bytes += (uint64_t)res;
	if ((uint32_t)res < asked) {
		spool_read_resubmit(op, (uint32_t)res);
		return;
	}
	op->done = op->want;
	spool_read_advance(op);
}

/* Reset op for a read of loc through fd slot fd_index: first the blocks
 * that hold the header. */
static void
spool_read_start(struct spool_read *op, struct spool_reader *reader,
		 const struct spool_location *loc, uint32_t fd_index)
{
	ENG_ASSERT(!op->busy);
	ENG_ASSERT(fd_index < reader->fd_slots);
	op->reader = reader;
	op->location = *loc;
	op->fd_index = fd_index;
	op->record_offset = loc->offset % SPOOL_BLOCK_SIZE;
	op->want = ENG_ALIGN_UP(op->record_offset + SPOOL_RECORD_HEADER_SIZE, SPOOL_BLOCK_SIZE);
	op->done = 0;
	op->resubmits = 0;
	op->size_known = false;
	op->busy = true;
	memset(&op->message, 0, sizeof(op->message));
	memset(&op->header, 0, sizeof(op->header));
	ENG_ASSERT(op->want <= 2 * SPOOL_BLOCK_SIZE);
}

int
spool_read_message(struct spool *sp, const struct spool_location *loc, struct spool_read *op)
{
	ENG_ASSERT(sp != NULL && loc != NULL && op != NULL);
	ENG_ASSERT(op->callback != NULL);
	ENG_ASSERT(!op->busy);
	ENG_ASSERT(op->buf != NULL);
	ENG_ASSERT((uintptr_t)op->buf % SPOOL_BLOCK_SIZE == 0);
	ENG_ASSERT(op->buf_size % SPOOL_BLOCK_SIZE == 0);
	ENG_ASSERT(op->buf_size >= 2 * SPOOL_BLOCK_SIZE);
	ENG_ASSERT(op->rcpts != NULL && op->rcpts_capacity >= 1);
	struct spool_reader *reader = spool_reader_get(sp);
	ENG_ASSERT(reader != NULL);
	/* A location may come from a parsed queue id: validate, don't assert. */
	if (loc->shard != reader->shard || loc->segment_id == 0 ||
	    loc->offset % SPOOL_RECORD_ALIGN != 0)
		return -EINVAL;
	uint32_t fd_index = SPOOL_READ_NONE;
	int ret = spool_read_fd_acquire(reader, loc->segment_id, &fd_index);
	if (ret < 0)
		return ret;
	spool_read_start(op, reader, loc, fd_index);
	ret = spool_read_submit(op);
	if (ret < 0) {
		op->busy = false;
		spool_read_fd_release(reader, fd_index);
		return ret;
	}
	reader->reads_in_flight++;
	reader->stats.reads++;
	return 0;
}

const struct spool_read_stats *
spool_read_stats_get(struct spool *sp)
{
	ENG_ASSERT(sp != NULL);
	return &spool_reader_get(sp)->stats;
}

uint32_t
spool_read_fds_open(struct spool *sp)
{
	ENG_ASSERT(sp != NULL);
	const struct spool_reader *reader = spool_reader_get(sp);
	ENG_ASSERT(reader->fds_open <= reader->fd_slots);
	return reader->fds_open;
}
