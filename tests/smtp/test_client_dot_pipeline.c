/*
 * test_client_dot_pipeline.c - smtp_client with the next transaction
 * pipelined behind the dot (RFC 2920 3.1, docs/smtp-client.md): the exact
 * bytes of the one output carrying body, dot and MAIL..DATA, events in
 * order with the replies split at every byte, the previous message's 5xx
 * leaving the next one alone, failures (421, lost connection, timeout)
 * failing both messages once each, local refusals behind the dot, RSET
 * only after a transaction that ended without an end-of-data reply, and a
 * lock-step server that never gets a message behind the dot.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "t_smtp.h"

#define EHLO_PIPELINING                                                                  \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_LOCKSTEP "250-mx.example.com\r\n250 SIZE 100000\r\n"
#define BODY1 "Subject: one\r\n\r\nfirst\r\n..dot\r\n.\r\n"
#define BODY2 "second\r\n.\r\n"
#define SENDER1 "a@example.com"
#define SENDER2 "b@example.com"
/* The second transaction: MAIL, two RCPTs, DATA, behind the first dot. */
#define BATCH2                                                                           \
	"MAIL FROM:<" SENDER2 "> SIZE=11\r\nRCPT TO:<r0@rcpt.example>\r\n"                \
	"RCPT TO:<r1@rcpt.example>\r\nDATA\r\n"
/* Replies after the first body: its end-of-data reply, then the second
 * transaction's. */
#define REPLIES_BEHIND_DOT "250 2.0.0 queued one\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n"

static struct t_message message1;
static struct t_message message2;

/* A session after EHLO (ehlo's capabilities) whose first transaction, for
 * message1, has gone out; nothing fed yet and the sent bytes forgotten. */
static struct t_session *
start_batch(const char *ehlo)
{
	t_message_init(&message1, SENDER1, 1, BODY1);
	return t_session_started(ehlo, &message1);
}

/* Handshake, message1 (one recipient) sent and answered up to its 354:
 * the slot is open, message2 (two recipients) not started yet. */
static struct t_session *
start_first(const char *ehlo)
{
	struct t_session *t = start_batch(ehlo);

	t->record_slots = true;
	t_message_init(&message2, SENDER2, 2, BODY2);
	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->message, &message1.message);
	return t;
}

/* start_first, then message2 behind the dot, everything sent. */
static struct t_session *
start_both(void)
{
	struct t_session *t = start_first(EHLO_PIPELINING);

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, BODY1 BATCH2);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_DOT);
	t_expect_no_event(t);
	return t;
}

Test(smtp_client_dot_pipeline, one_output_carries_body_dot_and_the_next_batch)
{
	struct t_session *t = start_first(EHLO_PIPELINING);
	struct iovec iov[4];
	const struct t_event *event;

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	t_expect_no_event(t);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	cr_assert(smtp_client_may_pipeline(&t->client));
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	cr_assert_not(smtp_client_may_pipeline(&t->client), "never two behind a dot");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	/* Two iovecs: the body zero-copy, then the commands; no RSET. */
	cr_assert_eq(smtp_client_output(&t->client, iov, 4), 2);
	cr_assert_eq(iov[0].iov_base, message1.message.body);
	cr_assert_eq(iov[0].iov_len, sizeof(BODY1) - 1u);
	cr_assert_eq(iov[1].iov_len, sizeof(BATCH2) - 1u);
	cr_assert(memcmp(iov[1].iov_base, BATCH2, iov[1].iov_len) == 0);
	/* An engine with one iovec gets the body first. */
	cr_assert_eq(smtp_client_output(&t->client, iov, 1), 1);
	cr_assert_eq(iov[0].iov_base, message1.message.body);
	cr_assert_eq(smtp_client_output_size(&t->client), sizeof(BODY1 BATCH2) - 1u);
	t->outputs_count = 0;
	t_flush(t);
	T_EXPECT_SENT(t, BODY1 BATCH2);
	cr_assert_eq(t->outputs_count, 1, "one send");
	cr_assert_eq(t->outputs_two_count, 1);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_DOT);
	/* The old end-of-data reply first, then the new transaction's. */
	t_feed(t, REPLIES_BEHIND_DOT);
	event = t_next_event(t, SMTP_EV_MESSAGE_DONE);
	cr_assert_eq(event->message, &message1.message);
	cr_assert(memcmp(event->text, "2.0.0 queued one", event->text_size) == 0);
	event = t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(event->message, &message2.message);
	cr_assert_eq(event->code, 250);
	event = t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(event->rcpt_index, 1);
	cr_assert_eq(event->code, 550);
	cr_assert_eq(t_next_event(t, SMTP_EV_PIPELINE_SLOT)->message, NULL);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, BODY2);
	t_feed(t, "250 2.0.0 queued two\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message2.message);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>IDLE IDLE>MAIL MAIL>RCPT RCPT>DATA "
				   "DATA>BODY BODY>DOT DOT>MAIL MAIL>RCPT RCPT>DATA DATA>BODY "
				   "BODY>DOT DOT>IDLE ");
	/* Both transactions ended with an end-of-data reply: no RSET. */
	cr_assert(smtp_client_start_message(&t->client, &message1.message, t->now_ms));
	t_flush(t);
	cr_assert(memcmp(t->sent, "MAIL FROM:<" SENDER1 ">", 11 + sizeof(SENDER1)) == 0);
	t_session_free(t);
}

