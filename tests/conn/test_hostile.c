/*
 * test_hostile.c - eng_conn against a scripted hostile MX (hostile_mx.py),
 * reliability.md 8.2: OUT-01 (refused, early close at each phase, bad
 * greeting, timeouts), OUT-02 (reply grammar torture, oversized replies,
 * replies one byte per send), OUT-06 (every RCPT 5xx but DATA 354), OUT-07
 * (unsolicited replies), OUT-08 (421 at each phase), OUT-09 (no answer to
 * the final dot) and OUT-12 (452 after two RCPTs).
 *
 * Every test checks the same invariants (t_hostile_check): exactly one
 * CLOSED and it is the last event; at most one final event per message;
 * each recipient gets at most one RCPT event; no recipient whose fate the
 * server did not state is bounced (only a 5xx RCPT reply or a 5xx final
 * reply can bounce). The MX records every byte it received, so "nothing
 * sent that should not be" is checked on the wire: no body after all
 * RCPTs were refused, no DATA in lock-step with no recipient, no command
 * after a 421. The suite runs in the ASan build too (no crash, no leak).
 *
 * 127.0.0.1 only; ports picked by the kernel (the MX writes its port to a
 * ready file, polled with a deadline). No fixed sleeps.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "engine/eng_conn.h"
#include "ring/ring.h"
#include "t_conn.h"

#define T_MX_WAIT_NS (30ull * 1000000000ull)
#define T_MX_POLL_NS (10ull * 1000000ull)
#define T_MX_PYTHON "/usr/bin/python3"
#define T_RCPTS 3u

struct t_mx {
	pid_t pid;
	uint16_t port;
	char dir[T_CONN_PATH_SIZE];
	char ready[T_CONN_PATH_SIZE + 16];
	char record[T_CONN_PATH_SIZE + 16];
	char out[T_CONN_PATH_SIZE + 16];
};

/* What the MX received on its first connection. */
struct t_mx_seen {
	uint8_t *received; /* every byte the client sent */
	size_t received_size;
	uint8_t *data; /* after 354, up to and including ".\r\n" */
	size_t data_size;
	char *commands; /* the JSON "commands" array, as text */
	char end[32];
};

/* The running MX's pid and directory, copied out of the test's stack
 * frame for .fini (which runs after a failed assertion unwound it). */
static pid_t t_mx_running_pid;
static char t_mx_running_dir[T_CONN_PATH_SIZE];

/* Remove the MX's scratch directory and the files it writes there. */
static void
t_mx_remove_dir(const char *dir)
{
	static const char *const names[] = { "ready", "record", "out" };
	char path[T_CONN_PATH_SIZE + 16];
	for (size_t i = 0; i < ENG_ARRAY_COUNT(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		(void)unlink(path);
	}
	(void)rmdir(dir);
}

/* Criterion .fini: a failed assertion leaves no MX and no directory. */
static void
t_hostile_fini(void)
{
	if (t_mx_running_pid > 0) {
		(void)kill(t_mx_running_pid, SIGKILL);
		(void)waitpid(t_mx_running_pid, NULL, 0);
		t_mx_running_pid = 0;
	}
	if (t_mx_running_dir[0] != '\0')
		t_mx_remove_dir(t_mx_running_dir);
	t_mx_running_dir[0] = '\0';
}

static void
t_nap(void)
{
	struct timespec ts = { 0, (long)T_MX_POLL_NS };
	(void)nanosleep(&ts, NULL);
}

/* The whole file, NUL-terminated (NULL when absent). */
static char *
t_slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	cr_assert_geq(size, 0);
	rewind(f);
	char *text = malloc((size_t)size + 1);
	cr_assert_not_null(text);
	size_t got = fread(text, 1, (size_t)size, f);
	fclose(f);
	text[got] = '\0';
	return text;
}

