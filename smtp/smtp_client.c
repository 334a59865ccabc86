/*
 * smtp_client.c - the outbound SMTP client session state machine
 * (smtp_client.h, docs/smtp-client.md). One state machine per session, in
 * this one file (style guide 4; OpenSMTPD mta_session.c).
 *
 * Two sides, as in Postfix smtp_proto.c (send_state / recv_state):
 * - The receive side is `state`: which reply comes next. It changes only
 *   through smtp_client_enter_state(), which traces old -> new.
 * - The send side is a cursor over the transaction's steps (0 RSET,
 *   1 MAIL, 2 + i RCPT i, 2 + n DATA): step_produced_count is the next step
 *   to write into out_buf, step_replied_count the next step whose reply is
 *   awaited. With PIPELINING the producer runs ahead as far as out_buf
 *   allows; in lock-step it waits until step_replied_count catches up.
 *
 * Matching replies to commands. Every command is one line ending in LF and
 * no command holds another LF (addresses and the EHLO name are checked), so
 * counting LFs in consumed output counts commands fully sent. The greeting
 * counts as command 0, sent at connect; the body counts as one command,
 * sent when its last byte is consumed. A reply is legitimate only while
 * replies_count < commands_sent_count when its first byte arrives: a reply
 * when nothing is awaited, or before its command was fully sent, is a
 * protocol error (a 421 excepted: the server is closing), so replies are
 * never shifted onto other commands (reliability.md 2.6, OUT-07). What
 * cannot be seen at once (one reply too many or too few inside a
 * pipelined batch) shows later: a 2xx to DATA, bytes after a refused DATA
 * reply, a reply while the body goes out. Hence RCPT 4xx/5xx events are
 * provisional: a session failure before the transaction's last reply
 * voids them (MESSAGE_FAILED with an error, smtp_client.h), and the
 * engine defers every recipient instead of bouncing on a shifted reply.
 * A refused MAIL is held the same way (mail_is_refused, a copy of the
 * reply): the batch is drained, then the message fails with it.
 *
 * Behind the dot (RFC 2920 3.1): in BODY or DOT with PIPELINING, a second
 * message may start (smtp_client_may_pipeline). The body's message moves
 * to prev_message; message becomes the new transaction, whose steps are
 * produced into out_buf at once (never RSET: the end-of-data reply ends
 * the previous transaction). The receive state stays BODY/DOT (the body's
 * reply comes first); output is the rest of the body then out_buf. The
 * first reply after the body goes to prev_message (on_prev_dot), which
 * then enters the new transaction's step state. A failure before it fails
 * prev_message first, then message.
 *
 * STARTTLS: the reply to STARTTLS is dispatched knowing whether more bytes
 * followed it in the same feed (bytes_follow): after a 2xx that is
 * response injection. State TLS awaits no reply; any byte fed in it is
 * injection too. smtp_client_tls_started() resets the parser and the
 * capabilities and says EHLO again; is_tls stops a second STARTTLS.
 *
 * Invariants:
 * - replies_count <= commands_sent_count <= commands_produced_count.
 * - out_head <= out_used <= SMTP_CLIENT_OUTPUT_SIZE; out_buf bytes before
 *   out_used are moved only in consume(), when no send is in flight.
 * - In BODY no command is pending unless prev_message is set (then the
 *   pending commands are the next transaction's, sent after the body).
 * - message != NULL exactly while a transaction's final event is still
 *   owed; after that the message is never dereferenced again. The same
 *   for prev_message, which is set only in BODY or DOT, with message set
 *   and is_dot_only false: at most two messages are known.
 * - Events are delivered one at a time; the callback never re-enters.
 *
 * References: RFC 5321 (3.3, 4.1.1, 4.2, 4.5.3.2), RFC 2920 (PIPELINING),
 * RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3463.
 */
#include "smtp_client.h"

#include <string.h>

#include "../engine/eng_common.h"

#define STEP_RSET 0u
#define STEP_MAIL 1u
#define STEP_RCPT_FIRST 2u
#define BODY_END ".\r\n"
#define BODY_END_SIZE 3u

/* One command being built before it goes into out_buf. */
struct command {
	size_t size;
	char bytes[SMTP_COMMAND_SIZE_MAX];
};

/* Local statuses: made up by ringmail, never sent by the server. */
struct local_status {
	uint16_t code;
	uint8_t status_class;
	uint16_t subject;
	uint16_t detail;
	const char *text;
};

static const struct local_status local_timeout = {
	451, 4, 4, 2, "timeout waiting for the server" };
static const struct local_status local_lost = {
	451, 4, 4, 2, "lost connection with the server" };
static const struct local_status local_protocol = {
	451, 4, 5, 0, "SMTP protocol error from the server" };
static const struct local_status local_rset = {
	451, 4, 3, 0, "RSET rejected by the server" };
static const struct local_status local_bad_sender = {
	553, 5, 1, 7, "sender address refused: control byte, bracket or length" };
static const struct local_status local_bad_rcpt = {
	553, 5, 1, 3, "recipient address refused: control byte, bracket or length" };
static const struct local_status local_too_big = {
	552, 5, 3, 4, "message size exceeds fixed maximum message size" };
static const struct local_status local_no_smtputf8 = {
	554, 5, 6, 7, "SMTPUTF8 is required, but was not offered by the server" };
static const struct local_status local_no_rcpt = {
	554, 5, 5, 1, "no valid recipients" };
static const struct local_status local_tls_required = {
	451, 4, 7, 4, "TLS is required, but STARTTLS was not offered or was refused" };
static const struct local_status local_tls_injection = {
	451, 4, 7, 0, "bytes after the STARTTLS reply (response injection)" };
static const struct local_status local_tls_failed = {
	451, 4, 7, 0, "TLS failure with the server" };

static const char *const state_names[SMTP_CLIENT_STATE_COUNT] = {
	[SMTP_CLIENT_STATE_GREETING] = "GREETING",
	[SMTP_CLIENT_STATE_EHLO] = "EHLO",
	[SMTP_CLIENT_STATE_HELO] = "HELO",
	[SMTP_CLIENT_STATE_STARTTLS] = "STARTTLS",
	[SMTP_CLIENT_STATE_TLS] = "TLS",
	[SMTP_CLIENT_STATE_IDLE] = "IDLE",
	[SMTP_CLIENT_STATE_RSET] = "RSET",
	[SMTP_CLIENT_STATE_MAIL] = "MAIL",
	[SMTP_CLIENT_STATE_RCPT] = "RCPT",
	[SMTP_CLIENT_STATE_DATA] = "DATA",
	[SMTP_CLIENT_STATE_BODY] = "BODY",
	[SMTP_CLIENT_STATE_DOT] = "DOT",
	[SMTP_CLIENT_STATE_QUIT] = "QUIT",
	[SMTP_CLIENT_STATE_CLOSED] = "CLOSED",
};

