/*
 * eng_dns.c - c-ares driven by a shard's ring; the shard's DNS cache and
 * delivery routes. The API and its contracts are in eng_dns.h; the failure
 * mapping and cache rules are in docs/dns.md.
 *
 * How c-ares meets the ring:
 * - ARES_OPT_SOCK_STATE_CB tells us which sockets c-ares has open and what
 *   it waits for. Each socket gets a slot (bounded: ENG_DNS_SOCKETS_MAX)
 *   holding a one-shot poll op and a poll-remove op. The callback only
 *   records the interest; the ring hook (eng_dns_hook, once per loop turn,
 *   before the submit) arms polls, removes polls whose socket was closed or
 *   whose interest grew, and (re)arms the single timeout op from
 *   ares_timeout().
 * - A poll completion calls ares_process_fd() for the ready directions; a
 *   timer completion calls ares_process_fd(BAD, BAD), which runs c-ares's
 *   timeouts and retries.
 * - A socket that c-ares closes while its poll is in flight: the kernel
 *   holds its own file reference, so the poll would never end on its own.
 *   The slot turns CLOSING, its generation moves on, the hook sends a poll
 *   remove, and the slot is free again only when both the poll and the
 *   remove have completed. A poll completion whose generation no longer
 *   matches is counted as stale and dropped; it never reaches c-ares, so a
 *   new socket that reused the fd number is not confused with the old one.
 *
 * Invariants:
 * - A slot is ACTIVE (an open c-ares socket), CLOSING (closed, ops still
 *   in flight) or FREE (no op in flight). At most one ACTIVE slot per fd.
 * - A poll is armed only when neither the slot's poll nor its remove is in
 *   flight, so a remove can never hit a later poll of the same op.
 * - Query callbacks run only at the end of one of the resolver's ring
 *   completions (poll, timer, or a NOP "kick" for answers queued outside
 *   one), after c-ares has returned, or from eng_dns_destroy; through a
 *   FIFO, never from inside c-ares or eng_dns_resolve_*().
 *
 * XXX: c-ares 1.18's ares_parse_mx_reply() does not report TTLs, so
 * eng_dns_packet_ttls() walks the record headers (with bounds) for them.
 * c-ares >= 1.22 (ares_dns_record_t) reports them; switch when Debian has it.
 */
#include "eng_dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "eng_common.h"
#include "ring/ring.h"

/* RFC 1035 3.2.2 and 3.2.4. */
#define ENG_DNS_CLASS_IN 1
#define ENG_DNS_TYPE_A 1
#define ENG_DNS_TYPE_SOA 6
#define ENG_DNS_TYPE_MX 15
#define ENG_DNS_TYPE_AAAA 28
#define ENG_DNS_HEADER_SIZE 12u
#define ENG_DNS_RR_FIXED_SIZE 10u
/* A 255-octet name has at most 127 labels. */
#define ENG_DNS_LABELS_MAX 128u
#define ENG_DNS_LABEL_LENGTH_MAX 63u
#define ENG_DNS_NAME_LENGTH_MAX 253u
/* MX records looked at in one answer (the lowest ENG_DNS_MX_MAX are kept). */
#define ENG_DNS_MX_PARSE_MAX 64u
/* RFC 6891 and the DNS flag day 2020 buffer size. */
#define ENG_DNS_EDNS_SIZE 1232
#define ENG_DNS_SERVER_LENGTH_MAX 63u
#define ENG_DNS_SERVERS_CSV_SIZE (ENG_DNS_SERVERS_MAX * (ENG_DNS_SERVER_LENGTH_MAX + 1) + 1)
/* Completions delivered per hook run; the rest wait for the next turn. */
#define ENG_DNS_DELIVER_MAX 1024u
/* A timer more than this much later than c-ares needs is re-armed. */
#define ENG_DNS_TIMER_SLACK_NS 1000000ull
#define ENG_DNS_TIMER_MIN_NS 1000ull
/* eng_dns_destroy: loop turns and time allowed for the resolver's own ops. */
#define ENG_DNS_DESTROY_TURNS_MAX 1000u
#define ENG_DNS_DESTROY_TURN_NS 10000000ull
#define ENG_DNS_DESTROY_DELIVER_ROUNDS_MAX 64u
#define ENG_DNS_NS_PER_S 1000000000ull
#define ENG_DNS_INDEX_NONE UINT32_MAX
#define ENG_DNS_CACHE_ENTRIES_DEFAULT 1024u
#define ENG_DNS_CACHE_ENTRIES_MAX (1u << 20)

_Static_assert(ENG_DNS_NAME_SIZE == ENG_DNS_NAME_LENGTH_MAX + 3, "253 characters, slack, NUL");
_Static_assert(ENG_DNS_MX_MAX <= ENG_DNS_MX_PARSE_MAX, "parse at least what is kept");
_Static_assert(sizeof(ares_socket_t) == sizeof(int), "c-ares sockets are fds here");

enum eng_dns_slot_state {
	ENG_DNS_SLOT_FREE = 0,
	ENG_DNS_SLOT_ACTIVE,
	ENG_DNS_SLOT_CLOSING,
};

struct eng_dns_slot {
	struct ring_op poll_op;
	struct ring_op remove_op;
	struct eng_dns *dns;
	int fd;
	uint32_t generation;	   /* moves on when c-ares closes the socket */
	uint32_t armed_generation; /* generation of the poll in flight */
	uint32_t want_mask;	   /* POLLIN / POLLOUT that c-ares wants */
	uint32_t armed_mask;	   /* mask of the poll in flight */
	uint8_t state;		   /* enum eng_dns_slot_state */
	bool remove_sent;	   /* a remove was sent for the poll in flight */
};

struct eng_dns {
	struct ring *ring;
	ares_channel channel; /* NULL once destroy has begun */
	struct eng_dns_stats stats;
	uint64_t rand_state;
	uint32_t negative_ttl_s;
	uint32_t sockets_open;
	struct eng_dns_slot slots[ENG_DNS_SOCKETS_MAX];
	struct ring_op timer_op;
	struct ring_op timer_cancel_op;
	struct ring_op kick_op;
	uint64_t timer_deadline_ns;
	struct eng_dns_query *completed_head;
	struct eng_dns_query *completed_tail;
	bool dirty;	 /* c-ares state may have changed: re-arm in the hook */
	bool in_process; /* completions queued now are delivered before return */
	bool in_hook;
};

struct eng_dns_cache_entry {
	uint64_t expires_ns;
	uint32_t hash;
	uint32_t chain_next; /* bucket chain, or the free list */
	uint8_t kind;	     /* enum eng_dns_query_kind; NONE when free */
	uint8_t status;	     /* enum eng_dns_status */
	bool referenced;     /* clock bit */
	uint32_t count;
	char name[ENG_DNS_NAME_SIZE];
	union {
		struct eng_dns_mx mx[ENG_DNS_MX_MAX];
		struct eng_dns_addr addr[ENG_DNS_ADDR_MAX];
	} u;
};

struct eng_dns_cache {
	struct eng_dns *dns;
	struct eng_dns_cache_entry *entries;
	uint32_t *buckets;
	uint32_t entries_max;
	uint32_t bucket_mask;
	uint32_t hand;
	uint32_t never_used;	/* entries [never_used, entries_max) not yet taken */
	uint32_t ttl_max_s;
	struct eng_dns_cache_stats stats;
};

/*
 * Status helpers.
 */

static const char *const eng_dns_status_names[ENG_DNS_STATUS_COUNT] = {
	[ENG_DNS_OK] = "ok",		 [ENG_DNS_NXDOMAIN] = "nxdomain",
	[ENG_DNS_NODATA] = "nodata",	 [ENG_DNS_NULL_MX] = "null_mx",
	[ENG_DNS_TEMPFAIL] = "tempfail", [ENG_DNS_NO_ADDRESS] = "no_address",
};

const char *
eng_dns_status_name(enum eng_dns_status status)
{
	if ((unsigned)status >= ENG_DNS_STATUS_COUNT)
		return "unknown";
	return eng_dns_status_names[status];
}

bool
eng_dns_status_is_permanent(enum eng_dns_status status)
{
	return status == ENG_DNS_NXDOMAIN || status == ENG_DNS_NULL_MX ||
	       status == ENG_DNS_NO_ADDRESS;
}

