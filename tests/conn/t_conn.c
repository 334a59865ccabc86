/*
 * t_conn.c - peers, messages and the recording owner for the eng_conn
 * integration tests (t_conn.h).
 */
#include "t_conn.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "smtp/smtp_dot.h"

#define T_CONN_PEERS_MAX 8
#define T_CONN_READY_NS (20ull * 1000000000ull)
#define T_CONN_POLL_NS (10ull * 1000000ull)
#define T_CONN_SMTP_SINK "/usr/sbin/smtp-sink"

/* Peers of the running test: pid and scratch directory, for .fini. */
static pid_t t_conn_pids[T_CONN_PEERS_MAX];
static char t_conn_dirs[T_CONN_PEERS_MAX][T_CONN_PATH_SIZE];

/* Remove a scratch directory and the files a peer leaves in it. */
static void
t_conn_remove_dir(const char *dir)
{
	static const char *const names[] = { "out", "record" };
	char path[T_CONN_PATH_SIZE + 16];
	for (size_t i = 0; i < ENG_ARRAY_COUNT(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		(void)unlink(path);
	}
	(void)rmdir(dir);
}

void
t_conn_fini(void)
{
	for (int i = 0; i < T_CONN_PEERS_MAX; i++) {
		if (t_conn_pids[i] <= 0)
			continue;
		(void)kill(t_conn_pids[i], SIGKILL);
		(void)waitpid(t_conn_pids[i], NULL, 0);
		t_conn_remove_dir(t_conn_dirs[i]);
		t_conn_pids[i] = 0;
	}
}

static void
t_conn_pid_add(pid_t pid, const char *dir)
{
	for (int i = 0; i < T_CONN_PEERS_MAX; i++) {
		if (t_conn_pids[i] == 0) {
			t_conn_pids[i] = pid;
			snprintf(t_conn_dirs[i], sizeof(t_conn_dirs[i]), "%s", dir);
			return;
		}
	}
	cr_assert_fail("too many peers");
}

static void
t_conn_pid_remove(pid_t pid)
{
	for (int i = 0; i < T_CONN_PEERS_MAX; i++) {
		if (t_conn_pids[i] == pid)
			t_conn_pids[i] = 0;
	}
}

static void
t_conn_nap(void)
{
	struct timespec ts = { 0, (long)T_CONN_POLL_NS };
	(void)nanosleep(&ts, NULL);
}

uint16_t
t_conn_free_port(void)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	socklen_t len = sizeof(addr);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	close(fd);
	return ntohs(addr.sin_port);
}

void
t_conn_addr(struct sockaddr_storage *addr, uint32_t *addr_len, uint8_t ip_last, uint16_t port)
{
	struct sockaddr_in *in = (struct sockaddr_in *)addr;
	memset(addr, 0, sizeof(*addr));
	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	in->sin_addr.s_addr = htonl(0x7f000000u | ip_last);
	*addr_len = sizeof(*in);
}

/* Is 127.0.0.1:port (or 0.0.0.0:port) in LISTEN state? */
static bool
t_conn_is_listening(uint16_t port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	if (f == NULL)
		return false;
	char line[512];
	char want_lo[32], want_any[32];
	snprintf(want_lo, sizeof(want_lo), "0100007F:%04X", port);
	snprintf(want_any, sizeof(want_any), "00000000:%04X", port);
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char local[64], remote[64], state[8];
		if (sscanf(line, " %*s %63s %63s %7s", local, remote, state) != 3)
			continue;
		found = strcmp(state, "0A") == 0 &&
			(strcmp(local, want_lo) == 0 || strcmp(local, want_any) == 0);
	}
	fclose(f);
	return found;
}

static void
t_conn_wait_listening(const struct t_conn_peer *peer)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_CONN_READY_NS;
	while (!t_conn_is_listening(peer->port)) {
		int status;
		cr_assert_eq(waitpid(peer->pid, &status, WNOHANG), 0,
			     "peer exited before listening (see %s)", peer->out);
		cr_assert_lt(eng_now_monotonic_ns(), deadline_ns, "peer never listened");
		t_conn_nap();
	}
}

