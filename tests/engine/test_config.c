/*
 * test_config.c - the configuration file (engine/eng_config.h): the
 * built-in defaults, every error message with its file:line and key (a
 * table of bad files), [domain] inheritance and wildcards, routes (exact
 * beats ".parent" beats "*"), listeners, continuation lines, the bounds,
 * the reload comparison, spool and retry mapping, and the example file in
 * docs/ (so it stays valid).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/eng_config.h"
#include "spool/spool.h"

#define NS_MS 1000000ull
#define NS_S 1000000000ull
#define NS_MIN (60ull * NS_S)
#define NS_H (3600ull * NS_S)
#define NS_D (86400ull * NS_S)

static void
load_ok(const char *text, struct eng_config *cfg)
{
	char err[ENG_CONFIG_ERROR_SIZE] = "";
	int r = eng_config_load_string("ringmail.conf", text, cfg, err, sizeof(err));
	cr_assert_eq(r, 0, "load failed: %s", err);
	cr_assert_str_eq(err, "");
}

static void
expect_error(const char *text, const char *message)
{
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE] = "";
	int r = eng_config_load_string("ringmail.conf", text, &cfg, err, sizeof(err));
	cr_assert_eq(r, -EINVAL, "loaded, expected: %s", message);
	cr_assert_str_eq(err, message);
	/* A failed load leaves the defaults with nothing allocated. */
	cr_assert_null(cfg.domains);
	cr_assert_null(cfg.routes);
	cr_assert_null(cfg.index);
	cr_assert_eq(cfg.listener_count, 1);
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Defaults.                                                           */
/* ------------------------------------------------------------------ */

static void
check_defaults(const struct eng_config *cfg)
{
	const struct eng_engine *e = &cfg->engine;
	cr_assert_eq(e->shards, 0, "auto");
	cr_assert_str_eq(e->spool_dir, "spool");
	cr_assert_neq(e->hostname[0], '\0');
	cr_assert_eq(e->max_connections, 1000);
	cr_assert_eq(e->max_queue_lifetime_ns, 5 * NS_D);
	cr_assert_eq(e->retry_count, 7);
	cr_assert_eq(e->retry_schedule_ns[0], 5 * NS_MIN);
	cr_assert_eq(e->retry_schedule_ns[6], 4 * NS_H);
	cr_assert_eq(e->retry_jitter_permille, 200);
	cr_assert_str_eq(e->delivery_log, "ringmail-delivery.log");
	cr_assert_eq(e->delivery_log_max_size, 1ull << 30);
	cr_assert_eq(e->dns_server_count, 0);
	cr_assert(e->bounces);
	cr_assert_eq(e->segment_size, 64ull << 20);
	cr_assert_not(e->use_fdatasync);
	const struct eng_destination *d = &cfg->destination;
	cr_assert_eq(d->max_connections, 20);
	cr_assert_eq(d->max_messages_per_connection, 100);
	cr_assert_eq(d->max_recipients_per_transaction, 100);
	cr_assert_eq(d->max_message_rate.count, 0, "unlimited");
	cr_assert_eq(d->max_message_burst, 1);
	cr_assert_eq(d->idle_timeout_ns, 5 * NS_S);
	cr_assert_eq(d->connect_timeout_ns, 30 * NS_S);
	cr_assert_eq(d->tls, ENG_TLS_OPPORTUNISTIC);
	cr_assert_eq(d->greeting_timeout_ns, 5 * NS_MIN);
	cr_assert_eq(d->data_timeout_ns, 2 * NS_MIN);
	cr_assert_eq(d->data_block_timeout_ns, 3 * NS_MIN);
	cr_assert_eq(d->data_done_timeout_ns, 10 * NS_MIN);
	cr_assert_eq(cfg->domain_count, 0);
	cr_assert_eq(cfg->route_count, 0, "no route by default: MX for everything");
	cr_assert_eq(cfg->default_route, -1);
	cr_assert_eq(cfg->listener_count, 1);
	const struct eng_listener *l = &cfg->listeners[0];
	cr_assert_str_eq(l->name, "default");
	cr_assert_eq(l->address.kind, ENG_HOST_IPV4);
	cr_assert_str_eq(l->address.host, "127.0.0.1");
	cr_assert_eq(l->address.port, 2525);
	cr_assert_str_eq(l->hostname, e->hostname);
	cr_assert_eq(l->network_count, 2);
	cr_assert_eq(l->message_size_limit, 10ull << 20);
	cr_assert_eq(l->recipients_max, 1000);
	cr_assert_null(eng_config_route(cfg, "example.com", 11));
	cr_assert_eq(eng_config_destination(cfg, "example.com", 11), &cfg->destination);
}

Test(config, builtin_default_runs_without_a_file)
{
	struct eng_config cfg;
	eng_config_default(&cfg);
	check_defaults(&cfg);
	eng_config_free(&cfg);
	eng_config_free(&cfg); /* harmless twice */
}

Test(config, builtin_configuration_routes_the_demo_domains_to_the_local_sink)
{
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE];
	cr_assert_eq(eng_config_load_builtin(&cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.engine.spool_dir, "ringmail-spool");
	cr_assert_str_eq(cfg.engine.delivery_log, "ringmail-delivery.log");
	cr_assert_eq(cfg.listener_count, 1);
	cr_assert_eq(cfg.listeners[0].address.port, 2525);
	const struct eng_route *r = eng_config_route(&cfg, "d7.ringmail.test", 16);
	cr_assert_not_null(r);
	cr_assert_str_eq(r->name, "demo");
	cr_assert_eq(r->host_count, 1);
	cr_assert_eq(r->hosts[0].port, 2626);
	/* The route covers subdomains only: everything else goes by MX. */
	cr_assert_null(eng_config_route(&cfg, "example.com", 11));
	cr_assert_null(eng_config_route(&cfg, "ringmail.test.example", 21));
	eng_config_free(&cfg);
}

