/*
 * eng_config.c - configuration: value syntax, the INI parser glue, the
 * built-in defaults, domain and route resolution, the reload check.
 *
 * Parsing goes through inih's ini_parse_stream with our own line reader
 * over an in-memory copy of the file. The reader is what makes errors
 * precise and robust with the Debian build of inih (55, no
 * INI_HANDLER_LINENO, 50-byte section buffer, 200-byte lines):
 * - inih calls the reader once per physical line and the handler for that
 *   line before reading the next, so the reader's line count is the line
 *   of every handler call;
 * - the reader sees every section header first, so sections are tracked
 *   here in full (domain names up to 253 characters, which inih would
 *   truncate) and empty sections ([listener main] with defaults) count;
 * - over-long lines and NUL bytes are refused with a clear message
 *   instead of being split or cut by inih.
 * inih's own settings (global variables) are never changed.
 *
 * Keys are described by tables (name, type, field, bounds), one per
 * section kind; the same tables drive parsing, [domain] inheritance and
 * the reload comparison.
 */
#include "eng_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../spool/spool.h"
#include "eng_limit.h"

#define ENG_NS_PER_MS 1000000ull
#define ENG_NS_PER_S 1000000000ull
#define ENG_NS_PER_MIN (60ull * ENG_NS_PER_S)
#define ENG_NS_PER_H (3600ull * ENG_NS_PER_S)
#define ENG_NS_PER_D (86400ull * ENG_NS_PER_S)
#define ENG_KIB 1024ull
#define ENG_MIB (1024ull * ENG_KIB)
#define ENG_GIB (1024ull * ENG_MIB)
#define ENG_TIB (1024ull * ENG_GIB)

#define ENG_KEYS_MAX 32u	   /* keys of the largest section kind */
#define ENG_SECTION_TEXT_SIZE 300u /* "domain " + 253 + slack, for messages */
#define ENG_KEY_NAME_SIZE 64u
#define ENG_ECHO_MAX 80u	   /* characters of a bad value quoted back */
#define ENG_SPOOL_TRACE_SIZE (16u * 1024u)

_Static_assert(ENG_CONFIG_SHARDS_MAX <= SPOOL_SHARD_MAX + 1, "shard ids fit the spool");
_Static_assert(ENG_CONFIG_DOMAINS_MAX < (1u << 30), "index slots hold index + 1");

/* ---------------------------------------------------------------------------
 * Characters (ASCII only, no locale).
 */

static bool
eng_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
eng_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
eng_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char
eng_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* (s, len) equals the lowercase literal word, ignoring case. */
static bool
eng_word_is(const char *s, size_t len, const char *word)
{
	size_t word_len = strlen(word);
	if (len != word_len)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (eng_lower(s[i]) != word[i])
			return false;
	}
	return true;
}

static bool
eng_name_equal(const char *a, size_t a_len, const char *b, size_t b_len)
{
	if (a_len != b_len)
		return false;
	for (size_t i = 0; i < a_len; i++) {
		if (eng_lower(a[i]) != eng_lower(b[i]))
			return false;
	}
	return true;
}

/*
 * Copy (s, len) into dst as printable ASCII, '?' for anything else, cut at
 * dst_size - 4 characters with "...".
 */
static void
eng_echo(const char *s, size_t len, char *dst, size_t dst_size)
{
	ENG_ASSERT(dst != NULL);
	ENG_ASSERT(dst_size > 8);
	size_t n = ENG_MIN(len, dst_size - 4);
	for (size_t i = 0; i < n; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (n < len) {
		memcpy(dst + n, "...", 3);
		n += 3;
	}
	dst[n] = '\0';
}

static void
eng_copy_lower(char *dst, size_t dst_size, const char *s, size_t len)
{
	ENG_ASSERT(len < dst_size);
	for (size_t i = 0; i < len; i++)
		dst[i] = eng_lower(s[i]);
	dst[len] = '\0';
}

/* ---------------------------------------------------------------------------
 * Values.
 */

/* Digits at s[*pos..len): at least one; RANGE on overflow (all consumed). */
static enum eng_value_result
eng_scan_number(const char *s, size_t len, size_t *pos, uint64_t *out)
{
	ENG_ASSERT(pos != NULL && out != NULL);
	ENG_ASSERT(*pos <= len);
	size_t start = *pos;
	uint64_t v = 0;
	bool overflow = false;
	while (*pos < len && eng_is_digit(s[*pos])) {
		uint64_t digit = (uint64_t)(s[*pos] - '0');
		if (v > (UINT64_MAX - digit) / 10)
			overflow = true;
		else
			v = v * 10 + digit;
		(*pos)++;
	}
	if (*pos == start)
		return ENG_VALUE_SYNTAX;
	*out = v;
	return overflow ? ENG_VALUE_RANGE : ENG_VALUE_OK;
}

enum eng_value_result
eng_value_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *out)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(min <= max);
	size_t pos = 0;
	uint64_t v = 0;
	enum eng_value_result r = eng_scan_number(s, len, &pos, &v);
	if (r == ENG_VALUE_SYNTAX || pos != len)
		return ENG_VALUE_SYNTAX;
	if (r == ENG_VALUE_RANGE || v < min || v > max)
		return ENG_VALUE_RANGE;
	*out = v;
	return ENG_VALUE_OK;
}

struct eng_unit {
	const char *name;
	uint64_t scale;
};

static const struct eng_unit eng_size_units[] = {
	{"", 1},	    {"b", 1},		{"k", ENG_KIB},	    {"kb", ENG_KIB},
	{"kib", ENG_KIB},   {"m", ENG_MIB},	{"mb", ENG_MIB},    {"mib", ENG_MIB},
	{"g", ENG_GIB},	    {"gb", ENG_GIB},	{"gib", ENG_GIB},   {"t", ENG_TIB},
	{"tb", ENG_TIB},    {"tib", ENG_TIB},
};

static const struct eng_unit eng_duration_units[] = {
	{"ms", ENG_NS_PER_MS}, {"s", ENG_NS_PER_S}, {"m", ENG_NS_PER_MIN},
	{"min", ENG_NS_PER_MIN}, {"h", ENG_NS_PER_H}, {"d", ENG_NS_PER_D},
};

static const struct eng_unit eng_rate_units[] = {
	{"s", ENG_NS_PER_S},	  {"sec", ENG_NS_PER_S},   {"second", ENG_NS_PER_S},
	{"m", ENG_NS_PER_MIN},	  {"min", ENG_NS_PER_MIN}, {"minute", ENG_NS_PER_MIN},
	{"h", ENG_NS_PER_H},	  {"hr", ENG_NS_PER_H},	   {"hour", ENG_NS_PER_H},
	{"d", ENG_NS_PER_D},	  {"day", ENG_NS_PER_D},
};

/* Scale of the unit (s, len) in table, or 0 if unknown. */
static uint64_t
eng_unit_scale(const struct eng_unit *table, size_t count, const char *s, size_t len)
{
	ENG_ASSERT(table != NULL);
	ENG_ASSERT(count > 0);
	for (size_t i = 0; i < count; i++) {
		if (eng_word_is(s, len, table[i].name))
			return table[i].scale;
	}
	return 0;
}

enum eng_value_result
eng_value_size(const char *s, size_t len, uint64_t *bytes)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(bytes != NULL);
	size_t pos = 0;
	uint64_t v = 0;
	enum eng_value_result r = eng_scan_number(s, len, &pos, &v);
	if (r == ENG_VALUE_SYNTAX)
		return r;
	uint64_t scale = eng_unit_scale(eng_size_units, ENG_ARRAY_COUNT(eng_size_units), s + pos,
					len - pos);
	if (scale == 0)
		return ENG_VALUE_SYNTAX;
	if (r == ENG_VALUE_RANGE || __builtin_mul_overflow(v, scale, bytes))
		return ENG_VALUE_RANGE;
	return ENG_VALUE_OK;
}

enum eng_value_result
eng_value_duration(const char *s, size_t len, uint64_t *ns)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(ns != NULL);
	if (len == 1 && s[0] == '0') {
		*ns = 0;
		return ENG_VALUE_OK;
	}
	uint64_t total = 0;
	bool overflow = false;
	size_t pos = 0;
	/* Each term consumes at least two characters: bounded by len. */
	while (pos < len || pos == 0) {
		uint64_t v = 0;
		enum eng_value_result r = eng_scan_number(s, len, &pos, &v);
		if (r == ENG_VALUE_SYNTAX)
			return r;
		size_t unit_start = pos;
		while (pos < len && eng_is_alpha(s[pos]))
			pos++;
		uint64_t scale = eng_unit_scale(eng_duration_units,
						ENG_ARRAY_COUNT(eng_duration_units),
						s + unit_start, pos - unit_start);
		if (scale == 0)
			return ENG_VALUE_SYNTAX;
		uint64_t term = 0;
		if (r == ENG_VALUE_RANGE || __builtin_mul_overflow(v, scale, &term) ||
		    __builtin_add_overflow(total, term, &total))
			overflow = true;
	}
	if (overflow)
		return ENG_VALUE_RANGE;
	*ns = total;
	return ENG_VALUE_OK;
}

enum eng_value_result
eng_value_rate(const char *s, size_t len, struct eng_rate *out)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	if (eng_word_is(s, len, "unlimited")) {
		out->count = 0;
		out->period_ns = ENG_NS_PER_S;
		return ENG_VALUE_OK;
	}
	size_t pos = 0;
	uint64_t count = 0;
	enum eng_value_result r = eng_scan_number(s, len, &pos, &count);
	if (r == ENG_VALUE_SYNTAX || pos >= len || s[pos] != '/')
		return ENG_VALUE_SYNTAX;
	pos++;
	uint64_t period_ns = eng_unit_scale(eng_rate_units, ENG_ARRAY_COUNT(eng_rate_units),
					    s + pos, len - pos);
	if (period_ns == 0)
		return ENG_VALUE_SYNTAX;
	if (r == ENG_VALUE_RANGE || count == 0 || count > ENG_BUCKET_COUNT_MAX)
		return ENG_VALUE_RANGE;
	_Static_assert(ENG_NS_PER_D <= ENG_BUCKET_PERIOD_NS_MAX, "rate periods fit a bucket");
	out->count = count;
	out->period_ns = period_ns;
	return ENG_VALUE_OK;
}

enum eng_value_result
eng_value_bool(const char *s, size_t len, bool *out)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	static const char *const yes[] = {"on", "yes", "true", "1"};
	static const char *const no[] = {"off", "no", "false", "0"};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(yes); i++) {
		if (eng_word_is(s, len, yes[i])) {
			*out = true;
			return ENG_VALUE_OK;
		}
		if (eng_word_is(s, len, no[i])) {
			*out = false;
			return ENG_VALUE_OK;
		}
	}
	return ENG_VALUE_SYNTAX;
}

/* "I" or "I.F" with at most `decimals` digits of F, scaled by 10^decimals. */
static enum eng_value_result
eng_scan_decimal(const char *s, size_t len, uint32_t decimals, uint64_t *out)
{
	ENG_ASSERT(decimals <= 3);
	ENG_ASSERT(out != NULL);
	size_t pos = 0;
	uint64_t whole = 0;
	enum eng_value_result r = eng_scan_number(s, len, &pos, &whole);
	if (r != ENG_VALUE_OK)
		return r;
	if (whole > 1000000)
		return ENG_VALUE_RANGE;
	uint64_t frac = 0;
	uint32_t digits = 0;
	if (pos < len && s[pos] == '.') {
		pos++;
		size_t start = pos;
		if (eng_scan_number(s, len, &pos, &frac) != ENG_VALUE_OK || pos - start > decimals)
			return ENG_VALUE_SYNTAX;
		digits = (uint32_t)(pos - start);
	}
	if (pos != len)
		return ENG_VALUE_SYNTAX;
	for (uint32_t i = digits; i < decimals; i++)
		frac *= 10;
	uint64_t scale = 1;
	for (uint32_t i = 0; i < decimals; i++)
		scale *= 10;
	*out = whole * scale + frac;
	return ENG_VALUE_OK;
}

enum eng_value_result
eng_value_fraction(const char *s, size_t len, uint32_t *permille)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(permille != NULL);
	uint64_t v = 0;
	enum eng_value_result r;
	if (len > 0 && s[len - 1] == '%')
		r = eng_scan_decimal(s, len - 1, 1, &v); /* tenths of a percent */
	else
		r = eng_scan_decimal(s, len, 3, &v);	 /* thousandths */
	if (r != ENG_VALUE_OK)
		return r;
	if (v > 1000)
		return ENG_VALUE_RANGE;
	*permille = (uint32_t)v;
	return ENG_VALUE_OK;
}

/* One DNS label at s[*pos..len): letters, digits, inner hyphens, 1..63. */
static bool
eng_scan_label(const char *s, size_t len, size_t *pos, bool *all_digits)
{
	size_t start = *pos;
	*all_digits = true;
	while (*pos < len && s[*pos] != '.') {
		char c = s[*pos];
		if (!eng_is_alpha(c) && !eng_is_digit(c) && c != '-')
			return false;
		if (!eng_is_digit(c))
			*all_digits = false;
		(*pos)++;
	}
	size_t label_len = *pos - start;
	if (label_len == 0 || label_len > 63)
		return false;
	return s[start] != '-' && s[*pos - 1] != '-';
}

enum eng_value_result
eng_value_domain(const char *s, size_t len)
{
	ENG_ASSERT(s != NULL || len == 0);
	if (len == 0 || len > ENG_DOMAIN_SIZE - 1)
		return ENG_VALUE_SYNTAX;
	size_t pos = 0;
	bool all_digits = false;
	/* Each label consumes at least one character: bounded by len. */
	for (;;) {
		if (!eng_scan_label(s, len, &pos, &all_digits))
			return ENG_VALUE_SYNTAX;
		if (pos == len)
			break;
		pos++; /* the dot; a trailing dot makes an empty label */
	}
	/* An all-numeric top-level label is a mistyped IPv4 address (RFC 3696 2). */
	return all_digits ? ENG_VALUE_SYNTAX : ENG_VALUE_OK;
}

