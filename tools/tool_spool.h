/*
 * tool_spool.h - the offline spool inspector (ringmail-spool): options,
 * shard discovery and the four commands.
 *
 * The inspector is read-only. It reads a spool directory the way recovery
 * does (spool_recover_shard with no quarantine directory, or the segment
 * scanner), so what it reports is exactly what the daemon would recover:
 * recipient states come from the journal (latest outcome wins, a final
 * state is never undone), torn tails and holes are the unacknowledged
 * leftovers of a crash, and corrupt spans are damage. It copies, writes
 * and deletes nothing. Recovery fsyncs each file before trusting it (it
 * opens O_RDWR and falls back to O_RDONLY), which changes no byte.
 *
 * Run it against a stopped daemon, or accept that records appended while
 * it reads may or may not be seen (never half a record: each one is
 * checked in full).
 *
 * Layout: SPOOL_DIR/<shard, decimal>/{msg,journal,quarantine}/
 * (docs/spool-format.md 4.1). Shards are 0..255: a queue id holds the
 * shard in two hex digits (docs/spool-format.md 3).
 *
 * Exit statuses: TOOL_EXIT_OK, TOOL_EXIT_ERROR (missing spool, unknown
 * queue id, I/O error), TOOL_EXIT_CORRUPT (verify found corruption),
 * TOOL_EXIT_USAGE (sysexits.h EX_USAGE).
 */
#ifndef TOOL_SPOOL_H
#define TOOL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "spool/spool.h"
#include "spool/spool_recover.h"

enum tool_exit {
	TOOL_EXIT_OK = 0,
	TOOL_EXIT_ERROR = 1,
	TOOL_EXIT_CORRUPT = 2,
	TOOL_EXIT_USAGE = 64,
};

#define TOOL_SHARDS_MAX 256u
#define TOOL_ERR_SIZE 512u

struct tool_options {
	const char *spool_dir;
	int32_t shard;	/* -1: every shard folder */
	bool json;
	const char *command;
	const char *arg; /* show: the queue id */
};

/* Shard folders to read, ascending. */
struct tool_shard_list {
	uint16_t shards[TOOL_SHARDS_MAX];
	uint32_t count;
};

/*
 * Find the shards to read: opt->shard alone (it must exist) or every
 * numeric shard folder of opt->spool_dir. Returns 0, or -errno with one
 * clear line in err (missing or unreadable spool directory, no such shard).
 */
int tool_shards_find(const struct tool_options *opt, struct tool_shard_list *list, char *err,
		     size_t err_size) __attribute__((warn_unused_result));

/*
 * Run recovery over one shard, read-only (no quarantine copies), feeding
 * sink. Returns 0 or -errno with a message in err; stats are added to.
 */
int tool_shard_recover(const char *spool_dir, uint16_t shard, const struct spool_recover_sink *sink,
		       struct spool_recovery_stats *stats, char *err, size_t err_size)
	__attribute__((warn_unused_result));

/* Print "ringmail-spool: <message>" on stderr. */
void tool_error(const char *message);

struct tool_json;

/* A recipient for humans: "<address> STATE", STATE one of pending,
 * "deferred until TIME", delivered, bounced, expired. time_ns is the next
 * attempt for deferred, the event time for final states. */
void tool_recipient_text(FILE *out, const struct spool_span *address, enum spool_rcpt_state state,
			 uint64_t time_ns);
/* The same as a JSON object (inside an array): address, state, and
 * next_attempt (deferred) or time (final states). */
void tool_recipient_json(struct tool_json *json, const struct spool_span *address,
			 enum spool_rcpt_state state, uint64_t time_ns);

/* The commands; each returns an enum tool_exit value. */
int tool_cmd_ls(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_show(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_stats(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_verify(const struct tool_options *opt, const struct tool_shard_list *list);

#endif /* TOOL_SPOOL_H */
