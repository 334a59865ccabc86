/*
 * test_recovery.c - recovery from damaged segments: a last commit cut at
 * every 512-byte boundary, and a bit flip in a record in the middle.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring/ring.h"
#include "spool/spool.h"
#include "spool/spool_crc32c.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

#define R_MSGS 160
#define R_BODY 4096

struct rmsg {
	uint8_t body[R_BODY];
	struct spool_span rcpt;
	struct spool_message message;
	struct spool_append op;
	bool done;
	int32_t result;
};

static struct rmsg rmsgs[R_MSGS];
static uint32_t seen_count[R_MSGS];
static uint32_t seen_bad;

static void
rmsg_done(struct spool_append *op, int32_t result)
{
	struct rmsg *m = op->ctx;
	m->done = true;
	m->result = result;
}

static void
rmsg_init(uint32_t i)
{
	struct rmsg *m = &rmsgs[i];
	memset(m, 0, sizeof(*m));
	size_t len = test_body(i, 1500 + (i * 37) % 2000, m->body, sizeof(m->body));
	m->rcpt.data = (const uint8_t *)"rcpt@example.net";
	m->rcpt.size = 16;
	m->message.created_ns = i;
	m->message.sender.data = (const uint8_t *)"s@example.org";
	m->message.sender.size = 13;
	m->message.rcpt_count = 1;
	m->message.rcpts = &m->rcpt;
	m->message.body.data = m->body;
	m->message.body.size = (uint32_t)len;
	m->op.callback = rmsg_done;
	m->op.ctx = m;
	m->op.input.message = &m->message;
}

/* Write [from, to) in one loop turn (one commit when it fits). */
static void
rwrite(struct ring *ring, struct spool *sp, uint32_t from, uint32_t to)
{
	for (uint32_t i = from; i < to; i++) {
		rmsg_init(i);
		cr_assert_eq(spool_write_message(sp, &rmsgs[i].op), 0);
	}
	for (uint32_t turns = 0; turns < 10000; turns++) {
		bool all = true;
		for (uint32_t i = from; i < to && all; i++)
			all = rmsgs[i].done;
		if (all)
			break;
		cr_assert(ring_run_once(ring, 100000000ull) >= 0);
	}
	for (uint32_t i = from; i < to; i++)
		cr_assert_eq(rmsgs[i].result, 0);
}

static void
seen_rcpt(void *ctx, const struct spool_recovered *r)
{
	(void)ctx;
	uint64_t n = r->msg->created_ns;
	if (n >= R_MSGS || r->msg->body.size != rmsgs[n].message.body.size ||
	    memcmp(r->msg->body.data, rmsgs[n].body, r->msg->body.size) != 0) {
		seen_bad++;
		return;
	}
	seen_count[n]++;
}

static struct spool_config
rconfig(const char *dir)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = dir;
	cfg.segment_size = 1u << 20;
	cfg.journal_segment_size = 256u << 10;
	cfg.commit_size_max = 256u << 10;
	cfg.message_size_max = R_BODY;
	cfg.free_space_reserve = 0;
	cfg.ready_segments = 1;
	return cfg;
}

