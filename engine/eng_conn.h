/*
 * eng_conn.h - one outbound SMTP connection driven by a shard's ring: the
 * socket, the connect, one recv and at most one send in flight, the reply
 * deadline timer, all wrapped around smtp_client (the pure state machine,
 * docs/smtp-client.md). The scheduler opens a conn, hands it messages when
 * it reports READY, and learns every recipient's fate from its events.
 * Behaviour: docs/engine.md, "Outbound connections".
 *
 * Life cycle:
 *
 *   FREE --open--> CONNECTING --connect ok--> SESSION --(any end)--> CLOSING
 *     ^                 |                                               |
 *     |                 +--refused, timeout, abort--> CLOSING           |
 *     +------ ENG_CONN_EV_CLOSED (every op completed, fd closed) -------+
 *
 * - eng_conn_open() creates the socket and queues the connect (with a
 *   deadline); it either fails at once (-errno, no event, the conn stays
 *   FREE) or returns 0, after which exactly one ENG_CONN_EV_CLOSED ends the
 *   conn's life, however it goes.
 * - ENG_CONN_EV_CLOSED is delivered only once every op the conn had in the
 *   ring (connect, link timeout, recv, send, timer, cancels, close) has
 *   completed and the socket is closed: from inside that callback the
 *   owner may free the struct or open it again. CLOSED is always delivered
 *   from a ring completion, never from inside an eng_conn_*() call.
 *
 * Events and re-entry:
 * - READY is delivered after the smtp_client call that produced it has
 *   returned: from the READY callback the owner may call
 *   eng_conn_send_message(), eng_conn_quit() or eng_conn_abort().
 * - PIPELINE_SLOT (the server offers PIPELINING, the current message's
 *   body is going out) is delivered the same way: from it the owner may
 *   call eng_conn_send_message() for the next message, which goes out
 *   behind the dot in the same send (docs/smtp-client.md), or do nothing
 *   (READY comes once the session is idle). At most two messages
 *   are in a conn; READY comes only when both had their final event.
 * - RCPT, MESSAGE_DONE and MESSAGE_FAILED are delivered synchronously from
 *   inside smtp_client (their status text is valid only during the
 *   callback). From them the owner may call eng_conn_abort() (it takes
 *   effect when the callback returns) but not send_message or quit
 *   (asserted).
 * - Each message gets exactly one final event (DONE or FAILED), as in
 *   smtp_client; a message still pending when the conn closes fails with a
 *   4xx status before CLOSED.
 *
 * STARTTLS (config.tls_policy, RFC 3207, docs/tls.md "Outbound"): when
 * smtp_client asks for the handshake (SMTP_EV_STARTTLS), the conn puts an
 * eng_tls between the ring and the session: received ciphertext goes into
 * eng_tls_input_space, decrypted bytes to smtp_client_feed; the session's
 * output goes through eng_tls_write and the ciphertext (eng_tls_output) is
 * what the one send in flight carries. From then on every byte in either
 * direction passes through TLS: a TLS error, an alert or a close_notify
 * (OUT-05) ends the conn (reason TLS_FAILED), never a plaintext fallback
 * on the same connection. The negotiated parameters: eng_conn_tls_info().
 *
 * Ownership:
 * - struct eng_conn is caller memory (about 20 KiB: the session, a 4 KiB
 *   receive buffer). The TLS state (about 60 KiB) is allocated at
 *   STARTTLS and freed before CLOSED. A zeroed struct is FREE.
 * - The struct smtp_message passed to eng_conn_send_message(), its
 *   addresses and its body are borrowed until its final event (MESSAGE_DONE
 *   or MESSAGE_FAILED, or the local refusal) has come AND then the conn's
 *   next READY, PIPELINE_SLOT or CLOSED event: each of them is delivered
 *   with no send in flight, so none reads the body any more (a final event
 *   after a failure may come while a send is in flight). Per message: with
 *   a message pipelined behind the dot, the previous one is released at
 *   the next PIPELINE_SLOT (or READY, CLOSED) while the new one is not.
 * - config is copied by eng_conn_open(); addr and the TLS name are copied;
 *   the TLS context and session cache are borrowed (the shard's: they
 *   outlive every conn).
 *
 * Errors: eng_conn_open() returns 0 or -errno (socket, setsockopt, bind,
 * a full SQ). Everything after that is reported through events.
 */
#ifndef ENG_CONN_H
#define ENG_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "engine/eng_common.h"
#include "engine/eng_tls.h"
#include "ring/ring.h"
#include "smtp/smtp_client.h"

struct eng_destination;

