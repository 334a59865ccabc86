/*
 * bench_spool.c - durable append throughput and ack latency of the spool,
 * against the device and against file-per-message, on one filesystem.
 *
 * For each record size (default 1 KiB, 5 KiB, 100 KiB) a fresh spool is
 * opened under the bench directory and brought to its steady state (one
 * message and one outcome appended so both logs have an active segment,
 * the ready-segment pool filled, no preparation in flight). Two load modes
 * run on it, each in `rounds` rounds, so that the baselines run right next
 * to the spool and a noisy virtual disk shifts both alike:
 *  - backlog growth (first, on the fresh spool): messages only, no
 *    outcomes, so no segment is ever reclaimed and every new segment is
 *    written full of zeros first;
 *  - delivering (the headline): each acknowledged message also gets a
 *    DELIVERED outcome, as a server does once it delivered it; segments are
 *    reclaimed and recycled without zeroing. Before measuring, a warm-up
 *    runs this load until ready_segments + 2 message segments have been
 *    recycled, so the measured window runs on recycled segments.
 * A round is:
 *  1. ringmail: `concurrency` clients in a closed loop (bench_spool_load.h)
 *     for duration/rounds; records/s (counted at the message's ack),
 *     payload and disk MB/s (10^6 bytes), ack latency, commits, average
 *     commit size, segments created and recycled, the zeros written to
 *     prepare new ones, journal commits, io-wq threads, CPU per record.
 *     Then one client alone (light load) for latency without queueing.
 *  2. device (bench_baseline.h): the bytes the spool wrote in this round
 *     (message plus journal commits), in batches of the message log's
 *     average commit size rounded up to 4096, as a QD1 loop of O_DIRECT
 *     pwritev2(RWF_DSYNC) on a pre-zeroed file.
 *  3. delivering rounds only (shared by both modes): the device's
 *     single-commit latency (4 KiB RWF_DSYNC, QD1), its latency for one
 *     record alone (record size aligned up to 4096, RWF_DSYNC, QD1) and
 *     file per message, Postfix style, one writer.
 *  4. delivering rounds only, after the round's baselines: the paced run,
 *     an open loop (bench_paced_run in bench_spool_load.h): Poisson
 *     arrivals at paced_fraction (default 0.5) x this round's device QD1
 *     rate (its MB/s x 10^6 / record size, records/s), for the round's
 *     duration (its count with --smoke), each message getting a DELIVERED
 *     outcome; latency from each message's scheduled arrival to its ack.
 *     This is how an SMTP server is loaded (clients arrive whether or not
 *     earlier ones were answered): ack latency at a stated fraction of the
 *     device's capacity, where the closed loop of `concurrency` clients
 *     measures latency at saturation, bounded below by Little's law
 *     (docs/BENCHMARKS.md section 1.5, finding 4).
 * After the rounds, for information: the device loop at QD = commit_slots
 * through the ring, into unwritten (fallocated only) extents, and file per
 * message with `fpm_threads` writers at once.
 *
 * Targets (the issue): disk MB/s >= 0.9 x the device loop; records/s >=
 * 20 x file-per-message at 5 KiB; p99 ack latency <= 3 x the device's
 * single-commit latency; reported for the delivering mode, with the
 * backlog mode's under "backlog". The p99 target is also reported for
 * the paced run (paced_p99_ack_le_3x_device_commit: every size's paced
 * p99 <= 3 x the 4 KiB commit p50), with its ratio to the one-record
 * commit beside it. The last stdout line is one JSON object.
 *
 * Parameters: --smoke (a few hundred records, tiny segments: the
 * bench-smoke test; it fails if a paced run issued nothing, lost a record
 * or has a 0/NaN quantile), --quick (1.5 s of spool load per size), or
 * the real defaults (12 s); each can be overridden by RINGMAIL_BENCH_*
 * variables or options (usage()); --paced-fraction 0 skips the paced
 * run. The seed is fixed (it also seeds the paced arrivals); the workload
 * hash printed fingerprints the generated bodies. The run refuses tmpfs and stops if
 * the disk gets nearly full.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_baseline.h"
#include "bench_spool_load.h"
#include "bench_util.h"
#include "engine/eng_common.h"
#include "ring/ring.h"
#include "spool/spool.h"

#ifndef BENCH_LIBURING_VERSION
#define BENCH_LIBURING_VERSION "unknown"
#endif

#define BENCH_SIZES_MAX 8u
#define BENCH_ROUNDS_MAX 16u
#define BENCH_BODY_POOL 64u
#define BENCH_LATENCY_CAPACITY (32ull * 1024ull * 1024ull)
#define BENCH_DEVICE_COMMIT_SIZE 4096u
#define BENCH_TARGET_DEVICE_RATIO 0.9
#define BENCH_TARGET_FPM_RATIO 20.0
#define BENCH_TARGET_FPM_SIZE 5120u
#define BENCH_TARGET_P99_FACTOR 3.0
#define BENCH_READY_TIMEOUT_S 120.0
#define BENCH_UNWRITTEN_BYTES_MAX (256u << 20)
#define BENCH_PACED_FRACTION 0.5
#define BENCH_PACED_FRACTION_MAX 16.0
#define BENCH_PACED_SLOTS 65536u

struct bench_params {
	const char *mode;
	uint32_t sizes[BENCH_SIZES_MAX];
	uint32_t size_count;
	double duration_s;
	uint64_t count;
	uint32_t rounds;
	uint32_t concurrency;
	uint32_t commit_slots;
	uint64_t segment_size;
	uint32_t ready_segments;
	uint32_t light_count;
	uint32_t device_commit_count;
	uint32_t fpm_threads;
	double fpm_duration_s;
	uint64_t fpm_count_max;
	double paced_fraction; /* of the device's QD1 rate; 0: no paced run */
	uint64_t seed;
	bool ring_baseline;
	bool warm;
	bool unwritten_baseline;
	char dir[PATH_MAX];
	char trace_prefix[PATH_MAX];
};

/* One load mode's results: delivering (the headline) or backlog. */
struct bench_mode_result {
	struct bench_load_result load;
	struct bench_load_result light;
	struct bench_write_result device;
	uint64_t warm_records; /* delivering: records appended to reach recycling */
	double ratio_vs_device;
	double ratio_vs_device_ring;
	double ratio_vs_fpm;
	double ratio_vs_fpm_parallel;
	double p99_vs_device_commit;
	double p99_vs_device_batch;
	double ack_floor_us; /* Little's law: concurrency x record / device rate */
	double light_p99_vs_device_commit;
	double round_ratio[BENCH_ROUNDS_MAX];
	double round_ratio_median;
	double round_device_mb_per_s[BENCH_ROUNDS_MAX]; /* each round's device loop */
};

/* The open-loop (paced) runs of the delivering rounds, one per round. */
struct bench_paced_summary {
	struct bench_paced_result result; /* rounds summed; quantiles over all */
	uint32_t rounds;
	double fraction;
	double round_rate[BENCH_ROUNDS_MAX]; /* arrivals/s asked of each round */
	double rate_per_s;		      /* their mean */
	double p99_vs_device_commit;	      /* / the 4 KiB commit p50 */
	double p99_vs_record_commit;	      /* / the one-record commit p50 */
	double issue_lag_p50_us;	      /* the generator's own lateness */
	double issue_lag_p99_us;
};

struct bench_size_result {
	uint32_t record_size;
	uint64_t workload_hash;
	struct bench_mode_result deliver;
	struct bench_mode_result backlog;
	struct bench_write_result device_ring;
	struct bench_write_result device_commit;
	struct bench_write_result device_record_commit; /* one record, aligned up to 4096 */
	struct bench_write_result device_unwritten;
	struct bench_paced_summary paced;
	struct bench_fpm_result fpm;
	struct bench_fpm_result fpm_parallel;
};

struct bench_context {
	struct bench_params params;
	struct bench_machine machine;
	struct ring_caps caps;
	char run_dir[PATH_MAX];
	struct bench_size_result results[BENCH_SIZES_MAX];
	uint32_t result_count;
};

