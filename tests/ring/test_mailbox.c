/*
 * test_mailbox.c - Criterion tests of ring/ring_mailbox.c: the SPSC queue on
 * one thread (capacity, FIFO order, wraparound, back pressure), the mesh
 * wake protocol step by step on one thread owning several rings, a
 * deterministic cross-thread wake, and the stress tests the thread-per-core
 * hand-off must pass: two shards pinned to two CPUs, each on its own ring,
 * moving >= 5 million items one way, and >= 1 million each way at once,
 * every item arriving exactly once and in order, consumers sleeping in
 * ring_run_once() and woken only by msg_ring.
 *
 * RINGMAIL_QUICK=1 in the environment shrinks the stress counts (for slow
 * sanitizer or emulated runs); the defaults are the required sizes.
 *
 * No sleeps are used as synchronisation. Worker threads never call
 * cr_assert (it unwinds the test thread only): they record what they saw
 * and the test thread asserts after pthread_join(). A wake that never comes
 * does not hang the test: every sleep is bounded (T_STRESS_SLEEP_NS) and a
 * sleep that runs to its timeout with nothing dispatched is counted as a
 * lost wake, which fails the test.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "ring/ring_mailbox.h"
#include "t_ring.h"

#define T_SEED 0x9e3779b97f4a7c15ull
#define T_MAIL_KIND 0x6d61696cu /* "mail" */
#define T_WAIT_NS (5ull * 1000000000ull)
#define T_SHARDS_MAX 3u

/* ---- Mail content: a sequence number and fields derived from it ---- */

/* splitmix64 finaliser: a cheap checksum that catches torn or mixed items. */
static uint64_t
t_mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static struct ring_mail
t_mail_make(uint32_t from_shard_index, uint64_t seq, void *ptr)
{
	uint64_t sum = t_mix(seq ^ ((uint64_t)from_shard_index << 48) ^ T_SEED);
	return (struct ring_mail){
		.a = seq,
		.b = sum,
		.ptr = ptr,
		.kind = T_MAIL_KIND + from_shard_index,
		.aux = (uint32_t)(sum >> 32) ^ (uint32_t)seq,
	};
}

static bool
t_mail_is_valid(const struct ring_mail *mail, uint32_t from_shard_index, uint64_t seq,
		void *ptr)
{
	struct ring_mail want = t_mail_make(from_shard_index, seq, ptr);
	return mail->a == want.a && mail->b == want.b && mail->ptr == want.ptr &&
	       mail->kind == want.kind && mail->aux == want.aux;
}

/* ---- SPSC on one thread ---- */

Test(ring_spsc, fill_to_capacity_then_push_fails)
{
	struct ring_spsc *queue = ring_spsc_create(8);
	cr_assert_not_null(queue);
	cr_assert_eq(ring_spsc_capacity(queue), 8u);
	for (uint64_t seq = 0; seq < 8; seq++) {
		struct ring_mail mail = t_mail_make(0, seq, NULL);
		cr_assert(ring_spsc_push(queue, &mail), "push %llu", (unsigned long long)seq);
	}
	cr_assert_eq(ring_spsc_count(queue), 8u);
	struct ring_mail extra = t_mail_make(0, 8, NULL);
	cr_assert_not(ring_spsc_push(queue, &extra), "a full queue must refuse");
	cr_assert_eq(ring_spsc_push_many(queue, &extra, 1), 0u);
	cr_assert_eq(ring_spsc_count(queue), 8u);

	/* One pop makes room for exactly one push. */
	struct ring_mail out;
	cr_assert(ring_spsc_pop(queue, &out));
	cr_assert(t_mail_is_valid(&out, 0, 0, NULL));
	cr_assert(ring_spsc_push(queue, &extra));
	cr_assert_not(ring_spsc_push(queue, &extra));
	ring_spsc_destroy(queue);
}

Test(ring_spsc, items_come_out_in_fifo_order)
{
	struct ring_spsc *queue = ring_spsc_create(64);
	cr_assert_not_null(queue);
	struct ring_mail mails[40];
	for (uint64_t seq = 0; seq < 40; seq++)
		mails[seq] = t_mail_make(1, seq, &mails[seq]);
	cr_assert_eq(ring_spsc_push_many(queue, mails, 25), 25u);
	cr_assert_eq(ring_spsc_push_many(queue, mails + 25, 15), 15u);
	struct ring_mail out[40];
	cr_assert_eq(ring_spsc_pop_many(queue, out, 7), 7u);
	cr_assert_eq(ring_spsc_pop_many(queue, out + 7, 40), 33u);
	for (uint64_t seq = 0; seq < 40; seq++)
		cr_assert(t_mail_is_valid(&out[seq], 1, seq, &mails[seq]), "item %llu",
			  (unsigned long long)seq);
	ring_spsc_destroy(queue);
}