Test(config, empty_file_and_comments_give_the_defaults)
{
	struct eng_config cfg;
	struct eng_config_changes changes;
	struct eng_config builtin;
	load_ok("; nothing but comments\n# and blank lines\n\n", &cfg);
	check_defaults(&cfg);
	eng_config_default(&builtin);
	cr_assert_eq(eng_config_compare(&builtin, &cfg, &changes), 0);
	cr_assert_not(changes.engine_changed || changes.destinations_changed);
	cr_assert_not(changes.routes_changed || changes.listeners_changed);
	eng_config_free(&cfg);
}

Test(config, every_engine_key_parses)
{
	struct eng_config cfg;
	load_ok("[engine]\n"
		"shards = 4\n"
		"spool_dir = /var/spool/ringmail\n"
		"hostname = Mail.Example.COM\n"
		"max_connections = 5000\n"
		"max_queue_lifetime = 4d12h\n"
		"retry_schedule = 1m, 2m, 1h\n"
		"retry_jitter = 10%\n"
		"delivery_log = /var/log/ringmail/delivery.log\n"
		"delivery_log_max_size = 256M\n"
		"dns_servers = 127.0.0.1:5353, [::1]\n"
		"bounces = off\n"
		"memory_budget = 4G\n"
		"segment_size = 128M\n"
		"journal_segment_size = 8M\n"
		"commit_size_max = 512k\n"
		"commit_slots = 8\n"
		"free_space_reserve = 1G\n"
		"spool_sync = fdatasync\n",
		&cfg);
	const struct eng_engine *e = &cfg.engine;
	cr_assert_eq(e->shards, 4);
	cr_assert_str_eq(e->spool_dir, "/var/spool/ringmail");
	cr_assert_str_eq(e->hostname, "mail.example.com");
	cr_assert_str_eq(cfg.listeners[0].hostname, "mail.example.com");
	cr_assert_eq(e->max_connections, 5000);
	cr_assert_eq(e->max_queue_lifetime_ns, 4 * NS_D + 12 * NS_H);
	cr_assert_eq(e->retry_count, 3);
	cr_assert_eq(e->retry_schedule_ns[2], NS_H);
	cr_assert_eq(e->retry_jitter_permille, 100);
	cr_assert_eq(e->delivery_log_max_size, 256ull << 20);
	cr_assert_eq(e->dns_server_count, 2);
	cr_assert_eq(e->dns_servers[0].port, 5353);
	cr_assert_eq(e->dns_servers[1].kind, ENG_HOST_IPV6);
	cr_assert_eq(e->dns_servers[1].port, 53);
	cr_assert_not(e->bounces);
	cr_assert_eq(e->memory_budget, 4ull << 30);
	cr_assert_eq(e->commit_size_max, 512u << 10);
	cr_assert_eq(e->commit_slots, 8);
	cr_assert(e->use_fdatasync);
	cr_assert_eq(eng_config_shard_count(&cfg, 32), 4);
	eng_config_free(&cfg);
}