/* The two-transaction conversation, every reply fed in chunks of chunk
 * bytes, or the replies behind the dot cut in two at split (0: not). */
static struct t_session *
run_behind_dot(size_t chunk, size_t split)
{
	static const char *const replies[] = {
		"250 ok\r\n250 ok\r\n354 go\r\n", REPLIES_BEHIND_DOT, "250 queued two\r\n",
	};
	struct t_session *t = t_session_new(NULL);

	t->record_slots = true;
	t_handshake(t, EHLO_PIPELINING);
	cr_assert(smtp_client_start_message(&t->client, &message1.message, t->now_ms));
	for (size_t r = 0; r < sizeof(replies) / sizeof(replies[0]); r++) {
		size_t len = strlen(replies[r]);

		t_flush(t);
		if (r == 1 && split > 0) {
			t_feed_bytes(t, replies[r], split);
			t_feed_bytes(t, replies[r] + split, len - split);
		} else {
			for (size_t pos = 0; pos < len; pos += chunk)
				t_feed_bytes(t, replies[r] + pos,
					     len - pos < chunk ? len - pos : chunk);
		}
		if (r == 0)
			cr_assert(smtp_client_start_message(&t->client, &message2.message,
							    t->now_ms));
	}
	t_flush(t);
	return t;
}

static void
sessions_assert_equal(const struct t_session *a, const struct t_session *b, size_t variant)
{
	cr_assert_eq(a->event_count, b->event_count, "variant %zu: event count", variant);
	for (uint32_t i = 0; i < a->event_count; i++) {
		const struct t_event *x = &a->events[i];
		const struct t_event *y = &b->events[i];

		cr_assert_eq(x->type, y->type, "variant %zu event %u", variant, i);
		cr_assert_eq(x->message, y->message, "variant %zu event %u", variant, i);
		cr_assert_eq(x->rcpt_index, y->rcpt_index, "variant %zu event %u", variant, i);
		cr_assert_eq(x->code, y->code, "variant %zu event %u", variant, i);
	}
	cr_assert_eq(a->sent_size, b->sent_size, "variant %zu: bytes sent", variant);
	cr_assert(memcmp(a->sent, b->sent, a->sent_size) == 0, "variant %zu: sent", variant);
	cr_assert_str_eq(a->trace, b->trace, "variant %zu: trace", variant);
}

Test(smtp_client_dot_pipeline, replies_split_at_every_byte_give_the_same_events)
{
	static const enum smtp_event_type want[] = {
		SMTP_EV_READY,	      SMTP_EV_RCPT, SMTP_EV_PIPELINE_SLOT, SMTP_EV_MESSAGE_DONE,
		SMTP_EV_RCPT,	      SMTP_EV_RCPT, SMTP_EV_PIPELINE_SLOT, SMTP_EV_MESSAGE_DONE,
		SMTP_EV_READY,
	};
	struct t_session *whole;

	t_message_init(&message1, SENDER1, 1, BODY1);
	t_message_init(&message2, SENDER2, 2, BODY2);
	whole = run_behind_dot(1u << 20, 0);
	cr_assert_eq(whole->event_count, sizeof(want) / sizeof(want[0]));
	for (uint32_t i = 0; i < whole->event_count; i++)
		cr_assert_eq(whole->events[i].type, want[i], "event %u", i);
	cr_assert_eq(whole->events[3].message, &message1.message);
	cr_assert_eq(whole->events[7].message, &message2.message);
	for (size_t chunk = 1; chunk <= 7; chunk++) {
		struct t_session *t = run_behind_dot(chunk, 0);

		sessions_assert_equal(whole, t, chunk);
		t_session_free(t);
	}
	for (size_t split = 1; split < sizeof(REPLIES_BEHIND_DOT) - 1u; split++) {
		struct t_session *t = run_behind_dot(1u << 20, split);

		sessions_assert_equal(whole, t, 100 + split);
		t_session_free(t);
	}
	t_session_free(whole);
}

