/*
 * bench_baseline.c - the device loop and the file-per-message baseline
 * (bench_baseline.h).
 *
 * The device loop pre-zeroes its file exactly as spool_log.c prepares a
 * segment (fallocate, zeros written over the whole file, fdatasync,
 * directory fsync) and only then starts the clock: on ext4 a DSYNC write
 * into unwritten extents also commits the journal and costs about twice as
 * much (io_uring.md 4.2), which would flatter the spool.
 *
 * The file-per-message loop uses plain buffered writes and fsync, as
 * Postfix does; O_DIRECT would not be what an MTA of that design does.
 */
#include "bench_baseline.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench_util.h"
#include "engine/eng_common.h"
#include "ring/ring.h"

#define BENCH_BLOCK_SIZE 4096u
#define BENCH_ZERO_CHUNK_SIZE (1u << 20)
#define BENCH_QUEUE_DEPTH_MAX 16u
#define BENCH_WRITE_RETRIES_MAX 64u

static void
bench_err(char *err, size_t err_size, const char *what, const char *path, int errnum)
{
	ENG_ASSERT(err != NULL && err_size > 0);
	ENG_ASSERT(errnum > 0);
	snprintf(err, err_size, "%s %s: %s", what, path, strerror(errnum));
}

/* fallocate the file; if zeroed, also zero it with 1 MiB O_DIRECT writes;
 * then make it durable. */
static int
bench_device_prepare(struct bench_device *dev, const char *dir, uint8_t *zeros, bool zeroed,
		     char *err, size_t err_size)
{
	ENG_ASSERT(dev->fd >= 0);
	ENG_ASSERT(dev->file_size % BENCH_BLOCK_SIZE == 0);
	if (fallocate(dev->fd, 0, 0, (off_t)dev->file_size) != 0) {
		bench_err(err, err_size, "fallocate", dev->path, errno);
		return -errno;
	}
	for (uint64_t at = 0; zeroed && at < dev->file_size;) {
		size_t len = (size_t)ENG_MIN((uint64_t)BENCH_ZERO_CHUNK_SIZE, dev->file_size - at);
		ssize_t n = pwrite(dev->fd, zeros, len, (off_t)at);
		if (n <= 0 || n % BENCH_BLOCK_SIZE != 0) {
			int e = n < 0 ? errno : EIO;
			bench_err(err, err_size, "pre-zeroing", dev->path, e);
			return -e;
		}
		at += (uint64_t)n;
	}
	if (fdatasync(dev->fd) != 0) {
		bench_err(err, err_size, "fdatasync", dev->path, errno);
		return -errno;
	}
	int ret = bench_dir_sync(dir);
	if (ret < 0)
		bench_err(err, err_size, "fsync", dir, -ret);
	return ret;
}

