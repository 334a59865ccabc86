/*
 * test_tls.c - engine/eng_tls: wolfSSL through the engine's own buffers.
 *
 * Every test runs an in-memory client and server (two struct eng_tls; the
 * "network" is a loop that moves each side's ciphertext output into the
 * other side's input), with certificates made fresh by
 * tests/lib/tls_certs.sh into a temporary directory. Covered: TLS 1.3
 * handshake and its info, data both ways past 64 KiB and fed one byte at a
 * time, VERIFY_PEER against the test CA, the four bad certificates (wrong
 * name, self-signed, CN only, expired: TLS-02) failing under VERIFY_PEER and
 * passing unverified under VERIFY_NONE, SNI seen by the server (TLS-10),
 * resumption seen on both sides, close_notify, garbage input, a full
 * output buffer, the server context's reference count, the session cache's
 * eviction, and what wolfSSL alone does with a CN-only certificate.
 */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_tls.h"

#define T_HOST "mx.ringmail.test"
#define T_KEY "mx.ringmail.test:25"
#define T_STEPS_MAX 100000u

static char t_dir[256];
static struct eng_tls t_client;
static struct eng_tls t_server;
static struct eng_tls_ctx *t_client_ctx;
static struct eng_tls_ctx *t_server_ctx;
static struct eng_tls_session_cache *t_cache;

/* The "network" of one direction: all of the sender's output is taken at
 * once (as a send would), the receiver gets at most chunk_max bytes per
 * step (a short recv). */
struct t_wire {
	uint8_t data[2u * ENG_TLS_CIPHER_OUT_SIZE];
	size_t start;
	size_t end;
};

static struct t_wire t_wires[2]; /* [0]: client to server, [1]: server to client */

static void
t_path(char *out, size_t size, const char *name)
{
	int n = snprintf(out, size, "%s/%s", t_dir, name);
	cr_assert(n > 0 && (size_t)n < size);
}

static void
t_setup(void)
{
	const char *source = getenv("RINGMAIL_SOURCE_DIR");
	if (source == NULL) {
		source = T_SOURCE_DIR;
	}
	snprintf(t_dir, sizeof(t_dir), "/tmp/ringmail-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(t_dir));
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "sh '%s/tests/lib/tls_certs.sh' '%s/certs'", source, t_dir);
	cr_assert_eq(system(cmd), 0, "tls_certs.sh failed");
	snprintf(t_dir + strlen(t_dir), sizeof(t_dir) - strlen(t_dir), "/certs");
	cr_assert_eq(eng_tls_global_init(), 0);
	t_cache = eng_tls_session_cache_create(16);
	cr_assert_not_null(t_cache);
}

static void
t_teardown(void)
{
	eng_tls_end(&t_client);
	eng_tls_end(&t_server);
	eng_tls_ctx_put(t_client_ctx);
	eng_tls_ctx_put(t_server_ctx);
	t_client_ctx = NULL;
	t_server_ctx = NULL;
	eng_tls_session_cache_destroy(t_cache);
	char *slash = strrchr(t_dir, '/');
	if (slash != NULL) {
		*slash = '\0'; /* the mkdtemp directory, above certs/ */
	}
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t_dir);
	cr_assert_eq(system(cmd), 0);
}

/* Client context trusting ca (a file in the cert dir), server context
 * from name.pem/name.key. */
