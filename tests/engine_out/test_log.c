/*
 * test_log.c - delivery log lines: the exact line for each event type,
 * null for what does not apply, JSON string escaping (RFC 8259 section 7)
 * with UTF-8 validation (RFC 3629), bounds on every field and on the line,
 * the caller's buffer never overrun, ISO 8601 UTC times, and a seeded
 * random test where a strict JSON validator (below, written from RFC 8259
 * independently of eng_log.c) must accept every line.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_log.h"

#define S(x) x, sizeof(x) - 1

static const uint64_t t0 = 1714564800123456789ull; /* 2024-05-01T12:00:00.123Z */

static const struct eng_log_tls tls13 = {
	.used = true, .verified = true, .version = S("TLSv1.3"),
	.cipher = S("TLS_AES_256_GCM_SHA384"),
};

static struct eng_log_record
bounce_record(void)
{
	return (struct eng_log_record){
		.event = ENG_LOG_BOUNCE, .time_ns = t0,
		.queue_id = S("0100000000000000070000a000"), .sender = S("news@example.org"),
		.recipient = S("bob@example.com"), .domain = S("example.com"),
		.mx_host = S("mx1.example.com"), .mx_ip = S("192.0.2.25"), .attempt = 2,
		.code = 550, .enhanced = { 5, 1, 1 }, .text = S("User \"bob\" unknown"),
		.category = ENG_BOUNCE_BAD_MAILBOX, .queued_ms = 61234, .connect_ms = 12,
		.transaction_ms = 80, .tls = &tls13,
	};
}

/* Format into an exact-size heap buffer; returns it NUL-terminated. */
static char *
format(const struct eng_log_record *rec)
{
	size_t need = eng_log_format(rec, NULL, 0);
	cr_assert_gt(need, 0);
	char *out = malloc(need + 1);
	cr_assert_eq(eng_log_format(rec, out, need), need);
	out[need] = '\0';
	return out;
}

Test(eng_log, bounce_line_is_exact)
{
	struct eng_log_record rec = bounce_record();
	char *line = format(&rec);
	cr_assert_str_eq(line,
			 "{\"type\":\"Bounce\",\"time\":\"2024-05-01T12:00:00.123Z\","
			 "\"queue_id\":\"0100000000000000070000a000\","
			 "\"sender\":\"news@example.org\","
			 "\"recipient\":\"bob@example.com\",\"domain\":\"example.com\","
			 "\"mx_host\":\"mx1.example.com\",\"mx_ip\":\"192.0.2.25\",\"attempt\":2,"
			 "\"code\":550,\"enhanced\":\"5.1.1\","
			 "\"text\":\"User \\\"bob\\\" unknown\","
			 "\"category\":\"bad-mailbox\",\"timings\":{\"queued_ms\":61234,"
			 "\"connect_ms\":12,\"transaction_ms\":80},\"tls\":{\"used\":true,"
			 "\"version\":\"TLSv1.3\",\"cipher\":\"TLS_AES_256_GCM_SHA384\","
			 "\"verified\":true}}\n");
	free(line);
}

Test(eng_log, reception_line_has_nulls_where_nothing_applies)
{
	struct eng_log_record rec = {
		.event = ENG_LOG_RECEPTION, .time_ns = 0, .queue_id = S("q1"), .sender = "",
		.sender_len = 0, .recipient = S("bob@example.com"), .domain = S("example.com"),
		.category = ENG_BOUNCE_QUOTA, /* ignored: Reception has no category */
		.queued_ms = 0, .connect_ms = ENG_LOG_MS_NONE, .transaction_ms = ENG_LOG_MS_NONE,
	};
	char *line = format(&rec);
	cr_assert_str_eq(line, "{\"type\":\"Reception\",\"time\":\"1970-01-01T00:00:00.000Z\","
			       "\"queue_id\":\"q1\",\"sender\":\"\","
			       "\"recipient\":\"bob@example.com\","
			       "\"domain\":\"example.com\",\"mx_host\":null,\"mx_ip\":null,"
			       "\"attempt\":0,\"code\":null,\"enhanced\":null,\"text\":null,"
			       "\"category\":null,\"timings\":{\"queued_ms\":0,\"connect_ms\":null,"
			       "\"transaction_ms\":null},\"tls\":null}\n");
	free(line);
}

