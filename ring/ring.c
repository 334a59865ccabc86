/*
 * ring.c - io_uring set-up, preparation of caller-owned ops, the loop turn.
 *
 * Invariants:
 * - Every SQE's user_data is the address of a struct ring_op (or 0 for the
 *   ring's own internal SQEs, whose CQEs are skipped).
 * - ops_in_flight counts ops prepared and not yet completed; every op
 *   completes exactly once (no multishot ops yet).
 * - The CQ is sized from params and overflow is counted, not ignored.
 *
 * See ../shared/reference/io_uring.md sections 2.3 (2.3 traps: no
 * NO_SQARRAY here) and 7.1 (ring recipe).
 */
#include "ring.h"
#include "ring_compat.h"

#include <errno.h>
#include <liburing.h>
#include <linux/time_types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../engine/eng_common.h"

_Static_assert(sizeof(struct ring_timespec) == sizeof(struct __kernel_timespec),
	       "ring_timespec must match __kernel_timespec");
_Static_assert(offsetof(struct ring_timespec, tv_nsec) ==
		       offsetof(struct __kernel_timespec, tv_nsec),
	       "ring_timespec layout");

struct ring_hook {
	ring_hook_fn *fn;
	void *ctx;
};

struct ring {
	struct io_uring uring;
	struct ring_caps caps;
	struct ring_stats stats;
	uint32_t ops_in_flight;
	uint32_t hook_count;
	struct ring_hook hooks[RING_HOOKS_MAX];
	ring_fault_fn *fault_fn;
	void *fault_ctx;
	ring_submit_fn *submit_fn;
	void *submit_ctx;
	bool dispatching;
	bool buffers_sparse;
	uint32_t buffers_used;
};

static const char *const ring_kind_names[RING_OP_KIND_COUNT] = {
	[RING_OP_NONE] = "none",	   [RING_OP_NOP] = "nop",
	[RING_OP_READ] = "read",	   [RING_OP_WRITE] = "write",
	[RING_OP_READ_FIXED] = "read_fixed", [RING_OP_WRITE_FIXED] = "write_fixed",
	[RING_OP_FSYNC] = "fsync",	   [RING_OP_TIMEOUT] = "timeout",
	[RING_OP_CANCEL] = "cancel",	   [RING_OP_MSG] = "msg",
	[RING_OP_MSG_TARGET] = "msg_target", [RING_OP_RECV] = "recv",
	[RING_OP_SEND] = "send",	   [RING_OP_ACCEPT] = "accept",
	[RING_OP_CONNECT] = "connect",	   [RING_OP_CLOSE] = "close",
	[RING_OP_POLL] = "poll",	   [RING_OP_POLL_REMOVE] = "poll_remove",
	[RING_OP_SENDMSG] = "sendmsg",	   [RING_OP_LINK_TIMEOUT] = "link_timeout",
	[RING_OP_RENAMEAT] = "renameat",
};

const char *
ring_op_kind_name(uint8_t kind)
{
	if (kind >= RING_OP_KIND_COUNT)
		return "unknown";
	return ring_kind_names[kind];
}

static void
ring_err(char *err, size_t err_size, const char *what, int errnum)
{
	if (err == NULL || err_size == 0)
		return;
	if (errnum == EPERM || errnum == EACCES) {
		snprintf(err, err_size,
			 "%s: %s (io_uring disabled? check sysctl kernel.io_uring_disabled "
			 "and any seccomp profile)",
			 what, strerror(errnum));
	} else if (errnum == ENOSYS) {
		snprintf(err, err_size, "%s: %s (kernel without io_uring; need Linux >= 6.1)", what,
			 strerror(errnum));
	} else {
		snprintf(err, err_size, "%s: %s", what, strerror(errnum));
	}
}

/* Try a flag set; returns 0 or -errno. */
static int
ring_try_init(struct io_uring *uring, const struct ring_params *params, uint32_t flags)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = params->cq_entries;
	int ret = io_uring_queue_init_params(params->sq_entries, uring, &p);
	ENG_ASSERT((p.flags & RING_COMPAT_SETUP_NO_SQARRAY) == 0);
	return ret;
}

