/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L7 engine's lifecycle (waypoint.h): start as a waypoint (its HBONE server and pool) or embed
 * in a sidecar, the once-a-second refresh (idle tunnels, a renewed certificate), drain, free,
 * stats and config dumps; with [waypoint] workers, one engine per worker loop (the front hands the
 * others their connections). Tunnels are the core's (core.c); the engine hands them over and
 * counts them.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "core/worker.h"
#include "l7/tunnel.h"
#include "net/lb.h"
#include "net/listen.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"
#include "tls/identity.h"

static void drain_idle_check(struct waypoint *wp);

static void
on_request(struct hbone_server *srv, struct hbone_stream *s, const struct hbone_request *req)
{
	l7_accept_hbone(hbone_server_user(srv), s, req);
}

void
waypoint_abort_all(struct waypoint *wp)
{
	struct tun *next;

	for (struct tun *t = wp->tuns; t != NULL; t = next) {
		next = t->next; /* (a tunnel is freed on the loop, never in here) */
		wp_tun_abort(t);
	}
}

size_t
waypoint_active(const struct waypoint *wp)
{
	return wp->st.active;
}

/* --- lifecycle --- */

static void
on_refresh(uv_timer_t *h)
{
	struct waypoint *wp = h->data;
	struct identity *id;
	uint64_t now = uv_now(wp->loop);
	struct tun *next;

	lb_sweep(wp->lb, now); /* ejections that ended, for the gauge */
	/* Idle tunnels ([waypoint] or [sidecar] idle_timeout), as the L4 relay closes its own. */
	for (struct tun *t = wp->tuns; wp->idle_ms > 0 && t != NULL; t = next) {
		next = t->next; /* (a tunnel is freed on the loop, never in here) */
		if (t->state == TUN_OPEN && now - t->last >= wp->idle_ms) {
			log_debug("%s: %s idle for %llu ms: reset", wp->role, t->authority,
			    (unsigned long long)(now - t->last));
			t->flags = "SI";
			wp_tun_abort(t);
		}
	}
	id = identity_store_get_sa(wp->ids, wp->ns, wp->sa);
	if (id == NULL || id == wp->id || (id->chain.raw.len == wp->id->chain.raw.len &&
	    memcmp(id->chain.raw.p, wp->id->chain.raw.p, id->chain.raw.len) == 0)) {
		identity_unref(id);
		return;
	}
	if (wp->front == NULL) /* (every worker's engine sees it) */
		log_info("%s: new certificate for %s", wp->role, id->spiffe_id);
	if (wp->srv != NULL)
		hbone_server_set_identity(wp->srv, id);
	identity_unref(wp->id);
	wp->id = id;
}

/* The pool's sockets leave from the waypoint's own address (its registry address), so the
 * destination ztunnel knows the peer as the waypoint and honours its forwarded header. */
static int
wp_socket(void *arg, int family)
{
	struct waypoint *wp = arg;
	const struct sockaddr_storage *ha = &wp->conf->waypoint.hbone_address;
	struct sockaddr_storage src;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	if (ha->ss_family != family)
		return fd;
	memcpy(&src, ha, sizeof(src));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&src;

		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			return fd;
		s4->sin_port = 0;
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;

		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			return fd;
		s6->sin6_port = 0;
	}
	setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&src, family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6)) != 0)
		log_debug("waypoint: cannot send from its own address: %s", strerror(errno));
	return fd;
}

/* An engine with its parts given, nothing started; NULL when out of memory. lb: a balancer to
 * share (another worker's), else NULL for one of its own. */
static struct waypoint *
engine_new(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, struct lb *lb)
{
	struct waypoint *wp = calloc(1, sizeof(*wp));

	if (wp == NULL)
		return NULL;
	if (lb != NULL)
		wp->lb = lb_ref(lb);
	else if (lb_new(&wp->lb) != 0) {
		free(wp);
		return NULL;
	} else
		lb_set_metrics(wp->lb, metrics);
	wp->loop = loop;
	wp->conf = conf;
	wp->reg = reg;
	wp->ids = ids;
	wp->metrics = metrics;
	wp->gone = drain_idle_check;
	return wp;
}