Test(ring_spsc, pop_on_empty_returns_nothing)
{
	struct ring_spsc *queue = ring_spsc_create(4);
	cr_assert_not_null(queue);
	struct ring_mail out[4];
	cr_assert_eq(ring_spsc_pop_many(queue, out, 4), 0u);
	cr_assert_not(ring_spsc_pop(queue, &out[0]));
	cr_assert_eq(ring_spsc_count(queue), 0u);
	ring_spsc_destroy(queue);
}

Test(ring_spsc, push_many_takes_what_fits_and_caller_keeps_the_rest)
{
	struct ring_spsc *queue = ring_spsc_create(16);
	cr_assert_not_null(queue);
	struct ring_mail mails[20];
	for (uint64_t seq = 0; seq < 20; seq++)
		mails[seq] = t_mail_make(0, seq, NULL);
	cr_assert_eq(ring_spsc_push_many(queue, mails, 20), 16u);
	struct ring_mail out[20];
	cr_assert_eq(ring_spsc_pop_many(queue, out, 6), 6u);
	/* The caller retries with what it kept: mails[16..20). */
	cr_assert_eq(ring_spsc_push_many(queue, mails + 16, 4), 4u);
	cr_assert_eq(ring_spsc_pop_many(queue, out + 6, 20), 14u);
	for (uint64_t seq = 0; seq < 20; seq++)
		cr_assert(t_mail_is_valid(&out[seq], 0, seq, NULL));
	ring_spsc_destroy(queue);
}

Test(ring_spsc, wraparound_keeps_order_and_content)
{
	const uint32_t capacity = 8;
	struct ring_spsc *queue = ring_spsc_create(capacity);
	cr_assert_not_null(queue);
	/* A batch that straddles the end of the slot array. */
	struct ring_mail mails[8], out[8];
	for (uint64_t seq = 0; seq < 5; seq++)
		mails[seq] = t_mail_make(0, seq, NULL);
	cr_assert_eq(ring_spsc_push_many(queue, mails, 5), 5u);
	cr_assert_eq(ring_spsc_pop_many(queue, out, 5), 5u);
	for (uint64_t seq = 0; seq < 8; seq++)
		mails[seq] = t_mail_make(0, 5 + seq, NULL);
	cr_assert_eq(ring_spsc_push_many(queue, mails, 8), 8u);
	cr_assert_eq(ring_spsc_pop_many(queue, out, 8), 8u);
	for (uint64_t seq = 0; seq < 8; seq++)
		cr_assert(t_mail_is_valid(&out[seq], 0, 5 + seq, NULL));

	/* Many laps with uneven batch sizes on both sides. */
	uint64_t pushed = 13, popped = 13;
	for (uint32_t i = 0; i < 5000; i++) {
		uint32_t want = 1 + i % 7;
		for (uint32_t k = 0; k < want; k++)
			mails[k] = t_mail_make(0, pushed + k, NULL);
		pushed += ring_spsc_push_many(queue, mails, want);
		uint32_t got = ring_spsc_pop_many(queue, out, 1 + (i * 3) % capacity);
		for (uint32_t k = 0; k < got; k++)
			cr_assert(t_mail_is_valid(&out[k], 0, popped + k, NULL), "lap item %llu",
				  (unsigned long long)(popped + k));
		popped += got;
		cr_assert_leq(pushed - popped, (uint64_t)capacity);
	}
	popped += ring_spsc_pop_many(queue, out, capacity);
	cr_assert_eq(popped, pushed);
	cr_assert_gt(pushed, 1000ull * capacity, "the test must lap the queue many times");
	ring_spsc_destroy(queue);
}

Test(ring_spsc, init_over_caller_memory)
{
	static _Alignas(RING_CACHE_LINE_SIZE) struct ring_spsc queue;
	static struct ring_mail slots[4];
	ring_spsc_init(&queue, slots, 4);
	struct ring_mail mail = t_mail_make(2, 9, slots);
	cr_assert(ring_spsc_push(&queue, &mail));
	struct ring_mail out;
	cr_assert(ring_spsc_pop(&queue, &out));
	cr_assert(t_mail_is_valid(&out, 2, 9, slots));
	ring_spsc_deinit(&queue);
}

Test(ring_spsc, capacity_not_power_of_two_is_a_programmer_error, .signal = SIGABRT)
{
	(void)ring_spsc_create(12);
}

/* ---- Mesh on one thread: the wake protocol step by step ---- */

