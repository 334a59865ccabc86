/*
 * smtp_reply.c - incremental SMTP reply parser (smtp_reply.h).
 *
 * A resumable byte-at-a-time state machine over a (ptr, len) window, after
 * nginx's ngx_http_parse_status_line: the state is saved in the parser when
 * the window ends mid-reply and parsing resumes from it with the next
 * chunk, so the result never depends on where the socket split the bytes.
 *
 * Invariants:
 * - reply.text_size <= SMTP_REPLY_TEXT_MAX; every line_offset + line_size
 *   <= text_size; line_count <= SMTP_REPLY_LINES_MAX.
 * - line_length <= SMTP_REPLY_LINE_MAX at all times: the byte that would
 *   go past it is refused before it is counted.
 * - No byte of input is read past len; no byte of text is written past
 *   SMTP_REPLY_TEXT_MAX.
 * - Peer bytes are never asserted on; asserts guard the caller's pointers
 *   and this file's own counters.
 *
 * References: RFC 5321 4.2 (reply grammar), 4.5.3.1.5 (reply line
 * length), RFC 3463 (enhanced codes), Postfix smtp_chat.c (text cap,
 * sanitized enhanced code), OpenSMTPD util.c parse_smtp_response().
 */
#include "smtp_reply.h"

#include <string.h>

#include "../engine/eng_common.h"

enum reply_state {
	REPLY_STATE_BETWEEN = 0, /* no byte of the next reply yet */
	REPLY_STATE_DIGIT1,	 /* at the start of a line */
	REPLY_STATE_DIGIT2,
	REPLY_STATE_DIGIT3,
	REPLY_STATE_SEPARATOR, /* after three digits: SP, '-' or CR */
	REPLY_STATE_TEXT,      /* in the text of a line */
	REPLY_STATE_CR,	       /* CR seen; LF must follow */
	REPLY_STATE_ERROR,     /* sticky */
};

/* Result of one byte: keep going, reply complete, or error. */
enum byte_result {
	BYTE_MORE = 0,
	BYTE_REPLY_DONE,
	BYTE_ERROR,
};

void
smtp_reply_parser_init(struct smtp_reply_parser *parser)
{
	ENG_ASSERT(parser != NULL);
	memset(parser, 0, sizeof(*parser));
	parser->state = REPLY_STATE_BETWEEN;
	ENG_ASSERT(smtp_reply_parser_is_between_replies(parser));
}

bool
smtp_reply_parser_is_between_replies(const struct smtp_reply_parser *parser)
{
	ENG_ASSERT(parser != NULL);
	ENG_ASSERT(parser->state <= REPLY_STATE_ERROR);
	return parser->state == REPLY_STATE_BETWEEN;
}

static enum byte_result
parser_fail(struct smtp_reply_parser *parser, enum smtp_reply_error error)
{
	ENG_ASSERT(error != SMTP_REPLY_ERROR_NONE);
	ENG_ASSERT(error < SMTP_REPLY_ERROR_COUNT);
	parser->state = REPLY_STATE_ERROR;
	parser->error = error;
	return BYTE_ERROR;
}

/* Store one text byte, or mark the reply truncated when the text is full. */
static void
text_append(struct smtp_reply *reply, char c)
{
	ENG_ASSERT(reply->text_size <= SMTP_REPLY_TEXT_MAX);
	ENG_ASSERT(reply->line_count > 0);
	if (reply->text_size == SMTP_REPLY_TEXT_MAX) {
		reply->text_is_truncated = true;
		return;
	}
	reply->text[reply->text_size] = c;
	reply->text_size++;
}

/* A new line's text starts after its separator. */
static enum byte_result
line_begin(struct smtp_reply_parser *parser)
{
	struct smtp_reply *reply = &parser->reply;

	ENG_ASSERT(reply->line_count <= SMTP_REPLY_LINES_MAX);
	ENG_ASSERT(reply->code >= 200 && reply->code <= 599);
	if (reply->line_count == SMTP_REPLY_LINES_MAX)
		return parser_fail(parser, SMTP_REPLY_ERROR_TOO_MANY_LINES);
	reply->line_count++;
	if (reply->line_count > 1)
		text_append(reply, '\n');
	reply->line_offset[reply->line_count - 1] = reply->text_size;
	reply->line_size[reply->line_count - 1] = 0;
	return BYTE_MORE;
}

/* Take the enhanced status from line 0, dropping it when its class does
 * not match the reply code (Postfix sanitizes the same way). */
static void
reply_finish(struct smtp_reply *reply)
{
	struct smtp_enhanced_status status;
	size_t taken;

	ENG_ASSERT(reply->line_count >= 1);
	ENG_ASSERT(reply->line_offset[0] == 0);
	taken = smtp_enhanced_status_parse(reply->text, reply->line_size[0], &status);
	if (taken == 0 || status.status_class != reply->code / 100) {
		memset(&reply->enhanced, 0, sizeof(reply->enhanced));
		reply->enhanced_size = 0;
		return;
	}
	reply->enhanced = status;
	reply->enhanced_size = (uint16_t)taken;
}

