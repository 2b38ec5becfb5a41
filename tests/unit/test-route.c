/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for l7/route.c: route precedence (Gateway API HTTPRoute), matching, weighted backends,
 * header edits, rewrite and redirect, retry decisions and backoff, fault and mirror percentages.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <strings.h>

#include "config/registry.h"
#include "l7/route.h"
#include "runner.h"

/* Parses base + routes. */
static struct registry *
parse_with(const char *routes)
{
	static const char base[] =
	    "[node \"node-a\"]\naddress = 192.168.10.1\n"
	    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\n"
	    "labels = app=a, version=v1\n"
	    "[workload \"a2\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n"
	    "labels = app=a, version=v2\n"
	    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a\n"
	    "[service \"svc-v1\"]\nnamespace = default\nports = 80\nselector = version=v1\n"
	    "[service \"svc-v2\"]\nnamespace = default\nports = 80\nselector = version=v2\n"
	    "[service \"other\"]\nnamespace = default\nports = 80\nselector = app=a\n"
	    "[service \"lonely\"]\nnamespace = default\nports = 80\nselector = app=a\n"
	    "[service \"shadow\"]\nnamespace = default\nports = 80\nselector = app=a\n";
	char *text;
	struct registry *r;

	ASSERT(asprintf(&text, "%s%s", base, routes) > 0);
	r = test_registry(text);
	free(text);
	return r;
}

static const struct reg_route *
route(const struct registry *r, const char *name)
{
	const struct reg_route *rt = registry_find(r, REG_ROUTE, name);

	if (rt == NULL)
		fprintf(stderr, "no route %s\n", name);
	ASSERT(rt != NULL);
	return rt;
}

/* Request headers for tests: "name: value" strings, looked up without regard to case. */
struct test_hdrs {
	const char *const *lines;
};

static const char *
test_header(void *arg, const char *name)
{
	const struct test_hdrs *h = arg;
	size_t nl = strlen(name);

	for (const char *const *l = h->lines; *l != NULL; l++)
		if (strncasecmp(*l, name, nl) == 0 && (*l)[nl] == ':')
			return *l + nl + 2;
	return NULL;
}

/* Name of the route chosen for svc_name and the request "METHOD target" (target may have ?query). */
static const char *
sel(const struct registry *r, const char *svc_name, const char *method, const char *target,
    const char *const *headers)
{
	static const char *const none[] = { NULL };
	static char path[256];
	struct test_hdrs h = { headers != NULL ? headers : none };
	const char *qm = strchr(target, '?');
	struct route_req q = { method, path, qm ? qm + 1 : NULL, test_header, &h };
	const struct reg_service *svc = registry_find(r, REG_SERVICE, svc_name);
	const struct reg_route *rt;

	ASSERT(svc != NULL);
	snprintf(path, sizeof(path), "%.*s", qm ? (int)(qm - target) : (int)strlen(target), target);
	rt = route_select(r, svc, &q);
	return rt != NULL ? rt->h.name : "(none)";
}

#define H(...) ((const char *const[]){ __VA_ARGS__, NULL })

static const char precedence_routes[] =
    "[route \"catchall\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "[route \"root\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /\n"
    "[route \"api\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api\n"
    "[route \"api-v1\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api/v1\n"
    "[route \"users-exact\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_exact = /api/v1/users\n"
    "[route \"items-regex\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_regex = ^/api/v1/items/[0-9]+$\n"
    "[route \"api-get\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api\nmatch.method = GET\n"
    "[route \"api-hdr\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api\nmatch.headers = X-Canary: true\n"
    "[route \"api-hdr2\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api\nmatch.headers = x-canary: true, x-user: alice\n"
    "[route \"api-q\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /api\nmatch.query = debug=1\n"
    "[route \"hdr-only\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.headers = x-env: staging\n"
    "[route \"dup-a\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /dup\n"
    "[route \"dup-b\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /dup\n"
    "[route \"apix\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /apix\n"
    "[route \"slash\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /slash/\n"
    "[route \"methods\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_prefix = /m\nmatch.method = GET, POST\n"
    "[route \"exact-vs-regex\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
    "match.path_exact = /api/v1/items/7\n"
    "[route \"other-api\"]\nnamespace = default\nservice = other\nbackends = svc-v1\n"
    "match.path_prefix = /api\n";

TEST(route_precedence)
{
	struct registry *r = parse_with(precedence_routes);
	const struct {
		const char *method, *target;
		const char *const *headers;
		const char *want;
	} cases[] = {
		/* exact beats a longer-matching prefix, a regex and a method condition */
		{ "GET", "/api/v1/users", NULL, "users-exact" },
		/* exact beats a regex that matches too */
		{ "GET", "/api/v1/items/7", NULL, "exact-vs-regex" },
		/* regex beats every prefix, and a prefix with a method condition */
		{ "GET", "/api/v1/items/42", NULL, "items-regex" },
		/* regex not matching: the longest prefix beats a shorter one with a method */
		{ "GET", "/api/v1/items/abc", NULL, "api-v1" },
		/* same prefix: a method condition beats none */
		{ "GET", "/api/x", NULL, "api-get" },
		/* method fails: plain prefix */
		{ "POST", "/api/x", NULL, "api" },
		{ "HEAD", "/api/x", NULL, "api" },
		/* more header matches win */
		{ "POST", "/api/x", H("x-canary: true"), "api-hdr" },
		{ "POST", "/api/x", H("x-canary: true", "x-user: alice"), "api-hdr2" },
		/* header values are exact */
		{ "POST", "/api/x", H("x-canary: True"), "api" },
		{ "POST", "/api/x", H("x-canary: true", "x-user: bob"), "api-hdr" },
		/* method beats headers */
		{ "GET", "/api/x", H("x-canary: true", "x-user: alice"), "api-get" },
		/* headers beat query */
		{ "POST", "/api/x?debug=1", NULL, "api-q" },
		{ "POST", "/api/x?debug=1", H("x-canary: true"), "api-hdr" },
		/* a longer prefix beats a route without path condition that has a header */
		{ "GET", "/api", H("x-env: staging"), "api-get" },
		/* no path condition counts as prefix "/": one header beats the catch-all */
		{ "GET", "/elsewhere", H("X-Env: staging"), "hdr-only" },
		/* catch-all and bare "/" tie: registry order */
		{ "GET", "/elsewhere", NULL, "catchall" },
		/* identical conditions: registry order */
		{ "GET", "/dup/x", NULL, "dup-a" },
		/* prefixes match element by element */
		{ "GET", "/apix", NULL, "apix" },
		{ "GET", "/apix/1", NULL, "apix" },
		{ "GET", "/apixyz", NULL, "catchall" },
		{ "GET", "/api", NULL, "api-get" },
		{ "GET", "/api/", NULL, "api-get" },
		/* a trailing '/' of the prefix is ignored */
		{ "GET", "/slash", NULL, "slash" },
		{ "GET", "/slash/a", NULL, "slash" },
		{ "GET", "/slashy", NULL, "catchall" },
		/* paths are case-sensitive */
		{ "GET", "/API/x", NULL, "catchall" },
		/* a method list */
		{ "POST", "/m/1", NULL, "methods" },
		{ "DELETE", "/m/1", NULL, "catchall" },
		/* routes of another service are never considered */
		{ "POST", "/api", NULL, "api" },
	};

	ASSERT(sizeof(cases) / sizeof(cases[0]) >= 15);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *got = sel(r, "svc", cases[i].method, cases[i].target, cases[i].headers);

		if (strcmp(got, cases[i].want) != 0) {
			fprintf(stderr, "case %zu: %s %s: got %s, want %s\n", i, cases[i].method,
			    cases[i].target, got, cases[i].want);
			ASSERT(0);
		}
	}
	ASSERT_STREQ(sel(r, "other", "GET", "/api/v1/users", NULL), "other-api");
	ASSERT_STREQ(sel(r, "other", "GET", "/x", NULL), "(none)");
	registry_unref(r);
}

