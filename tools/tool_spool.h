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
 * The one exception is load (tool_cmd_load.c): it writes synthetic
 * messages into an offline spool through the real spool code, to pre-load
 * a spool for tests and the delivery benchmark. It never touches a message
 * that is already there (new records go to new segments).
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

/* load's options (tool_cmd_load.c); set only with the load command. */
struct tool_load_options {
	uint32_t shards;	   /* 1..TOOL_SHARDS_MAX, default 1 */
	uint64_t count;		   /* messages, default 1000 */
	uint32_t size;		   /* approximate wire body bytes, default 5120 */
	uint32_t domains;	   /* d0.test .. d{domains-1}.test, default 1 */
	double zipf;		   /* exponent s; 0: uniform (default) */
	uint32_t recipients;	   /* per message, all in one domain, default 1 */
	const char *sender;	   /* default loader@load.test */
	uint64_t seed;		   /* default 1 */
	uint64_t segment_size;	   /* message segments; 0: the spool default */
	bool any_set;		   /* some load option was given */
};

struct tool_options {
	const char *spool_dir;
	int32_t shard;	/* -1: every shard folder */
	bool json;
	const char *command;
	const char *arg; /* show: the queue id */
	struct tool_load_options load;
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
 * "deferred until TIME", delivered, bounced, expired, then ", N attempts"
 * once there was one (", attempts unknown" from a version-1 journal
 * record). time_ns is the next attempt for deferred, the event time for
 * final states; attempts as struct spool_outcome counts them. */
void tool_recipient_text(FILE *out, const struct spool_span *address, enum spool_rcpt_state state,
			 uint64_t time_ns, uint32_t attempts);
/* The same as a JSON object (inside an array): address, state, attempts
 * (null: unknown), and next_attempt with next_attempt_ns (deferred) or
 * time (final states). */
void tool_recipient_json(struct tool_json *json, const struct spool_span *address,
			 enum spool_rcpt_state state, uint64_t time_ns, uint32_t attempts);

/* The commands; each returns an enum tool_exit value. */
int tool_cmd_ls(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_show(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_stats(const struct tool_options *opt, const struct tool_shard_list *list);
int tool_cmd_verify(const struct tool_options *opt, const struct tool_shard_list *list);
/* load writes; list is unused (it may name no shard: the spool may not
 * exist yet). */
int tool_cmd_load(const struct tool_options *opt, const struct tool_shard_list *list);

/* Defaults of load's options (tool_cmd_load.c). */
void tool_load_options_defaults(struct tool_load_options *load);
/*
 * Parse one load option (getopt's long name and optarg) into load.
 * Returns false on a bad value, with one clear line in err.
 */
bool tool_load_option_parse(struct tool_load_options *load, const char *name, const char *value,
			    char *err, size_t err_size) __attribute__((warn_unused_result));

/*
 * The shard that owns a domain: FNV-1a (32-bit) of the domain, ASCII
 * lowercased, modulo shard_count. The same rule as the daemon's
 * eng_domain_owner (engine/eng_node.c), which tools do not link; a test
 * checks that both agree. domain is (ptr, len), not NUL-terminated.
 */
uint32_t tool_domain_owner(const char *domain, size_t len, uint32_t shard_count);

#endif /* TOOL_SPOOL_H */
