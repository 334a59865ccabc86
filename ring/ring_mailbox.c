/*
 * ring_mailbox.c - SPSC queues and the N x N shard mesh with msg_ring wakes.
 *
 * See ring_mailbox.h for the protocol. Implementation notes:
 *
 * - Indexes are 64-bit counters of items ever pushed (tail) and popped
 *   (head); slot = counter & mask. They never wrap in practice (2^64 items),
 *   so tail - head is the fill level without any "one slot empty" rule.
 * - Producer: relaxed load of its own tail, acquire load of head only when
 *   its cached head says the batch will not fit, copy, release store of
 *   tail. Consumer: the mirror image. The acquire/release pairs order the
 *   slot copies against the index that publishes or frees them.
 * - Cross-thread state of a shard sits on two cache lines of its own: the
 *   sleeping flag (written by the owner and, to claim a wake, by wakers) and
 *   the wake target (ring fd and op, written once at attach). Everything else
 *   in struct ring_mailbox_shard is owner-only and never shared.
 * - Every seq_cst fence below is one half of a Dekker handshake documented
 *   in ring_mailbox.h; each names its partner.
 *
 * XXX: the waker's seq_cst fence costs an mfence per flush per loop turn.
 * Seastar moves that cost to the sleeper with membarrier(2)
 * (io_uring.md 5.1); worth it only if flushes show up in profiles.
 */
#include "ring_mailbox.h"

#include <stdlib.h>
#include <string.h>

#include "../engine/eng_common.h"
#include "ring.h"

_Static_assert(sizeof(struct ring_mail) == 32, "ring_mail is two per cache line");
_Static_assert(RING_CACHE_LINE_SIZE % sizeof(struct ring_mail) == 0, "mail packs lines");
_Static_assert(sizeof(struct ring_spsc) == 3 * RING_CACHE_LINE_SIZE, "spsc is three lines");
_Static_assert((RING_SPSC_CAPACITY_MAX & (RING_SPSC_CAPACITY_MAX - 1)) == 0, "power of two");
_Static_assert(RING_MAILBOX_SHARDS_MAX <= 64, "shard sets are uint64_t masks");
_Static_assert(RING_MAILBOX_DELIVER_BATCH_MAX >= 1, "drain needs a batch");

/* One ordered (from, to) pair. */
struct ring_mailbox_link {
	struct ring_spsc queue;
	/* 1 exactly while the producer has this link in its blocked_mask (a
	 * push came up short and it has not seen room since). Written only by
	 * the producer, on transitions; read by the consumer after every drain
	 * of the link, so it has its own line. It is a state, not an event:
	 * the consumer never clears it (see ring_mailbox_note_space). */
	_Alignas(RING_CACHE_LINE_SIZE) atomic_uint producer_waiting;
};

struct ring_mailbox_shard {
	/* 1 between prepare_sleep and end_sleep, unless a waker claimed it. */
	_Alignas(RING_CACHE_LINE_SIZE) atomic_uint sleeping;
	/* Wake target: written once at attach, read by wakers after they
	 * claimed sleeping (the acquire makes the attach writes visible). */
	_Alignas(RING_CACHE_LINE_SIZE) int ring_fd;
	struct ring_op wake_op;
	/* Owner-only from here on. */
	_Alignas(RING_CACHE_LINE_SIZE) struct ring_mailbox_mesh *mesh;
	struct ring *ring;
	uint32_t index;
	uint32_t drain_start_index;
	uint64_t wake_pending_mask; /* shards to check at the next flush */
	uint64_t wake_forced_mask;  /* claimed wakes whose SQE is still owed */
	uint64_t blocked_mask;	    /* outbound queues found full */
	bool sleep_prepared;
	bool draining;
	struct ring_mailbox_stats stats;
};

struct ring_mailbox_mesh {
	uint32_t shard_count;
	uint32_t queue_capacity;
	struct ring_mailbox_shard *shards; /* shard_count */
	struct ring_mailbox_link *links;   /* [from * shard_count + to]; diagonal unused */
	struct ring_mail *slots;	   /* one block for every queue */
};

