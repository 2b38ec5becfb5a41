/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for l7/decide.c: the routing decision as a function of (registry, destination, peer,
 * request) - default route and round robin, route backends and their ports, L7 deny, a sidecar's
 * sides, faults, redirects, and the L4 decision.
 */
#include "config.h"

#include <stdint.h>

#include "config/registry.h"
#include "l7/decide.h"
#include "policy/authz.h"
#include "runner.h"

#define FRONT "cluster.local/ns/default/sa/front"
#define EVIL "cluster.local/ns/default/sa/evil"

static struct registry *
reg_with(const char *extra)
{
	static const char base[] =
	    "[node \"node-a\"]\naddress = 192.168.10.1\n"
	    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\n"
	    "labels = app=a, version=v1\n"
	    "[workload \"a2\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n"
	    "labels = app=a, version=v2\n"
	    "[workload \"b1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.4\n"
	    "labels = app=b\n"
	    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\n"
	    "selector = app=a\n"
	    "[service \"bsvc\"]\nnamespace = default\nports = 9090:9999, 80:8888\nselector = app=b\n";
	struct registry *r;
	char *text;

	ASSERT(asprintf(&text, "%s%s", base, extra) > 0);
	r = test_registry(text);
	free(text);
	return r;
}

static uint32_t fixed_rnd;

static uint32_t
rnd(void)
{
	return fixed_rnd;
}

static const char *
no_header(void *arg, const char *name)
{
	return NULL;
}

/* The clock the balancer sees (milliseconds). */
static uint64_t now_ms = 1000;

static struct lb *
fresh_lb(void)
{
	struct lb *lb;

	ASSERT_EQ(lb_new(&lb), 0);
	return lb;
}

static void
decide(const struct registry *r, enum l7_side side, const char *svc, const char *direct,
    const char *principal, const char *method, const char *path, struct lb *lb,
    struct wp_verdict *v)
{
	struct l7_dest d = {
		.reg = r, .side = side, .port = 80,
		.svc = svc ? registry_find(r, REG_SERVICE, svc) : NULL,
		.direct = direct ? registry_find(r, REG_WORKLOAD, direct) : NULL,
	};
	struct l7_peer p = { principal, NULL };
	struct l7_choice c = { rnd, lb, now_ms };
	struct route_req rq = { method, path, "", no_header, NULL };

	l7_decide(&d, &p, &rq, "svc.default", &c, v);
}

/* No route: the service's endpoints in turn, at the service's target port; nothing refused. */
TEST(decide_default_route_round_robin)
{
	struct registry *r = reg_with("");
	struct wp_verdict v;
	struct lb *lb = fresh_lb();

	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_EQ(v.status, 0);
	ASSERT(v.rt == NULL);
	ASSERT_EQ(v.target, 8080);
	ASSERT_STREQ(v.ep->h.name, "a1");
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a2");
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a1");
	ASSERT(v.balanced);
	/* Addressed by workload: that workload, the port asked; the round robin does not move. */
	decide(r, L7_SIDE_WAYPOINT, NULL, "b1", FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "b1");
	ASSERT_EQ(v.target, 80);
	ASSERT(!v.balanced);
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a2");
	/* A connect to a2 failed: skipped for LB_PENALTY_MS, then in turn again. */
	lb_fail(lb, r, v.ep, now_ms);
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a1");
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a1");
	now_ms += LB_PENALTY_MS;
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a1");
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_STREQ(v.ep->h.name, "a2");
	lb_free(lb);
	registry_unref(r);
}

/* A matching route sends to its backend service, at that service's port with the same number. */
TEST(decide_route_backend_port)
{
	struct registry *r = reg_with(
	    "[route \"to-b\"]\nnamespace = default\nservice = svc\nbackends = bsvc\n"
	    "match.path_prefix = /b\n");
	struct wp_verdict v;
	struct lb *lb = fresh_lb();

	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/b/x", lb, &v);
	ASSERT_EQ(v.status, 0);
	ASSERT_STREQ(v.rt->h.name, "to-b");
	ASSERT_STREQ(v.ep->h.name, "b1");
	ASSERT_EQ(v.target, 8888);
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/a", lb, &v);
	ASSERT(v.rt == NULL);
	ASSERT_EQ(v.target, 8080);
	lb_free(lb);
	registry_unref(r);
}

/* L7 policy against the chosen endpoint: denied with the policy named; a sidecar's outbound
 * leaves policy to the destination; its inbound goes to its own workload only. */
