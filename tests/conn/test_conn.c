/*
 * test_conn.c - eng_conn against Postfix smtp-sink and bare kernel peers:
 * one message with three recipients, 200 messages over one connection
 * (smtp-sink's counters show one session and 200 messages, its dump 200
 * transactions), connection refused, a connect that times out (SYNs
 * dropped), a server that never greets (greeting timeout), abort while
 * connecting, a binding to a source address, and reuse of one struct
 * (reopened from inside its CLOSED callback).
 *
 * Suites integration and conn. 127.0.0.x only. No fixed sleeps.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "engine/eng_config.h"
#include "engine/eng_conn.h"
#include "ring/ring.h"
#include "t_conn.h"

#define T_NS_PER_MS 1000000ull
#define T_SINK_WAIT_NS (20ull * 1000000000ull)

/* Wait until smtp-sink's counters reach mesg and quit. */
static void
t_wait_counters(const struct t_conn_peer *peer, long want_mesg, long want_quit, long *sess)
{
	long quit = -1, mesg = -1;
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_SINK_WAIT_NS;
	for (;;) {
		t_conn_smtp_sink_counters(peer, sess, &quit, &mesg);
		if (mesg >= want_mesg && quit >= want_quit)
			break;
		cr_assert_lt(eng_now_monotonic_ns(), deadline_ns,
			     "smtp-sink counters stuck at sess=%ld quit=%ld mesg=%ld", *sess, quit,
			     mesg);
		usleep(10000);
	}
	cr_assert_eq(mesg, want_mesg);
	cr_assert_eq(quit, want_quit);
}

/* The dump file is written as transactions end: poll for the count. */
static void
t_wait_dump(const struct t_conn_peer *peer, const char *needle, size_t want)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_SINK_WAIT_NS;
	size_t count;
	while ((count = t_conn_file_count(peer->record, needle)) < want) {
		cr_assert_lt(eng_now_monotonic_ns(), deadline_ns, "dump has %zu of %zu %s", count,
			     want, needle);
		usleep(10000);
	}
	cr_assert_eq(count, want, "dump has %zu %s, want %zu", count, needle, want);
}

/* Every message DONE, every recipient 250, CLOSED by QUIT. */
static void
t_assert_clean_run(const struct t_conn_run *run, uint32_t messages, uint32_t rcpts_each)
{
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), messages);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 0);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_RCPT), messages * rcpts_each);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), messages + 1);
	for (uint32_t i = 0; i < run->event_count; i++) {
		const struct t_conn_event *e = &run->events[i];
		if (e->type == ENG_CONN_EV_RCPT || e->type == ENG_CONN_EV_MESSAGE_DONE)
			cr_assert_eq(e->code / 100, 2, "event %u code %u", i, e->code);
	}
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_QUIT, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert(closed->was_connected);
	cr_assert_eq(closed->messages_count, messages);
}

