/*
 * test_spool.c - the spool on real files through a real ring: group commit
 * order, recovery, reclamation, faults injected at the completion layer,
 * cut segments, corruption in the middle, the free-space reserve.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "spool/spool.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

#define MSG_MAX 4096
#define BODY_MAX (64 * 1024)

struct msg {
	uint8_t body[BODY_MAX];
	char rcpt_text[3][64];
	struct spool_span rcpts[3];
	struct spool_message message;
	struct spool_append op;
	bool done;
	int32_t result;
	uint32_t ack_order;
};

struct harness {
	char dir[PATH_MAX];
	struct ring *ring;
	struct spool *sp;
	struct spool_config cfg;
	struct msg *msgs;
	uint32_t msg_count;
	uint32_t acked;
	uint32_t callbacks;
	/* Recovered recipients. */
	uint32_t recovered;
	uint32_t recovered_deferred;
	uint32_t recovered_mismatch;
	struct spool_recovery_stats rstats;
};

static struct harness h;

static void
msg_callback(struct spool_append *op, int32_t result)
{
	struct msg *m = op->ctx;
	cr_assert(!m->done, "callback ran twice");
	m->done = true;
	m->result = result;
	m->ack_order = h.callbacks++;
	if (result == 0)
		h.acked++;
}

static void
msg_init(uint32_t i, size_t body_size)
{
	struct msg *m = &h.msgs[i];
	memset(&m->op, 0, sizeof(m->op));
	size_t len = test_body(i, body_size, m->body, sizeof(m->body));
	uint32_t n = 1 + i % 3;
	for (uint32_t r = 0; r < n; r++) {
		int w = snprintf(m->rcpt_text[r], sizeof(m->rcpt_text[r]), "user%u.%u@d%u.example", i,
				 r, i % 7);
		m->rcpts[r].data = (const uint8_t *)m->rcpt_text[r];
		m->rcpts[r].size = (uint32_t)w;
	}
	m->message.created_ns = 1000 + i;
	m->message.expires_ns = 5000 + i;
	m->message.sender.data = (const uint8_t *)"sender@example.org";
	m->message.sender.size = 18;
	m->message.rcpt_count = n;
	m->message.rcpts = m->rcpts;
	m->message.body.data = m->body;
	m->message.body.size = (uint32_t)len;
	m->op.callback = msg_callback;
	m->op.ctx = m;
	m->op.input.message = &m->message;
	m->done = false;
}

/* Recovered recipient: find its message by body text and compare. */
static void
recovered_rcpt(void *ctx, const struct spool_recovered *r)
{
	(void)ctx;
	h.recovered++;
	if (r->state == SPOOL_RCPT_DEFERRED)
		h.recovered_deferred++;
	uint64_t n = r->msg->created_ns - 1000;
	if (n >= h.msg_count) {
		h.recovered_mismatch++;
		return;
	}
	const struct msg *m = &h.msgs[n];
	if (m->message.body.size != r->msg->body.size ||
	    memcmp(m->body, r->msg->body.data, r->msg->body.size) != 0 ||
	    r->msg->rcpt_count != m->message.rcpt_count ||
	    memcmp(r->msg->rcpts[r->rcpt_index].data, m->rcpt_text[r->rcpt_index],
		   m->rcpts[r->rcpt_index].size) != 0)
		h.recovered_mismatch++;
}

static void
harness_config(void)
{
	spool_config_defaults(&h.cfg);
	h.cfg.dir = h.dir;
	h.cfg.segment_size = 1u << 20;
	h.cfg.journal_segment_size = 256u << 10;
	h.cfg.commit_size_max = 64u << 10;
	h.cfg.message_size_max = BODY_MAX;
	h.cfg.recipients_max = 10;
	h.cfg.free_space_reserve = 0;
}