static const char *const error_names[SMTP_CLIENT_ERROR_COUNT] = {
	[SMTP_CLIENT_ERROR_NONE] = "none",
	[SMTP_CLIENT_ERROR_SERVER_CLOSING] = "server closing (421)",
	[SMTP_CLIENT_ERROR_MALFORMED_REPLY] = "malformed reply",
	[SMTP_CLIENT_ERROR_UNEXPECTED_REPLY] = "unexpected reply",
	[SMTP_CLIENT_ERROR_BAD_REPLY_CODE] = "reply code out of sequence",
	[SMTP_CLIENT_ERROR_TIMEOUT] = "timeout",
	[SMTP_CLIENT_ERROR_CONNECTION_LOST] = "connection lost",
	[SMTP_CLIENT_ERROR_GREETING_REJECTED] = "greeting rejected",
	[SMTP_CLIENT_ERROR_HELO_REJECTED] = "EHLO/HELO rejected",
	[SMTP_CLIENT_ERROR_RSET_REJECTED] = "RSET rejected",
	[SMTP_CLIENT_ERROR_TLS_REQUIRED] = "TLS required but not available",
	[SMTP_CLIENT_ERROR_TLS_INJECTION] = "bytes after the STARTTLS reply",
	[SMTP_CLIENT_ERROR_TLS_FAILED] = "TLS failure",
};

const char *
smtp_client_state_name(enum smtp_client_state state)
{
	ENG_ASSERT(state < SMTP_CLIENT_STATE_COUNT);
	ENG_ASSERT(state_names[state] != NULL);
	return state_names[state];
}

const char *
smtp_client_error_name(enum smtp_client_error error)
{
	ENG_ASSERT(error < SMTP_CLIENT_ERROR_COUNT);
	ENG_ASSERT(error_names[error] != NULL);
	return error_names[error];
}

void
smtp_client_timeouts_default(struct smtp_client_timeouts *timeouts)
{
	ENG_ASSERT(timeouts != NULL);
	timeouts->greeting_ms = 5u * 60u * 1000u;
	timeouts->helo_ms = 300u * 1000u;
	timeouts->rset_ms = 20u * 1000u;
	timeouts->mail_ms = 5u * 60u * 1000u;
	timeouts->rcpt_ms = 5u * 60u * 1000u;
	timeouts->data_ms = 2u * 60u * 1000u;
	timeouts->data_block_ms = 3u * 60u * 1000u;
	timeouts->dot_ms = 10u * 60u * 1000u;
	timeouts->quit_ms = 300u * 1000u;
	ENG_ASSERT(timeouts->dot_ms > timeouts->data_ms);
}

bool
smtp_client_helo_name_is_valid(const char *name, size_t name_len)
{
	size_t index;

	ENG_ASSERT(name != NULL || name_len == 0);
	ENG_ASSERT(SMTP_HELO_NAME_SIZE_MAX > 0);
	if (name_len == 0 || name_len > SMTP_HELO_NAME_SIZE_MAX)
		return false;
	for (index = 0; index < name_len; index++) {
		unsigned char c = (unsigned char)name[index];

		if (c <= 0x20 || c >= 0x7f)
			return false;
	}
	return true;
}

/* ---- state, events, statuses ---------------------------------------- */

static void
smtp_client_enter_state(struct smtp_client *client, enum smtp_client_state new_state)
{
	enum smtp_client_state old_state = client->state;

	ENG_ASSERT(new_state < SMTP_CLIENT_STATE_COUNT);
	ENG_ASSERT(old_state != SMTP_CLIENT_STATE_CLOSED);
	if (old_state == new_state)
		return;
	client->state = new_state;
	if (client->trace_callback != NULL)
		client->trace_callback(client->trace_ctx, old_state, new_state);
}

static void
event_emit(struct smtp_client *client, const struct smtp_event *event)
{
	ENG_ASSERT(!client->is_in_callback);
	ENG_ASSERT(event->type >= SMTP_EV_READY && event->type <= SMTP_EV_PIPELINE_SLOT);
	client->is_in_callback = true;
	client->event_callback(client->event_ctx, event);
	client->is_in_callback = false;
}

static void
status_from_reply(const struct smtp_reply *reply, struct smtp_status *status)
{
	ENG_ASSERT(reply != NULL && status != NULL);
	ENG_ASSERT(reply->code >= 200 && reply->code <= 599);
	memset(status, 0, sizeof(*status));
	status->code = reply->code;
	status->enhanced = reply->enhanced;
	status->is_local = false;
	status->text = reply->text;
	status->text_size = reply->text_size;
}

static void
status_from_local(const struct local_status *local, struct smtp_status *status)
{
	ENG_ASSERT(local != NULL && status != NULL);
	ENG_ASSERT(local->code / 100u == local->status_class);
	memset(status, 0, sizeof(*status));
	status->code = local->code;
	status->enhanced.status_class = local->status_class;
	status->enhanced.subject = local->subject;
	status->enhanced.detail = local->detail;
	status->is_local = true;
	status->text = local->text;
	status->text_size = strlen(local->text);
}

static void
emit_simple(struct smtp_client *client, enum smtp_event_type type, enum smtp_client_error error)
{
	struct smtp_event event;

	ENG_ASSERT(type == SMTP_EV_READY || type == SMTP_EV_CLOSED || type == SMTP_EV_STARTTLS ||
		   type == SMTP_EV_PIPELINE_SLOT);
	ENG_ASSERT(error < SMTP_CLIENT_ERROR_COUNT);
	memset(&event, 0, sizeof(event));
	event.type = type;
	event.error = error;
	event_emit(client, &event);
}

/* The final event of *slot (message, prev_message, or a refused one):
 * *slot is cleared first, the message is not touched again. */
static void
emit_final_of(struct smtp_client *client, const struct smtp_message **slot,
	      enum smtp_event_type type, const struct smtp_status *status,
	      enum smtp_client_error error, bool outcome_is_unknown)
{
	struct smtp_event event;

	ENG_ASSERT(slot != NULL && *slot != NULL);
	ENG_ASSERT(type == SMTP_EV_MESSAGE_DONE || type == SMTP_EV_MESSAGE_FAILED);
	memset(&event, 0, sizeof(event));
	event.type = type;
	event.message = *slot;
	event.status = *status;
	event.error = error;
	event.outcome_is_unknown = outcome_is_unknown;
	*slot = NULL;
	event_emit(client, &event);
}

/* The transaction's final event. */
static void
emit_message_final(struct smtp_client *client, enum smtp_event_type type,
		   const struct smtp_status *status, enum smtp_client_error error,
		   bool outcome_is_unknown)
{
	ENG_ASSERT(client->message != NULL);
	emit_final_of(client, &client->message, type, status, error, outcome_is_unknown);
}

static void
emit_message_failed_reply(struct smtp_client *client, const struct smtp_reply *reply)
{
	struct smtp_status status;

	ENG_ASSERT(client->message != NULL);
	ENG_ASSERT(reply->code >= 400);
	status_from_reply(reply, &status);
	emit_message_final(client, SMTP_EV_MESSAGE_FAILED, &status, SMTP_CLIENT_ERROR_NONE, false);
}

static void
emit_message_failed_local(struct smtp_client *client, const struct local_status *local)
{
	struct smtp_status status;

	ENG_ASSERT(client->message != NULL);
	ENG_ASSERT(local->code >= 400);
	status_from_local(local, &status);
	emit_message_final(client, SMTP_EV_MESSAGE_FAILED, &status, SMTP_CLIENT_ERROR_NONE, false);
}

