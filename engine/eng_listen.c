/*
 * eng_listen.c - a shard's injection listener: sockets, connection pool,
 * limits, timers and the durable store (see eng_listen.h).
 *
 * A connection's life:
 *   accept -> caps (pool, node total, per IP) and spool health checked;
 *     refused clients get one 421 line written directly (the socket buffer
 *     of a fresh connection is empty) and are closed.
 *   session: smtp_server_init; the greeting at once, or after
 *     greeting_delay (a recv is armed meanwhile: bytes before the banner
 *     make the session answer 554, the early-talker check).
 *   pump (eng_conn_pump): feed received bytes to the session and act on
 *     its events, hand its replies over into the connection's output
 *     buffer and send them. A recv is armed only when every reply has
 *     been handed over and all input was consumed (RFC 2920
 *     synchronisation: the session checks it).
 *   MESSAGE: the record (Received: + wire-form body) goes to
 *     spool_write_message; the session stays blocked until the callback,
 *     which hands the message to delivery and answers 250 with the queue id.
 *     The spool's place hook (eng_listen_placed) writes that queue id into
 *     the Received: header's placeholder before the record is encoded.
 *   AUTH: the credentials are copied into the connection's job for the
 *     node's AUTH worker (eng_auth_worker.h); the session stays blocked
 *     (auth_in_flight) until the answer comes back through the eventfd
 *     the ring polls (eng_listen_auth_ready). A failure is answered when
 *     the delay timer fires (timer_op, tag AUTH_DELAY); a full queue: 454.
 *   STARTTLS (RFC 3207): at the session's STARTTLS event the rest of the
 *     input is dropped (CVE-2011-0411: never parsed), the 220 goes out in
 *     plaintext, and a struct eng_tls (heap, server role, the listener's
 *     current context) sits between the ring and the session: recv fills
 *     its ciphertext input, eng_tls_read fills conn->in with plaintext for
 *     the session, and conn->out (the session's replies) is encrypted into
 *     its ciphertext output, which is what gets sent. Raw bytes in conn->out
 *     (the 220) are always sent before any ciphertext. The handshake runs
 *     under the command timeout; a failed handshake closes at once.
 *   close: flush the last replies (under TLS, then close_notify),
 *     shutdown(SHUT_WR), read and discard
 *     until EOF for at most ENG_LISTEN_LINGER_NS (so the client reads our
 *     last reply instead of a reset), then close(2) and release the slot
 *     once no op of the connection is in flight.
 *
 * TLS contexts: one per listener with tls_certificate, created on this
 * shard's thread at create (a bad file fails the start-up with one line)
 * and again after every reload (SIGHUP), noticed at the next accept or
 * sweep: new sessions use the new context, running ones keep the one they
 * started with (eng_tls_ctx_put drops only the listener's reference). A
 * reload whose certificate cannot be loaded keeps the previous one.
 *
 * Invariants: a connection slot is released only when none of its ops
 * (recv, send, greeting or AUTH-delay timer, cancels, spool append, AUTH
 * job) is in flight; the eventfd poll stays armed while any connection
 * exists (stop removes it once the last one is released); a
 * durable record is always handed to delivery, even on a closing
 * connection; counters taken at accept are released exactly once.
 */
/* wolfSSL's headers first: they use sprintf, which eng_common.h poisons
 * (only for the per-thread ECC cache, see eng_listen_destroy). */

#include "eng_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "eng_auth.h"
#include "eng_auth_worker.h"
#include "eng_clock.h"
#include "eng_common.h"
#include "eng_deliver.h"
#include "eng_tls.h"
#include "smtp/smtp_server.h"

#define ENG_LISTEN_RECV_SIZE (16u * 1024u)
#define ENG_LISTEN_OUT_SIZE (2u * SMTP_SERVER_OUTPUT_SIZE)
#define ENG_LISTEN_SWEEP_NS (1000ull * 1000ull * 1000ull)
#define ENG_LISTEN_LINGER_NS (3ull * 1000ull * 1000ull * 1000ull)
#define ENG_LISTEN_AUTH_DELAY_NS (500ull * 1000ull * 1000ull)
#define ENG_LISTEN_BACKLOG 1024
#define ENG_LISTEN_TRACE_SIZE 2048u
#define ENG_LISTEN_RECORD_INITIAL (64u * 1024u)
#define ENG_LISTEN_RECORD_KEEP (256u * 1024u)
#define ENG_LISTEN_IP_TEXT_SIZE 48u
/* Turns eng_listen_stop runs the ring for, 100 ms each: 30 s at most. */
#define ENG_LISTEN_STOP_TURNS 300u

_Static_assert(ENG_LISTEN_OUT_SIZE >= 2u * SMTP_SERVER_OUTPUT_SIZE, "a whole handover fits");
_Static_assert(ENG_LISTEN_TRACE_SIZE > 3u * 256u + 256u, "Received: fits");

enum eng_conn_tag {
	ENG_CONN_TAG_RECV = 1,
	ENG_CONN_TAG_SEND,
	ENG_CONN_TAG_TIMER,
	ENG_CONN_TAG_AUTH_DELAY, /* timer_op holding back a failed AUTH's 535 */
	ENG_CONN_TAG_CANCEL_RECV,
	ENG_CONN_TAG_CANCEL_TIMER,
};

struct eng_listen_socket {
	struct eng_listen *listen;
	uint32_t listener_index;
	int fd;
	struct ring_op accept_op;
	struct ring_op cancel_op;
	struct sockaddr_storage peer;
	uint32_t peer_len;
	bool accept_in_flight;
	bool cancel_in_flight;
	bool accept_paused; /* an accept error: re-armed by the sweep */
};

enum eng_conn_tls_phase {
	ENG_CONN_TLS_NONE = 0,	/* plaintext */
	ENG_CONN_TLS_HANDSHAKE, /* after the 220 to STARTTLS */
	ENG_CONN_TLS_ACTIVE,	/* the session runs over TLS */
};

struct eng_listen_conn {
	struct eng_listen *listen;
	uint32_t index;
	uint32_t listener_index;
	uint32_t free_next;
	int fd;
	bool in_use;
	bool closing;	  /* no more feeding; flush, then linger */
	bool hard;	  /* skip the flush: error or stop */
	bool wr_shut;	  /* shutdown(SHUT_WR) done */
	bool eof;	  /* the peer closed or recv failed */
	bool recv_in_flight;
	bool send_in_flight;
	bool timer_in_flight;
	bool cancel_recv_in_flight;
	bool cancel_timer_in_flight;
	bool append_in_flight;
	bool output_blocked; /* replies not handed over yet: no recv (RFC 2920) */
	bool record_open;
	bool record_overflow;
	bool auth_offered;
	bool auth_in_flight; /* AUTH at the worker, or its 535 held back */
	uint8_t auth_failures; /* in this session, for the failure delay */
	bool send_is_cipher; /* the send in flight is TLS output, not conn->out */
	bool tls_notify_sent;
	uint8_t tls_phase;   /* enum eng_conn_tls_phase */
	struct eng_tls *tls; /* heap, from STARTTLS to the release */
	struct eng_tls_info tls_info;
	uint32_t ip_bucket;
	uint64_t touched_ns;
	uint64_t phase_deadline_ns;
	uint64_t session_deadline_ns;
	uint64_t linger_deadline_ns;
	char ip_text[ENG_LISTEN_IP_TEXT_SIZE];
	struct ring_op recv_op;
	struct ring_op send_op;
	struct ring_op timer_op;
	struct ring_op cancel_recv_op;
	struct ring_op cancel_timer_op;
	uint32_t in_off;
	uint32_t in_len;
	uint32_t out_sent;
	uint32_t out_len;
	uint8_t in[ENG_LISTEN_RECV_SIZE];
	uint8_t out[ENG_LISTEN_OUT_SIZE];
	/* the record being assembled: Received: + the wire-form body */
	uint8_t *record;
	uint32_t record_len;
	uint32_t record_capacity;
	uint32_t trace_id_offset; /* of the queue id in the record's Received: */
	struct spool_span *rcpt_spans;
	uint32_t rcpt_capacity;
	struct spool_message message;
	struct spool_append append;
	struct smtp_server session;
	struct eng_auth_job auth_job; /* borrowed by the AUTH worker while in flight */
};

struct eng_listen {
	struct ring *ring;
	const struct eng_config *const *config;
	struct eng_listen_node *node;
	struct spool *spool;
	struct eng_deliver *deliver;
	uint32_t shard_index;
	uint32_t socket_count;
	struct eng_listen_socket sockets[ENG_CONFIG_LISTENERS_MAX];
	/* The listeners as set up at create; hot keys refreshed on accept. */
	struct eng_listener listeners[ENG_CONFIG_LISTENERS_MAX];
	/* AUTH: the node's worker and this shard's eventfd of done jobs. */
	struct eng_auth_worker *auth;
	int auth_fd;
	struct ring_op auth_poll_op;
	struct ring_op auth_remove_op;
	bool auth_poll_in_flight;
	bool auth_remove_in_flight;
	/* Server contexts of the listeners with a certificate (else NULL). */
	struct eng_tls_ctx *tls_ctx[ENG_CONFIG_LISTENERS_MAX];
	const struct eng_config *tls_config_seen; /* contexts made from this one */
	uint32_t conn_count; /* pool size */
	uint32_t conn_used;
	uint32_t conn_high;  /* slots [0, conn_high) were ever used */
	uint32_t free_head;
	struct eng_listen_conn *conns;
	struct ring_op sweep_op;
	struct ring_op sweep_cancel_op;
	bool sweep_in_flight;
	bool sweep_cancel_in_flight;
	bool stopping;
	bool place_hook_set; /* eng_listen_placed is the spool's place hook */
};

