/*
 * tool_cmd_stats.c - `ringmail-spool stats`: summary of a spool.
 *
 * Counts come from one read-only recovery pass per shard:
 * - records: valid MESSAGE and OUTCOME records (PAD filler not counted);
 * - bytes: stored message bodies (wire form), valid record bytes
 *   (message records plus 72-byte outcome records), and the size of the
 *   segment files (pre-allocated, so mostly zeros on a quiet spool);
 * - segments: message and journal segment files;
 * - recipients by state, as recovery sees them;
 * - the oldest queued message: the oldest one that still has a recipient
 *   to deliver (pending or deferred); messages whose recipients are all
 *   final only wait for their segment to be reclaimed;
 * - damage: corrupt spans, holes, torn tails (`verify` names them);
 * - the time the recovery scan took, which is roughly what the daemon's
 *   start-up will spend on this spool.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/eng_common.h"
#include "tool_json.h"
#include "tool_spool.h"
#include "tool_text.h"

struct tool_stats {
	uint64_t body_bytes;
	uint64_t message_record_bytes;
	uint64_t segment_file_bytes;
	uint64_t recipients;
	uint64_t by_state[SPOOL_RCPT_STATE_COUNT];
	bool message_is_live; /* the message being walked has a live recipient */
	bool has_oldest;
	uint64_t oldest_created_ns;
	struct spool_location oldest;
};

static void
tool_stats_rcpt(void *ctx, const struct spool_recovered *r)
{
	struct tool_stats *st = ctx;
	ENG_ASSERT(r->rcpt_index < r->msg->rcpt_count);
	ENG_ASSERT((unsigned)r->state < SPOOL_RCPT_STATE_COUNT);
	if (r->rcpt_index == 0) {
		st->body_bytes += r->msg->body.size;
		st->message_record_bytes += spool_message_record_size(r->msg);
		st->message_is_live = false;
	}
	st->recipients++;
	st->by_state[r->state]++;
	if (!spool_rcpt_state_is_final(r->state))
		st->message_is_live = true;
	if (r->rcpt_index + 1 < r->msg->rcpt_count || !st->message_is_live)
		return;
	if (!st->has_oldest || r->msg->created_ns < st->oldest_created_ns) {
		st->has_oldest = true;
		st->oldest_created_ns = r->msg->created_ns;
		st->oldest = r->location;
	}
}

/* Sum of the sizes of the segment files in dir; missing files count 0. */
static uint64_t
tool_stats_dir_bytes(const char *dir)
{
	uint64_t *ids = NULL;
	uint32_t count = 0;
	uint64_t total = 0;
	if (spool_log_list_segments(dir, &ids, &count) < 0)
		return 0; /* recovery reports the unreadable directory */
	for (uint32_t i = 0; i < count; i++) {
		char path[PATH_MAX];
		struct stat st;
		spool_log_segment_path(dir, ids[i], path, sizeof(path));
		if (stat(path, &st) == 0)
			total += (uint64_t)st.st_size;
	}
	free(ids);
	return total;
}

static void
tool_stats_shard_files(const char *spool_dir, uint16_t shard, struct tool_stats *st)
{
	char path[PATH_MAX];
	spool_shard_path(spool_dir, shard, "msg", path, sizeof(path));
	st->segment_file_bytes += tool_stats_dir_bytes(path);
	spool_shard_path(spool_dir, shard, "journal", path, sizeof(path));
	st->segment_file_bytes += tool_stats_dir_bytes(path);
}

static uint64_t
tool_stats_age_s(const struct tool_stats *st)
{
	uint64_t now = eng_now_realtime_ns();
	ENG_ASSERT(st->has_oldest);
	return now > st->oldest_created_ns ? (now - st->oldest_created_ns) / 1000000000ull : 0;
}

static void
tool_stats_json_oldest(struct tool_json *json, const struct tool_stats *st)
{
	char id[SPOOL_QUEUE_ID_SIZE], created[TOOL_TIME_SIZE];
	if (!st->has_oldest) {
		tool_json_null(json, "oldest");
		return;
	}
	spool_queue_id_format(&st->oldest, id);
	tool_format_time(st->oldest_created_ns, created);
	tool_json_object_begin(json, "oldest");
	tool_json_string(json, "queue_id", id);
	tool_json_string(json, "created", created);
	tool_json_uint(json, "created_ns", st->oldest_created_ns);
	tool_json_uint(json, "age_s", tool_stats_age_s(st));
	tool_json_object_end(json);
}

