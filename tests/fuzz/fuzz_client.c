/*
 * fuzz_client.c - libFuzzer harness for the outbound SMTP client session
 * fed arbitrary server bytes (smtp/smtp_client.h; reliability.md 3.1
 * fuzz_client_session, FZ-02, OUT-01..OUT-13).
 *
 * A fake engine drives one connection through whole message transactions
 * (greeting, EHLO, MAIL, RCPT..., DATA, body, dot, then up to two more
 * messages, after READY or pipelined behind the previous dot, then QUIT)
 * and plays the server with the fuzz bytes. Input:
 *
 *   byte 0  flags: 1 no PIPELINING, 2 end by timeouts (else connection
 *           lost), 4 a second message, 8 needs 8BITMIME, 16 needs
 *           SMTPUTF8, 32 null sender, 64 QUIT when done, 128 SIZE 1 GB
 *   byte 1  sends: low 7 bits the most bytes per send (0: all); 128 one
 *           send per step, so replies can arrive before a command is out
 *   byte 2  recipients: (b & 127) % 8 + 1, or 300 with 128
 *   byte 3  body: % 4 picks one of four wire-form bodies; 4 the first
 *           recipient is empty, 8 the last one is over SMTP_ADDRESS_SIZE_MAX;
 *           16 the next message starts behind the dot, on
 *           SMTP_EV_PIPELINE_SLOT (else after READY); 32 one more message
 *           (up to three); 64 the slot is taken late, after one more send
 *           (mid-body with small sends, else in DOT); 128 the messages
 *           differ: message i has body (b + i) % 4, and only the second
 *           one has the address, SIZE and SMTPUTF8 quirks (so it can be
 *           refused locally behind the dot while the others go out)
 *   byte 4  1 a non-ASCII recipient, 2 a recipient with a CR, 4|8 the
 *           STARTTLS policy ((b >> 2) & 3: 0 none, 1 opportunistic, 2 and
 *           3 required), 16 the TLS handshake fails, 32 the chunk after
 *           the STARTTLS event is fed before the handshake completes (the
 *           response injection of OUT-03), 64 a sender with a '<', 128 a
 *           state trace callback
 *   then    chunks: a length byte n and n server bytes (fewer at the end);
 *           n == 0 means "the engine's timer fires at the deadline".
 *   The engine runs the handshake asked for by SMTP_EV_STARTTLS before the
 *   next chunk (after it with 32), then calls smtp_client_tls_started(), or
 *   smtp_client_tls_failed() with 16; replies then come "decrypted" from
 *   the same chunks. Inputs from before byte 3 bits 16..128 existed keep
 *   their meaning (those bits were 0 in them).
 *
 * Every message has its own struct smtp_message, recipient array and body
 * buffer, so each body byte sent and each event names its message.
 *
 * Invariants, beyond memory safety under ASan/UBSan and the session's own
 * assertions:
 * - commands are CRLF lines of known verbs, at most SMTP_COMMAND_SIZE_MAX;
 *   after an ERROR event only QUIT goes out;
 * - body bytes go out only in BODY, only those of the oldest open message,
 *   in order, after a 2xx to some RCPT of that message (never after all
 *   were refused: OUT-06); output is one iovec, or two behind a dot (the
 *   previous body, then the next transaction's commands);
 * - MESSAGE_DONE only with a server 2xx, after that message's whole body;
 *   outcome_is_unknown only for a message whose whole body was sent;
 *   MESSAGE_FAILED carries a 4xx or 5xx;
 * - every started message gets exactly one final event, oldest first (a
 *   local refusal: at once, from start_message, a local 5xx that changes
 *   nothing, and behind a dot the slot stays open); RCPT events only for
 *   the one open message, before its body, at most one per recipient;
 *   at most two messages open; CLOSED comes exactly once, last, and the
 *   session always ends closed;
 * - behind the dot (RFC 2920 3.1): PIPELINE_SLOT only with PIPELINING
 *   offered and not disabled, in BODY before any body byte; a message
 *   started there leaves the state and the deadline alone and queues
 *   MAIL (never RSET); no RSET directly behind a body or a lone dot, and
 *   a transaction started when idle opens with RSET exactly when the
 *   previous one ended without its dot sent (no end-of-data reply);
 * - replies_count <= commands_sent_count <= commands_produced_count;
 * - event texts are readable for text_size bytes, <= SMTP_REPLY_TEXT_MAX;
 * - STARTTLS (RFC 3207, OUT-03/OUT-04): sent only with a policy, at most
 *   once per session and never after a MAIL; SMTP_EV_STARTTLS only after
 *   it was sent, in state TLS, where nothing is sent; after the handshake
 *   the capabilities are empty and the next command is EHLO; with policy
 *   REQUIRED no MAIL goes out before the handshake completed; after a
 *   TLS_INJECTION error not one more byte is sent;
 * - after CLOSED, consume(), connection_lost() and tls_failed() do nothing.
 */
#include <string.h>

#include "fuzz_common.h"
#include "smtp/smtp_client.h"

#define RCPTS_MAX 300u
#define MESSAGES_MAX 3u
#define HELO_NAME "client.example"
#define BIG_BODY_LINES 4000u
#define BIG_BODY_SIZE (BIG_BODY_LINES * 8u + 3u)
#define SMALL_BODY_SIZE_MAX 64u

