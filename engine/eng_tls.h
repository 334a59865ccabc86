/*
 * eng_tls.h - TLS for ringmail's connections, with wolfSSL driven entirely
 * through the engine's own buffers: wolfSSL never touches a socket. The
 * owner (eng_conn for outbound, eng_listen for inbound, ringmail-sink in
 * bench/) keeps doing every recv and send through its ring; this module
 * sits between those ciphertext bytes and the plaintext SMTP session.
 *
 *   ring recv --> eng_tls_input_space/commit --> [wolfSSL] --> eng_tls_read --> smtp feed
 *   smtp output --> eng_tls_write --> [wolfSSL] --> eng_tls_output/consume --> ring send
 *
 * wolfSSL's I/O callbacks read from the ciphertext input buffer and append
 * to the ciphertext output buffer; when the input is empty they answer
 * WANT_READ, when the output is full WANT_WRITE. Nothing blocks, nothing
 * spawns a thread.
 *
 * Contexts (struct eng_tls_ctx): one client context and at most one server
 * context per shard, created on the shard's thread; each wraps a
 * WOLFSSL_CTX. The server context is replaced on SIGHUP (new certificate
 * and key): connections keep a reference to the context they started with,
 * which is freed when its last connection ends (eng_tls_ctx_put).
 *
 * Session resumption (struct eng_tls_session_cache): a per-shard, fixed
 * size table keyed by the peer's name (the MX host name, or the address
 * literal when it has no name) and port. A client connection started with
 * a key resumes from the cached session when there is one, and stores the
 * newest session (TLS 1.3 tickets arrive after the handshake) when it ends
 * cleanly. Oldest entry evicted first. No lock: shard-local.
 *
 * Verification: under ENG_TLS_VERIFY_NONE the handshake never fails on the
 * certificate, but the chain and name are still checked so the delivery log
 * can say whether the peer would have verified (info.is_verified). Under
 * ENG_TLS_VERIFY_PEER a chain that does not reach the CA store, or a name
 * that does not match (SNI is set to the same name), fails the handshake
 * with a clear error text.
 *
 * Ownership: struct eng_tls is caller memory (embedded in a connection);
 * eng_tls_*_start() allocates the WOLFSSL object, eng_tls_end() frees it
 * (always call it, also after a failure). Buffers are inside the struct.
 * Errors: start functions return 0 or -errno/-EPROTO with err filled; run
 * time failures are ENG_TLS_ERROR with eng_tls_error_text() saying why.
 */
#ifndef ENG_TLS_H
#define ENG_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/eng_common.h"

/* One full TLS record (16 KiB plaintext + the largest overhead) fits. */
#define ENG_TLS_CIPHER_IN_SIZE (16384u + 2048u)
/* Output: two full records, so a write can encrypt while one is sent. */
#define ENG_TLS_CIPHER_OUT_SIZE (2u * (16384u + 2048u))
#define ENG_TLS_VERSION_SIZE 16u /* "TLSv1.3" */
#define ENG_TLS_CIPHER_SIZE 64u	 /* "TLS_AES_256_GCM_SHA384" */
#define ENG_TLS_ERROR_SIZE 160u
#define ENG_TLS_SESSION_KEY_SIZE 272u /* host name (255) ":" port, NUL */

enum eng_tls_role {
	ENG_TLS_ROLE_CLIENT = 1,
	ENG_TLS_ROLE_SERVER,
};

enum eng_tls_verify {
	ENG_TLS_VERIFY_NONE = 0, /* record the result, never fail on it */
	ENG_TLS_VERIFY_PEER,	 /* chain to the CA store and name match, or fail */
};

/* Results of eng_tls_handshake(), eng_tls_read() and eng_tls_write(). */
enum eng_tls_result {
	ENG_TLS_OK = 0,	  /* done (handshake) or bytes moved (read/write) */
	ENG_TLS_WANT_IO,  /* needs more ciphertext in, or output to drain */
	ENG_TLS_CLOSED,	  /* the peer sent close_notify */
	ENG_TLS_ERROR,	  /* fatal: see eng_tls_error_text(); end the connection */
};

/* What was negotiated, for the delivery log and the Received: header. */
struct eng_tls_info {
	char version[ENG_TLS_VERSION_SIZE]; /* NUL-terminated */
	char cipher[ENG_TLS_CIPHER_SIZE];   /* NUL-terminated */
	bool is_verified; /* chain and name checked and good (client role) */
	bool is_resumed;  /* the session was resumed */
};

struct eng_tls_ctx;
struct eng_tls_session_cache;

struct eng_tls {
	void *ssl; /* WOLFSSL *, NULL when not started */
	struct eng_tls_ctx *ctx;
	struct eng_tls_session_cache *cache; /* client: where to store the session */
	enum eng_tls_role role;
	bool is_handshake_done;
	bool is_failed;
	bool verify_is_ok; /* set by the verify callback */
	char session_key[ENG_TLS_SESSION_KEY_SIZE];
	char error_text[ENG_TLS_ERROR_SIZE];
	/* Added by eng_tls.c (internal state, not for owners to touch). */
	enum eng_tls_verify verify;
	bool verify_has_failed;  /* some certificate failed (first reason kept) */
	bool resume_is_verified; /* the session offered for resumption was verified */
	bool is_shutdown_sent;
	char verify_text[ENG_TLS_ERROR_SIZE]; /* "certificate verify failed: ..." */
	uint32_t in_start; /* ciphertext not yet read by wolfSSL: [in_start, in_end) */
	uint32_t in_end;
	uint32_t out_end;  /* ciphertext waiting to be sent: [0, out_end) */
	uint8_t cipher_in[ENG_TLS_CIPHER_IN_SIZE];
	uint8_t cipher_out[ENG_TLS_CIPHER_OUT_SIZE];
};