static void
engine_free(struct waypoint *wp)
{
	identity_unref(wp->id);
	free(wp->ns);
	free(wp->sa);
	lb_free(wp->lb);
	free(wp);
}

static bool wp_dispatch(struct hbone_server *srv, uv_stream_t *l);

/* The engine's HBONE server (on addr, or adopt-only when NULL), its pool and its refresh timer.
 * shared: the count of connections its server shares with the other workers' (NULL: alone). */
static int
engine_serve(struct waypoint *wp, const struct sockaddr *addr, size_t *shared)
{
	const struct amesh_conf *conf = wp->conf;
	struct hbone_server_cfg sc = {
		.addr = addr,
		.fd = -1,
		.id = wp->id,
		.trust_domain = conf->mesh.trust_domain,
		.handshake_timeout_ms = conf->waypoint.handshake_timeout,
		.max_connections = conf->waypoint.max_connections,
		.shared_conns = shared,
		.max_streams = (uint32_t)conf->waypoint.pool_max_streams,
		.on_request = on_request,
		.dispatch = shared != NULL && addr != NULL ? wp_dispatch : NULL,
		.user = wp,
	};
	struct hbone_pool_cfg pc = {
		.max_streams = (uint32_t)conf->waypoint.pool_max_streams,
		.idle_timeout_ms = conf->waypoint.pool_idle_timeout,
		.connect_timeout_ms = conf->waypoint.connect_timeout,
		.ping_interval_ms = 10000,
		.ping_timeout_ms = 20000,
		.max_connections = 4096,
		.socket_fn = wp_socket,
		.socket_arg = wp,
	};
	int rc = hbone_server_listen(wp->loop, &sc, &wp->srv);

	if (rc != 0)
		return rc;
	if ((rc = hbone_pool_new(wp->loop, &pc, &wp->pool)) != 0) {
		hbone_server_drain(wp->srv, 0, NULL, NULL);
		wp->srv = NULL;
		return rc;
	}
	uv_timer_init(wp->loop, &wp->refresh);
	wp->refresh.data = wp;
	uv_timer_start(&wp->refresh, on_refresh, 1000, 1000);
	return 0;
}

/* Per-worker connections, for operators (amesh-waypoint(8) WORKERS). */
static void
engine_count_worker(struct waypoint *wp)
{
	char idx[16];

	snprintf(idx, sizeof(idx), "%u", wp->index);
	wp->m_conns = metrics_counter_l(wp->metrics, "amesh_worker_connections_total",
	    "HBONE connections accepted, by the worker that serves them", "worker", idx);
}

struct new_peer {
	struct waypoint *front;
	struct worker *wk;
	unsigned index;
	struct waypoint *out;
};

/* On the peer's own thread: its handles belong to its loop. Startup: aborts when out of memory. */
static void
new_peer(void *arg)
{
	struct new_peer *np = arg;
	struct waypoint *f = np->front;
	struct waypoint *wp = engine_new(worker_loop(np->wk), f->conf, f->reg, f->ids, f->metrics,
	    f->lb);
	int rc;

	if (wp == NULL)
		fatalx("waypoint: worker %u: out of memory", np->index);
	wp->role = f->role;
	wp->idle_ms = f->idle_ms;
	wp->detect_ms = f->detect_ms;
	wp->header_ms = f->header_ms;
	wp->ns = xstrdup(f->ns);
	wp->sa = xstrdup(f->sa);
	wp->id = identity_ref(f->id);
	wp->front = f;
	wp->active_shared = &f->active_all;
	wp->wk = np->wk;
	wp->index = np->index;
	if ((rc = engine_serve(wp, NULL, &f->conns)) != 0)
		fatalx("waypoint: worker %u: %s", np->index, amesh_strerror(rc));
	engine_count_worker(wp);
	np->out = wp;
}

