/*
 * test_ring.c - Criterion tests of the ring core (ring/ring.c) on a real
 * io_uring: completions carry callback and ctx, timers and cancellation,
 * file I/O, the fault hook, in-flight accounting, loop hooks, and msg_ring
 * between two rings on two threads.
 *
 * Suite "ring": skips (not fails) when io_uring is unusable (t_ring.h).
 * No sleeps are used as synchronisation: threads meet at barriers and every
 * wait is a ring wait with a bounded timeout.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "t_ring.h"

#define T_WAIT_NS (5ull * 1000000000ull)
#define T_TURNS_MAX 64

/* What a callback saw. */
struct t_completion {
	int count;
	int32_t res;
	struct ring_op *op_seen;
	void *ctx_seen;
};

static void
t_record_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct t_completion *completion = op->ctx;
	completion->count++;
	completion->res = res;
	completion->op_seen = op;
	completion->ctx_seen = op->ctx;
}

/* Run loop turns until *count reaches target. Bounded twice: at most
 * T_TURNS_MAX turns and T_WAIT_NS in all, so a missing CQE fails the test
 * instead of hanging it. */
static void
t_run_until(struct ring *ring, const int *count, int target)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_WAIT_NS;
	for (int turn = 0; turn < T_TURNS_MAX && *count < target; turn++) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns)
			break;
		int ret = ring_run_once(ring, deadline_ns - now_ns);
		cr_assert_geq(ret, 0, "ring_run_once: %s", strerror(-ret));
	}
	cr_assert_eq(*count, target, "expected %d completions, saw %d", target, *count);
}

Test(ring, probe_succeeds_and_reports_msg_ring)
{
	struct ring_caps caps;
	char err[T_RING_ERR_SIZE] = "";
	int ret = ring_probe(&caps, err, sizeof(err));
	if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES || ret == -EINVAL)
		cr_skip_test("io_uring unusable here: %s", err);
	cr_assert_eq(ret, 0, "ring_probe: %s", err);
	cr_assert(caps.msg_ring);
	cr_assert_neq(caps.features, 0u);
}

Test(ring, nop_completes_with_callback_and_ctx)
{
	struct ring *ring = t_ring_create();
	struct t_completion completion = { 0 };
	struct ring_op op = { .callback = t_record_callback, .ctx = &completion };
	cr_assert_eq(ring_prep_nop(ring, &op), 0);
	cr_assert(op.in_flight);
	cr_assert_eq(op.kind, RING_OP_NOP);
	t_run_until(ring, &completion.count, 1);
	cr_assert_eq(completion.res, 0);
	cr_assert_eq(completion.op_seen, &op);
	cr_assert_eq(completion.ctx_seen, &completion);
	cr_assert_not(op.in_flight);
	ring_destroy(ring);
}

Test(ring, timeout_fires_with_etime)
{
	struct ring *ring = t_ring_create();
	const uint64_t timeout_ns = 50ull * 1000000ull;
	struct t_completion completion = { 0 };
	struct ring_op op = { .callback = t_record_callback, .ctx = &completion };
	uint64_t start_ns = eng_now_monotonic_ns();
	cr_assert_eq(ring_prep_timeout(ring, &op, timeout_ns), 0);
	t_run_until(ring, &completion.count, 1);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	cr_assert_eq(completion.res, -ETIME, "timeout completed with %d", completion.res);
	/* hrtimer: never early; generous upper bound for a loaded VM. */
	cr_assert_geq(elapsed_ns, timeout_ns, "fired after %llu ns",
		      (unsigned long long)elapsed_ns);
	cr_assert_lt(elapsed_ns, 2000ull * 1000000ull, "fired after %llu ns",
		     (unsigned long long)elapsed_ns);
	ring_destroy(ring);
}

