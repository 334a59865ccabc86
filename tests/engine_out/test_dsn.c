/*
 * test_dsn.c - RFC 3464 DSNs (reliability.md 8.7 DSN-01, DSN-02, DSN-04):
 * the multipart/report structure and its required fields, SMTP wire form
 * (CRLF only, dot-stuffed, CRLF.CRLF, lines <= 998, 7-bit), no DSN for
 * the null sender, the caller's bounded buffer (size query, exact fit, one
 * byte short), and that reply text, addresses and original headers cannot
 * add a header or a MIME part.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_dsn.h"

#define S(x) x, sizeof(x) - 1
/* Assign a string literal to a (ptr, len) pair of fields. */
#define SET(ptr, len, x) ((ptr) = (x), (len) = sizeof(x) - 1)

static const uint64_t t0 = 1714564800123456789ull; /* Wed, 01 May 2024 12:00:00 */

static const char original[] = "From: News <news@example.org>\r\n"
			       "To: bob@example.com\r\n"
			       "Subject: weekly news\r\n"
			       "..Dotted: starts with a dot\r\n"
			       "Message-ID: <abc@example.org>\r\n"
			       "\r\n"
			       "Body-Looks-Like: a header\r\n"
			       "..\r\n"
			       ".\r\n";

struct fixture {
	struct eng_dsn_message msg;
	struct eng_dsn_rcpt rcpts[2];
};

static void
fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->rcpts[0] = (struct eng_dsn_rcpt){
		.addr = S("bob@example.com"), .reply_code = 550, .reply_enhanced = { 5, 1, 1 },
		.reply_text = S("The email account that you tried to reach does not exist."),
		.remote_mta = S("mx1.example.com"), .last_attempt_ns = t0,
	};
	f->rcpts[1] = (struct eng_dsn_rcpt){
		.addr = S("carol@example.net"), .orcpt = S("Carol@Example.net"),
		.is_expired = true, .reply_code = 451, .reply_enhanced = { 4, 7, 1 },
		.reply_text = S("Greylisted"), .remote_mta = S("mx.example.net"),
		.last_attempt_ns = t0,
	};
	f->msg = (struct eng_dsn_message){
		.hostname = S("mail.ringmail.test"), .sender = S("news@example.org"),
		.queue_id = S("0100000000000000070000a000"), .envid = S("env-42"),
		.arrival_ns = t0 - 86400000000000ull, .now_ns = t0,
		.body = (const uint8_t *)original, .body_len = sizeof(original) - 1,
		.rcpts = f->rcpts, .rcpt_count = 2,
	};
}

/* Checks the SMTP wire form of (p, len); fails the test on a violation. */
static void
assert_wire_form(const uint8_t *p, size_t len)
{
	cr_assert_geq(len, 5);
	cr_assert(memcmp(p + len - 5, "\r\n.\r\n", 5) == 0, "ends with CRLF.CRLF");
	size_t line_start = 0;
	for (size_t i = 0; i < len; i++) {
		cr_assert_lt(p[i], 0x80, "7-bit at %zu", i);
		if (p[i] == '\r')
			cr_assert(i + 1 < len && p[i + 1] == '\n', "bare CR at %zu", i);
		if (p[i] != '\n')
			continue;
		cr_assert(i > 0 && p[i - 1] == '\r', "bare LF at %zu", i);
		size_t line_len = i - 1 - line_start;
		bool is_last = i + 1 == len;
		cr_assert_leq(line_len, 999, "line at %zu is %zu bytes", line_start, line_len);
		if (!is_last && line_len == 1)
			cr_assert_neq(p[line_start], '.', "lone dot line at %zu", line_start);
		if (!is_last && line_len > 0 && p[line_start] == '.')
			cr_assert(line_len >= 2 && p[line_start + 1] == '.', "unstuffed dot at %zu",
				  line_start);
		line_start = i + 1;
	}
}

