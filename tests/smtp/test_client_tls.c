/*
 * test_client_tls.c - smtp_client STARTTLS (RFC 3207) under each policy:
 * the upgrade and the second EHLO with forgotten capabilities, response
 * injection after the 220 (reliability.md OUT-03) split at every byte,
 * STARTTLS stripped or refused (OUT-04) under opportunistic and required,
 * and a TLS failure reported by the engine (OUT-05).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "t_smtp.h"

#define GREETING "220 mx.example.com ESMTP ready\r\n"
#define EHLO_TLS                                                                         \
	"250-mx.example.com Hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n"                 \
	"250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_PLAIN "250-mx.example.com Hello\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
/* After TLS: no PIPELINING, STARTTLS again (must not be used twice). */
#define EHLO_AFTER_TLS "250-mx.example.com Hello again\r\n250-STARTTLS\r\n250 SIZE 1000\r\n"
#define INJECTION "220 Ready to start TLS\r\n250-evil\r\n250 AUTH PLAIN\r\n"
#define READY_220 "220 Ready to start TLS\r\n"
#define BODY "Subject: tls\r\n\r\nHello.\r\n.\r\n"
#define SENDER "sender@example.com"

static struct t_message message;

static struct t_session *
tls_session(enum smtp_client_tls_policy policy)
{
	struct smtp_client_config config;

	t_default_config(&config);
	config.tls_policy = policy;
	return t_session_new(&config);
}

/* Greeting and EHLO; expects STARTTLS to go out. */
static void
to_starttls(struct t_session *t, const char *ehlo_reply)
{
	t_feed(t, GREETING);
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, ehlo_reply);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, "STARTTLS\r\n");
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_STARTTLS);
}

static void
expect_session_error(struct t_session *t, enum smtp_client_error error, uint16_t code,
		     uint16_t subject, uint16_t detail)
{
	const struct t_event *event = t_next_event(t, SMTP_EV_ERROR);

	cr_assert_eq(event->error, error, "error %d, want %d", (int)event->error, (int)error);
	cr_assert(event->is_local);
	cr_assert_eq(event->code, code);
	cr_assert_eq(event->enhanced.status_class, code / 100u);
	cr_assert_eq(event->enhanced.subject, subject);
	cr_assert_eq(event->enhanced.detail, detail);
}