#define ENG_LISTEN_NO_SLOT UINT32_MAX

static void eng_conn_pump(struct eng_listen_conn *conn);
static void eng_conn_maybe_release(struct eng_listen_conn *conn);
static void eng_conn_close_step(struct eng_listen_conn *conn);
static bool eng_conn_take_output(struct eng_listen_conn *conn);

static const struct eng_listener *
eng_conn_listener(const struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->listener_index < conn->listen->socket_count);
	return &conn->listen->listeners[conn->listener_index];
}

/*
 * Adopt the hot keys of a reloaded configuration (docs/config.md, Reload)
 * for listener index, if the new configuration still has it under the same
 * name. Keys that need a restart (address, size and recipient limits,
 * auth_file) keep the values the sockets and the spool were set up with.
 */
static const struct eng_listener *
eng_listen_refresh(struct eng_listen *l, uint32_t index)
{
	ENG_ASSERT(index < l->socket_count);
	struct eng_listener *run = &l->listeners[index];
	const struct eng_config *cfg = *l->config;
	if (index >= cfg->listener_count || strcmp(cfg->listeners[index].name, run->name) != 0)
		return run;
	const struct eng_listener *next = &cfg->listeners[index];
	memcpy(run->hostname, next->hostname, sizeof(run->hostname));
	run->network_count = next->network_count;
	memcpy(run->networks, next->networks, sizeof(run->networks));
	run->max_connections = next->max_connections;
	run->max_connections_per_ip = next->max_connections_per_ip;
	run->command_timeout_ns = next->command_timeout_ns;
	run->data_timeout_ns = next->data_timeout_ns;
	run->session_deadline_ns = next->session_deadline_ns;
	run->greeting_delay_ns = next->greeting_delay_ns;
	return run;
}

/* The server context of a listener with tls_certificate and tls_key. */
static int
eng_listen_tls_ctx_create(const struct eng_listener *lc, struct eng_tls_ctx **out, char *err,
			  size_t err_size)
{
	ENG_ASSERT(lc->tls_certificate[0] != '\0' && lc->tls_key[0] != '\0');
	if (eng_tls_global_init() < 0) {
		snprintf(err, err_size, "listener %s: the TLS library failed to initialise", lc->name);
		return -EIO;
	}
	char why[ENG_TLS_ERROR_SIZE + ENG_CONFIG_PATH_SIZE];
	int ret = eng_tls_server_ctx_create(out, lc->tls_certificate, lc->tls_key, why,
					    sizeof(why));
	if (ret < 0)
		snprintf(err, err_size, "listener %s: %s", lc->name, why);
	return ret;
}

/*
 * After a reload (the shard's config pointer changed): new server contexts
 * from the listeners' tls_certificate/tls_key, read again even when the
 * paths did not change (a renewed certificate). Sessions already running
 * keep theirs. A certificate that cannot be loaded keeps the previous
 * context and TLS keys, with one line on stderr (from shard 0).
 */
void
eng_listen_reload(struct eng_listen *l)
{
	const struct eng_config *cfg = *l->config;
	if (cfg == l->tls_config_seen)
		return;
	l->tls_config_seen = cfg;
	for (uint32_t i = 0; i < l->socket_count; i++) {
		struct eng_listener *run = &l->listeners[i];
		if (i >= cfg->listener_count || strcmp(cfg->listeners[i].name, run->name) != 0)
			continue;
		const struct eng_listener *next = &cfg->listeners[i];
		struct eng_tls_ctx *ctx = NULL;
		char err[ENG_TLS_ERROR_SIZE + 2u * ENG_CONFIG_PATH_SIZE];
		if (next->tls_certificate[0] != '\0' &&
		    eng_listen_tls_ctx_create(next, &ctx, err, sizeof(err)) < 0) {
			if (l->shard_index == 0)
				fprintf(stderr, "ringmail: SIGHUP: %s; the previous TLS certificate "
						"stays\n", err);
			continue;
		}
		eng_tls_ctx_put(l->tls_ctx[i]);
		l->tls_ctx[i] = ctx;
		memcpy(run->tls_certificate, next->tls_certificate, sizeof(run->tls_certificate));
		memcpy(run->tls_key, next->tls_key, sizeof(run->tls_key));
		run->require_tls = next->require_tls;
	}
}

static struct eng_listen_counters *
eng_conn_counters(const struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->listener_index < conn->listen->node->count);
	return &conn->listen->node->listeners[conn->listener_index];
}

/* ---------------------------------------------------------------------------
 * Node-wide counters.
 */

int
eng_listen_node_init(struct eng_listen_node *node, const struct eng_config *config, char *err,
		     size_t err_size)
{
	ENG_ASSERT(node != NULL && config != NULL);
	ENG_ASSERT(config->listener_count <= ENG_CONFIG_LISTENERS_MAX);
	memset(node, 0, sizeof(*node));
	node->count = config->listener_count;
	for (uint32_t i = 0; i < node->count; i++)
		eng_global_limit_init(&node->listeners[i].total,
				      config->listeners[i].max_connections);
	return eng_auth_worker_create(config, &node->auth, err, err_size);
}

void
eng_listen_node_fini(struct eng_listen_node *node)
{
	ENG_ASSERT(node != NULL);
	eng_auth_worker_destroy(node->auth);
	node->auth = NULL;
}

void
eng_listen_node_reload(struct eng_listen_node *node)
{
	ENG_ASSERT(node != NULL);
	(void)eng_auth_worker_reload(node->auth);
}

/* FNV-1a over the address bytes. */
static uint32_t
eng_ip_bucket(const uint8_t *addr, size_t len)
{
	uint32_t hash = 2166136261u;
	for (size_t i = 0; i < len; i++)
		hash = (hash ^ addr[i]) * 16777619u;
	return hash & (ENG_LISTEN_IP_BUCKETS - 1u);
}

/* The client's address: text, bucket, loopback. v4-mapped v6 counts as v4. */
static void
eng_peer_describe(const struct sockaddr_storage *ss, char *text, size_t text_size,
		  uint32_t *bucket, bool *loopback)
{
	ENG_ASSERT(ss != NULL && text != NULL);
	*loopback = false;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		const uint8_t *a = s6->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			inet_ntop(AF_INET, a + 12, text, (socklen_t)text_size);
			*bucket = eng_ip_bucket(a + 12, 4);
			*loopback = a[12] == 127;
			return;
		}
		inet_ntop(AF_INET6, a, text, (socklen_t)text_size);
		*bucket = eng_ip_bucket(a, 16);
		*loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
		return;
	}
	ENG_ASSERT(ss->ss_family == AF_INET);
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	const uint8_t *a = (const uint8_t *)&s4->sin_addr.s_addr;
	inet_ntop(AF_INET, a, text, (socklen_t)text_size);
	*bucket = eng_ip_bucket(a, 4);
	*loopback = a[0] == 127;
}

/* Take one per-IP unit if under max. Racing shards may both fail: stricter, never looser. */
static bool
eng_ip_acquire(struct eng_listen_counters *c, uint32_t bucket, uint32_t max)
{
	ENG_ASSERT(bucket < ENG_LISTEN_IP_BUCKETS);
	uint32_t before = atomic_fetch_add(&c->per_ip[bucket], 1u);
	if (before < max)
		return true;
	uint32_t was = atomic_fetch_sub(&c->per_ip[bucket], 1u);
	ENG_ASSERT(was > 0);
	return false;
}

static void
eng_ip_release(struct eng_listen_counters *c, uint32_t bucket)
{
	ENG_ASSERT(bucket < ENG_LISTEN_IP_BUCKETS);
	uint32_t was = atomic_fetch_sub(&c->per_ip[bucket], 1u);
	ENG_ASSERT(was > 0);
}

/* ---------------------------------------------------------------------------
 * The record: Received: + wire-form body.
 */

static bool
eng_record_reserve(struct eng_listen_conn *conn, uint64_t need, uint64_t limit)
{
	if (need > limit)
		return false;
	if (need <= conn->record_capacity)
		return true;
	uint64_t cap = ENG_MAX((uint64_t)conn->record_capacity, ENG_LISTEN_RECORD_INITIAL);
	for (uint32_t i = 0; i < 32 && cap < need; i++)
		cap *= 2;
	cap = ENG_MIN(ENG_MAX(cap, need), limit);
	uint8_t *p = realloc(conn->record, (size_t)cap);
	if (p == NULL)
		return false;
	conn->record = p;
	conn->record_capacity = (uint32_t)cap;
	return true;
}

/* Largest record body: the listener's limit, stuffed, plus the trace header
 * (eng_config_spool sizes the spool for the same). */
