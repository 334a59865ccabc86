/*
 * test_reply.c - the SMTP reply parser: a table of valid and invalid
 * replies (reliability.md OUT-02), each fed whole, split in two at every
 * byte boundary, in 3-byte chunks and byte by byte, with identical
 * results; bounds at and past each limit; enhanced status sanitizing.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_reply.h"

#define S(x) x, sizeof(x) - 1u

/* Rows hold their bytes inline: Criterion hands parameters to the test
 * process by copy, so pointers into this binary's data cannot be used. */
struct reply_case {
	char name[40];
	char input[64];
	size_t input_len;
	enum smtp_parse_result result;
	enum smtp_reply_error error;
	size_t consumed; /* expected bytes taken */
	uint16_t code;
	uint16_t line_count;
	char text[48]; /* joined text, for OK */
	uint8_t status_class;
	uint16_t subject;
	uint16_t detail;
};

#define OK(n, in, c, lines, t) \
	{ n, S(in), SMTP_PARSE_OK, SMTP_REPLY_ERROR_NONE, sizeof(in) - 1u, c, lines, t, 0, 0, 0 }
#define OK_ENH(n, in, c, t, cl, su, de) \
	{ n, S(in), SMTP_PARSE_OK, SMTP_REPLY_ERROR_NONE, sizeof(in) - 1u, c, 1, t, cl, su, de }
#define BAD(n, in, err, at) { n, S(in), SMTP_PARSE_ERROR, err, at, 0, 0, "", 0, 0, 0 }
#define AGAIN(n, in) \
	{ n, S(in), SMTP_PARSE_AGAIN, SMTP_REPLY_ERROR_NONE, sizeof(in) - 1u, 0, 0, "", 0, 0, 0 }

