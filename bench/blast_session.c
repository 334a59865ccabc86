/*
 * blast_session.c - one ringmail-blast SMTP client session on a worker's
 * ring (blast.h, docs/bench-tools.md).
 *
 * A session connects, reads the greeting, says EHLO (HELO if refused),
 * then sends transactions: MAIL, RCPT x R and DATA (or BDAT n LAST with
 * --bdat and CHUNKING), all in one send when the server offers PIPELINING
 * (RFC 2920 3.1: DATA/BDAT last in the group), one by one otherwise.
 * After 354 the message goes out in one sendmsg: headers, body, ".\r\n".
 * Replies are matched to commands strictly in order (smtp_reply parses
 * one reply at a time), so a reply can never be counted for the wrong
 * command. After --per-conn messages the session says QUIT and connects
 * again; when the plan is used up it says QUIT and is done.
 *
 * Latency: from the submission of the send that holds the final dot (or
 * the BDAT LAST chunk) to the parse of its reply.
 *
 * The one-op-in-flight rule (blast.h) means a session's state changes only
 * in its own callback; a reply arriving while nothing waits for it is a
 * protocol error.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_net.h"
#include "blast.h"
#include "engine/eng_common.h"

enum blast_state {
	BLAST_FREE = 0,
	BLAST_CONNECT,	/* connect in flight */
	BLAST_GREETING, /* waiting for 220 */
	BLAST_EHLO,
	BLAST_HELO,
	BLAST_RATE,	/* timer: the message's start time under --rate */
	BLAST_TXN,	/* waiting for MAIL, RCPT, DATA/BDAT replies */
	BLAST_BODY,	/* waiting for the reply to the final dot */
	BLAST_RSET,	/* after a failed transaction (RFC 5321 4.1.1.5) */
	BLAST_QUIT,
	BLAST_CLOSE,	/* close in flight */
	BLAST_BACKOFF,	/* timer before connecting again */
	BLAST_DONE,
};

struct bench_blast_session {
	struct bench_blast_worker *worker;
	struct ring_op op;
	int fd;
	uint8_t state;
	bool is_server_closing; /* a 421 was read: close after it */
	bool is_reconnect;	/* after the close, connect again */
	bool has_message;	/* a message is taken and has no outcome yet */
	bool is_pipelined;	/* this connection pipelines */
	bool is_bdat;		/* this connection uses BDAT */
	bool needs_rset;	/* the last transaction failed: RSET first */
	uint32_t connect_failures;
	uint32_t messages_on_conn;
	uint64_t deadline_ns; /* reply timeout; 0: none */
	/* Transaction. */
	uint64_t message_index;
	uint32_t domain_index;
	uint32_t message_size;
	uint32_t content_size; /* bytes of the message as sent */
	uint32_t commands_sent;	    /* MAIL = 0, RCPT 1..R, DATA/BDAT R+1 */
	uint32_t replies_expected;  /* commands sent and not answered */
	uint32_t replies_read;
	uint16_t mail_code;
	uint32_t rcpt_accepted;
	uint32_t rcpt_4xx;
	uint64_t final_sent_ns;
	/* Send. */
	struct msghdr msg;
	struct iovec iov[3];
	uint64_t send_left;
	bool has_send;
	uint32_t cmd_len;
	char cmd[BLAST_CMD_SIZE];
	/* Receive. */
	uint32_t recv_pos;
	uint32_t recv_end;
	uint8_t recv_buf[BLAST_RECV_SIZE];
	struct smtp_ehlo_caps caps;
	struct smtp_reply_parser parser;
};

static void blast_continue(struct bench_blast_session *session);
static void blast_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags);
static void blast_next_message(struct bench_blast_session *session);

static const struct bench_blast_config *
blast_config(const struct bench_blast_session *session)
{
	return &session->worker->shared->config;
}

/* ---- sending ------------------------------------------------------------ */

static void
blast_cmd_reset(struct bench_blast_session *session)
{
	ENG_ASSERT(!session->has_send);
	session->cmd_len = 0;
}