/* Worker 0 is wp's loop; workers 1..n-1 get a thread and an engine each. */
static void
start_peers(struct waypoint *wp, unsigned n)
{
	wp->wk = worker_new(0, wp->loop);
	wp->active_all = wp->st.active; /* (none yet: the loop has not run) */
	wp->active_shared = &wp->active_all;
	engine_count_worker(wp);
	wp->peers = xcalloc(n - 1, sizeof(*wp->peers));
	for (unsigned k = 1; k < n; k++) {
		struct new_peer np = { wp, worker_new(k, NULL), k, NULL };

		worker_call(np.wk, new_peer, &np);
		wp->peers[wp->npeers++] = np.out;
	}
	log_info("waypoint: %u workers", n);
}

int
waypoint_start(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, unsigned workers, struct waypoint **out)
{
	struct registry *r = registry_holder_get(reg);
	const struct reg_waypoint *wr = r ? registry_find(r, REG_WAYPOINT, conf->waypoint.name) : NULL;
	struct waypoint *wp;
	char a[80];
	int rc;

	*out = NULL;
	if (workers > WORKER_MAX)
		workers = WORKER_MAX;
	if (wr == NULL) {
		log_error("waypoint: [waypoint] name \"%s\" is not defined in the registry %s",
		    conf->waypoint.name, conf->mesh.registry);
		registry_unref(r);
		return AMESH_ERR_NOTFOUND;
	}
	wp = engine_new(loop, conf, reg, ids, metrics, NULL);
	if (wp == NULL) {
		registry_unref(r);
		return AMESH_ERR_NOMEM;
	}
	wp->role = "waypoint";
	wp->idle_ms = conf->waypoint.idle_timeout;
	wp->detect_ms = conf->waypoint.protocol_detection_timeout;
	wp->header_ms = conf->waypoint.request_header_timeout;
	wp->ns = strdup(wr->namespace);
	wp->sa = strdup(wr->service_account);
	registry_unref(r);
	wp->id = identity_store_get_sa(ids, wp->ns, wp->sa);
	if (wp->id == NULL) {
		char sid[SPIFFE_ID_MAX];

		if (spiffe_format(sid, sizeof(sid), conf->mesh.trust_domain, wp->ns, wp->sa) != 0)
			snprintf(sid, sizeof(sid), "(too long)");
		log_error("waypoint: no certificate for %s in %s (issue it with amesh ca issue --dir "
		    "CA_DIR --namespace %s --service-account %s --out %s)", sid,
		    conf->identity.cert_dir, wp->ns, wp->sa, conf->identity.cert_dir);
		engine_free(wp);
		return AMESH_ERR_NOTFOUND;
	}
	/* With workers, the count of connections is the whole waypoint's (max_connections). */
	rc = engine_serve(wp, (const struct sockaddr *)&conf->waypoint.hbone_address,
	    workers > 1 ? &wp->conns : NULL);
	if (rc != 0) {
		struct ip_addr ip;
		char ips[INET6_ADDRSTRLEN], hint[256] = "";

		/* The registry address is the waypoint's own, not its node's: say how to add it. */
		ip_from_sockaddr(&conf->waypoint.hbone_address, &ip, NULL);
		if (rc == UV_EADDRNOTAVAIL)
			snprintf(hint, sizeof(hint), "; %s is not an address of this host: add it "
			    "where the ztunnels reach it (ip addr add %s/%d dev IFACE), or change "
			    "[waypoint] hbone_address", ip_str(&ip, ips, sizeof(ips)), ips,
			    ip.family == AF_INET6 ? 128 : 32);
		else if (rc == UV_EADDRINUSE)
			snprintf(hint, sizeof(hint), "; another process listens there (each waypoint "
			    "of a host needs its own [waypoint] hbone_address)");
		log_error("waypoint: cannot listen on %s: %s%s",
		    sockaddr_str(&conf->waypoint.hbone_address, a, sizeof(a)), amesh_strerror(rc),
		    hint);
		engine_free(wp);
		return rc;
	}
	log_info("waypoint: %s (%s) on %s", conf->waypoint.name, wp->id->spiffe_id,
	    sockaddr_str(&conf->waypoint.hbone_address, a, sizeof(a)));
	if (workers > 1)
		start_peers(wp, workers);
	*out = wp;
	return 0;
}

