/*
 * eng_bounce.c - bounce classification rules: parser and matcher (see
 * eng_bounce.h for the rule syntax and docs/bounces.md for the order of
 * the built-in rules and why).
 *
 * The parser is bounded: it walks (ptr, len) with memchr, never needs a
 * NUL, refuses lines over ENG_BOUNCE_LINE_SIZE_MAX and files over
 * ENG_BOUNCE_FILE_SIZE_MAX, and reports the first error with its line.
 * Loading is two passes over the same text (check, then store), so a bad
 * file leaves the previous site rules in force.
 *
 * The matcher normalizes the reply text lazily, once, into a stack buffer
 * (lowercase ASCII, control bytes as spaces, blank runs collapsed, one
 * space added at each end so "/ rbl /" matches a whole word) and runs
 * memmem per text rule. Rule texts are normalized the same way at load.
 */
#include "engine/eng_bounce.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
const char eng_bounce_builtin_rules[] =
	"# ringmail built-in bounce rules: first match wins, site rules first.\n"
	"#\n"
	"# 1. Enhanced status codes with one clear meaning (RFC 3463, RFC 7372,\n"
	"#    RFC 7505, IANA registry). 4.4.7 is also what expiry reports.\n"
	"*.4.7 -> message-expired\n"
	"# Microsoft 365 answers unknown recipients with\n"
	"# \"550 5.1.10 RESOLVER.ADR.RecipientNotFound\"; elsewhere X.1.10 is null MX.\n"
	"5xx *.1.10 /recipientnotfound/ -> bad-mailbox\n"
	"5xx *.1.10 /recipient not found/ -> bad-mailbox\n"
	"5xx *.1.10 -> bad-domain\n"
	"5xx *.1.1 -> bad-mailbox\n"
	"5xx *.1.2 -> bad-domain\n"
	"5xx *.1.3 -> bad-mailbox\n"
	"5xx *.1.4 -> bad-mailbox\n"
	"5xx *.1.6 -> inactive-mailbox\n"
	"5xx *.1.7 -> invalid-sender\n"
	"5xx *.1.8 -> invalid-sender\n"
	"5xx *.2.1 -> inactive-mailbox\n"
	"*.2.2 -> quota\n"
	"5xx *.2.3 -> message-too-large\n"
	"5xx *.3.4 -> message-too-large\n"
	"# Microsoft 365 directory-based edge blocking of unknown recipients:\n"
	"# \"550 5.4.1 Recipient address rejected: Access denied\".\n"
	"5xx *.4.1 /recipient address rejected/ -> bad-mailbox\n"
	"5xx *.7.13 -> inactive-mailbox\n"
	"5xx *.7.17 -> inactive-mailbox\n"
	"5xx *.7.18 -> bad-domain\n"
	"5xx *.7.20 -> policy-related\n"
	"5xx *.7.21 -> policy-related\n"
	"5xx *.7.22 -> policy-related\n"
	"5xx *.7.23 -> policy-related\n"
	"5xx *.7.24 -> policy-related\n"
	"5xx *.7.25 -> policy-related\n"
	"5xx *.7.26 -> policy-related\n"
	"5xx *.7.27 -> invalid-sender\n"
	"5xx *.7.29 -> policy-related\n"
	"5xx *.7.30 -> policy-related\n"
	"#\n"
	"# 2. A full mailbox, temporary or permanent, often without enhanced status.\n"
	"/over quota/ -> quota\n"
	"/quota exceeded/ -> quota\n"
	"/quotaexceeded/ -> quota\n"
	"/exceeded storage allocation/ -> quota\n"
	"/mailbox full/ -> quota\n"
	"/mailbox is full/ -> quota\n"
	"/mailbox size limit/ -> quota\n"
	"#\n"
	"# 3. Every other temporary failure.\n"
	"4xx -> transient\n"
	"#\n"
	"# 4. Permanent failures by reply text, most specific first.\n"
	"# The sender was refused, not the recipient.\n"
	"/sender address rejected/ -> invalid-sender\n"
	"/sender rejected/ -> invalid-sender\n"
	"/sender verify failed/ -> invalid-sender\n"
	"/sender verification failed/ -> invalid-sender\n"
	"/domain of sender address/ -> invalid-sender\n"
	"# Not a relay for that domain.\n"
	"/relay access denied/ -> relaying-denied\n"
	"/relaying denied/ -> relaying-denied\n"
	"/unable to relay/ -> relaying-denied\n"
	"/relay not permitted/ -> relaying-denied\n"
	"/not permitted to relay/ -> relaying-denied\n"
	"/we do not relay/ -> relaying-denied\n"
	"/allowed rcpthosts/ -> relaying-denied\n"
	"# Mailboxes that exist but take no mail.\n"
	"/mailbox disabled/ -> inactive-mailbox\n"
	"/mailbox is disabled/ -> inactive-mailbox\n"
	"/account disabled/ -> inactive-mailbox\n"
	"/account is disabled/ -> inactive-mailbox\n"
	"/account has been disabled/ -> inactive-mailbox\n"
	"/account is suspended/ -> inactive-mailbox\n"
	"/account has been suspended/ -> inactive-mailbox\n"
	"/no longer active/ -> inactive-mailbox\n"
	"/deactivated/ -> inactive-mailbox\n"
	"/inactive/ -> inactive-mailbox\n"
	"# Domains that do not exist or take no mail (RFC 7504 texts).\n"
	"/host unknown/ -> bad-domain\n"
	"/host not found/ -> bad-domain\n"
	"/domain not found/ -> bad-domain\n"
	"/no such domain/ -> bad-domain\n"
	"/unknown domain/ -> bad-domain\n"
	"/domain does not exist/ -> bad-domain\n"
	"/does not accept mail/ -> bad-domain\n"
	"# Mailboxes that do not exist.\n"
	"/user unknown/ -> bad-mailbox\n"
	"/unknown user/ -> bad-mailbox\n"
	"/no such user/ -> bad-mailbox\n"
	"/no such recipient/ -> bad-mailbox\n"
	"/no such mailbox/ -> bad-mailbox\n"
	"/user not found/ -> bad-mailbox\n"
	"/recipient not found/ -> bad-mailbox\n"
	"/mailbox not found/ -> bad-mailbox\n"
	"/recipient unknown/ -> bad-mailbox\n"
	"/unknown recipient/ -> bad-mailbox\n"
	"/invalid recipient/ -> bad-mailbox\n"
	"/invalid mailbox/ -> bad-mailbox\n"
	"/bad destination mailbox/ -> bad-mailbox\n"
	"/does not exist/ -> bad-mailbox\n"
	"/doesn't exist/ -> bad-mailbox\n"
	"/user doesn't have a/ -> bad-mailbox\n"
	"/unrouteable address/ -> bad-mailbox\n"
	"/no mailbox/ -> bad-mailbox\n"
	"# Size.\n"
	"/message too large/ -> message-too-large\n"
	"/message too big/ -> message-too-large\n"
	"/message is too large/ -> message-too-large\n"
	"/size exceeds/ -> message-too-large\n"
	"/exceeds size limit/ -> message-too-large\n"
	"/size limit exceeded/ -> message-too-large\n"
	"# Content other than spam.\n"
	"/virus/ -> content-related\n"
	"/malware/ -> content-related\n"
	"/attachment/ -> content-related\n"
	"/security issue/ -> content-related\n"
	"/content rejected/ -> content-related\n"
	"# Spam filters, blocklists and reputation.\n"
	"/spam/ -> spam-related\n"
	"/unsolicited/ -> spam-related\n"
	"/junk/ -> spam-related\n"
	"/blacklist/ -> spam-related\n"
	"/black list/ -> spam-related\n"
	"/blocklist/ -> spam-related\n"
	"/block list/ -> spam-related\n"
	"/denylist/ -> spam-related\n"
	"/rbl/ -> spam-related\n"
	"/barracuda/ -> spam-related\n"
	"/reputation/ -> spam-related\n"
	"/listed at/ -> spam-related\n"
	"/listed on/ -> spam-related\n"
	"/banned/ -> spam-related\n"
	"/traffic not accepted/ -> spam-related\n"
	"/weren't sent/ -> spam-related\n"
	"/permanently deferred/ -> spam-related\n"
	"# RFC 5321's default 550 text: weak evidence, so after the blocks.\n"
	"/mailbox unavailable/ -> bad-mailbox\n"
	"# Routing.\n"
	"/message expired/ -> message-expired\n"
	"/mail loop/ -> routing\n"
	"/routing loop/ -> routing\n"
	"/hop count exceeded/ -> routing\n"
	"/too many hops/ -> routing\n"
	"/loops back to myself/ -> routing\n"
	"/unable to route/ -> routing\n"
	"# Policy, then blocks that give no reason.\n"
	"/policy/ -> policy-related\n"
	"/dmarc/ -> policy-related\n"
	"/spf/ -> policy-related\n"
	"/dkim/ -> policy-related\n"
	"/not authorized/ -> policy-related\n"
	"/not allowed/ -> policy-related\n"
	"/prohibit/ -> policy-related\n"
	"/access denied/ -> policy-related\n"
	"/authentication required/ -> policy-related\n"
	"/blocked/ -> spam-related\n"
	"# Protocol.\n"
	"/syntax error/ -> protocol\n"
	"/command unrecognized/ -> protocol\n"
	"/unrecognized command/ -> protocol\n"
	"/command not recognized/ -> protocol\n"
	"/bad sequence/ -> protocol\n"
	"/not implemented/ -> protocol\n"
	"/line too long/ -> protocol\n"
	"#\n"
	"# 5. Enhanced status subjects (RFC 3463 section 3).\n"
	"5xx *.1.* -> bad-mailbox\n"
	"5xx *.4.* -> routing\n"
	"5xx *.5.* -> protocol\n"
	"5xx *.6.* -> content-related\n"
	"5xx *.7.* -> policy-related\n"
	"#\n"
	"# 6. Reply codes alone (RFC 5321 4.2.3, RFC 7504).\n"
	"521 -> bad-domain\n"
	"556 -> bad-domain\n"
	"50x -> protocol\n";
