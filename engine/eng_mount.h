/*
 * eng_mount.h - which filesystem holds the spool, and is it durable?
 * (reliability.md KRN-06).
 *
 * What: the spool acknowledges a message only once its bytes are written
 * with RWF_DSYNC or fdatasync. Those calls end in a cache flush (FUA or
 * FLUSH) only when the filesystem issues one: ext4 mounted with
 * `barrier=0` / `nobarrier` (and xfs `nobarrier` on kernels before 4.19,
 * btrfs `nobarrier`) skips them, so a power cut can lose acknowledged
 * mail that sat in the disk's volatile write cache. Memory-backed
 * filesystems (tmpfs, ramfs) lose everything; the spool refuses them
 * unless told otherwise, and if told, this still says so. The daemon
 * prints one warning line at start-up and runs on (an operator may have a
 * battery-backed cache); it does not exit.
 *
 * How: /proc/self/mountinfo (proc(5)) is parsed as (pointer, length)
 * text, never relying on a NUL. Per line: mount ID, parent ID,
 * major:minor, root, mount point, per-mount options, optional fields,
 * "-", filesystem type, source, superblock options. The mount point and
 * source use octal escapes for space, tab, newline and backslash
 * (`\040`, `\011`, `\012`, `\134`); they are decoded. The mount holding
 * a path is the one with the longest mount point that is the path or a
 * parent folder of it; among equal mount points the later line wins
 * (a mount stacked over an earlier one at the same place).
 *
 * Bounds: at most ENG_MOUNT_LINES_MAX lines, ENG_MOUNT_FIELDS_MAX fields
 * per line, mount points up to ENG_MOUNT_PATH_MAX - 1 bytes, the file read
 * up to ENG_MOUNT_FILE_SIZE_MAX bytes. Lines that do not fit these or the
 * grammar are skipped (a malformed line never matches anything).
 *
 * Ownership: every function borrows its arguments until it returns and
 * writes only into caller memory; no allocation except the file buffer of
 * eng_mount_check_spool, freed before it returns.
 */
#ifndef ENG_MOUNT_H
#define ENG_MOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_MOUNT_PATH_MAX 4096u
#define ENG_MOUNT_FSTYPE_MAX 64u
#define ENG_MOUNT_SOURCE_MAX 256u
#define ENG_MOUNT_OPTION_MAX 32u          /* the barrier option as written */
#define ENG_MOUNT_FIELDS_MAX 64u          /* optional fields are few in practice */
#define ENG_MOUNT_LINES_MAX 1000000u
#define ENG_MOUNT_FILE_SIZE_MAX (64u << 20)

/* One mountinfo line, decoded. Strings are NUL-terminated copies. */
struct eng_mount_entry {
	char mount_point[ENG_MOUNT_PATH_MAX];
	size_t mount_point_len;
	char fs_type[ENG_MOUNT_FSTYPE_MAX];
	char source[ENG_MOUNT_SOURCE_MAX]; /* truncated if longer (for messages only) */
	/* "nobarrier" or "barrier=0" (either option list), else "". */
	char barrier_off_option[ENG_MOUNT_OPTION_MAX];
	uint32_t line_index; /* 0-based line of mountinfo it came from */
};

/* The mount that holds `path` (absolute, no "." or ".." parts, no
 * trailing slash except "/" itself: what realpath(3) gives) in the
 * mountinfo text. Returns 0 and fills *out, -ENOENT when no line's mount
 * point covers the path, -EINVAL when the path is not absolute or too
 * long. */
__attribute__((warn_unused_result)) int
eng_mount_find(const char *text, size_t text_len, const char *path, size_t path_len,
	       struct eng_mount_entry *out);

/* Does this mount put acknowledged mail at risk? True, with a one-line
 * warning (no newline) in buf, naming `spool_dir`, the mount and why;
 * false (buf untouched) when barriers are on and the medium is a disk. */
bool
eng_mount_warning(const struct eng_mount_entry *mount, const char *spool_dir, char *buf,
		  size_t buf_size);

/* The start-up check: resolve spool_dir, read `mountinfo_path` (normally
 * /proc/self/mountinfo), find the mount. Returns 1 with the warning in
 * buf, 0 when the mount is fine (buf empty), or -errno when it cannot
 * tell (why in buf). */
__attribute__((warn_unused_result)) int
eng_mount_check_spool(const char *mountinfo_path, const char *spool_dir, char *buf,
		      size_t buf_size);

#endif
