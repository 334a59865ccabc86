/*
 * spool.c - a shard's spool: two logs, recovery, accounting, reclamation.
 *
 * See spool.h. The tables here change only on segment events (a new
 * segment, a deletion) and on acknowledgements; lookups are binary
 * searches over ids, which only grow, so appends keep the tables sorted.
 */
#include "spool.h"

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

#include "../engine/eng_common.h"
#include "../ring/ring.h"
#include "spool_recover.h"

#define SPOOL_RESERVE_CHECK_NS (100ull * 1000ull * 1000ull)

struct spool_msg_seg {
	uint64_t id;
	uint64_t live;
	bool closed;
	bool deleting;
};

struct spool_journal_seg {
	uint64_t id;
	bool closed;
	bool deleting;
	uint32_t ref_count;
	uint32_t ref_capacity;
	uint64_t *refs; /* message segment ids referenced, ascending, unique */
};

struct spool {
	struct ring *ring;
	struct spool_config cfg;
	char shard_dir[PATH_MAX];
	char msg_dir[PATH_MAX];
	char journal_dir[PATH_MAX];
	char quarantine_dir[PATH_MAX];
	struct spool_log *msg_log;
	struct spool_log *journal_log;
	struct spool_reader *reader;
	struct spool_msg_seg *msg_segs;
	uint32_t msg_seg_count;
	uint32_t msg_seg_capacity;
	struct spool_journal_seg *journal_segs;
	uint32_t journal_seg_count;
	uint32_t journal_seg_capacity;
	uint64_t live_recipients;
	uint64_t reserve_checked_ns;
	bool below_reserve;
};

void
spool_config_defaults(struct spool_config *cfg)
{
	ENG_ASSERT(cfg != NULL);
	memset(cfg, 0, sizeof(*cfg));
	cfg->dir = "spool";
	cfg->segment_size = 64ull << 20;
	cfg->journal_segment_size = 16ull << 20;
	cfg->commit_size_max = 1u << 20;
	cfg->commit_slots = 4;
	cfg->message_size_max = 10u << 20;
	cfg->recipients_max = 1000;
	cfg->ready_segments = 2;
	cfg->free_space_reserve = 512ull << 20;
	cfg->use_fdatasync = false;
	cfg->read_fds = SPOOL_READ_FDS_DEFAULT;
}

void
spool_shard_path(const char *spool_dir, uint16_t shard, const char *sub, char *out,
		 size_t out_size)
{
	ENG_ASSERT(spool_dir != NULL);
	ENG_ASSERT(out_size > 0);
	if (sub == NULL)
		snprintf(out, out_size, "%s/%u", spool_dir, shard);
	else
		snprintf(out, out_size, "%s/%u/%s", spool_dir, shard, sub);
}

/* ---- sorted id tables ---- */

static bool
spool_grow(void **array, uint32_t *capacity, uint32_t count, size_t item_size)
{
	if (count < *capacity)
		return true;
	uint32_t wanted = *capacity == 0 ? 16 : *capacity * 2;
	void *grown = realloc(*array, wanted * item_size);
	if (grown == NULL)
		return false;
	*array = grown;
	*capacity = wanted;
	return true;
}

static struct spool_msg_seg *
spool_msg_seg_find(struct spool *sp, uint64_t id)
{
	uint32_t lo = 0, hi = sp->msg_seg_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (sp->msg_segs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < sp->msg_seg_count && sp->msg_segs[lo].id == id)
		return &sp->msg_segs[lo];
	return NULL;
}

/* Insert keeping order (ids arrive ascending in practice). */
static struct spool_msg_seg *
spool_msg_seg_add(struct spool *sp, uint64_t id)
{
	struct spool_msg_seg *seg = spool_msg_seg_find(sp, id);
	if (seg != NULL)
		return seg;
	if (!spool_grow((void **)&sp->msg_segs, &sp->msg_seg_capacity, sp->msg_seg_count,
			sizeof(*sp->msg_segs)))
		return NULL;
	uint32_t at = sp->msg_seg_count;
	while (at > 0 && sp->msg_segs[at - 1].id > id)
		at--;
	memmove(&sp->msg_segs[at + 1], &sp->msg_segs[at],
		(sp->msg_seg_count - at) * sizeof(*sp->msg_segs));
	sp->msg_seg_count++;
	seg = &sp->msg_segs[at];
	memset(seg, 0, sizeof(*seg));
	seg->id = id;
	return seg;
}

