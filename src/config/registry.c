/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry loader. Three passes: parse every file into entries (syntax and per-key values), then
 * resolve names and check the whole (references, uniqueness, per-kind rules), then build the
 * indexes. Any error fails the load: a registry is used whole or not at all.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/ini.h"
#include "config/registry.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"

static const char *const kind_names[REG_NKINDS] = {
	"node", "workload", "service", "waypoint", "policy", "route",
};
static const size_t kind_size[REG_NKINDS] = {
	sizeof(struct reg_node), sizeof(struct reg_workload), sizeof(struct reg_service),
	sizeof(struct reg_waypoint), sizeof(struct reg_policy), sizeof(struct reg_route),
};

static const char *const protocols[] = { "hbone", "tcp", NULL };
static const char *const mtls_modes[] = { "strict", "permissive", NULL };
static const char *const actions[] = { "allow", "deny", NULL };
static const char *const http_methods[] = {
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", NULL,
};
static const char *const retry_ons[] = {
	"5xx", "gateway-error", "connect-failure", "reset", "refused-stream", NULL,
};
static const char *const schemes[] = { "http", "https", NULL };
/* The kinds a route backend may name; the order is REG_SERVICE's, then REG_WORKLOAD's. */
static const char *const backend_kinds[] = { "service", "workload", NULL };

#define K(kind, key, type, st, field, dflt, req) \
	{ kind, key, type, offsetof(st, field), dflt, 0, 0, NULL, req }
#define KE(kind, key, st, field, dflt, enums) \
	{ kind, key, KW_ENUM, offsetof(st, field), dflt, 0, 0, enums, false }
#define KU(kind, key, st, field, min, max) \
	{ kind, key, KW_UINT, offsetof(st, field), NULL, min, max, NULL, false }

enum { N_ADDRESS };
static const struct kw node_kw[] = {
	[N_ADDRESS] = K("node", "address", KW_IP, struct reg_node, address, NULL, true),
};

enum { WP_NAMESPACE, WP_SA, WP_ADDRESS, WP_NODE };
static const struct kw waypoint_kw[] = {
	[WP_NAMESPACE] = K("waypoint", "namespace", KW_NAME, struct reg_waypoint, namespace, NULL, true),
	[WP_SA] = K("waypoint", "service_account", KW_NAME, struct reg_waypoint, service_account, NULL, false),
	[WP_ADDRESS] = K("waypoint", "address", KW_IP, struct reg_waypoint, address, NULL, true),
	[WP_NODE] = K("waypoint", "node", KW_HOSTNAME, struct reg_waypoint, node, NULL, false),
};

enum { WL_NAMESPACE, WL_SA, WL_NODE, WL_ADDRESSES, WL_LABELS, WL_PROTOCOL, WL_WAYPOINT, WL_MTLS };
static const struct kw workload_kw[] = {
	[WL_NAMESPACE] = K("workload", "namespace", KW_NAME, struct reg_workload, namespace, NULL, true),
	[WL_SA] = K("workload", "service_account", KW_NAME, struct reg_workload, service_account, "default", false),
	[WL_NODE] = K("workload", "node", KW_HOSTNAME, struct reg_workload, node, NULL, true),
	[WL_ADDRESSES] = K("workload", "addresses", KW_IP_LIST, struct reg_workload, addresses, NULL, true),
	[WL_LABELS] = K("workload", "labels", KW_LABELS, struct reg_workload, labels, NULL, false),
	[WL_PROTOCOL] = KE("workload", "protocol", struct reg_workload, protocol, "hbone", protocols),
	[WL_WAYPOINT] = K("workload", "waypoint", KW_HOSTNAME, struct reg_workload, waypoint, NULL, false),
	[WL_MTLS] = KE("workload", "mtls_mode", struct reg_workload, mtls_mode, "strict", mtls_modes),
};

enum { SV_NAMESPACE, SV_HOSTNAME, SV_VIP, SV_PORTS, SV_SELECTOR, SV_WAYPOINT };
static const struct kw service_kw[] = {
	[SV_NAMESPACE] = K("service", "namespace", KW_NAME, struct reg_service, namespace, NULL, true),
	[SV_HOSTNAME] = K("service", "hostname", KW_HOSTNAME, struct reg_service, hostname, NULL, false),
	[SV_VIP] = K("service", "vip", KW_IP_LIST, struct reg_service, vips, NULL, false),
	[SV_PORTS] = K("service", "ports", KW_PORTMAP_LIST, struct reg_service, ports, NULL, true),
	[SV_SELECTOR] = K("service", "selector", KW_LABELS, struct reg_service, selector, NULL, true),
	[SV_WAYPOINT] = K("service", "waypoint", KW_HOSTNAME, struct reg_service, waypoint, NULL, false),
};