/* clang-format on */

static const char *const eng_bounce_category_names[ENG_BOUNCE_CATEGORY_COUNT] = {
	[ENG_BOUNCE_OTHER] = "other",
	[ENG_BOUNCE_BAD_MAILBOX] = "bad-mailbox",
	[ENG_BOUNCE_BAD_DOMAIN] = "bad-domain",
	[ENG_BOUNCE_INACTIVE_MAILBOX] = "inactive-mailbox",
	[ENG_BOUNCE_INVALID_SENDER] = "invalid-sender",
	[ENG_BOUNCE_QUOTA] = "quota",
	[ENG_BOUNCE_MESSAGE_TOO_LARGE] = "message-too-large",
	[ENG_BOUNCE_SPAM_RELATED] = "spam-related",
	[ENG_BOUNCE_CONTENT_RELATED] = "content-related",
	[ENG_BOUNCE_POLICY_RELATED] = "policy-related",
	[ENG_BOUNCE_RELAYING_DENIED] = "relaying-denied",
	[ENG_BOUNCE_ROUTING] = "routing",
	[ENG_BOUNCE_PROTOCOL] = "protocol",
	[ENG_BOUNCE_MESSAGE_EXPIRED] = "message-expired",
	[ENG_BOUNCE_TRANSIENT] = "transient",
};

