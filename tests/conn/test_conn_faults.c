/*
 * test_conn_faults.c - eng_conn against the scriptable aiosmtpd sink
 * (sink.py): per-recipient results (250/550/451) reach the right
 * recipient, pipelined and lock-step; bodies arrive byte-identical after
 * the sink un-stuffs them (a 600 KB body crosses several sends); 421 at
 * EHLO, MAIL, RCPT, DATA and after the dot closes with every pending
 * recipient deferred (4xx); a stalled final reply hits the dot timeout
 * (outcome unknown); a close after the greeting and a close in the middle
 * of DATA end the conn with 4xx outcomes; an abort from inside an event.
 *
 * Suites integration and conn. 127.0.0.x only. No fixed sleeps.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "engine/eng_conn.h"
#include "ring/ring.h"
#include "t_conn.h"

#define T_NS_PER_MS 1000000ull
#define T_RECORD_LINE_SIZE (4u << 20)

/* Per recipient of message: its RCPT 4xx/5xx, else the final event's code
 * (0 when the message had no final event). */
static void
t_outcomes(const struct t_conn_run *run, const struct smtp_message *message, uint16_t *codes)
{
	uint16_t final_code = 0;
	memset(codes, 0, message->rcpt_count * sizeof(codes[0]));
	for (uint32_t i = 0; i < run->event_count; i++) {
		const struct t_conn_event *e = &run->events[i];
		if (e->message != message)
			continue;
		if (e->type == ENG_CONN_EV_RCPT) {
			cr_assert_lt(e->rcpt_index, message->rcpt_count);
			if (e->code >= 400)
				codes[e->rcpt_index] = e->code;
		} else if (e->type == ENG_CONN_EV_MESSAGE_DONE ||
			   e->type == ENG_CONN_EV_MESSAGE_FAILED) {
			cr_assert_eq(final_code, 0, "two final events");
			final_code = e->code;
		}
	}
	for (uint32_t r = 0; r < message->rcpt_count; r++) {
		if (codes[r] == 0)
			codes[r] = final_code;
	}
}

/* Record line index's body equals raw. */
static void
t_assert_recorded_body(const struct t_conn_peer *peer, uint32_t index, const uint8_t *raw,
		       size_t raw_size)
{
	char *line = malloc(T_RECORD_LINE_SIZE);
	uint8_t *body = malloc(T_RECORD_LINE_SIZE / 2);
	cr_assert(line != NULL && body != NULL);
	cr_assert(t_conn_record_line(peer->record, index, line, T_RECORD_LINE_SIZE),
		  "no record %u", index);
	size_t size = t_conn_record_body(line, body, T_RECORD_LINE_SIZE / 2);
	cr_assert_neq(size, SIZE_MAX, "bad record");
	cr_assert_eq(size, raw_size, "body %zu bytes, sent %zu", size, raw_size);
	cr_assert_eq(memcmp(body, raw, raw_size), 0, "body differs");
	free(line);
	free(body);
}

static void
t_rcpt_results(bool is_pipelining)
{
	static const char *const rcpts[] = {
		"ok@example.org", "bad@example.org", "later@example.org", "ok2@example.org",
	};
	const char *args[] = {
		"--rcpt-reply", "bad@example.org=550 5.1.1 No such user",
		"--rcpt-reply", "later@example.org=451 4.2.1 Try again later",
		is_pipelining ? NULL : "--no-pipelining", NULL,
	};
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	run->config.pipelining_is_disabled = !is_pipelining;
	uint8_t raw[8192];
	size_t raw_size = t_conn_raw_body(3, 3000, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(rcpts, 4, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_RCPT), 4);
	cr_assert_eq(run->saw_pipelining, is_pipelining);
	uint16_t codes[4];
	t_outcomes(run, &m->message, codes);
	cr_assert_eq(codes[0], 250);
	cr_assert_eq(codes[1], 550);
	cr_assert_eq(codes[2], 451);
	cr_assert_eq(codes[3], 250);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 1);
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT);
	char line[65536];
	cr_assert(t_conn_record_line(peer.record, 0, line, sizeof(line)));
	cr_assert_not_null(strstr(line, "\"rcpts\": [\"ok@example.org\", \"ok2@example.org\"]"),
			   "record: %.200s", line);
	cr_assert_not_null(strstr(line, "\"from\": \"sender@example.com\""));
	t_assert_recorded_body(&peer, 0, raw, raw_size);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, rcpt_results_reach_the_right_recipient_pipelined, .fini = t_conn_fini)
{
	t_rcpt_results(true);
}

