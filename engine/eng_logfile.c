/*
 * eng_logfile.c - the delivery log file through the ring (eng_logfile.h).
 */
#include "eng_logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eng_common.h"

/* Turns of eng_logfile_close's wait (10 ms each). */
#define ENG_LOGFILE_CLOSE_TURNS 3000u
#define ENG_LOGFILE_NS_PER_MS 1000000ull

static void eng_logfile_hook(void *ctx);
static void eng_logfile_start_write(struct eng_logfile *lf);

void
eng_logfile_shared_init(struct eng_logfile_shared *shared, const char *path, uint64_t max_size,
			uint32_t keep)
{
	ENG_ASSERT(shared != NULL && path != NULL);
	memset(shared, 0, sizeof(*shared));
	snprintf(shared->path, sizeof(shared->path), "%s", path);
	struct stat st;
	uint64_t size = path[0] != '\0' && stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
	atomic_init(&shared->size, size);
	atomic_init(&shared->generation, 1);
	atomic_init(&shared->rotating, false);
	atomic_init(&shared->max_size, max_size);
	atomic_init(&shared->keep, ENG_MAX(ENG_MIN(keep, ENG_LOGFILE_KEEP_MAX), 1u));
}

void
eng_logfile_shared_limits(struct eng_logfile_shared *shared, uint64_t max_size, uint32_t keep)
{
	atomic_store(&shared->max_size, max_size);
	atomic_store(&shared->keep, ENG_MAX(ENG_MIN(keep, ENG_LOGFILE_KEEP_MAX), 1u));
}

void
eng_logfile_shared_reopen(struct eng_logfile_shared *shared)
{
	atomic_fetch_add(&shared->generation, 1);
}

static int
eng_logfile_open_fd(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	return fd >= 0 ? fd : -errno;
}

int
eng_logfile_open(struct eng_logfile *lf, struct ring *ring, struct eng_logfile_shared *shared,
		 char *err, size_t err_size)
{
	ENG_ASSERT(lf != NULL && ring != NULL && shared != NULL);
	memset(lf, 0, sizeof(*lf));
	lf->fd = -1;
	lf->write_fd = -1;
	lf->ring = ring;
	lf->shared = shared;
	lf->generation = atomic_load(&shared->generation);
	int fd = eng_logfile_open_fd(shared->path);
	if (fd < 0) {
		snprintf(err, err_size, "delivery_log %s: %s", shared->path, strerror(-fd));
		return fd;
	}
	lf->buf[0] = malloc(ENG_LOGFILE_BUFFER_SIZE);
	lf->buf[1] = malloc(ENG_LOGFILE_BUFFER_SIZE);
	if (lf->buf[0] == NULL || lf->buf[1] == NULL) {
		free(lf->buf[0]);
		free(lf->buf[1]);
		close(fd);
		snprintf(err, err_size, "out of memory for the delivery log buffers");
		return -ENOMEM;
	}
	lf->fd = fd;
	ring_add_hook(ring, eng_logfile_hook, lf);
	lf->hook_added = true;
	return 0;
}

/* Reopen the path when the node's generation moved (rotation, SIGHUP). A
 * write in flight keeps its own fd (closed by its completion). */
static void
eng_logfile_check_generation(struct eng_logfile *lf)
{
	uint64_t generation = atomic_load(&lf->shared->generation);
	if (generation == lf->generation)
		return;
	int fd = eng_logfile_open_fd(lf->shared->path);
	if (fd < 0) {
		lf->stats.errors++; /* keep the old one: lines land in the old file */
		return;
	}
	lf->generation = generation;
	lf->stats.reopens++;
	if (lf->fd >= 0 && lf->fd != lf->write_fd)
		close(lf->fd);
	lf->fd = fd;
}

/* ---- rotation ---- */

static void eng_logfile_rename_next(struct eng_logfile *lf);

static void
eng_logfile_path(const struct eng_logfile *lf, uint32_t index, char *out, size_t out_size)
{
	if (index == 0)
		snprintf(out, out_size, "%s", lf->shared->path);
	else
		snprintf(out, out_size, "%s.%u", lf->shared->path, index);
}

