/*
 * smtp_client.h - the outbound SMTP client session: one state machine per
 * connection, with no I/O and no clock (docs/smtp-client.md).
 *
 * The engine owns the socket and the ring. It tells the session what
 * happened (bytes received, bytes sent, the time, a timer that fired, the
 * connection lost) and the session tells the engine what to send and what
 * came of each recipient and message:
 *
 *   smtp_client_init()          connected: the session awaits the greeting
 *   smtp_client_output()        what to send now, as iovecs (zero-copy body)
 *   smtp_client_consume()       n bytes of that output were sent
 *   smtp_client_feed()          bytes received: replies are parsed and acted on
 *   smtp_client_deadline_ms()   when the awaited reply (or send) times out
 *   smtp_client_timeout()       the engine's timer fired
 *   smtp_client_connection_lost()  EOF, reset or abort by the engine
 *   smtp_client_start_message() start a transaction (when idle, or behind a
 *                               dot after SMTP_EV_PIPELINE_SLOT)
 *   smtp_client_quit()          say goodbye (only when idle)
 *   smtp_client_tls_started()   the TLS handshake the session asked for is done
 *   smtp_client_tls_failed()    the TLS layer failed (handshake, alert, close_notify)
 *
 * Events come back through the event callback, synchronously, from inside
 * those calls: SMTP_EV_READY, SMTP_EV_RCPT, SMTP_EV_MESSAGE_DONE,
 * SMTP_EV_MESSAGE_FAILED, SMTP_EV_PIPELINE_SLOT, SMTP_EV_STARTTLS,
 * SMTP_EV_ERROR, SMTP_EV_CLOSED (see enum smtp_event_type). The callback must not call back into the same session
 * (asserted): it records what happened, and the engine acts after the
 * call returns (for example starts the next message after READY).
 *
 * Protocol (RFC 5321, RFC 2920):
 * - greeting (2xx), EHLO; EHLO answered 5xx falls back to HELO, which
 *   offers no extension. Capabilities come only from the last EHLO.
 * - With PIPELINING: [RSET] MAIL, every RCPT and DATA go out as one batch
 *   (as much as fits in the output buffer, the rest as it drains), and the
 *   replies are matched to the commands strictly in order. Without it:
 *   lock-step, one command, one reply.
 * - Behind the dot (RFC 2920 3.1: the message content may be the first
 *   "command" of a group): with PIPELINING, once DATA got its 354 and the
 *   body goes out (never after a lone dot), SMTP_EV_PIPELINE_SLOT says the
 *   next message may start. Its MAIL, RCPTs and DATA are queued behind the
 *   rest of the body, so body, ".", MAIL.. DATA leave in one send (output
 *   returns two iovecs). At most two messages: the previous one awaiting
 *   only its end-of-data reply, and the new transaction. The first reply
 *   after the body is the previous message's end-of-data reply (its final
 *   event), then come the new transaction's replies. A 4xx/5xx to the end
 *   of data fails only the previous message.
 * - RSET precedes a transaction only when the previous one ended without
 *   a reply to its end of data (DATA refused; MAIL or every RCPT refused
 *   and DATA not answered 354): after that reply, whatever its code, the
 *   transaction is over (RFC 5321 4.1.1.4). Never behind a dot.
 * - STARTTLS (RFC 3207), by config.tls_policy: after EHLO, when the policy
 *   is not NONE and STARTTLS is offered, the session sends STARTTLS. A 2xx
 *   reply with ANY byte after it in the same feed is response injection
 *   (reliability.md OUT-03): protocol error (SMTP_CLIENT_ERROR_TLS_INJECTION),
 *   the session closes without another byte. Otherwise SMTP_EV_STARTTLS
 *   tells the engine to run the handshake (state TLS, which awaits no
 *   reply; bytes fed in it are injection too); then the engine calls
 *   smtp_client_tls_started(): every capability is forgotten and EHLO is
 *   sent again (never STARTTLS twice). STARTTLS not offered (or HELO
 *   fallback) or answered 4xx/5xx (OUT-04): OPPORTUNISTIC goes on in
 *   plaintext; REQUIRED fails the session before any MAIL with
 *   SMTP_CLIENT_ERROR_TLS_REQUIRED (local 451 4.7.4) and says QUIT.
 * - One transaction in flight per session (two behind a dot, above);
 *   several per connection.
 * - Every awaited reply has a deadline (struct smtp_client_timeouts,
 *   defaults from RFC 5321 4.5.3.2). Sending the body has the data block
 *   deadline, renewed by every consume(). Behind a dot the oldest awaited
 *   reply's deadline applies: data block while the previous body goes out,
 *   then the end-of-data one, then the new transaction's.
 *
 * Failure rules:
 * - RCPT replies are provisional until the transaction's last reply (to
 *   DATA when refused, else to the end of data) is read in step: a
 *   session failure before it (every case below) voids them, and the
 *   MESSAGE_FAILED event (error set) applies to every recipient. A
 *   refused DATA reply with more bytes behind it in the same feed is
 *   such a failure: nothing is awaited after it, so the replies were out
 *   of step (SMTP_CLIENT_ERROR_UNEXPECTED_REPLY).
 * - A 421 reply at any point (even unsolicited): the server is closing.
 *   The current message fails with that reply (every recipient must be
 *   deferred), SMTP_EV_ERROR then SMTP_EV_CLOSED.
 * - A malformed reply, a reply when none is awaited, a reply before its
 *   command was fully sent, or a reply class the command cannot have
 *   (3xx except to DATA, 2xx to DATA): protocol error, handled like a 421
 *   with a local 4.5.0 status. Replies are never shifted onto other
 *   commands.
 * - Timeout or lost connection: the same with a local 4.4.2 status. After
 *   the body was fully sent the outcome is unknown (the server may have
 *   accepted): the event says so (outcome_is_unknown), recipients are
 *   deferred, a duplicate is possible (reliability.md OUT-09).
 * - Behind a dot, a session failure (421, protocol error, timeout, lost
 *   connection, TLS failure) fails both messages, each with exactly one
 *   final event, oldest first: the previous one with outcome_is_unknown
 *   when its body was fully sent (not for a 421), the new one as above
 *   (its RCPT replies void, its outcome known: its body never went out).
 * - All RCPTs rejected but DATA answered 354 (RFC 2920 3.1, OUT-06): only
 *   ".\r\n" is sent, never the body.
 *
 * Local refusals (smtp_client_start_message returns false after a
 * SMTP_EV_MESSAGE_FAILED event; nothing is sent, the session stays idle,
 * or behind the dot with the slot still open):
 * CR, LF, NUL or another control byte, '<' or '>' in an address, an empty
 * recipient, an address over SMTP_ADDRESS_SIZE_MAX (550 5.1.3); a message
 * larger than the server's SIZE (552 5.3.4); SMTPUTF8 needed and not
 * offered (553 5.6.7). Non-ASCII in an address means SMTPUTF8 is needed.
 * A message needing 8BITMIME is sent with BODY=8BITMIME when offered and
 * sent as it is when not: no bounce, and no downgrade either, because the
 * body goes out zero-copy from the spool (and a rewrite would break DKIM).
 * Postfix does the same when it cannot convert (or with
 * disable_mime_output_conversion = yes); by default it converts
 * MIME-declared 8-bit parts to 7-bit, which ringmail does not.
 *
 * Ownership:
 * - struct smtp_client lives in caller memory; init works in place; there
 *   is no allocation. Config is copied at init.
 * - The struct smtp_message, its addresses and its body are borrowed from
 *   smtp_client_start_message() until that message's final event
 *   (SMTP_EV_MESSAGE_DONE or SMTP_EV_MESSAGE_FAILED), or until the session
 *   closes; each of the two messages behind a dot on its own. The body is
 *   never copied: smtp_client_output() points into it. A send already in
 *   flight when the final event comes still reads the body: the engine
 *   keeps its reference until that send completes. A final event from a
 *   reply (feed) comes with no send in flight, since the engine feeds only
 *   then; one from a failure may not.
 * - Bytes returned by smtp_client_output() stay put until the next
 *   smtp_client_consume(); the engine keeps at most one send in flight and
 *   reports short sends with the short count.
 * - Text in an event (status.text) is valid only during the callback.
 */
