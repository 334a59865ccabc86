/*
 * t_smtp.c - the scripted fake engine (t_smtp.h).
 */
#include "t_smtp.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
t_event_callback(void *ctx, const struct smtp_event *event)
{
	struct t_session *t = ctx;
	struct t_event *record;

	if (event->type == SMTP_EV_PIPELINE_SLOT) {
		cr_assert(smtp_client_may_pipeline(&t->client));
		t->slots_count++;
		if (!t->record_slots)
			return;
	}
	cr_assert_lt(t->event_count, T_EVENTS_MAX);
	record = &t->events[t->event_count++];
	memset(record, 0, sizeof(*record));
	record->type = event->type;
	record->message = event->message;
	record->rcpt_index = event->rcpt_index;
	record->code = event->status.code;
	record->is_local = event->status.is_local;
	record->enhanced = event->status.enhanced;
	record->error = event->error;
	record->reply_error = event->reply_error;
	record->outcome_is_unknown = event->outcome_is_unknown;
	record->text_size = event->status.text_size < sizeof(record->text)
				    ? event->status.text_size
				    : sizeof(record->text);
	if (record->text_size > 0)
		memcpy(record->text, event->status.text, record->text_size);
	if (event->type == SMTP_EV_READY && t->reenter_on_ready)
		(void)smtp_client_start_message(&t->client, t->reenter_message, t->now_ms);
}

static void
t_trace_callback(void *ctx, enum smtp_client_state old_state, enum smtp_client_state new_state)
{
	struct t_session *t = ctx;
	int n = snprintf(t->trace + t->trace_size, T_TRACE_MAX - t->trace_size, "%s>%s ",
			 smtp_client_state_name(old_state), smtp_client_state_name(new_state));

	cr_assert(n > 0 && (size_t)n < T_TRACE_MAX - t->trace_size);
	t->trace_size += (size_t)n;
}

void
t_default_config(struct smtp_client_config *config)
{
	memset(config, 0, sizeof(*config));
	config->helo_name = T_HELO_NAME;
	config->helo_name_len = strlen(T_HELO_NAME);
	smtp_client_timeouts_default(&config->timeouts);
}

struct t_session *
t_session_new(const struct smtp_client_config *config)
{
	struct smtp_client_config defaults;
	struct t_session *t = calloc(1, sizeof(*t));

	cr_assert_not_null(t);
	t_default_config(&defaults);
	t->now_ms = T_START_MS;
	smtp_client_init(&t->client, config != NULL ? config : &defaults, t->now_ms, t,
			 t_event_callback);
	smtp_client_set_trace(&t->client, t, t_trace_callback);
	return t;
}

void
t_session_free(struct t_session *t)
{
	free(t);
}

void
t_flush(struct t_session *t)
{
	for (int round = 0; round < 100000; round++) {
		struct iovec iov[3];
		uint32_t count = smtp_client_output(&t->client, iov, 3);
		size_t size = 0;
		size_t copied = 0;

		if (count == 0)
			return;
		cr_assert_leq(count, 2, "two iovecs at most: body, then commands");
		for (uint32_t i = 0; i < count; i++) {
			cr_assert_gt(iov[i].iov_len, 0);
			size += iov[i].iov_len;
		}
		cr_assert_eq(size, smtp_client_output_size(&t->client));
		t->outputs_count++;
		t->outputs_two_count += count == 2u;
		if (t->send_chunk_size != 0 && size > t->send_chunk_size)
			size = t->send_chunk_size;
		cr_assert_leq(t->sent_size + size, T_SENT_MAX);
		for (uint32_t i = 0; i < count && copied < size; i++) {
			size_t n = iov[i].iov_len < size - copied ? iov[i].iov_len : size - copied;

			memcpy(t->sent + t->sent_size + copied, iov[i].iov_base, n);
			copied += n;
		}
		t->sent_size += size;
		t->last_iov_base = iov[0].iov_base;
		smtp_client_consume(&t->client, size, t->now_ms);
	}
	cr_assert_fail("output never drained");
}

void
t_feed_bytes(struct t_session *t, const void *ptr, size_t len)
{
	smtp_client_feed(&t->client, ptr, len, t->now_ms);
}

void
t_feed(struct t_session *t, const char *text)
{
	t_feed_bytes(t, text, strlen(text));
}

void
t_expect_sent(struct t_session *t, const char *bytes, size_t len)
{
	cr_assert_eq(t->sent_size, len, "sent %zu bytes: \"%.*s\", want \"%.*s\"", t->sent_size,
		     (int)t->sent_size, (const char *)t->sent, (int)len, bytes);
	cr_assert(memcmp(t->sent, bytes, len) == 0, "sent \"%.*s\", want \"%.*s\"",
		  (int)t->sent_size, (const char *)t->sent, (int)len, bytes);
	t->sent_size = 0;
}

const struct t_event *
t_next_event(struct t_session *t, enum smtp_event_type type)
{
	const struct t_event *event;

	cr_assert_lt(t->event_read_index, t->event_count, "no more events; wanted type %d",
		     (int)type);
	event = &t->events[t->event_read_index++];
	cr_assert_eq(event->type, type, "event %u: type %d, want %d", t->event_read_index - 1u,
		     (int)event->type, (int)type);
	return event;
}

void
t_expect_no_event(struct t_session *t)
{
	cr_assert_eq(t->event_read_index, t->event_count, "unexpected event of type %d",
		     (int)t->events[t->event_read_index].type);
}

void
t_handshake(struct t_session *t, const char *ehlo_reply)
{
	t_flush(t);
	T_EXPECT_SENT(t, "");
	t_feed(t, "220 mx.example.com ESMTP ready\r\n");
	t_flush(t);
	T_EXPECT_SENT(t, "EHLO " T_HELO_NAME "\r\n");
	t_feed(t, ehlo_reply);
	t_next_event(t, SMTP_EV_READY);
	t_expect_no_event(t);
	cr_assert(smtp_client_is_idle(&t->client));
}

struct t_session *
t_session_started(const char *ehlo_reply, const struct t_message *m)
{
	struct t_session *t = t_session_new(NULL);

	t_handshake(t, ehlo_reply);
	cr_assert(smtp_client_start_message(&t->client, &m->message, t->now_ms));
	t_flush(t);
	t->sent_size = 0;
	return t;
}

void
t_message_init(struct t_message *m, const char *sender, uint32_t count, const char *body)
{
	memset(m, 0, sizeof(*m));
	cr_assert_leq(count, SMTP_RCPTS_PER_TRANSACTION_MAX);
	for (uint32_t i = 0; i < count; i++) {
		int n = snprintf(m->names[i], sizeof(m->names[i]), "r%u@rcpt.example", i);

		m->rcpts[i].ptr = m->names[i];
		m->rcpts[i].len = (size_t)n;
	}
	m->message.sender.ptr = sender;
	m->message.sender.len = strlen(sender);
	m->message.rcpts = m->rcpts;
	m->message.rcpt_count = count;
	m->message.body = (const uint8_t *)body;
	m->message.body_size = strlen(body);
}
