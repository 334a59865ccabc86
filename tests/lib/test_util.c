/*
 * test_util.c - see test_util.h.
 */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring/ring.h"

void
test_scratch_dir(const char *name, char *out, size_t out_size)
{
	const char *base = getenv("RINGMAIL_TEST_TMP");
	if (base == NULL)
		base = getenv("RINGMAIL_BUILD_DIR");
	if (base == NULL)
		base = "/var/tmp";
	snprintf(out, out_size, "%s/test-scratch-%s-%d", base, name, (int)getpid());
	test_remove_tree(out);
	if (mkdir(out, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "cannot create %s: %s\n", out, strerror(errno));
		abort();
	}
}

static void
test_remove_tree_depth(const char *path, int depth)
{
	if (depth > 8)
		return;
	DIR *d = opendir(path);
	if (d == NULL) {
		(void)unlink(path);
		return;
	}
	struct dirent *ent;
	char child[1024];
	while ((ent = readdir(d)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, ent->d_name);
		struct stat st;
		if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
			test_remove_tree_depth(child, depth + 1);
		else
			(void)unlink(child);
	}
	closedir(d);
	(void)rmdir(path);
}

void
test_remove_tree(const char *path)
{
	test_remove_tree_depth(path, 0);
}

size_t
test_body(uint64_t n, size_t size, uint8_t *out, size_t out_size)
{
	int head = snprintf((char *)out, out_size,
			    "From: a@example.org\r\nTo: b@example.net\r\nSubject: message %llu\r\n\r\n",
			    (unsigned long long)n);
	size_t len = (size_t)head;
	uint64_t state = n * 2654435761u + 1;
	/* Text lines of 60 characters; a line starting with '.' is stuffed. */
	while (len + 72 + 5 < size && len + 72 + 5 < out_size) {
		uint64_t r = test_rand(&state);
		if ((r & 15) == 0) {
			out[len++] = '.';
			out[len++] = '.';
		}
		for (int i = 0; i < 60; i++)
			out[len++] = (uint8_t)('a' + (test_rand(&state) % 26));
		out[len++] = '\r';
		out[len++] = '\n';
	}
	memcpy(out + len, ".\r\n", 3);
	len += 3;
	return len;
}

struct ring *
test_ring_create(void)
{
	char err[256];
	struct ring_params params = { .sq_entries = 256, .cq_entries = 4096 };
	struct ring *ring = ring_create(&params, err, sizeof(err));
	if (ring == NULL)
		fprintf(stderr, "ring_create: %s\n", err);
	return ring;
}

bool
test_run_until(struct ring *ring, const bool *flag, uint32_t turns_max)
{
	for (uint32_t i = 0; i < turns_max && !*flag; i++) {
		if (ring_run_once(ring, 50ull * 1000ull * 1000ull) < 0)
			return false;
	}
	return *flag;
}
