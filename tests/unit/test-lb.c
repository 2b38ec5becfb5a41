/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for net/lb.c: round robin per service, the failure penalty and its expiry, a new registry
 * snapshot starting from scratch, and balancing without state when the table cannot be allocated.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "config/registry.h"
#include "core/err.h"
#include "net/lb.h"
#include "runner.h"

/* Three endpoints for svc (a1 a2 a3 in file order), two of them also for half (a1 a2). */
static const char reg_text[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.1\nlabels = app=a, half=y\n"
    "[workload \"a2\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\nlabels = app=a, half=y\n"
    "[workload \"a3\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nlabels = app=a\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a\n"
    "[service \"half\"]\nnamespace = default\nvip = 10.96.0.2\nports = 80\nselector = half=y\n"
    "[service \"none\"]\nnamespace = default\nvip = 10.96.0.3\nports = 80\nselector = app=nobody\n";

static struct registry *
parse_ok(void)
{
	return test_registry(reg_text);
}

static const struct reg_service *
svc(const struct registry *r, const char *name)
{
	const struct reg_service *s = registry_find(r, REG_SERVICE, name);

	ASSERT(s != NULL);
	return s;
}

static const struct reg_workload *
wl(const struct registry *r, const char *name)
{
	const struct reg_workload *w = registry_find(r, REG_WORKLOAD, name);

	ASSERT(w != NULL);
	return w;
}

/* The names of n picks of service name at now, space-separated. */
static const char *
picks(struct lb *lb, const struct registry *r, const char *name, int n, uint64_t now)
{
	static char buf[256];
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		const struct reg_workload *ep = lb_pick(lb, r, svc(r, name), now);

		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? " " : "",
		    ep != NULL ? ep->h.name : "-");
	}
	return buf;
}

/* Each service has its own turn, whatever the others are picked; no endpoints: NULL. */
TEST(lb_round_robin_per_service)
{
	struct registry *r = parse_ok();
	struct lb *lb;

	ASSERT_EQ(lb_new(&lb), 0);
	ASSERT_STREQ(picks(lb, r, "svc", 4, 0), "a1 a2 a3 a1");
	ASSERT_STREQ(picks(lb, r, "half", 3, 0), "a1 a2 a1");
	ASSERT_STREQ(picks(lb, r, "svc", 2, 0), "a2 a3");
	ASSERT_STREQ(picks(lb, r, "none", 2, 0), "- -");
	lb_free(lb);
	lb_free(NULL);
	registry_unref(r);
}

/* A failed endpoint is skipped in every service for LB_PENALTY_MS, then comes back; with every
 * endpoint failed, the one in turn is tried anyway. */
TEST(lb_failure_penalty)
{
	struct registry *r = parse_ok();
	struct lb *lb;

	ASSERT_EQ(lb_new(&lb), 0);
	lb_pick(lb, r, svc(r, "svc"), 1000); /* the balancer now serves snapshot r */
	lb_fail(lb, r, wl(r, "a2"), 1000);
	/* svc's turn is at a2: skipped, a3 instead; then a3 in turn, then a1. */
	ASSERT_STREQ(picks(lb, r, "svc", 3, 1000), "a3 a3 a1");
	ASSERT_STREQ(picks(lb, r, "half", 2, 1000 + LB_PENALTY_MS - 1), "a1 a1");
	/* The penalty ends at failure + LB_PENALTY_MS. */
	ASSERT_STREQ(picks(lb, r, "half", 2, 1000 + LB_PENALTY_MS), "a1 a2");
	lb_fail(lb, r, wl(r, "a1"), 10000);
	lb_fail(lb, r, wl(r, "a2"), 10000);
	ASSERT_STREQ(picks(lb, r, "half", 3, 10001), "a1 a2 a1");
	lb_fail(lb, r, NULL, 10000); /* nothing to penalize: ignored */
	lb_free(lb);
	registry_unref(r);
}

/* Another snapshot (a reload) starts from the first endpoint without penalties; a failure still
 * reported for the old snapshot (a connection that began before the reload) changes nothing in
 * the new one. The balancer's references are dropped (the sanitizer build checks for leaks). */
