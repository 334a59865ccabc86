/*
 * eng_listen.h - the ESMTP injection listener of one shard (issue 4).
 *
 * Every shard opens one socket per [listener NAME] with SO_REUSEPORT, so
 * the kernel spreads connections over the shards, and serves it on its own
 * ring: accept (re-armed after each completion), recv and send are ring
 * ops. The protocol is smtp/smtp_server.h (a pure session: bytes in,
 * events and reply bytes out); this file owns the sockets, the buffers,
 * the limits, the timers and the spool append.
 *
 * The promise: the 250 after the final dot (or the last BDAT) carries the
 * queue id and is sent only from the spool append callback with result 0,
 * that is once the group commit covering the record is durable. A failed
 * append answers 451 4.3.0. A spool that is unhealthy or below its
 * free-space reserve refuses new connections with 421 4.3.1 and MAIL with
 * 452 4.3.1; both recover by themselves when the condition clears.
 *
 * Queue id: spool_queue_id_format() of the record's location: 2 hex digits
 * of shard, 16 of segment id, 8 of offset (26 characters, stable,
 * docs/spool-format.md), the same text `ringmail-spool ls` prints.
 *
 * Records: the message in wire form (dot-stuffed, CRLF.CRLF terminated),
 * with a Received: trace header (RFC 5321 4.4) prepended:
 *   Received: from HELO ([IP])
 *   	by HOSTNAME (ringmail) with ESMTP id SS.N
 *   	for <rcpt>; DATE                  ("for" only with one recipient)
 * (ESMTPA after AUTH, SMTP after HELO, ESMTPS/ESMTPSA under TLS with a
 * "(using TLSv1.3 with cipher ...)" comment after the from clause). The
 * trace id is the queue id, as in the 250 reply and the delivery log: it
 * is not known before the spool places the record, so the header holds a
 * placeholder of its width, filled in by the spool's place hook
 * (spool_set_message_place_hook) once the record has its location and
 * before it is encoded. HELO text is reduced to printable ASCII without
 * parentheses, so it can neither break the comment nor start a field.
 *
 * AUTH: the password hash runs on the node's AUTH worker thread
 * (eng_auth_worker.h), never on the shard: the session waits for the
 * answer (the connection keeps a copy of the credentials in its job), the
 * shard's other sessions go on; the answer comes back through the
 * worker's eventfd for this shard, polled by the ring. A full worker
 * queue answers 454 4.7.0. A failed AUTH is answered after a delay that
 * doubles with each failure of the session (0.5 s to 4 s).
 *
 * Limits: connections per shard come from a pool sized at create (the
 * largest max_connections, capped by ENG_LISTEN_CONNS_MAX); max_connections
 * (total) and max_connections_per_ip are node-wide, counted in struct
 * eng_listen_node (atomics, owned by eng_node). Over a cap the client gets
 * "421 4.7.0 Too many connections" and is closed. Per-phase timeouts
 * (command_timeout, data_timeout) and the whole-session deadline
 * (session_deadline) are checked by one sweep timer per shard each second:
 * the client gets 421 4.4.2 and is closed (slowloris).
 *
 * STARTTLS (RFC 3207, issue 7): a listener with tls_certificate and
 * tls_key offers it; AUTH is offered only under TLS or to a loopback
 * client; require_tls answers 530 before it; commands pipelined behind
 * STARTTLS are dropped (CVE-2011-0411). The Received: header then says
 * ESMTPS (ESMTPSA after AUTH, RFC 3848) and "(using VERSION with cipher
 * CIPHER)". See eng_listen.c for the I/O path and docs/tls.md.
 *
 * Ownership: the listener belongs to one shard thread and borrows its
 * ring, spool, delivery state and config pointer (read on every new
 * connection, so a reload applies to new sessions). The node-wide counters
 * are shared; only atomics are touched across threads. The AUTH worker
 * belongs to the node (struct eng_listen_node); a connection's job is
 * lent to it from submit until the shard takes the answer back.
 */
