/*
 * ringmail_sendmail.c - ringmail-sendmail, the sendmail-compatible submit
 * command (docs/sendmail.md).
 *
 *   ringmail-sendmail [-t] [-i] [-f SENDER] [-F NAME] [--server HOST:PORT]
 *                     [--timeout SECONDS] [-v] [RECIPIENT...] < message
 *
 * Reads the message on stdin, prepares it (tool_mail.h: CRLF, dot-stuffing,
 * Bcc removed, From/Date/Message-ID added when missing) and submits it over
 * SMTP to the local listener (tool_submit.h; --server, else the environment
 * variable RINGMAIL_SUBMIT, else 127.0.0.1:2525). Exit 0 only when the
 * server answered 250 to the final dot; otherwise one line on stderr (the
 * server's reply when there is one) and a sysexits.h code: 64 usage,
 * 65 message refused, 67 recipient refused, 69 service refused,
 * 74 reading stdin, 75 temporary (4xx, refused connection, timeout),
 * 76 malformed reply.
 *
 * Options other programs pass to sendmail and that mean nothing here
 * (-oem, -odb, -oi's relatives, -B, -N, -R, -V, -O, -h, -C, -L, -U, -m, -n,
 * -bm, ...) are accepted and ignored, as Postfix's sendmail does.
 *
 * This file holds option parsing, reading stdin and the header values to
 * add; everything protocol-related is in tool_submit.c.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "tool_mail.h"
#include "tool_submit.h"

#define TOOL_SENDMAIL_NAME "ringmail-sendmail"
/* Largest message read from stdin. */
#define TOOL_SENDMAIL_INPUT_MAX (256u * 1024u * 1024u)

struct tool_sendmail_options {
	bool extract_recipients; /* -t */
	bool ignore_dots;	 /* -i, -oi */
	bool verbose;		 /* -v */
	const char *sender;	 /* -f, -r */
	const char *full_name;	 /* -F */
	const char *server;	 /* --server */
	int timeout_ms;		 /* --timeout */
	struct tool_addr_list rcpts;
};

static const char tool_sendmail_usage_text[] =
	"usage: ringmail-sendmail [-t] [-i] [-f SENDER] [-F NAME] [--server HOST:PORT]\n"
	"                         [--timeout SECONDS] [-v] [RECIPIENT...] < message\n"
	"\n"
	"Submit the message on stdin to the ringmail listener.\n"
	"  -t                 also take recipients from To, Cc and Bcc (Bcc is removed)\n"
	"  -i, -oi            a line with a single '.' does not end the message\n"
	"  -f SENDER          envelope sender (default: login@hostname; '<>' for none)\n"
	"  -F NAME            full name for an added From: header\n"
	"  --server HOST:PORT listener (default: $RINGMAIL_SUBMIT, else 127.0.0.1:2525)\n"
	"  --timeout SECONDS  connect and per-reply timeout (default 120)\n"
	"  -v                 print the SMTP dialogue on stderr\n"
	"Other sendmail options (-oem, -odb, -B, -N, -R, -V, -O, ...) are ignored.\n";

static int
tool_sendmail_usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "%s: %s\n", TOOL_SENDMAIL_NAME, why);
	fputs(tool_sendmail_usage_text, stderr);
	return EX_USAGE;
}

/* "-f <a@b>" and "-f a@b" are the same sender; "<>" is the null sender. */
static const char *
tool_sendmail_strip_brackets(const char *address, char *out, size_t out_size)
{
	size_t len = strlen(address);
	if (len >= 2u && address[0] == '<' && address[len - 1u] == '>' && len - 2u < out_size) {
		memcpy(out, address + 1, len - 2u);
		out[len - 2u] = '\0';
		return out;
	}
	return address;
}

static int
tool_sendmail_add_rcpt(struct tool_sendmail_options *options, const char *arg)
{
	char stripped[TOOL_MAIL_ADDRESS_MAX + 2u];
	const char *address = tool_sendmail_strip_brackets(arg, stripped, sizeof(stripped));
	enum tool_mail_result result = tool_addr_list_add(&options->rcpts, address, strlen(address));
	if (result == TOOL_MAIL_OK)
		return 0;
	fprintf(stderr, "%s: bad recipient '%s'%s\n", TOOL_SENDMAIL_NAME, arg,
		result == TOOL_MAIL_TOO_MANY_RCPTS ? " (too many recipients)" : "");
	return EX_USAGE;
}

/* The argument of an option letter: the rest of this argv word, else the
 * next word. NULL when there is none. */