/* inet_pton on (s, len) without reading past len. */
static bool
eng_parse_ip(int family, const char *s, size_t len, uint8_t *addr)
{
	char buf[INET6_ADDRSTRLEN];
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(family, buf, addr) == 1;
}

static bool
eng_looks_numeric(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!eng_is_digit(s[i]) && s[i] != '.')
			return false;
	}
	return true;
}

static enum eng_value_result
eng_parse_port(const char *s, size_t len, uint16_t *port)
{
	uint64_t v = 0;
	enum eng_value_result r = eng_value_u64(s, len, 1, 65535, &v);
	if (r == ENG_VALUE_OK)
		*port = (uint16_t)v;
	return r;
}

/* The host part of host[:port] without brackets: IPv4 literal or a name. */
static enum eng_value_result
eng_parse_host(const char *s, size_t len, struct eng_hostport *out)
{
	if (len > 0 && eng_looks_numeric(s, len)) {
		if (!eng_parse_ip(AF_INET, s, len, out->addr))
			return ENG_VALUE_SYNTAX;
		out->kind = ENG_HOST_IPV4;
		memcpy(out->host, s, len);
		out->host[len] = '\0';
		return ENG_VALUE_OK;
	}
	if (eng_value_domain(s, len) != ENG_VALUE_OK)
		return ENG_VALUE_SYNTAX;
	out->kind = ENG_HOST_NAME;
	eng_copy_lower(out->host, sizeof(out->host), s, len);
	return ENG_VALUE_OK;
}

enum eng_value_result
eng_value_hostport(const char *s, size_t len, uint16_t default_port, struct eng_hostport *out)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	memset(out, 0, sizeof(*out));
	out->port = default_port;
	if (len == 0)
		return ENG_VALUE_SYNTAX;
	const char *rest = NULL;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (close == NULL)
			return ENG_VALUE_SYNTAX;
		size_t host_len = (size_t)(close - s) - 1;
		if (!eng_parse_ip(AF_INET6, s + 1, host_len, out->addr))
			return ENG_VALUE_SYNTAX;
		out->kind = ENG_HOST_IPV6;
		memcpy(out->host, s + 1, host_len);
		out->host[host_len] = '\0';
		rest = close + 1;
	} else {
		const char *colon = memchr(s, ':', len);
		size_t host_len = colon != NULL ? (size_t)(colon - s) : len;
		if (colon != NULL && memchr(colon + 1, ':', len - host_len - 1) != NULL)
			return ENG_VALUE_SYNTAX; /* a bare IPv6 literal: write [addr]:port */
		enum eng_value_result r = eng_parse_host(s, host_len, out);
		if (r != ENG_VALUE_OK)
			return r;
		rest = s + host_len;
	}
	size_t rest_len = len - (size_t)(rest - s);
	if (rest_len == 0)
		return ENG_VALUE_OK;
	if (rest[0] != ':')
		return ENG_VALUE_SYNTAX;
	return eng_parse_port(rest + 1, rest_len - 1, &out->port);
}

static bool
eng_cidr_host_bits_zero(const struct eng_cidr *c)
{
	uint32_t bytes = c->family == 4 ? 4 : 16;
	for (uint32_t i = 0; i < bytes; i++) {
		uint32_t bit = i * 8;
		uint8_t keep = 0;
		if (bit + 8 <= c->prefix_len)
			keep = 0xff;
		else if (bit < c->prefix_len)
			keep = (uint8_t)(0xff << (8 - (c->prefix_len - bit)));
		if ((c->addr[i] & (uint8_t)~keep) != 0)
			return false;
	}
	return true;
}

enum eng_value_result
eng_value_cidr(const char *s, size_t len, struct eng_cidr *out)
{
	ENG_ASSERT(s != NULL || len == 0);
	ENG_ASSERT(out != NULL);
	memset(out, 0, sizeof(*out));
	const char *slash = memchr(s, '/', len);
	size_t addr_len = slash != NULL ? (size_t)(slash - s) : len;
	bool v6 = memchr(s, ':', addr_len) != NULL;
	out->family = v6 ? 6 : 4;
	if (!eng_parse_ip(v6 ? AF_INET6 : AF_INET, s, addr_len, out->addr))
		return ENG_VALUE_SYNTAX;
	uint64_t bits = v6 ? 128 : 32;
	if (slash != NULL) {
		enum eng_value_result r =
			eng_value_u64(slash + 1, len - addr_len - 1, 0, bits, &bits);
		if (r != ENG_VALUE_OK)
			return r;
	}
	out->prefix_len = (uint8_t)bits;
	return eng_cidr_host_bits_zero(out) ? ENG_VALUE_OK : ENG_VALUE_SYNTAX;
}

void
eng_list_init(struct eng_list *list, const char *s, size_t len)
{
	ENG_ASSERT(list != NULL);
	ENG_ASSERT(s != NULL || len == 0);
	list->s = s;
	list->len = len;
	list->pos = 0;
}

enum eng_list_result
eng_list_next(struct eng_list *list, const char **item, size_t *item_len)
{
	ENG_ASSERT(list != NULL && item != NULL && item_len != NULL);
	ENG_ASSERT(list->pos <= list->len);
	while (list->pos < list->len && eng_is_blank(list->s[list->pos]))
		list->pos++;
	if (list->pos == list->len)
		return ENG_LIST_END;
	const char *start = list->s + list->pos;
	const char *comma = memchr(start, ',', list->len - list->pos);
	size_t n = comma != NULL ? (size_t)(comma - start) : list->len - list->pos;
	list->pos += n + (comma != NULL ? 1 : 0);
	while (n > 0 && eng_is_blank(start[n - 1]))
		n--;
	if (n == 0)
		return ENG_LIST_EMPTY_ITEM;
	*item = start;
	*item_len = n;
	return ENG_LIST_ITEM;
}

uint32_t
eng_rate_default_burst(const struct eng_rate *rate)
{
	ENG_ASSERT(rate != NULL);
	if (rate->count == 0)
		return 1;
	ENG_ASSERT(rate->period_ns > 0);
	/* count <= 1e9, so count * 1e9 fits in 64 bits. */
	uint64_t per_second = rate->count * ENG_NS_PER_S / rate->period_ns;
	return (uint32_t)ENG_MAX(1ull, ENG_MIN(per_second, ENG_BUCKET_BURST_MAX));
}

/* ---------------------------------------------------------------------------
 * Key tables.
 */

enum eng_section_kind {
	ENG_SECTION_NONE,
	ENG_SECTION_ENGINE,
	ENG_SECTION_DESTINATION,
	ENG_SECTION_DOMAIN,
	ENG_SECTION_ROUTE,
	ENG_SECTION_LISTENER,
};

enum eng_key_type {
	ENG_KEY_U32,
	ENG_KEY_PORT,
	ENG_KEY_SIZE,
	ENG_KEY_SIZE32,
	ENG_KEY_DURATION,
	ENG_KEY_RATE,
	ENG_KEY_BOOL,
	ENG_KEY_TLS,
	ENG_KEY_SYNC,
	ENG_KEY_SHARDS,
	ENG_KEY_PATH,
	ENG_KEY_HOSTNAME,
	ENG_KEY_FRACTION,
	ENG_KEY_ADDRESS,
	/* Lists: may continue on indented lines. */
	ENG_KEY_RETRY,
	ENG_KEY_DNS,
	ENG_KEY_NETWORKS,
	ENG_KEY_DOMAINS,
	ENG_KEY_HOSTS,
};

#define ENG_NO_COUNT UINT32_MAX

struct eng_key {
	const char *name;
	enum eng_key_type type;
	uint32_t offset;
	uint32_t size;
	uint32_t count_offset; /* of the item count of a list field, or ENG_NO_COUNT */
	uint64_t min;
	uint64_t max;
	bool restart; /* a change needs a restart (reload check) */
};

#define ENG_KEY(n, t, st, m, lo, hi, rs)                                                     \
	{                                                                                      \
		n, t, (uint32_t)offsetof(struct st, m), (uint32_t)sizeof(((struct st *)0)->m), \
			ENG_NO_COUNT, lo, hi, rs                                               \
	}
#define ENG_LIST_KEY(n, t, st, m, cnt, lo, hi, rs)                                           \
	{                                                                                      \
		n, t, (uint32_t)offsetof(struct st, m), (uint32_t)sizeof(((struct st *)0)->m), \
			(uint32_t)offsetof(struct st, cnt), lo, hi, rs                         \
	}

static const struct eng_key eng_engine_keys[] = {
	ENG_KEY("shards", ENG_KEY_SHARDS, eng_engine, shards, 1, ENG_CONFIG_SHARDS_MAX, true),
	ENG_KEY("spool_dir", ENG_KEY_PATH, eng_engine, spool_dir, 0, 0, true),
	ENG_KEY("hostname", ENG_KEY_HOSTNAME, eng_engine, hostname, 0, 0, false),
	ENG_KEY("max_connections", ENG_KEY_U32, eng_engine, max_connections, 1, 1000000, false),
	ENG_KEY("max_queue_lifetime", ENG_KEY_DURATION, eng_engine, max_queue_lifetime_ns,
		ENG_NS_PER_S, 365 * ENG_NS_PER_D, false),
	ENG_LIST_KEY("retry_schedule", ENG_KEY_RETRY, eng_engine, retry_schedule_ns,
		     retry_count, ENG_NS_PER_S, 30 * ENG_NS_PER_D, false),
	ENG_KEY("retry_jitter", ENG_KEY_FRACTION, eng_engine, retry_jitter_permille, 0, 1000,
		false),
	ENG_KEY("delivery_log", ENG_KEY_PATH, eng_engine, delivery_log, 0, 0, true),
	ENG_KEY("delivery_log_max_size", ENG_KEY_SIZE, eng_engine, delivery_log_max_size,
		4 * ENG_KIB, ENG_TIB, false),
	ENG_LIST_KEY("dns_servers", ENG_KEY_DNS, eng_engine, dns_servers, dns_server_count, 0,
		     0, true),
	ENG_KEY("smtp_port", ENG_KEY_PORT, eng_engine, smtp_port, 1, 65535, false),
	ENG_KEY("bounces", ENG_KEY_BOOL, eng_engine, bounces, 0, 0, false),
	ENG_KEY("dsn", ENG_KEY_BOOL, eng_engine, bounces, 0, 0, false),
	ENG_KEY("hold", ENG_KEY_BOOL, eng_engine, hold, 0, 0, false),
	ENG_KEY("delivery_log_keep", ENG_KEY_U32, eng_engine, delivery_log_keep, 1, 1000, false),
	ENG_KEY("stop_grace", ENG_KEY_DURATION, eng_engine, stop_grace_ns, 0, ENG_NS_PER_H,
		false),
	ENG_KEY("delivery_connections", ENG_KEY_U32, eng_engine, delivery_connections, 1, 65536,
		true),
	ENG_KEY("memory_budget", ENG_KEY_SIZE, eng_engine, memory_budget, 16 * ENG_MIB, ENG_TIB,
		true),
	ENG_KEY("segment_size", ENG_KEY_SIZE, eng_engine, segment_size, ENG_MIB,
		4 * ENG_GIB - SPOOL_BLOCK_SIZE, true),
	ENG_KEY("journal_segment_size", ENG_KEY_SIZE, eng_engine, journal_segment_size,
		64 * ENG_KIB, ENG_GIB, true),
	ENG_KEY("commit_size_max", ENG_KEY_SIZE32, eng_engine, commit_size_max, SPOOL_BLOCK_SIZE,
		64 * ENG_MIB, true),
	ENG_KEY("commit_slots", ENG_KEY_U32, eng_engine, commit_slots, 1, SPOOL_COMMIT_SLOTS_MAX,
		true),
	ENG_KEY("free_space_reserve", ENG_KEY_SIZE, eng_engine, free_space_reserve, 0, ENG_TIB,
		true),
	ENG_KEY("spool_sync", ENG_KEY_SYNC, eng_engine, use_fdatasync, 0, 0, true),
	ENG_KEY("tls_ca_file", ENG_KEY_PATH, eng_engine, tls_ca_file, 0, 0, true),
	ENG_KEY("tls_session_cache_size", ENG_KEY_U32, eng_engine, tls_session_cache_size, 1,
		1000000, true),
};

#define ENG_TIMEOUT_KEY(n, m) \
	ENG_KEY(n, ENG_KEY_DURATION, eng_destination, m, ENG_NS_PER_MS, ENG_NS_PER_H, false)

