/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 node proxy shared by amesh ztunnel (many workloads) and amesh sidecar (one): enrolled
 * workloads, the three listeners each one gets inside its network namespace (outbound capture,
 * inbound plaintext, HBONE), and the decisions between them (DESIGN.md sections 1-6).
 *
 * Bounds: at most PROXY_MAX_WORKLOADS enrolled workloads; [ztunnel] max_connections relayed
 * connections in all (further accepts are closed at once and counted); each relay's buffers are
 * [ztunnel] buffer_size per direction; the HBONE pools and servers have their own limits.
 */
#ifndef AMESH_PROXY_PROXY_H
#define AMESH_PROXY_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"
#include "core/htab.h"
#include "net/netns.h"

#define PROXY_MAX_WORKLOADS 1024
/* The mark every socket the proxy opens inside a workload namespace carries (DESIGN.md 2). */
#define PROXY_MARK 0x539

struct identity_store;
struct metrics;
struct waypoint;
struct hbone_server;
struct hbone_pool;
struct proxy;
struct lb;

/* One enrolled workload: its namespace and its listeners there. */
struct pworkload {
	struct proxy *px;
	char *name, *netns_path;
	int nsfd;
	struct netns_id nsid; /* which namespace nsfd is (zero for NETNS_SELF) */
	char *ns, *sa; /* from the registry when enrolled */
	/* Per address family (0: IPv4, 1: IPv6), for the families the workload has addresses in. */
	uv_tcp_t outbound_l[2], inbound_l[2];
	bool has_outbound[2], has_inbound[2];
	struct hbone_server *hbone_s[2];
	struct hbone_pool *pool;
	struct identity *id; /* the identity the HBONE server presents now */
	int open_handles;    /* parts still holding the workload: handles, servers, pool, flows */
	bool closing;
	uint64_t connections;
	/* A sidecar's L7 engine for this workload (proxy.l7), and its place in proxy.l7_ws. */
	struct waypoint *l7;
	struct pworkload *l7_prev, *l7_next;
	struct pworkload *prev, *next;
};

/*
 * A workload recorded for this proxy (a state_dir record) that it could not serve: no certificate,
 * not in the registry, a listener that failed. Its namespace keeps its rules, so its traffic is
 * refused, never sent around the mesh; readiness says not ready while any is left. enroll.c
 * retries them; a successful enrollment or a DEL of the workload ends the entry.
 */
struct pfailed {
	char *name, *netns_path;
	char why[256];
	struct netns_id nsid; /* its namespace when the failure was seen (zero: unknown) */
	struct pfailed *next;
};

struct flow;

struct proxy_stats {
	uint64_t accepted, refused_limit, outbound_hbone, outbound_passthrough, inbound_hbone,
	    inbound_plaintext, denied, connect_failures;
	uint64_t inbound_l7, outbound_l7; /* sidecar: connections given to its L7 engine */
	size_t active;
};

struct proxy {
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	const struct conf_proxy *pc; /* [ztunnel] or [sidecar] ports and limits */
	const char *role;            /* "ztunnel" or "sidecar", for logs and metrics */
	struct registry_holder *reg;
	struct identity_store *ids;
	struct metrics *metrics;
	struct pworkload *workloads;
	size_t nworkloads;
	struct pfailed *failed; /* recorded workloads not served (at most PROXY_MAX_WORKLOADS) */
	size_t nfailed;
	bool draining;
	struct proxy_stats st;
	struct lb *lb; /* services' endpoints: round robin, failure penalty (net/lb.h) */
	uv_timer_t refresh; /* picks up rotated certificates for the HBONE servers */
	uv_timer_t drain_timer;
	void (*on_drained)(struct proxy *px);
	size_t alive;        /* workloads not yet freed (enrolled or shutting down) */
	int timers_open;
	struct flow *flows;  /* relayed connections, for drain */
	/* Sidecar: HTTP inbound (authz, request metrics) and outbound to services with routes go
	 * through an L7 engine per workload (src/l7); its tunnels count towards max_connections. */
	bool l7;
	struct pworkload *l7_ws;
	size_t l7_active;
};

int proxy_init(struct proxy *px, uv_loop_t *loop, const struct amesh_conf *conf,
    const struct conf_proxy *pc, const char *role, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics);

/*
 * Enrolls workload name (from the current registry; it must be on this node and speak HBONE) in
 * the namespace nsfd (taken over; path is what to record). Opens its listeners there. Changes
 * nothing and returns AMESH_ERR_EXISTS when the namespace is another workload's (enrolled or
 * failed), or when the workload is enrolled in another namespace that its path still names.
 * Enrolling a workload again in its own namespace is a no-op (0). A workload whose old namespace
 * is gone moves: the new listeners open first, the old ones close only once they did. Success
 * ends the workload's pfailed entry. Returns 0 or a negative code with a reason in why.
 */
int proxy_enroll(struct proxy *px, const char *name, int nsfd, const char *path, char *why,
    size_t whylen);
/* Records (or updates) name as failed with why; nsid may be NULL. Returns true when this is news
 * (a new entry or another reason), for logging once. */
bool proxy_fail(struct proxy *px, const char *name, const char *path, const struct netns_id *nsid,
    const char *why);
/* Ends name's pfailed entry, if any. */
void proxy_unfail(struct proxy *px, const char *name);
struct pfailed *proxy_find_failed(struct proxy *px, const char *name);
/* Closes the workload's listeners and forgets it. Returns 0, or AMESH_ERR_NOTFOUND. */
int proxy_unenroll(struct proxy *px, const char *name);
struct pworkload *proxy_find(struct proxy *px, const char *name);
/* Frees what the proxy itself holds, after a drain completed and the loop ran. */
void proxy_free(struct proxy *px);
/* Stops accepting everywhere, drains HBONE (GOAWAY) and relays up to timeout_ms; then done. */
void proxy_drain(struct proxy *px, uint64_t timeout_ms, void (*done)(struct proxy *px));

/* flows.c: the listeners' accept callbacks. */
void proxy_on_outbound(uv_stream_t *l, int status);
void proxy_on_inbound_plain(uv_stream_t *l, int status);
struct hbone_request;
struct hbone_stream;
void proxy_on_hbone_request(struct hbone_server *srv, struct hbone_stream *s,
    const struct hbone_request *req);

#endif