__attribute__((format(printf, 2, 3))) static void
blast_cmd(struct bench_blast_session *session, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = BLAST_CMD_SIZE - session->cmd_len;
	int len = vsnprintf(session->cmd + session->cmd_len, room, fmt, ap);
	va_end(ap);
	ENG_ASSERT(len > 0 && (size_t)len < room);
	session->cmd_len += (uint32_t)len;
}

/* Queue cmd, then optionally body bytes and a trailer, as one send. */
static void
blast_send(struct bench_blast_session *session, const uint8_t *body, uint32_t body_size,
	   const char *trailer)
{
	ENG_ASSERT(!session->has_send);
	ENG_ASSERT(session->cmd_len > 0);
	uint32_t count = 0;
	session->iov[count++] = (struct iovec){ session->cmd, session->cmd_len };
	if (body_size > 0)
		session->iov[count++] = (struct iovec){ (void *)(uintptr_t)body, body_size };
	if (trailer != NULL)
		session->iov[count++] = (struct iovec){ (void *)(uintptr_t)trailer, strlen(trailer) };
	memset(&session->msg, 0, sizeof(session->msg));
	session->msg.msg_iov = session->iov;
	session->msg.msg_iovlen = count;
	session->send_left = 0;
	for (uint32_t i = 0; i < count; i++)
		session->send_left += session->iov[i].iov_len;
	session->has_send = true;
}

/* Drop sent bytes from the front of the iovecs after a short send. */
static void
blast_send_advance(struct bench_blast_session *session, uint64_t sent)
{
	ENG_ASSERT(sent <= session->send_left);
	session->send_left -= sent;
	for (size_t i = 0; i < session->msg.msg_iovlen && sent > 0; i++) {
		struct iovec *iov = &session->msg.msg_iov[i];
		uint64_t take = ENG_MIN((uint64_t)iov->iov_len, sent);
		iov->iov_base = (uint8_t *)iov->iov_base + take;
		iov->iov_len -= take;
		sent -= take;
	}
	while (session->msg.msg_iovlen > 0 && session->msg.msg_iov[0].iov_len == 0) {
		session->msg.msg_iov++;
		session->msg.msg_iovlen--;
	}
	if (session->send_left == 0)
		session->has_send = false;
}

/* ---- outcomes ----------------------------------------------------------- */

static void
blast_log_id(struct bench_blast_session *session, const struct smtp_reply *reply)
{
	const struct bench_blast_config *config = blast_config(session);
	if (config->log_ids_fd < 0)
		return;
	const char *text = NULL;
	size_t size = 0;
	smtp_reply_line(reply, 0, &text, &size);
	/* "queued as ID" (Postfix, ringmail), "id=ID" (Exim); else "-". */
	const char *id = "-";
	size_t id_size = 1;
	const char *mark = memmem(text, size, "queued as ", 10);
	size_t mark_size = 10;
	if (mark == NULL) {
		mark = memmem(text, size, "id=", 3);
		mark_size = 3;
	}
	if (mark != NULL) {
		id = mark + mark_size;
		id_size = size - (size_t)(id - text);
	}
	const char *end = memchr(id, ' ', id_size);
	if (end != NULL)
		id_size = (size_t)(end - id);
	if (id_size == 0 || id_size > 100) {
		id = "-";
		id_size = 1;
	}
	char line[256];
	int len = snprintf(line, sizeof(line), "%.*s %s-%llu\n", (int)id_size, id, config->run_id,
			   (unsigned long long)session->message_index);
	ENG_ASSERT(len > 0 && (size_t)len < sizeof(line));
	/* One write per line on an O_APPEND descriptor: whole lines even if
	 * blast is killed, and across threads. */
	if (write(config->log_ids_fd, line, (size_t)len) != len)
		fprintf(stderr, "ringmail-blast: --log-ids: write failed\n");
}

