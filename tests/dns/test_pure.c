/*
 * test_pure.c - the resolver's pure helpers, no server needed: host name
 * validation, the TTL walk over hand-built DNS packets (including every
 * truncation of them: DNS data is peer input and must never crash us),
 * MX ordering with seeded shuffles, status mapping, socket addresses.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>

#include "engine/eng_common.h"
#include "engine/eng_dns.h"

struct t_name_case {
	const char *in;
	size_t len;
	const char *out; /* NULL: invalid */
};

Test(dns_pure, name_normalize_accepts_host_names_and_lowers_case)
{
	static char long_label[70];
	memset(long_label, 'a', 64);
	static char long_name[300];
	for (size_t i = 0; i < 254; i++)
		long_name[i] = (i % 2) ? '.' : 'a';
	long_name[253] = 'a'; /* 254 characters */
	static char max_name[300];
	memcpy(max_name, long_name, 253); /* 253 characters, ends in 'a' */
	const struct t_name_case cases[] = {
		{ "Example.COM", 11, "example.com" },
		{ "example.com.", 12, "example.com" },
		{ "mx_1-a.test", 11, "mx_1-a.test" },
		{ "a", 1, "a" },
		{ long_label, 63, NULL }, /* checked below: 63 is fine */
		{ long_label, 64, NULL },
		{ "", 0, NULL },
		{ ".", 1, NULL },
		{ "a..b", 4, NULL },
		{ ".a", 2, NULL },
		{ "a.b..", 5, NULL },
		{ "exa mple.com", 12, NULL },
		{ "a\0b", 3, NULL },
		{ "[127.0.0.1]", 11, NULL },
		{ "caf\xc3\xa9.test", 10, NULL },
		{ long_name, 254, NULL },
	};
	char out[ENG_DNS_NAME_SIZE];
	for (size_t i = 0; i < ENG_ARRAY_COUNT(cases); i++) {
		size_t len = eng_dns_name_normalize(cases[i].in, cases[i].len, out);
		if (i == 4) {
			cr_assert_eq(len, 63u);
			continue;
		}
		if (cases[i].out == NULL) {
			cr_assert_eq(len, 0u, "case %zu should be invalid", i);
			continue;
		}
		cr_assert_eq(len, strlen(cases[i].out), "case %zu", i);
		cr_assert_str_eq(out, cases[i].out);
	}
	cr_assert_eq(eng_dns_name_normalize(max_name, 253, out), 253u);
	cr_assert_eq(eng_dns_name_normalize(NULL, 0, out), 0u);
}

/* Packet builder for tests. */
struct t_packet {
	uint8_t bytes[512];
	size_t len;
};

static void
t_put(struct t_packet *p, const void *data, size_t len)
{
	cr_assert_leq(p->len + len, sizeof(p->bytes));
	memcpy(p->bytes + p->len, data, len);
	p->len += len;
}

static void
t_put16(struct t_packet *p, uint32_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	t_put(p, b, 2);
}

static void
t_put32(struct t_packet *p, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	t_put(p, b, 4);
}

static void
t_header(struct t_packet *p, uint32_t rcode, uint32_t qd, uint32_t an, uint32_t ns)
{
	p->len = 0;
	t_put16(p, 0x1234);
	t_put16(p, 0x8180 | rcode);
	t_put16(p, qd);
	t_put16(p, an);
	t_put16(p, ns);
	t_put16(p, 0);
}

/* "\7example\4test\0" at offset 12, then QTYPE/QCLASS. */
static void
t_question(struct t_packet *p, uint32_t qtype)
{
	t_put(p, "\7example\4test", 14);
	t_put16(p, qtype);
	t_put16(p, 1);
}

/* An RR owned by the question name (compression pointer to 12). */
static void
t_rr(struct t_packet *p, uint32_t type, uint32_t ttl, const void *rdata, uint32_t rdata_len)
{
	t_put16(p, 0xc00c);
	t_put16(p, type);
	t_put16(p, 1);
	t_put32(p, ttl);
	t_put16(p, rdata_len);
	t_put(p, rdata, rdata_len);
}

static void
t_soa_rdata(struct t_packet *rdata, uint32_t minimum)
{
	rdata->len = 0;
	t_put(rdata, "\2ns\xc0\x0c", 5);	      /* mname ns.example.test */
	t_put(rdata, "\10hostmaster\xc0\x0c", 13); /* rname */
	t_put32(rdata, 2024010101);
	t_put32(rdata, 3600);
	t_put32(rdata, 600);
	t_put32(rdata, 86400);
	t_put32(rdata, minimum);
}