enum {
	FLAG_NO_PIPELINING = 1,
	FLAG_END_BY_TIMEOUT = 2,
	FLAG_SECOND_MESSAGE = 4,
	FLAG_8BIT = 8,
	FLAG_SMTPUTF8 = 16,
	FLAG_NULL_SENDER = 32,
	FLAG_QUIT = 64,
	FLAG_SIZE_BIG = 128,
};

/* Byte 3, above the body choice. */
enum {
	RCPT_EMPTY = 4,
	RCPT_LONG = 8,
	BEHIND_DOT = 16,
	THIRD_MESSAGE = 32,
	SLOT_LATE = 64,
	MESSAGES_VARY = 128,
};

/* Byte 4. */
enum {
	ADDR_NON_ASCII = 1,
	ADDR_CR = 2,
	TLS_POLICY_SHIFT = 2,
	TLS_HANDSHAKE_FAILS = 16,
	TLS_FEED_BEFORE_HANDSHAKE = 32,
	SENDER_BAD = 64,
	TRACE = 128,
};

/* The first command line expected of a transaction just started. */
enum first_line { FIRST_ANY = 0, FIRST_RSET, FIRST_MAIL };

/* One message the engine started (or will start), and what it saw of it. */
struct msg {
	struct smtp_message message;
	struct smtp_address rcpts[RCPTS_MAX];
	bool rcpt_seen[RCPTS_MAX];
	uint8_t small_body[SMALL_BODY_SIZE_MAX];
	uint32_t rcpts_accepted;
	size_t body_sent;
	bool is_dot_sent; /* its body's last byte, or its lone ".", went out */
	bool is_open;	  /* started, final event not yet seen */
};

struct harness {
	struct smtp_client client;
	uint64_t now_ms;
	uint8_t cfg[5];
	uint8_t flags;	 /* byte 0 */
	uint8_t options; /* byte 4 */
	enum smtp_client_tls_policy tls_policy;
	size_t send_max;
	bool is_one_send_per_step;
	/* Messages, in the order they start; at most two open at once. */
	struct msg msgs[MESSAGES_MAX];
	uint32_t messages_wanted;
	uint32_t messages_started;
	uint32_t open_count;
	const struct msg *starting; /* inside smtp_client_start_message */
	bool quit_is_sent;
	/* Behind the dot. */
	bool is_slot_offered; /* PIPELINE_SLOT seen, not yet taken or stale */
	uint32_t slot_sends;  /* sends since then */
	/* RSET rules. */
	bool rset_is_owed; /* the last transaction ended without its dot sent */
	bool is_after_dot; /* the last thing sent was a body or a lone dot */
	enum first_line first_line;
	/* Session. */
	bool is_closed_event_seen;
	bool is_error_seen;
	bool is_injection_seen; /* ERROR TLS_INJECTION */
	uint32_t event_count;
	/* STARTTLS. */
	bool is_starttls_sent;
	bool is_handshake_owed; /* SMTP_EV_STARTTLS seen, handshake not run yet */
	bool is_handshake_deferred;
	bool is_ehlo_expected; /* the handshake completed: EHLO comes next */
	uint32_t mail_sent_count;
	uint32_t trace_count;
	/* Command output: the line being sent. */
	char line[SMTP_COMMAND_SIZE_MAX + 2u];
	size_t line_size;
	uint64_t text_sum;
};

static struct harness h;
static char rcpt_names[RCPTS_MAX][32];
static size_t rcpt_name_sizes[RCPTS_MAX];
static char long_rcpt[SMTP_ADDRESS_SIZE_MAX + 1u];
/* One big body per message slot, so a body pointer names its message. */
static uint8_t big_bodies[MESSAGES_MAX][BIG_BODY_SIZE];
static bool is_built;

static const char *const bodies[3] = {
	"Subject: fuzz\r\n\r\nhello\r\n.\r\n",
	".\r\n",
	"..leading dot\r\n...\r\n\r\n.x\r\n.\r\n",
};

/* The constant parts, once per process. */
static void
statics_build(void)
{
	if (is_built)
		return;
	for (uint32_t m = 0; m < MESSAGES_MAX; m++) {
		size_t pos = 0;

		for (uint32_t i = 0; i < BIG_BODY_LINES; i++) {
			memcpy(big_bodies[m] + pos, i % 7u == 0 ? "..dots\r\n" : "a line\r\n", 8);
			pos += 8;
		}
		memcpy(big_bodies[m] + pos, ".\r\n", 3);
	}
	for (uint32_t i = 0; i < RCPTS_MAX; i++) {
		int n = snprintf(rcpt_names[i], sizeof(rcpt_names[i]), "r%u@rcpt.example", i);

		rcpt_name_sizes[i] = (size_t)n;
	}
	memset(long_rcpt, 'a', sizeof(long_rcpt));
	is_built = true;
}

static void
check_counters(void)
{
	const struct smtp_client *c = &h.client;

	FUZZ_CHECK(c->replies_count <= c->commands_sent_count, "replies <= commands sent");
	FUZZ_CHECK(c->commands_sent_count <= c->commands_produced_count, "sent <= produced");
	FUZZ_CHECK(c->out_head <= c->out_used && c->out_used <= SMTP_CLIENT_OUTPUT_SIZE,
		   "output buffer bounds");
}

