/* SPDX-License-Identifier: Apache-2.0 */
/* Round robin with a failure penalty over registry services' endpoints (lb.h). */
#include "config.h"

#include <stdlib.h>

#include "core/err.h"
#include "core/htab.h"
#include "net/lb.h"

/* What the balancer remembers of one registry entry: a service's turn, an endpoint's penalty. */
struct lb_ent {
	const void *key;
	uint32_t rr;
	uint64_t penalty_until;
};

struct lb {
	const struct registry *reg; /* the snapshot the entries belong to (a reference) */
	struct htab index;          /* key -> entry */
	struct lb_ent *ents;        /* cap entries, used of them in use */
	size_t used, cap;
};

void *(*lb_test_calloc)(size_t n, size_t size) = calloc;

int
lb_new(struct lb **out)
{
	*out = calloc(1, sizeof(**out));
	return *out != NULL ? 0 : AMESH_ERR_NOMEM;
}

/* Forgets every entry and the snapshot they belonged to. */
static void
lb_clear(struct lb *lb)
{
	htab_free(&lb->index);
	free(lb->ents);
	lb->ents = NULL;
	lb->used = lb->cap = 0;
	registry_unref((struct registry *)lb->reg);
	lb->reg = NULL;
}

void
lb_free(struct lb *lb)
{
	if (lb == NULL)
		return;
	lb_clear(lb);
	free(lb);
}

/* The entry of key in snapshot reg, made on first use; NULL when there is no room. */
static struct lb_ent *
lb_get(struct lb *lb, const struct registry *reg, const void *key)
{
	struct lb_ent *e;

	if (lb->reg != reg) {
		lb_clear(lb);
		/* Hold the snapshot: its address cannot then be reused by a newer one (ABA). */
		lb->reg = registry_ref((struct registry *)reg);
		lb->cap = reg->n[REG_SERVICE] + reg->n[REG_WORKLOAD] + 1;
		for (size_t i = 0; i < reg->n[REG_WAYPOINT]; i++)
			lb->cap += 1 + REG_WAYPOINTS(reg)[i]->addresses.n;
		lb->ents = lb_test_calloc(lb->cap, sizeof(*lb->ents));
		if (lb->ents == NULL) {
			lb->cap = 0;
			return NULL;
		}
		htab_init(&lb->index, lb->cap);
	}
	e = htab_get(&lb->index, &key, sizeof(key));
	if (e != NULL || lb->used >= lb->cap)
		return e;
	e = &lb->ents[lb->used++];
	e->key = key;
	htab_put(&lb->index, &e->key, sizeof(e->key), e);
	return e;
}

const struct reg_workload *
lb_pick(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    uint64_t now_ms)
{
	struct lb_ent *e = lb_get(lb, reg, svc);
	size_t n = svc->n_endpoints;
	uint32_t start;

	if (n == 0)
		return NULL;
	start = e != NULL ? e->rr++ : 0;
	for (size_t i = 0; i < n; i++) {
		const struct reg_workload *ep = svc->endpoints[(start + i) % n];
		struct lb_ent *pe = lb_get(lb, reg, ep);

		if (pe == NULL || pe->penalty_until <= now_ms)
			return ep;
	}
	return svc->endpoints[start % n]; /* all failed recently: try anyway */
}

void
lb_fail(struct lb *lb, const struct registry *reg, const struct reg_workload *ep,
    uint64_t now_ms)
{
	struct lb_ent *e;

	if (ep == NULL || reg == NULL || reg != lb->reg)
		return;
	e = lb_get(lb, reg, ep);
	if (e != NULL)
		e->penalty_until = now_ms + LB_PENALTY_MS;
}

const struct ip_addr *
lb_pick_waypoint(struct lb *lb, const struct registry *reg, const struct reg_waypoint *wp,
    uint64_t tried, uint64_t now_ms)
{
	struct lb_ent *e = lb_get(lb, reg, wp);
	size_t n = wp->addresses.n;
	const struct ip_addr *first = NULL;
	uint32_t start;

	if (n == 0)
		return NULL;
	start = e != NULL ? e->rr++ : 0;
	for (size_t i = 0; i < n; i++) {
		size_t k = (start + i) % n;
		const struct ip_addr *ip = &wp->addresses.v[k];
		struct lb_ent *pe;

		if (k < 64 && (tried & (UINT64_C(1) << k)) != 0)
			continue;
		pe = lb_get(lb, reg, ip);
		if (pe == NULL || pe->penalty_until <= now_ms)
			return ip;
		if (first == NULL)
			first = ip;
	}
	return first; /* all untried ones failed recently: try one anyway */
}

void
lb_fail_waypoint(struct lb *lb, const struct registry *reg, const struct ip_addr *addr,
    uint64_t now_ms)
{
	struct lb_ent *e;

	if (addr == NULL || reg == NULL || reg != lb->reg)
		return;
	e = lb_get(lb, reg, addr);
	if (e != NULL)
		e->penalty_until = now_ms + LB_PENALTY_MS;
}