Test(dns_pure, negative_ttl_is_min_of_soa_ttl_and_minimum)
{
	struct t_packet p, soa;
	struct eng_dns_packet_ttls ttls;
	t_soa_rdata(&soa, 600);
	t_header(&p, 3, 1, 0, 1);
	t_question(&p, 15);
	t_rr(&p, 6, 3600, soa.bytes, (uint32_t)soa.len);
	cr_assert(eng_dns_packet_ttls(p.bytes, p.len, &ttls));
	cr_assert_eq(ttls.negative_s, 600u);
	cr_assert_eq(ttls.answer_min_s, ENG_DNS_TTL_NONE);
	cr_assert_eq(ttls.mx_count, 0u);

	t_header(&p, 3, 1, 0, 1);
	t_question(&p, 15);
	t_rr(&p, 6, 120, soa.bytes, (uint32_t)soa.len);
	cr_assert(eng_dns_packet_ttls(p.bytes, p.len, &ttls));
	cr_assert_eq(ttls.negative_s, 120u);

	/* No SOA: nothing reported, the caller uses its fixed value. */
	t_header(&p, 3, 1, 0, 0);
	t_question(&p, 15);
	cr_assert(eng_dns_packet_ttls(p.bytes, p.len, &ttls));
	cr_assert_eq(ttls.negative_s, ENG_DNS_TTL_NONE);
}

static void
t_mx_answer(struct t_packet *p)
{
	t_header(p, 0, 1, 3, 0);
	t_question(p, 15);
	t_rr(p, 5, 30, "\2cn\xc0\x0c", 5); /* a CNAME among the answers */
	t_rr(p, 15, 50, "\0\12\3mx1\xc0\x0c", 8);
	t_rr(p, 15, 0x80000001u, "\0\24\3mx2\xc0\x0c", 8); /* top bit: read as 0 */
}

Test(dns_pure, answer_ttls_per_mx_record_in_order)
{
	struct t_packet p;
	struct eng_dns_packet_ttls ttls;
	t_mx_answer(&p);
	cr_assert(eng_dns_packet_ttls(p.bytes, p.len, &ttls));
	cr_assert_eq(ttls.mx_count, 2u);
	cr_assert_eq(ttls.mx_ttl_s[0], 50u);
	cr_assert_eq(ttls.mx_ttl_s[1], 0u);
	cr_assert_eq(ttls.answer_min_s, 0u);
	cr_assert_eq(ttls.negative_s, ENG_DNS_TTL_NONE);
}

Test(dns_pure, every_truncation_is_rejected_without_crashing)
{
	struct t_packet p;
	struct eng_dns_packet_ttls ttls;
	t_mx_answer(&p);
	for (size_t len = 0; len < p.len; len++)
		cr_assert(!eng_dns_packet_ttls(p.bytes, len, &ttls), "length %zu accepted", len);
	/* Lying counts, a reserved label type and a label running off the end. */
	struct t_packet bad = p;
	bad.bytes[7] = 200; /* ancount */
	cr_assert(!eng_dns_packet_ttls(bad.bytes, bad.len, &ttls));
	bad = p;
	bad.bytes[12] = 0x47; /* label type 01 */
	cr_assert(!eng_dns_packet_ttls(bad.bytes, bad.len, &ttls));
	bad = p;
	bad.bytes[12] = 63;
	cr_assert(!eng_dns_packet_ttls(bad.bytes, bad.len, &ttls));
	/* Random bytes: any answer, never a crash. */
	uint64_t state = 0x1234567u;
	for (int round = 0; round < 2000; round++) {
		for (size_t i = 0; i < p.len; i++) {
			state ^= state << 13;
			state ^= state >> 7;
			state ^= state << 17;
			bad.bytes[i] = (uint8_t)state;
		}
		(void)eng_dns_packet_ttls(bad.bytes, p.len, &ttls);
	}
}

static void
t_mx(struct eng_dns_mx *mx, const char *host, uint16_t preference)
{
	memset(mx, 0, sizeof(*mx));
	snprintf(mx->host, sizeof(mx->host), "%s", host);
	mx->preference = preference;
}

