/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Metrics store: Istio's TCP and HTTP metrics (DESIGN.md section 6) and the process's own
 * counters and gauges, rendered in the Prometheus text exposition format (version 0.0.4) for
 * the /metrics endpoint.
 *
 * Metrics (for amesh-ztunnel(8) and amesh-waypoint(8)):
 *
 *   name                                  type       labels
 *   istio_tcp_connections_opened_total    counter    TCP labels
 *   istio_tcp_connections_closed_total    counter    TCP labels
 *   istio_tcp_sent_bytes_total            counter    TCP labels
 *   istio_tcp_received_bytes_total        counter    TCP labels
 *   istio_requests_total                  counter    HTTP labels
 *   istio_request_duration_milliseconds   histogram  HTTP labels (+ le)
 *   istio_request_bytes                   histogram  HTTP labels (+ le)
 *   istio_response_bytes                  histogram  HTTP labels (+ le)
 *   amesh_metrics_series_dropped_total    counter    none
 *   process counters and gauges           counter/gauge  none (metrics_counter, metrics_gauge;
 *                                                    e.g. amesh_ztunnel_connections_active)
 *
 *   TCP labels, in this order: reporter, source_workload, source_workload_namespace,
 *     source_principal, destination_workload, destination_workload_namespace,
 *     destination_service, destination_principal, request_protocol (always "tcp"),
 *     response_flags, connection_security_policy.
 *   HTTP labels, in this order: reporter, source_workload, source_workload_namespace,
 *     source_principal, destination_workload, destination_workload_namespace,
 *     destination_service, destination_principal, request_protocol ("http" or "grpc"),
 *     response_code, response_flags, connection_security_policy.
 *
 * Label values as Istio writes them: reporter "source" (the client side's proxy) or
 * "destination" (the server side's); principals as full SPIFFE IDs ("spiffe://TD/ns/NS/sa/SA");
 * destination_service the service's host name; connection_security_policy "mutual_tls" or
 * "none"; response_flags Envoy's short flags ("UF" upstream connect failure, "DC" downstream
 * close, "DENY" refused by policy), "-" for none. A NULL or "" value is rendered as "unknown",
 * except response_flags, rendered as "-". A value longer than METRICS_LABEL_MAX bytes is cut there.
 *
 * TCP bytes are counted as Istio counts them, from the reporting proxy's side towards the client
 * of the connection: received_bytes are the bytes the reporter received from the client (the
 * request direction), sent_bytes the bytes it sent to the client (the response direction). Both
 * reporters therefore count the same direction under the same name.
 *
 * Histograms use Envoy's default buckets, as Istio does for all three (milliseconds for the
 * duration, bytes for the sizes): 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
 * 30000, 60000, 300000, 600000, 1800000, 3600000 and +Inf.
 *
 * Bounds: at most METRICS_MAX_SERIES label sets in total (a TCP label set carries the four TCP
 * metrics, an HTTP label set the four HTTP ones). Past that a new label set is not created, its
 * event is not counted, and amesh_metrics_series_dropped_total counts one per such event; existing
 * label sets keep counting. Process counters and gauges are registered by code at startup and are
 * not capped. Worst case the rendered page is about 70 lines of up to 3 KiB per HTTP label set.
 *
 * Threads: any. One lock per store guards its label sets and every value (the ztunnel's workers
 * count from their own threads); freeing is for the last user, once the others stopped.
 */
#ifndef AMESH_TELEMETRY_METRICS_H
#define AMESH_TELEMETRY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_SERIES 10000
#define METRICS_LABEL_MAX 256

struct metrics;
struct metric_counter;
struct metric_gauge;

/* Creates an empty store. Returns 0 or AMESH_ERR_NOMEM; *out is NULL on failure. */
int metrics_new(struct metrics **out);
/* Frees the store and every counter and gauge it returned. Accepts NULL. */
void metrics_free(struct metrics *m);
/* Changes the label-set cap (tests); at most METRICS_MAX_SERIES is not enforced here. */
void metrics_set_max_series(struct metrics *m, size_t max);
/* Label sets in use, and events dropped because the cap was reached. */
size_t metrics_series(const struct metrics *m);
uint64_t metrics_dropped(const struct metrics *m);

