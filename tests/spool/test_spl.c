/*
 * test_spl.c - SPL-01..SPL-06, SPL-08, SPL-10 of reliability.md 8.4: faults
 * injected at the completion (CQE) layer of ring/, and crashes simulated
 * after every submission of a seeded workload, with the un-flushed writes
 * dropped, reordered or torn (the model is in spl_sim.h).
 *
 * Every check is the same ledger check (spl_check.c): each acknowledged
 * message is handed back byte-identical unless a final outcome for it was
 * acknowledged (then it must NOT come back: no re-delivery), deferrals
 * keep their time, recovery twice gives the same state, no segment is
 * left without a live recipient.
 *
 * Criterion suites: spl_sweep and spl_sweep_sync (crash sweeps), spl (the
 * rest); meson runs them as three tests side by side (docs/RELIABILITY.md
 * section 2 has the figures and how each case was shown to fail).
 *
 * Replay: RINGMAIL_SPL_SEED=<n> (default 1; "random" for a fresh one),
 * RINGMAIL_SPL_MESSAGES=<n> (every test's workload; defaults per test,
 * sweeps halved under ASan), RINGMAIL_SPL_ONLY=<N> runs one crash point of
 * a sweep, RINGMAIL_SPL_FULL=1 runs the full recovery at every point,
 * (a deferral regression always fails: spl_sim.h),
 * RINGMAIL_SPL_TMP=<dir> moves the scratch spool (default /dev/shm).
 * Failures print the seed and crash point.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "spl_sim.h"
#include "tests/lib/test_util.h"

#define SPL_ARENA_SIZE (512ull << 20)

/* Under AddressSanitizer every fork copies a much larger address space:
 * the default workloads are halved to keep the ASan suite within budget
 * (RINGMAIL_SPL_MESSAGES still sets the exact size). */
#if defined(__SANITIZE_ADDRESS__)
#define SPL_DEFAULT_DIVISOR 2u
#else
#define SPL_DEFAULT_DIVISOR 1u
#endif
#define SPL_SWEEP_MESSAGES(n) ((n) / SPL_DEFAULT_DIVISOR)

struct spl_ctx {
	uint64_t seed;
	uint32_t messages;
	uint64_t only;
	bool fdatasync;
	uint32_t full_every; /* full recovery on every Nth crash point */
	char dir[PATH_MAX];
	char shadow[PATH_MAX];
	struct spl_arena *arena;
	/* Totals for the report line. */
	uint32_t crashes;
	uint32_t completed;
	uint64_t acked;
	uint64_t dropped;
	uint64_t kept;
	uint64_t torn;
	uint64_t resurrected;
};

static struct spl_ctx x;
static struct spl_expect expect;
static struct spl_got got, got2;

static uint64_t
spl_env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	if (v == NULL || *v == '\0')
		return dflt;
	if (strcmp(v, "random") == 0)
		return (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return strtoull(v, NULL, 0);
}

/* The crash model makes durability a property of the trace, not of the
 * disk: a memory filesystem with O_DIRECT (tmpfs, Linux >= 6.6) makes the
 * thousands of fsyncs cheap. Else the usual scratch directory. */
static void
spl_scratch(const char *name, char *out, size_t out_size)
{
	const char *base = getenv("RINGMAIL_SPL_TMP");
	char probe[PATH_MAX];
	snprintf(out, out_size, "%s/ringmail-%s-XXXXXX", base != NULL ? base : "/dev/shm", name);
	if (mkdtemp(out) != NULL) {
		snprintf(probe, sizeof(probe), "%s/probe", out);
		int fd = open(probe, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			unlink(probe);
			return;
		}
		rmdir(out);
	}
	test_scratch_dir(name, out, out_size);
}

