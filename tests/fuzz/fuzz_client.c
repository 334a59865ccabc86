/*
 * fuzz_client.c - libFuzzer harness for the outbound SMTP client session
 * fed arbitrary server bytes (smtp/smtp_client.h; reliability.md 3.1
 * fuzz_client_session, FZ-02, OUT-01..OUT-13).
 *
 * A fake engine drives one connection through whole message transactions
 * (greeting, EHLO, MAIL, RCPT..., DATA, body, dot, then a second message or
 * QUIT) and plays the server with the fuzz bytes. Input:
 *
 *   byte 0  flags: 1 no PIPELINING, 2 end by timeouts (else connection
 *           lost), 4 a second message, 8 needs 8BITMIME, 16 needs
 *           SMTPUTF8, 32 null sender, 64 QUIT when done, 128 SIZE 1 GB
 *   byte 1  sends: low 7 bits the most bytes per send (0: all); 128 one
 *           send per step, so replies can arrive before a command is out
 *   byte 2  recipients: (b & 127) % 8 + 1, or 300 with 128
 *   byte 3  body: % 4 picks one of four wire-form bodies; 4 the first
 *           recipient is empty, 8 the last one is over SMTP_ADDRESS_SIZE_MAX
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
 *   the same chunks.
 *
 * Invariants, beyond memory safety under ASan/UBSan and the session's own
 * assertions:
 * - commands are CRLF lines of known verbs, at most SMTP_COMMAND_SIZE_MAX;
 *   after an ERROR event only QUIT goes out;
 * - body bytes go out only in BODY, in order, after a 2xx to some RCPT of
 *   this message (never after all were refused: OUT-06);
 * - MESSAGE_DONE only with a 2xx, after the whole body was sent;
 *   outcome_is_unknown only after the whole body was sent;
 *   MESSAGE_FAILED carries a 4xx or 5xx;
 * - every started message gets exactly one final event, every recipient
 *   at most one RCPT event (2xx, 4xx or 5xx) before it; CLOSED comes
 *   exactly once, last, and the session always ends closed;
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
#define HELO_NAME "client.example"
#define BIG_BODY_LINES 4000u

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

struct harness {
	struct smtp_client client;
	uint64_t now_ms;
	uint8_t flags;
	uint8_t options; /* byte 4 */
	enum smtp_client_tls_policy tls_policy;
	size_t send_max;
	bool is_one_send_per_step;
	/* Messages. */
	struct smtp_message message;
	struct smtp_address rcpts[RCPTS_MAX];
	uint32_t messages_wanted;
	uint32_t messages_started;
	bool message_is_open; /* started, final event not yet seen */
	bool quit_is_sent;
	/* Per open message. */
	bool rcpt_seen[RCPTS_MAX];
	uint32_t rcpts_accepted;
	size_t body_sent;
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
static char long_rcpt[SMTP_ADDRESS_SIZE_MAX + 1u];
static uint8_t big_body[BIG_BODY_LINES * 8u + 3u];
static size_t big_body_size;

static const char *const bodies[3] = {
	"Subject: fuzz\r\n\r\nhello\r\n.\r\n",
	".\r\n",
	"..leading dot\r\n...\r\n\r\n.x\r\n.\r\n",
};

