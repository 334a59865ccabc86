/*
 * eng_heap.c - binary min-heap on (key, seq) (eng_heap.h).
 *
 * Sift-up after a push and sift-down after a pop, each bounded by the
 * height of the tree (at most 32 levels for a 32-bit count).
 */
#include "eng_heap.h"

#include <stdlib.h>

#include "eng_common.h"

/* A path from the root to a leaf of a 32-bit count is at most 32 steps. */
#define ENG_HEAP_LEVELS_MAX 33u

static bool
eng_heap_less(const struct eng_heap_item *a, const struct eng_heap_item *b)
{
	return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static bool
eng_heap_resize(struct eng_heap *heap, uint32_t capacity)
{
	ENG_ASSERT(capacity >= heap->count);
	struct eng_heap_item *items = realloc(heap->items, (size_t)capacity * sizeof(*items));
	if (items == NULL)
		return false;
	heap->items = items;
	heap->capacity = capacity;
	return true;
}

static void
eng_heap_sift_up(struct eng_heap *heap, uint32_t at)
{
	struct eng_heap_item item = heap->items[at];
	for (uint32_t level = 0; at > 0 && level < ENG_HEAP_LEVELS_MAX; level++) {
		uint32_t parent = (at - 1u) / 2u;
		if (!eng_heap_less(&item, &heap->items[parent]))
			break;
		heap->items[at] = heap->items[parent];
		at = parent;
	}
	heap->items[at] = item;
}

static void
eng_heap_sift_down(struct eng_heap *heap, uint32_t at)
{
	struct eng_heap_item item = heap->items[at];
	uint32_t count = heap->count;
	for (uint32_t level = 0; level < ENG_HEAP_LEVELS_MAX; level++) {
		uint64_t left = 2u * (uint64_t)at + 1u;
		if (left >= count)
			break;
		uint32_t child = (uint32_t)left;
		if (child + 1u < count && eng_heap_less(&heap->items[child + 1u], &heap->items[child]))
			child++;
		if (!eng_heap_less(&heap->items[child], &item))
			break;
		heap->items[at] = heap->items[child];
		at = child;
	}
	heap->items[at] = item;
}

bool
eng_heap_push(struct eng_heap *heap, uint64_t key, void *ptr)
{
	ENG_ASSERT(heap != NULL);
	if (heap->count == heap->capacity) {
		if (heap->capacity >= UINT32_MAX / 2u)
			return false;
		uint32_t grown = heap->capacity == 0 ? ENG_HEAP_CAPACITY_MIN : 2u * heap->capacity;
		if (!eng_heap_resize(heap, grown))
			return false;
	}
	uint32_t at = heap->count++;
	heap->items[at] = (struct eng_heap_item){ .key = key, .seq = heap->next_seq++, .ptr = ptr };
	eng_heap_sift_up(heap, at);
	return true;
}

bool
eng_heap_peek(const struct eng_heap *heap, uint64_t *key, void **ptr)
{
	ENG_ASSERT(heap != NULL);
	if (heap->count == 0)
		return false;
	if (key != NULL)
		*key = heap->items[0].key;
	if (ptr != NULL)
		*ptr = heap->items[0].ptr;
	return true;
}

void *
eng_heap_pop(struct eng_heap *heap)
{
	ENG_ASSERT(heap != NULL);
	if (heap->count == 0)
		return NULL;
	void *top = heap->items[0].ptr;
	heap->count--;
	if (heap->count > 0) {
		heap->items[0] = heap->items[heap->count];
		eng_heap_sift_down(heap, 0);
	}
	uint32_t half = heap->capacity / 2u;
	if (heap->count <= heap->capacity / 4u && half >= ENG_HEAP_CAPACITY_MIN)
		(void)eng_heap_resize(heap, half); /* a failed shrink keeps the array */
	return top;
}

void
eng_heap_free(struct eng_heap *heap)
{
	ENG_ASSERT(heap != NULL);
	free(heap->items);
	*heap = (struct eng_heap){ 0 };
}
