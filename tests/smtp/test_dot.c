/*
 * test_dot.c - wire-form validation, stuffing and unstuffing (RFC 5321
 * 4.5.2 edge cases, reliability.md 2.8 and OUT-10), the round trip
 * unstuff(stuff(x)) == x on random input, and the end-of-DATA detector
 * against the SMTP smuggling sequences (reliability.md 2.1).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_dot.h"

#define S(x) x, sizeof(x) - 1u

/* Inline bytes: Criterion copies parameters into the test process. */
struct validate_case {
	char name[32];
	char wire[40];
	size_t len;
	enum smtp_dot_reason reason;
	size_t offset;
};

static struct validate_case validate_cases[] = {
	{ "empty message", S(".\r\n"), SMTP_DOT_VALID, 0 },
	{ "one empty line", S("\r\n.\r\n"), SMTP_DOT_VALID, 0 },
	{ "one line", S("a\r\n.\r\n"), SMTP_DOT_VALID, 0 },
	{ "stuffed dot line", S("..\r\n.\r\n"), SMTP_DOT_VALID, 0 },
	{ "stuffed dots", S("...\r\n..x\r\n.\r\n"), SMTP_DOT_VALID, 0 },
	{ "nothing", S(""), SMTP_DOT_NOT_TERMINATED, 0 },
	{ "no terminator", S("a\r\n"), SMTP_DOT_NOT_TERMINATED, 3 },
	{ "dot without CRLF", S("a\r\n."), SMTP_DOT_NOT_TERMINATED, 4 },
	{ "dot CR only", S("a\r\n.\r"), SMTP_DOT_BARE_CR, 4 },
	{ "bare LF", S("a\n.\r\n"), SMTP_DOT_BARE_LF, 1 },
	{ "bare LF terminator", S("a\r\n.\n"), SMTP_DOT_BARE_LF, 4 },
	{ "bare CR", S("a\rb\r\n.\r\n"), SMTP_DOT_BARE_CR, 1 },
	{ "early end", S(".\r\nb\r\n.\r\n"), SMTP_DOT_EARLY_END, 0 },
	{ "early end inside", S("a\r\n.\r\nMAIL FROM:<x>\r\n.\r\n"), SMTP_DOT_EARLY_END, 3 },
	{ "bytes after the end", S("a\r\n.\r\nx"), SMTP_DOT_EARLY_END, 3 },
};

ParameterizedTestParameters(smtp_dot, validate_table)
{
	return cr_make_param_array(struct validate_case, validate_cases,
				   sizeof(validate_cases) / sizeof(validate_cases[0]));
}

ParameterizedTest(struct validate_case *row, smtp_dot, validate_table)
{
	size_t offset = 99;
	enum smtp_dot_reason reason = smtp_dot_validate((const uint8_t *)row->wire, row->len,
							&offset);

	cr_assert_eq(reason, row->reason, "%s: %s", row->name, smtp_dot_reason_name(reason));
	if (reason != SMTP_DOT_VALID && reason != SMTP_DOT_NOT_TERMINATED)
		cr_assert_eq(offset, row->offset, "%s: offset %zu", row->name, offset);
}

static size_t
stuff(const char *raw, size_t len, uint8_t *out, size_t out_size)
{
	size_t out_len = 0;

	cr_assert_geq(out_size, smtp_dot_stuffed_size_max(len));
	cr_assert_eq(smtp_dot_stuff((const uint8_t *)raw, len, out, out_size, &out_len),
		     SMTP_DOT_VALID);
	cr_assert_leq(out_len, smtp_dot_stuffed_size_max(len));
	return out_len;
}

static void
assert_stuffs_to(const char *raw, size_t raw_len, const char *wire, size_t wire_len)
{
	uint8_t out[256];
	size_t out_len = stuff(raw, raw_len, out, sizeof(out));

	cr_assert_eq(out_len, wire_len, "stuffed size %zu, want %zu", out_len, wire_len);
	cr_assert(memcmp(out, wire, wire_len) == 0, "stuffed bytes differ for %.*s",
		  (int)raw_len, raw);
}