/* The message has its outcome: class 2 (accepted), 4, 5, or 0 (lost). */
static void
blast_message_done(struct bench_blast_session *session, uint32_t reply_class,
		   const struct smtp_reply *reply)
{
	struct bench_blast_worker *worker = session->worker;
	ENG_ASSERT(session->has_message);
	session->has_message = false;
	session->messages_on_conn++;
	switch (reply_class) {
	case 2:
		bench_counter_add(&worker->totals.accepted, 1);
		bench_counter_add(&worker->totals.bytes, session->content_size);
		worker->domain_accepted[session->domain_index]++;
		bench_samples_add(&worker->latency, bench_now_ns() - session->final_sent_ns);
		blast_log_id(session, reply);
		break;
	case 4:
		bench_counter_add(&worker->totals.failed_4xx, 1);
		session->needs_rset = true;
		break;
	case 5:
		bench_counter_add(&worker->totals.failed_5xx, 1);
		session->needs_rset = true;
		break;
	default: bench_counter_add(&worker->totals.lost, 1); break;
	}
}

/* Class of a failed transaction: MAIL's if it failed; the recipients'
 * when none was accepted; else the given reply's. */
static uint32_t
blast_failure_class(const struct bench_blast_session *session, uint32_t reply_class)
{
	if (session->mail_code / 100 != 2)
		return session->mail_code / 100 == 4 ? 4 : 5;
	if (session->rcpt_accepted == 0)
		return session->rcpt_4xx > 0 ? 4 : 5;
	return reply_class == 4 ? 4 : 5;
}

/* ---- transactions -------------------------------------------------------- */

static void
blast_rcpt_address(struct bench_blast_session *session, uint32_t rcpt_index)
{
	const struct bench_blast_shared *shared = session->worker->shared;
	if (shared->config.recipient_count == 1)
		blast_cmd(session, "RCPT TO:<u%llu@%s>\r\n",
			  (unsigned long long)session->message_index,
			  shared->domains[session->domain_index]);
	else
		blast_cmd(session, "RCPT TO:<u%llu.%u@%s>\r\n",
			  (unsigned long long)session->message_index, rcpt_index,
			  shared->domains[session->domain_index]);
}

/* Headers into hdr; returns their length. */
static uint32_t
blast_headers(struct bench_blast_session *session, char *hdr, size_t hdr_size)
{
	const struct bench_blast_shared *shared = session->worker->shared;
	unsigned long long n = (unsigned long long)session->message_index;
	int len = snprintf(hdr, hdr_size,
			   "From: ringmail-blast <%s>\r\nTo: <u%llu@%s>\r\n"
			   "Subject: ringmail-blast %s %llu\r\n"
			   "Message-ID: <%s-%llu@blast.ringmail.test>\r\nX-Blast-Id: %s-%llu\r\n"
			   "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n",
			   shared->config.mail_from, n, shared->domains[session->domain_index],
			   shared->config.run_id, n, shared->config.run_id, n,
			   shared->config.run_id, n);
	ENG_ASSERT(len > 0 && (size_t)len < hdr_size);
	return (uint32_t)len;
}

/* Body bytes after headers of hdr_len: whole lines from the end of the
 * shared filler, so the message is about message_size bytes. */
static uint32_t
blast_body_size(const struct bench_blast_session *session, uint32_t hdr_len)
{
	uint32_t want = session->message_size > hdr_len ? session->message_size - hdr_len : 0;
	want -= want % BLAST_BODY_LINE_SIZE;
	uint32_t have = session->worker->shared->body_size;
	return ENG_MIN(want, have);
}

static const uint8_t *
blast_body(const struct bench_blast_session *session, uint32_t size)
{
	const struct bench_blast_shared *shared = session->worker->shared;
	ENG_ASSERT(size <= shared->body_size);
	return shared->body + (shared->body_size - size);
}

