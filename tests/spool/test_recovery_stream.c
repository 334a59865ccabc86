/*
 * test_recovery_stream.c - fast, bounded recovery: segments streamed
 * through one reused window, records across the window's edge and larger
 * than it, a scan that reads the log and not the zeros after it, segment
 * files named by state (.prep, .ready, .seg), ready files adopted without
 * zeroing, the .ready -> .seg rename gating acknowledgements, and the
 * free-space reserve counting the next segment.
 *
 * Messages are identified by created_ns (their index) and checked by
 * length and CRC-32C of the body, so large bodies need not stay in memory.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ring/ring.h"
#include "spool/spool.h"
#include "spool/spool_crc32c.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

#define S_MSGS 512
#define S_MARKER 9999u /* created_ns of a record no run acknowledged */

struct smsg {
	uint8_t *body;
	size_t len;
	uint32_t crc;
	struct spool_span rcpt;
	struct spool_message message;
	struct spool_append op;
	bool done;
	int32_t result;
};

static struct smsg smsgs[S_MSGS];
static uint32_t seen[S_MSGS];
static uint32_t seen_bad;
static uint32_t seen_marker;

static void
smsg_done(struct spool_append *op, int32_t result)
{
	struct smsg *m = op->ctx;
	m->done = true;
	m->result = result;
}

static void
smsg_init(uint32_t i, size_t size)
{
	struct smsg *m = &smsgs[i];
	free(m->body);
	memset(m, 0, sizeof(*m));
	m->body = malloc(size + 256);
	cr_assert(m->body != NULL);
	m->len = test_body(i, size, m->body, size + 256);
	m->crc = spool_crc32c(0, m->body, m->len);
	m->rcpt.data = (const uint8_t *)"rcpt@example.net";
	m->rcpt.size = 16;
	m->message.created_ns = i;
	m->message.sender.data = (const uint8_t *)"s@example.org";
	m->message.sender.size = 13;
	m->message.rcpt_count = 1;
	m->message.rcpts = &m->rcpt;
	m->message.body.data = m->body;
	m->message.body.size = (uint32_t)m->len;
	m->op.callback = smsg_done;
	m->op.ctx = m;
	m->op.input.message = &m->message;
}

/* Write [from, to) in one loop turn and wait for every callback; the
 * bodies are freed once written (length and CRC stay). */
static void
swrite(struct ring *ring, struct spool *sp, uint32_t from, uint32_t to, size_t size)
{
	for (uint32_t i = from; i < to; i++) {
		smsg_init(i, size);
		cr_assert_eq(spool_write_message(sp, &smsgs[i].op), 0);
	}
	for (uint32_t turns = 0; turns < 100000; turns++) {
		bool all = true;
		for (uint32_t i = from; i < to && all; i++)
			all = smsgs[i].done;
		if (all)
			break;
		cr_assert(ring_run_once(ring, 100000000ull) >= 0);
	}
	for (uint32_t i = from; i < to; i++) {
		cr_assert(smsgs[i].done, "message %u never called back", i);
		free(smsgs[i].body);
		smsgs[i].body = NULL;
	}
}

static void
seen_rcpt(void *ctx, const struct spool_recovered *r)
{
	(void)ctx;
	uint64_t n = r->msg->created_ns;
	if (n == S_MARKER) {
		seen_marker++;
		return;
	}
	if (n >= S_MSGS || r->msg->body.size != smsgs[n].len ||
	    spool_crc32c(0, r->msg->body.data, r->msg->body.size) != smsgs[n].crc) {
		seen_bad++;
		return;
	}
	seen[n]++;
}

static struct spool_config
sconfig(const char *dir, uint64_t segment_size)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = dir;
	cfg.segment_size = segment_size;
	cfg.journal_segment_size = 256u << 10;
	cfg.commit_size_max = 256u << 10;
	cfg.message_size_max = 6u << 20;
	cfg.recipients_max = 4;
	cfg.free_space_reserve = 0;
	cfg.ready_segments = 1;
	return cfg;
}

