/*
 * eng_deliver.c - a shard's delivery loop, first slice (eng_deliver.h).
 *
 * Clocks (eng_clock.h): destinations, connection waits and the retry heap
 * use the monotonic clock (as eng_dest and eng_conn do), so a wall-clock
 * step neither makes every deferred job due nor holds them all back; the
 * journal gets wall-clock retry times (spool_outcome.time_ns, they survive
 * a restart), turned back into waits at recovery; expiry is judged on the
 * wall clock (reception + max_queue_lifetime), at each attempt.
 *
 * Bodies (docs/engine.md "Bodies and the retry heap"): a job's body_state
 * says where the bytes it sends come from. Invariants: a job queued on an
 * eng_dest (or in a transaction) is SHARED or LOADED; a LOADING job
 * belongs to the writer shard until its LOADED mail (its owner touches it
 * only then); loads_held counts this shard's jobs with a load, loads_out
 * those whose read is not back; body_bytes is charged exactly for the
 * bodies alive (injected ones by their writer, loads by their owner).
 */
#include "eng_deliver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_bounce.h"
#include "eng_clock.h"
#include "eng_common.h"
#include "eng_conn.h"
#include "eng_dest.h"
#include "eng_dns.h"
#include "eng_dsn.h"
#include "eng_heap.h"
#include "eng_log.h"
#include "eng_logfile.h"
#include "eng_node.h"
#include "ring/ring_mailbox.h"
#include "smtp/smtp_dot.h"

#define ENG_DELIVER_NS_PER_MS 1000000ull
/* Longest sleep of the schedule timer: a wake that moved earlier while a
 * timer was in flight is late by at most this. */
#define ENG_DELIVER_TIMER_MAX_NS (1000ull * ENG_DELIVER_NS_PER_MS)
#define ENG_DELIVER_TIMER_MIN_NS ENG_DELIVER_NS_PER_MS
/* No retry-heap key lies further ahead than this (retry steps are at most
 * 30 days, jitter at most doubles them; eng_clock_retry_due_ns clamps). */
#define ENG_DELIVER_WAIT_MAX_NS (366ull * 86400ull * 1000ull * ENG_DELIVER_NS_PER_MS)
/* Jobs of the message being recovered, searched for its domain. */
#define ENG_DELIVER_RECOVER_JOBS 64u
/* Transactions one READY may start when smtp_client refuses them locally. */
#define ENG_DELIVER_READY_TRIES 16u
/* Turns of eng_deliver_stop's drain (10 ms each). */
#define ENG_DELIVER_STOP_TURNS 3000u
/* Addresses kept per MX-routed destination, over all its hops in order
 * (Postfix smtp_mx_address_limit is 5; a primary and backups fit). */
#define ENG_DELIVER_MX_ADDRS_MAX 16u
/* The shard's DNS cache: MX and address answers together. */
#define ENG_DELIVER_DNS_CACHE_ENTRIES 4096u
/* A resolved route is kept at least this long, so a TTL of 0 does not
 * start a lookup for every job. */
#define ENG_DELIVER_ROUTE_TTL_MIN_NS (1000ull * ENG_DELIVER_NS_PER_MS)
/* The DNS server port when dns_servers gives none. */
#define ENG_DELIVER_DNS_PORT 53u
/* Mails popped per loop turn (the rest wait for the next turn). */
#define ENG_DELIVER_MAIL_TURN_MAX 4096u
/* Bodies read back (or being read) ahead of the connections, per shard,
 * at most: the per-destination window and the budget are the real
 * bounds; this one caps the count when bodies are tiny and destinations
 * many. */
#define ENG_DELIVER_PREFETCH_MAX 65536u
/* Read-ahead per destination: bodies read back (or being read) for its
 * jobs, at most BASE + PER_CONN x its connections (open or opening). A
 * connection has at most two messages in flight and a read takes well
 * under a round trip, so a few per connection keep it fed; due jobs past
 * the window wait, parked without a body, on their destination. Without
 * it, read-ahead in heap order fills the budget with bodies of
 * destinations that have no connection (1000 domains, 40 connections),
 * and every one of those pages is a fresh fault. */
#define ENG_DELIVER_DEST_WINDOW_BASE 4u
#define ENG_DELIVER_DEST_WINDOW_PER_CONN 8u
/* Reads in flight per shard (the SQ has room for the rest of the loop). */
#define ENG_DELIVER_READS_MAX 128u
/* Read-back buffers up to this size come from the shard's pool and go
 * back to it: no posix_memalign, fresh-page faults and free per read. */
#define ENG_DELIVER_READ_POOL_BUF_SIZE (64u * 1024u)
#define ENG_DELIVER_READ_POOL_MAX 64u /* kept at most: 4 MiB per shard */
/* Hosts remembered as TLS-broken (opportunistic fallback), per shard. */
#define ENG_DELIVER_TLS_BROKEN_MAX 64u

/* Mail kinds between shards (struct ring_mail.kind; ptr is the item). */
enum eng_deliver_mail_kind {
	ENG_DELIVER_MAIL_JOB = 1, /* writer -> owner: a job to deliver */
	ENG_DELIVER_MAIL_OUTCOME, /* owner -> writer: journal this outcome */
	ENG_DELIVER_MAIL_RELEASE, /* writer -> owner: outcome op done, back to its pool */
	ENG_DELIVER_MAIL_READ,	  /* owner -> writer: read this job's body from your spool */
	ENG_DELIVER_MAIL_LOADED,  /* writer -> owner: the read is done (job->load->result) */
};

_Static_assert(ENG_CONFIG_DNS_SERVERS_MAX <= ENG_DNS_SERVERS_MAX,
	       "every configured DNS server reaches the resolver");
_Static_assert(ENG_DELIVER_MX_ADDRS_MAX >= ENG_DNS_ADDR_MAX, "one hop's addresses fit");

enum eng_deliver_rcpt_state {
	ENG_DELIVER_RCPT_WAITING = 0, /* no reply yet in this attempt */
	ENG_DELIVER_RCPT_ACCEPTED,    /* RCPT 2xx: final reply still to come */
	ENG_DELIVER_RCPT_FINAL,	      /* delivered or bounced */
	ENG_DELIVER_RCPT_DEFERRED,    /* retried at the job's next attempt */
	ENG_DELIVER_RCPT_REJECTED,    /* RCPT 4xx/5xx, held until the final event */
};

struct eng_deliver_addr {
	char *ptr;
	uint32_t len;
};

/* One message: envelope copied from recovery or injection, immutable,
 * shared by its jobs and its outcome ops (refs). The body is in memory only
 * for an injected message (body != NULL), held by the jobs that may still
 * send it (body_refs) and charged to the writer's body_bytes; a recovered
 * message keeps only its location, and each job reads the record back
 * when it is about to be sent (struct eng_deliver_load). */
struct eng_deliver_msg {
	_Atomic uint32_t refs; /* jobs and outcome ops of any shard */
	_Atomic uint32_t body_refs; /* jobs holding body; 0: body freed (NULL or gone) */
	_Atomic uint64_t *body_account; /* the writer's body_bytes, charged body_size */
	uint32_t record_size; /* of the MESSAGE record: read buffers are sized by it */
	struct spool_location location; /* .shard: the writer, whose journal it is */
	uint64_t created_ns;
	uint32_t rcpt_count;
	struct eng_deliver_addr sender;
	struct eng_deliver_addr *rcpts; /* rcpt_count; NULL ptr: not ours */
	uint8_t *body;	    /* injected: in memory until body_refs drops to 0 */
	uint32_t body_size; /* always known (from the record) */
	bool needs_8bit;
	bool needs_smtputf8;
	char queue_id[SPOOL_QUEUE_ID_SIZE];
	/* 0, or the read-back error that quarantined the record (KRN-05):
	 * set once by the first job to fail, any shard; the message's other
	 * jobs are then quarantined without a read. */
	_Atomic int32_t quarantine_error;
};

struct eng_deliver_rcpt {
	uint32_t rcpt_index;
	/* Attempts counted so far (journaled with each outcome, restored by
	 * recovery): the next one logs deferrals + 1 and, if deferred, waits
	 * retry step deferrals + 1. At most SPOOL_ATTEMPTS_MAX. */
	uint32_t deferrals;
	enum eng_deliver_rcpt_state state;
	/* REJECTED: the RCPT reply, in one of the job's reserved ops, until
	 * the message's final event confirms it (or voids it: smtp_client.h). */
	struct eng_deliver_outcome *held;
};

struct eng_deliver_job;

/* One address of an MX-routed destination, and the hop it belongs to. */
struct eng_deliver_mx_addr {
	struct eng_dns_addr addr;
	uint32_t hop_index;
};

/* The shard's lists of destinations (FIFO, each destination at most once
 * on each). */
enum eng_deliver_dest_list_kind {
	ENG_DELIVER_DESTS_UNPARK = 0, /* parked jobs and room in the window */
	ENG_DELIVER_DESTS_BUSY,	      /* had queued jobs (the connection pass) */
	ENG_DELIVER_DESTS_KINDS,
};

struct eng_deliver_dest;

struct eng_deliver_dest_link {
	bool is_listed;
	struct eng_deliver_dest *next;
};

struct eng_deliver_dest_list {
	struct eng_deliver_dest *head;
	struct eng_deliver_dest *tail;
};

struct eng_deliver_dest {
	struct eng_dest dest;
	struct eng_deliver_dest *hash_next;
	struct eng_deliver_dest *all_next;
	/* MX routing, for a domain without a static route. The address list
	 * is a copy of the last OK route, so connections keep opening from
	 * it while a refresh is in flight. */
	bool is_resolving;		  /* route_query belongs to the cache */
	uint32_t mx_addr_count;		  /* 0: nothing resolved yet */
	uint32_t mx_addr_index;		  /* the next connection's address */
	uint32_t mx_failures;		  /* connect failures in a row */
	uint64_t mx_expires_ns;		  /* monotonic */
	struct eng_deliver_job *dns_wait; /* jobs parked until the lookup ends */
	/* Read-ahead (ENG_DELIVER_DEST_WINDOW_*): this destination's jobs
	 * with a load, and due jobs without a body waiting for room, oldest
	 * first (linked by retry_next). */
	uint32_t loads_held;
	uint32_t parked_count;
	struct eng_deliver_job *parked_head;
	struct eng_deliver_job *parked_tail;
	struct eng_deliver_dest_link links[ENG_DELIVER_DESTS_KINDS];
	struct eng_deliver_mx_addr mx_addrs[ENG_DELIVER_MX_ADDRS_MAX];
	char mx_hosts[ENG_DNS_MX_MAX][ENG_DNS_NAME_SIZE];
	/* XXX: about 9 KiB per destination; allocate it per lookup (or
	 * from a pool) when destinations number in the 100k. */
	struct eng_dns_route_query route_query;
};

struct eng_deliver_slot;
struct eng_deliver_load;

/* Where the body a job sends comes from. */
enum eng_deliver_body {
	ENG_DELIVER_BODY_NONE = 0, /* to be read back before the job is routed */
	ENG_DELIVER_BODY_SHARED,   /* msg->body, one of its body_refs */
	ENG_DELIVER_BODY_LOADING,  /* load in flight (on the writer shard) */
	ENG_DELIVER_BODY_LOADED,   /* load->read.message.body, verified */
};

/* A message's recipients of one domain, sent as one transaction. */
struct eng_deliver_job {
	struct eng_job job;
	struct eng_deliver_job *retry_next; /* new list, outboxes, DNS wait, loaded, parked */
	struct eng_deliver_msg *msg;
	enum eng_deliver_body body_state;
	struct eng_deliver_load *load; /* LOADING, LOADED */
	uint32_t mail_kind;		/* in an outbox's reads FIFO: READ or LOADED */
	struct eng_deliver_dest *dest; /* the owner shard's; NULL until adopted */
	struct eng_deliver_slot *slot;
	uint64_t next_attempt_ns; /* monotonic */
	uint32_t rcpt_count;
	uint32_t rcpt_capacity;
	uint32_t reserved; /* outcome ops reserved for this attempt */
	bool is_ended;	   /* in a slot: the message's final event came */
	struct smtp_message smtp;
	struct smtp_address *addrs;	  /* rcpt_capacity */
	struct eng_deliver_rcpt *rcpts; /* rcpt_capacity */
};

struct eng_deliver_slot {
	struct eng_conn conn;
	struct eng_deliver *deliver;
	struct eng_deliver_dest *dest;
	/* The jobs in the conn, oldest first: job, and job_next pipelined
	 * behind its dot (eng_conn.h). Each is finished at the first READY,
	 * PIPELINE_SLOT or CLOSED after its final event (is_ended): only then
	 * does no send read its body. */
	struct eng_deliver_job *job;
	struct eng_deliver_job *job_next;
	struct eng_deliver_slot *free_next;
	uint32_t messages_sent;
	bool is_up;
	bool is_waiting;
	uint64_t wake_ns; /* monotonic, while is_waiting */
	bool is_idle;		/* READY with nothing to send; counted in idle_connections */
	uint64_t idle_until_ns; /* monotonic, while is_idle: then QUIT */
	bool is_reclaimed;	/* idle, quit to give its slot to another destination */
	uint64_t connect_ms;
	bool is_mx;		/* connected to mx_addr_index of its dest */
	uint32_t mx_addr_index;
	char mx_host[ENG_DOMAIN_SIZE];
	enum smtp_client_tls_policy tls_policy; /* of the open connection */
	char tls_peer[ENG_DOMAIN_SIZE + 8];	/* "mx_host:port": TLS-broken key */
};

/*
 * A body read back for one job: allocated by the job's owner shard, the
 * read itself runs on the writer shard (only a spool's shard touches its
 * files), which mails the job back. The buffer is charged to the owner's
 * body_bytes until the body is dropped.
 */
struct eng_deliver_load {
	struct spool_read read; /* buf: 4096-aligned, rcpts: msg->rcpt_count */
	struct eng_deliver_job *job;
	struct eng_deliver *owner;
	struct eng_deliver *reader; /* the writer shard, once it has the job */
	int32_t result; /* of the read: 0, -EBADMSG, -EIO, ... */
	uint32_t charge; /* bytes charged to owner->body_bytes */
	uint8_t *body_copy; /* LOADED: the body alone (read buffers freed); NULL:
			     * out of memory for it, the body stays in read.buf */
};

struct eng_deliver_outcome {
	struct spool_append append;
	struct spool_outcome outcome;
	struct eng_deliver *deliver; /* the pool's shard (where the outcome was decided) */
	struct eng_deliver *writer;  /* the journal's shard, while it journals */
	struct eng_deliver_msg *msg;
	struct eng_deliver_outcome *free_next;
	struct eng_deliver_outcome *outbox_next;
	uint32_t mail_kind; /* in an outbox: OUTCOME or RELEASE */
	bool has_body;	    /* holds one of msg->body_refs (for its DSN) */
	/* A bounce of a read-back body (the job's own, gone with the job):
	 * a copy of its headers for the DSN, or NULL. */
	uint8_t *dsn_headers;
	uint32_t dsn_headers_len;
	enum eng_log_event event;
	uint32_t attempt;
	uint16_t code;
	struct eng_enhanced enhanced;
	uint32_t text_len;
	uint64_t connect_ms;
	uint64_t transaction_ms;
	char text[ENG_CONN_STATUS_TEXT_SIZE];
	char mx_host[ENG_DOMAIN_SIZE];
	char mx_ip[ENG_CONN_PEER_SIZE];
	/* The connection's TLS, for the log (has_tls false: "tls":null). */
	bool has_tls;
	bool tls_used;
	bool tls_verified;
	char tls_version[ENG_TLS_VERSION_SIZE];
	char tls_cipher[ENG_TLS_CIPHER_SIZE];
};

/* A host whose STARTTLS failed under opportunistic: plaintext until then. */
struct eng_deliver_tls_broken {
	uint64_t until_ns; /* monotonic; 0: free */
	char host[ENG_DOMAIN_SIZE + 8]; /* "mx_host:port" */
};

/* Mail waiting for room in one target shard's queue (FIFOs, intrusive:
 * bounded by the jobs and outcome ops that exist). */
struct eng_deliver_outbox {
	struct eng_deliver_outcome *ops_head;
	struct eng_deliver_outcome *ops_tail;
	struct eng_deliver_job *jobs_head;
	struct eng_deliver_job *jobs_tail;
	struct eng_deliver_job *reads_head; /* READ / LOADED: flushed while stopping too */
	struct eng_deliver_job *reads_tail;
};

struct eng_deliver {
	struct ring *ring;
	struct ring_mailbox_mesh *mesh; /* NULL: one shard, nothing to hand off */
	uint32_t shard_count;
	struct eng_deliver_outbox *outbox; /* shard_count */
	uint32_t outbox_ops;		   /* outcome ops in outboxes */
	struct eng_deliver_job *new_head;  /* written here, owner not chosen yet */
	struct eng_deliver_job *new_tail;
	bool is_aborting;		   /* stop: grace over, connections aborted */
	uint64_t grace_until_ns;	   /* monotonic */
	eng_deliver_drained_fn *drained_fn;
	void *drained_ctx;
	bool drained_told;
	struct ring_op cancel_op;
	const struct eng_config *const *config;
	struct eng_global_limit *node;
	uint32_t shard_index;
	struct spool *spool;
	struct eng_logfile log; /* not open: no delivery log */
	bool log_is_open;
	bool is_stopping;
	bool hook_added;
	uint32_t random_state;
	struct eng_bounce_table *bounce;
	struct eng_dns *dns;
	struct eng_dns_cache *dns_cache;
	struct eng_deliver_dest *buckets[ENG_DELIVER_DEST_BUCKETS];
	struct eng_deliver_dest *dests;
	struct eng_deliver_slot *slots;
	uint32_t slot_count; /* [engine] delivery_connections */
	struct eng_deliver_slot *free_slots;
	uint32_t slots_open;
	uint32_t reclaims_pending; /* is_reclaimed slots not yet CLOSED */
	uint32_t idle_slots;	   /* slots with is_idle */
	/* run_idle has work only when a job was queued since its last pass
	 * (queue_gen moved) or an idle_timeout is due (idle_next_ns). */
	uint64_t queue_gen;
	uint64_t idle_scan_gen;
	uint64_t idle_next_ns; /* monotonic; the earliest idle_until_ns */
	struct eng_deliver_outcome *outcomes;
	struct eng_deliver_outcome *free_outcomes;
	uint32_t outcomes_never_used; /* outcomes[n..] not yet taken: untouched pages */
	uint32_t outcomes_free;
	uint32_t outcomes_reserved;
	struct eng_heap retry; /* jobs by next_attempt_ns (monotonic) */
	/* Bodies: bytes held by this shard (injected bodies it wrote, bodies
	 * read back for its jobs), against memory_budget / shards. The
	 * counter is the node's (struct eng_shard): a body this shard wrote
	 * may be freed by another shard after this one is destroyed. */
	_Atomic uint64_t *body_bytes;
	uint64_t body_budget;
	uint32_t prefetch_max;	/* loads held at most (LOADING + LOADED jobs) */
	uint32_t loads_held;	/* jobs of this shard with a load */
	uint32_t loads_out;	/* of which the read is not back yet */
	/* UNPARK: destinations with parked jobs and room in their window.
	 * BUSY: those that had queued jobs (the empty ones leave as the
	 * connection pass meets them): that pass walks these, not every
	 * destination of the shard each loop turn (500 of them for 1000
	 * domains, 13% of the daemon's samples end to end). */
	struct eng_deliver_dest_list dest_lists[ENG_DELIVER_DESTS_KINDS];
	/* Idle read-back buffers of ENG_DELIVER_READ_POOL_BUF_SIZE bytes,
	 * block aligned; only this shard's thread takes and returns them. */
	void *read_pool[ENG_DELIVER_READ_POOL_MAX];
	uint32_t read_pool_count;
	struct eng_deliver_job *loaded_head; /* read back: routed next turn */
	struct eng_deliver_job *loaded_tail;
	struct eng_deliver_msg *recover_msg;
	uint32_t recover_job_count;
	struct eng_deliver_job *recover_jobs[ENG_DELIVER_RECOVER_JOBS];
	/* Clocks read once for recovered retry times, so equal ones group. */
	uint64_t recover_real_ns;
	uint64_t recover_mono_ns; /* 0: not read yet */
	struct ring_op timer_op;
	struct eng_deliver_stats stats;
	/* Outbound TLS: the shard's client context and session cache. */
	struct eng_tls_ctx *tls_ctx;
	struct eng_tls_session_cache *tls_cache;
	struct eng_deliver_tls_broken tls_broken[ENG_DELIVER_TLS_BROKEN_MAX];
	char log_buf[ENG_LOG_LINE_SIZE_MAX];
};