static void
t_contexts(const char *ca, const char *name)
{
	char ca_path[512], cert[512], key[512], err[256] = "";
	char cert_name[64], key_name[64];
	t_path(ca_path, sizeof(ca_path), ca);
	snprintf(cert_name, sizeof(cert_name), "%s.pem", name);
	snprintf(key_name, sizeof(key_name), "%s.key", name);
	t_path(cert, sizeof(cert), cert_name);
	t_path(key, sizeof(key), key_name);
	cr_assert_eq(eng_tls_client_ctx_create(&t_client_ctx, ca_path, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(eng_tls_server_ctx_create(&t_server_ctx, cert, key, err, sizeof(err)), 0,
		     "%s", err);
}

static void
t_start(const char *host, enum eng_tls_verify verify, const char *key)
{
	memset(&t_client, 0, sizeof(t_client));
	memset(&t_server, 0, sizeof(t_server));
	memset(t_wires, 0, sizeof(t_wires));
	cr_assert_eq(eng_tls_client_start(&t_client, t_client_ctx, host, strlen(host), verify,
					  key != NULL ? t_cache : NULL, key,
					  key != NULL ? strlen(key) : 0),
		     0, "%s", eng_tls_error_text(&t_client));
	cr_assert_eq(eng_tls_server_start(&t_server, t_server_ctx), 0);
}

static struct t_wire *
t_wire_of(const struct eng_tls *from)
{
	return from == &t_client ? &t_wires[0] : &t_wires[1];
}

/* Move from's output onto the wire, then up to chunk_max bytes of the
 * wire into to's input. Returns the bytes that moved. */
static size_t
t_shuttle(struct eng_tls *from, struct eng_tls *to, size_t chunk_max)
{
	struct t_wire *wire = t_wire_of(from);
	if (wire->start == wire->end) {
		wire->start = wire->end = 0;
	}
	const uint8_t *out = NULL;
	size_t out_size = 0;
	eng_tls_output(from, &out, &out_size);
	size_t sent = ENG_MIN(out_size, sizeof(wire->data) - wire->end);
	memcpy(wire->data + wire->end, out, sent);
	wire->end += sent;
	eng_tls_output_consume(from, sent);
	uint8_t *in = NULL;
	size_t in_size = 0;
	eng_tls_input_space(to, &in, &in_size);
	size_t count = ENG_MIN(ENG_MIN(wire->end - wire->start, in_size), chunk_max);
	memcpy(in, wire->data + wire->start, count);
	wire->start += count;
	eng_tls_input_commit(to, count);
	return sent + count;
}

struct t_handshake {
	enum eng_tls_result client;
	enum eng_tls_result server;
};

/* Drive both sides until both are done or one fails. */
static struct t_handshake
t_handshake(size_t chunk_max)
{
	struct t_handshake r = { ENG_TLS_WANT_IO, ENG_TLS_WANT_IO };
	for (uint32_t step = 0; step < T_STEPS_MAX; step++) {
		if (r.client == ENG_TLS_WANT_IO) {
			r.client = eng_tls_handshake(&t_client);
		}
		if (r.server == ENG_TLS_WANT_IO) {
			r.server = eng_tls_handshake(&t_server);
		}
		size_t moved = t_shuttle(&t_client, &t_server, chunk_max) +
			       t_shuttle(&t_server, &t_client, chunk_max);
		bool is_done = r.client != ENG_TLS_WANT_IO && r.server != ENG_TLS_WANT_IO;
		bool is_failed = r.client == ENG_TLS_ERROR || r.server == ENG_TLS_ERROR;
		if (is_done || (is_failed && moved == 0)) {
			if (is_failed && r.server == ENG_TLS_WANT_IO) {
				r.server = eng_tls_handshake(&t_server); /* sees the alert */
			}
			return r;
		}
	}
	cr_assert_fail("handshake did not end in %u steps", T_STEPS_MAX);
	return r;
}

static void
t_handshake_ok(void)
{
	struct t_handshake r = t_handshake(SIZE_MAX);
	cr_assert_eq(r.client, ENG_TLS_OK, "client: %s", eng_tls_error_text(&t_client));
	cr_assert_eq(r.server, ENG_TLS_OK, "server: %s", eng_tls_error_text(&t_server));
}

static uint8_t
t_pattern(size_t index, uint8_t seed)
{
	return (uint8_t)((index * 31u + seed + (index >> 8)) & 0xffu);
}

/* Send len pattern bytes from one side to the other, the ciphertext moved
 * chunk_max bytes at a time; the receiver checks every byte. */
static void
t_transfer(struct eng_tls *from, struct eng_tls *to, size_t len, size_t chunk_max, uint8_t seed)
{
	uint8_t *data = malloc(len);
	cr_assert_not_null(data);
	for (size_t i = 0; i < len; i++) {
		data[i] = t_pattern(i, seed);
	}
	size_t sent = 0, received = 0;
	uint8_t buf[4096];
	for (uint64_t step = 0; received < len; step++) {
		cr_assert(step < 50u * 1000u * 1000u, "transfer stuck at %zu/%zu", received, len);
		if (sent < len) {
			size_t taken = 0;
			enum eng_tls_result rc = eng_tls_write(from, data + sent, len - sent, &taken);
			cr_assert(rc == ENG_TLS_OK || rc == ENG_TLS_WANT_IO, "write: %s",
				  eng_tls_error_text(from));
			cr_assert((rc == ENG_TLS_OK) == (taken > 0));
			sent += taken;
		}
		t_shuttle(from, to, chunk_max);
		t_shuttle(to, from, chunk_max); /* post-handshake messages */
		size_t got = 0;
		enum eng_tls_result rc = eng_tls_read(to, buf, sizeof(buf), &got);
		cr_assert(rc == ENG_TLS_OK || rc == ENG_TLS_WANT_IO, "read: %s",
			  eng_tls_error_text(to));
		cr_assert(received + got <= len);
		for (size_t i = 0; i < got; i++) {
			cr_assert_eq(buf[i], data[received + i], "byte %zu differs", received + i);
		}
		received += got;
	}
	free(data);
}

TestSuite(tls, .init = t_setup, .fini = t_teardown, .timeout = 60);

Test(tls, handshake_completes_tls13_with_info)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	struct eng_tls_info client, server;
	eng_tls_get_info(&t_client, &client);
	eng_tls_get_info(&t_server, &server);
	cr_assert_str_eq(client.version, "TLSv1.3");
	cr_assert_str_eq(server.version, "TLSv1.3");
	cr_assert(strlen(client.cipher) > 0);
	cr_assert_str_eq(client.cipher, server.cipher);
	cr_assert(client.is_verified, "VERIFY_PEER with the issuing CA verifies");
	cr_assert_not(client.is_resumed);
	cr_assert_not(server.is_resumed);
	cr_assert_str_eq(eng_tls_error_text(&t_client), "");
}

Test(tls, data_both_ways_past_64k)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	t_transfer(&t_client, &t_server, 200u * 1024u + 7u, SIZE_MAX, 1);
	t_transfer(&t_server, &t_client, 150u * 1024u + 3u, SIZE_MAX, 2);
	t_transfer(&t_client, &t_server, 1, SIZE_MAX, 3);
}

