/*
 * fuzz_record.c - libFuzzer harness for the spool record decoder and check
 * (spool/spool_record.h; reliability.md 3.1 fuzz_spool_recovery, FZ-05,
 * SPL-08).
 *
 * Input: one mode byte, then:
 * - mode 0, raw: the bytes as they lie on disk;
 * - mode 1, sealed: the same, but the CRC field is recomputed over the
 *   record size the bytes claim, so the fuzzer gets past the CRC into the
 *   header and body validation;
 * - mode 2, built: fields of a MESSAGE (and an OUTCOME) record read from
 *   the input, encoded, then decoded, tampered with and truncated.
 * Invariants, beyond memory safety under ASan/UBSan (every buffer is a
 * malloc of exactly the bytes given, so an over-read is caught):
 * - a record that checks OK lies within len, is aligned, and its decoded
 *   spans lie inside it and add up to its size; decoding then succeeds, and
 *   encoding the decoded fields at the same place gives back the very
 *   same bytes (the encoding is canonical; a version-1 OUTCOME, which
 *   decodes with attempts unknown, re-encodes as version 2 with 0
 *   attempts, and differs in the version byte and the CRC only);
 * - checking against the record's own place gives the same result as no
 *   place; against another place, BAD_PLACE;
 * - encode accepts exactly the inputs within the documented bounds;
 *   decode(encode(x)) == x; any one changed byte fails the check (CRC32C
 *   catches every burst up to 32 bits); every truncation is SHORT;
 * - queue ids: parse(format(loc)) == loc.
 */
#include <string.h>

#include "fuzz_common.h"
#include "spool/spool_crc32c.h"
#include "spool/spool_record.h"

#define BUILT_RCPTS_MAX (SPOOL_RECIPIENTS_MAX + 1u)
#define BODY_END "\r\n.\r\n"

static struct spool_span rcpts_decoded[SPOOL_RECIPIENTS_MAX];
static struct spool_span rcpts_built[BUILT_RCPTS_MAX];
static uint8_t rcpt_bytes[SPOOL_ADDRESS_SIZE_MAX + 100u];

static void
put_le32(uint8_t *p, uint32_t v);

/* Turn a freshly encoded OUTCOME (version 2, 0 attempts) into the version-1
 * record of the same fields: version byte 1, CRC recomputed. */
static void
outcome_as_version_1(uint8_t *rec, uint32_t size)
{
	FUZZ_CHECK(size == SPOOL_OUTCOME_RECORD_SIZE, "an OUTCOME is 72 bytes");
	rec[4] = 1;
	put_le32(rec + 12, 0);
	put_le32(rec + 12, spool_crc32c(0, rec, size));
}

static uint32_t
le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
put_le32(uint8_t *p, uint32_t v)
{
	for (uint32_t i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8u * i));
}

static uint64_t
le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void
check_span_inside(struct spool_span span, const uint8_t *buf, uint32_t size)
{
	FUZZ_CHECK(span.size == 0 || (span.data >= buf && span.data + span.size <= buf + size),
		   "decoded span inside the record");
}

static void
check_queue_id(const struct spool_location *loc)
{
	char id[SPOOL_QUEUE_ID_SIZE];
	struct spool_location back;

	if (loc->shard > SPOOL_SHARD_MAX)
		return;
	spool_queue_id_format(loc, id);
	FUZZ_CHECK(strlen(id) == SPOOL_QUEUE_ID_SIZE - 1, "queue id length");
	FUZZ_CHECK(spool_queue_id_parse(id, strlen(id), &back), "formatted id parses");
	FUZZ_CHECK(back.shard == loc->shard && back.segment_id == loc->segment_id &&
			   back.offset == loc->offset,
		   "parse(format(loc)) == loc");
}