static void eng_deliver_hook(void *ctx);

/* ---- messages, destinations, jobs ---- */

static void
eng_deliver_body_charge(_Atomic uint64_t *account, uint64_t bytes)
{
	atomic_fetch_add_explicit(account, bytes, memory_order_relaxed);
}

static void
eng_deliver_body_uncharge(_Atomic uint64_t *account, uint64_t bytes)
{
	uint64_t before = atomic_fetch_sub_explicit(account, bytes, memory_order_relaxed);
	ENG_ASSERT(before >= bytes);
}

/* Free an in-memory body (its holders are gone) and uncharge its writer. */
static void
eng_deliver_msg_body_free(struct eng_deliver_msg *msg)
{
	if (msg->body == NULL)
		return;
	eng_deliver_body_uncharge(msg->body_account, msg->body_size);
	free(msg->body);
	msg->body = NULL;
}

/* Take one more hold on msg->body; the caller already holds one. */
static void
eng_deliver_msg_body_ref(struct eng_deliver_msg *msg)
{
	ENG_ASSERT(msg->body != NULL);
	uint32_t before = atomic_fetch_add_explicit(&msg->body_refs, 1, memory_order_relaxed);
	ENG_ASSERT(before > 0 && before < UINT32_MAX);
}

/* Drop a hold on msg->body: the last one frees it (any shard). Only
 * holders read msg->body, so nobody sees it go. */
static void
eng_deliver_msg_body_release(struct eng_deliver_msg *msg)
{
	uint32_t before = atomic_fetch_sub_explicit(&msg->body_refs, 1, memory_order_acq_rel);
	ENG_ASSERT(before > 0);
	if (before == 1)
		eng_deliver_msg_body_free(msg);
}

static void
eng_deliver_msg_unref(struct eng_deliver_msg *msg)
{
	ENG_ASSERT(msg != NULL);
	uint32_t before = atomic_fetch_sub_explicit(&msg->refs, 1, memory_order_acq_rel);
	ENG_ASSERT(before > 0);
	if (before > 1)
		return;
	for (uint32_t i = 0; i < msg->rcpt_count; i++)
		free(msg->rcpts[i].ptr);
	free(msg->rcpts);
	free(msg->sender.ptr);
	eng_deliver_msg_body_free(msg); /* holds never taken (out of memory) */
	free(msg);
}

static void
eng_deliver_msg_ref(struct eng_deliver_msg *msg)
{
	uint32_t before = atomic_fetch_add_explicit(&msg->refs, 1, memory_order_relaxed);
	ENG_ASSERT(before > 0 && before < UINT32_MAX);
}

/* Copy the envelope of view (recipients are copied by the caller, those
 * it needs), and its body only when account is not NULL (an injected
 * message: charged to account, one body hold for the caller). A recovered
 * message keeps no body: its jobs read the record back. One reference, the
 * caller's. */
static struct eng_deliver_msg *
eng_deliver_msg_create(const struct spool_location *loc, const struct spool_message *view,
		       _Atomic uint64_t *account)
{
	ENG_ASSERT(view->rcpt_count > 0);
	struct eng_deliver_msg *msg = calloc(1, sizeof(*msg));
	if (msg == NULL)
		return NULL;
	atomic_init(&msg->refs, 1);
	atomic_init(&msg->body_refs, account != NULL ? 1u : 0u);
	msg->body_account = account;
	msg->record_size = spool_message_record_size(view);
	ENG_ASSERT(msg->record_size > 0); /* it was stored, so it is within bounds */
	msg->location = *loc;
	msg->created_ns = view->created_ns;
	msg->rcpt_count = view->rcpt_count;
	msg->rcpts = calloc(view->rcpt_count, sizeof(*msg->rcpts));
	msg->sender.ptr = malloc(view->sender.size + 1u);
	msg->body = account != NULL ? malloc(view->body.size + 1u) : NULL;
	if (msg->rcpts == NULL || msg->sender.ptr == NULL || (account != NULL && msg->body == NULL)) {
		free(msg->rcpts);
		free(msg->sender.ptr);
		free(msg->body);
		free(msg);
		return NULL;
	}
	if (view->sender.size > 0)
		memcpy(msg->sender.ptr, view->sender.data, view->sender.size);
	msg->sender.ptr[view->sender.size] = '\0';
	msg->sender.len = view->sender.size;
	if (msg->body != NULL && view->body.size > 0)
		memcpy(msg->body, view->body.data, view->body.size);
	if (msg->body != NULL)
		eng_deliver_body_charge(account, view->body.size);
	msg->body_size = view->body.size;
	msg->needs_8bit = smtp_dot_has_8bit(view->body.data, view->body.size);
	msg->needs_smtputf8 = smtp_dot_has_8bit(view->sender.data, view->sender.size);
	spool_queue_id_format(&msg->location, msg->queue_id);
	return msg;
}

static uint32_t
eng_deliver_domain_hash(const char *domain, size_t len)
{
	uint32_t hash = 2166136261u;
	for (size_t i = 0; i < len; i++)
		hash = (hash ^ (uint8_t)domain[i]) * 16777619u;
	return hash;
}

/* The destination of a (lowercase) domain, created on first use. */
static struct eng_deliver_dest *
eng_deliver_dest_get(struct eng_deliver *d, const char *domain, uint32_t len)
{
	ENG_ASSERT(len < ENG_DOMAIN_SIZE);
	uint32_t bucket = eng_deliver_domain_hash(domain, len) & (ENG_DELIVER_DEST_BUCKETS - 1u);
	for (struct eng_deliver_dest *e = d->buckets[bucket]; e != NULL; e = e->hash_next) {
		if (e->dest.domain_len == len && memcmp(e->dest.domain, domain, len) == 0)
			return e;
	}
	struct eng_deliver_dest *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	const struct eng_destination *settings = eng_config_destination(*d->config, domain, len);
	eng_dest_init(&e->dest, domain, len, settings, eng_now_monotonic_ns());
	e->hash_next = d->buckets[bucket];
	d->buckets[bucket] = e;
	e->all_next = d->dests;
	d->dests = e;
	return e;
}

static struct eng_deliver_job *
eng_deliver_job_create(struct eng_deliver_msg *msg, const struct eng_destination *settings)
{
	uint32_t capacity = settings->max_recipients_per_transaction;
	capacity = ENG_MIN(ENG_MAX(capacity, 1u), SMTP_RCPTS_PER_TRANSACTION_MAX);
	capacity = ENG_MIN(capacity, msg->rcpt_count);
	struct eng_deliver_job *job = calloc(1, sizeof(*job));
	if (job == NULL)
		return NULL;
	job->addrs = calloc(capacity, sizeof(*job->addrs));
	job->rcpts = calloc(capacity, sizeof(*job->rcpts));
	if (job->addrs == NULL || job->rcpts == NULL) {
		free(job->addrs);
		free(job->rcpts);
		free(job);
		return NULL;
	}
	job->rcpt_capacity = capacity;
	job->msg = msg;
	job->dest = NULL;
	eng_deliver_msg_ref(msg);
	if (msg->body != NULL) {
		eng_deliver_msg_body_ref(msg); /* the creator holds one */
		job->body_state = ENG_DELIVER_BODY_SHARED;
	}
	return job;
}

/* A block-aligned read-back buffer of at least size bytes: from the pool
 * when it is a pool-sized one (a new one is made pool-sized, so it can go
 * back), else its own allocation. NULL when out of memory. */
static void *
eng_deliver_read_buf_get(struct eng_deliver *d, uint32_t size)
{
	ENG_ASSERT(d->read_pool_count <= ENG_DELIVER_READ_POOL_MAX);
	if (size <= ENG_DELIVER_READ_POOL_BUF_SIZE) {
		if (d->read_pool_count > 0)
			return d->read_pool[--d->read_pool_count];
		size = ENG_DELIVER_READ_POOL_BUF_SIZE;
	}
	void *buf = NULL;
	return posix_memalign(&buf, SPOOL_BLOCK_SIZE, size) == 0 ? buf : NULL;
}

/* Give back a buffer from eng_deliver_read_buf_get(d, size), on d's
 * thread: kept while the pool has room and d is not stopping. */
static void
eng_deliver_read_buf_put(struct eng_deliver *d, void *buf, uint32_t size)
{
	if (buf == NULL)
		return;
	if (size <= ENG_DELIVER_READ_POOL_BUF_SIZE && !d->is_stopping &&
	    d->read_pool_count < ENG_DELIVER_READ_POOL_MAX) {
		d->read_pool[d->read_pool_count++] = buf;
		return;
	}
	free(buf);
}

/* ---- destination queues ---- */

static void eng_deliver_job_append(struct eng_deliver_job **head, struct eng_deliver_job **tail,
				   struct eng_deliver_job *job);

/* Append e to the shard's list of that kind, unless it is on it. */
static void
eng_deliver_dests_append(struct eng_deliver *d, enum eng_deliver_dest_list_kind kind,
			 struct eng_deliver_dest *e)
{
	ENG_ASSERT(kind < ENG_DELIVER_DESTS_KINDS);
	struct eng_deliver_dest_list *list = &d->dest_lists[kind];
	struct eng_deliver_dest_link *link = &e->links[kind];
	if (link->is_listed)
		return;
	link->is_listed = true;
	link->next = NULL;
	if (list->tail != NULL)
		list->tail->links[kind].next = e;
	else
		list->head = e;
	list->tail = e;
}

/* Take e, whose predecessor is prev (NULL: e is the head), off the list. */
static void
eng_deliver_dests_unlink(struct eng_deliver *d, enum eng_deliver_dest_list_kind kind,
			 struct eng_deliver_dest *prev, struct eng_deliver_dest *e)
{
	ENG_ASSERT(kind < ENG_DELIVER_DESTS_KINDS);
	struct eng_deliver_dest_list *list = &d->dest_lists[kind];
	struct eng_deliver_dest_link *link = &e->links[kind];
	ENG_ASSERT(link->is_listed);
	ENG_ASSERT(prev != NULL ? prev->links[kind].next == e : list->head == e);
	if (prev != NULL)
		prev->links[kind].next = link->next;
	else
		list->head = link->next;
	if (list->tail == e)
		list->tail = prev;
	link->is_listed = false;
	link->next = NULL;
}

/* Queue job on e (at the back, or back in front). */
static void
eng_deliver_queue(struct eng_deliver *d, struct eng_deliver_dest *e, struct eng_deliver_job *job,
		  bool is_front)
{
	if (is_front)
		eng_dest_push_front(&e->dest, &job->job);
	else
		eng_dest_push(&e->dest, &job->job);
	eng_deliver_dests_append(d, ENG_DELIVER_DESTS_BUSY, e);
	d->queue_gen++;
}

/* ---- read-ahead per destination ---- */

static uint32_t
eng_deliver_dest_window(const struct eng_deliver_dest *e)
{
	uint64_t window = ENG_DELIVER_DEST_WINDOW_BASE +
			  (uint64_t)ENG_DELIVER_DEST_WINDOW_PER_CONN * e->dest.connections.used;
	return (uint32_t)ENG_MIN(window, (uint64_t)UINT32_MAX);
}

static bool
eng_deliver_dest_has_room(const struct eng_deliver_dest *e)
{
	return e->loads_held < eng_deliver_dest_window(e);
}

/* e may have room for a parked job now (a load ended, a connection
 * opened): list it, its parked jobs are read next turn. */
static void
eng_deliver_unpark_note(struct eng_deliver *d, struct eng_deliver_dest *e)
{
	if (e->parked_head != NULL && eng_deliver_dest_has_room(e))
		eng_deliver_dests_append(d, ENG_DELIVER_DESTS_UNPARK, e);
}

static void
eng_deliver_park(struct eng_deliver_dest *e, struct eng_deliver_job *job)
{
	ENG_ASSERT(job->body_state == ENG_DELIVER_BODY_NONE && job->dest == e);
	eng_deliver_job_append(&e->parked_head, &e->parked_tail, job);
	e->parked_count++;
}

static struct eng_deliver_job *
eng_deliver_unpark(struct eng_deliver_dest *e)
{
	struct eng_deliver_job *job = e->parked_head;
	if (job == NULL)
		return NULL;
	ENG_ASSERT(e->parked_count > 0);
	e->parked_head = job->retry_next;
	if (e->parked_head == NULL)
		e->parked_tail = NULL;
	e->parked_count--;
	job->retry_next = NULL;
	return job;
}

/* The job no longer holds a body (a SHARED hold or a load read back, on
 * the job's owner shard); NONE: read back before its next attempt. */
static void
eng_deliver_job_drop_body(struct eng_deliver_job *job)
{
	ENG_ASSERT(job->body_state != ENG_DELIVER_BODY_LOADING);
	if (job->body_state == ENG_DELIVER_BODY_SHARED)
		eng_deliver_msg_body_release(job->msg);
	struct eng_deliver_load *load = job->load;
	if (load != NULL) {
		struct eng_deliver *owner = load->owner;
		ENG_ASSERT(owner->loads_held > 0);
		owner->loads_held--;
		struct eng_deliver_dest *e = job->dest;
		ENG_ASSERT(e != NULL && e->loads_held > 0);
		e->loads_held--;
		eng_deliver_unpark_note(owner, e);
		eng_deliver_body_uncharge(owner->body_bytes, load->charge);
		eng_deliver_read_buf_put(owner, load->read.buf, load->read.buf_size);
		free(load->read.rcpts);
		free(load->body_copy);
		free(load);
	}
	job->load = NULL;
	job->body_state = ENG_DELIVER_BODY_NONE;
}

static void
eng_deliver_job_free(struct eng_deliver_job *job)
{
	ENG_ASSERT(!job->job.queued);
	ENG_ASSERT(job->reserved == 0);
	eng_deliver_job_drop_body(job);
	eng_deliver_msg_unref(job->msg);
	free(job->addrs);
	free(job->rcpts);
	free(job);
}

/* Onto the retry heap, due at when_ns (monotonic). Out of memory for
 * the heap: the job is dropped, its recipients stay live in the spool and
 * the next start delivers them. */
static void
eng_deliver_retry_push(struct eng_deliver *d, struct eng_deliver_job *job, uint64_t when_ns)
{
	/* A wall-clock time here (~1.8e18) would wait for decades. */
	ENG_ASSERT(when_ns == UINT64_MAX ||
		   when_ns - ENG_MIN(when_ns, eng_now_monotonic_ns()) <= ENG_DELIVER_WAIT_MAX_NS);
	ENG_ASSERT(!job->job.queued);
	ENG_ASSERT(job->rcpt_count <= job->rcpt_capacity);
	ENG_ASSERT(job->body_state != ENG_DELIVER_BODY_LOADING);
	ENG_ASSERT(job->reserved == 0);
	job->next_attempt_ns = when_ns;
	job->retry_next = NULL;
	if (eng_heap_push(&d->retry, when_ns, job))
		return;
	d->stats.recipients_dropped += job->rcpt_count;
	eng_deliver_job_free(job);
}

/* ---- recovery, injection and the hand-off to owner shards ---- */

/* The domain part of an address: after its first '@' (all of it if none). */
static void
eng_deliver_domain_span(const char *ptr, size_t len, const char **domain, size_t *domain_len)
{
	const char *at = memchr(ptr, '@', len);
	size_t offset = at != NULL ? (size_t)(at - ptr) + 1 : len;
	*domain = ptr + offset;
	/* XXX: a domain over 253 bytes is cut; it cannot resolve anyway. */
	*domain_len = ENG_MIN(len - offset, (size_t)ENG_DOMAIN_SIZE - 1u);
}

/* Lowercase domain of an address into out; returns its length. */
static uint32_t
eng_deliver_domain_lower(const char *ptr, size_t len, char out[ENG_DOMAIN_SIZE])
{
	const char *domain;
	size_t domain_len;
	eng_deliver_domain_span(ptr, len, &domain, &domain_len);
	for (size_t i = 0; i < domain_len; i++) {
		char c = domain[i];
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	ENG_ASSERT(domain_len < ENG_DOMAIN_SIZE);
	out[domain_len] = '\0';
	return (uint32_t)domain_len;
}

/* The lowercase domain of a job (all its recipients share it). */
static uint32_t
eng_deliver_job_domain(const struct eng_deliver_job *job, char out[ENG_DOMAIN_SIZE])
{
	ENG_ASSERT(job->rcpt_count > 0);
	const struct eng_deliver_addr *addr = &job->msg->rcpts[job->rcpts[0].rcpt_index];
	return eng_deliver_domain_lower(addr->ptr, addr->len, out);
}

static bool
eng_deliver_domain_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
	if (a_len != b_len)
		return false;
	for (size_t i = 0; i < a_len; i++) {
		char x = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] - 'A' + 'a') : a[i];
		char y = b[i] >= 'A' && b[i] <= 'Z' ? (char)(b[i] - 'A' + 'a') : b[i];
		if (x != y)
			return false;
	}
	return true;
}

/* A job written here waits on the new list until the next loop turn,
 * which gives it to its owner (this shard or another). */
static void
eng_deliver_job_append(struct eng_deliver_job **head, struct eng_deliver_job **tail,
		       struct eng_deliver_job *job)
{
	ENG_ASSERT((*head == NULL) == (*tail == NULL));
	job->retry_next = NULL;
	if (*tail != NULL)
		(*tail)->retry_next = job;
	else
		*head = job;
	*tail = job;
}

