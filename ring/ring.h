/*
 * ring.h - one io_uring per thread, operations with caller-owned state.
 *
 * ring/ is the only code in ringmail that includes <liburing.h>. Everything
 * else talks to the kernel through struct ring_op: the caller owns the op
 * (it lives in a session, a spool commit slot, a timer), fills in a callback
 * and a context pointer, and hands it to one of the ring_prep_*() calls. The
 * op's address travels in the SQE's user_data; when its CQE arrives the
 * callback runs with the result. An op may be reused from inside its own
 * callback.
 *
 * Loop shape (io_uring.md section 7.4): ring_run_once() runs the flush hooks
 * (spool group commit, output flushes), submits everything prepared in this
 * turn with one io_uring_enter that also waits, then dispatches every CQE.
 * One batched submit-and-wait per loop turn.
 *
 * Threading: a ring is created on, and used only by, the thread that runs
 * its loop (SINGLE_ISSUER). The only cross-thread entry is ring_prep_msg()
 * called on the *sender's* ring, which posts a CQE into the target ring.
 *
 * Fault injection: ring_set_fault() installs a hook that sees every CQE's
 * result before the callback and may rewrite it (EIO, ENOSPC, short counts,
 * EAGAIN). io_uring bypasses libc, so this is where spool faults are
 * injected in tests; the data the kernel really wrote stays written, which
 * is the worst case for the caller (bytes on disk it must not trust).
 * ring_set_submit_hook() installs the other half: a hook that sees every
 * caller op as it is prepared, before the kernel can see its SQE, so a
 * test can record the pre-image of each write and simulate a crash that
 * drops un-flushed writes (tests/spool/test_spl.c). Without hooks the
 * fast path costs one pointer test per op.
 *
 * Errors: functions return 0 or -errno (liburing convention).
 */
#ifndef RING_H
#define RING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct msghdr;
struct ring;
struct ring_op;
struct sockaddr;

/* Completion callback: res is the CQE result (>= 0 or -errno). */
typedef void ring_cb_fn(struct ring_op *op, int32_t res, uint32_t cqe_flags);

/* Fault hook: sees every completion of a caller op, returns the result
 * the callback will see. */
typedef int32_t ring_fault_fn(void *ctx, struct ring_op *op, int32_t res);

/* What a prepared SQE asks for, as the submit hook sees it: the fd (the
 * directory fd for renameat), the buffer, length and file offset of reads
 * and writes, and RWF_* flags of writes. */
struct ring_submit_info {
	int fd;
	const void *buf;
	uint32_t len;
	uint64_t offset;
	int rw_flags;
};

/* Submit hook: runs once per caller op from ring_prep_*(), after the op
 * is filled in and before the SQE can reach the kernel. */
typedef void ring_submit_fn(void *ctx, struct ring_op *op, const struct ring_submit_info *info);

/* Hook run at the start of every loop turn, before the submit. */
typedef void ring_hook_fn(void *ctx);

enum ring_op_kind {
	RING_OP_NONE = 0,
	RING_OP_NOP,
	RING_OP_READ,
	RING_OP_WRITE,
	RING_OP_READ_FIXED,
	RING_OP_WRITE_FIXED,
	RING_OP_FSYNC,
	RING_OP_TIMEOUT,
	RING_OP_CANCEL,
	RING_OP_MSG,
	RING_OP_MSG_TARGET, /* a CQE posted into this ring by another ring */
	RING_OP_RECV,
	RING_OP_SEND,
	RING_OP_ACCEPT,
	RING_OP_CONNECT,
	RING_OP_CLOSE,
	RING_OP_POLL,
	RING_OP_POLL_REMOVE,
	RING_OP_SENDMSG,
	RING_OP_LINK_TIMEOUT,
	RING_OP_RENAMEAT,
	RING_OP_KIND_COUNT,
};

/* Same layout as struct __kernel_timespec (asserted in ring.c). */
struct ring_timespec {
	int64_t tv_sec;
	int64_t tv_nsec;
};

