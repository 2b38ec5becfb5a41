/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for telemetry/admin.c: the host endpoints every role serves, with a role's parts given as
 * callbacks: readiness (the flag, the role's predicate and its reasons), /config_dump (and 500
 * when the role has none), /metrics after the role refreshed its gauges, /quitquitquit. A real
 * libuv loop on 127.0.0.1, a client thread with blocking sockets, a hard timeout.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "telemetry/admin.h"
#include "telemetry/metrics.h"
#include "runner.h"

struct role {
	uv_loop_t loop;
	uv_async_t done, go;
	uv_timer_t hard;
	struct admin *admin;
	struct metrics *metrics;
	struct metric_gauge *g;
	struct sockaddr_storage addr[3];
	int port[3];
	/* What the role answers; set by the client thread between its requests. */
	bool ready, has_dump;
	const char *reason;
	int quits, refreshes, asked;
};

static char *
r_dump(void *arg)
{
	struct role *x = arg;

	return x->has_dump ? strdup("{\"role\": \"test\"}") : NULL;
}

static bool
r_ready(void *arg, FILE *why)
{
	struct role *x = arg;

	x->asked++;
	if (!x->ready && x->reason != NULL && why != NULL)
		fprintf(why, "%s\n", x->reason);
	return x->ready;
}

static void
r_refresh(void *arg)
{
	struct role *x = arg;

	metrics_gauge_set(x->g, ++x->refreshes);
}

static void
r_quit(void *arg)
{
	struct role *x = arg;

	x->quits++;
}

static const struct admin_ops ops = {
	.config_dump = r_dump,
	.ready = r_ready,
	.refresh_metrics = r_refresh,
	.quit = r_quit,
};

