/*
 * spl_work.c - the SPL workload (seeded messages and outcomes written
 * through a real spool), the crash image builder and the recovery checks
 * of reliability.md 4.2. See spl_sim.h.
 */
#include "spl_sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

/* ---- workload ---- */

static void spl_client_send(struct spl_work *w, struct spl_client *c);

static void
spl_client_stop(struct spl_work *w, struct spl_client *c, uint64_t value, int32_t res)
{
	struct spl_ev ev = { .type = SPL_EV_FAIL, .value = value, .res = res };
	spl_log(w->sim->arena, &ev);
	w->failures++;
	c->failed = true;
	c->active = false;
	w->active--;
}

/* Write the client's next planned outcome, or move to a new message. */
static void
spl_outcome_next(struct spl_work *w, struct spl_client *c)
{
	struct spl_step steps[2];
	uint32_t rcpts = spl_rcpt_count(w->seed, c->id);
	for (; w->outcomes && c->rcpt < rcpts; c->rcpt++, c->step = 0) {
		uint32_t n = spl_plan(w->seed, c->id, c->rcpt, steps);
		if (c->step >= n)
			continue;
		c->outcome = (struct spool_outcome){ .message = c->loc, .rcpt_index = c->rcpt,
						     .state = steps[c->step].state,
						     .time_ns = steps[c->step].time };
		uint64_t key = (uint64_t)c->id * 4u + c->rcpt;
		struct spl_ev ev = { .type = SPL_EV_OSUB, .value = key,
				     .flag = (uint8_t)c->outcome.state, .time = c->outcome.time_ns };
		spl_log(w->sim->arena, &ev);
		int ret = spool_write_outcome(w->sp, &c->outcome_op);
		if (ret != 0)
			spl_client_stop(w, c, key, ret);
		return;
	}
	spl_client_send(w, c);
}

static void
spl_outcome_done(struct spool_append *op, int32_t result)
{
	struct spl_work *w = op->ctx;
	struct spl_client *c = ENG_CONTAINER_OF(op, struct spl_client, outcome_op);
	uint64_t key = (uint64_t)c->id * 4u + c->rcpt;
	if (result != 0) {
		spl_client_stop(w, c, key, result);
		return;
	}
	struct spl_ev ev = { .type = SPL_EV_OACK, .value = key, .flag = (uint8_t)c->outcome.state,
			     .time = c->outcome.time_ns };
	spl_log(w->sim->arena, &ev);
	c->step++;
	spl_outcome_next(w, c);
}

static void
spl_message_done(struct spool_append *op, int32_t result)
{
	struct spl_work *w = op->ctx;
	struct spl_client *c = ENG_CONTAINER_OF(op, struct spl_client, op);
	if (result != 0) {
		spl_client_stop(w, c, c->id, result);
		return;
	}
	struct spl_ev ev = { .type = SPL_EV_ACK, .value = c->id, .ino = op->location.segment_id,
			     .offset = op->location.offset, .len = op->record_size };
	spl_log(w->sim->arena, &ev);
	w->acked++;
	c->loc = op->location;
	c->rcpt = 0;
	c->step = 0;
	spl_outcome_next(w, c);
}