Test(config, shards_auto_follows_the_cpus)
{
	struct eng_config cfg;
	load_ok("[engine]\nshards = auto\n", &cfg);
	cr_assert_eq(eng_config_shard_count(&cfg, 8), 8);
	cr_assert_eq(eng_config_shard_count(&cfg, 256), 64);
	cr_assert_eq(eng_config_shard_count(&cfg, -1), 1);
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Errors: file:line: [section] key: what, got 'value'.                */
/* ------------------------------------------------------------------ */

/* One Test loops over the table (see test_value.c for why). */
struct error_row {
	char text[128];
	char message[256];
};

#define UNKNOWN_SECTION                                                                     \
	"unknown section (expected [engine], [destination], [domain NAME], [route NAME] or " \
	"[listener NAME])"
#define SYNTAX_ERROR "syntax error: expected [section], key = value or a comment"

static const struct error_row errors_rows[] = {
	/* Sections. */
	{"[domian example.com]\n", "ringmail.conf:1: [domian example.com]: " UNKNOWN_SECTION},
	{"\n\n[Engine]\n", "ringmail.conf:3: [Engine]: " UNKNOWN_SECTION},
	{"[]\n", "ringmail.conf:1: []: " UNKNOWN_SECTION},
	{"[engine]\n[engine]\n",
	 "ringmail.conf:2: [engine]: duplicate section (first at line 1)"},
	{"[destination]\n\n[destination]\n",
	 "ringmail.conf:3: [destination]: duplicate section (first at line 1)"},
	{"[engine x]\n", "ringmail.conf:1: [engine x]: takes no name"},
	{"[domain]\n", "ringmail.conf:1: [domain]: expected [domain NAME] with a domain name "
		       "like example.com or .example.com"},
	{"[domain exa_mple.com]\n",
	 "ringmail.conf:1: [domain exa_mple.com]: expected [domain NAME] with a domain name "
	 "like example.com or .example.com"},
	{"[domain *]\n", "ringmail.conf:1: [domain *]: expected [domain NAME] with a domain "
			 "name like example.com or .example.com"},
	{"[domain example.com]\n[domain EXAMPLE.COM]\n",
	 "ringmail.conf:2: [domain example.com]: duplicate section (first at line 1)"},
	{"[domain .example.com]\n[domain *.example.com]\n",
	 "ringmail.conf:2: [domain .example.com]: duplicate section (first at line 1)"},
	{"[route a]\ndomains = x\nhosts = h\n[route a]\n",
	 "ringmail.conf:4: [route a]: duplicate section (first at line 1)"},
	{"[listener x y]\n", "ringmail.conf:1: [listener x y]: expected [listener NAME], NAME "
			     "of 1 to 63 letters, digits, '.', '_' or '-'"},
	{"[route]\n", "ringmail.conf:1: [route]: expected [route NAME], NAME of 1 to 63 "
		      "letters, digits, '.', '_' or '-'"},
	{"[engine] trailing\n", "ringmail.conf:1: unexpected text after the section header"},
	/* Lines. */
	{"shards = 2\n", "ringmail.conf:1: shards: key before the first [section]"},
	{"[engine]\nthis line is wrong\n", "ringmail.conf:2: " SYNTAX_ERROR},
	{"[engine\nshards = 2\n", "ringmail.conf:1: " SYNTAX_ERROR},
	{"[engine]\nshards = 2\n[engine\n", "ringmail.conf:3: " SYNTAX_ERROR},
	{"[engine]\n= 5\n", "ringmail.conf:2: syntax error: a value without a key"},
	/* Keys. */
	{"[engine]\nshardz = 2\n",
	 "ringmail.conf:2: [engine] shardz: unknown key (did you mean shards?)"},
	{"[engine]\nfoo = 1\n", "ringmail.conf:2: [engine] foo: unknown key"},
	{"[destination]\nshards = 2\n",
	 "ringmail.conf:2: [destination] shards: unknown key (it belongs in [engine])"},
	{"[domain example.com]\nmax_conections = 5\n",
	 "ringmail.conf:2: [domain example.com] max_conections: unknown key (did you mean "
	 "max_connections?)"},
	{"[listener a]\nmax_message_rate = 1/s\n",
	 "ringmail.conf:2: [listener a] max_message_rate: unknown key (it belongs in "
	 "[destination])"},
	{"[engine]\nshards = 2\nshards = 3\n",
	 "ringmail.conf:3: [engine] shards: duplicate key (first at line 2)"},
	{"[engine]\nshards = 2\n  spool_dir = x\n",
	 "ringmail.conf:3: [engine] shards: an indented line continues the previous key, "
	 "and shards takes one value (do not indent keys)"},
	{"[engine]\nmax_connections = 7\n   [destination]\n",
	 "ringmail.conf:3: [engine] max_connections: an indented line continues the "
	 "previous key, and max_connections takes one value (do not indent keys)"},
	{"[route a]\nhosts = a.example.com\n  port = 25\n",
	 "ringmail.conf:3: [route a] hosts: an indented line continues the list of hosts; "
	 "keys must start at the beginning of the line"},
	/* Values. */
	{"[engine]\nshards = 0\n", "ringmail.conf:2: [engine] shards: expected auto or a "
				   "shard count from 1 to 64, got '0'"},
	{"[engine]\nshards = 65\n", "ringmail.conf:2: [engine] shards: expected auto or a "
				    "shard count from 1 to 64, got '65'"},
	{"[engine]\nshards = 2 # two\n", "ringmail.conf:2: [engine] shards: expected auto or "
					 "a shard count from 1 to 64, got '2 # two'"},
	{"[destination]\nmax_connections = abc\n",
	 "ringmail.conf:2: [destination] max_connections: expected a positive integer, got "
	 "'abc'"},
	{"[destination]\nmax_connections = 0\n",
	 "ringmail.conf:2: [destination] max_connections: expected an integer from 1 to "
	 "100000, got '0'"},
	{"[destination]\nmax_connections =\n",
	 "ringmail.conf:2: [destination] max_connections: expected a positive integer, got "
	 "''"},
	{"[destination]\nmax_message_rate = 100/w\n",
	 "ringmail.conf:2: [destination] max_message_rate: expected a rate like 100/s, "
	 "6000/min, 1/h or unlimited, got '100/w'"},
	{"[destination]\nmax_message_rate = 0/s\n",
	 "ringmail.conf:2: [destination] max_message_rate: expected a rate of 1 to "
	 "1000000000 per period, or unlimited, got '0/s'"},
	{"[destination]\nidle_timeout = 2h\n",
	 "ringmail.conf:2: [destination] idle_timeout: expected a duration from 0 to 1h, got "
	 "'2h'"},
	{"[destination]\nconnect_timeout = 30\n",
	 "ringmail.conf:2: [destination] connect_timeout: expected a duration like 250ms, "
	 "30s, 5m, 2h or 5d, got '30'"},
	{"[destination]\ntls = maybe\n",
	 "ringmail.conf:2: [destination] tls: expected none, opportunistic, required or "
	 "verify, got 'maybe'"},
	{"[domain example.com]\nmax_message_burst = 0\n",
	 "ringmail.conf:2: [domain example.com] max_message_burst: expected an integer from "
	 "1 to 100000, got '0'"},
	{"[engine]\nbounces = maybe\n",
	 "ringmail.conf:2: [engine] bounces: expected on or off (yes/no, true/false), got "
	 "'maybe'"},
	{"[engine]\nspool_sync = fsync\n",
	 "ringmail.conf:2: [engine] spool_sync: expected dsync or fdatasync, got 'fsync'"},
	{"[engine]\nretry_schedule = 5m, 0s\n",
	 "ringmail.conf:2: [engine] retry_schedule: expected a duration from 1s to 30d, got "
	 "'0s'"},
	{"[engine]\nretry_schedule = 5m,,10m\n",
	 "ringmail.conf:2: [engine] retry_schedule: expected no empty items between commas, "
	 "got '5m,,10m'"},
	{"[engine]\nretry_schedule =\n",
	 "ringmail.conf:2: [engine] retry_schedule: needs at least one interval"},
	{"[engine]\nretry_jitter = 2\n",
	 "ringmail.conf:2: [engine] retry_jitter: expected a fraction from 0 to 1, got '2'"},
	{"[engine]\ndns_servers = ns.example.com\n",
	 "ringmail.conf:2: [engine] dns_servers: expected a list of IP addresses like "
	 "127.0.0.1, [::1]:5353, got 'ns.example.com'"},
	{"[engine]\nhostname = bad_name\n",
	 "ringmail.conf:2: [engine] hostname: expected a host name like mail.example.com, "
	 "got 'bad_name'"},
	{"[engine]\nmemory_budget = 1k\n",
	 "ringmail.conf:2: [engine] memory_budget: expected a size from 16M to 1T, got '1k'"},
	{"[engine]\nmax_queue_lifetime = 400d\n",
	 "ringmail.conf:2: [engine] max_queue_lifetime: expected a duration from 1s to 365d, "
	 "got '400d'"},
	{"[engine]\ncommit_slots = 9\n",
	 "ringmail.conf:2: [engine] commit_slots: expected an integer from 1 to 8, got '9'"},
	{"[engine]\nsegment_size = 1025k\n",
	 "ringmail.conf:2: [engine] segment_size: must be a multiple of 4k"},
	{"[engine]\nsegment_size = 1M\n",
	 "ringmail.conf:2: [engine] segment_size: too small for the largest message "
	 "(message_size_limit and recipients_max of the listeners need at least 14M)"},
	{"[listener big]\nmessage_size_limit = 32M\n[engine]\nsegment_size = 32M\n",
	 "ringmail.conf:4: [engine] segment_size: too small for the largest message "
	 "(message_size_limit and recipients_max of the listeners need at least 44M)"},
	/* Routes. */
	{"[route r]\nhosts = mx.example.com\n",
	 "ringmail.conf:1: [route r]: needs domains = example.com, ... (or *)"},
	{"[route r]\ndomains = example.com\n",
	 "ringmail.conf:1: [route r]: needs hosts = host[:port], ..."},
	{"[route r]\ndomains = example.com\nhosts =\n",
	 "ringmail.conf:1: [route r]: needs hosts = host[:port], ..."},
	{"[route a]\ndomains = *\nhosts = h\n[route b]\nhosts = h\ndomains = *\n",
	 "ringmail.conf:6: [route b] domains: * is already routed by [route a] (line 1)"},
	{"[route a]\ndomains = example.com\nhosts = h\n"
	 "[route b]\ndomains = x.com, EXAMPLE.com\nhosts = h\n",
	 "ringmail.conf:5: [route b] domains: example.com is already routed by [route a] "
	 "(line 2)"},
	{"[route a]\ndomains = exa mple.com\n",
	 "ringmail.conf:2: [route a] domains: expected a list of domains like example.com, "
	 ".example.com or *, got 'exa mple.com'"},
	{"[route a]\nhosts = 2001:db8::1\n",
	 "ringmail.conf:2: [route a] hosts: expected a list of hosts like mx.example.com, "
	 "192.0.2.1:2525, [2001:db8::1]:25, got '2001:db8::1'"},
	{"[route a]\nport = 0\n",
	 "ringmail.conf:2: [route a] port: expected an integer from 1 to 65535, got '0'"},
	/* Listeners. */
	{"[listener a]\naddress = localhost:25\n",
	 "ringmail.conf:2: [listener a] address: expected an IP address and port like "
	 "127.0.0.1:2525 or [::1]:2525, got 'localhost:25'"},
	{"[listener a]\naddress = 127.0.0.1\n",
	 "ringmail.conf:2: [listener a] address: expected an IP address and port like "
	 "127.0.0.1:2525 or [::1]:2525, got '127.0.0.1'"},
	{"[listener a]\n[listener b]\n",
	 "ringmail.conf:2: [listener b] address: 127.0.0.1 port 2525 is also the address of "
	 "[listener a]"},
	{"[listener a]\naddress = [::1]:25\n[listener b]\naddress = [::1]:25\n",
	 "ringmail.conf:4: [listener b] address: ::1 port 25 is also the address of "
	 "[listener a]"},
	{"[listener a]\nallowed_networks = 127.0.0.1/8\n",
	 "ringmail.conf:2: [listener a] allowed_networks: expected a list of networks like "
	 "10.0.0.0/8, ::1/128 (no bits past the prefix), got '127.0.0.1/8'"},
	{"[listener a]\nmessage_size_limit = 100M\n",
	 "ringmail.conf:2: [listener a] message_size_limit: expected a size from 1k to 32M, "
	 "got '100M'"},
	{"[listener a]\nrecipients_max = 10001\n",
	 "ringmail.conf:2: [listener a] recipients_max: expected an integer from 1 to 10000, "
	 "got '10001'"},
};

static void
check_errors(const struct error_row *row)
{
	expect_error(row->text, row->message);
}

Test(config, errors)
{
	for (size_t i = 0; i < sizeof(errors_rows) / sizeof(errors_rows[0]); i++)
		check_errors(&errors_rows[i]);
}

Test(config, error_names_file_line_section_and_key)
{
	/* The message format of the issue, at line 12. */
	expect_error("[engine]\n"
		     "shards = 2\n"
		     "; comment\n"
		     "\n"
		     "[destination]\n"
		     "max_connections = 50\n"
		     "\n"
		     "[domain example.org]\n"
		     "max_connections = 5\n"
		     "\n"
		     "[domain example.com]\n"
		     "max_connections = abc\n",
		     "ringmail.conf:12: [domain example.com] max_connections: expected a positive "
		     "integer, got 'abc'");
}

Test(config, long_line_and_nul_byte_are_refused)
{
	char text[400];
	int n = snprintf(text, sizeof(text), "[engine]\nspool_dir = ");
	memset(text + n, 'x', 250);
	text[n + 250] = '\n';
	text[n + 251] = '\0';
	expect_error(text, "ringmail.conf:2: line too long (at most 198 characters; continue a "
			   "list on indented lines)");
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE];
	static const char with_nul[] = "[engine]\nshards = 2\0\n";
	int r = eng_config_load_buffer("x.conf", with_nul, sizeof(with_nul) - 1, &cfg, err,
				       sizeof(err));
	cr_assert_eq(r, -EINVAL);
	cr_assert_str_eq(err, "x.conf:2: NUL byte in the line");
	eng_config_free(&cfg);
}

