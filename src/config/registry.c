/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry loader. Three passes: parse every file into entries (syntax and per-key values), then
 * resolve names and check the whole (regcheck.c: references, uniqueness, per-kind rules), then
 * build the indexes. Any error fails the load: a registry is used whole or not at all. The
 * snapshot's lookups are here too; the holder that publishes snapshots is regholder.c.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/ini.h"
#include "config/registry-int.h"
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

static const struct kw node_kw[] = {
	[N_ADDRESS] = K("node", "address", KW_IP, struct reg_node, address, NULL, true),
};

static const struct kw waypoint_kw[] = {
	[WP_NAMESPACE] = K("waypoint", "namespace", KW_NAME, struct reg_waypoint, namespace, NULL, true),
	[WP_SA] = K("waypoint", "service_account", KW_NAME, struct reg_waypoint, service_account, NULL, false),
	[WP_ADDRESS] = K("waypoint", "address", KW_IP, struct reg_waypoint, address, NULL, true),
	[WP_NODE] = K("waypoint", "node", KW_HOSTNAME, struct reg_waypoint, node, NULL, false),
};

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

static const struct kw service_kw[] = {
	[SV_NAMESPACE] = K("service", "namespace", KW_NAME, struct reg_service, namespace, NULL, true),
	[SV_HOSTNAME] = K("service", "hostname", KW_HOSTNAME, struct reg_service, hostname, NULL, false),
	[SV_VIP] = K("service", "vip", KW_IP_LIST, struct reg_service, vips, NULL, false),
	[SV_PORTS] = K("service", "ports", KW_PORTMAP_LIST, struct reg_service, ports, NULL, true),
	[SV_SELECTOR] = K("service", "selector", KW_LABELS, struct reg_service, selector, NULL, true),
	[SV_WAYPOINT] = K("service", "waypoint", KW_HOSTNAME, struct reg_service, waypoint, NULL, false),
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


static int
builder_finish(struct builder *b, struct registry **out)
{
	struct registry *r = b->r;

	for (int k = 0; k < REG_NKINDS; k++)
		if (r->by_name[k].cap == 0)
			htab_init(&r->by_name[k], 0);
	registry_check(b);
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
registry_find_entry(const struct registry *r, enum reg_kind k, const char *name)
{
	return name ? htab_get_str(&r->by_name[k], name) : NULL;
}

const void *
registry_find(const struct registry *r, enum reg_kind k, const char *name)
{
	return registry_find_entry(r, k, name);
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