_Static_assert(ENG_BOUNCE_CATEGORY_COUNT <= UINT8_MAX, "category fits a rule's byte");

const char *
eng_bounce_category_name(enum eng_bounce_category category)
{
	ENG_ASSERT((uint32_t)category < ENG_BOUNCE_CATEGORY_COUNT);
	const char *name = eng_bounce_category_names[category];
	ENG_ASSERT(name != NULL);
	return name;
}

bool
eng_bounce_category_parse(const char *name, size_t name_len, enum eng_bounce_category *category)
{
	ENG_ASSERT(name != NULL || name_len == 0);
	ENG_ASSERT(category != NULL);
	for (uint32_t i = 0; i < ENG_BOUNCE_CATEGORY_COUNT; i++) {
		const char *candidate = eng_bounce_category_names[i];
		if (strlen(candidate) == name_len && memcmp(candidate, name, name_len) == 0) {
			*category = (enum eng_bounce_category)i;
			return true;
		}
	}
	return false;
}

bool
eng_enhanced_is_valid(struct eng_enhanced status)
{
	bool class_ok = status.status_class == 2 || status.status_class == 4 ||
			status.status_class == 5;
	return class_ok && status.subject <= 999 && status.detail <= 999;
}

size_t
eng_enhanced_format(struct eng_enhanced status, char out[ENG_ENHANCED_TEXT_SIZE])
{
	ENG_ASSERT(out != NULL);
	if (!eng_enhanced_is_valid(status)) {
		out[0] = '\0';
		return 0;
	}
	int n = snprintf(out, ENG_ENHANCED_TEXT_SIZE, "%u.%u.%u", (unsigned)status.status_class,
			 (unsigned)status.subject, (unsigned)status.detail);
	ENG_ASSERT(n >= 5 && (size_t)n < ENG_ENHANCED_TEXT_SIZE);
	return (size_t)n;
}