static void
harness_setup(void)
{
	memset(&h, 0, sizeof(h));
	test_scratch_dir("spool", h.dir, sizeof(h.dir));
	h.msgs = calloc(MSG_MAX, sizeof(*h.msgs));
	cr_assert(h.msgs != NULL);
	h.ring = test_ring_create();
	if (h.ring == NULL)
		cr_skip_test("io_uring unavailable");
	harness_config();
}

static void
harness_open(void)
{
	char err[512] = "";
	h.recovered = h.recovered_deferred = h.recovered_mismatch = 0;
	h.sp = spool_open(h.ring, &h.cfg, recovered_rcpt, NULL, &h.rstats, err, sizeof(err));
	cr_assert(h.sp != NULL, "spool_open: %s", err);
}

static void
harness_reopen(void)
{
	spool_close(h.sp);
	h.sp = NULL;
	harness_open();
}

static void
harness_teardown(void)
{
	spool_close(h.sp);
	ring_destroy(h.ring);
	test_remove_tree(h.dir);
	free(h.msgs);
}

/* Queue messages [from, to) and run until each has its callback. A
 * refused write (unhealthy spool) counts as done with its error. */
static void
write_messages(uint32_t from, uint32_t to, size_t body_size)
{
	for (uint32_t i = from; i < to; i++) {
		msg_init(i, body_size);
		int ret = spool_write_message(h.sp, &h.msgs[i].op);
		if (ret != 0) {
			cr_assert(!spool_is_healthy(h.sp), "write %u refused: %d", i, ret);
			h.msgs[i].done = true;
			h.msgs[i].result = ret;
		}
	}
	h.msg_count = h.msg_count > to ? h.msg_count : to;
	for (uint32_t turns = 0; turns < 100000; turns++) {
		bool all = true;
		for (uint32_t i = from; i < to && all; i++)
			all = h.msgs[i].done;
		if (all)
			return;
		cr_assert(ring_run_once(h.ring, 100000000ull) >= 0);
	}
	cr_assert_fail("messages never completed");
}

static uint32_t
count_files(const char *sub)
{
	char path[PATH_MAX];
	spool_shard_path(h.dir, 0, sub, path, sizeof(path));
	uint64_t *ids = NULL;
	uint32_t count = 0;
	cr_assert_eq(spool_log_list_segments(path, &ids, &count), 0);
	free(ids);
	return count;
}

TestSuite(spool, .init = harness_setup, .fini = harness_teardown, .timeout = 60);

Test(spool, acks_in_log_order_and_recovery_returns_every_recipient)
{
	harness_open();
	write_messages(0, 600, 3000);
	cr_assert_eq(h.acked, 600);
	for (uint32_t i = 0; i < 600; i++) {
		cr_assert_eq(h.msgs[i].result, 0);
		cr_assert_eq(h.msgs[i].ack_order, i, "ack %u out of log order", i);
		if (i > 0)
			cr_assert(h.msgs[i].op.commit_seq >= h.msgs[i - 1].op.commit_seq);
	}
	/* Several commits: group commit batched, not one write per record. */
	const struct spool_log_stats *st = spool_message_stats(h.sp);
	cr_assert_lt(st->commits, 600);
	cr_assert_gt(count_files("msg"), 1); /* 1 MiB segments filled */
	harness_reopen();
	uint32_t rcpts = 0;
	for (uint32_t i = 0; i < 600; i++)
		rcpts += h.msgs[i].message.rcpt_count;
	cr_assert_eq(h.recovered, rcpts);
	cr_assert_eq(h.recovered_mismatch, 0);
	cr_assert_eq(h.rstats.corrupt_spans, 0);
	cr_assert_eq(spool_live_recipients(h.sp), rcpts);
}

struct outcome_op {
	struct spool_outcome out;
	struct spool_append op;
	bool done;
	int32_t result;
};

static void
outcome_callback(struct spool_append *op, int32_t result)
{
	struct outcome_op *o = op->ctx;
	o->done = true;
	o->result = result;
}