static const char *
tool_sendmail_option_arg(int argc, char **argv, int *index, const char *rest)
{
	if (rest[0] != '\0')
		return rest;
	if (*index + 1 >= argc)
		return NULL;
	*index += 1;
	return argv[*index];
}

/* Apply option letter with its argument (NULL for flags). */
static int
tool_sendmail_letter(struct tool_sendmail_options *options, char letter, const char *arg)
{
	switch (letter) {
	case 't':
		options->extract_recipients = true;
		return 0;
	case 'i':
		options->ignore_dots = true;
		return 0;
	case 'v':
		options->verbose = true;
		return 0;
	case 'f':
	case 'r':
		options->sender = arg;
		return 0;
	case 'F':
		options->full_name = arg;
		return 0;
	case 'o':
		if (arg[0] == 'i' && arg[1] == '\0')
			options->ignore_dots = true;
		return 0;
	case 'b':
		if (strcmp(arg, "m") == 0)
			return 0;
		fprintf(stderr, "%s: -b%s is not supported (only -bm)\n", TOOL_SENDMAIL_NAME, arg);
		return EX_USAGE;
	case 'q':
		fprintf(stderr, "%s: -q is not supported: ringmail runs its queue itself\n",
			TOOL_SENDMAIL_NAME);
		return EX_USAGE;
	default: /* accepted and ignored */
		return 0;
	}
}

/* One argv word starting with '-': a cluster of flags, maybe ending with
 * a letter that takes an argument. */
static int
tool_sendmail_short_options(struct tool_sendmail_options *options, int argc, char **argv,
			    int *index)
{
	static const char flags[] = "GIUcimntvx";
	static const char with_arg[] = "ABCFLNORVXbefhopqr";
	const char *word = argv[*index];
	for (size_t offset = 1; word[offset] != '\0'; offset++) {
		char letter = word[offset];
		if (strchr(flags, letter) != NULL) {
			int rc = tool_sendmail_letter(options, letter, NULL);
			if (rc != 0)
				return rc;
			continue;
		}
		if (strchr(with_arg, letter) == NULL) {
			char why[64];
			snprintf(why, sizeof(why), "unknown option -%c", letter);
			return tool_sendmail_usage(why);
		}
		const char *rest = word + offset + 1u;
		if (letter == 'q' && rest[0] == '\0')
			return tool_sendmail_letter(options, letter, "");
		const char *arg = tool_sendmail_option_arg(argc, argv, index, rest);
		if (arg == NULL) {
			char why[64];
			snprintf(why, sizeof(why), "option -%c needs an argument", letter);
			return tool_sendmail_usage(why);
		}
		return tool_sendmail_letter(options, letter, arg);
	}
	return 0;
}

static int
tool_sendmail_long_option(struct tool_sendmail_options *options, int argc, char **argv,
			  int *index)
{
	const char *word = argv[*index];
	if (strcmp(word, "--help") == 0) {
		fputs(tool_sendmail_usage_text, stdout);
		exit(0);
	}
	bool is_server = strncmp(word, "--server", 8) == 0 && (word[8] == '\0' || word[8] == '=');
	bool is_timeout =
		strncmp(word, "--timeout", 9) == 0 && (word[9] == '\0' || word[9] == '=');
	if (!is_server && !is_timeout) {
		char why[128];
		snprintf(why, sizeof(why), "unknown option %.64s", word);
		return tool_sendmail_usage(why);
	}
	const char *equals = strchr(word, '=');
	const char *arg = equals != NULL ? equals + 1 : tool_sendmail_option_arg(argc, argv, index, "");
	if (arg == NULL || arg[0] == '\0')
		return tool_sendmail_usage("--server and --timeout need a value");
	if (is_server) {
		options->server = arg;
		return 0;
	}
	char *end = NULL;
	long seconds = strtol(arg, &end, 10);
	if (*end != '\0' || seconds < 1 || seconds > 86400)
		return tool_sendmail_usage("--timeout wants seconds, 1 to 86400");
	options->timeout_ms = (int)seconds * 1000;
	return 0;
}