/* Order matters: bit i of a set_mask is key i (destination_key_bit). */
static const struct eng_key eng_destination_keys[] = {
	ENG_KEY("max_connections", ENG_KEY_U32, eng_destination, max_connections, 1, 100000,
		false),
	ENG_KEY("max_messages_per_connection", ENG_KEY_U32, eng_destination,
		max_messages_per_connection, 1, 1000000, false),
	ENG_KEY("max_recipients_per_transaction", ENG_KEY_U32, eng_destination,
		max_recipients_per_transaction, 1, SPOOL_RECIPIENTS_MAX, false),
	ENG_KEY("max_message_rate", ENG_KEY_RATE, eng_destination, max_message_rate, 0, 0,
		false),
	ENG_KEY("max_message_burst", ENG_KEY_U32, eng_destination, max_message_burst, 1,
		ENG_BUCKET_BURST_MAX, false),
	ENG_KEY("max_connection_rate", ENG_KEY_RATE, eng_destination, max_connection_rate, 0, 0,
		false),
	ENG_KEY("max_connection_burst", ENG_KEY_U32, eng_destination, max_connection_burst, 1,
		ENG_BUCKET_BURST_MAX, false),
	ENG_KEY("idle_timeout", ENG_KEY_DURATION, eng_destination, idle_timeout_ns, 0,
		ENG_NS_PER_H, false),
	ENG_TIMEOUT_KEY("connect_timeout", connect_timeout_ns),
	ENG_KEY("tls", ENG_KEY_TLS, eng_destination, tls, 0, 0, false),
	ENG_TIMEOUT_KEY("greeting_timeout", greeting_timeout_ns),
	ENG_TIMEOUT_KEY("mail_timeout", mail_timeout_ns),
	ENG_TIMEOUT_KEY("rcpt_timeout", rcpt_timeout_ns),
	ENG_TIMEOUT_KEY("data_timeout", data_timeout_ns),
	ENG_TIMEOUT_KEY("data_block_timeout", data_block_timeout_ns),
	ENG_TIMEOUT_KEY("data_done_timeout", data_done_timeout_ns),
	ENG_KEY("tls_plaintext_fallback_time", ENG_KEY_DURATION, eng_destination,
		tls_plaintext_fallback_time_ns, 0, 30 * ENG_NS_PER_D, false),
};

enum {
	ENG_DEST_BIT_MESSAGE_RATE = 3,
	ENG_DEST_BIT_MESSAGE_BURST = 4,
	ENG_DEST_BIT_CONNECTION_RATE = 5,
	ENG_DEST_BIT_CONNECTION_BURST = 6,
};

static const struct eng_key eng_route_keys[] = {
	ENG_KEY("domains", ENG_KEY_DOMAINS, eng_route, domain_count, 0, 0, false),
	ENG_LIST_KEY("hosts", ENG_KEY_HOSTS, eng_route, hosts, host_count, 0, 0, false),
	ENG_KEY("port", ENG_KEY_PORT, eng_route, port, 1, 65535, false),
	ENG_KEY("tls", ENG_KEY_TLS, eng_route, tls, 0, 0, false),
};

static const struct eng_key eng_listener_keys[] = {
	ENG_KEY("address", ENG_KEY_ADDRESS, eng_listener, address, 0, 0, true),
	ENG_KEY("hostname", ENG_KEY_HOSTNAME, eng_listener, hostname, 0, 0, false),
	ENG_LIST_KEY("allowed_networks", ENG_KEY_NETWORKS, eng_listener, networks,
		     network_count, 0, 0, false),
	ENG_KEY("message_size_limit", ENG_KEY_SIZE, eng_listener, message_size_limit, ENG_KIB,
		32 * ENG_MIB, true),
	ENG_KEY("recipients_max", ENG_KEY_U32, eng_listener, recipients_max, 1,
		SPOOL_RECIPIENTS_MAX, true),
	ENG_KEY("max_connections", ENG_KEY_U32, eng_listener, max_connections, 1, 1000000, false),
	ENG_KEY("max_connections_per_ip", ENG_KEY_U32, eng_listener, max_connections_per_ip, 1,
		1000000, false),
	ENG_KEY("command_timeout", ENG_KEY_DURATION, eng_listener, command_timeout_ns,
		ENG_NS_PER_S, ENG_NS_PER_H, false),
	ENG_KEY("data_timeout", ENG_KEY_DURATION, eng_listener, data_timeout_ns, ENG_NS_PER_S,
		ENG_NS_PER_H, false),
	ENG_KEY("session_deadline", ENG_KEY_DURATION, eng_listener, session_deadline_ns,
		ENG_NS_PER_S, ENG_NS_PER_D, false),
	ENG_KEY("greeting_delay", ENG_KEY_DURATION, eng_listener, greeting_delay_ns, 0,
		ENG_NS_PER_MIN, false),
	ENG_KEY("auth_file", ENG_KEY_PATH, eng_listener, auth_file, 0, 0, true),
	ENG_KEY("tls_certificate", ENG_KEY_PATH, eng_listener, tls_certificate, 0, 0, false),
	ENG_KEY("tls_key", ENG_KEY_PATH, eng_listener, tls_key, 0, 0, false),
	ENG_KEY("require_tls", ENG_KEY_BOOL, eng_listener, require_tls, 0, 0, false),
};

_Static_assert(ENG_ARRAY_COUNT(eng_engine_keys) <= ENG_KEYS_MAX, "engine keys fit");
_Static_assert(ENG_ARRAY_COUNT(eng_destination_keys) <= ENG_KEYS_MAX, "destination keys fit");
_Static_assert(ENG_ARRAY_COUNT(eng_listener_keys) <= ENG_KEYS_MAX, "listener keys fit");

struct eng_key_table {
	const char *section; /* for messages */
	const struct eng_key *keys;
	uint32_t count;
};

static struct eng_key_table
eng_keys_of(enum eng_section_kind kind)
{
	switch (kind) {
	case ENG_SECTION_ENGINE:
		return (struct eng_key_table){"[engine]", eng_engine_keys,
					      ENG_ARRAY_COUNT(eng_engine_keys)};
	case ENG_SECTION_DESTINATION:
		return (struct eng_key_table){"[destination]", eng_destination_keys,
					      ENG_ARRAY_COUNT(eng_destination_keys)};
	case ENG_SECTION_DOMAIN:
		return (struct eng_key_table){"[domain NAME]", eng_destination_keys,
					      ENG_ARRAY_COUNT(eng_destination_keys)};
	case ENG_SECTION_ROUTE:
		return (struct eng_key_table){"[route NAME]", eng_route_keys,
					      ENG_ARRAY_COUNT(eng_route_keys)};
	case ENG_SECTION_LISTENER:
		return (struct eng_key_table){"[listener NAME]", eng_listener_keys,
					      ENG_ARRAY_COUNT(eng_listener_keys)};
	case ENG_SECTION_NONE:
		break;
	}
	return (struct eng_key_table){"", NULL, 0};
}

static int32_t
eng_key_index(enum eng_section_kind kind, const char *name)
{
	struct eng_key_table t = eng_keys_of(kind);
	for (uint32_t i = 0; i < t.count; i++) {
		if (strcmp(t.keys[i].name, name) == 0)
			return (int32_t)i;
	}
	return -1;
}

static bool
eng_key_is_list(const struct eng_key *key)
{
	return key->type >= ENG_KEY_RETRY;
}

/* What a value of this key looks like, for "expected ..., got '...'". */
static const char *
eng_key_expect(const struct eng_key *key)
{
	static const char *const expect[] = {
		[ENG_KEY_U32] = "a positive integer",
		[ENG_KEY_PORT] = "a port number from 1 to 65535",
		[ENG_KEY_SIZE] = "a size like 4096, 512k, 10M or 1G",
		[ENG_KEY_SIZE32] = "a size like 4096, 512k, 10M or 1G",
		[ENG_KEY_DURATION] = "a duration like 250ms, 30s, 5m, 2h or 5d",
		[ENG_KEY_RATE] = "a rate like 100/s, 6000/min, 1/h or unlimited",
		[ENG_KEY_BOOL] = "on or off (yes/no, true/false)",
		[ENG_KEY_TLS] = "none, opportunistic, required or verify",
		[ENG_KEY_SYNC] = "dsync or fdatasync",
		[ENG_KEY_SHARDS] = "auto or a shard count from 1 to 64",
		[ENG_KEY_PATH] = "a path of 1 to 1023 printable characters",
		[ENG_KEY_HOSTNAME] = "a host name like mail.example.com",
		[ENG_KEY_FRACTION] = "a fraction from 0 to 1 like 0.2 or 20%",
		[ENG_KEY_ADDRESS] = "an IP address and port like 127.0.0.1:2525 or [::1]:2525",
		[ENG_KEY_RETRY] = "a list of durations like 5m, 10m, 1h",
		[ENG_KEY_DNS] = "a list of IP addresses like 127.0.0.1, [::1]:5353",
		[ENG_KEY_NETWORKS] =
			"a list of networks like 10.0.0.0/8, ::1/128 (no bits past the prefix)",
		[ENG_KEY_DOMAINS] = "a list of domains like example.com, .example.com or *",
		[ENG_KEY_HOSTS] =
			"a list of hosts like mx.example.com, 192.0.2.1:2525, [2001:db8::1]:25",
	};
	ENG_ASSERT((size_t)key->type < ENG_ARRAY_COUNT(expect));
	ENG_ASSERT(expect[key->type] != NULL);
	return expect[key->type];
}

/* "1G", "512k" or bytes: the exact value in the largest unit dividing it. */
static void
eng_format_size(uint64_t v, char *buf, size_t size)
{
	static const struct eng_unit units[] = {
		{"T", ENG_TIB}, {"G", ENG_GIB}, {"M", ENG_MIB}, {"k", ENG_KIB}};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(units); i++) {
		if (v != 0 && v % units[i].scale == 0) {
			snprintf(buf, size, "%llu%s", (unsigned long long)(v / units[i].scale),
				 units[i].name);
			return;
		}
	}
	snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void
eng_format_duration(uint64_t ns, char *buf, size_t size)
{
	static const struct eng_unit units[] = {{"d", ENG_NS_PER_D},	{"h", ENG_NS_PER_H},
						{"m", ENG_NS_PER_MIN},	{"s", ENG_NS_PER_S},
						{"ms", ENG_NS_PER_MS}};
	if (ns == 0) {
		snprintf(buf, size, "0");
		return;
	}
	for (size_t i = 0; i < ENG_ARRAY_COUNT(units); i++) {
		if (ns != 0 && ns % units[i].scale == 0) {
			snprintf(buf, size, "%llu%s", (unsigned long long)(ns / units[i].scale),
				 units[i].name);
			return;
		}
	}
	snprintf(buf, size, "%lluns", (unsigned long long)ns);
}

/* "an integer from 1 to 100000", "a duration from 1ms to 1h", ... */
static void
eng_key_range_text(const struct eng_key *key, char *buf, size_t size)
{
	char lo[32];
	char hi[32];
	const char *what = "an integer";
	if (key->type == ENG_KEY_SIZE || key->type == ENG_KEY_SIZE32) {
		eng_format_size(key->min, lo, sizeof(lo));
		eng_format_size(key->max, hi, sizeof(hi));
		what = "a size";
	} else if (key->type == ENG_KEY_DURATION || key->type == ENG_KEY_RETRY) {
		eng_format_duration(key->min, lo, sizeof(lo));
		eng_format_duration(key->max, hi, sizeof(hi));
		what = "a duration";
	} else if (key->type == ENG_KEY_FRACTION) {
		snprintf(buf, size, "a fraction from 0 to 1");
		return;
	} else if (key->type == ENG_KEY_RATE) {
		snprintf(buf, size, "a rate of 1 to %llu per period, or unlimited",
			 (unsigned long long)ENG_BUCKET_COUNT_MAX);
		return;
	} else {
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)key->min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)key->max);
	}
	snprintf(buf, size, "%s from %s to %s", what, lo, hi);
}

/* ---------------------------------------------------------------------------
 * Parse context and errors.
 */

struct eng_parse {
	struct eng_config *cfg;
	const char *buf;
	size_t len;
	size_t pos;
	uint32_t lineno;	/* of the line inih is working on */
	bool indented;		/* that line starts with a space or a tab */
	enum eng_section_kind kind;
	uint32_t index;		/* of the current domain, route or listener */
	char section[ENG_SECTION_TEXT_SIZE]; /* "domain example.com", for messages */
	char prev_key[ENG_KEY_NAME_SIZE]; /* inih continues this key on indented lines */
	uint64_t engine_mask;
	uint32_t *key_lines;	/* lines of the current section's keys */
	uint32_t engine_lines[ENG_KEYS_MAX];
	uint32_t destination_lines[ENG_KEYS_MAX];
	uint32_t scratch_lines[ENG_KEYS_MAX];
	uint32_t listener_lines[ENG_CONFIG_LISTENERS_MAX][ENG_KEYS_MAX];
	uint32_t engine_line;
	uint32_t destination_line;
	uint32_t domain_capacity;
	uint32_t route_capacity;
	uint32_t route_domain_capacity;
	bool failed;
	int error;		/* -errno of the first failure */
	uint32_t error_line;
	char *err;
	size_t err_size;
};

__attribute__((format(printf, 3, 4))) static void
eng_parse_fail(struct eng_parse *ctx, uint32_t line, const char *fmt, ...)
{
	ENG_ASSERT(ctx != NULL && fmt != NULL);
	if (ctx->failed)
		return;
	ctx->failed = true;
	ctx->error = -EINVAL;
	ctx->error_line = line;
	if (ctx->err == NULL || ctx->err_size == 0)
		return;
	int n = snprintf(ctx->err, ctx->err_size, "%s:%u: ", ctx->cfg->source, line);
	if (n < 0 || (size_t)n >= ctx->err_size)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx->err + n, ctx->err_size - (size_t)n, fmt, ap);
	va_end(ap);
}

static void
eng_parse_oom(struct eng_parse *ctx)
{
	eng_parse_fail(ctx, ctx->lineno, "out of memory");
	ctx->error = -ENOMEM;
}

/* "[section] key: what, got 'value'" at the current line. */
static void
eng_parse_bad_value(struct eng_parse *ctx, const char *key, const char *what, const char *value,
		    size_t value_len)
{
	char echo[ENG_ECHO_MAX + 8];
	eng_echo(value, value_len, echo, sizeof(echo));
	eng_parse_fail(ctx, ctx->lineno, "[%s] %s: expected %s, got '%s'", ctx->section, key, what,
		       echo);
}

