/*
 * eng_config.h - the daemon's configuration: the INI file (docs/config.md),
 * the built-in default that runs on a laptop with no file, the value
 * syntax (integers, sizes, durations, rates, booleans, lists, hosts,
 * networks), per-domain resolution of destination settings and static
 * routes, and the reload check (SIGHUP).
 *
 * File format (inih): `[section]` headers, `key = value` lines, comments
 * on their own line starting with ';' or '#', inline comments after
 * " ;". A list value may continue on following lines that start with
 * whitespace. Sections: [engine], [destination] (node defaults for every
 * destination), [domain NAME] (overrides for one domain), [route NAME]
 * (static routes: transport_maps, smarthost) and [listener NAME]
 * (injection). Unknown sections and keys, duplicate keys, duplicate
 * sections and bad values are errors naming file, line, section and key:
 *   ringmail.conf:12: [domain example.com] max_connections: expected a
 *   positive integer, got 'abc'
 *
 * Domain matching (destinations and routes): case-insensitive; the name
 * "example.com" matches exactly that domain; ".example.com" (or
 * "*.example.com") matches every subdomain of example.com but not
 * example.com itself (Postfix transport_maps convention). An exact name
 * beats a subdomain pattern, a longer (more specific) pattern beats a
 * shorter one, and for routes any pattern beats the `*` smarthost.
 *
 * Memory: everything is allocated at load (start-up or reload), bounded
 * by the ENG_CONFIG_*_MAX counts, and released by eng_config_free. The
 * lookups allocate nothing and may run on the hot path; a loaded config
 * is immutable and may be read by several threads at once.
 *
 * Values are parsed as (ptr, len) and never read past len.
 */
#ifndef ENG_CONFIG_H
#define ENG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "eng_common.h"

struct spool_config;

/* Bounds (docs/config.md). */
#define ENG_CONFIG_DOMAINS_MAX 10000u	    /* [domain] sections */
#define ENG_CONFIG_ROUTES_MAX 1000u	    /* [route] sections */
#define ENG_CONFIG_ROUTE_HOSTS_MAX 64u	    /* hosts per route */
#define ENG_CONFIG_ROUTE_DOMAINS_MAX 10000u /* domain patterns over all routes */
#define ENG_CONFIG_LISTENERS_MAX 16u
#define ENG_CONFIG_NETWORKS_MAX 64u	    /* allowed_networks per listener */
#define ENG_CONFIG_DNS_SERVERS_MAX 8u
#define ENG_CONFIG_RETRY_STEPS_MAX 32u
#define ENG_CONFIG_SHARDS_MAX 64u
#define ENG_CONFIG_FILE_SIZE_MAX (16u << 20)
#define ENG_CONFIG_NAME_SIZE 64u	    /* route and listener names, with the NUL */
#define ENG_CONFIG_PATH_SIZE 1024u	    /* spool_dir, delivery_log, with the NUL */
#define ENG_DOMAIN_SIZE 254u		    /* RFC 1035: 253 characters and a NUL */
#define ENG_CONFIG_ERROR_SIZE 512u	    /* a comfortable err_size */

/* Result of the value parsers: syntax error, or well-formed but out of range. */
enum eng_value_result {
	ENG_VALUE_OK = 0,
	ENG_VALUE_SYNTAX,
	ENG_VALUE_RANGE,
};

/* A rate: count events per period_ns. count == 0 means unlimited. */
struct eng_rate {
	uint64_t count;
	uint64_t period_ns;
};

enum eng_tls_mode {
	ENG_TLS_NONE,		/* never STARTTLS */
	ENG_TLS_OPPORTUNISTIC,	/* STARTTLS when offered, no verification */
	ENG_TLS_REQUIRED,	/* STARTTLS or defer, no verification */
	ENG_TLS_VERIFY,		/* STARTTLS with a verified certificate, or defer */
};

enum eng_host_kind {
	ENG_HOST_NAME,
	ENG_HOST_IPV4,
	ENG_HOST_IPV6,
};