TEST(decide_l7_deny_and_sides)
{
	struct registry *r = reg_with(
	    "[policy \"no-admin\"]\nnamespace = default\nselector = app=a\naction = deny\n"
	    "to.paths = /admin*\n");
	struct wp_verdict v;
	struct lb *lb = fresh_lb();

	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/admin/x", lb, &v);
	ASSERT_EQ(v.status, 403);
	ASSERT_STREQ(v.flags, "DENY");
	ASSERT_STREQ(v.body, "RBAC: access denied");
	ASSERT_STREQ(v.policy->h.name, "no-admin");
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/public", lb, &v);
	ASSERT_EQ(v.status, 0);
	decide(r, L7_SIDE_OUT, "svc", NULL, FRONT, "GET", "/admin/x", lb, &v);
	ASSERT_EQ(v.status, 0);
	ASSERT(v.ep != NULL);
	decide(r, L7_SIDE_IN, "svc", "a2", FRONT, "GET", "/admin/x", lb, &v);
	ASSERT_EQ(v.status, 403);
	ASSERT_STREQ(v.ep->h.name, "a2");
	ASSERT_EQ(v.target, 80); /* inbound: the port the CONNECT named */
	/* Inbound whose workload left the registry: never to the app unjudged. */
	decide(r, L7_SIDE_IN, "svc", NULL, FRONT, "GET", "/", lb, &v);
	ASSERT_EQ(v.status, 503);
	ASSERT_STREQ(v.flags, "NR");
	lb_free(lb);
	registry_unref(r);
}

/* Faults and redirects come from the route; the random number decides percentages. */
TEST(decide_fault_and_redirect)
{
	struct registry *r = reg_with(
	    "[route \"faulty\"]\nnamespace = default\nservice = svc\nbackends = svc\n"
	    "match.path_prefix = /f\nfault.abort = 503\nfault.abort_percent = 50\n"
	    "[route \"moved\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /old\n"
	    "redirect.path = /new\n");
	struct wp_verdict v;
	struct lb *lb = fresh_lb();
	int aborted = 0;

	/* 100 draws spread over the whole 32-bit range: about half abort. */
	for (int i = 0; i < 100; i++) {
		fixed_rnd = (uint32_t)i * (UINT32_MAX / 100);
		decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/f", lb, &v);
		if (v.status == 503) {
			ASSERT_STREQ(v.flags, "FI");
			aborted++;
		} else {
			ASSERT_EQ(v.status, 0);
		}
	}
	ASSERT(aborted >= 45 && aborted <= 55);
	fixed_rnd = 0;
	decide(r, L7_SIDE_WAYPOINT, "svc", NULL, FRONT, "GET", "/old/x", lb, &v);
	ASSERT_EQ(v.status, 0);
	ASSERT(v.rt != NULL && v.rt->redirect);
	ASSERT(v.ep == NULL);
	lb_free(lb);
	registry_unref(r);
}

/* The L4 decision: the endpoint, then the destination's L4 policy (not a sidecar's outbound). */
TEST(decide_l4)
{
	struct registry *r = reg_with(
	    "[policy \"front-only\"]\nnamespace = default\nselector = app=a\n"
	    "from.principals = " FRONT "\n");
	struct l7_dest d = { .reg = r, .side = L7_SIDE_WAYPOINT, .port = 80 };
	struct l7_peer front = { FRONT, NULL }, evil = { EVIL, NULL };
	struct lb *lb = fresh_lb();
	struct l7_choice c = { rnd, lb, 0 };
	struct wp_verdict v;

	d.svc = registry_find(r, REG_SERVICE, "svc");
	l7_decide_l4(&d, &front, &c, &v);
	ASSERT_EQ(v.status, 0);
	ASSERT_STREQ(v.ep->h.name, "a1");
	ASSERT_EQ(v.target, 8080);
	l7_decide_l4(&d, &evil, &c, &v);
	ASSERT_EQ(v.status, 403);
	ASSERT_STREQ(v.flags, "DENY");
	ASSERT_STREQ(v.ep->h.name, "a2");
	d.side = L7_SIDE_OUT;
	l7_decide_l4(&d, &evil, &c, &v);
	ASSERT_EQ(v.status, 0);
	d.side = L7_SIDE_IN;
	d.direct = NULL;
	l7_decide_l4(&d, &front, &c, &v);
	ASSERT_EQ(v.status, 503);
	lb_free(lb);
	registry_unref(r);
}
