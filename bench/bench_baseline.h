/*
 * bench_baseline.h - the two yardsticks a durable spool is measured against
 * on the same filesystem:
 *
 * (a) the device: a plain loop of sequential O_DIRECT pwritev2(RWF_DSYNC)
 *     writes, one at a time (QD1), into a file pre-zeroed the way the spool
 *     prepares its segments (fallocate, write zeros, fdatasync, directory
 *     fsync), so every write is a pure overwrite of written extents. The
 *     file is one segment long and the loop wraps around it, so the device
 *     loop never pays for preparing new space; the spool does.
 * (b) file per message, the way Postfix's cleanup(8) and qmgr(8) store a
 *     message: create a file in incoming/, write it, fsync it, close it,
 *     rename it into active/. Like Postfix, the directory is not fsynced
 *     per message.
 *
 * Errors: functions return 0 or -errno and put one line in err.
 * Ownership: struct bench_device owns its fd and buffer between
 * bench_device_open and bench_device_close; other arguments are borrowed.
 */
#ifndef BENCH_BASELINE_H
#define BENCH_BASELINE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring;
struct bench_samples;

struct bench_device {
	int fd;
	char path[PATH_MAX];
	uint64_t file_size;
	uint8_t *buf;
	uint32_t buf_size;
	uint64_t offset; /* of the next write */
};

/* One measured loop. Latencies go to the caller's samples; the quantiles
 * are the caller's to compute (runs are often split into rounds). */
struct bench_write_result {
	uint32_t batch_size;
	uint32_t queue_depth;
	uint64_t writes;
	uint64_t bytes;
	double seconds;
	double mb_per_s; /* 10^6 bytes per second */
	double write_p50_us;
	double write_p99_us;
	double other_disk_mb; /* device writes during the run that were not ours */
};

/* Add part's counts to total and recompute total's rate. */
void bench_write_result_add(struct bench_write_result *total,
			    const struct bench_write_result *part);

/* Create dir/device.dat of file_size bytes, with a write buffer of
 * buf_size bytes (a multiple of 4096). zeroed: pre-zeroed and durable, as
 * the spool prepares a segment; otherwise only fallocated (unwritten
 * extents: each DSYNC write also converts extents and commits the
 * filesystem journal), to show what skipping the pre-zeroing would cost. */
int bench_device_open(struct bench_device *dev, const char *dir, uint64_t file_size,
		      uint32_t buf_size, bool zeroed, char *err, size_t err_size)
	__attribute__((warn_unused_result));
void bench_device_close(struct bench_device *dev);

/* QD1 loop: ceil(total_bytes / batch_size) writes of batch_size bytes
 * (a multiple of 4096, <= buf_size), each with RWF_DSYNC. */
int bench_device_run(struct bench_device *dev, uint32_t batch_size, uint64_t total_bytes,
		     struct bench_samples *samples, struct bench_write_result *result, char *err,
		     size_t err_size)
	__attribute__((warn_unused_result));

/* The same writes through io_uring (ring.h), queue_depth in flight: what the
 * device gives a writer that pipelines its commits like the spool does. */
int bench_device_run_ring(struct bench_device *dev, struct ring *ring, uint32_t batch_size,
			  uint64_t total_bytes, uint32_t queue_depth, struct bench_samples *samples,
			  struct bench_write_result *result, char *err, size_t err_size)
	__attribute__((warn_unused_result));

struct bench_fpm_result {
	uint64_t messages;
	double seconds;
	double per_s;
	double p50_us;
	double p99_us;
};

void bench_fpm_result_add(struct bench_fpm_result *total, const struct bench_fpm_result *part);

/* File per message under dir (incoming/ and active/ are made there):
 * messages of size bytes from data, until count_max messages or duration_s
 * seconds, whichever comes first; latencies go to samples. first_id
 * numbers the files. The files are removed afterwards. */
int bench_fpm_run(const char *dir, const uint8_t *data, uint32_t size, uint64_t first_id,
		  uint64_t count_max, double duration_s, struct bench_samples *samples,
		  struct bench_fpm_result *result, char *err, size_t err_size)
	__attribute__((warn_unused_result));

/* The same with `threads` writers at once, like Postfix's many cleanup(8)
 * processes: concurrent fsyncs can share a filesystem journal commit.
 * Runs for duration_s; result has no quantiles. */
#define BENCH_FPM_THREADS_MAX 64u
int bench_fpm_run_parallel(const char *dir, const uint8_t *data, uint32_t size, uint32_t threads,
			   double duration_s, struct bench_fpm_result *result, char *err,
			   size_t err_size) __attribute__((warn_unused_result));

#endif /* BENCH_BASELINE_H */