/* host[:port]: a DNS name, an IPv4 literal or an [IPv6] literal. */
struct eng_hostport {
	enum eng_host_kind kind;
	uint16_t port;			/* 0 = not given */
	uint8_t addr[16];		/* network order; 4 bytes for IPv4 */
	char host[ENG_DOMAIN_SIZE];	/* name (lowercase) or literal, no brackets */
};

/* An IP network: family 4 or 6, prefix_len bits of addr; other bits zero. */
struct eng_cidr {
	uint8_t family;
	uint8_t prefix_len;
	uint8_t addr[16];
};

/*
 * Effective settings of one destination: [destination] over the built-in
 * defaults, then a matching [domain] over that. Field names follow the
 * configuration keys; durations gain an _ns suffix.
 */
struct eng_destination {
	uint32_t max_connections;
	uint32_t max_messages_per_connection;
	uint32_t max_recipients_per_transaction;
	uint32_t max_message_burst;	/* tokens; derived from the rate if not set */
	uint32_t max_connection_burst;
	enum eng_tls_mode tls;
	struct eng_rate max_message_rate;
	struct eng_rate max_connection_rate;
	uint64_t idle_timeout_ns;
	uint64_t connect_timeout_ns;
	uint64_t greeting_timeout_ns;	/* RFC 5321 4.5.3.2.1 initial 220 */
	uint64_t mail_timeout_ns;	/* 4.5.3.2.2 MAIL */
	uint64_t rcpt_timeout_ns;	/* 4.5.3.2.3 RCPT */
	uint64_t data_timeout_ns;	/* 4.5.3.2.4 DATA initiation (354) */
	uint64_t data_block_timeout_ns; /* 4.5.3.2.5 each data block sent */
	uint64_t data_done_timeout_ns;	/* 4.5.3.2.6 250 after the final dot */
	/* opportunistic: after a TLS failure with a host, plaintext to it
	 * (on new connections) for this long; 0 = never fall back. */
	uint64_t tls_plaintext_fallback_time_ns;
};

/* A [domain NAME] section. */
struct eng_domain {
	char name[ENG_DOMAIN_SIZE];	/* lowercase, without a leading "." or "*." */
	bool subdomains;		/* ".name": matches subdomains of name only */
	uint32_t line;			/* of the section header */
	uint64_t set_mask;		/* keys the section names (private) */
	struct eng_destination values;	/* as written; only set_mask fields (private) */
	struct eng_destination effective;
};

/* A [route NAME] section. */
struct eng_route {
	char name[ENG_CONFIG_NAME_SIZE];
	uint32_t line;
	bool is_default;		/* domains includes "*": the smarthost */
	uint16_t port;			/* for hosts without :port; default 25 */
	uint32_t domain_count;		/* patterns in domains, "*" included */
	uint32_t host_count;
	struct eng_hostport *hosts;	/* host_count, in the order written */
	enum eng_tls_mode tls;		/* with tls_is_set: overrides the domain's */
	bool tls_is_set;
	uint64_t set_mask;		/* private */
};

/* One domain pattern of a route's domains list ("*" is not listed here). */
struct eng_route_domain {
	char name[ENG_DOMAIN_SIZE];
	bool subdomains;
	uint32_t route_index;
	uint32_t line;
};