static void
eng_logfile_rotation_done(struct eng_logfile *lf)
{
	atomic_store(&lf->shared->size, 0);
	atomic_fetch_add(&lf->shared->generation, 1);
	atomic_store(&lf->shared->rotating, false);
	lf->stats.rotations++;
}

static void
eng_logfile_renamed(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_logfile *lf = op->ctx;
	(void)cqe_flags;
	if (res < 0 && res != -ENOENT)
		lf->stats.errors++; /* an old file stays where it was */
	ENG_ASSERT(lf->rename_step > 0);
	lf->rename_step--;
	if (lf->rename_step == 0) {
		eng_logfile_rotation_done(lf);
		return;
	}
	eng_logfile_rename_next(lf);
}

/* log.(step-1) -> log.step; log.0 is the log itself. */
static void
eng_logfile_rename_next(struct eng_logfile *lf)
{
	ENG_ASSERT(lf->rename_step > 0);
	eng_logfile_path(lf, lf->rename_step - 1u, lf->rename_from, sizeof(lf->rename_from));
	eng_logfile_path(lf, lf->rename_step, lf->rename_to, sizeof(lf->rename_to));
	lf->rename_op.callback = eng_logfile_renamed;
	lf->rename_op.ctx = lf;
	if (ring_prep_renameat(lf->ring, &lf->rename_op, AT_FDCWD, lf->rename_from, AT_FDCWD,
			       lf->rename_to, 0) == 0)
		return;
	/* No SQE: do this step synchronously rather than stall the rotation. */
	int ret = rename(lf->rename_from, lf->rename_to);
	eng_logfile_renamed(&lf->rename_op, ret == 0 ? 0 : -errno, 0);
}

/* Renames start above the highest rotated file there is (log.1 .. log.m
 * exist: log.m -> log.(m+1) first), at most at keep: one stat per file,
 * at rotation only, instead of keep renames of missing files. */
static uint32_t
eng_logfile_first_step(struct eng_logfile *lf, uint32_t keep)
{
	uint32_t step = 1;
	for (; step < keep; step++) {
		struct stat st;
		eng_logfile_path(lf, step, lf->rename_from, sizeof(lf->rename_from));
		if (stat(lf->rename_from, &st) != 0)
			break;
	}
	return step;
}

/* The claim of a write took the file to claimed_size: rotate if over. */
static void
eng_logfile_maybe_rotate(struct eng_logfile *lf, uint64_t claimed_size)
{
	uint64_t max_size = atomic_load(&lf->shared->max_size);
	if (max_size == 0 || claimed_size <= max_size || lf->rename_step > 0)
		return;
	bool expected = false;
	if (!atomic_compare_exchange_strong(&lf->shared->rotating, &expected, true))
		return; /* another shard rotates */
	lf->rename_step = eng_logfile_first_step(lf, atomic_load(&lf->shared->keep));
	eng_logfile_rename_next(lf);
}

/* ---- writes ---- */

static void
eng_logfile_written(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_logfile *lf = op->ctx;
	(void)cqe_flags;
	uint32_t busy = lf->filling ^ 1u;
	ENG_ASSERT(lf->fill[busy] > lf->written);
	if (res <= 0) {
		lf->stats.errors++; /* the rest of this buffer is lost */
		lf->written = lf->fill[busy];
	} else {
		lf->written += (uint32_t)res;
	}
	if (lf->written < lf->fill[busy]) {
		/* Short: the rest is appended next (O_APPEND). */
		int ret = ring_prep_write(lf->ring, &lf->write_op, lf->write_fd,
					  lf->buf[busy] + lf->written, lf->fill[busy] - lf->written,
					  (uint64_t)-1, 0);
		if (ret == 0)
			return;
		lf->stats.errors++;
	}
	if (lf->write_fd != lf->fd)
		close(lf->write_fd); /* reopened meanwhile */
	lf->write_fd = -1;
	lf->fill[busy] = 0;
	lf->written = 0;
}

