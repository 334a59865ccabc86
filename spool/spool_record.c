/*
 * spool_record.c - encode and decode spool records (spool_record.h,
 * docs/spool-format.md).
 *
 * Every multi-byte field is packed and unpacked byte by byte, little-endian,
 * through a bounded writer or reader; no struct is ever laid over a buffer,
 * so the format does not depend on the compiler, the ABI or the alignment
 * of the caller's buffer.
 *
 * Invariants:
 * - An encoded record is exactly spool_message_record_size() (or the
 *   outcome / pad size) bytes: header, body, zero padding to
 *   SPOOL_RECORD_ALIGN. Its CRC32C covers every byte with the CRC field
 *   taken as zero.
 * - Encode and decode share the bound predicates (message_counts_are_valid,
 *   address_size_is_valid, body_end_is_valid, outcome_is_valid), so whatever
 *   encode accepts decodes, and whatever decode accepts could have been
 *   encoded (a version-1 OUTCOME by the encoder of its time).
 * - Versions are per type (record_version_is_known): MESSAGE and PAD 1,
 *   OUTCOME 1 (reserved word, must be 0) or 2 (attempt count there).
 *   Encoders write only the current versions. Any other version is
 *   BAD_VERSION: a format this decoder does not know is never guessed at.
 * - Decoding never reads past the bytes given and never trusts a length
 *   before checking it. Bad bytes are returned as an error code, never
 *   asserted on: asserts here guard caller preconditions (NULL pointers,
 *   unaligned record offsets, shard > 255 in a queue id) and this file's
 *   own arithmetic.
 * - Encoders return 0, writing nothing, for input that breaks a bound: the
 *   sizes and counts of spool_record.h, a body not ending in CRLF.CRLF, an
 *   outcome state outside 1..4, a recipient index >= SPOOL_RECIPIENTS_MAX,
 *   attempts above SPOOL_ATTEMPTS_MAX or an unaligned message offset, a PAD
 *   size below the header or unaligned.
 * - spool_message_decode returns SHORT (not BAD_BODY) when the record is
 *   sound but has more recipients than rcpts_capacity: the caller's array
 *   is too small, the record is not corrupt.
 *
 * Check order in spool_record_check (the first failure wins): ZERO, then
 * magic (BAD_MAGIC), SHORT for less than a header, version / type / flags /
 * reserved (BAD_VERSION), size (BAD_SIZE), size past the bytes given
 * (SHORT), CRC (BAD_CRC), place (BAD_PLACE), type-specific body (BAD_BODY).
 *
 * Ownership: encoders borrow their inputs until return and write only
 * buf[0, record size). Decoded spans point into the caller's buffer.
 */
#include "spool_record.h"

#include <string.h>

#include "../engine/eng_common.h"
#include "spool_crc32c.h"

#define RECORD_CRC_OFFSET 12u
#define RECORD_CRC_SIZE 4u
#define RECORD_PLACE_OFFSET 24u
#define MESSAGE_BODY_END "\r\n.\r\n"
#define MESSAGE_BODY_END_SIZE 5u
#define MESSAGE_BODY_SIZE_MIN MESSAGE_BODY_END_SIZE
/* Smallest message: empty sender, one 1-byte recipient, "\r\n.\r\n". */
#define MESSAGE_RECORD_SIZE_MIN                                                                \
	ENG_ALIGN_UP(SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE + 2u + 1u +         \
			     MESSAGE_BODY_SIZE_MIN,                                            \
		     SPOOL_RECORD_ALIGN)

_Static_assert(RECORD_CRC_OFFSET + RECORD_CRC_SIZE == 16u, "crc field precedes commit seq");
_Static_assert(RECORD_PLACE_OFFSET + 16u == SPOOL_RECORD_HEADER_SIZE, "place fields end header");
_Static_assert(SPOOL_MESSAGE_FIXED_SIZE == 8u + 8u + 4u + 2u + 2u, "message fixed fields");
_Static_assert(SPOOL_OUTCOME_BODY_SIZE == 8u + 4u + 2u + 2u + 4u + 4u + 8u, "outcome fields");
_Static_assert((SPOOL_RECORD_ALIGN & (SPOOL_RECORD_ALIGN - 1u)) == 0, "align is a power of 2");
_Static_assert(SPOOL_BODY_SIZE_MAX >= MESSAGE_BODY_SIZE_MIN, "body bounds");
_Static_assert(MESSAGE_RECORD_SIZE_MIN == 72u, "minimal message record");
_Static_assert(SPOOL_RECORD_SIZE_MAX % SPOOL_RECORD_ALIGN == 0, "record size max aligned");

/* ------------------------------------------------------------------ */
/* Bounded little-endian writer and reader.                            */
/* ------------------------------------------------------------------ */

