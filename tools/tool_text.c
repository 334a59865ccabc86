/*
 * tool_text.c - timestamps, terminal-safe printing, message un-stuffing
 * (see tool_text.h). Spool bytes are handled as (ptr, len) spans and are
 * never NUL-terminated for parsing.
 */
#include "tool_text.h"

#include <stdbool.h>
#include <time.h>

#include "engine/eng_common.h"
#include "tool_json.h"

const char *
tool_plural(uint64_t count)
{
	return count == 1 ? "" : "s";
}

void
tool_format_time(uint64_t time_ns, char out[TOOL_TIME_SIZE])
{
	ENG_ASSERT(out != NULL);
	time_t seconds = (time_t)(time_ns / 1000000000ull);
	struct tm tm;
	size_t n = 0;
	if (gmtime_r(&seconds, &tm) != NULL)
		n = strftime(out, TOOL_TIME_SIZE, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (n == 0)
		snprintf(out, TOOL_TIME_SIZE, "@%llu", (unsigned long long)seconds);
	ENG_ASSERT(out[0] != '\0');
}

/* Printable ASCII other than the backslash (which starts our escapes). */
static bool
tool_text_byte_is_plain(uint8_t byte)
{
	return byte >= 0x20u && byte < 0x7fu && byte != '\\';
}

void
tool_print_escaped(FILE *out, const uint8_t *data, size_t len)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(data != NULL || len == 0);
	size_t i = 0;
	while (i < len) {
		size_t size = 0;
		if (tool_text_byte_is_plain(data[i]))
			size = 1;
		else if (data[i] >= 0x80u)
			size = tool_utf8_sequence_size(data + i, len - i);
		if (size > 0)
			fwrite(data + i, 1, size, out);
		else
			fprintf(out, "\\x%02x", (unsigned)data[i]);
		i += size > 0 ? size : 1;
	}
	ENG_ASSERT(i == len);
}

void
tool_print_lines(FILE *out, const uint8_t *data, size_t len)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(data != NULL || len == 0);
	size_t i = 0;
	while (i < len) {
		const uint8_t *cr = memchr(data + i, '\r', len - i);
		size_t end = cr == NULL ? len : (size_t)(cr - data);
		fwrite(data + i, 1, end - i, out);
		if (end == len)
			break;
		bool is_crlf = end + 1 < len && data[end + 1] == '\n';
		fputs(is_crlf ? "\n" : "\r", out);
		i = end + (is_crlf ? 2u : 1u);
	}
}

size_t
tool_message_unstuff(const uint8_t *wire, size_t wire_size, uint8_t *out)
{
	static const char terminator[] = ".\r\n";
	ENG_ASSERT(wire != NULL && out != NULL);
	ENG_ASSERT(wire_size >= 5); /* "\r\n.\r\n", docs/spool-format.md 2.1 */
	ENG_ASSERT(memcmp(wire + wire_size - 5, "\r\n.\r\n", 5) == 0);
	size_t content_size = wire_size - (sizeof(terminator) - 1);
	size_t n = 0;
	bool at_line_start = true;
	for (size_t i = 0; i < content_size; i++) {
		uint8_t byte = wire[i];
		if (at_line_start && byte == '.') {
			at_line_start = false; /* RFC 5321 4.5.2: drop the first period */
			continue;
		}
		out[n++] = byte;
		at_line_start = byte == '\n';
	}
	ENG_ASSERT(n <= content_size);
	ENG_ASSERT(n < wire_size);
	return n;
}

void
tool_message_split(const uint8_t *text, size_t len, size_t *headers_size, size_t *body_offset)
{
	ENG_ASSERT(text != NULL || len == 0);
	ENG_ASSERT(headers_size != NULL && body_offset != NULL);
	size_t line = 0;
	while (line < len) {
		if (len - line >= 2 && text[line] == '\r' && text[line + 1] == '\n') {
			*headers_size = line;
			*body_offset = line + 2;
			return;
		}
		const uint8_t *lf = memchr(text + line, '\n', len - line);
		if (lf == NULL)
			break;
		line = (size_t)(lf - text) + 1;
	}
	*headers_size = len;
	*body_offset = len;
}
