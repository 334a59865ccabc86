/*
 * fuzz_server.c - libFuzzer harness for the inbound SMTP server session of
 * the injection listener (smtp/smtp_server.h; reliability.md 3.1
 * fuzz_injection_listener, FZ-04, INJ-01..INJ-12).
 *
 * A fake listener feeds the fuzz bytes as what a client sends, answers
 * every MESSAGE and AUTH event at once, and sends the replies. Input:
 *
 *   byte 0  config: 1 client allowed to relay, 2 AUTH offered, 4 no
 *           CHUNKING, 8 bare-LF policy CLOSE, 16 small limits, 32 the
 *           spool write fails, 64 AUTH succeeds, 128 greeting delay:
 *           smtp_server_start() only when the first timer chunk fires,
 *           so a client that talks first is refused (pregreet)
 *   byte 1  sends: low 7 bits the most reply bytes per send (0: all);
 *           128 back-pressure TEMPFAIL from the start
 *   byte 2  options: 1 STARTTLS offered, 2 TLS required first, 4 AUTH
 *           only under TLS, 8 MESSAGE answered with message_reply (the
 *           caller's 4xx/5xx text, with a control byte, over 200 bytes),
 *           16 MESSAGE/AUTH results given late: the listener stops
 *           feeding at the BLOCKED that follows, and answers before the
 *           next chunk (then feeds the rest of this one first), or after
 *           the timer when the next chunk is one, 32 all limits 0 in the config (init's defaults), 64
 *           back-pressure CLOSE from the second chunk on, 128 the rest of
 *           the chunk after STARTTLS is fed before the handshake (it must
 *           be swallowed), which then completes at the next data chunk
 *           (else the rest is dropped and it completes at once)
 *   then    chunks: a length byte n and n client bytes (fewer at the
 *           end); n == 0 means "the listener's timer fires".
 *
 * Invariants, beyond memory safety under ASan/UBSan, leak checking and the
 * session's own assertions:
 * - every fed call consumes <= len; NONE only when all is consumed; the
 *   session always makes progress (no BLOCKED after its cause is gone);
 * - the BODY spans of a transaction, joined, are one message in wire form
 *   (smtp_dot_validate: CRLF only, no early end, ends with ".\r\n"):
 *   nothing smuggled, nothing bare, ever reaches MESSAGE;
 *   DATA_START / BODY / MESSAGE / DATA_ABORT come in that grammar;
 * - a transaction starts only for a client on the allowlist or one that
 *   authenticated, and only a successful AUTH authenticates (INJ-09);
 * - the envelope at DATA_START: sender and recipients within the size
 *   limits and free of CR, LF and NUL, 1..recipients_max recipients;
 * - every byte sent parses as SMTP replies with the client's own reply
 *   parser (smtp_reply.h), and every 4xx/5xx carries an enhanced status
 *   code of its class; pending output stays within SMTP_SERVER_OUTPUT_SIZE;
 * - after CLOSE every later feed returns CLOSE; a client that talks
 *   before the greeting is refused, and a late start() queues nothing;
 * - STARTTLS (RFC 3207, INJ-05, CVE-2011-0411): the event only when
 *   offered and not under TLS, its reply is 220; until the handshake
 *   every byte fed is swallowed with no event and no reply, a timer then
 *   closes with no plaintext reply; after it the session is encrypted,
 *   unauthenticated and without HELO; the EHLO reply offers STARTTLS only
 *   when offered and not under TLS, AUTH only when offered and (with
 *   auth-only-under-TLS) under TLS; with TLS required a transaction
 *   starts only under TLS, and AUTH happens only under TLS when required;
 * - DATA_START: the SIZE declared is within message_size_max, an address
 *   with a non-ASCII byte only with SMTPUTF8;
 * - the timeout class is NONE exactly when closed or waiting for the
 *   caller's result.
 */
#include <string.h>

#include "fuzz_common.h"
#include "smtp/smtp_dot.h"
#include "smtp/smtp_reply.h"
#include "smtp/smtp_server.h"

#define RECORD_MAX (1u << 20)
#define HOSTNAME "mx.fuzz.example"

