/*
 * eng_dns.h - asynchronous MX and address resolution on a shard's ring
 * (c-ares), and the shard's TTL cache that turns a domain into an ordered
 * delivery route (RFC 5321 section 5.1, RFC 7505).
 *
 * Resolver (struct eng_dns). One per shard, used only by the thread that
 * runs the shard's ring. c-ares builds the queries, owns its sockets and
 * parses the answers; ringmail never blocks on them: every socket c-ares
 * opens is watched with a one-shot IORING_OP_POLL_ADD through the ring and
 * c-ares's timeouts run on one ring timeout op. Readiness and timer
 * completions call ares_process_fd(); the resolver re-arms what c-ares
 * still wants in a ring loop hook, once per loop turn, before the submit.
 * At most ENG_DNS_SOCKETS_MAX sockets are tracked (per-fd slots with
 * generation counters, so a poll completion for a socket c-ares has since
 * closed is recognised and dropped).
 *
 * Queries. The caller owns struct eng_dns_query (embed it in a destination
 * or session) and keeps it alive and untouched until its callback runs.
 * Callbacks always run from the ring loop (a completion of one of the
 * resolver's ops), never from inside eng_dns_resolve_*() and never from
 * inside c-ares. Don't destroy the resolver from a callback. Results are
 * copied into the query: no allocation by ringmail after eng_dns_create()
 * (c-ares allocates its own query state).
 *
 * Status mapping (docs/dns.md): NXDOMAIN is permanent (the domain does not
 * exist); NODATA for MX means "fall back to the domain's own A/AAAA"
 * (RFC 5321 5.1); a null MX (RFC 7505: one MX whose exchange is ".") is
 * permanent, 5.1.10; SERVFAIL, REFUSED, timeouts, malformed answers and
 * resolver shutdown are TEMPFAIL: defer, never bounce.
 *
 * Cache (struct eng_dns_cache). One per shard on top of its resolver:
 * bounded entries allocated at creation, clock eviction, positive answers
 * kept for their TTL (capped), NXDOMAIN and NODATA kept for the SOA
 * negative TTL (RFC 2308 section 5) or a fixed 5 minutes, TEMPFAIL never
 * kept. eng_dns_route_resolve() answers from the cache synchronously when
 * it can; otherwise it resolves what is missing and calls back.
 *
 * DNS data is peer input: it is validated and mapped to a status, never
 * asserted on. Programmer errors (a busy query reused, a NULL argument)
 * hit ENG_ASSERT.
 */
#ifndef ENG_DNS_H
#define ENG_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ring;
struct eng_dns;
struct eng_dns_cache;

/* A host name as text: 253 characters (RFC 1035 2.3.4: 255 octets on the
 * wire) and the NUL. */
#define ENG_DNS_NAME_SIZE 256u
/* MX hosts kept per domain, lowest preferences first. Postfix tries at
 * most 5 addresses (smtp_mx_address_limit); 10 hosts is ample. */
#define ENG_DNS_MX_MAX 10u
/* Addresses kept per host name, at most half of them of one family when
 * both families answered. */
#define ENG_DNS_ADDR_MAX 8u
/* Sockets c-ares may have open at once (one UDP and one TCP per server,
 * plus ones closing). */
#define ENG_DNS_SOCKETS_MAX 64u
/* Servers in an explicit list (dns_servers). */
#define ENG_DNS_SERVERS_MAX 8u
/* Negative answers without an SOA are cached this long (RFC 2308 allows
 * any value; 5 minutes is what Postfix's and unbound's users expect). */
#define ENG_DNS_NEGATIVE_TTL_S 300u
/* Caps: RFC 2308 section 5 suggests 1-3 hours for negative answers. */
#define ENG_DNS_NEGATIVE_TTL_MAX_S 10800u
#define ENG_DNS_TTL_MAX_S 86400u

_Static_assert(ENG_DNS_MX_MAX >= 2, "keep at least a primary and a backup MX");
_Static_assert(ENG_DNS_ADDR_MAX >= 2 && ENG_DNS_ADDR_MAX % 2 == 0, "both families fit");
_Static_assert(ENG_DNS_SOCKETS_MAX >= 2 * ENG_DNS_SERVERS_MAX, "UDP + TCP per server");

