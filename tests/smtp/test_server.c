/*
 * test_server.c - the inbound ESMTP session (smtp/smtp_server.h): the
 * command set, envelope syntax, limits, AUTH, BDAT, STARTTLS, and the bad
 * inputs of reliability.md 8.1 INJ-01..INJ-12 that the pure layer decides.
 *
 * STARTTLS: the harness plays the listener: at the STARTTLS event it keeps
 * feeding what is left of the input (the session must drop it), and once
 * the client's step is over it "completes the handshake"
 * (smtp_server_tls_started) before the next step.
 *
 * Every script runs through ts_check(): once in one piece per client
 * step, then split at every byte boundary of every step, then one byte
 * per feed; replies, events and stored messages must be identical. The
 * harness also checks, on every run, that each stored body is valid wire
 * form (smtp_dot_validate), that the body size accessor matches, that
 * every reply carries an enhanced status code where RFC 2034 wants one,
 * and that nothing leaks (ASan).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_dot.h"
#include "smtp/smtp_server.h"

#define HOST "mx.test"
#define GREETING "220 " HOST " ESMTP ringmail\r\n"
#define EHLO_REPLY                                                                  \
	"250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n" \
	"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n"

/* ---- harness -------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap == 0 ? 256 : b->cap;

		while (b->len + n + 1 > cap)
			cap *= 2;
		b->p = realloc(b->p, cap);
		cr_assert_not_null(b->p);
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void __attribute__((format(printf, 2, 3)))
buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	cr_assert(n >= 0 && (size_t)n < sizeof(tmp));
	buf_add(b, tmp, (size_t)n);
}

/* The CRLF at or after p, before end (NULL if none). Not strstr: under
 * ASan that is O(strlen) per call, quadratic over a million replies. */
static const char *
find_crlf(const char *p, const char *end)
{
	for (; p + 1 < end; p++) {
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	}
	return NULL;
}

enum ts_result_mode { TS_OK = 0, TS_FAIL, TS_REPLY };

struct ts_opts {
	struct smtp_server_config cfg;
	enum ts_result_mode result;
	bool no_start;			  /* never call smtp_server_start */
	bool no_greeting_drain;		  /* do not hand out the greeting */
	enum smtp_server_backpressure bp; /* set before the steps */
	int bp_step;			  /* ...before this step (0: first) */
	enum smtp_server_backpressure bp2;
	bool no_split;			  /* large scripts: whole and bytewise only */
	bool no_bytewise;
};

struct ts_result {
	struct buf out;	 /* every reply byte */
	struct buf log;	 /* events */
	struct buf body; /* record being built */
	struct buf last_body;
	unsigned messages, aborts, auths, tls_starts;
	bool closed;
	bool tls_pending; /* STARTTLS event seen, handshake not done yet */
	bool last_tls;	  /* the last message came under TLS */
	bool body_started;
	uint32_t last_rcpt_count;
	char last_sender[300];
	char last_rcpt0[300];
	char last_rcptn[300];
	char last_helo[300]; /* "E"/"H", "A"/"-", then the name */
	bool last_8bit, last_utf8;
	uint64_t last_size_declared;
	size_t blocked_drains;
};

struct step {
	const char *p;
	size_t n;
};

#define ST(x) { x, sizeof(x) - 1u }

static void
ts_result_free(struct ts_result *r)
{
	free(r->out.p);
	free(r->log.p);
	free(r->body.p);
	free(r->last_body.p);
	memset(r, 0, sizeof(*r));
}

static void
drain(struct smtp_server *s, struct ts_result *r)
{
	size_t len;
	const uint8_t *p = smtp_server_output(s, &len);

	if (len == 0)
		return;
	cr_assert_not_null(p);
	buf_add(&r->out, p, len);
	smtp_server_output_consumed(s, len);
}

static void
on_message(struct smtp_server *s, const struct ts_opts *o, struct ts_result *r)
{
	size_t slen, len, off = 0;
	const char *sender = smtp_server_sender(s, &slen);
	uint32_t count = smtp_server_recipient_count(s);
	char id[32];

	cr_assert(r->body_started, "MESSAGE without DATA_START");
	cr_assert_eq(smtp_dot_validate((const uint8_t *)r->body.p, r->body.len, &off), SMTP_DOT_VALID,
		     "stored body is not wire form at %zu: %.*s", off, (int)r->body.len, r->body.p);
	cr_assert_eq(smtp_server_body_size(s), r->body.len);
	cr_assert_gt(count, 0);
	r->messages++;
	r->last_rcpt_count = count;
	snprintf(r->last_sender, sizeof(r->last_sender), "%.*s", (int)slen, sender);
	const char *a = smtp_server_recipient(s, 0, &len);
	snprintf(r->last_rcpt0, sizeof(r->last_rcpt0), "%.*s", (int)len, a);
	a = smtp_server_recipient(s, count - 1, &len);
	snprintf(r->last_rcptn, sizeof(r->last_rcptn), "%.*s", (int)len, a);
	r->last_tls = smtp_server_is_tls(s);
	r->last_8bit = smtp_server_body_is_8bitmime(s);
	r->last_utf8 = smtp_server_is_smtputf8(s);
	r->last_size_declared = smtp_server_size_declared(s);
	const char *helo = smtp_server_helo_name(s, &len);
	snprintf(r->last_helo, sizeof(r->last_helo), "%s%s%.*s", smtp_server_is_esmtp(s) ? "E" : "H",
		 smtp_server_is_authenticated(s) ? "A" : "-", (int)len, helo);
	r->last_body.len = 0;
	buf_add(&r->last_body, r->body.p, r->body.len);
	buf_printf(&r->log, "MSG<%s>%u:%zu ", r->last_sender, count, r->body.len);
	r->body.len = 0;
	r->body_started = false;
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_NONE);
	if (o->result == TS_OK) {
		int n = snprintf(id, sizeof(id), "Q%u", r->messages);
		smtp_server_message_result(s, true, id, (size_t)n);
	} else if (o->result == TS_FAIL) {
		smtp_server_message_result(s, false, NULL, 0);
	} else {
		smtp_server_message_reply(s, 452, "4.3.1 Insufficient\r\nstorage", 27);
	}
}

static void
on_auth(struct smtp_server *s, const struct smtp_server_event *ev, struct ts_result *r)
{
	const struct smtp_server_auth *a = &ev->auth;
	bool ok = a->authcid_len == 4 && memcmp(a->authcid, "user", 4) == 0 &&
		  a->password_len == 6 && memcmp(a->password, "secret", 6) == 0;

	r->auths++;
	buf_printf(&r->log, "AUTH%d<%.*s><%.*s><%.*s> ", (int)a->mechanism, (int)a->authzid_len,
		   (const char *)a->authzid, (int)a->authcid_len, (const char *)a->authcid,
		   (int)a->password_len, (const char *)a->password);
	/* "busy": the listener's checker queue is full */
	if (a->password_len == 4 && memcmp(a->password, "busy", 4) == 0) {
		smtp_server_auth_tempfail(s);
		return;
	}
	smtp_server_auth_result(s, ok);
}

/* Feed one piece as a listener would: act on every event until NONE. */
static void
feed_piece(struct smtp_server *s, const struct ts_opts *o, const uint8_t *p, size_t n,
	   struct ts_result *r)
{
	size_t off = 0;

	for (size_t guard = 0; guard < 100000000u; guard++) {
		struct smtp_server_event ev;
		size_t c = smtp_server_feed(s, p + off, n - off, &ev);
		size_t pending;

		cr_assert_leq(c, n - off);
		off += c;
		switch (ev.type) {
		case SMTP_SERVER_EV_NONE:
			cr_assert_eq(off, n, "NONE with input left");
			return;
		case SMTP_SERVER_EV_BLOCKED:
			(void)smtp_server_output(s, &pending);
			cr_assert_gt(pending, 0, "blocked without output");
			r->blocked_drains++;
			drain(s, r);
			break;
		case SMTP_SERVER_EV_DATA_START:
			cr_assert(!r->body_started);
			r->body_started = true;
			r->body.len = 0;
			buf_add(&r->log, "START ", 6);
			break;
		case SMTP_SERVER_EV_BODY:
			cr_assert(r->body_started);
			cr_assert_gt(ev.len, 0);
			buf_add(&r->body, ev.ptr, ev.len);
			break;
		case SMTP_SERVER_EV_DATA_ABORT:
			cr_assert(r->body_started);
			r->body_started = false;
			r->body.len = 0;
			r->aborts++;
			buf_add(&r->log, "ABORT ", 6);
			break;
		case SMTP_SERVER_EV_MESSAGE:
			on_message(s, o, r);
			break;
		case SMTP_SERVER_EV_AUTH:
			on_auth(s, &ev, r);
			break;
		case SMTP_SERVER_EV_STARTTLS:
			cr_assert(!r->tls_pending && !smtp_server_is_tls(s));
			r->tls_pending = true;
			buf_add(&r->log, "TLS ", 4);
			break;
		case SMTP_SERVER_EV_CLOSE:
			cr_assert(smtp_server_is_closed(s));
			r->closed = true;
			buf_add(&r->log, "CLOSE", 5);
			return;
		default:
			cr_assert_fail("bad event %d", (int)ev.type);
		}
	}
	cr_assert_fail("feed loop did not end");
}

/* Every reply line but the greeting, EHLO/HELO and 3xx carries
 * "d.d.d " after the code (RFC 2034 3). */
static void
check_enhanced_codes(const struct buf *out)
{
	size_t i = 0;

	while (i < out->len) {
		const char *line = out->p + i;
		const char *eol = find_crlf(line, out->p + out->len);
		int a, b, c, n = 0;

		char copy[64];

		cr_assert_not_null(eol, "reply without CRLF: %s", line);
		cr_assert(eol - line >= 4, "short reply line");
		snprintf(copy, sizeof(copy), "%.*s", (int)(eol - line), line); /* sscanf is O(strlen) */
		if (line[0] != '3' && strncmp(line + 4, HOST, strlen(HOST)) != 0 &&
		    strncmp(line + 4, "PIPELINING", 10) != 0 && strncmp(line + 4, "SIZE", 4) != 0 &&
		    strncmp(line + 4, "8BITMIME", 8) != 0 && strncmp(line + 4, "SMTPUTF8", 8) != 0 &&
		    strncmp(line + 4, "ENHANCED", 8) != 0 && strncmp(line + 4, "CHUNKING", 8) != 0 &&
		    strncmp(line + 4, "AUTH ", 5) != 0 && strncmp(line + 4, "STARTTLS", 8) != 0) {
			cr_assert(sscanf(copy + 4, "%d.%d.%d %n", &a, &b, &c, &n) == 3 && n > 0,
				  "no enhanced code: %.*s", (int)(eol - line), line);
			cr_assert_eq(a, line[0] - '0', "class mismatch: %.*s", (int)(eol - line), line);
		}
		i = (size_t)(eol - out->p) + 2;
	}
}

/* split_step/split_at: feed that step in two pieces; bytewise: all steps
 * one byte at a time. */
