/* SPDX-License-Identifier: Apache-2.0 */
/* The registry's keyword tables, one per kind (amesh-registry(5)), for the parser and the checks. */
#include "config.h"

#include <stddef.h>

#include "config/registry-int.h"
#include "core/util.h"

static const char *const kind_names[REG_NKINDS] = {
	"node", "workload", "service", "waypoint", "policy", "route", "namespace",
};
static const char *const protocols[] = { "hbone", "tcp", NULL };
static const char *const mtls_modes[] = { "strict", "permissive", NULL };
static const char *const actions[] = { "allow", "deny", NULL };
static const char *const http_methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL,
};
static const char *const retry_ons[] = {
	"5xx", "gateway-error", "connect-failure", "reset", "refused-stream",
	/* gRPC statuses, as Envoy's x-envoy-retry-grpc-on */
	"cancelled", "deadline-exceeded", "resource-exhausted", "unavailable", NULL,
};
static const char *const schemes[] = { "http", "https", NULL };
/* The kinds a route backend may name; the order is REG_SERVICE's, then REG_WORKLOAD's. */
static const char *const backend_kinds[] = { "service", "workload", NULL };

#define K(kind, key, type, st, field, dflt, req) \
	{ kind, key, type, offsetof(st, field), dflt, 0, 0, NULL, req }
#define KE(kind, key, st, field, dflt, enums) \
	{ kind, key, KW_ENUM, offsetof(st, field), dflt, 0, 0, enums, false }
#define KU(kind, key, st, field, min, max) \
	{ kind, key, KW_UINT, offsetof(st, field), NULL, min, max, NULL, false }

static const struct kw node_kw[] = {
	[REG_N_ADDRESS] = K("node", "address", KW_IP, struct reg_node, address, NULL, true),
};

static const struct kw waypoint_kw[] = {
	[REG_WP_NAMESPACE] = K("waypoint", "namespace", KW_NAME, struct reg_waypoint, namespace, NULL, true),
	[REG_WP_SA] = K("waypoint", "service_account", KW_NAME, struct reg_waypoint, service_account, NULL, false),
	/* One address per instance (replicas on several hosts share the identity). */
	[REG_WP_ADDRESS] = K("waypoint", "address", KW_IP_LIST, struct reg_waypoint, addresses, NULL, true),
	[REG_WP_NODE] = K("waypoint", "node", KW_STR_LIST, struct reg_waypoint, nodes, NULL, false),
	[REG_WP_ALLOWED_NS] = K("waypoint", "allowed_namespaces", KW_PATTERN_LIST, struct reg_waypoint, allowed_namespaces, NULL, false),
};

static const struct kw namespace_kw[] = {
	[REG_NS_WAYPOINT] = K("namespace", "waypoint", KW_HOSTNAME, struct reg_namespace, waypoint, NULL, false),
};

static const struct kw workload_kw[] = {
	[REG_WL_NAMESPACE] = K("workload", "namespace", KW_NAME, struct reg_workload, namespace, NULL, true),
	[REG_WL_SA] = K("workload", "service_account", KW_NAME, struct reg_workload, service_account, "default", false),
	[REG_WL_NODE] = K("workload", "node", KW_HOSTNAME, struct reg_workload, node, NULL, true),
	[REG_WL_ADDRESSES] = K("workload", "addresses", KW_IP_LIST, struct reg_workload, addresses, NULL, true),
	[REG_WL_LABELS] = K("workload", "labels", KW_LABELS, struct reg_workload, labels, NULL, false),
	[REG_WL_PROTOCOL] = KE("workload", "protocol", struct reg_workload, protocol, "hbone", protocols),
	[REG_WL_WAYPOINT] = K("workload", "waypoint", KW_HOSTNAME, struct reg_workload, waypoint, NULL, false),
	[REG_WL_MTLS] = KE("workload", "mtls_mode", struct reg_workload, mtls_mode, "strict", mtls_modes),
};

#define SU(idx, key, field, dflt, min, max) \
	[idx] = { "service", key, KW_UINT, offsetof(struct reg_service, field), dflt, min, max, NULL, false }
/* A duration of at least 1 ms. */
#define SD(idx, key, field, dflt) \
	[idx] = { "service", key, KW_DURATION, offsetof(struct reg_service, field), dflt, 1, 0, NULL, false }
