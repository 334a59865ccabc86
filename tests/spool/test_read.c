/*
 * test_read.c - reading MESSAGE records back by location through the ring
 * (spool/spool_read.h): bodies from 1 KB to 1 MB across small segments,
 * reads after a restart with the locations recovery hands back, a flipped
 * byte, locations that name no record, the fd cache bound, deleted
 * segments, and faults injected at the completion layer (ring_set_fault).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ring/ring.h"
#include "spool/spool.h"
#include "spool/spool_read.h"
#include "tests/lib/test_util.h"

#define RD_MSG_MAX 48
#define RD_BODY_MAX (1100u * 1024u)
#define RD_RCPTS_MAX 3
#define RD_TURNS_MAX 100000u
#define RD_TIMEOUT_NS (100ull * 1000ull * 1000ull)

struct rd_msg {
	uint8_t *body;
	char rcpt_text[RD_RCPTS_MAX][64];
	struct spool_span rcpts[RD_RCPTS_MAX];
	struct spool_message message;
	struct spool_append op;
	bool done;
	int32_t result;
};

/* One read: the op, its aligned buffer, its recipient array. */
struct rd_read {
	struct spool_read op;
	struct spool_span rcpts[RD_RCPTS_MAX];
	bool done;
	int32_t result;
	uint32_t callbacks;
};

struct rd_harness {
	char dir[PATH_MAX];
	struct ring *ring;
	struct spool *sp;
	struct spool_config cfg;
	struct rd_msg msgs[RD_MSG_MAX];
	uint32_t msg_count;
	struct rd_read reads[RD_MSG_MAX];
	/* Locations handed back by recovery, per message (rcpt 0). */
	struct spool_location recovered[RD_MSG_MAX];
	uint32_t recovered_count;
};

static struct rd_harness rd;

/* ---- harness ---- */

static void
rd_config(void)
{
	spool_config_defaults(&rd.cfg);
	rd.cfg.dir = rd.dir;
	rd.cfg.segment_size = 2u << 20; /* small: a 1 MB record fills half */
	rd.cfg.journal_segment_size = 256u << 10;
	rd.cfg.commit_size_max = 128u << 10;
	rd.cfg.commit_slots = 2; /* registered memory stays under RLIMIT_MEMLOCK */
	rd.cfg.message_size_max = RD_BODY_MAX;
	rd.cfg.recipients_max = 10;
	rd.cfg.ready_segments = 1;
	rd.cfg.free_space_reserve = 0;
}

static void
rd_recovered(void *ctx, const struct spool_recovered *r)
{
	(void)ctx;
	uint64_t n = r->msg->created_ns - 1000;
	cr_assert_lt(n, RD_MSG_MAX);
	if (r->rcpt_index != 0)
		return;
	rd.recovered[n] = r->location;
	rd.recovered_count++;
}

static void
rd_open(void)
{
	char err[512] = "";
	rd.recovered_count = 0;
	rd.sp = spool_open(rd.ring, &rd.cfg, rd_recovered, NULL, NULL, err, sizeof(err));
	cr_assert(rd.sp != NULL, "spool_open: %s", err);
}

static void
rd_reopen(void)
{
	spool_close(rd.sp);
	rd.sp = NULL;
	rd_open();
}

static void
rd_setup(void)
{
	memset(&rd, 0, sizeof(rd));
	test_scratch_dir("read", rd.dir, sizeof(rd.dir));
	rd.ring = test_ring_create();
	if (rd.ring == NULL)
		cr_skip_test("io_uring unavailable");
	rd_config();
}

static void
rd_teardown(void)
{
	if (rd.ring != NULL)
		ring_set_fault(rd.ring, NULL, NULL);
	spool_close(rd.sp);
	ring_destroy(rd.ring);
	test_remove_tree(rd.dir);
	for (uint32_t i = 0; i < RD_MSG_MAX; i++) {
		free(rd.msgs[i].body);
		free(rd.reads[i].op.buf);
	}
}

TestSuite(spool_read, .init = rd_setup, .fini = rd_teardown, .timeout = 120);

static void
rd_msg_callback(struct spool_append *op, int32_t result)
{
	struct rd_msg *m = op->ctx;
	cr_assert(!m->done, "append callback ran twice");
	m->done = true;
	m->result = result;
}