Test(conn, rcpt_results_reach_the_right_recipient_lock_step, .fini = t_conn_fini)
{
	t_rcpt_results(false);
}

Test(conn, bodies_arrive_byte_identical_across_sends, .fini = t_conn_fini, .timeout = 60)
{
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, NULL);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	static const size_t sizes[] = { 10, 700, 600000, 5000 };
	struct t_conn_message *m[ENG_ARRAY_COUNT(sizes)];
	uint8_t *raw = malloc(1 << 20);
	cr_assert_not_null(raw);
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++) {
		size_t raw_size = t_conn_raw_body(40 + i, sizes[i], raw, 1 << 20);
		m[i] = t_conn_message_new(NULL, 1, raw, raw_size);
		run->messages[run->message_count++] = m[i];
	}
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), ENG_ARRAY_COUNT(sizes));
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT);
	/* The 600 KB body went out in sends of at most ENG_CONN_SEND_SIZE_MAX. */
	const struct eng_conn_stats *stats = eng_conn_stats(&run->conn);
	size_t wire_total = 0;
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++)
		wire_total += m[i]->wire_size;
	cr_assert_gt(stats->sent_size, wire_total);
	/* EHLO, the first batch, the other three bodies (each with the next
	 * batch behind its dot) and QUIT: at least 6 more. */
	cr_assert_geq(stats->sends_count, 600000 / ENG_CONN_SEND_SIZE_MAX + 1 + 6);
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++) {
		cr_assert_gt(m[i]->wire_size, m[i]->raw_size, "stuffing happened");
		t_assert_recorded_body(&peer, i, m[i]->raw, m[i]->raw_size);
		t_conn_message_free(m[i]);
	}
	free(raw);
	t_conn_stop(&peer);
	t_conn_run_free(run);
}

/* 421 at phase: CLOSED by the server, every recipient deferred. */
static void
t_reply_421(const char *phase, bool has_message_events)
{
	const char *args[] = { "--reply-421-at", phase, NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(5, 1200, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 3, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_SERVER_CLOSING, "%s: reason %s", phase,
		     eng_conn_close_reason_name(closed->reason));
	cr_assert_eq(closed->error, SMTP_CLIENT_ERROR_SERVER_CLOSING);
	cr_assert_eq(closed->code, 421);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 0);
	if (!has_message_events) {
		cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 0);
		cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 0);
	} else {
		cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 1);
		uint16_t codes[3];
		t_outcomes(run, &m->message, codes);
		for (uint32_t r = 0; r < 3; r++)
			cr_assert_eq(codes[r] / 100, 4, "%s: rcpt %u got %u", phase, r, codes[r]);
	}
	cr_assert_eq(t_conn_file_count(peer.record, "body_hex"), 0, "nothing was accepted");
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, reply_421_at_ehlo_closes_before_ready, .fini = t_conn_fini)
{
	t_reply_421("EHLO", false);
}

Test(conn, reply_421_at_mail_defers_every_recipient, .fini = t_conn_fini)
{
	t_reply_421("MAIL", true);
}

Test(conn, reply_421_at_rcpt_defers_every_recipient, .fini = t_conn_fini)
{
	t_reply_421("RCPT", true);
}

Test(conn, reply_421_at_data_defers_every_recipient, .fini = t_conn_fini)
{
	t_reply_421("DATA", true);
}

Test(conn, reply_421_after_the_dot_defers_every_recipient, .fini = t_conn_fini)
{
	t_reply_421("DOT", true);
}