static void
t_mx_start(struct t_mx *mx, const char *scenario)
{
	if (access(T_MX_PYTHON, X_OK) != 0)
		cr_skip_test("%s missing", T_MX_PYTHON);
	const char *source_dir = getenv("RINGMAIL_SOURCE_DIR");
	cr_assert_not_null(source_dir, "RINGMAIL_SOURCE_DIR not set (run through meson test)");
	memset(mx, 0, sizeof(*mx));
	snprintf(mx->dir, sizeof(mx->dir), "/tmp/ringmail-hostile-XXXXXX");
	cr_assert_not_null(mkdtemp(mx->dir));
	snprintf(t_mx_running_dir, sizeof(t_mx_running_dir), "%s", mx->dir);
	snprintf(mx->ready, sizeof(mx->ready), "%s/ready", mx->dir);
	snprintf(mx->record, sizeof(mx->record), "%s/record", mx->dir);
	snprintf(mx->out, sizeof(mx->out), "%s/out", mx->dir);
	char script[T_CONN_PATH_SIZE];
	snprintf(script, sizeof(script), "%s/tests/conn/hostile_mx.py", source_dir);
	mx->pid = fork();
	cr_assert_geq(mx->pid, 0);
	if (mx->pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(mx->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			(void)dup2(fd, STDOUT_FILENO);
			(void)dup2(fd, STDERR_FILENO);
		}
		execl(T_MX_PYTHON, T_MX_PYTHON, script, "--scenario", scenario, "--ready",
		      mx->ready, "--record", mx->record, (char *)NULL);
		_exit(127);
	}
	t_mx_running_pid = mx->pid;
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_MX_WAIT_NS;
	char *text = NULL;
	while ((text = t_slurp(mx->ready)) == NULL) {
		int status;
		cr_assert_eq(waitpid(mx->pid, &status, WNOHANG), 0, "hostile_mx exited (see %s)",
			     mx->out);
		cr_assert_lt(eng_now_monotonic_ns(), deadline_ns, "hostile_mx never listened");
		t_nap();
	}
	mx->port = (uint16_t)atoi(text);
	free(text);
	cr_assert_gt(mx->port, 0);
}

static void
t_mx_stop(struct t_mx *mx)
{
	if (mx->pid > 0) {
		(void)kill(mx->pid, SIGTERM);
		(void)waitpid(mx->pid, NULL, 0);
		mx->pid = 0;
	}
	t_mx_remove_dir(mx->dir);
	t_mx_running_pid = 0;
	t_mx_running_dir[0] = '\0';
}

static int
t_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode the hex string field "name" of a record line into a heap buffer. */
static uint8_t *
t_record_hex(const char *line, const char *name, size_t *size)
{
	char key[64];
	snprintf(key, sizeof(key), "\"%s\": \"", name);
	const char *p = strstr(line, key);
	cr_assert_not_null(p, "no %s in the record", name);
	p += strlen(key);
	const char *end = strchr(p, '"');
	cr_assert_not_null(end);
	size_t n = (size_t)(end - p) / 2;
	uint8_t *out = malloc(n + 1);
	cr_assert_not_null(out);
	for (size_t i = 0; i < n; i++) {
		int hi = t_hex_value(p[2 * i]), lo = t_hex_value(p[2 * i + 1]);
		cr_assert(hi >= 0 && lo >= 0, "bad hex in %s", name);
		out[i] = (uint8_t)(hi * 16 + lo);
	}
	out[n] = '\0';
	*size = n;
	return out;
}

/* Wait (deadline) for the MX's record of its first connection. */
static void
t_mx_seen(const struct t_mx *mx, struct t_mx_seen *seen)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_MX_WAIT_NS;
	char *text = NULL;
	while ((text = t_slurp(mx->record)) == NULL || strchr(text, '\n') == NULL) {
		free(text);
		cr_assert_lt(eng_now_monotonic_ns(), deadline_ns, "the MX recorded no connection");
		t_nap();
	}
	*strchr(text, '\n') = '\0';
	memset(seen, 0, sizeof(*seen));
	seen->received = t_record_hex(text, "received_hex", &seen->received_size);
	seen->data = t_record_hex(text, "data_hex", &seen->data_size);
	const char *commands = strstr(text, "\"commands\": [");
	cr_assert_not_null(commands);
	const char *commands_end = strchr(commands, ']');
	cr_assert_not_null(commands_end);
	size_t commands_size = (size_t)(commands_end - commands) + 1;
	seen->commands = malloc(commands_size + 1);
	cr_assert_not_null(seen->commands);
	memcpy(seen->commands, commands, commands_size);
	seen->commands[commands_size] = '\0';
	const char *end = strstr(text, "\"end\": \"");
	cr_assert_not_null(end);
	end += strlen("\"end\": \"");
	size_t end_size = strcspn(end, "\"");
	cr_assert_lt(end_size, sizeof(seen->end));
	memcpy(seen->end, end, end_size);
	free(text);
}