static void
rd_msg_init(uint32_t i, size_t body_size)
{
	struct rd_msg *m = &rd.msgs[i];
	cr_assert_lt(i, RD_MSG_MAX);
	if (m->body == NULL)
		m->body = malloc(RD_BODY_MAX);
	cr_assert(m->body != NULL);
	memset(&m->op, 0, sizeof(m->op));
	size_t len = test_body(i, body_size, m->body, RD_BODY_MAX);
	uint32_t n = 1 + i % RD_RCPTS_MAX;
	for (uint32_t r = 0; r < n; r++) {
		int w = snprintf(m->rcpt_text[r], sizeof(m->rcpt_text[r]), "rcpt%u.%u@d%u.example",
				 i, r, i % 5);
		m->rcpts[r].data = (const uint8_t *)m->rcpt_text[r];
		m->rcpts[r].size = (uint32_t)w;
	}
	m->message.created_ns = 1000 + i;
	m->message.expires_ns = 9000 + i;
	m->message.sender.data = (const uint8_t *)"bounce+x@example.org";
	m->message.sender.size = 20;
	m->message.rcpt_count = n;
	m->message.rcpts = m->rcpts;
	m->message.body.data = m->body;
	m->message.body.size = (uint32_t)len;
	m->op.callback = rd_msg_callback;
	m->op.ctx = m;
	m->op.input.message = &m->message;
	m->done = false;
}

/* Write messages [from, to) with sizes[i % size_count] and wait for every
 * acknowledgement. */
static void
rd_write(uint32_t from, uint32_t to, const size_t *sizes, uint32_t size_count)
{
	for (uint32_t i = from; i < to; i++) {
		rd_msg_init(i, sizes[i % size_count]);
		cr_assert_eq(spool_write_message(rd.sp, &rd.msgs[i].op), 0, "write %u", i);
	}
	rd.msg_count = rd.msg_count > to ? rd.msg_count : to;
	for (uint32_t turns = 0; turns < RD_TURNS_MAX; turns++) {
		bool all = true;
		for (uint32_t i = from; i < to && all; i++)
			all = rd.msgs[i].done;
		if (all) {
			for (uint32_t i = from; i < to; i++)
				cr_assert_eq(rd.msgs[i].result, 0, "message %u not acked", i);
			return;
		}
		cr_assert(ring_run_once(rd.ring, RD_TIMEOUT_NS) >= 0);
	}
	cr_assert_fail("messages never acknowledged");
}

static void
rd_read_callback(struct spool_read *op, int32_t result)
{
	struct rd_read *r = op->ctx;
	r->callbacks++;
	cr_assert(!r->done, "read callback ran twice");
	r->done = true;
	r->result = result;
}

/* Prepare read slot i with a buffer of buf_size bytes (0: the spool's). */
static struct rd_read *
rd_read_prepare(uint32_t i, uint32_t buf_size)
{
	struct rd_read *r = &rd.reads[i];
	if (buf_size == 0)
		buf_size = spool_read_buffer_size(spool_message_record_size_max(rd.sp));
	if (r->op.buf == NULL || r->op.buf_size != buf_size) {
		free(r->op.buf);
		void *mem = NULL;
		cr_assert_eq(posix_memalign(&mem, 4096, buf_size), 0);
		r->op.buf = mem;
	}
	/* Poison: a view that points at stale bytes would not compare. */
	memset(r->op.buf, 0xa5, buf_size);
	r->op.buf_size = buf_size;
	r->op.callback = rd_read_callback;
	r->op.ctx = r;
	r->op.rcpts = r->rcpts;
	r->op.rcpts_capacity = RD_RCPTS_MAX;
	r->done = false;
	r->result = 1;
	r->callbacks = 0;
	return r;
}

static void
rd_run_until_done(struct rd_read *const *reads, uint32_t count)
{
	for (uint32_t turns = 0; turns < RD_TURNS_MAX; turns++) {
		bool all = true;
		for (uint32_t i = 0; i < count && all; i++)
			all = reads[i]->done;
		if (all)
			return;
		cr_assert(ring_run_once(rd.ring, RD_TIMEOUT_NS) >= 0);
	}
	cr_assert_fail("reads never completed");
}

/* Read loc into read slot slot and wait; returns the callback's result. */
static int32_t
rd_read_at(uint32_t slot, const struct spool_location *loc)
{
	struct rd_read *r = rd_read_prepare(slot, 0);
	int ret = spool_read_message(rd.sp, loc, &r->op);
	if (ret != 0)
		return ret;
	rd_run_until_done(&r, 1);
	cr_assert_eq(r->callbacks, 1);
	return r->result;
}