/* A record that checked OK: decode it and encode it again, byte for byte. */
static void
check_valid_record(const uint8_t *buf, size_t len, const struct spool_record_header *hdr)
{
	uint8_t *again = malloc(hdr->size);
	uint32_t size = 0;

	FUZZ_CHECK(again != NULL, "malloc");
	FUZZ_CHECK(hdr->size <= len && hdr->size >= SPOOL_RECORD_HEADER_SIZE &&
			   hdr->size % SPOOL_RECORD_ALIGN == 0,
		   "checked record within len and aligned");
	check_queue_id(&hdr->location);
	/* The encoders assert an aligned offset (an engine precondition); the
	 * check does not look at it, so such a record cannot be re-encoded. */
	if (hdr->location.offset % SPOOL_RECORD_ALIGN != 0) {
		free(again);
		return;
	}
	if (hdr->type == SPOOL_RECORD_MESSAGE) {
		struct spool_message msg;
		uint64_t total = SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE;

		FUZZ_CHECK(spool_message_decode(buf, len, &msg, rcpts_decoded,
						SPOOL_RECIPIENTS_MAX) == SPOOL_DECODE_OK,
			   "a checked MESSAGE decodes");
		check_span_inside(msg.sender, buf, hdr->size);
		check_span_inside(msg.body, buf, hdr->size);
		total += msg.sender.size + msg.body.size;
		FUZZ_CHECK(msg.rcpt_count >= 1 && msg.rcpt_count <= SPOOL_RECIPIENTS_MAX,
			   "recipient count in bounds");
		for (uint32_t i = 0; i < msg.rcpt_count; i++) {
			check_span_inside(msg.rcpts[i], buf, hdr->size);
			total += 2u + msg.rcpts[i].size;
		}
		FUZZ_CHECK((total + SPOOL_RECORD_ALIGN - 1) / SPOOL_RECORD_ALIGN *
					   SPOOL_RECORD_ALIGN ==
				   hdr->size,
			   "field sizes add up to the record size");
		FUZZ_CHECK(spool_message_record_size(&msg) == hdr->size, "record size repeatable");
		size = spool_message_encode(again, hdr->size, &msg, hdr->commit_seq, &hdr->location);
	} else if (hdr->type == SPOOL_RECORD_OUTCOME) {
		struct spool_outcome out;

		FUZZ_CHECK(spool_outcome_decode(buf, len, &out) == SPOOL_DECODE_OK,
			   "a checked OUTCOME decodes");
		FUZZ_CHECK(out.state >= SPOOL_RCPT_DELIVERED && out.state < SPOOL_RCPT_STATE_COUNT,
			   "outcome state valid");
		FUZZ_CHECK(spool_rcpt_state_name((enum spool_rcpt_state)out.state) != NULL, "name");
		FUZZ_CHECK((hdr->version == 1) == (out.attempts == SPOOL_ATTEMPTS_UNKNOWN),
			   "attempts unknown exactly for a version-1 OUTCOME");
		if (hdr->version == 1)
			out.attempts = 0; /* the word version 1 reserved */
		size = spool_outcome_encode(again, hdr->size, &out, hdr->commit_seq, &hdr->location);
		if (hdr->version == 1 && size == hdr->size)
			outcome_as_version_1(again, size);
	} else {
		FUZZ_CHECK(hdr->type == SPOOL_RECORD_PAD, "type is MESSAGE, OUTCOME or PAD");
		FUZZ_CHECK(spool_pad_encode(again, hdr->size, hdr->size + SPOOL_RECORD_ALIGN,
					    hdr->commit_seq, &hdr->location) == 0,
			   "PAD encode refuses a size over its buffer");
		size = spool_pad_encode(again, hdr->size, hdr->size, hdr->commit_seq,
					&hdr->location);
	}
	FUZZ_CHECK(size == hdr->size, "decoded record re-encodes to the same size");
	FUZZ_CHECK(memcmp(again, buf, size) == 0, "decoded record re-encodes to the same bytes");
	free(again);
}

