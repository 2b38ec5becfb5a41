/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh-registry(5): the mesh's nodes, workloads, services, waypoints, policies and routes, read
 * from the registry.d directory (*.conf), validated whole, and published as an immutable, reference-counted
 * snapshot with O(1) lookups. A reload builds a new snapshot; readers keep the one they hold.
 */
#ifndef AMESH_CONFIG_REGISTRY_H
#define AMESH_CONFIG_REGISTRY_H

#include <pthread.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/kw.h"
#include "core/diag.h"
#include "core/htab.h"

enum reg_kind {
	REG_NODE, REG_WORKLOAD, REG_SERVICE, REG_WAYPOINT, REG_POLICY, REG_ROUTE, REG_NAMESPACE,
	REG_NKINDS
};
enum reg_protocol { REG_PROTO_HBONE, REG_PROTO_TCP };
enum reg_mtls { REG_MTLS_STRICT, REG_MTLS_PERMISSIVE };
enum reg_action { REG_ALLOW, REG_DENY };

/* Where an entry came from: its header line and the line of each key (by its table index). */
struct reg_head {
	const char *file;
	int line;
	int *keyline;
	char *name;
};

struct reg_node {
	struct reg_head h;
	struct ip_addr address;
};

/*
 * A waypoint: one identity served by one or more instances, one address each (on one or more
 * nodes). Callers spread their tunnels over the addresses (net/lb.h) and move to another on a
 * connect failure.
 */
struct reg_waypoint {
	struct reg_head h;
	char *namespace, *service_account;
	struct ip_list addresses; /* at least one, at most REG_WP_MAX_ADDRESSES */
	struct str_list nodes;    /* the nodes its instances run on (key node); may be empty */
	/* Namespaces besides its own whose services and workloads may use it (patterns). */
	struct str_list allowed_namespaces;
};

/* A waypoint has at most this many addresses (instances). */
#define REG_WP_MAX_ADDRESSES 64

struct reg_workload {
	struct reg_head h;
	char *namespace, *service_account, *node, *waypoint;
	struct ip_list addresses;
	struct label_list labels;
	int protocol; /* enum reg_protocol */
	int mtls_mode; /* enum reg_mtls */
	const struct reg_node *node_p;
	/* The waypoint in force: its own waypoint key, else its namespace's; NULL: none (or
	 * waypoint = none). */
	const struct reg_waypoint *waypoint_p;
};

struct reg_service {
	struct reg_head h;
	char *namespace, *hostname, *waypoint;
	struct ip_list vips;
	struct portmap_list ports;
	struct label_list selector;
	bool vip_auto; /* no vip key: vips are one of REG_AUTO_VIP4 and one of REG_AUTO_VIP6 */
	/* External: a destination outside the mesh under hostname, reached by the caller's ztunnel
	 * from its host at addresses (or hostname resolved then), for the callers from.* allow
	 * (none set: every caller). */
	bool external;
	struct ip_list addresses;
	struct str_list from_principals, from_namespaces;
	/* Outlier detection and connection pool limits, Istio DestinationRule's trafficPolicy
	 * (net/lb.h): consecutive errors that eject an endpoint (0: not counted), the ejection time
	 * (ms) and its cap, the share of endpoints that may be out; requests and connections to
	 * the service at once from one proxy (0: unlimited). */
	uint64_t od_5xx, od_gateway, od_base_ejection, od_max_ejection, od_max_percent;
	uint64_t cp_max_connections, cp_max_pending, cp_max_requests;
	const struct reg_waypoint *waypoint_p; /* as a workload's: own key, else the namespace's */
	const struct reg_workload **endpoints; /* workloads the selector picks, file order */
	size_t n_endpoints;
};

struct reg_policy {
	struct reg_head h;
	char *namespace;
	struct label_list selector; /* empty: the whole namespace */
	int action; /* enum reg_action */
	struct str_list principals, not_principals, namespaces, not_namespaces;
	struct prefix_list ip_blocks, not_ip_blocks;
	struct port_list ports, not_ports;
	struct str_list methods, not_methods, paths, not_paths, hosts, not_hosts;
	struct label_list when_headers;
	bool has_l7; /* any of methods, paths, hosts, when: ztunnel cannot enforce it alone */
};