/* The decoded view equals what was written, byte for byte. */
static void
rd_expect_message(const struct rd_read *r, uint32_t i)
{
	const struct spool_message *got = &r->op.message;
	const struct spool_message *want = &rd.msgs[i].message;
	cr_assert_eq(r->result, 0, "message %u: read result %d", i, r->result);
	cr_assert_eq(got->created_ns, want->created_ns, "message %u", i);
	cr_assert_eq(got->expires_ns, want->expires_ns);
	cr_assert_eq(got->sender.size, want->sender.size);
	cr_assert_eq(memcmp(got->sender.data, want->sender.data, want->sender.size), 0);
	cr_assert_eq(got->rcpt_count, want->rcpt_count);
	for (uint32_t k = 0; k < want->rcpt_count; k++) {
		cr_assert_eq(got->rcpts[k].size, want->rcpts[k].size);
		const struct spool_span *w = &want->rcpts[k];
		cr_assert_eq(memcmp(got->rcpts[k].data, w->data, w->size), 0, "message %u rcpt %u",
			     i, k);
	}
	cr_assert_eq(got->body.size, want->body.size, "message %u body size", i);
	cr_assert_eq(memcmp(got->body.data, want->body.data, want->body.size), 0,
		     "message %u body differs", i);
	/* The view lies inside the op's buffer. */
	cr_assert(got->body.data >= r->op.buf);
	cr_assert(got->body.data + got->body.size <= r->op.buf + r->op.buf_size);
	cr_assert_eq(r->op.header.type, SPOOL_RECORD_MESSAGE);
	cr_assert_eq(r->op.header.location.offset, rd.msgs[i].op.location.offset);
}

/* Read messages [from, to) all at once, each by loc[i], and compare. */
static void
rd_read_all(uint32_t from, uint32_t to, const struct spool_location *locs)
{
	struct rd_read *reads[RD_MSG_MAX];
	for (uint32_t i = from; i < to; i++) {
		reads[i - from] = rd_read_prepare(i, 0);
		cr_assert_eq(spool_read_message(rd.sp, &locs[i], &reads[i - from]->op), 0,
			     "read %u", i);
	}
	rd_run_until_done(reads, to - from);
	for (uint32_t i = from; i < to; i++)
		rd_expect_message(&rd.reads[i], i);
}

static const struct spool_location *
rd_append_locations(void)
{
	static struct spool_location locs[RD_MSG_MAX];
	for (uint32_t i = 0; i < rd.msg_count; i++)
		locs[i] = rd.msgs[i].op.location;
	return locs;
}

static uint32_t
rd_distinct_segments(uint32_t from, uint32_t to)
{
	uint32_t n = 0;
	for (uint32_t i = from; i < to; i++) {
		if (i == from ||
		    rd.msgs[i].op.location.segment_id != rd.msgs[i - 1].op.location.segment_id)
			n++;
	}
	return n;
}

static void
rd_segment_path(uint64_t segment_id, char *out, size_t out_size)
{
	char msg_dir[PATH_MAX];
	spool_shard_path(rd.dir, rd.cfg.shard, "msg", msg_dir, sizeof(msg_dir));
	spool_log_segment_path(msg_dir, segment_id, out, out_size);
}

/* Flip one byte of a segment file, durably (O_DIRECT reads see the disk). */
static void
rd_flip_byte(uint64_t segment_id, uint64_t offset)
{
	char path[PATH_MAX];
	rd_segment_path(segment_id, path, sizeof(path));
	int fd = open(path, O_RDWR);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	uint8_t b;
	cr_assert_eq(pread(fd, &b, 1, (off_t)offset), 1);
	b ^= 0x20;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)offset), 1);
	cr_assert_eq(fsync(fd), 0);
	close(fd);
}

static void
rd_copy_segment(uint64_t from_id, uint64_t to_id)
{
	char from[PATH_MAX], to[PATH_MAX];
	rd_segment_path(from_id, from, sizeof(from));
	rd_segment_path(to_id, to, sizeof(to));
	int in = open(from, O_RDONLY);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(in >= 0 && out >= 0);
	static uint8_t chunk[1u << 16];
	for (off_t at = 0; at < (off_t)rd.cfg.segment_size; at += (off_t)sizeof(chunk)) {
		cr_assert_eq(pread(in, chunk, sizeof(chunk), at), (ssize_t)sizeof(chunk));
		cr_assert_eq(pwrite(out, chunk, sizeof(chunk), at), (ssize_t)sizeof(chunk));
	}
	cr_assert_eq(fsync(out), 0);
	close(in);
	close(out);
}