static void
t_mx_seen_free(struct t_mx_seen *seen)
{
	free(seen->received);
	free(seen->data);
	free(seen->commands);
}

/* Occurrences of a command verb ("\"DATA", "\"RSET") in the commands. */
static uint32_t
t_commands_count(const struct t_mx_seen *seen, const char *prefix)
{
	uint32_t count = 0;
	for (const char *p = strstr(seen->commands, prefix); p != NULL; p = strstr(p + 1, prefix))
		count++;
	return count;
}

/* One scenario run: the MX, the conn, one message of T_RCPTS recipients. */
struct t_hostile {
	struct t_mx mx;
	struct t_conn_run *run;
	struct t_conn_message *m;
	uint16_t codes[T_RCPTS]; /* RCPT 4xx/5xx, else the final code, else 0 */
	bool rcpt_seen[T_RCPTS];
	uint16_t rcpt_codes[T_RCPTS]; /* the RCPT reply, 0 when none */
	const struct t_conn_event *final;
	const struct t_conn_event *closed;
	struct t_mx_seen seen;
};

/* The invariants every scenario must keep, and the per-recipient view. */
static void
t_hostile_check(struct t_hostile *h, const char *scenario)
{
	const struct t_conn_run *run = h->run;
	const struct smtp_message *message = &h->m->message;
	cr_assert_gt(run->event_count, 0);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_CLOSED), 1, "%s: CLOSED count", scenario);
	h->closed = &run->events[run->event_count - 1];
	cr_assert_eq(h->closed->type, ENG_CONN_EV_CLOSED, "%s: CLOSED is not last", scenario);
	uint16_t final_code = 0;
	for (uint32_t i = 0; i < run->event_count; i++) {
		const struct t_conn_event *e = &run->events[i];
		if (e->type == ENG_CONN_EV_RCPT) {
			cr_assert_eq(e->message, message);
			cr_assert_lt(e->rcpt_index, message->rcpt_count);
			cr_assert(!h->rcpt_seen[e->rcpt_index], "%s: rcpt %u answered twice",
				  scenario, e->rcpt_index);
			h->rcpt_seen[e->rcpt_index] = true;
			h->rcpt_codes[e->rcpt_index] = e->code;
			cr_assert(e->code >= 200 && e->code <= 599);
		} else if (e->type == ENG_CONN_EV_MESSAGE_DONE ||
			   e->type == ENG_CONN_EV_MESSAGE_FAILED) {
			cr_assert_eq(e->message, message);
			cr_assert_null(h->final, "%s: two final events", scenario);
			h->final = e;
			final_code = e->code;
		}
	}
	for (uint32_t r = 0; r < message->rcpt_count; r++) {
		h->codes[r] = h->rcpt_codes[r] >= 400 ? h->rcpt_codes[r] : final_code;
		/* Accepted at RCPT and no final event would lose the recipient. */
		cr_assert(!(h->rcpt_codes[r] / 100 == 2 && h->final == NULL),
			  "%s: rcpt %u accepted but the message has no final event", scenario, r);
	}
}

static void
t_hostile_go(struct t_hostile *h, const char *scenario, bool is_pipelining, uint32_t dot_ms)
{
	memset(h, 0, sizeof(*h));
	t_mx_start(&h->mx, scenario);
	h->run = t_conn_run_new();
	t_conn_addr(&h->run->addr, &h->run->addr_len, 1, h->mx.port);
	t_conn_config(&h->run->config, 5000, 10000);
	h->run->config.pipelining_is_disabled = !is_pipelining;
	if (dot_ms > 0)
		h->run->config.timeouts.dot_ms = dot_ms;
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(31, 2000, raw, sizeof(raw));
	h->m = t_conn_message_new(NULL, T_RCPTS, raw, raw_size);
	h->run->messages[h->run->message_count++] = h->m;
	t_conn_run_open(h->run);
	t_conn_run_until_closed(h->run, T_CONN_WAIT_NS);
	t_hostile_check(h, scenario);
	t_mx_seen(&h->mx, &h->seen);
}

static void
t_hostile_end(struct t_hostile *h)
{
	t_mx_stop(&h->mx);
	t_mx_seen_free(&h->seen);
	t_conn_run_free(h->run);
	t_conn_message_free(h->m);
}

/* Two messages of two recipients on one connection to scenario's MX (the
 * RSET cases): the conn has closed and the MX's view is read on return. */
