/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The workloads a proxy serves (proxy.h). Each gets, inside its own network namespace, the
 * outbound capture listener, the inbound plaintext listener and an HBONE server, for each address
 * family it has an address in, plus its HBONE pool (and a sidecar's L7 engine). Their connections
 * go to flows.c; a workload lives until every part that holds it let go (workload.c). Also here:
 * the recorded workloads it could not serve, certificate rotation, and the drain.
 * Calls below it only: flows.c (never calling back but through on_idle) and workload.c.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "core/worker.h"
#include "dns/server.h"
#include "hbone/hbone.h"
#include "l7/waypoint.h"
#include "net/listen.h"
#include "net/netns.h"
#include "proxy/flows.h"
#include "proxy/proxy.h"
#include "proxy/workload.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"
#include "tls/identity.h"

/* A recorded workload not served (proxy_failed_view). */
struct pfailed {
	char *name, *netns_path;
	char why[256];
	struct netns_id nsid;
	struct pfailed *next;
};

struct proxy {
	struct proxy_cfg cfg;
	struct conf_proxy pcopy; /* cfg.pc with this worker's share of max_connections */
	/* Workers (core/worker.h): the front (worker 0) owns the listeners and the other workers'
	 * proxies (peers); a peer is headless: no listeners, no DNS, no failed list; the front hands
	 * it connections. With one worker, wk is NULL and npeers 0. */
	struct worker *wk;
	struct proxy **peers;
	unsigned npeers;
	bool headless;
	/* front: the worker for the next accepted connection, counted per kind (enum
	 * handoff_kind): HBONE connections are few and long (a peer's pool), and with one count
	 * for all, app connections in between could put them all on one worker. */
	unsigned rr[3];
	unsigned peers_left;  /* front, draining: peers not drained yet */
	bool self_drained;    /* front, draining: its own part is closed */
	void (*user_done)(void *arg); /* front: proxy_drain's done, once every worker drained */
	void *user_arg;
	struct proxy *front;  /* a peer: worker 0's proxy */
	struct metric_counter *m_conns; /* amesh_worker_connections_total{worker="N"} */
	struct flows *fl;
	struct pworkload *workloads; /* enrolled, newest first */
	size_t nworkloads;
	struct pfailed *failed; /* recorded workloads not served (at most PROXY_MAX_WORKLOADS) */
	size_t nfailed;
	bool draining;
	uv_timer_t refresh; /* picks up rotated certificates for the HBONE servers */
	uv_timer_t drain_timer;
	void (*on_drained)(void *arg);
	void *drained_arg;
	size_t alive;    /* workloads not yet freed (enrolled or shutting down) */
	int timers_open;
	struct pworkload *l7_ws; /* workloads with an L7 engine, enrolled or shutting down */
};

static void check_drained(struct proxy *px);

/* A workload's last part let go: it is no longer alive, nor in the L7 list. */
static void
workload_freed(struct pworkload *w, void *arg)
{
	struct proxy *px = arg;

	if (w->l7 != NULL) {
		if (w->l7_prev != NULL)
			w->l7_prev->l7_next = w->l7_next;
		else
			px->l7_ws = w->l7_next;
		if (w->l7_next != NULL)
			w->l7_next->l7_prev = w->l7_prev;
	}
	px->alive--;
	check_drained(px);
}

static int
l7_app_socket(void *arg, const struct sockaddr_storage *client, int family)
{
	return pw_app_socket(arg, client, family);
}

/* A sidecar's L7 engine for w (proxy_cfg.l7): it answers for w alone, with w's pool and identity. */
static int
start_l7(struct proxy *px, struct pworkload *w)
{
	struct l7_host h = {
		.role = px->cfg.role,
		.workload = w->name,
		.ns = w->ns,
		.sa = w->sa,
		.pool = w->pool,
		.idle_timeout_ms = px->cfg.pc->idle_timeout,
		.detect_ms = px->cfg.conf->sidecar.protocol_detection_timeout,
		.header_ms = px->cfg.conf->sidecar.request_header_timeout,
		.app_socket = l7_app_socket,
		.tun_gone = flows_on_l7_tun_gone,
		.arg = w,
	};
	int r = waypoint_embed(px->cfg.loop, px->cfg.conf, px->cfg.reg, px->cfg.ids,
	    px->cfg.metrics, &h, &w->l7);

	if (r != 0)
		return r;
	w->l7_next = px->l7_ws;
	if (px->l7_ws != NULL)
		px->l7_ws->l7_prev = w;
	px->l7_ws = w;
	return 0;
}

static void start_refresh(struct proxy *px);

/* The last flow ended: a drain may be over. */
static void
flows_idle_cb(void *arg)
{
	check_drained(arg);
}

/* The proxy of worker index out of n (wk NULL: the only one), on the thread of cfg->loop. */
static struct proxy *
proxy_new_one(const struct proxy_cfg *cfg, unsigned n, unsigned index, struct worker *wk,
    struct flows *share)
{
	struct proxy *px = xcalloc(1, sizeof(*px));
	struct flows_cfg fc = {
		.share = share,
		.loop = cfg->loop,
		.conf = cfg->conf,
		.reg = cfg->reg,
		.ids = cfg->ids,
		.metrics = cfg->metrics,
		.on_idle = flows_idle_cb,
		.arg = px,
	};
	char idx[16];

	px->cfg = *cfg;
	px->pcopy = *cfg->pc;
	/* max_connections bounds the whole proxy: each worker takes an equal share. */
	px->pcopy.max_connections = (cfg->pc->max_connections + n - 1) / n;
	px->cfg.pc = &px->pcopy;
	fc.pc = &px->pcopy;
	px->wk = wk;
	px->headless = index > 0;
	px->fl = flows_new(&fc);
	snprintf(idx, sizeof(idx), "%u", index);
	if (cfg->metrics != NULL && n > 1)
		px->m_conns = metrics_counter_l(cfg->metrics, "amesh_worker_connections_total",
		    "Connections accepted (outbound, plaintext inbound and HBONE), by the worker "
		    "that serves them", "worker", idx);
	uv_timer_init(cfg->loop, &px->refresh);
	uv_timer_init(cfg->loop, &px->drain_timer);
	px->refresh.data = px->drain_timer.data = px;
	px->timers_open = 2;
	start_refresh(px);
	return px;
}

struct new_peer {
	const struct proxy_cfg *cfg;
	unsigned n, index;
	struct worker *wk;
	struct flows *share; /* worker 0's */
	struct proxy *out;
};

/* On the peer's own thread: its handles belong to its loop. */
static void
new_peer(void *arg)
{
	struct new_peer *np = arg;
	struct proxy_cfg c = *np->cfg;

	c.loop = worker_loop(np->wk);
	c.dns = NULL; /* the DNS proxy stays on worker 0 */
	np->out = proxy_new_one(&c, np->n, np->index, np->wk, np->share);
}

struct proxy *
proxy_new(const struct proxy_cfg *cfg)
{
	unsigned n = cfg->workers > 0 ? cfg->workers : 1;
	struct proxy *px;

	if (n > WORKER_MAX)
		n = WORKER_MAX;
	if (n > 1 && cfg->l7) {
		log_warn("%s: the L7 engine runs on one worker: workers = 1", cfg->role);
		n = 1;
	}
	px = proxy_new_one(cfg, n, 0, n > 1 ? worker_new(0, cfg->loop) : NULL, NULL);
	if (n == 1)
		return px;
	px->npeers = n - 1;
	px->peers = xcalloc(px->npeers, sizeof(*px->peers));
	for (unsigned k = 1; k < n; k++) {
		struct new_peer np = { cfg, n, k, worker_new(k, NULL), px->fl, NULL };

		worker_call(np.wk, new_peer, &np);
		np.out->front = px;
		px->peers[k - 1] = np.out;
	}
	log_info("%s: %u workers", cfg->role, n);
	return px;
}

static struct pworkload *
find(struct proxy *px, const char *name)
{
	for (struct pworkload *w = px->workloads; w != NULL; w = w->next)
		if (strcmp(w->name, name) == 0)
			return w;
	return NULL;
}

static void
unlink_workload(struct proxy *px, struct pworkload *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		px->workloads = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
	px->nworkloads--;
}

const struct pworkload *
proxy_find(struct proxy *px, const char *name)
{
	return find(px, name);
}

const char *
proxy_workload_netns(const struct pworkload *w)
{
	return w->netns_path;
}

struct peer_counters {
	struct proxy *px;
	struct flow_counters c;
};

static void
peer_counters(void *arg)
{
	struct peer_counters *pc = arg;

	flows_counters(pc->px->fl, &pc->c);
}

/* What every worker's flows counted. */
static void
all_counters(const struct proxy *px, struct flow_counters *c)
{
	flows_counters(px->fl, c);
	for (unsigned k = 0; k < px->npeers; k++) {
		struct peer_counters pc = { .px = px->peers[k] };

		worker_call(px->peers[k]->wk, peer_counters, &pc);
		c->accepted += pc.c.accepted;
		c->refused_limit += pc.c.refused_limit;
		c->outbound_hbone += pc.c.outbound_hbone;
		c->outbound_passthrough += pc.c.outbound_passthrough;
		c->inbound_hbone += pc.c.inbound_hbone;
		c->inbound_plaintext += pc.c.inbound_plaintext;
		c->denied += pc.c.denied;
		c->connect_failures += pc.c.connect_failures;
		c->inbound_l7 += pc.c.inbound_l7;
		c->outbound_l7 += pc.c.outbound_l7;
		c->outbound_external += pc.c.outbound_external;
		c->outbound_blackhole += pc.c.outbound_blackhole;
		c->waypoint_failovers += pc.c.waypoint_failovers;
		c->active += pc.c.active;
	}
}

/* A peer's workloads as counted on its thread; the names are its own, unchanged until the front
 * changes it (only the front does, from this same thread). */
struct peer_view {
	const char *name;
	uint64_t connections;
	struct hbone_pool_stats pool;
};

struct peer_views {
	struct proxy *px;
	size_t n;
	struct peer_view *v;
};

static void
peer_views(void *arg)
{
	struct peer_views *pv = arg;

	pv->v = xcalloc(pv->px->nworkloads + 1, sizeof(*pv->v));
	for (const struct pworkload *w = pv->px->workloads; w != NULL; w = w->next) {
		pv->v[pv->n].name = w->name;
		pv->v[pv->n].connections = w->connections;
		if (w->pool != NULL)
			hbone_pool_stats(w->pool, &pv->v[pv->n].pool);
		pv->n++;
	}
}

/* Adds the peers' share of workload name to v. */
static void
add_peer_views(struct proxy_workload_view *v, const struct peer_views *pv, unsigned npeers)
{
	for (unsigned k = 0; k < npeers; k++)
		for (size_t i = 0; i < pv[k].n; i++) {
			const struct peer_view *p = &pv[k].v[i];

			if (strcmp(p->name, v->name) != 0)
				continue;
			v->connections += p->connections;
			v->pool.connections += p->pool.connections;
			v->pool.streams += p->pool.streams;
			v->pool.connections_opened += p->pool.connections_opened;
			v->pool.connect_failures += p->pool.connect_failures;
			v->pool.streams_opened += p->pool.streams_opened;
			v->pool.streams_retried += p->pool.streams_retried;
			break;
		}
}

void
proxy_foreach_workload(struct proxy *px,
    void (*fn)(const struct proxy_workload_view *v, void *arg), void *arg)
{
	struct peer_views *pv = px->npeers > 0 ? xcalloc(px->npeers, sizeof(*pv)) : NULL;

	for (unsigned k = 0; k < px->npeers; k++) {
		pv[k].px = px->peers[k];
		worker_call(px->peers[k]->wk, peer_views, &pv[k]);
	}
	for (const struct pworkload *w = px->workloads; w != NULL; w = w->next) {
		struct proxy_workload_view v = {
			.name = w->name,
			.netns_path = w->netns_path,
			.spiffe_id = w->id->spiffe_id,
			.connections = w->connections,
			.l7 = w->l7,
		};

		if (w->pool != NULL)
			hbone_pool_stats(w->pool, &v.pool);
		add_peer_views(&v, pv, px->npeers);
		fn(&v, arg);
	}
	for (unsigned k = 0; k < px->npeers; k++)
		free(pv[k].v);
	free(pv);
}

struct registry *
proxy_registry(struct proxy *px)
{
	return registry_holder_get(px->cfg.reg);
}

size_t
proxy_nworkloads(const struct proxy *px)
{
	return px->nworkloads;
}

size_t
proxy_nfailed(const struct proxy *px)
{
	return px->nfailed;
}

void
proxy_get_stats(const struct proxy *px, struct proxy_stats *out)
{
	struct flow_counters c;

	all_counters(px, &c);
	memset(out, 0, sizeof(*out));
	out->accepted = c.accepted;
	out->refused_limit = c.refused_limit;
	out->outbound_hbone = c.outbound_hbone;
	out->outbound_passthrough = c.outbound_passthrough;
	out->outbound_external = c.outbound_external;
	out->outbound_blackhole = c.outbound_blackhole;
	out->waypoint_failovers = c.waypoint_failovers;
	out->inbound_hbone = c.inbound_hbone;
	out->inbound_plaintext = c.inbound_plaintext;
	out->denied = c.denied;
	out->connect_failures = c.connect_failures;
	out->inbound_l7 = c.inbound_l7;
	out->outbound_l7 = c.outbound_l7;
	out->active = c.active;
	out->workloads = px->nworkloads;
	out->failed = px->nfailed;
	out->draining = px->draining;
}

/* The pool's drain (GOAWAY, then its connections closed once their streams end). */
static void
drain_pool(struct pworkload *w)
{
	if (w->pool != NULL) {
		hbone_pool_drain(w->pool, w->drain_ms, pw_release_cb, w);
		w->pool = NULL;
	}
}

/* A sidecar's L7 engine has drained: no request of it will open a stream any more. */
static void
l7_drained(void *arg)
{
	struct pworkload *w = arg;

	drain_pool(w);
	pw_release(w);
}

/* Closes what the workload holds; each part releases it as it finishes. */
static void
shut_workload(struct pworkload *w, uint64_t drain_ms)
{
	w->drain_ms = drain_ms;
	if (w->dns != NULL) {
		dns_listener_stop(w->dns); /* releases w once closed */
		w->dns = NULL;
	}
	if (w->l7 != NULL) {
		/* The pool drains after the engine: a kept-alive client's request during the drain
		 * (answered with "Connection: close") may still need a new stream to its endpoint.
		 * So the pool's drain can take up to twice drain_ms. */
		pw_hold(w);
		waypoint_drain(w->l7, drain_ms, l7_drained, w);
	}
	for (int f = 0; f < 2; f++) {
		if (w->has_outbound[f])
			uv_close((uv_handle_t *)&w->outbound_l[f], pw_handle_closed);
		if (w->has_inbound[f])
			uv_close((uv_handle_t *)&w->inbound_l[f], pw_handle_closed);
		if (w->hbone_s[f] != NULL) {
			hbone_server_drain(w->hbone_s[f], drain_ms, pw_release_cb, w);
			w->hbone_s[f] = NULL;
		}
	}
	if (w->l7 == NULL)
		drain_pool(w);
	pw_release(w); /* the enrollment's own hold */
}

static int
unenroll_one(struct proxy *px, const char *name)
{
	struct pworkload *w = find(px, name);

	if (w == NULL)
		return AMESH_ERR_NOTFOUND;
	if (!px->headless)
		log_info("workload %s: unenrolled", name);
	unlink_workload(px, w);
	/* The namespace is going away: do not wait long for its connections. */
	shut_workload(w, 1000);
	return 0;
}

/* Opens a listener of the given family and port inside the workload's namespace. */
static int
listen_in(uv_loop_t *loop, struct pworkload *w, int family, uint16_t port, uv_tcp_t *h, uv_connection_cb cb)
{
	struct sockaddr_storage ss;
	int fd, r;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		s6->sin6_addr = in6addr_any;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
	}
	fd = netns_listen(w->nsfd, (struct sockaddr *)&ss, 511);
	if (fd < 0)
		return fd;
	r = net_listen_fd(loop, h, fd, 511, cb); /* takes fd, even when it fails */
	h->data = w;
	if (r != 0) {
		/* The handle is initialised: it must be closed, and it holds the workload. */
		w->open_handles++;
		uv_close((uv_handle_t *)h, pw_handle_closed);
		return r;
	}
	w->open_handles++;
	return 0;
}