enum {
	FLAG_ALLOWED = 1,
	FLAG_AUTH = 2,
	FLAG_NO_CHUNKING = 4,
	FLAG_BARE_LF_CLOSE = 8,
	FLAG_SMALL_LIMITS = 16,
	FLAG_SPOOL_FAILS = 32,
	FLAG_AUTH_OK = 64,
	FLAG_GREETING_DELAY = 128,
};

/* Byte 2. */
enum {
	OPT_STARTTLS = 1,
	OPT_TLS_REQUIRED = 2,
	OPT_AUTH_REQUIRES_TLS = 4,
	OPT_MESSAGE_REPLY = 8,
	OPT_LATE_RESULTS = 16,
	OPT_ZERO_LIMITS = 32,
	OPT_BACKPRESSURE_CLOSE = 64,
	OPT_FEED_BEFORE_HANDSHAKE = 128,
};

enum result_owed {
	OWED_NONE = 0,
	OWED_MESSAGE,
	OWED_AUTH,
};

struct harness {
	struct smtp_server server;
	struct smtp_reply_parser replies;
	uint8_t flags;
	uint8_t options;
	size_t send_max;
	uint32_t recipients_max;
	uint64_t message_size_max;
	enum result_owed owed;
	bool is_tls_wait; /* STARTTLS event seen, handshake not done */
	uint16_t last_code; /* of the last reply sent */
	bool is_started;    /* smtp_server_start() was called */
	/* LATE_RESULTS: the input not yet consumed when the session blocked
	 * on an owed result, fed again after the result. */
	const uint8_t *rest;
	size_t rest_len;
	bool has_rest;
	bool is_record_open;
	size_t record_len;
	bool is_closed_event_seen;
	uint32_t messages;
};

static struct harness h;
static uint8_t record[RECORD_MAX];

/* Returns true when the address has a non-ASCII byte. */
static bool
check_address(const char *ptr, size_t len, size_t max)
{
	bool has_8bit = false;

	FUZZ_CHECK(len <= max, "address within its limit");
	FUZZ_CHECK(ptr != NULL || len == 0, "address pointer");
	for (size_t i = 0; i < len; i++) {
		FUZZ_CHECK(ptr[i] != '\r' && ptr[i] != '\n' && ptr[i] != 0,
			   "no CR, LF or NUL in an address");
		has_8bit |= (unsigned char)ptr[i] >= 0x80;
	}
	return has_8bit;
}

static void
check_envelope(void)
{
	size_t len = 0;
	const char *sender = smtp_server_sender(&h.server, &len);
	uint32_t count = smtp_server_recipient_count(&h.server);

	bool has_8bit = check_address(sender, len, SMTP_SERVER_ADDRESS_SIZE_MAX);

	FUZZ_CHECK(count >= 1 && count <= h.recipients_max, "1..recipients_max recipients");
	for (uint32_t i = 0; i < count; i++) {
		const char *rcpt = smtp_server_recipient(&h.server, i, &len);

		FUZZ_CHECK(len >= 1, "a recipient is not empty");
		has_8bit |= check_address(rcpt, len, SMTP_SERVER_ADDRESS_SIZE_MAX);
	}
	FUZZ_CHECK(!has_8bit || smtp_server_is_smtputf8(&h.server),
		   "a non-ASCII address only with SMTPUTF8");
	FUZZ_CHECK(smtp_server_size_declared(&h.server) <= h.message_size_max,
		   "SIZE declared within message_size_max");
	(void)smtp_server_body_is_8bitmime(&h.server);
	const char *helo = smtp_server_helo_name(&h.server, &len);
	check_address(helo, len, SMTP_SERVER_HOSTNAME_SIZE_MAX);
	FUZZ_CHECK(len >= 1, "a transaction only after HELO/EHLO");
	FUZZ_CHECK(!(h.options & OPT_TLS_REQUIRED) || smtp_server_is_tls(&h.server),
		   "TLS required: a transaction only under TLS");
}

