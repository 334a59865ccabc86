/*
 * test_tool_owner.c - ringmail-spool load puts each message in the shard
 * that owns its domain. The tool computes the owner with
 * tool_domain_owner because tools do not link the engine; this test links
 * the daemon's eng_domain_owner (engine/eng_node.c) too and checks that
 * both agree on every domain of a table (load's own names, mixed case,
 * empty, long, non-ASCII bytes) for every shard count from 1 to 256.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "engine/eng_node.h"
#include "tools/tool_spool.h"

static const char *const owner_domains[] = {
	"",
	"d0.test",
	"d1.test",
	"D1.TEST",
	"d999.test",
	"example.org",
	"Example.ORG",
	"mail.example.net",
	"xn--caf-dma.example",
	"caf\xc3\xa9.example",	/* non-ASCII bytes are hashed as they are */
	"[192.0.2.1]",
	"a-very-long-label-of-sixty-three-characters-for-the-test-abcdefg.example.com",
	"gmail.com",
	"outlook.com",
	"yahoo.co.jp",
};

static void
owner_check(const char *domain, size_t len)
{
	for (uint32_t shards = 1; shards <= TOOL_SHARDS_MAX; shards++) {
		uint32_t engine = eng_domain_owner(domain, len, shards);
		uint32_t tool = tool_domain_owner(domain, len, shards);
		cr_assert_eq(tool, engine, "'%.*s' over %u shards: tool %u, engine %u", (int)len,
			     domain, shards, tool, engine);
		cr_assert_lt(tool, shards);
	}
}

Test(tool_owner, agrees_with_the_engine_on_a_table_of_domains)
{
	for (size_t i = 0; i < sizeof(owner_domains) / sizeof(owner_domains[0]); i++)
		owner_check(owner_domains[i], strlen(owner_domains[i]));
}

Test(tool_owner, agrees_with_the_engine_on_the_domains_load_writes)
{
	char name[32];
	for (uint32_t k = 0; k < 2000; k++) {
		int n = snprintf(name, sizeof(name), "d%u.test", k);
		owner_check(name, (size_t)n);
	}
}

Test(tool_owner, is_case_insensitive_and_reads_only_len_bytes)
{
	cr_assert_eq(tool_domain_owner("EXAMPLE.org", 11, 7), tool_domain_owner("example.ORG", 11, 7));
	/* (ptr, len): bytes past len do not count. */
	cr_assert_eq(tool_domain_owner("d5.test.junk", 7, 97), tool_domain_owner("d5.test", 7, 97));
	cr_assert_eq(tool_domain_owner(NULL, 0, 5), eng_domain_owner(NULL, 0, 5));
}