static uint64_t
eng_record_limit(const struct eng_listen_conn *conn)
{
	uint64_t limit = eng_conn_listener(conn)->message_size_limit;
	return limit + limit / 3 + ENG_LISTEN_TRACE_SIZE;
}

/* Copy (s, len) into out replacing anything outside printable ASCII. */
static size_t
eng_trace_clean(char *out, size_t out_size, const char *s, size_t len)
{
	size_t n = ENG_MIN(len, out_size - 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		out[i] = (c > 0x20 && c < 0x7f && c != '(' && c != ')') ? (char)c : '?';
	}
	out[n] = '\0';
	return n;
}

/* The queue id's width in the trace header (SPOOL_QUEUE_ID_SIZE - 1). */
#define ENG_LISTEN_TRACE_ID_LEN (SPOOL_QUEUE_ID_SIZE - 1u)
static const char eng_trace_id_placeholder[] = "00000000000000000000000000";
_Static_assert(sizeof(eng_trace_id_placeholder) == SPOOL_QUEUE_ID_SIZE, "placeholder width");

/* The Received: header into out; *id_offset: where its queue id goes. */
static size_t
eng_trace_format(struct eng_listen_conn *conn, char *out, size_t out_size, uint32_t *id_offset)
{
	struct smtp_server *s = &conn->session;
	char helo[SMTP_SERVER_HOSTNAME_SIZE_MAX + 1], rcpt[SMTP_SERVER_ADDRESS_SIZE_MAX + 1];
	char date[64];
	size_t len = 0;
	const char *p = smtp_server_helo_name(s, &len);
	eng_trace_clean(helo, sizeof(helo), p != NULL ? p : "", p != NULL ? len : 0);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	/* RFC 3848: ESMTPS under TLS, ESMTPA after AUTH, ESMTPSA both. */
	bool tls = smtp_server_is_tls(s) && conn->tls_phase == ENG_CONN_TLS_ACTIVE;
	bool auth = smtp_server_is_authenticated(s);
	const char *with = !smtp_server_is_esmtp(s) ? "SMTP"
			   : tls && auth	       ? "ESMTPSA"
			   : tls		       ? "ESMTPS"
			   : auth		       ? "ESMTPA"
						       : "ESMTP";
	char using[ENG_TLS_VERSION_SIZE + ENG_TLS_CIPHER_SIZE + 32];
	using[0] = '\0';
	if (tls) {
		char version[ENG_TLS_VERSION_SIZE], cipher[ENG_TLS_CIPHER_SIZE];
		eng_trace_clean(version, sizeof(version), conn->tls_info.version,
				strnlen(conn->tls_info.version, sizeof(conn->tls_info.version)));
		eng_trace_clean(cipher, sizeof(cipher), conn->tls_info.cipher,
				strnlen(conn->tls_info.cipher, sizeof(conn->tls_info.cipher)));
		snprintf(using, sizeof(using), "\r\n\t(using %s with cipher %s)", version, cipher);
	}
	rcpt[0] = '\0';
	if (smtp_server_recipient_count(s) == 1) {
		p = smtp_server_recipient(s, 0, &len);
		eng_trace_clean(rcpt, sizeof(rcpt), p, len);
	}
	const struct eng_listener *l = eng_conn_listener(conn);
	/* The id is a placeholder of the queue id's width: the spool's place
	 * hook (eng_listen_placed) writes the real one once the record has its
	 * location, before it is encoded. */
	int head = snprintf(out, out_size,
			    "Received: from %s ([%s])%s\r\n\tby %s (ringmail) with %s id ",
			    helo[0] != '\0' ? helo : "unknown", conn->ip_text, using, l->hostname,
			    with);
	ENG_ASSERT(head > 0 && (size_t)head + ENG_LISTEN_TRACE_ID_LEN < out_size);
	*id_offset = (uint32_t)head;
	int n = snprintf(out + head, out_size - (size_t)head, "%.*s%s%s%s;\r\n\t%s\r\n",
			 (int)ENG_LISTEN_TRACE_ID_LEN, eng_trace_id_placeholder,
			 rcpt[0] != '\0' ? "\r\n\tfor <" : "", rcpt, rcpt[0] != '\0' ? ">" : "", date);
	ENG_ASSERT(n > 0 && (size_t)head + (size_t)n < out_size);
	return (size_t)head + (size_t)n;
}

static void
eng_record_begin(struct eng_listen_conn *conn)
{
	ENG_ASSERT(!conn->append_in_flight);
	char trace[ENG_LISTEN_TRACE_SIZE];
	size_t n = eng_trace_format(conn, trace, sizeof(trace), &conn->trace_id_offset);
	conn->record_open = true;
	conn->record_overflow = false;
	conn->record_len = 0;
	if (!eng_record_reserve(conn, n, eng_record_limit(conn))) {
		conn->record_overflow = true;
		return;
	}
	memcpy(conn->record, trace, n);
	conn->record_len = (uint32_t)n;
}

static void
eng_record_append(struct eng_listen_conn *conn, const uint8_t *ptr, size_t len)
{
	ENG_ASSERT(conn->record_open);
	if (conn->record_overflow || len == 0)
		return;
	uint64_t need = (uint64_t)conn->record_len + len;
	if (!eng_record_reserve(conn, need, eng_record_limit(conn))) {
		conn->record_overflow = true;
		return;
	}
	memcpy(conn->record + conn->record_len, ptr, len);
	conn->record_len = (uint32_t)need;
}

static void
eng_record_reply(struct eng_listen_conn *conn, uint16_t code, const char *text)
{
	atomic_fetch_add(&eng_conn_counters(conn)->rejected, 1);
	smtp_server_message_reply(&conn->session, code, text, strlen(text));
}

static void
eng_append_callback(struct spool_append *op, int32_t result)
{
	struct eng_listen_conn *conn = op->ctx;
	ENG_ASSERT(conn->in_use && conn->append_in_flight);
	conn->append_in_flight = false;
	conn->record_open = false;
	if (result == 0) {
		struct eng_listen_counters *c = eng_conn_counters(conn);
		atomic_fetch_add(&c->messages, 1);
		atomic_fetch_add(&c->bytes, conn->message.body.size);
		size_t helo_len = 0;
		const char *helo = smtp_server_helo_name(&conn->session, &helo_len);
		char client[SMTP_SERVER_HOSTNAME_SIZE_MAX + 1];
		eng_trace_clean(client, sizeof(client), helo != NULL ? helo : "", helo_len);
		eng_deliver_injected(conn->listen->deliver, &op->location, &conn->message, client,
				     conn->ip_text);
		char id[SPOOL_QUEUE_ID_SIZE];
		spool_queue_id_format(&op->location, id);
		smtp_server_message_result(&conn->session, true, id, strlen(id));
	} else if (result == -ENOSPC) {
		/* No segment could be made for it (a full disk, or below the
		 * reserve): the client may retry later, as at MAIL. */
		eng_record_reply(conn, 452, "4.3.1 Insufficient system storage");
	} else {
		atomic_fetch_add(&eng_conn_counters(conn)->rejected, 1);
		smtp_server_message_result(&conn->session, false, NULL, 0);
	}
	if (conn->closing) {
		(void)eng_conn_take_output(conn); /* the 250 still goes out */
		eng_conn_close_step(conn);
	} else {
		eng_conn_pump(conn);
	}
}

/*
 * The spool placed a message record (its location is the queue id) and is
 * about to encode it: if it is one of ours, write the queue id into the
 * Received: header's placeholder, so header, 250 reply and delivery log
 * carry the same id. DSN records of delivery pass through untouched.
 */
static void
eng_listen_placed(void *ctx, struct spool_append *op)
{
	struct eng_listen *l = ctx;
	if (op->callback != eng_append_callback)
		return;
	struct eng_listen_conn *conn = op->ctx;
	ENG_ASSERT(conn->listen == l && conn->in_use && conn->append_in_flight);
	ENG_ASSERT(op->input.message == &conn->message);
	ENG_ASSERT((uint64_t)conn->trace_id_offset + ENG_LISTEN_TRACE_ID_LEN <= conn->record_len);
	ENG_ASSERT(memcmp(conn->record + conn->trace_id_offset, eng_trace_id_placeholder,
			  ENG_LISTEN_TRACE_ID_LEN) == 0);
	char id[SPOOL_QUEUE_ID_SIZE];
	spool_queue_id_format(&op->location, id);
	memcpy(conn->record + conn->trace_id_offset, id, ENG_LISTEN_TRACE_ID_LEN);
}

static bool
eng_record_envelope(struct eng_listen_conn *conn)
{
	struct smtp_server *s = &conn->session;
	uint32_t count = smtp_server_recipient_count(s);
	if (count > conn->rcpt_capacity) {
		struct spool_span *p = realloc(conn->rcpt_spans, count * sizeof(*p));
		if (p == NULL)
			return false;
		conn->rcpt_spans = p;
		conn->rcpt_capacity = count;
	}
	for (uint32_t i = 0; i < count; i++) {
		size_t len = 0;
		const char *r = smtp_server_recipient(s, i, &len);
		conn->rcpt_spans[i] = (struct spool_span){ (const uint8_t *)r, (uint32_t)len };
	}
	size_t sender_len = 0;
	const char *sender = smtp_server_sender(s, &sender_len);
	uint64_t now = eng_clock_realtime_ns();
	conn->message = (struct spool_message){
		.created_ns = now,
		.expires_ns = now + (*conn->listen->config)->engine.max_queue_lifetime_ns,
		.sender = { (const uint8_t *)sender, (uint32_t)sender_len },
		.rcpt_count = count,
		.rcpts = conn->rcpt_spans,
		.body = { conn->record, conn->record_len },
	};
	return true;
}