/* Receive buffer: SMTP replies are short; a longer one spans recvs. */
#define ENG_CONN_RECV_SIZE 4096u
/* iovecs per send: smtp_client_output() returns two behind a dot (the
 * rest of the body, then the next transaction's commands). */
#define ENG_CONN_IOV_MAX 4u
/* Bytes per send: a large body goes out in sends of at most this, so each
 * completion renews the data-block deadline (RFC 5321 4.5.3.2.5). */
#define ENG_CONN_SEND_SIZE_MAX (256u * 1024u)
/* "[" IPv6 "]:" port, NUL: INET6_ADDRSTRLEN (46) + 9. */
#define ENG_CONN_PEER_SIZE 56u
/* Text of the reply behind a session error, kept for the CLOSED event. */
#define ENG_CONN_STATUS_TEXT_SIZE 256u
/* A host name (255) and its NUL. */
#define ENG_CONN_TLS_NAME_SIZE 256u
/* Ops that teardown may have to cancel: connect, recv, send, timer. */
#define ENG_CONN_CANCEL_COUNT 4u

_Static_assert(ENG_CONN_RECV_SIZE >= 512u, "one reply line fits (RFC 5321 4.5.3.1.5)");
_Static_assert(ENG_CONN_SEND_SIZE_MAX >= SMTP_CLIENT_OUTPUT_SIZE,
	       "a full command buffer goes out in one send");

enum eng_conn_state {
	ENG_CONN_STATE_FREE = 0,   /* not open: may be opened */
	ENG_CONN_STATE_CONNECTING, /* connect in flight */
	ENG_CONN_STATE_SESSION,	   /* connected: smtp_client runs */
	ENG_CONN_STATE_CLOSING,	   /* waiting for every op to complete */
};

enum eng_conn_event_type {
	ENG_CONN_EV_READY = 1,	   /* idle: send a message, quit or abort */
	ENG_CONN_EV_RCPT,	   /* one recipient's RCPT reply */
	ENG_CONN_EV_MESSAGE_DONE,  /* end-of-data 2xx: accepted recipients delivered */
	ENG_CONN_EV_MESSAGE_FAILED, /* the message failed as a whole */
	ENG_CONN_EV_CLOSED,	   /* last event: the struct may be freed or reopened */
	ENG_CONN_EV_PIPELINE_SLOT, /* body going out: the next message may follow it */
};

/* Why a conn closed. The owner's failure policy keys on it: refused,
 * timeouts, 421 and network errors put the host in back-off. */
enum eng_conn_close_reason {
	ENG_CONN_CLOSE_NONE = 0,
	ENG_CONN_CLOSE_QUIT,		/* eng_conn_quit(): QUIT sent (answered or not) */
	ENG_CONN_CLOSE_ABORT,		/* eng_conn_abort() */
	ENG_CONN_CLOSE_CONNECT_REFUSED, /* ECONNREFUSED */
	ENG_CONN_CLOSE_CONNECT_TIMEOUT, /* connect deadline passed (or ETIMEDOUT) */
	ENG_CONN_CLOSE_CONNECT_FAILED,	/* other connect errno: see sys_error */
	ENG_CONN_CLOSE_SERVER_CLOSING,	/* 421 */
	ENG_CONN_CLOSE_PROTOCOL_ERROR,	/* malformed, unexpected or impossible reply */
	ENG_CONN_CLOSE_TIMEOUT,		/* a reply (or send progress) deadline passed */
	ENG_CONN_CLOSE_REMOTE_CLOSE,	/* EOF from the server */
	ENG_CONN_CLOSE_NETWORK_ERROR,	/* recv/send error: see sys_error */
	ENG_CONN_CLOSE_REJECTED,	/* greeting, EHLO/HELO or RSET refused */
	ENG_CONN_CLOSE_LOCAL_ERROR,	/* the ring refused an op (full SQ) */
	ENG_CONN_CLOSE_TLS_REQUIRED,	/* policy required TLS: STARTTLS absent or refused */
	ENG_CONN_CLOSE_TLS_FAILED,	/* handshake, verification, alert or close_notify */
	ENG_CONN_CLOSE_REASON_COUNT
};

