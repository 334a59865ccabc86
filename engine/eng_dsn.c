/*
 * eng_dsn.c - RFC 3464 delivery status notifications in SMTP wire form
 * (see eng_dsn.h for the layout and the invariants).
 *
 * Everything goes through one counting writer that (1) copies what fits
 * in the caller's buffer and keeps counting past it, so one pass gives the
 * DSN or the size it needs, and (2) dot-stuffs: a '.' written at the start
 * of a line is doubled (RFC 5321 4.5.2). Line ends are written only by
 * eng_dsn_crlf; every other write takes bytes that hold no CR or LF, and
 * bytes from outside (reply text, addresses, original headers) pass
 * through a mapping that cannot produce one.
 *
 * References: RFC 3464 (report fields), RFC 3462/6522 (multipart/report),
 * RFC 2045/2046 (MIME, boundaries), RFC 5322 (headers, dates, folding),
 * RFC 3834 (Auto-Submitted), RFC 5321 4.5.2 (dot-stuffing), 6.1 (no DSN
 * for <>).
 */
#include "engine/eng_dsn.h"

#include "engine/eng_log.h"
#include "spool/spool_record.h"

/* Counting, dot-stuffing writer over the caller's buffer. */
struct eng_dsn_out {
	uint8_t *data;
	size_t size;
	size_t len;    /* may exceed size: then it is the size needed */
	size_t column; /* bytes since the last CRLF */
};

/* A boundary: "ringmail-dsn-" id "-" 16 hex digits (RFC 2046 5.1.1: <= 70). */
#define ENG_DSN_BOUNDARY_SIZE 72u

static void
eng_dsn_raw(struct eng_dsn_out *w, const char *src, size_t n)
{
	ENG_ASSERT(src != NULL || n == 0);
	if (w->len < w->size)
		memcpy(w->data + w->len, src, ENG_MIN(w->size - w->len, n));
	w->len += n;
}

/* Bytes without CR or LF; a '.' opening a line is doubled. */
static void
eng_dsn_text(struct eng_dsn_out *w, const char *src, size_t n)
{
	ENG_ASSERT(memchr(src, '\r', n) == NULL);
	ENG_ASSERT(memchr(src, '\n', n) == NULL);
	if (n > 0 && w->column == 0 && src[0] == '.')
		eng_dsn_raw(w, ".", 1);
	eng_dsn_raw(w, src, n);
	w->column += n;
}

static void
eng_dsn_str(struct eng_dsn_out *w, const char *text)
{
	eng_dsn_text(w, text, strlen(text));
}

static void
eng_dsn_crlf(struct eng_dsn_out *w)
{
	ENG_ASSERT(w->column <= ENG_DSN_LINE_SIZE_MAX);
	eng_dsn_raw(w, "\r\n", 2);
	w->column = 0;
}

static void
eng_dsn_line(struct eng_dsn_out *w, const char *text)
{
	eng_dsn_str(w, text);
	eng_dsn_crlf(w);
}

/* A value byte: printable ASCII and space as is, anything else '?'. */
static char
eng_dsn_map_value(uint8_t byte)
{
	return (byte >= 0x20u && byte < 0x7fu) ? (char)byte : '?';
}

/* A text byte: control bytes are word breaks (' '), 8-bit bytes '?'. */
static char
eng_dsn_map_text(uint8_t byte)
{
	if (byte < 0x20u || byte == 0x7fu)
		return ' ';
	return byte >= 0x80u ? '?' : (char)byte;
}

/* Write (src, n) mapped by map, at most max bytes, in small chunks. */
static void
eng_dsn_mapped(struct eng_dsn_out *w, const char *src, size_t n, size_t max,
	       char (*map)(uint8_t))
{
	ENG_ASSERT(src != NULL || n == 0);
	char chunk[64];
	size_t end = ENG_MIN(n, max);
	for (size_t i = 0; i < end;) {
		size_t k = 0;
		while (k < sizeof(chunk) && i < end)
			chunk[k++] = map((uint8_t)src[i++]);
		eng_dsn_text(w, chunk, k);
	}
}

/* A single-line value (address, host, id): see eng_dsn_map_value. */
static void
eng_dsn_value(struct eng_dsn_out *w, const char *src, size_t n, size_t max)
{
	eng_dsn_mapped(w, src, n, max, eng_dsn_map_value);
}