/* Record one outcome per recipient of messages [from, to). */
static void
write_outcomes(uint32_t from, uint32_t to, enum spool_rcpt_state state, uint64_t time_ns)
{
	static struct outcome_op ops[MSG_MAX * 3];
	uint32_t n = 0;
	for (uint32_t i = from; i < to; i++) {
		for (uint32_t r = 0; r < h.msgs[i].message.rcpt_count; r++, n++) {
			struct outcome_op *o = &ops[n];
			memset(o, 0, sizeof(*o));
			o->out.message = h.msgs[i].op.location;
			o->out.rcpt_index = r;
			o->out.state = (uint16_t)state;
			o->out.time_ns = time_ns;
			o->op.callback = outcome_callback;
			o->op.ctx = o;
			o->op.input.outcome = &o->out;
			cr_assert_eq(spool_write_outcome(h.sp, &o->op), 0);
		}
	}
	for (uint32_t turns = 0; turns < 100000; turns++) {
		bool all = true;
		for (uint32_t i = 0; i < n && all; i++)
			all = ops[i].done;
		if (all) {
			for (uint32_t i = 0; i < n; i++)
				cr_assert_eq(ops[i].result, 0);
			return;
		}
		cr_assert(ring_run_once(h.ring, 100000000ull) >= 0);
	}
	cr_assert_fail("outcomes never completed");
}

Test(spool, final_outcomes_are_not_returned_and_deferred_keep_their_time)
{
	harness_open();
	write_messages(0, 30, 2000);
	write_outcomes(0, 10, SPOOL_RCPT_DELIVERED, 1);
	write_outcomes(10, 15, SPOOL_RCPT_BOUNCED, 1);
	write_outcomes(15, 20, SPOOL_RCPT_DEFERRED, 777);
	harness_reopen();
	uint32_t live = 0, deferred = 0;
	for (uint32_t i = 15; i < 30; i++)
		live += h.msgs[i].message.rcpt_count;
	for (uint32_t i = 15; i < 20; i++)
		deferred += h.msgs[i].message.rcpt_count;
	cr_assert_eq(h.recovered, live);
	cr_assert_eq(h.recovered_deferred, deferred);
	cr_assert_eq(h.recovered_mismatch, 0);
}

Test(spool, segments_and_journals_are_deleted_once_every_recipient_is_final)
{
	harness_open();
	write_messages(0, 400, 8000); /* ~3.2 MB over 1 MiB segments */
	uint32_t before = count_files("msg");
	cr_assert_geq(before, 3);
	write_outcomes(0, 400, SPOOL_RCPT_DELIVERED, 1);
	/* Let the deletions' directory syncs complete. */
	for (int i = 0; i < 50; i++)
		(void)ring_run_once(h.ring, 1000000ull);
	/* Only the active segment, the ready pool and its spares (at most
	 * four recycled files) remain. */
	cr_assert_leq(count_files("msg"), 1 + h.cfg.ready_segments + 4, "%u files",
		      count_files("msg"));
	cr_assert_eq(spool_live_recipients(h.sp), 0);
	/* Reclaimed files went back into the pool instead of being zeroed anew. */
	cr_assert_gt(spool_message_stats(h.sp)->segments_recycled, 0);
	harness_reopen();
	cr_assert_eq(h.recovered, 0);
	/* After restart the old active segment, all final, is gone too. */
	cr_assert_leq(count_files("msg"), 1 + h.cfg.ready_segments + 4);
	cr_assert_leq(count_files("journal"), 1 + h.cfg.ready_segments + 4);
}

Test(spool, tmpfs_spool_is_refused_with_a_clear_error)
{
	struct statfs st;
	if (statfs("/dev/shm", &st) != 0 || st.f_type != 0x01021994)
		cr_skip_test("no tmpfs at /dev/shm");
	char dir[PATH_MAX], err[512] = "";
	snprintf(dir, sizeof(dir), "/dev/shm/ringmail-test-%d", (int)getpid());
	h.cfg.dir = dir;
	struct spool *sp = spool_open(h.ring, &h.cfg, NULL, NULL, NULL, err, sizeof(err));
	test_remove_tree(dir);
	cr_assert_null(sp);
	cr_assert(strstr(err, "tmpfs") != NULL, "error: %s", err);
}

