/*
 * eng_conn.c - one outbound SMTP connection on a shard's ring (eng_conn.h,
 * docs/engine.md "Outbound connections").
 *
 * Shape: every entry point (a completion callback, or an API call) does its
 * one thing and then runs eng_conn_pump(), which owns all the follow-up:
 * deliver a pending READY, start the teardown, queue the send, re-arm the
 * recv, re-arm the deadline timer. The pump never nests (is_pumping): a
 * call made by the owner from inside a pumped callback just records its
 * effect, and the outer pump picks it up on its next pass. CLOSED is
 * delivered by the pump as its very last statement, so the owner may free
 * or reopen the struct from that callback.
 *
 * Invariants:
 * - ops_in_flight counts this conn's ops the ring owns; it is incremented
 *   when a prep succeeds and decremented first thing in each callback, and
 *   it is 0 whenever the conn is FREE (asserted on open).
 * - At most one send in flight; its bytes come from smtp_client_output()
 *   and stay put until the completion calls smtp_client_consume()
 *   (docs/smtp-client.md, engine contract).
 * - Consume before feed: a recv that completes while a send is in flight
 *   is held and fed only after that send's completion consumed its bytes,
 *   so a reply reaped together with the send of its command is never
 *   mistaken for a premature one. While a recv is held no recv is queued.
 * - One recv in flight (or held) during a session, into recv_buf.
 * - READY and PIPELINE_SLOT are delivered only with no send in flight:
 *   both come out of a feed, and feeds run with no send in flight, and
 *   the pump delivers them before it queues a send. That is what makes
 *   them release points for the bodies of ended messages (eng_conn.h).
 * - message / prev_message: the messages started and still owed a final
 *   event, newest and (behind a dot) oldest; smtp_client's final events
 *   name one of them.
 * - The fd is closed only once connect, recv and send have all completed
 *   (no op may name a reused descriptor number).
 *
 * TLS (after SMTP_EV_STARTTLS): struct eng_conn_tls is allocated, the recv
 * still lands in recv_buf and is copied into the eng_tls input (so no op
 * ever writes into a buffer wolfSSL may move), decrypted bytes are fed
 * from tls->plain; the session's output is encrypted into the eng_tls
 * output as soon as there is room (smtp_client_consume then, the bytes
 * are committed to the stream) and the one send carries ciphertext.
 * Handshake steps and decryption run only from a recv result or right
 * after STARTTLS, both with no send in flight, so "feeds run with no send
 * in flight" still holds. After a TLS failure the session is closed and
 * nothing is sent or fed again; the struct is freed only in finish, once
 * no send reads its buffer.
 *
 * cqe->res is mapped in one place per op (style.md section 4): -EINTR and
 * -EAGAIN retry, descriptor and address errnos that cannot happen abort,
 * everything else ends the connection with the errno in the event.
 */
#include "eng_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_common.h"
#include "eng_config.h"

#define ENG_CONN_NS_PER_MS 1000000ull
/* Pump passes per call: each pass that runs an owner callback may enable
 * one more (READY then a send); a handful is plenty. */
#define ENG_CONN_PUMP_PASSES_MAX 16u

enum eng_conn_cancel_slot {
	ENG_CONN_CANCEL_CONNECT = 0,
	ENG_CONN_CANCEL_RECV,
	ENG_CONN_CANCEL_SEND,
	ENG_CONN_CANCEL_TIMER,
};
_Static_assert(ENG_CONN_CANCEL_TIMER + 1 == ENG_CONN_CANCEL_COUNT, "one slot per target");

static const char *const eng_conn_reason_names[ENG_CONN_CLOSE_REASON_COUNT] = {
	[ENG_CONN_CLOSE_NONE] = "none",
	[ENG_CONN_CLOSE_QUIT] = "quit",
	[ENG_CONN_CLOSE_ABORT] = "abort",
	[ENG_CONN_CLOSE_CONNECT_REFUSED] = "connect_refused",
	[ENG_CONN_CLOSE_CONNECT_TIMEOUT] = "connect_timeout",
	[ENG_CONN_CLOSE_CONNECT_FAILED] = "connect_failed",
	[ENG_CONN_CLOSE_SERVER_CLOSING] = "server_closing",
	[ENG_CONN_CLOSE_PROTOCOL_ERROR] = "protocol_error",
	[ENG_CONN_CLOSE_TIMEOUT] = "timeout",
	[ENG_CONN_CLOSE_REMOTE_CLOSE] = "remote_close",
	[ENG_CONN_CLOSE_NETWORK_ERROR] = "network_error",
	[ENG_CONN_CLOSE_REJECTED] = "rejected",
	[ENG_CONN_CLOSE_LOCAL_ERROR] = "local_error",
	[ENG_CONN_CLOSE_TLS_REQUIRED] = "tls_required",
	[ENG_CONN_CLOSE_TLS_FAILED] = "tls_failed",
};

/* The TLS layer of a conn, allocated at STARTTLS (wolfSSL holds a
 * pointer to tls: it must not move). */
struct eng_conn_tls {
	struct eng_tls tls;
	uint8_t plain[ENG_CONN_RECV_SIZE]; /* decrypted bytes for smtp_client_feed */
};

static void eng_conn_pump(struct eng_conn *conn);

const char *
eng_conn_close_reason_name(enum eng_conn_close_reason reason)
{
	if ((unsigned)reason >= ENG_CONN_CLOSE_REASON_COUNT)
		return "unknown";
	return eng_conn_reason_names[reason];
}

const char *
eng_conn_event_type_name(enum eng_conn_event_type type)
{
	switch (type) {
	case ENG_CONN_EV_READY:
		return "ready";
	case ENG_CONN_EV_RCPT:
		return "rcpt";
	case ENG_CONN_EV_MESSAGE_DONE:
		return "message_done";
	case ENG_CONN_EV_MESSAGE_FAILED:
		return "message_failed";
	case ENG_CONN_EV_CLOSED:
		return "closed";
	case ENG_CONN_EV_PIPELINE_SLOT:
		return "pipeline_slot";
	}
	return "unknown";
}

static uint64_t
eng_conn_now_ms(void)
{
	return eng_now_monotonic_ns() / ENG_CONN_NS_PER_MS;
}

/* ---- configuration ---------------------------------------------------- */

