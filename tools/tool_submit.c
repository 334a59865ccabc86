/*
 * tool_submit.c - the blocking SMTP client of ringmail-sendmail
 * (tool_submit.h).
 *
 * Structure: tool_submit() runs the dialogue as a straight line of steps;
 * each step sends one command and waits for one reply through
 * tool_conn_command(), which turns any failure (I/O, timeout, protocol
 * error, unexpected code) into result->message and a sysexits code. The
 * first failure ends the dialogue. Every wait is bounded by a deadline
 * (poll before each recv and send), so a server that trickles bytes cannot
 * hold the command past timeout_ms per reply.
 */
#include "tool_submit.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "smtp/smtp_reply.h"

enum tool_phase {
	TOOL_PHASE_GREETING,
	TOOL_PHASE_EHLO,
	TOOL_PHASE_MAIL,
	TOOL_PHASE_RCPT,
	TOOL_PHASE_DATA,
	TOOL_PHASE_DOT,
};

struct tool_conn {
	int fd;
	int timeout_ms;
	bool verbose;
	size_t in_offset;
	size_t in_len;
	uint8_t in[4096];
	struct smtp_reply_parser parser;
	char reply_text[TOOL_SUBMIT_MESSAGE_SIZE]; /* last reply, one line */
};

static int64_t
tool_now_ms(void)
{
	struct timespec now;
	ENG_ASSERT(clock_gettime(CLOCK_MONOTONIC, &now) == 0);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Wait for events on the socket until deadline_ms: 0, or -ETIMEDOUT. */
static int
tool_conn_wait(struct tool_conn *conn, short events, int64_t deadline_ms)
{
	for (uint32_t attempt = 0; attempt < 1000u; attempt++) {
		int64_t left_ms = deadline_ms - tool_now_ms();
		if (left_ms <= 0)
			return -ETIMEDOUT;
		struct pollfd pfd = { .fd = conn->fd, .events = events };
		int rc = poll(&pfd, 1, left_ms > 60000 ? 60000 : (int)left_ms);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
	return -ETIMEDOUT;
}

bool
tool_submit_split_server(const char *server, char *host, size_t host_size, char *port,
			 size_t port_size)
{
	const char *host_start = server;
	size_t host_len;
	const char *port_start = NULL;
	if (server[0] == '[') {
		const char *close = strchr(server, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return false;
		host_start = server + 1;
		host_len = (size_t)(close - host_start);
		port_start = close[1] == ':' ? close + 2 : NULL;
	} else {
		const char *colon = strrchr(server, ':');
		if (colon != NULL && strchr(server, ':') != colon)
			return false; /* a bare IPv6 address needs brackets */
		host_len = colon != NULL ? (size_t)(colon - server) : strlen(server);
		port_start = colon != NULL ? colon + 1 : NULL;
	}
	const char *port_text = port_start != NULL ? port_start : "2525";
	if (host_len == 0 || host_len >= host_size || strlen(port_text) >= port_size ||
	    port_text[0] == '\0')
		return false;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	memcpy(port, port_text, strlen(port_text) + 1u);
	return true;
}

/* Connect to one address within timeout_ms: 0 or -errno. */
static int
tool_conn_try(struct tool_conn *conn, const struct addrinfo *ai)
{
	conn->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			  ai->ai_protocol);
	if (conn->fd < 0)
		return -errno;
	int rc = 0;
	if (connect(conn->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		rc = errno == EINPROGRESS ? 0 : -errno;
		if (rc == 0)
			rc = tool_conn_wait(conn, POLLOUT, tool_now_ms() + conn->timeout_ms);
		int so_error = 0;
		socklen_t so_len = sizeof(so_error);
		if (rc == 0 && getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &so_error, &so_len) != 0)
			rc = -errno;
		if (rc == 0 && so_error != 0)
			rc = -so_error;
	}
	if (rc != 0) {
		close(conn->fd);
		conn->fd = -1;
	}
	return rc;
}

static int
tool_conn_open(struct tool_conn *conn, const char *server, struct tool_submit_result *result)
{
	char host[256];
	char port[32];
	if (!tool_submit_split_server(server, host, sizeof(host), port, sizeof(port))) {
		snprintf(result->message, sizeof(result->message),
			 "bad server address '%s' (want HOST:PORT)", server);
		return result->exit_code = EX_USAGE;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG };
	struct addrinfo *list = NULL;
	int gai = getaddrinfo(host, port, &hints, &list);
	if (gai != 0) {
		snprintf(result->message, sizeof(result->message), "cannot resolve %s: %s",
			 server, gai_strerror(gai));
		return result->exit_code = gai == EAI_AGAIN ? EX_TEMPFAIL : EX_NOHOST;
	}
	int rc = -EHOSTUNREACH;
	for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
		rc = tool_conn_try(conn, ai);
		if (rc == 0)
			break;
	}
	freeaddrinfo(list);
	if (rc != 0) {
		snprintf(result->message, sizeof(result->message), "cannot connect to %s: %s",
			 server, strerror(-rc));
		return result->exit_code = EX_TEMPFAIL;
	}
	return 0;
}

static int
tool_conn_send(struct tool_conn *conn, const void *data, size_t len)
{
	const uint8_t *bytes = data;
	size_t sent = 0;
	while (sent < len) {
		int rc = tool_conn_wait(conn, POLLOUT, tool_now_ms() + conn->timeout_ms);
		if (rc != 0)
			return rc;
		ssize_t n = send(conn->fd, bytes + sent, len - sent, MSG_NOSIGNAL);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		sent += (size_t)n;
	}
	ENG_ASSERT(sent == len);
	return 0;
}

/* The reply as one printable line: "550 5.1.1 text / more text". */
static void
tool_conn_format_reply(struct tool_conn *conn)
{
	const struct smtp_reply *reply = &conn->parser.reply;
	int used = snprintf(conn->reply_text, sizeof(conn->reply_text), "%u", reply->code);
	size_t size = sizeof(conn->reply_text);
	for (uint32_t index = 0; index < reply->line_count && (size_t)used < size; index++) {
		const char *text;
		size_t text_size;
		smtp_reply_line(reply, index, &text, &text_size);
		used += snprintf(conn->reply_text + used, size - (size_t)used, "%s%.*s",
				 index == 0 ? " " : " / ", (int)text_size, text);
	}
}

/* Read one complete reply: 0, -ETIMEDOUT, -ECONNRESET (closed) or -EPROTO. */
static int
tool_conn_read_reply(struct tool_conn *conn)
{
	int64_t deadline_ms = tool_now_ms() + conn->timeout_ms;
	for (;;) {
		if (conn->in_offset < conn->in_len) {
			size_t consumed = 0;
			enum smtp_parse_result parsed = smtp_reply_parse(
				&conn->parser, conn->in + conn->in_offset,
				conn->in_len - conn->in_offset, &consumed);
			if (parsed == SMTP_PARSE_ERROR)
				return -EPROTO;
			conn->in_offset += consumed;
			ENG_ASSERT(conn->in_offset <= conn->in_len);
			if (parsed == SMTP_PARSE_OK) {
				tool_conn_format_reply(conn);
				return 0;
			}
		}
		int rc = tool_conn_wait(conn, POLLIN, deadline_ms);
		if (rc != 0)
			return rc;
		ssize_t n = recv(conn->fd, conn->in, sizeof(conn->in), 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		conn->in_offset = 0;
		conn->in_len = (size_t)n;
	}
}

/* sysexits code for a reply of the wrong class in phase. */
static int
tool_phase_exit_code(enum tool_phase phase, uint32_t reply_class)
{
	if (reply_class == 4u)
		return EX_TEMPFAIL;
	if (reply_class != 5u)
		return EX_PROTOCOL;
	switch (phase) {
	case TOOL_PHASE_GREETING:
	case TOOL_PHASE_EHLO:
		return EX_UNAVAILABLE;
	case TOOL_PHASE_RCPT:
		return EX_NOUSER;
	case TOOL_PHASE_MAIL:
	case TOOL_PHASE_DATA:
	case TOOL_PHASE_DOT:
		return EX_DATAERR;
	}
	ENG_PANIC("unknown phase");
}

/*
 * Send command (NULL for the greeting and the final dot, whose bytes the
 * caller sent) and read its reply; want_code is the code that lets the
 * dialogue go on (0: any 2xx). label names the step in messages.
 * Returns 0, or the exit code with result filled in.
 */
static int
tool_conn_command(struct tool_conn *conn, const char *command, const char *label,
		  enum tool_phase phase, uint32_t want_code, struct tool_submit_result *result)
{
	int rc = 0;
	if (command != NULL) {
		if (conn->verbose)
			fprintf(stderr, ">>> %s", command);
		rc = tool_conn_send(conn, command, strlen(command));
	}
	if (rc == 0)
		rc = tool_conn_read_reply(conn);
	if (rc == -EPROTO) {
		snprintf(result->message, sizeof(result->message), "%s: malformed reply (%s)",
			 label, smtp_reply_error_name(conn->parser.error));
		return result->exit_code = EX_PROTOCOL;
	}
	if (rc != 0) {
		snprintf(result->message, sizeof(result->message), "%s: %s", label,
			 rc == -ECONNRESET ? "connection closed by the server"
			 : rc == -ETIMEDOUT ? "timed out waiting for the server"
					    : strerror(-rc));
		return result->exit_code = EX_TEMPFAIL;
	}
	if (conn->verbose)
		fprintf(stderr, "<<< %s\n", conn->reply_text);
	uint32_t reply_class = smtp_reply_class(&conn->parser.reply);
	bool is_wanted = want_code != 0 ? conn->parser.reply.code == want_code : reply_class == 2u;
	if (is_wanted)
		return 0;
	snprintf(result->message, sizeof(result->message), "%s: %s", label, conn->reply_text);
	return result->exit_code = tool_phase_exit_code(phase, reply_class);
}

/* True when the last (EHLO) reply has a line naming keyword. */
static bool
tool_conn_has_extension(const struct tool_conn *conn, const char *keyword)
{
	const struct smtp_reply *reply = &conn->parser.reply;
	size_t keyword_len = strlen(keyword);
	for (uint32_t index = 1; index < reply->line_count; index++) {
		const char *text;
		size_t text_size;
		smtp_reply_line(reply, index, &text, &text_size);
		bool is_match = text_size >= keyword_len && strncasecmp(text, keyword, keyword_len) == 0;
		if (is_match && (text_size == keyword_len || text[keyword_len] == ' '))
			return true;
	}
	return false;
}

/* Greeting, EHLO (or HELO), then MAIL FROM with the parameters offered. */
static int
tool_submit_envelope_start(struct tool_conn *conn, const struct tool_submit_request *request,
			   struct tool_submit_result *result)
{
	char command[1024];
	if (tool_conn_command(conn, NULL, "greeting", TOOL_PHASE_GREETING, 220, result) != 0)
		return result->exit_code;
	snprintf(command, sizeof(command), "EHLO %s\r\n", request->helo_name);
	int rc = tool_conn_command(conn, command, "EHLO", TOOL_PHASE_EHLO, 0, result);
	bool has_8bitmime = rc == 0 && tool_conn_has_extension(conn, "8BITMIME");
	bool has_size = rc == 0 && tool_conn_has_extension(conn, "SIZE");
	if (rc != 0 && smtp_reply_class(&conn->parser.reply) == 5u && result->exit_code != EX_PROTOCOL) {
		snprintf(command, sizeof(command), "HELO %s\r\n", request->helo_name);
		rc = tool_conn_command(conn, command, "HELO", TOOL_PHASE_EHLO, 0, result);
	}
	if (rc != 0)
		return result->exit_code;
	char label[TOOL_SUBMIT_MESSAGE_SIZE / 2];
	snprintf(label, sizeof(label), "MAIL FROM:<%s>", request->sender);
	int used = snprintf(command, sizeof(command), "%s", label);
	if (has_8bitmime && request->has_8bit)
		used += snprintf(command + used, sizeof(command) - (size_t)used, " BODY=8BITMIME");
	if (has_size)
		used += snprintf(command + used, sizeof(command) - (size_t)used, " SIZE=%zu",
				 request->wire_len);
	snprintf(command + used, sizeof(command) - (size_t)used, "\r\n");
	return tool_conn_command(conn, command, label, TOOL_PHASE_MAIL, 0, result);
}

static int
tool_submit_dialogue(struct tool_conn *conn, const struct tool_submit_request *request,
		     struct tool_submit_result *result)
{
	if (tool_submit_envelope_start(conn, request, result) != 0)
		return result->exit_code;
	char command[1024];
	char label[TOOL_SUBMIT_MESSAGE_SIZE / 2];
	for (size_t index = 0; index < request->rcpt_count; index++) {
		snprintf(label, sizeof(label), "RCPT TO:<%s>", request->rcpts[index]);
		snprintf(command, sizeof(command), "%s\r\n", label);
		if (tool_conn_command(conn, command, label, TOOL_PHASE_RCPT, 0, result) != 0)
			return result->exit_code;
	}
	if (tool_conn_command(conn, "DATA\r\n", "DATA", TOOL_PHASE_DATA, 354, result) != 0)
		return result->exit_code;
	if (conn->verbose)
		fprintf(stderr, ">>> (%zu bytes of message)\n>>> .\n", request->wire_len);
	int rc = tool_conn_send(conn, request->wire, request->wire_len);
	if (rc == 0)
		rc = tool_conn_send(conn, ".\r\n", 3);
	if (rc != 0) {
		snprintf(result->message, sizeof(result->message), "sending the message: %s",
			 strerror(-rc));
		return result->exit_code = EX_TEMPFAIL;
	}
	if (tool_conn_command(conn, NULL, "end of data", TOOL_PHASE_DOT, 250, result) != 0)
		return result->exit_code;
	snprintf(result->accepted_reply, sizeof(result->accepted_reply), "%s", conn->reply_text);
	struct tool_submit_result quit_result;
	memset(&quit_result, 0, sizeof(quit_result));
	(void)tool_conn_command(conn, "QUIT\r\n", "QUIT", TOOL_PHASE_DOT, 221, &quit_result);
	return result->exit_code = 0;
}

int
tool_submit(const struct tool_submit_request *request, struct tool_submit_result *result)
{
	ENG_ASSERT(request->rcpt_count > 0);
	ENG_ASSERT(request->wire_len == 0 || request->wire[request->wire_len - 1u] == '\n');
	memset(result, 0, sizeof(*result));
	struct tool_conn *conn = calloc(1, sizeof(*conn));
	if (conn == NULL) {
		snprintf(result->message, sizeof(result->message), "out of memory");
		return result->exit_code = EX_OSERR;
	}
	conn->fd = -1;
	conn->timeout_ms = request->timeout_ms;
	conn->verbose = request->verbose;
	smtp_reply_parser_init(&conn->parser);
	if (tool_conn_open(conn, request->server, result) == 0) {
		int rc = tool_submit_dialogue(conn, request, result);
		if (rc != 0 && rc != EX_PROTOCOL && conn->fd >= 0 &&
		    smtp_reply_parser_is_between_replies(&conn->parser))
			(void)tool_conn_send(conn, "QUIT\r\n", 6);
		close(conn->fd);
	}
	free(conn);
	return result->exit_code;
}