/*
 * One word of free text, after a space or, when it would pass
 * ENG_DSN_FOLD_WIDTH, after a fold: CRLF and indent (which starts with a
 * blank, so in a header it is folding whitespace, RFC 5322 2.2.3).
 */
static void
eng_dsn_word(struct eng_dsn_out *w, const char *word, size_t len, const char *indent,
	     bool need_space)
{
	size_t indent_len = strlen(indent);
	ENG_ASSERT(indent_len > 0 && (indent[0] == ' ' || indent[0] == '\t'));
	ENG_ASSERT(len > 0);
	if (need_space && w->column + 1 + len > ENG_DSN_FOLD_WIDTH && w->column > indent_len) {
		eng_dsn_crlf(w);
		eng_dsn_text(w, indent, indent_len);
	} else if (need_space) {
		eng_dsn_text(w, " ", 1);
	}
	eng_dsn_mapped(w, word, len, len, eng_dsn_map_text);
}

/*
 * Free text (reply text) as words, at most max input bytes with "..."
 * marking a cut. With space_first the first word is preceded by a space
 * (it continues a line the caller started).
 */
static void
eng_dsn_folded(struct eng_dsn_out *w, const char *src, size_t n, size_t max, const char *indent,
	       bool space_first)
{
	ENG_ASSERT(src != NULL || n == 0);
	size_t end = ENG_MIN(n, max);
	bool need_space = space_first;
	size_t i = 0;
	for (size_t words = 0; words <= end; words++) {
		while (i < end && eng_dsn_map_text((uint8_t)src[i]) == ' ')
			i++;
		if (i == end)
			break;
		size_t start = i;
		while (i < end && eng_dsn_map_text((uint8_t)src[i]) != ' ')
			i++;
		eng_dsn_word(w, src + start, i - start, indent, need_space);
		need_space = true;
	}
	ENG_ASSERT(i == end);
	if (n > max)
		eng_dsn_word(w, "...", 3, indent, need_space);
}

/* ---- small formatters -------------------------------------------------- */

const char *
eng_dsn_result_name(enum eng_dsn_result result)
{
	switch (result) {
	case ENG_DSN_OK: return "ok";
	case ENG_DSN_NULL_SENDER: return "null-sender";
	case ENG_DSN_TOO_SMALL: return "too-small";
	}
	ENG_PANIC("unknown eng_dsn_result");
}

size_t
eng_dsn_format_date(uint64_t time_ns, char out[ENG_DSN_DATE_SIZE])
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	ENG_ASSERT(out != NULL);
	struct eng_utc t;
	eng_utc_from_ns(time_ns, &t);
	ENG_ASSERT(t.weekday < 7 && t.month >= 1 && t.month <= 12);
	int n = snprintf(out, ENG_DSN_DATE_SIZE, "%s, %02u %s %04u %02u:%02u:%02u +0000",
			 days[t.weekday], t.day, months[t.month - 1], t.year, t.hour, t.minute,
			 t.second);
	ENG_ASSERT(n == (int)ENG_DSN_DATE_SIZE - 1);
	return (size_t)n;
}

struct eng_enhanced
eng_dsn_status(const struct eng_dsn_rcpt *rcpt)
{
	ENG_ASSERT(rcpt != NULL);
	if (eng_enhanced_is_valid(rcpt->status) && rcpt->status.status_class != 2)
		return rcpt->status;
	if (rcpt->is_expired)
		return (struct eng_enhanced){ .status_class = 4, .subject = 4, .detail = 7 };
	uint8_t status_class = rcpt->reply_code / 100u == 4u ? 4 : 5;
	if (eng_enhanced_is_valid(rcpt->reply_enhanced) &&
	    rcpt->reply_enhanced.status_class == status_class)
		return rcpt->reply_enhanced;
	return (struct eng_enhanced){ .status_class = status_class, .subject = 0, .detail = 0 };
}

static void
eng_dsn_date(struct eng_dsn_out *w, uint64_t time_ns)
{
	char date[ENG_DSN_DATE_SIZE];
	size_t n = eng_dsn_format_date(time_ns, date);
	eng_dsn_text(w, date, n);
}

