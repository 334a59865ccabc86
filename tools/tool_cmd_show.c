/*
 * tool_cmd_show.c - `ringmail-spool show QUEUE_ID`: one message.
 *
 * A queue id names its record's place: shard, segment id and offset
 * (docs/spool-format.md 3). show scans that one segment file up to the
 * offset (the record must check out in full at its place, as in
 * recovery), then replays the shard's journal for this message's
 * recipients, then prints the envelope followed by the message itself,
 * un-dot-stuffed (RFC 5321 4.5.2) and without the final "." line:
 * headers, then body.
 *
 * Text output writes each CRLF as LF; --json gives the exact bytes
 * ("headers" is the header block, "body" what follows the empty line, so
 * headers + CRLF + body is the message) with non-UTF-8 bytes as \u00XX.
 *
 * The journal fold mirrors spool_recover.c: later outcomes replace
 * earlier ones for the same (segment, offset, recipient), but a final
 * state is never replaced.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_common.h"
#include "tool_json.h"
#include "tool_spool.h"
#include "tool_text.h"

/* What the scan of the id's segment found at the id's offset. */
struct tool_show_find {
	uint32_t offset;
	bool found;	/* a valid record starts at offset (copied to record) */
	bool damaged;	/* offset lies in a damaged span */
	bool no_memory;
	enum spool_scan_event damage;
	enum spool_decode_result why;
	uint8_t type;
	uint8_t *record;
	uint32_t record_size;
};

/* The message and its recipients' states. */
struct tool_show {
	struct spool_location loc;
	char id[SPOOL_QUEUE_ID_SIZE];
	struct spool_message msg;
	struct spool_span *rcpts; /* SPOOL_RECIPIENTS_MAX */
	uint16_t *states;	  /* rcpt_count */
	uint64_t *times_ns;	  /* rcpt_count */
	uint32_t *attempts;	  /* rcpt_count */
};

static int
tool_show_find_item(void *ctx, const struct spool_scan_item *item)
{
	struct tool_show_find *f = ctx;
	ENG_ASSERT(item->size > 0);
	if ((uint64_t)item->offset + item->size <= f->offset)
		return 0; /* before the place: keep scanning */
	if (item->event != SPOOL_SCAN_RECORD) {
		f->damaged = item->offset <= f->offset;
		f->damage = item->event;
		f->why = item->why;
		return 1;
	}
	if (item->offset != f->offset)
		return 1; /* the id points inside a record, or into nothing */
	f->record = malloc(item->size);
	if (f->record == NULL) {
		f->no_memory = true;
		return 1;
	}
	memcpy(f->record, item->data, item->size);
	f->record_size = item->size;
	f->type = item->header.type;
	f->found = true;
	return 1;
}

static void
tool_show_outcome(struct tool_show *show, const struct spool_outcome *out)
{
	if (out->message.segment_id != show->loc.segment_id ||
	    out->message.offset != show->loc.offset || out->rcpt_index >= show->msg.rcpt_count)
		return;
	ENG_ASSERT(out->state < SPOOL_RCPT_STATE_COUNT); /* spool_outcome_decode checks */
	uint32_t i = out->rcpt_index;
	if (spool_rcpt_state_is_final((enum spool_rcpt_state)show->states[i]))
		return; /* a final state is never undone (spool_recover.c) */
	show->states[i] = out->state;
	show->times_ns[i] = out->time_ns;
	show->attempts[i] = out->attempts;
}

static int
tool_show_journal_item(void *ctx, const struct spool_scan_item *item)
{
	struct tool_show *show = ctx;
	struct spool_outcome out;
	if (item->event != SPOOL_SCAN_RECORD || item->header.type != SPOOL_RECORD_OUTCOME)
		return 0;
	if (spool_outcome_decode(item->data, item->size, &out) != SPOOL_DECODE_OK)
		return 0; /* checked record, undecodable body: ignored, as recovery does */
	tool_show_outcome(show, &out);
	return 0;
}