static struct pfailed *
find_failed(struct proxy *px, const char *name)
{
	for (struct pfailed *f = px->failed; f != NULL; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

static void
failed_view(const struct pfailed *f, struct proxy_failed_view *v)
{
	v->name = f->name;
	v->netns_path = f->netns_path;
	v->why = f->why;
	v->nsid = f->nsid;
}

bool
proxy_find_failed(struct proxy *px, const char *name, struct proxy_failed_view *out)
{
	const struct pfailed *f = find_failed(px, name);

	if (f != NULL && out != NULL)
		failed_view(f, out);
	return f != NULL;
}

void
proxy_foreach_failed(struct proxy *px,
    void (*fn)(const struct proxy_failed_view *v, void *arg), void *arg)
{
	for (const struct pfailed *f = px->failed; f != NULL; f = f->next) {
		struct proxy_failed_view v;

		failed_view(f, &v);
		fn(&v, arg);
	}
}

bool
proxy_fail(struct proxy *px, const char *name, const char *path, const struct netns_id *nsid,
    const char *why)
{
	struct pfailed *f = find_failed(px, name);
	bool news = f == NULL || strcmp(f->why, why) != 0 || strcmp(f->netns_path, path) != 0;

	if (f == NULL) {
		if (px->nfailed >= PROXY_MAX_WORKLOADS)
			return false; /* bounded: the record stays on disk for the next start */
		f = xcalloc(1, sizeof(*f));
		f->name = xstrdup(name);
		f->netns_path = xstrdup(path);
		f->next = px->failed;
		px->failed = f;
		px->nfailed++;
	} else if (strcmp(f->netns_path, path) != 0) {
		free(f->netns_path);
		f->netns_path = xstrdup(path);
	}
	snprintf(f->why, sizeof(f->why), "%s", why);
	if (nsid != NULL && nsid->ino != 0)
		f->nsid = *nsid;
	return news;
}

void
proxy_unfail(struct proxy *px, const char *name)
{
	for (struct pfailed **pp = &px->failed; *pp != NULL; pp = &(*pp)->next) {
		struct pfailed *f = *pp;

		if (strcmp(f->name, name) != 0)
			continue;
		*pp = f->next;
		px->nfailed--;
		free(f->name);
		free(f->netns_path);
		free(f);
		return;
	}
}

/*
 * Whether enrolling name in namespace nsid would take something from another workload: the
 * namespace is another workload's (served or failed), or name still lives in a namespace that
 * exists (old, or its failed entry). Returns 0 or AMESH_ERR_EXISTS with why.
 */
static int
ns_conflict(struct proxy *px, const char *name, const struct pworkload *old,
    const struct netns_id *nsid, const char *path, char *why, size_t whylen)
{
	const struct pfailed *mine = NULL;

	for (const struct pworkload *w = px->workloads; w != NULL; w = w->next)
		if (w != old && netns_id_eq(&w->nsid, nsid)) {
			snprintf(why, whylen, "namespace %s is enrolled as workload %s (netns %s); "
			    "a namespace serves one workload", path, w->name, w->netns_path);
			return AMESH_ERR_EXISTS;
		}
	for (const struct pfailed *f = px->failed; f != NULL; f = f->next) {
		if (strcmp(f->name, name) == 0)
			mine = f;
		else if (netns_id_eq(&f->nsid, nsid)) {
			snprintf(why, whylen, "namespace %s belongs to workload %s, recorded but not "
			    "served (%s)", path, f->name, f->why);
			return AMESH_ERR_EXISTS;
		}
	}
	if (old != NULL && netns_path_is(old->netns_path, &old->nsid)) {
		snprintf(why, whylen, "workload %s is enrolled in namespace %s, which still exists: "
		    "amesh cni del --workload %s first", name, old->netns_path, name);
		return AMESH_ERR_EXISTS;
	}
	if (old == NULL && mine != NULL && !netns_id_eq(&mine->nsid, nsid) &&
	    netns_path_is(mine->netns_path, &mine->nsid)) {
		snprintf(why, whylen, "workload %s is recorded in namespace %s, which still exists: "
		    "amesh cni del --workload %s first", name, mine->netns_path, name);
		return AMESH_ERR_EXISTS;
	}
	return 0;
}

static void on_outbound_l(uv_stream_t *l, int status);
static void on_inbound_l(uv_stream_t *l, int status);
static bool on_hbone_l(struct hbone_server *srv, uv_stream_t *l);

/* proxy_enroll on one worker's proxy; a headless one opens no listener. */
static int
enroll_one(struct proxy *px, const char *name, int nsfd, const char *path, char *why,
    size_t whylen)
{
	struct registry *reg = registry_holder_get(px->cfg.reg);
	const struct reg_workload *wl;
	struct identity *id = NULL;
	struct pworkload *w = NULL, *old;
	struct netns_id nsid = { 0, 0 };
	bool fam[2] = { false, false };
	int r = AMESH_ERR_INVALID;

	if (reg == NULL) {
		snprintf(why, whylen, "no registry loaded");
		goto fail;
	}
	wl = registry_find(reg, REG_WORKLOAD, name);
	if (wl == NULL) {
		snprintf(why, whylen, "workload %s is not in the registry", name);
		r = AMESH_ERR_NOTFOUND;
		goto fail;
	}
	if (strcmp(wl->node, px->cfg.conf->mesh.node) != 0) {
		snprintf(why, whylen, "workload %s runs on node %s, this is node %s", name, wl->node,
		    px->cfg.conf->mesh.node);
		goto fail;
	}
	if (wl->protocol != REG_PROTO_HBONE) {
		snprintf(why, whylen, "workload %s has protocol tcp: it is not captured", name);
		goto fail;
	}
	if (nsfd != NETNS_SELF && (r = netns_id_of_fd(nsfd, &nsid)) != 0) {
		snprintf(why, whylen, "namespace %s: %s", path, strerror(-r));
		goto fail;
	}
	old = find(px, name);
	if (old != NULL && netns_id_eq(&old->nsid, &nsid)) {
		/* Already served there: a repeated add changes nothing. */
		log_debug("workload %s: enrolled in %s already", name, old->netns_path);
		r = 0;
		goto fail;
	}
	if ((r = ns_conflict(px, name, old, &nsid, path, why, whylen)) != 0)
		goto fail;
	r = AMESH_ERR_INVALID;
	id = identity_store_get_sa(px->cfg.ids, wl->namespace, wl->service_account);
	if (id == NULL) {
		char sid[SPIFFE_ID_MAX];

		if (spiffe_format(sid, sizeof(sid), px->cfg.conf->mesh.trust_domain, wl->namespace,
		    wl->service_account) != 0)
			snprintf(sid, sizeof(sid), "(too long)");
		snprintf(why, whylen, "no certificate for %s in %s: issue it with amesh ca issue "
		    "--dir CA_DIR --namespace %s --service-account %s --out %s", sid,
		    px->cfg.conf->identity.cert_dir, wl->namespace, wl->service_account,
		    px->cfg.conf->identity.cert_dir);
		goto fail;
	}
	if (px->nworkloads - (old != NULL ? 1 : 0) >= PROXY_MAX_WORKLOADS) {
		snprintf(why, whylen, "%d workloads enrolled already", PROXY_MAX_WORKLOADS);
		goto fail;
	}
	for (size_t i = 0; i < wl->addresses.n; i++)
		fam[wl->addresses.v[i].family == AF_INET6] = true;
	w = pw_new(name, path, wl->namespace, wl->service_account); /* the enrollment's hold */
	if (w == NULL) {
		snprintf(why, whylen, "out of memory");
		r = AMESH_ERR_NOMEM;
		goto fail;
	}
	w->fl = px->fl;
	w->on_free = workload_freed;
	w->on_free_arg = px;
	px->alive++;
	w->nsid = nsid;
	w->nsfd = nsfd;
	nsfd = -1;
	w->id = id;
	id = NULL;
	for (int f = 0; f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;
		struct sockaddr_storage ss;
		int fd = -1;

		if (!fam[f])
			continue;
		if (px->headless)
			goto hbone;
		r = listen_in(px->cfg.loop, w, family, px->cfg.pc->outbound_port, &w->outbound_l[f],
		    px->npeers > 0 ? on_outbound_l : flows_on_outbound);
		if (r != 0) {
			snprintf(why, whylen, "outbound listener on port %u: %s", px->cfg.pc->outbound_port,
			    amesh_strerror(r));
			goto fail_open;
		}
		w->has_outbound[f] = true;
		r = listen_in(px->cfg.loop, w, family, px->cfg.pc->inbound_plaintext_port,
		    &w->inbound_l[f], px->npeers > 0 ? on_inbound_l : flows_on_inbound_plain);
		if (r != 0) {
			snprintf(why, whylen, "inbound listener on port %u: %s",
			    px->cfg.pc->inbound_plaintext_port, amesh_strerror(r));
			goto fail_open;
		}
		w->has_inbound[f] = true;
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = (sa_family_t)family;
		((struct sockaddr_in *)&ss)->sin_port = htons(px->cfg.pc->hbone_port);
		if (family == AF_INET6)
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(px->cfg.pc->hbone_port);
		fd = netns_listen(w->nsfd, (struct sockaddr *)&ss, 511);
hbone:
		if (px->headless)
			fd = -1; /* the front hands it connections (hbone_server_adopt) */
		else if (fd < 0) {
			r = fd;
			snprintf(why, whylen, "HBONE listener on port %u: %s", px->cfg.pc->hbone_port,
			    amesh_strerror(r));
			goto fail_open;
		}
		{
			struct hbone_server_cfg sc = {
				.fd = fd,
				.id = w->id,
				.trust_domain = px->cfg.conf->mesh.trust_domain,
				.handshake_timeout_ms = px->cfg.pc->handshake_timeout,
				.max_connections = px->cfg.pc->max_connections,
				.max_streams = (uint32_t)px->cfg.pc->pool_max_streams,
				.on_request = flows_on_hbone_request,
				.dispatch = px->npeers > 0 ? on_hbone_l : NULL,
				.user = w,
			};

			r = hbone_server_listen(px->cfg.loop, &sc, &w->hbone_s[f]);
			if (r != 0) {
				if (fd >= 0)
					close(fd); /* a failed listen leaves the fd to us (hbone.h) */
				snprintf(why, whylen, "HBONE listener: %s", amesh_strerror(r));
				goto fail_open;
			}
			w->open_handles++;
		}
	}
	{
		struct hbone_pool_cfg pc = {
			.max_streams = (uint32_t)px->cfg.pc->pool_max_streams,
			.idle_timeout_ms = px->cfg.pc->pool_idle_timeout,
			.connect_timeout_ms = px->cfg.pc->connect_timeout,
			.ping_interval_ms = 10000,
			.ping_timeout_ms = 20000,
			.max_connections = 4096,
			.socket_fn = pw_socket,
			.socket_arg = w,
		};

		r = hbone_pool_new(px->cfg.loop, &pc, &w->pool);
		if (r != 0) {
			snprintf(why, whylen, "out of memory");
			goto fail_open;
		}
		w->open_handles++;
	}
	if (px->cfg.dns != NULL &&
	    (r = pw_dns_listen(w, px->cfg.dns, px->cfg.pc->dns_port, fam)) != 0) {
		snprintf(why, whylen, "DNS proxy on port %u: %s", px->cfg.pc->dns_port,
		    amesh_strerror(r));
		goto fail_open;
	}
	if (px->cfg.l7 && (r = start_l7(px, w)) != 0) {
		snprintf(why, whylen, "L7 engine: %s", amesh_strerror(r));
		goto fail_open;
	}
	if (old != NULL) {
		/* Its old namespace is gone (ns_conflict checked): the new listeners are up, so
		 * the old ones can go. */
		if (!px->headless)
			log_info("workload %s: moves from %s (gone) to %s", name, old->netns_path,
			    path);
		unenroll_one(px, name);
	}
	w->next = px->workloads;
	if (px->workloads != NULL)
		px->workloads->prev = w;
	px->workloads = w;
	px->nworkloads++;
	proxy_unfail(px, name);
	if (!px->headless)
		log_info("workload %s: enrolled (namespace %s, %s)", name, path, w->id->spiffe_id);
	registry_unref(reg);
	return 0;
fail_open:
	shut_workload(w, 0);
	registry_unref(reg);
	return r < 0 ? r : AMESH_ERR_INVALID;
fail:
	identity_unref(id);
	if (nsfd >= 0)
		close(nsfd);
	registry_unref(reg);
	return r;
}

static void
on_refresh(uv_timer_t *t)
{
	struct proxy *px = t->data;

	for (struct pworkload *w = px->workloads; w != NULL; w = w->next) {
		struct identity *id = identity_store_get_sa(px->cfg.ids, w->ns, w->sa);

		/* A reload makes new objects for unchanged files: only a new certificate counts. */
		if (id == NULL || id == w->id || (id->chain.raw.len == w->id->chain.raw.len &&
		    memcmp(id->chain.raw.p, w->id->chain.raw.p, id->chain.raw.len) == 0)) {
			identity_unref(id);
			continue;
		}
		if (!px->headless)
			log_info("workload %s: new certificate (valid until %ld)", w->name,
			    (long)id->not_after);
		for (int fam = 0; fam < 2; fam++)
			if (w->hbone_s[fam] != NULL)
				hbone_server_set_identity(w->hbone_s[fam], id);
		identity_unref(w->id);
		w->id = id;
	}
}

/* Checks the certificates of enrolled workloads every second (rotation). */
static void
start_refresh(struct proxy *px)
{
	uv_timer_start(&px->refresh, on_refresh, 1000, 1000);
}

static void
drain_timer_fired(uv_timer_t *t)
{
	struct proxy *px = t->data;

	if (!px->headless)
		log_info("%s: drain timeout: resetting the remaining connections", px->cfg.role);
	flows_abort_all(px->fl);
	for (struct pworkload *w = px->l7_ws; w != NULL; w = w->l7_next)
		waypoint_abort_all(w->l7);
}

static void
timer_closed(uv_handle_t *h)
{
	struct proxy *px = h->data;

	if (--px->timers_open == 0 && px->on_drained != NULL) {
		void (*done)(void *) = px->on_drained;

		px->on_drained = NULL;
		done(px->drained_arg);
	}
}

/* Called when a workload is freed or the last flow ends: finishes a drain when all is gone. */
static void
check_drained(struct proxy *px)
{
	if (!px->draining || px->alive > 0 || !flows_idle(px->fl) ||
	    uv_is_closing((uv_handle_t *)&px->refresh))
		return;
	uv_timer_stop(&px->refresh);
	uv_timer_stop(&px->drain_timer);
	uv_close((uv_handle_t *)&px->refresh, timer_closed);
	uv_close((uv_handle_t *)&px->drain_timer, timer_closed);
}

static void
drain_one(struct proxy *px, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	if (px->draining)
		return;
	px->draining = true;
	px->on_drained = done;
	px->drained_arg = arg;
	if (!px->headless)
		log_info("%s: draining %zu workloads for up to %llu ms", px->cfg.role,
		    px->nworkloads, (unsigned long long)timeout_ms);
	flows_stop_accepting(px->fl);
	uv_timer_stop(&px->refresh);
	uv_timer_start(&px->drain_timer, drain_timer_fired, timeout_ms, 0);
	while (px->workloads != NULL) {
		struct pworkload *w = px->workloads;

		unlink_workload(px, w);
		shut_workload(w, timeout_ms);
	}
	check_drained(px);
}

static void
free_one(struct proxy *px)
{
	while (px->failed != NULL)
		proxy_unfail(px, px->failed->name);
	flows_free(px->fl);
	free(px);
}

static void
peer_free(void *arg)
{
	free_one(arg);
}

void
proxy_free(struct proxy *px)
{
	if (px == NULL)
		return;
	for (unsigned k = 0; k < px->npeers; k++) {
		struct worker *wk = px->peers[k]->wk;

		worker_call(wk, peer_free, px->peers[k]);
		worker_stop(wk); /* its loop ends: everything of it was closed by the drain */
	}
	free(px->peers);
	worker_stop(px->wk);
	free_one(px);
}

/* --- workers: the front (worker 0) hands connections to its peers and fans control out --- */

enum handoff_kind { HO_OUT, HO_PLAIN, HO_HBONE };

/* A connection accepted by the front for a peer (or for itself when the peer's queue is full). */
struct handoff {
	struct proxy *to;
	char *name;           /* the workload, found again by name in the peer's proxy */
	struct netns_id nsid; /* and namespace: a workload that moved meanwhile does not take it */
	enum handoff_kind kind;
	int fam, fd;
};

/* Closes fd with a reset, as an over-limit accept is. */
static void
reset_close(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* On the receiving worker's thread. */
static void
adopt(void *arg)
{
	struct handoff *h = arg;
	struct proxy *px = h->to;
	struct pworkload *w = find(px, h->name);

	if (w == NULL || px->draining || (h->nsid.ino != 0 && !netns_id_eq(&w->nsid, &h->nsid))) {
		reset_close(h->fd);
	} else {
		metrics_counter_add(px->m_conns, 1);
		switch (h->kind) {
		case HO_OUT:
			flows_adopt_outbound(w, h->fd);
			break;
		case HO_PLAIN:
			flows_adopt_inbound_plain(w, h->fd);
			break;
		case HO_HBONE:
			if (w->hbone_s[h->fam] != NULL)
				hbone_server_adopt(w->hbone_s[h->fam], h->fd);
			else
				reset_close(h->fd);
			break;
		}
	}
	free(h->name);
	free(h);
}

static void
free_tcp(uv_handle_t *h)
{
	free(h);
}

/*
 * Round robin over the workers, the front included: hands the connection pending on l to the
 * next one. false: the caller serves it (its turn, or no memory to hand it over).
 */
static bool
hand_off(struct proxy *px, struct pworkload *w, uv_stream_t *l, enum handoff_kind kind, int fam)
{
	unsigned k = px->rr[kind]++ % (px->npeers + 1);
	struct handoff *h;
	uv_tcp_t *t;
	int fd = -1;

	if (k == 0 || px->draining)
		return false;
	h = calloc(1, sizeof(*h));
	t = malloc(sizeof(*t));
	if (h == NULL || t == NULL || (h->name = strdup(w->name)) == NULL) {
		if (h != NULL)
			free(h->name);
		free(h);
		free(t);
		return false;
	}
	/* The connection leaves libuv's hands as a descriptor of its own. */
	uv_tcp_init(px->cfg.loop, t);
	if (uv_accept(l, (uv_stream_t *)t) == 0 && uv_fileno((uv_handle_t *)t, &fd) == 0)
		fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	else
		fd = -1;
	uv_close((uv_handle_t *)t, free_tcp);
	if (fd < 0) {
		free(h->name);
		free(h);
		return true; /* lost before it was ours: closed with the handle */
	}
	h->to = px->peers[k - 1];
	h->nsid = w->nsid;
	h->kind = kind;
	h->fam = fam;
	h->fd = fd;
	if (!worker_post(h->to->wk, adopt, h)) {
		/* That worker's queue is full (WORKER_QUEUE_MAX): serve it here. */
		h->to = px;
		adopt(h);
	}
	return true;
}

static void
on_outbound_l(uv_stream_t *l, int status)
{
	struct pworkload *w = l->data;
	struct proxy *px = w->on_free_arg;

	if (status == 0 && hand_off(px, w, l, HO_OUT, 0))
		return;
	if (status == 0)
		metrics_counter_add(px->m_conns, 1);
	flows_on_outbound(l, status);
}

static void
on_inbound_l(uv_stream_t *l, int status)
{
	struct pworkload *w = l->data;
	struct proxy *px = w->on_free_arg;

	if (status == 0 && hand_off(px, w, l, HO_PLAIN, 0))
		return;
	if (status == 0)
		metrics_counter_add(px->m_conns, 1);
	flows_on_inbound_plain(l, status);
}

static bool
on_hbone_l(struct hbone_server *srv, uv_stream_t *l)
{
	struct pworkload *w = hbone_server_user(srv);
	struct proxy *px = w->on_free_arg;

	if (hand_off(px, w, l, HO_HBONE, srv == w->hbone_s[1]))
		return true;
	metrics_counter_add(px->m_conns, 1);
	return false;
}

struct peer_enroll {
	struct proxy *px;
	const char *name, *path;
	int nsfd, r;
	char why[512];
};

static void
peer_enroll(void *arg)
{
	struct peer_enroll *e = arg;

	e->r = enroll_one(e->px, e->name, e->nsfd, e->path, e->why, sizeof(e->why));
}

struct peer_unenroll {
	struct proxy *px;
	const char *name;
};

static void
peer_unenroll(void *arg)
{
	struct peer_unenroll *u = arg;

	unenroll_one(u->px, u->name);
}

static void
unenroll_peers(struct proxy *px, const char *name, unsigned upto)
{
	for (unsigned k = 0; k < upto; k++) {
		struct peer_unenroll u = { px->peers[k], name };

		worker_call(px->peers[k]->wk, peer_unenroll, &u);
	}
}

int
proxy_enroll(struct proxy *px, const char *name, int nsfd, const char *path, char *why,
    size_t whylen)
{
	const struct pworkload *before = find(px, name);
	int fds[WORKER_MAX], r;
	unsigned k;

	if (px->npeers == 0)
		return enroll_one(px, name, nsfd, path, why, whylen);
	/* Each worker's proxy takes a namespace descriptor of its own. */
	for (k = 0; k < px->npeers; k++) {
		fds[k] = nsfd == NETNS_SELF ? NETNS_SELF : fcntl(nsfd, F_DUPFD_CLOEXEC, 0);
		if (fds[k] < 0 && nsfd != NETNS_SELF) {
			r = -errno;
			snprintf(why, whylen, "namespace %s: %s", path, strerror(-r));
			while (k-- > 0)
				close(fds[k]);
			close(nsfd);
			return r;
		}
	}
	r = enroll_one(px, name, nsfd, path, why, whylen);
	if (r != 0 || find(px, name) == before) {
		/* Refused, or served there already: the peers have nothing to do. */
		for (k = 0; k < px->npeers && nsfd != NETNS_SELF; k++)
			close(fds[k]);
		return r;
	}
	for (k = 0; k < px->npeers; k++) {
		struct peer_enroll e = { px->peers[k], name, path, fds[k], 0, "" };

		worker_call(px->peers[k]->wk, peer_enroll, &e);
		if (e.r != 0) {
			snprintf(why, whylen, "worker %u: %s", k + 1, e.why);
			for (unsigned j = k + 1; j < px->npeers && nsfd != NETNS_SELF; j++)
				close(fds[j]);
			unenroll_peers(px, name, k);
			unenroll_one(px, name);
			return e.r;
		}
	}
	return 0;
}

int
proxy_unenroll(struct proxy *px, const char *name)
{
	int r = unenroll_one(px, name);

	if (r == 0)
		unenroll_peers(px, name, px->npeers);
	return r;
}

static void
front_finish(struct proxy *px)
{
	void (*done)(void *);

	if (!px->self_drained || px->peers_left > 0 || px->user_done == NULL)
		return;
	done = px->user_done;
	px->user_done = NULL;
	/* Nothing is posted to worker 0 any more: its loop may end. */
	worker_release_main(px->wk);
	done(px->user_arg);
}

static void
front_self_drained(void *arg)
{
	struct proxy *px = arg;

	px->self_drained = true;
	front_finish(px);
}

/* On worker 0: a peer is drained. */
static void
front_peer_drained(void *arg)
{
	struct proxy *px = arg;

	px->peers_left--;
	front_finish(px);
}

/* On the peer's thread. */
static void
peer_drained(void *arg)
{
	struct proxy *peer = arg;

	worker_post_ctl(peer->front->wk, front_peer_drained, peer->front);
}

struct peer_drain {
	struct proxy *peer;
	uint64_t timeout_ms;
};

static void
peer_drain(void *arg)
{
	struct peer_drain *d = arg;

	drain_one(d->peer, d->timeout_ms, peer_drained, d->peer);
	free(d);
}

void
proxy_drain(struct proxy *px, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	if (px->npeers == 0) {
		drain_one(px, timeout_ms, done, arg);
		return;
	}
	if (px->draining)
		return;
	px->user_done = done;
	px->user_arg = arg;
	px->peers_left = px->npeers;
	for (unsigned k = 0; k < px->npeers; k++) {
		struct peer_drain *d = xmalloc(sizeof(*d));

		d->peer = px->peers[k];
		d->timeout_ms = timeout_ms;
		worker_post_ctl(px->peers[k]->wk, peer_drain, d);
	}
	drain_one(px, timeout_ms, front_self_drained, px);
}
