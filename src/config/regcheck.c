/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry's checks across entries (registry-int.h): every name a key refers to exists and
 * has the right kind and namespace, addresses are unique (and indexed), endpoints are resolved
 * from selectors, policies and routes are consistent. Each problem names its file and line.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/registry-int.h"
#include "core/log.h"
#include "core/util.h"
/* An external service names its destination and nothing of the mesh's. */
static void
check_external(struct builder *b, const struct reg_service *sv)
{
	const struct reg_head *h = &sv->h;

	if (!has(h, REG_SV_HOSTNAME))
		diag_add(b->d, h->file, h->line, "service \"%s\": external = yes needs the "
		    "destination's hostname", h->name);
	if (has(h, REG_SV_SELECTOR))
		ERR(h, REG_SV_SELECTOR, "service \"%s\": an external service has no selector (its "
		    "destination is hostname or addresses)", h->name);
	if (has(h, REG_SV_WAYPOINT))
		ERR(h, REG_SV_WAYPOINT, "service \"%s\": an external service has no waypoint",
		    h->name);
	for (size_t i = 0; i < sv->from_principals.n; i++)
		if (strncmp(sv->from_principals.v[i], "spiffe://", 9) == 0) {
			ERR(h, REG_SV_FROM_PRINCIPALS, "service \"%s\": principals are written without "
			    "'spiffe://' (TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT): '%s'", h->name,
			    sv->from_principals.v[i]);
			break;
		}
}

/* Required keys and defaults that depend on the entry's name. */
static void
check_required(struct builder *b)
{
	struct registry *r = b->r;
	char why[256];

	for (int k = 0; k < REG_NKINDS; k++) {
		size_t nkw;
		const struct kw *kws = registry_keywords((enum reg_kind)k, &nkw);

		for (size_t i = 0; i < r->n[k]; i++) {
			struct reg_head *h = r->ent[k][i];

			for (size_t j = 0; j < nkw; j++) {
				const struct kw *kw = &kws[j];

				if (h->keyline[j] != 0)
					continue;
				if (kw->required)
					diag_add(b->d, h->file, h->line, "%s \"%s\": missing required "
					    "key '%s'", registry_kind_name(k), h->name, kw->key);
				else if (kw->dflt != NULL &&
				    kw_set(kw, h, kw->dflt, NULL, why, sizeof(why)) != 0)
					fatalx("bad registry default %s.%s", registry_kind_name(k), kw->key);
			}
			if (k == REG_WAYPOINT) {
				struct reg_waypoint *wp = (struct reg_waypoint *)h;

				/* Istio's waypoints run as a service account named after them. */
				if (wp->service_account == NULL && kw_is_name(h->name))
					wp->service_account = xstrdup(h->name);
				else if (wp->service_account == NULL)
					diag_add(b->d, h->file, h->line, "waypoint \"%s\": name is not "
					    "a valid service account; set service_account", h->name);
				if (strcmp(h->name, REG_WAYPOINT_NONE) == 0)
					diag_add(b->d, h->file, h->line, "waypoint \"%s\": the name is "
					    "reserved (waypoint = %s means no waypoint)", h->name,
					    REG_WAYPOINT_NONE);
				if (wp->addresses.n > REG_WP_MAX_ADDRESSES)
					ERR(h, REG_WP_ADDRESS, "waypoint \"%s\": %zu addresses; at most %d "
					    "(one per instance)", h->name, wp->addresses.n,
					    REG_WP_MAX_ADDRESSES);
			}
			if (k == REG_NAMESPACE && !kw_is_name(h->name))
				diag_add(b->d, h->file, h->line, "namespace \"%s\": not a valid namespace "
				    "name (lower-case letters, digits and '-', at most 63)", h->name);
			if (k == REG_SERVICE) {
				struct reg_service *sv = (struct reg_service *)h;

				if (!sv->external && h->keyline[REG_SV_SELECTOR] == 0)
					diag_add(b->d, h->file, h->line, "%s \"%s\": missing required "
					    "key '%s'", registry_kind_name(k), h->name, "selector");
				if (sv->external)
					check_external(b, sv);
				else if (has(h, REG_SV_ADDRESSES) || has(h, REG_SV_FROM_PRINCIPALS) ||
				    has(h, REG_SV_FROM_NAMESPACES))
					ERR(h, has(h, REG_SV_ADDRESSES) ? REG_SV_ADDRESSES :
					    has(h, REG_SV_FROM_PRINCIPALS) ? REG_SV_FROM_PRINCIPALS :
					    REG_SV_FROM_NAMESPACES, "service \"%s\": addresses and from.* are "
					    "for external services (external = yes)", h->name);
				if (sv->hostname == NULL && sv->namespace != NULL)
					sv->hostname = xasprintf("%s.%s.svc.cluster.local", h->name,
					    sv->namespace);
			}
		}
	}
}


