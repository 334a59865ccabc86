/*
 * test_logfile.c - engine/eng_logfile: the delivery log through the ring.
 *
 * Two eng_logfile on one shared file (two "shards" on one test ring):
 * every line arrives whole and once; a tiny max_size rotates into
 * log.1 .. log.keep and, with keep large enough, no line is lost across
 * the files; keep bounds the files left; a reopen request (SIGHUP) makes
 * each writer follow a moved file; lines appended past a full buffer are
 * written synchronously, never dropped.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/eng_logfile.h"
#include "ring/ring.h"

#define T_LINES 2000u

static char t_dir[256];

static void
t_setup(void)
{
	snprintf(t_dir, sizeof(t_dir), "/tmp/ringmail-logfile-XXXXXX");
	cr_assert_not_null(mkdtemp(t_dir));
}

static void
t_teardown(void)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
	cr_assert_eq(system(cmd), 0);
}

static struct ring *
t_ring(void)
{
	char err[256] = "";
	struct ring_params params = { .sq_entries = 64, .cq_entries = 256 };
	struct ring *ring = ring_create(&params, err, sizeof(err));
	if (ring == NULL)
		cr_skip_test("io_uring unusable here: %s", err);
	return ring;
}

/* Count lines "w<writer> <n>\n" in one file into seen[writer][n]. */
static uint32_t
t_count_file(const char *path, uint8_t seen[2][T_LINES])
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	char line[128];
	uint32_t count = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned w = 0, i = 0;
		char pad[64];
		cr_assert_eq(sscanf(line, "w%u %u %63s", &w, &i, pad), 3, "torn line: %s", line);
		cr_assert(w < 2 && i < T_LINES);
		seen[w][i]++;
		count++;
	}
	fclose(f);
	return count;
}

static void
t_append(struct eng_logfile *lf, unsigned writer, unsigned i)
{
	char line[96];
	int n = snprintf(line, sizeof(line), "w%u %u %s\n", writer, i,
			 "padding-padding-padding-padding-padding");
	eng_logfile_append(lf, line, (size_t)n);
}

/* Write T_LINES per writer; every 50 lines the ring runs until idle. */
static void
t_write_all(struct ring *ring, struct eng_logfile lf[2])
{
	for (unsigned i = 0; i < T_LINES; i++) {
		t_append(&lf[0], 0, i);
		t_append(&lf[1], 1, i);
		if (i % 50 != 49)
			continue;
		/* A loop turn, then until both are idle (rotation included). */
		cr_assert_geq(ring_run_once(ring, 0), 0);
		for (int t = 0; t < 1000 && (eng_logfile_is_busy(&lf[0]) ||
					     eng_logfile_is_busy(&lf[1])); t++)
			cr_assert_geq(ring_run_once(ring, 10u * 1000u * 1000u), 0);
	}
	eng_logfile_close(&lf[0]);
	eng_logfile_close(&lf[1]);
}

static void
t_check_all_once(const char *path, uint32_t keep)
{
	static uint8_t seen[2][T_LINES];
	memset(seen, 0, sizeof(seen));
	uint32_t total = t_count_file(path, seen);
	char name[512];
	for (uint32_t k = 1; k <= keep + 1; k++) {
		snprintf(name, sizeof(name), "%s.%u", path, k);
		total += t_count_file(name, seen);
	}
	cr_assert_eq(total, 2 * T_LINES);
	for (unsigned w = 0; w < 2; w++)
		for (unsigned i = 0; i < T_LINES; i++)
			cr_assert_eq(seen[w][i], 1, "line w%u %u seen %u times", w, i, seen[w][i]);
}

