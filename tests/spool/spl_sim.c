/*
 * spl_sim.c - trace, fault policy, workload and checks for the SPL tests.
 * See spl_sim.h for the crash model. Everything here runs in the test
 * process or in a forked child that may die at any submission: the child
 * only ever appends to the shared arena, so whatever it recorded before
 * SIGKILL is complete event by event (the parent reads after waitpid).
 */
#include "spl_sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "tests/lib/test_util.h"

#define SPL_ARENA_HEAD 64u
#define SPL_PAGE 4096u

/* ---- arena ---- */

struct spl_arena *
spl_arena_create(uint64_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct spl_arena *a = p;
	a->size = size;
	spl_arena_reset(a);
	return a;
}

void
spl_arena_reset(struct spl_arena *a)
{
	a->used = SPL_ARENA_HEAD;
	a->subs = 0;
	a->overflow = 0;
	a->events = 0;
}

void
spl_arena_destroy(struct spl_arena *a)
{
	if (a != NULL)
		munmap(a, a->size);
}

static uint8_t *
spl_at(const struct spl_arena *a, uint64_t off)
{
	return (uint8_t *)(uintptr_t)a + off;
}

/* Append an event; with pre_len > 0 a page-aligned pre-image area follows
 * it (ev->pre). Returns the event's offset, 0 when the arena is full. */
static uint64_t
spl_log_with(struct spl_arena *a, const struct spl_ev *ev, uint32_t pre_len)
{
	uint64_t at = a->used;
	uint64_t end = at + sizeof(*ev);
	uint64_t pre = 0;
	if (pre_len > 0) {
		pre = ENG_ALIGN_UP(end, (uint64_t)SPL_PAGE);
		end = ENG_ALIGN_UP(pre + pre_len, (uint64_t)8);
	}
	if (end > a->size) {
		a->overflow = 1;
		return 0;
	}
	struct spl_ev *dst = (struct spl_ev *)(void *)spl_at(a, at);
	*dst = *ev;
	dst->pre = pre;
	if (pre_len > 0)
		dst->len = pre_len;
	a->used = end;
	a->events++;
	return at;
}

void
spl_log(struct spl_arena *a, const struct spl_ev *ev)
{
	(void)spl_log_with(a, ev, 0);
}

const struct spl_ev *
spl_ev_next(const struct spl_arena *a, uint64_t *at)
{
	if (*at < SPL_ARENA_HEAD)
		*at = SPL_ARENA_HEAD;
	if (*at + sizeof(struct spl_ev) > a->used)
		return NULL;
	const struct spl_ev *ev = (const struct spl_ev *)(const void *)spl_at(a, *at);
	*at = ev->pre != 0 ? ENG_ALIGN_UP(ev->pre + ev->len, (uint64_t)8) : *at + sizeof(*ev);
	return ev;
}

/* ---- configuration, plan ---- */

struct spool_config
spl_config(const char *dir, bool use_fdatasync)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = dir;
	cfg.segment_size = 64u << 10;
	cfg.journal_segment_size = 32u << 10;
	cfg.commit_size_max = 16u << 10;
	cfg.commit_slots = 4;
	cfg.message_size_max = SPL_BODY_MAX;
	cfg.recipients_max = SPL_RCPTS_MAX;
	cfg.ready_segments = 1;
	cfg.free_space_reserve = 0;
	cfg.use_fdatasync = use_fdatasync;
	cfg.allow_volatile = true; /* durability is modelled by the trace (spl_sim.h) */
	return cfg;
}