/* The final command: DATA, or BDAT with the whole message. */
static void
blast_cmd_final(struct bench_blast_session *session)
{
	if (!session->is_bdat) {
		blast_cmd(session, "DATA\r\n");
		blast_send(session, NULL, 0, NULL);
		return;
	}
	char hdr[1024];
	uint32_t hdr_len = blast_headers(session, hdr, sizeof(hdr));
	uint32_t body_size = blast_body_size(session, hdr_len);
	session->content_size = hdr_len + body_size;
	blast_cmd(session, "BDAT %u LAST\r\n%s", hdr_len + body_size, hdr);
	blast_send(session, blast_body(session, body_size), body_size, NULL);
	session->final_sent_ns = bench_now_ns();
}

/* Message message_index starts: MAIL (and, pipelined, the rest). */
static void
blast_start_message(struct bench_blast_session *session, uint64_t message_index)
{
	struct bench_blast_worker *worker = session->worker;
	const struct bench_blast_config *config = blast_config(session);
	ENG_ASSERT(!session->has_message);
	ENG_ASSERT(message_index < config->message_count);
	session->has_message = true;
	session->message_index = message_index;
	session->domain_index = bench_blast_domain_of(worker->shared, message_index);
	session->message_size = bench_blast_size_of(worker->shared, message_index);
	session->mail_code = 0;
	session->rcpt_accepted = 0;
	session->rcpt_4xx = 0;
	session->replies_read = 0;
	bench_counter_add(&worker->totals.sent, 1);
	worker->domain_sent[session->domain_index]++;
	blast_cmd_reset(session);
	blast_cmd(session, "MAIL FROM:<%s>\r\n", config->mail_from);
	session->state = BLAST_TXN;
	if (!session->is_pipelined) {
		session->commands_sent = 1;
		session->replies_expected = 1;
		blast_send(session, NULL, 0, NULL);
		return;
	}
	for (uint32_t r = 0; r < config->recipient_count; r++)
		blast_rcpt_address(session, r);
	session->commands_sent = config->recipient_count + 2;
	session->replies_expected = session->commands_sent;
	blast_cmd_final(session);
}

/* Unpipelined: send the command after the one just answered. */
static void
blast_send_next_command(struct bench_blast_session *session)
{
	uint32_t rcpt_count = blast_config(session)->recipient_count;
	ENG_ASSERT(!session->is_pipelined);
	ENG_ASSERT(session->commands_sent <= rcpt_count + 1);
	blast_cmd_reset(session);
	if (session->commands_sent <= rcpt_count)
		blast_rcpt_address(session, session->commands_sent - 1);
	session->commands_sent++;
	session->replies_expected++;
	if (session->commands_sent == rcpt_count + 2)
		blast_cmd_final(session);
	else
		blast_send(session, NULL, 0, NULL);
}

/* 354: the message, then the final dot, in one send. */
static void
blast_send_content(struct bench_blast_session *session)
{
	char hdr[1024];
	uint32_t hdr_len = blast_headers(session, hdr, sizeof(hdr));
	uint32_t body_size = blast_body_size(session, hdr_len);
	blast_cmd_reset(session);
	blast_cmd(session, "%s", hdr);
	session->content_size = hdr_len + body_size;
	blast_send(session, blast_body(session, body_size), body_size, ".\r\n");
	session->final_sent_ns = bench_now_ns();
	session->state = BLAST_BODY;
	session->replies_expected = 1;
}