Test(smtp_client_tls, opportunistic_upgrades_and_forgets_capabilities)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
	const struct t_event *event;

	to_starttls(t, EHLO_TLS);
	t_feed(t, READY_220);
	t_next_event(t, SMTP_EV_STARTTLS);
	t_expect_no_event(t);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_TLS);
	cr_assert_eq(smtp_client_output_size(&t->client), 0, "nothing to send in the handshake");
	cr_assert_neq(smtp_client_deadline_ms(&t->client), SMTP_CLIENT_DEADLINE_NONE);
	cr_assert_not(smtp_client_is_tls(&t->client));
	smtp_client_tls_started(&t->client, t->now_ms);
	cr_assert(smtp_client_is_tls(&t->client));
	cr_assert_not(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_PIPELINING),
		      "capabilities from before TLS are forgotten");
	cr_assert_not(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_STARTTLS));
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, EHLO_AFTER_TLS);
	t_next_event(t, SMTP_EV_READY);
	t_flush(t);
	T_EXPECT_SENT(t, ""); /* no second STARTTLS */
	cr_assert(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_SIZE));
	/* Lock-step now: the pre-TLS PIPELINING is not used. */
	t_message_init(&message, SENDER, 2, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	char mail[128];
	snprintf(mail, sizeof(mail), "MAIL FROM:<%s> SIZE=%zu\r\n", SENDER, strlen(BODY));
	t_expect_sent(t, mail, strlen(mail));
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "RCPT TO:<r0@rcpt.example>\r\n");
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "RCPT TO:<r1@rcpt.example>\r\n");
	t_feed(t, "250 ok\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "DATA\r\n");
	t_feed(t, "354 go\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, BODY);
	t_feed(t, "250 queued\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	t_next_event(t, SMTP_EV_RCPT);
	event = t_next_event(t, SMTP_EV_MESSAGE_DONE);
	cr_assert_eq(event->code, 250);
	t_next_event(t, SMTP_EV_READY);
	cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>STARTTLS STARTTLS>TLS TLS>EHLO EHLO>IDLE "
				   "IDLE>MAIL MAIL>RCPT RCPT>DATA DATA>BODY BODY>DOT DOT>IDLE ");
	t_session_free(t);
}

/* The whole upgrade with each reply fed split at every byte. */
Test(smtp_client_tls, upgrade_split_at_every_byte)
{
	static const char *const replies[] = { GREETING, EHLO_TLS, READY_220, EHLO_AFTER_TLS };

	for (size_t r = 0; r < sizeof(replies) / sizeof(replies[0]); r++) {
		size_t len = strlen(replies[r]);

		for (size_t split = 1; split < len; split++) {
			struct t_session *t = tls_session(SMTP_CLIENT_TLS_REQUIRED);

			for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
				t_flush(t);
				if (i == r) {
					t_feed_bytes(t, replies[i], split);
					if (i == 2)
						t_expect_no_event(t); /* not before the CRLF */
					t_feed_bytes(t, replies[i] + split, len - split);
				} else {
					t_feed(t, replies[i]);
				}
				if (i == 2) {
					t_next_event(t, SMTP_EV_STARTTLS);
					smtp_client_tls_started(&t->client, t->now_ms);
				}
			}
			t_next_event(t, SMTP_EV_READY);
			t_expect_no_event(t);
			t_flush(t);
			cr_assert(smtp_client_is_idle(&t->client), "reply %zu split %zu", r, split);
			cr_assert_str_eq(t->trace, "GREETING>EHLO EHLO>STARTTLS STARTTLS>TLS TLS>EHLO "
						   "EHLO>IDLE ");
			t_session_free(t);
		}
	}
}

/* OUT-03: "220 ...\r\n250-evil..." however it is cut: the session is
 * dropped before (or instead of) the handshake, sends nothing more, and
 * never reports the injected capabilities. */
Test(smtp_client_tls, injection_after_220_at_every_split)
{
	size_t len = strlen(INJECTION);

	for (size_t split = 0; split < len; split++) {
		struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
		const struct t_event *event;

		to_starttls(t, EHLO_TLS);
		if (split > 0)
			t_feed_bytes(t, INJECTION, split);
		if (split == strlen(READY_220)) {
			/* The 220 came alone: the handshake is asked for; the
			 * next plaintext byte is injection all the same. */
			t_next_event(t, SMTP_EV_STARTTLS);
		}
		t_feed_bytes(t, INJECTION + split, len - split);
		expect_session_error(t, SMTP_CLIENT_ERROR_TLS_INJECTION, 451, 7, 0);
		event = t_next_event(t, SMTP_EV_CLOSED);
		cr_assert_eq(event->error, SMTP_CLIENT_ERROR_TLS_INJECTION, "split %zu", split);
		t_expect_no_event(t);
		t_flush(t);
		T_EXPECT_SENT(t, ""); /* no QUIT, no byte at all */
		cr_assert(smtp_client_is_closed(&t->client));
		cr_assert_not(smtp_client_is_tls(&t->client));
		t_session_free(t);
	}
}

Test(smtp_client_tls, opportunistic_without_starttls_is_plaintext)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);

	t_handshake(t, EHLO_PLAIN);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	cr_assert_not(smtp_client_is_tls(&t->client));
	cr_assert(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_PIPELINING));
	t_session_free(t);
}

Test(smtp_client_tls, policy_none_never_sends_starttls)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_NONE);

	t_handshake(t, EHLO_TLS);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	cr_assert_not(smtp_client_is_tls(&t->client));
	t_session_free(t);
}

