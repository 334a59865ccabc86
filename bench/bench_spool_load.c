/*
 * bench_spool_load.c - closed-loop append load on a spool
 * (bench_spool_load.h).
 *
 * Invariants (asserted):
 * - done <= issued <= count_max, and each client has at most one append
 *   outstanding: its op is reused only from its own callback.
 * - A latency sample is taken for every successful acknowledgement, so
 *   the sample count equals the record count.
 * - The loop is bounded: it fails the run after BENCH_STALL_NS without an
 *   acknowledgement instead of spinning.
 *
 * Everything is allocated before the clock starts; the hot path (issue,
 * callback) does not allocate.
 *
 * The paced (open-loop) run keeps the same counters (struct bench_load)
 * and adds (asserted):
 * - a slot is busy from its message's issue until its outcome's
 *   acknowledgement (or a failure that ends its use), and is on the free
 *   stack exactly when it is not busy;
 * - arrivals are issued in schedule order, never before their scheduled
 *   time, and each message's latency is taken from that schedule.
 */
#include "bench_spool_load.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_trace.h"
#include "bench_util.h"
#include "engine/eng_common.h"
#include "ring/ring.h"
#include "spool/spool.h"

#define BENCH_TURN_TIMEOUT_NS (100ull * 1000ull * 1000ull)
#define BENCH_STALL_NS (30ull * 1000ull * 1000ull * 1000ull)
#define BENCH_SAMPLE_IOU_NS (50ull * 1000ull * 1000ull)
#define BENCH_TIMELINE_EVENTS (1u << 20)
#define BENCH_EXPIRY_NS (5ull * 24ull * 3600ull * 1000000000ull)
#define BENCH_PACED_SLOTS_MAX (1u << 20)
#define BENCH_PACED_GAP_NS_MAX (3600ull * 1000000000ull)
#define BENCH_PACED_SEED_DEFAULT 0x70616365646c6f61ull /* "pacedloa" */

struct bench_client {
	struct spool_append op;
	struct spool_message msg;
	struct spool_span rcpt;
	uint64_t issued_ns;
	struct bench_load *load;
	/* Delivering mode: the outcome in flight, and one owed. */
	struct spool_append out_op;
	struct spool_outcome outcome;
	bool out_busy;
	bool out_owed;
	struct spool_location owed;
};

struct bench_load {
	struct spool *sp;
	const struct bench_bodies *bodies;
	struct bench_client *clients;
	uint64_t count_max;
	uint64_t deadline_ns;
	uint64_t issued;
	uint64_t done;
	uint64_t acked;
	uint64_t out_issued;
	uint64_t out_done;
	uint64_t last_ack_ns;
	bool deliver;
	uint64_t stop_recycled;
	struct bench_samples *samples;
	int32_t error;
};

static uint32_t
bench_record_size(uint32_t body_size, const uint8_t *body)
{
	struct spool_span rcpt = { (const uint8_t *)BENCH_RCPT, sizeof(BENCH_RCPT) - 1 };
	struct spool_message msg = {
		.sender = { (const uint8_t *)BENCH_SENDER, sizeof(BENCH_SENDER) - 1 },
		.rcpt_count = 1,
		.rcpts = &rcpt,
		.body = { body, body_size },
	};
	return spool_message_record_size(&msg);
}

int
bench_bodies_make(struct bench_bodies *bodies, uint64_t seed, uint32_t record_size,
		  uint32_t count)
{
	ENG_ASSERT(bodies != NULL);
	ENG_ASSERT(count > 0);
	memset(bodies, 0, sizeof(*bodies));
	uint32_t overhead = SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE +
			    (uint32_t)sizeof(BENCH_SENDER) - 1 + 2u +
			    (uint32_t)sizeof(BENCH_RCPT) - 1;
	if (record_size < overhead + BENCH_BODY_SIZE_MIN || record_size > SPOOL_BODY_SIZE_MAX)
		return -EINVAL;
	uint32_t body_size = record_size - overhead;
	bodies->data = malloc((size_t)body_size * count);
	if (bodies->data == NULL)
		return -ENOMEM;
	bodies->body_size = body_size;
	bodies->count = count;
	bodies->hash = BENCH_FNV_OFFSET;
	for (uint32_t i = 0; i < count; i++) {
		uint8_t *body = bodies->data + (size_t)i * body_size;
		uint32_t n = bench_body_make(seed, i, body_size, body, body_size);
		ENG_ASSERT(n == body_size);
		bodies->hash = bench_fnv1a(bodies->hash, body, body_size);
	}
	bodies->record_size = bench_record_size(body_size, bodies->data);
	ENG_ASSERT(bodies->record_size >= record_size);
	ENG_ASSERT(bodies->record_size < record_size + SPOOL_RECORD_ALIGN);
	return 0;
}

