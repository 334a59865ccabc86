/*
 * smtp_dot.h - message bodies in SMTP wire form (RFC 5321 4.5.2, 4.1.1.4).
 *
 * Wire form, as the spool stores it and as DATA sends it: lines ending in
 * CRLF, no other CR or LF, every line that starts with '.' stuffed with a
 * second '.', then the terminator line ".\r\n". A non-empty message ends
 * with "\r\n.\r\n"; the empty message is just ".\r\n" (the CRLF of the
 * DATA command ends the line before the dot, RFC 5321 4.1.1.4). The spool
 * requires at least one line, so it never stores the empty form.
 *
 * Raw form: the message as the sender meant it, lines ending in CRLF, no
 * other CR or LF, no stuffing, no terminator. CRLF is decided at
 * injection (reliability.md 2.1): these helpers never normalise a bare CR
 * or LF, they refuse it.
 *
 * Helpers:
 * - smtp_dot_validate: is a buffer in wire form? If not, why and where.
 * - smtp_dot_stuff: raw -> wire. A raw message whose last line lacks its
 *   CRLF gets one (RFC 5321 4.5.2 edge case, reliability.md 2.8), so
 *   unstuff(stuff(x)) == x holds for every raw x that is empty or ends in
 *   CRLF.
 * - smtp_dot_unstuff: wire -> raw, validating on the way.
 * - smtp_dot_has_8bit: does a body (or any byte string) need 8BITMIME?
 * - struct smtp_dot_detector: incremental end-of-DATA detection for the
 *   listener. Only CRLF "." CRLF ends the data; "\n.\n", "\r.\r",
 *   "\r\n.\n", "\n.\r\n" and the other SMTP smuggling sequences
 *   (CVE-2023-51764, hannob/smtpsmug) never do. Bare CR and bare LF are
 *   flagged for the caller to reject.
 *
 * Pure: no I/O, no allocation. Inputs are borrowed until return; output
 * buffers belong to the caller.
 */
#ifndef SMTP_DOT_H
#define SMTP_DOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_dot_reason {
	SMTP_DOT_VALID = 0,
	SMTP_DOT_BARE_CR,	 /* CR not followed by LF */
	SMTP_DOT_BARE_LF,	 /* LF not preceded by CR */
	SMTP_DOT_EARLY_END,	 /* a "." line before the end of the buffer */
	SMTP_DOT_NOT_TERMINATED, /* does not end with the ".\r\n" line */
	SMTP_DOT_REASON_COUNT
};

/*
 * Check that (wire, len) is a whole body in wire form. Returns
 * SMTP_DOT_VALID or the first problem; *offset (may be NULL) gets the
 * byte offset of the problem (len for SMTP_DOT_NOT_TERMINATED).
 */
enum smtp_dot_reason smtp_dot_validate(const uint8_t *wire, size_t len, size_t *offset);

/* True when a byte of (p, len) is >= 0x80: the body needs BODY=8BITMIME
 * (RFC 6152). Word-at-a-time: the engine scans every recovered body. */
bool smtp_dot_has_8bit(const uint8_t *p, size_t len);

/* Output size smtp_dot_stuff may need for raw_len input bytes: every
 * stuffed dot, an added final CRLF and the terminator. */
size_t smtp_dot_stuffed_size_max(size_t raw_len);

/*
 * Raw -> wire. out_size must be at least smtp_dot_stuffed_size_max(raw_len)
 * (asserted). Returns SMTP_DOT_VALID with *out_len set, or
 * SMTP_DOT_BARE_CR / SMTP_DOT_BARE_LF (nothing useful in out).
 */
__attribute__((warn_unused_result)) enum smtp_dot_reason
smtp_dot_stuff(const uint8_t *raw, size_t raw_len, uint8_t *out, size_t out_size,
	       size_t *out_len);

/*
 * Wire -> raw: validate (as smtp_dot_validate), then remove the stuffed
 * dots and the terminator. out_size must be at least wire_len (asserted).
 * Returns SMTP_DOT_VALID with *out_len set, or the validation failure.
 */
__attribute__((warn_unused_result)) enum smtp_dot_reason
smtp_dot_unstuff(const uint8_t *wire, size_t wire_len, uint8_t *out, size_t out_size,
		 size_t *out_len);

/* A short static name for a reason, for logs. */
const char *smtp_dot_reason_name(enum smtp_dot_reason reason);

/* Incremental end-of-DATA detector. Starts at the beginning of a line
 * (right after the 354 reply to DATA). */
struct smtp_dot_detector {
	uint8_t state;	   /* private: enum in smtp_dot.c */
	bool bare_cr_seen; /* a CR not followed by LF was seen */
	bool bare_lf_seen; /* an LF not preceded by CR was seen */
	uint64_t data_size; /* bytes scanned so far, terminator included */
};

enum smtp_dot_scan {
	SMTP_DOT_SCAN_AGAIN = 0, /* all bytes scanned, no end yet */
	SMTP_DOT_SCAN_END,	 /* CRLF.CRLF found; see *consumed */
};

void smtp_dot_detector_init(struct smtp_dot_detector *detector);

/*
 * Scan (ptr, len). SMTP_DOT_SCAN_END: the data ended, *consumed is the
 * number of bytes up to and including the terminator's LF (the bytes after
 * it are the next command). SMTP_DOT_SCAN_AGAIN: *consumed == len.
 * bare_cr_seen / bare_lf_seen accumulate; the caller decides (the listener
 * rejects the message, as Postfix smtpd_forbid_bare_newline does).
 * Calling again after END is a programmer error (asserted): init first.
 */
enum smtp_dot_scan smtp_dot_detector_scan(struct smtp_dot_detector *detector,
					  const uint8_t *ptr, size_t len, size_t *consumed);

#endif /* SMTP_DOT_H */
