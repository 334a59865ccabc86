/*
 * t_dns.c - the DNS tests' dnsmasq launcher, silent server, loop driver
 * and main().
 *
 * main() exits 77 (meson's skip) when dnsmasq is not installed, before
 * Criterion runs anything. Each test that needs a server starts its own
 * dnsmasq on a free loopback port, so tests stay independent and can run
 * in parallel; PR_SET_PDEATHSIG kills it if the test process dies.
 * Readiness is a real query retried every 20 ms (bounded), not a sleep.
 */
#include "t_dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "tests/ring/t_ring.h"

#define T_DNSMASQ_START_ATTEMPTS 5
#define T_DNSMASQ_PROBES_MAX 250
#define T_DNSMASQ_PROBE_WAIT_MS 20
#define T_DNSMASQ_ARGS_MAX 48
#define T_IDLE_TURNS_MAX 1000

static const char *const t_dnsmasq_candidates[] = {
	"/usr/sbin/dnsmasq",
	"/usr/bin/dnsmasq",
	"/sbin/dnsmasq",
	"/usr/local/sbin/dnsmasq",
};

/* The zone of t_dns.h, after the fixed options. */
static const char *const t_dnsmasq_zone[] = {
	"--local=/test/",
	"--local-ttl=60",
	"--mx-host=order.test,mx30a.order.test,30",
	"--mx-host=order.test,mx10.order.test,10",
	"--mx-host=order.test,mx30b.order.test,30",
	"--mx-host=order.test,mx20.order.test,20",
	"--host-record=mx10.order.test,127.0.0.10",
	"--host-record=mx20.order.test,127.0.0.20",
	"--host-record=mx30a.order.test,127.0.0.31",
	"--host-record=mx30b.order.test,127.0.0.32",
	"--host-record=amail.test,127.0.0.3",
	"--mx-host=nullmx.test,.,0",
	"--dns-rr=rawnull.test,15,000000",
	"--host-record=dual.test,127.0.0.4,::1",
	"--host-record=v6.test,::1",
	"--mx-host=noaddr.test,missing.noaddr.test,10",
	"--mx-host=ttl.test,mx.ttl.test,10",
	"--host-record=mx.ttl.test,127.0.0.5,30",
	"--address=/wild.test/127.0.0.9",
};

const char *
t_dnsmasq_path(void)
{
	const char *env = getenv("RINGMAIL_DNSMASQ");
	if (env != NULL && env[0] != '\0' && access(env, X_OK) == 0)
		return env;
	for (size_t i = 0; i < ENG_ARRAY_COUNT(t_dnsmasq_candidates); i++) {
		if (access(t_dnsmasq_candidates[i], X_OK) == 0)
			return t_dnsmasq_candidates[i];
	}
	return NULL;
}

/* A port the kernel just handed out on 127.0.0.1 (free a moment ago;
 * a lost race makes dnsmasq exit and the caller tries again). */
static uint16_t
t_free_port(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t len = sizeof(sin);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

static pid_t
t_dnsmasq_spawn(const char *path, uint16_t port)
{
	char port_arg[32];
	snprintf(port_arg, sizeof(port_arg), "--port=%u", (unsigned)port);
	const char *argv[T_DNSMASQ_ARGS_MAX];
	size_t argc = 0;
	const char *fixed[] = {
		path, "--no-daemon", port_arg, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file",
		"--log-facility=/dev/null",
	};
	for (size_t i = 0; i < ENG_ARRAY_COUNT(fixed); i++)
		argv[argc++] = fixed[i];
	for (size_t i = 0; i < ENG_ARRAY_COUNT(t_dnsmasq_zone); i++)
		argv[argc++] = t_dnsmasq_zone[i];
	argv[argc] = NULL;
	cr_assert_lt(argc, (size_t)T_DNSMASQ_ARGS_MAX);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null_fd >= 0) {
			dup2(null_fd, STDOUT_FILENO); /* its start-up banner */
			dup2(null_fd, STDERR_FILENO);
		}
		execv(path, (char *const *)(void *)argv);
		_exit(127);
	}
	return pid;
}

/* One probe: an A query for ready.test; true when any answer arrives. */
static bool
t_dnsmasq_probe(int fd, const unsigned char *query, int query_len)
{
	if (send(fd, query, (size_t)query_len, 0) != query_len)
		return false;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	if (poll(&pfd, 1, T_DNSMASQ_PROBE_WAIT_MS) <= 0)
		return false;
	unsigned char reply[512];
	return recv(fd, reply, sizeof(reply), 0) >= 12;
}

/* Wait until dnsmasq answers; false if it exited (port taken). */
static bool
t_dnsmasq_wait_ready(pid_t pid, uint16_t port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	unsigned char *query = NULL;
	int query_len = 0;
	cr_assert_eq(ares_create_query("ready.test", 1, 1, 0x5151, 1, &query, &query_len, 0),
		     ARES_SUCCESS);
	bool ready = false;
	for (int probe = 0; probe < T_DNSMASQ_PROBES_MAX && !ready; probe++) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		uint64_t probe_end_ns =
			eng_now_monotonic_ns() + T_DNSMASQ_PROBE_WAIT_MS * 1000000ull;
		ready = t_dnsmasq_probe(fd, query, query_len);
		/* Before dnsmasq binds, the refusal comes back at once: pace the
		 * retries so the bound is time, not a spin. */
		uint64_t now_ns = eng_now_monotonic_ns();
		if (!ready && now_ns < probe_end_ns)
			poll(NULL, 0, (int)((probe_end_ns - now_ns) / 1000000ull) + 1);
	}
	ares_free_string(query);
	close(fd);
	return ready;
}

