/*
 * test_util.h - helpers shared by the spool tests: scratch directories on a
 * real (O_DIRECT-capable) filesystem, deterministic message bodies, and a
 * loop driver.
 */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

struct ring;

/* A fresh directory under $RINGMAIL_TEST_TMP or the build dir, or /var/tmp
 * (tmpfs has no O_DIRECT). out holds at least 256 bytes. */
void test_scratch_dir(const char *name, char *out, size_t out_size);
/* rm -rf path (bounded depth). */
void test_remove_tree(const char *path);

/* Deterministic wire-form body for message number n of about size bytes:
 * header lines, text lines, ends with CRLF.CRLF. Returns its length. */
size_t test_body(uint64_t n, size_t size, uint8_t *out, size_t out_size);

/* A ring for a test, or NULL (the test should skip). */
struct ring *test_ring_create(void);

/* Run the ring until *flag is true or turns_max turns passed. */
bool test_run_until(struct ring *ring, const bool *flag, uint32_t turns_max);

/* xorshift64* PRNG. */
static inline uint64_t
test_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

#endif /* TEST_UTIL_H */