Test(conn, smtp_sink_one_message_three_recipients, .fini = t_conn_fini, .timeout = 60)
{
	struct t_conn_peer peer;
	t_conn_start_smtp_sink(&peer);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(1, 2000, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 3, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	t_assert_clean_run(run, 1, 3);
	for (uint32_t i = 0, r = 0; i < run->event_count; i++) {
		if (run->events[i].type == ENG_CONN_EV_RCPT)
			cr_assert_eq(run->events[i].rcpt_index, r++);
	}
	long sess;
	t_wait_counters(&peer, 1, 1, &sess);
	t_wait_dump(&peer, "X-Mail-Args: <sender@example.com>", 1);
	t_wait_dump(&peer, "X-Rcpt-Args: <rcpt", 3);
	cr_assert_eq(t_conn_file_count(peer.record, "X-Rcpt-Args: <rcpt2@example.org>"), 1);
	char want_peer[32];
	snprintf(want_peer, sizeof(want_peer), "127.0.0.1:%u", (unsigned)peer.port);
	cr_assert_str_eq(run->events[0].peer, want_peer);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, smtp_sink_200_messages_over_one_connection, .fini = t_conn_fini, .timeout = 90)
{
	struct t_conn_peer peer;
	t_conn_start_smtp_sink(&peer);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	/* RFC 5321 timeouts: the deadline moves earlier (DATA after RCPT,
	 * MAIL after the dot), but never before the timer in flight, which is
	 * armed at most one tick (the shortest timeout, 20 s) ahead: no
	 * cancellation. */
	smtp_client_timeouts_default(&run->config.timeouts);
	enum { T_MESSAGES = 200 };
	uint8_t raw[8192];
	for (uint32_t i = 0; i < T_MESSAGES; i++) {
		size_t raw_size = t_conn_raw_body(100 + i, 1000 + i * 20, raw, sizeof(raw));
		run->messages[run->message_count++] =
			t_conn_message_new(NULL, 1 + i % 3, raw, raw_size);
	}
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), T_MESSAGES);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 0);
	/* smtp-sink offers PIPELINING: every message but the first went out
	 * behind the previous one's dot, so the session was idle only after
	 * EHLO and after the last message; body, dot and the next MAIL..DATA
	 * shared a send. */
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 2);
	cr_assert_eq(run->slots_count, T_MESSAGES);
	cr_assert_eq(run->pipelined_count, T_MESSAGES - 1);
	cr_assert_geq(eng_conn_stats(&run->conn)->sends_behind_dot_count, 1);
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT);
	cr_assert_eq(t_conn_closed(run)->messages_count, T_MESSAGES);
	const struct eng_conn_stats *stats = eng_conn_stats(&run->conn);
	cr_assert_eq(stats->timer_cancels_count, 0);
	cr_assert_eq(stats->timers_armed_count, 1);
	cr_assert_eq(stats->timers_stale_count, 0);
	long sess;
	t_wait_counters(&peer, T_MESSAGES, 1, &sess);
	/* One connection carried all of them, each exactly once. */
	cr_assert_eq(sess, 1, "smtp-sink saw %ld sessions", sess);
	t_wait_dump(&peer, "X-Mail-Args:", T_MESSAGES);
	size_t rcpts = 0;
	for (uint32_t i = 0; i < T_MESSAGES; i++)
		rcpts += 1 + i % 3;
	t_wait_dump(&peer, "X-Rcpt-Args:", rcpts);
	t_conn_stop(&peer);
	for (uint32_t i = 0; i < T_MESSAGES; i++)
		t_conn_message_free(run->messages[i]);
	t_conn_run_free(run);
}

Test(conn, refused_connect_closes_quickly_with_reason_refused, .fini = t_conn_fini)
{
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, t_conn_free_port());
	uint64_t start_ns = eng_now_monotonic_ns();
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	cr_assert_eq(run->event_count, 1);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_CONNECT_REFUSED, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert(!closed->was_connected);
	cr_assert_lt(elapsed_ns, 1000 * T_NS_PER_MS);
	t_conn_run_free(run);
}

Test(conn, connect_timeout_is_honoured, .fini = t_conn_fini)
{
	uint16_t port;
	int filler;
	int listen_fd = t_conn_silent_listener(&port, true, &filler);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, port);
	run->config.connect_timeout_ms = 200;
	uint64_t start_ns = eng_now_monotonic_ns();
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_CONNECT_TIMEOUT, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert_geq(elapsed_ns, 200 * T_NS_PER_MS);
	cr_assert_lt(elapsed_ns, 900 * T_NS_PER_MS, "took %llu ms",
		     (unsigned long long)(elapsed_ns / T_NS_PER_MS));
	close(filler);
	close(listen_fd);
	t_conn_run_free(run);
}

Test(conn, silent_server_hits_the_greeting_timeout, .fini = t_conn_fini)
{
	uint16_t port;
	int filler;
	int listen_fd = t_conn_silent_listener(&port, false, &filler);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, port);
	run->config.timeouts.greeting_ms = 250;
	uint64_t start_ns = eng_now_monotonic_ns();
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_TIMEOUT, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert(closed->was_connected);
	cr_assert_eq(closed->error, SMTP_CLIENT_ERROR_TIMEOUT);
	cr_assert_eq(closed->code, 451);
	cr_assert(closed->is_local);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 0);
	/* Deadlines are whole milliseconds of a clock read after start_ns
	 * (truncated): the timer may fire up to 1 ms before 250 ms here. */
	cr_assert_geq(elapsed_ns, 249 * T_NS_PER_MS, "took %llu us",
		      (unsigned long long)(elapsed_ns / 1000u));
	cr_assert_lt(elapsed_ns, 2000 * T_NS_PER_MS);
	close(listen_fd);
	t_conn_run_free(run);
}