static void
eng_deliver_new_push(struct eng_deliver *d, struct eng_deliver_job *job)
{
	eng_deliver_job_append(&d->new_head, &d->new_tail, job);
}

/* The job of msg for the domain of (rcpt, rcpt_len) and deferral time,
 * among the jobs of the message being queued; a new one if none fits. */
static struct eng_deliver_job *
eng_deliver_group_job(struct eng_deliver *d, struct eng_deliver_msg *msg, const char *rcpt,
		      size_t rcpt_len, uint64_t when_ns)
{
	const char *domain;
	size_t domain_len;
	eng_deliver_domain_span(rcpt, rcpt_len, &domain, &domain_len);
	for (uint32_t i = 0; i < d->recover_job_count; i++) {
		struct eng_deliver_job *job = d->recover_jobs[i];
		if (job->msg != msg || job->next_attempt_ns != when_ns ||
		    job->rcpt_count >= job->rcpt_capacity)
			continue;
		const struct eng_deliver_addr *first = &msg->rcpts[job->rcpts[0].rcpt_index];
		const char *other;
		size_t other_len;
		eng_deliver_domain_span(first->ptr, first->len, &other, &other_len);
		if (eng_deliver_domain_equal(domain, domain_len, other, other_len))
			return job;
	}
	char lower[ENG_DOMAIN_SIZE];
	uint32_t lower_len = eng_deliver_domain_lower(rcpt, rcpt_len, lower);
	const struct eng_destination *settings =
		eng_config_destination(*d->config, lower, lower_len);
	struct eng_deliver_job *job = eng_deliver_job_create(msg, settings);
	if (job == NULL)
		return NULL;
	job->next_attempt_ns = when_ns;
	eng_deliver_new_push(d, job);
	d->stats.jobs_created++;
	if (d->recover_job_count == ENG_DELIVER_RECOVER_JOBS)
		d->recover_job_count = 0; /* forget the oldest: only grouping suffers */
	d->recover_jobs[d->recover_job_count++] = job;
	return job;
}

static struct eng_deliver_msg *
eng_deliver_recover_msg(struct eng_deliver *d, const struct spool_recovered *rcpt)
{
	struct eng_deliver_msg *msg = d->recover_msg;
	if (msg != NULL && msg->location.segment_id == rcpt->location.segment_id &&
	    msg->location.offset == rcpt->location.offset &&
	    msg->location.shard == rcpt->location.shard)
		return msg;
	if (msg != NULL)
		eng_deliver_msg_unref(msg); /* the recovery's own reference */
	d->recover_msg = NULL;
	d->recover_job_count = 0;
	msg = eng_deliver_msg_create(&rcpt->location, rcpt->msg, NULL); /* no body */
	d->recover_msg = msg;
	return msg;
}

/* Copy recipient index of view into msg (once) and add it to a job of its
 * domain. Returns false when out of memory (it stays live in the spool). */
static bool
eng_deliver_queue_rcpt(struct eng_deliver *d, struct eng_deliver_msg *msg,
		       const struct spool_message *view, uint32_t index, uint64_t when_ns,
		       uint32_t deferrals)
{
	ENG_ASSERT(index < msg->rcpt_count);
	const struct spool_span *addr = &view->rcpts[index];
	struct eng_deliver_addr *copy = &msg->rcpts[index];
	if (copy->ptr == NULL) {
		copy->ptr = malloc(addr->size + 1u);
		if (copy->ptr == NULL)
			return false;
		memcpy(copy->ptr, addr->data, addr->size);
		copy->ptr[addr->size] = '\0';
		copy->len = addr->size;
	}
	struct eng_deliver_job *job =
		eng_deliver_group_job(d, msg, copy->ptr, copy->len, when_ns);
	if (job == NULL)
		return false;
	if (smtp_dot_has_8bit(addr->data, addr->size))
		msg->needs_smtputf8 = true;
	ENG_ASSERT(job->rcpt_count < job->rcpt_capacity);
	struct eng_deliver_rcpt *r = &job->rcpts[job->rcpt_count++];
	r->rcpt_index = index;
	r->deferrals = deferrals;
	r->state = ENG_DELIVER_RCPT_WAITING;
	return true;
}

/* A journaled retry time (wall clock) as a retry-heap key: the same wait
 * on the monotonic clock, at most the schedule's longest delay (a time
 * further ahead was written before the clock went back; SPL-11). */
static uint64_t
eng_deliver_recovered_due_ns(struct eng_deliver *d, uint64_t due_real_ns)
{
	if (d->recover_mono_ns == 0) {
		d->recover_real_ns = eng_clock_realtime_ns();
		d->recover_mono_ns = eng_now_monotonic_ns();
	}
	return eng_clock_retry_due_ns(due_real_ns, d->recover_real_ns, d->recover_mono_ns,
				      eng_clock_retry_max_ns(&(*d->config)->engine));
}

void
eng_deliver_recovered(struct eng_deliver *d, const struct spool_recovered *rcpt)
{
	ENG_ASSERT(d != NULL && rcpt != NULL);
	ENG_ASSERT(rcpt->rcpt_index < rcpt->msg->rcpt_count);
	d->stats.recipients_recovered++;
	struct eng_deliver_msg *msg = eng_deliver_recover_msg(d, rcpt);
	bool is_deferred = rcpt->state == SPOOL_RCPT_DEFERRED;
	/* The attempt count of its latest OUTCOME (version 2), so the log's
	 * attempt number and the retry schedule go on where they were. A
	 * version-1 record has none: a deferral there counts 1, as before. */
	uint32_t attempts = rcpt->attempts;
	if (attempts == SPOOL_ATTEMPTS_UNKNOWN)
		attempts = is_deferred ? 1u : 0u;
	attempts = ENG_MIN(attempts, SPOOL_ATTEMPTS_MAX);
	uint64_t due_ns = is_deferred ? eng_deliver_recovered_due_ns(d, rcpt->next_attempt_ns) : 0;
	if (msg == NULL || !eng_deliver_queue_rcpt(d, msg, rcpt->msg, rcpt->rcpt_index,
						   due_ns,
						   attempts)) {
		/* Out of memory at start-up: the recipient stays live in the
		 * spool and the next start tries again. */
		d->stats.recipients_dropped++;
	}
}

/* Take over a job whose domain this shard owns: onto its destination's
 * retry list. Out of memory: dropped (live in the spool until a restart). */
static void
eng_deliver_adopt(struct eng_deliver *d, struct eng_deliver_job *job)
{
	ENG_ASSERT(job->dest == NULL && !job->job.queued);
	char domain[ENG_DOMAIN_SIZE];
	uint32_t len = eng_deliver_job_domain(job, domain);
	job->dest = eng_deliver_dest_get(d, domain, len);
	if (job->dest == NULL) {
		d->stats.recipients_dropped += job->rcpt_count;
		eng_deliver_job_free(job);
		return;
	}
	d->stats.jobs_adopted++;
	eng_deliver_retry_push(d, job, job->next_attempt_ns);
}

static void
eng_deliver_outbox_job(struct eng_deliver *d, uint32_t owner, struct eng_deliver_job *job)
{
	struct eng_deliver_outbox *ob = &d->outbox[owner];
	eng_deliver_job_append(&ob->jobs_head, &ob->jobs_tail, job);
}

static void
eng_deliver_outbox_op(struct eng_deliver *d, uint32_t target, struct eng_deliver_outcome *op,
		      uint32_t kind)
{
	ENG_ASSERT(d->outbox != NULL && target < d->shard_count && target != d->shard_index);
	struct eng_deliver_outbox *ob = &d->outbox[target];
	op->mail_kind = kind;
	op->outbox_next = NULL;
	if (ob->ops_tail != NULL)
		ob->ops_tail->outbox_next = op;
	else
		ob->ops_head = op;
	ob->ops_tail = op;
	d->outbox_ops++;
}

/* A read request (READ, owner -> writer) or its answer (LOADED, writer ->
 * owner) waits for room in target's queue. */
static void
eng_deliver_outbox_read(struct eng_deliver *d, uint32_t target, struct eng_deliver_job *job,
			uint32_t kind)
{
	ENG_ASSERT(d->outbox != NULL && target < d->shard_count && target != d->shard_index);
	struct eng_deliver_outbox *ob = &d->outbox[target];
	job->mail_kind = kind;
	eng_deliver_job_append(&ob->reads_head, &ob->reads_tail, job);
}

/* Give every job written since the last turn to its owner shard. */
static void
eng_deliver_dispatch(struct eng_deliver *d)
{
	struct eng_deliver_job *list = d->new_head;
	d->new_head = NULL;
	d->new_tail = NULL;
	d->recover_job_count = 0; /* the jobs leave: no more grouping into them */
	/* Bounded: the list was detached; nothing below pushes onto it. */
	while (list != NULL) {
		struct eng_deliver_job *job = list;
		list = job->retry_next;
		job->retry_next = NULL;
		char domain[ENG_DOMAIN_SIZE];
		uint32_t len = eng_deliver_job_domain(job, domain);
		uint32_t owner = d->mesh != NULL ? eng_domain_owner(domain, len, d->shard_count)
						 : d->shard_index;
		if (owner == d->shard_index) {
			eng_deliver_adopt(d, job);
		} else {
			d->stats.jobs_handed_off++;
			eng_deliver_outbox_job(d, owner, job);
		}
	}
}

/* ---- outcomes and the delivery log ---- */

static bool
eng_deliver_reserve(struct eng_deliver *d, struct eng_deliver_job *job)
{
	ENG_ASSERT(job->reserved == 0);
	ENG_ASSERT(d->outcomes_reserved <= d->outcomes_free);
	if (d->outcomes_free - d->outcomes_reserved < job->rcpt_count)
		return false;
	d->outcomes_reserved += job->rcpt_count;
	job->reserved = job->rcpt_count;
	return true;
}

static void
eng_deliver_unreserve(struct eng_deliver *d, struct eng_deliver_job *job)
{
	ENG_ASSERT(d->outcomes_reserved >= job->reserved);
	d->outcomes_reserved -= job->reserved;
	job->reserved = 0;
}

static void
eng_deliver_log_write(struct eng_deliver *d, const struct eng_log_record *rec)
{
	size_t len = eng_log_format(rec, d->log_buf, sizeof(d->log_buf));
	ENG_ASSERT(len <= sizeof(d->log_buf));
	if (d->log_is_open)
		eng_logfile_append(&d->log, d->log_buf, len);
}

static void
eng_deliver_log_line(struct eng_deliver *d, const struct eng_deliver_outcome *op)
{
	const struct eng_deliver_msg *msg = op->msg;
	const struct eng_deliver_addr *rcpt = &msg->rcpts[op->outcome.rcpt_index];
	const char *at = memchr(rcpt->ptr, '@', rcpt->len);
	size_t domain_offset = at != NULL ? (size_t)(at - rcpt->ptr) + 1 : rcpt->len;
	uint64_t now_ns = eng_clock_realtime_ns();
	struct eng_log_record rec = {
		.event = op->event,
		.time_ns = now_ns,
		.queue_id = msg->queue_id,
		.queue_id_len = strlen(msg->queue_id),
		.sender = msg->sender.ptr,
		.sender_len = msg->sender.len,
		.recipient = rcpt->ptr,
		.recipient_len = rcpt->len,
		.domain = rcpt->ptr + domain_offset,
		.domain_len = rcpt->len - domain_offset,
		.mx_host = op->mx_host[0] != '\0' ? op->mx_host : NULL,
		.mx_host_len = strlen(op->mx_host),
		.mx_ip = op->mx_ip[0] != '\0' ? op->mx_ip : NULL,
		.mx_ip_len = strlen(op->mx_ip),
		.attempt = op->attempt,
		.code = op->code,
		.enhanced = op->enhanced,
		.text = op->text,
		.text_len = op->text_len,
		.queued_ms = now_ns > msg->created_ns ? (now_ns - msg->created_ns) / 1000000u : 0,
		.connect_ms = op->connect_ms,
		.transaction_ms = op->transaction_ms,
		.tls = NULL,
	};
	struct eng_log_tls tls = {
		.used = op->tls_used,
		.verified = op->tls_verified,
		.version = op->tls_used ? op->tls_version : NULL,
		.version_len = strlen(op->tls_version),
		.cipher = op->tls_used ? op->tls_cipher : NULL,
		.cipher_len = strlen(op->tls_cipher),
	};
	if (op->has_tls)
		rec.tls = &tls;
	if (op->event == ENG_LOG_EXPIRATION)
		rec.category = ENG_BOUNCE_MESSAGE_EXPIRED;
	else if (op->event != ENG_LOG_DELIVERY)
		rec.category = eng_bounce_classify(d->bounce, op->code, op->enhanced, op->text,
						   op->text_len, NULL);
	eng_deliver_log_write(d, &rec);
}

/* A free outcome op (a reservation guarantees one): a released one, else
 * the next never used (the pool's pages are touched as it grows). */
static struct eng_deliver_outcome *
eng_deliver_outcome_take(struct eng_deliver *d)
{
	struct eng_deliver_outcome *op = d->free_outcomes;
	if (op != NULL) {
		d->free_outcomes = op->free_next;
	} else {
		ENG_ASSERT(d->outcomes_never_used < ENG_DELIVER_OUTCOMES);
		op = &d->outcomes[d->outcomes_never_used++];
		op->deliver = d;
	}
	ENG_ASSERT(d->outcomes_free > 0);
	d->outcomes_free--;
	return op;
}

static void
eng_deliver_outcome_release(struct eng_deliver *d, struct eng_deliver_outcome *op)
{
	ENG_ASSERT(op->msg != NULL);
	ENG_ASSERT(op->deliver == d);
	if (op->has_body)
		eng_deliver_msg_body_release(op->msg);
	op->has_body = false;
	free(op->dsn_headers);
	op->dsn_headers = NULL;
	op->dsn_headers_len = 0;
	eng_deliver_msg_unref(op->msg);
	op->msg = NULL;
	op->writer = NULL;
	op->free_next = d->free_outcomes;
	d->free_outcomes = op;
	d->outcomes_free++;
	ENG_ASSERT(d->outcomes_free <= ENG_DELIVER_OUTCOMES);
}

/* The writer w is done with op: back to its pool, here or by mail. */
static void
eng_deliver_outcome_return(struct eng_deliver *w, struct eng_deliver_outcome *op)
{
	if (op->deliver == w)
		eng_deliver_outcome_release(w, op);
	else
		eng_deliver_outbox_op(w, op->deliver->shard_index, op, ENG_DELIVER_MAIL_RELEASE);
}

/* The journal acknowledged (or failed) an outcome record (on the writer). */
static void
eng_deliver_outcome_done(struct spool_append *append, int32_t result)
{
	struct eng_deliver_outcome *op =
		ENG_CONTAINER_OF(append, struct eng_deliver_outcome, append);
	struct eng_deliver *w = op->writer;
	ENG_ASSERT(w != NULL);
	if (result == 0)
		eng_deliver_log_line(w, op);
	else
		w->stats.outcome_errors++;
	eng_deliver_outcome_return(w, op);
}

/* A DSN being stored before the bounce it reports is journaled. */
struct eng_deliver_dsn {
	struct spool_append append;
	struct eng_deliver *writer;
	struct eng_deliver_outcome *op;
	struct spool_message message;
	struct spool_span rcpt;
	uint8_t *wire;
};

static void eng_deliver_journal_write(struct eng_deliver *w, struct eng_deliver_outcome *op);

static void
eng_deliver_dsn_free(struct eng_deliver_dsn *dsn)
{
	free(dsn->wire);
	free(dsn);
}

/* The DSN record is durable (or failed): queue it, then journal the bounce.
 * A DSN that could not be stored leaves the bounce unjournaled: the
 * recipient stays live and a restart tries it (and its DSN) again. */
static void
eng_deliver_dsn_stored(struct spool_append *append, int32_t result)
{
	struct eng_deliver_dsn *dsn = ENG_CONTAINER_OF(append, struct eng_deliver_dsn, append);
	struct eng_deliver *w = dsn->writer;
	struct eng_deliver_outcome *op = dsn->op;
	if (result == 0) {
		w->stats.dsns_stored++;
		eng_deliver_injected(w, &append->location, &dsn->message, NULL, NULL);
		eng_deliver_journal_write(w, op);
	} else {
		w->stats.dsn_errors++;
		eng_deliver_outcome_return(w, op);
	}
	eng_deliver_dsn_free(dsn);
}

/* The one-recipient DSN input for op (a bounce or an expiry). */
static void
eng_deliver_dsn_input(const struct eng_deliver *w, const struct eng_deliver_outcome *op,
		      struct eng_dsn_rcpt *rcpt, struct eng_dsn_message *in)
{
	const struct eng_deliver_msg *msg = op->msg;
	const struct eng_deliver_addr *addr = &msg->rcpts[op->outcome.rcpt_index];
	const char *hostname = (*w->config)->engine.hostname;
	*rcpt = (struct eng_dsn_rcpt){
		.addr = addr->ptr,
		.addr_len = addr->len,
		.is_expired = op->outcome.state == SPOOL_RCPT_EXPIRED,
		.reply_code = op->code,
		.reply_enhanced = op->enhanced,
		.reply_text = op->text,
		.reply_text_len = op->text_len,
		.remote_mta = op->mx_host[0] != '\0' ? op->mx_host : NULL,
		.remote_mta_len = strlen(op->mx_host),
		.last_attempt_ns = op->outcome.time_ns,
	};
	*in = (struct eng_dsn_message){
		.hostname = hostname,
		.hostname_len = strlen(hostname),
		.sender = msg->sender.ptr,
		.sender_len = msg->sender.len,
		.queue_id = msg->queue_id,
		.queue_id_len = strlen(msg->queue_id),
		.arrival_ns = msg->created_ns,
		.now_ns = eng_clock_realtime_ns(),
		.body = op->has_body ? msg->body : op->dsn_headers,
		.body_len = op->has_body ? msg->body_size : op->dsn_headers_len,
		.rcpts = rcpt,
		.rcpt_count = 1,
	};
}

/* Build op's DSN and write it to w's spool; its ack journals op. Returns
 * false when no DSN is due or it cannot be built (journal op at once). */
