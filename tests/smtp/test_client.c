/*
 * test_client.c - smtp_client scripted conversations that succeed:
 * pipelined and lock-step transactions, HELO fallback, ESMTP parameters
 * (SIZE, BODY=8BITMIME, SMTPUTF8), several messages per connection with
 * RSET, large pipelined batches, short sends, and the same conversation
 * fed split at every byte boundary.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "t_smtp.h"

#define EHLO_PIPELINING                                                                  \
	"250-mx.example.com Hello\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n"            \
	"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"
#define EHLO_LOCKSTEP "250-mx.example.com Hello\r\n250-SIZE 10000000\r\n250 ENHANCEDSTATUSCODES\r\n"
#define BODY "Subject: test\r\n\r\nHello.\r\n..dot line\r\n.\r\n"
#define SENDER "sender@example.com"

static struct t_message message;
static struct t_message message2;

/* "MAIL FROM:<SENDER> SIZE=<body size>\r\n" */
static size_t
mail_line(char *out, size_t out_size, const struct smtp_message *m, const char *extra)
{
	int n = snprintf(out, out_size, "MAIL FROM:<%.*s> SIZE=%zu%s\r\n", (int)m->sender.len,
			 m->sender.ptr, m->body_size, extra);

	cr_assert(n > 0 && (size_t)n < out_size);
	return (size_t)n;
}

static void
expect_batch(struct t_session *t, const struct smtp_message *m, bool rset)
{
	char expected[4096];
	size_t len = 0;

	if (rset)
		len += (size_t)snprintf(expected, sizeof(expected), "RSET\r\n");
	len += mail_line(expected + len, sizeof(expected) - len, m, "");
	for (uint32_t i = 0; i < m->rcpt_count; i++)
		len += (size_t)snprintf(expected + len, sizeof(expected) - len,
					"RCPT TO:<%.*s>\r\n", (int)m->rcpts[i].len,
					m->rcpts[i].ptr);
	len += (size_t)snprintf(expected + len, sizeof(expected) - len, "DATA\r\n");
	t_flush(t);
	t_expect_sent(t, expected, len);
}

Test(smtp_client, pipelined_three_recipients_one_rejected)
{
	struct t_session *t = t_session_new(NULL);
	const struct t_event *event;

	t_handshake(t, EHLO_PIPELINING);
	cr_assert(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_PIPELINING));
	t_message_init(&message, SENDER, 3, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	expect_batch(t, &message.message, false);
	t_feed(t, "250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n"
		  "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	event = t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(event->rcpt_index, 0);
	cr_assert_eq(event->code, 250);
	cr_assert_eq(event->message, &message.message);
	event = t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(event->rcpt_index, 1);
	cr_assert_eq(event->code, 550);
	cr_assert_not(event->is_local);
	cr_assert_eq(event->enhanced.status_class, 5);
	cr_assert_eq(event->enhanced.subject, 1);
	cr_assert_eq(event->enhanced.detail, 1);
	cr_assert(memcmp(event->text, "5.1.1 No such user", event->text_size) == 0);
	event = t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(event->rcpt_index, 2);
	t_expect_no_event(t);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	t_flush(t);
	T_EXPECT_SENT(t, BODY);
	cr_assert_eq(t->last_iov_base, message.message.body, "the body is sent zero-copy");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_DOT);
	t_feed(t, "250 2.0.0 Ok: queued as ABC123\r\n");
	event = t_next_event(t, SMTP_EV_MESSAGE_DONE);
	cr_assert_eq(event->code, 250);
	cr_assert_eq(event->message, &message.message);
	cr_assert(memcmp(event->text, "2.0.0 Ok: queued as ABC123", event->text_size) == 0);
	t_next_event(t, SMTP_EV_READY);
	smtp_client_quit(&t->client, t->now_ms);
	t_flush(t);
	T_EXPECT_SENT(t, "QUIT\r\n");
	t_feed(t, "221 2.0.0 Bye\r\n");
	event = t_next_event(t, SMTP_EV_CLOSED);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_NONE);
	t_expect_no_event(t);
	cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>IDLE IDLE>MAIL MAIL>RCPT RCPT>DATA "
				   "DATA>BODY BODY>DOT DOT>IDLE IDLE>QUIT QUIT>CLOSED ");
	t_session_free(t);
}

/* The pipelined conversation with every server reply fed in chunks of
 * chunk bytes (split is where the batch reply is cut in two, 0: not). */
