/*
 * smtp_server.h - the inbound ESMTP server session of the injection
 * listener: pure protocol, no I/O, no clock, no syscalls
 * (docs/smtp-server.md, issue 4, reliability.md 8.1 INJ-01..INJ-12).
 *
 * The listener owns the socket, the timers and the spool. It feeds the
 * bytes it receives; the session parses commands, queues replies in a
 * bounded output buffer and reports events, one per smtp_server_feed()
 * call. The listener loop:
 *
 *   smtp_server_config_default(&cfg); ...set hostname, flags...
 *   smtp_server_init(s, &cfg);       (s is caller memory, fixed size)
 *   smtp_server_start(s);            queue the 220 greeting (may be delayed:
 *                                    any byte fed before start, or before
 *                                    the greeting was handed out, is an
 *                                    early talker: 554 and CLOSE)
 *   on receive:  off = 0;
 *     loop: n = smtp_server_feed(s, buf + off, len - off, &ev); off += n;
 *       (call again after every event but NONE/BLOCKED/CLOSE, even when
 *       off == len: e.g. MESSAGE follows the last BODY in the next call)
 *       NONE       everything consumed (off == len): wait for input
 *       BLOCKED    nothing more can be consumed now: the session waits for
 *                  smtp_server_message_result()/smtp_server_auth_result()
 *                  or for output space (send, then output_consumed());
 *                  keep buf[off..len) and feed it again afterwards
 *       DATA_START a transaction's body begins: start a record (the
 *                  envelope accessors are valid; prepend Received:)
 *       BODY       append ev.ptr/ev.len to the record (wire form)
 *       DATA_ABORT discard the record started at DATA_START (bad body,
 *                  RSET between BDAT chunks, ...); the reply is queued
 *       MESSAGE    the body is complete (the last BODY ended with the
 *                  terminator): make the record durable, then call
 *                  smtp_server_message_result() (may be much later)
 *       AUTH       verify ev.auth; then call smtp_server_auth_result()
 *                  (or smtp_server_auth_tempfail())
 *       STARTTLS   "220 2.0.0 Ready to start TLS" is queued: send it in
 *                  plaintext, DROP the rest of the input (buf[off..len)),
 *                  run the TLS handshake, then smtp_server_tls_started()
 *       CLOSE      send the pending output, then close the connection
 *   then, before waiting for input again:
 *     p = smtp_server_output(s, &len); send it; smtp_server_output_consumed(s, sent)
 *
 * Output and RFC 2920 synchronisation: replies are appended in command
 * order (never reordered) and batched until the caller takes them.
 * smtp_server_output() HANDS the pending bytes over: the session treats
 * them as sent from then on. A client must wait for the greeting, and for
 * the replies to EHLO/HELO, DATA (354) and AUTH (334/235) before sending
 * more (RFC 2920 3.1, RFC 4954); any byte fed while such a reply has not
 * been handed over yet is a synchronisation error: "554 5.5.1 Error: SMTP
 * protocol synchronization" and CLOSE, nothing queued (INJ-04). So: call
 * smtp_server_output() only to send, and always before waiting for the
 * next input. The buffer holds SMTP_SERVER_OUTPUT_SIZE bytes; a command is
 * only taken when a whole reply fits, else feed returns BLOCKED.
 *
 * Body events: BODY spans are in wire form (RFC 5321 4.5.2): CRLF lines,
 * dot-stuffed, and the last span of a message ends with the terminator
 * line ".\r\n" (CRLF "." CRLF for a non-empty body). For DATA the spans are
 * the received bytes (validated: they point into the fed buffer); for BDAT
 * the session dot-stuffs the chunk data into an internal buffer and
 * appends the terminator at LAST. A span is valid until the next call into
 * the session. The concatenation of a transaction's spans is exactly one
 * message in wire form; the caller adds its trace header in front.
 *
 * Strict line endings (SMTP smuggling, CVE-2023-51764): only CRLF ends a
 * line and only CRLF "." CRLF ends DATA. A bare CR, a bare LF or a NUL in
 * the body never ends anything: the message is rejected (DATA_ABORT when
 * seen, "550 5.6.11" or "550 5.6.0" after the real end of data), nothing
 * is stored. In a command line, CR, NUL or another control byte ->
 * "501 5.5.2"; a bare LF ends the line only to refuse it ("501 5.5.2",
 * nothing in it is executed).
 * Overlong command line (> command_line_max incl. CRLF): "500 5.5.6" after
 * its CRLF (the excess is discarded, never parsed). Overlong text line
 * (> text_line_max incl. CRLF, a stuffed dot not counted): "554 5.6.0"
 * after the end of data; body over message_size_max: "552 5.3.4" after
 * the end of data. Nothing is stored in either case.
 *
 * STARTTLS (RFC 3207), offered when config.starttls_is_offered and the
 * session is not encrypted yet. After the STARTTLS event every byte fed
 * until smtp_server_tls_started() is consumed and discarded, never parsed:
 * commands pipelined behind STARTTLS in plaintext are never executed under
 * TLS (CVE-2011-0411, reliability.md INJ-05); the caller also drops what
 * it still holds of that input. smtp_server_tls_started() forgets
 * everything the client said before (EHLO, AUTH, the transaction): the
 * session is as just greeted, without a new 220. STARTTLS under TLS ->
 * 503, with an argument -> 501, inside a transaction -> 503. A timeout
 * while waiting for the handshake closes without a (plaintext) reply.
 * config.tls_is_required: MAIL, RCPT, DATA, BDAT and AUTH before TLS get
 * "530 5.7.0 Must issue a STARTTLS command first" (a BDAT chunk is read and
 * discarded). config.auth_requires_tls: AUTH is advertised and accepted
 * only under TLS (before: "538 5.7.11" when STARTTLS is offered, else 503).
 *
 * Access: RCPT is refused with "554 5.7.1 Relay access denied" unless
 * config.client_is_allowed or the session authenticated (AUTH PLAIN or
 * LOGIN when config.auth_is_offered). Back-pressure set by the caller
 * answers MAIL with "452 4.3.1" or closes with "421 4.3.2".
 *
 * Every reply carries an RFC 3463 enhanced status code, except the 220
 * greeting, the EHLO/HELO replies and the 3xx intermediate replies
 * (RFC 2034 3). After errors_max 5xx replies to commands: "421 4.7.0" and
 * CLOSE.
 *
 * Ownership and memory:
 * - struct smtp_server lives in caller memory (fixed size); init works in
 *   place and copies the config (the hostname too).
 * - The envelope (sender, helo name, recipients) is owned by the session;
 *   recipients use bounded heap memory (at most recipients_max addresses
 *   of <= SMTP_SERVER_ADDRESS_SIZE_MAX bytes), freed at the end of each
 *   transaction and by smtp_server_fini(). Every other buffer is inside
 *   the struct. Heap exhaustion: "452 4.3.1" to that RCPT.
 * - Input is borrowed during smtp_server_feed() only, except BODY spans
 *   that point into it (valid until the next call).
 * - Envelope accessors return pointers valid until the next feed/result
 *   call that ends or resets the transaction.
 * Not thread-safe; one session per connection.
 */
