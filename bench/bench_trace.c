/*
 * bench_trace.c - completion observer for benchmarks (bench_trace.h).
 *
 * Invariant: the hook returns every result unchanged, so observing never
 * changes what the spool does; it costs one clock read per completion.
 */
#include "bench_trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "engine/eng_common.h"
#include "ring/ring.h"
#include "spool/spool_log.h"

static int32_t
bench_trace_observe(void *ctx, struct ring_op *op, int32_t res)
{
	struct bench_trace *trace = ctx;
	ENG_ASSERT(trace != NULL && op != NULL);
	uint64_t now_ns = bench_now_ns();
	if (op->tag == SPOOL_TAG_PREPARE && op->kind == RING_OP_WRITE && res > 0)
		trace->prep_write_bytes += (uint64_t)res;
	else if (op->tag == SPOOL_TAG_PREPARE && op->kind == RING_OP_FSYNC)
		trace->prep_syncs++;
	if (op->tag == SPOOL_TAG_COMMIT_WRITE) {
		trace->commit_writes++;
		uint64_t gap = now_ns - trace->last_commit_ns;
		trace->commit_gap_max_ns = ENG_MAX(trace->commit_gap_max_ns, gap);
		trace->last_commit_ns = now_ns;
	}
	if (trace->event_count < trace->event_capacity) {
		struct bench_trace_event *ev = &trace->events[trace->event_count++];
		ev->t_ns = now_ns - trace->start_ns;
		ev->len = op->len;
		ev->res = res;
		ev->tag = op->tag;
		ev->kind = op->kind;
	}
	return res;
}

int
bench_trace_start(struct bench_trace *trace, struct ring *ring, uint32_t timeline_capacity)
{
	ENG_ASSERT(trace != NULL);
	ENG_ASSERT(ring != NULL);
	memset(trace, 0, sizeof(*trace));
	if (timeline_capacity > 0) {
		trace->events = calloc(timeline_capacity, sizeof(*trace->events));
		if (trace->events == NULL)
			return -ENOMEM;
		trace->event_capacity = timeline_capacity;
	}
	trace->ring = ring;
	trace->start_ns = bench_now_ns();
	trace->last_commit_ns = trace->start_ns;
	ring_set_fault(ring, bench_trace_observe, trace);
	return 0;
}

static const char *
bench_trace_tag_name(uint16_t tag)
{
	switch (tag) {
	case SPOOL_TAG_COMMIT_WRITE: return "commit";
	case SPOOL_TAG_COMMIT_SYNC: return "commit_sync";
	case SPOOL_TAG_PREPARE: return "prepare";
	case SPOOL_TAG_DELETE: return "delete";
	default: return "other";
	}
}

void
bench_trace_stop(struct bench_trace *trace, const char *path)
{
	ENG_ASSERT(trace != NULL);
	ENG_ASSERT(trace->ring != NULL);
	ring_set_fault(trace->ring, NULL, NULL);
	FILE *f = path != NULL && trace->event_count > 0 ? fopen(path, "w") : NULL;
	if (f != NULL) {
		fprintf(f, "t_us,tag,kind,len,res\n");
		for (uint32_t i = 0; i < trace->event_count; i++) {
			const struct bench_trace_event *ev = &trace->events[i];
			fprintf(f, "%.1f,%s,%s,%u,%d\n", (double)ev->t_ns / 1e3,
				bench_trace_tag_name(ev->tag), ring_op_kind_name(ev->kind), ev->len,
				ev->res);
		}
		fclose(f);
	}
	free(trace->events);
	trace->events = NULL;
	trace->event_count = trace->event_capacity = 0;
	trace->ring = NULL;
}