static struct reply_case reply_cases[] = {
	OK("greeting", "220 mx.example.com ESMTP\r\n", 220, 1, "mx.example.com ESMTP"),
	OK("bare code", "250\r\n", 250, 1, ""),
	OK("code and space", "250 \r\n", 250, 1, ""),
	OK("multi-line", "250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 250, 3,
	   "mx\nPIPELINING\nSIZE 1000"),
	OK("empty continuation", "250-\r\n250 ok\r\n", 250, 2, "\nok"),
	OK("intermediate", "354 End data with <CR><LF>.<CR><LF>\r\n", 354, 1,
	   "End data with <CR><LF>.<CR><LF>"),
	OK("lowest code", "200 x\r\n", 200, 1, "x"),
	OK("highest code", "599 x\r\n", 599, 1, "x"),
	OK("second digit 9", "290 odd\r\n", 290, 1, "odd"),
	OK("tab kept", "220 a\tb\r\n", 220, 1, "a\tb"),
	OK("control byte sanitized", "220 a\x01" "b\x7f\r\n", 220, 1, "a?b?"),
	OK("utf-8 kept", "220 caf\xc3\xa9\r\n", 220, 1, "caf\xc3\xa9"),
	{ "first of two replies", S("250 a\r\n251 b\r\n"), SMTP_PARSE_OK, SMTP_REPLY_ERROR_NONE, 7,
	  250, 1, "a", 0, 0, 0 },
	OK("dash in text", "250 a-b c\r\n", 250, 1, "a-b c"),
	OK_ENH("enhanced", "550 5.1.1 No such user\r\n", 550, "5.1.1 No such user", 5, 1, 1),
	OK_ENH("enhanced alone", "250 2.0.0\r\n", 250, "2.0.0", 2, 0, 0),
	OK_ENH("enhanced 3 digits", "550 5.1.10 null MX\r\n", 550, "5.1.10 null MX", 5, 1, 10),
	OK_ENH("enhanced max", "452 4.999.999 x\r\n", 452, "4.999.999 x", 4, 999, 999),
	OK_ENH("enhanced class mismatch dropped", "550 4.1.1 odd\r\n", 550, "4.1.1 odd", 0, 0,
	       0),
	OK_ENH("enhanced detail 4 digits", "450 4.7.1000 x\r\n", 450, "4.7.1000 x", 0, 0, 0),
	OK_ENH("enhanced glued to text", "550 5.1.1x\r\n", 550, "5.1.1x", 0, 0, 0),
	OK_ENH("enhanced class 3", "354 3.0.0 go\r\n", 354, "3.0.0 go", 0, 0, 0),
	OK_ENH("enhanced no subject", "550 5..1 x\r\n", 550, "5..1 x", 0, 0, 0),
	BAD("four digits", "2200 x\r\n", SMTP_REPLY_ERROR_SEPARATOR, 3),
	BAD("two digits", "22 x\r\n", SMTP_REPLY_ERROR_CODE, 2),
	BAD("underscore separator", "220_x\r\n", SMTP_REPLY_ERROR_SEPARATOR, 3),
	BAD("first digit 0", "020 x\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("first digit 1", "120 x\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("first digit 6", "620 x\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("letter in code", "2O0 x\r\n", SMTP_REPLY_ERROR_CODE, 1),
	BAD("code change", "220-a\r\n221 b\r\n", SMTP_REPLY_ERROR_CODE_CHANGED, 9),
	BAD("code change later", "250-a\r\n250-b\r\n251 c\r\n", SMTP_REPLY_ERROR_CODE_CHANGED,
	    16),
	BAD("class change", "250-a\r\n550 b\r\n", SMTP_REPLY_ERROR_CODE_CHANGED, 9),
	BAD("bare LF ends line", "220 a\n", SMTP_REPLY_ERROR_BARE_LF, 5),
	BAD("bare LF after code", "220\n", SMTP_REPLY_ERROR_BARE_LF, 3),
	BAD("bare CR in text", "220 a\rb\r\n", SMTP_REPLY_ERROR_BARE_CR, 6),
	BAD("CR CR LF", "220 a\r\r\n", SMTP_REPLY_ERROR_BARE_CR, 6),
	BAD("NUL in text", "220 a\0b\r\n", SMTP_REPLY_ERROR_NUL, 5),
	BAD("empty line", "\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("text only", "hello\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("leading space", " 250 x\r\n", SMTP_REPLY_ERROR_CODE, 0),
	BAD("empty line inside multi-line", "250-a\r\n\r\n", SMTP_REPLY_ERROR_CODE, 7),
	BAD("bare LF inside multi-line", "250-a\n250 b\r\n", SMTP_REPLY_ERROR_BARE_LF, 5),
	AGAIN("partial text", "220 partial"),
	AGAIN("partial multi-line", "250-a\r\n"),
	AGAIN("CR pending", "220 x\r"),
	AGAIN("code only", "25"),
	AGAIN("nothing", ""),
};

ParameterizedTestParameters(smtp_reply, table)
{
	return cr_make_param_array(struct reply_case, reply_cases,
				   sizeof(reply_cases) / sizeof(reply_cases[0]));
}

/* What a parse run yields, comparable across chunkings. */
struct parse_summary {
	enum smtp_parse_result result;
	enum smtp_reply_error error;
	size_t consumed;
	uint16_t code;
	uint16_t line_count;
	uint16_t text_size;
	char text[SMTP_REPLY_TEXT_MAX];
	struct smtp_enhanced_status enhanced;
	uint16_t enhanced_size;
};

/* Feed input in chunks of chunk bytes after a first chunk of first bytes
 * (first == 0: all chunks are chunk bytes), until OK, ERROR or the end. */
static void
parse_chunked(const char *input, size_t len, size_t first, size_t chunk,
	      struct parse_summary *out)
{
	static struct smtp_reply_parser parser;
	size_t pos = 0;
	enum smtp_parse_result result = SMTP_PARSE_AGAIN;

	memset(out, 0, sizeof(*out));
	smtp_reply_parser_init(&parser);
	while (pos < len || (len == 0 && pos == 0)) {
		size_t size = pos == 0 && first > 0 ? first : chunk;
		size_t used = 0;

		if (size > len - pos)
			size = len - pos;
		result = smtp_reply_parse(&parser, (const uint8_t *)input + pos, size, &used);
		cr_assert_leq(used, size);
		pos += used;
		if (result != SMTP_PARSE_AGAIN || len == 0)
			break;
		cr_assert_eq(used, size, "AGAIN must take every byte");
	}
	out->result = result;
	out->consumed = pos;
	out->error = parser.error;
	if (result != SMTP_PARSE_OK)
		return;
	out->code = parser.reply.code;
	out->line_count = parser.reply.line_count;
	out->text_size = parser.reply.text_size;
	memcpy(out->text, parser.reply.text, parser.reply.text_size);
	out->enhanced = parser.reply.enhanced;
	out->enhanced_size = parser.reply.enhanced_size;
}

static void
summary_assert_equal(const struct parse_summary *a, const struct parse_summary *b,
		     const char *name, size_t split)
{
	cr_assert_eq(a->result, b->result, "%s split %zu: result", name, split);
	cr_assert_eq(a->error, b->error, "%s split %zu: error", name, split);
	cr_assert_eq(a->consumed, b->consumed, "%s split %zu: consumed", name, split);
	cr_assert_eq(a->code, b->code, "%s split %zu: code", name, split);
	cr_assert_eq(a->line_count, b->line_count, "%s split %zu: lines", name, split);
	cr_assert_eq(a->text_size, b->text_size, "%s split %zu: text size", name, split);
	cr_assert(memcmp(a->text, b->text, a->text_size) == 0, "%s split %zu: text", name, split);
	cr_assert(memcmp(&a->enhanced, &b->enhanced, sizeof(a->enhanced)) == 0, "%s: enhanced",
		  name);
	cr_assert_eq(a->enhanced_size, b->enhanced_size, "%s: enhanced size", name);
}

ParameterizedTest(struct reply_case *row, smtp_reply, table)
{
	static struct parse_summary whole;
	static struct parse_summary split;

	parse_chunked(row->input, row->input_len, 0, row->input_len ? row->input_len : 1, &whole);
	cr_assert_eq(whole.result, row->result, "%s: result %d", row->name, whole.result);
	cr_assert_eq(whole.error, row->error, "%s: error %s", row->name,
		     smtp_reply_error_name(whole.error));
	cr_assert_eq(whole.consumed, row->consumed, "%s: consumed %zu", row->name, whole.consumed);
	if (row->result == SMTP_PARSE_OK) {
		cr_assert_eq(whole.code, row->code, "%s: code", row->name);
		cr_assert_eq(whole.line_count, row->line_count, "%s: lines", row->name);
		cr_assert_eq(whole.text_size, strlen(row->text), "%s: text size %u", row->name,
			     whole.text_size);
		cr_assert(memcmp(whole.text, row->text, whole.text_size) == 0, "%s: text",
			  row->name);
		cr_assert_eq(whole.enhanced.status_class, row->status_class, "%s: class",
			     row->name);
		cr_assert_eq(whole.enhanced.subject, row->subject, "%s: subject", row->name);
		cr_assert_eq(whole.enhanced.detail, row->detail, "%s: detail", row->name);
	}
	for (size_t at = 1; at < row->input_len; at++) {
		parse_chunked(row->input, row->input_len, at, row->input_len, &split);
		summary_assert_equal(&whole, &split, row->name, at);
	}
	for (size_t chunk = 1; chunk <= 3 && row->input_len > 0; chunk++) {
		parse_chunked(row->input, row->input_len, 0, chunk, &split);
		summary_assert_equal(&whole, &split, row->name, chunk);
	}
}

Test(smtp_reply, several_replies_in_one_buffer_one_at_a_time)
{
	static struct smtp_reply_parser parser;
	const char *input = "250 2.1.0 ok\r\n250-a\r\n250 b\r\n550 5.1.1 no\r\n354 go";
	size_t len = strlen(input);
	size_t pos = 0;
	size_t used = 0;
	uint16_t codes[3] = { 250, 250, 550 };

	smtp_reply_parser_init(&parser);
	cr_assert(smtp_reply_parser_is_between_replies(&parser));
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)input + pos, len - pos,
					      &used),
			     SMTP_PARSE_OK);
		cr_assert_eq(parser.reply.code, codes[i]);
		cr_assert(smtp_reply_parser_is_between_replies(&parser));
		pos += used;
	}
	cr_assert_eq(parser.reply.enhanced.status_class, 5);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)input + pos, len - pos, &used),
		     SMTP_PARSE_AGAIN);
	cr_assert_eq(used, len - pos);
	cr_assert_not(smtp_reply_parser_is_between_replies(&parser));
}