/*
 * A route backend: the service or the workload its name resolved to (exactly one is set). Its name
 * as written, "NAME", "service/NAME" or "workload/NAME", is the route's backends.v[] at the same
 * index.
 */
struct reg_backend {
	const struct reg_service *service;
	const struct reg_workload *workload;
	uint32_t weight;
};

struct reg_route {
	struct reg_head h;
	char *namespace, *service;
	char *path_exact, *path_prefix, *path_regex;
	struct label_list match_headers, match_query;
	struct str_list match_methods;
	struct weighted_list backends;
	uint64_t timeout, per_try_timeout, retry_backoff; /* ms; 0: none */
	uint64_t retries;
	struct str_list retry_on;
	uint64_t fault_delay, fault_delay_percent, fault_abort, fault_abort_percent;
	char *mirror;
	uint64_t mirror_percent;
	struct label_list request_set, request_add, response_set, response_add;
	struct str_list request_remove, response_remove;
	char *rewrite_path_prefix;
	int redirect_scheme; /* 0 http, 1 https; only when redirect is set */
	char *redirect_host, *redirect_path;
	uint64_t redirect_port, redirect_status;
	bool redirect; /* any redirect.* key is set */

	const struct reg_service *service_p;
	struct reg_backend *backends_p; /* backends.n entries */
	const struct reg_service *mirror_p;
	regex_t path_re;
	bool has_path_re;
};

/*
 * Settings of a namespace for all its services and workloads. waypoint: their waypoint unless
 * theirs says otherwise ("none": no waypoint, the same as leaving it out).
 */
struct reg_namespace {
	struct reg_head h;
	char *waypoint;
	const struct reg_waypoint *waypoint_p; /* NULL: none */
};

/* The name that, as a waypoint key's value, means no waypoint (it cannot name a waypoint). */
#define REG_WAYPOINT_NONE "none"

/* What owns an address: a node, a workload or a waypoint. */
struct reg_addr_owner {
	enum reg_kind kind;
	const void *ent;
};

struct registry {
	int refs;
	uint64_t gen; /* grows with each snapshot made by this process: newer ones compare higher */
	char **files; /* every file read, in load order; heads point into these */
	size_t n_files;
	void **ent[REG_NKINDS]; /* entries per kind, in file order */
	size_t n[REG_NKINDS];
	struct htab by_name[REG_NKINDS];
	struct htab by_addr;     /* struct ip_addr -> struct reg_addr_owner */
	struct htab by_vip;      /* (ip, port) -> struct reg_vip */
	struct htab by_hostname; /* service hostname -> service */
	struct htab by_ns_policy; /* namespace -> struct reg_ns_policies */
	struct reg_addr_owner *addr_owners; /* values of by_addr */
	unsigned char *vip_keys;            /* keys of by_vip: struct ip_addr, then port (2 bytes) */
	struct reg_vip *vip_vals;           /* values of by_vip */
};

struct reg_vip {
	const struct reg_service *service;
	const struct portmap *port;
};

#define REG_NODES(r) ((struct reg_node *const *)(r)->ent[REG_NODE])
#define REG_WORKLOADS(r) ((struct reg_workload *const *)(r)->ent[REG_WORKLOAD])
#define REG_SERVICES(r) ((struct reg_service *const *)(r)->ent[REG_SERVICE])
#define REG_WAYPOINTS(r) ((struct reg_waypoint *const *)(r)->ent[REG_WAYPOINT])
#define REG_POLICIES(r) ((struct reg_policy *const *)(r)->ent[REG_POLICY])
#define REG_ROUTES(r) ((struct reg_route *const *)(r)->ent[REG_ROUTE])
#define REG_NAMESPACES(r) ((struct reg_namespace *const *)(r)->ent[REG_NAMESPACE])