static void
eng_parse_value_error(struct eng_parse *ctx, const struct eng_key *key,
		      enum eng_value_result r, const char *value, size_t value_len)
{
	ENG_ASSERT(r != ENG_VALUE_OK);
	char range[128];
	const char *what = eng_key_expect(key);
	if (r == ENG_VALUE_RANGE) {
		eng_key_range_text(key, range, sizeof(range));
		what = range;
	} else if (key->type == ENG_KEY_U32 && key->min == 0) {
		what = "a non-negative integer";
	}
	eng_parse_bad_value(ctx, key->name, what, value, value_len);
}

/* ---------------------------------------------------------------------------
 * Storing values.
 */

static void *
eng_parse_section_base(struct eng_parse *ctx)
{
	struct eng_config *cfg = ctx->cfg;
	switch (ctx->kind) {
	case ENG_SECTION_ENGINE:
		return &cfg->engine;
	case ENG_SECTION_DESTINATION:
		return &cfg->destination;
	case ENG_SECTION_DOMAIN:
		ENG_ASSERT(ctx->index < cfg->domain_count);
		return &cfg->domains[ctx->index].values;
	case ENG_SECTION_ROUTE:
		ENG_ASSERT(ctx->index < cfg->route_count);
		return &cfg->routes[ctx->index];
	case ENG_SECTION_LISTENER:
		ENG_ASSERT(ctx->index < cfg->listener_count);
		return &cfg->listeners[ctx->index];
	case ENG_SECTION_NONE:
		break;
	}
	ENG_PANIC("a key outside any section reached the store");
}

static uint64_t *
eng_parse_section_mask(struct eng_parse *ctx)
{
	struct eng_config *cfg = ctx->cfg;
	switch (ctx->kind) {
	case ENG_SECTION_ENGINE:
		return &ctx->engine_mask;
	case ENG_SECTION_DESTINATION:
		return &cfg->destination_set_mask;
	case ENG_SECTION_DOMAIN:
		return &cfg->domains[ctx->index].set_mask;
	case ENG_SECTION_ROUTE:
		return &cfg->routes[ctx->index].set_mask;
	case ENG_SECTION_LISTENER:
		return &cfg->listeners[ctx->index].set_mask;
	case ENG_SECTION_NONE:
		break;
	}
	ENG_PANIC("a key outside any section reached the store");
}

static void
eng_store(void *base, const struct eng_key *key, const void *value, size_t size)
{
	ENG_ASSERT(key->size == size);
	ENG_ASSERT(key->count_offset == ENG_NO_COUNT);
	memcpy((char *)base + key->offset, value, size);
}

/* A word value: tls, spool_sync, shards. Returns the index in words, or -1. */
static int32_t
eng_word_index(const char *s, size_t len, const char *const *words, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		if (eng_word_is(s, len, words[i]))
			return (int32_t)i;
	}
	return -1;
}

static enum eng_value_result
eng_store_word(void *base, const struct eng_key *key, const char *s, size_t len)
{
	static const char *const tls_words[] = {"none", "opportunistic", "required", "verify"};
	static const char *const sync_words[] = {"dsync", "fdatasync"};
	if (key->type == ENG_KEY_TLS) {
		int32_t i = eng_word_index(s, len, tls_words, ENG_ARRAY_COUNT(tls_words));
		enum eng_tls_mode mode = (enum eng_tls_mode)i;
		if (i < 0)
			return ENG_VALUE_SYNTAX;
		eng_store(base, key, &mode, sizeof(mode));
		return ENG_VALUE_OK;
	}
	ENG_ASSERT(key->type == ENG_KEY_SYNC);
	int32_t i = eng_word_index(s, len, sync_words, ENG_ARRAY_COUNT(sync_words));
	bool use_fdatasync = i == 1;
	if (i < 0)
		return ENG_VALUE_SYNTAX;
	eng_store(base, key, &use_fdatasync, sizeof(use_fdatasync));
	return ENG_VALUE_OK;
}

static enum eng_value_result
eng_store_text(void *base, const struct eng_key *key, const char *s, size_t len)
{
	char *dst = (char *)base + key->offset;
	if (len >= key->size)
		return ENG_VALUE_SYNTAX;
	if (key->type == ENG_KEY_HOSTNAME) {
		if (eng_value_domain(s, len) != ENG_VALUE_OK)
			return ENG_VALUE_SYNTAX;
		memset(dst, 0, key->size); /* whole-field comparisons on reload */
		eng_copy_lower(dst, key->size, s, len);
		return ENG_VALUE_OK;
	}
	ENG_ASSERT(key->type == ENG_KEY_PATH);
	if (len == 0)
		return ENG_VALUE_SYNTAX;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return ENG_VALUE_SYNTAX;
	}
	memset(dst, 0, key->size);
	memcpy(dst, s, len);
	dst[len] = '\0';
	return ENG_VALUE_OK;
}

static enum eng_value_result
eng_store_number(void *base, const struct eng_key *key, const char *s, size_t len)
{
	uint64_t v = 0;
	enum eng_value_result r;
	switch (key->type) {
	case ENG_KEY_U32:
	case ENG_KEY_PORT:
		r = eng_value_u64(s, len, key->min, key->max, &v);
		break;
	case ENG_KEY_SIZE:
	case ENG_KEY_SIZE32:
		r = eng_value_size(s, len, &v);
		break;
	case ENG_KEY_DURATION:
		r = eng_value_duration(s, len, &v);
		break;
	default:
		ENG_PANIC("not a numeric key");
	}
	if (r == ENG_VALUE_OK && (v < key->min || v > key->max))
		r = ENG_VALUE_RANGE;
	if (r != ENG_VALUE_OK)
		return r;
	if (key->size == sizeof(uint16_t)) {
		uint16_t v16 = (uint16_t)v;
		eng_store(base, key, &v16, sizeof(v16));
	} else if (key->size == sizeof(uint32_t)) {
		uint32_t v32 = (uint32_t)v;
		eng_store(base, key, &v32, sizeof(v32));
	} else {
		eng_store(base, key, &v, sizeof(v));
	}
	return ENG_VALUE_OK;
}

static enum eng_value_result
eng_store_scalar(void *base, const struct eng_key *key, const char *s, size_t len)
{
	switch (key->type) {
	case ENG_KEY_RATE: {
		struct eng_rate rate;
		enum eng_value_result r = eng_value_rate(s, len, &rate);
		if (r == ENG_VALUE_OK)
			eng_store(base, key, &rate, sizeof(rate));
		return r;
	}
	case ENG_KEY_BOOL: {
		bool b = false;
		enum eng_value_result r = eng_value_bool(s, len, &b);
		if (r == ENG_VALUE_OK)
			eng_store(base, key, &b, sizeof(b));
		return r;
	}
	case ENG_KEY_FRACTION: {
		uint32_t permille = 0;
		enum eng_value_result r = eng_value_fraction(s, len, &permille);
		if (r == ENG_VALUE_OK)
			eng_store(base, key, &permille, sizeof(permille));
		return r;
	}
	case ENG_KEY_SHARDS: {
		uint32_t shards = 0;
		uint64_t v = 0;
		if (eng_word_is(s, len, "auto")) {
			eng_store(base, key, &shards, sizeof(shards));
			return ENG_VALUE_OK;
		}
		enum eng_value_result r = eng_value_u64(s, len, key->min, key->max, &v);
		shards = (uint32_t)v;
		if (r == ENG_VALUE_OK)
			eng_store(base, key, &shards, sizeof(shards));
		return r == ENG_VALUE_RANGE ? ENG_VALUE_SYNTAX : r; /* the text says the range */
	}
	case ENG_KEY_ADDRESS: {
		struct eng_hostport hp;
		enum eng_value_result r = eng_value_hostport(s, len, 0, &hp);
		if (r == ENG_VALUE_OK && (hp.kind == ENG_HOST_NAME || hp.port == 0))
			r = ENG_VALUE_SYNTAX;
		if (r == ENG_VALUE_OK)
			eng_store(base, key, &hp, sizeof(hp));
		return r == ENG_VALUE_RANGE ? ENG_VALUE_SYNTAX : r;
	}
	case ENG_KEY_TLS:
	case ENG_KEY_SYNC:
		return eng_store_word(base, key, s, len);
	case ENG_KEY_PATH:
	case ENG_KEY_HOSTNAME:
		return eng_store_text(base, key, s, len);
	default:
		return eng_store_number(base, key, s, len);
	}
}

/* ---------------------------------------------------------------------------
 * Lists.
 */

static bool
eng_parse_pattern(const char *s, size_t len, char *name, bool *subdomains)
{
	ENG_ASSERT(name != NULL && subdomains != NULL);
	*subdomains = false;
	if (len >= 2 && s[0] == '*' && s[1] == '.') {
		s += 2;
		len -= 2;
		*subdomains = true;
	} else if (len >= 1 && s[0] == '.') {
		s += 1;
		len -= 1;
		*subdomains = true;
	}
	if (eng_value_domain(s, len) != ENG_VALUE_OK)
		return false;
	eng_copy_lower(name, ENG_DOMAIN_SIZE, s, len);
	return true;
}

static void
eng_parse_list_full(struct eng_parse *ctx, const struct eng_key *key, uint32_t max)
{
	eng_parse_fail(ctx, ctx->lineno, "[%s] %s: too many items (at most %u)", ctx->section,
		       key->name, max);
}

static void
eng_parse_route_domain(struct eng_parse *ctx, const struct eng_key *key, const char *item,
		       size_t len)
{
	struct eng_config *cfg = ctx->cfg;
	struct eng_route *route = &cfg->routes[ctx->index];
	if (len == 1 && item[0] == '*') {
		for (uint32_t i = 0; i < cfg->route_count; i++) {
			const struct eng_route *other = &cfg->routes[i];
			if (i != ctx->index && other->is_default) {
				eng_parse_fail(ctx, ctx->lineno,
					       "[%s] %s: * is already routed by [route %s] (line %u)",
					       ctx->section, key->name, other->name, other->line);
				return;
			}
		}
		route->is_default = true;
		route->domain_count++;
		return;
	}
	struct eng_route_domain entry;
	memset(&entry, 0, sizeof(entry));
	if (!eng_parse_pattern(item, len, entry.name, &entry.subdomains)) {
		eng_parse_value_error(ctx, key, ENG_VALUE_SYNTAX, item, len);
		return;
	}
	if (cfg->route_domain_count == ENG_CONFIG_ROUTE_DOMAINS_MAX) {
		eng_parse_list_full(ctx, key, ENG_CONFIG_ROUTE_DOMAINS_MAX);
		return;
	}
	if (cfg->route_domain_count == ctx->route_domain_capacity) {
		uint32_t capacity = ENG_MAX(16u, ctx->route_domain_capacity * 2);
		void *p = realloc(cfg->route_domains, capacity * sizeof(*cfg->route_domains));
		if (p == NULL) {
			eng_parse_oom(ctx);
			return;
		}
		cfg->route_domains = p;
		ctx->route_domain_capacity = capacity;
	}
	entry.route_index = ctx->index;
	entry.line = ctx->lineno;
	cfg->route_domains[cfg->route_domain_count++] = entry;
	route->domain_count++;
}

static void
eng_parse_route_host(struct eng_parse *ctx, const struct eng_key *key, const char *item,
		     size_t len)
{
	struct eng_route *route = &ctx->cfg->routes[ctx->index];
	struct eng_hostport hp;
	enum eng_value_result r = eng_value_hostport(item, len, 0, &hp);
	if (r != ENG_VALUE_OK) {
		eng_parse_value_error(ctx, key, ENG_VALUE_SYNTAX, item, len);
		return;
	}
	if (route->host_count == ENG_CONFIG_ROUTE_HOSTS_MAX) {
		eng_parse_list_full(ctx, key, ENG_CONFIG_ROUTE_HOSTS_MAX);
		return;
	}
	void *p = realloc(route->hosts, (route->host_count + 1) * sizeof(*route->hosts));
	if (p == NULL) {
		eng_parse_oom(ctx);
		return;
	}
	route->hosts = p;
	route->hosts[route->host_count++] = hp;
}

static void
eng_parse_retry_item(struct eng_parse *ctx, const struct eng_key *key, const char *item,
		     size_t len)
{
	struct eng_engine *engine = &ctx->cfg->engine;
	uint64_t ns = 0;
	enum eng_value_result r = eng_value_duration(item, len, &ns);
	if (r == ENG_VALUE_OK && (ns < key->min || ns > key->max))
		r = ENG_VALUE_RANGE;
	if (r != ENG_VALUE_OK) {
		eng_parse_value_error(ctx, key, r, item, len);
		return;
	}
	if (engine->retry_count == ENG_CONFIG_RETRY_STEPS_MAX) {
		eng_parse_list_full(ctx, key, ENG_CONFIG_RETRY_STEPS_MAX);
		return;
	}
	engine->retry_schedule_ns[engine->retry_count++] = ns;
}

static void
eng_parse_dns_item(struct eng_parse *ctx, const struct eng_key *key, const char *item,
		   size_t len)
{
	struct eng_engine *engine = &ctx->cfg->engine;
	struct eng_hostport hp;
	enum eng_value_result r = eng_value_hostport(item, len, 53, &hp);
	if (r != ENG_VALUE_OK || hp.kind == ENG_HOST_NAME) {
		eng_parse_value_error(ctx, key, ENG_VALUE_SYNTAX, item, len);
		return;
	}
	if (engine->dns_server_count == ENG_CONFIG_DNS_SERVERS_MAX) {
		eng_parse_list_full(ctx, key, ENG_CONFIG_DNS_SERVERS_MAX);
		return;
	}
	engine->dns_servers[engine->dns_server_count++] = hp;
}

