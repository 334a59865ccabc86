/*
 * test_conn_tls.c - eng_conn with STARTTLS against the aiosmtpd sink
 * (sink.py --tls-cert/--tls-key; certificates from tests/lib/tls_certs.sh):
 * messages of up to 600 KB through eng_tls (the ciphertext buffer fills
 * and drains many times) arrive byte-identical over TLS; verify against
 * the test CA with the name localhost; a second connection resumes the
 * session (the sink's ssl object says session_reused); required against
 * a sink without STARTTLS closes with tls_required before any MAIL; verify
 * with the wrong name fails the handshake (tls_failed, nothing recorded).
 *
 * Suites integration, conn and tls. 127.0.0.1 only. No fixed sleeps.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "engine/eng_conn.h"
#include "engine/eng_tls.h"
#include "t_conn.h"

#define T_RECORD_LINE_SIZE (4u << 20)
#define T_REPLY_MS 30000u

static char certs_dir[T_CONN_PATH_SIZE];
static struct eng_tls_ctx *client_ctx;

/* Certificates in a fresh directory under the build dir; the client
 * context trusts the test CA. */
static void
t_tls_setup(void)
{
	const char *build = getenv("RINGMAIL_BUILD_DIR");
	const char *source = getenv("RINGMAIL_SOURCE_DIR");
	cr_assert(build != NULL && source != NULL, "run through meson test");
	snprintf(certs_dir, sizeof(certs_dir), "%s/test-scratch-conn-tls-XXXXXX", build);
	cr_assert_not_null(mkdtemp(certs_dir));
	char cmd[3 * T_CONN_PATH_SIZE];
	snprintf(cmd, sizeof(cmd), "sh '%s/tests/lib/tls_certs.sh' '%s'", source, certs_dir);
	if (system(cmd) != 0)
		cr_skip_test("tls_certs.sh failed (openssl missing?)");
	cr_assert_eq(eng_tls_global_init(), 0);
	char ca[2 * T_CONN_PATH_SIZE], err[256] = "";
	snprintf(ca, sizeof(ca), "%s/ca.pem", certs_dir);
	cr_assert_eq(eng_tls_client_ctx_create(&client_ctx, ca, err, sizeof(err)), 0, "%s", err);
}

static void
t_tls_teardown(void)
{
	t_conn_fini();
	if (client_ctx != NULL)
		eng_tls_ctx_put(client_ctx);
	client_ctx = NULL;
	if (certs_dir[0] != '\0') {
		char cmd[2 * T_CONN_PATH_SIZE];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certs_dir);
		(void)system(cmd);
	}
}

static void
t_start_tls_sink(struct t_conn_peer *peer)
{
	static char cert[2 * T_CONN_PATH_SIZE], key[2 * T_CONN_PATH_SIZE];
	snprintf(cert, sizeof(cert), "%s/server.pem", certs_dir);
	snprintf(key, sizeof(key), "%s/server.key", certs_dir);
	const char *args[] = { "--tls-cert", cert, "--tls-key", key, NULL };
	t_conn_start_py_sink(peer, args);
}

static struct t_conn_run *
t_tls_run(const struct t_conn_peer *peer, enum smtp_client_tls_policy policy, bool verify,
	  const char *name, struct eng_tls_session_cache *cache)
{
	struct t_conn_run *run = t_conn_run_new();
	t_conn_config(&run->config, 2000, T_REPLY_MS);
	t_conn_addr(&run->addr, &run->addr_len, 1, peer->port);
	run->config.tls_policy = policy;
	run->config.tls_verify = verify;
	run->config.tls_name = name;
	run->config.tls_name_len = strlen(name);
	run->config.tls_ctx = client_ctx;
	run->config.tls_cache = cache;
	return run;
}

static void
t_assert_record(const struct t_conn_peer *peer, uint32_t index, const struct t_conn_message *m,
		const char *needle)
{
	char *line = malloc(T_RECORD_LINE_SIZE);
	uint8_t *body = malloc(T_RECORD_LINE_SIZE / 2);
	cr_assert(line != NULL && body != NULL);
	cr_assert(t_conn_record_line(peer->record, index, line, T_RECORD_LINE_SIZE),
		  "no record %u", index);
	cr_assert_not_null(strstr(line, needle), "record %u lacks %s", index, needle);
	size_t size = t_conn_record_body(line, body, T_RECORD_LINE_SIZE / 2);
	cr_assert_eq(size, m->raw_size, "body %zu bytes, sent %zu", size, m->raw_size);
	cr_assert_eq(memcmp(body, m->raw, m->raw_size), 0, "body differs");
	free(line);
	free(body);
}