static void
ts_run(const struct ts_opts *o, const struct step *steps, size_t n, size_t split_step,
       size_t split_at, bool bytewise, struct ts_result *r)
{
	struct smtp_server *s = calloc(1, sizeof(*s));
	struct smtp_server_config cfg = o->cfg;

	cr_assert_not_null(s);
	memset(r, 0, sizeof(*r));
	smtp_server_init(s, &cfg);
	if (!o->no_start)
		smtp_server_start(s);
	if (!o->no_greeting_drain)
		drain(s, r);
	for (size_t i = 0; i < n && !r->closed; i++) {
		const uint8_t *p = (const uint8_t *)steps[i].p;

		if ((int)i == o->bp_step)
			smtp_server_set_backpressure(s, o->bp);
		if ((int)i == o->bp_step + 1 && o->bp_step >= 0)
			smtp_server_set_backpressure(s, o->bp2);
		if (bytewise) {
			for (size_t k = 0; k < steps[i].n && !r->closed; k++)
				feed_piece(s, o, p + k, 1, r);
		} else if (i == split_step) {
			feed_piece(s, o, p, split_at, r);
			if (!r->closed)
				feed_piece(s, o, p + split_at, steps[i].n - split_at, r);
		} else {
			feed_piece(s, o, p, steps[i].n, r);
		}
		drain(s, r); /* the client reads the replies */
		if (r->tls_pending && !r->closed) {
			/* the client read the 220 and did the handshake */
			cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_COMMAND);
			smtp_server_tls_started(s);
			cr_assert(smtp_server_is_tls(s));
			r->tls_pending = false;
			r->tls_starts++;
		}
	}
	if (!r->closed)
		feed_piece(s, o, NULL, 0, r);
	drain(s, r);
	check_enhanced_codes(&r->out);
	smtp_server_fini(s);
	free(s);
}

static void
ts_assert_same(const struct ts_result *a, const struct ts_result *b, const char *how, size_t i,
	       size_t k)
{
	cr_assert_eq(a->out.len, b->out.len, "%s step %zu at %zu: replies differ:\n%s\nvs\n%s", how,
		     i, k, a->out.p, b->out.p);
	cr_assert(memcmp(a->out.p, b->out.p, a->out.len) == 0, "%s %zu %zu: replies differ", how,
		  i, k);
	cr_assert_str_eq(a->log.p != NULL ? a->log.p : "", b->log.p != NULL ? b->log.p : "",
			 "%s step %zu at %zu: events differ", how, i, k);
	cr_assert_eq(a->messages, b->messages);
	cr_assert_eq(a->tls_starts, b->tls_starts);
	cr_assert_eq(a->last_tls, b->last_tls);
	cr_assert_eq(a->last_body.len, b->last_body.len);
	cr_assert(a->last_body.len == 0 || memcmp(a->last_body.p, b->last_body.p, a->last_body.len) == 0);
}

/* Run whole, split at every boundary, byte-wise: identical results. */
static void
ts_check(const struct ts_opts *o, const struct step *steps, size_t n, struct ts_result *whole)
{
	struct ts_result other;

	ts_run(o, steps, n, SIZE_MAX, 0, false, whole);
	for (size_t i = 0; i < n && !o->no_split; i++) {
		for (size_t k = 1; k < steps[i].n; k++) {
			ts_run(o, steps, n, i, k, false, &other);
			ts_assert_same(whole, &other, "split", i, k);
			ts_result_free(&other);
		}
	}
	if (!o->no_bytewise) {
		ts_run(o, steps, n, SIZE_MAX, 0, true, &other);
		ts_assert_same(whole, &other, "bytewise", 0, 0);
		ts_result_free(&other);
	}
}

static void
opts_default(struct ts_opts *o)
{
	memset(o, 0, sizeof(*o));
	smtp_server_config_default(&o->cfg);
	o->cfg.hostname = HOST;
	o->cfg.hostname_len = strlen(HOST);
	o->cfg.client_is_allowed = true;
	o->cfg.auth_is_offered = true;
	o->bp_step = -1;
}

/* Reply codes, one per reply (multi-line replies count once). */
static void
codes(const struct ts_result *r, char *dst, size_t dst_size)
{
	size_t i = 0, o = 0;

	dst[0] = '\0';
	while (i + 4 <= r->out.len) {
		const char *eol = find_crlf(r->out.p + i, r->out.p + r->out.len);

		cr_assert_not_null(eol);
		if (r->out.p[i + 3] == ' ') {
			cr_assert_lt(o + 5, dst_size);
			memcpy(dst + o, r->out.p + i, 3);
			o += 3;
			dst[o++] = ' ';
			dst[o] = '\0';
		}
		i = (size_t)(eol - r->out.p) + 2;
	}
	if (o > 0)
		dst[o - 1] = '\0';
}

#define EXPECT_CODES(r, want)                                                    \
	do {                                                                     \
		char got_[4096];                                                 \
		codes((r), got_, sizeof(got_));                                  \
		cr_assert_str_eq(got_, (want), "replies:\n%s", (r)->out.p);      \
	} while (0)

#define EXPECT_OUT_HAS(r, text) \
	cr_assert_not_null(strstr((r)->out.p, (text)), "no \"%s\" in:\n%s", (text), (r)->out.p)

/* Run a script with default options. */
#define RUN(r, ...)                                                                \
	do {                                                                       \
		struct ts_opts o_;                                                 \
		const struct step steps_[] = { __VA_ARGS__ };                      \
		opts_default(&o_);                                                 \
		ts_check(&o_, steps_, sizeof(steps_) / sizeof(steps_[0]), (r));    \
	} while (0)

#define RUN_OPTS(o, r, ...)                                                     \
	do {                                                                    \
		const struct step steps_[] = { __VA_ARGS__ };                   \
		ts_check((o), steps_, sizeof(steps_) / sizeof(steps_[0]), (r)); \
	} while (0)

#define EHLO ST("EHLO client.test\r\n")
#define MAIL ST("MAIL FROM:<a@b.test>\r\n")
#define RCPT ST("RCPT TO:<c@d.test>\r\n")
#define DATA ST("DATA\r\n")
#define QUIT ST("QUIT\r\n")

/* ---- greeting, EHLO, simple commands -------------------------------- */

Test(smtp_server, greeting_then_quit)
{
	struct ts_result r;

	RUN(&r, QUIT);
	cr_assert_str_eq(r.out.p, GREETING "221 2.0.0 Bye\r\n");
	cr_assert_str_eq(r.log.p, "CLOSE");
	ts_result_free(&r);
}

Test(smtp_server, ehlo_lists_every_extension)
{
	struct ts_result r;

	RUN(&r, EHLO);
	cr_assert_str_eq(r.out.p, GREETING EHLO_REPLY);
	ts_result_free(&r);
}

Test(smtp_server, ehlo_without_auth_and_chunking)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.auth_is_offered = false;
	o.cfg.chunking_is_disabled = true;
	o.cfg.message_size_max = 1234;
	RUN_OPTS(&o, &r, EHLO);
	cr_assert_str_eq(r.out.p, GREETING "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 1234\r\n"
					   "250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n");
	ts_result_free(&r);
}

Test(smtp_server, helo_is_plain_smtp)
{
	struct ts_result r;

	RUN(&r, ST("HELO client.test\r\n"), ST("MAIL FROM:<a@b.test> SIZE=10\r\n"), MAIL);
	cr_assert_str_eq(r.out.p, GREETING "250 " HOST "\r\n"
					   "555 5.5.4 Error: unsupported MAIL parameter\r\n"
					   "250 2.1.0 Ok\r\n");
	ts_result_free(&r);
}

Test(smtp_server, ehlo_without_name_or_with_space_is_501)
{
	struct ts_result r;

	RUN(&r, ST("EHLO\r\n"), ST("EHLO a b\r\n"), ST("HELO \r\n"), MAIL);
	EXPECT_CODES(&r, "220 501 501 501 503");
	ts_result_free(&r);
}

Test(smtp_server, noop_vrfy_help_expn_starttls)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("NOOP\r\n"), ST("VRFY someone\r\n"), ST("HELP\r\n"), ST("EXPN list\r\n"),
	    ST("STARTTLS\r\n"), ST("VRFY\r\n"));
	EXPECT_CODES(&r, "220 250 250 252 214 502 502 501");
	EXPECT_OUT_HAS(&r, "252 2.5.2 ");
	EXPECT_OUT_HAS(&r, "502 5.5.1 Error: command not implemented\r\n");
	ts_result_free(&r);
}

Test(smtp_server, unknown_command_and_empty_line_are_500)
{
	struct ts_result r;

	RUN(&r, ST("FOO bar\r\n"), ST("\r\n"), ST("MAILFROM:<a@b>\r\n"));
	cr_assert_str_eq(r.out.p, GREETING "500 5.5.2 Error: command not recognized\r\n"
					   "500 5.5.2 Error: bad syntax\r\n"
					   "500 5.5.2 Error: command not recognized\r\n");
	ts_result_free(&r);
}

Test(smtp_server, commands_are_case_insensitive)
{
	struct ts_result r;

	RUN(&r, ST("ehlo client.test\r\n"), ST("mail from:<a@b.test>\r\nrcpt to:<c@d.test>\r\n"),
	    ST("data\r\n"), ST("x\r\n.\r\n"), ST("quit\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 354 250 221");
	cr_assert_eq(r.messages, 1);
	ts_result_free(&r);
}

/* ---- transactions --------------------------------------------------- */

Test(smtp_server, data_transaction_stores_the_wire_form)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, DATA, ST("Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\n"), QUIT);
	cr_assert_str_eq(r.out.p, GREETING EHLO_REPLY "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					   "354 End data with <CR><LF>.<CR><LF>\r\n"
					   "250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n");
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.last_body.p, "Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\n");
	cr_assert_str_eq(r.last_sender, "a@b.test");
	cr_assert_str_eq(r.last_rcpt0, "c@d.test");
	cr_assert_str_eq(r.log.p, "START MSG<a@b.test>1:30 CLOSE");
	ts_result_free(&r);
}

Test(smtp_server, pipelined_transaction_rfc2920)
{
	struct ts_result r;

	RUN(&r, EHLO,
	    ST("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n"),
	    ST("x\r\n.\r\nMAIL FROM:<g@h.test>\r\nRCPT TO:<i@j.test>\r\nDATA\r\n"),
	    ST("y\r\n.\r\nQUIT\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 250 354 250 250 250 354 250 221");
	cr_assert_eq(r.messages, 2);
	cr_assert_str_eq(r.last_sender, "g@h.test");
	cr_assert_str_eq(r.log.p, "START MSG<a@b.test>2:6 START MSG<g@h.test>1:6 CLOSE");
	ts_result_free(&r);
}

Test(smtp_server, empty_message_is_the_lone_terminator)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, DATA, ST(".\r\n"));
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.last_body.p, ".\r\n");
	ts_result_free(&r);
}

Test(smtp_server, dot_lines_are_kept_as_received)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, DATA, ST("..\r\n.x\r\n...\r\n\r\n.\r\n"));
	cr_assert_str_eq(r.last_body.p, "..\r\n.x\r\n...\r\n\r\n.\r\n");
	ts_result_free(&r);
}

Test(smtp_server, rset_ends_the_transaction)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("RSET\r\n"), DATA, ST("RSET x\r\n"), MAIL);
	EXPECT_CODES(&r, "220 250 250 250 250 503 501 250");
	ts_result_free(&r);
}

Test(smtp_server, ehlo_resets_the_transaction)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, EHLO, DATA);
	EXPECT_CODES(&r, "220 250 250 250 250 503");
	ts_result_free(&r);
}

Test(smtp_server, bad_sequences_are_503)
{
	struct ts_result r;

	RUN(&r, MAIL, EHLO, RCPT, DATA, MAIL, MAIL, DATA);
	cr_assert_str_eq(r.out.p, GREETING "503 5.5.1 Error: send HELO/EHLO first\r\n" EHLO_REPLY
					   "503 5.5.1 Error: need MAIL command\r\n"
					   "503 5.5.1 Error: need MAIL command\r\n"
					   "250 2.1.0 Ok\r\n"
					   "503 5.5.1 Error: nested MAIL command\r\n"
					   "503 5.5.1 Error: need RCPT command\r\n");
	ts_result_free(&r);
}

Test(smtp_server, data_with_argument_is_501)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("DATA x\r\n"), DATA, ST(".\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 501 354 250");
	ts_result_free(&r);
}

Test(smtp_server, null_sender_is_accepted)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<>\r\n"), RCPT, DATA, ST("x\r\n.\r\n"));
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.last_sender, "");
	ts_result_free(&r);
}

