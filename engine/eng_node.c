/*
 * eng_node.c - shard threads, start-up, reload and stop (see eng_node.h).
 *
 * Every exchange between the main thread and a shard is a MSG_RING CQE:
 * main -> shard on the shard's control op, shard -> main on the main
 * ring's report op, with the shard index and the event packed in the
 * 32-bit value. Start-up and reload block the main thread in its own ring
 * until every shard has reported: no polling, no sleeps.
 */
#include "eng_node.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_common.h"
#include "eng_deliver.h"
#include "eng_tls.h"
#include "ring/ring_mailbox.h"

#define ENG_MAILBOX_CAPACITY 4096u
#define ENG_REPORT_READY 1
#define ENG_REPORT_FAILED 2
#define ENG_REPORT_RELOADED 3
#define ENG_REPORT_STOPPED 4
#define ENG_REPORT_DRAINED 5

struct eng_main_wait {
	struct ring_op report_op;
	uint32_t reports;
	uint32_t failures;
	uint32_t first_failed;
};

static struct eng_main_wait eng_main_wait;

uint32_t
eng_domain_owner(const char *domain, size_t len, uint32_t shard_count)
{
	ENG_ASSERT(domain != NULL || len == 0);
	ENG_ASSERT(shard_count > 0);
	uint32_t hash = 2166136261u;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)domain[i];
		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		hash = (hash ^ c) * 16777619u;
	}
	return hash % shard_count;
}

/* ---- the shard thread ---- */

static void
eng_shard_report(struct eng_shard *shard, int event)
{
	struct eng_node *node = shard->node;
	int32_t value = (int32_t)(shard->index << 8 | (uint32_t)event);
	int ret = ring_prep_msg(shard->ring, NULL, ring_fd(node->control_ring),
				&eng_main_wait.report_op, value);
	ENG_ASSERT(ret == 0);
	/* Submit now: the report must not wait for this loop turn's end. */
	(void)ring_submit(shard->ring);
}

/* From a loop turn of the draining shard: tell the main thread. */
static void
eng_shard_drained(void *ctx)
{
	eng_shard_report(ctx, ENG_REPORT_DRAINED);
}

static void
eng_shard_control(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_shard *shard = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(res == ENG_CONTROL_STOP || res == ENG_CONTROL_RELOAD ||
		   res == ENG_CONTROL_DRAIN);
	if (res == ENG_CONTROL_STOP) {
		shard->stop = true;
		return;
	}
	if (res == ENG_CONTROL_DRAIN) {
		shard->drain = true; /* the loop starts it: it runs the ring */
		return;
	}
	struct eng_node *node = shard->node;
	shard->config = __atomic_load_n(&node->config, __ATOMIC_ACQUIRE);
	/* New TLS certificates for new sessions now, not at the next accept. */
	if (shard->listen != NULL)
		eng_listen_reload(shard->listen);
	atomic_store(&shard->config_generation, atomic_load(&node->config_generation));
	eng_shard_report(shard, ENG_REPORT_RELOADED);
}

/*
 * Recovery hands every live recipient here: count it for its owner and
 * queue it for delivery. XXX: this shard delivers it; the hand-off to the
 * owner shard through the mailbox is the next step (docs/engine.md).
 */
static void
eng_shard_recovered(void *ctx, const struct spool_recovered *rcpt)
{
	struct eng_shard *shard = ctx;
	const struct spool_span *addr = &rcpt->msg->rcpts[rcpt->rcpt_index];
	const uint8_t *at = memchr(addr->data, '@', addr->size);
	size_t offset = at != NULL ? (size_t)(at - addr->data) + 1 : addr->size;
	uint32_t owner = eng_domain_owner((const char *)addr->data + offset, addr->size - offset,
					  shard->node->shard_count);
	atomic_fetch_add(&shard->node->owned_recipients[owner], 1);
	shard->stats.recovered_recipients++;
	eng_deliver_recovered(shard->deliver, rcpt);
}

static void
eng_shard_keep_totals(struct eng_shard *shard)
{
	const struct eng_deliver_stats *ds = eng_deliver_stats_get(shard->deliver);
	shard->stats.delivered = ds->delivered;
	shard->stats.bounced = ds->bounced;
	shard->stats.deferred = ds->deferred;
	shard->stats.dsns_stored = ds->dsns_stored;
}

