/*
 * make_spool.c - build a small, known spool for the ringmail-spool tests.
 *
 *   make_spool SPOOL_DIR EXPECT_DIR
 *
 * Writes MAKE_SPOOL_MESSAGES messages to shard 0 of SPOOL_DIR through the
 * real spool (ring, group commit, O_DIRECT), in three commits, the last
 * message large (several blocks) and alone in its commit so a test can
 * tear it. Then journals outcomes (delivered, bounced, deferred, expired,
 * a deferral overtaken by a delivery, a deferral after a delivery that
 * must not undo it). For each message it writes EXPECT_DIR/<n>.eml, the
 * message as the client sent it (before dot-stuffing, CRLF line ends),
 * and prints one line on stdout:
 *
 *   message N QUEUE_ID SEGMENT_PATH OFFSET RECORD_SIZE RCPT_COUNT
 *
 * The bodies hold lines that start with periods, a lone "." line, UTF-8,
 * a non-UTF-8 byte, quotes, a backslash and a tab: everything show must
 * un-stuff and --json must escape. Exit 77 (meson: skipped) when io_uring
 * is unavailable, 1 on any other failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring/ring.h"
#include "spool/spool.h"
#include "tests/lib/test_util.h"

#define MAKE_SPOOL_MESSAGES 6u
#define MAKE_SPOOL_RCPTS_MAX 3u
#define MAKE_SPOOL_BODY_MAX 32768u
/* 2024-05-01T12:00:00Z; messages are a minute apart. */
#define MAKE_SPOOL_EPOCH_NS (1714564800ull * 1000000000ull)
#define MAKE_SPOOL_MINUTE_NS (60ull * 1000000000ull)
#define MAKE_SPOOL_DEFER_NS (MAKE_SPOOL_EPOCH_NS + 60ull * MAKE_SPOOL_MINUTE_NS)

struct make_msg {
	uint8_t text[MAKE_SPOOL_BODY_MAX]; /* as sent */
	size_t text_size;
	uint8_t wire[MAKE_SPOOL_BODY_MAX + 4096]; /* dot-stuffed, CRLF.CRLF */
	char sender[64];
	char rcpt_text[MAKE_SPOOL_RCPTS_MAX][64];
	struct spool_span rcpts[MAKE_SPOOL_RCPTS_MAX];
	struct spool_message message;
	struct spool_append op;
	bool done;
	int32_t result;
};

struct make_outcome {
	uint32_t msg_index;
	uint32_t rcpt_index;
	enum spool_rcpt_state state;
	uint64_t time_ns;
	struct spool_outcome out;
	struct spool_append op;
	bool done;
	int32_t result;
};

static struct make_msg msgs[MAKE_SPOOL_MESSAGES];

/* Journal order matters: later outcomes win, final ones stick. */
static struct make_outcome outcomes[] = {
	{ .msg_index = 0, .rcpt_index = 0, .state = SPOOL_RCPT_DELIVERED,
	  .time_ns = MAKE_SPOOL_EPOCH_NS },
	{ .msg_index = 0, .rcpt_index = 0, .state = SPOOL_RCPT_DEFERRED,
	  .time_ns = MAKE_SPOOL_DEFER_NS },
	{ .msg_index = 1, .rcpt_index = 0, .state = SPOOL_RCPT_BOUNCED,
	  .time_ns = MAKE_SPOOL_EPOCH_NS },
	{ .msg_index = 1, .rcpt_index = 1, .state = SPOOL_RCPT_DEFERRED,
	  .time_ns = MAKE_SPOOL_DEFER_NS },
	{ .msg_index = 2, .rcpt_index = 0, .state = SPOOL_RCPT_DEFERRED,
	  .time_ns = MAKE_SPOOL_DEFER_NS },
	{ .msg_index = 2, .rcpt_index = 0, .state = SPOOL_RCPT_DELIVERED,
	  .time_ns = MAKE_SPOOL_EPOCH_NS },
	{ .msg_index = 2, .rcpt_index = 1, .state = SPOOL_RCPT_EXPIRED,
	  .time_ns = MAKE_SPOOL_EPOCH_NS },
};