static const struct kw service_kw[] = {
	[REG_SV_NAMESPACE] = K("service", "namespace", KW_NAME, struct reg_service, namespace, NULL, true),
	[REG_SV_HOSTNAME] = K("service", "hostname", KW_HOSTNAME, struct reg_service, hostname, NULL, false),
	[REG_SV_VIP] = K("service", "vip", KW_IP_LIST, struct reg_service, vips, NULL, false),
	[REG_SV_PORTS] = K("service", "ports", KW_PORTMAP_LIST, struct reg_service, ports, NULL, true),
	/* Required unless external (registry_check says so with the same words). */
	[REG_SV_SELECTOR] = K("service", "selector", KW_LABELS, struct reg_service, selector, NULL, false),
	[REG_SV_WAYPOINT] = K("service", "waypoint", KW_HOSTNAME, struct reg_service, waypoint, NULL, false),
	[REG_SV_EXTERNAL] = K("service", "external", KW_BOOL, struct reg_service, external, "no", false),
	[REG_SV_ADDRESSES] = K("service", "addresses", KW_IP_LIST, struct reg_service, addresses, NULL, false),
	[REG_SV_FROM_PRINCIPALS] = K("service", "from.principals", KW_PATTERN_LIST, struct reg_service, from_principals, NULL, false),
	[REG_SV_FROM_NAMESPACES] = K("service", "from.namespaces", KW_PATTERN_LIST, struct reg_service, from_namespaces, NULL, false),
	/* Istio's DestinationRule trafficPolicy fields, snake_cased (amesh-registry(5) RESILIENCE). */
	SU(REG_SV_OD_5XX, "outlier_detection.consecutive_5xx_errors", od_5xx, "0", 0, 1000000),
	SU(REG_SV_OD_GATEWAY, "outlier_detection.consecutive_gateway_errors", od_gateway, "0", 0, 1000000),
	SD(REG_SV_OD_BASE, "outlier_detection.base_ejection_time", od_base_ejection, "30s"),
	SD(REG_SV_OD_MAX_TIME, "outlier_detection.max_ejection_time", od_max_ejection, "300s"),
	SU(REG_SV_OD_MAX_PCT, "outlier_detection.max_ejection_percent", od_max_percent, "10", 0, 100),
	SU(REG_SV_CP_MAX_CONN, "connection_pool.tcp.max_connections", cp_max_connections, "0", 0, UINT32_MAX),
	SU(REG_SV_CP_MAX_PENDING, "connection_pool.http.http1_max_pending_requests", cp_max_pending, "0", 0, UINT32_MAX),
	SU(REG_SV_CP_MAX_REQUESTS, "connection_pool.http.http2_max_requests", cp_max_requests, "0", 0, UINT32_MAX),
};

#define PK(idx, key, type, field) [idx] = K("policy", key, type, struct reg_policy, field, NULL, false)
static const struct kw policy_kw[] = {
	[REG_PO_NAMESPACE] = K("policy", "namespace", KW_NAME, struct reg_policy, namespace, NULL, true),
	PK(REG_PO_SELECTOR, "selector", KW_LABELS, selector),
	[REG_PO_ACTION] = KE("policy", "action", struct reg_policy, action, "allow", actions),
	PK(REG_PO_PRINCIPALS, "from.principals", KW_PATTERN_LIST, principals),
	PK(REG_PO_NOT_PRINCIPALS, "from.not_principals", KW_PATTERN_LIST, not_principals),
	PK(REG_PO_NAMESPACES, "from.namespaces", KW_PATTERN_LIST, namespaces),
	PK(REG_PO_NOT_NAMESPACES, "from.not_namespaces", KW_PATTERN_LIST, not_namespaces),
	PK(REG_PO_IP_BLOCKS, "from.ip_blocks", KW_PREFIX_LIST, ip_blocks),
	PK(REG_PO_NOT_IP_BLOCKS, "from.not_ip_blocks", KW_PREFIX_LIST, not_ip_blocks),
	PK(REG_PO_PORTS, "to.ports", KW_PORT_LIST, ports),
	PK(REG_PO_NOT_PORTS, "to.not_ports", KW_PORT_LIST, not_ports),
	PK(REG_PO_METHODS, "to.methods", KW_PATTERN_LIST, methods),
	PK(REG_PO_NOT_METHODS, "to.not_methods", KW_PATTERN_LIST, not_methods),
	PK(REG_PO_PATHS, "to.paths", KW_PATTERN_LIST, paths),
	PK(REG_PO_NOT_PATHS, "to.not_paths", KW_PATTERN_LIST, not_paths),
	PK(REG_PO_HOSTS, "to.hosts", KW_PATTERN_LIST, hosts),
	PK(REG_PO_NOT_HOSTS, "to.not_hosts", KW_PATTERN_LIST, not_hosts),
	PK(REG_PO_WHEN_HEADERS, "when.headers", KW_HEADER_LIST, when_headers),
};