static bool
eng_deliver_dsn_write(struct eng_deliver *w, struct eng_deliver_outcome *op)
{
	struct eng_dsn_rcpt rcpt;
	struct eng_dsn_message in;
	eng_deliver_dsn_input(w, op, &rcpt, &in);
	size_t size = 0;
	if (eng_dsn_build(&in, NULL, 0, &size) != ENG_DSN_TOO_SMALL)
		return false; /* null sender */
	struct eng_deliver_dsn *dsn = calloc(1, sizeof(*dsn));
	uint8_t *wire = dsn != NULL ? malloc(size) : NULL;
	size_t len = 0;
	if (wire == NULL || eng_dsn_build(&in, wire, size, &len) != ENG_DSN_OK ||
	    len > UINT32_MAX) {
		free(wire);
		free(dsn);
		w->stats.dsn_errors++;
		return false;
	}
	dsn->writer = w;
	dsn->op = op;
	dsn->wire = wire;
	dsn->rcpt = (struct spool_span){ .data = (const uint8_t *)op->msg->sender.ptr,
					 .size = op->msg->sender.len };
	uint64_t now_ns = eng_clock_realtime_ns();
	dsn->message = (struct spool_message){ .created_ns = now_ns,
					       .expires_ns = 0,
					       .sender = { .data = NULL, .size = 0 },
					       .rcpt_count = 1,
					       .rcpts = &dsn->rcpt,
					       .body = { .data = wire, .size = (uint32_t)len } };
	dsn->append = (struct spool_append){ .callback = eng_deliver_dsn_stored,
					     .ctx = dsn,
					     .type = SPOOL_RECORD_MESSAGE,
					     .input.message = &dsn->message };
	if (spool_write_message(w->spool, &dsn->append) < 0) {
		eng_deliver_dsn_free(dsn);
		w->stats.dsn_errors++;
		return false;
	}
	return true;
}

/* On the message's writer shard w: journal op; its ack writes the log line.
 * A bounced or expired recipient of a message with a sender first gets its
 * DSN stored ([engine] dsn), then the outcome is journaled. */
static void
eng_deliver_journal(struct eng_deliver *w, struct eng_deliver_outcome *op)
{
	ENG_ASSERT(op->msg->location.shard == w->shard_index);
	ENG_ASSERT(w->spool != NULL);
	op->writer = w;
	uint16_t state = op->outcome.state;
	bool is_failed = state == SPOOL_RCPT_BOUNCED || state == SPOOL_RCPT_EXPIRED;
	if (is_failed && op->msg->sender.len > 0 && (*w->config)->engine.bounces &&
	    eng_deliver_dsn_write(w, op))
		return;
	eng_deliver_journal_write(w, op);
}

static void
eng_deliver_journal_write(struct eng_deliver *w, struct eng_deliver_outcome *op)
{
	op->append = (struct spool_append){ .callback = eng_deliver_outcome_done,
					    .ctx = op,
					    .type = SPOOL_RECORD_OUTCOME,
					    .input.outcome = &op->outcome };
	if (spool_write_outcome(w->spool, &op->append) < 0) {
		w->stats.outcome_errors++;
		eng_deliver_outcome_return(w, op);
	}
}

/* An outcome decided here goes to the journal of the message's writer. */
static void
eng_deliver_outcome_send(struct eng_deliver *d, struct eng_deliver_outcome *op)
{
	uint32_t writer = op->msg->location.shard;
	if (writer == d->shard_index)
		eng_deliver_journal(d, op);
	else
		eng_deliver_outbox_op(d, writer, op, ENG_DELIVER_MAIL_OUTCOME);
}

static enum spool_rcpt_state
eng_deliver_state_of(const struct smtp_status *status, bool outcome_is_unknown)
{
	if (status->code >= 200 && status->code < 300)
		return SPOOL_RCPT_DELIVERED;
	if (status->code >= 500 && status->code < 600 && !outcome_is_unknown)
		return SPOOL_RCPT_BOUNCED;
	return SPOOL_RCPT_DEFERRED;
}

static uint32_t
eng_deliver_random(struct eng_deliver *d)
{
	/* xorshift32: jitter only, no security. */
	uint32_t x = d->random_state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	d->random_state = x;
	return x;
}

/* Copy the reply of status into op (code, enhanced code, bounded text). */
static void
eng_deliver_outcome_set_status(struct eng_deliver_outcome *op, const struct smtp_status *status)
{
	op->code = status->code;
	op->enhanced.status_class = status->enhanced.status_class;
	op->enhanced.subject = status->enhanced.subject;
	op->enhanced.detail = status->enhanced.detail;
	size_t text_len = ENG_MIN(status->text_size, sizeof(op->text));
	if (text_len > 0)
		memcpy(op->text, status->text, text_len);
	op->text_len = (uint32_t)text_len;
}

/* Fill the log fields of op from status and the connection. */
static void
eng_deliver_outcome_fill(struct eng_deliver_outcome *op, const struct smtp_status *status,
			 const struct eng_deliver_slot *slot, uint64_t transaction_ms)
{
	eng_deliver_outcome_set_status(op, status);
	op->mx_host[0] = '\0';
	op->mx_ip[0] = '\0';
	op->connect_ms = ENG_LOG_MS_NONE;
	op->transaction_ms = transaction_ms;
	op->has_tls = false;
	op->tls_used = false;
	op->tls_verified = false;
	op->tls_version[0] = '\0';
	op->tls_cipher[0] = '\0';
	if (slot == NULL)
		return;
	snprintf(op->mx_host, sizeof(op->mx_host), "%s", slot->mx_host);
	snprintf(op->mx_ip, sizeof(op->mx_ip), "%s", eng_conn_peer(&slot->conn));
	op->connect_ms = slot->connect_ms;
	struct eng_tls_info info;
	op->has_tls = true;
	if (eng_conn_tls_info(&slot->conn, &info)) {
		op->tls_used = true;
		op->tls_verified = info.is_verified;
		snprintf(op->tls_version, sizeof(op->tls_version), "%s", info.version);
		snprintf(op->tls_cipher, sizeof(op->tls_cipher), "%s", info.cipher);
	}
}

/*
 * A read-back body belongs to its job and goes with it, before the DSN of
 * a bounce is built on the writer shard: keep a copy of its headers (all
 * the DSN quotes, RET=HDRS) up to the blank line, bounded as eng_dsn
 * bounds them. Out of memory: the DSN goes without them.
 */
static void
eng_deliver_outcome_keep_headers(struct eng_deliver_outcome *op,
				 const struct eng_deliver_job *job)
{
	if (job->body_state != ENG_DELIVER_BODY_LOADED || job->load == NULL)
		return;
	const struct eng_deliver_load *load = job->load;
	const uint8_t *body = load->body_copy != NULL ? load->body_copy
						      : load->read.message.body.data;
	size_t size = ENG_MIN(job->msg->body_size, (size_t)ENG_DSN_HEADERS_SIZE_MAX + 4u);
	size_t len = size;
	for (size_t i = 0; i + 4u <= size; i++) {
		if (memcmp(body + i, "\r\n\r\n", 4) == 0) {
			len = i + 4u;
			break;
		}
	}
	if (len == 0 || (op->dsn_headers = malloc(len)) == NULL)
		return;
	memcpy(op->dsn_headers, body, len);
	op->dsn_headers_len = (uint32_t)len;

}

/*
 * Journal recipient i of job with status (its outcome for this attempt).
 * Uses one of the job's reserved ops. A deferral sets the rcpt's next
 * attempt and pulls the job's next attempt earlier.
 */
static void
eng_deliver_outcome(struct eng_deliver *d, struct eng_deliver_job *job, uint32_t i,
		    const struct smtp_status *status, bool outcome_is_unknown,
		    uint64_t transaction_ms)
{
	ENG_ASSERT(i < job->rcpt_count);
	ENG_ASSERT(job->reserved > 0);
	struct eng_deliver_rcpt *r = &job->rcpts[i];
	ENG_ASSERT(r->state == ENG_DELIVER_RCPT_WAITING || r->state == ENG_DELIVER_RCPT_ACCEPTED);
	job->reserved--;
	d->outcomes_reserved--;
	struct eng_deliver_outcome *op = eng_deliver_outcome_take(d);
	enum spool_rcpt_state state = eng_deliver_state_of(status, outcome_is_unknown);
	uint64_t now_ns = eng_clock_realtime_ns();
	op->outcome = (struct spool_outcome){ .message = job->msg->location,
					      .rcpt_index = r->rcpt_index,
					      .state = (uint16_t)state,
					      .time_ns = now_ns };
	ENG_ASSERT(r->deferrals <= SPOOL_ATTEMPTS_MAX);
	op->attempt = r->deferrals + 1u;
	/* Journaled: this attempt counts, unless a stop cut it short. */
	op->outcome.attempts = ENG_MIN(op->attempt, SPOOL_ATTEMPTS_MAX);
	struct smtp_status expired_status;
	uint64_t lifetime_ns = (*d->config)->engine.max_queue_lifetime_ns;
	if (state == SPOOL_RCPT_DEFERRED && lifetime_ns > 0 &&
	    job->msg->created_ns + lifetime_ns < now_ns) {
		/* Too old to retry: final, with the reply kept and 4.4.7. */
		state = SPOOL_RCPT_EXPIRED;
		op->outcome.state = (uint16_t)state;
		expired_status = *status;
		expired_status.enhanced.status_class = 4;
		expired_status.enhanced.subject = 4;
		expired_status.enhanced.detail = 7;
		status = &expired_status;
	}
	if (state == SPOOL_RCPT_DEFERRED && d->is_aborting) {
		/* Cut short by a stop: not counted, due again at once. */
		op->outcome.attempts = r->deferrals;
	} else if (state == SPOOL_RCPT_DEFERRED) {
		r->deferrals = op->outcome.attempts; /* + 1, saturated */
		uint64_t delay_ns =
			eng_config_retry_delay_ns(*d->config, r->deferrals, eng_deliver_random(d));
		/* Journaled on the wall clock, waited on the monotonic one. */
		op->outcome.time_ns = now_ns + delay_ns;
		job->next_attempt_ns =
			ENG_MIN(job->next_attempt_ns, eng_now_monotonic_ns() + delay_ns);
	}
	bool is_deferred = state == SPOOL_RCPT_DEFERRED;
	r->state = is_deferred ? ENG_DELIVER_RCPT_DEFERRED : ENG_DELIVER_RCPT_FINAL;
	op->event = state == SPOOL_RCPT_DELIVERED  ? ENG_LOG_DELIVERY
		    : state == SPOOL_RCPT_BOUNCED ? ENG_LOG_BOUNCE
		    : state == SPOOL_RCPT_EXPIRED ? ENG_LOG_EXPIRATION
						  : ENG_LOG_TRANSIENT_FAILURE;
	d->stats.delivered += state == SPOOL_RCPT_DELIVERED;
	d->stats.bounced += state == SPOOL_RCPT_BOUNCED;
	d->stats.deferred += state == SPOOL_RCPT_DEFERRED;
	eng_deliver_outcome_fill(op, status, job->slot, transaction_ms);
	op->msg = job->msg;
	eng_deliver_msg_ref(op->msg);
	op->has_body = false;
	ENG_ASSERT(op->dsn_headers == NULL);
	if ((state == SPOOL_RCPT_BOUNCED || state == SPOOL_RCPT_EXPIRED) &&
	    job->body_state == ENG_DELIVER_BODY_SHARED) {
		eng_deliver_msg_body_ref(op->msg); /* its DSN quotes the headers */
		op->has_body = true;
	} else if (state == SPOOL_RCPT_BOUNCED || state == SPOOL_RCPT_EXPIRED) {
		eng_deliver_outcome_keep_headers(op, job);
	}
	eng_deliver_outcome_send(d, op);
}

/*
 * RCPT 4xx/5xx for recipient i: not journaled yet (smtp_client.h: it may
 * be void). Its status goes into one of the job's reserved ops, the one
 * its outcome would use, so holding costs no allocation.
 */
static void
eng_deliver_rcpt_hold(struct eng_deliver *d, struct eng_deliver_job *job, uint32_t i,
		      const struct smtp_status *status)
{
	ENG_ASSERT(i < job->rcpt_count);
	struct eng_deliver_rcpt *r = &job->rcpts[i];
	ENG_ASSERT(r->state == ENG_DELIVER_RCPT_WAITING && r->held == NULL);
	ENG_ASSERT(job->reserved > 0 && d->outcomes_reserved > 0);
	job->reserved--;
	d->outcomes_reserved--;
	struct eng_deliver_outcome *op = eng_deliver_outcome_take(d);
	eng_deliver_outcome_set_status(op, status);
	r->held = op;
	r->state = ENG_DELIVER_RCPT_REJECTED;
}

/* Take back recipient i's held RCPT reply: its op returns to the job's
 * reservation, the rcpt is WAITING again; the status (text copied into
 * text) is returned for its outcome. */
static struct smtp_status
eng_deliver_rcpt_unhold(struct eng_deliver *d, struct eng_deliver_job *job, uint32_t i,
			char text[ENG_CONN_STATUS_TEXT_SIZE])
{
	struct eng_deliver_rcpt *r = &job->rcpts[i];
	struct eng_deliver_outcome *op = r->held;
	ENG_ASSERT(r->state == ENG_DELIVER_RCPT_REJECTED && op != NULL);
	ENG_ASSERT(op->text_len <= ENG_CONN_STATUS_TEXT_SIZE);
	struct smtp_status status = { .code = op->code,
				      .enhanced = { .status_class = op->enhanced.status_class,
						    .subject = op->enhanced.subject,
						    .detail = op->enhanced.detail },
				      .text = text,
				      .text_size = op->text_len };
	if (op->text_len > 0)
		memcpy(text, op->text, op->text_len);
	op->free_next = d->free_outcomes;
	d->free_outcomes = op;
	d->outcomes_free++;
	d->outcomes_reserved++;
	job->reserved++;
	r->held = NULL;
	r->state = ENG_DELIVER_RCPT_WAITING;
	return status;
}

/* A local status (no reply from the server). */
static struct smtp_status
eng_deliver_local_status(uint16_t code, uint16_t subject, uint16_t detail, const char *text)
{
	return (struct smtp_status){ .code = code,
				     .enhanced = { .status_class = (uint8_t)(code / 100u),
						   .subject = subject,
						   .detail = detail },
				     .is_local = true,
				     .text = text,
				     .text_size = strlen(text) };
}

/* The shard holds more body bytes than its share of memory_budget. */
static bool
eng_deliver_is_over_budget(const struct eng_deliver *d)
{
	return atomic_load_explicit(d->body_bytes, memory_order_relaxed) > d->body_budget;
}

/*
 * A job goes back to the retry heap with deferred recipients (its next
 * attempt is a retry delay away, minutes): a body read back is dropped
 * (read again then), so the prefetch window only ever holds jobs on their
 * way out; an injected body is kept (the hot path never reads back) unless
 * the shard is over its budget. A stop (due again at once) keeps it.
 */
static void
eng_deliver_body_after_defer(struct eng_deliver *d, struct eng_deliver_job *job)
{
	bool is_loaded = job->body_state == ENG_DELIVER_BODY_LOADED;
	bool is_shared = job->body_state == ENG_DELIVER_BODY_SHARED;
	if (is_loaded || (is_shared && !d->is_aborting && eng_deliver_is_over_budget(d))) {
		d->stats.bodies_dropped++;
		eng_deliver_job_drop_body(job);
	}
}

/*
 * The attempt is over: recipients left without an outcome are deferred,
 * the rest of the reservation is returned, and the job either goes back on
 * the retry list with its deferred recipients or is freed.
 */
static void
eng_deliver_job_finish(struct eng_deliver *d, struct eng_deliver_job *job)
{
	ENG_ASSERT(!job->job.queued);
	struct smtp_status none = eng_deliver_local_status(451, 4, 2, "no outcome for recipient");
	for (uint32_t i = 0; i < job->rcpt_count; i++) {
		char text[ENG_CONN_STATUS_TEXT_SIZE];
		if (job->rcpts[i].state == ENG_DELIVER_RCPT_REJECTED)
			(void)eng_deliver_rcpt_unhold(d, job, i, text); /* never confirmed */
		enum eng_deliver_rcpt_state state = job->rcpts[i].state;
		if (state == ENG_DELIVER_RCPT_WAITING || state == ENG_DELIVER_RCPT_ACCEPTED)
			eng_deliver_outcome(d, job, i, &none, false, ENG_LOG_MS_NONE);
	}
	eng_deliver_unreserve(d, job);
	job->slot = NULL;
	uint32_t kept = 0;
	for (uint32_t i = 0; i < job->rcpt_count; i++) {
		if (job->rcpts[i].state != ENG_DELIVER_RCPT_DEFERRED)
			continue;
		job->rcpts[kept] = job->rcpts[i];
		job->rcpts[kept].state = ENG_DELIVER_RCPT_WAITING;
		kept++;
	}
	job->rcpt_count = kept;
	if (kept == 0) {
		eng_deliver_job_free(job);
		return;
	}
	eng_deliver_body_after_defer(d, job);
	eng_deliver_retry_push(d, job, job->next_attempt_ns);
}

/* Give every recipient of a job status without a connection (no route:
 * deferred for 4xx, bounced for 5xx). */
static void
eng_deliver_job_defer(struct eng_deliver *d, struct eng_deliver_job *job,
		      const struct smtp_status *status)
{
	job->next_attempt_ns = UINT64_MAX;
	for (uint32_t i = 0; i < job->rcpt_count; i++)
		eng_deliver_outcome(d, job, i, status, false, ENG_LOG_MS_NONE);
	eng_deliver_job_finish(d, job);
}

/* ---- connections ---- */

static void
eng_deliver_smtp_message(struct eng_deliver_job *job)
{
	const struct eng_deliver_msg *msg = job->msg;
	/* Only a job with its body is ever queued on a destination. */
	ENG_ASSERT(job->body_state == ENG_DELIVER_BODY_SHARED ||
		   job->body_state == ENG_DELIVER_BODY_LOADED);
	const uint8_t *body = job->body_state == ENG_DELIVER_BODY_SHARED ? msg->body
			      : job->load->body_copy != NULL		 ? job->load->body_copy
									 : job->load->read.message.body.data;
	ENG_ASSERT(body != NULL);
	for (uint32_t i = 0; i < job->rcpt_count; i++) {
		const struct eng_deliver_addr *addr = &msg->rcpts[job->rcpts[i].rcpt_index];
		ENG_ASSERT(addr->ptr != NULL);
		job->addrs[i] = (struct smtp_address){ .ptr = addr->ptr, .len = addr->len };
		job->rcpts[i].state = ENG_DELIVER_RCPT_WAITING;
	}
	job->smtp = (struct smtp_message){
		.sender = { .ptr = msg->sender.ptr, .len = msg->sender.len },
		.rcpts = job->addrs,
		.rcpt_count = job->rcpt_count,
		.body = body,
		.body_size = msg->body_size,
		.needs_8bit = msg->needs_8bit,
		.needs_smtputf8 = msg->needs_smtputf8,
		.ctx = job,
	};
	job->next_attempt_ns = UINT64_MAX;
	job->is_ended = false;
}

/* A READY connection: send the next job, wait, or quit. */
static void
eng_deliver_slot_unidle(struct eng_deliver_slot *slot)
{
	if (!slot->is_idle)
		return;
	ENG_ASSERT(slot->dest->dest.idle_connections > 0);
	ENG_ASSERT(slot->deliver->idle_slots > 0);
	slot->dest->dest.idle_connections--;
	slot->deliver->idle_slots--;
	slot->is_idle = false;
}