const char *
eng_dns_status_enhanced(enum eng_dns_status status)
{
	switch (status) {
	case ENG_DNS_NXDOMAIN:
		return "5.1.2"; /* RFC 3463: bad destination system address */
	case ENG_DNS_NULL_MX:
		return "5.1.10"; /* RFC 7505 section 4.2 */
	case ENG_DNS_NO_ADDRESS:
		return "5.4.4"; /* RFC 3463: unable to route */
	case ENG_DNS_TEMPFAIL:
		return "4.4.3"; /* RFC 3463: directory server failure */
	default:
		return NULL;
	}
}

uint32_t
eng_dns_addr_to_sockaddr(const struct eng_dns_addr *addr, uint16_t port,
			 struct sockaddr_storage *out)
{
	ENG_ASSERT(addr != NULL);
	ENG_ASSERT(out != NULL);
	memset(out, 0, sizeof(*out));
	if (addr->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr->bytes, 4);
		return (uint32_t)sizeof(*sin);
	}
	ENG_ASSERT(addr->family == AF_INET6);
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)out;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	memcpy(&sin6->sin6_addr, addr->bytes, 16);
	return (uint32_t)sizeof(*sin6);
}

/*
 * Pure helpers: names, ordering, TTLs.
 */

static bool
eng_dns_name_char_is_valid(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

size_t
eng_dns_name_normalize(const char *name, size_t name_len, char *out)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(name != NULL || name_len == 0);
	if (name_len > 0 && name[name_len - 1] == '.')
		name_len--;
	if (name_len == 0 || name_len > ENG_DNS_NAME_LENGTH_MAX)
		return 0;
	size_t label_len = 0;
	for (size_t i = 0; i < name_len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label_len == 0)
				return 0;
			label_len = 0;
			out[i] = '.';
			continue;
		}
		if (!eng_dns_name_char_is_valid(c))
			return 0;
		if (++label_len > ENG_DNS_LABEL_LENGTH_MAX)
			return 0;
		out[i] = (char)((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
	}
	if (label_len == 0)
		return 0;
	out[name_len] = '\0';
	return name_len;
}

/* xorshift64* (Vigna), the PRNG of tests/lib too. */
static uint64_t
eng_dns_rand(uint64_t *state)
{
	ENG_ASSERT(*state != 0);
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void
eng_dns_mx_swap(struct eng_dns_mx *a, struct eng_dns_mx *b)
{
	struct eng_dns_mx tmp = *a;
	*a = *b;
	*b = tmp;
}

void
eng_dns_mx_order(struct eng_dns_mx *mx, uint32_t mx_count, uint64_t *rand_state)
{
	ENG_ASSERT(mx != NULL || mx_count == 0);
	ENG_ASSERT(mx_count <= ENG_DNS_MX_MAX);
	ENG_ASSERT(rand_state != NULL);
	/* Insertion sort: at most ENG_DNS_MX_MAX elements. */
	for (uint32_t i = 1; i < mx_count; i++) {
		for (uint32_t j = i; j > 0 && mx[j - 1].preference > mx[j].preference; j--)
			eng_dns_mx_swap(&mx[j - 1], &mx[j]);
	}
	/* Fisher-Yates within each run of equal preference (RFC 5321 5.1:
	 * "select randomly among them"). */
	uint32_t run_start = 0;
	for (uint32_t i = 1; i <= mx_count; i++) {
		if (i < mx_count && mx[i].preference == mx[run_start].preference)
			continue;
		for (uint32_t k = i - 1; k > run_start; k--) {
			uint32_t span = k - run_start + 1;
			uint32_t pick = run_start + (uint32_t)(eng_dns_rand(rand_state) % span);
			eng_dns_mx_swap(&mx[k], &mx[pick]);
		}
		run_start = i;
	}
	for (uint32_t i = 1; i < mx_count; i++)
		ENG_ASSERT(mx[i - 1].preference <= mx[i].preference);
}

static uint32_t
eng_dns_read16(const uint8_t *p)
{
	return ((uint32_t)p[0] << 8) | p[1];
}

static uint32_t
eng_dns_read32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* RFC 2181 section 8: a TTL with the top bit set is read as zero. */
static uint32_t
eng_dns_ttl_value(uint32_t raw)
{
	return (raw & 0x80000000u) != 0 ? 0 : raw;
}

/* Skip a possibly compressed name at *pos. */
static bool
eng_dns_skip_name(const uint8_t *packet, size_t packet_len, size_t *pos)
{
	for (uint32_t label = 0; label < ENG_DNS_LABELS_MAX; label++) {
		if (*pos >= packet_len)
			return false;
		uint8_t length = packet[*pos];
		if (length == 0) {
			*pos += 1;
			return true;
		}
		if ((length & 0xc0) == 0xc0) {
			if (packet_len - *pos < 2)
				return false;
			*pos += 2;
			return true;
		}
		if ((length & 0xc0) != 0)
			return false; /* reserved label types */
		*pos += 1u + length;
	}
	return false;
}

/* One resource record of the answer (is_answer) or authority section. */
static bool
eng_dns_walk_record(const uint8_t *packet, size_t packet_len, size_t *pos, bool is_answer,
		    struct eng_dns_packet_ttls *out)
{
	if (!eng_dns_skip_name(packet, packet_len, pos))
		return false;
	if (packet_len - *pos < ENG_DNS_RR_FIXED_SIZE)
		return false;
	const uint8_t *rr = packet + *pos;
	uint32_t type = eng_dns_read16(rr);
	uint32_t ttl_s = eng_dns_ttl_value(eng_dns_read32(rr + 4));
	uint32_t rdata_len = eng_dns_read16(rr + 8);
	*pos += ENG_DNS_RR_FIXED_SIZE;
	if (packet_len - *pos < rdata_len)
		return false;
	const uint8_t *rdata = packet + *pos;
	*pos += rdata_len;
	if (is_answer) {
		out->answer_min_s = ENG_MIN(out->answer_min_s, ttl_s);
		if (type == ENG_DNS_TYPE_MX) {
			if (out->mx_count < ENG_DNS_MX_MAX)
				out->mx_ttl_s[out->mx_count] = ttl_s;
			out->mx_count++;
		}
		return true;
	}
	/* SOA RDATA ends with MINIMUM; two names (>= 1 byte each) and five
	 * 32-bit fields precede it. RFC 2308 section 5. */
	if (type == ENG_DNS_TYPE_SOA && rdata_len >= 22) {
		uint32_t minimum_s = eng_dns_ttl_value(eng_dns_read32(rdata + rdata_len - 4));
		out->negative_s = ENG_MIN(out->negative_s, ENG_MIN(ttl_s, minimum_s));
	}
	return true;
}

bool
eng_dns_packet_ttls(const uint8_t *packet, size_t packet_len, struct eng_dns_packet_ttls *out)
{
	ENG_ASSERT(out != NULL);
	ENG_ASSERT(packet != NULL || packet_len == 0);
	memset(out, 0, sizeof(*out));
	out->answer_min_s = ENG_DNS_TTL_NONE;
	out->negative_s = ENG_DNS_TTL_NONE;
	if (packet_len < ENG_DNS_HEADER_SIZE)
		return false;
	uint32_t question_count = eng_dns_read16(packet + 4);
	uint32_t answer_count = eng_dns_read16(packet + 6);
	uint32_t authority_count = eng_dns_read16(packet + 8);
	size_t pos = ENG_DNS_HEADER_SIZE;
	for (uint32_t i = 0; i < question_count; i++) {
		if (!eng_dns_skip_name(packet, packet_len, &pos) || packet_len - pos < 4)
			return false;
		pos += 4;
	}
	/* Both counts are 16-bit, so these loops are bounded. */
	for (uint32_t i = 0; i < answer_count + authority_count; i++) {
		if (!eng_dns_walk_record(packet, packet_len, &pos, i < answer_count, out))
			return false;
	}
	ENG_ASSERT(pos <= packet_len);
	return true;
}

/*
 * Sockets: slots, polls, the timer and the loop hook.
 */

static struct eng_dns_slot *
eng_dns_slot_find(struct eng_dns *dns, int fd)
{
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		struct eng_dns_slot *slot = &dns->slots[i];
		if (slot->state == ENG_DNS_SLOT_ACTIVE && slot->fd == fd)
			return slot;
	}
	return NULL;
}