void
bench_bodies_free(struct bench_bodies *bodies)
{
	ENG_ASSERT(bodies != NULL);
	free(bodies->data);
	memset(bodies, 0, sizeof(*bodies));
}

/* The workload's envelope: one sender, one recipient (rcpt, stored by
 * the caller next to msg). */
static void
bench_message_init(struct spool_message *msg, struct spool_span *rcpt)
{
	ENG_ASSERT(msg != NULL && rcpt != NULL);
	rcpt->data = (const uint8_t *)BENCH_RCPT;
	rcpt->size = sizeof(BENCH_RCPT) - 1;
	msg->sender.data = (const uint8_t *)BENCH_SENDER;
	msg->sender.size = sizeof(BENCH_SENDER) - 1;
	msg->rcpt_count = 1;
	msg->rcpts = rcpt;
}

/* Point msg at the workload's message number n (bodies round-robin). */
static void
bench_message_set(struct spool_message *msg, const struct bench_bodies *bodies, uint64_t n)
{
	ENG_ASSERT(msg != NULL && bodies != NULL);
	ENG_ASSERT(bodies->count > 0);
	msg->created_ns = n + 1;
	msg->expires_ns = n + 1 + BENCH_EXPIRY_NS;
	msg->body.data = bodies->data + (size_t)(n % bodies->count) * bodies->body_size;
	msg->body.size = bodies->body_size;
}

static void bench_client_acked(struct spool_append *op, int32_t result);
static void bench_client_delivered(struct spool_append *op, int32_t result);

static void
bench_client_init(struct bench_load *load, struct bench_client *client)
{
	ENG_ASSERT(load != NULL);
	ENG_ASSERT(client != NULL);
	memset(client, 0, sizeof(*client));
	client->load = load;
	bench_message_init(&client->msg, &client->rcpt);
	client->op.callback = bench_client_acked;
	client->op.ctx = client;
	client->op.input.message = &client->msg;
	client->out_op.callback = bench_client_delivered;
	client->out_op.ctx = client;
	client->out_op.input.outcome = &client->outcome;
}

/* Append the client's next message. */
static void
bench_client_issue(struct bench_load *load, struct bench_client *client, uint64_t now_ns)
{
	ENG_ASSERT(load->issued < load->count_max);
	ENG_ASSERT(load->error == 0);
	bench_message_set(&client->msg, load->bodies, load->issued);
	client->issued_ns = now_ns;
	int ret = spool_write_message(load->sp, &client->op);
	if (ret < 0) {
		load->error = ret; /* the callback will not run */
		return;
	}
	load->issued++;
}

/* Issue the client's next message unless the run is stopping. */
static void
bench_client_next(struct bench_load *load, struct bench_client *client, uint64_t now_ns)
{
	if (load->error != 0 || load->issued >= load->count_max || now_ns >= load->deadline_ns)
		return;
	if (load->stop_recycled > 0 &&
	    spool_message_stats(load->sp)->segments_recycled >= load->stop_recycled)
		return;
	bench_client_issue(load, client, now_ns);
}

/* Append a DELIVERED outcome for the message at loc. */
static void
bench_client_deliver(struct bench_load *load, struct bench_client *client,
		     const struct spool_location *loc, uint64_t now_ns)
{
	ENG_ASSERT(!client->out_busy);
	client->outcome.message = *loc;
	client->outcome.rcpt_index = 0;
	client->outcome.state = SPOOL_RCPT_DELIVERED;
	client->outcome.time_ns = now_ns;
	int ret = spool_write_outcome(load->sp, &client->out_op);
	if (ret < 0) {
		if (load->error == 0)
			load->error = ret;
		return;
	}
	client->out_busy = true;
	load->out_issued++;
}

static void
bench_client_delivered(struct spool_append *op, int32_t result)
{
	struct bench_client *client = op->ctx;
	struct bench_load *load = client->load;
	ENG_ASSERT(client->out_busy);
	ENG_ASSERT(load->out_done < load->out_issued);
	client->out_busy = false;
	load->out_done++;
	if (result < 0) {
		if (load->error == 0)
			load->error = result;
		return;
	}
	if (client->out_owed) {
		uint64_t now_ns = bench_now_ns();
		client->out_owed = false;
		bench_client_deliver(load, client, &client->owed, now_ns);
		bench_client_next(load, client, now_ns);
	}
}

