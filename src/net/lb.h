/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one load balancer of every role: picks a registry service's endpoint by round robin per
 * service, skipping for LB_PENALTY_MS an endpoint whose connect failed (all skipped: the next in
 * turn anyway) and, per service, an endpoint that outlier detection ejected; and it keeps each
 * service's connection pool counts, which refuse requests and connections past the service's
 * limits. Both follow Istio's DestinationRule trafficPolicy (amesh-registry(5) RESILIENCE).
 *
 * Outlier detection (Envoy's consecutive 5xx and consecutive gateway failure detectors): each
 * (service, endpoint) counts its consecutive 5xx answers and its consecutive 502/503/504 answers
 * (a local failure - connect failure, reset before an answer - counts as a 503 in both; any other
 * answer zeroes both). Reaching the service's od_5xx or od_gateway ejects the endpoint for
 * lb_ejection_ms(base, n, max), n being its ejections in a row, unless lb_max_ejected of the
 * service's endpoints are out already. It comes back when that time is over.
 *
 * State lives per registry snapshot, keyed by its entries: a pick with another snapshot starts a
 * new table (every turn at the first endpoint, no penalties), into which the outlier state
 * (counts, ejections) and the pools are carried by service and workload name, so a reload neither
 * returns an ejected endpoint nor forgets requests in flight.
 *
 * Bounds: one entry per service, workload, waypoint and waypoint address, and per (service,
 * endpoint) of the snapshot (+ 1), so every key a snapshot can give has room. A key without an
 * entry (only when the table could not be allocated) is balanced without state: its service
 * starts at its first endpoint every time, no endpoint is skipped or ejected, no limit is
 * applied.
 *
 * Threads: the workers of a proxy share one balancer (lb_ref); every call takes its mutex, and
 * lb_release only touches the pool's atomic counts.
 */
#ifndef AMESH_NET_LB_H
#define AMESH_NET_LB_H

#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"

/* An endpoint whose connect failed is skipped by round robin for this long. */
#define LB_PENALTY_MS 5000

/* lb_result's status for a failure of our own side: no connection to the endpoint, or the
 * connection reset before an answer (Envoy's local-origin errors, counted as a 503). */
#define LB_LOCAL_FAILURE (-1)

struct lb;
struct metrics;

/* A balancer without state. Returns 0 or AMESH_ERR_NOMEM; *out is NULL on failure. */
int lb_new(struct lb **out);
/* One more owner of lb (another worker's flows): lb_free frees it when the last lets go. */
struct lb *lb_ref(struct lb *lb);
/* Frees the state and drops its hold on a registry snapshot and on the pools (requests still
 * holding a place keep theirs until lb_release). Accepts NULL. */
void lb_free(struct lb *lb);
/* Where ejections and overflows are counted (amesh_outlier_*, amesh_circuit_breaker_*); the
 * store outlives the balancer. NULL: nowhere. */
void lb_set_metrics(struct lb *lb, struct metrics *m);

/*
 * The endpoint of svc (a service of snapshot reg) that gets the next connection at now_ms
 * (milliseconds, any monotonic clock: uv_now): round robin over svc->endpoints from where the
 * previous pick of svc left off, the first one neither ejected nor penalized; else the first not
 * ejected; else the one in turn. NULL when svc has no endpoints. The balancer holds a reference to
 * reg until the next snapshot (so that the address cannot come back as a newer snapshot's).
 */
const struct reg_workload *lb_pick(struct lb *lb, const struct registry *reg,
    const struct reg_service *svc, uint64_t now_ms);
/*
 * A connect to ep (an endpoint of snapshot reg) failed at now_ms: skip it until now_ms +
 * LB_PENALTY_MS. A failure reported for a snapshot other than the one in force is ignored (its
 * endpoints are not the ones being balanced).
 */
void lb_fail(struct lb *lb, const struct registry *reg, const struct reg_workload *ep,
    uint64_t now_ms);
/*
 * How one attempt of a request (or one connection) to ep, picked for svc, ended at now_ms: the
 * HTTP status the endpoint answered (a connection that opened: 200), or LB_LOCAL_FAILURE. Counted
 * for outlier detection when svc has it (see the top of this file); reports for another snapshot
 * than the one in force, and for an endpoint ejected now, are ignored.
 */
void lb_result(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    const struct reg_workload *ep, int status, uint64_t now_ms);
/* Returns the endpoints whose ejection is over at now_ms (lb_pick does it too), so that the
 * amesh_outlier_endpoints_ejected gauge is right between picks. */
void lb_sweep(struct lb *lb, uint64_t now_ms);
/* Endpoints of svc (of snapshot reg) ejected at now_ms. */
size_t lb_ejected(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    uint64_t now_ms);

/* The connection pool limits of a service (reg_service cp_*). */
enum lb_limit {
	LB_REQUESTS,    /* requests in flight (http2_max_requests, both HTTP versions) */
	LB_PENDING,     /* requests waiting for their upstream connection (http1_max_pending_requests) */
	LB_CONNECTIONS, /* L4 connections relayed (tcp.max_connections) */
	LB_NLIMITS,
};
struct lb_pool;

/*
 * Takes a place of kind k in svc's pool (svc of snapshot reg). 0 with *out the pool held (NULL
 * when the balancer has no state for svc: nothing is counted), or -EBUSY (counted as an overflow,
 * *out NULL) when svc's limit of that kind is reached. Give it back with lb_release.
 */
int lb_take(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    enum lb_limit k, struct lb_pool **out);
/* Gives back a place taken with lb_take; p may outlive the balancer. Accepts NULL. */
void lb_release(struct lb_pool *p, enum lb_limit k);
/* Places of kind k held in p now (tests, dumps). */
uint64_t lb_pool_count(const struct lb_pool *p, enum lb_limit k);

/* The ejection arithmetic, exposed for tests. The length of the n-th ejection in a row (n >= 1):
 * base * n, at most max (max < base: base). */
uint64_t lb_ejection_ms(uint64_t base, uint64_t n, uint64_t max);
/* How many of a service's n endpoints may be ejected at once: percent of them rounded down, at
 * least one (as Envoy), and never all of them (one always stays: 0 for a single endpoint). */
size_t lb_max_ejected(size_t n, uint64_t percent);

/*
 * The address of waypoint wp (of snapshot reg) that gets the next tunnel at now_ms: round robin
 * over wp->addresses (one per instance) from where the previous pick of wp left off, skipping the
 * ones in tried (bit i: addresses.v[i], already tried by this request); the first not penalized,
 * else the first untried one anyway. NULL when every address has been tried.
 */
const struct ip_addr *lb_pick_waypoint(struct lb *lb, const struct registry *reg,
    const struct reg_waypoint *wp, uint64_t tried, uint64_t now_ms);
/* A connect to addr (one of a waypoint's addresses in snapshot reg) failed at now_ms: as lb_fail. */
void lb_fail_waypoint(struct lb *lb, const struct registry *reg, const struct ip_addr *addr,
    uint64_t now_ms);

/* Tests only: the allocator of the entry table (calloc by default), to make it fail. */
extern void *(*lb_test_calloc)(size_t n, size_t size);

#endif