static struct eng_dns_slot *
eng_dns_slot_open(struct eng_dns *dns, int fd)
{
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		if (dns->slots[i].state == ENG_DNS_SLOT_CLOSING && dns->slots[i].fd == fd)
			dns->stats.fds_reused_while_closing++; /* the generations tell them apart */
	}
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		struct eng_dns_slot *slot = &dns->slots[i];
		if (slot->state != ENG_DNS_SLOT_FREE)
			continue;
		ENG_ASSERT(!slot->poll_op.in_flight);
		ENG_ASSERT(!slot->remove_op.in_flight);
		slot->state = ENG_DNS_SLOT_ACTIVE;
		slot->fd = fd;
		slot->want_mask = 0;
		slot->armed_mask = 0;
		slot->remove_sent = false;
		dns->sockets_open++;
		dns->stats.sockets_opened++;
		return slot;
	}
	return NULL;
}

/* A CLOSING slot whose ops have all completed becomes FREE. */
static void
eng_dns_slot_reclaim(struct eng_dns_slot *slot)
{
	if (slot->state != ENG_DNS_SLOT_CLOSING)
		return;
	if (slot->poll_op.in_flight || slot->remove_op.in_flight)
		return;
	slot->state = ENG_DNS_SLOT_FREE;
	slot->fd = -1;
}

static void
eng_dns_slot_close(struct eng_dns *dns, struct eng_dns_slot *slot)
{
	ENG_ASSERT(slot->state == ENG_DNS_SLOT_ACTIVE);
	ENG_ASSERT(dns->sockets_open > 0);
	slot->state = ENG_DNS_SLOT_CLOSING;
	slot->generation++;
	slot->want_mask = 0;
	dns->sockets_open--;
	dns->stats.sockets_closed++;
	eng_dns_slot_reclaim(slot);
}

/* ARES_OPT_SOCK_STATE_CB: record c-ares's interest; the hook acts on it. */
static void
eng_dns_sock_state_callback(void *data, ares_socket_t fd, int readable, int writable)
{
	struct eng_dns *dns = data;
	ENG_ASSERT(dns != NULL);
	ENG_ASSERT(fd >= 0);
	uint32_t want = (readable ? (uint32_t)POLLIN : 0u) | (writable ? (uint32_t)POLLOUT : 0u);
	struct eng_dns_slot *slot = eng_dns_slot_find(dns, fd);
	dns->dirty = true;
	if (want == 0) {
		if (slot != NULL)
			eng_dns_slot_close(dns, slot);
		return;
	}
	if (slot == NULL)
		slot = eng_dns_slot_open(dns, fd);
	if (slot == NULL) {
		/* No slot: the socket is never polled and c-ares times its
		 * queries out (TEMPFAIL). Counted so the bound is visible. */
		dns->stats.sockets_untracked++;
		return;
	}
	slot->want_mask = want;
}

static void eng_dns_deliver_queued(struct eng_dns *dns);

static void
eng_dns_poll_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_dns_slot *slot = op->ctx;
	struct eng_dns *dns = slot->dns;
	ENG_ASSERT(op == &slot->poll_op);
	dns->dirty = true;
	if (slot->state != ENG_DNS_SLOT_ACTIVE || slot->armed_generation != slot->generation) {
		dns->stats.stale_poll_completions++;
		eng_dns_slot_reclaim(slot);
		return;
	}
	if (dns->channel == NULL || res == -ECANCELED)
		return; /* shutting down, or removed because the interest grew */
	uint32_t ready = (uint32_t)POLLIN | (uint32_t)POLLOUT; /* on error: let c-ares see it */
	if (res >= 0)
		ready = (uint32_t)res;
	else
		dns->stats.poll_errors++;
	if ((ready & ((uint32_t)POLLERR | (uint32_t)POLLHUP)) != 0)
		ready |= (uint32_t)POLLIN | (uint32_t)POLLOUT;
	ready &= slot->armed_mask;
	ares_socket_t read_fd = (ready & (uint32_t)POLLIN) != 0 ? slot->fd : ARES_SOCKET_BAD;
	ares_socket_t write_fd = (ready & (uint32_t)POLLOUT) != 0 ? slot->fd : ARES_SOCKET_BAD;
	dns->in_process = true;
	ares_process_fd(dns->channel, read_fd, write_fd);
	dns->in_process = false;
	eng_dns_deliver_queued(dns);
}

static void
eng_dns_remove_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	(void)res; /* 0, -ENOENT (the poll had fired) or -EALREADY: all fine */
	struct eng_dns_slot *slot = op->ctx;
	ENG_ASSERT(op == &slot->remove_op);
	slot->dns->dirty = true;
	eng_dns_slot_reclaim(slot);
}

static void
eng_dns_timer_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)cqe_flags;
	struct eng_dns *dns = op->ctx;
	ENG_ASSERT(op == &dns->timer_op);
	dns->dirty = true;
	dns->timer_deadline_ns = 0;
	if (res != -ETIME || dns->channel == NULL)
		return; /* cancelled to be re-armed sooner, or shutting down */
	dns->stats.timers_fired++;
	dns->in_process = true;
	ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns->in_process = false;
	eng_dns_deliver_queued(dns);
}

/* The timer cancel completed: re-arm in the next hook. */
static void
eng_dns_cancel_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)res;
	(void)cqe_flags;
	struct eng_dns *dns = op->ctx;
	ENG_ASSERT(op == &dns->timer_cancel_op);
	dns->dirty = true;
}

/* The kick: a NOP whose completion delivers what was queued outside a
 * completion of ours (a query that failed inside eng_dns_resolve_*()). */
static void
eng_dns_kick_callback(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	(void)res;
	(void)cqe_flags;
	struct eng_dns *dns = op->ctx;
	ENG_ASSERT(op == &dns->kick_op);
	dns->dirty = true;
	eng_dns_deliver_queued(dns);
}

static void
eng_dns_prep_failed(struct eng_dns *dns, int ret)
{
	/* Only -EBUSY (SQ full after a flush) is possible: retry next turn. */
	ENG_ASSERT(ret == -EBUSY);
	dns->stats.sqe_busy++;
	dns->dirty = true;
}

static void
eng_dns_slot_send_remove(struct eng_dns *dns, struct eng_dns_slot *slot)
{
	if (!slot->poll_op.in_flight || slot->remove_sent)
		return;
	if (slot->remove_op.in_flight) {
		dns->dirty = true; /* an earlier remove still pending */
		return;
	}
	int ret = ring_prep_poll_remove(dns->ring, &slot->remove_op, &slot->poll_op);
	if (ret < 0) {
		eng_dns_prep_failed(dns, ret);
		return;
	}
	slot->remove_sent = true;
	dns->stats.poll_removes++;
}

static void
eng_dns_slot_arm(struct eng_dns *dns, struct eng_dns_slot *slot)
{
	ENG_ASSERT(slot->state == ENG_DNS_SLOT_ACTIVE);
	ENG_ASSERT(!slot->poll_op.in_flight);
	if (slot->want_mask == 0)
		return;
	if (slot->remove_op.in_flight) {
		dns->dirty = true;
		return;
	}
	int ret = ring_prep_poll_add(dns->ring, &slot->poll_op, slot->fd, slot->want_mask);
	if (ret < 0) {
		eng_dns_prep_failed(dns, ret);
		return;
	}
	slot->armed_mask = slot->want_mask;
	slot->armed_generation = slot->generation;
	slot->remove_sent = false;
	dns->stats.polls_armed++;
}

static void
eng_dns_flush_slots(struct eng_dns *dns)
{
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		struct eng_dns_slot *slot = &dns->slots[i];
		if (slot->state == ENG_DNS_SLOT_CLOSING) {
			eng_dns_slot_send_remove(dns, slot);
			eng_dns_slot_reclaim(slot);
		} else if (slot->state == ENG_DNS_SLOT_ACTIVE) {
			if (!slot->poll_op.in_flight)
				eng_dns_slot_arm(dns, slot);
			else if ((slot->want_mask & ~slot->armed_mask) != 0)
				eng_dns_slot_send_remove(dns, slot); /* interest grew */
		}
	}
}

static void
eng_dns_flush_timer(struct eng_dns *dns)
{
	struct timeval tv_storage;
	struct timeval *tv = ares_timeout(dns->channel, NULL, &tv_storage);
	if (tv == NULL)
		return; /* no query pending; a timer in flight fires harmlessly */
	uint64_t wait_ns = (uint64_t)tv->tv_sec * ENG_DNS_NS_PER_S + (uint64_t)tv->tv_usec * 1000u;
	wait_ns = ENG_MAX(wait_ns, ENG_DNS_TIMER_MIN_NS);
	uint64_t deadline_ns = eng_now_monotonic_ns() + wait_ns;
	if (!dns->timer_op.in_flight) {
		int ret = ring_prep_timeout(dns->ring, &dns->timer_op, wait_ns);
		if (ret < 0) {
			eng_dns_prep_failed(dns, ret);
			return;
		}
		dns->timer_deadline_ns = deadline_ns;
		dns->stats.timers_armed++;
		return;
	}
	if (deadline_ns + ENG_DNS_TIMER_SLACK_NS >= dns->timer_deadline_ns)
		return;
	/* Needed sooner than armed: cancel, and re-arm when it completes. */
	if (dns->timer_cancel_op.in_flight)
		return;
	int ret = ring_prep_cancel(dns->ring, &dns->timer_cancel_op, &dns->timer_op);
	if (ret < 0)
		eng_dns_prep_failed(dns, ret);
}

