/*
 * test_clock.c - engine/eng_clock.h: journaled retry times as monotonic
 * waits (SPL-11's clamping), the schedule's longest delay, and the test
 * clock file (an offset seen at once by eng_clock_realtime_ns).
 *
 * The test clock is process-wide and mapped once, so one test maps it
 * (its own Criterion process) and checks everything about it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_clock.h"
#include "engine/eng_common.h"

#define T_NS 1000000000ull
#define T_HOUR_NS (3600ull * T_NS)
#define T_DAY_NS (24ull * T_HOUR_NS)

Test(clock, retry_due_keeps_a_wait_within_the_schedule)
{
	uint64_t real = 1700000000ull * T_NS, mono = 5000ull * T_NS, max = 4 * T_HOUR_NS;
	/* Due in 10 minutes: 10 minutes from now on the monotonic clock. */
	cr_assert_eq(eng_clock_retry_due_ns(real + 600 * T_NS, real, mono, max), mono + 600 * T_NS);
	/* Exactly the longest delay: kept. */
	cr_assert_eq(eng_clock_retry_due_ns(real + max, real, mono, max), mono + max);
	/* Due now. */
	cr_assert_eq(eng_clock_retry_due_ns(real, real, mono, max), mono);
}

Test(clock, retry_due_clamps_times_left_ahead_by_a_backward_step)
{
	uint64_t real = 1700000000ull * T_NS, mono = 5000ull * T_NS, max = 4 * T_HOUR_NS;
	/* Written 5 minutes ahead, then the clock went back a day: the wait
	 * is the schedule's longest, not a day and 5 minutes. */
	uint64_t written = real + T_DAY_NS + 300 * T_NS;
	cr_assert_eq(eng_clock_retry_due_ns(written, real, mono, max), mono + max);
	/* Far future (UINT64_MAX) never overflows. */
	cr_assert_eq(eng_clock_retry_due_ns(UINT64_MAX, real, mono, max), mono + max);
	cr_assert_eq(eng_clock_retry_due_ns(UINT64_MAX, 0, UINT64_MAX - 5, UINT64_MAX),
		     UINT64_MAX);
}

Test(clock, retry_due_orders_overdue_times_and_saturates)
{
	uint64_t real = 1700000000ull * T_NS, mono = 5000ull * T_NS, max = 4 * T_HOUR_NS;
	/* A forward step leaves them overdue: due at once, oldest first. */
	uint64_t a = eng_clock_retry_due_ns(real - 10 * T_NS, real, mono, max);
	uint64_t b = eng_clock_retry_due_ns(real - 20 * T_NS, real, mono, max);
	cr_assert_eq(a, mono - 10 * T_NS);
	cr_assert_lt(b, a);
	/* Older than the monotonic clock itself (5 days after a 1 h uptime). */
	cr_assert_eq(eng_clock_retry_due_ns(real - 5 * T_DAY_NS, real, mono, max), 0);
	cr_assert_eq(eng_clock_retry_due_ns(0, real, mono, max), 0);
}

Test(clock, retry_max_is_the_longest_step_with_its_jitter)
{
	struct eng_engine e = { 0 };
	e.retry_count = 3;
	e.retry_schedule_ns[0] = 300 * T_NS;
	e.retry_schedule_ns[1] = 4 * T_HOUR_NS; /* not last: the longest still counts */
	e.retry_schedule_ns[2] = T_HOUR_NS;
	e.retry_jitter_permille = 200;
	cr_assert_eq(eng_clock_retry_max_ns(&e), 4 * T_HOUR_NS + 4 * T_HOUR_NS / 5);
	e.retry_jitter_permille = 0;
	cr_assert_eq(eng_clock_retry_max_ns(&e), 4 * T_HOUR_NS);
	/* Never below the 1 ms floor of a retry delay. */
	e.retry_count = 1;
	e.retry_schedule_ns[0] = 0;
	cr_assert_eq(eng_clock_retry_max_ns(&e), 1000000ull);
	/* Every delay the schedule gives is within it. */
	struct eng_config *cfg = calloc(1, sizeof(*cfg));
	cr_assert_not_null(cfg);
	cfg->engine.retry_count = 2;
	cfg->engine.retry_schedule_ns[0] = 30 * T_NS;
	cfg->engine.retry_schedule_ns[1] = 600 * T_NS;
	cfg->engine.retry_jitter_permille = 500;
	uint64_t max = eng_clock_retry_max_ns(&cfg->engine);
	uint32_t randoms[] = { 0u, 1u, 0x80000000u, UINT32_MAX };
	for (uint32_t deferrals = 1; deferrals <= 4; deferrals++)
		for (size_t i = 0; i < ENG_ARRAY_COUNT(randoms); i++)
			cr_assert_leq(eng_config_retry_delay_ns(cfg, deferrals, randoms[i]), max);
	free(cfg);
}

static void
t_write_offset(const char *path, int64_t offset_ns)
{
	int fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, &offset_ns, sizeof(offset_ns), 0), (ssize_t)sizeof(offset_ns));
	close(fd);
}

Test(clock, test_file_steps_the_wall_clock_only)
{
	char err[256];
	cr_assert_eq(eng_clock_test_open("/nonexistent/clock", err, sizeof(err)), -ENOENT);
	cr_assert_not_null(strstr(err, "RINGMAIL_TEST_CLOCK_FILE"), "%s", err);
	char path[] = "/tmp/ringmail-clock-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	/* Too short: refused, nothing mapped. */
	cr_assert_eq(write(fd, "1234", 4), 4);
	cr_assert_eq(eng_clock_test_open(path, err, sizeof(err)), -EINVAL, "%s", err);
	int64_t zero = 0;
	cr_assert_eq(pwrite(fd, &zero, sizeof(zero), 0), (ssize_t)sizeof(zero));
	close(fd);
	cr_assert_eq(eng_clock_test_open(path, err, sizeof(err)), 0, "%s", err);

	uint64_t raw = eng_now_realtime_ns();
	uint64_t mono = eng_now_monotonic_ns();
	cr_assert_lt(eng_clock_realtime_ns() - raw, 60 * T_NS);
	t_write_offset(path, (int64_t)(5 * T_DAY_NS));
	uint64_t ahead = eng_clock_realtime_ns();
	cr_assert_geq(ahead, raw + 5 * T_DAY_NS);
	cr_assert_lt(ahead, raw + 5 * T_DAY_NS + 60 * T_NS);
	t_write_offset(path, -(int64_t)T_HOUR_NS);
	uint64_t behind = eng_clock_realtime_ns();
	cr_assert_lt(behind, raw - T_HOUR_NS + 60 * T_NS);
	cr_assert_geq(behind, raw - T_HOUR_NS);
	/* The monotonic clock never moved with it. */
	cr_assert_lt(eng_now_monotonic_ns() - mono, 60 * T_NS);
	unlink(path); /* the mapping keeps working */
	cr_assert_geq(eng_clock_realtime_ns(), raw - T_HOUR_NS);
}
