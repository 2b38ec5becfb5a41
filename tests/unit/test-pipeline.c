/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for l7/pipeline.c: the request checks both HTTP modules run, in order, on a tunnel to a
 * service - trace context, registry refresh, 414, fragment, CONNECT, normalization, the decision,
 * redirects (HTTP/1.1 answers them, HTTP/2 does not), rewrites.
 */
#include "config.h"

#include <strings.h>

#include "config/registry.h"
#include "l7/pipeline.h"
#include "l7/tunnel.h"
#include "runner.h"

static const char base[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\n"
    "labels = app=a\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\n"
    "selector = app=a\n"
    "[route \"moved\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /old\n"
    "redirect.path = /new\n"
    "[route \"rw\"]\nnamespace = default\nservice = svc\nbackends = svc\n"
    "match.path_prefix = /foo\nrewrite.path_prefix = /xyz\ntimeout = 2s\n"
    "[route \"grow\"]\nnamespace = default\nservice = svc\nbackends = svc\n"
    "match.path_prefix = /g/\nrewrite.path_prefix = /a-much-longer-prefix/\n"
    "[policy \"no-admin\"]\nnamespace = default\nselector = app=a\naction = deny\n"
    "to.paths = /admin*\n";

/* Request fields "name: value", NULL-terminated. */
static const char *
header(void *arg, const char *name)
{
	size_t nl = strlen(name);

	for (const char *const *l = arg; *l != NULL; l++)
		if (strncasecmp(*l, name, nl) == 0 && (*l)[nl] == ':')
			return *l + nl + 2;
	return NULL;
}

struct fixture {
	struct registry_holder holder;
	struct waypoint wp;
	struct tun t;
	uv_loop_t loop; /* the balancer's clock */
};

static void
setup(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	registry_holder_init(&f->holder);
	registry_holder_set(&f->holder, test_registry(base));
	f->wp.role = "waypoint";
	f->wp.reg = &f->holder;
	ASSERT_EQ(uv_loop_init(&f->loop), 0);
	f->wp.loop = &f->loop;
	ASSERT_EQ(lb_new(&f->wp.lb), 0);
	f->t.wp = &f->wp;
	f->t.side = L7_SIDE_WAYPOINT;
	f->t.reg = registry_holder_get(&f->holder);
	f->t.svc = registry_find(f->t.reg, REG_SERVICE, "svc");
	f->t.port = 80;
	snprintf(f->t.authority, sizeof(f->t.authority), "svc.default:80");
	f->t.peer_id = strdup("spiffe://cluster.local/ns/default/sa/front");
}

static void
teardown(struct fixture *f)
{
	registry_unref(f->t.reg);
	lb_free(f->wp.lb);
	uv_loop_close(&f->loop);
	registry_holder_destroy(&f->holder);
	free(f->t.peer_id);
}

static void
run(struct fixture *f, const char *method, const char *target, bool redirects,
    const char *const *hdrs, struct l7_plan *p)
{
	static const char *const none[] = { NULL };
	struct l7_req rq = {
		.method = method, .target = target, .target_len = strlen(target), .host = NULL,
		.header = header, .header_arg = (void *)(hdrs ? hdrs : none), .redirects = redirects,
	};

	l7_pipeline(&f->t, &rq, p);
}

/* A plain request goes on: the endpoint and port decided, the target as received, a new trace
 * context to add; one that has a traceparent keeps it. */
TEST(pipeline_forward)
{
	struct fixture f;
	struct l7_plan p;
	static const char *const tp[] = {
		"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", NULL };

	setup(&f);
	run(&f, "GET", "/a?x=1", true, NULL, &p);
	ASSERT_EQ(p.status, 0);
	ASSERT_STREQ(p.ep->h.name, "a1");
	ASSERT_EQ(p.target, 8080);
	ASSERT(p.upstream_target == NULL);
	ASSERT(p.add_traceparent);
	ASSERT_EQ(strlen(p.traceparent), 55);
	ASSERT(!p.moved && !p.close && !p.delay);
	ASSERT_EQ(p.timeout_ms, 0);
	run(&f, "GET", "/a", true, tp, &p);
	ASSERT(!p.add_traceparent);
	ASSERT_STREQ(p.traceparent, tp[0] + 13);
	teardown(&f);
}

/* The checks before routing, each with its answer. */
TEST(pipeline_checks)
{
	struct fixture f;
	struct l7_plan p;
	char longt[L7_TARGET_MAX + 1];

	setup(&f);
	memset(longt, 'a', sizeof(longt) - 1);
	longt[0] = '/';
	longt[sizeof(longt) - 1] = '\0';
	run(&f, "GET", longt, true, NULL, &p);
	ASSERT_EQ(p.status, 414);
	run(&f, "GET", "/a#frag", true, NULL, &p);
	ASSERT_EQ(p.status, 400);
	ASSERT_STREQ(p.body, "a fragment in the request target");
	run(&f, "CONNECT", "/a", true, NULL, &p);
	ASSERT_EQ(p.status, 405);
	ASSERT(p.close);
	/* An HTTP/2 CONNECT has no :path: 405 all the same, not 400. */
	run(&f, "CONNECT", "", false, NULL, &p);
	ASSERT_EQ(p.status, 405);
	/* Normalized: policy judges, and the app gets, the normalized path (query kept). */
	run(&f, "GET", "/public/../admin", true, NULL, &p);
	ASSERT_EQ(p.status, 403);
	ASSERT_STREQ(p.flags, "DENY");
	ASSERT_EQ(f.wp.st.denied, 1);
	run(&f, "GET", "//b/./c?q=1", true, NULL, &p);
	ASSERT_EQ(p.status, 0);
	ASSERT_STREQ(p.upstream_target, "/b/c?q=1");
	free(p.upstream_target);
	teardown(&f);
}

/* Redirect routes are answered over HTTP/1.1 with a Location, refused over HTTP/2; rewrites give
 * the target to send. */
TEST(pipeline_redirect_rewrite)
{
	struct fixture f;
	struct l7_plan p;

	setup(&f);
	run(&f, "GET", "/old/x", true, NULL, &p);
	ASSERT_EQ(p.status, 302);
	ASSERT_STREQ(p.flags, "-");
	ASSERT(strstr(p.location, "/new") != NULL);
	run(&f, "GET", "/old/x", false, NULL, &p);
	ASSERT_EQ(p.status, 500);
	ASSERT_STREQ(p.body, "redirect routes are not served over HTTP/2");
	run(&f, "GET", "/foo/bar?z=2", true, NULL, &p);
	ASSERT_EQ(p.status, 0);
	ASSERT_STREQ(p.rt->h.name, "rw");
	ASSERT_STREQ(p.upstream_target, "/xyz/bar?z=2");
	ASSERT_EQ(p.timeout_ms, 2000);
	free(p.upstream_target);
	/* A rewrite that would push the path past the limit is 414, never the path un-rewritten. */
	{
		char t[L7_TARGET_MAX - 8];

		memset(t, 'a', sizeof(t) - 1);
		memcpy(t, "/g/", 3);
		t[sizeof(t) - 1] = '\0';
		run(&f, "GET", t, true, NULL, &p);
		ASSERT_EQ(p.status, 414);
		ASSERT_STREQ(p.body, "URI too long after the route's rewrite");
		ASSERT(p.upstream_target == NULL);
		t[100] = '\0';
		run(&f, "GET", t, true, NULL, &p);
		ASSERT_EQ(p.status, 0);
		ASSERT(strncmp(p.upstream_target, "/a-much-longer-prefix/aaa", 25) == 0);
		free(p.upstream_target);
	}
	teardown(&f);
}

/* A gRPC request's local reply carries the gRPC status gRPC's HTTP mapping gives. */
TEST(pipeline_grpc_status)
{
	ASSERT_EQ(l7_grpc_status(403), 7);
	ASSERT_EQ(l7_grpc_status(502), 14);
	ASSERT_EQ(l7_grpc_status(503), 14);
	ASSERT_EQ(l7_grpc_status(504), 14);
	ASSERT_EQ(l7_grpc_status(429), 14);
	ASSERT_EQ(l7_grpc_status(401), 16);
	ASSERT_EQ(l7_grpc_status(404), 12);
	ASSERT_EQ(l7_grpc_status(400), 13);
	ASSERT_EQ(l7_grpc_status(500), 2);
}

/* Each request meets the registry in force: the tunnel moves to a new snapshot, and a service
 * gone from it gets 503 (the connection closes), the tunnel staying on its snapshot. */
TEST(pipeline_registry_refresh)
{
	struct fixture f;
	struct l7_plan p;
	struct registry *old;
	char *text;

	setup(&f);
	old = f.t.reg;
	registry_holder_set(&f.holder, test_registry(base));
	run(&f, "GET", "/a", true, NULL, &p);
	ASSERT(p.moved);
	ASSERT(f.t.reg != old);
	ASSERT_EQ(p.status, 0);
	old = f.t.reg;
	ASSERT(asprintf(&text, "%.*s", (int)(strstr(base, "[service") - base), base) > 0);
	registry_holder_set(&f.holder, test_registry(text));
	free(text);
	run(&f, "GET", "/a", true, NULL, &p);
	ASSERT_EQ(p.status, 503);
	ASSERT_STREQ(p.flags, "NR");
	ASSERT(p.close);
	ASSERT(f.t.reg == old);
	teardown(&f);
}