static void
spl_setup(const char *name, bool fdatasync, uint32_t messages)
{
	memset(&x, 0, sizeof(x));
	x.seed = spl_env_u64("RINGMAIL_SPL_SEED", 1);
	x.messages = (uint32_t)spl_env_u64("RINGMAIL_SPL_MESSAGES", messages);
	if (x.messages > SPL_MSGS_MAX)
		x.messages = SPL_MSGS_MAX;
	x.only = spl_env_u64("RINGMAIL_SPL_ONLY", 0);
	x.fdatasync = fdatasync;
	x.full_every = getenv("RINGMAIL_SPL_FULL") != NULL ? 1u : 4u;
	spl_scratch(name, x.dir, sizeof(x.dir));
	snprintf(x.shadow, sizeof(x.shadow), "%s.shadow", x.dir);
	x.arena = spl_arena_create(SPL_ARENA_SIZE);
	cr_assert(x.arena != NULL);
	got.seed = got2.seed = x.seed;
	got.messages = got2.messages = x.messages;
	fprintf(stderr, "%s: seed %llu, %u messages (replay: RINGMAIL_SPL_SEED=%llu)\n", name,
		(unsigned long long)x.seed, x.messages, (unsigned long long)x.seed);
}

static void
spl_teardown(void)
{
	test_remove_tree(x.dir);
	test_remove_tree(x.shadow);
	spl_arena_destroy(x.arena);
}

static void
spl_fresh_dirs(void)
{
	test_remove_tree(x.dir);
	test_remove_tree(x.shadow);
	cr_assert_eq(mkdir(x.dir, 0700), 0, "%s: %s", x.dir, strerror(errno));
	cr_assert_eq(mkdir(x.shadow, 0700), 0);
}

/* Run the workload in a child that dies at the given point. Returns true
 * if it crashed there, false if it finished first. */
static bool
spl_run_child(uint64_t crash_after, uint32_t crash_delete, bool shadows)
{
	spl_fresh_dirs();
	spl_arena_reset(x.arena);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		static struct spl_sim sim;
		spl_sim_init(&sim, x.arena, x.dir, shadows ? x.shadow : NULL);
		sim.crash_after = crash_after;
		sim.crash_delete = crash_delete;
		spl_child_run(&sim, x.dir, x.seed, x.messages, x.fdatasync);
	}
	int status = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(x.arena->overflow == 0, "trace arena overflow");
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
		x.crashes++;
		return true;
	}
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "seed %llu: workload child failed (status 0x%x)", (unsigned long long)x.seed,
		  status);
	x.completed++;
	return false;
}

/* Build the crash image, recover twice, check everything. */
static void
spl_verify(const char *what, uint64_t point, enum spl_image_mode mode, uint64_t *rng)
{
	struct spl_image_stats is;
	struct spool_recovery_stats rs, rs2;
	char why[512];
	spl_image_build(x.arena, x.dir, x.shadow, mode, rng, &is);
	x.dropped += is.dropped;
	x.kept += is.kept;
	x.torn += is.torn;
	x.resurrected += is.resurrected;
	spl_expect_load(&expect, x.arena, x.messages);
	x.acked += expect.acked_count;
	/* The full recovery (spool_open: reclamation, accounting) on every
	 * full_every-th point, the read-only scan (same decoder and journal
	 * replay, nothing deleted) on the others: RINGMAIL_SPL_FULL=1 for all. */
	bool full = x.full_every <= 1 || point % x.full_every == 0 || x.only != 0;
	bool ok;
	if (full)
		ok = spl_recover(x.dir, x.fdatasync, &got, &rs, why, sizeof(why)) &&
		     spl_check(&expect, &got, why, sizeof(why)) &&
		     spl_check_no_leak(x.dir, &got, why, sizeof(why)) &&
		     spl_recover_readonly(x.dir, &got2, &rs2, why, sizeof(why)) &&
		     spl_got_equal(&got, &got2, why, sizeof(why));
	else
		ok = spl_recover_readonly(x.dir, &got, &rs, why, sizeof(why)) &&
		     spl_check(&expect, &got, why, sizeof(why));
	if (ok && mode == SPL_IMAGE_DROP && rs.corrupt_spans != 0) {
		snprintf(why, sizeof(why), "%llu corrupt spans after a crash that only lost "
			 "un-flushed writes", (unsigned long long)rs.corrupt_spans);
		ok = false;
	}
	cr_assert(ok, "%s: seed %llu crash point %llu (replay: RINGMAIL_SPL_SEED=%llu "
		  "RINGMAIL_SPL_ONLY=%llu): %s", what, (unsigned long long)x.seed,
		  (unsigned long long)point, (unsigned long long)x.seed,
		  (unsigned long long)point, why);
}