#ifndef SMTP_SERVER_H
#define SMTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1 defaults. */
#define SMTP_SERVER_COMMAND_LINE_MAX_DEFAULT 512u /* incl. CRLF, 4.5.3.1.4 */
#define SMTP_SERVER_TEXT_LINE_MAX_DEFAULT 1000u	  /* incl. CRLF, 4.5.3.1.6 */
#define SMTP_SERVER_MESSAGE_SIZE_MAX_DEFAULT (10u * 1024u * 1024u)
#define SMTP_SERVER_RECIPIENTS_MAX_DEFAULT 1000u
#define SMTP_SERVER_ERRORS_MAX_DEFAULT 20u
/* Largest accepted command_line_max (also the line buffer size). AUTH
 * lines may always be SMTP_SERVER_AUTH_LINE_MAX long. */
#define SMTP_SERVER_COMMAND_LINE_MAX_MAX 2048u
#define SMTP_SERVER_AUTH_LINE_MAX 1100u
/* Mailbox without the angle brackets, after removing a source route:
 * the RFC 5321 4.5.3.1.3 path limit. */
#define SMTP_SERVER_ADDRESS_SIZE_MAX 256u
/* EHLO/HELO argument and our own hostname. */
#define SMTP_SERVER_HOSTNAME_SIZE_MAX 255u
/* Decoded AUTH identity and password, each. */
#define SMTP_SERVER_AUTH_FIELD_SIZE_MAX 255u
/* Pending reply bytes; a command is taken only when
 * SMTP_SERVER_REPLY_SIZE_MAX bytes are free. */
