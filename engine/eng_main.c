/*
 * eng_main.c - `ringmail [-c FILE] [-t]`: the daemon's entry point.
 *
 * Start-up errors are loud: one line on stderr naming the cause, and a
 * non-zero exit (bad configuration with file:line:key, io_uring disabled,
 * a spool that cannot be durable). At run time the main thread only waits
 * for signals, read from a signalfd through its own ring:
 *   SIGTERM, SIGINT  stop: every shard drains its commits and exits; 0
 *   SIGHUP           reload the file: hot changes (destinations, routes)
 *                    are adopted by every shard; changes that need a
 *                    restart are named and left as they were
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "eng_clock.h"
#include "eng_common.h"
#include "eng_config.h"
#include "eng_mount.h"
#include "eng_node.h"
#include "ring/ring.h"

struct eng_main {
	const char *config_path; /* NULL: the built-in default */
	bool check_only;
	struct eng_node node;
	int signal_fd;
	struct signalfd_siginfo siginfo;
	struct ring_op signal_op;
	bool signal_ready;
};

static void
eng_usage(FILE *out)
{
	fprintf(out, "usage: ringmail [-c FILE] [-t]\n"
		     "  -c FILE  configuration (default: the built-in one, see docs/config.md)\n"
		     "  -t       check the configuration and exit\n");
}

static int
eng_parse_args(struct eng_main *m, int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "c:th")) != -1) {
		if (opt == 'c') {
			m->config_path = optarg;
		} else if (opt == 't') {
			m->check_only = true;
		} else if (opt == 'h') {
			eng_usage(stdout);
			exit(0);
		} else {
			eng_usage(stderr);
			return -EINVAL;
		}
	}
	if (optind != argc) {
		eng_usage(stderr);
		return -EINVAL;
	}
	return 0;
}

/* Load the file, or the built-in default. Returns NULL after printing. */
static struct eng_config *
eng_load_config(const char *path)
{
	struct eng_config *cfg = calloc(1, sizeof(*cfg));
	char err[ENG_CONFIG_ERROR_SIZE];
	if (cfg == NULL) {
		fprintf(stderr, "ringmail: out of memory\n");
		return NULL;
	}
	int rc = path == NULL ? eng_config_load_builtin(cfg, err, sizeof(err))
			      : eng_config_load_file(path, cfg, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "ringmail: %s\n", err);
		free(cfg);
		return NULL;
	}
	return cfg;
}

