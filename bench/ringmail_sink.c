/*
 * ringmail_sink.c - ringmail-sink: an io_uring SMTP sink for benchmarks and
 * tests (docs/bench-tools.md). This file holds the options, the listeners
 * and worker threads, the shared domain table, the tick (stop, --duration,
 * SIGUSR1, --stats) and the JSON summary; sink_session.c holds the SMTP
 * sessions.
 *
 * Start-up errors print one line and exit 64 (usage) or 1. On SIGTERM,
 * SIGINT or the end of --duration every worker leaves its loop at its next
 * tick (SINK_TICK_NS), the summary is written, and the exit status is 0.
 *
 * Ownership: main owns the shared state and the listening sockets; each
 * worker owns its ring and its session pool and runs on its own thread
 * (worker 0 on the main thread).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_net.h"
#include "bench_util.h"
#include "engine/eng_common.h"
#include "engine/eng_tls.h"
#include "sink.h"

#define SINK_BACKLOG 4096
#define SINK_NS_PER_S 1000000000ull

static volatile sig_atomic_t sink_signal_stop;
static volatile sig_atomic_t sink_signal_usr1;

static void
sink_on_signal(int signo)
{
	if (signo == SIGUSR1)
		sink_signal_usr1 = 1;
	else
		sink_signal_stop = 1;
}

static void
sink_usage(void)
{
	fprintf(stderr,
		"usage: ringmail-sink -l ADDR:PORT [-l ADDR:PORT ...] [--json FILE] [--4xx PCT]\n"
		"         [--5xx PCT] [--421-over N] [--delay-ms N] [--disconnect PCT] [--seed S]\n"
		"         [--duration S] [--threads N] [--sessions-max N] [--stats FILE]\n"
		"         [--log-ids FILE] [--hostname NAME] [--quiet]\n"
		"         [--tls-cert FILE --tls-key FILE [--tls-no-resume]]\n"
		"  SIGTERM/SIGINT or --duration: write the JSON summary and exit 0;\n"
		"  SIGUSR1: print the current totals on stderr. See docs/bench-tools.md.\n");
	exit(64);
}

/* ---- domain table -------------------------------------------------------- */

uint32_t
bench_sink_second_index(const struct bench_sink_shared *shared, uint64_t now_ns)
{
	uint64_t seconds = (now_ns - shared->start_ns) / SINK_NS_PER_S;
	return (uint32_t)ENG_MIN(seconds, (uint64_t)SINK_SECONDS_MAX - 1);
}

static uint32_t
sink_domain_hash(const char *name, size_t size)
{
	uint64_t hash = bench_fnv1a(BENCH_FNV_OFFSET, name, size);
	return (uint32_t)(hash ^ (hash >> 32));
}

/* Probe for name. Returns the index of its ready slot, or of the first
 * slot not ready (empty or being filled) on its probe path, with
 * *is_found false; UINT32_MAX when the table is full. */
static uint32_t
sink_domain_probe(struct bench_sink_shared *shared, const char *name, size_t size, bool *is_found)
{
	uint32_t mask = SINK_DOMAINS_MAX - 1;
	uint32_t index = sink_domain_hash(name, size) & mask;
	*is_found = false;
	for (uint32_t i = 0; i < SINK_DOMAINS_MAX; i++, index = (index + 1) & mask) {
		if (index == 0)
			continue; /* reserved: "(other)" */
		struct bench_sink_domain *domain = &shared->domains[index];
		uint32_t state = atomic_load_explicit(&domain->state, memory_order_acquire);
		if (state != 2)
			return index;
		if (domain->name_size == size && memcmp(domain->name, name, size) == 0) {
			*is_found = true;
			return index;
		}
	}
	return UINT32_MAX;
}