Test(logfile, two_writers_one_file, .init = t_setup, .fini = t_teardown)
{
	struct ring *ring = t_ring();
	static struct eng_logfile_shared shared;
	static struct eng_logfile lf[2];
	char path[300], err[256];
	snprintf(path, sizeof(path), "%s/delivery.log", t_dir);
	eng_logfile_shared_init(&shared, path, 0, 5);
	cr_assert_eq(eng_logfile_open(&lf[0], ring, &shared, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(eng_logfile_open(&lf[1], ring, &shared, err, sizeof(err)), 0, "%s", err);
	t_write_all(ring, lf);
	t_check_all_once(path, 0);
	struct stat st;
	snprintf(path, sizeof(path), "%s/delivery.log.1", t_dir);
	cr_assert_eq(stat(path, &st), -1, "no rotation without max_size");
	ring_destroy(ring);
}

Test(logfile, rotation_loses_nothing, .init = t_setup, .fini = t_teardown)
{
	struct ring *ring = t_ring();
	static struct eng_logfile_shared shared;
	static struct eng_logfile lf[2];
	char path[300], err[256];
	snprintf(path, sizeof(path), "%s/delivery.log", t_dir);
	/* 4000 lines of ~50 bytes, 8 KiB per file: about 25 rotations. */
	eng_logfile_shared_init(&shared, path, 8192, 100);
	cr_assert_eq(eng_logfile_open(&lf[0], ring, &shared, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(eng_logfile_open(&lf[1], ring, &shared, err, sizeof(err)), 0, "%s", err);
	t_write_all(ring, lf);
	char name[320];
	snprintf(name, sizeof(name), "%s.5", path);
	struct stat st;
	cr_assert_eq(stat(name, &st), 0, "rotated at least 5 times");
	t_check_all_once(path, 100);
	ring_destroy(ring);
}

Test(logfile, keep_bounds_the_files, .init = t_setup, .fini = t_teardown)
{
	struct ring *ring = t_ring();
	static struct eng_logfile_shared shared;
	static struct eng_logfile lf[2];
	char path[300], err[256], name[320];
	snprintf(path, sizeof(path), "%s/delivery.log", t_dir);
	eng_logfile_shared_init(&shared, path, 8192, 3);
	cr_assert_eq(eng_logfile_open(&lf[0], ring, &shared, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(eng_logfile_open(&lf[1], ring, &shared, err, sizeof(err)), 0, "%s", err);
	t_write_all(ring, lf);
	struct stat st;
	for (unsigned k = 1; k <= 3; k++) {
		snprintf(name, sizeof(name), "%s.%u", path, k);
		cr_assert_eq(stat(name, &st), 0, "%s kept", name);
	}
	snprintf(name, sizeof(name), "%s.4", path);
	cr_assert_eq(stat(name, &st), -1, "only keep = 3 rotated files");
	ring_destroy(ring);
}

Test(logfile, reopen_follows_a_moved_file, .init = t_setup, .fini = t_teardown)
{
	struct ring *ring = t_ring();
	static struct eng_logfile_shared shared;
	static struct eng_logfile lf;
	char path[300], moved[320], err[256];
	snprintf(path, sizeof(path), "%s/delivery.log", t_dir);
	snprintf(moved, sizeof(moved), "%s/moved.log", t_dir);
	eng_logfile_shared_init(&shared, path, 0, 1);
	cr_assert_eq(eng_logfile_open(&lf, ring, &shared, err, sizeof(err)), 0, "%s", err);
	eng_logfile_append(&lf, "before\n", 7);
	for (int i = 0; i < 100 && eng_logfile_is_busy(&lf); i++)
		cr_assert_geq(ring_run_once(ring, 10u * 1000u * 1000u), 0);
	cr_assert_eq(rename(path, moved), 0); /* logrotate */
	eng_logfile_shared_reopen(&shared);   /* SIGHUP */
	eng_logfile_append(&lf, "after\n", 6);
	eng_logfile_close(&lf);
	struct stat st;
	cr_assert_eq(stat(moved, &st), 0);
	cr_assert_eq(st.st_size, 7, "the old file keeps its line only");
	cr_assert_eq(stat(path, &st), 0, "a new file was opened");
	cr_assert_eq(st.st_size, 6);
	ring_destroy(ring);
}

Test(logfile, full_buffers_never_drop, .init = t_setup, .fini = t_teardown)
{
	struct ring *ring = t_ring();
	static struct eng_logfile_shared shared;
	static struct eng_logfile lf;
	static char big[4096];
	char path[300], err[256];
	snprintf(path, sizeof(path), "%s/delivery.log", t_dir);
	eng_logfile_shared_init(&shared, path, 0, 1);
	cr_assert_eq(eng_logfile_open(&lf, ring, &shared, err, sizeof(err)), 0, "%s", err);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\n';
	/* 2 MiB without a loop turn: eight buffers' worth. */
	for (unsigned i = 0; i < 512; i++)
		eng_logfile_append(&lf, big, sizeof(big));
	cr_assert_gt(lf.stats.sync_writes, 0);
	eng_logfile_close(&lf);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_size, 512 * (off_t)sizeof(big));
	ring_destroy(ring);
}