static void
ring_fill_caps(struct io_uring *uring, uint32_t flags, struct ring_caps *caps)
{
	memset(caps, 0, sizeof(*caps));
	caps->features = uring->features;
	caps->single_issuer = (flags & IORING_SETUP_SINGLE_ISSUER) != 0;
	caps->defer_taskrun = (flags & IORING_SETUP_DEFER_TASKRUN) != 0;
	caps->coop_taskrun = (flags & IORING_SETUP_COOP_TASKRUN) != 0;
	struct io_uring_probe *probe = io_uring_get_probe_ring(uring);
	if (probe != NULL) {
		caps->msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
		caps->socket_op = io_uring_opcode_supported(probe, IORING_OP_SOCKET) != 0;
		/* Multishot recv arrived with IORING_OP_SOCKET's generation
		 * (6.0); the opcode probe cannot see flags, so infer. */
		caps->recv_multishot = caps->socket_op && caps->msg_ring;
		io_uring_free_probe(probe);
	}
}

/* The flag sets tried, best first (io_uring.md 7.1). */
static const uint32_t ring_flag_sets[] = {
	IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
	IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	0,
};

int
ring_probe(struct ring_caps *caps, char *err, size_t err_size)
{
	ENG_ASSERT(caps != NULL);
	struct ring_params params = { .sq_entries = 8, .cq_entries = 16 };
	struct io_uring uring;
	int ret = -EINVAL;
	for (size_t i = 0; i < ENG_ARRAY_COUNT(ring_flag_sets); i++) {
		ret = ring_try_init(&uring, &params, ring_flag_sets[i]);
		if (ret == 0) {
			ring_fill_caps(&uring, ring_flag_sets[i], caps);
			io_uring_queue_exit(&uring);
			break;
		}
		if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES)
			break;
	}
	if (ret < 0) {
		ring_err(err, err_size, "io_uring_setup", -ret);
		return ret;
	}
	if ((caps->features & IORING_FEAT_EXT_ARG) == 0) {
		/* Without EXT_ARG, liburing 2.3 waits with a timeout SQE of its own
		 * whose CQE would reach ring_dispatch as a bogus op. */
		ring_err(err, err_size, "io_uring lacks IORING_FEAT_EXT_ARG (need Linux >= 5.11)",
			 EOPNOTSUPP);
		return -EOPNOTSUPP;
	}
	if (!caps->msg_ring) {
		ring_err(err, err_size, "io_uring lacks IORING_OP_MSG_RING (need Linux >= 5.18)",
			 EOPNOTSUPP);
		return -EOPNOTSUPP;
	}
	return 0;
}

struct ring *
ring_create(const struct ring_params *params, char *err, size_t err_size)
{
	ENG_ASSERT(params != NULL);
	ENG_ASSERT(params->sq_entries > 0);
	ENG_ASSERT(params->cq_entries >= params->sq_entries);
	struct ring *ring = calloc(1, sizeof(*ring));
	if (ring == NULL) {
		ring_err(err, err_size, "ring_create", ENOMEM);
		return NULL;
	}
	int ret = -EINVAL;
	for (size_t i = 0; i < ENG_ARRAY_COUNT(ring_flag_sets); i++) {
		ret = ring_try_init(&ring->uring, params, ring_flag_sets[i]);
		if (ret == 0) {
			ring_fill_caps(&ring->uring, ring_flag_sets[i], &ring->caps);
			break;
		}
		if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES || ret == -ENOMEM)
			break;
	}
	if (ret < 0) {
		ring_err(err, err_size, "io_uring_setup", -ret);
		free(ring);
		return NULL;
	}
	/* Registered ring fd saves an fdget per enter; optional. */
	(void)io_uring_register_ring_fd(&ring->uring);
	return ring;
}

void
ring_destroy(struct ring *ring)
{
	if (ring == NULL)
		return;
	io_uring_queue_exit(&ring->uring);
	free(ring);
}

int
ring_fd(const struct ring *ring)
{
	return ring->uring.ring_fd;
}

const struct ring_caps *
ring_caps_get(const struct ring *ring)
{
	return &ring->caps;
}

