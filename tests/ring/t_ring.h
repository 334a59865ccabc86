/*
 * t_ring.h - helpers shared by the ring-suite tests (test_ring.c,
 * test_mailbox.c): skip discipline and ring creation.
 *
 * The ring suite needs a working io_uring. When the kernel lacks it or
 * policy forbids it (ENOSYS, EPERM/EACCES from sysctl or seccomp, EINVAL
 * from an old kernel, EOPNOTSUPP without IORING_OP_MSG_RING) the test is
 * skipped, not failed (liburing skip discipline, style.md section 4).
 *
 * Only call these from the Criterion test thread: cr_skip_test() and
 * cr_assert() unwind that thread. Worker threads record their errors and the
 * test thread asserts on them after pthread_join().
 */
#ifndef T_RING_H
#define T_RING_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>

#include "ring/ring.h"

#define T_RING_SQ_ENTRIES 64u
#define T_RING_CQ_ENTRIES 256u
#define T_RING_ERR_SIZE 256u

/* Skip the test unless io_uring with msg_ring is usable here. */
static inline void
t_ring_probe_or_skip(void)
{
	struct ring_caps caps;
	char err[T_RING_ERR_SIZE] = "";
	int ret = ring_probe(&caps, err, sizeof(err));
	if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES || ret == -EINVAL ||
	    ret == -EOPNOTSUPP)
		cr_skip_test("io_uring unusable here: %s", err);
	cr_assert_eq(ret, 0, "ring_probe failed: %s", err);
	cr_assert(caps.msg_ring, "probe succeeded without msg_ring");
}

static inline struct ring *
t_ring_create_or_null(char *err, size_t err_size)
{
	struct ring_params params = {
		.sq_entries = T_RING_SQ_ENTRIES,
		.cq_entries = T_RING_CQ_ENTRIES,
	};
	return ring_create(&params, err, err_size);
}

/* Probe (skipping when unusable), then create a ring on this thread. */
static inline struct ring *
t_ring_create(void)
{
	t_ring_probe_or_skip();
	char err[T_RING_ERR_SIZE] = "";
	struct ring *ring = t_ring_create_or_null(err, sizeof(err));
	cr_assert_not_null(ring, "ring_create failed: %s", err);
	return ring;
}

#endif /* T_RING_H */