TEST(lb_registry_change_resets)
{
	struct registry *r1 = parse_ok(), *r2 = parse_ok();
	struct lb *lb;

	ASSERT_EQ(lb_new(&lb), 0);
	ASSERT_STREQ(picks(lb, r1, "svc", 2, 0), "a1 a2");
	lb_fail(lb, r1, wl(r1, "a3"), 0);
	ASSERT_STREQ(picks(lb, r1, "svc", 1, 1), "a1");
	ASSERT_STREQ(picks(lb, r2, "svc", 2, 1), "a1 a2");
	lb_fail(lb, r1, wl(r1, "a1"), 1); /* stale */
	ASSERT_STREQ(picks(lb, r2, "svc", 2, 1), "a3 a1");
	lb_free(lb);
	registry_unref(r1);
	registry_unref(r2);
}

/* Workers share one balancer (lb_ref): a worker still on an older snapshot (a reload under way)
 * is balanced without state and does not take the balancer back to that snapshot, so the newer
 * snapshot's turns go on; the balancer lives until its last holder lets go. */
TEST(lb_shared_older_snapshot_stateless)
{
	struct registry *r1 = parse_ok(), *r2 = parse_ok();
	struct lb *lb, *other;

	ASSERT(r1->gen < r2->gen);
	ASSERT_EQ(lb_new(&lb), 0);
	other = lb_ref(lb);
	ASSERT(other == lb);
	ASSERT_STREQ(picks(lb, r2, "svc", 2, 0), "a1 a2");
	ASSERT_STREQ(picks(other, r1, "svc", 2, 0), "a1 a1");
	lb_fail(other, r1, wl(r1, "a3"), 0); /* stale: ignored */
	ASSERT_STREQ(picks(lb, r2, "svc", 2, 0), "a3 a1");
	lb_free(other);
	ASSERT_STREQ(picks(lb, r2, "svc", 1, 0), "a2");
	lb_free(lb);
	registry_unref(r1);
	registry_unref(r2);
}

static long fail_at = -1, allocs;

static void *
failing_calloc(size_t n, size_t size)
{
	if (allocs++ == fail_at)
		return NULL;
	return calloc(n, size);
}

/* Without its table (allocation failed) the balancer still answers: every service from its first
 * endpoint, no endpoint skipped; the next snapshot tries the allocation again. */
TEST(lb_alloc_failure_stateless)
{
	struct registry *r1 = parse_ok(), *r2 = parse_ok();
	struct lb *lb;

	ASSERT_EQ(lb_new(&lb), 0);
	lb_test_calloc = failing_calloc;
	allocs = 0;
	fail_at = 0;
	ASSERT_STREQ(picks(lb, r1, "svc", 3, 0), "a1 a1 a1");
	lb_fail(lb, r1, wl(r1, "a1"), 0);
	ASSERT_STREQ(picks(lb, r1, "svc", 2, 0), "a1 a1");
	ASSERT_EQ(allocs, 1);
	ASSERT_STREQ(picks(lb, r2, "svc", 3, 0), "a1 a2 a3");
	lb_test_calloc = calloc;
	lb_free(lb);
	registry_unref(r1);
	registry_unref(r2);
}

/* The n-th ejection in a row lasts base * n, capped; the share ejected is percent of the
 * endpoints rounded down, at least one, never all. */
TEST(lb_ejection_arithmetic)
{
	ASSERT_EQ(lb_ejection_ms(30000, 1, 300000), 30000);
	ASSERT_EQ(lb_ejection_ms(30000, 0, 300000), 30000);
	ASSERT_EQ(lb_ejection_ms(30000, 3, 300000), 90000);
	ASSERT_EQ(lb_ejection_ms(30000, 10, 300000), 300000);
	ASSERT_EQ(lb_ejection_ms(30000, 11, 300000), 300000);
	ASSERT_EQ(lb_ejection_ms(30000, UINT64_MAX, 300000), 300000); /* no overflow */
	ASSERT_EQ(lb_ejection_ms(30000, 2, 1000), 30000);              /* cap under base: base */
	ASSERT_EQ(lb_max_ejected(0, 100), 0);
	ASSERT_EQ(lb_max_ejected(1, 100), 0);  /* a single endpoint always stays */
	ASSERT_EQ(lb_max_ejected(2, 100), 1);  /* one of two stays */
	ASSERT_EQ(lb_max_ejected(2, 10), 1);   /* at least one may go (Envoy's rule) */
	ASSERT_EQ(lb_max_ejected(2, 0), 1);
	ASSERT_EQ(lb_max_ejected(10, 10), 1);
	ASSERT_EQ(lb_max_ejected(10, 35), 3);
	ASSERT_EQ(lb_max_ejected(10, 100), 9);
	ASSERT_EQ(lb_max_ejected(20, 50), 10);
	ASSERT_EQ(lb_max_ejected(3, 250), 2);  /* over 100 is 100 */
}