/* Crash after every submission N = 1.. until the workload completes. */
static void
spl_sweep(const char *what, enum spl_image_mode mode)
{
	uint64_t rng = x.seed * 7919u + 1u;
	spl_run_child(0, 0, false);
	uint64_t total = x.arena->subs;
	spl_verify(what, 0, mode, &rng);
	uint64_t first = x.only != 0 ? x.only : 1;
	uint64_t last = x.only != 0 ? x.only : total * 4u;
	uint64_t n = first;
	for (; n <= last; n++) {
		bool crashed = spl_run_child(n, 0, false);
		spl_verify(what, n, mode, &rng);
		if (!crashed)
			break;
	}
	fprintf(stderr, "%s: seed %llu, %llu submissions in a full run, %u crash points, "
		"%llu acks checked, %llu un-flushed writes dropped, %llu kept out of order, "
		"%llu torn, 0 lost, %u deferral regressions\n", what,
		(unsigned long long)x.seed, (unsigned long long)total, x.crashes,
		(unsigned long long)x.acked, (unsigned long long)x.dropped,
		(unsigned long long)x.kept, (unsigned long long)x.torn, spl_deferral_regressions);
	if (x.only == 0)
		cr_assert(x.crashes >= total / 2, "swept %u points, a full run takes %llu "
			  "(submissions vary with completion order)", x.crashes,
			  (unsigned long long)total);
}

Test(spl_sweep, spl01_crash_after_every_submission_loses_no_acknowledged_message, .timeout = 600)
{
	spl_setup("spl01", false, SPL_SWEEP_MESSAGES(60));
	spl_sweep("SPL-01", SPL_IMAGE_DROP);
	spl_teardown();
}

Test(spl_sweep_sync, spl01_fdatasync_mode_crash_after_every_submission, .timeout = 600)
{
	spl_setup("spl01s", true, SPL_SWEEP_MESSAGES(30));
	spl_sweep("SPL-01 (write + fdatasync)", SPL_IMAGE_DROP);
	spl_teardown();
}

Test(spl_sweep_sync, spl02_unflushed_writes_reordered_and_torn, .timeout = 600)
{
	spl_setup("spl02", true, SPL_SWEEP_MESSAGES(30));
	spl_sweep("SPL-02", SPL_IMAGE_REORDER_TEAR);
	cr_assert_gt(x.torn, 0);
	cr_assert_gt(x.kept, 0);
	spl_teardown();
}

/* SPL-08: crash at every reclamation directory sync, the unlink or
 * rename it should make durable undone (the segment comes back). */
Test(spl, spl08_crash_during_reclamation_resurrects_no_done_message, .timeout = 600)
{
	spl_setup("spl08", false, 200);
	x.full_every = 1;
	uint64_t rng = x.seed;
	uint32_t k = x.only != 0 ? (uint32_t)x.only : 1;
	bool crashed = true;
	for (; k < 10000 && crashed; k++) {
		/* Both message and journal reclamations undone, then only the
		 * message ones (the journal directory's renames persisted). */
		for (int variant = 0; variant < 2 && crashed; variant++) {
			spl_undo_journal_reclaim = variant == 0;
			crashed = spl_run_child(0, k, true);
			spl_verify(variant == 0 ? "SPL-08" : "SPL-08 (journal reclamation kept)", k,
				   SPL_IMAGE_DROP, &rng);
		}
		if (x.only != 0)
			break;
	}
	spl_undo_journal_reclaim = true;
	fprintf(stderr, "SPL-08: seed %llu, %u crashes at reclamation syncs, %llu segments "
		"resurrected, %llu acks checked, 0 lost, 0 re-delivered, %u deferral regressions "
		"\n", (unsigned long long)x.seed, x.crashes,
		(unsigned long long)x.resurrected, (unsigned long long)x.acked,
		spl_deferral_regressions);
	if (x.only == 0) {
		cr_assert_gt(x.crashes, 3, "too few reclamations to test");
		cr_assert_gt(x.resurrected, 0);
	}
	spl_teardown();
}