/*
 * MAIL 4xx/5xx: like an RCPT reply, it stands only if the rest of the
 * batch is read in step. Keep a copy (the reply's text lives in the parser
 * until the next reply); the pipelined RCPT and DATA replies are drained
 * without events, then the message fails with it (emit_mail_refusal), or
 * a session failure in between voids it.
 */
static void
mail_refusal_hold(struct smtp_client *client, const struct smtp_reply *reply)
{
	size_t text_size = reply->text_size < sizeof(client->mail_text) ? reply->text_size
									: sizeof(client->mail_text);

	ENG_ASSERT(client->message != NULL && !client->mail_is_refused);
	ENG_ASSERT(reply->code >= 400);
	status_from_reply(reply, &client->mail_status);
	if (text_size > 0)
		memcpy(client->mail_text, reply->text, text_size);
	client->mail_status.text = NULL; /* set at emit time: the struct may not move */
	client->mail_status.text_size = text_size;
	client->mail_is_refused = true;
}

static void
emit_mail_refusal(struct smtp_client *client)
{
	struct smtp_status status = client->mail_status;

	ENG_ASSERT(client->mail_is_refused && client->message != NULL);
	ENG_ASSERT(status.code >= 400 && status.text_size <= sizeof(client->mail_text));
	status.text = client->mail_text;
	client->mail_is_refused = false;
	emit_message_final(client, SMTP_EV_MESSAGE_FAILED, &status, SMTP_CLIENT_ERROR_NONE, false);
}

/* ---- output --------------------------------------------------------- */

static size_t
commands_pending_size(const struct smtp_client *client)
{
	ENG_ASSERT(client->out_head <= client->out_used);
	ENG_ASSERT(client->out_used <= SMTP_CLIENT_OUTPUT_SIZE);
	return (size_t)(client->out_used - client->out_head);
}

static void
command_put(struct command *command, const void *ptr, size_t size)
{
	ENG_ASSERT(command->size <= SMTP_COMMAND_SIZE_MAX);
	ENG_ASSERT(size <= SMTP_COMMAND_SIZE_MAX - command->size);
	if (size > 0)
		memcpy(command->bytes + command->size, ptr, size);
	command->size += size;
}

static void
command_put_text(struct command *command, const char *text)
{
	ENG_ASSERT(text != NULL);
	ENG_ASSERT(strlen(text) < SMTP_COMMAND_SIZE_MAX);
	command_put(command, text, strlen(text));
}

static void
command_put_u64(struct command *command, uint64_t value)
{
	char digits[20];
	size_t count = 0;

	ENG_ASSERT(command != NULL);
	ENG_ASSERT(sizeof(digits) >= 20u); /* UINT64_MAX has 20 digits */
	do {
		digits[sizeof(digits) - 1u - count] = (char)('0' + value % 10u);
		value /= 10u;
		count++;
	} while (value != 0 && count < sizeof(digits));
	command_put(command, digits + sizeof(digits) - count, count);
}

/* Append a whole command to out_buf; false (nothing written) when it does
 * not fit now. The command's LF is what consume() counts. */
static bool
output_push(struct smtp_client *client, const struct command *command)
{
	ENG_ASSERT(command->size >= 3u && command->bytes[command->size - 1u] == '\n');
	ENG_ASSERT(memchr(command->bytes, '\n', command->size - 1u) == NULL);
	if (command->size > SMTP_CLIENT_OUTPUT_SIZE - client->out_used)
		return false;
	memcpy(client->out_buf + client->out_used, command->bytes, command->size);
	client->out_used += (uint32_t)command->size;
	client->commands_produced_count++;
	return true;
}

/* A command that always fits: the buffer is empty when it is produced. */
static void
output_push_text(struct smtp_client *client, const char *text)
{
	struct command command;

	ENG_ASSERT(commands_pending_size(client) == 0);
	command.size = 0;
	command_put_text(&command, text);
	if (!output_push(client, &command))
		ENG_PANIC("smtp_client: a lone command does not fit the output buffer");
	ENG_ASSERT(commands_pending_size(client) == command.size);
}

static void
output_push_helo(struct smtp_client *client, const char *verb)
{
	struct command command;

	ENG_ASSERT(commands_pending_size(client) == 0);
	ENG_ASSERT(client->config.helo_name_len <= SMTP_HELO_NAME_SIZE_MAX);
	command.size = 0;
	command_put_text(&command, verb);
	command_put(&command, client->helo_name, client->config.helo_name_len);
	command_put_text(&command, "\r\n");
	if (!output_push(client, &command))
		ENG_PANIC("smtp_client: EHLO does not fit the output buffer");
}

/* ---- transaction steps ---------------------------------------------- */

static uint32_t
step_data(const struct smtp_client *client)
{
	ENG_ASSERT(client->rcpt_count >= 1);
	ENG_ASSERT(client->rcpt_count <= SMTP_RCPTS_PER_TRANSACTION_MAX);
	return STEP_RCPT_FIRST + client->rcpt_count;
}

static enum smtp_client_state
step_state(const struct smtp_client *client, uint32_t step)
{
	ENG_ASSERT(step <= step_data(client));
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	if (step == STEP_RSET)
		return SMTP_CLIENT_STATE_RSET;
	if (step == STEP_MAIL)
		return SMTP_CLIENT_STATE_MAIL;
	if (step < step_data(client))
		return SMTP_CLIENT_STATE_RCPT;
	return SMTP_CLIENT_STATE_DATA;
}

static void
command_mail(const struct smtp_client *client, struct command *command)
{
	const struct smtp_message *message = client->message;

	ENG_ASSERT(message != NULL);
	ENG_ASSERT(message->sender.len <= SMTP_ADDRESS_SIZE_MAX);
	command_put_text(command, "MAIL FROM:<");
	command_put(command, message->sender.ptr, message->sender.len);
	command_put_text(command, ">");
	if (smtp_ehlo_has(&client->caps, SMTP_EXT_SIZE)) {
		command_put_text(command, " SIZE=");
		command_put_u64(command, client->message_size);
	}
	if (message->needs_8bit && smtp_ehlo_has(&client->caps, SMTP_EXT_8BITMIME))
		command_put_text(command, " BODY=8BITMIME");
	if (client->message_needs_smtputf8)
		command_put_text(command, " SMTPUTF8");
	command_put_text(command, "\r\n");
}

static void
step_command(const struct smtp_client *client, uint32_t step, struct command *command)
{
	const struct smtp_address *rcpt;

	ENG_ASSERT(client->message != NULL);
	ENG_ASSERT(step <= step_data(client));
	command->size = 0;
	if (step == STEP_RSET) {
		command_put_text(command, "RSET\r\n");
	} else if (step == STEP_MAIL) {
		command_mail(client, command);
	} else if (step < step_data(client)) {
		rcpt = &client->message->rcpts[step - STEP_RCPT_FIRST];
		ENG_ASSERT(rcpt->len >= 1 && rcpt->len <= SMTP_ADDRESS_SIZE_MAX);
		command_put_text(command, "RCPT TO:<");
		command_put(command, rcpt->ptr, rcpt->len);
		command_put_text(command, ">\r\n");
	} else {
		command_put_text(command, "DATA\r\n");
	}
}