/* Build msg into an exact-size heap buffer (ASan sees any overrun), check
 * the wire form, return the un-stuffed text, NUL-terminated (free it). */
static char *
build(const struct eng_dsn_message *msg, size_t *wire_len)
{
	size_t need = 0;
	cr_assert_eq(eng_dsn_build(msg, NULL, 0, &need), ENG_DSN_TOO_SMALL);
	uint8_t *wire = malloc(need);
	cr_assert_not_null(wire);
	size_t len = 0;
	cr_assert_eq(eng_dsn_build(msg, wire, need, &len), ENG_DSN_OK);
	cr_assert_eq(len, need);
	assert_wire_form(wire, len);
	char *text = malloc(len + 1);
	size_t n = 0;
	for (size_t i = 0; i + 3 < len; i++) { /* drop the final ".\r\n" */
		bool at_line_start = i == 0 || wire[i - 1] == '\n';
		if (at_line_start && wire[i] == '.')
			continue; /* the stuffed dot */
		text[n++] = (char)wire[i];
	}
	text[n] = '\0';
	free(wire);
	if (wire_len != NULL)
		*wire_len = len;
	return text;
}

/* Number of lines of text equal to line. */
static size_t
count_lines(const char *text, const char *line)
{
	size_t count = 0, n = strlen(line);
	for (const char *p = text; p != NULL && *p != '\0';) {
		if (strncmp(p, line, n) == 0 && strncmp(p + n, "\r\n", 2) == 0)
			count++;
		p = strstr(p, "\r\n");
		p = p == NULL ? NULL : p + 2;
	}
	return count;
}

/* Number of lines of text starting with prefix. */
static size_t
count_prefix(const char *text, const char *prefix)
{
	size_t count = 0, n = strlen(prefix);
	for (const char *p = text; p != NULL && *p != '\0';) {
		if (strncmp(p, prefix, n) == 0)
			count++;
		p = strstr(p, "\r\n");
		p = p == NULL ? NULL : p + 2;
	}
	return count;
}

/* The boundary parameter of the top-level Content-Type. */
static void
boundary_of(const char *text, char *out, size_t out_size)
{
	const char *b = strstr(text, "boundary=\"");
	cr_assert_not_null(b);
	b += 10;
	const char *e = strchr(b, '"');
	cr_assert_not_null(e);
	cr_assert_lt((size_t)(e - b), out_size);
	memcpy(out, b, (size_t)(e - b));
	out[e - b] = '\0';
}

static void
assert_delimiters(const char *text, size_t parts)
{
	char boundary[80], open[90], close[90];
	boundary_of(text, boundary, sizeof(boundary));
	snprintf(open, sizeof(open), "--%s", boundary);
	snprintf(close, sizeof(close), "--%s--", boundary);
	cr_assert_eq(count_lines(text, open), parts);
	cr_assert_eq(count_lines(text, close), 1);
	cr_assert_eq(count_prefix(text, open), parts + 1); /* nothing else starts so */
}