/* MESSAGE: write the record; the reply waits for the append callback. */
static void
eng_record_store(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->record_open && !conn->append_in_flight);
	if (conn->record_overflow) {
		conn->record_open = false;
		eng_record_reply(conn, 552, "5.3.4 Message size exceeds fixed maximum message size");
		return;
	}
	if (!eng_record_envelope(conn)) {
		conn->record_open = false;
		eng_record_reply(conn, 452, "4.3.1 Insufficient system resources");
		return;
	}
	memset(&conn->append, 0, sizeof(conn->append));
	conn->append.callback = eng_append_callback;
	conn->append.ctx = conn;
	conn->append.type = SPOOL_RECORD_MESSAGE;
	conn->append.input.message = &conn->message;
	int ret = spool_write_message(conn->listen->spool, &conn->append);
	if (ret == 0) {
		conn->append_in_flight = true;
		return;
	}
	conn->record_open = false;
	if (ret == -ENOSPC)
		eng_record_reply(conn, 452, "4.3.1 Insufficient system storage");
	else if (ret == -EMSGSIZE)
		eng_record_reply(conn, 552, "5.3.4 Message size exceeds fixed maximum message size");
	else
		eng_record_reply(conn, 451, "4.3.0 Error: queue file write error");
}

/* ---------------------------------------------------------------------------
 * Connection I/O.
 */

static uint64_t
eng_conn_phase_timeout_ns(const struct eng_listen_conn *conn)
{
	const struct eng_listener *l = eng_conn_listener(conn);
	if (smtp_server_timeout_class(&conn->session) == SMTP_SERVER_TIMEOUT_DATA)
		return l->data_timeout_ns;
	return l->command_timeout_ns;
}

/* Progress: a reply or a block of data. The phase timer starts again. */
static void
eng_conn_touch(struct eng_listen_conn *conn)
{
	conn->touched_ns = eng_now_monotonic_ns();
	conn->phase_deadline_ns = conn->touched_ns + eng_conn_phase_timeout_ns(conn);
}

static void eng_conn_recv_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags);
static void eng_conn_send_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags);

/* Where the next recv writes: the TLS ciphertext input once STARTTLS ran
 * (not while closing: lingering input is discarded), else conn->in. */
static void
eng_conn_recv_space(struct eng_listen_conn *conn, uint8_t **ptr, size_t *size)
{
	if (conn->tls != NULL && !conn->closing) {
		eng_tls_input_space(conn->tls, ptr, size);
		return;
	}
	*ptr = conn->in;
	*size = ENG_LISTEN_RECV_SIZE;
}

static void
eng_conn_arm_recv(struct eng_listen_conn *conn)
{
	ENG_ASSERT(!conn->recv_in_flight && !conn->eof);
	ENG_ASSERT(conn->in_off == conn->in_len);
	conn->in_off = 0;
	conn->in_len = 0;
	uint8_t *ptr = NULL;
	size_t size = 0;
	eng_conn_recv_space(conn, &ptr, &size);
	ENG_ASSERT(size > 0); /* the pump checked the TLS input has room */
	conn->recv_op.callback = eng_conn_recv_callback;
	conn->recv_op.ctx = conn;
	conn->recv_op.tag = ENG_CONN_TAG_RECV;
	int ret = ring_prep_recv(conn->listen->ring, &conn->recv_op, conn->fd, ptr,
				 (uint32_t)size, 0);
	ENG_ASSERT(ret == 0);
	conn->recv_in_flight = true;
}

/* Under TLS: encrypt what conn->out holds into the ciphertext output (as
 * far as it has room). Not while a raw send still reads conn->out. */
static void
eng_conn_encrypt(struct eng_listen_conn *conn)
{
	if (conn->tls_phase != ENG_CONN_TLS_ACTIVE || (conn->send_in_flight && !conn->send_is_cipher))
		return;
	for (uint32_t i = 0; i < ENG_LISTEN_OUT_SIZE && conn->out_sent < conn->out_len; i++) {
		size_t taken = 0;
		enum eng_tls_result r = eng_tls_write(conn->tls, conn->out + conn->out_sent,
						      conn->out_len - conn->out_sent, &taken);
		if (r != ENG_TLS_OK)
			break; /* WANT_IO: the output drains first; errors end at send */
		conn->out_sent += (uint32_t)taken;
	}
	if (conn->out_sent == conn->out_len) {
		conn->out_sent = 0;
		conn->out_len = 0;
	}
}

/* A TLS write or read failed: nothing more can be sent on this stream. */
static bool
eng_conn_tls_failed(const struct eng_listen_conn *conn)
{
	return conn->tls != NULL && conn->tls->is_failed;
}

/* Anything still to go out: raw replies or TLS ciphertext. */
static bool
eng_conn_output_pending(const struct eng_listen_conn *conn)
{
	return conn->out_sent < conn->out_len ||
	       (conn->tls != NULL && eng_tls_output_is_pending(conn->tls));
}

static void
eng_conn_start_send(struct eng_listen_conn *conn)
{
	if (conn->hard)
		return;
	eng_conn_encrypt(conn);
	if (conn->send_in_flight)
		return;
	const uint8_t *ptr = NULL;
	size_t size = 0;
	conn->send_is_cipher = false;
	if (conn->out_sent < conn->out_len && conn->tls_phase != ENG_CONN_TLS_ACTIVE) {
		/* plaintext, the 220 to STARTTLS included: before any ciphertext */
		ENG_ASSERT(conn->out_len <= ENG_LISTEN_OUT_SIZE);
		ptr = conn->out + conn->out_sent;
		size = conn->out_len - conn->out_sent;
	} else if (conn->tls != NULL && eng_tls_output_is_pending(conn->tls)) {
		eng_tls_output(conn->tls, &ptr, &size);
		conn->send_is_cipher = true;
	} else {
		return;
	}
	conn->send_op.callback = eng_conn_send_callback;
	conn->send_op.ctx = conn;
	conn->send_op.tag = ENG_CONN_TAG_SEND;
	int ret = ring_prep_send(conn->listen->ring, &conn->send_op, conn->fd, ptr,
				 (uint32_t)size, MSG_NOSIGNAL);
	ENG_ASSERT(ret == 0);
	conn->send_in_flight = true;
}

/* Hand the session's pending replies over into out. True if any moved. */
static bool
eng_conn_take_output(struct eng_listen_conn *conn)
{
	if (conn->hard)
		return false;
	if ((!conn->send_in_flight || conn->send_is_cipher) && conn->out_sent > 0) {
		memmove(conn->out, conn->out + conn->out_sent, conn->out_len - conn->out_sent);
		conn->out_len -= conn->out_sent;
		conn->out_sent = 0;
	}
	if (ENG_LISTEN_OUT_SIZE - conn->out_len < SMTP_SERVER_OUTPUT_SIZE) {
		conn->output_blocked = true; /* the session may hold replies still */
		return false;
	}
	conn->output_blocked = false;
	size_t len = 0;
	const uint8_t *p = smtp_server_output(&conn->session, &len);
	if (len == 0)
		return false;
	ENG_ASSERT(p != NULL && len <= SMTP_SERVER_OUTPUT_SIZE);
	memcpy(conn->out + conn->out_len, p, len);
	conn->out_len += (uint32_t)len;
	smtp_server_output_consumed(&conn->session, len);
	eng_conn_touch(conn);
	return true;
}

static void
eng_conn_cancel(struct eng_listen_conn *conn, struct ring_op *cancel_op, struct ring_op *target,
		bool *cancel_in_flight, ring_cb_fn *callback, uint16_t tag)
{
	if (*cancel_in_flight)
		return;
	cancel_op->callback = callback;
	cancel_op->ctx = conn;
	cancel_op->tag = tag;
	int ret = ring_prep_cancel(conn->listen->ring, cancel_op, target);
	ENG_ASSERT(ret == 0);
	*cancel_in_flight = true;
}

static void
eng_conn_cancel_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen_conn *conn = op->ctx;
	(void)res;
	(void)cqe_flags;
	if (op->tag == ENG_CONN_TAG_CANCEL_RECV) {
		ENG_ASSERT(conn->cancel_recv_in_flight);
		conn->cancel_recv_in_flight = false;
	} else {
		ENG_ASSERT(op->tag == ENG_CONN_TAG_CANCEL_TIMER && conn->cancel_timer_in_flight);
		conn->cancel_timer_in_flight = false;
	}
	eng_conn_maybe_release(conn);
}