Test(smtp_reply, error_is_sticky_until_init)
{
	static struct smtp_reply_parser parser;
	size_t used = 0;

	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)"620 x\r\n", 7, &used),
		     SMTP_PARSE_ERROR);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)"250 ok\r\n", 8, &used),
		     SMTP_PARSE_ERROR);
	cr_assert_eq(used, 0);
	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)"250 ok\r\n", 8, &used),
		     SMTP_PARSE_OK);
}

/* "250 " + text of text_len bytes + CRLF. */
static char *
line_of(size_t text_len, size_t *len)
{
	char *buf = malloc(text_len + 6);

	cr_assert_not_null(buf);
	memcpy(buf, "250 ", 4);
	memset(buf + 4, 'x', text_len);
	memcpy(buf + 4 + text_len, "\r\n", 2);
	*len = text_len + 6;
	return buf;
}

Test(smtp_reply, line_at_the_limit_is_accepted_one_more_is_an_error)
{
	static struct parse_summary summary;
	size_t len = 0;
	char *at = line_of(SMTP_REPLY_LINE_MAX - 4u, &len);
	char *over = NULL;

	parse_chunked(at, len, 0, len, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_OK);
	cr_assert_eq(summary.text_size, SMTP_REPLY_LINE_MAX - 4u);
	over = line_of(SMTP_REPLY_LINE_MAX - 3u, &len);
	parse_chunked(over, len, 0, len, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_ERROR);
	cr_assert_eq(summary.error, SMTP_REPLY_ERROR_LINE_TOO_LONG);
	cr_assert_eq(summary.consumed, SMTP_REPLY_LINE_MAX);
	free(at);
	free(over);
}