Test(spool, free_space_reserve_refuses_new_messages_before_the_disk_is_full)
{
	h.cfg.free_space_reserve = UINT64_MAX / 2;
	harness_open();
	msg_init(0, 1000);
	cr_assert_eq(spool_write_message(h.sp, &h.msgs[0].op), -ENOSPC);
	cr_assert(spool_is_healthy(h.sp));
}

/* ---- faults at the completion layer ---- */

struct fault {
	uint16_t tag;	 /* which ops */
	uint32_t nth;	 /* 1-based index of the first faulted op */
	bool persistent; /* every later op too */
	int32_t res;	 /* result to return; 0: short count */
	uint32_t seen;
	uint32_t injected;
};

static struct fault fault;

static int32_t
fault_hook(void *ctx, struct ring_op *op, int32_t res)
{
	struct fault *f = ctx;
	if (op->tag != f->tag || res < 0)
		return res;
	f->seen++;
	if (f->seen < f->nth || (!f->persistent && f->seen != f->nth))
		return res;
	f->injected++;
	if (f->res == 0) /* short: a whole number of blocks, or a ragged count */
		return res > 8192 ? (f->seen & 1 ? 4096 : 1000) : res;
	return f->res;
}

static void
run_failure(uint16_t tag, int32_t res, bool fdatasync)
{
	h.cfg.use_fdatasync = fdatasync;
	harness_open();
	write_messages(0, 50, 2000); /* healthy baseline, acknowledged */
	cr_assert_eq(h.acked, 50);
	fault = (struct fault){ .tag = tag, .nth = 2, .persistent = false, .res = res };
	ring_set_fault(h.ring, fault_hook, &fault);
	/* Several turns of writes so the fault lands in the middle. */
	for (uint32_t batch = 0; batch < 6; batch++)
		write_messages(50 + batch * 20, 70 + batch * 20, 2000);
	ring_set_fault(h.ring, NULL, NULL);
	cr_assert_eq(fault.injected, 1);
	cr_assert(!spool_is_healthy(h.sp));
	/* The first faulted commit and everything after: not acknowledged. */
	uint32_t first_failed = UINT32_MAX;
	for (uint32_t i = 50; i < 170; i++) {
		if (h.msgs[i].result != 0 && first_failed == UINT32_MAX)
			first_failed = i;
		if (first_failed != UINT32_MAX)
			cr_assert_neq(h.msgs[i].result, 0, "message %u acked after a failure", i);
	}
	cr_assert_neq(first_failed, UINT32_MAX);
	msg_init(199, 1000);
	cr_assert_eq(spool_write_message(h.sp, &h.msgs[199].op), -EIO);
	/* Restart: every acknowledged message is still there. */
	uint32_t acked_rcpts = 0;
	for (uint32_t i = 0; i < 170; i++) {
		if (h.msgs[i].result == 0)
			acked_rcpts += h.msgs[i].message.rcpt_count;
	}
	harness_reopen();
	cr_assert_geq(h.recovered, acked_rcpts);
	cr_assert_eq(h.recovered_mismatch, 0);
	cr_assert(spool_is_healthy(h.sp));
}

Test(spool, eio_on_a_data_write_acknowledges_nothing_it_covered)
{
	run_failure(SPOOL_TAG_COMMIT_WRITE, -EIO, false);
}

Test(spool, eio_on_a_sync_acknowledges_nothing_and_is_never_retried)
{
	run_failure(SPOOL_TAG_COMMIT_SYNC, -EIO, true);
}

Test(spool, enospc_on_a_data_write_makes_the_spool_unhealthy)
{
	run_failure(SPOOL_TAG_COMMIT_WRITE, -ENOSPC, false);
}

