/*
 * test_value.c - the configuration value syntax (engine/eng_config.h):
 * integers with bounds, sizes, durations, rates, booleans, fractions,
 * domain names, host[:port], networks and lists. Each parser has a table
 * of valid and invalid rows (syslog-ng style: the invalid rows say why).
 *
 * Every row is parsed from a copy that ends exactly at a PROT_NONE page,
 * so a parser that reads one byte past (ptr, len) crashes the test.
 *
 * Each table is one Test looping over its rows (every failure names its
 * row) rather than a ParameterizedTest: Criterion spawns a process per
 * test, and ~300 of them took 90 s under ASan on a 2-CPU runner.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/eng_config.h"

#define NS_MS 1000000ull
#define NS_S 1000000000ull
#define NS_MIN (60ull * NS_S)
#define NS_H (3600ull * NS_S)
#define NS_D (86400ull * NS_S)

#define OK ENG_VALUE_OK
#define SYNTAX ENG_VALUE_SYNTAX
#define RANGE ENG_VALUE_RANGE

/* ------------------------------------------------------------------ */
/* A copy of text that ends at a guard page.                           */
/* ------------------------------------------------------------------ */

static const char *
guarded(const char *text, size_t *len)
{
	static char *region;
	long page = sysconf(_SC_PAGESIZE);
	if (region == NULL) {
		region = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert(region != MAP_FAILED);
		cr_assert(mprotect(region + page, (size_t)page, PROT_NONE) == 0);
	}
	*len = strlen(text);
	cr_assert(*len <= (size_t)page);
	char *copy = region + page - *len;
	memcpy(copy, text, *len);
	return copy;
}

/* ------------------------------------------------------------------ */
/* Integers.                                                           */
/* ------------------------------------------------------------------ */

struct u64_row {
	char text[32];
	uint64_t min;
	uint64_t max;
	enum eng_value_result result;
	uint64_t value;
};

static const struct u64_row u64_rows[] = {
	{"0", 0, 10, OK, 0},
	{"10", 0, 10, OK, 10},
	{"007", 0, 10, OK, 7},
	{"18446744073709551615", 0, UINT64_MAX, OK, UINT64_MAX},
	{"11", 0, 10, RANGE, 0},			/* above max */
	{"0", 1, 10, RANGE, 0},				/* below min */
	{"18446744073709551616", 0, UINT64_MAX, RANGE, 0}, /* overflow */
	{"99999999999999999999999", 0, UINT64_MAX, RANGE, 0},
	{"", 0, 10, SYNTAX, 0},				/* empty */
	{"abc", 0, 10, SYNTAX, 0},
	{"-1", 0, 10, SYNTAX, 0},			/* no sign */
	{"+1", 0, 10, SYNTAX, 0},
	{" 1", 0, 10, SYNTAX, 0},			/* no spaces */
	{"1 ", 0, 10, SYNTAX, 0},
	{"1.5", 0, 10, SYNTAX, 0},
	{"0x10", 0, 100, SYNTAX, 0},			/* decimal only */
	{"1e3", 0, 10000, SYNTAX, 0},
};

static void
check_u64(const struct u64_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	uint64_t v = 12345;
	enum eng_value_result r = eng_value_u64(s, len, row->min, row->max, &v);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r == OK)
		cr_assert_eq(v, row->value, "'%s'", row->text);
	else
		cr_assert_eq(v, 12345, "'%s': output written on error", row->text);
}

