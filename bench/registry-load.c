/* SPDX-License-Identifier: Apache-2.0 */
/* Benchmark: generates a large registry.d, times registry_load_dir() and the O(1) lookups. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "config/registry.h"
#include "core/diag.h"
#include "core/parse.h"
#include "core/util.h"

#define GOAL_MS 100.0
#define LOOKUPS 1000000
/* inih reads into a 200-byte buffer: the line, '\n' and '\0'. Stay under it, newline included. */
#define LINE_LIMIT 198
#define N_NAMESPACES 20
#define N_NODES 20
#define N_WAYPOINTS 4 /* one in each of the first namespaces */
#define N_ROUTES 100
#define MAX_FILES 64

static const char *const tiers[] = { "frontend", "backend", "data" };

struct opts {
	size_t workloads, services, policies, routes;
	unsigned rounds, files;
};

/* The generated directory, its files and what was written. */
struct gen {
	const struct opts *o;
	char *dir;
	char *path[MAX_FILES];
	FILE *fp[MAX_FILES];
	unsigned nfiles;
	size_t bytes, lines;
};

static struct gen *cleanup_gen;

/* Removes the generated files and directory; safe to call twice. */
static void
gen_remove(struct gen *g)
{
	if (g == NULL || g->dir == NULL)
		return;
	for (unsigned f = 0; f < g->nfiles; f++) {
		if (g->fp[f] != NULL)
			fclose(g->fp[f]);
		g->fp[f] = NULL;
		if (unlink(g->path[f]) != 0 && errno != ENOENT)
			fprintf(stderr, "registry-load: cannot remove %s: %s\n", g->path[f],
			    strerror(errno));
		free(g->path[f]);
		g->path[f] = NULL;
	}
	if (rmdir(g->dir) != 0)
		fprintf(stderr, "registry-load: cannot remove %s: %s\n", g->dir, strerror(errno));
	free(g->dir);
	g->dir = NULL;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Reports a broken benchmark or a wrong lookup result, removes the directory and aborts. */
static void
die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "registry-load: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	gen_remove(cleanup_gen);
	abort();
}

static void emit(struct gen *g, unsigned f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one line to file f, checking it fits the parser's line limit. */
static void
emit(struct gen *g, unsigned f, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n + 1 >= LINE_LIMIT)
		die("generated line is %d bytes, the limit is %d: %.60s...", n + 1, LINE_LIMIT, buf);
	if (fprintf(g->fp[f], "%s\n", buf) < 0)
		die("cannot write %s: %s", g->path[f], strerror(errno));
	g->bytes += (size_t)n + 1;
	g->lines++;
}

/* The model every section and every check derives from, so expectations never drift. */
static unsigned
ns_of_app(size_t j)
{
	return (unsigned)(j % N_NAMESPACES);
}

static size_t
app_of_workload(const struct opts *o, size_t i)
{
	return i % o->services;
}

static void
workload_name(size_t i, const struct opts *o, char *buf, size_t len)
{
	snprintf(buf, len, "app-%04zu-v%zu-%05zu", app_of_workload(o, i), 1 + (i / o->services) % 3, i);
}

/* Every workload has a v4 address, every third one also a v6 one; misses live in 11/8. */
static bool
workload_has_v6(size_t i)
{
	return i % 3 == 0;
}

static void
workload_addr(size_t i, bool v6, bool miss, char *buf, size_t len)
{
	size_t n = i + 1;

	if (v6)
		snprintf(buf, len, "fd00:%s::%zx:%zx", miss ? "11" : "10", n >> 16, n & 0xffff);
	else
		snprintf(buf, len, "%d.%zu.%zu.%zu", miss ? 11 : 10, (n >> 16) & 255, (n >> 8) & 255,
		    n & 255);
}

/* Services sit at 10.96.0.0 upwards, clear of the workloads below 10.16.0.0. */
static bool
service_has_v6(size_t j)
{
	return j % 4 == 0;
}

static void
service_vip(size_t j, bool v6, char *buf, size_t len)
{
	if (v6)
		snprintf(buf, len, "fd00:96::%zx", j + 1);
	else
		snprintf(buf, len, "10.%zu.%zu.%zu", 96 + (j >> 16), (j >> 8) & 255, j & 255);
}

static const struct portmap service_ports[3] = { { 80, 8080 }, { 443, 8443 }, { 9090, 9090 } };

static size_t
service_nports(size_t j)
{
	return 1 + j % 3;
}