static bool
step_may_produce(const struct smtp_client *client)
{
	uint32_t step = client->step_produced_count;

	ENG_ASSERT(client->step_replied_count <= step);
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_IDLE);
	if (client->message == NULL || client->mail_is_refused || step > step_data(client))
		return false; /* MAIL failed (draining), or all produced */
	if (client->is_pipelining)
		return true;
	if (step == step_data(client) && client->rcpts_accepted_count == 0)
		return false;
	return client->step_replied_count == step;
}

/* Write as many transaction commands as the mode and out_buf allow. */
static void
steps_produce(struct smtp_client *client)
{
	struct command command;
	uint32_t bound;

	ENG_ASSERT((client->state >= SMTP_CLIENT_STATE_RSET &&
		    client->state <= SMTP_CLIENT_STATE_DATA) ||
		   (client->prev_message != NULL && (client->state == SMTP_CLIENT_STATE_BODY ||
						     client->state == SMTP_CLIENT_STATE_DOT)));
	for (bound = 0; bound <= SMTP_RCPTS_PER_TRANSACTION_MAX + 3u; bound++) {
		if (!step_may_produce(client))
			return;
		step_command(client, client->step_produced_count, &command);
		if (!output_push(client, &command))
			return;
		client->step_produced_count++;
	}
	ENG_PANIC("smtp_client: producer loop exceeded its bound");
}

/* ---- deadlines ------------------------------------------------------ */

static uint32_t
state_timeout_ms(const struct smtp_client *client)
{
	const struct smtp_client_timeouts *timeouts = &client->config.timeouts;

	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_IDLE);
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	switch (client->state) {
	case SMTP_CLIENT_STATE_GREETING:
		return timeouts->greeting_ms;
	case SMTP_CLIENT_STATE_EHLO:
	case SMTP_CLIENT_STATE_HELO:
	case SMTP_CLIENT_STATE_STARTTLS:
	case SMTP_CLIENT_STATE_TLS: /* the handshake, run by the engine */
		return timeouts->helo_ms;
	case SMTP_CLIENT_STATE_RSET:
		return timeouts->rset_ms;
	case SMTP_CLIENT_STATE_MAIL:
		return timeouts->mail_ms;
	case SMTP_CLIENT_STATE_RCPT:
		return timeouts->rcpt_ms;
	case SMTP_CLIENT_STATE_DATA:
		return timeouts->data_ms;
	case SMTP_CLIENT_STATE_BODY:
		return timeouts->data_block_ms;
	case SMTP_CLIENT_STATE_DOT:
		return timeouts->dot_ms;
	case SMTP_CLIENT_STATE_QUIT:
		return timeouts->quit_ms;
	default:
		ENG_PANIC("smtp_client: no timeout for this state");
	}
}

/* Progress was made (reply, send, new command): the awaited reply gets a
 * fresh deadline. A partial reply is not progress (no slow-drip renewal). */
static void
deadline_refresh(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(now_ms < SMTP_CLIENT_DEADLINE_NONE - UINT32_MAX);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	if (client->state == SMTP_CLIENT_STATE_IDLE || client->state == SMTP_CLIENT_STATE_CLOSED) {
		client->deadline_ms = SMTP_CLIENT_DEADLINE_NONE;
		return;
	}
	client->deadline_ms = now_ms + state_timeout_ms(client);
}

/* ---- endings -------------------------------------------------------- */

static void
session_close(struct smtp_client *client, enum smtp_client_error error)
{
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	ENG_ASSERT(client->message == NULL && client->prev_message == NULL);
	client->out_head = 0;
	client->out_used = 0;
	client->deadline_ms = SMTP_CLIENT_DEADLINE_NONE;
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_CLOSED);
	emit_simple(client, SMTP_EV_CLOSED, error);
}

static const struct local_status *
error_local_status(enum smtp_client_error error)
{
	ENG_ASSERT(error != SMTP_CLIENT_ERROR_NONE);
	ENG_ASSERT(error != SMTP_CLIENT_ERROR_SERVER_CLOSING);
	if (error == SMTP_CLIENT_ERROR_TIMEOUT)
		return &local_timeout;
	if (error == SMTP_CLIENT_ERROR_CONNECTION_LOST)
		return &local_lost;
	if (error == SMTP_CLIENT_ERROR_RSET_REJECTED)
		return &local_rset;
	if (error == SMTP_CLIENT_ERROR_TLS_REQUIRED)
		return &local_tls_required;
	if (error == SMTP_CLIENT_ERROR_TLS_INJECTION)
		return &local_tls_injection;
	if (error == SMTP_CLIENT_ERROR_TLS_FAILED)
		return &local_tls_failed;
	return &local_protocol;
}

/*
 * Fail the pending messages of a broken session, oldest first, each with
 * one final event: the 421 reply (reply_status) or a local status. The
 * outcome is unknown for the message whose body was fully sent (DOT),
 * unless the server said 421; a message pipelined behind it never sent
 * its body.
 */
static void
session_fail_messages(struct smtp_client *client, enum smtp_client_error error,
		      const struct smtp_status *reply_status)
{
	struct smtp_status status;
	bool is_unknown = client->state == SMTP_CLIENT_STATE_DOT && !client->is_dot_only &&
			  error != SMTP_CLIENT_ERROR_SERVER_CLOSING;

	ENG_ASSERT(client->message != NULL);
	ENG_ASSERT(client->prev_message == NULL || !client->is_dot_only);
	if (error == SMTP_CLIENT_ERROR_SERVER_CLOSING)
		status = *reply_status;
	else
		status_from_local(error_local_status(error), &status);
	if (client->prev_message != NULL) {
		emit_final_of(client, &client->prev_message, SMTP_EV_MESSAGE_FAILED, &status,
			      error, is_unknown);
		is_unknown = false;
	}
	emit_message_final(client, SMTP_EV_MESSAGE_FAILED, &status, error, is_unknown);
}

/*
 * The session cannot go on: fail the pending message (with the 421 reply,
 * or a local 4xx status), report the error, close. reply is the server's
 * reply behind the error, or NULL for local causes. In QUIT, just close.
 */
static void
session_fail(struct smtp_client *client, enum smtp_client_error error,
	     enum smtp_reply_error reply_error, const struct smtp_reply *reply)
{
	struct smtp_event event;

	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	ENG_ASSERT(error != SMTP_CLIENT_ERROR_NONE);
	if (client->state == SMTP_CLIENT_STATE_QUIT) {
		session_close(client, client->quit_error);
		return;
	}
	memset(&event, 0, sizeof(event));
	event.type = SMTP_EV_ERROR;
	event.error = error;
	event.reply_error = reply_error;
	ENG_ASSERT(error != SMTP_CLIENT_ERROR_SERVER_CLOSING || reply != NULL);
	if (reply != NULL)
		status_from_reply(reply, &event.status);
	if (client->message != NULL)
		session_fail_messages(client, error, &event.status);
	if (reply == NULL)
		status_from_local(error_local_status(error), &event.status);
	event_emit(client, &event);
	session_close(client, error);
}