static void
check_status(const struct smtp_status *status)
{
	FUZZ_CHECK(status->code >= 200 && status->code <= 599, "status code 200..599");
	FUZZ_CHECK(status->text_size <= SMTP_REPLY_TEXT_MAX, "status text bounded");
	FUZZ_CHECK(status->text != NULL || status->text_size == 0, "status text pointer");
	h.text_sum += fuzz_hash(status->text, status->text_size); /* ASan reads it all */
	FUZZ_CHECK(status->enhanced.status_class == 0 ||
			   status->enhanced.status_class == status->code / 100,
		   "enhanced class matches the code");
}

/* The started message an event names, or NULL. */
static struct msg *
msg_of(const struct smtp_message *message)
{
	for (uint32_t i = 0; i < h.messages_started; i++) {
		if (message == &h.msgs[i].message)
			return &h.msgs[i];
	}
	return NULL;
}

/* The oldest open message (the one whose replies come first), or NULL. */
static struct msg *
msg_oldest_open(void)
{
	for (uint32_t i = 0; i < h.messages_started; i++) {
		if (h.msgs[i].is_open)
			return &h.msgs[i];
	}
	return NULL;
}

/* The newest open message (the current transaction), or NULL. */
static struct msg *
msg_newest_open(void)
{
	for (uint32_t i = h.messages_started; i > 0; i--) {
		if (h.msgs[i - 1].is_open)
			return &h.msgs[i - 1];
	}
	return NULL;
}

/* A local refusal: delivered from inside smtp_client_start_message. */
static void
check_refusal(const struct smtp_event *event)
{
	FUZZ_CHECK(event->type == SMTP_EV_MESSAGE_FAILED && event->status.is_local &&
			   event->status.code / 100 == 5,
		   "a local refusal is a MESSAGE_FAILED with a local 5xx");
	FUZZ_CHECK(event->error == SMTP_CLIENT_ERROR_NONE && !event->outcome_is_unknown,
		   "a local refusal is no session error and no doubt");
}

static void
on_final(const struct smtp_event *event)
{
	struct msg *m = msg_of(event->message);

	FUZZ_CHECK(m != NULL && m->is_open, "final event of an open message");
	check_status(&event->status);
	if (m == h.starting)
		check_refusal(event);
	else
		FUZZ_CHECK(m == msg_oldest_open(), "final events oldest first");
	if (event->type == SMTP_EV_MESSAGE_DONE) {
		FUZZ_CHECK(event->status.code / 100 == 2 && !event->status.is_local,
			   "DONE only on a server 2xx");
		FUZZ_CHECK(m->rcpts_accepted >= 1, "DONE only with an accepted recipient");
		FUZZ_CHECK(m->body_sent == m->message.body_size, "DONE only after its whole body");
	} else {
		FUZZ_CHECK(event->status.code / 100 == 4 || event->status.code / 100 == 5,
			   "FAILED carries a 4xx or 5xx");
		FUZZ_CHECK(!event->outcome_is_unknown || m->body_sent == m->message.body_size,
			   "outcome unknown only after its whole body");
	}
	/* A broken session voids the RCPT replies: it must defer all. */
	FUZZ_CHECK(event->error == SMTP_CLIENT_ERROR_NONE || event->status.code / 100 == 4,
		   "a MESSAGE_FAILED with an error is a 4xx");
	m->is_open = false;
	h.open_count--;
	if (m != h.starting) /* ended by a reply: RSET next unless it had one to its dot */
		h.rset_is_owed = !m->is_dot_sent;
}

static void
on_rcpt(const struct smtp_event *event)
{
	struct msg *m = msg_of(event->message);

	FUZZ_CHECK(m != NULL && m->is_open, "RCPT of an open message");
	FUZZ_CHECK(h.open_count == 1, "RCPT events only with no earlier message pending");
	FUZZ_CHECK(m->body_sent == 0 && !m->is_dot_sent, "RCPT events before the body");
	FUZZ_CHECK(event->rcpt_index < m->message.rcpt_count, "RCPT index in range");
	FUZZ_CHECK(!m->rcpt_seen[event->rcpt_index], "one RCPT event per recipient");
	m->rcpt_seen[event->rcpt_index] = true;
	check_status(&event->status);
	FUZZ_CHECK(event->status.code / 100 != 3, "RCPT is never 3xx");
	if (event->status.code / 100 == 2)
		m->rcpts_accepted++;
}