/* Puts every node, workload and waypoint address in one table: an address has one owner. */
static void
index_addresses(struct builder *b)
{
	struct registry *r = b->r;
	size_t total = r->n[REG_NODE], nowners = 0, nvips = 0;
	struct reg_addr_owner *owners;
	char a[64];

	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++)
		total += REG_WORKLOADS(r)[i]->addresses.n;
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++)
		total += REG_WAYPOINTS(r)[i]->addresses.n;
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++)
		nvips += REG_SERVICES(r)[i]->vips.n * REG_SERVICES(r)[i]->ports.n;
	htab_init(&r->by_addr, total);
	owners = xcalloc(total, sizeof(*owners));
	r->addr_owners = owners;
	r->vip_keys = xcalloc(nvips, VIP_KEY_LEN);

	for (int k = 0; k < REG_NKINDS; k++) {
		if (k != REG_NODE && k != REG_WORKLOAD && k != REG_WAYPOINT)
			continue;
		for (size_t i = 0; i < r->n[k]; i++) {
			struct reg_head *h = r->ent[k][i];
			const struct ip_addr *addrs;
			size_t n;
			int idx;

			if (k == REG_NODE) {
				addrs = &((struct reg_node *)h)->address;
				n = 1;
				idx = REG_N_ADDRESS;
			} else if (k == REG_WAYPOINT) {
				addrs = ((struct reg_waypoint *)h)->addresses.v;
				n = ((struct reg_waypoint *)h)->addresses.n;
				idx = REG_WP_ADDRESS;
			} else {
				addrs = ((struct reg_workload *)h)->addresses.v;
				n = ((struct reg_workload *)h)->addresses.n;
				idx = REG_WL_ADDRESSES;
			}
			if (!has(h, idx))
				continue; /* missing or invalid, already reported */
			for (size_t j = 0; j < n; j++) {
				struct reg_addr_owner *o = &owners[nowners], *prev;
				const struct reg_head *ph;

				o->kind = k;
				o->ent = h;
				prev = htab_put(&r->by_addr, &addrs[j], sizeof(addrs[j]), o);
				if (prev == NULL) {
					nowners++;
					continue;
				}
				ph = prev->ent;
				ERR(h, idx, "%s \"%s\": address %s is already used by %s \"%s\" (%s:%d)",
				    registry_kind_name(k), h->name, ip_str(&addrs[j], a, sizeof(a)),
				    registry_kind_name(prev->kind), ph->name, ph->file, ph->line);
			}
		}
	}
}

/* Builds (namespace, label) -> workloads so selectors cost their matches, not the workload count. */
struct label_bucket {
	const struct reg_workload **v;
	size_t n, cap;
};

static void
resolve_endpoints(struct builder *b)
{
	struct registry *r = b->r;
	struct htab idx;
	struct label_bucket *buckets;
	char **keys;
	size_t nlabels = 0, nb = 0;

	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++)
		nlabels += REG_WORKLOADS(r)[i]->labels.n;
	htab_init(&idx, nlabels);
	buckets = xcalloc(nlabels, sizeof(*buckets));
	keys = xcalloc(nlabels, sizeof(*keys));
	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		const struct reg_workload *w = REG_WORKLOADS(r)[i];

		for (size_t j = 0; j < w->labels.n && w->namespace; j++) {
			char *key = xasprintf("%s/%s=%s", w->namespace, w->labels.v[j].key,
			    w->labels.v[j].value);
			struct label_bucket *bk = htab_get_str(&idx, key);

			if (bk == NULL) {
				bk = &buckets[nb];
				keys[nb++] = key;
				htab_put(&idx, key, strlen(key), bk);
			} else {
				free(key);
			}
			if (bk->n == bk->cap) {
				bk->cap = bk->cap ? bk->cap * 2 : 4;
				bk->v = xrealloc(bk->v, bk->cap, sizeof(*bk->v));
			}
			bk->v[bk->n++] = w;
		}
	}
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		struct reg_service *s = REG_SERVICES(r)[i];
		struct label_bucket *bk;
		char *key;

		if (s->selector.n == 0 || s->namespace == NULL)
			continue;
		key = xasprintf("%s/%s=%s", s->namespace, s->selector.v[0].key,
		    s->selector.v[0].value);
		bk = htab_get_str(&idx, key);
		free(key);
		if (bk == NULL)
			continue;
		s->endpoints = xcalloc(bk->n, sizeof(*s->endpoints));
		for (size_t j = 0; j < bk->n; j++)
			if (registry_selects(&s->selector, &bk->v[j]->labels))
				s->endpoints[s->n_endpoints++] = bk->v[j];
	}
	for (size_t i = 0; i < nb; i++) {
		free(keys[i]);
		free(buckets[i].v);
	}
	free(keys);
	free(buckets);
	htab_free(&idx);
}