uint32_t
bench_sink_domain_find(struct bench_sink_shared *shared, const char *name, size_t size)
{
	ENG_ASSERT(shared != NULL);
	ENG_ASSERT(size <= SINK_DOMAIN_NAME_MAX);
	bool is_found = false;
	uint32_t index = sink_domain_probe(shared, name, size, &is_found);
	if (is_found)
		return index;
	pthread_mutex_lock(&shared->domain_lock);
	index = sink_domain_probe(shared, name, size, &is_found);
	/* Keep a quarter of the table free so probes stay short. */
	uint32_t count = atomic_load_explicit(&shared->domain_count, memory_order_relaxed);
	if (!is_found && (index == UINT32_MAX || count >= SINK_DOMAINS_MAX / 4 * 3)) {
		index = 0;
	} else if (!is_found) {
		struct bench_sink_domain *domain = &shared->domains[index];
		ENG_ASSERT(atomic_load_explicit(&domain->state, memory_order_relaxed) == 0);
		atomic_store_explicit(&domain->state, 1, memory_order_relaxed);
		memcpy(domain->name, name, size);
		domain->name_size = (uint32_t)size;
		atomic_store_explicit(&domain->state, 2, memory_order_release);
		atomic_store_explicit(&shared->domain_count, count + 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&shared->domain_lock);
	ENG_ASSERT(index < SINK_DOMAINS_MAX);
	return index;
}

/* ---- options ------------------------------------------------------------ */

/* A percentage (0..100, decimals allowed) in basis points. */
static uint32_t
sink_parse_bp(const char *name, const char *text)
{
	double pct = bench_parse_double(name, text);
	if (pct < 0.0 || pct > 100.0) {
		fprintf(stderr, "ringmail-sink: %s: not a percentage: '%s'\n", name, text);
		exit(64);
	}
	return (uint32_t)(pct * 100.0 + 0.5);
}

enum sink_option {
	SINK_OPT_JSON = 256,
	SINK_OPT_4XX,
	SINK_OPT_5XX,
	SINK_OPT_421,
	SINK_OPT_DELAY,
	SINK_OPT_DISCONNECT,
	SINK_OPT_SEED,
	SINK_OPT_DURATION,
	SINK_OPT_THREADS,
	SINK_OPT_SESSIONS,
	SINK_OPT_STATS,
	SINK_OPT_LOG_IDS,
	SINK_OPT_HOSTNAME,
	SINK_OPT_QUIET,
	SINK_OPT_TLS_CERT,
	SINK_OPT_TLS_KEY,
	SINK_OPT_TLS_NO_RESUME,
};

static const struct option sink_options[] = {
	{ "listen", required_argument, NULL, 'l' },
	{ "json", required_argument, NULL, SINK_OPT_JSON },
	{ "4xx", required_argument, NULL, SINK_OPT_4XX },
	{ "5xx", required_argument, NULL, SINK_OPT_5XX },
	{ "421-over", required_argument, NULL, SINK_OPT_421 },
	{ "delay-ms", required_argument, NULL, SINK_OPT_DELAY },
	{ "disconnect", required_argument, NULL, SINK_OPT_DISCONNECT },
	{ "seed", required_argument, NULL, SINK_OPT_SEED },
	{ "duration", required_argument, NULL, SINK_OPT_DURATION },
	{ "threads", required_argument, NULL, SINK_OPT_THREADS },
	{ "sessions-max", required_argument, NULL, SINK_OPT_SESSIONS },
	{ "stats", required_argument, NULL, SINK_OPT_STATS },
	{ "log-ids", required_argument, NULL, SINK_OPT_LOG_IDS },
	{ "hostname", required_argument, NULL, SINK_OPT_HOSTNAME },
	{ "quiet", no_argument, NULL, SINK_OPT_QUIET },
	{ "tls-cert", required_argument, NULL, SINK_OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, SINK_OPT_TLS_KEY },
	{ "tls-no-resume", no_argument, NULL, SINK_OPT_TLS_NO_RESUME },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static void
sink_option(struct bench_sink_config *config, int opt, const char *arg)
{
	switch (opt) {
	case 'l':
		if (config->listen_count == SINK_LISTENERS_MAX) {
			fprintf(stderr, "ringmail-sink: at most %u -l addresses\n", SINK_LISTENERS_MAX);
			exit(64);
		}
		if (bench_addr_parse(arg, &config->listen_addrs[config->listen_count]) != 0) {
			fprintf(stderr, "ringmail-sink: -l: not an IPv4 ADDR:PORT: '%s'\n", arg);
			exit(64);
		}
		config->listen_count++;
		break;
	case SINK_OPT_JSON: config->json_path = arg; break;
	case SINK_OPT_4XX: config->rcpt_4xx_bp = sink_parse_bp("--4xx", arg); break;
	case SINK_OPT_5XX: config->rcpt_5xx_bp = sink_parse_bp("--5xx", arg); break;
	case SINK_OPT_421: config->over_421 = (uint32_t)bench_parse_u64("--421-over", arg); break;
	case SINK_OPT_DELAY:
		config->delay_ns = bench_parse_u64("--delay-ms", arg) * 1000000ull;
		break;
	case SINK_OPT_DISCONNECT:
		config->disconnect_bp = sink_parse_bp("--disconnect", arg);
		break;
	case SINK_OPT_SEED: config->seed = bench_parse_u64("--seed", arg); break;
	case SINK_OPT_DURATION:
		config->duration_ns = (uint64_t)(bench_parse_double("--duration", arg) * 1e9);
		break;
	case SINK_OPT_THREADS:
		config->thread_count = (uint32_t)bench_parse_u64("--threads", arg);
		break;
	case SINK_OPT_SESSIONS:
		config->sessions_max = (uint32_t)bench_parse_u64("--sessions-max", arg);
		break;
	case SINK_OPT_STATS: config->stats_path = arg; break;
	case SINK_OPT_LOG_IDS:
		config->log_ids = fopen(arg, "a");
		if (config->log_ids == NULL) {
			fprintf(stderr, "ringmail-sink: --log-ids %s: %s\n", arg, strerror(errno));
			exit(1);
		}
		break;
	case SINK_OPT_HOSTNAME: config->hostname = arg; break;
	case SINK_OPT_QUIET: config->is_quiet = true; break;
	case SINK_OPT_TLS_CERT: config->tls_cert_path = arg; break;
	case SINK_OPT_TLS_KEY: config->tls_key_path = arg; break;
	case SINK_OPT_TLS_NO_RESUME: config->is_tls_no_resume = true; break;
	default: sink_usage();
	}
}

static void
sink_parse_args(int argc, char **argv, struct bench_sink_config *config)
{
	memset(config, 0, sizeof(*config));
	config->thread_count = 1;
	config->sessions_max = 4096;
	config->seed = 1;
	config->hostname = "sink.ringmail.test";
	int opt;
	while ((opt = getopt_long(argc, argv, "l:h", sink_options, NULL)) != -1)
		sink_option(config, opt, optarg);
	if (optind != argc || config->listen_count == 0)
		sink_usage();
	if (config->thread_count == 0 || config->thread_count > SINK_THREADS_MAX) {
		fprintf(stderr, "ringmail-sink: --threads: 1..%u\n", SINK_THREADS_MAX);
		exit(64);
	}
	if (config->sessions_max == 0 || config->sessions_max > 1000000u) {
		fprintf(stderr, "ringmail-sink: --sessions-max: 1..1000000\n");
		exit(64);
	}
	if (config->rcpt_4xx_bp + config->rcpt_5xx_bp > 10000u) {
		fprintf(stderr, "ringmail-sink: --4xx plus --5xx is over 100%%\n");
		exit(64);
	}
	if ((config->tls_cert_path == NULL) != (config->tls_key_path == NULL)) {
		fprintf(stderr, "ringmail-sink: --tls-cert and --tls-key go together\n");
		exit(64);
	}
	if (config->is_tls_no_resume && config->tls_cert_path == NULL) {
		fprintf(stderr, "ringmail-sink: --tls-no-resume needs --tls-cert\n");
		exit(64);
	}
	if (strlen(config->hostname) > 200) {
		fprintf(stderr, "ringmail-sink: --hostname: too long\n");
		exit(64);
	}
}

/* ---- totals and reports ------------------------------------------------ */

struct sink_sum {
	uint64_t messages, bytes, sessions, sessions_active, rcpts, rcpt_4xx, rcpt_5xx;
	uint64_t replies_421, disconnects, protocol_errors, sessions_refused;
	uint64_t tls_full, tls_resumed, tls_errors;
	uint64_t first_message_ns, last_message_ns;
};

static void
sink_sum(struct bench_sink_worker *workers, uint32_t count, struct sink_sum *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (uint32_t i = 0; i < count; i++) {
		struct bench_sink_totals *t = &workers[i].totals;
		sum->messages += bench_counter_get(&t->messages);
		sum->bytes += bench_counter_get(&t->bytes);
		sum->sessions += bench_counter_get(&t->sessions);
		sum->sessions_active += bench_counter_get(&t->sessions_active);
		sum->rcpts += bench_counter_get(&t->rcpts);
		sum->rcpt_4xx += bench_counter_get(&t->rcpt_4xx);
		sum->rcpt_5xx += bench_counter_get(&t->rcpt_5xx);
		sum->replies_421 += bench_counter_get(&t->replies_421);
		sum->disconnects += bench_counter_get(&t->disconnects);
		sum->protocol_errors += bench_counter_get(&t->protocol_errors);
		sum->sessions_refused += bench_counter_get(&t->sessions_refused);
		sum->tls_full += bench_counter_get(&t->tls_handshakes_full);
		sum->tls_resumed += bench_counter_get(&t->tls_handshakes_resumed);
		sum->tls_errors += bench_counter_get(&t->tls_handshake_errors);
		uint64_t first = bench_counter_get(&t->first_message_ns);
		if (first != 0 && (sum->first_message_ns == 0 || first < sum->first_message_ns))
			sum->first_message_ns = first;
		sum->last_message_ns = ENG_MAX(sum->last_message_ns,
					       bench_counter_get(&t->last_message_ns));
	}
}

static void
sink_write_domains(FILE *out, struct bench_sink_shared *shared)
{
	bool is_first = true;
	fputs("\"domains\":{", out);
	for (uint32_t i = 0; i < SINK_DOMAINS_MAX; i++) {
		struct bench_sink_domain *d = &shared->domains[i];
		if (atomic_load_explicit(&d->state, memory_order_acquire) != 2)
			continue;
		if (i == 0 && bench_counter_get(&d->rcpts) == 0 &&
		    bench_counter_get(&d->replies_421) == 0 && bench_counter_get(&d->rcpt_4xx) == 0 &&
		    bench_counter_get(&d->rcpt_5xx) == 0)
			continue;
		fputs(is_first ? "" : ",", out);
		is_first = false;
		bench_json_string(out, d->name, d->name_size);
		fprintf(out,
			":{\"messages\":%llu,\"bytes\":%llu,\"rcpts\":%llu,\"peak_concurrency\":%llu,"
			"\"rcpt_4xx\":%llu,\"rcpt_5xx\":%llu,\"421s\":%llu}",
			(unsigned long long)bench_counter_get(&d->messages),
			(unsigned long long)bench_counter_get(&d->bytes),
			(unsigned long long)bench_counter_get(&d->rcpts),
			(unsigned long long)bench_counter_get(&d->peak_concurrency),
			(unsigned long long)bench_counter_get(&d->rcpt_4xx),
			(unsigned long long)bench_counter_get(&d->rcpt_5xx),
			(unsigned long long)bench_counter_get(&d->replies_421));
	}
	fputs("}", out);
}

static void
sink_write_per_second(FILE *out, struct bench_sink_shared *shared)
{
	uint32_t last = 0;
	for (uint32_t i = 0; i < SINK_SECONDS_MAX; i++) {
		if (bench_counter_get(&shared->per_second[i]) != 0)
			last = i + 1;
	}
	fputs("\"per_second\":[", out);
	for (uint32_t i = 0; i < last; i++)
		fprintf(out, "%s%llu", i == 0 ? "" : ",",
			(unsigned long long)bench_counter_get(&shared->per_second[i]));
	fputs("]", out);
}

static void
sink_write_json(FILE *out, struct bench_sink_shared *shared, const struct sink_sum *sum)
{
	double elapsed_s = (double)(bench_now_ns() - shared->start_ns) / 1e9;
	double active_s = (double)(sum->last_message_ns - sum->first_message_ns) / 1e9;
	double rate = active_s > 0.0 ? (double)sum->messages / active_s : 0.0;
	fprintf(out,
		"{\"tool\":\"ringmail-sink\",\"elapsed_s\":%.3f,\"active_s\":%.3f,"
		"\"msgs_per_s\":%.1f,\"messages\":%llu,\"bytes\":%llu,\"sessions\":%llu,"
		"\"rcpts\":%llu,\"rcpt_4xx\":%llu,\"rcpt_5xx\":%llu,\"421s\":%llu,"
		"\"disconnects\":%llu,\"protocol_errors\":%llu,\"sessions_refused\":%llu,"
		"\"tls_handshakes_full\":%llu,\"tls_handshakes_resumed\":%llu,"
		"\"tls_handshake_errors\":%llu,\"threads\":%u,\"cpu_s\":%.3f,",
		elapsed_s, active_s, rate, (unsigned long long)sum->messages,
		(unsigned long long)sum->bytes, (unsigned long long)sum->sessions,
		(unsigned long long)sum->rcpts, (unsigned long long)sum->rcpt_4xx,
		(unsigned long long)sum->rcpt_5xx, (unsigned long long)sum->replies_421,
		(unsigned long long)sum->disconnects, (unsigned long long)sum->protocol_errors,
		(unsigned long long)sum->sessions_refused, (unsigned long long)sum->tls_full,
		(unsigned long long)sum->tls_resumed, (unsigned long long)sum->tls_errors,
		shared->config.thread_count,
		(double)bench_cpu_ns() / 1e9);
	sink_write_domains(out, shared);
	fputs(",", out);
	sink_write_per_second(out, shared);
	fputs("}\n", out);
}

/* --stats: the current totals, replaced atomically (write then rename). */
static void
sink_write_stats(struct bench_sink_shared *shared, const struct sink_sum *sum)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", shared->config.stats_path);
	FILE *out = fopen(tmp, "w");
	if (out == NULL)
		return;
	fprintf(out,
		"{\"messages\":%llu,\"bytes\":%llu,\"sessions\":%llu,\"sessions_active\":%llu,"
		"\"rcpt_4xx\":%llu,\"rcpt_5xx\":%llu,\"421s\":%llu,\"elapsed_s\":%.3f}\n",
		(unsigned long long)sum->messages, (unsigned long long)sum->bytes,
		(unsigned long long)sum->sessions, (unsigned long long)sum->sessions_active,
		(unsigned long long)sum->rcpt_4xx, (unsigned long long)sum->rcpt_5xx,
		(unsigned long long)sum->replies_421,
		(double)(bench_now_ns() - shared->start_ns) / 1e9);
	if (fclose(out) == 0)
		(void)rename(tmp, shared->config.stats_path);
}

/* ---- workers ------------------------------------------------------------ */

static struct bench_sink_worker *sink_workers;

static void sink_accept_arm(struct bench_sink_accept *accept_slot);

static void
sink_accept_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_sink_accept *slot = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(slot != NULL && slot->worker != NULL);
	if (atomic_load(&slot->worker->shared->is_stopping)) {
		if (res >= 0)
			close(res);
		return;
	}
	if (res >= 0) {
		bench_sink_session_start(slot->worker, res);
	} else if (res != -EINTR && res != -EAGAIN && res != -ECONNABORTED) {
		/* EMFILE and friends: wait for the tick rather than spin. */
		slot->is_paused = true;
		return;
	}
	sink_accept_arm(slot);
}

