/*
 * fuzz_reply.c - libFuzzer harness for the SMTP reply parser
 * (smtp/smtp_reply.h; reliability.md 3.1 fuzz_reply_parser, FZ-01).
 *
 * Input: 4 bytes of split pattern (fuzz_common.h), then the bytes a server
 * sends. The stream is parsed three ways: in the fuzzer's chunks, in one
 * piece, and (short inputs) one byte at a time. Invariants, beyond memory
 * safety under ASan/UBSan:
 * - every split gives the same replies and the same error at the same
 *   offset (chunked == single feed);
 * - consumed <= len; OK consumes >= 1 byte; AGAIN consumes everything;
 *   errors are sticky;
 * - every reply checks against a reference reading of its raw bytes: code
 *   200..599 and equal to the first three bytes of every line, one line
 *   per LF, ends in CRLF, text == the lines' text (control bytes as '?')
 *   joined by '\n', cut at SMTP_REPLY_TEXT_MAX only with text_is_truncated;
 * - the enhanced status is absent or well formed with the code's class;
 * - an error's offset points at a byte that explains it.
 */
#include <string.h>

#include "fuzz_common.h"
#include "smtp/smtp_reply.h"

#define REPLIES_MAX 4096u
#define REFERENCE_TEXT_MAX (SMTP_REPLY_LINES_MAX * (SMTP_REPLY_LINE_MAX + 1u))

struct reply_summary {
	uint16_t code;
	uint16_t line_count;
	uint16_t text_size;
	bool text_is_truncated;
	struct smtp_enhanced_status enhanced;
	uint16_t enhanced_size;
	size_t end_offset; /* stream offset after the reply's last LF */
	uint64_t text_hash;
};

struct parse_outcome {
	uint32_t reply_count;
	enum smtp_parse_result last; /* AGAIN, ERROR, or OK when between replies */
	enum smtp_reply_error error;
	size_t error_offset;
	struct reply_summary replies[REPLIES_MAX];
};

static struct parse_outcome outcome_split;
static struct parse_outcome outcome_whole;
static struct parse_outcome outcome_bytes;
static char reference_text[REFERENCE_TEXT_MAX];

static char
printable(uint8_t c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
}

/* The text of raw reply bytes as the grammar says it is stored. */
static size_t
reference_reply_text(const uint8_t *raw, size_t raw_len, uint16_t code, uint32_t *line_count)
{
	size_t text_len = 0;
	size_t pos = 0;

	*line_count = 0;
	while (pos < raw_len) {
		const uint8_t *lf = memchr(raw + pos, '\n', raw_len - pos);
		size_t line_end;

		FUZZ_CHECK(lf != NULL, "reply bytes end with LF");
		line_end = (size_t)(lf - raw);
		FUZZ_CHECK(line_end >= pos + 4 && raw[line_end - 1] == '\r', "line is code CRLF");
		FUZZ_CHECK((raw[pos] - '0') * 100 + (raw[pos + 1] - '0') * 10 +
					   (raw[pos + 2] - '0') ==
				   code,
			   "every line repeats the code");
		FUZZ_CHECK(line_end - 1 - pos <= SMTP_REPLY_LINE_MAX, "line within the limit");
		if (*line_count > 0)
			reference_text[text_len++] = '\n';
		for (size_t i = pos + 4; i < line_end - 1; i++) {
			FUZZ_CHECK(raw[i] != '\r' && raw[i] != 0, "no CR or NUL inside text");
			reference_text[text_len++] = printable(raw[i]);
		}
		(*line_count)++;
		FUZZ_CHECK(*line_count <= SMTP_REPLY_LINES_MAX, "line count within the limit");
		pos = line_end + 1;
	}
	return text_len;
}

static void
check_enhanced(const struct smtp_reply *reply)
{
	struct smtp_enhanced_status again;
	size_t taken;

	if (reply->enhanced.status_class == 0) {
		FUZZ_CHECK(reply->enhanced_size == 0, "no enhanced code, no size");
		return;
	}
	FUZZ_CHECK(reply->enhanced.status_class == reply->code / 100, "enhanced class = code");
	FUZZ_CHECK(reply->enhanced.subject <= 999 && reply->enhanced.detail <= 999,
		   "enhanced numbers are 1..3 digits");
	FUZZ_CHECK(reply->enhanced_size >= 5 && reply->enhanced_size <= reply->line_size[0],
		   "enhanced code inside line 0");
	taken = smtp_enhanced_status_parse(reply->text, reply->line_size[0], &again);
	FUZZ_CHECK(taken == reply->enhanced_size, "enhanced parse is repeatable");
	FUZZ_CHECK(memcmp(&again, &reply->enhanced, sizeof(again)) == 0, "same enhanced code");
}