struct eng_conn_config {
	const char *helo_name; /* must pass smtp_client_helo_name_is_valid (asserted) */
	size_t helo_name_len;
	uint32_t connect_timeout_ms; /* > 0 */
	struct smtp_client_timeouts timeouts;
	bool pipelining_is_disabled;
	/* Optional source address (port 0): bound with IP_BIND_ADDRESS_NO_PORT
	 * so many conns per egress IP share ephemeral ports. NULL: none. */
	const struct sockaddr *source_addr;
	uint32_t source_addr_len;
	/* STARTTLS. tls_ctx is required unless the policy is NONE. */
	enum smtp_client_tls_policy tls_policy;
	bool tls_verify; /* chain and name must verify (needs REQUIRED) */
	/* The peer's name for SNI, the name check and the session cache key:
	 * the MX host name, or the address literal. Empty: the peer address. */
	const char *tls_name;
	size_t tls_name_len; /* < ENG_CONN_TLS_NAME_SIZE */
	struct eng_tls_ctx *tls_ctx;
	struct eng_tls_session_cache *tls_cache; /* NULL: no resumption */
};

struct eng_conn_event {
	enum eng_conn_event_type type;
	/* RCPT, MESSAGE_*: as in struct smtp_event. */
	const struct smtp_message *message;
	uint32_t rcpt_index;
	struct smtp_status status; /* RCPT, MESSAGE_*; CLOSED: the error's reply */
	enum smtp_client_error error;
	bool outcome_is_unknown;
	/* CLOSED: why, and the errno behind CONNECT_FAILED / NETWORK_ERROR. */
	enum eng_conn_close_reason reason;
	int sys_error;
	bool was_connected; /* CLOSED: the TCP connect had succeeded */
	/* Timings: connect_ms once connected; transaction_ms on MESSAGE_*
	 * (from eng_conn_send_message to the final reply). */
	uint64_t connect_ms;
	uint64_t transaction_ms;
	uint32_t messages_count; /* messages started on this connection */
	const char *peer;	 /* "127.0.0.1:25", "[::1]:25": NUL-terminated */
	/* Every event: the session runs over TLS (info valid), or not. */
	bool is_tls;
	const struct eng_tls_info *tls_info;
	/* CLOSED with reason TLS_FAILED: why, from eng_tls ("" otherwise). */
	const char *tls_error;
};

/* Counters of one connection (reset by open, kept after CLOSED until the
 * next open), for metrics and tests. */
struct eng_conn_stats {
	uint64_t sends_count;
	uint64_t short_sends_count;  /* a send that returned fewer bytes */
	uint64_t sent_size;
	/* Sends that carried the end of a body and the next transaction's
	 * commands behind its dot (plaintext; RFC 2920 3.1). */
	uint64_t sends_behind_dot_count;
	uint64_t recvs_count;
	uint64_t recvs_held_count;   /* completed while a send was in flight */
	uint64_t received_size;
	uint64_t timers_armed_count;
	uint64_t timers_stale_count; /* fired before a deadline that had moved */
	uint64_t timer_cancels_count; /* deadline moved earlier: re-armed */
};

struct eng_conn;
struct eng_conn_tls;
typedef void eng_conn_event_fn(void *ctx, struct eng_conn *conn,
			       const struct eng_conn_event *event);

/* Private: read through the accessors. */
struct eng_conn {
	enum eng_conn_state state;
	struct ring *ring;
	int fd;
	uint32_t ops_in_flight; /* ops of this conn the ring owns */
	eng_conn_event_fn *event_callback;
	void *event_ctx;
	/* Flags of the pump (eng_conn.c). */
	bool is_pumping;
	bool is_in_smtp_callback;
	bool ready_is_pending;
	bool abort_is_requested;
	bool smtp_is_closed;
	bool was_connected;
	bool close_is_queued;
	uint8_t cancels_sent_mask; /* teardown: one cancel per target */
	/* A recv result held while a send was in flight (consume first). */
	bool recv_is_held;
	int32_t recv_held_res;
	enum eng_conn_close_reason close_reason;
	int sys_error;
	int send_error; /* errno of a send that found the connection dead */
	enum smtp_client_error smtp_error;
	struct smtp_status close_status;
	char close_text[ENG_CONN_STATUS_TEXT_SIZE];
	uint64_t timer_deadline_ms; /* what the in-flight timer was armed for */
	uint64_t open_ns;
	uint64_t connect_ns;
	uint64_t message_start_ns;
	uint32_t messages_count;
	const struct smtp_message *message; /* newest without a final event */
	/* Behind a dot: the older message, awaiting its end-of-data reply. */
	const struct smtp_message *prev_message;
	uint64_t prev_message_start_ns;
	bool pipeline_slot_is_pending; /* SMTP_EV_PIPELINE_SLOT: the pump delivers it */
	struct eng_conn_stats stats;
	struct eng_conn_config config;
	/* TLS (NULL: plaintext). Set up at STARTTLS, freed by finish. */
	struct eng_conn_tls *tls;
	bool tls_start_is_pending; /* SMTP_EV_STARTTLS came: the pump starts it */
	bool tls_is_up;		   /* handshake done: tls_info valid */
	struct eng_tls_info tls_info;
	char tls_error[ENG_TLS_ERROR_SIZE];
	char tls_name[ENG_CONN_TLS_NAME_SIZE];
	char helo_name[SMTP_HELO_NAME_SIZE_MAX];
	struct sockaddr_storage peer_addr;
	uint32_t peer_addr_len;
	char peer[ENG_CONN_PEER_SIZE];
	struct ring_op connect_op;
	struct ring_op connect_timeout_op;
	struct ring_op recv_op;
	struct ring_op send_op;
	struct ring_op timer_op;
	struct ring_op close_op;
	struct ring_op cancel_ops[ENG_CONN_CANCEL_COUNT];
	struct msghdr send_msg;
	struct iovec send_iov[ENG_CONN_IOV_MAX];
	struct smtp_client client;
	uint8_t recv_buf[ENG_CONN_RECV_SIZE];
};