Test(tls, input_fed_one_byte_at_a_time)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	struct t_handshake r = t_handshake(1);
	cr_assert_eq(r.client, ENG_TLS_OK, "%s", eng_tls_error_text(&t_client));
	cr_assert_eq(r.server, ENG_TLS_OK, "%s", eng_tls_error_text(&t_server));
	t_transfer(&t_client, &t_server, 70u * 1024u, 1, 4);
	t_transfer(&t_server, &t_client, 5000, 1, 5);
}

struct t_bad_cert {
	const char *name;
	const char *reason; /* in the error text under VERIFY_PEER */
};

static const struct t_bad_cert t_bad_certs[] = {
	{ "wrong", "host name mismatch" },
	{ "self", "certificate verify failed" },
	{ "cnonly", "no subjectAltName" },
	{ "expired", "certificate expired" },
};

static void
t_bad_cert_check(const struct t_bad_cert *bad)
{
	t_contexts("ca.pem", bad->name);
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, T_KEY);
	struct t_handshake r = t_handshake(SIZE_MAX);
	cr_assert_eq(r.client, ENG_TLS_ERROR, "%s verified under VERIFY_PEER", bad->name);
	cr_assert_neq(r.server, ENG_TLS_OK, "%s: server finished a failed handshake", bad->name);
	const char *text = eng_tls_error_text(&t_client);
	cr_assert(strstr(text, "certificate verify failed: ") == text, "%s: %s", bad->name, text);
	cr_assert(strstr(text, bad->reason) != NULL, "%s: %s", bad->name, text);
	cr_assert_null(strchr(text, '\n'));
	eng_tls_end(&t_client);
	eng_tls_end(&t_server);
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 0, "a failed session is not kept");

	t_start(T_HOST, ENG_TLS_VERIFY_NONE, T_KEY);
	t_handshake_ok();
	struct eng_tls_info info;
	eng_tls_get_info(&t_client, &info);
	cr_assert_not(info.is_verified, "%s: is_verified under VERIFY_NONE", bad->name);
	cr_assert_str_eq(eng_tls_error_text(&t_client), "");
	t_transfer(&t_client, &t_server, 100, SIZE_MAX, 6);
}