static void
on_error(const struct smtp_event *event)
{
	check_status(&event->status);
	FUZZ_CHECK(event->error > SMTP_CLIENT_ERROR_NONE && event->error < SMTP_CLIENT_ERROR_COUNT,
		   "ERROR names an error");
	FUZZ_CHECK(smtp_client_error_name(event->error) != NULL, "error name");
	FUZZ_CHECK(event->error != SMTP_CLIENT_ERROR_MALFORMED_REPLY ||
			   smtp_reply_error_name(event->reply_error) != NULL,
		   "reply error name");
	FUZZ_CHECK(event->error != SMTP_CLIENT_ERROR_TLS_REQUIRED ||
			   h.tls_policy == SMTP_CLIENT_TLS_REQUIRED,
		   "TLS_REQUIRED only with policy REQUIRED");
	FUZZ_CHECK(event->error != SMTP_CLIENT_ERROR_TLS_REQUIRED ||
			   (event->status.is_local && event->status.code == 451),
		   "TLS_REQUIRED has the local 451 status, not the server's");
	FUZZ_CHECK(event->error != SMTP_CLIENT_ERROR_TLS_INJECTION || h.is_starttls_sent,
		   "injection only after STARTTLS");
	FUZZ_CHECK(h.open_count == 0, "ERROR after every pending message's final event");
	h.is_error_seen = true;
	if (event->error == SMTP_CLIENT_ERROR_TLS_INJECTION)
		h.is_injection_seen = true;
}

static void
on_pipeline_slot(void)
{
	const struct msg *m = msg_oldest_open();

	FUZZ_CHECK(!(h.flags & FLAG_NO_PIPELINING) &&
			   smtp_ehlo_has(smtp_client_caps(&h.client), SMTP_EXT_PIPELINING),
		   "PIPELINE_SLOT only with PIPELINING in use");
	FUZZ_CHECK(h.open_count == 1 && m != NULL && m->body_sent == 0,
		   "PIPELINE_SLOT of the one open message, before its body");
	FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_BODY &&
			   smtp_client_may_pipeline(&h.client),
		   "PIPELINE_SLOT when the body goes out");
	h.is_slot_offered = true;
	h.slot_sends = 0;
}

static void
event_callback(void *ctx, const struct smtp_event *event)
{
	FUZZ_CHECK(ctx == &h, "event context");
	FUZZ_CHECK(!h.is_closed_event_seen, "no event after CLOSED");
	h.event_count++;
#ifdef FUZZ_TRACE /* -DFUZZ_TRACE: print the session's events */
	const struct msg *traced = msg_of(event->message);

	fprintf(stderr, "event %d message %d rcpt %u code %u error %s unknown %d state %s\n",
		(int)event->type, traced != NULL ? (int)(traced - h.msgs) : -1, event->rcpt_index,
		event->status.code, smtp_client_error_name(event->error),
		(int)event->outcome_is_unknown,
		smtp_client_state_name(smtp_client_state(&h.client)));
#endif
	switch (event->type) {
	case SMTP_EV_READY:
		FUZZ_CHECK(h.open_count == 0 && smtp_client_is_idle(&h.client),
			   "READY only between messages");
		break;
	case SMTP_EV_RCPT:
		on_rcpt(event);
		break;
	case SMTP_EV_MESSAGE_DONE:
	case SMTP_EV_MESSAGE_FAILED:
		on_final(event);
		break;
	case SMTP_EV_ERROR:
		on_error(event);
		break;
	case SMTP_EV_STARTTLS:
		FUZZ_CHECK(h.is_starttls_sent && !h.is_handshake_owed, "STARTTLS event after STARTTLS");
		FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_TLS, "STARTTLS event in TLS");
		FUZZ_CHECK(!smtp_client_is_tls(&h.client), "one handshake per session");
		FUZZ_CHECK(smtp_client_output_size(&h.client) == 0, "nothing to send in TLS");
		FUZZ_CHECK(h.open_count == 0, "no message open at STARTTLS");
		h.is_handshake_owed = true;
		break;
	case SMTP_EV_PIPELINE_SLOT:
		on_pipeline_slot();
		break;
	case SMTP_EV_CLOSED:
		FUZZ_CHECK(h.open_count == 0, "no message open at CLOSED");
		h.is_closed_event_seen = true;
		break;
	default:
		FUZZ_CHECK(0, "known event type");
	}
}

static void
trace_callback(void *ctx, enum smtp_client_state old_state, enum smtp_client_state new_state)
{
	FUZZ_CHECK(ctx == &h, "trace context");
	FUZZ_CHECK(old_state < SMTP_CLIENT_STATE_COUNT && new_state < SMTP_CLIENT_STATE_COUNT,
		   "trace states in range");
	FUZZ_CHECK(old_state != new_state, "a trace is a change");
	FUZZ_CHECK(old_state != SMTP_CLIENT_STATE_CLOSED, "CLOSED is terminal");
	FUZZ_CHECK(smtp_client_state_name(old_state) != NULL &&
			   smtp_client_state_name(new_state) != NULL,
		   "state names");
	FUZZ_CHECK(new_state != SMTP_CLIENT_STATE_TLS || old_state == SMTP_CLIENT_STATE_STARTTLS,
		   "TLS only from STARTTLS");
	h.trace_count++;
}

static bool
line_is_known_command(const char *line, size_t size)
{
	static const char *const verbs[] = {"EHLO ", "HELO ", "MAIL FROM:<", "RCPT TO:<", "DATA",
					    "RSET",  "QUIT",  "STARTTLS",    "."};

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		size_t n = strlen(verbs[i]);

		if (size >= n && memcmp(line, verbs[i], n) == 0)
			return verbs[i][0] != '.' || size == 1;
	}
	return false;
}