struct tcp_labels {
	const char *reporter; /* "source" or "destination" */
	const char *source_workload, *source_workload_namespace, *source_principal;
	const char *destination_workload, *destination_workload_namespace, *destination_service,
	    *destination_principal;
	const char *response_flags;
	const char *connection_security_policy; /* "mutual_tls" or "none" */
};

/* A connection was opened: istio_tcp_connections_opened_total += 1. */
void metrics_tcp_opened(struct metrics *m, const struct tcp_labels *l);
/*
 * A connection was closed: istio_tcp_connections_closed_total += 1, istio_tcp_sent_bytes_total +=
 * sent (reporter to client), istio_tcp_received_bytes_total += received (client to reporter).
 */
void metrics_tcp_closed(struct metrics *m, const struct tcp_labels *l, uint64_t sent,
    uint64_t received);

struct http_labels {
	const char *reporter; /* "source" or "destination" */
	const char *source_workload, *source_workload_namespace, *source_principal;
	const char *destination_workload, *destination_workload_namespace, *destination_service,
	    *destination_principal;
	const char *request_protocol; /* "http" or "grpc" */
	unsigned response_code;       /* HTTP status; 0 when no response was sent */
	const char *response_flags;
	const char *connection_security_policy;
};

/*
 * A request finished: istio_requests_total += 1 and one observation in each histogram (duration
 * in milliseconds; request and response sizes in bytes, headers and body as Istio counts them).
 */
void metrics_http_request(struct metrics *m, const struct http_labels *l, double duration_ms,
    uint64_t request_bytes, uint64_t response_bytes);

/*
 * A process counter or gauge without labels. name must be a valid Prometheus metric name not
 * used by another metric; the same name and type again returns the same object. Returns NULL on
 * a bad or clashing name, or when out of memory (startup code). The store owns the result.
 */
struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *help);
struct metric_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help);
/*
 * The same with one label: one series per value of label, rendered in one family ("name{label=
 * \"value\"} v"). A name is either labelled (always with the same label) or not. Callers bound
 * the values (an identity per enrolled workload, a refusal reason from a fixed list).
 */
struct metric_counter *metrics_counter_l(struct metrics *m, const char *name, const char *help,
    const char *label, const char *value);
struct metric_gauge *metrics_gauge_l(struct metrics *m, const char *name, const char *help,
    const char *label, const char *value);
/* Forgets a gauge (a labelled series whose subject is gone); g is invalid afterwards. */
void metrics_gauge_remove(struct metrics *m, struct metric_gauge *g);
/* These accept NULL (and do nothing), so a failed registration does not crash the data path. */
void metrics_counter_add(struct metric_counter *c, uint64_t v);
uint64_t metrics_counter_value(const struct metric_counter *c);
void metrics_gauge_set(struct metric_gauge *g, int64_t v);
/*
 * A process histogram without labels: n (at most METRICS_HIST_MAX_BUCKETS) increasing upper
 * bounds, +Inf added. NULL as metrics_counter. Observing accepts NULL.
 */
#define METRICS_HIST_MAX_BUCKETS 16
struct metric_histogram;
struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
    const double *bounds, size_t n);
void metrics_histogram_observe(struct metric_histogram *h, double v);
void metrics_gauge_add(struct metric_gauge *g, int64_t delta);
int64_t metrics_gauge_value(const struct metric_gauge *g);

/*
 * Renders every metric in the text exposition format into a new NUL-terminated heap string
 * (*out, the caller frees it) and returns its length. Families without samples are left out,
 * except amesh_metrics_series_dropped_total, always present. Order: process metrics in
 * registration order, the TCP families, the HTTP families, then the drop counter; label sets in
 * the order they were created. On allocation failure returns 0 and *out is NULL.
 */
size_t metrics_render(struct metrics *m, char **out);

/* The Prometheus content type of what metrics_render returns. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
