/*
 * spool_scan.c - read segments back: recovery and the offline inspector.
 *
 * A segment is read whole (after fsyncing it and its directory, so no
 * decision rests on bytes that were never durable) and walked from offset
 * 0. A valid record advances by its size. Anything else starts a search,
 * at SPOOL_RECORD_ALIGN steps, for the next record that checks out in full
 * at its own place (magic, version, size, CRC, segment id, offset, shard):
 * - none found: the log ends here; if the bytes were not zero the end is a
 *   torn tail (an unacknowledged commit cut by the crash);
 * - found after zero bytes: a hole (a later commit landed, an earlier one
 *   did not: neither was acknowledged, log order);
 * - found after non-zero bytes: corruption in the middle, reported so the
 *   caller quarantines and counts it; the neighbours are kept.
 * Never reads past the bytes it has; every length is checked first.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../engine/eng_common.h"
#include "spool_log.h"

static int
spool_id_compare(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* "<16 hex>.seg" only. */
static bool
spool_parse_segment_name(const char *name, uint64_t *id)
{
	size_t len = strnlen(name, 64);
	if (len != 20 || memcmp(name + 16, ".seg", 4) != 0)
		return false;
	uint64_t value = 0;
	for (size_t i = 0; i < 16; i++) {
		char c = name[i];
		unsigned digit;
		if (c >= '0' && c <= '9')
			digit = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			digit = (unsigned)(c - 'a' + 10);
		else
			return false;
		value = value << 4 | digit;
	}
	*id = value;
	return value != 0;
}

int
spool_log_list_segments(const char *dir, uint64_t **ids, uint32_t *count)
{
	ENG_ASSERT(dir != NULL);
	ENG_ASSERT(ids != NULL && count != NULL);
	*ids = NULL;
	*count = 0;
	DIR *d = opendir(dir);
	if (d == NULL)
		return -errno;
	uint32_t capacity = 0;
	struct dirent *ent;
	while ((ent = readdir(d)) != NULL) {
		uint64_t id;
		if (!spool_parse_segment_name(ent->d_name, &id))
			continue;
		if (*count == capacity) {
			capacity = capacity == 0 ? 64 : capacity * 2;
			uint64_t *grown = realloc(*ids, capacity * sizeof(**ids));
			if (grown == NULL) {
				closedir(d);
				free(*ids);
				*ids = NULL;
				return -ENOMEM;
			}
			*ids = grown;
		}
		(*ids)[(*count)++] = id;
	}
	closedir(d);
	if (*count > 0)
		qsort(*ids, *count, sizeof(**ids), spool_id_compare);
	return 0;
}

/* Read a whole file after fsyncing it. *buf is malloc'd. */
static int
spool_read_segment(const char *path, uint8_t **buf, size_t *len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int ret = 0;
	if (fstat(fd, &st) != 0) {
		ret = -errno;
	} else if (fsync(fd) != 0 && errno != EBADF && errno != EINVAL) {
		ret = -errno;
	}
	uint8_t *data = NULL;
	size_t size = ret == 0 ? (size_t)st.st_size : 0;
	if (ret == 0 && size > 0 && (data = malloc(size)) == NULL)
		ret = -ENOMEM;
	size_t done = 0;
	while (ret == 0 && done < size) {
		ssize_t n = pread(fd, data + done, size - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			break;
		}
		done += (size_t)n;
	}
	close(fd);
	if (ret < 0) {
		free(data);
		return ret;
	}
	*buf = data;
	*len = size;
	return 0;
}

static bool
spool_bytes_are_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] != 0)
			return false;
	}
	return true;
}

/* Next offset >= from where a full record checks out at its place. */
static bool
spool_resync(const uint8_t *buf, size_t len, uint64_t segment_id, uint16_t shard, size_t from,
	     size_t *found, struct spool_record_header *hdr)
{
	ENG_ASSERT(from % SPOOL_RECORD_ALIGN == 0);
	for (size_t off = from; off + SPOOL_RECORD_HEADER_SIZE <= len; off += SPOOL_RECORD_ALIGN) {
		uint32_t magic;
		memcpy(&magic, buf + off, sizeof(magic));
		if (magic != SPOOL_RECORD_MAGIC)
			continue;
		struct spool_location here = { segment_id, (uint32_t)off, shard };
		if (spool_record_check(buf + off, len - off, &here, hdr) == SPOOL_DECODE_OK) {
			*found = off;
			return true;
		}
	}
	return false;
}

/* True if a record with a good CRC but another segment id or place lies
 * at or after from: the file was recycled and this is its old content. */
static bool
spool_has_stale_record(const uint8_t *buf, size_t len, size_t from)
{
	ENG_ASSERT(from % SPOOL_RECORD_ALIGN == 0);
	ENG_ASSERT(from <= len);
	for (size_t off = from; off + SPOOL_RECORD_HEADER_SIZE <= len; off += SPOOL_RECORD_ALIGN) {
		uint32_t magic;
		memcpy(&magic, buf + off, sizeof(magic));
		if (magic != SPOOL_RECORD_MAGIC)
			continue;
		struct spool_record_header hdr;
		if (spool_record_check(buf + off, len - off, NULL, &hdr) == SPOOL_DECODE_OK)
			return true;
	}
	return false;
}

