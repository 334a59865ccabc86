/*
 * eng_mount.c - the spool's filesystem and its mount options (KRN-06).
 *
 * See eng_mount.h for what is checked and why. The parser walks the text
 * with memchr over (pointer, length); every loop is bounded by the text
 * length and by the ENG_MOUNT_* limits. Nothing here is on a hot path: it
 * runs once at start-up.
 */
#include "engine/eng_mount.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_common.h"

_Static_assert(ENG_MOUNT_PATH_MAX >= PATH_MAX, "a realpath fits a mount point buffer");

struct eng_mount_span {
	const char *ptr;
	size_t len;
};

static bool
mount_span_is(struct eng_mount_span s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Split one line at spaces into at most `max` fields; returns the count,
 * or 0 when the line has more fields than that. */
static uint32_t
mount_split(const char *line, size_t len, struct eng_mount_span *fields, uint32_t max)
{
	uint32_t count = 0;
	size_t pos = 0;
	while (pos < len) {
		ENG_ASSERT(count <= max);
		if (line[pos] == ' ') {
			pos++;
			continue;
		}
		const char *sp = memchr(line + pos, ' ', len - pos);
		size_t end = sp != NULL ? (size_t)(sp - line) : len;
		if (count == max)
			return 0;
		fields[count].ptr = line + pos;
		fields[count].len = end - pos;
		count++;
		pos = end;
	}
	return count;
}

static bool
mount_is_octal(char c)
{
	return c >= '0' && c <= '7';
}

/* Decode proc's octal escapes into dst (NUL-terminated). False when it
 * does not fit or decodes a NUL. A backslash not followed by three octal
 * digits is kept as it is. */
static bool
mount_unescape(struct eng_mount_span s, char *dst, size_t dst_size, size_t *out_len)
{
	ENG_ASSERT(dst_size > 0);
	size_t n = 0;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.ptr[i];
		if (c == '\\' && s.len - i >= 4 && mount_is_octal(s.ptr[i + 1]) &&
		    mount_is_octal(s.ptr[i + 2]) && mount_is_octal(s.ptr[i + 3])) {
			unsigned v = (unsigned)(s.ptr[i + 1] - '0') * 64u;
			v += (unsigned)(s.ptr[i + 2] - '0') * 8u + (unsigned)(s.ptr[i + 3] - '0');
			if (v == 0 || v > 255u)
				return false;
			c = (char)(unsigned char)v;
			i += 3;
		}
		if (n + 1 >= dst_size)
			return false;
		dst[n++] = c;
	}
	dst[n] = '\0';
	*out_len = n;
	return true;
}

/* Copy for messages: decoded if possible, cut to fit otherwise. */
static void
mount_copy_text(struct eng_mount_span s, char *dst, size_t dst_size)
{
	size_t n = 0;
	if (mount_unescape(s, dst, dst_size, &n))
		return;
	n = ENG_MIN(s.len, dst_size - 1);
	memcpy(dst, s.ptr, n);
	dst[n] = '\0';
}

/* "nobarrier" or "barrier=0" among comma-separated options: copied to out. */
static void
mount_find_barrier_off(struct eng_mount_span opts, char *out, size_t out_size)
{
	size_t pos = 0;
	while (pos < opts.len) {
		const char *comma = memchr(opts.ptr + pos, ',', opts.len - pos);
		size_t end = comma != NULL ? (size_t)(comma - opts.ptr) : opts.len;
		struct eng_mount_span opt = { opts.ptr + pos, end - pos };
		if (mount_span_is(opt, "nobarrier") || mount_span_is(opt, "barrier=0")) {
			ENG_ASSERT(opt.len < out_size);
			memcpy(out, opt.ptr, opt.len);
			out[opt.len] = '\0';
			return;
		}
		pos = end + 1;
	}
}

/* One line into *e; false when it does not follow the grammar. */
static bool
mount_parse_line(const char *line, size_t len, struct eng_mount_entry *e)
{
	struct eng_mount_span f[ENG_MOUNT_FIELDS_MAX];
	uint32_t count = mount_split(line, len, f, ENG_MOUNT_FIELDS_MAX);
	/* 6 fixed fields, "-", then type, source, super options. */
	uint32_t sep = 6;
	while (sep < count && !mount_span_is(f[sep], "-"))
		sep++;
	if (count < 10 || sep + 4 != count)
		return false;
	if (!mount_unescape(f[4], e->mount_point, sizeof(e->mount_point), &e->mount_point_len))
		return false;
	if (e->mount_point_len == 0 || e->mount_point[0] != '/')
		return false;
	if (f[sep + 1].len >= sizeof(e->fs_type))
		return false;
	memcpy(e->fs_type, f[sep + 1].ptr, f[sep + 1].len);
	e->fs_type[f[sep + 1].len] = '\0';
	mount_copy_text(f[sep + 2], e->source, sizeof(e->source));
	e->barrier_off_option[0] = '\0';
	mount_find_barrier_off(f[5], e->barrier_off_option, sizeof(e->barrier_off_option));
	mount_find_barrier_off(f[sep + 3], e->barrier_off_option, sizeof(e->barrier_off_option));
	return true;
}