static size_t
service_endpoints(const struct opts *o, size_t j)
{
	return o->workloads / o->services + (j < o->workloads % o->services);
}

static void
principal(size_t j, char *buf, size_t len)
{
	snprintf(buf, len, "cluster.local/ns/ns-%02u/sa/sa-app-%04zu", ns_of_app(j), j);
}

/* File f holds the f-th slice of each kind. */
static unsigned
file_of(const struct gen *g, size_t i, size_t n)
{
	return (unsigned)(i * g->nfiles / n);
}

static void
gen_infra(struct gen *g)
{
	emit(g, 0, "; Nodes and waypoints.");
	for (unsigned k = 0; k < N_NODES; k++) {
		emit(g, 0, "[node \"node-%02u\"]", k);
		emit(g, 0, "address = 192.168.0.%u", k + 1);
		emit(g, 0, "%s", "");
	}
	for (unsigned k = 0; k < N_WAYPOINTS; k++) {
		emit(g, 0, "[waypoint \"wp-ns-%02u\"]", k);
		emit(g, 0, "namespace = ns-%02u", k);
		emit(g, 0, "service_account = waypoint");
		emit(g, 0, "address = 100.64.0.%u", k + 1);
		emit(g, 0, "node = node-%02u", k % N_NODES);
		emit(g, 0, "%s", "");
	}
}

static void
gen_workloads(struct gen *g)
{
	const struct opts *o = g->o;
	char name[64], a4[64], a6[64];

	for (size_t i = 0; i < o->workloads; i++) {
		unsigned f = file_of(g, i, o->workloads);
		size_t j = app_of_workload(o, i);
		unsigned ns = ns_of_app(j);

		workload_name(i, o, name, sizeof(name));
		workload_addr(i, false, false, a4, sizeof(a4));
		emit(g, f, "[workload \"%s\"]", name);
		emit(g, f, "namespace = ns-%02u", ns);
		emit(g, f, "service_account = sa-app-%04zu", j);
		emit(g, f, "node = node-%02zu", i % N_NODES);
		if (workload_has_v6(i)) {
			workload_addr(i, true, false, a6, sizeof(a6));
			emit(g, f, "addresses = %s, %s", a4, a6);
		} else {
			emit(g, f, "addresses = %s", a4);
		}
		if (i % 2 == 0)
			emit(g, f, "labels = app=app-%04zu, version=v%zu, tier=%s", j,
			    1 + (i / o->services) % 3, tiers[j % 3]);
		else
			emit(g, f, "labels = app=app-%04zu, version=v%zu", j, 1 + (i / o->services) % 3);
		if (ns < N_WAYPOINTS)
			emit(g, f, "waypoint = wp-ns-%02u", ns);
		if (i % 50 == 49)
			emit(g, f, "protocol = tcp                  ; legacy, not captured");
		emit(g, f, "%s", "");
	}
}

static void
gen_services(struct gen *g)
{
	const struct opts *o = g->o;
	char v4[64], v6[64];

	for (size_t j = 0; j < o->services; j++) {
		unsigned f = file_of(g, j, o->services);
		unsigned ns = ns_of_app(j);
		size_t np = service_nports(j);

		service_vip(j, false, v4, sizeof(v4));
		emit(g, f, "[service \"app-%04zu\"]", j);
		emit(g, f, "namespace = ns-%02u", ns);
		if (j % 5 == 0)
			emit(g, f, "hostname = app-%04zu.mesh.example.com", j);
		if (service_has_v6(j)) {
			service_vip(j, true, v6, sizeof(v6));
			emit(g, f, "vip = %s, %s", v4, v6);
		} else {
			emit(g, f, "vip = %s", v4);
		}
		emit(g, f, "ports = %u:%u%s%s", service_ports[0].port, service_ports[0].target,
		    np > 1 ? ", 443:8443" : "", np > 2 ? ", 9090" : "");
		emit(g, f, "selector = app=app-%04zu", j);
		if (ns < N_WAYPOINTS && j % 2 == 0)
			emit(g, f, "waypoint = wp-ns-%02u", ns);
		emit(g, f, "%s", "");
	}
}

