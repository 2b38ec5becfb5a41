/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for policy/authz.c: a table of registries and connections with the decision Istio makes. */
#include "config.h"

#include <strings.h>

#include "config/registry.h"
#include "policy/authz.h"
#include "runner.h"

/* Workloads every case has: web and db in namespace app, web2 in namespace other; one node. */
static const char base[] =
    "[node \"n\"]\naddress = 192.168.100.1\n"
    "[workload \"web\"]\nnamespace = app\nnode = n\nservice_account = web\naddresses = 10.0.0.1\n"
    "labels = app=web, tier=front\n"
    "[workload \"db\"]\nnamespace = app\nnode = n\nservice_account = db\naddresses = 10.0.0.2\n"
    "labels = app=db\n"
    "[workload \"web2\"]\nnamespace = other\nnode = n\naddresses = 10.0.1.1\nlabels = app=web\n";

#define FRONT "cluster.local/ns/front/sa/client"
#define EVIL "cluster.local/ns/evil/sa/client"

struct authz_case {
	const char *name;
	const char *policies;
	const char *dst;       /* workload name */
	const char *principal; /* "" plaintext */
	const char *ns;        /* src_namespace; "" unknown */
	const char *ip;        /* NULL: no source address */
	uint16_t port;
	enum authz_decision want;
	const char *want_policy; /* NULL: no deciding policy */
};