TEST(route_default_route)
{
	struct registry *r = parse_with(
	    "[route \"only-get\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.method = GET\n");
	const struct reg_service *svc = registry_find(r, REG_SERVICE, "svc");
	struct route_req q = { "GET", NULL, NULL, NULL, NULL };

	/* A service without routes, and a request no route matches: NULL, the default route. */
	ASSERT_STREQ(sel(r, "lonely", "GET", "/", NULL), "(none)");
	ASSERT_STREQ(sel(r, "svc", "PUT", "/", NULL), "(none)");
	ASSERT_STREQ(sel(r, "svc", "GET", "/", NULL), "only-get");
	/* NULL path is "/", NULL method matches no method condition, NULL header callback no header */
	ASSERT(route_select(r, svc, &q) == route(r, "only-get"));
	q.method = NULL;
	ASSERT(route_select(r, svc, &q) == NULL);
	ASSERT(route_select(r, NULL, &q) == NULL);
	ASSERT(route_select(NULL, svc, &q) == NULL);
	registry_unref(r);
}

TEST(route_match_conditions)
{
	struct registry *r = parse_with(
	    "[route \"q\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.query = version=v2, debug=on\n"
	    "[route \"re\"]\nnamespace = default\nservice = other\nbackends = svc-v1\n"
	    "match.path_regex = v[0-9]+\n"
	    "[route \"hm\"]\nnamespace = default\nservice = lonely\nbackends = svc-v1\n"
	    "match.headers = x-a: 1, x-b: two words\nmatch.method = PUT\n");
	const struct reg_route *q = route(r, "q"), *hm = route(r, "hm");
	struct route_req req = { "GET", "/", NULL, NULL, NULL };
	struct test_hdrs h = { H("X-A: 1", "x-b: two words") };

	/* every query condition must hold, in any order, %XX-decoded, first occurrence wins */
	static const struct {
		const char *query;
		bool want;
	} qcases[] = {
		{ "version=v2&debug=on", true },
		{ "debug=on&x=1&version=v2", true },
		{ "ver%73ion=%762&debug=o%6E", true },
		{ "version=v2", false },
		{ "version=v2&debug", false },
		{ "version=v2&debug=", false },
		{ "version=v2&debug=on&version=v3", true },
		{ "version=v3&debug=on&version=v2", false },
		{ "version=v2&debug=onx", false },
		{ "Version=v2&debug=on", false },
		{ "&&version=v2&&debug=on&", true },
		{ "version=v2&debug=on%", false },
		{ "version=v2&debug=o%6", false },
		{ "", false },
	};
	for (size_t i = 0; i < sizeof(qcases) / sizeof(qcases[0]); i++) {
		req.query = qcases[i].query;
		if (route_matches(q, &req) != qcases[i].want) {
			fprintf(stderr, "query case %zu: %s\n", i, qcases[i].query);
			ASSERT(0);
		}
	}
	req.query = NULL;
	ASSERT(!route_matches(q, &req));

	/* regex: POSIX ERE, searched in the path (not anchored) */
	ASSERT_STREQ(sel(r, "other", "GET", "/x/v2/y", NULL), "re");
	ASSERT_STREQ(sel(r, "other", "GET", "/v10", NULL), "re");
	ASSERT_STREQ(sel(r, "other", "GET", "/version", NULL), "(none)");

	/* headers: names through the callback (any case), values exact; method too */
	req = (struct route_req){ "PUT", "/", NULL, test_header, &h };
	ASSERT(route_matches(hm, &req));
	req.method = "put";
	ASSERT(!route_matches(hm, &req));
	req.method = "PUT";
	h.lines = H("x-a: 1");
	ASSERT(!route_matches(hm, &req));
	h.lines = H("x-a: 1", "x-b: two");
	ASSERT(!route_matches(hm, &req));
	req.header = NULL;
	ASSERT(!route_matches(hm, &req));
	registry_unref(r);
}