struct ring_op {
	ring_cb_fn *callback;
	void *ctx;
	/* Set by ring_prep_*(): what the op is, for fault hooks and tracing. */
	uint8_t kind;
	bool in_flight;
	/* Free for the caller: a tag to tell ops of one context apart. */
	uint16_t tag;
	/* Set by ring_prep_*() for reads and writes: the request, so fault
	 * hooks can shape short counts. */
	uint32_t len;
	uint64_t offset;
	/* Storage the kernel reads while the op is in flight. */
	struct ring_timespec ts;
};

struct ring_caps {
	bool single_issuer;
	bool defer_taskrun;
	bool coop_taskrun;
	bool msg_ring;
	bool recv_multishot;
	bool socket_op;
	uint32_t features;
};

struct ring_stats {
	uint64_t turns;
	uint64_t submitted_sqes;
	uint64_t completed_cqes;
	uint64_t enter_calls;
	uint64_t cq_overflows;
	uint64_t sq_full_flushes;
	uint64_t msg_failures; /* fire-and-forget ring_prep_msg that failed */
};

struct ring_params {
	uint32_t sq_entries;	/* largest batch prepared in one turn */
	uint32_t cq_entries;	/* >= ops in flight; never overflow */
};

/* Probe io_uring once at start-up. Returns 0, or -errno with one clear
 * line in err (io_uring disabled by sysctl, seccomp, old kernel). */
int ring_probe(struct ring_caps *caps, char *err, size_t err_size) __attribute__((warn_unused_result));

/* Create a ring on the calling thread. SINGLE_ISSUER | DEFER_TASKRUN when the
 * kernel has them, COOP_TASKRUN otherwise, plain as a last resort. Returns
 * NULL and sets err on failure. */
struct ring *ring_create(const struct ring_params *params, char *err, size_t err_size);
void ring_destroy(struct ring *ring);

/* The ring's file descriptor (target of ring_prep_msg from other rings). */
int ring_fd(const struct ring *ring);
const struct ring_caps *ring_caps_get(const struct ring *ring);
const struct ring_stats *ring_stats_get(const struct ring *ring);
/* Ops prepared or in flight, not yet completed. */
uint32_t ring_ops_in_flight(const struct ring *ring);

void ring_set_fault(struct ring *ring, ring_fault_fn *fn, void *ctx);
/* Tests only: NULL removes the hook. */
void ring_set_submit_hook(struct ring *ring, ring_submit_fn *fn, void *ctx);
/* At most RING_HOOKS_MAX hooks; they run in registration order. */
#define RING_HOOKS_MAX 8
void ring_add_hook(struct ring *ring, ring_hook_fn *fn, void *ctx);

void ring_remove_hook(struct ring *ring, ring_hook_fn *fn, void *ctx);

/* Register fixed buffers for READ_FIXED/WRITE_FIXED into the ring's sparse
 * table of RING_BUFFERS_MAX entries; several users may each register a
 * group. *first_index receives the table index of iov[0]. Returns 0 or
 * -errno (-ENOBUFS when the table is full). */
#define RING_BUFFERS_MAX 64
int ring_register_buffers(struct ring *ring, const struct iovec *iov, uint32_t count,
			  uint16_t *first_index) __attribute__((warn_unused_result));
/* Clear a group registered above (on teardown). */
void ring_unregister_buffers(struct ring *ring, uint16_t first_index, uint32_t count);

/*
 * One loop turn: run hooks, submit, wait up to timeout_ns for at least one
 * completion (0: don't wait; UINT64_MAX: wait forever), dispatch all CQEs.
 * Returns the number of callbacks run, or -errno on a ring failure.
 */
int ring_run_once(struct ring *ring, uint64_t timeout_ns);

/* Submit what is prepared now, without waiting or reaping: for an op that
 * must not wait for the end of the turn (a cross-ring report). Safe inside
 * a callback. Returns the number submitted or -errno. */
int ring_submit(struct ring *ring);

/* Preparation. Each takes a caller-owned op with callback and ctx set and
 * returns 0 (queued for the next submit) or -errno. The op, and every
 * buffer it names, is owned by the ring until its callback runs. */
int ring_prep_nop(struct ring *ring, struct ring_op *op);
int ring_prep_read(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len,
		   uint64_t offset);
int ring_prep_write(struct ring *ring, struct ring_op *op, int fd, const void *buf, uint32_t len,
		    uint64_t offset, int rw_flags);
int ring_prep_read_fixed(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len,
			 uint64_t offset, uint16_t buf_index);
