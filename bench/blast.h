/*
 * blast.h - ringmail-blast internals shared by ringmail_blast.c (options,
 * workers, message plan, statistics, JSON summary) and blast_session.c
 * (one SMTP client session on a worker's ring). docs/bench-tools.md
 * describes the tool.
 *
 * Message plan: message N (0 <= N < messages) is the same in every run
 * with the same --seed: its domain (uniform or Zipf over --domains), its
 * size (--size or --size-dist) and its id "RUNID-N" depend only on N, not
 * on which session or thread sends it. Sessions take the next N from one
 * shared counter; with --rate, N may not start before start + N / rate.
 *
 * Outcomes: every message taken gets exactly one outcome: accepted (2xx
 * to its data), failed_4xx, failed_5xx (the reply that ended it; when every
 * recipient was refused, the recipients' class, 4xx if any was 4xx), or
 * lost (the connection ended before its final reply). Nothing is retried,
 * so accepted + failed_4xx + failed_5xx + lost == sent.
 *
 * Sessions keep at most one ring op in flight (connect, send, recv, timer
 * or close), like the sink's; a reply timeout is enforced by the tick,
 * which shuts the socket down so the pending op completes.
 */
#ifndef BENCH_BLAST_H
#define BENCH_BLAST_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bench_util.h"
#include "ring/ring.h"
#include "smtp/smtp_ehlo.h"
#include "smtp/smtp_reply.h"

#define BLAST_THREADS_MAX 64u
#define BLAST_SIZES_MAX 16u
#define BLAST_RCPTS_MAX 100u
#define BLAST_DOMAINS_MAX 100000u
#define BLAST_NAME_MAX 128u
#define BLAST_RECV_SIZE 4096u
/* MAIL, BLAST_RCPTS_MAX RCPTs, the BDAT line and the headers. */
#define BLAST_CMD_SIZE 32768u
#define BLAST_TICK_NS 100000000ull
#define BLAST_BODY_LINE_SIZE 78u /* 76 characters and CRLF */
#define BLAST_CONNECT_FAILURES_MAX 50u
#define BLAST_BACKOFF_NS 20000000ull

struct bench_blast_config {
	struct sockaddr_in addr;
	uint32_t session_count;
	uint64_t message_count;
	uint32_t sizes[BLAST_SIZES_MAX];
	uint32_t size_weights[BLAST_SIZES_MAX]; /* cumulative */
	uint32_t size_count;
	uint32_t size_max;
	uint32_t domain_count;
	double zipf_s;		/* 0: uniform */
	const char *domain_fmt; /* printf format with one %u */
	double rate;		/* messages per second; 0: as fast as possible */
	uint32_t recipient_count;
	uint32_t per_conn; /* messages per connection */
	bool is_pipelining;
	bool is_bdat;
	bool is_progress;
	bool is_quiet;
	uint64_t seed;
	uint64_t timeout_ns;
	uint32_t thread_count;
	const char *json_path;
	int log_ids_fd; /* -1: off */
	char run_id[64];
	const char *helo_name;
	const char *mail_from;
};

struct bench_blast_shared {
	struct bench_blast_config config;
	uint64_t start_ns;
	_Atomic uint64_t next_message;
	atomic_bool is_stopping;
	atomic_bool is_fatal;
	double *zipf_cdf; /* domain_count entries, or NULL when uniform */
	char (*domains)[BLAST_NAME_MAX];
	uint8_t *body; /* size_max bytes of text lines, no dots */
	uint32_t body_size;
};

/* Written by the worker only (bench_counter_add), read by the tick. */
struct bench_blast_totals {
	_Atomic uint64_t sent; /* messages taken (MAIL sent) */
	_Atomic uint64_t accepted;
	_Atomic uint64_t failed_4xx;
	_Atomic uint64_t failed_5xx;
	_Atomic uint64_t lost;
	_Atomic uint64_t rcpt_accepted;
	_Atomic uint64_t rcpt_4xx;
	_Atomic uint64_t rcpt_5xx;
	_Atomic uint64_t replies_421;
	_Atomic uint64_t bytes;
	_Atomic uint64_t connections;
	_Atomic uint64_t connect_failures;
	_Atomic uint64_t greeting_failures;
	_Atomic uint64_t protocol_errors;
	_Atomic uint64_t timeouts;
};

struct bench_blast_session;

struct bench_blast_worker {
	uint32_t index;
	struct bench_blast_shared *shared;
	struct ring *ring;
	pthread_t thread;
	struct ring_op tick_op;
	struct bench_blast_session *sessions;
	uint32_t session_count;
	uint32_t sessions_done;
	struct bench_samples latency;
	uint64_t *domain_sent;	   /* per domain, config.domain_count */
	uint64_t *domain_accepted; /* per domain */
	struct bench_blast_totals totals;
	int exit_status;
};

/* Allocate the worker's sessions and start them connecting. Returns 0
 * or -ENOMEM. */
int bench_blast_sessions_start(struct bench_blast_worker *worker, uint32_t count)
	__attribute__((warn_unused_result));

/* Tick: shut down sessions whose reply is overdue, or all when stopping. */
void bench_blast_sessions_tick(struct bench_blast_worker *worker, uint64_t now_ns);

void bench_blast_sessions_free(struct bench_blast_worker *worker);

/* The message plan (see above). */
uint32_t bench_blast_domain_of(const struct bench_blast_shared *shared, uint64_t message_index);
uint32_t bench_blast_size_of(const struct bench_blast_shared *shared, uint64_t message_index);

#endif /* BENCH_BLAST_H */