static void
eng_parse_network_item(struct eng_parse *ctx, const struct eng_key *key, const char *item,
		       size_t len)
{
	struct eng_listener *listener = &ctx->cfg->listeners[ctx->index];
	struct eng_cidr cidr;
	if (eng_value_cidr(item, len, &cidr) != ENG_VALUE_OK) {
		eng_parse_value_error(ctx, key, ENG_VALUE_SYNTAX, item, len);
		return;
	}
	if (listener->network_count == ENG_CONFIG_NETWORKS_MAX) {
		eng_parse_list_full(ctx, key, ENG_CONFIG_NETWORKS_MAX);
		return;
	}
	listener->networks[listener->network_count++] = cidr;
}

/* A first assignment replaces the default list; a continuation appends. */
static void
eng_parse_list_reset(struct eng_parse *ctx, const struct eng_key *key)
{
	struct eng_config *cfg = ctx->cfg;
	switch (key->type) {
	case ENG_KEY_RETRY:
		cfg->engine.retry_count = 0;
		memset(cfg->engine.retry_schedule_ns, 0, sizeof(cfg->engine.retry_schedule_ns));
		break;
	case ENG_KEY_DNS:
		cfg->engine.dns_server_count = 0;
		memset(cfg->engine.dns_servers, 0, sizeof(cfg->engine.dns_servers));
		break;
	case ENG_KEY_NETWORKS:
		cfg->listeners[ctx->index].network_count = 0;
		memset(cfg->listeners[ctx->index].networks, 0,
		       sizeof(cfg->listeners[ctx->index].networks));
		break;
	default:
		break; /* route lists start empty and are assigned once */
	}
}

static void
eng_parse_list(struct eng_parse *ctx, const struct eng_key *key, const char *value, bool append)
{
	ENG_ASSERT(eng_key_is_list(key));
	size_t len = strlen(value);
	if (!append)
		eng_parse_list_reset(ctx, key);
	struct eng_list list;
	eng_list_init(&list, value, len);
	/* Every item consumes at least one character: bounded by len + 1 turns. */
	for (size_t turn = 0; turn <= len && !ctx->failed; turn++) {
		const char *item = NULL;
		size_t item_len = 0;
		enum eng_list_result lr = eng_list_next(&list, &item, &item_len);
		if (lr == ENG_LIST_END)
			return;
		if (lr == ENG_LIST_EMPTY_ITEM) {
			eng_parse_bad_value(ctx, key->name, "no empty items between commas",
					    value, len);
			return;
		}
		if (key->type == ENG_KEY_RETRY)
			eng_parse_retry_item(ctx, key, item, item_len);
		else if (key->type == ENG_KEY_DNS)
			eng_parse_dns_item(ctx, key, item, item_len);
		else if (key->type == ENG_KEY_NETWORKS)
			eng_parse_network_item(ctx, key, item, item_len);
		else if (key->type == ENG_KEY_DOMAINS)
			eng_parse_route_domain(ctx, key, item, item_len);
		else
			eng_parse_route_host(ctx, key, item, item_len);
	}
	ENG_ASSERT(ctx->failed);
}

/* ---------------------------------------------------------------------------
 * Sections.
 */

static void eng_listener_defaults(struct eng_listener *listener, const char *name,
				  size_t name_len);

/* Route and listener names: 1..63 of letters, digits, '.', '_' and '-'. */
static bool
eng_section_name_ok(const char *s, size_t len)
{
	if (len == 0 || len >= ENG_CONFIG_NAME_SIZE)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!eng_is_alpha(c) && !eng_is_digit(c) && c != '.' && c != '_' && c != '-')
			return false;
	}
	return true;
}

static void
eng_parse_singleton(struct eng_parse *ctx, enum eng_section_kind kind, size_t name_len,
		    uint32_t *first_line, uint32_t *key_lines)
{
	if (name_len > 0) {
		eng_parse_fail(ctx, ctx->lineno, "[%s]: takes no name", ctx->section);
		return;
	}
	if (*first_line != 0) {
		eng_parse_fail(ctx, ctx->lineno, "[%s]: duplicate section (first at line %u)",
			       ctx->section, *first_line);
		return;
	}
	*first_line = ctx->lineno;
	ctx->kind = kind;
	ctx->key_lines = key_lines;
}

/* Make room for one more element of an array grown by doubling. */
static bool
eng_parse_grow(struct eng_parse *ctx, void **array, uint32_t count, uint32_t *capacity,
	       size_t element_size)
{
	ENG_ASSERT(count <= *capacity);
	if (count < *capacity)
		return true;
	uint32_t next = ENG_MAX(16u, *capacity * 2);
	void *p = realloc(*array, (size_t)next * element_size);
	if (p == NULL) {
		eng_parse_oom(ctx);
		return false;
	}
	*array = p;
	*capacity = next;
	return true;
}

static void
eng_parse_domain_section(struct eng_parse *ctx, const char *name, size_t len)
{
	struct eng_config *cfg = ctx->cfg;
	char lower[ENG_DOMAIN_SIZE];
	bool subdomains = false;
	if (!eng_parse_pattern(name, len, lower, &subdomains)) {
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s]: expected [domain NAME] with a domain name like example.com "
			       "or .example.com",
			       ctx->section);
		return;
	}
	if (cfg->domain_count == ENG_CONFIG_DOMAINS_MAX) {
		eng_parse_fail(ctx, ctx->lineno, "[%s]: too many [domain] sections (at most %u)",
			       ctx->section, ENG_CONFIG_DOMAINS_MAX);
		return;
	}
	if (!eng_parse_grow(ctx, (void **)&cfg->domains, cfg->domain_count, &ctx->domain_capacity,
			    sizeof(*cfg->domains)))
		return;
	struct eng_domain *d = &cfg->domains[cfg->domain_count];
	memset(d, 0, sizeof(*d));
	memcpy(d->name, lower, sizeof(lower));
	d->subdomains = subdomains;
	d->line = ctx->lineno;
	ctx->index = cfg->domain_count++;
	ctx->kind = ENG_SECTION_DOMAIN;
	memset(ctx->scratch_lines, 0, sizeof(ctx->scratch_lines));
	ctx->key_lines = ctx->scratch_lines;
}

static void
eng_parse_route_section(struct eng_parse *ctx, const char *name, size_t len)
{
	struct eng_config *cfg = ctx->cfg;
	if (!eng_section_name_ok(name, len)) {
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s]: expected [route NAME], NAME of 1 to 63 letters, digits, "
			       "'.', '_' or '-'",
			       ctx->section);
		return;
	}
	for (uint32_t i = 0; i < cfg->route_count; i++) {
		if (eng_name_equal(cfg->routes[i].name, strlen(cfg->routes[i].name), name, len)) {
			eng_parse_fail(ctx, ctx->lineno, "[%s]: duplicate section (first at line %u)",
				       ctx->section, cfg->routes[i].line);
			return;
		}
	}
	if (cfg->route_count == ENG_CONFIG_ROUTES_MAX) {
		eng_parse_fail(ctx, ctx->lineno, "[%s]: too many [route] sections (at most %u)",
			       ctx->section, ENG_CONFIG_ROUTES_MAX);
		return;
	}
	if (!eng_parse_grow(ctx, (void **)&cfg->routes, cfg->route_count, &ctx->route_capacity,
			    sizeof(*cfg->routes)))
		return;
	struct eng_route *route = &cfg->routes[cfg->route_count];
	memset(route, 0, sizeof(*route));
	memcpy(route->name, name, len);
	route->line = ctx->lineno;
	ctx->index = cfg->route_count++;
	ctx->kind = ENG_SECTION_ROUTE;
	memset(ctx->scratch_lines, 0, sizeof(ctx->scratch_lines));
	ctx->key_lines = ctx->scratch_lines;
}

static void
eng_parse_listener_section(struct eng_parse *ctx, const char *name, size_t len)
{
	struct eng_config *cfg = ctx->cfg;
	if (!eng_section_name_ok(name, len)) {
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s]: expected [listener NAME], NAME of 1 to 63 letters, digits, "
			       "'.', '_' or '-'",
			       ctx->section);
		return;
	}
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		const struct eng_listener *l = &cfg->listeners[i];
		if (eng_name_equal(l->name, strlen(l->name), name, len)) {
			eng_parse_fail(ctx, ctx->lineno, "[%s]: duplicate section (first at line %u)",
				       ctx->section, l->line);
			return;
		}
	}
	if (cfg->listener_count == ENG_CONFIG_LISTENERS_MAX) {
		eng_parse_fail(ctx, ctx->lineno, "[%s]: too many [listener] sections (at most %u)",
			       ctx->section, ENG_CONFIG_LISTENERS_MAX);
		return;
	}
	struct eng_listener *listener = &cfg->listeners[cfg->listener_count];
	eng_listener_defaults(listener, name, len);
	listener->hostname[0] = '\0'; /* resolved to [engine] hostname at the end */
	listener->line = ctx->lineno;
	ctx->index = cfg->listener_count++;
	ctx->kind = ENG_SECTION_LISTENER;
	ctx->key_lines = ctx->listener_lines[ctx->index];
}

/* A section header's text between '[' and ']'. */
static void
eng_parse_section(struct eng_parse *ctx, const char *text, size_t len)
{
	while (len > 0 && eng_is_blank(text[0])) {
		text++;
		len--;
	}
	while (len > 0 && eng_is_blank(text[len - 1]))
		len--;
	size_t word_len = 0;
	while (word_len < len && !eng_is_blank(text[word_len]))
		word_len++;
	const char *name = text + word_len;
	size_t name_len = len - word_len;
	while (name_len > 0 && eng_is_blank(name[0])) {
		name++;
		name_len--;
	}
	/* The section as the messages show it: "kind name", both echoed safely. */
	char word[32];
	char shown[ENG_SECTION_TEXT_SIZE - 40];
	eng_echo(text, ENG_MIN(word_len, sizeof(word) - 4), word, sizeof(word));
	eng_echo(name, name_len, shown, sizeof(shown));
	snprintf(ctx->section, sizeof(ctx->section), "%s%s%s", word, name_len > 0 ? " " : "",
		 shown);
	ctx->prev_key[0] = '\0';
	ctx->kind = ENG_SECTION_NONE;
	if (word_len == 6 && memcmp(text, "engine", 6) == 0)
		eng_parse_singleton(ctx, ENG_SECTION_ENGINE, name_len, &ctx->engine_line,
				    ctx->engine_lines);
	else if (word_len == 11 && memcmp(text, "destination", 11) == 0)
		eng_parse_singleton(ctx, ENG_SECTION_DESTINATION, name_len, &ctx->destination_line,
				    ctx->destination_lines);
	else if (word_len == 6 && memcmp(text, "domain", 6) == 0)
		eng_parse_domain_section(ctx, name, name_len);
	else if (word_len == 5 && memcmp(text, "route", 5) == 0)
		eng_parse_route_section(ctx, name, name_len);
	else if (word_len == 8 && memcmp(text, "listener", 8) == 0)
		eng_parse_listener_section(ctx, name, name_len);
	else
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s]: unknown section (expected [engine], [destination], "
			       "[domain NAME], [route NAME] or [listener NAME])",
			       ctx->section);
}

/* ---------------------------------------------------------------------------
 * The inih reader and handler.
 */

/* Look at a physical line before inih does: indentation, section headers. */
static void
eng_parse_note_line(struct eng_parse *ctx, const char *line, size_t len)
{
	size_t i = 0;
	while (i < len && eng_is_blank(line[i]))
		i++;
	ctx->indented = i > 0;
	if (i == len || line[i] != '[')
		return;
	/* inih reads an indented line after a key as a continuation of that key. */
	if (ctx->indented && ctx->prev_key[0] != '\0')
		return;
	const char *open = line + i;
	const char *close = memchr(open, ']', len - i);
	if (close == NULL)
		return; /* inih reports the syntax error */
	size_t after = (size_t)(close - line) + 1;
	while (after < len && (eng_is_blank(line[after]) || line[after] == '\r'))
		after++;
	if (after < len && line[after] != ';' && line[after] != '#') {
		eng_parse_fail(ctx, ctx->lineno, "unexpected text after the section header");
		return;
	}
	eng_parse_section(ctx, open + 1, (size_t)(close - open) - 1);
}

/* inih's fgets: one physical line per call, so lineno is exact. */
static char *
eng_parse_reader(char *str, int num, void *stream)
{
	struct eng_parse *ctx = stream;
	ENG_ASSERT(ctx != NULL && str != NULL);
	ENG_ASSERT(num > 2);
	if (ctx->failed || ctx->pos >= ctx->len)
		return NULL;
	const char *line = ctx->buf + ctx->pos;
	size_t rest = ctx->len - ctx->pos;
	const char *nl = memchr(line, '\n', rest);
	size_t line_len = nl != NULL ? (size_t)(nl - line) : rest;
	ctx->pos += line_len + (nl != NULL ? 1 : 0);
	ctx->lineno++;
	if (ctx->lineno == 1 && line_len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
		line += 3; /* a UTF-8 byte order mark */
		line_len -= 3;
	}
	if (memchr(line, '\0', line_len) != NULL) {
		eng_parse_fail(ctx, ctx->lineno, "NUL byte in the line");
		return NULL;
	}
	if (line_len + 2 > (size_t)num) {
		eng_parse_fail(ctx, ctx->lineno,
			       "line too long (at most %d characters; continue a list on "
			       "indented lines)",
			       num - 2);
		return NULL;
	}
	memcpy(str, line, line_len);
	str[line_len] = '\n';
	str[line_len + 1] = '\0';
	eng_parse_note_line(ctx, line, line_len);
	return ctx->failed ? NULL : str;
}