/* Finish the slot's jobs whose final event came, oldest first (all of
 * them at CLOSED): called at READY, PIPELINE_SLOT and CLOSED, when no
 * send reads a body. The older job always ends first. */
static void
eng_deliver_slot_release(struct eng_deliver *d, struct eng_deliver_slot *slot, bool is_closed)
{
	for (uint32_t pass = 0; pass < 2u; pass++) {
		struct eng_deliver_job *job = slot->job;
		if (job == NULL || (!job->is_ended && !is_closed)) {
			ENG_ASSERT(job != NULL || slot->job_next == NULL);
			return;
		}
		eng_deliver_job_finish(d, job);
		slot->job = slot->job_next;
		slot->job_next = NULL;
	}
	ENG_ASSERT(slot->job == NULL && slot->job_next == NULL);
}

/* Take the destination's next job for slot and start it: SEND from
 * eng_dest_next_job, with its outcome ops reserved. *next is the slot's
 * field that holds it while in the conn. Returns the action; after SEND
 * with a local refusal the job is finished and *next is NULL again (the
 * caller may try once more). */
static enum eng_dest_action
eng_deliver_slot_take(struct eng_deliver *d, struct eng_deliver_slot *slot,
		      struct eng_deliver_job **next, uint64_t *wake_ns)
{
	struct eng_job *taken = NULL;
	ENG_ASSERT(*next == NULL);
	enum eng_dest_action action =
		d->is_stopping ? ENG_DEST_QUIT
			       : eng_dest_next_job(&slot->dest->dest, slot->messages_sent,
						   eng_now_monotonic_ns(), &taken, wake_ns);
	if (action != ENG_DEST_SEND)
		return action;
	struct eng_deliver_job *job = ENG_CONTAINER_OF(taken, struct eng_deliver_job, job);
	if (!eng_deliver_reserve(d, job)) {
		/* Outcome pool busy: acks free it within a commit. */
		eng_deliver_queue(d, slot->dest, job, true);
		*wake_ns = eng_now_monotonic_ns() + ENG_DELIVER_TIMER_MIN_NS;
		return ENG_DEST_WAIT;
	}
	eng_deliver_smtp_message(job);
	job->slot = slot;
	*next = job;
	slot->messages_sent++;
	if (eng_conn_send_message(&slot->conn, &job->smtp))
		return ENG_DEST_SEND;
	/* Refused locally: MESSAGE_FAILED already gave the outcomes. */
	*next = NULL;
	eng_deliver_job_finish(d, job);
	return ENG_DEST_SEND;
}

/*
 * PIPELINE_SLOT: the current job's body goes out; the next job, if the
 * destination has one to send now under every limit (the same take as
 * READY's), goes out behind its dot. WAIT, IDLE and QUIT: nothing, READY
 * comes later and decides as usual.
 */
static void
eng_deliver_slot_pipeline(struct eng_deliver *d, struct eng_deliver_slot *slot)
{
	ENG_ASSERT(slot->job != NULL && slot->job_next == NULL);
	ENG_ASSERT(!slot->is_idle && !slot->job->is_ended);
	for (uint32_t tries = 0; tries < ENG_DELIVER_READY_TRIES; tries++) {
		uint64_t wake_ns = 0;
		if (!eng_conn_may_pipeline(&slot->conn))
			return;
		if (eng_deliver_slot_take(d, slot, &slot->job_next, &wake_ns) != ENG_DEST_SEND ||
		    slot->job_next != NULL)
			return;
	}
}

static void
eng_deliver_slot_next(struct eng_deliver *d, struct eng_deliver_slot *slot)
{
	ENG_ASSERT(slot->job == NULL && slot->job_next == NULL);
	ENG_ASSERT(!slot->is_idle);
	slot->is_waiting = false;
	for (uint32_t tries = 0; tries < ENG_DELIVER_READY_TRIES; tries++) {
		uint64_t wake_ns = 0;
		enum eng_dest_action action = eng_deliver_slot_take(d, slot, &slot->job, &wake_ns);
		if (action == ENG_DEST_SEND && slot->job != NULL)
			return;
		if (action == ENG_DEST_WAIT) {
			slot->is_waiting = true;
			slot->wake_ns = wake_ns;
			return;
		}
		uint64_t idle_ns = slot->dest->dest.settings.idle_timeout_ns;
		if (action == ENG_DEST_IDLE && idle_ns > 0) {
			/* Kept open for the next burst; the hook quits it after
			 * idle_timeout or hands it a newly queued job. */
			ENG_ASSERT(!slot->is_idle);
			slot->is_idle = true;
			slot->idle_until_ns = eng_now_monotonic_ns() + idle_ns;
			slot->dest->dest.idle_connections++;
			slot->deliver->idle_slots++;
			slot->deliver->idle_next_ns =
				ENG_MIN(slot->deliver->idle_next_ns, slot->idle_until_ns);
			return;
		}
		if (action != ENG_DEST_SEND) {
			eng_conn_quit(&slot->conn);
			return;
		}
		/* SEND refused locally: try the next. */
	}
	slot->is_waiting = true; /* the rest next turn */
	slot->wake_ns = eng_now_monotonic_ns();
}

static bool
eng_deliver_close_is_failure(enum eng_conn_close_reason reason)
{
	return reason == ENG_CONN_CLOSE_CONNECT_REFUSED ||
	       reason == ENG_CONN_CLOSE_CONNECT_TIMEOUT ||
	       reason == ENG_CONN_CLOSE_CONNECT_FAILED || reason == ENG_CONN_CLOSE_SERVER_CLOSING ||
	       reason == ENG_CONN_CLOSE_TIMEOUT || reason == ENG_CONN_CLOSE_NETWORK_ERROR;
}

/* A session that ended before READY for a reason of the server's (greeting
 * or EHLO refused, a malformed reply, closed on us) is as much a failure of
 * the destination as a refused connect: without a back-off the next loop
 * turn would reconnect at once, forever. */
static bool
eng_deliver_close_before_up_is_failure(enum eng_conn_close_reason reason)
{
	return reason == ENG_CONN_CLOSE_REJECTED || reason == ENG_CONN_CLOSE_PROTOCOL_ERROR ||
	       reason == ENG_CONN_CLOSE_REMOTE_CLOSE;
}

static bool
eng_deliver_close_is_connect_failure(enum eng_conn_close_reason reason)
{
	return reason == ENG_CONN_CLOSE_CONNECT_REFUSED ||
	       reason == ENG_CONN_CLOSE_CONNECT_TIMEOUT || reason == ENG_CONN_CLOSE_CONNECT_FAILED;
}

/*
 * MX fall-over: a connection to address failed_index of e could not
 * connect, so the next connection goes to the next address in order
 * (wrapping). Returns true (back the destination off) only when every
 * address failed in a row; a failure of an address the destination has
 * already moved past (connections opened together) changes nothing.
 */
static bool
eng_deliver_mx_fall_over(struct eng_deliver_dest *e, uint32_t failed_index)
{
	if (e->mx_addr_count == 0)
		return true;
	ENG_ASSERT(e->mx_addr_index < e->mx_addr_count);
	if (failed_index != e->mx_addr_index)
		return false;
	e->mx_addr_index = (failed_index + 1u) % e->mx_addr_count;
	e->mx_failures++;
	if (e->mx_failures < e->mx_addr_count)
		return false;
	e->mx_failures = 0;
	return true;
}

/*
 * The destination's parked jobs share the fate of its queued ones: due
 * now, they are deferred with the same status without being read back
 * (not left to trickle through one failed connection per window). One
 * that would expire on this deferral stays parked: it is read back and
 * expires on a real attempt, its DSN quoting the headers.
 */
static void
eng_deliver_defer_parked(struct eng_deliver *d, struct eng_deliver_dest *dest,
			 const struct smtp_status *status)
{
	if (d->is_stopping)
		return; /* freed at the end, live in the spool */
	uint64_t lifetime_ns = (*d->config)->engine.max_queue_lifetime_ns;
	uint64_t now_ns = eng_clock_realtime_ns();
	struct eng_deliver_job *keep_head = NULL;
	struct eng_deliver_job *keep_tail = NULL;
	uint32_t kept = 0;
	for (uint32_t guard = dest->parked_count; guard > 0; guard--) {
		struct eng_deliver_job *job = dest->parked_head;
		bool expires = lifetime_ns > 0 && job->msg->created_ns + lifetime_ns < now_ns;
		if (!expires && !eng_deliver_reserve(d, job))
			break; /* the pool frees up with acks; the rest stay parked */
		(void)eng_deliver_unpark(dest);
		if (expires) {
			eng_deliver_job_append(&keep_head, &keep_tail, job);
			kept++;
			continue;
		}
		eng_deliver_job_defer(d, job, status);
	}
	if (keep_head == NULL)
		return;
	/* Back in front, in their order. */
	keep_tail->retry_next = dest->parked_head;
	if (dest->parked_head == NULL)
		dest->parked_tail = keep_tail;
	dest->parked_head = keep_head;
	dest->parked_count += kept;
}

/*
 * The destination could not be reached (refused, timed out, or the session
 * failed before READY) and no other connection of it is open: its queued
 * jobs would wait out the back-off with no word in the log. Defer them now
 * on the retry schedule, each recipient with a TransientFailure saying why
 * ("451 4.4.1 127.0.0.1: connection refused"). Jobs whose outcomes cannot
 * be reserved stay queued for the next connection.
 */
static void
eng_deliver_defer_queued(struct eng_deliver *d, struct eng_deliver_dest *dest, const char *host,
			 const struct eng_conn_event *event)
{
	if (dest->dest.connections.used > 0)
		return;
	char text[200];
	const struct smtp_status *reply = &event->status;
	if (reply->code != 0 && !reply->is_local && reply->text != NULL)
		snprintf(text, sizeof(text), "%s: %s: %u %.*s", host,
			 eng_conn_close_reason_name(event->reason), reply->code,
			 (int)ENG_MIN(reply->text_size, (size_t)120), reply->text);
	else if (event->sys_error != 0)
		snprintf(text, sizeof(text), "%s: %s: %s", host,
			 eng_conn_close_reason_name(event->reason), strerror(event->sys_error));
	else
		snprintf(text, sizeof(text), "%s: %s", host, eng_conn_close_reason_name(event->reason));
	/* TLS required or failed: 4.7.x, never a bounce. */
	bool is_tls = event->reason == ENG_CONN_CLOSE_TLS_FAILED ||
		      event->reason == ENG_CONN_CLOSE_TLS_REQUIRED;
	if (is_tls && event->tls_error != NULL && event->tls_error[0] != '\0')
		snprintf(text, sizeof(text), "%s: %s: %s", host,
			 eng_conn_close_reason_name(event->reason), event->tls_error);
	uint16_t detail = event->reason == ENG_CONN_CLOSE_TLS_REQUIRED ? 4 : 0;
	struct smtp_status status =
		eng_deliver_local_status(451, is_tls ? 7 : 4, is_tls ? detail : 1, text);
	for (uint64_t guard = dest->dest.queued_count; guard > 0; guard--) {
		struct eng_job *next = eng_dest_take(&dest->dest);
		if (next == NULL)
			break;
		struct eng_deliver_job *job = ENG_CONTAINER_OF(next, struct eng_deliver_job, job);
		if (!eng_deliver_reserve(d, job)) {
			eng_deliver_queue(d, dest, job, true);
			break;
		}
		eng_deliver_job_defer(d, job, &status);
	}
	eng_deliver_defer_parked(d, dest, &status);
}

/* ---- outbound TLS policy ---- */

static bool
eng_deliver_tls_is_broken(const struct eng_deliver *d, const char *host, uint64_t now_ns)
{
	for (uint32_t i = 0; i < ENG_DELIVER_TLS_BROKEN_MAX; i++) {
		const struct eng_deliver_tls_broken *b = &d->tls_broken[i];
		if (b->until_ns > now_ns && strcmp(b->host, host) == 0)
			return true;
	}
	return false;
}

/* Remember host as TLS-broken until until_ns: its own entry, or the one
 * that expires first. */
static void
eng_deliver_tls_broken_mark(struct eng_deliver *d, const char *host, uint64_t until_ns)
{
	struct eng_deliver_tls_broken *slot = &d->tls_broken[0];
	for (uint32_t i = 0; i < ENG_DELIVER_TLS_BROKEN_MAX; i++) {
		struct eng_deliver_tls_broken *b = &d->tls_broken[i];
		if (strcmp(b->host, host) == 0) {
			slot = b;
			break;
		}
		if (b->until_ns < slot->until_ns)
			slot = b;
	}
	snprintf(slot->host, sizeof(slot->host), "%s", host);
	slot->until_ns = until_ns;
}

/*
 * A connection closed because of TLS (docs/tls.md "Outbound"). Under
 * opportunistic the host is remembered as TLS-broken for
 * tls_plaintext_fallback_time: the next connection to it (a new one) is
 * plaintext, and this is not a failure that backs the destination off.
 * Under required/verify (or with no fallback time) it is: the recipients
 * are deferred (4.7.x), never bounced.
 */
static bool
eng_deliver_tls_closed(struct eng_deliver *d, const struct eng_deliver_slot *slot,
		       const struct eng_conn_event *event)
{
	if (event->reason != ENG_CONN_CLOSE_TLS_FAILED &&
	    event->reason != ENG_CONN_CLOSE_TLS_REQUIRED)
		return false;
	uint64_t fallback_ns = slot->dest->dest.settings.tls_plaintext_fallback_time_ns;
	if (slot->tls_policy != SMTP_CLIENT_TLS_OPPORTUNISTIC || fallback_ns == 0)
		return true;
	eng_deliver_tls_broken_mark(d, slot->tls_peer, eng_now_monotonic_ns() + fallback_ns);
	return false;
}

/* The connection's TLS settings: the route's tls (when set) over the
 * destination's; opportunistic to a TLS-broken host is plaintext. */