const struct ring_stats *
ring_stats_get(const struct ring *ring)
{
	return &ring->stats;
}

uint32_t
ring_ops_in_flight(const struct ring *ring)
{
	return ring->ops_in_flight;
}

void
ring_set_fault(struct ring *ring, ring_fault_fn *fn, void *ctx)
{
	ring->fault_fn = fn;
	ring->fault_ctx = ctx;
}

void
ring_set_submit_hook(struct ring *ring, ring_submit_fn *fn, void *ctx)
{
	ring->submit_fn = fn;
	ring->submit_ctx = ctx;
}

void
ring_add_hook(struct ring *ring, ring_hook_fn *fn, void *ctx)
{
	ENG_ASSERT(fn != NULL);
	ENG_ASSERT(ring->hook_count < RING_HOOKS_MAX);
	ring->hooks[ring->hook_count].fn = fn;
	ring->hooks[ring->hook_count].ctx = ctx;
	ring->hook_count++;
}

void
ring_remove_hook(struct ring *ring, ring_hook_fn *fn, void *ctx)
{
	ENG_ASSERT(fn != NULL);
	for (uint32_t i = 0; i < ring->hook_count; i++) {
		if (ring->hooks[i].fn != fn || ring->hooks[i].ctx != ctx)
			continue;
		memmove(&ring->hooks[i], &ring->hooks[i + 1],
			(ring->hook_count - i - 1) * sizeof(ring->hooks[0]));
		ring->hook_count--;
		return;
	}
	ENG_PANIC("removing a hook that was never added");
}

int
ring_register_buffers(struct ring *ring, const struct iovec *iov, uint32_t count,
		      uint16_t *first_index)
{
	ENG_ASSERT(iov != NULL);
	ENG_ASSERT(count > 0 && first_index != NULL);
	if (!ring->buffers_sparse) {
		int ret = io_uring_register_buffers_sparse(&ring->uring, RING_BUFFERS_MAX);
		if (ret < 0)
			return ret;
		ring->buffers_sparse = true;
	}
	if (ring->buffers_used + count > RING_BUFFERS_MAX)
		return -ENOBUFS;
	__u64 tags[RING_BUFFERS_MAX];
	memset(tags, 0, sizeof(tags));
	int ret = io_uring_register_buffers_update_tag(&ring->uring, ring->buffers_used, iov, tags,
						       count);
	if (ret < 0)
		return ret;
	*first_index = (uint16_t)ring->buffers_used;
	ring->buffers_used += count;
	return 0;
}

void
ring_unregister_buffers(struct ring *ring, uint16_t first_index, uint32_t count)
{
	ENG_ASSERT(first_index + count <= ring->buffers_used);
	struct iovec empty[RING_BUFFERS_MAX];
	__u64 tags[RING_BUFFERS_MAX];
	memset(empty, 0, sizeof(empty));
	memset(tags, 0, sizeof(tags));
	(void)io_uring_register_buffers_update_tag(&ring->uring, first_index, empty, tags, count);
	/* Indices are not reused: registration happens at start-up only. */
}

/* Submit what is queued; -EBUSY (CQ overflow backlog) is reaped by the caller. */
static int
ring_submit_pending(struct ring *ring)
{
	int ret = io_uring_submit(&ring->uring);
	ring->stats.enter_calls++;
	if (ret > 0)
		ring->stats.submitted_sqes += (uint64_t)ret;
	return ret;
}

/* An SQE, flushing the SQ once if it is full. */
static struct io_uring_sqe *
ring_get_sqe(struct ring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->uring);
	if (sqe != NULL)
		return sqe;
	ring->stats.sq_full_flushes++;
	(void)ring_submit_pending(ring);
	return io_uring_get_sqe(&ring->uring);
}

static struct io_uring_sqe *
ring_op_begin(struct ring *ring, struct ring_op *op, uint8_t kind)
{
	ENG_ASSERT(op != NULL);
	ENG_ASSERT(op->callback != NULL);
	ENG_ASSERT(!op->in_flight);
	struct io_uring_sqe *sqe = ring_get_sqe(ring);
	if (sqe == NULL)
		return NULL;
	op->kind = kind;
	op->in_flight = true;
	op->len = 0;
	op->offset = 0;
	ring->ops_in_flight++;
	return sqe;
}

