/*
 * eng_node.h - the daemon's shape: one pinned thread per shard, each with
 * its own ring and its own spool, joined by the ring/ mailbox mesh.
 *
 * Start-up (eng_node_start): every shard thread pins itself, creates its
 * ring (SINGLE_ISSUER binds it to that thread), opens and recovers its
 * spool, and reports ready or a one-line error. Recovered recipients are
 * counted by the shard that owns their domain (eng_domain_owner), which is
 * where delivery runs: the writer shard hands each job to its owner
 * through the mailbox mesh and journals the outcomes that come back
 * (eng_deliver.h).
 *
 * Control: the main thread owns a small ring of its own and talks to the
 * shards only with IORING_OP_MSG_RING CQEs posted to each shard's control
 * op: DRAIN (eng_deliver_drain: no new work, transactions finish within
 * the grace period, every outcome travels back to its writer shard and is
 * journaled; the shard reports DRAINED and keeps its loop running for the
 * others), STOP, sent only once every shard reported DRAINED so no outcome
 * is left in a mailbox (close the spool, leave the loop), and RELOAD
 * (adopt the configuration published in node->config; the old one is freed
 * by the main thread once every shard has acknowledged the new one, so no
 * shard ever reads freed memory and no lock is taken on the hot path).
 *
 * Ownership: the node owns the shards, the mesh and the configurations.
 */
#ifndef ENG_NODE_H
#define ENG_NODE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng_config.h"
#include "eng_limit.h"
#include "eng_logfile.h"
#include "eng_listen.h"
#include "ring/ring.h"
#include "spool/spool.h"

struct ring_mailbox_mesh;
struct eng_node;
struct eng_deliver;

enum eng_shard_state {
	ENG_SHARD_STARTING = 0,
	ENG_SHARD_RUNNING,
	ENG_SHARD_FAILED,
	ENG_SHARD_STOPPED,
};

enum eng_control {
	ENG_CONTROL_STOP = 1,
	ENG_CONTROL_RELOAD = 2,
	ENG_CONTROL_DRAIN = 3,
};

struct eng_shard_stats {
	uint64_t recovered_recipients;	/* found live in this shard's spool */
	uint64_t owned_recipients;	/* recovered anywhere, owned here */
	uint64_t recovered_messages;
	uint64_t recovery_ns;
	uint64_t corrupt_spans;
	/* Outcomes decided by this shard's delivery, copied at stop. */
	uint64_t delivered;
	uint64_t bounced;
	uint64_t deferred;
	uint64_t dsns_stored;
};

struct eng_shard {
	struct eng_node *node;
	uint32_t index;
	int cpu;
	pthread_t thread;
	bool thread_started;
	struct ring *ring;
	struct spool *spool;
	struct eng_deliver *deliver; /* this shard's delivery loop */
	/* Bytes of message bodies charged to this shard (eng_deliver): here,
	 * not in eng_deliver, because another shard may free a body charged
	 * to it after this shard's eng_deliver is destroyed. */
	_Atomic uint64_t body_bytes;
	struct eng_listen *listen;   /* this shard's injection sockets (eng_listen.h) */
	struct ring_op control_op;
	_Atomic int state; /* enum eng_shard_state */
	_Atomic int ring_fd;
	_Atomic bool silent_failure; /* failed before its ring existed */
	bool stop;
	bool drain;	   /* DRAIN received: the loop starts eng_deliver_drain */
	bool is_draining;
	const struct eng_config *config; /* adopted by this shard */
	_Atomic uint64_t config_generation;
	struct eng_shard_stats stats;
	char err[ENG_CONFIG_ERROR_SIZE];
};

struct eng_node {
	struct eng_config *config;	  /* published; read by shards on RELOAD */
	_Atomic uint64_t config_generation;
	struct eng_config *config_retired; /* freed once every shard adopted */
	uint32_t shard_count;
	struct eng_shard *shards;
	struct ring_mailbox_mesh *mesh;
	struct ring *control_ring;	  /* main thread only */
	struct eng_global_limit connection_limit; /* [engine] max_connections, node-wide */
	struct eng_logfile_shared delivery_log;	  /* one file for every shard */
	_Atomic uint64_t owned_recipients[ENG_CONFIG_SHARDS_MAX];
	struct eng_listen_node listen; /* listener caps and stats, node-wide */
};

/* Which shard owns a destination domain: FNV-1a of the lowercased name. */
uint32_t eng_domain_owner(const char *domain, size_t len, uint32_t shard_count);

/*
 * Start every shard on config (which the node takes over). Blocks until
 * all are running or one failed. Returns 0, or -errno with one line in err
 * (the failing shard's message); on failure everything started is stopped.
 */
int eng_node_start(struct eng_node *node, struct eng_config *config, char *err, size_t err_size)
	__attribute__((warn_unused_result));

/* Publish a new configuration (the node takes it over) and wait until every
 * shard adopted it; the previous one is freed. */
int eng_node_reload(struct eng_node *node, struct eng_config *config);

/* STOP every shard, join the threads, free everything. */
void eng_node_stop(struct eng_node *node);

#endif /* ENG_NODE_H */