static void
run_pipelined(struct t_session *t, size_t chunk, size_t split)
{
	static const char batch[] = "250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n550-5.1.1 No\r\n"
				    "550 5.1.1 such user\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n";
	static const char *const replies[] = {
		"220 mx.example.com ESMTP\r\n", EHLO_PIPELINING, batch, "250 2.0.0 queued\r\n",
	};

	for (size_t r = 0; r < sizeof(replies) / sizeof(replies[0]); r++) {
		size_t len = strlen(replies[r]);

		t_flush(t);
		if (r == 2 && split > 0) {
			t_feed_bytes(t, replies[r], split);
			t_feed_bytes(t, replies[r] + split, len - split);
		} else {
			for (size_t pos = 0; pos < len; pos += chunk) {
				size_t size = len - pos < chunk ? len - pos : chunk;

				t_feed_bytes(t, replies[r] + pos, size);
			}
		}
		if (r == 1) {
			bool started = smtp_client_start_message(&t->client, &message.message,
								 t->now_ms);

			cr_assert(started);
		}
	}
	t_flush(t);
}

static void
events_assert_equal(const struct t_session *a, const struct t_session *b, size_t variant)
{
	cr_assert_eq(a->event_count, b->event_count, "variant %zu: event count", variant);
	for (uint32_t i = 0; i < a->event_count; i++) {
		const struct t_event *x = &a->events[i];
		const struct t_event *y = &b->events[i];

		cr_assert_eq(x->type, y->type, "variant %zu event %u", variant, i);
		cr_assert_eq(x->rcpt_index, y->rcpt_index, "variant %zu event %u", variant, i);
		cr_assert_eq(x->code, y->code, "variant %zu event %u", variant, i);
		cr_assert_eq(x->text_size, y->text_size, "variant %zu event %u", variant, i);
		cr_assert(memcmp(x->text, y->text, x->text_size) == 0, "variant %zu", variant);
	}
	cr_assert_eq(a->sent_size, b->sent_size, "variant %zu: bytes sent", variant);
	cr_assert(memcmp(a->sent, b->sent, a->sent_size) == 0, "variant %zu: sent", variant);
	cr_assert_str_eq(a->trace, b->trace, "variant %zu: trace", variant);
}

Test(smtp_client, conversation_split_at_every_byte_gives_the_same_events)
{
	struct t_session *whole = t_session_new(NULL);
	size_t batch_len = strlen("250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n550-5.1.1 No\r\n"
				  "550 5.1.1 such user\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n");

	t_message_init(&message, SENDER, 3, BODY);
	run_pipelined(whole, 1u << 20, 0);
	cr_assert_eq(whole->event_count, 6, "READY, 3 x RCPT, DONE, READY");
	cr_assert_eq(whole->events[2].code, 550);
	cr_assert_eq(whole->events[4].type, SMTP_EV_MESSAGE_DONE);
	for (size_t chunk = 1; chunk <= 7; chunk++) {
		struct t_session *t = t_session_new(NULL);

		run_pipelined(t, chunk, 0);
		events_assert_equal(whole, t, chunk);
		t_session_free(t);
	}
	for (size_t split = 1; split < batch_len; split++) {
		struct t_session *t = t_session_new(NULL);

		run_pipelined(t, 1u << 20, split);
		events_assert_equal(whole, t, 100 + split);
		t_session_free(t);
	}
	t_session_free(whole);
}

Test(smtp_client, short_sends_give_the_same_bytes)
{
	struct t_session *whole = t_session_new(NULL);

	t_message_init(&message, SENDER, 3, BODY);
	run_pipelined(whole, 1u << 20, 0);
	for (size_t chunk = 1; chunk <= 9; chunk += 2) {
		struct t_session *t = t_session_new(NULL);

		t->send_chunk_size = chunk;
		run_pipelined(t, 1u << 20, 0);
		events_assert_equal(whole, t, chunk);
		t_session_free(t);
	}
	t_session_free(whole);
}

Test(smtp_client, lockstep_without_pipelining)
{
	struct t_session *t = t_session_new(NULL);
	char mail[256];
	size_t mail_len;

	t_handshake(t, EHLO_LOCKSTEP);
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	mail_len = mail_line(mail, sizeof(mail), &message.message, "");
	t_flush(t);
	t_expect_sent(t, mail, mail_len);
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "RCPT TO:<r0@rcpt.example>\r\n");
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "RCPT TO:<r1@rcpt.example>\r\n");
	t_feed(t, "251 forwarded\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "DATA\r\n");
	t_feed(t, "354 go\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, BODY);
	t_feed(t, "250 queued\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 250);
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->code, 251);
	t_next_event(t, SMTP_EV_MESSAGE_DONE);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>IDLE IDLE>MAIL MAIL>RCPT RCPT>DATA "
				   "DATA>BODY BODY>DOT DOT>IDLE ");
	t_session_free(t);
}