Test(smtp_client_dot_pipeline, short_sends_cross_from_the_body_into_the_batch)
{
	struct t_session *t = start_first(EHLO_PIPELINING);

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	t->send_chunk_size = 7;
	t_flush(t);
	T_EXPECT_SENT(t, BODY1 BATCH2);
	t_feed(t, REPLIES_BEHIND_DOT);
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message1.message);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, old_dot_5xx_leaves_the_next_transaction_alone)
{
	struct t_session *t = start_both();
	const struct t_event *event;

	t_feed(t, "554 5.7.1 content rejected\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->message, &message1.message);
	cr_assert_eq(event->code, 554);
	cr_assert_not(event->is_local);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_NONE);
	cr_assert_not(event->outcome_is_unknown);
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->message, &message2.message);
	t_next_event(t, SMTP_EV_RCPT);
	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	t_flush(t);
	T_EXPECT_SENT(t, BODY2);
	t_feed(t, "250 queued\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message2.message);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	t_session_free(t);
}

/* Both messages failed, oldest first, then ERROR and CLOSED. */
static void
expect_both_failed(struct t_session *t, enum smtp_client_error error, uint16_t code,
		   bool first_is_unknown)
{
	const struct t_event *event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);

	cr_assert_eq(event->message, &message1.message);
	cr_assert_eq(event->error, error);
	cr_assert_eq(event->code, code);
	cr_assert_eq(event->outcome_is_unknown, first_is_unknown);
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->message, &message2.message);
	cr_assert_eq(event->error, error);
	cr_assert_eq(event->code, code);
	cr_assert_not(event->outcome_is_unknown, "its body never went out");
	cr_assert_eq(t_next_event(t, SMTP_EV_ERROR)->error, error);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	cr_assert(smtp_client_is_closed(&t->client));
}

