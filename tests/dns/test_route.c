/*
 * test_route.c - eng_dns_cache and eng_dns_route_resolve against a real
 * dnsmasq (t_dns.h for the zone): MX hosts with their addresses in order,
 * the implicit MX of a domain without MX, null MX / NXDOMAIN / no address
 * as permanent, cache hits that send no query (counted), TTL expiry and
 * negative-cache expiry on a virtual clock, TEMPFAIL never cached, the
 * entry bound with clock eviction, and equal preferences reshuffled on
 * every cache hit.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <string.h>
#include <sys/socket.h>

#include "engine/eng_common.h"
#include "engine/eng_dns.h"
#include "ring/ring.h"
#include "t_dns.h"

#define T_S (1000000000ull)
/* An arbitrary virtual start time: the cache only compares times. */
#define T_NOW0 (1000ull * T_S)

struct t_route_env {
	struct t_dns t;
	struct eng_dns_cache *cache;
	struct eng_dns_route_query query;
	struct t_seen seen;
};

static void
t_route_callback(struct eng_dns_route_query *query, enum eng_dns_status status)
{
	struct t_seen *seen = query->ctx;
	seen->count++;
	seen->status = status;
	cr_assert_eq(query->route.status, status);
}

static void
t_route_setup(struct t_route_env *env, uint32_t entries_max)
{
	memset(env, 0, sizeof(*env));
	struct eng_dns_options options = { .seed = 7 };
	t_dns_setup(&env->t, &options);
	struct eng_dns_cache_params params = { .entries_max = entries_max };
	char err[256] = "";
	env->cache = eng_dns_cache_create(env->t.dns, &params, err, sizeof(err));
	cr_assert_not_null(env->cache, "eng_dns_cache_create: %s", err);
}

static void
t_route_teardown(struct t_route_env *env)
{
	eng_dns_cache_destroy(env->cache);
	t_dns_teardown(&env->t);
}

/* Resolve domain at now_ns; *start_out gets whether it came from the cache. */
static enum eng_dns_status
t_route(struct t_route_env *env, const char *domain, uint64_t now_ns, enum eng_dns_start *start_out)
{
	env->seen = (struct t_seen){ 0 };
	env->query.ctx = &env->seen;
	enum eng_dns_start start = eng_dns_route_resolve(env->cache, domain, strlen(domain), now_ns,
							  &env->query, t_route_callback);
	cr_assert_neq(start, ENG_DNS_START_INVALID, "%s rejected", domain);
	if (start_out != NULL)
		*start_out = start;
	if (start == ENG_DNS_START_DONE) {
		cr_assert_eq(env->seen.count, 0, "DONE must not call back");
		return env->query.route.status;
	}
	t_dns_run_until(env->t.ring, &env->seen.count, 1, T_DNS_WAIT_NS);
	cr_assert_eq(env->seen.count, 1);
	return env->seen.status;
}

static uint64_t
t_queries(const struct t_route_env *env)
{
	return eng_dns_stats_get(env->t.dns)->queries_started;
}

static void
t_assert_hop(const struct eng_dns_hop *hop, const char *host, uint16_t preference,
	     const char *address)
{
	char text[INET6_ADDRSTRLEN];
	cr_assert_str_eq(hop->host, host);
	cr_assert_eq(hop->preference, preference);
	cr_assert_eq(hop->status, ENG_DNS_OK);
	cr_assert_eq(hop->addr_count, 1u, "%s: %u addresses", host, hop->addr_count);
	cr_assert_str_eq(t_addr_text(&hop->addr[0], text, sizeof(text)), address);
}

Test(dns_route, mx_hosts_with_addresses_in_preference_order)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	cr_assert_eq(t_route(&env, "order.test", T_NOW0, NULL), ENG_DNS_OK);
	const struct eng_dns_route *route = &env.query.route;
	cr_assert(!route->implicit_mx);
	cr_assert_eq(route->hop_count, 4u);
	t_assert_hop(&route->hops[0], "mx10.order.test", 10, "127.0.0.10");
	t_assert_hop(&route->hops[1], "mx20.order.test", 20, "127.0.0.20");
	bool a_first = strcmp(route->hops[2].host, "mx30a.order.test") == 0;
	t_assert_hop(&route->hops[a_first ? 2 : 3], "mx30a.order.test", 30, "127.0.0.31");
	t_assert_hop(&route->hops[a_first ? 3 : 2], "mx30b.order.test", 30, "127.0.0.32");
	cr_assert_eq(route->expires_ns, T_NOW0 + 60 * T_S);
	/* One MX query, then A + AAAA for each of the four hosts. */
	cr_assert_eq(t_queries(&env), 1u + 4u * 2u);
	t_route_teardown(&env);
}

