/*
 * ringmail_blast.c - ringmail-blast: an io_uring SMTP load generator
 * (docs/bench-tools.md). This file holds the options, the message plan
 * (domains, sizes, the shared body text), the workers and their tick
 * (--progress, reply timeouts, signals) and the summaries; blast_session.c
 * holds the SMTP client sessions.
 *
 * Output: a human summary on stderr (unless --quiet) and one JSON object
 * on stdout, or in --json FILE. Exit status: 0 when the plan ran to its
 * end (whatever the server answered), 1 when it could not (no connection,
 * a signal), 64 on bad usage.
 *
 * Ownership: main owns the shared plan; each worker owns its ring, its
 * sessions and its samples, on its own thread (worker 0 on main's).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_net.h"
#include "blast.h"
#include "engine/eng_common.h"

#define BLAST_SAMPLES_MAX 20000000ull

static volatile sig_atomic_t blast_signal_stop;

static void
blast_on_signal(int signo)
{
	(void)signo;
	blast_signal_stop = 1;
}

static void
blast_usage(void)
{
	fprintf(stderr,
		"usage: ringmail-blast -c ADDR:PORT -s SESSIONS -m MESSAGES [--size BYTES]\n"
		"         [--size-dist SIZE:WEIGHT,...] [--domains D] [--zipf S] [--domain-fmt FMT]\n"
		"         [--rate N] [--recipients R] [--per-conn N] [--pipelining|--no-pipelining]\n"
		"         [--bdat] [--log-ids FILE] [--json FILE] [--progress] [--seed S]\n"
		"         [--run-id ID] [--timeout S] [--threads N] [--helo NAME] [--from ADDR]\n"
		"         [--quiet]\n"
		"  FMT holds one %%u (default d%%u.example). See docs/bench-tools.md.\n");
	exit(64);
}

static void
blast_die(const char *what, const char *text)
{
	fprintf(stderr, "ringmail-blast: %s: '%s'\n", what, text);
	exit(64);
}

/* ---- message plan ---------------------------------------------------------- */

/* A uniform double in [0, 1) from the seed, the message and a salt. */
static double
blast_unit(const struct bench_blast_shared *shared, uint64_t message_index, uint64_t salt)
{
	uint64_t key[3] = { shared->config.seed, message_index, salt };
	uint64_t hash = bench_fnv1a(BENCH_FNV_OFFSET, key, sizeof(key));
	hash ^= hash >> 31;
	hash *= 0x9e3779b97f4a7c15ull;
	hash ^= hash >> 29;
	return (double)(hash >> 11) / 9007199254740992.0;
}

uint32_t
bench_blast_domain_of(const struct bench_blast_shared *shared, uint64_t message_index)
{
	uint32_t count = shared->config.domain_count;
	ENG_ASSERT(count > 0);
	double u = blast_unit(shared, message_index, 0x44);
	if (shared->zipf_cdf == NULL)
		return ENG_MIN((uint32_t)(u * count), count - 1);
	uint32_t low = 0, high = count - 1;
	for (uint32_t guard = 0; low < high && guard < 64; guard++) {
		uint32_t mid = low + (high - low) / 2;
		if (shared->zipf_cdf[mid] > u)
			high = mid;
		else
			low = mid + 1;
	}
	ENG_ASSERT(low < count);
	return low;
}

uint32_t
bench_blast_size_of(const struct bench_blast_shared *shared, uint64_t message_index)
{
	const struct bench_blast_config *config = &shared->config;
	ENG_ASSERT(config->size_count > 0);
	if (config->size_count == 1)
		return config->sizes[0];
	uint32_t total = config->size_weights[config->size_count - 1];
	uint32_t pick = (uint32_t)(blast_unit(shared, message_index, 0x53) * total);
	for (uint32_t i = 0; i < config->size_count; i++) {
		if (pick < config->size_weights[i])
			return config->sizes[i];
	}
	return config->sizes[config->size_count - 1];
}

