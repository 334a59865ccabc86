/*
 * ring_mailbox.h - cross-ring mailboxes for thread-per-core hand-off.
 *
 * Purpose. Each shard (one thread, one struct ring) owns its data; work moves
 * between shards as small fixed-size messages (struct ring_mail). This module
 * gives the two halves of the Seastar/Glommio hand-off pattern (io_uring.md
 * sections 5.1, 5.2, 5.4):
 *
 * - struct ring_spsc: a bounded single-producer single-consumer queue of
 *   ring_mail items. Power-of-two capacity fixed at init, C11 acquire/release
 *   atomics, producer and consumer indexes on separate 64-byte cache lines,
 *   and each side caches the other side's index so a batch costs one or two
 *   cache misses. A full queue accepts fewer items than offered (back
 *   pressure: the caller keeps the rest); an empty one yields fewer than
 *   asked. Nothing blocks and nothing allocates after init.
 *
 * - struct ring_mailbox_mesh: for N shards an N x N mesh of SPSC queues, one
 *   per ordered (from, to) pair with from != to, plus the wake-up protocol.
 *   A shard about to block in ring_run_once() announces it in a per-shard
 *   "sleeping" flag. A producer that pushed to a shard checks the flag once
 *   per loop turn (ring_mailbox_flush(), also installed as a ring hook) and,
 *   only if the target sleeps, claims the flag and posts one IORING_OP_MSG_RING
 *   CQE into the target's ring. No wake per item, no eventfd.
 *
 * The wake protocol (no lost wake-ups). Sleeper S and waker W run a Dekker
 * handshake with sequentially consistent fences on both sides:
 *
 *	S: sleeping = 1; fence(seq_cst); look at the queues; sleep if idle.
 *	W: publish (tail or head, release); fence(seq_cst); load sleeping;
 *	   if 1 and exchange(sleeping, 0) returned 1: post the msg_ring CQE.
 *
 * Either S's look sees W's publication (S does not sleep) or W's load sees
 * S's flag (W wakes S); both missing it is impossible under the C11 fence
 * rules. The exchange makes sure a sleep costs at most one wake CQE, however
 * many shards push to the sleeper. A wake that races with a sleeper which
 * changed its mind is spurious and harmless: the CQE makes one later
 * ring_run_once() return early.
 *
 * The same handshake runs in the other direction for back pressure: a
 * producer whose push came up short marks the link "producer waiting" and
 * keeps the mark until it sees room again; the consumer, after popping from
 * that link, fences and, if the mark is set, wakes the producer through the
 * producer's own sleeping flag. A sleeping producer therefore wakes when
 * space appears, and prepare_sleep refuses to sleep while an outbound queue
 * that was full has room again. The mark is a state the consumer only
 * reads; a consumer that cleared it as a one-shot request could spend it on
 * pops the producer had already refilled, and the wake would be lost.
 *
 * Invariants.
 * - Queue (from, to) has exactly one producer thread (shard from) and one
 *   consumer thread (shard to); every shard-indexed call below is made on the
 *   shard's own thread, the one that created and runs its ring.
 * - 0 <= tail - head <= capacity on every queue; head and tail only grow.
 * - A shard's sleeping flag is set only by its own ring_mailbox_prepare_sleep()
 *   and stays set at most until ring_mailbox_end_sleep(); other shards only
 *   clear it, by an exchange that obliges them to post exactly one wake.
 * - A link's "producer waiting" mark is 1 exactly while its producer has seen
 *   the queue full and not seen room since; only the producer writes it.
 * - Every wake is one CQE on the target ring; there is at most one per
 *   setting of the target's sleeping flag, so wakes are bounded by the
 *   target's loop turns, never by the number of items.
 * - Items in one queue arrive in push order, each exactly once.
 *
 * Ownership. The mesh owns all queue storage, allocated in
 * ring_mailbox_mesh_create() and freed in ring_mailbox_mesh_destroy(). Items
 * are copied in and out by value; a ring_mail's ptr is carried, never
 * dereferenced, and whatever it points to belongs to the protocol the two
 * shards agree on. ring_mailbox_attach() borrows the shard's ring until the
 * mesh is destroyed and installs a flush hook on it, so the mesh must outlive
 * every ring attached to it, and every shard must have stopped sending (all
 * its wake SQEs submitted) before any attached ring is destroyed.
 *
 * Errors: counts are returned; misuse (bad shard index, from == to, wrong
 * capacity) is a programmer error and fails an ENG_ASSERT.
 */
