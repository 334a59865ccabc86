/*
 * tool_submit.h - a small blocking SMTP client for ringmail-sendmail: one
 * message, one connection, EHLO (HELO when EHLO is refused), MAIL, one RCPT
 * at a time, DATA, the prepared message, the final dot, QUIT.
 *
 * Blocking sockets are fine here: the command sends one message and exits.
 * Every connect, send and reply wait is bounded by timeout_ms (poll for the
 * connect, SO_SNDTIMEO/SO_RCVTIMEO after it). Replies are read with the
 * project's strict reply parser (smtp/smtp_reply.h), so a malformed reply is
 * a protocol error, never guessed at.
 *
 * All or nothing: if any RCPT is refused the transaction is abandoned
 * (QUIT, no DATA), so the caller's exit status says whether the whole
 * message was accepted. Success is a 250 to the final dot and nothing
 * else.
 *
 * Ownership: the request is borrowed until return; the result is written
 * into caller memory.
 */
#ifndef TOOL_SUBMIT_H
#define TOOL_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOOL_SUBMIT_MESSAGE_SIZE 1024u
#define TOOL_SUBMIT_DEFAULT_SERVER "127.0.0.1:2525"

struct tool_submit_request {
	const char *server;    /* "host:port", "[v6]:port" or "host" (port 2525) */
	int timeout_ms;	       /* each connect, send and reply wait */
	const char *helo_name; /* EHLO argument */
	const char *sender;    /* MAIL FROM:<sender>; "" is the null sender */
	char *const *rcpts;
	size_t rcpt_count;
	const uint8_t *wire; /* dot-stuffed, CRLF, ends with CRLF (tool_mail) */
	size_t wire_len;
	bool has_8bit; /* ask BODY=8BITMIME when offered */
	bool verbose;  /* print the dialogue on stderr */
};

struct tool_submit_result {
	int exit_code; /* 0 or a sysexits.h code */
	/* Why it failed: the command and the server's reply, one line. */
	char message[TOOL_SUBMIT_MESSAGE_SIZE];
	/* The reply to the final dot, on success (queue id inside). */
	char accepted_reply[TOOL_SUBMIT_MESSAGE_SIZE];
};

/* Submit the message. Returns result->exit_code. */
int tool_submit(const struct tool_submit_request *request, struct tool_submit_result *result);

/* Split "host:port", "[v6]:port" or "host" into host and port (port
 * default "2525"). Returns false when the text cannot be an address. */
bool tool_submit_split_server(const char *server, char *host, size_t host_size, char *port,
			      size_t port_size);

#endif /* TOOL_SUBMIT_H */
