/*
 * test_crash.c - kill -9 while appending; every acknowledged record must
 * survive, byte-identical.
 *
 * A forked child opens the spool (recovering what earlier rounds left),
 * appends messages as fast as it can with 64 outstanding, and for each
 * acknowledgement writes the message id down a pipe; one message in four
 * then gets a DELIVERED outcome, announced (top bit set) before it is
 * written, so the parent knows that record may be reclaimed. The parent kills the child with SIGKILL after a random
 * number of acknowledgements (seeded; the seed is printed), drains the
 * pipe, and recovers the spool read-only: every acknowledged id without a
 * durable final outcome must be present with its exact body. Rounds:
 * RINGMAIL_CRASH_ROUNDS (default 20); seed: RINGMAIL_CRASH_SEED.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "spool/spool.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

#define CRASH_OUTSTANDING 64
#define CRASH_BODY_MAX 4096
#define CRASH_FINAL_BIT (1ull << 63)

static size_t
crash_body_size(uint64_t id)
{
	return 200 + (size_t)((id * 2654435761u) % 3000);
}

static struct spool_config
crash_config(const char *dir)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = dir;
	cfg.segment_size = 4u << 20;
	cfg.journal_segment_size = 1u << 20;
	cfg.commit_size_max = 256u << 10;
	cfg.message_size_max = CRASH_BODY_MAX;
	cfg.free_space_reserve = 0;
	cfg.ready_segments = 1;
	return cfg;
}

/* ---- the child ---- */

struct crash_client {
	uint8_t body[CRASH_BODY_MAX];
	struct spool_span rcpt;
	struct spool_message message;
	struct spool_append op;
	struct spool_outcome outcome;
	struct spool_append outcome_op;
	bool outcome_busy;
	uint64_t id;
};

struct crash_child {
	struct spool *sp;
	int fd;
	uint64_t next_id;
	struct crash_client clients[CRASH_OUTSTANDING];
};

static void crash_client_send(struct crash_child *c, struct crash_client *cl);

static void
crash_report(struct crash_child *c, uint64_t value)
{
	/* A blocking write: the parent's reading paces the child. */
	if (write(c->fd, &value, sizeof(value)) != (ssize_t)sizeof(value))
		_exit(3);
}

static void
crash_outcome_done(struct spool_append *op, int32_t result)
{
	struct crash_client *cl = ENG_CONTAINER_OF(op, struct crash_client, outcome_op);
	struct crash_child *c = op->ctx;
	cl->outcome_busy = false;
	if (result != 0)
		_exit(10);
	crash_client_send(c, cl);
}

static void
crash_append_done(struct spool_append *op, int32_t result)
{
	struct crash_client *cl = ENG_CONTAINER_OF(op, struct crash_client, op);
	struct crash_child *c = op->ctx;
	if (result != 0)
		_exit(4);
	crash_report(c, cl->id);
	if (cl->id % 4 == 0) {
		memset(&cl->outcome, 0, sizeof(cl->outcome));
		cl->outcome.message = op->location;
		cl->outcome.rcpt_index = 0;
		cl->outcome.state = SPOOL_RCPT_DELIVERED;
		cl->outcome.time_ns = 1;
		memset(&cl->outcome_op, 0, sizeof(cl->outcome_op));
		cl->outcome_op.callback = crash_outcome_done;
		cl->outcome_op.ctx = c;
		cl->outcome_op.input.outcome = &cl->outcome;
		cl->outcome_busy = true;
		/* Reported before the write: from here on the record may
		 * legitimately vanish (its segment can be reclaimed the moment
		 * the outcome is durable, before any report could follow). */
		crash_report(c, cl->id | CRASH_FINAL_BIT);
		if (spool_write_outcome(c->sp, &cl->outcome_op) != 0)
			_exit(5);
		return;
	}
	crash_client_send(c, cl);
}

static void
crash_client_send(struct crash_child *c, struct crash_client *cl)
{
	cl->id = c->next_id++;
	size_t len = test_body(cl->id, crash_body_size(cl->id), cl->body, sizeof(cl->body));
	cl->rcpt.data = (const uint8_t *)"rcpt@crash.example";
	cl->rcpt.size = 18;
	memset(&cl->message, 0, sizeof(cl->message));
	cl->message.created_ns = cl->id;
	cl->message.sender.data = (const uint8_t *)"s@crash.example";
	cl->message.sender.size = 15;
	cl->message.rcpt_count = 1;
	cl->message.rcpts = &cl->rcpt;
	cl->message.body.data = cl->body;
	cl->message.body.size = (uint32_t)len;
	memset(&cl->op, 0, sizeof(cl->op));
	cl->op.callback = crash_append_done;
	cl->op.ctx = c;
	cl->op.input.message = &cl->message;
	if (spool_write_message(c->sp, &cl->op) != 0)
		_exit(6);
}