static struct spool *
sopen(struct ring *ring, const struct spool_config *cfg, struct spool_recovery_stats *st)
{
	char err[512];
	struct spool *sp = spool_open(ring, cfg, seen_rcpt, NULL, st, err, sizeof(err));
	cr_assert(sp != NULL, "%s", err);
	return sp;
}

/* Offline recovery of shard 0, as the inspector does it. */
static struct spool_recovery_stats
srecover(const char *dir)
{
	char msg[PATH_MAX], journal[PATH_MAX];
	spool_shard_path(dir, 0, "msg", msg, sizeof(msg));
	spool_shard_path(dir, 0, "journal", journal, sizeof(journal));
	memset(seen, 0, sizeof(seen));
	seen_bad = 0;
	seen_marker = 0;
	struct spool_recover_sink sink = { .rcpt_fn = seen_rcpt };
	struct spool_recovery_stats st;
	memset(&st, 0, sizeof(st));
	uint64_t max_id = 0;
	char err[512];
	cr_assert_eq(spool_recover_shard(msg, journal, NULL, 0, &sink, &st, &max_id, err,
					 sizeof(err)),
		     0, "%s", err);
	return st;
}

/* Files of dir ending in suffix: count, and the lowest id. */
static uint32_t
count_files(const char *dir, const char *suffix, uint64_t *lowest)
{
	DIR *d = opendir(dir);
	cr_assert(d != NULL);
	uint32_t n = 0;
	size_t slen = strlen(suffix);
	if (lowest != NULL)
		*lowest = UINT64_MAX;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (len != 16 + slen || strcmp(e->d_name + 16, suffix) != 0)
			continue;
		n++;
		uint64_t id = strtoull(e->d_name, NULL, 16);
		if (lowest != NULL && id < *lowest)
			*lowest = id;
	}
	closedir(d);
	return n;
}

/* Run the loop until dir holds at least want .ready files: the pool
 * fills one preparation at a time, in the background. */
static void
wait_ready_files(struct ring *ring, const char *dir, uint32_t want)
{
	char sub[PATH_MAX];
	spool_shard_path(dir, 0, "msg", sub, sizeof(sub));
	for (uint32_t turns = 0; turns < 60000; turns++) {
		if (count_files(sub, ".ready", NULL) >= want)
			return;
		cr_assert(ring_run_once(ring, 10ull * 1000 * 1000) >= 0);
	}
	cr_assert_fail("the ready pool never reached %u files", want);
}

static void
free_bodies(void)
{
	for (uint32_t i = 0; i < S_MSGS; i++) {
		free(smsgs[i].body);
		smsgs[i].body = NULL;
	}
}

Test(spool_stream, records_across_the_window_edge_and_larger_than_the_window, .timeout = 240)
{
	char dir[PATH_MAX];
	test_scratch_dir("stream-edge", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 24u << 20);
	cfg.commit_size_max = 1u << 20;
	struct spool *sp = sopen(ring, &cfg, NULL);
	/* 40 messages of 150-350 KB, four per commit, and one of 5 MiB. */
	for (uint32_t i = 0; i < 40; i += 4)
		swrite(ring, sp, i, i + 4, 150000 + (i * 7919u) % 200000);
	swrite(ring, sp, 40, 41, 5u << 20);
	uint32_t crossing = 0;
	uint64_t seg = smsgs[0].op.location.segment_id;
	for (uint32_t i = 0; i < 41; i++) {
		cr_assert_eq(smsgs[i].result, 0);
		cr_assert_eq(smsgs[i].op.location.segment_id, seg, "one segment");
		uint64_t start = smsgs[i].op.location.offset;
		uint64_t end = start + smsgs[i].op.record_size - 1;
		crossing += start / SPOOL_SCAN_WINDOW_SIZE != end / SPOOL_SCAN_WINDOW_SIZE;
	}
	cr_assert_geq(crossing, 2, "records that cross a window edge: %u", crossing);
	cr_assert_gt(smsgs[40].op.record_size, SPOOL_SCAN_WINDOW_SIZE);
	spool_close(sp);
	ring_destroy(ring);

	struct spool_recovery_stats st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < 41; i++)
		cr_assert_eq(seen[i], 1, "message %u", i);
	cr_assert_eq(st.corrupt_spans + st.holes + st.torn_tails, 0);
	/* The window grew once for the big record, never to a segment. */
	cr_assert_gt(st.window_size, SPOOL_SCAN_WINDOW_SIZE);
	cr_assert_leq(st.window_size, smsgs[40].op.record_size + 2 * SPOOL_SCAN_WINDOW_SIZE);
	cr_assert_lt(st.window_size, cfg.segment_size);
	free_bodies();
	test_remove_tree(dir);
}

