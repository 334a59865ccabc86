/*
 * test_fuzz_regress.c - unit tests for what the libFuzzer harnesses of
 * tests/fuzz/ found (docs/fuzzing.md "Findings"): each test replays the
 * shape of a saved crash input against the public API and checks the
 * behaviour the protocol asks for, so the case stays covered by the gcc
 * builds even where only a clang sanitizer saw the fault itself.
 *
 * fuzz_server, 2026-11-29: a command line longer than the session's line
 * buffer (SMTP_SERVER_COMMAND_LINE_MAX_MAX, 2048 bytes) arriving in three
 * or more reads. line_feed() keeps counting line_len past the buffer (to
 * refuse the line at its LF) and then computed `s->line + s->line_len`
 * for a zero-byte copy: a pointer past the end of the array, which clang's
 * -fsanitize=array-bounds reports ("index 2295 out of bounds for type
 * 'uint8_t[2048]'") and gcc's UBSan does not. Nothing is written out of
 * bounds, but a hostile client must not be able to trip the sanitizer
 * build. Input: tests/fuzz/corpus/fuzz_server/regress-line-over-buffer.
 * The protocol outcome checked here: "500 5.5.6" after the line's CRLF,
 * nothing of the line executed, and the session goes on.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "smtp/smtp_server.h"

#define OUT_MAX 65536u

struct session {
	struct smtp_server server;
	char out[OUT_MAX];
	size_t out_len;
	bool is_closed;
};

static void
session_drain(struct session *t)
{
	size_t len = 0;
	const uint8_t *p = smtp_server_output(&t->server, &len);

	if (len == 0)
		return;
	cr_assert(t->out_len + len < sizeof(t->out), "reply bytes fit the test buffer");
	memcpy(t->out + t->out_len, p, len);
	t->out_len += len;
	t->out[t->out_len] = '\0';
	smtp_server_output_consumed(&t->server, len);
}

static void
session_start(struct session *t)
{
	struct smtp_server_config config;

	memset(t, 0, sizeof(*t));
	smtp_server_config_default(&config);
	config.hostname = "mx.test";
	config.hostname_len = strlen("mx.test");
	config.client_is_allowed = true;
	smtp_server_init(&t->server, &config);
	smtp_server_start(&t->server);
	session_drain(t);
}

/* One read of n bytes: feed until all is taken (draining when blocked). */
static void
session_read(struct session *t, const char *p, size_t n)
{
	size_t off = 0;

	for (unsigned round = 0; round < 1000u; round++) {
		struct smtp_server_event ev;
		size_t used = smtp_server_feed(&t->server, (const uint8_t *)p + off, n - off, &ev);

		cr_assert(used <= n - off);
		off += used;
		if (ev.type == SMTP_SERVER_EV_NONE)
			break;
		if (ev.type == SMTP_SERVER_EV_CLOSE) {
			t->is_closed = true;
			break;
		}
		cr_assert_eq(ev.type, SMTP_SERVER_EV_BLOCKED, "no transaction event: got %d",
			     (int)ev.type);
		session_drain(t);
	}
	cr_assert(t->is_closed || off == n, "the read was consumed");
	session_drain(t);
}

static void
session_end(struct session *t)
{
	smtp_server_fini(&t->server);
}

/* The line of the saved input: "NOOP " and 2300 x, then CRLF, read 255
 * bytes at a time: the tenth read starts 247 bytes past the buffer. */
Test(fuzz_regress, command_line_over_the_buffer_in_many_reads)
{
	static char line[5 + 2300 + 2];
	struct session t;
	size_t pos = 0;
	const char *tail;

	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', 2300);
	memcpy(line + 5 + 2300, "\r\n", 2);
	session_start(&t);
	session_read(&t, "EHLO client.test\r\n", 18);
	size_t before = t.out_len;
	while (pos < sizeof(line)) {
		size_t n = sizeof(line) - pos < 255 ? sizeof(line) - pos : 255;

		session_read(&t, line + pos, n);
		pos += n;
	}
	cr_assert_not(t.is_closed);
	cr_assert_str_eq(t.out + before, "500 5.5.6 Error: line too long\r\n",
			 "one 500 5.5.6 for the whole line, nothing of it executed");
	before = t.out_len;
	session_read(&t, "NOOP\r\nQUIT\r\n", 12);
	tail = t.out + before;
	cr_assert(strncmp(tail, "250 ", 4) == 0, "the session goes on: %s", tail);
	cr_assert(strstr(tail, "\r\n221 ") != NULL, "QUIT answered: %s", tail);
	cr_assert(t.is_closed);
	session_end(&t);
}

/* The same line one byte per read, then a line of exactly the buffer size
 * plus one: the boundary where the count first passes the buffer. */
Test(fuzz_regress, command_line_over_the_buffer_byte_by_byte)
{
	static char line[SMTP_SERVER_COMMAND_LINE_MAX_MAX + 1u + 2u];
	struct session t;

	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'y', sizeof(line) - 7);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	session_start(&t);
	session_read(&t, "EHLO client.test\r\n", 18);
	size_t before = t.out_len;
	for (size_t i = 0; i < sizeof(line); i++)
		session_read(&t, line + i, 1);
	cr_assert_str_eq(t.out + before, "500 5.5.6 Error: line too long\r\n");
	session_read(&t, "QUIT\r\n", 6);
	cr_assert(t.is_closed);
	session_end(&t);
}