static uint32_t
rd_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	cr_assert(d != NULL);
	uint32_t n = 0;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* 1 KB .. 1 MB, odd sizes between. */
static const size_t rd_sizes[] = { 1000, 1024 * 1024, 3001, 65536, 4097, 250000, 17, 700000 };
#define RD_SIZE_COUNT ((uint32_t)(sizeof(rd_sizes) / sizeof(rd_sizes[0])))

/* ---- round trips ---- */

Test(spool_read, every_size_reads_back_byte_for_byte_across_segments)
{
	rd_open();
	rd_write(0, 32, rd_sizes, RD_SIZE_COUNT); /* about 8 MB over 2 MiB segments */
	cr_assert_geq(rd_distinct_segments(0, 32), 4, "records must cross segments: %u",
		      rd_distinct_segments(0, 32));
	rd_read_all(0, 32, rd_append_locations());
	/* The newest record lies in the segment being appended (ACTIVE):
	 * acknowledged bytes are durable there too. */
	const size_t small[] = { 2000 };
	rd_write(32, 33, small, 1);
	cr_assert_eq(rd_read_at(32, &rd.msgs[32].op.location), 0);
	rd_expect_message(&rd.reads[32], 32);
	const struct spool_read_stats *st = spool_read_stats_get(rd.sp);
	cr_assert_eq(st->records, 33);
	cr_assert_eq(st->failures, 0);
	cr_assert_gt(st->bytes, 8u * 1024u * 1024u);
}

/* Chained reads: each callback checks message next - 1 and reads the next
 * one through the same op and buffer. */
struct rd_chain {
	uint32_t next;
	uint32_t count;
	uint32_t mismatches;
	int32_t error;
	bool done;
};

static void
rd_chain_callback(struct spool_read *op, int32_t result)
{
	struct rd_chain *c = op->ctx;
	const struct rd_msg *m = &rd.msgs[c->next - 1];
	if (result != 0 || op->message.body.size != m->message.body.size ||
	    memcmp(op->message.body.data, m->body, m->message.body.size) != 0)
		c->mismatches++;
	if (c->next == c->count) {
		c->done = true;
		return;
	}
	int ret = spool_read_message(rd.sp, &rd.msgs[c->next].op.location, op);
	c->next++;
	if (ret != 0) {
		c->error = ret;
		c->done = true;
	}
}

Test(spool_read, the_same_op_reads_again_from_its_own_callback)
{
	rd_open();
	rd_write(0, 8, rd_sizes, RD_SIZE_COUNT);
	struct rd_chain chain = { .next = 1, .count = 8 };
	struct rd_read *r = rd_read_prepare(0, 0);
	r->op.callback = rd_chain_callback;
	r->op.ctx = &chain;
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[0].op.location, &r->op), 0);
	cr_assert(test_run_until(rd.ring, &chain.done, RD_TURNS_MAX));
	cr_assert_eq(chain.error, 0);
	cr_assert_eq(chain.mismatches, 0);
	cr_assert_eq(spool_read_stats_get(rd.sp)->records, 8);
}

Test(spool_read, reads_after_restart_use_the_locations_recovery_returns)
{
	rd_open();
	rd_write(0, 16, rd_sizes, RD_SIZE_COUNT);
	rd_reopen();
	cr_assert_eq(rd.recovered_count, 16);
	for (uint32_t i = 0; i < 16; i++) {
		cr_assert_eq(rd.recovered[i].segment_id, rd.msgs[i].op.location.segment_id);
		cr_assert_eq(rd.recovered[i].offset, rd.msgs[i].op.location.offset);
	}
	rd_read_all(0, 16, rd.recovered);
	/* And once more after a second restart, in reverse order, one by one. */
	rd_reopen();
	for (uint32_t i = 16; i > 0; i--) {
		cr_assert_eq(rd_read_at(i - 1, &rd.recovered[i - 1]), 0);
		rd_expect_message(&rd.reads[i - 1], i - 1);
	}
}

/* ---- records that do not verify ---- */