/*
 * The waypoint in force for entry h (of kind, in namespace ns) whose waypoint key, index idx, says
 * written (NULL: not set): its own, else its namespace's; "none" opts out. The waypoint must exist
 * and serve ns (its own namespace or allowed_namespaces): else the error names h's line.
 */
static const struct reg_waypoint *
attach_waypoint(struct builder *b, const struct reg_head *h, int idx, enum reg_kind kind,
    const char *ns, const char *written)
{
	const struct reg_namespace *nse;
	const struct reg_waypoint *wp;

	if (written == NULL) {
		/* The namespace's waypoint was checked against ns once, at its own line. */
		nse = ns != NULL ? registry_find_entry(b->r, REG_NAMESPACE, ns) : NULL;
		return nse != NULL ? nse->waypoint_p : NULL;
	}
	if (strcmp(written, REG_WAYPOINT_NONE) == 0)
		return NULL;
	wp = registry_find_entry(b->r, REG_WAYPOINT, written);
	if (wp == NULL) {
		ERR(h, idx, "%s \"%s\": waypoint \"%s\" is not defined", registry_kind_name(kind),
		    h->name, written);
		return NULL;
	}
	if (ns != NULL && wp->namespace != NULL && !reg_waypoint_allows(wp, ns)) {
		ERR(h, idx, "%s \"%s\" (namespace %s): waypoint \"%s\" (namespace %s, %s:%d) does "
		    "not serve namespace %s; list it in the waypoint's allowed_namespaces",
		    registry_kind_name(kind), h->name, ns, written, wp->namespace, wp->h.file,
		    wp->h.line, ns);
		return NULL;
	}
	return wp;
}

/* Namespaces' waypoints, before the entries that take theirs. */
static void
check_namespaces(struct builder *b)
{
	struct registry *r = b->r;

	for (size_t i = 0; i < r->n[REG_NAMESPACE]; i++) {
		struct reg_namespace *n = REG_NAMESPACES(r)[i];

		n->waypoint_p = n->waypoint == NULL ? NULL :
		    attach_waypoint(b, &n->h, REG_NS_WAYPOINT, REG_NAMESPACE, n->h.name, n->waypoint);
	}
}

static void
check_workloads(struct builder *b)
{
	struct registry *r = b->r;

	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		struct reg_workload *w = REG_WORKLOADS(r)[i];

		w->node_p = registry_find_entry(r, REG_NODE, w->node);
		if (w->node != NULL && w->node_p == NULL)
			ERR(&w->h, REG_WL_NODE, "workload \"%s\": node \"%s\" is not defined", w->h.name,
			    w->node);
		w->waypoint_p = attach_waypoint(b, &w->h, REG_WL_WAYPOINT, REG_WORKLOAD, w->namespace,
		    w->waypoint);
	}
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++) {
		struct reg_waypoint *wp = REG_WAYPOINTS(r)[i];

		for (size_t j = 0; j < wp->nodes.n; j++)
			if (registry_find_entry(r, REG_NODE, wp->nodes.v[j]) == NULL) {
				ERR(&wp->h, REG_WP_NODE, "waypoint \"%s\": node \"%s\" is not defined",
				    wp->h.name, wp->nodes.v[j]);
				break;
			}
	}
}