/* Domain names from --domain-fmt: the text around its one "%u". */
static int
blast_make_domains(struct bench_blast_shared *shared)
{
	const struct bench_blast_config *config = &shared->config;
	const char *fmt = config->domain_fmt;
	const char *mark = strstr(fmt, "%u");
	if (mark == NULL || strchr(mark + 2, '%') != NULL || memchr(fmt, '%', (size_t)(mark - fmt)))
		blast_die("--domain-fmt needs exactly one %u", fmt);
	shared->domains = calloc(config->domain_count, BLAST_NAME_MAX);
	if (shared->domains == NULL)
		return -ENOMEM;
	for (uint32_t i = 0; i < config->domain_count; i++) {
		int len = snprintf(shared->domains[i], BLAST_NAME_MAX, "%.*s%u%s",
				   (int)(mark - fmt), fmt, i, mark + 2);
		if (len <= 0 || len >= (int)BLAST_NAME_MAX)
			blast_die("--domain-fmt: name too long", fmt);
	}
	if (config->zipf_s <= 0.0)
		return 0;
	shared->zipf_cdf = calloc(config->domain_count, sizeof(double));
	if (shared->zipf_cdf == NULL)
		return -ENOMEM;
	double sum = 0.0;
	for (uint32_t i = 0; i < config->domain_count; i++) {
		sum += 1.0 / pow((double)i + 1.0, config->zipf_s);
		shared->zipf_cdf[i] = sum;
	}
	for (uint32_t i = 0; i < config->domain_count; i++)
		shared->zipf_cdf[i] /= sum;
	shared->zipf_cdf[config->domain_count - 1] = 1.0;
	return 0;
}

/* The shared body: whole lines of 76 letters and CRLF, never a leading
 * dot, so any suffix of whole lines is valid message text. */
static int
blast_make_body(struct bench_blast_shared *shared)
{
	uint32_t lines = shared->config.size_max / BLAST_BODY_LINE_SIZE + 1;
	shared->body_size = lines * BLAST_BODY_LINE_SIZE;
	shared->body = malloc(shared->body_size);
	if (shared->body == NULL)
		return -ENOMEM;
	for (uint32_t l = 0; l < lines; l++) {
		uint8_t *line = shared->body + (size_t)l * BLAST_BODY_LINE_SIZE;
		for (uint32_t i = 0; i < BLAST_BODY_LINE_SIZE - 2; i++)
			line[i] = (uint8_t)('a' + (l * 7u + i) % 26u);
		line[BLAST_BODY_LINE_SIZE - 2] = '\r';
		line[BLAST_BODY_LINE_SIZE - 1] = '\n';
	}
	return 0;
}

/* ---- options ------------------------------------------------------------ */

enum blast_option {
	BLAST_OPT_SIZE = 256,
	BLAST_OPT_SIZE_DIST,
	BLAST_OPT_DOMAINS,
	BLAST_OPT_ZIPF,
	BLAST_OPT_DOMAIN_FMT,
	BLAST_OPT_RATE,
	BLAST_OPT_RECIPIENTS,
	BLAST_OPT_PER_CONN,
	BLAST_OPT_PIPELINING,
	BLAST_OPT_NO_PIPELINING,
	BLAST_OPT_BDAT,
	BLAST_OPT_LOG_IDS,
	BLAST_OPT_JSON,
	BLAST_OPT_PROGRESS,
	BLAST_OPT_SEED,
	BLAST_OPT_RUN_ID,
	BLAST_OPT_TIMEOUT,
	BLAST_OPT_THREADS,
	BLAST_OPT_HELO,
	BLAST_OPT_FROM,
	BLAST_OPT_QUIET,
};