Test(dns_route, domain_without_mx_is_its_own_mx_at_preference_0)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	cr_assert_eq(t_route(&env, "amail.test", T_NOW0, NULL), ENG_DNS_OK);
	const struct eng_dns_route *route = &env.query.route;
	cr_assert(route->implicit_mx);
	cr_assert_eq(route->hop_count, 1u);
	t_assert_hop(&route->hops[0], "amail.test", 0, "127.0.0.3");
	t_route_teardown(&env);
}

Test(dns_route, null_mx_nxdomain_and_no_address_are_permanent)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	cr_assert_eq(t_route(&env, "nullmx.test", T_NOW0, NULL), ENG_DNS_NULL_MX);
	cr_assert_eq(env.query.route.hop_count, 0u);
	cr_assert_str_eq(eng_dns_status_enhanced(ENG_DNS_NULL_MX), "5.1.10");
	cr_assert_eq(t_route(&env, "nx.test", T_NOW0, NULL), ENG_DNS_NXDOMAIN);
	cr_assert_eq(env.query.route.hop_count, 0u);
	/* MX host that does not exist: the hop stays, without addresses. */
	cr_assert_eq(t_route(&env, "noaddr.test", T_NOW0, NULL), ENG_DNS_NO_ADDRESS);
	cr_assert_eq(env.query.route.hop_count, 1u);
	cr_assert_eq(env.query.route.hops[0].status, ENG_DNS_NXDOMAIN);
	cr_assert_eq(env.query.route.hops[0].addr_count, 0u);
	cr_assert(eng_dns_status_is_permanent(ENG_DNS_NO_ADDRESS));
	t_route_teardown(&env);
}

Test(dns_route, cache_hit_sends_no_query)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	enum eng_dns_start start;
	cr_assert_eq(t_route(&env, "order.test", T_NOW0, &start), ENG_DNS_OK);
	cr_assert_eq(start, ENG_DNS_START_PENDING);
	uint64_t queries = t_queries(&env);
	uint64_t hits = eng_dns_cache_stats_get(env.cache)->hits;
	cr_assert_eq(t_route(&env, "order.test", T_NOW0 + 59 * T_S, &start), ENG_DNS_OK);
	cr_assert_eq(start, ENG_DNS_START_DONE);
	cr_assert_eq(t_queries(&env), queries, "a cache hit sent a query");
	cr_assert_eq(eng_dns_cache_stats_get(env.cache)->hits, hits + 5, "MX and 4 hosts");
	cr_assert_eq(env.query.route.hop_count, 4u);
	cr_assert_eq(env.query.route.hops[0].addr_count, 1u);
	/* Another domain sharing nothing: queries again. */
	cr_assert_eq(t_route(&env, "amail.test", T_NOW0, &start), ENG_DNS_OK);
	cr_assert_eq(start, ENG_DNS_START_PENDING);
	cr_assert_gt(t_queries(&env), queries);
	t_route_teardown(&env);
}

Test(dns_route, expired_answers_are_queried_again)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	enum eng_dns_start start;
	/* ttl.test: MX TTL 60, its host's A TTL 30. */
	cr_assert_eq(t_route(&env, "ttl.test", T_NOW0, &start), ENG_DNS_OK);
	cr_assert_eq(env.query.route.expires_ns, T_NOW0 + 30 * T_S);
	uint64_t queries = t_queries(&env);
	cr_assert_eq(queries, 3u, "MX, A, AAAA");
	cr_assert_eq(t_route(&env, "ttl.test", T_NOW0 + 29 * T_S, &start), ENG_DNS_OK);
	cr_assert_eq(start, ENG_DNS_START_DONE);
	cr_assert_eq(t_queries(&env), queries);
	/* At 31 s the address has expired, the MX has not. */
	cr_assert_eq(t_route(&env, "ttl.test", T_NOW0 + 31 * T_S, &start), ENG_DNS_OK);
	cr_assert_eq(start, ENG_DNS_START_PENDING);
	cr_assert_eq(t_queries(&env), queries + 2, "only A and AAAA again");
	t_assert_hop(&env.query.route.hops[0], "mx.ttl.test", 10, "127.0.0.5");
	/* At 61 s both have expired. */
	cr_assert_eq(t_route(&env, "ttl.test", T_NOW0 + 61 * T_S, &start), ENG_DNS_OK);
	cr_assert_eq(t_queries(&env), queries + 2 + 3);
	t_route_teardown(&env);
}