/* A duration in ns as whole ms for smtp_client: rounded up, 1..UINT32_MAX. */
static uint32_t
eng_conn_ms_from_ns(uint64_t ns)
{
	uint64_t ms = (ns + ENG_CONN_NS_PER_MS - 1) / ENG_CONN_NS_PER_MS;
	if (ms == 0)
		return 1;
	return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

void
eng_conn_config_from_destination(struct eng_conn_config *config,
				 const struct eng_destination *destination,
				 const char *helo_name, size_t helo_name_len)
{
	ENG_ASSERT(config != NULL);
	ENG_ASSERT(destination != NULL);
	memset(config, 0, sizeof(*config));
	config->helo_name = helo_name;
	config->helo_name_len = helo_name_len;
	config->connect_timeout_ms = eng_conn_ms_from_ns(destination->connect_timeout_ns);
	smtp_client_timeouts_default(&config->timeouts);
	config->timeouts.greeting_ms = eng_conn_ms_from_ns(destination->greeting_timeout_ns);
	config->timeouts.mail_ms = eng_conn_ms_from_ns(destination->mail_timeout_ns);
	config->timeouts.rcpt_ms = eng_conn_ms_from_ns(destination->rcpt_timeout_ns);
	config->timeouts.data_ms = eng_conn_ms_from_ns(destination->data_timeout_ns);
	config->timeouts.data_block_ms = eng_conn_ms_from_ns(destination->data_block_timeout_ns);
	config->timeouts.dot_ms = eng_conn_ms_from_ns(destination->data_done_timeout_ns);
	ENG_ASSERT(config->connect_timeout_ms > 0);
}

/* ---- small state helpers ------------------------------------------------ */

void
eng_conn_init(struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	memset(conn, 0, sizeof(*conn));
	conn->fd = -1;
	ENG_ASSERT(conn->state == ENG_CONN_STATE_FREE);
}

enum eng_conn_state
eng_conn_state(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	return conn->state;
}

/* In session, not closing, and not inside one of its own SMTP callbacks:
 * the engine may hand it a message if the client agrees. */
static bool
eng_conn_takes_messages(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	return conn->state == ENG_CONN_STATE_SESSION && !conn->smtp_is_closed &&
	       !conn->abort_is_requested && !conn->is_in_smtp_callback;
}

bool
eng_conn_is_ready(const struct eng_conn *conn)
{
	return eng_conn_takes_messages(conn) && smtp_client_is_idle(&conn->client);
}

bool
eng_conn_may_pipeline(const struct eng_conn *conn)
{
	return eng_conn_takes_messages(conn) && smtp_client_may_pipeline(&conn->client);
}

const char *
eng_conn_peer(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	return conn->peer;
}

uint32_t
eng_conn_ops_in_flight(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	return conn->ops_in_flight;
}

const struct eng_conn_stats *
eng_conn_stats(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	return &conn->stats;
}

const struct smtp_ehlo_caps *
eng_conn_caps(const struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	return smtp_client_caps(&conn->client);
}

/* The common part of every event. */
static void
eng_conn_event_fill(const struct eng_conn *conn, struct eng_conn_event *event,
		    enum eng_conn_event_type type)
{
	memset(event, 0, sizeof(*event));
	event->type = type;
	event->peer = conn->peer;
	event->was_connected = conn->was_connected;
	event->connect_ms = conn->connect_ns / ENG_CONN_NS_PER_MS;
	event->messages_count = conn->messages_count;
	event->is_tls = conn->tls_is_up;
	event->tls_info = &conn->tls_info;
	event->tls_error = conn->tls_error;
}

bool
eng_conn_tls_info(const struct eng_conn *conn, struct eng_tls_info *info)
{
	ENG_ASSERT(conn != NULL && info != NULL);
	if (!conn->tls_is_up)
		return false;
	*info = conn->tls_info;
	return true;
}

/* Every op callback starts here: the ring gave the op back. */
static struct eng_conn *
eng_conn_op_done(struct ring_op *op)
{
	struct eng_conn *conn = op->ctx;
	ENG_ASSERT(conn != NULL);
	ENG_ASSERT(!op->in_flight);
	ENG_ASSERT(conn->ops_in_flight > 0);
	ENG_ASSERT(conn->state != ENG_CONN_STATE_FREE);
	conn->ops_in_flight--;
	return conn;
}

/* The first cause of an ending wins; ABORT always wins. */
static void
eng_conn_set_reason(struct eng_conn *conn, enum eng_conn_close_reason reason, int sys_error)
{
	ENG_ASSERT(reason != ENG_CONN_CLOSE_NONE);
	ENG_ASSERT(sys_error >= 0);
	if (conn->close_reason != ENG_CONN_CLOSE_NONE && reason != ENG_CONN_CLOSE_ABORT)
		return;
	conn->close_reason = reason;
	conn->sys_error = sys_error;
}

/* The socket or the ring failed us in a session: tell smtp_client, which
 * fails the pending message and closes; the pump does the rest. */
static void
eng_conn_lost(struct eng_conn *conn, enum eng_conn_close_reason reason, int sys_error)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	ENG_ASSERT(!conn->is_in_smtp_callback);
	eng_conn_set_reason(conn, reason, sys_error);
	smtp_client_connection_lost(&conn->client, eng_conn_now_ms());
	ENG_ASSERT(conn->smtp_is_closed);
}

/* ---- smtp_client events --------------------------------------------- */

static enum eng_conn_close_reason
eng_conn_reason_from_smtp(enum smtp_client_error error, enum eng_conn_close_reason local)
{
	switch (error) {
	case SMTP_CLIENT_ERROR_NONE:
		return ENG_CONN_CLOSE_QUIT;
	case SMTP_CLIENT_ERROR_SERVER_CLOSING:
		return ENG_CONN_CLOSE_SERVER_CLOSING;
	case SMTP_CLIENT_ERROR_MALFORMED_REPLY:
	case SMTP_CLIENT_ERROR_UNEXPECTED_REPLY:
	case SMTP_CLIENT_ERROR_BAD_REPLY_CODE:
	case SMTP_CLIENT_ERROR_TLS_INJECTION: /* OUT-03: a protocol error */
		return ENG_CONN_CLOSE_PROTOCOL_ERROR;
	case SMTP_CLIENT_ERROR_TLS_REQUIRED:
		return ENG_CONN_CLOSE_TLS_REQUIRED;
	case SMTP_CLIENT_ERROR_TLS_FAILED:
		return ENG_CONN_CLOSE_TLS_FAILED;
	case SMTP_CLIENT_ERROR_TIMEOUT:
		return ENG_CONN_CLOSE_TIMEOUT;
	case SMTP_CLIENT_ERROR_CONNECTION_LOST:
		/* Only the conn reports a lost connection, after noting why. */
		ENG_ASSERT(local != ENG_CONN_CLOSE_NONE);
		return local;
	case SMTP_CLIENT_ERROR_GREETING_REJECTED:
	case SMTP_CLIENT_ERROR_HELO_REJECTED:
	case SMTP_CLIENT_ERROR_RSET_REJECTED:
		return ENG_CONN_CLOSE_REJECTED;
	case SMTP_CLIENT_ERROR_COUNT:
		break;
	}
	ENG_PANIC("smtp_client error out of range");
}

/* SMTP_EV_ERROR: keep the reply (or local status) for the CLOSED event. */
static void
eng_conn_on_smtp_error(struct eng_conn *conn, const struct smtp_event *smtp_event)
{
	const struct smtp_status *status = &smtp_event->status;
	size_t text_size = ENG_MIN(status->text_size, (size_t)ENG_CONN_STATUS_TEXT_SIZE);
	ENG_ASSERT(smtp_event->error != SMTP_CLIENT_ERROR_NONE);
	ENG_ASSERT(status->text != NULL || status->text_size == 0);
	conn->smtp_error = smtp_event->error;
	conn->close_status = *status;
	if (text_size > 0)
		memcpy(conn->close_text, status->text, text_size);
	if (smtp_event->error == SMTP_CLIENT_ERROR_TLS_FAILED && conn->tls_error[0] != '\0') {
		/* The local 4.7.0 text, then eng_tls's reason. */
		int n = snprintf(conn->close_text, sizeof(conn->close_text), "%.*s: %s",
				 (int)text_size, status->text, conn->tls_error);
		text_size = n < 0 ? 0 : ENG_MIN((size_t)n, sizeof(conn->close_text) - 1u);
	}
	conn->close_status.text = conn->close_text;
	conn->close_status.text_size = text_size;
}