Test(ring, cancel_of_pending_timeout_gives_ecanceled)
{
	struct ring *ring = t_ring_create();
	struct t_completion timer = { 0 };
	struct t_completion cancel = { 0 };
	struct ring_op timer_op = { .callback = t_record_callback, .ctx = &timer };
	struct ring_op cancel_op = { .callback = t_record_callback, .ctx = &cancel };
	cr_assert_eq(ring_prep_timeout(ring, &timer_op, 60ull * 1000000000ull), 0);
	/* Submit the timer in its own turn so the cancel finds it armed. */
	cr_assert_geq(ring_run_once(ring, 0), 0);
	cr_assert_eq(timer.count, 0);
	cr_assert_eq(ring_prep_cancel(ring, &cancel_op, &timer_op), 0);
	uint64_t start_ns = eng_now_monotonic_ns();
	t_run_until(ring, &cancel.count, 1);
	t_run_until(ring, &timer.count, 1);
	cr_assert_eq(timer.count, 1);
	cr_assert_eq(cancel.count, 1);
	cr_assert_eq(timer.res, -ECANCELED, "target completed with %d", timer.res);
	cr_assert_eq(cancel.res, 0, "cancel completed with %d", cancel.res);
	cr_assert_lt(eng_now_monotonic_ns() - start_ns, 2000ull * 1000000ull);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	ring_destroy(ring);
}

Test(ring, cancel_of_unknown_op_gives_enoent)
{
	struct ring *ring = t_ring_create();
	struct t_completion cancel = { 0 };
	struct t_completion idle = { 0 };
	struct ring_op cancel_op = { .callback = t_record_callback, .ctx = &cancel };
	struct ring_op idle_op = { .callback = t_record_callback, .ctx = &idle };
	cr_assert_eq(ring_prep_cancel(ring, &cancel_op, &idle_op), 0);
	t_run_until(ring, &cancel.count, 1);
	cr_assert_eq(cancel.res, -ENOENT);
	cr_assert_eq(idle.count, 0);
	ring_destroy(ring);
}

static int
t_temp_file(char *path, size_t path_size)
{
	const char *dir = getenv("TMPDIR");
	if (dir == NULL || dir[0] == '\0')
		dir = "/tmp";
	int len = snprintf(path, path_size, "%s/ringmail-test-ring-XXXXXX", dir);
	cr_assert(len > 0 && (size_t)len < path_size);
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0, "mkstemp(%s): %s", path, strerror(errno));
	return fd;
}

Test(ring, write_then_read_temp_file)
{
	struct ring *ring = t_ring_create();
	char path[256];
	int fd = t_temp_file(path, sizeof(path));
	cr_assert_eq(unlink(path), 0);
	static const char text[] = "MAIL FROM:<a@example.org>\r\n";
	const uint32_t text_len = (uint32_t)(sizeof(text) - 1);
	const uint64_t offset = 4096;

	struct t_completion write_done = { 0 };
	struct ring_op write_op = { .callback = t_record_callback, .ctx = &write_done };
	cr_assert_eq(ring_prep_write(ring, &write_op, fd, text, text_len, offset, 0), 0);
	cr_assert_eq(write_op.len, text_len);
	cr_assert_eq(write_op.offset, offset);
	t_run_until(ring, &write_done.count, 1);
	cr_assert_eq(write_done.res, (int32_t)text_len, "write: %d", write_done.res);

	char buf[64];
	memset(buf, 0, sizeof(buf));
	struct t_completion read_done = { 0 };
	struct ring_op read_op = { .callback = t_record_callback, .ctx = &read_done };
	cr_assert_eq(ring_prep_read(ring, &read_op, fd, buf, (uint32_t)sizeof(buf), offset), 0);
	t_run_until(ring, &read_done.count, 1);
	cr_assert_eq(read_done.res, (int32_t)text_len, "read: %d", read_done.res);
	cr_assert_arr_eq(buf, text, text_len);

	struct t_completion fsync_done = { 0 };
	struct ring_op fsync_op = { .callback = t_record_callback, .ctx = &fsync_done };
	cr_assert_eq(ring_prep_fsync(ring, &fsync_op, fd, true), 0);
	t_run_until(ring, &fsync_done.count, 1);
	cr_assert_eq(fsync_done.res, 0);
	cr_assert_eq(close(fd), 0);
	ring_destroy(ring);
}