/* A port on 127.0.0.1 nobody listens on now. */
static int
free_port(struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	socklen_t len = sizeof(*sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT(fd >= 0);
	ASSERT(bind(fd, (struct sockaddr *)sin, sizeof(*sin)) == 0);
	ASSERT(getsockname(fd, (struct sockaddr *)sin, &len) == 0);
	close(fd);
	return ntohs(sin->sin_port);
}

/* One request; the whole response (the server closes after it), in a static buffer. */
static const char *
request(int port, const char *raw)
{
	static char buf[65536];
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	size_t n = 0;

	ASSERT(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ASSERT(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	ASSERT(send(fd, raw, strlen(raw), MSG_NOSIGNAL) == (ssize_t)strlen(raw));
	for (;;) {
		ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);

		if (r == 0 || (r < 0 && errno == ECONNRESET))
			break;
		ASSERT(r > 0);
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	return buf;
}

/* Asserts the status and the body (after the blank line). */
static void
expect(const char *resp, int status, const char *body)
{
	char want[32];
	const char *b = strstr(resp, "\r\n\r\n");

	snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
	if (strncmp(resp, want, strlen(want)) != 0 || b == NULL ||
	    (body != NULL && strcmp(b + 4, body) != 0)) {
		fprintf(stderr, "want %d %s, got: %s\n", status, body ? body : "", resp);
		ASSERT(0);
	}
}

#define GET(port, path) request(port, "GET " path " HTTP/1.1\r\nHost: x\r\n\r\n")

static void *
client(void *arg)
{
	struct role *x = arg;
	int adm = x->port[0], met = x->port[1], rdy = x->port[2];
	const char *r;

	/* Not ready before the role says so, whatever its predicate would say. */
	x->ready = true;
	expect(GET(rdy, "/healthz/ready"), 503, "not ready\n");
	ASSERT_EQ(x->asked, 0);
	uv_async_send(&x->go); /* admin_set_ready(true) on the loop */
	for (int i = 0; i < 500 && strncmp(GET(rdy, "/healthz/ready"), "HTTP/1.1 200 ", 13) != 0; i++)
		usleep(10000);
	/* Then the role's predicate decides; both listeners answer alike. */
	expect(GET(rdy, "/healthz/ready"), 200, "ready\n");
	expect(GET(adm, "/healthz/ready"), 200, "ready\n");
	x->ready = false;
	expect(GET(rdy, "/healthz/ready"), 503, "not ready\n");
	x->reason = "workload w1 (netns /run/netns/w1): no certificate";
	expect(GET(rdy, "/healthz/ready"), 503,
	    "workload w1 (netns /run/netns/w1): no certificate\n");
	x->ready = true;

	/* The config dump is the role's document; none is a 500. Only on the admin listener. */
	x->has_dump = true;
	r = GET(adm, "/config_dump");
	expect(r, 200, "{\"role\": \"test\"}");
	ASSERT(strstr(r, "\r\nContent-Type: application/json\r\n") != NULL);
	x->has_dump = false;
	expect(GET(adm, "/config_dump"), 500, NULL);
	expect(GET(rdy, "/config_dump"), 404, NULL);

	/* Each scrape refreshes the role's gauges first. */
	r = GET(met, "/metrics");
	expect(r, 200, NULL);
	ASSERT(strstr(r, "\ntest_gauge 1\n") != NULL);
	r = GET(met, "/stats/prometheus");
	ASSERT(strstr(r, "\ntest_gauge 2\n") != NULL);

	/* Quitting: the answer, the role told once, and not ready from then on. */
	expect(request(adm, "GET /quitquitquit HTTP/1.1\r\nHost: x\r\n\r\n"), 405, NULL);
	ASSERT_EQ(x->quits, 0);
	expect(request(adm, "POST /quitquitquit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
	    200, "draining\n");
	ASSERT_EQ(x->quits, 1);
	expect(GET(rdy, "/healthz/ready"), 503, "not ready\n");
	uv_async_send(&x->done);
	return NULL;
}

static void
on_done(uv_async_t *a)
{
	struct role *x = a->data;

	admin_stop(x->admin);
	admin_stop(NULL);
	uv_close((uv_handle_t *)&x->done, NULL);
	uv_close((uv_handle_t *)&x->go, NULL);
	uv_close((uv_handle_t *)&x->hard, NULL);
}

static void
on_go(uv_async_t *a)
{
	struct role *x = a->data;

	admin_set_ready(x->admin, true);
}

static void
on_hard_timeout(uv_timer_t *t)
{
	fprintf(stderr, "test-admin: timed out\n");
	exit(1);
}

TEST(admin_role_callbacks)
{
	static struct role x;
	struct admin_cfg cfg = {
		.role = "test",
		.admin_address = &x.addr[0],
		.metrics_address = &x.addr[1],
		.readiness_address = &x.addr[2],
		.ops = &ops,
		.arg = &x,
	};
	pthread_t th;

	ASSERT_EQ(uv_loop_init(&x.loop), 0);
	ASSERT_EQ(metrics_new(&x.metrics), 0);
	x.g = metrics_gauge(x.metrics, "test_gauge", "A gauge the role sets.");
	cfg.metrics = x.metrics;
	for (int i = 0; i < 3; i++)
		x.port[i] = free_port(&x.addr[i]);
	ASSERT_EQ(admin_start(&x.loop, &cfg, &x.admin), 0);
	uv_async_init(&x.loop, &x.done, on_done);
	uv_async_init(&x.loop, &x.go, on_go);
	x.done.data = x.go.data = &x;
	uv_timer_init(&x.loop, &x.hard);
	uv_timer_start(&x.hard, on_hard_timeout, 20000, 0);
	ASSERT(pthread_create(&th, NULL, client, &x) == 0);
	uv_run(&x.loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	admin_free(x.admin);
	admin_free(NULL);
	metrics_free(x.metrics);
	ASSERT_EQ(uv_loop_close(&x.loop), 0);
}

/* A listen that fails (the address is taken) is reported with its code; the listeners opened
 * before it close on the loop, and the admin is freed after that. */
TEST(admin_not_ready_and_listen_failure)
{
	static struct role x;
	struct admin_cfg cfg = {
		.role = "test",
		.admin_address = &x.addr[0],
		.metrics_address = &x.addr[1],
		.readiness_address = &x.addr[0], /* the admin listener has it already */
		.ops = &ops,
		.arg = &x,
	};
	struct admin *a;

	ASSERT_EQ(uv_loop_init(&x.loop), 0);
	ASSERT_EQ(metrics_new(&x.metrics), 0);
	cfg.metrics = x.metrics;
	free_port(&x.addr[0]);
	free_port(&x.addr[1]);
	ASSERT(admin_start(&x.loop, &cfg, &a) == UV_EADDRINUSE);
	ASSERT(a != NULL);
	uv_run(&x.loop, UV_RUN_DEFAULT);
	admin_free(a);
	metrics_free(x.metrics);
	ASSERT_EQ(uv_loop_close(&x.loop), 0);
}
