/*
 * test_record.c - spool record format: CRC32C, encode/decode round trips
 * at every bound, rejection of every truncation and every single-bit flip,
 * structural checks behind a valid CRC, queue ids.
 *
 * The tests pin the on-disk format independently of spool_record.c: the
 * golden-layout tests read fields at the offsets of docs/spool-format.md,
 * and reseal() recomputes the CRC by the documented rule (CRC32C of the
 * record with the CRC field zero) to reach the structural checks that a
 * CRC failure would otherwise hide.
 *
 * Format versions: OUTCOME records are written at version 2 (attempt
 * count at offset 60); a version-1 OUTCOME, built here by hand from the
 * documented layout, still decodes (attempts unknown); versions and types
 * the decoder does not know are BAD_VERSION.
 *
 * Randomness is a fixed-seed xorshift; a failure message names the case.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "spool/spool_crc32c.h"
#include "spool/spool_record.h"

/* ------------------------------------------------------------------ */
/* Helpers.                                                            */
/* ------------------------------------------------------------------ */

static uint64_t
rng_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x;
}

static void
rng_fill(uint64_t *state, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		p[i] = (uint8_t)rng_next(state);
	}
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n == 0 ? 1 : n);
	cr_assert_not_null(p, "malloc(%zu)", n);
	return p;
}

static void
put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint64_t
get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = n; i > 0; i--) {
		v = v << 8 | p[i - 1];
	}
	return v;
}

/* The documented CRC rule, computed here independently of the encoder. */
static uint32_t
crc_of_record(const uint8_t *rec, uint32_t size)
{
	uint8_t *copy = xmalloc(size);
	memcpy(copy, rec, size);
	put_le(copy + 12, 0, 4);
	uint32_t crc = spool_crc32c(0, copy, size);
	free(copy);
	return crc;
}

static void
reseal(uint8_t *rec, uint32_t size)
{
	put_le(rec + 12, crc_of_record(rec, size), 4);
}

/* A message whose parts the test owns. */
struct fixture {
	uint8_t *sender;
	uint8_t *rcpt_bytes;
	struct spool_span *rcpts;
	uint8_t *body;
	struct spool_message msg;
};

/* Body bytes in wire form: lines of printable text, then CRLF.CRLF. */
static void
body_fill(uint8_t *body, uint32_t size, uint64_t seed)
{
	uint64_t state = seed | 1;
	uint64_t bits = 0;
	cr_assert_geq(size, 5u);
	for (uint32_t i = 0; i < size; i++) {
		if (i % 8 == 0) bits = rng_next(&state);
		body[i] = (uint8_t)('!' + (bits & 63));
		bits >>= 8;
		if (i % 78 == 76) body[i] = '\r';
		if (i % 78 == 77) body[i] = '\n';
	}
	memcpy(body + size - 5, "\r\n.\r\n", 5);
}

static void
fixture_init(struct fixture *f, uint32_t sender_size, uint32_t rcpt_count, uint32_t rcpt_size,
	     uint32_t body_size)
{
	uint64_t state = 0x9e3779b97f4a7c15ull ^ rcpt_count ^ ((uint64_t)body_size << 20);
	memset(f, 0, sizeof(*f));
	f->sender = xmalloc(sender_size);
	rng_fill(&state, f->sender, sender_size);
	f->rcpt_bytes = xmalloc((size_t)rcpt_count * rcpt_size);
	rng_fill(&state, f->rcpt_bytes, (size_t)rcpt_count * rcpt_size);
	f->rcpts = xmalloc((size_t)(rcpt_count + 1) * sizeof(*f->rcpts));
	for (uint32_t i = 0; i < rcpt_count; i++) {
		f->rcpts[i].data = f->rcpt_bytes + (size_t)i * rcpt_size;
		f->rcpts[i].size = rcpt_size;
	}
	f->body = xmalloc(body_size);
	body_fill(f->body, body_size, state);
	f->msg = (struct spool_message){
		.created_ns = 1700000000123456789ull,
		.expires_ns = 1700432000123456789ull,
		.sender = {.data = f->sender, .size = sender_size},
		.rcpt_count = rcpt_count,
		.rcpts = f->rcpts,
		.body = {.data = f->body, .size = body_size},
	};
}

static void
fixture_deinit(struct fixture *f)
{
	free(f->sender);
	free(f->rcpt_bytes);
	free(f->rcpts);
	free(f->body);
}

static const struct spool_location test_loc = {
	.segment_id = 0x0123456789abcdefull, .offset = 4096u * 3u + 64u, .shard = 7};

static bool
span_equal(struct spool_span a, struct spool_span b)
{
	return a.size == b.size && (a.size == 0 || memcmp(a.data, b.data, a.size) == 0);
}

static void
span_expect_equal(struct spool_span got, struct spool_span want, const char *what)
{
	cr_assert_eq(got.size, want.size, "%s size", what);
	cr_assert(span_equal(got, want), "%s bytes", what);
}

/* Encode, check, decode, compare every field. Returns the record size. */
static uint32_t
message_round_trip(const struct fixture *f)
{
	uint32_t size = spool_message_record_size(&f->msg);
	cr_assert_neq(size, 0u, "record size");
	cr_assert_eq(size % SPOOL_RECORD_ALIGN, 0u);
	uint8_t *buf = xmalloc(size);
	cr_assert_eq(spool_message_encode(buf, size, &f->msg, 42, &test_loc), size);

	struct spool_record_header hdr;
	cr_assert_eq(spool_record_check(buf, size, &test_loc, &hdr), SPOOL_DECODE_OK);
	cr_assert_eq(hdr.type, SPOOL_RECORD_MESSAGE);
	cr_assert_eq(hdr.size, size);
	cr_assert_eq(hdr.commit_seq, 42u);
	cr_assert_eq(hdr.location.segment_id, test_loc.segment_id);
	cr_assert_eq(hdr.location.offset, test_loc.offset);
	cr_assert_eq(hdr.location.shard, test_loc.shard);

	struct spool_span *rcpts = xmalloc(SPOOL_RECIPIENTS_MAX * sizeof(*rcpts));
	struct spool_message got;
	cr_assert_eq(spool_message_decode(buf, size, &got, rcpts, SPOOL_RECIPIENTS_MAX),
		     SPOOL_DECODE_OK);
	cr_assert_eq(got.created_ns, f->msg.created_ns);
	cr_assert_eq(got.expires_ns, f->msg.expires_ns);
	cr_assert_eq(got.rcpt_count, f->msg.rcpt_count);
	cr_assert_eq(got.rcpts, rcpts);
	span_expect_equal(got.sender, f->msg.sender, "sender");
	span_expect_equal(got.body, f->msg.body, "body");
	uint32_t rcpt_mismatches = 0;
	for (uint32_t i = 0; i < got.rcpt_count; i++) {
		if (!span_equal(got.rcpts[i], f->msg.rcpts[i])) rcpt_mismatches++;
	}
	cr_assert_eq(rcpt_mismatches, 0u, "recipients differ");
	/* Views borrow the record buffer. */
	cr_assert(got.body.data >= buf && got.body.data + got.body.size <= buf + size);
	free(rcpts);
	free(buf);
	return size;
}

/* ------------------------------------------------------------------ */
/* CRC32C.                                                             */
/* ------------------------------------------------------------------ */

typedef uint32_t crc_fn(uint32_t, const void *, size_t);