static void
check_services(struct builder *b)
{
	struct registry *r = b->r;
	size_t nvip = 0;
	struct reg_vip *vips;
	char a[64];

	for (size_t i = 0; i < r->n[REG_SERVICE]; i++)
		nvip += REG_SERVICES(r)[i]->vips.n * REG_SERVICES(r)[i]->ports.n;
	htab_init(&r->by_vip, nvip);
	htab_init(&r->by_hostname, r->n[REG_SERVICE]);
	vips = xcalloc(nvip, sizeof(*vips));
	r->vip_vals = vips;
	nvip = 0;
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		struct reg_service *s = REG_SERVICES(r)[i];
		const struct reg_service *other;

		/* An external service has no waypoint, not even its namespace's (check_external). */
		if (!s->external)
			s->waypoint_p = attach_waypoint(b, &s->h, REG_SV_WAYPOINT, REG_SERVICE,
			    s->namespace, s->waypoint);
		if (s->hostname != NULL &&
		    (other = htab_put(&r->by_hostname, s->hostname, strlen(s->hostname), s)) != NULL)
			ERR(&s->h, REG_SV_HOSTNAME, "service \"%s\": hostname %s is already used by service "
			    "\"%s\" (%s:%d)", s->h.name, s->hostname, other->h.name, other->h.file,
			    other->h.line);
		for (size_t v = 0; v < s->vips.n; v++) {
			const struct reg_addr_owner *o = registry_addr_owner(r, &s->vips.v[v]);

			if (o != NULL) {
				const struct reg_head *oh = o->ent;

				ERR(&s->h, REG_SV_VIP, "service \"%s\": vip %s is the address of %s \"%s\" "
				    "(%s:%d)", s->h.name, ip_str(&s->vips.v[v], a, sizeof(a)),
				    registry_kind_name(o->kind), oh->name, oh->file, oh->line);
				continue;
			}
			for (size_t p = 0; p < s->ports.n; p++) {
				/* Key: the address, then the port in two bytes. */
				unsigned char *key = r->vip_keys + nvip * VIP_KEY_LEN;
				struct reg_vip *rv = &vips[nvip], *prev;

				memcpy(key, &s->vips.v[v], sizeof(struct ip_addr));
				key[sizeof(struct ip_addr)] = (unsigned char)(s->ports.v[p].port >> 8);
				key[sizeof(struct ip_addr) + 1] = (unsigned char)s->ports.v[p].port;
				rv->service = s;
				rv->port = &s->ports.v[p];
				prev = htab_put(&r->by_vip, key, VIP_KEY_LEN, rv);
				if (prev == NULL) {
					nvip++;
					continue;
				}
				ERR(&s->h, REG_SV_VIP, "service \"%s\": %s port %u is already used by "
				    "service \"%s\" (%s:%d)", s->h.name,
				    ip_str(&s->vips.v[v], a, sizeof(a)), s->ports.v[p].port,
				    prev->service->h.name, prev->service->h.file,
				    prev->service->h.line);
			}
		}
	}
}

static void
pattern_list_ok(struct builder *b, const struct reg_policy *p, int idx, const struct str_list *l,
    const char *what)
{
	for (size_t i = 0; i < l->n; i++) {
		const char *s = l->v[i];

		if (idx == REG_PO_PRINCIPALS || idx == REG_PO_NOT_PRINCIPALS) {
			if (strncmp(s, "spiffe://", 9) == 0) {
				ERR(&p->h, idx, "policy \"%s\": %s are written without 'spiffe://' "
				    "(TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT): '%s'", p->h.name, what, s);
				return;
			}
		} else if (idx == REG_PO_PATHS || idx == REG_PO_NOT_PATHS) {
			if (s[0] != '/' && s[0] != '*') {
				ERR(&p->h, idx, "policy \"%s\": %s must start with '/' or '*': '%s'",
				    p->h.name, what, s);
				return;
			}
		} else if (idx == REG_PO_METHODS || idx == REG_PO_NOT_METHODS) {
			for (const char *c = s; *c != '\0'; c++)
				if (!((*c >= 'A' && *c <= 'Z') || *c == '*')) {
					ERR(&p->h, idx, "policy \"%s\": %s are upper-case HTTP methods: "
					    "'%s'", p->h.name, what, s);
					return;
				}
		}
	}
}