/* A complete command line (CRLF stripped): the RSET rules. */
static void
check_transaction_line(const char *line, size_t size)
{
	bool is_rset = size == 4 && memcmp(line, "RSET", 4) == 0;
	bool is_mail = size >= 11 && memcmp(line, "MAIL FROM:<", 11) == 0;

	FUZZ_CHECK(!h.is_after_dot || !is_rset, "no RSET directly behind a dot");
	h.is_after_dot = false;
	if (h.first_line == FIRST_RSET)
		FUZZ_CHECK(is_rset, "RSET after a transaction that got no end-of-data reply");
	if (h.first_line == FIRST_MAIL)
		FUZZ_CHECK(is_mail, "MAIL first: no RSET after an end-of-data reply or a dot");
	h.first_line = FIRST_ANY;
	if (size == 1 && line[0] == '.') { /* the lone dot (OUT-06) of the current transaction */
		struct msg *m = msg_newest_open();

		FUZZ_CHECK(m != NULL && h.open_count == 1 && m->body_sent == 0,
			   "a lone dot only for the one open message, instead of its body");
		m->is_dot_sent = true;
		h.is_after_dot = true;
	}
}

/* A complete command line (CRLF stripped): the STARTTLS rules. */
static void
check_command_line(const char *line, size_t size)
{
	bool is_ehlo = size >= 5 && memcmp(line, "EHLO ", 5) == 0;

	FUZZ_CHECK(!h.is_ehlo_expected || is_ehlo, "EHLO first after the TLS handshake");
	h.is_ehlo_expected = false;
	if (size == 8 && memcmp(line, "STARTTLS", 8) == 0) {
		FUZZ_CHECK(h.tls_policy != SMTP_CLIENT_TLS_NONE, "STARTTLS only with a policy");
		FUZZ_CHECK(!h.is_starttls_sent, "STARTTLS at most once per session");
		FUZZ_CHECK(h.mail_sent_count == 0, "STARTTLS never after MAIL");
		FUZZ_CHECK(!smtp_client_is_tls(&h.client), "no STARTTLS under TLS");
		h.is_starttls_sent = true;
	}
	if (size >= 11 && memcmp(line, "MAIL FROM:<", 11) == 0) {
		FUZZ_CHECK(h.tls_policy != SMTP_CLIENT_TLS_REQUIRED || smtp_client_is_tls(&h.client),
			   "policy REQUIRED: no MAIL in plaintext (OUT-04)");
		h.mail_sent_count++;
	}
	check_transaction_line(line, size);
}

/* Command bytes: CRLF lines of known commands, each within the limit. */
static void
check_command_bytes(const uint8_t *ptr, size_t size)
{
	for (size_t i = 0; i < size; i++) {
		uint8_t c = ptr[i];

		FUZZ_CHECK(c != 0, "no NUL in commands");
		if (h.line_size > 0 && h.line[h.line_size - 1] == '\r')
			FUZZ_CHECK(c == '\n', "CR only before LF in commands");
		if (c == '\n') {
			FUZZ_CHECK(h.line_size >= 1 && h.line[h.line_size - 1] == '\r',
				   "LF only after CR in commands");
			FUZZ_CHECK(line_is_known_command(h.line, h.line_size - 1), "known command");
			FUZZ_CHECK(!h.is_error_seen ||
					   (h.line_size == 5 && memcmp(h.line, "QUIT", 4) == 0),
				   "after an ERROR only QUIT is sent");
			check_command_line(h.line, h.line_size - 1);
			h.line_size = 0;
			continue;
		}
		FUZZ_CHECK(h.line_size < SMTP_COMMAND_SIZE_MAX, "command within the limit");
		h.line[h.line_size++] = (char)c;
	}
}

/* The started message whose body holds ptr, or NULL (then: commands). */
static struct msg *
msg_of_body(const uint8_t *ptr)
{
	for (uint32_t i = 0; i < h.messages_started; i++) {
		const struct smtp_message *message = &h.msgs[i].message;

		if (ptr >= message->body && ptr < message->body + message->body_size)
			return &h.msgs[i];
	}
	return NULL;
}

/* size bytes of one iovec go out: body bytes (of the oldest open message,
 * in order) or command bytes (from the session's buffer). */
static void
check_sent_part(const struct iovec *iov, size_t size, uint32_t index, uint32_t count)
{
	const uint8_t *base = iov->iov_base;
	struct msg *m = msg_of_body(base);

	FUZZ_CHECK(count == 1 || (index == 0) == (m != NULL),
		   "two iovecs: the previous body, then the next commands");
	if (m == NULL) {
		FUZZ_CHECK(base >= (const uint8_t *)h.client.out_buf &&
				   base + iov->iov_len <=
					   (const uint8_t *)h.client.out_buf + SMTP_CLIENT_OUTPUT_SIZE,
			   "commands come from the session buffer");
		check_command_bytes(base, size);
		return;
	}
	FUZZ_CHECK(m->is_open && m == msg_oldest_open(), "body only of the oldest open message");
	FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_BODY, "body only in BODY");
	FUZZ_CHECK(m->rcpts_accepted >= 1, "no body when no recipient was accepted");
	FUZZ_CHECK(!h.is_error_seen, "no body after an ERROR");
	FUZZ_CHECK(base == m->message.body + m->body_sent, "body sent in order");
	FUZZ_CHECK(iov->iov_len == m->message.body_size - m->body_sent, "the rest of the body");
	FUZZ_CHECK(h.line_size == 0, "the body starts on a command line boundary");
	m->body_sent += size;
	if (m->body_sent == m->message.body_size) {
		m->is_dot_sent = true;
		h.is_after_dot = true;
	}
}