static void
run_transient(int32_t res)
{
	harness_open();
	fault = (struct fault){ .tag = SPOOL_TAG_COMMIT_WRITE, .nth = 1, .persistent = true,
				.res = res };
	ring_set_fault(h.ring, fault_hook, &fault);
	for (uint32_t batch = 0; batch < 10; batch++)
		write_messages(batch * 30, batch * 30 + 30, 6000);
	ring_set_fault(h.ring, NULL, NULL);
	cr_assert_gt(fault.injected, 0);
	cr_assert_eq(h.acked, 300);
	cr_assert(spool_is_healthy(h.sp));
	cr_assert_gt(spool_message_stats(h.sp)->resubmits, 0);
	harness_reopen();
	uint32_t rcpts = 0;
	for (uint32_t i = 0; i < 300; i++)
		rcpts += h.msgs[i].message.rcpt_count;
	cr_assert_eq(h.recovered, rcpts);
	cr_assert_eq(h.recovered_mismatch, 0);
}

Test(spool, short_writes_are_completed)
{
	/* Every commit write returns short; the remainder is resubmitted
	 * (bounded: after 64 resubmits a commit fails, which this stays under
	 * because only writes over 8 KiB are shortened). */
	run_transient(0);
	cr_assert_gt(spool_message_stats(h.sp)->short_writes + fault.injected, 0);
}

Test(spool, eagain_is_resubmitted_not_failed)
{
	fault.nth = 0;
	harness_open();
	fault = (struct fault){ .tag = SPOOL_TAG_COMMIT_WRITE, .nth = 3, .persistent = false,
				.res = -EAGAIN };
	ring_set_fault(h.ring, fault_hook, &fault);
	for (uint32_t batch = 0; batch < 5; batch++)
		write_messages(batch * 30, batch * 30 + 30, 3000);
	ring_set_fault(h.ring, NULL, NULL);
	cr_assert_eq(fault.injected, 1);
	cr_assert_eq(h.acked, 150);
	cr_assert(spool_is_healthy(h.sp));
}

/* A hook added after the spool's: what had reached the kernel by then. */
static uint64_t hook_seen_sqes;

static void
record_submitted_hook(void *ctx)
{
	hook_seen_sqes = ring_stats_get(ctx)->submitted_sqes;
}

/*
 * A message commit reaches the kernel from the message log's hook, before
 * later hooks run (their work overlaps the device's); an outcome commit
 * waits for the turn's one submit.
 */
Test(spool, a_message_commit_is_submitted_before_later_hooks_run)
{
	harness_open();
	write_messages(0, 1, 1000); /* both logs settled */
	ring_add_hook(h.ring, record_submitted_hook, h.ring);
	uint64_t before = ring_stats_get(h.ring)->submitted_sqes;
	msg_init(1, 1000);
	cr_assert_eq(spool_write_message(h.sp, &h.msgs[1].op), 0);
	cr_assert(ring_run_once(h.ring, 0) >= 0);
	cr_assert_gt(hook_seen_sqes, before, "the commit waited for the turn's submit");
	for (uint32_t turns = 0; !h.msgs[1].done; turns++) {
		cr_assert_lt(turns, 100000);
		cr_assert(ring_run_once(h.ring, 100000000ull) >= 0);
	}
	cr_assert_eq(h.msgs[1].result, 0);
	/* An outcome: the journal does not submit on its own. */
	struct outcome_op o = { 0 };
	o.out.message = h.msgs[1].op.location;
	o.out.rcpt_index = 0;
	o.out.state = SPOOL_RCPT_DEFERRED;
	o.out.time_ns = 1;
	o.op.callback = outcome_callback;
	o.op.ctx = &o;
	o.op.input.outcome = &o.out;
	before = ring_stats_get(h.ring)->submitted_sqes;
	cr_assert_eq(spool_write_outcome(h.sp, &o.op), 0);
	cr_assert(ring_run_once(h.ring, 0) >= 0);
	cr_assert_eq(hook_seen_sqes, before);
	for (uint32_t turns = 0; !o.done; turns++) {
		cr_assert_lt(turns, 100000);
		cr_assert(ring_run_once(h.ring, 100000000ull) >= 0);
	}
	cr_assert_eq(o.result, 0);
	ring_remove_hook(h.ring, record_submitted_hook, h.ring);
}