Test(spool_stream, scan_reads_the_log_not_the_zeros_after_it, .timeout = 120)
{
	char dir[PATH_MAX], msgdir[PATH_MAX];
	test_scratch_dir("stream-zeros", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 32u << 20);
	struct spool *sp = sopen(ring, &cfg, NULL);
	for (uint32_t i = 0; i < 300; i += 20)
		swrite(ring, sp, i, i + 20, 5000);
	uint64_t log_bytes = smsgs[299].op.location.offset + smsgs[299].op.record_size;
	spool_close(sp);
	ring_destroy(ring);

	struct spool_recovery_stats st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < 300; i++)
		cr_assert_eq(seen[i], 1, "message %u", i);
	cr_assert_eq(st.corrupt_spans + st.holes + st.torn_tails, 0);
	cr_assert_eq(st.message_segments, 1);
	/* The log, then at most the lookahead and a window's rounding: not
	 * the 32 MiB segment (a whole-segment read). */
	cr_assert_geq(st.bytes_read, log_bytes);
	cr_assert_leq(st.bytes_read, log_bytes + SPOOL_SCAN_LOOKAHEAD_SIZE + SPOOL_SCAN_WINDOW_SIZE,
		      "read %" PRIu64 " bytes for a log of %" PRIu64, st.bytes_read, log_bytes);
	cr_assert_eq(st.window_size, SPOOL_SCAN_WINDOW_SIZE);
	cr_assert_eq(st.window_allocs, 1);
	/* The ready segments were left alone (never scanned). */
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	cr_assert_geq(count_files(msgdir, ".ready", NULL), 1);
	test_remove_tree(dir);
}

Test(spool_stream, many_segments_share_one_window_and_ready_files_are_not_read, .timeout = 120)
{
	char dir[PATH_MAX], msgdir[PATH_MAX];
	test_scratch_dir("stream-many", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	cfg.ready_segments = 2;
	struct spool *sp = sopen(ring, &cfg, NULL);
	for (uint32_t i = 0; i < 400; i += 10)
		swrite(ring, sp, i, i + 10, 12000);
	wait_ready_files(ring, dir, 2);
	spool_close(sp);
	ring_destroy(ring);
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	uint32_t segs = count_files(msgdir, ".seg", NULL);
	uint32_t ready = count_files(msgdir, ".ready", NULL);
	cr_assert_geq(segs, 4);
	cr_assert_geq(ready, 2);

	struct spool_recovery_stats st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < 400; i++)
		cr_assert_eq(seen[i], 1, "message %u", i);
	cr_assert_eq(st.message_segments, segs);
	cr_assert_eq(st.window_allocs, 1, "one window for every segment");
	cr_assert_eq(st.window_size, SPOOL_SCAN_WINDOW_SIZE);
	/* Each 1 MiB .seg is read once (it fits the window); no .ready is. */
	cr_assert_eq(st.bytes_read, (uint64_t)segs * cfg.segment_size);
	test_remove_tree(dir);
}

