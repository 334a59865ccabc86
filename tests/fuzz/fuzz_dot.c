/*
 * fuzz_dot.c - libFuzzer harness for message transparency (smtp/smtp_dot.h;
 * reliability.md 3.1 fuzz_data_encoder, FZ-03).
 *
 * Input: 4 bytes of split pattern (fuzz_common.h), then a message. Checks,
 * beyond memory safety under ASan/UBSan:
 * - the end-of-DATA detector, fed in the fuzzer's chunks, ends exactly
 *   where a reference search for CRLF "." CRLF (the DATA command's CRLF
 *   counting as the first one) ends, with the same bare CR / bare LF flags
 *   and data_size; consumed <= len; no early end;
 * - smtp_dot_validate says VALID exactly when the detector ends at the last
 *   byte with neither flag set;
 * - stuff then unstuff returns the input (plus the CRLF a last line
 *   lacked); the stuffed form fits smtp_dot_stuffed_size_max, validates,
 *   and the detector ends it at its last byte and nowhere before;
 * - unstuff of any input writes at most wire_len - 3 bytes, and a body
 *   that unstuffs re-stuffs to a body that unstuffs to the same bytes.
 */
#include <string.h>

#include "fuzz_common.h"
#include "smtp/smtp_dot.h"

struct reference_end {
	bool is_found;
	size_t end;	/* bytes up to and including the terminator's LF */
	bool bare_cr;	/* within [0, end) or the whole input */
	bool bare_lf;
};

/* The naive model: search "\r\n" + data for "\r\n.\r\n" (the DATA
 * command's CRLF ends the line before the data); flag a CR followed by
 * anything but LF, and an LF after anything but CR, up to the end. */
static struct reference_end
reference_scan(const uint8_t *data, size_t len)
{
	struct reference_end ref = {.is_found = false, .end = len};

	for (size_t i = 0; i < len; i++) {
		if (i >= 1 && data[i - 1] == '\r' && data[i] != '\n')
			ref.bare_cr = true;
		if (data[i] != '\n')
			continue;
		if (i == 0 || data[i - 1] != '\r') {
			ref.bare_lf = true;
		} else if (i >= 2 && data[i - 2] == '.' &&
			   (i == 2 || (i >= 4 && data[i - 3] == '\n' && data[i - 4] == '\r'))) {
			ref.is_found = true;
			ref.end = i + 1;
			break;
		}
	}
	return ref;
}

static void
check_detector(const uint8_t *data, size_t len, const uint8_t pattern[FUZZ_SPLIT_COUNT])
{
	struct smtp_dot_detector detector;
	struct reference_end ref = reference_scan(data, len);
	size_t pos = 0;
	uint32_t chunk_index = 0;
	bool is_ended = false;

	smtp_dot_detector_init(&detector);
	while (pos < len) {
		size_t chunk = fuzz_split_next(pattern, chunk_index++, len - pos);
		size_t consumed = 99999;
		enum smtp_dot_scan r = smtp_dot_detector_scan(&detector, data + pos, chunk, &consumed);

		FUZZ_CHECK(consumed <= chunk, "consumed <= len");
		pos += consumed;
		if (r == SMTP_DOT_SCAN_END) {
			FUZZ_CHECK(consumed >= 1, "the end takes at least the LF");
			is_ended = true;
			break;
		}
		FUZZ_CHECK(consumed == chunk, "AGAIN takes every byte");
	}
	FUZZ_CHECK(is_ended == ref.is_found, "detector ends exactly when the reference does");
	FUZZ_CHECK(pos == ref.end, "detector ends where the reference does");
	FUZZ_CHECK(detector.data_size == pos, "data_size counts the scanned bytes");
	FUZZ_CHECK(detector.bare_lf_seen == ref.bare_lf, "bare LF flag = reference");
	FUZZ_CHECK(detector.bare_cr_seen == ref.bare_cr, "bare CR flag = reference");

	size_t offset = 0;
	enum smtp_dot_reason reason = smtp_dot_validate(data, len, &offset);
	bool detector_valid = is_ended && pos == len && !ref.bare_cr && !ref.bare_lf;

	FUZZ_CHECK((reason == SMTP_DOT_VALID) == detector_valid,
		   "validate VALID <=> detector ends at the last byte without bare CR/LF");
	FUZZ_CHECK(reason < SMTP_DOT_REASON_COUNT, "reason in range");
	FUZZ_CHECK(offset <= len, "offset within the input");
	FUZZ_CHECK(smtp_dot_reason_name(reason) != NULL, "every reason has a name");
}

/* The stuffed form ends at its last byte and nowhere before. */
static void
check_wire_ends_once(const uint8_t *wire, size_t wire_len)
{
	struct smtp_dot_detector detector;
	size_t consumed = 0;

	smtp_dot_detector_init(&detector);
	FUZZ_CHECK(smtp_dot_detector_scan(&detector, wire, wire_len, &consumed) ==
			   SMTP_DOT_SCAN_END,
		   "stuffed body ends");
	FUZZ_CHECK(consumed == wire_len, "no early end of data in a stuffed body");
	FUZZ_CHECK(!detector.bare_cr_seen && !detector.bare_lf_seen, "stuffed: CRLF only");
}