static void
eng_deliver_tls_config(struct eng_deliver *d, struct eng_deliver_slot *slot,
		       const struct eng_deliver_dest *dest, const struct eng_route *route,
		       const struct sockaddr_storage *addr, struct eng_conn_config *cc)
{
	uint16_t port = 0;
	if (addr != NULL && addr->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
	else if (addr != NULL && addr->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
	snprintf(slot->tls_peer, sizeof(slot->tls_peer), "%s:%u", slot->mx_host, (unsigned)port);
	enum eng_tls_mode mode =
		route != NULL && route->tls_is_set ? route->tls : dest->dest.settings.tls;
	enum smtp_client_tls_policy policy = mode == ENG_TLS_NONE ? SMTP_CLIENT_TLS_NONE
					     : mode == ENG_TLS_OPPORTUNISTIC
						     ? SMTP_CLIENT_TLS_OPPORTUNISTIC
						     : SMTP_CLIENT_TLS_REQUIRED;
	if (policy == SMTP_CLIENT_TLS_OPPORTUNISTIC &&
	    eng_deliver_tls_is_broken(d, slot->tls_peer, eng_now_monotonic_ns()))
		policy = SMTP_CLIENT_TLS_NONE;
	slot->tls_policy = policy;
	cc->tls_policy = policy;
	cc->tls_verify = mode == ENG_TLS_VERIFY;
	cc->tls_name = slot->mx_host;
	cc->tls_name_len = strlen(slot->mx_host);
	cc->tls_ctx = d->tls_ctx;
	cc->tls_cache = d->tls_cache;
}

/* The shard's client context ([engine] tls_ca_file, or the system store)
 * and session cache ([engine] tls_session_cache_size). */
static int
eng_deliver_tls_create(struct eng_deliver *d, const struct eng_engine *engine, char *err,
		       size_t err_size)
{
	if (eng_tls_global_init() < 0) {
		snprintf(err, err_size, "TLS: wolfSSL initialisation failed");
		return -1;
	}
	const char *ca_file = engine->tls_ca_file[0] != '\0' ? engine->tls_ca_file : NULL;
	if (eng_tls_client_ctx_create(&d->tls_ctx, ca_file, err, err_size) < 0)
		return -1;
	d->tls_cache = eng_tls_session_cache_create(
		engine->tls_session_cache_size > 0 ? engine->tls_session_cache_size : 1024u);
	if (d->tls_cache == NULL) {
		snprintf(err, err_size, "out of memory for the TLS session cache");
		return -1;
	}
	return 0;
}

static void
eng_deliver_slot_closed(struct eng_deliver *d, struct eng_deliver_slot *slot,
			const struct eng_conn_event *event)
{
	eng_deliver_slot_release(d, slot, true);
	eng_deliver_slot_unidle(slot); /* an idle one closed by the server or a stop */
	if (slot->is_reclaimed) {
		ENG_ASSERT(d->reclaims_pending > 0);
		d->reclaims_pending--;
		slot->is_reclaimed = false;
	}
	bool is_tls_failure = eng_deliver_tls_closed(d, slot, event);
	bool failed = is_tls_failure || eng_deliver_close_is_failure(event->reason) ||
		      (!slot->is_up && eng_deliver_close_before_up_is_failure(event->reason));
	d->stats.connections_failed += failed;
	if (slot->is_mx && !slot->is_up && eng_deliver_close_is_connect_failure(event->reason))
		failed = eng_deliver_mx_fall_over(slot->dest, slot->mx_addr_index);
	struct eng_deliver_dest *dest = slot->dest;
	eng_dest_connection_closed(&dest->dest, d->node, slot->is_up, failed,
				   eng_now_monotonic_ns());
	if (failed && !slot->is_up && !d->is_stopping)
		eng_deliver_defer_queued(d, dest, slot->mx_host, event);
	slot->dest = NULL;
	slot->is_waiting = false;
	ENG_ASSERT(d->slots_open > 0);
	d->slots_open--;
	slot->free_next = d->free_slots;
	d->free_slots = slot;
}

/*
 * The message's final event. A RCPT rejection held until now stands when
 * the transaction ended on a reply read in step (DONE, or FAILED without
 * an error); a session failure (FAILED with an error) voids it, and the
 * failure applies to that recipient too (smtp_client.h). Every other
 * recipient without an outcome gets status.
 */
static void
eng_deliver_message_end(struct eng_deliver *d, const struct eng_conn_event *event, bool is_done)
{
	struct eng_deliver_job *job = event->message->ctx;
	ENG_ASSERT(job != NULL && job->slot != NULL && !job->is_ended);
	job->is_ended = true;
	bool is_void = !is_done && event->error != SMTP_CLIENT_ERROR_NONE;
	for (uint32_t i = 0; i < job->rcpt_count; i++) {
		if (job->rcpts[i].state == ENG_DELIVER_RCPT_REJECTED) {
			char text[ENG_CONN_STATUS_TEXT_SIZE];
			struct smtp_status held = eng_deliver_rcpt_unhold(d, job, i, text);
			if (!is_void) {
				eng_deliver_outcome(d, job, i, &held, false, ENG_LOG_MS_NONE);
				continue;
			}
			d->stats.rcpt_replies_voided++;
		}
		enum eng_deliver_rcpt_state state = job->rcpts[i].state;
		bool applies = is_done ? state == ENG_DELIVER_RCPT_ACCEPTED
				       : (state == ENG_DELIVER_RCPT_WAITING ||
					  state == ENG_DELIVER_RCPT_ACCEPTED);
		if (applies)
			eng_deliver_outcome(d, job, i, &event->status, event->outcome_is_unknown,
					    event->transaction_ms);
	}
}

static void
eng_deliver_conn_event(void *ctx, struct eng_conn *conn, const struct eng_conn_event *event)
{
	struct eng_deliver_slot *slot = ctx;
	struct eng_deliver *d = slot->deliver;
	ENG_ASSERT(conn == &slot->conn);
	switch (event->type) {
	case ENG_CONN_EV_READY:
		slot->connect_ms = event->connect_ms;
		if (!slot->is_up) {
			slot->is_up = true;
			eng_dest_connection_up(&slot->dest->dest);
			if (slot->is_mx)
				slot->dest->mx_failures = 0;
		}
		eng_deliver_slot_release(d, slot, false);
		ENG_ASSERT(slot->job == NULL); /* idle: every message ended */
		eng_deliver_slot_next(d, slot);
		break;
	case ENG_CONN_EV_PIPELINE_SLOT:
		eng_deliver_slot_release(d, slot, false); /* the one before the current */
		eng_deliver_slot_pipeline(d, slot);
		break;
	case ENG_CONN_EV_RCPT: {
		struct eng_deliver_job *job = event->message->ctx;
		ENG_ASSERT(event->rcpt_index < job->rcpt_count);
		if (event->status.code >= 200 && event->status.code < 300)
			job->rcpts[event->rcpt_index].state = ENG_DELIVER_RCPT_ACCEPTED;
		else
			eng_deliver_rcpt_hold(d, job, event->rcpt_index, &event->status);
		break;
	}
	case ENG_CONN_EV_MESSAGE_DONE:
		eng_deliver_message_end(d, event, true);
		break;
	case ENG_CONN_EV_MESSAGE_FAILED:
		eng_deliver_message_end(d, event, false);
		break;
	case ENG_CONN_EV_CLOSED:
		eng_deliver_slot_closed(d, slot, event);
		break;
	default:
		ENG_PANIC("unknown connection event");
	}
}

/* Open a connection for dest (a slot was taken by eng_dest_want_connection). */
static void
eng_deliver_open(struct eng_deliver *d, struct eng_deliver_dest *dest)
{
	const struct eng_config *cfg = *d->config;
	const struct eng_route *route =
		eng_config_route(cfg, dest->dest.domain, dest->dest.domain_len);
	struct eng_deliver_slot *slot = d->free_slots;
	ENG_ASSERT(slot != NULL);
	int ret = -EHOSTUNREACH;
	struct sockaddr_storage addr;
	socklen_t addr_len = 0;
	slot->is_mx = false;
	if (route == NULL && dest->mx_addr_count > 0) {
		ENG_ASSERT(dest->mx_addr_index < dest->mx_addr_count);
		const struct eng_deliver_mx_addr *mx = &dest->mx_addrs[dest->mx_addr_index];
		ENG_ASSERT(mx->hop_index < ENG_DNS_MX_MAX);
		addr_len = (socklen_t)eng_dns_addr_to_sockaddr(&mx->addr, cfg->engine.smtp_port,
							       &addr);
		ret = 0;
		slot->is_mx = true;
		slot->mx_addr_index = dest->mx_addr_index;
		snprintf(slot->mx_host, sizeof(slot->mx_host), "%s", dest->mx_hosts[mx->hop_index]);
	}
	if (route != NULL && route->host_count > 0) {
		/* XXX: the first host only; the next after a failure, and names
		 * through eng_dns, come with MX routing. */
		struct eng_hostport host = route->hosts[0];
		if (host.port == 0)
			host.port = route->port;
		ret = eng_hostport_sockaddr(&host, &addr, &addr_len);
		snprintf(slot->mx_host, sizeof(slot->mx_host), "%s", host.host);
	}
	struct eng_conn_config cc;
	eng_conn_config_from_destination(&cc, &dest->dest.settings, cfg->engine.hostname,
					 strlen(cfg->engine.hostname));
	eng_deliver_tls_config(d, slot, dest, route, ret == 0 ? &addr : NULL, &cc);
	if (ret == 0)
		ret = eng_conn_open(&slot->conn, d->ring, (const struct sockaddr *)&addr, addr_len,
				    &cc, slot, eng_deliver_conn_event);
	if (ret < 0) {
		d->stats.connections_failed++;
		eng_dest_connection_closed(&dest->dest, d->node, false, true, eng_now_monotonic_ns());
		return;
	}
	d->free_slots = slot->free_next;
	slot->free_next = NULL;
	slot->dest = dest;
	slot->job = NULL;
	slot->job_next = NULL;
	slot->messages_sent = 0;
	slot->is_up = false;
	slot->is_waiting = false;
	slot->is_idle = false;
	slot->is_reclaimed = false;
	d->slots_open++;
	d->stats.connections_opened++;
}

/* ---- the schedule hook ---- */

/* ---- MX routing ---- */

/* The local status of a failed route: the enhanced code is the one of
 * eng_dns_status_enhanced (5.1.2, 5.1.10, 5.4.4 or 4.4.3). */
static struct smtp_status
eng_deliver_dns_status(enum eng_dns_status status)
{
	const char *enhanced = eng_dns_status_enhanced(status);
	ENG_ASSERT(enhanced != NULL);
	char *end = NULL;
	unsigned long status_class = strtoul(enhanced, &end, 10);
	unsigned long subject = strtoul(end + 1, &end, 10);
	unsigned long detail = strtoul(end + 1, &end, 10);
	ENG_ASSERT(*end == '\0');
	ENG_ASSERT(status_class == 4 || status_class == 5);
	const char *text = status == ENG_DNS_NXDOMAIN	? "domain not found (NXDOMAIN)"
			   : status == ENG_DNS_NULL_MX	? "domain does not accept mail (null MX)"
			   : status == ENG_DNS_NO_ADDRESS ? "no address for any MX host"
							  : "MX lookup failed temporarily";
	struct smtp_status out = eng_deliver_local_status(status_class == 5 ? 550 : 451,
							  (uint16_t)subject, (uint16_t)detail, text);
	ENG_ASSERT(out.enhanced.status_class == status_class);
	return out;
}

/* Keep the addresses of an OK route, hop by hop in order. */
static void
eng_deliver_mx_store(struct eng_deliver_dest *e, const struct eng_dns_route *route,
		     uint64_t now_ns)
{
	ENG_ASSERT(route->status == ENG_DNS_OK);
	ENG_ASSERT(route->hop_count <= ENG_DNS_MX_MAX);
	uint32_t count = 0;
	for (uint32_t h = 0; h < route->hop_count; h++) {
		const struct eng_dns_hop *hop = &route->hops[h];
		/* route may live inside e: copy with memmove, never snprintf. */
		size_t n = strnlen(hop->host, sizeof(e->mx_hosts[h]) - 1);
		memmove(e->mx_hosts[h], hop->host, n);
		e->mx_hosts[h][n] = '\0';
		for (uint32_t a = 0; a < hop->addr_count && count < ENG_DELIVER_MX_ADDRS_MAX; a++) {
			e->mx_addrs[count].addr = hop->addr[a];
			e->mx_addrs[count].hop_index = h;
			count++;
		}
	}
	e->mx_addr_count = count;
	e->mx_addr_index = 0;
	e->mx_failures = 0;
	e->mx_expires_ns = ENG_MAX(route->expires_ns, now_ns + ENG_DELIVER_ROUTE_TTL_MIN_NS);
}

/*
 * The lookup of e ended with status: its parked jobs go onto the
 * destination (OK), bounce (permanent) or are deferred on the retry
 * schedule (TEMPFAIL; the destination itself is not backed off). While
 * stopping they only go back on the retry list, to be freed.
 */
static void
eng_deliver_route_apply(struct eng_deliver *d, struct eng_deliver_dest *e,
			enum eng_dns_status status)
{
	ENG_ASSERT(!e->is_resolving);
	uint64_t now_ns = eng_now_monotonic_ns();
	if (status == ENG_DNS_OK)
		eng_deliver_mx_store(e, &e->route_query.route, now_ns);
	if (status == ENG_DNS_OK && e->mx_addr_count == 0)
		status = ENG_DNS_NO_ADDRESS; /* an OK route always has one; be safe */
	struct eng_deliver_job *list = e->dns_wait;
	e->dns_wait = NULL;
	/* Bounded: the list was detached; nothing below parks a job again. */
	while (list != NULL) {
		struct eng_deliver_job *job = list;
		list = job->retry_next;
		job->retry_next = NULL;
		if (d->is_stopping) {
			eng_deliver_retry_push(d, job, job->next_attempt_ns);
		} else if (status == ENG_DNS_OK) {
			eng_deliver_queue(d, e, job, false);
		} else if (!eng_deliver_reserve(d, job)) {
			eng_deliver_retry_push(d, job, 0); /* the pool frees up with acks */
		} else {
			struct smtp_status failure = eng_deliver_dns_status(status);
			eng_deliver_job_defer(d, job, &failure);
		}
	}
}

static void
eng_deliver_resolved(struct eng_dns_route_query *route_query, enum eng_dns_status status)
{
	struct eng_deliver *d = route_query->ctx;
	struct eng_deliver_dest *e =
		ENG_CONTAINER_OF(route_query, struct eng_deliver_dest, route_query);
	ENG_ASSERT(d != NULL);
	ENG_ASSERT(e->is_resolving);
	e->is_resolving = false;
	eng_deliver_route_apply(d, e, status);
}

/* Start the route lookup of e (one in flight per destination). */
static void
eng_deliver_resolve(struct eng_deliver *d, struct eng_deliver_dest *e, uint64_t now_ns)
{
	ENG_ASSERT(!e->is_resolving);
	ENG_ASSERT(d->dns_cache != NULL);
	e->route_query.ctx = d;
	e->is_resolving = true;
	enum eng_dns_start start = eng_dns_route_resolve(d->dns_cache, e->dest.domain,
							 e->dest.domain_len, now_ns,
							 &e->route_query, eng_deliver_resolved);
	if (start == ENG_DNS_START_PENDING)
		return;
	e->is_resolving = false;
	/* Not a valid host name: it cannot exist either. */
	eng_deliver_route_apply(d, e,
				start == ENG_DNS_START_DONE ? e->route_query.route.status
							    : ENG_DNS_NXDOMAIN);
}

/* Route a due job: a static route, else the destination's MX addresses,
 * else park it and look the domain up. */
static void
eng_deliver_route(struct eng_deliver *d, struct eng_deliver_job *job)
{
	struct eng_deliver_dest *e = job->dest;
	struct eng_dest *dest = &e->dest;
	if (eng_config_route(*d->config, dest->domain, dest->domain_len) != NULL) {
		eng_deliver_queue(d, e, job, false);
		return;
	}
	uint64_t now_ns = eng_now_monotonic_ns();
	if (e->mx_addr_count > 0 && now_ns < e->mx_expires_ns) {
		eng_deliver_queue(d, e, job, false);
		return;
	}
	job->retry_next = e->dns_wait;
	e->dns_wait = job;
	if (!e->is_resolving)
		eng_deliver_resolve(d, e, now_ns);
}

/* ---- bodies read back from the spool ---- */

static void eng_deliver_outbox_read(struct eng_deliver *d, uint32_t target,
				    struct eng_deliver_job *job, uint32_t kind);

/* The read of job is over (result in job->load): back to its owner. */
static void eng_deliver_loaded(struct eng_deliver *d, struct eng_deliver_job *job);

static void
eng_deliver_read_back(struct eng_deliver *w, struct eng_deliver_job *job)
{
	struct eng_deliver *owner = job->load->owner;
	if (owner == w)
		eng_deliver_loaded(w, job);
	else
		eng_deliver_outbox_read(w, owner->shard_index, job, ENG_DELIVER_MAIL_LOADED);
}

static void
eng_deliver_read_done(struct spool_read *op, int32_t result)
{
	struct eng_deliver_load *load = ENG_CONTAINER_OF(op, struct eng_deliver_load, read);
	load->result = result;
	struct eng_deliver *w = load->reader;
	ENG_ASSERT(w != NULL);
	eng_deliver_read_back(w, load->job);
}

/* On the writer shard w (its spool holds the record): start the read of
 * job's message. A stopping writer answers -ECANCELED at once. */
static void
eng_deliver_read_start(struct eng_deliver *w, struct eng_deliver_job *job)
{
	struct eng_deliver_load *load = job->load;
	ENG_ASSERT(job->body_state == ENG_DELIVER_BODY_LOADING && load != NULL);
	ENG_ASSERT(job->msg->location.shard == w->shard_index);
	load->reader = w;
	int ret = -ECANCELED;
	if (!w->is_stopping)
		ret = w->spool != NULL ? spool_read_message(w->spool, &job->msg->location, &load->read)
				       : -EAGAIN;
	if (ret == 0)
		return;
	load->result = ret;
	eng_deliver_read_back(w, job);
}

/* ---- run-time quarantine (KRN-05) ---- */

/* The record on disk is bad (not: the read could not run now). */
static bool
eng_deliver_read_error_is_damage(int32_t result)
{
	return result == -EBADMSG || result == -EIO || result == -EMSGSIZE || result == -ENOBUFS;
}

/*
 * Copy what the failed read got of job's record into the writer shard's
 * quarantine/, named as recovery names a corrupt span (SEGMENT-OFFSET.bad,
 * spool_recover.c); an EIO leaves it empty. Blocking I/O on the loop, as
 * rare as a bad disk block; a failure only says so in path.
 */
static void
eng_deliver_quarantine_copy(struct eng_deliver *d, const struct eng_deliver_job *job, char *path,
			    size_t path_size)
{
	const struct eng_deliver_msg *msg = job->msg;
	char dir[ENG_CONFIG_PATH_SIZE + 32u];
	spool_shard_path((*d->config)->engine.spool_dir, msg->location.shard, "quarantine", dir,
			 sizeof(dir));
	snprintf(path, path_size, "%s/%016" PRIx64 "-%08" PRIx32 ".bad", dir,
		 msg->location.segment_id, msg->location.offset);
	const struct spool_read *read = job->load != NULL ? &job->load->read : NULL;
	size_t size = 0;
	if (read != NULL && read->buf != NULL && read->done > read->record_offset)
		size = ENG_MIN((size_t)(read->done - read->record_offset), (size_t)msg->record_size);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(path, path_size, "nowhere (%s)", strerror(errno));
		return;
	}
	for (size_t done = 0, guard = 0; done < size && guard < 1024u; guard++) {
		ssize_t n = write(fd, read->buf + read->record_offset + done, size - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	(void)fsync(fd);
	close(fd);
}

/*
 * job's record failed its read-back for good (EIO, CRC or place mismatch,
 * or it no longer matches the envelope): quarantine it now, not at the
 * next start. It is never sent. Its recipients are bounced (554 5.3.0:
 * RFC 5321 6.1, an accepted message that cannot be delivered is reported
 * to its sender, by DSN) and journaled final, so neither this run nor a
 * restart tries them again; the delivery log has their Bounce lines. The
 * first job of the message copies the bytes to quarantine/ and says so on
 * stderr, once; its other jobs follow without a read.
 */
static void
eng_deliver_quarantine(struct eng_deliver *d, struct eng_deliver_job *job, int32_t result)
{
	ENG_ASSERT(result < 0);
	struct eng_deliver_msg *msg = job->msg;
	int32_t none = 0;
	if (atomic_compare_exchange_strong(&msg->quarantine_error, &none, result)) {
		char path[ENG_CONFIG_PATH_SIZE + 64u];
		eng_deliver_quarantine_copy(d, job, path, sizeof(path));
		d->stats.messages_quarantined++;
		fprintf(stderr,
			"ringmail: shard %u: message %s unreadable (%s): quarantined to %s, "
			"never sent; its recipients bounce (5.3.0)\n",
			d->shard_index, msg->queue_id, strerror(-result), path);
	}
	eng_deliver_job_drop_body(job);
	if (!eng_deliver_reserve(d, job)) {
		/* No outcome op free: again in a second, without a read. */
		eng_deliver_retry_push(d, job, eng_now_monotonic_ns() + ENG_DELIVER_TIMER_MAX_NS);
		return;
	}
	char text[160];
	snprintf(text, sizeof(text),
		 "message unreadable in the spool (%s): quarantined, never sent",
		 strerror(-result));
	struct smtp_status status = eng_deliver_local_status(554, 3, 0, text);
	eng_deliver_job_defer(d, job, &status);
}

/* Bytes a load of msg holds: the aligned read buffer and its recipients. */
static uint32_t
eng_deliver_load_size(const struct eng_deliver_msg *msg)
{
	return spool_read_buffer_size(msg->record_size) +
	       msg->rcpt_count * (uint32_t)sizeof(struct spool_span);
}

/* May one more body be read back: within the prefetch window and the
 * shard's budget (one load is always allowed, however large). */
static bool
eng_deliver_may_load(const struct eng_deliver *d, const struct eng_deliver_job *job)
{
	if (d->loads_held >= d->prefetch_max || d->loads_out >= ENG_DELIVER_READS_MAX)
		return false;
	if (d->loads_held == 0)
		return true;
	uint64_t held = atomic_load_explicit(d->body_bytes, memory_order_relaxed);
	return held + eng_deliver_load_size(job->msg) <= d->body_budget;
}

/* A due job without its body: read the record back, on the writer shard;
 * the answer puts the job on the loaded list (or back on the heap).
 * The aligned buffer comes from the shard's pool (records up to 64 KiB,
 * the common case); the load and the body copy kept after the check are
 * still malloc'd per read. */
static void
eng_deliver_load_start(struct eng_deliver *d, struct eng_deliver_job *job)
{
	ENG_ASSERT(job->body_state == ENG_DELIVER_BODY_NONE && job->load == NULL);
	int32_t quarantined = atomic_load_explicit(&job->msg->quarantine_error, memory_order_acquire);
	if (quarantined != 0) {
		eng_deliver_quarantine(d, job, quarantined); /* another job found it bad */
		return;
	}
	const struct eng_deliver_msg *msg = job->msg;
	uint32_t buf_size = spool_read_buffer_size(msg->record_size);
	struct eng_deliver_load *load = calloc(1, sizeof(*load));
	struct spool_span *rcpts = calloc(msg->rcpt_count, sizeof(*rcpts));
	void *buf = load != NULL && rcpts != NULL ? eng_deliver_read_buf_get(d, buf_size) : NULL;
	if (buf == NULL) {
		free(load);
		free(rcpts);
		/* Out of memory: try again in a second. */
		eng_deliver_retry_push(d, job, eng_now_monotonic_ns() + ENG_DELIVER_TIMER_MAX_NS);
		return;
	}
	load->read = (struct spool_read){ .callback = eng_deliver_read_done,
					  .ctx = load,
					  .buf = buf,
					  .buf_size = buf_size,
					  .rcpts = rcpts,
					  .rcpts_capacity = msg->rcpt_count };
	load->job = job;
	load->owner = d;
	load->charge = eng_deliver_load_size(msg);
	eng_deliver_body_charge(d->body_bytes, load->charge);
	d->loads_held++;
	d->loads_out++;
	job->dest->loads_held++;
	job->load = load;
	job->body_state = ENG_DELIVER_BODY_LOADING;
	uint32_t writer = msg->location.shard;
	if (writer == d->shard_index)
		eng_deliver_read_start(d, job);
	else
		eng_deliver_outbox_read(d, writer, job, ENG_DELIVER_MAIL_READ);
}

/* Does the verified record read back still say what recovery saw? */
static bool
eng_deliver_load_matches(const struct eng_deliver_load *load, const struct eng_deliver_msg *msg)
{
	const struct spool_message *m = &load->read.message;
	return m->body.size == msg->body_size && m->rcpt_count == msg->rcpt_count &&
	       m->body.data != NULL;
}

/* Keep only the body of a verified read (the aligned buffer is the record
 * rounded up to blocks, plus one: 12 KiB for a 5 KB message). */
static void
eng_deliver_load_shrink(struct eng_deliver *d, struct eng_deliver_load *load)
{
	uint32_t size = load->read.message.body.size;
	uint8_t *copy = malloc(ENG_MAX(size, 1u));
	if (copy == NULL)
		return; /* keep the buffer: still correct, only bigger */
	memcpy(copy, load->read.message.body.data, size);
	load->body_copy = copy;
	eng_deliver_read_buf_put(d, load->read.buf, load->read.buf_size);
	free(load->read.rcpts);
	load->read.buf = NULL;
	load->read.rcpts = NULL;
	load->read.message = (struct spool_message){ 0 };
	eng_deliver_body_uncharge(d->body_bytes, load->charge);
	load->charge = size;
	eng_deliver_body_charge(d->body_bytes, load->charge);
}

static void
eng_deliver_loaded(struct eng_deliver *d, struct eng_deliver_job *job)
{
	struct eng_deliver_load *load = job->load;
	ENG_ASSERT(job->body_state == ENG_DELIVER_BODY_LOADING && load != NULL);
	ENG_ASSERT(load->owner == d && d->loads_out > 0);
	d->loads_out--;
	int32_t result = load->result;
	if (result == 0 && !eng_deliver_load_matches(load, job->msg))
		result = -EBADMSG;
	job->body_state = ENG_DELIVER_BODY_LOADED;
	if (result == 0) {
		d->stats.bodies_read++;
		eng_deliver_load_shrink(d, load);
		eng_deliver_job_append(&d->loaded_head, &d->loaded_tail, job);
		return;
	}
	if (result == -EAGAIN || result == -EBUSY || result == -ECANCELED) {
		/* Reader busy, SQ full or a stopping writer: due again now. */
		eng_deliver_job_drop_body(job);
		d->stats.body_read_retries++;
		eng_deliver_retry_push(d, job, job->next_attempt_ns);
		return;
	}
	d->stats.body_read_errors++;
	if (eng_deliver_read_error_is_damage(result)) {
		eng_deliver_quarantine(d, job, result);
		return;
	}
	/* Never send bytes that fail their check. Another error (the segment
	 * gone, a bad location): the recipients stay live in the spool and
	 * recovery at the next start checks the record again. */
	eng_deliver_job_drop_body(job);
	fprintf(stderr, "ringmail: shard %u: message %s unreadable (%s): not sent, held for recovery\n",
		d->shard_index, job->msg->queue_id, strerror(-result));
	eng_deliver_job_free(job);
}

/* Jobs whose body was read back since the last turn: route them. */
static void
eng_deliver_run_loaded(struct eng_deliver *d)
{
	struct eng_deliver_job *list = d->loaded_head;
	d->loaded_head = NULL;
	d->loaded_tail = NULL;
	/* Bounded: the list was detached; routing never appends to it. */
	while (list != NULL) {
		struct eng_deliver_job *job = list;
		list = job->retry_next;
		job->retry_next = NULL;
		eng_deliver_route(d, job);
	}
}

/* Parked jobs of the listed destinations, oldest destination first, start
 * their reads while each has room and the shard's prefetch window and
 * budget allow (then the rest wait for reads to come back). */
static void
eng_deliver_run_unparked(struct eng_deliver *d)
{
	while (d->dest_lists[ENG_DELIVER_DESTS_UNPARK].head != NULL) {
		struct eng_deliver_dest *e = d->dest_lists[ENG_DELIVER_DESTS_UNPARK].head;
		for (uint32_t guard = e->parked_count; guard > 0; guard--) {
			if (e->parked_head == NULL || !eng_deliver_dest_has_room(e))
				break;
			if (!eng_deliver_may_load(d, e->parked_head))
				return;
			eng_deliver_load_start(d, eng_deliver_unpark(e));
		}
		eng_deliver_dests_unlink(d, ENG_DELIVER_DESTS_UNPARK, NULL, e);
	}
}

/* Due jobs leave the heap in next-attempt order: those with a body are
 * routed; the others start a read back while their destination's window
 * has room (else they park on it, behind its older parked jobs) and the
 * shard's prefetch window and budget allow (else the rest wait for reads
 * to come back). */
static void
eng_deliver_run_retries(struct eng_deliver *d, uint64_t now_ns)
{
	eng_deliver_run_loaded(d);
	eng_deliver_run_unparked(d);
	/* Bounded by the count on entry: a push during routing is due later
	 * or is met again next turn. */
	for (uint32_t guard = eng_heap_count(&d->retry); guard > 0; guard--) {
		uint64_t key = 0;
		void *top = NULL;
		if (!eng_heap_peek(&d->retry, &key, &top) || key > now_ns)
			return;
		struct eng_deliver_job *job = top;
		if (job->body_state == ENG_DELIVER_BODY_NONE) {
			struct eng_deliver_dest *e = job->dest;
			ENG_ASSERT(e != NULL);
			if (e->parked_head != NULL || !eng_deliver_dest_has_room(e)) {
				(void)eng_heap_pop(&d->retry);
				eng_deliver_park(e, job);
				continue;
			}
			if (!eng_deliver_may_load(d, job))
				return;
		}
		(void)eng_heap_pop(&d->retry);
		if (job->body_state == ENG_DELIVER_BODY_NONE)
			eng_deliver_load_start(d, job);
		else
			eng_deliver_route(d, job);
	}
}

/*
 * A destination with work cannot open a connection because the shard's
 * pool or the node-wide cap is used up: if another destination holds an
 * idle connection, quit it so its slot comes free (at its CLOSED). Without
 * this, destinations that finished keep the node's connections for their
 * idle_timeout while others wait. At most ENG_DELIVER_RECLAIMS_MAX quits
 * in flight, so one busy turn does not close every idle connection.
 */
#define ENG_DELIVER_RECLAIMS_MAX 4u

static void
eng_deliver_reclaim_idle(struct eng_deliver *d, const struct eng_deliver_dest *for_dest)
{
	if (d->reclaims_pending >= ENG_DELIVER_RECLAIMS_MAX || d->idle_slots == 0)
		return;
	for (uint32_t i = 0; i < d->slot_count; i++) {
		struct eng_deliver_slot *slot = &d->slots[i];
		/* Idle while its parked jobs are being read: kept. (Parked with
		 * no load at all, e.g. the budget taken by other destinations'
		 * bodies, it may go: those bodies need a slot to drain.) */
		const struct eng_deliver_dest *owner = slot->dest;
		if (!slot->is_idle || owner == for_dest ||
		    (owner->parked_head != NULL && owner->loads_held > 0))
			continue;
		eng_deliver_slot_unidle(slot);
		slot->is_reclaimed = true;
		d->reclaims_pending++;
		eng_conn_quit(&slot->conn);
		return;
	}
}

static void
eng_deliver_open_connections(struct eng_deliver *d, uint64_t now_ns, uint64_t *wake_ns)
{
	struct eng_deliver_dest *prev = NULL;
	for (struct eng_deliver_dest *e = d->dest_lists[ENG_DELIVER_DESTS_BUSY].head, *next = NULL;
	     e != NULL; e = next) {
		next = e->links[ENG_DELIVER_DESTS_BUSY].next;
		if (eng_dest_is_empty(&e->dest)) {
			/* Leaves the list; the next job queued puts it back. */
			eng_deliver_dests_unlink(d, ENG_DELIVER_DESTS_BUSY, prev, e);
			continue;
		}
		prev = e;
		/* Every slot busy and none idle to quit: no destination can
		 * get a connection this turn. */
		if (d->free_slots == NULL &&
		    (d->idle_slots == 0 || d->reclaims_pending >= ENG_DELIVER_RECLAIMS_MAX))
			break;
		for (uint32_t i = 0; i < d->slot_count; i++) {
			if (d->free_slots == NULL) {
				if (!eng_dest_is_empty(&e->dest) && e->dest.idle_connections == 0 &&
				    e->dest.opening_connections == 0)
					eng_deliver_reclaim_idle(d, e);
				break;
			}
			uint64_t wait_ns = 0;
			enum eng_dest_open open =
				eng_dest_want_connection(&e->dest, d->node, now_ns, &wait_ns);
			if (open == ENG_DEST_OPEN_WAIT)
				*wake_ns = ENG_MIN(*wake_ns, wait_ns);
			if (open == ENG_DEST_OPEN_FULL && !eng_counter_is_full(&e->dest.connections))
				eng_deliver_reclaim_idle(d, e); /* the node-wide cap */
			if (open != ENG_DEST_OPEN_NOW)
				break;
			eng_deliver_open(d, e);
			eng_deliver_unpark_note(d, e); /* a wider window */
		}
	}
}

/* Idle connections: a job queued on their destination is sent (the READY
 * handling), an idle_timeout that passed quits them. The pass runs only
 * when a job was queued since the last one or a timeout is due: every
 * loop turn, it read each idle slot's destination for nothing. */
static void
eng_deliver_run_idle(struct eng_deliver *d, uint64_t now_ns, uint64_t *wake_ns)
{
	if (d->idle_slots == 0 || (d->queue_gen == d->idle_scan_gen && now_ns < d->idle_next_ns)) {
		if (d->idle_slots > 0)
			*wake_ns = ENG_MIN(*wake_ns, d->idle_next_ns);
		return;
	}
	d->idle_scan_gen = d->queue_gen;
	d->idle_next_ns = UINT64_MAX; /* slots going idle meanwhile lower it */
	uint64_t start_wake_ns = *wake_ns;
	*wake_ns = UINT64_MAX;
	for (uint32_t i = 0; i < d->slot_count; i++) {
		struct eng_deliver_slot *slot = &d->slots[i];
		if (!slot->is_idle)
			continue;
		ENG_ASSERT(slot->job == NULL && eng_conn_is_ready(&slot->conn));
		if (!eng_dest_is_empty(&slot->dest->dest)) {
			eng_deliver_slot_unidle(slot);
			eng_deliver_slot_next(d, slot);
			if (slot->is_waiting)
				*wake_ns = ENG_MIN(*wake_ns, slot->wake_ns);
			if (slot->is_idle)
				*wake_ns = ENG_MIN(*wake_ns, slot->idle_until_ns);
			continue;
		}
		if (slot->idle_until_ns <= now_ns) {
			eng_deliver_slot_unidle(slot);
			eng_conn_quit(&slot->conn);
			continue;
		}
		*wake_ns = ENG_MIN(*wake_ns, slot->idle_until_ns);
	}
	/* The pass's wake-ups bound the next idle timeout (a waiting slot's
	 * wake_ns too: only earlier, never missed). */
	d->idle_next_ns = ENG_MIN(d->idle_next_ns, *wake_ns);
	*wake_ns = ENG_MIN(*wake_ns, start_wake_ns);
}

static void
eng_deliver_timer_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)op;
	(void)cqe_flags;
	/* The next loop turn runs the hook; nothing else to do. */
	ENG_ASSERT(res == -ETIME || res == 0 || res == -ECANCELED);
}

static void
eng_deliver_cancel_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)op;
	(void)cqe_flags;
	(void)res; /* 0, -ENOENT (already fired) or -EALREADY: all fine */
}

