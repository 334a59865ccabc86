/*
 * tool_mail.h - turn a message as a local program writes it (LF or CRLF
 * line ends, no dot-stuffing, maybe no From/Date/Message-ID) into the form
 * ringmail-sendmail sends after DATA, and extract recipients from its
 * headers for `-t`.
 *
 * Pure: no I/O, no clock, no environment. The caller supplies the values of
 * the headers to add (tool_mail_input) and reads the result from struct
 * tool_mail. Input is (ptr, len) and never needs a NUL.
 *
 * What the conversion does (docs/sendmail.md):
 * - Lines end at LF; one CR right before the LF is dropped, so both LF and
 *   CRLF input come out as CRLF. A last line without LF gets CRLF. A CR
 *   anywhere else is kept as it is.
 * - The header section runs from the first line to the first empty line or
 *   the first line that is neither a header field ("name:") nor a
 *   continuation (starts with SP or TAB). Bcc fields are removed (with
 *   their continuation lines). From, Date and Message-ID fields are added
 *   after the existing headers when missing (what Postfix's cleanup does for
 *   local submissions). When the header section ends at a non-header line,
 *   an empty line is inserted before it so it stays in the body.
 * - Lines longer than TOOL_MAIL_LINE_MAX octets on the wire are broken:
 *   header lines with CRLF SP (a folded header), body lines with CRLF (as
 *   Postfix's smtp_line_length_limit does).
 * - Every line starting with '.' gets another '.' (RFC 5321 4.5.2).
 * The wire text always ends with CRLF; the final ".\r\n" is the sender's.
 *
 * Recipients (-t): addresses in To, Cc and Bcc fields, unfolded, parsed as
 * RFC 5322 address lists (display names, comments, quoted strings, angle
 * addresses and groups). Exact duplicates are dropped.
 *
 * Ownership: struct tool_mail owns its heap buffers until
 * tool_mail_deinit(). tool_mail_input is borrowed until return.
 */
#ifndef TOOL_MAIL_H
#define TOOL_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest line sent, CRLF excluded (RFC 5321 4.5.3.1.6: 1000 with CRLF). */
#define TOOL_MAIL_LINE_MAX 998u
/* Longest address kept (RFC 5321 4.5.3.1.3 path: 256 with the brackets). */
#define TOOL_MAIL_ADDRESS_MAX 254u
/* Recipients per message (the listener's default per-message limit). */
#define TOOL_MAIL_RCPTS_MAX 1000u
/* Longest unfolded To/Cc/Bcc field examined. */
#define TOOL_MAIL_FIELD_MAX (1024u * 1024u)

_Static_assert(TOOL_MAIL_LINE_MAX + 2u <= 1000u, "RFC 5321 text line");

enum tool_mail_result {
	TOOL_MAIL_OK = 0,
	TOOL_MAIL_NO_MEMORY,
	TOOL_MAIL_TOO_MANY_RCPTS, /* over TOOL_MAIL_RCPTS_MAX */
	TOOL_MAIL_BAD_ADDRESS,	  /* control byte, <, > or too long */
	TOOL_MAIL_FIELD_TOO_LONG, /* a To/Cc/Bcc field over TOOL_MAIL_FIELD_MAX */
};

/* A growing byte buffer. */
struct tool_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

struct tool_addr_list {
	char **items; /* NUL-terminated addresses, heap */
	size_t count;
	size_t cap;
};

struct tool_mail_input {
	bool extract_recipients;       /* -t */
	const char *from_value;	       /* value for an added From: */
	const char *date_value;	       /* value for an added Date: */
	const char *message_id_value;  /* value for an added Message-ID: */
};

/* Which headers were added (bits). */
#define TOOL_MAIL_ADDED_FROM 1u
#define TOOL_MAIL_ADDED_DATE 2u
#define TOOL_MAIL_ADDED_MESSAGE_ID 4u

struct tool_mail {
	struct tool_buf wire;	     /* CRLF, dot-stuffed, ends with CRLF */
	struct tool_addr_list rcpts; /* from headers, when extracting */
	bool has_8bit;		     /* a byte >= 0x80 in the input */
	uint32_t added;		     /* TOOL_MAIL_ADDED_* */
	size_t bcc_removed_count;    /* Bcc fields dropped */
	char bad_address[TOOL_MAIL_ADDRESS_MAX + 2]; /* with BAD_ADDRESS */
};

void tool_mail_init(struct tool_mail *mail);
void tool_mail_deinit(struct tool_mail *mail);

/* Convert raw (borrowed until return) into mail (init'ed, empty). */
__attribute__((warn_unused_result)) enum tool_mail_result
tool_mail_prepare(const uint8_t *raw, size_t len, const struct tool_mail_input *input,
		  struct tool_mail *mail);

/*
 * Traditional sendmail input end: a line holding only "." ends the message
 * unless -i. Scans complete lines of (data, len) from *scan_offset (kept
 * between calls as more input arrives). Returns true when such a line was
 * found; *end is then the message length (the bytes before that line).
 */
bool tool_mail_find_dot_line(const uint8_t *data, size_t len, size_t *scan_offset, size_t *end);

/* Parse an RFC 5322 address list, appending each address to list. */
__attribute__((warn_unused_result)) enum tool_mail_result
tool_mail_parse_addresses(const char *value, size_t len, struct tool_addr_list *list,
			  char *bad_address, size_t bad_address_size);

/* Append address (len bytes) to list unless already there; validated. */
__attribute__((warn_unused_result)) enum tool_mail_result
tool_addr_list_add(struct tool_addr_list *list, const char *address, size_t len);

void tool_addr_list_free(struct tool_addr_list *list);

/* True when (address, len) is usable in MAIL FROM/RCPT TO: printable,
 * no '<' or '>', no space outside quotes, at most TOOL_MAIL_ADDRESS_MAX. */
bool tool_mail_address_is_valid(const char *address, size_t len);

__attribute__((warn_unused_result)) int tool_buf_append(struct tool_buf *buf,
							const void *data, size_t len);
void tool_buf_free(struct tool_buf *buf);

#endif /* TOOL_MAIL_H */
