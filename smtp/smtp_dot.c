/*
 * smtp_dot.c - wire-form body helpers and the end-of-DATA detector
 * (smtp_dot.h).
 *
 * Lines are found with memchr on explicit lengths, never with NUL
 * terminators. Every output write is checked against the caller's size,
 * which the caller sized from smtp_dot_stuffed_size_max (asserted).
 *
 * Invariants:
 * - A line is "content CRLF" where content holds no CR and no LF.
 * - stuff writes at most smtp_dot_stuffed_size_max(raw_len) bytes; unstuff
 *   writes at most wire_len - 3 bytes.
 * - The detector ends the data only on CRLF "." CRLF, where the first CRLF
 *   may be the end of the DATA command (the initial state).
 *
 * References: RFC 5321 4.5.2 (transparency), 4.1.1.4 (end of data),
 * 2.3.8 (no bare CR or LF); reliability.md 2.1 and 2.8.
 */
#include "smtp_dot.h"

#include <string.h>

#include "../engine/eng_common.h"

#define TERMINATOR ".\r\n"
#define TERMINATOR_SIZE 3u

enum detector_state {
	DETECTOR_LINE_START = 0, /* after CRLF (or at the start) */
	DETECTOR_TEXT,		 /* inside a line */
	DETECTOR_CR,		 /* CR inside a line: LF must follow */
	DETECTOR_DOT,		 /* "." at the start of a line */
	DETECTOR_DOT_CR,	 /* ".\r" at the start of a line */
	DETECTOR_ENDED,		 /* terminator seen */
};

const char *
smtp_dot_reason_name(enum smtp_dot_reason reason)
{
	static const char *const names[SMTP_DOT_REASON_COUNT] = {
		[SMTP_DOT_VALID] = "valid",
		[SMTP_DOT_BARE_CR] = "bare CR",
		[SMTP_DOT_BARE_LF] = "bare LF",
		[SMTP_DOT_EARLY_END] = "end-of-data line before the end",
		[SMTP_DOT_NOT_TERMINATED] = "not terminated by CRLF.CRLF",
	};

	ENG_ASSERT(reason < SMTP_DOT_REASON_COUNT);
	ENG_ASSERT(names[reason] != NULL);
	return names[reason];
}

/*
 * The line starting at pos: its content end (*content_end, the CR) and the
 * start of the next line (*next). Returns SMTP_DOT_VALID, a bare CR/LF
 * (with *bad at the byte), or SMTP_DOT_NOT_TERMINATED when the line has no
 * LF before len (*content_end = len).
 */
static enum smtp_dot_reason
line_split(const uint8_t *buf, size_t len, size_t pos, size_t *content_end, size_t *next,
	   size_t *bad)
{
	const uint8_t *lf;
	const uint8_t *cr;
	size_t lf_index;

	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(pos < len);
	lf = memchr(buf + pos, '\n', len - pos);
	lf_index = lf != NULL ? (size_t)(lf - buf) : len;
	if (lf != NULL && (lf_index == pos || buf[lf_index - 1] != '\r')) {
		*bad = lf_index;
		return SMTP_DOT_BARE_LF;
	}
	*content_end = lf != NULL ? lf_index - 1 : len;
	cr = memchr(buf + pos, '\r', *content_end - pos);
	if (cr != NULL) {
		*bad = (size_t)(cr - buf);
		return SMTP_DOT_BARE_CR;
	}
	*next = lf_index + 1;
	return lf != NULL ? SMTP_DOT_VALID : SMTP_DOT_NOT_TERMINATED;
}

bool
smtp_dot_has_8bit(const uint8_t *p, size_t len)
{
	/* Eight bytes at a time, OR-ed over 64-byte blocks (one test per
	 * block: a byte loop with an early exit does not vectorise). */
	const uint64_t high = 0x8080808080808080u;
	size_t i = 0;
	for (; i + 64u <= len; i += 64u) {
		uint64_t w[8];
		memcpy(w, p + i, sizeof(w));
		if (((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) & high) != 0)
			return true;
	}
	for (; i < len; i++) {
		if (p[i] >= 0x80u)
			return true;
	}
	return false;
}

enum smtp_dot_reason
smtp_dot_validate(const uint8_t *wire, size_t len, size_t *offset)
{
	size_t pos = 0;
	size_t bad = len;

	ENG_ASSERT(wire != NULL || len == 0);
	ENG_ASSERT(len < SIZE_MAX);
	while (pos < len) {
		size_t content_end = len;
		size_t next = len;
		enum smtp_dot_reason reason = line_split(wire, len, pos, &content_end, &next, &bad);

		if (reason != SMTP_DOT_VALID) {
			if (offset != NULL)
				*offset = reason == SMTP_DOT_NOT_TERMINATED ? len : bad;
			return reason;
		}
		ENG_ASSERT(next > pos);
		if (content_end - pos == 1 && wire[pos] == '.') {
			if (offset != NULL)
				*offset = next == len ? 0 : pos;
			return next == len ? SMTP_DOT_VALID : SMTP_DOT_EARLY_END;
		}
		pos = next;
	}
	if (offset != NULL)
		*offset = len;
	return SMTP_DOT_NOT_TERMINATED;
}

size_t
smtp_dot_stuffed_size_max(size_t raw_len)
{
	/* A stuffed line is at least ".\r\n" (3 bytes) except an unterminated
	 * last line: at most raw_len / 3 + 1 dots, plus CRLF, plus ".\r\n". */
	ENG_ASSERT(raw_len <= SIZE_MAX / 2);
	ENG_ASSERT(TERMINATOR_SIZE == 3u);
	return raw_len + raw_len / 3u + 1u + 2u + TERMINATOR_SIZE;
}

