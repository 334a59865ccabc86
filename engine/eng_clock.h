/*
 * eng_clock.h - the engine's wall clock, its test offset, and the
 * conversion of journaled retry times to the monotonic retry schedule.
 *
 * Two clocks, two jobs (docs/engine.md "Bodies and the retry heap", Clocks):
 * - Wall clock (eng_clock_realtime_ns): what is persisted or shown.
 *   Reception times, retry times in the journal (they survive a restart),
 *   delivery-log times, and expiry: a recipient expires when the wall
 *   clock passes reception + max_queue_lifetime, so a clock stepped
 *   forward past that moment expires it at its next attempt.
 * - Monotonic clock (eng_now_monotonic_ns): how long to wait. The retry
 *   heap is keyed by it, so a wall-clock step (NTP, an operator) neither
 *   makes every deferred recipient due at once nor holds them back by the
 *   size of a backward step. Only at recovery is a journaled wall-clock
 *   retry time turned into a wait (eng_clock_retry_due_ns); one lying
 *   further ahead than the schedule's longest delay (the clock went back
 *   since it was written) waits that longest delay instead.
 *
 * Test hook (SPL-11): when RINGMAIL_TEST_CLOCK_FILE names a file at
 * start-up, eng_clock_test_open maps its first 8 bytes, a little-endian
 * signed count of nanoseconds added to every eng_clock_realtime_ns. A test
 * steps the daemon's wall clock by writing the 8 bytes (one pwrite); the
 * monotonic clock is not touched, as with a real step. The daemon says so
 * on stderr at start-up. Nothing else reads the variable.
 *
 * Engine code reads the wall clock through eng_clock_realtime_ns, never
 * eng_now_realtime_ns directly, so that the hook sees every reader.
 */
#ifndef ENG_CLOCK_H
#define ENG_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "eng_config.h"

/* The variable naming the test clock file (tests only). */
#define ENG_CLOCK_TEST_ENV "RINGMAIL_TEST_CLOCK_FILE"

/* Wall clock in ns since the epoch, plus the test offset if one is mapped. */
uint64_t eng_clock_realtime_ns(void);

/* Map path's first 8 bytes as the wall-clock offset. Call once, before any
 * shard thread starts. 0, or -errno with one line in err. */
int eng_clock_test_open(const char *path, char *err, size_t err_size);

/* eng_clock_test_open on $RINGMAIL_TEST_CLOCK_FILE if it is set and not
 * empty: 1 (mapped), 0 (not set) or -errno with one line in err. */
int eng_clock_test_open_env(char *err, size_t err_size);

/* The monotonic retry key for a wall-clock retry time due_real_ns, read
 * when the clocks showed real_now_ns and mono_now_ns: as far ahead (or
 * behind) of mono_now_ns as due_real_ns is of real_now_ns, but never more
 * than max_delay_ns ahead. Saturates at 0 (due long ago). */
uint64_t eng_clock_retry_due_ns(uint64_t due_real_ns, uint64_t real_now_ns, uint64_t mono_now_ns,
				uint64_t max_delay_ns);

/* The longest delay eng_config_retry_delay_ns can return for e: its
 * longest step plus that step's jitter. */
uint64_t eng_clock_retry_max_ns(const struct eng_engine *e);

#endif /* ENG_CLOCK_H */
