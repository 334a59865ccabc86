/*
 * test_resolver.c - eng_dns against a real dnsmasq (t_dns.h for the zone):
 * MX order and TTLs, equal-preference shuffling by seed, NODATA (the A/AAAA
 * fall-back case), NXDOMAIN and null MX as permanent, REFUSED and timeouts
 * as TEMPFAIL, both address families, sockets closed by c-ares while their
 * poll is in flight (with the fd number reused at once), destroy with
 * queries pending, many queries at once, TCP, and invalid names.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/eng_common.h"
#include "engine/eng_dns.h"
#include "ring/ring.h"
#include "t_dns.h"

#define T_SHORT_TIMEOUT_MS 100u

Test(dns_resolver, mx_hosts_come_in_preference_order_with_ttls)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "ORDER.test.", &query), ENG_DNS_OK);
	cr_assert_eq(query.mx_count, 4u);
	cr_assert_str_eq(query.mx[0].host, "mx10.order.test");
	cr_assert_eq(query.mx[0].preference, 10);
	cr_assert_str_eq(query.mx[1].host, "mx20.order.test");
	cr_assert_eq(query.mx[1].preference, 20);
	cr_assert_eq(query.mx[2].preference, 30);
	cr_assert_eq(query.mx[3].preference, 30);
	cr_assert(strcmp(query.mx[2].host, "mx30a.order.test") == 0 ||
		  strcmp(query.mx[2].host, "mx30b.order.test") == 0);
	cr_assert_str_neq(query.mx[2].host, query.mx[3].host);
	for (uint32_t i = 0; i < query.mx_count; i++)
		cr_assert_eq(query.mx[i].ttl_s, 60u, "mx %u ttl %u", i, query.mx[i].ttl_s);
	cr_assert_eq(query.ttl_s, 60u);
	const struct eng_dns_stats *stats = eng_dns_stats_get(t.dns);
	cr_assert_eq(stats->queries_started, 1u);
	cr_assert_eq(stats->queries_completed, 1u);
	cr_assert_geq(stats->polls_armed, 1u);
	t_dns_teardown(&t);
}

/* Which of the two preference-30 hosts a resolver seeded with seed puts
 * first. */
static bool
t_first_equal_is_a(struct ring *ring, const char *server, uint64_t seed)
{
	const char *servers[] = { server, NULL };
	struct eng_dns_options options = { .seed = seed };
	struct t_dns t = { .ring = ring };
	t.dns = t_dns_create(ring, servers, &options);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "order.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.mx_count, 4u);
	bool first_is_a = strcmp(query.mx[2].host, "mx30a.order.test") == 0;
	eng_dns_destroy(t.dns);
	return first_is_a;
}

Test(dns_resolver, equal_preferences_are_shuffled_by_the_seed)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	int first_a = 0, first_b = 0;
	for (uint64_t seed = 1; seed <= 24; seed++) {
		if (t_first_equal_is_a(t.ring, t.dnsmasq.server, seed))
			first_a++;
		else
			first_b++;
	}
	cr_assert_gt(first_a, 0, "mx30a never came first");
	cr_assert_gt(first_b, 0, "mx30b never came first");
	/* Same seed, same order: a failure can be replayed. */
	for (uint64_t seed = 5; seed <= 8; seed++)
		cr_assert_eq(t_first_equal_is_a(t.ring, t.dnsmasq.server, seed),
			     t_first_equal_is_a(t.ring, t.dnsmasq.server, seed));
	t_dns_teardown(&t);
}

Test(dns_resolver, domain_without_mx_is_nodata_for_the_a_fallback)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "amail.test", &query), ENG_DNS_NODATA);
	cr_assert_eq(query.mx_count, 0u);
	cr_assert(!eng_dns_status_is_permanent(ENG_DNS_NODATA));
	cr_assert_eq(query.ttl_s, ENG_DNS_NEGATIVE_TTL_S, "no SOA from dnsmasq: fixed TTL");
	t_dns_teardown(&t);
}

Test(dns_resolver, nxdomain_is_permanent)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "nx.test", &query), ENG_DNS_NXDOMAIN);
	cr_assert(eng_dns_status_is_permanent(query.status));
	cr_assert_str_eq(eng_dns_status_enhanced(query.status), "5.1.2");
	cr_assert_eq(query.ttl_s, ENG_DNS_NEGATIVE_TTL_S);
	cr_assert_eq(t_resolve_addr(&t, "missing.noaddr.test", &query), ENG_DNS_NXDOMAIN);
	cr_assert_eq(query.addr_count, 0u);
	t_dns_teardown(&t);
}