/* Once per process, before any context (wolfSSL_Init). Returns 0 or -1. */
int eng_tls_global_init(void) ENG_WARN_UNUSED;

/* A thread that used TLS is ending: free what wolfSSL keeps per thread (the
 * fixed-point ECC cache). Call last, once no TLS object of the thread is
 * left (eng_node at the end of a shard thread). */
void eng_tls_thread_end(void);

/*
 * Client context. ca_file: PEM bundle for ENG_TLS_VERIFY_PEER and for the
 * recorded verification result; NULL: the system store
 * (/etc/ssl/certs/ca-certificates.crt). Returns 0 or -errno with err set
 * to one line naming the file.
 */
int eng_tls_client_ctx_create(struct eng_tls_ctx **out, const char *ca_file, char *err,
			      size_t err_size) ENG_WARN_UNUSED;
/* Server context from a PEM certificate chain and key (checked to match).
 * Returns 0 or -errno/-EPROTO with err naming the file. */
int eng_tls_server_ctx_create(struct eng_tls_ctx **out, const char *cert_file,
			      const char *key_file, char *err, size_t err_size) ENG_WARN_UNUSED;
/* Drop the creator's reference; freed when no connection uses it. */
void eng_tls_ctx_put(struct eng_tls_ctx *ctx);
/* Server context: send no session tickets and keep no session cache, so
 * every handshake is a full one (ringmail-sink --tls-no-resume). */
void eng_tls_server_ctx_disable_resumption(struct eng_tls_ctx *ctx);

/* Session cache with room for capacity peers (> 0). NULL on ENOMEM. */
struct eng_tls_session_cache *eng_tls_session_cache_create(uint32_t capacity);
void eng_tls_session_cache_destroy(struct eng_tls_session_cache *cache);
/* Entries held, for tests and metrics. */
uint32_t eng_tls_session_cache_count(const struct eng_tls_session_cache *cache);

/*
 * Start the client side of a handshake. sni_host (len > 0) is sent as SNI
 * and checked against the certificate; cache may be NULL (no resumption).
 * session_key identifies the peer in the cache (host:port). Returns 0 or
 * -errno (ENOMEM) with tls->error_text set; call eng_tls_end() either way.
 */
int eng_tls_client_start(struct eng_tls *tls, struct eng_tls_ctx *ctx, const char *sni_host,
			 size_t sni_host_len, enum eng_tls_verify verify,
			 struct eng_tls_session_cache *cache, const char *session_key,
			 size_t session_key_len) ENG_WARN_UNUSED;
int eng_tls_server_start(struct eng_tls *tls, struct eng_tls_ctx *ctx) ENG_WARN_UNUSED;

/* Ciphertext from the network: where the next recv may write, then how
 * many bytes it wrote. Input wolfSSL has not read yet is moved to the front
 * first; the space is empty only when the buffer holds a whole unread
 * record's worth (call read/handshake first). */
void eng_tls_input_space(struct eng_tls *tls, uint8_t **ptr, size_t *size);
void eng_tls_input_commit(struct eng_tls *tls, size_t size);

/* Ciphertext for the network: what to send, then how much was sent. */
void eng_tls_output(const struct eng_tls *tls, const uint8_t **ptr, size_t *size);
void eng_tls_output_consume(struct eng_tls *tls, size_t size);
bool eng_tls_output_is_pending(const struct eng_tls *tls);

/* Drive the handshake: OK once complete; WANT_IO: send any output and/or
 * receive more input, then call again; ERROR: failed (error text set). */
enum eng_tls_result eng_tls_handshake(struct eng_tls *tls);

/* Decrypt into buf: OK with *got > 0, WANT_IO (*got == 0), CLOSED or ERROR. */
enum eng_tls_result eng_tls_read(struct eng_tls *tls, uint8_t *buf, size_t cap, size_t *got);

/* Encrypt up to len bytes into the output buffer: OK with *taken > 0, or
 * WANT_IO (*taken == 0) when the output buffer must drain first, or ERROR. */
enum eng_tls_result eng_tls_write(struct eng_tls *tls, const uint8_t *ptr, size_t len,
				  size_t *taken);

/* Queue close_notify into the output (best effort). */
void eng_tls_shutdown(struct eng_tls *tls);

/* After a completed handshake. */
void eng_tls_get_info(const struct eng_tls *tls, struct eng_tls_info *info);

/* Server: the host name the client sent as SNI, copied NUL-terminated
 * into buf; returns its length, 0 when none was sent (or it does not fit). */
size_t eng_tls_server_sni(const struct eng_tls *tls, char *buf, size_t size);

/* Why it failed, NUL-terminated ("" when it has not). */
const char *eng_tls_error_text(const struct eng_tls *tls);

/* Store the client session in the cache (if the handshake completed and
 * the connection did not fail), free the WOLFSSL object, drop the context
 * reference. Safe on a never-started or already-ended struct. */
void eng_tls_end(struct eng_tls *tls);

#endif /* ENG_TLS_H */
