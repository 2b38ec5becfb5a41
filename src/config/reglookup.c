/* SPDX-License-Identifier: Apache-2.0 */
/* Lookups in a registry snapshot (registry.h): by name, address, VIP, hostname, namespace. */
#include "config.h"

#include <string.h>

#include "config/registry-int.h"
#include "core/util.h"

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

const struct reg_service *
registry_external_by_addr(const struct registry *r, const struct ip_addr *ip, uint16_t port)
{
	for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
		const struct reg_service *s = REG_SERVICES(r)[i];
		bool addr = false;

		if (!s->external)
			continue;
		for (size_t j = 0; j < s->addresses.n && !addr; j++)
			addr = ip_equal(&s->addresses.v[j], ip);
		for (size_t j = 0; addr && j < s->ports.n; j++)
			if (s->ports.v[j].port == port)
				return s;
	}
	return NULL;
}

bool
reg_waypoint_on_node(const struct reg_waypoint *wp, const char *node)
{
	for (size_t i = 0; node != NULL && i < wp->nodes.n; i++)
		if (strcmp(wp->nodes.v[i], node) == 0)
			return true;
	return false;
}

bool
reg_waypoint_allows(const struct reg_waypoint *wp, const char *ns)
{
	if (wp->namespace != NULL && strcmp(wp->namespace, ns) == 0)
		return true;
	for (size_t i = 0; i < wp->allowed_namespaces.n; i++)
		if (kw_pattern_match(wp->allowed_namespaces.v[i], ns))
			return true;
	return false;
}