/* Any bytes: check, decode, never read past len. */
static void
check_bytes(const uint8_t *buf, size_t len)
{
	struct spool_record_header hdr;
	struct spool_message msg;
	struct spool_outcome out;
	enum spool_decode_result r = spool_record_check(buf, len, NULL, &hdr);

	FUZZ_CHECK(spool_decode_result_name(r) != NULL, "every result has a name");
	if (len >= SPOOL_RECORD_HEADER_SIZE) {
		struct spool_location own = {.segment_id = le64(buf + 24),
					     .offset = le32(buf + 32),
					     .shard = (uint16_t)(buf[36] | buf[37] << 8)};
		struct spool_location other = own;
		struct spool_record_header hdr2;

		FUZZ_CHECK(spool_record_check(buf, len, &own, &hdr2) == r,
			   "own place: same result as no place");
		other.segment_id ^= 1u;
		FUZZ_CHECK(r != SPOOL_DECODE_OK ||
				   spool_record_check(buf, len, &other, &hdr2) == SPOOL_DECODE_BAD_PLACE,
			   "another place: BAD_PLACE");
	}
	if (r == SPOOL_DECODE_OK)
		check_valid_record(buf, len, &hdr);
	/* The decoders alone (they skip the CRC but check every length). */
	if (spool_message_decode(buf, len, &msg, rcpts_decoded, SPOOL_RECIPIENTS_MAX) ==
	    SPOOL_DECODE_OK) {
		uint32_t size = le32(buf + 8);

		FUZZ_CHECK(size <= len, "decoded message within len");
		check_span_inside(msg.sender, buf, size);
		check_span_inside(msg.body, buf, size);
		FUZZ_CHECK(msg.body.size >= 5 && memcmp(msg.body.data + msg.body.size - 5, BODY_END,
							5) == 0,
			   "decoded body ends with CRLF.CRLF");
	}
	if (spool_outcome_decode(buf, len, &out) == SPOOL_DECODE_OK)
		FUZZ_CHECK(len >= SPOOL_OUTCOME_RECORD_SIZE, "decoded outcome within len");
}

/* The bytes with the CRC field made right for the size they claim. */
static void
check_sealed(const uint8_t *data, size_t len)
{
	uint8_t *buf = malloc(len > 0 ? len : 1);

	FUZZ_CHECK(buf != NULL, "malloc");
	if (len > 0)
		memcpy(buf, data, len);
	if (len >= SPOOL_RECORD_HEADER_SIZE) {
		uint32_t size = le32(buf + 8);

		if (size >= SPOOL_RECORD_HEADER_SIZE && size <= len) {
			put_le32(buf + 12, 0);
			put_le32(buf + 12, spool_crc32c(0, buf, size));
		}
	}
	check_bytes(buf, len);
	free(buf);
}

struct built {
	struct spool_message msg;
	struct spool_location loc;
	uint64_t commit_seq;
	bool is_valid; /* within the documented bounds */
};

/* Fields from the input; addresses are slices of one filler buffer. */
static void
build_message(struct fuzz_cursor *cur, struct built *b, uint8_t **body_out)
{
	uint8_t flags = fuzz_take_u8(cur);
	uint8_t count_byte = fuzz_take_u8(cur);
	uint32_t count = count_byte == 255 ? SPOOL_RECIPIENTS_MAX + (flags & 1u)
					   : (uint32_t)(count_byte % 17u);
	uint32_t sender_size = fuzz_take_u16(cur) % (SPOOL_ADDRESS_SIZE_MAX + 40u);

	memset(b, 0, sizeof(*b));
	b->is_valid = count >= 1 && count <= SPOOL_RECIPIENTS_MAX &&
		      sender_size <= SPOOL_ADDRESS_SIZE_MAX;
	b->msg.created_ns = (uint64_t)fuzz_take_u16(cur) << 40 | fuzz_take_u16(cur);
	b->msg.expires_ns = b->msg.created_ns + fuzz_take_u16(cur);
	b->loc.segment_id = fuzz_take_u16(cur);
	b->loc.offset = (uint32_t)fuzz_take_u16(cur) * SPOOL_RECORD_ALIGN;
	b->loc.shard = fuzz_take_u8(cur);
	b->commit_seq = fuzz_take_u16(cur);
	for (uint32_t i = 0; i < sizeof(rcpt_bytes); i++)
		rcpt_bytes[i] = (uint8_t)('a' + i % 26u);
	b->msg.sender = (struct spool_span){.data = rcpt_bytes, .size = sender_size};
	for (uint32_t i = 0; i < count; i++) {
		uint32_t size = count > 16 ? 1u : fuzz_take_u16(cur) % (SPOOL_ADDRESS_SIZE_MAX + 40u);

		b->is_valid = b->is_valid && size >= 1 && size <= SPOOL_ADDRESS_SIZE_MAX;
		rcpts_built[i] = (struct spool_span){.data = rcpt_bytes, .size = size};
	}
	b->msg.rcpt_count = count;
	b->msg.rcpts = rcpts_built;
	/* Body: the rest of the input, with the terminator unless flag 2. */
	size_t rest = fuzz_left(cur);
	size_t body_size = rest + ((flags & 2u) ? 0u : 5u);
	uint8_t *body = malloc(body_size > 0 ? body_size : 1);

	FUZZ_CHECK(body != NULL, "malloc");
	if (rest > 0)
		memcpy(body, cur->data + cur->pos, rest);
	if (!(flags & 2u))
		memcpy(body + rest, BODY_END, 5);
	b->is_valid = b->is_valid && body_size >= 5 && memcmp(body + body_size - 5, BODY_END, 5) == 0;
	b->msg.body = (struct spool_span){.data = body, .size = (uint32_t)body_size};
	*body_out = body;
}