struct t_hostile_two {
	struct t_mx mx;
	struct t_conn_run *run;
	struct t_conn_message *m0;
	struct t_conn_message *m1;
	struct t_mx_seen seen;
};

static void
t_hostile_two_go(struct t_hostile_two *h, const char *scenario)
{
	memset(h, 0, sizeof(*h));
	t_mx_start(&h->mx, scenario);
	h->run = t_conn_run_new();
	t_conn_addr(&h->run->addr, &h->run->addr_len, 1, h->mx.port);
	uint8_t raw[4096];
	size_t raw_size = t_conn_raw_body(37, 1500, raw, sizeof(raw));
	h->m0 = t_conn_message_new(NULL, 2, raw, raw_size);
	h->m1 = t_conn_message_new(NULL, 2, raw, raw_size);
	h->run->messages[h->run->message_count++] = h->m0;
	h->run->messages[h->run->message_count++] = h->m1;
	t_conn_run_open(h->run);
	t_conn_run_until_closed(h->run, T_CONN_WAIT_NS);
	t_mx_seen(&h->mx, &h->seen);
}

static void
t_hostile_two_end(struct t_hostile_two *h)
{
	t_mx_seen_free(&h->seen);
	t_mx_stop(&h->mx);
	t_conn_run_free(h->run);
	t_conn_message_free(h->m0);
	t_conn_message_free(h->m1);
}

/* Nobody bounced, nobody delivered: every recipient deferred (4xx) or
 * left to the owner (0: the conn failed before the message started). */
static void
t_assert_all_deferred(const struct t_hostile *h, const char *scenario)
{
	cr_assert_eq(t_conn_count(h->run, ENG_CONN_EV_MESSAGE_DONE), 0, "%s: delivered", scenario);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert(h->codes[r] == 0 || h->codes[r] / 100 == 4, "%s: rcpt %u got %u",
			  scenario, r, h->codes[r]);
}

/* The session never got to a transaction: no READY, no MAIL on the wire. */
static void
t_assert_no_transaction(const struct t_hostile *h, const char *scenario)
{
	cr_assert_eq(t_conn_count(h->run, ENG_CONN_EV_READY), 0, "%s: READY", scenario);
	cr_assert_eq(t_conn_count(h->run, ENG_CONN_EV_RCPT), 0, "%s: RCPT events", scenario);
	cr_assert_null(h->final, "%s: a message event", scenario);
	cr_assert_eq(t_commands_count(&h->seen, "\"MAIL"), 0, "%s: MAIL sent: %s", scenario,
		     h->seen.commands);
	cr_assert_eq(h->seen.data_size, 0, "%s: data sent", scenario);
}

static void
t_assert_reason(const struct t_hostile *h, enum eng_conn_close_reason want, const char *scenario)
{
	cr_assert_eq(h->closed->reason, want, "%s: reason %s, want %s", scenario,
		     eng_conn_close_reason_name(h->closed->reason),
		     eng_conn_close_reason_name(want));
}

static bool
t_reason_is_remote_close(enum eng_conn_close_reason reason)
{
	return reason == ENG_CONN_CLOSE_REMOTE_CLOSE || reason == ENG_CONN_CLOSE_NETWORK_ERROR;
}

/* data_hex equals the message's wire form (body and ".\r\n"). */
static void
t_assert_body_sent(const struct t_hostile *h, const char *scenario)
{
	cr_assert_eq(h->seen.data_size, h->m->wire_size, "%s: %zu data bytes, want %zu", scenario,
		     h->seen.data_size, h->m->wire_size);
	cr_assert_eq(memcmp(h->seen.data, h->m->wire, h->m->wire_size), 0, "%s: data differs",
		     scenario);
}

/* OUT-01: nothing listens. */
Test(hostile, refused_connection_defers_without_events, .fini = t_hostile_fini)
{
	struct t_conn_run *run = t_conn_run_new();
	t_conn_addr(&run->addr, &run->addr_len, 1, t_conn_free_port());
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_CONNECT_REFUSED, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert(!closed->was_connected);
	cr_assert_eq(run->event_count, 1, "only CLOSED");
	t_conn_run_free(run);
}