static void
eng_deliver_arm_timer(struct eng_deliver *d, uint64_t delay_ns)
{
	if (d->timer_op.in_flight || delay_ns == UINT64_MAX)
		return;
	delay_ns = ENG_MAX(ENG_MIN(delay_ns, ENG_DELIVER_TIMER_MAX_NS), ENG_DELIVER_TIMER_MIN_NS);
	d->timer_op.callback = eng_deliver_timer_done;
	d->timer_op.ctx = d;
	if (ring_prep_timeout(d->ring, &d->timer_op, delay_ns) < 0)
		ENG_ASSERT(!d->timer_op.in_flight); /* SQ full: the next turn tries again */
}

/* ---- the mailbox ---- */

static void
eng_deliver_mail(void *ctx, uint32_t from_shard_index, const struct ring_mail *mails,
		 uint32_t count)
{
	struct eng_deliver *d = ctx;
	ENG_ASSERT(from_shard_index != d->shard_index);
	for (uint32_t i = 0; i < count; i++) {
		ENG_ASSERT(mails[i].ptr != NULL);
		switch (mails[i].kind) {
		case ENG_DELIVER_MAIL_JOB:
			eng_deliver_adopt(d, mails[i].ptr);
			break;
		case ENG_DELIVER_MAIL_OUTCOME:
			eng_deliver_journal(d, mails[i].ptr);
			break;
		case ENG_DELIVER_MAIL_RELEASE:
			eng_deliver_outcome_release(d, mails[i].ptr);
			break;
		case ENG_DELIVER_MAIL_READ:
			eng_deliver_read_start(d, mails[i].ptr);
			break;
		case ENG_DELIVER_MAIL_LOADED:
			eng_deliver_loaded(d, mails[i].ptr);
			break;
		default:
			ENG_PANIC("unknown delivery mail");
		}
	}
}

/* Send what the outbox to target holds, as much as its queue takes:
 * outcome ops first (they free pools), then jobs (not while stopping: a
 * stopping node takes no new work; they stay for the next start). */
static void
eng_deliver_flush_one(struct eng_deliver *d, uint32_t target)
{
	struct eng_deliver_outbox *ob = &d->outbox[target];
	for (uint32_t rounds = 0; rounds < ENG_DELIVER_OUTCOMES; rounds++) {
		/* What follows the batch is read before the send: once sent, an
		 * item belongs to the target shard, which may already be reusing
		 * its link fields (a job on its queues, an op freed), so the
		 * heads must never be advanced through a sent item. */
		struct ring_mail mails[RING_MAILBOX_DELIVER_BATCH_MAX];
		uint32_t n = 0;
		struct eng_deliver_outcome *ops_rest = ob->ops_head;
		for (; ops_rest != NULL && n < RING_MAILBOX_DELIVER_BATCH_MAX;
		     ops_rest = ops_rest->outbox_next)
			mails[n++] = (struct ring_mail){ .ptr = ops_rest, .kind = ops_rest->mail_kind };
		uint32_t ops = n;
		/* Reads and their answers: a stop waits for them (loads_out). */
		struct eng_deliver_job *reads_rest = ob->reads_head;
		for (; reads_rest != NULL && n < RING_MAILBOX_DELIVER_BATCH_MAX;
		     reads_rest = reads_rest->retry_next)
			mails[n++] = (struct ring_mail){ .ptr = reads_rest, .kind = reads_rest->mail_kind };
		uint32_t reads_end = n;
		struct eng_deliver_job *jobs_rest = ob->jobs_head;
		for (; !d->is_stopping && jobs_rest != NULL && n < RING_MAILBOX_DELIVER_BATCH_MAX;
		     jobs_rest = jobs_rest->retry_next)
			mails[n++] = (struct ring_mail){ .ptr = jobs_rest, .kind = ENG_DELIVER_MAIL_JOB };
		if (n == 0)
			return;
		uint32_t sent = ring_mailbox_send(d->mesh, d->shard_index, target, mails, n);
		ENG_ASSERT(sent <= n);
		uint32_t ops_sent = ENG_MIN(sent, ops);
		ENG_ASSERT(d->outbox_ops >= ops_sent);
		d->outbox_ops -= ops_sent;
		if (ops_sent > 0)
			ob->ops_head = ops_sent < ops ? mails[ops_sent].ptr : ops_rest;
		if (ob->ops_head == NULL)
			ob->ops_tail = NULL;
		if (sent > ops)
			ob->reads_head = sent < reads_end ? mails[sent].ptr : reads_rest;
		if (ob->reads_head == NULL)
			ob->reads_tail = NULL;
		if (sent > reads_end)
			ob->jobs_head = sent < n ? mails[sent].ptr : jobs_rest;
		if (ob->jobs_head == NULL)
			ob->jobs_tail = NULL;
		if (sent < n)
			return; /* full: the rest next turn (woken when room appears) */
	}
}

static void
eng_deliver_flush_outboxes(struct eng_deliver *d)
{
	if (d->mesh == NULL)
		return;
	for (uint32_t t = 0; t < d->shard_count; t++) {
		if (t != d->shard_index)
			eng_deliver_flush_one(d, t);
	}
	/* Wakes for what was just sent go out with this turn's submit. */
	(void)ring_mailbox_flush(d->mesh, d->shard_index);
}

/* ---- the loop turn ---- */

/* Normal running: retries due, idle connections, new connections, waits. */
static void
eng_deliver_schedule(struct eng_deliver *d)
{
	uint64_t mono_ns = eng_now_monotonic_ns();
	eng_deliver_run_retries(d, mono_ns);
	uint64_t wake_ns = UINT64_MAX; /* monotonic */
	/* Idle connections first: queued jobs go to them, and only the rest
	 * (queued_count > idle_connections) open new ones. */
	eng_deliver_run_idle(d, mono_ns, &wake_ns);
	eng_deliver_open_connections(d, mono_ns, &wake_ns);
	for (uint32_t i = 0; i < d->slot_count; i++) {
		struct eng_deliver_slot *slot = &d->slots[i];
		if (!slot->is_waiting)
			continue;
		if (slot->wake_ns <= mono_ns && eng_conn_is_ready(&slot->conn))
			eng_deliver_slot_next(d, slot);
		if (slot->is_waiting)
			wake_ns = ENG_MIN(wake_ns, slot->wake_ns);
	}
	uint64_t delay_ns = wake_ns == UINT64_MAX ? UINT64_MAX
			    : wake_ns > mono_ns   ? wake_ns - mono_ns
						  : 0;
	uint64_t earliest_ns = 0;
	if (eng_heap_peek(&d->retry, &earliest_ns, NULL) &&
	    (earliest_ns > mono_ns || d->loads_held == 0)) {
		/* A due head that waits for the prefetch window needs no
		 * timer: each held body is being read, routed or sent, and
		 * that completion runs the next turn. */
		uint64_t retry_ns = earliest_ns > mono_ns ? earliest_ns - mono_ns : 0;
		delay_ns = ENG_MIN(delay_ns, retry_ns);
	}
	eng_deliver_arm_timer(d, delay_ns);
}

