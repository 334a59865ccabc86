/*
 * smtp_server.c - the inbound ESMTP server session (smtp_server.h,
 * docs/smtp-server.md).
 *
 * Structure: smtp_server_feed() runs one of three input modes, chosen by
 * s->state: command lines (commands and AUTH continuation lines), DATA
 * (a byte scanner finding CRLF "." CRLF and validating the body) and BDAT
 * (counting chunk bytes and dot-stuffing them). Each mode consumes input
 * and may stop with one event; the loop is bounded by the input length
 * (every iteration consumes a byte or returns).
 *
 * Invariants:
 * - Output never exceeds SMTP_SERVER_OUTPUT_SIZE: a command line is taken
 *   only when SMTP_SERVER_REPLY_SIZE_MAX bytes are free, and between a
 *   DATA/BDAT command and its final reply nothing else is queued.
 * - Only CRLF ends a command line or a body line; only CRLF "." CRLF (the
 *   first CRLF may be the DATA command's) ends DATA.
 * - DATA_START is followed by exactly one MESSAGE or DATA_ABORT.
 * - Peer input is never asserted on; assertions guard API misuse.
 *
 * - In ST_TLS_WAIT (after STARTTLS, before tls_started) no input byte is
 *   ever parsed: CVE-2011-0411.
 *
 * References: RFC 5321, 1869 (SIZE), 2034/3463 (enhanced codes), 2920
 * (PIPELINING), 3030 (CHUNKING), 3207 (STARTTLS), 4954/4616 (AUTH), 6152
 * (8BITMIME), 6531 (SMTPUTF8); reliability.md 8.1; CVE-2023-51764
 * (smuggling), CVE-2011-0411 (STARTTLS command injection).
 */
#include "smtp_server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/eng_common.h"

enum smtp_server_state {
	ST_COMMAND = 0, /* reading command lines */
	ST_AUTH,	/* reading an AUTH continuation line */
	ST_DATA,	/* inside DATA */
	ST_BDAT,	/* reading BDAT chunk bytes */
	ST_TLS_WAIT,	/* after STARTTLS: input discarded until tls_started */
};

enum auth_step {
	AUTH_STEP_PLAIN = 0, /* awaiting the PLAIN response */
	AUTH_STEP_LOGIN_USER,
	AUTH_STEP_LOGIN_PASSWORD,
};

enum data_scan_state {
	SCAN_START = 0, /* at the start of a line */
	SCAN_TEXT,	/* inside a line */
	SCAN_CR,	/* CR inside a line */
	SCAN_DOT,	/* DATA: "." at the start of a line */
	SCAN_DOT_CR,	/* DATA: ".\r" at the start of a line */
};

enum body_error {
	BODY_OK = 0,
	BODY_BARE,	/* bare CR or LF */
	BODY_NUL,	/* NUL byte */
	BODY_LINE,	/* text line too long */
	BODY_SIZE,	/* message_size_max exceeded */
	BODY_BDAT_SEQ,	/* BDAT without MAIL/RCPT, or chunking off */
};

#define BDAT_RESERVE 8u /* stuff buffer room for CRLF ".\r\n" */

/* ---- output --------------------------------------------------------- */

static size_t
out_free(const struct smtp_server *s)
{
	ENG_ASSERT(s->out_head <= s->out_used);
	ENG_ASSERT(s->out_used <= SMTP_SERVER_OUTPUT_SIZE);
	return SMTP_SERVER_OUTPUT_SIZE - (s->out_used - s->out_head);
}

/* Append a formatted reply if it fits (it always does for command
 * replies; see the invariants). Returns false when it did not fit. */
static bool __attribute__((format(printf, 2, 3)))
out_printf(struct smtp_server *s, const char *fmt, ...)
{
	char tmp[SMTP_SERVER_REPLY_SIZE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(tmp));
	if ((size_t)n > out_free(s))
		return false;
	if (s->out_used + (size_t)n > SMTP_SERVER_OUTPUT_SIZE) {
		memmove(s->out, s->out + s->out_head, s->out_used - s->out_head);
		s->out_used -= s->out_head;
		s->out_head = 0;
	}
	memcpy(s->out + s->out_used, tmp, (size_t)n);
	s->out_used += (uint32_t)n;
	return true;
}

static void
close_session(struct smtp_server *s)
{
	s->is_closed = true;
	if (s->data_started)
		s->abort_is_due = true;
}

/* A 5xx reply to a command: counted; at errors_max the session closes. */
static void __attribute__((format(printf, 2, 3)))
reply_fail(struct smtp_server *s, const char *fmt, ...)
{
	char tmp[SMTP_SERVER_REPLY_SIZE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(tmp));
	(void)out_printf(s, "%s", tmp);
	if (tmp[0] != '5')
		return;
	s->errors_count++;
	if (s->errors_count >= s->config.errors_max && !s->is_closed) {
		(void)out_printf(s, "421 4.7.0 %s Error: too many errors\r\n", s->hostname);
		close_session(s);
	}
}

static void
sync_error(struct smtp_server *s)
{
	(void)out_printf(s, "554 5.5.1 Error: SMTP protocol synchronization\r\n");
	close_session(s);
}

/* require_tls and not encrypted yet: MAIL, RCPT, DATA, BDAT, AUTH wait. */
static bool
tls_is_missing(const struct smtp_server *s)
{
	return s->config.tls_is_required && !s->is_tls;
}

#define TLS_FIRST_REPLY "530 5.7.0 Must issue a STARTTLS command first\r\n"

/* Refuse the command with 530 if TLS is required first. */
static bool
tls_refuse(struct smtp_server *s)
{
	if (!tls_is_missing(s))
		return false;
	reply_fail(s, TLS_FIRST_REPLY);
	return true;
}

/* AUTH may be advertised and used now (RFC 4954 4: not in plaintext
 * unless the caller trusts the path, i.e. a loopback client). */
static bool
auth_is_available(const struct smtp_server *s)
{
	return s->config.auth_is_offered && (s->is_tls || !s->config.auth_requires_tls);
}

/* ---- envelope ------------------------------------------------------- */

static void
transaction_reset(struct smtp_server *s)
{
	if (s->data_started)
		s->abort_is_due = true;
	s->has_mail = false;
	s->is_bdat = false;
	s->body_8bitmime = false;
	s->smtputf8 = false;
	s->size_declared = 0;
	s->body_size = 0;
	s->body_wire_size = 0;
	s->body_error = BODY_OK;
	s->data_state = SCAN_START;
	s->text_line_len = 0;
	s->sender_len = 0;
	s->rcpts_count = 0;
	s->rcpt_arena_used = 0;
	s->deferred_reply_len = 0;
	free(s->rcpts);
	free(s->rcpt_arena);
	s->rcpts = NULL;
	s->rcpt_arena = NULL;
	s->rcpts_capacity = 0;
	s->rcpt_arena_capacity = 0;
}

/* Store a recipient; false when memory is short. */
static bool
rcpt_add(struct smtp_server *s, const uint8_t *addr, size_t len)
{
	ENG_ASSERT(len <= SMTP_SERVER_ADDRESS_SIZE_MAX);
	ENG_ASSERT(s->rcpts_count < s->config.recipients_max);
	if (s->rcpts_count == s->rcpts_capacity) {
		uint32_t cap = s->rcpts_capacity == 0 ? 8u : s->rcpts_capacity * 2u;
		struct smtp_server_rcpt *r;

		if (cap > s->config.recipients_max)
			cap = s->config.recipients_max;
		r = realloc(s->rcpts, (size_t)cap * sizeof(*r));
		if (r == NULL)
			return false;
		s->rcpts = r;
		s->rcpts_capacity = cap;
	}
	if (s->rcpt_arena_capacity - s->rcpt_arena_used < len) {
		size_t cap = s->rcpt_arena_capacity == 0 ? 1024u : 2u * (size_t)s->rcpt_arena_capacity;
		char *a;

		while (cap - s->rcpt_arena_used < len)
			cap *= 2u;
		ENG_ASSERT(cap <= UINT32_MAX);
		a = realloc(s->rcpt_arena, cap);
		if (a == NULL)
			return false;
		s->rcpt_arena = a;
		s->rcpt_arena_capacity = (uint32_t)cap;
	}
	if (len > 0)
		memcpy(s->rcpt_arena + s->rcpt_arena_used, addr, len);
	s->rcpts[s->rcpts_count].offset = s->rcpt_arena_used;
	s->rcpts[s->rcpts_count].len = (uint32_t)len;
	s->rcpt_arena_used += (uint32_t)len;
	s->rcpts_count++;
	return true;
}