static void
eng_dns_kick(struct eng_dns *dns)
{
	if (dns->kick_op.in_flight)
		return;
	int ret = ring_prep_nop(dns->ring, &dns->kick_op);
	if (ret < 0)
		eng_dns_prep_failed(dns, ret); /* the hook retries */
}

static void
eng_dns_complete(struct eng_dns *dns, struct eng_dns_query *query)
{
	ENG_ASSERT(query->busy);
	ENG_ASSERT(query->parts_pending == 0);
	query->completed_next = NULL;
	if (dns->completed_tail != NULL)
		dns->completed_tail->completed_next = query;
	else
		dns->completed_head = query;
	dns->completed_tail = query;
	if (!dns->in_process)
		eng_dns_kick(dns);
}

/* Run up to rounds_max queued callbacks. Returns true if more are queued. */
static bool
eng_dns_deliver(struct eng_dns *dns, uint32_t rounds_max)
{
	for (uint32_t round = 0; round < rounds_max && dns->completed_head != NULL; round++) {
		struct eng_dns_query *query = dns->completed_head;
		dns->completed_head = query->completed_next;
		if (dns->completed_head == NULL)
			dns->completed_tail = NULL;
		ENG_ASSERT(query->busy);
		ENG_ASSERT(query->callback != NULL);
		query->busy = false;
		query->completed_next = NULL;
		query->callback(query, query->status);
	}
	return dns->completed_head != NULL;
}

/* At the end of one of our completions, after c-ares has returned. */
static void
eng_dns_deliver_queued(struct eng_dns *dns)
{
	ENG_ASSERT(!dns->in_process);
	dns->in_process = true;
	bool more = eng_dns_deliver(dns, ENG_DNS_DELIVER_MAX);
	dns->in_process = false;
	if (more)
		eng_dns_kick(dns); /* the rest in the next turn */
}

/* The ring hook, before each submit: arm what c-ares wants. */
static void
eng_dns_hook(void *ctx)
{
	struct eng_dns *dns = ctx;
	ENG_ASSERT(!dns->in_hook);
	ENG_ASSERT(dns->channel != NULL);
	dns->in_hook = true;
	if (dns->completed_head != NULL)
		eng_dns_kick(dns); /* an earlier kick could not be queued */
	if (dns->dirty) {
		dns->dirty = false;
		eng_dns_flush_slots(dns);
		eng_dns_flush_timer(dns);
	}
	dns->in_hook = false;
}

/*
 * Answers: c-ares results into the caller's query.
 */

static uint32_t
eng_dns_negative_ttl(const struct eng_dns *dns, const uint8_t *packet, int packet_len)
{
	struct eng_dns_packet_ttls ttls;
	uint32_t ttl_s = dns->negative_ttl_s;
	if (packet != NULL && packet_len > 0 &&
	    eng_dns_packet_ttls(packet, (size_t)packet_len, &ttls) &&
	    ttls.negative_s != ENG_DNS_TTL_NONE)
		ttl_s = ttls.negative_s;
	return ENG_MIN(ttl_s, ENG_DNS_NEGATIVE_TTL_MAX_S);
}

/* A c-ares status other than success. */
static uint8_t
eng_dns_failure(struct eng_dns_part *part, int ares_status, const uint8_t *packet,
		int packet_len)
{
	struct eng_dns *dns = part->query->dns;
	switch (ares_status) {
	case ARES_ENOTFOUND: /* rcode NXDOMAIN */
		part->ttl_s = eng_dns_negative_ttl(dns, packet, packet_len);
		return ENG_DNS_NXDOMAIN;
	case ARES_ENODATA: /* NOERROR, no answer */
		part->ttl_s = eng_dns_negative_ttl(dns, packet, packet_len);
		return ENG_DNS_NODATA;
	default:
		/* ESERVFAIL, EREFUSED, ETIMEOUT, ECONNREFUSED, EFORMERR,
		 * ENOTIMP, EBADRESP, ENOMEM, EDESTRUCTION, ...: defer. */
		part->ttl_s = 0;
		return ENG_DNS_TEMPFAIL;
	}
}

/* Keep the ENG_DNS_MX_MAX lowest preferences: replace the worst kept. */
static void
eng_dns_mx_keep(struct eng_dns_query *query, const char *host, size_t host_len,
		uint16_t preference, uint32_t ttl_s)
{
	ENG_ASSERT(host_len > 0);
	ENG_ASSERT(host_len < ENG_DNS_NAME_SIZE);
	uint32_t index = query->mx_count;
	if (index == ENG_DNS_MX_MAX) {
		index = 0;
		for (uint32_t i = 1; i < ENG_DNS_MX_MAX; i++) {
			if (query->mx[i].preference > query->mx[index].preference)
				index = i;
		}
		if (query->mx[index].preference <= preference)
			return;
	} else {
		query->mx_count++;
	}
	struct eng_dns_mx *mx = &query->mx[index];
	memcpy(mx->host, host, host_len + 1);
	mx->preference = preference;
	mx->ttl_s = ttl_s;
}

static uint8_t
eng_dns_mx_collect(struct eng_dns_part *part, const struct ares_mx_reply *list,
		   const struct eng_dns_packet_ttls *ttls)
{
	struct eng_dns_query *query = part->query;
	uint32_t null_count = 0;
	uint32_t invalid_count = 0;
	uint32_t index = 0;
	char scratch[ENG_DNS_NAME_SIZE];
	for (const struct ares_mx_reply *mx = list; mx != NULL && index < ENG_DNS_MX_PARSE_MAX;
	     mx = mx->next, index++) {
		/* Records of one RRset share a TTL (RFC 2181 5.2); past the
		 * ones walked, use the lowest. */
		uint32_t ttl_s = ttls->answer_min_s;
		if (index < ENG_MIN(ttls->mx_count, ENG_DNS_MX_MAX))
			ttl_s = ttls->mx_ttl_s[index];
		size_t host_len = strnlen(mx->host, ENG_DNS_NAME_SIZE);
		if (host_len == 0) {
			null_count++; /* exchange "." */
			continue;
		}
		if (host_len == ENG_DNS_NAME_SIZE)
			host_len = 0; /* too long: invalid below */
		host_len = eng_dns_name_normalize(mx->host, host_len, scratch);
		if (host_len == 0) {
			invalid_count++;
			continue;
		}
		eng_dns_mx_keep(query, scratch, host_len, mx->priority, ttl_s);
	}
	part->ttl_s = ttls->answer_min_s == ENG_DNS_TTL_NONE ? 0 : ttls->answer_min_s;
	if (query->mx_count > 0)
		return ENG_DNS_OK;
	if (null_count > 0 && invalid_count == 0)
		return ENG_DNS_NULL_MX; /* only "." exchanges: RFC 7505 */
	if (invalid_count > 0)
		return ENG_DNS_TEMPFAIL; /* MX present but unusable: not an A fallback */
	part->ttl_s = ENG_MIN(part->ttl_s, ENG_DNS_NEGATIVE_TTL_MAX_S);
	return ENG_DNS_NODATA; /* answers, none of them MX (a CNAME alone) */
}

static uint8_t
eng_dns_mx_answer(struct eng_dns_part *part, int ares_status, const uint8_t *packet,
		  int packet_len)
{
	if (ares_status != ARES_SUCCESS)
		return eng_dns_failure(part, ares_status, packet, packet_len);
	struct eng_dns_packet_ttls ttls;
	if (packet == NULL || packet_len <= 0 ||
	    !eng_dns_packet_ttls(packet, (size_t)packet_len, &ttls))
		return eng_dns_failure(part, ARES_EBADRESP, NULL, 0);
	struct ares_mx_reply *list = NULL;
	int ret = ares_parse_mx_reply(packet, packet_len, &list);
	if (ret != ARES_SUCCESS)
		return eng_dns_failure(part, ret == ARES_ENODATA ? ARES_ENODATA : ARES_EBADRESP,
				       packet, packet_len);
	uint8_t status = eng_dns_mx_collect(part, list, &ttls);
	if (list != NULL)
		ares_free_data(list);
	return status;
}