Test(eng_dsn, has_the_rfc3464_structure_and_fields)
{
	struct fixture f;
	fixture_init(&f);
	char *t = build(&f.msg, NULL);
	/* Top-level headers, all before the first empty line. */
	const char *blank = strstr(t, "\r\n\r\n");
	cr_assert_not_null(blank);
	static const char *const top[] = {
		"From: Mail Delivery System <MAILER-DAEMON@mail.ringmail.test>\r\n",
		"To: <news@example.org>\r\n",
		"Subject: Undelivered Mail Returned to Sender\r\n",
		"Date: Wed, 01 May 2024 12:00:00 +0000\r\n",
		"Message-ID: <ringmail-dsn-0100000000000000070000a000-",
		"Auto-Submitted: auto-replied\r\n",
		"MIME-Version: 1.0\r\n",
		"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(top); i++) {
		const char *at = strstr(t, top[i]);
		cr_assert(at != NULL && at < blank, "top header %s", top[i]);
	}
	assert_delimiters(t, 3);
	const char *human = strstr(t, "Content-Type: text/plain; charset=us-ascii\r\n");
	const char *status = strstr(t, "Content-Type: message/delivery-status\r\n");
	const char *headers = strstr(t, "Content-Type: text/rfc822-headers\r\n");
	cr_assert(human != NULL && status != NULL && headers != NULL);
	cr_assert(human < status && status < headers, "parts in RFC 3464 order");
	static const char *const fields[] = {
		"Reporting-MTA: dns; mail.ringmail.test",
		"X-Ringmail-Queue-ID: 0100000000000000070000a000",
		"Original-Envelope-Id: env-42",
		"Arrival-Date: Tue, 30 Apr 2024 12:00:00 +0000",
		"Final-Recipient: rfc822; bob@example.com",
		"Status: 5.1.1",
		"Remote-MTA: dns; mx1.example.com",
		"Last-Attempt-Date: Wed, 01 May 2024 12:00:00 +0000",
		"Final-Recipient: rfc822; carol@example.net",
		"Original-Recipient: rfc822; Carol@Example.net",
		"Status: 4.4.7",
		"Diagnostic-Code: smtp; 451 4.7.1 Greylisted",
		"Remote-MTA: dns; mx.example.net",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(fields); i++) {
		const char *at = strstr(t, fields[i]);
		cr_assert(at != NULL && at > status && at < headers, "field %s", fields[i]);
	}
	cr_assert_eq(count_lines(t, "Action: failed"), 2);
	cr_assert_eq(count_prefix(t, "Diagnostic-Code: smtp; 550 5.1.1 The email account"), 1);
	/* The original headers, un-stuffed, and nothing of its body. */
	cr_assert_not_null(strstr(headers, "\r\nMessage-ID: <abc@example.org>\r\n"));
	cr_assert_not_null(strstr(headers, "\r\n.Dotted: starts with a dot\r\n"));
	cr_assert_null(strstr(t, "Body-Looks-Like"));
	/* The person's part names both recipients and why. */
	cr_assert_not_null(strstr(human, "<bob@example.com>: host mx1.example.com said:\r\n"
					 "    550 5.1.1 The email account"));
	cr_assert_not_null(strstr(human, "<carol@example.net>: delivery time expired; last reply "
					 "from host mx.example.net:\r\n    451 4.7.1 Greylisted"));
	free(t);
}

Test(eng_dsn, stuffs_dots_in_the_wire_form)
{
	struct fixture f;
	fixture_init(&f);
	size_t need = 0;
	cr_assert_eq(eng_dsn_build(&f.msg, NULL, 0, &need), ENG_DSN_TOO_SMALL);
	char *wire = malloc(need + 1);
	size_t len;
	cr_assert_eq(eng_dsn_build(&f.msg, (uint8_t *)wire, need, &len), ENG_DSN_OK);
	wire[len] = '\0';
	cr_assert_not_null(strstr(wire, "\r\n..Dotted: starts with a dot\r\n"));
	free(wire);
}

Test(eng_dsn, never_for_the_null_sender)
{
	struct fixture f;
	fixture_init(&f);
	uint8_t out[4096];
	memset(out, 0xaa, sizeof(out));
	size_t len = 99;
	f.msg.sender = "";
	f.msg.sender_len = 0;
	cr_assert_eq(eng_dsn_build(&f.msg, out, sizeof(out), &len), ENG_DSN_NULL_SENDER);
	cr_assert_eq(len, 0);
	f.msg.sender = "<>";
	f.msg.sender_len = 2;
	cr_assert_eq(eng_dsn_build(&f.msg, out, sizeof(out), &len), ENG_DSN_NULL_SENDER);
	for (size_t i = 0; i < sizeof(out); i++)
		cr_assert_eq(out[i], 0xaa, "byte %zu written", i);
	cr_assert_str_eq(eng_dsn_result_name(ENG_DSN_NULL_SENDER), "null-sender");
}

