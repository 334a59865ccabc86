/*
 * test_client_failures.c - smtp_client against a hostile or broken MX
 * (reliability.md 8.2): 421 at every phase (OUT-08), malformed and
 * unsolicited replies (OUT-02, OUT-07), all recipients rejected with 354
 * (OUT-06), local refusals (OUT-11, SIZE, SMTPUTF8), per-phase deadlines
 * and timeouts (OUT-09), lost connections, and assertion death tests for
 * engine misuse.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>

#include "t_smtp.h"

#define EHLO_PIPELINING                                                                  \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_LOCKSTEP "250-mx.example.com\r\n250 SIZE 1000\r\n"
#define BODY "Subject: x\r\n\r\nbody\r\n.\r\n"
#define SENDER "s@example.com"

static struct t_message message;

/* Handshake, then start a pipelined message of count recipients, batch sent. */
static struct t_session *
start_pipelined(uint32_t count)
{
	t_message_init(&message, SENDER, count, BODY);
	return t_session_started(EHLO_PIPELINING, &message);
}

/* The message failed with code (local or not), then ERROR error, CLOSED. */
static void
expect_failed_and_closed(struct t_session *t, uint16_t code, bool is_local,
			 enum smtp_client_error error)
{
	const struct t_event *event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);

	cr_assert_eq(event->code, code, "message failed with %u", event->code);
	cr_assert_eq(event->is_local, is_local);
	cr_assert_eq(event->message, &message.message);
	cr_assert_eq(event->error, error);
	cr_assert_eq(event->code / 100, 4, "failures that close the session defer");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, error);
	cr_assert_eq(t_next_event(t, SMTP_EV_CLOSED)->error, error);
	t_expect_no_event(t);
	cr_assert(smtp_client_is_closed(&t->client));
	cr_assert_eq(smtp_client_output_size(&t->client), 0);
	cr_assert_eq(smtp_client_deadline_ms(&t->client), SMTP_CLIENT_DEADLINE_NONE);
}

/* ---- 421 at every phase ---------------------------------------------- */