/* A reply to a transaction command (MAIL, RCPT, DATA or BDAT). */
static void
blast_txn_reply(struct bench_blast_session *session, const struct smtp_reply *reply)
{
	struct bench_blast_worker *worker = session->worker;
	uint32_t rcpt_count = blast_config(session)->recipient_count;
	uint32_t index = session->replies_read++;
	uint32_t reply_class = smtp_reply_class(reply);
	ENG_ASSERT(index <= rcpt_count + 1);
	if (index == 0) {
		session->mail_code = reply->code;
	} else if (index <= rcpt_count) {
		if (reply_class == 2) {
			session->rcpt_accepted++;
			bench_counter_add(&worker->totals.rcpt_accepted, 1);
		} else if (reply_class == 4) {
			session->rcpt_4xx++;
			bench_counter_add(&worker->totals.rcpt_4xx, 1);
		} else {
			bench_counter_add(&worker->totals.rcpt_5xx, 1);
		}
	} else if (reply->code == 354 && !session->is_bdat) {
		return blast_send_content(session);
	} else if (reply_class == 2 && session->is_bdat) {
		blast_message_done(session, 2, reply);
		return blast_next_message(session);
	} else {
		blast_message_done(session, blast_failure_class(session, reply_class), reply);
		return blast_next_message(session);
	}
	if (session->is_pipelined)
		return;
	if (index == 0 && reply_class != 2) {
		blast_message_done(session, blast_failure_class(session, reply_class), reply);
		return blast_next_message(session);
	}
	blast_send_next_command(session);
}

/* ---- connection --------------------------------------------------------- */

static bool
blast_has_more(const struct bench_blast_session *session)
{
	const struct bench_blast_shared *shared = session->worker->shared;
	return !atomic_load(&shared->is_stopping) &&
	       atomic_load_explicit(&shared->next_message, memory_order_relaxed) <
		       shared->config.message_count;
}

static void
blast_prep_failed(int ret)
{
	/* The SQ is flushed when full: only a broken ring fails a prep. */
	fprintf(stderr, "ringmail-blast: ring prep failed: %s\n", strerror(-ret));
	abort();
}

static void
blast_prep_timer(struct bench_blast_session *session, uint8_t state, uint64_t ns)
{
	session->state = state;
	session->op.tag = RING_OP_TIMEOUT;
	int ret = ring_prep_timeout(session->worker->ring, &session->op, ns);
	if (ret < 0)
		blast_prep_failed(ret);
}

/* End the connection (error, 421, QUIT answered): a message without an
 * outcome is lost; connect again while the plan has messages. */
static void
blast_conn_end(struct bench_blast_session *session)
{
	ENG_ASSERT(session->fd >= 0);
	if (session->has_message)
		blast_message_done(session, 0, NULL);
	session->has_send = false;
	session->deadline_ns = 0;
	session->is_reconnect = blast_has_more(session);
	session->state = BLAST_CLOSE;
	session->op.tag = RING_OP_CLOSE;
	int ret = ring_prep_close(session->worker->ring, &session->op, session->fd);
	if (ret < 0)
		blast_prep_failed(ret);
}

static void
blast_connect(struct bench_blast_session *session)
{
	struct bench_blast_shared *shared = session->worker->shared;
	ENG_ASSERT(session->fd < 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "ringmail-blast: socket: %s\n", strerror(errno));
		atomic_store(&shared->is_fatal, true);
		atomic_store(&shared->is_stopping, true);
		session->state = BLAST_DONE;
		session->worker->sessions_done++;
		return;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	session->fd = fd;
	session->state = BLAST_CONNECT;
	session->messages_on_conn = 0;
	session->is_server_closing = false;
	session->needs_rset = false;
	session->recv_pos = 0;
	session->recv_end = 0;
	smtp_reply_parser_init(&session->parser);
	smtp_ehlo_caps_init(&session->caps);
	session->op.tag = RING_OP_CONNECT;
	int ret = ring_prep_connect(session->worker->ring, &session->op, fd,
				    (const struct sockaddr *)&shared->config.addr,
				    sizeof(shared->config.addr));
	if (ret < 0)
		blast_prep_failed(ret);
}

static void
blast_quit(struct bench_blast_session *session)
{
	blast_cmd_reset(session);
	blast_cmd(session, "QUIT\r\n");
	blast_send(session, NULL, 0, NULL);
	session->state = BLAST_QUIT;
	session->replies_expected = 1;
}

