/*
 * test_tool_mail.c - unit tests of ringmail-sendmail's message preparation
 * (tools/tool_mail.c): RFC 5322 address lists for -t, the lone-dot end of
 * input, CRLF conversion, dot-stuffing, Bcc removal, added headers, long
 * line breaking, and every wire line within 998 octets.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool_mail.h"

static void
t_parse(const char *value, const char *const *want, size_t want_count)
{
	struct tool_addr_list list = { 0 };
	char bad[64];
	cr_assert_eq(tool_mail_parse_addresses(value, strlen(value), &list, bad, sizeof(bad)),
		     TOOL_MAIL_OK, "%s", value);
	cr_assert_eq(list.count, want_count, "%s: %zu addresses", value, list.count);
	for (size_t i = 0; i < want_count; i++)
		cr_assert_str_eq(list.items[i], want[i]);
	tool_addr_list_free(&list);
}

Test(tool_mail, address_lists)
{
	static const char *const a[] = { "j@x.test", "m@x.test", "a@x.test", "b@y.test" };
	t_parse(" \"Doe, John\" <j@x.test>, m@x.test (Mary, M.),\tteam: a@x.test, b@y.test;, <>",
		a, 4);
	static const char *const b[] = { "\"john doe\"@x.test" };
	t_parse("\"john doe\"@x.test", b, 1);
	static const char *const c[] = { "a@x.test" };
	t_parse("a@x.test (c (nested) \\) x), a@x.test", c, 1); /* duplicate dropped */
	t_parse("undisclosed-recipients:;", NULL, 0);
	static const char *const d[] = { "u@z.test" };
	t_parse("Name <@relay.test:u@z.test>", d, 1); /* obsolete source route */
}

Test(tool_mail, bad_addresses)
{
	struct tool_addr_list list = { 0 };
	char bad[TOOL_MAIL_ADDRESS_MAX + 2];
	char long_value[600];
	memset(long_value, 'a', sizeof(long_value));
	memcpy(long_value + sizeof(long_value) - 7, "@x.test", 7);
	cr_assert_eq(tool_mail_parse_addresses(long_value, sizeof(long_value), &list, bad,
					       sizeof(bad)),
		     TOOL_MAIL_BAD_ADDRESS);
	cr_assert_eq(tool_mail_parse_addresses("a\x01" "b@x", 5, &list, bad, sizeof(bad)),
		     TOOL_MAIL_BAD_ADDRESS);
	cr_assert_str_eq(bad, "a\x01" "b@x");
	cr_assert(!tool_mail_address_is_valid("a b@x", 5));
	cr_assert(!tool_mail_address_is_valid("a@x\r\nRCPT", 10));
	cr_assert(tool_mail_address_is_valid("\"a b\"@x", 7));
	tool_addr_list_free(&list);
}

Test(tool_mail, lone_dot_ends_input)
{
	size_t scan = 0, end = 0;
	const uint8_t *in = (const uint8_t *)"a\n.x\n..\n.\r\nafter\n";
	cr_assert(tool_mail_find_dot_line(in, strlen((const char *)in), &scan, &end));
	cr_assert_eq(end, 8);
	scan = 0;
	cr_assert(!tool_mail_find_dot_line(in, 9, &scan, &end), "'.' without its LF yet");
	cr_assert_eq(scan, 8, "the partial line is scanned again later");
	cr_assert(tool_mail_find_dot_line(in, 11, &scan, &end));
	scan = 0;
	cr_assert(tool_mail_find_dot_line((const uint8_t *)".\n", 2, &scan, &end));
	cr_assert_eq(end, 0);
}

static struct tool_mail
t_prepare(const char *raw, bool extract)
{
	struct tool_mail_input input = {
		.extract_recipients = extract,
		.from_value = "me@here.test",
		.date_value = "Mon, 1 Jan 2024 00:00:00 +0000",
		.message_id_value = "<id@here.test>",
	};
	struct tool_mail mail;
	tool_mail_init(&mail);
	cr_assert_eq(tool_mail_prepare((const uint8_t *)raw, strlen(raw), &input, &mail),
		     TOOL_MAIL_OK);
	return mail;
}

static void
t_assert_wire(const struct tool_mail *mail, const char *want)
{
	cr_assert_eq(mail->wire.len, strlen(want), "wire %zu bytes: %.*s", mail->wire.len,
		     (int)mail->wire.len, (const char *)mail->wire.data);
	cr_assert_eq(memcmp(mail->wire.data, want, strlen(want)), 0, "wire: %.*s",
		     (int)mail->wire.len, (const char *)mail->wire.data);
}