struct t_mesh {
	struct ring_mailbox_mesh *mesh;
	struct ring *rings[T_SHARDS_MAX];
	uint32_t shard_count;
};

/* One thread may own several rings; each shard still has exactly one. */
static void
t_mesh_open(struct t_mesh *t, uint32_t shard_count, uint32_t queue_capacity)
{
	cr_assert_leq(shard_count, T_SHARDS_MAX);
	t_ring_probe_or_skip();
	memset(t, 0, sizeof(*t));
	t->shard_count = shard_count;
	t->mesh = ring_mailbox_mesh_create(shard_count, queue_capacity);
	cr_assert_not_null(t->mesh);
	cr_assert_eq(ring_mailbox_shard_count(t->mesh), shard_count);
	for (uint32_t i = 0; i < shard_count; i++) {
		t->rings[i] = t_ring_create();
		ring_mailbox_attach(t->mesh, i, t->rings[i]);
	}
}

static void
t_mesh_close(struct t_mesh *t)
{
	for (uint32_t i = 0; i < t->shard_count; i++)
		ring_destroy(t->rings[i]);
	ring_mailbox_mesh_destroy(t->mesh);
}

/* Send seq_first.. from one shard; returns how many were queued. */
static uint32_t
t_send_range(struct t_mesh *t, uint32_t from, uint32_t to, uint64_t seq_first, uint32_t count)
{
	struct ring_mail mails[64];
	cr_assert_leq(count, 64u);
	for (uint32_t i = 0; i < count; i++)
		mails[i] = t_mail_make(from, seq_first + i, NULL);
	return ring_mailbox_send(t->mesh, from, to, mails, count);
}

struct t_collect {
	uint64_t next_seq[T_SHARDS_MAX];
	uint32_t total;
	uint32_t bad;
	uint32_t batches;
	uint32_t last_from;
};

static void
t_collect_callback(void *ctx, uint32_t from_shard_index, const struct ring_mail *mails,
		   uint32_t count)
{
	struct t_collect *collect = ctx;
	collect->batches++;
	collect->last_from = from_shard_index;
	for (uint32_t i = 0; i < count; i++) {
		collect->total++;
		if (from_shard_index >= T_SHARDS_MAX ||
		    !t_mail_is_valid(&mails[i], from_shard_index,
				     collect->next_seq[from_shard_index], NULL)) {
			collect->bad++;
			continue;
		}
		collect->next_seq[from_shard_index]++;
	}
}

Test(ring_mailbox, awake_target_gets_no_wake)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 64);
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 10), 10u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 0), 0u, "target is awake: no msg_ring");
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->wakes_sent, 0u);
	struct t_collect collect = { 0 };
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 100, &collect, t_collect_callback), 10u);
	cr_assert_eq(collect.bad, 0u);
	cr_assert_eq(collect.next_seq[0], 10u);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 1)->mails_received, 10u);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->mails_sent, 10u);
	t_mesh_close(&t);
}

Test(ring_mailbox, sleeping_target_gets_one_wake_however_much_is_sent)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 64);
	cr_assert(ring_mailbox_prepare_sleep(t.mesh, 1), "nothing queued: may sleep");
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 3), 3u);
	cr_assert_eq(t_send_range(&t, 0, 1, 3, 3), 3u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 0), 1u, "one wake for the sleeper");
	cr_assert_eq(ring_mailbox_flush(t.mesh, 0), 0u, "nothing new to flush");
	cr_assert_eq(t_send_range(&t, 0, 1, 6, 3), 3u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 0), 0u, "the sleep was already claimed");
	cr_assert_geq(ring_run_once(t.rings[0], 0), 0); /* submits the msg_ring */

	uint64_t start_ns = eng_now_monotonic_ns();
	int ret = ring_run_once(t.rings[1], T_WAIT_NS);
	cr_assert_eq(ret, 1, "the wake CQE ends the wait (ret %d)", ret);
	cr_assert_lt(eng_now_monotonic_ns() - start_ns, T_WAIT_NS);
	ring_mailbox_end_sleep(t.mesh, 1);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->wakes_sent, 1u);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 1)->wakes_received, 1u);

	struct t_collect collect = { 0 };
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 100, &collect, t_collect_callback), 9u);
	cr_assert_eq(collect.bad, 0u);
	t_mesh_close(&t);
}

Test(ring_mailbox, flush_runs_from_the_ring_hook)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 64);
	cr_assert(ring_mailbox_prepare_sleep(t.mesh, 1));
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 1), 1u);
	/* No explicit flush: the hook installed by attach does it. */
	cr_assert_geq(ring_run_once(t.rings[0], 0), 0);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->wakes_sent, 1u);
	cr_assert_eq(ring_run_once(t.rings[1], T_WAIT_NS), 1);
	ring_mailbox_end_sleep(t.mesh, 1);
	t_mesh_close(&t);
}