/* renameat through the ring, then the directory fsync that makes it
 * durable: the spool's segment state changes (.ready -> .seg) use both. */
Test(ring, renameat_then_directory_fsync)
{
	struct ring *ring = t_ring_create();
	char path[256], to[300];
	int fd = t_temp_file(path, sizeof(path));
	cr_assert_eq(close(fd), 0);
	snprintf(to, sizeof(to), "%s.renamed", path);
	struct t_completion done = { 0 };
	struct ring_op op = { .callback = t_record_callback, .ctx = &done };
	cr_assert_eq(ring_prep_renameat(ring, &op, AT_FDCWD, path, AT_FDCWD, to, 0), 0);
	cr_assert_eq(op.kind, RING_OP_RENAMEAT);
	t_run_until(ring, &done.count, 1);
	cr_assert_eq(done.res, 0, "renameat: %d", done.res);
	cr_assert_eq(access(path, F_OK), -1);
	cr_assert_eq(access(to, F_OK), 0);
	/* Renaming what is gone reports the error, not success. */
	struct t_completion again = { 0 };
	op.ctx = &again;
	cr_assert_eq(ring_prep_renameat(ring, &op, AT_FDCWD, path, AT_FDCWD, to, 0), 0);
	t_run_until(ring, &again.count, 1);
	cr_assert_eq(again.res, -ENOENT);
	char dir[256];
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = 0;
	int dir_fd = open(dir, O_RDONLY | O_DIRECTORY);
	cr_assert_geq(dir_fd, 0);
	struct t_completion synced = { 0 };
	struct ring_op sync_op = { .callback = t_record_callback, .ctx = &synced };
	cr_assert_eq(ring_prep_fsync(ring, &sync_op, dir_fd, false), 0);
	t_run_until(ring, &synced.count, 1);
	cr_assert_eq(synced.res, 0);
	cr_assert_eq(close(dir_fd), 0);
	cr_assert_eq(unlink(to), 0);
	ring_destroy(ring);
}

/* Turns every NOP into -EIO, leaves everything else alone. */
static int32_t
t_fault_nop_eio(void *ctx, struct ring_op *op, int32_t res)
{
	int *calls = ctx;
	(*calls)++;
	if (op->kind == RING_OP_NOP)
		return -EIO;
	return res;
}

Test(ring, fault_hook_rewrites_nop_result)
{
	struct ring *ring = t_ring_create();
	int fault_calls = 0;
	ring_set_fault(ring, t_fault_nop_eio, &fault_calls);
	struct t_completion nop = { 0 };
	struct t_completion timer = { 0 };
	struct ring_op nop_op = { .callback = t_record_callback, .ctx = &nop };
	struct ring_op timer_op = { .callback = t_record_callback, .ctx = &timer };
	cr_assert_eq(ring_prep_nop(ring, &nop_op), 0);
	cr_assert_eq(ring_prep_timeout(ring, &timer_op, 1000000ull), 0);
	t_run_until(ring, &nop.count, 1);
	t_run_until(ring, &timer.count, 1);
	cr_assert_eq(nop.res, -EIO, "nop result %d", nop.res);
	cr_assert_eq(timer.res, -ETIME, "the hook must pass other ops through");
	cr_assert_eq(fault_calls, 2);

	/* Removing the hook restores real results. */
	ring_set_fault(ring, NULL, NULL);
	cr_assert_eq(ring_prep_nop(ring, &nop_op), 0);
	t_run_until(ring, &nop.count, 2);
	cr_assert_eq(nop.res, 0);
	cr_assert_eq(fault_calls, 2);
	ring_destroy(ring);
}

