/*
 * test_dest.c - a destination's admission decisions on a virtual clock.
 *
 * A small simulation plays the shard: it opens connections when told,
 * gives each READY connection the next job, lets a job take a fixed time,
 * and fails connections on demand. Every limit of eng_dest.h is checked
 * as the simulated receiver would see it.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "engine/eng_config.h"
#include "engine/eng_dest.h"

#define SIM_JOBS 2000u
#define SIM_CONNS 64u
#define NS_PER_S 1000000000ull

struct sim_conn {
	bool open;
	uint32_t sent;
	uint64_t busy_until_ns; /* a job in flight until then */
	uint64_t wait_until_ns; /* rate-limited until then */
};

struct sim {
	struct eng_dest dest;
	struct eng_global_limit node;
	struct eng_job jobs[SIM_JOBS];
	struct sim_conn conns[SIM_CONNS];
	uint64_t now_ns;
	uint32_t open_max_seen;
	uint64_t started_ns[SIM_JOBS]; /* when each job started */
	uint32_t started;
	uint64_t opened_ns[4096];
	uint32_t opened;
	uint32_t quits;
};

static struct sim sim;

static struct eng_destination
settings(void)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	struct eng_destination d = cfg.destination;
	eng_config_free(&cfg);
	return d;
}

static void
sim_init(const struct eng_destination *s, uint32_t jobs, uint64_t node_max)
{
	memset(&sim, 0, sizeof(sim));
	eng_dest_init(&sim.dest, "example.net", 11, s, 0);
	eng_global_limit_init(&sim.node, node_max);
	for (uint32_t i = 0; i < jobs; i++)
		eng_dest_push(&sim.dest, &sim.jobs[i]);
}

static uint32_t
sim_open_count(void)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < SIM_CONNS; i++)
		n += sim.conns[i].open;
	return n;
}

static void
sim_open_connections(void)
{
	for (uint32_t guard = 0; guard < SIM_CONNS; guard++) {
		uint64_t wake;
		if (eng_dest_want_connection(&sim.dest, &sim.node, sim.now_ns, &wake) !=
		    ENG_DEST_OPEN_NOW)
			return;
		uint32_t i = 0;
		while (i < SIM_CONNS && sim.conns[i].open)
			i++;
		cr_assert_lt(i, SIM_CONNS, "more connections than the simulation holds");
		sim.conns[i] = (struct sim_conn){ .open = true };
		cr_assert_lt(sim.opened, 4096u);
		sim.opened_ns[sim.opened++] = sim.now_ns;
		eng_dest_connection_up(&sim.dest);
	}
}

/* One READY connection asks for work. */
static void
sim_ready(struct sim_conn *c, uint64_t job_ns)
{
	struct eng_job *job;
	uint64_t wake;
	enum eng_dest_action a = eng_dest_next_job(&sim.dest, c->sent, sim.now_ns, &job, &wake);
	if (a == ENG_DEST_SEND) {
		cr_assert_lt(sim.started, SIM_JOBS);
		sim.started_ns[sim.started++] = sim.now_ns;
		c->sent++;
		c->busy_until_ns = sim.now_ns + job_ns;
	} else if (a == ENG_DEST_WAIT) {
		cr_assert_gt(wake, sim.now_ns);
		c->wait_until_ns = wake;
	} else {
		/* IDLE or QUIT: close it cleanly. */
		sim.quits += a == ENG_DEST_QUIT;
		c->open = false;
		eng_dest_connection_closed(&sim.dest, &sim.node, true, false, sim.now_ns);
	}
}

static void
sim_step(uint64_t job_ns)
{
	sim_open_connections();
	uint32_t open = sim_open_count();
	sim.open_max_seen = open > sim.open_max_seen ? open : sim.open_max_seen;
	for (uint32_t i = 0; i < SIM_CONNS; i++) {
		struct sim_conn *c = &sim.conns[i];
		if (c->open && sim.now_ns >= c->busy_until_ns && sim.now_ns >= c->wait_until_ns)
			sim_ready(c, job_ns);
	}
}