/* ---- character classes and address syntax (RFC 5321 4.1.2) --------- */

static bool
is_alpha(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static bool
is_atext(uint8_t c)
{
	return is_alpha(c) || is_digit(c) || c >= 0x80 ||
	       (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static uint8_t
to_upper(uint8_t c)
{
	return (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
}

/* Case-insensitive: does (p, n) start with the ASCII word w? */
static bool
starts_with(const uint8_t *p, size_t n, const char *w)
{
	size_t wl = strlen(w);

	if (n < wl)
		return false;
	for (size_t i = 0; i < wl; i++) {
		if (to_upper(p[i]) != to_upper((uint8_t)w[i]))
			return false;
	}
	return true;
}

static bool
equals_word(const uint8_t *p, size_t n, const char *w)
{
	return n == strlen(w) && starts_with(p, n, w);
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
static bool
utf8_is_valid(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = p[i];
		size_t extra;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			extra = 1;
			cp = c & 0x1fu;
		} else if (c >= 0xe0 && c <= 0xef) {
			extra = 2;
			cp = c & 0x0fu;
		} else if (c >= 0xf0 && c <= 0xf4) {
			extra = 3;
			cp = c & 0x07u;
		} else {
			return false;
		}
		if (n - i <= extra)
			return false;
		for (size_t k = 1; k <= extra; k++) {
			if ((p[i + k] & 0xc0u) != 0x80u)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3fu);
		}
		if ((extra == 2 && cp < 0x800u) || (extra == 3 && cp < 0x10000u) ||
		    (cp >= 0xd800u && cp <= 0xdfffu) || cp > 0x10ffffu)
			return false;
		i += 1 + extra;
	}
	return true;
}

enum addr_result {
	ADDR_OK = 0,
	ADDR_SYNTAX,
	ADDR_TOO_LONG,
};

/* A domain (dot-separated labels of letters, digits, hyphens or 8-bit
 * bytes; no leading/trailing hyphen; <= 63 bytes each) or an address
 * literal "[...]", starting at p[*i] and ending before p[end_char]. */
static bool
domain_scan(const uint8_t *p, size_t n, size_t *i, const char *stops)
{
	size_t label_len = 0;
	uint8_t prev = '.';

	if (*i < n && p[*i] == '[') {
		size_t start = ++*i;

		while (*i < n && p[*i] >= 33 && p[*i] <= 126 && p[*i] != '[' &&
		       p[*i] != ']' && p[*i] != '\\')
			++*i;
		if (*i == start || *i >= n || p[*i] != ']')
			return false;
		++*i;
		return *i < n && strchr(stops, p[*i]) != NULL;
	}
	for (; *i < n && strchr(stops, p[*i]) == NULL; ++*i) {
		uint8_t c = p[*i];

		if (c == '.') {
			if (prev == '.' || prev == '-')
				return false;
			label_len = 0;
		} else if (c == '-') {
			if (prev == '.')
				return false;
			label_len++;
		} else if (is_alpha(c) || is_digit(c) || c >= 0x80) {
			label_len++;
		} else {
			return false;
		}
		if (label_len > 63)
			return false;
		prev = c;
	}
	return *i < n && prev != '.' && prev != '-' && p[*i] != 0;
}

/* Local part at p[*i]: dot-string or quoted string. */
static bool
local_scan(const uint8_t *p, size_t n, size_t *i)
{
	if (*i < n && p[*i] == '"') {
		for (++*i; *i < n; ++*i) {
			uint8_t c = p[*i];

			if (c == '"') {
				++*i;
				return true;
			}
			if (c == '\\') {
				++*i;
				if (*i >= n || p[*i] < 32 || p[*i] > 126)
					return false;
			} else if (!(c == 32 || c == 33 || (c >= 35 && c <= 91) ||
				     (c >= 93 && c <= 126) || c >= 0x80)) {
				return false;
			}
		}
		return false;
	}
	for (bool atom_empty = true; *i < n; ++*i) {
		if (p[*i] == '.') {
			if (atom_empty)
				return false;
			atom_empty = true;
		} else if (is_atext(p[*i])) {
			atom_empty = false;
		} else {
			return !atom_empty;
		}
	}
	return false;
}

/* Source route "@a,@b:" (RFC 5321 4.1.2 A-d-l): accepted and ignored. */
static bool
route_skip(const uint8_t *p, size_t n, size_t *i)
{
	while (*i < n && p[*i] == '@') {
		++*i;
		if (!domain_scan(p, n, i, ",:"))
			return false;
		if (p[*i] == ':') {
			++*i;
			return true;
		}
		++*i; /* ',' */
	}
	return false;
}

/*
 * "<" [route] mailbox ">" at the start of (p, n). On ADDR_OK:
 * the mailbox is p[*mb_off, *mb_off + *mb_len) (len 0 for "<>"), *end is
 * the offset after ">", *has_8bit tells whether it holds non-ASCII.
 * allow_postmaster: accept "<postmaster>" without a domain (RCPT).
 */
static enum addr_result
path_parse(const uint8_t *p, size_t n, bool allow_postmaster, size_t *mb_off, size_t *mb_len,
	   size_t *end, bool *has_8bit)
{
	size_t i = 1;
	size_t start;

	if (n < 2 || p[0] != '<')
		return ADDR_SYNTAX;
	if (p[1] == '@' && !route_skip(p, n, &i))
		return ADDR_SYNTAX;
	start = i;
	if (i < n && p[i] == '>' && start == 1) {
		*mb_off = 1;
		*mb_len = 0;
		*end = 2;
		*has_8bit = false;
		return ADDR_OK;
	}
	if (!local_scan(p, n, &i) || i >= n)
		return ADDR_SYNTAX;
	if (p[i] == '>' && allow_postmaster && equals_word(p + start, i - start, "postmaster")) {
		/* RFC 5321 4.1.1.3: <Postmaster> without a domain */
	} else {
		if (p[i] != '@')
			return ADDR_SYNTAX;
		i++;
		if (!domain_scan(p, n, &i, ">"))
			return ADDR_SYNTAX;
	}
	ENG_ASSERT(i < n && p[i] == '>');
	*mb_off = start;
	*mb_len = i - start;
	*end = i + 1;
	*has_8bit = false;
	for (size_t k = start; k < i; k++)
		*has_8bit = *has_8bit || p[k] >= 0x80;
	if (*has_8bit && !utf8_is_valid(p + start, i - start))
		return ADDR_SYNTAX;
	if (*mb_len > SMTP_SERVER_ADDRESS_SIZE_MAX)
		return ADDR_TOO_LONG;
	return ADDR_OK;
}

/* ---- MAIL parameters (RFC 1869, 6152, 6531, 4954) ------------------- */

enum param_result {
	PARAM_OK = 0,
	PARAM_SYNTAX,	   /* 501 5.5.4 */
	PARAM_UNSUPPORTED, /* 555 5.5.4 */
	PARAM_TOO_BIG,	   /* 552 5.3.4 */
};

struct mail_params {
	uint64_t size;
	bool has_size;
	bool has_body;
	bool body_8bitmime;
	bool smtputf8;
	bool has_auth;
};

/* xtext (RFC 3461 4): xchar or "+" HEXHEX; or "<>". */
static bool
xtext_is_valid(const uint8_t *v, size_t n)
{
	if (n == 2 && v[0] == '<' && v[1] == '>')
		return true;
	for (size_t i = 0; i < n; i++) {
		if (v[i] == '+') {
			if (n - i < 3)
				return false;
			for (size_t k = 1; k <= 2; k++) {
				uint8_t h = v[i + k];

				if (!is_digit(h) && !(h >= 'A' && h <= 'F'))
					return false;
			}
			i += 2;
		} else if (v[i] < 33 || v[i] > 126 || v[i] == '=') {
			return false;
		}
	}
	return n > 0;
}

static bool
digits_parse(const uint8_t *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(v[i]) || x > (UINT64_MAX - 9u) / 10u)
			return false;
		x = x * 10u + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return true;
}

static enum param_result
mail_param_one(const struct smtp_server *s, const uint8_t *k, size_t kn, const uint8_t *v,
	       size_t vn, bool has_value, struct mail_params *mp)
{
	if (equals_word(k, kn, "SIZE")) {
		if (!has_value || mp->has_size || !digits_parse(v, vn, &mp->size))
			return PARAM_SYNTAX;
		mp->has_size = true;
		return mp->size > s->config.message_size_max ? PARAM_TOO_BIG : PARAM_OK;
	}
	if (equals_word(k, kn, "BODY")) {
		if (!has_value || mp->has_body)
			return PARAM_SYNTAX;
		mp->has_body = true;
		if (equals_word(v, vn, "8BITMIME"))
			mp->body_8bitmime = true;
		else if (!equals_word(v, vn, "7BIT"))
			return PARAM_SYNTAX;
		return PARAM_OK;
	}
	if (equals_word(k, kn, "SMTPUTF8")) {
		if (has_value || mp->smtputf8)
			return PARAM_SYNTAX;
		mp->smtputf8 = true;
		return PARAM_OK;
	}
	if (equals_word(k, kn, "AUTH")) {
		if (!has_value || mp->has_auth || vn > 500 || !xtext_is_valid(v, vn))
			return PARAM_SYNTAX;
		mp->has_auth = true; /* RFC 4954 5: accepted, not trusted */
		return PARAM_OK;
	}
	return PARAM_UNSUPPORTED;
}

/* esmtp-param *(SP esmtp-param), (p, n) starting after the path. */
static enum param_result
params_parse(const struct smtp_server *s, const uint8_t *p, size_t n, bool is_mail,
	     struct mail_params *mp)
{
	size_t i = 0;

	memset(mp, 0, sizeof(*mp));
	while (i < n) {
		size_t k0, kn, v0, vn = 0;
		bool has_value = false;
		enum param_result r;

		if (p[i] != ' ')
			return PARAM_SYNTAX;
		while (i < n && p[i] == ' ')
			i++;
		if (i == n)
			break;
		if (!s->is_esmtp)
			return PARAM_UNSUPPORTED;
		k0 = i;
		while (i < n && (is_alpha(p[i]) || is_digit(p[i]) || (p[i] == '-' && i > k0)))
			i++;
		kn = i - k0;
		if (kn == 0)
			return PARAM_SYNTAX;
		v0 = i;
		if (i < n && p[i] == '=') {
			has_value = true;
			v0 = ++i;
			while (i < n && p[i] >= 33 && p[i] <= 126 && p[i] != '=')
				i++;
			vn = i - v0;
			if (vn == 0)
				return PARAM_SYNTAX;
		}
		if (i < n && p[i] != ' ')
			return PARAM_SYNTAX;
		if (!is_mail)
			return PARAM_UNSUPPORTED;
		r = mail_param_one(s, p + k0, kn, p + v0, vn, has_value, mp);
		if (r != PARAM_OK)
			return r;
	}
	return PARAM_OK;
}

/* ---- commands ------------------------------------------------------- */

/* Skip "FROM:" / "TO:" and optional spaces; false if absent. */
static bool
path_prefix_skip(const uint8_t *a, size_t n, const char *word, size_t *i)
{
	if (!starts_with(a, n, word))
		return false;
	*i = strlen(word);
	while (*i < n && a[*i] == ' ')
		(*i)++;
	return true;
}

static void
cmd_mail(struct smtp_server *s, const uint8_t *a, size_t n)
{
	size_t i, off, mlen, end;
	bool has_8bit;
	struct mail_params mp;
	enum addr_result ar;
	enum param_result pr;

	if (tls_refuse(s))
		return;
	if (!s->has_helo) {
		reply_fail(s, "503 5.5.1 Error: send HELO/EHLO first\r\n");
		return;
	}
	if (s->has_mail) {
		reply_fail(s, "503 5.5.1 Error: nested MAIL command\r\n");
		return;
	}
	if (!path_prefix_skip(a, n, "FROM:", &i)) {
		reply_fail(s, "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
		return;
	}
	ar = path_parse(a + i, n - i, false, &off, &mlen, &end, &has_8bit);
	if (ar == ADDR_TOO_LONG) {
		reply_fail(s, "501 5.1.7 Error: sender address too long\r\n");
		return;
	}
	if (ar != ADDR_OK) {
		reply_fail(s, "501 5.1.7 Error: bad sender address syntax\r\n");
		return;
	}
	pr = params_parse(s, a + i + end, n - i - end, true, &mp);
	if (pr == PARAM_UNSUPPORTED) {
		reply_fail(s, "555 5.5.4 Error: unsupported MAIL parameter\r\n");
		return;
	}
	if (pr == PARAM_SYNTAX) {
		reply_fail(s, "501 5.5.4 Error: bad MAIL parameter syntax\r\n");
		return;
	}
	if (pr == PARAM_TOO_BIG) {
		reply_fail(s, "552 5.3.4 Error: message size exceeds fixed limit\r\n");
		return;
	}
	if (has_8bit && !mp.smtputf8) {
		reply_fail(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8\r\n");
		return;
	}
	if (s->backpressure == SMTP_SERVER_BACKPRESSURE_TEMPFAIL) {
		(void)out_printf(s, "452 4.3.1 Insufficient system storage\r\n");
		return;
	}
	memcpy(s->sender, a + i + off, mlen);
	s->sender_len = (uint32_t)mlen;
	s->has_mail = true;
	s->size_declared = mp.size;
	s->body_8bitmime = mp.body_8bitmime;
	s->smtputf8 = mp.smtputf8;
	(void)out_printf(s, "250 2.1.0 Ok\r\n");
}

static void
cmd_rcpt(struct smtp_server *s, const uint8_t *a, size_t n)
{
	size_t i, off, mlen, end;
	bool has_8bit;
	struct mail_params mp;
	enum addr_result ar;
	enum param_result pr;

	if (tls_refuse(s))
		return;
	if (!s->has_mail) {
		reply_fail(s, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	if (s->is_bdat) {
		reply_fail(s, "503 5.5.1 Error: RCPT after BDAT\r\n");
		return;
	}
	if (!path_prefix_skip(a, n, "TO:", &i)) {
		reply_fail(s, "501 5.5.4 Syntax: RCPT TO:<address>\r\n");
		return;
	}
	ar = path_parse(a + i, n - i, true, &off, &mlen, &end, &has_8bit);
	if (ar == ADDR_TOO_LONG) {
		reply_fail(s, "501 5.1.3 Error: recipient address too long\r\n");
		return;
	}
	if (ar != ADDR_OK || mlen == 0) {
		reply_fail(s, "501 5.1.3 Error: bad recipient address syntax\r\n");
		return;
	}
	pr = params_parse(s, a + i + end, n - i - end, false, &mp);
	if (pr == PARAM_UNSUPPORTED) {
		reply_fail(s, "555 5.5.4 Error: unsupported RCPT parameter\r\n");
		return;
	}
	if (pr != PARAM_OK) {
		reply_fail(s, "501 5.5.4 Error: bad RCPT parameter syntax\r\n");
		return;
	}
	if (has_8bit && !s->smtputf8) {
		reply_fail(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8\r\n");
		return;
	}
	if (!s->config.client_is_allowed && !s->is_authenticated) {
		reply_fail(s, "554 5.7.1 <%.*s>: Relay access denied\r\n", (int)mlen,
				  (const char *)a + i + off);
		return;
	}
	if (s->rcpts_count >= s->config.recipients_max) {
		(void)out_printf(s, "452 4.5.3 Error: too many recipients\r\n");
		return;
	}
	if (!rcpt_add(s, a + i + off, mlen)) {
		(void)out_printf(s, "452 4.3.1 Insufficient system storage\r\n");
		return;
	}
	(void)out_printf(s, "250 2.1.5 Ok\r\n");
}

static void
cmd_ehlo(struct smtp_server *s, const uint8_t *a, size_t n, bool is_ehlo)
{
	const char *lines[9];
	size_t count = 0;
	char size_line[40];

	s->sync_is_pending = true; /* RFC 2920 3.1: EHLO ends a group */
	if (n == 0 || n > SMTP_SERVER_HOSTNAME_SIZE_MAX || memchr(a, ' ', n) != NULL) {
		reply_fail(s, "501 5.5.4 Syntax: %s hostname\r\n", is_ehlo ? "EHLO" : "HELO");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (a[i] < 33 || a[i] > 126) {
			reply_fail(s, "501 5.5.4 Error: invalid %s hostname\r\n",
					  is_ehlo ? "EHLO" : "HELO");
			return;
		}
	}
	transaction_reset(s);
	memcpy(s->helo_name, a, n);
	s->helo_name_len = (uint32_t)n;
	s->has_helo = true;
	s->is_esmtp = is_ehlo;
	if (!is_ehlo) {
		(void)out_printf(s, "250 %s\r\n", s->hostname);
		return;
	}
	(void)snprintf(size_line, sizeof(size_line), "SIZE %llu",
		       (unsigned long long)s->config.message_size_max);
	lines[count++] = s->hostname;
	lines[count++] = "PIPELINING";
	lines[count++] = size_line;
	lines[count++] = "8BITMIME";
	lines[count++] = "SMTPUTF8";
	lines[count++] = "ENHANCEDSTATUSCODES";
	if (!s->config.chunking_is_disabled)
		lines[count++] = "CHUNKING";
	if (s->config.starttls_is_offered && !s->is_tls)
		lines[count++] = "STARTTLS";
	if (auth_is_available(s))
		lines[count++] = "AUTH PLAIN LOGIN";
	ENG_ASSERT(count <= sizeof(lines) / sizeof(lines[0]));
	for (size_t i = 0; i < count; i++)
		(void)out_printf(s, "250%c%s\r\n", i + 1 == count ? ' ' : '-', lines[i]);
}

static void
cmd_data(struct smtp_server *s, size_t n, struct smtp_server_event *ev)
{
	s->sync_is_pending = true; /* RFC 2920 3.1: wait for 354 */
	if (tls_refuse(s))
		return;
	if (n != 0) {
		reply_fail(s, "501 5.5.4 Syntax: DATA\r\n");
		return;
	}
	if (!s->has_mail) {
		reply_fail(s, "503 5.5.1 Error: need MAIL command\r\n");
		return;
	}
	if (s->is_bdat) {
		reply_fail(s, "503 5.5.1 Error: DATA after BDAT\r\n");
		return;
	}
	if (s->rcpts_count == 0) {
		reply_fail(s, "503 5.5.1 Error: need RCPT command\r\n");
		return;
	}
	(void)out_printf(s, "354 End data with <CR><LF>.<CR><LF>\r\n");
	s->state = ST_DATA;
	s->data_state = SCAN_START;
	s->data_started = true;
	ev->type = SMTP_SERVER_EV_DATA_START;
}

static const char *
body_error_reply(const struct smtp_server *s)
{
	bool closing = s->config.bare_lf_policy == SMTP_SERVER_BARE_LF_CLOSE;

	switch ((enum body_error)s->body_error) {
	case BODY_BARE:
		return closing ? "554 5.6.11 Error: bare CR or LF in message (SMTP smuggling)\r\n"
			       : "550 5.6.11 Error: bare CR or LF in message (SMTP smuggling)\r\n";
	case BODY_NUL:
		return closing ? "554 5.6.0 Error: NUL character in message\r\n"
			       : "550 5.6.0 Error: NUL character in message\r\n";
	case BODY_LINE:
		return "554 5.6.0 Error: message line too long\r\n";
	case BODY_SIZE:
		return "552 5.3.4 Error: message size exceeds fixed limit\r\n";
	case BODY_BDAT_SEQ:
	case BODY_OK:
		break;
	}
	ENG_PANIC("no body error reply");
	return "";
}

/* The body ended in error: reply, end the transaction (maybe the session). */
static void
body_error_finish(struct smtp_server *s)
{
	enum body_error e = (enum body_error)s->body_error;

	ENG_ASSERT(e != BODY_OK);
	(void)out_printf(s, "%s", body_error_reply(s));
	transaction_reset(s);
	s->state = ST_COMMAND;
	if ((e == BODY_BARE || e == BODY_NUL) &&
	    s->config.bare_lf_policy == SMTP_SERVER_BARE_LF_CLOSE)
		close_session(s);
}

static void
body_error_set(struct smtp_server *s, enum body_error e)
{
	if (s->body_error != BODY_OK)
		return;
	s->body_error = (uint8_t)e;
	if (s->data_started)
		s->abort_is_due = true;
}

/* "BDAT" SP size [SP "LAST"] (RFC 3030 2). */
static void
cmd_bdat(struct smtp_server *s, const uint8_t *a, size_t n, struct smtp_server_event *ev)
{
	size_t i = 0;
	uint64_t size;

	while (i < n && is_digit(a[i]))
		i++;
	if (!digits_parse(a, i, &size) ||
	    !(i == n || (a[i] == ' ' && equals_word(a + i + 1, n - i - 1, "LAST")))) {
		/* the chunk length is unknown: the rest cannot be trusted */
		(void)out_printf(s, "501 5.5.4 Syntax: BDAT count [LAST]\r\n");
		close_session(s);
		return;
	}
	s->chunk_remaining = size;
	s->bdat_is_last = i < n;
	s->state = ST_BDAT;
	s->chunk_size = size;
	if (s->config.chunking_is_disabled || !s->is_esmtp || tls_is_missing(s) ||
	    !s->has_mail || s->rcpts_count == 0) {
		/* RFC 3030 2: the chunk is read and discarded, never parsed */
		bool off = s->config.chunking_is_disabled || !s->is_esmtp;

		s->deferred_reply_len = (uint32_t)snprintf(
			s->deferred_reply, sizeof(s->deferred_reply), "%s",
			off		     ? "502 5.5.1 Error: command not implemented\r\n"
			: tls_is_missing(s) ? TLS_FIRST_REPLY
			: !s->has_mail	     ? "503 5.5.1 Error: need MAIL command\r\n"
					     : "503 5.5.1 Error: need RCPT command\r\n");
		s->body_error = BODY_BDAT_SEQ;
		return;
	}
	s->is_bdat = true;
	if (s->body_error == BODY_OK && size > s->config.message_size_max - s->body_size)
		body_error_set(s, BODY_SIZE);
	if (!s->data_started && s->body_error == BODY_OK) {
		s->data_started = true;
		s->data_state = SCAN_START;
		ev->type = SMTP_SERVER_EV_DATA_START;
	}
}

static void
cmd_simple(struct smtp_server *s, const uint8_t *verb, size_t vn, size_t an)
{
	if (equals_word(verb, vn, "RSET")) {
		if (an != 0) {
			reply_fail(s, "501 5.5.4 Syntax: RSET\r\n");
			return;
		}
		transaction_reset(s);
		(void)out_printf(s, "250 2.0.0 Ok\r\n");
	} else if (equals_word(verb, vn, "NOOP")) {
		(void)out_printf(s, "250 2.0.0 Ok\r\n");
	} else if (equals_word(verb, vn, "QUIT")) {
		(void)out_printf(s, "221 2.0.0 Bye\r\n");
		close_session(s);
	} else if (equals_word(verb, vn, "VRFY")) {
		if (an == 0) {
			reply_fail(s, "501 5.5.4 Syntax: VRFY address\r\n");
			return;
		}
		(void)out_printf(s, "252 2.5.2 Cannot VRFY user, but will accept message "
				    "and attempt delivery\r\n");
	} else if (equals_word(verb, vn, "HELP")) {
		(void)out_printf(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET "
				    "NOOP QUIT VRFY HELP\r\n");
	} else if (equals_word(verb, vn, "EXPN") || equals_word(verb, vn, "ETRN") ||
		   equals_word(verb, vn, "TURN")) {
		reply_fail(s, "502 5.5.1 Error: command not implemented\r\n");
	} else {
		reply_fail(s, "500 5.5.2 Error: command not recognized\r\n");
	}
}

/* ---- AUTH (RFC 4954, 4616; LOGIN is the common de-facto mechanism) -- */

static int
b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (is_digit(c))
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Strict base64 into out (out_size bytes). False on bad input or overflow. */
static bool
b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t out_size, size_t *out_len)
{
	size_t o = 0;

	if (n % 4u != 0)
		return false;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		size_t pad = 0;

		for (size_t k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad > 0 || (v[k] = b64_value(in[i + k])) < 0) {
				return false;
			}
		}
		if (out_size - o < 3u - pad)
			return false;
		out[o++] = (uint8_t)((v[0] << 2) | (v[1] >> 4));
		if (pad < 2)
			out[o++] = (uint8_t)(((v[1] & 15) << 4) | (v[2] >> 2));
		if (pad < 1)
			out[o++] = (uint8_t)(((v[2] & 3) << 6) | v[3]);
	}
	*out_len = o;
	return true;
}

static void
auth_wipe(struct smtp_server *s)
{
	volatile uint8_t *p = s->auth_buf;

	for (size_t i = 0; i < sizeof(s->auth_buf); i++)
		p[i] = 0;
	s->auth_buf_len = 0;
	memset(&s->auth, 0, sizeof(s->auth));
}

static void
auth_emit(struct smtp_server *s, struct smtp_server_event *ev)
{
	s->state = ST_COMMAND;
	s->auth_pending = true;
	ev->type = SMTP_SERVER_EV_AUTH;
	ev->auth = s->auth;
}

/* PLAIN: authzid NUL authcid NUL password (RFC 4616 2). */
static void
auth_plain(struct smtp_server *s, const uint8_t *d, size_t n, struct smtp_server_event *ev)
{
	const uint8_t *z1 = memchr(d, 0, n);
	const uint8_t *z2 = z1 != NULL ? memchr(z1 + 1, 0, n - (size_t)(z1 + 1 - d)) : NULL;

	if (z2 == NULL || memchr(z2 + 1, 0, n - (size_t)(z2 + 1 - d)) != NULL ||
	    z2 == z1 + 1 || z2 + 1 == d + n || (size_t)(z1 - d) > SMTP_SERVER_AUTH_FIELD_SIZE_MAX ||
	    (size_t)(z2 - z1 - 1) > SMTP_SERVER_AUTH_FIELD_SIZE_MAX ||
	    (size_t)(d + n - z2 - 1) > SMTP_SERVER_AUTH_FIELD_SIZE_MAX) {
		auth_wipe(s);
		s->state = ST_COMMAND;
		reply_fail(s, "501 5.5.2 Error: malformed PLAIN response\r\n");
		return;
	}
	s->auth.mechanism = SMTP_SERVER_AUTH_PLAIN;
	s->auth.authzid = d;
	s->auth.authzid_len = (size_t)(z1 - d);
	s->auth.authcid = z1 + 1;
	s->auth.authcid_len = (size_t)(z2 - z1 - 1);
	s->auth.password = z2 + 1;
	s->auth.password_len = (size_t)(d + n - z2 - 1);
	auth_emit(s, ev);
}

/* One base64 response (initial or continuation) for the current step. */
static void
auth_response(struct smtp_server *s, const uint8_t *a, size_t n, struct smtp_server_event *ev)
{
	uint8_t *dst = s->auth_buf + s->auth_buf_len;
	size_t room = sizeof(s->auth_buf) - s->auth_buf_len;
	size_t len;

	s->sync_is_pending = true; /* RFC 4954 4: the client awaits each reply */
	if (n == 1 && a[0] == '*') {
		auth_wipe(s);
		s->state = ST_COMMAND;
		reply_fail(s, "501 5.7.0 Error: authentication aborted\r\n");
		return;
	}
	if (s->sub_state == AUTH_STEP_PLAIN && n == 1 && a[0] == '=')
		n = 0; /* "=": empty initial response */
	if (!b64_decode(a, n, dst, room, &len)) {
		auth_wipe(s);
		s->state = ST_COMMAND;
		reply_fail(s, "501 5.5.2 Error: invalid base64 response\r\n");
		return;
	}
	if (s->sub_state == AUTH_STEP_PLAIN) {
		auth_plain(s, dst, len, ev);
		return;
	}
	if (len == 0 || len > SMTP_SERVER_AUTH_FIELD_SIZE_MAX || memchr(dst, 0, len) != NULL) {
		auth_wipe(s);
		s->state = ST_COMMAND;
		reply_fail(s, "501 5.5.2 Error: malformed LOGIN response\r\n");
		return;
	}
	s->auth_buf_len += (uint32_t)len;
	if (s->sub_state == AUTH_STEP_LOGIN_USER) {
		s->auth.authcid = dst;
		s->auth.authcid_len = len;
		s->sub_state = AUTH_STEP_LOGIN_PASSWORD;
		s->state = ST_AUTH;
		(void)out_printf(s, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
		return;
	}
	s->auth.mechanism = SMTP_SERVER_AUTH_LOGIN;
	s->auth.authzid = s->auth_buf;
	s->auth.authzid_len = 0;
	s->auth.password = dst;
	s->auth.password_len = len;
	auth_emit(s, ev);
}

static void
cmd_auth(struct smtp_server *s, const uint8_t *a, size_t n, struct smtp_server_event *ev)
{
	const uint8_t *sp = memchr(a, ' ', n);
	size_t mn = sp != NULL ? (size_t)(sp - a) : n;

	s->sync_is_pending = true;
	if (tls_refuse(s))
		return;
	if (!s->config.auth_is_offered ||
	    (!auth_is_available(s) && !s->config.starttls_is_offered)) {
		reply_fail(s, "503 5.5.1 Error: authentication not enabled\r\n");
		return;
	}
	if (!auth_is_available(s)) {
		/* RFC 4954 6: the mechanism needs the channel encrypted */
		reply_fail(s, "538 5.7.11 Encryption required for requested authentication "
			      "mechanism\r\n");
		return;
	}
	if (!s->is_esmtp) {
		reply_fail(s, "503 5.5.1 Error: send EHLO first\r\n");
		return;
	}
	if (s->is_authenticated) {
		reply_fail(s, "503 5.5.1 Error: already authenticated\r\n");
		return;
	}
	if (s->has_mail) {
		reply_fail(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
		return;
	}
	auth_wipe(s);
	if (equals_word(a, mn, "PLAIN"))
		s->sub_state = AUTH_STEP_PLAIN;
	else if (equals_word(a, mn, "LOGIN"))
		s->sub_state = AUTH_STEP_LOGIN_USER;
	else {
		reply_fail(s, "504 5.5.4 Error: unsupported authentication mechanism\r\n");
		return;
	}
	if (sp != NULL) {
		auth_response(s, sp + 1, n - mn - 1, ev);
		return;
	}
	s->state = ST_AUTH;
	(void)out_printf(s, "%s\r\n", s->sub_state == AUTH_STEP_PLAIN ? "334 " : "334 VXNlcm5hbWU6");
}

/* ---- STARTTLS (RFC 3207) ------------------------------------------- */

static void
cmd_starttls(struct smtp_server *s, size_t an, struct smtp_server_event *ev)
{
	if (!s->config.starttls_is_offered) {
		reply_fail(s, "502 5.5.1 Error: command not implemented\r\n");
		return;
	}
	if (s->is_tls) {
		reply_fail(s, "503 5.5.1 Error: TLS already active\r\n");
		return;
	}
	if (an != 0) {
		reply_fail(s, "501 5.5.4 Syntax: STARTTLS\r\n");
		return;
	}
	if (s->has_mail) {
		reply_fail(s, "503 5.5.1 Error: MAIL transaction in progress\r\n");
		return;
	}
	(void)out_printf(s, "220 2.0.0 Ready to start TLS\r\n");
	s->state = ST_TLS_WAIT; /* from here on nothing is parsed until TLS */
	ev->type = SMTP_SERVER_EV_STARTTLS;
}

/* ---- command lines -------------------------------------------------- */

static void
command(struct smtp_server *s, const uint8_t *p, size_t n, struct smtp_server_event *ev)
{
	const uint8_t *sp = memchr(p, ' ', n);
	size_t vn = sp != NULL ? (size_t)(sp - p) : n;
	const uint8_t *a = sp != NULL ? sp + 1 : p + n;
	size_t an = sp != NULL ? n - vn - 1 : 0;

	if (s->backpressure == SMTP_SERVER_BACKPRESSURE_CLOSE) {
		(void)out_printf(s, "421 4.3.2 %s Service not available, closing channel\r\n",
				 s->hostname);
		close_session(s);
		return;
	}
	if (equals_word(p, vn, "EHLO") || equals_word(p, vn, "HELO"))
		cmd_ehlo(s, a, an, to_upper(p[0]) == 'E');
	else if (equals_word(p, vn, "MAIL"))
		cmd_mail(s, a, an);
	else if (equals_word(p, vn, "RCPT"))
		cmd_rcpt(s, a, an);
	else if (equals_word(p, vn, "DATA"))
		cmd_data(s, sp != NULL ? n - vn : 0, ev);
	else if (equals_word(p, vn, "BDAT"))
		cmd_bdat(s, a, an, ev);
	else if (equals_word(p, vn, "AUTH"))
		cmd_auth(s, a, an, ev);
	else if (equals_word(p, vn, "STARTTLS"))
		cmd_starttls(s, sp != NULL ? n - vn : 0, ev);
	else if (n == 0)
		reply_fail(s, "500 5.5.2 Error: bad syntax\r\n");
	else
		cmd_simple(s, p, vn, an);
}

/* The longest acceptable line, CRLF included, for the line in s->line. */
static size_t
line_limit(const struct smtp_server *s)
{
	size_t limit = s->config.command_line_max;

	if ((s->state == ST_AUTH ||
	     starts_with(s->line, s->line_len < sizeof(s->line) ? s->line_len : sizeof(s->line),
			 "AUTH ")) &&
	    limit < SMTP_SERVER_AUTH_LINE_MAX)
		limit = SMTP_SERVER_AUTH_LINE_MAX;
	return limit;
}

/* A whole line is in s->line (its LF consumed): act on it. */
static void
line_process(struct smtp_server *s, struct smtp_server_event *ev)
{
	size_t n = s->line_len;
	bool crlf = s->line_cr_seen;
	bool bad = false;

	if ((size_t)s->line_len + 1u > line_limit(s)) {
		if (s->state == ST_AUTH) {
			auth_wipe(s);
			s->state = ST_COMMAND;
		}
		reply_fail(s, "500 5.5.6 Error: line too long\r\n");
		return;
	}
	ENG_ASSERT(n <= sizeof(s->line));
	if (crlf)
		n--;
	for (size_t i = 0; i < n; i++)
		bad = bad || s->line[i] == '\r' || s->line[i] == 0 ||
		      (s->line[i] < 32 && s->line[i] != '\t') || s->line[i] == 127;
	if (!crlf || bad) {
		if (s->state == ST_AUTH) {
			auth_wipe(s);
			s->state = ST_COMMAND;
		}
		reply_fail(s, "501 5.5.2 Error: %s in command line\r\n",
				  !crlf ? "bare <LF>" : "invalid character");
		return;
	}
	if (s->state == ST_AUTH)
		auth_response(s, s->line, n, ev);
	else
		command(s, s->line, n, ev);
}

/* Command-line mode: gather bytes up to LF, then process the line. */
static size_t
line_feed(struct smtp_server *s, const uint8_t *p, size_t n, struct smtp_server_event *ev)
{
	const uint8_t *lf = memchr(p, '\n', n);
	size_t take = lf != NULL ? (size_t)(lf - p) : n;

	if (take > 0) {
		size_t room = sizeof(s->line) > s->line_len ? sizeof(s->line) - s->line_len : 0;
		size_t copy = take < room ? take : room;

		/* line_len keeps counting past the buffer (the line is refused
		 * as too long at its LF): form the pointer only when in bounds. */
		if (copy > 0)
			memcpy(s->line + s->line_len, p, copy);
		s->line_len = (take > UINT32_MAX - s->line_len) ? UINT32_MAX
								 : s->line_len + (uint32_t)take;
		s->line_cr_seen = p[take - 1] == '\r';
	}
	if (lf == NULL)
		return take;
	if (out_free(s) < SMTP_SERVER_REPLY_SIZE_MAX)
		return take; /* BLOCKED at the LF until the output drains */
	line_process(s, ev);
	s->line_len = 0;
	s->line_cr_seen = false;
	return take + 1;
}

/* ---- DATA ----------------------------------------------------------- */

/* One content byte of a body line (not CR or LF). */
static void
body_content_byte(struct smtp_server *s, uint8_t c)
{
	if (c == 0)
		body_error_set(s, BODY_NUL);
	if (s->text_line_len < UINT32_MAX)
		s->text_line_len++;
	s->body_size++;
	if ((uint64_t)s->text_line_len + 2u > s->config.text_line_max)
		body_error_set(s, BODY_LINE);
	if (s->body_size > s->config.message_size_max)
		body_error_set(s, BODY_SIZE);
}

/* Advance the DATA scanner by one byte. True at the terminator's LF. */
static bool
data_step(struct smtp_server *s, uint8_t c)
{
	switch ((enum data_scan_state)s->data_state) {
	case SCAN_START:
		s->text_line_len = 0;
		if (c == '.') {
			s->data_state = SCAN_DOT;
			return false;
		}
		break;
	case SCAN_DOT:
		if (c == '\r') {
			s->data_state = SCAN_DOT_CR;
			return false;
		}
		break; /* the dot is removed by the receiver: not content */
	case SCAN_DOT_CR:
		if (c == '\n')
			return true;
		body_error_set(s, BODY_BARE);
		s->text_line_len = 0;
		break;
	case SCAN_CR:
		if (c == '\n') {
			s->body_size += 2;
			s->data_state = SCAN_START;
			return false;
		}
		body_error_set(s, BODY_BARE); /* the CR was text after all */
		break;
	case SCAN_TEXT:
		break;
	}
	if (c == '\r') {
		s->data_state = SCAN_CR;
		return false;
	}
	if (c == '\n')
		body_error_set(s, BODY_BARE); /* never a line end */
	body_content_byte(s, c);
	s->data_state = SCAN_TEXT;
	return false;
}

/* Fast path inside a valid line: the run of plain bytes (no CR, LF, NUL)
 * at p, stopping where a limit would be crossed so that data_step sees
 * that byte. Same result as data_step byte by byte. */
static size_t
data_text_run(struct smtp_server *s, const uint8_t *p, size_t n)
{
	uint64_t line_room = s->config.text_line_max - 2u - (uint64_t)s->text_line_len;
	uint64_t size_room = s->config.message_size_max - s->body_size;
	size_t max = n, run = 0;

	ENG_ASSERT(s->data_state == SCAN_TEXT && s->body_error == BODY_OK);
	ENG_ASSERT((uint64_t)s->text_line_len + 2u <= s->config.text_line_max);
	ENG_ASSERT(s->body_size <= s->config.message_size_max);
	if (line_room < max)
		max = (size_t)line_room;
	if (size_room < max)
		max = (size_t)size_room;
	while (run < max && p[run] != '\r' && p[run] != '\n' && p[run] != 0)
		run++;
	s->text_line_len += (uint32_t)run;
	s->body_size += run;
	return run;
}

static size_t
data_feed(struct smtp_server *s, const uint8_t *p, size_t n, struct smtp_server_event *ev)
{
	size_t i = 0;
	bool ended = false;
	uint8_t error_before = s->body_error;

	while (i < n && !ended) {
		if (s->data_state == SCAN_TEXT && s->body_error == BODY_OK) {
			i += data_text_run(s, p + i, n - i);
			if (i == n)
				break;
		}
		ended = data_step(s, p[i]);
		i++;
		if (s->body_error != error_before)
			break; /* report DATA_ABORT now */
	}
	if (ended) {
		s->state = ST_COMMAND;
		s->data_state = SCAN_START;
		if (s->body_error != BODY_OK) {
			body_error_finish(s);
			return i;
		}
		s->message_is_due = true;
	}
	if (s->body_error == BODY_OK) {
		ev->type = SMTP_SERVER_EV_BODY;
		ev->ptr = p;
		ev->len = i;
		s->body_wire_size += i;
	}
	return i;
}

/* ---- BDAT ----------------------------------------------------------- */

/* Stuff one raw chunk byte into s->stuff (RFC 5321 4.5.2 on the way in). */
static void
bdat_step(struct smtp_server *s, uint8_t c)
{
	if (s->data_state == SCAN_CR) {
		if (c == '\n') {
			s->stuff[s->stuff_len++] = c;
			s->body_size++;
			s->data_state = SCAN_START;
			return;
		}
		body_error_set(s, BODY_BARE);
		return;
	}
	if (s->data_state == SCAN_START) {
		s->text_line_len = 0;
		if (c == '.')
			s->stuff[s->stuff_len++] = '.';
	}
	if (c == '\n') {
		body_error_set(s, BODY_BARE);
		return;
	}
	s->stuff[s->stuff_len++] = c;
	if (c == '\r') {
		s->body_size++;
		s->data_state = SCAN_CR;
		return;
	}
	body_content_byte(s, c);
	s->data_state = SCAN_TEXT;
}

/* LAST chunk done: close the last line, add the terminator. */
static void
bdat_finish_body(struct smtp_server *s)
{
	ENG_ASSERT(s->stuff_len + BDAT_RESERVE <= sizeof(s->stuff));
	if (s->data_state == SCAN_CR) {
		body_error_set(s, BODY_BARE);
		return;
	}
	if (s->data_state == SCAN_TEXT) {
		memcpy(s->stuff + s->stuff_len, "\r\n", 2);
		s->stuff_len += 2;
		s->body_size += 2;
	}
	memcpy(s->stuff + s->stuff_len, ".\r\n", 3);
	s->stuff_len += 3;
}

/* The chunk's bytes are all read: reply or complete the message. */
static void
bdat_chunk_end(struct smtp_server *s, struct smtp_server_event *ev)
{
	bool ok;

	s->state = ST_COMMAND;
	if (s->body_error == BODY_BDAT_SEQ) {
		s->body_error = BODY_OK;
		reply_fail(s, "%.*s", (int)s->deferred_reply_len, s->deferred_reply);
		s->deferred_reply_len = 0;
		return;
	}
	if (s->bdat_is_last && s->body_error == BODY_OK)
		bdat_finish_body(s);
	ok = s->body_error == BODY_OK;
	if (ok && s->stuff_len > 0) {
		ev->type = SMTP_SERVER_EV_BODY;
		ev->ptr = s->stuff;
		ev->len = s->stuff_len;
		s->body_wire_size += s->stuff_len;
	}
	if (s->bdat_is_last) {
		if (ok)
			s->message_is_due = true;
		else
			body_error_finish(s);
		return;
	}
	if (ok)
		(void)out_printf(s, "250 2.0.0 Ok: %llu octets received\r\n",
				 (unsigned long long)s->chunk_size);
	else
		(void)out_printf(s, "%s", body_error_reply(s));
}

static size_t
bdat_feed(struct smtp_server *s, const uint8_t *p, size_t n, struct smtp_server_event *ev)
{
	size_t take = n < s->chunk_remaining ? n : (size_t)s->chunk_remaining;
	size_t i = 0;

	ENG_ASSERT(take > 0);
	if (s->body_error != BODY_OK) {
		i = take; /* discarded: the reply says why */
	} else {
		while (i < take && s->body_error == BODY_OK &&
		       s->stuff_len + BDAT_RESERVE + 2u <= sizeof(s->stuff)) {
			bdat_step(s, p[i]);
			i++;
		}
	}
	s->chunk_remaining -= i;
	if (s->chunk_remaining == 0) {
		bdat_chunk_end(s, ev);
		return i;
	}
	if (s->body_error == BODY_OK && s->stuff_len > 0 &&
	    (i == n || s->stuff_len + BDAT_RESERVE + 2u > sizeof(s->stuff))) {
		ev->type = SMTP_SERVER_EV_BODY;
		ev->ptr = s->stuff;
		ev->len = s->stuff_len;
		s->body_wire_size += s->stuff_len;
	}
	return i;
}

/* ---- feed ----------------------------------------------------------- */

/* Events owed from earlier calls, and the blocked/closed states. */
static bool
pending_event(struct smtp_server *s, struct smtp_server_event *ev)
{
	if (s->abort_is_due) {
		s->abort_is_due = false;
		s->data_started = false;
		ev->type = SMTP_SERVER_EV_DATA_ABORT;
	} else if (s->message_is_due) {
		s->message_is_due = false;
		s->data_started = false;
		s->message_pending = true;
		ev->type = SMTP_SERVER_EV_MESSAGE;
	} else if (s->is_closed) {
		ev->type = SMTP_SERVER_EV_CLOSE;
	} else if (s->message_pending || s->auth_pending) {
		ev->type = SMTP_SERVER_EV_BLOCKED;
	} else {
		return false;
	}
	return true;
}

size_t
smtp_server_feed(struct smtp_server *s, const uint8_t *data, size_t len,
		 struct smtp_server_event *ev)
{
	size_t used = 0;

	ENG_ASSERT(s != NULL && ev != NULL);
	ENG_ASSERT(data != NULL || len == 0);
	memset(ev, 0, sizeof(*ev));
	s->stuff_len = 0; /* the previous BODY span has expired */
	if (!s->is_started && len > 0 && !s->is_closed)
		sync_error(s); /* early talker */
	/* Every pass consumes input or ends the call, but for a zero-length
	 * BDAT chunk end, which leaves ST_BDAT: at most 2 * len + 2 passes. */
	for (size_t pass = 0;; pass++) {
		size_t n;

		ENG_ASSERT(pass <= 2u * len + 2u);
		if (pending_event(s, ev))
			return used;
		if (s->state == ST_BDAT && s->chunk_remaining == 0) {
			bdat_chunk_end(s, ev);
			if (ev->type != SMTP_SERVER_EV_NONE)
				return used;
			continue;
		}
		if (used == len || !s->is_started)
			break;
		if (s->state == ST_TLS_WAIT) {
			used = len; /* plaintext behind STARTTLS: dropped, never parsed */
			break;
		}
		if (s->sync_is_pending) {
			sync_error(s);
			continue;
		}
		if (s->state == ST_DATA)
			n = data_feed(s, data + used, len - used, ev);
		else if (s->state == ST_BDAT)
			n = bdat_feed(s, data + used, len - used, ev);
		else
			n = line_feed(s, data + used, len - used, ev);
		used += n;
		if (ev->type != SMTP_SERVER_EV_NONE)
			return used;
		if (n == 0) {
			ev->type = SMTP_SERVER_EV_BLOCKED; /* output full */
			return used;
		}
	}
	ev->type = SMTP_SERVER_EV_NONE;
	return used;
}

/* ---- public API ----------------------------------------------------- */

void
smtp_server_config_default(struct smtp_server_config *config)
{
	ENG_ASSERT(config != NULL);
	memset(config, 0, sizeof(*config));
	config->hostname = "localhost";
	config->hostname_len = strlen("localhost");
	config->command_line_max = SMTP_SERVER_COMMAND_LINE_MAX_DEFAULT;
	config->text_line_max = SMTP_SERVER_TEXT_LINE_MAX_DEFAULT;
	config->message_size_max = SMTP_SERVER_MESSAGE_SIZE_MAX_DEFAULT;
	config->recipients_max = SMTP_SERVER_RECIPIENTS_MAX_DEFAULT;
	config->errors_max = SMTP_SERVER_ERRORS_MAX_DEFAULT;
	config->bare_lf_policy = SMTP_SERVER_BARE_LF_REJECT;
}

void
smtp_server_init(struct smtp_server *s, const struct smtp_server_config *config)
{
	ENG_ASSERT(s != NULL && config != NULL);
	ENG_ASSERT(config->hostname != NULL);
	ENG_ASSERT(config->hostname_len >= 1 && config->hostname_len < SMTP_SERVER_HOSTNAME_SIZE_MAX);
	for (size_t i = 0; i < config->hostname_len; i++)
		ENG_ASSERT(config->hostname[i] > 32 && config->hostname[i] < 127);
	ENG_ASSERT(config->bare_lf_policy == SMTP_SERVER_BARE_LF_REJECT ||
		   config->bare_lf_policy == SMTP_SERVER_BARE_LF_CLOSE);
	memset(s, 0, sizeof(*s));
	s->config = *config;
	if (s->config.command_line_max == 0)
		s->config.command_line_max = SMTP_SERVER_COMMAND_LINE_MAX_DEFAULT;
	if (s->config.text_line_max == 0)
		s->config.text_line_max = SMTP_SERVER_TEXT_LINE_MAX_DEFAULT;
	if (s->config.message_size_max == 0)
		s->config.message_size_max = SMTP_SERVER_MESSAGE_SIZE_MAX_DEFAULT;
	if (s->config.recipients_max == 0)
		s->config.recipients_max = SMTP_SERVER_RECIPIENTS_MAX_DEFAULT;
	if (s->config.errors_max == 0)
		s->config.errors_max = SMTP_SERVER_ERRORS_MAX_DEFAULT;
	ENG_ASSERT(s->config.command_line_max >= 64u &&
		   s->config.command_line_max <= SMTP_SERVER_COMMAND_LINE_MAX_MAX);
	ENG_ASSERT(s->config.text_line_max >= 3u);
	ENG_ASSERT(s->config.recipients_max <= UINT32_MAX / SMTP_SERVER_ADDRESS_SIZE_MAX);
	memcpy(s->hostname, config->hostname, config->hostname_len);
	s->hostname[config->hostname_len] = '\0';
	s->config.hostname = s->hostname;
}

void
smtp_server_fini(struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	s->data_started = false;
	transaction_reset(s);
	s->abort_is_due = false;
	auth_wipe(s);
}

void
smtp_server_start(struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	ENG_ASSERT(!s->is_started);
	s->is_started = true;
	if (s->is_closed)
		return; /* early talker already refused */
	(void)out_printf(s, "220 %s ESMTP ringmail\r\n", s->hostname);
	s->sync_is_pending = true;
}

const uint8_t *
smtp_server_output(struct smtp_server *s, size_t *len)
{
	ENG_ASSERT(s != NULL && len != NULL);
	ENG_ASSERT(s->out_head <= s->out_used);
	*len = s->out_used - s->out_head;
	s->sync_is_pending = false; /* handed over: the client may see it */
	return *len > 0 ? s->out + s->out_head : NULL;
}

void
smtp_server_output_consumed(struct smtp_server *s, size_t n)
{
	ENG_ASSERT(s != NULL);
	ENG_ASSERT(n <= s->out_used - s->out_head);
	s->out_head += (uint32_t)n;
	if (s->out_head == s->out_used) {
		s->out_head = 0;
		s->out_used = 0;
	}
}

void
smtp_server_message_result(struct smtp_server *s, bool ok, const char *queue_id,
			   size_t queue_id_len)
{
	ENG_ASSERT(s != NULL && s->message_pending);
	if (!ok) {
		smtp_server_message_reply(s, 451, "4.3.0 Error: queue file write error",
					  strlen("4.3.0 Error: queue file write error"));
		return;
	}
	ENG_ASSERT(queue_id != NULL && queue_id_len >= 1 && queue_id_len <= 64);
	for (size_t i = 0; i < queue_id_len; i++)
		ENG_ASSERT(queue_id[i] > 32 && queue_id[i] < 127);
	s->message_pending = false;
	s->messages_count++;
	if (!s->is_closed) /* closed by a timeout meanwhile: no late reply */
		(void)out_printf(s, "250 2.0.0 Ok: queued as %.*s\r\n", (int)queue_id_len,
				 queue_id);
	transaction_reset(s);
}

void
smtp_server_message_reply(struct smtp_server *s, uint16_t code, const char *text,
			  size_t text_len)
{
	char clean[201];
	size_t n = text_len < 200 ? text_len : 200;

	ENG_ASSERT(s != NULL && s->message_pending);
	ENG_ASSERT(code >= 400 && code <= 599);
	ENG_ASSERT(text != NULL || text_len == 0);
	for (size_t i = 0; i < n; i++)
		clean[i] = (text[i] < 32 || text[i] == 127) ? '?' : text[i];
	clean[n] = '\0';
	s->message_pending = false;
	if (!s->is_closed)
		(void)out_printf(s, "%u %s\r\n", (unsigned)code, clean);
	transaction_reset(s);
}

void
smtp_server_auth_result(struct smtp_server *s, bool ok)
{
	ENG_ASSERT(s != NULL && s->auth_pending);
	s->auth_pending = false;
	auth_wipe(s);
	if (s->is_closed)
		return;
	s->sync_is_pending = true; /* RFC 4954 4: no pipelining after AUTH */
	if (ok) {
		s->is_authenticated = true;
		(void)out_printf(s, "235 2.7.0 Authentication successful\r\n");
		return;
	}
	reply_fail(s, "535 5.7.8 Error: authentication failed\r\n");
}

void
smtp_server_auth_tempfail(struct smtp_server *s)
{
	ENG_ASSERT(s != NULL && s->auth_pending);
	s->auth_pending = false;
	auth_wipe(s);
	if (s->is_closed)
		return;
	s->sync_is_pending = true; /* as any reply to AUTH (RFC 4954 4) */
	(void)out_printf(s, "454 4.7.0 Temporary authentication failure\r\n");
}

void
smtp_server_tls_started(struct smtp_server *s)
{
	ENG_ASSERT(s != NULL && s->state == ST_TLS_WAIT && !s->is_tls);
	s->is_tls = true;
	s->state = ST_COMMAND;
	/* RFC 3207 4.2: discard any knowledge obtained from the client */
	transaction_reset(s);
	s->has_helo = false;
	s->is_esmtp = false;
	s->helo_name_len = 0;
	s->is_authenticated = false;
	s->line_len = 0;
	s->line_cr_seen = false;
	s->sync_is_pending = false; /* the client speaks first: EHLO */
}

void
smtp_server_set_backpressure(struct smtp_server *s, enum smtp_server_backpressure bp)
{
	ENG_ASSERT(s != NULL);
	ENG_ASSERT(bp == SMTP_SERVER_BACKPRESSURE_NONE || bp == SMTP_SERVER_BACKPRESSURE_TEMPFAIL ||
		   bp == SMTP_SERVER_BACKPRESSURE_CLOSE);
	s->backpressure = bp;
}

enum smtp_server_timeout_class
smtp_server_timeout_class(const struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	if (!s->is_started || s->is_closed || s->message_pending || s->auth_pending ||
	    s->message_is_due)
		return SMTP_SERVER_TIMEOUT_NONE;
	if (s->state == ST_DATA || s->state == ST_BDAT)
		return SMTP_SERVER_TIMEOUT_DATA;
	return SMTP_SERVER_TIMEOUT_COMMAND;
}

void
smtp_server_timeout(struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	if (s->is_closed)
		return;
	if (s->state == ST_TLS_WAIT) {
		close_session(s); /* the handshake timed out: no plaintext reply */
		return;
	}
	(void)out_printf(s, "421 4.4.2 %s Error: timeout exceeded\r\n", s->hostname);
	close_session(s);
}

bool
smtp_server_is_closed(const struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	return s->is_closed;
}

const char *
smtp_server_sender(const struct smtp_server *s, size_t *len)
{
	ENG_ASSERT(s != NULL && len != NULL);
	*len = s->sender_len;
	return s->sender;
}

uint32_t
smtp_server_recipient_count(const struct smtp_server *s)
{
	ENG_ASSERT(s != NULL);
	return s->rcpts_count;
}

const char *
smtp_server_recipient(const struct smtp_server *s, uint32_t index, size_t *len)
{
	ENG_ASSERT(s != NULL && len != NULL);
	ENG_ASSERT(index < s->rcpts_count);
	*len = s->rcpts[index].len;
	return s->rcpt_arena + s->rcpts[index].offset;
}

const char *
smtp_server_helo_name(const struct smtp_server *s, size_t *len)
{
	ENG_ASSERT(s != NULL && len != NULL);
	*len = s->helo_name_len;
	return s->helo_name;
}

bool
smtp_server_is_esmtp(const struct smtp_server *s)
{
	return s->is_esmtp;
}

bool
smtp_server_is_authenticated(const struct smtp_server *s)
{
	return s->is_authenticated;
}

bool
smtp_server_is_tls(const struct smtp_server *s)
{
	return s->is_tls;
}

bool
smtp_server_body_is_8bitmime(const struct smtp_server *s)
{
	return s->body_8bitmime;
}

bool
smtp_server_is_smtputf8(const struct smtp_server *s)
{
	return s->smtputf8;
}

uint64_t
smtp_server_size_declared(const struct smtp_server *s)
{
	return s->size_declared;
}

uint64_t
smtp_server_body_size(const struct smtp_server *s)
{
	return s->body_wire_size;
}