/* A reply class the command cannot have (3xx but to DATA, 2xx to DATA,
 * 2xx to RCPT after MAIL failed): protocol error. */
static void
reply_out_of_sequence(struct smtp_client *client, const struct smtp_reply *reply)
{
	ENG_ASSERT(reply != NULL);
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	session_fail(client, SMTP_CLIENT_ERROR_BAD_REPLY_CODE, SMTP_REPLY_ERROR_NONE, reply);
}

/* A rejection the session survives only to say QUIT: report, then QUIT.
 * reply NULL: a local refusal (TLS required), reported with its local
 * status, never the server's (a 5xx to STARTTLS must not bounce mail). */
static void
session_reject(struct smtp_client *client, enum smtp_client_error error,
	       const struct smtp_reply *reply)
{
	struct smtp_event event;

	ENG_ASSERT(client->message == NULL);
	ENG_ASSERT(error == SMTP_CLIENT_ERROR_GREETING_REJECTED ||
		   error == SMTP_CLIENT_ERROR_HELO_REJECTED ||
		   (error == SMTP_CLIENT_ERROR_TLS_REQUIRED && reply == NULL));
	memset(&event, 0, sizeof(event));
	event.type = SMTP_EV_ERROR;
	event.error = error;
	if (reply != NULL)
		status_from_reply(reply, &event.status);
	else
		status_from_local(error_local_status(error), &event.status);
	event_emit(client, &event);
	client->quit_error = error;
	output_push_text(client, "QUIT\r\n");
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_QUIT);
}

static void
session_idle(struct smtp_client *client)
{
	ENG_ASSERT(client->message == NULL && client->prev_message == NULL);
	ENG_ASSERT(commands_pending_size(client) == 0);
	client->is_dot_only = false;
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_IDLE);
	emit_simple(client, SMTP_EV_READY, SMTP_CLIENT_ERROR_NONE);
}

/* The transaction's last reply came. The next one starts with RSET only
 * when this one ended without a reply to its end of data (rset_is_needed):
 * that reply ends a transaction (RFC 5321 4.1.1.4), whatever its code. */
static void
transaction_end(struct smtp_client *client, bool rset_is_needed)
{
	ENG_ASSERT(client->message == NULL);
	ENG_ASSERT(client->state >= SMTP_CLIENT_STATE_RSET);
	client->rset_is_needed = rset_is_needed;
	session_idle(client);
}

/* ---- replies -------------------------------------------------------- */

static void
on_greeting(struct smtp_client *client, const struct smtp_reply *reply)
{
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_GREETING);
	ENG_ASSERT(client->message == NULL);
	if (reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	if (reply_class != 2) {
		session_reject(client, SMTP_CLIENT_ERROR_GREETING_REJECTED, reply);
		return;
	}
	output_push_helo(client, "EHLO ");
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_EHLO);
}

/* After EHLO/HELO: send STARTTLS when the policy asks and the server
 * offers it; refuse to go on without TLS under REQUIRED. True when the
 * session does not go idle now. */
static bool
tls_begin(struct smtp_client *client)
{
	ENG_ASSERT(client->message == NULL);
	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_EHLO ||
		   client->state == SMTP_CLIENT_STATE_HELO);
	if (client->is_tls || client->config.tls_policy == SMTP_CLIENT_TLS_NONE)
		return false;
	if (smtp_ehlo_has(&client->caps, SMTP_EXT_STARTTLS)) {
		output_push_text(client, "STARTTLS\r\n");
		smtp_client_enter_state(client, SMTP_CLIENT_STATE_STARTTLS);
		return true;
	}
	if (client->config.tls_policy == SMTP_CLIENT_TLS_REQUIRED) {
		session_reject(client, SMTP_CLIENT_ERROR_TLS_REQUIRED, NULL);
		return true;
	}
	return false; /* opportunistic: plaintext (OUT-04) */
}

static void
on_helo(struct smtp_client *client, const struct smtp_reply *reply)
{
	uint32_t reply_class = smtp_reply_class(reply);
	bool is_ehlo = client->state == SMTP_CLIENT_STATE_EHLO;

	ENG_ASSERT(is_ehlo || client->state == SMTP_CLIENT_STATE_HELO);
	ENG_ASSERT(client->message == NULL);
	if (reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	if (reply_class == 5 && is_ehlo) {
		output_push_helo(client, "HELO ");
		smtp_client_enter_state(client, SMTP_CLIENT_STATE_HELO);
		return;
	}
	if (reply_class != 2) {
		session_reject(client, SMTP_CLIENT_ERROR_HELO_REJECTED, reply);
		return;
	}
	if (is_ehlo)
		smtp_ehlo_parse(reply, &client->caps);
	else
		smtp_ehlo_caps_init(&client->caps);
	client->is_pipelining = !client->config.pipelining_is_disabled &&
				smtp_ehlo_has(&client->caps, SMTP_EXT_PIPELINING);
	if (!tls_begin(client))
		session_idle(client);
}

/*
 * The STARTTLS reply. bytes_follow: more bytes came after it in the same
 * feed; after a 2xx that is response injection (OUT-03): drop the session,
 * nothing read before the handshake may be trusted.
 */
static void
on_starttls(struct smtp_client *client, const struct smtp_reply *reply, bool bytes_follow)
{
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_STARTTLS);
	ENG_ASSERT(client->message == NULL && !client->is_tls);
	if (reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	if (reply_class == 2 && bytes_follow) {
		session_fail(client, SMTP_CLIENT_ERROR_TLS_INJECTION, SMTP_REPLY_ERROR_NONE, NULL);
		return;
	}
	if (reply_class == 2) {
		smtp_client_enter_state(client, SMTP_CLIENT_STATE_TLS);
		emit_simple(client, SMTP_EV_STARTTLS, SMTP_CLIENT_ERROR_NONE);
		return;
	}
	if (client->config.tls_policy == SMTP_CLIENT_TLS_REQUIRED) {
		session_reject(client, SMTP_CLIENT_ERROR_TLS_REQUIRED, NULL);
		return;
	}
	session_idle(client); /* opportunistic: refused, go on in plaintext */
}

/* 354: send the body, or only the terminator when no recipient was
 * accepted or MAIL failed (RFC 2920 3.1, OUT-06). */
static void
data_go_ahead(struct smtp_client *client)
{
	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_DATA);
	ENG_ASSERT(commands_pending_size(client) == 0);
	if (client->mail_is_refused || client->rcpts_accepted_count == 0) {
		client->is_dot_only = true;
		output_push_text(client, BODY_END);
		smtp_client_enter_state(client, SMTP_CLIENT_STATE_DOT);
		return;
	}
	client->body_sent_size = 0;
	client->commands_produced_count++; /* the body, answered by the final reply */
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_BODY);
	if (client->is_pipelining)
		emit_simple(client, SMTP_EV_PIPELINE_SLOT, SMTP_CLIENT_ERROR_NONE);
}

/*
 * The DATA reply, the last of the batch. bytes_follow: the feed holds more
 * bytes after it. After a refused DATA nothing is awaited, so more bytes
 * mean the replies were out of step (one too many somewhere, so every
 * reply may belong to the command before): a protocol error before the
 * message's final event, which voids the batch's RCPT replies (after a
 * 354 the next pass finds the same, the body awaiting no reply).
 */