static void
sink_accept_arm(struct bench_sink_accept *slot)
{
	slot->is_paused = false;
	slot->op.callback = sink_accept_callback;
	slot->op.ctx = slot;
	int ret = ring_prep_accept(slot->worker->ring, &slot->op, slot->listen_fd, NULL, NULL);
	ENG_ASSERT(ret == 0); /* the SQ is flushed when full */
}

/* Worker 0's share of the tick: stop conditions, SIGUSR1, --stats. */
static void
sink_tick_main(struct bench_sink_worker *worker)
{
	struct bench_sink_shared *shared = worker->shared;
	uint64_t now = bench_now_ns();
	if (sink_signal_stop ||
	    (shared->config.duration_ns != 0 && now - shared->start_ns >= shared->config.duration_ns))
		atomic_store(&shared->is_stopping, true);
	if (sink_signal_usr1 || shared->config.stats_path != NULL) {
		struct sink_sum sum;
		sink_sum(sink_workers, shared->config.thread_count, &sum);
		if (sink_signal_usr1) {
			sink_signal_usr1 = 0;
			fprintf(stderr,
				"ringmail-sink: messages=%llu bytes=%llu sessions=%llu active=%llu\n",
				(unsigned long long)sum.messages, (unsigned long long)sum.bytes,
				(unsigned long long)sum.sessions,
				(unsigned long long)sum.sessions_active);
		}
		if (shared->config.stats_path != NULL)
			sink_write_stats(shared, &sum);
	}
	if (shared->config.log_ids != NULL)
		fflush(shared->config.log_ids);
}