static void
crc_expect_vectors(crc_fn *fn, const char *name)
{
	uint8_t buf[48];
	cr_assert_eq(fn(0, "123456789", 9), 0xE3069283u, "%s check value", name);
	cr_assert_eq(fn(0, NULL, 0), 0u, "%s empty", name);
	cr_assert_eq(fn(0, "a", 1), 0xC1D04330u, "%s \"a\"", name);
	/* RFC 3720 appendix B.4. */
	memset(buf, 0, 32);
	cr_assert_eq(fn(0, buf, 32), 0x8A9136AAu, "%s 32 zeros", name);
	memset(buf, 0xff, 32);
	cr_assert_eq(fn(0, buf, 32), 0x62A8AB43u, "%s 32 ones", name);
	for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
	cr_assert_eq(fn(0, buf, 32), 0x46DD794Eu, "%s incrementing", name);
	for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
	cr_assert_eq(fn(0, buf, 32), 0x113FDB5Cu, "%s decrementing", name);
	static const uint8_t iscsi_read[48] = {
		0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
		0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
	cr_assert_eq(fn(0, iscsi_read, 48), 0xD9963A56u, "%s iSCSI read", name);
	/* The check value at every misalignment. */
	char misaligned[9 + 16];
	for (size_t off = 0; off < 16; off++) {
		memcpy(misaligned + off, "123456789", 9);
		cr_assert_eq(fn(0, misaligned + off, 9), 0xE3069283u, "%s off %zu", name, off);
	}
}

Test(spool_crc32c, known_vectors_dispatch) { crc_expect_vectors(spool_crc32c, "dispatch"); }

Test(spool_crc32c, known_vectors_software) { crc_expect_vectors(spool_crc32c_sw, "software"); }

Test(spool_crc32c, known_vectors_hardware)
{
	if (!spool_crc32c_hw_is_available()) cr_skip_test("no SSE4.2 CRC32 on this CPU");
	crc_expect_vectors(spool_crc32c_hw, "hardware");
}

Test(spool_crc32c, continuing_equals_one_pass)
{
	uint8_t buf[1000];
	uint64_t state = 11;
	rng_fill(&state, buf, sizeof(buf));
	uint32_t whole = spool_crc32c(0, buf, sizeof(buf));
	for (size_t cut = 0; cut <= sizeof(buf); cut += 7) {
		uint32_t c = spool_crc32c(0, buf, cut);
		cr_assert_eq(spool_crc32c(c, buf + cut, sizeof(buf) - cut), whole, "cut %zu", cut);
		c = spool_crc32c_sw(0, buf, cut);
		uint32_t rest = spool_crc32c_sw(c, buf + cut, sizeof(buf) - cut);
		cr_assert_eq(rest, whole, "sw %zu", cut);
	}
}

Test(spool_crc32c, hardware_matches_software_on_random_buffers)
{
	if (!spool_crc32c_hw_is_available()) cr_skip_test("no SSE4.2 CRC32 on this CPU");
	enum { BUF_SIZE = 1 << 17 };
	uint8_t *buf = xmalloc(BUF_SIZE + 16);
	uint64_t state = 0x5eed;
	rng_fill(&state, buf, BUF_SIZE + 16);
	unsigned mismatches = 0;
	for (size_t len = 0; len <= 1100; len++) {
		for (size_t off = 0; off < 16; off++) {
			uint32_t seed = (uint32_t)rng_next(&state);
			uint32_t hw = spool_crc32c_hw(seed, buf + off, len);
			uint32_t sw = spool_crc32c_sw(seed, buf + off, len);
			if (hw != sw || hw != spool_crc32c(seed, buf + off, len)) mismatches++;
		}
	}
	for (int i = 0; i < 200; i++) {
		size_t off = rng_next(&state) % 16;
		size_t len = rng_next(&state) % BUF_SIZE;
		if (spool_crc32c_hw(0, buf + off, len) != spool_crc32c_sw(0, buf + off, len)) {
			mismatches++;
		}
	}
	cr_assert_eq(mismatches, 0u);
	free(buf);
}

/*
 * Long inputs take the three-stream path (three chains joined with
 * PCLMULQDQ, 96 bytes and up). These values come from a bitwise
 * CRC-32C written independently of spool_crc32c.c (Python, one bit at a
 * time): pattern byte i is (i * 131 + 7) mod 256.
 */
Test(spool_crc32c, known_vectors_long_inputs)
{
	static const struct {
		uint32_t len;
		uint32_t crc_pattern;
		uint32_t crc_zeros;
	} cases[] = {
		{96, 0x01693014u, 0x51F204ABu},	    {1024, 0xF2F88DC3u, 0xEEAEDE7Cu},
		{4096, 0xE6ADC5B2u, 0x98F94189u},   {12345, 0x548F1F86u, 0x6D477B57u},
		{24653, 0x307157F2u, 0xADD4A828u},
	};
	enum { BUF_SIZE = 24653 + 8 };
	uint8_t *pattern = xmalloc(BUF_SIZE);
	uint8_t *zeros = calloc(1, BUF_SIZE);
	cr_assert_not_null(zeros);
	for (size_t i = 0; i < BUF_SIZE; i++) pattern[i] = (uint8_t)(i * 131u + 7u);
	crc_fn *const fns[] = {spool_crc32c, spool_crc32c_sw, spool_crc32c_hw};
	size_t fn_count = spool_crc32c_hw_is_available() ? 3 : 2;
	for (size_t f = 0; f < fn_count; f++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			cr_assert_eq(fns[f](0, pattern, cases[i].len), cases[i].crc_pattern,
				     "fn %zu pattern %u", f, cases[i].len);
			cr_assert_eq(fns[f](0, zeros, cases[i].len), cases[i].crc_zeros,
				     "fn %zu zeros %u", f, cases[i].len);
		}
	}
	free(zeros);
	free(pattern);
}

/* Every length across the one-chain / three-stream boundary and the
 * stream-size cap (4 KiB a stream), each at two random alignments and with
 * a random starting CRC. */
Test(spool_crc32c, hardware_matches_software_every_length_to_5000)
{
	if (!spool_crc32c_hw_is_available()) cr_skip_test("no SSE4.2 CRC32 on this CPU");
	enum { LEN_MAX = 5000, OFF_MAX = 64 };
	uint8_t *buf = xmalloc(LEN_MAX + OFF_MAX);
	uint64_t state = 0xc0ffee;
	rng_fill(&state, buf, LEN_MAX + OFF_MAX);
	unsigned mismatches = 0;
	for (size_t len = 0; len <= LEN_MAX; len++) {
		for (int k = 0; k < 2; k++) {
			size_t off = rng_next(&state) % OFF_MAX;
			uint32_t seed = k == 0 ? 0 : (uint32_t)rng_next(&state);
			uint32_t sw = spool_crc32c_sw(seed, buf + off, len);
			if (spool_crc32c_hw(seed, buf + off, len) != sw) mismatches++;
			if (spool_crc32c(seed, buf + off, len) != sw) mismatches++;
		}
	}
	cr_assert_eq(mismatches, 0u);
	free(buf);
}

static void
crc_expect_large_buffer(size_t size, uint64_t seed)
{
	uint8_t *buf = xmalloc(size + 8);
	uint64_t state = seed;
	rng_fill(&state, buf, size + 8);
	size_t off = rng_next(&state) % 8;
	uint32_t sw = spool_crc32c_sw(0, buf + off, size);
	cr_assert_eq(spool_crc32c(0, buf + off, size), sw, "dispatch %zu", size);
	cr_assert_eq(spool_crc32c_hw(0, buf + off, size), sw, "hw %zu", size);
	/* Continuing at a random cut gives the same value. */
	size_t cut = rng_next(&state) % size;
	uint32_t c = spool_crc32c_hw(0, buf + off, cut);
	cr_assert_eq(spool_crc32c_hw(c, buf + off + cut, size - cut), sw, "cut %zu", cut);
	free(buf);
}

Test(spool_crc32c, hardware_matches_software_1_mib)
{
	if (!spool_crc32c_hw_is_available()) cr_skip_test("no SSE4.2 CRC32 on this CPU");
	crc_expect_large_buffer((size_t)1 << 20, 0x1111);
	crc_expect_large_buffer(((size_t)1 << 20) + 13, 0x2222);
}

Test(spool_crc32c, hardware_matches_software_64_mib)
{
	if (!spool_crc32c_hw_is_available()) cr_skip_test("no SSE4.2 CRC32 on this CPU");
	crc_expect_large_buffer((size_t)64 << 20, 0x6464);
}

Test(spool_crc32c, null_data_with_length_aborts, .signal = SIGABRT)
{
	(void)spool_crc32c(0, NULL, 5);
}

/* ------------------------------------------------------------------ */
/* MESSAGE round trips at the bounds.                                  */
/* ------------------------------------------------------------------ */

Test(spool_message, minimal_round_trip)
{
	struct fixture f;
	fixture_init(&f, 0, 1, 1, 5);
	cr_assert_eq(message_round_trip(&f), 72u);
	fixture_deinit(&f);
}

Test(spool_message, typical_round_trip)
{
	struct fixture f;
	fixture_init(&f, 24, 3, 30, 2000);
	message_round_trip(&f);
	fixture_deinit(&f);
}

