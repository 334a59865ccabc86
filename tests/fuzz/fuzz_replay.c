/*
 * fuzz_replay.c - main() for a harness without libFuzzer: runs
 * LLVMFuzzerTestOneInput on every file named on the command line (or in a
 * directory named there, sorted by name) and prints TAP, one line per
 * argument. meson links it with each harness so the committed corpus
 * (tests/fuzz/corpus/<harness>/) is a regression test in the normal gcc
 * and ASan builds (docs/fuzzing.md). A failing invariant aborts, so the
 * "# input:" comment just before the abort names the input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

#define REPLAY_FILES_MAX 65536u /* a long fuzz run's corpus; more is an error */
#define REPLAY_INPUT_MAX (16u * 1024u * 1024u)

static int
replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	size_t len;

	if (f == NULL) {
		printf("# %s: %s\n", path, strerror(errno));
		return -1;
	}
	buf = malloc(REPLAY_INPUT_MAX);
	if (buf == NULL) {
		fclose(f);
		return -1;
	}
	len = fread(buf, 1, REPLAY_INPUT_MAX, f);
	fclose(f);
	printf("# input: %s (%zu bytes)\n", path, len);
	fflush(stdout);
	/* Exactly len bytes, so an over-read is caught under ASan. */
	uint8_t *exact = malloc(len > 0 ? len : 1);
	if (exact == NULL) {
		free(buf);
		return -1;
	}
	memcpy(exact, buf, len);
	free(buf);
	(void)LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	return 0;
}

static int
name_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file in dir, sorted; returns the count or -1. */
static int
replay_dir(const char *dir)
{
	static char *names[REPLAY_FILES_MAX];
	size_t count = 0;
	int done = 0;
	int is_truncated = 0;
	DIR *d = opendir(dir);
	struct dirent *entry;

	if (d == NULL)
		return -1;
	while ((entry = readdir(d)) != NULL) {
		if (entry->d_name[0] == '.')
			continue;
		if (count == REPLAY_FILES_MAX) {
			printf("# %s: more than %u files, the rest not replayed\n", dir,
			       REPLAY_FILES_MAX);
			is_truncated = 1;
			break;
		}
		size_t size = strlen(dir) + strlen(entry->d_name) + 2;
		names[count] = malloc(size);
		if (names[count] == NULL)
			break;
		snprintf(names[count], size, "%s/%s", dir, entry->d_name);
		count++;
	}
	closedir(d);
	qsort(names, count, sizeof(names[0]), name_compare);
	for (size_t i = 0; i < count; i++) {
		if (replay_file(names[i]) == 0)
			done++;
		else
			done = -1 - (int)count;
		free(names[i]);
	}
	return done < 0 || is_truncated ? -1 : done;
}

int
main(int argc, char **argv)
{
	int failed = 0;

	printf("1..%d\n", argc - 1);
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int n;

		if (stat(argv[i], &st) != 0)
			n = -1;
		else if (S_ISDIR(st.st_mode))
			n = replay_dir(argv[i]);
		else
			n = replay_file(argv[i]) == 0 ? 1 : -1;
		if (n <= 0) {
			printf("not ok %d - %s: no input replayed\n", i, argv[i]);
			failed = 1;
		} else {
			printf("ok %d - %s: %d inputs, every invariant held\n", i, argv[i], n);
		}
	}
	return failed;
}