int
bench_device_open(struct bench_device *dev, const char *dir, uint64_t file_size,
		  uint32_t buf_size, bool zeroed, char *err, size_t err_size)
{
	ENG_ASSERT(dev != NULL && dir != NULL);
	ENG_ASSERT(buf_size > 0 && buf_size % BENCH_BLOCK_SIZE == 0 && buf_size <= file_size);
	memset(dev, 0, sizeof(*dev));
	dev->file_size = ENG_ALIGN_UP(file_size, (uint64_t)BENCH_BLOCK_SIZE);
	dev->buf_size = buf_size;
	snprintf(dev->path, sizeof(dev->path), "%s/device.dat", dir);
	(void)unlink(dev->path);
	dev->fd = open(dev->path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	if (dev->fd < 0) {
		bench_err(err, err_size, "open O_DIRECT", dev->path, errno);
		return -errno;
	}
	size_t alloc = ENG_MAX((size_t)buf_size, (size_t)BENCH_ZERO_CHUNK_SIZE);
	void *mem = NULL;
	if (posix_memalign(&mem, BENCH_BLOCK_SIZE, alloc) != 0) {
		snprintf(err, err_size, "out of memory for the device buffer");
		bench_device_close(dev);
		return -ENOMEM;
	}
	dev->buf = mem;
	memset(dev->buf, 0, alloc);
	int ret = bench_device_prepare(dev, dir, dev->buf, zeroed, err, err_size);
	if (ret < 0) {
		bench_device_close(dev);
		return ret;
	}
	/* Non-zero bytes from here on: what a commit would carry. */
	uint64_t state = 0x5eed5eed5eedull;
	for (size_t i = 0; i < buf_size; i++)
		dev->buf[i] = (uint8_t)bench_rand(&state);
	return 0;
}

void
bench_device_close(struct bench_device *dev)
{
	ENG_ASSERT(dev != NULL);
	if (dev->fd >= 0) {
		close(dev->fd);
		(void)unlink(dev->path);
	}
	dev->fd = -1;
	free(dev->buf);
	dev->buf = NULL;
}

/* The next write offset, wrapping around the file. */
static uint64_t
bench_device_next_offset(struct bench_device *dev, uint32_t batch_size)
{
	ENG_ASSERT(batch_size <= dev->file_size);
	ENG_ASSERT(dev->offset % BENCH_BLOCK_SIZE == 0);
	if (dev->offset + batch_size > dev->file_size)
		dev->offset = 0;
	uint64_t at = dev->offset;
	dev->offset += batch_size;
	return at;
}

static void
bench_write_result_fill(struct bench_write_result *result, uint32_t batch_size,
			uint32_t queue_depth, uint64_t writes, uint64_t elapsed_ns)
{
	ENG_ASSERT(writes > 0);
	ENG_ASSERT(elapsed_ns > 0);
	memset(result, 0, sizeof(*result));
	result->batch_size = batch_size;
	result->queue_depth = queue_depth;
	result->writes = writes;
	result->bytes = writes * batch_size;
	result->seconds = (double)elapsed_ns / 1e9;
	result->mb_per_s = (double)result->bytes / 1e6 / result->seconds;
}

void
bench_write_result_add(struct bench_write_result *total, const struct bench_write_result *part)
{
	ENG_ASSERT(total != NULL && part != NULL);
	ENG_ASSERT(part->seconds > 0);
	total->batch_size = ENG_MAX(total->batch_size, part->batch_size);
	total->queue_depth = part->queue_depth;
	total->writes += part->writes;
	total->bytes += part->bytes;
	total->seconds += part->seconds;
	total->other_disk_mb += part->other_disk_mb;
	total->mb_per_s = (double)total->bytes / 1e6 / total->seconds;
}

static uint64_t
bench_write_count(uint32_t batch_size, uint64_t total_bytes)
{
	ENG_ASSERT(batch_size > 0);
	ENG_ASSERT(batch_size % BENCH_BLOCK_SIZE == 0);
	uint64_t writes = (total_bytes + batch_size - 1) / batch_size;
	return writes == 0 ? 1 : writes;
}

int
bench_device_run(struct bench_device *dev, uint32_t batch_size, uint64_t total_bytes,
		 struct bench_samples *samples, struct bench_write_result *result, char *err,
		 size_t err_size)
{
	ENG_ASSERT(dev->fd >= 0);
	ENG_ASSERT(batch_size <= dev->buf_size);
	uint64_t writes = bench_write_count(batch_size, total_bytes);
	struct iovec iov = { .iov_base = dev->buf, .iov_len = batch_size };
	uint64_t disk_before = bench_disk_written_bytes(dev->path);
	uint64_t start_ns = bench_now_ns();
	for (uint64_t i = 0; i < writes; i++) {
		uint64_t at = bench_device_next_offset(dev, batch_size);
		uint64_t t0 = bench_now_ns();
		ssize_t n;
		uint32_t tries = 0;
		do {
			n = pwritev2(dev->fd, &iov, 1, (off_t)at, RWF_DSYNC);
		} while (n < 0 && errno == EINTR && ++tries < BENCH_WRITE_RETRIES_MAX);
		if (n != (ssize_t)batch_size) {
			bench_err(err, err_size, "pwritev2 RWF_DSYNC", dev->path,
				  n < 0 ? errno : EIO);
			return -EIO;
		}
		bench_samples_add(samples, bench_now_ns() - t0);
	}
	uint64_t elapsed_ns = bench_now_ns() - start_ns;
	bench_write_result_fill(result, batch_size, 1, writes, elapsed_ns);
	uint64_t disk_bytes = bench_disk_written_bytes(dev->path) - disk_before;
	result->other_disk_mb = ((double)disk_bytes - (double)result->bytes) / 1e6;
	return 0;
}

/* ---- the same writes, pipelined through the ring ---- */

struct bench_ring_writer {
	struct bench_device *dev;
	struct ring *ring;
	struct ring_op ops[BENCH_QUEUE_DEPTH_MAX];
	uint64_t started_ns[BENCH_QUEUE_DEPTH_MAX];
	uint32_t batch_size;
	uint64_t writes;
	uint64_t issued;
	uint64_t done;
	struct bench_samples *samples;
	int32_t error;
};

static void bench_ring_write_done(struct ring_op *op, int32_t res, uint32_t cqe_flags);

static void
bench_ring_write_issue(struct bench_ring_writer *w, uint32_t index)
{
	ENG_ASSERT(index < BENCH_QUEUE_DEPTH_MAX);
	ENG_ASSERT(w->issued < w->writes);
	struct ring_op *op = &w->ops[index];
	op->callback = bench_ring_write_done;
	op->ctx = w;
	uint64_t at = bench_device_next_offset(w->dev, w->batch_size);
	w->started_ns[index] = bench_now_ns();
	int ret = ring_prep_write(w->ring, op, w->dev->fd, w->dev->buf, w->batch_size, at,
				  RWF_DSYNC);
	ENG_ASSERT(ret == 0);
	w->issued++;
}

static void
bench_ring_write_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_ring_writer *w = op->ctx;
	uint32_t index = (uint32_t)(op - w->ops);
	(void)cqe_flags;
	ENG_ASSERT(index < BENCH_QUEUE_DEPTH_MAX);
	ENG_ASSERT(w->done < w->issued);
	if (res != (int32_t)w->batch_size && w->error == 0)
		w->error = res < 0 ? res : -EIO;
	w->done++;
	bench_samples_add(w->samples, bench_now_ns() - w->started_ns[index]);
	if (w->issued < w->writes && w->error == 0)
		bench_ring_write_issue(w, index);
}