Test(spool_message, every_padding_length_round_trips)
{
	for (uint32_t body_size = 5; body_size < 5 + 2 * SPOOL_RECORD_ALIGN; body_size++) {
		struct fixture f;
		fixture_init(&f, 3, 1, 5, body_size);
		uint32_t size = message_round_trip(&f);
		uint32_t unpadded = 40 + 24 + 3 + 2 + 5 + body_size;
		cr_assert_eq(size, ENG_ALIGN_UP(unpadded, SPOOL_RECORD_ALIGN));
		fixture_deinit(&f);
	}
}

Test(spool_message, max_sender_round_trip)
{
	struct fixture f;
	fixture_init(&f, SPOOL_ADDRESS_SIZE_MAX, 1, 10, 100);
	message_round_trip(&f);
	fixture_deinit(&f);
}

Test(spool_message, max_recipient_size_round_trip)
{
	struct fixture f;
	fixture_init(&f, 10, 2, SPOOL_ADDRESS_SIZE_MAX, 100);
	message_round_trip(&f);
	fixture_deinit(&f);
}

Test(spool_message, max_recipients_round_trip)
{
	struct fixture f;
	fixture_init(&f, 10, SPOOL_RECIPIENTS_MAX, 17, 100);
	message_round_trip(&f);
	fixture_deinit(&f);
}

Test(spool_message, one_mib_body_round_trip)
{
	struct fixture f;
	fixture_init(&f, 20, 5, 20, 1024u * 1024u);
	message_round_trip(&f);
	fixture_deinit(&f);
}

Test(spool_message, max_body_round_trip)
{
	struct fixture f;
	fixture_init(&f, 20, 1, 20, SPOOL_BODY_SIZE_MAX);
	message_round_trip(&f);
	fixture_deinit(&f);
}

/* Every bound at its maximum at once: the largest record there can be. */
Test(spool_message, largest_record_round_trip)
{
	struct fixture f;
	fixture_init(&f, SPOOL_ADDRESS_SIZE_MAX, SPOOL_RECIPIENTS_MAX, SPOOL_ADDRESS_SIZE_MAX,
		     SPOOL_BODY_SIZE_MAX);
	uint32_t size = message_round_trip(&f);
	cr_assert_leq(size, SPOOL_RECORD_SIZE_MAX);
	cr_assert_gt(size, SPOOL_RECORD_SIZE_MAX - 2 * SPOOL_RECORD_ALIGN);
	fixture_deinit(&f);
}

/* encode must return 0 and leave buf untouched. */
static void
expect_encode_rejects(const struct spool_message *msg, uint32_t buf_size, const char *what)
{
	uint32_t alloc = buf_size + 64;
	uint8_t *buf = xmalloc(alloc);
	memset(buf, 0xa5, alloc);
	cr_assert_eq(spool_message_encode(buf, buf_size, msg, 1, &test_loc), 0u, "%s", what);
	for (uint32_t i = 0; i < alloc; i++) {
		if (buf[i] != 0xa5) cr_assert_fail("%s: encode wrote byte %u", what, i);
	}
	free(buf);
}

Test(spool_message, encode_rejects_each_bound_exceeded_by_one)
{
	struct fixture f;
	fixture_init(&f, SPOOL_ADDRESS_SIZE_MAX + 1, SPOOL_RECIPIENTS_MAX + 1,
		     SPOOL_ADDRESS_SIZE_MAX + 1, 5);
	const uint32_t room = 4096;
	struct spool_message ok = f.msg;
	ok.sender.size = 8;
	ok.rcpt_count = 1;
	struct spool_span rcpt_ok = {.data = f.rcpt_bytes, .size = 8};
	ok.rcpts = &rcpt_ok;
	cr_assert_neq(spool_message_record_size(&ok), 0u);

	struct spool_message m = ok;
	m.sender.size = SPOOL_ADDRESS_SIZE_MAX + 1;
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "sender size max + 1");

	m = ok;
	m.rcpt_count = 0;
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "no recipient");

	m = ok;
	m.rcpts = f.rcpts;
	for (uint32_t i = 0; i <= SPOOL_RECIPIENTS_MAX; i++) f.rcpts[i].size = 1;
	m.rcpt_count = SPOOL_RECIPIENTS_MAX;
	cr_assert_neq(spool_message_record_size(&m), 0u);
	m.rcpt_count = SPOOL_RECIPIENTS_MAX + 1;
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, 64 * 1024, "recipient count max + 1");

	m = ok;
	struct spool_span rcpt_bad = {.data = f.rcpt_bytes, .size = SPOOL_ADDRESS_SIZE_MAX + 1};
	m.rcpts = &rcpt_bad;
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "recipient size max + 1");
	rcpt_bad.size = 0;
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "empty recipient");

	/* One bad recipient among good ones. */
	struct spool_span three[3] = {rcpt_ok, rcpt_ok, rcpt_ok};
	three[2].size = SPOOL_ADDRESS_SIZE_MAX + 1;
	m = ok;
	m.rcpts = three;
	m.rcpt_count = 3;
	expect_encode_rejects(&m, room, "third recipient too long");

	fixture_deinit(&f);
}

Test(spool_message, encode_rejects_bad_bodies_and_small_buffers)
{
	struct fixture f;
	fixture_init(&f, 8, 1, 8, SPOOL_BODY_SIZE_MAX + 1);
	const uint32_t room = 4096;
	struct spool_message ok = f.msg;
	ok.body = (struct spool_span){.data = (const uint8_t *)"\r\n.\r\n", .size = 5};
	cr_assert_neq(spool_message_record_size(&ok), 0u);

	struct spool_message m = ok;
	m.body = (struct spool_span){.data = f.body, .size = SPOOL_BODY_SIZE_MAX + 1};
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "body size max + 1");

	m = ok;
	m.body = (struct spool_span){.data = (const uint8_t *)"\n.\r\n", .size = 4};
	cr_assert_eq(spool_message_record_size(&m), 0u);
	expect_encode_rejects(&m, room, "body shorter than the terminator");

	static const char *const bad_ends[] = {"x\r\n.\n", "x\n.\r\n", "x\r\n\r\n", "x\r.\r\n",
					       "\r\n.\r\nx", "x\r\n.\r\0", "x\r\n,\r\n"};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(bad_ends); i++) {
		m = ok;
		m.body = (struct spool_span){.data = (const uint8_t *)bad_ends[i], .size = 6};
		cr_assert_eq(spool_message_record_size(&m), 0u, "bad end %zu", i);
		expect_encode_rejects(&m, room, "body without CRLF.CRLF");
	}

	uint32_t size = spool_message_record_size(&ok);
	expect_encode_rejects(&ok, size - 1, "buffer one byte short");
	expect_encode_rejects(&ok, 0, "no buffer");
	fixture_deinit(&f);
}

Test(spool_message, decode_count_only_without_recipient_array)
{
	struct fixture f;
	fixture_init(&f, 5, 4, 9, 100);
	uint32_t size = spool_message_record_size(&f.msg);
	uint8_t *buf = xmalloc(size);
	cr_assert_eq(spool_message_encode(buf, size, &f.msg, 3, &test_loc), size);
	struct spool_message got;
	cr_assert_eq(spool_message_decode(buf, size, &got, NULL, 0), SPOOL_DECODE_OK);
	cr_assert_eq(got.rcpt_count, 4u);
	cr_assert_null(got.rcpts);
	span_expect_equal(got.body, f.msg.body, "body");
	free(buf);
	fixture_deinit(&f);
}

Test(spool_message, decode_into_too_small_array_is_short)
{
	struct fixture f;
	fixture_init(&f, 5, 4, 9, 100);
	uint32_t size = spool_message_record_size(&f.msg);
	uint8_t *buf = xmalloc(size);
	cr_assert_eq(spool_message_encode(buf, size, &f.msg, 3, &test_loc), size);
	struct spool_span rcpts[4];
	struct spool_message got;
	cr_assert_eq(spool_message_decode(buf, size, &got, rcpts, 3), SPOOL_DECODE_SHORT);
	cr_assert_eq(spool_message_decode(buf, size, &got, rcpts, 4), SPOOL_DECODE_OK);
	free(buf);
	fixture_deinit(&f);
}

Test(spool_message, encode_with_unaligned_location_aborts, .signal = SIGABRT)
{
	struct fixture f;
	fixture_init(&f, 5, 1, 9, 100);
	uint8_t buf[512];
	struct spool_location loc = test_loc;
	loc.offset += 4;
	(void)spool_message_encode(buf, sizeof(buf), &f.msg, 1, &loc);
}