static void
t_conn_scratch(struct t_conn_peer *peer)
{
	memset(peer, 0, sizeof(*peer));
	snprintf(peer->dir, sizeof(peer->dir), "/tmp/ringmail-conn-XXXXXX");
	cr_assert_not_null(mkdtemp(peer->dir));
	cr_assert_eq(chmod(peer->dir, 0777), 0);
	snprintf(peer->out, sizeof(peer->out), "%s/out", peer->dir);
	snprintf(peer->record, sizeof(peer->record), "%s/record", peer->dir);
	peer->port = t_conn_free_port();
}

/* fork + exec argv with stdout and stderr to out; dies with the test. */
static pid_t
t_conn_spawn(const char *const *argv, const char *out, const char *dir)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			(void)dup2(fd, STDOUT_FILENO);
			(void)dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	t_conn_pid_add(pid, dir);
	return pid;
}

/* Run argv to completion; its exit status, or -1. */
static int
t_conn_run_command(const char *const *argv)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			(void)dup2(fd, STDOUT_FILENO);
			(void)dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

void
t_conn_start_smtp_sink(struct t_conn_peer *peer)
{
	if (access(T_CONN_SMTP_SINK, X_OK) != 0)
		cr_skip_test("smtp-sink not installed (tools/install-deps installs postfix)");
	t_conn_scratch(peer);
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", (unsigned)peer->port);
	const char *argv[12];
	int n = 0;
	argv[n++] = T_CONN_SMTP_SINK;
	argv[n++] = "-c";
	argv[n++] = "-D";
	argv[n++] = peer->record;
	if (geteuid() == 0) {
		argv[n++] = "-u";
		argv[n++] = "root";
	}
	argv[n++] = listen;
	argv[n++] = "100";
	argv[n] = NULL;
	peer->pid = t_conn_spawn(argv, peer->out, peer->dir);
	t_conn_wait_listening(peer);
}

/* An interpreter that has aiosmtpd, or NULL. */
static const char *
t_conn_python(void)
{
	static const char *const candidates[] = { "/usr/bin/python3", "python3" };
	for (size_t i = 0; i < ENG_ARRAY_COUNT(candidates); i++) {
		const char *argv[] = { candidates[i], "-c", "import aiosmtpd", NULL };
		if (t_conn_run_command(argv) == 0)
			return candidates[i];
	}
	return NULL;
}

void
t_conn_start_py_sink(struct t_conn_peer *peer, const char *const *args)
{
	const char *python = t_conn_python();
	if (python == NULL)
		cr_skip_test("python3-aiosmtpd not installed (tools/install-deps installs it)");
	const char *source_dir = getenv("RINGMAIL_SOURCE_DIR");
	cr_assert_not_null(source_dir, "RINGMAIL_SOURCE_DIR not set (run through meson test)");
	t_conn_scratch(peer);
	char script[T_CONN_PATH_SIZE], port[16];
	snprintf(script, sizeof(script), "%s/tests/conn/sink.py", source_dir);
	snprintf(port, sizeof(port), "%u", (unsigned)peer->port);
	const char *argv[32];
	int n = 0;
	argv[n++] = python;
	argv[n++] = script;
	argv[n++] = "--port";
	argv[n++] = port;
	argv[n++] = "--record";
	argv[n++] = peer->record;
	for (int i = 0; args != NULL && args[i] != NULL; i++) {
		cr_assert_lt(n, 30);
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	peer->pid = t_conn_spawn(argv, peer->out, peer->dir);
	t_conn_wait_listening(peer);
}

void
t_conn_stop(struct t_conn_peer *peer)
{
	if (peer->pid <= 0)
		return;
	(void)kill(peer->pid, SIGTERM);
	(void)waitpid(peer->pid, NULL, 0);
	t_conn_pid_remove(peer->pid);
	peer->pid = 0;
	t_conn_remove_dir(peer->dir);
}

/* The whole file into a NUL-terminated heap buffer (or NULL). */
static char *
t_conn_slurp(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	size_t cap = 1 << 16, used = 0;
	char *buf = malloc(cap + 1);
	cr_assert_not_null(buf);
	for (;;) {
		size_t got = fread(buf + used, 1, cap - used, f);
		used += got;
		if (used < cap)
			break;
		cap *= 2;
		buf = realloc(buf, cap + 1);
		cr_assert_not_null(buf);
	}
	fclose(f);
	buf[used] = '\0';
	if (size != NULL)
		*size = used;
	return buf;
}

void
t_conn_smtp_sink_counters(const struct t_conn_peer *peer, long *sess, long *quit, long *mesg)
{
	*sess = *quit = *mesg = -1;
	char *text = t_conn_slurp(peer->out, NULL);
	if (text == NULL)
		return;
	/* Lines end in CR: the last "sess=" is the latest. */
	char *last = NULL;
	for (char *p = strstr(text, "sess="); p != NULL; p = strstr(p + 1, "sess="))
		last = p;
	if (last != NULL && sscanf(last, "sess=%ld quit=%ld mesg=%ld", sess, quit, mesg) != 3)
		*sess = *quit = *mesg = -1;
	free(text);
}

size_t
t_conn_file_count(const char *path, const char *needle)
{
	char *text = t_conn_slurp(path, NULL);
	if (text == NULL)
		return 0;
	size_t count = 0;
	for (char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle))
		count++;
	free(text);
	return count;
}

