/*
 * bench_trace.h - watch a ring's completions during a benchmark without
 * changing them: counts the spool's own I/O (segment preparation, commit
 * writes) and, when asked, records a timeline of every completion.
 *
 * It hooks ring_set_fault() with a function that returns every result
 * unchanged: the only place where all completions of a ring pass, so the
 * spool's background work (pre-zeroing new segments, their fsyncs) can be
 * seen next to its commits without touching spool/.
 *
 * Ownership: the observer is the caller's, borrowed by the ring between
 * bench_trace_start and bench_trace_stop; events are malloc'd by _start
 * when a timeline is wanted and freed by _stop.
 */
#ifndef BENCH_TRACE_H
#define BENCH_TRACE_H

#include <stddef.h>
#include <stdint.h>

struct ring;

struct bench_trace_event {
	uint64_t t_ns; /* since start */
	uint32_t len;
	int32_t res;
	uint16_t tag;
	uint8_t kind;
};

struct bench_trace {
	struct ring *ring;
	uint64_t start_ns;
	uint64_t prep_write_bytes; /* zeros written into new segments */
	uint64_t prep_syncs;	   /* fsyncs of new segments and their directory */
	uint64_t commit_writes;
	uint64_t last_commit_ns;
	uint64_t commit_gap_max_ns; /* longest time without a commit completing */
	struct bench_trace_event *events;
	uint32_t event_count;
	uint32_t event_capacity;
};

/* Start observing ring; timeline_capacity > 0 also records that many
 * events at most. Returns 0 or -ENOMEM. */
int bench_trace_start(struct bench_trace *trace, struct ring *ring, uint32_t timeline_capacity)
	__attribute__((warn_unused_result));
/* Stop observing; if path is not NULL, write the timeline there as CSV
 * (t_us,tag,kind,len,res). */
void bench_trace_stop(struct bench_trace *trace, const char *path);

#endif /* BENCH_TRACE_H */