static void
check_policies(struct builder *b)
{
	struct registry *r = b->r;

	htab_init(&r->by_ns_policy, r->n[REG_POLICY]);
	for (size_t i = 0; i < r->n[REG_POLICY]; i++) {
		struct reg_policy *p = REG_POLICIES(r)[i];
		const struct { int idx; const struct str_list *l; const char *what; } pl[] = {
			{ REG_PO_PRINCIPALS, &p->principals, "principals" },
			{ REG_PO_NOT_PRINCIPALS, &p->not_principals, "principals" },
			{ REG_PO_PATHS, &p->paths, "paths" }, { REG_PO_NOT_PATHS, &p->not_paths, "paths" },
			{ REG_PO_METHODS, &p->methods, "methods" },
			{ REG_PO_NOT_METHODS, &p->not_methods, "methods" },
		};
		struct ns_policies *np;

		for (size_t j = 0; j < ARRAY_SIZE(pl); j++)
			pattern_list_ok(b, p, pl[j].idx, pl[j].l, pl[j].what);
		p->has_l7 = p->methods.n || p->not_methods.n || p->paths.n || p->not_paths.n ||
		    p->hosts.n || p->not_hosts.n || p->when_headers.n;
		if (p->namespace == NULL)
			continue;
		np = htab_get_str(&r->by_ns_policy, p->namespace);
		if (np == NULL) {
			size_t cnt = 0;

			for (size_t j = i; j < r->n[REG_POLICY]; j++)
				if (REG_POLICIES(r)[j]->namespace &&
				    strcmp(REG_POLICIES(r)[j]->namespace, p->namespace) == 0)
					cnt++;
			np = xcalloc(1, sizeof(*np) + cnt * sizeof(np->v[0]));
			htab_put(&r->by_ns_policy, p->namespace, strlen(p->namespace), np);
		}
		np->v[np->n++] = p;
	}
}

/*
 * True if two entries are in different namespaces. namespace is required, but an entry that lacks
 * it is still in the registry (reported as missing), so either side may be NULL: that is no
 * mismatch to report.
 */
static bool
ns_differ(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) != 0;
}

/*
 * Resolves backend j of rt as written: service/NAME, workload/NAME, or a bare NAME, which is the
 * service or the workload of that name in the route's namespace. A bare NAME that is both is an
 * error: taking the service would spread over all its endpoints requests meant for one workload,
 * silently.
 */
static void
resolve_backend(struct builder *b, struct reg_route *rt, size_t j)
{
	struct registry *r = b->r;
	const char *nm = rt->h.name, *written = rt->backends.v[j].name, *bn = written;
	const char *slash = strchr(written, '/'), *ns;
	struct reg_backend *be = &rt->backends_p[j];
	const struct reg_service *sv;
	const struct reg_workload *wl;
	int kind = -1;

	if (slash != NULL) {
		/* The parser let only the prefixes of backend_kinds through. */
		kind = strncmp(written, "service/", 8) == 0 ? REG_SERVICE : REG_WORKLOAD;
		bn = slash + 1;
	}
	sv = kind != REG_WORKLOAD ? registry_find_entry(r, REG_SERVICE, bn) : NULL;
	wl = kind != REG_SERVICE ? registry_find_entry(r, REG_WORKLOAD, bn) : NULL;
	if (sv != NULL && wl != NULL) {
		bool sv_here = !ns_differ(sv->namespace, rt->namespace);
		bool wl_here = !ns_differ(wl->namespace, rt->namespace);

		if (sv_here && wl_here) {
			ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backend \"%s\" is both service "
			    "\"%s\" (%s:%d) and workload \"%s\" (%s:%d); write service/%s or "
			    "workload/%s", nm, written, bn, sv->h.file, sv->h.line, bn, wl->h.file,
			    wl->h.line, bn, bn);
			return;
		}
		/* A backend outside the route's namespace is refused: the other one is meant. */
		if (wl_here)
			sv = NULL;
		else
			wl = NULL;
	}
	if (sv == NULL && wl == NULL) {
		if (kind < 0)
			ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backend \"%s\" is neither a "
			    "service nor a workload", nm, bn);
		else
			ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backend \"%s\": %s \"%s\" is not "
			    "defined", nm, written, registry_kind_name(kind), bn);
		return;
	}
	ns = sv != NULL ? sv->namespace : wl->namespace;
	if (ns_differ(ns, rt->namespace)) {
		ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backend \"%s\" is in namespace %s, the "
		    "route in %s", nm, written, ns, rt->namespace);
		return;
	}
	/* "echo" and "service/echo" differ as text; listed together they are one backend twice. */
	for (size_t k = 0; k < j; k++) {
		const struct reg_backend *o = &rt->backends_p[k];

		if ((sv != NULL && o->service == sv) || (wl != NULL && o->workload == wl)) {
			ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backends \"%s\" and \"%s\" are "
			    "the same %s", nm, rt->backends.v[k].name, written,
			    sv != NULL ? "service" : "workload");
			return;
		}
	}
	be->service = sv;
	be->workload = wl;
}