/* Closing: after the flush, shut the write side and linger reading. */
static void
eng_conn_close_step(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->closing);
	if (!conn->hard && eng_conn_tls_failed(conn)) {
		conn->hard = true; /* as eng_conn_begin_close(conn, true) */
		conn->wr_shut = false;
	}
	if (conn->timer_in_flight)
		eng_conn_cancel(conn, &conn->cancel_timer_op, &conn->timer_op,
				&conn->cancel_timer_in_flight, eng_conn_cancel_callback,
				ENG_CONN_TAG_CANCEL_TIMER);
	if (!conn->hard && conn->append_in_flight)
		return; /* its reply is sent first (append callback) */
	eng_conn_start_send(conn); /* under TLS: encrypts the last replies */
	if (!conn->hard && conn->tls_phase == ENG_CONN_TLS_ACTIVE && !conn->tls_notify_sent &&
	    conn->out_sent == conn->out_len) {
		conn->tls_notify_sent = true;
		eng_tls_shutdown(conn->tls); /* close_notify after the last reply */
		eng_conn_start_send(conn);
	}
	if (!conn->hard && (conn->send_in_flight || eng_conn_output_pending(conn)))
		return; /* the send callback comes back here */
	if (!conn->wr_shut) {
		conn->wr_shut = true;
		(void)shutdown(conn->fd, conn->hard ? SHUT_RDWR : SHUT_WR);
		conn->linger_deadline_ns = eng_now_monotonic_ns() + ENG_LISTEN_LINGER_NS;
	}
	if (conn->hard && conn->recv_in_flight)
		eng_conn_cancel(conn, &conn->cancel_recv_op, &conn->recv_op,
				&conn->cancel_recv_in_flight, eng_conn_cancel_callback,
				ENG_CONN_TAG_CANCEL_RECV);
	if (!conn->hard && !conn->eof && !conn->recv_in_flight) {
		conn->in_off = conn->in_len;
		eng_conn_arm_recv(conn);
	}
	eng_conn_maybe_release(conn);
}

static void
eng_conn_begin_close(struct eng_listen_conn *conn, bool hard)
{
	if (!conn->closing) {
		conn->closing = true;
		conn->linger_deadline_ns = eng_now_monotonic_ns() + ENG_LISTEN_LINGER_NS;
	}
	if (hard && !conn->hard) {
		conn->hard = true;
		conn->wr_shut = false; /* shut both sides now */
	}
	eng_conn_close_step(conn);
}

/* Release the slot once nothing of the connection is in flight. */
static void
eng_conn_maybe_release(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->in_use);
	if (!conn->closing || !conn->wr_shut)
		return;
	if (conn->recv_in_flight || conn->send_in_flight || conn->timer_in_flight ||
	    conn->cancel_recv_in_flight || conn->cancel_timer_in_flight || conn->append_in_flight ||
	    conn->auth_in_flight)
		return;
	if (!conn->eof && !conn->hard)
		return; /* lingering: the recv is armed again by close_step */
	struct eng_listen *l = conn->listen;
	struct eng_listen_counters *c = eng_conn_counters(conn);
	close(conn->fd);
	conn->fd = -1;
	eng_ip_release(c, conn->ip_bucket);
	eng_global_limit_release(&c->total);
	smtp_server_fini(&conn->session);
	if (conn->tls != NULL) {
		eng_tls_end(conn->tls); /* drops this session's context reference */
		free(conn->tls);
		conn->tls = NULL;
	}
	if (conn->record_capacity > ENG_LISTEN_RECORD_KEEP) {
		free(conn->record); /* a big message's buffer is not kept idle */
		conn->record = NULL;
		conn->record_capacity = 0;
	}
	conn->in_use = false;
	conn->free_next = l->free_head;
	l->free_head = conn->index;
	ENG_ASSERT(l->conn_used > 0);
	l->conn_used--;
}

static void
eng_conn_recv_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen_conn *conn = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(conn->in_use && conn->recv_in_flight);
	conn->recv_in_flight = false;
	if (conn->closing) {
		/* Lingering: discard what the client still sends, until EOF. */
		if (res <= 0 && res != -EINTR && res != -EAGAIN)
			conn->eof = true;
		conn->in_off = conn->in_len;
		eng_conn_close_step(conn);
		return;
	}
	if (res == -EINTR || res == -EAGAIN) {
		eng_conn_arm_recv(conn);
		return;
	}
	if (res <= 0) {
		conn->eof = true; /* the client left or the socket failed */
		eng_conn_begin_close(conn, true);
		return;
	}
	if (conn->tls != NULL) {
		/* ciphertext: the pump decrypts it into conn->in */
		eng_tls_input_commit(conn->tls, (size_t)res);
		eng_conn_pump(conn);
		return;
	}
	ENG_ASSERT((uint32_t)res <= ENG_LISTEN_RECV_SIZE);
	conn->in_off = 0;
	conn->in_len = (uint32_t)res;
	eng_conn_pump(conn);
}

static void
eng_conn_send_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen_conn *conn = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(conn->in_use && conn->send_in_flight);
	conn->send_in_flight = false;
	if (res == -EINTR || res == -EAGAIN) {
		res = 0; /* resubmit below */
	} else if (res <= 0) {
		eng_conn_begin_close(conn, true);
		return;
	}
	if (conn->send_is_cipher) {
		eng_tls_output_consume(conn->tls, (size_t)res);
	} else {
		ENG_ASSERT((uint32_t)res <= conn->out_len - conn->out_sent);
		conn->out_sent += (uint32_t)res;
		if (conn->out_sent == conn->out_len) {
			conn->out_sent = 0;
			conn->out_len = 0;
		}
	}
	if (conn->closing)
		eng_conn_close_step(conn);
	else
		eng_conn_pump(conn);
}

/* The AUTH exchange is over (answered or abandoned): resume the session,
 * or go on closing. */
static void
eng_conn_auth_finish(struct eng_listen_conn *conn)
{
	ENG_ASSERT(!conn->auth_in_flight);
	if (conn->closing)
		eng_conn_close_step(conn); /* flushes the reply unless hard */
	else
		eng_conn_pump(conn);
}

/* The greeting delay or a failed AUTH's delay ended (or was cancelled). */
static void
eng_conn_timer_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen_conn *conn = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(conn->in_use && conn->timer_in_flight);
	conn->timer_in_flight = false;
	if (op->tag == ENG_CONN_TAG_AUTH_DELAY) {
		ENG_ASSERT(conn->auth_in_flight);
		conn->auth_in_flight = false;
		smtp_server_auth_result(&conn->session, false);
		eng_conn_auth_finish(conn);
		return;
	}
	if (conn->closing) {
		eng_conn_maybe_release(conn);
		return;
	}
	ENG_ASSERT(res == -ETIME || res == 0);
	smtp_server_start(&conn->session);
	eng_conn_pump(conn);
}

/* A failed AUTH is answered after ENG_LISTEN_AUTH_DELAY_NS, doubled for
 * every earlier failure of the session (to 8x): guessing costs time, and
 * the session cannot send anything else meanwhile. */
static uint64_t
eng_conn_auth_delay_ns(struct eng_listen_conn *conn)
{
	uint32_t shift = ENG_MIN((uint32_t)conn->auth_failures, 3u);
	if (conn->auth_failures < UINT8_MAX)
		conn->auth_failures++;
	return ENG_LISTEN_AUTH_DELAY_NS << shift;
}

/* The worker's answer for conn (or an answer made here): 235 at once; a
 * failure after its delay (at once when closing). */
static void
eng_conn_auth_answer(struct eng_listen_conn *conn, bool ok)
{
	ENG_ASSERT(conn->in_use && conn->auth_in_flight && !conn->timer_in_flight);
	if (ok || conn->closing) {
		conn->auth_in_flight = false;
		smtp_server_auth_result(&conn->session, ok);
		eng_conn_auth_finish(conn);
		return;
	}
	conn->timer_op.callback = eng_conn_timer_callback;
	conn->timer_op.ctx = conn;
	conn->timer_op.tag = ENG_CONN_TAG_AUTH_DELAY;
	int ret = ring_prep_timeout(conn->listen->ring, &conn->timer_op,
				    eng_conn_auth_delay_ns(conn));
	ENG_ASSERT(ret == 0);
	conn->timer_in_flight = true; /* auth_in_flight stays until it fires */
}

/* AUTH event: copy the credentials into the connection's job and hand it
 * to the node's worker; the session stays blocked until the answer. */
static void
eng_conn_auth(struct eng_listen_conn *conn, const struct smtp_server_auth *auth)
{
	struct eng_listen *l = conn->listen;
	struct eng_auth_job *job = &conn->auth_job;
	ENG_ASSERT(!conn->auth_in_flight);
	/* PLAIN may name an authorization identity: only the user's own. */
	bool same_identity = auth->authzid_len == 0 ||
			     (auth->authzid_len == auth->authcid_len &&
			      memcmp(auth->authzid, auth->authcid, auth->authcid_len) == 0);
	bool fits = auth->authcid_len < sizeof(job->user) &&
		    auth->password_len <= sizeof(job->password);
	conn->auth_in_flight = true;
	if (l->auth == NULL || !conn->auth_offered || !fits) {
		eng_conn_auth_answer(conn, false); /* the session bounds the fields */
		return;
	}
	job->ctx = conn;
	job->shard_index = l->shard_index;
	job->listener_index = conn->listener_index;
	job->refuse = !same_identity; /* the same hash cost: timing tells nothing */
	job->user_len = (uint32_t)auth->authcid_len;
	job->password_len = (uint32_t)auth->password_len;
	memcpy(job->user, auth->authcid, auth->authcid_len);
	memcpy(job->password, auth->password, auth->password_len);
	if (eng_auth_worker_submit(l->auth, job) == 0)
		return;
	explicit_bzero(job->password, sizeof(job->password));
	conn->auth_in_flight = false;
	smtp_server_auth_tempfail(&conn->session); /* 454 4.7.0: queue full */
}