/* OUT-01: 554 greeting, 421 greeting, close instead of a greeting. */
Test(hostile, refusing_greetings_end_before_any_transaction, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "greet-554", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_REJECTED, "greet-554");
	cr_assert_eq(h.closed->code, 554);
	t_assert_no_transaction(&h, "greet-554");
	t_hostile_end(&h);

	t_hostile_go(&h, "greet-421", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_SERVER_CLOSING, "greet-421");
	t_assert_no_transaction(&h, "greet-421");
	cr_assert_eq(h.seen.received_size, 0, "nothing (not even QUIT) after a 421");
	t_hostile_end(&h);

	t_hostile_go(&h, "greet-close", true, 0);
	cr_assert(t_reason_is_remote_close(h.closed->reason), "greet-close: reason %s",
		  eng_conn_close_reason_name(h.closed->reason));
	cr_assert(h.closed->was_connected);
	t_assert_no_transaction(&h, "greet-close");
	t_hostile_end(&h);
}

/* OUT-02: greetings that break the reply grammar: protocol error, close. */
Test(hostile, malformed_greetings_are_protocol_errors, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = {
		"greet-bad-short",	"greet-bad-long-code", "greet-bad-separator",
		"greet-bad-class-0",	"greet-bad-class-6",   "greet-bad-bare-lf",
		"greet-bad-nul",	"greet-bad-code-change", "greet-bad-nondigit",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		struct t_hostile h;
		t_hostile_go(&h, scenarios[i], true, 0);
		t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, scenarios[i]);
		cr_assert_eq(h.closed->error, SMTP_CLIENT_ERROR_MALFORMED_REPLY, "%s: error %d",
			     scenarios[i], (int)h.closed->error);
		t_assert_no_transaction(&h, scenarios[i]);
		t_hostile_end(&h);
	}
}

/* OUT-02: EHLO replies with a code change, a 100 KB line, 10k lines. */
Test(hostile, malformed_and_oversized_ehlo_replies_close, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = {
		"ehlo-code-change", "ehlo-long-line", "ehlo-many-lines",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		struct t_hostile h;
		t_hostile_go(&h, scenarios[i], true, 0);
		t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, scenarios[i]);
		t_assert_no_transaction(&h, scenarios[i]);
		t_hostile_end(&h);
	}
}

/* OUT-02: a malformed or oversized RCPT reply: the message is deferred as
 * a whole (no recipient bounced or delivered), no body is sent. */
Test(hostile, malformed_and_oversized_rcpt_replies_defer_everyone, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = {
		"rcpt-code-change", "rcpt-nondigit", "rcpt-no-separator",
		"rcpt-long-line",   "rcpt-many-lines",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		for (int pipelining = 0; pipelining < 2; pipelining++) {
			struct t_hostile h;
			t_hostile_go(&h, scenarios[i], pipelining != 0, 0);
			t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, scenarios[i]);
			cr_assert_not_null(h.final, "%s: no final event", scenarios[i]);
			cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_FAILED);
			t_assert_all_deferred(&h, scenarios[i]);
			cr_assert_eq(h.seen.data_size, 0, "%s: body sent", scenarios[i]);
			t_hostile_end(&h);
		}
	}
}

/* OUT-01: the server closes at each phase. Before the transaction: no
 * message event; in it: every recipient deferred; after the body: deferred
 * with the outcome unknown (the server may have taken it, OUT-09). */
Test(hostile, early_close_at_each_phase_defers, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = {
		"close-at-EHLO", "close-at-MAIL", "close-at-RCPT", "close-at-DATA", "close-at-DOT",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		struct t_hostile h;
		t_hostile_go(&h, scenarios[i], i % 2 == 0, 0);
		cr_assert(t_reason_is_remote_close(h.closed->reason), "%s: reason %s",
			  scenarios[i], eng_conn_close_reason_name(h.closed->reason));
		t_assert_all_deferred(&h, scenarios[i]);
		if (i == 0) {
			t_assert_no_transaction(&h, scenarios[i]);
		} else {
			cr_assert_not_null(h.final, "%s: no final event", scenarios[i]);
			cr_assert_eq(h.final->outcome_is_unknown, i == 4, "%s: outcome unknown",
				     scenarios[i]);
		}
		if (i == 4)
			t_assert_body_sent(&h, scenarios[i]);
		else
			cr_assert_eq(h.seen.data_size, 0, "%s: body sent", scenarios[i]);
		t_hostile_end(&h);
	}
}

/* OUT-08: 421 at EHLO, MAIL, the second RCPT, DATA and after the dot:
 * close, and every recipient (even one accepted at RCPT) deferred. */