/* ---- faults in a live spool (SPL-03, SPL-04, SPL-05, SPL-06) ---- */

struct spl_live {
	struct ring *ring;
	struct spool *sp;
	struct spl_sim sim;
	struct spl_work work;
};

static struct spl_live live;

static void
spl_live_open(bool fdatasync)
{
	spl_fresh_dirs();
	spl_arena_reset(x.arena);
	live.ring = test_ring_create();
	cr_assert(live.ring != NULL);
	spl_sim_init(&live.sim, x.arena, x.dir, NULL);
	spl_sim_attach(&live.sim, live.ring);
	struct spool_config cfg = spl_config(x.dir, fdatasync);
	char err[512];
	live.sp = spool_open(live.ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
	cr_assert(live.sp != NULL, "%s", err);
	live.sim.fault.rng = x.seed | 1u;
}

static void
spl_live_close(void)
{
	spool_close(live.sp);
	ring_destroy(live.ring);
	live.sp = NULL;
	live.ring = NULL;
}

/* Position (event ordinal) of the first injected error, 0 if none. */
static uint64_t
spl_first_fault(void)
{
	uint64_t at = 0, pos = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(x.arena, &at)) != NULL) {
		pos++;
		if (ev->type == SPL_EV_FAULT && ev->res < 0 && ev->res != -EAGAIN &&
		    ev->res != -EINTR)
			return pos;
	}
	return 0;
}

static uint32_t
spl_acks_after(uint64_t from)
{
	uint64_t at = 0, pos = 0;
	uint32_t n = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(x.arena, &at)) != NULL) {
		pos++;
		if (pos > from && (ev->type == SPL_EV_ACK || ev->type == SPL_EV_OACK))
			n++;
	}
	return n;
}

/* Restart without faults: everything acknowledged is there, byte-identical. */
static void
spl_restart_check(const char *what)
{
	char why[512];
	struct spool_recovery_stats rs;
	spl_expect_load(&expect, x.arena, x.messages);
	bool ok = spl_recover(x.dir, false, &got, &rs, why, sizeof(why)) &&
		  spl_check(&expect, &got, why, sizeof(why));
	cr_assert(ok, "%s: seed %llu: after restart: %s", what, (unsigned long long)x.seed, why);
}

/* An error on a data write or a sync: no acknowledgement from then on,
 * the spool unhealthy for good, refusing new messages; restart keeps
 * everything acknowledged before. */
static void
spl_error_case(const char *what, bool fdatasync, uint16_t tag, int32_t error, bool persistent)
{
	spl_live_open(fdatasync);
	live.sim.fault.tag = tag;
	live.sim.fault.error = error;
	live.sim.fault.skip = 5 + (uint32_t)(x.seed % 7);
	live.sim.fault.persistent = persistent;
	live.sim.fault_on = true;
	spl_work_start(&live.work, &live.sim, live.sp, x.seed, x.messages, false);
	cr_assert(spl_work_run(&live.work, live.ring, 20000), "%s: workload never settled", what);
	uint64_t fault_at = spl_first_fault();
	cr_assert_neq(fault_at, 0, "%s: no fault injected", what);
	cr_assert_eq(spl_acks_after(fault_at), 0, "%s: seed %llu: acknowledged after the failure",
		     what, (unsigned long long)x.seed);
	cr_assert_gt(live.work.failures, 0, "%s: no append failed", what);
	cr_assert(!spool_is_healthy(live.sp), "%s: spool still healthy", what);
	/* Unhealthy for good, even once the disk behaves again. */
	live.sim.fault_on = false;
	struct spl_client *c = &live.work.clients[0];
	c->id = 0;
	cr_assert_eq(spool_write_message(live.sp, &c->op), -EIO, "%s: new message accepted", what);
	for (uint32_t i = 0; i < 20; i++)
		(void)ring_run_once(live.ring, 10ull * 1000ull * 1000ull);
	cr_assert(!spool_is_healthy(live.sp));
	fprintf(stderr, "%s: seed %llu, %u faults injected, %u acked before, %u failed, 0 acked "
		"after\n", what, (unsigned long long)x.seed, live.sim.fault.injected,
		live.work.acked, live.work.failures);
	spl_live_close();
	spl_restart_check(what);
}

