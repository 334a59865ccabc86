/*
 * eng_limit.c - token buckets, concurrency counters and the node-wide
 * atomic limit (see eng_limit.h for the invariants).
 *
 * The bucket keeps its level in credits: one token is period_ns credits
 * and each elapsed nanosecond adds count credits. With integers only,
 * "at most burst + T * count / period_ns tokens in any window of length T"
 * holds exactly: the level at the start of the window is at most
 * burst * period_ns credits and the window adds at most T * count.
 */
#include "eng_limit.h"

static void
eng_bucket_check_params(uint64_t count, uint64_t period_ns, uint64_t burst)
{
	ENG_ASSERT(count <= ENG_BUCKET_COUNT_MAX);
	ENG_ASSERT(period_ns >= 1);
	ENG_ASSERT(period_ns <= ENG_BUCKET_PERIOD_NS_MAX);
	ENG_ASSERT(burst >= 1);
	ENG_ASSERT(burst <= ENG_BUCKET_BURST_MAX);
}

static uint64_t
eng_bucket_capacity(const struct eng_bucket *bucket)
{
	return bucket->burst * bucket->period_ns;
}

/* The level at now_ns, in credits, without changing the bucket. */
static uint64_t
eng_bucket_level(const struct eng_bucket *bucket, uint64_t now_ns)
{
	uint64_t capacity = eng_bucket_capacity(bucket);
	ENG_ASSERT(bucket->count > 0);
	ENG_ASSERT(bucket->credits <= capacity);
	ENG_ASSERT(now_ns >= bucket->updated_ns);
	uint64_t deficit = capacity - bucket->credits;
	uint64_t elapsed_ns = now_ns - bucket->updated_ns;
	/* Nanoseconds until full; comparing first keeps the product in range. */
	uint64_t fill_ns = (deficit + bucket->count - 1) / bucket->count;
	if (elapsed_ns >= fill_ns)
		return capacity;
	uint64_t level = bucket->credits + elapsed_ns * bucket->count;
	ENG_ASSERT(level < capacity);
	return level;
}

void
eng_bucket_init(struct eng_bucket *bucket, uint64_t count, uint64_t period_ns, uint64_t burst,
		uint64_t now_ns)
{
	ENG_ASSERT(bucket != NULL);
	eng_bucket_check_params(count, period_ns, burst);
	bucket->count = count;
	bucket->period_ns = period_ns;
	bucket->burst = burst;
	bucket->credits = eng_bucket_capacity(bucket);
	bucket->updated_ns = now_ns;
}

void
eng_bucket_set_rate(struct eng_bucket *bucket, uint64_t count, uint64_t period_ns,
		    uint64_t burst, uint64_t now_ns)
{
	ENG_ASSERT(bucket != NULL);
	eng_bucket_check_params(count, period_ns, burst);
	/* Whole tokens carry over; a fraction of one is dropped (conservative). */
	uint64_t tokens = burst;
	if (bucket->count > 0)
		tokens = ENG_MIN(eng_bucket_level(bucket, now_ns) / bucket->period_ns, burst);
	bucket->count = count;
	bucket->period_ns = period_ns;
	bucket->burst = burst;
	bucket->credits = tokens * period_ns;
	bucket->updated_ns = now_ns;
	ENG_ASSERT(bucket->credits <= eng_bucket_capacity(bucket));
}

bool
eng_bucket_take(struct eng_bucket *bucket, uint64_t now_ns, uint64_t n)
{
	ENG_ASSERT(bucket != NULL);
	ENG_ASSERT(n >= 1);
	if (bucket->count == 0)
		return true;
	if (n > bucket->burst)
		return false;
	uint64_t level = eng_bucket_level(bucket, now_ns);
	uint64_t cost = n * bucket->period_ns;
	bucket->updated_ns = now_ns;
	bucket->credits = level;
	if (level < cost)
		return false;
	bucket->credits = level - cost;
	ENG_ASSERT(bucket->credits < eng_bucket_capacity(bucket));
	return true;
}