static void
spl_client_fill(struct spl_work *w, struct spl_client *c, char *sender, size_t sender_size)
{
	size_t len = spl_body(w->seed, c->id, c->body);
	uint32_t rcpts = spl_rcpt_count(w->seed, c->id);
	for (uint32_t r = 0; r < rcpts; r++) {
		spl_rcpt_text(c->id, r, c->rcpt_text[r], sizeof(c->rcpt_text[r]));
		c->rcpts[r] = (struct spool_span){ (const uint8_t *)c->rcpt_text[r],
						   (uint32_t)strlen(c->rcpt_text[r]) };
	}
	spl_sender_text(c->id, sender, sender_size);
	c->message = (struct spool_message){
		.created_ns = SPL_CREATED_BASE + c->id,
		.expires_ns = SPL_CREATED_BASE + c->id + 432000000000000ull,
		.sender = { (const uint8_t *)sender, (uint32_t)strlen(sender) },
		.rcpt_count = rcpts,
		.rcpts = c->rcpts,
		.body = { c->body, (uint32_t)len },
	};
	memset(&c->op, 0, sizeof(c->op));
	c->op.callback = spl_message_done;
	c->op.ctx = w;
	c->op.type = SPOOL_RECORD_MESSAGE;
	c->op.input.message = &c->message;
	memset(&c->outcome_op, 0, sizeof(c->outcome_op));
	c->outcome_op.callback = spl_outcome_done;
	c->outcome_op.ctx = w;
	c->outcome_op.type = SPOOL_RECORD_OUTCOME;
	c->outcome_op.input.outcome = &c->outcome;
}

/* Write message c->id (again, after a failure, on a resume). */
static void
spl_client_write(struct spl_work *w, struct spl_client *c)
{
	static char senders[SPL_WINDOW][48];
	uint32_t slot = (uint32_t)(c - w->clients);
	spl_client_fill(w, c, senders[slot], sizeof(senders[slot]));
	int ret = spool_write_message(w->sp, &c->op);
	if (ret != 0)
		spl_client_stop(w, c, c->id, ret);
}

static void
spl_client_send(struct spl_work *w, struct spl_client *c)
{
	if (w->next_id >= w->messages) {
		c->active = false;
		w->active--;
		return;
	}
	c->id = w->next_id++;
	c->failed = false;
	spl_client_write(w, c);
}

void
spl_work_start(struct spl_work *w, struct spl_sim *sim, struct spool *sp, uint64_t seed,
	       uint32_t messages, bool outcomes)
{
	ENG_ASSERT(messages <= SPL_MSGS_MAX);
	memset(w, 0, sizeof(*w));
	w->sim = sim;
	w->sp = sp;
	w->seed = seed;
	w->messages = messages;
	w->outcomes = outcomes;
	for (uint32_t i = 0; i < SPL_WINDOW; i++) {
		w->clients[i].active = true;
		w->active++;
	}
	for (uint32_t i = 0; i < SPL_WINDOW; i++)
		spl_client_send(w, &w->clients[i]);
}

void
spl_work_resume(struct spl_work *w)
{
	for (uint32_t i = 0; i < SPL_WINDOW; i++) {
		struct spl_client *c = &w->clients[i];
		if (c->active || !c->failed)
			continue;
		c->active = true;
		c->failed = false;
		w->active++;
		spl_client_write(w, c); /* the same message again */
	}
}

bool
spl_work_run(struct spl_work *w, struct ring *ring, uint32_t turns_max)
{
	for (uint32_t i = 0; i < turns_max && w->active > 0; i++) {
		if (ring_run_once(ring, 20ull * 1000ull * 1000ull) < 0)
			return false;
	}
	return w->active == 0;
}