int
waypoint_embed(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, const struct l7_host *host,
    struct waypoint **out)
{
	struct waypoint *wp = engine_new(loop, conf, reg, ids, metrics, NULL);

	*out = NULL;
	if (wp == NULL)
		return AMESH_ERR_NOMEM;
	wp->embedded = true;
	wp->host = *host;
	wp->role = host->role;
	wp->idle_ms = host->idle_timeout_ms;
	wp->detect_ms = host->detect_ms;
	wp->header_ms = host->header_ms;
	wp->pool = host->pool;
	wp->ns = strdup(host->ns);
	wp->sa = strdup(host->sa);
	wp->id = identity_store_get_sa(ids, host->ns, host->sa);
	if (wp->ns == NULL || wp->sa == NULL || wp->id == NULL) {
		waypoint_free(wp);
		return AMESH_ERR_NOTFOUND;
	}
	uv_timer_init(loop, &wp->refresh);
	wp->refresh.data = wp;
	uv_timer_start(&wp->refresh, on_refresh, 1000, 1000);
	*out = wp;
	return 0;
}

/* What the pool is given to close once the tunnels are gone: streams still open by then are
 * mirrors (bounded by their own timeouts) or leftovers the drain deadline already reset. */
#define WAYPOINT_POOL_DRAIN_MS 5000

static void
part_done(void *arg)
{
	struct waypoint *wp = arg;

	if (--wp->parts == 0 && wp->done != NULL)
		wp->done(wp->done_arg);
}

static void
server_drained(void *arg)
{
	struct waypoint *wp = arg;

	hbone_pool_drain(wp->pool, WAYPOINT_POOL_DRAIN_MS, part_done, wp);
	part_done(wp);
}

static void
refresh_closed(uv_handle_t *h)
{
	part_done(h->data);
}

/* The drain is over when the last tunnel and mirror are gone: the timer (the drain's grace or,
 * in a sidecar, its deadline) closes, and done runs from there once the rest has ended. */
static void
drain_idle_check(struct waypoint *wp)
{
	if (wp->draining && wp->st.active == 0 && wp->mirrors_open == 0 &&
	    !uv_is_closing((uv_handle_t *)&wp->refresh)) {
		uv_timer_stop(&wp->refresh);
		uv_close((uv_handle_t *)&wp->refresh, refresh_closed);
	}
}

static void
on_drain_deadline(uv_timer_t *h)
{
	struct waypoint *wp = h->data;

	log_info("%s: drain timeout: resetting %zu L7 tunnels", wp->role, wp->st.active);
	waypoint_abort_all(wp);
}

/* Draining: clients are asked to go, as HTTP lets a server do (each protocol its way: see its
 * drain). What is left at the deadline is reset. */
static void
drain_tunnels(struct waypoint *wp)
{
	for (struct tun *t = wp->tuns; t != NULL; t = t->next)
		if (t->state == TUN_OPEN && t->down != NULL && t->proto != NULL)
			t->proto->drain(t);
}

/* An idle HTTP/1.1 connection is not closed the moment the drain starts: a client may have sent
 * its next request already, and a FIN crossing it loses that request (the client sees the
 * connection close without an answer). For this long such a connection stays open, and a request
 * on it is answered with "Connection: close"; then the idle ones are closed. A busy connection
 * gets a request within milliseconds, so this clears all but the truly idle ones without a race. */
#define WAYPOINT_DRAIN_IDLE_GRACE_MS 1000