/* Tests only: describe the SQE to the submit hook. */
static void __attribute__((noinline))
ring_submit_notify(struct ring *ring, const struct io_uring_sqe *sqe, struct ring_op *op)
{
	struct ring_submit_info info = {
		.fd = sqe->fd,
		.buf = (const void *)(uintptr_t)sqe->addr,
		.len = sqe->len,
		.offset = sqe->off,
		.rw_flags = (int)sqe->rw_flags,
	};
	ring->submit_fn(ring->submit_ctx, op, &info);
}

static void
ring_op_commit(struct ring *ring, struct io_uring_sqe *sqe, struct ring_op *op)
{
	io_uring_sqe_set_data(sqe, op);
	if (ring->submit_fn != NULL)
		ring_submit_notify(ring, sqe, op);
}

int
ring_prep_nop(struct ring *ring, struct ring_op *op)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_NOP);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_nop(sqe);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_read(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len,
	       uint64_t offset)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_READ);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, buf, len, offset);
	op->len = len;
	op->offset = offset;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_write(struct ring *ring, struct ring_op *op, int fd, const void *buf, uint32_t len,
		uint64_t offset, int rw_flags)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_WRITE);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_write(sqe, fd, buf, len, offset);
	sqe->rw_flags = rw_flags;
	op->len = len;
	op->offset = offset;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_read_fixed(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len,
		     uint64_t offset, uint16_t buf_index)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_READ_FIXED);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_read_fixed(sqe, fd, buf, len, offset, buf_index);
	op->len = len;
	op->offset = offset;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_write_fixed(struct ring *ring, struct ring_op *op, int fd, const void *buf,
		      uint32_t len, uint64_t offset, uint16_t buf_index, int rw_flags)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_WRITE_FIXED);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_write_fixed(sqe, fd, buf, len, offset, buf_index);
	/* liburing 2.3 has no rw_flags argument: set RWF_DSYNC by hand. */
	sqe->rw_flags = rw_flags;
	op->len = len;
	op->offset = offset;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_fsync(struct ring *ring, struct ring_op *op, int fd, bool datasync)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_FSYNC);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_timeout(struct ring *ring, struct ring_op *op, uint64_t timeout_ns)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_TIMEOUT);
	if (sqe == NULL)
		return -EBUSY;
	op->ts.tv_sec = (int64_t)(timeout_ns / 1000000000ull);
	op->ts.tv_nsec = (int64_t)(timeout_ns % 1000000000ull);
	io_uring_prep_timeout(sqe, (struct __kernel_timespec *)(void *)&op->ts, 0, 0);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_cancel(struct ring *ring, struct ring_op *op, struct ring_op *target)
{
	ENG_ASSERT(target != NULL);
	ENG_ASSERT(target != op);
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_CANCEL);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_cancel(sqe, target, 0);
	ring_op_commit(ring, sqe, op);
	return 0;
}

void
ring_op_msg_target_init(struct ring_op *target_op, ring_cb_fn *callback, void *ctx)
{
	ENG_ASSERT(target_op != NULL);
	ENG_ASSERT(callback != NULL);
	memset(target_op, 0, sizeof(*target_op));
	target_op->callback = callback;
	target_op->ctx = ctx;
	target_op->kind = RING_OP_MSG_TARGET;
}

int
ring_prep_msg(struct ring *ring, struct ring_op *op, int target_ring_fd,
	      struct ring_op *target_op, int32_t value)
{
	ENG_ASSERT(target_op != NULL);
	ENG_ASSERT(target_op->kind == RING_OP_MSG_TARGET);
	struct io_uring_sqe *sqe;
	if (op != NULL) {
		sqe = ring_op_begin(ring, op, RING_OP_MSG);
	} else {
		sqe = ring_get_sqe(ring);
	}
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_msg_ring(sqe, target_ring_fd, (unsigned int)value,
			       (uint64_t)(uintptr_t)target_op, 0);
	if (op != NULL) {
		ring_op_commit(ring, sqe, op);
	} else {
		/* Fire and forget: a success CQE is skipped, a failure CQE
		 * carries user_data 0 and is counted by the loop. */
		io_uring_sqe_set_data(sqe, NULL);
		sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	}
	return 0;
}