/* An EHLO reply's keywords: STARTTLS and AUTH only when they may be used. */
static void
check_ehlo_reply(const struct smtp_reply *reply)
{
	bool is_tls = smtp_server_is_tls(&h.server);

	for (uint32_t i = 1; i < reply->line_count; i++) {
		const char *line;
		size_t size;

		smtp_reply_line(reply, i, &line, &size);
		if (size == 8 && memcmp(line, "STARTTLS", 8) == 0)
			FUZZ_CHECK((h.options & OPT_STARTTLS) && !is_tls,
				   "STARTTLS offered only when configured and not under TLS");
		if (size >= 4 && memcmp(line, "AUTH", 4) == 0)
			FUZZ_CHECK((h.flags & FLAG_AUTH) &&
					   (is_tls || !(h.options & OPT_AUTH_REQUIRES_TLS)),
				   "AUTH offered only when configured (and under TLS if required)");
	}
}

/* The replies sent: they must parse, 4xx/5xx with an enhanced code. */
static void
check_sent_replies(const uint8_t *ptr, size_t len)
{
	size_t pos = 0;

#ifdef FUZZ_TRACE /* -DFUZZ_TRACE: print what the server sends */
	fprintf(stderr, "S: %.*s", (int)len, (const char *)ptr);
#endif
	while (pos < len) {
		size_t consumed = 0;
		enum smtp_parse_result r = smtp_reply_parse(&h.replies, ptr + pos, len - pos, &consumed);

		FUZZ_CHECK(r != SMTP_PARSE_ERROR, "the server's replies parse");
		pos += consumed;
		if (r == SMTP_PARSE_AGAIN)
			break;
		const struct smtp_reply *reply = &h.replies.reply;

		h.last_code = reply->code;
		if (reply->code == 250 && reply->line_count > 1)
			check_ehlo_reply(reply);
		if (reply->code >= 400)
			FUZZ_CHECK(reply->enhanced.status_class == reply->code / 100,
				   "a 4xx/5xx reply has an enhanced status code");
	}
}

static void
send_output(void)
{
	for (uint32_t round = 0; round < 100000u; round++) {
		size_t len = 0;
		const uint8_t *out = smtp_server_output(&h.server, &len);

		FUZZ_CHECK(len <= SMTP_SERVER_OUTPUT_SIZE, "pending output bounded");
		if (len == 0) {
			FUZZ_CHECK(out == NULL, "no output, no pointer");
			return;
		}
		size_t n = h.send_max != 0 && len > h.send_max ? h.send_max : len;

		check_sent_replies(out, n);
		smtp_server_output_consumed(&h.server, n);
	}
	FUZZ_CHECK(0, "output drains");
}

/* The caller's answer to MESSAGE or AUTH (now, or late with LATE_RESULTS). */
static void
result_give(void)
{
	static const char text[] = "4.3.1 Insufficient \x01system storage, and a text the session "
				   "cuts at 200 bytes: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
				   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
				   "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

	switch (h.owed) {
	case OWED_NONE:
		return;
	case OWED_MESSAGE:
		if (h.options & OPT_MESSAGE_REPLY)
			smtp_server_message_reply(&h.server, 452, text, sizeof(text) - 1);
		else
			smtp_server_message_result(&h.server, !(h.flags & FLAG_SPOOL_FAILS), "FUZZQ1", 6);
		break;
	case OWED_AUTH:
		smtp_server_auth_result(&h.server, (h.flags & FLAG_AUTH_OK) != 0);
		break;
	}
	h.owed = OWED_NONE;
}

static void
result_owe(enum result_owed what)
{
	FUZZ_CHECK(h.owed == OWED_NONE, "one result owed at a time");
	FUZZ_CHECK(smtp_server_timeout_class(&h.server) == SMTP_SERVER_TIMEOUT_NONE,
		   "no timeout while the caller owes a result");
	h.owed = what;
	if (!(h.options & OPT_LATE_RESULTS))
		result_give();
}

/* Nothing pending in the output: the session queued no reply. */
static bool
output_is_empty(void)
{
	size_t out_len = 1;

	return smtp_server_output(&h.server, &out_len) == NULL && out_len == 0;
}

