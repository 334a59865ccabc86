/*
 * eng_clock.c - the engine's wall clock with its test offset, and retry
 * times between the journal (wall clock) and the heap (monotonic); see
 * eng_clock.h for which clock is used for what.
 *
 * Ownership: the test mapping is made once by the main thread before the
 * shards start (thread creation publishes it) and lives until exit; the
 * shards only read through it.
 */
#include "eng_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eng_common.h"

/* Reads of the mapped offset until two agree: a writer's 8 bytes are not
 * guaranteed to land in one store. */
#define ENG_CLOCK_STABLE_READS 8u
#define ENG_CLOCK_MIN_DELAY_NS 1000000ull /* eng_config_retry_delay_ns's floor */

/* NULL unless a test clock file is mapped. */
static const int64_t *eng_clock_test_offset;

static int64_t
eng_clock_test_offset_ns(const int64_t *mapped)
{
	int64_t value = __atomic_load_n(mapped, __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < ENG_CLOCK_STABLE_READS; i++) {
		int64_t again = __atomic_load_n(mapped, __ATOMIC_RELAXED);
		if (again == value)
			break;
		value = again;
	}
	return value;
}

uint64_t
eng_clock_realtime_ns(void)
{
	uint64_t now_ns = eng_now_realtime_ns();
	const int64_t *mapped = eng_clock_test_offset;
	if (mapped == NULL)
		return now_ns;
	int64_t offset_ns = eng_clock_test_offset_ns(mapped);
	/* Wraps only for offsets beyond the epoch: a test's mistake. */
	return now_ns + (uint64_t)offset_ns;
}

int
eng_clock_test_open(const char *path, char *err, size_t err_size)
{
	ENG_ASSERT(path != NULL && err != NULL && err_size > 0);
	ENG_ASSERT(eng_clock_test_offset == NULL);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(err, err_size, "%s=%s: %s", ENG_CLOCK_TEST_ENV, path, strerror(e));
		return -e;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(int64_t)) {
		snprintf(err, err_size, "%s=%s: needs 8 bytes (a little-endian int64 of ns)",
			 ENG_CLOCK_TEST_ENV, path);
		close(fd);
		return -EINVAL;
	}
	void *map = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
	int e = errno;
	close(fd); /* the mapping keeps the file */
	if (map == MAP_FAILED) {
		snprintf(err, err_size, "%s=%s: mmap: %s", ENG_CLOCK_TEST_ENV, path, strerror(e));
		return -e;
	}
	eng_clock_test_offset = map;
	return 0;
}

int
eng_clock_test_open_env(char *err, size_t err_size)
{
	const char *path = getenv(ENG_CLOCK_TEST_ENV);
	if (path == NULL || path[0] == '\0')
		return 0;
	int rc = eng_clock_test_open(path, err, err_size);
	return rc < 0 ? rc : 1;
}

uint64_t
eng_clock_retry_due_ns(uint64_t due_real_ns, uint64_t real_now_ns, uint64_t mono_now_ns,
		       uint64_t max_delay_ns)
{
	if (due_real_ns >= real_now_ns) {
		uint64_t wait_ns = ENG_MIN(due_real_ns - real_now_ns, max_delay_ns);
		return mono_now_ns + ENG_MIN(wait_ns, UINT64_MAX - mono_now_ns);
	}
	/* Overdue: behind mono_now_ns by as much, so the oldest go first. */
	uint64_t late_ns = real_now_ns - due_real_ns;
	return late_ns < mono_now_ns ? mono_now_ns - late_ns : 0;
}

uint64_t
eng_clock_retry_max_ns(const struct eng_engine *e)
{
	ENG_ASSERT(e != NULL);
	ENG_ASSERT(e->retry_count >= 1 && e->retry_count <= ENG_CONFIG_RETRY_STEPS_MAX);
	ENG_ASSERT(e->retry_jitter_permille <= 1000);
	uint64_t longest_ns = 0;
	for (uint32_t i = 0; i < e->retry_count; i++)
		longest_ns = ENG_MAX(longest_ns, e->retry_schedule_ns[i]);
	/* Steps are <= 30 days (eng_config), so the product fits. */
	uint64_t spread_ns = longest_ns * e->retry_jitter_permille / 1000u;
	return ENG_MAX(longest_ns + spread_ns, ENG_CLOCK_MIN_DELAY_NS);
}
