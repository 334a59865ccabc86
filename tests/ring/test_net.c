/*
 * test_net.c - Criterion tests of the ring's socket helpers used by
 * outbound connections (engine/eng_conn.c): ring_prep_sendmsg (iovec sends,
 * op->len is the total) and ring_prep_connect_timeout (connect linked to a
 * link timeout: success, refusal, and the deadline passing first).
 *
 * The deadline case needs a connect that hangs on loopback: a listener
 * with backlog 0 whose accept queue is already full drops further SYNs, so
 * the second connect waits for a SYN retransmission (1 s) and the short
 * link timeout fires first.
 *
 * Suite "ring": skips (not fails) when io_uring is unusable (t_ring.h).
 * No sleeps: every wait is a bounded ring wait. 127.0.0.1 only.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "t_ring.h"

#define T_NET_WAIT_NS (5ull * 1000000000ull)
#define T_NET_TURNS_MAX 64
#define T_NET_DEADLINE_NS (100ull * 1000000ull)

struct t_net_seen {
	int count;
	int32_t res;
};

static void
t_net_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct t_net_seen *seen = op->ctx;
	seen->count++;
	seen->res = res;
}

/* Run turns until both counts reach 1, bounded by turns and time. */
static void
t_net_run_until_both(struct ring *ring, const int *count_a, const int *count_b)
{
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_NET_WAIT_NS;
	for (int turn = 0; turn < T_NET_TURNS_MAX && (*count_a < 1 || *count_b < 1); turn++) {
		uint64_t now_ns = eng_now_monotonic_ns();
		if (now_ns >= deadline_ns)
			break;
		int ret = ring_run_once(ring, deadline_ns - now_ns);
		cr_assert_geq(ret, 0, "ring_run_once: %s", strerror(-ret));
	}
	cr_assert_eq(*count_a, 1, "first op completed %d times", *count_a);
	cr_assert_eq(*count_b, 1, "second op completed %d times", *count_b);
}

/* A 127.0.0.1 listener on a free port; *addr gets its address. */
static int
t_net_listen(struct sockaddr_in *addr, int backlog)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
	cr_assert_eq(listen(fd, backlog), 0);
	socklen_t len = sizeof(*addr);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)addr, &len), 0);
	return fd;
}