static void feed_chunk(const uint8_t *data, size_t len);

/* LATE_RESULTS: give the owed result, then feed what was kept. */
static void
late_catch_up(void)
{
	result_give();
	send_output();
	while (h.has_rest && !h.is_closed_event_seen) {
		h.has_rest = false;
		feed_chunk(h.rest, h.rest_len);
		result_give();
		send_output();
	}
	h.has_rest = false;
}

/* The handshake after the STARTTLS event completed. */
static void
handshake_complete(void)
{
	FUZZ_CHECK(h.is_tls_wait, "a handshake only after STARTTLS");
	h.is_tls_wait = false;
	smtp_server_tls_started(&h.server);
	size_t len = 0;
	(void)smtp_server_helo_name(&h.server, &len);
	FUZZ_CHECK(smtp_server_is_tls(&h.server) && !smtp_server_is_authenticated(&h.server) &&
			   !smtp_server_is_esmtp(&h.server) && len == 0,
		   "after the handshake: encrypted, nothing the client said is kept");
	FUZZ_CHECK(!h.is_record_open, "no transaction across STARTTLS");
}

static void
on_starttls(void)
{
	FUZZ_CHECK((h.options & OPT_STARTTLS) && !smtp_server_is_tls(&h.server),
		   "STARTTLS only when offered and not under TLS");
	FUZZ_CHECK(!h.is_record_open, "no STARTTLS inside a transaction");
	h.is_tls_wait = true;
	send_output();
	FUZZ_CHECK(h.last_code == 220, "STARTTLS answered 220");
}

static void
on_body_event(const struct smtp_server_event *ev)
{
	switch (ev->type) {
	case SMTP_SERVER_EV_DATA_START:
		FUZZ_CHECK(!h.is_record_open, "DATA_START with no record open");
		/* INJ-09: no relay without the allowlist or AUTH. */
		FUZZ_CHECK((h.flags & FLAG_ALLOWED) || smtp_server_is_authenticated(&h.server),
			   "a message only from an allowed or authenticated client");
		FUZZ_CHECK(!smtp_server_is_authenticated(&h.server) ||
				   ((h.flags & FLAG_AUTH) && (h.flags & FLAG_AUTH_OK)),
			   "authenticated only after a successful AUTH");
		check_envelope();
		h.is_record_open = true;
		h.record_len = 0;
		break;
	case SMTP_SERVER_EV_BODY:
		FUZZ_CHECK(h.is_record_open, "BODY inside a record");
		FUZZ_CHECK(ev->ptr != NULL || ev->len == 0, "BODY span");
		FUZZ_CHECK(h.record_len + ev->len <= RECORD_MAX, "record bounded by the input");
		if (ev->len > 0)
			memcpy(record + h.record_len, ev->ptr, ev->len);
		h.record_len += ev->len;
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		FUZZ_CHECK(h.is_record_open, "DATA_ABORT of an open record");
		h.is_record_open = false;
		break;
	case SMTP_SERVER_EV_MESSAGE: {
		size_t offset = 0;
		enum smtp_dot_reason reason = smtp_dot_validate(record, h.record_len, &offset);

		FUZZ_CHECK(h.is_record_open, "MESSAGE ends an open record");
		FUZZ_CHECK(reason == SMTP_DOT_VALID,
			   "a stored message is exactly one body in wire form (no smuggling)");
		FUZZ_CHECK(smtp_server_body_size(&h.server) == h.record_len,
			   "body size = BODY bytes");
		check_envelope();
		h.is_record_open = false;
		h.messages++;
		result_owe(OWED_MESSAGE);
		break;
	}
	default:
		FUZZ_CHECK(0, "a body event");
	}
}

