/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for config/registry.c: the example, O(1) lookups, selectors, every error message, reloads. */
#include "config.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/registry.h"
#include "config/regwatch.h"
#include "runner.h"

static struct registry *
load_ok_dir(const char *dir)
{
	struct registry *r;
	struct diag d;

	diag_init(&d);
	if (registry_load_dir(dir, &r, &d) != 0) {
		diag_print(&d, stderr);
		ASSERT(!"registry did not load");
	}
	diag_clear(&d);
	return r;
}

static struct ip_addr
ip(const char *s)
{
	struct ip_addr a;
	const char *why;

	ASSERT(parse_ip(s, &a, &why) == 0);
	return a;
}

TEST(registry_example)
{
	char *dir;
	struct registry *r;
	const struct reg_service *s;
	const struct reg_route *rt;
	const struct reg_workload *w;

	ASSERT(asprintf(&dir, "%s/etc/registry.d", TOP_SRCDIR) > 0);
	r = load_ok_dir(dir);
	ASSERT_EQ(r->n[REG_NODE], 2);
	ASSERT_EQ(r->n[REG_WORKLOAD], 4);
	ASSERT_EQ(r->n[REG_SERVICE], 2);
	ASSERT_EQ(r->n[REG_WAYPOINT], 1);
	ASSERT_EQ(r->n[REG_POLICY], 2);
	ASSERT_EQ(r->n[REG_ROUTE], 1);
	s = registry_find(r, REG_SERVICE, "reviews");
	ASSERT(s != NULL && s->waypoint_p == registry_find(r, REG_WAYPOINT, "default-wp"));
	ASSERT_EQ(s->n_endpoints, 2);
	ASSERT_STREQ(s->endpoints[0]->h.name, "reviews-v1");
	ASSERT_STREQ(s->endpoints[1]->h.name, "reviews-v2");
	ASSERT_EQ(s->ports.n, 2);
	ASSERT(s->ports.v[1].port == 80 && s->ports.v[1].target == 9080);
	rt = registry_find(r, REG_ROUTE, "reviews-canary");
	ASSERT(rt != NULL && rt->service_p == s);
	ASSERT(rt->backends_p[0].workload == registry_find(r, REG_WORKLOAD, "reviews-v1"));
	ASSERT_EQ(rt->backends_p[0].weight, 90);
	ASSERT_EQ(rt->backends_p[1].weight, 10);
	ASSERT_EQ(rt->timeout, 2000);
	ASSERT_EQ(rt->retries, 2);
	ASSERT_EQ(rt->retry_on.n, 2);
	w = registry_find(r, REG_WORKLOAD, "legacy-db");
	ASSERT(w != NULL && w->protocol == REG_PROTO_TCP);
	ASSERT_STREQ(w->service_account, "default");
	ASSERT_EQ(w->mtls_mode, REG_MTLS_STRICT);
	ASSERT_STREQ(w->node_p->h.name, "node-b");
	/* Defaults that depend on the name. */
	s = registry_find(r, REG_SERVICE, "productpage");
	ASSERT_STREQ(s->hostname, "productpage.default.svc.cluster.local");
	registry_unref(r);
	free(dir);
}

