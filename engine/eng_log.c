/*
 * eng_log.c - delivery log line formatting (see eng_log.h).
 *
 * Output goes through a counting writer: it copies what fits in the
 * caller's buffer and keeps counting past the end, so one pass yields
 * either the line or the size it needs (snprintf's contract, without a
 * format string). JSON escaping follows RFC 8259 section 7 and UTF-8
 * validity RFC 3629 section 4; this is the engine's own escaper, kept
 * apart from tools/tool_json.c so the two modules stay independent, with
 * the same output for the same bytes. Calendar arithmetic is Howard
 * Hinnant's days-from-civil inverse ("chrono-compatible low-level date
 * algorithms"), valid for every uint64_t ns value.
 */
#include "engine/eng_log.h"

/* Counting writer over the caller's buffer. */
struct eng_log_out {
	char *data;
	size_t size;
	size_t len; /* may exceed size: then it is the size needed */
};

static void
eng_log_put(struct eng_log_out *out, const char *src, size_t n)
{
	ENG_ASSERT(src != NULL || n == 0);
	if (out->len < out->size) {
		size_t room = out->size - out->len;
		memcpy(out->data + out->len, src, ENG_MIN(room, n));
	}
	out->len += n;
}

static void
eng_log_puts(struct eng_log_out *out, const char *text)
{
	eng_log_put(out, text, strlen(text));
}

static void
eng_log_put_uint(struct eng_log_out *out, uint64_t value)
{
	char digits[20]; /* UINT64_MAX has 20 */
	size_t n = 0;
	do {
		digits[sizeof(digits) - 1 - n] = (char)('0' + value % 10u);
		value /= 10u;
		n++;
	} while (value != 0 && n < sizeof(digits));
	ENG_ASSERT(value == 0);
	eng_log_put(out, digits + sizeof(digits) - n, n);
}

/* ---- UTF-8 and JSON strings ------------------------------------------ */

static bool
eng_log_is_continuation(uint8_t byte)
{
	return (byte & 0xc0u) == 0x80u;
}

/* Size of the well-formed UTF-8 sequence at p (2..4), or 0. p[0] >= 0x80. */
static size_t
eng_log_utf8_size(const uint8_t *p, size_t len)
{
	ENG_ASSERT(len > 0 && p[0] >= 0x80u);
	uint8_t lead = p[0];
	uint8_t second_min = 0x80u, second_max = 0xbfu; /* RFC 3629 section 4 */
	size_t size;
	if (lead >= 0xc2u && lead <= 0xdfu) {
		size = 2;
	} else if (lead >= 0xe0u && lead <= 0xefu) {
		size = 3;
		second_min = lead == 0xe0u ? 0xa0u : second_min; /* overlong */
		second_max = lead == 0xedu ? 0x9fu : second_max; /* surrogates */
	} else if (lead >= 0xf0u && lead <= 0xf4u) {
		size = 4;
		second_min = lead == 0xf0u ? 0x90u : second_min; /* overlong */
		second_max = lead == 0xf4u ? 0x8fu : second_max; /* above U+10FFFF */
	} else {
		return 0; /* 80..C1 and F5..FF never lead */
	}
	if (len < size || p[1] < second_min || p[1] > second_max)
		return 0;
	for (size_t i = 2; i < size; i++) {
		if (!eng_log_is_continuation(p[i]))
			return 0;
	}
	return size;
}

/* Printable ASCII but '"' and '\\': written as is. */
static bool
eng_log_is_plain(uint8_t byte)
{
	return byte >= 0x20u && byte < 0x7fu && byte != '"' && byte != '\\';
}

static void
eng_log_put_escape(struct eng_log_out *out, uint8_t byte)
{
	static const char hex[] = "0123456789abcdef";
	char buf[6] = { '\\', 'u', '0', '0', hex[byte >> 4], hex[byte & 0xfu] };
	switch (byte) {
	case '"': eng_log_put(out, "\\\"", 2); break;
	case '\\': eng_log_put(out, "\\\\", 2); break;
	case '\b': eng_log_put(out, "\\b", 2); break;
	case '\f': eng_log_put(out, "\\f", 2); break;
	case '\n': eng_log_put(out, "\\n", 2); break;
	case '\r': eng_log_put(out, "\\r", 2); break;
	case '\t': eng_log_put(out, "\\t", 2); break;
	default: eng_log_put(out, buf, sizeof(buf)); break;
	}
}