static void eng_listen_auth_arm(struct eng_listen *l);

/* The eventfd of done AUTH jobs is readable (or the poll was removed). */
static void
eng_listen_auth_ready(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen *l = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(l->auth_poll_in_flight);
	l->auth_poll_in_flight = false;
	struct eng_auth_job *job = eng_auth_worker_take(l->auth, l->shard_index);
	for (uint32_t i = 0; job != NULL; i++) {
		ENG_ASSERT(i < ENG_AUTH_QUEUE_MAX); /* the queue bounds the jobs */
		struct eng_auth_job *next = job->next;
		struct eng_listen_conn *conn = job->ctx;
		ENG_ASSERT(conn >= l->conns && conn < l->conns + l->conn_count);
		ENG_ASSERT(job == &conn->auth_job);
		eng_conn_auth_answer(conn, job->ok);
		job = next;
	}
	if (res != -ECANCELED && !(l->stopping && l->conn_used == 0))
		eng_listen_auth_arm(l);
}

static void
eng_listen_auth_arm(struct eng_listen *l)
{
	ENG_ASSERT(l->auth_fd >= 0 && !l->auth_poll_in_flight);
	l->auth_poll_op.callback = eng_listen_auth_ready;
	l->auth_poll_op.ctx = l;
	int ret = ring_prep_poll_add(l->ring, &l->auth_poll_op, l->auth_fd, POLLIN);
	ENG_ASSERT(ret == 0);
	l->auth_poll_in_flight = true;
}

/* The session answered 220 to STARTTLS: drop the rest of the input, let
 * the 220 go out in plaintext, and put TLS between the ring and it. */
static void
eng_conn_starttls(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->tls == NULL && !conn->recv_in_flight);
	/* CVE-2011-0411: bytes pipelined behind STARTTLS are never parsed */
	conn->in_off = conn->in_len;
	(void)eng_conn_take_output(conn); /* the 220, still plaintext */
	struct eng_tls_ctx *ctx = conn->listen->tls_ctx[conn->listener_index];
	struct eng_tls *tls = ctx != NULL ? calloc(1, sizeof(*tls)) : NULL;
	if (tls != NULL && eng_tls_server_start(tls, ctx) < 0) {
		eng_tls_end(tls);
		free(tls);
		tls = NULL;
	}
	if (tls == NULL) {
		/* no memory (or the certificate went away): close after the 220 */
		smtp_server_timeout(&conn->session);
		return;
	}
	conn->tls = tls;
	conn->tls_phase = ENG_CONN_TLS_HANDSHAKE;
	eng_conn_touch(conn); /* the handshake runs under the command timeout */
}

/* Drive the TLS input once: finish the handshake, or decrypt the next
 * plaintext into conn->in. 1: progress; 0: needs more ciphertext; -1: the
 * connection is closing (failure or the client's close_notify). */
static int
eng_conn_tls_input(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->tls != NULL && conn->in_off == conn->in_len);
	enum eng_tls_result r;
	if (conn->tls_phase == ENG_CONN_TLS_HANDSHAKE) {
		r = eng_tls_handshake(conn->tls);
		if (r == ENG_TLS_OK) {
			conn->tls_phase = ENG_CONN_TLS_ACTIVE;
			eng_tls_get_info(conn->tls, &conn->tls_info);
			smtp_server_tls_started(&conn->session);
			eng_conn_touch(conn);
			return 1;
		}
	} else {
		size_t got = 0;
		r = eng_tls_read(conn->tls, conn->in, ENG_LISTEN_RECV_SIZE, &got);
		if (r == ENG_TLS_OK) {
			ENG_ASSERT(got > 0 && got <= ENG_LISTEN_RECV_SIZE);
			conn->in_off = 0;
			conn->in_len = (uint32_t)got;
			return 1;
		}
	}
	if (r == ENG_TLS_WANT_IO)
		return 0;
	/* A failed handshake or record: nothing more can be said safely. The
	 * client's close_notify: flush what is pending, then close. */
	eng_conn_begin_close(conn, r != ENG_TLS_CLOSED);
	return -1;
}

static void
eng_conn_event(struct eng_listen_conn *conn, const struct smtp_server_event *ev)
{
	switch (ev->type) {
	case SMTP_SERVER_EV_DATA_START:
		eng_record_begin(conn);
		break;
	case SMTP_SERVER_EV_BODY:
		eng_record_append(conn, ev->ptr, ev->len);
		eng_conn_touch(conn);
		break;
	case SMTP_SERVER_EV_DATA_ABORT:
		conn->record_open = false;
		atomic_fetch_add(&eng_conn_counters(conn)->rejected, 1);
		break;
	case SMTP_SERVER_EV_MESSAGE:
		eng_record_store(conn);
		break;
	case SMTP_SERVER_EV_AUTH:
		eng_conn_auth(conn, &ev->auth);
		break;
	case SMTP_SERVER_EV_STARTTLS:
		eng_conn_starttls(conn);
		break;
	case SMTP_SERVER_EV_NONE:
	case SMTP_SERVER_EV_BLOCKED:
	case SMTP_SERVER_EV_CLOSE:
		ENG_PANIC("handled by the pump");
	}
}

static void
eng_conn_set_backpressure(struct eng_listen_conn *conn)
{
	struct spool *sp = conn->listen->spool;
	bool bad = !spool_is_healthy(sp) || spool_is_below_reserve(sp);
	smtp_server_set_backpressure(&conn->session, bad ? SMTP_SERVER_BACKPRESSURE_TEMPFAIL
							 : SMTP_SERVER_BACKPRESSURE_NONE);
}

/* Feed the session until it wants more input, waits for us, or closes.
 * Returns true when it closed. */
static bool
eng_conn_feed(struct eng_listen_conn *conn)
{
	uint64_t bound = 2ull * (conn->in_len - conn->in_off) + 4096u;
	for (uint64_t i = 0;; i++) {
		ENG_ASSERT(i < bound); /* every turn consumes input or ends an event */
		/* Replies are handed over only when the session blocks on output
		 * space, and after the loop: bytes that arrived before a reply
		 * went out are fed first (RFC 2920 synchronisation check). */
		if (conn->append_in_flight || conn->auth_in_flight)
			return false;
		struct smtp_server_event ev;
		memset(&ev, 0, sizeof(ev));
		size_t avail = conn->in_len - conn->in_off;
		size_t n = smtp_server_feed(&conn->session, avail > 0 ? conn->in + conn->in_off : NULL,
					    avail, &ev);
		ENG_ASSERT(n <= avail);
		conn->in_off += (uint32_t)n;
		if (ev.type == SMTP_SERVER_EV_NONE)
			return false;
		if (ev.type == SMTP_SERVER_EV_CLOSE)
			return true;
		if (ev.type == SMTP_SERVER_EV_BLOCKED) {
			if (!eng_conn_take_output(conn))
				return false;
			continue;
		}
		eng_conn_event(conn, &ev);
	}
}

static void
eng_conn_pump(struct eng_listen_conn *conn)
{
	ENG_ASSERT(conn->in_use);
	if (conn->closing) {
		eng_conn_close_step(conn);
		return;
	}
	eng_conn_set_backpressure(conn);
	bool closed = false;
	/* Under TLS, plaintext comes record by record: feed each to the
	 * session until the TLS input needs more ciphertext. */
	for (uint32_t turn = 0;; turn++) {
		ENG_ASSERT(turn <= ENG_TLS_CIPHER_IN_SIZE + 2u); /* each turn uses input */
		closed = eng_conn_feed(conn) || smtp_server_is_closed(&conn->session);
		if (closed || conn->tls == NULL || conn->append_in_flight || conn->auth_in_flight ||
		    conn->in_off != conn->in_len || conn->output_blocked)
			break;
		int progress = eng_conn_tls_input(conn);
		if (progress < 0)
			return; /* closing already */
		if (progress == 0)
			break;
	}
	(void)eng_conn_take_output(conn);
	eng_conn_start_send(conn);
	if (eng_conn_tls_failed(conn)) {
		eng_conn_begin_close(conn, true); /* a TLS write failed */
		return;
	}
	if (closed) {
		conn->in_off = conn->in_len; /* the rest is never parsed */
		eng_conn_begin_close(conn, false);
		return;
	}
	if (conn->append_in_flight || conn->auth_in_flight || conn->recv_in_flight ||
	    conn->in_off != conn->in_len || conn->output_blocked)
		return; /* resumed by the append, the AUTH answer, the recv, or the send */
	uint8_t *space = NULL;
	size_t space_size = 0;
	eng_conn_recv_space(conn, &space, &space_size);
	if (space_size == 0) {
		eng_conn_begin_close(conn, true); /* a TLS record larger than allowed */
		return;
	}
	eng_conn_arm_recv(conn);
}

