/*
 * sink_session.c - one ringmail-sink SMTP server session on a worker's
 * ring (sink.h, docs/bench-tools.md).
 *
 * The session reads, answers every command it read with one send (RFC 2920
 * PIPELINING: replies in command order), and reads again; at most one ring
 * op is in flight. DATA ends only at CRLF "." CRLF (smtp_dot_detector, RFC
 * 5321 4.1.1.4); BDAT (RFC 3030) chunks are counted byte for byte, so the
 * message counts are exact for any split of the input.
 *
 * Counting: a message is counted when its 250 is decided: total, per
 * second, and once for each distinct domain among its accepted recipients.
 * The session's concurrency domain is the domain of its first RCPT; it
 * holds one unit of that domain's concurrency until the session closes.
 *
 * Faults (deterministic from --seed): a recipient's fate (250, 4xx or 5xx)
 * is a hash of the seed and its address, and so is a --disconnect after a
 * message's data (hash of the seed and the first recipient's address), so
 * the same load with the same seed meets the same faults whatever the
 * timing. --421-over N answers 421 to the first RCPT that would take its
 * domain over N sessions, then closes. --delay-ms delays every reply batch
 * with a ring timer.
 *
 * Peer input is validated, never asserted on: a bad line gets a 5xx reply.
 *
 * STARTTLS (RFC 3207), with --tls-cert and --tls-key: advertised in EHLO
 * until TLS is up; "220" then the handshake through engine/eng_tls on the
 * same ring, and the session goes on encrypted (the client sends EHLO
 * again). Anything pipelined behind STARTTLS in the same read is dropped
 * (CVE-2011-0411). Handshakes are counted full or resumed. --delay-ms does
 * not apply to encrypted sessions.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_net.h"
#include "bench_util.h"
#include "engine/eng_common.h"
#include "engine/eng_tls.h"
#include "sink.h"

enum sink_mode {
	SINK_MODE_COMMAND = 0,
	SINK_MODE_DATA,
	SINK_MODE_BDAT,
};

enum sink_body {
	SINK_BODY_NONE = 0, /* no DATA or BDAT yet in this transaction */
	SINK_BODY_DATA,
	SINK_BODY_BDAT,
};

struct bench_sink_session {
	struct bench_sink_worker *worker;
	struct bench_sink_session *next_free;
	struct ring_op op; /* the one op in flight */
	int fd;
	bool is_in_use;
	bool is_closing;      /* close once the pending replies are sent */
	bool has_conc_domain; /* holds a unit of conc_domain's concurrency */
	bool has_mail;
	bool is_bdat_last;
	bool is_starttls_pending; /* 220 to STARTTLS queued: start TLS once sent */
	bool is_tls;		  /* ciphertext on the socket from now on */
	bool is_tls_handshaking;
	uint8_t mode;
	uint8_t body;
	uint16_t bdat_error; /* reply code for a BDAT chunk of a bad transaction */
	uint32_t conc_domain;
	uint64_t serial;
	struct eng_tls *tls; /* this session's slot; NULL when TLS is off */
	/* Transaction. */
	uint32_t rcpt_count;	       /* accepted */
	uint32_t rcpt_commands;	       /* seen, accepted or not */
	uint32_t domain_count;	       /* distinct domains of accepted rcpts */
	uint32_t domains[SINK_RCPTS_MAX];
	uint64_t message_size;
	uint64_t bdat_remaining;
	char first_rcpt[SINK_ADDRESS_MAX];
	uint32_t first_rcpt_size;
	struct smtp_dot_detector detector;
	/* --log-ids header scan. */
	bool is_in_headers;
	bool id_is_blast;
	uint32_t header_size;
	uint32_t id_size;
	char header[SINK_HEADER_LINE_MAX];
	char id[SINK_ID_MAX];
	/* Buffers. */
	uint32_t recv_pos;
	uint32_t recv_end;
	uint32_t send_len;
	uint32_t send_done;
	uint8_t recv_buf[SINK_RECV_SIZE];
	char send_buf[SINK_SEND_SIZE];
};

static void sink_session_continue(struct bench_sink_session *session);
static void sink_session_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags);

/* ---- replies ------------------------------------------------------------ */

static void
sink_reply(struct bench_sink_session *session, const char *text)
{
	size_t len = strlen(text);
	ENG_ASSERT(len + 2 <= SINK_SEND_ROOM_MIN);
	ENG_ASSERT(session->send_len + len + 2 <= SINK_SEND_SIZE);
	memcpy(session->send_buf + session->send_len, text, len);
	session->send_len += (uint32_t)len;
	session->send_buf[session->send_len++] = '\r';
	session->send_buf[session->send_len++] = '\n';
}

static void
sink_reply_close(struct bench_sink_session *session, const char *text)
{
	sink_reply(session, text);
	session->is_closing = true;
}