Test(config, bad_values_are_echoed_safely)
{
	char text[600];
	snprintf(text, sizeof(text), "[engine]\nhostname = a\tb\x01%0150d\n", 0);
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE];
	cr_assert_eq(eng_config_load_string("c", text, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "got 'a?b?000") != NULL, "%s", err);
	cr_assert(strstr(err, "...'") != NULL, "long values are cut: %s", err);
	eng_config_free(&cfg);
}

Test(config, missing_file)
{
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE];
	int r = eng_config_load_file("/nonexistent/ringmail.conf", &cfg, err, sizeof(err));
	cr_assert_eq(r, -ENOENT);
	cr_assert_str_eq(err, "/nonexistent/ringmail.conf: No such file or directory");
	check_defaults(&cfg);
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* File syntax.                                                        */
/* ------------------------------------------------------------------ */

Test(config, comments_crlf_bom_and_colons)
{
	struct eng_config cfg;
	load_ok("\xEF\xBB\xBF; a comment\r\n"
		"# another\r\n"
		"[engine]   ; inline comment after a header\r\n"
		"shards = 4 ; inline comment\r\n"
		"max_connections: 7\r\n"
		"[destination]\r\n"
		"\tmax_connections = 3\r\n",
		&cfg);
	cr_assert_eq(cfg.engine.shards, 4);
	cr_assert_eq(cfg.engine.max_connections, 7);
	cr_assert_eq(cfg.destination.max_connections, 3);
	eng_config_free(&cfg);
}