static void
eng_dsn_uint(struct eng_dsn_out *w, uint64_t value)
{
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)value);
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(buf));
	eng_dsn_text(w, buf, (size_t)n);
}

/* "ringmail-dsn-<alnum of queue id, <= 32>-<now_ns in hex>" into out. */
static size_t
eng_dsn_boundary(const struct eng_dsn_message *msg, char out[ENG_DSN_BOUNDARY_SIZE])
{
	size_t n = 0;
	memcpy(out, "ringmail-dsn-", 13);
	n = 13;
	for (size_t i = 0; i < msg->queue_id_len && n < 13 + 32; i++) {
		char c = msg->queue_id[i];
		bool is_alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
				(c >= 'A' && c <= 'Z');
		if (is_alnum)
			out[n++] = c;
	}
	int k = snprintf(out + n, ENG_DSN_BOUNDARY_SIZE - n, "-%016llx",
			 (unsigned long long)msg->now_ns);
	ENG_ASSERT(k == 17);
	n += 17;
	ENG_ASSERT(n <= 70); /* RFC 2046 5.1.1 */
	return n;
}

/* ---- the parts --------------------------------------------------------- */

/* Blank line, then "--boundary" (or "--boundary--" to close). */
static void
eng_dsn_delimiter(struct eng_dsn_out *w, const char *boundary, size_t boundary_len, bool is_last)
{
	ENG_ASSERT(boundary_len > 13 && boundary_len <= 70); /* RFC 2046 5.1.1 */
	ENG_ASSERT(memchr(boundary, '"', boundary_len) == NULL);
	eng_dsn_crlf(w);
	eng_dsn_text(w, "--", 2);
	eng_dsn_text(w, boundary, boundary_len);
	if (is_last)
		eng_dsn_text(w, "--", 2);
	eng_dsn_crlf(w);
}

static void
eng_dsn_top_headers(struct eng_dsn_out *w, const struct eng_dsn_message *msg,
		    const char *boundary, size_t boundary_len)
{
	eng_dsn_str(w, "From: Mail Delivery System <MAILER-DAEMON@");
	eng_dsn_value(w, msg->hostname, msg->hostname_len, ENG_DSN_HOST_SIZE_MAX);
	eng_dsn_line(w, ">");
	eng_dsn_str(w, "To: <");
	eng_dsn_value(w, msg->sender, msg->sender_len, ENG_DSN_ADDRESS_SIZE_MAX);
	eng_dsn_line(w, ">");
	eng_dsn_line(w, "Subject: Undelivered Mail Returned to Sender");
	eng_dsn_str(w, "Date: ");
	eng_dsn_date(w, msg->now_ns);
	eng_dsn_crlf(w);
	eng_dsn_str(w, "Message-ID: <");
	eng_dsn_text(w, boundary, boundary_len);
	eng_dsn_str(w, "@");
	eng_dsn_value(w, msg->hostname, msg->hostname_len, ENG_DSN_HOST_SIZE_MAX);
	eng_dsn_line(w, ">");
	eng_dsn_line(w, "Auto-Submitted: auto-replied");
	eng_dsn_line(w, "MIME-Version: 1.0");
	eng_dsn_line(w, "Content-Type: multipart/report; report-type=delivery-status;");
	eng_dsn_str(w, "\tboundary=\"");
	eng_dsn_text(w, boundary, boundary_len);
	eng_dsn_line(w, "\"");
	eng_dsn_crlf(w);
	eng_dsn_line(w, "This is a MIME-encapsulated message.");
}

/* After "<addr>: ": what happened, and ':' when a reply line follows. */
static void
eng_dsn_human_reason(struct eng_dsn_out *w, const struct eng_dsn_rcpt *rcpt)
{
	if (rcpt->is_expired)
		eng_dsn_str(w, "delivery time expired");
	else if (rcpt->reply_code == 0)
		eng_dsn_str(w, "delivery failed");
	if (rcpt->reply_code == 0) {
		eng_dsn_str(w, rcpt->reply_text_len > 0 ? ":" : "");
		return;
	}
	eng_dsn_str(w, rcpt->is_expired ? "; last reply from host " : "host ");
	if (rcpt->remote_mta != NULL)
		eng_dsn_value(w, rcpt->remote_mta, rcpt->remote_mta_len, ENG_DSN_HOST_SIZE_MAX);
	else
		eng_dsn_str(w, "(unknown)");
	eng_dsn_str(w, rcpt->is_expired ? ":" : " said:");
}