Test(spl, spl03_eio_on_a_data_write_once_and_persistently, .timeout = 300)
{
	spl_setup("spl03w", false, 200);
	spl_error_case("SPL-03 EIO once on a RWF_DSYNC write", false, SPOOL_TAG_COMMIT_WRITE,
		       -EIO, false);
	spl_error_case("SPL-03 EIO always on a RWF_DSYNC write", false, SPOOL_TAG_COMMIT_WRITE,
		       -EIO, true);
	spl_error_case("SPL-03 EIO once on a write (fdatasync mode)", true,
		       SPOOL_TAG_COMMIT_WRITE, -EIO, false);
	spl_teardown();
}

Test(spl, spl03_eio_on_fdatasync_once_and_persistently_is_never_retried, .timeout = 300)
{
	spl_setup("spl03s", true, 200);
	spl_error_case("SPL-03 EIO once on fdatasync", true, SPOOL_TAG_COMMIT_SYNC, -EIO, false);
	spl_error_case("SPL-03 EIO always on fdatasync", true, SPOOL_TAG_COMMIT_SYNC, -EIO, true);
	spl_teardown();
}

Test(spl, spl04_enospc_on_a_commit_write_acks_nothing_after, .timeout = 300)
{
	spl_setup("spl04w", false, 200);
	spl_error_case("SPL-04 ENOSPC on a write", false, SPOOL_TAG_COMMIT_WRITE, -ENOSPC, false);
	spl_teardown();
}

/* Every append failure recorded in the trace has this result. */
static bool
spl_failures_all(int32_t res)
{
	uint64_t at = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(x.arena, &at)) != NULL) {
		if (ev->type == SPL_EV_FAIL && ev->res != res)
			return false;
	}
	return true;
}

/* Run, retrying the messages an append failure stopped (as an injecting
 * client does after a 452), until all are acknowledged or the deadline. */
static void
spl_run_resuming(uint64_t deadline_ns)
{
	for (uint32_t round = 0; round < 100000; round++) {
		bool idle = spl_work_run(&live.work, live.ring, 5);
		if ((idle && live.work.acked == x.messages) || eng_now_monotonic_ns() > deadline_ns)
			return;
		/* Let time pass (the spool retries a failed preparation after a
		 * delay): one loop turn that waits up to 20 ms. */
		(void)ring_run_once(live.ring, 20ull * 1000ull * 1000ull);
		spl_work_resume(&live.work);
	}
}

/* ENOSPC while a new segment is prepared: appends wait, or fail with
 * ENOSPC once no segment is left or coming (the spool may do either);
 * nothing unwritten is acknowledged, the spool stays healthy, and new
 * messages are acknowledged again by themselves once segments can be
 * prepared (after the spool's preparation retry delay). */