/* SMTP_EV_CLOSED: the session is over; the pump starts the teardown. */
static void
eng_conn_on_smtp_closed(struct eng_conn *conn, enum smtp_client_error error)
{
	ENG_ASSERT(!conn->smtp_is_closed);
	conn->smtp_is_closed = true;
	conn->ready_is_pending = false;
	if (conn->close_reason == ENG_CONN_CLOSE_ABORT)
		return;
	/* The session's word is final (QUIT, 421, timeout...), except for a
	 * lost connection, whose cause the conn noted before reporting it. */
	conn->close_reason = eng_conn_reason_from_smtp(error, conn->close_reason);
}

/* RCPT, MESSAGE_DONE, MESSAGE_FAILED: straight to the owner, while the
 * status text is valid. */
static void
eng_conn_forward(struct eng_conn *conn, const struct smtp_event *smtp_event,
		 enum eng_conn_event_type type)
{
	struct eng_conn_event event;
	bool is_final = type != ENG_CONN_EV_RCPT;
	bool is_prev = smtp_event->message == conn->prev_message;
	ENG_ASSERT(smtp_event->message != NULL);
	ENG_ASSERT(is_prev || smtp_event->message == conn->message);
	eng_conn_event_fill(conn, &event, type);
	event.message = smtp_event->message;
	event.rcpt_index = smtp_event->rcpt_index;
	event.status = smtp_event->status;
	event.error = smtp_event->error;
	event.outcome_is_unknown = smtp_event->outcome_is_unknown;
	if (is_final) {
		uint64_t start_ns = is_prev ? conn->prev_message_start_ns : conn->message_start_ns;
		event.transaction_ms = (eng_now_monotonic_ns() - start_ns) / ENG_CONN_NS_PER_MS;
		if (is_prev)
			conn->prev_message = NULL;
		else
			conn->message = NULL;
	}
	conn->is_in_smtp_callback = true;
	conn->event_callback(conn->event_ctx, conn, &event);
	conn->is_in_smtp_callback = false;
}

static void
eng_conn_on_smtp_event(void *ctx, const struct smtp_event *smtp_event)
{
	struct eng_conn *conn = ctx;
	ENG_ASSERT(conn != NULL && smtp_event != NULL);
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	switch (smtp_event->type) {
	case SMTP_EV_READY:
		/* Delivered by the pump once smtp_client has returned. */
		conn->ready_is_pending = true;
		break;
	case SMTP_EV_RCPT:
		eng_conn_forward(conn, smtp_event, ENG_CONN_EV_RCPT);
		break;
	case SMTP_EV_MESSAGE_DONE:
		eng_conn_forward(conn, smtp_event, ENG_CONN_EV_MESSAGE_DONE);
		break;
	case SMTP_EV_MESSAGE_FAILED:
		eng_conn_forward(conn, smtp_event, ENG_CONN_EV_MESSAGE_FAILED);
		break;
	case SMTP_EV_ERROR:
		eng_conn_on_smtp_error(conn, smtp_event);
		break;
	case SMTP_EV_CLOSED:
		eng_conn_on_smtp_closed(conn, smtp_event->error);
		break;
	case SMTP_EV_PIPELINE_SLOT:
		/* Delivered by the pump once smtp_client has returned. */
		conn->pipeline_slot_is_pending = true;
		break;
	case SMTP_EV_STARTTLS:
		/* Started by the pump, once smtp_client has returned. */
		ENG_ASSERT(conn->config.tls_policy != SMTP_CLIENT_TLS_NONE);
		conn->tls_start_is_pending = true;
		break;
	}
}

/* ---- TLS ------------------------------------------------------------------ */

/* The TLS layer failed (or the peer ended it): no byte is sent or fed on
 * this connection again. A close_notify while idle is a plain remote
 * close; anywhere else (mid-transaction, handshake) a TLS failure. */
static void
eng_conn_tls_fail(struct eng_conn *conn, enum eng_tls_result result)
{
	ENG_ASSERT(conn->tls != NULL && !conn->smtp_is_closed);
	ENG_ASSERT(result == ENG_TLS_ERROR || result == ENG_TLS_CLOSED);
	if (result == ENG_TLS_CLOSED && smtp_client_is_idle(&conn->client)) {
		eng_conn_lost(conn, ENG_CONN_CLOSE_REMOTE_CLOSE, 0);
		return;
	}
	if (conn->tls_error[0] == '\0') {
		const char *text = eng_tls_error_text(&conn->tls->tls);
		if (result == ENG_TLS_CLOSED || text[0] == '\0')
			text = "TLS: the server sent close_notify";
		snprintf(conn->tls_error, sizeof(conn->tls_error), "%s", text);
	}
	smtp_client_tls_failed(&conn->client, eng_conn_now_ms());
	ENG_ASSERT(conn->smtp_is_closed);
}

/* Decrypt what the input holds and feed it. Stops when wolfSSL needs
 * more ciphertext; bounded: every pass takes at least one byte. */
static void
eng_conn_tls_read(struct eng_conn *conn)
{
	ENG_ASSERT(conn->tls_is_up && !conn->send_op.in_flight);
	for (uint32_t pass = 0; pass <= ENG_TLS_CIPHER_IN_SIZE; pass++) {
		size_t got = 0;
		if (conn->smtp_is_closed)
			return;
		struct eng_conn_tls *tls = conn->tls;
		enum eng_tls_result result =
			eng_tls_read(&tls->tls, tls->plain, sizeof(tls->plain), &got);
		if (result == ENG_TLS_WANT_IO)
			return;
		if (result != ENG_TLS_OK) {
			eng_conn_tls_fail(conn, result);
			return;
		}
		ENG_ASSERT(got > 0 && got <= sizeof(conn->tls->plain));
		smtp_client_feed(&conn->client, tls->plain, got, eng_conn_now_ms());
	}
}

/* One handshake step; when it completes, the session says EHLO again. */
static void
eng_conn_tls_handshake(struct eng_conn *conn)
{
	ENG_ASSERT(conn->tls != NULL && !conn->tls_is_up);
	ENG_ASSERT(!conn->smtp_is_closed && !conn->send_op.in_flight);
	enum eng_tls_result result = eng_tls_handshake(&conn->tls->tls);
	if (result == ENG_TLS_WANT_IO)
		return;
	if (result != ENG_TLS_OK) {
		eng_conn_tls_fail(conn, result == ENG_TLS_CLOSED ? ENG_TLS_ERROR : result);
		return;
	}
	conn->tls_is_up = true;
	eng_tls_get_info(&conn->tls->tls, &conn->tls_info);
	smtp_client_tls_started(&conn->client, eng_conn_now_ms());
	eng_conn_tls_read(conn); /* records that came with the last flight */
}

static uint16_t
eng_conn_peer_port(const struct eng_conn *conn)
{
	if (conn->peer_addr.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&conn->peer_addr)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&conn->peer_addr)->sin6_port);
}