/* ---- normalization ---------------------------------------------------- */

/* Lowercase ASCII; control bytes and DEL become a space; others as is. */
static uint8_t
eng_bounce_fold(uint8_t byte)
{
	if (byte >= 'A' && byte <= 'Z')
		return (uint8_t)(byte + ('a' - 'A'));
	if (byte < 0x20u || byte == 0x7fu)
		return ' ';
	return byte;
}

/*
 * Normalize src into dst (dst_size bytes) from dst[start] on: fold every
 * byte, collapse runs of spaces into one (also across dst[start - 1]).
 * Reads at most src_len bytes, writes at most up to dst_size. Returns the
 * end of what was written (>= start).
 */
static size_t
eng_bounce_normalize(const char *src, size_t src_len, char *dst, size_t dst_size, size_t start)
{
	ENG_ASSERT(src != NULL || src_len == 0);
	ENG_ASSERT(dst != NULL && start <= dst_size);
	size_t out = start;
	for (size_t i = 0; i < src_len && out < dst_size; i++) {
		uint8_t byte = eng_bounce_fold((uint8_t)src[i]);
		if (byte == ' ' && out > 0 && dst[out - 1] == ' ')
			continue;
		dst[out++] = (char)byte;
	}
	ENG_ASSERT(out >= start && out <= dst_size);
	return out;
}

/* ---- rule parsing ----------------------------------------------------- */

/* What one line parses to. */
enum eng_bounce_line_kind {
	ENG_BOUNCE_LINE_EMPTY = 0, /* blank or comment */
	ENG_BOUNCE_LINE_RULE,
	ENG_BOUNCE_LINE_ERROR,
};

static bool
eng_bounce_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* (ptr, len) without leading and trailing blanks. */
static void
eng_bounce_trim(const char **ptr, size_t *len)
{
	while (*len > 0 && eng_bounce_is_blank((*ptr)[0])) {
		(*ptr)++;
		(*len)--;
	}
	while (*len > 0 && eng_bounce_is_blank((*ptr)[*len - 1]))
		(*len)--;
}

/* Set err to "what 'token'" with the token shown printable and short. */
static void
eng_bounce_fail(struct eng_bounce_error *err, uint32_t line, const char *what, const char *token,
		size_t token_len)
{
	char shown[40];
	size_t n = ENG_MIN(token_len, sizeof(shown) - 1);
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)token[i];
		shown[i] = (c >= 0x20u && c < 0x7fu) ? (char)c : '?';
	}
	shown[n] = '\0';
	err->line = line;
	if (token_len == 0)
		snprintf(err->message, sizeof(err->message), "%s", what);
	else
		snprintf(err->message, sizeof(err->message), "%s '%s%s'", what, shown,
			 token_len > n ? "..." : "");
}

/* "550", "55x", "5xx": digits, then only wildcards. */
static bool
eng_bounce_parse_code(const char *tok, size_t len, struct eng_bounce_rule *rule)
{
	if (len != 3 || tok[0] < '1' || tok[0] > '5')
		return false;
	uint16_t lo = 0, hi = 0;
	bool wild = false;
	for (size_t i = 0; i < 3; i++) {
		char c = tok[i];
		if (c == 'x' || c == 'X') {
			wild = true;
			lo = (uint16_t)(lo * 10u);
			hi = (uint16_t)(hi * 10u + 9u);
		} else if (c >= '0' && c <= '9' && !wild) {
			lo = (uint16_t)(lo * 10u + (uint16_t)(c - '0'));
			hi = (uint16_t)(hi * 10u + (uint16_t)(c - '0'));
		} else {
			return false;
		}
	}
	ENG_ASSERT(lo >= 100 && hi <= 599 && lo <= hi);
	rule->code_min = lo;
	rule->code_max = hi;
	return true;
}