uint64_t
eng_bucket_next_ns(const struct eng_bucket *bucket, uint64_t now_ns)
{
	ENG_ASSERT(bucket != NULL);
	if (bucket->count == 0)
		return now_ns;
	uint64_t level = eng_bucket_level(bucket, now_ns);
	if (level >= bucket->period_ns)
		return now_ns;
	uint64_t wait_ns = (bucket->period_ns - level + bucket->count - 1) / bucket->count;
	ENG_ASSERT(wait_ns >= 1);
	ENG_ASSERT(wait_ns <= bucket->period_ns);
	return now_ns + wait_ns;
}

uint64_t
eng_bucket_available(const struct eng_bucket *bucket, uint64_t now_ns)
{
	ENG_ASSERT(bucket != NULL);
	if (bucket->count == 0)
		return bucket->burst;
	uint64_t tokens = eng_bucket_level(bucket, now_ns) / bucket->period_ns;
	ENG_ASSERT(tokens <= bucket->burst);
	return tokens;
}

void
eng_counter_init(struct eng_counter *counter, uint32_t max)
{
	ENG_ASSERT(counter != NULL);
	ENG_ASSERT(max >= 1);
	counter->used = 0;
	counter->max = max;
}

void
eng_counter_set_max(struct eng_counter *counter, uint32_t max)
{
	ENG_ASSERT(counter != NULL);
	ENG_ASSERT(max >= 1);
	counter->max = max;
}

bool
eng_counter_try_acquire(struct eng_counter *counter)
{
	ENG_ASSERT(counter != NULL);
	ENG_ASSERT(counter->max >= 1);
	if (counter->used >= counter->max)
		return false;
	counter->used++;
	ENG_ASSERT(counter->used <= counter->max);
	return true;
}

void
eng_counter_release(struct eng_counter *counter)
{
	ENG_ASSERT(counter != NULL);
	ENG_ASSERT(counter->used > 0);
	counter->used--;
}

bool
eng_counter_is_full(const struct eng_counter *counter)
{
	ENG_ASSERT(counter != NULL);
	return counter->used >= counter->max;
}

void
eng_global_limit_init(struct eng_global_limit *limit, uint64_t max)
{
	ENG_ASSERT(limit != NULL);
	ENG_ASSERT(max >= 1);
	atomic_init(&limit->used, 0);
	atomic_init(&limit->max, max);
}

void
eng_global_limit_set_max(struct eng_global_limit *limit, uint64_t max)
{
	ENG_ASSERT(limit != NULL);
	ENG_ASSERT(max >= 1);
	atomic_store_explicit(&limit->max, max, memory_order_release);
}

/*
 * Compare-and-swap rather than fetch_add-then-undo: a failed attempt never
 * makes the counter look fuller than it is, so a racing acquirer is never
 * refused spuriously. Each lost race means another shard made progress;
 * the bound only protects against livelock under pathological contention.
 */
bool
eng_global_limit_try_acquire(struct eng_global_limit *limit)
{
	ENG_ASSERT(limit != NULL);
	uint64_t max = atomic_load_explicit(&limit->max, memory_order_acquire);
	uint64_t used = atomic_load_explicit(&limit->used, memory_order_relaxed);
	for (uint32_t tries = 0; tries < ENG_GLOBAL_LIMIT_TRIES_MAX; tries++) {
		if (used >= max)
			return false;
		if (atomic_compare_exchange_weak_explicit(&limit->used, &used, used + 1,
							  memory_order_acq_rel,
							  memory_order_relaxed))
			return true;
	}
	return false;
}

void
eng_global_limit_release(struct eng_global_limit *limit)
{
	ENG_ASSERT(limit != NULL);
	uint64_t before = atomic_fetch_sub_explicit(&limit->used, 1, memory_order_acq_rel);
	ENG_ASSERT(before >= 1);
}

uint64_t
eng_global_limit_used(const struct eng_global_limit *limit)
{
	ENG_ASSERT(limit != NULL);
	return atomic_load_explicit(&limit->used, memory_order_relaxed);
}
