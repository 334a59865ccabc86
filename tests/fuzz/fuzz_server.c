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
 *           spool write fails, 64 AUTH succeeds, 128 the client talks
 *           before the greeting was sent
 *   byte 1  sends: low 7 bits the most reply bytes per send (0: all);
 *           128 back-pressure TEMPFAIL from the start
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
 * - after CLOSE every later feed returns CLOSE.
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
	FLAG_EARLY_TALKER = 128,
};

struct harness {
	struct smtp_server server;
	struct smtp_reply_parser replies;
	uint8_t flags;
	size_t send_max;
	uint32_t recipients_max;
	bool is_record_open;
	size_t record_len;
	bool is_closed_event_seen;
	uint32_t messages;
};

static struct harness h;
static uint8_t record[RECORD_MAX];

static void
check_address(const char *ptr, size_t len, size_t max)
{
	FUZZ_CHECK(len <= max, "address within its limit");
	FUZZ_CHECK(ptr != NULL || len == 0, "address pointer");
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK(ptr[i] != '\r' && ptr[i] != '\n' && ptr[i] != 0,
			   "no CR, LF or NUL in an address");
}

static void
check_envelope(void)
{
	size_t len = 0;
	const char *sender = smtp_server_sender(&h.server, &len);
	uint32_t count = smtp_server_recipient_count(&h.server);

	check_address(sender, len, SMTP_SERVER_ADDRESS_SIZE_MAX);
	FUZZ_CHECK(count >= 1 && count <= h.recipients_max, "1..recipients_max recipients");
	for (uint32_t i = 0; i < count; i++) {
		const char *rcpt = smtp_server_recipient(&h.server, i, &len);

		FUZZ_CHECK(len >= 1, "a recipient is not empty");
		check_address(rcpt, len, SMTP_SERVER_ADDRESS_SIZE_MAX);
	}
	const char *helo = smtp_server_helo_name(&h.server, &len);
	check_address(helo, len, SMTP_SERVER_HOSTNAME_SIZE_MAX);
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
		smtp_server_message_result(&h.server, !(h.flags & FLAG_SPOOL_FAILS), "FUZZQ1", 6);
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
		switch (ev.type) {
		case SMTP_SERVER_EV_NONE:
			FUZZ_CHECK(off == len, "NONE only when everything was consumed");
			return;
		case SMTP_SERVER_EV_CLOSE:
			h.is_closed_event_seen = true;
			return;
		case SMTP_SERVER_EV_BLOCKED:
			/* Results are given at once: only output space can block. */
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
			smtp_server_auth_result(&h.server, (h.flags & FLAG_AUTH_OK) != 0);
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
	smtp_server_init(&h.server, &config);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};

	memset(&h, 0, sizeof(h));
	h.flags = fuzz_take_u8(&cur);
	uint8_t sends = fuzz_take_u8(&cur);

	h.send_max = sends & 127u;
	smtp_reply_parser_init(&h.replies);
	server_setup(h.flags);
	if (sends & 128u)
		smtp_server_set_backpressure(&h.server, SMTP_SERVER_BACKPRESSURE_TEMPFAIL);
	smtp_server_start(&h.server);
	if (!(h.flags & FLAG_EARLY_TALKER))
		send_output();
	while (fuzz_left(&cur) > 0 && !h.is_closed_event_seen) {
		size_t want = fuzz_take_u8(&cur);
		size_t len = want < fuzz_left(&cur) ? want : fuzz_left(&cur);

		if (want == 0) {
			smtp_server_timeout(&h.server);
			FUZZ_CHECK(smtp_server_is_closed(&h.server), "closed after a timeout");
		} else {
			feed_chunk(cur.data + cur.pos, len);
			cur.pos += len;
		}
		send_output();
	}
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