void
t_dnsmasq_start(struct t_dnsmasq *dnsmasq)
{
	const char *path = t_dnsmasq_path();
	cr_assert_not_null(path, "dnsmasq not installed (main() should have skipped)");
	memset(dnsmasq, 0, sizeof(*dnsmasq));
	for (int attempt = 0; attempt < T_DNSMASQ_START_ATTEMPTS; attempt++) {
		uint16_t port = t_free_port();
		pid_t pid = t_dnsmasq_spawn(path, port);
		if (t_dnsmasq_wait_ready(pid, port)) {
			dnsmasq->pid = pid;
			dnsmasq->port = port;
			snprintf(dnsmasq->server, sizeof(dnsmasq->server), "127.0.0.1:%u",
				 (unsigned)port);
			return;
		}
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	cr_assert_fail("dnsmasq did not come up after %d attempts", T_DNSMASQ_START_ATTEMPTS);
}

void
t_dnsmasq_stop(struct t_dnsmasq *dnsmasq)
{
	if (dnsmasq->pid <= 0)
		return;
	kill(dnsmasq->pid, SIGTERM);
	waitpid(dnsmasq->pid, NULL, 0);
	dnsmasq->pid = 0;
}

int
t_silent_server(char *server, size_t server_size)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET };
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t len = sizeof(sin);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	snprintf(server, server_size, "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
	return fd;
}

struct ring *
t_dns_ring(void)
{
	return t_ring_create();
}

void
t_dns_run_until(struct ring *ring, const int *count, int target, uint64_t wait_ns)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + wait_ns;
	while (*count < target) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns)
			break;
		int ret = ring_run_once(ring, deadline_ns - now_ns);
		cr_assert_geq(ret, 0, "ring_run_once: %s", strerror(-ret));
	}
	cr_assert_geq(*count, target, "waited for %d completions, saw %d", target, *count);
}

void
t_dns_run_until_idle(struct ring *ring, const struct eng_dns *dns)
{
	for (int turn = 0; turn < T_IDLE_TURNS_MAX && eng_dns_ops_in_flight(dns) > 0; turn++) {
		int ret = ring_run_once(ring, 10000000ull);
		cr_assert_geq(ret, 0);
	}
	cr_assert_eq(eng_dns_ops_in_flight(dns), 0u, "resolver ops still in flight");
}

struct eng_dns *
t_dns_create(struct ring *ring, const char *const *servers, const struct eng_dns_options *options)
{
	char err[256] = "";
	struct eng_dns *dns = eng_dns_create(ring, servers, options, err, sizeof(err));
	cr_assert_not_null(dns, "eng_dns_create: %s", err);
	return dns;
}

void
t_dns_setup(struct t_dns *t, const struct eng_dns_options *options)
{
	memset(t, 0, sizeof(*t));
	t->ring = t_dns_ring();
	t_dnsmasq_start(&t->dnsmasq);
	const char *servers[] = { t->dnsmasq.server, NULL };
	t->dns = t_dns_create(t->ring, servers, options);
}

void
t_dns_teardown(struct t_dns *t)
{
	eng_dns_destroy(t->dns);
	ring_destroy(t->ring);
	t_dnsmasq_stop(&t->dnsmasq);
}

void
t_query_callback(struct eng_dns_query *query, enum eng_dns_status status)
{
	struct t_seen *seen = query->ctx;
	seen->count++;
	seen->status = status;
	cr_assert_eq(query->status, status);
}

enum eng_dns_status
t_resolve_mx(struct t_dns *t, const char *domain, struct eng_dns_query *query)
{
	struct t_seen seen = { 0 };
	query->ctx = &seen;
	cr_assert_eq(eng_dns_resolve_mx(t->dns, domain, strlen(domain), query, t_query_callback),
		     0);
	cr_assert_eq(seen.count, 0, "callback ran inside eng_dns_resolve_mx");
	t_dns_run_until(t->ring, &seen.count, 1, T_DNS_WAIT_NS);
	cr_assert_eq(seen.count, 1);
	return seen.status;
}

enum eng_dns_status
t_resolve_addr(struct t_dns *t, const char *name, struct eng_dns_query *query)
{
	struct t_seen seen = { 0 };
	query->ctx = &seen;
	cr_assert_eq(eng_dns_resolve_addr(t->dns, name, strlen(name), query, t_query_callback), 0);
	cr_assert_eq(seen.count, 0, "callback ran inside eng_dns_resolve_addr");
	t_dns_run_until(t->ring, &seen.count, 1, T_DNS_WAIT_NS);
	cr_assert_eq(seen.count, 1);
	return seen.status;
}

const char *
t_addr_text(const struct eng_dns_addr *addr, char *out, size_t out_size)
{
	if (inet_ntop(addr->family, addr->bytes, out, (socklen_t)out_size) == NULL)
		snprintf(out, out_size, "?");
	return out;
}

int
main(int argc, char *argv[])
{
	if (t_dnsmasq_path() == NULL) {
		fprintf(stderr, "test_dns: dnsmasq is not installed (tools/install-deps installs "
				"it): skipping\n");
		return 77;
	}
	struct criterion_test_set *tests = criterion_initialize();
	int result = 0;
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	return result;
}
