/*
 * domain_owner.c - print which shard owns each domain, by the daemon's
 * own rule (eng_domain_owner, engine/eng_node.c), for test_spool_load.sh.
 *
 *   domain_owner SHARDS DOMAIN...
 *
 * Prints "DOMAIN OWNER" per domain. Exits 1 if tool_domain_owner (what
 * ringmail-spool load uses) disagrees, 64 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_node.h"
#include "tools/tool_spool.h"

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: domain_owner SHARDS DOMAIN...\n");
		return 64;
	}
	unsigned long shards = strtoul(argv[1], NULL, 10);
	if (shards < 1 || shards > TOOL_SHARDS_MAX) {
		fprintf(stderr, "domain_owner: bad shard count '%s'\n", argv[1]);
		return 64;
	}
	int status = 0;
	for (int i = 2; i < argc; i++) {
		size_t len = strlen(argv[i]);
		uint32_t engine = eng_domain_owner(argv[i], len, (uint32_t)shards);
		uint32_t tool = tool_domain_owner(argv[i], len, (uint32_t)shards);
		if (engine != tool) {
			fprintf(stderr, "domain_owner: %s: engine %u, tool %u\n", argv[i], engine,
				tool);
			status = 1;
		}
		printf("%s %u\n", argv[i], engine);
	}
	return status;
}