Test(eng_log, every_event_has_its_name_and_category_rule)
{
	static const char *const names[] = { "Reception", "Delivery", "TransientFailure",
					     "Bounce", "Expiration" };
	static const bool has_category[] = { false, false, true, true, true };
	for (uint32_t i = 0; i < ENG_LOG_EVENT_COUNT; i++) {
		struct eng_log_record rec = bounce_record();
		rec.event = (enum eng_log_event)i;
		rec.category = ENG_BOUNCE_MESSAGE_EXPIRED;
		cr_assert_str_eq(eng_log_event_name(rec.event), names[i]);
		char *line = format(&rec);
		char want[64];
		snprintf(want, sizeof(want), "{\"type\":\"%s\",", names[i]);
		cr_assert(strncmp(line, want, strlen(want)) == 0, "%s", line);
		bool found = strstr(line, "\"category\":\"message-expired\"") != NULL;
		cr_assert_eq(found, has_category[i], "%s", line);
		cr_assert_eq(strchr(line, '\n'), line + strlen(line) - 1, "one line");
		free(line);
	}
}

Test(eng_log, tls_unused_and_unknown_strings_are_null)
{
	struct eng_log_record rec = bounce_record();
	struct eng_log_tls tls = { .used = false };
	rec.tls = &tls;
	char *line = format(&rec);
	cr_assert_not_null(strstr(line, ",\"tls\":{\"used\":false,\"version\":null,"
					"\"cipher\":null,\"verified\":false}}\n"));
	free(line);
}

Test(eng_log, event_out_of_range_is_a_programmer_error, .signal = SIGABRT)
{
	struct eng_log_record rec = bounce_record();
	rec.event = ENG_LOG_EVENT_COUNT;
	char out[4096];
	(void)eng_log_format(&rec, out, sizeof(out));
}

/* ---- escaping ---------------------------------------------------------- */

struct escape_case {
	char input[16];
	size_t input_len;
	char want[48];
};

#define ESCAPE(in, out) { in, sizeof(in) - 1, out }