static void
check_built_decodes(const uint8_t *buf, uint32_t size, const struct built *b)
{
	struct spool_record_header hdr;
	struct spool_message msg;

	FUZZ_CHECK(spool_record_check(buf, size, &b->loc, &hdr) == SPOOL_DECODE_OK,
		   "encoded record checks at its place");
	FUZZ_CHECK(hdr.type == SPOOL_RECORD_MESSAGE && hdr.size == size &&
			   hdr.commit_seq == b->commit_seq,
		   "header round trip");
	FUZZ_CHECK(spool_message_decode(buf, size, &msg, rcpts_decoded, SPOOL_RECIPIENTS_MAX) ==
			   SPOOL_DECODE_OK,
		   "encoded record decodes");
	FUZZ_CHECK(msg.created_ns == b->msg.created_ns && msg.expires_ns == b->msg.expires_ns &&
			   msg.rcpt_count == b->msg.rcpt_count,
		   "fixed fields round trip");
	FUZZ_CHECK(msg.sender.size == b->msg.sender.size &&
			   memcmp(msg.sender.data, b->msg.sender.data, msg.sender.size) == 0,
		   "sender round trip");
	for (uint32_t i = 0; i < msg.rcpt_count; i++)
		FUZZ_CHECK(msg.rcpts[i].size == b->msg.rcpts[i].size &&
				   memcmp(msg.rcpts[i].data, b->msg.rcpts[i].data,
					  msg.rcpts[i].size) == 0,
			   "recipient round trip");
	FUZZ_CHECK(msg.body.size == b->msg.body.size &&
			   memcmp(msg.body.data, b->msg.body.data, msg.body.size) == 0,
		   "body round trip");
	if (msg.rcpt_count > 1)
		FUZZ_CHECK(spool_message_decode(buf, size, &msg, rcpts_decoded, msg.rcpt_count - 1) ==
				   SPOOL_DECODE_SHORT,
			   "too few recipient slots: SHORT");
}

/* One changed byte anywhere fails the check; every truncation is SHORT. */
static void
check_built_damage(uint8_t *buf, uint32_t size, const struct built *b, uint16_t where,
		   uint8_t xor_mask)
{
	struct spool_record_header hdr;
	uint32_t pos = where % size;
	uint32_t cut = (uint32_t)(where % size);
	struct spool_location other = b->loc;

	other.offset += SPOOL_RECORD_ALIGN;
	FUZZ_CHECK(spool_record_check(buf, size, &other, &hdr) == SPOOL_DECODE_BAD_PLACE,
		   "another place: BAD_PLACE");
	if (cut > 0) /* 0 bytes are all zero: ZERO, not SHORT */
		FUZZ_CHECK(spool_record_check(buf, cut, &b->loc, &hdr) == SPOOL_DECODE_SHORT,
			   "a truncated record is SHORT");
	if (xor_mask == 0)
		xor_mask = 0x80;
	buf[pos] ^= xor_mask;
	FUZZ_CHECK(spool_record_check(buf, size, &b->loc, &hdr) != SPOOL_DECODE_OK,
		   "one changed byte fails the check");
	buf[pos] ^= xor_mask;
}

