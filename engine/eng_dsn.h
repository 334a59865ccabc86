/*
 * eng_dsn.h - delivery status notifications: the RFC 3464 report sent to
 * the envelope sender for recipients of one message that bounced or
 * expired, built in SMTP wire form so the spool stores it as a new
 * MESSAGE from the null sender <> as it is.
 *
 * Layout (docs/bounces.md has an example):
 *
 *   From: Mail Delivery System <MAILER-DAEMON@host>     top-level headers,
 *   To: <sender>, Subject, Date, Message-ID,             RFC 5322, RFC 3834
 *   Auto-Submitted: auto-replied, MIME-Version,
 *   Content-Type: multipart/report; report-type=delivery-status; boundary
 *   1. text/plain: what happened, one paragraph per recipient
 *   2. message/delivery-status: Reporting-MTA, X-Ringmail-Queue-ID,
 *      [Original-Envelope-Id], Arrival-Date; then per recipient
 *      Final-Recipient, [Original-Recipient], Action: failed, Status,
 *      [Remote-MTA], [Diagnostic-Code: smtp; ...], [Last-Attempt-Date]
 *   3. text/rfc822-headers: the original headers (RET=HDRS behaviour)
 *
 * Invariants of the output: only CRLF line ends; every line <= 998 bytes
 * (RFC 5322 2.1.1) and folded at 78 where a space allows; 7-bit ASCII;
 * dot-stuffed (RFC 5321 4.5.2); ends with CRLF.CRLF. Nothing taken from
 * the peer or the original message can add a header, a MIME part or a
 * line end: reply text and addresses have control bytes turned into
 * spaces (text) or '?' (single-line values), bytes >= 0x80 into '?', and
 * are cut at fixed bounds; an original header line that contains the
 * boundary string is left out.
 *
 * No DSN for a message from the null sender (RFC 5321 6.1, RFC 3464 2):
 * eng_dsn_build returns ENG_DSN_NULL_SENDER and writes nothing.
 *
 * XXX: RET=FULL (the whole original message) and NOTIFY/ENVID/ORCPT
 * storage belong to the injection side; this builder takes ENVID and
 * ORCPT when the caller has them and always attaches headers only.
 *
 * Ownership: every input is borrowed until return; out is the caller's.
 * No allocation, no clock (times are ns since the epoch, passed in), no
 * NUL terminators needed.
 */
#ifndef ENG_DSN_H
#define ENG_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_bounce.h"

/* Bounds, in input bytes. */
#define ENG_DSN_ADDRESS_SIZE_MAX 512u	      /* SPOOL_ADDRESS_SIZE_MAX */
#define ENG_DSN_HOST_SIZE_MAX 255u	      /* RFC 1035 2.3.4 name length */
#define ENG_DSN_ENVID_SIZE_MAX 100u	      /* RFC 3461 4.4 */
#define ENG_DSN_QUEUE_ID_SIZE_MAX 64u
#define ENG_DSN_DIAGNOSTIC_SIZE_MAX 512u     /* reply text kept: one RFC 5321 reply line */
#define ENG_DSN_HEADERS_SIZE_MAX (64u * 1024u) /* original headers attached */
#define ENG_DSN_LINE_SIZE_MAX 998u	      /* RFC 5322 2.1.1, without CRLF */
#define ENG_DSN_FOLD_WIDTH 78u		      /* RFC 5322 2.1.1 SHOULD */

_Static_assert(ENG_DSN_ADDRESS_SIZE_MAX + ENG_DSN_HOST_SIZE_MAX + 64u < ENG_DSN_LINE_SIZE_MAX,
	       "an address and a host fit one line with their words");
_Static_assert(ENG_DSN_DIAGNOSTIC_SIZE_MAX + 64u < ENG_DSN_LINE_SIZE_MAX,
	       "an unfoldable diagnostic fits one line");

/* One failed recipient. */
struct eng_dsn_rcpt {
	const char *addr; /* envelope recipient: Final-Recipient */
	size_t addr_len;
	const char *orcpt; /* ORCPT address (decoded), NULL if none */
	size_t orcpt_len;
	bool is_expired;	    /* gave up at the queue lifetime */
	struct eng_enhanced status; /* Status:; status_class 0 = derive (eng_dsn_status) */
	uint16_t reply_code;	    /* last remote reply; 0 if there was none */
	struct eng_enhanced reply_enhanced;
	const char *reply_text; /* its text after code and enhanced status */
	size_t reply_text_len;
	const char *remote_mta; /* MX host name, NULL if none was reached */
	size_t remote_mta_len;
	uint64_t last_attempt_ns; /* 0: Last-Attempt-Date left out */
};

/* The original message and who reports. */
struct eng_dsn_message {
	const char *hostname; /* this MTA: Reporting-MTA, From, Message-ID */
	size_t hostname_len;
	const char *sender; /* original envelope sender; length 0 = null sender */
	size_t sender_len;
	const char *queue_id; /* original queue id */
	size_t queue_id_len;
	const char *envid; /* ENVID, NULL if none */
	size_t envid_len;
	uint64_t arrival_ns; /* Arrival-Date */
	uint64_t now_ns;     /* Date, Message-ID and boundary */
	const uint8_t *body; /* original message in wire form (headers are taken) */
	size_t body_len;
	const struct eng_dsn_rcpt *rcpts;
	uint32_t rcpt_count; /* 1..SPOOL_RECIPIENTS_MAX */
};

enum eng_dsn_result {
	ENG_DSN_OK = 0,	     /* *out_len bytes written */
	ENG_DSN_NULL_SENDER, /* no DSN for a message from <>; nothing written */
	ENG_DSN_TOO_SMALL,   /* *out_len is the size needed; out holds a prefix */
};

/* A static name for a result, for logs. */
const char *eng_dsn_result_name(enum eng_dsn_result result);

/*
 * Build the DSN for msg into out (out_size bytes; out may be NULL with
 * out_size 0 to ask for the size). Returns ENG_DSN_OK with *out_len the
 * DSN's length, ENG_DSN_TOO_SMALL with *out_len the size needed, or
 * ENG_DSN_NULL_SENDER. The same input always gives the same bytes.
 */
ENG_WARN_UNUSED enum eng_dsn_result eng_dsn_build(const struct eng_dsn_message *msg,
						  uint8_t *out, size_t out_size,
						  size_t *out_len);

/*
 * The Status a recipient's report carries: rcpt->status when valid (class
 * 4 or 5); else 4.4.7 for an expired recipient; else the reply's enhanced
 * status when its class matches the reply code's; else 4.0.0 for a 4xx
 * reply and 5.0.0 otherwise.
 */
struct eng_enhanced eng_dsn_status(const struct eng_dsn_rcpt *rcpt);

/* "Thu, 01 Jan 1970 00:00:00 +0000" and a NUL. */
#define ENG_DSN_DATE_SIZE 32u
/* RFC 5322 3.3 date-time in UTC; returns its length (31). */
size_t eng_dsn_format_date(uint64_t time_ns, char out[ENG_DSN_DATE_SIZE]);

#endif /* ENG_DSN_H */
