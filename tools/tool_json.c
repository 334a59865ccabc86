/*
 * tool_json.c - streaming JSON writer and string escaper (see tool_json.h).
 *
 * Escaping follows RFC 8259 section 7: '"', '\\' and the control
 * characters U+0000..U+001F must be escaped; everything else may appear
 * as is. UTF-8 validity follows RFC 3629 section 4 (the byte table of
 * well-formed sequences). Runs of bytes that need no escaping are written
 * with one fwrite, so a multi-megabyte body costs a few calls per line.
 */
#include "tool_json.h"

#include <inttypes.h>
#include <math.h>

#include "engine/eng_common.h"

/* Continuation byte: 10xxxxxx. */
static bool
tool_utf8_is_continuation(uint8_t byte)
{
	return (byte & 0xc0u) == 0x80u;
}

size_t
tool_utf8_sequence_size(const uint8_t *p, size_t len)
{
	ENG_ASSERT(p != NULL);
	ENG_ASSERT(len > 0);
	uint8_t lead = p[0];
	size_t size;
	uint8_t second_min = 0x80u, second_max = 0xbfu; /* RFC 3629 section 4 */
	if (lead < 0x80u)
		return 1;
	if (lead >= 0xc2u && lead <= 0xdfu) {
		size = 2;
	} else if (lead >= 0xe0u && lead <= 0xefu) {
		size = 3;
		if (lead == 0xe0u)
			second_min = 0xa0u; /* overlong */
		if (lead == 0xedu)
			second_max = 0x9fu; /* surrogates */
	} else if (lead >= 0xf0u && lead <= 0xf4u) {
		size = 4;
		if (lead == 0xf0u)
			second_min = 0x90u; /* overlong */
		if (lead == 0xf4u)
			second_max = 0x8fu; /* above U+10FFFF */
	} else {
		return 0; /* 80..C1, F5..FF never lead */
	}
	if (len < size || p[1] < second_min || p[1] > second_max)
		return 0;
	for (size_t i = 2; i < size; i++) {
		if (!tool_utf8_is_continuation(p[i]))
			return 0;
	}
	return size;
}

/* Bytes that go out unchanged: printable ASCII but '"' and '\\'. */
static bool
tool_json_byte_is_plain(uint8_t byte)
{
	return byte >= 0x20u && byte < 0x80u && byte != '"' && byte != '\\';
}

static void
tool_json_write_escape(FILE *out, uint8_t byte)
{
	switch (byte) {
	case '"': fputs("\\\"", out); break;
	case '\\': fputs("\\\\", out); break;
	case '\b': fputs("\\b", out); break;
	case '\f': fputs("\\f", out); break;
	case '\n': fputs("\\n", out); break;
	case '\r': fputs("\\r", out); break;
	case '\t': fputs("\\t", out); break;
	default: fprintf(out, "\\u%04x", (unsigned)byte); break;
	}
}

void
tool_json_write_string(FILE *out, const uint8_t *data, size_t len)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(data != NULL || len == 0);
	putc('"', out);
	size_t i = 0;
	while (i < len) {
		size_t run = i;
		while (run < len && tool_json_byte_is_plain(data[run]))
			run++;
		if (run > i) {
			fwrite(data + i, 1, run - i, out);
			i = run;
			continue;
		}
		size_t size = data[i] >= 0x80u ? tool_utf8_sequence_size(data + i, len - i) : 0;
		if (size > 0)
			fwrite(data + i, 1, size, out); /* valid UTF-8: as is */
		else
			tool_json_write_escape(out, data[i]); /* one byte as \u00XX */
		i += size > 0 ? size : 1;
	}
	ENG_ASSERT(i == len);
	putc('"', out);
}

void
tool_json_init(struct tool_json *json, FILE *out)
{
	ENG_ASSERT(json != NULL);
	ENG_ASSERT(out != NULL);
	memset(json, 0, sizeof(*json));
	json->out = out;
}

void
tool_json_finish(struct tool_json *json)
{
	ENG_ASSERT(json->depth == 0);
	ENG_ASSERT(json->has_items[0]); /* one top-level value was written */
	putc('\n', json->out);
}

/* Comma and key before a value; the key rule is asserted here. */
static void
tool_json_prefix(struct tool_json *json, const char *key)
{
	uint32_t d = json->depth;
	bool in_object = d > 0 && !json->is_array[d];
	ENG_ASSERT(in_object == (key != NULL));
	ENG_ASSERT(d > 0 || !json->has_items[0]); /* a single top-level value */
	if (json->has_items[d])
		putc(',', json->out);
	json->has_items[d] = true;
	if (key != NULL) {
		tool_json_write_string(json->out, (const uint8_t *)key, strlen(key));
		putc(':', json->out);
	}
}

static void
tool_json_open(struct tool_json *json, const char *key, bool is_array)
{
	tool_json_prefix(json, key);
	ENG_ASSERT(json->depth + 1 < TOOL_JSON_DEPTH_MAX);
	json->depth++;
	json->is_array[json->depth] = is_array;
	json->has_items[json->depth] = false;
	putc(is_array ? '[' : '{', json->out);
}

static void
tool_json_close(struct tool_json *json, bool is_array)
{
	ENG_ASSERT(json->depth > 0);
	ENG_ASSERT(json->is_array[json->depth] == is_array);
	json->depth--;
	putc(is_array ? ']' : '}', json->out);
}

void
tool_json_object_begin(struct tool_json *json, const char *key)
{
	tool_json_open(json, key, false);
}

void
tool_json_object_end(struct tool_json *json)
{
	tool_json_close(json, false);
}

void
tool_json_array_begin(struct tool_json *json, const char *key)
{
	tool_json_open(json, key, true);
}

void
tool_json_array_end(struct tool_json *json)
{
	tool_json_close(json, true);
}

void
tool_json_bytes(struct tool_json *json, const char *key, const uint8_t *data, size_t len)
{
	tool_json_prefix(json, key);
	tool_json_write_string(json->out, data, len);
}

void
tool_json_string(struct tool_json *json, const char *key, const char *text)
{
	if (text == NULL) {
		tool_json_null(json, key);
		return;
	}
	tool_json_bytes(json, key, (const uint8_t *)text, strlen(text));
}

void
tool_json_uint(struct tool_json *json, const char *key, uint64_t value)
{
	tool_json_prefix(json, key);
	fprintf(json->out, "%" PRIu64, value);
}

void
tool_json_double(struct tool_json *json, const char *key, double value)
{
	ENG_ASSERT(isfinite(value)); /* JSON has no NaN or infinity */
	tool_json_prefix(json, key);
	fprintf(json->out, "%.3f", value);
}

void
tool_json_bool(struct tool_json *json, const char *key, bool value)
{
	tool_json_prefix(json, key);
	fputs(value ? "true" : "false", json->out);
}

void
tool_json_null(struct tool_json *json, const char *key)
{
	tool_json_prefix(json, key);
	fputs("null", json->out);
}
