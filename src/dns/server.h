/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DNS proxy (port 15053, DESIGN.md section 2): one server per ztunnel or sidecar, one
 * listener per workload namespace it serves. A query is answered from the registry snapshot in
 * force (dns/msg.h) or forwarded to the upstream resolvers ([dns] upstream, else resolv_conf's
 * nameservers) from sockets the caller opens (inside the workload's namespace, marked; over UDP
 * one per listener and upstream, kept open: see struct upsock), with a fresh random ID, the
 * client's EDNS0 passed through, over TCP again when a UDP answer comes back truncated, and a
 * SERVFAIL when no upstream answered within [dns] timeout.
 *
 * Bounds: [dns] max_inflight forwarded queries at once per server (past that: SERVFAIL, counted);
 * DNS_MAX_TCP_CLIENTS TCP connections per listener, each with one query in flight, a buffer of
 * one message (64 KiB) and an idle timeout of DNS_TCP_IDLE_MS.
 *
 * Metrics (amesh-ztunnel(8)): amesh_dns_queries_total{type}, amesh_dns_responses_total{result},
 * amesh_dns_upstream_failures_total, amesh_dns_forward_duration_milliseconds_bucket{le} with _count
 * and _sum (cumulative, as a Prometheus histogram), amesh_dns_inflight.
 *
 * Threads: the loop thread only.
 */
#ifndef AMESH_DNS_SERVER_H
#define AMESH_DNS_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"

#define DNS_MAX_TCP_CLIENTS 64
#define DNS_TCP_IDLE_MS 10000

struct dns_server;
struct dns_listener;
struct metrics;

struct dns_server_cfg {
	uv_loop_t *loop;
	const struct amesh_conf *conf; /* [dns]; must outlive the server */
	struct registry_holder *reg;
	struct metrics *metrics; /* may be NULL */
};

/* A server with its upstreams resolved (none is not an error: forwarded queries then get
 * SERVFAIL, and a warning is logged). Aborts when out of memory (startup). */
struct dns_server *dns_server_new(const struct dns_server_cfg *cfg);
/* Frees the server once every listener is closed. Accepts NULL. */
void dns_server_free(struct dns_server *s);
/* How many upstreams it forwards to, and the i-th. */
size_t dns_server_upstreams(const struct dns_server *s);
const struct sockaddr_storage *dns_server_upstream(const struct dns_server *s, size_t i);

struct dns_listener_cfg {
	const char *name; /* for logs: the workload */
	const char *ns;   /* the workload's namespace: its short names */
	/* Bound sockets, taken over (-1: none): UDP, and TCP listening, per family (0 IPv4, 1 IPv6). */
	int udp_fd[2], tcp_fd[2];
	/* Opens a socket for an upstream query (type SOCK_DGRAM or SOCK_STREAM, non-blocking),
	 * in the workload's namespace and marked. Returns an fd or a negative code. */
	int (*socket_fn)(void *arg, int family, int type);
	void *arg;
	/* Called once, after dns_listener_stop, when everything it had is closed. */
	void (*on_closed)(void *arg);
};

/* Starts serving on the given sockets. Returns 0 or a negative code; the sockets are closed on
 * failure (on_closed is not called then). */
int dns_listen(struct dns_server *s, const struct dns_listener_cfg *c, struct dns_listener **out);
/* Closes its sockets and drops its queries in flight; on_closed(arg) once all is closed. */
void dns_listener_stop(struct dns_listener *l);

#endif
