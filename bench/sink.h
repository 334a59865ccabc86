/*
 * sink.h - ringmail-sink internals shared by ringmail_sink.c (options,
 * listeners, workers, statistics, JSON summary) and sink_session.c (one
 * SMTP server session on a worker's ring). docs/bench-tools.md describes
 * the tool.
 *
 * Threads: one worker per thread, each with its own ring, its own
 * listening sockets (SO_REUSEPORT when there are several workers) and its
 * own session pool. What workers share is the domain table and the
 * per-second counts (atomic counters) and the --log-ids stream (stdio
 * locks it). Per-worker totals have one writer (bench_counter_add).
 *
 * Session invariant: a session has at most one ring op in flight (recv,
 * send, delay timer or close), so its state never changes under an op and
 * nothing needs cancelling: it reads, answers everything it read (one
 * send for all pipelined replies), and reads again.
 *
 * STARTTLS (--tls-cert/--tls-key): the server context is shared by all
 * workers (a WOLFSSL_CTX is thread-safe once set up, and one ticket key
 * lets a session resume on any worker); each session has its own struct
 * eng_tls in the worker's tls_slots. After STARTTLS the same one op in
 * flight carries ciphertext (engine/eng_tls.h) instead of plaintext.
 */
#ifndef BENCH_SINK_H
#define BENCH_SINK_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ring/ring.h"
#include "smtp/smtp_dot.h"

#define SINK_LISTENERS_MAX 64u
#define SINK_THREADS_MAX 64u
/* Accepts kept in flight per listener: a burst of connects is taken in
 * one loop turn rather than one per turn. */
#define SINK_ACCEPTS_PER_LISTENER 8u
#define SINK_DOMAINS_MAX 16384u /* power of two; open addressing */
#define SINK_DOMAIN_NAME_MAX 128u
#define SINK_SECONDS_MAX 86400u
/* Receive buffer: room for a long command line and large data reads. */
#define SINK_RECV_SIZE 65536u
/* Reply buffer: all replies to one batch of pipelined commands. */
#define SINK_SEND_SIZE 8192u
/* Stop taking commands when less than this is left for replies. */
#define SINK_SEND_ROOM_MIN 1024u
/* Longest command line; RFC 5321 4.5.3.1.4 sets 512 as the minimum. */
#define SINK_LINE_MAX 4096u
/* Recipients per transaction (RFC 5321 4.5.3.1.8 sets 100 as the minimum). */
#define SINK_RCPTS_MAX 1000u
#define SINK_ADDRESS_MAX 256u
#define SINK_HEADER_LINE_MAX 256u
#define SINK_ID_MAX 200u
#define SINK_MESSAGE_SIZE_MAX (100ull * 1024u * 1024u)
#define SINK_TICK_NS 100000000ull

_Static_assert((SINK_DOMAINS_MAX & (SINK_DOMAINS_MAX - 1)) == 0, "domain table is a power of 2");
_Static_assert(SINK_LINE_MAX <= SINK_RECV_SIZE / 2, "a full line fits the receive buffer");
_Static_assert(SINK_SEND_ROOM_MIN * 4 <= SINK_SEND_SIZE, "several replies fit");

struct bench_sink_config {
	struct sockaddr_in listen_addrs[SINK_LISTENERS_MAX];
	uint32_t listen_count;
	uint32_t thread_count;
	uint32_t sessions_max; /* per worker */
	uint32_t rcpt_4xx_bp;  /* basis points (1/100 of a percent) */
	uint32_t rcpt_5xx_bp;
	uint32_t disconnect_bp;
	uint32_t over_421;	/* 0: off */
	uint64_t delay_ns;	/* 0: off */
	uint64_t seed;
	uint64_t duration_ns;	/* 0: until a signal */
	bool is_quiet;
	const char *json_path;	/* NULL: stdout */
	const char *stats_path; /* NULL: none */
	FILE *log_ids;		/* NULL: off */
	const char *hostname;
	const char *tls_cert_path; /* --tls-cert; NULL: no STARTTLS */
	const char *tls_key_path;  /* --tls-key */
	bool is_tls_no_resume;	   /* --tls-no-resume: every handshake is full */
};