Test(ring, sendmsg_sends_every_iovec_and_reports_total)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	char a[] = "MAIL FROM:<a@b>\r\n", b[] = "RCPT TO:<c@d>\r\n", c[] = "DATA\r\n";
	struct iovec iov[3] = {
		{ .iov_base = a, .iov_len = strlen(a) },
		{ .iov_base = b, .iov_len = strlen(b) },
		{ .iov_base = c, .iov_len = strlen(c) },
	};
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
	struct t_net_seen seen = { 0 }, unused = { .count = 1 };
	struct ring_op op = { .callback = t_net_callback, .ctx = &seen };
	cr_assert_eq(ring_prep_sendmsg(ring, &op, fds[0], &msg, MSG_NOSIGNAL | MSG_WAITALL), 0);
	cr_assert_eq(op.kind, RING_OP_SENDMSG);
	size_t total = strlen(a) + strlen(b) + strlen(c);
	cr_assert_eq(op.len, total);
	cr_assert_str_eq(ring_op_kind_name(RING_OP_SENDMSG), "sendmsg");
	t_net_run_until_both(ring, &seen.count, &unused.count);
	cr_assert_eq(seen.res, (int32_t)total);
	char got[128];
	cr_assert_eq(read(fds[1], got, sizeof(got)), (ssize_t)total);
	cr_assert_eq(memcmp(got, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", total), 0);
	cr_assert_eq(ring_ops_in_flight(ring), 0);
	close(fds[0]);
	close(fds[1]);
	ring_destroy(ring);
}

Test(ring, sendmsg_to_closed_peer_is_epipe_without_signal)
{
	struct ring *ring = t_ring_create();
	int fds[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	close(fds[1]);
	char a[] = "QUIT\r\n";
	struct iovec iov = { .iov_base = a, .iov_len = 6 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct t_net_seen seen = { 0 }, unused = { .count = 1 };
	struct ring_op op = { .callback = t_net_callback, .ctx = &seen };
	cr_assert_eq(ring_prep_sendmsg(ring, &op, fds[0], &msg, MSG_NOSIGNAL), 0);
	t_net_run_until_both(ring, &seen.count, &unused.count);
	cr_assert_eq(seen.res, -EPIPE);
	close(fds[0]);
	ring_destroy(ring);
}

Test(ring, connect_timeout_connects_and_cancels_the_timeout)
{
	struct ring *ring = t_ring_create();
	struct sockaddr_in addr;
	int listen_fd = t_net_listen(&addr, 8);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	struct t_net_seen connect_seen = { 0 }, timeout_seen = { 0 };
	struct ring_op connect_op = { .callback = t_net_callback, .ctx = &connect_seen };
	struct ring_op timeout_op = { .callback = t_net_callback, .ctx = &timeout_seen };
	cr_assert_eq(ring_prep_connect_timeout(ring, &connect_op, &timeout_op, fd,
					       (struct sockaddr *)&addr, sizeof(addr),
					       T_NET_WAIT_NS),
		     0);
	cr_assert_eq(connect_op.kind, RING_OP_CONNECT);
	cr_assert_eq(timeout_op.kind, RING_OP_LINK_TIMEOUT);
	cr_assert_eq(ring_ops_in_flight(ring), 2);
	t_net_run_until_both(ring, &connect_seen.count, &timeout_seen.count);
	cr_assert_eq(connect_seen.res, 0, "connect: %s", strerror(-connect_seen.res));
	cr_assert_eq(timeout_seen.res, -ECANCELED);
	cr_assert_eq(ring_ops_in_flight(ring), 0);
	close(fd);
	close(listen_fd);
	ring_destroy(ring);
}

Test(ring, connect_timeout_reports_refusal)
{
	struct ring *ring = t_ring_create();
	struct sockaddr_in addr;
	/* Take a free port, then stop listening on it. */
	int listen_fd = t_net_listen(&addr, 8);
	close(listen_fd);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct t_net_seen connect_seen = { 0 }, timeout_seen = { 0 };
	struct ring_op connect_op = { .callback = t_net_callback, .ctx = &connect_seen };
	struct ring_op timeout_op = { .callback = t_net_callback, .ctx = &timeout_seen };
	cr_assert_eq(ring_prep_connect_timeout(ring, &connect_op, &timeout_op, fd,
					       (struct sockaddr *)&addr, sizeof(addr),
					       T_NET_WAIT_NS),
		     0);
	t_net_run_until_both(ring, &connect_seen.count, &timeout_seen.count);
	cr_assert_eq(connect_seen.res, -ECONNREFUSED, "connect: %d", connect_seen.res);
	cr_assert_eq(timeout_seen.res, -ECANCELED);
	close(fd);
	ring_destroy(ring);
}

Test(ring, connect_timeout_fires_when_syn_is_dropped)
{
	struct ring *ring = t_ring_create();
	struct sockaddr_in addr;
	int listen_fd = t_net_listen(&addr, 0);
	/* Fill the accept queue (backlog 0 admits one): later SYNs are dropped. */
	int filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(filler, (struct sockaddr *)&addr, sizeof(addr)), 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct t_net_seen connect_seen = { 0 }, timeout_seen = { 0 };
	struct ring_op connect_op = { .callback = t_net_callback, .ctx = &connect_seen };
	struct ring_op timeout_op = { .callback = t_net_callback, .ctx = &timeout_seen };
	uint64_t start_ns = eng_now_monotonic_ns();
	cr_assert_eq(ring_prep_connect_timeout(ring, &connect_op, &timeout_op, fd,
					       (struct sockaddr *)&addr, sizeof(addr),
					       T_NET_DEADLINE_NS),
		     0);
	t_net_run_until_both(ring, &connect_seen.count, &timeout_seen.count);
	uint64_t elapsed_ns = eng_now_monotonic_ns() - start_ns;
	cr_assert_eq(connect_seen.res, -ECANCELED, "connect: %d", connect_seen.res);
	cr_assert_eq(timeout_seen.res, -ETIME);
	cr_assert_geq(elapsed_ns, T_NET_DEADLINE_NS);
	cr_assert_lt(elapsed_ns, 900ull * 1000000ull, "took %llu ns",
		     (unsigned long long)elapsed_ns);
	close(fd);
	close(filler);
	close(listen_fd);
	ring_destroy(ring);
}