/*
 * For a person: "<addr>: host mx said:" then the reply, indented; an
 * engine-made failure (no reply code) shows its reason text the same way.
 */
static void
eng_dsn_human_rcpt(struct eng_dsn_out *w, const struct eng_dsn_rcpt *rcpt)
{
	eng_dsn_crlf(w);
	eng_dsn_str(w, "<");
	eng_dsn_value(w, rcpt->addr, rcpt->addr_len, ENG_DSN_ADDRESS_SIZE_MAX);
	eng_dsn_str(w, ">: ");
	eng_dsn_human_reason(w, rcpt);
	eng_dsn_crlf(w);
	if (rcpt->reply_code == 0 && rcpt->reply_text_len == 0)
		return;
	eng_dsn_str(w, "    ");
	if (rcpt->reply_code != 0) {
		eng_dsn_uint(w, rcpt->reply_code);
		char enhanced[ENG_ENHANCED_TEXT_SIZE];
		size_t enhanced_len = eng_enhanced_format(rcpt->reply_enhanced, enhanced);
		if (enhanced_len > 0) {
			eng_dsn_str(w, " ");
			eng_dsn_text(w, enhanced, enhanced_len);
		}
	}
	eng_dsn_folded(w, rcpt->reply_text, rcpt->reply_text_len, ENG_DSN_DIAGNOSTIC_SIZE_MAX,
		       "    ", rcpt->reply_code != 0);
	eng_dsn_crlf(w);
}

static void
eng_dsn_human_part(struct eng_dsn_out *w, const struct eng_dsn_message *msg)
{
	eng_dsn_line(w, "Content-Description: Notification");
	eng_dsn_line(w, "Content-Type: text/plain; charset=us-ascii");
	eng_dsn_crlf(w);
	eng_dsn_str(w, "This is the mail system at host ");
	eng_dsn_value(w, msg->hostname, msg->hostname_len, ENG_DSN_HOST_SIZE_MAX);
	eng_dsn_line(w, ".");
	eng_dsn_crlf(w);
	eng_dsn_line(w, "I'm sorry to have to inform you that your message could not");
	eng_dsn_line(w, "be delivered to one or more recipients. Its headers are attached");
	eng_dsn_str(w, "below (queue id ");
	eng_dsn_value(w, msg->queue_id, msg->queue_id_len, ENG_DSN_QUEUE_ID_SIZE_MAX);
	eng_dsn_line(w, ").");
	for (uint32_t i = 0; i < msg->rcpt_count; i++)
		eng_dsn_human_rcpt(w, &msg->rcpts[i]);
}

/* "Diagnostic-Code: smtp; 550 5.1.1 text", folded. */
static void
eng_dsn_diagnostic(struct eng_dsn_out *w, const struct eng_dsn_rcpt *rcpt)
{
	eng_dsn_str(w, "Diagnostic-Code: smtp; ");
	eng_dsn_uint(w, rcpt->reply_code);
	char enhanced[ENG_ENHANCED_TEXT_SIZE];
	size_t enhanced_len = eng_enhanced_format(rcpt->reply_enhanced, enhanced);
	if (enhanced_len > 0) {
		eng_dsn_str(w, " ");
		eng_dsn_text(w, enhanced, enhanced_len);
	}
	eng_dsn_folded(w, rcpt->reply_text, rcpt->reply_text_len, ENG_DSN_DIAGNOSTIC_SIZE_MAX, " ",
		       true);
	eng_dsn_crlf(w);
}

