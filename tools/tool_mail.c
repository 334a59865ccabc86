/*
 * tool_mail.c - message preparation for ringmail-sendmail (tool_mail.h).
 *
 * One pass over the input, line by line. The header section is emitted as
 * it is read, except Bcc fields; each To/Cc/Bcc field is unfolded into a
 * scratch buffer and parsed when it ends (for -t). Every line goes out
 * through tool_mail_emit_line(), the only place that breaks long lines and
 * dot-stuffs, so no line can reach the wire unstuffed or over the limit.
 * Loops are bounded by the input length.
 */
#include "tool_mail.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/eng_common.h"

enum tool_field_kind {
	TOOL_FIELD_NONE = 0, /* no field open */
	TOOL_FIELD_OTHER,
	TOOL_FIELD_RCPT,     /* To or Cc */
	TOOL_FIELD_BCC,
};

struct tool_mail_state {
	struct tool_mail *mail;
	const struct tool_mail_input *input;
	bool in_headers;
	enum tool_field_kind field;
	struct tool_buf field_value; /* unfolded To/Cc/Bcc value */
	bool has_from;
	bool has_date;
	bool has_message_id;
};

int
tool_buf_append(struct tool_buf *buf, const void *data, size_t len)
{
	ENG_ASSERT(buf->len <= buf->cap);
	if (len > buf->cap - buf->len) {
		size_t cap = buf->cap > 0 ? buf->cap : 4096u;
		while (cap - buf->len < len) {
			if (cap > SIZE_MAX / 2u)
				return -ENOMEM;
			cap *= 2u;
		}
		uint8_t *data_new = realloc(buf->data, cap);
		if (data_new == NULL)
			return -ENOMEM;
		buf->data = data_new;
		buf->cap = cap;
	}
	if (len > 0)
		memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	ENG_ASSERT(buf->len <= buf->cap);
	return 0;
}

void
tool_buf_free(struct tool_buf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
}