static void
spool_msg_seg_remove(struct spool *sp, uint64_t id)
{
	struct spool_msg_seg *seg = spool_msg_seg_find(sp, id);
	ENG_ASSERT(seg != NULL);
	ENG_ASSERT(seg->live == 0);
	uint32_t at = (uint32_t)(seg - sp->msg_segs);
	memmove(&sp->msg_segs[at], &sp->msg_segs[at + 1],
		(sp->msg_seg_count - at - 1) * sizeof(*sp->msg_segs));
	sp->msg_seg_count--;
}

static struct spool_journal_seg *
spool_journal_seg_find(struct spool *sp, uint64_t id)
{
	for (uint32_t i = sp->journal_seg_count; i > 0; i--) {
		if (sp->journal_segs[i - 1].id == id)
			return &sp->journal_segs[i - 1];
	}
	return NULL;
}

static struct spool_journal_seg *
spool_journal_seg_add(struct spool *sp, uint64_t id)
{
	struct spool_journal_seg *seg = spool_journal_seg_find(sp, id);
	if (seg != NULL)
		return seg;
	if (!spool_grow((void **)&sp->journal_segs, &sp->journal_seg_capacity,
			sp->journal_seg_count, sizeof(*sp->journal_segs)))
		return NULL;
	seg = &sp->journal_segs[sp->journal_seg_count++];
	memset(seg, 0, sizeof(*seg));
	seg->id = id;
	return seg;
}

/* Remember that journal segment js holds an outcome for message segment. */
static bool
spool_journal_ref(struct spool_journal_seg *js, uint64_t msg_segment_id)
{
	for (uint32_t i = js->ref_count; i > 0; i--) {
		if (js->refs[i - 1] == msg_segment_id)
			return true;
	}
	if (!spool_grow((void **)&js->refs, &js->ref_capacity, js->ref_count, sizeof(*js->refs)))
		return false;
	js->refs[js->ref_count++] = msg_segment_id;
	return true;
}

/* ---- reclamation ---- */

static void spool_journal_reclaim(struct spool *sp);

static void
spool_journal_deleted(void *ctx, uint64_t segment_id, int32_t res)
{
	struct spool *sp = ctx;
	struct spool_journal_seg *js = spool_journal_seg_find(sp, segment_id);
	ENG_ASSERT(js != NULL);
	(void)res; /* a failed directory sync leaves a journal that replays harmlessly */
	free(js->refs);
	uint32_t at = (uint32_t)(js - sp->journal_segs);
	memmove(&sp->journal_segs[at], &sp->journal_segs[at + 1],
		(sp->journal_seg_count - at - 1) * sizeof(*sp->journal_segs));
	sp->journal_seg_count--;
}

static bool
spool_journal_is_needed(struct spool *sp, const struct spool_journal_seg *js)
{
	for (uint32_t i = 0; i < js->ref_count; i++) {
		if (spool_msg_seg_find(sp, js->refs[i]) != NULL)
			return true;
	}
	return false;
}

static void
spool_journal_reclaim(struct spool *sp)
{
	for (uint32_t i = 0; i < sp->journal_seg_count; i++) {
		struct spool_journal_seg *js = &sp->journal_segs[i];
		if (!js->closed || js->deleting || spool_journal_is_needed(sp, js))
			continue;
		if (spool_log_segment_is_busy(sp->journal_log, js->id))
			continue;
		js->deleting = true;
		if (spool_log_recycle_segment(sp->journal_log, js->id, spool_journal_deleted, sp) < 0)
			js->deleting = false;
	}
}

static void
spool_msg_deleted(void *ctx, uint64_t segment_id, int32_t res)
{
	struct spool *sp = ctx;
	if (res < 0)
		return; /* not durably gone: keep it listed and its journals kept */
	/* Only now (unlink durable) may journals referencing it go. */
	spool_msg_seg_remove(sp, segment_id);
	spool_journal_reclaim(sp);
}

static void
spool_msg_maybe_delete(struct spool *sp, struct spool_msg_seg *seg)
{
	if (seg->live != 0 || !seg->closed || seg->deleting)
		return;
	if (spool_log_segment_is_busy(sp->msg_log, seg->id))
		return;
	seg->deleting = true;
	/* No read may open or reuse the file from here on. */
	spool_reader_forget_segment(sp->reader, seg->id);
	if (spool_log_recycle_segment(sp->msg_log, seg->id, spool_msg_deleted, sp) < 0)
		seg->deleting = false;
}