static void
bench_client_acked(struct spool_append *op, int32_t result)
{
	struct bench_client *client = op->ctx;
	struct bench_load *load = client->load;
	uint64_t now_ns = bench_now_ns();
	ENG_ASSERT(load->done < load->issued);
	load->done++;
	if (result < 0) {
		if (load->error == 0)
			load->error = result;
		return;
	}
	ENG_ASSERT(op->record_size == load->bodies->record_size);
	load->acked++;
	bench_samples_add(load->samples, now_ns - client->issued_ns);
	load->last_ack_ns = now_ns;
	if (load->deliver) {
		if (client->out_busy) {
			/* Wait for the previous outcome; deliver this one then. */
			ENG_ASSERT(!client->out_owed);
			client->out_owed = true;
			client->owed = op->location;
			return;
		}
		bench_client_deliver(load, client, &op->location, now_ns);
	}
	bench_client_next(load, client, now_ns);
}

/* Run the ring until every issued append is acknowledged. */
static int
bench_load_drive(struct bench_load *load, struct ring *ring, const char *dir,
		 uint32_t *iou_wrk_max)
{
	uint64_t next_sample_ns = 0;
	uint64_t progress_ns = bench_now_ns();
	uint64_t progress_done = load->done + load->out_done;
	for (uint64_t turns = 0; load->done < load->issued || load->out_done < load->out_issued;
	     turns++) {
		int ret = ring_run_once(ring, BENCH_TURN_TIMEOUT_NS);
		if (ret < 0)
			return ret;
		uint64_t now_ns = bench_now_ns();
		if (now_ns >= next_sample_ns) {
			*iou_wrk_max = ENG_MAX(*iou_wrk_max, bench_iou_wrk_threads());
			next_sample_ns = now_ns + BENCH_SAMPLE_IOU_NS;
			if (dir != NULL && bench_free_bytes(dir) < BENCH_FREE_BYTES_MIN)
				return -ENOSPC;
		}
		if (load->done + load->out_done != progress_done) {
			progress_done = load->done + load->out_done;
			progress_ns = now_ns;
		} else if (now_ns - progress_ns > BENCH_STALL_NS) {
			return -ETIMEDOUT;
		}
		ENG_ASSERT(turns < UINT64_MAX / 2);
	}
	return 0;
}

static void
bench_load_result_rates(struct bench_load_result *r)
{
	ENG_ASSERT(r->seconds > 0);
	ENG_ASSERT(r->records > 0);
	r->records_per_s = (double)r->records / r->seconds;
	r->payload_mb_per_s = (double)r->appended_bytes / 1e6 / r->seconds;
	r->disk_mb_per_s = (double)r->commit_bytes / 1e6 / r->seconds;
	r->total_disk_mb_per_s =
		(double)(r->commit_bytes + r->journal_commit_bytes) / 1e6 / r->seconds;
	r->avg_commit_bytes = r->commits ? (double)r->commit_bytes / (double)r->commits : 0;
	r->records_per_commit = r->commits ? (double)r->records / (double)r->commits : 0;
}

static void
bench_load_result_fill(struct bench_load *load, const struct spool_log_stats *before,
		       const struct spool_log_stats *after, uint64_t elapsed_ns,
		       struct bench_load_result *r)
{
	ENG_ASSERT(elapsed_ns > 0);
	ENG_ASSERT(load->acked > 0);
	r->records = load->acked;
	r->seconds = (double)elapsed_ns / 1e9;
	r->commits = after->commits - before->commits;
	r->commit_bytes = after->commit_bytes - before->commit_bytes;
	r->appended_bytes = after->appended_bytes - before->appended_bytes;
	r->segments_created = after->segments_created - before->segments_created;
	r->segments_recycled = after->segments_recycled - before->segments_recycled;
	r->outcomes = load->out_done;
	bench_load_result_rates(r);
}

