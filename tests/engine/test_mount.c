/*
 * test_mount.c - the spool mount check (engine/eng_mount.h, KRN-06).
 *
 * Sample /proc/self/mountinfo text (lines as the kernel prints them,
 * including ext4 with `nobarrier`, which is how ext4 shows both
 * `barrier=0` and `nobarrier`): the longest mount point wins and only on a
 * folder boundary, a stacked mount beats the one below it, octal escapes
 * in mount points decode, malformed lines never match, nothing is read
 * beyond the given length (every prefix of the text is parsed from an
 * exact-size heap copy, so ASan sees any over-read), and the warning says
 * what it should. eng_mount_check_spool is run on a mountinfo file
 * written by the test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_mount.h"

static const char sample[] =
	"21 26 0:20 / /proc rw,relatime - proc proc rw\n"
	"24 23 0:22 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683620k\n"
	"26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"
	"41 26 7:0 / /srv/spool rw,relatime shared:5 master:1 - ext4 /dev/loop0 rw,nobarrier\n"
	"42 26 7:1 / /srv/spool2 rw,relatime - xfs /dev/loop1 rw,inode64,logbufs=8,noquota\n"
	"43 26 7:2 / /mnt/my\\040disk rw - ext4 /dev/sdb\\0401 rw,barrier=0\n"
	"29 24 0:26 / /dev/shm rw,relatime - ramfs none rw\n";

static struct eng_mount_entry m;

static int
find(const char *text, const char *path)
{
	memset(&m, 0xa5, sizeof(m));
	return eng_mount_find(text, strlen(text), path, strlen(path), &m);
}

Test(mount, longest_mount_point_on_a_folder_boundary)
{
	cr_assert_eq(find(sample, "/srv/spool/ringmail"), 0);
	cr_assert_str_eq(m.mount_point, "/srv/spool");
	cr_assert_str_eq(m.fs_type, "ext4");
	cr_assert_str_eq(m.source, "/dev/loop0");
	cr_assert_str_eq(m.barrier_off_option, "nobarrier");
	cr_assert_eq(m.line_index, 3);
	cr_assert_eq(find(sample, "/srv/spool"), 0);
	cr_assert_str_eq(m.mount_point, "/srv/spool");
	/* "/srv/spool2" is not under "/srv/spool". */
	cr_assert_eq(find(sample, "/srv/spool2/x"), 0);
	cr_assert_str_eq(m.mount_point, "/srv/spool2");
	cr_assert_str_eq(m.fs_type, "xfs");
	cr_assert_str_eq(m.barrier_off_option, "");
	cr_assert_eq(find(sample, "/srv/spoolx"), 0);
	cr_assert_str_eq(m.mount_point, "/");
	cr_assert_eq(m.mount_point_len, 1);
	cr_assert_eq(find(sample, "/"), 0);
	cr_assert_str_eq(m.mount_point, "/");
}

Test(mount, stacked_mount_later_line_wins)
{
	cr_assert_eq(find(sample, "/dev/shm/q"), 0);
	cr_assert_str_eq(m.fs_type, "ramfs");
	cr_assert_eq(m.line_index, 6);
}

Test(mount, octal_escapes_in_mount_point_and_source)
{
	cr_assert_eq(find(sample, "/mnt/my disk/spool"), 0);
	cr_assert_str_eq(m.mount_point, "/mnt/my disk");
	cr_assert_str_eq(m.source, "/dev/sdb 1");
	cr_assert_str_eq(m.barrier_off_option, "barrier=0");
	/* The escaped spelling is not the path. */
	cr_assert_eq(find(sample, "/mnt/my\\040disk/spool"), 0);
	cr_assert_str_eq(m.mount_point, "/");
	const char tab[] = "1 1 8:1 / /a\\011b\\134c\\012d rw - ext4 /dev/x rw\n";
	cr_assert_eq(find(tab, "/a\tb\\c\nd/e"), 0);
	cr_assert_str_eq(m.mount_point, "/a\tb\\c\nd");
	/* A backslash without three octal digits is kept as it is. */
	const char odd[] = "1 1 8:1 / /a\\9b\\01 rw - ext4 /dev/x rw\n";
	cr_assert_eq(find(odd, "/a\\9b\\01"), 0);
}