bool
t_conn_record_line(const char *path, uint32_t index, char *out, size_t out_size)
{
	char *text = t_conn_slurp(path, NULL);
	if (text == NULL)
		return false;
	char *line = text;
	for (uint32_t i = 0; i < index && line != NULL; i++) {
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	bool found = line != NULL && *line != '\0';
	if (found) {
		char *end = strchr(line, '\n');
		size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
		cr_assert_lt(len, out_size, "record line too long");
		memcpy(out, line, len);
		out[len] = '\0';
	}
	free(text);
	return found;
}

static int
t_conn_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

size_t
t_conn_record_body(const char *line, uint8_t *out, size_t out_size)
{
	const char *p = strstr(line, "\"body_hex\": \"");
	if (p == NULL)
		return SIZE_MAX;
	p += strlen("\"body_hex\": \"");
	size_t n = 0;
	while (p[0] != '"' && p[0] != '\0') {
		int hi = t_conn_hex_value(p[0]), lo = t_conn_hex_value(p[1]);
		if (hi < 0 || lo < 0 || n == out_size)
			return SIZE_MAX;
		out[n++] = (uint8_t)(hi * 16 + lo);
		p += 2;
	}
	return n;
}

void
t_conn_config(struct eng_conn_config *config, uint32_t connect_ms, uint32_t reply_ms)
{
	memset(config, 0, sizeof(*config));
	config->helo_name = T_CONN_HELO;
	config->helo_name_len = strlen(T_CONN_HELO);
	config->connect_timeout_ms = connect_ms;
	struct smtp_client_timeouts *t = &config->timeouts;
	t->greeting_ms = t->helo_ms = t->rset_ms = t->mail_ms = t->rcpt_ms = reply_ms;
	t->data_ms = t->data_block_ms = t->dot_ms = t->quit_ms = reply_ms;
}

struct t_conn_message *
t_conn_message_new(const char *const *rcpts, uint32_t rcpt_count, const uint8_t *raw,
		   size_t raw_size)
{
	cr_assert(rcpt_count >= 1 && rcpt_count <= T_CONN_RCPTS_MAX);
	struct t_conn_message *m = calloc(1, sizeof(*m));
	cr_assert_not_null(m);
	for (uint32_t i = 0; i < rcpt_count; i++) {
		if (rcpts != NULL)
			snprintf(m->rcpt_names[i], sizeof(m->rcpt_names[i]), "%s", rcpts[i]);
		else
			snprintf(m->rcpt_names[i], sizeof(m->rcpt_names[i]), "rcpt%u@example.org",
				 i);
		m->rcpts[i].ptr = m->rcpt_names[i];
		m->rcpts[i].len = strlen(m->rcpt_names[i]);
	}
	m->raw = malloc(raw_size + 1);
	cr_assert_not_null(m->raw);
	memcpy(m->raw, raw, raw_size);
	m->raw_size = raw_size;
	size_t wire_max = smtp_dot_stuffed_size_max(raw_size);
	m->wire = malloc(wire_max);
	cr_assert_not_null(m->wire);
	cr_assert_eq(smtp_dot_stuff(raw, raw_size, m->wire, wire_max, &m->wire_size),
		     SMTP_DOT_VALID);
	m->message.sender.ptr = "sender@example.com";
	m->message.sender.len = strlen("sender@example.com");
	m->message.rcpts = m->rcpts;
	m->message.rcpt_count = rcpt_count;
	m->message.body = m->wire;
	m->message.body_size = m->wire_size;
	m->message.ctx = m;
	return m;
}

void
t_conn_message_free(struct t_conn_message *message)
{
	if (message == NULL)
		return;
	free(message->raw);
	free(message->wire);
	free(message);
}

size_t
t_conn_raw_body(uint64_t seed, size_t size, uint8_t *out, size_t out_size)
{
	static const char *const edges[] = {
		".\r\n", "..\r\n", "...\r\n", ".x leading dot\r\n", "\r\n", ". \r\n",
	};
	size_t n = (size_t)snprintf((char *)out, out_size,
				    "From: sender@example.com\r\nTo: rcpt@example.org\r\n"
				    "Subject: eng_conn test %llu\r\n\r\n",
				    (unsigned long long)seed);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (uint32_t line = 0; n < size; line++) {
		char buf[128];
		size_t len;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (line % 7 == 3) {
			len = (size_t)snprintf(buf, sizeof(buf), "%s", edges[x % ENG_ARRAY_COUNT(edges)]);
		} else {
			len = (size_t)snprintf(buf, sizeof(buf), "line %u %016llx %s\r\n", line,
					       (unsigned long long)x,
					       (x & 1) != 0 ? ".dot in the middle." : "text");
		}
		cr_assert_lt(n + len, out_size);
		memcpy(out + n, buf, len);
		n += len;
	}
	return n;
}

static void
t_conn_record(struct t_conn_run *run, const struct eng_conn_event *event)
{
	cr_assert_lt(run->event_count, T_CONN_EVENTS_MAX);
	struct t_conn_event *e = &run->events[run->event_count++];
	memset(e, 0, sizeof(*e));
	e->type = event->type;
	e->message = event->message;
	e->rcpt_index = event->rcpt_index;
	e->code = event->status.code;
	e->is_local = event->status.is_local;
	e->enhanced_class = event->status.enhanced.status_class;
	e->error = event->error;
	e->outcome_is_unknown = event->outcome_is_unknown;
	e->reason = event->reason;
	e->sys_error = event->sys_error;
	e->was_connected = event->was_connected;
	e->connect_ms = event->connect_ms;
	e->transaction_ms = event->transaction_ms;
	e->messages_count = event->messages_count;
	cr_assert_not_null(event->peer);
	snprintf(e->peer, sizeof(e->peer), "%s", event->peer);
}

static void
t_conn_on_event(void *ctx, struct eng_conn *conn, const struct eng_conn_event *event)
{
	struct t_conn_run *run = ctx;
	cr_assert_eq(conn, &run->conn);
	if (event->type != ENG_CONN_EV_PIPELINE_SLOT)
		t_conn_record(run, event);
	switch (event->type) {
	case ENG_CONN_EV_PIPELINE_SLOT:
		cr_assert(eng_conn_may_pipeline(conn));
		run->slots_count++;
		if (!run->no_pipeline_slot && run->message_next_index < run->message_count) {
			struct t_conn_message *m = run->messages[run->message_next_index++];
			run->pipelined_count += eng_conn_send_message(conn, &m->message);
		}
		break;
	case ENG_CONN_EV_READY:
		cr_assert(eng_conn_is_ready(conn));
		run->saw_pipelining = smtp_ehlo_has(eng_conn_caps(conn), SMTP_EXT_PIPELINING);
		if (run->message_next_index < run->message_count) {
			struct t_conn_message *m = run->messages[run->message_next_index++];
			(void)eng_conn_send_message(conn, &m->message);
		} else if (run->quit_when_done) {
			eng_conn_quit(conn);
		}
		break;
	case ENG_CONN_EV_RCPT:
		if (run->abort_on_first_rcpt)
			eng_conn_abort(conn);
		break;
	case ENG_CONN_EV_MESSAGE_DONE:
	case ENG_CONN_EV_MESSAGE_FAILED:
		break;
	case ENG_CONN_EV_CLOSED:
		cr_assert_eq(eng_conn_state(conn), ENG_CONN_STATE_FREE);
		cr_assert_eq(eng_conn_ops_in_flight(conn), 0);
		if (run->reopen_count > 0) {
			run->reopen_count--;
			run->message_next_index = 0;
			t_conn_run_open(run);
			break;
		}
		run->is_closed = true;
		break;
	}
}

struct t_conn_run *
t_conn_run_new(void)
{
	struct ring_caps caps;
	char err[256] = "";
	int ret = ring_probe(&caps, err, sizeof(err));
	if (ret == -ENOSYS || ret == -EPERM || ret == -EACCES || ret == -EINVAL ||
	    ret == -EOPNOTSUPP)
		cr_skip_test("io_uring unusable here: %s", err);
	cr_assert_eq(ret, 0, "ring_probe: %s", err);
	struct t_conn_run *run = calloc(1, sizeof(*run));
	cr_assert_not_null(run);
	struct ring_params params = { .sq_entries = 64, .cq_entries = 256 };
	run->ring = ring_create(&params, err, sizeof(err));
	cr_assert_not_null(run->ring, "ring_create: %s", err);
	eng_conn_init(&run->conn);
	run->quit_when_done = true;
	t_conn_config(&run->config, 2000, 10000);
	return run;
}

void
t_conn_run_free(struct t_conn_run *run)
{
	if (run == NULL)
		return;
	cr_assert_eq(eng_conn_state(&run->conn), ENG_CONN_STATE_FREE);
	cr_assert_eq(ring_ops_in_flight(run->ring), 0, "ops left in the ring");
	ring_destroy(run->ring);
	free(run);
}

void
t_conn_run_open(struct t_conn_run *run)
{
	int ret = eng_conn_open(&run->conn, run->ring, (const struct sockaddr *)&run->addr,
				run->addr_len, &run->config, run, t_conn_on_event);
	cr_assert_eq(ret, 0, "eng_conn_open: %s", strerror(-ret));
	cr_assert_eq(eng_conn_state(&run->conn), ENG_CONN_STATE_CONNECTING);
}

void
t_conn_run_until_closed(struct t_conn_run *run, uint64_t wait_ns)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + wait_ns;
	/* Bounded: every turn waits for a completion or the deadline. */
	for (uint32_t turn = 0; turn < 1000000u && !run->is_closed; turn++) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns)
			break;
		int ret = ring_run_once(run->ring, deadline_ns - now_ns);
		cr_assert_geq(ret, 0, "ring_run_once: %s", strerror(-ret));
	}
	cr_assert(run->is_closed, "no CLOSED within the wait (state %d, %u ops in flight)",
		  (int)eng_conn_state(&run->conn), eng_conn_ops_in_flight(&run->conn));
}

uint32_t
t_conn_count(const struct t_conn_run *run, enum eng_conn_event_type type)
{
	uint32_t count = 0;
	for (uint32_t i = 0; i < run->event_count; i++)
		count += run->events[i].type == type;
	return count;
}

const struct t_conn_event *
t_conn_closed(const struct t_conn_run *run)
{
	for (uint32_t i = run->event_count; i > 0; i--) {
		if (run->events[i - 1].type == ENG_CONN_EV_CLOSED)
			return &run->events[i - 1];
	}
	cr_assert_fail("no CLOSED event");
	return NULL;
}

int
t_conn_silent_listener(uint16_t *port, bool is_full, int *filler_fd)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(listen(fd, is_full ? 0 : 8), 0);
	socklen_t len = sizeof(addr);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(addr.sin_port);
	*filler_fd = -1;
	if (is_full) {
		/* Backlog 0 admits one connection; later SYNs are dropped. */
		*filler_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(*filler_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	}
	return fd;
}
