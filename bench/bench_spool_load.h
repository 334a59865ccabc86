/*
 * bench_spool_load.h - drive a spool with a closed-loop load of durable
 * message appends and measure what the appending side sees.
 *
 * Load model: `concurrency` clients, each like an SMTP client waiting for
 * its 250 after the final dot. A client calls spool_write_message(); when
 * the callback says the record is durable, the ack latency (from the call
 * to the callback) is recorded and the client appends its next message at
 * once. Issuing stops at a deadline or a record count; the run ends when
 * every issued record is acknowledged.
 *
 * Messages: one sender, one recipient, a body in SMTP wire form taken
 * round-robin from a pool of pre-generated bodies, sized so that the
 * encoded record is exactly the requested size (when it is a multiple of
 * 8 bytes).
 *
 * An open-loop variant (bench_paced_run) issues messages at scheduled
 * Poisson arrival times instead; see its comment below.
 *
 * Ownership: bench_bodies owns its memory between _make and _free. A load
 * run borrows the spool, the ring and the bodies until it returns.
 */
#ifndef BENCH_SPOOL_LOAD_H
#define BENCH_SPOOL_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bench_samples;
struct ring;
struct spool;

#define BENCH_SENDER "bench@example.org"
#define BENCH_RCPT "rcpt@example.net"

struct bench_bodies {
	uint8_t *data;	   /* count bodies of body_size bytes, back to back */
	uint32_t body_size;
	uint32_t count;
	uint32_t record_size; /* encoded size of one message record */
	uint64_t hash;	      /* FNV-1a over every body: the workload's fingerprint */
};

/* Generate count bodies for records of record_size bytes. Returns 0 or
 * -EINVAL (size too small for a body) / -ENOMEM. */
int bench_bodies_make(struct bench_bodies *bodies, uint64_t seed, uint32_t record_size,
		      uint32_t count) __attribute__((warn_unused_result));
void bench_bodies_free(struct bench_bodies *bodies);

struct bench_load_params {
	uint32_t concurrency;
	double duration_s;  /* stop issuing after this; 0: no deadline */
	uint64_t count_max; /* stop issuing after this many records */
	const char *trace_path; /* if not NULL: completion timeline CSV */
	const char *dir;	/* the spool's folder: its disk's write counter */
	/* Delivering mode: when a message is acknowledged the client also
	 * appends a DELIVERED outcome for it (recipient 0), as a server does
	 * once the message is delivered. The message still counts (records/s,
	 * latency) at its own acknowledgement; outcomes are extra journal
	 * writes. A client has at most one outcome in flight: if the previous
	 * one is still pending at the next message's ack, the client waits for
	 * it before appending another message. */
	bool deliver;
	/* Stop issuing once the message log has recycled this many segments
	 * in total (0: no such stop). */
	uint64_t stop_recycled;
};

struct bench_load_result {
	uint64_t records;
	double seconds;
	double records_per_s;
	double payload_mb_per_s; /* record bytes (10^6 B/s) */
	double disk_mb_per_s;	 /* commit bytes, padding included */
	double p50_us;
	double p99_us;
	double p999_us;
	double max_us;
	uint64_t commits;
	uint64_t commit_bytes;
	uint64_t appended_bytes;
	double avg_commit_bytes;
	double records_per_commit;
	uint64_t segments_created;
	uint64_t segments_recycled; /* message segments recycled during the run */
	uint64_t journal_segments_created;
	uint64_t outcomes;	       /* DELIVERED outcomes acknowledged */
	uint64_t journal_commits;
	uint64_t journal_commit_bytes; /* journal bytes written, padding included */
	double total_disk_mb_per_s;    /* message + journal commit bytes */
	uint32_t iou_wrk_max;
	double cpu_us_per_record;
	double enters_per_commit;
	/* Seen on the ring during the run (bench_trace.h). */
	uint64_t prep_zero_bytes;
	uint64_t prep_syncs;
	double commit_gap_max_us;
	/* Device writes during the run not made by the commits or the zeroing:
	 * filesystem journal and metadata, or another process (a disturbed
	 * measurement). */
	double other_disk_mb;
};

/* Run one load on an open spool; each acknowledgement's latency goes to
 * samples (the quantiles in result are the caller's to fill). Returns 0,
 * or -errno (a refused append or a failed commit) with one line in err. */
int bench_load_run(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
		   const struct bench_load_params *params, struct bench_samples *samples,
		   struct bench_load_result *result, char *err, size_t err_size)
	__attribute__((warn_unused_result));