/* One part of an enhanced pattern: "*" or 1..3 digits. */
static bool
eng_bounce_parse_part(const char *tok, size_t len, uint16_t *value)
{
	if (len == 1 && tok[0] == '*') {
		*value = ENG_BOUNCE_ANY;
		return true;
	}
	if (len == 0 || len > 3)
		return false;
	uint16_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return false;
		v = (uint16_t)(v * 10u + (uint16_t)(tok[i] - '0'));
	}
	*value = v;
	return true;
}

/* "5.7.1", "*.2.2", "5.7.*": exactly three parts. */
static bool
eng_bounce_parse_enhanced(const char *tok, size_t len, struct eng_bounce_rule *rule)
{
	const char *end = tok + len;
	const char *dot1 = memchr(tok, '.', len);
	const char *dot2 = dot1 == NULL ? NULL : memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1));
	if (dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)) != NULL)
		return false;
	uint16_t parts[3];
	if (!eng_bounce_parse_part(tok, (size_t)(dot1 - tok), &parts[0]) ||
	    !eng_bounce_parse_part(dot1 + 1, (size_t)(dot2 - dot1 - 1), &parts[1]) ||
	    !eng_bounce_parse_part(dot2 + 1, (size_t)(end - dot2 - 1), &parts[2]))
		return false;
	if (parts[0] != ENG_BOUNCE_ANY && parts[0] != 2 && parts[0] != 4 && parts[0] != 5)
		return false;
	rule->has_enhanced = true;
	rule->status_class = parts[0];
	rule->subject = parts[1];
	rule->detail = parts[2];
	return true;
}

/* The inside of /text/: printable, normalized, not blank, not too long. */
static bool
eng_bounce_parse_text(const char *p, size_t len, uint32_t line, struct eng_bounce_rule *rule,
		      struct eng_bounce_error *err)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)p[i];
		if ((c < 0x20u && c != '\t') || c == 0x7fu) {
			eng_bounce_fail(err, line, "control character in /text/", NULL, 0);
			return false;
		}
	}
	char normalized[ENG_BOUNCE_LINE_SIZE_MAX];
	size_t n = eng_bounce_normalize(p, len, normalized, sizeof(normalized), 0);
	if (n == 0 || (n == 1 && normalized[0] == ' ')) {
		eng_bounce_fail(err, line, "empty /text/", NULL, 0);
		return false;
	}
	if (n > ENG_BOUNCE_TEXT_SIZE_MAX) {
		eng_bounce_fail(err, line, "/text/ longer than 96 bytes", p, len);
		return false;
	}
	memcpy(rule->text, normalized, n);
	rule->text_len = (uint8_t)n;
	return true;
}

/* One condition token before the text: "*", a code or an enhanced status. */
static bool
eng_bounce_parse_token(const char *tok, size_t len, uint32_t line, bool *is_any,
		       struct eng_bounce_rule *rule, struct eng_bounce_error *err)
{
	if (len == 1 && tok[0] == '*') {
		*is_any = true;
		return true;
	}
	if (memchr(tok, '.', len) != NULL) {
		if (rule->has_enhanced) {
			eng_bounce_fail(err, line, "second enhanced status condition", tok, len);
			return false;
		}
		if (!eng_bounce_parse_enhanced(tok, len, rule)) {
			eng_bounce_fail(err, line, "bad enhanced status pattern", tok, len);
			return false;
		}
		return true;
	}
	if (rule->code_max != 0) {
		eng_bounce_fail(err, line, "second reply code condition", tok, len);
		return false;
	}
	if (!eng_bounce_parse_code(tok, len, rule)) {
		eng_bounce_fail(err, line, "unknown condition (want 550, 5xx, 5.7.1, /text/ or *)",
				tok, len);
		return false;
	}
	return true;
}

/* The blank-separated tokens in (p, len); then the conditions must agree. */
static bool
eng_bounce_parse_tokens(const char *p, size_t len, uint32_t line, struct eng_bounce_rule *rule,
			struct eng_bounce_error *err)
{
	bool is_any = false;
	size_t i = 0;
	while (i < len) {
		if (eng_bounce_is_blank(p[i])) {
			i++;
			continue;
		}
		size_t start = i;
		while (i < len && !eng_bounce_is_blank(p[i]))
			i++;
		if (!eng_bounce_parse_token(p + start, i - start, line, &is_any, rule, err))
			return false;
	}
	uint32_t conditions = (rule->code_max != 0 ? 1u : 0u) + (rule->has_enhanced ? 1u : 0u) +
			      (rule->text_len != 0 ? 1u : 0u);
	if (is_any && conditions > 0) {
		eng_bounce_fail(err, line, "'*' matches everything and must stand alone", NULL, 0);
		return false;
	}
	if (!is_any && conditions == 0) {
		eng_bounce_fail(err, line, "no condition before '->'", NULL, 0);
		return false;
	}
	return true;
}