Test(mount, malformed_lines_never_match)
{
	const char *bad[] = {
		"1 1 8:1 / /srv rw ext4 /dev/x rw\n",             /* no "-" */
		"1 1 8:1 / /srv rw - ext4 /dev/x\n",              /* no super options */
		"1 1 8:1 / /srv rw - ext4 /dev/x rw extra\n",     /* one field too many */
		"1 1 8:1 / srv rw - ext4 /dev/x rw\n",            /* not absolute */
		"1 1 8:1 / /s\\000rv rw - ext4 /dev/x rw\n",      /* escaped NUL */
		"1 1 8:1 / /srv rw - ext4xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		"xxxxxxxxxxxxxxx /dev/x rw\n",                    /* type too long */
		"\n\n\n",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(find(bad[i], "/srv/q"), -ENOENT, "line %zu", i);
	/* A bad line does not hide a good one after it. */
	char both[512];
	snprintf(both, sizeof(both), "%s%s", bad[0], "2 1 8:2 / /srv rw - xfs /dev/y rw\n");
	cr_assert_eq(find(both, "/srv/q"), 0);
	cr_assert_str_eq(m.fs_type, "xfs");
	cr_assert_eq(m.line_index, 1);
}

Test(mount, too_many_fields_and_too_long_mount_point_are_skipped)
{
	size_t size = 2 * ENG_MOUNT_PATH_MAX + 4096;
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t n = (size_t)snprintf(text, size, "1 1 8:1 / /srv rw");
	for (unsigned i = 0; i < ENG_MOUNT_FIELDS_MAX; i++)
		n += (size_t)snprintf(text + n, size - n, " opt:%u", i);
	n += (size_t)snprintf(text + n, size - n, " - ext4 /dev/x rw\n1 1 8:1 / /");
	memset(text + n, 'a', ENG_MOUNT_PATH_MAX);
	n += ENG_MOUNT_PATH_MAX;
	n += (size_t)snprintf(text + n, size - n, " rw - ext4 /dev/x rw\n");
	cr_assert_eq(eng_mount_find(text, n, "/srv/q", 6, &m), -ENOENT);
	free(text);
}

Test(mount, last_line_without_newline_and_no_read_past_length)
{
	const char text[] = "1 1 8:1 / /srv rw - ext4 /dev/x rw,nobarrier";
	cr_assert_eq(find(text, "/srv/q"), 0);
	cr_assert_str_eq(m.barrier_off_option, "nobarrier");
	/* Only the first line is inside the length given: the second, which
	 * would match, must not be seen. */
	const char two[] = "1 1 8:1 / /a rw - ext4 /dev/x rw\n2 1 8:2 / /srv rw - xfs /dev/y rw\n";
	size_t first = (size_t)(strchr(two, '\n') - two) + 1;
	cr_assert_eq(eng_mount_find(two, first, "/srv/q", 6, &m), -ENOENT);
	/* "nobarrierx" and "xnobarrier" are other options. */
	const char near[] = "1 1 8:1 / /srv rw - ext4 /dev/x nobarrierx,xnobarrier,barrier=01\n";
	cr_assert_eq(find(near, "/srv"), 0);
	cr_assert_str_eq(m.barrier_off_option, "");
}

Test(mount, every_prefix_parses_without_overread)
{
	size_t len = strlen(sample);
	for (size_t cut = 0; cut <= len; cut++) {
		char *copy = malloc(cut > 0 ? cut : 1);
		cr_assert_not_null(copy);
		memcpy(copy, sample, cut);
		int ret = eng_mount_find(copy, cut, "/srv/spool/x", 12, &m);
		cr_assert(ret == 0 || ret == -ENOENT);
		if (ret == 0)
			cr_assert_eq(m.mount_point[0], '/');
		free(copy);
	}
}

Test(mount, path_must_be_absolute)
{
	cr_assert_eq(find(sample, "srv/spool"), -EINVAL);
	cr_assert_eq(find(sample, ""), -EINVAL);
}

Test(mount, warning_names_the_risk)
{
	char buf[8192];
	cr_assert_eq(find(sample, "/srv/spool/r"), 0);
	cr_assert(eng_mount_warning(&m, "/srv/spool/r", buf, sizeof(buf)));
	cr_assert_not_null(strstr(buf, "warning: spool /srv/spool/r"));
	cr_assert_not_null(strstr(buf, "nobarrier"));
	cr_assert_not_null(strstr(buf, "durability is not guaranteed"));
	cr_assert_null(strchr(buf, '\n'));
	cr_assert_eq(find(sample, "/srv/spool2/r"), 0);
	buf[0] = 'X';
	cr_assert_not(eng_mount_warning(&m, "/srv/spool2/r", buf, sizeof(buf)));
	cr_assert_eq(buf[0], 'X');
	cr_assert_eq(find(sample, "/dev/shm/r"), 0);
	cr_assert(eng_mount_warning(&m, "/dev/shm/r", buf, sizeof(buf)));
	cr_assert_not_null(strstr(buf, "ramfs"));
	cr_assert_eq(find(sample, "/proc/x"), 0);
	cr_assert_not(eng_mount_warning(&m, "/proc/x", buf, sizeof(buf)));
}

Test(mount, check_spool_reads_a_mountinfo_file)
{
	char dir[] = "/tmp/test-mount-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char info[sizeof(dir) + 16];
	snprintf(info, sizeof(info), "%s/mi", dir);
	FILE *f = fopen(info, "w");
	cr_assert_not_null(f);
	fprintf(f, "26 1 254:0 / / rw - ext4 /dev/vda rw\n"
		   "41 26 7:0 / %s rw - ext4 /dev/loop9 rw,nobarrier\n", dir);
	fclose(f);
	char buf[8192];
	cr_assert_eq(eng_mount_check_spool(info, dir, buf, sizeof(buf)), 1);
	cr_assert_not_null(strstr(buf, "/dev/loop9"));
	cr_assert_eq(eng_mount_check_spool(info, "/", buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, "");
	cr_assert_eq(eng_mount_check_spool(info, "/nonexistent-spool-dir-x", buf, sizeof(buf)),
		     -ENOENT);
	cr_assert_not_null(strstr(buf, "realpath"));
	unlink(info);
	cr_assert_eq(eng_mount_check_spool(info, dir, buf, sizeof(buf)), -ENOENT);
	rmdir(dir);
	/* The real file: whatever holds /, it is found. */
	cr_assert_geq(eng_mount_check_spool("/proc/self/mountinfo", "/", buf, sizeof(buf)), 0);
}
