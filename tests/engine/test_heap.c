/*
 * test_heap.c - the retry heap (engine/eng_heap.h).
 *
 * Order: random keys pop sorted (10^5 items), equal keys pop in push
 * order (FIFO), a model check against per-key counts under interleaved
 * pushes and pops (fixed-seed xorshift), empty-heap behaviour, extreme
 * keys, and the array shrinking back once emptied.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "engine/eng_heap.h"

static uint64_t
heap_rng(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

Test(heap, empty)
{
	struct eng_heap heap = { 0 };
	uint64_t key = 7;
	void *ptr = &key;
	cr_assert(!eng_heap_peek(&heap, &key, &ptr));
	cr_assert_null(eng_heap_pop(&heap));
	cr_assert_eq(eng_heap_count(&heap), 0);
	eng_heap_free(&heap);
	eng_heap_free(&heap); /* twice is fine: zeroed */
}

Test(heap, random_keys_pop_sorted)
{
	enum { N = 100000 };
	static uint64_t keys[N];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	struct eng_heap heap = { 0 };
	for (uint32_t i = 0; i < N; i++) {
		keys[i] = heap_rng(&seed) % 1000003u;
		cr_assert(eng_heap_push(&heap, keys[i], &keys[i]));
	}
	cr_assert_eq(eng_heap_count(&heap), N);
	uint64_t last = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint64_t key = 0;
		void *peeked = NULL;
		cr_assert(eng_heap_peek(&heap, &key, &peeked));
		uint64_t *ptr = eng_heap_pop(&heap);
		cr_assert_eq(ptr, peeked);
		cr_assert_eq(*ptr, key, "the pointer travels with its key");
		cr_assert_geq(key, last, "pop %u: %lu after %lu", i, (unsigned long)key,
			      (unsigned long)last);
		last = key;
	}
	cr_assert_null(eng_heap_pop(&heap));
	cr_assert_leq(heap.capacity, 2u * ENG_HEAP_CAPACITY_MIN, "the array shrank back");
	eng_heap_free(&heap);
}

Test(heap, equal_keys_fifo)
{
	enum { N = 1000 };
	static int items[N];
	struct eng_heap heap = { 0 };
	/* Two keys interleaved: each key's items come out in push order. */
	for (uint32_t i = 0; i < N; i++)
		cr_assert(eng_heap_push(&heap, i % 2u == 0 ? 5u : 3u, &items[i]));
	for (uint32_t i = 1; i < N; i += 2)
		cr_assert_eq(eng_heap_pop(&heap), &items[i], "key 3, item %u", i);
	for (uint32_t i = 0; i < N; i += 2)
		cr_assert_eq(eng_heap_pop(&heap), &items[i], "key 5, item %u", i);
	eng_heap_free(&heap);
}

/* Interleaved pushes and pops against a reference: a count per key. */
Test(heap, model_interleaved)
{
	enum { KEYS = 64, OPS = 200000 };
	static uint32_t model[KEYS];
	static uint64_t tokens[KEYS];
	uint64_t seed = 12345;
	uint32_t total = 0;
	struct eng_heap heap = { 0 };
	for (uint32_t k = 0; k < KEYS; k++)
		tokens[k] = k;
	for (uint32_t op = 0; op < OPS; op++) {
		bool push = total == 0 || heap_rng(&seed) % 3u != 0;
		if (push) {
			uint32_t k = (uint32_t)(heap_rng(&seed) % KEYS);
			cr_assert(eng_heap_push(&heap, k, &tokens[k]));
			model[k]++;
			total++;
			continue;
		}
		uint32_t min = 0;
		while (model[min] == 0)
			min++;
		uint64_t *got = eng_heap_pop(&heap);
		cr_assert_not_null(got);
		cr_assert_eq(*got, min, "op %u (seed 12345): popped %lu, smallest is %u", op,
			     (unsigned long)*got, min);
		model[min]--;
		total--;
		cr_assert_eq(eng_heap_count(&heap), total);
	}
	eng_heap_free(&heap);
}

/* The extreme keys (0 and UINT64_MAX) order like any other. */
Test(heap, extreme_keys)
{
	int a, b, c;
	struct eng_heap heap = { 0 };
	cr_assert(eng_heap_push(&heap, UINT64_MAX, &a));
	cr_assert(eng_heap_push(&heap, 0, &b));
	cr_assert(eng_heap_push(&heap, UINT64_MAX - 1u, &c));
	cr_assert_eq(eng_heap_pop(&heap), &b);
	cr_assert_eq(eng_heap_pop(&heap), &c);
	cr_assert_eq(eng_heap_pop(&heap), &a);
	eng_heap_free(&heap);
}
