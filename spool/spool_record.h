/*
 * spool_record.h - the on-disk record: encode into a buffer, decode with
 * explicit lengths and fixed bounds.
 *
 * Every record is self-describing and checked (docs/spool-format.md):
 *
 *   off size field
 *     0    4 magic "RMSP" (0x50534d52 little-endian)
 *     4    1 format version of this record type: MESSAGE and PAD 1,
 *            OUTCOME 2 written, 1 or 2 read (SPOOL_*_VERSION)
 *     5    1 type (enum spool_record_type)
 *     6    2 flags (0)
 *     8    4 record size in bytes, header and zero padding included,
 *            a multiple of SPOOL_RECORD_ALIGN
 *    12    4 CRC32C of the whole record with this field taken as zero
 *    16    8 commit sequence number (per log, strictly increasing)
 *    24    8 segment id the record was written to
 *    32    4 byte offset of the record in that segment
 *    36    2 shard that wrote it
 *    38    2 reserved (0)
 *    40      type-specific body
 *
 * MESSAGE body: creation time ns (8), expiry time ns (8), body size (4),
 * sender size (2), recipient count (2), sender bytes, then per recipient a
 * 2-byte size and its bytes, then the message in SMTP wire form (CRLF line
 * ends, dot-stuffed, ending with CRLF.CRLF), then zero padding.
 *
 * OUTCOME body (journal): message segment id (8), message offset (4),
 * message shard (2), state (2), recipient index (4), attempts (4; version
 * 1: reserved, 0), time ns (8): the next attempt for DEFERRED, the event
 * time otherwise. Version 1 records (no count) still decode, with
 * attempts SPOOL_ATTEMPTS_UNKNOWN; a version this decoder does not know
 * is BAD_VERSION, never guessed at.
 *
 * PAD body: nothing; fills a commit up to the next block boundary.
 *
 * The segment id and offset inside the record catch misdirected writes and
 * stale records of a recycled file. Decoding never trusts a length field
 * before checking it against the bytes available and the fixed bounds.
 * Decoded views point into the caller's buffer (borrowed, not copied).
 */
#ifndef SPOOL_RECORD_H
#define SPOOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPOOL_RECORD_MAGIC 0x50534d52u
/* Format versions, per record type (byte 4 of the header). MESSAGE and
 * PAD have only ever had version 1. OUTCOME version 2 carries the attempt
 * count in what version 1 reserved; both decode, version 2 is written. */
#define SPOOL_RECORD_VERSION 1	       /* MESSAGE and PAD */
#define SPOOL_OUTCOME_VERSION 2	       /* OUTCOME, as written */
#define SPOOL_OUTCOME_VERSION_MIN 1    /* oldest OUTCOME still decoded */
/* Attempts a recipient can count (an engine saturates there); a version-1
 * OUTCOME decodes to SPOOL_ATTEMPTS_UNKNOWN, which no encoder writes. */
#define SPOOL_ATTEMPTS_MAX 1000000u
#define SPOOL_ATTEMPTS_UNKNOWN UINT32_MAX
#define SPOOL_RECORD_ALIGN 8u
#define SPOOL_RECORD_HEADER_SIZE 40u
#define SPOOL_MESSAGE_FIXED_SIZE 24u
#define SPOOL_OUTCOME_BODY_SIZE 32u
#define SPOOL_OUTCOME_RECORD_SIZE (SPOOL_RECORD_HEADER_SIZE + SPOOL_OUTCOME_BODY_SIZE)

/* Bounds. Addresses: RFC 5321 4.5.3.1.3 path of 256 octets, doubled for
 * SMTPUTF8 and generous parameters. Recipients: engine cap per message.
 * Body: 64 MiB, well above any message_size_limit an ESP runs. */
#define SPOOL_ADDRESS_SIZE_MAX 512u
#define SPOOL_RECIPIENTS_MAX 10000u
#define SPOOL_BODY_SIZE_MAX (64u * 1024u * 1024u)
#define SPOOL_RECORD_SIZE_MAX                                                              \
	(SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE + SPOOL_ADDRESS_SIZE_MAX +     \
	 SPOOL_RECIPIENTS_MAX * (2u + SPOOL_ADDRESS_SIZE_MAX) + SPOOL_BODY_SIZE_MAX +       \
	 SPOOL_RECORD_ALIGN)

_Static_assert(SPOOL_OUTCOME_RECORD_SIZE % SPOOL_RECORD_ALIGN == 0, "outcome size aligned");
_Static_assert(SPOOL_RECORD_HEADER_SIZE % SPOOL_RECORD_ALIGN == 0, "header size aligned");
_Static_assert(SPOOL_RECIPIENTS_MAX <= UINT16_MAX, "recipient count is 16 bits");
_Static_assert(SPOOL_ADDRESS_SIZE_MAX <= UINT16_MAX, "address size is 16 bits");
_Static_assert(SPOOL_RECORD_SIZE_MAX < UINT32_MAX / 2, "record size fits 32 bits");

enum spool_record_type {
	SPOOL_RECORD_MESSAGE = 1,
	SPOOL_RECORD_OUTCOME = 2,
	SPOOL_RECORD_PAD = 3,
};

