/*
 * tool_text.h - text helpers for the operator tools: timestamps, safe
 * printing of spool bytes on a terminal, and turning a stored message
 * (SMTP wire form) back into the message the client sent.
 *
 * The spool stores bodies dot-stuffed with CRLF line ends and the final
 * CRLF.CRLF (docs/spool-format.md 2.1). Un-stuffing follows RFC 5321
 * section 4.5.2: the first period of a line that starts with one is
 * removed; the terminating "." line is not part of the message.
 *
 * Nothing here allocates; callers own every buffer.
 */
#ifndef TOOL_TEXT_H
#define TOOL_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* "2024-05-01T12:00:00Z" and a NUL. */
#define TOOL_TIME_SIZE 32u

/* "s" unless count is 1: "1 shard", "2 shards". */
const char *tool_plural(uint64_t count);

/* ISO 8601 UTC, seconds precision, of ns since the epoch. */
void tool_format_time(uint64_t time_ns, char out[TOOL_TIME_SIZE]);

/*
 * Print (data, len) for a human: valid UTF-8 and printable ASCII as is,
 * control characters, DEL, invalid bytes and the backslash as \xNN, so
 * nothing stored in the spool can drive the terminal.
 */
void tool_print_escaped(FILE *out, const uint8_t *data, size_t len);

/* Print (data, len) with each CRLF written as LF; other bytes as they are. */
void tool_print_lines(FILE *out, const uint8_t *data, size_t len);

/*
 * Un-stuff a wire-form body into out (at least wire_size bytes): drops the
 * final ".\r\n" line and the first period of every line that starts with
 * one. wire must end with CRLF.CRLF (the record decoder checks this).
 * Returns the message size, < wire_size.
 */
size_t tool_message_unstuff(const uint8_t *wire, size_t wire_size, uint8_t *out);

/*
 * Split a message at its first empty line: headers are [0, *headers_size)
 * (each header line with its CRLF), the body [*body_offset, len). Without
 * an empty line the whole message is headers and the body is empty.
 */
void tool_message_split(const uint8_t *text, size_t len, size_t *headers_size,
			size_t *body_offset);

#endif /* TOOL_TEXT_H */