static uint32_t
eng_dns_ares_ttl(int ttl)
{
	return ttl < 0 ? 0u : (uint32_t)ttl;
}

/* A or AAAA answer into the query (IPv4) or its IPv6 staging area. */
static uint8_t
eng_dns_addr_answer(struct eng_dns_part *part, int family, int ares_status,
		    const uint8_t *packet, int packet_len)
{
	struct eng_dns_query *query = part->query;
	if (ares_status != ARES_SUCCESS)
		return eng_dns_failure(part, ares_status, packet, packet_len);
	int count = (int)ENG_DNS_ADDR_MAX;
	int ret;
	if (family == AF_INET) {
		struct ares_addrttl found[ENG_DNS_ADDR_MAX];
		ret = ares_parse_a_reply(packet, packet_len, NULL, found, &count);
		ENG_ASSERT(count <= (int)ENG_DNS_ADDR_MAX); /* c-ares fills at most what we gave */
		for (int i = 0; ret == ARES_SUCCESS && i < count; i++) {
			struct eng_dns_addr *addr = &query->addr[query->addr_count++];
			addr->family = AF_INET;
			memcpy(addr->bytes, &found[i].ipaddr, 4);
			addr->ttl_s = eng_dns_ares_ttl(found[i].ttl);
		}
	} else {
		struct ares_addr6ttl found[ENG_DNS_ADDR_MAX];
		ret = ares_parse_aaaa_reply(packet, packet_len, NULL, found, &count);
		ENG_ASSERT(count <= (int)ENG_DNS_ADDR_MAX);
		for (int i = 0; ret == ARES_SUCCESS && i < count; i++) {
			struct eng_dns_addr *addr = &query->addr6[query->addr6_count++];
			addr->family = AF_INET6;
			memcpy(addr->bytes, &found[i].ip6addr, 16);
			addr->ttl_s = eng_dns_ares_ttl(found[i].ttl);
		}
	}
	if (ret == ARES_ENODATA || (ret == ARES_SUCCESS && count == 0))
		return eng_dns_failure(part, ARES_ENODATA, packet, packet_len);
	if (ret != ARES_SUCCESS)
		return eng_dns_failure(part, ARES_EBADRESP, NULL, 0);
	return ENG_DNS_OK;
}

/* Both families in: at most half of the slots for one family when both
 * answered, IPv4 first; then the combined status and TTL. */
static void
eng_dns_addr_finish(struct eng_dns_query *query)
{
	uint32_t v4 = query->addr_count, v6 = query->addr6_count;
	ENG_ASSERT(v4 <= ENG_DNS_ADDR_MAX);
	ENG_ASSERT(v6 <= ENG_DNS_ADDR_MAX);
	uint32_t v4_take = ENG_MIN(v4, ENG_DNS_ADDR_MAX - ENG_MIN(v6, ENG_DNS_ADDR_MAX / 2));
	uint32_t v6_take = ENG_MIN(v6, ENG_DNS_ADDR_MAX - v4_take);
	memcpy(&query->addr[v4_take], query->addr6, v6_take * sizeof(query->addr[0]));
	query->addr_count = v4_take + v6_take;
	query->addr6_count = 0;
	uint8_t a = query->parts[0].status, aaaa = query->parts[1].status;
	if (query->addr_count > 0) {
		query->status = ENG_DNS_OK;
		query->ttl_s = UINT32_MAX;
		for (uint32_t i = 0; i < query->addr_count; i++)
			query->ttl_s = ENG_MIN(query->ttl_s, query->addr[i].ttl_s);
	} else if (a == ENG_DNS_TEMPFAIL || aaaa == ENG_DNS_TEMPFAIL || a == ENG_DNS_OK ||
		   aaaa == ENG_DNS_OK) {
		query->status = ENG_DNS_TEMPFAIL;
		query->ttl_s = 0;
	} else {
		query->status = (a == ENG_DNS_NXDOMAIN || aaaa == ENG_DNS_NXDOMAIN) ?
					ENG_DNS_NXDOMAIN :
					ENG_DNS_NODATA;
		query->ttl_s = ENG_MIN(query->parts[0].ttl_s, query->parts[1].ttl_s);
	}
}

static void
eng_dns_query_finish(struct eng_dns *dns, struct eng_dns_query *query)
{
	if (query->kind == ENG_DNS_QUERY_MX) {
		query->status = (enum eng_dns_status)query->parts[0].status;
		query->ttl_s = query->parts[0].ttl_s;
		if (query->status == ENG_DNS_OK) {
			for (uint32_t i = 0; i < query->mx_count; i++)
				query->ttl_s = ENG_MIN(query->ttl_s, query->mx[i].ttl_s);
			eng_dns_mx_order(query->mx, query->mx_count, &dns->rand_state);
		}
	} else {
		ENG_ASSERT(query->kind == ENG_DNS_QUERY_ADDR);
		eng_dns_addr_finish(query);
	}
	if (query->status == ENG_DNS_TEMPFAIL)
		dns->stats.lookups_tempfailed++;
	eng_dns_complete(dns, query);
}

/* ares_callback for every part of every query. */
static void
eng_dns_ares_callback(void *arg, int ares_status, int timeouts, unsigned char *packet,
		      int packet_len)
{
	(void)timeouts;
	struct eng_dns_part *part = arg;
	struct eng_dns_query *query = part->query;
	ENG_ASSERT(query != NULL);
	ENG_ASSERT(query->busy);
	ENG_ASSERT(!part->done);
	ENG_ASSERT(query->parts_pending > 0);
	struct eng_dns *dns = query->dns;
	dns->stats.queries_completed++;
	dns->dirty = true;
	if (query->kind == ENG_DNS_QUERY_MX) {
		part->status = eng_dns_mx_answer(part, ares_status, packet, packet_len);
	} else {
		int family = part == &query->parts[0] ? AF_INET : AF_INET6;
		part->status = eng_dns_addr_answer(part, family, ares_status, packet, packet_len);
	}
	part->done = true;
	query->parts_pending--;
	if (query->parts_pending == 0)
		eng_dns_query_finish(dns, query);
}

/*
 * Resolver life cycle and queries.
 */

static bool
eng_dns_server_char_is_valid(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
	       c == '.' || c == ':' || c == '[' || c == ']';
}

/* "ip[:port]" strings into c-ares's comma-separated form. */
static bool
eng_dns_servers_csv(const char *const *servers, char *csv, size_t csv_size, char *err,
		    size_t err_size)
{
	size_t used = 0;
	uint32_t count = 0;
	for (; servers[count] != NULL; count++) {
		const char *server = servers[count];
		size_t len = strnlen(server, ENG_DNS_SERVER_LENGTH_MAX + 1);
		bool valid = count < ENG_DNS_SERVERS_MAX && len > 0 &&
			     len <= ENG_DNS_SERVER_LENGTH_MAX;
		for (size_t i = 0; valid && i < len; i++)
			valid = eng_dns_server_char_is_valid((unsigned char)server[i]);
		if (!valid) {
			snprintf(err, err_size,
				 "dns_servers: bad server '%.*s' (want ip[:port], at most %u)",
				 (int)ENG_MIN(len, (size_t)ENG_DNS_SERVER_LENGTH_MAX), server,
				 ENG_DNS_SERVERS_MAX);
			return false;
		}
		ENG_ASSERT(used + len + 2 <= csv_size);
		if (used > 0)
			csv[used++] = ',';
		memcpy(csv + used, server, len);
		used += len;
	}
	csv[used] = '\0';
	if (count == 0) {
		snprintf(err, err_size, "dns_servers: empty list");
		return false;
	}
	return true;
}

static uint64_t
eng_dns_seed(uint64_t seed)
{
	if (seed == 0 && getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = eng_now_monotonic_ns() ^ ((uint64_t)getpid() << 32);
	return seed != 0 ? seed : 0x9e3779b97f4a7c15ull;
}

static void
eng_dns_init_ops(struct eng_dns *dns)
{
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		struct eng_dns_slot *slot = &dns->slots[i];
		slot->dns = dns;
		slot->fd = -1;
		slot->state = ENG_DNS_SLOT_FREE;
		slot->poll_op.callback = eng_dns_poll_callback;
		slot->poll_op.ctx = slot;
		slot->remove_op.callback = eng_dns_remove_callback;
		slot->remove_op.ctx = slot;
	}
	dns->timer_op.callback = eng_dns_timer_callback;
	dns->timer_op.ctx = dns;
	dns->timer_cancel_op.callback = eng_dns_cancel_callback;
	dns->timer_cancel_op.ctx = dns;
	dns->kick_op.callback = eng_dns_kick_callback;
	dns->kick_op.ctx = dns;
}