#ifndef RING_MAILBOX_H
#define RING_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct ring;

/* Destructive-interference size on x86-64 and most arm64 parts. */
#define RING_CACHE_LINE_SIZE 64
/* Bounds for one queue; 2^20 items of 32 bytes is 32 MiB per queue. */
#define RING_SPSC_CAPACITY_MIN 2u
#define RING_SPSC_CAPACITY_MAX (1u << 20)
/* Shard sets are 64-bit masks. */
#define RING_MAILBOX_SHARDS_MAX 64u
/* Items handed to a deliver callback at once (a stack buffer in drain). */
#define RING_MAILBOX_DELIVER_BATCH_MAX 64u

/* One message: 32 bytes, two per cache line. The meaning of the fields is
 * the sender's and receiver's business; the mailbox copies them verbatim. */
struct ring_mail {
	uint64_t a;
	uint64_t b;
	void *ptr;
	uint32_t kind;
	uint32_t aux;
};

/*
 * Bounded SPSC queue. Fields are private to ring_mailbox.c; the struct is
 * public only so callers can embed it. Each group sits on its own cache
 * line so the producer and the consumer never write the same line.
 */
struct ring_spsc {
	/* Producer's line: items pushed so far, and its view of head. */
	_Alignas(RING_CACHE_LINE_SIZE) _Atomic uint64_t tail;
	uint64_t head_cached;
	/* Consumer's line: items popped so far, and its view of tail. */
	_Alignas(RING_CACHE_LINE_SIZE) _Atomic uint64_t head;
	uint64_t tail_cached;
	/* Read-only after init; shared clean by both sides. */
	_Alignas(RING_CACHE_LINE_SIZE) struct ring_mail *slots;
	uint32_t capacity;
	uint32_t mask;
};

/* Initialise queue in place over caller-owned slots (capacity items, a power
 * of two in [RING_SPSC_CAPACITY_MIN, RING_SPSC_CAPACITY_MAX]). queue must be
 * RING_CACHE_LINE_SIZE-aligned. Borrows slots until ring_spsc_deinit(). */
void ring_spsc_init(struct ring_spsc *queue, struct ring_mail *slots, uint32_t capacity);
void ring_spsc_deinit(struct ring_spsc *queue);

/* Allocate a queue and its slots in one block; NULL when out of memory.
 * For tests and stand-alone use; the mesh allocates its own queues. */
struct ring_spsc *ring_spsc_create(uint32_t capacity);
void ring_spsc_destroy(struct ring_spsc *queue);

/* Producer only. Copies up to count items in order; returns how many were
 * taken (0..count). Fewer than count means the queue is full: the caller
 * keeps mails[result..count). */
uint32_t ring_spsc_push_many(struct ring_spsc *queue, const struct ring_mail *mails,
			     uint32_t count);
/* Producer only. Returns false when the queue is full. */
bool ring_spsc_push(struct ring_spsc *queue, const struct ring_mail *mail);

/* Consumer only. Copies up to count_max items out, oldest first; returns how
 * many (0 when empty). */
uint32_t ring_spsc_pop_many(struct ring_spsc *queue, struct ring_mail *mails,
			    uint32_t count_max);
/* Consumer only. Returns false when the queue is empty. */
bool ring_spsc_pop(struct ring_spsc *queue, struct ring_mail *mail);

uint32_t ring_spsc_capacity(const struct ring_spsc *queue);
/* Items queued. Exact on the producer or consumer thread when the other
 * side is idle, a snapshot otherwise. */
uint32_t ring_spsc_count(const struct ring_spsc *queue);

struct ring_mailbox_mesh;

/* Per-shard counters, written only by the shard's own thread. */
struct ring_mailbox_stats {
	uint64_t mails_sent;
	uint64_t mails_received;
	uint64_t sends_short;		/* sends that met a full queue */
	uint64_t wakes_sent;		/* msg_ring SQEs prepared */
	uint64_t wakes_received;	/* wake CQEs dispatched on this ring */
	uint64_t wake_prep_failures;	/* no SQE; retried at the next flush */
	uint64_t sleeps;		/* prepare_sleep returned true */
	uint64_t sleeps_aborted;	/* prepare_sleep found work */
};

