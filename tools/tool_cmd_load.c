/*
 * tool_cmd_load.c - ringmail-spool load: pre-load an offline spool with
 * synthetic messages through the real spool code.
 *
 *   ringmail-spool -d SPOOL_DIR [--json] load [--shards N] [--count N]
 *       [--size BYTES] [--domains D] [--zipf S] [--recipients R]
 *       [--sender ADDR] [--seed N] [--segment-size BYTES]
 *
 * What the delivery benchmark and the tests need (issue 3: "a spool
 * pre-loaded with 200k messages of 5 KB, 1 domain and 1000 domains"):
 * a spool the daemon recovers exactly like one it wrote itself. So every
 * message goes through spool_open / spool_write_message / spool_close on
 * a ring, one thread and one ring per shard (as the daemon's shard
 * threads), with up to TOOL_LOAD_IN_FLIGHT_MAX appends in flight per shard
 * so group commit batches them.
 *
 * Messages: message i has R recipients user<i*R+r>@d<k>.test, all in one
 * domain d<k>.test, k drawn uniformly or Zipf(s) over D domains from a
 * seeded generator (the same seed gives the same messages). It is written
 * to the shard that owns d<k>.test by the daemon's rule (tool_domain_owner
 * = eng_domain_owner), so the daemon's shard i recovers its own domains.
 * The body is in SMTP wire form: From, To, Subject, Date and Message-ID
 * headers, text lines of 20 to 76 characters (one in 16 starts with a
 * period, dot-stuffed), ending CRLF.CRLF, about --size bytes in all.
 *
 * Invariants: a slot (op, envelope, body) is borrowed by the spool from
 * spool_write_message until its callback (spool_log.h); a shard's
 * messages are acknowledged in log order; every slot is free again when
 * the shard's loop ends. Memory is allocated before the first write.
 *
 * XXX: nothing keeps a running daemon out of the spool (there is no lock
 * file yet). Loading into a spool a daemon holds would write segments it
 * does not know about until its next restart, and could race it for a
 * segment id. Run load only against a stopped daemon's spool.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/eng_common.h"
#include "ring/ring.h"
#include "tool_json.h"
#include "tool_spool.h"

/* Appends in flight per shard, and their bodies' bytes at most. */
#define TOOL_LOAD_IN_FLIGHT_MAX 256u
#define TOOL_LOAD_IN_FLIGHT_BYTES (64u << 20)
/* Below the spool's default message_size_max (10 MiB). */
#define TOOL_LOAD_SIZE_MIN 64u
#define TOOL_LOAD_SIZE_MAX (8u << 20)
/* Headers: sender and recipient are each at most an address. */
#define TOOL_LOAD_HEADER_SLACK 1024u
#define TOOL_LOAD_SENDER_MAX 254u /* RFC 5321 4.5.3.1.3, less the brackets */
#define TOOL_LOAD_ADDRESS_SIZE 64u
/* The spool's default recipients_max. */
#define TOOL_LOAD_RECIPIENTS_MAX 1000u
#define TOOL_LOAD_COUNT_MAX 100000000ull
#define TOOL_LOAD_DOMAINS_MAX 10000000u
/* The daemon's default max_queue_lifetime (eng_config.c). */
#define TOOL_LOAD_LIFETIME_NS (5ull * 24 * 3600 * 1000000000ull)
#define TOOL_LOAD_TURN_NS (100ull * 1000 * 1000)
/* A shard with appends in flight and no completion for this many turns
 * (60 s) has stalled: give up rather than hang. */
#define TOOL_LOAD_IDLE_TURNS_MAX 600u
#define TOOL_LOAD_LINE_MIN 20u
#define TOOL_LOAD_LINE_MAX 76u

_Static_assert(TOOL_LOAD_SIZE_MAX + TOOL_LOAD_HEADER_SLACK < (10u << 20),
	       "a loaded body fits the spool's default message_size_max");
_Static_assert(TOOL_LOAD_LINE_MAX + 2 < 998, "RFC 5322 2.1.1 line length");