/* The writers are always inlined: encoding a 1 KiB MESSAGE record calls
 * them ~25 times, and as calls they cost about as much as its CRC
 * (docs/BENCHMARKS.md section 1.5, finding 3: ~66 instead of ~95 ns a
 * record). Inlined, their asserts on constant sizes fold away. */

struct rec_writer {
	uint8_t *buf;
	uint32_t size;
	uint32_t used;
};

struct rec_reader {
	const uint8_t *buf;
	uint32_t size;
	uint32_t pos;
};

static inline __attribute__((always_inline)) void
writer_put_bytes(struct rec_writer *w, const void *src, uint32_t n)
{
	ENG_ASSERT(w->used <= w->size);
	ENG_ASSERT(n <= w->size - w->used);
	ENG_ASSERT(src != NULL || n == 0);
	if (n > 0) {
		memcpy(w->buf + w->used, src, n);
	}
	w->used += n;
}

static inline __attribute__((always_inline)) void
writer_put_zeros(struct rec_writer *w, uint32_t n)
{
	ENG_ASSERT(w->used <= w->size);
	ENG_ASSERT(n <= w->size - w->used);
	memset(w->buf + w->used, 0, n);
	w->used += n;
}

static inline __attribute__((always_inline)) void
writer_put_u8(struct rec_writer *w, uint8_t v)
{
	ENG_ASSERT(w->buf != NULL);
	ENG_ASSERT(w->used < w->size);
	w->buf[w->used++] = v;
}

static inline __attribute__((always_inline)) void
writer_put_u16(struct rec_writer *w, uint16_t v)
{
	ENG_ASSERT(w->buf != NULL);
	ENG_ASSERT(w->size - w->used >= 2u);
	const uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	writer_put_bytes(w, b, sizeof(b));
}

static inline __attribute__((always_inline)) void
writer_put_u32(struct rec_writer *w, uint32_t v)
{
	ENG_ASSERT(w->buf != NULL);
	ENG_ASSERT(w->size - w->used >= 4u);
	const uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			      (uint8_t)(v >> 24)};
	writer_put_bytes(w, b, sizeof(b));
}

static inline __attribute__((always_inline)) void
writer_put_u64(struct rec_writer *w, uint64_t v)
{
	ENG_ASSERT(w->buf != NULL);
	ENG_ASSERT(w->size - w->used >= 8u);
	writer_put_u32(w, (uint32_t)v);
	writer_put_u32(w, (uint32_t)(v >> 32));
}

static bool
reader_has(const struct rec_reader *r, uint32_t n)
{
	ENG_ASSERT(r->buf != NULL);
	ENG_ASSERT(r->pos <= r->size);
	return n <= r->size - r->pos;
}

/* Takes n bytes the caller has already checked are there (reader_has). */
static const uint8_t *
reader_take(struct rec_reader *r, uint32_t n)
{
	ENG_ASSERT(r->pos <= r->size);
	ENG_ASSERT(n <= r->size - r->pos);
	const uint8_t *p = r->buf + r->pos;
	r->pos += n;
	return p;
}

static uint8_t
reader_u8(struct rec_reader *r)
{
	ENG_ASSERT(r->buf != NULL);
	ENG_ASSERT(reader_has(r, 1u));
	return *reader_take(r, 1u);
}

static uint16_t
reader_u16(struct rec_reader *r)
{
	ENG_ASSERT(r->buf != NULL);
	ENG_ASSERT(reader_has(r, 2u));
	const uint8_t *p = reader_take(r, 2u);
	return (uint16_t)((uint32_t)p[0] | (uint32_t)p[1] << 8);
}

static uint32_t
reader_u32(struct rec_reader *r)
{
	ENG_ASSERT(r->buf != NULL);
	ENG_ASSERT(reader_has(r, 4u));
	const uint8_t *p = reader_take(r, 4u);
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t
reader_u64(struct rec_reader *r)
{
	ENG_ASSERT(r->buf != NULL);
	ENG_ASSERT(reader_has(r, 8u));
	uint64_t lo = reader_u32(r);
	uint64_t hi = reader_u32(r);
	return lo | hi << 32;
}

/* ------------------------------------------------------------------ */
/* Bounds shared by encode and decode.                                 */
/* ------------------------------------------------------------------ */

static bool
message_counts_are_valid(uint32_t sender_size, uint32_t rcpt_count, uint32_t body_size)
{
	ENG_ASSERT(SPOOL_RECIPIENTS_MAX >= 1u);
	ENG_ASSERT(SPOOL_ADDRESS_SIZE_MAX >= 1u);
	return sender_size <= SPOOL_ADDRESS_SIZE_MAX && rcpt_count >= 1u &&
	       rcpt_count <= SPOOL_RECIPIENTS_MAX && body_size >= MESSAGE_BODY_SIZE_MIN &&
	       body_size <= SPOOL_BODY_SIZE_MAX;
}

static bool
address_size_is_valid(uint32_t size)
{
	ENG_ASSERT(SPOOL_ADDRESS_SIZE_MAX <= UINT16_MAX);
	ENG_ASSERT(SPOOL_ADDRESS_SIZE_MAX >= 1u);
	return size >= 1u && size <= SPOOL_ADDRESS_SIZE_MAX;
}

/* The body is SMTP wire form: it ends with the CRLF.CRLF terminator. */
static bool
body_end_is_valid(const uint8_t *body, uint32_t body_size)
{
	ENG_ASSERT(body != NULL);
	ENG_ASSERT(body_size >= MESSAGE_BODY_END_SIZE);
	const uint8_t *end = body + body_size - MESSAGE_BODY_END_SIZE;
	return memcmp(end, MESSAGE_BODY_END, MESSAGE_BODY_END_SIZE) == 0;
}

static bool
outcome_is_valid(const struct spool_outcome *out)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(SPOOL_RCPT_DEFERRED + 1 == SPOOL_RCPT_STATE_COUNT);
	return out->state >= SPOOL_RCPT_DELIVERED && out->state <= SPOOL_RCPT_DEFERRED &&
	       out->rcpt_index < SPOOL_RECIPIENTS_MAX && out->attempts <= SPOOL_ATTEMPTS_MAX &&
	       out->message.offset % SPOOL_RECORD_ALIGN == 0;
}