/* Feed one chunk until all of it is taken, the session blocks or closes. */
static void
feed_chunk(const uint8_t *data, size_t len)
{
	size_t off = 0;
	uint32_t blocked_in_a_row = 0;

	for (uint32_t round = 0; round < 4u * len + 1000u; round++) {
		struct smtp_server_event ev;

		memset(&ev, 0, sizeof(ev));
		size_t n = smtp_server_feed(&h.server, off < len ? data + off : NULL, len - off, &ev);

		FUZZ_CHECK(n <= len - off, "consumed <= len");
#ifdef FUZZ_TRACE
		fprintf(stderr, "event %d consumed %zu\n", (int)ev.type, n);
#endif
		off += n;
		if (h.is_tls_wait) {
			FUZZ_CHECK(ev.type == SMTP_SERVER_EV_NONE && off == len,
				   "plaintext behind STARTTLS is swallowed (CVE-2011-0411)");
			FUZZ_CHECK(output_is_empty(), "no reply to plaintext behind STARTTLS");
			return;
		}
		switch (ev.type) {
		case SMTP_SERVER_EV_NONE:
			FUZZ_CHECK(off == len, "NONE only when everything was consumed");
			return;
		case SMTP_SERVER_EV_STARTTLS:
			on_starttls();
			if (h.options & OPT_FEED_BEFORE_HANDSHAKE)
				break; /* feed the rest before the handshake */
			handshake_complete(); /* the rest is dropped */
			return;
		case SMTP_SERVER_EV_CLOSE:
			h.is_closed_event_seen = true;
			return;
		case SMTP_SERVER_EV_BLOCKED:
			if (h.owed != OWED_NONE) {
				/* LATE_RESULTS: wait for the result, keep the rest. */
				h.rest = off < len ? data + off : NULL;
				h.rest_len = len - off;
				h.has_rest = true;
				return;
			}
			/* No result owed: only output space blocks. */
			FUZZ_CHECK(blocked_in_a_row < 2, "BLOCKED clears once the output is sent");
			blocked_in_a_row++;
			send_output();
			continue;
		case SMTP_SERVER_EV_AUTH:
			FUZZ_CHECK(ev.auth.authcid_len <= SMTP_SERVER_AUTH_FIELD_SIZE_MAX &&
					   ev.auth.password_len <= SMTP_SERVER_AUTH_FIELD_SIZE_MAX &&
					   ev.auth.authzid_len <= SMTP_SERVER_AUTH_FIELD_SIZE_MAX,
				   "AUTH fields within their limit");
			(void)fuzz_hash(ev.auth.authcid, ev.auth.authcid_len);
			(void)fuzz_hash(ev.auth.password, ev.auth.password_len);
			FUZZ_CHECK((h.flags & FLAG_AUTH) && (smtp_server_is_tls(&h.server) ||
							     !(h.options & (OPT_AUTH_REQUIRES_TLS |
									    OPT_TLS_REQUIRED))),
				   "AUTH only when offered, and under TLS when required");
			result_owe(OWED_AUTH);
			break;
		default:
			on_body_event(&ev);
			break;
		}
		blocked_in_a_row = 0;
	}
	FUZZ_CHECK(0, "the session makes progress");
}

static void
server_setup(uint8_t flags)
{
	struct smtp_server_config config;

	smtp_server_config_default(&config);
	if (h.options & OPT_ZERO_LIMITS) {
		config.command_line_max = 0;
		config.text_line_max = 0;
		config.message_size_max = 0;
		config.recipients_max = 0;
		config.errors_max = 0;
	}
	config.starttls_is_offered = (h.options & OPT_STARTTLS) != 0;
	config.tls_is_required = (h.options & OPT_TLS_REQUIRED) != 0;
	config.auth_requires_tls = (h.options & OPT_AUTH_REQUIRES_TLS) != 0;
	config.hostname = HOSTNAME;
	config.hostname_len = strlen(HOSTNAME);
	config.client_is_allowed = (flags & FLAG_ALLOWED) != 0;
	config.auth_is_offered = (flags & FLAG_AUTH) != 0;
	config.chunking_is_disabled = (flags & FLAG_NO_CHUNKING) != 0;
	config.bare_lf_policy = (flags & FLAG_BARE_LF_CLOSE) ? SMTP_SERVER_BARE_LF_CLOSE
							       : SMTP_SERVER_BARE_LF_REJECT;
	if (flags & FLAG_SMALL_LIMITS) {
		config.command_line_max = 64;
		config.text_line_max = 40;
		config.message_size_max = 300;
		config.recipients_max = 3;
		config.errors_max = 3;
	}
	h.recipients_max = config.recipients_max != 0 ? config.recipients_max
						      : SMTP_SERVER_RECIPIENTS_MAX_DEFAULT;
	h.message_size_max = config.message_size_max != 0 ? config.message_size_max
							  : SMTP_SERVER_MESSAGE_SIZE_MAX_DEFAULT;
	smtp_server_init(&h.server, &config);
}