static int
eng_dns_init_channel(struct eng_dns *dns, bool explicit_servers,
		     const struct eng_dns_options *options)
{
	struct ares_options ares;
	memset(&ares, 0, sizeof(ares));
	int mask = ARES_OPT_FLAGS | ARES_OPT_SOCK_STATE_CB | ARES_OPT_EDNSPSZ;
	ares.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	if (options->keep_sockets_open)
		ares.flags |= ARES_FLAG_STAYOPEN;
	if (options->use_tcp)
		ares.flags |= ARES_FLAG_USEVC;
	ares.ednspsz = ENG_DNS_EDNS_SIZE;
	ares.sock_state_cb = eng_dns_sock_state_callback;
	ares.sock_state_cb_data = dns;
	if (options->timeout_ms > 0) {
		mask |= ARES_OPT_TIMEOUTMS;
		ares.timeout = (int)ENG_MIN(options->timeout_ms, (uint32_t)INT32_MAX);
	}
	if (options->tries > 0) {
		mask |= ARES_OPT_TRIES;
		ares.tries = (int)ENG_MIN(options->tries, 64u);
	}
	if (explicit_servers)
		mask |= ARES_OPT_NOROTATE; /* the list is in preference order */
	return ares_init_options(&dns->channel, &ares, mask);
}

struct eng_dns *
eng_dns_create(struct ring *ring, const char *const *servers,
	       const struct eng_dns_options *options, char *err, size_t err_size)
{
	ENG_ASSERT(ring != NULL);
	ENG_ASSERT(err != NULL || err_size == 0);
	static const struct eng_dns_options defaults;
	if (options == NULL)
		options = &defaults;
	char csv[ENG_DNS_SERVERS_CSV_SIZE];
	if (servers != NULL && !eng_dns_servers_csv(servers, csv, sizeof(csv), err, err_size))
		return NULL;
	struct eng_dns *dns = calloc(1, sizeof(*dns));
	if (dns == NULL) {
		snprintf(err, err_size, "dns: out of memory");
		return NULL;
	}
	dns->ring = ring;
	dns->rand_state = eng_dns_seed(options->seed);
	dns->negative_ttl_s = options->negative_ttl_s;
	if (dns->negative_ttl_s == 0)
		dns->negative_ttl_s = ENG_DNS_NEGATIVE_TTL_S;
	eng_dns_init_ops(dns);
	int ret = eng_dns_init_channel(dns, servers != NULL, options);
	if (ret == ARES_SUCCESS && servers != NULL)
		ret = ares_set_servers_ports_csv(dns->channel, csv);
	if (ret != ARES_SUCCESS) {
		snprintf(err, err_size, "dns: c-ares: %s%s%s", ares_strerror(ret),
			 servers != NULL ? " with servers " : "", servers != NULL ? csv : "");
		if (dns->channel != NULL)
			ares_destroy(dns->channel);
		free(dns);
		return NULL;
	}
	ENG_ASSERT(dns->sockets_open == 0);
	ring_add_hook(ring, eng_dns_hook, dns);
	return dns;
}

/* Deliver until nothing is queued; resolves started from the callbacks of
 * a closing resolver complete at once, and each route does a bounded
 * number of them, so this ends. */
static void
eng_dns_destroy_deliver(struct eng_dns *dns)
{
	for (uint32_t round = 0; round < ENG_DNS_DESTROY_DELIVER_ROUNDS_MAX; round++) {
		if (!eng_dns_deliver(dns, ENG_DNS_DELIVER_MAX))
			return;
	}
	ENG_PANIC("dns: callbacks kept resolving during destroy");
}

/* Remove the polls, cancel the timer and run the ring until the resolver
 * has no op in flight (bounded in turns and time). */
static void
eng_dns_destroy_drain(struct eng_dns *dns)
{
	ENG_ASSERT(dns->channel == NULL);
	uint64_t deadline_ns = eng_now_monotonic_ns() +
			       ENG_DNS_DESTROY_TURNS_MAX * ENG_DNS_DESTROY_TURN_NS;
	for (uint32_t turn = 0; turn < ENG_DNS_DESTROY_TURNS_MAX; turn++) {
		eng_dns_flush_slots(dns);
		if (dns->timer_op.in_flight && !dns->timer_cancel_op.in_flight)
			(void)ring_prep_cancel(dns->ring, &dns->timer_cancel_op, &dns->timer_op);
		if (eng_dns_ops_in_flight(dns) == 0 || eng_now_monotonic_ns() > deadline_ns)
			return;
		int ret = ring_run_once(dns->ring, ENG_DNS_DESTROY_TURN_NS);
		ENG_ASSERT(ret >= 0);
	}
}

void
eng_dns_destroy(struct eng_dns *dns)
{
	if (dns == NULL)
		return;
	ENG_ASSERT(!dns->in_hook);
	ENG_ASSERT(dns->channel != NULL);
	ring_remove_hook(dns->ring, eng_dns_hook, dns);
	/* Pending queries call back with ARES_EDESTRUCTION (TEMPFAIL) and
	 * every socket is reported closed. */
	ares_channel channel = dns->channel;
	dns->in_process = true; /* delivered right here, no kick */
	ares_destroy(channel);
	dns->channel = NULL;
	eng_dns_destroy_deliver(dns);
	dns->in_process = false;
	ENG_ASSERT(dns->sockets_open == 0);
	eng_dns_destroy_drain(dns);
	/* Every op is ours until its CQE: freeing earlier would let the
	 * kernel complete into freed memory. */
	ENG_ASSERT(eng_dns_ops_in_flight(dns) == 0);
	free(dns);
}

static int
eng_dns_start(struct eng_dns *dns, const char *name, size_t name_len,
	      struct eng_dns_query *query, eng_dns_callback_fn *callback, uint8_t kind)
{
	ENG_ASSERT(dns != NULL);
	ENG_ASSERT(query != NULL);
	ENG_ASSERT(callback != NULL);
	ENG_ASSERT(!query->busy);
	if (eng_dns_name_normalize(name, name_len, query->name) == 0)
		return -EINVAL;
	query->status = ENG_DNS_TEMPFAIL;
	query->ttl_s = 0;
	query->mx_count = 0;
	query->addr_count = 0;
	query->addr6_count = 0;
	query->dns = dns;
	query->callback = callback;
	query->completed_next = NULL;
	query->kind = kind;
	query->busy = true;
	query->parts_pending = kind == ENG_DNS_QUERY_ADDR ? 2 : 1;
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(query->parts); i++) {
		query->parts[i] = (struct eng_dns_part){
			.query = query,
			.status = ENG_DNS_TEMPFAIL,
		};
		query->parts[i].done = i >= query->parts_pending;
	}
	if (dns->channel == NULL) {
		/* Destroy in progress: complete at once, as c-ares would. */
		query->parts_pending = 0;
		eng_dns_query_finish(dns, query);
		return 0;
	}
	dns->dirty = true;
	/* parts_pending is set first: a part may complete inside ares_query(). */
	if (kind == ENG_DNS_QUERY_MX) {
		dns->stats.queries_started++;
		ares_query(dns->channel, query->name, ENG_DNS_CLASS_IN, ENG_DNS_TYPE_MX,
			   eng_dns_ares_callback, &query->parts[0]);
		return 0;
	}
	dns->stats.queries_started += 2;
	ares_query(dns->channel, query->name, ENG_DNS_CLASS_IN, ENG_DNS_TYPE_A,
		   eng_dns_ares_callback, &query->parts[0]);
	ares_query(dns->channel, query->name, ENG_DNS_CLASS_IN, ENG_DNS_TYPE_AAAA,
		   eng_dns_ares_callback, &query->parts[1]);
	return 0;
}

int
eng_dns_resolve_mx(struct eng_dns *dns, const char *domain, size_t domain_len,
		   struct eng_dns_query *query, eng_dns_callback_fn *callback)
{
	return eng_dns_start(dns, domain, domain_len, query, callback, ENG_DNS_QUERY_MX);
}

int
eng_dns_resolve_addr(struct eng_dns *dns, const char *name, size_t name_len,
		     struct eng_dns_query *query, eng_dns_callback_fn *callback)
{
	return eng_dns_start(dns, name, name_len, query, callback, ENG_DNS_QUERY_ADDR);
}