Test(smtp_server, space_after_colon_is_tolerated)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM: <a@b.test>\r\n"), ST("RCPT TO: <c@d.test>\r\n"));
	EXPECT_CODES(&r, "220 250 250 250");
	ts_result_free(&r);
}

Test(smtp_server, message_result_failure_is_451)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.result = TS_FAIL;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("x\r\n.\r\n"), MAIL);
	EXPECT_OUT_HAS(&r, "451 4.3.0 Error: queue file write error\r\n250 2.1.0 Ok\r\n");
	ts_result_free(&r);
}

Test(smtp_server, message_reply_is_sanitised)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.result = TS_REPLY;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("x\r\n.\r\n"));
	EXPECT_OUT_HAS(&r, "452 4.3.1 Insufficient??storage\r\n");
	ts_result_free(&r);
}

/* ---- envelope syntax ------------------------------------------------ */

static void
one_rcpt(const char *line, const char *want_codes, const char *want_rcpt)
{
	struct ts_opts o;
	struct ts_result r;
	struct step steps[] = { EHLO, ST("MAIL FROM:<a@b.test> SMTPUTF8\r\n"), { line, strlen(line) },
				DATA, ST("x\r\n.\r\n") };

	opts_default(&o);
	ts_check(&o, steps, 5, &r);
	EXPECT_CODES(&r, want_codes);
	if (want_rcpt != NULL) {
		cr_assert_eq(r.messages, 1);
		cr_assert_str_eq(r.last_rcpt0, want_rcpt);
	} else {
		cr_assert_eq(r.messages, 0);
	}
	ts_result_free(&r);
}

#define OK_RCPT "220 250 250 250 354 250"
#define BAD_RCPT "220 250 250 501 503 500 500" /* "x", "." are commands */

Test(smtp_server, rcpt_plain) { one_rcpt("RCPT TO:<c@d.test>\r\n", OK_RCPT, "c@d.test"); }
Test(smtp_server, rcpt_postmaster) { one_rcpt("RCPT TO:<Postmaster>\r\n", OK_RCPT, "Postmaster"); }
Test(smtp_server, rcpt_quoted_local_part)
{
	one_rcpt("RCPT TO:<\"a b\\\"c\"@d.test>\r\n", OK_RCPT, "\"a b\\\"c\"@d.test");
}
Test(smtp_server, rcpt_source_route_is_ignored)
{
	one_rcpt("RCPT TO:<@a.test,@b.test:c@d.test>\r\n", OK_RCPT, "c@d.test");
}
Test(smtp_server, rcpt_address_literal)
{
	one_rcpt("RCPT TO:<c@[192.0.2.1]>\r\n", OK_RCPT, "c@[192.0.2.1]");
}
Test(smtp_server, rcpt_percent_hack_is_just_a_local_part)
{
	one_rcpt("RCPT TO:<c%e.test@d.test>\r\n", OK_RCPT, "c%e.test@d.test");
}
Test(smtp_server, rcpt_utf8_with_smtputf8)
{
	one_rcpt("RCPT TO:<j\xc3\xb8rn@b\xc3\xa6r.test>\r\n", OK_RCPT, "j\xc3\xb8rn@b\xc3\xa6r.test");
}
Test(smtp_server, rcpt_invalid_utf8) { one_rcpt("RCPT TO:<j\xc3@d.test>\r\n", BAD_RCPT, NULL); }
Test(smtp_server, rcpt_overlong_utf8) { one_rcpt("RCPT TO:<\xc0\xaf@d.test>\r\n", BAD_RCPT, NULL); }
Test(smtp_server, rcpt_null_is_501) { one_rcpt("RCPT TO:<>\r\n", BAD_RCPT, NULL); }
Test(smtp_server, rcpt_without_brackets) { one_rcpt("RCPT TO:c@d.test\r\n", BAD_RCPT, NULL); }
Test(smtp_server, rcpt_without_to) { one_rcpt("RCPT <c@d.test>\r\n", BAD_RCPT, NULL); }

Test(smtp_server, rcpt_syntax_errors_table)
{
	static const char *const bad[] = {
		"<c@>",		"<@>",		 "<c@d.test",	 "<c..x@d.test>", "<.c@d.test>",
		"<c.@d.test>",	"<c@d..test>",	 "<c@-d.test>",	 "<c@d-.test>",	  "<c@d.test.>",
		"<c d@e.test>", "<c;d@e.test>",	 "<c@d@e.test>", "<\"c@d.test>",  "<c@[]>",
		"<c@[1.2>",	"<c(x)@d.test>", "<@a.test>",	 "<@a.test:>",	  "<c@d_e.test>",
		"<>x",		"<c@d.test>x",	 "<postmaster@>",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char line[128];

		snprintf(line, sizeof(line), "RCPT TO:%s\r\n", bad[i]);
		one_rcpt(line, BAD_RCPT, NULL);
	}
}

/* INJ-10: shell metacharacters are data, accepted or refused by grammar. */
Test(smtp_server, shell_metacharacters_follow_the_grammar)
{
	one_rcpt("RCPT TO:<a`id`|$x@d.test>\r\n", OK_RCPT, "a`id`|$x@d.test");
	one_rcpt("RCPT TO:<\"a;rm -rf /\"@d.test>\r\n", OK_RCPT, "\"a;rm -rf /\"@d.test");
	one_rcpt("RCPT TO:<a$(id)@d.test>\r\n", BAD_RCPT, NULL);
	one_rcpt("RCPT TO:<a;id@d.test>\r\n", BAD_RCPT, NULL);
}

static void
address_of_length(char *dst, size_t local_len)
{
	memset(dst, 'a', local_len);
	memcpy(dst + local_len, "@d.test", 8);
}

Test(smtp_server, address_of_256_octets_is_accepted_257_is_not)
{
	char addr[300], line[400];

	address_of_length(addr, 256 - 7);
	cr_assert_eq(strlen(addr), 256);
	snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", addr);
	one_rcpt(line, OK_RCPT, addr);
	address_of_length(addr, 257 - 7);
	snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", addr);
	one_rcpt(line, BAD_RCPT, NULL);
}

Test(smtp_server, domain_label_over_63_is_refused)
{
	char line[200];

	snprintf(line, sizeof(line), "RCPT TO:<c@%.*s.test>\r\n", 64,
		 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	one_rcpt(line, BAD_RCPT, NULL);
}

Test(smtp_server, mail_syntax_errors)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:a@b.test\r\n"), ST("MAIL TO:<a@b.test>\r\n"),
	    ST("MAIL FROM:<a b@c>\r\n"), ST("MAIL FROM:<postmaster>\r\n"), ST("MAIL\r\n"));
	cr_assert_str_eq(r.out.p + strlen(GREETING EHLO_REPLY),
			 "501 5.1.7 Error: bad sender address syntax\r\n"
			 "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
			 "501 5.1.7 Error: bad sender address syntax\r\n"
			 "501 5.1.7 Error: bad sender address syntax\r\n"
			 "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	ts_result_free(&r);
}

Test(smtp_server, utf8_sender_needs_smtputf8)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<\xc3\xa6@b.test>\r\n"), ST("MAIL FROM:<\xc3\xa6@b.test> SMTPUTF8\r\n"),
	    RCPT, DATA, ST("x\r\n.\r\n"));
	EXPECT_OUT_HAS(&r, "553 5.6.7 ");
	EXPECT_CODES(&r, "220 250 553 250 250 354 250");
	cr_assert(r.last_utf8);
	ts_result_free(&r);
}

Test(smtp_server, utf8_recipient_needs_smtputf8_on_mail)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, ST("RCPT TO:<\xc3\xa6@b.test>\r\n"));
	EXPECT_CODES(&r, "220 250 250 553");
	ts_result_free(&r);
}

/* ---- MAIL parameters (INJ-08) --------------------------------------- */

static void
one_mail(const char *line, const char *want)
{
	struct ts_opts o;
	struct ts_result r;
	struct step steps[] = { EHLO, { line, strlen(line) } };
	char codes_want[64];

	opts_default(&o);
	ts_check(&o, steps, 2, &r);
	snprintf(codes_want, sizeof(codes_want), "220 250 %.3s", want);
	EXPECT_CODES(&r, codes_want);
	EXPECT_OUT_HAS(&r, want);
	ts_result_free(&r);
}

Test(smtp_server, mail_size_within_limit)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test> SIZE=10485760 BODY=8BITMIME\r\n"), RCPT, DATA,
	    ST("x\r\n.\r\n"));
	cr_assert_eq(r.messages, 1);
	cr_assert_eq(r.last_size_declared, 10485760u);
	cr_assert(r.last_8bit);
	cr_assert(!r.last_utf8);
	ts_result_free(&r);
}

Test(smtp_server, mail_size_over_limit_is_552)
{
	one_mail("MAIL FROM:<a@b.test> SIZE=10485761\r\n", "552 5.3.4 ");
}
Test(smtp_server, mail_size_not_a_number) { one_mail("MAIL FROM:<a@b.test> SIZE=1x\r\n", "501 5.5.4 "); }
Test(smtp_server, mail_size_overflow)
{
	one_mail("MAIL FROM:<a@b.test> SIZE=999999999999999999999\r\n", "501 5.5.4 ");
}
Test(smtp_server, mail_size_twice) { one_mail("MAIL FROM:<a@b.test> SIZE=1 SIZE=1\r\n", "501 5.5.4 "); }
Test(smtp_server, mail_body_7bit) { one_mail("MAIL FROM:<a@b.test> BODY=7bit\r\n", "250 2.1.0 "); }
Test(smtp_server, mail_body_binarymime)
{
	one_mail("MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n", "501 5.5.4 ");
}
Test(smtp_server, mail_smtputf8_with_value)
{
	one_mail("MAIL FROM:<a@b.test> SMTPUTF8=yes\r\n", "501 5.5.4 ");
}
Test(smtp_server, mail_unknown_parameter) { one_mail("MAIL FROM:<a@b.test> ENVID=x\r\n", "555 5.5.4 "); }
Test(smtp_server, mail_name_without_value) { one_mail("MAIL FROM:<a@b.test> SIZE=\r\n", "501 5.5.4 "); }
Test(smtp_server, mail_value_without_name) { one_mail("MAIL FROM:<a@b.test> =value\r\n", "501 5.5.4 "); }
Test(smtp_server, mail_lone_quote) { one_mail("MAIL FROM:<a@b.test> \"\r\n", "501 5.5.4 "); }
Test(smtp_server, mail_no_space_before_param)
{
	one_mail("MAIL FROM:<a@b.test>SIZE=1\r\n", "501 5.5.4 ");
}
Test(smtp_server, mail_auth_param_null) { one_mail("MAIL FROM:<a@b.test> AUTH=<>\r\n", "250 2.1.0 "); }
Test(smtp_server, mail_auth_param_xtext)
{
	one_mail("MAIL FROM:<a@b.test> AUTH=u+2Bv@x.test\r\n", "250 2.1.0 ");
}
Test(smtp_server, mail_auth_param_bad_xtext)
{
	one_mail("MAIL FROM:<a@b.test> AUTH=u+ZZ\r\n", "501 5.5.4 ");
	one_mail("MAIL FROM:<a@b.test> AUTH=u+2\r\n", "501 5.5.4 ");
}
Test(smtp_server, rcpt_parameters_are_unsupported)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, ST("RCPT TO:<c@d.test> NOTIFY=NEVER\r\n"),
	    ST("RCPT TO:<c@d.test> ORCPT=rfc822;c@d.test\r\n"), ST("RCPT TO:<c@d.test> =x\r\n"));
	EXPECT_CODES(&r, "220 250 250 555 555 501");
	ts_result_free(&r);
}

