/*
 * spl_sim.h - the SPL fault-injection harness (reliability.md 4.1, 8.4):
 * a trace of every ring op a spool submits and completes, a crash image
 * built from it, a seeded workload, and the checks of reliability.md 4.2.
 *
 * How a crash is simulated. The trace lives in an arena of shared memory
 * (MAP_SHARED) so that a forked child can be killed with SIGKILL at any
 * point and the parent still reads everything it recorded. Through
 * ring_set_submit_hook() the child records every op as it is prepared,
 * before the kernel sees it (kind, tag, file inode, offset, length, and
 * for writes the pre-image: the bytes the write is about to replace);
 * through ring_set_fault() it records every completion with the kernel's
 * real result. To crash "after the Nth submission" the child kills itself
 * when the (N+1)th op is prepared; ops prepared in that turn never reach
 * the kernel, ops already submitted finish or are cancelled as the
 * process dies. The parent then computes which writes were durable (an
 * RWF_DSYNC write whose CQE came back complete, or a write completed
 * before the submission of an fsync of the same file that succeeded) and
 * puts the pre-image back over every other one, newest first: the file
 * contents a power cut at that moment could leave. Optionally (SPL-02)
 * some un-flushed writes survive out of order and the newest survivor is
 * torn at a 512 B or 4 KiB boundary. Directory operations (create, rename,
 * unlink) are taken as durable once done, as after kill -9; SPL-08 undoes
 * the renames and unlinks of segment reclamation whose directory sync had
 * not completed, from hard links the child keeps of every segment.
 *
 * Ownership: one struct spl_sim per process; the arena is created by the
 * parent (spl_arena_create) and inherited by children.
 */
#ifndef SPL_SIM_H
#define SPL_SIM_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "ring/ring.h"
#include "spool/spool.h"

#define SPL_MSGS_MAX 1024u
#define SPL_RCPTS_MAX 3u
#define SPL_BODY_MAX 4096u
#define SPL_WINDOW 8u
#define SPL_CREATED_BASE 1000000ull
#define SPL_OPMAP_SIZE 256u
#define SPL_SHADOW_MAX 512u

enum spl_ev_type {
	SPL_EV_SUB = 1, /* op prepared */
	SPL_EV_CQE,	/* op completed (real result) */
	SPL_EV_ACK,	/* message acknowledged: value id, ino segment, offset */
	SPL_EV_OSUB,	/* outcome submitted: value key, flag state, time */
	SPL_EV_OACK,	/* outcome acknowledged */
	SPL_EV_FAIL,	/* an append failed: value key or id, res */
	SPL_EV_FAULT,	/* a fault was injected: seq, res */
	SPL_EV_RESURRECT, /* segment whose reclamation was not durable: ino, value id, flag journal */
};

struct spl_ev {
	uint32_t type;
	uint8_t kind;
	uint8_t flag;
	uint16_t tag;
	uint32_t len;
	int32_t res;
	uint64_t seq;
	uint64_t ino;
	uint64_t offset;
	uint64_t value;
	uint64_t time;
	uint64_t pre; /* arena offset of the pre-image, 0: none */
};

struct spl_arena {
	uint64_t size;
	uint64_t used;
	uint64_t subs;
	uint32_t overflow;
	uint32_t events;
};

struct spl_fault {
	uint16_t tag;	     /* completions of ops with this tag... */
	uint8_t kind;	     /* ...and this kind (0: any) */
	int32_t error;	     /* ...get this result */
	uint32_t skip;	     /* after letting this many through */
	bool persistent;     /* every later one too */
	uint32_t short_permille; /* COMMIT_WRITE completions made short */
	uint32_t retry_permille; /* COMMIT_WRITE completions made EAGAIN/EINTR */
	uint64_t rng;
	/* Counters. */
	uint32_t seen;
	uint32_t injected;
	uint32_t shorts;
	uint32_t retries;
};