/* ---- SPSC queue ---- */

static void
ring_spsc_assert_capacity(uint32_t capacity)
{
	ENG_ASSERT(capacity >= RING_SPSC_CAPACITY_MIN);
	ENG_ASSERT(capacity <= RING_SPSC_CAPACITY_MAX);
	ENG_ASSERT((capacity & (capacity - 1)) == 0);
}

void
ring_spsc_init(struct ring_spsc *queue, struct ring_mail *slots, uint32_t capacity)
{
	ENG_ASSERT(queue != NULL);
	ENG_ASSERT(((uintptr_t)queue % RING_CACHE_LINE_SIZE) == 0);
	ENG_ASSERT(slots != NULL);
	ring_spsc_assert_capacity(capacity);
	memset(queue, 0, sizeof(*queue));
	atomic_init(&queue->tail, 0);
	atomic_init(&queue->head, 0);
	queue->head_cached = 0;
	queue->tail_cached = 0;
	queue->slots = slots;
	queue->capacity = capacity;
	queue->mask = capacity - 1;
}

void
ring_spsc_deinit(struct ring_spsc *queue)
{
	ENG_ASSERT(queue != NULL);
	ENG_ASSERT(queue->slots != NULL);
	queue->slots = NULL;
	queue->capacity = 0;
	queue->mask = 0;
}

/* Zeroed, cache-line aligned memory; NULL when out of memory. */
static void *
ring_mailbox_alloc_lines(size_t size)
{
	size_t size_aligned = ENG_ALIGN_UP(ENG_MAX(size, (size_t)1), (size_t)RING_CACHE_LINE_SIZE);
	ENG_ASSERT(size_aligned >= size);
	void *memory = aligned_alloc(RING_CACHE_LINE_SIZE, size_aligned);
	if (memory == NULL)
		return NULL;
	memset(memory, 0, size_aligned);
	return memory;
}

struct ring_spsc *
ring_spsc_create(uint32_t capacity)
{
	ring_spsc_assert_capacity(capacity);
	size_t size = sizeof(struct ring_spsc) + (size_t)capacity * sizeof(struct ring_mail);
	struct ring_spsc *queue = ring_mailbox_alloc_lines(size);
	if (queue == NULL)
		return NULL;
	/* The slots follow the header, which is a whole number of lines. */
	ring_spsc_init(queue, (struct ring_mail *)(void *)(queue + 1), capacity);
	return queue;
}

void
ring_spsc_destroy(struct ring_spsc *queue)
{
	if (queue == NULL)
		return;
	ENG_ASSERT(queue->slots == (struct ring_mail *)(void *)(queue + 1));
	ring_spsc_deinit(queue);
	free(queue);
}

/* Copy n items into the slots starting at counter tail (wraps once at most). */
static void
ring_spsc_copy_in(struct ring_spsc *queue, uint64_t tail, const struct ring_mail *mails,
		  uint32_t n)
{
	uint32_t start = (uint32_t)(tail & queue->mask);
	uint32_t first = ENG_MIN(n, queue->capacity - start);
	memcpy(&queue->slots[start], mails, (size_t)first * sizeof(*mails));
	if (first < n)
		memcpy(queue->slots, mails + first, (size_t)(n - first) * sizeof(*mails));
}

static void
ring_spsc_copy_out(const struct ring_spsc *queue, uint64_t head, struct ring_mail *mails,
		   uint32_t n)
{
	uint32_t start = (uint32_t)(head & queue->mask);
	uint32_t first = ENG_MIN(n, queue->capacity - start);
	memcpy(mails, &queue->slots[start], (size_t)first * sizeof(*mails));
	if (first < n)
		memcpy(mails + first, queue->slots, (size_t)(n - first) * sizeof(*mails));
}