struct spool_walk {
	const uint8_t *buf;
	size_t len;
	uint64_t segment_id;
	uint16_t shard;
	spool_scan_fn *fn;
	void *ctx;
	struct spool_scan_stats *stats;
};

static int
spool_emit_span(struct spool_walk *w, enum spool_scan_event event, size_t off, size_t size,
		enum spool_decode_result why)
{
	struct spool_scan_item item;
	memset(&item, 0, sizeof(item));
	item.event = event;
	item.segment_id = w->segment_id;
	item.offset = (uint32_t)off;
	item.size = (uint32_t)size;
	item.data = w->buf + off;
	item.why = why;
	if (event == SPOOL_SCAN_CORRUPT)
		w->stats->corrupt_spans++;
	else if (event == SPOOL_SCAN_HOLE)
		w->stats->holes++;
	else if (event == SPOOL_SCAN_TORN_TAIL)
		w->stats->torn_tails++;
	return w->fn(w->ctx, &item);
}

/* Handle an invalid place at off; sets *next (len to stop). */
static int
spool_walk_invalid(struct spool_walk *w, size_t off, enum spool_decode_result why, size_t *next)
{
	struct spool_record_header hdr;
	size_t found;
	if (!spool_resync(w->buf, w->len, w->segment_id, w->shard, off + SPOOL_RECORD_ALIGN,
			  &found, &hdr)) {
		*next = w->len;
		/* Zeros to the end: the clean end of the log. Records of the
		 * file's previous life (a recycled segment): the clean end too. */
		if (why == SPOOL_DECODE_ZERO && spool_bytes_are_zero(w->buf + off, w->len - off))
			return 0;
		if (spool_has_stale_record(w->buf, w->len, off))
			return 0;
		size_t end = off;
		while (end < w->len && !spool_bytes_are_zero(w->buf + end,
							      ENG_MIN((size_t)SPOOL_BLOCK_SIZE,
								      w->len - end)))
			end += SPOOL_BLOCK_SIZE;
		return spool_emit_span(w, SPOOL_SCAN_TORN_TAIL, off, ENG_MIN(end, w->len) - off, why);
	}
	*next = found;
	bool zero = spool_bytes_are_zero(w->buf + off, found - off);
	return spool_emit_span(w, zero ? SPOOL_SCAN_HOLE : SPOOL_SCAN_CORRUPT, off, found - off, why);
}

static int
spool_walk_segment(struct spool_walk *w)
{
	size_t off = 0;
	for (uint64_t steps = 0; off + SPOOL_RECORD_HEADER_SIZE <= w->len; steps++) {
		ENG_ASSERT(steps <= w->len / SPOOL_RECORD_ALIGN);
		struct spool_record_header hdr;
		struct spool_location here = { w->segment_id, (uint32_t)off, w->shard };
		enum spool_decode_result r = spool_record_check(w->buf + off, w->len - off, &here,
								&hdr);
		if (r != SPOOL_DECODE_OK) {
			size_t next;
			int stop = spool_walk_invalid(w, off, r, &next);
			if (stop != 0)
				return stop;
			ENG_ASSERT(next > off);
			off = next;
			continue;
		}
		struct spool_scan_item item;
		memset(&item, 0, sizeof(item));
		item.event = SPOOL_SCAN_RECORD;
		item.segment_id = w->segment_id;
		item.offset = (uint32_t)off;
		item.size = hdr.size;
		item.header = hdr;
		item.data = w->buf + off;
		w->stats->records++;
		w->stats->bytes_valid += hdr.size;
		int stop = w->fn(w->ctx, &item);
		if (stop != 0)
			return stop;
		off += hdr.size;
	}
	return 0;
}

int
spool_log_scan_segment(const char *dir, uint16_t shard, uint64_t segment_id, spool_scan_fn *fn,
		       void *ctx, struct spool_scan_stats *stats, char *err, size_t err_size)
{
	char path[PATH_MAX];
	ENG_ASSERT(fn != NULL);
	ENG_ASSERT(stats != NULL);
	spool_log_segment_path(dir, segment_id, path, sizeof(path));
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret = spool_read_segment(path, &buf, &len);
	if (ret < 0) {
		snprintf(err, err_size, "read %s: %s", path, strerror(-ret));
		return ret;
	}
	stats->segments++;
	struct spool_walk w = { buf, len, segment_id, shard, fn, ctx, stats };
	ret = spool_walk_segment(&w);
	free(buf);
	return ret;
}

int
spool_log_scan(const char *dir, uint16_t shard, spool_scan_fn *fn, void *ctx,
	       struct spool_scan_stats *stats, char *err, size_t err_size)
{
	ENG_ASSERT(dir != NULL);
	ENG_ASSERT(stats != NULL);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		snprintf(err, err_size, "open %s: %s", dir, strerror(errno));
		return -errno;
	}
	(void)fsync(dfd);
	close(dfd);
	uint64_t *ids = NULL;
	uint32_t count = 0;
	int ret = spool_log_list_segments(dir, &ids, &count);
	if (ret < 0) {
		snprintf(err, err_size, "list %s: %s", dir, strerror(-ret));
		return ret;
	}
	for (uint32_t i = 0; i < count && ret == 0; i++)
		ret = spool_log_scan_segment(dir, shard, ids[i], fn, ctx, stats, err, err_size);
	free(ids);
	return ret;
}