enum eng_dns_status {
	ENG_DNS_OK = 0,
	ENG_DNS_NXDOMAIN,   /* the name does not exist: permanent, 5.1.2 */
	ENG_DNS_NODATA,	    /* the name exists, no record of the type asked */
	ENG_DNS_NULL_MX,    /* RFC 7505 null MX: permanent, 5.1.10 */
	ENG_DNS_TEMPFAIL,   /* SERVFAIL, REFUSED, timeout, bad answer: defer, 4.4.3 */
	ENG_DNS_NO_ADDRESS, /* route only: no MX host has an address, 5.4.4 */
	ENG_DNS_STATUS_COUNT,
};

struct eng_dns_mx {
	char host[ENG_DNS_NAME_SIZE]; /* lower case, no trailing dot */
	uint16_t preference;
	uint32_t ttl_s;
};

struct eng_dns_addr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t bytes[16]; /* network order; 4 used for AF_INET */
	uint32_t ttl_s;
};

struct eng_dns_query;
/* Completion: status is also in query->status. The query may be reused
 * (or freed) from inside the callback. */
typedef void eng_dns_callback_fn(struct eng_dns_query *query, enum eng_dns_status status);

enum eng_dns_query_kind {
	ENG_DNS_QUERY_NONE = 0,
	ENG_DNS_QUERY_MX,
	ENG_DNS_QUERY_ADDR,
};

/* One c-ares query of a lookup (MX: one; address: A and AAAA). */
struct eng_dns_part {
	struct eng_dns_query *query;
	uint32_t ttl_s;
	uint8_t status; /* enum eng_dns_status */
	bool done;
};

struct eng_dns_query {
	/* Free for the caller. */
	void *ctx;
	/* Results, valid in the callback. ttl_s: how long the whole answer
	 * may be kept (lowest record TTL, or the negative TTL). */
	enum eng_dns_status status;
	uint32_t ttl_s;
	uint32_t mx_count;
	struct eng_dns_mx mx[ENG_DNS_MX_MAX]; /* by preference, equals shuffled */
	uint32_t addr_count;
	struct eng_dns_addr addr[ENG_DNS_ADDR_MAX]; /* IPv4 first, then IPv6 */
	/* Private to eng_dns.c. */
	struct eng_dns *dns;
	eng_dns_callback_fn *callback;
	struct eng_dns_query *completed_next;
	uint8_t kind; /* enum eng_dns_query_kind */
	uint8_t parts_pending;
	bool busy;
	struct eng_dns_part parts[2];
	uint32_t addr6_count;
	struct eng_dns_addr addr6[ENG_DNS_ADDR_MAX]; /* AAAA answers before the merge */
	char name[ENG_DNS_NAME_SIZE];
};

struct eng_dns_options {
	uint32_t timeout_ms; /* first try per server; 0: c-ares default (5 s) */
	uint32_t tries;	     /* rounds over the servers; 0: c-ares default (4) */
	uint64_t seed;	     /* PRNG for equal preferences; 0: from getrandom() */
	uint32_t negative_ttl_s; /* NXDOMAIN/NODATA without SOA; 0: ENG_DNS_NEGATIVE_TTL_S */
	/* Keep c-ares's sockets open between queries (ARES_FLAG_STAYOPEN).
	 * Off: sockets close whenever no query is pending. */
	bool keep_sockets_open;
	bool use_tcp; /* every query over TCP (ARES_FLAG_USEVC) */
};

struct eng_dns_stats {
	uint64_t queries_started;	 /* c-ares queries (an address lookup is two) */
	uint64_t queries_completed;
	uint64_t lookups_tempfailed;
	uint64_t sockets_opened;
	uint64_t sockets_closed;
	uint64_t sockets_untracked;	 /* no free slot: left to c-ares's timeout */
	uint64_t polls_armed;
	uint64_t poll_removes;		 /* socket closed or interest grew */
	uint64_t poll_errors;		 /* poll completed with an unexpected -errno */
	uint64_t stale_poll_completions; /* CQE for a socket closed meanwhile */
	uint64_t fds_reused_while_closing; /* new socket, same fd, old poll in flight */
	uint64_t timers_armed;
	uint64_t timers_fired;
	uint64_t sqe_busy;		 /* arming deferred to the next turn */
};