Test(dns_pure, mx_order_sorts_and_shuffles_only_equal_preferences)
{
	bool seen_first[3] = { false, false, false };
	for (uint64_t seed = 1; seed <= 64; seed++) {
		struct eng_dns_mx mx[6];
		t_mx(&mx[0], "c30", 30);
		t_mx(&mx[1], "e50", 50);
		t_mx(&mx[2], "a10", 10);
		t_mx(&mx[3], "b30", 30);
		t_mx(&mx[4], "d30", 30);
		t_mx(&mx[5], "f20", 20);
		uint64_t state = seed;
		eng_dns_mx_order(mx, 6, &state);
		cr_assert_str_eq(mx[0].host, "a10");
		cr_assert_str_eq(mx[1].host, "f20");
		cr_assert_str_eq(mx[5].host, "e50");
		for (int i = 2; i < 5; i++)
			cr_assert_eq(mx[i].preference, 30);
		int first = mx[2].host[0] - 'b'; /* b30, c30 or d30 */
		cr_assert(first >= 0 && first < 3);
		seen_first[first] = true;
		cr_assert_str_neq(mx[2].host, mx[3].host);
		cr_assert_str_neq(mx[3].host, mx[4].host);
		cr_assert_str_neq(mx[2].host, mx[4].host);
	}
	cr_assert(seen_first[0] && seen_first[1] && seen_first[2],
		  "each of the three equal hosts should come first for some seed");
}

Test(dns_pure, mx_order_is_deterministic_per_seed)
{
	struct eng_dns_mx a[4], b[4];
	for (int i = 0; i < 4; i++) {
		char name[8];
		snprintf(name, sizeof(name), "h%d", i);
		t_mx(&a[i], name, 10);
		t_mx(&b[i], name, 10);
	}
	uint64_t state_a = 42, state_b = 42;
	eng_dns_mx_order(a, 4, &state_a);
	eng_dns_mx_order(b, 4, &state_b);
	for (int i = 0; i < 4; i++)
		cr_assert_str_eq(a[i].host, b[i].host);
	uint64_t state = 1;
	eng_dns_mx_order(a, 0, &state); /* empty list is fine */
}

Test(dns_pure, status_mapping_to_bounce_and_defer)
{
	cr_assert(eng_dns_status_is_permanent(ENG_DNS_NXDOMAIN));
	cr_assert(eng_dns_status_is_permanent(ENG_DNS_NULL_MX));
	cr_assert(eng_dns_status_is_permanent(ENG_DNS_NO_ADDRESS));
	cr_assert(!eng_dns_status_is_permanent(ENG_DNS_TEMPFAIL));
	cr_assert(!eng_dns_status_is_permanent(ENG_DNS_NODATA));
	cr_assert(!eng_dns_status_is_permanent(ENG_DNS_OK));
	cr_assert_str_eq(eng_dns_status_enhanced(ENG_DNS_NULL_MX), "5.1.10");
	cr_assert_str_eq(eng_dns_status_enhanced(ENG_DNS_NXDOMAIN), "5.1.2");
	cr_assert_str_eq(eng_dns_status_enhanced(ENG_DNS_NO_ADDRESS), "5.4.4");
	cr_assert_str_eq(eng_dns_status_enhanced(ENG_DNS_TEMPFAIL), "4.4.3");
	cr_assert_null(eng_dns_status_enhanced(ENG_DNS_OK));
	for (int s = 0; s < ENG_DNS_STATUS_COUNT; s++)
		cr_assert_str_neq(eng_dns_status_name((enum eng_dns_status)s), "unknown");
	cr_assert_str_eq(eng_dns_status_name(ENG_DNS_STATUS_COUNT), "unknown");
}

Test(dns_pure, addr_to_sockaddr_both_families)
{
	struct eng_dns_addr v4 = { .family = AF_INET, .bytes = { 127, 0, 0, 7 } };
	struct eng_dns_addr v6 = { .family = AF_INET6 };
	v6.bytes[15] = 1;
	struct sockaddr_storage ss;
	cr_assert_eq(eng_dns_addr_to_sockaddr(&v4, 25, &ss), sizeof(struct sockaddr_in));
	const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&ss;
	cr_assert_eq(sin->sin_family, AF_INET);
	cr_assert_eq(ntohs(sin->sin_port), 25);
	cr_assert_eq(ntohl(sin->sin_addr.s_addr), 0x7f000007u);
	cr_assert_eq(eng_dns_addr_to_sockaddr(&v6, 2525, &ss), sizeof(struct sockaddr_in6));
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)&ss;
	cr_assert_eq(sin6->sin6_family, AF_INET6);
	cr_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
}
