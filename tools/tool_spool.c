/*
 * tool_spool.c - shard discovery and read-only recovery for the spool
 * inspector (see tool_spool.h).
 */
#include "tool_spool.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/eng_common.h"
#include "tool_json.h"
#include "tool_text.h"

void
tool_error(const char *message)
{
	ENG_ASSERT(message != NULL);
	fprintf(stderr, "ringmail-spool: %s\n", message);
}

void
tool_recipient_text(FILE *out, const struct spool_span *address, enum spool_rcpt_state state,
		    uint64_t time_ns, uint32_t attempts)
{
	ENG_ASSERT(out != NULL && address != NULL);
	ENG_ASSERT((unsigned)state < SPOOL_RCPT_STATE_COUNT);
	putc('<', out);
	tool_print_escaped(out, address->data, address->size);
	fprintf(out, "> %s", spool_rcpt_state_name(state));
	if (state == SPOOL_RCPT_DEFERRED) {
		char when[TOOL_TIME_SIZE];
		tool_format_time(time_ns, when);
		fprintf(out, " until %s", when);
	}
	if (attempts == SPOOL_ATTEMPTS_UNKNOWN)
		fputs(", attempts unknown", out);
	else if (attempts > 0)
		fprintf(out, ", %" PRIu32 " attempt%s", attempts, attempts == 1 ? "" : "s");
}

void
tool_recipient_json(struct tool_json *json, const struct spool_span *address,
		    enum spool_rcpt_state state, uint64_t time_ns, uint32_t attempts)
{
	ENG_ASSERT(json != NULL && address != NULL);
	ENG_ASSERT((unsigned)state < SPOOL_RCPT_STATE_COUNT);
	char when[TOOL_TIME_SIZE];
	tool_format_time(time_ns, when);
	tool_json_object_begin(json, NULL);
	tool_json_bytes(json, "address", address->data, address->size);
	tool_json_string(json, "state", spool_rcpt_state_name(state));
	if (attempts == SPOOL_ATTEMPTS_UNKNOWN)
		tool_json_null(json, "attempts");
	else
		tool_json_uint(json, "attempts", attempts);
	if (state == SPOOL_RCPT_DEFERRED) {
		tool_json_string(json, "next_attempt", when);
		tool_json_uint(json, "next_attempt_ns", time_ns);
	} else if (state != SPOOL_RCPT_PENDING)
		tool_json_string(json, "time", when);
	tool_json_object_end(json);
}

/* A shard folder name: canonical decimal ("0", "17", never "017"), <= 255. */
static bool
tool_shard_name_parse(const char *name, uint16_t *shard)
{
	size_t len = strnlen(name, 4);
	if (len == 0 || len > 3 || (len > 1 && name[0] == '0'))
		return false;
	unsigned value = 0;
	for (size_t i = 0; i < len; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		value = value * 10u + (unsigned)(name[i] - '0');
	}
	if (value >= TOOL_SHARDS_MAX)
		return false;
	*shard = (uint16_t)value;
	return true;
}

static bool
tool_shard_dir_exists(const char *spool_dir, uint16_t shard)
{
	char path[PATH_MAX];
	struct stat st;
	spool_shard_path(spool_dir, shard, NULL, path, sizeof(path));
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int
tool_shard_compare(const void *a, const void *b)
{
	uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
	return (x > y) - (x < y);
}

/* Every shard folder of an open spool directory. */
static void
tool_shards_scan(DIR *dir, const char *spool_dir, struct tool_shard_list *list)
{
	struct dirent *ent;
	while ((ent = readdir(dir)) != NULL) {
		uint16_t shard;
		if (!tool_shard_name_parse(ent->d_name, &shard))
			continue;
		if (!tool_shard_dir_exists(spool_dir, shard))
			continue;
		ENG_ASSERT(list->count < TOOL_SHARDS_MAX); /* names are unique, 0..255 */
		list->shards[list->count++] = shard;
	}
	qsort(list->shards, list->count, sizeof(list->shards[0]), tool_shard_compare);
}

int
tool_shards_find(const struct tool_options *opt, struct tool_shard_list *list, char *err,
		 size_t err_size)
{
	ENG_ASSERT(opt != NULL && opt->spool_dir != NULL);
	ENG_ASSERT(list != NULL);
	list->count = 0;
	DIR *dir = opendir(opt->spool_dir);
	if (dir == NULL) {
		int ret = -errno;
		snprintf(err, err_size, "cannot open spool directory %s: %s", opt->spool_dir,
			 strerror(errno));
		return ret;
	}
	if (opt->shard >= 0) {
		ENG_ASSERT(opt->shard < (int32_t)TOOL_SHARDS_MAX);
		list->shards[list->count++] = (uint16_t)opt->shard;
		if (!tool_shard_dir_exists(opt->spool_dir, (uint16_t)opt->shard)) {
			snprintf(err, err_size, "no shard %d in spool directory %s",
				 (int)opt->shard, opt->spool_dir);
			closedir(dir);
			return -ENOENT;
		}
	} else {
		tool_shards_scan(dir, opt->spool_dir, list);
	}
	closedir(dir);
	ENG_ASSERT(list->count <= TOOL_SHARDS_MAX);
	return 0;
}

int
tool_shard_recover(const char *spool_dir, uint16_t shard, const struct spool_recover_sink *sink,
		   struct spool_recovery_stats *stats, char *err, size_t err_size)
{
	char msg_dir[PATH_MAX], journal_dir[PATH_MAX];
	ENG_ASSERT(spool_dir != NULL && sink != NULL);
	ENG_ASSERT(stats != NULL && err_size > 0);
	spool_shard_path(spool_dir, shard, "msg", msg_dir, sizeof(msg_dir));
	spool_shard_path(spool_dir, shard, "journal", journal_dir, sizeof(journal_dir));
	struct spool_recovery_stats local;
	memset(&local, 0, sizeof(local));
	uint64_t max_segment_id = 0;
	err[0] = '\0';
	/* quarantine_dir NULL: recovery copies nothing, the spool is untouched. */
	int ret = spool_recover_shard(msg_dir, journal_dir, NULL, shard, sink, &local,
				      &max_segment_id, err, err_size);
	stats->message_segments += local.message_segments;
	stats->journal_segments += local.journal_segments;
	stats->messages += local.messages;
	stats->outcomes += local.outcomes;
	stats->recipients_live += local.recipients_live;
	stats->recipients_final += local.recipients_final;
	stats->corrupt_spans += local.corrupt_spans;
	stats->holes += local.holes;
	stats->torn_tails += local.torn_tails;
	stats->duration_ns += local.duration_ns;
	if (ret < 0 && err[0] == '\0') /* e.g. -ENOMEM comes without a message */
		snprintf(err, err_size, "shard %u: %s", (unsigned)shard, strerror(-ret));
	return ret;
}