struct spl_opmap {
	const struct ring_op *op;
	uint64_t seq;
	uint64_t ino;
	uint64_t ev; /* arena offset of its SUB event */
	int fd;
};

struct spl_shadow {
	uint64_t ino;
	uint64_t id;
	bool journal;
	bool gone; /* reclamation durable */
	uint64_t pending_seq; /* a DELETE dir sync submitted after the name went */
};

struct spl_sim {
	struct spl_arena *arena;
	uint64_t crash_after;	/* kill when op crash_after + 1 is prepared; 0: never */
	uint32_t crash_delete;	/* kill at the Nth reclamation dir sync; 0: never */
	uint32_t deletes;
	bool shadows_on;
	char msg_dir[PATH_MAX];
	char journal_dir[PATH_MAX];
	char shadow_dir[PATH_MAX];
	uint64_t msg_dir_ino;
	uint64_t journal_dir_ino;
	struct spl_opmap map[SPL_OPMAP_SIZE];
	struct spl_shadow shadows[SPL_SHADOW_MAX];
	uint32_t shadow_count;
	struct spl_fault fault;
	bool fault_on;
};

/* One planned outcome step for a recipient. */
struct spl_step {
	uint16_t state;
	uint64_t time;
};

struct spl_client {
	uint8_t body[SPL_BODY_MAX];
	char rcpt_text[SPL_RCPTS_MAX][48];
	struct spool_span rcpts[SPL_RCPTS_MAX];
	struct spool_message message;
	struct spool_append op;
	struct spool_outcome outcome;
	struct spool_append outcome_op;
	struct spool_location loc;
	uint32_t id;
	uint32_t rcpt;
	uint32_t step;
	bool active;
	bool failed; /* its last append failed (messages only are retried) */
};

struct spl_work {
	struct spl_sim *sim;
	struct spool *sp;
	uint64_t seed;
	uint32_t messages;
	bool outcomes; /* write the planned outcomes after each ack */
	uint32_t next_id;
	uint32_t active;
	uint32_t acked;
	uint32_t failures;
	struct spl_client clients[SPL_WINDOW];
};

/* What the trace says the spool promised (parent side). */
struct spl_expect {
	uint32_t messages;
	uint32_t acked_count;
	bool acked[SPL_MSGS_MAX];
	bool submitted[SPL_MSGS_MAX];
	uint8_t final_acked[SPL_MSGS_MAX][SPL_RCPTS_MAX];
	uint8_t final_sub[SPL_MSGS_MAX][SPL_RCPTS_MAX];
	uint64_t defer_acked[SPL_MSGS_MAX][SPL_RCPTS_MAX]; /* time of the last acked deferral */
	uint64_t defer_sub[SPL_MSGS_MAX][SPL_RCPTS_MAX];   /* last submitted deferral */
	uint64_t defer_first[SPL_MSGS_MAX][SPL_RCPTS_MAX]; /* first submitted deferral */
};

/* What recovery handed back. */
struct spl_got {
	uint64_t seed;
	uint32_t messages;
	uint8_t seen[SPL_MSGS_MAX][SPL_RCPTS_MAX];
	uint16_t state[SPL_MSGS_MAX][SPL_RCPTS_MAX];
	uint64_t next[SPL_MSGS_MAX][SPL_RCPTS_MAX];
	uint64_t segment[SPL_MSGS_MAX];
	uint32_t count;
	uint32_t bad;	  /* body, sender or recipient not what was injected */
	uint32_t unknown; /* a message never submitted */
};

enum spl_image_mode {
	SPL_IMAGE_DROP,	      /* every un-flushed write lost */
	SPL_IMAGE_REORDER_TEAR, /* some survive out of order, the newest torn */
};

struct spl_image_stats {
	uint32_t writes;
	uint32_t durable;
	uint32_t dropped;
	uint32_t kept;
	uint32_t torn;
	uint32_t resurrected;
};

struct spl_arena *spl_arena_create(uint64_t size);
void spl_arena_reset(struct spl_arena *a);
void spl_arena_destroy(struct spl_arena *a);