/* LF after CR: the line ends; the reply ends with its last line. */
static enum byte_result
line_end(struct smtp_reply_parser *parser)
{
	struct smtp_reply *reply = &parser->reply;
	uint32_t index = (uint32_t)reply->line_count - 1u;

	ENG_ASSERT(reply->line_count >= 1);
	ENG_ASSERT(reply->line_offset[index] <= reply->text_size);
	reply->line_size[index] = (uint16_t)(reply->text_size - reply->line_offset[index]);
	if (!parser->line_is_last) {
		parser->state = REPLY_STATE_DIGIT1;
		parser->line_code = 0;
		parser->line_length = 0;
		return BYTE_MORE;
	}
	reply_finish(reply);
	parser->state = REPLY_STATE_BETWEEN;
	return BYTE_REPLY_DONE;
}

/* One of the three code digits. */
static enum byte_result
code_digit(struct smtp_reply_parser *parser, uint8_t c)
{
	struct smtp_reply *reply = &parser->reply;
	bool is_first = parser->state == REPLY_STATE_DIGIT1;

	ENG_ASSERT(parser->state >= REPLY_STATE_DIGIT1);
	ENG_ASSERT(parser->state <= REPLY_STATE_DIGIT3);
	if (c < '0' || c > '9' || (is_first && (c < '2' || c > '5')))
		return parser_fail(parser, SMTP_REPLY_ERROR_CODE);
	parser->line_code = (uint16_t)(parser->line_code * 10u + (uint16_t)(c - '0'));
	parser->state++;
	if (parser->state != REPLY_STATE_SEPARATOR)
		return BYTE_MORE;
	if (reply->line_count == 0)
		reply->code = parser->line_code;
	else if (parser->line_code != reply->code)
		return parser_fail(parser, SMTP_REPLY_ERROR_CODE_CHANGED);
	return BYTE_MORE;
}

/* SP (last line), '-' (more lines) or CR (bare code, last line). */
static enum byte_result
separator(struct smtp_reply_parser *parser, uint8_t c)
{
	ENG_ASSERT(parser->state == REPLY_STATE_SEPARATOR);
	ENG_ASSERT(parser->reply.code == parser->line_code);
	if (c != ' ' && c != '-' && c != '\r') {
		if (c == '\n')
			return parser_fail(parser, SMTP_REPLY_ERROR_BARE_LF);
		return parser_fail(parser, SMTP_REPLY_ERROR_SEPARATOR);
	}
	parser->line_is_last = c != '-';
	if (line_begin(parser) == BYTE_ERROR)
		return BYTE_ERROR;
	parser->state = c == '\r' ? REPLY_STATE_CR : REPLY_STATE_TEXT;
	return BYTE_MORE;
}

static enum byte_result
text_byte(struct smtp_reply_parser *parser, uint8_t c)
{
	ENG_ASSERT(parser->state == REPLY_STATE_TEXT);
	ENG_ASSERT(parser->reply.line_count >= 1);
	if (c == '\r') {
		parser->state = REPLY_STATE_CR;
		return BYTE_MORE;
	}
	if (c == '\n')
		return parser_fail(parser, SMTP_REPLY_ERROR_BARE_LF);
	if (c == '\0')
		return parser_fail(parser, SMTP_REPLY_ERROR_NUL);
	if ((c < 0x20 && c != '\t') || c == 0x7f)
		c = '?';
	text_append(&parser->reply, (char)c);
	return BYTE_MORE;
}

static enum byte_result
parse_byte(struct smtp_reply_parser *parser, uint8_t c)
{
	ENG_ASSERT(parser->state != REPLY_STATE_BETWEEN);
	ENG_ASSERT(parser->state != REPLY_STATE_ERROR);
	if (parser->state == REPLY_STATE_CR) {
		if (c != '\n')
			return parser_fail(parser, SMTP_REPLY_ERROR_BARE_CR);
		return line_end(parser);
	}
	if (c != '\r') {
		if (parser->line_length == SMTP_REPLY_LINE_MAX)
			return parser_fail(parser, SMTP_REPLY_ERROR_LINE_TOO_LONG);
		parser->line_length++;
	}
	switch (parser->state) {
	case REPLY_STATE_DIGIT1:
	case REPLY_STATE_DIGIT2:
	case REPLY_STATE_DIGIT3:
		return code_digit(parser, c);
	case REPLY_STATE_SEPARATOR:
		return separator(parser, c);
	case REPLY_STATE_TEXT:
		return text_byte(parser, c);
	default:
		ENG_PANIC("smtp_reply: bad parser state");
	}
}

/* Start a new reply: counters only, the text is overwritten as it comes. */
static void
reply_begin(struct smtp_reply_parser *parser)
{
	struct smtp_reply *reply = &parser->reply;

	ENG_ASSERT(parser->state == REPLY_STATE_BETWEEN);
	ENG_ASSERT(parser->error == SMTP_REPLY_ERROR_NONE);
	reply->code = 0;
	reply->line_count = 0;
	reply->text_size = 0;
	reply->text_is_truncated = false;
	reply->enhanced_size = 0;
	memset(&reply->enhanced, 0, sizeof(reply->enhanced));
	parser->line_code = 0;
	parser->line_length = 0;
	parser->line_is_last = false;
	parser->state = REPLY_STATE_DIGIT1;
}