Test(spool_read, a_flipped_byte_is_ebadmsg_and_its_neighbours_still_read)
{
	rd_open();
	const size_t sizes[] = { 3000, 3000, 3000, 200000, 3000 };
	rd_write(0, 10, sizes, 5);
	/* Message 2: a small record, its first read holds it all. Message 3:
	 * 200 KB, the flip lies in the second read. */
	const struct spool_location *l2 = &rd.msgs[2].op.location;
	const struct spool_location *l3 = &rd.msgs[3].op.location;
	rd_flip_byte(l2->segment_id, l2->offset + rd.msgs[2].op.record_size / 2);
	rd_flip_byte(l3->segment_id, l3->offset + rd.msgs[3].op.record_size - 100);
	cr_assert_eq(rd_read_at(2, l2), -EBADMSG);
	cr_assert_null(rd.reads[2].op.message.body.data, "no view of unverified bytes");
	cr_assert_eq(rd.reads[2].op.message.rcpt_count, 0);
	cr_assert_eq(rd_read_at(3, l3), -EBADMSG);
	cr_assert_null(rd.reads[3].op.message.body.data);
	for (uint32_t i = 0; i < 10; i++) {
		if (i == 2 || i == 3)
			continue;
		cr_assert_eq(rd_read_at(i, &rd.msgs[i].op.location), 0, "neighbour %u", i);
		rd_expect_message(&rd.reads[i], i);
	}
	cr_assert_eq(spool_read_stats_get(rd.sp)->bad_records, 2);
}

Test(spool_read, a_location_that_names_no_record_fails_without_a_crash)
{
	rd_open();
	const size_t sizes[] = { 5000, 90000 };
	rd_write(0, 4, sizes, 2);
	struct spool_location base = rd.msgs[1].op.location;
	struct spool_location loc;
	/* Inside a record, 8-aligned: bad magic. */
	loc = base;
	loc.offset += 8;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	loc.offset = base.offset + 4096;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* The PAD record after the last message of a commit. */
	loc = rd.msgs[3].op.location;
	loc.offset += rd.msgs[3].op.record_size;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* Unwritten (pre-zeroed) space near the end of the segment. */
	loc.offset = (uint32_t)rd.cfg.segment_size - 4096;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* The header straddles the end of the segment: end of file. */
	loc.offset = (uint32_t)rd.cfg.segment_size - 16;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* Far past the end of the file. */
	loc.offset = 0x7ffffff8u;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* Another segment at the same offset: inside a 1 MB body. */
	const size_t big[] = { 1024 * 1024 };
	rd_write(4, 7, big, 1);
	cr_assert_neq(rd.msgs[6].op.location.segment_id, base.segment_id);
	loc = base;
	loc.segment_id = rd.msgs[6].op.location.segment_id;
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	/* A copy of the segment under another id (a recycled or misplaced
	 * file): every record in it has a good CRC but names another place. */
	loc = base;
	loc.segment_id = base.segment_id + 0x100000000ull;
	rd_copy_segment(base.segment_id, loc.segment_id);
	cr_assert_eq(rd_read_at(0, &loc), -EBADMSG);
	loc.segment_id = base.segment_id;
	cr_assert_eq(rd_read_at(0, &loc), 0);
	/* Refused before any IO. */
	loc = base;
	loc.offset += 3;
	cr_assert_eq(rd_read_at(0, &loc), -EINVAL);
	loc = base;
	loc.shard = 7;
	cr_assert_eq(rd_read_at(0, &loc), -EINVAL);
	loc = base;
	loc.segment_id = 0x0123456789abcdefull; /* no such file */
	cr_assert_eq(rd_read_at(0, &loc), -ENOENT);
	/* Nothing broke: the real records still read. */
	for (uint32_t i = 0; i < 7; i++) {
		cr_assert_eq(rd_read_at(i, &rd.msgs[i].op.location), 0);
		rd_expect_message(&rd.reads[i], i);
	}
}

Test(spool_read, a_buffer_or_recipient_array_too_small_is_refused_not_overrun)
{
	rd_open();
	const size_t sizes[] = { 70000 };
	rd_write(0, 3, sizes, 1);
	/* Two blocks of buffer for a 70 KB record. */
	struct rd_read *r = rd_read_prepare(0, 2 * 4096);
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[0].op.location, &r->op), 0);
	rd_run_until_done(&r, 1);
	cr_assert_eq(r->result, -EMSGSIZE);
	/* Message 2 has three recipients; room for one. */
	r = rd_read_prepare(2, 0);
	r->op.rcpts_capacity = 1;
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[2].op.location, &r->op), 0);
	rd_run_until_done(&r, 1);
	cr_assert_eq(r->result, -ENOBUFS);
	cr_assert_eq(rd_read_at(2, &rd.msgs[2].op.location), 0);
	rd_expect_message(&rd.reads[2], 2);
}