static bool
eng_bounce_parse_category(const char *p, size_t len, uint32_t line, struct eng_bounce_rule *rule,
			  struct eng_bounce_error *err)
{
	eng_bounce_trim(&p, &len);
	enum eng_bounce_category category;
	if (len == 0) {
		eng_bounce_fail(err, line, "missing category after '->'", NULL, 0);
		return false;
	}
	if (!eng_bounce_category_parse(p, len, &category)) {
		eng_bounce_fail(err, line, "unknown category", p, len);
		return false;
	}
	rule->category = (uint8_t)category;
	return true;
}

/*
 * One line: "[tokens] [/text/] -> category". The text runs from the first
 * '/' to the last '/' of the line, so it may hold '/' and "->" itself.
 */
static enum eng_bounce_line_kind
eng_bounce_parse_line(const char *p, size_t len, uint32_t line, struct eng_bounce_rule *rule,
		      struct eng_bounce_error *err)
{
	eng_bounce_trim(&p, &len);
	if (len == 0 || p[0] == '#')
		return ENG_BOUNCE_LINE_EMPTY;
	memset(rule, 0, sizeof(*rule));
	rule->line = line;
	if (memchr(p, '\0', len) != NULL) {
		eng_bounce_fail(err, line, "NUL byte", NULL, 0);
		return ENG_BOUNCE_LINE_ERROR;
	}
	const char *first = memchr(p, '/', len);
	const char *last = first == NULL ? NULL : memrchr(p, '/', len);
	const char *tail = last == NULL ? p : last + 1;
	const char *arrow = memmem(tail, (size_t)(p + len - tail), "->", 2);
	if (first != NULL && first == last) {
		eng_bounce_fail(err, line, "unterminated /text/", NULL, 0);
		return ENG_BOUNCE_LINE_ERROR;
	}
	if (arrow == NULL) {
		eng_bounce_fail(err, line, "missing '->'", NULL, 0);
		return ENG_BOUNCE_LINE_ERROR;
	}
	if (first != NULL) {
		const char *gap = last + 1;
		while (gap < arrow && eng_bounce_is_blank(*gap))
			gap++;
		if (gap != arrow) {
			eng_bounce_fail(err, line, "/text/ must be the last condition", NULL, 0);
			return ENG_BOUNCE_LINE_ERROR;
		}
		if (!eng_bounce_parse_text(first + 1, (size_t)(last - first - 1), line, rule, err))
			return ENG_BOUNCE_LINE_ERROR;
	}
	const char *tokens_end = first != NULL ? first : arrow;
	if (!eng_bounce_parse_tokens(p, (size_t)(tokens_end - p), line, rule, err) ||
	    !eng_bounce_parse_category(arrow + 2, (size_t)(p + len - arrow - 2), line, rule, err))
		return ENG_BOUNCE_LINE_ERROR;
	return ENG_BOUNCE_LINE_RULE;
}

/*
 * Parse every line of (text, len). With rules == NULL only check and
 * count. Returns 0 and *count, or -EINVAL / -E2BIG with err filled.
 */
static int
eng_bounce_parse_all(const char *text, size_t len, struct eng_bounce_rule *rules,
		     uint32_t capacity, uint32_t *count, struct eng_bounce_error *err)
{
	ENG_ASSERT(text != NULL || len == 0);
	ENG_ASSERT(count != NULL && err != NULL);
	struct eng_bounce_rule scratch;
	uint32_t n = 0, line = 0;
	size_t pos = 0;
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl == NULL ? len : (size_t)(nl - text);
		size_t line_len = end - pos;
		line++;
		if (line_len > 0 && text[end - 1] == '\r')
			line_len--;
		if (line_len > ENG_BOUNCE_LINE_SIZE_MAX) {
			eng_bounce_fail(err, line, "line longer than 512 bytes", NULL, 0);
			return -EINVAL;
		}
		/* Past capacity the next line is parsed into scratch, then refused. */
		struct eng_bounce_rule *rule = &scratch;
		if (rules != NULL && n < capacity)
			rule = &rules[n];
		enum eng_bounce_line_kind kind =
			eng_bounce_parse_line(text + pos, line_len, line, rule, err);
		if (kind == ENG_BOUNCE_LINE_ERROR)
			return -EINVAL;
		if (kind == ENG_BOUNCE_LINE_RULE && ++n > capacity) {
			eng_bounce_fail(err, line, "too many rules (at most 256)", NULL, 0);
			return -E2BIG;
		}
		pos = end + 1;
	}
	*count = n;
	return 0;
}