/* Stopping: connections finish their transaction and quit (slot_next says
 * QUIT); once the grace period is over the rest are aborted. */
static void
eng_deliver_stop_turn(struct eng_deliver *d)
{
	uint64_t mono_ns = eng_now_monotonic_ns();
	for (uint32_t i = 0; i < d->slot_count; i++) {
		struct eng_deliver_slot *slot = &d->slots[i];
		if (slot->is_idle || (slot->is_waiting && eng_conn_is_ready(&slot->conn))) {
			eng_deliver_slot_unidle(slot);
			slot->is_waiting = false;
			eng_conn_quit(&slot->conn);
		}
	}
	if (d->slots_open == 0 || d->is_aborting)
		return;
	if (mono_ns < d->grace_until_ns) {
		eng_deliver_arm_timer(d, d->grace_until_ns - mono_ns);
		return;
	}
	d->is_aborting = true;
	for (uint32_t i = 0; i < d->slot_count; i++) {
		if (eng_conn_state(&d->slots[i].conn) != ENG_CONN_STATE_FREE)
			eng_conn_abort(&d->slots[i].conn);
	}
}

static bool
eng_deliver_is_drained_now(const struct eng_deliver *d)
{
	return d->is_stopping && d->slots_open == 0 && d->outcomes_free == ENG_DELIVER_OUTCOMES &&
	       d->outbox_ops == 0 && d->loads_out == 0;
}

static void
eng_deliver_hook(void *ctx)
{
	struct eng_deliver *d = ctx;
	if (d->spool == NULL)
		return;
	if (d->mesh != NULL)
		(void)ring_mailbox_drain(d->mesh, d->shard_index, ENG_DELIVER_MAIL_TURN_MAX, d,
					 eng_deliver_mail);
	eng_deliver_dispatch(d);
	if (d->is_stopping)
		eng_deliver_stop_turn(d);
	else if (!(*d->config)->engine.hold)
		eng_deliver_schedule(d);
	eng_deliver_flush_outboxes(d);
	if (d->drained_fn != NULL && !d->drained_told && eng_deliver_is_drained_now(d)) {
		d->drained_told = true;
		d->drained_fn(d->drained_ctx);
	}
}

/* ---- create, stop, destroy ---- */

/* The shard's resolver: [engine] dns_servers, else /etc/resolv.conf. */
static struct eng_dns *
eng_deliver_dns_create(struct ring *ring, const struct eng_engine *engine, char *err,
		       size_t err_size)
{
	char text[ENG_CONFIG_DNS_SERVERS_MAX][ENG_DOMAIN_SIZE + 16u];
	const char *servers[ENG_CONFIG_DNS_SERVERS_MAX + 1u];
	uint32_t count = engine->dns_server_count;
	ENG_ASSERT(count <= ENG_CONFIG_DNS_SERVERS_MAX);
	for (uint32_t i = 0; i < count; i++) {
		const struct eng_hostport *hp = &engine->dns_servers[i];
		unsigned port = hp->port != 0 ? hp->port : ENG_DELIVER_DNS_PORT;
		if (hp->kind == ENG_HOST_IPV6)
			snprintf(text[i], sizeof(text[i]), "[%s]:%u", hp->host, port);
		else
			snprintf(text[i], sizeof(text[i]), "%s:%u", hp->host, port);
		servers[i] = text[i];
	}
	servers[count] = NULL;
	struct eng_dns_options options = { .keep_sockets_open = true };
	return eng_dns_create(ring, count > 0 ? servers : NULL, &options, err, err_size);
}

/* Destroy the resolver (pending lookups end TEMPFAIL: their jobs go back
 * on the retry list) and then the cache. */
static void
eng_deliver_dns_close(struct eng_deliver *d)
{
	ENG_ASSERT(d->is_stopping || d->dns == NULL);
	if (d->dns != NULL)
		eng_dns_destroy(d->dns);
	d->dns = NULL;
	eng_dns_cache_destroy(d->dns_cache);
	d->dns_cache = NULL;
}

int
eng_deliver_attach_log(struct eng_deliver *d, struct eng_logfile_shared *shared, char *err,
		       size_t err_size)
{
	ENG_ASSERT(d != NULL && !d->log_is_open);
	if (shared == NULL || shared->path[0] == '\0')
		return 0;
	int ret = eng_logfile_open(&d->log, d->ring, shared, err, err_size);
	if (ret < 0)
		return ret;
	d->log_is_open = true;
	return 0;
}

struct eng_deliver *
eng_deliver_create(struct ring *ring, const struct eng_config *const *config,
		   struct eng_global_limit *node, _Atomic uint64_t *body_account,
		   uint32_t shard_index, char *err, size_t err_size)
{
	ENG_ASSERT(ring != NULL && config != NULL && *config != NULL && node != NULL);
	ENG_ASSERT(body_account != NULL);
	struct eng_deliver *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(err, err_size, "out of memory for the delivery state");
		return NULL;
	}
	d->ring = ring;
	d->config = config;
	d->node = node;
	d->shard_index = shard_index;
	d->random_state = 2463534242u ^ (shard_index * 2654435761u);
	d->slot_count = (*config)->engine.delivery_connections;
	if (d->slot_count == 0)
		d->slot_count = ENG_DELIVER_CONNS;
	d->prefetch_max = ENG_DELIVER_PREFETCH_MAX;
	d->body_bytes = body_account;
	atomic_store_explicit(d->body_bytes, 0, memory_order_relaxed);
	d->slots = calloc(d->slot_count, sizeof(*d->slots));
	d->outcomes = calloc(ENG_DELIVER_OUTCOMES, sizeof(*d->outcomes));
	d->bounce = calloc(1, sizeof(*d->bounce));
	if (d->slots == NULL || d->outcomes == NULL || d->bounce == NULL) {
		snprintf(err, err_size, "out of memory for the delivery pools");
		eng_deliver_destroy(d);
		return NULL;
	}
	d->dns = eng_deliver_dns_create(ring, &(*config)->engine, err, err_size);
	struct eng_dns_cache_params cache_params = { .entries_max = ENG_DELIVER_DNS_CACHE_ENTRIES };
	if (d->dns != NULL)
		d->dns_cache = eng_dns_cache_create(d->dns, &cache_params, err, err_size);
	if (d->dns_cache != NULL &&
	    eng_deliver_tls_create(d, &(*config)->engine, err, err_size) < 0) {
		d->is_stopping = true;
		eng_deliver_destroy(d);
		return NULL;
	}
	if (d->dns_cache == NULL) {
		d->is_stopping = true;
		eng_deliver_destroy(d);
		return NULL;
	}
	eng_bounce_table_init(d->bounce);
	for (uint32_t i = d->slot_count; i-- > 0;) {
		d->slots[i].deliver = d;
		d->slots[i].free_next = d->free_slots;
		d->free_slots = &d->slots[i];
	}
	/* The outcome pool (8 MiB) is taken in order by eng_deliver_outcome_take:
	 * its calloc'd pages stay untouched until used. */
	d->outcomes_free = ENG_DELIVER_OUTCOMES;
	/* Added before the spool's own hooks: outcomes queued here are
	 * flushed in the same turn. */
	ring_add_hook(ring, eng_deliver_hook, d);
	d->hook_added = true;
	return d;
}

void
eng_deliver_attach_spool(struct eng_deliver *d, struct spool *spool)
{
	ENG_ASSERT(d != NULL && spool != NULL);
	ENG_ASSERT(d->spool == NULL);
	d->spool = spool;
	/* memory_budget is the node's (a restart setting): each shard holds
	 * its share of bodies. */
	d->body_budget = (*d->config)->engine.memory_budget / ENG_MAX(d->shard_count, 1u);
	if (d->recover_msg != NULL)
		eng_deliver_msg_unref(d->recover_msg); /* the recovery's reference */
	d->recover_msg = NULL;
	d->recover_job_count = 0;
}

void
eng_deliver_attach_mesh(struct eng_deliver *d, struct ring_mailbox_mesh *mesh)
{
	ENG_ASSERT(d != NULL && d->mesh == NULL && d->spool == NULL);
	uint32_t count = mesh != NULL ? ring_mailbox_shard_count(mesh) : 1u;
	ENG_ASSERT(d->shard_index < count);
	if (count < 2)
		return;
	d->outbox = calloc(count, sizeof(*d->outbox));
	ENG_ASSERT(d->outbox != NULL); /* a few hundred bytes at start-up */
	d->mesh = mesh;
	d->shard_count = count;
}

void
eng_deliver_drain(struct eng_deliver *d, eng_deliver_drained_fn *fn, void *ctx)
{
	ENG_ASSERT(d != NULL);
	if (d->is_stopping)
		return;
	d->is_stopping = true;
	d->drained_fn = fn;
	d->drained_ctx = ctx;
	d->grace_until_ns = eng_now_monotonic_ns() + (*d->config)->engine.stop_grace_ns;
	/* Lookups first: a pending one only parks its jobs (is_stopping). */
	eng_deliver_dns_close(d);
}

bool
eng_deliver_is_drained(const struct eng_deliver *d)
{
	ENG_ASSERT(d != NULL);
	return eng_deliver_is_drained_now(d);
}

/* Free the jobs other shards handed here after the drain (no outcome can
 * be in a queue once every shard drained). */
static void
eng_deliver_mail_free(void *ctx, uint32_t from_shard_index, const struct ring_mail *mails,
		      uint32_t count)
{
	(void)ctx;
	(void)from_shard_index;
	for (uint32_t i = 0; i < count; i++) {
		ENG_ASSERT(mails[i].kind == ENG_DELIVER_MAIL_JOB);
		eng_deliver_job_free(mails[i].ptr);
	}
}

void
eng_deliver_stop(struct eng_deliver *d)
{
	ENG_ASSERT(d != NULL);
	if (!d->is_stopping) {
		/* Not drained by the node (one shard, or a failed start): no grace. */
		eng_deliver_drain(d, NULL, NULL);
		d->grace_until_ns = 0;
	}
	for (uint32_t turns = 0; turns < ENG_DELIVER_STOP_TURNS; turns++) {
		if (eng_deliver_is_drained_now(d))
			break;
		int ret = ring_run_once(d->ring, 10ull * ENG_DELIVER_NS_PER_MS);
		if (ret < 0 && ret != -EINTR)
			break;
	}
	if (!eng_deliver_is_drained_now(d))
		fprintf(stderr,
			"ringmail: shard %u: delivery did not drain (%u connections open, %u "
			"outcomes out)\n",
			d->shard_index, d->slots_open, ENG_DELIVER_OUTCOMES - d->outcomes_free);
	for (uint32_t rounds = 0; d->mesh != NULL && rounds < 1024u; rounds++) {
		if (ring_mailbox_drain(d->mesh, d->shard_index, ENG_DELIVER_MAIL_TURN_MAX, d,
				       eng_deliver_mail_free) == 0)
			break;
	}
	if (d->timer_op.in_flight && !d->cancel_op.in_flight) {
		d->cancel_op.callback = eng_deliver_cancel_done;
		d->cancel_op.ctx = d;
		(void)ring_prep_cancel(d->ring, &d->cancel_op, &d->timer_op);
	}
	for (uint32_t turns = 0; turns < ENG_DELIVER_STOP_TURNS; turns++) {
		if (!d->timer_op.in_flight && !d->cancel_op.in_flight)
			break;
		int ret = ring_run_once(d->ring, 10ull * ENG_DELIVER_NS_PER_MS);
		if (ret < 0 && ret != -EINTR)
			break;
	}
	if (d->log_is_open)
		eng_logfile_close(&d->log); /* every line written */
	d->log_is_open = false;
}

static void
eng_deliver_free_list(struct eng_deliver_job *list)
{
	while (list != NULL) {
		struct eng_deliver_job *job = list;
		list = job->retry_next;
		job->reserved = 0;
		eng_deliver_job_free(job);
	}
}

static void
eng_deliver_free_jobs(struct eng_deliver *d)
{
	for (uint32_t guard = eng_heap_count(&d->retry); guard > 0; guard--) {
		struct eng_deliver_job *job = eng_heap_pop(&d->retry);
		job->reserved = 0;
		eng_deliver_job_free(job);
	}
	eng_heap_free(&d->retry);
	eng_deliver_free_list(d->loaded_head);
	d->loaded_head = NULL;
	d->loaded_tail = NULL;
	eng_deliver_free_list(d->new_head);
	d->new_head = NULL;
	d->new_tail = NULL;
	for (uint32_t t = 0; d->outbox != NULL && t < d->shard_count; t++) {
		ENG_ASSERT(d->outbox[t].ops_head == NULL);
		/* No read is out once drained (loads_out == 0 everywhere). */
		ENG_ASSERT(d->outbox[t].reads_head == NULL);
		eng_deliver_free_list(d->outbox[t].jobs_head);
		d->outbox[t].jobs_head = NULL;
		d->outbox[t].jobs_tail = NULL;
	}
	for (struct eng_deliver_dest *e = d->dests; e != NULL;) {
		struct eng_deliver_dest *next = e->all_next;
		ENG_ASSERT(!e->is_resolving);
		for (struct eng_deliver_job *job = e->dns_wait; job != NULL;) {
			struct eng_deliver_job *after = job->retry_next;
			job->reserved = 0;
			eng_deliver_job_free(job);
			job = after;
		}
		e->dns_wait = NULL;
		for (uint32_t guard = e->parked_count; guard > 0; guard--) {
			struct eng_deliver_job *job = eng_deliver_unpark(e);
			job->reserved = 0;
			eng_deliver_job_free(job);
		}
		ENG_ASSERT(e->parked_head == NULL);
		for (struct eng_job *j = e->dest.head; j != NULL;) {
			struct eng_job *after = j->next;
			struct eng_deliver_job *job =
				ENG_CONTAINER_OF(j, struct eng_deliver_job, job);
			job->job.queued = false;
			job->reserved = 0;
			eng_deliver_job_free(job);
			j = after;
		}
		free(e);
		e = next;
	}
	d->dests = NULL;
}

void
eng_deliver_destroy(struct eng_deliver *d)
{
	if (d == NULL)
		return;
	if (d->hook_added)
		ring_remove_hook(d->ring, eng_deliver_hook, d);
	bool is_busy = d->slots_open > 0 || d->outcomes_free < ENG_DELIVER_OUTCOMES ||
		       d->loads_out > 0;
	if (d->hook_added && is_busy)
		return; /* ops in flight may still point into d: leak it */
	d->is_stopping = true;
	eng_deliver_dns_close(d);
	eng_deliver_free_jobs(d); /* is_stopping: their buffers are freed */
	for (uint32_t i = 0; i < d->read_pool_count; i++)
		free(d->read_pool[i]);
	d->read_pool_count = 0;
	if (d->recover_msg != NULL)
		eng_deliver_msg_unref(d->recover_msg);
	if (d->log_is_open)
		eng_logfile_close(&d->log);
	if (d->tls_cache != NULL)
		eng_tls_session_cache_destroy(d->tls_cache);
	if (d->tls_ctx != NULL)
		eng_tls_ctx_put(d->tls_ctx);
	free(d->outbox);
	free(d->bounce);
	for (uint32_t i = 0; d->outcomes != NULL && i < d->outcomes_never_used; i++)
		free(d->outcomes[i].dsn_headers); /* none left after a drain */
	free(d->outcomes);
	free(d->slots);
	free(d);
}

const struct eng_deliver_stats *
eng_deliver_stats_get(const struct eng_deliver *d)
{
	ENG_ASSERT(d != NULL);
	return &d->stats;
}

/* One Reception line per recipient: the client's name and IP go in the
 * mx_host and mx_ip fields (the peer of this event). */
static void
eng_deliver_log_reception(struct eng_deliver *d, const struct eng_deliver_msg *msg,
			  uint32_t index, const char *client_name, const char *client_ip)
{
	const struct eng_deliver_addr *rcpt = &msg->rcpts[index];
	const char *domain;
	size_t domain_len;
	eng_deliver_domain_span(rcpt->ptr, rcpt->len, &domain, &domain_len);
	bool has_name = client_name != NULL && client_name[0] != '\0';
	bool has_ip = client_ip != NULL && client_ip[0] != '\0';
	struct eng_log_record rec = {
		.event = ENG_LOG_RECEPTION,
		.time_ns = eng_clock_realtime_ns(),
		.queue_id = msg->queue_id,
		.queue_id_len = strlen(msg->queue_id),
		.sender = msg->sender.ptr,
		.sender_len = msg->sender.len,
		.recipient = rcpt->ptr,
		.recipient_len = rcpt->len,
		.domain = domain,
		.domain_len = domain_len,
		.mx_host = has_name ? client_name : NULL,
		.mx_host_len = has_name ? strlen(client_name) : 0,
		.mx_ip = has_ip ? client_ip : NULL,
		.mx_ip_len = has_ip ? strlen(client_ip) : 0,
		.attempt = 0,
		.queued_ms = 0,
		.connect_ms = ENG_LOG_MS_NONE,
		.transaction_ms = ENG_LOG_MS_NONE,
	};
	eng_deliver_log_write(d, &rec);
}

void
eng_deliver_injected(struct eng_deliver *d, const struct spool_location *loc,
		     const struct spool_message *msg, const char *client_name,
		     const char *client_ip)
{
	ENG_ASSERT(d != NULL && loc != NULL && msg != NULL);
	ENG_ASSERT(loc->shard == d->shard_index);
	ENG_ASSERT(msg->rcpt_count > 0 && msg->rcpts != NULL);
	d->stats.messages_injected++;
	/* A held node sends nothing until it is released, maybe hours later:
	 * keeping the body would only grow the heap (page faults per message)
	 * and push others over the budget. Its jobs read the record back when
	 * they are due, like a recovered message's. */
	_Atomic uint64_t *account = (*d->config)->engine.hold ? NULL : d->body_bytes;
	struct eng_deliver_msg *copy = eng_deliver_msg_create(loc, msg, account);
	d->recover_job_count = 0;
	for (uint32_t i = 0; i < msg->rcpt_count; i++) {
		if (copy == NULL || !eng_deliver_queue_rcpt(d, copy, msg, i, 0, 0)) {
			/* Out of memory: durable, so delivered after a restart. */
			d->stats.recipients_dropped++;
			continue;
		}
		d->stats.recipients_injected++;
		eng_deliver_log_reception(d, copy, i, client_name, client_ip);
	}
	d->recover_job_count = 0;
	if (copy == NULL)
		return;
	if (copy->body != NULL)
		eng_deliver_msg_body_release(copy); /* the jobs hold the body now */
	eng_deliver_msg_unref(copy);		    /* and the message */
}