static bool
bytes_are_zero(const uint8_t *p, size_t n)
{
	ENG_ASSERT(p != NULL || n == 0);
	ENG_ASSERT(n <= SPOOL_RECORD_SIZE_MAX);
	for (size_t i = 0; i < n; i++) {
		if (p[i] != 0) {
			return false;
		}
	}
	return true;
}

static bool
location_equal(const struct spool_location *a, const struct spool_location *b)
{
	ENG_ASSERT(a != NULL);
	ENG_ASSERT(b != NULL);
	return a->segment_id == b->segment_id && a->offset == b->offset && a->shard == b->shard;
}

/* ------------------------------------------------------------------ */
/* Header and CRC.                                                     */
/* ------------------------------------------------------------------ */

/* Every header field as it lies on disk, before any of it is trusted. */
struct rec_header_raw {
	uint32_t magic;
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t size;
	uint32_t crc;
	uint64_t commit_seq;
	struct spool_location loc;
	uint16_t reserved;
};

/* The version each type is written at. */
static uint8_t
record_version_current(uint8_t type)
{
	_Static_assert(SPOOL_OUTCOME_VERSION <= UINT8_MAX, "version is one byte");
	_Static_assert(SPOOL_OUTCOME_VERSION_MIN >= 1, "version 0 is never valid");
	return type == SPOOL_RECORD_OUTCOME ? (uint8_t)SPOOL_OUTCOME_VERSION
					    : (uint8_t)SPOOL_RECORD_VERSION;
}

static void
record_header_write(struct rec_writer *w, uint8_t type, uint32_t size, uint64_t commit_seq,
		    const struct spool_location *loc)
{
	ENG_ASSERT(w->used == 0);
	ENG_ASSERT(w->size == size);
	ENG_ASSERT(size >= SPOOL_RECORD_HEADER_SIZE);
	writer_put_u32(w, SPOOL_RECORD_MAGIC);
	writer_put_u8(w, record_version_current(type));
	writer_put_u8(w, type);
	writer_put_u16(w, 0);	  /* flags */
	writer_put_u32(w, size);
	writer_put_u32(w, 0);	  /* CRC, filled in by record_seal */
	writer_put_u64(w, commit_seq);
	writer_put_u64(w, loc->segment_id);
	writer_put_u32(w, loc->offset);
	writer_put_u16(w, loc->shard);
	writer_put_u16(w, 0);	  /* reserved */
	ENG_ASSERT(w->used == SPOOL_RECORD_HEADER_SIZE);
}

static void
record_header_read(const uint8_t *buf, struct rec_header_raw *raw)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(raw != NULL);
	struct rec_reader r = {.buf = buf, .size = SPOOL_RECORD_HEADER_SIZE, .pos = 0};
	raw->magic = reader_u32(&r);
	raw->version = reader_u8(&r);
	raw->type = reader_u8(&r);
	raw->flags = reader_u16(&r);
	raw->size = reader_u32(&r);
	raw->crc = reader_u32(&r);
	raw->commit_seq = reader_u64(&r);
	raw->loc.segment_id = reader_u64(&r);
	raw->loc.offset = reader_u32(&r);
	raw->loc.shard = reader_u16(&r);
	raw->reserved = reader_u16(&r);
	ENG_ASSERT(r.pos == SPOOL_RECORD_HEADER_SIZE);
}

/* CRC32C of the record with its CRC field taken as zero. The first 16 bytes
 * go through a copy with the field zeroed, so the CRC is two calls and the
 * rest (16-byte aligned when buf is) takes the long-input path whole. */