TEST(registry_lookups)
{
	struct registry *r = test_registry(
	    "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[workload \"a\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1, fd00::1\nlabels = app=a\n"
	    "[waypoint \"wp\"]\nnamespace = ns\naddress = 10.0.0.9\n"
	    "[service \"s\"]\nnamespace = ns\nvip = 10.96.0.1, fd00:96::1\nports = 80:8080, 443\n"
	    "selector = app=a\nwaypoint = wp\n");
	const struct reg_workload *a = registry_find(r, REG_WORKLOAD, "a");
	const struct reg_vip *v;
	struct ip_addr x;

	ASSERT(a != NULL);
	x = ip("10.0.0.1");
	ASSERT(registry_workload_by_addr(r, &x) == a);
	x = ip("fd00::1");
	ASSERT(registry_workload_by_addr(r, &x) == a);
	x = ip("10.0.0.2");
	ASSERT(registry_workload_by_addr(r, &x) == NULL);
	/* A waypoint's address is owned, but it is not a workload. */
	x = ip("10.0.0.9");
	ASSERT(registry_workload_by_addr(r, &x) == NULL);
	ASSERT(registry_addr_owner(r, &x)->kind == REG_WAYPOINT);
	x = ip("192.168.0.1");
	ASSERT(registry_addr_owner(r, &x)->kind == REG_NODE);
	x = ip("10.96.0.1");
	v = registry_service_by_vip(r, &x, 80);
	ASSERT(v != NULL && v->port->target == 8080);
	ASSERT_STREQ(v->service->h.name, "s");
	ASSERT(registry_service_by_vip(r, &x, 443)->port->target == 443);
	ASSERT(registry_service_by_vip(r, &x, 8080) == NULL);
	x = ip("fd00:96::1");
	ASSERT(registry_service_by_vip(r, &x, 443) != NULL);
	ASSERT(registry_service_by_hostname(r, "s.ns.svc.cluster.local") == v->service);
	ASSERT(registry_service_by_hostname(r, "t.ns.svc.cluster.local") == NULL);
	ASSERT(registry_find(r, REG_SERVICE, "nope") == NULL);
	ASSERT_STREQ(registry_kind_name(REG_POLICY), "policy");
	registry_unref(r);
	registry_unref(NULL);
}

TEST(registry_endpoints_and_policies)
{
	struct registry *r = test_registry(
	    "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[workload \"a1\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1\nlabels = app=a, v=1\n"
	    "[workload \"a2\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.2\nlabels = app=a, v=2\n"
	    "[workload \"a3\"]\nnamespace = other\nnode = n\naddresses = 10.0.0.3\nlabels = app=a, v=1\n"
	    "[service \"all\"]\nnamespace = ns\nports = 80\nselector = app=a\n"
	    "[service \"v1\"]\nnamespace = ns\nports = 80\nselector = v=1, app=a\n"
	    "[service \"none\"]\nnamespace = ns\nports = 80\nselector = app=b\n"
	    "[policy \"p1\"]\nnamespace = ns\nfrom.namespaces = ns\nto.ports = 80\n"
	    "[policy \"p2\"]\nnamespace = other\naction = deny\n"
	    "[policy \"p3\"]\nnamespace = ns\nselector = v=2\nto.paths = /admin*\n");
	const struct reg_service *s;
	const struct reg_policy *const *pv;
	size_t n;

	s = registry_find(r, REG_SERVICE, "all");
	ASSERT_EQ(s->n_endpoints, 2); /* a3 has the labels but lives in another namespace */
	s = registry_find(r, REG_SERVICE, "v1");
	ASSERT_EQ(s->n_endpoints, 1);
	ASSERT_STREQ(s->endpoints[0]->h.name, "a1");
	ASSERT_EQ(((const struct reg_service *)registry_find(r, REG_SERVICE, "none"))->n_endpoints, 0);
	pv = registry_policies_in(r, "ns", &n);
	ASSERT_EQ(n, 2);
	ASSERT_STREQ(pv[0]->h.name, "p1");
	ASSERT(!pv[0]->has_l7 && pv[0]->action == REG_ALLOW);
	ASSERT_STREQ(pv[1]->h.name, "p3");
	ASSERT(pv[1]->has_l7);
	pv = registry_policies_in(r, "other", &n);
	ASSERT(n == 1 && pv[0]->action == REG_DENY);
	ASSERT(registry_policies_in(r, "empty", &n) == NULL && n == 0);
	registry_unref(r);
}