static int
eng_block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	/* Blocked before any shard thread exists, so all inherit the mask and
	 * only the signalfd sees these signals. */
	if (pthread_sigmask(SIG_BLOCK, set, NULL) != 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static void
eng_signal_read(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_main *m = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(res == (int32_t)sizeof(m->siginfo) || res < 0);
	m->signal_ready = true;
}

/* Wait for the next signal through the main ring. */
static uint32_t
eng_wait_signal(struct eng_main *m)
{
	m->signal_ready = false;
	m->signal_op.callback = eng_signal_read;
	m->signal_op.ctx = m;
	int ret = ring_prep_read(m->node.control_ring, &m->signal_op, m->signal_fd, &m->siginfo,
				 sizeof(m->siginfo), 0);
	ENG_ASSERT(ret == 0);
	for (uint64_t turns = 0; !m->signal_ready; turns++) {
		ENG_ASSERT(turns < UINT64_MAX);
		(void)ring_run_once(m->node.control_ring, UINT64_MAX);
	}
	return m->siginfo.ssi_signo;
}

static void
eng_reload(struct eng_main *m)
{
	/* Whatever happens to the configuration: the delivery log is reopened
	 * by every shard before its next write (after logrotate moved it). */
	eng_logfile_shared_reopen(&m->node.delivery_log);
	if (m->config_path == NULL) {
		fprintf(stderr, "ringmail: SIGHUP: running on the built-in configuration; nothing "
				"to reload\n");
		return;
	}
	struct eng_config *next = eng_load_config(m->config_path);
	if (next == NULL) {
		fprintf(stderr, "ringmail: SIGHUP: reload refused, the running configuration stays\n");
		return;
	}
	struct eng_config_changes changes;
	uint32_t restart = eng_config_compare(m->node.config, next, &changes);
	for (uint32_t i = 0; i < restart && i < ENG_CONFIG_CHANGES_MAX; i++)
		fprintf(stderr, "ringmail: SIGHUP: %s changed: needs a restart, kept as it was\n",
			changes.restart[i]);
	(void)eng_node_reload(&m->node, next);
	fprintf(stderr, "ringmail: configuration reloaded from %s\n", m->config_path);
}

/* KRN-06: one warning line when the spool's filesystem cannot keep an
 * acknowledgement (barriers off, memory-backed); the daemon runs on. */
static void
eng_check_mount(const struct eng_config *cfg)
{
	char msg[ENG_MOUNT_PATH_MAX + 512];
	int ret = eng_mount_check_spool("/proc/self/mountinfo", cfg->engine.spool_dir, msg,
					sizeof(msg));
	if (ret > 0)
		fprintf(stderr, "ringmail: %s\n", msg);
	else if (ret < 0)
		fprintf(stderr, "ringmail: warning: cannot check the spool's mount options: %s\n",
			msg);
}

static void
eng_print_started(const struct eng_main *m)
{
	const struct eng_node *node = &m->node;
	uint64_t messages = 0, recipients = 0, corrupt = 0, recovery_ns = 0;
	for (uint32_t i = 0; i < node->shard_count; i++) {
		messages += node->shards[i].stats.recovered_messages;
		recipients += node->shards[i].stats.recovered_recipients;
		corrupt += node->shards[i].stats.corrupt_spans;
		recovery_ns = ENG_MAX(recovery_ns, node->shards[i].stats.recovery_ns);
	}
	fprintf(stderr,
		"ringmail: started %u shard%s, spool %s: recovered %llu messages, %llu recipients "
		"to deliver, %llu corrupt spans quarantined, in %.1f ms\n",
		node->shard_count, node->shard_count == 1 ? "" : "s",
		node->config->engine.spool_dir, (unsigned long long)messages,
		(unsigned long long)recipients, (unsigned long long)corrupt,
		(double)recovery_ns / 1e6);
}

/* One line per injection listener, at start-up and (stats) at stop. */
static void
eng_print_listeners(const struct eng_main *m, bool at_stop)
{
	const struct eng_node *node = &m->node;
	const struct eng_config *cfg = node->config;
	for (uint32_t i = 0; i < cfg->listener_count && i < node->listen.count; i++) {
		const struct eng_listener *l = &cfg->listeners[i];
		const struct eng_listen_counters *c = &node->listen.listeners[i];
		bool v6 = l->address.kind == ENG_HOST_IPV6;
		if (!at_stop) {
			fprintf(stderr, "ringmail: listening on %s%s%s:%u (listener %s, shards %u)\n",
				v6 ? "[" : "", l->address.host, v6 ? "]" : "", l->address.port,
				l->name, node->shard_count);
			continue;
		}
		fprintf(stderr,
			"ringmail: listener %s: accepted %llu, refused %llu, messages %llu, bytes "
			"%llu, rejected %llu\n",
			l->name, (unsigned long long)atomic_load(&c->accepted),
			(unsigned long long)atomic_load(&c->refused),
			(unsigned long long)atomic_load(&c->messages),
			(unsigned long long)atomic_load(&c->bytes),
			(unsigned long long)atomic_load(&c->rejected));
	}
}

static int
eng_run(struct eng_main *m, struct eng_config *cfg)
{
	char err[ENG_CONFIG_ERROR_SIZE];
	struct ring_caps caps;
	if (ring_probe(&caps, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail: %s\n", err);
		return 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if ((m->signal_fd = signalfd(-1, &set, SFD_CLOEXEC)) < 0) {
		fprintf(stderr, "ringmail: cannot set up signals: %s\n", strerror(errno));
		return 1;
	}
	int clock_rc = eng_clock_test_open_env(err, sizeof(err));
	if (clock_rc < 0) {
		fprintf(stderr, "ringmail: %s\n", err);
		return 1;
	}
	if (clock_rc > 0)
		fprintf(stderr, "ringmail: test clock: wall clock offset by %s (tests only)\n",
			getenv(ENG_CLOCK_TEST_ENV));
	if (eng_node_start(&m->node, cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail: %s\n", err);
		return 1;
	}
	eng_check_mount(cfg);
	eng_print_started(m);
	eng_print_listeners(m, false);
	for (;;) {
		uint32_t signo = eng_wait_signal(m);
		if (signo == SIGHUP) {
			eng_reload(m);
			continue;
		}
		fprintf(stderr, "ringmail: %s: stopping\n", strsignal((int)signo));
		break;
	}
	eng_print_listeners(m, true); /* as of the signal */
	eng_node_stop(&m->node);
	fprintf(stderr, "ringmail: stopped\n");
	return 0;
}

int
main(int argc, char **argv)
{
	static struct eng_main m;
	m.signal_fd = -1;
	sigset_t set;
	if (eng_block_signals(&set) < 0) {
		fprintf(stderr, "ringmail: cannot block signals: %s\n", strerror(errno));
		return 1;
	}
	if (eng_parse_args(&m, argc, argv) < 0)
		return 64;
	struct eng_config *cfg = eng_load_config(m.config_path);
	if (cfg == NULL)
		return 1;
	if (m.check_only) {
		fprintf(stdout, "ringmail: %s: configuration OK\n",
			m.config_path != NULL ? m.config_path : "built-in default");
		eng_config_free(cfg);
		free(cfg);
		return 0;
	}
	return eng_run(&m, cfg);
}