static void
usage(FILE *out)
{
	fprintf(out,
		"usage: bench_spool [--smoke|--quick] [--sizes N,N,..] [--duration S] [--count N]\n"
		"                   [--rounds N] [--concurrency N] [--commit-slots N]\n"
		"                   [--segment-mib N] [--ready-segments N] [--fpm-duration S]\n"
		"                   [--fpm-threads N] [--light-count N] [--paced-fraction F]\n"
		"                   [--seed N] [--dir PATH]\n"
		"                   [--no-ring-baseline] [--no-unwritten-baseline] [--no-warm]\n"
		"environment: RINGMAIL_BENCH_DIR, RINGMAIL_BENCH_SIZES,\n"
		"  RINGMAIL_BENCH_DURATION_S,"
		" RINGMAIL_BENCH_COUNT, RINGMAIL_BENCH_ROUNDS, RINGMAIL_BENCH_CONCURRENCY,\n"
		"  RINGMAIL_BENCH_COMMIT_SLOTS, RINGMAIL_BENCH_SEGMENT_MIB,\n"
		"  RINGMAIL_BENCH_READY_SEGMENTS, RINGMAIL_BENCH_FPM_DURATION_S,\n"
		"  RINGMAIL_BENCH_FPM_THREADS, RINGMAIL_BENCH_LIGHT_COUNT, RINGMAIL_BENCH_SEED,\n"
		"  RINGMAIL_BENCH_PACED_FRACTION,\n"
		"  RINGMAIL_BENCH_TRACE (a prefix: writes PREFIX-SIZE-MODE-rROUND.csv, a timeline\n"
		"  of completions)\n"
		"--paced-fraction F: each delivering round also runs an open loop, Poisson\n"
		"arrivals at F x the round's device QD1 rate in records/s (default 0.5; 0: off),\n"
		"latency from each message's scheduled arrival to its ack.\n"
		"--no-warm skips the warm-up append to both logs (no longer needed: the spool\n"
		"no longer prepares segments for a never-written log); any run stops when less\n"
		"than 4 GiB is free.\n"
		"The spool directory must be on a disk filesystem (ext4, xfs), not tmpfs.\n");
}

static void
bench_sizes_parse(struct bench_params *p, const char *text)
{
	char buf[256];
	ENG_ASSERT(text != NULL);
	snprintf(buf, sizeof(buf), "%s", text);
	p->size_count = 0;
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
		if (p->size_count == BENCH_SIZES_MAX) {
			fprintf(stderr, "bench_spool: at most %u sizes\n", BENCH_SIZES_MAX);
			exit(64);
		}
		uint64_t size = bench_parse_u64("--sizes", tok);
		if (size < 256 || size > (64u << 20)) {
			fprintf(stderr, "bench_spool: size %s out of 256..64M\n", tok);
			exit(64);
		}
		p->sizes[p->size_count++] = (uint32_t)size;
	}
	ENG_ASSERT(p->size_count <= BENCH_SIZES_MAX);
}

/* The three parameter sets: smoke (bench-smoke test), quick, real. */
static void
bench_params_defaults(struct bench_params *p, const char *mode)
{
	memset(p, 0, sizeof(*p));
	p->mode = mode;
	bench_sizes_parse(p, "1024,5120,102400");
	p->concurrency = 256;
	p->commit_slots = 4;
	p->segment_size = 64ull << 20;
	p->ready_segments = 2;
	p->device_commit_count = 200;
	p->fpm_threads = 16;
	p->paced_fraction = BENCH_PACED_FRACTION;
	p->seed = 0x72696e676d61696cull; /* "ringmail" */
	p->ring_baseline = true;
	p->warm = true;
	p->unwritten_baseline = true;
	p->count = BENCH_LATENCY_CAPACITY;
	p->rounds = 6;
	if (strcmp(mode, "smoke") == 0) {
		p->rounds = 2;
		p->count = 300;
		p->concurrency = 32;
		p->segment_size = 4ull << 20;
		p->light_count = 20;
		p->device_commit_count = 20;
		p->fpm_duration_s = 0.2;
		p->fpm_count_max = 20;
	} else if (strcmp(mode, "quick") == 0) {
		p->rounds = 3;
		p->duration_s = 1.5;
		p->light_count = 200;
		p->fpm_duration_s = 0.5;
		p->fpm_count_max = 100000;
	} else {
		p->duration_s = 12.0;
		p->light_count = 1000;
		p->fpm_duration_s = 3.0;
		p->fpm_count_max = 1000000;
	}
}

static void
bench_params_env(struct bench_params *p)
{
	const char *dir = getenv("RINGMAIL_BENCH_DIR");
	if (dir != NULL && dir[0] != '\0')
		snprintf(p->dir, sizeof(p->dir), "%s", dir);
	const char *trace = getenv("RINGMAIL_BENCH_TRACE");
	if (trace != NULL && trace[0] != '\0')
		snprintf(p->trace_prefix, sizeof(p->trace_prefix), "%s", trace);
	const char *sizes = getenv("RINGMAIL_BENCH_SIZES");
	if (sizes != NULL && sizes[0] != '\0')
		bench_sizes_parse(p, sizes);
	p->duration_s = bench_env_double("RINGMAIL_BENCH_DURATION_S", p->duration_s);
	p->count = bench_env_u64("RINGMAIL_BENCH_COUNT", p->count);
	p->rounds = (uint32_t)bench_env_u64("RINGMAIL_BENCH_ROUNDS", p->rounds);
	p->concurrency = (uint32_t)bench_env_u64("RINGMAIL_BENCH_CONCURRENCY", p->concurrency);
	p->commit_slots = (uint32_t)bench_env_u64("RINGMAIL_BENCH_COMMIT_SLOTS", p->commit_slots);
	p->segment_size =
		bench_env_u64("RINGMAIL_BENCH_SEGMENT_MIB", p->segment_size >> 20) << 20;
	p->ready_segments =
		(uint32_t)bench_env_u64("RINGMAIL_BENCH_READY_SEGMENTS", p->ready_segments);
	p->fpm_duration_s = bench_env_double("RINGMAIL_BENCH_FPM_DURATION_S", p->fpm_duration_s);
	p->light_count = (uint32_t)bench_env_u64("RINGMAIL_BENCH_LIGHT_COUNT", p->light_count);
	p->fpm_threads = (uint32_t)bench_env_u64("RINGMAIL_BENCH_FPM_THREADS", p->fpm_threads);
	p->paced_fraction = bench_env_double("RINGMAIL_BENCH_PACED_FRACTION", p->paced_fraction);
	p->seed = bench_env_u64("RINGMAIL_BENCH_SEED", p->seed);
}

/* One "--name value" option; returns false if name is not known. */
static bool
bench_params_option(struct bench_params *p, const char *name, const char *value)
{
	ENG_ASSERT(name != NULL && value != NULL);
	if (strcmp(name, "--sizes") == 0)
		bench_sizes_parse(p, value);
	else if (strcmp(name, "--duration") == 0)
		p->duration_s = bench_parse_double(name, value);
	else if (strcmp(name, "--count") == 0)
		p->count = bench_parse_u64(name, value);
	else if (strcmp(name, "--rounds") == 0)
		p->rounds = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--concurrency") == 0)
		p->concurrency = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--commit-slots") == 0)
		p->commit_slots = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--segment-mib") == 0)
		p->segment_size = bench_parse_u64(name, value) << 20;
	else if (strcmp(name, "--ready-segments") == 0)
		p->ready_segments = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--fpm-duration") == 0)
		p->fpm_duration_s = bench_parse_double(name, value);
	else if (strcmp(name, "--fpm-threads") == 0)
		p->fpm_threads = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--light-count") == 0)
		p->light_count = (uint32_t)bench_parse_u64(name, value);
	else if (strcmp(name, "--paced-fraction") == 0)
		p->paced_fraction = bench_parse_double(name, value);
	else if (strcmp(name, "--seed") == 0)
		p->seed = bench_parse_u64(name, value);
	else if (strcmp(name, "--dir") == 0)
		snprintf(p->dir, sizeof(p->dir), "%s", value);
	else
		return false;
	return true;
}

/* Default directory: $RINGMAIL_BUILD_DIR, else the build dir this binary
 * lives in (build/bench/..), else /var/tmp. Never /tmp (may be tmpfs). */
static void
bench_default_dir(char *out, size_t out_size)
{
	char exe[PATH_MAX];
	const char *build = getenv("RINGMAIL_BUILD_DIR");
	if (build != NULL && build[0] != '\0') {
		snprintf(out, out_size, "%s", build);
		return;
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			snprintf(out, out_size, "%s/..", exe);
			return;
		}
	}
	snprintf(out, out_size, "/var/tmp");
}