/* One send: take what output() offers (up to send_max) and consume it. */
static bool
send_once(void)
{
	struct iovec iov[2];
	uint32_t count = smtp_client_output(&h.client, iov, 2);
	size_t total = 0;
	size_t size;
	size_t left;

	if (count == 0)
		return false;
	FUZZ_CHECK(!h.is_injection_seen, "not one byte after STARTTLS response injection");
	FUZZ_CHECK(smtp_client_state(&h.client) != SMTP_CLIENT_STATE_TLS, "nothing sent in TLS");
	FUZZ_CHECK(count <= 2 && (count == 1 || h.open_count == 2), "two iovecs only behind a dot");
	for (uint32_t i = 0; i < count; i++) {
		FUZZ_CHECK(iov[i].iov_len > 0, "non-empty iovecs");
		total += iov[i].iov_len;
	}
	FUZZ_CHECK(total == smtp_client_output_size(&h.client), "output size agrees");
	size = h.send_max != 0 && total > h.send_max ? h.send_max : total;
	left = size;
	for (uint32_t i = 0; i < count && left > 0; i++) {
		size_t part = left < iov[i].iov_len ? left : iov[i].iov_len;

		check_sent_part(&iov[i], part, i, count);
		left -= part;
	}
	/* A send of 0 bytes (EAGAIN) changes nothing. */
	uint64_t deadline = smtp_client_deadline_ms(&h.client);
	smtp_client_consume(&h.client, 0, h.now_ms);
	FUZZ_CHECK(smtp_client_output_size(&h.client) == total &&
			   smtp_client_deadline_ms(&h.client) == deadline,
		   "consume(0) is a no-op");
	smtp_client_consume(&h.client, size, h.now_ms);
	if (h.is_slot_offered)
		h.slot_sends++;
	check_counters();
	return true;
}

/* Message i's recipients: the plain names, then the quirks asked for. */
static void
rcpts_prepare(struct msg *m, uint32_t count, bool has_quirks)
{
	const uint8_t *cfg = h.cfg;

	for (uint32_t i = 0; i < count; i++) {
		m->rcpts[i].ptr = rcpt_names[i];
		m->rcpts[i].len = rcpt_name_sizes[i];
	}
	if (!has_quirks)
		return;
	if (cfg[4] & ADDR_NON_ASCII)
		m->rcpts[0] = (struct smtp_address){.ptr = "r\xc3\xa9@rcpt.example", .len = 16};
	if (cfg[4] & ADDR_CR)
		m->rcpts[count - 1] = (struct smtp_address){.ptr = "bad\r@rcpt.example", .len = 17};
	if (cfg[3] & RCPT_EMPTY)
		m->rcpts[0] = (struct smtp_address){.ptr = "", .len = 0};
	if (cfg[3] & RCPT_LONG)
		m->rcpts[count - 1] =
			(struct smtp_address){.ptr = long_rcpt, .len = sizeof(long_rcpt)};
}

/* Fill message index (0, 1, 2) from the config bytes. */
static void
message_prepare(struct msg *m, uint32_t index)
{
	const uint8_t *cfg = h.cfg;
	uint32_t count = (cfg[2] & 128u) ? RCPTS_MAX : (uint32_t)(cfg[2] & 127u) % 8u + 1u;
	bool is_varied = (cfg[3] & MESSAGES_VARY) != 0;
	bool has_quirks = !is_varied || index == 1;
	uint32_t body_choice = (cfg[3] % 4u + (is_varied ? index : 0u)) % 4u;
	struct smtp_message *message = &m->message;

	rcpts_prepare(m, count, has_quirks);
	message->sender = (h.flags & FLAG_NULL_SENDER)
				  ? (struct smtp_address){.ptr = "", .len = 0}
				  : (struct smtp_address){.ptr = "s@send.example", .len = 14};
	if (has_quirks && (cfg[4] & SENDER_BAD))
		message->sender = (struct smtp_address){.ptr = "s<@send.example", .len = 15};
	message->rcpts = m->rcpts;
	message->rcpt_count = count;
	if (body_choice == 3) {
		message->body = big_bodies[index];
		message->body_size = BIG_BODY_SIZE;
	} else {
		size_t size = strlen(bodies[body_choice]);

		memcpy(m->small_body, bodies[body_choice], size);
		message->body = m->small_body;
		message->body_size = size;
	}
	message->size = (has_quirks && (h.flags & FLAG_SIZE_BIG)) ? 1000000000u : 0u;
	message->needs_8bit = (h.flags & FLAG_8BIT) != 0;
	message->needs_smtputf8 = has_quirks && (h.flags & FLAG_SMTPUTF8) != 0;
}

/* Start the next message, when idle or behind the dot. A refusal is its
 * final event at once and changes nothing else. */