static void
crash_child_main(const char *dir, int fd, uint32_t round)
{
	static struct crash_child c;
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		_exit(7);
	struct spool_config cfg = crash_config(dir);
	char err[512];
	c.sp = spool_open(ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
	if (c.sp == NULL) {
		fprintf(stderr, "child: %s\n", err);
		_exit(8);
	}
	c.fd = fd;
	c.next_id = (uint64_t)round << 32;
	for (uint32_t i = 0; i < CRASH_OUTSTANDING; i++)
		crash_client_send(&c, &c.clients[i]);
	for (;;) {
		if (ring_run_once(ring, UINT64_MAX) < 0)
			_exit(9);
	}
}

/* ---- the parent ---- */

struct crash_ledger {
	uint64_t *acked;
	uint32_t acked_count;
	uint64_t *final;
	uint32_t final_count;
	uint32_t capacity;
	/* Recovery results. */
	uint64_t *present;
	uint32_t present_count;
	uint32_t bad_bodies;
};

/* Append with geometric growth (a realloc per item is quadratic under
 * ASan, whose realloc always copies). */
static void
ledger_push(uint64_t **array, uint32_t *count, uint64_t value)
{
	uint32_t n = *count;
	if ((n & (n - 1)) == 0 && (n == 0 || n >= 1024)) {
		uint32_t cap = n < 1024 ? 1024 : n * 2;
		*array = realloc(*array, cap * sizeof(**array));
		cr_assert(*array != NULL);
	}
	(*array)[(*count)++] = value;
}

static int
u64_compare(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static bool
u64_contains(const uint64_t *array, uint32_t count, uint64_t value)
{
	return bsearch(&value, array, count, sizeof(value), u64_compare) != NULL;
}

static void
ledger_seen(void *ctx, const struct spool_recovered *r)
{
	struct crash_ledger *l = ctx;
	static uint8_t body[CRASH_BODY_MAX];
	uint64_t id = r->msg->created_ns;
	size_t len = test_body(id, crash_body_size(id), body, sizeof(body));
	if (len != r->msg->body.size || memcmp(body, r->msg->body.data, len) != 0)
		l->bad_bodies++;
	ledger_push(&l->present, &l->present_count, id);
}

/* Read reports until the child has acknowledged `kill_after`, then kill
 * it and drain everything it wrote before dying. */
static uint32_t
crash_round_run(struct crash_ledger *l, int fd, pid_t pid, uint32_t kill_after)
{
	uint32_t acks = 0;
	bool killed = kill_after == 0;
	if (killed)
		kill(pid, SIGKILL);
	for (;;) {
		uint64_t value;
		ssize_t n = read(fd, &value, sizeof(value));
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		cr_assert_eq(n, (ssize_t)sizeof(value));
		if (value & CRASH_FINAL_BIT) {
			ledger_push(&l->final, &l->final_count, value & ~CRASH_FINAL_BIT);
		} else {
			ledger_push(&l->acked, &l->acked_count, value);
			acks++;
		}
		if (!killed && acks >= kill_after) {
			kill(pid, SIGKILL);
			killed = true;
		}
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		  "child exited on its own: status %d", status);
	return acks;
}

static void
crash_verify(struct crash_ledger *l, const char *dir, uint32_t round, uint64_t seed)
{
	char msg[PATH_MAX], journal[PATH_MAX], err[512];
	spool_shard_path(dir, 0, "msg", msg, sizeof(msg));
	spool_shard_path(dir, 0, "journal", journal, sizeof(journal));
	free(l->present);
	l->present = NULL;
	l->present_count = 0;
	struct spool_recover_sink sink = { .ctx = l, .rcpt_fn = ledger_seen };
	struct spool_recovery_stats st = { 0 };
	uint64_t max_id = 0;
	cr_assert_eq(spool_recover_shard(msg, journal, NULL, 0, &sink, &st, &max_id, err,
					 sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(l->bad_bodies, 0, "seed %llu round %u: corrupt body recovered",
		     (unsigned long long)seed, round);
	cr_assert_eq(st.corrupt_spans, 0, "seed %llu round %u", (unsigned long long)seed, round);
	qsort(l->present, l->present_count, sizeof(uint64_t), u64_compare);
	qsort(l->final, l->final_count, sizeof(uint64_t), u64_compare);
	for (uint32_t i = 0; i < l->acked_count; i++) {
		uint64_t id = l->acked[i];
		if (u64_contains(l->final, l->final_count, id))
			continue;
		cr_assert(u64_contains(l->present, l->present_count, id),
			  "seed %llu round %u: acknowledged id %llx lost", (unsigned long long)seed,
			  round, (unsigned long long)id);
	}
}

Test(spool_crash, kill_9_loses_no_acknowledged_record, .timeout = 600)
{
	const char *env_rounds = getenv("RINGMAIL_CRASH_ROUNDS");
	const char *env_seed = getenv("RINGMAIL_CRASH_SEED");
	uint32_t rounds = env_rounds != NULL ? (uint32_t)atoi(env_rounds) : 20;
	uint64_t seed = env_seed != NULL ? strtoull(env_seed, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "spool_crash: seed %llu, %u rounds\n", (unsigned long long)seed, rounds);
	uint64_t rng = seed | 1;
	char dir[PATH_MAX];
	test_scratch_dir("crash", dir, sizeof(dir));
	struct crash_ledger l;
	memset(&l, 0, sizeof(l));
	uint64_t total_acks = 0;
	for (uint32_t round = 1; round <= rounds; round++) {
		int fds[2];
		cr_assert_eq(pipe(fds), 0);
		pid_t pid = fork();
		cr_assert(pid >= 0);
		if (pid == 0) {
			close(fds[0]);
			crash_child_main(dir, fds[1], round);
		}
		close(fds[1]);
		uint32_t kill_after = (uint32_t)(test_rand(&rng) % 4000);
		if (round % 7 == 3)
			kill_after = 0; /* during start-up and recovery */
		total_acks += crash_round_run(&l, fds[0], pid, kill_after);
		close(fds[0]);
		crash_verify(&l, dir, round, seed);
	}
	fprintf(stderr, "spool_crash: %u rounds, %llu acknowledged, %u final, 0 lost\n", rounds,
		(unsigned long long)total_acks, l.final_count);
	cr_assert_gt(total_acks, rounds);
	cr_assert_gt(l.final_count, 0);
	free(l.acked);
	free(l.final);
	free(l.present);
	test_remove_tree(dir);
}