/* Zero writes of segment preparation, by size, seen at completion. */
struct zero_count {
	uint32_t paced;	 /* 256 KiB */
	uint32_t hurried; /* 1 MiB */
	uint32_t other;
};

static int32_t
zero_count_hook(void *ctx, struct ring_op *op, int32_t res)
{
	struct zero_count *z = ctx;
	if (op->tag != SPOOL_TAG_PREPARE || op->kind != RING_OP_WRITE)
		return res;
	if (op->len == 256u << 10)
		z->paced++;
	else if (op->len == 1u << 20)
		z->hurried++;
	else
		z->other++;
	return res;
}

/*
 * Filling the ready pool while the log is usable writes zeros 256 KiB at a
 * time (each commit's flush carries at most that much of them); only a
 * preparation that appends are waiting for writes 1 MiB chunks. Before
 * the pacing every preparation wrote four 1 MiB chunks at a time, and a
 * growing queue stalled every commit for ~100 ms per 64 MiB segment.
 */
Test(spool, zeroing_is_paced_until_appends_wait_for_it)
{
	h.cfg.segment_size = 2u << 20;
	h.cfg.ready_segments = 2;
	struct zero_count z = { 0 };
	harness_open(); /* the first segments are ready: prepared at open */
	ring_set_fault(h.ring, zero_count_hook, &z);
	/* The pool fills in the background: paced. */
	uint64_t deadline = eng_now_monotonic_ns() + 20ull * 1000000000ull;
	while (spool_message_stats(h.sp)->segments_created < 3) {
		cr_assert_lt(eng_now_monotonic_ns(), deadline, "ready pool never filled");
		cr_assert(ring_run_once(h.ring, 10000000ull) >= 0);
	}
	cr_assert_geq(z.paced, 8, "paced %u", z.paced); /* a whole 2 MiB segment */
	cr_assert_eq(z.hurried, 0, "hurried %u", z.hurried);
	cr_assert_eq(z.other, 0);
	write_messages(0, 20, 3000);
	cr_assert_eq(h.acked, 20);
	ring_set_fault(h.ring, NULL, NULL);
}

/* The active segment is the last one (none ready): 1 MiB writes, still
 * one at a time, before any append has to wait for the next. */
static void
run_until_created(uint64_t count)
{
	uint64_t deadline = eng_now_monotonic_ns() + 20ull * 1000000000ull;
	while (spool_message_stats(h.sp)->segments_created < count) {
		cr_assert_lt(eng_now_monotonic_ns(), deadline, "%" PRIu64 " segments never made",
			     count);
		cr_assert(ring_run_once(h.ring, 10000000ull) >= 0);
	}
}

Test(spool, zeroing_speeds_up_when_the_pool_is_empty)
{
	h.cfg.segment_size = 2u << 20;
	h.cfg.ready_segments = 1;
	h.cfg.commit_size_max = 1u << 20; /* every append placed in one turn */
	struct zero_count z = { 0 };
	harness_open();
	run_until_created(2); /* one to become active, one ready */
	ring_set_fault(h.ring, zero_count_hook, &z);
	/* About 2.4 MB: the first segment fills and the ready one takes over,
	 * which leaves none ready while nothing waits. */
	write_messages(0, 40, 60000);
	cr_assert_eq(h.acked, 40);
	run_until_created(3);
	cr_assert_geq(z.hurried, 2, "hurried %u paced %u", z.hurried, z.paced);
	ring_set_fault(h.ring, NULL, NULL);
}