/* SMTP_EV_STARTTLS came: set up the client side and send ClientHello. */
static void
eng_conn_tls_start(struct eng_conn *conn)
{
	char key[ENG_TLS_SESSION_KEY_SIZE];
	ENG_ASSERT(conn->tls == NULL && conn->config.tls_ctx != NULL);
	ENG_ASSERT(smtp_client_state(&conn->client) == SMTP_CLIENT_STATE_TLS);
	conn->tls_start_is_pending = false;
	conn->tls = calloc(1, sizeof(*conn->tls));
	if (conn->tls == NULL) {
		snprintf(conn->tls_error, sizeof(conn->tls_error), "TLS: out of memory");
		smtp_client_tls_failed(&conn->client, eng_conn_now_ms());
		return;
	}
	int n = snprintf(key, sizeof(key), "%s:%u", conn->tls_name,
			 (unsigned)eng_conn_peer_port(conn));
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(key));
	int ret = eng_tls_client_start(&conn->tls->tls, conn->config.tls_ctx, conn->tls_name,
				       conn->config.tls_name_len,
				       conn->config.tls_verify ? ENG_TLS_VERIFY_PEER
							       : ENG_TLS_VERIFY_NONE,
				       conn->config.tls_cache, key, (size_t)n);
	if (ret < 0) {
		eng_conn_tls_fail(conn, ENG_TLS_ERROR);
		return;
	}
	eng_conn_tls_handshake(conn);
}

/* n bytes of ciphertext arrived in recv_buf. */
static void
eng_conn_tls_input(struct eng_conn *conn, size_t n)
{
	uint8_t *space = NULL;
	size_t space_size = 0;
	ENG_ASSERT(conn->tls != NULL && n > 0 && n <= ENG_CONN_RECV_SIZE);
	eng_tls_input_space(&conn->tls->tls, &space, &space_size);
	if (space_size < n) {
		/* Cannot happen: every input is drained to WANT_IO first. */
		snprintf(conn->tls_error, sizeof(conn->tls_error), "TLS: input buffer full");
		eng_conn_tls_fail(conn, ENG_TLS_ERROR);
		return;
	}
	memcpy(space, conn->recv_buf, n);
	eng_tls_input_commit(&conn->tls->tls, n);
	if (conn->tls_is_up)
		eng_conn_tls_read(conn);
	else
		eng_conn_tls_handshake(conn);
}

/* Move the session's output into TLS records while there is room; the
 * plaintext is then part of the stream: consume it. Behind a dot the
 * output is two iovecs (body, next commands): one pass each, so both go
 * into the same flight of records and out in one send. */
static void
eng_conn_tls_encrypt(struct eng_conn *conn)
{
	struct iovec iov[1];
	for (uint32_t pass = 0; pass < ENG_TLS_CIPHER_OUT_SIZE; pass++) {
		size_t taken = 0;
		if (conn->smtp_is_closed || smtp_client_output(&conn->client, iov, 1) == 0)
			return;
		enum eng_tls_result result =
			eng_tls_write(&conn->tls->tls, iov[0].iov_base, iov[0].iov_len, &taken);
		if (result == ENG_TLS_WANT_IO)
			return; /* the output drains first */
		if (result != ENG_TLS_OK) {
			eng_conn_tls_fail(conn, result);
			return;
		}
		ENG_ASSERT(taken > 0 && taken <= iov[0].iov_len);
		smtp_client_consume(&conn->client, taken, eng_conn_now_ms());
	}
}

/* Send send_iov[0, count) (plaintext or ciphertext): the conn's one send.
 * MSG_WAITALL: the kernel retries a short send itself; a short count can
 * still come back (an error after progress) and is handled. */
static void
eng_conn_send_submit(struct eng_conn *conn, uint32_t count)
{
	ENG_ASSERT(count > 0 && count <= ENG_CONN_IOV_MAX && !conn->send_op.in_flight);
	memset(&conn->send_msg, 0, sizeof(conn->send_msg));
	conn->send_msg.msg_iov = conn->send_iov;
	conn->send_msg.msg_iovlen = count;
	int ret = ring_prep_sendmsg(conn->ring, &conn->send_op, conn->fd, &conn->send_msg,
				    MSG_NOSIGNAL | MSG_WAITALL);
	if (ret < 0) {
		eng_conn_lost(conn, ENG_CONN_CLOSE_LOCAL_ERROR, -ret);
		return;
	}
	conn->ops_in_flight++;
}

/* Queue the ciphertext when no send is in flight. */
static void
eng_conn_tls_send_arm(struct eng_conn *conn)
{
	const uint8_t *ptr = NULL;
	size_t size = 0;
	ENG_ASSERT(conn->tls != NULL);
	if (conn->tls_is_up)
		eng_conn_tls_encrypt(conn);
	if (conn->smtp_is_closed || conn->send_op.in_flight || conn->send_error != 0)
		return;
	eng_tls_output(&conn->tls->tls, &ptr, &size);
	if (size == 0)
		return;
	conn->send_iov[0].iov_base = (void *)(uintptr_t)ptr;
	conn->send_iov[0].iov_len = ENG_MIN(size, (size_t)ENG_CONN_SEND_SIZE_MAX);
	eng_conn_send_submit(conn, 1);
}

/* ---- receive ---------------------------------------------------------- */

/* One recv result, in a session, with no send in flight. */
static void
eng_conn_recv_result(struct eng_conn *conn, int32_t res)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	ENG_ASSERT(!conn->send_op.in_flight);
	if (conn->smtp_is_closed)
		return;
	if (res > 0) {
		ENG_ASSERT((uint32_t)res <= ENG_CONN_RECV_SIZE);
		conn->stats.received_size += (uint64_t)res;
		if (conn->tls != NULL)
			eng_conn_tls_input(conn, (size_t)res);
		else
			smtp_client_feed(&conn->client, conn->recv_buf, (size_t)res,
					 eng_conn_now_ms());
		return;
	}
	if (res <= 0 && res != -EINTR && res != -EAGAIN && conn->tls != NULL && !conn->tls_is_up) {
		/* The server ended the connection during the handshake: a TLS
		 * failure (opportunistic falls back to plaintext next time). */
		snprintf(conn->tls_error, sizeof(conn->tls_error),
			 "TLS handshake failed: connection closed by the server");
		eng_conn_tls_fail(conn, ENG_TLS_ERROR);
		return;
	}
	switch (res) {
	case 0:
		/* After a failed send the reset is the cause (the send took
		 * the socket's error, so the recv sees a plain end). */
		if (conn->send_error != 0)
			eng_conn_lost(conn, ENG_CONN_CLOSE_NETWORK_ERROR, conn->send_error);
		else
			eng_conn_lost(conn, ENG_CONN_CLOSE_REMOTE_CLOSE, 0);
		return;
	case -EINTR:
	case -EAGAIN:
		return; /* the pump queues the next recv */
	case -EBADF:
	case -EFAULT:
	case -ENOTSOCK:
	case -EINVAL:
		ENG_PANIC("recv on a bad descriptor or buffer");
	default:
		eng_conn_lost(conn, ENG_CONN_CLOSE_NETWORK_ERROR, -res);
		return;
	}
}