static void
message_start(bool is_behind_dot)
{
	struct msg *m = &h.msgs[h.messages_started];
	enum smtp_client_state state = smtp_client_state(&h.client);
	uint64_t deadline = smtp_client_deadline_ms(&h.client);
	size_t output_size = smtp_client_output_size(&h.client);
	bool is_started;

	FUZZ_CHECK(h.line_size == 0, "a transaction starts on a command line boundary");
	message_prepare(m, h.messages_started);
	h.messages_started++;
	m->is_open = true;
	h.open_count++;
	h.starting = m;
#ifdef FUZZ_TRACE
	fprintf(stderr, "start message %u %s in %s, oldest body sent %zu\n", h.messages_started - 1,
		is_behind_dot ? "behind the dot" : "idle", smtp_client_state_name(state),
		h.open_count > 1 ? msg_oldest_open()->body_sent : (size_t)0);
#endif
	is_started = smtp_client_start_message(&h.client, &m->message, h.now_ms);
	h.starting = NULL;
	check_counters();
	if (!is_started) {
		FUZZ_CHECK(!m->is_open, "a refusal is a final event");
		FUZZ_CHECK(smtp_client_state(&h.client) == state &&
				   smtp_client_output_size(&h.client) == output_size &&
				   smtp_client_deadline_ms(&h.client) == deadline,
			   "a refusal changes nothing");
		FUZZ_CHECK(!is_behind_dot || smtp_client_may_pipeline(&h.client),
			   "the slot stays open after a refusal behind the dot");
		return;
	}
	FUZZ_CHECK(m->is_open, "a started message is open");
	FUZZ_CHECK(smtp_client_output_size(&h.client) > output_size, "a started message sends");
	h.first_line = h.rset_is_owed && !is_behind_dot ? FIRST_RSET : FIRST_MAIL;
	if (!is_behind_dot)
		return;
	FUZZ_CHECK(h.open_count == 2 && !smtp_client_may_pipeline(&h.client),
		   "two messages at most: one behind the dot");
	FUZZ_CHECK(smtp_client_state(&h.client) == state &&
			   smtp_client_deadline_ms(&h.client) == deadline,
		   "behind the dot the previous body's state and deadline hold");
}

/* Start messages or QUIT when idle; refusals leave the session idle. */
static void
act_when_idle(void)
{
	while (smtp_client_is_idle(&h.client) && h.open_count == 0 &&
	       h.messages_started < h.messages_wanted)
		message_start(false);
	if (smtp_client_is_idle(&h.client) && h.open_count == 0 && !h.quit_is_sent &&
	    h.messages_started == h.messages_wanted && (h.flags & FLAG_QUIT)) {
		h.quit_is_sent = true;
		smtp_client_quit(&h.client, h.now_ms);
	}
}

/* After SMTP_EV_PIPELINE_SLOT (with BEHIND_DOT): start the next message
 * behind the dot, at once or (SLOT_LATE) after one more send; after a
 * refusal the slot is still open for the one after. */
static void
act_behind_dot(void)
{
	while (h.is_slot_offered && h.messages_started < h.messages_wanted) {
		if (!smtp_client_may_pipeline(&h.client)) {
			h.is_slot_offered = false; /* the session moved on or failed */
			return;
		}
		if ((h.cfg[3] & SLOT_LATE) && h.slot_sends == 0)
			return;
		message_start(true);
		if (h.open_count == 2)
			h.is_slot_offered = false;
	}
}

/* The engine runs the TLS handshake SMTP_EV_STARTTLS asked for (one chunk
 * later with TLS_FEED_BEFORE_HANDSHAKE unless is_now). */
static void
handshake_run(bool is_now)
{
	const struct smtp_ehlo_caps *caps;

	if (!h.is_handshake_owed)
		return;
	if ((h.options & TLS_FEED_BEFORE_HANDSHAKE) && !h.is_handshake_deferred && !is_now) {
		h.is_handshake_deferred = true;
		return;
	}
	h.is_handshake_owed = false;
	if (smtp_client_state(&h.client) != SMTP_CLIENT_STATE_TLS)
		return; /* the session failed meanwhile (injection, timeout) */
	if (h.options & TLS_HANDSHAKE_FAILS) {
		smtp_client_tls_failed(&h.client, h.now_ms);
		FUZZ_CHECK(smtp_client_is_closed(&h.client), "a failed handshake closes");
		FUZZ_CHECK(h.is_error_seen, "a failed handshake is an ERROR");
		return;
	}
	smtp_client_tls_started(&h.client, h.now_ms);
	caps = smtp_client_caps(&h.client);
	FUZZ_CHECK(smtp_client_is_tls(&h.client), "TLS after the handshake");
	FUZZ_CHECK(caps->extensions == 0 && caps->size_max == 0 && caps->auth_mechanisms == 0,
		   "capabilities forgotten after the handshake (RFC 3207 4.2)");
	FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_EHLO, "EHLO after the handshake");
	FUZZ_CHECK(smtp_client_output_size(&h.client) > 0, "EHLO queued after the handshake");
	h.is_ehlo_expected = true;
	check_counters();
}