static void
spool_msg_closed(void *ctx, uint64_t segment_id)
{
	struct spool *sp = ctx;
	struct spool_msg_seg *seg = spool_msg_seg_add(sp, segment_id);
	ENG_ASSERT(seg != NULL);
	seg->closed = true;
	spool_msg_maybe_delete(sp, seg);
}

static void
spool_journal_closed(void *ctx, uint64_t segment_id)
{
	struct spool *sp = ctx;
	struct spool_journal_seg *js = spool_journal_seg_add(sp, segment_id);
	ENG_ASSERT(js != NULL);
	js->closed = true;
	spool_journal_reclaim(sp);
}

/* ---- acknowledgement accounting ---- */

static void
spool_msg_acked(void *ctx, struct spool_append *op, int32_t result)
{
	struct spool *sp = ctx;
	ENG_ASSERT(op->type == SPOOL_RECORD_MESSAGE);
	if (result < 0)
		return;
	struct spool_msg_seg *seg = spool_msg_seg_add(sp, op->location.segment_id);
	ENG_ASSERT(seg != NULL);
	seg->live += op->input.message->rcpt_count;
	sp->live_recipients += op->input.message->rcpt_count;
}

static void
spool_journal_acked(void *ctx, struct spool_append *op, int32_t result)
{
	struct spool *sp = ctx;
	ENG_ASSERT(op->type == SPOOL_RECORD_OUTCOME);
	if (result < 0)
		return;
	const struct spool_outcome *out = op->input.outcome;
	struct spool_journal_seg *js = spool_journal_seg_add(sp, op->location.segment_id);
	ENG_ASSERT(js != NULL);
	ENG_ASSERT(spool_journal_ref(js, out->message.segment_id));
	if (!spool_rcpt_state_is_final((enum spool_rcpt_state)out->state))
		return;
	struct spool_msg_seg *seg = spool_msg_seg_find(sp, out->message.segment_id);
	ENG_ASSERT(seg != NULL);  /* a final outcome names a live segment */
	ENG_ASSERT(seg->live > 0); /* at most one final outcome per recipient */
	seg->live--;
	ENG_ASSERT(sp->live_recipients > 0);
	sp->live_recipients--;
	spool_msg_maybe_delete(sp, seg);
}

/* ---- writes ---- */

bool
spool_is_below_reserve(struct spool *sp)
{
	uint64_t now = eng_now_monotonic_ns();
	if (now - sp->reserve_checked_ns < SPOOL_RESERVE_CHECK_NS && sp->reserve_checked_ns != 0)
		return sp->below_reserve;
	sp->reserve_checked_ns = now;
	struct statvfs st;
	if (statvfs(sp->msg_dir, &st) != 0)
		return sp->below_reserve;
	uint64_t free_bytes = (uint64_t)st.f_bavail * (uint64_t)st.f_frsize;
	/* The next segment preparation takes segment_size bytes and is held
	 * back below reserve + segment_size (spool_log.c): refuse new messages
	 * from that point, not only once the reserve itself is reached, so a
	 * message is never accepted into a log that cannot get a segment. A
	 * reserve of 0 turns the check off. */
	uint64_t threshold = sp->cfg.free_space_reserve == 0
				     ? 0
				     : ENG_MIN(UINT64_MAX - sp->cfg.segment_size,
					       sp->cfg.free_space_reserve) +
					       sp->cfg.segment_size;
	sp->below_reserve = free_bytes < threshold;
	return sp->below_reserve;
}

int
spool_write_message(struct spool *sp, struct spool_append *op)
{
	ENG_ASSERT(op != NULL);
	ENG_ASSERT(op->input.message != NULL);
	op->type = SPOOL_RECORD_MESSAGE;
	if (op->input.message->rcpt_count == 0 ||
	    op->input.message->rcpt_count > sp->cfg.recipients_max ||
	    op->input.message->body.size > sp->cfg.message_size_max)
		return -EMSGSIZE;
	if (!spool_log_is_healthy(sp->msg_log) || !spool_log_is_healthy(sp->journal_log))
		return -EIO;
	if (spool_is_below_reserve(sp))
		return -ENOSPC;
	return spool_log_append(sp->msg_log, op);
}

