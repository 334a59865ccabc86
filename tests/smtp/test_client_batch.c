/*
 * test_client_batch.c - RCPT replies of a pipelined batch are provisional
 * (smtp_client.h "Failure rules"): a 4xx/5xx RCPT reply becomes that
 * recipient's outcome only when the transaction's last reply was read in
 * step; a session failure before it (lost connection, 421, timeout, a
 * reply out of step) voids the batch and every recipient is deferred.
 *
 * Each case plays the server's replies split at every byte boundary and
 * judges the events with the engine's rule (eng_deliver_message_end): per
 * recipient D delivered, B bounced, T deferred, and exactly one outcome
 * each. OUT-06 (every RCPT refused, 354 to DATA): only ".\r\n" goes out,
 * every recipient is bounced once. A 5xx RCPT followed by a lost
 * connection before the DATA reply: deferred, never bounced. A refused
 * MAIL is held the same way until the batch behind it is drained.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "t_smtp.h"

#define EHLO_PIPELINING                                                                  \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_LOCKSTEP "250-mx.example.com\r\n250 SIZE 100000\r\n"
#define BODY "Subject: batch\r\n\r\nthe body\r\n.\r\n"
#define SENDER "s@example.com"
#define RCPTS_MAX 8u

static struct t_message message;

static struct t_session *
start(uint32_t count, const char *ehlo)
{
	t_message_init(&message, SENDER, count, BODY);
	return t_session_started(ehlo, &message);
}

/* text in two feeds cut at split (0 or len: one feed). */
static void
feed_split(struct t_session *t, const char *text, size_t split)
{
	size_t len = strlen(text);

	if (split == 0 || split >= len) {
		t_feed(t, text);
		return;
	}
	t_feed_bytes(t, text, split);
	t_feed_bytes(t, text + split, len - split);
}

static char
class_outcome(uint16_t code, bool outcome_is_unknown)
{
	if (code / 100u == 2)
		return 'D';
	return code / 100u == 5 && !outcome_is_unknown ? 'B' : 'T';
}

/*
 * The engine's rule over every event recorded: RCPT 4xx/5xx held, the
 * final event confirms them (DONE, FAILED without an error) or voids them
 * (FAILED with an error). out gets one letter per recipient, '-' for none.
 */
static void
judge(const struct t_session *t, uint32_t count, char out[RCPTS_MAX + 1])
{
	uint16_t held[RCPTS_MAX] = { 0 };
	uint32_t finals = 0;

	cr_assert_leq(count, RCPTS_MAX);
	memset(out, '-', count);
	out[count] = '\0';
	for (uint32_t e = 0; e < t->event_count; e++) {
		const struct t_event *ev = &t->events[e];

		if (ev->type == SMTP_EV_RCPT) {
			cr_assert_lt(ev->rcpt_index, count);
			cr_assert_eq(held[ev->rcpt_index], 0, "two RCPT replies for rcpt %u",
				     ev->rcpt_index);
			held[ev->rcpt_index] = ev->code;
			continue;
		}
		if (ev->type != SMTP_EV_MESSAGE_DONE && ev->type != SMTP_EV_MESSAGE_FAILED)
			continue;
		cr_assert_eq(finals++, 0, "one final event per message");
		bool is_void = ev->type == SMTP_EV_MESSAGE_FAILED && ev->error != SMTP_CLIENT_ERROR_NONE;
		for (uint32_t i = 0; i < count; i++) {
			if (held[i] != 0 && held[i] / 100u != 2 && !is_void)
				out[i] = class_outcome(held[i], false);
			else if (ev->type == SMTP_EV_MESSAGE_DONE)
				out[i] = 'D';
			else
				out[i] = class_outcome(ev->code, ev->outcome_is_unknown);
		}
	}
	cr_assert_eq(finals, 1, "the message has its final event");
}

struct batch_case {
	uint32_t rcpt_count;
	const char *replies; /* to the batch MAIL, RCPT..., DATA: split at every byte */
	const char *sent;    /* then the output must be this (NULL: not checked) */
	const char *after;   /* then this is fed (split too), or NULL */
	bool is_lost;	     /* then the connection drops */
	const char *want;    /* per-recipient outcome */
};