Test(eng_dsn, reports_the_size_it_needs_and_never_overruns)
{
	struct fixture f;
	fixture_init(&f);
	size_t need = 0;
	cr_assert_eq(eng_dsn_build(&f.msg, NULL, 0, &need), ENG_DSN_TOO_SMALL);
	cr_assert_gt(need, 1000);
	uint8_t *buf = malloc(need + 64);
	uint8_t *exact = malloc(need);
	size_t len = 0;
	cr_assert_eq(eng_dsn_build(&f.msg, exact, need, &len), ENG_DSN_OK);
	cr_assert_eq(len, need);
	for (size_t short_by = 1; short_by < 64; short_by += 7) {
		memset(buf, 0x5a, need + 64);
		cr_assert_eq(eng_dsn_build(&f.msg, buf, need - short_by, &len), ENG_DSN_TOO_SMALL);
		cr_assert_eq(len, need);
		cr_assert(memcmp(buf, exact, need - short_by) == 0, "prefix is the DSN's");
		for (size_t i = need - short_by; i < need + 64; i++)
			cr_assert_eq(buf[i], 0x5a, "byte %zu past the size was written", i);
	}
	/* The same input gives the same bytes. */
	cr_assert_eq(eng_dsn_build(&f.msg, buf, need + 64, &len), ENG_DSN_OK);
	cr_assert_eq(len, need);
	cr_assert(memcmp(buf, exact, need) == 0);
	free(buf);
	free(exact);
}

Test(eng_dsn, reply_text_and_addresses_cannot_inject_headers_or_parts)
{
	struct fixture f;
	fixture_init(&f);
	/* The boundary this DSN will use, to try to smuggle it in. */
	char *probe = build(&f.msg, NULL);
	char boundary[80];
	boundary_of(probe, boundary, sizeof(boundary));
	free(probe);
	char evil_text[400];
	snprintf(evil_text, sizeof(evil_text),
		 "Mailbox unavailable\r\nBcc: victim@example.net\r\n\r\n--%s\r\n"
		 "Content-Type: text/html\r\n\r\n<b>x</b>\r\n.\r\nMAIL FROM:<x>\r\n\n\rX-Evil: 2",
		 boundary);
	f.rcpts[0].reply_text = evil_text;
	f.rcpts[0].reply_text_len = strlen(evil_text);
	SET(f.rcpts[0].addr, f.rcpts[0].addr_len, "evil@example.com\r\nBcc: x@example.net");
	SET(f.rcpts[1].remote_mta, f.rcpts[1].remote_mta_len, "mx.example.net\r\nX-Evil: 1");
	SET(f.rcpts[1].orcpt, f.rcpts[1].orcpt_len, "o@example.net\nX-Evil: 3");
	SET(f.msg.envid, f.msg.envid_len, "env\r\nX-Evil: 4");
	SET(f.msg.sender, f.msg.sender_len, "news@example.org>\r\nBcc: y@example.net");
	char *t = build(&f.msg, NULL);
	cr_assert_eq(count_prefix(t, "Bcc:"), 0, "%s", t);
	cr_assert_eq(count_prefix(t, "X-Evil:"), 0);
	cr_assert_eq(count_prefix(t, "MAIL FROM"), 0);
	cr_assert_eq(count_prefix(t, "Content-Type: text/html"), 0);
	assert_delimiters(t, 3);
	cr_assert_not_null(strstr(t, "Final-Recipient: rfc822; evil@example.com??Bcc: x@example.net"
				     "\r\n"));
	cr_assert_not_null(strstr(t, "To: <news@example.org>??Bcc: y@example.net>\r\n"));
	free(t);
}