/* One line on stderr explaining why there is no message; the exit status. */
static int
tool_show_not_found(const struct tool_options *opt, const struct tool_show *show,
		    const struct tool_show_find *f, int scan_ret)
{
	char line[TOOL_ERR_SIZE + 128];
	const char *id = show->id;
	uint64_t segment = show->loc.segment_id;
	if (scan_ret == -ENOENT)
		snprintf(line, sizeof(line),
			 "no message %s in %s: segment msg/%016" PRIx64 ".seg of shard %u is gone"
			 " (delivered and reclaimed, or a wrong id)",
			 id, opt->spool_dir, segment, (unsigned)show->loc.shard);
	else if (scan_ret < 0)
		snprintf(line, sizeof(line), "cannot read message %s: %s", id, strerror(-scan_ret));
	else if (f->no_memory)
		snprintf(line, sizeof(line), "cannot read message %s: out of memory", id);
	else if (f->damaged)
		snprintf(line, sizeof(line),
			 "message %s is unreadable: offset %" PRIu32 " of msg/%016" PRIx64
			 ".seg lies in a %s span (%s); run 'ringmail-spool verify'",
			 id, show->loc.offset, segment,
			 f->damage == SPOOL_SCAN_CORRUPT ? "corrupt" : "torn or unwritten",
			 spool_decode_result_name(f->why));
	else if (f->found)
		snprintf(line, sizeof(line), "no message %s: the record at offset %" PRIu32
			 " is not a message", id, show->loc.offset);
	else
		snprintf(line, sizeof(line),
			 "no message %s in %s: no record starts at offset %" PRIu32
			 " of msg/%016" PRIx64 ".seg",
			 id, opt->spool_dir, show->loc.offset, segment);
	tool_error(line);
	return TOOL_EXIT_ERROR;
}

static void
tool_show_text(const struct tool_options *opt, const struct tool_show *show,
	       const uint8_t *text, size_t text_size)
{
	char created[TOOL_TIME_SIZE], expires[TOOL_TIME_SIZE];
	size_t headers_size, body_offset;
	tool_format_time(show->msg.created_ns, created);
	tool_format_time(show->msg.expires_ns, expires);
	tool_message_split(text, text_size, &headers_size, &body_offset);
	printf("queue id:   %s\n", show->id);
	printf("location:   %s/%u/msg/%016" PRIx64 ".seg offset %" PRIu32 "\n", opt->spool_dir,
	       (unsigned)show->loc.shard, show->loc.segment_id, show->loc.offset);
	printf("created:    %s\nexpires:    %s\n", created, expires);
	printf("size:       %" PRIu32 " bytes\nsender:     <", show->msg.body.size);
	tool_print_escaped(stdout, show->msg.sender.data, show->msg.sender.size);
	printf(">\n");
	for (uint32_t i = 0; i < show->msg.rcpt_count; i++) {
		fputs("recipient:  ", stdout);
		tool_recipient_text(stdout, &show->rcpts[i], (enum spool_rcpt_state)show->states[i],
				    show->times_ns[i], show->attempts[i]);
		putchar('\n');
	}
	fputs("*** HEADERS ***\n", stdout);
	tool_print_lines(stdout, text, headers_size);
	fputs("*** BODY ***\n", stdout);
	tool_print_lines(stdout, text + body_offset, text_size - body_offset);
}

static void
tool_show_json(const struct tool_options *opt, const struct tool_show *show,
	       const uint8_t *text, size_t text_size)
{
	char created[TOOL_TIME_SIZE], expires[TOOL_TIME_SIZE], segment[20];
	size_t headers_size, body_offset;
	struct tool_json json;
	tool_format_time(show->msg.created_ns, created);
	tool_format_time(show->msg.expires_ns, expires);
	snprintf(segment, sizeof(segment), "%016" PRIx64, show->loc.segment_id);
	tool_message_split(text, text_size, &headers_size, &body_offset);
	tool_json_init(&json, stdout);
	tool_json_object_begin(&json, NULL);
	tool_json_string(&json, "spool_dir", opt->spool_dir);
	tool_json_string(&json, "queue_id", show->id);
	tool_json_uint(&json, "shard", show->loc.shard);
	tool_json_string(&json, "segment", segment);
	tool_json_uint(&json, "offset", show->loc.offset);
	tool_json_string(&json, "created", created);
	tool_json_uint(&json, "created_ns", show->msg.created_ns);
	tool_json_string(&json, "expires", expires);
	tool_json_uint(&json, "expires_ns", show->msg.expires_ns);
	tool_json_uint(&json, "size", show->msg.body.size);
	tool_json_bytes(&json, "sender", show->msg.sender.data, show->msg.sender.size);
	tool_json_array_begin(&json, "recipients");
	for (uint32_t i = 0; i < show->msg.rcpt_count; i++)
		tool_recipient_json(&json, &show->rcpts[i], (enum spool_rcpt_state)show->states[i],
				    show->times_ns[i], show->attempts[i]);
	tool_json_array_end(&json);
	tool_json_bytes(&json, "headers", text, headers_size);
	tool_json_bytes(&json, "body", text + body_offset, text_size - body_offset);
	tool_json_object_end(&json);
	tool_json_finish(&json);
}

