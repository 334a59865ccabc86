/*
 * test_tool_text.c - the inspector's pure helpers: JSON string escaping
 * (RFC 8259 section 7) with UTF-8 validation (RFC 3629 section 4), the
 * streaming writer's commas, un-dot-stuffing (RFC 5321 4.5.2) and the
 * header/body split.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool_json.h"
#include "tools/tool_text.h"

/* tool_json_write_string into a memory stream; returns the text (free it). */
static char *
capture_json_string(const char *data, size_t len)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&buf, &size);
	cr_assert_not_null(out);
	tool_json_write_string(out, (const uint8_t *)data, len);
	fclose(out);
	return buf;
}

/* Arrays, not pointers: Criterion copies parameters into a fresh process. */
struct escape_case {
	char input[16];
	size_t input_len;
	char want[48];
};

#define ESCAPE(in, out) { in, sizeof(in) - 1, out }

ParameterizedTestParameters(tool_json, escapes)
{
	static struct escape_case cases[] = {
		ESCAPE("", "\"\""),
		ESCAPE("plain text", "\"plain text\""),
		ESCAPE("say \"hi\"", "\"say \\\"hi\\\"\""),
		ESCAPE("back\\slash", "\"back\\\\slash\""),
		ESCAPE("\r\n\t\b\f", "\"\\r\\n\\t\\b\\f\""),
		ESCAPE("\x01\x1f", "\"\\u0001\\u001f\""),
		ESCAPE("nul\0byte", "\"nul\\u0000byte\""),
		ESCAPE("caf\xc3\xa9", "\"caf\xc3\xa9\""),		/* valid 2-byte */
		ESCAPE("\xe2\x82\xac", "\"\xe2\x82\xac\""),		/* euro sign */
		ESCAPE("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""),	/* 4-byte */
		ESCAPE("\xff", "\"\\u00ff\""),				/* never valid */
		ESCAPE("\xc3", "\"\\u00c3\""),				/* truncated */
		ESCAPE("\xc0\xaf", "\"\\u00c0\\u00af\""),		/* overlong */
		ESCAPE("\xe0\x80\xaf", "\"\\u00e0\\u0080\\u00af\""),	/* overlong */
		ESCAPE("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""),	/* surrogate */
		ESCAPE("\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""), /* > U+10FFFF */
		ESCAPE("\x80x", "\"\\u0080x\""),			/* lone continuation */
		ESCAPE("a\xe2\x82z", "\"a\\u00e2\\u0082z\""),		/* cut sequence */
		ESCAPE("\x7f", "\"\x7f\""),				/* DEL is legal JSON */
	};
	return cr_make_param_array(struct escape_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct escape_case *c, tool_json, escapes)
{
	char *got = capture_json_string(c->input, c->input_len);
	cr_assert_str_eq(got, c->want);
	free(got);
}

Test(tool_json, writer_places_commas_and_keys)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&buf, &size);
	struct tool_json json;
	tool_json_init(&json, out);
	tool_json_object_begin(&json, NULL);
	tool_json_uint(&json, "n", 3);
	tool_json_array_begin(&json, "list");
	tool_json_string(&json, NULL, "a");
	tool_json_object_begin(&json, NULL);
	tool_json_bool(&json, "ok", true);
	tool_json_null(&json, "none");
	tool_json_object_end(&json);
	tool_json_array_end(&json);
	tool_json_array_begin(&json, "empty");
	tool_json_array_end(&json);
	tool_json_string(&json, "missing", NULL);
	tool_json_object_end(&json);
	tool_json_finish(&json);
	fclose(out);
	cr_assert_str_eq(buf, "{\"n\":3,\"list\":[\"a\",{\"ok\":true,\"none\":null}],\"empty\":[],"
			      "\"missing\":null}\n");
	free(buf);
}

Test(tool_json, key_inside_an_array_is_a_programmer_error, .signal = SIGABRT)
{
	struct tool_json json;
	tool_json_init(&json, stdout);
	tool_json_array_begin(&json, NULL);
	tool_json_uint(&json, "key", 1);
}

struct unstuff_case {
	char wire[32];
	char want[32];
};

ParameterizedTestParameters(tool_text, unstuff)
{
	static struct unstuff_case cases[] = {
		{ "\r\n.\r\n", "\r\n" },
		{ "a\r\n.\r\n", "a\r\n" },
		{ "..a\r\n.\r\n", ".a\r\n" },
		{ "...\r\n.\r\n", "..\r\n" },
		{ "..\r\n.\r\n", ".\r\n" },
		{ "x\r\n..y\r\nz.\r\n.\r\n", "x\r\n.y\r\nz.\r\n" },
		{ "a.b\r\n.\r\n", "a.b\r\n" },
	};
	return cr_make_param_array(struct unstuff_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct unstuff_case *c, tool_text, unstuff)
{
	size_t wire_size = strlen(c->wire);
	uint8_t out[64];
	size_t n = tool_message_unstuff((const uint8_t *)c->wire, wire_size, out);
	cr_assert_eq(n, strlen(c->want), "size %zu for %s", n, c->wire);
	cr_assert(memcmp(out, c->want, n) == 0);
}

Test(tool_text, split_at_the_first_empty_line)
{
	size_t headers_size, body_offset;
	const char *m = "A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n";
	tool_message_split((const uint8_t *)m, strlen(m), &headers_size, &body_offset);
	cr_assert_eq(headers_size, 12);
	cr_assert_eq(body_offset, 14);
	const char *no_body = "A: 1\r\n";
	tool_message_split((const uint8_t *)no_body, 6, &headers_size, &body_offset);
	cr_assert_eq(headers_size, 6);
	cr_assert_eq(body_offset, 6);
	const char *no_headers = "\r\nbody\r\n";
	tool_message_split((const uint8_t *)no_headers, 8, &headers_size, &body_offset);
	cr_assert_eq(headers_size, 0);
	cr_assert_eq(body_offset, 2);
}

Test(tool_text, time_is_iso8601_utc)
{
	char out[TOOL_TIME_SIZE];
	tool_format_time(1714564800ull * 1000000000ull + 999999999ull, out);
	cr_assert_str_eq(out, "2024-05-01T12:00:00Z");
	tool_format_time(0, out);
	cr_assert_str_eq(out, "1970-01-01T00:00:00Z");
}

Test(tool_text, escaped_printing_keeps_the_terminal_safe)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&buf, &size);
	const char in[] = "ok caf\xc3\xa9 \x1b[31m \\ \xff";
	tool_print_escaped(out, (const uint8_t *)in, sizeof(in) - 1);
	fclose(out);
	cr_assert_str_eq(buf, "ok caf\xc3\xa9 \\x1b[31m \\x5c \\xff");
	free(buf);
}