void
bench_load_result_add(struct bench_load_result *total, const struct bench_load_result *part)
{
	ENG_ASSERT(total != NULL && part != NULL);
	ENG_ASSERT(part->records > 0);
	double cpu_us = total->cpu_us_per_record * (double)total->records +
			part->cpu_us_per_record * (double)part->records;
	double enters = total->enters_per_commit * (double)total->commits +
			part->enters_per_commit * (double)part->commits;
	total->records += part->records;
	total->seconds += part->seconds;
	total->commits += part->commits;
	total->commit_bytes += part->commit_bytes;
	total->appended_bytes += part->appended_bytes;
	total->segments_created += part->segments_created;
	total->segments_recycled += part->segments_recycled;
	total->outcomes += part->outcomes;
	total->journal_commits += part->journal_commits;
	total->journal_commit_bytes += part->journal_commit_bytes;
	total->journal_segments_created += part->journal_segments_created;
	total->iou_wrk_max = ENG_MAX(total->iou_wrk_max, part->iou_wrk_max);
	total->prep_zero_bytes += part->prep_zero_bytes;
	total->prep_syncs += part->prep_syncs;
	total->commit_gap_max_us = ENG_MAX(total->commit_gap_max_us, part->commit_gap_max_us);
	total->other_disk_mb += part->other_disk_mb;
	total->cpu_us_per_record = cpu_us / (double)total->records;
	total->enters_per_commit = total->commits ? enters / (double)total->commits : 0;
	bench_load_result_rates(total);
}

static int
bench_load_prepare(struct bench_load *load, struct spool *sp, const struct bench_bodies *bodies,
		   const struct bench_load_params *params, struct bench_samples *samples)
{
	ENG_ASSERT(params->concurrency > 0);
	ENG_ASSERT(params->count_max > 0);
	memset(load, 0, sizeof(*load));
	load->sp = sp;
	load->bodies = bodies;
	load->count_max = params->count_max;
	load->samples = samples;
	load->deliver = params->deliver;
	load->stop_recycled = params->stop_recycled;
	load->clients = calloc(params->concurrency, sizeof(*load->clients));
	if (load->clients == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < params->concurrency; i++)
		bench_client_init(load, &load->clients[i]);
	return 0;
}

/* Counters read before a run, to report the run's own share. */
struct bench_load_snapshot {
	struct spool_log_stats messages;
	struct spool_log_stats journal;
	uint64_t enters;
	uint64_t disk_bytes;
	uint64_t cpu_ns;
	uint64_t start_ns;
};

static void
bench_load_snapshot_take(struct spool *sp, struct ring *ring, const char *dir,
			 struct bench_load_snapshot *snap)
{
	ENG_ASSERT(sp != NULL && ring != NULL);
	ENG_ASSERT(snap != NULL);
	snap->messages = *spool_message_stats(sp);
	snap->journal = *spool_journal_stats(sp);
	snap->enters = ring_stats_get(ring)->enter_calls;
	snap->disk_bytes = dir != NULL ? bench_disk_written_bytes(dir) : 0;
	snap->cpu_ns = bench_cpu_ns();
	snap->start_ns = bench_now_ns();
}

/* Fill result from the counters' growth since snap. */
static void
bench_load_finish(struct bench_load *load, struct ring *ring, const char *dir,
		  const struct bench_load_snapshot *snap, struct bench_load_result *r)
{
	ENG_ASSERT(load->acked > 0);
	ENG_ASSERT(load->last_ack_ns > snap->start_ns);
	const struct spool_log_stats *journal = spool_journal_stats(load->sp);
	r->journal_commits = journal->commits - snap->journal.commits;
	r->journal_commit_bytes = journal->commit_bytes - snap->journal.commit_bytes;
	bench_load_result_fill(load, &snap->messages, spool_message_stats(load->sp),
			       load->last_ack_ns - snap->start_ns, r);
	if (dir != NULL) {
		uint64_t disk_bytes = bench_disk_written_bytes(dir) - snap->disk_bytes;
		r->other_disk_mb = ((double)disk_bytes - (double)r->commit_bytes -
				    (double)r->journal_commit_bytes - (double)r->prep_zero_bytes) /
				   1e6;
	}
	r->journal_segments_created = journal->segments_created - snap->journal.segments_created;
	r->cpu_us_per_record = (double)(bench_cpu_ns() - snap->cpu_ns) / 1e3 / (double)r->records;
	uint64_t enters = ring_stats_get(ring)->enter_calls - snap->enters;
	r->enters_per_commit = r->commits ? (double)enters / (double)r->commits : 0;
}