Test(smtp_dot, stuff_rfc5321_edge_cases)
{
	assert_stuffs_to(S(""), S(".\r\n"));
	assert_stuffs_to(S(".\r\n"), S("..\r\n.\r\n"));
	assert_stuffs_to(S("a\r\n.\r\n..\r\n...\r\n.x\r\n"),
			 S("a\r\n..\r\n...\r\n....\r\n..x\r\n.\r\n"));
	assert_stuffs_to(S("no final CRLF"), S("no final CRLF\r\n.\r\n"));
	assert_stuffs_to(S("a\r\n."), S("a\r\n..\r\n.\r\n"));
	assert_stuffs_to(S("\r\n"), S("\r\n.\r\n"));
	assert_stuffs_to(S("x.\r\n. \r\n"), S("x.\r\n.. \r\n.\r\n"));
}

Test(smtp_dot, long_line_then_dot_line)
{
	static char raw[998 + 2 + 3];
	static uint8_t wire[2048];
	static uint8_t back[2048];
	size_t wire_len = 0;
	size_t back_len = 0;

	memset(raw, 'x', 998);
	memcpy(raw + 998, "\r\n.\r\n", 5);
	wire_len = stuff(raw, sizeof(raw), wire, sizeof(wire));
	cr_assert_eq(wire_len, sizeof(raw) + 1 + 3);
	cr_assert(memcmp(wire + 1000, "..\r\n.\r\n", 7) == 0);
	cr_assert_eq(smtp_dot_unstuff(wire, wire_len, back, sizeof(back), &back_len),
		     SMTP_DOT_VALID);
	cr_assert_eq(back_len, sizeof(raw));
	cr_assert(memcmp(back, raw, back_len) == 0);
}