Test(smtp_client_421, at_greeting)
{
	struct t_session *t = t_session_new(NULL);
	const struct t_event *event;

	t_feed(t, "421 4.3.2 Service not available\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	cr_assert_eq(event->code, 421);
	cr_assert_not(event->is_local);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_421, at_mail_defers_the_whole_message)
{
	struct t_session *t = start_pipelined(3);

	t_feed(t, "421 4.7.0 Too many connections, closing\r\n");
	expect_failed_and_closed(t, 421, false, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_session_free(t);
}

/* The 550 before the 421 is void (MESSAGE_FAILED with an error): every
 * recipient is deferred (test_client_batch.c). */
Test(smtp_client_421, at_rcpt_voids_earlier_rcpt_replies)
{
	struct t_session *t = start_pipelined(3);

	t_feed(t, "250 ok\r\n550 5.1.1 unknown\r\n421 4.4.2 closing\r\n250 ok\r\n354 go\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 550);
	expect_failed_and_closed(t, 421, false, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_session_free(t);
}

Test(smtp_client_421, at_data)
{
	struct t_session *t = start_pipelined(1);

	t_feed(t, "250 ok\r\n250 ok\r\n421 4.3.0 shutting down\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 250);
	expect_failed_and_closed(t, 421, false, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_session_free(t);
}

Test(smtp_client_421, after_the_dot_outcome_is_known)
{
	struct t_session *t = start_pipelined(2);
	const struct t_event *event;

	t_feed(t, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, BODY);
	t_feed(t, "421 4.3.0 shutting down\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	t_next_event(t, SMTP_EV_RCPT);
	event = &t->events[t->event_read_index];
	cr_assert_not(event->outcome_is_unknown, "a 421 reply is a refusal, not a doubt");
	expect_failed_and_closed(t, 421, false, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_session_free(t);
}

Test(smtp_client_421, lockstep_at_mail)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_LOCKSTEP);
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	t_feed(t, "421 closing\r\n");
	expect_failed_and_closed(t, 421, false, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_session_free(t);
}

Test(smtp_client_421, unsolicited_while_idle_closes)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_feed(t, "421 4.4.2 idle timeout\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client_421, bytes_after_close_are_ignored)
{
	struct t_session *t = t_session_new(NULL);

	t_feed(t, "421 bye\r\n250 more\r\ngarbage");
	t_next_event(t, SMTP_EV_ERROR);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_feed(t, "250 still more\r\n");
	smtp_client_consume(&t->client, 100, t->now_ms); /* a send completing late */
	cr_assert_not(smtp_client_timeout(&t->client, UINT64_MAX - 1));
	smtp_client_connection_lost(&t->client, t->now_ms);
	t_expect_no_event(t);
	t_session_free(t);
}

/* ---- protocol errors --------------------------------------------------- */

Test(smtp_client_protocol, malformed_reply_during_rcpt)
{
	struct t_session *t = start_pipelined(2);
	const struct t_event *event;

	t_feed(t, "250 ok\r\n250 ok\r\n25O bad\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	event = &t->events[t->event_read_index];
	cr_assert_eq(event->enhanced.status_class, 4);
	cr_assert_eq(event->enhanced.subject, 5);
	cr_assert_eq(event->enhanced.detail, 0);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_MALFORMED_REPLY);
	cr_assert_eq(t->events[t->event_count - 2].reply_error, SMTP_REPLY_ERROR_CODE);
	t_session_free(t);
}

Test(smtp_client_protocol, code_change_inside_multiline_ehlo)
{
	struct t_session *t = t_session_new(NULL);
	const struct t_event *event;

	t_feed(t, "220 mx\r\n");
	t_flush(t);
	t_feed(t, "250-mx.example.com\r\n251 PIPELINING\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_MALFORMED_REPLY);
	cr_assert_eq(event->reply_error, SMTP_REPLY_ERROR_CODE_CHANGED);
	cr_assert(event->is_local);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client_protocol, bare_lf_reply)
{
	struct t_session *t = t_session_new(NULL);

	t_feed(t, "220 mx ready\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->reply_error, SMTP_REPLY_ERROR_BARE_LF);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_protocol, unsolicited_reply_while_idle)
{
	struct t_session *t = t_session_new(NULL);
	const struct t_event *event;

	t_handshake(t, EHLO_PIPELINING);
	t_feed(t, "250 surprise\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	cr_assert_eq(event->code, 250);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_protocol, extra_reply_after_greeting_in_the_same_write)
{
	struct t_session *t = t_session_new(NULL);

	t_feed(t, "220 mx ready\r\n250-evil\r\n250 PIPELINING\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_protocol, lockstep_extra_reply_is_never_shifted)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_LOCKSTEP);
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	t_feed(t, "250 ok\r\n250 ok\r\n");
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	t_session_free(t);
}

Test(smtp_client_protocol, reply_before_the_command_was_sent)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_feed(t, "250 ok\r\n"); /* nothing was consumed yet */
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	t_session_free(t);
}

Test(smtp_client_protocol, early_reply_while_the_body_is_sent)
{
	struct t_session *t = start_pipelined(1);

	t->send_chunk_size = 0;
	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	smtp_client_consume(&t->client, 3, t->now_ms);
	t_feed(t, "552 5.3.4 too big\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	t_session_free(t);
}

Test(smtp_client_protocol, intermediate_reply_to_mail)
{
	struct t_session *t = start_pipelined(1);

	t_feed(t, "354 what\r\n");
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	t_session_free(t);
}

Test(smtp_client_protocol, positive_reply_to_data)
{
	struct t_session *t = start_pipelined(1);

	t_feed(t, "250 ok\r\n250 ok\r\n250 ok\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	t_session_free(t);
}

/* ---- rejections that keep the session -------------------------------- */

Test(smtp_client_reject, all_rcpts_rejected_then_354_sends_only_the_dot)
{
	struct t_session *t = start_pipelined(2);
	const struct t_event *event;

	t_feed(t, "250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n354 go ahead anyway\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 550);
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 550);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, ".\r\n");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_DOT);
	t_feed(t, "554 5.5.1 no valid recipients\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 554);
	cr_assert(event->is_local);
	cr_assert_not(event->outcome_is_unknown);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	/* The reply to the lone dot ended the transaction: no RSET. */
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	cr_assert(memcmp(t->sent, "MAIL FROM:", 10) == 0);
	t_session_free(t);
}

Test(smtp_client_reject, all_rcpts_rejected_then_data_refused)
{
	struct t_session *t = start_pipelined(1);
	const struct t_event *event;

	t_feed(t, "250 ok\r\n550 no\r\n554 5.5.1 Error: no valid recipients\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 554);
	cr_assert_not(event->is_local);
	t_next_event(t, SMTP_EV_READY);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_reject, all_rcpts_rejected_lockstep_sends_no_data)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_LOCKSTEP);
	t_message_init(&message, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	t->sent_size = 0;
	t_feed(t, "450 4.2.1 try later\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 450);
	cr_assert(t_next_event(t, SMTP_EV_MESSAGE_FAILED)->is_local);
	t_next_event(t, SMTP_EV_READY);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_reject, mail_rejected_pipelined_drains_the_batch)
{
	struct t_session *t = start_pipelined(2);
	const struct t_event *event;

	/* The refusal is held until the batch is drained in step. */
	t_feed(t, "550 5.7.1 sender rejected\r\n");
	t_expect_no_event(t);
	t_feed(t, "503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n");
	t_expect_no_event(t);
	t_feed(t, "503 5.5.1 need RCPT\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 550);
	cr_assert_not(event->is_local);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_NONE);
	cr_assert_eq(event->text_size, strlen("5.7.1 sender rejected"));
	cr_assert(memcmp(event->text, "5.7.1 sender rejected", event->text_size) == 0);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_reject, mail_rejected_then_rcpt_accepted_is_nonsense)
{
	struct t_session *t = start_pipelined(1);

	/* Out of step: the 550 may have been another command's, so it is
	 * void (a 4xx with an error: deferred, not bounced). */
	t_feed(t, "550 no\r\n250 ok\r\n");
	const struct t_event *event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 451);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_reject, mail_rejected_lockstep)
{
	struct t_session *t;

	t_message_init(&message, SENDER, 3, BODY);
	t = t_session_started(EHLO_LOCKSTEP, &message);
	t_feed(t, "451 4.3.0 try later\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_FAILED)->code, 451);
	t_next_event(t, SMTP_EV_READY);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_reject, final_reply_refuses_the_message)
{
	struct t_session *t = start_pipelined(1);
	const struct t_event *event;

	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	t_flush(t);
	t_feed(t, "552 5.3.4 message too big\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 552);
	cr_assert_eq(event->enhanced.subject, 3);
	t_next_event(t, SMTP_EV_READY);
	t_session_free(t);
}

Test(smtp_client_reject, rset_rejected_closes_and_defers)
{
	struct t_session *t = start_pipelined(1);
	const struct t_event *event;

	/* DATA refused: the transaction ended without an end-of-data reply,
	 * so the next one starts with RSET. */
	t_feed(t, "250 ok\r\n250 ok\r\n554 5.5.1 no DATA\r\n");
	t->event_read_index = t->event_count;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	cr_assert(memcmp(t->sent, "RSET\r\nMAIL FROM:", 16) == 0);
	t_feed(t, "500 5.5.1 what is RSET\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, 451);
	cr_assert(event->is_local);
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_RSET_REJECTED);
	cr_assert_eq(event->code, 500);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_reject, greeting_554_then_quit)
{
	struct t_session *t = t_session_new(NULL);
	const struct t_event *event;

	t_feed(t, "554 5.7.1 no service for you\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_GREETING_REJECTED);
	cr_assert_eq(event->code, 554);
	t_flush(t);
	T_EXPECT_SENT(t, "QUIT\r\n");
	t_feed(t, "221 bye\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_CLOSED)->error, SMTP_CLIENT_ERROR_GREETING_REJECTED);
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client_reject, ehlo_4xx_then_quit)
{
	struct t_session *t = t_session_new(NULL);

	t_feed(t, "220 mx\r\n");
	t_flush(t);
	t_feed(t, "451 4.3.0 later\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_HELO_REJECTED);
	t->sent_size = 0;
	t_flush(t);
	T_EXPECT_SENT(t, "QUIT\r\n");
	t_feed(t, "221 bye\r\n");
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

/* ---- local refusals ---------------------------------------------------- */

static void
expect_refused(struct t_session *t, uint16_t code, uint16_t subject, uint16_t detail)
{
	const struct t_event *event;

	cr_assert_not(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->code, code);
	cr_assert(event->is_local);
	cr_assert_eq(event->enhanced.status_class, code / 100);
	cr_assert_eq(event->enhanced.subject, subject);
	cr_assert_eq(event->enhanced.detail, detail);
	cr_assert_eq(event->message, &message.message);
	t_expect_no_event(t);
	cr_assert(smtp_client_is_idle(&t->client));
	cr_assert_eq(smtp_client_output_size(&t->client), 0, "nothing is sent");
}

Test(smtp_client_refuse, message_over_server_size)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 2, BODY);
	message.message.size = 1001;
	expect_refused(t, 552, 3, 4);
	message.message.size = 1000;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_session_free(t);
}

Test(smtp_client_refuse, body_size_counts_when_size_is_zero)
{
	static char big[1100];
	struct t_session *t = t_session_new(NULL);

	memset(big, 'x', sizeof(big) - 6);
	memcpy(big + sizeof(big) - 6, "\r\n.\r\n", 6);
	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, big);
	expect_refused(t, 552, 3, 4);
	t_session_free(t);
}

Test(smtp_client_refuse, crlf_in_recipient)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 3, BODY);
	message.rcpts[1].ptr = "a@b>\r\nRCPT TO:<evil@x";
	message.rcpts[1].len = strlen(message.rcpts[1].ptr);
	expect_refused(t, 553, 1, 3);
	message.rcpts[1].ptr = "a@b\nx";
	message.rcpts[1].len = 5;
	expect_refused(t, 553, 1, 3);
	message.rcpts[1].ptr = "a@b\rx";
	expect_refused(t, 553, 1, 3);
	message.rcpts[1].ptr = "a@b>x";
	expect_refused(t, 553, 1, 3);
	message.rcpts[1].len = 0;
	expect_refused(t, 553, 1, 3);
	t_session_free(t);
}

Test(smtp_client_refuse, nul_or_lf_in_sender)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	message.message.sender.ptr = "s@x\0y";
	message.message.sender.len = 5;
	expect_refused(t, 553, 1, 7);
	message.message.sender.ptr = "s@x\n";
	message.message.sender.len = 4;
	expect_refused(t, 553, 1, 7);
	t_session_free(t);
}

Test(smtp_client_refuse, overlong_address)
{
	static char longest[SMTP_ADDRESS_SIZE_MAX + 1];
	struct t_session *t = t_session_new(NULL);

	memset(longest, 'a', sizeof(longest));
	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	message.rcpts[0].ptr = longest;
	message.rcpts[0].len = sizeof(longest);
	expect_refused(t, 553, 1, 3);
	message.rcpts[0].len = SMTP_ADDRESS_SIZE_MAX;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_session_free(t);
}

Test(smtp_client_refuse, smtputf8_needed_but_not_offered)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	message.message.needs_smtputf8 = true;
	expect_refused(t, 554, 6, 7);
	message.message.needs_smtputf8 = false;
	message.rcpts[0].ptr = "j\xc3\xb6rg@example.de";
	message.rcpts[0].len = strlen(message.rcpts[0].ptr);
	expect_refused(t, 554, 6, 7);
	t_session_free(t);
}

/* ---- deadlines and timeouts ------------------------------------------- */

static void
distinct_timeouts(struct smtp_client_config *config)
{
	t_default_config(config);
	config->timeouts.greeting_ms = 1001;
	config->timeouts.helo_ms = 1002;
	config->timeouts.rset_ms = 1003;
	config->timeouts.mail_ms = 1004;
	config->timeouts.rcpt_ms = 1005;
	config->timeouts.data_ms = 1006;
	config->timeouts.data_block_ms = 1007;
	config->timeouts.dot_ms = 1008;
	config->timeouts.quit_ms = 1009;
}

static void
expect_deadline(struct t_session *t, uint64_t deadline_ms)
{
	uint64_t deadline = smtp_client_deadline_ms(&t->client);

	cr_assert_eq(deadline, deadline_ms, "deadline %lu, want %lu", (unsigned long)deadline,
		     (unsigned long)deadline_ms);
}

Test(smtp_client_timeout, defaults_follow_rfc5321)
{
	struct smtp_client_timeouts timeouts;

	smtp_client_timeouts_default(&timeouts);
	cr_assert_eq(timeouts.greeting_ms, 300000);
	cr_assert_eq(timeouts.mail_ms, 300000);
	cr_assert_eq(timeouts.rcpt_ms, 300000);
	cr_assert_eq(timeouts.data_ms, 120000);
	cr_assert_eq(timeouts.data_block_ms, 180000);
	cr_assert_eq(timeouts.dot_ms, 600000);
}

Test(smtp_client_timeout, every_phase_has_its_deadline)
{
	struct smtp_client_config config;
	struct t_session *t;

	distinct_timeouts(&config);
	t = t_session_new(&config);
	expect_deadline(t, T_START_MS + 1001);
	t->now_ms += 10;
	t_feed(t, "220 mx\r\n");
	expect_deadline(t, t->now_ms + 1002);
	t_flush(t);
	t_feed(t, "250-mx\r\n250 PIPELINING\r\n");
	expect_deadline(t, SMTP_CLIENT_DEADLINE_NONE);
	t->now_ms += 100;
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	expect_deadline(t, t->now_ms + 1004);
	t->now_ms += 5;
	t_flush(t);
	expect_deadline(t, t->now_ms + 1004);
	t->now_ms += 7;
	t_feed(t, "250 ok\r\n");
	expect_deadline(t, t->now_ms + 1005);
	t_feed(t, "250 ok\r\n25");
	expect_deadline(t, t->now_ms + 1005);
	t->now_ms += 3;
	t_feed(t, "0 ok\r\n");
	expect_deadline(t, t->now_ms + 1006);
	t_feed(t, "354 go\r\n");
	expect_deadline(t, t->now_ms + 1007);
	t->send_chunk_size = 4;
	t->now_ms += 1;
	smtp_client_consume(&t->client, 4, t->now_ms);
	expect_deadline(t, t->now_ms + 1007);
	t->now_ms += 1;
	t_flush(t);
	expect_deadline(t, t->now_ms + 1008);
	cr_assert_not(smtp_client_timeout(&t->client, t->now_ms + 1007), "stale timer");
	t_session_free(t);
}

Test(smtp_client_timeout, partial_reply_does_not_renew_the_deadline)
{
	struct t_session *t = t_session_new(NULL);
	uint64_t deadline = smtp_client_deadline_ms(&t->client);

	t->now_ms += 1000;
	t_feed(t, "220 slow");
	expect_deadline(t, deadline);
	cr_assert(smtp_client_timeout(&t->client, deadline));
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_TIMEOUT);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_timeout, after_the_dot_outcome_is_unknown)
{
	struct t_session *t = start_pipelined(1);
	const struct t_event *event;
	uint64_t deadline;

	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	t_flush(t);
	deadline = smtp_client_deadline_ms(&t->client);
	cr_assert_eq(deadline, t->now_ms + 600000);
	cr_assert_not(smtp_client_timeout(&t->client, deadline - 1));
	cr_assert(smtp_client_timeout(&t->client, deadline));
	t_next_event(t, SMTP_EV_RCPT);
	event = &t->events[t->event_read_index];
	cr_assert(event->outcome_is_unknown);
	cr_assert_eq(event->enhanced.subject, 4);
	cr_assert_eq(event->enhanced.detail, 2);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_TIMEOUT);
	t_session_free(t);
}

Test(smtp_client_timeout, at_rcpt_outcome_is_known)
{
	struct t_session *t = start_pipelined(2);

	t_feed(t, "250 ok\r\n250 ok\r\n");
	cr_assert(smtp_client_timeout(&t->client, UINT64_MAX - 1));
	t_next_event(t, SMTP_EV_RCPT);
	cr_assert_not(t->events[t->event_read_index].outcome_is_unknown);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_TIMEOUT);
	t_session_free(t);
}

Test(smtp_client_timeout, in_quit_just_closes)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	smtp_client_quit(&t->client, t->now_ms);
	t_flush(t);
	cr_assert(smtp_client_timeout(&t->client, t->now_ms + 300000));
	cr_assert_eq(t_next_event(t, SMTP_EV_CLOSED)->error, SMTP_CLIENT_ERROR_NONE);
	t_expect_no_event(t);
	t_session_free(t);
}

/* ---- lost connection -------------------------------------------------- */

Test(smtp_client_lost, after_the_dot_outcome_is_unknown)
{
	struct t_session *t = start_pipelined(1);

	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	t_flush(t);
	smtp_client_connection_lost(&t->client, t->now_ms);
	t_next_event(t, SMTP_EV_RCPT);
	cr_assert(t->events[t->event_read_index].outcome_is_unknown);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_CONNECTION_LOST);
	t_session_free(t);
}

Test(smtp_client_lost, during_the_body_outcome_is_known)
{
	struct t_session *t = start_pipelined(1);

	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	smtp_client_consume(&t->client, 5, t->now_ms);
	smtp_client_connection_lost(&t->client, t->now_ms);
	t_next_event(t, SMTP_EV_RCPT);
	cr_assert_not(t->events[t->event_read_index].outcome_is_unknown);
	expect_failed_and_closed(t, 451, true, SMTP_CLIENT_ERROR_CONNECTION_LOST);
	t_session_free(t);
}

Test(smtp_client_lost, while_idle)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	smtp_client_connection_lost(&t->client, t->now_ms);
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, SMTP_CLIENT_ERROR_CONNECTION_LOST);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_session_free(t);
}

/* ---- engine misuse is a programmer error ------------------------------ */

Test(smtp_client_misuse, reentering_from_the_callback_aborts, .signal = SIGABRT)
{
	struct t_session *t = t_session_new(NULL);

	t_message_init(&message, SENDER, 1, BODY);
	t->reenter_on_ready = true;
	t->reenter_message = &message.message;
	t_handshake(t, EHLO_PIPELINING);
}

Test(smtp_client_misuse, start_when_not_idle_aborts, .signal = SIGABRT)
{
	struct t_session *t = t_session_new(NULL);

	t_message_init(&message, SENDER, 1, BODY);
	(void)smtp_client_start_message(&t->client, &message.message, t->now_ms);
}

Test(smtp_client_misuse, zero_recipients_aborts, .signal = SIGABRT)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 0, BODY);
	(void)smtp_client_start_message(&t->client, &message.message, t->now_ms);
}

Test(smtp_client_misuse, body_without_terminator_aborts, .signal = SIGABRT)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, "no terminator\r\n");
	(void)smtp_client_start_message(&t->client, &message.message, t->now_ms);
}

Test(smtp_client_misuse, consume_more_than_output_aborts, .signal = SIGABRT)
{
	struct t_session *t = t_session_new(NULL);

	t_feed(t, "220 mx\r\n");
	smtp_client_consume(&t->client, smtp_client_output_size(&t->client) + 1, t->now_ms);
}