static void
sim_run(uint64_t step_ns, uint64_t job_ns, uint64_t until_ns)
{
	for (; sim.now_ns <= until_ns && sim.started < SIM_JOBS; sim.now_ns += step_ns)
		sim_step(job_ns);
}

/* In every window of length w: at most burst + rate * w events. */
static void
assert_window_limit(const uint64_t *times, uint32_t n, uint64_t count, uint64_t period_ns,
		    uint64_t burst, uint64_t w)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j = i;
		while (j < n && times[j] - times[i] < w)
			j++;
		uint64_t allowed = burst + (count * w + period_ns - 1) / period_ns;
		cr_assert_leq(j - i, allowed, "%u events in a %llu ns window from %llu", j - i,
			      (unsigned long long)w, (unsigned long long)times[i]);
	}
}

Test(eng_dest, connections_never_exceed_the_destination_limit)
{
	struct eng_destination s = settings();
	s.max_connections = 5;
	sim_init(&s, 500, 1000);
	sim_run(NS_PER_S / 1000, NS_PER_S / 100, 60 * NS_PER_S);
	cr_assert_eq(sim.started, 500);
	cr_assert_eq(sim.open_max_seen, 5, "peak %u connections", sim.open_max_seen);
}

Test(eng_dest, the_node_wide_limit_caps_connections_too)
{
	struct eng_destination s = settings();
	s.max_connections = 50;
	sim_init(&s, 300, 3);
	sim_run(NS_PER_S / 1000, NS_PER_S / 100, 60 * NS_PER_S);
	cr_assert_eq(sim.started, 300);
	cr_assert_leq(sim.open_max_seen, 3);
	cr_assert_eq(eng_global_limit_used(&sim.node), sim_open_count());
}

Test(eng_dest, message_rate_holds_in_every_window)
{
	struct eng_destination s = settings();
	s.max_connections = 10;
	s.max_message_rate = (struct eng_rate){ .count = 100, .period_ns = NS_PER_S };
	s.max_message_burst = 10;
	sim_init(&s, 1000, 1000);
	sim_run(NS_PER_S / 2000, NS_PER_S / 1000, 30 * NS_PER_S);
	cr_assert_eq(sim.started, 1000);
	assert_window_limit(sim.started_ns, sim.started, 100, NS_PER_S, 10, NS_PER_S);
	assert_window_limit(sim.started_ns, sim.started, 100, NS_PER_S, 10, NS_PER_S / 10);
	/* And not slower than the rate allows: ~ (1000 - 10) / 100 s. */
	uint64_t last = sim.started_ns[sim.started - 1];
	cr_assert_leq(last, 10 * NS_PER_S + NS_PER_S / 10);
	cr_assert_gt(sim.dest.stats.rate_waits, 0);
}

Test(eng_dest, connection_rate_holds_in_every_window)
{
	struct eng_destination s = settings();
	s.max_connections = 20;
	s.max_messages_per_connection = 2; /* forces many connections */
	s.max_connection_rate = (struct eng_rate){ .count = 10, .period_ns = NS_PER_S };
	s.max_connection_burst = 3;
	sim_init(&s, 200, 1000);
	sim_run(NS_PER_S / 1000, NS_PER_S / 100, 60 * NS_PER_S);
	cr_assert_eq(sim.started, 200);
	cr_assert_geq(sim.opened, 100);
	assert_window_limit(sim.opened_ns, sim.opened, 10, NS_PER_S, 3, NS_PER_S);
}

Test(eng_dest, messages_per_connection_are_capped_then_quit)
{
	struct eng_destination s = settings();
	s.max_connections = 1;
	s.max_messages_per_connection = 7;
	sim_init(&s, 70, 1000);
	sim_run(NS_PER_S / 1000, NS_PER_S / 1000, 60 * NS_PER_S);
	cr_assert_eq(sim.started, 70);
	cr_assert_eq(sim.opened, 10);
	cr_assert_geq(sim.quits, 9);
}