static uint32_t
eng_edit_distance(const char *a, const char *b)
{
	size_t a_len = strlen(a);
	size_t b_len = strlen(b);
	uint32_t row[ENG_KEY_NAME_SIZE + 1];
	if (a_len > ENG_KEY_NAME_SIZE || b_len > ENG_KEY_NAME_SIZE)
		return UINT32_MAX;
	for (size_t j = 0; j <= b_len; j++)
		row[j] = (uint32_t)j;
	for (size_t i = 1; i <= a_len; i++) {
		uint32_t diagonal = row[0];
		row[0] = (uint32_t)i;
		for (size_t j = 1; j <= b_len; j++) {
			uint32_t above = row[j];
			uint32_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			row[j] = ENG_MIN(ENG_MIN(row[j] + 1, row[j - 1] + 1), diagonal + cost);
			diagonal = above;
		}
	}
	return row[b_len];
}

static void
eng_parse_unknown_key(struct eng_parse *ctx, const char *name)
{
	static const enum eng_section_kind kinds[] = {ENG_SECTION_ENGINE, ENG_SECTION_DESTINATION,
						      ENG_SECTION_ROUTE, ENG_SECTION_LISTENER};
	char echo[ENG_ECHO_MAX + 8];
	eng_echo(name, strlen(name), echo, sizeof(echo));
	struct eng_key_table here = eng_keys_of(ctx->kind);
	for (size_t i = 0; i < ENG_ARRAY_COUNT(kinds); i++) {
		struct eng_key_table there = eng_keys_of(kinds[i]);
		if (there.keys != here.keys && eng_key_index(kinds[i], name) >= 0) {
			eng_parse_fail(ctx, ctx->lineno, "[%s] %s: unknown key (it belongs in %s)",
				       ctx->section, echo, there.section);
			return;
		}
	}
	const char *best = NULL;
	uint32_t best_distance = 3; /* suggest within two edits */
	for (uint32_t i = 0; i < here.count; i++) {
		uint32_t d = eng_edit_distance(name, here.keys[i].name);
		if (d < best_distance) {
			best_distance = d;
			best = here.keys[i].name;
		}
	}
	if (best != NULL)
		eng_parse_fail(ctx, ctx->lineno, "[%s] %s: unknown key (did you mean %s?)",
			       ctx->section, echo, best);
	else
		eng_parse_fail(ctx, ctx->lineno, "[%s] %s: unknown key", ctx->section, echo);
}

static void
eng_parse_assign(struct eng_parse *ctx, const struct eng_key *key, uint32_t bit,
		 const char *name, const char *value)
{
	uint64_t *mask = eng_parse_section_mask(ctx);
	if ((*mask & (1ull << bit)) != 0) {
		eng_parse_fail(ctx, ctx->lineno, "[%s] %s: duplicate key (first at line %u)",
			       ctx->section, key->name, ctx->key_lines[bit]);
		return;
	}
	if (eng_key_is_list(key)) {
		eng_parse_list(ctx, key, value, false);
	} else {
		size_t len = strlen(value);
		enum eng_value_result r =
			eng_store_scalar(eng_parse_section_base(ctx), key, value, len);
		if (r != ENG_VALUE_OK)
			eng_parse_value_error(ctx, key, r, value, len);
	}
	if (ctx->failed)
		return;
	*mask |= 1ull << bit;
	ctx->key_lines[bit] = ctx->lineno;
	snprintf(ctx->prev_key, sizeof(ctx->prev_key), "%s", name);
}

static void
eng_parse_continue(struct eng_parse *ctx, const struct eng_key *key, const char *value)
{
	if (!eng_key_is_list(key)) {
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s] %s: an indented line continues the previous key, and %s "
			       "takes one value (do not indent keys)",
			       ctx->section, key->name, key->name);
		return;
	}
	if (strchr(value, '=') != NULL) {
		eng_parse_fail(ctx, ctx->lineno,
			       "[%s] %s: an indented line continues the list of %s; keys must "
			       "start at the beginning of the line",
			       ctx->section, key->name, key->name);
		return;
	}
	eng_parse_list(ctx, key, value, true);
}

static int
eng_parse_handler(void *user, const char *section, const char *name, const char *value)
{
	struct eng_parse *ctx = user;
	ENG_ASSERT(ctx != NULL && section != NULL);
	ENG_ASSERT(name != NULL && value != NULL);
	if (ctx->failed)
		return 0;
	if (name[0] == '\0') {
		eng_parse_fail(ctx, ctx->lineno, "syntax error: a value without a key");
		return 0;
	}
	if (ctx->kind == ENG_SECTION_NONE) {
		char echo[ENG_ECHO_MAX + 8];
		eng_echo(name, strlen(name), echo, sizeof(echo));
		eng_parse_fail(ctx, ctx->lineno, "%s: key before the first [section]", echo);
		return 0;
	}
	int32_t bit = eng_key_index(ctx->kind, name);
	if (bit < 0) {
		eng_parse_unknown_key(ctx, name);
		return 0;
	}
	const struct eng_key *key = &eng_keys_of(ctx->kind).keys[bit];
	if (ctx->indented && ctx->prev_key[0] != '\0' && strcmp(ctx->prev_key, name) == 0)
		eng_parse_continue(ctx, key, value);
	else
		eng_parse_assign(ctx, key, (uint32_t)bit, name, value);
	return ctx->failed ? 0 : 1;
}

/* ---------------------------------------------------------------------------
 * Defaults.
 */

static void
eng_default_hostname(char *out, size_t out_size)
{
	char buf[256];
	ENG_ASSERT(out_size == ENG_DOMAIN_SIZE);
	if (gethostname(buf, sizeof(buf)) != 0)
		buf[0] = '\0';
	buf[sizeof(buf) - 1] = '\0';
	size_t len = strlen(buf);
	if (eng_value_domain(buf, len) == ENG_VALUE_OK)
		eng_copy_lower(out, out_size, buf, len);
	else
		snprintf(out, out_size, "localhost");
}

static void
eng_engine_defaults(struct eng_engine *e)
{
	static const uint64_t retry_ns[] = {
		5 * ENG_NS_PER_MIN, 10 * ENG_NS_PER_MIN, 20 * ENG_NS_PER_MIN, 40 * ENG_NS_PER_MIN,
		ENG_NS_PER_H,	    2 * ENG_NS_PER_H,	 4 * ENG_NS_PER_H,
	};
	struct spool_config sc;
	spool_config_defaults(&sc);
	memset(e, 0, sizeof(*e));
	e->shards = 0;
	snprintf(e->spool_dir, sizeof(e->spool_dir), "spool");
	eng_default_hostname(e->hostname, sizeof(e->hostname));
	e->max_connections = 1000;
	e->max_queue_lifetime_ns = 5 * ENG_NS_PER_D;
	e->retry_count = ENG_ARRAY_COUNT(retry_ns);
	memcpy(e->retry_schedule_ns, retry_ns, sizeof(retry_ns));
	e->retry_jitter_permille = 200;
	snprintf(e->delivery_log, sizeof(e->delivery_log), "ringmail-delivery.log");
	e->delivery_log_max_size = ENG_GIB;
	e->dns_server_count = 0;
	e->smtp_port = 25;
	e->bounces = true;
	e->hold = false;
	e->delivery_log_keep = 5;
	e->stop_grace_ns = 5 * ENG_NS_PER_S;
	e->delivery_connections = 64;
	e->tls_session_cache_size = 1024;
	e->memory_budget = ENG_GIB;
	e->segment_size = sc.segment_size;
	e->journal_segment_size = sc.journal_segment_size;
	e->commit_size_max = sc.commit_size_max;
	e->commit_slots = sc.commit_slots;
	e->free_space_reserve = sc.free_space_reserve;
	e->use_fdatasync = sc.use_fdatasync;
}

static void
eng_destination_defaults(struct eng_destination *d)
{
	memset(d, 0, sizeof(*d));
	d->max_connections = 20;
	d->max_messages_per_connection = 100;
	d->max_recipients_per_transaction = 100;
	d->max_message_rate = (struct eng_rate){0, ENG_NS_PER_S};
	d->max_message_burst = eng_rate_default_burst(&d->max_message_rate);
	d->max_connection_rate = (struct eng_rate){0, ENG_NS_PER_S};
	d->max_connection_burst = eng_rate_default_burst(&d->max_connection_rate);
	d->idle_timeout_ns = 5 * ENG_NS_PER_S;
	d->connect_timeout_ns = 30 * ENG_NS_PER_S;
	d->tls = ENG_TLS_OPPORTUNISTIC;
	d->greeting_timeout_ns = 5 * ENG_NS_PER_MIN;
	d->mail_timeout_ns = 5 * ENG_NS_PER_MIN;
	d->rcpt_timeout_ns = 5 * ENG_NS_PER_MIN;
	d->data_timeout_ns = 2 * ENG_NS_PER_MIN;
	d->data_block_timeout_ns = 3 * ENG_NS_PER_MIN;
	d->data_done_timeout_ns = 10 * ENG_NS_PER_MIN;
	d->tls_plaintext_fallback_time_ns = ENG_NS_PER_H;
}

static void
eng_listener_defaults(struct eng_listener *l, const char *name, size_t name_len)
{
	static const char *const networks[] = {"127.0.0.0/8", "::1/128"};
	static const char address[] = "127.0.0.1:2525";
	ENG_ASSERT(name_len > 0 && name_len < sizeof(l->name));
	memset(l, 0, sizeof(*l));
	memcpy(l->name, name, name_len);
	enum eng_value_result r = eng_value_hostport(address, sizeof(address) - 1, 0, &l->address);
	ENG_ASSERT(r == ENG_VALUE_OK);
	for (size_t i = 0; i < ENG_ARRAY_COUNT(networks); i++) {
		r = eng_value_cidr(networks[i], strlen(networks[i]), &l->networks[i]);
		ENG_ASSERT(r == ENG_VALUE_OK);
	}
	l->network_count = ENG_ARRAY_COUNT(networks);
	l->message_size_limit = 10 * ENG_MIB;
	l->recipients_max = 1000;
	l->max_connections = 1000;
	l->max_connections_per_ip = 50;
	l->command_timeout_ns = 5 * ENG_NS_PER_MIN;
	l->data_timeout_ns = 5 * ENG_NS_PER_MIN;
	l->session_deadline_ns = ENG_NS_PER_H;
}

void
eng_config_default(struct eng_config *cfg)
{
	ENG_ASSERT(cfg != NULL);
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->source, sizeof(cfg->source), "(built-in defaults)");
	eng_engine_defaults(&cfg->engine);
	eng_destination_defaults(&cfg->destination);
	cfg->default_route = -1;
	cfg->listener_count = 1;
	eng_listener_defaults(&cfg->listeners[0], "default", 7);
	memcpy(cfg->listeners[0].hostname, cfg->engine.hostname, sizeof(cfg->engine.hostname));
	ENG_ASSERT(cfg->domains == NULL && cfg->index == NULL);
}

/* ---------------------------------------------------------------------------
 * Name tables: open addressing over domain names, case-insensitive.
 */

struct eng_name_table {
	uint32_t mask;	 /* capacity - 1 */
	uint32_t *slots; /* entry index + 1; 0 = empty */
};

struct eng_config_index {
	struct eng_name_table domains; /* over cfg->domains */
	struct eng_name_table routes;  /* over cfg->route_domains */
};

typedef void eng_name_fn(const struct eng_config *cfg, uint32_t index, const char **name,
			 bool *subdomains);

static void
eng_domain_name(const struct eng_config *cfg, uint32_t index, const char **name,
		bool *subdomains)
{
	ENG_ASSERT(index < cfg->domain_count);
	*name = cfg->domains[index].name;
	*subdomains = cfg->domains[index].subdomains;
}

static void
eng_route_domain_name(const struct eng_config *cfg, uint32_t index, const char **name,
		      bool *subdomains)
{
	ENG_ASSERT(index < cfg->route_domain_count);
	*name = cfg->route_domains[index].name;
	*subdomains = cfg->route_domains[index].subdomains;
}

static uint64_t
eng_name_hash(const char *s, size_t len, bool subdomains)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)eng_lower(s[i]);
		h *= 0x100000001b3ull;
	}
	h ^= subdomains ? 1u : 0u;
	h *= 0x100000001b3ull;
	return h ^ (h >> 29);
}

/* The entry named (s, len, subdomains), or -1. Probes at most every slot. */
static int64_t
eng_table_find(const struct eng_name_table *t, const struct eng_config *cfg, eng_name_fn *fn,
	       const char *s, size_t len, bool subdomains)
{
	ENG_ASSERT(t->slots != NULL);
	uint32_t slot = (uint32_t)eng_name_hash(s, len, subdomains) & t->mask;
	for (uint32_t probe = 0; probe <= t->mask; probe++) {
		uint32_t v = t->slots[slot];
		if (v == 0)
			return -1;
		const char *name = NULL;
		bool sub = false;
		fn(cfg, v - 1, &name, &sub);
		if (sub == subdomains && eng_name_equal(name, strlen(name), s, len))
			return (int64_t)(v - 1);
		slot = (slot + 1) & t->mask;
	}
	return -1;
}

/* Insert entry index; returns the index of an equal entry already there, or index. */
static uint32_t
eng_table_insert(struct eng_name_table *t, const struct eng_config *cfg, eng_name_fn *fn,
		 uint32_t index)
{
	const char *name = NULL;
	bool sub = false;
	fn(cfg, index, &name, &sub);
	int64_t found = eng_table_find(t, cfg, fn, name, strlen(name), sub);
	if (found >= 0)
		return (uint32_t)found;
	uint32_t slot = (uint32_t)eng_name_hash(name, strlen(name), sub) & t->mask;
	for (uint32_t probe = 0; probe <= t->mask; probe++) {
		if (t->slots[slot] == 0) {
			t->slots[slot] = index + 1;
			return index;
		}
		slot = (slot + 1) & t->mask;
	}
	ENG_PANIC("name table full: sized at twice its entries");
}

static bool
eng_table_alloc(struct eng_name_table *t, uint32_t count)
{
	uint32_t capacity = 16;
	while (capacity < 2 * count)
		capacity *= 2;
	t->slots = calloc(capacity, sizeof(*t->slots));
	t->mask = capacity - 1;
	return t->slots != NULL;
}

