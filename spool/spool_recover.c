/*
 * spool_recover.c - journal replay and message scan (see spool_recover.h).
 *
 * The journal's outcomes go into an open-addressing hash table keyed by
 * (message segment id, offset, recipient index). Segments are scanned in
 * id order and records in offset order, which is log order, so a later
 * record for the same recipient replaces an earlier one (state, time and
 * attempt count together: the latest record has the latest count).
 *
 * A span that fails with BAD_VERSION (a record type or format version
 * this build does not read, e.g. journals of a newer ringmail) is damage
 * like any other, and is also counted in unknown_versions so that an
 * operator can tell a downgrade from corruption.
 */
#include "spool_recover.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../engine/eng_common.h"
#include "spool_crc32c.h"

struct spool_outcome_slot {
	uint64_t segment_id; /* 0: empty */
	uint32_t offset;
	uint32_t rcpt_index;
	uint32_t attempts;
	uint64_t time_ns;
	uint16_t state;
};

struct spool_outcome_map {
	struct spool_outcome_slot *slots;
	uint64_t capacity; /* power of two */
	uint64_t count;
};

static uint64_t
spool_outcome_hash(uint64_t segment_id, uint32_t offset, uint32_t rcpt_index)
{
	uint64_t h = segment_id * 0x9e3779b97f4a7c15ull;
	h ^= ((uint64_t)offset << 20 | rcpt_index) * 0xc2b2ae3d27d4eb4full;
	h ^= h >> 29;
	return h;
}

static struct spool_outcome_slot *
spool_map_slot(const struct spool_outcome_map *map, uint64_t segment_id, uint32_t offset,
	       uint32_t rcpt_index)
{
	ENG_ASSERT(map->capacity > 0);
	ENG_ASSERT(segment_id != 0);
	uint64_t mask = map->capacity - 1;
	uint64_t i = spool_outcome_hash(segment_id, offset, rcpt_index) & mask;
	for (uint64_t probes = 0; probes < map->capacity; probes++, i = (i + 1) & mask) {
		struct spool_outcome_slot *s = &map->slots[i];
		if (s->segment_id == 0 || (s->segment_id == segment_id && s->offset == offset &&
					   s->rcpt_index == rcpt_index))
			return s;
	}
	ENG_PANIC("outcome map full");
	return NULL;
}

static int
spool_map_grow(struct spool_outcome_map *map)
{
	struct spool_outcome_map bigger = { 0 };
	bigger.capacity = map->capacity == 0 ? 1024 : map->capacity * 2;
	bigger.slots = calloc(bigger.capacity, sizeof(*bigger.slots));
	if (bigger.slots == NULL)
		return -ENOMEM;
	for (uint64_t i = 0; i < map->capacity; i++) {
		const struct spool_outcome_slot *s = &map->slots[i];
		if (s->segment_id == 0)
			continue;
		*spool_map_slot(&bigger, s->segment_id, s->offset, s->rcpt_index) = *s;
		bigger.count++;
	}
	free(map->slots);
	*map = bigger;
	return 0;
}

static int
spool_map_put(struct spool_outcome_map *map, const struct spool_outcome *out)
{
	if ((map->count + 1) * 10 > map->capacity * 7) {
		int ret = spool_map_grow(map);
		if (ret < 0)
			return ret;
	}
	struct spool_outcome_slot *s = spool_map_slot(map, out->message.segment_id,
						      out->message.offset, out->rcpt_index);
	if (s->segment_id == 0)
		map->count++;
	/* A final state is never undone by a later non-final one. */
	if (s->segment_id != 0 && spool_rcpt_state_is_final((enum spool_rcpt_state)s->state))
		return 0;
	s->segment_id = out->message.segment_id;
	s->offset = out->message.offset;
	s->rcpt_index = out->rcpt_index;
	s->state = out->state;
	s->time_ns = out->time_ns;
	s->attempts = out->attempts;
	return 0;
}

/* ---- damage ---- */