/* One per-recipient block of the delivery-status part (RFC 3464 2.3). */
static void
eng_dsn_status_rcpt(struct eng_dsn_out *w, const struct eng_dsn_rcpt *rcpt)
{
	eng_dsn_crlf(w);
	eng_dsn_str(w, "Final-Recipient: rfc822; ");
	eng_dsn_value(w, rcpt->addr, rcpt->addr_len, ENG_DSN_ADDRESS_SIZE_MAX);
	eng_dsn_crlf(w);
	if (rcpt->orcpt != NULL) {
		eng_dsn_str(w, "Original-Recipient: rfc822; ");
		eng_dsn_value(w, rcpt->orcpt, rcpt->orcpt_len, ENG_DSN_ADDRESS_SIZE_MAX);
		eng_dsn_crlf(w);
	}
	eng_dsn_line(w, "Action: failed");
	char status[ENG_ENHANCED_TEXT_SIZE];
	size_t status_len = eng_enhanced_format(eng_dsn_status(rcpt), status);
	ENG_ASSERT(status_len > 0);
	eng_dsn_str(w, "Status: ");
	eng_dsn_text(w, status, status_len);
	eng_dsn_crlf(w);
	if (rcpt->remote_mta != NULL) {
		eng_dsn_str(w, "Remote-MTA: dns; ");
		eng_dsn_value(w, rcpt->remote_mta, rcpt->remote_mta_len, ENG_DSN_HOST_SIZE_MAX);
		eng_dsn_crlf(w);
	}
	if (rcpt->reply_code != 0)
		eng_dsn_diagnostic(w, rcpt);
	if (rcpt->last_attempt_ns != 0) {
		eng_dsn_str(w, "Last-Attempt-Date: ");
		eng_dsn_date(w, rcpt->last_attempt_ns);
		eng_dsn_crlf(w);
	}
}

static void
eng_dsn_status_part(struct eng_dsn_out *w, const struct eng_dsn_message *msg)
{
	eng_dsn_line(w, "Content-Description: Delivery report");
	eng_dsn_line(w, "Content-Type: message/delivery-status");
	eng_dsn_crlf(w);
	eng_dsn_str(w, "Reporting-MTA: dns; ");
	eng_dsn_value(w, msg->hostname, msg->hostname_len, ENG_DSN_HOST_SIZE_MAX);
	eng_dsn_crlf(w);
	eng_dsn_str(w, "X-Ringmail-Queue-ID: ");
	eng_dsn_value(w, msg->queue_id, msg->queue_id_len, ENG_DSN_QUEUE_ID_SIZE_MAX);
	eng_dsn_crlf(w);
	if (msg->envid != NULL) {
		eng_dsn_str(w, "Original-Envelope-Id: ");
		eng_dsn_value(w, msg->envid, msg->envid_len, ENG_DSN_ENVID_SIZE_MAX);
		eng_dsn_crlf(w);
	}
	eng_dsn_str(w, "Arrival-Date: ");
	eng_dsn_date(w, msg->arrival_ns);
	eng_dsn_crlf(w);
	for (uint32_t i = 0; i < msg->rcpt_count; i++)
		eng_dsn_status_rcpt(w, &msg->rcpts[i]);
}

/* A header line of the original: bare CR, NUL and other controls but TAB
 * become ' ', 8-bit bytes '?', cut at ENG_DSN_LINE_SIZE_MAX. */
static void
eng_dsn_header_line(struct eng_dsn_out *w, const uint8_t *line, size_t len)
{
	char chunk[64];
	size_t end = ENG_MIN(len, (size_t)ENG_DSN_LINE_SIZE_MAX);
	for (size_t i = 0; i < end;) {
		size_t k = 0;
		for (; k < sizeof(chunk) && i < end; i++) {
			uint8_t byte = line[i];
			chunk[k++] = byte == '\t' ? '\t' : eng_dsn_map_text(byte);
		}
		eng_dsn_text(w, chunk, k);
	}
	eng_dsn_crlf(w);
}

/*
 * The original headers: wire-form lines up to the first empty line (or
 * the final "." of a message without a body), un-dot-stuffed, at most
 * ENG_DSN_HEADERS_SIZE_MAX bytes, whole lines. A line holding the
 * boundary is left out, so nothing in it can end the part.
 */