static void
check_reply(const struct smtp_reply *reply, const uint8_t *raw, size_t raw_len)
{
	uint32_t line_count = 0;
	size_t text_len;
	size_t joined = 0;

	FUZZ_CHECK(reply->code >= 200 && reply->code <= 599, "code 200..599");
	FUZZ_CHECK(smtp_reply_class(reply) == (uint32_t)reply->code / 100u, "class");
	FUZZ_CHECK(reply->line_count >= 1 && reply->line_count <= SMTP_REPLY_LINES_MAX,
		   "line count in range");
	FUZZ_CHECK(reply->text_size <= SMTP_REPLY_TEXT_MAX, "text bounded");
	FUZZ_CHECK(raw_len >= 5 && raw[raw_len - 2] == '\r' && raw[raw_len - 1] == '\n',
		   "reply ends with CRLF");
	text_len = reference_reply_text(raw, raw_len, reply->code, &line_count);
	FUZZ_CHECK(line_count == reply->line_count, "one line per LF");
	for (uint32_t i = 0; i < reply->line_count; i++) {
		const char *ptr = NULL;
		size_t size = 0;

		smtp_reply_line(reply, i, &ptr, &size);
		FUZZ_CHECK(ptr >= reply->text && ptr + size <= reply->text + reply->text_size,
			   "line inside the text");
		FUZZ_CHECK(memchr(ptr, '\n', size) == NULL, "no LF inside a line");
		joined += size + (i > 0 ? 1u : 0u);
	}
	if (!reply->text_is_truncated) {
		FUZZ_CHECK(text_len == reply->text_size, "text size = reference");
		FUZZ_CHECK(joined == reply->text_size, "lines joined by one LF");
	} else {
		FUZZ_CHECK(text_len > SMTP_REPLY_TEXT_MAX, "truncated only when over the limit");
		FUZZ_CHECK(reply->text_size == SMTP_REPLY_TEXT_MAX, "truncated text is full");
	}
	FUZZ_CHECK(memcmp(reply->text, reference_text, reply->text_size) == 0,
		   "text = reference (prefix when truncated)");
	check_enhanced(reply);
}

/* The byte at the error offset must explain the error. */
static void
check_error(const uint8_t *data, size_t len, enum smtp_reply_error error, size_t offset)
{
	FUZZ_CHECK(offset < len, "error offset inside the stream");
	FUZZ_CHECK(smtp_reply_error_name(error) != NULL, "every error has a name");
	switch (error) {
	case SMTP_REPLY_ERROR_NUL:
		FUZZ_CHECK(data[offset] == 0, "NUL error at a NUL");
		break;
	case SMTP_REPLY_ERROR_BARE_LF:
		FUZZ_CHECK(data[offset] == '\n', "bare LF error at an LF");
		break;
	case SMTP_REPLY_ERROR_BARE_CR:
		FUZZ_CHECK(offset > 0 && data[offset - 1] == '\r' && data[offset] != '\n',
			   "bare CR error after a CR");
		break;
	case SMTP_REPLY_ERROR_CODE:
		FUZZ_CHECK(data[offset] < '0' || data[offset] > '9' ||
				   (offset == 0 || data[offset - 1] == '\n'),
			   "code error at a non-digit or a bad first digit");
		break;
	case SMTP_REPLY_ERROR_NONE:
	case SMTP_REPLY_ERROR_COUNT:
		FUZZ_CHECK(0, "error with a valid error value");
		break;
	default:
		break;
	}
}

static void
record_reply(struct parse_outcome *out, const struct smtp_reply *reply, size_t end_offset)
{
	struct reply_summary *s = &out->replies[out->reply_count++];

	s->code = reply->code;
	s->line_count = reply->line_count;
	s->text_size = reply->text_size;
	s->text_is_truncated = reply->text_is_truncated;
	s->enhanced = reply->enhanced;
	s->enhanced_size = reply->enhanced_size;
	s->end_offset = end_offset;
	s->text_hash = fuzz_hash(reply->text, reply->text_size);
}

static void
parse_stream(const uint8_t *data, size_t len, const uint8_t pattern[FUZZ_SPLIT_COUNT],
	     struct parse_outcome *out)
{
	struct smtp_reply_parser parser;
	size_t pos = 0;
	size_t reply_start = 0;
	uint32_t chunk_index = 0;