Test(spool, zeroing_hurries_when_appends_wait_for_it)
{
	h.cfg.segment_size = 2u << 20;
	h.cfg.ready_segments = 0; /* a segment is prepared only when needed */
	struct zero_count z = { 0 };
	harness_open();
	ring_set_fault(h.ring, zero_count_hook, &z);
	/* About 6 MB: three more segments, each made while appends wait. */
	write_messages(0, 100, 60000);
	cr_assert_eq(h.acked, 100);
	cr_assert_geq(spool_message_stats(h.sp)->segments_created, 3);
	cr_assert_geq(z.hurried, 4, "hurried %u paced %u", z.hurried, z.paced);
	cr_assert_eq(z.other, 0);
	ring_set_fault(h.ring, NULL, NULL);
}

/*
 * No segment can be made: every preparation's zeroing write fails with
 * ENOSPC (the completion layer, as a full disk would answer). The appends
 * that find no room fail with that error in bounded time instead of
 * waiting forever for a preparation that keeps failing (the client would
 * time out at its final dot); the spool stays healthy, takes messages
 * again by itself once preparations succeed, and everything acknowledged
 * is recovered. Before the fix, write_messages() never returned.
 */
Test(spool, appends_fail_fast_when_no_segment_can_be_made)
{
	h.cfg.ready_segments = 1;
	harness_open();
	fault = (struct fault){ .tag = SPOOL_TAG_PREPARE, .nth = 1, .persistent = true,
				.res = -ENOSPC };
	ring_set_fault(h.ring, fault_hook, &fault);
	/* About 3.6 MB into 1 MiB segments: the active and the ready one fill. */
	write_messages(0, 60, 60000);
	uint32_t failed = 0, acked_rcpts = 0;
	for (uint32_t i = 0; i < 60; i++) {
		if (h.msgs[i].result == 0)
			acked_rcpts += h.msgs[i].message.rcpt_count;
		else
			cr_assert_eq(h.msgs[i].result, -ENOSPC, "message %u: %d", i,
				     h.msgs[i].result);
		failed += h.msgs[i].result != 0;
	}
	cr_assert_gt(fault.injected, 0);
	cr_assert_geq(h.acked, 10, "acked %u", h.acked);
	cr_assert_gt(failed, 0);
	cr_assert(spool_is_healthy(h.sp));
	cr_assert_gt(spool_message_stats(h.sp)->appends_failed_no_segment, 0);
	/* Back by itself once a preparation succeeds (retried after 1 s). */
	ring_set_fault(h.ring, NULL, NULL);
	uint64_t deadline = eng_now_monotonic_ns() + 20ull * 1000000000ull;
	uint32_t next = 60;
	for (;;) {
		cr_assert_lt(next, MSG_MAX);
		write_messages(next, next + 1, 60000);
		if (h.msgs[next].result == 0) {
			acked_rcpts += h.msgs[next].message.rcpt_count;
			break;
		}
		cr_assert_eq(h.msgs[next].result, -ENOSPC);
		cr_assert_lt(eng_now_monotonic_ns(), deadline, "never accepted again");
		next++;
		(void)ring_run_once(h.ring, 50000000ull);
	}
	harness_reopen();
	cr_assert_eq(h.recovered, acked_rcpts);
	cr_assert_eq(h.recovered_mismatch, 0);
}

/* Records far larger than a commit go beyond the registered head of the
 * commit buffer and out as plain writes: durable and recovered as well. */
Test(spool, records_beyond_the_registered_buffer_head_are_written_and_recovered)
{
	h.cfg.commit_size_max = 16u << 10;
	harness_open();
	write_messages(0, 40, 60000);
	cr_assert_eq(h.acked, 40);
	for (uint32_t i = 0; i < 40; i++)
		cr_assert_eq(h.msgs[i].ack_order, i);
	harness_reopen();
	uint32_t rcpts = 0;
	for (uint32_t i = 0; i < 40; i++)
		rcpts += h.msgs[i].message.rcpt_count;
	cr_assert_eq(h.recovered, rcpts);
	cr_assert_eq(h.recovered_mismatch, 0);
	cr_assert_eq(h.rstats.corrupt_spans, 0);
}