enum spool_rcpt_state {
	SPOOL_RCPT_PENDING = 0,	  /* never in a record: no outcome yet */
	SPOOL_RCPT_DELIVERED = 1, /* final */
	SPOOL_RCPT_BOUNCED = 2,	  /* final */
	SPOOL_RCPT_EXPIRED = 3,	  /* final */
	SPOOL_RCPT_DEFERRED = 4,  /* not final: next attempt time */
	SPOOL_RCPT_STATE_COUNT,
};

static inline bool
spool_rcpt_state_is_final(enum spool_rcpt_state state)
{
	return state == SPOOL_RCPT_DELIVERED || state == SPOOL_RCPT_BOUNCED ||
	       state == SPOOL_RCPT_EXPIRED;
}

const char *spool_rcpt_state_name(enum spool_rcpt_state state);

/* Where a record lives; together these are its queue id. */
struct spool_location {
	uint64_t segment_id;
	uint32_t offset;
	uint16_t shard;
};

/* Shards fit the queue id's two hex digits. */
#define SPOOL_SHARD_MAX 255u

/* Queue id text: 2 hex digits shard, 16 segment id, 8 offset. */
#define SPOOL_QUEUE_ID_SIZE 27 /* 26 characters and a NUL */
void spool_queue_id_format(const struct spool_location *loc, char out[SPOOL_QUEUE_ID_SIZE]);
/* Parses (ptr, len); returns true and fills loc on a well-formed id. */
bool spool_queue_id_parse(const char *text, size_t text_len, struct spool_location *loc);

/* A byte span borrowed from someone else's buffer. */
struct spool_span {
	const uint8_t *data;
	uint32_t size;
};

/* Input to encode, and the view decode returns. Decode fills rcpts[] up to
 * rcpt_count; the caller provides the array (SPOOL_RECIPIENTS_MAX long) or
 * asks only for the count with rcpts == NULL. */
struct spool_message {
	uint64_t created_ns;
	uint64_t expires_ns;
	struct spool_span sender;
	uint32_t rcpt_count;
	const struct spool_span *rcpts;
	struct spool_span body;
};

struct spool_outcome {
	struct spool_location message;
	uint32_t rcpt_index;
	uint16_t state; /* enum spool_rcpt_state */
	/* Delivery attempts counted for this recipient so far, this record's
	 * included (0 ... SPOOL_ATTEMPTS_MAX); SPOOL_ATTEMPTS_UNKNOWN when
	 * decoded from a version-1 record. */
	uint32_t attempts;
	uint64_t time_ns;
};

/* The header fields common to every record. */
struct spool_record_header {
	uint8_t type;
	uint8_t version; /* of its type: see SPOOL_RECORD_VERSION */
	uint32_t size;
	uint64_t commit_seq;
	struct spool_location location;
};

/* Encoded size of a message record (aligned), or 0 if it breaks a bound. */
uint32_t spool_message_record_size(const struct spool_message *msg);

/*
 * Encode a record at buf (buf_size bytes available), for the given header
 * fields (type and size are filled in). Returns the record size, or 0 if
 * it does not fit or breaks a bound.
 */
uint32_t spool_message_encode(uint8_t *buf, uint32_t buf_size, const struct spool_message *msg,
			      uint64_t commit_seq, const struct spool_location *loc);
uint32_t spool_outcome_encode(uint8_t *buf, uint32_t buf_size, const struct spool_outcome *out,
			      uint64_t commit_seq, const struct spool_location *loc);
/* A PAD record of exactly size bytes (>= header size, aligned). */
uint32_t spool_pad_encode(uint8_t *buf, uint32_t buf_size, uint32_t size, uint64_t commit_seq,
			  const struct spool_location *loc);

enum spool_decode_result {
	SPOOL_DECODE_OK = 0,
	SPOOL_DECODE_ZERO,	/* the bytes at this place are all zero: unwritten */
	SPOOL_DECODE_SHORT,	/* the record runs past the bytes available */
	SPOOL_DECODE_BAD_MAGIC,
	SPOOL_DECODE_BAD_VERSION,
	SPOOL_DECODE_BAD_SIZE,
	SPOOL_DECODE_BAD_CRC,
	SPOOL_DECODE_BAD_PLACE, /* segment id / offset / shard not where it lies */
	SPOOL_DECODE_BAD_BODY,	/* type-specific fields break a bound */
};

const char *spool_decode_result_name(enum spool_decode_result result);

/*
 * Check the record at buf (len bytes available). expect_loc, if not NULL,
 * is where the record lies: segment id, offset and shard must match.
 * On OK fills hdr. Never reads past buf + len.
 */
enum spool_decode_result spool_record_check(const uint8_t *buf, size_t len,
					    const struct spool_location *expect_loc,
					    struct spool_record_header *hdr);

/* Decode the body of a checked MESSAGE record. rcpts may be NULL; if not,
 * it holds rcpts_capacity entries and must be >= the record's count. */
enum spool_decode_result spool_message_decode(const uint8_t *buf, size_t len,
					      struct spool_message *msg,
					      struct spool_span *rcpts, uint32_t rcpts_capacity);
enum spool_decode_result spool_outcome_decode(const uint8_t *buf, size_t len,
					      struct spool_outcome *out);

#endif /* SPOOL_RECORD_H */