Test(smtp_reply, one_mebibyte_line_stops_at_the_limit)
{
	static struct parse_summary summary;
	size_t len = 0;
	char *huge = line_of(1024u * 1024u, &len);

	parse_chunked(huge, len, 0, 4096, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_ERROR);
	cr_assert_eq(summary.error, SMTP_REPLY_ERROR_LINE_TOO_LONG);
	cr_assert_eq(summary.consumed, SMTP_REPLY_LINE_MAX);
	free(huge);
}

/* count lines "250-l" ... "250 l". */
static char *
lines_of(size_t count, size_t *len)
{
	char *buf = malloc(count * 7u);

	cr_assert_not_null(buf);
	for (size_t i = 0; i < count; i++)
		memcpy(buf + i * 7u, i + 1 == count ? "250 l\r\n" : "250-l\r\n", 7);
	*len = count * 7u;
	return buf;
}

Test(smtp_reply, lines_at_the_limit_accepted_one_more_is_an_error)
{
	static struct parse_summary summary;
	size_t len = 0;
	char *at = lines_of(SMTP_REPLY_LINES_MAX, &len);
	char *over = NULL;

	parse_chunked(at, len, 0, len, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_OK);
	cr_assert_eq(summary.line_count, SMTP_REPLY_LINES_MAX);
	over = lines_of(SMTP_REPLY_LINES_MAX + 1u, &len);
	parse_chunked(over, len, 0, len, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_ERROR);
	cr_assert_eq(summary.error, SMTP_REPLY_ERROR_TOO_MANY_LINES);
	free(at);
	free(over);
}

