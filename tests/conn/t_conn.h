/*
 * t_conn.h - helpers for the eng_conn integration tests: real SMTP peers on
 * 127.0.0.x (Postfix smtp-sink, the scriptable aiosmtpd sink in sink.py,
 * plain listeners that never greet), a scripted owner that records every
 * conn event and feeds messages on READY, and a bounded ring driver.
 *
 * Peers are child processes started with fork/exec and PR_SET_PDEATHSIG,
 * stopped by pid in the test's .fini (t_conn_fini), so a failed assertion
 * leaves nothing behind. Readiness is polled (a LISTEN entry for the port
 * in /proc/net/tcp), never waited for with a fixed sleep. A missing
 * smtp-sink or aiosmtpd skips the test.
 */
#ifndef T_CONN_H
#define T_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/eng_conn.h"

#define T_CONN_EVENTS_MAX 4096u
#define T_CONN_MESSAGES_MAX 256u
#define T_CONN_RCPTS_MAX 8u
#define T_CONN_PATH_SIZE 256u
#define T_CONN_HELO "client.test"
#define T_CONN_WAIT_NS (30ull * 1000000000ull)

struct t_conn_event {
	enum eng_conn_event_type type;
	const struct smtp_message *message;
	uint32_t rcpt_index;
	uint16_t code;
	bool is_local;
	uint8_t enhanced_class;
	enum smtp_client_error error;
	bool outcome_is_unknown;
	enum eng_conn_close_reason reason;
	int sys_error;
	bool was_connected;
	uint64_t connect_ms;
	uint64_t transaction_ms;
	uint32_t messages_count;
	char peer[ENG_CONN_PEER_SIZE];
};

/* A message the test builds: raw body, its wire form, recipients. */
struct t_conn_message {
	struct smtp_message message;
	struct smtp_address rcpts[T_CONN_RCPTS_MAX];
	char rcpt_names[T_CONN_RCPTS_MAX][64];
	uint8_t *raw;
	size_t raw_size;
	uint8_t *wire;
	size_t wire_size;
};

/* The owner: records events; on READY sends the next message, then QUITs
 * (or aborts) when none is left. On PIPELINE_SLOT (counted, not recorded)
 * it sends the next message behind the dot, unless no_pipeline_slot. */
struct t_conn_run {
	struct ring *ring;
	struct eng_conn conn;
	struct t_conn_event events[T_CONN_EVENTS_MAX];
	uint32_t event_count;
	struct t_conn_message *messages[T_CONN_MESSAGES_MAX];
	uint32_t message_count;
	uint32_t message_next_index;
	bool quit_when_done;	  /* else: stay idle on the last READY */
	bool abort_on_first_rcpt; /* eng_conn_abort() from inside an RCPT event */
	uint32_t reopen_count;	  /* reopen from inside CLOSED this many times */
	bool is_closed;
	bool saw_pipelining; /* the server offered PIPELINING (at READY) */
	bool no_pipeline_slot;	   /* ignore PIPELINE_SLOT: one message at a time */
	uint32_t slots_count;	   /* PIPELINE_SLOT events */
	uint32_t pipelined_count;  /* messages started behind a dot */
	struct sockaddr_storage addr;
	uint32_t addr_len;
	struct eng_conn_config config;
};

/* A peer process. */
struct t_conn_peer {
	pid_t pid;
	uint16_t port;
	char dir[T_CONN_PATH_SIZE];    /* scratch directory */
	char record[T_CONN_PATH_SIZE]; /* sink.py record / smtp-sink dump */
	char out[T_CONN_PATH_SIZE];    /* the peer's stdout */
};

/* Criterion .fini: stop every peer started by this test. */
void t_conn_fini(void);

/* A free TCP port on 127.0.0.1 (bound, read back, released). */
uint16_t t_conn_free_port(void);
/* 127.0.0.ip_last:port. */
void t_conn_addr(struct sockaddr_storage *addr, uint32_t *addr_len, uint8_t ip_last,
		 uint16_t port);

/* Start Postfix smtp-sink (-c counters to out, -D dump to record), or skip. */
void t_conn_start_smtp_sink(struct t_conn_peer *peer);
/* Start sink.py with extra arguments (NULL-terminated), or skip. */
void t_conn_start_py_sink(struct t_conn_peer *peer, const char *const *args);
/* Stop a peer (SIGTERM, wait) and remove its scratch directory. */
void t_conn_stop(struct t_conn_peer *peer);

/* smtp-sink's last counters line: -1s when none was printed yet. */
void t_conn_smtp_sink_counters(const struct t_conn_peer *peer, long *sess, long *quit,
			       long *mesg);
/* Occurrences of needle in a file. */
size_t t_conn_file_count(const char *path, const char *needle);
/* Line index of sink.py's record as text (NUL-terminated, in out). */
bool t_conn_record_line(const char *path, uint32_t index, char *out, size_t out_size);
/* Decode the body_hex field of a record line; returns the size or SIZE_MAX. */
size_t t_conn_record_body(const char *line, uint8_t *out, size_t out_size);

/* Default config: short timeouts for tests (ms). */
void t_conn_config(struct eng_conn_config *config, uint32_t connect_ms, uint32_t reply_ms);

/* Build a message: n recipients rcpt0@example.org..., or the given names. */
struct t_conn_message *t_conn_message_new(const char *const *rcpts, uint32_t rcpt_count,
					  const uint8_t *raw, size_t raw_size);
void t_conn_message_free(struct t_conn_message *message);
/* A raw body of about size bytes with every dot-stuffing edge case. */
size_t t_conn_raw_body(uint64_t seed, size_t size, uint8_t *out, size_t out_size);

/* A run (ring created, skips without io_uring) and its owner callback. */
struct t_conn_run *t_conn_run_new(void);
void t_conn_run_free(struct t_conn_run *run);
/* Open run->conn to addr with run->config; asserts success. */
void t_conn_run_open(struct t_conn_run *run);
/* Drive the ring until CLOSED or wait_ns passed (asserts CLOSED). */
void t_conn_run_until_closed(struct t_conn_run *run, uint64_t wait_ns);
/* Count events of a type. */
uint32_t t_conn_count(const struct t_conn_run *run, enum eng_conn_event_type type);
/* The last CLOSED event (asserts there is one). */
const struct t_conn_event *t_conn_closed(const struct t_conn_run *run);

/* A listener that accepts in the kernel but never talks (backlog 8), or,
 * with is_full, whose accept queue is full so SYNs are dropped. */
int t_conn_silent_listener(uint16_t *port, bool is_full, int *filler_fd);

#endif /* T_CONN_H */
