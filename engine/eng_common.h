/*
 * eng_common.h - assertions, poisoned functions and small helpers shared by
 * every ringmail module.
 *
 * ENG_ASSERT is always on, in release builds too (TigerBeetle, HAProxy
 * BUG_ON): a failed assertion is a programmer error and aborts with the
 * file, line and expression. Peer input is never asserted on; it is
 * validated and rejected. ENG_DEBUG_ASSERT is for O(n) checks only.
 */
#ifndef ENG_COMMON_H
#define ENG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noreturn, cold)) static inline void
eng_assert_fail(const char *expr, const char *file, int line)
{
	fprintf(stderr, "ringmail: assertion failed: %s (%s:%d)\n", expr, file, line);
	abort();
}

#define ENG_ASSERT(x) \
	((__builtin_expect(!!(x), 1)) ? (void)0 : eng_assert_fail(#x, __FILE__, __LINE__))

/* An impossible path: always aborts with the reason. */
#define ENG_PANIC(why) eng_assert_fail(why, __FILE__, __LINE__)

#ifdef ENG_DEBUG
#define ENG_DEBUG_ASSERT(x) ENG_ASSERT(x)
#else
#define ENG_DEBUG_ASSERT(x) ((void)0)
#endif

#define ENG_WARN_UNUSED __attribute__((warn_unused_result))
#define ENG_ARRAY_COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define ENG_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ENG_ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define ENG_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ENG_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Container of an intrusive member. */
#define ENG_CONTAINER_OF(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Forbidden: unbounded string functions (HAProxy core principles). */
#pragma GCC poison strcpy strcat sprintf gets

/* Monotonic and wall clocks in nanoseconds. Engine code reads the wall
 * clock through eng_clock_realtime_ns() (eng_clock.h: the test offset). */
#include <time.h>
static inline uint64_t
eng_now_monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t
eng_now_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif /* ENG_COMMON_H */
