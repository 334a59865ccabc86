/*
 * tool_cmd_verify.c - `ringmail-spool verify`: check every record of every
 * segment, message and journal, of every shard.
 *
 * Each segment is scanned the way recovery scans it (spool_log_scan:
 * every record checked in full, magic, size, CRC32C and place; resync at
 * 8-byte steps after a bad one; docs/spool-format.md 4.3). The verdict:
 * - a corrupt span (invalid bytes followed by valid records) is damage to
 *   acknowledged data: one line names shard, log, segment, offset, size
 *   and the first failed check, and the exit status is TOOL_EXIT_CORRUPT;
 * - a torn tail (invalid bytes after the last valid record) and a hole
 *   (zeros followed by valid records) are what a crash leaves of commits
 *   that were never acknowledged: they are reported as notes and do not
 *   fail the check.
 * Scanning the message and journal logs separately (rather than through
 * recovery) is what lets each line say which log the span is in.
 *
 * Format versions (docs/spool-format.md 1.1): OUTCOME records are counted
 * per version (1: no attempt count, 2: with it), and a span that fails
 * with "bad version" (a record this build does not read, e.g. written by
 * a newer ringmail) is counted in unknown_versions on top of its kind.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "engine/eng_common.h"
#include "tool_json.h"
#include "tool_spool.h"
#include "tool_text.h"

struct tool_verify {
	bool json_mode;
	struct tool_json json;
	uint16_t shard;
	const char *log_name; /* "msg" or "journal" */
	uint64_t messages;
	uint64_t outcomes;
	uint64_t outcomes_by_version[SPOOL_OUTCOME_VERSION + 1]; /* [1..] used */
	uint64_t unknown_versions;
};
_Static_assert(SPOOL_OUTCOME_VERSION == 2 && SPOOL_OUTCOME_VERSION_MIN == 1,
	       "the summary names outcome versions 1 and 2");

static bool
tool_verify_is_damage(enum spool_scan_event event)
{
	return event == SPOOL_SCAN_CORRUPT || event == SPOOL_SCAN_HOLE ||
	       event == SPOOL_SCAN_TORN_TAIL;
}

static const char *
tool_verify_kind(enum spool_scan_event event)
{
	ENG_ASSERT(tool_verify_is_damage(event));
	if (event == SPOOL_SCAN_CORRUPT)
		return "corrupt";
	if (event == SPOOL_SCAN_HOLE)
		return "hole";
	return "torn_tail";
}

static const char *
tool_verify_explain(enum spool_scan_event event)
{
	ENG_ASSERT(tool_verify_is_damage(event));
	if (event == SPOOL_SCAN_CORRUPT)
		return "damaged bytes between valid records: quarantined at start-up, "
		       "never delivered";
	if (event == SPOOL_SCAN_HOLE)
		return "an unacknowledged write lost in a crash; ignored";
	return "the end of an unacknowledged write cut by a crash; ignored";
}

static void
tool_verify_damage_json(struct tool_verify *v, const struct spool_scan_item *item)
{
	char segment[20];
	snprintf(segment, sizeof(segment), "%016" PRIx64, item->segment_id);
	tool_json_object_begin(&v->json, NULL);
	tool_json_string(&v->json, "kind", tool_verify_kind(item->event));
	tool_json_uint(&v->json, "shard", v->shard);
	tool_json_string(&v->json, "log", v->log_name);
	tool_json_string(&v->json, "segment", segment);
	tool_json_uint(&v->json, "offset", item->offset);
	tool_json_uint(&v->json, "size", item->size);
	tool_json_string(&v->json, "reason", spool_decode_result_name(item->why));
	tool_json_bool(&v->json, "fails", item->event == SPOOL_SCAN_CORRUPT);
	tool_json_object_end(&v->json);
}

static void
tool_verify_damage_text(const struct tool_verify *v, const struct spool_scan_item *item)
{
	bool fails = item->event == SPOOL_SCAN_CORRUPT;
	const char *kind = item->event == SPOOL_SCAN_TORN_TAIL ? "torn tail"
							       : tool_verify_kind(item->event);
	printf("%s: shard %u %s/%016" PRIx64 ".seg offset %" PRIu32 " size %" PRIu32
	       ": %s, %s (%s)\n",
	       fails ? "CORRUPT" : "note", (unsigned)v->shard, v->log_name, item->segment_id,
	       item->offset, item->size, kind, spool_decode_result_name(item->why),
	       tool_verify_explain(item->event));
}