Test(conn, stalled_final_reply_hits_the_dot_timeout, .fini = t_conn_fini)
{
	const char *args[] = { "--stall-dot", NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	run->config.timeouts.dot_ms = 300;
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(9, 1000, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 2, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_TIMEOUT, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	const struct t_conn_event *failed = NULL;
	for (uint32_t i = 0; i < run->event_count; i++) {
		if (run->events[i].type == ENG_CONN_EV_MESSAGE_FAILED)
			failed = &run->events[i];
	}
	cr_assert_not_null(failed);
	cr_assert_eq(failed->code, 451);
	cr_assert(failed->is_local);
	cr_assert(failed->outcome_is_unknown, "the server may have taken it");
	cr_assert_eq(failed->error, SMTP_CLIENT_ERROR_TIMEOUT);
	/* From MAIL to the timeout: at least the 300 ms dot deadline. */
	cr_assert_geq(failed->transaction_ms, 300);
	cr_assert_lt(failed->transaction_ms, 3000);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, close_after_greeting_ends_the_conn, .fini = t_conn_fini)
{
	const char *args[] = { "--close-after-greeting", NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(11, 500, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 1, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert(closed->reason == ENG_CONN_CLOSE_REMOTE_CLOSE ||
			  closed->reason == ENG_CONN_CLOSE_NETWORK_ERROR,
		  "reason %s", eng_conn_close_reason_name(closed->reason));
	cr_assert(closed->was_connected);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 0);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 0);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, remote_close_mid_data_defers_the_message, .fini = t_conn_fini)
{
	const char *args[] = { "--close-mid-data", "1000", NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	uint8_t *raw = malloc(300000);
	cr_assert_not_null(raw);
	size_t raw_size = t_conn_raw_body(13, 200000, raw, 300000);
	struct t_conn_message *m = t_conn_message_new(NULL, 3, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert(closed->reason == ENG_CONN_CLOSE_REMOTE_CLOSE ||
			  closed->reason == ENG_CONN_CLOSE_NETWORK_ERROR,
		  "reason %s", eng_conn_close_reason_name(closed->reason));
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 1);
	uint16_t codes[3];
	t_outcomes(run, &m->message, codes);
	for (uint32_t r = 0; r < 3; r++)
		cr_assert_eq(codes[r] / 100, 4, "rcpt %u got %u", r, codes[r]);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
	free(raw);
}

/*
 * The server answers 421 while the body is still coming and then resets
 * the connection. The 421 lands while a (blocked) send is in flight; the
 * kernel then completes the recv and the failed send in either order. If
 * the recv comes first it is held until the send's completion; if the send
 * comes first, the conn sends no more and reads on until the recv reports
 * the end. Either way the 421 is read before the reset is judged, so the
 * conn reports the 421, not a network error.
 */
Test(conn, reply_421_mid_body_is_read_before_the_reset, .fini = t_conn_fini, .timeout = 60)
{
	const char *args[] = { "--reply-421-mid-data", "1000", NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	enum { T_BODY_SIZE = 16 << 20 };
	uint8_t *raw = malloc(T_BODY_SIZE + 4096);
	cr_assert_not_null(raw);
	size_t raw_size = t_conn_raw_body(19, T_BODY_SIZE, raw, T_BODY_SIZE + 4096);
	struct t_conn_message *m = t_conn_message_new(NULL, 2, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	const struct eng_conn_stats *stats = eng_conn_stats(&run->conn);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_SERVER_CLOSING,
		     "reason %s (errno %d); sends %llu (short %llu), recvs %llu (held %llu)",
		     eng_conn_close_reason_name(closed->reason), closed->sys_error,
		     (unsigned long long)stats->sends_count,
		     (unsigned long long)stats->short_sends_count,
		     (unsigned long long)stats->recvs_count,
		     (unsigned long long)stats->recvs_held_count);
	uint16_t codes[2];
	t_outcomes(run, &m->message, codes);
	cr_assert_eq(codes[0], 421);
	cr_assert_eq(codes[1], 421);
	cr_assert_lt(stats->sent_size, raw_size, "the body was cut short");
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
	free(raw);
}

Test(conn, abort_from_an_event_fails_the_message_and_closes, .fini = t_conn_fini)
{
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, NULL);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	run->abort_on_first_rcpt = true;
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(17, 800, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 2, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_ABORT, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 0);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 1);
	uint16_t codes[2];
	t_outcomes(run, &m->message, codes);
	/* Accepted at RCPT or not: the abort defers both (local 451 4.4.2). */
	cr_assert_eq(codes[0], 451);
	cr_assert_eq(codes[1], 451);
	cr_assert_geq(t_conn_count(run, ENG_CONN_EV_RCPT), 1);
	cr_assert_eq(t_conn_file_count(peer.record, "body_hex"), 0);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

/*
 * Every reply comes 120 ms late and every deadline is 300 ms: each reply
 * moves the deadline later than the timer in flight, so timers fire stale
 * and are re-armed, and the delivery still succeeds.
 */
Test(conn, slow_replies_renew_the_deadline_through_stale_timers, .fini = t_conn_fini)
{
	const char *args[] = { "--reply-delay-ms", "120", NULL };
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, args);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	t_conn_config(&run->config, 2000, 300);
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(23, 900, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 2, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 1);
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT, "reason %s",
		     eng_conn_close_reason_name(t_conn_closed(run)->reason));
	const struct eng_conn_stats *stats = eng_conn_stats(&run->conn);
	cr_assert_geq(stats->timers_stale_count, 1);
	cr_assert_gt(stats->timers_armed_count, stats->timers_stale_count);
	t_assert_recorded_body(&peer, 0, raw, raw_size);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}