static void
big_body_build(void)
{
	size_t pos = 0;

	if (big_body_size != 0)
		return;
	for (uint32_t i = 0; i < BIG_BODY_LINES; i++) {
		memcpy(big_body + pos, i % 7u == 0 ? "..dots\r\n" : "a line\r\n", 8);
		pos += 8;
	}
	memcpy(big_body + pos, ".\r\n", 3);
	big_body_size = pos + 3;
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

static void
on_final(const struct smtp_event *event)
{
	FUZZ_CHECK(h.message_is_open && event->message == &h.message, "final event of the open message");
	check_status(&event->status);
	if (event->type == SMTP_EV_MESSAGE_DONE) {
		FUZZ_CHECK(event->status.code / 100 == 2 && !event->status.is_local,
			   "DONE only on a server 2xx");
		FUZZ_CHECK(h.rcpts_accepted >= 1, "DONE only with an accepted recipient");
		FUZZ_CHECK(h.body_sent == h.message.body_size, "DONE only after the whole body");
	} else {
		FUZZ_CHECK(event->status.code / 100 == 4 || event->status.code / 100 == 5,
			   "FAILED carries a 4xx or 5xx");
		FUZZ_CHECK(!event->outcome_is_unknown || h.body_sent == h.message.body_size,
			   "outcome unknown only after the whole body");
	}
	h.message_is_open = false;
}

static void
event_callback(void *ctx, const struct smtp_event *event)
{
	FUZZ_CHECK(ctx == &h, "event context");
	FUZZ_CHECK(!h.is_closed_event_seen, "no event after CLOSED");
	h.event_count++;
#ifdef FUZZ_TRACE /* -DFUZZ_TRACE: print the session's events */
	fprintf(stderr, "event %d rcpt %u code %u error %s state %s\n", (int)event->type,
		event->rcpt_index, event->status.code, smtp_client_error_name(event->error),
		smtp_client_state_name(smtp_client_state(&h.client)));
#endif
	switch (event->type) {
	case SMTP_EV_READY:
		FUZZ_CHECK(!h.message_is_open, "READY only between messages");
		break;
	case SMTP_EV_RCPT:
		FUZZ_CHECK(h.message_is_open && event->message == &h.message, "RCPT of the open message");
		FUZZ_CHECK(event->rcpt_index < h.message.rcpt_count, "RCPT index in range");
		FUZZ_CHECK(!h.rcpt_seen[event->rcpt_index], "one RCPT event per recipient");
		h.rcpt_seen[event->rcpt_index] = true;
		check_status(&event->status);
		FUZZ_CHECK(event->status.code / 100 != 3, "RCPT is never 3xx");
		if (event->status.code / 100 == 2)
			h.rcpts_accepted++;
		break;
	case SMTP_EV_MESSAGE_DONE:
	case SMTP_EV_MESSAGE_FAILED:
		/* A broken session voids the RCPT replies: it must defer all. */
		FUZZ_CHECK(event->error == SMTP_CLIENT_ERROR_NONE || event->status.code / 100 == 4,
			   "a MESSAGE_FAILED with an error is a 4xx");
		on_final(event);
		break;
	case SMTP_EV_ERROR:
		check_status(&event->status);
		FUZZ_CHECK(event->error > SMTP_CLIENT_ERROR_NONE &&
				   event->error < SMTP_CLIENT_ERROR_COUNT,
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
		h.is_error_seen = true;
		if (event->error == SMTP_CLIENT_ERROR_TLS_INJECTION)
			h.is_injection_seen = true;
		break;
	case SMTP_EV_STARTTLS:
		FUZZ_CHECK(h.is_starttls_sent && !h.is_handshake_owed, "STARTTLS event after STARTTLS");
		FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_TLS, "STARTTLS event in TLS");
		FUZZ_CHECK(!smtp_client_is_tls(&h.client), "one handshake per session");
		FUZZ_CHECK(smtp_client_output_size(&h.client) == 0, "nothing to send in TLS");
		FUZZ_CHECK(!h.message_is_open, "no message open at STARTTLS");
		h.is_handshake_owed = true;
		break;
	case SMTP_EV_PIPELINE_SLOT:
		/* This engine takes no message behind the dot: READY follows. */
		FUZZ_CHECK(h.message_is_open, "PIPELINE_SLOT of the open message");
		FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_BODY &&
				   smtp_client_may_pipeline(&h.client),
			   "PIPELINE_SLOT when the body goes out");
		break;
	case SMTP_EV_CLOSED:
		FUZZ_CHECK(!h.message_is_open, "no message open at CLOSED");
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

/* One send: take what output() offers (up to send_max) and consume it. */
static bool
send_once(void)
{
	struct iovec iov[2];
	uint32_t count = smtp_client_output(&h.client, iov, 2);
	const uint8_t *base;
	size_t size;

	if (count == 0)
		return false;
	FUZZ_CHECK(!h.is_injection_seen, "not one byte after STARTTLS response injection");
	FUZZ_CHECK(smtp_client_state(&h.client) != SMTP_CLIENT_STATE_TLS, "nothing sent in TLS");
	FUZZ_CHECK(count == 1 && iov[0].iov_len > 0, "one non-empty iovec");
	FUZZ_CHECK(iov[0].iov_len == smtp_client_output_size(&h.client), "output size agrees");
	base = iov[0].iov_base;
	size = h.send_max != 0 && iov[0].iov_len > h.send_max ? h.send_max : iov[0].iov_len;
	if (h.message_is_open && base >= h.message.body &&
	    base < h.message.body + h.message.body_size) {
		FUZZ_CHECK(smtp_client_state(&h.client) == SMTP_CLIENT_STATE_BODY, "body only in BODY");
		FUZZ_CHECK(h.rcpts_accepted >= 1, "no body when no recipient was accepted");
		FUZZ_CHECK(!h.is_error_seen, "no body after an ERROR");
		FUZZ_CHECK(base == h.message.body + h.body_sent, "body sent in order");
		FUZZ_CHECK(size <= h.message.body_size - h.body_sent, "body within its size");
		h.body_sent += size;
	} else {
		FUZZ_CHECK(base >= (const uint8_t *)h.client.out_buf &&
				   base + iov[0].iov_len <=
					   (const uint8_t *)h.client.out_buf + SMTP_CLIENT_OUTPUT_SIZE,
			   "commands come from the session buffer");
		check_command_bytes(base, size);
	}
	/* A send of 0 bytes (EAGAIN) changes nothing. */
	uint64_t deadline = smtp_client_deadline_ms(&h.client);
	smtp_client_consume(&h.client, 0, h.now_ms);
	FUZZ_CHECK(smtp_client_output_size(&h.client) == iov[0].iov_len &&
			   smtp_client_deadline_ms(&h.client) == deadline,
		   "consume(0) is a no-op");
	smtp_client_consume(&h.client, size, h.now_ms);
	check_counters();
	return true;
}

static void
message_prepare(const uint8_t cfg[5])
{
	uint32_t count = (cfg[2] & 128u) ? RCPTS_MAX : (uint32_t)(cfg[2] & 127u) % 8u + 1u;
	uint32_t body_choice = cfg[3] % 4u;

	memset(&h.message, 0, sizeof(h.message));
	for (uint32_t i = 0; i < count; i++) {
		int n = snprintf(rcpt_names[i], sizeof(rcpt_names[i]), "r%u@rcpt.example", i);

		h.rcpts[i] = (struct smtp_address){.ptr = rcpt_names[i], .len = (size_t)n};
	}
	if (cfg[4] & 1u)
		h.rcpts[0] = (struct smtp_address){.ptr = "r\xc3\xa9@rcpt.example", .len = 16};
	if (cfg[4] & 2u)
		h.rcpts[count - 1] = (struct smtp_address){.ptr = "bad\r@rcpt.example", .len = 17};
	if (cfg[3] & 4u)
		h.rcpts[0] = (struct smtp_address){.ptr = "", .len = 0};
	if (cfg[3] & 8u) {
		memset(long_rcpt, 'a', sizeof(long_rcpt));
		h.rcpts[count - 1] = (struct smtp_address){.ptr = long_rcpt, .len = sizeof(long_rcpt)};
	}
	h.message.sender = (h.flags & FLAG_NULL_SENDER)
				   ? (struct smtp_address){.ptr = "", .len = 0}
				   : (struct smtp_address){.ptr = "s@send.example", .len = 14};
	if (cfg[4] & SENDER_BAD)
		h.message.sender = (struct smtp_address){.ptr = "s<@send.example", .len = 15};
	h.message.rcpts = h.rcpts;
	h.message.rcpt_count = count;
	if (body_choice == 3) {
		big_body_build();
		h.message.body = big_body;
		h.message.body_size = big_body_size;
	} else {
		h.message.body = (const uint8_t *)bodies[body_choice];
		h.message.body_size = strlen(bodies[body_choice]);
	}
	h.message.size = (h.flags & FLAG_SIZE_BIG) ? 1000000000u : 0u;
	h.message.needs_8bit = (h.flags & FLAG_8BIT) != 0;
	h.message.needs_smtputf8 = (h.flags & FLAG_SMTPUTF8) != 0;
}

/* Start messages or QUIT when idle; refusals leave the session idle. */
static void
act_when_idle(void)
{
	while (smtp_client_is_idle(&h.client) && !h.message_is_open &&
	       h.messages_started < h.messages_wanted) {
		h.messages_started++;
		memset(h.rcpt_seen, 0, sizeof(h.rcpt_seen));
		h.rcpts_accepted = 0;
		h.body_sent = 0;
		h.message_is_open = true;
		if (!smtp_client_start_message(&h.client, &h.message, h.now_ms)) {
			FUZZ_CHECK(!h.message_is_open, "a refusal is a final event");
			FUZZ_CHECK(smtp_client_is_idle(&h.client), "idle after a refusal");
		}
		check_counters();
	}
	if (smtp_client_is_idle(&h.client) && !h.message_is_open && !h.quit_is_sent &&
	    h.messages_started == h.messages_wanted && (h.flags & FLAG_QUIT)) {
		h.quit_is_sent = true;
		smtp_client_quit(&h.client, h.now_ms);
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
	FUZZ_CHECK(!h.message_is_open, "every started message got its final event");
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};
	struct smtp_client_config config;
	uint8_t cfg[5];

	for (uint32_t i = 0; i < 5; i++)
		cfg[i] = fuzz_take_u8(&cur);
	memset(&h, 0, sizeof(h));
	h.flags = cfg[0];
	h.options = cfg[4];
	h.tls_policy = ((cfg[4] >> TLS_POLICY_SHIFT) & 3u) == 0   ? SMTP_CLIENT_TLS_NONE
		       : ((cfg[4] >> TLS_POLICY_SHIFT) & 3u) == 1 ? SMTP_CLIENT_TLS_OPPORTUNISTIC
								  : SMTP_CLIENT_TLS_REQUIRED;
	h.send_max = cfg[1] & 127u;
	h.is_one_send_per_step = (cfg[1] & 128u) != 0;
	h.messages_wanted = (h.flags & FLAG_SECOND_MESSAGE) ? 2u : 1u;
	h.now_ms = 1000000;
	message_prepare(cfg);
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