static const struct option blast_options[] = {
	{ "connect", required_argument, NULL, 'c' },
	{ "sessions", required_argument, NULL, 's' },
	{ "messages", required_argument, NULL, 'm' },
	{ "size", required_argument, NULL, BLAST_OPT_SIZE },
	{ "size-dist", required_argument, NULL, BLAST_OPT_SIZE_DIST },
	{ "domains", required_argument, NULL, BLAST_OPT_DOMAINS },
	{ "zipf", required_argument, NULL, BLAST_OPT_ZIPF },
	{ "domain-fmt", required_argument, NULL, BLAST_OPT_DOMAIN_FMT },
	{ "rate", required_argument, NULL, BLAST_OPT_RATE },
	{ "recipients", required_argument, NULL, BLAST_OPT_RECIPIENTS },
	{ "per-conn", required_argument, NULL, BLAST_OPT_PER_CONN },
	{ "pipelining", no_argument, NULL, BLAST_OPT_PIPELINING },
	{ "no-pipelining", no_argument, NULL, BLAST_OPT_NO_PIPELINING },
	{ "bdat", no_argument, NULL, BLAST_OPT_BDAT },
	{ "log-ids", required_argument, NULL, BLAST_OPT_LOG_IDS },
	{ "json", required_argument, NULL, BLAST_OPT_JSON },
	{ "progress", no_argument, NULL, BLAST_OPT_PROGRESS },
	{ "seed", required_argument, NULL, BLAST_OPT_SEED },
	{ "run-id", required_argument, NULL, BLAST_OPT_RUN_ID },
	{ "timeout", required_argument, NULL, BLAST_OPT_TIMEOUT },
	{ "threads", required_argument, NULL, BLAST_OPT_THREADS },
	{ "helo", required_argument, NULL, BLAST_OPT_HELO },
	{ "from", required_argument, NULL, BLAST_OPT_FROM },
	{ "quiet", no_argument, NULL, BLAST_OPT_QUIET },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

static uint32_t
blast_parse_size(const char *name, const char *text)
{
	uint64_t size = bench_parse_u64(name, text);
	if (size < 256 || size > 64ull * 1024 * 1024)
		blast_die("message size must be 256 B .. 64 MB", text);
	return (uint32_t)size;
}

/* "SIZE:WEIGHT,SIZE:WEIGHT,..." (SIZE may end in K or M). */
static void
blast_parse_size_dist(struct bench_blast_config *config, const char *text)
{
	char copy[512];
	if (strlen(text) >= sizeof(copy))
		blast_die("--size-dist: too long", text);
	snprintf(copy, sizeof(copy), "%s", text);
	char *save = NULL;
	config->size_count = 0;
	uint32_t total = 0;
	for (char *item = strtok_r(copy, ",", &save); item != NULL;
	     item = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(item, ':');
		if (colon == NULL || config->size_count == BLAST_SIZES_MAX)
			blast_die("--size-dist wants up to 16 SIZE:WEIGHT items", text);
		*colon = '\0';
		uint64_t weight = bench_parse_u64("--size-dist weight", colon + 1);
		if (weight == 0 || weight > 1000000)
			blast_die("--size-dist: weight 1..1000000", text);
		total += (uint32_t)weight;
		config->sizes[config->size_count] = blast_parse_size("--size-dist", item);
		config->size_weights[config->size_count++] = total;
	}
	if (config->size_count == 0)
		blast_die("--size-dist: empty", text);
}

static void
blast_option(struct bench_blast_config *config, int opt, const char *arg)
{
	switch (opt) {
	case 'c':
		if (bench_addr_parse(arg, &config->addr) != 0 || config->addr.sin_port == 0)
			blast_die("-c: not an IPv4 ADDR:PORT", arg);
		break;
	case 's': config->session_count = (uint32_t)bench_parse_u64("-s", arg); break;
	case 'm': config->message_count = bench_parse_u64("-m", arg); break;
	case BLAST_OPT_SIZE:
		config->sizes[0] = blast_parse_size("--size", arg);
		config->size_weights[0] = 1;
		config->size_count = 1;
		break;
	case BLAST_OPT_SIZE_DIST: blast_parse_size_dist(config, arg); break;
	case BLAST_OPT_DOMAINS:
		config->domain_count = (uint32_t)bench_parse_u64("--domains", arg);
		break;
	case BLAST_OPT_ZIPF: config->zipf_s = bench_parse_double("--zipf", arg); break;
	case BLAST_OPT_DOMAIN_FMT: config->domain_fmt = arg; break;
	case BLAST_OPT_RATE: config->rate = bench_parse_double("--rate", arg); break;
	case BLAST_OPT_RECIPIENTS:
		config->recipient_count = (uint32_t)bench_parse_u64("--recipients", arg);
		break;
	case BLAST_OPT_PER_CONN:
		config->per_conn = (uint32_t)bench_parse_u64("--per-conn", arg);
		break;
	case BLAST_OPT_PIPELINING: config->is_pipelining = true; break;
	case BLAST_OPT_NO_PIPELINING: config->is_pipelining = false; break;
	case BLAST_OPT_BDAT: config->is_bdat = true; break;
	case BLAST_OPT_LOG_IDS:
		config->log_ids_fd = open(arg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (config->log_ids_fd < 0) {
			fprintf(stderr, "ringmail-blast: --log-ids %s: %s\n", arg, strerror(errno));
			exit(1);
		}
		break;
	case BLAST_OPT_JSON: config->json_path = arg; break;
	case BLAST_OPT_PROGRESS: config->is_progress = true; break;
	case BLAST_OPT_SEED: config->seed = bench_parse_u64("--seed", arg); break;
	case BLAST_OPT_RUN_ID:
		if (strlen(arg) == 0 || strlen(arg) >= sizeof(config->run_id) ||
		    strpbrk(arg, " \t\r\n<>@") != NULL)
			blast_die("--run-id: 1..63 characters, no blanks, <, > or @", arg);
		snprintf(config->run_id, sizeof(config->run_id), "%s", arg);
		break;
	case BLAST_OPT_TIMEOUT:
		config->timeout_ns = (uint64_t)(bench_parse_double("--timeout", arg) * 1e9);
		break;
	case BLAST_OPT_THREADS:
		config->thread_count = (uint32_t)bench_parse_u64("--threads", arg);
		break;
	case BLAST_OPT_HELO: config->helo_name = arg; break;
	case BLAST_OPT_FROM: config->mail_from = arg; break;
	case BLAST_OPT_QUIET: config->is_quiet = true; break;
	default: blast_usage();
	}
}

static void
blast_check(const struct bench_blast_config *config)
{
	if (config->addr.sin_family != AF_INET || config->session_count == 0 ||
	    config->message_count == 0)
		blast_usage();
	if (config->session_count > 100000)
		blast_die("-s: 1..100000", "sessions");
	if (config->domain_count == 0 || config->domain_count > BLAST_DOMAINS_MAX)
		blast_die("--domains: 1..100000", "domains");
	if (config->recipient_count == 0 || config->recipient_count > BLAST_RCPTS_MAX)
		blast_die("--recipients: 1..100", "recipients");
	if (config->per_conn == 0)
		blast_die("--per-conn: at least 1", "0");
	if (config->thread_count == 0 || config->thread_count > BLAST_THREADS_MAX)
		blast_die("--threads: 1..64", "threads");
	if (config->rate < 0.0 || config->zipf_s < 0.0 || config->timeout_ns == 0)
		blast_die("--rate, --zipf and --timeout must be positive", "value");
	if (strlen(config->helo_name) > 200 || strlen(config->mail_from) > 200 ||
	    strpbrk(config->mail_from, "<>\r\n ") != NULL || strpbrk(config->helo_name, "\r\n ") != NULL)
		blast_die("--helo or --from: too long or holds blanks", config->mail_from);
}

static void
blast_parse_args(int argc, char **argv, struct bench_blast_config *config)
{
	memset(config, 0, sizeof(*config));
	config->sizes[0] = 5120;
	config->size_weights[0] = 1;
	config->size_count = 1;
	config->domain_count = 1;
	config->domain_fmt = "d%u.example";
	config->recipient_count = 1;
	config->per_conn = 1000;
	config->is_pipelining = true;
	config->seed = 1;
	config->timeout_ns = 60ull * 1000000000ull;
	config->thread_count = 1;
	config->log_ids_fd = -1;
	config->helo_name = "blast.ringmail.test";
	config->mail_from = "blast@blast.ringmail.test";
	snprintf(config->run_id, sizeof(config->run_id), "%llx%x",
		 (unsigned long long)(bench_now_ns() / 1000000ull), (unsigned)getpid());
	int opt;
	while ((opt = getopt_long(argc, argv, "c:s:m:h", blast_options, NULL)) != -1)
		blast_option(config, opt, optarg);
	if (optind != argc)
		blast_usage();
	blast_check(config);
	config->size_max = 0;
	for (uint32_t i = 0; i < config->size_count; i++)
		config->size_max = ENG_MAX(config->size_max, config->sizes[i]);
}

/* ---- workers ------------------------------------------------------------ */

static struct bench_blast_worker *blast_workers;

struct blast_sum {
	uint64_t sent, accepted, failed_4xx, failed_5xx, lost, rcpt_accepted, rcpt_4xx, rcpt_5xx;
	uint64_t replies_421, bytes, connections, connect_failures, greeting_failures;
	uint64_t protocol_errors, timeouts;
};

static void
blast_sum(struct bench_blast_worker *workers, uint32_t count, struct blast_sum *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (uint32_t i = 0; i < count; i++) {
		struct bench_blast_totals *t = &workers[i].totals;
		sum->sent += bench_counter_get(&t->sent);
		sum->accepted += bench_counter_get(&t->accepted);
		sum->failed_4xx += bench_counter_get(&t->failed_4xx);
		sum->failed_5xx += bench_counter_get(&t->failed_5xx);
		sum->lost += bench_counter_get(&t->lost);
		sum->rcpt_accepted += bench_counter_get(&t->rcpt_accepted);
		sum->rcpt_4xx += bench_counter_get(&t->rcpt_4xx);
		sum->rcpt_5xx += bench_counter_get(&t->rcpt_5xx);
		sum->replies_421 += bench_counter_get(&t->replies_421);
		sum->bytes += bench_counter_get(&t->bytes);
		sum->connections += bench_counter_get(&t->connections);
		sum->connect_failures += bench_counter_get(&t->connect_failures);
		sum->greeting_failures += bench_counter_get(&t->greeting_failures);
		sum->protocol_errors += bench_counter_get(&t->protocol_errors);
		sum->timeouts += bench_counter_get(&t->timeouts);
	}
}

static void
blast_progress(struct bench_blast_shared *shared, uint64_t now_ns)
{
	static uint64_t last_ns, last_accepted;
	if (last_ns == 0)
		last_ns = shared->start_ns;
	if (now_ns - last_ns < 1000000000ull)
		return;
	struct blast_sum sum;
	blast_sum(blast_workers, shared->config.thread_count, &sum);
	double rate = (double)(sum.accepted - last_accepted) * 1e9 / (double)(now_ns - last_ns);
	fprintf(stderr,
		"ringmail-blast: %.0f s sent=%llu accepted=%llu failed=%llu lost=%llu "
		"msgs/s=%.0f\n",
		(double)(now_ns - shared->start_ns) / 1e9, (unsigned long long)sum.sent,
		(unsigned long long)sum.accepted,
		(unsigned long long)(sum.failed_4xx + sum.failed_5xx),
		(unsigned long long)sum.lost, rate);
	last_ns = now_ns;
	last_accepted = sum.accepted;
}

static void
blast_tick_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct bench_blast_worker *worker = op->ctx;
	struct bench_blast_shared *shared = worker->shared;
	(void)res;
	(void)cqe_flags;
	uint64_t now_ns = bench_now_ns();
	if (blast_signal_stop)
		atomic_store(&shared->is_stopping, true);
	if (worker->index == 0 && shared->config.is_progress)
		blast_progress(shared, now_ns);
	bench_blast_sessions_tick(worker, now_ns);
	if (worker->sessions_done == worker->session_count)
		return;
	int ret = ring_prep_timeout(worker->ring, &worker->tick_op, BLAST_TICK_NS);
	ENG_ASSERT(ret == 0);
}

static int
blast_worker_setup(struct bench_blast_worker *worker)
{
	const struct bench_blast_config *config = &worker->shared->config;
	uint32_t count = config->session_count / config->thread_count +
			 (worker->index < config->session_count % config->thread_count ? 1u : 0u);
	char err[256];
	uint32_t cq_entries = 512;
	while (cq_entries < count + 16u && cq_entries < (1u << 20))
		cq_entries <<= 1;
	struct ring_params params = { .sq_entries = 256, .cq_entries = cq_entries };
	worker->ring = ring_create(&params, err, sizeof(err));
	if (worker->ring == NULL) {
		fprintf(stderr, "ringmail-blast: io_uring: %s\n", err);
		return 1;
	}
	uint64_t capacity = ENG_MIN(config->message_count, BLAST_SAMPLES_MAX);
	worker->domain_sent = calloc(config->domain_count, sizeof(uint64_t));
	worker->domain_accepted = calloc(config->domain_count, sizeof(uint64_t));
	if (bench_samples_init(&worker->latency, capacity) != 0 || worker->domain_sent == NULL ||
	    worker->domain_accepted == NULL || bench_blast_sessions_start(worker, count) != 0) {
		fprintf(stderr, "ringmail-blast: out of memory\n");
		return 1;
	}
	worker->tick_op.callback = blast_tick_callback;
	worker->tick_op.ctx = worker;
	int ret = ring_prep_timeout(worker->ring, &worker->tick_op, BLAST_TICK_NS);
	ENG_ASSERT(ret == 0);
	return 0;
}

static void *
blast_worker_run(void *arg)
{
	struct bench_blast_worker *worker = arg;
	worker->exit_status = blast_worker_setup(worker);
	if (worker->exit_status != 0) {
		atomic_store(&worker->shared->is_fatal, true);
		atomic_store(&worker->shared->is_stopping, true);
		return NULL;
	}
	for (uint64_t turn = 0; worker->sessions_done < worker->session_count; turn++) {
		ENG_ASSERT(turn < UINT64_MAX);
		int ret = ring_run_once(worker->ring, UINT64_MAX);
		if (ret < 0) {
			fprintf(stderr, "ringmail-blast: ring: %s\n", strerror(-ret));
			worker->exit_status = 1;
			atomic_store(&worker->shared->is_fatal, true);
			break;
		}
	}
	ENG_ASSERT(worker->sessions_done == worker->session_count || worker->exit_status != 0);
	return NULL;
}

/* ---- summary ------------------------------------------------------------ */

/* All workers' latency samples in one set (caller frees). */
static void
blast_latency_merge(struct bench_blast_worker *workers, uint32_t count, struct bench_samples *all)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < count; i++)
		total += workers[i].latency.count;
	if (bench_samples_init(all, total == 0 ? 1 : total) != 0) {
		memset(all, 0, sizeof(*all));
		return;
	}
	for (uint32_t i = 0; i < count; i++) {
		for (uint64_t k = 0; k < workers[i].latency.count; k++)
			bench_samples_add(all, workers[i].latency.ns[k]);
	}
}