/* One case at one split; returns the outcome letters in out. */
static void
run_case(const struct batch_case *c, size_t split, char out[RCPTS_MAX + 1])
{
	struct t_session *t = start(c->rcpt_count, EHLO_PIPELINING);

	feed_split(t, c->replies, split);
	t_flush(t);
	if (c->sent != NULL && !smtp_client_is_closed(&t->client)) {
		cr_assert_eq(t->sent_size, strlen(c->sent), "split %zu: sent \"%.*s\"", split,
			     (int)t->sent_size, (const char *)t->sent);
		cr_assert(memcmp(t->sent, c->sent, t->sent_size) == 0);
	}
	if (c->after != NULL && !smtp_client_is_closed(&t->client))
		feed_split(t, c->after, split % (strlen(c->after) + 1u));
	if (c->is_lost)
		smtp_client_connection_lost(&t->client, t->now_ms);
	judge(t, c->rcpt_count, out);
	t_session_free(t);
}

static void
run_every_split(const struct batch_case *c)
{
	size_t len = strlen(c->replies);

	for (size_t split = 0; split < len; split++) {
		char got[RCPTS_MAX + 1];

		run_case(c, split, got);
		cr_assert_str_eq(got, c->want, "replies \"%s\" split at %zu", c->replies, split);
	}
}

Test(smtp_client_batch, rcpt_5xx_then_lost_before_data_reply_is_deferred)
{
	const struct batch_case c = {
		.rcpt_count = 3,
		.replies = "250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n"
			   "250 2.1.5 ok\r\n",
		.sent = "",
		.is_lost = true,
		.want = "TTT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, all_rcpts_5xx_then_lost_before_data_reply_is_deferred)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n553 5.1.3 bad\r\n",
		.sent = "",
		.is_lost = true,
		.want = "TT",
	};
	run_every_split(&c);
}

/* OUT-06: 5xx for every RCPT, 354 to DATA: the lone dot, never the body;
 * every recipient bounced exactly once, whatever the dot's reply says. */
Test(smtp_client_batch, out06_all_rcpts_5xx_then_354_bounces_each_once)
{
	static const char *const dot_replies[] = { "554 5.5.1 no valid recipients\r\n",
						   "250 2.0.0 queued anyway\r\n",
						   "451 4.3.0 try again\r\n" };

	for (size_t r = 0; r < sizeof(dot_replies) / sizeof(dot_replies[0]); r++) {
		const struct batch_case c = {
			.rcpt_count = 3,
			.replies = "250 ok\r\n550 5.1.1 a\r\n550 5.1.1 b\r\n"
				   "550-5.1.1 c\r\n550 5.1.1 c\r\n354 go ahead anyway\r\n",
			.sent = ".\r\n",
			.after = dot_replies[r],
			.want = "BBB",
		};
		run_every_split(&c);
	}
}

/* The same, but the connection drops after the lone dot: not confirmed. */
Test(smtp_client_batch, out06_lost_after_the_lone_dot_defers)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 a\r\n550 5.1.1 b\r\n354 go\r\n",
		.sent = ".\r\n",
		.is_lost = true,
		.want = "TT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, in_step_batch_keeps_each_rcpt_reply)
{
	const struct batch_case c = {
		.rcpt_count = 3,
		.replies = "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n450 4.2.1 later\r\n354 go\r\n",
		.sent = BODY,
		.after = "250 2.0.0 queued\r\n",
		.want = "BDT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, rcpt_5xx_then_421_to_data_is_deferred)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n421 4.3.2 closing\r\n",
		.want = "TT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, rcpt_5xx_then_421_after_the_body_is_deferred)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n",
		.sent = BODY,
		.after = "421 4.3.2 closing\r\n",
		.want = "TT",
	};
	run_every_split(&c);
}

/* One reply too many (or shifted): DATA gets a 2xx, so the replies were
 * out of step and the 550 may have been another command's. */