Test(tls, wrong_name_fails_peer_and_passes_none)
{
	t_bad_cert_check(&t_bad_certs[0]);
}

Test(tls, self_signed_fails_peer_and_passes_none)
{
	t_bad_cert_check(&t_bad_certs[1]);
}

Test(tls, cn_only_fails_peer_and_passes_none)
{
	t_bad_cert_check(&t_bad_certs[2]);
}

Test(tls, expired_fails_peer_and_passes_none)
{
	t_bad_cert_check(&t_bad_certs[3]);
}

/* TLS-02, documented: wolfSSL 5.5.4's own name check falls back to the CN
 * when there is no subjectAltName; eng_tls's verify callback is what
 * refuses the CN-only certificate. */
Test(tls, wolfssl_alone_accepts_a_cn_only_name)
{
	t_contexts("ca.pem", "cnonly");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	wolfSSL_set_verify(t_client.ssl, WOLFSSL_VERIFY_PEER, NULL);
	struct t_handshake r = t_handshake(SIZE_MAX);
	cr_assert_eq(r.client, ENG_TLS_OK, "wolfSSL now refuses CN-only names itself: %s",
		     eng_tls_error_text(&t_client));
}

Test(tls, wolfssl_alone_refuses_a_wrong_cn_only_name)
{
	t_contexts("ca.pem", "cnonly");
	t_start("other.ringmail.test", ENG_TLS_VERIFY_PEER, NULL);
	wolfSSL_set_verify(t_client.ssl, WOLFSSL_VERIFY_PEER, NULL);
	struct t_handshake r = t_handshake(SIZE_MAX);
	cr_assert_eq(r.client, ENG_TLS_ERROR);
}

Test(tls, address_literal_is_checked_against_ip_san_and_not_sent_as_sni)
{
	t_contexts("ca.pem", "server");
	t_start("127.0.0.1", ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	struct eng_tls_info info;
	eng_tls_get_info(&t_client, &info);
	cr_assert(info.is_verified);
	char sni[256];
	cr_assert_eq(eng_tls_server_sni(&t_server, sni, sizeof(sni)), 0);
	cr_assert_str_eq(sni, "");
}

Test(tls, server_receives_the_sni_name)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	char sni[256];
	cr_assert_eq(eng_tls_server_sni(&t_server, sni, sizeof(sni)), strlen(T_HOST));
	cr_assert_str_eq(sni, T_HOST);
}

/* One connection with key, data both ways (the server's data carries the
 * TLS 1.3 tickets along), a clean close; returns client and server info. */
