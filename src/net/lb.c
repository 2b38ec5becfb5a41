/* SPDX-License-Identifier: Apache-2.0 */
/* Round robin with a failure penalty, outlier detection and connection pool limits (lb.h). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/htab.h"
#include "core/log.h"
#include "net/lb.h"
#include "telemetry/metrics.h"

/* Touched with __atomic builtins: lb_release runs without the balancer's lock. */
struct lb_pool {
	unsigned refs; /* the balancer's entry (while a snapshot has the service) + each place held */
	uint64_t n[LB_NLIMITS];
};

/* A registry entry (b NULL) or a (service, endpoint) pair. */
struct lb_key {
	const void *a, *b;
};

/* What the balancer remembers of one key: a service's turn and pool, an endpoint's penalty, a
 * pair's outlier state. */
struct lb_ent {
	struct lb_key key;
	uint32_t rr;
	uint64_t penalty_until;
	struct lb_pool *pool;
	uint64_t c5xx, cgw;      /* consecutive 5xx, consecutive gateway errors */
	uint64_t ejections;      /* in a row (decays while it stays in: see od_eject) */
	uint64_t ejected_until;  /* while ejected */
	uint64_t returned_at;    /* when the last ejection ended */
	bool ejected;
};

struct lb {
	pthread_mutex_t mu;         /* every public call holds it: the workers share one balancer */
	unsigned refs;              /* lb_new's + lb_ref's, under mu */
	const struct registry *reg; /* the snapshot the entries belong to (a reference) */
	struct htab index;          /* key -> entry */
	struct lb_ent *ents;        /* cap entries, used of them in use */
	size_t used, cap;
	uint64_t next_return;       /* the earliest ejected_until of an ejected entry (0: none) */
	struct metrics *metrics;
};

void *(*lb_test_calloc)(size_t n, size_t size) = calloc;

int
lb_new(struct lb **out)
{
	*out = calloc(1, sizeof(**out));
	if (*out == NULL)
		return AMESH_ERR_NOMEM;
	pthread_mutex_init(&(*out)->mu, NULL);
	(*out)->refs = 1;
	return 0;
}

struct lb *
lb_ref(struct lb *lb)
{
	pthread_mutex_lock(&lb->mu);
	lb->refs++;
	pthread_mutex_unlock(&lb->mu);
	return lb;
}

void
lb_set_metrics(struct lb *lb, struct metrics *m)
{
	lb->metrics = m;
}