static uint32_t
record_crc(const uint8_t *buf, uint32_t size)
{
	enum { HEAD_SIZE = RECORD_CRC_OFFSET + RECORD_CRC_SIZE };
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(size >= SPOOL_RECORD_HEADER_SIZE);
	uint8_t head[HEAD_SIZE];
	memcpy(head, buf, RECORD_CRC_OFFSET);
	memset(head + RECORD_CRC_OFFSET, 0, RECORD_CRC_SIZE);
	uint32_t crc = spool_crc32c(0, head, HEAD_SIZE);
	return spool_crc32c(crc, buf + HEAD_SIZE, size - HEAD_SIZE);
}

/* Stores the CRC of a fully written record. Its CRC field is still zero,
 * so the CRC by the rule (record_crc) is the CRC of the bytes as they are:
 * one call over the whole record. */
static void
record_seal(uint8_t *buf, uint32_t size)
{
	ENG_ASSERT(size >= SPOOL_RECORD_HEADER_SIZE);
	ENG_ASSERT(size % SPOOL_RECORD_ALIGN == 0);
	ENG_ASSERT(bytes_are_zero(buf + RECORD_CRC_OFFSET, RECORD_CRC_SIZE));
	uint32_t crc = spool_crc32c(0, buf, size);
	ENG_DEBUG_ASSERT(crc == record_crc(buf, size));
	struct rec_writer w = {.buf = buf, .size = size, .used = RECORD_CRC_OFFSET};
	writer_put_u32(&w, crc);
}

static bool
record_type_is_known(uint8_t type)
{
	ENG_ASSERT(SPOOL_RECORD_MESSAGE == 1);
	ENG_ASSERT(SPOOL_RECORD_PAD == 3);
	return type >= SPOOL_RECORD_MESSAGE && type <= SPOOL_RECORD_PAD;
}

/* Versions this decoder reads, per type (the type is known). */
static bool
record_version_is_known(uint8_t type, uint8_t version)
{
	ENG_ASSERT(record_type_is_known(type));
	if (type == SPOOL_RECORD_OUTCOME) {
		return version >= SPOOL_OUTCOME_VERSION_MIN && version <= SPOOL_OUTCOME_VERSION;
	}
	return version == SPOOL_RECORD_VERSION;
}

/* Size rules that need no bytes beyond the header. */
static bool
record_size_is_valid(uint8_t type, uint32_t size)
{
	ENG_ASSERT(record_type_is_known(type));
	ENG_ASSERT(SPOOL_RECORD_SIZE_MAX % SPOOL_RECORD_ALIGN == 0);
	if (size < SPOOL_RECORD_HEADER_SIZE || size % SPOOL_RECORD_ALIGN != 0 ||
	    size > SPOOL_RECORD_SIZE_MAX) {
		return false;
	}
	if (type == SPOOL_RECORD_OUTCOME) return size == SPOOL_OUTCOME_RECORD_SIZE;
	if (type == SPOOL_RECORD_MESSAGE) return size >= MESSAGE_RECORD_SIZE_MIN;
	return true;
}

static enum spool_decode_result
record_header_validate(const struct rec_header_raw *raw)
{
	ENG_ASSERT(raw != NULL);
	ENG_ASSERT(SPOOL_RECORD_VERSION > 0);
	if (raw->magic != SPOOL_RECORD_MAGIC) return SPOOL_DECODE_BAD_MAGIC;
	/* A type, version, flag or reserved bit this decoder does not know is
	 * a format it does not understand. */
	if (!record_type_is_known(raw->type) || !record_version_is_known(raw->type, raw->version) ||
	    raw->flags != 0 || raw->reserved != 0) {
		return SPOOL_DECODE_BAD_VERSION;
	}
	if (!record_size_is_valid(raw->type, raw->size)) return SPOOL_DECODE_BAD_SIZE;
	return SPOOL_DECODE_OK;
}

/* Fewer bytes than a header, not all zero: BAD_MAGIC if the magic is there
 * to see and wrong, SHORT otherwise. */
static enum spool_decode_result
record_prefix_check(const uint8_t *buf, size_t len)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(len < SPOOL_RECORD_HEADER_SIZE);
	if (len >= 4) {
		struct rec_reader r = {.buf = buf, .size = 4, .pos = 0};
		if (reader_u32(&r) != SPOOL_RECORD_MAGIC) return SPOOL_DECODE_BAD_MAGIC;
	}
	return SPOOL_DECODE_SHORT;
}

/* Everything up to and excluding the CRC: zero, magic, header fields, size,
 * size against the bytes available. Fills raw when it returns OK. */