Test(spl, spl04_enospc_on_segment_preparation_waits_then_resumes, .timeout = 300)
{
	spl_setup("spl04p", false, 200);
	spl_live_open(false);
	live.sim.fault = (struct spl_fault){ .tag = SPOOL_TAG_PREPARE, .kind = RING_OP_WRITE,
					     .error = -ENOSPC, .persistent = true, .rng = x.seed };
	live.sim.fault_on = true;
	spl_work_start(&live.work, &live.sim, live.sp, x.seed, x.messages, false);
	(void)spl_work_run(&live.work, live.ring, 100);
	uint32_t stalled_at = live.work.acked;
	uint32_t failed = live.work.failures;
	cr_assert_gt(live.sim.fault.injected, 0);
	cr_assert_lt(stalled_at, x.messages, "every message acknowledged without new segments");
	cr_assert(spl_failures_all(-ENOSPC), "an append failed with something else than ENOSPC");
	cr_assert(spool_is_healthy(live.sp), "ENOSPC on preparation made the spool unhealthy");
	live.sim.fault_on = false;
	spl_run_resuming(eng_now_monotonic_ns() + 30ull * 1000000000ull);
	cr_assert(spool_is_healthy(live.sp));
	cr_assert(spl_failures_all(-ENOSPC));
	cr_assert_gt(live.work.acked, stalled_at, "never resumed");
	cr_assert_eq(live.work.acked, x.messages, "not every message acknowledged after the fault");
	fprintf(stderr, "SPL-04 ENOSPC on preparation: %u faults injected, stalled at %u acks "
		"(%u failed with ENOSPC), resumed to %u acks (%u failures retried in all)\n",
		live.sim.fault.injected, stalled_at, failed, live.work.acked, live.work.failures);
	spl_live_close();
	spl_restart_check("SPL-04 ENOSPC on preparation");
	spl_teardown();
}

/* Short writes (the rest really not written) and EAGAIN/EINTR (nothing
 * written): resubmitted, everything acknowledged and intact. */
Test(spl, spl05_short_writes_eagain_eintr_are_resubmitted, .timeout = 300)
{
	spl_setup("spl05", false, 200);
	for (int mode = 0; mode < 2; mode++) {
		spl_live_open(mode == 1);
		live.sim.fault.short_permille = 50;
		live.sim.fault.retry_permille = 50;
		live.sim.fault_on = true;
		spl_work_start(&live.work, &live.sim, live.sp, x.seed, x.messages, true);
		cr_assert(spl_work_run(&live.work, live.ring, 20000));
		cr_assert_eq(live.work.failures, 0, "seed %llu: an append failed",
			     (unsigned long long)x.seed);
		cr_assert_eq(live.work.acked, x.messages);
		cr_assert(spool_is_healthy(live.sp));
		uint64_t resubmits = spool_message_stats(live.sp)->resubmits +
				     spool_journal_stats(live.sp)->resubmits;
		cr_assert_gt(live.sim.fault.shorts, 0);
		cr_assert_gt(live.sim.fault.retries, 0);
		cr_assert_geq(resubmits, live.sim.fault.retries + live.sim.fault.shorts);
		fprintf(stderr, "SPL-05 (%s): seed %llu, %u short writes, %u EAGAIN/EINTR, %llu "
			"resubmits, %u acked\n", mode ? "fdatasync" : "RWF_DSYNC",
			(unsigned long long)x.seed, live.sim.fault.shorts, live.sim.fault.retries,
			(unsigned long long)resubmits,
			live.work.acked);
		spl_live_close();
		spl_restart_check("SPL-05");
	}
	spl_teardown();
}

/* A linked fsync cancelled after a failed write completes with
 * -ECANCELED: a failure like any other, never an acknowledgement. */
Test(spl, spl05_cancelled_sync_is_a_failure, .timeout = 300)
{
	spl_setup("spl05c", true, 200);
	spl_error_case("SPL-05 ECANCELED on fdatasync", true, SPOOL_TAG_COMMIT_SYNC, -ECANCELED,
		       false);
	spl_teardown();
}

/* A message record in the middle of a segment (neither its first nor its
 * last), chosen by the seed: its id, or UINT32_MAX. */
static uint32_t
spl_pick_middle(uint64_t *rng, struct spl_ev *out)
{
	static struct spl_ev acks[SPL_MSGS_MAX];
	uint32_t n = 0;
	uint64_t at = 0;
	const struct spl_ev *ev;
	while ((ev = spl_ev_next(x.arena, &at)) != NULL) {
		if (ev->type == SPL_EV_ACK && n < SPL_MSGS_MAX)
			acks[n++] = *ev;
	}
	uint32_t candidates[SPL_MSGS_MAX], count = 0;
	for (uint32_t i = 1; i + 1 < n; i++) {
		if (acks[i - 1].ino == acks[i].ino && acks[i + 1].ino == acks[i].ino)
			candidates[count++] = i;
	}
	if (count == 0)
		return UINT32_MAX;
	uint32_t pick = candidates[test_rand(rng) % count];
	*out = acks[pick];
	return (uint32_t)acks[pick].value;
}