/* The engine's turn: act, then send (once, or until nothing is left). */
static void
engine_step(void)
{
	for (uint32_t round = 0; round < 100000u; round++) {
		if (smtp_client_is_closed(&h.client))
			return;
		act_when_idle();
		if (h.cfg[3] & BEHIND_DOT)
			act_behind_dot();
		if (!send_once() || h.is_one_send_per_step)
			return;
	}
	FUZZ_CHECK(0, "output drains");
}

static void
timer_fires(void)
{
	uint64_t deadline = smtp_client_deadline_ms(&h.client);

	if (deadline == SMTP_CLIENT_DEADLINE_NONE)
		return;
	FUZZ_CHECK(deadline > h.now_ms, "deadline in the future");
	FUZZ_CHECK(!smtp_client_timeout(&h.client, h.now_ms), "a stale timer does nothing");
	h.now_ms = deadline;
	FUZZ_CHECK(smtp_client_timeout(&h.client, h.now_ms), "the timer at the deadline fires");
	check_counters();
}

static void
session_end(void)
{
	uint32_t events;

	handshake_run(true);
	engine_step();
	for (uint32_t round = 0; round < 64 && !smtp_client_is_closed(&h.client); round++) {
		if ((h.flags & FLAG_END_BY_TIMEOUT) &&
		    smtp_client_deadline_ms(&h.client) != SMTP_CLIENT_DEADLINE_NONE) {
			timer_fires();
			engine_step();
		} else {
			smtp_client_connection_lost(&h.client, h.now_ms);
		}
	}
	FUZZ_CHECK(smtp_client_is_closed(&h.client), "the session ends closed");
	FUZZ_CHECK(h.is_closed_event_seen, "CLOSED was reported");
	FUZZ_CHECK(h.open_count == 0 && msg_oldest_open() == NULL,
		   "every started message got its final event");
	FUZZ_CHECK(smtp_client_deadline_ms(&h.client) == SMTP_CLIENT_DEADLINE_NONE,
		   "no deadline when closed");
	check_counters();
	/* A send completing after the close, a late EOF or TLS alert. */
	events = h.event_count;
	smtp_client_consume(&h.client, 5, h.now_ms);
	smtp_client_connection_lost(&h.client, h.now_ms);
	smtp_client_tls_failed(&h.client, h.now_ms);
	FUZZ_CHECK(h.event_count == events && smtp_client_is_closed(&h.client),
		   "nothing happens after CLOSED");
	FUZZ_CHECK(smtp_client_output_size(&h.client) == 0, "nothing to send after CLOSED");
	FUZZ_CHECK(!(h.options & TRACE) || h.trace_count > 0, "the trace saw the close");
}

static void
harness_init(struct fuzz_cursor *cur)
{
	struct smtp_client_config config;

	memset(&h, 0, sizeof(h));
	for (uint32_t i = 0; i < 5; i++)
		h.cfg[i] = fuzz_take_u8(cur);
	h.flags = h.cfg[0];
	h.options = h.cfg[4];
	h.tls_policy = ((h.cfg[4] >> TLS_POLICY_SHIFT) & 3u) == 0   ? SMTP_CLIENT_TLS_NONE
		       : ((h.cfg[4] >> TLS_POLICY_SHIFT) & 3u) == 1 ? SMTP_CLIENT_TLS_OPPORTUNISTIC
								    : SMTP_CLIENT_TLS_REQUIRED;
	h.send_max = h.cfg[1] & 127u;
	h.is_one_send_per_step = (h.cfg[1] & 128u) != 0;
	h.messages_wanted = 1u + ((h.flags & FLAG_SECOND_MESSAGE) ? 1u : 0u) +
			    ((h.cfg[3] & THIRD_MESSAGE) ? 1u : 0u);
	h.now_ms = 1000000;
	memset(&config, 0, sizeof(config));
	config.helo_name = HELO_NAME;
	config.helo_name_len = strlen(HELO_NAME);
	config.pipelining_is_disabled = (h.flags & FLAG_NO_PIPELINING) != 0;
	config.tls_policy = h.tls_policy;
	smtp_client_timeouts_default(&config.timeouts);
	FUZZ_CHECK(smtp_client_helo_name_is_valid(config.helo_name, config.helo_name_len) &&
			   !smtp_client_helo_name_is_valid("", 0) &&
			   !smtp_client_helo_name_is_valid("a b", 3),
		   "HELO name check");
	smtp_client_init(&h.client, &config, h.now_ms, &h, event_callback);
	if (h.options & TRACE)
		smtp_client_set_trace(&h.client, &h, trace_callback);
	check_counters();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};

	statics_build();
	harness_init(&cur);
	for (uint32_t chunk = 0; fuzz_left(&cur) > 0; chunk++) {
		size_t want = fuzz_take_u8(&cur);
		size_t len = want < fuzz_left(&cur) ? want : fuzz_left(&cur);

		handshake_run(false);
		engine_step();
		if (smtp_client_is_closed(&h.client))
			break;
		h.now_ms += 1;
		if (want == 0) {
			timer_fires();
			continue;
		}
		smtp_client_feed(&h.client, cur.data + cur.pos, len, h.now_ms);
		cur.pos += len;
		check_counters();
	}
	session_end();
	return 0;
}