Test(ring_mailbox, prepare_sleep_refuses_when_mail_is_waiting)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 64);
	cr_assert_eq(t_send_range(&t, 1, 0, 0, 1), 1u);
	cr_assert_not(ring_mailbox_prepare_sleep(t.mesh, 0));
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->sleeps_aborted, 1u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 1), 0u, "an aborted sleep leaves no flag");
	/* run_once must not block here: it returns without waiting. */
	uint64_t start_ns = eng_now_monotonic_ns();
	cr_assert_geq(ring_mailbox_run_once(t.mesh, 0, T_WAIT_NS), 0);
	cr_assert_lt(eng_now_monotonic_ns() - start_ns, T_WAIT_NS / 2);
	t_mesh_close(&t);
}

Test(ring_mailbox, full_queue_pushes_back_and_wakes_producer_when_space_appears)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 8);
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 12), 8u, "capacity 8: the caller keeps 4");
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->sends_short, 1u);
	cr_assert(ring_mailbox_prepare_sleep(t.mesh, 0), "full queue, no inbound: may sleep");

	struct t_collect collect = { 0 };
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 3, &collect, t_collect_callback), 3u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 1), 1u, "space freed for a sleeping producer");
	cr_assert_geq(ring_run_once(t.rings[1], 0), 0);
	cr_assert_eq(ring_run_once(t.rings[0], T_WAIT_NS), 1);
	ring_mailbox_end_sleep(t.mesh, 0);
	cr_assert_eq(ring_mailbox_stats_get(t.mesh, 0)->wakes_received, 1u);

	cr_assert_eq(t_send_range(&t, 0, 1, 8, 4), 3u, "three slots were freed");
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 100, &collect, t_collect_callback), 8u);
	cr_assert_eq(t_send_range(&t, 0, 1, 11, 1), 1u);
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 100, &collect, t_collect_callback), 1u);
	cr_assert_eq(collect.bad, 0u);
	cr_assert_eq(collect.next_seq[0], 12u);
	t_mesh_close(&t);
}

/* Shard 0 refills the queue from inside shard 1's deliver callback: between
 * shard 1's pops and its back-pressure check, like a producer on another
 * CPU would. */
struct t_refill {
	struct t_mesh *t;
	uint64_t seq_next;
	uint32_t pushed;
	bool done;
	struct t_collect collect;
};

static void
t_refill_callback(void *ctx, uint32_t from_shard_index, const struct ring_mail *mails,
		  uint32_t count)
{
	struct t_refill *refill = ctx;
	t_collect_callback(&refill->collect, from_shard_index, mails, count);
	if (refill->done)
		return;
	refill->done = true;
	refill->pushed = t_send_range(refill->t, 0, 1, refill->seq_next, 8);
	refill->seq_next += refill->pushed;
}

Test(ring_mailbox, producer_blocked_on_a_refilled_queue_is_still_woken)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 8);
	struct t_refill refill = { .t = &t, .seq_next = 8 };
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 8), 8u, "exactly full, not short");
	/* Shard 1 pops 4; shard 0 sees the room, refills it and comes up
	 * short; only then does shard 1 look at the back-pressure mark. */
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 4, &refill, t_refill_callback), 4u);
	cr_assert_eq(refill.pushed, 4u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 1), 0u, "producer awake: no wake");
	cr_assert(ring_mailbox_prepare_sleep(t.mesh, 0), "queue full again: may sleep");
	/* New room: the producer sleeps and must be woken. */
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 2, &refill, t_refill_callback), 2u);
	cr_assert_eq(ring_mailbox_flush(t.mesh, 1), 1u, "the blocked producer must be woken");
	cr_assert_geq(ring_run_once(t.rings[1], 0), 0);
	cr_assert_eq(ring_run_once(t.rings[0], T_WAIT_NS), 1);
	ring_mailbox_end_sleep(t.mesh, 0);
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 100, &refill, t_refill_callback), 6u);
	cr_assert_eq(refill.collect.bad, 0u);
	cr_assert_eq(refill.collect.next_seq[0], 12u);
	t_mesh_close(&t);
}