/* Between transactions: the next message, a --rate wait, or QUIT. */
static void
blast_next_message(struct bench_blast_session *session)
{
	struct bench_blast_shared *shared = session->worker->shared;
	const struct bench_blast_config *config = &shared->config;
	ENG_ASSERT(!session->has_message);
	if (session->messages_on_conn >= config->per_conn || !blast_has_more(session))
		return blast_quit(session);
	if (session->needs_rset) {
		/* The server may hold the failed transaction open (Postfix
		 * does after "554 no valid recipients"). */
		session->needs_rset = false;
		blast_cmd_reset(session);
		blast_cmd(session, "RSET\r\n");
		blast_send(session, NULL, 0, NULL);
		session->state = BLAST_RSET;
		session->replies_expected = 1;
		return;
	}
	uint64_t index = atomic_fetch_add_explicit(&shared->next_message, 1, memory_order_relaxed);
	if (index >= config->message_count)
		return blast_quit(session);
	if (config->rate > 0.0) {
		uint64_t due_ns = shared->start_ns + (uint64_t)((double)index * 1e9 / config->rate);
		uint64_t now_ns = bench_now_ns();
		if (due_ns > now_ns) {
			session->message_index = index;
			return blast_prep_timer(session, BLAST_RATE, due_ns - now_ns);
		}
	}
	blast_start_message(session, index);
}

static void
blast_greeting_reply(struct bench_blast_session *session, const struct smtp_reply *reply)
{
	if (smtp_reply_class(reply) != 2) {
		bench_counter_add(&session->worker->totals.greeting_failures, 1);
		session->is_server_closing = true;
		return;
	}
	blast_cmd_reset(session);
	blast_cmd(session, "EHLO %s\r\n", blast_config(session)->helo_name);
	blast_send(session, NULL, 0, NULL);
	session->state = BLAST_EHLO;
	session->replies_expected = 1;
}

static void
blast_hello_reply(struct bench_blast_session *session, const struct smtp_reply *reply)
{
	const struct bench_blast_config *config = blast_config(session);
	uint32_t reply_class = smtp_reply_class(reply);
	if (reply_class != 2 && session->state == BLAST_EHLO) {
		blast_cmd_reset(session);
		blast_cmd(session, "HELO %s\r\n", config->helo_name);
		blast_send(session, NULL, 0, NULL);
		session->state = BLAST_HELO;
		session->replies_expected = 1;
		return;
	}
	if (reply_class != 2) {
		bench_counter_add(&session->worker->totals.greeting_failures, 1);
		session->is_server_closing = true;
		return;
	}
	if (session->state == BLAST_EHLO)
		smtp_ehlo_parse(reply, &session->caps);
	session->is_pipelined = config->is_pipelining &&
				smtp_ehlo_has(&session->caps, SMTP_EXT_PIPELINING);
	session->is_bdat = config->is_bdat && smtp_ehlo_has(&session->caps, SMTP_EXT_CHUNKING);
	blast_next_message(session);
}

static void
blast_reply(struct bench_blast_session *session, const struct smtp_reply *reply)
{
	ENG_ASSERT(session->replies_expected > 0);
	session->replies_expected--;
	if (reply->code == 421) {
		bench_counter_add(&session->worker->totals.replies_421, 1);
		if (session->has_message)
			blast_message_done(session, 4, reply);
		session->is_server_closing = true;
		return;
	}
	switch (session->state) {
	case BLAST_GREETING: return blast_greeting_reply(session, reply);
	case BLAST_EHLO:
	case BLAST_HELO: return blast_hello_reply(session, reply);
	case BLAST_TXN: return blast_txn_reply(session, reply);
	case BLAST_BODY:
		blast_message_done(session, smtp_reply_class(reply) == 2 ? 2 :
					    (smtp_reply_class(reply) == 4 ? 4 : 5), reply);
		return blast_next_message(session);
	case BLAST_RSET: return blast_next_message(session);
	case BLAST_QUIT: session->is_server_closing = true; return;
	default: ENG_PANIC("blast: reply in a state that expects none");
	}
}

/* Parse what was received, one reply at a time, while replies are due and
 * nothing is queued to send. Returns false on a protocol error. */