Test(smtp_client, pipelining_disabled_by_config_is_lockstep)
{
	struct smtp_client_config config;
	struct t_session *t;
	char mail[256];
	size_t mail_len;

	t_default_config(&config);
	config.pipelining_is_disabled = true;
	t = t_session_new(&config);
	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	mail_len = mail_line(mail, sizeof(mail), &message.message, "");
	t_flush(t);
	t_expect_sent(t, mail, mail_len);
	t_session_free(t);
}

Test(smtp_client, helo_fallback_when_ehlo_gets_5xx)
{
	struct t_session *t = t_session_new(NULL);

	t_flush(t);
	t_feed(t, "220 old.example.com SMTP\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, "502 5.5.2 Error: command not recognized\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "HELO " T_HELO_NAME "\r\n");
	t_expect_no_event(t);
	t_feed(t, "250 old.example.com\r\n");
	t_next_event(t, SMTP_EV_READY);
	cr_assert_eq(smtp_client_caps(&t->client)->extensions, 0, "HELO offers no extension");
	t_message_init(&message, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "MAIL FROM:<" SENDER ">\r\n");
	cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>HELO HELO>IDLE IDLE>MAIL ");
	t_session_free(t);
}

Test(smtp_client, null_sender_and_size_parameter)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, "250-mx\r\n250 SIZE 1000\r\n");
	t_message_init(&message, "", 1, BODY);
	message.message.size = 777;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "MAIL FROM:<> SIZE=777\r\n");
	t_session_free(t);
}

Test(smtp_client, size_zero_or_absent_number_means_no_limit)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, "250-mx\r\n250 SIZE\r\n");
	t_message_init(&message, SENDER, 1, BODY);
	message.message.size = 1u << 30;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "MAIL FROM:<" SENDER "> SIZE=1073741824\r\n");
	t_session_free(t);
}

Test(smtp_client, body_8bitmime_when_offered)
{
	struct t_session *t = t_session_new(NULL);
	char mail[256];
	size_t mail_len;

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	message.message.needs_8bit = true;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	mail_len = mail_line(mail, sizeof(mail), &message.message, " BODY=8BITMIME");
	t_flush(t);
	cr_assert_geq(t->sent_size, mail_len);
	cr_assert(memcmp(t->sent, mail, mail_len) == 0);
	t_session_free(t);
}

Test(smtp_client, eight_bit_message_is_sent_as_is_when_8bitmime_is_missing)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, "250-mx\r\n250 PIPELINING\r\n");
	t_message_init(&message, SENDER, 1, BODY);
	message.message.needs_8bit = true;
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "MAIL FROM:<" SENDER ">\r\nRCPT TO:<r0@rcpt.example>\r\nDATA\r\n");
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client, smtputf8_parameter_when_needed_and_offered)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, "250-mx\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n");
	t_message_init(&message, "d\xc3\xa9j\xc3\xa0@example.com", 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "MAIL FROM:<d\xc3\xa9j\xc3\xa0@example.com> SMTPUTF8\r\n"
			 "RCPT TO:<r0@rcpt.example>\r\nDATA\r\n");
	t_session_free(t);
}

static void
finish_transaction(struct t_session *t, const char *replies)
{
	t_feed(t, replies);
	t_flush(t);
	t_feed(t, "250 2.0.0 queued\r\n");
}

/* After a reply to the end of data the transaction is over (RFC 5321
 * 4.1.1.4): the next one starts with MAIL, no RSET. */
Test(smtp_client, two_messages_pipelined_no_rset_after_a_delivery)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 1, BODY);
	t_message_init(&message2, "other@example.com", 2, "second\r\n.\r\n");
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	expect_batch(t, &message.message, false);
	finish_transaction(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	T_EXPECT_SENT(t, BODY);
	t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message.message);
	t_next_event(t, SMTP_EV_READY);
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	expect_batch(t, &message2.message, false);
	finish_transaction(t, "250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
	T_EXPECT_SENT(t, "second\r\n.\r\n");
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->rcpt_index, 0);
	cr_assert_eq(t_next_event(t, SMTP_EV_RCPT)->rcpt_index, 1);
	cr_assert_eq(t_next_event(t, SMTP_EV_MESSAGE_DONE)->message, &message2.message);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	t_session_free(t);
}

/* Lock-step: after a delivery the next MAIL comes at once; after a
 * transaction that ended without an end-of-data reply (DATA refused) RSET
 * goes out alone first. */