static int
tool_sendmail_parse_args(struct tool_sendmail_options *options, int argc, char **argv)
{
	bool options_done = false;
	for (int index = 1; index < argc; index++) {
		const char *word = argv[index];
		int rc = 0;
		if (options_done || word[0] != '-' || word[1] == '\0')
			rc = tool_sendmail_add_rcpt(options, word);
		else if (strcmp(word, "--") == 0)
			options_done = true;
		else if (word[1] == '-')
			rc = tool_sendmail_long_option(options, argc, argv, &index);
		else
			rc = tool_sendmail_short_options(options, argc, argv, &index);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Read the message from stdin into input: to EOF, or (without -i) to a
 * line holding a single '.'. Returns 0 or an exit code. */
static int
tool_sendmail_read_input(const struct tool_sendmail_options *options, struct tool_buf *input)
{
	size_t scan_offset = 0;
	uint8_t chunk[65536];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "%s: reading the message: %s\n", TOOL_SENDMAIL_NAME,
				strerror(errno));
			return EX_IOERR;
		}
		if (n == 0)
			return 0;
		if ((size_t)n > TOOL_SENDMAIL_INPUT_MAX - input->len) {
			fprintf(stderr, "%s: message larger than %u bytes\n", TOOL_SENDMAIL_NAME,
				TOOL_SENDMAIL_INPUT_MAX);
			return EX_DATAERR;
		}
		if (tool_buf_append(input, chunk, (size_t)n) != 0) {
			fprintf(stderr, "%s: out of memory\n", TOOL_SENDMAIL_NAME);
			return EX_OSERR;
		}
		size_t end = 0;
		if (!options->ignore_dots &&
		    tool_mail_find_dot_line(input->data, input->len, &scan_offset, &end)) {
			input->len = end;
			return 0;
		}
	}
}

/* Login name: $LOGNAME/$USER as sendmail does not trust them; the
 * password entry of the real uid, else "uid<N>". */
static void
tool_sendmail_login(char *out, size_t out_size)
{
	const struct passwd *pw = getpwuid(getuid());
	if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0')
		snprintf(out, out_size, "%s", pw->pw_name);
	else
		snprintf(out, out_size, "uid%u", (unsigned)getuid());
}

struct tool_sendmail_values {
	char hostname[256];
	char sender[TOOL_MAIL_ADDRESS_MAX + 2u];
	char from[512];
	char date[64];
	char message_id[384];
};

static void
tool_sendmail_values(const struct tool_sendmail_options *options,
		     struct tool_sendmail_values *values)
{
	if (gethostname(values->hostname, sizeof(values->hostname) - 1u) != 0 ||
	    values->hostname[0] == '\0')
		snprintf(values->hostname, sizeof(values->hostname), "localhost");
	values->hostname[sizeof(values->hostname) - 1u] = '\0';
	char login[128];
	tool_sendmail_login(login, sizeof(login));
	if (options->sender != NULL) {
		const char *stripped = tool_sendmail_strip_brackets(
			options->sender, values->sender, sizeof(values->sender));
		if (stripped != values->sender)
			snprintf(values->sender, sizeof(values->sender), "%s", stripped);
	} else {
		snprintf(values->sender, sizeof(values->sender), "%s@%s", login, values->hostname);
	}
	const char *from_address = values->sender[0] != '\0' ? values->sender : login;
	const char *name = options->full_name;
	bool name_is_safe = name != NULL && name[0] != '\0' && strlen(name) < 200u &&
			    strpbrk(name, "\"\\\r\n") == NULL;
	if (name_is_safe)
		snprintf(values->from, sizeof(values->from), "\"%s\" <%s>", name, from_address);
	else
		snprintf(values->from, sizeof(values->from), "%s", from_address);
	time_t now = time(NULL);
	struct tm local;
	localtime_r(&now, &local);
	strftime(values->date, sizeof(values->date), "%a, %d %b %Y %H:%M:%S %z", &local);
	uint64_t random_bits = 0;
	if (getrandom(&random_bits, sizeof(random_bits), GRND_NONBLOCK) != (ssize_t)sizeof(random_bits))
		random_bits = (uint64_t)now ^ ((uint64_t)getpid() << 32);
	snprintf(values->message_id, sizeof(values->message_id), "<%lld.%d.%016llx@%s>",
		 (long long)now, (int)getpid(), (unsigned long long)random_bits, values->hostname);
}