static void
pool_unref(struct lb_pool *p)
{
	if (p != NULL && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(p);
}

/* The label a service's series carry. */
static const char *
svc_label(const struct reg_service *svc)
{
	return svc->hostname != NULL ? svc->hostname : svc->h.name;
}

static void
gauge_ejected(struct lb *lb, const struct reg_service *svc, int64_t d)
{
	if (lb->metrics != NULL)
		metrics_gauge_add(metrics_gauge_l(lb->metrics, "amesh_outlier_endpoints_ejected",
		    "Endpoints of a service ejected by outlier detection now.", "service",
		    svc_label(svc)), d);
}

/* Forgets every entry and the snapshot they belonged to. */
static void
lb_clear(struct lb *lb)
{
	for (size_t i = 0; i < lb->used; i++) {
		pool_unref(lb->ents[i].pool);
		if (lb->ents[i].ejected && lb->ents[i].key.b != NULL)
			gauge_ejected(lb, lb->ents[i].key.a, -1);
	}
	htab_free(&lb->index);
	free(lb->ents);
	lb->ents = NULL;
	lb->used = lb->cap = 0;
	lb->next_return = 0;
	registry_unref((struct registry *)lb->reg);
	lb->reg = NULL;
}

void
lb_free(struct lb *lb)
{
	unsigned left;

	if (lb == NULL)
		return;
	pthread_mutex_lock(&lb->mu);
	left = --lb->refs;
	pthread_mutex_unlock(&lb->mu);
	if (left > 0)
		return;
	lb_clear(lb);
	pthread_mutex_destroy(&lb->mu);
	free(lb);
}

/* The entry of (a, b) in the current snapshot, made on first use when make; NULL when there is
 * none (or no room). */
static struct lb_ent *
ent(struct lb *lb, const void *a, const void *b, bool make)
{
	struct lb_key k = { a, b };
	struct lb_ent *e;

	if (lb->ents == NULL)
		return NULL;
	e = htab_get(&lb->index, &k, sizeof(k));
	if (e != NULL || !make || lb->used >= lb->cap)
		return e;
	e = &lb->ents[lb->used++];
	e->key = k;
	htab_put(&lb->index, &e->key, sizeof(e->key), e);
	return e;
}

/* Moves to snapshot reg: a new table, with the pools and the outlier state of the old one carried
 * over by name (entries the new snapshot has no names for are dropped). */
static void
lb_switch(struct lb *lb, const struct registry *reg)
{
	struct lb old = *lb;
	size_t pairs = 0;

	/* Hold the snapshot: its address cannot then be reused by a newer one (ABA). */
	lb->reg = registry_ref((struct registry *)reg);
	lb->used = 0;
	lb->next_return = 0;
	memset(&lb->index, 0, sizeof(lb->index));
	for (size_t i = 0; i < reg->n[REG_SERVICE]; i++)
		pairs += REG_SERVICES(reg)[i]->n_endpoints;
	lb->cap = reg->n[REG_SERVICE] + reg->n[REG_WORKLOAD] + pairs + 1;
	for (size_t i = 0; i < reg->n[REG_WAYPOINT]; i++)
		lb->cap += 1 + REG_WAYPOINTS(reg)[i]->addresses.n;
	lb->ents = lb_test_calloc(lb->cap, sizeof(*lb->ents));
	if (lb->ents == NULL)
		lb->cap = 0;
	else
		htab_init(&lb->index, lb->cap);
	for (size_t i = 0; i < old.used; i++) {
		struct lb_ent *o = &old.ents[i], *e;
		const struct reg_service *os = o->key.a, *ns;
		const void *nb = NULL;

		if (o->pool == NULL && o->key.b == NULL)
			continue; /* a turn or a penalty: not carried */
		if (o->key.b != NULL && !o->ejected && o->ejections == 0 && o->c5xx == 0 &&
		    o->cgw == 0)
			continue;
		ns = registry_find(reg, REG_SERVICE, os->h.name);
		if (ns != NULL && o->key.b != NULL)
			nb = registry_find(reg, REG_WORKLOAD,
			    ((const struct reg_workload *)o->key.b)->h.name);
		if (ns == NULL || (o->key.b != NULL && nb == NULL) ||
		    (e = ent(lb, ns, nb, true)) == NULL)
			continue; /* gone (lb_clear below lets go of what it held) */
		e->pool = o->pool;
		o->pool = NULL;
		if (o->key.b == NULL)
			continue;
		e->c5xx = o->c5xx;
		e->cgw = o->cgw;
		e->ejections = o->ejections;
		e->ejected_until = o->ejected_until;
		e->returned_at = o->returned_at;
		e->ejected = o->ejected;
		if (e->ejected) {
			o->ejected = false; /* the gauge goes on counting it */
			if (lb->next_return == 0 || e->ejected_until < lb->next_return)
				lb->next_return = e->ejected_until;
		}
	}
	lb_clear(&old);
}

/* The entry of key in snapshot reg, made on first use; NULL when there is no room. */
static struct lb_ent *
lb_get(struct lb *lb, const struct registry *reg, const void *key)
{
	/* Workers share the balancer: one still on an older snapshot (a reload in progress, a
	 * retry of a flow that began before it) goes without state rather than switching back. */
	if (lb->reg != reg && lb->reg != NULL && reg->gen < lb->reg->gen)
		return NULL;
	if (lb->reg != reg)
		lb_switch(lb, reg);
	return ent(lb, key, NULL, true);
}

uint64_t
lb_ejection_ms(uint64_t base, uint64_t n, uint64_t max)
{
	if (max < base)
		max = base;
	if (n < 1)
		n = 1;
	return n > max / base ? max : base * n;
}

size_t
lb_max_ejected(size_t n, uint64_t percent)
{
	size_t k;

	if (n <= 1)
		return 0;
	if (percent > 100)
		percent = 100;
	k = (size_t)((uint64_t)n * percent / 100);
	if (k < 1)
		k = 1;
	return k > n - 1 ? n - 1 : k;
}

/* The ejection of e (of service svc, endpoint ep) is over at now: it is back. */
static void
od_return(struct lb *lb, struct lb_ent *e, uint64_t now)
{
	const struct reg_service *svc = e->key.a;
	const struct reg_workload *ep = e->key.b;

	e->ejected = false;
	e->returned_at = e->ejected_until;
	gauge_ejected(lb, svc, -1);
	log_info("service %s/%s: endpoint %s back from ejection", svc->namespace, svc->h.name,
	    ep->h.name);
	(void)now;
}

/* True when pair entry e is ejected at now (an ejection that is over returns it). */
static bool
od_out(struct lb *lb, struct lb_ent *e, uint64_t now)
{
	if (e == NULL || !e->ejected)
		return false;
	if (e->ejected_until > now)
		return true;
	od_return(lb, e, now);
	return false;
}

static void
sweep(struct lb *lb, uint64_t now_ms)
{
	if (lb->next_return == 0 || now_ms < lb->next_return)
		return;
	lb->next_return = 0;
	for (size_t i = 0; i < lb->used; i++) {
		struct lb_ent *e = &lb->ents[i];

		if (e->key.b == NULL || !od_out(lb, e, now_ms))
			continue;
		if (lb->next_return == 0 || e->ejected_until < lb->next_return)
			lb->next_return = e->ejected_until;
	}
}

void
lb_sweep(struct lb *lb, uint64_t now_ms)
{
	if (lb == NULL)
		return;
	pthread_mutex_lock(&lb->mu);
	sweep(lb, now_ms);
	pthread_mutex_unlock(&lb->mu);
}

static size_t
ejected(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    uint64_t now_ms)
{
	size_t n = 0;

	if (lb->reg != reg)
		return 0;
	for (size_t i = 0; i < svc->n_endpoints; i++)
		n += od_out(lb, ent(lb, svc, svc->endpoints[i], false), now_ms);
	return n;
}

size_t
lb_ejected(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    uint64_t now_ms)
{
	size_t n;

	pthread_mutex_lock(&lb->mu);
	n = ejected(lb, reg, svc, now_ms);
	pthread_mutex_unlock(&lb->mu);
	return n;
}

static const struct reg_workload *
pick(struct lb *lb, const struct registry *reg, const struct reg_service *svc, uint64_t now_ms)
{
	struct lb_ent *e = lb_get(lb, reg, svc);
	const struct reg_workload *fallback = NULL;
	size_t n = svc->n_endpoints;
	uint32_t start;

	if (n == 0)
		return NULL;
	sweep(lb, now_ms);
	start = e != NULL ? e->rr++ : 0;
	for (size_t i = 0; i < n; i++) {
		const struct reg_workload *ep = svc->endpoints[(start + i) % n];
		struct lb_ent *pe = lb_get(lb, reg, ep);

		if (od_out(lb, ent(lb, svc, ep, false), now_ms))
			continue;
		if (pe == NULL || pe->penalty_until <= now_ms)
			return ep;
		if (fallback == NULL)
			fallback = ep;
	}
	/* All failed recently: try anyway, one not ejected first. */
	return fallback != NULL ? fallback : svc->endpoints[start % n];
}

const struct reg_workload *
lb_pick(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    uint64_t now_ms)
{
	const struct reg_workload *ep;

	pthread_mutex_lock(&lb->mu);
	ep = pick(lb, reg, svc, now_ms);
	pthread_mutex_unlock(&lb->mu);
	return ep;
}

void
lb_fail(struct lb *lb, const struct registry *reg, const struct reg_workload *ep,
    uint64_t now_ms)
{
	struct lb_ent *e;

	if (ep == NULL || reg == NULL)
		return;
	pthread_mutex_lock(&lb->mu);
	if (reg == lb->reg && (e = lb_get(lb, reg, ep)) != NULL)
		e->penalty_until = now_ms + LB_PENALTY_MS;
	pthread_mutex_unlock(&lb->mu);
}

/* e (svc, ep) reached a consecutive-error threshold at now: out, unless the service's share of
 * ejected endpoints is reached (then its counts stay, so it goes on its next error once another
 * is back). */
static void
od_eject(struct lb *lb, const struct reg_service *svc, const struct reg_workload *ep,
    struct lb_ent *e, const char *why, uint64_t now)
{
	uint64_t base = svc->od_base_ejection ? svc->od_base_ejection : 1, len;
	size_t out = ejected(lb, lb->reg, svc, now), max = lb_max_ejected(svc->n_endpoints,
	    svc->od_max_percent);

	if (out >= max) {
		log_debug("service %s/%s: endpoint %s not ejected: %zu of %zu out already",
		    svc->namespace, svc->h.name, ep->h.name, out, svc->n_endpoints);
		return;
	}
	/* Envoy's multiplier goes down by one for each interval an endpoint stays in; amesh counts
	 * base_ejection_time as that interval. */
	if (e->ejections > 0 && now > e->returned_at) {
		uint64_t healthy = (now - e->returned_at) / base;

		e->ejections = healthy >= e->ejections ? 0 : e->ejections - healthy;
	}
	e->ejections++;
	len = lb_ejection_ms(base, e->ejections, svc->od_max_ejection);
	e->ejected = true;
	e->ejected_until = now + len;
	e->c5xx = e->cgw = 0;
	if (lb->next_return == 0 || e->ejected_until < lb->next_return)
		lb->next_return = e->ejected_until;
	log_info("service %s/%s: endpoint %s ejected for %llu ms (%s, ejection %llu in a row)",
	    svc->namespace, svc->h.name, ep->h.name, (unsigned long long)len, why,
	    (unsigned long long)e->ejections);
	gauge_ejected(lb, svc, 1);
	if (lb->metrics != NULL)
		metrics_counter_add(metrics_counter_l(lb->metrics, "amesh_outlier_ejections_total",
		    "Endpoints ejected by outlier detection.", "service", svc_label(svc)), 1);
}

void
lb_result(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    const struct reg_workload *ep, int status, uint64_t now_ms)
{
	struct lb_ent *e;
	bool err5, gw;

	if (lb == NULL || svc == NULL || ep == NULL || reg == NULL ||
	    (svc->od_5xx == 0 && svc->od_gateway == 0))
		return;
	pthread_mutex_lock(&lb->mu);
	e = reg == lb->reg ? ent(lb, svc, ep, true) : NULL;
	if (e == NULL || od_out(lb, e, now_ms))
		goto out; /* ejected: what was in flight to it says nothing new */
	err5 = status < 0 || (status >= 500 && status <= 599);
	gw = status < 0 || status == 502 || status == 503 || status == 504;
	if (!err5) {
		e->c5xx = e->cgw = 0;
		goto out;
	}
	e->c5xx++;
	e->cgw = gw ? e->cgw + 1 : 0;
	if (svc->od_5xx > 0 && e->c5xx >= svc->od_5xx)
		od_eject(lb, svc, ep, e, "consecutive 5xx", now_ms);
	else if (svc->od_gateway > 0 && e->cgw >= svc->od_gateway)
		od_eject(lb, svc, ep, e, "consecutive gateway errors", now_ms);
out:
	pthread_mutex_unlock(&lb->mu);
}

int
lb_take(struct lb *lb, const struct registry *reg, const struct reg_service *svc,
    enum lb_limit k, struct lb_pool **out)
{
	static const char *const what[LB_NLIMITS] = { "requests", "pending requests",
		"connections" };
	const uint64_t limit[LB_NLIMITS] = { svc->cp_max_requests, svc->cp_max_pending,
		svc->cp_max_connections };
	struct lb_ent *e;
	int rc = 0;

	*out = NULL;
	pthread_mutex_lock(&lb->mu);
	if ((e = lb_get(lb, reg, svc)) == NULL)
		goto out;
	if (e->pool == NULL) {
		if ((e->pool = calloc(1, sizeof(*e->pool))) == NULL)
			goto out; /* not counted: no limit rather than no service */
		e->pool->refs = 1;
	}
	/* Takers hold mu; a release may lower the count meanwhile, never raise it. */
	if (limit[k] > 0 && __atomic_load_n(&e->pool->n[k], __ATOMIC_ACQUIRE) >= limit[k]) {
		log_debug("service %s/%s: %s at the limit (%llu)", svc->namespace, svc->h.name,
		    what[k], (unsigned long long)limit[k]);
		if (lb->metrics != NULL)
			metrics_counter_add(metrics_counter_l(lb->metrics,
			    "amesh_circuit_breaker_overflow_total",
			    "Requests and connections refused by a service's connection pool limits "
			    "(flag UO).", "service", svc_label(svc)), 1);
		rc = -EBUSY;
		goto out;
	}
	__atomic_add_fetch(&e->pool->n[k], 1, __ATOMIC_ACQ_REL);
	__atomic_add_fetch(&e->pool->refs, 1, __ATOMIC_ACQ_REL);
	*out = e->pool;
out:
	pthread_mutex_unlock(&lb->mu);
	return rc;
}

void
lb_release(struct lb_pool *p, enum lb_limit k)
{
	uint64_t n;

	if (p == NULL)
		return;
	n = __atomic_load_n(&p->n[k], __ATOMIC_ACQUIRE);
	while (n > 0 && !__atomic_compare_exchange_n(&p->n[k], &n, n - 1, false, __ATOMIC_ACQ_REL,
	    __ATOMIC_ACQUIRE))
		;
	pool_unref(p);
}

uint64_t
lb_pool_count(const struct lb_pool *p, enum lb_limit k)
{
	return p != NULL ? __atomic_load_n(&p->n[k], __ATOMIC_ACQUIRE) : 0;
}

static const struct ip_addr *
pick_waypoint(struct lb *lb, const struct registry *reg, const struct reg_waypoint *wp,
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

const struct ip_addr *
lb_pick_waypoint(struct lb *lb, const struct registry *reg, const struct reg_waypoint *wp,
    uint64_t tried, uint64_t now_ms)
{
	const struct ip_addr *ip;

	pthread_mutex_lock(&lb->mu);
	ip = pick_waypoint(lb, reg, wp, tried, now_ms);
	pthread_mutex_unlock(&lb->mu);
	return ip;
}

void
lb_fail_waypoint(struct lb *lb, const struct registry *reg, const struct ip_addr *addr,
    uint64_t now_ms)
{
	struct lb_ent *e;

	if (addr == NULL || reg == NULL)
		return;
	pthread_mutex_lock(&lb->mu);
	if (reg == lb->reg && (e = lb_get(lb, reg, addr)) != NULL)
		e->penalty_until = now_ms + LB_PENALTY_MS;
	pthread_mutex_unlock(&lb->mu);
}