/*
 * Best match for a domain: the exact name, else the longest ".parent"
 * pattern. The walk is bounded by len.
 */
static int64_t
eng_table_match(const struct eng_name_table *t, const struct eng_config *cfg, eng_name_fn *fn,
		const char *domain, size_t len)
{
	if (t->slots == NULL)
		return -1;
	int64_t found = eng_table_find(t, cfg, fn, domain, len, false);
	for (size_t pos = 0; found < 0 && pos < len; pos++) {
		if (domain[pos] == '.')
			found = eng_table_find(t, cfg, fn, domain + pos + 1, len - pos - 1, true);
	}
	return found;
}

/* A domain from a peer: one trailing dot dropped; false when it cannot match. */
static bool
eng_domain_key(const char *domain, size_t *len)
{
	if (domain == NULL)
		return false;
	if (*len > 0 && domain[*len - 1] == '.')
		(*len)--;
	return *len > 0 && *len < ENG_DOMAIN_SIZE;
}

/* ---------------------------------------------------------------------------
 * After the last line: inheritance, checks across keys, lookup tables.
 */

static void
eng_destination_derive(struct eng_destination *d, uint64_t set_mask)
{
	/* A burst goes with its rate: a section that sets a rate but no burst derives it. */
	if ((set_mask & (1ull << ENG_DEST_BIT_MESSAGE_RATE)) != 0 &&
	    (set_mask & (1ull << ENG_DEST_BIT_MESSAGE_BURST)) == 0)
		d->max_message_burst = eng_rate_default_burst(&d->max_message_rate);
	if ((set_mask & (1ull << ENG_DEST_BIT_CONNECTION_RATE)) != 0 &&
	    (set_mask & (1ull << ENG_DEST_BIT_CONNECTION_BURST)) == 0)
		d->max_connection_burst = eng_rate_default_burst(&d->max_connection_rate);
	ENG_ASSERT(d->max_message_burst >= 1);
	ENG_ASSERT(d->max_connection_burst >= 1);
}

static void
eng_finish_destinations(struct eng_config *cfg)
{
	eng_destination_derive(&cfg->destination, cfg->destination_set_mask);
	for (uint32_t i = 0; i < cfg->domain_count; i++) {
		struct eng_domain *d = &cfg->domains[i];
		d->effective = cfg->destination;
		for (uint32_t bit = 0; bit < ENG_ARRAY_COUNT(eng_destination_keys); bit++) {
			const struct eng_key *key = &eng_destination_keys[bit];
			if ((d->set_mask & (1ull << bit)) != 0)
				memcpy((char *)&d->effective + key->offset,
				       (const char *)&d->values + key->offset, key->size);
		}
		eng_destination_derive(&d->effective, d->set_mask);
	}
}

static void
eng_finish_routes(struct eng_parse *ctx)
{
	struct eng_config *cfg = ctx->cfg;
	for (uint32_t i = 0; i < cfg->route_count && !ctx->failed; i++) {
		struct eng_route *route = &cfg->routes[i];
		if (route->domain_count == 0 || route->host_count == 0) {
			eng_parse_fail(ctx, route->line, "[route %s]: needs %s", route->name,
				       route->domain_count == 0 ? "domains = example.com, ... (or *)"
								: "hosts = host[:port], ...");
			return;
		}
		if ((route->set_mask & (1ull << eng_key_index(ENG_SECTION_ROUTE, "port"))) == 0)
			route->port = 25;
		route->tls_is_set =
			(route->set_mask & (1ull << eng_key_index(ENG_SECTION_ROUTE, "tls"))) != 0;
		for (uint32_t h = 0; h < route->host_count; h++) {
			if (route->hosts[h].port == 0)
				route->hosts[h].port = route->port;
		}
		if (!route->is_default)
			continue;
		ENG_ASSERT(cfg->default_route < 0); /* a second "*" failed while parsing */
		cfg->default_route = (int32_t)i;
	}
}

static bool
eng_hostport_same(const struct eng_hostport *a, const struct eng_hostport *b)
{
	return a->kind == b->kind && a->port == b->port && memcmp(a->addr, b->addr, 16) == 0 &&
	       strcmp(a->host, b->host) == 0;
}

/* tls_certificate and tls_key come together; require_tls needs them. */
static int
eng_finish_listener_tls(struct eng_parse *ctx, uint32_t index)
{
	const struct eng_listener *l = &ctx->cfg->listeners[index];
	bool has_cert = l->tls_certificate[0] != '\0', has_key = l->tls_key[0] != '\0';
	const char *problem = NULL;
	if (has_cert && !has_key)
		problem = "tls_certificate is set without tls_key";
	else if (has_key && !has_cert)
		problem = "tls_key is set without tls_certificate";
	else if (l->require_tls && !has_cert)
		problem = "require_tls needs tls_certificate and tls_key";
	if (problem == NULL)
		return 0;
	eng_parse_fail(ctx, l->line != 0 ? l->line : 1, "[listener %s]: %s", l->name, problem);
	return -1;
}

static void
eng_finish_listeners(struct eng_parse *ctx)
{
	struct eng_config *cfg = ctx->cfg;
	if (cfg->listener_count == 0) {
		cfg->listener_count = 1;
		eng_listener_defaults(&cfg->listeners[0], "default", 7);
	}
	for (uint32_t i = 0; i < cfg->listener_count && !ctx->failed; i++) {
		struct eng_listener *l = &cfg->listeners[i];
		if (l->hostname[0] == '\0')
			memcpy(l->hostname, cfg->engine.hostname, sizeof(l->hostname));
		if (eng_finish_listener_tls(ctx, i) < 0)
			return;
		for (uint32_t j = 0; j < i; j++) {
			if (!eng_hostport_same(&l->address, &cfg->listeners[j].address))
				continue;
			uint32_t line = ctx->listener_lines[i][0] != 0 ? ctx->listener_lines[i][0]
								       : l->line;
			eng_parse_fail(ctx, line,
				       "[listener %s] address: %s port %u is also the address of "
				       "[listener %s]",
				       l->name, l->address.host, l->address.port,
				       cfg->listeners[j].name);
			return;
		}
	}
}

static uint64_t
eng_spool_message_max(uint64_t message_size_limit)
{
	/* Wire form: dot-stuffing adds at most one byte per three, plus trace headers. */
	uint64_t size = message_size_limit + message_size_limit / 3 + ENG_SPOOL_TRACE_SIZE;
	ENG_ASSERT(size <= SPOOL_BODY_SIZE_MAX);
	return size;
}

/* The line of an [engine] key if it was set, else of [engine], else 1. */
static uint32_t
eng_engine_key_line(const struct eng_parse *ctx, const char *name)
{
	int32_t bit = eng_key_index(ENG_SECTION_ENGINE, name);
	ENG_ASSERT(bit >= 0);
	if (ctx->engine_lines[bit] != 0)
		return ctx->engine_lines[bit];
	return ctx->engine_line != 0 ? ctx->engine_line : 1;
}

static void
eng_finish_engine(struct eng_parse *ctx)
{
	const struct eng_config *cfg = ctx->cfg;
	const struct eng_engine *e = &cfg->engine;
	uint64_t message_max = 0;
	uint64_t recipients_max = 0;
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		message_max = ENG_MAX(message_max, cfg->listeners[i].message_size_limit);
		recipients_max = ENG_MAX(recipients_max, (uint64_t)cfg->listeners[i].recipients_max);
	}
	uint64_t record_max = SPOOL_RECORD_HEADER_SIZE + SPOOL_MESSAGE_FIXED_SIZE +
			      SPOOL_ADDRESS_SIZE_MAX +
			      recipients_max * (2u + SPOOL_ADDRESS_SIZE_MAX) +
			      eng_spool_message_max(message_max) + SPOOL_RECORD_ALIGN;
	char need[32];
	eng_format_size(ENG_ALIGN_UP(record_max + 64 * ENG_KIB, (uint64_t)ENG_MIB), need,
			sizeof(need));
	if (e->retry_count == 0)
		eng_parse_fail(ctx, eng_engine_key_line(ctx, "retry_schedule"),
			       "[engine] retry_schedule: needs at least one interval");
	else if (e->segment_size % SPOOL_BLOCK_SIZE != 0)
		eng_parse_fail(ctx, eng_engine_key_line(ctx, "segment_size"),
			       "[engine] segment_size: must be a multiple of 4k");
	else if (e->journal_segment_size % SPOOL_BLOCK_SIZE != 0)
		eng_parse_fail(ctx, eng_engine_key_line(ctx, "journal_segment_size"),
			       "[engine] journal_segment_size: must be a multiple of 4k");
	else if (e->segment_size < record_max + 64 * ENG_KIB)
		eng_parse_fail(ctx, eng_engine_key_line(ctx, "segment_size"),
			       "[engine] segment_size: too small for the largest message "
			       "(message_size_limit and recipients_max of the listeners need at "
			       "least %s)",
			       need);
}

static void
eng_finish_index(struct eng_parse *ctx)
{
	struct eng_config *cfg = ctx->cfg;
	cfg->index = calloc(1, sizeof(*cfg->index));
	if (cfg->index == NULL || !eng_table_alloc(&cfg->index->domains, cfg->domain_count) ||
	    !eng_table_alloc(&cfg->index->routes, cfg->route_domain_count)) {
		eng_parse_oom(ctx);
		return;
	}
	for (uint32_t i = 0; i < cfg->domain_count; i++) {
		uint32_t first = eng_table_insert(&cfg->index->domains, cfg, eng_domain_name, i);
		if (first == i)
			continue;
		const struct eng_domain *d = &cfg->domains[i];
		eng_parse_fail(ctx, d->line, "[domain %s%s]: duplicate section (first at line %u)",
			       d->subdomains ? "." : "", d->name, cfg->domains[first].line);
		return;
	}
	for (uint32_t i = 0; i < cfg->route_domain_count; i++) {
		uint32_t first = eng_table_insert(&cfg->index->routes, cfg, eng_route_domain_name, i);
		if (first == i)
			continue;
		const struct eng_route_domain *rd = &cfg->route_domains[i];
		const struct eng_route *other = &cfg->routes[cfg->route_domains[first].route_index];
		eng_parse_fail(ctx, rd->line,
			       "[route %s] domains: %s%s is already routed by [route %s] (line %u)",
			       cfg->routes[rd->route_index].name, rd->subdomains ? "." : "",
			       rd->name, other->name, cfg->route_domains[first].line);
		return;
	}
}

static void
eng_finish(struct eng_parse *ctx)
{
	ENG_ASSERT(!ctx->failed);
	eng_finish_destinations(ctx->cfg);
	eng_finish_routes(ctx);
	if (!ctx->failed)
		eng_finish_listeners(ctx);
	if (!ctx->failed)
		eng_finish_engine(ctx);
	if (!ctx->failed)
		eng_finish_index(ctx);
}

/* ---------------------------------------------------------------------------
 * Loading.
 */

static void
eng_parse_inih_result(struct eng_parse *ctx, int ret)
{
	if (ret < 0 && !ctx->failed) {
		eng_parse_oom(ctx); /* -2: inih could not allocate its line buffer */
		return;
	}
	/* inih reports its first failing line: a syntax error we did not see. */
	if (ret > 0 && (!ctx->failed || (uint32_t)ret < ctx->error_line)) {
		ctx->failed = false;
		eng_parse_fail(ctx, (uint32_t)ret,
			       "syntax error: expected [section], key = value or a comment");
	}
}

int
eng_config_load_buffer(const char *name, const char *text, size_t len, struct eng_config *cfg,
		       char *err, size_t err_size)
{
	ENG_ASSERT(name != NULL && cfg != NULL);
	ENG_ASSERT(text != NULL || len == 0);
	ENG_ASSERT(err != NULL || err_size == 0);
	eng_config_default(cfg);
	snprintf(cfg->source, sizeof(cfg->source), "%s", name);
	cfg->listener_count = 0; /* sections add listeners; none means the default one */
	if (err != NULL && err_size > 0)
		err[0] = '\0';
	struct eng_parse *ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		snprintf(err, err_size, "%s: out of memory", name);
		eng_config_default(cfg);
		return -ENOMEM;
	}
	ctx->cfg = cfg;
	ctx->buf = text;
	ctx->len = len;
	ctx->err = err;
	ctx->err_size = err_size;
	int ret = ini_parse_stream(eng_parse_reader, ctx, eng_parse_handler, ctx);
	eng_parse_inih_result(ctx, ret);
	if (!ctx->failed)
		eng_finish(ctx);
	int result = ctx->failed ? ctx->error : 0;
	free(ctx);
	if (result != 0) {
		eng_config_free(cfg);
		eng_config_default(cfg);
	}
	ENG_ASSERT(result <= 0);
	return result;
}

const char eng_config_builtin_text[] =
	"; ringmail built-in configuration (ringmail without -c)\n"
	"[engine]\n"
	"spool_dir = ringmail-spool\n"
	"delivery_log = ringmail-delivery.log\n"
	"\n"
	"; .test is reserved (RFC 6761): these domains never resolve, so the\n"
	"; demo's messages can only reach the local sink ./tools/demo starts.\n"
	"[route demo]\n"
	"domains = .ringmail.test\n"
	"hosts = 127.0.0.1:2626\n"
	"\n"
	"[listener default]\n";

int
eng_config_load_builtin(struct eng_config *cfg, char *err, size_t err_size)
{
	ENG_ASSERT(cfg != NULL);
	return eng_config_load_buffer("(built-in configuration)", eng_config_builtin_text,
				      sizeof(eng_config_builtin_text) - 1, cfg, err, err_size);
}