int
bench_device_run_ring(struct bench_device *dev, struct ring *ring, uint32_t batch_size,
		      uint64_t total_bytes, uint32_t queue_depth, struct bench_samples *samples,
		      struct bench_write_result *result, char *err, size_t err_size)
{
	ENG_ASSERT(dev->fd >= 0 && ring != NULL);
	ENG_ASSERT(queue_depth >= 1 && queue_depth <= BENCH_QUEUE_DEPTH_MAX);
	struct bench_ring_writer w;
	memset(&w, 0, sizeof(w));
	w.dev = dev;
	w.ring = ring;
	w.batch_size = batch_size;
	w.writes = bench_write_count(batch_size, total_bytes);
	w.samples = samples;
	uint64_t start_ns = bench_now_ns();
	for (uint32_t i = 0; i < queue_depth && w.issued < w.writes; i++)
		bench_ring_write_issue(&w, i);
	for (uint64_t turns = 0; w.done < w.issued; turns++) {
		ENG_ASSERT(turns <= 4 * w.writes + 16);
		int ret = ring_run_once(ring, UINT64_MAX);
		if (ret < 0 && w.error == 0)
			w.error = ret;
		if (ret < 0)
			break;
	}
	uint64_t elapsed_ns = bench_now_ns() - start_ns;
	if (w.error != 0) {
		bench_err(err, err_size, "ring write RWF_DSYNC", dev->path, -w.error);
		return w.error;
	}
	bench_write_result_fill(result, batch_size, queue_depth, w.done, elapsed_ns);
	return 0;
}

/* ---- file per message ---- */