void
eng_bounce_table_init(struct eng_bounce_table *table)
{
	ENG_ASSERT(table != NULL);
	memset(table, 0, sizeof(*table));
	struct eng_bounce_error err = { 0 };
	int rc = eng_bounce_parse_all(eng_bounce_builtin_rules, strlen(eng_bounce_builtin_rules),
				      table->builtin, ENG_BOUNCE_BUILTIN_RULES_MAX,
				      &table->builtin_count, &err);
	if (rc != 0)
		fprintf(stderr, "ringmail: built-in bounce rule line %u: %s\n", err.line,
			err.message);
	ENG_ASSERT(rc == 0); /* the built-in text is ours: a bad line is a bug */
	ENG_ASSERT(table->builtin_count > 0);
	ENG_ASSERT(table->site_count == 0);
}

int
eng_bounce_table_load(struct eng_bounce_table *table, const char *text, size_t text_len,
		      struct eng_bounce_error *err)
{
	ENG_ASSERT(table != NULL && err != NULL);
	ENG_ASSERT(text != NULL || text_len == 0);
	memset(err, 0, sizeof(*err));
	if (text_len > ENG_BOUNCE_FILE_SIZE_MAX) {
		eng_bounce_fail(err, 0, "override file larger than 256 KiB", NULL, 0);
		return -E2BIG;
	}
	uint32_t count = 0;
	int rc = eng_bounce_parse_all(text, text_len, NULL, ENG_BOUNCE_SITE_RULES_MAX, &count, err);
	if (rc != 0)
		return rc;
	uint32_t stored = 0;
	rc = eng_bounce_parse_all(text, text_len, table->site, ENG_BOUNCE_SITE_RULES_MAX, &stored,
				  err);
	ENG_ASSERT(rc == 0); /* the same bytes parsed a moment ago */
	ENG_ASSERT(stored == count && stored <= ENG_BOUNCE_SITE_RULES_MAX);
	table->site_count = stored;
	return 0;
}