#ifndef SMTP_CLIENT_H
#define SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "smtp_ehlo.h"
#include "smtp_reply.h"

/* Recipients in one transaction. RFC 5321 4.5.3.1.8 requires servers to
 * take at least 100; the engine splits by max_recipients_per_transaction,
 * which must not exceed this. */
#define SMTP_RCPTS_PER_TRANSACTION_MAX 1000u
/* Address bytes without the angle brackets: RFC 5321 4.5.3.1.3 allows a
 * 256-octet path; doubled for SMTPUTF8, as the spool does. */
#define SMTP_ADDRESS_SIZE_MAX 512u
/* EHLO/HELO name: a domain (255, RFC 1035) or an address literal. */
#define SMTP_HELO_NAME_SIZE_MAX 255u
/* Command output buffer per session. Holds many pipelined RCPTs; a longer
 * batch is produced as the buffer drains. */
#define SMTP_CLIENT_OUTPUT_SIZE 4096u
/* The longest single command: MAIL FROM:<addr> SIZE=20digits
 * BODY=8BITMIME SMTPUTF8 CRLF. */
#define SMTP_COMMAND_SIZE_MAX (SMTP_ADDRESS_SIZE_MAX + 64u)
/* Text kept of a refused MAIL's reply while the batch drains. */
#define SMTP_CLIENT_HELD_TEXT_SIZE 256u
/* smtp_client_deadline_ms() when no reply is awaited. */
#define SMTP_CLIENT_DEADLINE_NONE UINT64_MAX