/*
 * Create a resolver on ring, for use on the calling (ring) thread only.
 * servers: NULL-terminated list of "ip", "ip:port" or "[ipv6]:port"
 * strings (at most ENG_DNS_SERVERS_MAX), or NULL to use /etc/resolv.conf.
 * options may be NULL (all defaults). Adds one hook to the ring. Returns
 * NULL with a reason in err on failure (bad server string, c-ares init).
 */
struct eng_dns *eng_dns_create(struct ring *ring, const char *const *servers,
			       const struct eng_dns_options *options, char *err, size_t err_size);
/*
 * Destroy: pending queries complete with ENG_DNS_TEMPFAIL (their callbacks
 * run inside this call; resolves started from them complete likewise),
 * c-ares closes its sockets, and the ring is run until the resolver's own
 * ops (polls, removes, timer) have completed, which may run other ring
 * callbacks. Call from the ring thread, outside any ring callback.
 */
void eng_dns_destroy(struct eng_dns *dns);

/*
 * MX lookup of domain (domain_len bytes, not NUL-terminated; a trailing
 * dot is allowed). Borrows domain until return. On completion query
 * holds: OK with mx_count >= 1 hosts by preference (equal preferences in
 * a random order from the resolver's PRNG), each with its TTL; NODATA (no
 * MX: the caller falls back to the domain's A/AAAA); NULL_MX; NXDOMAIN;
 * or TEMPFAIL. Returns 0 (callback will run) or -EINVAL for a name that
 * is not a valid host name (no callback; a permanent failure).
 */
int eng_dns_resolve_mx(struct eng_dns *dns, const char *domain, size_t domain_len,
		       struct eng_dns_query *query, eng_dns_callback_fn *callback)
	__attribute__((warn_unused_result));
/*
 * A and AAAA lookup of name, both at once. OK when either family has an
 * address (addr_count >= 1, each with its TTL); NODATA when the name has
 * neither; NXDOMAIN; TEMPFAIL when neither answered and one failed.
 * Returns 0 or -EINVAL as eng_dns_resolve_mx().
 */
int eng_dns_resolve_addr(struct eng_dns *dns, const char *name, size_t name_len,
			 struct eng_dns_query *query, eng_dns_callback_fn *callback)
	__attribute__((warn_unused_result));

const struct eng_dns_stats *eng_dns_stats_get(const struct eng_dns *dns);
/* The resolver's ring ops in flight (polls, removes, timer, cancels). */
uint32_t eng_dns_ops_in_flight(const struct eng_dns *dns);
/* Sockets c-ares has open and the resolver tracks. */
uint32_t eng_dns_sockets_open(const struct eng_dns *dns);

const char *eng_dns_status_name(enum eng_dns_status status);
/* NXDOMAIN, NULL_MX and NO_ADDRESS: bounce. NODATA is not final (MX
 * fallback); TEMPFAIL defers. */
bool eng_dns_status_is_permanent(enum eng_dns_status status);
/* Enhanced status code (RFC 3463, RFC 7505) for a failed route, or NULL
 * for OK and NODATA. */
const char *eng_dns_status_enhanced(enum eng_dns_status status);
/* Fill a socket address for addr and port. Returns its length. */
uint32_t eng_dns_addr_to_sockaddr(const struct eng_dns_addr *addr, uint16_t port,
				  struct sockaddr_storage *out);

/*
 * Pure helpers, exposed for tests.
 *
 * eng_dns_name_normalize: validate a host name (labels of 1-63 letters,
 * digits, '-' or '_', at most 253 characters, one trailing dot allowed)
 * and write it in lower case without the trailing dot. Returns its length
 * or 0 when invalid. out holds ENG_DNS_NAME_SIZE bytes.
 */
size_t eng_dns_name_normalize(const char *name, size_t name_len, char *out);

/* TTLs of a DNS answer (c-ares 1.18 parsers do not report them for MX). */
#define ENG_DNS_TTL_NONE UINT32_MAX
struct eng_dns_packet_ttls {
	uint32_t answer_min_s;	/* lowest TTL in the answer section, or NONE */
	uint32_t negative_s;	/* min(SOA TTL, SOA MINIMUM) in authority, or NONE */
	uint32_t mx_count;	/* MX records in the answer section ... */
	uint32_t mx_ttl_s[ENG_DNS_MX_MAX]; /* ... the TTLs of the first ones, in order */
};
/* Walk the header, question, answer and authority sections of packet with
 * bounds checks. Returns false for a malformed or truncated packet. */