enum {
	PO_NAMESPACE, PO_SELECTOR, PO_ACTION, PO_PRINCIPALS, PO_NOT_PRINCIPALS, PO_NAMESPACES,
	PO_NOT_NAMESPACES, PO_IP_BLOCKS, PO_NOT_IP_BLOCKS, PO_PORTS, PO_NOT_PORTS, PO_METHODS,
	PO_NOT_METHODS, PO_PATHS, PO_NOT_PATHS, PO_HOSTS, PO_NOT_HOSTS, PO_WHEN_HEADERS,
};
#define PK(idx, key, type, field) [idx] = K("policy", key, type, struct reg_policy, field, NULL, false)
static const struct kw policy_kw[] = {
	[PO_NAMESPACE] = K("policy", "namespace", KW_NAME, struct reg_policy, namespace, NULL, true),
	PK(PO_SELECTOR, "selector", KW_LABELS, selector),
	[PO_ACTION] = KE("policy", "action", struct reg_policy, action, "allow", actions),
	PK(PO_PRINCIPALS, "from.principals", KW_PATTERN_LIST, principals),
	PK(PO_NOT_PRINCIPALS, "from.not_principals", KW_PATTERN_LIST, not_principals),
	PK(PO_NAMESPACES, "from.namespaces", KW_PATTERN_LIST, namespaces),
	PK(PO_NOT_NAMESPACES, "from.not_namespaces", KW_PATTERN_LIST, not_namespaces),
	PK(PO_IP_BLOCKS, "from.ip_blocks", KW_PREFIX_LIST, ip_blocks),
	PK(PO_NOT_IP_BLOCKS, "from.not_ip_blocks", KW_PREFIX_LIST, not_ip_blocks),
	PK(PO_PORTS, "to.ports", KW_PORT_LIST, ports),
	PK(PO_NOT_PORTS, "to.not_ports", KW_PORT_LIST, not_ports),
	PK(PO_METHODS, "to.methods", KW_PATTERN_LIST, methods),
	PK(PO_NOT_METHODS, "to.not_methods", KW_PATTERN_LIST, not_methods),
	PK(PO_PATHS, "to.paths", KW_PATTERN_LIST, paths),
	PK(PO_NOT_PATHS, "to.not_paths", KW_PATTERN_LIST, not_paths),
	PK(PO_HOSTS, "to.hosts", KW_PATTERN_LIST, hosts),
	PK(PO_NOT_HOSTS, "to.not_hosts", KW_PATTERN_LIST, not_hosts),
	PK(PO_WHEN_HEADERS, "when.headers", KW_HEADER_LIST, when_headers),
};

enum {
	RT_NAMESPACE, RT_SERVICE, RT_PATH_EXACT, RT_PATH_PREFIX, RT_PATH_REGEX, RT_HEADERS,
	RT_METHOD, RT_QUERY, RT_BACKENDS, RT_TIMEOUT, RT_PER_TRY, RT_RETRIES, RT_RETRY_ON,
	RT_BACKOFF, RT_DELAY, RT_DELAY_PCT, RT_ABORT, RT_ABORT_PCT, RT_MIRROR, RT_MIRROR_PCT,
	RT_REQ_SET, RT_REQ_ADD, RT_REQ_REMOVE, RT_RESP_SET, RT_RESP_ADD, RT_RESP_REMOVE,
	RT_REWRITE, RT_RD_SCHEME, RT_RD_HOST, RT_RD_PORT, RT_RD_PATH, RT_RD_STATUS,
};
#define RK(idx, key, type, field) [idx] = K("route", key, type, struct reg_route, field, NULL, false)
#define RU(idx, key, field, min, max) [idx] = KU("route", key, struct reg_route, field, min, max)
static const struct kw route_kw[] = {
	[RT_NAMESPACE] = K("route", "namespace", KW_NAME, struct reg_route, namespace, NULL, true),
	[RT_SERVICE] = K("route", "service", KW_HOSTNAME, struct reg_route, service, NULL, true),
	RK(RT_PATH_EXACT, "match.path_exact", KW_STRING, path_exact),
	RK(RT_PATH_PREFIX, "match.path_prefix", KW_STRING, path_prefix),
	RK(RT_PATH_REGEX, "match.path_regex", KW_STRING, path_regex),
	RK(RT_HEADERS, "match.headers", KW_HEADER_LIST, match_headers),
	[RT_METHOD] = { "route", "match.method", KW_ENUM_LIST, offsetof(struct reg_route, match_methods),
		NULL, 0, 0, http_methods, false },
	RK(RT_QUERY, "match.query", KW_LABELS, match_query),
	[RT_BACKENDS] = { "route", "backends", KW_WEIGHTED_LIST, offsetof(struct reg_route, backends),
		NULL, 0, 1000000, backend_kinds, false },
	RK(RT_TIMEOUT, "timeout", KW_DURATION, timeout),
	RK(RT_PER_TRY, "per_try_timeout", KW_DURATION, per_try_timeout),
	RU(RT_RETRIES, "retries", retries, 0, 10),
	[RT_RETRY_ON] = { "route", "retry_on", KW_ENUM_LIST, offsetof(struct reg_route, retry_on),
		NULL, 0, 0, retry_ons, false },
	RK(RT_BACKOFF, "retry_backoff", KW_DURATION, retry_backoff),
	RK(RT_DELAY, "fault.delay", KW_DURATION, fault_delay),
	RU(RT_DELAY_PCT, "fault.delay_percent", fault_delay_percent, 0, 100),
	RU(RT_ABORT, "fault.abort", fault_abort, 200, 599),
	RU(RT_ABORT_PCT, "fault.abort_percent", fault_abort_percent, 0, 100),
	RK(RT_MIRROR, "mirror", KW_HOSTNAME, mirror),
	RU(RT_MIRROR_PCT, "mirror_percent", mirror_percent, 0, 100),
	RK(RT_REQ_SET, "request_headers.set", KW_HEADER_LIST, request_set),
	RK(RT_REQ_ADD, "request_headers.add", KW_HEADER_LIST, request_add),
	RK(RT_REQ_REMOVE, "request_headers.remove", KW_HEADER_NAME_LIST, request_remove),
	RK(RT_RESP_SET, "response_headers.set", KW_HEADER_LIST, response_set),
	RK(RT_RESP_ADD, "response_headers.add", KW_HEADER_LIST, response_add),
	RK(RT_RESP_REMOVE, "response_headers.remove", KW_HEADER_NAME_LIST, response_remove),
	RK(RT_REWRITE, "rewrite.path_prefix", KW_STRING, rewrite_path_prefix),
	[RT_RD_SCHEME] = KE("route", "redirect.scheme", struct reg_route, redirect_scheme, NULL, schemes),
	RK(RT_RD_HOST, "redirect.host", KW_HOSTNAME, redirect_host),
	RU(RT_RD_PORT, "redirect.port", redirect_port, 1, 65535),
	RK(RT_RD_PATH, "redirect.path", KW_STRING, redirect_path),
	RU(RT_RD_STATUS, "redirect.status", redirect_status, 301, 308),
};