/* A [listener NAME] section (injection, issue 4). */
struct eng_listener {
	char name[ENG_CONFIG_NAME_SIZE];
	uint32_t line;			/* 0 for the built-in default listener */
	struct eng_hostport address;	/* an IP literal and a port */
	char hostname[ENG_DOMAIN_SIZE];	/* banner; default [engine] hostname */
	uint32_t network_count;
	struct eng_cidr networks[ENG_CONFIG_NETWORKS_MAX];
	uint64_t message_size_limit;	/* bytes, as SIZE counts them (RFC 1870) */
	uint32_t recipients_max;
	uint32_t max_connections;
	uint32_t max_connections_per_ip;
	uint64_t command_timeout_ns;
	uint64_t data_timeout_ns;
	uint64_t session_deadline_ns;
	uint64_t greeting_delay_ns;	/* early-talker check before the 220; 0 = none */
	char auth_file[ENG_CONFIG_PATH_SIZE]; /* user:crypt-hash lines; "" = no AUTH */
	char tls_certificate[ENG_CONFIG_PATH_SIZE]; /* PEM chain; "" = no STARTTLS */
	char tls_key[ENG_CONFIG_PATH_SIZE];	    /* PEM key; set with tls_certificate */
	bool require_tls;		/* 530 to MAIL/RCPT/DATA/BDAT/AUTH before STARTTLS */
	uint64_t set_mask;		/* private */
};

/* [engine]. Spool settings map onto struct spool_config (eng_config_spool). */
struct eng_engine {
	uint32_t shards;		/* 0 = auto: one per online CPU */
	char spool_dir[ENG_CONFIG_PATH_SIZE];
	char hostname[ENG_DOMAIN_SIZE];	/* HELO/EHLO name */
	uint32_t max_connections;	/* outbound, node-wide */
	uint64_t max_queue_lifetime_ns;
	uint32_t retry_count;
	uint64_t retry_schedule_ns[ENG_CONFIG_RETRY_STEPS_MAX]; /* the last repeats */
	uint32_t retry_jitter_permille;	/* +- this fraction of each delay */
	char delivery_log[ENG_CONFIG_PATH_SIZE];
	uint64_t delivery_log_max_size;	/* bytes; rotate beyond */
	uint32_t dns_server_count;	/* 0 = /etc/resolv.conf */
	struct eng_hostport dns_servers[ENG_CONFIG_DNS_SERVERS_MAX];
	uint16_t smtp_port;		/* MX delivery port, 1-65535; default 25 */
	bool bounces;			/* generate DSNs ([engine] dsn, alias bounces) */
	bool hold;			/* accept and store, do not deliver */
	uint32_t delivery_log_keep;	/* rotated files kept: log.1 .. log.N */
	uint64_t stop_grace_ns;		/* SIGTERM: in-flight transactions may finish */
	uint32_t delivery_connections;	/* outbound connection pool per shard */
	uint64_t memory_budget;		/* bytes */
	uint64_t segment_size;
	uint64_t journal_segment_size;
	uint32_t commit_size_max;
	uint32_t commit_slots;
	uint64_t free_space_reserve;
	bool use_fdatasync;		/* spool_sync = fdatasync; default dsync */
	char tls_ca_file[ENG_CONFIG_PATH_SIZE]; /* outbound verify; "" = system store */
	uint32_t tls_session_cache_size; /* outbound TLS sessions kept per shard */
};

struct eng_config_index;

struct eng_config {
	char source[ENG_CONFIG_PATH_SIZE]; /* file name in messages */
	struct eng_engine engine;
	struct eng_destination destination; /* [destination]: effective node defaults */
	uint32_t domain_count;
	struct eng_domain *domains;
	uint32_t route_count;
	struct eng_route *routes;
	uint32_t route_domain_count;
	struct eng_route_domain *route_domains;
	int32_t default_route;		/* index of the "*" route, or -1 */
	uint32_t listener_count;
	struct eng_listener listeners[ENG_CONFIG_LISTENERS_MAX];
	uint64_t destination_set_mask;	/* private */
	struct eng_config_index *index;	/* private lookup tables */
};

/*
 * The built-in default: spool "spool" in the working directory, one
 * listener on 127.0.0.1:2525, HELO name from gethostname(), no domains,
 * no routes (every domain goes by MX). Allocates nothing; eng_config_free
 * on it is harmless.
 */
void eng_config_default(struct eng_config *cfg);