TEST(route_match_with_hdr_list)
{
	struct registry *r = parse_with(
	    "[route \"c\"]\nnamespace = default\nservice = svc\nbackends = svc-v2\n"
	    "match.headers = x-canary: true\n");
	struct hdr store[4];
	struct hdr_list l;
	struct route_req q = { "GET", "/", NULL, hdr_list_lookup, &l };
	const struct reg_service *svc = registry_find(r, REG_SERVICE, "svc");

	hdr_list_init(&l, store, 4);
	ASSERT_EQ(hdr_list_add(&l, "Host", "svc"), 0);
	ASSERT(route_select(r, svc, &q) == NULL);
	ASSERT_EQ(hdr_list_add(&l, "X-Canary", "true"), 0);
	ASSERT(route_select(r, svc, &q) == route(r, "c"));
	registry_unref(r);
}

/* splitmix64: a fixed-seed PRNG so the distribution test is reproducible. */
static uint32_t
prng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}

TEST(route_weighted_backends)
{
	struct registry *r = parse_with(
	    "[route \"split\"]\nnamespace = default\nservice = svc\n"
	    "backends = svc-v1 90, svc-v2 10\n"
	    "[route \"zero\"]\nnamespace = default\nservice = other\nbackends = svc-v1 0, svc-v2 0\n"
	    "[route \"half-zero\"]\nnamespace = default\nservice = lonely\n"
	    "backends = svc-v1 0, a2 5\n");
	const struct reg_route *split = route(r, "split"), *zero = route(r, "zero");
	const struct reg_route *hz = route(r, "half-zero");
	const struct reg_service *v1 = registry_find(r, REG_SERVICE, "svc-v1");
	const struct reg_service *v2 = registry_find(r, REG_SERVICE, "svc-v2");
	uint64_t seed = 42;
	long n1 = 0, n2 = 0;
	const long N = 100000;

	for (long i = 0; i < N; i++) {
		const struct reg_backend *b = route_pick_backend(split, prng(&seed));

		ASSERT(b != NULL);
		if (b->service == v1)
			n1++;
		else if (b->service == v2)
			n2++;
	}
	ASSERT_EQ(n1 + n2, N);
	printf("# 90/10 split over %ld picks: %ld/%ld\n", N, n1, n2);
	/* Binomial(100000, 0.9): sd = sqrt(N * 0.9 * 0.1) = 94.9; allow 5 sd. */
	if (labs(n1 - 90000) > 475) {
		fprintf(stderr, "90/10 split gave %ld/%ld\n", n1, n2);
		ASSERT(0);
	}
	/* exact boundary: backend 0 while (r * 100) >> 32 < 90, i.e. r < 0.9 * 2^32 */
	ASSERT(route_pick_backend(split, 0)->service == v1);
	ASSERT(route_pick_backend(split, 3865470566u)->service == v1);
	ASSERT(route_pick_backend(split, 3865470567u)->service == v2);
	ASSERT(route_pick_backend(split, UINT32_MAX)->service == v2);
	/* all weights 0: NULL (the waypoint answers 500) */
	ASSERT(route_pick_backend(zero, 0) == NULL);
	ASSERT(route_pick_backend(zero, UINT32_MAX) == NULL);
	/* a 0-weight backend is never picked; a workload backend resolves as one */
	for (int i = 0; i < 1000; i++) {
		const struct reg_backend *b = route_pick_backend(hz, prng(&seed));

		ASSERT(b != NULL && b->service == NULL &&
		    b->workload == registry_find(r, REG_WORKLOAD, "a2"));
	}
	ASSERT(route_pick_backend(hz, 0) == &hz->backends_p[1]);
	registry_unref(r);
}

static void
expect_hdrs(const struct hdr_list *l, const char *const *want)
{
	size_t i;

	for (i = 0; want[i] != NULL; i++) {
		char got[128];

		ASSERT(i < l->n);
		snprintf(got, sizeof(got), "%s: %s", l->v[i].name, l->v[i].value);
		ASSERT_STREQ(got, want[i]);
	}
	ASSERT_EQ(l->n, i);
}