static void
check_built_outcome(struct fuzz_cursor *cur, const struct built *b)
{
	uint8_t buf[SPOOL_OUTCOME_RECORD_SIZE];
	struct spool_outcome in = {
		.message = b->loc,
		.rcpt_index = fuzz_take_u16(cur),
		.state = fuzz_take_u8(cur) % 6u,
		/* Up to 32 bits: both sides of SPOOL_ATTEMPTS_MAX. */
		.attempts = (uint32_t)b->msg.created_ns,
		.time_ns = b->msg.created_ns,
	};
	struct spool_outcome out;
	struct spool_record_header hdr;
	bool is_valid = in.state >= SPOOL_RCPT_DELIVERED && in.state <= SPOOL_RCPT_DEFERRED &&
			in.rcpt_index < SPOOL_RECIPIENTS_MAX && in.attempts <= SPOOL_ATTEMPTS_MAX;
	uint32_t size = spool_outcome_encode(buf, sizeof(buf), &in, b->commit_seq, &b->loc);

	FUZZ_CHECK((size != 0) == is_valid, "outcome encode accepts exactly valid outcomes");
	if (size == 0)
		return;
	FUZZ_CHECK(spool_record_check(buf, size, &b->loc, &hdr) == SPOOL_DECODE_OK &&
			   hdr.type == SPOOL_RECORD_OUTCOME,
		   "outcome checks");
	FUZZ_CHECK(spool_outcome_decode(buf, size, &out) == SPOOL_DECODE_OK, "outcome decodes");
	FUZZ_CHECK(hdr.version == SPOOL_OUTCOME_VERSION, "OUTCOME written at version 2");
	FUZZ_CHECK(out.rcpt_index == in.rcpt_index && out.state == in.state &&
			   out.attempts == in.attempts &&
			   out.time_ns == in.time_ns && out.message.segment_id == in.message.segment_id &&
			   out.message.offset == in.message.offset &&
			   out.message.shard == in.message.shard,
		   "outcome round trip");
}

static void
check_built(const uint8_t *data, size_t len)
{
	struct fuzz_cursor cur = {.data = data, .size = len, .pos = 0};
	uint16_t where = fuzz_take_u16(&cur);
	uint8_t xor_mask = fuzz_take_u8(&cur);
	struct built b;
	uint8_t *body = NULL;

	/* The outcome takes 3 bytes from the end: read them first. */
	struct fuzz_cursor tail = {.data = data, .size = len, .pos = len >= 3 ? len - 3 : len};
	if (len >= 3)
		cur.size = len - 3;
	build_message(&cur, &b, &body);
	check_built_outcome(&tail, &b);

	uint32_t size = spool_message_record_size(&b.msg);

	FUZZ_CHECK((size != 0) == b.is_valid, "record size != 0 exactly within the bounds");
	if (size != 0) {
		uint8_t *buf = malloc(size);

		FUZZ_CHECK(buf != NULL, "malloc");
		FUZZ_CHECK(spool_message_encode(buf, size - 1u, &b.msg, b.commit_seq, &b.loc) == 0,
			   "encode refuses a buffer one byte short");
		FUZZ_CHECK(spool_message_encode(buf, size, &b.msg, b.commit_seq, &b.loc) == size,
			   "encode fills the record size");
		check_built_decodes(buf, size, &b);
		check_built_damage(buf, size, &b, where, xor_mask);
		check_bytes(buf, size);
		free(buf);
	}
	free(body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t mode = size > 0 ? data[0] % 3u : 0u;
	const uint8_t *rest = size > 0 ? data + 1 : data;
	size_t rest_len = size > 0 ? size - 1 : 0;
	uint8_t *copy = malloc(rest_len > 0 ? rest_len : 1);
	struct spool_location loc;

	FUZZ_CHECK(copy != NULL, "malloc");
	if (rest_len > 0)
		memcpy(copy, rest, rest_len);
	if (mode == 0)
		check_bytes(copy, rest_len);
	else if (mode == 1)
		check_sealed(copy, rest_len);
	else
		check_built(copy, rest_len);
	if (spool_queue_id_parse((const char *)copy, rest_len, &loc))
		check_queue_id(&loc);
	free(copy);
	return 0;
}