static const struct {
	const struct kw *kw;
	size_t n;
} tables[REG_NKINDS] = {
	{ node_kw, ARRAY_SIZE(node_kw) }, { workload_kw, ARRAY_SIZE(workload_kw) },
	{ service_kw, ARRAY_SIZE(service_kw) }, { waypoint_kw, ARRAY_SIZE(waypoint_kw) },
	{ policy_kw, ARRAY_SIZE(policy_kw) }, { route_kw, ARRAY_SIZE(route_kw) },
};

const char *
registry_kind_name(enum reg_kind k)
{
	return kind_names[k];
}

const struct kw *
registry_keywords(enum reg_kind k, size_t *n)
{
	*n = tables[k].n;
	return tables[k].kw;
}

/* A VIP index key: the address as struct ip_addr, then the port, big-endian. */
#define VIP_KEY_LEN (sizeof(struct ip_addr) + 2)

/* The policies of one namespace, the value type of by_ns_policy. */
struct ns_policies {
	size_t n;
	const struct reg_policy *v[];
};

/* Parse state across all files of one load. */
struct builder {
	struct registry *r;
	struct diag *d;
	size_t cap[REG_NKINDS];
	const char *file;  /* current file (interned) */
	int kind;          /* current section's kind; -1 none/ignored */
	bool in_section;   /* a header, valid or not, has been seen in this file */
	struct reg_head *cur;
	size_t total;
	size_t diag_before; /* messages already in d when the load started */
};

/* Keyline of key idx of entry h, or the header line when the key was not set. */
static int
kline(const struct reg_head *h, int idx)
{
	return h->keyline[idx] != 0 ? abs(h->keyline[idx]) : h->line;
}

/* True if key idx was set to a valid value (a negative keyline marks an invalid one). */
static bool
has(const struct reg_head *h, int idx)
{
	return h->keyline[idx] > 0;
}

static void
ent_free(enum reg_kind k, void *e)
{
	struct reg_head *h = e;

	if (e == NULL)
		return;
	for (size_t i = 0; i < tables[k].n; i++)
		kw_free(&tables[k].kw[i], e);
	if (k == REG_SERVICE)
		free(((struct reg_service *)e)->endpoints);
	if (k == REG_ROUTE) {
		struct reg_route *rt = e;

		free(rt->backends_p);
		if (rt->has_path_re)
			regfree(&rt->path_re);
	}
	free(h->keyline);
	free(h->name);
	free(e);
}

static void
registry_free(struct registry *r)
{
	for (int k = 0; k < REG_NKINDS; k++) {
		for (size_t i = 0; i < r->n[k]; i++)
			ent_free(k, r->ent[k][i]);
		free(r->ent[k]);
		htab_free(&r->by_name[k]);
	}
	htab_free(&r->by_addr);
	htab_free(&r->by_vip);
	htab_free(&r->by_hostname);
	if (r->by_ns_policy.e != NULL) {
		for (size_t i = 0; i < r->by_ns_policy.cap; i++)
			if (r->by_ns_policy.e[i].key != NULL)
				free(r->by_ns_policy.e[i].val);
		htab_free(&r->by_ns_policy);
	}
	free(r->addr_owners);
	free(r->vip_keys);
	free(r->vip_vals);
	for (size_t i = 0; i < r->n_files; i++)
		free(r->files[i]);
	free(r->files);
	free(r);
}