Test(smtp_dot, stuff_refuses_bare_cr_and_lf)
{
	uint8_t out[64];
	size_t out_len = 0;

	cr_assert_eq(smtp_dot_stuff((const uint8_t *)"a\nb\r\n", 5, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_LF);
	cr_assert_eq(smtp_dot_stuff((const uint8_t *)"a\rb\r\n", 5, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_CR);
	cr_assert_eq(smtp_dot_stuff((const uint8_t *)"ab\r", 3, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_CR);
	cr_assert_eq(smtp_dot_stuff((const uint8_t *)"\n", 1, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_LF);
	cr_assert_eq(smtp_dot_stuff((const uint8_t *)"\r\n.\n", 4, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_LF);
}

Test(smtp_dot, unstuff_removes_stuffing_and_terminator)
{
	uint8_t out[64];
	size_t out_len = 0;
	const char *wire = "..\r\n..x\r\n.y\r\n\r\n.\r\n";

	cr_assert_eq(smtp_dot_unstuff((const uint8_t *)wire, strlen(wire), out, sizeof(out),
				      &out_len),
		     SMTP_DOT_VALID);
	cr_assert_eq(out_len, strlen(".\r\n.x\r\ny\r\n\r\n"));
	cr_assert(memcmp(out, ".\r\n.x\r\ny\r\n\r\n", out_len) == 0);
	cr_assert_eq(smtp_dot_unstuff((const uint8_t *)".\r\n", 3, out, sizeof(out), &out_len),
		     SMTP_DOT_VALID);
	cr_assert_eq(out_len, 0);
	cr_assert_eq(smtp_dot_unstuff((const uint8_t *)"a\r\n.\n", 5, out, sizeof(out), &out_len),
		     SMTP_DOT_BARE_LF);
}

/* Random canonical raw message: lines of '.', 'a', ' ', 0xff, 0x00 (NUL
 * is not framing), each ending CRLF. */
static size_t
random_raw(uint64_t *seed, uint8_t *out, size_t out_size)
{
	static const uint8_t alphabet[] = { '.', '.', 'a', ' ', 0xff, 0x00 };
	size_t len = 0;
	size_t lines;

	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	lines = (size_t)((*seed >> 33) % 12u);

	for (size_t line = 0; line < lines; line++) {
		*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t width = (size_t)((*seed >> 33) % 6u);

		for (size_t i = 0; i < width && len + 3 < out_size; i++) {
			*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
			out[len++] = alphabet[(*seed >> 33) % sizeof(alphabet)];
		}
		if (len + 2 < out_size) {
			out[len++] = '\r';
			out[len++] = '\n';
		}
	}
	return len;
}

Test(smtp_dot, round_trip_on_random_messages)
{
	static uint8_t raw[256];
	static uint8_t wire[512];
	static uint8_t back[512];
	uint64_t seed = 0x5eed;

	for (int round = 0; round < 20000; round++) {
		size_t raw_len = random_raw(&seed, raw, sizeof(raw));
		size_t wire_len = stuff((const char *)raw, raw_len, wire, sizeof(wire));
		size_t back_len = 0;
		size_t consumed = 0;
		struct smtp_dot_detector detector;

		cr_assert_eq(smtp_dot_validate(wire, wire_len, NULL), SMTP_DOT_VALID);
		cr_assert_eq(smtp_dot_unstuff(wire, wire_len, back, sizeof(back), &back_len),
			     SMTP_DOT_VALID);
		cr_assert_eq(back_len, raw_len, "round %d", round);
		cr_assert(memcmp(back, raw, raw_len) == 0, "round %d", round);
		smtp_dot_detector_init(&detector);
		cr_assert_eq(smtp_dot_detector_scan(&detector, wire, wire_len, &consumed),
			     SMTP_DOT_SCAN_END);
		cr_assert_eq(consumed, wire_len, "the end is found only at the very end");
		cr_assert_not(detector.bare_cr_seen || detector.bare_lf_seen);
	}
}

/* hannob/smtpsmug sequences and friends: none ends the data. */
static const struct {
	const char *bytes;
	size_t len;
	bool bare_cr;
	bool bare_lf;
} smuggling[] = {
	{ S("\n.\n"), false, true },	 { S("\r.\r"), true, false },
	{ S("\r.\n"), true, true },	 { S("\n.\r"), true, true },
	{ S("\n.\r\n"), false, true },	 { S("\r\n.\n"), false, true },
	{ S("\r.\r\n"), true, false },	 { S("\r\n.\r"), true, false },
	{ S("\r\n\0.\r\n"), false, false }, { S("\r\n.\0\r\n"), false, false },
	{ S("\r\n.\r\r\n"), true, false },
};

static const char smuggled_tail[] = "MAIL FROM:<evil@example.com>\r\nRCPT TO:<x@y>\r\nDATA\r\n";

Test(smtp_dot, smuggling_sequences_never_end_the_data)
{
	static uint8_t buf[256];

	for (size_t i = 0; i < sizeof(smuggling) / sizeof(smuggling[0]); i++) {
		struct smtp_dot_detector detector;
		size_t len = 0;
		size_t consumed = 0;

		memcpy(buf, "Subject: hi\r\n\r\nbody", 19);
		len = 19;
		memcpy(buf + len, smuggling[i].bytes, smuggling[i].len);
		len += smuggling[i].len;
		memcpy(buf + len, smuggled_tail, sizeof(smuggled_tail) - 1);
		len += sizeof(smuggled_tail) - 1;
		for (size_t split = 0; split <= len; split++) {
			smtp_dot_detector_init(&detector);
			cr_assert_eq(smtp_dot_detector_scan(&detector, buf, split, &consumed),
				     SMTP_DOT_SCAN_AGAIN, "sequence %zu split %zu", i, split);
			cr_assert_eq(smtp_dot_detector_scan(&detector, buf + split, len - split,
							    &consumed),
				     SMTP_DOT_SCAN_AGAIN, "sequence %zu ended the data", i);
			cr_assert_eq(detector.bare_cr_seen, smuggling[i].bare_cr, "seq %zu CR", i);
			cr_assert_eq(detector.bare_lf_seen, smuggling[i].bare_lf, "seq %zu LF", i);
		}
		/* The real terminator still works after the smuggling attempt. */
		cr_assert_eq(smtp_dot_detector_scan(&detector, (const uint8_t *)".\r\nNEXT", 7,
						    &consumed),
			     SMTP_DOT_SCAN_END);
		cr_assert_eq(consumed, 3);
		cr_assert_eq(detector.data_size, len + 3);
	}
}

Test(smtp_dot, smuggling_at_the_very_start)
{
	struct smtp_dot_detector detector;
	size_t consumed = 0;

	smtp_dot_detector_init(&detector);
	cr_assert_eq(smtp_dot_detector_scan(&detector, (const uint8_t *)".\nx", 3, &consumed),
		     SMTP_DOT_SCAN_AGAIN);
	cr_assert(detector.bare_lf_seen);
	smtp_dot_detector_init(&detector);
	cr_assert_eq(smtp_dot_detector_scan(&detector, (const uint8_t *)".\r\nx", 4, &consumed),
		     SMTP_DOT_SCAN_END, "an empty message ends at once");
	cr_assert_eq(consumed, 3);
}

Test(smtp_dot, detector_finds_the_end_at_every_split)
{
	const char *data = "a\r\n..\r\n.b\r\n\r\n.\r\nQUIT\r\n";
	size_t len = strlen(data);
	size_t end = strlen("a\r\n..\r\n.b\r\n\r\n.\r\n");

	for (size_t split = 0; split <= len; split++) {
		struct smtp_dot_detector detector;
		size_t consumed = 0;
		size_t total = 0;
		enum smtp_dot_scan scan;

		smtp_dot_detector_init(&detector);
		scan = smtp_dot_detector_scan(&detector, (const uint8_t *)data, split, &consumed);
		total = consumed;
		if (scan == SMTP_DOT_SCAN_AGAIN) {
			scan = smtp_dot_detector_scan(&detector, (const uint8_t *)data + split,
						      len - split, &consumed);
			total += consumed;
		}
		cr_assert_eq(scan, SMTP_DOT_SCAN_END, "split %zu", split);
		cr_assert_eq(total, end, "split %zu", split);
		cr_assert_not(detector.bare_cr_seen || detector.bare_lf_seen);
	}
}

Test(smtp_dot, detector_byte_by_byte_flags_bare_bytes)
{
	const char *data = "a\rb\nc\r\n.\r\n";
	size_t len = strlen(data);
	struct smtp_dot_detector detector;
	size_t consumed = 0;

	smtp_dot_detector_init(&detector);
	for (size_t i = 0; i < len; i++) {
		enum smtp_dot_scan scan =
			smtp_dot_detector_scan(&detector, (const uint8_t *)data + i, 1, &consumed);

		cr_assert_eq(scan, i + 1 == len ? SMTP_DOT_SCAN_END : SMTP_DOT_SCAN_AGAIN);
	}
	cr_assert(detector.bare_cr_seen);
	cr_assert(detector.bare_lf_seen);
}

/* One high byte at every position of every length up to 200 (the 64-byte
 * blocks, their edges and the tail), at both ends of the high range; and
 * none at all, with every 7-bit value present. */
Test(smtp_dot, has_8bit_finds_one_high_byte_anywhere)
{
	uint8_t buf[200];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i % 0x80u);
	for (size_t len = 0; len <= sizeof(buf); len++) {
		cr_assert_not(smtp_dot_has_8bit(buf, len), "len %zu", len);
		for (size_t at = 0; at < len; at++) {
			const uint8_t highs[] = { 0x80u, 0xffu };

			for (size_t h = 0; h < sizeof(highs); h++) {
				uint8_t keep = buf[at];

				buf[at] = highs[h];
				cr_assert(smtp_dot_has_8bit(buf, len), "len %zu at %zu", len, at);
				cr_assert_not(smtp_dot_has_8bit(buf, at), "before it, len %zu", at);
				buf[at] = keep;
			}
		}
	}
}