static void
eng_shard_pin(struct eng_shard *shard)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(shard->cpu, &set);
	/* A failure (a restricted cpuset) leaves the thread unpinned: still
	 * correct, only slower; the start-up line shows the CPU asked for. */
	(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int
eng_shard_open(struct eng_shard *shard)
{
	struct ring_params params = { .sq_entries = 512, .cq_entries = 16384 };
	shard->ring = ring_create(&params, shard->err, sizeof(shard->err));
	if (shard->ring == NULL)
		return -EINVAL;
	atomic_store(&shard->ring_fd, ring_fd(shard->ring));
	ring_op_msg_target_init(&shard->control_op, eng_shard_control, shard);
	ring_mailbox_attach(shard->node->mesh, shard->index, shard->ring);
	/* Before the spool: recovery hands its recipients to delivery. */
	shard->deliver =
		eng_deliver_create(shard->ring, &shard->config, &shard->node->connection_limit,
				   &shard->body_bytes, shard->index, shard->err, sizeof(shard->err));
	if (shard->deliver == NULL)
		return -EIO;
	eng_deliver_attach_mesh(shard->deliver, shard->node->mesh);
	if (eng_deliver_attach_log(shard->deliver, &shard->node->delivery_log, shard->err,
				   sizeof(shard->err)) < 0)
		return -EIO;
	struct spool_config sc;
	eng_config_spool(shard->config, (uint16_t)shard->index, &sc);
	struct spool_recovery_stats rs;
	shard->spool = spool_open(shard->ring, &sc, eng_shard_recovered, shard, &rs, shard->err,
				  sizeof(shard->err));
	if (shard->spool == NULL)
		return -EIO;
	eng_deliver_attach_spool(shard->deliver, shard->spool);
	/* Injection: sockets bound on this thread, served by this ring. */
	shard->listen = eng_listen_create(shard->ring, &shard->config, &shard->node->listen,
					  shard->spool, shard->deliver, shard->index, shard->err,
					  sizeof(shard->err));
	if (shard->listen == NULL)
		return -EIO;
	shard->stats.recovered_messages = rs.messages;
	shard->stats.recovery_ns = rs.duration_ns;
	shard->stats.corrupt_spans = rs.corrupt_spans;
	if (rs.unknown_versions > 0)
		fprintf(stderr,
			"ringmail: shard %u: warning: %llu spool span%s of a record version this "
			"build does not read (written by a newer ringmail?): left to recovery as "
			"damage\n",
			shard->index, (unsigned long long)rs.unknown_versions,
			rs.unknown_versions == 1 ? "" : "s");
	return 0;
}

static void *
eng_shard_main(void *arg)
{
	struct eng_shard *shard = arg;
	eng_shard_pin(shard);
	if (eng_shard_open(shard) < 0) {
		/* The spool's segment preparations complete only on this thread
		 * (SINGLE_ISSUER, DEFER_TASKRUN): close it here, not at node stop. */
		spool_close(shard->spool);
		shard->spool = NULL;
		eng_deliver_destroy(shard->deliver);
		shard->deliver = NULL;
		eng_tls_thread_end();
		atomic_store(&shard->state, ENG_SHARD_FAILED);
		if (shard->ring != NULL)
			eng_shard_report(shard, ENG_REPORT_FAILED);
		else
			atomic_store(&shard->silent_failure, true); /* no ring to report with */
		return NULL;
	}
	atomic_store(&shard->state, ENG_SHARD_RUNNING);
	eng_shard_report(shard, ENG_REPORT_READY);
	for (uint64_t turns = 0; !shard->stop; turns++) {
		ENG_ASSERT(turns < UINT64_MAX); /* unbounded by design: runs until STOP */
		if (shard->drain && !shard->is_draining) {
			shard->is_draining = true;
			/* No new sessions or messages while outcomes travel home:
			 * sessions waiting for a commit get their reply first. */
			eng_listen_stop(shard->listen);
			eng_deliver_drain(shard->deliver, eng_shard_drained, shard);
		}
		if (ring_mailbox_run_once(shard->node->mesh, shard->index, UINT64_MAX) < 0)
			break;
	}
	eng_listen_stop(shard->listen); /* done at DRAIN unless the loop failed; harmless twice */
	eng_listen_destroy(shard->listen);
	shard->listen = NULL;
	eng_deliver_stop(shard->deliver); /* connections closed, outcomes journaled */
	spool_close(shard->spool);	  /* drains commits in flight */
	shard->spool = NULL;
	eng_shard_keep_totals(shard);
	eng_deliver_destroy(shard->deliver);
	shard->deliver = NULL;
	eng_tls_thread_end(); /* this thread's TLS users (listener, delivery) are gone */
	atomic_store(&shard->state, ENG_SHARD_STOPPED);
	eng_shard_report(shard, ENG_REPORT_STOPPED);
	return NULL;
}

/* ---- the main thread ---- */

static void
eng_main_report(struct ring_op *op, int32_t res, uint32_t cqe_flags)
{
	struct eng_main_wait *wait = op->ctx;
	(void)cqe_flags;
	ENG_ASSERT(res >= 0);
	wait->reports++;
	if ((res & 0xff) == ENG_REPORT_FAILED) {
		if (wait->failures++ == 0)
			wait->first_failed = (uint32_t)res >> 8;
	}
}

/* Shards that failed before they had a ring to report with. */
static uint32_t
eng_main_silent_failures(struct eng_node *node)
{
	uint32_t count = 0;
	for (uint32_t i = 0; i < node->shard_count; i++) {
		if (!atomic_load(&node->shards[i].silent_failure))
			continue;
		if (count++ == 0 && eng_main_wait.failures == 0)
			eng_main_wait.first_failed = i;
	}
	return count;
}

/* Run the main ring until `count` reports arrived. A shard without a ring
 * cannot post one, so the wait also looks at those every 100 ms. */
static void
eng_main_wait_reports(struct eng_node *node, uint32_t count)
{
	for (uint64_t turns = 0;; turns++) {
		ENG_ASSERT(turns < UINT64_MAX);
		uint32_t silent = eng_main_silent_failures(node);
		if (eng_main_wait.reports + silent >= count) {
			eng_main_wait.failures += silent;
			return;
		}
		int ret = ring_run_once(node->control_ring, 100ull * 1000ull * 1000ull);
		ENG_ASSERT(ret >= 0 || ret == -EINTR);
	}
}

static int
eng_node_create(struct eng_node *node, struct eng_config *config, char *err, size_t err_size)
{
	memset(node, 0, sizeof(*node));
	node->config = config;
	atomic_store(&node->config_generation, 1);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	node->shard_count = eng_config_shard_count(config, cpus);
	eng_global_limit_init(&node->connection_limit, config->engine.max_connections);
	eng_logfile_shared_init(&node->delivery_log, config->engine.delivery_log,
				config->engine.delivery_log_max_size,
				config->engine.delivery_log_keep);
	if (eng_listen_node_init(&node->listen, config, err, err_size) < 0)
		return -EINVAL;
	ENG_ASSERT(node->shard_count >= 1 && node->shard_count <= ENG_CONFIG_SHARDS_MAX);
	struct ring_params params = { .sq_entries = 64, .cq_entries = 1024 };
	node->control_ring = ring_create(&params, err, err_size);
	if (node->control_ring == NULL)
		return -EINVAL;
	ring_op_msg_target_init(&eng_main_wait.report_op, eng_main_report, &eng_main_wait);
	node->mesh = ring_mailbox_mesh_create(node->shard_count, ENG_MAILBOX_CAPACITY);
	node->shards = calloc(node->shard_count, sizeof(*node->shards));
	if (node->mesh == NULL || node->shards == NULL) {
		snprintf(err, err_size, "out of memory for %u shards", node->shard_count);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < node->shard_count; i++) {
		struct eng_shard *shard = &node->shards[i];
		shard->node = node;
		shard->index = i;
		shard->cpu = (int)(i % (uint32_t)(cpus > 0 ? cpus : 1));
		shard->config = config;
		atomic_store(&shard->ring_fd, -1);
		atomic_store(&shard->config_generation, 1);
	}
	return 0;
}

int
eng_node_start(struct eng_node *node, struct eng_config *config, char *err, size_t err_size)
{
	ENG_ASSERT(node != NULL && config != NULL);
	int ret = eng_node_create(node, config, err, err_size);
	if (ret < 0) {
		eng_node_stop(node);
		return ret;
	}
	uint32_t started = 0;
	for (; started < node->shard_count; started++) {
		struct eng_shard *shard = &node->shards[started];
		if (pthread_create(&shard->thread, NULL, eng_shard_main, shard) != 0) {
			snprintf(err, err_size, "cannot start shard %u: %s", started, strerror(errno));
			break;
		}
		shard->thread_started = true;
	}
	eng_main_wait.reports = 0;
	eng_main_wait_reports(node, started);
	if (started == node->shard_count && eng_main_wait.failures == 0)
		return 0;
	if (eng_main_wait.failures > 0) {
		const struct eng_shard *bad = &node->shards[eng_main_wait.first_failed];
		snprintf(err, err_size, "shard %u: %s", bad->index, bad->err);
	}
	eng_node_stop(node);
	return -EIO;
}

int
eng_node_reload(struct eng_node *node, struct eng_config *config)
{
	ENG_ASSERT(node != NULL && config != NULL);
	ENG_ASSERT(node->config_retired == NULL);
	node->config_retired = node->config;
	eng_listen_node_reload(&node->listen); /* auth_file contents */
	__atomic_store_n(&node->config, config, __ATOMIC_RELEASE);
	atomic_fetch_add(&node->config_generation, 1);
	eng_main_wait.reports = 0;
	for (uint32_t i = 0; i < node->shard_count; i++) {
		int ret = ring_prep_msg(node->control_ring, NULL,
					atomic_load(&node->shards[i].ring_fd),
					&node->shards[i].control_op, ENG_CONTROL_RELOAD);
		ENG_ASSERT(ret == 0);
	}
	eng_main_wait_reports(node, node->shard_count);
	eng_logfile_shared_limits(&node->delivery_log, config->engine.delivery_log_max_size,
				  config->engine.delivery_log_keep);
	/* Every shard now reads the new one: the old one has no reader. */
	eng_config_free(node->config_retired);
	free(node->config_retired);
	node->config_retired = NULL;
	return 0;
}

/* Send control to every running shard and wait for their reports. */
static void
eng_node_control_all(struct eng_node *node, int control)
{
	uint32_t running = 0;
	eng_main_wait.reports = 0;
	for (uint32_t i = 0; i < node->shard_count; i++) {
		struct eng_shard *shard = &node->shards[i];
		if (atomic_load(&shard->state) != ENG_SHARD_RUNNING)
			continue;
		int ret = ring_prep_msg(node->control_ring, NULL, atomic_load(&shard->ring_fd),
					&shard->control_op, control);
		ENG_ASSERT(ret == 0);
		running++;
	}
	eng_main_wait_reports(node, running);
}

/* Two phases: DRAIN everywhere (outcomes travel home while every loop
 * still runs), then STOP. */
static void
eng_node_stop_shards(struct eng_node *node)
{
	eng_node_control_all(node, ENG_CONTROL_DRAIN);
	eng_node_control_all(node, ENG_CONTROL_STOP);
}

/* One line: the outcomes of this run, summed over the shards that ran. */
static void
eng_node_print_totals(const struct eng_node *node)
{
	uint64_t delivered = 0, bounced = 0, deferred = 0, dsns = 0;
	uint32_t stopped = 0;
	for (uint32_t i = 0; node->shards != NULL && i < node->shard_count; i++) {
		const struct eng_shard *shard = &node->shards[i];
		if (atomic_load(&shard->state) != ENG_SHARD_STOPPED)
			continue;
		stopped++;
		delivered += shard->stats.delivered;
		bounced += shard->stats.bounced;
		deferred += shard->stats.deferred;
		dsns += shard->stats.dsns_stored;
	}
	if (stopped == 0)
		return;
	fprintf(stderr,
		"ringmail: delivery totals: delivered %llu, bounced %llu, deferred %llu, DSNs "
		"%llu\n",
		(unsigned long long)delivered, (unsigned long long)bounced,
		(unsigned long long)deferred, (unsigned long long)dsns);
}

void
eng_node_stop(struct eng_node *node)
{
	ENG_ASSERT(node != NULL);
	if (node->shards != NULL && node->control_ring != NULL)
		eng_node_stop_shards(node);
	for (uint32_t i = 0; node->shards != NULL && i < node->shard_count; i++) {
		if (node->shards[i].thread_started)
			pthread_join(node->shards[i].thread, NULL);
	}
	eng_node_print_totals(node);
	/* Rings go only after every thread is gone: no shard can still post a
	 * mailbox wake to a closed ring. */
	for (uint32_t i = 0; node->shards != NULL && i < node->shard_count; i++) {
		spool_close(node->shards[i].spool);
		ring_destroy(node->shards[i].ring);
	}
	free(node->shards);
	if (node->mesh != NULL)
		ring_mailbox_mesh_destroy(node->mesh);
	ring_destroy(node->control_ring);
	eng_listen_node_fini(&node->listen); /* the AUTH worker: every shard is gone */
	if (node->config != NULL) {
		eng_config_free(node->config);
		free(node->config);
	}
	memset(node, 0, sizeof(*node));
}