static enum spool_decode_result
record_screen(const uint8_t *buf, size_t len, struct rec_header_raw *raw)
{
	ENG_ASSERT(buf != NULL || len == 0);
	ENG_ASSERT(raw != NULL);
	if (bytes_are_zero(buf, ENG_MIN(len, (size_t)SPOOL_RECORD_HEADER_SIZE))) {
		return SPOOL_DECODE_ZERO;
	}
	if (len < SPOOL_RECORD_HEADER_SIZE) return record_prefix_check(buf, len);
	record_header_read(buf, raw);
	enum spool_decode_result result = record_header_validate(raw);
	if (result != SPOOL_DECODE_OK) return result;
	if (raw->size > len) return SPOOL_DECODE_SHORT;
	ENG_ASSERT(raw->size >= SPOOL_RECORD_HEADER_SIZE);
	return SPOOL_DECODE_OK;
}

/* ------------------------------------------------------------------ */
/* Type-specific bodies.                                               */
/* ------------------------------------------------------------------ */

static enum spool_decode_result
message_parse_rcpts(struct rec_reader *r, uint32_t rcpt_count, struct spool_span *rcpts,
		    uint32_t rcpts_capacity)
{
	ENG_ASSERT(rcpt_count >= 1u);
	ENG_ASSERT(rcpt_count <= SPOOL_RECIPIENTS_MAX);
	for (uint32_t i = 0; i < rcpt_count; i++) {
		if (!reader_has(r, 2u)) return SPOOL_DECODE_BAD_BODY;
		uint32_t size = reader_u16(r);
		if (!address_size_is_valid(size) || !reader_has(r, size)) {
			return SPOOL_DECODE_BAD_BODY;
		}
		const uint8_t *data = reader_take(r, size);
		if (rcpts != NULL && i < rcpts_capacity) {
			rcpts[i] = (struct spool_span){.data = data, .size = size};
		}
	}
	return SPOOL_DECODE_OK;
}

/*
 * Parses a MESSAGE body of a record of size bytes at rec (the header is
 * already validated). Fills *msg only on OK. SHORT means the record is
 * valid but has more recipients than rcpts_capacity.
 */
static enum spool_decode_result
message_parse(const uint8_t *rec, uint32_t size, struct spool_message *msg,
	      struct spool_span *rcpts, uint32_t rcpts_capacity)
{
	ENG_ASSERT(size >= MESSAGE_RECORD_SIZE_MIN);
	ENG_ASSERT(size % SPOOL_RECORD_ALIGN == 0);
	struct rec_reader r = {.buf = rec, .size = size, .pos = SPOOL_RECORD_HEADER_SIZE};
	struct spool_message m = {0};
	m.created_ns = reader_u64(&r);
	m.expires_ns = reader_u64(&r);
	m.body.size = reader_u32(&r);
	m.sender.size = reader_u16(&r);
	m.rcpt_count = reader_u16(&r);
	if (!message_counts_are_valid(m.sender.size, m.rcpt_count, m.body.size)) {
		return SPOOL_DECODE_BAD_BODY;
	}
	if (!reader_has(&r, m.sender.size)) return SPOOL_DECODE_BAD_BODY;
	m.sender.data = reader_take(&r, m.sender.size);
	enum spool_decode_result result =
		message_parse_rcpts(&r, m.rcpt_count, rcpts, rcpts_capacity);
	if (result != SPOOL_DECODE_OK) return result;
	if (!reader_has(&r, m.body.size)) return SPOOL_DECODE_BAD_BODY;
	m.body.data = reader_take(&r, m.body.size);
	if (!body_end_is_valid(m.body.data, m.body.size)) return SPOOL_DECODE_BAD_BODY;
	/* The sizes must add up to the record size less its padding. */
	uint32_t pad_size = r.size - r.pos;
	if (pad_size >= SPOOL_RECORD_ALIGN || !bytes_are_zero(rec + r.pos, pad_size)) {
		return SPOOL_DECODE_BAD_BODY;
	}
	if (rcpts != NULL && m.rcpt_count > rcpts_capacity) return SPOOL_DECODE_SHORT;
	m.rcpts = rcpts;
	*msg = m;
	return SPOOL_DECODE_OK;
}

/* Parses an OUTCOME body of the given version (record size and version
 * already checked). Version 1 reserved the attempts word (must be 0): its
 * count is unknown. Fills *out on OK. */
static enum spool_decode_result
outcome_parse(const uint8_t *rec, uint8_t version, struct spool_outcome *out)
{
	ENG_ASSERT(rec != NULL);
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(version >= SPOOL_OUTCOME_VERSION_MIN && version <= SPOOL_OUTCOME_VERSION);
	struct rec_reader r = {.buf = rec, .size = SPOOL_OUTCOME_RECORD_SIZE,
			       .pos = SPOOL_RECORD_HEADER_SIZE};
	struct spool_outcome o = {0};
	o.message.segment_id = reader_u64(&r);
	o.message.offset = reader_u32(&r);
	o.message.shard = reader_u16(&r);
	o.state = reader_u16(&r);
	o.rcpt_index = reader_u32(&r);
	o.attempts = reader_u32(&r);
	o.time_ns = reader_u64(&r);
	ENG_ASSERT(r.pos == SPOOL_OUTCOME_RECORD_SIZE);
	if (version == 1 && o.attempts != 0) return SPOOL_DECODE_BAD_BODY; /* reserved */
	if (!outcome_is_valid(&o)) return SPOOL_DECODE_BAD_BODY;
	if (version == 1) o.attempts = SPOOL_ATTEMPTS_UNKNOWN;
	*out = o;
	return SPOOL_DECODE_OK;
}