int
ring_prep_recv(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len, int flags)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_RECV);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_recv(sqe, fd, buf, len, flags);
	op->len = len;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_send(struct ring *ring, struct ring_op *op, int fd, const void *buf, uint32_t len,
	       int flags)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_SEND);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_send(sqe, fd, buf, len, flags);
	op->len = len;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_accept(struct ring *ring, struct ring_op *op, int fd, struct sockaddr *addr,
		 uint32_t *addr_len)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_ACCEPT);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_accept(sqe, fd, addr, (socklen_t *)addr_len, SOCK_CLOEXEC);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_connect(struct ring *ring, struct ring_op *op, int fd, const struct sockaddr *addr,
		  uint32_t addr_len)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_CONNECT);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_connect(sqe, fd, addr, addr_len);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_close(struct ring *ring, struct ring_op *op, int fd)
{
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_CLOSE);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_close(sqe, fd);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_renameat(struct ring *ring, struct ring_op *op, int old_dir_fd, const char *old_path,
		   int new_dir_fd, const char *new_path, uint32_t flags)
{
	ENG_ASSERT(old_path != NULL && new_path != NULL);
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_RENAMEAT);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_renameat(sqe, old_dir_fd, old_path, new_dir_fd, new_path, flags);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_sendmsg(struct ring *ring, struct ring_op *op, int fd, const struct msghdr *msg,
		  int flags)
{
	ENG_ASSERT(msg != NULL);
	ENG_ASSERT(msg->msg_iovlen == 0 || msg->msg_iov != NULL);
	size_t total = 0;
	for (size_t i = 0; i < msg->msg_iovlen; i++)
		total += msg->msg_iov[i].iov_len;
	ENG_ASSERT(total <= UINT32_MAX);
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_SENDMSG);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_sendmsg(sqe, fd, msg, (unsigned)flags);
	op->len = (uint32_t)total;
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_connect_timeout(struct ring *ring, struct ring_op *connect_op,
			  struct ring_op *timeout_op, int fd, const struct sockaddr *addr,
			  uint32_t addr_len, uint64_t timeout_ns)
{
	ENG_ASSERT(connect_op != timeout_op);
	ENG_ASSERT(addr != NULL);
	/* A chain never spans two submissions (io_uring.md 3.1): make room
	 * for both SQEs before taking either. */
	if (io_uring_sq_space_left(&ring->uring) < 2) {
		ring->stats.sq_full_flushes++;
		(void)ring_submit_pending(ring);
		if (io_uring_sq_space_left(&ring->uring) < 2)
			return -EBUSY;
	}
	struct io_uring_sqe *sqe = ring_op_begin(ring, connect_op, RING_OP_CONNECT);
	ENG_ASSERT(sqe != NULL);
	io_uring_prep_connect(sqe, fd, addr, addr_len);
	sqe->flags |= IOSQE_IO_LINK;
	ring_op_commit(ring, sqe, connect_op);
	sqe = ring_op_begin(ring, timeout_op, RING_OP_LINK_TIMEOUT);
	ENG_ASSERT(sqe != NULL);
	timeout_op->ts.tv_sec = (int64_t)(timeout_ns / 1000000000ull);
	timeout_op->ts.tv_nsec = (int64_t)(timeout_ns % 1000000000ull);
	io_uring_prep_link_timeout(sqe, (struct __kernel_timespec *)(void *)&timeout_op->ts, 0);
	ring_op_commit(ring, sqe, timeout_op);
	return 0;
}

int
ring_prep_poll_add(struct ring *ring, struct ring_op *op, int fd, uint32_t poll_mask)
{
	ENG_ASSERT(fd >= 0);
	ENG_ASSERT(poll_mask != 0);
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_POLL);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, poll_mask);
	ring_op_commit(ring, sqe, op);
	return 0;
}