static void
check_routes(struct builder *b)
{
	struct registry *r = b->r;

	for (size_t i = 0; i < r->n[REG_ROUTE]; i++) {
		struct reg_route *rt = REG_ROUTES(r)[i];
		const char *nm = rt->h.name;
		int paths = !!rt->path_exact + !!rt->path_prefix + !!rt->path_regex;
		uint64_t total = 0;

		rt->service_p = registry_find_entry(r, REG_SERVICE, rt->service);
		if (rt->service != NULL && rt->service_p == NULL)
			ERR(&rt->h, REG_RT_SERVICE, "route \"%s\": service \"%s\" is not defined", nm,
			    rt->service);
		else if (rt->service_p != NULL && ns_differ(rt->service_p->namespace, rt->namespace))
			ERR(&rt->h, REG_RT_SERVICE, "route \"%s\": service \"%s\" is in namespace %s, "
			    "the route in %s", nm, rt->service, rt->service_p->namespace, rt->namespace);
		if (paths > 1) {
			/* Point at the later of the conflicting keys. */
			int l = abs(rt->h.keyline[REG_RT_PATH_EXACT]);

			if (abs(rt->h.keyline[REG_RT_PATH_PREFIX]) > l)
				l = abs(rt->h.keyline[REG_RT_PATH_PREFIX]);
			if (abs(rt->h.keyline[REG_RT_PATH_REGEX]) > l)
				l = abs(rt->h.keyline[REG_RT_PATH_REGEX]);
			diag_add(b->d, rt->h.file, l, "route \"%s\": match.path_exact, "
			    "match.path_prefix and match.path_regex exclude each other", nm);
		}
		if (rt->path_exact && rt->path_exact[0] != '/')
			ERR(&rt->h, REG_RT_PATH_EXACT, "route \"%s\": match.path_exact must start with '/'", nm);
		if (rt->path_prefix && rt->path_prefix[0] != '/')
			ERR(&rt->h, REG_RT_PATH_PREFIX, "route \"%s\": match.path_prefix must start with '/'",
			    nm);
		if (rt->path_regex && !regex_size_ok(rt->path_regex)) {
			ERR(&rt->h, REG_RT_PATH_REGEX, "route \"%s\": match.path_regex is too complex "
			    "(nested or large repetitions)", nm);
		} else if (rt->path_regex) {
			int rc = regcomp(&rt->path_re, rt->path_regex, REG_EXTENDED | REG_NOSUB);

			if (rc != 0) {
				char msg[128];

				regerror(rc, &rt->path_re, msg, sizeof(msg));
				ERR(&rt->h, REG_RT_PATH_REGEX, "route \"%s\": match.path_regex: %s", nm, msg);
			} else {
				rt->has_path_re = true;
			}
		}
		if (rt->rewrite_path_prefix && rt->path_prefix == NULL)
			ERR(&rt->h, REG_RT_REWRITE, "route \"%s\": rewrite.path_prefix needs "
			    "match.path_prefix", nm);
		if (rt->rewrite_path_prefix && rt->rewrite_path_prefix[0] != '/')
			ERR(&rt->h, REG_RT_REWRITE, "route \"%s\": rewrite.path_prefix must start with '/'",
			    nm);
		if (rt->redirect_path && rt->redirect_path[0] != '/')
			ERR(&rt->h, REG_RT_RD_PATH, "route \"%s\": redirect.path must start with '/'", nm);
		{
			bool redirect = has(&rt->h, REG_RT_RD_SCHEME) || rt->redirect_host ||
			    rt->redirect_port || rt->redirect_path || rt->redirect_status;

			rt->redirect = redirect;

			if (rt->redirect_status && rt->redirect_status != 301 &&
			    rt->redirect_status != 302 && rt->redirect_status != 303 &&
			    rt->redirect_status != 307 && rt->redirect_status != 308)
				ERR(&rt->h, REG_RT_RD_STATUS, "route \"%s\": redirect.status must be 301, "
				    "302, 303, 307 or 308", nm);
			if (redirect && rt->backends.n > 0)
				ERR(&rt->h, REG_RT_BACKENDS, "route \"%s\": backends and redirect exclude "
				    "each other", nm);
			if (!redirect && rt->backends.n == 0 && rt->h.keyline[REG_RT_BACKENDS] == 0 &&
			    rt->h.keyline[REG_RT_ABORT] == 0)
				diag_add(b->d, rt->h.file, rt->h.line, "route \"%s\": needs backends, "
				    "a redirect or fault.abort", nm);
		}
		rt->backends_p = xcalloc(rt->backends.n, sizeof(*rt->backends_p));
		for (size_t j = 0; j < rt->backends.n; j++) {
			rt->backends_p[j].weight = rt->backends.v[j].weight;
			total += rt->backends_p[j].weight;
			resolve_backend(b, rt, j);
		}
		(void)total; /* all weights 0 is valid: the waypoint answers 500, as Istio does */
		if (rt->per_try_timeout && rt->timeout && rt->per_try_timeout > rt->timeout)
			ERR(&rt->h, REG_RT_PER_TRY, "route \"%s\": per_try_timeout is longer than timeout",
			    nm);
		if (has(&rt->h, REG_RT_RETRY_ON) && rt->retries == 0 && rt->h.keyline[REG_RT_RETRIES] >= 0)
			ERR(&rt->h, REG_RT_RETRY_ON, "route \"%s\": retry_on without retries", nm);
		if (has(&rt->h, REG_RT_DELAY_PCT) && rt->h.keyline[REG_RT_DELAY] == 0)
			ERR(&rt->h, REG_RT_DELAY_PCT, "route \"%s\": fault.delay_percent without "
			    "fault.delay", nm);
		if (has(&rt->h, REG_RT_ABORT_PCT) && rt->h.keyline[REG_RT_ABORT] == 0)
			ERR(&rt->h, REG_RT_ABORT_PCT, "route \"%s\": fault.abort_percent without "
			    "fault.abort", nm);
		/* A fault given without its percentage applies to every request. */
		if (has(&rt->h, REG_RT_DELAY) && rt->h.keyline[REG_RT_DELAY_PCT] == 0)
			rt->fault_delay_percent = 100;
		if (has(&rt->h, REG_RT_ABORT) && rt->h.keyline[REG_RT_ABORT_PCT] == 0)
			rt->fault_abort_percent = 100;
		if (rt->mirror != NULL) {
			rt->mirror_p = registry_find_entry(r, REG_SERVICE, rt->mirror);
			if (rt->mirror_p == NULL)
				ERR(&rt->h, REG_RT_MIRROR, "route \"%s\": mirror service \"%s\" is not "
				    "defined", nm, rt->mirror);
			else if (ns_differ(rt->mirror_p->namespace, rt->namespace))
				ERR(&rt->h, REG_RT_MIRROR, "route \"%s\": mirror service \"%s\" is in "
				    "namespace %s, the route in %s", nm, rt->mirror,
				    rt->mirror_p->namespace, rt->namespace);
			if (rt->h.keyline[REG_RT_MIRROR_PCT] == 0)
				rt->mirror_percent = 100;
		} else if (has(&rt->h, REG_RT_MIRROR_PCT) && rt->h.keyline[REG_RT_MIRROR] == 0) {
			ERR(&rt->h, REG_RT_MIRROR_PCT, "route \"%s\": mirror_percent without mirror", nm);
		}
	}
}