uint32_t
ring_spsc_push_many(struct ring_spsc *queue, const struct ring_mail *mails, uint32_t count)
{
	ENG_ASSERT(queue->slots != NULL);
	ENG_ASSERT(mails != NULL || count == 0);
	uint64_t tail = atomic_load_explicit(&queue->tail, memory_order_relaxed);
	uint64_t used = tail - queue->head_cached;
	ENG_ASSERT(used <= queue->capacity);
	if (queue->capacity - used < count) {
		/* Acquire: the consumer's copies out of these slots are done. */
		queue->head_cached = atomic_load_explicit(&queue->head, memory_order_acquire);
		used = tail - queue->head_cached;
		ENG_ASSERT(used <= queue->capacity);
	}
	uint32_t n = ENG_MIN(count, queue->capacity - (uint32_t)used);
	if (n == 0)
		return 0;
	ring_spsc_copy_in(queue, tail, mails, n);
	/* Release: the slot copies above are visible before the new tail. */
	atomic_store_explicit(&queue->tail, tail + n, memory_order_release);
	return n;
}

bool
ring_spsc_push(struct ring_spsc *queue, const struct ring_mail *mail)
{
	ENG_ASSERT(mail != NULL);
	return ring_spsc_push_many(queue, mail, 1) == 1;
}

uint32_t
ring_spsc_pop_many(struct ring_spsc *queue, struct ring_mail *mails, uint32_t count_max)
{
	ENG_ASSERT(queue->slots != NULL);
	ENG_ASSERT(mails != NULL || count_max == 0);
	uint64_t head = atomic_load_explicit(&queue->head, memory_order_relaxed);
	uint64_t ready = queue->tail_cached - head;
	ENG_ASSERT(ready <= queue->capacity);
	if (ready < count_max) {
		/* Acquire: pairs with the producer's release of tail. */
		queue->tail_cached = atomic_load_explicit(&queue->tail, memory_order_acquire);
		ready = queue->tail_cached - head;
		ENG_ASSERT(ready <= queue->capacity);
	}
	uint32_t n = ENG_MIN(count_max, (uint32_t)ready);
	if (n == 0)
		return 0;
	ring_spsc_copy_out(queue, head, mails, n);
	/* Release: our copies out are done before the producer reuses slots. */
	atomic_store_explicit(&queue->head, head + n, memory_order_release);
	return n;
}

bool
ring_spsc_pop(struct ring_spsc *queue, struct ring_mail *mail)
{
	ENG_ASSERT(mail != NULL);
	return ring_spsc_pop_many(queue, mail, 1) == 1;
}

uint32_t
ring_spsc_capacity(const struct ring_spsc *queue)
{
	ENG_ASSERT(queue->slots != NULL);
	return queue->capacity;
}

uint32_t
ring_spsc_count(const struct ring_spsc *queue)
{
	ENG_ASSERT(queue->slots != NULL);
	/* head first: tail only grows, so tail >= head holds for the pair. */
	uint64_t head = atomic_load_explicit(&queue->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&queue->tail, memory_order_acquire);
	ENG_ASSERT(tail >= head);
	return (uint32_t)ENG_MIN(tail - head, (uint64_t)queue->capacity);
}

/* Consumer only: anything to pop? Reloads tail, unlike pop's fast path. */
static bool
ring_spsc_consumer_has_mail(struct ring_spsc *queue)
{
	uint64_t head = atomic_load_explicit(&queue->head, memory_order_relaxed);
	queue->tail_cached = atomic_load_explicit(&queue->tail, memory_order_acquire);
	ENG_ASSERT(queue->tail_cached - head <= queue->capacity);
	return queue->tail_cached != head;
}

/* Producer only: room for one more item? Reloads head. */
static bool
ring_spsc_producer_has_space(struct ring_spsc *queue)
{
	uint64_t tail = atomic_load_explicit(&queue->tail, memory_order_relaxed);
	queue->head_cached = atomic_load_explicit(&queue->head, memory_order_acquire);
	ENG_ASSERT(tail - queue->head_cached <= queue->capacity);
	return tail - queue->head_cached < queue->capacity;
}

/* ---- Mesh ---- */

static uint64_t
ring_mailbox_bit(uint32_t shard_index)
{
	ENG_ASSERT(shard_index < RING_MAILBOX_SHARDS_MAX);
	return 1ull << shard_index;
}