/*
 * Load a configuration: the defaults, overridden by the file. Returns 0
 * and a config the caller releases with eng_config_free, or -errno with
 * one line in err ("ringmail.conf:12: [engine] shards: ...") and cfg left
 * at the defaults with nothing allocated: -EINVAL for any error in the
 * text, -ENOENT/-EACCES/-EFBIG/... for the file itself, -ENOMEM.
 * The _string and _buffer forms (tests, SIGHUP) take the text directly;
 * name is the file name used in messages. Start-up and reload only: they
 * allocate.
 */
int eng_config_load_file(const char *path, struct eng_config *cfg, char *err, size_t err_size)
	ENG_WARN_UNUSED;
int eng_config_load_string(const char *name, const char *text, struct eng_config *cfg, char *err,
			   size_t err_size) ENG_WARN_UNUSED;
int eng_config_load_buffer(const char *name, const char *text, size_t len, struct eng_config *cfg,
			   char *err, size_t err_size) ENG_WARN_UNUSED;

void eng_config_free(struct eng_config *cfg);

/*
 * What `ringmail` runs without -c: eng_config_builtin_text parsed like a
 * file. A laptop set-up for the demo (./tools/demo): spool and delivery
 * log in the working directory (ringmail-spool/, ringmail-delivery.log),
 * the default listener on 127.0.0.1:2525, and one static route sending
 * the domains under ringmail.test (RFC 6761 reserves .test: they never
 * resolve) to a local sink on 127.0.0.1:2626. Every other domain goes by
 * MX. Returns 0, or -errno with one line in err (a bug: the text is ours).
 */
extern const char eng_config_builtin_text[];
int eng_config_load_builtin(struct eng_config *cfg, char *err, size_t err_size) ENG_WARN_UNUSED;

/*
 * Effective settings for a destination domain (ptr, len; not
 * NUL-terminated, one trailing dot ignored): the best matching [domain]
 * section's, or [destination]'s. Never NULL. Peer input is fine: names
 * too long or empty simply match nothing.
 */
const struct eng_destination *eng_config_destination(const struct eng_config *cfg,
						     const char *domain, size_t len);
/* The [domain] section that applies to domain, or NULL. */
const struct eng_domain *eng_config_domain_find(const struct eng_config *cfg, const char *domain,
						size_t len);

/*
 * The static route for domain: an exact domain, else the most specific
 * ".parent" pattern, else the "*" route; NULL means "look up MX records".
 */
const struct eng_route *eng_config_route(const struct eng_config *cfg, const char *domain,
					 size_t len);

/* shards resolved: the configured count, or online_cpus clamped to 1..64. */
uint32_t eng_config_shard_count(const struct eng_config *cfg, long online_cpus);

/*
 * The spool settings of one shard. out->dir points into cfg (valid while
 * cfg lives). message_size_max and recipients_max come from the largest
 * listener limits: message_size_limit + 1/3 (worst-case dot-stuffing of
 * the stored wire form) + 16 KiB (trace headers).
 */
void eng_config_spool(const struct eng_config *cfg, uint16_t shard, struct spool_config *out);

/*
 * Delay before attempt number `deferrals + 1` after `deferrals` (>= 1)
 * transient failures: retry_schedule[deferrals - 1], the last step
 * repeating, spread by +- retry_jitter using random (uniform 32 bits).
 * At least 1 ms.
 */
uint64_t eng_config_retry_delay_ns(const struct eng_config *cfg, uint32_t deferrals,
				   uint32_t random);

/* Does listener accept a client from sa (AF_INET/AF_INET6; v4-mapped v6 counts as v4)? */
bool eng_listener_allows(const struct eng_listener *listener, const struct sockaddr *sa);

/* Socket address of an IP-literal hostport. Returns 0, or -EINVAL for a name. */
int eng_hostport_sockaddr(const struct eng_hostport *hp, struct sockaddr_storage *out,
			  socklen_t *out_len) ENG_WARN_UNUSED;

/*
 * Reload (SIGHUP): compare the running config with a newly loaded one.
 * restart[] names every change that takes effect only after a restart
 * (shards, spool settings, memory_budget, delivery_log, dns_servers,
 * listener set, addresses and size/recipient limits); the running values
 * stay in force for those. The *_changed flags say which hot parts differ
 * (destinations and domains, routes, other [engine] and listener keys).
 */