static uint64_t
spl_hash(uint64_t seed, uint64_t a, uint64_t b)
{
	uint64_t x = seed ^ (a * 0x9e3779b97f4a7c15ull) ^ (b * 0xc2b2ae3d27d4eb4full);
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint32_t
spl_rcpt_count(uint64_t seed, uint32_t id)
{
	return 1u + (uint32_t)(spl_hash(seed, id, 7) % SPL_RCPTS_MAX);
}

/* Messages with id % 50 < 10 keep live recipients (pending or deferred);
 * the others reach a final outcome, so their segments get reclaimed. */
uint32_t
spl_plan(uint64_t seed, uint32_t id, uint32_t rcpt, struct spl_step *steps)
{
	uint64_t h = spl_hash(seed, id, 100u + rcpt);
	uint64_t t = 2000000000ull + (h >> 20) % 1000000000ull;
	if (id % 50 < 10) {
		uint32_t n = (uint32_t)(h % 3);
		for (uint32_t i = 0; i < n; i++)
			steps[i] = (struct spl_step){ SPOOL_RCPT_DEFERRED, t + i * 1000u };
		return n;
	}
	uint16_t final = (h >> 8) % 8 == 1 ? SPOOL_RCPT_BOUNCED : SPOOL_RCPT_DELIVERED;
	if (h % 4 == 0) {
		steps[0] = (struct spl_step){ SPOOL_RCPT_DEFERRED, t };
		steps[1] = (struct spl_step){ final, t + 1 };
		return 2;
	}
	steps[0] = (struct spl_step){ final, t };
	return 1;
}

size_t
spl_body(uint64_t seed, uint32_t id, uint8_t *out)
{
	size_t size = 64 + (size_t)(spl_hash(seed, id, 3) % (SPL_BODY_MAX - 256));
	return test_body(seed * 1000003ull + id, size, out, SPL_BODY_MAX);
}

void
spl_rcpt_text(uint32_t id, uint32_t r, char *out, size_t size)
{
	snprintf(out, size, "r%u.%u@spl%u.example", id, r, id % 5);
}

void
spl_sender_text(uint32_t id, char *out, size_t size)
{
	snprintf(out, size, "s%u@spl.example", id);
}

/* ---- trace hooks ---- */

static void __attribute__((noreturn))
spl_die(void)
{
	kill(getpid(), SIGKILL);
	_exit(99);
}

static struct spl_opmap *
spl_map_get(struct spl_sim *s, const struct ring_op *op, bool add)
{
	size_t h = ((uintptr_t)op >> 4) % SPL_OPMAP_SIZE;
	for (uint32_t i = 0; i < SPL_OPMAP_SIZE; i++) {
		struct spl_opmap *m = &s->map[(h + i) % SPL_OPMAP_SIZE];
		if (m->op == op)
			return m;
		if (m->op == NULL) {
			if (!add)
				return NULL;
			m->op = op;
			return m;
		}
	}
	ENG_PANIC("spl: op map full");
	return NULL;
}

static bool
spl_kind_is_write(uint8_t kind)
{
	return kind == RING_OP_WRITE || kind == RING_OP_WRITE_FIXED;
}

static bool
spl_kind_has_fd(uint8_t kind)
{
	return spl_kind_is_write(kind) || kind == RING_OP_READ || kind == RING_OP_READ_FIXED ||
	       kind == RING_OP_FSYNC || kind == RING_OP_RENAMEAT;
}

/* The bytes a write is about to replace (zeros past the end of file). */
static void
spl_read_pre(int fd, uint8_t *dst, uint32_t len, uint64_t offset)
{
	ssize_t n = pread(fd, dst, len, (off_t)offset);
	if (n != (ssize_t)len) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int bfd = open(path, O_RDONLY | O_CLOEXEC);
		n = bfd >= 0 ? pread(bfd, dst, len, (off_t)offset) : -1;
		if (bfd >= 0)
			close(bfd);
	}
	if (n < 0)
		n = 0;
	if ((size_t)n < len)
		memset(dst + n, 0, len - (size_t)n);
}