/* Issue the filling buffer as one write (none in flight). */
static void
eng_logfile_start_write(struct eng_logfile *lf)
{
	ENG_ASSERT(!lf->write_op.in_flight);
	uint32_t b = lf->filling;
	if (lf->fill[b] == 0)
		return;
	eng_logfile_check_generation(lf);
	if (lf->fd < 0) {
		lf->stats.errors++;
		lf->fill[b] = 0;
		return;
	}
	uint64_t claimed = atomic_fetch_add(&lf->shared->size, lf->fill[b]) + lf->fill[b];
	lf->write_op.callback = eng_logfile_written;
	lf->write_op.ctx = lf;
	if (ring_prep_write(lf->ring, &lf->write_op, lf->fd, lf->buf[b], lf->fill[b],
			    (uint64_t)-1, 0) < 0) {
		atomic_fetch_sub(&lf->shared->size, lf->fill[b]);
		return; /* SQ full: the next turn tries again */
	}
	lf->write_fd = lf->fd;
	lf->written = 0;
	lf->filling = b ^ 1u;
	ENG_ASSERT(lf->fill[lf->filling] == 0);
	lf->stats.writes++;
	eng_logfile_maybe_rotate(lf, claimed);
}

/* Both buffers busy: write the filling one now, blocking. */
static void
eng_logfile_write_sync(struct eng_logfile *lf)
{
	uint32_t b = lf->filling;
	eng_logfile_check_generation(lf);
	size_t done = 0;
	for (uint32_t tries = 0; tries < 16u && done < lf->fill[b] && lf->fd >= 0; tries++) {
		ssize_t n = write(lf->fd, lf->buf[b] + done, lf->fill[b] - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	if (done < lf->fill[b])
		lf->stats.errors++;
	uint64_t claimed = atomic_fetch_add(&lf->shared->size, done) + done;
	lf->stats.sync_writes++;
	lf->fill[b] = 0;
	eng_logfile_maybe_rotate(lf, claimed);
}

void
eng_logfile_append(struct eng_logfile *lf, const char *line, size_t len)
{
	ENG_ASSERT(lf != NULL && line != NULL);
	ENG_ASSERT(len > 0 && len <= ENG_LOGFILE_BUFFER_SIZE);
	if (lf->buf[0] == NULL)
		return; /* not open */
	uint32_t b = lf->filling;
	if (ENG_LOGFILE_BUFFER_SIZE - lf->fill[b] < len) {
		if (!lf->write_op.in_flight)
			eng_logfile_start_write(lf);
		else
			eng_logfile_write_sync(lf);
		b = lf->filling;
		if (ENG_LOGFILE_BUFFER_SIZE - lf->fill[b] < len)
			eng_logfile_write_sync(lf); /* SQ full just now */
	}
	ENG_ASSERT(ENG_LOGFILE_BUFFER_SIZE - lf->fill[b] >= len);
	memcpy(lf->buf[b] + lf->fill[b], line, len);
	lf->fill[b] += (uint32_t)len;
	lf->stats.lines++;
	lf->stats.bytes += len;
}

static void
eng_logfile_hook(void *ctx)
{
	struct eng_logfile *lf = ctx;
	if (!lf->write_op.in_flight)
		eng_logfile_start_write(lf);
}

bool
eng_logfile_is_busy(const struct eng_logfile *lf)
{
	return lf->fill[0] > 0 || lf->fill[1] > 0 || lf->write_op.in_flight ||
	       lf->rename_op.in_flight || lf->rename_step > 0;
}

void
eng_logfile_close(struct eng_logfile *lf)
{
	if (lf == NULL || lf->ring == NULL)
		return;
	for (uint32_t turns = 0; turns < ENG_LOGFILE_CLOSE_TURNS && eng_logfile_is_busy(lf);
	     turns++) {
		int ret = ring_run_once(lf->ring, 10ull * ENG_LOGFILE_NS_PER_MS);
		if (ret < 0 && ret != -EINTR)
			break;
	}
	if (lf->hook_added)
		ring_remove_hook(lf->ring, eng_logfile_hook, lf);
	lf->hook_added = false;
	if (lf->write_op.in_flight || lf->rename_op.in_flight)
		return; /* the ring still owns them: leak rather than free */
	if (lf->fd >= 0)
		close(lf->fd);
	free(lf->buf[0]);
	free(lf->buf[1]);
	memset(lf, 0, sizeof(*lf));
	lf->fd = -1;
}
