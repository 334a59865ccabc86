/*
 * smtp_reply.h - incremental parser for SMTP server replies (RFC 5321
 * section 4.2), with enhanced status codes (RFC 2034, RFC 3463).
 *
 * The parser is pure: no I/O, no clock, no allocation. It is fed (ptr, len)
 * chunks exactly as they come off the socket, split anywhere, and never
 * relies on a NUL terminator. It stops after each complete reply and says
 * how many bytes that reply took, so a buffer holding several pipelined
 * replies is walked one reply at a time and no reply can be "shifted" onto
 * the wrong command by the parser.
 *
 * Grammar accepted (RFC 5321 4.2, with the choices below):
 *
 *   reply = *( code "-" [ text ] CRLF ) code [ SP [ text ] ] CRLF
 *   code  = %x32-35 DIGIT DIGIT      the same code on every line
 *
 * Choices, each a protocol error (SMTP_PARSE_ERROR) unless stated:
 * - Only CRLF ends a line. A bare LF anywhere, or a CR not followed by LF,
 *   is an error: replies are never guessed at (reliability.md 2.7, OUT-02).
 * - The code is exactly three digits, the first 2..5. The second digit is
 *   accepted as any digit (RFC 5321 grammar says 0..5), because clients act
 *   on the first digit only (RFC 5321 4.2.1). "2200", "22 x", "020", "620"
 *   and "220_x" are errors.
 * - A bare "250" (code then CRLF) and "250 " (empty text) are accepted.
 * - Every line of a multi-line reply repeats the first line's code; a
 *   change ("250-a" then "251 b") is an error (OUT-02, OUT-07).
 * - NUL in the text is an error. Other control bytes (except TAB) are
 *   stored as '?' so the text is safe to log (Postfix printable()); bytes
 *   >= 0x80 are stored as they are (servers send UTF-8 text).
 * - A line longer than SMTP_REPLY_LINE_MAX bytes (code, separator and text;
 *   CRLF excluded) is an error, and so is a reply of more than
 *   SMTP_REPLY_LINES_MAX lines.
 * - Text beyond SMTP_REPLY_TEXT_MAX bytes in total is not an error: it is
 *   dropped and the reply is marked text_is_truncated, as Postfix does
 *   ("limiting the amount of multi-line text that we are willing to
 *   store", smtp_chat.c). The code and the framing are still checked on
 *   every byte, so the session stays in sync.
 *
 * Enhanced status: taken from the first line's text when it starts with
 * "c.s.d" (class 2, 4 or 5; subject and detail 1..3 digits) followed by SP
 * or the end of the line. It is dropped when its class differs from the
 * reply code's first digit (Postfix sanitizes the same way), so policy
 * code can trust it.
 *
 * Ownership: the parser and its reply live in caller memory
 * (smtp_reply_parser_init works in place). The reply returned after
 * SMTP_PARSE_OK is valid until the next smtp_reply_parse() or init call.
 */
#ifndef SMTP_REPLY_H
#define SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest reply line: code, separator and text, CRLF excluded. RFC 5321
 * 4.5.3.1.5 sets 512 octets with CRLF as the minimum a server must allow;
 * replies do exceed it in the wild, so take Postfix's line_length_limit
 * default of 2048 (postconf(5)). */
#define SMTP_REPLY_LINE_MAX 2048u
/* Text kept per reply: every line's text, lines joined by one '\n'. */
#define SMTP_REPLY_TEXT_MAX 8192u
/* Lines per reply. An EHLO reply rarely has more than 20. */
#define SMTP_REPLY_LINES_MAX 128u

_Static_assert(SMTP_REPLY_LINE_MAX >= 512u, "RFC 5321 4.5.3.1.5 reply line");
_Static_assert(SMTP_REPLY_TEXT_MAX >= SMTP_REPLY_LINE_MAX, "one full line fits the text");
_Static_assert(SMTP_REPLY_TEXT_MAX <= UINT16_MAX, "text offsets are 16 bits");
_Static_assert(SMTP_REPLY_LINES_MAX <= UINT16_MAX, "line count is 16 bits");

enum smtp_parse_result {
	SMTP_PARSE_OK = 0, /* one complete reply; *consumed bytes used */
	SMTP_PARSE_AGAIN,  /* all bytes used, reply incomplete: feed more */
	SMTP_PARSE_ERROR,  /* protocol error; sticky until init */
};