/* ------------------------------------------------------------------ */
/* OUTCOME and PAD.                                                    */
/* ------------------------------------------------------------------ */

static struct spool_outcome
outcome_sample(uint16_t state)
{
	return (struct spool_outcome){
		.message = {.segment_id = 0xfedcba9876543210ull, .offset = 8u * 1000u, .shard = 3},
		.rcpt_index = SPOOL_RECIPIENTS_MAX - 1,
		.state = state,
		.attempts = 7,
		.time_ns = 0x1122334455667788ull,
	};
}

Test(spool_outcome, round_trip_each_state)
{
	for (uint16_t state = SPOOL_RCPT_DELIVERED; state < SPOOL_RCPT_STATE_COUNT; state++) {
		struct spool_outcome in = outcome_sample(state);
		uint8_t buf[SPOOL_OUTCOME_RECORD_SIZE];
		cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &in, 99, &test_loc),
			     SPOOL_OUTCOME_RECORD_SIZE);
		struct spool_record_header hdr;
		enum spool_decode_result r = spool_record_check(buf, sizeof(buf), &test_loc, &hdr);
		cr_assert_eq(r, SPOOL_DECODE_OK);
		cr_assert_eq(hdr.type, SPOOL_RECORD_OUTCOME);
		cr_assert_eq(hdr.size, SPOOL_OUTCOME_RECORD_SIZE);
		cr_assert_eq(hdr.commit_seq, 99u);
		struct spool_outcome out;
		cr_assert_eq(spool_outcome_decode(buf, sizeof(buf), &out), SPOOL_DECODE_OK);
		cr_assert_eq(out.message.segment_id, in.message.segment_id);
		cr_assert_eq(out.message.offset, in.message.offset);
		cr_assert_eq(out.message.shard, in.message.shard);
		cr_assert_eq(out.rcpt_index, in.rcpt_index);
		cr_assert_eq(out.state, state, "state %s", spool_rcpt_state_name(state));
		cr_assert_eq(out.attempts, in.attempts);
		cr_assert_eq(out.time_ns, in.time_ns);
		cr_assert_eq(hdr.version, SPOOL_OUTCOME_VERSION);
	}
}

Test(spool_outcome, round_trip_attempts_at_bounds)
{
	static const uint32_t counts[] = {0, 1, 2, 3, 255, 65536, SPOOL_ATTEMPTS_MAX};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(counts); i++) {
		struct spool_outcome in = outcome_sample(SPOOL_RCPT_DEFERRED);
		in.attempts = counts[i];
		uint8_t buf[SPOOL_OUTCOME_RECORD_SIZE];
		cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &in, 5, &test_loc), sizeof(buf));
		cr_assert_eq(buf[4], SPOOL_OUTCOME_VERSION, "written at the current version");
		cr_assert_eq(get_le(buf + 60, 4), counts[i], "attempts at offset 60");
		struct spool_record_header hdr;
		cr_assert_eq(spool_record_check(buf, sizeof(buf), &test_loc, &hdr), SPOOL_DECODE_OK);
		struct spool_outcome out;
		cr_assert_eq(spool_outcome_decode(buf, sizeof(buf), &out), SPOOL_DECODE_OK);
		cr_assert_eq(out.attempts, counts[i]);
	}
}

/* A version-1 OUTCOME as the first released encoder wrote it, built from
 * the documented layout: version byte 1, the word at 60 reserved (0). */
static void
outcome_v1_build(uint8_t rec[SPOOL_OUTCOME_RECORD_SIZE], uint16_t state, uint64_t time_ns)
{
	memset(rec, 0, SPOOL_OUTCOME_RECORD_SIZE);
	put_le(rec + 0, SPOOL_RECORD_MAGIC, 4);
	rec[4] = 1;
	rec[5] = SPOOL_RECORD_OUTCOME;
	put_le(rec + 8, SPOOL_OUTCOME_RECORD_SIZE, 4);
	put_le(rec + 16, 77, 8);
	put_le(rec + 24, test_loc.segment_id, 8);
	put_le(rec + 32, test_loc.offset, 4);
	put_le(rec + 36, test_loc.shard, 2);
	put_le(rec + 40, 0xfedcba9876543210ull, 8);
	put_le(rec + 48, 8u * 1000u, 4);
	put_le(rec + 52, 3, 2);
	put_le(rec + 54, state, 2);
	put_le(rec + 56, 42, 4);
	put_le(rec + 64, time_ns, 8);
	reseal(rec, SPOOL_OUTCOME_RECORD_SIZE);
}

Test(spool_outcome, version_1_still_decodes_without_a_count)
{
	for (uint16_t state = SPOOL_RCPT_DELIVERED; state < SPOOL_RCPT_STATE_COUNT; state++) {
		uint8_t rec[SPOOL_OUTCOME_RECORD_SIZE];
		outcome_v1_build(rec, state, 0x0102030405060708ull);
		struct spool_record_header hdr;
		cr_assert_eq(spool_record_check(rec, sizeof(rec), &test_loc, &hdr), SPOOL_DECODE_OK);
		cr_assert_eq(hdr.version, 1);
		cr_assert_eq(hdr.commit_seq, 77u);
		struct spool_outcome out;
		cr_assert_eq(spool_outcome_decode(rec, sizeof(rec), &out), SPOOL_DECODE_OK);
		cr_assert_eq(out.state, state);
		cr_assert_eq(out.rcpt_index, 42u);
		cr_assert_eq(out.message.segment_id, 0xfedcba9876543210ull);
		cr_assert_eq(out.message.offset, 8000u);
		cr_assert_eq(out.message.shard, 3u);
		cr_assert_eq(out.time_ns, 0x0102030405060708ull);
		cr_assert_eq(out.attempts, SPOOL_ATTEMPTS_UNKNOWN, "version 1 has no count");
	}
	/* Version 1 reserved the word: non-zero there is not a version-1 record. */
	uint8_t rec[SPOOL_OUTCOME_RECORD_SIZE];
	outcome_v1_build(rec, SPOOL_RCPT_DEFERRED, 1);
	put_le(rec + 60, 3, 4);
	reseal(rec, sizeof(rec));
	struct spool_record_header hdr;
	struct spool_outcome out;
	cr_assert_eq(spool_record_check(rec, sizeof(rec), &test_loc, &hdr), SPOOL_DECODE_BAD_BODY);
	cr_assert_eq(spool_outcome_decode(rec, sizeof(rec), &out), SPOOL_DECODE_BAD_BODY);
	/* The same bytes as version 2 are a record with 3 attempts. */
	rec[4] = 2;
	reseal(rec, sizeof(rec));
	cr_assert_eq(spool_record_check(rec, sizeof(rec), &test_loc, &hdr), SPOOL_DECODE_OK);
	cr_assert_eq(spool_outcome_decode(rec, sizeof(rec), &out), SPOOL_DECODE_OK);
	cr_assert_eq(out.attempts, 3u);
}

Test(spool_outcome, unknown_versions_are_rejected)
{
	static const uint8_t bad[] = {0, 3, 4, 0x80, 0xff};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(bad); i++) {
		uint8_t rec[SPOOL_OUTCOME_RECORD_SIZE];
		struct spool_outcome o = outcome_sample(SPOOL_RCPT_DELIVERED);
		cr_assert_eq(spool_outcome_encode(rec, sizeof(rec), &o, 1, &test_loc), sizeof(rec));
		rec[4] = bad[i];
		reseal(rec, sizeof(rec));
		struct spool_record_header hdr;
		struct spool_outcome out;
		cr_assert_eq(spool_record_check(rec, sizeof(rec), &test_loc, &hdr),
			     SPOOL_DECODE_BAD_VERSION, "outcome version %u", bad[i]);
		cr_assert_eq(spool_outcome_decode(rec, sizeof(rec), &out), SPOOL_DECODE_BAD_VERSION,
			     "outcome version %u", bad[i]);
	}
	/* Versions are per type: MESSAGE and PAD have no version 2. */
	uint8_t pad[64];
	cr_assert_eq(spool_pad_encode(pad, sizeof(pad), sizeof(pad), 1, &test_loc), sizeof(pad));
	cr_assert_eq(pad[4], SPOOL_RECORD_VERSION);
	pad[4] = 2;
	reseal(pad, sizeof(pad));
	struct spool_record_header hdr;
	cr_assert_eq(spool_record_check(pad, sizeof(pad), &test_loc, &hdr),
		     SPOOL_DECODE_BAD_VERSION);
}