#define ENG_CONFIG_CHANGES_MAX 32u
struct eng_config_changes {
	uint32_t restart_count;
	char restart[ENG_CONFIG_CHANGES_MAX][96]; /* e.g. "[engine] shards" */
	bool engine_changed;
	bool destinations_changed;
	bool routes_changed;
	bool listeners_changed;
};
/* Returns restart_count. */
uint32_t eng_config_compare(const struct eng_config *running, const struct eng_config *next,
			    struct eng_config_changes *out);

/*
 * Value syntax (docs/config.md, "Values"). Each reads exactly (s, len).
 *   integer   decimal digits, no sign: "100"
 *   size      integer with an optional binary unit: b, k/kb/kib, m/mb/mib,
 *             g/gb/gib, t/tb/tib, any case: "512k", "10M", "1G", "4096"
 *   duration  one or more number+unit terms, units ms, s, m/min, h, d:
 *             "250ms", "30s", "5m", "2h", "5d", "4d12h"; "0" alone is zero
 *   rate      "N/unit" with unit s/sec/second, m/min/minute, h/hr/hour,
 *             d/day, or "unlimited": "100/s", "6000/min", "1/h"
 *   boolean   on/off, yes/no, true/false, 1/0, any case
 *   fraction  "0.2" (up to 3 decimals) or "20%" (up to 1 decimal), 0..1
 *   list      comma-separated items, spaces around items ignored, no
 *             empty items; one trailing comma is allowed
 */
enum eng_value_result eng_value_u64(const char *s, size_t len, uint64_t min, uint64_t max,
				    uint64_t *out) ENG_WARN_UNUSED;
enum eng_value_result eng_value_size(const char *s, size_t len, uint64_t *bytes) ENG_WARN_UNUSED;
enum eng_value_result eng_value_duration(const char *s, size_t len, uint64_t *ns)
	ENG_WARN_UNUSED;
enum eng_value_result eng_value_rate(const char *s, size_t len, struct eng_rate *out)
	ENG_WARN_UNUSED;
enum eng_value_result eng_value_bool(const char *s, size_t len, bool *out) ENG_WARN_UNUSED;
enum eng_value_result eng_value_fraction(const char *s, size_t len, uint32_t *permille)
	ENG_WARN_UNUSED;
/* A DNS name: labels of letters, digits and inner hyphens, 1..63 each, <= 253 in all. */
enum eng_value_result eng_value_domain(const char *s, size_t len) ENG_WARN_UNUSED;
/*
 * host[:port]. "[v6]" and "[v6]:port" for IPv6; a bare IPv6 literal is a
 * syntax error. default_port fills a missing port (0 = leave 0).
 */
enum eng_value_result eng_value_hostport(const char *s, size_t len, uint16_t default_port,
					 struct eng_hostport *out) ENG_WARN_UNUSED;
/* "addr/len" or "addr" (a host network); host bits set is a syntax error. */
enum eng_value_result eng_value_cidr(const char *s, size_t len, struct eng_cidr *out)
	ENG_WARN_UNUSED;

enum eng_list_result {
	ENG_LIST_ITEM,
	ENG_LIST_END,
	ENG_LIST_EMPTY_ITEM, /* ",," or a leading comma: a syntax error */
};

struct eng_list {
	const char *s;
	size_t len;
	size_t pos;
};

void eng_list_init(struct eng_list *list, const char *s, size_t len);
/* Next item, trimmed of spaces and tabs. Bounded by len. */
enum eng_list_result eng_list_next(struct eng_list *list, const char **item, size_t *item_len)
	ENG_WARN_UNUSED;

/* Rate helpers shared with the scheduler. Whole seconds' worth, at least 1. */
uint32_t eng_rate_default_burst(const struct eng_rate *rate);

#endif /* ENG_CONFIG_H */