/* A chunk of length 0: the listener's timer fires. */
static void
timer_chunk(void)
{
	bool was_tls_wait = h.is_tls_wait;

	if (!h.is_started) {
		/* The greeting delay ends: the listener greets. */
		FUZZ_CHECK(smtp_server_timeout_class(&h.server) == SMTP_SERVER_TIMEOUT_NONE,
			   "no timeout before the greeting");
		h.is_started = true;
		smtp_server_start(&h.server);
		return;
	}
	FUZZ_CHECK((smtp_server_timeout_class(&h.server) == SMTP_SERVER_TIMEOUT_NONE) ==
			   (h.owed != OWED_NONE || smtp_server_is_closed(&h.server)),
		   "timeout class NONE exactly when closed or a result is owed");
	smtp_server_timeout(&h.server);
	FUZZ_CHECK(smtp_server_is_closed(&h.server), "closed after a timeout");
	FUZZ_CHECK(!was_tls_wait || output_is_empty(), "a handshake timeout sends no plaintext reply");
	late_catch_up(); /* a result is still allowed, and queues nothing */
}

/* A chunk of client bytes. */
static void
data_chunk(const uint8_t *data, size_t len)
{
	late_catch_up();
	if (h.is_tls_wait)
		handshake_complete();
	feed_chunk(data, len);
	if (!h.is_started && len > 0) {
		FUZZ_CHECK(h.is_closed_event_seen, "a client talking first is refused");
		send_output();
		h.is_started = true;
		smtp_server_start(&h.server); /* the delay timer still fires */
		FUZZ_CHECK(output_is_empty(), "no greeting after a pregreet refusal");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};

	memset(&h, 0, sizeof(h));
	h.flags = fuzz_take_u8(&cur);
	uint8_t sends = fuzz_take_u8(&cur);

	h.options = fuzz_take_u8(&cur);
	h.send_max = sends & 127u;
	smtp_reply_parser_init(&h.replies);
	server_setup(h.flags);
	if (sends & 128u)
		smtp_server_set_backpressure(&h.server, SMTP_SERVER_BACKPRESSURE_TEMPFAIL);
	if (!(h.flags & FLAG_GREETING_DELAY)) {
		h.is_started = true;
		smtp_server_start(&h.server);
		send_output();
	}
	for (uint32_t chunk = 0; fuzz_left(&cur) > 0 && !h.is_closed_event_seen; chunk++) {
		size_t want = fuzz_take_u8(&cur);
		size_t len = want < fuzz_left(&cur) ? want : fuzz_left(&cur);

		if (chunk == 1 && (h.options & OPT_BACKPRESSURE_CLOSE))
			smtp_server_set_backpressure(&h.server, SMTP_SERVER_BACKPRESSURE_CLOSE);
		if (want == 0) {
			timer_chunk();
		} else {
			data_chunk(cur.data + cur.pos, len);
			cur.pos += len;
		}
		send_output();
	}
	late_catch_up();
	if (h.is_closed_event_seen) {
		struct smtp_server_event ev;
		static const uint8_t more[] = "NOOP\r\n";

		FUZZ_CHECK(smtp_server_is_closed(&h.server), "CLOSE means closed");
		memset(&ev, 0, sizeof(ev));
		(void)smtp_server_feed(&h.server, more, sizeof(more) - 1, &ev);
		FUZZ_CHECK(ev.type == SMTP_SERVER_EV_CLOSE, "after CLOSE, feeds return CLOSE");
		send_output();
	}
	smtp_server_fini(&h.server);
	return 0;
}