int
bench_load_run(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
	       const struct bench_load_params *params, struct bench_samples *samples,
	       struct bench_load_result *result, char *err, size_t err_size)
{
	struct bench_load load;
	struct bench_trace trace;
	struct bench_load_snapshot snap;
	memset(result, 0, sizeof(*result));
	if (bench_load_prepare(&load, sp, bodies, params, samples) < 0 ||
	    bench_trace_start(&trace, ring, params->trace_path ? BENCH_TIMELINE_EVENTS : 0) < 0) {
		snprintf(err, err_size, "out of memory for %u clients", params->concurrency);
		free(load.clients);
		return -ENOMEM;
	}
	bench_load_snapshot_take(sp, ring, params->dir, &snap);
	load.deadline_ns = params->duration_s > 0
				   ? snap.start_ns + (uint64_t)(params->duration_s * 1e9)
				   : UINT64_MAX;
	for (uint32_t i = 0; i < params->concurrency && load.issued < load.count_max; i++) {
		if (load.error == 0)
			bench_client_issue(&load, &load.clients[i], bench_now_ns());
	}
	int ret = bench_load_drive(&load, ring, params->dir, &result->iou_wrk_max);
	result->prep_zero_bytes = trace.prep_write_bytes;
	result->prep_syncs = trace.prep_syncs;
	result->commit_gap_max_us = (double)trace.commit_gap_max_ns / 1e3;
	bench_trace_stop(&trace, params->trace_path);
	if (ret == 0 && load.error != 0)
		ret = load.error;
	if (ret == 0 && load.acked == 0)
		ret = -EIO;
	if (ret == 0)
		bench_load_finish(&load, ring, params->dir, &snap, result);
	else
		snprintf(err, err_size, "spool load: %s after %llu acknowledgements",
			 strerror(-ret), (unsigned long long)load.acked);
	free(load.clients);
	return ret;
}

/* ---- open loop: Poisson arrivals ---- */

struct bench_paced;

/* One message in flight, then its outcome; reused once both are done. */
struct bench_paced_slot {
	struct spool_append op;
	struct spool_message msg;
	struct spool_span rcpt;
	struct spool_append out_op;
	struct spool_outcome outcome;
	uint64_t scheduled_ns; /* the message's arrival: its latency starts here */
	struct bench_paced *paced;
	uint32_t index;
	bool busy;
};

struct bench_paced {
	struct bench_load load; /* counters and error, as in the closed loop */
	struct bench_paced_slot *slots;
	uint32_t *free;		/* stack of the indices of free slots */
	uint32_t free_count;
	uint32_t slot_count;
	uint32_t busy_max;
	uint64_t rng;
	double mean_gap_ns;
	uint64_t next_ns; /* scheduled time of the next arrival */
	uint64_t full_ns; /* last time a due arrival found every slot busy */
	uint64_t backlogged;
	uint64_t lag_max_ns;
	struct bench_samples *lag_samples;
	bool stopped; /* no arrival will be issued any more */
};

/* Exponential inter-arrival time: inversion of a uniform in [0, 1) made of
 * the top 53 bits of the generator. */
static uint64_t
bench_paced_gap_ns(struct bench_paced *paced)
{
	ENG_ASSERT(paced->mean_gap_ns > 0);
	double u = (double)(bench_rand(&paced->rng) >> 11) * 0x1p-53;
	ENG_ASSERT(u >= 0 && u < 1);
	double gap = -log1p(-u) * paced->mean_gap_ns;
	return gap >= (double)BENCH_PACED_GAP_NS_MAX ? BENCH_PACED_GAP_NS_MAX : (uint64_t)gap;
}

static void
bench_paced_release(struct bench_paced *paced, struct bench_paced_slot *slot)
{
	ENG_ASSERT(slot->busy);
	ENG_ASSERT(paced->free_count < paced->slot_count);
	slot->busy = false;
	paced->free[paced->free_count++] = slot->index;
}

static void
bench_paced_fail(struct bench_load *load, int32_t result)
{
	ENG_ASSERT(result < 0);
	if (load->error == 0)
		load->error = result;
}

static void
bench_paced_delivered(struct spool_append *op, int32_t result)
{
	struct bench_paced_slot *slot = op->ctx;
	struct bench_paced *paced = slot->paced;
	struct bench_load *load = &paced->load;
	ENG_ASSERT(load->out_done < load->out_issued);
	load->out_done++;
	if (result < 0)
		bench_paced_fail(load, result);
	bench_paced_release(paced, slot);
}

/* The message is durable: take its latency from its schedule, then append
 * its DELIVERED outcome from the same slot. */
