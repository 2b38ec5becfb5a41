/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for telemetry/metrics.c: exact exposition text, escaping, the label-set cap, histograms. */
#include "config.h"

#include "telemetry/metrics.h"
#include "runner.h"

static const struct tcp_labels tcp_a = {
	.reporter = "destination",
	.source_workload = "sleep",
	.source_workload_namespace = "default",
	.source_principal = "spiffe://cluster.local/ns/default/sa/sleep",
	.destination_workload = "echo",
	.destination_workload_namespace = "default",
	.destination_service = "echo.default.svc.cluster.local",
	.destination_principal = "spiffe://cluster.local/ns/default/sa/echo",
	.response_flags = NULL,
	.connection_security_policy = "mutual_tls",
};

#define LABELS_A                                                                          \
	"{reporter=\"destination\",source_workload=\"sleep\",source_workload_namespace=\"default\"," \
	"source_principal=\"spiffe://cluster.local/ns/default/sa/sleep\",destination_workload=\"echo\"," \
	"destination_workload_namespace=\"default\",destination_service=\"echo.default.svc.cluster.local\"," \
	"destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\",request_protocol=\"tcp\"," \
	"response_flags=\"-\",connection_security_policy=\"mutual_tls\"}"
/* Only the reporter and the flags set: everything else is "unknown". */
#define LABELS_B                                                                          \
	"{reporter=\"source\",source_workload=\"unknown\",source_workload_namespace=\"unknown\"," \
	"source_principal=\"unknown\",destination_workload=\"unknown\","                      \
	"destination_workload_namespace=\"unknown\",destination_service=\"unknown\","         \
	"destination_principal=\"unknown\",request_protocol=\"tcp\",response_flags=\"DENY\","  \
	"connection_security_policy=\"unknown\"}"

static struct metrics *
new_store(void)
{
	struct metrics *m;

	ASSERT(metrics_new(&m) == 0 && m != NULL);
	return m;
}

TEST(metrics_render_exact)
{
	struct metrics *m = new_store();
	struct metric_gauge *g = metrics_gauge(m, "amesh_ztunnel_connections_active",
	    "Connections open now.");
	struct metric_counter *c = metrics_counter(m, "amesh_test_total", "A test counter.");
	struct tcp_labels b = { .reporter = "source", .source_workload = "", .response_flags = "DENY" };
	char *out;
	size_t n;
	static const char want[] =
	    "# HELP amesh_ztunnel_connections_active Connections open now.\n"
	    "# TYPE amesh_ztunnel_connections_active gauge\n"
	    "amesh_ztunnel_connections_active -1\n"
	    "# HELP amesh_test_total A test counter.\n"
	    "# TYPE amesh_test_total counter\n"
	    "amesh_test_total 5\n"
	    "# HELP istio_tcp_connections_opened_total TCP connections opened.\n"
	    "# TYPE istio_tcp_connections_opened_total counter\n"
	    "istio_tcp_connections_opened_total" LABELS_A " 2\n"
	    "istio_tcp_connections_opened_total" LABELS_B " 1\n"
	    "# HELP istio_tcp_connections_closed_total TCP connections closed.\n"
	    "# TYPE istio_tcp_connections_closed_total counter\n"
	    "istio_tcp_connections_closed_total" LABELS_A " 1\n"
	    "istio_tcp_connections_closed_total" LABELS_B " 1\n"
	    "# HELP istio_tcp_sent_bytes_total Bytes sent to the client of a TCP connection "
	    "(response direction).\n"
	    "# TYPE istio_tcp_sent_bytes_total counter\n"
	    "istio_tcp_sent_bytes_total" LABELS_A " 1000\n"
	    "istio_tcp_sent_bytes_total" LABELS_B " 0\n"
	    "# HELP istio_tcp_received_bytes_total Bytes received from the client of a TCP "
	    "connection (request direction).\n"
	    "# TYPE istio_tcp_received_bytes_total counter\n"
	    "istio_tcp_received_bytes_total" LABELS_A " 20\n"
	    "istio_tcp_received_bytes_total" LABELS_B " 0\n"
	    "# HELP amesh_metrics_series_dropped_total Metric events not counted because the "
	    "label-set limit was reached.\n"
	    "# TYPE amesh_metrics_series_dropped_total counter\n"
	    "amesh_metrics_series_dropped_total 0\n";

	ASSERT(g != NULL && c != NULL);
	metrics_gauge_add(g, 2);
	metrics_gauge_set(g, -1);
	metrics_counter_add(c, 2);
	metrics_counter_add(c, 3);
	metrics_tcp_opened(m, &tcp_a);
	metrics_tcp_opened(m, &b);
	metrics_tcp_opened(m, &tcp_a);
	metrics_tcp_closed(m, &tcp_a, 1000, 20);
	metrics_tcp_closed(m, &b, 0, 0);
	ASSERT_EQ(metrics_series(m), 2);
	n = metrics_render(m, &out);
	ASSERT_STREQ(out, want);
	ASSERT_EQ(n, strlen(want));
	free(out);
	metrics_free(m);
}