static void
make_append(char *out, size_t out_size, size_t *len, const char *text)
{
	size_t n = strlen(text);
	if (*len + n > out_size)
		abort();
	memcpy(out + *len, text, n);
	*len += n;
}

/* The message as the client sent it. */
static void
make_text(uint32_t n, struct make_msg *m)
{
	char *out = (char *)m->text;
	size_t len = 0, size = sizeof(m->text);
	char line[256];
	snprintf(line, sizeof(line),
		 "From: <%s>\r\nTo: <%s>\r\nSubject: test message %u\r\n"
		 "Message-ID: <%u.make-spool@example.org>\r\n\r\n",
		 m->sender, m->rcpt_text[0], n, n);
	make_append(out, size, &len, line);
	snprintf(line, sizeof(line), "Hello %u.\r\n", n);
	make_append(out, size, &len, line);
	make_append(out, size, &len, ".leading dot\r\n..two leading dots\r\n.\r\n\r\n");
	make_append(out, size, &len, "caf\xc3\xa9 \xff raw byte\r\n");
	make_append(out, size, &len, "tab\there \"quoted\" back\\slash\r\n");
	/* The last message spans several 4 KiB blocks. */
	for (uint32_t i = 0; n + 1 == MAKE_SPOOL_MESSAGES && i < 200; i++) {
		snprintf(line, sizeof(line), "%sfiller line %03u of the big message\r\n",
			 i % 10 == 0 ? "." : "", i);
		make_append(out, size, &len, line);
	}
	make_append(out, size, &len, "last line\r\n");
	m->text_size = len;
}

/* Dot-stuff text into wire form (RFC 5321 4.5.2) and end it with ".\r\n". */
static size_t
make_stuff(const uint8_t *text, size_t len, uint8_t *wire)
{
	size_t n = 0;
	bool at_line_start = true;
	for (size_t i = 0; i < len; i++) {
		if (at_line_start && text[i] == '.')
			wire[n++] = '.';
		wire[n++] = text[i];
		at_line_start = text[i] == '\n';
	}
	memcpy(wire + n, ".\r\n", 3);
	return n + 3;
}

static void
make_msg_callback(struct spool_append *op, int32_t result)
{
	struct make_msg *m = op->ctx;
	m->done = true;
	m->result = result;
}

static void
make_msg_init(uint32_t n)
{
	struct make_msg *m = &msgs[n];
	uint32_t rcpt_count = 1 + n % MAKE_SPOOL_RCPTS_MAX;
	/* The last message has the null reverse-path (a bounce). */
	if (n + 1 < MAKE_SPOOL_MESSAGES)
		snprintf(m->sender, sizeof(m->sender), "sender%u@example.org", n);
	for (uint32_t r = 0; r < rcpt_count; r++) {
		int w = snprintf(m->rcpt_text[r], sizeof(m->rcpt_text[r]), "rcpt%u.%u@example.net",
				 n, r);
		m->rcpts[r].data = (const uint8_t *)m->rcpt_text[r];
		m->rcpts[r].size = (uint32_t)w;
	}
	make_text(n, m);
	m->message.created_ns = MAKE_SPOOL_EPOCH_NS + n * MAKE_SPOOL_MINUTE_NS;
	m->message.expires_ns = m->message.created_ns + 5ull * 24 * 60 * MAKE_SPOOL_MINUTE_NS;
	m->message.sender.data = (const uint8_t *)m->sender;
	m->message.sender.size = (uint32_t)strlen(m->sender);
	m->message.rcpt_count = rcpt_count;
	m->message.rcpts = m->rcpts;
	m->message.body.data = m->wire;
	m->message.body.size = (uint32_t)make_stuff(m->text, m->text_size, m->wire);
	m->op.callback = make_msg_callback;
	m->op.ctx = m;
	m->op.input.message = &m->message;
}

/* Run the ring until every flag is set; false on a ring error or timeout. */
static bool
make_run(struct ring *ring, bool (*all_done)(void))
{
	for (uint32_t turns = 0; turns < 100000; turns++) {
		if (all_done())
			return true;
		if (ring_run_once(ring, 100ull * 1000ull * 1000ull) < 0)
			return false;
	}
	return false;
}

static uint32_t make_batch_from, make_batch_to;

static bool
make_batch_done(void)
{
	for (uint32_t i = make_batch_from; i < make_batch_to; i++) {
		if (!msgs[i].done)
			return false;
	}
	return true;
}