static void
blast_write_domains(FILE *out, struct bench_blast_shared *shared)
{
	const struct bench_blast_config *config = &shared->config;
	fputs("\"domains\":{", out);
	bool is_first = true;
	for (uint32_t d = 0; d < config->domain_count; d++) {
		uint64_t sent = 0, accepted = 0;
		for (uint32_t w = 0; w < config->thread_count; w++) {
			sent += blast_workers[w].domain_sent[d];
			accepted += blast_workers[w].domain_accepted[d];
		}
		if (sent == 0)
			continue;
		fputs(is_first ? "" : ",", out);
		is_first = false;
		bench_json_string(out, shared->domains[d], strlen(shared->domains[d]));
		fprintf(out, ":{\"sent\":%llu,\"accepted\":%llu}", (unsigned long long)sent,
			(unsigned long long)accepted);
	}
	fputs("}", out);
}

static void
blast_write_json(FILE *out, struct bench_blast_shared *shared, const struct blast_sum *sum,
		 struct bench_samples *latency, double elapsed_s)
{
	const struct bench_blast_config *config = &shared->config;
	double rate = elapsed_s > 0.0 ? (double)sum->accepted / elapsed_s : 0.0;
	fprintf(out,
		"{\"tool\":\"ringmail-blast\",\"run_id\":\"%s\",\"sessions\":%u,\"messages\":%llu,"
		"\"sent\":%llu,\"accepted\":%llu,\"failed_4xx\":%llu,\"failed_5xx\":%llu,"
		"\"lost\":%llu,\"rcpt_accepted\":%llu,\"rcpt_4xx\":%llu,\"rcpt_5xx\":%llu,"
		"\"421s\":%llu,\"bytes\":%llu,\"connections\":%llu,\"connect_failures\":%llu,"
		"\"greeting_failures\":%llu,\"protocol_errors\":%llu,\"timeouts\":%llu,",
		bench_json_safe(config->run_id), config->session_count,
		(unsigned long long)config->message_count, (unsigned long long)sum->sent,
		(unsigned long long)sum->accepted, (unsigned long long)sum->failed_4xx,
		(unsigned long long)sum->failed_5xx, (unsigned long long)sum->lost,
		(unsigned long long)sum->rcpt_accepted, (unsigned long long)sum->rcpt_4xx,
		(unsigned long long)sum->rcpt_5xx, (unsigned long long)sum->replies_421,
		(unsigned long long)sum->bytes, (unsigned long long)sum->connections,
		(unsigned long long)sum->connect_failures,
		(unsigned long long)sum->greeting_failures,
		(unsigned long long)sum->protocol_errors, (unsigned long long)sum->timeouts);
	fprintf(out,
		"\"elapsed_s\":%.3f,\"msgs_per_s\":%.1f,\"p50_latency_us\":%.1f,"
		"\"p99_latency_us\":%.1f,\"p999_latency_us\":%.1f,\"max_latency_us\":%.1f,"
		"\"cpu_s\":%.3f,",
		elapsed_s, rate, bench_samples_quantile_us(latency, 0.5),
		bench_samples_quantile_us(latency, 0.99), bench_samples_quantile_us(latency, 0.999),
		bench_samples_quantile_us(latency, 1.0), (double)bench_cpu_ns() / 1e9);
	blast_write_domains(out, shared);
	fputs("}\n", out);
}

