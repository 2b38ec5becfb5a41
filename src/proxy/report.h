/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the L4 proxy (ztunnel, sidecar) tells the host endpoints (telemetry/admin.h): its
 * /config_dump document (the registry snapshot, the enrolled and the failed workloads, the
 * identities with their expiry, never keys, the pool state and the counters), its readiness (not
 * while draining, nor while a recorded workload is not served: those are listed) and its gauges
 * (amesh_proxy_connections_active, amesh_proxy_workloads_enrolled, amesh_proxy_workloads_failed,
 * amesh_identity_expiry_timestamp_seconds per identity).
 */
#ifndef AMESH_PROXY_REPORT_H
#define AMESH_PROXY_REPORT_H

#include <stdbool.h>
#include <stdio.h>

#include "config/conf.h"
#include "config/registry.h"
#include "proxy/proxy.h"

struct identity_store;
struct metrics;
struct proxy_report;

/* Registers the gauges in metrics; everything given must outlive the report. Aborts when out of
 * memory (startup). */
struct proxy_report *proxy_report_new(struct proxy *px, const struct amesh_conf *conf,
    const struct conf_proxy *pc, const char *role, struct identity_store *ids,
    struct registry_holder *reg, struct metrics *metrics);
struct idagent;
/* Adds the identity agent's state to /config_dump ("identity_agent"). */
void proxy_report_set_agent(struct proxy_report *rp, struct idagent *a);
/* Accepts NULL. The gauges stay with the metrics store. */
void proxy_report_free(struct proxy_report *rp);
/* The /config_dump document (JSON), malloc'd; NULL when out of memory. */
char *proxy_report_config_dump(struct proxy_report *rp);
/* Ready: not draining and every recorded workload served; else false, the failed ones written to
 * why (may be NULL). */
bool proxy_report_ready(struct proxy_report *rp, FILE *why);
/* Sets the gauges to the proxy's state now. */
void proxy_report_refresh_metrics(struct proxy_report *rp);

#endif