static void
tool_stats_json(const struct tool_options *opt, const struct tool_shard_list *list,
		const struct tool_stats *st, const struct spool_recovery_stats *rs)
{
	struct tool_json json;
	tool_json_init(&json, stdout);
	tool_json_object_begin(&json, NULL);
	tool_json_string(&json, "spool_dir", opt->spool_dir);
	tool_json_uint(&json, "shards", list->count);
	tool_json_uint(&json, "records", rs->messages + rs->outcomes);
	tool_json_uint(&json, "messages", rs->messages);
	tool_json_uint(&json, "outcomes", rs->outcomes);
	tool_json_object_begin(&json, "bytes");
	tool_json_uint(&json, "message_bodies", st->body_bytes);
	tool_json_uint(&json, "records",
		       st->message_record_bytes + rs->outcomes * SPOOL_OUTCOME_RECORD_SIZE);
	tool_json_uint(&json, "segment_files", st->segment_file_bytes);
	tool_json_object_end(&json);
	tool_json_uint(&json, "message_segments", rs->message_segments);
	tool_json_uint(&json, "journal_segments", rs->journal_segments);
	tool_json_object_begin(&json, "recipients");
	tool_json_uint(&json, "total", st->recipients);
	for (unsigned s = 0; s < SPOOL_RCPT_STATE_COUNT; s++)
		tool_json_uint(&json, spool_rcpt_state_name((enum spool_rcpt_state)s),
			       st->by_state[s]);
	tool_json_object_end(&json);
	tool_stats_json_oldest(&json, st);
	tool_json_uint(&json, "corrupt_spans", rs->corrupt_spans);
	tool_json_uint(&json, "holes", rs->holes);
	tool_json_uint(&json, "torn_tails", rs->torn_tails);
	tool_json_double(&json, "scan_duration_ms", (double)rs->duration_ns / 1e6);
	tool_json_object_end(&json);
	tool_json_finish(&json);
}

/* "3d 04h 05m 06s" and shorter forms. */
static void
tool_stats_format_age(uint64_t age_s, char *out, size_t out_size)
{
	uint64_t d = age_s / 86400, h = age_s / 3600 % 24, m = age_s / 60 % 60, s = age_s % 60;
	if (d > 0)
		snprintf(out, out_size, "%" PRIu64 "d %02" PRIu64 "h %02" PRIu64 "m", d, h, m);
	else if (h > 0)
		snprintf(out, out_size, "%" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s", h, m, s);
	else
		snprintf(out, out_size, "%" PRIu64 "m %02" PRIu64 "s", m, s);
}

static void
tool_stats_text_oldest(const struct tool_stats *st)
{
	char id[SPOOL_QUEUE_ID_SIZE], created[TOOL_TIME_SIZE], age[64];
	if (!st->has_oldest) {
		printf("oldest queued:     none\n");
		return;
	}
	spool_queue_id_format(&st->oldest, id);
	tool_format_time(st->oldest_created_ns, created);
	tool_stats_format_age(tool_stats_age_s(st), age, sizeof(age));
	printf("oldest queued:     %s  %s  (age %s)\n", id, created, age);
}

static void
tool_stats_text(const struct tool_options *opt, const struct tool_shard_list *list,
		const struct tool_stats *st, const struct spool_recovery_stats *rs)
{
	printf("spool directory:   %s (%" PRIu32 " shard%s)\n", opt->spool_dir, list->count,
	       tool_plural(list->count));
	printf("records:           %" PRIu64 " (%" PRIu64 " messages, %" PRIu64 " outcomes)\n",
	       rs->messages + rs->outcomes, rs->messages, rs->outcomes);
	printf("bytes:             %" PRIu64 " message bodies, %" PRIu64 " in records, %" PRIu64
	       " in segment files\n",
	       st->body_bytes, st->message_record_bytes + rs->outcomes * SPOOL_OUTCOME_RECORD_SIZE,
	       st->segment_file_bytes);
	printf("segments:          %" PRIu64 " message, %" PRIu64 " journal\n",
	       rs->message_segments, rs->journal_segments);
	printf("recipients:        %" PRIu64 "\n", st->recipients);
	for (unsigned s = 0; s < SPOOL_RCPT_STATE_COUNT; s++)
		printf("  %-16s %" PRIu64 "\n", spool_rcpt_state_name((enum spool_rcpt_state)s),
		       st->by_state[s]);
	tool_stats_text_oldest(st);
	printf("damage:            %" PRIu64 " corrupt spans, %" PRIu64 " holes, %" PRIu64
	       " torn tails\n",
	       rs->corrupt_spans, rs->holes, rs->torn_tails);
	printf("scan duration:     %.3f ms\n", (double)rs->duration_ns / 1e6);
}

int
tool_cmd_stats(const struct tool_options *opt, const struct tool_shard_list *list)
{
	ENG_ASSERT(opt != NULL && list != NULL);
	ENG_ASSERT(opt->arg == NULL);
	struct tool_stats st;
	memset(&st, 0, sizeof(st));
	struct spool_recovery_stats rs;
	memset(&rs, 0, sizeof(rs));
	struct spool_recover_sink sink = { .ctx = &st, .rcpt_fn = tool_stats_rcpt };
	char err[TOOL_ERR_SIZE];
	for (uint32_t i = 0; i < list->count; i++) {
		if (tool_shard_recover(opt->spool_dir, list->shards[i], &sink, &rs, err,
				       sizeof(err)) < 0) {
			tool_error(err);
			return TOOL_EXIT_ERROR;
		}
		tool_stats_shard_files(opt->spool_dir, list->shards[i], &st);
	}
	ENG_ASSERT(st.recipients == rs.recipients_live + rs.recipients_final);
	if (opt->json)
		tool_stats_json(opt, list, &st, &rs);
	else
		tool_stats_text(opt, list, &st, &rs);
	return TOOL_EXIT_OK;
}