int
ring_prep_poll_remove(struct ring *ring, struct ring_op *op, struct ring_op *target)
{
	ENG_ASSERT(target != NULL);
	ENG_ASSERT(target != op);
	struct io_uring_sqe *sqe = ring_op_begin(ring, op, RING_OP_POLL_REMOVE);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_poll_remove(sqe, (uint64_t)(uintptr_t)target);
	ring_op_commit(ring, sqe, op);
	return 0;
}

/* Run one CQE's callback. */
static void
ring_dispatch(struct ring *ring, uint64_t user_data, int32_t res, uint32_t flags)
{
	if (user_data == 0) {
		/* A failed fire-and-forget message: nothing to call, but counted
		 * (a lost wake-up must be visible). */
		ENG_ASSERT(res < 0);
		ring->stats.msg_failures++;
		return;
	}
	struct ring_op *op = (struct ring_op *)(uintptr_t)user_data;
	if (op->kind == RING_OP_MSG_TARGET) {
		/* Posted by another ring: never counted in our in-flight set. */
		op->callback(op, res, flags);
		return;
	}
	ENG_ASSERT(op->in_flight);
	ENG_ASSERT(ring->ops_in_flight > 0);
	op->in_flight = false;
	ring->ops_in_flight--;
	if (ring->fault_fn != NULL)
		res = ring->fault_fn(ring->fault_ctx, op, res);
	op->callback(op, res, flags);
}

/* Copy CQEs out first and run callbacks afterwards, so a callback that
 * prepares new ops never races the CQ head (TigerBeetle linux.zig). */
#define RING_REAP_BATCH 256

static int
ring_reap(struct ring *ring)
{
	struct {
		uint64_t user_data;
		int32_t res;
		uint32_t flags;
	} batch[RING_REAP_BATCH];
	int total = 0;
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, count = 0;
		io_uring_for_each_cqe(&ring->uring, head, cqe)
		{
			if (count == RING_REAP_BATCH)
				break;
			batch[count].user_data = cqe->user_data;
			batch[count].res = cqe->res;
			batch[count].flags = cqe->flags;
			count++;
		}
		if (count == 0)
			break;
		io_uring_cq_advance(&ring->uring, count);
		ring->stats.completed_cqes += count;
		for (unsigned i = 0; i < count; i++)
			ring_dispatch(ring, batch[i].user_data, batch[i].res, batch[i].flags);
		total += (int)count;
		if (count < RING_REAP_BATCH)
			break;
	}
	return total;
}

static void
ring_check_overflow(struct ring *ring)
{
	unsigned overflow = *ring->uring.cq.koverflow;
	if (overflow != ring->stats.cq_overflows)
		ring->stats.cq_overflows = overflow;
}

int
ring_submit(struct ring *ring)
{
	ENG_ASSERT(ring != NULL);
	return ring_submit_pending(ring);
}

int
ring_run_once(struct ring *ring, uint64_t timeout_ns)
{
	ENG_ASSERT(!ring->dispatching);
	ring->stats.turns++;
	for (uint32_t i = 0; i < ring->hook_count; i++)
		ring->hooks[i].fn(ring->hooks[i].ctx);

	int ret;
	if (timeout_ns == 0) {
		ret = io_uring_submit_and_get_events(&ring->uring);
	} else if (timeout_ns == UINT64_MAX) {
		ret = io_uring_submit_and_wait(&ring->uring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = (long long)(timeout_ns / 1000000000ull),
			.tv_nsec = (long long)(timeout_ns % 1000000000ull),
		};
		struct io_uring_cqe *cqe = NULL;
		ret = io_uring_submit_and_wait_timeout(&ring->uring, &cqe, 1, &ts, NULL);
		if (ret == -ETIME)
			ret = 0;
	}
	ring->stats.enter_calls++;
	if (ret < 0 && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
		return ret;
	if (ret > 0)
		ring->stats.submitted_sqes += (uint64_t)ret;
	ring->dispatching = true;
	int dispatched = ring_reap(ring);
	ring->dispatching = false;
	ring_check_overflow(ring);
	return dispatched;
}