int
spool_write_outcome(struct spool *sp, struct spool_append *op)
{
	ENG_ASSERT(op != NULL);
	ENG_ASSERT(op->input.outcome != NULL);
	op->type = SPOOL_RECORD_OUTCOME;
	uint16_t state = op->input.outcome->state;
	if (state == SPOOL_RCPT_PENDING || state >= SPOOL_RCPT_STATE_COUNT)
		return -EINVAL;
	return spool_log_append(sp->journal_log, op);
}

void
spool_set_message_place_hook(struct spool *sp, spool_place_fn *fn, void *ctx)
{
	ENG_ASSERT(sp != NULL && sp->msg_log != NULL);
	spool_log_set_place_hook(sp->msg_log, fn, ctx);
}

bool
spool_is_healthy(const struct spool *sp)
{
	return spool_log_is_healthy(sp->msg_log) && spool_log_is_healthy(sp->journal_log);
}

uint32_t
spool_pending(const struct spool *sp)
{
	return spool_log_pending(sp->msg_log) + spool_log_pending(sp->journal_log);
}

uint64_t
spool_live_recipients(const struct spool *sp)
{
	return sp->live_recipients;
}

uint32_t
spool_live_segments(const struct spool *sp)
{
	return sp->msg_seg_count;
}

struct spool_reader *
spool_reader_get(struct spool *sp)
{
	ENG_ASSERT(sp != NULL);
	ENG_ASSERT(sp->reader != NULL);
	return sp->reader;
}

static uint32_t spool_record_max(const struct spool_config *cfg);

uint32_t
spool_message_record_size_max(const struct spool *sp)
{
	ENG_ASSERT(sp != NULL);
	uint32_t size = spool_record_max(&sp->cfg);
	ENG_ASSERT(size <= SPOOL_RECORD_SIZE_MAX);
	return size;
}

const struct spool_log_stats *
spool_message_stats(const struct spool *sp)
{
	return spool_log_stats_get(sp->msg_log);
}

const struct spool_log_stats *
spool_journal_stats(const struct spool *sp)
{
	return spool_log_stats_get(sp->journal_log);
}

/* ---- open, close ---- */

/* ---- recovery ---- */

struct spool_recover_ctx {
	struct spool *sp;
	spool_recover_fn *fn;
	void *ctx;
	int error;
};

static void
spool_recovered_rcpt(void *ctx, const struct spool_recovered *rcpt)
{
	struct spool_recover_ctx *rc = ctx;
	if (!spool_rcpt_state_is_final(rcpt->state) && rc->fn != NULL)
		rc->fn(rc->ctx, rcpt);
}

static void
spool_recovered_msg_seg(void *ctx, uint64_t segment_id, uint64_t live)
{
	struct spool_recover_ctx *rc = ctx;
	struct spool_msg_seg *seg = spool_msg_seg_add(rc->sp, segment_id);
	if (seg == NULL) {
		rc->error = -ENOMEM;
		return;
	}
	seg->live = live;
	seg->closed = true; /* recovered segments are never written again */
	rc->sp->live_recipients += live;
}

static void
spool_recovered_journal_seg(void *ctx, uint64_t segment_id, const uint64_t *refs,
			    uint32_t ref_count)
{
	struct spool_recover_ctx *rc = ctx;
	struct spool_journal_seg *js = spool_journal_seg_add(rc->sp, segment_id);
	if (js == NULL) {
		rc->error = -ENOMEM;
		return;
	}
	js->closed = true;
	for (uint32_t i = 0; i < ref_count; i++) {
		if (!spool_journal_ref(js, refs[i]))
			rc->error = -ENOMEM;
	}
}

static void
spool_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)fsync(fd);
	close(fd);
}

/* Reclaimed .seg files kept as .ready (the pool, one active, spares). */
#define SPOOL_RECLAIM_KEEP(cfg) ((cfg)->ready_segments + 1u + 4u)

/*
 * Take <id>.seg out of the log: renamed to <id>.ready while fewer than
 * SPOOL_RECLAIM_KEEP are kept (the log adopts it without zeroing, under a
 * fresh id its old records do not carry), else unlinked. A file of
 * another size (an older configuration) is unlinked. 0 or -errno.
 */
static int
spool_reclaim_file(const struct spool *sp, const char *dir, uint64_t id, uint64_t size,
		   uint32_t *kept)
{
	char path[PATH_MAX], ready[PATH_MAX];
	struct stat st;
	spool_log_segment_path(dir, id, path, sizeof(path));
	if (*kept < SPOOL_RECLAIM_KEEP(&sp->cfg) && stat(path, &st) == 0 &&
	    (uint64_t)st.st_size == size) {
		spool_log_file_path(dir, id, SPOOL_FILE_READY, ready, sizeof(ready));
		if (rename(path, ready) == 0) {
			(*kept)++;
			return 0;
		}
	}
	return unlink(path) == 0 ? 0 : -errno;
}