static void
gen_policies(struct gen *g)
{
	const struct opts *o = g->o;
	char p1[96], p2[96], p3[96];

	for (size_t p = 0; p < o->policies; p++) {
		unsigned f = file_of(g, p, o->policies);
		size_t j = p % o->services;
		size_t callers = 1 + p % 3;

		principal((j + 1) % o->services, p1, sizeof(p1));
		principal((j + 7) % o->services, p2, sizeof(p2));
		principal((j + 13) % o->services, p3, sizeof(p3));
		emit(g, f, "[policy \"pol-app-%04zu-%zu\"]", j, p / o->services);
		emit(g, f, "namespace = ns-%02u", ns_of_app(j));
		emit(g, f, "selector = app=app-%04zu", j);
		emit(g, f, "action = %s", p % 10 == 9 ? "deny" : "allow");
		/* Small meshes repeat callers; a list must not. */
		if (callers > 1 && strcmp(p1, p2) == 0)
			callers = 1;
		if (callers > 2 && (strcmp(p1, p3) == 0 || strcmp(p2, p3) == 0))
			callers = 2;
		emit(g, f, "from.principals = %s%s%s%s%s", p1, callers > 1 ? ", " : "",
		    callers > 1 ? p2 : "", callers > 2 ? ", " : "", callers > 2 ? p3 : "");
		if (p % 5 == 0)
			emit(g, f, "from.namespaces = ns-%02u, ns-%02u", ns_of_app(j),
			    (ns_of_app(j) + 1) % N_NAMESPACES);
		emit(g, f, "to.ports = 8080%s", service_nports(j) > 1 ? ", 8443" : "");
		if (p % 7 == 0) {
			emit(g, f, "to.methods = GET, POST");
			emit(g, f, "to.paths = /api/*");
		}
		emit(g, f, "%s", "");
	}
}

static void
gen_routes(struct gen *g)
{
	const struct opts *o = g->o;

	for (size_t r = 0; r < o->routes; r++) {
		unsigned f = file_of(g, r, o->routes);
		size_t j = r * o->services / o->routes, canary = (j + N_NAMESPACES) % o->services;

		emit(g, f, "[route \"route-app-%04zu-%zu\"]", j, r);
		emit(g, f, "namespace = ns-%02u", ns_of_app(j));
		emit(g, f, "service = app-%04zu", j);
		emit(g, f, "match.path_prefix = /api/v%zu", 1 + r % 3);
		if (r % 4 == 0)
			emit(g, f, "match.headers = x-canary: true");
		/* A canary backend must be in the route's namespace (amesh-registry(5)). */
		if (canary != j && ns_of_app(canary) == ns_of_app(j))
			emit(g, f, "backends = app-%04zu 90, app-%04zu 10", j, canary);
		else
			emit(g, f, "backends = app-%04zu", j);
		emit(g, f, "timeout = 2s");
		emit(g, f, "retries = 2");
		emit(g, f, "retry_on = 5xx, connect-failure");
		if (r % 10 == 0) {
			emit(g, f, "fault.delay = 100ms");
			emit(g, f, "fault.delay_percent = 5");
		}
		emit(g, f, "%s", "");
	}
}