Test(spool_read, an_unaligned_buffer_is_a_programmer_error, .signal = SIGABRT)
{
	rd_open();
	const size_t sizes[] = { 1000 };
	rd_write(0, 1, sizes, 1);
	struct rd_read *r = rd_read_prepare(0, 0);
	r->op.buf += 8;
	int ret = spool_read_message(rd.sp, &rd.msgs[0].op.location, &r->op);
	cr_assert_fail("not refused: %d", ret);
}

/* ---- the fd cache and deletion ---- */

Test(spool_read, the_fd_cache_stays_bounded_with_more_segments_than_slots)
{
	rd.cfg.read_fds = 2;
	uint32_t fds_before = rd_count_fds();
	rd_open();
	const size_t sizes[] = { 700000 }; /* two records per 2 MiB segment */
	rd_write(0, 12, sizes, 1);
	uint32_t segments = rd_distinct_segments(0, 12);
	cr_assert_geq(segments, 5);
	/* Round robin over the segments, twice: every read misses. */
	for (uint32_t pass = 0; pass < 2; pass++) {
		for (uint32_t i = 0; i < 12; i++) {
			uint32_t m = (i * 5) % 12; /* jump between segments */
			cr_assert_eq(rd_read_at(m, &rd.msgs[m].op.location), 0);
			rd_expect_message(&rd.reads[m], m);
			cr_assert_leq(spool_read_fds_open(rd.sp), 2);
		}
	}
	const struct spool_read_stats *st = spool_read_stats_get(rd.sp);
	cr_assert_gt(st->fd_opens, segments);
	cr_assert_eq(st->fd_opens - st->fd_closes, spool_read_fds_open(rd.sp));
	/* Reads of three segments at once with two slots: the third waits. */
	struct rd_read *reads[3];
	uint32_t picks[3] = { 0, 4, 8 };
	cr_assert_neq(rd.msgs[0].op.location.segment_id, rd.msgs[4].op.location.segment_id);
	cr_assert_neq(rd.msgs[4].op.location.segment_id, rd.msgs[8].op.location.segment_id);
	cr_assert_neq(rd.msgs[0].op.location.segment_id, rd.msgs[8].op.location.segment_id);
	for (uint32_t k = 0; k < 2; k++) {
		reads[k] = rd_read_prepare(picks[k], 0);
		cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[picks[k]].op.location,
						&reads[k]->op),
			     0);
	}
	reads[2] = rd_read_prepare(picks[2], 0);
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[picks[2]].op.location, &reads[2]->op),
		     -EAGAIN);
	cr_assert_eq(reads[2]->callbacks, 0);
	rd_run_until_done(reads, 2);
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[picks[2]].op.location, &reads[2]->op), 0);
	rd_run_until_done(reads, 3);
	for (uint32_t k = 0; k < 3; k++)
		rd_expect_message(reads[k], picks[k]);
	/* Closing the spool closes every fd it opened. */
	spool_close(rd.sp);
	rd.sp = NULL;
	cr_assert_eq(rd_count_fds(), fds_before);
}

static void
rd_outcome_callback(struct spool_append *op, int32_t result)
{
	bool *done = op->ctx;
	cr_assert_eq(result, 0);
	*done = true;
}

/* Final outcomes for every recipient of messages [from, to). */
static void
rd_deliver_all(uint32_t from, uint32_t to)
{
	static struct spool_outcome outs[RD_MSG_MAX * RD_RCPTS_MAX];
	static struct spool_append ops[RD_MSG_MAX * RD_RCPTS_MAX];
	static bool done[RD_MSG_MAX * RD_RCPTS_MAX];
	uint32_t n = 0;
	for (uint32_t i = from; i < to; i++) {
		for (uint32_t k = 0; k < rd.msgs[i].message.rcpt_count; k++, n++) {
			outs[n] = (struct spool_outcome){ .message = rd.msgs[i].op.location,
							  .rcpt_index = k,
							  .state = SPOOL_RCPT_DELIVERED,
							  .time_ns = 1 };
			memset(&ops[n], 0, sizeof(ops[n]));
			done[n] = false;
			ops[n].callback = rd_outcome_callback;
			ops[n].ctx = &done[n];
			ops[n].input.outcome = &outs[n];
			cr_assert_eq(spool_write_outcome(rd.sp, &ops[n]), 0);
		}
	}
	bool all = false;
	for (uint32_t turns = 0; turns < RD_TURNS_MAX && !all; turns++) {
		cr_assert(ring_run_once(rd.ring, RD_TIMEOUT_NS) >= 0);
		all = true;
		for (uint32_t k = 0; k < n && all; k++)
			all = done[k];
	}
	cr_assert(all, "outcomes never acknowledged");
	/* Let the deletion's directory sync complete. */
	for (int i = 0; i < 20; i++)
		(void)ring_run_once(rd.ring, 1000000ull);
}