Test(eng_dest, a_failed_connection_backs_off_and_doubles)
{
	struct eng_destination s = settings();
	sim_init(&s, 10, 1000);
	uint64_t wake;
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NOW);
	eng_dest_connection_closed(&sim.dest, &sim.node, false, true, 0);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 1, &wake), ENG_DEST_OPEN_WAIT);
	cr_assert_eq(wake, ENG_DEST_BACKOFF_BASE_NS);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, wake, &wake), ENG_DEST_OPEN_NOW);
	eng_dest_connection_closed(&sim.dest, &sim.node, false, true, ENG_DEST_BACKOFF_BASE_NS);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, ENG_DEST_BACKOFF_BASE_NS + 1,
					      &wake),
		     ENG_DEST_OPEN_WAIT);
	cr_assert_eq(wake, 3 * ENG_DEST_BACKOFF_BASE_NS, "doubled after a second failure");
	/* A success resets the count; the cap holds after many failures. */
	for (int i = 0; i < 20; i++) {
		uint64_t t = sim.dest.backoff_until_ns;
		cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, t, &wake),
			     ENG_DEST_OPEN_NOW);
		eng_dest_connection_closed(&sim.dest, &sim.node, false, true, t);
		cr_assert_leq(sim.dest.backoff_until_ns - t, ENG_DEST_BACKOFF_MAX_NS);
	}
	cr_assert_eq(eng_global_limit_used(&sim.node), 0);
}

Test(eng_dest, no_connection_when_idle_ones_can_take_the_work)
{
	struct eng_destination s = settings();
	sim_init(&s, 2, 1000);
	sim.dest.idle_connections = 0;
	uint64_t wake;
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NOW);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NOW);
	sim.dest.idle_connections = 2;
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NONE);
}

/* One queued job and a connect in flight: no second connection for it
 * until the first one is up (or gone). */
Test(eng_dest, a_connection_still_opening_counts_for_the_queued_job)
{
	struct eng_destination s = settings();
	sim_init(&s, 1, 1000);
	uint64_t wake;
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NOW);
	for (int turn = 0; turn < 5; turn++)
		cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake),
			     ENG_DEST_OPEN_NONE);
	cr_assert_eq(sim.dest.opening_connections, 1);
	/* Refused before it was up: the destination backs off, nothing opens. */
	eng_dest_connection_closed(&sim.dest, &sim.node, false, true, 0);
	cr_assert_eq(sim.dest.opening_connections, 0);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 1, &wake), ENG_DEST_OPEN_WAIT);
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, wake, &wake), ENG_DEST_OPEN_NOW);
	eng_dest_connection_up(&sim.dest);
	cr_assert_eq(sim.dest.opening_connections, 0);
	struct eng_job *job = eng_dest_take(&sim.dest);
	cr_assert_eq(job, &sim.jobs[0]);
	cr_assert_null(eng_dest_take(&sim.dest));
	eng_dest_connection_closed(&sim.dest, &sim.node, true, false, 2);
	cr_assert_eq(eng_global_limit_used(&sim.node), 0);
}

Test(eng_dest, a_job_handed_back_keeps_its_place)
{
	struct eng_destination s = settings();
	sim_init(&s, 3, 1000);
	uint64_t wake;
	cr_assert_eq(eng_dest_want_connection(&sim.dest, &sim.node, 0, &wake), ENG_DEST_OPEN_NOW);
	struct eng_job *job;
	cr_assert_eq(eng_dest_next_job(&sim.dest, 0, 0, &job, &wake), ENG_DEST_SEND);
	cr_assert_eq(job, &sim.jobs[0]);
	eng_dest_push_front(&sim.dest, job);
	cr_assert_eq(eng_dest_next_job(&sim.dest, 1, 0, &job, &wake), ENG_DEST_SEND);
	cr_assert_eq(job, &sim.jobs[0]);
	cr_assert_eq(sim.dest.queued_count, 2);
}