Test(eng_dsn, original_header_lines_holding_the_boundary_are_left_out)
{
	struct fixture f;
	fixture_init(&f);
	char *probe = build(&f.msg, NULL);
	char boundary[80];
	boundary_of(probe, boundary, sizeof(boundary));
	free(probe);
	char body[600];
	int n = snprintf(body, sizeof(body),
			 "Subject: trap\r\nX-Trap: --%s\r\n--%s--\r\nX-Kept: yes\r\n"
			 "\r\nbody\r\n.\r\n",
			 boundary, boundary);
	f.msg.body = (const uint8_t *)body;
	f.msg.body_len = (size_t)n;
	char *t = build(&f.msg, NULL);
	assert_delimiters(t, 3);
	cr_assert_null(strstr(t, "X-Trap"));
	cr_assert_not_null(strstr(t, "\r\nSubject: trap\r\nX-Kept: yes\r\n"));
	free(t);
}

Test(eng_dsn, original_headers_end_at_the_first_empty_line_or_the_end)
{
	struct fixture f;
	fixture_init(&f);
	static const char no_body[] = "Subject: only headers\r\nX-A: 1\r\n.\r\n";
	f.msg.body = (const uint8_t *)no_body;
	f.msg.body_len = sizeof(no_body) - 1;
	char *t = build(&f.msg, NULL);
	cr_assert_not_null(strstr(t, "\r\n\r\nSubject: only headers\r\nX-A: 1\r\n\r\n--"));
	free(t);
	static const char empty_headers[] = "\r\nbody only\r\n.\r\n";
	f.msg.body = (const uint8_t *)empty_headers;
	f.msg.body_len = sizeof(empty_headers) - 1;
	t = build(&f.msg, NULL);
	cr_assert_null(strstr(t, "body only"));
	cr_assert_not_null(strstr(t, "Content-Type: text/rfc822-headers\r\n\r\n\r\n--"));
	free(t);
	/* A bare CR in an original header is a blank, 8-bit bytes are '?'; a
	 * bare LF ends the line as CRLF would (only inside the headers part:
	 * the spool never holds one, injection refuses them). */
	static const char messy[] = "Subject: a\rb\nX-Injected: 1\r\n"
				    "X-8bit: caf\xc3\xa9\r\n\r\n.\r\n";
	f.msg.body = (const uint8_t *)messy;
	f.msg.body_len = sizeof(messy) - 1;
	t = build(&f.msg, NULL);
	cr_assert_not_null(strstr(t, "\r\nSubject: a b\r\nX-Injected: 1\r\n"), "%s", t);
	cr_assert_eq(count_prefix(strstr(t, "text/rfc822-headers"), "X-Injected"), 1);
	cr_assert(strstr(t, "X-Injected") > strstr(t, "text/rfc822-headers"));
	cr_assert_not_null(strstr(t, "\r\nX-8bit: caf??\r\n"));
	free(t);
}