static void
spool_quarantine(const char *dir, const struct spool_scan_item *item)
{
	char path[PATH_MAX];
	if (dir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/%016" PRIx64 "-%08x.bad", dir, item->segment_id,
		 item->offset);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	size_t done = 0;
	while (done < item->size) {
		ssize_t n = write(fd, item->data + done, item->size - done);
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	(void)fsync(fd);
	close(fd);
}

struct spool_recover_walk {
	const struct spool_recover_sink *sink;
	const char *quarantine_dir;
	struct spool_recovery_stats *stats;
	struct spool_outcome_map map;
	/* Journal pass: current segment and its refs. */
	uint64_t journal_id;
	uint64_t *refs;
	uint32_t ref_count;
	uint32_t ref_capacity;
	/* Message pass. */
	uint64_t msg_id;
	uint64_t msg_live;
	struct spool_span *rcpts;
	struct spool_scan_window window; /* one for every segment */
	struct spool_scan_stats scan;
	int error;
};

static int
spool_recover_damage(struct spool_recover_walk *w, const struct spool_scan_item *item)
{
	if (item->event == SPOOL_SCAN_CORRUPT) {
		w->stats->corrupt_spans++;
		spool_quarantine(w->quarantine_dir, item);
	} else if (item->event == SPOOL_SCAN_HOLE) {
		w->stats->holes++;
	} else {
		w->stats->torn_tails++;
	}
	if (item->why == SPOOL_DECODE_BAD_VERSION)
		w->stats->unknown_versions++;
	if (w->sink->damage_fn != NULL)
		return w->sink->damage_fn(w->sink->ctx, item);
	return 0;
}

static void
spool_journal_flush(struct spool_recover_walk *w)
{
	if (w->journal_id != 0 && w->sink->journal_segment_fn != NULL)
		w->sink->journal_segment_fn(w->sink->ctx, w->journal_id, w->refs, w->ref_count);
	w->ref_count = 0;
	w->journal_id = 0;
}

static int
spool_journal_note_ref(struct spool_recover_walk *w, uint64_t msg_segment_id)
{
	for (uint32_t i = 0; i < w->ref_count; i++) {
		if (w->refs[i] == msg_segment_id)
			return 0;
	}
	if (w->ref_count == w->ref_capacity) {
		uint32_t cap = w->ref_capacity == 0 ? 16 : w->ref_capacity * 2;
		uint64_t *grown = realloc(w->refs, cap * sizeof(*grown));
		if (grown == NULL)
			return -ENOMEM;
		w->refs = grown;
		w->ref_capacity = cap;
	}
	w->refs[w->ref_count++] = msg_segment_id;
	return 0;
}

static int
spool_recover_journal_item(void *ctx, const struct spool_scan_item *item)
{
	struct spool_recover_walk *w = ctx;
	ENG_ASSERT(item->segment_id == w->journal_id);
	if (item->event != SPOOL_SCAN_RECORD)
		return spool_recover_damage(w, item);
	if (item->header.type != SPOOL_RECORD_OUTCOME)
		return 0; /* PAD */
	struct spool_outcome out;
	if (spool_outcome_decode(item->data, item->size, &out) != SPOOL_DECODE_OK)
		return 0; /* checked record, undecodable body: ignore, never crash */
	w->stats->outcomes++;
	int ret = spool_map_put(&w->map, &out);
	if (ret == 0)
		ret = spool_journal_note_ref(w, out.message.segment_id);
	w->error = ret;
	return ret;
}

static void
spool_message_flush(struct spool_recover_walk *w)
{
	if (w->msg_id != 0 && w->sink->message_segment_fn != NULL)
		w->sink->message_segment_fn(w->sink->ctx, w->msg_id, w->msg_live);
	w->msg_id = 0;
	w->msg_live = 0;
}

static void
spool_recover_message(struct spool_recover_walk *w, const struct spool_scan_item *item,
		      const struct spool_message *msg)
{
	struct spool_recovered r;
	memset(&r, 0, sizeof(r));
	r.location.segment_id = item->segment_id;
	r.location.offset = item->offset;
	r.location.shard = item->header.location.shard;
	r.msg = msg;
	for (uint32_t i = 0; i < msg->rcpt_count; i++) {
		r.rcpt_index = i;
		r.state = SPOOL_RCPT_PENDING;
		r.next_attempt_ns = 0;
		r.attempts = 0;
		if (w->map.capacity > 0) {
			const struct spool_outcome_slot *s =
				spool_map_slot(&w->map, item->segment_id, item->offset, i);
			if (s->segment_id != 0) {
				r.state = (enum spool_rcpt_state)s->state;
				r.next_attempt_ns = s->time_ns;
				r.attempts = s->attempts;
			}
		}
		if (spool_rcpt_state_is_final(r.state)) {
			w->stats->recipients_final++;
		} else {
			w->stats->recipients_live++;
			w->msg_live++;
		}
		if (w->sink->rcpt_fn != NULL)
			w->sink->rcpt_fn(w->sink->ctx, &r);
	}
}

static int
spool_recover_message_item(void *ctx, const struct spool_scan_item *item)
{
	struct spool_recover_walk *w = ctx;
	ENG_ASSERT(item->segment_id == w->msg_id);
	if (item->event != SPOOL_SCAN_RECORD)
		return spool_recover_damage(w, item);
	if (item->header.type != SPOOL_RECORD_MESSAGE)
		return 0;
	struct spool_message msg;
	if (spool_message_decode(item->data, item->size, &msg, w->rcpts, SPOOL_RECIPIENTS_MAX) !=
	    SPOOL_DECODE_OK)
		return 0;
	w->stats->messages++;
	spool_recover_message(w, item, &msg);
	return 0;
}

/* Every segment, even one with no valid record, reaches the sink. */
static int
spool_recover_dir(const char *dir, uint16_t shard, spool_scan_fn *fn,
		  struct spool_recover_walk *w, bool journal, uint64_t *max_id, char *err,
		  size_t err_size)
{
	uint64_t *ids = NULL;
	uint32_t count = 0;
	int ret = spool_log_list_segments(dir, &ids, &count);
	if (ret < 0) {
		snprintf(err, err_size, "spool: cannot list %s: %s", dir, strerror(-ret));
		return ret;
	}
	for (uint32_t i = 0; i < count && ret == 0; i++) {
		*max_id = ENG_MAX(*max_id, ids[i]);
		if (journal) {
			spool_journal_flush(w);
			w->journal_id = ids[i];
			w->stats->journal_segments++;
		} else {
			spool_message_flush(w);
			w->msg_id = ids[i];
			w->stats->message_segments++;
		}
		ret = spool_log_scan_segment_in(&w->window, dir, shard, ids[i], fn, w, &w->scan, err,
						err_size);
	}
	if (journal)
		spool_journal_flush(w);
	else
		spool_message_flush(w);
	free(ids);
	return ret != 0 ? ret : w->error;
}

int
spool_recover_shard(const char *msg_dir, const char *journal_dir, const char *quarantine_dir,
		    uint16_t shard, const struct spool_recover_sink *sink,
		    struct spool_recovery_stats *stats, uint64_t *max_segment_id, char *err,
		    size_t err_size)
{
	ENG_ASSERT(msg_dir != NULL && journal_dir != NULL);
	ENG_ASSERT(sink != NULL && stats != NULL && max_segment_id != NULL);
	uint64_t start = eng_now_monotonic_ns();
	if (err_size > 0)
		err[0] = 0;
	struct spool_recover_walk w;
	memset(&w, 0, sizeof(w));
	w.sink = sink;
	w.quarantine_dir = quarantine_dir;
	w.stats = stats;
	w.rcpts = calloc(SPOOL_RECIPIENTS_MAX, sizeof(*w.rcpts));
	if (w.rcpts == NULL) {
		snprintf(err, err_size, "spool: recovery: out of memory");
		return -ENOMEM;
	}
	int ret = spool_recover_dir(journal_dir, shard, spool_recover_journal_item, &w, true,
				    max_segment_id, err, err_size);
	if (ret == 0)
		ret = spool_recover_dir(msg_dir, shard, spool_recover_message_item, &w, false,
					max_segment_id, err, err_size);
	stats->bytes_read = w.scan.bytes_read;
	stats->window_size = w.scan.window_size;
	stats->window_allocs = w.scan.window_allocs;
	spool_scan_window_release(&w.window);
	free(w.rcpts);
	free(w.refs);
	free(w.map.slots);
	if (ret == -ENOMEM && err[0] == 0)
		snprintf(err, err_size, "spool: recovery: out of memory");
	stats->duration_ns = eng_now_monotonic_ns() - start;
	return ret;
}