Test(dns_route, nxdomain_is_cached_for_the_negative_ttl)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	enum eng_dns_start start;
	cr_assert_eq(t_route(&env, "nx.test", T_NOW0, &start), ENG_DNS_NXDOMAIN);
	uint64_t queries = t_queries(&env);
	/* No SOA from dnsmasq: the fixed 5 minutes. */
	cr_assert_eq(env.query.route.expires_ns, T_NOW0 + ENG_DNS_NEGATIVE_TTL_S * T_S);
	cr_assert_eq(t_route(&env, "NX.test", T_NOW0 + 299 * T_S, &start), ENG_DNS_NXDOMAIN);
	cr_assert_eq(start, ENG_DNS_START_DONE);
	cr_assert_eq(t_queries(&env), queries);
	cr_assert_eq(t_route(&env, "nx.test", T_NOW0 + 301 * T_S, &start), ENG_DNS_NXDOMAIN);
	cr_assert_eq(start, ENG_DNS_START_PENDING);
	cr_assert_eq(t_queries(&env), queries + 1);
	t_route_teardown(&env);
}

Test(dns_route, tempfail_is_not_cached)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	enum eng_dns_start start;
	cr_assert_eq(t_route(&env, "elsewhere.example", T_NOW0, &start), ENG_DNS_TEMPFAIL);
	uint64_t queries = t_queries(&env);
	cr_assert_eq(t_route(&env, "elsewhere.example", T_NOW0, &start), ENG_DNS_TEMPFAIL);
	cr_assert_eq(start, ENG_DNS_START_PENDING);
	cr_assert_eq(t_queries(&env), queries + 1);
	cr_assert_eq(eng_dns_cache_stats_get(env.cache)->entries, 0u);
	t_route_teardown(&env);
}

Test(dns_route, cache_is_bounded_and_evicts_with_the_clock)
{
	struct t_route_env env;
	t_route_setup(&env, 4);
	char domain[64];
	/* *.wild.test MX is NXDOMAIN: one negative entry per domain. */
	for (int i = 1; i <= 8; i++) {
		snprintf(domain, sizeof(domain), "d%d.wild.test", i);
		cr_assert_eq(t_route(&env, domain, T_NOW0, NULL), ENG_DNS_NXDOMAIN);
		cr_assert_leq(eng_dns_cache_stats_get(env.cache)->entries, 4u);
	}
	const struct eng_dns_cache_stats *stats = eng_dns_cache_stats_get(env.cache);
	cr_assert_eq(stats->entries, 4u);
	cr_assert_eq(stats->evictions, 4u);
	enum eng_dns_start start;
	cr_assert_eq(t_route(&env, "d8.wild.test", T_NOW0, &start), ENG_DNS_NXDOMAIN);
	cr_assert_eq(start, ENG_DNS_START_DONE, "the newest entry should still be cached");
	cr_assert_eq(t_route(&env, "d1.wild.test", T_NOW0, &start), ENG_DNS_NXDOMAIN);
	cr_assert_eq(start, ENG_DNS_START_PENDING, "the oldest entry should have been evicted");
	cr_assert_eq(stats->entries, 4u);
	t_route_teardown(&env);
}

Test(dns_route, equal_preferences_reshuffled_on_every_cache_hit)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	cr_assert_eq(t_route(&env, "order.test", T_NOW0, NULL), ENG_DNS_OK);
	uint64_t queries = t_queries(&env);
	int a_first = 0, b_first = 0;
	for (int i = 0; i < 32; i++) {
		enum eng_dns_start start;
		cr_assert_eq(t_route(&env, "order.test", T_NOW0 + T_S, &start), ENG_DNS_OK);
		cr_assert_eq(start, ENG_DNS_START_DONE);
		const struct eng_dns_route *route = &env.query.route;
		cr_assert_str_eq(route->hops[0].host, "mx10.order.test");
		cr_assert_str_eq(route->hops[1].host, "mx20.order.test");
		if (strcmp(route->hops[2].host, "mx30a.order.test") == 0)
			a_first++;
		else
			b_first++;
		/* Each host keeps its own addresses whatever the order. */
		char text[INET6_ADDRSTRLEN];
		const char *expect = strcmp(route->hops[2].host, "mx30a.order.test") == 0 ?
					     "127.0.0.31" :
					     "127.0.0.32";
		cr_assert_str_eq(t_addr_text(&route->hops[2].addr[0], text, sizeof(text)), expect);
	}
	cr_assert_gt(a_first, 0);
	cr_assert_gt(b_first, 0);
	cr_assert_eq(t_queries(&env), queries);
	t_route_teardown(&env);
}

Test(dns_route, invalid_domain_is_rejected)
{
	struct t_route_env env;
	t_route_setup(&env, 0);
	env.query.ctx = &env.seen;
	cr_assert_eq(eng_dns_route_resolve(env.cache, "bad..test", 9, T_NOW0, &env.query,
					   t_route_callback),
		     ENG_DNS_START_INVALID);
	cr_assert_eq(env.seen.count, 0);
	cr_assert_eq(t_queries(&env), 0u);
	t_route_teardown(&env);
}