static bool
blast_read_replies(struct bench_blast_session *session)
{
	for (uint32_t guard = 0; guard <= BLAST_RECV_SIZE; guard++) {
		if (session->recv_pos == session->recv_end || session->has_send ||
		    session->is_server_closing || session->replies_expected == 0)
			break;
		size_t consumed = 0;
		enum smtp_parse_result result =
			smtp_reply_parse(&session->parser, session->recv_buf + session->recv_pos,
					 session->recv_end - session->recv_pos, &consumed);
		if (result == SMTP_PARSE_ERROR)
			return false;
		session->recv_pos += (uint32_t)consumed;
		if (result == SMTP_PARSE_OK)
			blast_reply(session, &session->parser.reply);
	}
	if (session->recv_pos == session->recv_end) {
		session->recv_pos = 0;
		session->recv_end = 0;
	}
	return true;
}

/* After any event: send what is queued, else read due replies, else end
 * the connection the server is closing. States whose op is already in
 * flight (timers, connect, close) need nothing here. */
static void
blast_continue(struct bench_blast_session *session)
{
	struct ring *ring = session->worker->ring;
	uint64_t timeout_ns = blast_config(session)->timeout_ns;
	for (uint32_t pass = 0; pass < 4; pass++) {
		if (session->state == BLAST_RATE || session->state == BLAST_BACKOFF ||
		    session->state == BLAST_CONNECT || session->state == BLAST_CLOSE ||
		    session->state == BLAST_DONE)
			return;
		int ret;
		if (session->has_send) {
			session->op.tag = RING_OP_SENDMSG;
			session->deadline_ns = bench_now_ns() + timeout_ns;
			ret = ring_prep_sendmsg(ring, &session->op, session->fd, &session->msg,
						MSG_NOSIGNAL);
		} else if (session->is_server_closing || session->replies_expected == 0) {
			return blast_conn_end(session);
		} else if (session->recv_pos < session->recv_end) {
			if (!blast_read_replies(session)) {
				bench_counter_add(&session->worker->totals.protocol_errors, 1);
				return blast_conn_end(session);
			}
			continue;
		} else {
			session->op.tag = RING_OP_RECV;
			session->deadline_ns = bench_now_ns() + timeout_ns;
			ret = ring_prep_recv(ring, &session->op, session->fd,
					     session->recv_buf + session->recv_end,
					     BLAST_RECV_SIZE - session->recv_end, 0);
		}
		if (ret < 0)
			blast_prep_failed(ret);
		return;
	}
	ENG_PANIC("blast: continue did not settle");
}

/* A connection that carried no message (refused, greeting refused or
 * timed out): back off and try again, up to BLAST_CONNECT_FAILURES_MAX in
 * a row, then give the run up. */
static void
blast_conn_failed(struct bench_blast_session *session, const char *why)
{
	struct bench_blast_worker *worker = session->worker;
	ENG_ASSERT(session->fd < 0);
	if (++session->connect_failures >= BLAST_CONNECT_FAILURES_MAX &&
	    !atomic_load(&worker->shared->is_fatal)) {
		char text[64];
		bench_addr_text(&worker->shared->config.addr, text, sizeof(text));
		fprintf(stderr, "ringmail-blast: %s: %s (%u attempts in a row)\n", text, why,
			session->connect_failures);
		atomic_store(&worker->shared->is_fatal, true);
		atomic_store(&worker->shared->is_stopping, true);
	}
	if (!blast_has_more(session)) {
		session->state = BLAST_DONE;
		worker->sessions_done++;
		return;
	}
	blast_prep_timer(session, BLAST_BACKOFF, BLAST_BACKOFF_NS);
}

static void
blast_connect_done(struct bench_blast_session *session, int32_t res)
{
	struct bench_blast_worker *worker = session->worker;
	if (res == 0) {
		bench_counter_add(&worker->totals.connections, 1);
		session->state = BLAST_GREETING;
		session->replies_expected = 1;
		return blast_continue(session);
	}
	bench_counter_add(&worker->totals.connect_failures, 1);
	close(session->fd);
	session->fd = -1;
	blast_conn_failed(session, strerror(-res));
}