/* Spool configuration used by every SPL test (small segments). */
struct spool_config spl_config(const char *dir, bool use_fdatasync);

/* Install the trace hooks on ring (before spool_open to see start-up). */
void spl_sim_init(struct spl_sim *sim, struct spl_arena *arena, const char *spool_dir,
		  const char *shadow_dir);
void spl_sim_attach(struct spl_sim *sim, struct ring *ring);

/* Workload: start `messages` messages SPL_WINDOW at a time; run. */
void spl_work_start(struct spl_work *w, struct spl_sim *sim, struct spool *sp, uint64_t seed,
		    uint32_t messages, bool outcomes);
/* Restart the clients a message append failure stopped: same message. */
void spl_work_resume(struct spl_work *w);
/* Run the ring until the workload is idle or turns_max; true if idle. */
bool spl_work_run(struct spl_work *w, struct ring *ring, uint32_t turns_max);

/* The planned outcome steps of a recipient (0..2). */
uint32_t spl_plan(uint64_t seed, uint32_t id, uint32_t rcpt, struct spl_step *steps);
uint32_t spl_rcpt_count(uint64_t seed, uint32_t id);
/* The injected bytes of message id (body into out, SPL_BODY_MAX). */
size_t spl_body(uint64_t seed, uint32_t id, uint8_t *out);
void spl_rcpt_text(uint32_t id, uint32_t r, char *out, size_t size);
void spl_sender_text(uint32_t id, char *out, size_t size);

/* Child entry: fresh spool in spool_dir, full workload, crash per sim. */
void spl_child_run(struct spl_sim *sim, const char *spool_dir, uint64_t seed, uint32_t messages,
		   bool use_fdatasync) __attribute__((noreturn));

/* Rebuild the crash image in spool_dir from the arena's trace. */
/* SPL-08: also undo journal reclamations that were not durable (true), or
 * keep them (false): renames in two directories have no order between
 * them until each directory is synced, so both states can follow a crash. */
extern bool spl_undo_journal_reclaim;
void spl_image_build(struct spl_arena *a, const char *spool_dir, const char *shadow_dir,
		     enum spl_image_mode mode, uint64_t *rng, struct spl_image_stats *st);

void spl_expect_load(struct spl_expect *e, const struct spl_arena *a, uint32_t messages);
/* Open the spool (full recovery) into got; false with why on failure. */
bool spl_recover(const char *spool_dir, bool use_fdatasync, struct spl_got *got,
		 struct spool_recovery_stats *st, char *why, size_t why_size);
/* Read-only recovery (deletes nothing). */
bool spl_recover_readonly(const char *spool_dir, struct spl_got *got,
			  struct spool_recovery_stats *st, char *why, size_t why_size);
/*
 * Deferral regressions seen (each also fails its check): a recipient came
 * back with an older DEFERRED time than the last acknowledged one. It
 * happened while segments kept the id given at preparation, so a recycled
 * journal file could carry a higher id than a segment prepared before it
 * and used after it, and replay by id let the older record win. Segments
 * now take a fresh id at activation (spool_log.c, spool_seg_activate).
 */
extern uint32_t spl_deferral_regressions;
/* The checks of reliability.md 4.2 (1-3); false with why. */
bool spl_check(const struct spl_expect *e, const struct spl_got *got, char *why,
	       size_t why_size);
/* Same recovered state. */
bool spl_got_equal(const struct spl_got *a, const struct spl_got *b, char *why, size_t why_size);
/* 4.2 (5): every message .seg file holds a live recipient. */
bool spl_check_no_leak(const char *spool_dir, const struct spl_got *got, char *why,
		       size_t why_size);

/* Event iteration. */
const struct spl_ev *spl_ev_next(const struct spl_arena *a, uint64_t *at);
void spl_log(struct spl_arena *a, const struct spl_ev *ev);

#endif /* SPL_SIM_H */