int ring_prep_write_fixed(struct ring *ring, struct ring_op *op, int fd, const void *buf,
			  uint32_t len, uint64_t offset, uint16_t buf_index, int rw_flags);
/* datasync: IORING_FSYNC_DATASYNC. */
int ring_prep_fsync(struct ring *ring, struct ring_op *op, int fd, bool datasync);
/* Relative timer; completes with -ETIME when it fires, -ECANCELED if cancelled. */
int ring_prep_timeout(struct ring *ring, struct ring_op *op, uint64_t timeout_ns);
/* Cancel target (matched by address). op completes with 0, -ENOENT or -EALREADY. */
int ring_prep_cancel(struct ring *ring, struct ring_op *op, struct ring_op *target);
/*
 * Post a CQE into another ring: target_op's callback runs on the target's
 * thread with res = value. target_op must be an op owned by the target
 * thread and prepared with ring_op_msg_target_init(). op (may be NULL for
 * fire-and-forget) completes on this ring with 0 or -errno.
 */
int ring_prep_msg(struct ring *ring, struct ring_op *op, int target_ring_fd,
		  struct ring_op *target_op, int32_t value);
void ring_op_msg_target_init(struct ring_op *target_op, ring_cb_fn *callback, void *ctx);
int ring_prep_recv(struct ring *ring, struct ring_op *op, int fd, void *buf, uint32_t len,
		   int flags);
int ring_prep_send(struct ring *ring, struct ring_op *op, int fd, const void *buf, uint32_t len,
		   int flags);
int ring_prep_accept(struct ring *ring, struct ring_op *op, int fd, struct sockaddr *addr,
		     uint32_t *addr_len);
int ring_prep_connect(struct ring *ring, struct ring_op *op, int fd, const struct sockaddr *addr,
		      uint32_t addr_len);
int ring_prep_close(struct ring *ring, struct ring_op *op, int fd);
/* renameat2(2) through the ring (IORING_OP_RENAMEAT, Linux 5.11). Both
 * paths are borrowed until the callback runs; flags as renameat2. */
int ring_prep_renameat(struct ring *ring, struct ring_op *op, int old_dir_fd, const char *old_path,
		       int new_dir_fd, const char *new_path, uint32_t flags);
/*
 * sendmsg(2) through the ring. msg, its iovecs and the bytes they name are
 * owned by the ring until the callback runs. op->len is the total iovec
 * length. A count below op->len is success, not an error, even with
 * MSG_WAITALL (an error after partial progress reports the partial count):
 * the caller sends the rest (liburing#78).
 */
int ring_prep_sendmsg(struct ring *ring, struct ring_op *op, int fd, const struct msghdr *msg,
		      int flags);
/*
 * connect(2) with a deadline: connect_op linked to timeout_op
 * (IORING_OP_LINK_TIMEOUT), both queued in the same submission. Both ops
 * complete, in either order. connect_op: 0, -errno, or -ECANCELED when the
 * deadline passed first (or it was cancelled). timeout_op: -ETIME when it
 * fired, otherwise -ECANCELED (the connect finished first). addr is read at
 * submit time: keep it valid until connect_op's callback.
 */
int ring_prep_connect_timeout(struct ring *ring, struct ring_op *connect_op,
			      struct ring_op *timeout_op, int fd, const struct sockaddr *addr,
			      uint32_t addr_len, uint64_t timeout_ns);
/*
 * One-shot poll: completes once with the ready events (a poll(2) mask, > 0)
 * when fd has any of poll_mask, or -ECANCELED when removed. The kernel holds
 * its own reference to the file, so closing fd does not end the poll: remove
 * it first (or right after) with ring_prep_poll_remove().
 */
int ring_prep_poll_add(struct ring *ring, struct ring_op *op, int fd, uint32_t poll_mask);
/* Remove the poll target (matched by address). op completes with 0,
 * -ENOENT (already completed) or -EALREADY; target then completes with
 * -ECANCELED unless it had already fired. */
int ring_prep_poll_remove(struct ring *ring, struct ring_op *op, struct ring_op *target);

/* Text for a ring_op_kind, for logs. */
const char *ring_op_kind_name(uint8_t kind);

#endif /* RING_H */