/* OUT-04 opportunistic: 454 and 502 mean plaintext with the EHLO's caps. */
Test(smtp_client_tls, opportunistic_refused_goes_on_in_plaintext)
{
	static const char *const refusals[] = { "454 4.7.0 TLS not available\r\n",
						"502 5.5.1 Command not implemented\r\n" };

	for (size_t i = 0; i < 2; i++) {
		struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);

		to_starttls(t, EHLO_TLS);
		t_feed(t, refusals[i]);
		t_next_event(t, SMTP_EV_READY);
		t_expect_no_event(t);
		cr_assert_not(smtp_client_is_tls(&t->client));
		cr_assert(smtp_ehlo_has(smtp_client_caps(&t->client), SMTP_EXT_PIPELINING));
		t_message_init(&message, SENDER, 1, BODY);
		cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
		t_flush(t);
		cr_assert_gt(t->sent_size, 0);
		cr_assert(memcmp(t->sent, "MAIL FROM:", 10) == 0, "no RSET, MAIL first");
		t_session_free(t);
	}
}

/* OUT-04 required: no STARTTLS, 454, 502 or HELO fallback: the session
 * fails with a local 4.7.4 before any MAIL, and says QUIT. */
static void
expect_required_failure(struct t_session *t)
{
	const struct t_event *event;

	expect_session_error(t, SMTP_CLIENT_ERROR_TLS_REQUIRED, 451, 7, 4);
	t_expect_no_event(t);
	t_flush(t);
	T_EXPECT_SENT(t, "QUIT\r\n");
	t_feed(t, "221 bye\r\n");
	event = t_next_event(t, SMTP_EV_CLOSED);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_TLS_REQUIRED);
	t_expect_no_event(t);
}

Test(smtp_client_tls, required_without_starttls_fails_before_mail)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_REQUIRED);

	t_feed(t, GREETING);
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, EHLO_PLAIN);
	expect_required_failure(t);
	t_session_free(t);
}

Test(smtp_client_tls, required_refused_fails_before_mail)
{
	static const char *const refusals[] = { "454 4.7.0 TLS not available\r\n",
						"502 5.5.1 Command not implemented\r\n",
						"554 5.7.0 go away\r\n" };

	for (size_t i = 0; i < 3; i++) {
		struct t_session *t = tls_session(SMTP_CLIENT_TLS_REQUIRED);

		to_starttls(t, EHLO_TLS);
		t_feed(t, refusals[i]);
		expect_required_failure(t); /* local 4.7.4: deferred, never a 5xx bounce */
		t_session_free(t);
	}
}

Test(smtp_client_tls, required_after_helo_fallback_fails)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_REQUIRED);

	t_feed(t, GREETING);
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, "500 what\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "HELO " T_HELO_NAME "\r\n");
	t_feed(t, "250 hi\r\n");
	expect_required_failure(t);
	t_session_free(t);
}

Test(smtp_client_tls, handshake_failure_closes_without_a_byte)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_REQUIRED);
	const struct t_event *event;

	to_starttls(t, EHLO_TLS);
	t_feed(t, READY_220);
	t_next_event(t, SMTP_EV_STARTTLS);
	smtp_client_tls_failed(&t->client, t->now_ms);
	expect_session_error(t, SMTP_CLIENT_ERROR_TLS_FAILED, 451, 7, 0);
	event = t_next_event(t, SMTP_EV_CLOSED);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_TLS_FAILED);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	smtp_client_tls_failed(&t->client, t->now_ms); /* no-op once closed */
	t_expect_no_event(t);
	t_session_free(t);
}