/* Is `mp` the path itself or one of its parent folders? */
static bool
mount_covers(const char *mp, size_t mp_len, const char *path, size_t path_len)
{
	ENG_ASSERT(mp_len > 0);
	if (mp_len == 1 && mp[0] == '/')
		return true;
	if (mp_len > path_len || memcmp(mp, path, mp_len) != 0)
		return false;
	return mp_len == path_len || path[mp_len] == '/';
}

int
eng_mount_find(const char *text, size_t text_len, const char *path, size_t path_len,
	       struct eng_mount_entry *out)
{
	ENG_ASSERT(text != NULL || text_len == 0);
	ENG_ASSERT(out != NULL);
	if (path_len == 0 || path[0] != '/' || path_len >= ENG_MOUNT_PATH_MAX)
		return -EINVAL;
	static _Thread_local struct eng_mount_entry e;
	bool found = false;
	size_t pos = 0;
	for (uint32_t line_index = 0; pos < text_len && line_index < ENG_MOUNT_LINES_MAX;
	     line_index++) {
		const char *nl = memchr(text + pos, '\n', text_len - pos);
		size_t end = nl != NULL ? (size_t)(nl - text) : text_len;
		if (mount_parse_line(text + pos, end - pos, &e) &&
		    mount_covers(e.mount_point, e.mount_point_len, path, path_len) &&
		    (!found || e.mount_point_len >= out->mount_point_len)) {
			e.line_index = line_index;
			*out = e;
			found = true;
		}
		pos = end + 1;
	}
	ENG_ASSERT(!found || out->mount_point_len <= path_len || out->mount_point_len == 1);
	return found ? 0 : -ENOENT;
}

bool
eng_mount_warning(const struct eng_mount_entry *m, const char *spool_dir, char *buf,
		  size_t buf_size)
{
	ENG_ASSERT(m != NULL && spool_dir != NULL);
	ENG_ASSERT(buf_size > 0);
	if (strcmp(m->fs_type, "tmpfs") == 0 || strcmp(m->fs_type, "ramfs") == 0) {
		snprintf(buf, buf_size,
			 "warning: spool %s is on %s (mounted at %s), which is memory: an "
			 "acknowledged message does not survive a power loss or reboot; durability "
			 "is not guaranteed",
			 spool_dir, m->fs_type, m->mount_point);
		return true;
	}
	if (m->barrier_off_option[0] == '\0')
		return false;
	snprintf(buf, buf_size,
		 "warning: spool %s is on %s %s mounted at %s with %s: the disk's write cache is "
		 "not flushed, so acknowledged messages can be lost in a power failure; "
		 "durability is not guaranteed (remount with barriers on, the default)",
		 spool_dir, m->fs_type, m->source, m->mount_point, m->barrier_off_option);
	return true;
}

/* The whole file into a malloc'd buffer (proc files report size 0). */
static int
mount_read_file(const char *path, char **text, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 64u << 10, n = 0;
	char *buf = malloc(cap);
	int ret = buf != NULL ? 0 : -ENOMEM;
	for (uint32_t turns = 0; ret == 0; turns++) {
		ENG_ASSERT(n <= cap && turns < UINT32_MAX);
		if (n == cap && cap >= ENG_MOUNT_FILE_SIZE_MAX) {
			ret = -EFBIG;
			break;
		}
		if (n == cap) {
			char *bigger = realloc(buf, cap * 2);
			if (bigger == NULL) {
				ret = -ENOMEM;
				break;
			}
			buf = bigger;
			cap *= 2;
		}
		ssize_t got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			ret = -errno;
		if (got <= 0)
			break;
		n += (size_t)got;
	}
	close(fd);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	*text = buf;
	*len = n;
	return 0;
}

int
eng_mount_check_spool(const char *mountinfo_path, const char *spool_dir, char *buf,
		      size_t buf_size)
{
	ENG_ASSERT(mountinfo_path != NULL && spool_dir != NULL);
	ENG_ASSERT(buf != NULL && buf_size > 0);
	buf[0] = '\0';
	char real[PATH_MAX];
	if (realpath(spool_dir, real) == NULL) {
		int e = errno;
		snprintf(buf, buf_size, "spool %s: realpath: %s", spool_dir, strerror(e));
		return -e;
	}
	char *text = NULL;
	size_t len = 0;
	int ret = mount_read_file(mountinfo_path, &text, &len);
	if (ret < 0) {
		snprintf(buf, buf_size, "%s: %s", mountinfo_path, strerror(-ret));
		return ret;
	}
	static _Thread_local struct eng_mount_entry m;
	ret = eng_mount_find(text, len, real, strlen(real), &m);
	free(text);
	if (ret < 0) {
		snprintf(buf, buf_size, "spool %s: no mount in %s holds %s", spool_dir,
			 mountinfo_path, real);
		return ret;
	}
	return eng_mount_warning(&m, spool_dir, buf, buf_size) ? 1 : 0;
}
