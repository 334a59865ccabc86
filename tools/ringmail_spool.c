/*
 * ringmail_spool.c - ringmail-spool, the offline spool inspector.
 *
 *   ringmail-spool [--json] [-d SPOOL_DIR] [--shard N] COMMAND [ARG]
 *
 * Commands: ls, show QUEUE_ID, stats, verify (tool_spool.h, and the
 * tool_cmd_*.c files). The tool is read-only: it reads the spool the way
 * recovery does and never writes, copies or deletes a file, so it is safe
 * to point at a production spool or at a copy taken after a crash.
 *
 * This file holds only argument parsing and dispatch. Errors: a missing
 * spool directory, an unknown queue id or an I/O error print one line on
 * stderr and exit 1; bad usage prints the usage text and exits 64
 * (sysexits.h EX_USAGE); verify exits 2 on corruption.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "tool_spool.h"

#define TOOL_PARSE_CONTINUE (-1)

static const char tool_usage_text[] =
	"usage: ringmail-spool [--json] [-d SPOOL_DIR] [--shard N] COMMAND [ARG]\n"
	"\n"
	"Inspect a ringmail spool offline. Read-only: nothing is written or moved.\n"
	"\n"
	"commands:\n"
	"  ls             one line per message: queue id, created (UTC), size,\n"
	"                 sender, then each recipient with its state\n"
	"  show QUEUE_ID  one message: envelope, then headers and body (un-dot-stuffed)\n"
	"  stats          records, bytes, segments, recipients by state, oldest\n"
	"                 message, damage found, scan time\n"
	"  verify         check every record; exit 2 and name each corrupt span\n"
	"\n"
	"options:\n"
	"  -d, --spool-dir DIR  spool directory (default: spool)\n"
	"  -s, --shard N        only shard N, 0-255 (default: every shard folder)\n"
	"  -j, --json           print one JSON object on stdout\n"
	"  -h, --help           print this text\n"
	"\n"
	"exit status: 0 ok, 1 error (missing spool, unknown queue id, I/O),\n"
	"2 verify found corruption, 64 bad usage\n";

struct tool_command {
	const char *name;
	int (*run)(const struct tool_options *opt, const struct tool_shard_list *list);
	bool takes_arg;
};

static const struct tool_command tool_commands[] = {
	{ "ls", tool_cmd_ls, false },
	{ "show", tool_cmd_show, true },
	{ "stats", tool_cmd_stats, false },
	{ "verify", tool_cmd_verify, false },
};

static int
tool_usage(FILE *out, int status)
{
	fputs(tool_usage_text, out);
	return status;
}

/* "0".."255"; false on anything else. */
static bool
tool_parse_shard(const char *text, int32_t *shard)
{
	char *end = NULL;
	if (text[0] < '0' || text[0] > '9')
		return false;
	unsigned long value = strtoul(text, &end, 10);
	if (*end != '\0' || value >= TOOL_SHARDS_MAX)
		return false;
	*shard = (int32_t)value;
	return true;
}

/* Returns TOOL_PARSE_CONTINUE, or the exit status (help, bad usage). */
static int
tool_parse_options(int argc, char **argv, struct tool_options *opt)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "spool-dir", required_argument, NULL, 'd' },
		{ "shard", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	memset(opt, 0, sizeof(*opt));
	opt->spool_dir = "spool"; /* the daemon's default (spool_config_defaults) */
	opt->shard = -1;
	int c;
	while ((c = getopt_long(argc, argv, "jd:s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': opt->json = true; break;
		case 'd': opt->spool_dir = optarg; break;
		case 's':
			if (!tool_parse_shard(optarg, &opt->shard)) {
				fprintf(stderr, "ringmail-spool: bad shard '%s' (0-255)\n", optarg);
				return tool_usage(stderr, TOOL_EXIT_USAGE);
			}
			break;
		case 'h': return tool_usage(stdout, TOOL_EXIT_OK);
		default: return tool_usage(stderr, TOOL_EXIT_USAGE);
		}
	}
	int rest = argc - optind;
	if (rest < 1 || rest > 2)
		return tool_usage(stderr, TOOL_EXIT_USAGE);
	opt->command = argv[optind];
	opt->arg = rest == 2 ? argv[optind + 1] : NULL;
	ENG_ASSERT(opt->command != NULL);
	return TOOL_PARSE_CONTINUE;
}

static const struct tool_command *
tool_command_find(const struct tool_options *opt)
{
	for (size_t i = 0; i < ENG_ARRAY_COUNT(tool_commands); i++) {
		const struct tool_command *cmd = &tool_commands[i];
		if (strcmp(cmd->name, opt->command) != 0)
			continue;
		if (cmd->takes_arg != (opt->arg != NULL))
			return NULL;
		return cmd;
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	struct tool_options opt;
	int status = tool_parse_options(argc, argv, &opt);
	if (status != TOOL_PARSE_CONTINUE)
		return status;
	const struct tool_command *cmd = tool_command_find(&opt);
	if (cmd == NULL) {
		fprintf(stderr, "ringmail-spool: bad command line for '%s'\n", opt.command);
		return tool_usage(stderr, TOOL_EXIT_USAGE);
	}
	static struct tool_shard_list list;
	char err[TOOL_ERR_SIZE];
	if (tool_shards_find(&opt, &list, err, sizeof(err)) < 0) {
		tool_error(err);
		return TOOL_EXIT_ERROR;
	}
	status = cmd->run(&opt, &list);
	ENG_ASSERT(status == TOOL_EXIT_OK || status == TOOL_EXIT_ERROR ||
		   status == TOOL_EXIT_CORRUPT || status == TOOL_EXIT_USAGE);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		tool_error("cannot write the output");
		return TOOL_EXIT_ERROR;
	}
	return status;
}
