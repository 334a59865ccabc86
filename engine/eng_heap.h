/*
 * eng_heap.h - a binary min-heap of (key, pointer) items: the delivery
 * loop's retry schedule (docs/engine.md "The delivery loop").
 *
 * What: push and pop in O(log n), peek in O(1), so 10^5 deferred jobs cost
 * nothing per loop turn (only due items are ever touched). Items with equal
 * keys pop in push order (a sequence number breaks ties): jobs recovered
 * due at once leave in spool order, which keeps reads sequential.
 *
 * Invariants: items[0..count) is a heap on (key, seq): every parent is <=
 * both children. capacity >= count; the array grows by doubling and
 * shrinks by half when it is at most a quarter full (never below
 * ENG_HEAP_CAPACITY_MIN), so memory follows the number of items.
 *
 * Ownership: the heap owns its array; the pointers are the caller's (never
 * dereferenced). One thread (the shard's). A zeroed struct is an empty
 * heap; eng_heap_free releases the array.
 */
#ifndef ENG_HEAP_H
#define ENG_HEAP_H

#include <stdbool.h>
#include <stdint.h>

#define ENG_HEAP_CAPACITY_MIN 64u

struct eng_heap_item {
	uint64_t key;
	uint64_t seq; /* push order among equal keys */
	void *ptr;
};

struct eng_heap {
	struct eng_heap_item *items;
	uint32_t count;
	uint32_t capacity;
	uint64_t next_seq;
};

/* Add ptr with key. Returns false (heap unchanged) when out of memory. */
bool eng_heap_push(struct eng_heap *heap, uint64_t key, void *ptr);

/* The smallest key and its pointer, without removing it. false: empty. */
bool eng_heap_peek(const struct eng_heap *heap, uint64_t *key, void **ptr);

/* Remove and return the pointer with the smallest key (NULL: empty). */
void *eng_heap_pop(struct eng_heap *heap);

static inline uint32_t
eng_heap_count(const struct eng_heap *heap)
{
	return heap->count;
}

/* Release the array (the pointers are not touched); the heap is empty. */
void eng_heap_free(struct eng_heap *heap);

#endif /* ENG_HEAP_H */