/* Quoted, escaped, at most max input bytes, never splitting valid UTF-8. */
static void
eng_log_put_string(struct eng_log_out *out, const char *src, size_t len, size_t max)
{
	ENG_ASSERT(src != NULL || len == 0);
	const uint8_t *p = (const uint8_t *)src;
	size_t end = ENG_MIN(len, max);
	size_t i = 0;
	eng_log_put(out, "\"", 1);
	while (i < end) {
		size_t run = i;
		while (run < end && eng_log_is_plain(p[run]))
			run++;
		eng_log_put(out, src + i, run - i);
		i = run;
		if (i == end)
			break;
		size_t size = p[i] >= 0x80u ? eng_log_utf8_size(p + i, len - i) : 0;
		if (size > 0 && i + size > end)
			break; /* a valid sequence across the bound: cut before it */
		if (size > 0)
			eng_log_put(out, src + i, size);
		else
			eng_log_put_escape(out, p[i]);
		i += size > 0 ? size : 1;
	}
	ENG_ASSERT(i <= end);
	eng_log_put(out, "\"", 1);
}

size_t
eng_log_json_string(const char *src, size_t src_len, size_t src_max, char *out, size_t out_size)
{
	ENG_ASSERT(out != NULL || out_size == 0);
	struct eng_log_out w = { .data = out, .size = out_size, .len = 0 };
	eng_log_put_string(&w, src, src_len, src_max);
	ENG_ASSERT(w.len >= 2);
	return w.len;
}

/* ---- time -------------------------------------------------------------- */

void
eng_utc_from_ns(uint64_t time_ns, struct eng_utc *out)
{
	ENG_ASSERT(out != NULL);
	uint64_t secs = time_ns / 1000000000u;
	uint64_t days = secs / 86400u;
	uint64_t rem = secs % 86400u;
	/* Civil from days, with z counted from 0000-03-01. */
	uint64_t z = days + 719468u;
	uint64_t era = z / 146097u;
	uint64_t doe = z - era * 146097u;
	uint64_t yoe = (doe - doe / 1460u + doe / 36524u - doe / 146096u) / 365u;
	uint64_t doy = doe - (365u * yoe + yoe / 4u - yoe / 100u);
	uint64_t mp = (5u * doy + 2u) / 153u;
	uint64_t month = mp < 10u ? mp + 3u : mp - 9u;
	out->year = (uint32_t)(yoe + era * 400u + (month <= 2u ? 1u : 0u));
	out->month = (uint32_t)month;
	out->day = (uint32_t)(doy - (153u * mp + 2u) / 5u + 1u);
	out->hour = (uint32_t)(rem / 3600u);
	out->minute = (uint32_t)(rem % 3600u / 60u);
	out->second = (uint32_t)(rem % 60u);
	out->millisecond = (uint32_t)(time_ns % 1000000000u / 1000000u);
	out->weekday = (uint32_t)((days + 4u) % 7u); /* 1970-01-01 was a Thursday */
	ENG_ASSERT(out->month >= 1 && out->month <= 12);
	ENG_ASSERT(out->day >= 1 && out->day <= 31);
}

size_t
eng_log_format_time(uint64_t time_ns, char out[ENG_LOG_TIME_SIZE])
{
	ENG_ASSERT(out != NULL);
	struct eng_utc t;
	eng_utc_from_ns(time_ns, &t);
	int n = snprintf(out, ENG_LOG_TIME_SIZE, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", t.year,
			 t.month, t.day, t.hour, t.minute, t.second, t.millisecond);
	ENG_ASSERT(n == (int)ENG_LOG_TIME_SIZE - 1);
	return (size_t)n;
}

/* ---- the line ---------------------------------------------------------- */

static const char *const eng_log_event_names[ENG_LOG_EVENT_COUNT] = {
	[ENG_LOG_RECEPTION] = "Reception",
	[ENG_LOG_DELIVERY] = "Delivery",
	[ENG_LOG_TRANSIENT_FAILURE] = "TransientFailure",
	[ENG_LOG_BOUNCE] = "Bounce",
	[ENG_LOG_EXPIRATION] = "Expiration",
};

const char *
eng_log_event_name(enum eng_log_event event)
{
	ENG_ASSERT((uint32_t)event < ENG_LOG_EVENT_COUNT);
	return eng_log_event_names[event];
}

/* ,"key": */
static void
eng_log_put_key(struct eng_log_out *out, const char *key)
{
	eng_log_put(out, ",\"", 2);
	eng_log_puts(out, key);
	eng_log_put(out, "\":", 2);
}

static void
eng_log_field_string(struct eng_log_out *out, const char *key, const char *src, size_t len,
		     size_t max)
{
	eng_log_put_key(out, key);
	if (src == NULL)
		eng_log_put(out, "null", 4);
	else
		eng_log_put_string(out, src, len, max);
}

static void
eng_log_put_ms(struct eng_log_out *out, uint64_t ms)
{
	if (ms == ENG_LOG_MS_NONE)
		eng_log_put(out, "null", 4);
	else
		eng_log_put_uint(out, ms);
}