static void
bench_paced_acked(struct spool_append *op, int32_t result)
{
	struct bench_paced_slot *slot = op->ctx;
	struct bench_paced *paced = slot->paced;
	struct bench_load *load = &paced->load;
	uint64_t now_ns = bench_now_ns();
	ENG_ASSERT(slot->busy);
	ENG_ASSERT(load->done < load->issued);
	load->done++;
	if (result < 0) {
		bench_paced_fail(load, result);
		bench_paced_release(paced, slot);
		return;
	}
	ENG_ASSERT(op->record_size == load->bodies->record_size);
	ENG_ASSERT(now_ns >= slot->scheduled_ns);
	load->acked++;
	bench_samples_add(load->samples, now_ns - slot->scheduled_ns);
	load->last_ack_ns = now_ns;
	slot->outcome.message = op->location;
	slot->outcome.rcpt_index = 0;
	slot->outcome.state = SPOOL_RCPT_DELIVERED;
	slot->outcome.time_ns = now_ns;
	int ret = spool_write_outcome(load->sp, &slot->out_op);
	if (ret < 0) {
		bench_paced_fail(load, ret);
		bench_paced_release(paced, slot);
		return;
	}
	load->out_issued++;
}

/* Issue every arrival due by now_ns, in schedule order, while a slot is
 * free; stop for good at the deadline, the count or an error. */
static void
bench_paced_issue_due(struct bench_paced *paced, uint64_t now_ns)
{
	struct bench_load *load = &paced->load;
	while (!paced->stopped) {
		if (load->error != 0 || load->issued >= load->count_max ||
		    paced->next_ns >= load->deadline_ns) {
			paced->stopped = true;
			return;
		}
		if (paced->next_ns > now_ns)
			return;
		if (paced->free_count == 0) {
			paced->full_ns = now_ns; /* it waits, in order, timed from its schedule */
			return;
		}
		struct bench_paced_slot *slot = &paced->slots[paced->free[--paced->free_count]];
		ENG_ASSERT(!slot->busy);
		slot->busy = true;
		bench_message_set(&slot->msg, load->bodies, load->issued);
		slot->scheduled_ns = paced->next_ns;
		int ret = spool_write_message(load->sp, &slot->op);
		if (ret < 0) {
			load->error = ret; /* the callback will not run */
			bench_paced_release(paced, slot);
			continue;
		}
		load->issued++;
		ENG_ASSERT(now_ns >= paced->next_ns); /* never before its schedule */
		if (paced->next_ns <= paced->full_ns)
			paced->backlogged++;
		paced->lag_max_ns = ENG_MAX(paced->lag_max_ns, now_ns - paced->next_ns);
		if (paced->lag_samples != NULL)
			bench_samples_add(paced->lag_samples, now_ns - paced->next_ns);
		paced->busy_max = ENG_MAX(paced->busy_max, paced->slot_count - paced->free_count);
		paced->next_ns += bench_paced_gap_ns(paced);
	}
}

/* Issue arrivals as they come due and run the ring until the next one,
 * until issuing stopped and everything issued is acknowledged. Unlike the
 * closed loop it does not count io-wq threads: that scan of /proc takes
 * ~0.3 ms, which would make arrivals late. */
static int
bench_paced_drive(struct bench_paced *paced, struct ring *ring, const char *dir)
{
	struct bench_load *load = &paced->load;
	uint64_t next_sample_ns = 0;
	uint64_t progress_ns = bench_now_ns();
	uint64_t progress_done = 0;
	for (uint64_t turns = 0;; turns++) {
		uint64_t now_ns = bench_now_ns();
		bench_paced_issue_due(paced, now_ns);
		bool in_flight = load->done < load->issued || load->out_done < load->out_issued;
		if (paced->stopped && !in_flight)
			return 0;
		/* Sleep until the next arrival, or a completion; when every slot is
		 * busy (or issuing stopped), a completion is what we wait for. */
		uint64_t timeout_ns = BENCH_TURN_TIMEOUT_NS;
		if (!paced->stopped && paced->free_count > 0) {
			ENG_ASSERT(paced->next_ns > now_ns);
			timeout_ns = ENG_MIN(paced->next_ns - now_ns, BENCH_TURN_TIMEOUT_NS);
		}
		int ret = ring_run_once(ring, timeout_ns);
		if (ret < 0)
			return ret;
		now_ns = bench_now_ns();
		if (dir != NULL && now_ns >= next_sample_ns) {
			next_sample_ns = now_ns + BENCH_SAMPLE_IOU_NS;
			if (bench_free_bytes(dir) < BENCH_FREE_BYTES_MIN)
				return -ENOSPC;
		}
		/* A stall is time with appends in flight and none acknowledged. */
		if (!in_flight || load->done + load->out_done != progress_done) {
			progress_done = load->done + load->out_done;
			progress_ns = now_ns;
		} else if (now_ns - progress_ns > BENCH_STALL_NS) {
			return -ETIMEDOUT;
		}
		ENG_ASSERT(turns < UINT64_MAX / 2);
	}
}