static void
on_drain_grace(uv_timer_t *h)
{
	struct waypoint *wp = h->data;

	wp->drain_idle_close = true;
	drain_tunnels(wp);
	if (wp->embedded)
		uv_timer_start(&wp->refresh, on_drain_deadline, wp->drain_left_ms, 0);
	else if (!uv_is_closing((uv_handle_t *)&wp->refresh))
		uv_close((uv_handle_t *)&wp->refresh, refresh_closed);
	drain_idle_check(wp);
}

/* One engine's drain, on its own loop. */
static void
engine_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	uint64_t grace = timeout_ms < WAYPOINT_DRAIN_IDLE_GRACE_MS ? timeout_ms :
	    WAYPOINT_DRAIN_IDLE_GRACE_MS;

	if (wp->draining)
		return;
	wp->draining = true;
	wp->drain_idle_close = grace == 0;
	drain_tunnels(wp);
	wp->done = done;
	wp->done_arg = arg;
	wp->drain_left_ms = timeout_ms - grace;
	uv_timer_stop(&wp->refresh);
	/* A sidecar's server and pool are its proxy's: it waits for its own tunnels, and resets
	 * them at the deadline. A waypoint also waits for its server and its pool. */
	wp->parts = wp->embedded ? 1 : 3;
	uv_timer_start(&wp->refresh, on_drain_grace, grace, 0);
	drain_idle_check(wp);
	if (wp->embedded)
		return;
	/* The pool after the server: a tunnel taken before the drain may open its stream to the
	 * endpoint later (an opaque one once its first bytes are in), and must find the pool
	 * open. Its own drain then finds no stream left to wait for. */
	hbone_server_drain(wp->srv, timeout_ms, server_drained, wp);
}

/* --- workers: the front (worker 0) hands connections to its peers and fans control out --- */

/* A connection the front accepted for a peer (or for itself when the peer's queue is full). */
struct handoff {
	struct waypoint *to;
	int fd;
};

/* Closes fd with a reset, as the server refuses one over its limit. */
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
	struct waypoint *wp = h->to;

	if (wp->draining) {
		reset_close(h->fd); /* (its server may be gone already) */
	} else {
		wp->accepted++;
		metrics_counter_add(wp->m_conns, 1);
		hbone_server_adopt(wp->srv, h->fd);
	}
	free(h);
}

/*
 * The front's server offers it each connection (hbone_server_cfg.dispatch): round robin over the
 * workers, the front included. false: the front's server serves it, or refuses it when the whole
 * waypoint is at max_connections.
 */
static bool
wp_dispatch(struct hbone_server *srv, uv_stream_t *l)
{
	struct waypoint *wp = hbone_server_user(srv);
	unsigned k = wp->rr++ % (wp->npeers + 1);
	struct handoff *h;
	int fd;

	if (__atomic_load_n(&wp->conns, __ATOMIC_RELAXED) >= wp->conf->waypoint.max_connections)
		return false;
	if (k == 0 || (h = malloc(sizeof(*h))) == NULL)
		goto self;
	fd = net_accept_fd(wp->loop, l);
	if (fd == -ENOMEM) {
		free(h);
		goto self;
	}
	if (fd < 0) {
		free(h);
		return true; /* lost before it was ours */
	}
	h->to = wp->peers[k - 1];
	h->fd = fd;
	if (!worker_post(h->to->wk, adopt, h)) {
		/* That worker's queue is full (WORKER_QUEUE_MAX): served here. */
		h->to = wp;
		adopt(h);
	}
	return true;
self:
	wp->accepted++;
	metrics_counter_add(wp->m_conns, 1);
	return false;
}

static void
front_finish(struct waypoint *wp)
{
	void (*done)(void *);

	if (!wp->self_drained || wp->peers_left > 0 || wp->user_done == NULL)
		return;
	done = wp->user_done;
	wp->user_done = NULL;
	/* Nothing is posted to worker 0 any more: its loop may end. */
	worker_release_main(wp->wk);
	done(wp->user_arg);
}

static void
front_self_drained(void *arg)
{
	struct waypoint *wp = arg;

	wp->self_drained = true;
	front_finish(wp);
}