/* Add part's counts to total and recompute total's rates and averages
 * (the quantiles are left alone). */
void bench_load_result_add(struct bench_load_result *total, const struct bench_load_result *part);

/*
 * Open-loop ("paced") load: messages arrive as a Poisson process at
 * rate_per_s, independently of the acknowledgements, as mail reaches a
 * server from many independent clients. Inter-arrival times are
 * exponential, drawn from bench_rand seeded with seed, so the schedule is
 * the same for a given seed and rate. Each loop turn issues every arrival
 * whose scheduled time has come, then runs the ring until the next one is
 * due. A message's latency runs from its SCHEDULED arrival to its
 * acknowledgement (not from the moment it was issued: a loop that falls
 * behind shows up in the latency instead of hiding it, no coordinated
 * omission). Each acknowledged message gets a DELIVERED outcome (recipient
 * 0), as in the closed loop's delivering mode.
 *
 * A slot carries one message and then its outcome, and is reused only
 * once both are acknowledged. All slots are allocated before the clock starts;
 * when all are busy, arrivals wait in order, still timed from their
 * schedule, and are counted in backlogged. Issuing stops with the first
 * arrival scheduled at or past duration_s (or after count_max arrivals);
 * arrivals scheduled before it are all issued. The run ends when every
 * issued message and outcome is acknowledged.
 */
struct bench_paced_params {
	double rate_per_s;  /* mean arrival rate, > 0 */
	double duration_s;  /* arrivals scheduled within this; 0: no deadline */
	uint64_t count_max; /* stop issuing after this many arrivals */
	uint32_t slots;	    /* messages (with their outcome) in flight at most */
	uint64_t seed;	    /* inter-arrival times */
	const char *dir;    /* the spool's folder: its disk's write counter */
	/* If not NULL: each message's issue lag (issue time - scheduled
	 * arrival), the generator's own lateness (timer wake-ups, a busy
	 * CPU), which its latency includes. */
	struct bench_samples *lag_samples;
};

struct bench_paced_result {
	/* records (acknowledged messages), seconds (the run's start, where
	 * the schedule starts, to the last message ack), records/s, commits,
	 * journal commits, CPU, ... (not iou_wrk_max: not sampled); the
	 * quantiles are the caller's to fill, as for bench_load_run. */
	struct bench_load_result load;
	uint64_t issued;	  /* messages issued (all acknowledged on success) */
	uint64_t backlogged;	  /* arrivals that found every slot busy */
	uint32_t slots_busy_max;  /* most slots busy at once */
	double issue_lag_max_us;  /* longest an arrival waited to be issued */
};

/* Add part's counts to total (the quantiles are left alone). */
void bench_paced_result_add(struct bench_paced_result *total,
			    const struct bench_paced_result *part);

/* Run one paced load on an open spool; each acknowledgement's latency
 * (from its scheduled arrival) goes to samples. Returns 0, or -errno (a
 * refused append, a failed commit, no arrival in the window) with one line
 * in err. */
int bench_paced_run(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
		    const struct bench_paced_params *params, struct bench_samples *samples,
		    struct bench_paced_result *result, char *err, size_t err_size)
	__attribute__((warn_unused_result));

/*
 * Put the spool in its steady state before measuring: append one message
 * and one DEFERRED outcome for it (not final, so no accounting changes),
 * so both logs have an active segment, as in a server that is delivering.
 * (Once a workaround for logs that prepared segments while never written;
 * the spool no longer does that, and this is harmless.)
 * Returns 0 or -errno with one line in err.
 */
int bench_spool_warm(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
		     char *err, size_t err_size) __attribute__((warn_unused_result));

/* Run the ring until the message log has created at least `segments`
 * segments (the ready pool is full) and, if want_idle, no preparation is
 * in flight; at most timeout_s. Returns 0, -ETIMEDOUT, or -ENOSPC when
 * the disk is nearly full. */
int bench_spool_wait_ready(struct spool *sp, struct ring *ring, const char *dir,
			   uint64_t segments, bool want_idle, double timeout_s)
	__attribute__((warn_unused_result));

/* The run stops with -ENOSPC when less than this is free on the spool's
 * filesystem: a benchmark must never fill a shared disk, whatever the
 * spool does. */
#define BENCH_FREE_BYTES_MIN (4ull << 30)

#endif /* BENCH_SPOOL_LOAD_H */
