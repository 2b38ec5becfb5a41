/* SPDX-License-Identifier: Apache-2.0 */
/* amesh check: validates amesh.conf and the registry it names, and shows what this node would run. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/util.h"
#include "tls/cert.h"

/* "present", or what is missing of CERT_DIR/NS/SA.{crt,key}. */
static const char *
identity_state(const char *cert_dir, const char *ns, const char *sa, bool *ok)
{
	char *crt = xasprintf("%s/%s/%s.crt", cert_dir, ns, sa);
	char *key = xasprintf("%s/%s/%s.key", cert_dir, ns, sa);
	bool has_crt = access(crt, R_OK) == 0, has_key = access(key, R_OK) == 0;

	free(crt);
	free(key);
	*ok = has_crt && has_key;
	if (*ok)
		return "present";
	if (has_crt)
		return "missing key";
	if (has_key)
		return "missing certificate";
	return "missing";
}

/* A waypoint instance whose [waypoint] hbone_address is a fixed address that is none of the
 * registry's addresses of its waypoint listens where no caller sends tunnels: say so. */
static void
warn_instance_address(const struct amesh_conf *c, const struct reg_waypoint *wp)
{
	struct ip_addr ip, zero;
	char a[INET6_ADDRSTRLEN];

	ip_from_sockaddr(&c->waypoint.hbone_address, &ip, NULL);
	memset(&zero, 0, sizeof(zero)); /* the wildcard, 0.0.0.0 or :: */
	zero.family = ip.family;
	if (ip_equal(&ip, &zero))
		return;
	for (size_t j = 0; j < wp->addresses.n; j++)
		if (ip_equal(&ip, &wp->addresses.v[j]))
			return;
	printf("warning   [waypoint] hbone_address %s is none of waypoint \"%s\"'s addresses: "
	    "callers do not send it tunnels (amesh-registry(5))\n", ip_str(&ip, a, sizeof(a)),
	    wp->h.name);
}

/* One identity a role on this host needs; duplicates (same ns/sa) are printed once. */
struct ident {
	const char *ns, *sa, *who;
};

static void
add_ident(struct ident *v, size_t *n, const char *ns, const char *sa, const char *who)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(v[i].ns, ns) == 0 && strcmp(v[i].sa, sa) == 0)
			return;
	v[*n].ns = ns;
	v[*n].sa = sa;
	v[*n].who = who;
	(*n)++;
}

/* Where a route sends requests: each backend as written and what it resolved to. */
static void
print_route(const struct reg_route *rt)
{
	if (rt->redirect) {
		printf("route     %s/%s: redirect\n", rt->namespace, rt->h.name);
		return;
	}
	if (rt->backends.n == 0)
		printf("route     %s/%s: no backends -> service %s/%s\n", rt->namespace, rt->h.name,
		    rt->service_p->namespace, rt->service_p->h.name);
	for (size_t j = 0; j < rt->backends.n; j++) {
		const struct reg_backend *be = &rt->backends_p[j];

		printf("route     %s/%s: backend %s -> %s %s/%s, weight %u\n", rt->namespace,
		    rt->h.name, rt->backends.v[j].name, be->service ? "service" : "workload",
		    be->service ? be->service->namespace : be->workload->namespace,
		    be->service ? be->service->h.name : be->workload->h.name, be->weight);
	}
}