static uint32_t
spl_count_files(const char *dir)
{
	DIR *d = opendir(dir);
	uint32_t n = 0;
	if (d == NULL)
		return 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* SPL-06: one bit flipped in a random middle record: that message is
 * quarantined (copied aside, counted, never handed back), its neighbours
 * in the segment and everything else come back intact. */
Test(spl, spl06_bit_flip_in_a_middle_record_is_quarantined, .timeout = 300)
{
	spl_setup("spl06", false, 200);
	uint64_t rng = x.seed * 31u + 7u;
	for (uint32_t round = 0; round < 5; round++) {
		spl_live_open(false);
		spl_work_start(&live.work, &live.sim, live.sp, x.seed + round, x.messages, false);
		cr_assert(spl_work_run(&live.work, live.ring, 20000));
		cr_assert_eq(live.work.acked, x.messages);
		spl_live_close();
		struct spl_ev rec;
		uint32_t victim = spl_pick_middle(&rng, &rec);
		cr_assert_neq(victim, UINT32_MAX, "no segment with three records");
		char dir[PATH_MAX], path[PATH_MAX];
		spool_shard_path(x.dir, 0, "msg", dir, sizeof(dir));
		spool_log_segment_path(dir, rec.ino, path, sizeof(path));
		uint64_t at = rec.offset + test_rand(&rng) % rec.len;
		uint8_t bit = (uint8_t)(1u << (test_rand(&rng) % 8));
		int fd = open(path, O_RDWR | O_CLOEXEC);
		cr_assert(fd >= 0, "%s", path);
		uint8_t byte;
		cr_assert_eq(pread(fd, &byte, 1, (off_t)at), 1);
		byte ^= bit;
		cr_assert_eq(pwrite(fd, &byte, 1, (off_t)at), 1);
		close(fd);
		char why[512];
		struct spool_recovery_stats rs;
		got.seed = x.seed + round;
		spl_expect_load(&expect, x.arena, x.messages);
		expect.acked[victim] = false;
		bool ok = spl_recover(x.dir, false, &got, &rs, why, sizeof(why)) &&
			  spl_check(&expect, &got, why, sizeof(why));
		cr_assert(ok, "SPL-06 seed %llu round %u: %s", (unsigned long long)x.seed, round, why);
		for (uint32_t r = 0; r < SPL_RCPTS_MAX; r++)
			cr_assert_eq(got.seen[victim][r], 0, "corrupt message %u handed back", victim);
		cr_assert_geq(rs.corrupt_spans, 1);
		spool_shard_path(x.dir, 0, "quarantine", dir, sizeof(dir));
		cr_assert_geq(spl_count_files(dir), 1, "nothing in quarantine/");
		fprintf(stderr, "SPL-06: seed %llu round %u: bit 0x%02x flipped at %llu in message %u "
			"(segment %016llx): %llu span quarantined, %u recipients intact\n",
			(unsigned long long)x.seed, round, bit, (unsigned long long)at, victim,
			(unsigned long long)rec.ino, (unsigned long long)rs.corrupt_spans, got.count);
	}
	got.seed = x.seed;
	spl_teardown();
}

/* ---- SPL-10: crashes during recovery ---- */

static struct spl_got got_ref;
static struct spl_expect expect_ref;

/* Recover in a child that dies at its Nth submission; true if it died. */
static bool
spl_recovery_child(uint64_t crash_after, uint64_t kill_after_us)
{
	spl_arena_reset(x.arena);
	fflush(NULL);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		static struct spl_sim sim;
		spl_sim_init(&sim, x.arena, x.dir, NULL);
		sim.crash_after = crash_after;
		struct ring *ring = test_ring_create();
		if (ring == NULL)
			_exit(20);
		spl_sim_attach(&sim, ring);
		struct spool_config cfg = spl_config(x.dir, x.fdatasync);
		char err[512];
		struct spool *sp = spool_open(ring, &cfg, NULL, NULL, NULL, err, sizeof(err));
		if (sp == NULL)
			_exit(21);
		for (uint32_t i = 0; i < 20; i++)
			(void)ring_run_once(ring, 5ull * 1000ull * 1000ull);
		spool_close(sp);
		_exit(0);
	}
	if (kill_after_us > 0) {
		/* A crash at a random moment, for the synchronous part of
		 * start-up (reclamation renames and unlinks): the delay is the
		 * fault, not a synchronisation. */
		usleep((useconds_t)kill_after_us);
		kill(pid, SIGKILL);
	}
	int status = 0;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
		return true;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "recovery child status 0x%x",
		  status);
	return false;
}