Test(hostile, reply_421_at_each_phase_defers_everyone, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = {
		"421-at-EHLO", "421-at-MAIL", "421-at-RCPT1", "421-at-DATA", "421-at-DOT",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		for (int pipelining = 0; pipelining < 2; pipelining++) {
			struct t_hostile h;
			t_hostile_go(&h, scenarios[i], pipelining != 0, 0);
			t_assert_reason(&h, ENG_CONN_CLOSE_SERVER_CLOSING, scenarios[i]);
			cr_assert_eq(h.closed->code, 421);
			t_assert_all_deferred(&h, scenarios[i]);
			if (i == 0)
				t_assert_no_transaction(&h, scenarios[i]);
			else
				cr_assert_not_null(h.final, "%s: no final event", scenarios[i]);
			if (i == 2) {
				cr_assert_eq(h.rcpt_codes[0], 250, "rcpt0 was accepted at RCPT");
				cr_assert_eq(h.codes[0], 421, "and deferred by the 421");
			}
			if (i < 4)
				cr_assert_eq(h.seen.data_size, 0, "%s: body sent", scenarios[i]);
			t_hostile_end(&h);
		}
	}
}

/* OUT-02: every reply byte in its own send, with a multi-line 550 and a
 * 451 among the RCPT replies: each recipient gets its own reply. */
Test(hostile, replies_split_at_every_byte_reach_the_right_recipient, .fini = t_hostile_fini,
     .timeout = 120)
{
	for (int pipelining = 0; pipelining < 2; pipelining++) {
		struct t_hostile h;
		t_hostile_go(&h, "split-bytes", pipelining != 0, 0);
		t_assert_reason(&h, ENG_CONN_CLOSE_QUIT, "split-bytes");
		cr_assert_eq(h.rcpt_codes[0], 250);
		cr_assert_eq(h.rcpt_codes[1], 550);
		cr_assert_eq(h.rcpt_codes[2], 451);
		cr_assert_not_null(h.final);
		cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_DONE);
		cr_assert_eq(h.codes[0], 250);
		t_assert_body_sent(&h, "split-bytes");
		/* The replies (about 300 bytes) did come in many pieces. */
		cr_assert_gt(eng_conn_stats(&h.run->conn)->recvs_count, 10);
		t_hostile_end(&h);
	}
}

/* OUT-07: replies nobody asked for, written with a solicited one. */
Test(hostile, unsolicited_replies_are_protocol_errors_never_shifted, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "extra-after-greeting", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-greeting");
	t_assert_no_transaction(&h, "extra-after-greeting");
	t_hostile_end(&h);

	t_hostile_go(&h, "extra-after-ehlo", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-ehlo");
	t_assert_all_deferred(&h, "extra-after-ehlo");
	cr_assert_eq(h.seen.data_size, 0);
	t_hostile_end(&h);

	/* Lock-step: RCPT0's 250 comes with a 252 before RCPT1 was sent. */
	t_hostile_go(&h, "extra-after-rcpt-lockstep", false, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-rcpt-lockstep");
	cr_assert_eq(h.closed->error, SMTP_CLIENT_ERROR_UNEXPECTED_REPLY);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert_neq(h.rcpt_codes[r], 252, "the 252 was shifted onto rcpt %u", r);
	t_assert_all_deferred(&h, "extra-after-rcpt-lockstep");
	cr_assert_eq(h.seen.data_size, 0);
	t_hostile_end(&h);

	/* Pipelined, the same bytes cannot be told from a reply to RCPT1 (the
	 * batch was sent): the 252 lands on RCPT1, every later reply shifts,
	 * and DATA gets a 2xx, which no DATA can have: protocol error, the
	 * message fails as a whole, everyone deferred, no body sent. (A
	 * shifted 5xx would have bounced RCPT1 before that: see
	 * docs/hostile-peers.md, "Known limit".) */
	t_hostile_go(&h, "extra-after-rcpt", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-rcpt");
	cr_assert_eq(h.closed->error, SMTP_CLIENT_ERROR_BAD_REPLY_CODE);
	t_assert_all_deferred(&h, "extra-after-rcpt");
	cr_assert_eq(h.seen.data_size, 0);
	t_hostile_end(&h);

	/* 354 and a 252 in one write: the 252 must not end the data. */
	t_hostile_go(&h, "extra-after-data", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-data");
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_FAILED);
	t_assert_all_deferred(&h, "extra-after-data");
	t_hostile_end(&h);

	/* The 250 to the dot is real: delivered; the 252 after it closes. */
	t_hostile_go(&h, "extra-after-dot", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, "extra-after-dot");
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_DONE);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert_eq(h.codes[r], 250);
	t_assert_body_sent(&h, "extra-after-dot");
	t_hostile_end(&h);
}

/* OUT-09: the final dot is never answered: deferred, outcome unknown. */
Test(hostile, unanswered_dot_defers_with_outcome_unknown, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "dot-hang", true, 500);
	t_assert_reason(&h, ENG_CONN_CLOSE_TIMEOUT, "dot-hang");
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_FAILED);
	cr_assert(h.final->outcome_is_unknown);
	cr_assert(h.final->is_local);
	t_assert_all_deferred(&h, "dot-hang");
	t_assert_body_sent(&h, "dot-hang");
	t_hostile_end(&h);
}