Test(spool_outcome, encode_rejects_out_of_range_fields)
{
	uint8_t buf[SPOOL_OUTCOME_RECORD_SIZE];
	struct spool_outcome o = outcome_sample(SPOOL_RCPT_PENDING);
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "pending");
	o = outcome_sample(SPOOL_RCPT_STATE_COUNT);
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "state 5");
	o = outcome_sample(SPOOL_RCPT_DELIVERED);
	o.rcpt_index = SPOOL_RECIPIENTS_MAX;
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "index");
	o = outcome_sample(SPOOL_RCPT_DELIVERED);
	o.message.offset = 12;
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "offset");
	o = outcome_sample(SPOOL_RCPT_DELIVERED);
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf) - 1, &o, 1, &test_loc), 0u, "room");
	o = outcome_sample(SPOOL_RCPT_DEFERRED);
	o.attempts = SPOOL_ATTEMPTS_MAX + 1u;
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "attempts");
	o.attempts = SPOOL_ATTEMPTS_UNKNOWN;
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), 0u, "unknown");
}

Test(spool_pad, round_trip)
{
	static const uint32_t sizes[] = {40, 48, 4096, 4096 + 32};
	uint8_t buf[4096 + 32];
	for (size_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++) {
		memset(buf, 0xa5, sizeof(buf));
		cr_assert_eq(spool_pad_encode(buf, sizes[i], sizes[i], 5, &test_loc), sizes[i]);
		struct spool_record_header hdr;
		cr_assert_eq(spool_record_check(buf, sizes[i], &test_loc, &hdr), SPOOL_DECODE_OK);
		cr_assert_eq(hdr.type, SPOOL_RECORD_PAD);
		cr_assert_eq(hdr.size, sizes[i]);
		cr_assert_eq(hdr.commit_seq, 5u);
		/* A pad is neither a message nor an outcome. */
		struct spool_message msg;
		struct spool_outcome out;
		cr_assert_eq(spool_message_decode(buf, sizes[i], &msg, NULL, 0),
			     SPOOL_DECODE_BAD_BODY);
		cr_assert_eq(spool_outcome_decode(buf, sizes[i], &out), SPOOL_DECODE_BAD_BODY);
	}
}

Test(spool_pad, encode_rejects_bad_sizes)
{
	uint8_t buf[256];
	static const uint32_t bad[] = {0, 8, 39, 44, 41, 47};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(bad); i++) {
		cr_assert_eq(spool_pad_encode(buf, sizeof(buf), bad[i], 1, &test_loc), 0u, "%u",
			     bad[i]);
	}
	cr_assert_eq(spool_pad_encode(buf, 63, 64, 1, &test_loc), 0u, "room");
	cr_assert_eq(spool_pad_encode(buf, UINT32_MAX, SPOOL_RECORD_SIZE_MAX + 8, 1, &test_loc),
		     0u, "size max");
}

/* ------------------------------------------------------------------ */
/* Golden layout: the documented byte offsets, read back by hand.      */
/* ------------------------------------------------------------------ */

static void
expect_header_layout(const uint8_t *rec, uint8_t type, uint32_t size, uint64_t seq)
{
	cr_assert(memcmp(rec, "RMSP", 4) == 0, "magic bytes");
	cr_assert_eq(get_le(rec + 0, 4), SPOOL_RECORD_MAGIC);
	/* OUTCOME is at version 2, MESSAGE and PAD at 1. */
	cr_assert_eq(rec[4], type == SPOOL_RECORD_OUTCOME ? 2 : 1);
	cr_assert_eq(rec[5], type);
	cr_assert_eq(get_le(rec + 6, 2), 0u, "flags");
	cr_assert_eq(get_le(rec + 8, 4), size);
	cr_assert_eq(get_le(rec + 12, 4), crc_of_record(rec, size), "crc");
	cr_assert_eq(get_le(rec + 16, 8), seq);
	cr_assert_eq(get_le(rec + 24, 8), test_loc.segment_id);
	cr_assert_eq(get_le(rec + 32, 4), test_loc.offset);
	cr_assert_eq(get_le(rec + 36, 2), test_loc.shard);
	cr_assert_eq(get_le(rec + 38, 2), 0u, "reserved");
}

Test(spool_layout, outcome_bytes)
{
	struct spool_outcome o = outcome_sample(SPOOL_RCPT_DEFERRED);
	uint8_t rec[SPOOL_OUTCOME_RECORD_SIZE];
	cr_assert_eq(spool_outcome_encode(rec, sizeof(rec), &o, 0x0102030405060708ull, &test_loc),
		     sizeof(rec));
	expect_header_layout(rec, SPOOL_RECORD_OUTCOME, sizeof(rec), 0x0102030405060708ull);
	cr_assert_eq(get_le(rec + 40, 8), o.message.segment_id);
	cr_assert_eq(get_le(rec + 48, 4), o.message.offset);
	cr_assert_eq(get_le(rec + 52, 2), o.message.shard);
	cr_assert_eq(get_le(rec + 54, 2), SPOOL_RCPT_DEFERRED);
	cr_assert_eq(get_le(rec + 56, 4), o.rcpt_index);
	cr_assert_eq(get_le(rec + 60, 4), o.attempts, "attempts");
	cr_assert_eq(get_le(rec + 64, 8), o.time_ns);
}

Test(spool_layout, message_bytes)
{
	const uint8_t sender[] = "a@b";
	const struct spool_span rcpts[2] = {{.data = (const uint8_t *)"x@y", .size = 3},
					    {.data = (const uint8_t *)"zz@q", .size = 4}};
	const uint8_t body[] = "Hi\r\n.\r\n";
	struct spool_message msg = {
		.created_ns = 0x1111111111111111ull,
		.expires_ns = 0x2222222222222222ull,
		.sender = {.data = sender, .size = 3},
		.rcpt_count = 2,
		.rcpts = rcpts,
		.body = {.data = body, .size = 7},
	};
	uint8_t rec[128];
	memset(rec, 0xee, sizeof(rec));
	/* 40 + 24 + 3 + (2 + 3) + (2 + 4) + 7 = 85, padded to 88. */
	cr_assert_eq(spool_message_encode(rec, sizeof(rec), &msg, 9, &test_loc), 88u);
	expect_header_layout(rec, SPOOL_RECORD_MESSAGE, 88, 9);
	cr_assert_eq(get_le(rec + 40, 8), msg.created_ns);
	cr_assert_eq(get_le(rec + 48, 8), msg.expires_ns);
	cr_assert_eq(get_le(rec + 56, 4), 7u);
	cr_assert_eq(get_le(rec + 60, 2), 3u);
	cr_assert_eq(get_le(rec + 62, 2), 2u);
	cr_assert(memcmp(rec + 64, "a@b\x03\x00x@y\x04\x00zz@qHi\r\n.\r\n\0\0\0", 24) == 0);
	cr_assert_eq(rec[88], 0xee, "wrote past the record");
}

Test(spool_layout, pad_bytes)
{
	uint8_t rec[64 + 8];
	memset(rec, 0xee, sizeof(rec));
	cr_assert_eq(spool_pad_encode(rec, sizeof(rec), 64, 77, &test_loc), 64u);
	expect_header_layout(rec, SPOOL_RECORD_PAD, 64, 77);
	for (int i = 40; i < 64; i++) cr_assert_eq(rec[i], 0);
	cr_assert_eq(rec[64], 0xee);
}

/* ------------------------------------------------------------------ */
/* ZERO and SHORT.                                                     */
/* ------------------------------------------------------------------ */

Test(spool_check, zero_header_is_zero)
{
	uint8_t buf[4096] = {0};
	struct spool_record_header hdr;
	static const size_t lens[] = {0, 1, 4, 39, 40, 41, 4096};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(lens); i++) {
		cr_assert_eq(spool_record_check(buf, lens[i], NULL, &hdr), SPOOL_DECODE_ZERO,
			     "len %zu", lens[i]);
	}
	cr_assert_eq(spool_record_check(NULL, 0, NULL, &hdr), SPOOL_DECODE_ZERO);
	/* Only the header decides: bytes after it are the next record's. */
	buf[40] = 1;
	cr_assert_eq(spool_record_check(buf, sizeof(buf), NULL, &hdr), SPOOL_DECODE_ZERO);
	buf[39] = 1;
	cr_assert_neq(spool_record_check(buf, sizeof(buf), NULL, &hdr), SPOOL_DECODE_ZERO);
}

