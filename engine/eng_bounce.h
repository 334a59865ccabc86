/*
 * eng_bounce.h - bounce classification: which kind of failure a remote
 * reply (or an engine-made failure) is, for the delivery log, reports and
 * suppression lists.
 *
 * Classification is data, not code (reliability.md 5.3): an ordered list
 * of rules, first match wins, site rules before the built-in ones. A rule
 * is a conjunction of up to three conditions and a category:
 *
 *   [code] [enhanced] [/text/] -> category          e.g.
 *   5xx *.1.1 -> bad-mailbox
 *   5.7.1 /spam/ -> spam-related
 *   /mailbox full/ -> quota
 *
 * - code: a reply code "550", or with trailing wildcards "55x", "5xx".
 * - enhanced: an RFC 3463 status "5.7.1"; any part may be "*" ("*.2.2",
 *   "5.7.*"). It only matches a reply that carried an enhanced status.
 * - text: a case-insensitive substring of the reply text (ASCII case
 *   folding; runs of blanks and line breaks count as one space). Not a
 *   regex: no escapes, the text runs to the last '/' before "->".
 * - "*" alone matches everything (a site catch-all replaces the defaults).
 *
 * The built-in rules are eng_bounce_builtin_rules below, in that same
 * syntax; docs/bounces.md reproduces them verbatim (a test checks) and
 * explains the order. When no rule matches, a 4xx reply or no reply at
 * all (code 0: connection failure, timeout) is "transient", anything else
 * "other". A code outside 400..599 (other than 0) is not a failure and is
 * "other" without looking at any rule.
 *
 * Classification is for reporting. It does not decide what happens to
 * the message: a 4xx is retried and a 5xx bounced whatever the category
 * (RFC 5321 4.2.1, act on the code).
 *
 * Ownership and cost: a table lives in caller memory (_init in place, no
 * allocation, ~50 KiB). Classifying reads the table and a bounded prefix
 * of the text (ENG_BOUNCE_SCAN_SIZE_MAX bytes), allocates nothing, uses
 * about 4 KiB of stack, never depends on a NUL terminator, and may run on
 * any number of threads at once against one table. Loading writes the
 * table, so it must not run while the table is being read: a reload
 * (SIGHUP) loads into a spare table and publishes it. A load either
 * replaces all the site rules or, on error, leaves the table unchanged.
 *
 * References: RFC 3463 and the IANA enhanced status code registry
 * (including RFC 7372 X.7.20-X.7.29 and RFC 7505 X.1.10, X.7.27), RFC 7504
 * (521, 556), RFC 5321 4.2.
 */
#ifndef ENG_BOUNCE_H
#define ENG_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_common.h"

/* RFC 3463 class.subject.detail; status_class 0 means "none". Same layout
 * as smtp/'s struct smtp_enhanced_status. */
struct eng_enhanced {
	uint8_t status_class; /* 0, 2, 4 or 5 */
	uint16_t subject;     /* 0..999 */
	uint16_t detail;      /* 0..999 */
};

/* "5.123.456" and a NUL. */
#define ENG_ENHANCED_TEXT_SIZE 12u

/* True for class 2, 4 or 5 with subject and detail <= 999. */
bool eng_enhanced_is_valid(struct eng_enhanced status);
/* Writes "c.s.d" and a NUL into out; returns its length (0 and "" when
 * status is not valid). */
size_t eng_enhanced_format(struct eng_enhanced status, char out[ENG_ENHANCED_TEXT_SIZE]);

enum eng_bounce_category {
	ENG_BOUNCE_OTHER = 0,	      /* "other": nothing more specific */
	ENG_BOUNCE_BAD_MAILBOX,	      /* recipient does not exist */
	ENG_BOUNCE_BAD_DOMAIN,	      /* recipient domain does not exist or takes no mail */
	ENG_BOUNCE_INACTIVE_MAILBOX,  /* disabled, suspended, moved */
	ENG_BOUNCE_INVALID_SENDER,    /* our envelope sender was refused */
	ENG_BOUNCE_QUOTA,	      /* mailbox full, over quota */
	ENG_BOUNCE_MESSAGE_TOO_LARGE, /* size limit */
	ENG_BOUNCE_SPAM_RELATED,      /* spam filter, blocklist, IP/domain reputation */
	ENG_BOUNCE_CONTENT_RELATED,   /* virus, attachment, malformed content */
	ENG_BOUNCE_POLICY_RELATED,    /* authentication (SPF/DKIM/DMARC), local policy */
	ENG_BOUNCE_RELAYING_DENIED,   /* the host is not a relay for the domain */
	ENG_BOUNCE_ROUTING,	      /* unroutable, loops, no answer */
	ENG_BOUNCE_PROTOCOL,	      /* syntax, bad sequence, unsupported command */
	ENG_BOUNCE_MESSAGE_EXPIRED,   /* gave up after max_queue_lifetime */
	ENG_BOUNCE_TRANSIENT,	      /* temporary, will be retried */
	ENG_BOUNCE_CATEGORY_COUNT,
};

/* "bad-mailbox", ...; a static string. */
const char *eng_bounce_category_name(enum eng_bounce_category category);
/* Parse a name (ptr, len), exact and case-sensitive. */
bool eng_bounce_category_parse(const char *name, size_t name_len,
			       enum eng_bounce_category *category);