static void
bench_params_check(const struct bench_params *p)
{
	const char *why = NULL;
	if (p->concurrency == 0 || p->concurrency > 65536)
		why = "--concurrency must be 1..65536";
	else if (p->commit_slots == 0 || p->commit_slots > SPOOL_COMMIT_SLOTS_MAX)
		why = "--commit-slots must be 1..8";
	else if (p->segment_size < (4ull << 20) || p->segment_size > (2048ull << 20))
		why = "--segment-mib must be 4..2048";
	else if (p->count == 0 || p->count > BENCH_LATENCY_CAPACITY)
		why = "--count must be 1..33554432";
	else if (p->size_count == 0)
		why = "--sizes is empty";
	else if (p->fpm_threads > BENCH_FPM_THREADS_MAX)
		why = "--fpm-threads must be 0..64";
	else if (p->rounds == 0 || p->rounds > BENCH_ROUNDS_MAX)
		why = "--rounds must be 1..16";
	else if (p->duration_s == 0 && p->count < p->rounds)
		why = "--count must be at least --rounds";
	else if (!(p->paced_fraction >= 0 && p->paced_fraction <= BENCH_PACED_FRACTION_MAX))
		why = "--paced-fraction must be 0..16";
	if (why == NULL)
		return;
	fprintf(stderr, "bench_spool: %s\n", why);
	exit(64);
}

/* A flag without a value; returns false if arg is not one. */
static bool
bench_params_flag(struct bench_params *p, const char *arg)
{
	ENG_ASSERT(p != NULL);
	ENG_ASSERT(arg != NULL);
	if (strcmp(arg, "--smoke") == 0 || strcmp(arg, "--quick") == 0)
		return true; /* taken by the first pass */
	if (strcmp(arg, "--no-ring-baseline") == 0)
		p->ring_baseline = false;
	else if (strcmp(arg, "--no-unwritten-baseline") == 0)
		p->unwritten_baseline = false;
	else if (strcmp(arg, "--no-warm") == 0)
		p->warm = false;
	else
		return false;
	return true;
}

static void
bench_params_parse(struct bench_params *p, int argc, char **argv)
{
	const char *mode = "full";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--smoke") == 0)
			mode = "smoke";
		else if (strcmp(argv[i], "--quick") == 0)
			mode = "quick";
	}
	bench_params_defaults(p, mode);
	bench_params_env(p);
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (bench_params_flag(p, arg))
			continue;
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (i + 1 >= argc || !bench_params_option(p, arg, argv[i + 1])) {
			usage(stderr);
			exit(64);
		}
		i++;
	}
	if (p->dir[0] == '\0')
		bench_default_dir(p->dir, sizeof(p->dir));
	bench_params_check(p);
}

/* ---- set-up of one size ---- */

/* Everything one record size needs; opened before the clock, closed after. */
struct bench_size_state {
	const struct bench_params *p;
	struct bench_size_result *r;
	struct bench_bodies bodies;
	char dir[PATH_MAX];
	char spool_dir[PATH_MAX + 16];
	char fpm_dir[PATH_MAX + 16];
	char trace_path[PATH_MAX + 32];
	struct ring *ring;
	struct spool *sp;
	struct bench_device dev;
	bool dev_open;
	struct bench_samples load_lat;
	struct bench_samples light_lat;
	struct bench_samples device_lat;
	struct bench_samples commit_lat;
	struct bench_samples record_commit_lat;
	struct bench_samples paced_lat;
	struct bench_samples paced_lag;
	struct bench_samples fpm_lat;
	uint64_t fpm_next_id;
};

static struct spool *
bench_spool_open(const struct bench_params *p, struct ring *ring, const char *dir,
		 uint32_t record_size, char *err, size_t err_size)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = dir;
	cfg.segment_size = p->segment_size;
	cfg.journal_segment_size = ENG_MIN(cfg.journal_segment_size, p->segment_size);
	cfg.commit_slots = p->commit_slots;
	cfg.ready_segments = p->ready_segments;
	cfg.recipients_max = 1;
	/* Small bodies keep the registered commit buffers small (RLIMIT_MEMLOCK
	 * when not root); it changes no commit size. */
	cfg.message_size_max = ENG_MAX(record_size, 1u << 20);
	if (strcmp(p->mode, "smoke") == 0)
		cfg.free_space_reserve = 0;
	return spool_open(ring, &cfg, NULL, NULL, NULL, err, err_size);
}

static struct ring *
bench_ring_create(char *err, size_t err_size)
{
	struct ring_params rp = { .sq_entries = 256, .cq_entries = 4096 };
	return ring_create(&rp, err, err_size);
}

/* The largest commit the spool can write: the device buffer's size. */
static uint32_t
bench_commit_size_max(uint32_t record_size)
{
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	uint64_t size = (uint64_t)cfg.commit_size_max + record_size + 2u * (SPOOL_BLOCK_SIZE + 64u);
	return (uint32_t)ENG_ALIGN_UP(size, (uint64_t)SPOOL_BLOCK_SIZE);
}

static int
bench_state_samples(struct bench_size_state *st)
{
	const struct bench_params *p = st->p;
	int ret = bench_samples_init(&st->load_lat, p->count);
	if (ret == 0)
		ret = bench_samples_init(&st->light_lat, ENG_MAX(p->light_count, 1u));
	if (ret == 0)
		ret = bench_samples_init(&st->device_lat, p->count);
	if (ret == 0)
		ret = bench_samples_init(&st->commit_lat, ENG_MAX(p->device_commit_count, 1u));
	if (ret == 0)
		ret = bench_samples_init(&st->record_commit_lat,
					 ENG_MAX(p->device_commit_count, 1u));
	if (ret == 0)
		ret = bench_samples_init(&st->paced_lat, p->paced_fraction > 0 ? p->count : 1u);
	if (ret == 0)
		ret = bench_samples_init(&st->paced_lag, p->paced_fraction > 0 ? p->count : 1u);
	if (ret == 0)
		ret = bench_samples_init(&st->fpm_lat, p->fpm_count_max);
	return ret;
}

/* Spool open and in steady state, device file pre-zeroed, samples ready. */
static int
bench_state_open(struct bench_size_state *st, char *err, size_t err_size)
{
	const struct bench_params *p = st->p;
	if (bench_state_samples(st) < 0) {
		snprintf(err, err_size, "out of memory for latency samples");
		return -ENOMEM;
	}
	int ret = bench_dir_make(st->dir);
	if (ret == 0)
		ret = bench_dir_make(st->spool_dir);
	if (ret == 0)
		ret = bench_dir_make(st->fpm_dir);
	if (ret < 0) {
		snprintf(err, err_size, "cannot create %s: %s", st->dir, strerror(-ret));
		return ret;
	}
	st->ring = bench_ring_create(err, err_size);
	if (st->ring == NULL)
		return -EINVAL;
	st->sp = bench_spool_open(p, st->ring, st->spool_dir, st->bodies.record_size, err,
				  err_size);
	if (st->sp == NULL)
		return -EINVAL;
	if (p->warm && bench_spool_warm(st->sp, st->ring, &st->bodies, err, err_size) < 0)
		return -EIO;
	/* One segment is active, ready_segments stay prepared ahead. */
	/* Without the warm-up a log may never go idle (see docs/BENCHMARKS.md). */
	ret = bench_spool_wait_ready(st->sp, st->ring, st->spool_dir, 1u + p->ready_segments,
				     p->warm, BENCH_READY_TIMEOUT_S);
	if (ret < 0) {
		snprintf(err, err_size, "spool %s: segments not ready: %s", st->spool_dir,
			 strerror(-ret));
		return ret;
	}
	ret = bench_device_open(&st->dev, st->dir, p->segment_size,
				bench_commit_size_max(st->bodies.record_size), true, err, err_size);
	st->dev_open = ret == 0;
	return ret;
}

static void
bench_state_close(struct bench_size_state *st)
{
	spool_close(st->sp);
	ring_destroy(st->ring);
	if (st->dev_open)
		bench_device_close(&st->dev);
	bench_samples_free(&st->load_lat);
	bench_samples_free(&st->light_lat);
	bench_samples_free(&st->device_lat);
	bench_samples_free(&st->commit_lat);
	bench_samples_free(&st->record_commit_lat);
	bench_samples_free(&st->paced_lat);
	bench_samples_free(&st->paced_lag);
	bench_samples_free(&st->fpm_lat);
	bench_dir_remove(st->dir);
}

/* ---- one round: ringmail, then the baselines right after it ---- */

static uint32_t
bench_batch_size(double avg_commit_bytes)
{
	uint64_t batch =
		ENG_ALIGN_UP((uint64_t)(avg_commit_bytes + 0.5), (uint64_t)SPOOL_BLOCK_SIZE);
	return (uint32_t)ENG_MAX(batch, (uint64_t)SPOOL_BLOCK_SIZE);
}