const struct eng_dns_stats *
eng_dns_stats_get(const struct eng_dns *dns)
{
	ENG_ASSERT(dns != NULL);
	return &dns->stats;
}

uint32_t
eng_dns_ops_in_flight(const struct eng_dns *dns)
{
	ENG_ASSERT(dns != NULL);
	uint32_t count = 0;
	for (uint32_t i = 0; i < ENG_DNS_SOCKETS_MAX; i++) {
		count += dns->slots[i].poll_op.in_flight ? 1u : 0u;
		count += dns->slots[i].remove_op.in_flight ? 1u : 0u;
	}
	count += dns->timer_op.in_flight ? 1u : 0u;
	count += dns->timer_cancel_op.in_flight ? 1u : 0u;
	count += dns->kick_op.in_flight ? 1u : 0u;
	return count;
}

uint32_t
eng_dns_sockets_open(const struct eng_dns *dns)
{
	ENG_ASSERT(dns != NULL);
	return dns->sockets_open;
}

/*
 * Cache: a chained hash table over entries allocated at creation, clock
 * eviction, keyed by (kind, lower-case name).
 */

static uint32_t
eng_dns_cache_hash(uint8_t kind, const char *name)
{
	uint32_t hash = 2166136261u ^ kind; /* FNV-1a */
	for (size_t i = 0; i < ENG_DNS_NAME_SIZE && name[i] != '\0'; i++) {
		hash ^= (uint8_t)name[i];
		hash *= 16777619u;
	}
	return hash;
}

static struct eng_dns_cache_entry *
eng_dns_cache_find(struct eng_dns_cache *cache, uint8_t kind, const char *name, uint32_t hash)
{
	uint32_t index = cache->buckets[hash & cache->bucket_mask];
	for (uint32_t step = 0; step < cache->entries_max && index != ENG_DNS_INDEX_NONE; step++) {
		struct eng_dns_cache_entry *entry = &cache->entries[index];
		ENG_ASSERT(entry->kind != ENG_DNS_QUERY_NONE);
		if (entry->hash == hash && entry->kind == kind && strcmp(entry->name, name) == 0)
			return entry;
		index = entry->chain_next;
	}
	ENG_ASSERT(index == ENG_DNS_INDEX_NONE);
	return NULL;
}

/* A live answer, or NULL (missing or expired). */
static const struct eng_dns_cache_entry *
eng_dns_cache_lookup(struct eng_dns_cache *cache, uint8_t kind, const char *name,
		     uint64_t now_ns)
{
	struct eng_dns_cache_entry *entry =
		eng_dns_cache_find(cache, kind, name, eng_dns_cache_hash(kind, name));
	if (entry == NULL || entry->expires_ns <= now_ns) {
		cache->stats.misses++;
		return NULL;
	}
	entry->referenced = true;
	cache->stats.hits++;
	return entry;
}

static void
eng_dns_cache_unlink(struct eng_dns_cache *cache, uint32_t index)
{
	struct eng_dns_cache_entry *entry = &cache->entries[index];
	uint32_t *link = &cache->buckets[entry->hash & cache->bucket_mask];
	for (uint32_t step = 0; step < cache->entries_max && *link != ENG_DNS_INDEX_NONE; step++) {
		if (*link == index) {
			*link = entry->chain_next;
			entry->kind = ENG_DNS_QUERY_NONE;
			entry->chain_next = ENG_DNS_INDEX_NONE;
			ENG_ASSERT(cache->stats.entries > 0);
			cache->stats.entries--;
			return;
		}
		link = &cache->entries[*link].chain_next;
	}
	ENG_PANIC("dns cache: entry missing from its bucket");
}

/* A free entry: one never used yet (the table is taken in order, so its
 * pages are touched only when needed), else the clock's victim. */
static uint32_t
eng_dns_cache_take(struct eng_dns_cache *cache, uint64_t now_ns)
{
	if (cache->never_used < cache->entries_max)
		return cache->never_used++;
	/* Two sweeps at most: the first clears every referenced bit. */
	for (uint32_t step = 0; step < 2 * cache->entries_max; step++) {
		uint32_t index = cache->hand;
		cache->hand = (cache->hand + 1) % cache->entries_max;
		struct eng_dns_cache_entry *entry = &cache->entries[index];
		ENG_ASSERT(entry->kind != ENG_DNS_QUERY_NONE);
		if (entry->expires_ns > now_ns && entry->referenced) {
			entry->referenced = false;
			continue;
		}
		if (entry->expires_ns > now_ns)
			cache->stats.evictions++;
		eng_dns_cache_unlink(cache, index);
		return index;
	}
	ENG_PANIC("dns cache: clock found no victim in two sweeps");
}

/*
 * Keep an answer. Returns its expiry (now_ns when it is not kept: TEMPFAIL
 * or a zero TTL). mx or addr (by kind) holds count records.
 */
static uint64_t
eng_dns_cache_store(struct eng_dns_cache *cache, uint8_t kind, const char *name,
		    const struct eng_dns_query *query, uint64_t now_ns)
{
	ENG_ASSERT(kind == ENG_DNS_QUERY_MX || kind == ENG_DNS_QUERY_ADDR);
	uint32_t ttl_s = ENG_MIN(query->ttl_s, cache->ttl_max_s);
	if (query->status == ENG_DNS_TEMPFAIL || ttl_s == 0)
		return now_ns;
	uint32_t hash = eng_dns_cache_hash(kind, name);
	struct eng_dns_cache_entry *entry = eng_dns_cache_find(cache, kind, name, hash);
	if (entry == NULL) {
		uint32_t index = eng_dns_cache_take(cache, now_ns);
		entry = &cache->entries[index];
		entry->hash = hash;
		entry->kind = kind;
		size_t len = strnlen(name, ENG_DNS_NAME_SIZE);
		ENG_ASSERT(len < ENG_DNS_NAME_SIZE);
		memcpy(entry->name, name, len + 1);
		entry->chain_next = cache->buckets[hash & cache->bucket_mask];
		cache->buckets[hash & cache->bucket_mask] = index;
		cache->stats.entries++;
	}
	entry->status = (uint8_t)query->status;
	entry->referenced = false;
	entry->expires_ns = now_ns + (uint64_t)ttl_s * ENG_DNS_NS_PER_S;
	if (kind == ENG_DNS_QUERY_MX) {
		entry->count = query->status == ENG_DNS_OK ? query->mx_count : 0;
		memcpy(entry->u.mx, query->mx, entry->count * sizeof(query->mx[0]));
	} else {
		entry->count = query->status == ENG_DNS_OK ? query->addr_count : 0;
		memcpy(entry->u.addr, query->addr, entry->count * sizeof(query->addr[0]));
	}
	cache->stats.insertions++;
	return entry->expires_ns;
}

struct eng_dns_cache *
eng_dns_cache_create(struct eng_dns *dns, const struct eng_dns_cache_params *params, char *err,
		     size_t err_size)
{
	ENG_ASSERT(dns != NULL);
	ENG_ASSERT(params != NULL);
	uint32_t entries_max = params->entries_max;
	if (entries_max == 0)
		entries_max = ENG_DNS_CACHE_ENTRIES_DEFAULT;
	if (entries_max > ENG_DNS_CACHE_ENTRIES_MAX) {
		snprintf(err, err_size, "dns cache: %u entries is over the limit of %u",
			 entries_max, ENG_DNS_CACHE_ENTRIES_MAX);
		return NULL;
	}
	uint32_t bucket_count = 1;
	while (bucket_count < entries_max)
		bucket_count <<= 1; /* bounded: entries_max <= 2^20 */
	struct eng_dns_cache *cache = calloc(1, sizeof(*cache));
	if (cache != NULL) {
		cache->entries = calloc(entries_max, sizeof(cache->entries[0]));
		cache->buckets = malloc(bucket_count * sizeof(cache->buckets[0]));
	}
	if (cache == NULL || cache->entries == NULL || cache->buckets == NULL) {
		snprintf(err, err_size, "dns cache: out of memory for %u entries", entries_max);
		eng_dns_cache_destroy(cache);
		return NULL;
	}
	cache->dns = dns;
	cache->entries_max = entries_max;
	cache->bucket_mask = bucket_count - 1;
	cache->ttl_max_s = params->ttl_max_s ? params->ttl_max_s : ENG_DNS_TTL_MAX_S;
	for (uint32_t i = 0; i < bucket_count; i++)
		cache->buckets[i] = ENG_DNS_INDEX_NONE;
	/* entries stays untouched (calloc'd: zero, kind NONE) until taken. */
	cache->never_used = 0;
	return cache;
}