static void
generate(struct gen *g)
{
	const char *tmp = getenv("TMPDIR");

	g->dir = xasprintf("%s/amesh-bench.XXXXXX", tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(g->dir) == NULL) {
		fprintf(stderr, "registry-load: mkdtemp %s: %s\n", g->dir, strerror(errno));
		free(g->dir);
		g->dir = NULL;
		exit(1);
	}
	cleanup_gen = g;
	g->nfiles = g->o->files;
	for (unsigned f = 0; f < g->nfiles; f++) {
		g->path[f] = xasprintf("%s/mesh-%02u.conf", g->dir, f);
		g->fp[f] = fopen(g->path[f], "w");
		if (g->fp[f] == NULL)
			die("cannot create %s: %s", g->path[f], strerror(errno));
		emit(g, f, "; Generated by bench/registry-load: part %u of %u.", f + 1, g->nfiles);
		emit(g, f, "%s", "");
	}
	gen_infra(g);
	gen_workloads(g);
	gen_services(g);
	gen_policies(g);
	gen_routes(g);
	for (unsigned f = 0; f < g->nfiles; f++) {
		if (fclose(g->fp[f]) != 0) {
			g->fp[f] = NULL;
			die("cannot write %s: %s", g->path[f], strerror(errno));
		}
		g->fp[f] = NULL;
	}
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long
maxrss_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return -1;
	return ru.ru_maxrss; /* KiB on Linux */
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void
to_ip(const char *s, struct ip_addr *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (inet_pton(AF_INET, s, ip->a) == 1)
		ip->family = AF_INET;
	else if (inet_pton(AF_INET6, s, ip->a) == 1)
		ip->family = AF_INET6;
	else
		die("bad generated address '%s'", s);
}

/* A fixed-seed shuffle, so every run asks in the same cache-unfriendly order. */
static uint64_t
xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#define SHUFFLE(v, n)                                                   \
	do {                                                            \
		uint64_t seed_ = 0x9e3779b97f4a7c15ULL;                 \
		for (size_t i_ = (n); i_ > 1; i_--) {                   \
			size_t k_ = (size_t)(xorshift(&seed_) % i_);    \
			__typeof__((v)[0]) t_ = (v)[i_ - 1];            \
			(v)[i_ - 1] = (v)[k_];                          \
			(v)[k_] = t_;                                   \
		}                                                       \
	} while (0)

/* Checks counts and a sample of what the load resolved, against the generator's model. */
static void
check_loaded(const struct registry *r, const struct opts *o)
{
	if (r->n[REG_NODE] != N_NODES || r->n[REG_WAYPOINT] != N_WAYPOINTS ||
	    r->n[REG_WORKLOAD] != o->workloads || r->n[REG_SERVICE] != o->services ||
	    r->n[REG_POLICY] != o->policies || r->n[REG_ROUTE] != o->routes)
		die("loaded %zu nodes, %zu waypoints, %zu workloads, %zu services, %zu policies, "
		    "%zu routes; generated %d, %d, %zu, %zu, %zu, %zu", r->n[REG_NODE],
		    r->n[REG_WAYPOINT], r->n[REG_WORKLOAD], r->n[REG_SERVICE], r->n[REG_POLICY],
		    r->n[REG_ROUTE], N_NODES, N_WAYPOINTS, o->workloads, o->services, o->policies,
		    o->routes);
	for (size_t j = 0; j < o->services; j++) {
		char name[64];
		const struct reg_service *s;

		snprintf(name, sizeof(name), "app-%04zu", j);
		s = registry_find(r, REG_SERVICE, name);
		if (s == NULL)
			die("service %s is missing", name);
		if (s->n_endpoints != service_endpoints(o, j))
			die("service %s selects %zu workloads, expected %zu", name, s->n_endpoints,
			    service_endpoints(o, j));
	}
}

struct addr_query {
	struct ip_addr ip;
	const struct reg_workload *expect; /* NULL: a miss */
};

/* Times registry_workload_by_addr over every workload address plus one miss in nine. */
static double
bench_by_addr(const struct registry *r, const struct opts *o, size_t *nhit, size_t *nmiss)
{
	struct addr_query *q = xcalloc(o->workloads * 3, sizeof(*q));
	size_t n = 0, bad = 0, first_bad = 0;
	char name[64], a[64];
	uint64_t t0, t1;

	*nhit = *nmiss = 0;
	for (size_t i = 0; i < o->workloads; i++) {
		const struct reg_workload *w;
		bool found;

		workload_name(i, o, name, sizeof(name));
		w = registry_find(r, REG_WORKLOAD, name);
		if (w == NULL)
			die("workload %s is missing", name);
		for (int v6 = 0; v6 <= (int)workload_has_v6(i); v6++) {
			workload_addr(i, v6, false, a, sizeof(a));
			to_ip(a, &q[n].ip);
			q[n].expect = w;
			found = false;
			for (size_t k = 0; k < w->addresses.n; k++)
				found |= ip_equal(&w->addresses.v[k], &q[n].ip);
			if (!found)
				die("workload %s does not hold its address %s", name, a);
			n++;
			(*nhit)++;
		}
		if (i % 8 == 0) {
			workload_addr(i, i % 16 == 0, true, a, sizeof(a));
			to_ip(a, &q[n].ip);
			q[n++].expect = NULL;
			(*nmiss)++;
		}
	}
	SHUFFLE(q, n);
	t0 = now_ns();
	for (size_t i = 0, k = 0; i < LOOKUPS; i++) {
		if (registry_workload_by_addr(r, &q[k].ip) != q[k].expect && bad++ == 0)
			first_bad = k;
		if (++k == n)
			k = 0;
	}
	t1 = now_ns();
	if (bad != 0) {
		const struct reg_workload *got = registry_workload_by_addr(r, &q[first_bad].ip);

		die("registry_workload_by_addr: %zu wrong results; first: %s gave %s, expected %s",
		    bad, ip_str(&q[first_bad].ip, a, sizeof(a)), got ? got->h.name : "nothing",
		    q[first_bad].expect ? q[first_bad].expect->h.name : "nothing");
	}
	free(q);
	return (double)(t1 - t0) / LOOKUPS;
}

struct vip_query {
	struct ip_addr ip;
	uint16_t port, target;
	const struct reg_service *expect; /* NULL: a miss */
};

static bool
vip_ok(const struct reg_vip *v, const struct vip_query *q)
{
	if (q->expect == NULL)
		return v == NULL;
	return v != NULL && v->service == q->expect && v->port->port == q->port &&
	    v->port->target == q->target;
}

/* Times registry_service_by_vip over every (vip, port) plus an unserved port of each v4 VIP. */
static double
bench_by_vip(const struct registry *r, const struct opts *o, size_t *nhit, size_t *nmiss)
{
	struct vip_query *q = xcalloc(o->services * 7, sizeof(*q));
	size_t n = 0, bad = 0, first_bad = 0;
	char name[64], a[64];
	uint64_t t0, t1;

	*nhit = *nmiss = 0;
	for (size_t j = 0; j < o->services; j++) {
		const struct reg_service *s;

		snprintf(name, sizeof(name), "app-%04zu", j);
		s = registry_find(r, REG_SERVICE, name);
		if (s == NULL)
			die("service %s is missing", name);
		for (int v6 = 0; v6 <= (int)service_has_v6(j); v6++) {
			service_vip(j, v6, a, sizeof(a));
			for (size_t p = 0; p < service_nports(j); p++) {
				to_ip(a, &q[n].ip);
				q[n].port = service_ports[p].port;
				q[n].target = service_ports[p].target;
				q[n++].expect = s;
				(*nhit)++;
			}
		}
		service_vip(j, false, a, sizeof(a));
		to_ip(a, &q[n].ip);
		q[n].port = 81;
		q[n++].expect = NULL;
		(*nmiss)++;
	}
	SHUFFLE(q, n);
	t0 = now_ns();
	for (size_t i = 0, k = 0; i < LOOKUPS; i++) {
		if (!vip_ok(registry_service_by_vip(r, &q[k].ip, q[k].port), &q[k]) && bad++ == 0)
			first_bad = k;
		if (++k == n)
			k = 0;
	}
	t1 = now_ns();
	if (bad != 0) {
		const struct reg_vip *got = registry_service_by_vip(r, &q[first_bad].ip,
		    q[first_bad].port);

		die("registry_service_by_vip: %zu wrong results; first: %s port %u gave %s, "
		    "expected %s", bad, ip_str(&q[first_bad].ip, a, sizeof(a)), q[first_bad].port,
		    got ? got->service->h.name : "nothing",
		    q[first_bad].expect ? q[first_bad].expect->h.name : "nothing");
	}
	free(q);
	return (double)(t1 - t0) / LOOKUPS;
}

static void
usage(FILE *fp)
{
	fprintf(fp, "usage: registry-load [-w WORKLOADS] [-s SERVICES] [-p POLICIES] [-f FILES] "
	    "[-n ROUNDS] [-k DIR]\n"
	    "Generates a registry.d in a temporary directory, times registry_load_dir() over ROUNDS\n"
	    "loads (default 10) and 1000000 address and VIP lookups. Defaults: -w 10000 -s 1000\n"
	    "-p 1000 -f 10; 20 nodes, %d waypoints and %d routes are added.\n"
	    "-k DIR: only generate, into DIR (a new directory), and keep it.\n", N_WAYPOINTS,
	    N_ROUTES);
}

static size_t
num_arg(int opt, const char *s, size_t min, size_t max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < min || v > max) {
		fprintf(stderr, "registry-load: -%c wants a number from %zu to %zu, not '%s'\n", opt,
		    min, max, s);
		usage(stderr);
		exit(2);
	}
	return (size_t)v;
}

