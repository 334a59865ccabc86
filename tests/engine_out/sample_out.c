/*
 * sample_out.c - prints sample delivery log lines and DSNs for
 * check_out.py, which validates them with Python's json and email
 * packages (an implementation independent of ours).
 *
 *   sample_out log        one JSON line per sample record
 *   sample_out dsn N      DSN sample N (0, 1 or 2) in wire form
 *   sample_out dsn-count  the recipient count of each DSN sample, one line
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_dsn.h"
#include "engine/eng_log.h"

#define S(x) x, sizeof(x) - 1

static const uint64_t t0 = 1714564800123456789ull; /* 2024-05-01T12:00:00.123Z */

static int
print_logs(void)
{
	static const struct eng_log_tls tls = { .used = true, .verified = false,
						.version = S("TLSv1.3"),
						.cipher = S("TLS_AES_256_GCM_SHA384") };
	struct eng_log_record base = {
		.time_ns = t0, .queue_id = S("0100000000000000070000a000"),
		.sender = S("news@example.org"), .recipient = S("bob@example.com"),
		.domain = S("example.com"), .mx_host = S("mx1.example.com"),
		.mx_ip = S("192.0.2.25"), .attempt = 1, .queued_ms = 12, .connect_ms = 3,
		.transaction_ms = 40, .tls = &tls,
	};
	struct eng_log_record recs[8];
	for (size_t i = 0; i < 8; i++)
		recs[i] = base;
	recs[0].event = ENG_LOG_RECEPTION;
	recs[0].mx_host = recs[0].mx_ip = NULL;
	recs[0].attempt = 0;
	recs[0].connect_ms = recs[0].transaction_ms = ENG_LOG_MS_NONE;
	recs[0].tls = NULL;
	recs[1].event = ENG_LOG_DELIVERY;
	recs[1].code = 250;
	recs[1].enhanced = (struct eng_enhanced){ 2, 0, 0 };
	recs[1].text = "OK id=1s2x";
	recs[1].text_len = 10;
	recs[2].event = ENG_LOG_TRANSIENT_FAILURE;
	recs[2].code = 451;
	recs[2].enhanced = (struct eng_enhanced){ 4, 7, 1 };
	recs[2].text = "Greylisted,\r\n see \"http://x/\" \\ \x01\x7f";
	recs[2].text_len = strlen(recs[2].text);
	recs[2].category = ENG_BOUNCE_TRANSIENT;
	recs[3].event = ENG_LOG_BOUNCE;
	recs[3].code = 550;
	recs[3].enhanced = (struct eng_enhanced){ 5, 1, 1 };
	recs[3].text = "The email account that you tried to reach does not exist "
		       "\xff\xfe caf\xc3\xa9";
	recs[3].text_len = strlen(recs[3].text);
	recs[3].category = ENG_BOUNCE_BAD_MAILBOX;
	recs[4].event = ENG_LOG_EXPIRATION;
	recs[4].attempt = 17;
	recs[4].category = ENG_BOUNCE_MESSAGE_EXPIRED;
	recs[4].sender = "";
	recs[4].sender_len = 0;
	recs[5] = recs[3];
	static const char nul_text[] = "nul\0inside\xed\xa0\x80 surrogate";
	recs[5].text = nul_text;
	recs[5].text_len = sizeof(nul_text) - 1;
	recs[6] = recs[2];
	static char long_text[3000];
	for (size_t i = 0; i < sizeof(long_text); i++)
		long_text[i] = (char)(i % 251 + 1);
	recs[6].text = long_text;
	recs[6].text_len = sizeof(long_text);
	recs[7] = recs[1];
	recs[7].tls = &(struct eng_log_tls){ .used = false };
	for (size_t i = 0; i < 8; i++) {
		static char line[ENG_LOG_LINE_SIZE_MAX];
		size_t n = eng_log_format(&recs[i], line, sizeof(line));
		if (n > sizeof(line))
			return 1;
		fwrite(line, 1, n, stdout);
	}
	return 0;
}

/* Original message in wire form: a stuffed header line and a body. */
static const char original[] =
	"From: News <news@example.org>\r\n"
	"To: bob@example.com\r\n"
	"Subject: =?utf-8?q?Caf=C3=A9?= weekly\r\n"
	"..Dotted-Header: starts with a dot\r\n"
	"Message-ID: <abc@example.org>\r\n"
	"\r\n"
	"Hello\r\n"
	"..\r\n"
	".\r\n";

static int
print_dsn(int which)
{
	static const char injected[] = "Mailbox unavailable\r\nBcc: victim@example.net\r\n\r\n"
				       "--boundary\r\n.\r\n";
	struct eng_dsn_rcpt rcpts[3] = {
		{ .addr = S("bob@example.com"), .reply_code = 550,
		  .reply_enhanced = { 5, 1, 1 },
		  .reply_text = S("The email account that you tried to reach does not exist. "
				  "Please try double-checking the recipient's email address "
				  "for typos or unnecessary spaces."),
		  .remote_mta = S("mx1.example.com"), .last_attempt_ns = t0 },
		{ .addr = S("carol@example.net"), .orcpt = S("Carol@Example.net"),
		  .is_expired = true, .reply_code = 451, .reply_enhanced = { 4, 7, 1 },
		  .reply_text = S("Greylisted"), .remote_mta = S("mx.example.net"),
		  .last_attempt_ns = t0 },
		{ .addr = S("evil@example.com\r\nBcc: x@example.net"), .reply_code = 550,
		  .reply_text = injected, .reply_text_len = sizeof(injected) - 1,
		  .remote_mta = S("mx.example.com\r\nX-Evil: 1") },
	};
	struct eng_dsn_message msg = {
		.hostname = S("mail.ringmail.test"), .sender = S("news@example.org"),
		.queue_id = S("0100000000000000070000a000"), .envid = S("env-42"),
		.arrival_ns = t0 - 86400000000000ull, .now_ns = t0,
		.body = (const uint8_t *)original, .body_len = sizeof(original) - 1,
		.rcpts = rcpts, .rcpt_count = 3,
	};
	if (which == 1) {
		msg.rcpt_count = 1;
		msg.rcpts = &rcpts[1];
		msg.envid = NULL;
	} else if (which == 2) {
		msg.rcpts = &rcpts[2];
		msg.rcpt_count = 1;
	}
	static uint8_t out[1 << 20];
	size_t len = 0;
	if (eng_dsn_build(&msg, out, sizeof(out), &len) != ENG_DSN_OK)
		return 1;
	fwrite(out, 1, len, stdout);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "log") == 0)
		return print_logs();
	if (argc == 2 && strcmp(argv[1], "dsn-count") == 0) {
		printf("3 1 1\n"); /* recipients of samples 0, 1, 2 */
		return 0;
	}
	if (argc == 3 && strcmp(argv[1], "dsn") == 0)
		return print_dsn(atoi(argv[2]));
	fprintf(stderr, "usage: sample_out log | dsn N | dsn-count\n");
	return 2;
}