static enum spool_decode_result
record_body_validate(const uint8_t *buf, const struct rec_header_raw *raw)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(record_size_is_valid(raw->type, raw->size));
	switch (raw->type) {
	case SPOOL_RECORD_MESSAGE: {
		struct spool_message msg;
		return message_parse(buf, raw->size, &msg, NULL, 0);
	}
	case SPOOL_RECORD_OUTCOME: {
		struct spool_outcome out;
		return outcome_parse(buf, raw->version, &out);
	}
	case SPOOL_RECORD_PAD: {
		const uint8_t *body = buf + SPOOL_RECORD_HEADER_SIZE;
		bool zero = bytes_are_zero(body, raw->size - SPOOL_RECORD_HEADER_SIZE);
		return zero ? SPOOL_DECODE_OK : SPOOL_DECODE_BAD_BODY;
	}
	default:
		ENG_ASSERT(false && "record type validated by record_header_validate");
		return SPOOL_DECODE_BAD_VERSION;
	}
}

/* ------------------------------------------------------------------ */
/* Public API.                                                         */
/* ------------------------------------------------------------------ */

/* Pairs encode with decode in debug builds (O(n): ENG_DEBUG_ASSERT only). */
__attribute__((unused)) static bool
record_is_valid_at(const uint8_t *buf, uint32_t size, const struct spool_location *loc)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(loc != NULL);
	struct spool_record_header hdr;
	return spool_record_check(buf, size, loc, &hdr) == SPOOL_DECODE_OK && hdr.size == size;
}

uint32_t
spool_message_record_size(const struct spool_message *msg)
{
	ENG_ASSERT(msg != NULL);
	ENG_ASSERT(msg->sender.data != NULL || msg->sender.size == 0);
	ENG_ASSERT(msg->rcpts != NULL || msg->rcpt_count == 0);
	if (!message_counts_are_valid(msg->sender.size, msg->rcpt_count, msg->body.size)) {
		return 0;
	}
	ENG_ASSERT(msg->body.data != NULL);
	if (!body_end_is_valid(msg->body.data, msg->body.size)) return 0;
	uint64_t total = (uint64_t)SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE +
			 msg->sender.size + msg->body.size;
	for (uint32_t i = 0; i < msg->rcpt_count; i++) {
		if (!address_size_is_valid(msg->rcpts[i].size)) return 0;
		ENG_ASSERT(msg->rcpts[i].data != NULL);
		total += 2u + msg->rcpts[i].size;
	}
	uint64_t size = ENG_ALIGN_UP(total, (uint64_t)SPOOL_RECORD_ALIGN);
	ENG_ASSERT(size >= MESSAGE_RECORD_SIZE_MIN);
	ENG_ASSERT(size <= SPOOL_RECORD_SIZE_MAX);
	return (uint32_t)size;
}

uint32_t
spool_message_encode(uint8_t *buf, uint32_t buf_size, const struct spool_message *msg,
		     uint64_t commit_seq, const struct spool_location *loc)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(loc != NULL);
	ENG_ASSERT(loc->offset % SPOOL_RECORD_ALIGN == 0);
	uint32_t size = spool_message_record_size(msg);
	if (size == 0 || size > buf_size) return 0;

	struct rec_writer w = {.buf = buf, .size = size, .used = 0};
	record_header_write(&w, SPOOL_RECORD_MESSAGE, size, commit_seq, loc);
	writer_put_u64(&w, msg->created_ns);
	writer_put_u64(&w, msg->expires_ns);
	writer_put_u32(&w, msg->body.size);
	writer_put_u16(&w, (uint16_t)msg->sender.size);
	writer_put_u16(&w, (uint16_t)msg->rcpt_count);
	writer_put_bytes(&w, msg->sender.data, msg->sender.size);
	for (uint32_t i = 0; i < msg->rcpt_count; i++) {
		writer_put_u16(&w, (uint16_t)msg->rcpts[i].size);
		writer_put_bytes(&w, msg->rcpts[i].data, msg->rcpts[i].size);
	}
	writer_put_bytes(&w, msg->body.data, msg->body.size);
	ENG_ASSERT(size - w.used < SPOOL_RECORD_ALIGN);
	writer_put_zeros(&w, size - w.used);
	ENG_ASSERT(w.used == size);
	record_seal(buf, size);

	ENG_DEBUG_ASSERT(record_is_valid_at(buf, size, loc));
	return size;
}