static void
blast_close_done(struct bench_blast_session *session)
{
	session->fd = -1;
	if (session->messages_on_conn > 0)
		session->connect_failures = 0;
	if (session->is_reconnect && blast_has_more(session)) {
		if (session->messages_on_conn == 0)
			return blast_conn_failed(session, "connections carry no message");
		return blast_connect(session);
	}
	session->state = BLAST_DONE;
	session->worker->sessions_done++;
}

static void
blast_timer_done(struct bench_blast_session *session)
{
	if (session->state == BLAST_BACKOFF) {
		if (!blast_has_more(session)) {
			session->state = BLAST_DONE;
			session->worker->sessions_done++;
			return;
		}
		return blast_connect(session);
	}
	ENG_ASSERT(session->state == BLAST_RATE);
	session->state = BLAST_TXN;
	if (atomic_load(&session->worker->shared->is_stopping))
		return blast_quit(session);
	blast_start_message(session, session->message_index);
}

static void
blast_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_blast_session *session = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(session != NULL && session->worker != NULL);
	session->deadline_ns = 0;
	switch (op->tag) {
	case RING_OP_CONNECT: return blast_connect_done(session, res);
	case RING_OP_CLOSE: return blast_close_done(session);
	case RING_OP_TIMEOUT: blast_timer_done(session); break;
	case RING_OP_SENDMSG:
		if (res == -EINTR || res == -EAGAIN)
			break;
		if (res < 0)
			return blast_conn_end(session);
		blast_send_advance(session, (uint64_t)res);
		break;
	case RING_OP_RECV:
		if (res == -EINTR || res == -EAGAIN)
			break;
		if (res <= 0)
			return blast_conn_end(session);
		session->recv_end += (uint32_t)res;
		ENG_ASSERT(session->recv_end <= BLAST_RECV_SIZE);
		break;
	default: ENG_PANIC("blast: unknown op");
	}
	blast_continue(session);
}

int
bench_blast_sessions_start(struct bench_blast_worker *worker, uint32_t count)
{
	ENG_ASSERT(worker != NULL);
	ENG_ASSERT(worker->sessions == NULL);
	worker->session_count = count;
	if (count == 0)
		return 0;
	worker->sessions = calloc(count, sizeof(*worker->sessions));
	if (worker->sessions == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++) {
		struct bench_blast_session *session = &worker->sessions[i];
		session->worker = worker;
		session->fd = -1;
		session->op.callback = blast_callback;
		session->op.ctx = session;
		blast_connect(session);
	}
	return 0;
}

void
bench_blast_sessions_tick(struct bench_blast_worker *worker, uint64_t now_ns)
{
	ENG_ASSERT(worker != NULL);
	bool is_stopping = atomic_load(&worker->shared->is_stopping);
	for (uint32_t i = 0; i < worker->session_count; i++) {
		struct bench_blast_session *session = &worker->sessions[i];
		if (session->fd < 0 || session->state == BLAST_CLOSE ||
		    session->state == BLAST_CONNECT)
			continue;
		bool is_late = session->deadline_ns != 0 && now_ns > session->deadline_ns;
		if (is_late)
			bench_counter_add(&worker->totals.timeouts, 1);
		if (is_late || is_stopping) {
			/* The pending recv or send completes; the callback ends
			 * the connection. */
			(void)shutdown(session->fd, SHUT_RDWR);
			session->deadline_ns = 0;
		}
	}
}

void
bench_blast_sessions_free(struct bench_blast_worker *worker)
{
	ENG_ASSERT(worker != NULL);
	for (uint32_t i = 0; i < worker->session_count; i++) {
		if (worker->sessions[i].fd >= 0)
			close(worker->sessions[i].fd);
	}
	free(worker->sessions);
	worker->sessions = NULL;
}