static void
eng_log_field_ms(struct eng_log_out *out, const char *key, uint64_t ms)
{
	eng_log_put_key(out, key);
	eng_log_put_ms(out, ms);
}

static bool
eng_log_event_has_category(enum eng_log_event event)
{
	return event == ENG_LOG_TRANSIENT_FAILURE || event == ENG_LOG_BOUNCE ||
	       event == ENG_LOG_EXPIRATION;
}

/* "code", "enhanced", "text", "category": the reply and its class. */
static void
eng_log_put_reply(struct eng_log_out *out, const struct eng_log_record *rec)
{
	eng_log_put_key(out, "code");
	if (rec->code == 0)
		eng_log_put(out, "null", 4);
	else
		eng_log_put_uint(out, rec->code);
	char enhanced[ENG_ENHANCED_TEXT_SIZE];
	size_t enhanced_len = eng_enhanced_format(rec->enhanced, enhanced);
	eng_log_field_string(out, "enhanced", enhanced_len > 0 ? enhanced : NULL, enhanced_len,
			     ENG_ENHANCED_TEXT_SIZE);
	eng_log_field_string(out, "text", rec->text, rec->text_len, ENG_LOG_TEXT_SIZE_MAX);
	const char *category = NULL;
	if (eng_log_event_has_category(rec->event))
		category = eng_bounce_category_name(rec->category);
	eng_log_field_string(out, "category", category, category == NULL ? 0 : strlen(category),
			     ENG_LOG_FIELD_SIZE_MAX);
}

/* "timings" and "tls", then the closing brace. */
static void
eng_log_put_connection(struct eng_log_out *out, const struct eng_log_record *rec)
{
	eng_log_puts(out, ",\"timings\":{\"queued_ms\":");
	eng_log_put_ms(out, rec->queued_ms);
	eng_log_field_ms(out, "connect_ms", rec->connect_ms);
	eng_log_field_ms(out, "transaction_ms", rec->transaction_ms);
	eng_log_put(out, "}", 1);
	const struct eng_log_tls *tls = rec->tls;
	if (tls == NULL) {
		eng_log_puts(out, ",\"tls\":null}\n");
		return;
	}
	eng_log_puts(out, tls->used ? ",\"tls\":{\"used\":true" : ",\"tls\":{\"used\":false");
	eng_log_field_string(out, "version", tls->version, tls->version_len,
			     ENG_LOG_TLS_FIELD_SIZE_MAX);
	eng_log_field_string(out, "cipher", tls->cipher, tls->cipher_len,
			     ENG_LOG_TLS_FIELD_SIZE_MAX);
	eng_log_puts(out, tls->verified ? ",\"verified\":true}}\n" : ",\"verified\":false}}\n");
}

size_t
eng_log_format(const struct eng_log_record *rec, char *out, size_t out_size)
{
	ENG_ASSERT(rec != NULL);
	ENG_ASSERT(out != NULL || out_size == 0);
	struct eng_log_out w = { .data = out, .size = out_size, .len = 0 };
	char time[ENG_LOG_TIME_SIZE];
	size_t time_len = eng_log_format_time(rec->time_ns, time);
	eng_log_puts(&w, "{\"type\":\"");
	eng_log_puts(&w, eng_log_event_name(rec->event));
	eng_log_puts(&w, "\",\"time\":\"");
	eng_log_put(&w, time, time_len);
	eng_log_put(&w, "\"", 1);
	eng_log_field_string(&w, "queue_id", rec->queue_id, rec->queue_id_len,
			     ENG_LOG_FIELD_SIZE_MAX);
	eng_log_field_string(&w, "sender", rec->sender, rec->sender_len, ENG_LOG_FIELD_SIZE_MAX);
	eng_log_field_string(&w, "recipient", rec->recipient, rec->recipient_len,
			     ENG_LOG_FIELD_SIZE_MAX);
	eng_log_field_string(&w, "domain", rec->domain, rec->domain_len, ENG_LOG_FIELD_SIZE_MAX);
	eng_log_field_string(&w, "mx_host", rec->mx_host, rec->mx_host_len,
			     ENG_LOG_FIELD_SIZE_MAX);
	eng_log_field_string(&w, "mx_ip", rec->mx_ip, rec->mx_ip_len, ENG_LOG_FIELD_SIZE_MAX);
	eng_log_put_key(&w, "attempt");
	eng_log_put_uint(&w, rec->attempt);
	eng_log_put_reply(&w, rec);
	eng_log_put_connection(&w, rec);
	ENG_ASSERT(w.len <= ENG_LOG_LINE_SIZE_MAX);
	ENG_ASSERT(w.len > w.size || w.data[w.len - 1] == '\n');
	return w.len;
}