_Static_assert(SMTP_CLIENT_OUTPUT_SIZE >= 2u * SMTP_COMMAND_SIZE_MAX,
	       "two of the longest commands fit the output buffer");
_Static_assert(SMTP_RCPTS_PER_TRANSACTION_MAX >= 100u, "RFC 5321 4.5.3.1.8");
_Static_assert(SMTP_HELO_NAME_SIZE_MAX + 8u <= SMTP_COMMAND_SIZE_MAX, "EHLO fits");

/* Receive-side states, in protocol order. */
enum smtp_client_state {
	SMTP_CLIENT_STATE_GREETING = 0, /* awaiting the 220 greeting */
	SMTP_CLIENT_STATE_EHLO,		/* awaiting the EHLO reply */
	SMTP_CLIENT_STATE_HELO,		/* awaiting the HELO reply (EHLO got 5xx) */
	SMTP_CLIENT_STATE_STARTTLS,	/* awaiting the STARTTLS reply */
	SMTP_CLIENT_STATE_TLS,		/* 220 to STARTTLS: the engine runs the handshake */
	SMTP_CLIENT_STATE_IDLE,		/* no transaction: start a message or QUIT */
	SMTP_CLIENT_STATE_RSET,		/* awaiting the RSET reply */
	SMTP_CLIENT_STATE_MAIL,		/* awaiting the MAIL FROM reply */
	SMTP_CLIENT_STATE_RCPT,		/* awaiting RCPT TO replies, in order */
	SMTP_CLIENT_STATE_DATA,		/* awaiting the DATA reply (354) */
	SMTP_CLIENT_STATE_BODY,		/* 354 received: the body is being sent */
	SMTP_CLIENT_STATE_DOT,		/* body or lone dot sent: awaiting the final reply */
	/* BODY and DOT stay the state while a next transaction is pipelined
	 * behind the dot: the previous message's reply comes first. */
	SMTP_CLIENT_STATE_QUIT,		/* awaiting the QUIT reply */
	SMTP_CLIENT_STATE_CLOSED,	/* terminal: the engine closes the socket */
	SMTP_CLIENT_STATE_COUNT
};