Test(smtp_server, ten_kib_parameter_is_a_long_line)
{
	char *line = malloc(10300);
	struct ts_opts o;
	struct ts_result r;

	cr_assert_not_null(line);
	strcpy(line, "MAIL FROM:<a@b.test> AUTH=");
	memset(line + strlen(line), 'x', 10240);
	strcpy(line + 26 + 10240, "\r\n");
	struct step steps[] = { EHLO, { line, strlen(line) }, MAIL };
	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 3, &r);
	EXPECT_CODES(&r, "220 250 500 250");
	EXPECT_OUT_HAS(&r, "500 5.5.6 Error: line too long\r\n");
	ts_result_free(&r);
	free(line);
}

/* ---- command line hygiene (INJ-03, INJ-06) -------------------------- */

Test(smtp_server, bare_lf_command_is_501_without_state_change)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test>\n"), RCPT);
	cr_assert_str_eq(r.out.p + strlen(GREETING EHLO_REPLY),
			 "501 5.5.2 Error: bare <LF> in command line\r\n"
			 "503 5.5.1 Error: need MAIL command\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bare_cr_in_command_is_501)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test>\rRCPT TO:<c@d.test>\r\n"), RCPT);
	EXPECT_CODES(&r, "220 250 501 503");
	EXPECT_OUT_HAS(&r, "501 5.5.2 Error: invalid character in command line\r\n");
	ts_result_free(&r);
}

Test(smtp_server, cr_inside_an_address_is_501)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, ST("RCPT TO:<c\r@d.test>\r\n"), DATA);
	EXPECT_CODES(&r, "220 250 250 501 503");
	ts_result_free(&r);
}

Test(smtp_server, nul_in_command_is_501)
{
	struct ts_result r;
	static const char line[] = "MAIL FROM:<a\0@b.test>\r\n";

	RUN(&r, EHLO, { line, sizeof(line) - 1 }, RCPT);
	EXPECT_CODES(&r, "220 250 501 503");
	ts_result_free(&r);
}

static char *
command_of_length(size_t total) /* "NOOP xxx...\r\n", total bytes */
{
	char *p = malloc(total + 1);

	cr_assert_not_null(p);
	memcpy(p, "NOOP ", 5);
	memset(p + 5, 'x', total - 7);
	memcpy(p + total - 2, "\r\n", 3);
	return p;
}

Test(smtp_server, command_line_of_512_is_accepted_513_is_not)
{
	char *l512 = command_of_length(512), *l513 = command_of_length(513);
	struct ts_opts o;
	struct ts_result r;
	struct step steps[] = { { l512, 512 }, { l513, 513 }, ST("NOOP\r\n") };

	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 3, &r);
	EXPECT_CODES(&r, "220 250 500 250");
	EXPECT_OUT_HAS(&r, "500 5.5.6 Error: line too long\r\n");
	ts_result_free(&r);
	free(l512);
	free(l513);
}

Test(smtp_server, command_line_of_64_kib_is_discarded)
{
	char *big = command_of_length(65536);
	struct ts_opts o;
	struct ts_result r;
	/* the excess holds "QUIT\r\n"-like bytes only after a real CRLF */
	struct step steps[] = { { big, 65536 }, EHLO, QUIT };

	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 3, &r);
	EXPECT_CODES(&r, "220 500 250 221");
	ts_result_free(&r);
	free(big);
}

Test(smtp_server, configured_command_line_max)
{
	char *l100 = command_of_length(100), *l101 = command_of_length(101);
	struct ts_opts o;
	struct ts_result r;
	struct step steps[] = { { l100, 100 }, { l101, 101 } };

	opts_default(&o);
	o.cfg.command_line_max = 100;
	ts_check(&o, steps, 2, &r);
	EXPECT_CODES(&r, "220 250 500");
	ts_result_free(&r);
	free(l100);
	free(l101);
}

/* ---- DATA limits (INJ-06) ------------------------------------------- */

static char *
body_with_line(size_t content_len, char first, size_t *len)
{
	char *p = malloc(content_len + 16);

	cr_assert_not_null(p);
	memset(p, 'y', content_len);
	if (content_len > 0)
		p[0] = first;
	memcpy(p + content_len, "\r\n.\r\n", 6);
	*len = content_len + 5;
	return p;
}

static void
data_line(size_t content_len, char first, bool accepted)
{
	size_t len;
	char *body = body_with_line(content_len, first, &len);
	struct ts_opts o;
	struct ts_result r;
	struct step steps[] = { EHLO, MAIL, RCPT, DATA, { body, len }, MAIL };

	opts_default(&o);
	o.no_split = content_len > 2000;
	o.no_bytewise = content_len > 100000;
	ts_check(&o, steps, 6, &r);
	if (accepted) {
		EXPECT_CODES(&r, "220 250 250 250 354 250 250");
		cr_assert_eq(r.messages, 1);
		cr_assert_eq(r.last_body.len, len);
		char want_log[64];
		snprintf(want_log, sizeof(want_log), "START MSG<a@b.test>1:%zu ", len);
		cr_assert_str_eq(r.log.p, want_log);
	} else {
		EXPECT_CODES(&r, "220 250 250 250 354 554 250");
		EXPECT_OUT_HAS(&r, "554 5.6.0 Error: message line too long\r\n");
		cr_assert_eq(r.messages, 0);
		cr_assert_eq(r.aborts, 1);
	}
	ts_result_free(&r);
	free(body);
}

Test(smtp_server, text_line_of_998_is_accepted) { data_line(998, 'y', true); }
Test(smtp_server, text_line_of_999_is_refused) { data_line(999, 'y', false); }
Test(smtp_server, stuffed_dot_is_not_counted) { data_line(999, '.', true); }
Test(smtp_server, text_line_of_1000_is_refused) { data_line(1000, 'y', false); }
Test(smtp_server, text_line_of_1_mib_is_refused) { data_line(1u << 20, 'y', false); }

Test(smtp_server, message_size_limit_is_enforced_at_the_end)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.message_size_max = 12; /* "0123456789\r\n" is 12 octets */
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("0123456789\r\n.\r\n"), MAIL, RCPT, DATA,
		 ST("0123456789\r\nx\r\n.\r\n"), ST("NOOP\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 354 250 250 250 354 552 250");
	EXPECT_OUT_HAS(&r, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.log.p, "START MSG<a@b.test>1:15 START ABORT ");
	ts_result_free(&r);
}

/* ---- SMTP smuggling (INJ-01, INJ-02) -------------------------------- */

/* "a" + seq + a smuggled transaction + the real end. Never two messages:
 * the whole thing is rejected after the real CRLF.CRLF. */
static void
smuggle(const char *seq, size_t seq_len, const char *want_reply)
{
	static const char evil[] = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\n"
				   "DATA\r\nevil\r\n";
	char body[512];
	size_t n = 0;
	struct ts_opts o;
	struct ts_result r;

	body[n++] = 'a';
	memcpy(body + n, seq, seq_len);
	n += seq_len;
	memcpy(body + n, evil, sizeof(evil) - 1);
	n += sizeof(evil) - 1;
	memcpy(body + n, "\r\n.\r\n", 5);
	n += 5;
	struct step steps[] = { EHLO, MAIL, RCPT, DATA, { body, n }, MAIL, RCPT, DATA,
				ST("ok\r\n.\r\n") };
	opts_default(&o);
	ts_check(&o, steps, 9, &r);
	EXPECT_CODES(&r, "220 250 250 250 354 550 250 250 354 250");
	EXPECT_OUT_HAS(&r, want_reply);
	cr_assert_eq(r.messages, 1, "exactly the later, clean message");
	cr_assert_str_eq(r.last_body.p, "ok\r\n.\r\n");
	cr_assert_str_eq(r.log.p, "START ABORT START MSG<a@b.test>1:7 ");
	ts_result_free(&r);
}

#define SMUGGLE_BARE "550 5.6.11 Error: bare CR or LF in message (SMTP smuggling)\r\n"
Test(smtp_server, smuggling_lf_dot_lf) { smuggle("\n.\n", 3, SMUGGLE_BARE); }
Test(smtp_server, smuggling_cr_dot_cr) { smuggle("\r.\r", 3, SMUGGLE_BARE); }
Test(smtp_server, smuggling_cr_dot_lf) { smuggle("\r.\n", 3, SMUGGLE_BARE); }
Test(smtp_server, smuggling_lf_dot_cr) { smuggle("\n.\r", 3, SMUGGLE_BARE); }
Test(smtp_server, smuggling_lf_dot_crlf) { smuggle("\n.\r\n", 4, SMUGGLE_BARE); }
Test(smtp_server, smuggling_crlf_dot_lf) { smuggle("\r\n.\n", 4, SMUGGLE_BARE); }
Test(smtp_server, smuggling_cr_dot_crlf) { smuggle("\r.\r\n", 4, SMUGGLE_BARE); }
Test(smtp_server, smuggling_crlf_dot_cr) { smuggle("\r\n.\r", 4, SMUGGLE_BARE); }
Test(smtp_server, smuggling_crlf_nul_dot_crlf)
{
	smuggle("\r\n\0.\r\n", 6, "550 5.6.0 Error: NUL character in message\r\n");
}
Test(smtp_server, smuggling_bare_lf_in_text) { smuggle("b\nc\r\n", 5, SMUGGLE_BARE); }

Test(smtp_server, bare_lf_close_policy_closes)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.bare_lf_policy = SMTP_SERVER_BARE_LF_CLOSE;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("a\n.\nMAIL FROM:<e@x.test>\r\n.\r\nQUIT\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 354 554");
	EXPECT_OUT_HAS(&r, "554 5.6.11 ");
	cr_assert_str_eq(r.log.p, "START ABORT CLOSE");
	cr_assert_eq(r.messages, 0);
	ts_result_free(&r);
}

/* ---- synchronisation (INJ-04, INJ-05) ------------------------------- */

#define SYNC_ERROR "554 5.5.1 Error: SMTP protocol synchronization\r\n"

Test(smtp_server, early_talker_before_start)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.no_start = true;
	RUN_OPTS(&o, &r, EHLO, QUIT);
	cr_assert_str_eq(r.out.p, SYNC_ERROR);
	cr_assert_str_eq(r.log.p, "CLOSE");
	ts_result_free(&r);
}

Test(smtp_server, early_talker_before_the_greeting_is_sent)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.no_greeting_drain = true;
	RUN_OPTS(&o, &r, EHLO);
	cr_assert_str_eq(r.out.p, GREETING SYNC_ERROR);
	ts_result_free(&r);
}

Test(smtp_server, pipelining_after_ehlo_is_refused)
{
	struct ts_result r;

	RUN(&r, ST("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n"), RCPT);
	cr_assert_str_eq(r.out.p, GREETING EHLO_REPLY SYNC_ERROR);
	cr_assert_str_eq(r.log.p, "CLOSE");
	ts_result_free(&r);
}

Test(smtp_server, body_before_354_is_refused_nothing_queued)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nbody\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 354 554");
	cr_assert_str_eq(r.log.p, "START ABORT CLOSE");
	cr_assert_eq(r.messages, 0);
	ts_result_free(&r);
}

Test(smtp_server, failed_data_is_still_a_sync_point)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test>\r\nDATA\r\nRCPT TO:<c@d.test>\r\n"));
	EXPECT_CODES(&r, "220 250 250 503 554");
	ts_result_free(&r);
}

Test(smtp_server, starttls_with_pipelined_mail_is_not_tls)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("STARTTLS\r\nMAIL FROM:<a@b.test>\r\n"));
	cr_assert_null(strstr(r.out.p, "STARTTLS"));
	EXPECT_CODES(&r, "220 250 502 250");
	ts_result_free(&r);
}