/* ---------------------------------------------------------------------------
 * Accepting.
 */

static void eng_accept_arm(struct eng_listen_socket *sock);

/* One line to a client we do not serve, then close (the fresh socket's
 * buffer is empty: a non-blocking send cannot block). */
static void
eng_listen_refuse(struct eng_listen *l, uint32_t listener_index, int fd, const char *text)
{
	const struct eng_listener *lc = &l->listeners[listener_index];
	char line[512];
	/* "421 4.7.0 " + hostname + the rest of text. */
	ENG_ASSERT(strlen(text) > 10 && text[3] == ' ' && text[9] == ' ');
	int n = snprintf(line, sizeof(line), "%.10s%s %s\r\n", text, lc->hostname, text + 10);
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(line));
	(void)send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)shutdown(fd, SHUT_WR);
	close(fd);
	atomic_fetch_add(&l->node->listeners[listener_index].refused, 1);
}

/* Take the caps for a new client; NULL (and nothing held) when over one. */
static const char *
eng_listen_take_caps(struct eng_listen *l, const struct eng_listener *lc,
		     struct eng_listen_counters *c, uint32_t bucket)
{
	if (!spool_is_healthy(l->spool) || spool_is_below_reserve(l->spool))
		return "421 4.3.1 Insufficient system storage, try again later";
	if (l->free_head == ENG_LISTEN_NO_SLOT && l->conn_high >= l->conn_count)
		return "421 4.7.0 Too many connections";
	eng_global_limit_set_max(&c->total, lc->max_connections);
	if (!eng_global_limit_try_acquire(&c->total))
		return "421 4.7.0 Too many connections";
	if (!eng_ip_acquire(c, bucket, lc->max_connections_per_ip)) {
		eng_global_limit_release(&c->total);
		return "421 4.7.0 Too many connections from your address";
	}
	return NULL;
}

static void
eng_conn_session_init(struct eng_listen_conn *conn, const struct eng_listener *lc,
		      const struct sockaddr_storage *peer, bool loopback)
{
	struct smtp_server_config sc;
	smtp_server_config_default(&sc);
	sc.hostname = lc->hostname;
	sc.hostname_len = strlen(lc->hostname);
	sc.message_size_max = lc->message_size_limit;
	sc.recipients_max = lc->recipients_max;
	sc.client_is_allowed = eng_listener_allows(lc, (const struct sockaddr *)peer);
	sc.starttls_is_offered = conn->listen->tls_ctx[conn->listener_index] != NULL;
	sc.tls_is_required = sc.starttls_is_offered && lc->require_tls;
	/* AUTH only where the password cannot be sniffed: under TLS, or from
	 * a loopback client (the session enforces it). */
	conn->auth_offered = eng_auth_worker_offers(conn->listen->auth, conn->listener_index);
	sc.auth_is_offered = conn->auth_offered;
	sc.auth_requires_tls = !loopback;
	smtp_server_init(&conn->session, &sc);
}

static struct eng_listen_conn *
eng_conn_take_slot(struct eng_listen *l)
{
	struct eng_listen_conn *conn;
	if (l->free_head != ENG_LISTEN_NO_SLOT) {
		ENG_ASSERT(l->free_head < l->conn_high);
		conn = &l->conns[l->free_head];
		l->free_head = conn->free_next;
	} else {
		/* A slot never used: the pool's pages are touched as it grows. */
		ENG_ASSERT(l->conn_high < l->conn_count);
		conn = &l->conns[l->conn_high];
		conn->index = l->conn_high++;
		conn->fd = -1;
	}
	ENG_ASSERT(!conn->in_use);
	l->conn_used++;
	return conn;
}

static void
eng_listen_admit(struct eng_listen_socket *sock, int fd)
{
	struct eng_listen *l = sock->listen;
	eng_listen_reload(l);
	const struct eng_listener *lc = eng_listen_refresh(l, sock->listener_index);
	struct eng_listen_counters *c = &l->node->listeners[sock->listener_index];
	char ip[ENG_LISTEN_IP_TEXT_SIZE];
	uint32_t bucket = 0;
	bool loopback = false;
	eng_peer_describe(&sock->peer, ip, sizeof(ip), &bucket, &loopback);
	const char *refusal = eng_listen_take_caps(l, lc, c, bucket);
	if (refusal != NULL) {
		eng_listen_refuse(l, sock->listener_index, fd, refusal);
		return;
	}
	atomic_fetch_add(&c->accepted, 1);
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct eng_listen_conn *conn = eng_conn_take_slot(l);
	uint32_t index = conn->index;
	/* The flags and ops; the buffers after them keep their memory. */
	memset(conn, 0, offsetof(struct eng_listen_conn, in));
	conn->listen = l;
	conn->index = index;
	conn->listener_index = sock->listener_index;
	conn->fd = fd;
	conn->in_use = true;
	conn->ip_bucket = bucket;
	memcpy(conn->ip_text, ip, sizeof(ip));
	eng_conn_session_init(conn, lc, &sock->peer, loopback);
	uint64_t now = eng_now_monotonic_ns();
	conn->session_deadline_ns = now + lc->session_deadline_ns;
	conn->phase_deadline_ns = now + lc->command_timeout_ns;
	if (lc->greeting_delay_ns == 0) {
		smtp_server_start(&conn->session);
		eng_conn_pump(conn);
		return;
	}
	conn->timer_op.callback = eng_conn_timer_callback;
	conn->timer_op.ctx = conn;
	conn->timer_op.tag = ENG_CONN_TAG_TIMER;
	int ret = ring_prep_timeout(l->ring, &conn->timer_op, lc->greeting_delay_ns);
	ENG_ASSERT(ret == 0);
	conn->timer_in_flight = true;
	eng_conn_arm_recv(conn); /* bytes before the banner: an early talker */
}

static bool
eng_accept_error_is_transient(int32_t res)
{
	return res == -EINTR || res == -EAGAIN || res == -ECONNABORTED || res == -EPROTO ||
	       res == -EPERM || res == -ENETDOWN || res == -EHOSTUNREACH || res == -ENETUNREACH;
}

static void
eng_accept_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen_socket *sock = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(sock->accept_in_flight);
	sock->accept_in_flight = false;
	struct eng_listen *l = sock->listen;
	if (res >= 0) {
		if (l->stopping)
			close(res);
		else
			eng_listen_admit(sock, res);
	} else if (res != -ECANCELED && !eng_accept_error_is_transient(res)) {
		/* EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for the sweep. */
		sock->accept_paused = true;
	}
	if (!l->stopping && !sock->accept_paused)
		eng_accept_arm(sock);
}

static void
eng_accept_arm(struct eng_listen_socket *sock)
{
	ENG_ASSERT(!sock->accept_in_flight && sock->fd >= 0);
	sock->peer_len = sizeof(sock->peer);
	sock->accept_op.callback = eng_accept_callback;
	sock->accept_op.ctx = sock;
	int ret = ring_prep_accept(sock->listen->ring, &sock->accept_op, sock->fd,
				   (struct sockaddr *)&sock->peer, &sock->peer_len);
	ENG_ASSERT(ret == 0);
	sock->accept_in_flight = true;
}

/* "127.0.0.1:2525" or "[::1]:2525". */
static void
eng_listener_address_text(const struct eng_listener *lc, char *out, size_t out_size)
{
	if (lc->address.kind == ENG_HOST_IPV6)
		snprintf(out, out_size, "[%s]:%u", lc->address.host, lc->address.port);
	else
		snprintf(out, out_size, "%s:%u", lc->address.host, lc->address.port);
}

static int
eng_listen_socket_open(struct eng_listen_socket *sock, const struct eng_listener *lc, char *err,
		       size_t err_size)
{
	char where[ENG_DOMAIN_SIZE + 16];
	eng_listener_address_text(lc, where, sizeof(where));
	struct sockaddr_storage ss;
	socklen_t ss_len = 0;
	if (eng_hostport_sockaddr(&lc->address, &ss, &ss_len) < 0) {
		snprintf(err, err_size, "listener %s: address %s is not an IP literal", lc->name,
			 where);
		return -EINVAL;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&ss, ss_len) < 0 || listen(fd, ENG_LISTEN_BACKLOG) < 0) {
		int e = errno;
		snprintf(err, err_size, "listener %s: cannot listen on %s: %s", lc->name, where,
			 strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	sock->fd = fd;
	return 0;
}

/* ---------------------------------------------------------------------------
 * The sweep: timeouts, lingering closes, paused accepts. Once a second.
 */

static void
eng_conn_check(struct eng_listen_conn *conn, uint64_t now)
{
	if (conn->closing) {
		if (now >= conn->linger_deadline_ns && !conn->hard)
			eng_conn_begin_close(conn, true);
		return;
	}
	bool waits_for_us = conn->append_in_flight || conn->timer_in_flight || conn->auth_in_flight;
	if (now < conn->session_deadline_ns && (waits_for_us || now < conn->phase_deadline_ns))
		return;
	/* Slowloris, an idle client, or one that does not read: 421 4.4.2. */
	smtp_server_timeout(&conn->session);
	eng_conn_pump(conn);
}

static void eng_sweep_arm(struct eng_listen *l);

static void
eng_sweep_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_listen *l = op->ctx;
	(void)res;
	(void)cqe_flags;
	ENG_ASSERT(l->sweep_in_flight);
	l->sweep_in_flight = false;
	if (l->stopping)
		return;
	eng_listen_reload(l); /* a SIGHUP's certificate, without waiting for a client */
	uint64_t now = eng_now_monotonic_ns();
	for (uint32_t i = 0; i < l->conn_high; i++) {
		if (l->conns[i].in_use)
			eng_conn_check(&l->conns[i], now);
	}
	for (uint32_t i = 0; i < l->socket_count; i++) {
		struct eng_listen_socket *sock = &l->sockets[i];
		if (sock->accept_paused && !sock->accept_in_flight) {
			sock->accept_paused = false;
			eng_accept_arm(sock);
		}
	}
	eng_sweep_arm(l);
}