static void
sink_tick_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_sink_worker *worker = op->ctx;
	(void)res;
	(void)cqe_flags;
	if (worker->index == 0)
		sink_tick_main(worker);
	for (uint32_t i = 0; i < worker->accept_count; i++) {
		if (worker->accepts[i].is_paused)
			sink_accept_arm(&worker->accepts[i]);
	}
	int ret = ring_prep_timeout(worker->ring, &worker->tick_op, SINK_TICK_NS);
	ENG_ASSERT(ret == 0);
}

static uint32_t
sink_pow2_at_least(uint64_t value)
{
	uint32_t pow2 = 512;
	while (pow2 < value && pow2 < (1u << 20))
		pow2 <<= 1;
	return pow2;
}

/* Set up the worker's ring, pool, accepts and tick. Returns 0 or 1. */
static int
sink_worker_setup(struct bench_sink_worker *worker)
{
	const struct bench_sink_config *config = &worker->shared->config;
	char err[256];
	struct ring_params params = {
		.sq_entries = 256,
		.cq_entries = sink_pow2_at_least((uint64_t)config->sessions_max + 64u +
						 SINK_LISTENERS_MAX * SINK_ACCEPTS_PER_LISTENER),
	};
	worker->ring = ring_create(&params, err, sizeof(err));
	if (worker->ring == NULL) {
		fprintf(stderr, "ringmail-sink: io_uring: %s\n", err);
		return 1;
	}
	if (bench_sink_sessions_init(worker) != 0) {
		fprintf(stderr, "ringmail-sink: out of memory for %u sessions\n",
			config->sessions_max);
		return 1;
	}
	for (uint32_t l = 0; l < config->listen_count; l++) {
		for (uint32_t a = 0; a < SINK_ACCEPTS_PER_LISTENER; a++) {
			struct bench_sink_accept *slot = &worker->accepts[worker->accept_count++];
			slot->worker = worker;
			slot->listen_fd = worker->listen_fds[l];
			sink_accept_arm(slot);
		}
	}
	worker->tick_op.callback = sink_tick_callback;
	worker->tick_op.ctx = worker;
	int ret = ring_prep_timeout(worker->ring, &worker->tick_op, SINK_TICK_NS);
	ENG_ASSERT(ret == 0);
	return 0;
}