Test(spool_check, partial_header)
{
	uint8_t buf[SPOOL_OUTCOME_RECORD_SIZE];
	struct spool_outcome o = outcome_sample(SPOOL_RCPT_BOUNCED);
	cr_assert_eq(spool_outcome_encode(buf, sizeof(buf), &o, 1, &test_loc), sizeof(buf));
	struct spool_record_header hdr;
	for (size_t len = 1; len < 4; len++) {
		cr_assert_eq(spool_record_check(buf, len, NULL, &hdr), SPOOL_DECODE_SHORT);
	}
	for (size_t len = 4; len < SPOOL_OUTCOME_RECORD_SIZE; len++) {
		cr_assert_eq(spool_record_check(buf, len, NULL, &hdr), SPOOL_DECODE_SHORT);
	}
	buf[1] ^= 1;
	cr_assert_eq(spool_record_check(buf, 10, NULL, &hdr), SPOOL_DECODE_BAD_MAGIC);
	cr_assert_eq(spool_record_check(buf, 3, NULL, &hdr), SPOOL_DECODE_SHORT);
}

/* ------------------------------------------------------------------ */
/* Every truncation and every bit flip is rejected.                    */
/* ------------------------------------------------------------------ */

struct sample {
	uint8_t *rec;
	uint32_t size;
	const char *name;
};

static struct sample
sample_message(uint32_t body_size, uint32_t rcpt_count)
{
	struct fixture f;
	fixture_init(&f, 21, rcpt_count, 23, body_size);
	struct sample s = {.size = spool_message_record_size(&f.msg), .name = "message"};
	s.rec = xmalloc(s.size);
	cr_assert_eq(spool_message_encode(s.rec, s.size, &f.msg, 1234, &test_loc), s.size);
	fixture_deinit(&f);
	return s;
}

static struct sample
sample_outcome(void)
{
	struct sample s = {.size = SPOOL_OUTCOME_RECORD_SIZE, .name = "outcome"};
	s.rec = xmalloc(s.size);
	struct spool_outcome o = outcome_sample(SPOOL_RCPT_EXPIRED);
	cr_assert_eq(spool_outcome_encode(s.rec, s.size, &o, 1234, &test_loc), s.size);
	return s;
}

static struct sample
sample_outcome_v1(void)
{
	struct sample s = {.size = SPOOL_OUTCOME_RECORD_SIZE, .name = "outcome v1"};
	s.rec = xmalloc(s.size);
	outcome_v1_build(s.rec, SPOOL_RCPT_DEFERRED, 0x1122334455667788ull);
	return s;
}

static struct sample
sample_pad(uint32_t size)
{
	struct sample s = {.size = size, .name = "pad"};
	s.rec = xmalloc(s.size);
	cr_assert_eq(spool_pad_encode(s.rec, s.size, s.size, 1234, &test_loc), s.size);
	return s;
}

static void
expect_every_truncation_rejected(struct sample s)
{
	struct spool_record_header hdr;
	struct spool_message msg;
	struct spool_outcome out;
	unsigned accepted = 0;
	cr_assert_eq(spool_record_check(s.rec, s.size, &test_loc, &hdr), SPOOL_DECODE_OK);
	for (size_t len = 0; len < s.size; len++) {
		/* A copy of exactly len bytes, so ASan sees any read past it. */
		uint8_t *cut = xmalloc(len);
		memcpy(cut, s.rec, len);
		if (spool_record_check(cut, len, &test_loc, &hdr) == SPOOL_DECODE_OK) accepted++;
		if (spool_message_decode(cut, len, &msg, NULL, 0) == SPOOL_DECODE_OK) accepted++;
		if (spool_outcome_decode(cut, len, &out) == SPOOL_DECODE_OK) accepted++;
		free(cut);
	}
	cr_assert_eq(accepted, 0u, "%s of %u bytes: a truncation was accepted", s.name, s.size);
	free(s.rec);
}

Test(spool_check, every_truncation_is_rejected)
{
	expect_every_truncation_rejected(sample_message(2000, 3));
	expect_every_truncation_rejected(sample_message(5, 1));
	expect_every_truncation_rejected(sample_outcome());
	expect_every_truncation_rejected(sample_outcome_v1());
	expect_every_truncation_rejected(sample_pad(40));
	expect_every_truncation_rejected(sample_pad(4096));
}

