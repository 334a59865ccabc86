/*
 * test_poll.c - Criterion tests of one-shot polls through the ring
 * (ring_prep_poll_add / ring_prep_poll_remove): readiness is reported once
 * with the ready mask, a removed poll completes with -ECANCELED, removing a
 * poll that already fired reports -ENOENT, and a poll on a descriptor that
 * was closed while the poll was in flight neither fires nor leaks: it stays
 * pending on the kernel's own file reference until removed.
 *
 * Suite "ring": skips (not fails) when io_uring is unusable (t_ring.h).
 * No sleeps: every wait is a bounded ring wait.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "t_ring.h"

#define T_POLL_WAIT_NS (5ull * 1000000000ull)
#define T_POLL_TURNS_MAX 64
#define T_POLL_SHORT_NS (20ull * 1000000ull)

struct t_poll_seen {
	int count;
	int32_t res;
};

static void
t_poll_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct t_poll_seen *seen = op->ctx;
	seen->count++;
	seen->res = res;
}

/* Run turns until *count reaches target, bounded by turns and time. */
static void
t_poll_run_until(struct ring *ring, const int *count, int target)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_POLL_WAIT_NS;
	for (int turn = 0; turn < T_POLL_TURNS_MAX && *count < target; turn++) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns)
			break;
		int ret = ring_run_once(ring, deadline_ns - now_ns);
		cr_assert_geq(ret, 0, "ring_run_once: %s", strerror(-ret));
	}
	cr_assert_eq(*count, target, "expected %d completions, saw %d", target, *count);
}

static void
t_socketpair(int fds[2])
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
}

Test(ring, poll_add_reports_readable_once_with_mask)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	t_socketpair(fds);
	struct t_poll_seen seen = { 0 };
	struct ring_op op = { .callback = t_poll_callback, .ctx = &seen };
	cr_assert_eq(ring_prep_poll_add(ring, &op, fds[0], POLLIN), 0);
	cr_assert_eq(op.kind, RING_OP_POLL);
	/* Nothing to read yet: a short turn completes nothing. */
	cr_assert_eq(ring_run_once(ring, T_POLL_SHORT_NS), 0);
	cr_assert_eq(seen.count, 0);
	cr_assert_eq(write(fds[1], "x", 1), 1);
	t_poll_run_until(ring, &seen.count, 1);
	cr_assert(seen.res > 0, "poll result %d", seen.res);
	cr_assert((seen.res & POLLIN) != 0);
	cr_assert(!op.in_flight);
	/* One-shot: no second completion although the byte is still unread. */
	cr_assert_eq(ring_run_once(ring, T_POLL_SHORT_NS), 0);
	cr_assert_eq(seen.count, 1);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	close(fds[0]);
	close(fds[1]);
	ring_destroy(ring);
}

Test(ring, poll_add_reports_writable)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	t_socketpair(fds);
	struct t_poll_seen seen = { 0 };
	struct ring_op op = { .callback = t_poll_callback, .ctx = &seen };
	cr_assert_eq(ring_prep_poll_add(ring, &op, fds[0], POLLOUT), 0);
	t_poll_run_until(ring, &seen.count, 1);
	cr_assert((seen.res & POLLOUT) != 0, "poll result %d", seen.res);
	cr_assert_eq((seen.res & POLLIN), 0);
	close(fds[0]);
	close(fds[1]);
	ring_destroy(ring);
}

Test(ring, poll_remove_cancels_pending_poll)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	t_socketpair(fds);
	struct t_poll_seen seen = { 0 };
	struct t_poll_seen removed = { 0 };
	struct ring_op op = { .callback = t_poll_callback, .ctx = &seen };
	struct ring_op remove_op = { .callback = t_poll_callback, .ctx = &removed };
	cr_assert_eq(ring_prep_poll_add(ring, &op, fds[0], POLLIN), 0);
	cr_assert_eq(ring_run_once(ring, 0), 0);
	cr_assert_eq(ring_prep_poll_remove(ring, &remove_op, &op), 0);
	cr_assert_eq(remove_op.kind, RING_OP_POLL_REMOVE);
	t_poll_run_until(ring, &removed.count, 1);
	t_poll_run_until(ring, &seen.count, 1);
	cr_assert_eq(removed.res, 0);
	cr_assert_eq(seen.res, -ECANCELED);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	close(fds[0]);
	close(fds[1]);
	ring_destroy(ring);
}

Test(ring, poll_remove_after_fire_reports_enoent)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	t_socketpair(fds);
	struct t_poll_seen seen = { 0 };
	struct t_poll_seen removed = { 0 };
	struct ring_op op = { .callback = t_poll_callback, .ctx = &seen };
	struct ring_op remove_op = { .callback = t_poll_callback, .ctx = &removed };
	cr_assert_eq(write(fds[1], "x", 1), 1);
	cr_assert_eq(ring_prep_poll_add(ring, &op, fds[0], POLLIN), 0);
	t_poll_run_until(ring, &seen.count, 1);
	cr_assert(seen.res > 0);
	cr_assert_eq(ring_prep_poll_remove(ring, &remove_op, &op), 0);
	t_poll_run_until(ring, &removed.count, 1);
	cr_assert_eq(removed.res, -ENOENT);
	cr_assert_eq(seen.count, 1);
	close(fds[0]);
	close(fds[1]);
	ring_destroy(ring);
}

/* The case the DNS resolver depends on: the owner closes the descriptor
 * while the poll is in flight. The poll must not fire for the closed
 * descriptor (nor for a new file that reuses its number), and the remove
 * that follows must end it with -ECANCELED. */
Test(ring, poll_on_closed_fd_is_ended_by_remove)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	t_socketpair(fds);
	struct t_poll_seen seen = { 0 };
	struct t_poll_seen removed = { 0 };
	struct ring_op op = { .callback = t_poll_callback, .ctx = &seen };
	struct ring_op remove_op = { .callback = t_poll_callback, .ctx = &removed };
	cr_assert_eq(ring_prep_poll_add(ring, &op, fds[0], POLLIN), 0);
	cr_assert_eq(ring_run_once(ring, 0), 0);
	int closed_fd = fds[0];
	close(fds[0]);
	/* Reuse the number for a new, readable socket: the old poll must not
	 * see it. */
	int again[2];
	t_socketpair(again);
	cr_assert_eq(write(again[1], "y", 1), 1);
	cr_assert_eq(ring_run_once(ring, T_POLL_SHORT_NS), 0);
	cr_assert_eq(seen.count, 0, "a poll fired after its fd %d was closed", closed_fd);
	cr_assert_eq(ring_prep_poll_remove(ring, &remove_op, &op), 0);
	t_poll_run_until(ring, &seen.count, 1);
	t_poll_run_until(ring, &removed.count, 1);
	cr_assert_eq(seen.res, -ECANCELED);
	cr_assert_eq(removed.res, 0);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	close(fds[1]);
	close(again[0]);
	close(again[1]);
	ring_destroy(ring);
}

Test(ring, poll_kind_names)
{
	cr_assert_str_eq(ring_op_kind_name(RING_OP_POLL), "poll");
	cr_assert_str_eq(ring_op_kind_name(RING_OP_POLL_REMOVE), "poll_remove");
}