static const char tool_load_text[] =
	"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
	"incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
	"exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
	"dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
	"Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt "
	"mollit anim id est laborum. The quick brown fox jumps over the lazy dog, twice. ";

/* The whole run: options and the per-message draw, shared read-only. */
struct tool_load_plan {
	const struct tool_load_options *load;
	const char *spool_dir;
	uint16_t *shard_of;	/* per message */
	uint32_t *domain_of;	/* per message */
	char date[64];		/* the Date: header value */
	atomic_bool stop;	/* a shard failed: the others stop submitting */
};

struct tool_load_shard;

struct tool_load_slot {
	struct spool_append op;
	struct spool_message message;
	struct tool_load_shard *shard;
	struct spool_span *rcpts;
	char *rcpt_text;	/* recipients x TOOL_LOAD_ADDRESS_SIZE */
	uint8_t *body;
	uint32_t body_size_max;
};

struct tool_load_shard {
	struct tool_load_plan *plan;
	uint16_t index;
	pthread_t thread;
	struct tool_load_slot *slots;
	uint32_t *free_slots; /* a stack of slot indexes */
	uint32_t slot_count;
	uint32_t free_count;
	uint64_t next_index; /* the next message index to look at */
	atomic_uint_fast64_t acked;
	uint64_t recipients;
	uint64_t bytes;	       /* message bodies, wire form */
	uint64_t record_bytes; /* records in the spool */
	uint64_t existing_messages;
	int32_t write_error;
	char err[TOOL_ERR_SIZE];
	atomic_bool done;
};

/* ---- options ---- */

void
tool_load_options_defaults(struct tool_load_options *load)
{
	ENG_ASSERT(load != NULL);
	memset(load, 0, sizeof(*load));
	load->shards = 1;
	load->count = 1000;
	load->size = 5120;
	load->domains = 1;
	load->zipf = 0.0;
	load->recipients = 1;
	load->sender = "loader@load.test";
	load->seed = 1;
	load->segment_size = 0;
	ENG_ASSERT(!load->any_set);
}

/* A decimal in [min, max]; false on anything else. */
static bool
tool_load_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *value)
{
	ENG_ASSERT(text != NULL && min <= max);
	char *end = NULL;
	if (text[0] < '0' || text[0] > '9')
		return false;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*value = (uint64_t)v;
	return true;
}

static bool
tool_load_parse_zipf(const char *text, double *value)
{
	char *end = NULL;
	errno = 0;
	double v = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(v >= 0.0) || v > 100.0)
		return false;
	*value = v;
	return true;
}

/* Parse an integer option; the caller knows its bounds. */
static bool
tool_load_parse_int(struct tool_load_options *load, const char *name, const char *value)
{
	uint64_t v = 0;
	if (strcmp(name, "shards") == 0 && tool_load_parse_u64(value, 1, TOOL_SHARDS_MAX, &v))
		load->shards = (uint32_t)v;
	else if (strcmp(name, "count") == 0 && tool_load_parse_u64(value, 1, TOOL_LOAD_COUNT_MAX, &v))
		load->count = v;
	else if (strcmp(name, "size") == 0 &&
		 tool_load_parse_u64(value, TOOL_LOAD_SIZE_MIN, TOOL_LOAD_SIZE_MAX, &v))
		load->size = (uint32_t)v;
	else if (strcmp(name, "domains") == 0 &&
		 tool_load_parse_u64(value, 1, TOOL_LOAD_DOMAINS_MAX, &v))
		load->domains = (uint32_t)v;
	else if (strcmp(name, "recipients") == 0 &&
		 tool_load_parse_u64(value, 1, TOOL_LOAD_RECIPIENTS_MAX, &v))
		load->recipients = (uint32_t)v;
	else if (strcmp(name, "seed") == 0 && tool_load_parse_u64(value, 0, UINT64_MAX, &v))
		load->seed = v;
	else if (strcmp(name, "segment-size") == 0 &&
		 tool_load_parse_u64(value, SPOOL_BLOCK_SIZE, UINT64_MAX, &v) &&
		 v % SPOOL_BLOCK_SIZE == 0)
		load->segment_size = v;
	else
		return false;
	return true;
}