static int
tool_sendmail_mail_error(enum tool_mail_result result, const struct tool_mail *mail)
{
	switch (result) {
	case TOOL_MAIL_OK:
		return 0;
	case TOOL_MAIL_NO_MEMORY:
		fprintf(stderr, "%s: out of memory\n", TOOL_SENDMAIL_NAME);
		return EX_OSERR;
	case TOOL_MAIL_TOO_MANY_RCPTS:
		fprintf(stderr, "%s: more than %u recipients\n", TOOL_SENDMAIL_NAME,
			TOOL_MAIL_RCPTS_MAX);
		return EX_DATAERR;
	case TOOL_MAIL_BAD_ADDRESS:
		fprintf(stderr, "%s: bad address in To/Cc/Bcc: '%s'\n", TOOL_SENDMAIL_NAME,
			mail->bad_address);
		return EX_DATAERR;
	case TOOL_MAIL_FIELD_TOO_LONG:
		fprintf(stderr, "%s: a To/Cc/Bcc header is longer than %u bytes\n",
			TOOL_SENDMAIL_NAME, TOOL_MAIL_FIELD_MAX);
		return EX_DATAERR;
	}
	ENG_PANIC("unknown tool_mail_result");
}

/* Check what the command line gave; fill values. 0 or an exit code. */
static int
tool_sendmail_check(const struct tool_sendmail_options *options,
		    struct tool_sendmail_values *values)
{
	if (options->sender != NULL && strlen(options->sender) > TOOL_MAIL_ADDRESS_MAX + 2u)
		return tool_sendmail_usage("sender address too long");
	tool_sendmail_values(options, values);
	size_t sender_len = strlen(values->sender);
	if (sender_len > 0 && !tool_mail_address_is_valid(values->sender, sender_len))
		return tool_sendmail_usage("bad sender address");
	for (size_t index = 0; values->hostname[index] != '\0'; index++) {
		unsigned char c = (unsigned char)values->hostname[index];
		if (c <= 0x20u || c >= 0x7fu)
			snprintf(values->hostname, sizeof(values->hostname), "localhost");
	}
	if (!options->extract_recipients && options->rcpts.count == 0)
		return tool_sendmail_usage("no recipients (give addresses or -t)");
	return 0;
}

static int
tool_sendmail_run(struct tool_sendmail_options *options, struct tool_sendmail_values *values,
		  struct tool_mail *mail)
{
	struct tool_buf input = { 0 };
	int rc = tool_sendmail_read_input(options, &input);
	struct tool_mail_input mail_input = {
		.extract_recipients = options->extract_recipients,
		.from_value = values->from,
		.date_value = values->date,
		.message_id_value = values->message_id,
	};
	if (rc == 0)
		rc = tool_sendmail_mail_error(
			tool_mail_prepare(input.data, input.len, &mail_input, mail), mail);
	tool_buf_free(&input);
	for (size_t index = 0; rc == 0 && index < mail->rcpts.count; index++) {
		const char *rcpt = mail->rcpts.items[index];
		rc = tool_sendmail_mail_error(tool_addr_list_add(&options->rcpts, rcpt, strlen(rcpt)),
					      mail);
	}
	if (rc == 0 && options->rcpts.count == 0)
		rc = tool_sendmail_usage("no recipients in the arguments or in To/Cc/Bcc (-t)");
	if (rc != 0)
		return rc;
	struct tool_submit_request request = {
		.server = options->server,
		.timeout_ms = options->timeout_ms,
		.helo_name = values->hostname,
		.sender = values->sender,
		.rcpts = options->rcpts.items,
		.rcpt_count = options->rcpts.count,
		.wire = mail->wire.data,
		.wire_len = mail->wire.len,
		.has_8bit = mail->has_8bit,
		.verbose = options->verbose,
	};
	struct tool_submit_result result;
	rc = tool_submit(&request, &result);
	if (rc != 0)
		fprintf(stderr, "%s: %s\n", TOOL_SENDMAIL_NAME, result.message);
	else if (options->verbose)
		fprintf(stderr, "%s: accepted: %s\n", TOOL_SENDMAIL_NAME, result.accepted_reply);
	return rc;
}

int
main(int argc, char **argv)
{
	struct tool_sendmail_options options = { .timeout_ms = 120 * 1000 };
	int rc = tool_sendmail_parse_args(&options, argc, argv);
	if (options.server == NULL) {
		const char *env = getenv("RINGMAIL_SUBMIT");
		options.server = env != NULL && env[0] != '\0' ? env : TOOL_SUBMIT_DEFAULT_SERVER;
	}
	struct tool_sendmail_values values;
	memset(&values, 0, sizeof(values));
	if (rc == 0)
		rc = tool_sendmail_check(&options, &values);
	struct tool_mail mail;
	tool_mail_init(&mail);
	if (rc == 0)
		rc = tool_sendmail_run(&options, &values, &mail);
	tool_mail_deinit(&mail);
	tool_addr_list_free(&options.rcpts);
	return rc;
}
