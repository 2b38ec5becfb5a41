/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access log: one record per connection (and, later, per request) through the log module, in
 * [log] format (text key=value pairs or one JSON object) on stderr, when [log] access_log is on.
 * Records are written whatever [log] level is: access_log is their switch.
 */
#ifndef AMESH_TELEMETRY_ACCESSLOG_H
#define AMESH_TELEMETRY_ACCESSLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "telemetry/metrics.h"

/* [log] access_log; off until set. Process-wide, like the rest of the log settings. */
void accesslog_set_enabled(bool on);
bool accesslog_enabled(void);

/*
 * Logs a finished TCP connection, with the keys of Istio's ztunnel:
 *   text: "TIME info: access: connection complete src.addr=10.0.0.1:40000 src.workload=sleep
 *         src.namespace=default src.identity=spiffe://... dst.addr=10.0.0.2:80
 *         dst.service=echo.default.svc.cluster.local dst.workload=echo dst.namespace=default
 *         dst.identity=spiffe://... direction=outbound bytes_sent=67 bytes_recv=490
 *         duration=12ms [flags=DENY]"
 *   json: {"time":..,"level":"info","scope":"access","msg":"connection complete","src.addr":..}
 * l supplies the workloads, namespaces, identities and service (a NULL or "" one is left out),
 * and direction ("outbound" for reporter "source", "inbound" for "destination"). sent and received
 * are the numbers given to metrics_tcp_closed (sent: to the client, received: from the client);
 * the log writes them as ztunnel does, from the source's side: bytes_sent is what the source sent
 * (received), bytes_recv what it received (sent). flags (NULL, "" or "-" for none) is written as
 * flags=; it defaults to l->response_flags. src_addr and dst_addr are "ip:port" (or NULL).
 */
void accesslog_tcp(const struct tcp_labels *l, const char *src_addr, const char *dst_addr,
    uint64_t sent, uint64_t received, uint64_t duration_ms, const char *flags);

#endif