/* od: three endpoints, three consecutive 5xx eject for 1 s (times the ejections in a row, at most
 * 3 s), at most one out at a time (50 % of 3, rounded down). gw: two endpoints, two consecutive
 * gateway errors, every one may go but one. */
static const char od_text[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.1\nlabels = app=a, half=y\n"
    "[workload \"a2\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\nlabels = app=a, half=y\n"
    "[workload \"a3\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nlabels = app=a\n"
    "[service \"od\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a\n"
    "outlier_detection.consecutive_5xx_errors = 3\n"
    "outlier_detection.base_ejection_time = 1s\n"
    "outlier_detection.max_ejection_time = 3s\n"
    "outlier_detection.max_ejection_percent = 50\n"
    "connection_pool.http.http2_max_requests = 2\n"
    "connection_pool.tcp.max_connections = 1\n"
    "[service \"gw\"]\nnamespace = default\nvip = 10.96.0.2\nports = 80\nselector = half=y\n"
    "outlier_detection.consecutive_gateway_errors = 2\n"
    "outlier_detection.max_ejection_percent = 100\n";

static void
report(struct lb *lb, const struct registry *r, const char *s, const char *w, int status, int n,
    uint64_t now)
{
	for (int i = 0; i < n; i++)
		lb_result(lb, r, svc(r, s), wl(r, w), status, now);
}

TEST(lb_outlier_eject_and_return)
{
	struct registry *r = test_registry(od_text);
	struct lb *lb;

	ASSERT(r != NULL);
	ASSERT_EQ(svc(r, "od")->od_base_ejection, 1000);
	ASSERT_EQ(svc(r, "gw")->od_base_ejection, 30000); /* the default */
	ASSERT_EQ(svc(r, "gw")->od_5xx, 0);
	ASSERT_EQ(lb_new(&lb), 0);
	ASSERT_STREQ(picks(lb, r, "od", 3, 0), "a1 a2 a3");
	/* Two 5xx, a success, two more: never three in a row. */
	report(lb, r, "od", "a2", 503, 2, 10);
	report(lb, r, "od", "a2", 404, 1, 10);
	report(lb, r, "od", "a2", 500, 2, 10);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 10), 0);
	report(lb, r, "od", "a2", 500, 1, 100); /* the third in a row */
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 100), 1);
	ASSERT_STREQ(picks(lb, r, "od", 4, 500), "a1 a3 a3 a1");
	/* The limit: a1 failing too stays in while a2 is out. */
	report(lb, r, "od", "a1", 503, 5, 600);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 600), 1);
	/* a2 is back at 100 + 1000; a1's next error ejects it then. */
	ASSERT_STREQ(picks(lb, r, "od", 3, 1099), "a3 a3 a1");
	ASSERT_STREQ(picks(lb, r, "od", 3, 1100), "a2 a3 a1");
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 1100), 0);
	report(lb, r, "od", "a1", LB_LOCAL_FAILURE, 1, 1200);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 1200), 1);
	ASSERT_STREQ(picks(lb, r, "od", 3, 1300), "a2 a3 a2");
	/* Reports about an ejected endpoint (requests that were in flight) change nothing. */
	report(lb, r, "od", "a1", 200, 1, 1300);
	report(lb, r, "od", "a1", 503, 3, 2199);
	ASSERT_STREQ(picks(lb, r, "od", 2, 2199), "a2 a3");
	/* Back at 2200; ejected again at once: the second in a row lasts 2 s, then 3 s (the cap). */
	report(lb, r, "od", "a1", 503, 3, 2200);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 4199), 1);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 4200), 0);
	report(lb, r, "od", "a1", 503, 3, 4200);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 7199), 1);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 7200), 0);
	/* Healthy for three ejection times: its multiplier is down to 0, the next one lasts 1 s. */
	report(lb, r, "od", "a1", 503, 3, 10200);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 11199), 1);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "od"), 11200), 0);
	/* Another snapshot's reports are ignored; unknown endpoints and services too. */
	lb_result(lb, r, NULL, wl(r, "a1"), 503, 0);
	lb_result(lb, r, svc(r, "od"), NULL, 503, 0);
	lb_free(lb);
	registry_unref(r);
}