static struct ring_mailbox_shard *
ring_mailbox_shard_get(const struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	ENG_ASSERT(mesh != NULL);
	ENG_ASSERT(shard_index < mesh->shard_count);
	struct ring_mailbox_shard *shard = &mesh->shards[shard_index];
	ENG_ASSERT(shard->index == shard_index);
	return shard;
}

static struct ring_mailbox_link *
ring_mailbox_link_get(const struct ring_mailbox_mesh *mesh, uint32_t from_shard_index,
		      uint32_t to_shard_index)
{
	ENG_ASSERT(from_shard_index < mesh->shard_count);
	ENG_ASSERT(to_shard_index < mesh->shard_count);
	ENG_ASSERT(from_shard_index != to_shard_index);
	return &mesh->links[(size_t)from_shard_index * mesh->shard_count + to_shard_index];
}

static void
ring_mailbox_mesh_init_links(struct ring_mailbox_mesh *mesh)
{
	size_t slot_index = 0;
	for (uint32_t from = 0; from < mesh->shard_count; from++) {
		for (uint32_t to = 0; to < mesh->shard_count; to++) {
			if (from == to)
				continue;
			struct ring_mailbox_link *link = ring_mailbox_link_get(mesh, from, to);
			ring_spsc_init(&link->queue, &mesh->slots[slot_index],
				       mesh->queue_capacity);
			atomic_init(&link->producer_waiting, 0);
			slot_index += mesh->queue_capacity;
		}
	}
	ENG_ASSERT(slot_index ==
		   (size_t)mesh->shard_count * (mesh->shard_count - 1) * mesh->queue_capacity);
}

struct ring_mailbox_mesh *
ring_mailbox_mesh_create(uint32_t shard_count, uint32_t queue_capacity)
{
	ENG_ASSERT(shard_count >= 1);
	ENG_ASSERT(shard_count <= RING_MAILBOX_SHARDS_MAX);
	ring_spsc_assert_capacity(queue_capacity);
	struct ring_mailbox_mesh *mesh = calloc(1, sizeof(*mesh));
	if (mesh == NULL)
		return NULL;
	mesh->shard_count = shard_count;
	mesh->queue_capacity = queue_capacity;
	size_t link_count = (size_t)shard_count * shard_count;
	size_t slot_count = (size_t)shard_count * (shard_count - 1) * queue_capacity;
	mesh->shards = ring_mailbox_alloc_lines(shard_count * sizeof(struct ring_mailbox_shard));
	mesh->links = ring_mailbox_alloc_lines(link_count * sizeof(struct ring_mailbox_link));
	mesh->slots = ring_mailbox_alloc_lines(slot_count * sizeof(struct ring_mail));
	if (mesh->shards == NULL || mesh->links == NULL || mesh->slots == NULL) {
		ring_mailbox_mesh_destroy(mesh);
		return NULL;
	}
	for (uint32_t i = 0; i < shard_count; i++) {
		struct ring_mailbox_shard *shard = &mesh->shards[i];
		atomic_init(&shard->sleeping, 0);
		shard->ring_fd = -1;
		shard->mesh = mesh;
		shard->index = i;
	}
	ring_mailbox_mesh_init_links(mesh);
	return mesh;
}

void
ring_mailbox_mesh_destroy(struct ring_mailbox_mesh *mesh)
{
	if (mesh == NULL)
		return;
	for (uint32_t i = 0; mesh->shards != NULL && i < mesh->shard_count; i++)
		ENG_ASSERT(!mesh->shards[i].sleep_prepared);
	free(mesh->slots);
	free(mesh->links);
	free(mesh->shards);
	free(mesh);
}

uint32_t
ring_mailbox_shard_count(const struct ring_mailbox_mesh *mesh)
{
	ENG_ASSERT(mesh != NULL);
	return mesh->shard_count;
}

/* A wake CQE posted by another shard: its only job was to end the wait. */
static void
ring_mailbox_wake_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct ring_mailbox_shard *shard = op->ctx;
	ENG_ASSERT(op == &shard->wake_op);
	ENG_ASSERT(res >= 0);
	ENG_ASSERT((uint32_t)res < shard->mesh->shard_count);
	ENG_ASSERT((uint32_t)res != shard->index);
	shard->stats.wakes_received++;
}