#define SMTP_SERVER_OUTPUT_SIZE 4096u
#define SMTP_SERVER_REPLY_SIZE_MAX 1024u
/* BDAT dot-stuffing buffer (one BODY span at most this long). */
#define SMTP_SERVER_STUFF_SIZE 4096u

_Static_assert(SMTP_SERVER_OUTPUT_SIZE >= 2u * SMTP_SERVER_REPLY_SIZE_MAX, "two replies fit");
_Static_assert(SMTP_SERVER_AUTH_LINE_MAX <= SMTP_SERVER_COMMAND_LINE_MAX_MAX, "line buffer");
_Static_assert(SMTP_SERVER_RECIPIENTS_MAX_DEFAULT >= 100u, "RFC 5321 4.5.3.1.8");

enum smtp_server_bare_lf_policy {
	/* Default: a bare CR or LF (or NUL) in the body rejects the message
	 * with 550 after the real end of data; the session goes on. */
	SMTP_SERVER_BARE_LF_REJECT = 0,
	/* The same reply, as 554, then CLOSE (no further commands). */
	SMTP_SERVER_BARE_LF_CLOSE,
};

struct smtp_server_config {
	const char *hostname;	  /* banner and EHLO; copied; 1..255 bytes */
	size_t hostname_len;
	uint32_t command_line_max; /* octets incl. CRLF; 0: default 512 */
	uint32_t text_line_max;	   /* octets incl. CRLF; 0: default 1000 */
	uint64_t message_size_max; /* SIZE advertised and enforced; 0: default */
	uint32_t recipients_max;   /* >= 1; 0: default 1000; extras get 452 */
	uint32_t errors_max;	   /* 5xx replies before 421; 0: default 20 */
	bool client_is_allowed;	   /* on allowed_networks: may relay */
	bool auth_is_offered;	   /* advertise and accept AUTH PLAIN LOGIN */
	bool chunking_is_disabled; /* do not offer or accept BDAT */
	bool starttls_is_offered;  /* the listener has a certificate: offer STARTTLS */
	bool tls_is_required;	   /* require_tls: 530 before STARTTLS */
	bool auth_requires_tls;	   /* AUTH only under TLS (not a loopback client) */
	enum smtp_server_bare_lf_policy bare_lf_policy;
};

enum smtp_server_event_type {
	SMTP_SERVER_EV_NONE = 0,   /* all input consumed; wait for more */
	SMTP_SERVER_EV_BLOCKED,	   /* waiting for a result call or output space */
	SMTP_SERVER_EV_DATA_START, /* a body begins: start a record */
	SMTP_SERVER_EV_BODY,	   /* ptr/len: wire-form body bytes to append */
	SMTP_SERVER_EV_DATA_ABORT, /* discard the record; nothing to store */
	SMTP_SERVER_EV_MESSAGE,	   /* body complete: store, then message_result */
	SMTP_SERVER_EV_AUTH,	   /* verify auth; then auth_result */
	SMTP_SERVER_EV_STARTTLS,   /* send the 220, drop the input, handshake */
	SMTP_SERVER_EV_CLOSE,	   /* flush output, close; repeated by later feeds */
};

enum smtp_server_auth_mechanism {
	SMTP_SERVER_AUTH_PLAIN = 1,
	SMTP_SERVER_AUTH_LOGIN,
};

/* Decoded credentials (AUTH event). Spans point into the session and are
 * wiped by smtp_server_auth_result(); never NUL-terminated. */
struct smtp_server_auth {
	enum smtp_server_auth_mechanism mechanism;
	const uint8_t *authzid; /* PLAIN authorization identity; may be empty */
	size_t authzid_len;
	const uint8_t *authcid; /* user name */
	size_t authcid_len;
	const uint8_t *password;
	size_t password_len;
};

struct smtp_server_event {
	enum smtp_server_event_type type;
	const uint8_t *ptr; /* BODY: the span */
	size_t len;
	struct smtp_server_auth auth; /* AUTH */
};

/* Which client timeout the caller's timer should run now (RFC 5321
 * 4.5.3.2; durations are the caller's config). */