uint32_t
spool_outcome_encode(uint8_t *buf, uint32_t buf_size, const struct spool_outcome *out,
		     uint64_t commit_seq, const struct spool_location *loc)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(loc != NULL);
	ENG_ASSERT(loc->offset % SPOOL_RECORD_ALIGN == 0);
	if (!outcome_is_valid(out) || buf_size < SPOOL_OUTCOME_RECORD_SIZE) return 0;

	const uint32_t size = SPOOL_OUTCOME_RECORD_SIZE;
	struct rec_writer w = {.buf = buf, .size = size, .used = 0};
	record_header_write(&w, SPOOL_RECORD_OUTCOME, size, commit_seq, loc);
	writer_put_u64(&w, out->message.segment_id);
	writer_put_u32(&w, out->message.offset);
	writer_put_u16(&w, out->message.shard);
	writer_put_u16(&w, out->state);
	writer_put_u32(&w, out->rcpt_index);
	writer_put_u32(&w, out->attempts);
	writer_put_u64(&w, out->time_ns);
	ENG_ASSERT(w.used == size);
	record_seal(buf, size);

	ENG_DEBUG_ASSERT(record_is_valid_at(buf, size, loc));
	return size;
}

uint32_t
spool_pad_encode(uint8_t *buf, uint32_t buf_size, uint32_t size, uint64_t commit_seq,
		 const struct spool_location *loc)
{
	ENG_ASSERT(buf != NULL);
	ENG_ASSERT(loc != NULL);
	ENG_ASSERT(loc->offset % SPOOL_RECORD_ALIGN == 0);
	if (!record_size_is_valid(SPOOL_RECORD_PAD, size) || size > buf_size) return 0;

	struct rec_writer w = {.buf = buf, .size = size, .used = 0};
	record_header_write(&w, SPOOL_RECORD_PAD, size, commit_seq, loc);
	writer_put_zeros(&w, size - w.used);
	ENG_ASSERT(w.used == size);
	record_seal(buf, size);
	ENG_DEBUG_ASSERT(record_is_valid_at(buf, size, loc));
	return size;
}

enum spool_decode_result
spool_record_check(const uint8_t *buf, size_t len, const struct spool_location *expect_loc,
		   struct spool_record_header *hdr)
{
	ENG_ASSERT(buf != NULL || len == 0);
	ENG_ASSERT(hdr != NULL);
	struct rec_header_raw raw;
	enum spool_decode_result result = record_screen(buf, len, &raw);
	if (result != SPOOL_DECODE_OK) return result;
	if (record_crc(buf, raw.size) != raw.crc) return SPOOL_DECODE_BAD_CRC;
	if (expect_loc != NULL && !location_equal(&raw.loc, expect_loc)) {
		return SPOOL_DECODE_BAD_PLACE;
	}
	result = record_body_validate(buf, &raw);
	if (result != SPOOL_DECODE_OK) return result;

	hdr->type = raw.type;
	hdr->version = raw.version;
	hdr->size = raw.size;
	hdr->commit_seq = raw.commit_seq;
	hdr->location = raw.loc;
	ENG_ASSERT(hdr->size <= len);
	return SPOOL_DECODE_OK;
}

/*
 * The decoders re-check the header and the whole structure (every length
 * against the bytes available), so they are memory-safe on any bytes, but
 * they do not recompute the CRC: the caller has run spool_record_check.
 * A record of another type is BAD_BODY.
 */
enum spool_decode_result
spool_message_decode(const uint8_t *buf, size_t len, struct spool_message *msg,
		     struct spool_span *rcpts, uint32_t rcpts_capacity)
{
	ENG_ASSERT(buf != NULL || len == 0);
	ENG_ASSERT(msg != NULL);
	struct rec_header_raw raw;
	enum spool_decode_result result = record_screen(buf, len, &raw);
	if (result != SPOOL_DECODE_OK) return result;
	if (raw.type != SPOOL_RECORD_MESSAGE) return SPOOL_DECODE_BAD_BODY;
	return message_parse(buf, raw.size, msg, rcpts, rcpts_capacity);
}