static void
t_connection(const char *key, enum eng_tls_verify verify, struct eng_tls_info *client,
	     struct eng_tls_info *server)
{
	t_start(T_HOST, verify, key);
	t_handshake_ok();
	t_transfer(&t_client, &t_server, 10, SIZE_MAX, 7);
	t_transfer(&t_server, &t_client, 10, SIZE_MAX, 8);
	eng_tls_get_info(&t_client, client);
	eng_tls_get_info(&t_server, server);
	eng_tls_shutdown(&t_client);
	eng_tls_end(&t_client);
	eng_tls_end(&t_server);
}

Test(tls, second_connection_with_the_same_key_resumes_on_both_sides)
{
	t_contexts("ca.pem", "server");
	struct eng_tls_info client, server;
	t_connection(T_KEY, ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_not(client.is_resumed);
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 1);
	t_connection(T_KEY, ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert(client.is_resumed, "client did not resume");
	cr_assert(server.is_resumed, "server did not see a resumption");
	cr_assert(client.is_verified, "a resumed verified session stays verified");
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 1);
	t_connection("other.ringmail.test:25", ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_not(client.is_resumed, "a different key resumed");
	cr_assert_not(server.is_resumed);
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 2);
}

Test(tls, no_resumption_without_a_cache_or_when_the_server_refuses)
{
	t_contexts("ca.pem", "server");
	struct eng_tls_info client, server;
	t_connection(NULL, ENG_TLS_VERIFY_PEER, &client, &server);
	t_connection(NULL, ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_not(client.is_resumed);
	eng_tls_server_ctx_disable_resumption(t_server_ctx);
	t_connection(T_KEY, ENG_TLS_VERIFY_PEER, &client, &server);
	t_connection(T_KEY, ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_not(client.is_resumed, "resumed with tickets disabled");
	cr_assert_not(server.is_resumed);
}

/* An unverified session (VERIFY_NONE, untrusted CA) must not let a later
 * VERIFY_PEER connection skip the certificate check by resuming. */
Test(tls, verify_peer_never_resumes_an_unverified_session)
{
	t_contexts("self.pem", "server"); /* the client does not trust the server's CA */
	struct eng_tls_info client, server;
	t_connection(T_KEY, ENG_TLS_VERIFY_NONE, &client, &server);
	cr_assert_not(client.is_verified);
	t_connection(T_KEY, ENG_TLS_VERIFY_NONE, &client, &server);
	cr_assert(client.is_resumed, "VERIFY_NONE resumes");
	cr_assert_not(client.is_verified, "resumption carries the unverified state");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, T_KEY);
	struct t_handshake r = t_handshake(SIZE_MAX);
	cr_assert_eq(r.client, ENG_TLS_ERROR, "VERIFY_PEER passed through a resumed session");
}

Test(tls, session_cache_evicts_the_oldest)
{
	t_contexts("ca.pem", "server");
	eng_tls_session_cache_destroy(t_cache);
	t_cache = eng_tls_session_cache_create(2);
	cr_assert_not_null(t_cache);
	struct eng_tls_info client, server;
	t_connection("a:25", ENG_TLS_VERIFY_PEER, &client, &server);
	t_connection("b:25", ENG_TLS_VERIFY_PEER, &client, &server);
	t_connection("c:25", ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 2);
	t_connection("c:25", ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert(client.is_resumed, "the newest entry was evicted");
	t_connection("a:25", ENG_TLS_VERIFY_PEER, &client, &server);
	cr_assert_not(client.is_resumed, "the oldest entry was kept");
	cr_assert_eq(eng_tls_session_cache_count(t_cache), 2);
}

Test(tls, close_notify_gives_closed)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	t_transfer(&t_server, &t_client, 10, SIZE_MAX, 9);
	eng_tls_shutdown(&t_server);
	cr_assert(eng_tls_output_is_pending(&t_server), "no close_notify queued");
	t_shuttle(&t_server, &t_client, SIZE_MAX);
	uint8_t buf[64];
	size_t got = 99;
	cr_assert_eq(eng_tls_read(&t_client, buf, sizeof(buf), &got), ENG_TLS_CLOSED);
	cr_assert_eq(got, 0);
	cr_assert_str_eq(eng_tls_error_text(&t_client), "");
}

static void
t_feed(struct eng_tls *tls, const char *text)
{
	uint8_t *in = NULL;
	size_t size = 0;
	eng_tls_input_space(tls, &in, &size);
	cr_assert(size >= strlen(text));
	memcpy(in, text, strlen(text));
	eng_tls_input_commit(tls, strlen(text));
}

Test(tls, plaintext_instead_of_a_client_hello_is_an_error)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_feed(&t_server, "EHLO client.example\r\nMAIL FROM:<a@b>\r\n");
	cr_assert_eq(eng_tls_handshake(&t_server), ENG_TLS_ERROR);
	cr_assert(strlen(eng_tls_error_text(&t_server)) > 0);
	cr_assert_eq(eng_tls_handshake(&t_server), ENG_TLS_ERROR, "an error is final");
}

