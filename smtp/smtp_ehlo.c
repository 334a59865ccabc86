/*
 * smtp_ehlo.c - parse EHLO reply lines into capabilities (smtp_ehlo.h).
 *
 * Each line is split into space-separated words with explicit lengths; no
 * NUL terminator is needed or written. Every loop is bounded by the line
 * length and by SMTP_EHLO_PARAMS_MAX.
 *
 * Reference: RFC 5321 4.1.1.1 (ehlo-line grammar), RFC 1870 (SIZE,
 * "SIZE 0" or no number means no fixed limit), RFC 4954 (AUTH).
 */
#include "smtp_ehlo.h"

#include <string.h>
#include <strings.h>

#include "../engine/eng_common.h"

#define SIZE_DIGITS_MAX 20u

/* One word of a line: (ptr, len). */
struct ehlo_word {
	const char *ptr;
	size_t len;
};

struct ehlo_keyword {
	const char *name;
	uint32_t extension;
};

static const struct ehlo_keyword ehlo_keywords[] = {
	{ "PIPELINING", SMTP_EXT_PIPELINING },
	{ "SIZE", SMTP_EXT_SIZE },
	{ "8BITMIME", SMTP_EXT_8BITMIME },
	{ "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
	{ "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCEDSTATUSCODES },
	{ "STARTTLS", SMTP_EXT_STARTTLS },
	{ "CHUNKING", SMTP_EXT_CHUNKING },
	{ "DSN", SMTP_EXT_DSN },
	{ "AUTH", SMTP_EXT_AUTH },
};

void
smtp_ehlo_caps_init(struct smtp_ehlo_caps *caps)
{
	ENG_ASSERT(caps != NULL);
	memset(caps, 0, sizeof(*caps));
	ENG_ASSERT(caps->extensions == 0);
}

bool
smtp_ehlo_has(const struct smtp_ehlo_caps *caps, uint32_t extension)
{
	ENG_ASSERT(caps != NULL);
	ENG_ASSERT(extension != 0);
	return (caps->extensions & extension) == extension;
}

static bool
word_equals(const struct ehlo_word *word, const char *name)
{
	size_t name_len = strlen(name);

	ENG_ASSERT(word != NULL);
	ENG_ASSERT(name_len > 0);
	return word->len == name_len && strncasecmp(word->ptr, name, name_len) == 0;
}

/* Next space-separated word at or after *pos; false when none is left. */
static bool
next_word(const char *ptr, size_t len, size_t *pos, struct ehlo_word *word)
{
	size_t start;

	ENG_ASSERT(ptr != NULL || len == 0);
	ENG_ASSERT(*pos <= len);
	while (*pos < len && (ptr[*pos] == ' ' || ptr[*pos] == '\t'))
		(*pos)++;
	start = *pos;
	while (*pos < len && ptr[*pos] != ' ' && ptr[*pos] != '\t')
		(*pos)++;
	word->ptr = ptr + start;
	word->len = *pos - start;
	return word->len > 0;
}

/* RFC 5321 ehlo-keyword: (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"). */
static bool
keyword_is_valid(const struct ehlo_word *word)
{
	size_t index;

	ENG_ASSERT(word != NULL);
	ENG_ASSERT(word->len > 0);
	if (word->len > SMTP_EHLO_KEYWORD_MAX)
		return false;
	for (index = 0; index < word->len; index++) {
		char c = word->ptr[index];
		bool is_alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				(c >= '0' && c <= '9');

		if (!is_alnum && (index == 0 || c != '-'))
			return false;
	}
	return true;
}

/* RFC 1870 size-param: digits, 0 meaning no fixed maximum. Garbage or no
 * number leaves the limit unknown (0); overflow saturates. */
static uint64_t
size_value(const struct ehlo_word *word)
{
	uint64_t value = 0;
	size_t index;

	ENG_ASSERT(word != NULL);
	ENG_ASSERT(word->ptr != NULL || word->len == 0);
	if (word->len == 0 || word->len > SIZE_DIGITS_MAX)
		return word->len == 0 ? 0 : UINT64_MAX;
	for (index = 0; index < word->len; index++) {
		char c = word->ptr[index];
		uint64_t digit = (uint64_t)(c - '0');

		if (c < '0' || c > '9')
			return 0;
		if (value > (UINT64_MAX - digit) / 10u)
			return UINT64_MAX;
		value = value * 10u + digit;
	}
	return value;
}

static uint32_t
auth_mechanism(const struct ehlo_word *word)
{
	ENG_ASSERT(word != NULL);
	ENG_ASSERT(word->len > 0);
	if (word_equals(word, "PLAIN"))
		return SMTP_AUTH_PLAIN;
	if (word_equals(word, "LOGIN"))
		return SMTP_AUTH_LOGIN;
	return 0;
}

/* AUTH mechanisms from the rest of a line, at most SMTP_EHLO_PARAMS_MAX. */
static void
parse_auth(const char *ptr, size_t len, size_t pos, struct smtp_ehlo_caps *caps)
{
	struct ehlo_word word;
	uint32_t count;

	ENG_ASSERT(caps != NULL);
	ENG_ASSERT(pos <= len);
	caps->extensions |= SMTP_EXT_AUTH;
	for (count = 0; count < SMTP_EHLO_PARAMS_MAX; count++) {
		if (!next_word(ptr, len, &pos, &word))
			return;
		caps->auth_mechanisms |= auth_mechanism(&word);
	}
}

static uint32_t
keyword_extension(const struct ehlo_word *word)
{
	size_t index;

	ENG_ASSERT(word != NULL);
	ENG_ASSERT(word->len > 0);
	for (index = 0; index < ENG_ARRAY_COUNT(ehlo_keywords); index++) {
		if (word_equals(word, ehlo_keywords[index].name))
			return ehlo_keywords[index].extension;
	}
	return 0;
}

void
smtp_ehlo_parse_line(const char *ptr, size_t len, struct smtp_ehlo_caps *caps)
{
	struct ehlo_word keyword;
	struct ehlo_word param;
	size_t pos = 0;
	uint32_t extension;

	ENG_ASSERT(caps != NULL);
	ENG_ASSERT(ptr != NULL || len == 0);
	if (len == 0 || !next_word(ptr, len, &pos, &keyword))
		return;
	/* Old spelling "AUTH=PLAIN LOGIN": the '=' ends the keyword. */
	if (keyword.len > 5 && strncasecmp(keyword.ptr, "AUTH=", 5) == 0) {
		parse_auth(ptr, len, (size_t)(keyword.ptr - ptr) + 5u, caps);
		return;
	}
	if (!keyword_is_valid(&keyword))
		return;
	extension = keyword_extension(&keyword);
	if (extension == SMTP_EXT_AUTH) {
		parse_auth(ptr, len, pos, caps);
		return;
	}
	caps->extensions |= extension;
	if (extension == SMTP_EXT_SIZE) {
		if (!next_word(ptr, len, &pos, &param))
			param.len = 0;
		caps->size_max = size_value(&param);
	}
}

void
smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_ehlo_caps *caps)
{
	uint32_t line_index;

	ENG_ASSERT(reply != NULL && caps != NULL);
	ENG_ASSERT(reply->line_count >= 1 && reply->line_count <= SMTP_REPLY_LINES_MAX);
	smtp_ehlo_caps_init(caps);
	for (line_index = 1; line_index < reply->line_count; line_index++) {
		const char *line;
		size_t line_size;

		smtp_reply_line(reply, line_index, &line, &line_size);
		smtp_ehlo_parse_line(line, line_size, caps);
	}
}
