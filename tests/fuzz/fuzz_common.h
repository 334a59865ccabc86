/*
 * fuzz_common.h - shared helpers for the libFuzzer harnesses in tests/fuzz/
 * (docs/fuzzing.md).
 *
 * Every harness defines LLVMFuzzerTestOneInput. Built by tests/fuzz/run-fuzz
 * with clang -fsanitize=fuzzer,address,undefined for exploration, and by
 * meson (tests/fuzz/meson.build) with fuzz_replay.c as main() so the
 * committed corpus is replayed as a regression test in the gcc builds.
 *
 * FUZZ_CHECK is an invariant beyond "no crash": on failure it names the
 * condition and aborts, which libFuzzer reports as a crash and saves the
 * input. Harness state is per input (reset at the top of every call), so a
 * saved input reproduces on its own.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, what)                                                              \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "fuzz invariant failed: %s (%s:%d): %s\n", #cond,   \
				__FILE__, __LINE__, (what));                                \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* A cursor over the fuzz input: takes bytes from the front, 0 when empty. */
struct fuzz_cursor {
	const uint8_t *data;
	size_t size;
	size_t pos;
};

static inline uint8_t
fuzz_take_u8(struct fuzz_cursor *cur)
{
	if (cur->pos >= cur->size)
		return 0;
	return cur->data[cur->pos++];
}

static inline uint16_t
fuzz_take_u16(struct fuzz_cursor *cur)
{
	uint16_t hi = fuzz_take_u8(cur);

	return (uint16_t)((hi << 8) | fuzz_take_u8(cur));
}

static inline size_t
fuzz_left(const struct fuzz_cursor *cur)
{
	return cur->pos < cur->size ? cur->size - cur->pos : 0;
}

/* Split pattern: chunk i of a stream is pattern[i % FUZZ_SPLIT_COUNT]
 * bytes; 0 means "everything that is left". */
#define FUZZ_SPLIT_COUNT 4u

static inline size_t
fuzz_split_next(const uint8_t pattern[FUZZ_SPLIT_COUNT], uint32_t chunk_index, size_t left)
{
	size_t want = pattern[chunk_index % FUZZ_SPLIT_COUNT];

	return want == 0 || want > left ? left : want;
}

/* FNV-1a, to compare texts between two parses cheaply. */
static inline uint64_t
fuzz_hash(const void *ptr, size_t len)
{
	const uint8_t *p = ptr;
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

#endif /* FUZZ_COMMON_H */