static uint64_t
fnv1a(const char *a, const char *b)
{
	uint64_t h = 1469598103934665603ull;

	for (const char *p = a; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ '/') * 1099511628211ull;
	for (const char *p = b; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return h;
}

static int
by_ns_name(const void *x, const void *y)
{
	const struct reg_service *a = *(const struct reg_service *const *)x;
	const struct reg_service *b = *(const struct reg_service *const *)y;
	int c = strcmp(a->namespace, b->namespace);

	return c != 0 ? c : strcmp(a->h.name, b->h.name);
}

/* The auto VIP at offset off of its range (registry.h): IPv4 240.240.0.1-240.240.255.254, IPv6
 * 2001:2::/48 with off in the last 64 bits (never 0). */
static void
auto_vip(struct ip_addr *ip, int family, uint64_t off)
{
	memset(ip, 0, sizeof(*ip));
	ip->family = (uint8_t)family;
	if (family == AF_INET) {
		off = 1 + off % 65534;
		ip->a[0] = 240;
		ip->a[1] = 240;
		ip->a[2] = (uint8_t)(off >> 8);
		ip->a[3] = (uint8_t)off;
		return;
	}
	if (off == 0)
		off = 1;
	ip->a[0] = 0x20;
	ip->a[1] = 0x01;
	ip->a[3] = 0x02;
	for (int i = 0; i < 8; i++)
		ip->a[8 + i] = (uint8_t)(off >> (56 - 8 * i));
}

/* Services without vip get theirs (registry.h, REG_AUTO_VIP4/6), before addresses are indexed. */
static void
assign_auto_vips(struct builder *b)
{
	struct registry *r = b->r;
	struct reg_service **v;
	struct htab used;
	size_t total = 0, n = 0;

	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		const struct reg_service *s = REG_SERVICES(r)[i];

		total += s->vips.n > 0 ? s->vips.n : 2;
		if (s->vips.n == 0 && s->namespace != NULL && s->ports.n > 0)
			n++;
	}
	if (n == 0)
		return;
	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++)
		total += REG_WORKLOADS(r)[i]->addresses.n;
	total += r->n[REG_NODE];
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++)
		total += REG_WAYPOINTS(r)[i]->addresses.n;
	htab_init(&used, total);
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		const struct reg_service *s = REG_SERVICES(r)[i];

		for (size_t j = 0; j < s->vips.n; j++)
			htab_put(&used, &s->vips.v[j], sizeof(struct ip_addr), (void *)s);
	}
	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		const struct reg_workload *w = REG_WORKLOADS(r)[i];

		for (size_t j = 0; j < w->addresses.n; j++)
			htab_put(&used, &w->addresses.v[j], sizeof(struct ip_addr), (void *)w);
	}
	for (size_t i = 0; i < r->n[REG_NODE]; i++)
		htab_put(&used, &REG_NODES(r)[i]->address, sizeof(struct ip_addr), REG_NODES(r)[i]);
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++)
		for (size_t j = 0; j < REG_WAYPOINTS(r)[i]->addresses.n; j++)
			htab_put(&used, &REG_WAYPOINTS(r)[i]->addresses.v[j], sizeof(struct ip_addr),
			    REG_WAYPOINTS(r)[i]);
	v = xcalloc(n, sizeof(*v));
	n = 0;
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		struct reg_service *s = REG_SERVICES(r)[i];

		if (s->vips.n == 0 && s->namespace != NULL && s->ports.n > 0)
			v[n++] = s;
	}
	qsort(v, n, sizeof(*v), by_ns_name);
	for (size_t i = 0; i < n; i++) {
		struct reg_service *s = v[i];
		uint64_t h = fnv1a(s->namespace, s->h.name);

		free(s->vips.v);
		s->vips.v = xcalloc(2, sizeof(struct ip_addr));
		s->vips.n = 2;
		s->vip_auto = true;
		for (int f = 0; f < 2; f++) {
			struct ip_addr *ip = &s->vips.v[f];
			/* IPv4: 65534 addresses; a full range leaves the last one clashing, and the
			 * VIP index reports it. */
			for (uint64_t k = 0; k < 65534; k++) {
				auto_vip(ip, f ? AF_INET6 : AF_INET, f ? h + k : (h % 65534) + k);
				if (htab_get(&used, ip, sizeof(*ip)) == NULL)
					break;
			}
			htab_put(&used, ip, sizeof(*ip), s);
		}
	}
	free(v);
	htab_free(&used);
}

void
registry_check(struct builder *b)
{
	check_required(b);
	assign_auto_vips(b);
	index_addresses(b);
	check_namespaces(b);
	check_workloads(b);
	check_services(b);
	resolve_endpoints(b);
	check_policies(b);
	check_routes(b);
}