Test(tls, garbage_after_the_handshake_is_an_error)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	/* An application-data record header with a body that will not decrypt. */
	uint8_t *in = NULL;
	size_t size = 0;
	eng_tls_input_space(&t_client, &in, &size);
	const uint8_t record[5] = { 0x17, 0x03, 0x03, 0x00, 0x40 };
	memcpy(in, record, sizeof(record));
	memset(in + sizeof(record), 0xa5, 0x40);
	eng_tls_input_commit(&t_client, sizeof(record) + 0x40);
	uint8_t buf[64];
	size_t got = 0;
	cr_assert_eq(eng_tls_read(&t_client, buf, sizeof(buf), &got), ENG_TLS_ERROR);
	cr_assert(strstr(eng_tls_error_text(&t_client), "TLS read failed") != NULL, "%s",
		  eng_tls_error_text(&t_client));
	cr_assert_eq(eng_tls_read(&t_client, buf, sizeof(buf), &got), ENG_TLS_ERROR);
}

Test(tls, full_output_gives_want_io_then_progresses_after_consume)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	static uint8_t data[64u * 1024u];
	memset(data, 'x', sizeof(data));
	size_t sent = 0, taken = 0;
	enum eng_tls_result rc = ENG_TLS_OK;
	for (int i = 0; i < 100 && rc == ENG_TLS_OK; i++) {
		rc = eng_tls_write(&t_client, data + sent, sizeof(data) - sent, &taken);
		sent += taken;
	}
	cr_assert_eq(rc, ENG_TLS_WANT_IO, "the output never filled");
	cr_assert_eq(taken, 0);
	cr_assert(sent > 0 && sent < sizeof(data));
	cr_assert(eng_tls_output_is_pending(&t_client));
	/* Sending part of the output is enough to make room again. */
	const uint8_t *out = NULL;
	size_t out_size = 0;
	eng_tls_output(&t_client, &out, &out_size);
	cr_assert(out_size > ENG_TLS_CIPHER_OUT_SIZE / 2);
	eng_tls_output_consume(&t_client, out_size / 2 + 1);
	cr_assert(eng_tls_output_is_pending(&t_client));
	rc = eng_tls_write(&t_client, data + sent, sizeof(data) - sent, &taken);
	cr_assert_eq(rc, ENG_TLS_OK);
	cr_assert(taken > 0);
}

Test(tls, server_context_outlives_its_put_while_a_connection_uses_it)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	eng_tls_ctx_put(t_server_ctx); /* SIGHUP: the shard drops the old context */
	t_server_ctx = NULL;
	t_handshake_ok();
	t_transfer(&t_client, &t_server, 20000, SIZE_MAX, 10);
	t_transfer(&t_server, &t_client, 20000, SIZE_MAX, 11);
	eng_tls_end(&t_server); /* frees the context: ASan reports a leak otherwise */
	eng_tls_end(&t_server); /* safe twice */
}