/* Plant, at offset at of file path, a MESSAGE record that checks out
 * under segment id owner: what a commit written before the crash left. */
static void
plant_record(const char *path, uint64_t owner, uint32_t at)
{
	smsg_init(S_MSGS - 1, 3000);
	smsgs[S_MSGS - 1].message.created_ns = S_MARKER;
	uint8_t *buf = calloc(1, 8192);
	cr_assert(buf != NULL);
	struct spool_location loc = { owner, at, 0 };
	uint32_t n = spool_message_encode(buf, 8192, &smsgs[S_MSGS - 1].message, 77, &loc);
	cr_assert_gt(n, 0);
	int fd = open(path, O_WRONLY);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, buf, 8192, at), 8192);
	cr_assert_eq(fsync(fd), 0);
	close(fd);
	free(buf);
}

static bool
file_holds_record_of(const char *path, uint32_t at, uint64_t owner)
{
	static uint8_t buf[64u << 10];
	int fd = open(path, O_RDONLY);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, buf, sizeof(buf), at), (ssize_t)sizeof(buf));
	close(fd);
	struct spool_location loc = { owner, at, 0 };
	struct spool_record_header hdr;
	return spool_record_check(buf, sizeof(buf), &loc, &hdr) == SPOOL_DECODE_OK;
}

static void
ready_path_by_inode(const char *msgdir, ino_t ino, char *out, size_t out_size)
{
	DIR *d = opendir(msgdir);
	cr_assert(d != NULL);
	out[0] = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_ino == ino)
			snprintf(out, out_size, "%s/%s", msgdir, e->d_name);
	}
	closedir(d);
	cr_assert(out[0] != 0, "inode %lu is gone", (unsigned long)ino);
}