void
tool_addr_list_free(struct tool_addr_list *list)
{
	for (size_t index = 0; index < list->count; index++)
		free(list->items[index]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
	list->cap = 0;
}

void
tool_mail_init(struct tool_mail *mail)
{
	memset(mail, 0, sizeof(*mail));
}

void
tool_mail_deinit(struct tool_mail *mail)
{
	tool_buf_free(&mail->wire);
	tool_addr_list_free(&mail->rcpts);
}

bool
tool_mail_address_is_valid(const char *address, size_t len)
{
	if (len == 0 || len > TOOL_MAIL_ADDRESS_MAX)
		return false;
	bool in_quotes = false;
	for (size_t index = 0; index < len; index++) {
		unsigned char c = (unsigned char)address[index];
		if (c < 0x20u || c == 0x7fu || c == '<' || c == '>')
			return false;
		if (c == '"')
			in_quotes = !in_quotes;
		if ((c == ' ' || c == '\t') && !in_quotes)
			return false;
	}
	return !in_quotes;
}

enum tool_mail_result
tool_addr_list_add(struct tool_addr_list *list, const char *address, size_t len)
{
	if (!tool_mail_address_is_valid(address, len))
		return TOOL_MAIL_BAD_ADDRESS;
	for (size_t index = 0; index < list->count; index++) {
		if (strlen(list->items[index]) == len && memcmp(list->items[index], address, len) == 0)
			return TOOL_MAIL_OK;
	}
	if (list->count >= TOOL_MAIL_RCPTS_MAX)
		return TOOL_MAIL_TOO_MANY_RCPTS;
	if (list->count == list->cap) {
		size_t cap = list->cap > 0 ? list->cap * 2u : 16u;
		char **items = realloc(list->items, cap * sizeof(*items));
		if (items == NULL)
			return TOOL_MAIL_NO_MEMORY;
		list->items = items;
		list->cap = cap;
	}
	char *copy = malloc(len + 1u);
	if (copy == NULL)
		return TOOL_MAIL_NO_MEMORY;
	memcpy(copy, address, len);
	copy[len] = '\0';
	list->items[list->count++] = copy;
	ENG_ASSERT(list->count <= list->cap);
	return TOOL_MAIL_OK;
}

bool
tool_mail_find_dot_line(const uint8_t *data, size_t len, size_t *scan_offset, size_t *end)
{
	ENG_ASSERT(*scan_offset <= len);
	size_t start = *scan_offset;
	while (start < len) {
		const uint8_t *lf = memchr(data + start, '\n', len - start);
		if (lf == NULL)
			break;
		size_t line_len = (size_t)(lf - (data + start));
		if ((line_len == 1 && data[start] == '.') ||
		    (line_len == 2 && data[start] == '.' && data[start + 1] == '\r')) {
			*end = start;
			*scan_offset = start;
			return true;
		}
		start += line_len + 1u;
	}
	*scan_offset = start;
	ENG_ASSERT(*scan_offset <= len);
	return false;
}

/* The address being collected by tool_mail_parse_addresses: the text
 * outside angle brackets (bare) and inside them (angle). Longer text than
 * an address can hold only marks the part as overflowed. */
struct tool_addr_part {
	char text[TOOL_MAIL_ADDRESS_MAX + 1u];
	size_t len;
	bool overflowed;
};

struct tool_addr_parse {
	struct tool_addr_part bare;
	struct tool_addr_part angle;
	bool has_angle;
	bool in_angle;
};

static void
tool_addr_part_put(struct tool_addr_part *part, char c)
{
	ENG_ASSERT(part->len <= sizeof(part->text));
	if (part->len < sizeof(part->text))
		part->text[part->len++] = c;
	else
		part->overflowed = true;
}

static void
tool_addr_put(struct tool_addr_parse *parse, char c)
{
	tool_addr_part_put(parse->in_angle ? &parse->angle : &parse->bare, c);
}

static enum tool_mail_result
tool_addr_finish(struct tool_addr_parse *parse, struct tool_addr_list *list, char *bad_address,
		 size_t bad_address_size)
{
	const struct tool_addr_part *part = parse->has_angle ? &parse->angle : &parse->bare;
	enum tool_mail_result result = TOOL_MAIL_OK;
	if (part->overflowed)
		result = TOOL_MAIL_BAD_ADDRESS;
	else if (part->len > 0)
		result = tool_addr_list_add(list, part->text, part->len);
	if (result == TOOL_MAIL_BAD_ADDRESS && bad_address_size > 0) {
		size_t copy_size = part->len < bad_address_size - 1u ? part->len : bad_address_size - 1u;
		memcpy(bad_address, part->text, copy_size);
		bad_address[copy_size] = '\0';
	}
	memset(parse, 0, sizeof(*parse));
	return result;
}

/* One byte outside quotes and comments. Returns true when an address ends
 * here (',' or ';' outside angle brackets). */
static bool
tool_addr_structural(struct tool_addr_parse *parse, char c)
{
	switch (c) {
	case '<':
		parse->in_angle = true;
		parse->has_angle = true;
		parse->angle.len = 0;
		parse->angle.overflowed = false;
		return false;
	case '>':
		parse->in_angle = false;
		return false;
	case ':': /* group name, or the end of an obsolete source route */
		if (parse->in_angle)
			memset(&parse->angle, 0, sizeof(parse->angle));
		else
			memset(&parse->bare, 0, sizeof(parse->bare));
		return false;
	case ',':
		return !parse->in_angle;
	case ';':
		return !parse->in_angle;
	case ' ':
	case '\t':
	case '\r':
	case '\n':
		return false;
	default:
		tool_addr_put(parse, c);
		return false;
	}
}

enum tool_mail_result
tool_mail_parse_addresses(const char *value, size_t len, struct tool_addr_list *list,
			  char *bad_address, size_t bad_address_size)
{
	struct tool_addr_parse parse;
	memset(&parse, 0, sizeof(parse));
	bool in_quotes = false;
	uint32_t comment_depth = 0;
	for (size_t index = 0; index < len; index++) {
		char c = value[index];
		if (comment_depth > 0) {
			if (c == '\\')
				index++;
			else if (c == '(')
				comment_depth++;
			else if (c == ')')
				comment_depth--;
			continue;
		}
		if (in_quotes) {
			tool_addr_put(&parse, c);
			if (c == '\\' && index + 1u < len)
				tool_addr_put(&parse, value[++index]);
			else if (c == '"')
				in_quotes = false;
			continue;
		}
		if (c == '"') {
			in_quotes = true;
			tool_addr_put(&parse, c);
		} else if (c == '(') {
			comment_depth = 1;
		} else if (tool_addr_structural(&parse, c)) {
			enum tool_mail_result result =
				tool_addr_finish(&parse, list, bad_address, bad_address_size);
			if (result != TOOL_MAIL_OK)
				return result;
		}
	}
	return tool_addr_finish(&parse, list, bad_address, bad_address_size);
}

/* Append one line to the wire: broken into pieces of at most
 * TOOL_MAIL_LINE_MAX octets (header pieces after the first start with SP),
 * each dot-stuffed, each ended by CRLF. An empty line gives CRLF. */
static int
tool_mail_emit_line(struct tool_buf *wire, const uint8_t *line, size_t len, bool is_header)
{
	size_t offset = 0;
	bool is_first = true;
	do {
		size_t room = TOOL_MAIL_LINE_MAX;
		int rc = 0;
		if (!is_first && is_header) {
			rc = tool_buf_append(wire, " ", 1);
			room--;
		} else if (offset < len && line[offset] == '.') {
			rc = tool_buf_append(wire, ".", 1);
			room--;
		}
		size_t piece = len - offset < room ? len - offset : room;
		if (rc == 0)
			rc = tool_buf_append(wire, line + offset, piece);
		if (rc == 0)
			rc = tool_buf_append(wire, "\r\n", 2);
		if (rc != 0)
			return rc;
		offset += piece;
		is_first = false;
		ENG_ASSERT(offset <= len);
	} while (offset < len);
	return 0;
}

/* Length of the field name when line is "name:" or "name WSP* :", else 0. */
static size_t
tool_mail_field_name_size(const uint8_t *line, size_t len)
{
	size_t index = 0;
	while (index < len && line[index] > 32u && line[index] < 127u && line[index] != ':')
		index++;
	size_t name_size = index;
	while (index < len && (line[index] == ' ' || line[index] == '\t'))
		index++;
	if (name_size == 0 || index >= len || line[index] != ':')
		return 0;
	return name_size;
}

static bool
tool_mail_name_is(const uint8_t *name, size_t name_size, const char *want)
{
	return strlen(want) == name_size && strncasecmp((const char *)name, want, name_size) == 0;
}

static enum tool_mail_result
tool_mail_result_of(int rc)
{
	return rc == 0 ? TOOL_MAIL_OK : TOOL_MAIL_NO_MEMORY;
}

/* The open To/Cc/Bcc field ended: take its addresses (-t). */
static enum tool_mail_result
tool_mail_close_field(struct tool_mail_state *state)
{
	enum tool_mail_result result = TOOL_MAIL_OK;
	bool wants_addresses = state->field == TOOL_FIELD_RCPT || state->field == TOOL_FIELD_BCC;
	if (wants_addresses && state->input->extract_recipients) {
		struct tool_mail *mail = state->mail;
		result = tool_mail_parse_addresses((const char *)state->field_value.data,
						   state->field_value.len, &mail->rcpts,
						   mail->bad_address, sizeof(mail->bad_address));
	}
	state->field = TOOL_FIELD_NONE;
	state->field_value.len = 0;
	return result;
}

static int
tool_mail_add_field(struct tool_buf *wire, const char *name, const char *value)
{
	struct tool_buf line = { 0 };
	int rc = tool_buf_append(&line, name, strlen(name));
	if (rc == 0)
		rc = tool_buf_append(&line, ": ", 2);
	if (rc == 0)
		rc = tool_buf_append(&line, value, strlen(value));
	ENG_ASSERT(rc != 0 || memchr(line.data, '\n', line.len) == NULL);
	ENG_ASSERT(rc != 0 || memchr(line.data, '\r', line.len) == NULL);
	if (rc == 0)
		rc = tool_mail_emit_line(wire, line.data, line.len, true);
	tool_buf_free(&line);
	return rc;
}

/* The header section ended: close the open field, add what is missing. */
static enum tool_mail_result
tool_mail_end_headers(struct tool_mail_state *state)
{
	enum tool_mail_result result = tool_mail_close_field(state);
	if (result != TOOL_MAIL_OK)
		return result;
	struct tool_mail *mail = state->mail;
	const struct tool_mail_input *input = state->input;
	int rc = 0;
	if (!state->has_from && input->from_value != NULL) {
		rc = tool_mail_add_field(&mail->wire, "From", input->from_value);
		mail->added |= TOOL_MAIL_ADDED_FROM;
	}
	if (rc == 0 && !state->has_date && input->date_value != NULL) {
		rc = tool_mail_add_field(&mail->wire, "Date", input->date_value);
		mail->added |= TOOL_MAIL_ADDED_DATE;
	}
	if (rc == 0 && !state->has_message_id && input->message_id_value != NULL) {
		rc = tool_mail_add_field(&mail->wire, "Message-ID", input->message_id_value);
		mail->added |= TOOL_MAIL_ADDED_MESSAGE_ID;
	}
	state->in_headers = false;
	return tool_mail_result_of(rc);
}

/* A header field's first line: note its kind, emit it unless Bcc. */
static enum tool_mail_result
tool_mail_field_start(struct tool_mail_state *state, const uint8_t *line, size_t len,
		      size_t name_size)
{
	enum tool_mail_result result = tool_mail_close_field(state);
	if (result != TOOL_MAIL_OK)
		return result;
	state->field = TOOL_FIELD_OTHER;
	if (tool_mail_name_is(line, name_size, "to") || tool_mail_name_is(line, name_size, "cc"))
		state->field = TOOL_FIELD_RCPT;
	else if (tool_mail_name_is(line, name_size, "bcc"))
		state->field = TOOL_FIELD_BCC;
	state->has_from |= tool_mail_name_is(line, name_size, "from");
	state->has_date |= tool_mail_name_is(line, name_size, "date");
	state->has_message_id |= tool_mail_name_is(line, name_size, "message-id");
	if (state->field == TOOL_FIELD_BCC) {
		state->mail->bcc_removed_count++;
	} else if (tool_mail_emit_line(&state->mail->wire, line, len, true) != 0) {
		return TOOL_MAIL_NO_MEMORY;
	}
	if (state->field == TOOL_FIELD_OTHER || !state->input->extract_recipients)
		return TOOL_MAIL_OK;
	const uint8_t *colon = memchr(line, ':', len);
	ENG_ASSERT(colon != NULL);
	size_t value_offset = (size_t)(colon - line) + 1u;
	return tool_mail_result_of(
		tool_buf_append(&state->field_value, line + value_offset, len - value_offset));
}

/* A continuation line of the open field. */
static enum tool_mail_result
tool_mail_field_continue(struct tool_mail_state *state, const uint8_t *line, size_t len)
{
	ENG_ASSERT(state->field != TOOL_FIELD_NONE);
	bool wants_addresses = state->field == TOOL_FIELD_RCPT || state->field == TOOL_FIELD_BCC;
	if (wants_addresses && state->input->extract_recipients) {
		if (len > TOOL_MAIL_FIELD_MAX - state->field_value.len)
			return TOOL_MAIL_FIELD_TOO_LONG;
		if (tool_buf_append(&state->field_value, line, len) != 0)
			return TOOL_MAIL_NO_MEMORY;
	}
	if (state->field == TOOL_FIELD_BCC)
		return TOOL_MAIL_OK;
	return tool_mail_result_of(tool_mail_emit_line(&state->mail->wire, line, len, true));
}

static enum tool_mail_result
tool_mail_header_line(struct tool_mail_state *state, const uint8_t *line, size_t len)
{
	ENG_ASSERT(state->in_headers);
	bool is_continuation = len > 0 && (line[0] == ' ' || line[0] == '\t');
	if (is_continuation && state->field != TOOL_FIELD_NONE)
		return tool_mail_field_continue(state, line, len);
	size_t name_size = tool_mail_field_name_size(line, len);
	if (name_size > 0) {
		if (len > TOOL_MAIL_FIELD_MAX)
			return TOOL_MAIL_FIELD_TOO_LONG;
		return tool_mail_field_start(state, line, len, name_size);
	}
	/* An empty line, or the first body line of a message whose body does
	 * not start with one: the separator is inserted in that case. */
	enum tool_mail_result result = tool_mail_end_headers(state);
	if (result != TOOL_MAIL_OK)
		return result;
	int rc = tool_mail_emit_line(&state->mail->wire, line, 0, false);
	if (rc == 0 && len > 0)
		rc = tool_mail_emit_line(&state->mail->wire, line, len, false);
	return tool_mail_result_of(rc);
}

enum tool_mail_result
tool_mail_prepare(const uint8_t *raw, size_t len, const struct tool_mail_input *input,
		  struct tool_mail *mail)
{
	ENG_ASSERT(mail->wire.len == 0);
	struct tool_mail_state state = { .mail = mail, .input = input, .in_headers = true };
	for (size_t index = 0; index < len; index++)
		mail->has_8bit |= raw[index] >= 0x80u;
	enum tool_mail_result result = TOOL_MAIL_OK;
	size_t offset = 0;
	while (offset < len && result == TOOL_MAIL_OK) {
		const uint8_t *line = raw + offset;
		const uint8_t *lf = memchr(line, '\n', len - offset);
		size_t line_len = lf != NULL ? (size_t)(lf - line) : len - offset;
		offset += line_len + (lf != NULL ? 1u : 0u);
		if (lf != NULL && line_len > 0 && line[line_len - 1u] == '\r')
			line_len--;
		if (state.in_headers)
			result = tool_mail_header_line(&state, line, line_len);
		else
			result = tool_mail_result_of(
				tool_mail_emit_line(&mail->wire, line, line_len, false));
	}
	if (result == TOOL_MAIL_OK && state.in_headers)
		result = tool_mail_end_headers(&state);
	tool_buf_free(&state.field_value);
	ENG_ASSERT(result != TOOL_MAIL_OK || mail->wire.len >= 2u || len == 0);
	return result;
}