Test(smtp_server, input_after_quit_is_ignored)
{
	struct smtp_server *s = calloc(1, sizeof(*s));
	struct smtp_server_config cfg;
	struct smtp_server_event ev;
	size_t len;
	static const uint8_t in[] = "QUIT\r\nMAIL FROM:<a@b.test>\r\n";

	smtp_server_config_default(&cfg);
	smtp_server_init(s, &cfg);
	smtp_server_start(s);
	(void)smtp_server_output(s, &len);
	smtp_server_output_consumed(s, len);
	cr_assert_eq(smtp_server_feed(s, in, sizeof(in) - 1, &ev), 6);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_CLOSE);
	cr_assert_eq(smtp_server_feed(s, in + 6, sizeof(in) - 7, &ev), 0);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_CLOSE);
	cr_assert(smtp_server_is_closed(s));
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_NONE);
	smtp_server_fini(s);
	free(s);
}

/* ---- recipients (INJ-07) -------------------------------------------- */

static void
many_rcpts(uint32_t count, uint32_t max, bool bytewise)
{
	struct buf script = { 0 };
	struct ts_opts o;
	struct ts_result r;
	char want[64];
	uint32_t accepted = count < max ? count : max;
	size_t extra = 0;

	buf_add(&script, "MAIL FROM:<a@b.test>\r\n", 22);
	for (uint32_t i = 0; i < count; i++)
		buf_printf(&script, "RCPT TO:<r%u@d.test>\r\n", i);
	buf_add(&script, "DATA\r\n", 6);
	struct step steps[] = { EHLO, { script.p, script.len }, ST("x\r\n.\r\n") };
	opts_default(&o);
	o.cfg.recipients_max = max;
	o.no_split = true;
	o.no_bytewise = !bytewise;
	ts_check(&o, steps, 3, &r);
	cr_assert_eq(r.messages, 1);
	cr_assert_eq(r.last_rcpt_count, accepted);
	cr_assert_str_eq(r.last_rcpt0, "r0@d.test");
	snprintf(want, sizeof(want), "r%u@d.test", accepted - 1);
	cr_assert_str_eq(r.last_rcptn, want);
	for (const char *p = r.out.p, *end = r.out.p + r.out.len, *eol; (eol = find_crlf(p, end));
	     p = eol + 2)
		extra += strncmp(p, "452 4.5.3 Error: too many recipients\r\n", 38) == 0;
	cr_assert_eq(extra, count - accepted);
	ts_result_free(&r);
	free(script.p);
}

Test(smtp_server, rcpts_99) { many_rcpts(99, 100, true); }
Test(smtp_server, rcpts_100) { many_rcpts(100, 100, true); }
Test(smtp_server, rcpts_101_with_limit_100) { many_rcpts(101, 100, true); }
Test(smtp_server, rcpts_1000_default) { many_rcpts(1000, 1000, true); }
Test(smtp_server, rcpts_1001_default) { many_rcpts(1001, 1000, false); }
Test(smtp_server, rcpts_limit_1) { many_rcpts(3, 1, true); }
Test(smtp_server, rcpts_a_million, .timeout = 240) { many_rcpts(1000000, 1000, false); }

Test(smtp_server, pipelined_replies_are_bounded_and_in_order)
{
	struct buf script = { 0 };
	struct ts_opts o;
	struct ts_result r;

	for (int i = 0; i < 3000; i++)
		buf_printf(&script, "%s\r\n", i % 2 ? "NOOP" : "HELP");
	struct step steps[] = { { script.p, script.len } };
	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 1, &r);
	cr_assert_gt(r.blocked_drains, 0, "output buffer never filled");
	for (size_t i = 0, off = strlen(GREETING); i < 3000; i++) {
		const char *want = i % 2 ? "250 2.0.0 Ok\r\n" : "214 2.0.0 ";
		cr_assert(strncmp(r.out.p + off, want, strlen(want)) == 0, "reply %zu", i);
		off = (size_t)(find_crlf(r.out.p + off, r.out.p + r.out.len) - r.out.p) + 2;
	}
	ts_result_free(&r);
	free(script.p);
}

/* ---- relay (INJ-09) ------------------------------------------------- */

Test(smtp_server, relay_denied_for_every_nmap_combination)
{
	static const char *const rcpts[] = {
		"<relaytest@nmap.scanme.org>",
		"<relaytest%nmap.scanme.org@[127.0.0.1]>",
		"<\"relaytest@nmap.scanme.org\">",
		"<\"relaytest%nmap.scanme.org\">",
		"<relaytest@nmap.scanme.org@[127.0.0.1]>",
		"<\"relaytest@nmap.scanme.org\"@[127.0.0.1]>",
		"<relaytest@nmap.scanme.org@mx.test>",
		"<@[127.0.0.1]:relaytest@nmap.scanme.org>",
		"<@mx.test:relaytest@nmap.scanme.org>",
		"<nmap.scanme.org!relaytest>",
		"<nmap.scanme.org!relaytest@[127.0.0.1]>",
		"<nmap.scanme.org!relaytest@mx.test>",
		"<postmaster>",
	};
	struct buf script = { 0 };
	struct ts_opts o;
	struct ts_result r;
	size_t n = sizeof(rcpts) / sizeof(rcpts[0]);

	buf_add(&script, "MAIL FROM:<a@b.test>\r\n", 22);
	for (size_t i = 0; i < n; i++)
		buf_printf(&script, "RCPT TO:%s\r\n", rcpts[i]);
	buf_add(&script, "DATA\r\n", 6);
	struct step steps[] = { EHLO, { script.p, script.len }, ST("x\r\n.\r\n"), QUIT };
	opts_default(&o);
	o.cfg.client_is_allowed = false;
	o.cfg.errors_max = 100;
	ts_check(&o, steps, 4, &r);
	cr_assert_eq(r.messages, 0);
	cr_assert_null(r.log.p != NULL ? strstr(r.log.p, "START") : NULL);
	/* after MAIL's 250: one 5xx per RCPT, 503 to DATA, then "x" and "." */
	const char *p = strstr(r.out.p, "250 2.1.0 Ok\r\n") + 14;
	for (size_t i = 0; i < n; i++) {
		cr_assert(p[0] == '5', "rcpt %zu answered %.40s", i, p);
		p = strstr(p, "\r\n") + 2;
	}
	cr_assert(strncmp(p, "503 5.5.1 ", 10) == 0);
	EXPECT_OUT_HAS(&r, "554 5.7.1 <relaytest@nmap.scanme.org>: Relay access denied\r\n");
	ts_result_free(&r);
	free(script.p);
}

/* ---- AUTH (RFC 4954) ------------------------------------------------ */

/* base64("\0user\0secret") = AHVzZXIAc2VjcmV0 */
#define PLAIN_OK "AHVzZXIAc2VjcmV0"
/* base64("\0user\0wrong!") */
#define PLAIN_BAD "AHVzZXIAd3Jvbmch"

static struct ts_opts
opts_remote(void)
{
	struct ts_opts o;

	opts_default(&o);
	o.cfg.client_is_allowed = false;
	return o;
}

Test(smtp_server, auth_plain_initial_response_allows_relay)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT, DATA, ST("x\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 235 250 250 354 250");
	EXPECT_OUT_HAS(&r, "235 2.7.0 Authentication successful\r\n");
	cr_assert_str_eq(r.log.p, "AUTH1<><user><secret> START MSG<a@b.test>1:6 ");
	ts_result_free(&r);
}

Test(smtp_server, auth_plain_with_empty_challenge)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	/* authzid "admin": AGFkbWluAHVzZXIAc2VjcmV0 is "\0admin..."; use
	 * "admin\0user\0secret" = YWRtaW4AdXNlcgBzZWNyZXQ= */
	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN\r\n"), ST("YWRtaW4AdXNlcgBzZWNyZXQ=\r\n"), MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 334 235 250 250");
	EXPECT_OUT_HAS(&r, "334 \r\n");
	cr_assert_str_eq(r.log.p, "AUTH1<admin><user><secret> ");
	ts_result_free(&r);
}

Test(smtp_server, auth_login_dialogue)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH LOGIN\r\n"), ST("dXNlcg==\r\n"), ST("c2VjcmV0\r\n"), MAIL,
		 RCPT);
	cr_assert_str_eq(r.out.p + strlen(GREETING EHLO_REPLY),
			 "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
			 "235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	cr_assert_str_eq(r.log.p, "AUTH2<><user><secret> ");
	ts_result_free(&r);
}

Test(smtp_server, auth_login_with_initial_username)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH LOGIN dXNlcg==\r\n"), ST("c2VjcmV0\r\n"));
	EXPECT_CODES(&r, "220 250 334 235");
	ts_result_free(&r);
}

Test(smtp_server, auth_failure_keeps_relay_closed)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_BAD "\r\n"), MAIL, RCPT, DATA);
	EXPECT_CODES(&r, "220 250 535 250 554 503");
	EXPECT_OUT_HAS(&r, "535 5.7.8 ");
	EXPECT_OUT_HAS(&r, "554 5.7.1 <c@d.test>: Relay access denied\r\n");
	ts_result_free(&r);
}

/* base64("\0user\0busy") */
#define PLAIN_BUSY "AHVzZXIAYnVzeQ=="

Test(smtp_server, auth_tempfail_then_retry)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_BUSY "\r\n"), MAIL, RCPT,
		 ST("RSET\r\n"), ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 454 250 554 250 235 250 250");
	EXPECT_OUT_HAS(&r, "454 4.7.0 Temporary authentication failure\r\n");
	cr_assert_eq(r.auths, 2);
	ts_result_free(&r);
}

Test(smtp_server, auth_cancel_and_bad_base64)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH LOGIN\r\n"), ST("*\r\n"), ST("AUTH PLAIN\r\n"),
		 ST("not base64!\r\n"), ST("AUTH PLAIN dXNlcg\r\n"), ST("AUTH PLAIN =\r\n"),
		 ST("AUTH PLAIN dXNlcg==\r\n"));
	EXPECT_CODES(&r, "220 250 334 501 334 501 501 501 501");
	EXPECT_OUT_HAS(&r, "501 5.7.0 Error: authentication aborted\r\n");
	EXPECT_OUT_HAS(&r, "501 5.5.2 Error: invalid base64 response\r\n");
	EXPECT_OUT_HAS(&r, "501 5.5.2 Error: malformed PLAIN response\r\n");
	cr_assert_eq(r.auths, 0);
	ts_result_free(&r);
}

Test(smtp_server, auth_refused_in_the_wrong_state)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, ST("AUTH PLAIN " PLAIN_OK "\r\n"), ST("HELO c.test\r\n"),
		 ST("AUTH PLAIN " PLAIN_OK "\r\n"), EHLO, ST("AUTH CRAM-MD5\r\n"), MAIL,
		 ST("AUTH PLAIN " PLAIN_OK "\r\n"), ST("RSET\r\n"), ST("AUTH PLAIN " PLAIN_OK "\r\n"),
		 ST("AUTH PLAIN " PLAIN_OK "\r\n"));
	EXPECT_CODES(&r, "220 503 250 503 250 504 250 503 250 235 503");
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: already authenticated\r\n");
	ts_result_free(&r);
}

Test(smtp_server, auth_not_offered)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	o.cfg.auth_is_offered = false;
	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 503 250 554");
	cr_assert_eq(r.auths, 0);
	ts_result_free(&r);
}

Test(smtp_server, auth_pipelined_command_is_a_sync_error)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\nMAIL FROM:<a@b.test>\r\n"));
	EXPECT_CODES(&r, "220 250 235 554");
	ts_result_free(&r);
}