/* A FREE conn (the same as zeroing it). */
void eng_conn_init(struct eng_conn *conn);

/*
 * Fill config from a destination's settings: connect timeout and the
 * per-phase reply timeouts (RFC 5321 4.5.3.2 names); phases the
 * destination has no key for keep smtp_client_timeouts_default(). helo_name
 * is borrowed (not copied) into config.
 */
void eng_conn_config_from_destination(struct eng_conn_config *config,
				      const struct eng_destination *destination,
				      const char *helo_name, size_t helo_name_len);

/*
 * Open: socket (SOCK_CLOEXEC), TCP_NODELAY, optional bind to the source
 * address, connect through ring with config->connect_timeout_ms. conn must
 * be FREE with no op in flight (asserted). addr (AF_INET or AF_INET6) and
 * config are copied. Returns 0 (events follow, CLOSED last) or -errno
 * (nothing happened; conn stays FREE).
 */
int eng_conn_open(struct eng_conn *conn, struct ring *ring, const struct sockaddr *addr,
		  uint32_t addr_len, const struct eng_conn_config *config, void *ctx,
		  eng_conn_event_fn *event_callback) ENG_WARN_UNUSED;

/*
 * Start a transaction. Only when ready (after READY, before anything else
 * was started) or when a message may be pipelined behind the dot (after
 * PIPELINE_SLOT: eng_conn_may_pipeline) (asserted). Returns true when it
 * started; false when smtp_client refused it locally (MESSAGE_FAILED with
 * a local 5xx was already delivered; the conn is still ready, or still
 * takes a pipelined message; no new READY comes). message is borrowed as
 * the ownership rules above say.
 */
bool eng_conn_send_message(struct eng_conn *conn, const struct smtp_message *message);

/* Say QUIT (only when ready, asserted); CLOSED with reason QUIT follows. */
void eng_conn_quit(struct eng_conn *conn);

/*
 * Cancel everything and close: a pending message fails with a local 4xx
 * (4.4.2), then CLOSED with reason ABORT once every op completed. Any state
 * but FREE; a no-op when already closing.
 */
void eng_conn_abort(struct eng_conn *conn);

enum eng_conn_state eng_conn_state(const struct eng_conn *conn);
/* Idle in a session: eng_conn_send_message() and eng_conn_quit() allowed. */
bool eng_conn_is_ready(const struct eng_conn *conn);
/* A session whose current body goes out: eng_conn_send_message() may
 * pipeline the next message behind its dot. */
bool eng_conn_may_pipeline(const struct eng_conn *conn);
/* The peer as text, for logs; valid while the conn is not reopened. */
const char *eng_conn_peer(const struct eng_conn *conn);
/* Ops of this conn still owned by the ring. */
uint32_t eng_conn_ops_in_flight(const struct eng_conn *conn);
/* Counters since the last open. */
const struct eng_conn_stats *eng_conn_stats(const struct eng_conn *conn);
/* Capabilities of the server's last EHLO (none before it, or after HELO).
 * Only in a session (asserted). */
const struct smtp_ehlo_caps *eng_conn_caps(const struct eng_conn *conn);

/* The session runs over TLS: fills info and returns true (also after
 * CLOSED, until the next open); false for plaintext. */
bool eng_conn_tls_info(const struct eng_conn *conn, struct eng_tls_info *info);

const char *eng_conn_close_reason_name(enum eng_conn_close_reason reason);
const char *eng_conn_event_type_name(enum eng_conn_event_type type);

#endif /* ENG_CONN_H */