/* ---- domains and faults --------------------------------------------------- */

/* Fault draw in basis points (0..9999) for (salt, address). */
static uint32_t
sink_draw(const struct bench_sink_session *session, uint64_t salt, const char *ptr, size_t len)
{
	uint64_t seed = session->worker->shared->config.seed ^ salt;
	uint64_t hash = bench_fnv1a(BENCH_FNV_OFFSET, &seed, sizeof(seed));
	hash = bench_fnv1a(hash, ptr, len);
	hash ^= hash >> 29;
	return (uint32_t)(hash % 10000u);
}

static struct bench_sink_domain *
sink_domain(struct bench_sink_session *session, uint32_t index)
{
	ENG_ASSERT(index < SINK_DOMAINS_MAX);
	return &session->worker->shared->domains[index];
}

/* Take a unit of the domain's concurrency; false (and a 421) when that
 * would go over --421-over. */
static bool
sink_concurrency_take(struct bench_sink_session *session, uint32_t domain_index)
{
	ENG_ASSERT(!session->has_conc_domain);
	struct bench_sink_domain *domain = sink_domain(session, domain_index);
	uint32_t over = session->worker->shared->config.over_421;
	int64_t now = atomic_fetch_add_explicit(&domain->concurrency, 1, memory_order_relaxed) + 1;
	ENG_ASSERT(now >= 1);
	if (over != 0 && now > (int64_t)over) {
		atomic_fetch_sub_explicit(&domain->concurrency, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&domain->replies_421, 1, memory_order_relaxed);
		bench_counter_add(&session->worker->totals.replies_421, 1);
		sink_reply_close(session, "421 4.7.0 Too many connections for this domain");
		return false;
	}
	uint64_t peak = atomic_load_explicit(&domain->peak_concurrency, memory_order_relaxed);
	for (uint32_t i = 0; i < 64u && (uint64_t)now > peak; i++) {
		if (atomic_compare_exchange_weak_explicit(&domain->peak_concurrency, &peak,
							  (uint64_t)now, memory_order_relaxed,
							  memory_order_relaxed))
			break;
	}
	session->has_conc_domain = true;
	session->conc_domain = domain_index;
	return true;
}

/* ---- transactions ------------------------------------------------------- */

static void
sink_transaction_reset(struct bench_sink_session *session)
{
	session->has_mail = false;
	session->body = SINK_BODY_NONE;
	session->rcpt_count = 0;
	session->rcpt_commands = 0;
	session->domain_count = 0;
	session->message_size = 0;
	session->first_rcpt_size = 0;
	session->is_in_headers = true;
	session->header_size = 0;
	session->id_size = 0;
	session->id_is_blast = false;
}

/* Remember a header line's id value (X-Blast-Id wins over Message-ID). */
static void
sink_header_line(struct bench_sink_session *session, const char *line, size_t len)
{
	const char *value = NULL;
	bool is_blast = false;
	if (bench_has_prefix_nocase((const uint8_t *)line, len, "X-Blast-Id:")) {
		value = line + 11;
		is_blast = true;
	} else if (bench_has_prefix_nocase((const uint8_t *)line, len, "Message-ID:") &&
		   !session->id_is_blast) {
		value = line + 11;
	}
	if (value == NULL)
		return;
	const char *end = line + len;
	while (value < end && (*value == ' ' || *value == '\t'))
		value++;
	while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t size = ENG_MIN((size_t)(end - value), (size_t)SINK_ID_MAX);
	memcpy(session->id, value, size);
	session->id_size = (uint32_t)size;
	session->id_is_blast = is_blast;
}

/* Scan message content for the id headers (only with --log-ids). */
static void
sink_header_scan(struct bench_sink_session *session, const uint8_t *ptr, size_t len)
{
	size_t pos = 0;
	for (uint32_t guard = 0; session->is_in_headers && pos < len; guard++) {
		ENG_ASSERT(guard <= len);
		const uint8_t *lf = memchr(ptr + pos, '\n', len - pos);
		size_t take = (lf == NULL ? len : (size_t)(lf - ptr) + 1) - pos;
		size_t room = SINK_HEADER_LINE_MAX - session->header_size;
		memcpy(session->header + session->header_size, ptr + pos, ENG_MIN(take, room));
		session->header_size += (uint32_t)ENG_MIN(take, room);
		pos += take;
		if (lf == NULL)
			break;
		bool is_blank = (session->header_size == 1) ||
				(session->header_size == 2 && session->header[0] == '\r');
		if (is_blank)
			session->is_in_headers = false;
		else
			sink_header_line(session, session->header, session->header_size);
		session->header_size = 0;
	}
}

static void
sink_log_id(struct bench_sink_session *session)
{
	FILE *out = session->worker->shared->config.log_ids;
	if (out == NULL || session->id_size == 0)
		return;
	flockfile(out);
	fwrite(session->id, 1, session->id_size, out);
	fputc('\n', out);
	funlockfile(out);
}