static const struct authz_case cases[] = {
	{ "no policies", "", "web", FRONT, "", "10.9.0.1", 80, AUTHZ_ALLOW, NULL },
	{ "allow by principal",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = " FRONT "\n",
	    "web", FRONT, "", "10.9.0.1", 80, AUTHZ_ALLOW, "p" },
	{ "allow by principal: another principal is denied",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = " FRONT "\n",
	    "web", EVIL, "", "10.9.0.1", 80, AUTHZ_DENY, NULL },
	{ "principal values are ORed",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = cluster.local/ns/x/sa/y, " FRONT "\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "prefix pattern",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = cluster.local/ns/front/*\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "prefix pattern: no match",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = cluster.local/ns/front/*\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "suffix pattern",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = */sa/client\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "suffix pattern: no match",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = */sa/admin\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "principals = * admits any mTLS client",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = *\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "principals = * refuses a plaintext client",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = *\n",
	    "web", "", "", "10.9.0.1", 80, AUTHZ_DENY, NULL },
	{ "namespace taken from the principal",
	    "[policy \"p\"]\nnamespace = app\nfrom.namespaces = front\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "namespace given by the caller",
	    "[policy \"p\"]\nnamespace = app\nfrom.namespaces = fr*\n",
	    "web", "td/ns/front/sa/x", "front", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "namespaces: another namespace is denied",
	    "[policy \"p\"]\nnamespace = app\nfrom.namespaces = front\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "not_namespaces: listed namespace is denied",
	    "[policy \"p\"]\nnamespace = app\nfrom.not_namespaces = evil\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "not_namespaces: other namespace is allowed",
	    "[policy \"p\"]\nnamespace = app\nfrom.not_namespaces = evil\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "plaintext never matches namespaces, even with its namespace known",
	    "[policy \"p\"]\nnamespace = app\nfrom.namespaces = front\n",
	    "web", "", "front", "10.9.0.1", 80, AUTHZ_DENY, NULL },
	{ "plaintext satisfies not_principals",
	    "[policy \"p\"]\nnamespace = app\nfrom.not_principals = " EVIL "\n",
	    "web", "", "", "10.9.0.1", 80, AUTHZ_ALLOW, "p" },
	{ "plaintext satisfies not_namespaces",
	    "[policy \"p\"]\nnamespace = app\nfrom.not_namespaces = evil\n",
	    "web", "", "", "10.9.0.1", 80, AUTHZ_ALLOW, "p" },
	{ "not_principals: listed principal is denied",
	    "[policy \"p\"]\nnamespace = app\nfrom.not_principals = " EVIL "\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "deny principals = * lets plaintext through",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.principals = *\n",
	    "web", "", "", "10.9.0.1", 80, AUTHZ_ALLOW, NULL },
	{ "deny principals = * denies mTLS",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.principals = *\n",
	    "web", FRONT, "", "10.9.0.1", 80, AUTHZ_DENY, "d" },
	{ "ip_blocks v4",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = 192.168.0.0/16, 172.16.0.0/12\n",
	    "web", "", "", "192.168.3.4", 80, AUTHZ_ALLOW, "p" },
	{ "ip_blocks v4: outside",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = 192.168.0.0/16\n",
	    "web", "", "", "10.1.1.1", 80, AUTHZ_DENY, NULL },
	{ "ip_blocks v4 matches a v4-mapped v6 source",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = 192.168.0.0/16\n",
	    "web", "", "", "::ffff:192.168.3.4", 80, AUTHZ_ALLOW, "p" },
	{ "ip_blocks v6",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = fd00:1::/64\n",
	    "web", FRONT, "", "fd00:1::5", 80, AUTHZ_ALLOW, "p" },
	{ "ip_blocks v6: outside",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = fd00:1::/64\n",
	    "web", FRONT, "", "fd00:2::5", 80, AUTHZ_DENY, NULL },
	{ "ip_blocks v6 does not match a v4 source",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = ::/0\n",
	    "web", FRONT, "", "10.0.0.9", 80, AUTHZ_DENY, NULL },
	{ "ip_blocks without a source address",
	    "[policy \"p\"]\nnamespace = app\nfrom.ip_blocks = 0.0.0.0/0\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "deny not_ip_blocks denies outside the block",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.not_ip_blocks = 10.0.0.0/8\n",
	    "web", FRONT, "", "192.168.1.1", 80, AUTHZ_DENY, "d" },
	{ "deny not_ip_blocks lets the block through",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.not_ip_blocks = 10.0.0.0/8\n",
	    "web", FRONT, "", "10.2.3.4", 80, AUTHZ_ALLOW, NULL },
	{ "ports",
	    "[policy \"p\"]\nnamespace = app\nto.ports = 8080, 9090\n",
	    "web", FRONT, "", NULL, 9090, AUTHZ_ALLOW, "p" },
	{ "ports: another port is denied",
	    "[policy \"p\"]\nnamespace = app\nto.ports = 8080\n",
	    "web", FRONT, "", NULL, 9090, AUTHZ_DENY, NULL },
	{ "not_ports: listed port is denied",
	    "[policy \"p\"]\nnamespace = app\nto.not_ports = 22\n",
	    "web", FRONT, "", NULL, 22, AUTHZ_DENY, NULL },
	{ "not_ports: other port is allowed",
	    "[policy \"p\"]\nnamespace = app\nto.not_ports = 22\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "p" },
	{ "fields are ANDed",
	    "[policy \"p\"]\nnamespace = app\nfrom.principals = " FRONT "\nto.ports = 80\n",
	    "web", FRONT, "", NULL, 81, AUTHZ_DENY, NULL },
	{ "deny wins over a matching allow (deny written after)",
	    "[policy \"a\"]\nnamespace = app\nfrom.principals = " FRONT "\n"
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.namespaces = front\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, "d" },
	{ "deny that does not match leaves the allow",
	    "[policy \"a\"]\nnamespace = app\nfrom.principals = " FRONT "\n"
	    "[policy \"d\"]\nnamespace = app\naction = deny\nfrom.namespaces = evil\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "a" },
	{ "allow with L7 fields does not match at L4 (only allow: deny)",
	    "[policy \"a7\"]\nnamespace = app\nfrom.principals = " FRONT "\nto.methods = GET\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "allow with L7 fields beside a plain allow",
	    "[policy \"a7\"]\nnamespace = app\nto.paths = /api/*\n"
	    "[policy \"a\"]\nnamespace = app\nfrom.namespaces = front\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, "a" },
	{ "deny with L7 fields denies on its L4 part",
	    "[policy \"d7\"]\nnamespace = app\naction = deny\nfrom.namespaces = evil\n"
	    "to.methods = DELETE\n",
	    "web", EVIL, "", NULL, 80, AUTHZ_DENY, "d7" },
	{ "deny with L7 fields: L4 part not matching",
	    "[policy \"d7\"]\nnamespace = app\naction = deny\nfrom.namespaces = evil\n"
	    "to.methods = DELETE\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, NULL },
	{ "deny with only L7 fields denies everything at L4",
	    "[policy \"d7\"]\nnamespace = app\naction = deny\nwhen.headers = x-admin: 1\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, "d7" },
	{ "selector: allow for another workload does not target this one",
	    "[policy \"p\"]\nnamespace = app\nselector = app=db\nfrom.principals = " EVIL "\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, NULL },
	{ "selector: the selected workload",
	    "[policy \"p\"]\nnamespace = app\nselector = app=db\nfrom.principals = " EVIL "\n",
	    "db", FRONT, "", NULL, 80, AUTHZ_DENY, NULL },
	{ "selector: every label must be carried",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nselector = app=web, tier=back\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, NULL },
	{ "selector: several labels carried",
	    "[policy \"d\"]\nnamespace = app\naction = deny\nselector = tier=front, app=web\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_DENY, "d" },
	{ "policies of another namespace are ignored",
	    "[policy \"d\"]\nnamespace = other\naction = deny\n"
	    "[policy \"a\"]\nnamespace = other\nfrom.principals = nobody\n",
	    "web", FRONT, "", NULL, 80, AUTHZ_ALLOW, NULL },
	{ "the other namespace's workload gets them",
	    "[policy \"d\"]\nnamespace = other\naction = deny\n",
	    "web2", FRONT, "", NULL, 80, AUTHZ_DENY, "d" },
	{ "allow without fields matches everything",
	    "[policy \"all\"]\nnamespace = app\n",
	    "web", "", "", NULL, 1, AUTHZ_ALLOW, "all" },
	{ "deny without fields denies everything",
	    "[policy \"all\"]\nnamespace = app\naction = deny\n"
	    "[policy \"a\"]\nnamespace = app\n",
	    "db", FRONT, "", NULL, 80, AUTHZ_DENY, "all" },
};

static struct registry *
parse_ok(const char *policies)
{
	struct registry *r;
	char *text;

	ASSERT(asprintf(&text, "%s%s", base, policies) > 0);
	r = test_registry(text);
	free(text);
	return r;
}

TEST(authz_l4_table)
{
	int failed = 0;

	ASSERT(sizeof(cases) / sizeof(cases[0]) >= 25);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct authz_case *c = &cases[i];
		struct registry *r = parse_ok(c->policies);
		const struct reg_workload *dst = registry_find(r, REG_WORKLOAD, c->dst);
		const struct reg_policy *m = (const struct reg_policy *)&m; /* must be overwritten */
		struct ip_addr ip;
		const char *why;
		struct authz_l4_req q = { c->principal, c->ns, NULL, c->port };
		enum authz_decision got;

		ASSERT(dst != NULL);
		if (c->ip != NULL) {
			ASSERT(parse_ip(c->ip, &ip, &why) == 0);
			q.src_ip = &ip;
		}
		got = authz_l4(r, dst, &q, &m);
		if (got != c->want || (c->want_policy == NULL ? m != NULL :
		    m == NULL || strcmp(m->h.name, c->want_policy) != 0)) {
			fprintf(stderr, "case %zu \"%s\": got %s by %s, want %s by %s\n", i, c->name,
			    authz_decision_name(got), m ? m->h.name : "(none)",
			    authz_decision_name(c->want), c->want_policy ? c->want_policy : "(none)");
			failed++;
		}
		/* matched may be NULL. */
		ASSERT(authz_l4(r, dst, &q, NULL) == got);
		registry_unref(r);
	}
	ASSERT_EQ(failed, 0);
}

/* etc/registry.d, the example registry the package ships. */
static struct registry *
load_example(void)
{
	struct registry *r;
	struct diag d;
	char *dir;

	ASSERT(asprintf(&dir, "%s/etc/registry.d", TOP_SRCDIR) > 0);
	diag_init(&d);
	ASSERT(registry_load_dir(dir, &r, &d) == 0);
	free(dir);
	return r;
}

/* The example registry: reviews is reachable from productpage on 9080 only, and its L7-only deny
 * (methods DELETE, PUT) makes ztunnel deny every connection to it (fail closed). */
TEST(authz_l4_example_registry)
{
	struct registry *r = load_example();
	const struct reg_workload *rv, *pp;
	const struct reg_policy *m;
	struct authz_l4_req q = { "cluster.local/ns/default/sa/productpage", "", NULL, 9080 };

	rv = registry_find(r, REG_WORKLOAD, "reviews-v1");
	pp = registry_find(r, REG_WORKLOAD, "productpage-v1");
	ASSERT(rv != NULL);
	/* productpage may call reviews on 9080 (the allow policy). */
	ASSERT(authz_l4(r, rv, &q, &m) == AUTHZ_ALLOW);
	ASSERT_STREQ(m->h.name, "reviews-from-productpage");
	/* Another port: an allow policy targets reviews and none matches. */
	q.dst_port = 8080;
	ASSERT(authz_l4(r, rv, &q, &m) == AUTHZ_DENY && m == NULL);
	/* The deny with L7 fields fails closed on its L4 part: namespace untrusted is refused. */
	q.dst_port = 9080;
	q.src_principal = "cluster.local/ns/untrusted/sa/x";
	ASSERT(authz_l4(r, rv, &q, &m) == AUTHZ_DENY);
	ASSERT_STREQ(m->h.name, "reviews-read-only");
	if (pp != NULL)
		ASSERT(authz_l4(r, pp, &q, &m) == AUTHZ_ALLOW && m == NULL);
	registry_unref(r);
}

/* The sidecar's prefilter on the same registry: the L7-only deny no longer refuses the connection
 * (the requests decide), the allow's L4 part still does. */
TEST(authz_l4_prefilter_example_registry)
{
	struct registry *r = load_example();
	const struct reg_workload *rv;
	const struct reg_policy *m;
	struct authz_l4_req q = { "cluster.local/ns/default/sa/productpage", "", NULL, 9080 };

	rv = registry_find(r, REG_WORKLOAD, "reviews-v1");
	ASSERT(rv != NULL);
	ASSERT(authz_l4_prefilter(r, rv, &q, &m) == AUTHZ_ALLOW);
	ASSERT_STREQ(m->h.name, "reviews-from-productpage");
	q.dst_port = 8080;
	ASSERT(authz_l4_prefilter(r, rv, &q, &m) == AUTHZ_DENY && m == NULL);
	/* authz_l4 refuses untrusted on its L4 part; the prefilter leaves it to the requests, where
	 * the allow's principals refuse it. */
	q.dst_port = 9080;
	q.src_principal = "cluster.local/ns/untrusted/sa/x";
	ASSERT(authz_l4(r, rv, &q, &m) == AUTHZ_DENY);
	ASSERT(authz_l4_prefilter(r, rv, &q, &m) == AUTHZ_DENY && m == NULL);
	registry_unref(r);
}

TEST(authz_l4_prefilter_l7_policies)
{
	static const char pol[] =
	    "[policy \"ro\"]\nnamespace = app\nfrom.namespaces = front\nto.methods = GET\n"
	    "[policy \"nodelete\"]\nnamespace = app\naction = deny\nto.methods = DELETE\n";
	struct registry *r = parse_ok(pol);
	const struct reg_workload *web = registry_find(r, REG_WORKLOAD, "web");
	const struct reg_policy *m;
	struct authz_l4_req q = { FRONT, "", NULL, 80 };

	/* ztunnel: the allow has L7 fields, so nothing allows; the deny fails closed. */
	ASSERT(authz_l4(r, web, &q, &m) == AUTHZ_DENY);
	/* sidecar: the allow may match, the deny may not: the connection goes on to L7. */
	ASSERT(authz_l4_prefilter(r, web, &q, &m) == AUTHZ_ALLOW && strcmp(m->h.name, "ro") == 0);
	/* Not from namespace front: no request of it could be allowed. */
	q.src_principal = "cluster.local/ns/back/sa/x";
	ASSERT(authz_l4_prefilter(r, web, &q, &m) == AUTHZ_DENY && m == NULL);
	registry_unref(r);
}

struct hdr {
	const char *name, *value;
};

static const char *
hdr_lookup(void *arg, const char *name)
{
	for (const struct hdr *h = arg; h->name != NULL; h++)
		if (strcasecmp(h->name, name) == 0)
			return h->value;
	return NULL;
}

TEST(authz_l7_cases)
{
	static const char pol[] =
	    "[policy \"ro\"]\nnamespace = app\nfrom.namespaces = front\nto.methods = GET, HEAD\n"
	    "to.paths = /api/*, *.css\nto.hosts = web.app.svc.cluster.local, *.example.com\n"
	    "[policy \"admin\"]\nnamespace = app\nto.paths = /admin/*\nwhen.headers = x-admin: yes, "
	    "x-team: ops*\n"
	    "[policy \"nodelete\"]\nnamespace = app\naction = deny\nto.methods = DELETE\n";
	struct registry *r = parse_ok(pol);
	const struct reg_workload *web = registry_find(r, REG_WORKLOAD, "web");
	const struct reg_policy *m;
	struct hdr none[] = { { NULL, NULL } };
	struct hdr admin[] = { { "X-Admin", "yes" }, { "x-team", "ops-1" }, { NULL, NULL } };
	struct hdr half[] = { { "x-admin", "yes" }, { NULL, NULL } };
	struct authz_l7_req q = { { FRONT, "", NULL, 80 }, "GET", "/api/v1?x=/admin/", "web.app.svc.cluster.local",
		hdr_lookup, none };

	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_ALLOW && strcmp(m->h.name, "ro") == 0);
	/* The query is not part of the path; the host matches without case and port. */
	q.path = "/x.css?v=1";
	q.host = "CDN.Example.COM:8443";
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_ALLOW && strcmp(m->h.name, "ro") == 0);
	q.host = "example.org";
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY && m == NULL);
	q.host = "web.app.svc.cluster.local";
	q.method = "POST";
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY && m == NULL);
	/* DELETE: the deny wins even where an allow would match. */
	q.method = "DELETE";
	q.path = "/admin/x";
	q.header_arg = admin;
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY && strcmp(m->h.name, "nodelete") == 0);
	/* when.headers: all conditions, header names without case, values as patterns. */
	q.method = "POST";
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_ALLOW && strcmp(m->h.name, "admin") == 0);
	q.header_arg = half;
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY);
	q.header = NULL;
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY);
	/* Plaintext with the L7 allow that needs a namespace. */
	q.header = hdr_lookup;
	q.header_arg = none;
	q.l4.src_principal = "";
	q.method = "GET";
	q.path = "/api/v1";
	ASSERT(authz_l7(r, web, &q, &m) == AUTHZ_DENY);
	/* At L4 the same registry: both allows have L7 fields, so nothing is allowed. */
	ASSERT(authz_l4(r, web, &q.l4, &m) == AUTHZ_DENY && m != NULL &&
	    strcmp(m->h.name, "nodelete") == 0);
	registry_unref(r);
}