Test(smtp_server, auth_line_may_exceed_the_command_limit)
{
	/* 3 x 255-byte fields: base64 of 767 bytes = 1024 chars */
	uint8_t raw[767];
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[1100];
	size_t o = 0;
	struct ts_opts opts = opts_remote();
	struct ts_result r;

	memset(raw, 'u', sizeof(raw));
	raw[255] = 0;
	raw[511] = 0;
	o = (size_t)snprintf(line, sizeof(line), "AUTH PLAIN ");
	for (size_t i = 0; i < sizeof(raw); i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < sizeof(raw) ? (uint32_t)raw[i + 1] << 8 : 0) |
			     (i + 2 < sizeof(raw) ? raw[i + 2] : 0);
		line[o++] = tbl[v >> 18 & 63];
		line[o++] = tbl[v >> 12 & 63];
		line[o++] = i + 1 < sizeof(raw) ? tbl[v >> 6 & 63] : '=';
		line[o++] = i + 2 < sizeof(raw) ? tbl[v & 63] : '=';
	}
	memcpy(line + o, "\r\n", 2);
	o += 2;
	cr_assert_gt(o, 512);
	struct step steps[] = { EHLO, { line, o } };
	opts.no_split = true;
	ts_check(&opts, steps, 2, &r);
	EXPECT_CODES(&r, "220 250 535");
	cr_assert_eq(r.auths, 1);
	ts_result_free(&r);
}

/* ---- BDAT (RFC 3030) ------------------------------------------------ */

Test(smtp_server, bdat_last_stuffs_and_terminates)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 12 LAST\r\n.a\r\n..\r\n.\r\nz"));
	cr_assert_str_eq(r.out.p + strlen(GREETING EHLO_REPLY),
			 "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as Q1\r\n");
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.last_body.p, "..a\r\n...\r\n..\r\nz\r\n.\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_chunks_are_acknowledged)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 2\r\na\rBDAT 4\r\n\n.b\r"
			 "BDAT 4 LAST\r\n\n.\r\nQUIT\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 250 250 250 221");
	EXPECT_OUT_HAS(&r, "250 2.0.0 Ok: 2 octets received\r\n250 2.0.0 Ok: 4 octets received\r\n");
	cr_assert_str_eq(r.last_body.p, "a\r\n..b\r\n..\r\n.\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_zero_last_ends_the_message)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 2\r\nhiBDAT 0 LAST\r\n"), ST("BDAT 0 LAST\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 250 250 503");
	cr_assert_str_eq(r.last_body.p, "hi\r\n.\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_empty_message)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 0 LAST\r\n"));
	cr_assert_eq(r.messages, 1);
	cr_assert_str_eq(r.last_body.p, ".\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_bare_lf_is_rejected_and_not_parsed)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 26\r\na\n.\nMAIL FROM:<e@x.test>\r\n"),
	    ST("BDAT 3 LAST\r\nb\r\n"), MAIL);
	EXPECT_CODES(&r, "220 250 250 250 550 550 250");
	cr_assert_eq(r.messages, 0);
	cr_assert_str_eq(r.log.p, "START ABORT ");
	ts_result_free(&r);
}

Test(smtp_server, bdat_trailing_cr_is_bare)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 2 LAST\r\na\r"));
	EXPECT_CODES(&r, "220 250 250 250 550");
	cr_assert_eq(r.messages, 0);
	ts_result_free(&r);
}

Test(smtp_server, bdat_without_transaction_discards_the_chunk)
{
	struct ts_result r;

	RUN(&r, EHLO, ST("BDAT 6\r\nQUIT\r\n"), MAIL, ST("BDAT 6 LAST\r\nQUIT\r\n"), QUIT);
	cr_assert_str_eq(r.out.p + strlen(GREETING EHLO_REPLY),
			 "503 5.5.1 Error: need MAIL command\r\n250 2.1.0 Ok\r\n"
			 "503 5.5.1 Error: need RCPT command\r\n221 2.0.0 Bye\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_with_chunking_off_discards_the_chunk)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.chunking_is_disabled = true;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, ST("BDAT 6 LAST\r\nQUIT\r\n"), DATA, ST("x\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 502 354 250");
	cr_assert_eq(r.messages, 1);
	ts_result_free(&r);
}

Test(smtp_server, bdat_bad_syntax_closes)
{
	static const char *const bad[] = { "BDAT\r\n", "BDAT x\r\n", "BDAT 1 LASTX\r\n",
					   "BDAT -1\r\n", "BDAT 99999999999999999999999\r\n" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ts_opts o;
		struct ts_result r;
		struct step steps[] = { EHLO, MAIL, RCPT, { bad[i], strlen(bad[i]) }, QUIT };

		opts_default(&o);
		ts_check(&o, steps, 5, &r);
		EXPECT_CODES(&r, "220 250 250 250 501");
		cr_assert_str_eq(r.log.p, "CLOSE");
		ts_result_free(&r);
	}
}

Test(smtp_server, data_after_bdat_is_503)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 2\r\nab"), DATA, ST("RCPT TO:<x@y.test>\r\n"),
	    ST("BDAT 0 LAST\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 250 503 503 250");
	cr_assert_str_eq(r.last_body.p, "ab\r\n.\r\n");
	ts_result_free(&r);
}

Test(smtp_server, bdat_over_the_size_limit)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.message_size_max = 10;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, ST("BDAT 8\r\n12345678"), ST("BDAT 3\r\n9ab"),
		 ST("BDAT 1 LAST\r\nc"), MAIL, RCPT, ST("BDAT 3 LAST\r\nabc"));
	EXPECT_CODES(&r, "220 250 250 250 250 552 552 250 250 250");
	cr_assert_str_eq(r.log.p, "START ABORT START MSG<a@b.test>1:8 ");
	ts_result_free(&r);
}

Test(smtp_server, rset_between_chunks_aborts)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 2\r\nab"), ST("RSET\r\n"), ST("BDAT 1 LAST\r\nc"));
	EXPECT_CODES(&r, "220 250 250 250 250 250 503");
	cr_assert_str_eq(r.log.p, "START ABORT ");
	ts_result_free(&r);
}

Test(smtp_server, quit_inside_a_bdat_transaction_aborts_then_closes)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 2\r\nab"), QUIT);
	cr_assert_str_eq(r.log.p, "START ABORT CLOSE");
	ts_result_free(&r);
}

/* A large random chunk crosses the stuffing buffer many times; the stored
 * wire form unstuffs to exactly the raw bytes sent. */
Test(smtp_server, bdat_large_random_chunk_round_trips)
{
	size_t raw_len = 50000;
	char *raw = malloc(raw_len), hdr[64];
	struct ts_opts o;
	struct ts_result r;
	uint32_t seed = 12345;
	uint8_t *plain;
	size_t plain_len;

	cr_assert_not_null(raw);
	for (size_t i = 0; i < raw_len; i++) {
		seed = seed * 1103515245u + 12345u;
		uint32_t v = (seed >> 16) % 20u;
		raw[i] = v < 3 ? '.' : (v < 5 ? 'x' : (char)('a' + v));
		if (v == 19 || (i > 0 && raw[i - 1] == '\r')) {
			raw[i] = '\r';
			if (i + 1 < raw_len)
				raw[++i] = '\n';
		}
	}
	memcpy(raw + raw_len - 2, "\r\n", 2);
	int n = snprintf(hdr, sizeof(hdr), "BDAT %zu LAST\r\n", raw_len);
	struct step steps[] = { EHLO, MAIL, RCPT, { hdr, (size_t)n }, { raw, raw_len } };
	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 5, &r);
	cr_assert_eq(r.messages, 1, "%s", r.out.p);
	plain = malloc(r.last_body.len);
	cr_assert_eq(smtp_dot_unstuff((const uint8_t *)r.last_body.p, r.last_body.len, plain,
				      r.last_body.len, &plain_len),
		     SMTP_DOT_VALID);
	cr_assert_eq(plain_len, raw_len);
	cr_assert(memcmp(plain, raw, raw_len) == 0);
	free(plain);
	ts_result_free(&r);
	free(raw);
}

/* DATA: the stored bytes are exactly those received (random splits). */
Test(smtp_server, data_random_body_is_stored_as_received)
{
	size_t len = 20000;
	char *body = malloc(len + 8);
	struct ts_opts o;
	struct ts_result r;
	uint32_t seed = 777;

	cr_assert_not_null(body);
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		body[i] = (char)('A' + (seed >> 16) % 26u);
		if (i % 50 == 48) {
			memcpy(body + i, "\r\n", 2);
			i++;
		} else if (i % 50 == 0) {
			body[i] = '.';
		}
	}
	memcpy(body + len, "\r\n.\r\n", 5);
	struct step steps[] = { EHLO, MAIL, RCPT, DATA, { body, len + 5 } };
	opts_default(&o);
	o.no_split = true;
	ts_check(&o, steps, 5, &r);
	cr_assert_eq(r.messages, 1, "%s", r.out.p);
	cr_assert_eq(r.last_body.len, len + 5);
	cr_assert(memcmp(r.last_body.p, body, len + 5) == 0);
	ts_result_free(&r);
	free(body);
}

/* ---- errors, back-pressure, timeouts -------------------------------- */

Test(smtp_server, too_many_errors_close_the_session)
{
	struct buf script = { 0 };
	struct ts_opts o;
	struct ts_result r;
	char want[256] = "220";

	for (int i = 0; i < 25; i++)
		buf_add(&script, "BOGUS\r\n", 7);
	for (int i = 0; i < 20; i++)
		strcat(want, " 500");
	strcat(want, " 421");
	struct step steps[] = { { script.p, script.len }, QUIT };
	opts_default(&o);
	ts_check(&o, steps, 2, &r);
	EXPECT_CODES(&r, want);
	EXPECT_OUT_HAS(&r, "421 4.7.0 " HOST " Error: too many errors\r\n");
	cr_assert_str_eq(r.log.p, "CLOSE");
	ts_result_free(&r);
	free(script.p);
}

Test(smtp_server, backpressure_tempfails_mail_and_recovers)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.bp_step = 1;
	o.bp = SMTP_SERVER_BACKPRESSURE_TEMPFAIL;
	o.bp2 = SMTP_SERVER_BACKPRESSURE_NONE;
	RUN_OPTS(&o, &r, EHLO, MAIL, MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 452 250 250");
	EXPECT_OUT_HAS(&r, "452 4.3.1 Insufficient system storage\r\n");
	ts_result_free(&r);
}

Test(smtp_server, backpressure_close_is_421)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.bp_step = 1;
	o.bp = SMTP_SERVER_BACKPRESSURE_CLOSE;
	RUN_OPTS(&o, &r, EHLO, ST("NOOP\r\n"), MAIL);
	EXPECT_CODES(&r, "220 250 421");
	EXPECT_OUT_HAS(&r, "421 4.3.2 " HOST " ");
	cr_assert_str_eq(r.log.p, "CLOSE");
	ts_result_free(&r);
}

/* Drive a session by hand for the result/timeout API. */
static struct smtp_server *
session_new(void)
{
	struct smtp_server *s = calloc(1, sizeof(*s));
	struct smtp_server_config cfg;
	size_t len;

	cr_assert_not_null(s);
	smtp_server_config_default(&cfg);
	cfg.client_is_allowed = true;
	smtp_server_init(s, &cfg);
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_NONE);
	smtp_server_start(s);
	(void)smtp_server_output(s, &len);
	smtp_server_output_consumed(s, len);
	return s;
}

static void
handed(struct smtp_server *s)
{
	size_t len;

	(void)smtp_server_output(s, &len);
	smtp_server_output_consumed(s, len);
}

