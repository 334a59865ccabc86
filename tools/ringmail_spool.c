/*
 * ringmail_spool.c - ringmail-spool, the offline spool inspector.
 *
 *   ringmail-spool [--json] [-d SPOOL_DIR] [--shard N] COMMAND [ARG]
 *
 * Commands: ls, show QUEUE_ID, stats, verify (tool_spool.h, and the
 * tool_cmd_*.c files). These are read-only: they read the spool the way
 * recovery does and never write, copy or delete a file, so they are safe
 * to point at a production spool or at a copy taken after a crash.
 * load (tool_cmd_load.c) is the exception: it writes synthetic messages
 * into an offline spool, for tests and benchmarks.
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
	"       ringmail-spool [--json] [-d SPOOL_DIR] load [LOAD OPTIONS]\n"
	"\n"
	"Inspect a ringmail spool offline. Read-only (nothing is written or moved),\n"
	"except load.\n"
	"\n"
	"commands:\n"
	"  ls             one line per message: queue id, created (UTC), size,\n"
	"                 sender, then each recipient with its state and attempts\n"
	"  show QUEUE_ID  one message: envelope, then headers and body (un-dot-stuffed)\n"
	"  stats          records, bytes, segments, recipients by state, oldest\n"
	"                 message, damage found, scan time\n"
	"  verify         check every record, count journal format versions; exit 2\n"
	"                 and name each corrupt span\n"
	"  load           WRITE synthetic messages into a stopped daemon's spool\n"
	"                 through the real spool code (pre-load for benchmarks)\n"
	"\n"
	"options:\n"
	"  -d, --spool-dir DIR  spool directory (default: spool)\n"
	"  -s, --shard N        only shard N, 0-255 (default: every shard folder)\n"
	"  -j, --json           print one JSON object on stdout\n"
	"  -h, --help           print this text\n"
	"\n"
	"load options:\n"
	"  --shards N           spool shards, 1-256, as the daemon's shard count;\n"
	"                       a message goes to the shard owning its domain (1)\n"
	"  --count N            messages (1000)\n"
	"  --size BYTES         about this many bytes of message, wire form (5120)\n"
	"  --domains D          recipient domains d0.test .. d<D-1>.test (1)\n"
	"  --zipf S             Zipf(S) over the domains; 0 is uniform (0)\n"
	"  --recipients R       recipients per message, one domain, 1-1000 (1)\n"
	"  --sender ADDR        envelope sender (loader@load.test)\n"
	"  --seed N             random seed: same seed, same messages (1)\n"
	"  --segment-size BYTES message segment size (the spool's, 64 MiB)\n"
	"\n"
	"exit status: 0 ok, 1 error (missing spool, unknown queue id, I/O),\n"
	"2 verify found corruption, 64 bad usage\n";

struct tool_command {
	const char *name;
	int (*run)(const struct tool_options *opt, const struct tool_shard_list *list);
	bool takes_arg;
	bool writes; /* load: no existing shard needed, load options allowed */
};

static const struct tool_command tool_commands[] = {
	{ "ls", tool_cmd_ls, false, false },
	{ "show", tool_cmd_show, true, false },
	{ "stats", tool_cmd_stats, false, false },
	{ "verify", tool_cmd_verify, false, false },
	{ "load", tool_cmd_load, false, true },
};

/* getopt values of the load options: above every short option. */
#define TOOL_OPT_LOAD 256

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
		{ "shards", required_argument, NULL, TOOL_OPT_LOAD },
		{ "count", required_argument, NULL, TOOL_OPT_LOAD },
		{ "size", required_argument, NULL, TOOL_OPT_LOAD },
		{ "domains", required_argument, NULL, TOOL_OPT_LOAD },
		{ "zipf", required_argument, NULL, TOOL_OPT_LOAD },
		{ "recipients", required_argument, NULL, TOOL_OPT_LOAD },
		{ "sender", required_argument, NULL, TOOL_OPT_LOAD },
		{ "seed", required_argument, NULL, TOOL_OPT_LOAD },
		{ "segment-size", required_argument, NULL, TOOL_OPT_LOAD },
		{ NULL, 0, NULL, 0 },
	};
	char err[TOOL_ERR_SIZE];
	memset(opt, 0, sizeof(*opt));
	opt->spool_dir = "spool"; /* the daemon's default (spool_config_defaults) */
	opt->shard = -1;
	tool_load_options_defaults(&opt->load);
	int c, long_index = 0;
	while ((c = getopt_long(argc, argv, "jd:s:h", longopts, &long_index)) != -1) {
		switch (c) {
		case TOOL_OPT_LOAD:
			if (!tool_load_option_parse(&opt->load, longopts[long_index].name, optarg, err,
						    sizeof(err))) {
				tool_error(err);
				return tool_usage(stderr, TOOL_EXIT_USAGE);
			}
			break;
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
		/* Load options only with load; load writes every shard. */
		if (!cmd->writes && opt->load.any_set)
			return NULL;
		if (cmd->writes && opt->shard >= 0)
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
	if (!cmd->writes && tool_shards_find(&opt, &list, err, sizeof(err)) < 0) {
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