static void
expect_every_bit_flip_rejected(struct sample s)
{
	struct spool_record_header hdr;
	struct spool_message msg;
	struct spool_span *rcpts = xmalloc(SPOOL_RECIPIENTS_MAX * sizeof(*rcpts));
	struct spool_outcome out;
	unsigned accepted = 0;
	for (uint32_t bit = 0; bit < s.size * 8u; bit++) {
		s.rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		/* Without the expected place too: the CRC alone must catch it. */
		if (spool_record_check(s.rec, s.size, NULL, &hdr) == SPOOL_DECODE_OK ||
		    spool_record_check(s.rec, s.size, &test_loc, &hdr) == SPOOL_DECODE_OK) {
			accepted++;
			cr_log_error("%s: flip of bit %u accepted", s.name, bit);
		}
		/* The decoders skip the CRC but must stay in bounds on any bytes. */
		(void)spool_message_decode(s.rec, s.size, &msg, rcpts, SPOOL_RECIPIENTS_MAX);
		(void)spool_outcome_decode(s.rec, s.size, &out);
		s.rec[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	cr_assert_eq(accepted, 0u, "%s of %u bytes: a bit flip was accepted", s.name, s.size);
	cr_assert_eq(spool_record_check(s.rec, s.size, &test_loc, &hdr), SPOOL_DECODE_OK);
	free(rcpts);
	free(s.rec);
}

Test(spool_check, every_bit_flip_is_rejected)
{
	expect_every_bit_flip_rejected(sample_message(1900, 4));
	expect_every_bit_flip_rejected(sample_message(5, 1));
	expect_every_bit_flip_rejected(sample_outcome());
	expect_every_bit_flip_rejected(sample_outcome_v1());
	expect_every_bit_flip_rejected(sample_pad(40));
	expect_every_bit_flip_rejected(sample_pad(512));
}

Test(spool_check, place_mismatch_is_detected)
{
	struct sample s = sample_message(300, 2);
	struct spool_record_header hdr;
	struct spool_location other = test_loc;
	cr_assert_eq(spool_record_check(s.rec, s.size, NULL, &hdr), SPOOL_DECODE_OK);
	cr_assert_eq(spool_record_check(s.rec, s.size, &other, &hdr), SPOOL_DECODE_OK);
	other.segment_id++;
	cr_assert_eq(spool_record_check(s.rec, s.size, &other, &hdr), SPOOL_DECODE_BAD_PLACE);
	other = test_loc;
	other.offset += SPOOL_RECORD_ALIGN;
	cr_assert_eq(spool_record_check(s.rec, s.size, &other, &hdr), SPOOL_DECODE_BAD_PLACE);
	other = test_loc;
	other.shard ^= 1;
	cr_assert_eq(spool_record_check(s.rec, s.size, &other, &hdr), SPOOL_DECODE_BAD_PLACE);
	/* A stale record of a recycled file: valid CRC, written elsewhere. */
	put_le(s.rec + 24, test_loc.segment_id - 1, 8);
	reseal(s.rec, s.size);
	cr_assert_eq(spool_record_check(s.rec, s.size, NULL, &hdr), SPOOL_DECODE_OK);
	cr_assert_eq(spool_record_check(s.rec, s.size, &test_loc, &hdr), SPOOL_DECODE_BAD_PLACE);
	free(s.rec);
}

/* ------------------------------------------------------------------ */
/* Structural checks behind a valid CRC.                               */
/* ------------------------------------------------------------------ */

struct patch {
	const char *name;
	uint32_t offset; /* from the record start */
	unsigned width;
	uint64_t value;
	enum spool_decode_result want;
};

static void
expect_patch(struct sample s, const struct patch *p, uint32_t extra)
{
	/* extra zero bytes after the record, for patches that grow its size. */
	uint8_t *rec = calloc(1, s.size + extra);
	cr_assert_not_null(rec);
	memcpy(rec, s.rec, s.size);
	put_le(rec + p->offset, p->value, p->width);
	uint32_t size = (uint32_t)get_le(rec + 8, 4);
	if (size >= 16 && size <= s.size + extra) reseal(rec, size);
	struct spool_record_header hdr;
	enum spool_decode_result got = spool_record_check(rec, s.size + extra, &test_loc, &hdr);
	cr_assert_eq(got, p->want, "%s %s: got %s, want %s", s.name, p->name,
		     spool_decode_result_name(got), spool_decode_result_name(p->want));
	free(rec);
}

Test(spool_check, header_fields_are_validated)
{
	struct sample s = sample_message(2000, 2);
	const struct patch patches[] = {
		{"magic", 0, 4, 0x50534d53u, SPOOL_DECODE_BAD_MAGIC},
		{"version 0", 4, 1, 0, SPOOL_DECODE_BAD_VERSION},
		{"version 2", 4, 1, 2, SPOOL_DECODE_BAD_VERSION},
		{"version 3", 4, 1, 3, SPOOL_DECODE_BAD_VERSION},
		{"type 0", 5, 1, 0, SPOOL_DECODE_BAD_VERSION},
		{"type 4", 5, 1, 4, SPOOL_DECODE_BAD_VERSION},
		{"flags", 6, 2, 0x8000, SPOOL_DECODE_BAD_VERSION},
		{"reserved", 38, 2, 1, SPOOL_DECODE_BAD_VERSION},
		{"size 0", 8, 4, 0, SPOOL_DECODE_BAD_SIZE},
		{"size below header", 8, 4, 32, SPOOL_DECODE_BAD_SIZE},
		{"size below minimal message", 8, 4, 64, SPOOL_DECODE_BAD_SIZE},
		{"size unaligned", 8, 4, s.size - 4, SPOOL_DECODE_BAD_SIZE},
		{"size over max", 8, 4, SPOOL_RECORD_SIZE_MAX + 8, SPOOL_DECODE_BAD_SIZE},
		{"size past the bytes", 8, 4, s.size + 8, SPOOL_DECODE_SHORT},
		{"size shrunk", 8, 4, s.size - 8, SPOOL_DECODE_BAD_BODY},
		{"crc", 12, 4, 0, SPOOL_DECODE_BAD_CRC},
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(patches); i++) {
		if (patches[i].offset == 12) {
			/* Write the CRC after resealing: no reseal for this one. */
			uint8_t *rec = xmalloc(s.size);
			memcpy(rec, s.rec, s.size);
			put_le(rec + 12, get_le(rec + 12, 4) ^ 1u, 4);
			struct spool_record_header hdr;
			cr_assert_eq(spool_record_check(rec, s.size, NULL, &hdr),
				     SPOOL_DECODE_BAD_CRC);
			free(rec);
			continue;
		}
		expect_patch(s, &patches[i], 0);
	}
	free(s.rec);
}

Test(spool_check, message_fields_are_validated)
{
	/* Sender 21, 2 recipients of 23, body 2000: 40+24+21+50+2000 = 2135 -> 2136. */
	struct sample s = sample_message(2000, 2);
	cr_assert_eq(s.size, 2136u);
	const uint32_t rcpt0 = 64 + 21, body = rcpt0 + 2 * 25, end = body + 2000;
	const struct patch patches[] = {
		{"no recipient", 62, 2, 0, SPOOL_DECODE_BAD_BODY},
		{"recipients over max", 62, 2, SPOOL_RECIPIENTS_MAX + 1, SPOOL_DECODE_BAD_BODY},
		{"one recipient too many", 62, 2, 3, SPOOL_DECODE_BAD_BODY},
		{"one recipient too few", 62, 2, 1, SPOOL_DECODE_BAD_BODY},
		{"sender over max", 60, 2, SPOOL_ADDRESS_SIZE_MAX + 1, SPOOL_DECODE_BAD_BODY},
		{"sender past the record", 60, 2, 0xffff, SPOOL_DECODE_BAD_BODY},
		{"empty recipient", rcpt0, 2, 0, SPOOL_DECODE_BAD_BODY},
		{"recipient over max", rcpt0, 2, SPOOL_ADDRESS_SIZE_MAX + 1, SPOOL_DECODE_BAD_BODY},
		{"second recipient long", rcpt0 + 25, 2, 24, SPOOL_DECODE_BAD_BODY},
		{"body under min", 56, 4, 4, SPOOL_DECODE_BAD_BODY},
		{"body over max", 56, 4, SPOOL_BODY_SIZE_MAX + 1, SPOOL_DECODE_BAD_BODY},
		{"body past the record", 56, 4, 2008, SPOOL_DECODE_BAD_BODY},
		{"body short by 8", 56, 4, 1992, SPOOL_DECODE_BAD_BODY},
		{"body end LF", end - 5, 1, '\n', SPOOL_DECODE_BAD_BODY},
		{"body end dot", end - 3, 1, ',', SPOOL_DECODE_BAD_BODY},
		{"body end CR", end - 2, 1, 'x', SPOOL_DECODE_BAD_BODY},
		{"body end LF2", end - 1, 1, '\r', SPOOL_DECODE_BAD_BODY},
		{"padding byte", end, 1, 1, SPOOL_DECODE_BAD_BODY},
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(patches); i++) expect_patch(s, &patches[i], 0);
	/* Body content is not validated beyond its end: the SMTP layer owns it. */
	const struct patch inside = {"body byte", body + 10, 1, 0, SPOOL_DECODE_OK};
	expect_patch(s, &inside, 0);
	const struct patch created = {"times", 40, 8, UINT64_MAX, SPOOL_DECODE_OK};
	expect_patch(s, &created, 0);
	/* Eight more zero bytes: the padding would be >= SPOOL_RECORD_ALIGN. */
	const struct patch grown = {"padding of 8", 8, 4, s.size + 8, SPOOL_DECODE_BAD_BODY};
	expect_patch(s, &grown, 8);
	free(s.rec);
}

Test(spool_check, outcome_and_pad_fields_are_validated)
{
	struct sample o = sample_outcome();
	const struct patch outcome_patches[] = {
		{"state pending", 54, 2, SPOOL_RCPT_PENDING, SPOOL_DECODE_BAD_BODY},
		{"state 5", 54, 2, 5, SPOOL_DECODE_BAD_BODY},
		{"state delivered", 54, 2, SPOOL_RCPT_DELIVERED, SPOOL_DECODE_OK},
		{"recipient index", 56, 4, SPOOL_RECIPIENTS_MAX, SPOOL_DECODE_BAD_BODY},
		{"attempts 0", 60, 4, 0, SPOOL_DECODE_OK},
		{"attempts max", 60, 4, SPOOL_ATTEMPTS_MAX, SPOOL_DECODE_OK},
		{"attempts over max", 60, 4, SPOOL_ATTEMPTS_MAX + 1, SPOOL_DECODE_BAD_BODY},
		{"attempts unknown", 60, 4, SPOOL_ATTEMPTS_UNKNOWN, SPOOL_DECODE_BAD_BODY},
		{"version 1", 4, 1, 1, SPOOL_DECODE_BAD_BODY}, /* its reserved word is 7 */
		{"version 3", 4, 1, 3, SPOOL_DECODE_BAD_VERSION},
		{"message offset unaligned", 48, 4, 8u * 1000u + 1u, SPOOL_DECODE_BAD_BODY},
		{"size 80", 8, 4, 80, SPOOL_DECODE_BAD_SIZE},
		{"size 64", 8, 4, 64, SPOOL_DECODE_BAD_SIZE},
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(outcome_patches); i++) {
		expect_patch(o, &outcome_patches[i], 8);
	}
	free(o.rec);

	struct sample p = sample_pad(4096);
	for (uint32_t off = 40; off < 4096; off += 401) {
		const struct patch nonzero = {"pad body", off, 1, 0x10, SPOOL_DECODE_BAD_BODY};
		expect_patch(p, &nonzero, 0);
	}
	const struct patch last = {"pad last byte", 4095, 1, 1, SPOOL_DECODE_BAD_BODY};
	expect_patch(p, &last, 0);
	free(p.rec);
}

Test(spool_check, decoders_reject_other_types)
{
	struct sample m = sample_message(100, 1);
	struct sample o = sample_outcome();
	struct spool_message msg;
	struct spool_outcome out;
	cr_assert_eq(spool_outcome_decode(m.rec, m.size, &out), SPOOL_DECODE_BAD_BODY);
	cr_assert_eq(spool_message_decode(o.rec, o.size, &msg, NULL, 0), SPOOL_DECODE_BAD_BODY);
	free(m.rec);
	free(o.rec);
}

/* Random bytes and resealed random mutations: nothing crashes or reads out
 * of bounds (ASan), and whatever check accepts, the decoders accept. */
Test(spool_check, random_mutations_are_safe)
{
	uint64_t state = 0xC0FFEE;
	struct spool_span *rcpts = xmalloc(SPOOL_RECIPIENTS_MAX * sizeof(*rcpts));
	struct sample samples[3] = {sample_message(700, 3), sample_outcome(), sample_pad(128)};
	unsigned accepted = 0;
	for (int iter = 0; iter < 30000; iter++) {
		struct sample s = samples[iter % 3];
		uint8_t *rec = xmalloc(s.size);
		memcpy(rec, s.rec, s.size);
		if (iter % 10 == 0) {
			rng_fill(&state, rec, s.size);
		} else {
			for (uint64_t n = 1 + rng_next(&state) % 4; n > 0; n--) {
				rec[rng_next(&state) % s.size] = (uint8_t)rng_next(&state);
			}
		}
		if (rng_next(&state) % 2 == 0) reseal(rec, s.size);
		struct spool_record_header hdr;
		struct spool_message msg;
		struct spool_outcome out;
		if (spool_record_check(rec, s.size, NULL, &hdr) == SPOOL_DECODE_OK) {
			accepted++;
			if (hdr.type == SPOOL_RECORD_MESSAGE &&
			    spool_message_decode(rec, s.size, &msg, rcpts, SPOOL_RECIPIENTS_MAX) !=
				    SPOOL_DECODE_OK) {
				cr_assert_fail("iteration %d: check OK, message decode not", iter);
			}
			if (hdr.type == SPOOL_RECORD_OUTCOME &&
			    spool_outcome_decode(rec, s.size, &out) != SPOOL_DECODE_OK) {
				cr_assert_fail("iteration %d: check OK, outcome decode not", iter);
			}
		}
		(void)spool_message_decode(rec, s.size, &msg, rcpts, SPOOL_RECIPIENTS_MAX);
		(void)spool_outcome_decode(rec, s.size, &out);
		free(rec);
	}
	cr_log_info("random mutations accepted: %u of 30000", accepted);
	for (int i = 0; i < 3; i++) free(samples[i].rec);
	free(rcpts);
}

/* ------------------------------------------------------------------ */
/* Queue ids.                                                          */
/* ------------------------------------------------------------------ */

Test(spool_queue_id, format_known_value)
{
	char id[SPOOL_QUEUE_ID_SIZE];
	struct spool_location loc = {.segment_id = 0x0123456789abcdefull, .offset = 0xdeadbeef,
				     .shard = 0x2a};
	spool_queue_id_format(&loc, id);
	cr_assert_str_eq(id, "2a0123456789abcdefdeadbeef");
	loc = (struct spool_location){0};
	spool_queue_id_format(&loc, id);
	cr_assert_str_eq(id, "00000000000000000000000000");
	loc = (struct spool_location){.segment_id = UINT64_MAX, .offset = UINT32_MAX, .shard = 255};
	spool_queue_id_format(&loc, id);
	cr_assert_str_eq(id, "ffffffffffffffffffffffffff");
}

Test(spool_queue_id, round_trip)
{
	uint64_t state = 77;
	for (int i = 0; i < 1000; i++) {
		struct spool_location in = {.segment_id = rng_next(&state),
					    .offset = (uint32_t)rng_next(&state),
					    .shard = (uint16_t)(rng_next(&state) & 0xff)};
		char id[SPOOL_QUEUE_ID_SIZE];
		spool_queue_id_format(&in, id);
		cr_assert_eq(strlen(id), 26u);
		/* Parse from an exactly sized buffer with no NUL (ASan checks). */
		char *exact = xmalloc(26);
		memcpy(exact, id, 26);
		struct spool_location out = {0};
		cr_assert(spool_queue_id_parse(exact, 26, &out), "%s", id);
		cr_assert_eq(out.segment_id, in.segment_id);
		cr_assert_eq(out.offset, in.offset);
		cr_assert_eq(out.shard, in.shard);
		free(exact);
	}
}

Test(spool_queue_id, parse_accepts_upper_case)
{
	struct spool_location loc;
	cr_assert(spool_queue_id_parse("2A0123456789ABCDEFDEADBEEF", 26, &loc));
	cr_assert_eq(loc.shard, 0x2a);
	cr_assert_eq(loc.segment_id, 0x0123456789abcdefull);
	cr_assert_eq(loc.offset, 0xdeadbeefu);
	cr_assert(spool_queue_id_parse("2a0123456789AbCdEfdeadBEEF", 26, &loc));
	cr_assert_eq(loc.segment_id, 0x0123456789abcdefull);
}

Test(spool_queue_id, parse_rejects_bad_lengths)
{
	const char *id = "2a0123456789abcdefdeadbeef0"; /* 27 characters */
	struct spool_location loc = {.segment_id = 5, .offset = 8, .shard = 1};
	for (size_t len = 0; len <= 27; len++) {
		if (len == 26) continue;
		cr_assert_not(spool_queue_id_parse(id, len, &loc), "len %zu", len);
	}
	cr_assert_not(spool_queue_id_parse(NULL, 0, &loc));
	/* Untouched on failure. */
	cr_assert_eq(loc.segment_id, 5u);
	cr_assert_eq(loc.offset, 8u);
	cr_assert_eq(loc.shard, 1);
}

Test(spool_queue_id, parse_rejects_bad_characters)
{
	static const char bad[] = {'g', 'G', 'x', ' ', '\0', '-', '+', '/', ':', '@', '`',
				   '[', '{', '\n', '\xff', '\x80'};
	const char *good = "2a0123456789abcdefdeadbeef";
	struct spool_location loc;
	cr_assert(spool_queue_id_parse(good, 26, &loc));
	for (size_t pos = 0; pos < 26; pos++) {
		for (size_t i = 0; i < sizeof(bad); i++) {
			char id[26];
			memcpy(id, good, 26);
			id[pos] = bad[i];
			if (spool_queue_id_parse(id, 26, &loc)) {
				unsigned c = (uint8_t)bad[i];
				cr_assert_fail("accepted 0x%02x at %zu", c, pos);
			}
		}
	}
}

Test(spool_queue_id, format_of_wide_shard_aborts, .signal = SIGABRT)
{
	char id[SPOOL_QUEUE_ID_SIZE];
	struct spool_location loc = {.segment_id = 1, .offset = 8, .shard = 256};
	spool_queue_id_format(&loc, id);
}

/* ------------------------------------------------------------------ */
/* Names.                                                              */
/* ------------------------------------------------------------------ */

Test(spool_names, every_value_has_a_distinct_name)
{
	for (int a = 0; a < SPOOL_RCPT_STATE_COUNT; a++) {
		const char *na = spool_rcpt_state_name((enum spool_rcpt_state)a);
		cr_assert(na != NULL && na[0] != '\0');
		for (int b = 0; b < a; b++) {
			cr_assert_str_neq(na, spool_rcpt_state_name((enum spool_rcpt_state)b));
		}
	}
	cr_assert_str_eq(spool_rcpt_state_name(SPOOL_RCPT_DEFERRED), "deferred");
	for (int a = SPOOL_DECODE_OK; a <= SPOOL_DECODE_BAD_BODY; a++) {
		const char *na = spool_decode_result_name((enum spool_decode_result)a);
		cr_assert(na != NULL && na[0] != '\0');
		for (int b = 0; b < a; b++) {
			cr_assert_str_neq(na,
					  spool_decode_result_name((enum spool_decode_result)b));
		}
	}
	cr_assert_str_eq(spool_decode_result_name(SPOOL_DECODE_BAD_CRC), "bad crc");
}

Test(spool_names, out_of_range_state_aborts, .signal = SIGABRT)
{
	(void)spool_rcpt_state_name(SPOOL_RCPT_STATE_COUNT);
}
