/*
 * bench_util.c - see bench_util.h.
 *
 * The body generator mirrors the shape of the spool tests' bodies (header
 * lines, 60-character text lines, dot-stuffing, CRLF.CRLF) but makes the
 * body exactly the size asked for, so a benchmark's record size is a round
 * number and its padding per commit is predictable.
 */
#include "bench_util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>

#include "engine/eng_common.h"

#define BENCH_LINE_CHARS_MAX 60u
#define BENCH_BODY_END_SIZE 3u /* ".\r\n" after the last line's CRLF */
#define BENCH_REMOVE_DEPTH_MAX 8
#define BENCH_TASKS_MAX 4096u

uint64_t
bench_now_ns(void)
{
	struct timespec ts;
	int ret = clock_gettime(CLOCK_MONOTONIC, &ts);
	ENG_ASSERT(ret == 0);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t
bench_cpu_ns(void)
{
	struct rusage ru;
	int ret = getrusage(RUSAGE_SELF, &ru);
	ENG_ASSERT(ret == 0);
	uint64_t us = (uint64_t)ru.ru_utime.tv_sec * 1000000ull + (uint64_t)ru.ru_utime.tv_usec +
		      (uint64_t)ru.ru_stime.tv_sec * 1000000ull + (uint64_t)ru.ru_stime.tv_usec;
	return us * 1000ull;
}

uint64_t
bench_rand(uint64_t *state)
{
	ENG_ASSERT(state != NULL);
	ENG_ASSERT(*state != 0);
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint64_t
bench_fnv1a(uint64_t hash, const void *data, size_t len)
{
	const uint8_t *p = data;
	ENG_ASSERT(p != NULL || len == 0);
	for (size_t i = 0; i < len; i++) {
		hash ^= p[i];
		hash *= 0x100000001b3ull;
	}
	return hash;
}

/* One text line of exactly chars characters plus CRLF at out. */
static void
bench_body_line(uint64_t *state, uint8_t *out, uint32_t chars)
{
	ENG_ASSERT(chars <= BENCH_LINE_CHARS_MAX);
	ENG_ASSERT(out != NULL);
	uint32_t at = 0;
	if (chars >= 2 && (bench_rand(state) & 15u) == 0) {
		/* A line starting with '.' travels dot-stuffed (RFC 5321 4.5.2). */
		out[at++] = '.';
		out[at++] = '.';
	}
	while (at < chars) {
		uint64_t r = bench_rand(state) % 27u;
		out[at++] = r == 26u ? (uint8_t)' ' : (uint8_t)('a' + r);
	}
	out[at++] = '\r';
	out[at++] = '\n';
}

uint32_t
bench_body_make(uint64_t seed, uint64_t n, uint32_t size, uint8_t *out, size_t out_size)
{
	ENG_ASSERT(out != NULL);
	if (size < BENCH_BODY_SIZE_MIN || size > out_size)
		return 0;
	int head = snprintf((char *)out, out_size,
			    "From: bench@example.org\r\nTo: rcpt@example.net\r\n"
			    "Subject: bench %016llx\r\n\r\n",
			    (unsigned long long)n);
	ENG_ASSERT(head > 0 && (uint32_t)head + BENCH_BODY_END_SIZE + 2u < size);
	uint64_t state = (seed ^ (n * 0x9e3779b97f4a7c15ull)) | 1u;
	uint32_t at = (uint32_t)head;
	uint32_t text_end = size - BENCH_BODY_END_SIZE;
	/* Every line is chars + CRLF; never leave a single byte behind. */
	for (uint32_t lines = 0; at < text_end; lines++) {
		ENG_ASSERT(lines <= size);
		uint32_t left = text_end - at;
		uint32_t chars = ENG_MIN(BENCH_LINE_CHARS_MAX, left - 2u);
		if (left - chars - 2u == 1u)
			chars--;
		bench_body_line(&state, out + at, chars);
		at += chars + 2u;
	}
	ENG_ASSERT(at == text_end);
	memcpy(out + at, ".\r\n", BENCH_BODY_END_SIZE);
	ENG_ASSERT(memcmp(out + size - 5u, "\r\n.\r\n", 5) == 0);
	return size;
}

static int
bench_u32_compare(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a;
	uint32_t y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

int
bench_samples_init(struct bench_samples *samples, uint64_t capacity)
{
	ENG_ASSERT(samples != NULL);
	ENG_ASSERT(capacity > 0);
	memset(samples, 0, sizeof(*samples));
	/* Untouched pages of a large calloc cost nothing until used. */
	samples->ns = calloc(capacity, sizeof(*samples->ns));
	if (samples->ns == NULL)
		return -ENOMEM;
	samples->capacity = capacity;
	samples->sorted = true;
	return 0;
}

void
bench_samples_free(struct bench_samples *samples)
{
	ENG_ASSERT(samples != NULL);
	free(samples->ns);
	memset(samples, 0, sizeof(*samples));
}

void
bench_samples_add(struct bench_samples *samples, uint64_t ns)
{
	ENG_ASSERT(samples->ns != NULL);
	ENG_ASSERT(samples->count <= samples->capacity);
	if (samples->count == samples->capacity) {
		samples->dropped++;
		return;
	}
	samples->ns[samples->count++] = (uint32_t)ENG_MIN(ns, (uint64_t)UINT32_MAX);
	samples->sorted = false;
}

double
bench_samples_quantile_us(struct bench_samples *samples, double p)
{
	ENG_ASSERT(p >= 0.0 && p <= 1.0);
	ENG_ASSERT(samples != NULL);
	uint64_t count = samples->count;
	if (count == 0)
		return 0.0;
	if (!samples->sorted) {
		qsort(samples->ns, count, sizeof(*samples->ns), bench_u32_compare);
		samples->sorted = true;
	}
	double rank = p * (double)count;
	uint64_t index = (uint64_t)rank;
	if ((double)index == rank && index > 0)
		index--; /* nearest rank: ceil(p * n) - 1 */
	if (index >= count)
		index = count - 1;
	return (double)samples->ns[index] / 1000.0;
}

int
bench_dir_make(const char *path)
{
	ENG_ASSERT(path != NULL);
	ENG_ASSERT(path[0] != '\0');
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
bench_dir_make_fresh(const char *base, const char *name, char *out, size_t out_size)
{
	ENG_ASSERT(base != NULL && name != NULL);
	ENG_ASSERT(out != NULL && out_size > 0);
	int n = snprintf(out, out_size, "%s/%s-%d", base, name, (int)getpid());
	if (n < 0 || (size_t)n >= out_size)
		return -ENAMETOOLONG;
	bench_dir_remove(out);
	return bench_dir_make(out);
}

static void
bench_dir_remove_depth(const char *path, int depth)
{
	char child[PATH_MAX];
	ENG_ASSERT(path != NULL);
	if (depth > BENCH_REMOVE_DEPTH_MAX)
		return;
	DIR *d = opendir(path);
	if (d == NULL) {
		(void)unlink(path);
		return;
	}
	struct dirent *ent;
	while ((ent = readdir(d)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, ent->d_name);
		struct stat st;
		if (lstat(child, &st) == 0 && S_ISDIR(st.st_mode))
			bench_dir_remove_depth(child, depth + 1);
		else
			(void)unlink(child);
	}
	closedir(d);
	(void)rmdir(path);
}

void
bench_dir_remove(const char *path)
{
	ENG_ASSERT(path != NULL);
	ENG_ASSERT(strcmp(path, "/") != 0);
	bench_dir_remove_depth(path, 0);
}

uint32_t
bench_dir_remove_stale(const char *base, const char *name)
{
	char path[PATH_MAX];
	ENG_ASSERT(base != NULL && name != NULL);
	size_t name_len = strlen(name);
	uint32_t removed = 0;
	DIR *d = opendir(base);
	if (d == NULL)
		return 0;
	struct dirent *ent;
	for (uint32_t seen = 0; (ent = readdir(d)) != NULL && seen < BENCH_TASKS_MAX; seen++) {
		if (strncmp(ent->d_name, name, name_len) != 0 || ent->d_name[name_len] != '-')
			continue;
		char *end = NULL;
		long pid = strtol(ent->d_name + name_len + 1, &end, 10);
		if (pid <= 0 || end == NULL || *end != '\0' || pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld", pid);
		if (access(path, F_OK) == 0)
			continue; /* still running */
		snprintf(path, sizeof(path), "%s/%s", base, ent->d_name);
		bench_dir_remove(path);
		removed++;
	}
	closedir(d);
	return removed;
}

int
bench_dir_sync(const char *path)
{
	ENG_ASSERT(path != NULL);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return ret;
}

bool
bench_dir_is_volatile(const char *path)
{
	ENG_ASSERT(path != NULL);
	struct statfs st;
	if (statfs(path, &st) != 0)
		return false;
	return st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
}

/* The filesystem type of the longest mount point that is a prefix of dir. */
static void
bench_fs_type(const char *dir, char *out, size_t out_size)
{
	char real[PATH_MAX];
	size_t best = 0;
	snprintf(out, out_size, "unknown");
	if (realpath(dir, real) == NULL)
		return;
	FILE *f = setmntent("/proc/self/mounts", "r");
	if (f == NULL)
		return;
	struct mntent *m;
	while ((m = getmntent(f)) != NULL) {
		size_t len = strlen(m->mnt_dir);
		bool prefix = strncmp(real, m->mnt_dir, len) == 0 &&
			      (len == 1 || real[len] == '/' || real[len] == '\0');
		if (prefix && len >= best) {
			best = len;
			snprintf(out, out_size, "%s (%s)", m->mnt_type, m->mnt_fsname);
		}
	}
	endmntent(f);
}

static void
bench_cpu_model(char *out, size_t out_size)
{
	char line[512];
	snprintf(out, out_size, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "model name", 10) != 0)
			continue;
		const char *colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		colon++;
		while (*colon == ' ' || *colon == '\t')
			colon++;
		snprintf(out, out_size, "%.*s", (int)strcspn(colon, "\n"), colon);
		break;
	}
	fclose(f);
}

void
bench_machine_get(const char *dir, struct bench_machine *machine)
{
	ENG_ASSERT(dir != NULL);
	ENG_ASSERT(machine != NULL);
	memset(machine, 0, sizeof(*machine));
	struct utsname u;
	if (uname(&u) == 0)
		snprintf(machine->kernel, sizeof(machine->kernel), "%s", u.release);
	bench_cpu_model(machine->cpu, sizeof(machine->cpu));
	bench_fs_type(dir, machine->fs, sizeof(machine->fs));
	machine->nproc = sysconf(_SC_NPROCESSORS_ONLN);
	FILE *f = fopen("/proc/loadavg", "r");
	if (f != NULL) {
		if (fscanf(f, "%lf", &machine->loadavg1) != 1)
			machine->loadavg1 = 0;
		fclose(f);
	}
}

uint64_t
bench_free_bytes(const char *path)
{
	ENG_ASSERT(path != NULL);
	struct statvfs st;
	if (statvfs(path, &st) != 0)
		return UINT64_MAX;
	return (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
}

uint64_t
bench_disk_written_bytes(const char *path)
{
	char line[512];
	ENG_ASSERT(path != NULL);
	struct stat st;
	if (stat(path, &st) != 0)
		return 0;
	FILE *f = fopen("/proc/diskstats", "r");
	if (f == NULL)
		return 0;
	uint64_t bytes = 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned major_id, minor_id;
		unsigned long long v[7];
		char name[64];
		/* major minor name reads merged sectors ms writes merged sectors */
		int n = sscanf(line, "%u %u %63s %llu %llu %llu %llu %llu %llu %llu", &major_id,
			       &minor_id, name, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
		if (n == 10 && major_id == major(st.st_dev) && minor_id == minor(st.st_dev)) {
			bytes = (uint64_t)v[6] * 512u;
			break;
		}
	}
	fclose(f);
	return bytes;
}

uint32_t
bench_iou_wrk_threads(void)
{
	char path[PATH_MAX];
	char comm[64];
	uint32_t count = 0;
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return 0;
	struct dirent *ent;
	for (uint32_t seen = 0; (ent = readdir(d)) != NULL && seen < BENCH_TASKS_MAX; seen++) {
		if (ent->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", ent->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, comm, sizeof(comm) - 1);
		close(fd);
		if (n > 0 && strncmp(comm, "iou-wrk", 7) == 0)
			count++;
	}
	closedir(d);
	return count;
}

uint64_t
bench_parse_u64(const char *name, const char *text)
{
	ENG_ASSERT(name != NULL && text != NULL);
	char *end = NULL;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	uint64_t scale = 1;
	if (end != NULL && (*end == 'K' || *end == 'k'))
		scale = 1024u;
	else if (end != NULL && (*end == 'M' || *end == 'm'))
		scale = 1024u * 1024u;
	if (scale != 1)
		end++;
	if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
		fprintf(stderr, "bench: %s: not a number: '%s'\n", name, text);
		exit(64);
	}
	return (uint64_t)v * scale;
}

double
bench_parse_double(const char *name, const char *text)
{
	ENG_ASSERT(name != NULL && text != NULL);
	char *end = NULL;
	errno = 0;
	double v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(v >= 0.0)) {
		fprintf(stderr, "bench: %s: not a non-negative number: '%s'\n", name, text);
		exit(64);
	}
	return v;
}

uint64_t
bench_env_u64(const char *name, uint64_t fallback)
{
	ENG_ASSERT(name != NULL);
	const char *text = getenv(name);
	if (text == NULL || text[0] == '\0')
		return fallback;
	return bench_parse_u64(name, text);
}

double
bench_env_double(const char *name, double fallback)
{
	ENG_ASSERT(name != NULL);
	const char *text = getenv(name);
	if (text == NULL || text[0] == '\0')
		return fallback;
	return bench_parse_double(name, text);
}

const char *
bench_json_safe(const char *text)
{
	ENG_ASSERT(text != NULL);
	for (const char *p = text; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\' || c < 0x20 || c == 0x7f)
			return "?";
	}
	return text;
}
