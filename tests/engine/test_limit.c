/*
 * test_limit.c - the limiters (engine/eng_limit.h).
 *
 * Token bucket: exactness as a property over random take times and sizes
 * (in every window of length T at most burst + floor(T * count / period)
 * tokens are taken), tightness (a greedy taker that sleeps until
 * eng_bucket_next_ns gets exactly that many), all-or-nothing takes, rate
 * changes. Counters: bounds and the never-negative assertion. The
 * node-wide limit: two threads hammering one limit never exceed max.
 *
 * Randomness is a fixed-seed xorshift; failures print the seed.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine/eng_limit.h"

#define NS_S 1000000000ull

static uint64_t
rng_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

/* ------------------------------------------------------------------ */
/* Token bucket.                                                       */
/* ------------------------------------------------------------------ */

Test(limit, bucket_starts_full_and_refills_at_the_rate)
{
	struct eng_bucket b;
	uint64_t t = 1000;
	eng_bucket_init(&b, 10, NS_S, 3, t); /* 10/s, burst 3 */
	cr_assert_eq(eng_bucket_available(&b, t), 3);
	cr_assert(eng_bucket_take(&b, t, 1));
	cr_assert(eng_bucket_take(&b, t, 1));
	cr_assert(eng_bucket_take(&b, t, 1));
	cr_assert_not(eng_bucket_take(&b, t, 1));
	cr_assert_eq(eng_bucket_next_ns(&b, t), t + NS_S / 10);
	cr_assert_not(eng_bucket_take(&b, t + NS_S / 10 - 1, 1));
	cr_assert(eng_bucket_take(&b, t + NS_S / 10, 1));
	/* Idle for an hour: full again, never more than the burst. */
	cr_assert_eq(eng_bucket_available(&b, t + 3600 * NS_S), 3);
	cr_assert_eq(eng_bucket_next_ns(&b, t + 3600 * NS_S), t + 3600 * NS_S);
}

Test(limit, bucket_take_is_all_or_nothing)
{
	struct eng_bucket b;
	eng_bucket_init(&b, 1, NS_S, 5, 0);
	cr_assert(eng_bucket_take(&b, 0, 3));
	cr_assert_not(eng_bucket_take(&b, 0, 3), "only 2 left");
	cr_assert_eq(eng_bucket_available(&b, 0), 2, "a failed take removes nothing");
	cr_assert_not(eng_bucket_take(&b, 100 * NS_S, 6), "above the burst never succeeds");
	cr_assert(eng_bucket_take(&b, 100 * NS_S, 5));
}

Test(limit, bucket_unlimited_always_succeeds)
{
	struct eng_bucket b;
	eng_bucket_init(&b, 0, NS_S, 1, 0);
	for (uint64_t i = 0; i < 10000; i++)
		cr_assert(eng_bucket_take(&b, 0, 1 + i % 7));
	cr_assert_eq(eng_bucket_next_ns(&b, 42), 42);
}

Test(limit, bucket_next_ns_for_slow_rates)
{
	struct eng_bucket b;
	uint64_t hour = 3600 * NS_S;
	eng_bucket_init(&b, 1, hour, 1, 0); /* 1/h */
	cr_assert(eng_bucket_take(&b, 0, 1));
	cr_assert_eq(eng_bucket_next_ns(&b, 0), hour);
	cr_assert_eq(eng_bucket_next_ns(&b, hour / 2), hour);
	cr_assert_not(eng_bucket_take(&b, hour - 1, 1));
	cr_assert(eng_bucket_take(&b, hour, 1));
	/* 7 per 3 s: a token every 3/7 s, rounded up to the next nanosecond. */
	eng_bucket_init(&b, 7, 3 * NS_S, 1, 0);
	cr_assert(eng_bucket_take(&b, 0, 1));
	uint64_t next = eng_bucket_next_ns(&b, 0);
	cr_assert_eq(next, (3 * NS_S + 6) / 7);
	cr_assert_not(eng_bucket_take(&b, next - 1, 1));
	cr_assert(eng_bucket_take(&b, next, 1));
}

struct bucket_case {
	uint64_t count;
	uint64_t period_ns;
	uint64_t burst;
	uint64_t max_gap_ns; /* random gaps between attempts: 0..max_gap_ns */
};

/*
 * In every window [t_i, t_j] of attempt times, the tokens taken are at
 * most burst + floor((t_j - t_i) * count / period_ns). Checked over all
 * pairs of successful takes.
 */