Test(smtp_reply, hundred_thousand_continuation_lines_are_an_error)
{
	static struct parse_summary summary;
	size_t count = 100000;
	char *buf = malloc(count * 6u);

	cr_assert_not_null(buf);
	for (size_t i = 0; i < count; i++)
		memcpy(buf + i * 6u, "250-\r\n", 6);
	parse_chunked(buf, count * 6u, 0, 1000, &summary);
	cr_assert_eq(summary.result, SMTP_PARSE_ERROR);
	cr_assert_eq(summary.error, SMTP_REPLY_ERROR_TOO_MANY_LINES);
	cr_assert_eq(summary.consumed, SMTP_REPLY_LINES_MAX * 6u + 3u);
	free(buf);
}

Test(smtp_reply, text_over_the_total_is_truncated_not_an_error)
{
	static struct smtp_reply_parser parser;
	size_t line_text = 1000;
	size_t count = 20; /* 20 000 bytes of text > SMTP_REPLY_TEXT_MAX */
	size_t len = count * (line_text + 6u);
	char *buf = malloc(len);
	size_t used = 0;
	const char *line = NULL;
	size_t line_size = 0;

	cr_assert_not_null(buf);
	for (size_t i = 0; i < count; i++) {
		char *p = buf + i * (line_text + 6u);

		memcpy(p, i + 1 == count ? "250 " : "250-", 4);
		memset(p + 4, (char)('a' + i), line_text);
		memcpy(p + 4 + line_text, "\r\n", 2);
	}
	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)buf, len, &used), SMTP_PARSE_OK);
	cr_assert_eq(used, len);
	cr_assert(parser.reply.text_is_truncated);
	cr_assert_eq(parser.reply.text_size, SMTP_REPLY_TEXT_MAX);
	cr_assert_eq(parser.reply.line_count, count);
	smtp_reply_line(&parser.reply, 0, &line, &line_size);
	cr_assert_eq(line_size, line_text);
	cr_assert_eq(line[0], 'a');
	smtp_reply_line(&parser.reply, (uint32_t)count - 1u, &line, &line_size);
	cr_assert_eq(line_size, 0, "the last line did not fit and is empty");
	free(buf);
}

Test(smtp_reply, lines_are_reachable_one_by_one)
{
	static struct smtp_reply_parser parser;
	const char *input = "250-mx.example\r\n250-SIZE 100\r\n250 8BITMIME\r\n";
	const char *line = NULL;
	size_t size = 0;
	size_t used = 0;

	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)input, strlen(input), &used),
		     SMTP_PARSE_OK);
	smtp_reply_line(&parser.reply, 1, &line, &size);
	cr_assert_eq(size, 8);
	cr_assert(memcmp(line, "SIZE 100", 8) == 0);
	smtp_reply_line(&parser.reply, 2, &line, &size);
	cr_assert(memcmp(line, "8BITMIME", size) == 0);
	cr_assert_eq(smtp_reply_class(&parser.reply), 2);
}

Test(smtp_reply, enhanced_status_size_covers_code_and_blanks)
{
	static struct smtp_reply_parser parser;
	const char *input = "451 4.7.1  Try later\r\n";
	size_t used = 0;

	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)input, strlen(input), &used),
		     SMTP_PARSE_OK);
	cr_assert_eq(parser.reply.enhanced.status_class, 4);
	cr_assert_eq(parser.reply.enhanced.subject, 7);
	cr_assert_eq(parser.reply.enhanced.detail, 1);
	cr_assert_eq(parser.reply.enhanced_size, 7);
	cr_assert(memcmp(parser.reply.text + parser.reply.enhanced_size, "Try later", 9) == 0);
}

Test(smtp_reply, enhanced_status_only_from_the_first_line)
{
	static struct smtp_reply_parser parser;
	const char *input = "550-Sorry\r\n550 5.1.1 gone\r\n";
	size_t used = 0;

	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)input, strlen(input), &used),
		     SMTP_PARSE_OK);
	cr_assert_eq(parser.reply.enhanced.status_class, 0);
}
