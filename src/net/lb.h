/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one load balancer of every role: picks a registry service's endpoint by round robin per
 * service, skipping for LB_PENALTY_MS an endpoint whose connect failed (all skipped: the next in
 * turn anyway). The state is keyed by registry entry and belongs to one registry snapshot: a pick
 * with another snapshot starts from scratch (every counter at the first endpoint, no penalties).
 *
 * Bounds: one entry per service, workload, waypoint and waypoint address of the snapshot (+ 1), so
 * every key a snapshot can give has room. A key without an entry (only when the table could not be
 * allocated) is balanced without state: its service starts at its first endpoint every time and
 * its endpoint is never skipped.
 *
 * Threads: one balancer per loop thread; no locking.
 */
#ifndef AMESH_NET_LB_H
#define AMESH_NET_LB_H

#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"

/* An endpoint whose connect failed is skipped by round robin for this long. */
#define LB_PENALTY_MS 5000

struct lb;

/* A balancer without state. Returns 0 or AMESH_ERR_NOMEM; *out is NULL on failure. */
int lb_new(struct lb **out);
/* Frees the state and drops its hold on a registry snapshot. Accepts NULL. */
void lb_free(struct lb *lb);

/*
 * The endpoint of svc (a service of snapshot reg) that gets the next connection at now_ms
 * (milliseconds, any monotonic clock: uv_now): round robin over svc->endpoints from where the
 * previous pick of svc left off, the first one not penalized; all penalized: the one in turn.
 * NULL when svc has no endpoints. The balancer holds a reference to reg until the next snapshot
 * (so that the address cannot come back as a newer snapshot's).
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