static void
spl_converged(uint64_t point, uint64_t k)
{
	char why[512];
	struct spool_recovery_stats rs;
	uint64_t rng = x.seed + k;
	struct spl_image_stats is;
	spl_image_build(x.arena, x.dir, NULL, SPL_IMAGE_DROP, &rng, &is);
	x.dropped += is.dropped;
	bool ok = spl_recover_readonly(x.dir, &got, &rs, why, sizeof(why)) &&
		  spl_got_equal(&got_ref, &got, why, sizeof(why));
	cr_assert(ok, "SPL-10 seed %llu workload crash %llu, recovery crash %llu: %s",
		  (unsigned long long)x.seed, (unsigned long long)point, (unsigned long long)k, why);
}

/* SPL-10: take the crash image of a workload, then crash its recovery
 * after every submission (its segment preparation, dropping what it had
 * not flushed) and at random moments; the state after each must be the
 * state before, and a final full recovery must pass every check. */
Test(spl, spl10_crashes_during_recovery_converge, .timeout = 600)
{
	spl_setup("spl10", false, SPL_SWEEP_MESSAGES(100));
	uint64_t rng = x.seed * 13u + 5u;
	spl_run_child(0, 0, false);
	uint64_t total = x.arena->subs;
	uint32_t recovery_crashes = 0;
	for (uint32_t round = 0; round < 3; round++) {
		uint64_t point = total / 4 + test_rand(&rng) % (total / 2);
		cr_assert(spl_run_child(point, 0, false));
		struct spl_image_stats is;
		spl_image_build(x.arena, x.dir, NULL, SPL_IMAGE_DROP, &rng, &is);
		spl_expect_load(&expect_ref, x.arena, x.messages);
		char why[512];
		struct spool_recovery_stats rs;
		got_ref.seed = x.seed;
		got_ref.messages = x.messages;
		cr_assert(spl_recover_readonly(x.dir, &got_ref, &rs, why, sizeof(why)), "%s", why);
		cr_assert(spl_check(&expect_ref, &got_ref, why, sizeof(why)), "%s", why);
		for (uint64_t k = 1; k < 10000; k++) {
			bool crashed = spl_recovery_child(k, 0);
			spl_converged(point, k);
			if (!crashed)
				break;
			recovery_crashes++;
		}
		for (uint32_t i = 0; i < 5; i++) {
			recovery_crashes += spl_recovery_child(0, 1000u + test_rand(&rng) % 30000u);
			spl_converged(point, 0);
		}
		bool ok = spl_recover(x.dir, false, &got, &rs, why, sizeof(why)) &&
			  spl_check(&expect_ref, &got, why, sizeof(why)) &&
			  spl_got_equal(&got_ref, &got, why, sizeof(why));
		cr_assert(ok, "SPL-10 seed %llu point %llu: final recovery: %s",
			  (unsigned long long)x.seed, (unsigned long long)point, why);
	}
	fprintf(stderr, "SPL-10: seed %llu, 3 workload crashes, %u crashes during recovery, "
		"state converged every time\n", (unsigned long long)x.seed, recovery_crashes);
	cr_assert_gt(recovery_crashes, 3);
	spl_teardown();
}
