/*
 * tool_cmd_ls.c - `ringmail-spool ls`: one line per message record.
 *
 *   QUEUE_ID  CREATED  SIZE  <SENDER>  <RCPT> STATE, <RCPT> STATE, ...
 *
 * CREATED is ISO 8601 UTC, SIZE the stored (wire form) body in bytes,
 * STATE pending, deferred until TIME, delivered, bounced or expired, as
 * recovery sees it, followed by ", N attempts" once the journal counts
 * any (", attempts unknown" for a version-1 OUTCOME; --json: "attempts",
 * null when unknown, and "next_attempt_ns" for deferred). Messages come in log order (shard, segment, offset),
 * which is arrival order within a shard.
 *
 * Recovery calls the sink once per recipient, in recipient order, with a
 * view of the message that is valid only during the call. The line is
 * streamed: the message part at recipient 0, each recipient as it comes,
 * the end of line after the last. Nothing is copied or kept, so memory
 * does not grow with the spool.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "engine/eng_common.h"
#include "tool_json.h"
#include "tool_spool.h"
#include "tool_text.h"

struct tool_ls {
	bool json_mode;
	struct tool_json json;
	uint32_t rcpt_index_next; /* recipients arrive in order */
	uint64_t messages;
	uint64_t recipients;
	uint64_t recipients_live;
};

static void
tool_ls_message_text(const struct spool_recovered *r)
{
	char id[SPOOL_QUEUE_ID_SIZE], created[TOOL_TIME_SIZE];
	spool_queue_id_format(&r->location, id);
	tool_format_time(r->msg->created_ns, created);
	printf("%s  %s  %" PRIu32 "  <", id, created, r->msg->body.size);
	tool_print_escaped(stdout, r->msg->sender.data, r->msg->sender.size);
	fputs(">  ", stdout);
}

static void
tool_ls_message_json(struct tool_json *json, const struct spool_recovered *r)
{
	char id[SPOOL_QUEUE_ID_SIZE], created[TOOL_TIME_SIZE], expires[TOOL_TIME_SIZE];
	spool_queue_id_format(&r->location, id);
	tool_format_time(r->msg->created_ns, created);
	tool_format_time(r->msg->expires_ns, expires);
	tool_json_object_begin(json, NULL);
	tool_json_string(json, "queue_id", id);
	tool_json_uint(json, "shard", r->location.shard);
	tool_json_string(json, "created", created);
	tool_json_uint(json, "created_ns", r->msg->created_ns);
	tool_json_string(json, "expires", expires);
	tool_json_uint(json, "expires_ns", r->msg->expires_ns);
	tool_json_uint(json, "size", r->msg->body.size);
	tool_json_bytes(json, "sender", r->msg->sender.data, r->msg->sender.size);
	tool_json_array_begin(json, "recipients");
}

static void
tool_ls_rcpt(void *ctx, const struct spool_recovered *r)
{
	struct tool_ls *ls = ctx;
	ENG_ASSERT(r->msg != NULL && r->msg->rcpts != NULL);
	ENG_ASSERT(r->rcpt_index < r->msg->rcpt_count);
	ENG_ASSERT(r->rcpt_index == ls->rcpt_index_next);
	if (r->rcpt_index == 0) {
		ls->messages++;
		if (ls->json_mode)
			tool_ls_message_json(&ls->json, r);
		else
			tool_ls_message_text(r);
	}
	ls->recipients++;
	ls->recipients_live += spool_rcpt_state_is_final(r->state) ? 0u : 1u;
	const struct spool_span *rcpt = &r->msg->rcpts[r->rcpt_index];
	if (ls->json_mode) {
		tool_recipient_json(&ls->json, rcpt, r->state, r->next_attempt_ns, r->attempts);
	} else {
		fputs(r->rcpt_index > 0 ? ", " : "", stdout);
		tool_recipient_text(stdout, rcpt, r->state, r->next_attempt_ns, r->attempts);
	}
	ls->rcpt_index_next = r->rcpt_index + 1;
	if (ls->rcpt_index_next < r->msg->rcpt_count)
		return;
	ls->rcpt_index_next = 0;
	if (ls->json_mode) {
		tool_json_array_end(&ls->json);
		tool_json_object_end(&ls->json);
	} else {
		putchar('\n');
	}
}

/* Close the JSON document (valid even after an error), or print the
 * text summary line when every shard was read. */
static void
tool_ls_summary(struct tool_ls *ls, const struct tool_shard_list *list,
		const struct spool_recovery_stats *stats, bool complete)
{
	if (ls->json_mode) {
		tool_json_array_end(&ls->json);
		tool_json_uint(&ls->json, "count", ls->messages);
		tool_json_uint(&ls->json, "recipients", ls->recipients);
		tool_json_uint(&ls->json, "recipients_live", ls->recipients_live);
		tool_json_uint(&ls->json, "shards", list->count);
		tool_json_uint(&ls->json, "corrupt_spans", stats->corrupt_spans);
		tool_json_object_end(&ls->json);
		tool_json_finish(&ls->json);
	} else if (complete) {
		printf("-- %" PRIu64 " message%s, %" PRIu64 " recipient%s (%" PRIu64
		       " not final), %" PRIu32 " shard%s\n",
		       ls->messages, tool_plural(ls->messages), ls->recipients,
		       tool_plural(ls->recipients), ls->recipients_live, list->count,
		       tool_plural(list->count));
	}
	if (stats->corrupt_spans > 0)
		fprintf(stderr,
			"ringmail-spool: note: %" PRIu64 " corrupt span%s skipped;"
			" run 'ringmail-spool verify'\n",
			stats->corrupt_spans, tool_plural(stats->corrupt_spans));
}

int
tool_cmd_ls(const struct tool_options *opt, const struct tool_shard_list *list)
{
	ENG_ASSERT(opt != NULL && list != NULL);
	ENG_ASSERT(opt->arg == NULL);
	struct tool_ls ls;
	memset(&ls, 0, sizeof(ls));
	ls.json_mode = opt->json;
	if (ls.json_mode) {
		tool_json_init(&ls.json, stdout);
		tool_json_object_begin(&ls.json, NULL);
		tool_json_string(&ls.json, "spool_dir", opt->spool_dir);
		tool_json_array_begin(&ls.json, "messages");
	}
	struct spool_recover_sink sink = { .ctx = &ls, .rcpt_fn = tool_ls_rcpt };
	struct spool_recovery_stats stats;
	memset(&stats, 0, sizeof(stats));
	char err[TOOL_ERR_SIZE];
	int status = TOOL_EXIT_OK;
	for (uint32_t i = 0; i < list->count && status == TOOL_EXIT_OK; i++) {
		if (tool_shard_recover(opt->spool_dir, list->shards[i], &sink, &stats, err,
				       sizeof(err)) < 0) {
			tool_error(err);
			status = TOOL_EXIT_ERROR;
		}
	}
	ENG_ASSERT(ls.rcpt_index_next == 0); /* every message line was ended */
	tool_ls_summary(&ls, list, &stats, status == TOOL_EXIT_OK);
	return status;
}