static void
check_bucket_exact(const struct bucket_case *c, uint64_t seed)
{
	enum { ATTEMPTS = 1500 };
	static uint64_t when[ATTEMPTS];
	static uint64_t taken[ATTEMPTS];
	struct eng_bucket b;
	uint64_t state = seed;
	uint64_t now = rng_next(&state) % NS_S;
	uint32_t successes = 0;
	eng_bucket_init(&b, c->count, c->period_ns, c->burst, now);
	for (uint32_t i = 0; i < ATTEMPTS; i++) {
		now += rng_next(&state) % (c->max_gap_ns + 1);
		uint64_t n = 1 + rng_next(&state) % ENG_MIN(c->burst, 3ull);
		if (rng_next(&state) % 4 == 0)
			now = ENG_MAX(now, eng_bucket_next_ns(&b, now)); /* a scheduler's timer */
		if (eng_bucket_take(&b, now, n)) {
			when[successes] = now;
			taken[successes] = n;
			successes++;
		}
	}
	cr_assert_gt(successes, 10, "seed %llu: the bucket let almost nothing through",
		     (unsigned long long)seed);
	for (uint32_t i = 0; i < successes; i++) {
		uint64_t sum = 0;
		for (uint32_t j = i; j < successes; j++) {
			sum += taken[j];
			unsigned __int128 refill =
				(unsigned __int128)(when[j] - when[i]) * c->count / c->period_ns;
			cr_assert(sum <= c->burst + refill,
				  "seed %llu: %llu tokens in a window of %llu ns (burst %llu, "
				  "%llu per %llu ns)",
				  (unsigned long long)seed, (unsigned long long)sum,
				  (unsigned long long)(when[j] - when[i]),
				  (unsigned long long)c->burst, (unsigned long long)c->count,
				  (unsigned long long)c->period_ns);
		}
	}
}

Test(limit, bucket_is_exact_over_any_window)
{
	static const struct bucket_case cases[] = {
		{100, NS_S, 100, NS_S / 50},	    /* 100/s, burst 1 s */
		{100, NS_S, 1, NS_S / 50},	    /* no burst at all */
		{7, 3 * NS_S, 2, NS_S},		    /* a rate that does not divide */
		{6000, 60 * NS_S, 10, NS_S / 200},  /* 6000/min */
		{1, 3600 * NS_S, 3, 1800 * NS_S},   /* 1/h */
		{1000000000, NS_S, 1000, 2000},	    /* 1e9/s */
		{3, 86400 * NS_S, 5, 20000 * NS_S}, /* 3/day */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (uint64_t seed = 1; seed <= 8; seed++)
			check_bucket_exact(&cases[i], seed * 0x9E3779B97F4A7C15ull + i);
	}
}

Test(limit, bucket_greedy_taker_gets_exactly_the_bound)
{
	/* Taking each token at the moment eng_bucket_next_ns names: burst + floor(T*r). */
	static const uint64_t rates[][3] = {{100, NS_S, 10}, {7, 3 * NS_S, 2}, {1, 60 * NS_S, 1}};
	for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
		struct eng_bucket b;
		uint64_t start = 5 * NS_S;
		uint64_t now = start;
		uint64_t horizon = start + 200 * rates[i][1];
		uint64_t successes = 0;
		eng_bucket_init(&b, rates[i][0], rates[i][1], rates[i][2], start);
		for (uint32_t turn = 0; turn < 100000 && now <= horizon; turn++) {
			if (eng_bucket_take(&b, now, 1))
				successes++;
			else
				now = eng_bucket_next_ns(&b, now);
		}
		uint64_t bound = rates[i][2] + (horizon - start) * rates[i][0] / rates[i][1];
		cr_assert_eq(successes, bound, "case %zu: %llu vs %llu", i,
			     (unsigned long long)successes, (unsigned long long)bound);
	}
}

Test(limit, bucket_set_rate_keeps_whole_tokens)
{
	struct eng_bucket b;
	eng_bucket_init(&b, 10, NS_S, 10, 0);
	cr_assert(eng_bucket_take(&b, 0, 6)); /* 4 left */
	eng_bucket_set_rate(&b, 1, 60 * NS_S, 2, 0);
	cr_assert_eq(eng_bucket_available(&b, 0), 2, "capped at the new burst");
	eng_bucket_set_rate(&b, 100, NS_S, 50, 0);
	cr_assert_eq(eng_bucket_available(&b, 0), 2, "raising the burst adds nothing now");
	cr_assert_eq(eng_bucket_available(&b, NS_S / 100), 3);
}

