/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L7 engine's lifecycle (waypoint.h): start as a waypoint (its HBONE server and pool) or embed
 * in a sidecar, the once-a-second refresh (idle tunnels, a renewed certificate), drain, free,
 * stats and config dumps. Tunnels are the core's (core.c); the engine hands them over and counts
 * them.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "l7/tunnel.h"
#include "net/lb.h"
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

/* An engine with its parts given, nothing started; NULL when out of memory. */
static struct waypoint *
engine_new(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics)
{
	struct waypoint *wp = calloc(1, sizeof(*wp));

	if (wp == NULL)
		return NULL;
	if (lb_new(&wp->lb) != 0) {
		free(wp);
		return NULL;
	}
	lb_set_metrics(wp->lb, metrics);
	wp->loop = loop;
	wp->conf = conf;
	wp->reg = reg;
	wp->ids = ids;
	wp->metrics = metrics;
	wp->gone = drain_idle_check;
	return wp;
}

int
waypoint_start(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, struct waypoint **out)
{
	struct registry *r = registry_holder_get(reg);
	const struct reg_waypoint *wr = r ? registry_find(r, REG_WAYPOINT, conf->waypoint.name) : NULL;
	struct waypoint *wp;
	char a[80];
	int rc;

	*out = NULL;
	if (wr == NULL) {
		log_error("waypoint: [waypoint] name \"%s\" is not defined in the registry %s",
		    conf->waypoint.name, conf->mesh.registry);
		registry_unref(r);
		return AMESH_ERR_NOTFOUND;
	}
	wp = engine_new(loop, conf, reg, ids, metrics);
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
		free(wp->ns);
		free(wp->sa);
		lb_free(wp->lb);
		free(wp);
		return AMESH_ERR_NOTFOUND;
	}
	{
		struct hbone_server_cfg sc = {
			.addr = (const struct sockaddr *)&conf->waypoint.hbone_address,
			.fd = -1,
			.id = wp->id,
			.trust_domain = conf->mesh.trust_domain,
			.handshake_timeout_ms = conf->waypoint.handshake_timeout,
			.max_connections = conf->waypoint.max_connections,
			.max_streams = (uint32_t)conf->waypoint.pool_max_streams,
			.on_request = on_request,
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

		rc = hbone_server_listen(loop, &sc, &wp->srv);
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
			identity_unref(wp->id);
			free(wp->ns);
			free(wp->sa);
			lb_free(wp->lb);
			free(wp);
			return rc;
		}
		hbone_pool_new(loop, &pc, &wp->pool);
	}
	uv_timer_init(loop, &wp->refresh);
	wp->refresh.data = wp;
	uv_timer_start(&wp->refresh, on_refresh, 1000, 1000);
	log_info("waypoint: %s (%s) on %s", conf->waypoint.name, wp->id->spiffe_id,
	    sockaddr_str(&conf->waypoint.hbone_address, a, sizeof(a)));
	*out = wp;
	return 0;
}

int
waypoint_embed(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, const struct l7_host *host,
    struct waypoint **out)
{
	struct waypoint *wp = engine_new(loop, conf, reg, ids, metrics);

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

void
waypoint_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
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

void
waypoint_free(struct waypoint *wp)
{
	if (wp == NULL)
		return;
	identity_unref(wp->id);
	free(wp->ns);
	free(wp->sa);
	lb_free(wp->lb);
	free(wp);
}

void
waypoint_stats(const struct waypoint *wp, struct waypoint_stats *st)
{
	*st = wp->st;
}

json_t *
waypoint_stats_json(const struct waypoint *wp)
{
	const struct waypoint_stats *st = &wp->st;

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
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	registry_unref(r);
	return out;
}