/* Deliver callback for ring_mailbox_drain(): count (1..batch max) items from
 * shard from_shard_index, in order. mails is borrowed until return. It may
 * call ring_mailbox_send() but not ring_mailbox_drain(). */
typedef void ring_mailbox_deliver_fn(void *ctx, uint32_t from_shard_index,
				     const struct ring_mail *mails, uint32_t count);

/* Allocate a mesh of shard_count (1..RING_MAILBOX_SHARDS_MAX; 1 has no
 * queues) shards with queue_capacity (a power of two) items per ordered
 * pair. Returns NULL when out of memory. Call from any thread, before the
 * shards start. */
struct ring_mailbox_mesh *ring_mailbox_mesh_create(uint32_t shard_count, uint32_t queue_capacity);
/* Free the mesh. Every attached ring must be destroyed, or never run again,
 * first (its flush hook points into the mesh). NULL is a no-op. */
void ring_mailbox_mesh_destroy(struct ring_mailbox_mesh *mesh);
uint32_t ring_mailbox_shard_count(const struct ring_mailbox_mesh *mesh);

/* On shard_index's thread, once, before it sleeps or sends: bind the shard to
 * its ring, prepare its wake target op and install ring_mailbox_flush() as
 * a hook of ring (so wakes are checked at the start of every loop turn).
 * Other shards may push to it before this; they just will not wake it. */
void ring_mailbox_attach(struct ring_mailbox_mesh *mesh, uint32_t shard_index, struct ring *ring);

/* On from_shard_index's thread: push up to count (>= 1) items to
 * to_shard_index. Returns how many were queued; the caller keeps the rest
 * and retries later (the shard is woken when space appears if it sleeps
 * through ring_mailbox_run_once()). The target is woken, if it sleeps, at
 * the next flush, not here. */
uint32_t ring_mailbox_send(struct ring_mailbox_mesh *mesh, uint32_t from_shard_index,
			   uint32_t to_shard_index, const struct ring_mail *mails, uint32_t count);

/* On shard_index's thread: for every shard this one pushed to (or freed
 * space for) since the last flush, post one msg_ring wake if that shard is
 * sleeping. Returns the number of wake SQEs prepared; they go out with the
 * ring's next submit (at once when called from the ring hook). Runs
 * automatically at the start of every ring_run_once() after attach. */
uint32_t ring_mailbox_flush(struct ring_mailbox_mesh *mesh, uint32_t shard_index);

/* On shard_index's thread: pop at most count_max (>= 1) items from the
 * inbound queues, round-robin from a rotating start, and hand them to
 * deliver_callback in batches. Returns the number delivered. */
uint32_t ring_mailbox_drain(struct ring_mailbox_mesh *mesh, uint32_t shard_index,
			    uint32_t count_max, void *ctx,
			    ring_mailbox_deliver_fn *deliver_callback);

/*
 * On shard_index's thread, right before blocking in ring_run_once(): set the
 * sleeping flag and re-check the inbound queues and any outbound queue that
 * was full. Returns true when it is safe to block (a producer will wake the
 * ring); then ring_mailbox_end_sleep() must follow the wait. Returns false
 * (flag cleared) when mail is waiting or space has appeared.
 */
bool ring_mailbox_prepare_sleep(struct ring_mailbox_mesh *mesh, uint32_t shard_index);
void ring_mailbox_end_sleep(struct ring_mailbox_mesh *mesh, uint32_t shard_index);

/* One loop turn of the shard's ring that sleeps up to timeout_ns when no
 * mail is waiting: prepare_sleep, ring_run_once(timeout_ns), end_sleep; or
 * ring_run_once(0) when prepare_sleep says there is work. Returns what
 * ring_run_once returned (callbacks run, or -errno). */
int ring_mailbox_run_once(struct ring_mailbox_mesh *mesh, uint32_t shard_index,
			  uint64_t timeout_ns);

/* Counters of one shard. Read on the shard's thread, or after it stopped. */
const struct ring_mailbox_stats *ring_mailbox_stats_get(const struct ring_mailbox_mesh *mesh,
							 uint32_t shard_index);

#endif /* RING_MAILBOX_H */
