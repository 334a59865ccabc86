/*
 * eng_dest.c - a destination's queue and admission decisions (eng_dest.h).
 */
#include "eng_dest.h"

#include <string.h>

#include "eng_common.h"

/* "unlimited" is count 0; the bucket still wants a period >= 1. */
static uint64_t
eng_dest_period(const struct eng_rate *rate)
{
	return rate->period_ns == 0 ? 1 : rate->period_ns;
}

static void
eng_dest_apply_rates(struct eng_dest *dest, uint64_t now_ns)
{
	const struct eng_destination *s = &dest->settings;
	eng_bucket_set_rate(&dest->message_bucket, s->max_message_rate.count,
			    eng_dest_period(&s->max_message_rate), ENG_MAX(s->max_message_burst, 1u),
			    now_ns);
	eng_bucket_set_rate(&dest->connection_bucket, s->max_connection_rate.count,
			    eng_dest_period(&s->max_connection_rate),
			    ENG_MAX(s->max_connection_burst, 1u), now_ns);
	eng_counter_set_max(&dest->connections, s->max_connections);
}

void
eng_dest_init(struct eng_dest *dest, const char *domain, uint32_t domain_len,
	      const struct eng_destination *settings, uint64_t now_ns)
{
	ENG_ASSERT(dest != NULL && settings != NULL);
	ENG_ASSERT(domain_len < ENG_DOMAIN_SIZE);
	memset(dest, 0, sizeof(*dest));
	memcpy(dest->domain, domain, domain_len);
	dest->domain_len = domain_len;
	dest->settings = *settings;
	const struct eng_destination *s = settings;
	eng_bucket_init(&dest->message_bucket, s->max_message_rate.count,
			eng_dest_period(&s->max_message_rate), ENG_MAX(s->max_message_burst, 1u),
			now_ns);
	eng_bucket_init(&dest->connection_bucket, s->max_connection_rate.count,
			eng_dest_period(&s->max_connection_rate),
			ENG_MAX(s->max_connection_burst, 1u), now_ns);
	eng_counter_init(&dest->connections, s->max_connections);
}

void
eng_dest_set_settings(struct eng_dest *dest, const struct eng_destination *settings,
		      uint64_t now_ns)
{
	ENG_ASSERT(dest != NULL && settings != NULL);
	ENG_ASSERT(settings->max_connections >= 1);
	dest->settings = *settings;
	eng_dest_apply_rates(dest, now_ns);
}

void
eng_dest_push(struct eng_dest *dest, struct eng_job *job)
{
	ENG_ASSERT(job != NULL);
	ENG_ASSERT(!job->queued);
	job->next = NULL;
	job->queued = true;
	if (dest->tail != NULL)
		dest->tail->next = job;
	else
		dest->head = job;
	dest->tail = job;
	dest->queued_count++;
}

void
eng_dest_push_front(struct eng_dest *dest, struct eng_job *job)
{
	ENG_ASSERT(job != NULL);
	ENG_ASSERT(!job->queued);
	job->queued = true;
	job->next = dest->head;
	dest->head = job;
	if (dest->tail == NULL)
		dest->tail = job;
	dest->queued_count++;
}

bool
eng_dest_is_empty(const struct eng_dest *dest)
{
	ENG_ASSERT(dest != NULL);
	ENG_ASSERT((dest->head == NULL) == (dest->queued_count == 0));
	return dest->head == NULL;
}

static struct eng_job *
eng_dest_pop(struct eng_dest *dest)
{
	struct eng_job *job = dest->head;
	ENG_ASSERT(job != NULL && job->queued);
	ENG_ASSERT(dest->queued_count > 0);
	dest->head = job->next;
	if (dest->head == NULL)
		dest->tail = NULL;
	job->next = NULL;
	job->queued = false;
	dest->queued_count--;
	return job;
}

struct eng_job *
eng_dest_take(struct eng_dest *dest)
{
	ENG_ASSERT(dest != NULL);
	return eng_dest_is_empty(dest) ? NULL : eng_dest_pop(dest);
}