static void
ring_mailbox_flush_hook(void *ctx)
{
	struct ring_mailbox_shard *shard = ctx;
	ENG_ASSERT(shard != NULL);
	(void)ring_mailbox_flush(shard->mesh, shard->index);
}

void
ring_mailbox_attach(struct ring_mailbox_mesh *mesh, uint32_t shard_index, struct ring *ring)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(ring != NULL);
	ENG_ASSERT(shard->ring == NULL);
	ENG_ASSERT(ring_caps_get(ring)->msg_ring);
	shard->ring = ring;
	shard->ring_fd = ring_fd(ring);
	ENG_ASSERT(shard->ring_fd >= 0);
	ring_op_msg_target_init(&shard->wake_op, ring_mailbox_wake_callback, shard);
	ring_add_hook(ring, ring_mailbox_flush_hook, shard);
}

/* Producer side of back pressure: the link to to_shard_index is full. The
 * store is ordered before prepare_sleep's fence by program order, and the
 * consumer reads it after its own fence (ring_mailbox_note_space). */
static void
ring_mailbox_blocked_set(struct ring_mailbox_shard *shard, struct ring_mailbox_link *link,
			 uint32_t to_shard_index)
{
	uint64_t bit = ring_mailbox_bit(to_shard_index);
	if ((shard->blocked_mask & bit) != 0)
		return;
	shard->blocked_mask |= bit;
	atomic_store_explicit(&link->producer_waiting, 1, memory_order_relaxed);
}

/* The link has room again (a push went through, or prepare_sleep saw it). */
static void
ring_mailbox_blocked_clear(struct ring_mailbox_shard *shard, struct ring_mailbox_link *link,
			   uint32_t to_shard_index)
{
	uint64_t bit = ring_mailbox_bit(to_shard_index);
	if ((shard->blocked_mask & bit) == 0)
		return;
	shard->blocked_mask &= ~bit;
	atomic_store_explicit(&link->producer_waiting, 0, memory_order_relaxed);
}

uint32_t
ring_mailbox_send(struct ring_mailbox_mesh *mesh, uint32_t from_shard_index,
		  uint32_t to_shard_index, const struct ring_mail *mails, uint32_t count)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, from_shard_index);
	struct ring_mailbox_link *link =
		ring_mailbox_link_get(mesh, from_shard_index, to_shard_index);
	ENG_ASSERT(shard->ring != NULL);
	ENG_ASSERT(count > 0);
	uint32_t pushed = ring_spsc_push_many(&link->queue, mails, count);
	ENG_ASSERT(pushed <= count);
	if (pushed > 0)
		shard->wake_pending_mask |= ring_mailbox_bit(to_shard_index);
	if (pushed < count) {
		shard->stats.sends_short++;
		ring_mailbox_blocked_set(shard, link, to_shard_index);
	} else {
		ring_mailbox_blocked_clear(shard, link, to_shard_index);
	}
	shard->stats.mails_sent += pushed;
	return pushed;
}

/* Waker side: take the target's sleeping flag if it is set. */
static bool
ring_mailbox_claim_sleeper(struct ring_mailbox_shard *target)
{
	/* Relaxed load after the caller's seq_cst fence: the cheap test. */
	if (atomic_load_explicit(&target->sleeping, memory_order_relaxed) == 0)
		return false;
	/* Acquire pairs with prepare_sleep's release: attach's writes of
	 * ring_fd and wake_op are visible. Only one waker wins a sleep. */
	return atomic_exchange_explicit(&target->sleeping, 0, memory_order_acquire) != 0;
}