static void
bench_paced_slot_init(struct bench_paced *paced, struct bench_paced_slot *slot, uint32_t index)
{
	ENG_ASSERT(paced != NULL && slot != NULL);
	ENG_ASSERT(index < paced->slot_count);
	memset(slot, 0, sizeof(*slot));
	slot->paced = paced;
	slot->index = index;
	bench_message_init(&slot->msg, &slot->rcpt);
	slot->op.callback = bench_paced_acked;
	slot->op.ctx = slot;
	slot->op.input.message = &slot->msg;
	slot->out_op.callback = bench_paced_delivered;
	slot->out_op.ctx = slot;
	slot->out_op.input.outcome = &slot->outcome;
}

static int
bench_paced_prepare(struct bench_paced *paced, struct spool *sp, const struct bench_bodies *bodies,
		    const struct bench_paced_params *params, struct bench_samples *samples)
{
	ENG_ASSERT(params->rate_per_s > 0 && isfinite(params->rate_per_s));
	ENG_ASSERT(params->slots > 0 && params->slots <= BENCH_PACED_SLOTS_MAX);
	ENG_ASSERT(params->count_max > 0);
	memset(paced, 0, sizeof(*paced));
	paced->load.sp = sp;
	paced->load.bodies = bodies;
	paced->load.count_max = params->count_max;
	paced->load.samples = samples;
	paced->load.deliver = true;
	paced->lag_samples = params->lag_samples;
	paced->rng = params->seed != 0 ? params->seed : BENCH_PACED_SEED_DEFAULT;
	paced->mean_gap_ns = 1e9 / params->rate_per_s;
	paced->slots = calloc(params->slots, sizeof(*paced->slots));
	paced->free = calloc(params->slots, sizeof(*paced->free));
	if (paced->slots == NULL || paced->free == NULL)
		return -ENOMEM;
	paced->slot_count = params->slots;
	/* Lowest index on top of the stack: a light load reuses a few slots. */
	for (uint32_t i = 0; i < params->slots; i++) {
		bench_paced_slot_init(paced, &paced->slots[i], i);
		paced->free[i] = params->slots - 1 - i;
	}
	paced->free_count = params->slots;
	return 0;
}

static void
bench_paced_free(struct bench_paced *paced)
{
	free(paced->slots);
	free(paced->free);
	paced->slots = NULL;
	paced->free = NULL;
}

void
bench_paced_result_add(struct bench_paced_result *total, const struct bench_paced_result *part)
{
	ENG_ASSERT(total != NULL && part != NULL);
	ENG_ASSERT(part->issued == part->load.records);
	bench_load_result_add(&total->load, &part->load);
	total->issued += part->issued;
	total->backlogged += part->backlogged;
	total->slots_busy_max = ENG_MAX(total->slots_busy_max, part->slots_busy_max);
	total->issue_lag_max_us = ENG_MAX(total->issue_lag_max_us, part->issue_lag_max_us);
}

int
bench_paced_run(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
		const struct bench_paced_params *params, struct bench_samples *samples,
		struct bench_paced_result *result, char *err, size_t err_size)
{
	struct bench_paced paced;
	struct bench_trace trace;
	struct bench_load_snapshot snap;
	memset(result, 0, sizeof(*result));
	if (bench_paced_prepare(&paced, sp, bodies, params, samples) < 0 ||
	    bench_trace_start(&trace, ring, 0) < 0) {
		snprintf(err, err_size, "out of memory for %u paced slots", params->slots);
		bench_paced_free(&paced);
		return -ENOMEM;
	}
	struct bench_load *load = &paced.load;
	bench_load_snapshot_take(sp, ring, params->dir, &snap);
	load->deadline_ns = params->duration_s > 0
				    ? snap.start_ns + (uint64_t)(params->duration_s * 1e9)
				    : UINT64_MAX;
	paced.next_ns = snap.start_ns + bench_paced_gap_ns(&paced);
	int ret = bench_paced_drive(&paced, ring, params->dir);
	result->load.prep_zero_bytes = trace.prep_write_bytes;
	result->load.prep_syncs = trace.prep_syncs;
	result->load.commit_gap_max_us = (double)trace.commit_gap_max_ns / 1e3;
	bench_trace_stop(&trace, NULL);
	if (ret == 0 && load->error != 0)
		ret = load->error;
	if (ret == 0 && load->acked == 0)
		ret = -ENODATA; /* no arrival scheduled within the window */
	if (ret == 0) {
		/* Nothing lost: every arrival issued was acknowledged, and so was
		 * its outcome; every slot is free again. */
		ENG_ASSERT(load->acked == load->issued && load->done == load->issued);
		ENG_ASSERT(load->out_done == load->acked && load->out_issued == load->acked);
		ENG_ASSERT(paced.free_count == paced.slot_count);
		bench_load_finish(load, ring, params->dir, &snap, &result->load);
		result->issued = load->issued;
		result->backlogged = paced.backlogged;
		result->slots_busy_max = paced.busy_max;
		result->issue_lag_max_us = (double)paced.lag_max_ns / 1e3;
	} else if (ret == -ENODATA) {
		snprintf(err, err_size, "paced load at %.1f/s: no arrival scheduled within %.3f s",
			 params->rate_per_s, params->duration_s);
	} else {
		snprintf(err, err_size, "paced load at %.0f/s: %s after %llu of %llu acknowledged",
			 params->rate_per_s, strerror(-ret), (unsigned long long)load->acked,
			 (unsigned long long)load->issued);
	}
	bench_paced_free(&paced);
	return ret;
}

