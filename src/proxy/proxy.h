/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 node proxy shared by amesh ztunnel (many workloads) and amesh sidecar (one): it serves
 * enrolled workloads, each inside its own network namespace (outbound capture, inbound plaintext,
 * HBONE), decides and relays their connections (DESIGN.md sections 1-6), remembers the recorded
 * workloads it could not serve, follows certificate rotation and drains on request. How it keeps
 * them is its own business: callers see the functions and the views below.
 *
 * Bounds: at most PROXY_MAX_WORKLOADS enrolled workloads, and as many failed ones; [ztunnel]
 * max_connections relayed connections in all (further accepts are closed at once and counted);
 * each relay's buffers are [ztunnel] buffer_size per direction; the HBONE pools and servers have
 * their own limits.
 *
 * Threads: every function on the loop thread that proxy_new was given (worker 0). With
 * proxy_cfg.workers > 1 the proxy runs on that many loops (core/worker.h): worker 0 keeps the
 * listeners and hands connections round robin to the others, each with its own flows, pools and
 * HBONE servers; the functions here fan out to them and sum what they count.
 */
#ifndef AMESH_PROXY_PROXY_H
#define AMESH_PROXY_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"
#include "hbone/hbone.h"
#include "net/netns.h"

#define PROXY_MAX_WORKLOADS 1024

struct identity_store;
struct metrics;
struct waypoint;
struct proxy;
struct pworkload; /* an enrolled workload: a handle, compared, never looked into */

struct proxy_cfg {
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	const struct conf_proxy *pc; /* [ztunnel] or [sidecar] ports and limits */
	const char *role;            /* "ztunnel" or "sidecar", for logs */
	struct registry_holder *reg;
	struct identity_store *ids;
	struct metrics *metrics; /* where flows are counted (may be NULL) */
	/* The DNS proxy: each workload gets its listeners on [ztunnel|sidecar] dns_port (NULL:
	 * none). Must outlive the proxy's drain. */
	struct dns_server *dns;
	/* Sidecar: HTTP inbound (authz, request metrics) and outbound to services with routes go
	 * through an L7 engine per workload (src/l7); its tunnels count towards max_connections. */
	bool l7;
	/* Event loops serving the workloads (0 or 1: the given loop alone; capped at WORKER_MAX);
	 * an L7 engine runs on one. max_connections is shared out equally between them. */
	unsigned workers;
};

/* An enrolled workload as it is now; the strings are valid until the proxy changes. */
struct proxy_workload_view {
	const char *name, *netns_path;
	const char *spiffe_id;        /* the identity it presents now */
	uint64_t connections;         /* relayed since enrolled */
	struct hbone_pool_stats pool; /* its outbound HBONE pool */
	const struct waypoint *l7;    /* a sidecar's L7 engine for it, else NULL */
};

/* A workload recorded for this proxy (a state_dir record) that it could not serve: no certificate,
 * not in the registry, a listener that failed. Its namespace keeps its rules, so its traffic is
 * refused, never sent around the mesh. The strings are valid until the proxy changes. */
struct proxy_failed_view {
	const char *name, *netns_path;
	const char *why;
	struct netns_id nsid; /* its namespace when the failure was seen (zero: unknown) */
};

struct proxy_stats {
	uint64_t accepted, refused_limit, outbound_hbone, outbound_passthrough, inbound_hbone,
	    inbound_plaintext, denied, connect_failures;
	uint64_t inbound_l7, outbound_l7; /* sidecar: connections given to its L7 engine */
	uint64_t outbound_external, outbound_blackhole; /* external services; refused unknown */
	uint64_t waypoint_failovers; /* CONNECTs moved to another instance of a waypoint */
	size_t active;                    /* relayed connections open now */
	size_t workloads, failed;         /* enrolled; recorded but not served */
	bool draining;
};

/* A proxy serving nothing yet; cfg is copied, what it points to must outlive the proxy. Starts the
 * certificate refresh timer. Aborts when out of memory (startup). */
struct proxy *proxy_new(const struct proxy_cfg *cfg);
/* Frees the proxy after proxy_drain's done and the loop ran; stops its worker threads. Accepts
 * NULL. */
void proxy_free(struct proxy *px);

/*
 * Enrolls workload name (from the current registry; it must be on this node and speak HBONE) in
 * the namespace nsfd (taken over; path is what to record). Opens its listeners there. Changes
 * nothing and returns AMESH_ERR_EXISTS when the namespace is another workload's (enrolled or
 * failed), or when the workload is enrolled in another namespace that its path still names.
 * Enrolling a workload again in its own namespace is a no-op (0). A workload whose old namespace
 * is gone moves: the new listeners open first, the old ones close only once they did. Success
 * ends the workload's failed entry. Returns 0 or a negative code with a reason in why.
 */
int proxy_enroll(struct proxy *px, const char *name, int nsfd, const char *path, char *why,
    size_t whylen);
/* Closes the workload's listeners and forgets it. Returns 0, or AMESH_ERR_NOTFOUND. */
int proxy_unenroll(struct proxy *px, const char *name);
/* The enrolled workload name, or NULL. A new enrollment (or a move) is another handle. */
const struct pworkload *proxy_find(struct proxy *px, const char *name);
/* The namespace path w is served in (valid while it is enrolled). */
const char *proxy_workload_netns(const struct pworkload *w);
/* Calls fn for each enrolled workload, newest first; fn must not change the proxy. */
void proxy_foreach_workload(struct proxy *px,
    void (*fn)(const struct proxy_workload_view *v, void *arg), void *arg);

/* Records (or updates) name as failed with why; nsid may be NULL. Returns true when this is news
 * (a new entry or another reason), for logging once. Past PROXY_MAX_WORKLOADS entries a new one is
 * not kept (false): its record stays on disk for the next start. */
bool proxy_fail(struct proxy *px, const char *name, const char *path, const struct netns_id *nsid,
    const char *why);
/* Ends name's failed entry, if any. */
void proxy_unfail(struct proxy *px, const char *name);
/* Whether name has a failed entry; if so and out is not NULL, fills it in. */
bool proxy_find_failed(struct proxy *px, const char *name, struct proxy_failed_view *out);
/* Calls fn for each failed entry, newest first; fn must not change the proxy. */
void proxy_foreach_failed(struct proxy *px,
    void (*fn)(const struct proxy_failed_view *v, void *arg), void *arg);

/* A new reference to the registry snapshot in force (NULL before the first load). */
struct registry *proxy_registry(struct proxy *px);

size_t proxy_nworkloads(const struct proxy *px);
size_t proxy_nfailed(const struct proxy *px);
void proxy_get_stats(const struct proxy *px, struct proxy_stats *out);

/* Stops accepting everywhere, drains HBONE (GOAWAY) and relays up to timeout_ms, resets what is
 * left then; done(arg) once everything is closed. A second call does nothing. */
void proxy_drain(struct proxy *px, uint64_t timeout_ms, void (*done)(void *arg), void *arg);

#endif