/* Decode the found record, fold the journal, print. */
static int
tool_show_message(const struct tool_options *opt, struct tool_show *show,
		  const struct tool_show_find *f)
{
	char dir[PATH_MAX], err[TOOL_ERR_SIZE];
	if (spool_message_decode(f->record, f->record_size, &show->msg, show->rcpts,
				 SPOOL_RECIPIENTS_MAX) != SPOOL_DECODE_OK) {
		tool_error("the message record checks out but does not decode");
		return TOOL_EXIT_ERROR;
	}
	ENG_ASSERT(show->msg.rcpt_count >= 1 && show->msg.rcpt_count <= SPOOL_RECIPIENTS_MAX);
	show->states = calloc(show->msg.rcpt_count, sizeof(*show->states));
	show->times_ns = calloc(show->msg.rcpt_count, sizeof(*show->times_ns));
	show->attempts = calloc(show->msg.rcpt_count, sizeof(*show->attempts));
	uint8_t *text = malloc(show->msg.body.size);
	if (show->states == NULL || show->times_ns == NULL || show->attempts == NULL ||
	    text == NULL) {
		free(text);
		tool_error("out of memory");
		return TOOL_EXIT_ERROR;
	}
	struct spool_scan_stats scan;
	memset(&scan, 0, sizeof(scan));
	spool_shard_path(opt->spool_dir, show->loc.shard, "journal", dir, sizeof(dir));
	err[0] = '\0';
	int ret = spool_log_scan(dir, show->loc.shard, tool_show_journal_item, show, &scan, err,
				 sizeof(err));
	if (ret < 0) {
		free(text);
		tool_error(err[0] != '\0' ? err : "cannot read the journal");
		return TOOL_EXIT_ERROR;
	}
	size_t text_size = tool_message_unstuff(show->msg.body.data, show->msg.body.size, text);
	if (opt->json)
		tool_show_json(opt, show, text, text_size);
	else
		tool_show_text(opt, show, text, text_size);
	free(text);
	return TOOL_EXIT_OK;
}

/* Parse the id; an exit status, or -1 to go on. */
static int
tool_show_parse(const struct tool_options *opt, struct tool_show *show)
{
	if (!spool_queue_id_parse(opt->arg, strlen(opt->arg), &show->loc)) {
		fprintf(stderr, "ringmail-spool: '%s' is not a queue id (26 hex digits)\n",
			opt->arg);
		return TOOL_EXIT_USAGE;
	}
	spool_queue_id_format(&show->loc, show->id);
	if (opt->shard >= 0 && opt->shard != (int32_t)show->loc.shard) {
		fprintf(stderr, "ringmail-spool: queue id %s is in shard %u, not shard %d\n",
			show->id, (unsigned)show->loc.shard, (int)opt->shard);
		return TOOL_EXIT_USAGE;
	}
	return -1;
}

int
tool_cmd_show(const struct tool_options *opt, const struct tool_shard_list *list)
{
	ENG_ASSERT(opt != NULL && list != NULL);
	ENG_ASSERT(opt->arg != NULL);
	struct tool_show show;
	memset(&show, 0, sizeof(show));
	int status = tool_show_parse(opt, &show);
	if (status >= 0)
		return status;
	struct tool_show_find f;
	memset(&f, 0, sizeof(f));
	f.offset = show.loc.offset;
	char dir[PATH_MAX], err[TOOL_ERR_SIZE];
	struct spool_scan_stats scan;
	memset(&scan, 0, sizeof(scan));
	spool_shard_path(opt->spool_dir, show.loc.shard, "msg", dir, sizeof(dir));
	int ret = spool_log_scan_segment(dir, show.loc.shard, show.loc.segment_id,
					 tool_show_find_item, &f, &scan, err, sizeof(err));
	if (ret < 0 || !f.found || f.type != SPOOL_RECORD_MESSAGE) {
		status = tool_show_not_found(opt, &show, &f, ret < 0 ? ret : 0);
	} else {
		show.rcpts = calloc(SPOOL_RECIPIENTS_MAX, sizeof(*show.rcpts));
		if (show.rcpts == NULL) {
			tool_error("out of memory");
			status = TOOL_EXIT_ERROR;
		} else {
			status = tool_show_message(opt, &show, &f);
		}
	}
	free(show.rcpts);
	free(show.states);
	free(show.times_ns);
	free(show.attempts);
	free(f.record);
	return status;
}
