/*
 * smtp_ehlo.h - SMTP service extensions offered in an EHLO reply
 * (RFC 5321 4.1.1.1 and 2.2).
 *
 * The first line of an EHLO reply is the server's name and greeting; each
 * later line is "keyword [SP parameters]". Keywords are matched without
 * regard to case (RFC 5321 2.4). Unknown keywords and malformed lines are
 * ignored: a capability is only used when it parsed cleanly, so a broken
 * line can only make the client more conservative.
 *
 * Extensions recognised: PIPELINING (RFC 2920), SIZE (RFC 1870),
 * 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES
 * (RFC 2034), STARTTLS (RFC 3207), CHUNKING (RFC 3030), DSN (RFC 3461),
 * AUTH (RFC 4954) with the PLAIN and LOGIN mechanisms, also in the old
 * "AUTH=PLAIN LOGIN" spelling some servers still send.
 *
 * Bounds: a keyword longer than SMTP_EHLO_KEYWORD_MAX is ignored; at most
 * SMTP_EHLO_PARAMS_MAX parameters of a line are looked at; SIZE takes at
 * most 20 digits and saturates at UINT64_MAX.
 *
 * Pure: no I/O, no allocation. Inputs are borrowed until return.
 */
#ifndef SMTP_EHLO_H
#define SMTP_EHLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp_reply.h"

#define SMTP_EHLO_KEYWORD_MAX 64u
#define SMTP_EHLO_PARAMS_MAX 32u

enum smtp_extension {
	SMTP_EXT_PIPELINING = 1u << 0,
	SMTP_EXT_SIZE = 1u << 1,
	SMTP_EXT_8BITMIME = 1u << 2,
	SMTP_EXT_SMTPUTF8 = 1u << 3,
	SMTP_EXT_ENHANCEDSTATUSCODES = 1u << 4,
	SMTP_EXT_STARTTLS = 1u << 5,
	SMTP_EXT_CHUNKING = 1u << 6,
	SMTP_EXT_DSN = 1u << 7,
	SMTP_EXT_AUTH = 1u << 8,
};

enum smtp_auth_mechanism {
	SMTP_AUTH_PLAIN = 1u << 0,
	SMTP_AUTH_LOGIN = 1u << 1,
};

struct smtp_ehlo_caps {
	uint32_t extensions;	  /* enum smtp_extension bits */
	uint64_t size_max;	  /* SIZE value in bytes; 0: no limit given */
	uint32_t auth_mechanisms; /* enum smtp_auth_mechanism bits */
};

/* Clear caps (no extensions: what HELO gets). */
void smtp_ehlo_caps_init(struct smtp_ehlo_caps *caps);

/* Fill caps from a complete 2xx EHLO reply: line 0 is skipped, every other
 * line goes through smtp_ehlo_parse_line. caps is cleared first. */
void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_ehlo_caps *caps);

/* Add what one EHLO line (text after "250-", no CRLF) offers to caps. */
void smtp_ehlo_parse_line(const char *ptr, size_t len, struct smtp_ehlo_caps *caps);

/* True when every bit of extension is offered. */
bool smtp_ehlo_has(const struct smtp_ehlo_caps *caps, uint32_t extension);

#endif /* SMTP_EHLO_H */