static void
eng_conn_on_recv(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	ENG_ASSERT(!conn->recv_is_held);
	conn->stats.recvs_count++;
	if (conn->state != ENG_CONN_STATE_SESSION) {
		eng_conn_pump(conn); /* closing: the result no longer matters */
		return;
	}
	if (conn->send_op.in_flight) {
		/* Consume before feed: wait for the send's completion. */
		conn->recv_is_held = true;
		conn->recv_held_res = res;
		conn->stats.recvs_held_count++;
	} else {
		eng_conn_recv_result(conn, res);
	}
	eng_conn_pump(conn);
}

/* Queue the recv when a session has none (in flight or held). */
static void
eng_conn_recv_arm(struct eng_conn *conn)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	if (conn->smtp_is_closed || conn->recv_op.in_flight || conn->recv_is_held)
		return;
	int ret = ring_prep_recv(conn->ring, &conn->recv_op, conn->fd, conn->recv_buf,
				 ENG_CONN_RECV_SIZE, 0);
	if (ret < 0) {
		eng_conn_lost(conn, ENG_CONN_CLOSE_LOCAL_ERROR, -ret);
		return;
	}
	conn->ops_in_flight++;
}

/* ---- send ------------------------------------------------------------- */

/* Cut iov[0, *count) down to at most size_max bytes; returns the total. */
static size_t
eng_conn_iov_clamp(struct iovec *iov, uint32_t *count, size_t size_max)
{
	size_t total = 0;
	ENG_ASSERT(*count >= 1 && *count <= ENG_CONN_IOV_MAX);
	for (uint32_t i = 0; i < *count; i++) {
		if (total + iov[i].iov_len >= size_max) {
			iov[i].iov_len = size_max - total;
			*count = i + 1;
			return size_max;
		}
		total += iov[i].iov_len;
	}
	ENG_ASSERT(total > 0);
	return total;
}

/* Queue the session's output when no send is in flight. */
static void
eng_conn_send_arm(struct eng_conn *conn)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	if (conn->tls != NULL) {
		eng_conn_tls_send_arm(conn);
		return;
	}
	if (conn->smtp_is_closed || conn->send_op.in_flight || conn->send_error != 0)
		return;
	uint32_t count = smtp_client_output(&conn->client, conn->send_iov, ENG_CONN_IOV_MAX);
	if (count == 0)
		return;
	size_t total = eng_conn_iov_clamp(conn->send_iov, &count, ENG_CONN_SEND_SIZE_MAX);
	ENG_ASSERT(total > 0 && total <= ENG_CONN_SEND_SIZE_MAX);
	/* Two iovecs only behind a dot: the body's rest, then commands. */
	conn->stats.sends_behind_dot_count += count == 2u;
	eng_conn_send_submit(conn, count);
}

/* A send's result: consume what went out, feed a held recv, then judge an
 * error (a 421 that came before the reset is still read). */
static void
eng_conn_send_result(struct eng_conn *conn, int32_t res, uint32_t len)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	ENG_ASSERT(!conn->send_op.in_flight);
	conn->stats.sends_count++;
	if (res > 0) {
		ENG_ASSERT((uint32_t)res <= len);
		conn->stats.sent_size += (uint64_t)res;
		conn->stats.short_sends_count += (uint32_t)res < len;
		if (conn->tls != NULL) /* the session's bytes were consumed at encryption */
			eng_tls_output_consume(&conn->tls->tls, (size_t)res);
		else
			smtp_client_consume(&conn->client, (size_t)res, eng_conn_now_ms());
	}
	if (conn->recv_is_held) {
		conn->recv_is_held = false;
		eng_conn_recv_result(conn, conn->recv_held_res);
	}
	if (res > 0 || conn->smtp_is_closed)
		return;
	switch (res) {
	case -EINTR:
	case -EAGAIN:
		return; /* nothing went out: the pump sends again */
	case -EBADF:
	case -EFAULT:
	case -ENOTSOCK:
	case -EINVAL:
	case -EMSGSIZE:
		ENG_PANIC("sendmsg on a bad descriptor or buffer");
	case -ECONNRESET:
	case -EPIPE:
	case -ECONNABORTED:
	case -ETIMEDOUT:
	case -ENOTCONN:
		/* The connection is gone, but a reply sent before the reset
		 * (a 421) may still wait in the receive queue: the kernel can
		 * complete this send before the recv that holds it. Send no
		 * more and let the recv drain to its end, which then closes. */
		conn->send_error = -res;
		return;
	case 0:
		/* Nothing sent for a non-empty request: never retry blindly. */
		eng_conn_lost(conn, ENG_CONN_CLOSE_NETWORK_ERROR, EIO);
		return;
	default:
		eng_conn_lost(conn, ENG_CONN_CLOSE_NETWORK_ERROR, -res);
		return;
	}
}

static void
eng_conn_on_send(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	if (conn->state == ENG_CONN_STATE_SESSION)
		eng_conn_send_result(conn, res, op->len);
	eng_conn_pump(conn);
}

/* ---- deadline timer ----------------------------------------------------- */

/* The shortest reply timeout of the session (Postfix's RSET 20 s with
 * the defaults); at least 1 ms. */