Test(dns_resolver, null_mx_is_permanent_5_1_10)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	/* From --mx-host=nullmx.test,.,0 and from a raw --dns-rr record. */
	cr_assert_eq(t_resolve_mx(&t, "nullmx.test", &query), ENG_DNS_NULL_MX);
	cr_assert_eq(query.mx_count, 0u);
	cr_assert(eng_dns_status_is_permanent(query.status));
	cr_assert_str_eq(eng_dns_status_enhanced(query.status), "5.1.10");
	cr_assert_eq(query.ttl_s, 60u);
	cr_assert_eq(t_resolve_mx(&t, "rawnull.test", &query), ENG_DNS_NULL_MX);
	t_dns_teardown(&t);
}

Test(dns_resolver, refused_is_tempfail)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	/* Outside .test dnsmasq has no upstream and answers REFUSED. */
	cr_assert_eq(t_resolve_mx(&t, "elsewhere.example", &query), ENG_DNS_TEMPFAIL);
	cr_assert(!eng_dns_status_is_permanent(query.status));
	cr_assert_str_eq(eng_dns_status_enhanced(query.status), "4.4.3");
	cr_assert_eq(eng_dns_stats_get(t.dns)->lookups_tempfailed, 1u);
	t_dns_teardown(&t);
}

Test(dns_resolver, addresses_of_both_families_with_ttls)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	char text[INET6_ADDRSTRLEN];
	cr_assert_eq(t_resolve_addr(&t, "dual.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.addr_count, 2u);
	cr_assert_eq(query.addr[0].family, AF_INET);
	cr_assert_str_eq(t_addr_text(&query.addr[0], text, sizeof(text)), "127.0.0.4");
	cr_assert_eq(query.addr[1].family, AF_INET6);
	cr_assert_str_eq(t_addr_text(&query.addr[1], text, sizeof(text)), "::1");
	cr_assert_eq(query.addr[0].ttl_s, 60u);
	cr_assert_eq(query.addr[1].ttl_s, 60u);
	cr_assert_eq(eng_dns_stats_get(t.dns)->queries_started, 2u, "A and AAAA");

	cr_assert_eq(t_resolve_addr(&t, "v6.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.addr_count, 1u);
	cr_assert_eq(query.addr[0].family, AF_INET6);

	cr_assert_eq(t_resolve_addr(&t, "mx.ttl.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.addr_count, 1u);
	cr_assert_eq(query.addr[0].ttl_s, 30u);
	cr_assert_eq(query.ttl_s, 30u);

	/* A name with MX only has no address: NODATA. */
	cr_assert_eq(t_resolve_addr(&t, "order.test", &query), ENG_DNS_NODATA);
	t_dns_teardown(&t);
}

Test(dns_resolver, timeout_is_tempfail_and_the_socket_poll_is_removed)
{
	struct ring *ring = t_dns_ring();
	char server[T_DNS_SERVER_SIZE];
	int silent_fd = t_silent_server(server, sizeof(server));
	const char *servers[] = { server, NULL };
	struct eng_dns_options options = { .timeout_ms = T_SHORT_TIMEOUT_MS, .tries = 1 };
	struct t_dns t = { .ring = ring };
	t.dns = t_dns_create(ring, servers, &options);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	uint64_t start_ns = eng_now_monotonic_ns();
	cr_assert_eq(t_resolve_mx(&t, "order.test", &query), ENG_DNS_TEMPFAIL);
	uint64_t elapsed_ms = (eng_now_monotonic_ns() - start_ns) / 1000000u;
	cr_assert_lt(elapsed_ms, 3000u, "a 100 ms timeout took %lu ms", (unsigned long)elapsed_ms);
	const struct eng_dns_stats *stats = eng_dns_stats_get(t.dns);
	cr_assert_geq(stats->timers_fired, 1u);
	/* c-ares closed the socket (no query left) while its poll was
	 * armed: the resolver removed the poll and dropped its CQE. */
	t_dns_run_until_idle(ring, t.dns);
	cr_assert_eq(eng_dns_sockets_open(t.dns), 0u);
	cr_assert_geq(stats->poll_removes, 1u);
	cr_assert_geq(stats->stale_poll_completions, 1u);
	cr_assert_eq(stats->sockets_opened, stats->sockets_closed);
	eng_dns_destroy(t.dns);
	close(silent_fd);
	ring_destroy(ring);
}

struct t_chain {
	struct eng_dns *dns;
	struct eng_dns_query second;
	struct t_seen first_seen;
	struct t_seen second_seen;
};

/* First answer in: start the next lookup at once, from the callback, while
 * the closed socket's poll is still being removed. */
static void
t_chain_first_callback(struct eng_dns_query *query, enum eng_dns_status status)
{
	struct t_chain *chain = query->ctx;
	chain->first_seen.count++;
	chain->first_seen.status = status;
	chain->second.ctx = &chain->second_seen;
	cr_assert_eq(eng_dns_resolve_addr(chain->dns, "amail.test", 10, &chain->second,
					  t_query_callback),
		     0);
}

Test(dns_resolver, socket_closed_during_poll_and_fd_reused_at_once)
{
	struct ring *ring = t_dns_ring();
	struct t_dnsmasq dnsmasq;
	t_dnsmasq_start(&dnsmasq);
	char silent[T_DNS_SERVER_SIZE];
	int silent_fd = t_silent_server(silent, sizeof(silent));
	/* The silent server first: each query times out there, then goes to
	 * dnsmasq. When it ends, c-ares closes both sockets, the silent one
	 * with its poll still armed. */
	const char *servers[] = { silent, dnsmasq.server, NULL };
	struct eng_dns_options options = { .timeout_ms = T_SHORT_TIMEOUT_MS, .tries = 1 };
	struct t_chain chain;
	memset(&chain, 0, sizeof(chain));
	chain.dns = t_dns_create(ring, servers, &options);
	struct eng_dns_query first;
	memset(&first, 0, sizeof(first));
	first.ctx = &chain;
	cr_assert_eq(eng_dns_resolve_mx(chain.dns, "order.test", 10, &first,
					t_chain_first_callback),
		     0);
	t_dns_run_until(ring, &chain.first_seen.count, 1, T_DNS_WAIT_NS);
	cr_assert_eq(chain.first_seen.status, ENG_DNS_OK);
	cr_assert_eq(first.mx_count, 4u);
	t_dns_run_until(ring, &chain.second_seen.count, 1, T_DNS_WAIT_NS);
	cr_assert_eq(chain.second_seen.status, ENG_DNS_OK);
	cr_assert_eq(chain.second.addr_count, 1u);
	t_dns_run_until_idle(ring, chain.dns);
	const struct eng_dns_stats *stats = eng_dns_stats_get(chain.dns);
	cr_assert_geq(stats->poll_removes, 2u, "one per query's silent socket");
	cr_assert_geq(stats->stale_poll_completions, 2u);
	/* The second lookup's socket got the number of the first's silent
	 * socket while that one's poll was still being removed. */
	cr_assert_geq(stats->fds_reused_while_closing, 1u);
	cr_assert_geq(stats->sockets_opened, 4u);
	cr_assert_eq(stats->sockets_opened, stats->sockets_closed);
	cr_assert_eq(stats->sockets_untracked, 0u);
	eng_dns_destroy(chain.dns);
	close(silent_fd);
	t_dnsmasq_stop(&dnsmasq);
	ring_destroy(ring);
}

Test(dns_resolver, destroy_with_queries_pending_calls_back_tempfail)
{
	struct ring *ring = t_dns_ring();
	char server[T_DNS_SERVER_SIZE];
	int silent_fd = t_silent_server(server, sizeof(server));
	const char *servers[] = { server, NULL };
	struct eng_dns_options options = { .timeout_ms = 10000, .tries = 4 };
	struct eng_dns *dns = t_dns_create(ring, servers, &options);
	struct eng_dns_query mx, addr;
	memset(&mx, 0, sizeof(mx));
	memset(&addr, 0, sizeof(addr));
	struct t_seen mx_seen = { 0 }, addr_seen = { 0 };
	mx.ctx = &mx_seen;
	addr.ctx = &addr_seen;
	cr_assert_eq(eng_dns_resolve_mx(dns, "order.test", 10, &mx, t_query_callback), 0);
	cr_assert_eq(eng_dns_resolve_addr(dns, "dual.test", 9, &addr, t_query_callback), 0);
	/* Two turns: polls and the timer are armed and submitted. */
	cr_assert_geq(ring_run_once(ring, 0), 0);
	cr_assert_geq(ring_run_once(ring, 0), 0);
	cr_assert_geq(eng_dns_ops_in_flight(dns), 2u);
	eng_dns_destroy(dns);
	cr_assert_eq(mx_seen.count, 1);
	cr_assert_eq(mx_seen.status, ENG_DNS_TEMPFAIL);
	cr_assert_eq(addr_seen.count, 1);
	cr_assert_eq(addr_seen.status, ENG_DNS_TEMPFAIL);
	cr_assert_eq(ring_ops_in_flight(ring), 0u);
	close(silent_fd);
	ring_destroy(ring);
}

#define T_PARALLEL 64

Test(dns_resolver, many_queries_in_flight_at_once)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	static struct eng_dns_query queries[T_PARALLEL];
	struct t_seen seen[T_PARALLEL];
	memset(queries, 0, sizeof(queries));
	memset(seen, 0, sizeof(seen));
	struct t_seen total = { 0 };
	for (int i = 0; i < T_PARALLEL; i++) {
		queries[i].ctx = &seen[i];
		int ret = (i % 2) ? eng_dns_resolve_addr(t.dns, "dual.test", 9, &queries[i],
							 t_query_callback)
				  : eng_dns_resolve_mx(t.dns, "order.test", 10, &queries[i],
						       t_query_callback);
		cr_assert_eq(ret, 0);
	}
	uint64_t deadline_ns = eng_now_monotonic_ns() + T_DNS_WAIT_NS;
	while (total.count < T_PARALLEL && eng_now_monotonic_ns() < deadline_ns) {
		cr_assert_geq(ring_run_once(t.ring, 100000000ull), 0);
		total.count = 0;
		for (int i = 0; i < T_PARALLEL; i++)
			total.count += seen[i].count;
	}
	cr_assert_eq(total.count, T_PARALLEL);
	for (int i = 0; i < T_PARALLEL; i++) {
		cr_assert_eq(seen[i].count, 1);
		cr_assert_eq(seen[i].status, ENG_DNS_OK, "query %d: %s", i,
			     eng_dns_status_name(seen[i].status));
		if (i % 2)
			cr_assert_eq(queries[i].addr_count, 2u);
		else
			cr_assert_eq(queries[i].mx_count, 4u);
	}
	cr_assert_leq(eng_dns_stats_get(t.dns)->sockets_opened, 2u, "one UDP socket serves all");
	t_dns_teardown(&t);
}

Test(dns_resolver, tcp_queries_poll_for_connect_and_replies)
{
	struct eng_dns_options options = { .use_tcp = true };
	struct t_dns t;
	t_dns_setup(&t, &options);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "order.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.mx_count, 4u);
	cr_assert_eq(t_resolve_addr(&t, "dual.test", &query), ENG_DNS_OK);
	cr_assert_eq(query.addr_count, 2u);
	cr_assert_geq(eng_dns_stats_get(t.dns)->polls_armed, 2u);
	t_dns_teardown(&t);
}

Test(dns_resolver, kept_sockets_stay_polled_between_queries)
{
	struct eng_dns_options options = { .keep_sockets_open = true };
	struct t_dns t;
	t_dns_setup(&t, &options);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	cr_assert_eq(t_resolve_mx(&t, "order.test", &query), ENG_DNS_OK);
	cr_assert_eq(ring_run_once(t.ring, 0) >= 0, true);
	cr_assert_eq(eng_dns_sockets_open(t.dns), 1u);
	cr_assert_eq(t_resolve_mx(&t, "nullmx.test", &query), ENG_DNS_NULL_MX);
	cr_assert_eq(eng_dns_stats_get(t.dns)->sockets_opened, 1u);
	t_dns_teardown(&t);
}

Test(dns_resolver, invalid_names_are_rejected_without_a_callback)
{
	struct t_dns t;
	t_dns_setup(&t, NULL);
	struct eng_dns_query query;
	memset(&query, 0, sizeof(query));
	struct t_seen seen = { 0 };
	query.ctx = &seen;
	const char *bad[] = { "", ".", "a..b", "exa mple.test", "x@y.test", "[127.0.0.1]" };
	for (size_t i = 0; i < ENG_ARRAY_COUNT(bad); i++) {
		cr_assert_eq(eng_dns_resolve_mx(t.dns, bad[i], strlen(bad[i]), &query,
						t_query_callback),
			     -EINVAL, "'%s' accepted", bad[i]);
		cr_assert_eq(eng_dns_resolve_addr(t.dns, bad[i], strlen(bad[i]), &query,
						  t_query_callback),
			     -EINVAL);
	}
	cr_assert_eq(eng_dns_resolve_mx(t.dns, "a\0b", 3, &query, t_query_callback), -EINVAL);
	cr_assert_eq(ring_run_once(t.ring, 1000000ull), 0);
	cr_assert_eq(seen.count, 0);
	cr_assert_eq(eng_dns_stats_get(t.dns)->queries_started, 0u);
	t_dns_teardown(&t);
}

Test(dns_resolver, bad_server_strings_fail_create)
{
	struct ring *ring = t_dns_ring();
	char err[256] = "";
	const char *bad[] = { "127.0.0.1:53; rm", NULL };
	cr_assert_null(eng_dns_create(ring, bad, NULL, err, sizeof(err)));
	cr_assert(strstr(err, "dns_servers") != NULL, "err: %s", err);
	const char *empty[] = { NULL };
	cr_assert_null(eng_dns_create(ring, empty, NULL, err, sizeof(err)));
	const char *nine[] = { "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1",
			       "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", NULL };
	cr_assert_null(eng_dns_create(ring, nine, NULL, err, sizeof(err)));
	ring_destroy(ring);
}
