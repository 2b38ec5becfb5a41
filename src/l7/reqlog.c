/* SPDX-License-Identifier: Apache-2.0 */
/* Request telemetry of the L7 engine (either HTTP protocol): Istio's labels, the metrics and the
 * access-log record of one request. */
#include "config.h"

#include <stdio.h>

#include "core/log.h"
#include "l7/tunnel.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"

/* Istio's reporter: the waypoint's own, or a sidecar's side of the call. */
const char *
wp_reporter(const struct tun *t)
{
	return t->side == L7_SIDE_IN ? "destination" :
	    t->side == L7_SIDE_OUT ? "source" : "waypoint";
}

/* What the client side knows of the connection's security: Istio's source reporters say
 * "unknown"; the receiving side saw the peer's certificate. */
const char *
wp_security_policy(const struct tun *t)
{
	return t->side == L7_SIDE_OUT ? "unknown" : "mutual_tls";
}

void
wp_principal(const struct tun *t, const struct reg_workload *wl, char *buf, size_t len)
{
	if (wl == NULL || spiffe_format(buf, len, t->wp->conf->mesh.trust_domain, wl->namespace,
	    wl->service_account) != 0)
		snprintf(buf, len, "unknown");
}

void
wp_request_telemetry(struct tun *t, const struct wp_request_log *q)
{
	struct waypoint *wp = t->wp;
	char dp[SPIFFE_ID_MAX];
	struct http_labels l = {
		.reporter = wp_reporter(t),
		.source_workload = t->src_wl ? t->src_wl->h.name : "unknown",
		.source_workload_namespace = t->src_wl ? t->src_wl->namespace : "unknown",
		.source_principal = t->peer_id,
		.destination_workload = q->ep ? q->ep->h.name : "unknown",
		.destination_workload_namespace = q->ep ? q->ep->namespace : "unknown",
		.destination_service = t->svc ? t->svc->hostname : "unknown",
		.request_protocol = q->grpc ? "grpc" : "http",
		.response_code = (unsigned)q->status,
		.response_flags = q->flags ? q->flags : "-",
		.connection_security_policy = wp_security_policy(t),
	};
	uint64_t ms = uv_now(wp->loop) - q->start;
	char path[512];
	struct log_field f[11];
	size_t n = 0;

	wp_principal(t, q->ep, dp, sizeof(dp));
	l.destination_principal = dp;
	wp->st.requests++;
	if (wp->metrics != NULL)
		metrics_http_request(wp->metrics, &l, (double)ms, q->req_bytes, q->resp_bytes);
	if (!accesslog_enabled())
		return;
	snprintf(path, sizeof(path), "%.*s", (int)q->path_len, q->path);
	f[n++] = (struct log_field){ "method", q->method ? q->method : "-", 0 };
	f[n++] = (struct log_field){ "authority", q->authority ? q->authority : t->authority, 0 };
	f[n++] = (struct log_field){ "path", path, 0 };
	f[n++] = (struct log_field){ "status", NULL, (unsigned long long)q->status };
	f[n++] = (struct log_field){ "duration_ms", NULL, ms };
	f[n++] = (struct log_field){ "upstream", q->ep ? q->ep->h.name : "-", 0 };
	f[n++] = (struct log_field){ "route", q->rt ? q->rt->h.name : "-", 0 };
	f[n++] = (struct log_field){ "src.identity", t->peer_id, 0 };
	f[n++] = (struct log_field){ "flags", q->flags ? q->flags : "-", 0 };
	f[n++] = (struct log_field){ "traceparent", q->traceparent, 0 };
	if (q->grpc_status >= 0)
		f[n++] = (struct log_field){ "grpc_status", NULL, (unsigned long long)q->grpc_status };
	log_record(LOG_LVL_INFO, "access", q->grpc ? "grpc" : "request", f, n);
}