Test(value, u64)
{
	for (size_t i = 0; i < sizeof(u64_rows) / sizeof(u64_rows[0]); i++)
		check_u64(&u64_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Sizes.                                                              */
/* ------------------------------------------------------------------ */

struct num_row {
	char text[32];
	enum eng_value_result result;
	uint64_t value;
};

static const struct num_row size_rows[] = {
	{"4096", OK, 4096},
	{"0", OK, 0},
	{"100b", OK, 100},
	{"512k", OK, 512ull << 10},
	{"512K", OK, 512ull << 10},
	{"1kb", OK, 1024},
	{"1KiB", OK, 1024},
	{"10M", OK, 10ull << 20},
	{"10mb", OK, 10ull << 20},
	{"10MiB", OK, 10ull << 20},
	{"1G", OK, 1ull << 30},
	{"1g", OK, 1ull << 30},
	{"2T", OK, 2ull << 40},
	{"16777215T", OK, 16777215ull << 40},
	{"16777216T", RANGE, 0}, /* 2^64 bytes */
	{"18446744073709551616", RANGE, 0},
	{"", SYNTAX, 0},
	{"M", SYNTAX, 0},	 /* no number */
	{"10 M", SYNTAX, 0},	 /* no space before the unit */
	{"10X", SYNTAX, 0},	 /* unknown unit */
	{"10Mx", SYNTAX, 0},
	{"1.5G", SYNTAX, 0},	 /* integers only */
	{"-1k", SYNTAX, 0},
	{"k10", SYNTAX, 0},
};

static void
check_size(const struct num_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	uint64_t v = 0;
	enum eng_value_result r = eng_value_size(s, len, &v);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r == OK)
		cr_assert_eq(v, row->value, "'%s': %llu", row->text, (unsigned long long)v);
}

Test(value, size)
{
	for (size_t i = 0; i < sizeof(size_rows) / sizeof(size_rows[0]); i++)
		check_size(&size_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Durations.                                                          */
/* ------------------------------------------------------------------ */

static const struct num_row duration_rows[] = {
	{"250ms", OK, 250 * NS_MS},
	{"30s", OK, 30 * NS_S},
	{"5m", OK, 5 * NS_MIN},
	{"5min", OK, 5 * NS_MIN},
	{"2h", OK, 2 * NS_H},
	{"5d", OK, 5 * NS_D},
	{"4d12h", OK, 4 * NS_D + 12 * NS_H},
	{"1h30m", OK, NS_H + 30 * NS_MIN},
	{"1m500ms", OK, NS_MIN + 500 * NS_MS},
	{"5S", OK, 5 * NS_S}, /* units ignore case */
	{"0", OK, 0},
	{"0s", OK, 0},
	{"213503d", OK, 213503ull * NS_D},
	{"213504d", RANGE, 0}, /* past 2^64 ns */
	{"213503d1d", RANGE, 0},
	{"", SYNTAX, 0},
	{"5", SYNTAX, 0},	/* a unit is required */
	{"00", SYNTAX, 0},
	{"s", SYNTAX, 0},
	{"5x", SYNTAX, 0},
	{"5 m", SYNTAX, 0},
	{"-5s", SYNTAX, 0},
	{"1.5h", SYNTAX, 0},
	{"5ms5", SYNTAX, 0},	/* a trailing number without a unit */
	{"5w", SYNTAX, 0},	/* no weeks */
	{"5s ", SYNTAX, 0},
};

static void
check_duration(const struct num_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	uint64_t v = 0;
	enum eng_value_result r = eng_value_duration(s, len, &v);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r == OK)
		cr_assert_eq(v, row->value, "'%s': %llu", row->text, (unsigned long long)v);
}

Test(value, duration)
{
	for (size_t i = 0; i < sizeof(duration_rows) / sizeof(duration_rows[0]); i++)
		check_duration(&duration_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Rates.                                                              */
/* ------------------------------------------------------------------ */

struct rate_row {
	char text[32];
	enum eng_value_result result;
	uint64_t count;
	uint64_t period_ns;
};

static const struct rate_row rate_rows[] = {
	{"100/s", OK, 100, NS_S},
	{"5/sec", OK, 5, NS_S},
	{"5/second", OK, 5, NS_S},
	{"6000/min", OK, 6000, NS_MIN},
	{"10/m", OK, 10, NS_MIN},
	{"10/minute", OK, 10, NS_MIN},
	{"1/h", OK, 1, NS_H},
	{"1/hr", OK, 1, NS_H},
	{"3/hour", OK, 3, NS_H},
	{"1000/d", OK, 1000, NS_D},
	{"1000/day", OK, 1000, NS_D},
	{"100/S", OK, 100, NS_S},
	{"1000000000/s", OK, 1000000000, NS_S},
	{"unlimited", OK, 0, NS_S},
	{"Unlimited", OK, 0, NS_S},
	{"0/s", RANGE, 0, 0},		 /* nothing ever: not a rate */
	{"1000000001/s", RANGE, 0, 0},	 /* above the bucket's count */
	{"99999999999999999999999/s", RANGE, 0, 0},
	{"100", SYNTAX, 0, 0},		 /* a period is required */
	{"/s", SYNTAX, 0, 0},
	{"100/", SYNTAX, 0, 0},
	{"100/x", SYNTAX, 0, 0},
	{"100/w", SYNTAX, 0, 0},
	{"100 / s", SYNTAX, 0, 0},
	{"100/s ", SYNTAX, 0, 0},
	{"-1/s", SYNTAX, 0, 0},
	{"1.5/s", SYNTAX, 0, 0},
	{"100/5s", SYNTAX, 0, 0},
	{"", SYNTAX, 0, 0},
	{"none", SYNTAX, 0, 0},
};

static void
check_rate(const struct rate_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	struct eng_rate rate = {7, 7};
	enum eng_value_result r = eng_value_rate(s, len, &rate);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r != OK)
		return;
	cr_assert_eq(rate.count, row->count, "'%s'", row->text);
	cr_assert_eq(rate.period_ns, row->period_ns, "'%s'", row->text);
}

Test(value, rate)
{
	for (size_t i = 0; i < sizeof(rate_rows) / sizeof(rate_rows[0]); i++)
		check_rate(&rate_rows[i]);
}

Test(value, rate_default_burst_is_one_second_worth_or_one)
{
	struct eng_rate per_second = {100, NS_S};
	struct eng_rate per_minute = {6000, NS_MIN};
	struct eng_rate per_hour = {1, NS_H};
	struct eng_rate unlimited = {0, NS_S};
	struct eng_rate huge = {1000000000, NS_S};
	cr_assert_eq(eng_rate_default_burst(&per_second), 100);
	cr_assert_eq(eng_rate_default_burst(&per_minute), 100);
	cr_assert_eq(eng_rate_default_burst(&per_hour), 1);
	cr_assert_eq(eng_rate_default_burst(&unlimited), 1);
	cr_assert_eq(eng_rate_default_burst(&huge), 100000); /* capped at the bucket's max */
}

/* ------------------------------------------------------------------ */
/* Booleans and fractions.                                             */
/* ------------------------------------------------------------------ */

static const struct num_row boolean_rows[] = {
	{"on", OK, 1},	    {"off", OK, 0},	 {"yes", OK, 1},   {"no", OK, 0},
	{"true", OK, 1},    {"false", OK, 0},	 {"1", OK, 1},	   {"0", OK, 0},
	{"ON", OK, 1},	    {"Yes", OK, 1},	 {"FALSE", OK, 0}, {"", SYNTAX, 0},
	{"2", SYNTAX, 0},   {"enable", SYNTAX, 0}, {"o", SYNTAX, 0}, {"onn", SYNTAX, 0},
	{" on", SYNTAX, 0}, {"y", SYNTAX, 0},
};

static void
check_boolean(const struct num_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	bool b = false;
	enum eng_value_result r = eng_value_bool(s, len, &b);
	cr_assert_eq(r, row->result, "'%s'", row->text);
	if (r == OK)
		cr_assert_eq(b, row->value != 0, "'%s'", row->text);
}

Test(value, boolean)
{
	for (size_t i = 0; i < sizeof(boolean_rows) / sizeof(boolean_rows[0]); i++)
		check_boolean(&boolean_rows[i]);
}

static const struct num_row fraction_rows[] = {
	{"0", OK, 0},	      {"0.2", OK, 200},	   {"0.25", OK, 250},  {"0.125", OK, 125},
	{"1", OK, 1000},      {"1.0", OK, 1000},   {"20%", OK, 200},   {"12.5%", OK, 125},
	{"100%", OK, 1000},   {"0%", OK, 0},	   {"1.5", RANGE, 0},  {"101%", RANGE, 0},
	{"0.1234", SYNTAX, 0}, /* at most 3 decimals */
	{"12.55%", SYNTAX, 0}, /* at most 1 decimal of a percent */
	{"", SYNTAX, 0},      {"%", SYNTAX, 0},	   {".5", SYNTAX, 0},  {"1.", SYNTAX, 0},
	{"-0.1", SYNTAX, 0},  {"abc", SYNTAX, 0},  {"20 %", SYNTAX, 0},
};

static void
check_fraction(const struct num_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	uint32_t permille = 0;
	enum eng_value_result r = eng_value_fraction(s, len, &permille);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r == OK)
		cr_assert_eq(permille, row->value, "'%s': %u", row->text, permille);
}

Test(value, fraction)
{
	for (size_t i = 0; i < sizeof(fraction_rows) / sizeof(fraction_rows[0]); i++)
		check_fraction(&fraction_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Domain names.                                                       */
/* ------------------------------------------------------------------ */

static const struct num_row domain_rows[] = {
	{"example.com", OK, 0},
	{"a", OK, 0},
	{"EXAMPLE.COM", OK, 0},
	{"a-b.c", OK, 0},
	{"xn--bcher-kva.example", OK, 0},
	{"mx1.example.co.uk", OK, 0},
	{"1.example.com", OK, 0},
	{"", SYNTAX, 0},
	{".", SYNTAX, 0},
	{"example.com.", SYNTAX, 0}, /* no trailing dot in config */
	{".example.com", SYNTAX, 0},
	{"a..b", SYNTAX, 0},
	{"-a.com", SYNTAX, 0},
	{"a-.com", SYNTAX, 0},
	{"a_b.com", SYNTAX, 0},
	{"exa mple.com", SYNTAX, 0},
	{"1.2.3.4", SYNTAX, 0}, /* all-numeric top label: an address */
	{"1.2.3.999", SYNTAX, 0},
	{"b\xc3\xbc" "cher.de", SYNTAX, 0}, /* U-labels: write the xn-- form */
};

static void
check_domain(const struct num_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	cr_assert_eq(eng_value_domain(s, len), row->result, "'%s'", row->text);
}

Test(value, domain)
{
	for (size_t i = 0; i < sizeof(domain_rows) / sizeof(domain_rows[0]); i++)
		check_domain(&domain_rows[i]);
}

Test(value, domain_length_limits)
{
	char label[80];
	memset(label, 'a', sizeof(label));
	cr_assert_eq(eng_value_domain(label, 63), OK);
	cr_assert_eq(eng_value_domain(label, 64), SYNTAX);
	/* 253 characters: 63 + 1 + 63 + 1 + 63 + 1 + 61. */
	char name[300];
	size_t n = 0;
	for (int i = 0; i < 3; i++) {
		memcpy(name + n, label, 63);
		n += 63;
		name[n++] = '.';
	}
	memcpy(name + n, label, 61);
	n += 61;
	cr_assert_eq(n, 253);
	cr_assert_eq(eng_value_domain(name, n), OK);
	name[n - 1] = 'a';
	name[n] = 'a';
	cr_assert_eq(eng_value_domain(name, n + 1), SYNTAX);
}

/* ------------------------------------------------------------------ */
/* host[:port].                                                        */
/* ------------------------------------------------------------------ */

struct host_row {
	char text[32];
	enum eng_value_result result;
	enum eng_host_kind kind;
	char host[32];
	uint16_t port;
};

static const struct host_row hostport_rows[] = {
	{"mx.example.com", OK, ENG_HOST_NAME, "mx.example.com", 25},
	{"MX.Example.COM:2525", OK, ENG_HOST_NAME, "mx.example.com", 2525},
	{"localhost", OK, ENG_HOST_NAME, "localhost", 25},
	{"192.0.2.1", OK, ENG_HOST_IPV4, "192.0.2.1", 25},
	{"192.0.2.1:587", OK, ENG_HOST_IPV4, "192.0.2.1", 587},
	{"[2001:db8::1]", OK, ENG_HOST_IPV6, "2001:db8::1", 25},
	{"[2001:db8::1]:2525", OK, ENG_HOST_IPV6, "2001:db8::1", 2525},
	{"[::1]:1", OK, ENG_HOST_IPV6, "::1", 1},
	{"host:65535", OK, ENG_HOST_NAME, "host", 65535},
	{"host:0", RANGE, 0, "", 0},
	{"host:65536", RANGE, 0, "", 0},
	{"", SYNTAX, 0, "", 0},
	{":25", SYNTAX, 0, "", 0},
	{"host:", SYNTAX, 0, "", 0},
	{"host:abc", SYNTAX, 0, "", 0},
	{"host:25:26", SYNTAX, 0, "", 0},
	{"2001:db8::1", SYNTAX, 0, "", 0},	/* IPv6 needs brackets */
	{"[2001:db8::1", SYNTAX, 0, "", 0},
	{"[192.0.2.1]:25", SYNTAX, 0, "", 0}, /* brackets are for IPv6 */
	{"[]:25", SYNTAX, 0, "", 0},
	{"[::1]25", SYNTAX, 0, "", 0},
	{"[::1]:", SYNTAX, 0, "", 0},
	{"999.1.1.1", SYNTAX, 0, "", 0},
	{"1.2.3", SYNTAX, 0, "", 0},
	{"host name", SYNTAX, 0, "", 0},
	{"host_name:25", SYNTAX, 0, "", 0},
};

static void
check_hostport(const struct host_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	struct eng_hostport hp;
	enum eng_value_result r = eng_value_hostport(s, len, 25, &hp);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r != OK)
		return;
	cr_assert_eq(hp.kind, row->kind, "'%s'", row->text);
	cr_assert_str_eq(hp.host, row->host, "'%s'", row->text);
	cr_assert_eq(hp.port, row->port, "'%s'", row->text);
}

Test(value, hostport)
{
	for (size_t i = 0; i < sizeof(hostport_rows) / sizeof(hostport_rows[0]); i++)
		check_hostport(&hostport_rows[i]);
}

Test(value, hostport_literal_bytes_and_sockaddr)
{
	struct eng_hostport hp;
	struct sockaddr_storage ss;
	socklen_t ss_len = 0;
	cr_assert_eq(eng_value_hostport("192.0.2.1:2525", 14, 0, &hp), OK);
	cr_assert_eq(hp.addr[0], 192);
	cr_assert_eq(hp.addr[3], 1);
	cr_assert_eq(eng_hostport_sockaddr(&hp, &ss, &ss_len), 0);
	cr_assert_eq(ss.ss_family, AF_INET);
	cr_assert_eq(ss_len, sizeof(struct sockaddr_in));
	cr_assert_eq(eng_value_hostport("[::1]", 5, 0, &hp), OK);
	cr_assert_eq(hp.port, 0, "default_port 0 leaves the port unset");
	cr_assert_eq(hp.addr[15], 1);
	cr_assert_eq(eng_hostport_sockaddr(&hp, &ss, &ss_len), 0);
	cr_assert_eq(ss.ss_family, AF_INET6);
	cr_assert_eq(eng_value_hostport("mx.example.com", 14, 25, &hp), OK);
	cr_assert_eq(eng_hostport_sockaddr(&hp, &ss, &ss_len), -EINVAL);
}

/* ------------------------------------------------------------------ */
/* Networks.                                                           */
/* ------------------------------------------------------------------ */

struct cidr_row {
	char text[32];
	enum eng_value_result result;
	uint8_t family;
	uint8_t prefix_len;
};

static const struct cidr_row cidr_rows[] = {
	{"127.0.0.0/8", OK, 4, 8},
	{"10.0.0.0/8", OK, 4, 8},
	{"0.0.0.0/0", OK, 4, 0},
	{"192.0.2.1", OK, 4, 32},
	{"192.0.2.1/32", OK, 4, 32},
	{"192.0.2.128/25", OK, 4, 25},
	{"::1/128", OK, 6, 128},
	{"::1", OK, 6, 128},
	{"2001:db8::/32", OK, 6, 32},
	{"::/0", OK, 6, 0},
	{"::ffff:0:0/96", OK, 6, 96},
	{"127.0.0.1/8", SYNTAX, 0, 0},	  /* bits past the prefix */
	{"192.0.2.129/25", SYNTAX, 0, 0},
	{"2001:db8::1/32", SYNTAX, 0, 0},
	{"10.0.0.0/33", RANGE, 0, 0},
	{"::1/129", RANGE, 0, 0},
	{"10.0.0.0/", SYNTAX, 0, 0},
	{"10.0.0.0/a", SYNTAX, 0, 0},
	{"/8", SYNTAX, 0, 0},
	{"", SYNTAX, 0, 0},
	{"10.0.0/8", SYNTAX, 0, 0},
	{"[::1]/128", SYNTAX, 0, 0},
	{"localhost/8", SYNTAX, 0, 0},
};

static void
check_cidr(const struct cidr_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	struct eng_cidr c;
	enum eng_value_result r = eng_value_cidr(s, len, &c);
	cr_assert_eq(r, row->result, "'%s': result %d, expected %d", row->text, r, row->result);
	if (r != OK)
		return;
	cr_assert_eq(c.family, row->family, "'%s'", row->text);
	cr_assert_eq(c.prefix_len, row->prefix_len, "'%s'", row->text);
}

Test(value, cidr)
{
	for (size_t i = 0; i < sizeof(cidr_rows) / sizeof(cidr_rows[0]); i++)
		check_cidr(&cidr_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Lists.                                                              */
/* ------------------------------------------------------------------ */

struct list_row {
	char text[32];
	bool error;	/* an empty item */
	char items[32]; /* joined with '|' */
};

static const struct list_row list_rows[] = {
	{"a,b,c", false, "a|b|c"},
	{" a , b ,c ", false, "a|b|c"},
	{"a\t,\tb", false, "a|b"},
	{"", false, ""},
	{"   ", false, ""},
	{"a", false, "a"},
	{"a,", false, "a"},	/* one trailing comma */
	{"a, ", false, "a"},
	{"a b, c", false, "a b|c"},
	{"a,,b", true, ""}, /* empty item */
	{",a", true, ""},
	{",", true, ""},
	{" , ", true, ""},
	{"a,,", true, ""},
};

static void
check_list(const struct list_row *row)
{
	size_t len = 0;
	const char *s = guarded(row->text, &len);
	struct eng_list list;
	char joined[64] = "";
	size_t used = 0;
	enum eng_list_result lr = ENG_LIST_END;
	eng_list_init(&list, s, len);
	for (int turn = 0; turn < 16; turn++) {
		const char *item = NULL;
		size_t item_len = 0;
		lr = eng_list_next(&list, &item, &item_len);
		if (lr != ENG_LIST_ITEM)
			break;
		used += (size_t)snprintf(joined + used, sizeof(joined) - used, "%s%.*s",
					 used > 0 ? "|" : "", (int)item_len, item);
	}
	if (row->error) {
		cr_assert_eq(lr, ENG_LIST_EMPTY_ITEM, "'%s'", row->text);
		return;
	}
	cr_assert_eq(lr, ENG_LIST_END, "'%s'", row->text);
	cr_assert_str_eq(joined, row->items, "'%s'", row->text);
}

Test(value, list)
{
	for (size_t i = 0; i < sizeof(list_rows) / sizeof(list_rows[0]); i++)
		check_list(&list_rows[i]);
}

/* ------------------------------------------------------------------ */
/* Bounded reads: (ptr, len) is the whole value.                       */
/* ------------------------------------------------------------------ */

Test(value, parsers_stop_at_len)
{
	uint64_t v = 0;
	struct eng_rate rate;
	struct eng_hostport hp;
	struct eng_cidr c;
	bool b = false;
	cr_assert_eq(eng_value_u64("123456", 3, 0, 1000, &v), OK);
	cr_assert_eq(v, 123);
	cr_assert_eq(eng_value_size("10M", 2, &v), OK);
	cr_assert_eq(v, 10);
	cr_assert_eq(eng_value_duration("5m30s", 2, &v), OK);
	cr_assert_eq(v, 5 * NS_MIN);
	cr_assert_eq(eng_value_rate("100/s", 4, &rate), SYNTAX);
	cr_assert_eq(eng_value_bool("only", 2, &b), OK);
	cr_assert(b);
	cr_assert_eq(eng_value_hostport("host:25", 4, 587, &hp), OK);
	cr_assert_eq(hp.port, 587);
	cr_assert_eq(eng_value_cidr("10.0.0.0/8", 8, &c), OK);
	cr_assert_eq(c.prefix_len, 32);
	cr_assert_eq(eng_value_domain("example.com.", 11), OK);
}