/* Start-up reclamation: segments with nothing live, then journals that
 * name no remaining segment. Message renames and unlinks are made durable
 * first. */
static void
spool_recover_reclaim(struct spool *sp, struct spool_recovery_stats *stats)
{
	uint32_t kept = 0;
	for (uint32_t i = 0; i < sp->msg_seg_count;) {
		struct spool_msg_seg *seg = &sp->msg_segs[i];
		if (seg->live != 0) {
			i++;
			continue;
		}
		if (spool_reclaim_file(sp, sp->msg_dir, seg->id, sp->cfg.segment_size, &kept) != 0) {
			i++;
			continue;
		}
		stats->segments_deleted++;
		spool_msg_seg_remove(sp, seg->id);
	}
	spool_sync_dir(sp->msg_dir);
	kept = 0;
	for (uint32_t i = 0; i < sp->journal_seg_count;) {
		struct spool_journal_seg *js = &sp->journal_segs[i];
		if (spool_journal_is_needed(sp, js) ||
		    spool_reclaim_file(sp, sp->journal_dir, js->id, sp->cfg.journal_segment_size,
				       &kept) != 0) {
			i++;
			continue;
		}
		stats->journal_segments_deleted++;
		free(js->refs);
		memmove(&sp->journal_segs[i], &sp->journal_segs[i + 1],
			(sp->journal_seg_count - i - 1) * sizeof(*sp->journal_segs));
		sp->journal_seg_count--;
	}
	spool_sync_dir(sp->journal_dir);
}

static int
spool_recover(struct spool *sp, spool_recover_fn *fn, void *ctx,
	      struct spool_recovery_stats *stats, uint64_t *max_id, char *err, size_t err_size)
{
	struct spool_recover_ctx rc = { sp, fn, ctx, 0 };
	struct spool_recover_sink sink = {
		.ctx = &rc,
		.rcpt_fn = spool_recovered_rcpt,
		.message_segment_fn = spool_recovered_msg_seg,
		.journal_segment_fn = spool_recovered_journal_seg,
	};
	int ret = spool_recover_shard(sp->msg_dir, sp->journal_dir, sp->quarantine_dir,
				      sp->cfg.shard, &sink, stats, max_id, err, err_size);
	if (ret == 0 && rc.error != 0) {
		snprintf(err, err_size, "spool: recovery: %s", strerror(-rc.error));
		ret = rc.error;
	}
	if (ret == 0)
		spool_recover_reclaim(sp, stats);
	return ret;
}

static int
spool_make_dirs(struct spool *sp, char *err, size_t err_size)
{
	const char *dirs[] = { sp->cfg.dir, sp->shard_dir, sp->msg_dir, sp->journal_dir,
			       sp->quarantine_dir };
	for (size_t i = 0; i < ENG_ARRAY_COUNT(dirs); i++) {
		if (mkdir(dirs[i], 0700) != 0 && errno != EEXIST) {
			snprintf(err, err_size, "spool: cannot create %s: %s", dirs[i],
				 strerror(errno));
			return -errno;
		}
	}
	return 0;
}

static struct spool_log *
spool_open_log(struct spool *sp, const char *dir, uint64_t segment_size, uint32_t record_max,
	       uint64_t first_id, uint64_t reserve, bool submit_early, char *err,
	       size_t err_size)
{
	struct spool_log_config lc = {
		.dir = dir,
		.shard = sp->cfg.shard,
		.segment_size = segment_size,
		.commit_size_max = sp->cfg.commit_size_max,
		.commit_slots = sp->cfg.commit_slots,
		.record_size_max = record_max,
		.ready_segments = sp->cfg.ready_segments,
		.use_fdatasync = sp->cfg.use_fdatasync,
		.first_segment_id = first_id,
		.allow_volatile = sp->cfg.allow_volatile,
		.free_space_reserve = reserve,
		.submit_early = submit_early,
	};
	return spool_log_create(sp->ring, &lc, err, err_size);
}

