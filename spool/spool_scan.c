/*
 * spool_scan.c - read segments back: recovery and the offline inspector.
 *
 * A segment is fsynced (with its directory, by spool_log_scan), so no
 * decision rests on bytes that were never durable, then streamed through
 * one caller-owned, aligned window (SPOOL_SCAN_WINDOW_SIZE, read with
 * O_DIRECT where the filesystem allows it) and walked from offset 0. The
 * window is reused across segments; it only grows to hold one record (or
 * one damaged span) larger than itself, never a whole segment. A record
 * that crosses the window's end is read again from its start.
 *
 * A valid record advances by its size. Anything else starts a search, at
 * SPOOL_RECORD_ALIGN steps, for the next record that checks out in full
 * at its own place (magic, version, size, CRC, segment id, offset, shard).
 * The search looks at most SPOOL_SCAN_LOOKAHEAD_SIZE past the bad place
 * (past the end of the record its header claims, when the header still
 * reads), so the zeros after the end of a log cost one window, not the
 * rest of the segment:
 * - none found: the log ends here; if the bytes were not zero (nor
 *   records of a recycled file's previous life) the end is a torn tail
 *   (an unacknowledged commit cut by the crash);
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

static const char *const spool_file_suffixes[] = {
	[SPOOL_FILE_SEG] = ".seg",
	[SPOOL_FILE_READY] = ".ready",
	[SPOOL_FILE_PREP] = ".prep",
};

void
spool_log_file_path(const char *dir, uint64_t segment_id, enum spool_file_state state, char *out,
		    size_t out_size)
{
	ENG_ASSERT(dir != NULL);
	ENG_ASSERT(out_size > 0 && (size_t)state < ENG_ARRAY_COUNT(spool_file_suffixes));
	snprintf(out, out_size, "%s/%016" PRIx64 "%s", dir, segment_id, spool_file_suffixes[state]);
}

/* "<16 hex><suffix of state>" only. */
static bool
spool_parse_file_name(const char *name, enum spool_file_state state, uint64_t *id)
{
	const char *suffix = spool_file_suffixes[state];
	size_t suffix_len = strlen(suffix);
	size_t len = strnlen(name, 64);
	if (len != 16 + suffix_len || memcmp(name + 16, suffix, suffix_len) != 0)
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
spool_log_list_files(const char *dir, enum spool_file_state state, uint64_t **ids,
		     uint32_t *count)
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
		if (!spool_parse_file_name(ent->d_name, state, &id))
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

int
spool_log_list_segments(const char *dir, uint64_t **ids, uint32_t *count)
{
	return spool_log_list_files(dir, SPOOL_FILE_SEG, ids, count);
}

/* O_DIRECT reads: offsets, lengths and the buffer on this alignment. */
#define SPOOL_SCAN_IO_ALIGN 4096u
#define SPOOL_SCAN_GROW_STEP (1u << 20)
/* The largest window: one record of the largest size and the search
 * past it (a damaged span is handed out whole). */
#define SPOOL_SCAN_WINDOW_MAX                                                                  \
	ENG_ALIGN_UP((uint64_t)SPOOL_RECORD_SIZE_MAX + SPOOL_SCAN_LOOKAHEAD_SIZE +             \
			     2 * SPOOL_SCAN_IO_ALIGN,                                          \
		     (uint64_t)SPOOL_SCAN_GROW_STEP)

_Static_assert(SPOOL_SCAN_WINDOW_SIZE % SPOOL_SCAN_GROW_STEP == 0, "window in whole steps");
_Static_assert(SPOOL_SCAN_LOOKAHEAD_SIZE % SPOOL_BLOCK_SIZE == 0, "lookahead in blocks");

void
spool_scan_window_release(struct spool_scan_window *win)
{
	ENG_ASSERT(win != NULL);
	free(win->buf);
	win->buf = NULL;
	win->size = 0;
}

struct spool_walk {
	struct spool_scan_window *win;
	int fd;
	uint64_t len;  /* file size (bytes past it do not exist) */
	uint64_t base; /* file offset of win->buf[0] */
	uint64_t have; /* bytes of the file held from base */
	uint64_t segment_id;
	uint16_t shard;
	spool_scan_fn *fn;
	void *ctx;
	struct spool_scan_stats *stats;
	int error; /* first I/O or allocation error, sticky */
};

static bool
spool_window_reserve(struct spool_walk *w, uint64_t size)
{
	struct spool_scan_window *win = w->win;
	if (size <= win->size)
		return true;
	size = ENG_ALIGN_UP(size, (uint64_t)SPOOL_SCAN_GROW_STEP);
	ENG_ASSERT(size <= SPOOL_SCAN_WINDOW_MAX);
	void *grown = NULL;
	if (posix_memalign(&grown, SPOOL_SCAN_IO_ALIGN, (size_t)size) != 0) {
		w->error = -ENOMEM;
		return false;
	}
	free(win->buf);
	win->buf = grown;
	win->size = size;
	w->have = 0; /* the old bytes are gone */
	w->stats->window_size = ENG_MAX(w->stats->window_size, size);
	w->stats->window_allocs++;
	return true;
}

/* Fill the window from base (aligned): a short count only at the end.
 * Bytes the window already holds from base on are moved, not read again. */
static bool
spool_window_fill(struct spool_walk *w, uint64_t base)
{
	ENG_ASSERT(base % SPOOL_SCAN_IO_ALIGN == 0);
	uint64_t file_end = ENG_ALIGN_UP(w->len, (uint64_t)SPOOL_SCAN_IO_ALIGN);
	uint64_t size = ENG_MIN(w->win->size, file_end - base);
	uint64_t held_end = w->base + w->have;
	uint64_t kept = 0;
	if (w->have > 0 && base >= w->base && base < held_end &&
	    held_end % SPOOL_SCAN_IO_ALIGN == 0) {
		kept = ENG_MIN(held_end - base, size);
		memmove(w->win->buf, w->win->buf + (base - w->base), (size_t)kept);
	}
	uint64_t done = kept;
	for (uint32_t tries = 0; done < size && tries < 1000; tries++) {
		ssize_t n = pread(w->fd, w->win->buf + done, (size_t)(size - done), (off_t)(base + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			w->error = -errno;
			return false;
		}
		if (n == 0)
			break;
		done += (uint64_t)n;
		w->stats->reads++;
		if (done % SPOOL_SCAN_IO_ALIGN != 0)
			break; /* the end of the file */
	}
	w->stats->bytes_read += done - kept;
	w->base = base;
	w->have = ENG_MIN(done, w->len - base);
	return true;
}

/*
 * The bytes at off, at least min(need, len - off) of them, read if they
 * are not in the window yet; *avail is how many the window holds from off.
 * NULL (and w->error set) on an I/O error or if the file shrank.
 */
static const uint8_t *
spool_view(struct spool_walk *w, uint64_t off, uint64_t need, uint64_t *avail)
{
	ENG_ASSERT(off < w->len);
	uint64_t end = ENG_MIN(off + need, w->len);
	if (w->error != 0)
		return NULL;
	bool held = w->win->buf != NULL && off >= w->base && end <= w->base + w->have;
	if (!held) {
		uint64_t base = ENG_ALIGN_DOWN(off, (uint64_t)SPOOL_SCAN_IO_ALIGN);
		uint64_t want = ENG_ALIGN_UP(end - base, (uint64_t)SPOOL_SCAN_IO_ALIGN);
		if (!spool_window_reserve(w, ENG_MAX(want, (uint64_t)SPOOL_SCAN_WINDOW_SIZE)) ||
		    !spool_window_fill(w, base))
			return NULL;
		if (w->base + w->have < end) {
			w->error = -EIO; /* the file shrank under the scan */
			return NULL;
		}
	}
	*avail = w->base + w->have - off;
	return w->win->buf + (off - w->base);
}

static uint32_t
spool_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * spool_record_check() on the record at off as if the whole rest of the
 * file were in memory: a record the window cuts short is read again from
 * its start. *data points at it (valid until the next view).
 */
static enum spool_decode_result
spool_check_at(struct spool_walk *w, uint64_t off, const struct spool_location *loc,
	       struct spool_record_header *hdr, const uint8_t **data)
{
	uint64_t avail = 0;
	const uint8_t *p = spool_view(w, off, SPOOL_RECORD_HEADER_SIZE, &avail);
	if (p == NULL)
		return SPOOL_DECODE_SHORT;
	enum spool_decode_result r = spool_record_check(p, (size_t)avail, loc, hdr);
	if (r == SPOOL_DECODE_SHORT && avail >= SPOOL_RECORD_HEADER_SIZE && off + avail < w->len) {
		uint32_t size = spool_le32(p + 8);
		if (size > avail && size <= SPOOL_RECORD_SIZE_MAX && off + size <= w->len) {
			p = spool_view(w, off, size, &avail);
			if (p == NULL)
				return SPOOL_DECODE_SHORT;
			r = spool_record_check(p, (size_t)avail, loc, hdr);
		}
	}
	*data = p;
	return r;
}

/* 1 if [from, to) is all zero, 0 if not, -1 on an error. */
static int
spool_range_is_zero(struct spool_walk *w, uint64_t from, uint64_t to)
{
	for (uint64_t off = from; off < to;) {
		uint64_t avail = 0;
		uint64_t want = ENG_MIN(to - off, (uint64_t)SPOOL_SCAN_WINDOW_SIZE);
		const uint8_t *p = spool_view(w, off, want, &avail);
		if (p == NULL)
			return -1;
		uint64_t n = ENG_MIN(avail, to - off);
		ENG_ASSERT(n > 0);
		for (uint64_t i = 0; i < n; i++) {
			if (p[i] != 0)
				return 0;
		}
		off += n;
	}
	return 1;
}

/*
 * Next offset in [from, bound) where a full record checks out: at its
 * own place when place is true, anywhere (a stale record of a recycled
 * file) otherwise. 1 found, 0 not, -1 on an error.
 */
static int
spool_search(struct spool_walk *w, uint64_t from, uint64_t bound, bool place, uint64_t *found,
	     struct spool_record_header *hdr)
{
	ENG_ASSERT(from % SPOOL_RECORD_ALIGN == 0);
	ENG_ASSERT(bound <= w->len);
	uint64_t off = from;
	for (uint64_t views = 0; off + SPOOL_RECORD_HEADER_SIZE <= bound; views++) {
		ENG_ASSERT(views <= bound / SPOOL_RECORD_ALIGN + 1);
		uint64_t avail = 0;
		const uint8_t *p = spool_view(w, off, SPOOL_RECORD_HEADER_SIZE, &avail);
		if (p == NULL)
			return -1;
		/* Skip to the next magic inside what the window holds. */
		uint64_t stop = ENG_MIN(bound, off + avail);
		uint32_t magic = 0;
		while (off + SPOOL_RECORD_HEADER_SIZE <= stop) {
			memcpy(&magic, p, sizeof(magic));
			if (magic == SPOOL_RECORD_MAGIC)
				break;
			off += SPOOL_RECORD_ALIGN;
			p += SPOOL_RECORD_ALIGN;
		}
		if (magic != SPOOL_RECORD_MAGIC || off + SPOOL_RECORD_HEADER_SIZE > stop)
			continue; /* view again from off */
		struct spool_location here = { w->segment_id, (uint32_t)off, w->shard };
		const uint8_t *data = NULL;
		enum spool_decode_result r = spool_check_at(w, off, place ? &here : NULL, hdr, &data);
		if (w->error != 0)
			return -1;
		if (r == SPOOL_DECODE_OK) {
			*found = off;
			return 1;
		}
		off += SPOOL_RECORD_ALIGN;
	}
	return 0;
}

static int
spool_emit_span(struct spool_walk *w, enum spool_scan_event event, uint64_t off, uint64_t size,
		enum spool_decode_result why)
{
	ENG_ASSERT(size > 0 && off + size <= w->len);
	uint64_t avail = 0;
	const uint8_t *data = spool_view(w, off, size, &avail); /* handed out whole */
	if (data == NULL)
		return w->error;
	struct spool_scan_item item;
	memset(&item, 0, sizeof(item));
	item.event = event;
	item.segment_id = w->segment_id;
	item.offset = (uint32_t)off;
	item.size = (uint32_t)size;
	item.data = data;
	item.why = why;
	if (event == SPOOL_SCAN_CORRUPT)
		w->stats->corrupt_spans++;
	else if (event == SPOOL_SCAN_HOLE)
		w->stats->holes++;
	else if (event == SPOOL_SCAN_TORN_TAIL)
		w->stats->torn_tails++;
	return w->fn(w->ctx, &item);
}

/* How far the search after a bad place at off may look: the lookahead,
 * past the end of the record its header claims when the header reads. */
static uint64_t
spool_search_horizon(struct spool_walk *w, uint64_t off, enum spool_decode_result why)
{
	uint64_t reach = 0;
	if (why == SPOOL_DECODE_BAD_CRC || why == SPOOL_DECODE_BAD_PLACE ||
	    why == SPOOL_DECODE_BAD_BODY || why == SPOOL_DECODE_SHORT) {
		uint64_t avail = 0;
		const uint8_t *p = spool_view(w, off, SPOOL_RECORD_HEADER_SIZE, &avail);
		if (p != NULL && avail >= SPOOL_RECORD_HEADER_SIZE &&
		    spool_le32(p + 8) <= SPOOL_RECORD_SIZE_MAX)
			reach = spool_le32(p + 8);
	}
	return ENG_MIN(w->len, off + reach + SPOOL_SCAN_LOOKAHEAD_SIZE);
}

/* No record follows the bad place at off (up to horizon): a clean end,
 * or a torn tail. */
static int
spool_walk_end(struct spool_walk *w, uint64_t off, uint64_t horizon, enum spool_decode_result why)
{
	struct spool_record_header hdr;
	uint64_t found;
	/* Zeros: the clean end of the log. Records of the file's previous
	 * life (a recycled segment): the clean end too. */
	int zero = why == SPOOL_DECODE_ZERO ? spool_range_is_zero(w, off, horizon) : 0;
	if (zero != 0)
		return zero < 0 ? w->error : 0;
	int stale = spool_search(w, off, horizon, false, &found, &hdr);
	if (stale != 0)
		return stale < 0 ? w->error : 0;
	uint64_t end = off;
	for (; end < horizon; end += SPOOL_BLOCK_SIZE) {
		int blank = spool_range_is_zero(w, end, ENG_MIN(end + SPOOL_BLOCK_SIZE, horizon));
		if (blank < 0)
			return w->error;
		if (blank == 1)
			break;
	}
	if (end == off) /* a zero block, then bytes that are no record */
		end = ENG_MIN(off + SPOOL_BLOCK_SIZE, horizon);
	return spool_emit_span(w, SPOOL_SCAN_TORN_TAIL, off, ENG_MIN(end, horizon) - off, why);
}

/* Handle an invalid place at off; sets *next (len to stop). */
static int
spool_walk_invalid(struct spool_walk *w, uint64_t off, enum spool_decode_result why,
		   uint64_t *next)
{
	struct spool_record_header hdr;
	uint64_t found = 0;
	uint64_t horizon = spool_search_horizon(w, off, why);
	if (why == SPOOL_DECODE_ZERO) {
		/* Zeros up to the horizon hold no record: the clean end of the
		 * log, without a search (the usual case, once per segment). */
		int zero = spool_range_is_zero(w, off, horizon);
		if (zero != 0) {
			*next = w->len;
			return zero < 0 ? w->error : 0;
		}
	}
	int got = spool_search(w, off + SPOOL_RECORD_ALIGN, horizon, true, &found, &hdr);
	if (got < 0)
		return w->error;
	if (got == 0) {
		*next = w->len;
		return spool_walk_end(w, off, horizon, why);
	}
	*next = found;
	int zero = spool_range_is_zero(w, off, found);
	if (zero < 0)
		return w->error;
	return spool_emit_span(w, zero == 1 ? SPOOL_SCAN_HOLE : SPOOL_SCAN_CORRUPT, off, found - off,
			       why);
}

static int
spool_walk_segment(struct spool_walk *w)
{
	uint64_t off = 0;
	for (uint64_t steps = 0; off + SPOOL_RECORD_HEADER_SIZE <= w->len; steps++) {
		ENG_ASSERT(steps <= w->len / SPOOL_RECORD_ALIGN);
		struct spool_record_header hdr;
		struct spool_location here = { w->segment_id, (uint32_t)off, w->shard };
		const uint8_t *data = NULL;
		enum spool_decode_result r = spool_check_at(w, off, &here, &hdr, &data);
		if (w->error != 0)
			return w->error;
		if (r != SPOOL_DECODE_OK) {
			uint64_t next = 0;
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
		item.data = data;
		w->stats->records++;
		w->stats->bytes_valid += hdr.size;
		int stop = w->fn(w->ctx, &item);
		if (stop != 0)
			return stop;
		off += hdr.size;
	}
	return 0;
}

/* Open for reading (O_DIRECT where the filesystem has it) and fsync. */
static int
spool_segment_open(const char *path, uint64_t *len)
{
	static const int modes[] = { O_RDWR | O_DIRECT, O_RDONLY | O_DIRECT, O_RDWR, O_RDONLY };
	int fd = -1;
	for (size_t i = 0; i < ENG_ARRAY_COUNT(modes) && fd < 0; i++) {
		fd = open(path, modes[i] | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT)
			return -ENOENT;
	}
	if (fd < 0)
		return -errno;
	struct stat st;
	int ret = 0;
	if (fstat(fd, &st) != 0)
		ret = -errno;
	else if (fsync(fd) != 0 && errno != EBADF && errno != EINVAL)
		ret = -errno;
	if (ret < 0) {
		close(fd);
		return ret;
	}
	/* Offsets in records are 32-bit: nothing past 4 GiB is a record. */
	*len = ENG_MIN((uint64_t)st.st_size, (uint64_t)UINT32_MAX & ~(uint64_t)4095);
	return fd;
}

int
spool_log_scan_segment_in(struct spool_scan_window *win, const char *dir, uint16_t shard,
			  uint64_t segment_id, spool_scan_fn *fn, void *ctx,
			  struct spool_scan_stats *stats, char *err, size_t err_size)
{
	char path[PATH_MAX];
	ENG_ASSERT(win != NULL && fn != NULL);
	ENG_ASSERT(stats != NULL);
	spool_log_segment_path(dir, segment_id, path, sizeof(path));
	struct spool_walk w;
	memset(&w, 0, sizeof(w));
	int fd = spool_segment_open(path, &w.len);
	if (fd < 0) {
		snprintf(err, err_size, "read %s: %s", path, strerror(-fd));
		return fd;
	}
	stats->segments++;
	w.win = win;
	w.fd = fd;
	w.segment_id = segment_id;
	w.shard = shard;
	w.fn = fn;
	w.ctx = ctx;
	w.stats = stats;
	int ret = spool_walk_segment(&w);
	close(fd);
	if (w.error != 0 && ret == w.error)
		snprintf(err, err_size, "read %s: %s", path, strerror(-w.error));
	return ret;
}

int
spool_log_scan_segment(const char *dir, uint16_t shard, uint64_t segment_id, spool_scan_fn *fn,
		       void *ctx, struct spool_scan_stats *stats, char *err, size_t err_size)
{
	struct spool_scan_window win = { NULL, 0 };
	int ret = spool_log_scan_segment_in(&win, dir, shard, segment_id, fn, ctx, stats, err,
					    err_size);
	spool_scan_window_release(&win);
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
	struct spool_scan_window win = { NULL, 0 };
	for (uint32_t i = 0; i < count && ret == 0; i++)
		ret = spool_log_scan_segment_in(&win, dir, shard, ids[i], fn, ctx, stats, err,
						err_size);
	spool_scan_window_release(&win);
	free(ids);
	return ret;
}
