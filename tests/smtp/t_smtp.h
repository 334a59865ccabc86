/*
 * t_smtp.h - a scripted fake engine for smtp_client tests: records every
 * event and state change, drains the output as a socket would (optionally
 * in short sends), and lets the test play the server.
 */
#ifndef T_SMTP_H
#define T_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/smtp_client.h"

#define T_EVENTS_MAX 2100u
#define T_SENT_MAX (1u << 17)
#define T_TRACE_MAX 4096u
#define T_HELO_NAME "client.example"
#define T_START_MS 1000000u

struct t_event {
	enum smtp_event_type type;
	const struct smtp_message *message;
	uint32_t rcpt_index;
	uint16_t code;
	bool is_local;
	struct smtp_enhanced_status enhanced;
	enum smtp_client_error error;
	enum smtp_reply_error reply_error;
	bool outcome_is_unknown;
	size_t text_size;
	char text[160];
};

struct t_session {
	struct smtp_client client;
	struct t_event events[T_EVENTS_MAX];
	uint32_t event_count;
	uint32_t event_read_index;
	uint8_t sent[T_SENT_MAX];
	size_t sent_size;
	char trace[T_TRACE_MAX];
	size_t trace_size;
	uint64_t now_ms;
	size_t send_chunk_size; /* 0: send everything at once */
	const void *last_iov_base;
	/* smtp_client_output() calls that had bytes (one send each), and
	 * those that returned two iovecs (a body, then commands behind it). */
	uint32_t outputs_count;
	uint32_t outputs_two_count;
	/* SMTP_EV_PIPELINE_SLOT: counted; recorded only with record_slots. */
	uint32_t slots_count;
	bool record_slots;
	/* Death tests: call back into the client from the callback. */
	bool reenter_on_ready;
	const struct smtp_message *reenter_message;
};

struct t_message {
	struct smtp_message message;
	struct smtp_address rcpts[SMTP_RCPTS_PER_TRANSACTION_MAX];
	char names[SMTP_RCPTS_PER_TRANSACTION_MAX][24];
};

/* A session with default timeouts (config NULL) or the given config. */
struct t_session *t_session_new(const struct smtp_client_config *config);
void t_session_free(struct t_session *t);
void t_default_config(struct smtp_client_config *config);

/* Drain all output as the engine would, appending it to t->sent. */
void t_flush(struct t_session *t);
/* The server sends text (NUL-terminated script). */
void t_feed(struct t_session *t, const char *text);
void t_feed_bytes(struct t_session *t, const void *ptr, size_t len);
/* Assert what was sent since the last call, then forget it. */
void t_expect_sent(struct t_session *t, const char *bytes, size_t len);
#define T_EXPECT_SENT(t, s) t_expect_sent((t), (s), sizeof(s) - 1u)

/* Next recorded event, asserting its type. */
const struct t_event *t_next_event(struct t_session *t, enum smtp_event_type type);
void t_expect_no_event(struct t_session *t);

/* Greeting and EHLO answered with ehlo_reply; READY taken. */
void t_handshake(struct t_session *t, const char *ehlo_reply);

/* A new session (default config) after t_handshake(ehlo_reply) whose
 * transaction for m has gone out (its first batch, or MAIL lock-step):
 * nothing fed yet, the sent bytes forgotten. */
struct t_session *t_session_started(const char *ehlo_reply, const struct t_message *m);

/* Message from sender to count recipients r0@rcpt.example ... */
void t_message_init(struct t_message *m, const char *sender, uint32_t count, const char *body);

#endif /* T_SMTP_H */
