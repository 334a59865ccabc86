/*
 * spl_check.c - what the trace promised (acks), what recovery handed back,
 * and the checks between them (reliability.md 4.2: 1 ledger, 2 bytes,
 * 3 monotonic recipient state, 5 no leaked segment, 6 recovery twice).
 * Checks return false with a sentence in why, so the caller can add the
 * seed and crash point before failing.
 */
#include "spl_sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "spool/spool_recover.h"
#include "tests/lib/test_util.h"

uint32_t spl_deferral_regressions;

void
spl_expect_load(struct spl_expect *e, const struct spl_arena *a, uint32_t messages)
{
	memset(e, 0, sizeof(*e));
	e->messages = messages;
	uint64_t at = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(a, &at)) != NULL) {
		uint64_t id = ev->value / 4u, r = ev->value % 4u;
		bool final = spool_rcpt_state_is_final((enum spool_rcpt_state)ev->flag);
		if (ev->type == SPL_EV_ACK && ev->value < SPL_MSGS_MAX) {
			e->acked[ev->value] = true;
			e->acked_count++;
		} else if (ev->type == SPL_EV_OSUB && id < SPL_MSGS_MAX && r < SPL_RCPTS_MAX) {
			if (final)
				e->final_sub[id][r] = 1;
			else
				e->defer_sub[id][r] = ev->time;
			if (!final && e->defer_first[id][r] == 0)
				e->defer_first[id][r] = ev->time;
		} else if (ev->type == SPL_EV_OACK && id < SPL_MSGS_MAX && r < SPL_RCPTS_MAX) {
			if (final)
				e->final_acked[id][r] = 1;
			else
				e->defer_acked[id][r] = ev->time;
		}
	}
}

/* The recovered message is exactly the injected one. */
static bool
spl_msg_matches(uint64_t seed, uint32_t id, const struct spool_message *m)
{
	static uint8_t body[SPL_BODY_MAX];
	char text[64];
	size_t len = spl_body(seed, id, body);
	if (m->body.size != len || memcmp(m->body.data, body, len) != 0)
		return false;
	spl_sender_text(id, text, sizeof(text));
	if (m->sender.size != strlen(text) || memcmp(m->sender.data, text, m->sender.size) != 0)
		return false;
	if (m->rcpt_count != spl_rcpt_count(seed, id))
		return false;
	for (uint32_t r = 0; r < m->rcpt_count; r++) {
		spl_rcpt_text(id, r, text, sizeof(text));
		if (m->rcpts[r].size != strlen(text) ||
		    memcmp(m->rcpts[r].data, text, m->rcpts[r].size) != 0)
			return false;
	}
	return true;
}

static void
spl_got_rcpt(void *ctx, const struct spool_recovered *rcpt)
{
	struct spl_got *got = ctx;
	uint64_t created = rcpt->msg->created_ns;
	uint64_t id = created - SPL_CREATED_BASE;
	if (spool_rcpt_state_is_final(rcpt->state))
		return; /* the read-only scan reports these too; spool_open never does */
	got->count++;
	if (created < SPL_CREATED_BASE || id >= got->messages || rcpt->rcpt_index >= SPL_RCPTS_MAX) {
		got->unknown++;
		return;
	}
	if (!spl_msg_matches(got->seed, (uint32_t)id, rcpt->msg))
		got->bad++;
	got->seen[id][rcpt->rcpt_index]++;
	got->state[id][rcpt->rcpt_index] = (uint16_t)rcpt->state;
	got->next[id][rcpt->rcpt_index] = rcpt->next_attempt_ns;
	got->segment[id] = rcpt->location.segment_id;
}

static void
spl_got_reset(struct spl_got *got)
{
	uint64_t seed = got->seed;
	uint32_t messages = got->messages;
	memset(got, 0, sizeof(*got));
	got->seed = seed;
	got->messages = messages;
}

bool
spl_recover(const char *spool_dir, bool use_fdatasync, struct spl_got *got,
	    struct spool_recovery_stats *st, char *why, size_t why_size)
{
	spl_got_reset(got);
	struct ring *ring = test_ring_create();
	if (ring == NULL) {
		snprintf(why, why_size, "no ring");
		return false;
	}
	struct spool_config cfg = spl_config(spool_dir, use_fdatasync);
	char err[512];
	struct spool *sp = spool_open(ring, &cfg, spl_got_rcpt, got, st, err, sizeof(err));
	if (sp == NULL) {
		snprintf(why, why_size, "spool_open failed: %s", err);
		ring_destroy(ring);
		return false;
	}
	bool live_ok = spool_live_recipients(sp) == got->count;
	spool_close(sp);
	ring_destroy(ring);
	if (!live_ok)
		snprintf(why, why_size, "live recipients counted differ from those handed back (%u)",
			 got->count);
	return live_ok;
}