#ifndef ENG_LISTEN_H
#define ENG_LISTEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng_common.h"
#include "eng_config.h"
#include "eng_limit.h"
#include "ring/ring.h"
#include "spool/spool.h"

struct eng_auth_worker;
struct eng_deliver;
struct eng_listen;

/* Connections one shard serves at once, over all its listeners. */
#define ENG_LISTEN_CONNS_MAX 4096u
/* Buckets of the node-wide per-IP counters (a power of two). Two clients
 * sharing a bucket share its count: the cap is then stricter, never
 * looser. */
#define ENG_LISTEN_IP_BUCKETS 4096u
_Static_assert((ENG_LISTEN_IP_BUCKETS & (ENG_LISTEN_IP_BUCKETS - 1u)) == 0,
	       "IP buckets are a power of two");

/* Per listener, node-wide: the limits and the statistics. */
struct eng_listen_counters {
	struct eng_global_limit total;	/* max_connections */
	_Atomic uint32_t per_ip[ENG_LISTEN_IP_BUCKETS];
	_Atomic uint64_t accepted;	/* connections served */
	_Atomic uint64_t refused;	/* closed at connect: caps, spool */
	_Atomic uint64_t messages;	/* acknowledged with 250 */
	_Atomic uint64_t bytes;		/* of those messages, as stored */
	_Atomic uint64_t rejected;	/* transactions refused or failed */
};

/* Owned by the node: one entry per configured listener. */
struct eng_listen_node {
	uint32_t count;
	struct eng_listen_counters listeners[ENG_CONFIG_LISTENERS_MAX];
	/* AUTH checks for every shard (eng_auth_worker.h); NULL without any
	 * auth_file. */
	struct eng_auth_worker *auth;
};

/* Zero the counters, set the total caps from config, load the auth_files
 * and start the AUTH worker. Before the shards start. Returns 0, or
 * -errno with one line in err (a missing or malformed auth_file: "listener
 * main: auth.txt:3: expected user:hash ..."). */
int eng_listen_node_init(struct eng_listen_node *node, const struct eng_config *config,
			 char *err, size_t err_size) ENG_WARN_UNUSED;
/* After every shard stopped: stop the AUTH worker. Safe on a zeroed node. */
void eng_listen_node_fini(struct eng_listen_node *node);
/* SIGHUP (main thread): read the auth_files again; a bad one keeps the
 * previous table, with one line on stderr. */
void eng_listen_node_reload(struct eng_listen_node *node);

/*
 * Open the shard's listening sockets (bind on this thread) and arm their
 * accepts. spool must be open. Returns NULL with one line in err
 * ("listener default: cannot bind 127.0.0.1:2525: Address in use").
 */
struct eng_listen *eng_listen_create(struct ring *ring, const struct eng_config *const *config,
				     struct eng_listen_node *node, struct spool *spool,
				     struct eng_deliver *deliver, uint32_t shard_index, char *err,
				     size_t err_size);

/*
 * Stop: close the listening sockets, close every connection (a session
 * waiting for its commit gets it first: bounded), and run the ring until
 * every op of the listener completed. Call before eng_deliver_stop and
 * spool_close. Then eng_listen_destroy. NULL is fine.
 */
void eng_listen_stop(struct eng_listen *listen);
void eng_listen_destroy(struct eng_listen *listen);

/*
 * The shard's configuration pointer changed (SIGHUP): make the listeners'
 * TLS server contexts again from tls_certificate/tls_key (files read
 * again; sessions already running keep theirs) and adopt require_tls. A
 * certificate that cannot be loaded keeps the previous context, with one
 * line on stderr. Called on the shard's thread; cheap when nothing changed
 * (a pointer comparison). The listener also calls it at every accept and
 * every sweep (1 s), so calling it from the shard's reload handler only
 * makes it immediate.
 */
void eng_listen_reload(struct eng_listen *listen);

/* Connections open on this shard now. */
uint32_t eng_listen_connections(const struct eng_listen *listen);

#endif /* ENG_LISTEN_H */