Test(ring, ops_in_flight_returns_to_zero)
{
	struct ring *ring = t_ring_create();
	enum { T_OPS = 48 };
	struct ring_op ops[T_OPS];
	struct t_completion completion = { 0 };
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	for (uint32_t i = 0; i < T_OPS; i++) {
		ops[i] = (struct ring_op){ .callback = t_record_callback, .ctx = &completion };
		cr_assert_eq(ring_prep_nop(ring, &ops[i]), 0);
		cr_assert_eq(ring_ops_in_flight(ring), i + 1);
	}
	t_run_until(ring, &completion.count, T_OPS);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	const struct ring_stats *stats = ring_stats_get(ring);
	cr_assert_geq(stats->completed_cqes, (uint64_t)T_OPS);
	cr_assert_geq(stats->submitted_sqes, (uint64_t)T_OPS);
	cr_assert_eq(stats->cq_overflows, 0u);
	for (uint32_t i = 0; i < T_OPS; i++)
		cr_assert_not(ops[i].in_flight);
	ring_destroy(ring);
}

/* Re-arms itself from inside its own callback until ctx's budget runs out. */
struct t_rearm {
	struct ring *ring;
	int remaining;
	int runs;
};

static void
t_rearm_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct t_rearm *rearm = op->ctx;
	cr_assert_eq(res, 0);
	cr_assert_not(op->in_flight, "op must be free inside its callback");
	rearm->runs++;
	if (--rearm->remaining > 0)
		cr_assert_eq(ring_prep_nop(rearm->ring, op), 0);
}

Test(ring, op_can_be_reused_from_its_own_callback)
{
	struct ring *ring = t_ring_create();
	struct t_rearm rearm = { .ring = ring, .remaining = 10 };
	struct ring_op op = { .callback = t_rearm_callback, .ctx = &rearm };
	cr_assert_eq(ring_prep_nop(ring, &op), 0);
	t_run_until(ring, &rearm.runs, 10);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	ring_destroy(ring);
}

struct t_hook_log {
	char order[32];
	uint32_t length;
};

static void
t_hook_a(void *ctx)
{
	struct t_hook_log *log = ctx;
	if (log->length < sizeof(log->order))
		log->order[log->length++] = 'a';
}

static void
t_hook_b(void *ctx)
{
	struct t_hook_log *log = ctx;
	if (log->length < sizeof(log->order))
		log->order[log->length++] = 'b';
}

Test(ring, hooks_run_in_registration_order_every_turn)
{
	struct ring *ring = t_ring_create();
	struct t_hook_log log = { .length = 0 };
	ring_add_hook(ring, t_hook_a, &log);
	ring_add_hook(ring, t_hook_b, &log);
	for (int turn = 0; turn < 3; turn++)
		cr_assert_eq(ring_run_once(ring, 0), 0);
	cr_assert_eq(log.length, 6u);
	cr_assert_arr_eq(log.order, "ababab", 6);
	cr_assert_eq(ring_stats_get(ring)->turns, 3u);
	ring_destroy(ring);
}

Test(ring, run_once_with_timeout_returns_zero_when_idle)
{
	struct ring *ring = t_ring_create();
	uint64_t start_ns = eng_now_monotonic_ns();
	int ret = ring_run_once(ring, 20ull * 1000000ull);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	cr_assert_eq(ret, 0);
	cr_assert_geq(elapsed_ns, 10ull * 1000000ull, "waited only %llu ns",
		      (unsigned long long)elapsed_ns);
	ring_destroy(ring);
}

/* ---- msg_ring between two rings on two threads ---- */

#define T_MSG_VALUE 4242
#define T_MSG_VALUE_FIRE_AND_FORGET 77

struct t_msg_peer {
	pthread_barrier_t ready;  /* peer's ring exists (or failed) */
	pthread_barrier_t done;	  /* sender finished; peer may destroy */
	int ring_fd;
	bool created;
	char err[T_RING_ERR_SIZE];
	struct ring_op target;
	int received_count;
	int32_t received[4];
	pthread_t peer_thread;
	pthread_t target_thread_seen;
};