TEST(metrics_empty_store)
{
	struct metrics *m = new_store();
	char *out;

	ASSERT(metrics_render(m, &out) > 0);
	ASSERT_STREQ(out,
	    "# HELP amesh_metrics_series_dropped_total Metric events not counted because the "
	    "label-set limit was reached.\n"
	    "# TYPE amesh_metrics_series_dropped_total counter\n"
	    "amesh_metrics_series_dropped_total 0\n");
	free(out);
	metrics_free(m);
	metrics_free(NULL);
}

TEST(metrics_label_escaping)
{
	struct metrics *m = new_store();
	struct tcp_labels l = tcp_a;
	char long_value[METRICS_LABEL_MAX + 50], want_cut[METRICS_LABEL_MAX + 64];
	char *out;

	l.source_workload = "a\"b\\c\nd";
	metrics_tcp_opened(m, &l);
	metrics_counter(m, "amesh_help_total", "back\\slash and\nnewline \"kept\"");
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, "source_workload=\"a\\\"b\\\\c\\nd\"") != NULL);
	/* HELP escapes backslash and line feed only. */
	ASSERT(strstr(out, "# HELP amesh_help_total back\\\\slash and\\nnewline \"kept\"\n") != NULL);
	free(out);

	/* Values are cut at METRICS_LABEL_MAX bytes: both long values share one label set. */
	memset(long_value, 'x', sizeof(long_value) - 1);
	long_value[sizeof(long_value) - 1] = '\0';
	l.source_workload = long_value;
	metrics_tcp_opened(m, &l);
	long_value[METRICS_LABEL_MAX + 10] = '\0';
	metrics_tcp_opened(m, &l);
	ASSERT_EQ(metrics_series(m), 2);
	snprintf(want_cut, sizeof(want_cut), "source_workload=\"%.*s\",", METRICS_LABEL_MAX,
	    long_value);
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, want_cut) != NULL);
	free(out);
	metrics_free(m);
}

TEST(metrics_series_cap)
{
	struct metrics *m = new_store();
	struct tcp_labels l = tcp_a;
	char name[32], *out;

	/* The default cap. */
	for (int i = 0; i <= METRICS_MAX_SERIES; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		l.source_workload = name;
		metrics_tcp_opened(m, &l);
	}
	ASSERT_EQ(metrics_series(m), METRICS_MAX_SERIES);
	ASSERT_EQ(metrics_dropped(m), 1);
	/* Existing label sets keep counting past the cap; every new one is dropped, each time. */
	l.source_workload = "w0";
	metrics_tcp_closed(m, &l, 7, 8);
	l.source_workload = "w-new";
	metrics_tcp_opened(m, &l);
	metrics_tcp_closed(m, &l, 1, 1);
	ASSERT_EQ(metrics_dropped(m), 3);
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, "\namesh_metrics_series_dropped_total 3\n") != NULL);
	ASSERT(strstr(out, "w-new") == NULL);
	ASSERT(strstr(out, "source_workload=\"w0\"") != NULL);
	free(out);
	metrics_free(m);

	/* A small cap shared by TCP and HTTP label sets. */
	m = new_store();
	metrics_set_max_series(m, 2);
	metrics_tcp_opened(m, &tcp_a);
	metrics_http_request(m, &(struct http_labels){ .reporter = "destination", .response_code = 200 },
	    1, 1, 1);
	metrics_http_request(m, &(struct http_labels){ .reporter = "destination", .response_code = 503 },
	    1, 1, 1);
	ASSERT_EQ(metrics_series(m), 2);
	ASSERT_EQ(metrics_dropped(m), 1);
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, "response_code=\"200\"") != NULL);
	ASSERT(strstr(out, "response_code=\"503\"") == NULL);
	free(out);
	metrics_free(m);
}