Test(smtp_server, blocked_until_the_message_result)
{
	struct smtp_server *s = session_new();
	struct smtp_server_event ev;
	static const uint8_t a[] = "EHLO c\r\n";
	static const uint8_t b[] = "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n";
	static const uint8_t c[] = "x\r\n.\r\nRSET\r\n";
	size_t n, len;

	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_COMMAND);
	cr_assert_eq(smtp_server_feed(s, a, sizeof(a) - 1, &ev), sizeof(a) - 1);
	handed(s);
	n = smtp_server_feed(s, b, sizeof(b) - 1, &ev);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_DATA_START);
	cr_assert_eq(n, sizeof(b) - 1);
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_DATA);
	handed(s);
	n = smtp_server_feed(s, c, sizeof(c) - 1, &ev);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_BODY);
	cr_assert_eq(n, 6);
	cr_assert(ev.ptr == c && ev.len == 6, "the span points into the input");
	cr_assert_eq(smtp_server_feed(s, c + n, sizeof(c) - 1 - n, &ev), 0);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_MESSAGE);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(smtp_server_feed(s, c + n, sizeof(c) - 1 - n, &ev), 0);
		cr_assert_eq(ev.type, SMTP_SERVER_EV_BLOCKED);
	}
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_NONE);
	(void)smtp_server_output(s, &len);
	cr_assert_eq(len, 0, "no reply before the result");
	smtp_server_message_result(s, true, "ABC123", 6);
	cr_assert_eq(smtp_server_feed(s, c + n, sizeof(c) - 1 - n, &ev), sizeof(c) - 1 - n);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_NONE);
	const uint8_t *out = smtp_server_output(s, &len);
	cr_assert_eq(len, strlen("250 2.0.0 Ok: queued as ABC123\r\n250 2.0.0 Ok\r\n"));
	cr_assert(memcmp(out, "250 2.0.0 Ok: queued as ABC123\r\n250 2.0.0 Ok\r\n", len) == 0);
	smtp_server_fini(s);
	free(s);
}

Test(smtp_server, timeout_in_data_aborts_and_closes)
{
	struct smtp_server *s = session_new();
	struct smtp_server_event ev;
	static const uint8_t a[] = "EHLO c\r\n";
	static const uint8_t b[] = "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n";
	size_t len;

	(void)smtp_server_feed(s, a, sizeof(a) - 1, &ev);
	handed(s);
	(void)smtp_server_feed(s, b, sizeof(b) - 1, &ev);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_DATA_START);
	handed(s);
	smtp_server_timeout(s);
	cr_assert(smtp_server_is_closed(s));
	const uint8_t *out = smtp_server_output(s, &len);
	cr_assert_eq(len, strlen("421 4.4.2 localhost Error: timeout exceeded\r\n"));
	cr_assert(memcmp(out, "421 4.4.2 localhost Error: timeout exceeded\r\n", len) == 0);
	cr_assert_eq(smtp_server_feed(s, NULL, 0, &ev), 0);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_DATA_ABORT);
	cr_assert_eq(smtp_server_feed(s, NULL, 0, &ev), 0);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_CLOSE);
	smtp_server_timeout(s); /* idempotent */
	(void)smtp_server_output(s, &len);
	cr_assert_eq(len, strlen("421 4.4.2 localhost Error: timeout exceeded\r\n"));
	smtp_server_fini(s);
	free(s);
}

Test(smtp_server, zero_config_limits_mean_defaults)
{
	struct smtp_server *s = calloc(1, sizeof(*s));
	struct smtp_server_config cfg;
	struct smtp_server_event ev;
	static const uint8_t a[] = "EHLO c\r\n";
	size_t len;

	memset(&cfg, 0, sizeof(cfg));
	cfg.hostname = "h";
	cfg.hostname_len = 1;
	smtp_server_init(s, &cfg);
	smtp_server_start(s);
	handed(s);
	(void)smtp_server_feed(s, a, sizeof(a) - 1, &ev);
	const uint8_t *out = smtp_server_output(s, &len);
	cr_assert_not_null(memmem(out, len, "250-SIZE 10485760\r\n", 19));
	cr_assert_not_null(memmem(out, len, "CHUNKING\r\n", 10));
	cr_assert_null(memmem(out, len, "AUTH", 4));
	smtp_server_fini(s);
	free(s);
}

Test(smtp_server, bdat_after_helo_is_not_implemented)
{
	struct ts_result r;

	RUN(&r, ST("HELO c.test\r\n"), MAIL, RCPT, ST("BDAT 6 LAST\r\nQUIT\r\n"), ST("NOOP\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 502 250");
	cr_assert_eq(r.messages, 0);
	ts_result_free(&r);
}

Test(smtp_server, result_after_a_timeout_queues_nothing)
{
	struct smtp_server *s = session_new();
	struct smtp_server_event ev;
	static const uint8_t a[] = "EHLO c\r\n";
	static const uint8_t b[] = "MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n";
	static const uint8_t c[] = "x\r\n.\r\n";
	size_t len;

	(void)smtp_server_feed(s, a, sizeof(a) - 1, &ev);
	handed(s);
	(void)smtp_server_feed(s, b, sizeof(b) - 1, &ev);
	handed(s);
	cr_assert_eq(smtp_server_feed(s, c, sizeof(c) - 1, &ev), sizeof(c) - 1);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_BODY);
	(void)smtp_server_feed(s, NULL, 0, &ev);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_MESSAGE);
	smtp_server_timeout(s); /* the session deadline passed during the commit */
	smtp_server_message_result(s, true, "Q", 1);
	(void)smtp_server_output(s, &len);
	cr_assert_eq(len, strlen("421 4.4.2 localhost Error: timeout exceeded\r\n"));
	(void)smtp_server_feed(s, NULL, 0, &ev);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_CLOSE);
	smtp_server_fini(s);
	free(s);
}

/* The DATA fast path stops exactly at the limits: a line of exactly
 * text_line_max and a body of exactly message_size_max pass, one more
 * octet does not, whatever the feed boundaries. */
Test(smtp_server, limits_are_exact_with_small_config)
{
	struct ts_opts o;
	struct ts_result r;

	opts_default(&o);
	o.cfg.text_line_max = 10; /* 8 + CRLF */
	o.cfg.message_size_max = 20;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("12345678\r\n12345678\r\n.\r\n"), MAIL, RCPT, DATA,
		 ST("123456789\r\n.\r\n"), MAIL, RCPT, DATA, ST("12345678\r\n12345678\r\nx\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 354 250 250 250 354 554 250 250 354 552");
	cr_assert_eq(r.messages, 1);
	ts_result_free(&r);
}

Test(smtp_server, envelope_accessors_report_helo_and_auth)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT, DATA, ST("x\r\n.\r\n"));
	cr_assert_str_eq(r.last_helo, "EAclient.test");
	ts_result_free(&r);
	RUN(&r, ST("HELO h.test\r\n"), MAIL, RCPT, DATA, ST("x\r\n.\r\n"));
	cr_assert_str_eq(r.last_helo, "H-h.test");
	ts_result_free(&r);
}

Test(smtp_server, bdat_bare_cr_inside_a_chunk)
{
	struct ts_result r;

	RUN(&r, EHLO, MAIL, RCPT, ST("BDAT 4 LAST\r\na\rb\n"), ST("NOOP\r\n"));
	EXPECT_CODES(&r, "220 250 250 250 550 250");
	cr_assert_eq(r.messages, 0);
	ts_result_free(&r);
}

Test(smtp_server, auth_login_malformed_and_auth_state_line_errors)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;
	char *long_line = malloc(1200);

	cr_assert_not_null(long_line);
	memset(long_line, 'A', 1196);
	memcpy(long_line + 1196, "\r\n", 3);
	struct step steps[] = { EHLO,
				ST("AUTH LOGIN\r\n"),
				ST("AA==\r\n"), /* NUL user name */
				ST("AUTH LOGIN\r\n"),
				ST("dXNlcg==\n"), /* bare LF inside the dialogue */
				ST("AUTH LOGIN\r\n"),
				{ long_line, 1198 },
				ST("AUTH LOGIN\r\n"),
				ST("\r\n"), /* empty response */
				ST("AUTH LOGIN dXNlcg==\r\n"),
				ST("c2Vj+/==\r\n"), /* '+' and '/' decode: a wrong password */
				MAIL };
	o.no_split = true;
	ts_check(&o, steps, sizeof(steps) / sizeof(steps[0]), &r);
	EXPECT_CODES(&r, "220 250 334 501 334 501 334 500 334 501 334 535 250");
	EXPECT_OUT_HAS(&r, "501 5.5.2 Error: malformed LOGIN response\r\n");
	cr_assert_str_eq(r.log.p, "AUTH2<><user><sec\xfb> ");
	ts_result_free(&r);
	free(long_line);
}

Test(smtp_server, utf8_three_and_four_byte_sequences)
{
	one_rcpt("RCPT TO:<\xe2\x82\xac@\xf0\x9f\x98\x80.test>\r\n", OK_RCPT,
		 "\xe2\x82\xac@\xf0\x9f\x98\x80.test");
	one_rcpt("RCPT TO:<\xe0\x80\x80@d.test>\r\n", BAD_RCPT, NULL);   /* overlong */
	one_rcpt("RCPT TO:<\xed\xa0\x80@d.test>\r\n", BAD_RCPT, NULL);   /* surrogate */
	one_rcpt("RCPT TO:<\xf4\x90\x80\x80@d.test>\r\n", BAD_RCPT, NULL); /* > U+10FFFF */
	one_rcpt("RCPT TO:<\xff@d.test>\r\n", BAD_RCPT, NULL);
	one_rcpt("RCPT TO:<\"\xc3\xa6\"@d.test>\r\n", OK_RCPT, "\"\xc3\xa6\"@d.test");
}

Test(smtp_server, sender_too_long_and_bad_ehlo_name)
{
	char line[400];
	struct ts_opts o;
	struct ts_result r;

	memcpy(line, "MAIL FROM:<", 11);
	memset(line + 11, 'a', 250);
	memcpy(line + 261, "@d.test>\r\n", 10);
	struct step steps[] = { ST("EHLO a\x01\r\n"), ST("EHLO b\xc3\xa6\r\n"), EHLO, { line, 271 } };
	opts_default(&o);
	ts_check(&o, steps, 4, &r);
	EXPECT_CODES(&r, "220 501 501 250 501");
	EXPECT_OUT_HAS(&r, "501 5.5.4 Error: invalid EHLO hostname\r\n");
	EXPECT_OUT_HAS(&r, "501 5.1.7 Error: sender address too long\r\n");
	ts_result_free(&r);
}

/* Short sends: the listener consumes a few bytes at a time while the
 * client keeps pipelining; replies stay complete and in order. */
Test(smtp_server, short_sends_keep_replies_in_order)
{
	struct smtp_server *s = session_new();
	struct smtp_server_event ev;
	struct buf in = { 0 }, out = { 0 };
	size_t off = 0;

	buf_add(&in, "EHLO c\r\n", 8);
	(void)smtp_server_feed(s, (const uint8_t *)in.p, in.len, &ev);
	handed(s);
	in.len = 0;
	for (int i = 0; i < 600; i++)
		buf_printf(&in, "NOOP %d\r\n", i);
	for (int guard = 0; guard < 100000 && off < in.len; guard++) {
		size_t len, n = smtp_server_feed(s, (const uint8_t *)in.p + off, in.len - off, &ev);
		const uint8_t *p;

		off += n;
		cr_assert(ev.type == SMTP_SERVER_EV_NONE || ev.type == SMTP_SERVER_EV_BLOCKED);
		p = smtp_server_output(s, &len);
		if (len > 7)
			len = 7;
		buf_add(&out, p, len);
		smtp_server_output_consumed(s, len);
	}
	for (int guard = 0; guard < 100000; guard++) {
		size_t len;
		const uint8_t *p = smtp_server_output(s, &len);

		if (len == 0)
			break;
		buf_add(&out, p, len < 5 ? len : 5);
		smtp_server_output_consumed(s, len < 5 ? len : 5);
	}
	cr_assert_eq(off, in.len);
	cr_assert_eq(out.len, 600 * strlen("250 2.0.0 Ok\r\n"));
	for (size_t i = 0; i < 600; i++)
		cr_assert(memcmp(out.p + i * 14, "250 2.0.0 Ok\r\n", 14) == 0, "reply %zu", i);
	smtp_server_fini(s);
	free(s);
	free(in.p);
	free(out.p);
}

/* Random scripts from a dictionary of commands, smuggling sequences and
 * junk: whatever the input, the session never crashes, stores only valid
 * wire form (checked in the harness), and gives the same results fed whole,
 * split at random points, or byte by byte. */