static void
check_round_trip(const uint8_t *raw, size_t raw_len)
{
	size_t wire_max = smtp_dot_stuffed_size_max(raw_len);
	uint8_t *wire = malloc(wire_max);
	uint8_t *back = malloc(wire_max);
	size_t wire_len = 0;
	size_t back_len = 0;

	FUZZ_CHECK(wire != NULL && back != NULL, "malloc");
	enum smtp_dot_reason reason = smtp_dot_stuff(raw, raw_len, wire, wire_max, &wire_len);
	bool has_bare = false;

	/* Bare CR / LF anywhere in raw (the reference stops at a terminator). */
	for (size_t i = 0; i < raw_len; i++) {
		if ((raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r')) ||
		    (raw[i] == '\r' && i + 1 < raw_len && raw[i + 1] != '\n') ||
		    (raw[i] == '\r' && i + 1 == raw_len))
			has_bare = true;
	}
	if (has_bare) {
		FUZZ_CHECK(reason == SMTP_DOT_BARE_CR || reason == SMTP_DOT_BARE_LF,
			   "stuff refuses bare CR/LF");
		goto out;
	}
	FUZZ_CHECK(reason == SMTP_DOT_VALID, "stuff takes CRLF-only input");
	FUZZ_CHECK(wire_len <= wire_max, "stuffed size within the bound");
	FUZZ_CHECK(smtp_dot_validate(wire, wire_len, NULL) == SMTP_DOT_VALID, "stuffed validates");
	check_wire_ends_once(wire, wire_len);
	FUZZ_CHECK(smtp_dot_unstuff(wire, wire_len, back, wire_max, &back_len) == SMTP_DOT_VALID,
		   "stuffed unstuffs");
	bool ends_crlf = raw_len >= 2 && raw[raw_len - 2] == '\r' && raw[raw_len - 1] == '\n';

	if (raw_len == 0 || ends_crlf) {
		FUZZ_CHECK(back_len == raw_len && memcmp(back, raw, raw_len) == 0,
			   "unstuff(stuff(x)) == x");
	} else {
		FUZZ_CHECK(back_len == raw_len + 2 && memcmp(back, raw, raw_len) == 0 &&
				   memcmp(back + raw_len, "\r\n", 2) == 0,
			   "unstuff(stuff(x)) == x CRLF when the last line lacks it");
	}
out:
	free(wire);
	free(back);
}

static void
check_unstuff(const uint8_t *wire, size_t wire_len)
{
	size_t out_size = wire_len > 0 ? wire_len : 1;
	uint8_t *raw = malloc(out_size);
	size_t raw_len = 0;

	FUZZ_CHECK(raw != NULL, "malloc");
	enum smtp_dot_reason reason = smtp_dot_unstuff(wire, wire_len, raw, out_size, &raw_len);

	FUZZ_CHECK(reason == smtp_dot_validate(wire, wire_len, NULL), "unstuff validates");
	if (reason == SMTP_DOT_VALID) {
		FUZZ_CHECK(wire_len >= 3 && raw_len <= wire_len - 3, "unstuffed is smaller");
		size_t max = smtp_dot_stuffed_size_max(raw_len);
		uint8_t *wire2 = malloc(max);
		uint8_t *raw2 = malloc(max);
		size_t wire2_len = 0;
		size_t raw2_len = 0;

		FUZZ_CHECK(wire2 != NULL && raw2 != NULL, "malloc");
		FUZZ_CHECK(smtp_dot_stuff(raw, raw_len, wire2, max, &wire2_len) == SMTP_DOT_VALID,
			   "unstuffed re-stuffs");
		FUZZ_CHECK(wire2_len <= wire_len, "re-stuffing never grows a valid body");
		FUZZ_CHECK(smtp_dot_unstuff(wire2, wire2_len, raw2, max, &raw2_len) ==
					   SMTP_DOT_VALID &&
				   raw2_len == raw_len && memcmp(raw2, raw, raw_len) == 0,
			   "unstuff(stuff(unstuff(w))) == unstuff(w)");
		free(wire2);
		free(raw2);
	}
	free(raw);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cursor cur = {.data = data, .size = size, .pos = 0};
	uint8_t pattern[FUZZ_SPLIT_COUNT];

	for (uint32_t i = 0; i < FUZZ_SPLIT_COUNT; i++)
		pattern[i] = fuzz_take_u8(&cur);
	const uint8_t *body = data + cur.pos;
	size_t len = fuzz_left(&cur);

	check_detector(body, len, pattern);
	check_round_trip(body, len);
	check_unstuff(body, len);
	return 0;
}