static const struct escape_case escape_cases[] = {
	ESCAPE("", "\"\""),
	ESCAPE("plain text", "\"plain text\""),
	ESCAPE("say \"hi\"", "\"say \\\"hi\\\"\""),
	ESCAPE("back\\slash", "\"back\\\\slash\""),
	ESCAPE("\r\n\t\b\f", "\"\\r\\n\\t\\b\\f\""),
	ESCAPE("\x01\x1f", "\"\\u0001\\u001f\""),
	ESCAPE("nul\0byte", "\"nul\\u0000byte\""),
	ESCAPE("\x7f", "\"\\u007f\""),
	ESCAPE("caf\xc3\xa9", "\"caf\xc3\xa9\""),
	ESCAPE("\xe2\x82\xac", "\"\xe2\x82\xac\""),
	ESCAPE("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""),
	ESCAPE("\xff", "\"\\u00ff\""),
	ESCAPE("\xc3", "\"\\u00c3\""),
	ESCAPE("\xc0\xaf", "\"\\u00c0\\u00af\""),
	ESCAPE("\xe0\x80\xaf", "\"\\u00e0\\u0080\\u00af\""),
	ESCAPE("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""),
	ESCAPE("\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""),
	ESCAPE("\x80x", "\"\\u0080x\""),
	ESCAPE("a\xe2\x82z", "\"a\\u00e2\\u0082z\""),
	ESCAPE("</script>", "\"</script>\""),
};

Test(eng_log, json_string_escapes)
{
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(escape_cases); i++) {
		const struct escape_case *c = &escape_cases[i];
		char out[64];
		size_t n = eng_log_json_string(c->input, c->input_len, 1024, out, sizeof(out));
		cr_expect_eq(n, strlen(c->want), "case %u: length %zu for %s", i, n, c->want);
		int shown = (int)ENG_MIN(n, sizeof(out));
		cr_expect(n == strlen(c->want) && memcmp(out, c->want, n) == 0,
			  "case %u: got %.*s want %s", i, shown, out, c->want);
	}
}

Test(eng_log, cut_at_the_bound_never_splits_utf8)
{
	char out[64];
	/* "ab" then a 2-byte sequence: a bound of 3 falls inside it. */
	size_t n = eng_log_json_string("ab\xc3\xa9z", 5, 3, out, sizeof(out));
	cr_assert_eq(n, 4);
	cr_assert(memcmp(out, "\"ab\"", 4) == 0);
	n = eng_log_json_string("ab\xc3\xa9z", 5, 4, out, sizeof(out));
	cr_assert(memcmp(out, "\"ab\xc3\xa9\"", n) == 0 && n == 6);
	/* An invalid byte at the bound is one byte: it fits. */
	n = eng_log_json_string("ab\xff", 3, 3, out, sizeof(out));
	cr_assert(memcmp(out, "\"ab\\u00ff\"", n) == 0 && n == 10);
}

Test(eng_log, never_writes_past_the_buffer)
{
	struct eng_log_record rec = bounce_record();
	size_t need = eng_log_format(&rec, NULL, 0);
	char *full = format(&rec);
	char buf[1024];
	cr_assert_lt(need, sizeof(buf) - 32);
	for (size_t size = 0; size < need; size += 13) {
		memset(buf, 0x5a, sizeof(buf));
		cr_assert_eq(eng_log_format(&rec, buf, size), need);
		cr_assert(memcmp(buf, full, size) == 0);
		for (size_t i = size; i < sizeof(buf); i++)
			cr_assert_eq(buf[i], 0x5a, "byte %zu written with size %zu", i, size);
	}
	free(full);
}

Test(eng_log, every_field_at_its_worst_fits_the_line_bound)
{
	static char worst[4096];
	memset(worst, 0x01, sizeof(worst)); /* each byte becomes \u0001 */
	struct eng_log_tls tls = { .used = true, .version = worst, .version_len = sizeof(worst),
				   .cipher = worst, .cipher_len = sizeof(worst) };
	struct eng_log_record rec = {
		.event = ENG_LOG_TRANSIENT_FAILURE, .time_ns = UINT64_MAX,
		.queue_id = worst, .queue_id_len = sizeof(worst), .sender = worst,
		.sender_len = sizeof(worst), .recipient = worst, .recipient_len = sizeof(worst),
		.domain = worst, .domain_len = sizeof(worst), .mx_host = worst,
		.mx_host_len = sizeof(worst), .mx_ip = worst, .mx_ip_len = sizeof(worst),
		.attempt = UINT32_MAX, .code = 599, .enhanced = { 5, 999, 999 }, .text = worst,
		.text_len = sizeof(worst), .category = ENG_BOUNCE_MESSAGE_TOO_LARGE,
		.queued_ms = UINT64_MAX - 1, .connect_ms = UINT64_MAX - 1,
		.transaction_ms = UINT64_MAX - 1, .tls = &tls,
	};
	size_t need = eng_log_format(&rec, NULL, 0);
	cr_assert_leq(need, ENG_LOG_LINE_SIZE_MAX);
	/* Bounded: 6 address-like fields, the text and two TLS strings, cut. */
	size_t escaped = 6 * ENG_LOG_FIELD_SIZE_MAX * 6 + ENG_LOG_TEXT_SIZE_MAX * 6 +
			 2 * ENG_LOG_TLS_FIELD_SIZE_MAX * 6;
	cr_assert_gt(need, escaped);
	cr_assert_lt(need, escaped + 1024);
}

struct time_case {
	uint64_t time_ns;
	char want[ENG_LOG_TIME_SIZE];
};

ParameterizedTestParameters(eng_log, times_are_iso8601_utc_with_ms)
{
	static struct time_case cases[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ 999999, "1970-01-01T00:00:00.000Z" },	   /* truncated, not rounded */
		{ 1000000, "1970-01-01T00:00:00.001Z" },
		{ 951782399999999999ull, "2000-02-28T23:59:59.999Z" },
		{ 951782400000000000ull, "2000-02-29T00:00:00.000Z" },
		{ 1714564800123456789ull, "2024-05-01T12:00:00.123Z" },
		{ 4107542399000000000ull, "2100-02-28T23:59:59.000Z" }, /* 2100 is no leap year */
		{ 4107542400000000000ull, "2100-03-01T00:00:00.000Z" },
		{ UINT64_MAX, "2554-07-21T23:34:33.709Z" },
	};
	return cr_make_param_array(struct time_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct time_case *c, eng_log, times_are_iso8601_utc_with_ms)
{
	char out[ENG_LOG_TIME_SIZE];
	cr_assert_eq(eng_log_format_time(c->time_ns, out), 24);
	cr_assert_str_eq(out, c->want);
}

Test(eng_log, calendar_matches_a_day_by_day_walk)
{
	/* Walk 1970..2400 a day at a time with the textbook leap rule. */
	static const uint32_t month_days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	uint32_t year = 1970, month = 1, day = 1, weekday = 4;
	for (uint64_t days = 0; year < 2400; days++) {
		struct eng_utc t;
		eng_utc_from_ns(days * 86400ull * 1000000000ull + 3723004000000ull, &t);
		cr_assert(t.year == year && t.month == month && t.day == day &&
				  t.weekday == weekday,
			  "day %llu: %u-%u-%u", (unsigned long long)days, t.year, t.month, t.day);
		cr_assert(t.hour == 1 && t.minute == 2 && t.second == 3 && t.millisecond == 4);
		bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
		uint32_t length = month_days[month - 1] + (month == 2 && leap ? 1 : 0);
		weekday = (weekday + 1) % 7;
		if (++day > length) {
			day = 1;
			if (++month > 12) {
				month = 1;
				year++;
			}
		}
	}
}

/* ---- a strict JSON validator (RFC 8259), for the random test --------- */

struct json_in {
	const unsigned char *p;
	size_t len, pos;
	int depth;
};

static bool json_value(struct json_in *in);

static void
json_ws(struct json_in *in)
{
	while (in->pos < in->len && strchr(" \t\r\n", in->p[in->pos]) != NULL &&
	       in->p[in->pos] != '\0')
		in->pos++;
}

static bool
json_utf8(struct json_in *in)
{
	unsigned char c = in->p[in->pos];
	size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
	if (n == 0 || c > 0xf4 || c == 0xc0 || c == 0xc1 || in->pos + n > in->len)
		return false;
	uint32_t cp = c & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((in->p[in->pos + i] & 0xc0) != 0x80)
			return false;
		cp = (cp << 6) | (in->p[in->pos + i] & 0x3f);
	}
	static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
	if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return false;
	in->pos += n;
	return true;
}

static bool
json_string(struct json_in *in)
{
	if (in->p[in->pos++] != '"')
		return false;
	while (in->pos < in->len) {
		unsigned char c = in->p[in->pos];
		if (c == '"') {
			in->pos++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c >= 0x80) {
			if (!json_utf8(in))
				return false;
			continue;
		}
		in->pos++;
		if (c != '\\')
			continue;
		if (in->pos >= in->len)
			return false;
		c = in->p[in->pos++];
		if (c == 'u') {
			for (int i = 0; i < 4; i++, in->pos++) {
				if (in->pos >= in->len || strchr("0123456789abcdefABCDEF",
								 in->p[in->pos]) == NULL ||
				    in->p[in->pos] == '\0')
					return false;
			}
		} else if (strchr("\"\\/bfnrt", c) == NULL || c == '\0') {
			return false;
		}
	}
	return false;
}

static bool
json_number(struct json_in *in)
{
	size_t start = in->pos;
	if (in->pos < in->len && in->p[in->pos] == '-')
		in->pos++;
	if (in->pos < in->len && in->p[in->pos] == '0') {
		in->pos++;
	} else {
		size_t digits = in->pos;
		while (in->pos < in->len && in->p[in->pos] >= '0' && in->p[in->pos] <= '9')
			in->pos++;
		if (in->pos == digits)
			return false;
	}
	return in->pos > start; /* no fractions or exponents in our lines */
}

static bool
json_container(struct json_in *in, bool is_object)
{
	char close = is_object ? '}' : ']';
	in->pos++;
	if (++in->depth > 16)
		return false;
	json_ws(in);
	if (in->pos < in->len && in->p[in->pos] == close) {
		in->pos++;
		in->depth--;
		return true;
	}
	for (;;) {
		json_ws(in);
		if (is_object) {
			if (in->pos >= in->len || in->p[in->pos] != '"' || !json_string(in))
				return false;
			json_ws(in);
			if (in->pos >= in->len || in->p[in->pos++] != ':')
				return false;
		}
		if (!json_value(in))
			return false;
		json_ws(in);
		if (in->pos >= in->len)
			return false;
		char c = (char)in->p[in->pos++];
		if (c == close)
			break;
		if (c != ',')
			return false;
	}
	in->depth--;
	return true;
}

static bool
json_value(struct json_in *in)
{
	json_ws(in);
	if (in->pos >= in->len)
		return false;
	unsigned char c = in->p[in->pos];
	if (c == '{' || c == '[')
		return json_container(in, c == '{');
	if (c == '"')
		return json_string(in);
	static const char *const words[] = { "true", "false", "null" };
	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(words[i]);
		if (in->len - in->pos >= n && memcmp(in->p + in->pos, words[i], n) == 0) {
			in->pos += n;
			return true;
		}
	}
	return json_number(in);
}