enum smtp_client_error {
	SMTP_CLIENT_ERROR_NONE = 0,
	SMTP_CLIENT_ERROR_SERVER_CLOSING,    /* 421 reply */
	SMTP_CLIENT_ERROR_MALFORMED_REPLY,   /* reply parser error: see reply_error */
	SMTP_CLIENT_ERROR_UNEXPECTED_REPLY,  /* no reply awaited, or command not yet sent */
	SMTP_CLIENT_ERROR_BAD_REPLY_CODE,    /* a reply class the command cannot have */
	SMTP_CLIENT_ERROR_TIMEOUT,	     /* a deadline passed */
	SMTP_CLIENT_ERROR_CONNECTION_LOST,   /* EOF, reset, or engine abort */
	SMTP_CLIENT_ERROR_GREETING_REJECTED, /* greeting not 2xx (and not 421) */
	SMTP_CLIENT_ERROR_HELO_REJECTED,     /* EHLO 4xx, or HELO not 2xx */
	SMTP_CLIENT_ERROR_RSET_REJECTED,     /* RSET not 2xx */
	SMTP_CLIENT_ERROR_TLS_REQUIRED,	     /* policy REQUIRED: no STARTTLS, or refused */
	SMTP_CLIENT_ERROR_TLS_INJECTION,     /* bytes after the STARTTLS 220 (OUT-03) */
	SMTP_CLIENT_ERROR_TLS_FAILED,	     /* handshake or TLS error (engine's word) */
	SMTP_CLIENT_ERROR_COUNT
};

enum smtp_event_type {
	/* Idle: the engine may start a message or QUIT. After EHLO/HELO and
	 * after every transaction's final event. */
	SMTP_EV_READY = 1,
	/* One recipient's RCPT reply: message, rcpt_index, status. 2xx means
	 * accepted for now (final outcome in MESSAGE_DONE/FAILED); 4xx/5xx
	 * is that recipient's outcome, but only once the message's final
	 * event confirms the replies were in step: hold it until then (see
	 * MESSAGE_FAILED with an error). */
	SMTP_EV_RCPT,
	/* Reply to the end of data, 2xx: delivered to every recipient
	 * accepted at RCPT. */
	SMTP_EV_MESSAGE_DONE,
	/* The message failed as a whole. error SMTP_CLIENT_ERROR_NONE (a
	 * MAIL, DATA or end-of-data reply read in step, or a local refusal;
	 * a refused MAIL is reported once the batch behind it is drained):
	 * applies to every recipient that has no 4xx/5xx RCPT event, and
	 * those RCPT replies stand. Any other error (421, protocol error,
	 * timeout, lost connection, TLS failure): the session broke before
	 * the transaction's last reply was read in step, so its RCPT replies
	 * are void (with PIPELINING a reply may have belonged to another
	 * command): the failure applies to EVERY recipient, those with a
	 * 4xx/5xx RCPT event included. A MESSAGE_DONE confirms them too. */
	SMTP_EV_MESSAGE_FAILED,
	/* Session-level failure: error says why; status holds the reply or a
	 * local status. SMTP_EV_CLOSED follows (at once, or after QUIT). */
	SMTP_EV_ERROR,
	/* The session is over: close the socket. Last event of a session. */
	SMTP_EV_CLOSED,
	/* STARTTLS answered 2xx with nothing after it: run the TLS handshake
	 * on the connection, then call smtp_client_tls_started() (or
	 * smtp_client_tls_failed()). Nothing is sent or fed meanwhile. */
	SMTP_EV_STARTTLS,
	/* With PIPELINING: DATA got its 354 and the body goes out. The engine
	 * may start the next message now (smtp_client_start_message in BODY
	 * or DOT), pipelined behind the dot. Optional: ignoring it leaves the
	 * old behaviour (READY once the end-of-data reply came). */
	SMTP_EV_PIPELINE_SLOT,
};