enum smtp_server_timeout_class {
	SMTP_SERVER_TIMEOUT_NONE = 0, /* closed, or waiting for the caller */
	SMTP_SERVER_TIMEOUT_COMMAND,  /* awaiting a command line: 5 min */
	SMTP_SERVER_TIMEOUT_DATA,     /* inside DATA/BDAT data: 3 min per block */
};

enum smtp_server_backpressure {
	SMTP_SERVER_BACKPRESSURE_NONE = 0,
	SMTP_SERVER_BACKPRESSURE_TEMPFAIL, /* MAIL -> 452 4.3.1 */
	SMTP_SERVER_BACKPRESSURE_CLOSE,	   /* next command -> 421 4.3.2, CLOSE */
};

/* Private state machine states (enum in smtp_server.c). */
struct smtp_server_rcpt {
	uint32_t offset; /* into rcpt_arena */
	uint32_t len;
};

/* A session. Every field is private to smtp_server.c; use the functions. */
struct smtp_server {
	struct smtp_server_config config;
	char hostname[SMTP_SERVER_HOSTNAME_SIZE_MAX];
	uint8_t state;	     /* enum smtp_server_state */
	uint8_t sub_state;   /* AUTH dialogue step */
	uint8_t data_state;  /* DATA/BDAT line scanner */
	uint8_t body_error;  /* enum smtp_server_body_error */
	enum smtp_server_backpressure backpressure;
	bool is_started;
	bool is_closed;
	bool is_esmtp;	       /* EHLO (not HELO) */
	bool is_authenticated;
	bool is_tls;	       /* smtp_server_tls_started() was called */
	bool has_helo;
	bool has_mail;
	bool is_bdat;	       /* this transaction uses BDAT */
	bool bdat_is_last;
	bool data_started;     /* DATA_START emitted, no MESSAGE/ABORT yet */
	bool message_pending;  /* MESSAGE emitted, awaiting message_result */
	bool message_is_due;   /* emit MESSAGE at the next feed */
	bool auth_pending;     /* AUTH emitted, awaiting auth_result */
	bool abort_is_due;     /* emit DATA_ABORT at the next feed */
	bool body_8bitmime;
	bool smtputf8;
	bool line_is_overlong;
	bool line_has_bad_byte;
	bool line_cr_seen;
	uint32_t errors_count;
	bool sync_is_pending;  /* a reply the client must see first is unsent */
	uint64_t size_declared;
	uint64_t body_size;	  /* unstuffed content octets this transaction */
	uint64_t body_wire_size;  /* BODY bytes emitted this transaction */
	uint64_t chunk_remaining; /* BDAT data bytes still to read */
	uint64_t chunk_size;	  /* the current BDAT's size */
	uint32_t text_line_len;
	uint32_t messages_count;
	/* command line being assembled */
	uint32_t line_len;
	uint8_t line[SMTP_SERVER_COMMAND_LINE_MAX_MAX];
	/* envelope */
	char helo_name[SMTP_SERVER_HOSTNAME_SIZE_MAX];
	uint32_t helo_name_len;
	char sender[SMTP_SERVER_ADDRESS_SIZE_MAX];
	uint32_t sender_len;
	struct smtp_server_rcpt *rcpts; /* heap, rcpts_capacity entries */
	uint32_t rcpts_count;
	uint32_t rcpts_capacity;
	char *rcpt_arena; /* heap */
	uint32_t rcpt_arena_used;
	uint32_t rcpt_arena_capacity;
	/* AUTH */
	uint8_t auth_buf[3u * SMTP_SERVER_AUTH_FIELD_SIZE_MAX + 3u];
	uint32_t auth_buf_len;
	struct smtp_server_auth auth;
	/* a reply to queue after the data ends (BDAT: each chunk) */
	char deferred_reply[160];
	uint32_t deferred_reply_len;
	/* output: pending bytes are out[out_head, out_used) */
	uint32_t out_head;
	uint32_t out_used;
	uint8_t out[SMTP_SERVER_OUTPUT_SIZE];
	/* BDAT stuffed output */
	uint32_t stuff_len;
	uint8_t stuff[SMTP_SERVER_STUFF_SIZE];
};

/* Defaults: limits above, hostname "localhost", not allowed, no AUTH,
 * CHUNKING on, bare LF rejected. */
void smtp_server_config_default(struct smtp_server_config *config);

/* Prepare s in place (config copied and checked by assertion: hostname
 * 1..255 printable bytes, limits in range). Nothing is queued yet. */