Test(eng_dsn, original_headers_are_bounded)
{
	struct fixture f;
	fixture_init(&f);
	size_t size = 200u * 1024u;
	char *body = malloc(size);
	size_t n = 0;
	memcpy(body + n, "X-Long: ", 8);
	n += 8;
	memset(body + n, 'L', 3000); /* one header line far over 998 */
	n += 3000;
	memcpy(body + n, "\r\n", 2);
	n += 2;
	while (n + 40 < size) {
		memcpy(body + n, "X-Fill: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 38);
		n += 38;
	}
	memcpy(body + n, "\r\n.\r\n", 5);
	n += 5;
	f.msg.body = (const uint8_t *)body;
	f.msg.body_len = n;
	size_t wire_len;
	char *t = build(&f.msg, &wire_len);
	cr_assert_lt(wire_len, ENG_DSN_HEADERS_SIZE_MAX + 8192);
	cr_assert_gt(count_prefix(t, "X-Fill: "), 1000);
	const char *long_line = strstr(t, "X-Long: ");
	cr_assert_not_null(long_line);
	cr_assert_eq(strstr(long_line, "\r\n") - long_line, 998);
	free(t);
	free(body);
}

Test(eng_dsn, diagnostic_text_is_capped_and_folded)
{
	struct fixture f;
	fixture_init(&f);
	static char text[5000];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = i % 6 == 5 ? ' ' : 'w';
	f.rcpts[0].reply_text = text;
	f.rcpts[0].reply_text_len = sizeof(text);
	char *t = build(&f.msg, NULL);
	const char *d = strstr(t, "Diagnostic-Code: smtp; 550 5.1.1 wwwww");
	cr_assert_not_null(d);
	size_t value_len = 0, lines = 0;
	const char *p = d;
	do { /* the field and its continuation lines */
		const char *eol = strstr(p, "\r\n");
		cr_assert_leq((size_t)(eol - p), ENG_DSN_FOLD_WIDTH, "line of %zu", eol - p);
		value_len += (size_t)(eol - p);
		lines++;
		p = eol + 2;
	} while (*p == ' ');
	cr_assert_gt(lines, 5);
	cr_assert_leq(value_len, ENG_DSN_DIAGNOSTIC_SIZE_MAX + 64);
	cr_assert(strncmp(p - 5, "...\r\n", 5) == 0, "cut marked with ...");
	free(t);
	/* One unbreakable word: cut, on lines of at most 998 bytes. */
	memset(text, 'x', sizeof(text));
	t = build(&f.msg, NULL);
	cr_assert_not_null(strstr(t, "\r\n xxxxxxxx"));
	cr_assert_not_null(strstr(t, "xxx\r\n ...\r\n"));
	free(t);
}

Test(eng_dsn, control_and_8bit_bytes_in_reply_text_are_neutralised)
{
	struct fixture f;
	fixture_init(&f);
	static const char text[] = "caf\xc3\xa9\x01nul\0end\x7f!";
	f.rcpts[0].reply_text = text;
	f.rcpts[0].reply_text_len = sizeof(text) - 1;
	char *t = build(&f.msg, NULL);
	cr_assert_not_null(strstr(t, "Diagnostic-Code: smtp; 550 5.1.1 caf?? nul end !\r\n"), "%s",
			   t);
	free(t);
}

Test(eng_dsn, engine_made_failures_and_expiry_without_reply)
{
	struct fixture f;
	fixture_init(&f);
	f.rcpts[0] = (struct eng_dsn_rcpt){ .addr = S("x@null-mx.example"),
					    .status = { 5, 1, 10 },
					    .reply_text = S("domain has a null MX (RFC 7505)") };
	f.rcpts[1] = (struct eng_dsn_rcpt){ .addr = S("y@dead.example"), .is_expired = true };
	f.msg.envid = NULL;
	char *t = build(&f.msg, NULL);
	cr_assert_eq(count_prefix(t, "Diagnostic-Code:"), 0);
	cr_assert_eq(count_prefix(t, "Remote-MTA:"), 0);
	cr_assert_eq(count_prefix(t, "Last-Attempt-Date:"), 0);
	cr_assert_eq(count_prefix(t, "Original-Envelope-Id:"), 0);
	cr_assert_eq(count_prefix(t, "Original-Recipient:"), 0);
	cr_assert_eq(count_lines(t, "Status: 5.1.10"), 1);
	cr_assert_eq(count_lines(t, "Status: 4.4.7"), 1);
	cr_assert_eq(count_lines(t, "Action: failed"), 2);
	cr_assert_not_null(strstr(t, "<x@null-mx.example>: delivery failed:\r\n"
				     "    domain has a null MX (RFC 7505)\r\n"));
	cr_assert_not_null(strstr(t, "<y@dead.example>: delivery time expired\r\n"));
	free(t);
}

Test(eng_dsn, one_block_per_recipient_for_many_recipients)
{
	struct fixture f;
	fixture_init(&f);
	enum { COUNT = 1000 };
	static struct eng_dsn_rcpt rcpts[COUNT];
	static char addrs[COUNT][32];
	for (uint32_t i = 0; i < COUNT; i++) {
		int n = snprintf(addrs[i], sizeof(addrs[i]), "user%u@example.com", i);
		rcpts[i] = f.rcpts[0];
		rcpts[i].addr = addrs[i];
		rcpts[i].addr_len = (size_t)n;
	}
	f.msg.rcpts = rcpts;
	f.msg.rcpt_count = COUNT;
	char *t = build(&f.msg, NULL);
	cr_assert_eq(count_prefix(t, "Final-Recipient: rfc822; user"), COUNT);
	cr_assert_eq(count_lines(t, "Action: failed"), COUNT);
	cr_assert_eq(count_lines(t, "Final-Recipient: rfc822; user999@example.com"), 1);
	assert_delimiters(t, 3);
	free(t);
}

struct status_case {
	struct eng_dsn_rcpt rcpt; /* only the status inputs are set */
	struct eng_enhanced want;
};

ParameterizedTestParameters(eng_dsn, status_is_chosen_in_order)
{
	static struct status_case cases[] = {
		{ { .status = { 5, 1, 10 }, .reply_code = 550, .reply_enhanced = { 5, 1, 1 } },
		  { 5, 1, 10 } },
		{ { .is_expired = true, .reply_code = 451, .reply_enhanced = { 4, 7, 1 } },
		  { 4, 4, 7 } },
		{ { .reply_code = 550, .reply_enhanced = { 5, 7, 26 } }, { 5, 7, 26 } },
		{ { .reply_code = 550, .reply_enhanced = { 4, 1, 1 } }, { 5, 0, 0 } },
		{ { .reply_code = 550 }, { 5, 0, 0 } },
		{ { .reply_code = 452 }, { 4, 0, 0 } },
		{ { .reply_code = 0 }, { 5, 0, 0 } },
		{ { .status = { 2, 0, 0 }, .reply_code = 554 }, { 5, 0, 0 } },
		{ { .status = { 5, 1000, 0 }, .reply_code = 554 }, { 5, 0, 0 } },
	};
	return cr_make_param_array(struct status_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct status_case *c, eng_dsn, status_is_chosen_in_order)
{
	struct eng_enhanced got = eng_dsn_status(&c->rcpt);
	cr_assert(got.status_class == c->want.status_class && got.subject == c->want.subject &&
			  got.detail == c->want.detail,
		  "got %u.%u.%u", got.status_class, got.subject, got.detail);
}

struct date_case {
	uint64_t time_ns;
	char want[ENG_DSN_DATE_SIZE];
};

ParameterizedTestParameters(eng_dsn, dates_are_rfc5322_utc)
{
	static struct date_case cases[] = {
		{ 0, "Thu, 01 Jan 1970 00:00:00 +0000" },
		{ 951782400000000000ull, "Tue, 29 Feb 2000 00:00:00 +0000" },
		{ 1709164800999999999ull, "Thu, 29 Feb 2024 00:00:00 +0000" },
		{ 1714564800123456789ull, "Wed, 01 May 2024 12:00:00 +0000" },
		{ 4107542400000000000ull, "Mon, 01 Mar 2100 00:00:00 +0000" },
		{ UINT64_MAX, "Sun, 21 Jul 2554 23:34:33 +0000" },
	};
	return cr_make_param_array(struct date_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct date_case *c, eng_dsn, dates_are_rfc5322_utc)
{
	char out[ENG_DSN_DATE_SIZE];
	cr_assert_eq(eng_dsn_format_date(c->time_ns, out), 31);
	cr_assert_str_eq(out, c->want);
}

Test(eng_dsn, no_recipients_is_a_programmer_error, .signal = SIGABRT)
{
	struct fixture f;
	fixture_init(&f);
	f.msg.rcpt_count = 0;
	size_t len;
	enum eng_dsn_result result = eng_dsn_build(&f.msg, NULL, 0, &len);
	(void)result;
}

Test(eng_dsn, no_hostname_is_a_programmer_error, .signal = SIGABRT)
{
	struct fixture f;
	fixture_init(&f);
	f.msg.hostname_len = 0;
	size_t len;
	enum eng_dsn_result result = eng_dsn_build(&f.msg, NULL, 0, &len);
	(void)result;
}