/* Spool with three commits: [0,60) [60,100) and the last [100,130). */
static uint64_t
make_spool(const char *dir)
{
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		cr_skip_test("io_uring unavailable");
	struct spool_config cfg = rconfig(dir);
	char err[512];
	struct spool *sp = spool_open(ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
	cr_assert(sp != NULL, "%s", err);
	rwrite(ring, sp, 0, 60);
	rwrite(ring, sp, 60, 100);
	rwrite(ring, sp, 100, 130);
	uint64_t seg = rmsgs[0].op.location.segment_id;
	cr_assert_eq(rmsgs[129].op.location.segment_id, seg);
	cr_assert_neq(rmsgs[99].op.commit_seq, rmsgs[100].op.commit_seq);
	spool_close(sp);
	ring_destroy(ring);
	return seg;
}

static uint8_t *
read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	uint8_t *buf = malloc((size_t)st.st_size);
	cr_assert_eq(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void
write_file(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
	close(fd);
}

static struct spool_recovery_stats
recover_copy(const char *root, uint64_t seg, const uint8_t *image, size_t len)
{
	char msg[PATH_MAX], journal[PATH_MAX], path[PATH_MAX];
	snprintf(msg, sizeof(msg), "%s/msg", root);
	snprintf(journal, sizeof(journal), "%s/journal", root);
	mkdir(root, 0700);
	mkdir(msg, 0700);
	mkdir(journal, 0700);
	spool_log_segment_path(msg, seg, path, sizeof(path));
	write_file(path, image, len);
	memset(seen_count, 0, sizeof(seen_count));
	seen_bad = 0;
	struct spool_recover_sink sink = { .rcpt_fn = seen_rcpt };
	struct spool_recovery_stats stats = { 0 };
	uint64_t max_id = 0;
	char err[512];
	cr_assert_eq(spool_recover_shard(msg, journal, NULL, 0, &sink, &stats, &max_id, err,
					 sizeof(err)),
		     0, "%s", err);
	return stats;
}

Test(spool_recovery, cut_at_every_512_byte_boundary_of_the_last_commit, .timeout = 120)
{
	char dir[PATH_MAX], path[PATH_MAX], root[PATH_MAX + 16];
	test_scratch_dir("cut", dir, sizeof(dir));
	uint64_t seg = make_spool(dir);
	char msgdir[PATH_MAX];
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_log_segment_path(msgdir, seg, path, sizeof(path));
	size_t len;
	uint8_t *orig = read_file(path, &len);
	uint8_t *image = malloc(len);
	uint32_t start = rmsgs[100].op.location.offset;
	uint32_t last_end = rmsgs[129].op.location.offset + rmsgs[129].op.record_size;
	uint32_t end = (last_end + 4095) / 4096 * 4096 + 4096;
	cr_assert_eq(start % 4096, 0, "a commit starts on a block");
	snprintf(root, sizeof(root), "%s/copy", dir);
	uint32_t cuts = 0;
	for (uint32_t cut = start; cut <= end; cut += 512, cuts++) {
		memcpy(image, orig, len);
		memset(image + cut, 0, end - cut);
		struct spool_recovery_stats st = recover_copy(root, seg, image, len);
		cr_assert_eq(seen_bad, 0, "cut %u: a half-written record came back", cut);
		cr_assert_eq(st.corrupt_spans, 0, "cut %u: a torn tail reported as corruption", cut);
		for (uint32_t i = 0; i < 100; i++)
			cr_assert_eq(seen_count[i], 1, "cut %u: acknowledged message %u lost", cut, i);
		for (uint32_t i = 100; i < 130; i++) {
			cr_assert_leq(seen_count[i], 1);
			uint32_t rec_end = rmsgs[i].op.location.offset + rmsgs[i].op.record_size;
			if (rec_end <= cut)
				cr_assert_eq(seen_count[i], 1, "cut %u: whole record %u dropped", cut,
					     i);
		}
	}
	cr_assert_gt(cuts, 16);
	free(image);
	free(orig);
	test_remove_tree(dir);
}

Test(spool_recovery, bit_flip_in_the_middle_is_quarantined_and_neighbours_kept, .timeout = 60)
{
	char dir[PATH_MAX], path[PATH_MAX];
	test_scratch_dir("flip", dir, sizeof(dir));
	uint64_t seg = make_spool(dir);
	char msgdir[PATH_MAX];
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_log_segment_path(msgdir, seg, path, sizeof(path));
	size_t len;
	uint8_t *image = read_file(path, &len);
	/* Flip a bit in the body of message 70 (middle commit). */
	uint32_t at = rmsgs[70].op.location.offset + rmsgs[70].op.record_size / 2;
	image[at] ^= 0x10;
	write_file(path, image, len);
	free(image);
	/* Real recovery through spool_open. */
	struct ring *ring = test_ring_create();
	struct spool_config cfg = rconfig(dir);
	struct spool_recovery_stats st;
	char err[512];
	memset(seen_count, 0, sizeof(seen_count));
	seen_bad = 0;
	struct spool *sp = spool_open(ring, &cfg, seen_rcpt, NULL, &st, err, sizeof(err));
	cr_assert(sp != NULL, "%s", err);
	cr_assert_eq(st.corrupt_spans, 1);
	cr_assert_eq(seen_bad, 0);
	for (uint32_t i = 0; i < 130; i++)
		cr_assert_eq(seen_count[i], i == 70 ? 0u : 1u, "message %u", i);
	/* The bad bytes are kept for an operator. */
	char qdir[PATH_MAX];
	spool_shard_path(dir, 0, "quarantine", qdir, sizeof(qdir));
	char qfile[PATH_MAX + 64];
	snprintf(qfile, sizeof(qfile), "%s/%016" PRIx64 "-%08x.bad", qdir, seg,
		 rmsgs[70].op.location.offset);
	cr_assert_eq(access(qfile, F_OK), 0, "no quarantine file %s", qfile);
	spool_close(sp);
	ring_destroy(ring);
	test_remove_tree(dir);
}

/* ------------------------------------------------------------------ */
/* Journal format versions: attempt counts through recovery.           */
/* ------------------------------------------------------------------ */

static uint32_t seen_attempts[R_MSGS];
static uint32_t seen_state[R_MSGS];

static void
seen_rcpt_attempts(void *ctx, const struct spool_recovered *r)
{
	(void)ctx;
	uint64_t n = r->msg->created_ns;
	cr_assert_lt(n, R_MSGS);
	seen_attempts[n] = r->attempts;
	seen_state[n] = r->state;
}

/* One OUTCOME for message i at journal offset off; version 1 is the
 * released layout (version byte 1, the attempts word 0), resealed here by
 * the documented CRC rule. */
static void
put_outcome(uint8_t *image, uint64_t journal_id, uint32_t off, uint32_t i, uint16_t state,
	    uint32_t attempts, uint8_t version)
{
	struct spool_outcome o = { .message = rmsgs[i].op.location,
				   .rcpt_index = 0,
				   .state = state,
				   .attempts = version == 1 ? 0 : attempts,
				   .time_ns = 1000u + i };
	struct spool_location here = { .segment_id = journal_id, .offset = off, .shard = 0 };
	cr_assert_eq(spool_outcome_encode(image + off, SPOOL_OUTCOME_RECORD_SIZE, &o, 1, &here),
		     SPOOL_OUTCOME_RECORD_SIZE);
	if (version == SPOOL_OUTCOME_VERSION)
		return;
	image[off + 4] = version;
	memset(image + off + 12, 0, 4);
	uint32_t crc = spool_crc32c(0, image + off, SPOOL_OUTCOME_RECORD_SIZE);
	for (uint32_t b = 0; b < 4; b++)
		image[off + 12 + b] = (uint8_t)(crc >> (8 * b));
}

Test(spool_recovery, attempt_counts_from_journal_versions_1_and_2, .timeout = 60)
{
	char dir[PATH_MAX], path[PATH_MAX], root[PATH_MAX + 16];
	char msg[PATH_MAX + 32], journal[PATH_MAX + 32];
	test_scratch_dir("versions", dir, sizeof(dir));
	uint64_t seg = make_spool(dir);
	char msgdir[PATH_MAX];
	spool_shard_path(dir, 0, "msg", msgdir, sizeof(msgdir));
	spool_log_segment_path(msgdir, seg, path, sizeof(path));
	size_t len;
	uint8_t *msg_image = read_file(path, &len);

	const uint64_t jid = seg + 100;
	const size_t journal_len = 64u << 10;
	uint8_t *j = calloc(1, journal_len);
	const uint32_t R = SPOOL_OUTCOME_RECORD_SIZE;
	put_outcome(j, jid, 0 * R, 0, SPOOL_RCPT_DEFERRED, 0, 1);  /* v1: unknown */
	put_outcome(j, jid, 1 * R, 1, SPOOL_RCPT_DEFERRED, 4, 2);
	put_outcome(j, jid, 2 * R, 2, SPOOL_RCPT_DEFERRED, 2, 2);
	put_outcome(j, jid, 3 * R, 2, SPOOL_RCPT_DEFERRED, 5, 2);  /* the latest wins */
	put_outcome(j, jid, 4 * R, 3, SPOOL_RCPT_DEFERRED, 0, 1);  /* v1, then v2 */
	put_outcome(j, jid, 5 * R, 3, SPOOL_RCPT_DEFERRED, 7, 2);
	put_outcome(j, jid, 6 * R, 4, SPOOL_RCPT_DEFERRED, 6, 3);  /* a future version */
	put_outcome(j, jid, 7 * R, 5, SPOOL_RCPT_DEFERRED, 9, 2);  /* its neighbour */
	put_outcome(j, jid, 8 * R, 6, SPOOL_RCPT_DELIVERED, 1, 2); /* final: not handed back */

	snprintf(root, sizeof(root), "%s/copy", dir);
	snprintf(msg, sizeof(msg), "%s/msg", root);
	snprintf(journal, sizeof(journal), "%s/journal", root);
	mkdir(root, 0700);
	mkdir(msg, 0700);
	mkdir(journal, 0700);
	spool_log_segment_path(msg, seg, path, sizeof(path));
	write_file(path, msg_image, len);
	spool_log_segment_path(journal, jid, path, sizeof(path));
	write_file(path, j, journal_len);

	memset(seen_attempts, 0xee, sizeof(seen_attempts));
	memset(seen_state, 0xee, sizeof(seen_state));
	struct spool_recover_sink sink = { .rcpt_fn = seen_rcpt_attempts };
	struct spool_recovery_stats st = { 0 };
	uint64_t max_id = 0;
	char err[512];
	cr_assert_eq(spool_recover_shard(msg, journal, NULL, 0, &sink, &st, &max_id, err,
					 sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(st.outcomes, 8, "every readable outcome replayed");
	cr_assert_eq(st.corrupt_spans, 1, "the version-3 record is a bad span");
	cr_assert_eq(st.unknown_versions, 1, "and counted as an unknown version");
	cr_assert_eq(seen_attempts[0], SPOOL_ATTEMPTS_UNKNOWN, "v1: no count");
	cr_assert_eq(seen_attempts[1], 4u);
	cr_assert_eq(seen_attempts[2], 5u, "the latest record's count");
	cr_assert_eq(seen_attempts[3], 7u, "a v2 record after a v1 one");
	cr_assert_eq(seen_state[4], SPOOL_RCPT_PENDING, "unreadable outcome: still pending");
	cr_assert_eq(seen_attempts[4], 0u);
	cr_assert_eq(seen_attempts[5], 9u);
	cr_assert_eq(seen_state[6], SPOOL_RCPT_DELIVERED);
	cr_assert_eq(seen_attempts[6], 1u, "final outcomes carry their count too");
	cr_assert_eq(seen_state[7], SPOOL_RCPT_PENDING);
	cr_assert_eq(seen_attempts[7], 0u, "no outcome: no attempt");
	for (uint32_t i = 0; i < 6; i++)
		cr_assert_eq(seen_state[i], i == 4 ? SPOOL_RCPT_PENDING : SPOOL_RCPT_DEFERRED,
			     "message %u", i);
	free(j);
	free(msg_image);
	test_remove_tree(dir);
}