Test(conn_tls, large_bodies_over_tls_verified_then_resumed, .init = t_tls_setup,
     .fini = t_tls_teardown, .timeout = 120)
{
	struct t_conn_peer peer;
	t_start_tls_sink(&peer);
	struct eng_tls_session_cache *cache = eng_tls_session_cache_create(8);
	cr_assert_not_null(cache);
	struct t_conn_run *run =
		t_tls_run(&peer, SMTP_CLIENT_TLS_REQUIRED, true, "localhost", cache);
	static const size_t sizes[] = { 10, 600000, 70000 };
	struct t_conn_message *m[ENG_ARRAY_COUNT(sizes)];
	uint8_t *raw = malloc(1 << 20);
	cr_assert_not_null(raw);
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++) {
		size_t raw_size = t_conn_raw_body(70 + i, sizes[i], raw, 1 << 20);
		m[i] = t_conn_message_new(NULL, 2, raw, raw_size);
		run->messages[run->message_count++] = m[i];
	}
	free(raw);
	t_conn_run_open(run);
	t_conn_run_until_closed(run, 4 * T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_MESSAGE_DONE), ENG_ARRAY_COUNT(sizes));
	/* Over TLS too the next message went out behind each dot. */
	cr_assert_eq(run->pipelined_count, ENG_ARRAY_COUNT(sizes) - 1);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 2);
	cr_assert_eq(t_conn_closed(run)->reason, ENG_CONN_CLOSE_QUIT, "reason %s",
		     eng_conn_close_reason_name(t_conn_closed(run)->reason));
	struct eng_tls_info info;
	cr_assert(eng_conn_tls_info(&run->conn, &info), "the session ran over TLS");
	cr_assert_str_eq(info.version, "TLSv1.3");
	cr_assert_neq(info.cipher[0], '\0');
	cr_assert(info.is_verified, "chain to ca.pem and the name localhost verified");
	cr_assert_not(info.is_resumed);
	/* Ciphertext: more bytes went out than the wire form of the bodies. */
	size_t wire_total = 0;
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++)
		wire_total += m[i]->wire_size;
	cr_assert_gt(eng_conn_stats(&run->conn)->sent_size, wire_total);
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++)
		t_assert_record(&peer, i, m[i], "\"tls\": true");
	t_conn_run_free(run);
	cr_assert_eq(eng_tls_session_cache_count(cache), 1, "the session was kept");

	/* A new connection to the same peer resumes it. */
	struct t_conn_run *again = t_tls_run(&peer, SMTP_CLIENT_TLS_REQUIRED, true, "localhost",
					     cache);
	again->messages[again->message_count++] = m[0];
	t_conn_run_open(again);
	t_conn_run_until_closed(again, 4 * T_CONN_WAIT_NS);
	cr_assert_eq(t_conn_count(again, ENG_CONN_EV_MESSAGE_DONE), 1);
	cr_assert(eng_conn_tls_info(&again->conn, &info));
	cr_assert(info.is_resumed, "the client says resumed");
	cr_assert(info.is_verified, "a verified session stays verified when resumed");
	t_assert_record(&peer, ENG_ARRAY_COUNT(sizes), m[0], "\"reused\": true");
	t_conn_run_free(again);
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(sizes); i++)
		t_conn_message_free(m[i]);
	eng_tls_session_cache_destroy(cache);
	t_conn_stop(&peer);
}

Test(conn_tls, required_without_starttls_closes_before_mail, .init = t_tls_setup,
     .fini = t_tls_teardown, .timeout = 60)
{
	struct t_conn_peer peer;
	t_conn_start_py_sink(&peer, NULL); /* no STARTTLS offered */
	struct t_conn_run *run = t_tls_run(&peer, SMTP_CLIENT_TLS_REQUIRED, false, "localhost",
					   NULL);
	uint8_t raw[512];
	size_t raw_size = t_conn_raw_body(1, 300, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 1, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_TLS_REQUIRED, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert_eq(closed->error, SMTP_CLIENT_ERROR_TLS_REQUIRED);
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 0, "never ready: no MAIL");
	struct eng_tls_info info;
	cr_assert_not(eng_conn_tls_info(&run->conn, &info));
	char line[256];
	cr_assert_not(t_conn_record_line(peer.record, 0, line, sizeof(line)), "nothing recorded");
	t_conn_run_free(run);
	t_conn_message_free(m);
	t_conn_stop(&peer);
}

Test(conn_tls, verify_with_the_wrong_name_fails_the_handshake, .init = t_tls_setup,
     .fini = t_tls_teardown, .timeout = 60)
{
	struct t_conn_peer peer;
	t_start_tls_sink(&peer);
	struct t_conn_run *run = t_tls_run(&peer, SMTP_CLIENT_TLS_REQUIRED, true,
					   "other.example", NULL);
	uint8_t raw[512];
	size_t raw_size = t_conn_raw_body(2, 300, raw, sizeof(raw));
	struct t_conn_message *m = t_conn_message_new(NULL, 1, raw, raw_size);
	run->messages[run->message_count++] = m;
	t_conn_run_open(run);
	t_conn_run_until_closed(run, T_CONN_WAIT_NS);
	const struct t_conn_event *closed = t_conn_closed(run);
	cr_assert_eq(closed->reason, ENG_CONN_CLOSE_TLS_FAILED, "reason %s",
		     eng_conn_close_reason_name(closed->reason));
	cr_assert_eq(t_conn_count(run, ENG_CONN_EV_READY), 0);
	cr_assert_neq(run->conn.tls_error[0], '\0', "the TLS error is kept for the log");
	char line[256];
	cr_assert_not(t_conn_record_line(peer.record, 0, line, sizeof(line)), "nothing recorded");
	t_conn_run_free(run);
	t_conn_message_free(m);
	t_conn_stop(&peer);
}