static void
eng_sweep_arm(struct eng_listen *l)
{
	ENG_ASSERT(!l->sweep_in_flight);
	l->sweep_op.callback = eng_sweep_callback;
	l->sweep_op.ctx = l;
	int ret = ring_prep_timeout(l->ring, &l->sweep_op, ENG_LISTEN_SWEEP_NS);
	ENG_ASSERT(ret == 0);
	l->sweep_in_flight = true;
}

/* ---------------------------------------------------------------------------
 * Create, stop, destroy.
 */

static uint32_t
eng_listen_pool_size(const struct eng_config *cfg)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < cfg->listener_count; i++)
		total += cfg->listeners[i].max_connections;
	return (uint32_t)ENG_MAX(1ull, ENG_MIN(total, (uint64_t)ENG_LISTEN_CONNS_MAX));
}

static int
eng_listen_open_all(struct eng_listen *l, char *err, size_t err_size)
{
	const struct eng_config *cfg = *l->config;
	l->tls_config_seen = cfg;
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		const struct eng_listener *lc = &cfg->listeners[i];
		if (lc->tls_certificate[0] != '\0') {
			int ret = eng_listen_tls_ctx_create(lc, &l->tls_ctx[i], err, err_size);
			if (ret < 0)
				return ret;
		}
		struct eng_listen_socket *sock = &l->sockets[i];
		sock->listen = l;
		sock->listener_index = i;
		sock->fd = -1;
		l->listeners[i] = *lc;
		l->socket_count = i + 1;
		int ret = eng_listen_socket_open(sock, lc, err, err_size);
		if (ret < 0)
			return ret;
	}
	return 0;
}

struct eng_listen *
eng_listen_create(struct ring *ring, const struct eng_config *const *config,
		  struct eng_listen_node *node, struct spool *spool, struct eng_deliver *deliver,
		  uint32_t shard_index, char *err, size_t err_size)
{
	ENG_ASSERT(ring != NULL && config != NULL && *config != NULL && node != NULL);
	ENG_ASSERT(spool != NULL && deliver != NULL);
	ENG_ASSERT(node->count == (*config)->listener_count);
	struct eng_listen *l = calloc(1, sizeof(*l));
	uint32_t pool = eng_listen_pool_size(*config);
	if (l == NULL || (l->conns = calloc(pool, sizeof(*l->conns))) == NULL) {
		snprintf(err, err_size, "listener: out of memory for %u connections", pool);
		free(l);
		return NULL;
	}
	*l = (struct eng_listen){ .ring = ring, .config = config, .node = node, .spool = spool,
		.deliver = deliver, .shard_index = shard_index, .conn_count = pool,
		.free_head = ENG_LISTEN_NO_SLOT, .conns = l->conns };
	/* conns stays untouched (calloc'd) until eng_conn_take_slot uses it. */
	l->auth = node->auth;
	l->auth_fd = -1;
	if (eng_listen_open_all(l, err, err_size) < 0) {
		eng_listen_destroy(l);
		return NULL;
	}
	if (l->auth != NULL) {
		l->auth_fd = eng_auth_worker_attach(l->auth, shard_index);
		if (l->auth_fd < 0) {
			snprintf(err, err_size, "listener: cannot make an eventfd: %s",
				 strerror(-l->auth_fd));
			eng_listen_destroy(l);
			return NULL;
		}
		eng_listen_auth_arm(l);
	}
	for (uint32_t i = 0; i < l->socket_count; i++)
		eng_accept_arm(&l->sockets[i]);
	eng_sweep_arm(l);
	spool_set_message_place_hook(spool, eng_listen_placed, l);
	l->place_hook_set = true;
	return l;
}

static bool
eng_listen_is_idle(const struct eng_listen *l)
{
	if (l->conn_used > 0 || l->sweep_in_flight || l->sweep_cancel_in_flight ||
	    l->auth_poll_in_flight || l->auth_remove_in_flight)
		return false;
	for (uint32_t i = 0; i < l->socket_count; i++) {
		if (l->sockets[i].accept_in_flight || l->sockets[i].cancel_in_flight)
			return false;
	}
	return true;
}

static void
eng_listen_cancel_done(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)res;
	(void)cqe_flags;
	bool *in_flight = op->ctx;
	ENG_ASSERT(*in_flight);
	*in_flight = false;
}

/* Stop accepting and the sweep; close every connection (soft first). */
static void
eng_listen_stop_begin(struct eng_listen *l)
{
	l->stopping = true;
	for (uint32_t i = 0; i < l->socket_count; i++) {
		struct eng_listen_socket *sock = &l->sockets[i];
		if (!sock->accept_in_flight)
			continue;
		sock->cancel_op.callback = eng_listen_cancel_done;
		sock->cancel_op.ctx = &sock->cancel_in_flight;
		int ret = ring_prep_cancel(l->ring, &sock->cancel_op, &sock->accept_op);
		ENG_ASSERT(ret == 0);
		sock->cancel_in_flight = true;
	}
	if (l->sweep_in_flight) {
		l->sweep_cancel_op.callback = eng_listen_cancel_done;
		l->sweep_cancel_op.ctx = &l->sweep_cancel_in_flight;
		int ret = ring_prep_cancel(l->ring, &l->sweep_cancel_op, &l->sweep_op);
		ENG_ASSERT(ret == 0);
		l->sweep_cancel_in_flight = true;
	}
	for (uint32_t i = 0; i < l->conn_high; i++) {
		if (l->conns[i].in_use)
			eng_conn_begin_close(&l->conns[i], false);
	}
}

/* Stopping, every connection gone (none waits for an AUTH answer): stop
 * polling the worker's eventfd. */
static void
eng_listen_auth_unpoll(struct eng_listen *l)
{
	if (l->conn_used > 0 || !l->auth_poll_in_flight || l->auth_remove_in_flight)
		return;
	l->auth_remove_op.callback = eng_listen_cancel_done;
	l->auth_remove_op.ctx = &l->auth_remove_in_flight;
	int ret = ring_prep_poll_remove(l->ring, &l->auth_remove_op, &l->auth_poll_op);
	ENG_ASSERT(ret == 0);
	l->auth_remove_in_flight = true;
}

void
eng_listen_stop(struct eng_listen *l)
{
	if (l == NULL)
		return;
	eng_listen_stop_begin(l);
	for (uint32_t turn = 0; turn < ENG_LISTEN_STOP_TURNS && !eng_listen_is_idle(l); turn++) {
		/* After 2 s, stop being polite: the remaining clients are cut. */
		for (uint32_t i = 0; turn == 20 && i < l->conn_high; i++) {
			if (l->conns[i].in_use)
				eng_conn_begin_close(&l->conns[i], true);
		}
		eng_listen_auth_unpoll(l);
		int ret = ring_run_once(l->ring, 100ull * 1000ull * 1000ull);
		ENG_ASSERT(ret >= 0 || ret == -EINTR || ret == -ETIME);
	}
	for (uint32_t i = 0; i < l->socket_count; i++) {
		if (l->sockets[i].fd >= 0 && !l->sockets[i].accept_in_flight) {
			close(l->sockets[i].fd);
			l->sockets[i].fd = -1;
		}
	}
}

void
eng_listen_destroy(struct eng_listen *l)
{
	if (l == NULL)
		return;
	if (!eng_listen_is_idle(l) && l->stopping) {
		/* Ops still owned by the ring: leaking beats a use after free. */
		fprintf(stderr, "ringmail: listener: %u connections did not close; leaked\n",
			l->conn_used);
		return;
	}
	if (l->place_hook_set) /* delivery still appends DSNs after us */
		spool_set_message_place_hook(l->spool, NULL, NULL);
	for (uint32_t i = 0; i < l->socket_count; i++) {
		if (l->sockets[i].fd >= 0)
			close(l->sockets[i].fd);
		eng_tls_ctx_put(l->tls_ctx[i]);
	}
	for (uint32_t i = 0; i < l->conn_high; i++) {
		ENG_ASSERT(!l->conns[i].in_use || !l->stopping);
		free(l->conns[i].record);
		free(l->conns[i].rcpt_spans);
	}
	free(l->conns);
	free(l);
}

uint32_t
eng_listen_connections(const struct eng_listen *l)
{
	ENG_ASSERT(l != NULL);
	return l->conn_used;
}