static uint64_t
spl_ino_of_path(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static bool
spl_shadow_has_name(const struct spl_sim *s, const struct spl_shadow *sh)
{
	char path[PATH_MAX];
	spool_log_segment_path(sh->journal ? s->journal_dir : s->msg_dir, sh->id, path, sizeof(path));
	return spl_ino_of_path(path) == sh->ino;
}

static bool spl_shadow_dir_is(const struct spl_sim *s, const struct spl_shadow *sh, uint64_t ino)
{
	return ino == (sh->journal ? s->journal_dir_ino : s->msg_dir_ino);
}

/* Log every segment whose reclamation is not durable yet, then die. */
static void __attribute__((noreturn))
spl_die_resurrecting(struct spl_sim *s)
{
	for (uint32_t i = 0; i < s->shadow_count; i++) {
		struct spl_shadow *sh = &s->shadows[i];
		if (sh->gone || spl_shadow_has_name(s, sh))
			continue;
		struct spl_ev ev = { .type = SPL_EV_RESURRECT, .ino = sh->ino, .value = sh->id,
				     .flag = sh->journal };
		spl_log(s->arena, &ev);
	}
	spl_die();
}

static void
spl_dir_inos(struct spl_sim *s)
{
	if (s->msg_dir_ino == 0)
		s->msg_dir_ino = spl_ino_of_path(s->msg_dir);
	if (s->journal_dir_ino == 0)
		s->journal_dir_ino = spl_ino_of_path(s->journal_dir);
}

/* A reclamation dir sync is submitted: it covers every name gone now. */
static void
spl_shadow_sync_submitted(struct spl_sim *s, uint64_t dir_ino, uint64_t seq)
{
	for (uint32_t i = 0; i < s->shadow_count; i++) {
		struct spl_shadow *sh = &s->shadows[i];
		if (sh->gone || sh->pending_seq != 0 || !spl_shadow_dir_is(s, sh, dir_ino))
			continue;
		if (!spl_shadow_has_name(s, sh))
			sh->pending_seq = seq;
	}
}

static void
spl_on_submit(void *ctx, struct ring_op *op, const struct ring_submit_info *in)
{
	struct spl_sim *s = ctx;
	uint64_t n = ++s->arena->subs;
	if (s->crash_after != 0 && n > s->crash_after)
		spl_die();
	bool dir_sync = op->kind == RING_OP_FSYNC && op->tag == SPOOL_TAG_DELETE;
	if (dir_sync && s->crash_delete != 0 && ++s->deletes == s->crash_delete)
		spl_die_resurrecting(s);
	struct spl_ev ev = { .type = SPL_EV_SUB, .kind = op->kind, .tag = op->tag, .seq = n,
			     .offset = in->offset };
	struct stat st;
	if (spl_kind_has_fd(op->kind) && in->fd >= 0 && fstat(in->fd, &st) == 0)
		ev.ino = (uint64_t)st.st_ino;
	bool write = spl_kind_is_write(op->kind);
	if (write)
		ev.flag = (in->rw_flags & RWF_DSYNC) != 0;
	uint64_t at = spl_log_with(s->arena, &ev, write ? in->len : 0);
	if (write && at != 0) {
		const struct spl_ev *logged = (const struct spl_ev *)(void *)spl_at(s->arena, at);
		spl_read_pre(in->fd, spl_at(s->arena, logged->pre), in->len, in->offset);
	}
	struct spl_opmap *m = spl_map_get(s, op, true);
	m->seq = n;
	m->ino = ev.ino;
	m->ev = at;
	m->fd = in->fd;
	/* Any sync of the directory (reclamation, preparation, activation)
	 * makes every earlier rename or unlink in it durable. */
	if (op->kind == RING_OP_FSYNC && s->shadows_on) {
		spl_dir_inos(s);
		if (ev.ino == s->msg_dir_ino || ev.ino == s->journal_dir_ino)
			spl_shadow_sync_submitted(s, ev.ino, n);
	}
}

/* Hard-link every .seg file not linked yet into the shadow directory. */
static void
spl_shadow_scan_dir(struct spl_sim *s, const char *dir, bool journal)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len != 20 || strcmp(de->d_name + 16, ".seg") != 0)
			continue;
		char path[PATH_MAX], link_path[PATH_MAX];
		uint64_t id = strtoull(de->d_name, NULL, 16);
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		uint64_t ino = spl_ino_of_path(path);
		bool known = false;
		for (uint32_t i = 0; i < s->shadow_count && !known; i++)
			known = s->shadows[i].ino == ino && s->shadows[i].id == id;
		if (known || ino == 0 || s->shadow_count == SPL_SHADOW_MAX)
			continue;
		snprintf(link_path, sizeof(link_path), "%s/%c-%016llx", s->shadow_dir,
			 journal ? 'j' : 'm', (unsigned long long)id);
		if (link(path, link_path) != 0)
			continue;
		s->shadows[s->shadow_count++] = (struct spl_shadow){ .ino = ino, .id = id,
								     .journal = journal };
	}
	closedir(d);
}

static void
spl_shadow_synced(struct spl_sim *s, const struct spl_opmap *m)
{
	spl_dir_inos(s);
	for (uint32_t i = 0; i < s->shadow_count; i++) {
		struct spl_shadow *sh = &s->shadows[i];
		if (!sh->gone && sh->pending_seq != 0 && sh->pending_seq <= m->seq &&
		    spl_shadow_dir_is(s, sh, m->ino))
			sh->gone = true;
	}
}