Test(smtp_server, random_scripts_are_split_invariant, .timeout = 240)
{
	static const char *const dict[] = {
		"EHLO c.test\r\n", "HELO c.test\r\n", "MAIL FROM:<a@b.test>\r\n",
		"MAIL FROM:<> SIZE=5 BODY=8BITMIME SMTPUTF8\r\n", "RCPT TO:<c@d.test>\r\n",
		"RCPT TO:<\xc3\xa6@d.test>\r\n", "DATA\r\n", "BDAT 5\r\n", "BDAT 3 LAST\r\n",
		"BDAT 0 LAST\r\n", "RSET\r\n", "NOOP\r\n", "QUIT\r\n", "AUTH PLAIN " PLAIN_OK "\r\n",
		"AUTH LOGIN\r\n", "dXNlcg==\r\n", "*\r\n", "\r\n.\r\n", ".\r\n", "\n.\n", "\r.\r",
		"\r\n.\n", "\n.\r\n", "\r\n\0.\r\n", "..x\r\n", "line\r\n", "\r", "\n", "\0",
		"x", ".", "VRFY x\r\n", "BOGUS\r\n", "MAIL FROM:<a@b.test> X=\"\r\n",
	};
	uint32_t seed = 2024;
	size_t ndict = sizeof(dict) / sizeof(dict[0]);

	for (int round = 0; round < 150; round++) {
		struct step steps[12];
		char *mem[12];
		struct ts_opts o;
		struct ts_result whole, other;
		size_t nsteps = 1 + (size_t)(round % 11);

		for (size_t i = 0; i < nsteps; i++) {
			struct buf b = { 0 };
			size_t tokens;

			seed = seed * 1103515245u + 12345u;
			tokens = 1 + (seed >> 16) % 6u;
			for (size_t t = 0; t < tokens; t++) {
				seed = seed * 1103515245u + 12345u;
				const char *tok = dict[(seed >> 16) % ndict];
				size_t tl = strlen(tok);
				if (strcmp(tok, "\r\n\0.\r\n") == 0 || tok[0] == '\0')
					tl = tok[0] == '\0' ? 1 : 6;
				buf_add(&b, tok, tl);
			}
			mem[i] = b.p;
			steps[i].p = b.p;
			steps[i].n = b.len;
		}
		opts_default(&o);
		o.cfg.client_is_allowed = (round & 1) != 0;
		o.cfg.recipients_max = 2;
		o.no_split = true;
		ts_check(&o, steps, nsteps, &whole);
		for (int k = 0; k < 4; k++) {
			seed = seed * 1103515245u + 12345u;
			size_t i = (seed >> 16) % nsteps;
			seed = seed * 1103515245u + 12345u;
			size_t at = steps[i].n > 1 ? 1 + (seed >> 16) % (steps[i].n - 1) : 0;
			if (at == 0)
				continue;
			ts_run(&o, steps, nsteps, i, at, false, &other);
			ts_assert_same(&whole, &other, "random split", i, at);
			ts_result_free(&other);
		}
		ts_result_free(&whole);
		for (size_t i = 0; i < nsteps; i++)
			free(mem[i]);
	}
}

/* ---- STARTTLS (RFC 3207, INJ-05) ------------------------------------ */

#define EHLO_TLS_HEAD                                                                \
	"250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n" \
	"250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
#define READY "220 2.0.0 Ready to start TLS\r\n"
#define STARTTLS ST("STARTTLS\r\n")

static struct ts_opts
opts_tls(void)
{
	struct ts_opts o;

	opts_default(&o);
	o.cfg.starttls_is_offered = true;
	return o;
}

Test(smtp_server, starttls_is_offered_until_tls_is_active)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, STARTTLS, EHLO, QUIT);
	cr_assert_str_eq(r.out.p, GREETING EHLO_TLS_HEAD
			 "250-CHUNKING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n" READY
			 EHLO_TLS_HEAD "250-CHUNKING\r\n250 AUTH PLAIN LOGIN\r\n221 2.0.0 Bye\r\n");
	cr_assert_str_eq(r.log.p, "TLS CLOSE");
	cr_assert_eq(r.tls_starts, 1);
	ts_result_free(&r);
}

Test(smtp_server, starttls_not_offered_is_502_and_not_advertised)
{
	struct ts_result r;

	RUN(&r, EHLO, STARTTLS, MAIL);
	cr_assert_null(strstr(r.out.p, "STARTTLS"));
	EXPECT_CODES(&r, "220 250 502 250");
	cr_assert_eq(r.tls_starts, 0);
	ts_result_free(&r);
}

/* INJ-05 (CVE-2011-0411): MAIL pipelined behind STARTTLS is never run. */
Test(smtp_server, command_pipelined_behind_starttls_is_discarded)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("STARTTLS\r\nMAIL FROM:<a@b.test>\r\n"), EHLO, RCPT);
	EXPECT_CODES(&r, "220 250 220 250 503");
	EXPECT_OUT_HAS(&r, READY);
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: need MAIL command\r\n");
	cr_assert_str_eq(r.log.p, "TLS ");
	ts_result_free(&r);
}

Test(smtp_server, everything_behind_starttls_is_discarded_unparsed)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	/* a whole transaction, a QUIT, junk and an overlong line: none of it
	 * is parsed, no reply, no event; the session goes on under TLS */
	RUN_OPTS(&o, &r, EHLO,
		 ST("STARTTLS\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n"
		    "QUIT\r\n\x16\x03\x01\x00\x05\r\n\n\r\0"),
		 ST("EHLO again.test\r\n"), MAIL, RCPT, DATA, ST("y\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 220 250 250 250 354 250");
	cr_assert_str_eq(r.log.p, "TLS START MSG<a@b.test>1:6 ");
	cr_assert_eq(r.messages, 1);
	cr_assert(r.last_tls);
	cr_assert_str_eq(r.last_helo, "E-again.test");
	ts_result_free(&r);
}

Test(smtp_server, starttls_forgets_the_helo_name)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, STARTTLS, MAIL, ST("HELO plain.test\r\n"), MAIL, RCPT, DATA,
		 ST("x\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 220 503 250 250 250 354 250");
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: send HELO/EHLO first\r\n");
	cr_assert_str_eq(r.last_helo, "H-plain.test");
	cr_assert(r.last_tls);
	ts_result_free(&r);
}

Test(smtp_server, starttls_twice_argument_transaction)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	RUN_OPTS(&o, &r, EHLO, ST("STARTTLS now\r\n"), ST("STARTTLS \r\n"), MAIL, STARTTLS,
		 ST("RSET\r\n"), STARTTLS, EHLO, STARTTLS, MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 501 501 250 503 250 220 250 503 250 250");
	EXPECT_OUT_HAS(&r, "501 5.5.4 Syntax: STARTTLS\r\n");
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: MAIL transaction in progress\r\n");
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: TLS already active\r\n");
	cr_assert_eq(r.tls_starts, 1);
	ts_result_free(&r);
}

Test(smtp_server, require_tls_refuses_mail_rcpt_data_bdat_auth_with_530)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	o.cfg.tls_is_required = true;
	RUN_OPTS(&o, &r, EHLO, MAIL, RCPT, DATA, ST("BDAT 5 LAST\r\nMAIL "),
		 ST("AUTH PLAIN " PLAIN_OK "\r\n"), ST("NOOP\r\n"), STARTTLS, EHLO, MAIL, RCPT,
		 DATA, ST("x\r\n.\r\n"));
	EXPECT_CODES(&r, "220 250 530 530 530 530 530 250 220 250 250 250 354 250");
	cr_assert_str_eq(r.log.p, "TLS START MSG<a@b.test>1:6 ");
	cr_assert(r.last_tls);
	cr_assert_eq(r.auths, 0);
	ts_result_free(&r);
}

Test(smtp_server, require_tls_530_has_the_rfc_3207_text)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	o.cfg.tls_is_required = true;
	RUN_OPTS(&o, &r, EHLO, MAIL);
	EXPECT_OUT_HAS(&r, "530 5.7.0 Must issue a STARTTLS command first\r\n");
	ts_result_free(&r);
}

Test(smtp_server, auth_only_after_tls_for_remote_clients)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	o.cfg.client_is_allowed = false;
	o.cfg.auth_requires_tls = true;
	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT, ST("RSET\r\n"),
		 STARTTLS, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 538 250 554 250 220 250 235 250 250");
	EXPECT_OUT_HAS(&r, "538 5.7.11 Encryption required for requested authentication "
			   "mechanism\r\n");
	/* AUTH is advertised once, after TLS; STARTTLS once, before */
	const char *first = strstr(r.out.p, "250 AUTH PLAIN LOGIN\r\n");
	cr_assert_not_null(first);
	cr_assert(first > strstr(r.out.p, READY), "AUTH advertised before TLS");
	cr_assert_eq(r.auths, 1);
	ts_result_free(&r);
}

Test(smtp_server, auth_requiring_tls_without_starttls_is_not_enabled)
{
	struct ts_opts o = opts_remote();
	struct ts_result r;

	o.cfg.auth_requires_tls = true;
	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"));
	cr_assert_null(strstr(r.out.p, "AUTH PLAIN LOGIN"));
	EXPECT_CODES(&r, "220 250 503");
	EXPECT_OUT_HAS(&r, "503 5.5.1 Error: authentication not enabled\r\n");
	ts_result_free(&r);
}

Test(smtp_server, authentication_before_tls_is_forgotten)
{
	struct ts_opts o = opts_tls();
	struct ts_result r;

	o.cfg.client_is_allowed = false; /* loopback AUTH, then STARTTLS */
	RUN_OPTS(&o, &r, EHLO, ST("AUTH PLAIN " PLAIN_OK "\r\n"), STARTTLS, EHLO, MAIL, RCPT);
	EXPECT_CODES(&r, "220 250 235 220 250 250 554");
	EXPECT_OUT_HAS(&r, "Relay access denied");
	ts_result_free(&r);
}

Test(smtp_server, starttls_event_then_input_is_dropped_and_timeout_is_silent)
{
	struct smtp_server *s = calloc(1, sizeof(*s));
	struct smtp_server_config cfg;
	struct smtp_server_event ev;
	static const uint8_t a[] = "EHLO c\r\n";
	static const uint8_t b[] = "STARTTLS\r\nQUIT\r\n";
	size_t len;

	cr_assert_not_null(s);
	smtp_server_config_default(&cfg);
	cfg.starttls_is_offered = true;
	smtp_server_init(s, &cfg);
	smtp_server_start(s);
	handed(s);
	cr_assert_eq(smtp_server_feed(s, a, sizeof(a) - 1, &ev), sizeof(a) - 1);
	handed(s);
	cr_assert_eq(smtp_server_feed(s, b, sizeof(b) - 1, &ev), 10);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_STARTTLS);
	const uint8_t *out = smtp_server_output(s, &len);
	cr_assert_eq(len, strlen(READY));
	cr_assert(memcmp(out, READY, len) == 0);
	smtp_server_output_consumed(s, len);
	/* the rest is consumed and dropped, also before the 220 went out */
	cr_assert_eq(smtp_server_feed(s, b + 10, sizeof(b) - 11, &ev), sizeof(b) - 11);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_NONE);
	cr_assert(!smtp_server_is_closed(s));
	cr_assert_eq(smtp_server_timeout_class(s), SMTP_SERVER_TIMEOUT_COMMAND);
	smtp_server_timeout(s); /* the handshake took too long */
	(void)smtp_server_output(s, &len);
	cr_assert_eq(len, 0, "no plaintext after the 220");
	cr_assert(smtp_server_is_closed(s));
	cr_assert_eq(smtp_server_feed(s, NULL, 0, &ev), 0);
	cr_assert_eq(ev.type, SMTP_SERVER_EV_CLOSE);
	smtp_server_fini(s);
	free(s);
}