int
main(int argc, char **argv)
{
	struct opts o = { 10000, 1000, 1000, N_ROUTES, 10, 10 };
	const char *keep = NULL;
	struct gen g;
	struct registry *r = NULL;
	struct diag d;
	double *ms, *sorted, med, addr_ns, vip_ns;
	size_t ahit, amiss, vhit, vmiss;
	long rss0, rss1;
	int c;

	while ((c = getopt(argc, argv, "w:s:p:f:n:k:h")) != -1) {
		switch (c) {
		case 'k':
			keep = optarg;
			break;
		case 'w':
			o.workloads = num_arg(c, optarg, 1, REG_MAX_ENTRIES / 2);
			break;
		case 's':
			o.services = num_arg(c, optarg, 1, REG_MAX_ENTRIES / 4);
			break;
		case 'p':
			o.policies = num_arg(c, optarg, 0, REG_MAX_ENTRIES / 4);
			break;
		case 'f':
			o.files = (unsigned)num_arg(c, optarg, 1, MAX_FILES);
			break;
		case 'n':
			o.rounds = (unsigned)num_arg(c, optarg, 1, 100000);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	memset(&g, 0, sizeof(g));
	g.o = &o;
	generate(&g);
	printf("registry  %zu workloads, %zu services, %zu policies, %d nodes, %d waypoints, "
	    "%zu routes\n", o.workloads, o.services, o.policies, N_NODES, N_WAYPOINTS, o.routes);
	printf("files     %u files, %zu bytes (%.2f MiB), %zu lines, in %s\n", g.nfiles, g.bytes,
	    g.bytes / 1048576.0, g.lines, keep != NULL ? keep : g.dir);
	if (keep != NULL) {
		/* bench/registry-etcd pushes the same registry to etcd. */
		for (unsigned f = 0; f < g.nfiles; f++)
			if (g.fp[f] != NULL)
				fclose(g.fp[f]);
		if (rename(g.dir, keep) != 0) {
			fprintf(stderr, "registry-load: cannot rename %s to %s: %s\n", g.dir, keep,
			    strerror(errno));
			return 1;
		}
		return 0;
	}

	ms = xcalloc(o.rounds, sizeof(*ms));
	sorted = xcalloc(o.rounds, sizeof(*sorted));
	rss0 = maxrss_kib();
	for (unsigned k = 0; k < o.rounds; k++) {
		uint64_t t0, t1;
		int rc;

		diag_init(&d);
		t0 = now_ns();
		rc = registry_load_dir(g.dir, &r, &d);
		t1 = now_ns();
		if (rc != 0 || r == NULL || diag_count(&d) != 0) {
			diag_print(&d, stderr);
			fprintf(stderr, "registry-load: registry_load_dir(%s) failed (%d)\n", g.dir, rc);
			diag_clear(&d);
			registry_unref(r);
			gen_remove(&g);
			return 1;
		}
		diag_clear(&d);
		ms[k] = (double)(t1 - t0) / 1e6;
		if (k + 1 < o.rounds)
			registry_unref(r);
	}
	rss1 = maxrss_kib();
	memcpy(sorted, ms, o.rounds * sizeof(*ms));
	qsort(sorted, o.rounds, sizeof(*sorted), cmp_double);
	med = o.rounds % 2 ? sorted[o.rounds / 2] :
	    (sorted[o.rounds / 2 - 1] + sorted[o.rounds / 2]) / 2;
	printf("load      %u rounds of registry_load_dir: min %.1f ms, median %.1f ms, max %.1f ms "
	    "(first %.1f ms)\n", o.rounds, sorted[0], med, sorted[o.rounds - 1], ms[0]);
	printf("memory    peak RSS %.1f MiB (%.1f MiB before the first load)\n", rss1 / 1024.0,
	    rss0 / 1024.0);

	check_loaded(r, &o);
	addr_ns = bench_by_addr(r, &o, &ahit, &amiss);
	printf("lookup    registry_workload_by_addr: %.1f ns/lookup (%d lookups over %zu addresses "
	    "and %zu misses, all correct)\n", addr_ns, LOOKUPS, ahit, amiss);
	vip_ns = bench_by_vip(r, &o, &vhit, &vmiss);
	printf("lookup    registry_service_by_vip:   %.1f ns/lookup (%d lookups over %zu vip:port "
	    "and %zu misses, all correct)\n", vip_ns, LOOKUPS, vhit, vmiss);

	printf("verdict   %s: median load %.1f ms %s the %.0f ms goal (min %.1f, max %.1f) for %zu "
	    "workloads, %zu services, %zu policies\n", med < GOAL_MS ? "PASS" : "MISS", med,
	    med < GOAL_MS ? "is under" : "misses", GOAL_MS, sorted[0], sorted[o.rounds - 1],
	    o.workloads, o.services, o.policies);

	registry_unref(r);
	free(ms);
	free(sorted);
	gen_remove(&g);
	return 0;
}