struct registry *
registry_ref(struct registry *r)
{
	if (r != NULL)
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void
registry_unref(struct registry *r)
{
	if (r != NULL && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
		registry_free(r);
}

/* Splits `kind "name"`; returns the kind or -1 with a message. */
static int
parse_header(struct builder *b, const char *text, int line, char **name)
{
	const char *sp = strpbrk(text, " \t");
	size_t kl = sp ? (size_t)(sp - text) : strlen(text);
	const char *q;
	int k;

	*name = NULL;
	for (k = 0; k < REG_NKINDS; k++)
		if (strlen(kind_names[k]) == kl && strncmp(text, kind_names[k], kl) == 0)
			break;
	if (k == REG_NKINDS) {
		diag_add(b->d, b->file, line, "unknown section kind '%.*s' (expected node, workload, "
		    "service, waypoint, policy or route)", (int)kl, text);
		return -1;
	}
	q = sp ? sp + strspn(sp, " \t") : NULL;
	if (q == NULL || *q != '"') {
		diag_add(b->d, b->file, line, "section [%s] needs a name: [%s \"NAME\"]",
		    kind_names[k], kind_names[k]);
		return -1;
	}
	q++;
	sp = strchr(q, '"');
	if (sp == NULL || sp[1] != '\0') {
		diag_add(b->d, b->file, line, "section name must be one double-quoted word: "
		    "[%s \"NAME\"]", kind_names[k]);
		return -1;
	}
	*name = xstrndup(q, (size_t)(sp - q));
	if (!kw_is_hostname(*name)) {
		diag_add(b->d, b->file, line, "%s name '%s' is not valid (lower-case letters, digits, "
		    "'-' and '.', at most 253)", kind_names[k], *name);
		free(*name);
		*name = NULL;
		return -1;
	}
	return k;
}

static void
on_section(void *user, const char *text, int line)
{
	struct builder *b = user;
	struct registry *r = b->r;
	struct reg_head *h, *prev;
	char *name;
	int k;

	b->cur = NULL;
	b->kind = -1;
	b->in_section = true;
	if (text == NULL)
		return;
	k = parse_header(b, text, line, &name);
	if (k < 0)
		return;
	if (b->total >= REG_MAX_ENTRIES) {
		if (b->total++ == REG_MAX_ENTRIES)
			diag_add(b->d, b->file, line, "registry has more than %d entries",
			    REG_MAX_ENTRIES);
		free(name);
		return;
	}
	b->total++;
	/* Names are checked for duplicates now, against a growing list: cheap with the hash below. */
	if (r->by_name[k].cap == 0)
		htab_init(&r->by_name[k], 1024);
	if (r->by_name[k].n * 2 + 2 > r->by_name[k].cap) {
		struct htab bigger;

		htab_init(&bigger, r->by_name[k].cap);
		for (size_t i = 0; i < r->n[k]; i++) {
			struct reg_head *eh = r->ent[k][i];

			htab_put(&bigger, eh->name, strlen(eh->name), eh);
		}
		htab_free(&r->by_name[k]);
		r->by_name[k] = bigger;
	}
	h = xcalloc(1, kind_size[k]);
	h->file = b->file;
	h->line = line;
	h->name = name;
	h->keyline = xcalloc(tables[k].n, sizeof(int));
	prev = htab_put(&r->by_name[k], h->name, strlen(h->name), h);
	if (prev != NULL) {
		diag_add(b->d, b->file, line, "duplicate %s \"%s\" (first defined at %s:%d)",
		    kind_names[k], name, prev->file, prev->line);
		ent_free(k, h);
		return;
	}
	if (r->n[k] == b->cap[k]) {
		b->cap[k] = b->cap[k] ? b->cap[k] * 2 : 64;
		r->ent[k] = xrealloc(r->ent[k], b->cap[k], sizeof(void *));
	}
	r->ent[k][r->n[k]++] = h;
	b->cur = h;
	b->kind = k;
}

static void
on_key(void *user, const char *section, const char *key, const char *value, int line)
{
	struct builder *b = user;
	char why[512];
	int k = b->kind;

	if (!b->in_section) {
		diag_add(b->d, b->file, line, "key '%s' outside of any section", key);
		return;
	}
	if (b->cur == NULL)
		return; /* the header was bad and has been reported */
	for (size_t i = 0; i < tables[k].n; i++) {
		const struct kw *kw = &tables[k].kw[i];

		if (strcmp(kw->key, key) != 0)
			continue;
		if (b->cur->keyline[i] != 0 && !kw_is_list(kw->type)) {
			diag_add(b->d, b->file, line, "%s \"%s\": duplicate key '%s' (first set at "
			    "line %d)", kind_names[k], b->cur->name, key, abs(b->cur->keyline[i]));
			return;
		}
		if (b->cur->keyline[i] < 0)
			return; /* an earlier line of this list was bad and has been reported */
		/* A list key may repeat: its lines add up (lines are at most 198 bytes). */
		if ((b->cur->keyline[i] > 0 ? kw_append(kw, b->cur, value, why, sizeof(why)) :
		    kw_set(kw, b->cur, value, NULL, why, sizeof(why))) != 0) {
			diag_add(b->d, b->file, line, "%s \"%s\": %s: %s", kind_names[k],
			    b->cur->name, key, why);
			/* Given but invalid: not "missing", and not valid for the checks (see has()). */
			b->cur->keyline[i] = -line;
			return;
		}
		if (b->cur->keyline[i] == 0)
			b->cur->keyline[i] = line;
		return;
	}
	diag_add(b->d, b->file, line, "%s \"%s\": unknown key '%s'", kind_names[k], b->cur->name,
	    key);
}

static void
builder_add(struct builder *b, const char *file, const char *data, size_t len)
{
	static const struct ini_callbacks cb = { on_section, on_key };
	struct registry *r = b->r;

	r->files = xrealloc(r->files, r->n_files + 1, sizeof(char *));
	r->files[r->n_files] = xstrdup(file);
	b->file = r->files[r->n_files++];
	b->cur = NULL;
	b->kind = -1;
	b->in_section = false;
	ini_parse_buffer(b->file, data, len, &cb, b, b->d);
}

#define ERR(h, idx, ...) diag_add(b->d, (h)->file, kline((h), (idx)), __VA_ARGS__)

/* Required keys and defaults that depend on the entry's name. */
static void
check_required(struct builder *b)
{
	struct registry *r = b->r;
	char why[256];

	for (int k = 0; k < REG_NKINDS; k++) {
		for (size_t i = 0; i < r->n[k]; i++) {
			struct reg_head *h = r->ent[k][i];

			for (size_t j = 0; j < tables[k].n; j++) {
				const struct kw *kw = &tables[k].kw[j];

				if (h->keyline[j] != 0)
					continue;
				if (kw->required)
					diag_add(b->d, h->file, h->line, "%s \"%s\": missing required "
					    "key '%s'", kind_names[k], h->name, kw->key);
				else if (kw->dflt != NULL &&
				    kw_set(kw, h, kw->dflt, NULL, why, sizeof(why)) != 0)
					fatalx("bad registry default %s.%s", kind_names[k], kw->key);
			}
			if (k == REG_WAYPOINT) {
				struct reg_waypoint *wp = (struct reg_waypoint *)h;

				/* Istio's waypoints run as a service account named after them. */
				if (wp->service_account == NULL && kw_is_name(h->name))
					wp->service_account = xstrdup(h->name);
				else if (wp->service_account == NULL)
					diag_add(b->d, h->file, h->line, "waypoint \"%s\": name is not "
					    "a valid service account; set service_account", h->name);
			}
			if (k == REG_SERVICE) {
				struct reg_service *sv = (struct reg_service *)h;

				if (sv->hostname == NULL && sv->namespace != NULL)
					sv->hostname = xasprintf("%s.%s.svc.cluster.local", h->name,
					    sv->namespace);
			}
		}
	}
}

static const void *
find(const struct registry *r, enum reg_kind k, const char *name)
{
	return name ? htab_get_str(&r->by_name[k], name) : NULL;
}

/* Puts every node, workload and waypoint address in one table: an address has one owner. */
static void
index_addresses(struct builder *b)
{
	struct registry *r = b->r;
	size_t total = r->n[REG_NODE] + r->n[REG_WAYPOINT], nowners = 0, nvips = 0;
	struct reg_addr_owner *owners;
	char a[64];

	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++)
		total += REG_WORKLOADS(r)[i]->addresses.n;
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
				idx = N_ADDRESS;
			} else if (k == REG_WAYPOINT) {
				addrs = &((struct reg_waypoint *)h)->address;
				n = 1;
				idx = WP_ADDRESS;
			} else {
				addrs = ((struct reg_workload *)h)->addresses.v;
				n = ((struct reg_workload *)h)->addresses.n;
				idx = WL_ADDRESSES;
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
				    kind_names[k], h->name, ip_str(&addrs[j], a, sizeof(a)),
				    kind_names[prev->kind], ph->name, ph->file, ph->line);
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

static void
check_workloads(struct builder *b)
{
	struct registry *r = b->r;

	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		struct reg_workload *w = REG_WORKLOADS(r)[i];

		w->node_p = find(r, REG_NODE, w->node);
		if (w->node != NULL && w->node_p == NULL)
			ERR(&w->h, WL_NODE, "workload \"%s\": node \"%s\" is not defined", w->h.name,
			    w->node);
		w->waypoint_p = find(r, REG_WAYPOINT, w->waypoint);
		if (w->waypoint != NULL && w->waypoint_p == NULL)
			ERR(&w->h, WL_WAYPOINT, "workload \"%s\": waypoint \"%s\" is not defined",
			    w->h.name, w->waypoint);
	}
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++) {
		struct reg_waypoint *wp = REG_WAYPOINTS(r)[i];

		wp->node_p = find(r, REG_NODE, wp->node);
		if (wp->node != NULL && wp->node_p == NULL)
			ERR(&wp->h, WP_NODE, "waypoint \"%s\": node \"%s\" is not defined",
			    wp->h.name, wp->node);
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

		s->waypoint_p = find(r, REG_WAYPOINT, s->waypoint);
		if (s->waypoint != NULL && s->waypoint_p == NULL)
			ERR(&s->h, SV_WAYPOINT, "service \"%s\": waypoint \"%s\" is not defined",
			    s->h.name, s->waypoint);
		if (s->hostname != NULL &&
		    (other = htab_put(&r->by_hostname, s->hostname, strlen(s->hostname), s)) != NULL)
			ERR(&s->h, SV_HOSTNAME, "service \"%s\": hostname %s is already used by service "
			    "\"%s\" (%s:%d)", s->h.name, s->hostname, other->h.name, other->h.file,
			    other->h.line);
		for (size_t v = 0; v < s->vips.n; v++) {
			const struct reg_addr_owner *o = registry_addr_owner(r, &s->vips.v[v]);

			if (o != NULL) {
				const struct reg_head *oh = o->ent;

				ERR(&s->h, SV_VIP, "service \"%s\": vip %s is the address of %s \"%s\" "
				    "(%s:%d)", s->h.name, ip_str(&s->vips.v[v], a, sizeof(a)),
				    kind_names[o->kind], oh->name, oh->file, oh->line);
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
				ERR(&s->h, SV_VIP, "service \"%s\": %s port %u is already used by "
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

		if (idx == PO_PRINCIPALS || idx == PO_NOT_PRINCIPALS) {
			if (strncmp(s, "spiffe://", 9) == 0) {
				ERR(&p->h, idx, "policy \"%s\": %s are written without 'spiffe://' "
				    "(TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT): '%s'", p->h.name, what, s);
				return;
			}
		} else if (idx == PO_PATHS || idx == PO_NOT_PATHS) {
			if (s[0] != '/' && s[0] != '*') {
				ERR(&p->h, idx, "policy \"%s\": %s must start with '/' or '*': '%s'",
				    p->h.name, what, s);
				return;
			}
		} else if (idx == PO_METHODS || idx == PO_NOT_METHODS) {
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
			{ PO_PRINCIPALS, &p->principals, "principals" },
			{ PO_NOT_PRINCIPALS, &p->not_principals, "principals" },
			{ PO_PATHS, &p->paths, "paths" }, { PO_NOT_PATHS, &p->not_paths, "paths" },
			{ PO_METHODS, &p->methods, "methods" },
			{ PO_NOT_METHODS, &p->not_methods, "methods" },
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
 * glibc's regcomp() copies a subexpression once for each repetition an interval allows, so nested
 * intervals multiply: "((a{1,255}){1,255}){1,255}", 26 bytes, asks it for 16 million copies and
 * takes gigabytes and seconds before it fails; "a++++...+" doubles at each '+'. Estimates that
 * expansion (each atom weighs the product of the repetitions around it; it errs high) and refuses a
 * pattern above the budget before regcomp() sees it. Envoy caps RE2 programs the same way.
 */
#define REGEX_BUDGET 1000
#define REGEX_DEPTH 32

static bool
regex_size_ok(const char *re)
{
	/* tot[d]: size of the group open at depth d so far; last[d]: size of its last atom. */
	uint64_t tot[REGEX_DEPTH + 1] = { 0 }, last[REGEX_DEPTH + 1] = { 0 };
	int d = 0;

	for (const char *p = re; *p != '\0'; p++) {
		uint64_t atom = 1;

		switch (*p) {
		case '(':
			if (d == REGEX_DEPTH)
				return false;
			d++;
			tot[d] = last[d] = 0;
			continue;
		case ')':
			if (d == 0)
				break; /* unbalanced: regcomp() says so */
			atom = tot[d] ? tot[d] : 1;
			d--;
			break;
		case '|':
			last[d] = 0;
			continue;
		case '*':
		case '?':
			continue;
		case '+': /* "x+" is "xx*": one more copy, and "x++" copies that again */
			tot[d] += last[d];
			last[d] *= 2;
			if (tot[d] > REGEX_BUDGET)
				return false;
			continue;
		case '{': {
			char *end;
			unsigned long lo = strtoul(p + 1, &end, 10), hi = lo;

			if (end == p + 1)
				break; /* not an interval: a literal or an error for regcomp() */
			if (*end == ',') {
				const char *q = end + 1;

				hi = strtoul(q, &end, 10);
				if (end == q)
					hi = lo + 1; /* "{m,}" is m copies and a star */
			}
			if (*end != '}')
				break;
			if (hi > REGEX_BUDGET)
				return false;
			/* The atom is counted once already. */
			tot[d] += last[d] * (hi > 0 ? hi - 1 : 0);
			last[d] *= hi > 0 ? hi : 1;
			if (tot[d] > REGEX_BUDGET)
				return false;
			p = end;
			continue;
		}
		case '[': {
			/* A bracket expression is one atom: skip to its ']' ("[]a]", "[^]a]", "[[:x:]]"). */
			const char *q = p + 1;

			if (*q == '^')
				q++;
			if (*q == ']')
				q++;
			while (*q != '\0' && *q != ']') {
				if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
					const char *close = strchr(q + 2, q[1]);

					if (close == NULL || close[1] != ']')
						break;
					q = close + 2;
					continue;
				}
				q++;
			}
			if (*q == '\0')
				return true; /* unterminated: regcomp() says so */
			p = q;
			break;
		}
		case '\\':
			if (p[1] != '\0')
				p++;
			break;
		default:
			break;
		}
		tot[d] += atom;
		last[d] = atom;
		if (tot[d] > REGEX_BUDGET)
			return false;
	}
	return true;
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
	sv = kind != REG_WORKLOAD ? find(r, REG_SERVICE, bn) : NULL;
	wl = kind != REG_SERVICE ? find(r, REG_WORKLOAD, bn) : NULL;
	if (sv != NULL && wl != NULL) {
		bool sv_here = !ns_differ(sv->namespace, rt->namespace);
		bool wl_here = !ns_differ(wl->namespace, rt->namespace);

		if (sv_here && wl_here) {
			ERR(&rt->h, RT_BACKENDS, "route \"%s\": backend \"%s\" is both service "
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
			ERR(&rt->h, RT_BACKENDS, "route \"%s\": backend \"%s\" is neither a "
			    "service nor a workload", nm, bn);
		else
			ERR(&rt->h, RT_BACKENDS, "route \"%s\": backend \"%s\": %s \"%s\" is not "
			    "defined", nm, written, kind_names[kind], bn);
		return;
	}
	ns = sv != NULL ? sv->namespace : wl->namespace;
	if (ns_differ(ns, rt->namespace)) {
		ERR(&rt->h, RT_BACKENDS, "route \"%s\": backend \"%s\" is in namespace %s, the "
		    "route in %s", nm, written, ns, rt->namespace);
		return;
	}
	/* "echo" and "service/echo" differ as text; listed together they are one backend twice. */
	for (size_t k = 0; k < j; k++) {
		const struct reg_backend *o = &rt->backends_p[k];

		if ((sv != NULL && o->service == sv) || (wl != NULL && o->workload == wl)) {
			ERR(&rt->h, RT_BACKENDS, "route \"%s\": backends \"%s\" and \"%s\" are "
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

		rt->service_p = find(r, REG_SERVICE, rt->service);
		if (rt->service != NULL && rt->service_p == NULL)
			ERR(&rt->h, RT_SERVICE, "route \"%s\": service \"%s\" is not defined", nm,
			    rt->service);
		else if (rt->service_p != NULL && ns_differ(rt->service_p->namespace, rt->namespace))
			ERR(&rt->h, RT_SERVICE, "route \"%s\": service \"%s\" is in namespace %s, "
			    "the route in %s", nm, rt->service, rt->service_p->namespace, rt->namespace);
		if (paths > 1) {
			/* Point at the later of the conflicting keys. */
			int l = abs(rt->h.keyline[RT_PATH_EXACT]);

			if (abs(rt->h.keyline[RT_PATH_PREFIX]) > l)
				l = abs(rt->h.keyline[RT_PATH_PREFIX]);
			if (abs(rt->h.keyline[RT_PATH_REGEX]) > l)
				l = abs(rt->h.keyline[RT_PATH_REGEX]);
			diag_add(b->d, rt->h.file, l, "route \"%s\": match.path_exact, "
			    "match.path_prefix and match.path_regex exclude each other", nm);
		}
		if (rt->path_exact && rt->path_exact[0] != '/')
			ERR(&rt->h, RT_PATH_EXACT, "route \"%s\": match.path_exact must start with '/'", nm);
		if (rt->path_prefix && rt->path_prefix[0] != '/')
			ERR(&rt->h, RT_PATH_PREFIX, "route \"%s\": match.path_prefix must start with '/'",
			    nm);
		if (rt->path_regex && !regex_size_ok(rt->path_regex)) {
			ERR(&rt->h, RT_PATH_REGEX, "route \"%s\": match.path_regex is too complex "
			    "(nested or large repetitions)", nm);
		} else if (rt->path_regex) {
			int rc = regcomp(&rt->path_re, rt->path_regex, REG_EXTENDED | REG_NOSUB);

			if (rc != 0) {
				char msg[128];

				regerror(rc, &rt->path_re, msg, sizeof(msg));
				ERR(&rt->h, RT_PATH_REGEX, "route \"%s\": match.path_regex: %s", nm, msg);
			} else {
				rt->has_path_re = true;
			}
		}
		if (rt->rewrite_path_prefix && rt->path_prefix == NULL)
			ERR(&rt->h, RT_REWRITE, "route \"%s\": rewrite.path_prefix needs "
			    "match.path_prefix", nm);
		if (rt->rewrite_path_prefix && rt->rewrite_path_prefix[0] != '/')
			ERR(&rt->h, RT_REWRITE, "route \"%s\": rewrite.path_prefix must start with '/'",
			    nm);
		if (rt->redirect_path && rt->redirect_path[0] != '/')
			ERR(&rt->h, RT_RD_PATH, "route \"%s\": redirect.path must start with '/'", nm);
		{
			bool redirect = has(&rt->h, RT_RD_SCHEME) || rt->redirect_host ||
			    rt->redirect_port || rt->redirect_path || rt->redirect_status;

			rt->redirect = redirect;

			if (rt->redirect_status && rt->redirect_status != 301 &&
			    rt->redirect_status != 302 && rt->redirect_status != 303 &&
			    rt->redirect_status != 307 && rt->redirect_status != 308)
				ERR(&rt->h, RT_RD_STATUS, "route \"%s\": redirect.status must be 301, "
				    "302, 303, 307 or 308", nm);
			if (redirect && rt->backends.n > 0)
				ERR(&rt->h, RT_BACKENDS, "route \"%s\": backends and redirect exclude "
				    "each other", nm);
			if (!redirect && rt->backends.n == 0 && rt->h.keyline[RT_BACKENDS] == 0 &&
			    rt->h.keyline[RT_ABORT] == 0)
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
			ERR(&rt->h, RT_PER_TRY, "route \"%s\": per_try_timeout is longer than timeout",
			    nm);
		if (has(&rt->h, RT_RETRY_ON) && rt->retries == 0 && rt->h.keyline[RT_RETRIES] >= 0)
			ERR(&rt->h, RT_RETRY_ON, "route \"%s\": retry_on without retries", nm);
		if (has(&rt->h, RT_DELAY_PCT) && rt->h.keyline[RT_DELAY] == 0)
			ERR(&rt->h, RT_DELAY_PCT, "route \"%s\": fault.delay_percent without "
			    "fault.delay", nm);
		if (has(&rt->h, RT_ABORT_PCT) && rt->h.keyline[RT_ABORT] == 0)
			ERR(&rt->h, RT_ABORT_PCT, "route \"%s\": fault.abort_percent without "
			    "fault.abort", nm);
		/* A fault given without its percentage applies to every request. */
		if (has(&rt->h, RT_DELAY) && rt->h.keyline[RT_DELAY_PCT] == 0)
			rt->fault_delay_percent = 100;
		if (has(&rt->h, RT_ABORT) && rt->h.keyline[RT_ABORT_PCT] == 0)
			rt->fault_abort_percent = 100;
		if (rt->mirror != NULL) {
			rt->mirror_p = find(r, REG_SERVICE, rt->mirror);
			if (rt->mirror_p == NULL)
				ERR(&rt->h, RT_MIRROR, "route \"%s\": mirror service \"%s\" is not "
				    "defined", nm, rt->mirror);
			else if (ns_differ(rt->mirror_p->namespace, rt->namespace))
				ERR(&rt->h, RT_MIRROR, "route \"%s\": mirror service \"%s\" is in "
				    "namespace %s, the route in %s", nm, rt->mirror,
				    rt->mirror_p->namespace, rt->namespace);
			if (rt->h.keyline[RT_MIRROR_PCT] == 0)
				rt->mirror_percent = 100;
		} else if (has(&rt->h, RT_MIRROR_PCT) && rt->h.keyline[RT_MIRROR] == 0) {
			ERR(&rt->h, RT_MIRROR_PCT, "route \"%s\": mirror_percent without mirror", nm);
		}
	}
}

static int
builder_finish(struct builder *b, struct registry **out)
{
	struct registry *r = b->r;

	for (int k = 0; k < REG_NKINDS; k++)
		if (r->by_name[k].cap == 0)
			htab_init(&r->by_name[k], 0);
	check_required(b);
	index_addresses(b);
	check_workloads(b);
	check_services(b);
	resolve_endpoints(b);
	check_policies(b);
	check_routes(b);
	if (diag_count(b->d) != b->diag_before) {
		registry_free(r);
		return AMESH_ERR_INVALID;
	}
	r->refs = 1;
	*out = r;
	return 0;
}

static void
builder_init(struct builder *b, struct diag *d)
{
	memset(b, 0, sizeof(*b));
	b->r = xcalloc(1, sizeof(*b->r));
	b->d = d;
	b->diag_before = diag_count(d);
}

int
registry_parse_buffer(const char *file, const char *data, size_t len, struct registry **out,
    struct diag *d)
{
	struct builder b;

	*out = NULL;
	builder_init(&b, d);
	builder_add(&b, file, data, len);
	return builder_finish(&b, out);
}

int
registry_load_files(char *const *paths, size_t n, struct registry **out, struct diag *d)
{
	struct builder b;

	*out = NULL;
	builder_init(&b, d);
	for (size_t i = 0; i < n; i++) {
		char *data;
		size_t len;

		if (ini_slurp(paths[i], &data, &len, d) != 0)
			continue;
		builder_add(&b, paths[i], data, len);
		free(data);
	}
	return builder_finish(&b, out);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
registry_load_dir(const char *dir, struct registry **out, struct diag *d)
{
	DIR *dp;
	struct dirent *de;
	char **paths = NULL;
	size_t n = 0, before = diag_count(d);
	int r;

	*out = NULL;
	dp = opendir(dir);
	if (dp == NULL) {
		r = -errno;
		diag_add(d, dir, 0, "cannot open registry directory: %s", strerror(errno));
		return r;
	}
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.' || !str_has_suffix(de->d_name, ".conf"))
			continue;
		if (n >= REG_MAX_FILES) {
			diag_add(d, dir, 0, "more than %d registry files", REG_MAX_FILES);
			break;
		}
		paths = xrealloc(paths, n + 1, sizeof(char *));
		paths[n++] = path_join(dir, de->d_name);
	}
	closedir(dp);
	if (diag_count(d) != before) {
		r = AMESH_ERR_INVALID;
		goto out;
	}
	qsort(paths, n, sizeof(char *), cmp_str);
	r = registry_load_files(paths, n, out, d);
out:
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return r;
}

const struct ip_addr *
reg_workload_addr(const struct reg_workload *wl, int family)
{
	for (size_t i = 0; i < wl->addresses.n; i++)
		if (wl->addresses.v[i].family == family)
			return &wl->addresses.v[i];
	return wl->addresses.n > 0 ? &wl->addresses.v[0] : NULL;
}

const void *
registry_find(const struct registry *r, enum reg_kind k, const char *name)
{
	return find(r, k, name);
}

const struct reg_addr_owner *
registry_addr_owner(const struct registry *r, const struct ip_addr *ip)
{
	struct ip_addr key;

	/* Normalise: bytes past an IPv4 address must be zero to hash alike. */
	memset(&key, 0, sizeof(key));
	key.family = ip->family;
	memcpy(key.a, ip->a, ip->family == AF_INET ? 4 : 16);
	return htab_get(&r->by_addr, &key, sizeof(key));
}

const struct reg_workload *
registry_workload_by_addr(const struct registry *r, const struct ip_addr *ip)
{
	const struct reg_addr_owner *o = registry_addr_owner(r, ip);

	return o != NULL && o->kind == REG_WORKLOAD ? o->ent : NULL;
}

const struct reg_vip *
registry_service_by_vip(const struct registry *r, const struct ip_addr *ip, uint16_t port)
{
	unsigned char key[VIP_KEY_LEN];

	memset(key, 0, sizeof(key));
	key[0] = ip->family;
	memcpy(key + offsetof(struct ip_addr, a), ip->a, ip->family == AF_INET ? 4 : 16);
	key[sizeof(struct ip_addr)] = (unsigned char)(port >> 8);
	key[sizeof(struct ip_addr) + 1] = (unsigned char)port;
	return htab_get(&r->by_vip, key, sizeof(key));
}

const struct reg_service *
registry_service_by_hostname(const struct registry *r, const char *host)
{
	return htab_get_str(&r->by_hostname, host);
}

const struct reg_policy *const *
registry_policies_in(const struct registry *r, const char *ns, size_t *n)
{
	const struct ns_policies *np = htab_get_str(&r->by_ns_policy, ns);

	*n = np ? np->n : 0;
	return np ? np->v : NULL;
}

bool
registry_selects(const struct label_list *selector, const struct label_list *labels)
{
	for (size_t i = 0; i < selector->n; i++) {
		size_t j;

		for (j = 0; j < labels->n; j++)
			if (strcmp(selector->v[i].key, labels->v[j].key) == 0 &&
			    strcmp(selector->v[i].value, labels->v[j].value) == 0)
				break;
		if (j == labels->n)
			return false;
	}
	return true;
}

void
registry_holder_init(struct registry_holder *h)
{
	pthread_mutex_init(&h->mu, NULL);
	h->cur = NULL;
}

void
registry_holder_destroy(struct registry_holder *h)
{
	registry_unref(h->cur);
	h->cur = NULL;
	pthread_mutex_destroy(&h->mu);
}

struct registry *
registry_holder_get(struct registry_holder *h)
{
	struct registry *r;

	pthread_mutex_lock(&h->mu);
	r = registry_ref(h->cur);
	pthread_mutex_unlock(&h->mu);
	return r;
}

void
registry_holder_set(struct registry_holder *h, struct registry *r)
{
	struct registry *old;

	pthread_mutex_lock(&h->mu);
	old = h->cur;
	h->cur = r;
	pthread_mutex_unlock(&h->mu);
	registry_unref(old);
}

int
registry_holder_reload(struct registry_holder *h, const char *dir, struct diag *d)
{
	struct registry *r;
	int rc = registry_load_dir(dir, &r, d);

	if (rc != 0)
		return rc;
	registry_holder_set(h, r);
	return 0;
}