static void
on_data(struct smtp_client *client, const struct smtp_reply *reply, bool bytes_follow)
{
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_DATA);
	ENG_ASSERT(client->step_replied_count == step_data(client));
	client->step_replied_count++;
	if (reply_class == 2) {
		reply_out_of_sequence(client, reply);
		return;
	}
	if (reply_class == 3) {
		data_go_ahead(client);
		return;
	}
	if (bytes_follow) {
		session_fail(client, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY, SMTP_REPLY_ERROR_NONE,
			     reply);
		return;
	}
	ENG_ASSERT(client->message != NULL);
	if (client->mail_is_refused)
		emit_mail_refusal(client);
	else
		emit_message_failed_reply(client, reply);
	transaction_end(client, true);
}

/* One RCPT reply. In drain mode (MAIL failed, final event given) replies
 * are read to stay in sync but report nothing; a 2xx there is nonsense. */
static bool
on_rcpt(struct smtp_client *client, const struct smtp_reply *reply, uint32_t rcpt_index)
{
	struct smtp_event event;
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_RCPT);
	ENG_ASSERT(rcpt_index < client->rcpt_count);
	if (reply_class == 3 || (reply_class == 2 && client->mail_is_refused)) {
		reply_out_of_sequence(client, reply);
		return false;
	}
	if (client->mail_is_refused)
		return true;
	if (reply_class == 2)
		client->rcpts_accepted_count++;
	memset(&event, 0, sizeof(event));
	event.type = SMTP_EV_RCPT;
	event.message = client->message;
	event.rcpt_index = rcpt_index;
	status_from_reply(reply, &event.status);
	event_emit(client, &event);
	return true;
}

/* RSET, MAIL or RCPT reply: act on it, then move to the next step. */
static void
on_step(struct smtp_client *client, const struct smtp_reply *reply)
{
	uint32_t step = client->step_replied_count;
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(step < step_data(client));
	ENG_ASSERT(step < client->step_produced_count);
	ENG_ASSERT(client->state == step_state(client, step));
	if (step == STEP_RSET && reply_class != 2) {
		session_fail(client, SMTP_CLIENT_ERROR_RSET_REJECTED, SMTP_REPLY_ERROR_NONE, reply);
		return;
	}
	if (step == STEP_MAIL && reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	if (step == STEP_MAIL && reply_class != 2)
		mail_refusal_hold(client, reply);
	if (step >= STEP_RCPT_FIRST && !on_rcpt(client, reply, step - STEP_RCPT_FIRST))
		return;
	client->step_replied_count++;
	step = client->step_replied_count;
	if (client->mail_is_refused && step == client->step_produced_count) {
		emit_mail_refusal(client); /* MAIL failed and every reply is in, in step */
		transaction_end(client, true);
		return;
	}
	if (!client->is_pipelining && step == step_data(client) &&
	    client->rcpts_accepted_count == 0) {
		emit_message_failed_local(client, &local_no_rcpt);
		transaction_end(client, true);
		return;
	}
	smtp_client_enter_state(client, step_state(client, step));
	steps_produce(client);
}

/* The reply to the end of data (or to the lone dot). */
static void
on_dot(struct smtp_client *client, const struct smtp_reply *reply)
{
	struct smtp_status status;
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_DOT);
	ENG_ASSERT(commands_pending_size(client) == 0);
	if (reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	ENG_ASSERT(client->message != NULL);
	if (client->mail_is_refused) {
		emit_mail_refusal(client);
	} else if (client->is_dot_only) {
		emit_message_failed_local(client, &local_no_rcpt);
	} else if (reply_class == 2) {
		status_from_reply(reply, &status);
		emit_message_final(client, SMTP_EV_MESSAGE_DONE, &status, SMTP_CLIENT_ERROR_NONE,
				   false);
	} else {
		emit_message_failed_reply(client, reply);
	}
	transaction_end(client, false);
}

/* Behind a dot: the previous message's end-of-data reply. Its final event,
 * then the new transaction's replies are awaited (its first step state). */
static void
on_prev_dot(struct smtp_client *client, const struct smtp_reply *reply)
{
	struct smtp_status status;
	uint32_t reply_class = smtp_reply_class(reply);

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_DOT);
	ENG_ASSERT(client->prev_message != NULL && client->message != NULL);
	ENG_ASSERT(!client->is_dot_only);
	if (reply_class == 3) {
		reply_out_of_sequence(client, reply);
		return;
	}
	status_from_reply(reply, &status);
	client->rset_is_needed = false;
	smtp_client_enter_state(client, step_state(client, client->step_replied_count));
	emit_final_of(client, &client->prev_message,
		      reply_class == 2 ? SMTP_EV_MESSAGE_DONE : SMTP_EV_MESSAGE_FAILED, &status,
		      SMTP_CLIENT_ERROR_NONE, false);
}

/* A complete reply. reply_is_awaited was decided at its first byte.
 * bytes_follow: the feed holds more bytes after this reply. */
static void
reply_dispatch(struct smtp_client *client, const struct smtp_reply *reply, bool bytes_follow)
{
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED);
	ENG_ASSERT(client->replies_count <= client->commands_sent_count);
	if (reply->code == 421 && client->state != SMTP_CLIENT_STATE_QUIT) {
		session_fail(client, SMTP_CLIENT_ERROR_SERVER_CLOSING, SMTP_REPLY_ERROR_NONE,
			     reply);
		return;
	}
	if (!client->reply_is_awaited) {
		session_fail(client, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY, SMTP_REPLY_ERROR_NONE,
			     reply);
		return;
	}
	client->replies_count++;
	switch (client->state) {
	case SMTP_CLIENT_STATE_GREETING:
		on_greeting(client, reply);
		break;
	case SMTP_CLIENT_STATE_EHLO:
	case SMTP_CLIENT_STATE_HELO:
		on_helo(client, reply);
		break;
	case SMTP_CLIENT_STATE_STARTTLS:
		on_starttls(client, reply, bytes_follow);
		break;
	case SMTP_CLIENT_STATE_RSET:
	case SMTP_CLIENT_STATE_MAIL:
	case SMTP_CLIENT_STATE_RCPT:
		on_step(client, reply);
		break;
	case SMTP_CLIENT_STATE_DATA:
		on_data(client, reply, bytes_follow);
		break;
	case SMTP_CLIENT_STATE_DOT:
		if (client->prev_message != NULL)
			on_prev_dot(client, reply);
		else
			on_dot(client, reply);
		break;
	case SMTP_CLIENT_STATE_QUIT:
		session_close(client, client->quit_error);
		break;
	default: /* IDLE, TLS and BODY await nothing: reply_is_awaited was false */
		ENG_PANIC("smtp_client: reply awaited in a state that awaits none");
	}
}

/* ---- public API ----------------------------------------------------- */

