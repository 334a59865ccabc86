/*
 * bench_util.h - small helpers shared by the ringmail benchmarks: clocks,
 * deterministic wire-form message bodies, latency percentiles, scratch
 * directories on a disk filesystem, machine facts for the report, and
 * environment-variable parameters.
 *
 * Benchmarks never depend on tests/: anything both need is duplicated here
 * on purpose, so a test refactor cannot silently change what a benchmark
 * measures.
 *
 * Ownership: every function borrows its arguments until it returns; output
 * buffers are the caller's. Nothing here allocates.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_TEXT_SIZE 128u

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

/* User plus system CPU time of this process, in nanoseconds. */
uint64_t bench_cpu_ns(void);

/* xorshift64* step (never returns the same state it was given if non-zero). */
uint64_t bench_rand(uint64_t *state);

/* FNV-1a 64 over len bytes, continuing from hash (start with
 * BENCH_FNV_OFFSET). */
#define BENCH_FNV_OFFSET 0xcbf29ce484222325ull
uint64_t bench_fnv1a(uint64_t hash, const void *data, size_t len);

/*
 * Write a message body of exactly size bytes in SMTP wire form: a few
 * header lines, text lines of up to 60 characters (dot-stuffed where a line
 * starts with '.'), ending with CRLF.CRLF. seed and n pick the text.
 * Returns size, or 0 if size is below BENCH_BODY_SIZE_MIN or out_size.
 */
#define BENCH_BODY_SIZE_MIN 128u
uint32_t bench_body_make(uint64_t seed, uint64_t n, uint32_t size, uint8_t *out, size_t out_size);

/* Latency samples in nanoseconds (saturating at UINT32_MAX, 4.29 s),
 * allocated once before the clock starts; adding never allocates. Samples
 * beyond the capacity are counted in dropped, not stored. */
struct bench_samples {
	uint32_t *ns;
	uint64_t count;
	uint64_t capacity;
	uint64_t dropped;
	bool sorted;
};
int bench_samples_init(struct bench_samples *samples, uint64_t capacity)
	__attribute__((warn_unused_result));
void bench_samples_free(struct bench_samples *samples);
void bench_samples_add(struct bench_samples *samples, uint64_t ns);
/* The p-quantile (0..1, nearest rank) in microseconds; 0 when empty.
 * Sorts the samples the first time after an add. */
double bench_samples_quantile_us(struct bench_samples *samples, double p);

/* Create base/name-<pid> afresh (removing an old one). Returns 0 or -errno. */
int bench_dir_make_fresh(const char *base, const char *name, char *out, size_t out_size)
	__attribute__((warn_unused_result));
/* Remove base/name-<pid> folders left by runs that were killed (their pid
 * no longer exists). Returns how many were removed. */
uint32_t bench_dir_remove_stale(const char *base, const char *name);
/* mkdir, accepting an existing directory. Returns 0 or -errno. */
int bench_dir_make(const char *path) __attribute__((warn_unused_result));
/* rm -rf path (depth-bounded). */
void bench_dir_remove(const char *path);
/* fsync a directory. Returns 0 or -errno. */
int bench_dir_sync(const char *path) __attribute__((warn_unused_result));

/* True if path lives on tmpfs or ramfs (no durability, no O_DIRECT). */
bool bench_dir_is_volatile(const char *path);

struct bench_machine {
	char kernel[BENCH_TEXT_SIZE];
	char cpu[BENCH_TEXT_SIZE];
	char fs[BENCH_TEXT_SIZE]; /* filesystem type of the bench directory */
	long nproc;
	double loadavg1; /* at start: other work on this machine disturbs results */
};
void bench_machine_get(const char *dir, struct bench_machine *machine);

/* Bytes written to the block device holding path since boot, from
 * /proc/diskstats (sectors of 512 bytes); 0 if unknown. Compared before
 * and after a run it shows writes the benchmark did not make: other
 * processes, or filesystem metadata and journal. */
uint64_t bench_disk_written_bytes(const char *path);

/* Bytes available to this user on path's filesystem; UINT64_MAX if
 * unknown. */
uint64_t bench_free_bytes(const char *path);

/* Number of io_uring io-wq worker threads (iou-wrk-*) of this process. */
uint32_t bench_iou_wrk_threads(void);

/* Parameters from the environment: returns the fallback when unset; exits
 * with a message on a malformed value (start-up only). */
uint64_t bench_env_u64(const char *name, uint64_t fallback);
double bench_env_double(const char *name, double fallback);

/* Parse a decimal (optionally with a K/M suffix, 1024-based) or exit. */
uint64_t bench_parse_u64(const char *name, const char *text);
double bench_parse_double(const char *name, const char *text);

/* Escape-free JSON: the strings the benchmarks print are checked to hold
 * no quote, backslash or control character and are replaced by "?" when
 * they do. Returns text or "?". */
const char *bench_json_safe(const char *text);

#endif /* BENCH_UTIL_H */