enum spool_decode_result
spool_outcome_decode(const uint8_t *buf, size_t len, struct spool_outcome *out)
{
	ENG_ASSERT(buf != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	struct rec_header_raw raw;
	enum spool_decode_result result = record_screen(buf, len, &raw);
	if (result != SPOOL_DECODE_OK) return result;
	if (raw.type != SPOOL_RECORD_OUTCOME) return SPOOL_DECODE_BAD_BODY;
	return outcome_parse(buf, raw.version, out);
}

/* ------------------------------------------------------------------ */
/* Queue ids and names.                                                */
/* ------------------------------------------------------------------ */

#define QUEUE_ID_LENGTH (SPOOL_QUEUE_ID_SIZE - 1)
#define QUEUE_ID_SHARD_DIGITS 2u
#define QUEUE_ID_SEGMENT_DIGITS 16u
#define QUEUE_ID_OFFSET_DIGITS 8u
_Static_assert(QUEUE_ID_SHARD_DIGITS + QUEUE_ID_SEGMENT_DIGITS + QUEUE_ID_OFFSET_DIGITS ==
		       QUEUE_ID_LENGTH,
	       "queue id is shard, segment id, offset");

static void
hex_put(char *out, uint64_t value, uint32_t digits)
{
	static const char hex_digits[16] = "0123456789abcdef";
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(digits >= 1u && digits <= 16u);
	for (uint32_t i = digits; i > 0; i--) {
		out[i - 1] = hex_digits[value & 0xfu];
		value >>= 4;
	}
	ENG_ASSERT(digits == 16u || value == 0); /* the value fitted */
}

/* Value of one hex digit, or -1. */
static int
hex_digit_value(char c)
{
	ENG_ASSERT(('a' - 'A') == 32);
	ENG_ASSERT('9' - '0' == 9);
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static bool
hex_get(const char *text, uint32_t digits, uint64_t *value)
{
	ENG_ASSERT(text != NULL);
	ENG_ASSERT(digits >= 1u && digits <= 16u);
	uint64_t v = 0;
	for (uint32_t i = 0; i < digits; i++) {
		int d = hex_digit_value(text[i]);
		if (d < 0) return false;
		v = v << 4 | (uint64_t)d;
	}
	*value = v;
	return true;
}

void
spool_queue_id_format(const struct spool_location *loc, char out[SPOOL_QUEUE_ID_SIZE])
{
	ENG_ASSERT(loc != NULL);
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(loc->shard <= 0xffu); /* two hex digits of shard */
	hex_put(out, loc->shard, QUEUE_ID_SHARD_DIGITS);
	hex_put(out + QUEUE_ID_SHARD_DIGITS, loc->segment_id, QUEUE_ID_SEGMENT_DIGITS);
	hex_put(out + QUEUE_ID_SHARD_DIGITS + QUEUE_ID_SEGMENT_DIGITS, loc->offset,
		QUEUE_ID_OFFSET_DIGITS);
	out[QUEUE_ID_LENGTH] = '\0';
}

bool
spool_queue_id_parse(const char *text, size_t text_len, struct spool_location *loc)
{
	ENG_ASSERT(text != NULL || text_len == 0);
	ENG_ASSERT(loc != NULL);
	if (text_len != QUEUE_ID_LENGTH) return false;
	uint64_t shard;
	uint64_t segment_id;
	uint64_t offset;
	if (!hex_get(text, QUEUE_ID_SHARD_DIGITS, &shard) ||
	    !hex_get(text + QUEUE_ID_SHARD_DIGITS, QUEUE_ID_SEGMENT_DIGITS, &segment_id) ||
	    !hex_get(text + QUEUE_ID_SHARD_DIGITS + QUEUE_ID_SEGMENT_DIGITS,
		     QUEUE_ID_OFFSET_DIGITS, &offset)) {
		return false;
	}
	ENG_ASSERT(shard <= 0xffu);
	ENG_ASSERT(offset <= UINT32_MAX);
	loc->shard = (uint16_t)shard;
	loc->segment_id = segment_id;
	loc->offset = (uint32_t)offset;
	return true;
}

const char *
spool_rcpt_state_name(enum spool_rcpt_state state)
{
	static const char *const names[] = {
		[SPOOL_RCPT_PENDING] = "pending",
		[SPOOL_RCPT_DELIVERED] = "delivered",
		[SPOOL_RCPT_BOUNCED] = "bounced",
		[SPOOL_RCPT_EXPIRED] = "expired",
		[SPOOL_RCPT_DEFERRED] = "deferred",
	};
	_Static_assert(ENG_ARRAY_COUNT(names) == SPOOL_RCPT_STATE_COUNT, "a name per state");
	ENG_ASSERT((unsigned)state < ENG_ARRAY_COUNT(names));
	ENG_ASSERT(names[state] != NULL);
	return names[state];
}

const char *
spool_decode_result_name(enum spool_decode_result result)
{
	static const char *const names[] = {
		[SPOOL_DECODE_OK] = "ok",
		[SPOOL_DECODE_ZERO] = "zero",
		[SPOOL_DECODE_SHORT] = "short",
		[SPOOL_DECODE_BAD_MAGIC] = "bad magic",
		[SPOOL_DECODE_BAD_VERSION] = "bad version",
		[SPOOL_DECODE_BAD_SIZE] = "bad size",
		[SPOOL_DECODE_BAD_CRC] = "bad crc",
		[SPOOL_DECODE_BAD_PLACE] = "bad place",
		[SPOOL_DECODE_BAD_BODY] = "bad body",
	};
	_Static_assert(ENG_ARRAY_COUNT(names) == SPOOL_DECODE_BAD_BODY + 1, "a name per result");
	ENG_ASSERT((unsigned)result < ENG_ARRAY_COUNT(names));
	ENG_ASSERT(names[result] != NULL);
	return names[result];
}