void
eng_dns_cache_destroy(struct eng_dns_cache *cache)
{
	if (cache == NULL)
		return;
	free(cache->entries);
	free(cache->buckets);
	free(cache);
}

const struct eng_dns_cache_stats *
eng_dns_cache_stats_get(const struct eng_dns_cache *cache)
{
	ENG_ASSERT(cache != NULL);
	return &cache->stats;
}

/*
 * Routes: MX, then the addresses of each hop in order, from the cache or
 * through the resolver.
 */

static void
eng_dns_route_apply_mx(struct eng_dns_route_query *route_query, uint8_t status,
		       const struct eng_dns_mx *mx, uint32_t mx_count, uint64_t expires_ns)
{
	struct eng_dns_route *route = &route_query->route;
	route->expires_ns = ENG_MIN(route->expires_ns, expires_ns);
	route->hop_count = 0;
	route->status = (enum eng_dns_status)status;
	if (status == ENG_DNS_NODATA) {
		/* RFC 5321 5.1: no MX, the domain is its own MX, preference 0. */
		struct eng_dns_hop *hop = &route->hops[0];
		memcpy(hop->host, route_query->domain, sizeof(hop->host));
		hop->preference = 0;
		route->implicit_mx = true;
		route->hop_count = 1;
		route->status = ENG_DNS_OK;
	} else if (status == ENG_DNS_OK) {
		ENG_ASSERT(mx_count > 0);
		ENG_ASSERT(mx_count <= ENG_DNS_MX_MAX);
		/* Shuffle equal preferences on every use, in the embedded
		 * query's MX array (idle while the route is being built). */
		struct eng_dns_mx *order = route_query->query.mx;
		if (order != mx)
			memcpy(order, mx, mx_count * sizeof(order[0]));
		eng_dns_mx_order(order, mx_count, &route_query->cache->dns->rand_state);
		for (uint32_t i = 0; i < mx_count; i++) {
			memcpy(route->hops[i].host, order[i].host, sizeof(route->hops[i].host));
			route->hops[i].preference = order[i].preference;
		}
		route->hop_count = mx_count;
	}
	for (uint32_t i = 0; i < route->hop_count; i++) {
		route->hops[i].status = ENG_DNS_TEMPFAIL;
		route->hops[i].addr_count = 0;
	}
}

static void
eng_dns_route_apply_addr(struct eng_dns_route_query *route_query, uint8_t status,
			 const struct eng_dns_addr *addr, uint32_t addr_count,
			 uint64_t expires_ns)
{
	struct eng_dns_route *route = &route_query->route;
	ENG_ASSERT(route_query->hop_index < route->hop_count);
	ENG_ASSERT(addr_count <= ENG_DNS_ADDR_MAX);
	struct eng_dns_hop *hop = &route->hops[route_query->hop_index];
	hop->status = status;
	hop->addr_count = status == ENG_DNS_OK ? addr_count : 0;
	memcpy(hop->addr, addr, hop->addr_count * sizeof(hop->addr[0]));
	route->expires_ns = ENG_MIN(route->expires_ns, expires_ns);
	route_query->hop_index++;
}

static enum eng_dns_status
eng_dns_route_final_status(const struct eng_dns_route *route)
{
	bool tempfail = false;
	for (uint32_t i = 0; i < route->hop_count; i++) {
		if (route->hops[i].addr_count > 0)
			return ENG_DNS_OK;
		tempfail = tempfail || route->hops[i].status == ENG_DNS_TEMPFAIL;
	}
	if (tempfail)
		return ENG_DNS_TEMPFAIL;
	if (route->implicit_mx && route->hops[0].status == ENG_DNS_NXDOMAIN)
		return ENG_DNS_NXDOMAIN;
	return ENG_DNS_NO_ADDRESS;
}

static void eng_dns_route_addr_callback(struct eng_dns_query *query, enum eng_dns_status status);

/* Look up each remaining hop. Returns true when the route is complete,
 * false when a lookup is in flight (its callback continues). */
static bool
eng_dns_route_advance(struct eng_dns_route_query *route_query)
{
	struct eng_dns_route *route = &route_query->route;
	struct eng_dns_cache *cache = route_query->cache;
	while (route_query->hop_index < route->hop_count) { /* <= ENG_DNS_MX_MAX */
		const char *host = route->hops[route_query->hop_index].host;
		const struct eng_dns_cache_entry *entry =
			eng_dns_cache_lookup(cache, ENG_DNS_QUERY_ADDR, host, route_query->now_ns);
		if (entry == NULL) {
			int ret = eng_dns_resolve_addr(cache->dns, host, strlen(host),
						       &route_query->query,
						       eng_dns_route_addr_callback);
			ENG_ASSERT(ret == 0); /* hop names are normalized already */
			return false;
		}
		eng_dns_route_apply_addr(route_query, entry->status, entry->u.addr, entry->count,
					 entry->expires_ns);
	}
	if (route->hop_count > 0)
		route->status = eng_dns_route_final_status(route);
	ENG_ASSERT(route->status != ENG_DNS_NODATA);
	return true;
}

static void
eng_dns_route_complete(struct eng_dns_route_query *route_query)
{
	ENG_ASSERT(route_query->busy);
	route_query->busy = false;
	route_query->callback(route_query, route_query->route.status);
}

static void
eng_dns_route_addr_callback(struct eng_dns_query *query, enum eng_dns_status status)
{
	struct eng_dns_route_query *route_query = query->ctx;
	ENG_ASSERT(route_query != NULL);
	ENG_ASSERT(route_query->busy);
	const char *host = route_query->route.hops[route_query->hop_index].host;
	uint64_t expires_ns = eng_dns_cache_store(route_query->cache, ENG_DNS_QUERY_ADDR, host,
						  query, route_query->now_ns);
	eng_dns_route_apply_addr(route_query, (uint8_t)status, query->addr, query->addr_count,
				 expires_ns);
	if (eng_dns_route_advance(route_query))
		eng_dns_route_complete(route_query);
}

static void
eng_dns_route_mx_callback(struct eng_dns_query *query, enum eng_dns_status status)
{
	struct eng_dns_route_query *route_query = query->ctx;
	ENG_ASSERT(route_query != NULL);
	ENG_ASSERT(route_query->busy);
	uint64_t expires_ns = eng_dns_cache_store(route_query->cache, ENG_DNS_QUERY_MX,
						  route_query->domain, query, route_query->now_ns);
	eng_dns_route_apply_mx(route_query, (uint8_t)status, query->mx, query->mx_count,
			       expires_ns);
	if (eng_dns_route_advance(route_query))
		eng_dns_route_complete(route_query);
}

enum eng_dns_start
eng_dns_route_resolve(struct eng_dns_cache *cache, const char *domain, size_t domain_len,
		      uint64_t now_ns, struct eng_dns_route_query *route_query,
		      eng_dns_route_fn *callback)
{
	ENG_ASSERT(cache != NULL);
	ENG_ASSERT(route_query != NULL);
	ENG_ASSERT(callback != NULL);
	ENG_ASSERT(!route_query->busy);
	ENG_ASSERT(!route_query->query.busy);
	size_t len = eng_dns_name_normalize(domain, domain_len, route_query->domain);
	if (len == 0)
		return ENG_DNS_START_INVALID;
	memset(&route_query->route, 0, sizeof(route_query->route));
	route_query->route.expires_ns = UINT64_MAX;
	route_query->cache = cache;
	route_query->callback = callback;
	route_query->now_ns = now_ns;
	route_query->hop_index = 0;
	route_query->query.ctx = route_query;
	route_query->busy = true;
	const struct eng_dns_cache_entry *entry =
		eng_dns_cache_lookup(cache, ENG_DNS_QUERY_MX, route_query->domain, now_ns);
	if (entry == NULL) {
		int ret = eng_dns_resolve_mx(cache->dns, route_query->domain, len,
					     &route_query->query, eng_dns_route_mx_callback);
		ENG_ASSERT(ret == 0);
		return ENG_DNS_START_PENDING;
	}
	eng_dns_route_apply_mx(route_query, entry->status, entry->u.mx, entry->count,
			       entry->expires_ns);
	if (!eng_dns_route_advance(route_query))
		return ENG_DNS_START_PENDING;
	route_query->busy = false;
	return ENG_DNS_START_DONE;
}