Test(limit, bucket_time_going_back_aborts, .signal = SIGABRT)
{
	struct eng_bucket b;
	eng_bucket_init(&b, 10, NS_S, 1, 1000);
	bool taken = eng_bucket_take(&b, 999, 1);
	cr_assert_fail("took %d with the clock going back", taken);
}

/* ------------------------------------------------------------------ */
/* Concurrency counter.                                                */
/* ------------------------------------------------------------------ */

Test(limit, counter_holds_max)
{
	struct eng_counter c;
	eng_counter_init(&c, 2);
	cr_assert(eng_counter_try_acquire(&c));
	cr_assert(eng_counter_try_acquire(&c));
	cr_assert(eng_counter_is_full(&c));
	cr_assert_not(eng_counter_try_acquire(&c));
	eng_counter_release(&c);
	cr_assert(eng_counter_try_acquire(&c));
	eng_counter_set_max(&c, 1); /* lowered below what is held */
	eng_counter_release(&c);
	cr_assert_not(eng_counter_try_acquire(&c), "still 1 held of max 1");
	eng_counter_release(&c);
	cr_assert(eng_counter_try_acquire(&c));
	cr_assert_eq(c.used, 1);
}

Test(limit, counter_release_below_zero_aborts, .signal = SIGABRT)
{
	struct eng_counter c;
	eng_counter_init(&c, 1);
	eng_counter_release(&c);
}

/* ------------------------------------------------------------------ */
/* Node-wide limit.                                                    */
/* ------------------------------------------------------------------ */

enum { GLOBAL_MAX = 3, GLOBAL_ROUNDS = 200000 };

struct global_shared {
	struct eng_global_limit limit;
	_Atomic uint64_t holders;
	_Atomic uint64_t holders_seen_max;
	_Atomic uint64_t successes;
	_Atomic uint64_t failures;
};

static void *
global_worker(void *arg)
{
	struct global_shared *s = arg;
	for (uint32_t i = 0; i < GLOBAL_ROUNDS; i++) {
		if (!eng_global_limit_try_acquire(&s->limit)) {
			atomic_fetch_add(&s->failures, 1);
			continue;
		}
		uint64_t now = atomic_fetch_add(&s->holders, 1) + 1;
		uint64_t seen = atomic_load(&s->holders_seen_max);
		while (now > seen && !atomic_compare_exchange_weak(&s->holders_seen_max, &seen, now))
			;
		atomic_fetch_add(&s->successes, 1);
		atomic_fetch_sub(&s->holders, 1);
		eng_global_limit_release(&s->limit);
	}
	return NULL;
}

Test(limit, global_limit_never_exceeded_by_two_threads)
{
	static struct global_shared s;
	eng_global_limit_init(&s.limit, GLOBAL_MAX);
	/* Pre-hold two units so the two threads compete for the last one. */
	cr_assert(eng_global_limit_try_acquire(&s.limit));
	cr_assert(eng_global_limit_try_acquire(&s.limit));
	atomic_store(&s.holders, 2);
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, global_worker, &s), 0);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_join(t[i], NULL), 0);
	cr_assert_leq(atomic_load(&s.holders_seen_max), GLOBAL_MAX);
	cr_assert_gt(atomic_load(&s.successes), 0);
	cr_assert_eq(atomic_load(&s.successes) + atomic_load(&s.failures), 2ull * GLOBAL_ROUNDS);
	cr_assert_eq(eng_global_limit_used(&s.limit), 2);
	eng_global_limit_release(&s.limit);
	eng_global_limit_release(&s.limit);
	cr_assert_eq(eng_global_limit_used(&s.limit), 0);
}

Test(limit, global_limit_single_thread_bounds)
{
	struct eng_global_limit g;
	eng_global_limit_init(&g, 2);
	cr_assert(eng_global_limit_try_acquire(&g));
	cr_assert(eng_global_limit_try_acquire(&g));
	cr_assert_not(eng_global_limit_try_acquire(&g));
	eng_global_limit_set_max(&g, 3);
	cr_assert(eng_global_limit_try_acquire(&g));
	eng_global_limit_set_max(&g, 1);
	cr_assert_not(eng_global_limit_try_acquire(&g));
	cr_assert_eq(eng_global_limit_used(&g), 3);
}

Test(limit, global_limit_release_without_acquire_aborts, .signal = SIGABRT)
{
	struct eng_global_limit g;
	eng_global_limit_init(&g, 1);
	eng_global_limit_release(&g);
}