Test(ring_mailbox, prepare_sleep_refuses_when_a_full_queue_has_room_again)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 8);
	cr_assert_eq(t_send_range(&t, 0, 1, 0, 9), 8u);
	struct t_collect collect = { 0 };
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 2, &collect, t_collect_callback), 2u);
	cr_assert_not(ring_mailbox_prepare_sleep(t.mesh, 0), "room appeared: retry, don't sleep");
	/* The producer chose not to retry: it may sleep next time. */
	cr_assert(ring_mailbox_prepare_sleep(t.mesh, 0));
	ring_mailbox_end_sleep(t.mesh, 0);
	t_mesh_close(&t);
}

Test(ring_mailbox, drain_is_bounded_and_rotates_between_senders)
{
	struct t_mesh t;
	t_mesh_open(&t, 3, 64);
	for (uint64_t seq = 0; seq < 20; seq += 10) {
		cr_assert_eq(t_send_range(&t, 0, 2, seq, 10), 10u);
		cr_assert_eq(t_send_range(&t, 1, 2, seq, 10), 10u);
	}
	struct t_collect collect = { 0 };
	uint32_t from_order[4];
	for (uint32_t call = 0; call < 4; call++) {
		cr_assert_eq(ring_mailbox_drain(t.mesh, 2, 10, &collect, t_collect_callback), 10u);
		from_order[call] = collect.last_from;
	}
	/* Starts rotate 0, 1, 2 (self: skipped to 0), 0 (empty: on to 1). */
	cr_assert_eq(from_order[0], 0u);
	cr_assert_eq(from_order[1], 1u);
	cr_assert_eq(from_order[2], 0u);
	cr_assert_eq(from_order[3], 1u);
	cr_assert_eq(ring_mailbox_drain(t.mesh, 2, 10, &collect, t_collect_callback), 0u);
	cr_assert_eq(collect.bad, 0u);
	cr_assert_eq(collect.next_seq[0], 20u);
	cr_assert_eq(collect.next_seq[1], 20u);
	t_mesh_close(&t);
}

Test(ring_mailbox, drain_hands_over_in_batches_of_at_most_the_batch_max)
{
	struct t_mesh t;
	t_mesh_open(&t, 2, 256);
	for (uint64_t seq = 0; seq < 200; seq += 50)
		cr_assert_eq(t_send_range(&t, 0, 1, seq, 50), 50u);
	struct t_collect collect = { 0 };
	cr_assert_eq(ring_mailbox_drain(t.mesh, 1, 1000, &collect, t_collect_callback), 200u);
	uint32_t batches_min = (200 + RING_MAILBOX_DELIVER_BATCH_MAX - 1) /
			       RING_MAILBOX_DELIVER_BATCH_MAX;
	cr_assert_eq(collect.batches, batches_min);
	cr_assert_eq(collect.bad, 0u);
	t_mesh_close(&t);
}

/* ---- A deterministic wake across two threads ---- */

struct t_sleeper {
	struct ring_mailbox_mesh *mesh;
	pthread_barrier_t flagged; /* the sleeper's flag is set (or it failed) */
	pthread_barrier_t done;	   /* the waker is finished; rings may go */
	bool created;
	bool prepared;
	char err[T_RING_ERR_SIZE];
	int run_result;
	uint64_t waited_ns;
	uint32_t drained;
	struct t_collect collect;
};

static void *
t_sleeper_main(void *arg)
{
	struct t_sleeper *sleeper = arg;
	struct ring *ring = t_ring_create_or_null(sleeper->err, sizeof(sleeper->err));
	sleeper->created = ring != NULL;
	if (ring != NULL) {
		ring_mailbox_attach(sleeper->mesh, 1, ring);
		sleeper->prepared = ring_mailbox_prepare_sleep(sleeper->mesh, 1);
	}
	pthread_barrier_wait(&sleeper->flagged);
	if (sleeper->prepared) {
		uint64_t start_ns = eng_now_monotonic_ns();
		sleeper->run_result = ring_run_once(ring, T_WAIT_NS);
		sleeper->waited_ns = eng_now_monotonic_ns() - start_ns;
		ring_mailbox_end_sleep(sleeper->mesh, 1);
		sleeper->drained = ring_mailbox_drain(sleeper->mesh, 1, 16, &sleeper->collect,
						      t_collect_callback);
	}
	pthread_barrier_wait(&sleeper->done);
	ring_destroy(ring);
	return NULL;
}