/* A 500 is a 5xx but no gateway error: it breaks a run of them. With both endpoints failing, one
 * stays whatever max_ejection_percent says. */
TEST(lb_outlier_gateway_errors)
{
	struct registry *r = test_registry(od_text);
	struct lb *lb;

	ASSERT(r != NULL);
	ASSERT_EQ(lb_new(&lb), 0);
	ASSERT_STREQ(picks(lb, r, "gw", 2, 0), "a1 a2");
	report(lb, r, "gw", "a1", 502, 1, 0);
	report(lb, r, "gw", "a1", 500, 1, 0);
	report(lb, r, "gw", "a1", 504, 1, 0);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "gw"), 0), 0);
	report(lb, r, "gw", "a1", LB_LOCAL_FAILURE, 1, 0);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "gw"), 0), 1);
	report(lb, r, "gw", "a2", 503, 10, 0);
	ASSERT_EQ(lb_ejected(lb, r, svc(r, "gw"), 0), 1);
	ASSERT_STREQ(picks(lb, r, "gw", 3, 1), "a2 a2 a2");
	/* Ejection per service: a1 is still in for od. */
	ASSERT_STREQ(picks(lb, r, "od", 3, 1), "a1 a2 a3");
	lb_free(lb);
	registry_unref(r);
}

/* A reload neither returns an ejected endpoint early nor forgets a run of errors. */
TEST(lb_outlier_carried_across_reload)
{
	struct registry *r1 = test_registry(od_text), *r2 = test_registry(od_text);
	struct lb *lb;

	ASSERT(r1 != NULL && r2 != NULL);
	ASSERT_EQ(lb_new(&lb), 0);
	picks(lb, r1, "od", 1, 0);
	report(lb, r1, "od", "a3", 503, 3, 0);
	report(lb, r1, "od", "a2", 503, 2, 0);
	ASSERT_STREQ(picks(lb, r2, "od", 3, 10), "a1 a2 a1");
	ASSERT_EQ(lb_ejected(lb, r2, svc(r2, "od"), 10), 1);
	report(lb, r2, "od", "a2", 503, 1, 10); /* the third in a row: a3 is out, so a2 stays */
	ASSERT_EQ(lb_ejected(lb, r2, svc(r2, "od"), 10), 1);
	ASSERT_STREQ(picks(lb, r2, "od", 3, 1000), "a1 a2 a3"); /* a3 back */
	lb_free(lb);
	registry_unref(r1);
	registry_unref(r2);
}

/* Places are refused past the limit, given back, and kept across a reload and past the
 * balancer's end (the requests holding them finish later). */
TEST(lb_pool_limits)
{
	struct registry *r1 = test_registry(od_text), *r2 = test_registry(od_text);
	struct lb_pool *p1, *p2, *p3, *c1, *c2, *g;
	struct lb *lb;

	ASSERT(r1 != NULL && r2 != NULL);
	ASSERT_EQ(lb_new(&lb), 0);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_REQUESTS, &p1), 0);
	ASSERT(p1 != NULL);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_REQUESTS, &p2), 0);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_REQUESTS, &p3), -EBUSY);
	ASSERT(p3 == NULL);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_CONNECTIONS, &c1), 0);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_CONNECTIONS, &c2), -EBUSY);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_PENDING, &g), 0); /* no limit */
	ASSERT_EQ(lb_pool_count(g, LB_PENDING), 1);
	lb_release(g, LB_PENDING);
	lb_release(p1, LB_REQUESTS);
	ASSERT_EQ(lb_take(lb, r1, svc(r1, "od"), LB_REQUESTS, &p1), 0);
	/* Another snapshot: the same pool, still full. */
	ASSERT_EQ(lb_take(lb, r2, svc(r2, "od"), LB_REQUESTS, &p3), -EBUSY);
	ASSERT_EQ(lb_pool_count(p1, LB_REQUESTS), 2);
	lb_release(p2, LB_REQUESTS);
	ASSERT_EQ(lb_take(lb, r2, svc(r2, "od"), LB_REQUESTS, &p3), 0);
	ASSERT(p3 == p1);
	lb_free(lb);
	ASSERT_EQ(lb_pool_count(p1, LB_REQUESTS), 2);
	lb_release(p1, LB_REQUESTS);
	lb_release(p3, LB_REQUESTS);
	lb_release(c1, LB_CONNECTIONS);
	lb_release(NULL, LB_REQUESTS);
	registry_unref(r1);
	registry_unref(r2);
}