/* The data of a message is complete: disconnect fault, or count it and
 * answer 250. */
static void
sink_message_done(struct bench_sink_session *session)
{
	struct bench_sink_worker *worker = session->worker;
	struct bench_sink_shared *shared = worker->shared;
	ENG_ASSERT(session->has_mail);
	ENG_ASSERT(session->rcpt_count > 0);
	if (shared->config.disconnect_bp != 0 &&
	    sink_draw(session, 0x44u, session->first_rcpt, session->first_rcpt_size) <
		    shared->config.disconnect_bp) {
		bench_counter_add(&worker->totals.disconnects, 1);
		sink_transaction_reset(session);
		session->send_len = 0; /* no reply at all: the peer cannot know */
		session->is_closing = true;
		return;
	}
	bench_counter_add(&worker->totals.messages, 1);
	bench_counter_add(&worker->totals.bytes, session->message_size);
	uint64_t now_ns = bench_now_ns();
	atomic_fetch_add_explicit(&shared->per_second[bench_sink_second_index(shared, now_ns)], 1,
				  memory_order_relaxed);
	if (bench_counter_get(&worker->totals.first_message_ns) == 0)
		atomic_store_explicit(&worker->totals.first_message_ns, now_ns, memory_order_relaxed);
	atomic_store_explicit(&worker->totals.last_message_ns, now_ns, memory_order_relaxed);
	for (uint32_t i = 0; i < session->domain_count; i++) {
		struct bench_sink_domain *domain = sink_domain(session, session->domains[i]);
		atomic_fetch_add_explicit(&domain->messages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&domain->bytes, session->message_size,
					  memory_order_relaxed);
	}
	sink_log_id(session);
	char text[96];
	snprintf(text, sizeof(text), "250 2.0.0 Ok: queued as %02X%010llX", worker->index,
		 (unsigned long long)worker->queue_id_next++);
	sink_reply(session, text);
	sink_transaction_reset(session);
}

/* ---- commands ------------------------------------------------------------- */

static void
sink_cmd_ehlo(struct bench_sink_session *session, bool is_ehlo)
{
	const char *host = session->worker->shared->config.hostname;
	const char *starttls = session->tls != NULL && !session->is_tls ? "250-STARTTLS\r\n" : "";
	char text[SINK_SEND_ROOM_MIN - 8];
	if (is_ehlo)
		snprintf(text, sizeof(text),
			 "250-%s\r\n250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
			 "%s250-CHUNKING\r\n250 ENHANCEDSTATUSCODES",
			 host, (unsigned long long)SINK_MESSAGE_SIZE_MAX, starttls);
	else
		snprintf(text, sizeof(text), "250 %s", host);
	sink_transaction_reset(session);
	sink_reply(session, text);
}