void
smtp_client_init(struct smtp_client *client, const struct smtp_client_config *config,
		 uint64_t now_ms, void *event_ctx, smtp_client_event_fn *event_callback)
{
	ENG_ASSERT(client != NULL && config != NULL && event_callback != NULL);
	ENG_ASSERT(smtp_client_helo_name_is_valid(config->helo_name, config->helo_name_len));
	memset(client, 0, sizeof(*client));
	client->config = *config;
	memcpy(client->helo_name, config->helo_name, config->helo_name_len);
	client->config.helo_name = client->helo_name;
	client->event_callback = event_callback;
	client->event_ctx = event_ctx;
	smtp_reply_parser_init(&client->parser);
	smtp_ehlo_caps_init(&client->caps);
	client->state = SMTP_CLIENT_STATE_GREETING;
	client->quit_error = SMTP_CLIENT_ERROR_NONE;
	/* The greeting answers the connection: command 0, sent at connect. */
	client->commands_produced_count = 1;
	client->commands_sent_count = 1;
	deadline_refresh(client, now_ms);
	ENG_ASSERT(client->deadline_ms != SMTP_CLIENT_DEADLINE_NONE);
}

void
smtp_client_set_trace(struct smtp_client *client, void *trace_ctx,
		      smtp_client_trace_fn *trace_callback)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(!client->is_in_callback);
	client->trace_ctx = trace_ctx;
	client->trace_callback = trace_callback;
}

/* The message whose body goes out in BODY: the previous one behind a dot. */
static const struct smtp_message *
body_message(const struct smtp_client *client)
{
	const struct smtp_message *message =
		client->prev_message != NULL ? client->prev_message : client->message;

	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_BODY);
	ENG_ASSERT(message != NULL && client->body_sent_size < message->body_size);
	return message;
}

/* Body bytes still to send (BODY), else 0. */
static size_t
body_pending_size(const struct smtp_client *client)
{
	const struct smtp_message *message;

	if (client->state != SMTP_CLIENT_STATE_BODY)
		return 0;
	message = body_message(client);
	return message->body_size - client->body_sent_size;
}

size_t
smtp_client_output_size(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return body_pending_size(client) + commands_pending_size(client);
}

uint32_t
smtp_client_output(const struct smtp_client *client, struct iovec *iov, uint32_t iov_max)
{
	size_t body_size;
	size_t commands_size;
	uint32_t count = 0;

	ENG_ASSERT(client != NULL && iov != NULL);
	ENG_ASSERT(iov_max >= 1);
	body_size = body_pending_size(client);
	commands_size = commands_pending_size(client);
	if (body_size > 0) {
		/* Zero-copy: the iovec points into the borrowed body. */
		const uint8_t *body = body_message(client)->body + client->body_sent_size;

		iov[count].iov_base = (void *)(uintptr_t)body;
		iov[count].iov_len = body_size;
		count++;
	}
	if (commands_size > 0 && count < iov_max) {
		/* Behind a dot, the next transaction follows the body. */
		iov[count].iov_base = (void *)(uintptr_t)(client->out_buf + client->out_head);
		iov[count].iov_len = commands_size;
		count++;
	}
	ENG_ASSERT(count <= 2u && count <= iov_max);
	return count;
}

/* Sent body bytes; the last one completes the body "command". */
static void
consume_body(struct smtp_client *client, size_t sent_size)
{
	const struct smtp_message *message = body_message(client);

	ENG_ASSERT(sent_size <= message->body_size - client->body_sent_size);
	client->body_sent_size += sent_size;
	if (client->body_sent_size < message->body_size)
		return;
	client->commands_sent_count++;
	ENG_ASSERT(client->commands_sent_count == client->commands_produced_count ||
		   client->prev_message != NULL);
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_DOT);
}

/* Sent command bytes: count the LFs (one per command), then compact. No
 * send is in flight during consume(), so moving bytes is safe here. */
static void
consume_commands(struct smtp_client *client, size_t sent_size)
{
	const char *ptr = client->out_buf + client->out_head;
	const char *end = ptr + sent_size;
	size_t pending;

	ENG_ASSERT(sent_size <= commands_pending_size(client));
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_BODY);
	while (ptr < end) {
		const char *lf = memchr(ptr, '\n', (size_t)(end - ptr));

		if (lf == NULL)
			break;
		client->commands_sent_count++;
		ptr = lf + 1;
	}
	ENG_ASSERT(client->commands_sent_count <= client->commands_produced_count);
	client->out_head += (uint32_t)sent_size;
	pending = commands_pending_size(client);
	if (pending > 0 && client->out_head > 0)
		memmove(client->out_buf, client->out_buf + client->out_head, pending);
	client->out_head = 0;
	client->out_used = (uint32_t)pending;
}

void
smtp_client_consume(struct smtp_client *client, size_t sent_size, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(!client->is_in_callback);
	if (client->state == SMTP_CLIENT_STATE_CLOSED)
		return;
	ENG_ASSERT(sent_size <= smtp_client_output_size(client));
	if (sent_size == 0)
		return;
	if (client->state == SMTP_CLIENT_STATE_BODY) {
		/* The body first; behind a dot the next commands follow it. */
		size_t body_size = ENG_MIN(sent_size, body_pending_size(client));

		consume_body(client, body_size);
		sent_size -= body_size;
		ENG_ASSERT(sent_size == 0 || client->state == SMTP_CLIENT_STATE_DOT);
	}
	if (sent_size > 0)
		consume_commands(client, sent_size);
	if ((client->state >= SMTP_CLIENT_STATE_RSET && client->state <= SMTP_CLIENT_STATE_DATA) ||
	    client->prev_message != NULL)
		steps_produce(client);
	deadline_refresh(client, now_ms);
}

void
smtp_client_feed(struct smtp_client *client, const uint8_t *ptr, size_t len, uint64_t now_ms)
{
	size_t pos = 0;

	ENG_ASSERT(client != NULL && !client->is_in_callback);
	ENG_ASSERT(ptr != NULL || len == 0);
	/* Bounded: every pass takes at least one byte, or stops. */
	while (pos < len && client->state != SMTP_CLIENT_STATE_CLOSED) {
		size_t consumed = 0;
		enum smtp_parse_result result;

		if (client->state == SMTP_CLIENT_STATE_TLS) {
			/* Plaintext while the handshake is owed: injection. */
			session_fail(client, SMTP_CLIENT_ERROR_TLS_INJECTION,
				     SMTP_REPLY_ERROR_NONE, NULL);
			break;
		}
		if (smtp_reply_parser_is_between_replies(&client->parser))
			client->reply_is_awaited =
				client->replies_count < client->commands_sent_count;
		result = smtp_reply_parse(&client->parser, ptr + pos, len - pos, &consumed);
		pos += consumed;
		if (result == SMTP_PARSE_AGAIN)
			break;
		if (result == SMTP_PARSE_ERROR) {
			session_fail(client, SMTP_CLIENT_ERROR_MALFORMED_REPLY,
				     client->parser.error, NULL);
			break;
		}
		ENG_ASSERT(consumed > 0);
		reply_dispatch(client, &client->parser.reply, pos < len);
		if (client->state != SMTP_CLIENT_STATE_CLOSED)
			deadline_refresh(client, now_ms);
	}
	ENG_ASSERT(pos <= len);
}

uint64_t
smtp_client_deadline_ms(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state != SMTP_CLIENT_STATE_CLOSED ||
		   client->deadline_ms == SMTP_CLIENT_DEADLINE_NONE);
	return client->deadline_ms;
}

