/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for net/lb.c: round robin per service, the failure penalty and its expiry, a new registry
 * snapshot starting from scratch, and balancing without state when the table cannot be allocated.
 */
#include "config.h"

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