Test(smtp_client_tls, handshake_timeout)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
	uint64_t deadline;

	to_starttls(t, EHLO_TLS);
	t_feed(t, READY_220);
	t_next_event(t, SMTP_EV_STARTTLS);
	deadline = smtp_client_deadline_ms(&t->client);
	cr_assert_eq(deadline, t->now_ms + t->client.config.timeouts.helo_ms);
	cr_assert_not(smtp_client_timeout(&t->client, deadline - 1u));
	cr_assert(smtp_client_timeout(&t->client, deadline));
	t_next_event(t, SMTP_EV_ERROR);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

/* OUT-05: close_notify or a bad record after the body was sent: the
 * outcome is unknown, the recipients are deferred with a local 4.7.0. */
Test(smtp_client_tls, tls_failure_after_the_body_is_unknown_outcome)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
	const struct t_event *event;

	to_starttls(t, EHLO_TLS);
	t_feed(t, READY_220);
	t_next_event(t, SMTP_EV_STARTTLS);
	smtp_client_tls_started(&t->client, t->now_ms);
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, EHLO_PLAIN);
	t_next_event(t, SMTP_EV_READY);
	t_message_init(&message, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	t_flush(t);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_DOT);
	smtp_client_tls_failed(&t->client, t->now_ms);
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert(event->outcome_is_unknown);
	cr_assert(event->is_local);
	cr_assert_eq(event->code, 451);
	cr_assert_eq(event->enhanced.subject, 7);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_TLS_FAILED);
	t_next_event(t, SMTP_EV_ERROR);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_tls, tls_failure_mid_data_is_known_failure)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
	const struct t_event *event;

	to_starttls(t, EHLO_TLS);
	t_feed(t, READY_220);
	t_next_event(t, SMTP_EV_STARTTLS);
	smtp_client_tls_started(&t->client, t->now_ms);
	t_flush(t);
	t_feed(t, EHLO_PLAIN);
	t_next_event(t, SMTP_EV_READY);
	t_message_init(&message, SENDER, 1, BODY);
	cr_assert(smtp_client_start_message(&t->client, &message.message, t->now_ms));
	t_flush(t);
	t_feed(t, "250 ok\r\n250 ok\r\n354 go\r\n");
	t_next_event(t, SMTP_EV_RCPT);
	cr_assert_eq(smtp_client_state(&t->client), SMTP_CLIENT_STATE_BODY);
	smtp_client_tls_failed(&t->client, t->now_ms);
	event = t_next_event(t, SMTP_EV_MESSAGE_FAILED);
	cr_assert_not(event->outcome_is_unknown);
	cr_assert_eq(event->code, 451);
	t_next_event(t, SMTP_EV_ERROR);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);
}

Test(smtp_client_tls, odd_replies_to_starttls)
{
	struct t_session *t = tls_session(SMTP_CLIENT_TLS_OPPORTUNISTIC);
	const struct t_event *event;

	to_starttls(t, EHLO_TLS);
	t_feed(t, "354 what\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	t_next_event(t, SMTP_EV_CLOSED);
	t_session_free(t);

	t = tls_session(SMTP_CLIENT_TLS_REQUIRED);
	to_starttls(t, EHLO_TLS);
	t_feed(t, "421 4.3.2 shutting down\r\n");
	event = t_next_event(t, SMTP_EV_ERROR);
	cr_assert_eq(event->error, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	t_next_event(t, SMTP_EV_CLOSED);
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_session_free(t);
}

Test(smtp_client_tls, names)
{
	cr_assert_str_eq(smtp_client_state_name(SMTP_CLIENT_STATE_STARTTLS), "STARTTLS");
	cr_assert_str_eq(smtp_client_state_name(SMTP_CLIENT_STATE_TLS), "TLS");
	cr_assert_str_neq(smtp_client_error_name(SMTP_CLIENT_ERROR_TLS_REQUIRED), "");
	cr_assert_str_neq(smtp_client_error_name(SMTP_CLIENT_ERROR_TLS_INJECTION), "");
	cr_assert_str_neq(smtp_client_error_name(SMTP_CLIENT_ERROR_TLS_FAILED), "");
}