/* One slot of the domain table. state: 0 empty, 1 being filled (under the
 * table lock), 2 ready (name readable without the lock). */
struct bench_sink_domain {
	_Atomic uint32_t state;
	uint32_t name_size;
	char name[SINK_DOMAIN_NAME_MAX];
	_Atomic uint64_t messages;
	_Atomic uint64_t bytes;
	_Atomic uint64_t rcpts;
	_Atomic uint64_t rcpt_4xx;
	_Atomic uint64_t rcpt_5xx;
	_Atomic uint64_t replies_421;
	_Atomic uint64_t peak_concurrency;
	_Atomic int64_t concurrency;
};

struct bench_sink_shared {
	struct bench_sink_config config;
	uint64_t start_ns;
	volatile atomic_bool is_stopping;
	pthread_mutex_t domain_lock;
	_Atomic uint32_t domain_count;
	struct bench_sink_domain *domains; /* SINK_DOMAINS_MAX */
	_Atomic uint64_t *per_second;	   /* SINK_SECONDS_MAX */
	struct eng_tls_ctx *tls_ctx;	   /* shared by the workers; NULL: no TLS */
};

/* Per-worker totals: written by the worker only. */
struct bench_sink_totals {
	_Atomic uint64_t messages;
	_Atomic uint64_t bytes;
	_Atomic uint64_t sessions;
	_Atomic uint64_t sessions_active;
	_Atomic uint64_t rcpts;
	_Atomic uint64_t rcpt_4xx;
	_Atomic uint64_t rcpt_5xx;
	_Atomic uint64_t replies_421;
	_Atomic uint64_t disconnects; /* --disconnect faults */
	_Atomic uint64_t protocol_errors;
	_Atomic uint64_t sessions_refused; /* pool exhausted */
	_Atomic uint64_t tls_handshakes_full;
	_Atomic uint64_t tls_handshakes_resumed;
	_Atomic uint64_t tls_handshake_errors;
	_Atomic uint64_t first_message_ns; /* bench_now_ns(); 0: none yet */
	_Atomic uint64_t last_message_ns;
};

struct bench_sink_session;
struct eng_tls;
struct eng_tls_ctx;

struct bench_sink_accept {
	struct ring_op op;
	struct bench_sink_worker *worker;
	int listen_fd;
	bool is_paused; /* an error stopped it; the tick re-arms */
};

struct bench_sink_worker {
	uint32_t index;
	struct bench_sink_shared *shared;
	struct ring *ring;
	pthread_t thread;
	int listen_fds[SINK_LISTENERS_MAX];
	struct bench_sink_accept accepts[SINK_LISTENERS_MAX * SINK_ACCEPTS_PER_LISTENER];
	uint32_t accept_count;
	struct ring_op tick_op;
	struct bench_sink_session *sessions; /* pool of config.sessions_max */
	struct eng_tls *tls_slots; /* one per session when TLS is on, else NULL */
	struct bench_sink_session *free_list;
	uint64_t queue_id_next;
	uint64_t session_serial_next;
	struct bench_sink_totals totals;
	int exit_status;
};

/* Start a session on an accepted socket (takes ownership of fd: it is
 * closed here when the pool is exhausted). */
void bench_sink_session_start(struct bench_sink_worker *worker, int fd);

/* Allocate the worker's session pool (config.sessions_max sessions) and
 * chain its free list. Returns 0 or -ENOMEM. */
int bench_sink_sessions_init(struct bench_sink_worker *worker) __attribute__((warn_unused_result));

/* End the sessions' TLS objects and free the pool (at exit). */
void bench_sink_sessions_teardown(struct bench_sink_worker *worker);

/* The domain table slot of (name, size), created if new; the reserved
 * slot 0 ("(other)") when the table is full. Thread-safe. */
uint32_t bench_sink_domain_find(struct bench_sink_shared *shared, const char *name, size_t size);

/* Seconds from start to now_ns, for the per-second counts (clamped). */
uint32_t bench_sink_second_index(const struct bench_sink_shared *shared, uint64_t now_ns);

#endif /* BENCH_SINK_H */
