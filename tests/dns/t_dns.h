/*
 * t_dns.h - helpers for the DNS tests: a real dnsmasq on a free loopback
 * port (started with fork/exec, ready when it answers a query, killed with
 * the test process), a "silent" UDP server that never answers, and a
 * bounded ring-loop driver.
 *
 * Zone served by every dnsmasq started here (all under .test, answered
 * locally, TTL 60 unless noted; anything else is REFUSED):
 *   order.test      MX 10 mx10, 20 mx20, 30 mx30a, 30 mx30b (.order.test),
 *                   each host with one A record 127.0.0.{10,20,31,32}
 *   amail.test      no MX, A 127.0.0.3
 *   nullmx.test     MX 0 "."   (--mx-host=nullmx.test,.,0)
 *   rawnull.test    MX 0 "."   (--dns-rr raw record, type 15)
 *   dual.test       A 127.0.0.4, AAAA ::1
 *   v6.test         AAAA ::1 only
 *   noaddr.test     MX 10 missing.noaddr.test, which does not exist
 *   ttl.test        MX 10 mx.ttl.test (TTL 60), whose A 127.0.0.5 has TTL 30
 *   *.wild.test     A 127.0.0.9; MX and AAAA are NXDOMAIN
 *   anything else under .test: NXDOMAIN
 *
 * Only 127.0.0.x addresses are used anywhere: the tests never leave the
 * machine.
 */
#ifndef T_DNS_H
#define T_DNS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/eng_dns.h"

#define T_DNS_WAIT_NS (10ull * 1000000000ull)
#define T_DNS_SERVER_SIZE 32u

struct ring;

struct t_dnsmasq {
	pid_t pid;
	uint16_t port;
	char server[T_DNS_SERVER_SIZE]; /* "127.0.0.1:PORT" */
};

/* Path of the dnsmasq binary, or NULL when it is not installed. */
const char *t_dnsmasq_path(void);
/* Start dnsmasq on a free port and wait (bounded) until it answers. */
void t_dnsmasq_start(struct t_dnsmasq *dnsmasq);
void t_dnsmasq_stop(struct t_dnsmasq *dnsmasq);

/* A UDP socket bound to 127.0.0.1 that is never read: queries to it time
 * out. Returns the fd; *server gets "127.0.0.1:PORT". */
int t_silent_server(char *server, size_t server_size);

/* A ring for a DNS test (skips when io_uring is unusable). */
struct ring *t_dns_ring(void);

/* Run ring turns until *count >= target or wait_ns passed; asserts. */
void t_dns_run_until(struct ring *ring, const int *count, int target, uint64_t wait_ns);
/* Run ring turns until the resolver has no op in flight; asserts. */
void t_dns_run_until_idle(struct ring *ring, const struct eng_dns *dns);

/* The common fixture: a ring, a dnsmasq, and a resolver on it. */
struct t_dns {
	struct ring *ring;
	struct t_dnsmasq dnsmasq;
	struct eng_dns *dns;
};

void t_dns_setup(struct t_dns *t, const struct eng_dns_options *options);
void t_dns_teardown(struct t_dns *t);
struct eng_dns *t_dns_create(struct ring *ring, const char *const *servers,
			     const struct eng_dns_options *options);

/* What a query callback saw. */
struct t_seen {
	int count;
	enum eng_dns_status status;
};
void t_query_callback(struct eng_dns_query *query, enum eng_dns_status status);

/* Resolve and wait for the answer. */
enum eng_dns_status t_resolve_mx(struct t_dns *t, const char *domain, struct eng_dns_query *query);
enum eng_dns_status t_resolve_addr(struct t_dns *t, const char *name, struct eng_dns_query *query);

/* Format an address as text into out (INET6_ADDRSTRLEN bytes). */
const char *t_addr_text(const struct eng_dns_addr *addr, char *out, size_t out_size);

#endif /* T_DNS_H */