/* Every case is appended to this base (lines 1-15), so line numbers count from its start. */
static const char reg_base[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\nlabels = app=a\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a\n"
    "[waypoint \"wp\"]\nnamespace = default\naddress = 10.1.1.9\n";

static const struct {
	const char *text, *error;
} reg_bad[] = {
	{ "[workload \"b\"]\nnamespace = default\nnode = node-z\naddresses = 10.1.1.3",
	    "reg.conf:18: workload \"b\": node \"node-z\" is not defined" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2",
	    "reg.conf:19: workload \"b\": address 10.1.1.2 is already used by workload \"a\" (reg.conf:3)" },
	{ "[workload \"a\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.4",
	    "reg.conf:16: duplicate workload \"a\" (first defined at reg.conf:3)" },
	{ "[workload \"b\"]\nnode = node-a\naddresses = 10.1.1.3",
	    "reg.conf:16: workload \"b\": missing required key 'namespace'" },
	{ "[workload \"b\"]\nnamespace = Default\nnode = node-a\naddresses = 10.1.1.3",
	    "reg.conf:17: workload \"b\": namespace: 'Default' is not a valid name (lower-case letters, digits and '-', at most 63)" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.300",
	    "reg.conf:19: workload \"b\": addresses: '10.1.1.300': expected an IPv4 or IPv6 address" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3, 10.1.1.3",
	    "reg.conf:19: workload \"b\": addresses: '10.1.1.3' listed twice" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3,",
	    "reg.conf:19: workload \"b\": addresses: empty item in list" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nlabels = app",
	    "reg.conf:20: workload \"b\": labels: 'app': expected KEY=VALUE" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nlabels = app=a b",
	    "reg.conf:20: workload \"b\": labels: bad label value 'a b' for 'app'" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nprotocol = udp",
	    "reg.conf:20: workload \"b\": protocol: 'udp': expected one of hbone, tcp" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nwaypoint = nowp",
	    "reg.conf:20: workload \"b\": waypoint \"nowp\" is not defined" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 192.168.10.1",
	    "reg.conf:19: workload \"b\": address 192.168.10.1 is already used by node \"node-a\" (reg.conf:1)" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\ncolor = red",
	    "reg.conf:20: workload \"b\": unknown key 'color'" },
	{ "[workload]\nnamespace = default",
	    "reg.conf:16: section [workload] needs a name: [workload \"NAME\"]" },
	{ "[widget \"x\"]\nnamespace = default",
	    "reg.conf:16: unknown section kind 'widget' (expected node, workload, service, waypoint, policy, route or namespace)" },
	{ "[workload \"B_1\"]\nnamespace = default",
	    "reg.conf:16: workload name 'B_1' is not valid (lower-case letters, digits, '-' and '.', at most 253)" },
	{ "[workload b]\nnamespace = default",
	    "reg.conf:16: section [workload] needs a name: [workload \"NAME\"]" },
	{ "[service \"s2\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a",
	    "reg.conf:18: service \"s2\": 10.96.0.1 port 80 is already used by service \"svc\" (reg.conf:8)" },
	{ "[service \"s2\"]\nnamespace = default\nvip = 10.1.1.2\nports = 80\nselector = app=a",
	    "reg.conf:18: service \"s2\": vip 10.1.1.2 is the address of workload \"a\" (reg.conf:3)" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80, 80\nselector = app=a",
	    "reg.conf:18: service \"s2\": ports: port 80 listed twice" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80:0\nselector = app=a",
	    "reg.conf:18: service \"s2\": ports: '80:0': port out of range 1-65535 (expected PORT or PORT:TARGET_PORT)" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80\nselector = app=a\nwaypoint = missing",
	    "reg.conf:20: service \"s2\": waypoint \"missing\" is not defined" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80",
	    "reg.conf:16: service \"s2\": missing required key 'selector'" },
	{ "[service \"x\"]\nnamespace = default\nexternal = yes\nports = 443",
	    "reg.conf:16: service \"x\": external = yes needs the destination's hostname" },
	{ "[service \"x\"]\nnamespace = default\nexternal = yes\nhostname = api.example.com\nports = 443\nselector = app=a",
	    "reg.conf:21: service \"x\": an external service has no selector (its destination is hostname or addresses)" },
	{ "[service \"x\"]\nnamespace = default\nports = 80\nselector = app=a\naddresses = 192.0.2.1",
	    "reg.conf:20: service \"x\": addresses and from.* are for external services (external = yes)" },
	{ "[service \"x\"]\nnamespace = default\nexternal = yes\nhostname = api.example.com\nports = 443\nfrom.principals = spiffe://cluster.local/ns/a/sa/b",
	    "reg.conf:21: service \"x\": principals are written without 'spiffe://' (TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT): 'spiffe://cluster.local/ns/a/sa/b'" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80\nselector = =a",
	    "reg.conf:19: service \"s2\": selector: bad label key ''" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80\nselector = app=a\nhostname = svc.default.svc.cluster.local",
	    "reg.conf:20: service \"s2\": hostname svc.default.svc.cluster.local is already used by service \"svc\" (reg.conf:8)" },
	{ "[route \"r\"]\nnamespace = default\nservice = nosvc\nbackends = svc",
	    "reg.conf:18: route \"r\": service \"nosvc\" is not defined" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = ghost 10",
	    "reg.conf:19: route \"r\": backend \"ghost\" is neither a service nor a workload" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc 2000000",
	    "reg.conf:19: route \"r\": backends: 'svc': weight must be 0-1000000" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc",
	    "reg.conf:16: route \"r\": needs backends, a redirect or fault.abort" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmatch.path_prefix = /a\nmatch.path_exact = /b",
	    "reg.conf:21: route \"r\": match.path_exact, match.path_prefix and match.path_regex exclude each other" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmatch.path_regex = ([a-z",
	    "reg.conf:20: route \"r\": match.path_regex: Unmatched [, [^, [:, [., or [=" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmatch.method = FETCH",
	    "reg.conf:20: route \"r\": match.method: unknown value 'FETCH'" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nretry_on = 5xx",
	    "reg.conf:20: route \"r\": retry_on without retries" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nretries = 11",
	    "reg.conf:20: route \"r\": retries: '11': expected an integer 0-10" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nfault.abort = 700",
	    "reg.conf:20: route \"r\": fault.abort: '700': expected an integer 200-599" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nfault.abort_percent = 50",
	    "reg.conf:20: route \"r\": fault.abort_percent without fault.abort" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nredirect.path = /x",
	    "reg.conf:19: route \"r\": backends and redirect exclude each other" },
	{ "[route \"r\"]\nnamespace = other\nservice = svc\nredirect.path = /x",
	    "reg.conf:18: route \"r\": service \"svc\" is in namespace default, the route in other" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nrewrite.path_prefix = /v2",
	    "reg.conf:20: route \"r\": rewrite.path_prefix needs match.path_prefix" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmirror = nosvc",
	    "reg.conf:20: route \"r\": mirror service \"nosvc\" is not defined" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\ntimeout = 1s\nper_try_timeout = 2s",
	    "reg.conf:21: route \"r\": per_try_timeout is longer than timeout" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmatch.headers = x-a",
	    "reg.conf:20: route \"r\": match.headers: 'x-a': expected NAME: VALUE" },
	{ "[policy \"p\"]\nnamespace = default\naction = permit",
	    "reg.conf:18: policy \"p\": action: 'permit': expected one of allow, deny" },
	{ "[policy \"p\"]\nnamespace = default\nfrom.principals = spiffe://cluster.local/ns/default/sa/a",
	    "reg.conf:18: policy \"p\": principals are written without 'spiffe://' (TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT): 'spiffe://cluster.local/ns/default/sa/a'" },
	{ "[policy \"p\"]\nnamespace = default\nfrom.principals = cluster.*/sa/a",
	    "reg.conf:18: policy \"p\": from.principals: 'cluster.*/sa/a': '*' may only stand at the start or the end of a pattern" },
	{ "[policy \"p\"]\nnamespace = default\nfrom.ip_blocks = 10.0.0.1/8",
	    "reg.conf:18: policy \"p\": from.ip_blocks: '10.0.0.1/8': address has bits set past the prefix length" },
	{ "[policy \"p\"]\nnamespace = default\nto.ports = 0",
	    "reg.conf:18: policy \"p\": to.ports: '0': port out of range 1-65535" },
	{ "[policy \"p\"]\nnamespace = default\nto.paths = api/*",
	    "reg.conf:18: policy \"p\": paths must start with '/' or '*': 'api/*'" },
	{ "[policy \"p\"]\nnamespace = default\nto.methods = get",
	    "reg.conf:18: policy \"p\": methods are upper-case HTTP methods: 'get'" },
	{ "[policy \"p\"]\nselector = app=a",
	    "reg.conf:16: policy \"p\": missing required key 'namespace'" },
	{ "[policy \"p\"]\nnamespace = default\nwhen.headers = x-a:",
	    "reg.conf:18: policy \"p\": when.headers: header 'x-a' has no value" },
	{ "[waypoint \"wp2\"]\nnamespace = default\naddress = 10.1.1.9",
	    "reg.conf:18: waypoint \"wp2\": address 10.1.1.9 is already used by waypoint \"wp\" (reg.conf:13)" },
	{ "[waypoint \"wp.2\"]\nnamespace = default\naddress = 10.1.1.10",
	    "reg.conf:16: waypoint \"wp.2\": name is not a valid service account; set service_account" },
	{ "[node \"node-b\"]\naddress = 192.168.10.1",
	    "reg.conf:17: node \"node-b\": address 192.168.10.1 is already used by node \"node-a\" (reg.conf:1)" },
	{ "[node \"node-b\"]\naddress = 192.168.10.2\naddress = 192.168.10.3",
	    "reg.conf:18: node \"node-b\": duplicate key 'address' (first set at line 17)" },
	{ "namespace = default",
	    "reg.conf:16: waypoint \"wp\": duplicate key 'namespace' (first set at line 14)" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\nlabels = app=a, app=b",
	    "reg.conf:20: workload \"b\": labels: 'app' given twice" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc, svc",
	    "reg.conf:19: route \"r\": backends: 'svc' listed twice" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nmatch.path_prefix = api",
	    "reg.conf:20: route \"r\": match.path_prefix must start with '/'" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nredirect.status = 305",
	    "reg.conf:19: route \"r\": redirect.status must be 301, 302, 303, 307 or 308" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\nretries = 0\nretry_on = reset",
	    "reg.conf:21: route \"r\": retry_on without retries" },
	{ "[service \"s2\"]\nnamespace = default\nports = 80\nselector = app=a\nvip = fd00::1, 10.96.0.1",
	    "reg.conf:20: service \"s2\": 10.96.0.1 port 80 is already used by service \"svc\" (reg.conf:8)" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n  mtls_mode = off",
	    "reg.conf:20: workload \"b\": mtls_mode: 'off': expected one of strict, permissive" },
	{ "[service \"o\"]\nnamespace = other\nports = 80\nselector = app=a\n"
	    "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc 1, o 1",
	    "reg.conf:23: route \"r\": backend \"o\" is in namespace other, the route in default" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc\n"
	    "request_headers.remove = x-a, bad header",
	    "reg.conf:20: route \"r\": request_headers.remove: bad header name 'bad header'" },
	{ "[workload \"b\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n"
	    "addresses = fd00::3, 10.1.1.3",
	    "reg.conf:20: workload \"b\": addresses: '10.1.1.3' listed twice" },
	/* A backend name that is both a service and a workload of the route's namespace. */
	{ "[service \"a\"]\nnamespace = default\nports = 80\nselector = app=a\n"
	    "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc 1, a 9",
	    "reg.conf:23: route \"r\": backend \"a\" is both service \"a\" (reg.conf:16) and "
	    "workload \"a\" (reg.conf:3); write service/a or workload/a" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = pod/a",
	    "reg.conf:19: route \"r\": backends: 'pod/a': expected NAME or KIND/NAME, KIND one of "
	    "service, workload" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = workload/",
	    "reg.conf:19: route \"r\": backends: 'workload/' is not a valid name" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = service/a",
	    "reg.conf:19: route \"r\": backend \"service/a\": service \"a\" is not defined" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = workload/svc",
	    "reg.conf:19: route \"r\": backend \"workload/svc\": workload \"svc\" is not defined" },
	{ "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = svc 1\n"
	    "backends = service/svc 2",
	    "reg.conf:19: route \"r\": backends \"svc\" and \"service/svc\" are the same service" },
	{ "[service \"o\"]\nnamespace = other\nports = 80\nselector = app=a\n"
	    "[route \"r\"]\nnamespace = default\nservice = svc\nbackends = service/o",
	    "reg.conf:23: route \"r\": backend \"service/o\" is in namespace other, the route in "
	    "default" },
};

TEST(registry_bad_inputs)
{
	struct registry *r;
	struct diag d;

	/* The base alone is valid. */
	registry_unref(test_registry(reg_base));
	ASSERT(sizeof(reg_bad) / sizeof(reg_bad[0]) >= 30);
	for (size_t i = 0; i < sizeof(reg_bad) / sizeof(reg_bad[0]); i++) {
		char *text;

		ASSERT(asprintf(&text, "%s%s\n", reg_base, reg_bad[i].text) > 0);
		diag_init(&d);
		r = (void *)1;
		if (registry_parse_buffer("reg.conf", text, strlen(text), &r, &d) == 0 ||
		    r != NULL || diag_count(&d) != 1 ||
		    strcmp(diag_first(&d), reg_bad[i].error) != 0) {
			fprintf(stderr, "case %zu:\n%s\n--- got:\n", i, reg_bad[i].text);
			diag_print(&d, stderr);
			fprintf(stderr, "--- want:\n%s\n", reg_bad[i].error);
			exit(1);
		}
		diag_clear(&d);
		free(text);
	}
}

TEST(registry_backend_kinds)
{
	/* "echo" is a service and a workload of namespace default; "x" a workload there and a
	 * service of namespace other; "echo-b" only a workload, "web" only a service. */
	struct registry *r = test_registry(
	    "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[workload \"echo\"]\nnamespace = default\nnode = n\naddresses = 10.0.0.1\n"
	    "labels = app=echo\n"
	    "[workload \"echo-b\"]\nnamespace = default\nnode = n\naddresses = 10.0.0.2\n"
	    "labels = app=echo\n"
	    "[workload \"x\"]\nnamespace = default\nnode = n\naddresses = 10.0.0.3\n"
	    "[service \"echo\"]\nnamespace = default\nports = 80\nselector = app=echo\n"
	    "[service \"web\"]\nnamespace = default\nports = 80\nselector = app=echo\n"
	    "[service \"x\"]\nnamespace = other\nports = 80\nselector = app=x\n"
	    "[route \"split\"]\nnamespace = default\nservice = echo\n"
	    "backends = service/echo 90, workload/echo 10\n"
	    "[route \"bare\"]\nnamespace = default\nservice = echo\n"
	    "backends = echo-b 1, web 2, x 3\n");
	const struct reg_route *split = registry_find(r, REG_ROUTE, "split");
	const struct reg_route *bare = registry_find(r, REG_ROUTE, "bare");
	const struct reg_service *echo_svc = registry_find(r, REG_SERVICE, "echo");
	const struct reg_workload *echo_wl = registry_find(r, REG_WORKLOAD, "echo");

	ASSERT(echo_svc != NULL && echo_wl != NULL);
	/* The prefixes say which; the name as written is kept for messages and dumps. */
	ASSERT(split->backends_p[0].service == echo_svc && split->backends_p[0].workload == NULL);
	ASSERT_EQ(split->backends_p[0].weight, 90);
	ASSERT_STREQ(split->backends.v[0].name, "service/echo");
	ASSERT(split->backends_p[1].workload == echo_wl && split->backends_p[1].service == NULL);
	ASSERT_EQ(split->backends_p[1].weight, 10);
	ASSERT_STREQ(split->backends.v[1].name, "workload/echo");
	/* Bare names that are one thing in the route's namespace resolve as before. */
	ASSERT(bare->backends_p[0].workload == registry_find(r, REG_WORKLOAD, "echo-b") &&
	    bare->backends_p[0].service == NULL);
	ASSERT(bare->backends_p[1].service == registry_find(r, REG_SERVICE, "web") &&
	    bare->backends_p[1].workload == NULL);
	/* The service "x" is in another namespace, where no backend may be: the workload is meant. */
	ASSERT(bare->backends_p[2].workload == registry_find(r, REG_WORKLOAD, "x") &&
	    bare->backends_p[2].service == NULL);
	registry_unref(r);
}

TEST(registry_cross_file)
{
	const char *dir = test_tmpdir();
	struct registry *r;
	struct diag d;
	char *want;

	test_write(dir, "10-nodes.conf", "[node \"n\"]\naddress = 192.168.0.1\n");
	test_write(dir, "20-apps.conf", "[workload \"a\"]\nnamespace = ns\nnode = n\n"
	    "addresses = 10.0.0.1\nlabels = app=a\n");
	/* Not part of the registry: hidden files and other suffixes. */
	test_write(dir, ".30-hidden.conf", "garbage\n");
	test_write(dir, "40-notes.txt", "garbage\n");
	test_write(dir, "50-svc.conf.bak", "garbage\n");
	r = load_ok_dir(dir);
	ASSERT_EQ(r->n_files, 2);
	ASSERT(((const struct reg_workload *)registry_find(r, REG_WORKLOAD, "a"))->node_p ==
	    registry_find(r, REG_NODE, "n"));
	registry_unref(r);

	/* A duplicate in a later file names the first file and line. */
	test_write(dir, "30-more.conf", "\n[workload \"a\"]\nnamespace = ns\n");
	diag_init(&d);
	ASSERT(registry_load_dir(dir, &r, &d) != 0 && r == NULL);
	ASSERT_EQ(diag_count(&d), 1);
	ASSERT(asprintf(&want, "%s/30-more.conf:2: duplicate workload \"a\" (first defined at "
	    "%s/20-apps.conf:1)", dir, dir) > 0);
	ASSERT_STREQ(diag_first(&d), want);
	diag_clear(&d);
	free(want);

	ASSERT(registry_load_dir("/nonexistent/registry.d", &r, &d) < 0);
	ASSERT_STREQ(diag_first(&d), "/nonexistent/registry.d: cannot open registry directory: "
	    "No such file or directory");
	diag_clear(&d);
}

/* A role compares the registry's stamp before its first load and once its watch is up: a file
 * added, rewritten or touched in between must change it; nothing done must not. */
TEST(registry_stamp_sees_changes)
{
	const char *dir = test_tmpdir();
	char path[512];
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { 1000000000, 0 } };
	uint64_t s0, s1, s2, s3;

	test_write(dir, "10-nodes.conf", "[node \"n\"]\naddress = 192.168.0.1\n");
	s0 = regwatch_stamp(dir);
	ASSERT(s0 != 0);
	ASSERT(regwatch_stamp(dir) == s0);
	test_write(dir, "39-waypoint.conf", "[waypoint \"wp\"]\n");
	s1 = regwatch_stamp(dir);
	ASSERT(s1 != s0);
	test_write(dir, "39-waypoint.conf", "[waypoint \"wp\"]\nnamespace = default\n");
	s2 = regwatch_stamp(dir);
	ASSERT(s2 != s1);
	/* The same size, only the time: still a change. */
	snprintf(path, sizeof(path), "%s/10-nodes.conf", dir);
	ASSERT_EQ(utimensat(AT_FDCWD, path, ts, 0), 0);
	s3 = regwatch_stamp(dir);
	ASSERT(s3 != s2);
	ASSERT(regwatch_stamp(dir) == s3);
	ASSERT(regwatch_stamp("/nonexistent/registry.d") == 0);
}

TEST(registry_reload_keeps_old)
{
	const char *dir = test_tmpdir();
	struct registry_holder h;
	struct registry *r1, *r2, *held;
	struct diag d;
	char *want;

	registry_holder_init(&h);
	ASSERT(registry_holder_get(&h) == NULL);
	diag_init(&d);
	test_write(dir, "a.conf", "[node \"n\"]\naddress = 192.168.0.1\n");
	ASSERT(registry_holder_reload(&h, dir, &d) == 0);
	r1 = registry_holder_get(&h);
	ASSERT(r1 != NULL && r1->n[REG_NODE] == 1);

	/* A broken edit is refused whole; the snapshot in force does not change. */
	test_write(dir, "a.conf", "[node \"n\"]\naddress = 192.168.0.1\n[node \"m\"]\n");
	ASSERT(registry_holder_reload(&h, dir, &d) != 0);
	ASSERT(asprintf(&want, "%s/a.conf:3: node \"m\": missing required key 'address'", dir) > 0);
	ASSERT_STREQ(diag_first(&d), want);
	free(want);
	diag_clear(&d);
	held = registry_holder_get(&h);
	ASSERT(held == r1);
	registry_unref(held);

	/* A good edit replaces it; a reader that still holds the old one keeps a valid snapshot. */
	test_write(dir, "a.conf", "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[node \"m\"]\naddress = 192.168.0.2\n");
	ASSERT(registry_holder_reload(&h, dir, &d) == 0);
	r2 = registry_holder_get(&h);
	ASSERT(r2 != r1 && r2->n[REG_NODE] == 2);
	ASSERT(r1->n[REG_NODE] == 1 && registry_find(r1, REG_NODE, "n") != NULL);
	registry_unref(r1);
	registry_unref(r2);
	registry_holder_destroy(&h);
}

TEST(registry_list_keys_repeat)
{
	struct registry *r = test_registry(
	    "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[workload \"a\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1\n"
	    "addresses = fd00::1, 10.0.0.2\nlabels = app=a\nlabels = v=1\n"
	    "[policy \"p\"]\nnamespace = ns\nfrom.principals = td/ns/a/sa/x\n"
	    "from.principals = td/ns/b/sa/*\n");
	const struct reg_workload *w = registry_find(r, REG_WORKLOAD, "a");
	const struct reg_policy *p = registry_find(r, REG_POLICY, "p");
	struct ip_addr x = ip("10.0.0.2");

	ASSERT_EQ(w->addresses.n, 3);
	ASSERT(registry_workload_by_addr(r, &x) == w);
	ASSERT_EQ(w->labels.n, 2);
	ASSERT_EQ(p->principals.n, 2);
	ASSERT_STREQ(p->principals.v[1], "td/ns/b/sa/*");
	registry_unref(r);
}

TEST(registry_all_policy_errors)
{
	const char *text = "[policy \"p\"]\nnamespace = ns\n"
	    "from.principals = spiffe://td/ns/a/sa/b\nto.methods = get\nto.paths = x\n";
	struct registry *r;
	struct diag d;

	diag_init(&d);
	ASSERT(registry_parse_buffer("reg.conf", text, strlen(text), &r, &d) != 0);
	ASSERT_EQ(diag_count(&d), 3);
	ASSERT(strncmp(d.msg[0], "reg.conf:3: ", 12) == 0);
	ASSERT_STREQ(d.msg[1], "reg.conf:5: policy \"p\": paths must start with '/' or '*': 'x'");
	ASSERT_STREQ(d.msg[2], "reg.conf:4: policy \"p\": methods are upper-case HTTP methods: 'get'");
	diag_clear(&d);
}

TEST(registry_many_entries)
{
	size_t cap = 4 << 20, off = 0;
	char *text = malloc(cap);
	struct registry *r;

	ASSERT(text != NULL);
	off += (size_t)snprintf(text + off, cap - off, "[node \"n\"]\naddress = 192.168.0.1\n");
	for (int i = 0; i < 10000; i++)
		off += (size_t)snprintf(text + off, cap - off, "[workload \"w%d\"]\nnamespace = ns%d\n"
		    "node = n\naddresses = 10.%d.%d.%d, fd00::%x\nlabels = app=s%d\n", i, i % 20,
		    i >> 16, (i >> 8) & 255, i & 255, i + 1, i / 10);
	for (int i = 0; i < 1000; i++)
		off += (size_t)snprintf(text + off, cap - off, "[service \"s%d\"]\nnamespace = ns%d\n"
		    "vip = 10.96.%d.%d\nports = 80, 443:8443\nselector = app=s%d\n", i, (i * 10) % 20,
		    i >> 8, i & 255, i);
	r = test_registry(text);
	ASSERT_EQ(r->n[REG_WORKLOAD], 10000);
	for (int i = 0; i < 10000; i++) {
		char a[32];
		struct ip_addr x;

		snprintf(a, sizeof(a), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
		x = ip(a);
		ASSERT(registry_workload_by_addr(r, &x) == REG_WORKLOADS(r)[i]);
	}
	for (int i = 0; i < 1000; i++) {
		char a[32];
		struct ip_addr x;
		const struct reg_vip *v;

		snprintf(a, sizeof(a), "10.96.%d.%d", i >> 8, i & 255);
		x = ip(a);
		v = registry_service_by_vip(r, &x, 443);
		ASSERT(v != NULL && v->service == REG_SERVICES(r)[i] && v->port->target == 8443);
		/* Workloads w(10i)..w(10i+9) carry app=s<i>; the ones in the service's namespace match. */
		ASSERT(v->service->n_endpoints >= 1);
	}
	registry_unref(r);
	free(text);
}