enum smtp_parse_result
smtp_reply_parse(struct smtp_reply_parser *parser, const uint8_t *ptr, size_t len,
		 size_t *consumed)
{
	size_t index;

	ENG_ASSERT(parser != NULL);
	ENG_ASSERT(consumed != NULL);
	ENG_ASSERT(ptr != NULL || len == 0);
	*consumed = 0;
	if (parser->state == REPLY_STATE_ERROR)
		return SMTP_PARSE_ERROR;
	if (len == 0)
		return SMTP_PARSE_AGAIN;
	if (parser->state == REPLY_STATE_BETWEEN)
		reply_begin(parser);
	for (index = 0; index < len; index++) {
		enum byte_result result = parse_byte(parser, ptr[index]);

		if (result == BYTE_ERROR) {
			*consumed = index;
			return SMTP_PARSE_ERROR;
		}
		if (result == BYTE_REPLY_DONE) {
			*consumed = index + 1;
			ENG_ASSERT(parser->reply.line_count >= 1);
			return SMTP_PARSE_OK;
		}
	}
	*consumed = len;
	ENG_ASSERT(parser->state != REPLY_STATE_BETWEEN);
	return SMTP_PARSE_AGAIN;
}

void
smtp_reply_line(const struct smtp_reply *reply, uint32_t line_index, const char **ptr,
		size_t *size)
{
	ENG_ASSERT(reply != NULL && ptr != NULL && size != NULL);
	ENG_ASSERT(line_index < reply->line_count);
	ENG_ASSERT((uint32_t)reply->line_offset[line_index] + reply->line_size[line_index] <=
		   reply->text_size);
	*ptr = reply->text + reply->line_offset[line_index];
	*size = reply->line_size[line_index];
}

uint32_t
smtp_reply_class(const struct smtp_reply *reply)
{
	ENG_ASSERT(reply != NULL);
	ENG_ASSERT(reply->code >= 200 && reply->code <= 599);
	return reply->code / 100u;
}

const char *
smtp_reply_error_name(enum smtp_reply_error error)
{
	static const char *const names[SMTP_REPLY_ERROR_COUNT] = {
		[SMTP_REPLY_ERROR_NONE] = "none",
		[SMTP_REPLY_ERROR_CODE] = "bad reply code",
		[SMTP_REPLY_ERROR_SEPARATOR] = "bad separator after reply code",
		[SMTP_REPLY_ERROR_CODE_CHANGED] = "reply code changed inside a multi-line reply",
		[SMTP_REPLY_ERROR_BARE_CR] = "bare CR in reply",
		[SMTP_REPLY_ERROR_BARE_LF] = "bare LF in reply",
		[SMTP_REPLY_ERROR_NUL] = "NUL in reply text",
		[SMTP_REPLY_ERROR_LINE_TOO_LONG] = "reply line too long",
		[SMTP_REPLY_ERROR_TOO_MANY_LINES] = "too many reply lines",
	};

	ENG_ASSERT(error < SMTP_REPLY_ERROR_COUNT);
	ENG_ASSERT(names[error] != NULL);
	return names[error];
}

/* 1..3 digits at ptr[*pos]: the value, advancing *pos; -1 when none or
 * more than three. */
static int32_t
status_number(const char *ptr, size_t len, size_t *pos)
{
	int32_t value = 0;
	size_t start = *pos;

	ENG_ASSERT(ptr != NULL);
	ENG_ASSERT(start <= len);
	while (*pos < len && *pos - start < 4 && ptr[*pos] >= '0' && ptr[*pos] <= '9') {
		value = value * 10 + (ptr[*pos] - '0');
		(*pos)++;
	}
	if (*pos == start || *pos - start > 3)
		return -1;
	return value;
}

size_t
smtp_enhanced_status_parse(const char *ptr, size_t len, struct smtp_enhanced_status *out)
{
	int32_t subject;
	int32_t detail;
	size_t pos = 2;

	ENG_ASSERT(out != NULL);
	ENG_ASSERT(ptr != NULL || len == 0);
	memset(out, 0, sizeof(*out));
	if (len < 5 || (ptr[0] != '2' && ptr[0] != '4' && ptr[0] != '5') || ptr[1] != '.')
		return 0;
	subject = status_number(ptr, len, &pos);
	if (subject < 0 || pos >= len || ptr[pos] != '.')
		return 0;
	pos++;
	detail = status_number(ptr, len, &pos);
	if (detail < 0 || (pos < len && ptr[pos] != ' ' && ptr[pos] != '\t'))
		return 0;
	while (pos < len && (ptr[pos] == ' ' || ptr[pos] == '\t'))
		pos++;
	out->status_class = (uint8_t)(ptr[0] - '0');
	out->subject = (uint16_t)subject;
	out->detail = (uint16_t)detail;
	ENG_ASSERT(pos <= len);
	return pos;
}