int
eng_config_load_string(const char *name, const char *text, struct eng_config *cfg, char *err,
		       size_t err_size)
{
	ENG_ASSERT(text != NULL);
	return eng_config_load_buffer(name, text, strlen(text), cfg, err, err_size);
}

/* Read a whole file of at most ENG_CONFIG_FILE_SIZE_MAX bytes. */
static int
eng_read_file(const char *path, char **out, size_t *out_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char *buf = NULL;
	size_t len = 0;
	size_t capacity = 0;
	int result = 0;
	/* Every turn reads at least one byte or ends: bounded by the size cap. */
	while (result == 0) {
		if (len == capacity) {
			capacity = capacity == 0 ? 64 * ENG_KIB : capacity * 2;
			capacity = ENG_MIN(capacity, (size_t)ENG_CONFIG_FILE_SIZE_MAX + 1);
			char *p = realloc(buf, capacity);
			if (p == NULL) {
				result = -ENOMEM;
				break;
			}
			buf = p;
		}
		ssize_t n = read(fd, buf + len, capacity - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			result = n < 0 ? -errno : 0;
			break;
		}
		len += (size_t)n;
		if (len > ENG_CONFIG_FILE_SIZE_MAX)
			result = -EFBIG;
	}
	close(fd);
	if (result != 0) {
		free(buf);
		return result;
	}
	*out = buf;
	*out_len = len;
	return 0;
}

int
eng_config_load_file(const char *path, struct eng_config *cfg, char *err, size_t err_size)
{
	ENG_ASSERT(path != NULL && cfg != NULL);
	ENG_ASSERT(err != NULL || err_size == 0);
	char *buf = NULL;
	size_t len = 0;
	int r = eng_read_file(path, &buf, &len);
	if (r != 0) {
		eng_config_default(cfg);
		if (r == -EFBIG)
			snprintf(err, err_size, "%s: larger than %u bytes", path,
				 ENG_CONFIG_FILE_SIZE_MAX);
		else
			snprintf(err, err_size, "%s: %s", path, strerror(-r));
		return r;
	}
	r = eng_config_load_buffer(path, buf, len, cfg, err, err_size);
	free(buf);
	return r;
}

void
eng_config_free(struct eng_config *cfg)
{
	ENG_ASSERT(cfg != NULL);
	for (uint32_t i = 0; i < cfg->route_count; i++)
		free(cfg->routes[i].hosts);
	free(cfg->routes);
	free(cfg->domains);
	free(cfg->route_domains);
	if (cfg->index != NULL) {
		free(cfg->index->domains.slots);
		free(cfg->index->routes.slots);
		free(cfg->index);
	}
	cfg->routes = NULL;
	cfg->route_count = 0;
	cfg->domains = NULL;
	cfg->domain_count = 0;
	cfg->route_domains = NULL;
	cfg->route_domain_count = 0;
	cfg->default_route = -1;
	cfg->index = NULL;
}

/* ---------------------------------------------------------------------------
 * Lookups and derived settings.
 */

const struct eng_domain *
eng_config_domain_find(const struct eng_config *cfg, const char *domain, size_t len)
{
	ENG_ASSERT(cfg != NULL);
	if (cfg->index == NULL || !eng_domain_key(domain, &len))
		return NULL;
	int64_t i = eng_table_match(&cfg->index->domains, cfg, eng_domain_name, domain, len);
	ENG_ASSERT(i < (int64_t)cfg->domain_count);
	return i >= 0 ? &cfg->domains[i] : NULL;
}

const struct eng_destination *
eng_config_destination(const struct eng_config *cfg, const char *domain, size_t len)
{
	ENG_ASSERT(cfg != NULL);
	const struct eng_domain *d = eng_config_domain_find(cfg, domain, len);
	return d != NULL ? &d->effective : &cfg->destination;
}

const struct eng_route *
eng_config_route(const struct eng_config *cfg, const char *domain, size_t len)
{
	ENG_ASSERT(cfg != NULL);
	ENG_ASSERT(cfg->default_route < (int32_t)cfg->route_count);
	const struct eng_route *fallback =
		cfg->default_route >= 0 ? &cfg->routes[cfg->default_route] : NULL;
	if (cfg->index == NULL || !eng_domain_key(domain, &len))
		return fallback;
	int64_t i = eng_table_match(&cfg->index->routes, cfg, eng_route_domain_name, domain, len);
	if (i < 0)
		return fallback;
	ENG_ASSERT(i < (int64_t)cfg->route_domain_count);
	return &cfg->routes[cfg->route_domains[i].route_index];
}

uint32_t
eng_config_shard_count(const struct eng_config *cfg, long online_cpus)
{
	ENG_ASSERT(cfg != NULL);
	ENG_ASSERT(cfg->engine.shards <= ENG_CONFIG_SHARDS_MAX);
	if (cfg->engine.shards != 0)
		return cfg->engine.shards;
	if (online_cpus < 1)
		return 1;
	return (uint32_t)ENG_MIN(online_cpus, (long)ENG_CONFIG_SHARDS_MAX);
}

void
eng_config_spool(const struct eng_config *cfg, uint16_t shard, struct spool_config *out)
{
	ENG_ASSERT(cfg != NULL && out != NULL);
	ENG_ASSERT(cfg->listener_count >= 1);
	const struct eng_engine *e = &cfg->engine;
	spool_config_defaults(out);
	out->dir = e->spool_dir;
	out->shard = shard;
	out->segment_size = e->segment_size;
	out->journal_segment_size = e->journal_segment_size;
	out->commit_size_max = e->commit_size_max;
	out->commit_slots = e->commit_slots;
	out->free_space_reserve = e->free_space_reserve;
	out->use_fdatasync = e->use_fdatasync;
	uint64_t message_max = 0;
	uint32_t recipients_max = 0;
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		message_max = ENG_MAX(message_max, cfg->listeners[i].message_size_limit);
		recipients_max = ENG_MAX(recipients_max, cfg->listeners[i].recipients_max);
	}
	out->message_size_max = (uint32_t)eng_spool_message_max(message_max);
	out->recipients_max = recipients_max;
	ENG_ASSERT(out->recipients_max >= 1 && out->recipients_max <= SPOOL_RECIPIENTS_MAX);
}

uint64_t
eng_config_retry_delay_ns(const struct eng_config *cfg, uint32_t deferrals, uint32_t random)
{
	ENG_ASSERT(cfg != NULL);
	ENG_ASSERT(deferrals >= 1);
	const struct eng_engine *e = &cfg->engine;
	ENG_ASSERT(e->retry_count >= 1 && e->retry_count <= ENG_CONFIG_RETRY_STEPS_MAX);
	ENG_ASSERT(e->retry_jitter_permille <= 1000);
	uint64_t base = e->retry_schedule_ns[ENG_MIN(deferrals, e->retry_count) - 1];
	/* base <= 365 days, so base * 1000 fits; the spread product needs 128 bits. */
	uint64_t spread = base * e->retry_jitter_permille / 1000;
	uint64_t offset = (uint64_t)(((unsigned __int128)(2 * spread) * random) >> 32);
	uint64_t delay = base - spread + offset;
	ENG_ASSERT(delay <= base + spread);
	return ENG_MAX(delay, ENG_NS_PER_MS);
}

static bool
eng_cidr_contains(const struct eng_cidr *c, uint8_t family, const uint8_t *addr)
{
	if (c->family != family)
		return false;
	uint32_t full = c->prefix_len / 8u;
	uint32_t rest = c->prefix_len % 8u;
	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest));
	return (c->addr[full] & mask) == (addr[full] & mask);
}

bool
eng_listener_allows(const struct eng_listener *listener, const struct sockaddr *sa)
{
	ENG_ASSERT(listener != NULL && sa != NULL);
	ENG_ASSERT(listener->network_count <= ENG_CONFIG_NETWORKS_MAX);
	static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	uint8_t family = 0;
	const uint8_t *addr = NULL;
	if (sa->sa_family == AF_INET) {
		family = 4;
		addr = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		family = 6;
		addr = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(addr, v4_mapped, sizeof(v4_mapped)) == 0) {
			family = 4;
			addr += sizeof(v4_mapped);
		}
	} else {
		return false;
	}
	for (uint32_t i = 0; i < listener->network_count; i++) {
		if (eng_cidr_contains(&listener->networks[i], family, addr))
			return true;
	}
	return false;
}

int
eng_hostport_sockaddr(const struct eng_hostport *hp, struct sockaddr_storage *out,
		      socklen_t *out_len)
{
	ENG_ASSERT(hp != NULL && out != NULL && out_len != NULL);
	memset(out, 0, sizeof(*out));
	if (hp->kind == ENG_HOST_IPV4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(hp->port);
		memcpy(&sin->sin_addr, hp->addr, 4);
		*out_len = sizeof(*sin);
		return 0;
	}
	if (hp->kind == ENG_HOST_IPV6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)out;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(hp->port);
		memcpy(&sin6->sin6_addr, hp->addr, 16);
		*out_len = sizeof(*sin6);
		return 0;
	}
	ENG_ASSERT(hp->kind == ENG_HOST_NAME);
	return -EINVAL;
}

/* ---------------------------------------------------------------------------
 * Reload check.
 */

__attribute__((format(printf, 2, 3))) static void
eng_changes_restart(struct eng_config_changes *out, const char *fmt, ...)
{
	if (out->restart_count == ENG_CONFIG_CHANGES_MAX)
		return; /* the first ENG_CONFIG_CHANGES_MAX are enough to act on */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->restart[out->restart_count], sizeof(out->restart[0]), fmt, ap);
	va_end(ap);
	out->restart_count++;
}

static bool
eng_key_differs(const struct eng_key *key, const void *a, const void *b)
{
	const char *pa = (const char *)a;
	const char *pb = (const char *)b;
	if (key->count_offset != ENG_NO_COUNT &&
	    memcmp(pa + key->count_offset, pb + key->count_offset, sizeof(uint32_t)) != 0)
		return true;
	return memcmp(pa + key->offset, pb + key->offset, key->size) != 0;
}

static bool
eng_destination_differs(const struct eng_destination *a, const struct eng_destination *b)
{
	for (size_t i = 0; i < ENG_ARRAY_COUNT(eng_destination_keys); i++) {
		if (eng_key_differs(&eng_destination_keys[i], a, b))
			return true;
	}
	return false;
}

static bool
eng_domains_differ(const struct eng_config *a, const struct eng_config *b)
{
	if (eng_destination_differs(&a->destination, &b->destination) ||
	    a->domain_count != b->domain_count)
		return true;
	for (uint32_t i = 0; i < a->domain_count; i++) {
		const struct eng_domain *da = &a->domains[i];
		const struct eng_domain *db = &b->domains[i];
		if (strcmp(da->name, db->name) != 0 || da->subdomains != db->subdomains ||
		    eng_destination_differs(&da->effective, &db->effective))
			return true;
	}
	return false;
}

static bool
eng_routes_differ(const struct eng_config *a, const struct eng_config *b)
{
	if (a->route_count != b->route_count || a->route_domain_count != b->route_domain_count ||
	    a->default_route != b->default_route)
		return true;
	for (uint32_t i = 0; i < a->route_count; i++) {
		const struct eng_route *ra = &a->routes[i];
		const struct eng_route *rb = &b->routes[i];
		if (strcmp(ra->name, rb->name) != 0 || ra->is_default != rb->is_default ||
		    ra->port != rb->port || ra->host_count != rb->host_count)
			return true;
		for (uint32_t h = 0; h < ra->host_count; h++) {
			if (!eng_hostport_same(&ra->hosts[h], &rb->hosts[h]))
				return true;
		}
	}
	for (uint32_t i = 0; i < a->route_domain_count; i++) {
		const struct eng_route_domain *x = &a->route_domains[i];
		const struct eng_route_domain *y = &b->route_domains[i];
		if (strcmp(x->name, y->name) != 0 || x->subdomains != y->subdomains ||
		    x->route_index != y->route_index)
			return true;
	}
	return false;
}

static void
eng_compare_listeners(const struct eng_config *a, const struct eng_config *b,
		      struct eng_config_changes *out)
{
	bool same_set = a->listener_count == b->listener_count;
	for (uint32_t i = 0; same_set && i < a->listener_count; i++)
		same_set = strcmp(a->listeners[i].name, b->listeners[i].name) == 0;
	if (!same_set) {
		eng_changes_restart(out, "[listener] sections added, removed or renamed");
		return;
	}
	for (uint32_t i = 0; i < a->listener_count; i++) {
		for (size_t k = 0; k < ENG_ARRAY_COUNT(eng_listener_keys); k++) {
			const struct eng_key *key = &eng_listener_keys[k];
			if (!eng_key_differs(key, &a->listeners[i], &b->listeners[i]))
				continue;
			if (key->restart)
				eng_changes_restart(out, "[listener %s] %s", a->listeners[i].name,
						    key->name);
			else
				out->listeners_changed = true;
		}
	}
}

uint32_t
eng_config_compare(const struct eng_config *running, const struct eng_config *next,
		   struct eng_config_changes *out)
{
	ENG_ASSERT(running != NULL && next != NULL);
	ENG_ASSERT(out != NULL);
	memset(out, 0, sizeof(*out));
	for (size_t k = 0; k < ENG_ARRAY_COUNT(eng_engine_keys); k++) {
		const struct eng_key *key = &eng_engine_keys[k];
		if (!eng_key_differs(key, &running->engine, &next->engine))
			continue;
		if (key->restart)
			eng_changes_restart(out, "[engine] %s", key->name);
		else
			out->engine_changed = true;
	}
	eng_compare_listeners(running, next, out);
	out->destinations_changed = eng_domains_differ(running, next);
	out->routes_changed = eng_routes_differ(running, next);
	ENG_ASSERT(out->restart_count <= ENG_CONFIG_CHANGES_MAX);
	return out->restart_count;
}