/* OUT-06: every RCPT refused. Pipelined, DATA was already sent and gets
 * 354: only "." follows, then RSET or QUIT. Lock-step: no DATA at all. */
Test(hostile, all_rcpts_refused_sends_no_body, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "rcpt-all-5xx", true, 0);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert_eq(h.codes[r], 550, "rcpt %u got %u", r, h.codes[r]);
	cr_assert_eq(t_conn_count(h.run, ENG_CONN_EV_MESSAGE_DONE), 0);
	cr_assert_eq(h.seen.data_size, 3, "after 354: %zu bytes", h.seen.data_size);
	cr_assert_eq(memcmp(h.seen.data, ".\r\n", 3), 0);
	cr_assert_eq(t_commands_count(&h.seen, "\"DATA"), 1);
	cr_assert(t_commands_count(&h.seen, "\"RSET") + t_commands_count(&h.seen, "\"QUIT") >= 1,
		  "no RSET or QUIT after the dot: %s", h.seen.commands);
	t_assert_reason(&h, ENG_CONN_CLOSE_QUIT, "rcpt-all-5xx");
	t_hostile_end(&h);

	t_hostile_go(&h, "rcpt-all-5xx-lockstep", false, 0);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert_eq(h.codes[r], 550, "rcpt %u got %u", r, h.codes[r]);
	cr_assert_eq(t_commands_count(&h.seen, "\"DATA"), 0, "DATA sent: %s", h.seen.commands);
	cr_assert_eq(h.seen.data_size, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_QUIT, "rcpt-all-5xx-lockstep");
	t_hostile_end(&h);
}

/* OUT-12: 452 after two RCPTs: the first two delivered, the third
 * deferred (retried in a later transaction by the scheduler). */
Test(hostile, rcpt_452_defers_only_the_rest, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "rcpt-452-after-2", true, 0);
	cr_assert_eq(h.codes[0], 250);
	cr_assert_eq(h.codes[1], 250);
	cr_assert_eq(h.codes[2], 452);
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_DONE);
	t_assert_body_sent(&h, "rcpt-452-after-2");
	t_assert_reason(&h, ENG_CONN_CLOSE_QUIT, "rcpt-452-after-2");
	t_hostile_end(&h);
}

/* Replies of a class their command cannot have: protocol error, nobody
 * bounced or delivered, no body behind a DATA that got no 354. */
Test(hostile, impossible_reply_classes_defer_everyone, .fini = t_hostile_fini)
{
	static const char *const scenarios[] = { "rcpt-354", "data-250", "dot-354" };
	for (size_t i = 0; i < ENG_ARRAY_COUNT(scenarios); i++) {
		struct t_hostile h;
		t_hostile_go(&h, scenarios[i], true, 0);
		t_assert_reason(&h, ENG_CONN_CLOSE_PROTOCOL_ERROR, scenarios[i]);
		cr_assert_not_null(h.final, "%s: no final event", scenarios[i]);
		cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_FAILED);
		t_assert_all_deferred(&h, scenarios[i]);
		/* Body lines would show up as commands when no 354 came. */
		cr_assert_null(strstr(h.seen.commands, "Subject:"), "%s: body sent: %s",
			       scenarios[i], h.seen.commands);
		if (i == 2) {
			cr_assert(h.final->outcome_is_unknown, "dot-354: the body was sent");
			t_assert_body_sent(&h, scenarios[i]);
		} else {
			cr_assert_eq(h.seen.data_size, 0, "%s: body sent", scenarios[i]);
		}
		t_hostile_end(&h);
	}
}