static int
exec_check(const struct cmd_globals *g, int argc, char **argv)
{
	struct amesh_conf *c = NULL;
	struct registry *r = NULL;
	const struct reg_node *node;
	struct ident *ids = NULL;
	size_t nids = 0, nlocal = 0, missing = 0;
	bool wp_named;
	struct diag d;
	char a[64], src[600];
	int rc = EXIT_FAIL;

	if (argc > 1) {
		fprintf(stderr, "amesh check: unexpected argument '%s'\nTry 'amesh check --help'.\n",
		    argv[1]);
		return EXIT_USAGE;
	}
	diag_init(&d);
	if (conf_load(g->conf_path, &c, &d) != 0) {
		diag_print(&d, stderr);
		fprintf(stderr, "amesh check: %s: invalid\n", g->conf_path);
		goto out;
	}
	cmd_log_setup(g, c);
	/* Nothing is said ok before the registry is: "config ok" means the registry has what the
	 * file names (amesh-check(8)). */
	if (cmd_registry_read_once(c, &r, src, sizeof(src), &d) != 0) {
		diag_print(&d, stderr);
		fprintf(stderr, "amesh check: registry %s: invalid\n", src);
		goto out;
	}
	/* The names amesh.conf gives must be in the registry: the config is not ok otherwise. */
	node = registry_find(r, REG_NODE, c->mesh.node);
	if (node == NULL)
		diag_add(&d, c->path, conf_line(c, "mesh", "node"), "[mesh] node \"%s\" is not "
		    "defined in the registry %s", c->mesh.node, c->mesh.registry);
	/* Without a name, the file serves every waypoint of the node, each picked by --name. */
	wp_named = conf_line(c, "waypoint", "name") > 0;
	if (wp_named && registry_find(r, REG_WAYPOINT, c->waypoint.name) == NULL)
		diag_add(&d, c->path, conf_line(c, "waypoint", "name"), "[waypoint] name "
		    "\"%s\" is not defined in the registry", c->waypoint.name);
	/* Without a workload, the section serves every sidecar of the host, each named by
	 * --workload (amesh-sidecar@NAME.service). */
	if (conf_has_section(c, "sidecar") && c->sidecar.workload != NULL &&
	    registry_find(r, REG_WORKLOAD, c->sidecar.workload) == NULL)
		diag_add(&d, c->path, conf_line(c, "sidecar", "workload"), "[sidecar] workload "
		    "\"%s\" is not defined in the registry", c->sidecar.workload);
	if (d.n > 0) {
		diag_print(&d, stderr);
		fprintf(stderr, "amesh check: %s: invalid\n", c->path);
		goto out;
	}
	printf("config    %s: ok\n", c->path);
	printf("registry  %s: ok (files: %zu)\n", src, r->n_files);
	printf("          nodes: %zu, workloads: %zu, services: %zu, waypoints: %zu, "
	    "policies: %zu, routes: %zu\n", r->n[REG_NODE], r->n[REG_WORKLOAD], r->n[REG_SERVICE],
	    r->n[REG_WAYPOINT], r->n[REG_POLICY], r->n[REG_ROUTE]);
	for (size_t i = 0; i < r->n[REG_ROUTE]; i++)
		print_route(REG_ROUTES(r)[i]);

	ids = xcalloc(r->n[REG_WORKLOAD] + r->n[REG_WAYPOINT] + 1, sizeof(*ids));
	printf("node      %s (%s)\n", node->h.name, ip_str(&node->address, a, sizeof(a)));
	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		const struct reg_workload *w = REG_WORKLOADS(r)[i];

		if (w->node_p != node)
			continue;
		nlocal++;
		printf("workload  %s/%s sa=%s addresses=", w->namespace, w->h.name,
		    w->service_account);
		for (size_t j = 0; j < w->addresses.n; j++)
			printf("%s%s", j ? "," : "", ip_str(&w->addresses.v[j], a, sizeof(a)));
		printf(" protocol=%s%s%s\n", w->protocol == REG_PROTO_HBONE ? "hbone" : "tcp",
		    /* The one in force: its own, or its namespace's. */
		    w->waypoint_p ? " waypoint=" : "", w->waypoint_p ? w->waypoint_p->h.name : "");
		if (w->protocol == REG_PROTO_HBONE)
			add_ident(ids, &nids, w->namespace, w->service_account, "workload");
	}
	if (nlocal == 0)
		printf("workload  (none on this node)\n");
	if (conf_has_section(c, "waypoint")) {
		size_t nwp = 0;

		for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++) {
			const struct reg_waypoint *wp = REG_WAYPOINTS(r)[i];

			/* Named: that one. Unnamed: each of this node's, as --name would pick. */
			if (wp_named ? strcmp(wp->h.name, c->waypoint.name) != 0 :
			    !reg_waypoint_on_node(wp, node->h.name))
				continue;
			nwp++;
			printf("waypoint  %s/%s sa=%s address=", wp->namespace, wp->h.name,
			    wp->service_account);
			for (size_t j = 0; j < wp->addresses.n; j++)
				printf("%s%s", j ? "," : "", ip_str(&wp->addresses.v[j], a, sizeof(a)));
			printf("\n");
			warn_instance_address(c, wp);
			add_ident(ids, &nids, wp->namespace, wp->service_account, "waypoint");
		}
		if (nwp == 0)
			printf("waypoint  (none on this node; amesh waypoint --name NAME serves one)\n");
	}
	if (conf_has_section(c, "sidecar") && c->sidecar.workload == NULL) {
		printf("sidecar   (no workload; amesh sidecar --workload NAME serves one)\n");
	} else if (conf_has_section(c, "sidecar")) {
		const struct reg_workload *w = registry_find(r, REG_WORKLOAD, c->sidecar.workload);

		printf("sidecar   %s/%s\n", w->namespace, w->h.name);
		if (w->protocol == REG_PROTO_HBONE)
			add_ident(ids, &nids, w->namespace, w->service_account, "sidecar");
	}
	printf("identity  trust domain %s, certificates in %s\n", c->mesh.trust_domain,
	    c->identity.cert_dir);
	for (size_t i = 0; i < nids; i++) {
		bool ok;
		const char *st = identity_state(c->identity.cert_dir, ids[i].ns, ids[i].sa, &ok);

		char sid[SPIFFE_ID_MAX];

		if (spiffe_format(sid, sizeof(sid), c->mesh.trust_domain, ids[i].ns, ids[i].sa) != 0)
			snprintf(sid, sizeof(sid), "(too long)");
		printf("identity  %s (%s): %s\n", sid, ids[i].who, st);
		missing += !ok;
	}
	printf("bundle    %s: %s\n", c->mesh.trust_bundle,
	    access(c->mesh.trust_bundle, R_OK) == 0 ? "present" : "missing");
	if (c->identity.ca_address.n > 0) {
		/* The roles obtain what is missing; what they need is the node certificate. */
		bool joined = access(c->identity.node_cert, R_OK) == 0 &&
		    access(c->identity.node_key, R_OK) == 0;

		printf("ca        %zu address%s, first %s; node certificate %s: %s\n",
		    c->identity.ca_address.n, c->identity.ca_address.n == 1 ? "" : "es",
		    c->identity.ca_address.v[0], c->identity.node_cert,
		    joined ? "present" : "missing");
		if (!joined)
			printf("warning   this node has not joined: amesh ca join --token-file FILE "
			    "(amesh ca token --node %s on the CA host makes one)\n", c->mesh.node);
		else if (missing > 0)
			printf("note      %zu identit%s not obtained yet: the roles get %s from the CA "
			    "when needed\n", missing, missing == 1 ? "y" : "ies",
			    missing == 1 ? "it" : "them");
		missing = 0;
	}
	/* Missing certificates are expected before `amesh ca issue`; they warn, they do not fail. */
	if (missing > 0)
		printf("warning   %zu identit%s missing: issue with 'amesh ca issue' (amesh-ca(8))\n",
		    missing, missing == 1 ? "y" : "ies");
	printf("ok\n");
	rc = EXIT_OK;
out:
	free(ids);
	registry_unref(r);
	conf_free(c);
	diag_clear(&d);
	return rc;
}

const struct cmd_entry cmd_check_entry = {
	"check", "[-c FILE]", "validate amesh.conf and the registry, and show this node's part",
	NULL, exec_check, "amesh-check(8)",
};