static void
sink_cmd_mail(struct bench_sink_session *session)
{
	if (session->has_mail) {
		sink_reply(session, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	sink_transaction_reset(session);
	session->has_mail = true;
	sink_reply(session, "250 2.1.0 Ok");
}

/* The address inside "<...>" (or the whole argument) and its domain. */
static bool
sink_rcpt_address(const uint8_t *arg, size_t len, const char **address, size_t *address_size)
{
	while (len > 0 && (*arg == ' ' || *arg == '\t')) {
		arg++;
		len--;
	}
	const uint8_t *end = arg + len;
	if (len > 0 && *arg == '<') {
		const uint8_t *close = memchr(arg, '>', len);
		if (close == NULL)
			return false;
		arg++;
		end = close;
	} else {
		const uint8_t *space = memchr(arg, ' ', len);
		if (space != NULL)
			end = space;
	}
	if (end <= arg || (size_t)(end - arg) >= SINK_ADDRESS_MAX)
		return false;
	*address = (const char *)arg;
	*address_size = (size_t)(end - arg);
	return true;
}

static uint32_t
sink_rcpt_domain(struct bench_sink_session *session, const char *address, size_t size)
{
	const char *at = memrchr(address, '@', size);
	char lower[SINK_DOMAIN_NAME_MAX];
	size_t domain_size = 0;
	if (at != NULL) {
		domain_size = ENG_MIN((size_t)(address + size - at - 1), sizeof(lower));
		for (size_t i = 0; i < domain_size; i++) {
			char c = at[1 + i];
			lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
		}
	}
	return bench_sink_domain_find(session->worker->shared, lower, domain_size);
}

/* An accepted recipient: count it and note its domain once. */
static void
sink_rcpt_accept(struct bench_sink_session *session, uint32_t domain_index)
{
	struct bench_sink_domain *domain = sink_domain(session, domain_index);
	atomic_fetch_add_explicit(&domain->rcpts, 1, memory_order_relaxed);
	bench_counter_add(&session->worker->totals.rcpts, 1);
	session->rcpt_count++;
	for (uint32_t i = 0; i < session->domain_count; i++) {
		if (session->domains[i] == domain_index)
			return;
	}
	ENG_ASSERT(session->domain_count < SINK_RCPTS_MAX);
	session->domains[session->domain_count++] = domain_index;
}

static void
sink_cmd_rcpt(struct bench_sink_session *session, const uint8_t *arg, size_t len)
{
	const char *address = NULL;
	size_t size = 0;
	if (!session->has_mail)
		return sink_reply(session, "503 5.5.1 Error: need MAIL command");
	if (!sink_rcpt_address(arg, len, &address, &size))
		return sink_reply(session, "501 5.1.3 Bad recipient address syntax");
	if (session->rcpt_commands >= SINK_RCPTS_MAX)
		return sink_reply(session, "452 4.5.3 Error: too many recipients");
	session->rcpt_commands++;
	uint32_t domain_index = sink_rcpt_domain(session, address, size);
	if (!session->has_conc_domain && !sink_concurrency_take(session, domain_index))
		return;
	const struct bench_sink_config *config = &session->worker->shared->config;
	uint32_t draw = sink_draw(session, 0x52u, address, size);
	struct bench_sink_domain *domain = sink_domain(session, domain_index);
	if (draw < config->rcpt_4xx_bp) {
		atomic_fetch_add_explicit(&domain->rcpt_4xx, 1, memory_order_relaxed);
		bench_counter_add(&session->worker->totals.rcpt_4xx, 1);
		return sink_reply(session, "451 4.3.0 Fault profile: try again later");
	}
	if (draw < config->rcpt_4xx_bp + config->rcpt_5xx_bp) {
		atomic_fetch_add_explicit(&domain->rcpt_5xx, 1, memory_order_relaxed);
		bench_counter_add(&session->worker->totals.rcpt_5xx, 1);
		return sink_reply(session, "550 5.1.1 Fault profile: recipient rejected");
	}
	if (session->rcpt_count == 0) {
		memcpy(session->first_rcpt, address, size);
		session->first_rcpt_size = (uint32_t)size;
	}
	sink_rcpt_accept(session, domain_index);
	sink_reply(session, "250 2.1.5 Ok");
}

static void
sink_cmd_data(struct bench_sink_session *session)
{
	if (!session->has_mail || session->body == SINK_BODY_BDAT)
		return sink_reply(session, "503 5.5.1 Error: need MAIL and RCPT commands");
	if (session->rcpt_count == 0)
		return sink_reply(session, "554 5.5.1 Error: no valid recipients");
	session->body = SINK_BODY_DATA;
	session->mode = SINK_MODE_DATA;
	smtp_dot_detector_init(&session->detector);
	sink_reply(session, "354 End data with <CR><LF>.<CR><LF>");
}

/* "BDAT" SP chunk-size [SP "LAST"] (RFC 3030 2). */
static void
sink_cmd_bdat(struct bench_sink_session *session, const uint8_t *arg, size_t len)
{
	size_t pos = 0;
	uint64_t size = 0;
	while (pos < len && arg[pos] == ' ')
		pos++;
	size_t digits = 0;
	while (pos < len && arg[pos] >= '0' && arg[pos] <= '9' && digits < 12) {
		size = size * 10u + (uint64_t)(arg[pos++] - '0');
		digits++;
	}
	bool is_last = false;
	if (pos < len && arg[pos] == ' ' &&
	    bench_has_prefix_nocase(arg + pos + 1, len - pos - 1, "LAST") && len - pos - 1 == 4)
		is_last = true;
	else if (pos != len)
		digits = 0;
	if (digits == 0) {
		bench_counter_add(&session->worker->totals.protocol_errors, 1);
		return sink_reply_close(session, "501 5.5.4 Syntax: BDAT size [LAST]");
	}
	session->bdat_error = 0;
	if (!session->has_mail || session->body == SINK_BODY_DATA)
		session->bdat_error = 503;
	else if (session->rcpt_count == 0)
		session->bdat_error = 554;
	else if (session->message_size + size > SINK_MESSAGE_SIZE_MAX)
		session->bdat_error = 552;
	if (session->bdat_error == 0)
		session->body = SINK_BODY_BDAT;
	session->bdat_remaining = size;
	session->is_bdat_last = is_last;
	session->mode = SINK_MODE_BDAT;
}

/* A BDAT chunk has been read in full: answer it. */
static void
sink_bdat_chunk_done(struct bench_sink_session *session)
{
	ENG_ASSERT(session->bdat_remaining == 0);
	session->mode = SINK_MODE_COMMAND;
	switch (session->bdat_error) {
	case 503:
		return sink_reply(session, "503 5.5.1 Error: need MAIL and RCPT commands");
	case 554:
		return sink_reply(session, "554 5.5.1 Error: no valid recipients");
	case 552:
		sink_transaction_reset(session);
		return sink_reply(session, "552 5.3.4 Message too big");
	default:
		break;
	}
	if (session->is_bdat_last)
		return sink_message_done(session);
	char text[64];
	snprintf(text, sizeof(text), "250 2.0.0 Ok: %llu octets",
		 (unsigned long long)session->message_size);
	sink_reply(session, text);
}

/* STARTTLS (RFC 3207 4): 220, then the handshake once it is sent. */
static void
sink_cmd_starttls(struct bench_sink_session *session, size_t len)
{
	ENG_ASSERT(session->tls != NULL);
	if (session->is_tls)
		return sink_reply(session, "503 5.5.1 Error: TLS already active");
	if (len != 8)
		return sink_reply(session, "501 5.5.4 Syntax: STARTTLS");
	sink_transaction_reset(session);
	sink_reply(session, "220 2.0.0 Ready to start TLS");
	session->is_starttls_pending = true;
	/* Commands pipelined behind STARTTLS are an injection: drop them. */
	session->recv_pos = session->recv_end;
}

/* One command line (CRLF or LF removed). */
static void
sink_command(struct bench_sink_session *session, const uint8_t *line, size_t len)
{
	if (bench_has_prefix_nocase(line, len, "MAIL FROM:"))
		return sink_cmd_mail(session);
	if (bench_has_prefix_nocase(line, len, "RCPT TO:"))
		return sink_cmd_rcpt(session, line + 8, len - 8);
	if (bench_has_prefix_nocase(line, len, "DATA") && len == 4)
		return sink_cmd_data(session);
	if (bench_has_prefix_nocase(line, len, "BDAT "))
		return sink_cmd_bdat(session, line + 5, len - 5);
	if (bench_has_prefix_nocase(line, len, "EHLO"))
		return sink_cmd_ehlo(session, true);
	if (bench_has_prefix_nocase(line, len, "HELO"))
		return sink_cmd_ehlo(session, false);
	if (bench_has_prefix_nocase(line, len, "RSET") && len == 4) {
		sink_transaction_reset(session);
		return sink_reply(session, "250 2.0.0 Ok");
	}
	if (bench_has_prefix_nocase(line, len, "NOOP"))
		return sink_reply(session, "250 2.0.0 Ok");
	if (bench_has_prefix_nocase(line, len, "QUIT") && len == 4)
		return sink_reply_close(session, "221 2.0.0 Bye");
	if (bench_has_prefix_nocase(line, len, "VRFY"))
		return sink_reply(session, "252 2.0.0 Send some mail, I'll try my best");
	if (session->tls != NULL && bench_has_prefix_nocase(line, len, "STARTTLS"))
		return sink_cmd_starttls(session, len);
	bench_counter_add(&session->worker->totals.protocol_errors, 1);
	sink_reply(session, "502 5.5.2 Error: command not recognized");
}

/* Take command lines from the receive buffer. Returns false when the
 * buffer holds no complete line. */
static bool
sink_take_command(struct bench_sink_session *session)
{
	const uint8_t *start = session->recv_buf + session->recv_pos;
	size_t avail = session->recv_end - session->recv_pos;
	const uint8_t *lf = memchr(start, '\n', avail);
	if (lf == NULL) {
		if (avail > SINK_LINE_MAX) {
			bench_counter_add(&session->worker->totals.protocol_errors, 1);
			sink_reply_close(session, "500 5.5.0 Error: line too long");
		}
		return false;
	}
	size_t len = (size_t)(lf - start);
	session->recv_pos += (uint32_t)len + 1;
	if (len > 0 && start[len - 1] == '\r')
		len--;
	if (len > SINK_LINE_MAX) {
		bench_counter_add(&session->worker->totals.protocol_errors, 1);
		sink_reply(session, "500 5.5.0 Error: line too long");
		return true;
	}
	sink_command(session, start, len);
	return true;
}

/* Take message data (DATA until CRLF.CRLF, or the rest of a BDAT chunk). */
static void
sink_take_data(struct bench_sink_session *session)
{
	const uint8_t *start = session->recv_buf + session->recv_pos;
	size_t avail = session->recv_end - session->recv_pos;
	bool is_log = session->worker->shared->config.log_ids != NULL;
	if (session->mode == SINK_MODE_BDAT) {
		size_t take = (size_t)ENG_MIN((uint64_t)avail, session->bdat_remaining);
		if (is_log && session->bdat_error == 0)
			sink_header_scan(session, start, take);
		session->bdat_remaining -= take;
		if (session->bdat_error == 0)
			session->message_size += take;
		session->recv_pos += (uint32_t)take;
		if (session->bdat_remaining == 0)
			sink_bdat_chunk_done(session);
		return;
	}
	size_t consumed = 0;
	enum smtp_dot_scan scan = smtp_dot_detector_scan(&session->detector, start, avail, &consumed);
	ENG_ASSERT(consumed <= avail);
	if (is_log)
		sink_header_scan(session, start, consumed);
	session->recv_pos += (uint32_t)consumed;
	session->message_size += consumed;
	if (scan == SMTP_DOT_SCAN_END) {
		/* The terminator's ".\r\n" is not message content. */
		session->message_size -= ENG_MIN(session->message_size, 3u);
		session->mode = SINK_MODE_COMMAND;
		sink_message_done(session);
	}
}

/* Work through the received bytes until they run out, the replies need
 * sending, or the session is closing. */
static void
sink_process(struct bench_sink_session *session)
{
	for (uint32_t guard = 0; guard <= SINK_RECV_SIZE; guard++) {
		if (session->is_closing || session->is_starttls_pending ||
		    session->recv_pos == session->recv_end)
			break;
		if (SINK_SEND_SIZE - session->send_len < SINK_SEND_ROOM_MIN)
			break;
		if (session->mode != SINK_MODE_COMMAND) {
			sink_take_data(session);
			continue;
		}
		if (!sink_take_command(session))
			break;
	}
	/* Keep a partial line at the front; data is never kept. */
	if (session->recv_pos == session->recv_end) {
		session->recv_pos = 0;
		session->recv_end = 0;
	} else if (session->recv_pos > 0 && session->recv_end > SINK_RECV_SIZE - SINK_LINE_MAX) {
		uint32_t keep = session->recv_end - session->recv_pos;
		memmove(session->recv_buf, session->recv_buf + session->recv_pos, keep);
		session->recv_pos = 0;
		session->recv_end = keep;
	}
}

/* ---- I/O -------------------------------------------------------------- */

static void
sink_session_release(struct bench_sink_session *session)
{
	struct bench_sink_worker *worker = session->worker;
	ENG_ASSERT(session->is_in_use);
	ENG_ASSERT(!session->op.in_flight);
	if (session->tls != NULL)
		eng_tls_end(session->tls); /* no-op when TLS never started */
	if (session->has_conc_domain) {
		struct bench_sink_domain *domain = sink_domain(session, session->conc_domain);
		int64_t before = atomic_fetch_sub_explicit(&domain->concurrency, 1,
							   memory_order_relaxed);
		ENG_ASSERT(before >= 1);
	}
	uint64_t active = bench_counter_get(&worker->totals.sessions_active);
	ENG_ASSERT(active > 0);
	atomic_store_explicit(&worker->totals.sessions_active, active - 1, memory_order_relaxed);
	session->is_in_use = false;
	session->next_free = worker->free_list;
	worker->free_list = session;
}

static void
sink_prep_failed(struct bench_sink_session *session, int ret)
{
	/* The SQ is flushed when full, so only a broken ring gets here. */
	fprintf(stderr, "ringmail-sink: ring prep failed: %s\n", strerror(-ret));
	close(session->fd);
	sink_session_release(session);
}

static void
sink_session_close(struct bench_sink_session *session)
{
	session->op.tag = RING_OP_CLOSE;
	int ret = ring_prep_close(session->worker->ring, &session->op, session->fd);
	if (ret < 0)
		sink_prep_failed(session, ret);
}

/* ---- TLS (after STARTTLS) ------------------------------------------------ */

/* Encrypt the queued replies as far as the TLS output has room. */
static void
sink_tls_encrypt(struct bench_sink_session *session)
{
	for (uint32_t guard = 0; guard < SINK_SEND_SIZE && session->send_done < session->send_len;
	     guard++) {
		size_t taken = 0;
		enum eng_tls_result result =
			eng_tls_write(session->tls, (const uint8_t *)session->send_buf + session->send_done,
				      session->send_len - session->send_done, &taken);
		if (result == ENG_TLS_WANT_IO)
			break;
		if (result != ENG_TLS_OK) {
			session->send_done = session->send_len; /* nothing more can be sent */
			session->is_closing = true;
			break;
		}
		session->send_done += (uint32_t)taken;
	}
	ENG_ASSERT(session->send_done <= session->send_len);
	if (session->send_done == session->send_len) {
		session->send_len = 0;
		session->send_done = 0;
	}
}

/* Handshake step; counts it when it ends. */
static void
sink_tls_handshake(struct bench_sink_session *session)
{
	struct bench_sink_totals *totals = &session->worker->totals;
	enum eng_tls_result result = eng_tls_handshake(session->tls);
	if (result == ENG_TLS_WANT_IO)
		return;
	if (result != ENG_TLS_OK) {
		bench_counter_add(&totals->tls_handshake_errors, 1);
		session->is_closing = true; /* after sending any alert */
		return;
	}
	struct eng_tls_info info;
	eng_tls_get_info(session->tls, &info);
	bench_counter_add(info.is_resumed ? &totals->tls_handshakes_resumed
					  : &totals->tls_handshakes_full, 1);
	session->is_tls_handshaking = false;
	sink_transaction_reset(session);
}

/* Decrypt, answer and encrypt until input runs out or output is full. */
static void
sink_tls_pump(struct bench_sink_session *session)
{
	for (uint32_t guard = 0; guard < 1024u; guard++) {
		sink_process(session);
		sink_tls_encrypt(session);
		if (session->is_closing || session->send_len > 0 ||
		    session->recv_end == SINK_RECV_SIZE)
			break;
		size_t got = 0;
		enum eng_tls_result result =
			eng_tls_read(session->tls, session->recv_buf + session->recv_end,
				     SINK_RECV_SIZE - session->recv_end, &got);
		if (result == ENG_TLS_WANT_IO)
			break;
		if (result != ENG_TLS_OK) {
			if (result == ENG_TLS_ERROR)
				bench_counter_add(&session->worker->totals.protocol_errors, 1);
			session->is_closing = true;
			break;
		}
		session->recv_end += (uint32_t)got;
	}
	if (session->is_closing && session->send_len == 0)
		eng_tls_shutdown(session->tls);
}

/* The next op of an encrypted session: send, close or recv. */
static void
sink_tls_continue(struct bench_sink_session *session)
{
	struct eng_tls *tls = session->tls;
	if (session->is_tls_handshaking && !session->is_closing)
		sink_tls_handshake(session);
	if (!session->is_tls_handshaking && !session->is_closing)
		sink_tls_pump(session);
	int ret;
	if (eng_tls_output_is_pending(tls)) {
		const uint8_t *ptr = NULL;
		size_t size = 0;
		eng_tls_output(tls, &ptr, &size);
		session->op.tag = RING_OP_SEND;
		ret = ring_prep_send(session->worker->ring, &session->op, session->fd, ptr,
				     (uint32_t)size, MSG_NOSIGNAL);
	} else if (session->is_closing) {
		return sink_session_close(session);
	} else {
		uint8_t *ptr = NULL;
		size_t size = 0;
		eng_tls_input_space(tls, &ptr, &size);
		if (size == 0) { /* wolfSSL stopped reading: cannot happen */
			bench_counter_add(&session->worker->totals.protocol_errors, 1);
			return sink_session_close(session);
		}
		session->op.tag = RING_OP_RECV;
		ret = ring_prep_recv(session->worker->ring, &session->op, session->fd, ptr,
				     (uint32_t)size, 0);
	}
	if (ret < 0)
		sink_prep_failed(session, ret);
}

/* The 220 to STARTTLS is sent: the handshake starts. */
static void
sink_tls_begin(struct bench_sink_session *session)
{
	ENG_ASSERT(session->tls != NULL && !session->is_tls);
	ENG_ASSERT(session->send_len == 0 && session->recv_pos == session->recv_end);
	session->is_starttls_pending = false;
	session->is_tls = true;
	session->is_tls_handshaking = true;
	session->recv_pos = 0;
	session->recv_end = 0;
	if (eng_tls_server_start(session->tls, session->worker->shared->tls_ctx) != 0) {
		bench_counter_add(&session->worker->totals.tls_handshake_errors, 1);
		return sink_session_close(session);
	}
	sink_tls_continue(session);
}

/* A send or recv of an encrypted session completed. */
static void
sink_tls_callback(struct bench_sink_session *session, int32_t res)
{
	if (res == -EINTR || res == -EAGAIN)
		return sink_tls_continue(session);
	if (res <= 0)
		return sink_session_close(session);
	if (session->op.tag == RING_OP_SEND)
		eng_tls_output_consume(session->tls, (size_t)res);
	else
		eng_tls_input_commit(session->tls, (size_t)res);
	sink_tls_continue(session);
}

/* Decide the next op: delay, send, recv or close. */
static void
sink_session_continue(struct bench_sink_session *session)
{
	struct ring *ring = session->worker->ring;
	int ret;
	if (session->is_tls)
		return sink_tls_continue(session);
	sink_process(session);
	if (session->send_len > session->send_done) {
		uint64_t delay_ns = session->worker->shared->config.delay_ns;
		if (delay_ns != 0 && session->send_done == 0 && session->op.tag != RING_OP_TIMEOUT) {
			session->op.tag = RING_OP_TIMEOUT;
			ret = ring_prep_timeout(ring, &session->op, delay_ns);
		} else {
			session->op.tag = RING_OP_SEND;
			ret = ring_prep_send(ring, &session->op, session->fd,
					     session->send_buf + session->send_done,
					     session->send_len - session->send_done, MSG_NOSIGNAL);
		}
	} else if (session->is_closing) {
		return sink_session_close(session);
	} else if (session->is_starttls_pending) {
		return sink_tls_begin(session);
	} else {
		session->op.tag = RING_OP_RECV;
		ret = ring_prep_recv(ring, &session->op, session->fd,
				     session->recv_buf + session->recv_end,
				     SINK_RECV_SIZE - session->recv_end, 0);
	}
	if (ret < 0)
		sink_prep_failed(session, ret);
}

static void
sink_session_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_sink_session *session = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(session->is_in_use);
	switch (op->tag) {
	case RING_OP_CLOSE:
		return sink_session_release(session);
	case RING_OP_TIMEOUT:
		break; /* -ETIME: the delay passed; send now */
	case RING_OP_SEND:
		if (session->is_tls)
			return sink_tls_callback(session, res);
		if (res == -EINTR || res == -EAGAIN)
			break;
		if (res <= 0)
			return sink_session_close(session);
		session->send_done += (uint32_t)res;
		ENG_ASSERT(session->send_done <= session->send_len);
		if (session->send_done == session->send_len) {
			session->send_len = 0;
			session->send_done = 0;
		}
		break;
	case RING_OP_RECV:
		if (session->is_tls)
			return sink_tls_callback(session, res);
		if (res == -EINTR || res == -EAGAIN)
			break;
		if (res <= 0)
			return sink_session_close(session);
		session->recv_end += (uint32_t)res;
		ENG_ASSERT(session->recv_end <= SINK_RECV_SIZE);
		break;
	default:
		ENG_PANIC("sink session: unknown op");
	}
	sink_session_continue(session);
}

static struct bench_sink_session *
sink_session_alloc(struct bench_sink_worker *worker)
{
	struct bench_sink_session *session = worker->free_list;
	if (session != NULL) {
		worker->free_list = session->next_free;
		return session;
	}
	return NULL;
}

void
bench_sink_session_start(struct bench_sink_worker *worker, int fd)
{
	ENG_ASSERT(worker != NULL);
	ENG_ASSERT(fd >= 0);
	struct bench_sink_session *session = sink_session_alloc(worker);
	if (session == NULL) {
		bench_counter_add(&worker->totals.sessions_refused, 1);
		close(fd);
		return;
	}
	ENG_ASSERT(!session->is_in_use);
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	session->worker = worker;
	session->fd = fd;
	session->is_in_use = true;
	session->is_closing = false;
	session->has_conc_domain = false;
	session->is_starttls_pending = false;
	session->is_tls = false;
	session->is_tls_handshaking = false;
	session->mode = SINK_MODE_COMMAND;
	session->serial = worker->session_serial_next++;
	session->recv_pos = 0;
	session->recv_end = 0;
	session->send_len = 0;
	session->send_done = 0;
	session->op.callback = sink_session_callback;
	session->op.ctx = session;
	session->op.tag = 0;
	sink_transaction_reset(session);
	bench_counter_add(&worker->totals.sessions, 1);
	bench_counter_add(&worker->totals.sessions_active, 1);
	char text[SINK_SEND_ROOM_MIN - 8];
	snprintf(text, sizeof(text), "220 %s ESMTP ringmail-sink", worker->shared->config.hostname);
	sink_reply(session, text);
	sink_session_continue(session);
}

int
bench_sink_sessions_init(struct bench_sink_worker *worker)
{
	ENG_ASSERT(worker != NULL);
	ENG_ASSERT(worker->sessions == NULL);
	uint32_t count = worker->shared->config.sessions_max;
	ENG_ASSERT(count > 0);
	struct bench_sink_session *sessions = calloc(count, sizeof(*sessions));
	if (sessions == NULL)
		return -ENOMEM;
	if (worker->shared->tls_ctx != NULL) {
		worker->tls_slots = calloc(count, sizeof(*worker->tls_slots));
		if (worker->tls_slots == NULL) {
			free(sessions);
			return -ENOMEM;
		}
	}
	for (uint32_t i = count; i > 0; i--) {
		sessions[i - 1].tls = worker->tls_slots != NULL ? &worker->tls_slots[i - 1] : NULL;
		sessions[i - 1].worker = worker;
		sessions[i - 1].fd = -1;
		sessions[i - 1].next_free = worker->free_list;
		worker->free_list = &sessions[i - 1];
	}
	worker->sessions = sessions;
	return 0;
}

void
bench_sink_sessions_teardown(struct bench_sink_worker *worker)
{
	ENG_ASSERT(worker != NULL);
	if (worker->tls_slots != NULL) {
		uint32_t count = worker->shared->config.sessions_max;
		for (uint32_t i = 0; i < count; i++)
			eng_tls_end(&worker->tls_slots[i]);
	}
	free(worker->tls_slots);
	worker->tls_slots = NULL;
	free(worker->sessions);
	worker->sessions = NULL;
}
