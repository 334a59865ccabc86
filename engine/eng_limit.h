/*
 * eng_limit.h - the limiters of the delivery engine: token buckets for
 * message and connection rates, concurrency counters for connections per
 * destination, and a node-wide atomic limit that several shards share.
 *
 * Ownership and threads: a destination is owned by exactly one shard
 * (DESIGN.md, domain ownership), so struct eng_bucket and struct
 * eng_counter are plain integers touched by that shard's thread only: no
 * locks, no atomics. struct eng_global_limit is the exception: it lives in
 * memory shared by every shard and is lock-free (C11 atomics).
 *
 * Time is passed in (nanoseconds on one monotonic clock), never read here,
 * so the logic is pure and the tests drive it with any clock they like.
 *
 * Token bucket invariant (exactness): a bucket of rate count/period_ns and
 * burst b, created full, lets at most b + floor(T * count / period_ns)
 * tokens be taken in any interval of length T. The arithmetic is integer
 * and exact: the level is kept in "credits", where one token is period_ns
 * credits and every nanosecond adds count credits, capped at
 * b * period_ns. Nothing is rounded, so nothing drifts.
 *
 * References: KumoMTA and PowerMTA per-destination rate and connection
 * limits (docs/config.md lists the equivalent knobs).
 */
#ifndef ENG_LIMIT_H
#define ENG_LIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng_common.h"

/* Limits of the bucket parameters; they keep every product below 2^63. */
#define ENG_BUCKET_COUNT_MAX 1000000000ull /* tokens per period */
#define ENG_BUCKET_PERIOD_NS_MAX (86400ull * 1000000000ull) /* one day */
#define ENG_BUCKET_BURST_MAX 100000ull

_Static_assert(ENG_BUCKET_BURST_MAX * ENG_BUCKET_PERIOD_NS_MAX < (1ull << 63),
	       "bucket capacity in credits must fit in 63 bits");

/*
 * A token bucket. count == 0 means unlimited: every take succeeds. Fields
 * are private; read them only in tests.
 */
struct eng_bucket {
	uint64_t count;	    /* tokens added per period_ns; 0 = unlimited */
	uint64_t period_ns; /* > 0 */
	uint64_t burst;	    /* capacity in tokens, >= 1 */
	uint64_t credits;   /* level; one token = period_ns credits */
	uint64_t updated_ns; /* time the level was last brought up to date */
};

/*
 * Initialise a bucket, full, at now_ns. count == 0 makes it unlimited
 * (period_ns and burst are then ignored but must still be in range).
 * Asserts 1 <= period_ns <= ENG_BUCKET_PERIOD_NS_MAX, count <=
 * ENG_BUCKET_COUNT_MAX and 1 <= burst <= ENG_BUCKET_BURST_MAX.
 */
void eng_bucket_init(struct eng_bucket *bucket, uint64_t count, uint64_t period_ns,
		     uint64_t burst, uint64_t now_ns);

/*
 * Change the rate and burst (adaptive shaping, SIGHUP reload), keeping
 * the current level, capped at the new burst. Same preconditions.
 */
void eng_bucket_set_rate(struct eng_bucket *bucket, uint64_t count, uint64_t period_ns,
			 uint64_t burst, uint64_t now_ns);

/*
 * Take n tokens at now_ns (n >= 1) if they are all there; returns true and
 * removes them, or false and removes none. n above the burst can never
 * succeed and returns false. now_ns must not go back in time (asserted).
 */
bool eng_bucket_take(struct eng_bucket *bucket, uint64_t now_ns, uint64_t n)
	ENG_WARN_UNUSED;

/*
 * The earliest time >= now_ns at which one token is available, so the
 * scheduler arms a timer instead of spinning. Does not change the bucket.
 */
uint64_t eng_bucket_next_ns(const struct eng_bucket *bucket, uint64_t now_ns);

/* Whole tokens available at now_ns (burst for an unlimited bucket). */
uint64_t eng_bucket_available(const struct eng_bucket *bucket, uint64_t now_ns);

/*
 * A concurrency counter (connections open to one destination). used never
 * exceeds max through eng_counter_try_acquire; max may be lowered below
 * used at run time (adaptive shaping), after which acquisitions fail until
 * enough releases happen.
 */
struct eng_counter {
	uint32_t used;
	uint32_t max;
};

void eng_counter_init(struct eng_counter *counter, uint32_t max);
void eng_counter_set_max(struct eng_counter *counter, uint32_t max);
bool eng_counter_try_acquire(struct eng_counter *counter) ENG_WARN_UNUSED;
/* Release one acquisition; asserts there is one (never negative). */
void eng_counter_release(struct eng_counter *counter);
bool eng_counter_is_full(const struct eng_counter *counter);

/*
 * A node-wide limit shared by every shard (global max_connections): a
 * lock-free compare-and-swap counter. The number of holders never exceeds
 * max at any instant. Place it on its own cache line.
 */
struct eng_global_limit {
	_Alignas(64) _Atomic uint64_t used;
	_Atomic uint64_t max;
};

/* Bound on compare-and-swap retries under contention; see the .c file. */
#define ENG_GLOBAL_LIMIT_TRIES_MAX 4096u

void eng_global_limit_init(struct eng_global_limit *limit, uint64_t max);
/* Change max (reload); holders above a lowered max stay until released. */
void eng_global_limit_set_max(struct eng_global_limit *limit, uint64_t max);
/*
 * Take one unit if used < max. Returns false when full (and, in the
 * pathological case of ENG_GLOBAL_LIMIT_TRIES_MAX lost races in a row,
 * when busy: the caller treats both as "try later").
 */
bool eng_global_limit_try_acquire(struct eng_global_limit *limit) ENG_WARN_UNUSED;
/* Give one unit back; asserts one was held. */
void eng_global_limit_release(struct eng_global_limit *limit);
uint64_t eng_global_limit_used(const struct eng_global_limit *limit);

#endif /* ENG_LIMIT_H */