/* Queue one fire-and-forget msg_ring CQE into target's ring. */
static bool
ring_mailbox_post_wake(struct ring_mailbox_shard *shard, struct ring_mailbox_shard *target)
{
	uint64_t bit = ring_mailbox_bit(target->index);
	ENG_ASSERT(target != shard);
	ENG_ASSERT(target->ring_fd >= 0);
	int ret = ring_prep_msg(shard->ring, NULL, target->ring_fd, &target->wake_op,
				(int32_t)shard->index);
	if (ret < 0) {
		/* No SQE even after flushing the SQ. We hold the claim, so the
		 * flag will not ask again: owe the wake until a flush succeeds.
		 * XXX: if this flush ran from the hook of a turn about to wait
		 * forever, the wake waits for that turn to end. */
		shard->wake_forced_mask |= bit;
		shard->stats.wake_prep_failures++;
		return false;
	}
	shard->wake_forced_mask &= ~bit;
	shard->stats.wakes_sent++;
	return true;
}

uint32_t
ring_mailbox_flush(struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(shard->ring != NULL);
	uint64_t pending = shard->wake_pending_mask | shard->wake_forced_mask;
	if (pending == 0)
		return 0;
	ENG_ASSERT((pending & ring_mailbox_bit(shard_index)) == 0);
	shard->wake_pending_mask = 0;
	/* Partner of prepare_sleep's fence: our tail (send) and head (drain)
	 * stores are above, the sleeping loads below. */
	atomic_thread_fence(memory_order_seq_cst);
	uint32_t prepared = 0;
	/* Bounded: one pass per set bit, at most RING_MAILBOX_SHARDS_MAX. */
	while (pending != 0) {
		uint32_t target_index = (uint32_t)__builtin_ctzll(pending);
		uint64_t bit = ring_mailbox_bit(target_index);
		pending &= ~bit;
		ENG_ASSERT(target_index < mesh->shard_count);
		struct ring_mailbox_shard *target = &mesh->shards[target_index];
		bool forced = (shard->wake_forced_mask & bit) != 0;
		if (!forced && !ring_mailbox_claim_sleeper(target))
			continue;
		if (ring_mailbox_post_wake(shard, target))
			prepared++;
	}
	return prepared;
}

/*
 * Consumer side of back pressure: after popping from link, schedule a wake
 * check for its producer if it is blocked on this link.
 *
 * The mark is only read here, never cleared. Clearing it ("consume the
 * request") loses wakes: the pops that preceded our fence may be ones the
 * producer had already seen and refilled before it set the mark, so the
 * producer's prepare_sleep finds the queue full again, sleeps, and no later
 * pop would see a mark. Left set, the mark is seen by the first pop the
 * producer did not see (Dekker), and wakes stay bounded by the producer's
 * sleeping flag: one per sleep.
 */
static void
ring_mailbox_note_space(struct ring_mailbox_shard *shard, struct ring_mailbox_link *link,
			uint32_t from_shard_index)
{
	/* Partner of the producer's prepare_sleep fence: our head store (in
	 * pop_many) is above, the producer_waiting load below. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&link->producer_waiting, memory_order_relaxed) == 0)
		return;
	shard->wake_pending_mask |= ring_mailbox_bit(from_shard_index);
}

static uint32_t
ring_mailbox_drain_link(struct ring_mailbox_mesh *mesh, struct ring_mailbox_shard *shard,
			uint32_t from_shard_index, uint32_t count_max, void *ctx,
			ring_mailbox_deliver_fn *deliver_callback)
{
	struct ring_mailbox_link *link =
		ring_mailbox_link_get(mesh, from_shard_index, shard->index);
	struct ring_mail batch[RING_MAILBOX_DELIVER_BATCH_MAX];
	uint32_t total = 0;
	/* Bounded: every pass pops at least one item, and total <= count_max. */
	while (total < count_max) {
		uint32_t want = ENG_MIN(count_max - total, RING_MAILBOX_DELIVER_BATCH_MAX);
		uint32_t got = ring_spsc_pop_many(&link->queue, batch, want);
		ENG_ASSERT(got <= want);
		if (got == 0)
			break;
		deliver_callback(ctx, from_shard_index, batch, got);
		total += got;
	}
	if (total > 0)
		ring_mailbox_note_space(shard, link, from_shard_index);
	return total;
}