bool
spl_recover_readonly(const char *spool_dir, struct spl_got *got,
		     struct spool_recovery_stats *st, char *why, size_t why_size)
{
	char msg[PATH_MAX], journal[PATH_MAX], err[512];
	spl_got_reset(got);
	spool_shard_path(spool_dir, 0, "msg", msg, sizeof(msg));
	spool_shard_path(spool_dir, 0, "journal", journal, sizeof(journal));
	struct spool_recover_sink sink = { .ctx = got, .rcpt_fn = spl_got_rcpt };
	uint64_t max_id = 0;
	memset(st, 0, sizeof(*st));
	if (spool_recover_shard(msg, journal, NULL, 0, &sink, st, &max_id, err, sizeof(err)) != 0) {
		snprintf(why, why_size, "read-only recovery failed: %s", err);
		return false;
	}
	return true;
}

/* One recipient of an acknowledged message (4.2 items 1 and 3). */
static bool
spl_check_rcpt(const struct spl_expect *e, const struct spl_got *got, uint32_t id, uint32_t r,
	       char *why, size_t why_size)
{
	uint8_t seen = got->seen[id][r];
	if (seen > 1) {
		snprintf(why, why_size, "message %u rcpt %u handed back %u times", id, r, seen);
		return false;
	}
	if (e->final_acked[id][r] && seen) {
		snprintf(why, why_size, "message %u rcpt %u: final outcome acknowledged, yet handed "
			 "back (would be re-delivered)", id, r);
		return false;
	}
	if (e->final_acked[id][r] || (!seen && e->final_sub[id][r]))
		return true;
	if (!seen) {
		snprintf(why, why_size, "acknowledged message %u rcpt %u lost", id, r);
		return false;
	}
	uint16_t state = got->state[id][r];
	uint64_t next = got->next[id][r];
	bool ok = state == SPOOL_RCPT_PENDING ? e->defer_acked[id][r] == 0
		: state == SPOOL_RCPT_DEFERRED ? (next == e->defer_acked[id][r] ||
						  next == e->defer_sub[id][r]) && next != 0
		: false;
	if (!ok && state == SPOOL_RCPT_DEFERRED && next == e->defer_first[id][r])
		spl_deferral_regressions++; /* an older DEFERRED record won: fails below */
	if (!ok)
		snprintf(why, why_size, "message %u rcpt %u: state %u next %llu, acked deferral %llu",
			 id, r, state, (unsigned long long)next,
			 (unsigned long long)e->defer_acked[id][r]);
	return ok;
}

bool
spl_check(const struct spl_expect *e, const struct spl_got *got, char *why, size_t why_size)
{
	if (got->bad != 0 || got->unknown != 0) {
		snprintf(why, why_size, "%u recovered messages differ from what was injected, %u unknown",
			 got->bad, got->unknown);
		return false;
	}
	for (uint32_t id = 0; id < e->messages; id++) {
		uint32_t rcpts = spl_rcpt_count(got->seed, id);
		for (uint32_t r = 0; r < rcpts; r++) {
			if (!e->acked[id]) {
				if (got->seen[id][r] > 1) {
					snprintf(why, why_size, "message %u rcpt %u handed back twice", id, r);
					return false;
				}
				continue;
			}
			if (!spl_check_rcpt(e, got, id, r, why, why_size))
				return false;
		}
	}
	return true;
}

bool
spl_got_equal(const struct spl_got *a, const struct spl_got *b, char *why, size_t why_size)
{
	if (a->bad + a->unknown + b->bad + b->unknown != 0) {
		snprintf(why, why_size, "recovered messages differ from what was injected");
		return false;
	}
	for (uint32_t id = 0; id < a->messages; id++) {
		for (uint32_t r = 0; r < SPL_RCPTS_MAX; r++) {
			if (a->seen[id][r] == b->seen[id][r] &&
			    (a->seen[id][r] == 0 || (a->state[id][r] == b->state[id][r] &&
						     a->next[id][r] == b->next[id][r])))
				continue;
			snprintf(why, why_size, "message %u rcpt %u: seen %u/%u state %u/%u", id, r,
				 a->seen[id][r], b->seen[id][r], a->state[id][r], b->state[id][r]);
			return false;
		}
	}
	return true;
}

bool
spl_check_no_leak(const char *spool_dir, const struct spl_got *got, char *why, size_t why_size)
{
	char dir[PATH_MAX];
	uint64_t *ids = NULL;
	uint32_t count = 0;
	spool_shard_path(spool_dir, 0, "msg", dir, sizeof(dir));
	if (spool_log_list_segments(dir, &ids, &count) != 0) {
		snprintf(why, why_size, "cannot list %s", dir);
		return false;
	}
	bool ok = true;
	for (uint32_t i = 0; i < count && ok; i++) {
		bool live = false;
		for (uint32_t id = 0; id < got->messages && !live; id++) {
			for (uint32_t r = 0; r < SPL_RCPTS_MAX && !live; r++)
				live = got->seen[id][r] != 0 && got->segment[id] == ids[i];
		}
		if (!live) {
			snprintf(why, why_size, "segment %016llx left with no live recipient",
				 (unsigned long long)ids[i]);
			ok = false;
		}
	}
	free(ids);
	return ok;
}