/* STARTTLS use (RFC 3207). NONE is 0: a zeroed config never asks for TLS. */
enum smtp_client_tls_policy {
	SMTP_CLIENT_TLS_NONE = 0,	/* never send STARTTLS */
	SMTP_CLIENT_TLS_OPPORTUNISTIC,	/* when offered; plaintext when not or refused */
	SMTP_CLIENT_TLS_REQUIRED,	/* when offered; else fail before MAIL (4.7.4) */
};

/* A reply code, enhanced status and text: received, or made up locally
 * (is_local) for refusals, timeouts and protocol errors. */
struct smtp_status {
	uint16_t code;				/* 2xx..5xx */
	struct smtp_enhanced_status enhanced;	/* status_class 0: none */
	bool is_local;				/* not sent by the server */
	const char *text;			/* borrowed during the callback */
	size_t text_size;
};

struct smtp_address {
	const char *ptr; /* not NUL-terminated */
	size_t len;	 /* 0 for the null sender <> */
};

/* A message transaction, described by the engine (borrowed, see above). */
struct smtp_message {
	struct smtp_address sender;	   /* len 0: null reverse-path */
	const struct smtp_address *rcpts; /* rcpt_count entries */
	uint32_t rcpt_count;		   /* 1..SMTP_RCPTS_PER_TRANSACTION_MAX */
	const uint8_t *body;		   /* wire form: CRLF, dot-stuffed, ends ".\r\n" */
	size_t body_size;
	uint64_t size;	     /* SIZE= value and SIZE check; 0: body_size is used */
	bool needs_8bit;     /* BODY=8BITMIME when offered */
	bool needs_smtputf8; /* SMTPUTF8 required */
	void *ctx;	     /* the engine's, untouched */
};

struct smtp_event {
	enum smtp_event_type type;
	const struct smtp_message *message; /* RCPT, MESSAGE_*: the message */
	uint32_t rcpt_index;		    /* RCPT: index into message->rcpts */
	struct smtp_status status;	    /* all but READY/CLOSED */
	enum smtp_client_error error;	    /* ERROR, CLOSED; MESSAGE_FAILED cause */
	enum smtp_reply_error reply_error;  /* with SMTP_CLIENT_ERROR_MALFORMED_REPLY */
	/* MESSAGE_FAILED after the whole body was sent and no reply came
	 * (timeout, lost connection, protocol error): the server may have
	 * taken the message. Defer, never bounce; count the possible
	 * duplicate. */
	bool outcome_is_unknown;
};

typedef void smtp_client_event_fn(void *ctx, const struct smtp_event *event);
typedef void smtp_client_trace_fn(void *ctx, enum smtp_client_state old_state,
				  enum smtp_client_state new_state);

/* Per-reply deadlines, milliseconds. */
struct smtp_client_timeouts {
	uint32_t greeting_ms;	/* RFC 5321 4.5.3.2.1: 5 min */
	uint32_t helo_ms;	/* EHLO/HELO: Postfix smtp_helo_timeout, 300 s */
	uint32_t rset_ms;	/* Postfix smtp_rset_timeout, 20 s */
	uint32_t mail_ms;	/* 4.5.3.2.2: 5 min */
	uint32_t rcpt_ms;	/* 4.5.3.2.3: 5 min */
	uint32_t data_ms;	/* 4.5.3.2.4 DATA initiation: 2 min */
	uint32_t data_block_ms; /* 4.5.3.2.5 each send of body bytes: 3 min */
	uint32_t dot_ms;	/* 4.5.3.2.6 DATA termination: 10 min */
	uint32_t quit_ms;	/* Postfix smtp_quit_timeout, 300 s */
};