Test(tool_mail, bcc_removed_recipients_extracted_headers_added)
{
	struct tool_mail mail = t_prepare("Subject: s\nBcc: a@x.test,\n b@y.test\nTo: c@z.test\n"
					  "\n.body\r\nlast", true);
	t_assert_wire(&mail, "Subject: s\r\nTo: c@z.test\r\nFrom: me@here.test\r\n"
			     "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <id@here.test>\r\n"
			     "\r\n..body\r\nlast\r\n");
	cr_assert_eq(mail.rcpts.count, 3);
	cr_assert_str_eq(mail.rcpts.items[0], "a@x.test");
	cr_assert_str_eq(mail.rcpts.items[1], "b@y.test");
	cr_assert_str_eq(mail.rcpts.items[2], "c@z.test");
	cr_assert_eq(mail.bcc_removed_count, 1);
	cr_assert_eq(mail.added, TOOL_MAIL_ADDED_FROM | TOOL_MAIL_ADDED_DATE |
				 TOOL_MAIL_ADDED_MESSAGE_ID);
	tool_mail_deinit(&mail);
}

Test(tool_mail, existing_headers_kept_body_without_headers_separated)
{
	struct tool_mail mail = t_prepare("from: a@b\nDATE: x\nMessage-Id: <m>\n\nb\n", false);
	t_assert_wire(&mail, "from: a@b\r\nDATE: x\r\nMessage-Id: <m>\r\n\r\nb\r\n");
	cr_assert_eq(mail.added, 0);
	cr_assert_eq(mail.rcpts.count, 0, "no -t: no recipients taken");
	tool_mail_deinit(&mail);
	mail = t_prepare("just text: no\nmore\n", false);
	const char *body = "\r\n\r\njust text: no\r\nmore\r\n";
	cr_assert_eq(memcmp(mail.wire.data + mail.wire.len - strlen(body), body, strlen(body)), 0,
		     "'just text:' is not a field name (space inside): body");
	tool_mail_deinit(&mail);
	mail = t_prepare("plain body\n", false);
	const char *tail = "\r\n\r\nplain body\r\n";
	cr_assert_eq(memcmp(mail.wire.data + mail.wire.len - strlen(tail), tail, strlen(tail)), 0);
	tool_mail_deinit(&mail);
}

/* Every wire line within TOOL_MAIL_LINE_MAX; header pieces folded. */
static void
t_assert_lines_short(const struct tool_mail *mail)
{
	size_t start = 0;
	for (size_t i = 0; i + 1 < mail->wire.len; i++) {
		if (mail->wire.data[i] == '\r' && mail->wire.data[i + 1] == '\n') {
			cr_assert_leq(i - start, TOOL_MAIL_LINE_MAX, "line at %zu: %zu bytes", start,
				      i - start);
			start = i + 2;
		}
	}
	cr_assert_eq(start, mail->wire.len, "ends with CRLF");
}

Test(tool_mail, long_lines_broken)
{
	size_t size = 5000;
	char *raw = malloc(size + 64);
	cr_assert_not_null(raw);
	size_t n = (size_t)snprintf(raw, 64, "X-Long: ");
	memset(raw + n, 'h', 2500);
	n += 2500;
	raw[n++] = '\n';
	raw[n++] = '\n';
	raw[n++] = '.';
	memset(raw + n, 'b', 997);
	n += 997;
	raw[n++] = '\n';
	raw[n] = '\0';
	struct tool_mail mail = t_prepare(raw, false);
	t_assert_lines_short(&mail);
	cr_assert_not_null(memmem(mail.wire.data, mail.wire.len, "\r\n hhh", 6), "folded");
	/* ".bbb..." (998 bytes) is stuffed to 999: broken after 998. */
	cr_assert_not_null(memmem(mail.wire.data, mail.wire.len, "\r\n\r\n..bbb", 9));
	tool_mail_deinit(&mail);
	free(raw);
}

Test(tool_mail, empty_input_and_8bit)
{
	struct tool_mail mail = t_prepare("", false);
	t_assert_wire(&mail, "From: me@here.test\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
			     "Message-ID: <id@here.test>\r\n");
	cr_assert(!mail.has_8bit);
	tool_mail_deinit(&mail);
	mail = t_prepare("Subject: caf\xc3\xa9\n\nx\n", false);
	cr_assert(mail.has_8bit);
	tool_mail_deinit(&mail);
}