static uint64_t
eng_conn_timer_tick_ms(const struct eng_conn *conn)
{
	const struct smtp_client_timeouts *t = &conn->config.timeouts;
	uint32_t all[] = { t->greeting_ms, t->helo_ms, t->rset_ms,	 t->mail_ms, t->rcpt_ms,
			   t->data_ms,	   t->data_block_ms, t->dot_ms, t->quit_ms };
	uint32_t tick = UINT32_MAX;
	for (uint32_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		tick = ENG_MIN(tick, all[i]);
	return ENG_MAX(tick, 1u);
}

/*
 * Keep one timer in flight for smtp_client_deadline_ms(), armed for the
 * deadline or one tick (the shortest reply timeout) from now, whichever
 * comes first. A deadline is always set at least one tick after the
 * moment it is set, so one set later never falls before the timer:
 * moving from the dot's 10 minutes to MAIL's 5 and DATA's 2 needs no
 * cancellation. (A cancellation costs the kernel a walk of the ring's
 * timeout list with interrupts off: 8.6% of the daemon's samples in the
 * 1000-domain end-to-end benchmark, one or two per message.) A timer that
 * fires before the deadline is stale (smtp_client_timeout() says so) and
 * is re-armed: at most one wake-up per tick per connection. A deadline
 * earlier than the timer in flight (which the tick rules out) would
 * cancel it, and the cancellation's completion would re-arm.
 */
static void
eng_conn_timer_arm(struct eng_conn *conn)
{
	ENG_ASSERT(conn->state == ENG_CONN_STATE_SESSION);
	if (conn->smtp_is_closed)
		return;
	uint64_t deadline_ms = smtp_client_deadline_ms(&conn->client);
	if (deadline_ms == SMTP_CLIENT_DEADLINE_NONE)
		return;
	if (conn->timer_op.in_flight) {
		struct ring_op *cancel = &conn->cancel_ops[ENG_CONN_CANCEL_TIMER];
		if (deadline_ms >= conn->timer_deadline_ms || cancel->in_flight)
			return;
		if (ring_prep_cancel(conn->ring, cancel, &conn->timer_op) == 0) {
			conn->ops_in_flight++;
			conn->stats.timer_cancels_count++;
		}
		return; /* if the cancel could not be queued, the next pump retries */
	}
	uint64_t now_ms = eng_conn_now_ms();
	uint64_t delay_ms = deadline_ms > now_ms ? deadline_ms - now_ms : 0;
	delay_ms = ENG_MIN(delay_ms, eng_conn_timer_tick_ms(conn));
	int ret = ring_prep_timeout(conn->ring, &conn->timer_op, delay_ms * ENG_CONN_NS_PER_MS);
	if (ret < 0) {
		eng_conn_lost(conn, ENG_CONN_CLOSE_LOCAL_ERROR, -ret);
		return;
	}
	conn->ops_in_flight++;
	conn->stats.timers_armed_count++;
	conn->timer_deadline_ms = now_ms + delay_ms;
}

static void
eng_conn_on_timer(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	ENG_ASSERT(res == -ETIME || res == -ECANCELED || res == 0);
	if (res == -ETIME && conn->state == ENG_CONN_STATE_SESSION && !conn->smtp_is_closed) {
		if (!smtp_client_timeout(&conn->client, eng_conn_now_ms()))
			conn->stats.timers_stale_count++;
	}
	eng_conn_pump(conn);
}

/* A cancellation completed (0, -ENOENT or -EALREADY: all fine, the target
 * completes on its own). */
static void
eng_conn_on_cancel(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	ENG_ASSERT(res == 0 || res == -ENOENT || res == -EALREADY);
	eng_conn_pump(conn);
}

/* ---- connect ------------------------------------------------------------ */

/* Connected: the session starts, awaiting the greeting. */
static void
eng_conn_session_start(struct eng_conn *conn)
{
	struct smtp_client_config client_config;
	ENG_ASSERT(conn->state == ENG_CONN_STATE_CONNECTING);
	ENG_ASSERT(conn->fd >= 0);
	memset(&client_config, 0, sizeof(client_config));
	client_config.helo_name = conn->helo_name;
	client_config.helo_name_len = conn->config.helo_name_len;
	client_config.timeouts = conn->config.timeouts;
	client_config.pipelining_is_disabled = conn->config.pipelining_is_disabled;
	client_config.tls_policy = conn->config.tls_policy;
	conn->state = ENG_CONN_STATE_SESSION;
	conn->was_connected = true;
	conn->connect_ns = eng_now_monotonic_ns() - conn->open_ns;
	smtp_client_init(&conn->client, &client_config, eng_conn_now_ms(), conn,
			 eng_conn_on_smtp_event);
}

static enum eng_conn_close_reason
eng_conn_connect_reason(int32_t res)
{
	ENG_ASSERT(res < 0);
	switch (res) {
	case -ECONNREFUSED:
		return ENG_CONN_CLOSE_CONNECT_REFUSED;
	case -ECANCELED: /* the link timeout fired first */
	case -ETIMEDOUT: /* the kernel gave up on SYN retransmissions */
		return ENG_CONN_CLOSE_CONNECT_TIMEOUT;
	case -EBADF:
	case -EFAULT:
	case -ENOTSOCK:
	case -EISCONN:
	case -EALREADY:
		ENG_PANIC("connect on a bad or busy descriptor");
	default:
		return ENG_CONN_CLOSE_CONNECT_FAILED;
	}
}

static void
eng_conn_on_connect(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	if (conn->state == ENG_CONN_STATE_CONNECTING) {
		if (res == 0) {
			eng_conn_session_start(conn);
		} else {
			enum eng_conn_close_reason reason = eng_conn_connect_reason(res);
			eng_conn_set_reason(conn, reason,
					    reason == ENG_CONN_CLOSE_CONNECT_FAILED ? -res : 0);
			conn->state = ENG_CONN_STATE_CLOSING;
		}
	} else {
		ENG_ASSERT(conn->state == ENG_CONN_STATE_CLOSING); /* aborted */
	}
	eng_conn_pump(conn);
}

/* The link timeout: its result is read from the connect's. */
static void
eng_conn_on_connect_timeout(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	ENG_ASSERT(res == -ETIME || res == -ECANCELED || res == -ENOENT || res == -EALREADY ||
		   res == 0);
	eng_conn_pump(conn);
}

/* ---- teardown ----------------------------------------------------------- */

/* Cancel each op still in flight, once per teardown. If the cancel cannot
 * be queued (SQ full), shut the socket down: that ends recv and send too. */
static void
eng_conn_teardown_cancel(struct eng_conn *conn)
{
	struct ring_op *targets[ENG_CONN_CANCEL_COUNT] = {
		[ENG_CONN_CANCEL_CONNECT] = &conn->connect_op,
		[ENG_CONN_CANCEL_RECV] = &conn->recv_op,
		[ENG_CONN_CANCEL_SEND] = &conn->send_op,
		[ENG_CONN_CANCEL_TIMER] = &conn->timer_op,
	};
	for (uint32_t i = 0; i < ENG_CONN_CANCEL_COUNT; i++) {
		uint32_t bit = 1u << i;
		if (!targets[i]->in_flight || conn->cancel_ops[i].in_flight ||
		    (conn->cancels_sent_mask & bit) != 0)
			continue;
		if (ring_prep_cancel(conn->ring, &conn->cancel_ops[i], targets[i]) == 0) {
			conn->ops_in_flight++;
			conn->cancels_sent_mask = (uint8_t)(conn->cancels_sent_mask | bit);
		} else if (conn->fd >= 0) {
			/* XXX: a cancelled timer or connect still needs its own
			 * deadline to pass in this case; recv and send end now. */
			(void)shutdown(conn->fd, SHUT_RDWR);
		}
	}
}

/* Close the socket once no op names it any more. */
static void
eng_conn_teardown_close(struct eng_conn *conn)
{
	if (conn->fd < 0 || conn->close_is_queued)
		return;
	if (conn->connect_op.in_flight || conn->recv_op.in_flight || conn->send_op.in_flight)
		return;
	if (ring_prep_close(conn->ring, &conn->close_op, conn->fd) == 0) {
		conn->ops_in_flight++;
		conn->close_is_queued = true;
		return;
	}
	/* The ring is full: closing a socket does not block, do it here. */
	(void)close(conn->fd);
	conn->fd = -1;
}

static void
eng_conn_on_close(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_conn *conn = eng_conn_op_done(op);
	ENG_ASSERT(conn->state == ENG_CONN_STATE_CLOSING);
	ENG_ASSERT(conn->close_is_queued);
	/* A socket's close does not fail in a way that leaves it open. */
	ENG_ASSERT(res == 0 || res == -EINTR || res == -EIO);
	conn->fd = -1;
	conn->close_is_queued = false;
	eng_conn_pump(conn);
}

/* Every op done and the socket closed: report CLOSED. The owner may free
 * or reopen conn from the callback, so nothing touches conn after it. */
static void
eng_conn_finish(struct eng_conn *conn)
{
	struct eng_conn_event event;
	char text[ENG_CONN_STATUS_TEXT_SIZE];
	char peer[ENG_CONN_PEER_SIZE];
	ENG_ASSERT(conn->state == ENG_CONN_STATE_CLOSING);
	ENG_ASSERT(conn->ops_in_flight == 0 && conn->fd < 0);
	ENG_ASSERT(conn->close_reason != ENG_CONN_CLOSE_NONE);
	ENG_ASSERT(!conn->recv_is_held);
	if (conn->tls != NULL) {
		/* No op reads the TLS buffers any more; a clean session is
		 * kept for resumption. */
		eng_tls_end(&conn->tls->tls);
		free(conn->tls);
		conn->tls = NULL;
	}
	eng_conn_event_fill(conn, &event, ENG_CONN_EV_CLOSED);
	/* Copies, so a reopen inside the callback cannot change them. */
	struct eng_tls_info tls_info = conn->tls_info;
	char tls_error[ENG_TLS_ERROR_SIZE];
	memcpy(tls_error, conn->tls_error, sizeof(tls_error));
	event.tls_info = &tls_info;
	event.tls_error = tls_error;
	memcpy(peer, conn->peer, sizeof(peer));
	memcpy(text, conn->close_text, sizeof(text));
	event.peer = peer;
	event.reason = conn->close_reason;
	event.sys_error = conn->sys_error;
	event.error = conn->smtp_error;
	event.status = conn->close_status;
	event.status.text = text;
	eng_conn_event_fn *callback = conn->event_callback;
	void *ctx = conn->event_ctx;
	conn->state = ENG_CONN_STATE_FREE;
	conn->message = NULL;
	conn->prev_message = NULL;
	conn->pipeline_slot_is_pending = false;
	callback(ctx, conn, &event);
}

/* ---- the pump ------------------------------------------------------------ */

/* Abort now (never from inside smtp_client): fail what is pending, close. */
static void
eng_conn_abort_now(struct eng_conn *conn)
{
	ENG_ASSERT(!conn->is_in_smtp_callback);
	ENG_ASSERT(conn->state != ENG_CONN_STATE_FREE);
	conn->abort_is_requested = false;
	eng_conn_set_reason(conn, ENG_CONN_CLOSE_ABORT, 0);
	if (conn->state == ENG_CONN_STATE_SESSION && !conn->smtp_is_closed) {
		smtp_client_connection_lost(&conn->client, eng_conn_now_ms());
		ENG_ASSERT(conn->smtp_is_closed);
	}
	conn->state = ENG_CONN_STATE_CLOSING;
}

static void
eng_conn_deliver_ready(struct eng_conn *conn)
{
	struct eng_conn_event event;
	ENG_ASSERT(eng_conn_is_ready(conn));
	/* READY only comes out of a feed, and feeds run with no send in
	 * flight: the previous message's body is no longer read. */
	ENG_ASSERT(!conn->send_op.in_flight);
	ENG_ASSERT(conn->message == NULL && conn->prev_message == NULL);
	eng_conn_event_fill(conn, &event, ENG_CONN_EV_READY);
	conn->event_callback(conn->event_ctx, conn, &event);
}

/* The body goes out: the owner may pipeline the next message behind the
 * dot. Like READY, never with a send in flight (the body is not sent yet). */
static void
eng_conn_deliver_pipeline_slot(struct eng_conn *conn)
{
	struct eng_conn_event event;
	ENG_ASSERT(eng_conn_may_pipeline(conn));
	ENG_ASSERT(!conn->send_op.in_flight);
	ENG_ASSERT(conn->message != NULL && conn->prev_message == NULL);
	eng_conn_event_fill(conn, &event, ENG_CONN_EV_PIPELINE_SLOT);
	conn->event_callback(conn->event_ctx, conn, &event);
}

/*
 * One pass. Returns true when another pass is needed: an owner callback
 * ran (it may have started a message, quit or aborted), or the session
 * closed during this pass.
 */
static bool
eng_conn_pump_once(struct eng_conn *conn)
{
	if (conn->abort_is_requested)
		eng_conn_abort_now(conn);
	if (conn->state == ENG_CONN_STATE_SESSION && conn->smtp_is_closed)
		conn->state = ENG_CONN_STATE_CLOSING;
	if (conn->state == ENG_CONN_STATE_CLOSING) {
		conn->recv_is_held = false; /* a held reply no longer matters */
		eng_conn_teardown_cancel(conn);
		eng_conn_teardown_close(conn);
		return false;
	}
	if (conn->state != ENG_CONN_STATE_SESSION)
		return false; /* connecting: the connect's completion comes next */
	if (conn->ready_is_pending) {
		conn->ready_is_pending = false;
		if (eng_conn_is_ready(conn)) {
			eng_conn_deliver_ready(conn);
			return true;
		}
	}
	if (conn->pipeline_slot_is_pending) {
		conn->pipeline_slot_is_pending = false;
		if (eng_conn_may_pipeline(conn) && !conn->send_op.in_flight) {
			eng_conn_deliver_pipeline_slot(conn);
			return true;
		}
	}
	if (conn->tls_start_is_pending && !conn->smtp_is_closed)
		eng_conn_tls_start(conn);
	eng_conn_send_arm(conn);
	eng_conn_recv_arm(conn);
	eng_conn_timer_arm(conn);
	return conn->smtp_is_closed;
}

static void
eng_conn_pump(struct eng_conn *conn)
{
	ENG_ASSERT(conn->state != ENG_CONN_STATE_FREE);
	if (conn->is_pumping || conn->is_in_smtp_callback)
		return; /* the running pump (or the one after smtp_client) does it */
	conn->is_pumping = true;
	uint32_t pass = 0;
	while (eng_conn_pump_once(conn)) {
		pass++;
		ENG_ASSERT(pass < ENG_CONN_PUMP_PASSES_MAX);
	}
	conn->is_pumping = false;
	if (conn->state == ENG_CONN_STATE_CLOSING && conn->ops_in_flight == 0 && conn->fd < 0)
		eng_conn_finish(conn); /* last: may free or reopen conn */
}

/* ---- open and the owner's calls -------------------------------------- */

/* "1.2.3.4:25" or "[::1]:25". */
static void
eng_conn_format_peer(struct eng_conn *conn)
{
	char host[INET6_ADDRSTRLEN] = "?";
	uint16_t port = 0;
	if (conn->peer_addr.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&conn->peer_addr;
		(void)inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(conn->peer, sizeof(conn->peer), "%s:%u", host, (unsigned)port);
		return;
	}
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&conn->peer_addr;
	(void)inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
	port = ntohs(in6->sin6_port);
	snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", host, (unsigned)port);
}

/* The socket, its options and the optional source bind; fd or -errno. */
static int
eng_conn_socket(int family, const struct sockaddr *source_addr, uint32_t source_addr_len)
{
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		goto fail;
	if (source_addr != NULL) {
		/* Defer the port choice to connect (Linux 4.2): many conns per
		 * source IP without exhausting ephemeral ports. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0)
			goto fail;
		if (bind(fd, source_addr, (socklen_t)source_addr_len) < 0)
			goto fail;
	}
	return fd;
fail:;
	int ret = -errno;
	(void)close(fd);
	ENG_ASSERT(ret < 0);
	return ret;
}

static void
eng_conn_ops_init(struct eng_conn *conn)
{
	struct {
		struct ring_op *op;
		ring_cb_fn *callback;
	} ops[] = {
		{ &conn->connect_op, eng_conn_on_connect },
		{ &conn->connect_timeout_op, eng_conn_on_connect_timeout },
		{ &conn->recv_op, eng_conn_on_recv },
		{ &conn->send_op, eng_conn_on_send },
		{ &conn->timer_op, eng_conn_on_timer },
		{ &conn->close_op, eng_conn_on_close },
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(ops); i++) {
		memset(ops[i].op, 0, sizeof(*ops[i].op));
		ops[i].op->callback = ops[i].callback;
		ops[i].op->ctx = conn;
	}
	for (size_t i = 0; i < ENG_CONN_CANCEL_COUNT; i++) {
		memset(&conn->cancel_ops[i], 0, sizeof(conn->cancel_ops[i]));
		conn->cancel_ops[i].callback = eng_conn_on_cancel;
		conn->cancel_ops[i].ctx = conn;
	}
}

/* The TLS peer name: the configured one, or the address literal. */
static void
eng_conn_copy_tls_name(struct eng_conn *conn, const struct eng_conn_config *config)
{
	ENG_ASSERT(config->tls_name_len < sizeof(conn->tls_name));
	ENG_ASSERT(config->tls_name != NULL || config->tls_name_len == 0);
	memset(conn->tls_name, 0, sizeof(conn->tls_name));
	if (config->tls_name_len > 0) {
		memcpy(conn->tls_name, config->tls_name, config->tls_name_len);
	} else if (conn->peer_addr.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&conn->peer_addr;
		(void)inet_ntop(AF_INET, &in->sin_addr, conn->tls_name, sizeof(conn->tls_name));
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&conn->peer_addr;
		(void)inet_ntop(AF_INET6, &in6->sin6_addr, conn->tls_name, sizeof(conn->tls_name));
	}
	conn->config.tls_name = conn->tls_name;
	conn->config.tls_name_len = strlen(conn->tls_name);
}

/* Copy the caller's config and address into conn (both are borrowed). */
static void
eng_conn_copy_setup(struct eng_conn *conn, const struct sockaddr *addr, uint32_t addr_len,
		    const struct eng_conn_config *config)
{
	ENG_ASSERT(config->helo_name_len <= sizeof(conn->helo_name));
	ENG_ASSERT(addr_len <= sizeof(conn->peer_addr));
	memcpy(conn->helo_name, config->helo_name, config->helo_name_len);
	conn->config = *config;
	conn->config.helo_name = conn->helo_name;
	/* Used by open only. */
	conn->config.source_addr = NULL;
	conn->config.source_addr_len = 0;
	memset(&conn->peer_addr, 0, sizeof(conn->peer_addr));
	memcpy(&conn->peer_addr, addr, addr_len);
	conn->peer_addr_len = addr_len;
	eng_conn_format_peer(conn);
	eng_conn_copy_tls_name(conn, config);
}

int
eng_conn_open(struct eng_conn *conn, struct ring *ring, const struct sockaddr *addr,
	      uint32_t addr_len, const struct eng_conn_config *config, void *ctx,
	      eng_conn_event_fn *event_callback)
{
	ENG_ASSERT(conn != NULL && ring != NULL && addr != NULL && config != NULL);
	ENG_ASSERT(event_callback != NULL);
	ENG_ASSERT(conn->state == ENG_CONN_STATE_FREE);
	ENG_ASSERT(conn->ops_in_flight == 0);
	ENG_ASSERT((addr->sa_family == AF_INET && addr_len == sizeof(struct sockaddr_in)) ||
		   (addr->sa_family == AF_INET6 && addr_len == sizeof(struct sockaddr_in6)));
	ENG_ASSERT(config->connect_timeout_ms > 0);
	ENG_ASSERT(smtp_client_helo_name_is_valid(config->helo_name, config->helo_name_len));
	ENG_ASSERT(config->source_addr != NULL || config->source_addr_len == 0);
	ENG_ASSERT(config->tls_policy == SMTP_CLIENT_TLS_NONE || config->tls_ctx != NULL);
	ENG_ASSERT(!config->tls_verify || config->tls_policy == SMTP_CLIENT_TLS_REQUIRED);
	ENG_ASSERT(conn->tls == NULL);
	/* The session and the receive buffer are set up when used. */
	memset(conn, 0, offsetof(struct eng_conn, client));
	conn->fd = -1;
	conn->ring = ring;
	conn->event_ctx = ctx;
	conn->event_callback = event_callback;
	eng_conn_copy_setup(conn, addr, addr_len, config);
	eng_conn_ops_init(conn);
	int fd = eng_conn_socket(addr->sa_family, config->source_addr, config->source_addr_len);
	if (fd < 0)
		return fd;
	conn->open_ns = eng_now_monotonic_ns();
	int ret = ring_prep_connect_timeout(ring, &conn->connect_op, &conn->connect_timeout_op,
					    fd, (const struct sockaddr *)&conn->peer_addr,
					    conn->peer_addr_len,
					    (uint64_t)config->connect_timeout_ms * ENG_CONN_NS_PER_MS);
	if (ret < 0) {
		(void)close(fd);
		return ret;
	}
	conn->fd = fd;
	conn->ops_in_flight = 2;
	conn->state = ENG_CONN_STATE_CONNECTING;
	return 0;
}

bool
eng_conn_send_message(struct eng_conn *conn, const struct smtp_message *message)
{
	ENG_ASSERT(conn != NULL && message != NULL);
	bool is_behind_dot = !eng_conn_is_ready(conn);
	ENG_ASSERT(!is_behind_dot || eng_conn_may_pipeline(conn));
	ENG_ASSERT(is_behind_dot || (conn->message == NULL && conn->prev_message == NULL));
	ENG_ASSERT(is_behind_dot || !conn->send_op.in_flight);
	ENG_ASSERT(!is_behind_dot || (conn->message != NULL && conn->prev_message == NULL));
	const struct smtp_message *current = conn->message;
	uint64_t current_start_ns = conn->message_start_ns;
	conn->prev_message = current;
	conn->prev_message_start_ns = current_start_ns;
	conn->message = message;
	conn->message_start_ns = eng_now_monotonic_ns();
	conn->messages_count++;
	bool is_started = smtp_client_start_message(&conn->client, message, eng_conn_now_ms());
	if (!is_started) {
		/* Refused locally: its final event came; the current one stays. */
		ENG_ASSERT(conn->message == NULL);
		conn->message = current;
		conn->message_start_ns = current_start_ns;
		conn->prev_message = NULL;
	}
	eng_conn_pump(conn);
	return is_started;
}

void
eng_conn_quit(struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	ENG_ASSERT(eng_conn_is_ready(conn));
	ENG_ASSERT(conn->message == NULL && conn->prev_message == NULL);
	smtp_client_quit(&conn->client, eng_conn_now_ms());
	eng_conn_pump(conn);
}

void
eng_conn_abort(struct eng_conn *conn)
{
	ENG_ASSERT(conn != NULL);
	ENG_ASSERT(conn->state != ENG_CONN_STATE_FREE);
	if (conn->state == ENG_CONN_STATE_CLOSING)
		return;
	/* Acted on by the pump: at once, or when smtp_client or the running
	 * pump returns (abort may come from inside an event callback). */
	conn->abort_is_requested = true;
	eng_conn_pump(conn);
}