Test(conn, abort_while_connecting_waits_for_the_connect, .fini = t_conn_fini)
{
	uint16_t port;
	int filler;
	int listen_fd = t_conn_silent_listener(&port, true, &filler);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, port);
	run->config.connect_timeout_ms = 10000;
	t_conn_run_open(run);
	cr_assert_eq(eng_conn_ops_in_flight(&run->conn), 2);
	eng_conn_abort(&run->conn);
	eng_conn_abort(&run->conn); /* a second abort is a no-op */
	cr_assert(!run->is_closed, "CLOSED must come from a completion");
	t_conn_run_until_closed(run, 2000 * T_NS_PER_MS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_ABORT);
	cr_assert(!closed->was_connected);
	close(filler);
	close(listen_fd);
	t_conn_run_free(run);
}

Test(conn, binds_the_source_address_and_reopens_from_closed, .fini = t_conn_fini,
     .timeout = 60)
{
	struct t_conn_peer peer;
	t_conn_start_smtp_sink(&peer);
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, peer.port);
	struct sockaddr_storage source;
	uint32_t source_len;
	t_conn_addr(&source, &source_len, 2, 0);
	run->config.source_addr = (const struct sockaddr *)&source;
	run->config.source_addr_len = source_len;
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(7, 1500, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 2, raw, raw_size);
	run->messages[run->message_count++] = m;
	/* Two more rounds on the same struct, each reopened from CLOSED. */
	run->reopen_count = 2;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_CLOSED), 3);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 3);
	for (uint32_t i = 0; i < run->event_count; i++) {
		if (run->events[i].type == ENG_CONN_EV_CLOSED)
			cr_assert_eq(run->events[i].reason, ENG_CONN_CLOSE_QUIT);
	}
	long sess;
	t_wait_counters(&peer, 3, 3, &sess);
	t_wait_dump(&peer, "X-Client-Addr: 127.0.0.2", 3);
	t_conn_stop(&peer);
	t_conn_run_free(run);
	t_conn_message_free(m);
}

Test(conn, config_from_destination_maps_timeouts_to_ms)
{
	struct eng_destination destination;
	memset(&destination, 0, sizeof(destination));
	destination.connect_timeout_ns = 30ull * 1000000000ull;
	destination.greeting_timeout_ns = 1500000; /* 1.5 ms: rounds up */
	destination.mail_timeout_ns = 2ull * 1000000000ull;
	destination.rcpt_timeout_ns = 3ull * 1000000000ull;
	destination.data_timeout_ns = 4ull * 1000000000ull;
	destination.data_block_timeout_ns = 5ull * 1000000000ull;
	destination.data_done_timeout_ns = 6ull * 1000000000ull;
	struct eng_conn_config config;
	eng_conn_config_from_destination(&config, &destination, T_CONN_HELO,
					 strlen(T_CONN_HELO));
	struct smtp_client_timeouts defaults;
	smtp_client_timeouts_default(&defaults);
	cr_assert_eq(config.connect_timeout_ms, 30000);
	cr_assert_eq(config.timeouts.greeting_ms, 2);
	cr_assert_eq(config.timeouts.mail_ms, 2000);
	cr_assert_eq(config.timeouts.rcpt_ms, 3000);
	cr_assert_eq(config.timeouts.data_ms, 4000);
	cr_assert_eq(config.timeouts.data_block_ms, 5000);
	cr_assert_eq(config.timeouts.dot_ms, 6000);
	cr_assert_eq(config.timeouts.helo_ms, defaults.helo_ms);
	cr_assert_eq(config.timeouts.rset_ms, defaults.rset_ms);
	cr_assert_eq(config.timeouts.quit_ms, defaults.quit_ms);
	cr_assert_eq(config.helo_name, T_CONN_HELO);
	cr_assert_null(config.source_addr);
	cr_assert_str_eq(eng_conn_close_reason_name(ENG_CONN_CLOSE_CONNECT_REFUSED),
			 "connect_refused");
	cr_assert_str_eq(eng_conn_event_type_name(ENG_CONN_EV_MESSAGE_FAILED), "message_failed");
}

Test(conn, opening_a_conn_that_is_in_use_aborts, .signal = SIGABRT)
{
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, t_conn_free_port());
	t_conn_run_open(run);
	/* Reuse before CLOSED is a programmer error. */
	t_conn_run_open(run);
	cr_assert_fail("the second open returned");
}