/* Jobs that idle connections, or connections still opening, will pick up
 * need no new connection: without counting the opening ones, every loop
 * turn of a connect in flight would open another for the same job. */
static bool
eng_dest_needs_connection(const struct eng_dest *dest)
{
	return dest->queued_count > (uint64_t)dest->idle_connections + dest->opening_connections;
}

enum eng_dest_open
eng_dest_want_connection(struct eng_dest *dest, struct eng_global_limit *node, uint64_t now_ns,
			 uint64_t *wake_ns)
{
	ENG_ASSERT(dest != NULL && node != NULL && wake_ns != NULL);
	ENG_ASSERT(dest->idle_connections <= dest->connections.used);
	*wake_ns = 0;
	if (!eng_dest_needs_connection(dest))
		return ENG_DEST_OPEN_NONE;
	if (now_ns < dest->backoff_until_ns) {
		*wake_ns = dest->backoff_until_ns;
		return ENG_DEST_OPEN_WAIT;
	}
	if (eng_counter_is_full(&dest->connections))
		return ENG_DEST_OPEN_FULL;
	if (eng_bucket_available(&dest->connection_bucket, now_ns) == 0) {
		*wake_ns = eng_bucket_next_ns(&dest->connection_bucket, now_ns);
		return ENG_DEST_OPEN_WAIT;
	}
	if (!eng_global_limit_try_acquire(node))
		return ENG_DEST_OPEN_FULL;
	bool got = eng_counter_try_acquire(&dest->connections);
	ENG_ASSERT(got);
	got = eng_bucket_take(&dest->connection_bucket, now_ns, 1);
	ENG_ASSERT(got);
	dest->stats.connections_opened++;
	dest->opening_connections++;
	return ENG_DEST_OPEN_NOW;
}

enum eng_dest_action
eng_dest_next_job(struct eng_dest *dest, uint32_t messages_sent, uint64_t now_ns,
		  struct eng_job **job, uint64_t *wake_ns)
{
	ENG_ASSERT(dest != NULL && job != NULL && wake_ns != NULL);
	ENG_ASSERT(dest->connections.used > 0);
	*job = NULL;
	*wake_ns = 0;
	uint32_t per_connection = dest->settings.max_messages_per_connection;
	if (per_connection != 0 && messages_sent >= per_connection)
		return ENG_DEST_QUIT;
	if (eng_dest_is_empty(dest))
		return ENG_DEST_IDLE;
	if (!eng_bucket_take(&dest->message_bucket, now_ns, 1)) {
		*wake_ns = eng_bucket_next_ns(&dest->message_bucket, now_ns);
		dest->stats.rate_waits++;
		return ENG_DEST_WAIT;
	}
	*job = eng_dest_pop(dest);
	dest->stats.jobs_started++;
	return ENG_DEST_SEND;
}

void
eng_dest_connection_up(struct eng_dest *dest)
{
	ENG_ASSERT(dest != NULL);
	ENG_ASSERT(dest->connections.used > 0);
	ENG_ASSERT(dest->opening_connections > 0);
	dest->opening_connections--;
	dest->consecutive_failures = 0;
}

void
eng_dest_connection_closed(struct eng_dest *dest, struct eng_global_limit *node, bool was_up,
			   bool failed, uint64_t now_ns)
{
	ENG_ASSERT(dest != NULL && node != NULL);
	ENG_ASSERT(dest->connections.used > 0);
	if (!was_up) {
		ENG_ASSERT(dest->opening_connections > 0);
		dest->opening_connections--;
	}
	ENG_ASSERT(dest->opening_connections < dest->connections.used);
	eng_counter_release(&dest->connections);
	eng_global_limit_release(node);
	if (!failed)
		return;
	dest->stats.connections_failed++;
	dest->stats.backoffs++;
	uint32_t shift = ENG_MIN(dest->consecutive_failures, 10u);
	uint64_t delay = ENG_MIN(ENG_DEST_BACKOFF_BASE_NS << shift, ENG_DEST_BACKOFF_MAX_NS);
	dest->consecutive_failures++;
	dest->backoff_until_ns = ENG_MAX(dest->backoff_until_ns, now_ns + delay);
}