static int
bench_round_spool(struct bench_size_state *st, struct bench_mode_result *m, bool deliver,
		  uint32_t round, struct bench_load_result *part, char *err, size_t err_size)
{
	const struct bench_params *p = st->p;
	snprintf(st->trace_path, sizeof(st->trace_path), "%s-%u-%s-r%u.csv", p->trace_prefix,
		 st->bodies.record_size, deliver ? "delivering" : "backlog", round);
	uint64_t left = st->load_lat.capacity - st->load_lat.count;
	struct bench_load_params lp = {
		.concurrency = p->concurrency,
		.duration_s = p->duration_s / p->rounds,
		.count_max = p->duration_s > 0 ? left : ENG_MAX(p->count / p->rounds, 1u),
		.trace_path = p->trace_prefix[0] != '\0' ? st->trace_path : NULL,
		.dir = st->spool_dir,
		.deliver = deliver,
	};
	int ret = lp.count_max > 0 ? bench_load_run(st->sp, st->ring, &st->bodies, &lp,
						    &st->load_lat, part, err, err_size)
				   : -ENOBUFS;
	if (ret < 0)
		return ret;
	bench_load_result_add(&m->load, part);
	uint32_t light_count = p->light_count / p->rounds;
	if (light_count == 0)
		return 0;
	struct bench_load_params light = { .concurrency = 1, .count_max = light_count,
					   .dir = st->spool_dir, .deliver = deliver };
	struct bench_load_result light_part;
	ret = bench_load_run(st->sp, st->ring, &st->bodies, &light, &st->light_lat, &light_part,
			     err, err_size);
	if (ret == 0)
		bench_load_result_add(&m->light, &light_part);
	return ret;
}

/* The device loop over the bytes the spool wrote in this round (message
 * and journal commits) in batches of the message log's average commit
 * size; with shared, also the device's single-commit latency (4 KiB, and
 * one record aligned up to 4096) and file per message (measured once, in
 * the delivering rounds). */
static int
bench_round_baselines(struct bench_size_state *st, struct bench_mode_result *m,
		      const struct bench_load_result *part, uint32_t round, bool shared, char *err,
		      size_t err_size)
{
	const struct bench_params *p = st->p;
	struct bench_size_result *r = st->r;
	struct bench_write_result w;
	int ret = bench_device_run(&st->dev, bench_batch_size(part->avg_commit_bytes),
				   part->commit_bytes + part->journal_commit_bytes,
				   &st->device_lat, &w, err, err_size);
	if (ret < 0)
		return ret;
	bench_write_result_add(&m->device, &w);
	m->round_ratio[round] = part->total_disk_mb_per_s / w.mb_per_s;
	m->round_device_mb_per_s[round] = w.mb_per_s;
	if (!shared)
		return 0;
	uint32_t commits = ENG_MAX(p->device_commit_count / p->rounds, 1u);
	ret = bench_device_run(&st->dev, SPOOL_BLOCK_SIZE, (uint64_t)commits * SPOOL_BLOCK_SIZE,
			       &st->commit_lat, &w, err, err_size);
	if (ret < 0)
		return ret;
	bench_write_result_add(&r->device_commit, &w);
	/* What one record alone costs the device: the floor of an ack when
	 * nothing else is in flight. */
	uint32_t record_batch =
		(uint32_t)ENG_ALIGN_UP((uint64_t)st->bodies.record_size, (uint64_t)SPOOL_BLOCK_SIZE);
	ret = bench_device_run(&st->dev, record_batch, (uint64_t)commits * record_batch,
			       &st->record_commit_lat, &w, err, err_size);
	if (ret < 0)
		return ret;
	bench_write_result_add(&r->device_record_commit, &w);
	struct bench_fpm_result f;
	ret = bench_fpm_run(st->fpm_dir, st->bodies.data, st->bodies.record_size, st->fpm_next_id,
			    ENG_MAX(p->fpm_count_max / p->rounds, 1u),
			    p->fpm_duration_s / p->rounds, &st->fpm_lat, &f, err, err_size);
	if (ret == 0)
		bench_fpm_result_add(&r->fpm, &f);
	st->fpm_next_id += f.messages;
	return ret;
}

/* The open loop of a delivering round, right after its baselines: Poisson
 * arrivals at paced_fraction x this round's device QD1 rate, in records/s,
 * for the round's share of the duration (or of the count). */
static int
bench_round_paced(struct bench_size_state *st, const struct bench_mode_result *m,
		  uint32_t round, char *err, size_t err_size)
{
	const struct bench_params *p = st->p;
	struct bench_paced_summary *s = &st->r->paced;
	ENG_ASSERT(round < BENCH_ROUNDS_MAX);
	ENG_ASSERT(p->paced_fraction > 0);
	double rate = p->paced_fraction * m->round_device_mb_per_s[round] * 1e6 /
		      (double)st->bodies.record_size;
	uint64_t left = st->paced_lat.capacity - st->paced_lat.count;
	struct bench_paced_params pp = {
		.rate_per_s = rate,
		.duration_s = p->duration_s / p->rounds,
		.count_max = p->duration_s > 0 ? left
					       : ENG_MIN(left, ENG_MAX(p->count / p->rounds, 1u)),
		.slots = BENCH_PACED_SLOTS,
		.seed = p->seed + 0x9e3779b97f4a7c15ull * (round + 1u),
		.dir = st->spool_dir,
		.lag_samples = &st->paced_lag,
	};
	if (!(rate > 0 && isfinite(rate)) || pp.count_max == 0) {
		snprintf(err, err_size, "paced load: no arrival rate (device %.1f MB/s) or no "
			 "room for samples", m->round_device_mb_per_s[round]);
		return -EINVAL;
	}
	struct bench_paced_result part;
	int ret = bench_paced_run(st->sp, st->ring, &st->bodies, &pp, &st->paced_lat, &part, err,
				  err_size);
	if (ret < 0)
		return ret;
	bench_paced_result_add(&s->result, &part);
	s->round_rate[round] = rate;
	s->rounds++;
	return 0;
}

/* Delivering warm-up: run the delivering load until (ready_segments + 2)
 * message segments have been recycled, so the measured window writes
 * recycled segments only (none prepared by zeroing). */
static int
bench_deliver_warm(struct bench_size_state *st, struct bench_mode_result *m, char *err,
		   size_t err_size)
{
	const struct bench_params *p = st->p;
	uint64_t target = spool_message_stats(st->sp)->segments_recycled + p->ready_segments + 2u;
	uint64_t deadline_ns = bench_now_ns() + (uint64_t)(BENCH_READY_TIMEOUT_S * 1e9);
	struct bench_samples scratch;
	if (bench_samples_init(&scratch, 1u << 20) < 0) {
		snprintf(err, err_size, "out of memory for warm-up samples");
		return -ENOMEM;
	}
	int ret = 0;
	while (ret == 0 && spool_message_stats(st->sp)->segments_recycled < target) {
		if (bench_now_ns() > deadline_ns) {
			snprintf(err, err_size, "delivering warm-up: %llu of %llu segments recycled "
				 "after %.0f s",
				 (unsigned long long)(spool_message_stats(st->sp)->segments_recycled +
						      p->ready_segments + 2u - target),
				 (unsigned long long)(p->ready_segments + 2u), BENCH_READY_TIMEOUT_S);
			ret = -ETIMEDOUT;
			break;
		}
		scratch.count = 0;
		struct bench_load_params lp = {
			.concurrency = p->concurrency,
			.duration_s = 0.5,
			.count_max = scratch.capacity,
			.dir = st->spool_dir,
			.deliver = true,
			.stop_recycled = target,
		};
		struct bench_load_result part;
		ret = bench_load_run(st->sp, st->ring, &st->bodies, &lp, &scratch, &part, err,
				     err_size);
		if (ret == 0)
			m->warm_records += part.records;
	}
	bench_samples_free(&scratch);
	return ret;
}

/* ---- after the rounds: what-if device variants (informational) ---- */