Test(spool_read, a_deleted_segment_reads_enoent_and_its_fd_is_closed)
{
	rd_open();
	const size_t sizes[] = { 700000 };
	rd_write(0, 6, sizes, 1);
	uint64_t first = rd.msgs[0].op.location.segment_id;
	cr_assert_eq(rd.msgs[1].op.location.segment_id, first);
	cr_assert_neq(rd.msgs[2].op.location.segment_id, first, "segment 1 must be closed");
	cr_assert_eq(rd_read_at(0, &rd.msgs[0].op.location), 0); /* caches its fd */
	cr_assert_eq(spool_read_fds_open(rd.sp), 1);
	uint64_t closes = spool_read_stats_get(rd.sp)->fd_closes;
	rd_deliver_all(0, 2);
	char path[PATH_MAX];
	rd_segment_path(first, path, sizeof(path));
	cr_assert_neq(access(path, F_OK), 0, "segment %s not deleted", path);
	cr_assert_eq(spool_read_stats_get(rd.sp)->fd_closes, closes + 1);
	cr_assert_eq(spool_read_fds_open(rd.sp), 0);
	cr_assert_eq(rd_read_at(0, &rd.msgs[0].op.location), -ENOENT);
	cr_assert_eq(rd_read_at(1, &rd.msgs[1].op.location), -ENOENT);
	cr_assert_eq(rd_read_at(2, &rd.msgs[2].op.location), 0);
	rd_expect_message(&rd.reads[2], 2);
}

Test(spool_read, forgetting_a_segment_under_a_read_in_flight_waits_for_it)
{
	rd_open();
	const size_t sizes[] = { 300000 };
	rd_write(0, 2, sizes, 1);
	struct rd_read *r = rd_read_prepare(0, 0);
	cr_assert_eq(spool_read_message(rd.sp, &rd.msgs[0].op.location, &r->op), 0);
	/* Prepared, not yet submitted: the fd must stay open. */
	spool_reader_forget_segment(spool_reader_get(rd.sp), rd.msgs[0].op.location.segment_id);
	cr_assert_eq(spool_read_fds_open(rd.sp), 1);
	rd_run_until_done(&r, 1);
	rd_expect_message(r, 0);
	cr_assert_eq(spool_read_fds_open(rd.sp), 0, "closed once the read finished");
	/* The file is still there (only forgotten): a new read reopens it. */
	cr_assert_eq(rd_read_at(1, &rd.msgs[1].op.location), 0);
	rd_expect_message(&rd.reads[1], 1);
	cr_assert_eq(spool_read_stats_get(rd.sp)->fd_opens, 2);
}

/* ---- faults at the completion layer ---- */

struct rd_fault {
	uint32_t nth;	 /* 1-based index of the first faulted read */
	bool persistent; /* every later read too */
	int32_t res;	 /* result to return; 0: a short count */
	uint32_t seen;
	uint32_t injected;
};

static struct rd_fault rd_fault;

static int32_t
rd_short_count(int32_t res, bool persistent)
{
	if (res <= 4096)
		return persistent ? res : res / 3; /* ragged: nothing whole kept */
	uint32_t half = ((uint32_t)res / 2) & ~4095u;
	if (!persistent)
		return (int32_t)half + 100; /* ragged tail past whole blocks */
	return (int32_t)(half == 0 ? 4096u : half);
}

static int32_t
rd_fault_hook(void *ctx, struct ring_op *op, int32_t res)
{
	struct rd_fault *f = ctx;
	if (op->tag != SPOOL_TAG_READ || res <= 0)
		return res;
	f->seen++;
	if (f->seen < f->nth || (!f->persistent && f->seen != f->nth))
		return res;
	int32_t out = f->res != 0 ? f->res : rd_short_count(res, f->persistent);
	if (out != res)
		f->injected++;
	return out;
}