static uint32_t
spool_record_max(const struct spool_config *cfg)
{
	uint64_t size = SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE +
			SPOOL_ADDRESS_SIZE_MAX +
			(uint64_t)cfg->recipients_max * (2u + SPOOL_ADDRESS_SIZE_MAX) +
			cfg->message_size_max + SPOOL_RECORD_ALIGN;
	return (uint32_t)ENG_MIN(size, (uint64_t)SPOOL_RECORD_SIZE_MAX);
}

/* Configuration a spool cannot run with: one clear line in err. */
static bool
spool_config_is_valid(const struct spool_config *cfg, char *err, size_t err_size)
{
	ENG_ASSERT(cfg != NULL);
	ENG_ASSERT(cfg->recipients_max >= 1 && cfg->recipients_max <= SPOOL_RECIPIENTS_MAX);
	if (cfg->shard > SPOOL_SHARD_MAX) {
		snprintf(err, err_size, "spool: shard %u above %u", cfg->shard, SPOOL_SHARD_MAX);
		return false;
	}
	if (cfg->message_size_max > SPOOL_BODY_SIZE_MAX) {
		snprintf(err, err_size, "spool: message size max above %u bytes", SPOOL_BODY_SIZE_MAX);
		return false;
	}
	if (cfg->read_fds == 0 || cfg->read_fds > SPOOL_READ_FDS_MAX) {
		snprintf(err, err_size, "spool: read fds must be 1..%u", SPOOL_READ_FDS_MAX);
		return false;
	}
	return true;
}

struct spool *
spool_open(struct ring *ring, const struct spool_config *cfg, spool_recover_fn *fn, void *ctx,
	   struct spool_recovery_stats *stats, char *err, size_t err_size)
{
	ENG_ASSERT(ring != NULL && cfg != NULL);
	if (!spool_config_is_valid(cfg, err, err_size))
		return NULL;
	struct spool *sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return NULL;
	sp->ring = ring;
	sp->cfg = *cfg;
	spool_shard_path(cfg->dir, cfg->shard, NULL, sp->shard_dir, sizeof(sp->shard_dir));
	spool_shard_path(cfg->dir, cfg->shard, "msg", sp->msg_dir, sizeof(sp->msg_dir));
	spool_shard_path(cfg->dir, cfg->shard, "journal", sp->journal_dir, sizeof(sp->journal_dir));
	spool_shard_path(cfg->dir, cfg->shard, "quarantine", sp->quarantine_dir,
			 sizeof(sp->quarantine_dir));
	sp->reader = spool_reader_create(ring, sp->msg_dir, cfg->shard, cfg->read_fds);
	if (sp->reader == NULL) {
		snprintf(err, err_size, "spool: out of memory for the reader");
		spool_close(sp);
		return NULL;
	}
	struct spool_recovery_stats local;
	if (stats == NULL)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	uint64_t max_id = 0;
	if (spool_make_dirs(sp, err, err_size) < 0 ||
	    spool_recover(sp, fn, ctx, stats, &max_id, err, err_size) < 0) {
		spool_close(sp);
		return NULL;
	}
	/* The journal may dig into the reserve: outcomes are what free space. */
	sp->msg_log = spool_open_log(sp, sp->msg_dir, cfg->segment_size, spool_record_max(cfg),
				     max_id + 1, cfg->free_space_reserve, true, err, err_size);
	if (sp->msg_log == NULL) {
		spool_close(sp);
		return NULL;
	}
	sp->journal_log = spool_open_log(sp, sp->journal_dir, cfg->journal_segment_size,
					 SPOOL_OUTCOME_RECORD_SIZE, max_id + 1,
					 cfg->free_space_reserve / 4, false, err, err_size);
	if (sp->journal_log == NULL) {
		spool_close(sp);
		return NULL;
	}
	spool_log_set_ack_hook(sp->msg_log, spool_msg_acked, sp);
	spool_log_set_ack_hook(sp->journal_log, spool_journal_acked, sp);
	spool_log_set_closed_callback(sp->msg_log, spool_msg_closed, sp);
	spool_log_set_closed_callback(sp->journal_log, spool_journal_closed, sp);
	return sp;
}

void
spool_close(struct spool *sp)
{
	if (sp == NULL)
		return;
	/* Reads first: they complete while the segments are still known. */
	spool_reader_destroy(sp->reader);
	spool_log_destroy(sp->msg_log);
	spool_log_destroy(sp->journal_log);
	for (uint32_t i = 0; i < sp->journal_seg_count; i++)
		free(sp->journal_segs[i].refs);
	free(sp->journal_segs);
	free(sp->msg_segs);
	free(sp);
}