/* On worker 0: a peer is drained. */
static void
front_peer_drained(void *arg)
{
	struct waypoint *wp = arg;

	wp->peers_left--;
	front_finish(wp);
}

/* On the peer's thread. */
static void
peer_drained(void *arg)
{
	struct waypoint *peer = arg;

	worker_post_ctl(peer->front->wk, front_peer_drained, peer->front);
}

struct peer_drain {
	struct waypoint *peer;
	uint64_t timeout_ms;
};

static void
peer_drain(void *arg)
{
	struct peer_drain *d = arg;

	engine_drain(d->peer, d->timeout_ms, peer_drained, d->peer);
	free(d);
}

void
waypoint_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	if (wp->npeers == 0) {
		engine_drain(wp, timeout_ms, done, arg);
		return;
	}
	if (wp->draining)
		return;
	wp->user_done = done;
	wp->user_arg = arg;
	wp->peers_left = wp->npeers;
	/* Queued behind the connections handed to each peer before: those are taken, then
	 * drained with the rest. The front hands over no more from here (this thread). */
	for (unsigned k = 0; k < wp->npeers; k++) {
		struct peer_drain *d = xmalloc(sizeof(*d));

		d->peer = wp->peers[k];
		d->timeout_ms = timeout_ms;
		worker_post_ctl(wp->peers[k]->wk, peer_drain, d);
	}
	engine_drain(wp, timeout_ms, front_self_drained, wp);
}

static void
peer_free(void *arg)
{
	engine_free(arg);
}

void
waypoint_free(struct waypoint *wp)
{
	if (wp == NULL)
		return;
	for (unsigned k = 0; k < wp->npeers; k++) {
		struct worker *wk = wp->peers[k]->wk;

		worker_call(wk, peer_free, wp->peers[k]);
		worker_stop(wk); /* its loop ends: everything of it was closed by the drain */
	}
	free(wp->peers);
	worker_stop(wp->wk);
	engine_free(wp);
}

static void
add_stats(struct waypoint_stats *a, const struct waypoint_stats *b)
{
	a->tunnels += b->tunnels;
	a->tunnels_l4 += b->tunnels_l4;
	a->tunnels_h2 += b->tunnels_h2;
	a->requests += b->requests;
	a->denied += b->denied;
	a->local_replies += b->local_replies;
	a->retries += b->retries;
	a->timeouts += b->timeouts;
	a->upstream_failures += b->upstream_failures;
	a->upstream_reused += b->upstream_reused;
	a->mirrors += b->mirrors;
	a->mirrors_dropped += b->mirrors_dropped;
	a->l4_resets += b->l4_resets;
	a->header_timeouts += b->header_timeouts;
	a->h2_floods += b->h2_floods;
	a->active += b->active;
}

/* A peer's counters, read on its own thread. */
struct peer_stats {
	const struct waypoint *wp;
	struct waypoint_stats st;
	uint64_t accepted;
};

static void
peer_stats(void *arg)
{
	struct peer_stats *ps = arg;

	ps->st = ps->wp->st;
	ps->accepted = ps->wp->accepted;
}

/* Each worker's counters (v[0]: the front's), npeers + 1 of them. */
static void
worker_stats(const struct waypoint *wp, struct peer_stats *v)
{
	v[0].wp = wp;
	peer_stats(&v[0]);
	for (unsigned k = 0; k < wp->npeers; k++) {
		v[k + 1].wp = wp->peers[k];
		worker_call(wp->peers[k]->wk, peer_stats, &v[k + 1]);
	}
}

void
waypoint_stats(const struct waypoint *wp, struct waypoint_stats *st)
{
	struct peer_stats *v;

	if (wp->npeers == 0) {
		*st = wp->st;
		return;
	}
	v = xcalloc(wp->npeers + 1, sizeof(*v));
	worker_stats(wp, v);
	*st = v[0].st;
	for (unsigned k = 1; k <= wp->npeers; k++)
		add_stats(st, &v[k].st);
	free(v);
}