bool
smtp_client_timeout(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(!client->is_in_callback);
	if (client->state == SMTP_CLIENT_STATE_CLOSED ||
	    client->deadline_ms == SMTP_CLIENT_DEADLINE_NONE || now_ms < client->deadline_ms)
		return false;
	session_fail(client, SMTP_CLIENT_ERROR_TIMEOUT, SMTP_REPLY_ERROR_NONE, NULL);
	return true;
}

void
smtp_client_connection_lost(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(!client->is_in_callback);
	(void)now_ms;
	if (client->state == SMTP_CLIENT_STATE_CLOSED)
		return;
	session_fail(client, SMTP_CLIENT_ERROR_CONNECTION_LOST, SMTP_REPLY_ERROR_NONE, NULL);
}

/* Address bytes the session refuses to put in a command: controls (CR, LF
 * and NUL among them), DEL, and the brackets that would end the path
 * early. Non-ASCII sets *has_8bit (SMTPUTF8 is then needed). */
static bool
address_is_valid(const struct smtp_address *address, bool may_be_empty, bool *has_8bit)
{
	size_t index;

	ENG_ASSERT(address != NULL && has_8bit != NULL);
	ENG_ASSERT(address->ptr != NULL || address->len == 0);
	if (address->len > SMTP_ADDRESS_SIZE_MAX || (address->len == 0 && !may_be_empty))
		return false;
	for (index = 0; index < address->len; index++) {
		unsigned char c = (unsigned char)address->ptr[index];

		if (c < 0x20 || c == 0x7f || c == '<' || c == '>')
			return false;
		if (c >= 0x80)
			*has_8bit = true;
	}
	return true;
}

/* Local reasons to refuse the message before sending a byte, or NULL. */
static const struct local_status *
message_refusal(struct smtp_client *client, const struct smtp_message *message)
{
	bool has_8bit = false;
	uint32_t index;

	ENG_ASSERT(message->rcpt_count >= 1);
	ENG_ASSERT(message->rcpt_count <= SMTP_RCPTS_PER_TRANSACTION_MAX);
	if (!address_is_valid(&message->sender, true, &has_8bit))
		return &local_bad_sender;
	for (index = 0; index < message->rcpt_count; index++) {
		if (!address_is_valid(&message->rcpts[index], false, &has_8bit))
			return &local_bad_rcpt;
	}
	client->message_needs_smtputf8 = message->needs_smtputf8 || has_8bit;
	if (client->message_needs_smtputf8 && !smtp_ehlo_has(&client->caps, SMTP_EXT_SMTPUTF8))
		return &local_no_smtputf8;
	client->message_size = message->size != 0 ? message->size : message->body_size;
	if (smtp_ehlo_has(&client->caps, SMTP_EXT_SIZE) && client->caps.size_max != 0 &&
	    client->message_size > client->caps.size_max)
		return &local_too_big;
	return NULL;
}

bool
smtp_client_start_message(struct smtp_client *client, const struct smtp_message *message,
			  uint64_t now_ms)
{
	const struct local_status *refusal;
	bool is_behind_dot;

	ENG_ASSERT(client != NULL && message != NULL && !client->is_in_callback);
	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_IDLE || smtp_client_may_pipeline(client));
	ENG_ASSERT(message->body != NULL && message->body_size >= BODY_END_SIZE);
	ENG_ASSERT(memcmp(message->body + message->body_size - BODY_END_SIZE, BODY_END,
			  BODY_END_SIZE) == 0);
	ENG_ASSERT(message->rcpts != NULL);
	ENG_DEBUG_ASSERT(message->body_size == BODY_END_SIZE ||
			 message->body[message->body_size - BODY_END_SIZE - 1u] == '\n');
	refusal = message_refusal(client, message);
	if (refusal != NULL) {
		const struct smtp_message *refused = message;
		struct smtp_status status;

		status_from_local(refusal, &status);
		emit_final_of(client, &refused, SMTP_EV_MESSAGE_FAILED, &status,
			      SMTP_CLIENT_ERROR_NONE, false);
		return false;
	}
	is_behind_dot = client->state != SMTP_CLIENT_STATE_IDLE;
	if (is_behind_dot)
		client->prev_message = client->message; /* awaits its end-of-data reply */
	client->message = message;
	client->rcpt_count = message->rcpt_count;
	client->rcpts_accepted_count = 0;
	client->is_dot_only = false;
	client->mail_is_refused = false;
	client->step_produced_count =
		client->rset_is_needed && !is_behind_dot ? STEP_RSET : STEP_MAIL;
	client->step_replied_count = client->step_produced_count;
	if (!is_behind_dot)
		smtp_client_enter_state(client, step_state(client, client->step_replied_count));
	steps_produce(client);
	ENG_ASSERT(client->step_produced_count > client->step_replied_count);
	if (!is_behind_dot) /* behind a dot the body's (or its reply's) deadline holds */
		deadline_refresh(client, now_ms);
	return true;
}

void
smtp_client_quit(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL && !client->is_in_callback);
	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_IDLE);
	client->quit_error = SMTP_CLIENT_ERROR_NONE;
	output_push_text(client, "QUIT\r\n");
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_QUIT);
	deadline_refresh(client, now_ms);
}

void
smtp_client_tls_started(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL && !client->is_in_callback);
	ENG_ASSERT(client->state == SMTP_CLIENT_STATE_TLS);
	ENG_ASSERT(commands_pending_size(client) == 0 && !client->is_tls);
	ENG_ASSERT(client->replies_count == client->commands_sent_count);
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	client->is_tls = true;
	smtp_ehlo_caps_init(&client->caps);
	client->is_pipelining = false;
	smtp_reply_parser_init(&client->parser);
	output_push_helo(client, "EHLO ");
	smtp_client_enter_state(client, SMTP_CLIENT_STATE_EHLO);
	deadline_refresh(client, now_ms);
}

void
smtp_client_tls_failed(struct smtp_client *client, uint64_t now_ms)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(!client->is_in_callback);
	(void)now_ms;
	if (client->state == SMTP_CLIENT_STATE_CLOSED)
		return;
	session_fail(client, SMTP_CLIENT_ERROR_TLS_FAILED, SMTP_REPLY_ERROR_NONE, NULL);
}

bool
smtp_client_is_tls(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return client->is_tls;
}

enum smtp_client_state
smtp_client_state(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return client->state;
}

bool
smtp_client_is_idle(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return client->state == SMTP_CLIENT_STATE_IDLE;
}

bool
smtp_client_may_pipeline(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return client->is_pipelining && client->prev_message == NULL &&
	       client->message != NULL && !client->is_dot_only &&
	       (client->state == SMTP_CLIENT_STATE_BODY || client->state == SMTP_CLIENT_STATE_DOT);
}

bool
smtp_client_is_closed(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return client->state == SMTP_CLIENT_STATE_CLOSED;
}

const struct smtp_ehlo_caps *
smtp_client_caps(const struct smtp_client *client)
{
	ENG_ASSERT(client != NULL);
	ENG_ASSERT(client->state < SMTP_CLIENT_STATE_COUNT);
	return &client->caps;
}