/* OUT-08: an unsolicited 421 right behind the 250 to the dot: the message
 * stays delivered (the 250 was real), the conn closes as SERVER_CLOSING. */
Test(hostile, unsolicited_421_after_delivery_keeps_it_delivered, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "421-after-done", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_SERVER_CLOSING, "421-after-done");
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_DONE);
	for (uint32_t r = 0; r < T_RCPTS; r++)
		cr_assert_eq(h.codes[r], 250);
	t_assert_body_sent(&h, "421-after-done");
	t_hostile_end(&h);
}

/* EHLO refused: HELO, lock-step, delivered; HELO refused too: REJECTED. */
Test(hostile, ehlo_refused_falls_back_to_helo, .fini = t_hostile_fini)
{
	struct t_hostile h;
	t_hostile_go(&h, "helo-fallback", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_QUIT, "helo-fallback");
	cr_assert(!h.run->saw_pipelining);
	cr_assert_not_null(h.final);
	cr_assert_eq(h.final->type, ENG_CONN_EV_MESSAGE_DONE);
	cr_assert_eq(t_commands_count(&h.seen, "\"HELO"), 1);
	t_assert_body_sent(&h, "helo-fallback");
	t_hostile_end(&h);

	t_hostile_go(&h, "helo-rejected", true, 0);
	t_assert_reason(&h, ENG_CONN_CLOSE_REJECTED, "helo-rejected");
	cr_assert_eq(h.closed->code, 550);
	t_assert_no_transaction(&h, "helo-rejected");
	t_hostile_end(&h);
}

/* RSET refused before the second transaction (the first ended without an
 * end-of-data reply: DATA refused, so RSET is due): the first fails with
 * the DATA reply, the second is deferred whole, no body is ever sent. */
Test(hostile, rset_refused_defers_the_next_message, .fini = t_hostile_fini)
{
	struct t_hostile_two h;
	t_hostile_two_go(&h, "data-5xx-rset-5xx");
	const struct t_conn_run *run = h.run;
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_REJECTED, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	uint32_t failed0 = 0, failed1 = 0;
	for (uint32_t i = 0; i < run->event_count; i++) {
		const struct t_conn_event *e = &run->events[i];
		cr_assert_neq(e->type, ENG_CONN_EV_MESSAGE_DONE);
		if (e->type == ENG_CONN_EV_MESSAGE_FAILED && e->message == &h.m0->message) {
			cr_assert_eq(e->code, 554, "first message got %u", e->code);
			cr_assert_not(e->is_local);
			failed0++;
		} else if (e->type == ENG_CONN_EV_MESSAGE_FAILED) {
			cr_assert_eq(e->message, &h.m1->message);
			cr_assert_eq(e->code / 100, 4, "second message got %u", e->code);
			failed1++;
		} else if (e->type == ENG_CONN_EV_RCPT) {
			cr_assert_eq(e->message, &h.m0->message, "RCPT events of the second message");
		}
	}
	cr_assert_eq(failed0, 1);
	cr_assert_eq(failed1, 1);
	cr_assert_eq(t_commands_count(&h.seen, "\"RSET"), 1, "%s", h.seen.commands);
	cr_assert_eq(h.seen.data_size, 0, "no body: %s", h.seen.commands);
	t_hostile_two_end(&h);
}

/* After a reply to the end of data the transaction is over (RFC 5321
 * 4.1.1.4): no RSET, even for an MX that would refuse one; the second
 * message goes out behind the first one's dot and both are delivered. */
Test(hostile, no_rset_after_a_delivered_message, .fini = t_hostile_fini)
{
	struct t_hostile_two h;
	t_hostile_two_go(&h, "rset-5xx");
	const struct t_conn_run *run = h.run;
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT, "reason %s",
		     eng_conn_close_reason_name(t_conn_closed(run)->reason));
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), 2);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_FAILED), 0);
	cr_assert_eq(run->pipelined_count, 1);
	cr_assert_eq(t_commands_count(&h.seen, "\"RSET"), 0, "%s", h.seen.commands);
	cr_assert_eq(t_commands_count(&h.seen, "\"MAIL"), 2, "%s", h.seen.commands);
	cr_assert_eq(h.seen.data_size, h.m0->wire_size + h.m1->wire_size, "%s", h.seen.commands);
	t_hostile_two_end(&h);
}