static int
tool_verify_item(void *ctx, const struct spool_scan_item *item)
{
	struct tool_verify *v = ctx;
	ENG_ASSERT(item != NULL);
	if (item->event == SPOOL_SCAN_RECORD) {
		ENG_ASSERT(item->size == item->header.size);
		v->messages += item->header.type == SPOOL_RECORD_MESSAGE ? 1u : 0u;
		if (item->header.type == SPOOL_RECORD_OUTCOME) {
			/* spool_record_check accepts only the versions it reads. */
			ENG_ASSERT(item->header.version >= SPOOL_OUTCOME_VERSION_MIN &&
				   item->header.version <= SPOOL_OUTCOME_VERSION);
			v->outcomes++;
			v->outcomes_by_version[item->header.version]++;
		}
		return 0;
	}
	ENG_ASSERT(item->why != SPOOL_DECODE_OK);
	v->unknown_versions += item->why == SPOOL_DECODE_BAD_VERSION ? 1u : 0u;
	if (v->json_mode)
		tool_verify_damage_json(v, item);
	else
		tool_verify_damage_text(v, item);
	return 0; /* keep going: report every span */
}

/* Scan one log of one shard; returns 0 or -errno (message in err). */
static int
tool_verify_log(struct tool_verify *v, const char *spool_dir, const char *log_name,
		struct spool_scan_stats *scan, char *err, size_t err_size)
{
	char dir[PATH_MAX];
	spool_shard_path(spool_dir, v->shard, log_name, dir, sizeof(dir));
	v->log_name = log_name;
	err[0] = '\0';
	int ret = spool_log_scan(dir, v->shard, tool_verify_item, v, scan, err, err_size);
	ENG_ASSERT(ret <= 0); /* tool_verify_item never stops the scan */
	if (ret < 0 && err[0] == '\0')
		snprintf(err, err_size, "scan %s: %s", dir, strerror(-ret));
	return ret;
}

static void
tool_verify_summary(struct tool_verify *v, const struct tool_shard_list *list,
		    const struct spool_scan_stats *scan, bool ok)
{
	if (v->json_mode) {
		tool_json_array_end(&v->json);
		tool_json_bool(&v->json, "ok", ok);
		tool_json_uint(&v->json, "shards", list->count);
		tool_json_uint(&v->json, "segments", scan->segments);
		tool_json_uint(&v->json, "records", scan->records);
		tool_json_uint(&v->json, "messages", v->messages);
		tool_json_uint(&v->json, "outcomes", v->outcomes);
		tool_json_uint(&v->json, "outcomes_v1", v->outcomes_by_version[1]);
		tool_json_uint(&v->json, "outcomes_v2", v->outcomes_by_version[2]);
		tool_json_uint(&v->json, "unknown_versions", v->unknown_versions);
		tool_json_uint(&v->json, "corrupt_spans", scan->corrupt_spans);
		tool_json_uint(&v->json, "holes", scan->holes);
		tool_json_uint(&v->json, "torn_tails", scan->torn_tails);
		tool_json_object_end(&v->json);
		tool_json_finish(&v->json);
		return;
	}
	printf("verify: %" PRIu32 " shard%s, %" PRIu64 " segments, %" PRIu64 " records (%" PRIu64
	       " messages, %" PRIu64 " outcomes), %" PRIu64 " corrupt span%s, %" PRIu64
	       " hole%s, %" PRIu64 " torn tail%s: %s\n",
	       list->count, tool_plural(list->count), scan->segments, scan->records, v->messages,
	       v->outcomes, scan->corrupt_spans, tool_plural(scan->corrupt_spans), scan->holes,
	       tool_plural(scan->holes), scan->torn_tails, tool_plural(scan->torn_tails),
	       ok ? "OK" : "CORRUPT");
	printf("journal format: %" PRIu64 " outcome%s of version 1 (no attempt count), %" PRIu64
	       " of version 2; %" PRIu64 " span%s of an unknown version\n",
	       v->outcomes_by_version[1], tool_plural(v->outcomes_by_version[1]),
	       v->outcomes_by_version[2], v->unknown_versions, tool_plural(v->unknown_versions));
}

int
tool_cmd_verify(const struct tool_options *opt, const struct tool_shard_list *list)
{
	ENG_ASSERT(opt != NULL && list != NULL);
	ENG_ASSERT(opt->arg == NULL);
	struct tool_verify v;
	memset(&v, 0, sizeof(v));
	v.json_mode = opt->json;
	if (v.json_mode) {
		tool_json_init(&v.json, stdout);
		tool_json_object_begin(&v.json, NULL);
		tool_json_string(&v.json, "spool_dir", opt->spool_dir);
		tool_json_array_begin(&v.json, "damage");
	}
	struct spool_scan_stats scan;
	memset(&scan, 0, sizeof(scan));
	char err[TOOL_ERR_SIZE];
	int ret = 0;
	for (uint32_t i = 0; i < list->count && ret == 0; i++) {
		v.shard = list->shards[i];
		ret = tool_verify_log(&v, opt->spool_dir, "msg", &scan, err, sizeof(err));
		if (ret == 0)
			ret = tool_verify_log(&v, opt->spool_dir, "journal", &scan, err,
					      sizeof(err));
	}
	bool ok = ret == 0 && scan.corrupt_spans == 0;
	tool_verify_summary(&v, list, &scan, ok);
	if (ret < 0) {
		tool_error(err);
		return TOOL_EXIT_ERROR;
	}
	return ok ? TOOL_EXIT_OK : TOOL_EXIT_CORRUPT;
}
