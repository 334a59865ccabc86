/*
 * eng_logfile.h - the delivery log file: written through each shard's
 * ring, shared by every shard of a node, rotated by size, reopened on
 * SIGHUP.
 *
 * Design (one file, many writers, no lock):
 * - Every shard has its own O_APPEND descriptor on the same path and its
 *   own eng_logfile. Lines are buffered per shard (two buffers of
 *   ENG_LOGFILE_BUFFER_SIZE) and go out through the ring as one
 *   IORING_OP_WRITE at offset -1 per loop turn (a ring hook), at most one
 *   in flight per shard. A write on an O_APPEND file is appended whole
 *   under the inode lock, and a buffer holds whole lines only, so lines of
 *   different shards never interleave.
 * - The node-wide part (struct eng_logfile_shared) is three atomics: size,
 *   the bytes claimed in the current file (each write adds its length
 *   before it is issued); generation, bumped when the file was rotated or
 *   must be reopened (SIGHUP: logrotate moved it); rotating, a flag taken
 *   by compare-and-swap.
 * - Rotation: the shard whose claim takes size past max_size and wins the
 *   flag renames, through its ring and one after the other, log.(keep-1)
 *   -> log.keep, ..., log.1 -> log.2, log -> log.1 (log.keep is replaced:
 *   at most keep rotated files stay; renames start above the highest
 *   rotated file that exists), then resets size, bumps generation and
 *   drops the flag; the next write creates a new log. Each shard
 *   compares generations before each write and reopens the path (a new
 *   file) when it changed. A write issued on
 *   an old descriptor lands in the renamed file, so no line is ever lost;
 *   near a rotation a line may sit in log.1 rather than log.
 * - When both buffers of a shard are busy (a write in flight, the other
 *   full), the full one is written with a blocking write(2) (counted in
 *   sync_writes): never a lost line, rarely a stall.
 *
 * Invariants: a shard's buffer holds whole lines; at most one ring write
 * and one rename of a shard are in flight; only the flag holder renames.
 *
 * Ownership: eng_logfile is one shard's (its thread only); the shared
 * part belongs to the node and outlives every shard's eng_logfile. Lines
 * are copied in; nothing is borrowed past eng_logfile_append().
 */
#ifndef ENG_LOGFILE_H
#define ENG_LOGFILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ring/ring.h"

#define ENG_LOGFILE_PATH_SIZE 1024u
/* Per buffer; two per shard. A line longer than this goes out alone. */
#define ENG_LOGFILE_BUFFER_SIZE (256u * 1024u)
/* Rotated files kept at most. */
#define ENG_LOGFILE_KEEP_MAX 1000u

struct eng_logfile_shared {
	char path[ENG_LOGFILE_PATH_SIZE];
	_Atomic uint64_t size;
	_Atomic uint64_t generation;
	_Atomic bool rotating;
	_Atomic uint64_t max_size; /* 0: never rotate */
	_Atomic uint32_t keep;	   /* 1..ENG_LOGFILE_KEEP_MAX */
};

struct eng_logfile_stats {
	uint64_t lines;
	uint64_t bytes;
	uint64_t writes;
	uint64_t sync_writes; /* both buffers busy: written with write(2) */
	uint64_t errors;      /* write or reopen failed: lines lost */
	uint64_t rotations;   /* done by this shard */
	uint64_t reopens;
};

struct eng_logfile {
	struct ring *ring;
	struct eng_logfile_shared *shared;
	int fd;
	uint64_t generation;
	bool hook_added;
	char *buf[2];
	uint32_t fill[2];	/* bytes in each buffer */
	uint32_t filling;	/* the buffer lines go into */
	uint32_t written;	/* of the buffer in flight: bytes done */
	struct ring_op write_op;
	int write_fd;		/* the fd of the write in flight */
	struct ring_op rename_op;
	uint32_t rename_step;	/* keep .. 1: log.(step-1) -> log.step */
	char rename_from[ENG_LOGFILE_PATH_SIZE + 16u];
	char rename_to[ENG_LOGFILE_PATH_SIZE + 16u];
	struct eng_logfile_stats stats;
};

/* Node-wide part for path (its size read from the file if it exists). */
void eng_logfile_shared_init(struct eng_logfile_shared *shared, const char *path,
			     uint64_t max_size, uint32_t keep);
/* Any thread: new limits (a reload). */
void eng_logfile_shared_limits(struct eng_logfile_shared *shared, uint64_t max_size,
			       uint32_t keep);
/* Any thread: every shard reopens the path before its next write (SIGHUP). */
void eng_logfile_shared_reopen(struct eng_logfile_shared *shared);

/* On the shard's thread: open the path (O_APPEND, created 0640) and add
 * the flush hook to ring. Returns 0 or -errno with one line in err. */
int eng_logfile_open(struct eng_logfile *lf, struct ring *ring,
		     struct eng_logfile_shared *shared, char *err, size_t err_size);

/* Copy one line (len bytes, its '\n' included) for the next write. */
void eng_logfile_append(struct eng_logfile *lf, const char *line, size_t len);

/* Bytes buffered, a write or a rename in flight. */
bool eng_logfile_is_busy(const struct eng_logfile *lf);

/* Write out everything buffered and wait (runs the ring, bounded; not
 * from a callback or hook), then close. A closed or zeroed lf is fine. */
void eng_logfile_close(struct eng_logfile *lf);

#endif /* ENG_LOGFILE_H */