/* Messages [from, to) in one commit. */
static bool
make_write_batch(struct ring *ring, struct spool *sp, uint32_t from, uint32_t to)
{
	for (uint32_t i = from; i < to; i++) {
		make_msg_init(i);
		int ret = spool_write_message(sp, &msgs[i].op);
		if (ret != 0) {
			fprintf(stderr, "make_spool: write %u: %s\n", i, strerror(-ret));
			return false;
		}
	}
	make_batch_from = from;
	make_batch_to = to;
	if (!make_run(ring, make_batch_done))
		return false;
	for (uint32_t i = from; i < to; i++) {
		if (msgs[i].result != 0) {
			fprintf(stderr, "make_spool: message %u: %s\n", i,
				strerror(-msgs[i].result));
			return false;
		}
	}
	return true;
}

static void
make_outcome_callback(struct spool_append *op, int32_t result)
{
	struct make_outcome *o = op->ctx;
	o->done = true;
	o->result = result;
}

static bool
make_outcomes_done(void)
{
	for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++) {
		if (!outcomes[i].done)
			return false;
	}
	return true;
}

static bool
make_write_outcomes(struct ring *ring, struct spool *sp)
{
	size_t count = sizeof(outcomes) / sizeof(outcomes[0]);
	for (size_t i = 0; i < count; i++) {
		struct make_outcome *o = &outcomes[i];
		o->out.message = msgs[o->msg_index].op.location;
		o->out.rcpt_index = o->rcpt_index;
		o->out.state = (uint16_t)o->state;
		o->out.time_ns = o->time_ns;
		o->op.callback = make_outcome_callback;
		o->op.ctx = o;
		o->op.input.outcome = &o->out;
		if (spool_write_outcome(sp, &o->op) != 0)
			return false;
	}
	if (!make_run(ring, make_outcomes_done))
		return false;
	for (size_t i = 0; i < count; i++) {
		if (outcomes[i].result != 0)
			return false;
	}
	return true;
}

static bool
make_report(const char *spool_dir, const char *expect_dir)
{
	char msg_dir[PATH_MAX], path[PATH_MAX], id[SPOOL_QUEUE_ID_SIZE];
	spool_shard_path(spool_dir, 0, "msg", msg_dir, sizeof(msg_dir));
	for (uint32_t i = 0; i < MAKE_SPOOL_MESSAGES; i++) {
		const struct make_msg *m = &msgs[i];
		snprintf(path, sizeof(path), "%s/%u.eml", expect_dir, i);
		FILE *f = fopen(path, "wb");
		if (f == NULL || fwrite(m->text, 1, m->text_size, f) != m->text_size ||
		    fclose(f) != 0)
			return false;
		spool_queue_id_format(&m->op.location, id);
		spool_log_segment_path(msg_dir, m->op.location.segment_id, path, sizeof(path));
		printf("message %u %s %s %" PRIu32 " %" PRIu32 " %" PRIu32 "\n", i, id, path,
		       m->op.location.offset, m->op.record_size, m->message.rcpt_count);
	}
	return true;
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: make_spool SPOOL_DIR EXPECT_DIR\n");
		return 64;
	}
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		return 77; /* no io_uring here: the test is skipped */
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = argv[1];
	cfg.segment_size = 1u << 20;
	cfg.journal_segment_size = 256u << 10;
	cfg.message_size_max = 64u << 10; /* a segment must hold the largest record */
	cfg.recipients_max = 10;
	cfg.free_space_reserve = 0;
	char err[512] = "";
	struct spool *sp = spool_open(ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
	if (sp == NULL) {
		fprintf(stderr, "make_spool: spool_open: %s\n", err);
		return 1;
	}
	bool ok = make_write_batch(ring, sp, 0, 3) && make_write_batch(ring, sp, 3, 5) &&
		  make_write_batch(ring, sp, 5, MAKE_SPOOL_MESSAGES) &&
		  make_write_outcomes(ring, sp) && make_report(argv[1], argv[2]);
	spool_close(sp);
	ring_destroy(ring);
	if (!ok)
		fprintf(stderr, "make_spool: failed\n");
	return ok ? 0 : 1;
}