/* One object and a final '\n', nothing else. */
static bool
json_line_is_valid(const char *line, size_t len)
{
	if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) != NULL)
		return false;
	struct json_in in = { (const unsigned char *)line, len - 1, 0, 0 };
	if (in.len == 0 || in.p[0] != '{' || !json_value(&in))
		return false;
	return in.pos == in.len;
}

Test(eng_log, validator_rejects_what_it_should)
{
	static const char *const bad[] = {
		"{\"a\":1}", "{\"a\":1}\n\n", "{\"a\":\"\x01\"}\n", "{\"a\":\"\\x\"}\n",
		"{\"a\":\"\xff\"}\n", "{\"a\":\"\xed\xa0\x80\"}\n", "{\"a\":1,}\n", "{a:1}\n",
		"{\"a\":01}\n", "{\"a\":\"\\u12\"}\n", "[1]\n",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(bad); i++)
		cr_assert_not(json_line_is_valid(bad[i], strlen(bad[i])), "accepted %s", bad[i]);
	const char *good = "{\"a\":[1,true,null,{\"b\":\"\\u00e9\xc3\xa9\"}],\"c\":-0}\n";
	cr_assert(json_line_is_valid(good, strlen(good)));
}

static uint64_t
next_random(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

Test(eng_log, random_bytes_always_give_one_valid_json_line)
{
	uint64_t seed = 0x5eed0fd06u;
	uint64_t state = seed;
	static char bytes[6][1500];
	static char line[ENG_LOG_LINE_SIZE_MAX];
	for (uint32_t round = 0; round < 2000; round++) {
		size_t lens[6];
		for (size_t f = 0; f < 6; f++) {
			lens[f] = next_random(&state) % sizeof(bytes[f]);
			for (size_t i = 0; i < lens[f]; i++) {
				uint64_t r = next_random(&state);
				/* Any byte, a UTF-8 lead or continuation byte, or text. */
				uint64_t any = r >> 8, high = 0x80 | (r >> 8 & 0x7f);
				uint64_t text = 0x20 + (r >> 8) % 95;
				bytes[f][i] = (char)(r % 4 == 0 ? any : r % 4 == 1 ? high : text);
			}
		}
		struct eng_log_record rec = bounce_record();
		rec.event = (enum eng_log_event)(round % ENG_LOG_EVENT_COUNT);
		rec.time_ns = next_random(&state);
		rec.text = bytes[0], rec.text_len = lens[0];
		rec.sender = bytes[1], rec.sender_len = lens[1];
		rec.recipient = bytes[2], rec.recipient_len = lens[2];
		rec.mx_host = bytes[3], rec.mx_host_len = lens[3];
		rec.queue_id = bytes[4], rec.queue_id_len = lens[4];
		rec.domain = round % 3 == 0 ? NULL : bytes[5], rec.domain_len = lens[5];
		rec.enhanced.detail = (uint16_t)(next_random(&state) % 1200); /* some invalid */
		size_t n = eng_log_format(&rec, line, sizeof(line));
		cr_assert_leq(n, sizeof(line));
		cr_assert(json_line_is_valid(line, n), "seed %llx round %u: %.*s",
			  (unsigned long long)seed, round, (int)ENG_MIN(n, 300), line);
	}
}