/*
 * Auto-allocated VIPs (Istio's ranges): a service without vip gets one address from each, derived
 * from its namespace and name alone (FNV-1a of "NS/NAME"); a clash goes to the next free address,
 * services taken in sorted NS/NAME order, so every host derives the same addresses from the same
 * registry. Workloads reach them through their default route (or a route for the ranges).
 */
#define REG_AUTO_VIP4 "240.240.0.0/16"
#define REG_AUTO_VIP6 "2001:2::/48"

/* Registry limits: past these the load fails with a message, so a runaway generator cannot OOM us. */
#define REG_MAX_FILES 4096
#define REG_MAX_ENTRIES 1000000

/*
 * Loads every "*.conf" in dir (sorted by name; dot files skipped), validates the whole, and returns
 * a snapshot holding one reference. On failure *out is NULL and d holds every problem found.
 */
int registry_load_dir(const char *dir, struct registry **out, struct diag *d);
/* Same for one in-memory file named file (tests, fuzzing). */
int registry_parse_buffer(const char *file, const char *data, size_t len, struct registry **out,
    struct diag *d);
/* Same for a list of files, in the order given. */
int registry_load_files(char *const *paths, size_t n, struct registry **out, struct diag *d);
/* One registry file held in memory: name is what messages call it (an etcd key, say). */
struct registry_buf {
	const char *name;
	const char *data;
	size_t len;
};
/* Same for files already in memory (the etcd source), in the order given. */
int registry_load_buffers(const struct registry_buf *f, size_t n, struct registry **out,
    struct diag *d);

struct registry *registry_ref(struct registry *r);
/* Drops a reference; the last one frees the snapshot. Accepts NULL. */
void registry_unref(struct registry *r);

const char *registry_kind_name(enum reg_kind k);
const struct kw *registry_keywords(enum reg_kind k, size_t *n);

/* O(1) lookups. Returned pointers live as long as the caller's reference. */
const void *registry_find(const struct registry *r, enum reg_kind k, const char *name);
const struct reg_addr_owner *registry_addr_owner(const struct registry *r, const struct ip_addr *ip);
const struct reg_workload *registry_workload_by_addr(const struct registry *r, const struct ip_addr *ip);
const struct reg_vip *registry_service_by_vip(const struct registry *r, const struct ip_addr *ip,
    uint16_t port);
const struct reg_service *registry_service_by_hostname(const struct registry *r, const char *host);
/* The external service whose fixed addresses include ip and whose ports include port (a
 * workload that dialled it without the VIP), else NULL. Linear in the external services. */
const struct reg_service *registry_external_by_addr(const struct registry *r,
    const struct ip_addr *ip, uint16_t port);
/* Policies of a namespace, in file order; *n is 0 when it has none. */
const struct reg_policy *const *registry_policies_in(const struct registry *r, const char *ns,
    size_t *n);
/* The workload's address of the given family (AF_INET, AF_INET6), else its first; NULL if none. */
const struct ip_addr *reg_workload_addr(const struct reg_workload *wl, int family);
/* True if waypoint wp runs an instance on the node named node. */
bool reg_waypoint_on_node(const struct reg_waypoint *wp, const char *node);
/* True if wp may serve services and workloads of namespace ns (its own, or allowed_namespaces). */
bool reg_waypoint_allows(const struct reg_waypoint *wp, const char *ns);
/* True if every selector label is among labels (an empty selector selects everything). */
bool registry_selects(const struct label_list *selector, const struct label_list *labels);

/* The current snapshot of a process, swapped whole on reload. */
struct registry_holder {
	pthread_mutex_t mu;
	struct registry *cur;
};

void registry_holder_init(struct registry_holder *h);
/* Drops the holder's reference. */
void registry_holder_destroy(struct registry_holder *h);
/* A new reference to the current snapshot (NULL before the first load); release with unref. */
struct registry *registry_holder_get(struct registry_holder *h);
/* Makes r current, taking over the caller's reference; the old one is released. */
void registry_holder_set(struct registry_holder *h, struct registry *r);
/* Loads dir; on success makes it current, else leaves the current snapshot in force. */
int registry_holder_reload(struct registry_holder *h, const char *dir, struct diag *d);

#endif