static void *
sink_worker_run(void *arg)
{
	struct bench_sink_worker *worker = arg;
	worker->exit_status = sink_worker_setup(worker);
	if (worker->exit_status != 0) {
		atomic_store(&worker->shared->is_stopping, true);
		return NULL;
	}
	for (uint64_t turn = 0; turn < UINT64_MAX; turn++) {
		if (atomic_load(&worker->shared->is_stopping))
			break;
		int ret = ring_run_once(worker->ring, UINT64_MAX);
		if (ret < 0) {
			fprintf(stderr, "ringmail-sink: ring: %s\n", strerror(-ret));
			worker->exit_status = 1;
			atomic_store(&worker->shared->is_stopping, true);
		}
	}
	return NULL;
}

static void
sink_worker_teardown(struct bench_sink_worker *worker)
{
	if (worker->ring != NULL)
		ring_destroy(worker->ring);
	bench_sink_sessions_teardown(worker);
	for (uint32_t l = 0; l < worker->shared->config.listen_count; l++)
		close(worker->listen_fds[l]);
}

/* ---- main ------------------------------------------------------------- */

/* One listening socket per address and worker (the first one of an
 * address resolves port 0 for the others). Exits on failure. */
static void
sink_open_listeners(struct bench_sink_shared *shared, struct bench_sink_worker *workers)
{
	struct bench_sink_config *config = &shared->config;
	bool is_reuseport = config->thread_count > 1;
	for (uint32_t l = 0; l < config->listen_count; l++) {
		for (uint32_t w = 0; w < config->thread_count; w++) {
			int fd = bench_listen_open(&config->listen_addrs[l], is_reuseport, SINK_BACKLOG);
			char text[64];
			bench_addr_text(&config->listen_addrs[l], text, sizeof(text));
			if (fd < 0) {
				fprintf(stderr, "ringmail-sink: listen on %s: %s\n", text,
					strerror(-fd));
				exit(1);
			}
			workers[w].listen_fds[l] = fd;
		}
	}
}