Test(config, lists_continue_on_indented_lines)
{
	struct eng_config cfg;
	load_ok("[route smarthost]\n"
		"domains = *\n"
		"port = 587\n"
		"hosts = A.example.com:2525,\n"
		"        b.example.com\n"
		"; a comment does not end the list\n"
		"        [2001:db8::1]:26, 192.0.2.7\n"
		"[engine]\n"
		"retry_schedule = 1m,\n"
		"  2m\n",
		&cfg);
	cr_assert_eq(cfg.route_count, 1);
	const struct eng_route *r = &cfg.routes[0];
	cr_assert_eq(r->host_count, 4);
	cr_assert_str_eq(r->hosts[0].host, "a.example.com");
	cr_assert_eq(r->hosts[0].port, 2525);
	cr_assert_eq(r->hosts[1].port, 587, "the route's port for hosts without one");
	cr_assert_eq(r->hosts[2].kind, ENG_HOST_IPV6);
	cr_assert_eq(r->hosts[2].port, 26);
	cr_assert_eq(r->hosts[3].kind, ENG_HOST_IPV4);
	cr_assert_eq(cfg.engine.retry_count, 2);
	cr_assert_eq(cfg.engine.retry_schedule_ns[1], 2 * NS_MIN);
	eng_config_free(&cfg);
}