static int
bench_device_variants(struct bench_size_state *st, char *err, size_t err_size)
{
	const struct bench_params *p = st->p;
	struct bench_size_result *r = st->r;
	const struct bench_load_result *l = &r->deliver.load;
	uint32_t batch = bench_batch_size(l->avg_commit_bytes);
	uint64_t bytes = (l->commit_bytes + l->journal_commit_bytes) / p->rounds;
	struct bench_samples scratch;
	if (bench_samples_init(&scratch, bytes / batch + 2) < 0)
		return -ENOMEM;
	int ret = 0;
	if (p->ring_baseline) {
		struct ring *ring = bench_ring_create(err, err_size);
		if (ring == NULL)
			ret = -EINVAL;
		else
			ret = bench_device_run_ring(&st->dev, ring, batch, bytes, p->commit_slots,
						    &scratch, &r->device_ring, err, err_size);
		ring_destroy(ring);
	}
	bytes = ENG_MIN(bytes, (uint64_t)BENCH_UNWRITTEN_BYTES_MAX);
	bytes = ENG_MAX(ENG_ALIGN_DOWN(bytes, (uint64_t)batch), (uint64_t)batch);
	struct bench_device fresh;
	if (ret == 0 && p->unwritten_baseline)
		ret = bench_device_open(&fresh, st->fpm_dir, bytes, batch, false, err, err_size);
	if (ret == 0 && p->unwritten_baseline) {
		scratch.count = 0;
		ret = bench_device_run(&fresh, batch, bytes, &scratch, &r->device_unwritten, err,
				       err_size);
		r->device_unwritten.write_p50_us = bench_samples_quantile_us(&scratch, 0.50);
		bench_device_close(&fresh);
	}
	bench_samples_free(&scratch);
	if (ret == 0 && p->fpm_threads > 0)
		ret = bench_fpm_run_parallel(st->fpm_dir, st->bodies.data, st->bodies.record_size,
					     p->fpm_threads, p->fpm_duration_s / 2,
					     &r->fpm_parallel, err, err_size);
	return ret;
}

/* ---- one size ---- */