/* Bounds, each with where it comes from. */
#define ENG_BOUNCE_TEXT_SIZE_MAX 96u	     /* one rule's /text/: a phrase, not a paragraph */
#define ENG_BOUNCE_SITE_RULES_MAX 256u	     /* rules in one override file */
#define ENG_BOUNCE_BUILTIN_RULES_MAX 192u   /* room for eng_bounce_builtin_rules */
#define ENG_BOUNCE_LINE_SIZE_MAX 512u	     /* one line of an override file */
#define ENG_BOUNCE_FILE_SIZE_MAX (256u * 1024u) /* an override file */
/* Reply text examined: four RFC 5321 4.5.3.1.5 reply lines. */
#define ENG_BOUNCE_SCAN_SIZE_MAX 2048u
#define ENG_BOUNCE_ERROR_SIZE 160u

_Static_assert(ENG_BOUNCE_TEXT_SIZE_MAX < ENG_BOUNCE_LINE_SIZE_MAX, "a text fits a line");
_Static_assert(ENG_BOUNCE_TEXT_SIZE_MAX <= UINT8_MAX, "text length is 8 bits");
_Static_assert(ENG_BOUNCE_SCAN_SIZE_MAX >= 512u, "one full reply line is examined");

/* Matches any value of an enhanced-status part. */
#define ENG_BOUNCE_ANY UINT16_MAX

/* One parsed rule. Text is stored lowercased with blanks collapsed. */
struct eng_bounce_rule {
	uint16_t code_min; /* code condition: [code_min, code_max]; 0, 0 = none */
	uint16_t code_max;
	uint16_t status_class; /* enhanced condition, parts may be ENG_BOUNCE_ANY */
	uint16_t subject;
	uint16_t detail;
	bool has_enhanced;
	uint8_t category; /* enum eng_bounce_category */
	uint8_t text_len; /* 0 = no text condition */
	uint32_t line;	  /* line number in its source text */
	char text[ENG_BOUNCE_TEXT_SIZE_MAX];
};

struct eng_bounce_table {
	uint32_t site_count;
	uint32_t builtin_count;
	struct eng_bounce_rule site[ENG_BOUNCE_SITE_RULES_MAX];
	struct eng_bounce_rule builtin[ENG_BOUNCE_BUILTIN_RULES_MAX];
};

/* The built-in rules in override-file syntax, NUL-terminated. */
extern const char eng_bounce_builtin_rules[];

/* Which rule decided, for logs and for "why was this classified so". */
enum eng_bounce_source {
	ENG_BOUNCE_SOURCE_SITE = 0,  /* line is a line of the override text */
	ENG_BOUNCE_SOURCE_BUILTIN,   /* line is a line of eng_bounce_builtin_rules */
	ENG_BOUNCE_SOURCE_FALLBACK,  /* no rule matched; line is 0 */
	ENG_BOUNCE_SOURCE_NOT_FAILURE, /* code outside 400..599 and not 0; line is 0 */
};

struct eng_bounce_match {
	enum eng_bounce_category category;
	enum eng_bounce_source source;
	uint32_t line;
};

/* A load error: 1-based line (0 for the file as a whole) and a message. */
struct eng_bounce_error {
	uint32_t line;
	char message[ENG_BOUNCE_ERROR_SIZE];
};

/* Fill table (caller memory) with the built-in rules and no site rules. */
void eng_bounce_table_init(struct eng_bounce_table *table);

/*
 * Replace the site rules by those parsed from (text, text_len), an
 * override file's bytes. Returns 0, or -EINVAL with err filled (line and
 * message) on the first bad line, or -E2BIG for a text over
 * ENG_BOUNCE_FILE_SIZE_MAX or more than ENG_BOUNCE_SITE_RULES_MAX rules.
 * On error the table is unchanged. Both text and err are borrowed until
 * return. Start-up and reload only (not the hot path).
 */
ENG_WARN_UNUSED int eng_bounce_table_load(struct eng_bounce_table *table, const char *text,
					  size_t text_len, struct eng_bounce_error *err);

/*
 * Read the override file at path (at most ENG_BOUNCE_FILE_SIZE_MAX bytes)
 * and load it as eng_bounce_table_load does. Returns 0, a negative errno
 * from open/read (err->line 0, message names the path), or the load
 * errors. Allocates a buffer for the file's bytes while it runs.
 */
ENG_WARN_UNUSED int eng_bounce_table_load_file(struct eng_bounce_table *table, const char *path,
					       struct eng_bounce_error *err);

/*
 * Classify a failure. code: the reply code, 0 when there was no reply.
 * enhanced: its enhanced status (status_class 0 when none). text: the
 * reply text (ptr, len), any bytes, not NUL-terminated; NULL only with
 * len 0. match, if not NULL, says which rule decided. Returns the category.
 */
enum eng_bounce_category eng_bounce_classify(const struct eng_bounce_table *table,
					     uint16_t code, struct eng_enhanced enhanced,
					     const char *text, size_t text_len,
					     struct eng_bounce_match *match);

#endif /* ENG_BOUNCE_H */