Test(smtp_client_dot_pipeline, reply_421_instead_of_the_old_dot_reply_fails_both)
{
	struct t_session *t = start_both();

	t_feed(t, "421 4.3.2 going down\r\n");
	expect_both_failed(t, SMTP_CLIENT_ERROR_SERVER_CLOSING, 421, false);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, reply_421_after_the_old_dot_reply_fails_only_the_new)
{
	struct t_session *t = start_both();
	const struct t_event *event;

	t_feed(t, "250 queued\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message1.message);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_MAIL);
	t_feed(t, "421 4.3.2 going down\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->message, &message2.message);
	cr_assert_eq(event->code, 421);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	cr_assert_not(event->outcome_is_unknown);
	t_next_event(t, SMTP_EV_ERROR);
	t_next_event(t, SMTP_EV_CLOSED);
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, lost_with_both_in_flight)
{
	struct t_session *t = start_both();

	smtp_client_connection_lost(&t->client, t->now_ms);
	expect_both_failed(t, SMTP_CLIENT_ERROR_CONNECTION_LOST, 451, true);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, lost_while_the_old_body_goes_out_is_known)
{
	struct t_session *t = start_first(EHLO_PIPELINING);

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	smtp_client_consume(&t->client, 5, t->now_ms);
	smtp_client_connection_lost(&t->client, t->now_ms);
	expect_both_failed(t, SMTP_CLIENT_ERROR_CONNECTION_LOST, 451, false);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, deadlines_follow_the_oldest_awaited_reply)
{
	struct smtp_client_timeouts timeouts;
	struct t_session *t = start_first(EHLO_PIPELINING);

	smtp_client_timeouts_default(&timeouts);
	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	cr_assert_eq(smtp_client_deadline_ms(&t->client), t->now_ms + timeouts.data_block_ms);
	t->now_ms += 1000;
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	cr_assert_eq(smtp_client_deadline_ms(&t->client),
		     t->now_ms - 1000 + timeouts.data_block_ms, "the body's deadline holds");
	t_flush(t);
	cr_assert_eq(smtp_client_deadline_ms(&t->client), t->now_ms + timeouts.dot_ms);
	cr_assert_not(smtp_client_timeout(&t->client, t->now_ms + timeouts.dot_ms - 1));
	t_expect_no_event(t);
	cr_assert(smtp_client_timeout(&t->client, t->now_ms + timeouts.dot_ms));
	expect_both_failed(t, SMTP_CLIENT_ERROR_TIMEOUT, 451, true);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, reply_while_the_old_body_goes_out_fails_both)
{
	struct t_session *t = start_first(EHLO_PIPELINING);

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	smtp_client_consume(&t->client, 5, t->now_ms);
	t_feed(t, "250 too early\r\n");
	expect_both_failed(t, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY, 451, false);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, local_refusal_behind_the_dot_keeps_the_slot)
{
	struct t_session *t = start_first(EHLO_PIPELINING);
	struct t_message big;
	const struct t_event *event;

	t_next_event(t, SMTP_EV_PIPELINE_SLOT);
	t_message_init(&big, SENDER2, 1, BODY2);
	big.message.size = 200000; /* over SIZE 100000 */
	cr_assert_not(smtp_client_start_message(&t->client, &big.message, t->now_ms));
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_eq(event->message, &big.message);
	cr_assert_eq(event->code, 552);
	cr_assert(event->is_local);
	t_expect_no_event(t);
	cr_assert(smtp_client_may_pipeline(&t->client));
	cr_assert_eq(smtp_client_output_size(&t->client), sizeof(BODY1) - 1u, "the body only");
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, BODY1 BATCH2);
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, rset_only_after_a_transaction_without_dot_reply)
{
	struct t_session *t = start_batch(EHLO_PIPELINING);

	/* MAIL refused: RCPT and DATA drained, DATA refused. */
	t_feed(t, "550 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_FAILED)->code, 550);
	t_next_event(t, SMTP_EV_READY);
	cr_assert_eq(t->slots_count, 0);
	cr_assert(smtp_client_start_message(&t->client, &message1.message, t->now_ms));
	t_flush(t);
	cr_assert(memcmp(t->sent, "RSET\r\nMAIL FROM:", 16) == 0, "RSET after a refused MAIL");
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, no_slot_behind_a_lone_dot)
{
	struct t_session *t = start_batch(EHLO_PIPELINING);

	t_feed(t, "250 ok\r\n550 5.1.1 no\r\n354 go anyway\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	t_expect_no_event(t);
	cr_assert_eq(t->slots_count, 0);
	cr_assert_not(smtp_client_may_pipeline(&t->client));
	t_flush(t);
	T_EXPECT_SENT(t, ".\r\n");
	cr_assert_not(smtp_client_may_pipeline(&t->client));
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, lockstep_server_never_gets_a_message_behind_the_dot)
{
	struct t_session *t = t_session_new(NULL);
	struct smtp_client_config config;

	t_message_init(&message1, SENDER1, 1, BODY1);
	t_handshake(t, EHLO_LOCKSTEP);
	cr_assert(smtp_client_start_message(&t->client, &message1.message, t->now_ms));
	for (int i = 0; i < 3; i++) {
		t_flush(t);
		t_feed(t, i < 2 ? "250 ok\r\n" : "354 go\r\n");
	}
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	cr_assert_eq(t->slots_count, 0);
	cr_assert_not(smtp_client_may_pipeline(&t->client));
	t_flush(t);
	cr_assert_not(smtp_client_may_pipeline(&t->client));
	t_session_free(t);
	/* PIPELINING offered but disabled by config: the same. */
	t_default_config(&config);
	config.pipelining_is_disabled = true;
	t = t_session_new(&config);
	t_handshake(t, EHLO_PIPELINING);
	cr_assert(smtp_client_start_message(&t->client, &message1.message, t->now_ms));
	for (int i = 0; i < 3; i++) {
		t_flush(t);
		t_feed(t, i < 2 ? "250 ok\r\n" : "354 go\r\n");
	}
	cr_assert_eq(t->slots_count, 0);
	cr_assert_not(smtp_client_may_pipeline(&t->client));
	t_session_free(t);
}

Test(smtp_client_dot_pipeline, a_third_message_behind_the_dot_aborts, .signal = SIGABRT)
{
	struct t_session *t = start_first(EHLO_PIPELINING);
	struct t_message third;

	t_message_init(&third, SENDER1, 1, BODY2);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	(void)smtp_client_start_message(&t->client, &third.message, t->now_ms);
}