Test(tls, bad_files_give_one_line_errors)
{
	char cert[512], key[512], wrong_key[512], err[256] = "";
	t_path(cert, sizeof(cert), "server.pem");
	t_path(key, sizeof(key), "server.key");
	t_path(wrong_key, sizeof(wrong_key), "wrong.key");
	struct eng_tls_ctx *ctx = NULL;
	int rc = eng_tls_server_ctx_create(&ctx, "/nonexistent/cert.pem", key, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT);
	cr_assert(strstr(err, "/nonexistent/cert.pem") != NULL, "%s", err);
	rc = eng_tls_server_ctx_create(&ctx, cert, wrong_key, err, sizeof(err));
	cr_assert_eq(rc, -EPROTO, "%d %s", rc, err);
	cr_assert(strstr(err, "does not match") != NULL, "%s", err);
	rc = eng_tls_server_ctx_create(&ctx, key, key, err, sizeof(err));
	cr_assert_eq(rc, -EPROTO, "a key is not a certificate");
	rc = eng_tls_client_ctx_create(&ctx, "/nonexistent/ca.pem", err, sizeof(err));
	cr_assert_eq(rc, -ENOENT);
	rc = eng_tls_client_ctx_create(&ctx, key, err, sizeof(err));
	cr_assert_eq(rc, -EPROTO, "a key is not a CA file: %s", err);
	cr_assert(strstr(err, key) != NULL, "%s", err);
	cr_assert_null(ctx);
}

Test(tls, system_store_loads)
{
	if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) != 0) {
		cr_skip_test("no system CA store");
	}
	char err[256] = "";
	cr_assert_eq(eng_tls_client_ctx_create(&t_client_ctx, NULL, err, sizeof(err)), 0, "%s",
		     err);
}

static void *
t_init_thread(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)eng_tls_global_init();
}

Test(tls, global_init_is_idempotent_across_threads)
{
	pthread_t threads[4];
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_create(&threads[i], NULL, t_init_thread, NULL), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *result = NULL;
		cr_assert_eq(pthread_join(threads[i], &result), 0);
		cr_assert_eq((intptr_t)result, 0);
	}
	cr_assert_eq(eng_tls_global_init(), 0);
}

/* Debian's wolfSSL offers NULL, anonymous, RC4 and integrity-only suites
 * by default: none of them may be offered. */
Test(tls, only_strong_cipher_suites_are_offered)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	WOLF_STACK_OF(WOLFSSL_CIPHER) *suites = wolfSSL_get_ciphers_compat(t_client.ssl);
	int count = wolfSSL_sk_SSL_CIPHER_num(suites);
	cr_assert(count > 0);
	static const char *const weak[] = { "NULL", "ADH", "RC4", "DES", "PSK", "SHA256-SHA256",
					    "SHA384-SHA384", "CCM-8" };
	for (int i = 0; i < count; i++) {
		const char *name = wolfSSL_CIPHER_get_name(wolfSSL_sk_SSL_CIPHER_value(suites, i));
		for (size_t w = 0; w < sizeof(weak) / sizeof(weak[0]); w++) {
			cr_assert_null(strstr(name, weak[w]), "offered: %s", name);
		}
	}
	/* The server's list is the same one: see the openssl s_client test
	 * in tests/bench/test_bench_tools.py (tls) for NULL suites refused. */
	t_handshake_ok();
}

Test(tls, chacha20_is_preferred)
{
	t_contexts("ca.pem", "server");
	t_start(T_HOST, ENG_TLS_VERIFY_PEER, NULL);
	t_handshake_ok();
	struct eng_tls_info info;
	eng_tls_get_info(&t_client, &info);
	cr_assert(strstr(info.cipher, "CHACHA20") != NULL, "%s", info.cipher);
}