TEST(route_header_edits)
{
	struct registry *r = parse_with(
	    "[route \"h\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "request_headers.set = x-a: one\n"
	    "request_headers.add = x-b: two, X-A: extra\n"
	    "request_headers.remove = x-c, X-D\n"
	    "response_headers.set = server: amesh\n"
	    "response_headers.remove = x-powered-by\n"
	    "[route \"plain\"]\nnamespace = default\nservice = other\nbackends = svc-v1\n"
	    "[route \"h2\"]\nnamespace = default\nservice = lonely\nbackends = svc-v1\n"
	    "request_headers.set = x-new: n, host: h2\n");
	const struct reg_route *h = route(r, "h"), *plain = route(r, "plain"), *h2 = route(r, "h2");
	struct hdr store[8];
	struct hdr_list l;
	static const char *const init[][2] = {
		{ "Host", "h" }, { "X-A", "old1" }, { "x-c", "gone" }, { "X-B", "keep" },
		{ "x-a", "old2" }, { "X-D", "gone" },
	};

	/* remove (any case), then set (first entry in place, duplicates dropped), then add */
	for (size_t cap = 6; cap <= 8; cap++) {
		hdr_list_init(&l, store, cap);
		for (size_t i = 0; i < 6; i++)
			ASSERT_EQ(hdr_list_add(&l, init[i][0], init[i][1]), 0);
		ASSERT_EQ(route_edit_request_headers(h, &l), 0);
		expect_hdrs(&l, H("Host: h", "x-a: one", "X-B: keep", "x-b: two", "x-a: extra"));
	}
	ASSERT_EQ(hdr_list_add(&l, "x-more", "1"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-more", "2"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-more", "3"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-full", "1"), -ENOSPC);
	/* all or nothing: a list that cannot take the result is left untouched */
	/* ...and a list that cannot take the additions is left untouched */
	hdr_list_init(&l, store, 2);
	ASSERT_EQ(hdr_list_add(&l, "x-c", "1"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-b", "1"), 0);
	ASSERT_EQ(route_edit_request_headers(h, &l), -ENOSPC);
	expect_hdrs(&l, H("x-c: 1", "x-b: 1"));
	hdr_list_init(&l, store, 3);
	ASSERT_EQ(hdr_list_add(&l, "x-c", "1"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-b", "1"), 0);
	ASSERT_EQ(route_edit_request_headers(h, &l), -ENOSPC);
	expect_hdrs(&l, H("x-c: 1", "x-b: 1"));
	/* exactly enough room: x-c goes, x-a and x-b added, x-a added again */
	hdr_list_init(&l, store, 4);
	ASSERT_EQ(hdr_list_add(&l, "x-c", "1"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-b", "1"), 0);
	ASSERT_EQ(route_edit_request_headers(h, &l), 0);
	expect_hdrs(&l, H("x-b: 1", "x-a: one", "x-b: two", "x-a: extra"));
	/* the room a set frees by dropping duplicates is there for a set appended before it
	 * (found by tests/fuzz/fuzz-route: x-new was dropped, and 0 returned) */
	hdr_list_init(&l, store, 3);
	ASSERT_EQ(hdr_list_add(&l, "Host", "a"), 0);
	ASSERT_EQ(hdr_list_add(&l, "host", "b"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x", "1"), 0);
	ASSERT_EQ(route_edit_request_headers(h2, &l), 0);
	expect_hdrs(&l, H("host: h2", "x: 1", "x-new: n"));

	/* response edits are separate */
	hdr_list_init(&l, store, 8);
	ASSERT_EQ(hdr_list_add(&l, "Server", "backend"), 0);
	ASSERT_EQ(hdr_list_add(&l, "X-Powered-By", "php"), 0);
	ASSERT_EQ(hdr_list_add(&l, "x-a", "kept"), 0);
	ASSERT_EQ(route_edit_response_headers(h, &l), 0);
	expect_hdrs(&l, H("server: amesh", "x-a: kept"));
	/* a route without edits changes nothing, even on a full list */
	hdr_list_init(&l, store, 1);
	ASSERT_EQ(hdr_list_add(&l, "a", "1"), 0);
	ASSERT_EQ(route_edit_request_headers(plain, &l), 0);
	ASSERT_EQ(route_edit_response_headers(plain, &l), 0);
	expect_hdrs(&l, H("a: 1"));

	/* the primitives */
	hdr_list_init(&l, store, 3);
	ASSERT_EQ(hdr_list_set(&l, "a", "1"), 0);
	ASSERT_EQ(hdr_list_add(&l, "B", "2"), 0);
	ASSERT_EQ(hdr_list_add(&l, "a", "3"), 0);
	ASSERT_EQ(hdr_list_set(&l, "c", "4"), -ENOSPC);
	ASSERT_STREQ(hdr_list_get(&l, "A"), "1");
	ASSERT_STREQ(hdr_list_lookup(&l, "b"), "2");
	ASSERT(hdr_list_get(&l, "c") == NULL);
	ASSERT_EQ(hdr_list_set(&l, "A", "5"), 0);
	expect_hdrs(&l, H("A: 5", "B: 2"));
	ASSERT_EQ(hdr_list_remove(&l, "x"), 0);
	ASSERT_EQ(hdr_list_remove(&l, "b"), 1);
	expect_hdrs(&l, H("A: 5"));
	registry_unref(r);
}

static const char *
rewrite(const struct registry *r, const char *name, const char *path)
{
	static char out[128];

	ASSERT_EQ(route_rewrite_path(route(r, name), path, out, sizeof(out)), 0);
	return out;
}

TEST(route_rewrite)
{
	struct registry *r = parse_with(
	    "[route \"rw1\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo\nrewrite.path_prefix = /xyz\n"
	    "[route \"rw2\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo\nrewrite.path_prefix = /xyz/\n"
	    "[route \"rw3\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo/\nrewrite.path_prefix = /xyz\n"
	    "[route \"rw4\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo/\nrewrite.path_prefix = /xyz/\n"
	    "[route \"rw5\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo\nrewrite.path_prefix = /\n"
	    "[route \"rwroot\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /\nrewrite.path_prefix = /app\n"
	    "[route \"none\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "match.path_prefix = /foo\n");
	char small[8];

	/* Gateway API's ReplacePrefixMatch table */
	ASSERT_STREQ(rewrite(r, "rw1", "/foo/bar"), "/xyz/bar");
	ASSERT_STREQ(rewrite(r, "rw2", "/foo/bar"), "/xyz/bar");
	ASSERT_STREQ(rewrite(r, "rw3", "/foo/bar"), "/xyz/bar");
	ASSERT_STREQ(rewrite(r, "rw4", "/foo/bar"), "/xyz/bar");
	ASSERT_STREQ(rewrite(r, "rw1", "/foo"), "/xyz");
	ASSERT_STREQ(rewrite(r, "rw1", "/foo/"), "/xyz/");
	ASSERT_STREQ(rewrite(r, "rw5", "/foo/"), "/");
	ASSERT_STREQ(rewrite(r, "rw5", "/foo"), "/");
	ASSERT_STREQ(rewrite(r, "rw5", "/foo/bar"), "/bar");
	/* deeper paths, the root prefix, and paths the prefix does not match */
	ASSERT_STREQ(rewrite(r, "rw1", "/foo/bar/baz"), "/xyz/bar/baz");
	ASSERT_STREQ(rewrite(r, "rwroot", "/x/y"), "/app/x/y");
	ASSERT_STREQ(rewrite(r, "rwroot", "/"), "/app/");
	ASSERT_STREQ(rewrite(r, "rw1", "/foobar"), "/foobar");
	ASSERT_STREQ(rewrite(r, "none", "/foo/bar"), "/foo/bar");
	ASSERT_STREQ(rewrite(r, "none", NULL), "/");
	/* too small: -ENOSPC */
	ASSERT_EQ(route_rewrite_path(route(r, "rw1"), "/foo/bar", small, sizeof(small)), -ENOSPC);
	ASSERT_EQ(route_rewrite_path(route(r, "rw1"), "/foo/ba", small, sizeof(small)), 0);
	ASSERT_STREQ(small, "/xyz/ba");
	ASSERT_EQ(route_rewrite_path(route(r, "none"), "/foo/bar", small, sizeof(small)), -ENOSPC);
	ASSERT_EQ(route_rewrite_path(route(r, "none"), "/foo/bar", small, 0), -ENOSPC);
	registry_unref(r);
}

static const char *
redirect(const struct registry *r, const char *name, const char *scheme, const char *host,
    uint16_t port, const char *path, const char *query, int want_status)
{
	static char out[256];
	int status = 0;

	ASSERT_EQ(route_redirect_location(route(r, name), scheme, host, port, path, query, out,
	    sizeof(out), &status), 0);
	ASSERT_EQ(status, want_status);
	return out;
}

TEST(route_redirect)
{
	struct registry *r = parse_with(
	    "[route \"moved\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /v1\n"
	    "redirect.path = /api\nredirect.status = 301\n"
	    "[route \"to-https\"]\nnamespace = default\nservice = svc\nredirect.scheme = https\n"
	    "[route \"to-http\"]\nnamespace = default\nservice = svc\nredirect.scheme = http\n"
	    "[route \"full\"]\nnamespace = default\nservice = svc\nredirect.scheme = https\n"
	    "redirect.host = new.example.com\nredirect.port = 8443\nredirect.status = 307\n"
	    "[route \"port80\"]\nnamespace = default\nservice = svc\nredirect.port = 80\n"
	    "[route \"exact\"]\nnamespace = default\nservice = svc\nmatch.path_exact = /old\n"
	    "redirect.path = /new\nredirect.status = 308\n"
	    "[route \"landing\"]\nnamespace = default\nservice = svc\nmatch.path_regex = ^/promo\n"
	    "redirect.path = /landing\nredirect.status = 303\n"
	    "[route \"host\"]\nnamespace = default\nservice = svc\nredirect.host = other.example\n"
	    "[route \"status\"]\nnamespace = default\nservice = svc\nredirect.status = 308\n"
	    "[route \"fwd\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n");
	char small[26];
	int status = 0;

	/* prefix route: redirect.path replaces the matched prefix; query kept; status as set */
	ASSERT_STREQ(redirect(r, "moved", "http", "example.com", 80, "/v1/users", "a=1&b=2", 301),
	    "http://example.com/api/users?a=1&b=2");
	ASSERT_STREQ(redirect(r, "moved", "https", "example.com", 443, "/v1", "", 301),
	    "https://example.com/api");
	ASSERT_STREQ(redirect(r, "moved", "http", "example.com", 8080, "/v1/", NULL, 301),
	    "http://example.com:8080/api/");
	/* scheme set, port unset: the scheme's well-known port, which is left out; default 302 */
	ASSERT_STREQ(redirect(r, "to-https", "http", "example.com", 8080, "/x", "q=1", 302),
	    "https://example.com/x?q=1");
	/* redirect.scheme = http is told apart from unset */
	ASSERT_STREQ(redirect(r, "to-http", "https", "example.com", 8443, "/x", NULL, 302),
	    "http://example.com/x");
	/* everything set */
	ASSERT_STREQ(redirect(r, "full", "http", "example.com", 80, "/x", "q", 307),
	    "https://new.example.com:8443/x?q");
	/* a port that is not the scheme's well-known one is shown */
	ASSERT_STREQ(redirect(r, "port80", "https", "example.com", 443, "/x", NULL, 302),
	    "https://example.com:80/x");
	ASSERT_STREQ(redirect(r, "port80", "http", "example.com", 8080, "/x", NULL, 302),
	    "http://example.com/x");
	/* other match kinds: redirect.path replaces the whole path */
	ASSERT_STREQ(redirect(r, "exact", "http", "example.com", 80, "/old", "k=v", 308),
	    "http://example.com/new?k=v");
	ASSERT_STREQ(redirect(r, "landing", "http", "example.com", 80, "/promo/2024/x", NULL, 303),
	    "http://example.com/landing");
	/* host only; request port 0 is the scheme's */
	ASSERT_STREQ(redirect(r, "host", "http", "example.com", 0, "/x", NULL, 302),
	    "http://other.example/x");
	ASSERT_STREQ(redirect(r, "host", "https", "example.com", 9443, "/x", NULL, 302),
	    "https://other.example:9443/x");
	/* only a status: everything else is the request's; IPv6 literals get brackets once */
	ASSERT_STREQ(redirect(r, "status", "http", "fd00::1", 8080, "/p", NULL, 308),
	    "http://[fd00::1]:8080/p");
	ASSERT_STREQ(redirect(r, "status", "http", "[fd00::1]", 80, "/p", NULL, 308),
	    "http://[fd00::1]/p");
	ASSERT_STREQ(redirect(r, "status", NULL, "h", 0, NULL, NULL, 308), "http://h/");
	/* errors */
	ASSERT_EQ(route_redirect_location(route(r, "fwd"), "http", "h", 80, "/", NULL, small,
	    sizeof(small), &status), -EINVAL);
	ASSERT_EQ(route_redirect_location(route(r, "status"), "http", NULL, 80, "/", NULL, small,
	    sizeof(small), &status), -EINVAL);
	ASSERT_EQ(route_redirect_location(route(r, "status"), "http", "", 80, "/", NULL, small,
	    sizeof(small), &status), -EINVAL);
	ASSERT_EQ(route_redirect_location(route(r, "moved"), "http", "example.com", 80,
	    "/v1/users", NULL, small, sizeof(small), &status), -ENOSPC);
	ASSERT_EQ(route_redirect_location(route(r, "moved"), "http", "example.com", 80,
	    "/v1/us", "q=1", small, sizeof(small), &status), -ENOSPC);
	ASSERT_EQ(route_redirect_location(route(r, "moved"), "http", "example.com", 80,
	    "/v1/u", NULL, small, sizeof(small), &status), 0);
	ASSERT_STREQ(small, "http://example.com/api/u");
	ASSERT_EQ(route_redirect_location(route(r, "status"), "http", "a-very-long-host-name", 80,
	    "/", NULL, small, sizeof(small), &status), -ENOSPC);
	registry_unref(r);
}

TEST(route_retry_decisions)
{
	struct registry *r = parse_with(
	    "[route \"r5xx\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\nretry_on = 5xx\n"
	    "[route \"rgw\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\nretry_on = gateway-error\n"
	    "[route \"rcf\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\nretry_on = connect-failure\n"
	    "[route \"rreset\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\nretry_on = reset\n"
	    "[route \"rrs\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\nretry_on = refused-stream\n"
	    "[route \"rdef\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 2\n"
	    "[route \"rboth\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 1\nretry_on = refused-stream, gateway-error\n"
	    "[route \"rnone\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "[route \"rgrpc\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 1\nretry_on = unavailable, deadline-exceeded\n"
	    "[route \"rgrpc2\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "retries = 1\nretry_on = cancelled, resource-exhausted\n");
	enum { S = ROUTE_OUT_STATUS, CF = ROUTE_OUT_CONNECT_FAILURE, RS = ROUTE_OUT_RESET,
		RF = ROUTE_OUT_REFUSED_STREAM, TO = ROUTE_OUT_TIMEOUT };
	/* columns: r5xx rgw rcf rreset rrs rdef rboth */
	static const char *const names[] = { "r5xx", "rgw", "rcf", "rreset", "rrs", "rdef", "rboth" };
	static const struct {
		int outcome, status;
		bool want[7];
	} table[] = {
		{ S, 200, { 0, 0, 0, 0, 0, 0, 0 } },
		{ S, 404, { 0, 0, 0, 0, 0, 0, 0 } },
		{ S, 429, { 0, 0, 0, 0, 0, 0, 0 } },
		{ S, 499, { 0, 0, 0, 0, 0, 0, 0 } },
		{ S, 500, { 1, 0, 0, 0, 0, 0, 0 } },
		{ S, 501, { 1, 0, 0, 0, 0, 0, 0 } },
		{ S, 502, { 1, 1, 0, 0, 0, 0, 1 } },
		{ S, 503, { 1, 1, 0, 0, 0, 0, 1 } },
		{ S, 504, { 1, 1, 0, 0, 0, 0, 1 } },
		{ S, 505, { 1, 0, 0, 0, 0, 0, 0 } },
		{ S, 599, { 1, 0, 0, 0, 0, 0, 0 } },
		{ S, 600, { 0, 0, 0, 0, 0, 0, 0 } },
		{ CF, 0, { 1, 1, 1, 1, 0, 1, 1 } },
		{ RS, 0, { 1, 1, 0, 1, 0, 0, 1 } },
		{ RF, 0, { 1, 1, 0, 1, 1, 1, 1 } },
		{ TO, 0, { 1, 1, 0, 1, 0, 0, 1 } },
		/* the status is ignored for outcomes without a response */
		{ CF, 200, { 1, 1, 1, 1, 0, 1, 1 } },
		{ RS, 503, { 1, 1, 0, 1, 0, 0, 1 } },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		for (size_t c = 0; c < 7; c++) {
			bool got = route_should_retry(route(r, names[c]), 1,
			    (enum route_outcome)table[i].outcome, table[i].status);

			if (got != table[i].want[c]) {
				fprintf(stderr, "row %zu (%d/%d), route %s: got %d\n", i,
				    table[i].outcome, table[i].status, names[c], got);
				ASSERT(0);
			}
		}
	/* retries are the attempts after the first: 2 retries allow asking after attempts 1, 2 */
	ASSERT(route_should_retry(route(r, "r5xx"), 1, ROUTE_OUT_STATUS, 503));
	ASSERT(route_should_retry(route(r, "r5xx"), 2, ROUTE_OUT_STATUS, 503));
	ASSERT(!route_should_retry(route(r, "r5xx"), 3, ROUTE_OUT_STATUS, 503));
	ASSERT(!route_should_retry(route(r, "r5xx"), 0, ROUTE_OUT_STATUS, 503));
	ASSERT(!route_should_retry(route(r, "r5xx"), -1, ROUTE_OUT_STATUS, 503));
	ASSERT(route_should_retry(route(r, "rboth"), 1, ROUTE_OUT_REFUSED_STREAM, 0));
	ASSERT(!route_should_retry(route(r, "rboth"), 2, ROUTE_OUT_REFUSED_STREAM, 0));
	/* gRPC statuses: only those named; 5xx and the others do not cover them */
	ASSERT(route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_GRPC, 14));
	ASSERT(route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_GRPC, 4));
	ASSERT(!route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_GRPC, 1));
	ASSERT(!route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_GRPC, 13));
	ASSERT(!route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_GRPC, 0));
	ASSERT(!route_should_retry(route(r, "rgrpc"), 1, ROUTE_OUT_STATUS, 503));
	ASSERT(route_should_retry(route(r, "rgrpc2"), 1, ROUTE_OUT_GRPC, 1));
	ASSERT(route_should_retry(route(r, "rgrpc2"), 1, ROUTE_OUT_GRPC, 8));
	ASSERT(!route_should_retry(route(r, "rgrpc2"), 1, ROUTE_OUT_GRPC, 14));
	ASSERT(!route_should_retry(route(r, "r5xx"), 1, ROUTE_OUT_GRPC, 14));
	/* no retries: never */
	ASSERT(!route_should_retry(route(r, "rnone"), 1, ROUTE_OUT_CONNECT_FAILURE, 0));
	ASSERT(!route_should_retry(route(r, "rnone"), 1, ROUTE_OUT_STATUS, 503));
	registry_unref(r);
}

TEST(route_backoff)
{
	struct registry *r = parse_with(
	    "[route \"d\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\nretries = 3\n"
	    "[route \"b100\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\nretries = 3\n"
	    "retry_backoff = 100ms\n"
	    "[route \"huge\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\nretries = 3\n"
	    "retry_backoff = 1000d\n");
	const struct reg_route *d = route(r, "d"), *b100 = route(r, "b100"), *huge = route(r, "huge");
	/* intervals with base 25 ms: 25, 50, 100, 200, then capped at 250 */
	static const uint64_t d_max[] = { 0, 25, 50, 100, 200, 250, 250, 250 };
	uint64_t seed = 7;

	ASSERT_EQ(route_backoff_ms(d, 1, 0), 0);
	ASSERT_EQ(route_backoff_ms(d, 1, UINT32_MAX), 24);
	ASSERT_EQ(route_backoff_ms(d, 1, 0x80000000u), 12);
	ASSERT_EQ(route_backoff_ms(d, 0, UINT32_MAX), 24);
	for (int a = 1; a < 8; a++)
		ASSERT_EQ(route_backoff_ms(d, a, UINT32_MAX), d_max[a] - 1);
	ASSERT_EQ(route_backoff_ms(d, 1000, UINT32_MAX), 249);
	ASSERT_EQ(route_backoff_ms(d, 1000, 0), 0);
	/* base 100 ms: 100, 200, 400, 800, then 1000 */
	ASSERT_EQ(route_backoff_ms(b100, 1, UINT32_MAX), 99);
	ASSERT_EQ(route_backoff_ms(b100, 4, UINT32_MAX), 799);
	ASSERT_EQ(route_backoff_ms(b100, 5, UINT32_MAX), 999);
	ASSERT_EQ(route_backoff_ms(b100, 9, UINT32_MAX), 999);
	/* a base past 2^32 ms is still scaled without overflow */
	ASSERT_EQ(huge->retry_backoff, 86400000000ULL);
	ASSERT_EQ(route_backoff_ms(huge, 1, 0x80000000u), 43200000000ULL);
	ASSERT_EQ(route_backoff_ms(huge, 9, 0x80000000u), 432000000000ULL);
	ASSERT(route_backoff_ms(huge, 1, UINT32_MAX) < 86400000000ULL);
	ASSERT(route_backoff_ms(huge, 1, UINT32_MAX) > 86400000000ULL - 100);
	/* bounds over many random values; jitter really spreads the wait */
	for (int a = 1; a < 12; a++) {
		uint64_t cap = a < 8 ? d_max[a] : 250, lo = UINT64_MAX, hi = 0;

		for (int i = 0; i < 2000; i++) {
			uint64_t w = route_backoff_ms(d, a, prng(&seed));

			ASSERT(w < cap);
			lo = w < lo ? w : lo;
			hi = w > hi ? w : hi;
		}
		ASSERT(lo <= cap / 10 && hi >= cap - cap / 10 - 1);
	}
	registry_unref(r);
}

TEST(route_fault_and_mirror_percentages)
{
	struct registry *r = parse_with(
	    "[route \"d100\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.delay = 3s\n"
	    "[route \"d50\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.delay = 100ms\nfault.delay_percent = 50\n"
	    "[route \"d0\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.delay = 100ms\nfault.delay_percent = 0\n"
	    "[route \"a100\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.abort = 503\n"
	    "[route \"a50\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.abort = 418\nfault.abort_percent = 50\n"
	    "[route \"a0\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "fault.abort = 500\nfault.abort_percent = 0\n"
	    "[route \"m100\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "mirror = shadow\n"
	    "[route \"m50\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "mirror = shadow\nmirror_percent = 50\n"
	    "[route \"m0\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n"
	    "mirror = shadow\nmirror_percent = 0\n"
	    "[route \"plain\"]\nnamespace = default\nservice = svc\nbackends = svc-v1\n");
	static const uint32_t edges[] = { 0, 1, 0x7fffffffu, 0x80000000u, UINT32_MAX - 1,
		UINT32_MAX };
	uint64_t ms = 0;
	int status = 0;

	for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		uint32_t x = edges[i];
		bool lower_half = x <= 0x7fffffffu;

		ms = 0;
		ASSERT(route_fault_delay(route(r, "d100"), x, &ms) && ms == 3000);
		ASSERT_EQ(route_fault_delay(route(r, "d50"), x, &ms), lower_half);
		ASSERT(!route_fault_delay(route(r, "d0"), x, &ms));
		ASSERT(!route_fault_delay(route(r, "plain"), x, &ms));
		status = 0;
		ASSERT(route_fault_abort(route(r, "a100"), x, &status) && status == 503);
		ASSERT_EQ(route_fault_abort(route(r, "a50"), x, &status), lower_half);
		ASSERT(!route_fault_abort(route(r, "a0"), x, &status));
		ASSERT(!route_fault_abort(route(r, "plain"), x, &status));
		ASSERT(route_mirror(route(r, "m100"), x));
		ASSERT_EQ(route_mirror(route(r, "m50"), x), lower_half);
		ASSERT(!route_mirror(route(r, "m0"), x));
		ASSERT(!route_mirror(route(r, "plain"), x));
	}
	ms = 0;
	ASSERT(route_fault_delay(route(r, "d50"), 0x7fffffffu, &ms) && ms == 100);
	status = 0;
	ASSERT(route_fault_abort(route(r, "a50"), 0, &status) && status == 418);
	ASSERT(route_mirror(route(r, "m100"), UINT32_MAX));
	ASSERT(route(r, "m100")->mirror_p == registry_find(r, REG_SERVICE, "shadow"));
	/* NULL out-parameters are allowed */
	ASSERT(route_fault_delay(route(r, "d100"), 0, NULL));
	ASSERT(route_fault_abort(route(r, "a100"), 0, NULL));

	/* the mapping itself: p holds for r < p * 2^32 / 100 */
	ASSERT(route_percent_hit(1, 42949672u));
	ASSERT(!route_percent_hit(1, 42949673u));
	ASSERT(route_percent_hit(99, 4252017623u));
	ASSERT(!route_percent_hit(99, 4252017624u));
	ASSERT(route_percent_hit(100, UINT32_MAX));
	ASSERT(!route_percent_hit(0, 0));
	registry_unref(r);
}

/* What routes and policies see, and the app gets: no spelling of a path slips past its plain form. */
TEST(route_normalize_path)
{
	static const struct {
		const char *in, *out; /* out NULL: refused */
	} c[] = {
		{ "/", "/" },
		{ "/a/b", "/a/b" },
		{ "/a/b/", "/a/b/" },
		{ "//admin", "/admin" },
		{ "/public/../admin", "/admin" },
		{ "/public/./../admin/", "/admin/" },
		{ "/a/.", "/a/" },
		{ "/a/..", "/" },
		{ "/../../x", "/x" },
		{ "/..", "/" },
		{ "/%61dmin", "/admin" },
		{ "/%2e%2E/admin", "/admin" },
		{ "/a%7eb%2d", "/a~b-" },
		{ "/a%3fb", "/a%3Fb" },
		{ "/caf%c3%a9", "/caf%C3%A9" },
		{ "http://x/admin", "/admin" },
		{ "HTTPS://x:8443//a/../admin", "/admin" },
		{ "http://x", "/" },
		{ "*", "*" },
		{ "abcdefghijklmnopqrstuvwxyz://web/admin", "/admin" },
		{ "host:443", NULL },
		{ "admin", NULL },
		{ "/a%2fb", NULL },
		{ "/a%5Cb", NULL },
		{ "/a\\b", NULL },
		{ "/a%2", NULL },
		{ "/a%zz", NULL },
		{ "/admin%00/x", NULL }, /* found by tests/fuzz/fuzz-route */
	};
	char out[64], small[4];
	const char *why;

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		int r = route_normalize_path(c[i].in, strlen(c[i].in), out, sizeof(out), &why);

		if (c[i].out == NULL) {
			if (r == 0)
				fprintf(stderr, "\"%s\" was not refused: \"%s\"\n", c[i].in, out);
			ASSERT(r != 0);
			continue;
		}
		if (r != 0 || strcmp(out, c[i].out) != 0)
			fprintf(stderr, "\"%s\": got %d \"%s\", want \"%s\"\n", c[i].in, r,
			    r == 0 ? out : why, c[i].out);
		ASSERT(r == 0 && strcmp(out, c[i].out) == 0);
	}
	/* Never beyond outlen. */
	ASSERT(route_normalize_path("/abcdef", 7, small, sizeof(small), &why) != 0);
	ASSERT(route_normalize_path("/ab", 3, small, sizeof(small), &why) == 0 &&
	    strcmp(small, "/ab") == 0);
	ASSERT(route_normalize_path("/abc", 4, small, sizeof(small), &why) != 0);
}