void
spl_child_run(struct spl_sim *sim, const char *spool_dir, uint64_t seed, uint32_t messages,
	      bool use_fdatasync)
{
	static struct spl_work w;
	struct ring *ring = test_ring_create();
	if (ring == NULL)
		_exit(20);
	spl_sim_attach(sim, ring);
	struct spool_config cfg = spl_config(spool_dir, use_fdatasync);
	char err[512];
	struct spool *sp = spool_open(ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
	if (sp == NULL) {
		fprintf(stderr, "spl child: %s\n", err);
		_exit(21);
	}
	spl_work_start(&w, sim, sp, seed, messages, true);
	if (!spl_work_run(&w, ring, 200000))
		_exit(22);
	/* Let reclamation started by the last outcomes finish. */
	for (uint32_t i = 0; i < 50 && ring_ops_in_flight(ring) > 0; i++)
		(void)ring_run_once(ring, 20ull * 1000ull * 1000ull);
	_exit(w.failures == 0 ? 0 : 23);
}

/* ---- crash image ---- */

struct spl_wr {
	const struct spl_ev *sub;
	uint64_t sub_at;
	uint64_t cqe_at;
	int32_t res;
	bool completed;
	bool durable;
	bool keep;
};

struct spl_fs {
	uint64_t ino;
	uint64_t sub_at;
	bool ok;
	uint64_t seq;
};

struct spl_trace {
	struct spl_wr *w;
	uint32_t wn;
	struct spl_fs *f;
	uint32_t fn;
};

static void
spl_trace_load(const struct spl_arena *a, struct spl_trace *t)
{
	uint32_t cap = a->events + 1;
	t->w = calloc(cap, sizeof(*t->w));
	t->f = calloc(cap, sizeof(*t->f));
	ENG_ASSERT(t->w != NULL && t->f != NULL);
	t->wn = t->fn = 0;
	uint64_t at = 0, pos = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(a, &at)) != NULL) {
		pos++;
		if (ev->type == SPL_EV_SUB && ev->pre != 0)
			t->w[t->wn++] = (struct spl_wr){ .sub = ev, .sub_at = pos };
		else if (ev->type == SPL_EV_SUB && ev->kind == RING_OP_FSYNC)
			t->f[t->fn++] = (struct spl_fs){ .ino = ev->ino, .sub_at = pos, .seq = ev->seq };
		if (ev->type != SPL_EV_CQE)
			continue;
		for (uint32_t i = t->wn; i > 0; i--) {
			if (t->w[i - 1].sub->seq == ev->seq) {
				t->w[i - 1].completed = true;
				t->w[i - 1].res = ev->res;
				t->w[i - 1].cqe_at = pos;
				break;
			}
		}
		for (uint32_t i = t->fn; i > 0; i--) {
			if (t->f[i - 1].seq == ev->seq) {
				t->f[i - 1].ok = ev->res >= 0;
				break;
			}
		}
	}
}

static void
spl_trace_durable(struct spl_trace *t)
{
	for (uint32_t i = 0; i < t->wn; i++) {
		struct spl_wr *w = &t->w[i];
		if (!w->completed || w->res < 0)
			continue;
		if (w->sub->flag && (uint32_t)w->res == w->sub->len) {
			w->durable = true;
			continue;
		}
		for (uint32_t j = 0; j < t->fn && !w->durable; j++) {
			const struct spl_fs *f = &t->f[j];
			w->durable = f->ok && f->ino == w->sub->ino && w->cqe_at < f->sub_at;
		}
	}
}

/* Current path of an inode in the shard's msg/ or journal/ directory. */
static bool
spl_path_of(const char *spool_dir, uint64_t ino, char *out, size_t out_size)
{
	const char *subs[] = { "msg", "journal" };
	for (size_t i = 0; i < 2; i++) {
		char dir[PATH_MAX];
		spool_shard_path(spool_dir, 0, subs[i], dir, sizeof(dir));
		DIR *d = opendir(dir);
		if (d == NULL)
			continue;
		struct dirent *de;
		bool found = false;
		while (!found && (de = readdir(d)) != NULL) {
			if (de->d_ino != ino || de->d_name[0] == '.')
				continue;
			snprintf(out, out_size, "%s/%s", dir, de->d_name);
			found = true;
		}
		closedir(d);
		if (found)
			return true;
	}
	return false;
}

static void
spl_restore(const struct spl_arena *a, const char *spool_dir, const struct spl_ev *sub,
	    uint32_t from)
{
	char path[PATH_MAX];
	if (from >= sub->len || !spl_path_of(spool_dir, sub->ino, path, sizeof(path)))
		return;
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ENG_ASSERT(fd >= 0);
	const uint8_t *pre = (const uint8_t *)(const void *)a + sub->pre;
	ssize_t n = pwrite(fd, pre + from, sub->len - from, (off_t)(sub->offset + from));
	ENG_ASSERT(n == (ssize_t)(sub->len - from));
	close(fd);
}