/* Read all of fd into buf (size bytes expected); -errno or bytes read. */
static ssize_t
eng_bounce_read_all(int fd, char *buf, size_t size)
{
	size_t done = 0;
	for (uint32_t tries = 0; done < size && tries < 1024u; tries++) {
		ssize_t n = read(fd, buf + done, size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	ENG_ASSERT(done <= size);
	return (ssize_t)done;
}

int
eng_bounce_table_load_file(struct eng_bounce_table *table, const char *path,
			   struct eng_bounce_error *err)
{
	ENG_ASSERT(table != NULL && path != NULL && err != NULL);
	memset(err, 0, sizeof(*err));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		int rc = -errno;
		snprintf(err->message, sizeof(err->message), "%.100s: %s", path, strerror(-rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > ENG_BOUNCE_FILE_SIZE_MAX) {
		snprintf(err->message, sizeof(err->message), "%.100s: larger than 256 KiB", path);
		close(fd);
		return -E2BIG;
	}
	size_t size = (size_t)st.st_size;
	char *buf = malloc(size + 1); /* start-up only; +1 so an empty file is not malloc(0) */
	if (buf == NULL) {
		close(fd);
		return -ENOMEM;
	}
	ssize_t got = eng_bounce_read_all(fd, buf, size);
	close(fd);
	int rc = got < 0 ? (int)got : eng_bounce_table_load(table, buf, (size_t)got, err);
	if (got < 0)
		snprintf(err->message, sizeof(err->message), "%.100s: %s", path, strerror(-rc));
	free(buf);
	return rc;
}

/* ---- matching --------------------------------------------------------- */

/* The reply text, normalized on first use. */
struct eng_bounce_scan {
	const char *text;
	size_t text_len;
	bool is_ready;
	size_t len;
	char buf[ENG_BOUNCE_SCAN_SIZE_MAX + 2];
};

static void
eng_bounce_scan_prepare(struct eng_bounce_scan *scan)
{
	ENG_ASSERT(!scan->is_ready);
	size_t src_len = ENG_MIN(scan->text_len, (size_t)ENG_BOUNCE_SCAN_SIZE_MAX);
	scan->buf[0] = ' ';
	size_t n = eng_bounce_normalize(scan->text, src_len, scan->buf,
					ENG_BOUNCE_SCAN_SIZE_MAX + 1, 1);
	if (scan->buf[n - 1] != ' ')
		scan->buf[n++] = ' ';
	scan->len = n;
	scan->is_ready = true;
	ENG_ASSERT(scan->len >= 1 && scan->len <= sizeof(scan->buf));
}

static bool
eng_bounce_part_matches(uint16_t pattern, uint16_t value)
{
	return pattern == ENG_BOUNCE_ANY || pattern == value;
}

static bool
eng_bounce_rule_matches(const struct eng_bounce_rule *rule, uint16_t code,
			struct eng_enhanced enhanced, struct eng_bounce_scan *scan)
{
	ENG_ASSERT(rule->category < ENG_BOUNCE_CATEGORY_COUNT);
	ENG_ASSERT(rule->text_len <= ENG_BOUNCE_TEXT_SIZE_MAX);
	if (rule->code_max != 0 && (code < rule->code_min || code > rule->code_max))
		return false;
	if (rule->has_enhanced) {
		if (enhanced.status_class == 0 ||
		    !eng_bounce_part_matches(rule->status_class, enhanced.status_class) ||
		    !eng_bounce_part_matches(rule->subject, enhanced.subject) ||
		    !eng_bounce_part_matches(rule->detail, enhanced.detail))
			return false;
	}
	if (rule->text_len == 0)
		return true;
	if (!scan->is_ready)
		eng_bounce_scan_prepare(scan);
	return memmem(scan->buf, scan->len, rule->text, rule->text_len) != NULL;
}

/* Index of the first matching rule in rules[0, count), or count. */
static uint32_t
eng_bounce_first_match(const struct eng_bounce_rule *rules, uint32_t count, uint16_t code,
		       struct eng_enhanced enhanced, struct eng_bounce_scan *scan)
{
	uint32_t i = 0;
	while (i < count && !eng_bounce_rule_matches(&rules[i], code, enhanced, scan))
		i++;
	ENG_ASSERT(i <= count);
	return i;
}

enum eng_bounce_category
eng_bounce_classify(const struct eng_bounce_table *table, uint16_t code,
		    struct eng_enhanced enhanced, const char *text, size_t text_len,
		    struct eng_bounce_match *match)
{
	ENG_ASSERT(table != NULL);
	ENG_ASSERT(text != NULL || text_len == 0);
	ENG_ASSERT(table->site_count <= ENG_BOUNCE_SITE_RULES_MAX);
	struct eng_bounce_match local;
	struct eng_bounce_match *m = match != NULL ? match : &local;
	m->line = 0;
	if (code != 0 && (code < 400 || code > 599)) {
		m->source = ENG_BOUNCE_SOURCE_NOT_FAILURE;
		m->category = ENG_BOUNCE_OTHER;
		return m->category;
	}
	struct eng_bounce_scan scan = { .text = text, .text_len = text_len };
	uint32_t i = eng_bounce_first_match(table->site, table->site_count, code, enhanced, &scan);
	if (i < table->site_count) {
		m->source = ENG_BOUNCE_SOURCE_SITE;
		m->line = table->site[i].line;
		m->category = (enum eng_bounce_category)table->site[i].category;
		return m->category;
	}
	i = eng_bounce_first_match(table->builtin, table->builtin_count, code, enhanced, &scan);
	if (i < table->builtin_count) {
		m->source = ENG_BOUNCE_SOURCE_BUILTIN;
		m->line = table->builtin[i].line;
		m->category = (enum eng_bounce_category)table->builtin[i].category;
		return m->category;
	}
	m->source = ENG_BOUNCE_SOURCE_FALLBACK;
	m->category = (code == 0 || code < 500) ? ENG_BOUNCE_TRANSIENT : ENG_BOUNCE_OTHER;
	return m->category;
}