uint32_t
ring_mailbox_drain(struct ring_mailbox_mesh *mesh, uint32_t shard_index, uint32_t count_max,
		   void *ctx, ring_mailbox_deliver_fn *deliver_callback)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(count_max > 0);
	ENG_ASSERT(deliver_callback != NULL);
	ENG_ASSERT(!shard->draining);
	shard->draining = true;
	uint32_t total = 0;
	uint32_t start = shard->drain_start_index;
	/* Round robin from a start that rotates per call, so one busy
	 * producer cannot starve the others across calls. */
	for (uint32_t step = 0; step < mesh->shard_count && total < count_max; step++) {
		uint32_t from = (start + step) % mesh->shard_count;
		if (from == shard_index)
			continue;
		total += ring_mailbox_drain_link(mesh, shard, from, count_max - total, ctx,
						 deliver_callback);
	}
	shard->drain_start_index = (start + 1) % mesh->shard_count;
	shard->draining = false;
	shard->stats.mails_received += total;
	ENG_ASSERT(total <= count_max);
	return total;
}

static bool
ring_mailbox_inbound_has_mail(struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	for (uint32_t from = 0; from < mesh->shard_count; from++) {
		if (from == shard_index)
			continue;
		struct ring_mailbox_link *link = ring_mailbox_link_get(mesh, from, shard_index);
		if (ring_spsc_consumer_has_mail(&link->queue))
			return true;
	}
	return false;
}

/* Any queue we found full that has room again? Forgets those that do, so a
 * caller that does not retry can still sleep next time. */
static bool
ring_mailbox_outbound_has_space(struct ring_mailbox_mesh *mesh, struct ring_mailbox_shard *shard)
{
	uint64_t blocked = shard->blocked_mask;
	bool space = false;
	/* Bounded: one pass per set bit. */
	while (blocked != 0) {
		uint32_t to = (uint32_t)__builtin_ctzll(blocked);
		uint64_t bit = ring_mailbox_bit(to);
		blocked &= ~bit;
		struct ring_mailbox_link *link = ring_mailbox_link_get(mesh, shard->index, to);
		if (ring_spsc_producer_has_space(&link->queue)) {
			ring_mailbox_blocked_clear(shard, link, to);
			space = true;
		}
	}
	return space;
}

bool
ring_mailbox_prepare_sleep(struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(shard->ring != NULL);
	ENG_ASSERT(!shard->sleep_prepared);
	ENG_ASSERT(!shard->draining);
	/* Release pairs with a waker's acquire in claim_sleeper. */
	atomic_store_explicit(&shard->sleeping, 1, memory_order_release);
	/* Partner of the fences in flush (inbound mail) and note_space
	 * (outbound space): flag store above, queue index loads below. */
	atomic_thread_fence(memory_order_seq_cst);
	if (ring_mailbox_inbound_has_mail(mesh, shard_index) ||
	    ring_mailbox_outbound_has_space(mesh, shard)) {
		atomic_store_explicit(&shard->sleeping, 0, memory_order_relaxed);
		shard->stats.sleeps_aborted++;
		return false;
	}
	shard->sleep_prepared = true;
	shard->stats.sleeps++;
	return true;
}

void
ring_mailbox_end_sleep(struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(shard->sleep_prepared);
	shard->sleep_prepared = false;
	/* A waker may have cleared it already; a late wake is harmless. */
	atomic_store_explicit(&shard->sleeping, 0, memory_order_relaxed);
}

int
ring_mailbox_run_once(struct ring_mailbox_mesh *mesh, uint32_t shard_index, uint64_t timeout_ns)
{
	struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	ENG_ASSERT(shard->ring != NULL);
	if (timeout_ns == 0 || !ring_mailbox_prepare_sleep(mesh, shard_index))
		return ring_run_once(shard->ring, 0);
	int ret = ring_run_once(shard->ring, timeout_ns);
	ring_mailbox_end_sleep(mesh, shard_index);
	return ret;
}

const struct ring_mailbox_stats *
ring_mailbox_stats_get(const struct ring_mailbox_mesh *mesh, uint32_t shard_index)
{
	const struct ring_mailbox_shard *shard = ring_mailbox_shard_get(mesh, shard_index);
	return &shard->stats;
}