bool eng_dns_packet_ttls(const uint8_t *packet, size_t packet_len, struct eng_dns_packet_ttls *out);

/* Sort mx by preference and shuffle each run of equal preferences with the
 * xorshift64* PRNG state *rand_state. */
void eng_dns_mx_order(struct eng_dns_mx *mx, uint32_t mx_count, uint64_t *rand_state);

/*
 * Cache and routes.
 */
struct eng_dns_cache_params {
	uint32_t entries_max;	 /* MX and address answers together; 0: 1024 */
	uint32_t ttl_max_s;	 /* 0: ENG_DNS_TTL_MAX_S */
};

struct eng_dns_cache_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t insertions;
	uint64_t evictions; /* live entries pushed out by the clock hand */
	uint32_t entries;   /* in use */
};

/* Create a cache over dns (which must outlive it). Allocates all entries
 * now. Returns NULL with err on failure. */
struct eng_dns_cache *eng_dns_cache_create(struct eng_dns *dns,
					   const struct eng_dns_cache_params *params, char *err,
					   size_t err_size);
void eng_dns_cache_destroy(struct eng_dns_cache *cache);
const struct eng_dns_cache_stats *eng_dns_cache_stats_get(const struct eng_dns_cache *cache);

/* One delivery hop: an MX host (or the domain itself as implicit MX) and
 * its addresses. status: OK with addresses, or why it has none. */
struct eng_dns_hop {
	char host[ENG_DNS_NAME_SIZE];
	uint16_t preference;
	uint8_t status; /* enum eng_dns_status */
	uint32_t addr_count;
	struct eng_dns_addr addr[ENG_DNS_ADDR_MAX];
};

struct eng_dns_route {
	enum eng_dns_status status; /* OK, NXDOMAIN, NULL_MX, NO_ADDRESS, TEMPFAIL */
	bool implicit_mx;	    /* no MX: the domain's own addresses (RFC 5321 5.1) */
	uint32_t hop_count;
	struct eng_dns_hop hops[ENG_DNS_MX_MAX]; /* try in this order */
	uint64_t expires_ns; /* earliest expiry of the answers used */
};

struct eng_dns_route_query;
typedef void eng_dns_route_fn(struct eng_dns_route_query *route_query,
			      enum eng_dns_status status);

struct eng_dns_route_query {
	void *ctx; /* free for the caller */
	struct eng_dns_route route;
	/* Private to eng_dns.c. */
	struct eng_dns_cache *cache;
	eng_dns_route_fn *callback;
	uint64_t now_ns;
	uint32_t hop_index;
	bool busy;
	struct eng_dns_query query;
	char domain[ENG_DNS_NAME_SIZE];
};

enum eng_dns_start {
	ENG_DNS_START_PENDING = 0, /* the callback will run */
	ENG_DNS_START_DONE,	   /* answered from the cache: route filled, no callback */
	ENG_DNS_START_INVALID,	   /* not a valid domain name: no callback, permanent */
};

/*
 * Resolve domain to its delivery route at time now_ns (any monotonic
 * clock, the same one for every call on this cache): MX hosts in
 * preference order (equal preferences shuffled on every call) each with
 * its addresses; with no MX the domain itself as the only hop, preference
 * 0; a null MX, NXDOMAIN or no address at all are permanent; TEMPFAIL
 * when the MX lookup failed, or when no hop has an address and one lookup
 * failed. Hops whose lookups failed stay in the list with their status
 * and no address. Borrows domain until return; route_query is owned by
 * the cache until DONE/INVALID is returned or the callback runs.
 */
enum eng_dns_start eng_dns_route_resolve(struct eng_dns_cache *cache, const char *domain,
					 size_t domain_len, uint64_t now_ns,
					 struct eng_dns_route_query *route_query,
					 eng_dns_route_fn *callback)
	__attribute__((warn_unused_result));

#endif /* ENG_DNS_H */
