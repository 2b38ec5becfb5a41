/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for replicated and namespace waypoints (issue 18): the registry's waypoint address list,
 * node list and allowed_namespaces, [namespace] sections and waypoint = none (config/regcheck.c),
 * and the balancer's picks over a waypoint's instances (net/lb.c).
 */
#include "config.h"

#include <arpa/inet.h>
#include <string.h>

#include "config/registry.h"
#include "core/diag.h"
#include "core/parse.h"
#include "net/lb.h"
#include "runner.h"

/* Two waypoints: wp (namespace default, two instances on two nodes, serving "shared" and
 * "team-*" too) and solo (namespace default, one instance). */
static const char base[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"                                  /* 1-2 */
    "[node \"node-b\"]\naddress = 192.168.10.2\n"                                  /* 3-4 */
    "[waypoint \"wp\"]\nnamespace = default\nservice_account = waypoint\n"         /* 5-7 */
    "address = 192.168.10.9, 192.168.10.10\nnode = node-a, node-b\n"               /* 8-9 */
    "allowed_namespaces = shared, team-*\n"                                        /* 10 */
    "[waypoint \"solo\"]\nnamespace = default\naddress = 192.168.10.11\n"          /* 11-13 */
    "[workload \"a\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\nlabels = app=a\n" /* 14-18 */
    "[workload \"t\"]\nnamespace = team-x\nnode = node-a\naddresses = 10.1.1.3\nlabels = app=t\n"; /* 19-23 */

/* base + extra, which must parse. */
static struct registry *
with(const char *extra)
{
	static char buf[8192];

	snprintf(buf, sizeof(buf), "%s%s", base, extra);
	return test_registry(buf);
}

/* The messages of base + extra, which must fail to parse, on one line each. */
static const char *
errors_of(const char *extra)
{
	static char buf[8192], out[4096];
	struct registry *r = NULL;
	struct diag d;
	size_t len = 0;

	snprintf(buf, sizeof(buf), "%s%s", base, extra);
	diag_init(&d);
	ASSERT(registry_parse_buffer("reg.conf", buf, strlen(buf), &r, &d) != 0);
	ASSERT(r == NULL);
	out[0] = '\0';
	for (size_t i = 0; i < d.n; i++)
		len += (size_t)snprintf(out + len, sizeof(out) - len, "%s%s", i ? "\n" : "",
		    d.msg[i]);
	diag_clear(&d);
	return out;
}

static const struct reg_service *
svc(const struct registry *r, const char *name)
{
	const struct reg_service *s = registry_find(r, REG_SERVICE, name);

	ASSERT(s != NULL);
	return s;
}

/* A waypoint's addresses are its instances: every one indexed as the waypoint's, nodes listed. */
TEST(waypoint_replicas_registry)
{
	struct registry *r = with("");
	const struct reg_waypoint *wp = registry_find(r, REG_WAYPOINT, "wp");
	struct ip_addr x;

	ASSERT(wp != NULL);
	ASSERT_EQ(wp->addresses.n, 2);
	ASSERT(parse_ip("192.168.10.10", &x, NULL) == 0);
	ASSERT(registry_addr_owner(r, &x) != NULL);
	ASSERT_EQ(registry_addr_owner(r, &x)->kind, REG_WAYPOINT);
	ASSERT(registry_addr_owner(r, &x)->ent == wp);
	ASSERT(reg_waypoint_on_node(wp, "node-a") && reg_waypoint_on_node(wp, "node-b"));
	ASSERT(!reg_waypoint_on_node(wp, "node-c"));
	ASSERT(!reg_waypoint_on_node(registry_find(r, REG_WAYPOINT, "solo"), "node-a"));
	ASSERT(reg_waypoint_allows(wp, "default") && reg_waypoint_allows(wp, "shared") &&
	    reg_waypoint_allows(wp, "team-x") && !reg_waypoint_allows(wp, "other"));
	registry_unref(r);
}

/* A namespace names the waypoint of its services and workloads; their own key wins, "none" opts
 * out, external services never take one. */
TEST(waypoint_namespace_attachment)
{
	struct registry *r = with(
	    "[namespace \"default\"]\nwaypoint = solo\n"
	    "[service \"plain\"]\nnamespace = default\nports = 80\nselector = app=a\n"
	    "[service \"own\"]\nnamespace = default\nports = 80\nselector = app=a\nwaypoint = wp\n"
	    "[service \"opt-out\"]\nnamespace = default\nports = 80\nselector = app=a\nwaypoint = none\n"
	    "[service \"ext\"]\nnamespace = default\nexternal = yes\nhostname = api.example.com\nports = 443\n"
	    "[service \"elsewhere\"]\nnamespace = team-x\nports = 80\nselector = app=t\n"
	    "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.4\nwaypoint = none\n");
	const struct reg_waypoint *solo = registry_find(r, REG_WAYPOINT, "solo");
	const struct reg_waypoint *wp = registry_find(r, REG_WAYPOINT, "wp");

	ASSERT(svc(r, "plain")->waypoint_p == solo);
	ASSERT(svc(r, "own")->waypoint_p == wp);
	ASSERT(svc(r, "opt-out")->waypoint_p == NULL);
	ASSERT(svc(r, "ext")->waypoint_p == NULL);
	ASSERT(svc(r, "elsewhere")->waypoint_p == NULL); /* team-x has no namespace waypoint */
	ASSERT(((const struct reg_workload *)registry_find(r, REG_WORKLOAD, "a"))->waypoint_p == solo);
	ASSERT(((const struct reg_workload *)registry_find(r, REG_WORKLOAD, "b"))->waypoint_p == NULL);
	ASSERT(((const struct reg_workload *)registry_find(r, REG_WORKLOAD, "t"))->waypoint_p == NULL);
	ASSERT_EQ(r->n[REG_NAMESPACE], 1);
	registry_unref(r);

	/* Across namespaces where the waypoint allows it: by pattern, and for a whole namespace. */
	r = with("[namespace \"team-x\"]\nwaypoint = wp\n"
	    "[service \"s\"]\nnamespace = shared\nports = 80\nselector = app=s\nwaypoint = wp\n");
	ASSERT(svc(r, "s")->waypoint_p == registry_find(r, REG_WAYPOINT, "wp"));
	ASSERT(((const struct reg_workload *)registry_find(r, REG_WORKLOAD, "t"))->waypoint_p ==
	    registry_find(r, REG_WAYPOINT, "wp"));
	registry_unref(r);
}

/* What cannot load, each with its file and line. */
TEST(waypoint_attachment_errors)
{
	static const struct {
		const char *extra, *want;
	} cases[] = {
		/* A service in a namespace the waypoint does not serve. */
		{ "[service \"s\"]\nnamespace = other\nports = 80\nselector = app=s\nwaypoint = solo\n",
		  "reg.conf:28: service \"s\" (namespace other): waypoint \"solo\" (namespace default, "
		  "reg.conf:11) does not serve namespace other; list it in the waypoint's "
		  "allowed_namespaces" },
		{ "[workload \"o\"]\nnamespace = other\nnode = node-a\naddresses = 10.1.1.9\nwaypoint = wp\n",
		  "reg.conf:28: workload \"o\" (namespace other): waypoint \"wp\" (namespace default, "
		  "reg.conf:5) does not serve namespace other; list it in the waypoint's "
		  "allowed_namespaces" },
		/* A namespace section: the error is at its line, once. */
		{ "[namespace \"other\"]\nwaypoint = solo\n"
		  "[service \"s\"]\nnamespace = other\nports = 80\nselector = app=s\n",
		  "reg.conf:25: namespace \"other\" (namespace other): waypoint \"solo\" (namespace "
		  "default, reg.conf:11) does not serve namespace other; list it in the waypoint's "
		  "allowed_namespaces" },
		{ "[namespace \"other\"]\nwaypoint = ghost\n",
		  "reg.conf:25: namespace \"other\": waypoint \"ghost\" is not defined" },
		{ "[namespace \"other\"]\ncolor = red\n",
		  "reg.conf:25: namespace \"other\": unknown key 'color'" },
		{ "[namespace \"a.b\"]\n",
		  "reg.conf:24: namespace \"a.b\": not a valid namespace name (lower-case letters, "
		  "digits and '-', at most 63)" },
		{ "[namespace \"x\"]\n[namespace \"x\"]\n",
		  "reg.conf:25: duplicate namespace \"x\" (first defined at reg.conf:24)" },
		{ "[waypoint \"none\"]\nnamespace = default\naddress = 192.168.10.12\n",
		  "reg.conf:24: waypoint \"none\": the name is reserved (waypoint = none means no "
		  "waypoint)" },
		{ "[waypoint \"w2\"]\nnamespace = default\naddress = 192.168.10.12\nnode = node-z\n",
		  "reg.conf:27: waypoint \"w2\": node \"node-z\" is not defined" },
		{ "[waypoint \"w2\"]\nnamespace = default\naddress = 192.168.10.12, 192.168.10.9\n",
		  "reg.conf:26: waypoint \"w2\": address 192.168.10.9 is already used by waypoint "
		  "\"wp\" (reg.conf:5)" },
		{ "[waypoint \"w2\"]\nnamespace = default\naddress = 192.168.10.12\n"
		  "allowed_namespaces = a*b\n",
		  "reg.conf:27: waypoint \"w2\": allowed_namespaces: 'a*b': '*' may only stand at the start or the end of a pattern" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ASSERT_STREQ(errors_of(cases[i].extra), cases[i].want);
	{
		/* More instances than the bound, on repeated address lines (a list key adds up). */
		char extra[4096];
		size_t len;

		/* Over one line of 200 bytes: written as repeated address lines. */
		len = (size_t)snprintf(extra, sizeof(extra), "[waypoint \"big\"]\nnamespace = default\n");
		for (int i = 1; i <= REG_WP_MAX_ADDRESSES + 1; i++)
			len += (size_t)snprintf(extra + len, sizeof(extra) - len, "address = 10.9.0.%d\n", i);
		ASSERT_STREQ(errors_of(extra), "reg.conf:26: waypoint \"big\": 65 addresses; at most 64 "
		    "(one per instance)");
	}
}

/* The balancer spreads a waypoint's tunnels over its instances, skips a failed one for
 * LB_PENALTY_MS, and a request's failover never goes back to an instance it tried. */
TEST(waypoint_lb_spread_and_failover)
{
	struct registry *r = with("[waypoint \"tri\"]\nnamespace = default\n"
	    "address = 10.8.0.1, 10.8.0.2, 10.8.0.3\n");
	const struct reg_waypoint *wp = registry_find(r, REG_WAYPOINT, "tri");
	const struct ip_addr *v = wp->addresses.v, *ip;
	struct lb *lb;
	int count[3] = { 0, 0, 0 };

	ASSERT_EQ(lb_new(&lb), 0);
	for (int i = 0; i < 300; i++)
		count[lb_pick_waypoint(lb, r, wp, 0, 0) - v]++;
	ASSERT(count[0] == 100 && count[1] == 100 && count[2] == 100);
	/* Instance 1 failed at t=1000: skipped until 1000 + LB_PENALTY_MS. */
	lb_fail_waypoint(lb, r, &v[1], 1000);
	for (int i = 0; i < 30; i++)
		ASSERT(lb_pick_waypoint(lb, r, wp, 0, 1001) != &v[1]);
	count[0] = count[1] = count[2] = 0;
	for (int i = 0; i < 30; i++)
		count[lb_pick_waypoint(lb, r, wp, 0, 1000 + LB_PENALTY_MS) - v]++;
	ASSERT(count[1] == 10);
	/* Failover: tried 0 and 2 -> 1 even though penalized (the only one left), then nothing. */
	lb_fail_waypoint(lb, r, &v[1], 20000);
	ip = lb_pick_waypoint(lb, r, wp, 1u | 4u, 20001);
	ASSERT(ip == &v[1]);
	ASSERT(lb_pick_waypoint(lb, r, wp, 7u, 20001) == NULL);
	/* Tried 0, 1 penalized, 2 free: 2. */
	ASSERT(lb_pick_waypoint(lb, r, wp, 1u, 20001) == &v[2]);
	/* A failure reported against another snapshot is ignored. */
	{
		struct registry *r2 = with("[waypoint \"tri\"]\nnamespace = default\n"
		    "address = 10.8.0.1, 10.8.0.2, 10.8.0.3\n");
		const struct reg_waypoint *wp2 = registry_find(r2, REG_WAYPOINT, "tri");

		lb_fail_waypoint(lb, r2, &wp2->addresses.v[0], 30000);
		ASSERT(lb_pick_waypoint(lb, r, wp, 6u, 30001) == &v[0]);
		registry_unref(r2);
	}
	lb_free(lb);
	registry_unref(r);
}