static void
rd_fault_set(uint32_t nth, bool persistent, int32_t res)
{
	rd_fault = (struct rd_fault){ .nth = nth, .persistent = persistent, .res = res };
	ring_set_fault(rd.ring, rd_fault_hook, &rd_fault);
}

/* 3 KB, 70 KB, 1 MB and 5 KB records: one or two reads each. */
static const size_t rd_fault_sizes[] = { 3000, 70000, 1024 * 1024, 5000 };

static void
rd_read_each_and_compare(uint32_t count)
{
	for (uint32_t i = 0; i < count; i++) {
		cr_assert_eq(rd_read_at(i, &rd.msgs[i].op.location), 0, "message %u (fault at %u)",
			     i, rd_fault.nth);
		rd_expect_message(&rd.reads[i], i);
	}
}

Test(spool_read, short_reads_are_completed)
{
	rd_open();
	rd_write(0, 4, rd_fault_sizes, 4);
	/* Countdown: shorten read N once, for every N a pass issues. */
	for (uint32_t nth = 1; nth <= 8; nth++) {
		rd_fault_set(nth, false, 0);
		rd_read_each_and_compare(4);
		ring_set_fault(rd.ring, NULL, NULL);
		cr_assert_leq(rd_fault.injected, 1);
	}
	/* Persistent: every read over a block comes back half done. */
	rd_fault_set(1, true, 0);
	rd_read_each_and_compare(4);
	ring_set_fault(rd.ring, NULL, NULL);
	cr_assert_gt(rd_fault.injected, 8);
	const struct spool_read_stats *st = spool_read_stats_get(rd.sp);
	cr_assert_gt(st->short_reads, 8);
	cr_assert_gt(st->resubmits, 8);
	cr_assert_eq(st->failures, 0);
}

Test(spool_read, eio_on_a_read_reaches_the_callback)
{
	rd_open();
	rd_write(0, 4, rd_fault_sizes, 4);
	/* Message 1 (70 KB) takes two reads: fail the first, then the second. */
	for (uint32_t nth = 1; nth <= 2; nth++) {
		rd_fault_set(nth, false, -EIO);
		cr_assert_eq(rd_read_at(1, &rd.msgs[1].op.location), -EIO, "fault at read %u", nth);
		cr_assert_null(rd.reads[1].op.message.body.data);
		cr_assert_eq(rd_fault.injected, 1);
		ring_set_fault(rd.ring, NULL, NULL);
		/* One-shot: the same record reads fine right after. */
		cr_assert_eq(rd_read_at(1, &rd.msgs[1].op.location), 0);
		rd_expect_message(&rd.reads[1], 1);
	}
	rd_fault_set(1, true, -EIO);
	for (uint32_t i = 0; i < 4; i++)
		cr_assert_eq(rd_read_at(i, &rd.msgs[i].op.location), -EIO);
	ring_set_fault(rd.ring, NULL, NULL);
	rd_read_each_and_compare(4);
	cr_assert_eq(spool_read_fds_open(rd.sp), 1, "no fd leaked by failed reads");
}

Test(spool_read, eagain_and_eintr_resubmit_and_stay_bounded)
{
	rd_open();
	rd_write(0, 4, rd_fault_sizes, 4);
	const int32_t errs[] = { -EAGAIN, -EINTR };
	for (uint32_t e = 0; e < 2; e++) {
		for (uint32_t nth = 1; nth <= 7; nth++) {
			rd_fault_set(nth, false, errs[e]);
			rd_read_each_and_compare(4);
			ring_set_fault(rd.ring, NULL, NULL);
			cr_assert_eq(rd_fault.injected, 1);
		}
	}
	cr_assert_geq(spool_read_stats_get(rd.sp)->resubmits, 14);
	/* A read that never succeeds gives up after the resubmit bound. */
	rd_fault_set(1, true, -EAGAIN);
	cr_assert_eq(rd_read_at(0, &rd.msgs[0].op.location), -EIO);
	ring_set_fault(rd.ring, NULL, NULL);
	cr_assert_eq(rd_fault.injected, SPOOL_READ_RESUBMITS_MAX + 1);
	cr_assert_eq(rd_read_at(0, &rd.msgs[0].op.location), 0);
}