static int
bench_write_all(int fd, const uint8_t *data, uint32_t size)
{
	ENG_ASSERT(fd >= 0);
	ENG_ASSERT(data != NULL);
	uint32_t done = 0;
	for (uint32_t tries = 0; done < size && tries < BENCH_WRITE_RETRIES_MAX; tries++) {
		ssize_t n = write(fd, data + done, size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (uint32_t)n;
	}
	return done == size ? 0 : -EIO;
}

/* One message: create in incoming/, write, fsync, close, rename to active/. */
static int
bench_fpm_one(const char *incoming, const char *active, uint64_t n, const uint8_t *data,
	      uint32_t size)
{
	char src[PATH_MAX];
	char dst[PATH_MAX];
	ENG_ASSERT(incoming != NULL && active != NULL);
	snprintf(src, sizeof(src), "%s/%016llx", incoming, (unsigned long long)n);
	snprintf(dst, sizeof(dst), "%s/%016llx", active, (unsigned long long)n);
	int fd = open(src, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int ret = bench_write_all(fd, data, size);
	if (ret == 0 && fsync(fd) != 0)
		ret = -errno;
	if (close(fd) != 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(src, dst) != 0)
		ret = -errno;
	return ret;
}

static int
bench_fpm_dirs(const char *dir, char *incoming, char *active, size_t path_size)
{
	ENG_ASSERT(dir != NULL);
	ENG_ASSERT(path_size >= 64);
	snprintf(incoming, path_size, "%s/incoming", dir);
	snprintf(active, path_size, "%s/active", dir);
	int ret = bench_dir_make(incoming);
	if (ret == 0)
		ret = bench_dir_make(active);
	if (ret == 0)
		ret = bench_dir_sync(incoming);
	if (ret == 0)
		ret = bench_dir_sync(active);
	if (ret == 0)
		ret = bench_dir_sync(dir);
	return ret;
}

void
bench_fpm_result_add(struct bench_fpm_result *total, const struct bench_fpm_result *part)
{
	ENG_ASSERT(total != NULL && part != NULL);
	ENG_ASSERT(part->seconds >= 0);
	total->messages += part->messages;
	total->seconds += part->seconds;
	total->per_s = total->seconds > 0 ? (double)total->messages / total->seconds : 0;
}

int
bench_fpm_run(const char *dir, const uint8_t *data, uint32_t size, uint64_t first_id,
	      uint64_t count_max, double duration_s, struct bench_samples *samples,
	      struct bench_fpm_result *result, char *err, size_t err_size)
{
	char incoming[PATH_MAX];
	char active[PATH_MAX];
	ENG_ASSERT(count_max > 0 && result != NULL);
	memset(result, 0, sizeof(*result));
	int ret = bench_fpm_dirs(dir, incoming, active, sizeof(incoming));
	if (ret < 0) {
		snprintf(err, err_size, "file per message in %s: %s", dir, strerror(-ret));
		return ret;
	}
	uint64_t start_ns = bench_now_ns();
	uint64_t deadline_ns = start_ns + (uint64_t)(duration_s * 1e9);
	uint64_t n = 0;
	uint64_t now = start_ns;
	for (; n < count_max && (n == 0 || now < deadline_ns); n++) {
		ret = bench_fpm_one(incoming, active, first_id + n, data, size);
		if (ret < 0) {
			snprintf(err, err_size, "file per message %llu in %s: %s",
				 (unsigned long long)n, dir, strerror(-ret));
			break;
		}
		uint64_t t = bench_now_ns();
		bench_samples_add(samples, t - now);
		now = t;
	}
	if (ret == 0) {
		result->messages = n;
		result->seconds = (double)(now - start_ns) / 1e9;
		result->per_s = (double)n / result->seconds;
	}
	bench_dir_remove(incoming);
	bench_dir_remove(active);
	return ret;
}

/* ---- file per message, several writers ---- */

struct bench_fpm_writer {
	pthread_t thread;
	const char *incoming;
	const char *active;
	const uint8_t *data;
	uint32_t size;
	uint32_t index;
	uint64_t deadline_ns;
	uint64_t messages;
	int error;
};

static void *
bench_fpm_writer_main(void *arg)
{
	struct bench_fpm_writer *w = arg;
	ENG_ASSERT(w != NULL);
	ENG_ASSERT(w->index < BENCH_FPM_THREADS_MAX);
	uint64_t base = (uint64_t)w->index << 48;
	for (uint64_t n = 0; w->error == 0 && bench_now_ns() < w->deadline_ns; n++) {
		w->error = bench_fpm_one(w->incoming, w->active, base + n, w->data, w->size);
		if (w->error == 0)
			w->messages++;
	}
	return NULL;
}

int
bench_fpm_run_parallel(const char *dir, const uint8_t *data, uint32_t size, uint32_t threads,
		       double duration_s, struct bench_fpm_result *result, char *err,
		       size_t err_size)
{
	char incoming[PATH_MAX];
	char active[PATH_MAX];
	struct bench_fpm_writer writers[BENCH_FPM_THREADS_MAX];
	ENG_ASSERT(threads >= 1 && threads <= BENCH_FPM_THREADS_MAX);
	memset(result, 0, sizeof(*result));
	memset(writers, 0, sizeof(writers));
	int ret = bench_fpm_dirs(dir, incoming, active, sizeof(incoming));
	uint64_t start_ns = bench_now_ns();
	uint64_t deadline_ns = start_ns + (uint64_t)(duration_s * 1e9);
	uint32_t started = 0;
	for (; ret == 0 && started < threads; started++) {
		struct bench_fpm_writer *w = &writers[started];
		*w = (struct bench_fpm_writer){ .incoming = incoming, .active = active,
						 .data = data, .size = size, .index = started,
						 .deadline_ns = deadline_ns };
		ret = -pthread_create(&w->thread, NULL, bench_fpm_writer_main, w);
		if (ret < 0)
			break;
	}
	for (uint32_t i = 0; i < started; i++) {
		(void)pthread_join(writers[i].thread, NULL);
		result->messages += writers[i].messages;
		if (ret == 0 && writers[i].error < 0)
			ret = writers[i].error;
	}
	result->seconds = (double)(bench_now_ns() - start_ns) / 1e9;
	result->per_s = (double)result->messages / result->seconds;
	if (ret < 0)
		snprintf(err, err_size, "file per message (%u writers) in %s: %s", threads, dir,
			 strerror(-ret));
	bench_dir_remove(incoming);
	bench_dir_remove(active);
	return ret;
}