static int
bench_double_compare(const void *a, const void *b)
{
	double x = *(const double *)a;
	double y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Median of the per-round ratios: robust to one round the disk slowed. */
static double
bench_median(const double *values, uint32_t count)
{
	double sorted[BENCH_ROUNDS_MAX];
	ENG_ASSERT(count >= 1 && count <= BENCH_ROUNDS_MAX);
	ENG_ASSERT(values != NULL);
	memcpy(sorted, values, count * sizeof(*values));
	qsort(sorted, count, sizeof(*sorted), bench_double_compare);
	if (count % 2 == 1)
		return sorted[count / 2];
	return (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0;
}

static void
bench_samples_reset(struct bench_samples *samples)
{
	samples->count = 0;
	samples->dropped = 0;
	samples->sorted = false;
}

/* Take one mode's quantiles, then empty the samples for the next mode. */
static void
bench_mode_quantiles(struct bench_size_state *st, struct bench_mode_result *m)
{
	m->load.p50_us = bench_samples_quantile_us(&st->load_lat, 0.50);
	m->load.p99_us = bench_samples_quantile_us(&st->load_lat, 0.99);
	m->load.p999_us = bench_samples_quantile_us(&st->load_lat, 0.999);
	m->load.max_us = bench_samples_quantile_us(&st->load_lat, 1.0);
	m->light.p50_us = bench_samples_quantile_us(&st->light_lat, 0.50);
	m->light.p99_us = bench_samples_quantile_us(&st->light_lat, 0.99);
	m->device.write_p50_us = bench_samples_quantile_us(&st->device_lat, 0.50);
	m->device.write_p99_us = bench_samples_quantile_us(&st->device_lat, 0.99);
	bench_samples_reset(&st->load_lat);
	bench_samples_reset(&st->light_lat);
	bench_samples_reset(&st->device_lat);
}

static void
bench_mode_ratios(struct bench_size_state *st, struct bench_mode_result *m)
{
	const struct bench_size_result *r = st->r;
	ENG_ASSERT(m->device.mb_per_s > 0);
	ENG_ASSERT(r->device_commit.write_p50_us > 0);
	m->ratio_vs_device = m->load.total_disk_mb_per_s / m->device.mb_per_s;
	m->round_ratio_median = bench_median(m->round_ratio, st->p->rounds);
	m->ratio_vs_device_ring = r->device_ring.mb_per_s > 0
					  ? m->load.total_disk_mb_per_s / r->device_ring.mb_per_s
					  : 0;
	m->ratio_vs_fpm = r->fpm.per_s > 0 ? m->load.records_per_s / r->fpm.per_s : 0;
	m->ratio_vs_fpm_parallel =
		r->fpm_parallel.per_s > 0 ? m->load.records_per_s / r->fpm_parallel.per_s : 0;
	m->p99_vs_device_commit = m->load.p99_us / r->device_commit.write_p50_us;
	m->p99_vs_device_batch = m->load.p99_us / m->device.write_p50_us;
	m->light_p99_vs_device_commit = m->light.p99_us / r->device_commit.write_p50_us;
	/* A closed loop keeps `concurrency` records waiting; at the device's
	 * QD1 rate the mean wait cannot be shorter than this. */
	m->ack_floor_us = (double)st->p->concurrency * (double)r->record_size /
			  (m->device.mb_per_s * 1e6) * 1e6;
}

/* The paced runs' quantiles, mean rate and ratios to the device commits. */
static void
bench_paced_finish(struct bench_size_state *st)
{
	struct bench_size_result *r = st->r;
	struct bench_paced_summary *s = &r->paced;
	struct bench_load_result *l = &s->result.load;
	s->fraction = st->p->paced_fraction;
	if (s->rounds == 0)
		return;
	ENG_ASSERT(s->rounds <= BENCH_ROUNDS_MAX);
	double rate_sum = 0;
	for (uint32_t i = 0; i < s->rounds; i++)
		rate_sum += s->round_rate[i];
	s->rate_per_s = rate_sum / s->rounds;
	l->p50_us = bench_samples_quantile_us(&st->paced_lat, 0.50);
	l->p99_us = bench_samples_quantile_us(&st->paced_lat, 0.99);
	l->p999_us = bench_samples_quantile_us(&st->paced_lat, 0.999);
	l->max_us = bench_samples_quantile_us(&st->paced_lat, 1.0);
	s->issue_lag_p50_us = bench_samples_quantile_us(&st->paced_lag, 0.50);
	s->issue_lag_p99_us = bench_samples_quantile_us(&st->paced_lag, 0.99);
	ENG_ASSERT(r->device_commit.write_p50_us > 0);
	ENG_ASSERT(r->device_record_commit.write_p50_us > 0);
	s->p99_vs_device_commit = l->p99_us / r->device_commit.write_p50_us;
	s->p99_vs_record_commit = l->p99_us / r->device_record_commit.write_p50_us;
}

/* A paced run that issued nothing, lost a record (issued but never
 * acknowledged, or acknowledged without its outcome) or left a quantile 0
 * or NaN measured nothing: fail the run (the smoke test relies on it). */
static int
bench_paced_check(const struct bench_size_state *st, char *err, size_t err_size)
{
	const struct bench_paced_summary *s = &st->r->paced;
	const struct bench_load_result *l = &s->result.load;
	if (st->p->paced_fraction == 0)
		return 0;
	const char *why = NULL;
	if (s->rounds != st->p->rounds)
		why = "did not run in every delivering round";
	else if (s->result.issued == 0)
		why = "issued no record";
	else if (s->result.issued != l->records || l->outcomes != l->records)
		why = "lost records (issued != acknowledged)";
	else if (st->paced_lat.count != l->records || st->paced_lat.dropped != 0 ||
		 st->paced_lag.count != s->result.issued)
		why = "lost latency samples";
	else if (!(l->p50_us > 0 && l->p99_us > 0 && l->p999_us > 0 && l->max_us > 0) ||
		 !(s->p99_vs_device_commit > 0 && s->p99_vs_record_commit > 0))
		why = "a quantile is 0 or NaN";
	if (why == NULL)
		return 0;
	snprintf(err, err_size, "paced run: %s (%llu issued, %llu acknowledged, %llu outcomes)",
		 why, (unsigned long long)s->result.issued, (unsigned long long)l->records,
		 (unsigned long long)l->outcomes);
	return -EPROTO;
}

static void
bench_finish(struct bench_size_state *st)
{
	struct bench_size_result *r = st->r;
	r->device_commit.write_p50_us = bench_samples_quantile_us(&st->commit_lat, 0.50);
	r->device_commit.write_p99_us = bench_samples_quantile_us(&st->commit_lat, 0.99);
	r->device_record_commit.write_p50_us =
		bench_samples_quantile_us(&st->record_commit_lat, 0.50);
	r->device_record_commit.write_p99_us =
		bench_samples_quantile_us(&st->record_commit_lat, 0.99);
	bench_paced_finish(st);
	r->fpm.p50_us = bench_samples_quantile_us(&st->fpm_lat, 0.50);
	r->fpm.p99_us = bench_samples_quantile_us(&st->fpm_lat, 0.99);
	bench_mode_ratios(st, &r->deliver);
	bench_mode_ratios(st, &r->backlog);
}

static void
bench_state_init(struct bench_context *ctx, struct bench_size_state *st,
		 struct bench_size_result *r, uint32_t size)
{
	memset(st, 0, sizeof(*st));
	memset(r, 0, sizeof(*r));
	st->p = &ctx->params;
	st->r = r;
	snprintf(st->dir, sizeof(st->dir), "%s/size-%u", ctx->run_dir, size);
	snprintf(st->spool_dir, sizeof(st->spool_dir), "%s/spool", st->dir);
	snprintf(st->fpm_dir, sizeof(st->fpm_dir), "%s/fpm", st->dir);
}

/* All rounds of one mode: the spool slice, then the device loop over the
 * same bytes right after it; when delivering, then the paced run. */
static int
bench_mode_run(struct bench_size_state *st, struct bench_mode_result *m, bool deliver,
	       char *err, size_t err_size)
{
	int ret = 0;
	for (uint32_t round = 0; ret == 0 && round < st->p->rounds; round++) {
		struct bench_load_result part;
		ret = bench_round_spool(st, m, deliver, round, &part, err, err_size);
		if (ret == 0)
			ret = bench_round_baselines(st, m, &part, round, deliver, err, err_size);
		if (ret == 0 && deliver && st->p->paced_fraction > 0)
			ret = bench_round_paced(st, m, round, err, err_size);
	}
	if (ret == 0)
		bench_mode_quantiles(st, m);
	return ret;
}

/* Backlog first, on the fresh spool (every new segment zeroed); then
 * delivering on the same spool, after a warm-up that recycles segments
 * (the backlog's segments stay live: a queue of undelivered mail). */
static int
bench_size_run(struct bench_context *ctx, uint32_t size, struct bench_size_result *r, char *err,
	       size_t err_size)
{
	struct bench_size_state st;
	bench_state_init(ctx, &st, r, size);
	int ret = bench_bodies_make(&st.bodies, ctx->params.seed, size, BENCH_BODY_POOL);
	if (ret < 0) {
		snprintf(err, err_size, "cannot make bodies for %u-byte records", size);
		return ret;
	}
	r->record_size = st.bodies.record_size;
	r->workload_hash = st.bodies.hash;
	ret = bench_state_open(&st, err, err_size);
	if (ret == 0)
		ret = bench_mode_run(&st, &r->backlog, false, err, err_size);
	if (ret == 0)
		ret = bench_deliver_warm(&st, &r->deliver, err, err_size);
	if (ret == 0)
		ret = bench_mode_run(&st, &r->deliver, true, err, err_size);
	if (ret == 0)
		ret = bench_device_variants(&st, err, err_size);
	if (ret == 0) {
		bench_finish(&st);
		ret = bench_paced_check(&st, err, err_size);
	}
	bench_state_close(&st);
	bench_bodies_free(&st.bodies);
	return ret;
}

/* ---- report ---- */

static bool
bench_target_p99_met(const struct bench_mode_result *m)
{
	return m->p99_vs_device_commit <= BENCH_TARGET_P99_FACTOR;
}

static void
bench_print_spool(const char *label, const struct bench_size_result *r,
		  const struct bench_mode_result *m, uint32_t rounds)
{
	const struct bench_load_result *l = &m->load;
	printf("size %u B, %s: ringmail %.0f records/s, %.1f MB/s payload, %.1f MB/s to disk "
	       "(%.1f MB/s with the journal), ack p50 %.0f us p99 %.0f us p99.9 %.0f us max "
	       "%.0f us\n",
	       r->record_size, label, l->records_per_s, l->payload_mb_per_s, l->disk_mb_per_s,
	       l->total_disk_mb_per_s, l->p50_us, l->p99_us, l->p999_us, l->max_us);
	printf("  %llu records in %.2f s (%u rounds), %llu commits, avg commit %.0f B "
	       "(%.1f records), %llu segments created, %llu recycled (+%llu journal created), "
	       "%llu outcomes in %llu journal commits (%.1f MB), io-wq threads max %u, "
	       "%.2f us CPU/record, %.2f enters/commit\n",
	       (unsigned long long)l->records, l->seconds, rounds, (unsigned long long)l->commits,
	       l->avg_commit_bytes, l->records_per_commit, (unsigned long long)l->segments_created,
	       (unsigned long long)l->segments_recycled,
	       (unsigned long long)l->journal_segments_created, (unsigned long long)l->outcomes,
	       (unsigned long long)l->journal_commits, (double)l->journal_commit_bytes / 1e6,
	       l->iou_wrk_max, l->cpu_us_per_record, l->enters_per_commit);
	if (m->warm_records > 0)
		printf("  warm-up: %llu records until ready_segments + 2 message segments were "
		       "recycled\n",
		       (unsigned long long)m->warm_records);
	printf("  meanwhile: %.1f MB of zeros written into new segments, %llu prepare fsyncs, "
	       "longest gap between commit completions %.1f ms, other device writes %.1f MB\n",
	       (double)l->prep_zero_bytes / 1e6, (unsigned long long)l->prep_syncs,
	       l->commit_gap_max_us / 1e3, l->other_disk_mb);
	printf("  light load (1 client): ack p50 %.0f us p99 %.0f us (%.1fx device commit); "
	       "meanwhile %.1f MB of zeros written into new segments, %llu preparation syncs, "
	       "longest gap between commit completions %.1f ms\n",
	       m->light.p50_us, m->light.p99_us, m->light_p99_vs_device_commit,
	       (double)m->light.prep_zero_bytes / 1e6, (unsigned long long)m->light.prep_syncs,
	       m->light.commit_gap_max_us / 1e3);
	printf("  device QD1 %u B RWF_DSYNC over the same bytes: %.1f MB/s (write p50 %.0f us "
	       "p99 %.0f us, other device writes %.1f MB) -> ratio_vs_device %.2f%s; median of "
	       "rounds %.2f:",
	       m->device.batch_size, m->device.mb_per_s, m->device.write_p50_us,
	       m->device.write_p99_us, m->device.other_disk_mb, m->ratio_vs_device,
	       m->ratio_vs_device >= BENCH_TARGET_DEVICE_RATIO ? "" : " (target 0.9 MISSED)",
	       m->round_ratio_median);
	for (uint32_t i = 0; i < rounds; i++)
		printf(" %.2f", m->round_ratio[i]);
	printf("\n  p99 ack / device commit %.1fx%s (/ device write of the same batch %.1fx; "
	       "mean ack floor at the device's rate %.0f us); records/s / file per message "
	       "%.1f (%.1f vs parallel)\n",
	       m->p99_vs_device_commit, bench_target_p99_met(m) ? "" : " (target 3x MISSED)",
	       m->p99_vs_device_batch, m->ack_floor_us, m->ratio_vs_fpm,
	       m->ratio_vs_fpm_parallel);
}

static void
bench_print_baselines(const struct bench_size_result *r, uint32_t fpm_threads)
{
	if (r->device_ring.writes > 0)
		printf("  device QD%u via the ring (delivering bytes): %.1f MB/s -> ratio %.2f\n",
		       r->device_ring.queue_depth, r->device_ring.mb_per_s,
		       r->deliver.ratio_vs_device_ring);
	if (r->device_unwritten.writes > 0)
		printf("  device QD1 into unwritten (fallocated, never written) extents: %.1f MB/s "
		       "(write p50 %.0f us)\n",
		       r->device_unwritten.mb_per_s, r->device_unwritten.write_p50_us);
	printf("  device single commit (4096 B RWF_DSYNC, QD1): p50 %.0f us p99 %.0f us\n",
	       r->device_commit.write_p50_us, r->device_commit.write_p99_us);
	printf("  device single commit of one record (%u B RWF_DSYNC, QD1): p50 %.0f us "
	       "p99 %.0f us\n",
	       r->device_record_commit.batch_size, r->device_record_commit.write_p50_us,
	       r->device_record_commit.write_p99_us);
	printf("  file per message (create, write, fsync, close, rename): %.0f msgs/s "
	       "(p50 %.0f us, %llu msgs)\n",
	       r->fpm.per_s, r->fpm.p50_us, (unsigned long long)r->fpm.messages);
	if (r->fpm_parallel.messages > 0)
		printf("  file per message, %u writers at once: %.0f msgs/s\n", fpm_threads,
		       r->fpm_parallel.per_s);
	fflush(stdout);
}

static void
bench_print_paced(const struct bench_size_result *r)
{
	const struct bench_paced_summary *s = &r->paced;
	const struct bench_load_result *l = &s->result.load;
	if (s->rounds == 0)
		return;
	printf("size %u B, paced (open loop, delivering): Poisson arrivals at %.2f x device QD1 = "
	       "%.0f records/s: %llu records (%.0f/s, %.1f per commit), ack from the scheduled "
	       "arrival p50 %.0f us p99 %.0f us p99.9 %.0f us max %.0f us; p99 / device commit "
	       "%.1fx%s, / one-record commit %.1fx; %llu backlogged, %u slots busy at most, "
	       "issue lag (generator) p50 %.0f us p99 %.0f us max %.0f us\n",
	       r->record_size, s->fraction, s->rate_per_s, (unsigned long long)l->records,
	       l->records_per_s, l->records_per_commit, l->p50_us, l->p99_us, l->p999_us,
	       l->max_us, s->p99_vs_device_commit,
	       s->p99_vs_device_commit <= BENCH_TARGET_P99_FACTOR ? "" : " (target 3x MISSED)",
	       s->p99_vs_record_commit, (unsigned long long)s->result.backlogged,
	       s->result.slots_busy_max, s->issue_lag_p50_us, s->issue_lag_p99_us,
	       s->result.issue_lag_max_us);
	/* At a low rate the longest gap may just be a lull between arrivals. */
	printf("  paced meanwhile: %llu message segments recycled, %llu journal segments "
	       "created, %.1f MB of zeros written into new segments, longest gap between commit "
	       "completions %.1f ms (idle time included), other device writes %.1f MB\n",
	       (unsigned long long)l->segments_recycled,
	       (unsigned long long)l->journal_segments_created, (double)l->prep_zero_bytes / 1e6,
	       l->commit_gap_max_us / 1e3, l->other_disk_mb);
	fflush(stdout);
}

/* One mode's fields (no braces). */
static void
bench_json_mode(const struct bench_size_result *r, const struct bench_mode_result *m,
		const char *mode, uint32_t rounds)
{
	const struct bench_load_result *l = &m->load;
	printf("\"mode\":\"%s\",\"records\":%llu,\"records_per_s\":%.1f,"
	       "\"mb_per_s\":%.2f,\"disk_mb_per_s\":%.2f,\"total_disk_mb_per_s\":%.2f,"
	       "\"p50_ack_us\":%.1f,\"p99_ack_us\":%.1f,\"p999_ack_us\":%.1f,\"max_ack_us\":%.1f,",
	       mode, (unsigned long long)l->records, l->records_per_s, l->payload_mb_per_s,
	       l->disk_mb_per_s, l->total_disk_mb_per_s, l->p50_us, l->p99_us, l->p999_us,
	       l->max_us);
	printf("\"device_mb_per_s\":%.2f,\"device_batch_bytes\":%u,\"device_write_p50_us\":%.1f,"
	       "\"ratio_vs_device\":%.3f,\"round_ratio_vs_device_median\":%.3f,"
	       "\"round_ratios_vs_device\":[",
	       m->device.mb_per_s, m->device.batch_size, m->device.write_p50_us,
	       m->ratio_vs_device, m->round_ratio_median);
	for (uint32_t i = 0; i < rounds; i++)
		printf("%s%.3f", i ? "," : "", m->round_ratio[i]);
	printf("],\"ratio_vs_device_qd\":%.3f,\"ratio_vs_file_per_message\":%.1f,"
	       "\"ratio_vs_file_per_message_parallel\":%.1f,\"p99_vs_device_commit\":%.2f,"
	       "\"p99_vs_device_batch_write\":%.2f,\"ack_floor_us\":%.1f,\"light_p50_ack_us\":%.1f,"
	       "\"light_p99_ack_us\":%.1f,\"light_p99_vs_device_commit\":%.2f,"
	       "\"light_prep_zero_mb\":%.1f,\"light_commit_gap_max_us\":%.0f,",
	       m->ratio_vs_device_ring, m->ratio_vs_fpm, m->ratio_vs_fpm_parallel,
	       m->p99_vs_device_commit, m->p99_vs_device_batch, m->ack_floor_us, m->light.p50_us,
	       m->light.p99_us, m->light_p99_vs_device_commit, (double)m->light.prep_zero_bytes / 1e6,
	       m->light.commit_gap_max_us);
	printf("\"commits\":%llu,\"avg_commit_bytes\":%.0f,\"records_per_commit\":%.2f,"
	       "\"commit_bytes\":%llu,\"outcomes\":%llu,\"journal_commits\":%llu,"
	       "\"journal_commit_bytes\":%llu,\"warm_records\":%llu,"
	       "\"segments_created\":%llu,\"segments_recycled\":%llu,"
	       "\"journal_segments_created\":%llu,"
	       "\"iou_wrk_threads_max\":%u,\"cpu_us_per_record\":%.2f,"
	       "\"prep_zero_mb\":%.1f,\"prep_syncs\":%llu,\"commit_gap_max_us\":%.0f,"
	       "\"other_disk_mb\":%.1f,\"device_other_disk_mb\":%.1f",
	       (unsigned long long)l->commits, l->avg_commit_bytes, l->records_per_commit,
	       (unsigned long long)l->commit_bytes, (unsigned long long)l->outcomes,
	       (unsigned long long)l->journal_commits, (unsigned long long)l->journal_commit_bytes,
	       (unsigned long long)m->warm_records, (unsigned long long)l->segments_created,
	       (unsigned long long)l->segments_recycled,
	       (unsigned long long)l->journal_segments_created, l->iou_wrk_max,
	       l->cpu_us_per_record, (double)l->prep_zero_bytes / 1e6,
	       (unsigned long long)l->prep_syncs, l->commit_gap_max_us, l->other_disk_mb,
	       m->device.other_disk_mb);
	(void)r;
}

/* The one-record commit and the paced run's fields (no braces; null when
 * the paced run is off). */
static void
bench_json_paced(const struct bench_size_result *r)
{
	const struct bench_paced_summary *s = &r->paced;
	const struct bench_load_result *l = &s->result.load;
	printf("\"device_record_commit_bytes\":%u,\"device_record_commit_p50_us\":%.1f,"
	       "\"device_record_commit_p99_us\":%.1f,\"paced_fraction\":%.3f,",
	       r->device_record_commit.batch_size, r->device_record_commit.write_p50_us,
	       r->device_record_commit.write_p99_us, s->fraction);
	if (s->rounds == 0) {
		printf("\"paced_rate_per_s\":null,\"paced_records\":null,"
		       "\"paced_backlogged\":null,\"paced_p50_ack_us\":null,"
		       "\"paced_p99_ack_us\":null,\"paced_p999_ack_us\":null,"
		       "\"paced_max_ack_us\":null,\"paced_p99_vs_device_commit\":null,"
		       "\"paced_p99_vs_record_commit\":null,");
		return;
	}
	printf("\"paced_rate_per_s\":%.1f,\"paced_records\":%llu,\"paced_records_per_s\":%.1f,"
	       "\"paced_records_per_commit\":%.2f,\"paced_backlogged\":%llu,"
	       "\"paced_slots_busy_max\":%u,\"paced_issue_lag_p50_us\":%.1f,"
	       "\"paced_issue_lag_p99_us\":%.1f,\"paced_issue_lag_max_us\":%.1f,",
	       s->rate_per_s, (unsigned long long)l->records, l->records_per_s,
	       l->records_per_commit, (unsigned long long)s->result.backlogged,
	       s->result.slots_busy_max, s->issue_lag_p50_us, s->issue_lag_p99_us,
	       s->result.issue_lag_max_us);
	printf("\"paced_segments_recycled\":%llu,\"paced_journal_segments_created\":%llu,"
	       "\"paced_prep_zero_mb\":%.1f,\"paced_commit_gap_max_us\":%.0f,"
	       "\"paced_other_disk_mb\":%.1f,",
	       (unsigned long long)l->segments_recycled,
	       (unsigned long long)l->journal_segments_created, (double)l->prep_zero_bytes / 1e6,
	       l->commit_gap_max_us, l->other_disk_mb);
	printf("\"paced_p50_ack_us\":%.1f,\"paced_p99_ack_us\":%.1f,\"paced_p999_ack_us\":%.1f,"
	       "\"paced_max_ack_us\":%.1f,\"paced_p99_vs_device_commit\":%.2f,"
	       "\"paced_p99_vs_record_commit\":%.2f,",
	       l->p50_us, l->p99_us, l->p999_us, l->max_us, s->p99_vs_device_commit,
	       s->p99_vs_record_commit);
}

static void
bench_json_size(const struct bench_size_result *r, uint32_t rounds, bool last)
{
	printf("\"%u\":{\"record_size\":%u,", r->record_size, r->record_size);
	bench_json_mode(r, &r->deliver, "delivering", rounds);
	printf(",\"device_qd_mb_per_s\":%.2f,\"device_qd\":%u,\"device_unwritten_mb_per_s\":%.2f,"
	       "\"file_per_message_per_s\":%.1f,\"file_per_message_parallel_per_s\":%.1f,"
	       "\"device_commit_p50_us\":%.1f,",
	       r->device_ring.mb_per_s, r->device_ring.queue_depth, r->device_unwritten.mb_per_s,
	       r->fpm.per_s, r->fpm_parallel.per_s, r->device_commit.write_p50_us);
	bench_json_paced(r);
	printf("\"workload_hash\":\"%016llx\",\"backlog\":{",
	       (unsigned long long)r->workload_hash);
	bench_json_mode(r, &r->backlog, "backlog", rounds);
	printf("}}%s", last ? "" : ",");
}

static const char *
bench_json_bool(bool value)
{
	return value ? "true" : "false";
}

/* Which of the issue's targets one mode met (null when not measured). */
static void
bench_json_targets_mode(const struct bench_context *ctx, bool deliver)
{
	bool device = true, p99 = true, light = true;
	const struct bench_mode_result *five = NULL;
	for (uint32_t i = 0; i < ctx->result_count; i++) {
		const struct bench_size_result *r = &ctx->results[i];
		const struct bench_mode_result *m = deliver ? &r->deliver : &r->backlog;
		device = device && m->ratio_vs_device >= BENCH_TARGET_DEVICE_RATIO;
		p99 = p99 && bench_target_p99_met(m);
		light = light && m->light_p99_vs_device_commit <= BENCH_TARGET_P99_FACTOR;
		if (ctx->params.sizes[i] == BENCH_TARGET_FPM_SIZE)
			five = m;
	}
	printf("\"ratio_vs_device_ge_0_9\":%s,", bench_json_bool(device));
	if (five != NULL)
		printf("\"ratio_vs_file_per_message_5k_ge_20\":%s,",
		       bench_json_bool(five->ratio_vs_fpm >= BENCH_TARGET_FPM_RATIO));
	else
		printf("\"ratio_vs_file_per_message_5k_ge_20\":null,");
	printf("\"p99_ack_le_3x_device_commit\":%s,\"light_p99_ack_le_3x_device_commit\":%s",
	       bench_json_bool(p99), bench_json_bool(light));
	if (!deliver)
		return;
	/* The open loop runs in the delivering rounds only. */
	bool paced = ctx->params.paced_fraction > 0;
	for (uint32_t i = 0; paced && i < ctx->result_count; i++)
		paced = ctx->results[i].paced.p99_vs_device_commit <= BENCH_TARGET_P99_FACTOR;
	printf(",\"paced_p99_ack_le_3x_device_commit\":%s",
	       ctx->params.paced_fraction > 0 ? bench_json_bool(paced) : "null");
}

/* Headline: the delivering mode; the backlog mode nested. */
static void
bench_json_targets(const struct bench_context *ctx)
{
	printf("\"targets\":{\"mode\":\"delivering\",");
	bench_json_targets_mode(ctx, true);
	printf(",\"backlog\":{");
	bench_json_targets_mode(ctx, false);
	printf("}}");
}

static const char *
bench_ring_mode(const struct ring_caps *caps)
{
	if (caps->defer_taskrun)
		return caps->single_issuer ? "single_issuer|defer_taskrun" : "defer_taskrun";
	return caps->coop_taskrun ? "coop_taskrun" : "plain";
}

static void
bench_json(const struct bench_context *ctx)
{
	const struct bench_params *p = &ctx->params;
	const struct bench_machine *m = &ctx->machine;
	printf("{\"bench\":\"spool\",\"mode\":\"%s\",\"quick\":%s,\"kernel\":\"%s\","
	       "\"cpu\":\"%s\",\"nproc\":%ld,\"loadavg_at_start\":%.2f,\"fs\":\"%s\","
	       "\"liburing\":\"%s\",",
	       p->mode, bench_json_bool(strcmp(p->mode, "quick") == 0), bench_json_safe(m->kernel),
	       bench_json_safe(m->cpu), m->nproc, m->loadavg1, bench_json_safe(m->fs),
	       BENCH_LIBURING_VERSION);
	printf("\"ring_flags\":\"%s\",\"concurrency\":%u,\"commit_slots\":%u,"
	       "\"segment_mib\":%llu,\"ready_segments\":%u,\"duration_s\":%.2f,\"rounds\":%u,"
	       "\"fpm_threads\":%u,\"warm\":%s,\"seed\":%llu,",
	       bench_ring_mode(&ctx->caps), p->concurrency, p->commit_slots,
	       (unsigned long long)(p->segment_size >> 20), p->ready_segments, p->duration_s,
	       p->rounds, p->fpm_threads, bench_json_bool(p->warm), (unsigned long long)p->seed);
	bench_json_targets(ctx);
	printf(",\"sizes\":{");
	for (uint32_t i = 0; i < ctx->result_count; i++)
		bench_json_size(&ctx->results[i], p->rounds, i + 1 == ctx->result_count);
	printf("}}\n");
	fflush(stdout);
}

/* ---- main ---- */

static int
bench_setup(struct bench_context *ctx, char *err, size_t err_size)
{
	const struct bench_params *p = &ctx->params;
	if (bench_dir_make(p->dir) < 0 || bench_dir_is_volatile(p->dir)) {
		snprintf(err, err_size,
			 "bench directory %s is missing or on tmpfs/ramfs; set "
			 "RINGMAIL_BENCH_DIR to a folder on a disk filesystem (ext4, xfs)",
			 p->dir);
		return -EINVAL;
	}
	uint32_t stale = bench_dir_remove_stale(p->dir, "bench_spool");
	if (stale > 0)
		fprintf(stderr, "bench_spool: removed %u folder(s) left by killed runs\n", stale);
	int ret = bench_dir_make_fresh(p->dir, "bench_spool", ctx->run_dir, sizeof(ctx->run_dir));
	if (ret < 0) {
		snprintf(err, err_size, "cannot create a folder in %s: %s", p->dir, strerror(-ret));
		return ret;
	}
	bench_machine_get(ctx->run_dir, &ctx->machine);
	ret = ring_probe(&ctx->caps, err, err_size);
	if (ret < 0)
		bench_dir_remove(ctx->run_dir);
	return ret;
}

static void
bench_print_header(const struct bench_context *ctx)
{
	const struct bench_params *p = &ctx->params;
	const struct bench_machine *m = &ctx->machine;
	printf("bench_spool (%s): kernel %s, %ld x %s, %s, liburing %s, load average %.2f\n",
	       p->mode, m->kernel, m->nproc, m->cpu, m->fs, BENCH_LIBURING_VERSION, m->loadavg1);
	printf("  dir %s, concurrency %u, commit_slots %u, segment %llu MiB, ready %u, "
	       "%s per size, seed %llu\n",
	       ctx->run_dir, p->concurrency, p->commit_slots,
	       (unsigned long long)(p->segment_size >> 20), p->ready_segments,
	       p->duration_s > 0 ? "duration" : "count", (unsigned long long)p->seed);
	fflush(stdout);
}

int
main(int argc, char **argv)
{
	static struct bench_context ctx;
	char err[512] = "";
	bench_params_parse(&ctx.params, argc, argv);
	if (bench_setup(&ctx, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_spool: %s\n", err);
		return 1;
	}
	bench_print_header(&ctx);
	int status = 0;
	for (uint32_t i = 0; i < ctx.params.size_count && status == 0; i++) {
		struct bench_size_result *r = &ctx.results[i];
		if (bench_size_run(&ctx, ctx.params.sizes[i], r, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench_spool: %u-byte records: %s\n", ctx.params.sizes[i],
				err);
			status = 1;
			break;
		}
		ctx.result_count++;
		bench_print_spool("delivering (steady state: each message gets a DELIVERED "
				  "outcome, segments recycled)", r, &r->deliver, ctx.params.rounds);
		bench_print_spool("backlog growth (no outcomes: every new segment is written "
				  "full of zeros first)", r, &r->backlog, ctx.params.rounds);
		bench_print_baselines(r, ctx.params.fpm_threads);
		bench_print_paced(r);
	}
	bench_dir_remove(ctx.run_dir);
	if (status == 0)
		bench_json(&ctx);
	return status;
}