Test(config, long_domain_names_are_kept_whole)
{
	/* inih cuts section names at 49 bytes; the reader keeps them whole. */
	char name[200];
	char text[400];
	memset(name, 'a', 60);
	memcpy(name + 60, ".", 1);
	memset(name + 61, 'b', 60);
	memcpy(name + 121, ".example.com", 13);
	snprintf(text, sizeof(text), "[domain %s]\nmax_connections = 3\n", name);
	struct eng_config cfg;
	load_ok(text, &cfg);
	cr_assert_str_eq(cfg.domains[0].name, name);
	cr_assert_eq(eng_config_destination(&cfg, name, strlen(name))->max_connections, 3);
	cr_assert_eq(eng_config_destination(&cfg, name, 49)->max_connections, 20);
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Destinations: [destination] then [domain] overrides.                */
/* ------------------------------------------------------------------ */

static const char inheritance_conf[] = "[domain a.com]\n"
				       "max_connections = 5\n"
				       "[destination]\n"
				       "max_connections = 50\n"
				       "max_message_rate = 100/s\n"
				       "max_connection_rate = 600/min\n"
				       "max_connection_burst = 3\n"
				       "tls = required\n"
				       "[domain b.com]\n"
				       "max_message_rate = 10/min\n"
				       "idle_timeout = 0\n"
				       "[domain c.com]\n"
				       "max_message_burst = 7\n"
				       "tls = none\n"
				       "max_connection_rate = unlimited\n";

Test(config, domain_overrides_only_the_keys_it_names)
{
	struct eng_config cfg;
	load_ok(inheritance_conf, &cfg);
	const struct eng_destination *node = &cfg.destination;
	cr_assert_eq(node->max_connections, 50);
	cr_assert_eq(node->max_message_burst, 100, "derived: one second's worth");
	cr_assert_eq(node->max_connection_burst, 3, "explicit");
	const struct eng_destination *a = eng_config_destination(&cfg, "a.com", 5);
	cr_assert_eq(a->max_connections, 5);
	cr_assert_eq(a->max_message_rate.count, 100, "inherited, whatever the section order");
	cr_assert_eq(a->max_message_burst, 100);
	cr_assert_eq(a->tls, ENG_TLS_REQUIRED);
	cr_assert_eq(a->idle_timeout_ns, 5 * NS_S, "a built-in default");
	const struct eng_destination *b = eng_config_destination(&cfg, "b.com", 5);
	cr_assert_eq(b->max_connections, 50);
	cr_assert_eq(b->max_message_rate.count, 10);
	cr_assert_eq(b->max_message_rate.period_ns, NS_MIN);
	cr_assert_eq(b->max_message_burst, 1, "a burst goes with its rate: derived again");
	cr_assert_eq(b->idle_timeout_ns, 0);
	const struct eng_destination *c = eng_config_destination(&cfg, "c.com", 5);
	cr_assert_eq(c->max_message_rate.count, 100);
	cr_assert_eq(c->max_message_burst, 7);
	cr_assert_eq(c->tls, ENG_TLS_NONE);
	cr_assert_eq(c->max_connection_rate.count, 0);
	cr_assert_eq(c->max_connection_burst, 1);
	cr_assert_eq(eng_config_destination(&cfg, "d.com", 5), &cfg.destination);
	eng_config_free(&cfg);
}

Test(config, domain_match_is_case_insensitive_with_subdomain_patterns)
{
	struct eng_config cfg;
	load_ok("[domain example.com]\nmax_connections = 1\n"
		"[domain .example.com]\nmax_connections = 2\n"
		"[domain *.deep.example.com]\nmax_connections = 3\n"
		"[domain other.org]\nmax_connections = 4\n",
		&cfg);
#define CONNS(d) (eng_config_destination(&cfg, d, strlen(d))->max_connections)
	cr_assert_eq(CONNS("example.com"), 1);
	cr_assert_eq(CONNS("EXAMPLE.Com"), 1);
	cr_assert_eq(CONNS("example.com."), 1, "one trailing dot is ignored");
	cr_assert_eq(CONNS("mx.example.com"), 2);
	cr_assert_eq(CONNS("a.b.example.com"), 2);
	cr_assert_eq(CONNS("deep.example.com"), 2, "the pattern is for subdomains of deep");
	cr_assert_eq(CONNS("x.deep.example.com"), 3, "the most specific pattern wins");
	cr_assert_eq(CONNS("y.x.DEEP.example.com"), 3);
	cr_assert_eq(CONNS("notexample.com"), 20);
	cr_assert_eq(CONNS("other.org"), 4);
	cr_assert_eq(CONNS("sub.other.org"), 20, "an exact name does not cover subdomains");
	cr_assert_eq(CONNS(""), 20);
	cr_assert_eq(CONNS("."), 20);
	cr_assert_eq(CONNS(".example.com"), 2);
#undef CONNS
	char huge[600];
	memset(huge, 'a', sizeof(huge));
	memcpy(huge + sizeof(huge) - 12, ".example.com", 12);
	cr_assert_eq(eng_config_destination(&cfg, huge, sizeof(huge)), &cfg.destination,
		     "too long to be a domain: no match");
	cr_assert_eq(eng_config_destination(&cfg, NULL, 0), &cfg.destination);
	cr_assert_null(eng_config_domain_find(&cfg, "x.org", 5));
	cr_assert_str_eq(eng_config_domain_find(&cfg, "a.example.com", 13)->name, "example.com");
	cr_assert(eng_config_domain_find(&cfg, "a.example.com", 13)->subdomains);
	eng_config_free(&cfg);
}

Test(config, ten_thousand_domains_and_not_one_more)
{
	size_t size = 10001 * 64 + 64;
	char *text = malloc(size);
	cr_assert_not_null(text);
	size_t used = 0;
	for (int i = 0; i < 10000; i++)
		used += (size_t)snprintf(text + used, size - used,
					 "[domain d%d.example]\nmax_connections = %d\n", i,
					 1 + i % 1000);
	struct eng_config cfg;
	load_ok(text, &cfg);
	cr_assert_eq(cfg.domain_count, 10000);
	cr_assert_eq(eng_config_destination(&cfg, "d9999.example", 13)->max_connections, 1000);
	cr_assert_eq(eng_config_destination(&cfg, "d1234.EXAMPLE", 13)->max_connections, 235);
	eng_config_free(&cfg);
	snprintf(text + used, size - used, "[domain one-more.example]\n");
	char message[200];
	snprintf(message, sizeof(message),
		 "ringmail.conf:20001: [domain one-more.example]: too many [domain] sections "
		 "(at most 10000)");
	expect_error(text, message);
	free(text);
}

/* ------------------------------------------------------------------ */
/* Routes.                                                             */
/* ------------------------------------------------------------------ */

static const char routes_conf[] = "[route smarthost]\n"
				  "domains = *\n"
				  "hosts = relay.example.net:587\n"
				  "[route internal]\n"
				  "domains = corp.example, .corp.example\n"
				  "hosts = 10.0.0.25, [2001:db8::25]:2525, mx.corp.example\n"
				  "[route lab]\n"
				  "domains = Lab.Corp.Example\n"
				  "port = 2526\n"
				  "hosts = 127.0.0.1\n";

Test(config, route_exact_beats_pattern_beats_star)
{
	struct eng_config cfg;
	load_ok(routes_conf, &cfg);
#define ROUTE(d) (eng_config_route(&cfg, d, strlen(d))->name)
	cr_assert_str_eq(ROUTE("corp.example"), "internal");
	cr_assert_str_eq(ROUTE("hr.corp.example"), "internal");
	cr_assert_str_eq(ROUTE("lab.corp.example"), "lab", "exact beats .corp.example");
	cr_assert_str_eq(ROUTE("LAB.corp.example."), "lab");
	cr_assert_str_eq(ROUTE("x.lab.corp.example"), "internal");
	cr_assert_str_eq(ROUTE("gmail.com"), "smarthost");
	cr_assert_str_eq(ROUTE(""), "smarthost");
#undef ROUTE
	const struct eng_route *internal = eng_config_route(&cfg, "corp.example", 12);
	cr_assert_eq(internal->host_count, 3);
	cr_assert_eq(internal->hosts[0].kind, ENG_HOST_IPV4);
	cr_assert_eq(internal->hosts[0].port, 25, "default port");
	cr_assert_eq(internal->hosts[1].kind, ENG_HOST_IPV6);
	cr_assert_eq(internal->hosts[1].port, 2525);
	cr_assert_eq(internal->hosts[2].kind, ENG_HOST_NAME);
	cr_assert_eq(internal->domain_count, 2);
	cr_assert_eq(eng_config_route(&cfg, "lab.corp.example", 16)->hosts[0].port, 2526);
	cr_assert(cfg.routes[0].is_default);
	cr_assert_eq(cfg.default_route, 0);
	eng_config_free(&cfg);
}

Test(config, without_a_star_route_unknown_domains_go_by_mx)
{
	struct eng_config cfg;
	load_ok("[route a]\ndomains = a.example\nhosts = 192.0.2.1\n", &cfg);
	cr_assert_not_null(eng_config_route(&cfg, "a.example", 9));
	cr_assert_null(eng_config_route(&cfg, "b.example", 9));
	cr_assert_null(eng_config_route(&cfg, "x.a.example", 11));
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Listeners.                                                          */
/* ------------------------------------------------------------------ */

static bool
allows(const struct eng_listener *l, const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	}
	return eng_listener_allows(l, (const struct sockaddr *)&ss);
}

Test(config, listeners_replace_the_default_one)
{
	struct eng_config cfg;
	load_ok("[engine]\nhostname = mta.example.com\n"
		"[listener inside]\n"
		"address = 0.0.0.0:25\n"
		"allowed_networks = 10.0.0.0/8, 192.168.1.128/25, 2001:db8::/32\n"
		"message_size_limit = 20M\n"
		"recipients_max = 500\n"
		"max_connections = 200\n"
		"max_connections_per_ip = 20\n"
		"command_timeout = 1m\n"
		"data_timeout = 2m\n"
		"session_deadline = 10m\n"
		"[listener local]\n"
		"hostname = local.example.com\n",
		&cfg);
	cr_assert_eq(cfg.listener_count, 2);
	const struct eng_listener *in = &cfg.listeners[0];
	cr_assert_str_eq(in->name, "inside");
	cr_assert_eq(in->address.port, 25);
	cr_assert_str_eq(in->hostname, "mta.example.com", "defaults to [engine] hostname");
	cr_assert_eq(in->message_size_limit, 20ull << 20);
	cr_assert_eq(in->recipients_max, 500);
	cr_assert_eq(in->max_connections_per_ip, 20);
	cr_assert_eq(in->session_deadline_ns, 10 * NS_MIN);
	cr_assert(allows(in, "10.1.2.3"));
	cr_assert(allows(in, "192.168.1.200"));
	cr_assert_not(allows(in, "192.168.1.100"));
	cr_assert(allows(in, "::ffff:10.9.9.9"), "v4-mapped counts as IPv4");
	cr_assert(allows(in, "2001:db8:1::5"));
	cr_assert_not(allows(in, "127.0.0.1"));
	const struct eng_listener *local = &cfg.listeners[1];
	cr_assert_str_eq(local->hostname, "local.example.com");
	cr_assert_eq(local->address.port, 2525);
	cr_assert(allows(local, "127.3.4.5"));
	cr_assert(allows(local, "::1"));
	cr_assert_not(allows(local, "::2"));
	struct spool_config sc;
	eng_config_spool(&cfg, 3, &sc);
	cr_assert_eq(sc.recipients_max, 1000, "the largest listener limit");
	cr_assert_eq(sc.message_size_max, (20u << 20) + (20u << 20) / 3 + 16384);
	eng_config_free(&cfg);
}

Test(config, empty_allowed_networks_allows_nobody)
{
	struct eng_config cfg;
	load_ok("[listener a]\nallowed_networks =\n", &cfg);
	cr_assert_eq(cfg.listeners[0].network_count, 0);
	cr_assert_not(allows(&cfg.listeners[0], "127.0.0.1"));
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Spool and retry mapping.                                            */
/* ------------------------------------------------------------------ */

Test(config, spool_settings_map_onto_spool_config)
{
	struct eng_config cfg;
	load_ok("[engine]\nspool_dir = /tmp/s\nsegment_size = 32M\njournal_segment_size = 4M\n"
		"commit_size_max = 256k\ncommit_slots = 2\nfree_space_reserve = 0\n"
		"spool_sync = fdatasync\n",
		&cfg);
	struct spool_config sc;
	eng_config_spool(&cfg, 7, &sc);
	cr_assert_str_eq(sc.dir, "/tmp/s");
	cr_assert_eq(sc.shard, 7);
	cr_assert_eq(sc.segment_size, 32ull << 20);
	cr_assert_eq(sc.journal_segment_size, 4ull << 20);
	cr_assert_eq(sc.commit_size_max, 256u << 10);
	cr_assert_eq(sc.commit_slots, 2);
	cr_assert_eq(sc.free_space_reserve, 0);
	cr_assert(sc.use_fdatasync);
	cr_assert_eq(sc.recipients_max, 1000);
	cr_assert_leq(sc.message_size_max, SPOOL_BODY_SIZE_MAX);
	eng_config_free(&cfg);
}

Test(config, retry_delay_follows_the_schedule_with_jitter)
{
	struct eng_config cfg;
	load_ok("[engine]\nretry_schedule = 1m, 10m\nretry_jitter = 0.5\n", &cfg);
	cr_assert_eq(eng_config_retry_delay_ns(&cfg, 1, 0), 30 * NS_S, "-50%");
	cr_assert_eq(eng_config_retry_delay_ns(&cfg, 1, 1u << 31), NS_MIN, "the middle");
	uint64_t top = eng_config_retry_delay_ns(&cfg, 1, UINT32_MAX);
	cr_assert(top < 90 * NS_S && top > 89 * NS_S, "just under +50%%");
	cr_assert_eq(eng_config_retry_delay_ns(&cfg, 2, 1u << 31), 10 * NS_MIN);
	cr_assert_eq(eng_config_retry_delay_ns(&cfg, 50, 1u << 31), 10 * NS_MIN, "last repeats");
	eng_config_free(&cfg);
	load_ok("[engine]\nretry_schedule = 1s\nretry_jitter = 1\n", &cfg);
	cr_assert_eq(eng_config_retry_delay_ns(&cfg, 1, 0), NS_MS, "at least 1 ms");
	eng_config_free(&cfg);
}

/* ------------------------------------------------------------------ */
/* Reload.                                                             */
/* ------------------------------------------------------------------ */

Test(config, reload_separates_restart_changes_from_hot_ones)
{
	struct eng_config running;
	struct eng_config next;
	struct eng_config_changes changes;
	load_ok("[engine]\nshards = 2\n[listener a]\n[domain a.com]\nmax_connections = 5\n",
		&running);
	load_ok("[engine]\nshards = 2\n[listener a]\n[domain a.com]\nmax_connections = 5\n",
		&next);
	cr_assert_eq(eng_config_compare(&running, &next, &changes), 0);
	cr_assert_not(changes.engine_changed || changes.destinations_changed);
	cr_assert_not(changes.routes_changed || changes.listeners_changed);
	eng_config_free(&next);

	load_ok("[engine]\nshards = 4\nspool_dir = other\nmax_connections = 10\n"
		"[listener a]\naddress = 127.0.0.1:2600\nmax_connections = 5\n"
		"[domain a.com]\nmax_connections = 6\n"
		"[route r]\ndomains = *\nhosts = 192.0.2.1\n",
		&next);
	cr_assert_eq(eng_config_compare(&running, &next, &changes), 3);
	cr_assert_str_eq(changes.restart[0], "[engine] shards");
	cr_assert_str_eq(changes.restart[1], "[engine] spool_dir");
	cr_assert_str_eq(changes.restart[2], "[listener a] address");
	cr_assert(changes.engine_changed, "max_connections is hot");
	cr_assert(changes.listeners_changed);
	cr_assert(changes.destinations_changed);
	cr_assert(changes.routes_changed);
	eng_config_free(&next);

	load_ok("[engine]\nshards = 2\n[listener b]\n[domain a.com]\nmax_connections = 5\n",
		&next);
	cr_assert_eq(eng_config_compare(&running, &next, &changes), 1);
	cr_assert_str_eq(changes.restart[0], "[listener] sections added, removed or renamed");
	eng_config_free(&next);
	eng_config_free(&running);
}

/* ------------------------------------------------------------------ */
/* The example in docs/ stays valid.                                   */
/* ------------------------------------------------------------------ */

static char *
read_doc(const char *name)
{
	const char *source = getenv("RINGMAIL_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/docs/%s", source != NULL ? source : ".", name);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	static char buf[256 * 1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	cr_assert_lt(n, sizeof(buf) - 1, "%s is larger than expected", path);
	buf[n] = '\0';
	return strdup(buf);
}

Test(config, example_in_config_md_is_the_example_file)
{
	char *md = read_doc("config.md");
	char *example = read_doc("ringmail.conf.example");
	const char *section = strstr(md, "\n## Example\n");
	cr_assert_not_null(section);
	const char *start = strstr(section, "```ini\n");
	cr_assert_not_null(start);
	start += strlen("```ini\n");
	const char *end = strstr(start, "```\n");
	cr_assert_not_null(end);
	cr_assert_eq((size_t)(end - start), strlen(example), "docs/config.md and "
		     "docs/ringmail.conf.example differ in length");
	cr_assert(memcmp(start, example, strlen(example)) == 0,
		  "docs/config.md and docs/ringmail.conf.example differ");
	free(md);
	free(example);
}

Test(config, example_file_in_docs_loads)
{
	const char *source = getenv("RINGMAIL_SOURCE_DIR");
	char path[1024];
	snprintf(path, sizeof(path), "%s/docs/ringmail.conf.example",
		 source != NULL ? source : ".");
	struct eng_config cfg;
	char err[ENG_CONFIG_ERROR_SIZE] = "";
	int r = eng_config_load_file(path, &cfg, err, sizeof(err));
	cr_assert_eq(r, 0, "%s", err);
	cr_assert_gt(cfg.domain_count, 0);
	cr_assert_gt(cfg.route_count, 0);
	cr_assert_eq(cfg.listener_count, 2);
	cr_assert_str_eq(eng_config_route(&cfg, "hr.corp.example", 15)->name, "internal");
	cr_assert_eq(eng_config_route(&cfg, "corp.example", 12)->host_count, 3);
	cr_assert_null(eng_config_route(&cfg, "gmail.com", 9));
	cr_assert_eq(eng_config_destination(&cfg, "GMAIL.com", 9)->max_connections, 50);
	cr_assert_eq(eng_config_destination(&cfg, "yahoo.com", 9)->max_message_burst, 50);
	cr_assert_eq(eng_config_destination(&cfg, "a.example.org", 13)->max_connections, 2);
	cr_assert_eq(eng_config_destination(&cfg, "example.org", 11)->max_connections, 20);
	eng_config_free(&cfg);
}

/* [listener NAME] TLS keys (issue 7, inbound STARTTLS). */
Test(config, listener_tls_keys)
{
	struct eng_config cfg, next;
	struct eng_config_changes changes;
	load_ok("[listener a]\n", &cfg);
	cr_assert_str_eq(cfg.listeners[0].tls_certificate, "", "no STARTTLS by default");
	cr_assert_str_eq(cfg.listeners[0].tls_key, "");
	cr_assert_not(cfg.listeners[0].require_tls);
	load_ok("[listener a]\ntls_certificate = /etc/ringmail/cert.pem\n"
		"tls_key = /etc/ringmail/key.pem\nrequire_tls = yes\n",
		&next);
	cr_assert_str_eq(next.listeners[0].tls_certificate, "/etc/ringmail/cert.pem");
	cr_assert_str_eq(next.listeners[0].tls_key, "/etc/ringmail/key.pem");
	cr_assert(next.listeners[0].require_tls);
	/* Hot keys: a SIGHUP applies them (new certificate, require_tls). */
	cr_assert_eq(eng_config_compare(&cfg, &next, &changes), 0);
	cr_assert(changes.listeners_changed);
	eng_config_free(&cfg);
	eng_config_free(&next);
	expect_error("[listener a]\ntls_certificate = /c.pem\n",
		     "ringmail.conf:1: [listener a]: tls_certificate is set without tls_key");
	expect_error("[listener a]\ntls_key = /k.pem\n",
		     "ringmail.conf:1: [listener a]: tls_key is set without tls_certificate");
	expect_error("[listener a]\nrequire_tls = yes\n",
		     "ringmail.conf:1: [listener a]: require_tls needs tls_certificate and tls_key");
	expect_error("[listener a]\nrequire_tls = maybe\n",
		     "ringmail.conf:2: [listener a] require_tls: expected on or off (yes/no, "
		     "true/false), got 'maybe'");
}