/* An address for the envelope: printable ASCII, no brackets or spaces. */
static bool
tool_load_sender_is_valid(const char *text)
{
	size_t len = strlen(text);
	if (len > TOOL_LOAD_SENDER_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c <= ' ' || c >= 0x7f || c == '<' || c == '>')
			return false;
	}
	return true;
}

bool
tool_load_option_parse(struct tool_load_options *load, const char *name, const char *value,
		       char *err, size_t err_size)
{
	ENG_ASSERT(load != NULL && name != NULL);
	ENG_ASSERT(value != NULL && err != NULL && err_size > 0);
	load->any_set = true;
	bool ok;
	if (strcmp(name, "zipf") == 0)
		ok = tool_load_parse_zipf(value, &load->zipf);
	else if (strcmp(name, "sender") == 0)
		ok = tool_load_sender_is_valid(value);
	else
		ok = tool_load_parse_int(load, name, value);
	if (ok && strcmp(name, "sender") == 0)
		load->sender = value;
	if (!ok)
		snprintf(err, err_size, "bad --%s '%s'", name, value);
	return ok;
}

/* ---- the plan: which domain, which shard ---- */

uint32_t
tool_domain_owner(const char *domain, size_t len, uint32_t shard_count)
{
	ENG_ASSERT(domain != NULL || len == 0);
	ENG_ASSERT(shard_count > 0);
	uint32_t hash = 2166136261u; /* FNV-1a 32-bit offset basis */
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)domain[i];
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		hash = (hash ^ c) * 16777619u; /* FNV prime */
	}
	return hash % shard_count;
}