static json_t *
stats_json(const struct waypoint_stats *st)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
	    "tunnels", (json_int_t)st->tunnels, "tunnels_l4", (json_int_t)st->tunnels_l4,
	    "tunnels_h2", (json_int_t)st->tunnels_h2,
	    "requests", (json_int_t)st->requests, "denied", (json_int_t)st->denied,
	    "local_replies", (json_int_t)st->local_replies,
	    "retries", (json_int_t)st->retries, "timeouts", (json_int_t)st->timeouts,
	    "upstream_failures", (json_int_t)st->upstream_failures,
	    "upstream_reused", (json_int_t)st->upstream_reused,
	    "mirrors", (json_int_t)st->mirrors,
	    "mirrors_dropped", (json_int_t)st->mirrors_dropped,
	    "l4_resets", (json_int_t)st->l4_resets,
	    "header_timeouts", (json_int_t)st->header_timeouts,
	    "h2_floods", (json_int_t)st->h2_floods,
	    "active", (json_int_t)st->active);
}

json_t *
waypoint_stats_json(const struct waypoint *wp)
{
	struct waypoint_stats st;

	waypoint_stats(wp, &st);
	return stats_json(&st);
}

/* With workers: what each one was handed and serves, so an operator sees the spread. */
static json_t *
workers_json(const struct waypoint *wp)
{
	struct peer_stats *v = xcalloc(wp->npeers + 1, sizeof(*v));
	json_t *a = json_array();

	worker_stats(wp, v);
	for (unsigned k = 0; k <= wp->npeers; k++)
		json_array_append_new(a, json_pack("{s:I,s:I,s:I,s:I,s:I}",
		    "worker", (json_int_t)k, "connections", (json_int_t)v[k].accepted,
		    "tunnels", (json_int_t)v[k].st.tunnels,
		    "requests", (json_int_t)v[k].st.requests,
		    "active", (json_int_t)v[k].st.active));
	free(v);
	return a;
}

json_t *
waypoint_routes_json(const struct registry *r)
{
	json_t *routes = json_array();
	char target[320];

	for (size_t i = 0; r != NULL && i < r->n[REG_ROUTE]; i++) {
		const struct reg_route *rt = REG_ROUTES(r)[i];
		json_t *be = json_array();

		/* Each backend as written and what it resolved to, so a name that is both a service
		 * and a workload shows which one it means. */
		for (size_t j = 0; j < rt->backends.n; j++) {
			const struct reg_backend *b = &rt->backends_p[j];

			snprintf(target, sizeof(target), "%s/%s", b->service ? b->service->namespace :
			    b->workload->namespace, b->service ? b->service->h.name :
			    b->workload->h.name);
			json_array_append_new(be, json_pack("{s:s,s:i,s:s,s:s}", "name",
			    rt->backends.v[j].name, "weight", rt->backends.v[j].weight, "kind",
			    b->service ? "service" : "workload", "target", target));
		}
		json_array_append_new(routes, json_pack("{s:s,s:s,s:s,s:o,s:I,s:I}", "name",
		    rt->h.name, "namespace", rt->namespace, "service", rt->service, "backends", be,
		    "timeout_ms", (json_int_t)rt->timeout, "retries", (json_int_t)rt->retries));
	}
	return routes;
}

char *
waypoint_dump(struct waypoint *wp)
{
	struct registry *r = registry_holder_get(wp->reg);
	json_t *root = json_object();
	char *out;

	json_object_set_new(root, "waypoint", json_string(wp->conf->waypoint.name));
	json_object_set_new(root, "identity", json_string(wp->id ? wp->id->spiffe_id : ""));
	json_object_set_new(root, "routes", waypoint_routes_json(r));
	json_object_set_new(root, "stats", waypoint_stats_json(wp));
	if (wp->npeers > 0)
		json_object_set_new(root, "workers", workers_json(wp));
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	registry_unref(r);
	return out;
}