Test(spool_stream, ready_files_are_adopted_without_zeroing_under_a_fresh_id, .timeout = 120)
{
	char dir[PATH_MAX], msgdir[PATH_MAX], path[PATH_MAX], now[PATH_MAX];
	test_scratch_dir("stream-ready", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	cfg.ready_segments = 2;
	struct spool *sp = sopen(ring, &cfg, NULL);
	swrite(ring, sp, 0, 10, 3000);
	wait_ready_files(ring, dir, 2);
	spool_close(sp);
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	uint64_t next = 0;
	cr_assert_geq(count_files(msgdir, ".ready", &next), 2);
	/* The next ready segment holds a record under its own id, as if a
	 * commit had been written into it but its .seg name never became
	 * durable before a crash. It was never acknowledged. */
	spool_log_file_path(msgdir, next, SPOOL_FILE_READY, path, sizeof(path));
	plant_record(path, next, 512u << 10);
	struct stat before;
	cr_assert_eq(stat(path, &before), 0);

	struct spool_recovery_stats st;
	sp = sopen(ring, &cfg, &st);
	cr_assert_eq(st.messages, 10);
	const struct spool_log_stats *ls = spool_message_stats(sp);
	cr_assert_geq(ls->segments_adopted, 2);
	cr_assert_eq(ls->segments_created, 0, "an adopted pool needs no zeroing");
	/* Same file (inode), fresh name, the planted bytes not zeroed. */
	cr_assert_eq(access(path, F_OK), -1, "the old name is gone");
	ready_path_by_inode(msgdir, before.st_ino, now, sizeof(now));
	cr_assert(file_holds_record_of(now, 512u << 10, next), "re-zeroed?");
	swrite(ring, sp, 10, 20, 3000);
	for (uint32_t i = 10; i < 20; i++)
		cr_assert_eq(smsgs[i].result, 0);
	spool_close(sp);
	ring_destroy(ring);

	st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	cr_assert_eq(seen_marker, 0, "a record under the old id came back");
	for (uint32_t i = 0; i < 20; i++)
		cr_assert_eq(seen[i], 1, "message %u", i);
	cr_assert_eq(st.corrupt_spans + st.torn_tails + st.holes, 0);
	free_bodies();
	test_remove_tree(dir);
}

/* Fails the directory sync of the nth activation (.ready -> .seg), and
 * counts the ones that completed: segments are activated in log order, so
 * the kth segment a message lands in is named durably once syncs >= k. */
struct activation_fault {
	uint32_t renames;
	uint32_t syncs;
	uint32_t nth;
	uint64_t seg_ids[64]; /* segments in the order messages reached them */
	uint32_t seg_count;
	uint32_t early_acks; /* acknowledged before their segment's sync */
	uint32_t acks;
};

static struct activation_fault afault;

static void
ordered_done(struct spool_append *op, int32_t result)
{
	smsg_done(op, result);
	if (result != 0)
		return;
	uint32_t k = 0;
	while (k < afault.seg_count && afault.seg_ids[k] != op->location.segment_id)
		k++;
	if (k == afault.seg_count) {
		cr_assert_lt(afault.seg_count, 64);
		afault.seg_ids[afault.seg_count++] = op->location.segment_id;
	}
	afault.acks++;
	if (afault.syncs < k + 1)
		afault.early_acks++;
}

static int32_t
activation_hook(void *ctx, struct ring_op *op, int32_t res)
{
	struct activation_fault *f = ctx;
	if (op->tag != SPOOL_TAG_ACTIVATE)
		return res;
	if (op->kind == RING_OP_RENAMEAT) {
		f->renames++;
		return res;
	}
	cr_assert_eq(op->kind, RING_OP_FSYNC);
	f->syncs++;
	return f->syncs == f->nth ? -EIO : res;
}

Test(spool_stream, nothing_in_a_segment_is_acked_before_its_name_is_durable, .timeout = 120)
{
	char dir[PATH_MAX], msgdir[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
	test_scratch_dir("stream-rename", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	cfg.commit_size_max = 64u << 10;
	struct spool *sp = sopen(ring, &cfg, NULL);
	/* The 13th activation's directory sync fails. Before it, a dozen
	 * segments switch with the first commit written while the rename and
	 * the sync run: whichever completes first, no ack comes early. */
	afault = (struct activation_fault){ .nth = 13 };
	ring_set_fault(ring, activation_hook, &afault);
	uint32_t n = 0;
	for (; n < 400; n++) {
		smsg_init(n, 60000);
		smsgs[n].op.callback = ordered_done;
		cr_assert_eq(spool_write_message(sp, &smsgs[n].op), 0);
		cr_assert(test_run_until(ring, &smsgs[n].done, 100000));
		free(smsgs[n].body);
		smsgs[n].body = NULL;
		if (smsgs[n].result != 0)
			break;
	}
	ring_set_fault(ring, NULL, NULL);
	cr_assert_lt(n, 400, "the fault never hit");
	cr_assert_eq(afault.syncs, 13);
	cr_assert_eq(afault.renames, 13);
	cr_assert_eq(afault.seg_count, 12);
	cr_assert_eq(afault.acks, n);
	cr_assert_eq(afault.early_acks, 0, "acknowledged before the segment's name was durable");
	cr_assert(!spool_is_healthy(sp));
	uint64_t last_seg = smsgs[n - 1].op.location.segment_id;
	uint64_t second_seg = smsgs[n].op.location.segment_id;
	cr_assert_neq(last_seg, second_seg);
	cr_assert_eq(smsgs[n].op.location.offset, 0, "the first commit of the segment");
	spool_close(sp);
	/* The crash: the rename never reached the disk. */
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_log_file_path(msgdir, second_seg, SPOOL_FILE_SEG, from, sizeof(from));
	spool_log_file_path(msgdir, second_seg, SPOOL_FILE_READY, to, sizeof(to));
	cr_assert_eq(rename(from, to), 0);
	cr_assert(file_holds_record_of(to, 0, second_seg), "the unacked commit landed");

	struct spool_recovery_stats st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < n; i++)
		cr_assert_eq(seen[i], 1, "acknowledged message %u lost", i);
	cr_assert_eq(seen[n], 0, "an unacknowledged message came back");
	/* Restart adopts the file under a fresh id and writes over it. */
	sp = sopen(ring, &cfg, &st);
	cr_assert_eq(st.messages, n);
	swrite(ring, sp, n + 1, n + 4, 3000);
	for (uint32_t i = n + 1; i < n + 4; i++)
		cr_assert_eq(smsgs[i].result, 0);
	spool_close(sp);
	ring_destroy(ring);
	st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	cr_assert_eq(seen[n], 0, "the old commit came back after the restart");
	for (uint32_t i = 0; i < n + 4; i++)
		cr_assert_eq(seen[i], i == n ? 0u : 1u, "message %u", i);
	free_bodies();
	test_remove_tree(dir);
}

Test(spool_stream, a_prep_file_left_behind_is_discarded, .timeout = 60)
{
	char dir[PATH_MAX], msgdir[PATH_MAX], jdir[PATH_MAX], path[PATH_MAX];
	test_scratch_dir("stream-prep", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	struct spool *sp = sopen(ring, &cfg, NULL);
	swrite(ring, sp, 0, 5, 3000);
	spool_close(sp);
	/* A preparation cut by the crash: half zeroed, never renamed. */
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_shard_path(dir, 0, "journal", jdir, sizeof(jdir));
	spool_log_file_path(msgdir, 0x7fffffffffffffffull, SPOOL_FILE_PREP, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(ftruncate(fd, 1u << 19), 0);
	close(fd);
	spool_log_file_path(jdir, 5, SPOOL_FILE_PREP, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert(fd >= 0);
	close(fd);

	struct spool_recovery_stats st;
	sp = sopen(ring, &cfg, &st);
	cr_assert_eq(st.messages, 5);
	cr_assert_eq(spool_message_stats(sp)->segments_discarded, 1);
	cr_assert_eq(spool_journal_stats(sp)->segments_discarded, 1);
	cr_assert_eq(count_files(msgdir, ".prep", NULL), 0);
	cr_assert_eq(count_files(jdir, ".prep", NULL), 0);
	/* Ids stay above every id seen, a .prep's included. */
	swrite(ring, sp, 5, 6, 3000);
	cr_assert_gt(smsgs[5].op.location.segment_id, 0x7fffffffffffffffull);
	spool_close(sp);
	ring_destroy(ring);
	st = srecover(dir);
	for (uint32_t i = 0; i < 6; i++)
		cr_assert_eq(seen[i], 1, "message %u", i);
	free_bodies();
	test_remove_tree(dir);
}

Test(spool_stream, reserve_counts_the_segment_the_next_preparation_needs, .timeout = 60)
{
	char dir[PATH_MAX];
	test_scratch_dir("stream-reserve", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct statvfs vfs;
	cr_assert_eq(statvfs(dir, &vfs), 0);
	uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (free_bytes < (10ull << 30))
		cr_skip_test("needs 10 GiB free");
	/* Above the reserve by half a segment: a preparation would dig into
	 * the reserve, so new messages are refused already. 512 MiB of slack
	 * either way keeps other writers on the disk from flipping it. */
	struct spool_config cfg = sconfig(dir, 1ull << 30);
	bool checked = false;
	for (uint32_t attempt = 0; attempt < 5 && !checked; attempt++) {
		cr_assert_eq(statvfs(dir, &vfs), 0);
		free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		cfg.free_space_reserve = free_bytes - (512ull << 20);
		struct spool *sp = sopen(ring, &cfg, NULL);
		bool below = spool_is_below_reserve(sp);
		smsg_init(0, 1000);
		int ret = spool_write_message(sp, &smsgs[0].op);
		spool_close(sp);
		cr_assert_eq(statvfs(dir, &vfs), 0);
		uint64_t after = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		if (after > free_bytes + (256ull << 20))
			continue; /* another writer freed space meanwhile: again */
		cr_assert(below);
		cr_assert_eq(ret, -ENOSPC);
		checked = true;
	}
	cr_assert(checked, "free space kept jumping");
	/* Far above reserve + segment: accepted. */
	test_remove_tree(dir);
	test_scratch_dir("stream-reserve", dir, sizeof(dir));
	cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	cfg.free_space_reserve = free_bytes - (8ull << 30);
	struct spool *sp = sopen(ring, &cfg, NULL);
	cr_assert(!spool_is_below_reserve(sp));
	swrite(ring, sp, 0, 1, 1000);
	cr_assert_eq(smsgs[0].result, 0);
	spool_close(sp);
	ring_destroy(ring);
	free_bodies();
	test_remove_tree(dir);
}

struct soutcome {
	struct spool_outcome out;
	struct spool_append op;
	bool done;
	int32_t result;
};

static void
soutcome_done(struct spool_append *op, int32_t result)
{
	struct soutcome *o = op->ctx;
	o->done = true;
	o->result = result;
}

Test(spool_stream, segments_reclaimed_at_start_up_become_ready_files, .timeout = 120)
{
	char dir[PATH_MAX], msgdir[PATH_MAX], jdir[PATH_MAX];
	test_scratch_dir("stream-reclaim", dir, sizeof(dir));
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = sconfig(dir, 1u << 20);
	cfg.message_size_max = 64u << 10;
	struct spool *sp = sopen(ring, &cfg, NULL);
	swrite(ring, sp, 0, 10, 3000);
	/* Every recipient delivered: the (active) segment holds nothing live. */
	static struct soutcome outs[10];
	for (uint32_t i = 0; i < 10; i++) {
		memset(&outs[i], 0, sizeof(outs[i]));
		outs[i].out.message = smsgs[i].op.location;
		outs[i].out.state = SPOOL_RCPT_DELIVERED;
		outs[i].op.callback = soutcome_done;
		outs[i].op.ctx = &outs[i];
		outs[i].op.input.outcome = &outs[i].out;
		cr_assert_eq(spool_write_outcome(sp, &outs[i].op), 0);
	}
	cr_assert(test_run_until(ring, &outs[9].done, 100000));
	for (uint32_t i = 0; i < 10; i++)
		cr_assert_eq(outs[i].result, 0);
	cr_assert_eq(spool_live_recipients(sp), 0);
	spool_close(sp);
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_shard_path(dir, 0, "journal", jdir, sizeof(jdir));
	cr_assert_eq(count_files(msgdir, ".seg", NULL), 1);
	cr_assert_eq(count_files(jdir, ".seg", NULL), 1);

	/* Restart: the segment and its journal go, as .ready files the logs
	 * adopt: nothing is zeroed again. */
	struct spool_recovery_stats st;
	sp = sopen(ring, &cfg, &st);
	cr_assert_eq(st.recipients_live, 0);
	cr_assert_eq(st.segments_deleted, 1);
	cr_assert_eq(st.journal_segments_deleted, 1);
	cr_assert_eq(count_files(msgdir, ".seg", NULL), 0);
	cr_assert_eq(count_files(jdir, ".seg", NULL), 0);
	cr_assert_eq(spool_message_stats(sp)->segments_created, 0);
	cr_assert_eq(spool_journal_stats(sp)->segments_created, 0);
	cr_assert_geq(spool_message_stats(sp)->segments_adopted, 2);
	/* The reused file's old records never come back. */
	swrite(ring, sp, 10, 12, 3000);
	spool_close(sp);
	ring_destroy(ring);
	st = srecover(dir);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < 12; i++)
		cr_assert_eq(seen[i], i < 10 ? 0u : 1u, "message %u", i);
	cr_assert_eq(st.corrupt_spans + st.torn_tails + st.holes, 0);
	free_bodies();
	test_remove_tree(dir);
}