	smtp_reply_parser_init(&parser);
	size_t none = 99999;
	FUZZ_CHECK(smtp_reply_parse(&parser, NULL, 0, &none) == SMTP_PARSE_AGAIN && none == 0 &&
			   smtp_reply_parser_is_between_replies(&parser),
		   "an empty feed waits and changes nothing");
	out->reply_count = 0;
	out->last = SMTP_PARSE_OK;
	out->error = SMTP_REPLY_ERROR_NONE;
	out->error_offset = 0;
	while (pos < len && out->reply_count < REPLIES_MAX) {
		size_t chunk = fuzz_split_next(pattern, chunk_index++, len - pos);
		size_t off = 0;

		while (off < chunk && out->reply_count < REPLIES_MAX) {
			size_t consumed = 99999;
			enum smtp_parse_result r =
				smtp_reply_parse(&parser, data + pos + off, chunk - off, &consumed);

			FUZZ_CHECK(consumed <= chunk - off, "consumed <= len");
			out->last = r;
			if (r == SMTP_PARSE_AGAIN) {
				FUZZ_CHECK(consumed == chunk - off, "AGAIN takes every byte");
				FUZZ_CHECK(!smtp_reply_parser_is_between_replies(&parser), "mid-reply");
				off = chunk;
				break;
			}
			if (r == SMTP_PARSE_ERROR) {
				out->error = parser.error;
				out->error_offset = pos + off + consumed;
				check_error(data, len, parser.error, out->error_offset);
				FUZZ_CHECK(smtp_reply_parse(&parser, data, len, &consumed) ==
						   SMTP_PARSE_ERROR &&
					   consumed == 0,
					   "errors are sticky");
				return;
			}
			FUZZ_CHECK(consumed >= 1, "a reply takes at least one byte");
			FUZZ_CHECK(smtp_reply_parser_is_between_replies(&parser), "between replies");
			off += consumed;
			check_reply(&parser.reply, data + reply_start, pos + off - reply_start);
			record_reply(out, &parser.reply, pos + off);
			reply_start = pos + off;
		}
		pos += off;
	}
}

static void
outcome_compare(const struct parse_outcome *a, const struct parse_outcome *b)
{
	FUZZ_CHECK(a->reply_count == b->reply_count, "same number of replies for any split");
	for (uint32_t i = 0; i < a->reply_count; i++) {
		const struct reply_summary *x = &a->replies[i];
		const struct reply_summary *y = &b->replies[i];

		FUZZ_CHECK(x->code == y->code && x->line_count == y->line_count &&
				   x->text_size == y->text_size &&
				   x->text_is_truncated == y->text_is_truncated &&
				   x->enhanced.status_class == y->enhanced.status_class &&
				   x->enhanced.subject == y->enhanced.subject &&
				   x->enhanced.detail == y->enhanced.detail &&
				   x->enhanced_size == y->enhanced_size &&
				   x->end_offset == y->end_offset && x->text_hash == y->text_hash,
			   "same replies for any split");
	}
	FUZZ_CHECK(a->error == b->error && a->error_offset == b->error_offset,
		   "same error at the same offset for any split");
	if (a->reply_count < REPLIES_MAX)
		FUZZ_CHECK(a->last == b->last, "same final state for any split");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t whole[FUZZ_SPLIT_COUNT] = {0, 0, 0, 0};
	static const uint8_t bytes[FUZZ_SPLIT_COUNT] = {1, 1, 1, 1};
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};
	uint8_t pattern[FUZZ_SPLIT_COUNT];
	struct smtp_enhanced_status status;

	for (uint32_t i = 0; i < FUZZ_SPLIT_COUNT; i++)
		pattern[i] = fuzz_take_u8(&cur);
	const uint8_t *stream = data + cur.pos;
	size_t len = fuzz_left(&cur);

	parse_stream(stream, len, pattern, &outcome_split);
	parse_stream(stream, len, whole, &outcome_whole);
	outcome_compare(&outcome_split, &outcome_whole);
	if (len <= 512) {
		parse_stream(stream, len, bytes, &outcome_bytes);
		outcome_compare(&outcome_bytes, &outcome_whole);
	}
	/* The enhanced-status parser alone, on raw bytes. */
	size_t taken = smtp_enhanced_status_parse((const char *)stream, len, &status);
	FUZZ_CHECK(taken <= len, "enhanced code within the input");
	FUZZ_CHECK(taken == 0 || (status.status_class >= 2 && status.status_class <= 5),
		   "enhanced class 2, 4 or 5");
	return 0;
}
