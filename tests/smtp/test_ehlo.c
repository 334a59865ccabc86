/*
 * test_ehlo.c - EHLO capability parsing: keywords without regard to case,
 * SIZE with and without a number, AUTH in both spellings, bounds, and
 * garbage lines that must not grant anything.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "smtp/smtp_ehlo.h"

static void
caps_of(const char *reply_text, struct smtp_ehlo_caps *caps)
{
	static struct smtp_reply_parser parser;
	size_t used = 0;

	smtp_reply_parser_init(&parser);
	cr_assert_eq(smtp_reply_parse(&parser, (const uint8_t *)reply_text, strlen(reply_text),
				      &used),
		     SMTP_PARSE_OK);
	smtp_ehlo_parse(&parser.reply, caps);
}

static void
caps_of_line(const char *line, struct smtp_ehlo_caps *caps)
{
	smtp_ehlo_caps_init(caps);
	smtp_ehlo_parse_line(line, strlen(line), caps);
}

Test(smtp_ehlo, typical_reply_offers_everything_listed)
{
	struct smtp_ehlo_caps caps;

	caps_of("250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n"
		"250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n"
		"250-CHUNKING\r\n250-DSN\r\n250 AUTH LOGIN PLAIN XOAUTH2\r\n",
		&caps);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_PIPELINING));
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_SIZE));
	cr_assert_eq(caps.size_max, 35882577u);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_8BITMIME | SMTP_EXT_SMTPUTF8));
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_ENHANCEDSTATUSCODES));
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_STARTTLS | SMTP_EXT_CHUNKING | SMTP_EXT_DSN));
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_AUTH));
	cr_assert_eq(caps.auth_mechanisms, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
}

Test(smtp_ehlo, first_line_is_the_greeting_not_a_keyword)
{
	struct smtp_ehlo_caps caps;

	caps_of("250 PIPELINING\r\n", &caps);
	cr_assert_eq(caps.extensions, 0);
}

Test(smtp_ehlo, keywords_ignore_case)
{
	struct smtp_ehlo_caps caps;

	caps_of("250-mx\r\n250-pipelining\r\n250-Size 100\r\n250 8bitMIME\r\n", &caps);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME));
	cr_assert_eq(caps.size_max, 100u);
}

Test(smtp_ehlo, size_without_number_or_zero_means_no_limit)
{
	struct smtp_ehlo_caps caps;

	caps_of_line("SIZE", &caps);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_SIZE));
	cr_assert_eq(caps.size_max, 0);
	caps_of_line("SIZE 0", &caps);
	cr_assert_eq(caps.size_max, 0);
	caps_of_line("SIZE 12abc", &caps);
	cr_assert_eq(caps.size_max, 0, "garbage: limit unknown");
}

Test(smtp_ehlo, size_overflow_saturates)
{
	struct smtp_ehlo_caps caps;

	caps_of_line("SIZE 18446744073709551615", &caps);
	cr_assert_eq(caps.size_max, UINT64_MAX);
	caps_of_line("SIZE 18446744073709551616", &caps);
	cr_assert_eq(caps.size_max, UINT64_MAX);
	caps_of_line("SIZE 999999999999999999999999", &caps);
	cr_assert_eq(caps.size_max, UINT64_MAX);
}

Test(smtp_ehlo, auth_old_spelling_with_equals)
{
	struct smtp_ehlo_caps caps;

	caps_of_line("AUTH=LOGIN PLAIN", &caps);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_AUTH));
	cr_assert_eq(caps.auth_mechanisms, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
	caps_of_line("auth cram-md5 plain", &caps);
	cr_assert_eq(caps.auth_mechanisms, SMTP_AUTH_PLAIN);
}

Test(smtp_ehlo, malformed_keywords_grant_nothing)
{
	struct smtp_ehlo_caps caps;

	caps_of_line("-PIPELINING", &caps);
	cr_assert_eq(caps.extensions, 0);
	caps_of_line("PIPELINING_", &caps);
	cr_assert_eq(caps.extensions, 0);
	caps_of_line("PIPELININGX", &caps);
	cr_assert_eq(caps.extensions, 0);
	caps_of_line("", &caps);
	cr_assert_eq(caps.extensions, 0);
	caps_of_line("   ", &caps);
	cr_assert_eq(caps.extensions, 0);
}

Test(smtp_ehlo, overlong_keyword_is_ignored)
{
	struct smtp_ehlo_caps caps;
	char line[SMTP_EHLO_KEYWORD_MAX + 2];

	memset(line, 'A', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	caps_of_line(line, &caps);
	cr_assert_eq(caps.extensions, 0);
}

Test(smtp_ehlo, auth_mechanisms_are_bounded)
{
	struct smtp_ehlo_caps caps;
	char line[1024];
	size_t len = 0;

	memcpy(line, "AUTH", 4);
	len = 4;
	for (unsigned i = 0; i < SMTP_EHLO_PARAMS_MAX; i++) {
		memcpy(line + len, " X", 2);
		len += 2;
	}
	memcpy(line + len, " PLAIN", 6);
	len += 6;
	smtp_ehlo_caps_init(&caps);
	smtp_ehlo_parse_line(line, len, &caps);
	cr_assert(smtp_ehlo_has(&caps, SMTP_EXT_AUTH));
	cr_assert_eq(caps.auth_mechanisms, 0, "mechanisms past the bound are not looked at");
}

Test(smtp_ehlo, parse_line_needs_no_terminator)
{
	struct smtp_ehlo_caps caps;
	const char buf[] = { 'S', 'I', 'Z', 'E', ' ', '4', '2', '9' };

	smtp_ehlo_caps_init(&caps);
	smtp_ehlo_parse_line(buf, 7, &caps);
	cr_assert_eq(caps.size_max, 42u);
}