static void
eng_dsn_original_headers(struct eng_dsn_out *w, const uint8_t *body, size_t body_len,
			 const char *boundary, size_t boundary_len)
{
	ENG_ASSERT(body != NULL || body_len == 0);
	ENG_ASSERT(boundary_len > 0);
	size_t pos = 0, copied = 0;
	for (uint32_t lines = 0; pos < body_len && lines < ENG_DSN_HEADERS_SIZE_MAX; lines++) {
		const uint8_t *nl = memchr(body + pos, '\n', body_len - pos);
		size_t end = nl == NULL ? body_len : (size_t)(nl - body);
		const uint8_t *line = body + pos;
		size_t len = end - pos;
		pos = nl == NULL ? body_len : end + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len == 0 || (len == 1 && line[0] == '.'))
			break;
		if (line[0] == '.') {
			line++;
			len--;
		}
		size_t kept = ENG_MIN(len, (size_t)ENG_DSN_LINE_SIZE_MAX);
		if (copied + kept + 2 > ENG_DSN_HEADERS_SIZE_MAX)
			break;
		if (memmem(line, len, boundary, boundary_len) != NULL)
			continue;
		eng_dsn_header_line(w, line, len);
		copied += kept + 2;
	}
}

static void
eng_dsn_headers_part(struct eng_dsn_out *w, const struct eng_dsn_message *msg,
		     const char *boundary, size_t boundary_len)
{
	eng_dsn_line(w, "Content-Description: Undelivered Message Headers");
	eng_dsn_line(w, "Content-Type: text/rfc822-headers");
	eng_dsn_crlf(w);
	eng_dsn_original_headers(w, msg->body, msg->body_len, boundary, boundary_len);
}

static bool
eng_dsn_sender_is_null(const struct eng_dsn_message *msg)
{
	return msg->sender_len == 0 || (msg->sender_len == 2 && memcmp(msg->sender, "<>", 2) == 0);
}

static void
eng_dsn_check_input(const struct eng_dsn_message *msg)
{
	ENG_ASSERT(msg->hostname != NULL);
	ENG_ASSERT(msg->hostname_len > 0 && msg->hostname_len <= ENG_DSN_HOST_SIZE_MAX);
	ENG_ASSERT(msg->queue_id != NULL);
	ENG_ASSERT(msg->queue_id_len > 0 && msg->queue_id_len <= ENG_DSN_QUEUE_ID_SIZE_MAX);
	ENG_ASSERT(msg->sender != NULL || msg->sender_len == 0);
	ENG_ASSERT(msg->body != NULL || msg->body_len == 0);
	ENG_ASSERT(msg->rcpts != NULL);
	ENG_ASSERT(msg->rcpt_count > 0 && msg->rcpt_count <= SPOOL_RECIPIENTS_MAX);
	for (uint32_t i = 0; i < msg->rcpt_count; i++) {
		const struct eng_dsn_rcpt *rcpt = &msg->rcpts[i];
		ENG_ASSERT(rcpt->addr != NULL || rcpt->addr_len == 0);
		ENG_ASSERT(rcpt->reply_text != NULL || rcpt->reply_text_len == 0);
	}
}

enum eng_dsn_result
eng_dsn_build(const struct eng_dsn_message *msg, uint8_t *out, size_t out_size, size_t *out_len)
{
	ENG_ASSERT(msg != NULL && out_len != NULL);
	ENG_ASSERT(out != NULL || out_size == 0);
	eng_dsn_check_input(msg);
	*out_len = 0;
	if (eng_dsn_sender_is_null(msg))
		return ENG_DSN_NULL_SENDER; /* RFC 5321 6.1: never answer <> */
	char boundary[ENG_DSN_BOUNDARY_SIZE];
	size_t boundary_len = eng_dsn_boundary(msg, boundary);
	struct eng_dsn_out w = { .data = out, .size = out_size, .len = 0, .column = 0 };
	eng_dsn_top_headers(&w, msg, boundary, boundary_len);
	eng_dsn_delimiter(&w, boundary, boundary_len, false);
	eng_dsn_human_part(&w, msg);
	eng_dsn_delimiter(&w, boundary, boundary_len, false);
	eng_dsn_status_part(&w, msg);
	eng_dsn_delimiter(&w, boundary, boundary_len, false);
	eng_dsn_headers_part(&w, msg, boundary, boundary_len);
	eng_dsn_delimiter(&w, boundary, boundary_len, true);
	ENG_ASSERT(w.column == 0);
	eng_dsn_raw(&w, ".\r\n", 3); /* the end of DATA: not stuffed */
	*out_len = w.len;
	if (w.len > out_size)
		return ENG_DSN_TOO_SMALL;
	ENG_ASSERT(w.len >= 5 && memcmp(out + w.len - 5, "\r\n.\r\n", 5) == 0);
	return ENG_DSN_OK;
}
