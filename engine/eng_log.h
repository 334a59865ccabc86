/*
 * eng_log.h - the delivery log line: one event as one JSON object on one
 * line, formatted into a caller buffer. No I/O here: the engine writes
 * the bytes through its ring (docs/bounces.md has the schema).
 *
 *   {"type":"Bounce","time":"2024-05-01T12:00:00.123Z","queue_id":"...",
 *    "sender":"...","recipient":"...","domain":"...","mx_host":"...",
 *    "mx_ip":"...","attempt":1,"code":550,"enhanced":"5.1.1","text":"...",
 *    "category":"bad-mailbox","timings":{"queued_ms":12,"connect_ms":3,
 *    "transaction_ms":40},"tls":{"used":true,"version":"TLSv1.3",
 *    "cipher":"...","verified":false}}\n
 *
 * Every key is always present, in this order, so consumers never branch
 * on a missing key: what does not apply is null. Strings are byte spans
 * (peer data: reply text, addresses), escaped per RFC 8259 section 7;
 * valid UTF-8 (RFC 3629) passes through, each byte of an invalid sequence
 * becomes \u00XX, control bytes and DEL are escaped. Each string is cut
 * at a bound (ENG_LOG_*_SIZE_MAX input bytes, never inside a valid UTF-8
 * sequence), so a line never exceeds ENG_LOG_LINE_SIZE_MAX.
 *
 * Ownership: every pointer in a record is borrowed until return; out is
 * the caller's. Nothing allocates, nothing reads a clock (times come in as
 * ns since the epoch, CLOCK_REALTIME), nothing needs a NUL terminator.
 */
#ifndef ENG_LOG_H
#define ENG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_bounce.h"

enum eng_log_event {
	ENG_LOG_RECEPTION = 0,	   /* "Reception": accepted and durable */
	ENG_LOG_DELIVERY,	   /* "Delivery": 2xx from the remote; final */
	ENG_LOG_TRANSIENT_FAILURE, /* "TransientFailure": deferred, will retry */
	ENG_LOG_BOUNCE,		   /* "Bounce": permanent failure; final */
	ENG_LOG_EXPIRATION,	   /* "Expiration": gave up at the queue lifetime; final */
	ENG_LOG_EVENT_COUNT,
};

/* "Reception", "Delivery", ...: a static string. */
const char *eng_log_event_name(enum eng_log_event event);

/* Bounds on what one line carries, in input bytes per field. */
#define ENG_LOG_FIELD_SIZE_MAX 512u	/* addresses (SPOOL_ADDRESS_SIZE_MAX), hosts, ids */
#define ENG_LOG_TEXT_SIZE_MAX 1024u	/* reply text: two RFC 5321 reply lines */
#define ENG_LOG_TLS_FIELD_SIZE_MAX 64u /* "TLSv1.3", cipher suite names */
#define ENG_LOG_LINE_SIZE_MAX 32768u

/* Worst case: every byte escaped as \u00XX (6 bytes), two quotes each. */
#define ENG_LOG_ESCAPED_SIZE(n) ((n) * 6u + 2u)
_Static_assert(6u * ENG_LOG_ESCAPED_SIZE(ENG_LOG_FIELD_SIZE_MAX) +
			       ENG_LOG_ESCAPED_SIZE(ENG_LOG_TEXT_SIZE_MAX) +
			       2u * ENG_LOG_ESCAPED_SIZE(ENG_LOG_TLS_FIELD_SIZE_MAX) + 1024u <=
		       ENG_LOG_LINE_SIZE_MAX,
	       "a line with every field at its bound fits, with 1 KiB for keys and numbers");

/* A duration that was not measured: written as null. */
#define ENG_LOG_MS_NONE UINT64_MAX

/* TLS state of the connection; strings may be NULL (null). */
struct eng_log_tls {
	bool used;
	bool verified;
	const char *version;
	size_t version_len;
	const char *cipher;
	size_t cipher_len;
};

/*
 * One event. A NULL string is written as null; an empty one as "" (the
 * null sender is sender "" with length 0). code 0 is null; an enhanced
 * status that is not valid is null; category is written for
 * TransientFailure, Bounce and Expiration and is null for the others.
 */
struct eng_log_record {
	enum eng_log_event event;
	uint64_t time_ns;
	const char *queue_id;
	size_t queue_id_len;
	const char *sender;
	size_t sender_len;
	const char *recipient;
	size_t recipient_len;
	const char *domain;
	size_t domain_len;
	const char *mx_host;
	size_t mx_host_len;
	const char *mx_ip;
	size_t mx_ip_len;
	uint32_t attempt; /* 1 for the first delivery attempt; 0 at reception */
	uint16_t code;
	struct eng_enhanced enhanced;
	const char *text;
	size_t text_len;
	enum eng_bounce_category category;
	uint64_t queued_ms; /* ENG_LOG_MS_NONE: null */
	uint64_t connect_ms;
	uint64_t transaction_ms;
	const struct eng_log_tls *tls; /* NULL: "tls":null */
};

/*
 * Format rec as one JSON object and a '\n' into out (out_size bytes).
 * Returns the line's length. If that is more than out_size, out holds a
 * prefix (nothing past out_size is written) and the caller needs a buffer
 * of the returned size; ENG_LOG_LINE_SIZE_MAX is always enough. No NUL is
 * written.
 */
size_t eng_log_format(const struct eng_log_record *rec, char *out, size_t out_size);

/*
 * Write (src, src_len) as one quoted JSON string into out (out_size
 * bytes), reading at most src_max input bytes (cut before a UTF-8
 * sequence that would cross it). Returns the bytes the string takes; if
 * more than out_size, only a prefix was written.
 */
size_t eng_log_json_string(const char *src, size_t src_len, size_t src_max, char *out,
			   size_t out_size);

/* A UTC calendar time. */
struct eng_utc {
	uint32_t year;	      /* 1970.. */
	uint32_t month;	      /* 1..12 */
	uint32_t day;	      /* 1..31 */
	uint32_t hour;	      /* 0..23 */
	uint32_t minute;      /* 0..59 */
	uint32_t second;      /* 0..59 */
	uint32_t millisecond; /* 0..999 */
	uint32_t weekday;     /* 0 Sunday .. 6 Saturday */
};

/* Split ns since the epoch into a UTC calendar time (proleptic Gregorian;
 * no leap seconds, as CLOCK_REALTIME). Pure arithmetic: no libc, no TZ. */
void eng_utc_from_ns(uint64_t time_ns, struct eng_utc *out);

/* "2024-05-01T12:00:00.123Z" and a NUL. */
#define ENG_LOG_TIME_SIZE 25u
/* ISO 8601 UTC with milliseconds; returns the length (24). */
size_t eng_log_format_time(uint64_t time_ns, char out[ENG_LOG_TIME_SIZE]);

#endif /* ENG_LOG_H */