static void
sink_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sink_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Start workers 1..n-1 on their threads with the signals blocked (worker
 * 0, on the main thread, takes them). */
static void
sink_start_threads(struct bench_sink_worker *workers, uint32_t count)
{
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (uint32_t w = 1; w < count; w++) {
		int ret = pthread_create(&workers[w].thread, NULL, sink_worker_run, &workers[w]);
		if (ret != 0) {
			fprintf(stderr, "ringmail-sink: pthread_create: %s\n", strerror(ret));
			exit(1);
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static int
sink_finish(struct bench_sink_shared *shared, struct bench_sink_worker *workers)
{
	struct bench_sink_config *config = &shared->config;
	int status = 0;
	struct sink_sum sum;
	sink_sum(workers, config->thread_count, &sum);
	FILE *out = stdout;
	if (config->json_path != NULL && (out = fopen(config->json_path, "w")) == NULL) {
		fprintf(stderr, "ringmail-sink: --json %s: %s\n", config->json_path, strerror(errno));
		out = stdout;
		status = 1;
	}
	sink_write_json(out, shared, &sum);
	if (out != stdout && fclose(out) != 0)
		status = 1;
	fflush(stdout);
	if (config->stats_path != NULL)
		sink_write_stats(shared, &sum);
	if (config->log_ids != NULL && fclose(config->log_ids) != 0)
		status = 1;
	if (!config->is_quiet)
		fprintf(stderr, "ringmail-sink: stopped: messages=%llu bytes=%llu sessions=%llu\n",
			(unsigned long long)sum.messages, (unsigned long long)sum.bytes,
			(unsigned long long)sum.sessions);
	return status;
}

/* --tls-cert/--tls-key: the server context all workers share. */
static int
sink_tls_setup(const struct bench_sink_config *config, struct eng_tls_ctx **out)
{
	*out = NULL;
	if (config->tls_cert_path == NULL)
		return 0;
	char err[256];
	if (eng_tls_global_init() != 0) {
		fprintf(stderr, "ringmail-sink: wolfSSL initialisation failed\n");
		return 1;
	}
	if (eng_tls_server_ctx_create(out, config->tls_cert_path, config->tls_key_path, err,
				      sizeof(err)) != 0) {
		fprintf(stderr, "ringmail-sink: %s\n", err);
		return 1;
	}
	if (config->is_tls_no_resume)
		eng_tls_server_ctx_disable_resumption(*out);
	return 0;
}

int
main(int argc, char **argv)
{
	static struct bench_sink_shared shared;
	sink_parse_args(argc, argv, &shared.config);
	uint32_t thread_count = shared.config.thread_count;
	char err[256];
	struct ring_caps caps;
	if (ring_probe(&caps, err, sizeof(err)) != 0) {
		fprintf(stderr, "ringmail-sink: %s\n", err);
		return 1;
	}
	pthread_mutex_init(&shared.domain_lock, NULL);
	shared.domains = calloc(SINK_DOMAINS_MAX, sizeof(*shared.domains));
	shared.per_second = calloc(SINK_SECONDS_MAX, sizeof(*shared.per_second));
	sink_workers = calloc(thread_count, sizeof(*sink_workers));
	if (shared.domains == NULL || shared.per_second == NULL || sink_workers == NULL) {
		fprintf(stderr, "ringmail-sink: out of memory\n");
		return 1;
	}
	memcpy(shared.domains[0].name, "(other)", 7);
	shared.domains[0].name_size = 7;
	atomic_store(&shared.domains[0].state, 2);
	for (uint32_t w = 0; w < thread_count; w++) {
		sink_workers[w].index = w;
		sink_workers[w].shared = &shared;
	}
	if (sink_tls_setup(&shared.config, &shared.tls_ctx) != 0)
		return 1;
	sink_open_listeners(&shared, sink_workers);
	sink_signals();
	shared.start_ns = bench_now_ns();
	for (uint32_t l = 0; l < shared.config.listen_count; l++) {
		char text[64];
		bench_addr_text(&shared.config.listen_addrs[l], text, sizeof(text));
		fprintf(stderr, "ringmail-sink: listening on %s\n", text);
	}
	sink_start_threads(sink_workers, thread_count);
	sink_worker_run(&sink_workers[0]);
	int status = sink_workers[0].exit_status;
	for (uint32_t w = 1; w < thread_count; w++) {
		pthread_join(sink_workers[w].thread, NULL);
		status |= sink_workers[w].exit_status;
	}
	status |= sink_finish(&shared, sink_workers);
	for (uint32_t w = 0; w < thread_count; w++)
		sink_worker_teardown(&sink_workers[w]);
	free(sink_workers);
	eng_tls_ctx_put(shared.tls_ctx);
	free(shared.domains);
	free(shared.per_second);
	return status;
}