static int
blast_finish(struct bench_blast_shared *shared)
{
	const struct bench_blast_config *config = &shared->config;
	double elapsed_s = (double)(bench_now_ns() - shared->start_ns) / 1e9;
	struct blast_sum sum;
	blast_sum(blast_workers, config->thread_count, &sum);
	ENG_ASSERT(sum.accepted + sum.failed_4xx + sum.failed_5xx + sum.lost == sum.sent);
	struct bench_samples latency;
	blast_latency_merge(blast_workers, config->thread_count, &latency);
	int status = atomic_load(&shared->is_fatal) || blast_signal_stop ||
		     sum.sent != config->message_count;
	if (!config->is_quiet)
		fprintf(stderr,
			"ringmail-blast: sent=%llu accepted=%llu failed_4xx=%llu failed_5xx=%llu "
			"lost=%llu in %.3f s: %.0f msgs/s; latency us p50=%.0f p99=%.0f "
			"p999=%.0f\n",
			(unsigned long long)sum.sent, (unsigned long long)sum.accepted,
			(unsigned long long)sum.failed_4xx, (unsigned long long)sum.failed_5xx,
			(unsigned long long)sum.lost, elapsed_s,
			elapsed_s > 0 ? (double)sum.accepted / elapsed_s : 0.0,
			bench_samples_quantile_us(&latency, 0.5),
			bench_samples_quantile_us(&latency, 0.99),
			bench_samples_quantile_us(&latency, 0.999));
	FILE *out = stdout;
	if (config->json_path != NULL && (out = fopen(config->json_path, "w")) == NULL) {
		fprintf(stderr, "ringmail-blast: --json %s: %s\n", config->json_path,
			strerror(errno));
		out = stdout;
		status = 1;
	}
	blast_write_json(out, shared, &sum, &latency, elapsed_s);
	if (out != stdout && fclose(out) != 0)
		status = 1;
	bench_samples_free(&latency);
	return status;
}