#define RK(idx, key, type, field) [idx] = K("route", key, type, struct reg_route, field, NULL, false)
#define RU(idx, key, field, min, max) [idx] = KU("route", key, struct reg_route, field, min, max)
static const struct kw route_kw[] = {
	[REG_RT_NAMESPACE] = K("route", "namespace", KW_NAME, struct reg_route, namespace, NULL, true),
	[REG_RT_SERVICE] = K("route", "service", KW_HOSTNAME, struct reg_route, service, NULL, true),
	RK(REG_RT_PATH_EXACT, "match.path_exact", KW_STRING, path_exact),
	RK(REG_RT_PATH_PREFIX, "match.path_prefix", KW_STRING, path_prefix),
	RK(REG_RT_PATH_REGEX, "match.path_regex", KW_STRING, path_regex),
	RK(REG_RT_HEADERS, "match.headers", KW_HEADER_LIST, match_headers),
	[REG_RT_METHOD] = { "route", "match.method", KW_ENUM_LIST, offsetof(struct reg_route, match_methods),
		NULL, 0, 0, http_methods, false },
	RK(REG_RT_QUERY, "match.query", KW_LABELS, match_query),
	[REG_RT_BACKENDS] = { "route", "backends", KW_WEIGHTED_LIST, offsetof(struct reg_route, backends),
		NULL, 0, 1000000, backend_kinds, false },
	RK(REG_RT_TIMEOUT, "timeout", KW_DURATION, timeout),
	RK(REG_RT_PER_TRY, "per_try_timeout", KW_DURATION, per_try_timeout),
	RU(REG_RT_RETRIES, "retries", retries, 0, 10),
	[REG_RT_RETRY_ON] = { "route", "retry_on", KW_ENUM_LIST, offsetof(struct reg_route, retry_on),
		NULL, 0, 0, retry_ons, false },
	RK(REG_RT_BACKOFF, "retry_backoff", KW_DURATION, retry_backoff),
	RK(REG_RT_DELAY, "fault.delay", KW_DURATION, fault_delay),
	RU(REG_RT_DELAY_PCT, "fault.delay_percent", fault_delay_percent, 0, 100),
	RU(REG_RT_ABORT, "fault.abort", fault_abort, 200, 599),
	RU(REG_RT_ABORT_PCT, "fault.abort_percent", fault_abort_percent, 0, 100),
	RK(REG_RT_MIRROR, "mirror", KW_HOSTNAME, mirror),
	RU(REG_RT_MIRROR_PCT, "mirror_percent", mirror_percent, 0, 100),
	RK(REG_RT_REQ_SET, "request_headers.set", KW_HEADER_LIST, request_set),
	RK(REG_RT_REQ_ADD, "request_headers.add", KW_HEADER_LIST, request_add),
	RK(REG_RT_REQ_REMOVE, "request_headers.remove", KW_HEADER_NAME_LIST, request_remove),
	RK(REG_RT_RESP_SET, "response_headers.set", KW_HEADER_LIST, response_set),
	RK(REG_RT_RESP_ADD, "response_headers.add", KW_HEADER_LIST, response_add),
	RK(REG_RT_RESP_REMOVE, "response_headers.remove", KW_HEADER_NAME_LIST, response_remove),
	RK(REG_RT_REWRITE, "rewrite.path_prefix", KW_STRING, rewrite_path_prefix),
	[REG_RT_RD_SCHEME] = KE("route", "redirect.scheme", struct reg_route, redirect_scheme, NULL, schemes),
	RK(REG_RT_RD_HOST, "redirect.host", KW_HOSTNAME, redirect_host),
	RU(REG_RT_RD_PORT, "redirect.port", redirect_port, 1, 65535),
	RK(REG_RT_RD_PATH, "redirect.path", KW_STRING, redirect_path),
	RU(REG_RT_RD_STATUS, "redirect.status", redirect_status, 301, 308),
};

static const struct {
	const struct kw *kw;
	size_t n;
} tables[REG_NKINDS] = {
	{ node_kw, ARRAY_SIZE(node_kw) }, { workload_kw, ARRAY_SIZE(workload_kw) },
	{ service_kw, ARRAY_SIZE(service_kw) }, { waypoint_kw, ARRAY_SIZE(waypoint_kw) },
	{ policy_kw, ARRAY_SIZE(policy_kw) }, { route_kw, ARRAY_SIZE(route_kw) },
	{ namespace_kw, ARRAY_SIZE(namespace_kw) },
};

const char *
registry_kind_name(enum reg_kind k)
{
	return kind_names[k];
}

const struct kw *
registry_keywords(enum reg_kind k, size_t *n)
{
	*n = tables[k].n;
	return tables[k].kw;
}