Test(smtp_client_batch, shifted_reply_shows_as_2xx_to_data_and_voids)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n250 ok\r\n",
		.want = "TT",
	};
	run_every_split(&c);
}

/* One reply too many, seen after the 354 (the body awaits no reply). */
Test(smtp_client_batch, extra_reply_after_354_voids)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n354 go\r\n252 2.1.5 extra\r\n",
		.want = "TT",
	};
	run_every_split(&c);
}

/*
 * One reply too many behind a refused DATA: in the same feed it is seen
 * before the final event (void, deferred). Cut exactly after the DATA
 * reply it looks like a server that said something later: the transaction
 * is already over (its replies stand) and the extra reply only closes
 * the session. Both are checked.
 */
Test(smtp_client_batch, extra_reply_after_refused_data)
{
	const char *head = "250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 no valid\r\n";
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 no valid\r\n"
			   "550 5.1.1 extra\r\n",
		.want = "TT",
	};
	size_t len = strlen(c.replies);

	for (size_t split = 0; split < len; split++) {
		char got[RCPTS_MAX + 1];

		run_case(&c, split, got);
		cr_assert_str_eq(got, split == strlen(head) ? "BB" : "TT", "split at %zu", split);
	}
}

/* A refused MAIL is held the same way: the batch drains, then it stands. */
Test(smtp_client_batch, mail_5xx_drained_in_step_bounces_each_once)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n"
			   "503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n",
		.sent = "",
		.want = "BB",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, mail_5xx_then_354_sends_only_the_dot)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "550 5.7.1 sender refused\r\n503 5.5.1 a\r\n503 5.5.1 b\r\n354 go\r\n",
		.sent = ".\r\n",
		.after = "250 2.0.0 nothing\r\n",
		.want = "BB",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, mail_5xx_then_lost_while_draining_is_deferred)
{
	const struct batch_case c = {
		.rcpt_count = 3,
		.replies = "550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n",
		.is_lost = true,
		.want = "TTT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, mail_5xx_then_2xx_to_rcpt_voids)
{
	const struct batch_case c = {
		.rcpt_count = 2,
		.replies = "550 5.7.1 refused\r\n250 2.1.5 ok\r\n",
		.want = "TT",
	};
	run_every_split(&c);
}

Test(smtp_client_batch, rcpt_5xx_then_data_timeout_is_deferred)
{
	struct t_session *t = start(2, EHLO_PIPELINING);
	char got[RCPTS_MAX + 1];

	t_feed(t, "250 ok\r\n550 5.1.1 no\r\n250 ok\r\n");
	t->now_ms = smtp_client_deadline_ms(&t->client);
	cr_assert(smtp_client_timeout(&t->client, t->now_ms));
	judge(t, 2, got);
	cr_assert_str_eq(got, "TT");
	t_session_free(t);
}

/* Lock-step: the same rule (an extra reply can land on the next command). */
Test(smtp_client_batch, lockstep_rcpt_5xx_then_lost_is_deferred)
{
	struct t_session *t = start(2, EHLO_LOCKSTEP);
	char got[RCPTS_MAX + 1];

	t_feed(t, "250 ok\r\n");
	t_flush(t);
	t_feed(t, "550 5.1.1 no\r\n");
	t_flush(t);
	smtp_client_connection_lost(&t->client, t->now_ms);
	judge(t, 2, got);
	cr_assert_str_eq(got, "TT");
	t_session_free(t);
}

Test(smtp_client_batch, lockstep_all_rcpts_5xx_bounce_once)
{
	struct t_session *t = start(2, EHLO_LOCKSTEP);
	char got[RCPTS_MAX + 1];

	t_feed(t, "250 ok\r\n");
	t_flush(t);
	t_feed(t, "550 5.1.1 no\r\n");
	t_flush(t);
	t->sent_size = 0;
	t_feed(t, "550 5.1.1 no\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, ""); /* no DATA, no body */
	judge(t, 2, got);
	cr_assert_str_eq(got, "BB");
	t_session_free(t);
}