struct smtp_client_config {
	const char *helo_name; /* copied at init; see smtp_client_helo_name_is_valid */
	size_t helo_name_len;
	struct smtp_client_timeouts timeouts;
	bool pipelining_is_disabled; /* lock-step even when PIPELINING is offered */
	enum smtp_client_tls_policy tls_policy;
};

/* A session. Fields are private to smtp_client.c; read them through the
 * accessors. */
struct smtp_client {
	enum smtp_client_state state;
	struct smtp_client_config config;
	char helo_name[SMTP_HELO_NAME_SIZE_MAX];
	struct smtp_reply_parser parser;
	struct smtp_ehlo_caps caps;
	smtp_client_event_fn *event_callback;
	void *event_ctx;
	smtp_client_trace_fn *trace_callback;
	void *trace_ctx;
	bool is_in_callback;
	bool reply_is_awaited; /* set when the current reply's first byte came */
	uint64_t deadline_ms;
	/* Output: commands in out_buf[out_head, out_used); or the body. */
	uint32_t out_head;
	uint32_t out_used;
	size_t body_sent_size;
	/* Commands produced, fully sent, and answered (greeting = command 0). */
	uint64_t commands_produced_count;
	uint64_t commands_sent_count;
	uint64_t replies_count;
	/* The transaction. Steps: 0 RSET, 1 MAIL, 2 + i RCPT i, 2 + n DATA. */
	const struct smtp_message *message;
	/* Behind a dot: the previous message, its body going out (BODY) or
	 * sent (DOT), awaiting only its end-of-data reply; message is then
	 * the next transaction. NULL otherwise. body_sent_size is its. */
	const struct smtp_message *prev_message;
	uint32_t rcpt_count;	      /* copy of message->rcpt_count */
	uint32_t step_produced_count; /* next step to produce */
	uint32_t step_replied_count;  /* next step whose reply is awaited */
	uint32_t rcpts_accepted_count;
	uint64_t message_size;
	bool message_has_final_event;
	bool message_needs_smtputf8;
	bool is_dot_only; /* lone ".\r\n" instead of the body (OUT-06) */
	/* MAIL 4xx/5xx: the batch drains, then the message fails with it. */
	bool mail_is_refused;
	struct smtp_status mail_status; /* text: mail_text, set when emitted */
	char mail_text[SMTP_CLIENT_HELD_TEXT_SIZE];
	bool is_pipelining;
	bool rset_is_needed;
	bool is_tls; /* the handshake completed: no second STARTTLS */
	enum smtp_client_error quit_error; /* reason QUIT was sent, if not asked */
	char out_buf[SMTP_CLIENT_OUTPUT_SIZE];
};

/* RFC 5321 4.5.3.2 defaults and Postfix's for the rest. */
void smtp_client_timeouts_default(struct smtp_client_timeouts *timeouts);

/* True when name can go in EHLO/HELO: 1..SMTP_HELO_NAME_SIZE_MAX bytes of
 * printable ASCII without space. The engine checks its config with this;
 * init asserts it. */
bool smtp_client_helo_name_is_valid(const char *name, size_t name_len);

/*
 * The connection is up: prepare client in place, awaiting the greeting
 * with the greeting deadline from now_ms. event_callback is required;
 * event_ctx is passed back to it. config is copied.
 */
void smtp_client_init(struct smtp_client *client, const struct smtp_client_config *config,
		      uint64_t now_ms, void *event_ctx, smtp_client_event_fn *event_callback);

/* Optional: called with old and new state on every state change. */
void smtp_client_set_trace(struct smtp_client *client, void *trace_ctx,
			   smtp_client_trace_fn *trace_callback);

/*
 * What to send now: fills up to iov_max (>= 1) iovecs and returns how many
 * (0: nothing to send). Commands come from the session's buffer, the body
 * straight from the message. Does not change the session. The engine must
 * not write through iov_base.
 */
uint32_t smtp_client_output(const struct smtp_client *client, struct iovec *iov,
			    uint32_t iov_max);

/* Total bytes smtp_client_output() would return now. */
size_t smtp_client_output_size(const struct smtp_client *client);

