/*
 * bench_net.h - small network and text helpers shared by the bench/ SMTP
 * tools (ringmail-sink, ringmail-blast): IPv4 "A.B.C.D:PORT" addresses,
 * listening sockets (SO_REUSEPORT for one listener per thread), counters
 * written by one thread and read by another, case-insensitive prefix
 * matching over (ptr, len) peer bytes, and JSON string output.
 *
 * Peer bytes are always (ptr, len), never NUL-terminated (style.md 4).
 * Ownership: every function borrows its arguments until it returns.
 */
#ifndef BENCH_NET_H
#define BENCH_NET_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* "A.B.C.D:PORT" (port 0 allowed: the kernel picks one). Returns 0 or
 * -EINVAL. */
int bench_addr_parse(const char *text, struct sockaddr_in *out) __attribute__((warn_unused_result));

/* "A.B.C.D:PORT" into buf (always NUL-terminated). */
void bench_addr_text(const struct sockaddr_in *addr, char *buf, size_t buf_size);

/* A listening TCP socket on addr (SO_REUSEADDR, SO_REUSEPORT when
 * is_reuseport). When addr's port is 0 the chosen port is written back.
 * Returns the fd or -errno. */
int bench_listen_open(struct sockaddr_in *addr, bool is_reuseport, int backlog)
	__attribute__((warn_unused_result));

/* A counter with one writer thread and any number of readers: a relaxed
 * load and store (no locked instruction on the hot path). */
static inline void
bench_counter_add(_Atomic uint64_t *counter, uint64_t value)
{
	uint64_t old = atomic_load_explicit(counter, memory_order_relaxed);
	atomic_store_explicit(counter, old + value, memory_order_relaxed);
}

static inline uint64_t
bench_counter_get(_Atomic uint64_t *counter)
{
	return atomic_load_explicit(counter, memory_order_relaxed);
}

/* True when (ptr, len) starts with prefix, ASCII case-insensitively. */
bool bench_has_prefix_nocase(const uint8_t *ptr, size_t len, const char *prefix);

/* Write (ptr, len) as a JSON string, quotes included; control bytes,
 * quotes and backslashes escaped, bytes >= 0x80 written as '?'. */
void bench_json_string(FILE *out, const char *ptr, size_t len);

#endif /* BENCH_NET_H */