Test(smtp_client, two_messages_lockstep_rset_alone_first)
{
	struct t_session *t = t_session_new(NULL);
	char mail[256];
	size_t mail_len;

	t_handshake(t, EHLO_LOCKSTEP);
	t_message_init(&message, SENDER, 1, BODY);
	t_message_init(&message2, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	for (int i = 0; i < 3; i++) {
		t_flush(t);
		t_feed(t, i < 2 ? "250 ok\r\n" : "354 go\r\n");
	}
	t_flush(t);
	t_feed(t, "250 queued\r\n");
	t->sent_size = 0;
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	t_flush(t);
	mail_len = mail_line(mail, sizeof(mail), &message2.message, "");
	t_expect_sent(t, mail, mail_len);
	for (int i = 0; i < 2; i++) {
		t_feed(t, "250 ok\r\n");
		t_flush(t);
	}
	t_feed(t, "554 5.5.1 no DATA for you\r\n");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_IDLE);
	t->sent_size = 0;
	cr_assert(smtp_client_start_message(&t->client, &message2.message, t->now_ms));
	t_flush(t);
	T_EXPECT_SENT(t, "RSET\r\n");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_RSET);
	t_feed(t, "250 reset\r\n");
	t_flush(t);
	mail_len = mail_line(mail, sizeof(mail), &message2.message, "");
	t_expect_sent(t, mail, mail_len);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_MAIL);
	t_session_free(t);
}

Test(smtp_client, thousand_recipients_pipelined_through_a_small_buffer)
{
	struct t_session *t = t_session_new(NULL);
	static char replies[1000 * 10 + 64];
	static char expected[1000 * 32 + 128];
	size_t len = 0;
	size_t expected_len = 0;
	uint32_t count = SMTP_RCPTS_PER_TRANSACTION_MAX;

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, count, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	cr_assert_lt(smtp_client_output_size(&t->client), 1000u * 20u,
		     "the batch does not fit the buffer at once");
	expected_len = mail_line(expected, sizeof(expected), &message.message, "");
	for (uint32_t i = 0; i < count; i++)
		expected_len += (size_t)snprintf(expected + expected_len,
						 sizeof(expected) - expected_len,
						 "RCPT TO:<r%u@rcpt.example>\r\n", i);
	memcpy(expected + expected_len, "DATA\r\n", 6);
	expected_len += 6;
	t_flush(t);
	t_expect_sent(t, expected, expected_len);
	len = (size_t)snprintf(replies, sizeof(replies), "250 ok\r\n");
	for (uint32_t i = 0; i < count; i++)
		len += (size_t)snprintf(replies + len, sizeof(replies) - len,
					i % 2 ? "450 busy\r\n" : "250 ok\r\n");
	len += (size_t)snprintf(replies + len, sizeof(replies) - len, "354 go\r\n");
	t_feed_bytes(t, replies, len);
	for (uint32_t i = 0; i < count; i++) {
		const struct t_event *event = t_next_event(t, SMTP_EV_RCPT);

		cr_assert_eq(event->rcpt_index, i);
		cr_assert_eq(event->code, i % 2 ? 450 : 250);
	}
	t_flush(t);
	T_EXPECT_SENT(t, BODY);
	t_feed(t, "250 ok\r\n");
	t_next_event(t, SMTP_EV_MESSAGE_DONE);
	t_next_event(t, SMTP_EV_READY);
	t_session_free(t);
}

Test(smtp_client, replies_to_sent_commands_accepted_during_a_partial_send)
{
	struct t_session *t = t_session_new(NULL);
	char mail[256];
	size_t mail_len;

	t_handshake(t, EHLO_PIPELINING);
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	mail_len = mail_line(mail, sizeof(mail), &message.message, "");
	smtp_client_consume(&t->client, mail_len, t->now_ms); /* only MAIL went out */
	t_feed(t, "250 ok\r\n");
	t_expect_no_event(t);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_RCPT);
	t_flush(t);
	T_EXPECT_SENT(t, "RCPT TO:<r0@rcpt.example>\r\nRCPT TO:<r1@rcpt.example>\r\nDATA\r\n");
	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	t_session_free(t);
}

Test(smtp_client, names_for_logs)
{
	cr_assert_str_eq(smtp_client_state_name(SMTP_CLIENT_STATE_RCPT), "RCPT");
	cr_assert_str_eq(smtp_client_error_name(SMTP_CLIENT_ERROR_SERVER_CLOSING),
			 "server closing (421)");
	cr_assert(smtp_client_helo_name_is_valid("mx.example.com", 14));
	cr_assert_not(smtp_client_helo_name_is_valid("mx example", 10));
	cr_assert_not(smtp_client_helo_name_is_valid("mx\r\nQUIT", 8));
	cr_assert_not(smtp_client_helo_name_is_valid("", 0));
}
