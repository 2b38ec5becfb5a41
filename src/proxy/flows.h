/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to src/proxy: the relayed connections of every enrolled workload (flows.c). The
 * workloads' listeners and HBONE servers are handed the accept callbacks below with the workload
 * as their data (its fl says where its flows go). Below proxy.c, above workload.c: it calls the
 * proxy only through the on_idle callback it was handed.
 *
 * Bounds: [ztunnel] max_connections flows and L7 tunnels together; past it (or once
 * flows_stop_accepting ran) a connection is reset and an HBONE request answered 503.
 */
#ifndef AMESH_PROXY_FLOWS_H
#define AMESH_PROXY_FLOWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"

struct flows;
struct hbone_request;
struct hbone_server;
struct hbone_stream;
struct identity_store;
struct metrics;
struct pworkload;

struct flows_cfg {
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	const struct conf_proxy *pc; /* ports, limits, buffer and timeouts */
	struct registry_holder *reg;
	struct identity_store *ids;
	struct metrics *metrics; /* may be NULL */
	/* Called when the last flow has ended (a drain may be over). */
	void (*on_idle)(void *arg);
	void *arg;
	/* Another worker's flows whose balancer (outlier state, connection pool counts) and
	 * external-name cache these share, so that limits and TTLs hold for the whole proxy; NULL:
	 * their own. */
	struct flows *share;
};

/* What the flows counted since start (proxy.h's proxy_stats has the same meanings). */
struct flow_counters {
	uint64_t accepted, refused_limit, outbound_hbone, outbound_passthrough, inbound_hbone,
	    inbound_plaintext, denied, connect_failures, inbound_l7, outbound_l7;
	uint64_t outbound_external;  /* to external services (also counted in neither of the above) */
	uint64_t outbound_blackhole; /* refused: not in the registry, outbound = registry_only */
	uint64_t waypoint_failovers; /* CONNECTs moved to another waypoint instance */
	size_t active; /* flows open now */
};

/* cfg is copied; what it points to must outlive the flows. Aborts when out of memory (startup). */
struct flows *flows_new(const struct flows_cfg *cfg);
/* Once every flow has ended. Accepts NULL. */
void flows_free(struct flows *fl);
/* From now on every new connection and HBONE request is refused (drain). */
void flows_stop_accepting(struct flows *fl);
/* Resets every flow now (drain timeout); each ends through the relay's close. */
void flows_abort_all(struct flows *fl);
/* No flow is open. */
bool flows_idle(const struct flows *fl);
void flows_counters(const struct flows *fl, struct flow_counters *out);

/* The accept callbacks of a workload's outbound (15001) and plaintext inbound (15006) listeners
 * and its HBONE server (15008); the handle's data, or the server's user, is the pworkload. */
void flows_on_outbound(uv_stream_t *l, int status);
void flows_on_inbound_plain(uv_stream_t *l, int status);
void flows_on_hbone_request(struct hbone_server *srv, struct hbone_stream *s,
    const struct hbone_request *req);
/* The same for a connection another worker accepted (fd, taken over: closed on failure); w is
 * this worker's proxy's workload (core/worker.h). */
void flows_adopt_outbound(struct pworkload *w, int fd);
void flows_adopt_inbound_plain(struct pworkload *w, int fd);
/* The sidecar's L7 engine ended a tunnel it was given (l7_host tun_gone; arg: the pworkload). */
void flows_on_l7_tun_gone(void *arg);

#endif