struct bench_warm {
	struct spool_append op;
	bool done;
	int32_t result;
};

static void
bench_warm_acked(struct spool_append *op, int32_t result)
{
	struct bench_warm *warm = op->ctx;
	ENG_ASSERT(warm != NULL);
	ENG_ASSERT(!warm->done);
	warm->done = true;
	warm->result = result;
}

/* Append op (message or outcome) and run the ring until it is durable. */
static int
bench_warm_one(struct spool *sp, struct ring *ring, struct bench_warm *warm, bool outcome)
{
	warm->op.callback = bench_warm_acked;
	warm->op.ctx = warm;
	warm->done = false;
	int ret = outcome ? spool_write_outcome(sp, &warm->op) : spool_write_message(sp, &warm->op);
	for (uint32_t turns = 0; ret == 0 && !warm->done; turns++) {
		if (turns > 100000)
			return -ETIMEDOUT;
		ret = ring_run_once(ring, BENCH_TURN_TIMEOUT_NS);
		ret = ret < 0 ? ret : 0;
	}
	return ret < 0 ? ret : warm->result;
}

int
bench_spool_warm(struct spool *sp, struct ring *ring, const struct bench_bodies *bodies,
		 char *err, size_t err_size)
{
	struct bench_load load;
	struct bench_client client;
	struct bench_warm warm;
	memset(&load, 0, sizeof(load));
	memset(&warm, 0, sizeof(warm));
	load.bodies = bodies;
	bench_client_init(&load, &client);
	client.msg.body.data = bodies->data;
	client.msg.body.size = bodies->body_size;
	warm.op.input.message = &client.msg;
	int ret = bench_warm_one(sp, ring, &warm, false);
	struct spool_outcome outcome = {
		.message = warm.op.location,
		.rcpt_index = 0,
		.state = SPOOL_RCPT_DEFERRED,
		.time_ns = BENCH_EXPIRY_NS,
	};
	memset(&warm.op, 0, sizeof(warm.op));
	warm.op.input.outcome = &outcome;
	if (ret == 0)
		ret = bench_warm_one(sp, ring, &warm, true);
	if (ret < 0)
		snprintf(err, err_size, "spool warm-up append: %s", strerror(-ret));
	return ret;
}

int
bench_spool_wait_ready(struct spool *sp, struct ring *ring, const char *dir, uint64_t segments,
		       bool want_idle, double timeout_s)
{
	ENG_ASSERT(sp != NULL && ring != NULL && dir != NULL);
	ENG_ASSERT(timeout_s > 0);
	uint64_t deadline_ns = bench_now_ns() + (uint64_t)(timeout_s * 1e9);
	/* Done when enough segments exist and (want_idle) a loop turn, which
	 * runs the spool's hook, leaves nothing in flight: no preparation. */
	for (uint32_t idle_turns = 0; idle_turns < 2;) {
		if (bench_now_ns() > deadline_ns)
			return -ETIMEDOUT;
		if (bench_free_bytes(dir) < BENCH_FREE_BYTES_MIN)
			return -ENOSPC;
		int ret = ring_run_once(ring, 10ull * 1000ull * 1000ull);
		if (ret < 0)
			return ret;
		bool ready = spool_message_stats(sp)->segments_created >= segments;
		bool idle = !want_idle || ring_ops_in_flight(ring) == 0;
		idle_turns = ready && idle ? idle_turns + 1 : 0;
	}
	return 0;
}