static void
out_write(uint8_t *out, size_t out_size, size_t *out_len, const void *ptr, size_t size)
{
	ENG_ASSERT(*out_len <= out_size);
	ENG_ASSERT(size <= out_size - *out_len);
	if (size > 0)
		memcpy(out + *out_len, ptr, size);
	*out_len += size;
}

enum smtp_dot_reason
smtp_dot_stuff(const uint8_t *raw, size_t raw_len, uint8_t *out, size_t out_size,
	       size_t *out_len)
{
	size_t pos = 0;

	ENG_ASSERT(raw != NULL || raw_len == 0);
	ENG_ASSERT(out != NULL && out_len != NULL);
	ENG_ASSERT(out_size >= smtp_dot_stuffed_size_max(raw_len));
	*out_len = 0;
	while (pos < raw_len) {
		size_t content_end = raw_len;
		size_t next = raw_len;
		size_t bad = raw_len;
		enum smtp_dot_reason reason = line_split(raw, raw_len, pos, &content_end, &next,
							 &bad);

		if (reason == SMTP_DOT_BARE_CR || reason == SMTP_DOT_BARE_LF)
			return reason;
		if (raw[pos] == '.')
			out_write(out, out_size, out_len, ".", 1);
		out_write(out, out_size, out_len, raw + pos, content_end - pos);
		out_write(out, out_size, out_len, "\r\n", 2);
		pos = reason == SMTP_DOT_NOT_TERMINATED ? raw_len : next;
	}
	out_write(out, out_size, out_len, TERMINATOR, TERMINATOR_SIZE);
	ENG_DEBUG_ASSERT(smtp_dot_validate(out, *out_len, NULL) == SMTP_DOT_VALID);
	return SMTP_DOT_VALID;
}

enum smtp_dot_reason
smtp_dot_unstuff(const uint8_t *wire, size_t wire_len, uint8_t *out, size_t out_size,
		 size_t *out_len)
{
	enum smtp_dot_reason reason;
	size_t pos = 0;

	ENG_ASSERT(out != NULL && out_len != NULL);
	ENG_ASSERT(out_size >= wire_len);
	*out_len = 0;
	reason = smtp_dot_validate(wire, wire_len, NULL);
	if (reason != SMTP_DOT_VALID)
		return reason;
	ENG_ASSERT(wire_len >= TERMINATOR_SIZE);
	while (pos < wire_len - TERMINATOR_SIZE) {
		const uint8_t *lf = memchr(wire + pos, '\n', wire_len - pos);
		size_t next;

		ENG_ASSERT(lf != NULL);
		next = (size_t)(lf - wire) + 1u;
		if (wire[pos] == '.')
			pos++;
		out_write(out, out_size, out_len, wire + pos, next - pos);
		pos = next;
	}
	ENG_ASSERT(pos == wire_len - TERMINATOR_SIZE);
	return SMTP_DOT_VALID;
}

void
smtp_dot_detector_init(struct smtp_dot_detector *detector)
{
	ENG_ASSERT(detector != NULL);
	memset(detector, 0, sizeof(*detector));
	detector->state = DETECTOR_LINE_START;
	ENG_ASSERT(!detector->bare_cr_seen && !detector->bare_lf_seen);
}

/* Next state after byte c. CR and LF only count as a pair. */
static uint8_t
detector_step(struct smtp_dot_detector *detector, uint8_t c)
{
	uint8_t state = detector->state;

	ENG_ASSERT(state < DETECTOR_ENDED);
	if (c == '\n') {
		if (state == DETECTOR_CR)
			return DETECTOR_LINE_START;
		if (state == DETECTOR_DOT_CR)
			return DETECTOR_ENDED;
		detector->bare_lf_seen = true;
		return DETECTOR_TEXT;
	}
	if (state == DETECTOR_CR || state == DETECTOR_DOT_CR)
		detector->bare_cr_seen = true; /* the previous CR had no LF */
	if (c == '\r')
		return state == DETECTOR_DOT ? DETECTOR_DOT_CR : DETECTOR_CR;
	if (c == '.' && state == DETECTOR_LINE_START)
		return DETECTOR_DOT;
	ENG_ASSERT(c != '\r' && c != '\n');
	return DETECTOR_TEXT;
}

/* Index of the first CR or LF in ptr[from, len), or len. Inside a line
 * every other byte leaves the state at TEXT, so the scan may jump there;
 * two vectorised memchr passes beat a per-byte step (a sink's whole body
 * goes through here). */
static size_t
detector_skip_text(const uint8_t *ptr, size_t from, size_t len)
{
	ENG_ASSERT(from <= len);
	const uint8_t *cr = memchr(ptr + from, '\r', len - from);
	size_t end = cr != NULL ? (size_t)(cr - ptr) : len;
	const uint8_t *lf = memchr(ptr + from, '\n', end - from);
	return lf != NULL ? (size_t)(lf - ptr) : end;
}

enum smtp_dot_scan
smtp_dot_detector_scan(struct smtp_dot_detector *detector, const uint8_t *ptr, size_t len,
		       size_t *consumed)
{
	size_t index;

	ENG_ASSERT(detector != NULL && consumed != NULL);
	ENG_ASSERT(detector->state != DETECTOR_ENDED);
	ENG_ASSERT(ptr != NULL || len == 0);
	for (index = 0; index < len; index++) {
		if (detector->state == DETECTOR_TEXT) {
			index = detector_skip_text(ptr, index, len);
			if (index == len)
				break;
		}
		detector->state = detector_step(detector, ptr[index]);
		if (detector->state == DETECTOR_ENDED) {
			*consumed = index + 1;
			detector->data_size += index + 1;
			return SMTP_DOT_SCAN_END;
		}
	}
	*consumed = len;
	detector->data_size += len;
	return SMTP_DOT_SCAN_AGAIN;
}