/* Finds the line starting with prefix and returns what follows it on that line. */
static const char *
value_of(const char *text, const char *prefix, char *buf, size_t len)
{
	const char *p = text;

	while ((p = strstr(p, prefix)) != NULL) {
		if (p == text || p[-1] == '\n') {
			size_t n = strcspn(p + strlen(prefix), "\n");

			snprintf(buf, len, "%.*s", (int)n, p + strlen(prefix));
			return buf;
		}
		p++;
	}
	return NULL;
}

TEST(metrics_histogram_buckets)
{
	struct metrics *m = new_store();
	struct http_labels l = {
		.reporter = "destination",
		.source_workload = "sleep",
		.destination_service = "echo.default.svc.cluster.local",
		.request_protocol = "http",
		.response_code = 200,
		.connection_security_policy = "mutual_tls",
	};
	static const double durations[] = { 0.5, 0.75, 12.25, 3600000, 5000000 };
	static const struct {
		const char *le, *count;
	} want[] = {
		{ "0.5", "1" }, { "1", "2" }, { "5", "2" }, { "10", "2" }, { "25", "3" },
		{ "1000", "3" }, { "1800000", "3" }, { "3600000", "4" }, { "+Inf", "5" },
	};
	const char *lbl = "{reporter=\"destination\",source_workload=\"sleep\","
	    "source_workload_namespace=\"unknown\",source_principal=\"unknown\","
	    "destination_workload=\"unknown\",destination_workload_namespace=\"unknown\","
	    "destination_service=\"echo.default.svc.cluster.local\",destination_principal=\"unknown\","
	    "request_protocol=\"http\",response_code=\"200\",response_flags=\"-\","
	    "connection_security_policy=\"mutual_tls\"";
	char *out, prefix[1024], buf[64];

	for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++)
		metrics_http_request(m, &l, durations[i], 100 * i, 2000);
	ASSERT_EQ(metrics_series(m), 1);
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, "# TYPE istio_request_duration_milliseconds histogram\n") != NULL);
	ASSERT(strstr(out, "# TYPE istio_request_bytes histogram\n") != NULL);
	ASSERT(strstr(out, "# TYPE istio_response_bytes histogram\n") != NULL);
	ASSERT(strstr(out, "# TYPE istio_requests_total counter\n") != NULL);
	snprintf(prefix, sizeof(prefix), "istio_requests_total%s} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "5");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(prefix, sizeof(prefix), "istio_request_duration_milliseconds_bucket%s,le=\"%s\"} ",
		    lbl, want[i].le);
		if (value_of(out, prefix, buf, sizeof(buf)) == NULL || strcmp(buf, want[i].count) != 0) {
			fprintf(stderr, "bucket le=%s: got %s, want %s\n%s", want[i].le,
			    value_of(out, prefix, buf, sizeof(buf)) ? buf : "(none)", want[i].count, out);
			ASSERT(0);
		}
	}
	/* 19 finite buckets and +Inf per histogram. */
	snprintf(prefix, sizeof(prefix), "istio_request_duration_milliseconds_bucket%s,le=", lbl);
	{
		size_t k = 0;

		for (const char *p = out; (p = strstr(p, prefix)) != NULL; p++)
			k++;
		ASSERT_EQ(k, 20);
	}
	snprintf(prefix, sizeof(prefix), "istio_request_duration_milliseconds_sum%s} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "8600013.5");
	snprintf(prefix, sizeof(prefix), "istio_request_duration_milliseconds_count%s} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "5");
	/* Sizes: 0, 100, 200, 300, 400 bytes; responses 2000 each. */
	snprintf(prefix, sizeof(prefix), "istio_request_bytes_bucket%s,le=\"100\"} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "2");
	snprintf(prefix, sizeof(prefix), "istio_request_bytes_bucket%s,le=\"250\"} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "3");
	snprintf(prefix, sizeof(prefix), "istio_request_bytes_sum%s} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "1000");
	snprintf(prefix, sizeof(prefix), "istio_response_bytes_bucket%s,le=\"1000\"} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "0");
	snprintf(prefix, sizeof(prefix), "istio_response_bytes_bucket%s,le=\"2500\"} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "5");
	snprintf(prefix, sizeof(prefix), "istio_response_bytes_sum%s} ", lbl);
	ASSERT_STREQ(value_of(out, prefix, buf, sizeof(buf)), "10000");
	free(out);
	metrics_free(m);
}

TEST(metrics_process_registration)
{
	struct metrics *m = new_store();
	struct metric_counter *c = metrics_counter(m, "amesh_x_total", "x");
	struct metric_gauge *g;

	ASSERT(c != NULL);
	/* Same name and type: the same counter; another type or a reserved name: refused. */
	ASSERT(metrics_counter(m, "amesh_x_total", "again") == c);
	ASSERT(metrics_gauge(m, "amesh_x_total", "x") == NULL);
	ASSERT(metrics_counter(m, "istio_requests_total", "x") == NULL);
	ASSERT(metrics_counter(m, "amesh_metrics_series_dropped_total", "x") == NULL);
	ASSERT(metrics_counter(m, "9lives", "x") == NULL);
	ASSERT(metrics_counter(m, "has-dash", "x") == NULL);
	ASSERT(metrics_counter(m, "", "x") == NULL);
	g = metrics_gauge(m, "amesh:level", NULL);
	ASSERT(g != NULL);
	metrics_gauge_add(g, 3);
	metrics_gauge_add(g, -5);
	ASSERT_EQ(metrics_gauge_value(g), -2);
	metrics_counter_add(c, 41);
	metrics_counter_add(c, 1);
	ASSERT_EQ(metrics_counter_value(c), 42);
	/* NULL objects are accepted so a failed registration cannot crash the data path. */
	metrics_counter_add(NULL, 1);
	metrics_gauge_add(NULL, 1);
	metrics_gauge_set(NULL, 1);
	ASSERT_EQ(metrics_counter_value(NULL), 0);
	metrics_free(m);
}

TEST(metrics_process_histogram)
{
	struct metrics *m = new_store();
	static const double b[] = { 0.1, 1 };
	static const double unordered[] = { 1, 0.1 };
	struct metric_histogram *h = metrics_histogram(m, "amesh_lat_seconds", "Latency.", b, 2);
	char *out = NULL;

	ASSERT(h != NULL);
	ASSERT(metrics_histogram(m, "amesh_bad_seconds", "x", unordered, 2) == NULL);
	ASSERT(metrics_counter(m, "amesh_lat_seconds", "x") == NULL);
	metrics_histogram_observe(h, 0.05);
	metrics_histogram_observe(h, 0.5);
	metrics_histogram_observe(h, 5);
	metrics_histogram_observe(NULL, 1);
	ASSERT(metrics_render(m, &out) > 0);
	ASSERT(strstr(out, "# TYPE amesh_lat_seconds histogram\n"
	    "amesh_lat_seconds_bucket{le=\"0.1\"} 1\n"
	    "amesh_lat_seconds_bucket{le=\"1\"} 2\n"
	    "amesh_lat_seconds_bucket{le=\"+Inf\"} 3\n"
	    "amesh_lat_seconds_sum 5.55\n"
	    "amesh_lat_seconds_count 3\n") != NULL);
	free(out);
	metrics_free(m);
}