/* Put a write's pre-image back from byte `from` (a page multiple). */
static void
spl_undo_write(struct spl_sim *s, const struct spl_opmap *m, uint32_t from)
{
	if (m == NULL || m->ev == 0)
		return;
	const struct spl_ev *ev = (const struct spl_ev *)(void *)spl_at(s->arena, m->ev);
	if (from >= ev->len)
		return;
	ssize_t n = pwrite(m->fd, spl_at(s->arena, ev->pre + from), ev->len - from,
			   (off_t)(ev->offset + from));
	ENG_ASSERT(n == (ssize_t)(ev->len - from));
}

static int32_t
spl_fault_apply(struct spl_sim *s, struct ring_op *op, const struct spl_opmap *m, int32_t res)
{
	struct spl_fault *f = &s->fault;
	bool write = spl_kind_is_write(op->kind);
	struct spl_ev ev = { .type = SPL_EV_FAULT, .kind = op->kind, .tag = op->tag,
			     .seq = m != NULL ? m->seq : 0 };
	if (f->tag != 0 && op->tag == f->tag && (f->kind == 0 || op->kind == f->kind) && res >= 0) {
		f->seen++;
		if (f->seen > f->skip && (f->persistent || f->injected == 0)) {
			f->injected++;
			if (write)
				spl_undo_write(s, m, 0); /* a failed write wrote nothing */
			ev.res = f->error;
			spl_log(s->arena, &ev);
			return f->error;
		}
	}
	if (op->tag != SPOOL_TAG_COMMIT_WRITE || res <= 0 || (uint32_t)res != op->len)
		return res;
	uint64_t r = test_rand(&f->rng) % 1000u;
	if (r < f->short_permille && op->len > 1) {
		int32_t count = 1 + (int32_t)(test_rand(&f->rng) % (op->len - 1));
		/* Make it real: the bytes past the last whole page are not written. */
		spl_undo_write(s, m, ENG_ALIGN_UP((uint32_t)count, SPL_PAGE));
		f->shorts++;
		ev.res = count;
		spl_log(s->arena, &ev);
		return count;
	}
	if (r < (uint64_t)f->short_permille + f->retry_permille) {
		spl_undo_write(s, m, 0);
		f->retries++;
		ev.res = (r & 1) != 0 ? -EAGAIN : -EINTR;
		spl_log(s->arena, &ev);
		return ev.res;
	}
	return res;
}

static int32_t
spl_on_complete(void *ctx, struct ring_op *op, int32_t res)
{
	struct spl_sim *s = ctx;
	struct spl_opmap *m = spl_map_get(s, op, false);
	struct spl_ev ev = { .type = SPL_EV_CQE, .kind = op->kind, .tag = op->tag, .res = res,
			     .seq = m != NULL ? m->seq : 0, .ino = m != NULL ? m->ino : 0 };
	spl_log(s->arena, &ev);
	if (s->shadows_on && m != NULL && op->kind == RING_OP_FSYNC && res >= 0) {
		if (op->tag == SPOOL_TAG_ACTIVATE) {
			spl_shadow_scan_dir(s, s->msg_dir, false);
			spl_shadow_scan_dir(s, s->journal_dir, true);
		}
		spl_shadow_synced(s, m);
	}
	if (s->fault_on)
		res = spl_fault_apply(s, op, m, res);
	return res;
}

void
spl_sim_init(struct spl_sim *sim, struct spl_arena *arena, const char *spool_dir,
	     const char *shadow_dir)
{
	memset(sim, 0, sizeof(*sim));
	sim->arena = arena;
	spool_shard_path(spool_dir, 0, "msg", sim->msg_dir, sizeof(sim->msg_dir));
	spool_shard_path(spool_dir, 0, "journal", sim->journal_dir, sizeof(sim->journal_dir));
	if (shadow_dir != NULL) {
		snprintf(sim->shadow_dir, sizeof(sim->shadow_dir), "%s", shadow_dir);
		sim->shadows_on = true;
	}
}

void
spl_sim_attach(struct spl_sim *sim, struct ring *ring)
{
	ring_set_submit_hook(ring, spl_on_submit, sim);
	ring_set_fault(ring, spl_on_complete, sim);
}