static void
t_msg_target_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct t_msg_peer *peer = op->ctx;
	if (peer->received_count < (int)ENG_ARRAY_COUNT(peer->received))
		peer->received[peer->received_count] = res;
	peer->received_count++;
	peer->target_thread_seen = pthread_self();
}

static void *
t_msg_peer_main(void *arg)
{
	struct t_msg_peer *peer = arg;
	struct ring *ring = t_ring_create_or_null(peer->err, sizeof(peer->err));
	peer->created = ring != NULL;
	if (ring != NULL) {
		ring_op_msg_target_init(&peer->target, t_msg_target_callback, peer);
		peer->ring_fd = ring_fd(ring);
	}
	pthread_barrier_wait(&peer->ready);
	/* Bounded: at most T_TURNS_MAX turns and T_WAIT_NS in all. */
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_WAIT_NS;
	for (int turn = 0; ring != NULL && turn < T_TURNS_MAX && peer->received_count < 2; turn++) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns || ring_run_once(ring, deadline_ns - now_ns) < 0)
			break;
	}
	pthread_barrier_wait(&peer->done);
	ring_destroy(ring);
	return NULL;
}

Test(ring, msg_ring_between_threads_delivers_value_to_target_callback)
{
	struct ring *ring = t_ring_create();
	struct t_msg_peer peer;
	memset(&peer, 0, sizeof(peer));
	cr_assert_eq(pthread_barrier_init(&peer.ready, NULL, 2), 0);
	cr_assert_eq(pthread_barrier_init(&peer.done, NULL, 2), 0);
	cr_assert_eq(pthread_create(&peer.peer_thread, NULL, t_msg_peer_main, &peer), 0);
	pthread_barrier_wait(&peer.ready);
	if (!peer.created) {
		pthread_barrier_wait(&peer.done);
		pthread_join(peer.peer_thread, NULL);
		cr_assert_fail("peer ring_create: %s", peer.err);
	}
	struct t_completion sent = { 0 };
	struct ring_op send_op = { .callback = t_record_callback, .ctx = &sent };
	cr_assert_eq(ring_prep_msg(ring, &send_op, peer.ring_fd, &peer.target, T_MSG_VALUE), 0);
	cr_assert_eq(ring_ops_in_flight(ring), 1u);
	cr_assert_eq(ring_prep_msg(ring, NULL, peer.ring_fd, &peer.target,
				   T_MSG_VALUE_FIRE_AND_FORGET), 0);
	cr_assert_eq(ring_ops_in_flight(ring), 1u, "fire-and-forget is not tracked");
	t_run_until(ring, &sent.count, 1);
	cr_assert_eq(sent.res, 0, "msg_ring sender result %d", sent.res);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	pthread_barrier_wait(&peer.done);
	cr_assert_eq(pthread_join(peer.peer_thread, NULL), 0);

	cr_assert_eq(peer.received_count, 2);
	bool saw_value = false;
	bool saw_fire_and_forget = false;
	for (int i = 0; i < 2; i++) {
		saw_value |= peer.received[i] == T_MSG_VALUE;
		saw_fire_and_forget |= peer.received[i] == T_MSG_VALUE_FIRE_AND_FORGET;
	}
	cr_assert(saw_value);
	cr_assert(saw_fire_and_forget);
	cr_assert(pthread_equal(peer.target_thread_seen, peer.peer_thread),
		  "target callback must run on the target ring's thread");
	pthread_barrier_destroy(&peer.ready);
	pthread_barrier_destroy(&peer.done);
	ring_destroy(ring);
}

Test(ring, op_kind_names_cover_every_kind)
{
	for (uint8_t kind = 0; kind < RING_OP_KIND_COUNT; kind++) {
		const char *name = ring_op_kind_name(kind);
		cr_assert_not_null(name);
		cr_assert_str_neq(name, "unknown");
	}
	cr_assert_str_eq(ring_op_kind_name(RING_OP_KIND_COUNT), "unknown");
	cr_assert_str_eq(ring_op_kind_name(RING_OP_MSG_TARGET), "msg_target");
}