/*
 * sent_size bytes of the output were sent (<= smtp_client_output_size()).
 * Renews the deadline and may produce more pipelined commands. After
 * SMTP_EV_CLOSED it does nothing (a send may complete after the close).
 */
void smtp_client_consume(struct smtp_client *client, size_t sent_size, uint64_t now_ms);

/*
 * Bytes received. Complete replies are acted on one at a time, in order;
 * a partial reply is kept for the next call. Bytes after SMTP_EV_CLOSED
 * (even in this very buffer) are ignored. ptr is borrowed until return.
 */
void smtp_client_feed(struct smtp_client *client, const uint8_t *ptr, size_t len,
		      uint64_t now_ms);

/* Absolute time (ms, the engine's clock) by which the awaited reply or
 * send progress must come, or SMTP_CLIENT_DEADLINE_NONE. */
uint64_t smtp_client_deadline_ms(const struct smtp_client *client);

/*
 * The engine's timer fired. If now_ms has reached the deadline, the
 * session fails (SMTP_CLIENT_ERROR_TIMEOUT; in QUIT it just closes) and
 * true is returned; otherwise the timer was stale, nothing happens and
 * false is returned.
 */
bool smtp_client_timeout(struct smtp_client *client, uint64_t now_ms);

/* The connection is gone (EOF, error) or the engine aborts it: fail what
 * is pending and close. No-op when already closed. */
void smtp_client_connection_lost(struct smtp_client *client, uint64_t now_ms);

/*
 * Start a transaction; the session must be idle, or behind a dot
 * (smtp_client_may_pipeline) (asserted). Returns true
 * when it started. Returns false when the message is refused locally: a
 * SMTP_EV_MESSAGE_FAILED event with a local 5xx status has been delivered,
 * nothing is sent, and the session is still idle (no new READY).
 * message->rcpt_count must be 1..SMTP_RCPTS_PER_TRANSACTION_MAX and the
 * body must end with ".\r\n" (asserted: engine preconditions).
 */
bool smtp_client_start_message(struct smtp_client *client, const struct smtp_message *message,
			       uint64_t now_ms);

/* Send QUIT; the session must be idle (asserted). SMTP_EV_CLOSED follows
 * the reply (or its timeout). */
void smtp_client_quit(struct smtp_client *client, uint64_t now_ms);

/*
 * The TLS handshake asked for by SMTP_EV_STARTTLS completed (state TLS,
 * asserted): capabilities are forgotten, the reply parser reset, and EHLO
 * is sent again; later replies are read from the decrypted stream.
 */
void smtp_client_tls_started(struct smtp_client *client, uint64_t now_ms);

/* The TLS layer failed (handshake error, alert, close_notify, a record
 * that does not decrypt): like a lost connection, with
 * SMTP_CLIENT_ERROR_TLS_FAILED and a local 451 4.7.0 status; a message
 * whose body was fully sent has an unknown outcome. No-op when closed. */
void smtp_client_tls_failed(struct smtp_client *client, uint64_t now_ms);

enum smtp_client_state smtp_client_state(const struct smtp_client *client);
/* True once the session runs over TLS (smtp_client_tls_started). */
bool smtp_client_is_tls(const struct smtp_client *client);
bool smtp_client_is_idle(const struct smtp_client *client);
/* True when smtp_client_start_message() may pipeline a message behind the
 * dot now: PIPELINING, BODY or DOT of a message with a body (not a lone
 * dot), and no message already pipelined. */
bool smtp_client_may_pipeline(const struct smtp_client *client);
bool smtp_client_is_closed(const struct smtp_client *client);
/* Capabilities of the last EHLO (none after HELO). */
const struct smtp_ehlo_caps *smtp_client_caps(const struct smtp_client *client);

const char *smtp_client_state_name(enum smtp_client_state state);
const char *smtp_client_error_name(enum smtp_client_error error);

#endif /* SMTP_CLIENT_H */