static bool
spl_overlaps_other(const struct spl_trace *t, uint32_t i)
{
	const struct spl_ev *a = t->w[i].sub;
	for (uint32_t j = 0; j < t->wn; j++) {
		const struct spl_ev *b = t->w[j].sub;
		if (j == i || t->w[j].durable || b->ino != a->ino)
			continue;
		if (a->offset < b->offset + b->len && b->offset < a->offset + a->len)
			return true;
	}
	return false;
}

/* SPL-02: some un-flushed writes survive; the newest survivor is torn. */
static void
spl_choose_survivors(struct spl_trace *t, uint64_t *rng, struct spl_image_stats *st,
		     uint32_t *torn_index, uint32_t *torn_at)
{
	*torn_index = UINT32_MAX;
	for (uint32_t i = 0; i < t->wn; i++) {
		struct spl_wr *w = &t->w[i];
		if (w->durable || (test_rand(rng) & 1) == 0 || spl_overlaps_other(t, i))
			continue;
		w->keep = true;
		st->kept++;
		*torn_index = i;
	}
	if (*torn_index == UINT32_MAX)
		return;
	uint32_t len = t->w[*torn_index].sub->len;
	uint32_t gran = (test_rand(rng) & 1) != 0 ? 4096u : 512u;
	if (len / gran < 2)
		gran = 512;
	*torn_at = len / gran < 2 ? 0 : gran * (1u + (uint32_t)(test_rand(rng) % (len / gran - 1)));
	st->torn++;
}

bool spl_undo_journal_reclaim = true;

/* Undo the reclamation renames/unlinks whose directory sync never ran. */
static void
spl_resurrect(const struct spl_arena *a, const char *spool_dir, const char *shadow_dir,
	      struct spl_image_stats *st)
{
	uint64_t at = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(a, &at)) != NULL) {
		if (ev->type != SPL_EV_RESURRECT || (ev->flag && !spl_undo_journal_reclaim))
			continue;
		char dir[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
		spool_shard_path(spool_dir, 0, ev->flag ? "journal" : "msg", dir, sizeof(dir));
		spool_log_segment_path(dir, ev->value, to, sizeof(to));
		if (spl_path_of(spool_dir, ev->ino, from, sizeof(from))) {
			ENG_ASSERT(rename(from, to) == 0);
		} else {
			snprintf(from, sizeof(from), "%s/%c-%016llx", shadow_dir, ev->flag ? 'j' : 'm',
				 (unsigned long long)ev->value);
			ENG_ASSERT(link(from, to) == 0);
		}
		st->resurrected++;
	}
}

void
spl_image_build(struct spl_arena *a, const char *spool_dir, const char *shadow_dir,
		enum spl_image_mode mode, uint64_t *rng, struct spl_image_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (shadow_dir != NULL)
		spl_resurrect(a, spool_dir, shadow_dir, st);
	struct spl_trace t;
	spl_trace_load(a, &t);
	spl_trace_durable(&t);
	uint32_t torn_index = UINT32_MAX, torn_at = 0;
	if (mode == SPL_IMAGE_REORDER_TEAR)
		spl_choose_survivors(&t, rng, st, &torn_index, &torn_at);
	st->writes = t.wn;
	for (uint32_t i = t.wn; i > 0; i--) {
		struct spl_wr *w = &t.w[i - 1];
		if (w->durable) {
			st->durable++;
		} else if (i - 1 == torn_index) {
			spl_restore(a, spool_dir, w->sub, torn_at);
		} else if (!w->keep) {
			spl_restore(a, spool_dir, w->sub, 0);
			st->dropped++;
		}
	}
	free(t.w);
	free(t.f);
}