Test(ring_mailbox, sleeping_thread_is_woken_by_msg_ring_from_another_thread)
{
	struct ring *ring = t_ring_create();
	struct t_sleeper sleeper;
	memset(&sleeper, 0, sizeof(sleeper));
	sleeper.mesh = ring_mailbox_mesh_create(2, 16);
	cr_assert_not_null(sleeper.mesh);
	ring_mailbox_attach(sleeper.mesh, 0, ring);
	cr_assert_eq(pthread_barrier_init(&sleeper.flagged, NULL, 2), 0);
	cr_assert_eq(pthread_barrier_init(&sleeper.done, NULL, 2), 0);
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, t_sleeper_main, &sleeper), 0);
	pthread_barrier_wait(&sleeper.flagged);
	uint32_t wakes = 0;
	if (sleeper.prepared) {
		struct ring_mail mail = t_mail_make(0, 0, NULL);
		cr_assert_eq(ring_mailbox_send(sleeper.mesh, 0, 1, &mail, 1), 1u);
		wakes = ring_mailbox_flush(sleeper.mesh, 0);
		cr_assert_geq(ring_run_once(ring, 0), 0);
	}
	pthread_barrier_wait(&sleeper.done);
	cr_assert_eq(pthread_join(thread, NULL), 0);
	cr_assert(sleeper.created, "sleeper ring_create: %s", sleeper.err);
	cr_assert(sleeper.prepared);
	cr_assert_eq(wakes, 1u, "the flag was set before the send: exactly one wake");
	cr_assert_eq(sleeper.run_result, 1, "woken by the wake CQE (ret %d)", sleeper.run_result);
	cr_assert_lt(sleeper.waited_ns, T_WAIT_NS, "the wait ran to its timeout: lost wake");
	cr_assert_eq(sleeper.drained, 1u);
	cr_assert_eq(sleeper.collect.bad, 0u);
	cr_assert_eq(ring_mailbox_stats_get(sleeper.mesh, 1)->wakes_received, 1u);
	pthread_barrier_destroy(&sleeper.flagged);
	pthread_barrier_destroy(&sleeper.done);
	ring_destroy(ring);
	ring_mailbox_mesh_destroy(sleeper.mesh);
}

/* ---- Stress: two pinned shards, msg_ring wakes, millions of items ---- */

#define T_STRESS_QUEUE_CAPACITY 1024u
#define T_STRESS_SEND_BATCH 64u
#define T_STRESS_DRAIN_MAX 256u
/* A sleep this long with a live peer means a wake was lost. */
#define T_STRESS_SLEEP_NS (5ull * 1000000000ull)
#define T_STRESS_DEADLINE_NS (90ull * 1000000000ull)

struct t_stress;

struct t_stress_shard {
	struct t_stress *stress;
	uint32_t index;
	uint32_t peer_index;
	int cpu; /* -1: leave unpinned */
	bool pinned;
	struct ring *ring;
	/* Sending side: a batch of generated mail, the unsent tail kept. */
	uint64_t send_total;
	uint64_t sent;
	struct ring_mail batch[T_STRESS_SEND_BATCH];
	uint32_t batch_next;
	uint32_t batch_count;
	/* Receiving side: received is also the next expected sequence. */
	uint64_t receive_total;
	uint64_t received;
	uint64_t bad_count;
	uint64_t first_bad_seq;
	/* Loop health. */
	uint64_t idle_turns;
	uint64_t lost_wakes;
	int error;
	char err[T_RING_ERR_SIZE];
	uint64_t start_ns;
	uint64_t end_ns;
};

struct t_stress {
	struct ring_mailbox_mesh *mesh;
	pthread_barrier_t start; /* both rings attached (or failed) */
	pthread_barrier_t stop;	 /* both loops done; rings may go */
	atomic_bool abort;
	struct t_stress_shard shards[2];
};