/* ---- main ------------------------------------------------------------- */

static void
blast_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = blast_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void
blast_start_threads(struct bench_blast_worker *workers, uint32_t count)
{
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (uint32_t w = 1; w < count; w++) {
		int ret = pthread_create(&workers[w].thread, NULL, blast_worker_run, &workers[w]);
		if (ret != 0) {
			fprintf(stderr, "ringmail-blast: pthread_create: %s\n", strerror(ret));
			exit(1);
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int
main(int argc, char **argv)
{
	static struct bench_blast_shared shared;
	blast_parse_args(argc, argv, &shared.config);
	uint32_t thread_count = shared.config.thread_count;
	char err[256];
	struct ring_caps caps;
	if (ring_probe(&caps, err, sizeof(err)) != 0) {
		fprintf(stderr, "ringmail-blast: %s\n", err);
		return 1;
	}
	blast_workers = calloc(thread_count, sizeof(*blast_workers));
	if (blast_workers == NULL || blast_make_domains(&shared) != 0 ||
	    blast_make_body(&shared) != 0) {
		fprintf(stderr, "ringmail-blast: out of memory\n");
		return 1;
	}
	for (uint32_t w = 0; w < thread_count; w++) {
		blast_workers[w].index = w;
		blast_workers[w].shared = &shared;
	}
	blast_signals();
	shared.start_ns = bench_now_ns();
	blast_start_threads(blast_workers, thread_count);
	blast_worker_run(&blast_workers[0]);
	int status = blast_workers[0].exit_status;
	for (uint32_t w = 1; w < thread_count; w++) {
		pthread_join(blast_workers[w].thread, NULL);
		status |= blast_workers[w].exit_status;
	}
	status |= blast_finish(&shared);
	for (uint32_t w = 0; w < thread_count; w++) {
		struct bench_blast_worker *worker = &blast_workers[w];
		bench_blast_sessions_free(worker);
		if (worker->ring != NULL)
			ring_destroy(worker->ring);
		bench_samples_free(&worker->latency);
		free(worker->domain_sent);
		free(worker->domain_accepted);
	}
	if (shared.config.log_ids_fd >= 0)
		close(shared.config.log_ids_fd);
	free(blast_workers);
	free(shared.domains);
	free(shared.zipf_cdf);
	free(shared.body);
	return status;
}