void smtp_server_init(struct smtp_server *s, const struct smtp_server_config *config);

/* Free the envelope memory. s may be re-initialised afterwards. */
void smtp_server_fini(struct smtp_server *s);

/* Queue the "220 hostname ESMTP ringmail" greeting. Once per session. */
void smtp_server_start(struct smtp_server *s);

/* See the contract above. Returns the bytes consumed (<= len); fills ev.
 * data may be NULL when len is 0. */
size_t smtp_server_feed(struct smtp_server *s, const uint8_t *data, size_t len,
			struct smtp_server_event *ev);

/* Pending reply bytes (NULL and *len 0 when none). Hands them over (see
 * the synchronisation rule). Valid until the next call into the session. */
const uint8_t *smtp_server_output(struct smtp_server *s, size_t *len);

/* n (<= the last *len) bytes were sent. */
void smtp_server_output_consumed(struct smtp_server *s, size_t n);

/* Reply to the MESSAGE event. ok: "250 2.0.0 Ok: queued as ID" (queue_id
 * 1..64 printable bytes); !ok: "451 4.3.0 Error: queue file write error". */
void smtp_server_message_result(struct smtp_server *s, bool ok, const char *queue_id,
				size_t queue_id_len);

/* Reply to the MESSAGE event with the caller's code (400..599) and text
 * that starts with its enhanced status ("4.3.1 Insufficient system
 * storage"); control bytes are replaced, the text is cut at 200 bytes. */
void smtp_server_message_reply(struct smtp_server *s, uint16_t code, const char *text,
			       size_t text_len);

/* Reply to the AUTH event: 235 2.7.0 or 535 5.7.8. Wipes the credentials. */
void smtp_server_auth_result(struct smtp_server *s, bool ok);

/* Reply to the AUTH event when the credentials could not be checked now
 * (the checker is overloaded): "454 4.7.0 Temporary authentication
 * failure" (RFC 4954 6); the client may try again. Wipes the credentials. */
void smtp_server_auth_tempfail(struct smtp_server *s);

/* The TLS handshake after the STARTTLS event completed: the session is
 * encrypted from now on and reset to the just-greeted state (RFC 3207
 * 4.2: nothing said before is kept). */
void smtp_server_tls_started(struct smtp_server *s);

/* Back-pressure from the spool/memory budget; takes effect at the next
 * MAIL (TEMPFAIL) or the next command (CLOSE); NONE recovers. */
void smtp_server_set_backpressure(struct smtp_server *s, enum smtp_server_backpressure bp);

/* The timeout class to run now. */
enum smtp_server_timeout_class smtp_server_timeout_class(const struct smtp_server *s);

/* The caller's timer (command, data or whole-session deadline) fired:
 * queue "421 4.4.2 hostname Error: timeout exceeded" and close (later
 * feeds return CLOSE; a pending MESSAGE/AUTH result call is still
 * allowed, and queues nothing). */
void smtp_server_timeout(struct smtp_server *s);

/* True once the session has queued its last reply (QUIT, 421, 554): flush
 * and close. */
bool smtp_server_is_closed(const struct smtp_server *s);

/* Envelope of the current transaction (valid at DATA_START..MESSAGE and
 * until the result call). */
const char *smtp_server_sender(const struct smtp_server *s, size_t *len); /* len 0: <> */
uint32_t smtp_server_recipient_count(const struct smtp_server *s);
const char *smtp_server_recipient(const struct smtp_server *s, uint32_t index, size_t *len);
const char *smtp_server_helo_name(const struct smtp_server *s, size_t *len);
bool smtp_server_is_esmtp(const struct smtp_server *s);	     /* EHLO was used */
bool smtp_server_is_authenticated(const struct smtp_server *s);
bool smtp_server_is_tls(const struct smtp_server *s);	     /* after tls_started */
bool smtp_server_body_is_8bitmime(const struct smtp_server *s); /* BODY=8BITMIME */
bool smtp_server_is_smtputf8(const struct smtp_server *s);	     /* SMTPUTF8 */
uint64_t smtp_server_size_declared(const struct smtp_server *s); /* SIZE=, 0: none */
uint64_t smtp_server_body_size(const struct smtp_server *s);	     /* wire bytes in BODY */

#endif /* SMTP_SERVER_H */