enum smtp_reply_error {
	SMTP_REPLY_ERROR_NONE = 0,
	SMTP_REPLY_ERROR_CODE,		 /* not 3 digits with the first 2..5 */
	SMTP_REPLY_ERROR_SEPARATOR,	 /* after the code: not SP, '-' or CRLF */
	SMTP_REPLY_ERROR_CODE_CHANGED,	 /* a line's code differs from the first */
	SMTP_REPLY_ERROR_BARE_CR,	 /* CR not followed by LF */
	SMTP_REPLY_ERROR_BARE_LF,	 /* LF not preceded by CR */
	SMTP_REPLY_ERROR_NUL,		 /* NUL byte in the text */
	SMTP_REPLY_ERROR_LINE_TOO_LONG,	 /* line over SMTP_REPLY_LINE_MAX */
	SMTP_REPLY_ERROR_TOO_MANY_LINES, /* reply over SMTP_REPLY_LINES_MAX */
	SMTP_REPLY_ERROR_COUNT
};

/* RFC 3463 class.subject.detail. status_class 0 means "none". */
struct smtp_enhanced_status {
	uint8_t status_class; /* 0, 2, 4 or 5 */
	uint16_t subject;     /* 0..999 */
	uint16_t detail;      /* 0..999 */
};

struct smtp_reply {
	uint16_t code;	     /* 200..599 */
	uint16_t line_count; /* 1..SMTP_REPLY_LINES_MAX */
	uint16_t text_size;  /* bytes used in text */
	bool text_is_truncated;
	struct smtp_enhanced_status enhanced;
	/* Bytes of line 0's text taken by the enhanced code and the blanks
	 * after it; 0 when enhanced.status_class is 0. */
	uint16_t enhanced_size;
	uint16_t line_offset[SMTP_REPLY_LINES_MAX]; /* into text */
	uint16_t line_size[SMTP_REPLY_LINES_MAX];
	/* Line texts without code or separator, joined by '\n'; not
	 * NUL-terminated. */
	char text[SMTP_REPLY_TEXT_MAX];
};

struct smtp_reply_parser {
	uint8_t state;		    /* private: enum in smtp_reply.c */
	enum smtp_reply_error error; /* set with SMTP_PARSE_ERROR */
	uint16_t line_code;	    /* code digits of the current line */
	uint32_t line_length;	    /* bytes of the current line, CRLF excluded */
	bool line_is_last;	    /* current line has SP or CRLF after the code */
	struct smtp_reply reply;
};

/* Prepare a parser in place for a new stream of replies. */
void smtp_reply_parser_init(struct smtp_reply_parser *parser);

/*
 * Parse bytes [ptr, ptr + len). Returns:
 * - SMTP_PARSE_OK: a reply is complete in parser->reply; *consumed is the
 *   number of bytes up to and including its last LF. Call again with the
 *   remaining bytes for the next reply.
 * - SMTP_PARSE_AGAIN: *consumed == len, the reply continues.
 * - SMTP_PARSE_ERROR: parser->error says why; *consumed is the offset of
 *   the offending byte. Every later call returns SMTP_PARSE_ERROR.
 * len may be 0. ptr is borrowed until return.
 */
__attribute__((warn_unused_result)) enum smtp_parse_result
smtp_reply_parse(struct smtp_reply_parser *parser, const uint8_t *ptr, size_t len,
		 size_t *consumed);

/* True when no byte of the next reply has been taken yet (after init, or
 * right after SMTP_PARSE_OK). */
bool smtp_reply_parser_is_between_replies(const struct smtp_reply_parser *parser);

/* Line line_index of a complete reply: its text (ptr, size). */
void smtp_reply_line(const struct smtp_reply *reply, uint32_t line_index, const char **ptr,
		     size_t *size);

/* First digit of the code: 2, 3, 4 or 5. */
uint32_t smtp_reply_class(const struct smtp_reply *reply);

/* A short static name for an error, for logs. */
const char *smtp_reply_error_name(enum smtp_reply_error error);

/*
 * Parse "c.s.d" at the start of (ptr, len), followed by SP, TAB or the end.
 * Returns the bytes taken (code and following blanks), 0 when there is no
 * valid enhanced code (out then has status_class 0). Exposed for tests and
 * for the listener; the reply parser calls it on line 0.
 */
size_t smtp_enhanced_status_parse(const char *ptr, size_t len, struct smtp_enhanced_status *out);

#endif /* SMTP_REPLY_H */