static bool
t_pin_to_cpu(int cpu)
{
	if (cpu < 0)
		return false;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((size_t)cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

/* The first two CPUs this process may use; the same one twice if alone. */
static void
t_pick_cpus(int cpus[2])
{
	cpus[0] = -1;
	cpus[1] = -1;
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return;
	int found = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; cpu++) {
		if (CPU_ISSET((size_t)cpu, &set))
			cpus[found++] = cpu;
	}
	if (found == 1)
		cpus[1] = cpus[0];
}

static void
t_stress_deliver_callback(void *ctx, uint32_t from_shard_index, const struct ring_mail *mails,
			  uint32_t count)
{
	struct t_stress_shard *me = ctx;
	for (uint32_t i = 0; i < count; i++) {
		bool valid = from_shard_index == me->peer_index &&
			     t_mail_is_valid(&mails[i], from_shard_index, me->received, me->stress);
		if (!valid && me->bad_count++ == 0)
			me->first_bad_seq = me->received;
		me->received++;
	}
}

/* Push what is left of the current batch, generating a new one when the
 * last went out. Returns items queued (0: queue full, or nothing to send). */
static uint32_t
t_stress_send(struct t_stress_shard *me)
{
	if (me->sent == me->send_total)
		return 0;
	if (me->batch_next == me->batch_count) {
		uint64_t left = me->send_total - me->sent;
		me->batch_count = (uint32_t)ENG_MIN(left, (uint64_t)T_STRESS_SEND_BATCH);
		me->batch_next = 0;
		for (uint32_t i = 0; i < me->batch_count; i++)
			me->batch[i] = t_mail_make(me->index, me->sent + i, me->stress);
	}
	uint32_t pushed = ring_mailbox_send(me->stress->mesh, me->index, me->peer_index,
					    &me->batch[me->batch_next],
					    me->batch_count - me->batch_next);
	me->batch_next += pushed;
	me->sent += pushed;
	return pushed;
}

static void
t_stress_fail(struct t_stress_shard *me, int error)
{
	me->error = error;
	atomic_store(&me->stress->abort, true);
}

/* Nothing moved: sleep in the ring until a wake (or work) arrives. */
static bool
t_stress_idle(struct t_stress_shard *me, uint64_t deadline_ns)
{
	uint64_t start_ns = eng_now_monotonic_ns();
	if (atomic_load(&me->stress->abort)) {
		t_stress_fail(me, -ECANCELED);
		return false;
	}
	if (start_ns > deadline_ns) {
		t_stress_fail(me, -ETIMEDOUT);
		return false;
	}
	me->idle_turns++;
	int ret = ring_mailbox_run_once(me->stress->mesh, me->index, T_STRESS_SLEEP_NS);
	if (ret < 0) {
		t_stress_fail(me, ret);
		return false;
	}
	if (ret == 0 && eng_now_monotonic_ns() - start_ns >= T_STRESS_SLEEP_NS)
		me->lost_wakes++;
	return true;
}

static void
t_stress_loop(struct t_stress_shard *me)
{
	struct ring_mailbox_mesh *mesh = me->stress->mesh;
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_STRESS_DEADLINE_NS;
	/* Bounded: a turn either moves items (finitely many) or goes through
	 * t_stress_idle, which enforces the deadline. */
	while (me->sent < me->send_total || me->received < me->receive_total) {
		uint32_t moved = t_stress_send(me);
		if (me->received < me->receive_total)
			moved += ring_mailbox_drain(mesh, me->index, T_STRESS_DRAIN_MAX, me,
						    t_stress_deliver_callback);
		if (moved == 0) {
			if (!t_stress_idle(me, deadline_ns))
				return;
			continue;
		}
		/* Wakes only if the peer sleeps; submit them right away. */
		if (ring_mailbox_flush(mesh, me->index) > 0) {
			int ret = ring_run_once(me->ring, 0);
			if (ret < 0) {
				t_stress_fail(me, ret);
				return;
			}
		}
	}
	/* The peer may sleep waiting for our last items or freed space. */
	(void)ring_mailbox_flush(mesh, me->index);
	int ret = ring_run_once(me->ring, 0);
	if (ret < 0)
		t_stress_fail(me, ret);
}

static void *
t_stress_main(void *arg)
{
	struct t_stress_shard *me = arg;
	struct t_stress *stress = me->stress;
	me->pinned = t_pin_to_cpu(me->cpu);
	me->ring = t_ring_create_or_null(me->err, sizeof(me->err));
	if (me->ring == NULL)
		t_stress_fail(me, -ENODEV);
	else
		ring_mailbox_attach(stress->mesh, me->index, me->ring);
	pthread_barrier_wait(&stress->start);
	if (!atomic_load(&stress->abort)) {
		me->start_ns = eng_now_monotonic_ns();
		t_stress_loop(me);
		me->end_ns = eng_now_monotonic_ns();
	}
	/* Every wake SQE is submitted before either ring fd is closed. */
	pthread_barrier_wait(&stress->stop);
	ring_destroy(me->ring);
	return NULL;
}

static uint64_t
t_stress_count(uint64_t count_full, uint64_t count_quick)
{
	const char *quick = getenv("RINGMAIL_QUICK");
	if (quick != NULL && quick[0] != '\0' && strcmp(quick, "0") != 0)
		return count_quick;
	return count_full;
}

static void
t_stress_report(const struct t_stress *stress, const char *label)
{
	const struct t_stress_shard *s0 = &stress->shards[0];
	const struct t_stress_shard *s1 = &stress->shards[1];
	uint64_t start_ns = ENG_MIN(s0->start_ns, s1->start_ns);
	uint64_t end_ns = ENG_MAX(s0->end_ns, s1->end_ns);
	double elapsed_s = (double)(end_ns - start_ns) / 1e9;
	uint64_t items = s0->received + s1->received;
	fprintf(stderr,
		"ring_mailbox %s: %llu items in %.3f s = %.0f items_per_s "
		"(cpus %d,%d pinned %d,%d)\n",
		label, (unsigned long long)items, elapsed_s,
		elapsed_s > 0 ? (double)items / elapsed_s : 0.0, s0->cpu, s1->cpu, s0->pinned,
		s1->pinned);
	for (uint32_t i = 0; i < 2; i++) {
		const struct ring_mailbox_stats *st = ring_mailbox_stats_get(stress->mesh, i);
		fprintf(stderr,
			"  shard %u: sent %llu received %llu short_sends %llu sleeps %llu "
			"aborted %llu wakes_sent %llu wakes_received %llu idle_turns %llu\n",
			i, (unsigned long long)st->mails_sent,
			(unsigned long long)st->mails_received,
			(unsigned long long)st->sends_short, (unsigned long long)st->sleeps,
			(unsigned long long)st->sleeps_aborted, (unsigned long long)st->wakes_sent,
			(unsigned long long)st->wakes_received,
			(unsigned long long)stress->shards[i].idle_turns);
	}
}

static void
t_stress_check_shard(const struct t_stress *stress, uint32_t index)
{
	const struct t_stress_shard *me = &stress->shards[index];
	const struct ring_mailbox_stats *st = ring_mailbox_stats_get(stress->mesh, index);
	cr_assert_eq(me->error, 0, "shard %u failed: %s %s", index, strerror(-me->error), me->err);
	cr_assert_eq(me->sent, me->send_total, "shard %u sent", index);
	cr_assert_eq(me->received, me->receive_total, "shard %u received", index);
	cr_assert_eq(me->bad_count, 0u,
		     "shard %u: %llu items out of order or corrupt from seq %llu", index,
		     (unsigned long long)me->bad_count, (unsigned long long)me->first_bad_seq);
	cr_assert_eq(me->lost_wakes, 0u, "shard %u slept to the timeout: lost wake", index);
	cr_assert_eq(st->mails_sent, me->send_total);
	cr_assert_eq(st->mails_received, me->receive_total);
	cr_assert_eq(st->wake_prep_failures, 0u);
	/* Wakes are bounded by sleeps, not by items. */
	const struct ring_mailbox_stats *peer = ring_mailbox_stats_get(stress->mesh, 1 - index);
	cr_assert_leq(st->wakes_received, peer->wakes_sent);
	cr_assert_leq(peer->wakes_sent, st->sleeps + st->sleeps_aborted);
}

static void
t_stress_run(uint64_t count_0_to_1, uint64_t count_1_to_0, const char *label)
{
	t_ring_probe_or_skip();
	struct t_stress *stress = calloc(1, sizeof(*stress));
	cr_assert_not_null(stress);
	stress->mesh = ring_mailbox_mesh_create(2, T_STRESS_QUEUE_CAPACITY);
	cr_assert_not_null(stress->mesh);
	atomic_init(&stress->abort, false);
	int cpus[2];
	t_pick_cpus(cpus);
	for (uint32_t i = 0; i < 2; i++) {
		struct t_stress_shard *shard = &stress->shards[i];
		shard->stress = stress;
		shard->index = i;
		shard->peer_index = 1 - i;
		shard->cpu = cpus[i];
		shard->send_total = i == 0 ? count_0_to_1 : count_1_to_0;
		shard->receive_total = i == 0 ? count_1_to_0 : count_0_to_1;
	}
	cr_assert_eq(pthread_barrier_init(&stress->start, NULL, 2), 0);
	cr_assert_eq(pthread_barrier_init(&stress->stop, NULL, 2), 0);
	pthread_t threads[2];
	for (uint32_t i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&threads[i], NULL, t_stress_main, &stress->shards[i]),
			     0);
	for (uint32_t i = 0; i < 2; i++)
		cr_assert_eq(pthread_join(threads[i], NULL), 0);
	t_stress_report(stress, label);
	for (uint32_t i = 0; i < 2; i++)
		t_stress_check_shard(stress, i);
	pthread_barrier_destroy(&stress->start);
	pthread_barrier_destroy(&stress->stop);
	ring_mailbox_mesh_destroy(stress->mesh);
	free(stress);
}

Test(ring_mailbox, five_million_items_cross_pinned_threads_exactly_once_in_order,
     .timeout = 100)
{
	t_stress_run(t_stress_count(5000000ull, 200000ull), 0, "one_way");
}

Test(ring_mailbox, both_directions_at_once_exactly_once_in_order, .timeout = 100)
{
	uint64_t count = t_stress_count(1000000ull, 100000ull);
	t_stress_run(count, count, "both_ways");
}