/* splitmix64: a small, good, seedable generator. */
static uint64_t
tool_load_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double
tool_load_rand_unit(uint64_t *state)
{
	return (double)(tool_load_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Zipf(s) over domains: cdf[k] = sum of 1/(j+1)^s for j <= k, normalized. */
static void
tool_load_zipf_cdf(double *cdf, uint32_t domains, double s)
{
	ENG_ASSERT(domains > 0 && s >= 0.0);
	double sum = 0.0;
	for (uint32_t k = 0; k < domains; k++) {
		sum += 1.0 / pow((double)k + 1.0, s);
		cdf[k] = sum;
	}
	for (uint32_t k = 0; k < domains; k++)
		cdf[k] /= sum;
	cdf[domains - 1] = 1.0;
}

/* The first k with cdf[k] > u. */
static uint32_t
tool_load_zipf_pick(const double *cdf, uint32_t domains, double u)
{
	uint32_t lo = 0, hi = domains - 1;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	ENG_ASSERT(lo < domains);
	return lo;
}

static int
tool_load_domain_name(uint32_t domain, char *out, size_t out_size)
{
	return snprintf(out, out_size, "d%" PRIu32 ".test", domain);
}

/* Draw every message's domain and owner. Returns false on no memory. */
static bool
tool_load_plan_draw(struct tool_load_plan *plan)
{
	const struct tool_load_options *load = plan->load;
	uint32_t *owner = calloc(load->domains, sizeof(*owner));
	double *cdf = load->zipf > 0.0 ? calloc(load->domains, sizeof(*cdf)) : NULL;
	plan->domain_of = calloc(load->count, sizeof(*plan->domain_of));
	plan->shard_of = calloc(load->count, sizeof(*plan->shard_of));
	bool ok = owner != NULL && plan->domain_of != NULL && plan->shard_of != NULL &&
		  (cdf != NULL || load->zipf == 0.0);
	for (uint32_t k = 0; ok && k < load->domains; k++) {
		char name[32];
		int len = tool_load_domain_name(k, name, sizeof(name));
		owner[k] = tool_domain_owner(name, (size_t)len, load->shards);
		ENG_ASSERT(owner[k] < load->shards);
	}
	if (ok && cdf != NULL)
		tool_load_zipf_cdf(cdf, load->domains, load->zipf);
	uint64_t state = load->seed;
	for (uint64_t i = 0; ok && i < load->count; i++) {
		uint32_t k = cdf != NULL
				     ? tool_load_zipf_pick(cdf, load->domains,
							   tool_load_rand_unit(&state))
				     : (uint32_t)(tool_load_rand(&state) % load->domains);
		plan->domain_of[i] = k;
		plan->shard_of[i] = (uint16_t)owner[k];
	}
	free(cdf);
	free(owner);
	return ok;
}

/* ---- one message ---- */

static void
tool_load_put(struct tool_load_slot *slot, uint32_t *len, const char *text, size_t text_len)
{
	ENG_ASSERT(*len + text_len <= slot->body_size_max);
	memcpy(slot->body + *len, text, text_len);
	*len += (uint32_t)text_len;
}

/* The headers; returns their size (with the empty line). */
static uint32_t
tool_load_headers(struct tool_load_slot *slot, uint64_t index)
{
	const struct tool_load_plan *plan = slot->shard->plan;
	char head[TOOL_LOAD_HEADER_SLACK];
	int n = snprintf(head, sizeof(head),
			 "From: <%s>\r\nTo: <%s>\r\nSubject: load message %" PRIu64
			 "\r\nDate: %s\r\nMessage-ID: <%" PRIu64 ".%" PRIu64
			 "@load.test>\r\n\r\n",
			 plan->load->sender, slot->rcpt_text, index, plan->date, index,
			 plan->load->seed);
	ENG_ASSERT(n > 0 && (size_t)n < sizeof(head));
	uint32_t len = 0;
	tool_load_put(slot, &len, head, (size_t)n);
	return len;
}

/* Headers, then text lines up to about size bytes, then ".\r\n". */
static uint32_t
tool_load_body(struct tool_load_slot *slot, uint64_t index)
{
	const uint32_t size = slot->shard->plan->load->size;
	const size_t text_size = sizeof(tool_load_text) - 1;
	uint64_t state = slot->shard->plan->load->seed ^ (index * 0xd1342543de82ef95ull);
	uint32_t len = tool_load_headers(slot, index);
	for (uint32_t lines = 0; lines < size; lines++) {
		uint64_t r = tool_load_rand(&state);
		uint32_t line = TOOL_LOAD_LINE_MIN +
				(uint32_t)(r % (TOOL_LOAD_LINE_MAX - TOOL_LOAD_LINE_MIN + 1));
		size_t from = (size_t)((r >> 40) % (text_size - line));
		/* The message line: "." + text one time in 16, else text (which may
		 * start with a period too); stuffed if it starts with one. */
		bool dot = (r >> 32) % 16 == 0;
		uint32_t stuff = dot ? 2u : (tool_load_text[from] == '.' ? 1u : 0u);
		if (len + stuff + line + 2 + 3 > size)
			break;
		tool_load_put(slot, &len, "..", stuff); /* RFC 5321 4.5.2 */
		tool_load_put(slot, &len, tool_load_text + from, line);
		tool_load_put(slot, &len, "\r\n", 2);
	}
	tool_load_put(slot, &len, ".\r\n", 3);
	ENG_ASSERT(len >= 5 && memcmp(slot->body + len - 5, "\r\n.\r\n", 5) == 0);
	return len;
}

static void
tool_load_envelope(struct tool_load_slot *slot, uint64_t index)
{
	const struct tool_load_plan *plan = slot->shard->plan;
	const uint32_t rcpt_count = plan->load->recipients;
	char domain[32];
	tool_load_domain_name(plan->domain_of[index], domain, sizeof(domain));
	for (uint32_t r = 0; r < rcpt_count; r++) {
		char *text = slot->rcpt_text + (size_t)r * TOOL_LOAD_ADDRESS_SIZE;
		int n = snprintf(text, TOOL_LOAD_ADDRESS_SIZE, "user%" PRIu64 "@%s",
				 index * rcpt_count + r, domain);
		ENG_ASSERT(n > 0 && (uint32_t)n < TOOL_LOAD_ADDRESS_SIZE);
		slot->rcpts[r].data = (const uint8_t *)text;
		slot->rcpts[r].size = (uint32_t)n;
	}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct spool_message *m = &slot->message;
	m->created_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
	m->expires_ns = m->created_ns + TOOL_LOAD_LIFETIME_NS;
	m->sender.data = (const uint8_t *)plan->load->sender;
	m->sender.size = (uint32_t)strlen(plan->load->sender);
	m->rcpt_count = rcpt_count;
	m->rcpts = slot->rcpts;
	m->body.data = slot->body;
	m->body.size = tool_load_body(slot, index);
}

/* ---- one shard ---- */

static void
tool_load_shard_fail(struct tool_load_shard *shard, const char *what, int32_t error)
{
	ENG_ASSERT(error < 0);
	if (shard->write_error == 0) {
		shard->write_error = error;
		snprintf(shard->err, sizeof(shard->err), "shard %u: %s: %s", shard->index, what,
			 strerror(-error));
	}
	atomic_store(&shard->plan->stop, true);
}

static void
tool_load_callback(struct spool_append *op, int32_t result)
{
	struct tool_load_slot *slot = op->ctx;
	struct tool_load_shard *shard = slot->shard;
	ENG_ASSERT(shard->free_count < shard->slot_count);
	ENG_ASSERT(&slot->op == op);
	if (result == 0) {
		shard->recipients += slot->message.rcpt_count;
		shard->bytes += slot->message.body.size;
		shard->record_bytes += op->record_size;
		atomic_fetch_add(&shard->acked, 1);
	} else {
		tool_load_shard_fail(shard, "a message write failed", result);
	}
	shard->free_slots[shard->free_count++] = (uint32_t)(slot - shard->slots);
}

static bool
tool_load_shard_alloc(struct tool_load_shard *shard)
{
	const struct tool_load_options *load = shard->plan->load;
	uint32_t body_size_max = load->size + TOOL_LOAD_HEADER_SLACK;
	uint32_t by_bytes = TOOL_LOAD_IN_FLIGHT_BYTES / body_size_max;
	shard->slot_count = by_bytes < 1 ? 1 : by_bytes;
	if (shard->slot_count > TOOL_LOAD_IN_FLIGHT_MAX)
		shard->slot_count = TOOL_LOAD_IN_FLIGHT_MAX;
	shard->slots = calloc(shard->slot_count, sizeof(*shard->slots));
	shard->free_slots = calloc(shard->slot_count, sizeof(*shard->free_slots));
	if (shard->slots == NULL || shard->free_slots == NULL)
		return false;
	for (uint32_t i = 0; i < shard->slot_count; i++) {
		struct tool_load_slot *slot = &shard->slots[i];
		slot->shard = shard;
		slot->body_size_max = body_size_max;
		slot->body = malloc(body_size_max);
		slot->rcpts = calloc(load->recipients, sizeof(*slot->rcpts));
		slot->rcpt_text = calloc(load->recipients, TOOL_LOAD_ADDRESS_SIZE);
		if (slot->body == NULL || slot->rcpts == NULL || slot->rcpt_text == NULL)
			return false;
		slot->op.callback = tool_load_callback;
		slot->op.ctx = slot;
		slot->op.type = SPOOL_RECORD_MESSAGE;
		slot->op.input.message = &slot->message;
		shard->free_slots[i] = i;
	}
	shard->free_count = shard->slot_count;
	return true;
}

static void
tool_load_shard_free(struct tool_load_shard *shard)
{
	for (uint32_t i = 0; shard->slots != NULL && i < shard->slot_count; i++) {
		free(shard->slots[i].body);
		free(shard->slots[i].rcpts);
		free(shard->slots[i].rcpt_text);
	}
	free(shard->slots);
	free(shard->free_slots);
	shard->slots = NULL;
	shard->free_slots = NULL;
}

/* The next message this shard owns, or count when there is none. */
static uint64_t
tool_load_next_owned(struct tool_load_shard *shard)
{
	const struct tool_load_plan *plan = shard->plan;
	while (shard->next_index < plan->load->count &&
	       plan->shard_of[shard->next_index] != shard->index)
		shard->next_index++;
	return shard->next_index;
}

/* Fill every free slot with the next owned message and append it. */
static void
tool_load_submit(struct tool_load_shard *shard, struct spool *sp)
{
	const uint64_t count = shard->plan->load->count;
	while (shard->free_count > 0 && !atomic_load(&shard->plan->stop)) {
		uint64_t index = tool_load_next_owned(shard);
		if (index >= count)
			return;
		ENG_ASSERT(shard->plan->shard_of[index] == shard->index);
		uint32_t slot_index = shard->free_slots[--shard->free_count];
		struct tool_load_slot *slot = &shard->slots[slot_index];
		tool_load_envelope(slot, index);
		int ret = spool_write_message(sp, &slot->op);
		if (ret != 0) {
			shard->free_slots[shard->free_count++] = slot_index;
			tool_load_shard_fail(shard, "spool_write_message", ret);
			return;
		}
		shard->next_index = index + 1;
	}
}

/* Submit and run the ring until every owned message is acknowledged. */
static void
tool_load_shard_loop(struct tool_load_shard *shard, struct ring *ring, struct spool *sp)
{
	const uint64_t count = shard->plan->load->count;
	uint32_t idle_turns = 0;
	for (;;) {
		tool_load_submit(shard, sp);
		bool in_flight = shard->free_count < shard->slot_count;
		bool more = !atomic_load(&shard->plan->stop) && tool_load_next_owned(shard) < count;
		if (!in_flight && !more)
			break;
		int ret = ring_run_once(ring, TOOL_LOAD_TURN_NS);
		if (ret < 0) {
			tool_load_shard_fail(shard, "ring_run_once", ret);
			break; /* spool_close cancels what is still in flight */
		}
		idle_turns = ret == 0 && in_flight ? idle_turns + 1 : 0;
		if (idle_turns >= TOOL_LOAD_IDLE_TURNS_MAX) {
			tool_load_shard_fail(shard, "no write completed for 60 s", -ETIMEDOUT);
			break;
		}
	}
	ENG_ASSERT(shard->write_error != 0 || shard->free_count == shard->slot_count);
}

static void
tool_load_shard_run(struct tool_load_shard *shard)
{
	const struct tool_load_plan *plan = shard->plan;
	struct ring_params params = { .sq_entries = 512, .cq_entries = 16384 };
	char err[TOOL_ERR_SIZE] = "";
	struct ring *ring = ring_create(&params, err, sizeof(err));
	if (ring == NULL) {
		snprintf(shard->err, sizeof(shard->err), "shard %u: ring_create: %s", shard->index,
			 err);
		shard->write_error = -EINVAL;
		return;
	}
	struct spool_config cfg;
	spool_config_defaults(&cfg);
	cfg.dir = plan->spool_dir;
	cfg.shard = shard->index;
	if (plan->load->segment_size != 0)
		cfg.segment_size = plan->load->segment_size;
	/* Bound records by what load writes, so a small segment holds one. */
	cfg.message_size_max = plan->load->size + TOOL_LOAD_HEADER_SLACK;
	struct spool_recovery_stats stats;
	memset(&stats, 0, sizeof(stats));
	struct spool *sp = spool_open(ring, &cfg, NULL, NULL, &stats, err, sizeof(err));
	if (sp == NULL) {
		snprintf(shard->err, sizeof(shard->err), "shard %u: spool_open: %s", shard->index,
			 err);
		shard->write_error = -EIO;
		ring_destroy(ring);
		return;
	}
	shard->existing_messages = stats.messages;
	tool_load_shard_loop(shard, ring, sp);
	spool_close(sp);
	ring_destroy(ring);
}

static void *
tool_load_shard_main(void *arg)
{
	struct tool_load_shard *shard = arg;
	ENG_ASSERT(shard->plan != NULL);
	if (!tool_load_shard_alloc(shard)) {
		snprintf(shard->err, sizeof(shard->err), "shard %u: out of memory", shard->index);
		shard->write_error = -ENOMEM;
	} else {
		tool_load_shard_run(shard);
	}
	if (shard->write_error != 0)
		atomic_store(&shard->plan->stop, true);
	tool_load_shard_free(shard);
	atomic_store(&shard->done, true);
	return NULL;
}

/* ---- the command ---- */

static uint64_t
tool_load_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t
tool_load_acked(struct tool_load_shard *shards, uint32_t shard_count, bool *all_done)
{
	uint64_t acked = 0;
	*all_done = true;
	for (uint32_t i = 0; i < shard_count; i++) {
		acked += atomic_load(&shards[i].acked);
		*all_done = *all_done && atomic_load(&shards[i].done);
	}
	return acked;
}

/* Wait for the shard threads, with a progress line a second on stderr. */
static void
tool_load_wait(struct tool_load_shard *shards, uint32_t shard_count, uint64_t count,
	       uint64_t start_ns)
{
	uint64_t last_report_ns = start_ns;
	bool all_done = false;
	while (!all_done) { /* bounded: each shard gives up after 60 s idle */
		const struct timespec tick = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
		nanosleep(&tick, NULL);
		uint64_t acked = tool_load_acked(shards, shard_count, &all_done);
		uint64_t now_ns = tool_load_now_ns();
		if (all_done || now_ns - last_report_ns < 1000000000ull)
			continue;
		last_report_ns = now_ns;
		double elapsed_s = (double)(now_ns - start_ns) / 1e9;
		fprintf(stderr, "ringmail-spool: load: %" PRIu64 "/%" PRIu64
				" messages (%.0f%%), %.0f msgs/s\n",
			acked, count, 100.0 * (double)acked / (double)count,
			(double)acked / elapsed_s);
	}
	for (uint32_t i = 0; i < shard_count; i++)
		pthread_join(shards[i].thread, NULL);
}

struct tool_load_totals {
	uint64_t messages, recipients, bytes, record_bytes, existing_messages;
	double elapsed_s;
};

static void
tool_load_print_json(const struct tool_options *opt, const struct tool_load_shard *shards,
		     const struct tool_load_totals *t)
{
	const struct tool_load_options *load = &opt->load;
	struct tool_json json;
	tool_json_init(&json, stdout);
	tool_json_object_begin(&json, NULL);
	tool_json_string(&json, "spool_dir", opt->spool_dir);
	tool_json_uint(&json, "messages", t->messages);
	tool_json_uint(&json, "recipients", t->recipients);
	tool_json_uint(&json, "bytes", t->bytes);
	tool_json_uint(&json, "record_bytes", t->record_bytes);
	tool_json_uint(&json, "existing_messages", t->existing_messages);
	tool_json_uint(&json, "domains", load->domains);
	tool_json_double(&json, "zipf", load->zipf);
	tool_json_uint(&json, "seed", load->seed);
	tool_json_uint(&json, "size", load->size);
	tool_json_array_begin(&json, "shards");
	for (uint32_t i = 0; i < load->shards; i++) {
		tool_json_object_begin(&json, NULL);
		tool_json_uint(&json, "shard", i);
		tool_json_uint(&json, "messages", atomic_load(&shards[i].acked));
		tool_json_uint(&json, "recipients", shards[i].recipients);
		tool_json_uint(&json, "bytes", shards[i].bytes);
		tool_json_object_end(&json);
	}
	tool_json_array_end(&json);
	tool_json_double(&json, "elapsed_s", t->elapsed_s);
	tool_json_double(&json, "msgs_per_s", (double)t->messages / t->elapsed_s);
	tool_json_double(&json, "bytes_per_s", (double)t->bytes / t->elapsed_s);
	tool_json_object_end(&json);
	tool_json_finish(&json);
}

static void
tool_load_print_text(const struct tool_options *opt, const struct tool_load_shard *shards,
		     const struct tool_load_totals *t)
{
	printf("loaded %" PRIu64 " messages, %" PRIu64 " recipients, %" PRIu64
	       " bytes into %s, %" PRIu32 " shard%s (",
	       t->messages, t->recipients, t->bytes, opt->spool_dir, opt->load.shards,
	       opt->load.shards == 1 ? "" : "s");
	for (uint32_t i = 0; i < opt->load.shards; i++)
		printf("%s%" PRIu64, i == 0 ? "" : " ", (uint64_t)atomic_load(&shards[i].acked));
	printf(") in %.3f s: %.0f msgs/s, %.1f MB/s\n", t->elapsed_s,
	       (double)t->messages / t->elapsed_s, (double)t->bytes / t->elapsed_s / 1e6);
	if (t->existing_messages > 0)
		printf("the spool already held %" PRIu64 " messages\n", t->existing_messages);
}

/* Sum, report errors, print; returns the exit status. */
static int
tool_load_report(const struct tool_options *opt, const struct tool_load_shard *shards,
		 uint64_t start_ns)
{
	struct tool_load_totals t;
	memset(&t, 0, sizeof(t));
	bool failed = false;
	for (uint32_t i = 0; i < opt->load.shards; i++) {
		const struct tool_load_shard *shard = &shards[i];
		if (shard->write_error != 0) {
			tool_error(shard->err);
			failed = true;
		}
		t.messages += atomic_load(&shard->acked);
		t.recipients += shard->recipients;
		t.bytes += shard->bytes;
		t.record_bytes += shard->record_bytes;
		t.existing_messages += shard->existing_messages;
	}
	t.elapsed_s = (double)(tool_load_now_ns() - start_ns) / 1e9;
	if (t.elapsed_s <= 0.0)
		t.elapsed_s = 1e-9;
	if (failed) {
		fprintf(stderr, "ringmail-spool: load failed after %" PRIu64 " of %" PRIu64
				" messages (those are durable)\n",
			t.messages, opt->load.count);
		return TOOL_EXIT_ERROR;
	}
	ENG_ASSERT(t.messages == opt->load.count);
	if (opt->json)
		tool_load_print_json(opt, shards, &t);
	else
		tool_load_print_text(opt, shards, &t);
	return TOOL_EXIT_OK;
}

/* The spool directory (not its parents): the shards are created inside. */
static bool
tool_load_make_dir(const char *dir)
{
	if (mkdir(dir, 0700) == 0 || errno == EEXIST)
		return true;
	char line[TOOL_ERR_SIZE];
	snprintf(line, sizeof(line), "cannot create spool directory %s: %s", dir, strerror(errno));
	tool_error(line);
	return false;
}

static void
tool_load_plan_date(struct tool_load_plan *plan)
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	size_t n = strftime(plan->date, sizeof(plan->date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	ENG_ASSERT(n > 0);
}

int
tool_cmd_load(const struct tool_options *opt, const struct tool_shard_list *list)
{
	ENG_ASSERT(opt != NULL && opt->load.shards >= 1);
	ENG_ASSERT(opt->load.shards <= TOOL_SHARDS_MAX && opt->shard < 0);
	(void)list;
	if (!tool_load_make_dir(opt->spool_dir))
		return TOOL_EXIT_ERROR;
	static struct tool_load_plan plan;
	static struct tool_load_shard shards[TOOL_SHARDS_MAX];
	plan.load = &opt->load;
	plan.spool_dir = opt->spool_dir;
	atomic_store(&plan.stop, false);
	tool_load_plan_date(&plan);
	if (!tool_load_plan_draw(&plan)) {
		tool_error("out of memory for the message plan");
		return TOOL_EXIT_ERROR;
	}
	uint64_t start_ns = tool_load_now_ns();
	uint32_t started = 0;
	for (; started < opt->load.shards; started++) {
		struct tool_load_shard *shard = &shards[started];
		shard->plan = &plan;
		shard->index = (uint16_t)started;
		if (pthread_create(&shard->thread, NULL, tool_load_shard_main, shard) != 0)
			break;
	}
	if (started < opt->load.shards) { /* stop the ones that did start */
		atomic_store(&plan.stop, true);
		tool_load_wait(shards, started, opt->load.count, start_ns);
		tool_error("cannot start a shard thread");
		return TOOL_EXIT_ERROR;
	}
	tool_load_wait(shards, started, opt->load.count, start_ns);
	int status = tool_load_report(opt, shards, start_ns);
	free(plan.domain_of);
	free(plan.shard_of);
	return status;
}
