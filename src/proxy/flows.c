/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The data paths of an enrolled workload (DESIGN.md sections 1, 3, 5):
 *  outbound  (15001): original destination -> service VIP (an endpoint, round robin), workload
 *            address, or neither; HBONE as the workload's identity to the destination (or its
 *            waypoint), plain TCP for non-mesh destinations;
 *  inbound   (15008): mTLS peer, L4 policy, then a connection to the app from the client's own
 *            address (IP_TRANSPARENT), 401 on deny and 503 when the app refuses;
 *  plaintext (15006): non-mesh clients: refused in strict mode, policy (no principal) in
 *            permissive mode.
 * Every relayed connection is a flow: counted, bounded, logged and measured when it ends.
 * Calls below it only (workload.c, the HBONE engine, the relay, the balancer, policy, telemetry
 * and the sidecar's L7 engine); the proxy hears of it through flows_cfg.on_idle alone.
 */
#include "config.h"

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "hbone/hbone.h"
#include "l7/waypoint.h"
#include "net/lb.h"
#include "net/netns.h"
#include "hbone/relay.h"
#include "policy/authz.h"
#include "proxy/flows.h"
#include "proxy/workload.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"
#include "tls/identity.h"
#include "tls/rng.h"

/* An external service's hostname being resolved for a flow. */
struct ext_resolve {
	uv_getaddrinfo_t req;
	struct flow *f; /* NULL once the flow is gone */
	uint16_t port;
};


enum flow_kind { FLOW_OUT_HBONE, FLOW_OUT_PASS, FLOW_IN_HBONE, FLOW_IN_PLAIN };

struct flow {
	struct flows *fl;
	struct pworkload *w;
	struct registry *reg; /* the snapshot the decision used: label strings point into it */
	struct relay *r;
	struct hbone_stream *s; /* until the tunnel is up */
	uv_connect_t creq;
	enum flow_kind kind;
	const struct reg_workload *src_wl, *dst_wl;
	const struct reg_service *dst_svc;
	const struct reg_workload *lb_key; /* the endpoint the balancer chose, for its penalty */
	struct lb_pool *pool; /* its place among dst_svc's connections (lb_take) */
	/* Outbound through a waypoint: the instance address tried now and every one tried (bit i:
	 * addresses.v[i]), so a failed connect moves to another instance (net/lb.h). */
	const struct reg_waypoint *wp;
	const struct ip_addr *wp_addr;
	uint64_t wp_tried;
	char *authority; /* outbound HBONE: the CONNECT's :authority, for another try */
	char *peer_principal; /* inbound: the client's SPIFFE ID */
	char *dst_principal;  /* outbound: the SPIFFE ID we expected */
	const char *flags;
	bool blackhole; /* refused by [mesh] outbound = registry_only: BlackHoleCluster */
	bool opened, up;
	bool handed; /* given to the sidecar's L7 engine: it reports the connection */
	struct ext_resolve *resolving; /* an external service's hostname being resolved */
	uint64_t start;
	struct sockaddr_storage src, dst;
	struct flow *prev, *next;
};

/* An external service's hostname as the host resolved it, kept for [dns] ttl (getaddrinfo does
 * not tell the record's TTL). At most EXT_CACHE_MAX entries; a new one replaces the oldest. One
 * cache for all the workers of a proxy (under its lock), so a name is resolved once per TTL. */
#define EXT_CACHE_MAX 256
struct ext_cached {
	char *host;
	int family;
	struct sockaddr_storage addr; /* port 0 */
	uint64_t expires;             /* uv_now (one monotonic clock for every loop) */
	struct ext_cached *next;      /* newest first */
};
struct ext_cache {
	pthread_mutex_t mu;
	unsigned refs; /* the flows sharing it, under mu */
	struct ext_cached *head;
	size_t n;
};

struct flows {
	struct flows_cfg cfg;
	struct ext_cache *xc; /* shared with cfg.share's flows */
	struct flow_counters st;
	size_t l7_active; /* tunnels given to a sidecar's L7 engine and not yet gone */
	bool draining;    /* accepts nothing more */
	struct lb *lb;    /* services' endpoints: round robin, failure penalty (shared as xc) */
	struct flow *list;
};

/* A connect to the endpoint the balancer chose failed: it skips it for a while (net/lb.h). */
static void
penalize(struct flow *f)
{
	lb_fail(f->fl->lb, f->reg, f->lb_key, uv_now(f->fl->cfg.loop));
	lb_fail_waypoint(f->fl->lb, f->reg, f->wp_addr, uv_now(f->fl->cfg.loop));
}

/* Bit of address ip of waypoint wp in a flow's wp_tried (0 past the 64th; there are no more). */
static uint64_t
wp_bit(const struct reg_waypoint *wp, const struct ip_addr *ip)
{
	size_t k = (size_t)(ip - wp->addresses.v);

	return k < 64 ? UINT64_C(1) << k : 0;
}

/* How the connection to the endpoint the balancer chose went, for outlier detection: a status,
 * or LB_LOCAL_FAILURE (Istio: connect failures of an opaque TCP connection are 5xx and gateway
 * errors). */
static void
lb_outcome(struct flow *f, int status)
{
	if (f->lb_key != NULL)
		lb_result(f->fl->lb, f->reg, f->dst_svc, f->lb_key, status,
		    uv_now(f->fl->cfg.loop));
}

/* --- flows --- */

static void
principal_of(const struct flows *fl, const struct reg_workload *wl, char *buf, size_t len)
{
	if (wl == NULL || spiffe_format(buf, len, fl->cfg.conf->mesh.trust_domain, wl->namespace,
	    wl->service_account) != 0)
		snprintf(buf, len, "unknown");
}

static void
labels_of(const struct flow *f, struct tcp_labels *l, char *sp, char *dp, size_t len)
{
	bool outbound = f->kind == FLOW_OUT_HBONE || f->kind == FLOW_OUT_PASS;

	memset(l, 0, sizeof(*l));
	l->reporter = outbound ? "source" : "destination";
	l->source_workload = f->src_wl ? f->src_wl->h.name : "unknown";
	l->source_workload_namespace = f->src_wl ? f->src_wl->namespace : "unknown";
	if (f->kind == FLOW_IN_HBONE)
		snprintf(sp, len, "%s", f->peer_principal ? f->peer_principal : "unknown");
	else if (f->kind == FLOW_IN_PLAIN)
		snprintf(sp, len, "unknown");
	else
		principal_of(f->fl, f->src_wl, sp, len);
	l->source_principal = sp;
	l->destination_workload = f->dst_wl ? f->dst_wl->h.name : "unknown";
	l->destination_workload_namespace = f->dst_wl ? f->dst_wl->namespace : "unknown";
	l->destination_service = f->blackhole ? "BlackHoleCluster" :
	    f->dst_svc ? f->dst_svc->hostname : "unknown";
	if (f->kind == FLOW_OUT_HBONE && f->dst_principal != NULL)
		snprintf(dp, len, "%s", f->dst_principal);
	else if (f->kind == FLOW_IN_HBONE || f->kind == FLOW_IN_PLAIN)
		principal_of(f->fl, f->dst_wl, dp, len);
	else
		snprintf(dp, len, "unknown");
	l->destination_principal = dp;
	l->response_flags = f->flags ? f->flags : "-";
	l->connection_security_policy =
	    (f->kind == FLOW_OUT_HBONE || f->kind == FLOW_IN_HBONE) ? "mutual_tls" : "none";
}

static void
flow_opened(struct flow *f)
{
	char sp[SPIFFE_ID_MAX], dp[SPIFFE_ID_MAX];
	struct tcp_labels l;

	f->opened = true;
	labels_of(f, &l, sp, dp, sizeof(sp));
	if (f->fl->cfg.metrics != NULL)
		metrics_tcp_opened(f->fl->cfg.metrics, &l);
}

/* A flow that ends before it was opened (denied, failed) still counts as one connection. */
static void
flow_record(struct flow *f, uint64_t sent, uint64_t received)
{
	char sp[SPIFFE_ID_MAX], dp[SPIFFE_ID_MAX], a[80], b[80];
	struct tcp_labels l;

	labels_of(f, &l, sp, dp, sizeof(sp));
	if (!f->opened && f->fl->cfg.metrics != NULL)
		metrics_tcp_opened(f->fl->cfg.metrics, &l);
	if (f->fl->cfg.metrics != NULL)
		metrics_tcp_closed(f->fl->cfg.metrics, &l, sent, received);
	accesslog_tcp(&l, sockaddr_str(&f->src, a, sizeof(a)), sockaddr_str(&f->dst, b, sizeof(b)),
	    sent, received, uv_now(f->fl->cfg.loop) - f->start, l.response_flags);
}

static void
flow_free(struct flow *f)
{
	struct flows *fl = f->fl;

	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		fl->list = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	fl->st.active--;
	lb_release(f->pool, LB_CONNECTIONS);
	if (f->resolving != NULL)
		f->resolving->f = NULL; /* its callback frees it */
	registry_unref(f->reg);
	free(f->peer_principal);
	free(f->dst_principal);
	free(f->authority);
	if (f->w != NULL)
		pw_release(f->w);
	free(f);
	if (fl->list == NULL && fl->cfg.on_idle != NULL)
		fl->cfg.on_idle(fl->cfg.arg);
}

static void
flow_done(struct relay *r, const struct relay_stats *st, void *user)
{
	struct flow *f = user;
	/* Istio's meaning: sent = bytes of the response (server to client), received = bytes of
	 * the request. Side A is the client except on inbound HBONE, where A is the app. */
	bool client_is_a = f->kind != FLOW_IN_HBONE;

	if (f->handed)
		;
	else if (f->up)
		flow_record(f, client_is_a ? st->b_to_a : st->a_to_b,
		    client_is_a ? st->a_to_b : st->b_to_a);
	else
		flow_record(f, 0, 0);
	flow_free(f);
}

/* A new flow with its relay; side A is accepted or connected by the caller. */
static struct flow *
flow_new(struct pworkload *w, enum flow_kind kind)
{
	struct flows *fl = w->fl;
	struct relay_cfg rc = {
		.buffer_size = fl->cfg.pc->buffer_size,
		.idle_timeout_ms = fl->cfg.pc->idle_timeout,
		.on_done = flow_done,
	};
	struct flow *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	rc.user = f;
	f->r = relay_new(fl->cfg.loop, &rc);
	if (f->r == NULL) {
		free(f);
		return NULL;
	}
	f->fl = fl;
	f->w = w;
	pw_hold(w);
	f->kind = kind;
	f->start = uv_now(fl->cfg.loop);
	f->next = fl->list;
	if (fl->list != NULL)
		fl->list->prev = f;
	fl->list = f;
	fl->st.active++;
	fl->st.accepted++;
	w->connections++;
	return f;
}

static void
free_handle(uv_handle_t *h)
{
	free(h);
}

/* Accepts a connection on l (or takes fd, accepted by another worker, when l is NULL) into a
 * new flow, or closes it when over the limit. */
static struct flow *
accept_flow(struct pworkload *w, uv_stream_t *l, int fd, enum flow_kind kind)
{
	struct flows *fl = w->fl;
	struct flow *f = NULL;
	int len;

	if (!fl->draining && fl->st.active + fl->l7_active < fl->cfg.pc->max_connections)
		f = flow_new(w, kind);
	if (f == NULL && l == NULL) {
		struct linger lg = { 1, 0 };

		fl->st.refused_limit++;
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		return NULL;
	}
	if (f == NULL) {
		/* Over the limit, draining or out of memory: take it off the backlog and reset it. */
		uv_tcp_t *t = malloc(sizeof(*t));

		fl->st.refused_limit++;
		if (t != NULL) {
			uv_tcp_init(fl->cfg.loop, t);
			if (uv_accept(l, (uv_stream_t *)t) != 0 ||
			    uv_tcp_close_reset(t, free_handle) != 0)
				uv_close((uv_handle_t *)t, free_handle);
		}
		return NULL;
	}
	if (l == NULL && uv_tcp_open(relay_tcp_a(f->r), fd) != 0) {
		close(fd); /* the handle did not take it */
		relay_abort(f->r);
		return NULL;
	}
	if (l != NULL && uv_accept(l, (uv_stream_t *)relay_tcp_a(f->r)) != 0) {
		relay_abort(f->r);
		return NULL;
	}
	len = sizeof(f->src);
	uv_tcp_getpeername(relay_tcp_a(f->r), (struct sockaddr *)&f->src, &len);
	f->reg = registry_holder_get(fl->cfg.reg);
	if (f->reg == NULL) {
		f->flags = "NR";
		relay_abort(f->r);
		return NULL;
	}
	return f;
}

/* --- outbound --- */

static void out_open(struct flow *f, const struct sockaddr_storage *hb, bool first);

/* The waypoint instance of f could not be reached (status < 0: nothing of the app's was sent
 * yet): the CONNECT goes to another instance, if one is left untried. True if it went. */
static bool
out_failover(struct flow *f, struct hbone_stream *old, int status)
{
	struct sockaddr_storage hb;
	const struct ip_addr *ip;
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];

	if (f->wp == NULL || f->fl->draining)
		return false;
	ip = lb_pick_waypoint(f->fl->lb, f->reg, f->wp, f->wp_tried, uv_now(f->fl->cfg.loop));
	if (ip == NULL)
		return false;
	log_info("workload %s: waypoint %s at %s failed (%s): trying %s", f->w->name,
	    f->wp->h.name, ip_str(f->wp_addr, a, sizeof(a)), amesh_strerror(status),
	    ip_str(ip, b, sizeof(b)));
	hbone_stream_set_cb(old, NULL, NULL);
	f->wp_addr = ip;
	f->wp_tried |= wp_bit(f->wp, ip);
	f->flags = NULL;
	f->fl->st.waypoint_failovers++;
	sockaddr_from_ip(&hb, ip, f->fl->cfg.pc->hbone_port);
	out_open(f, &hb, false);
	return true;
}

static void
out_on_response(struct hbone_stream *s, int status)
{
	struct flow *f = hbone_stream_user(s);
	char a[80];

	f->s = NULL;
	/* Its ztunnel answers 503 when the app cannot be reached: a connect failure too. */
	lb_outcome(f, status < 0 ? LB_LOCAL_FAILURE : status == 401 ? 200 : status);
	if (status == 200) {
		f->up = true;
		relay_start_hbone(f->r, s);
		flow_opened(f);
		return;
	}
	f->flags = status == 401 ? "DENY" : status > 0 ? "URX" : "UF";
	if (status < 0) {
		penalize(f);
		f->fl->st.connect_failures++;
		if (out_failover(f, s, status))
			return;
	}
	log_info("workload %s: outbound to %s: %s %d", f->w->name,
	    sockaddr_str(&f->dst, a, sizeof(a)), status > 0 ? "refused with" : "failed:", status);
	hbone_stream_set_cb(s, NULL, NULL);
	/* The app sees a reset, as it would from a server that refused it. */
	relay_abort(f->r);
}

static void
out_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct flow *f = hbone_stream_user(s);

	f->s = NULL;
}

static const struct hbone_stream_cb out_cb = {
	.on_response = out_on_response,
	.on_close = out_on_close,
};

/* A plain TCP leg (passthrough, or the app behind the plaintext listener) is connected. */
static void
tcp_leg_connected(uv_connect_t *req, int status)
{
	struct flow *f = req->data;

	if (status == UV_ECANCELED)
		return;
	lb_outcome(f, status < 0 ? LB_LOCAL_FAILURE : 200);
	if (status < 0) {
		f->flags = "UF";
		f->fl->st.connect_failures++;
		relay_abort(f->r);
		return;
	}
	f->up = true;
	relay_start_tcp(f->r);
	flow_opened(f);
}

/* Plain TCP to f->dst from namespace nsfd, marked so it is not captured again. */
static void
connect_plain(struct flow *f, int nsfd)
{
	struct netns_sock_opts o = { .mark = AMESH_MARK };
	int fd = netns_tcp_socket(nsfd, f->dst.ss_family, &o);

	if (fd >= 0 && uv_tcp_open(relay_tcp_b(f->r), fd) != 0) {
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		f->flags = "UF";
		relay_abort(f->r);
		return;
	}
	f->creq.data = f;
	if (uv_tcp_connect(&f->creq, relay_tcp_b(f->r), (struct sockaddr *)&f->dst,
	    tcp_leg_connected) != 0) {
		f->flags = "UF";
		relay_abort(f->r);
	}
}

/* Plain TCP from inside the workload's namespace. */
static void
passthrough(struct flow *f)
{
	f->kind = FLOW_OUT_PASS;
	f->fl->st.outbound_passthrough++;
	connect_plain(f, f->w->nsfd);
}

/* A destination the registry does not know, under [mesh] outbound = registry_only: refused,
 * counted as Istio counts its BlackHoleCluster (destination_service, response flag UH). */
static void
blackhole(struct flow *f)
{
	char a[80];

	f->kind = FLOW_OUT_PASS;
	f->blackhole = true;
	f->flags = "UH";
	f->fl->st.outbound_blackhole++;
	log_info("workload %s: %s is not in the registry: refused (outbound = registry_only)",
	    f->w->name, sockaddr_str(&f->dst, a, sizeof(a)));
	relay_abort(f->r);
}

/* Whether the calling workload may reach external service svc (its from.* keys). */
static bool
external_allowed(const struct flow *f, const struct reg_service *svc)
{
	char sid[SPIFFE_ID_MAX];
	bool ok;

	if (svc->from_principals.n == 0 && svc->from_namespaces.n == 0)
		return true;
	if (svc->from_namespaces.n > 0) {
		ok = false;
		for (size_t i = 0; i < svc->from_namespaces.n && !ok; i++)
			ok = kw_pattern_match(svc->from_namespaces.v[i], f->w->ns);
		if (!ok)
			return false;
	}
	if (svc->from_principals.n > 0) {
		ok = false;
		/* TRUST_DOMAIN/ns/NS/sa/SA, as policies write principals. */
		snprintf(sid, sizeof(sid), "%s/ns/%s/sa/%s", f->fl->cfg.conf->mesh.trust_domain,
		    f->w->ns, f->w->sa);
		for (size_t i = 0; i < svc->from_principals.n && !ok; i++)
			ok = kw_pattern_match(svc->from_principals.v[i], sid);
		if (!ok)
			return false;
	}
	return true;
}

/* An external service: authorized for the caller, then plain TCP from this host (the ztunnel's
 * own namespace) to one of its fixed addresses, else to its hostname resolved now. */
/* Copies the cached address of host to *out (true), or false; expired entries are dropped on the
 * way. Under xc->mu. */
static bool
ext_cache_find(struct ext_cache *xc, uint64_t now, const char *host, int family,
    struct sockaddr_storage *out)
{
	for (struct ext_cached **pp = &xc->head; *pp != NULL;) {
		struct ext_cached *c = *pp;

		if (c->expires <= now) {
			*pp = c->next;
			xc->n--;
			free(c->host);
			free(c);
			continue;
		}
		if (c->family == family && strcmp(c->host, host) == 0) {
			if (out != NULL)
				*out = c->addr;
			return true;
		}
		pp = &c->next;
	}
	return false;
}

static bool
ext_cache_get(struct flows *fl, const char *host, int family, struct sockaddr_storage *out)
{
	bool found;

	pthread_mutex_lock(&fl->xc->mu);
	found = ext_cache_find(fl->xc, uv_now(fl->cfg.loop), host, family, out);
	pthread_mutex_unlock(&fl->xc->mu);
	return found;
}

static void
ext_cache_put(struct flows *fl, const char *host, int family, const struct sockaddr_storage *ss)
{
	struct ext_cache *xc = fl->xc;
	uint64_t now = uv_now(fl->cfg.loop);
	struct ext_cached *c;

	if (fl->cfg.conf->dns.ttl == 0)
		return;
	pthread_mutex_lock(&xc->mu);
	if (ext_cache_find(xc, now, host, family, NULL))
		goto out;
	if (xc->n >= EXT_CACHE_MAX) {
		struct ext_cached **pp = &xc->head;

		while ((*pp)->next != NULL)
			pp = &(*pp)->next;
		free((*pp)->host);
		free(*pp);
		*pp = NULL;
		xc->n--;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->host = strdup(host)) == NULL) {
		free(c);
		goto out; /* not cached: resolved again next time */
	}
	c->family = family;
	c->addr = *ss;
	c->expires = now + fl->cfg.conf->dns.ttl;
	c->next = xc->head;
	xc->head = c;
	xc->n++;
out:
	pthread_mutex_unlock(&xc->mu);
}

static void
ext_cache_unref(struct ext_cache *xc)
{
	unsigned left;

	pthread_mutex_lock(&xc->mu);
	left = --xc->refs;
	pthread_mutex_unlock(&xc->mu);
	if (left > 0)
		return;
	while (xc->head != NULL) {
		struct ext_cached *c = xc->head;

		xc->head = c->next;
		free(c->host);
		free(c);
	}
	pthread_mutex_destroy(&xc->mu);
	free(xc);
}

static void
external_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct ext_resolve *x = req->data;
	struct flow *f = x->f;

	if (f != NULL)
		f->resolving = NULL;
	if (f != NULL && (status != 0 || res == NULL)) {
		log_info("workload %s: external service %s: cannot resolve %s: %s", f->w->name,
		    f->dst_svc->h.name, f->dst_svc->hostname, uv_strerror(status));
		f->flags = "UF";
		f->fl->st.connect_failures++;
		relay_abort(f->r);
	} else if (f != NULL) {
		memset(&f->dst, 0, sizeof(f->dst));
		memcpy(&f->dst, res->ai_addr, res->ai_addrlen);
		((struct sockaddr_in *)&f->dst)->sin_port = 0;
		ext_cache_put(f->fl, f->dst_svc->hostname, res->ai_family, &f->dst);
		((struct sockaddr_in *)&f->dst)->sin_port = htons(x->port);
		connect_plain(f, NETNS_SELF);
	}
	uv_freeaddrinfo(res);
	free(x);
}

static void
external(struct flow *f, const struct reg_service *svc, uint16_t port, int family)
{
	const struct ip_addr *ip = NULL;

	f->kind = FLOW_OUT_PASS;
	f->dst_svc = svc;
	if (!external_allowed(f, svc)) {
		log_info("workload %s: external service %s: not among its callers (from.*)",
		    f->w->name, svc->h.name);
		f->flags = "DENY";
		f->fl->st.denied++;
		relay_abort(f->r);
		return;
	}
	f->fl->st.outbound_external++;
	for (size_t i = 0; i < svc->addresses.n && ip == NULL; i++)
		if (svc->addresses.v[i].family == family)
			ip = &svc->addresses.v[i];
	if (ip == NULL && svc->addresses.n > 0)
		ip = &svc->addresses.v[0];
	if (ip != NULL) {
		sockaddr_from_ip(&f->dst, ip, port);
		connect_plain(f, NETNS_SELF);
		return;
	}
	{
		struct sockaddr_storage cached;

		if (ext_cache_get(f->fl, svc->hostname, family, &cached)) {
			f->dst = cached;
			((struct sockaddr_in *)&f->dst)->sin_port = htons(port);
			connect_plain(f, NETNS_SELF);
			return;
		}
	}
	{
		struct ext_resolve *x = calloc(1, sizeof(*x));
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = family };

		if (x == NULL) {
			f->flags = "UF";
			relay_abort(f->r);
			return;
		}
		x->f = f;
		x->port = port;
		x->req.data = x;
		f->resolving = x;
		if (uv_getaddrinfo(f->fl->cfg.loop, &x->req, external_resolved, svc->hostname, NULL,
		    &hints) != 0) {
			f->resolving = NULL;
			free(x);
			f->flags = "UF";
			relay_abort(f->r);
		}
	}
}

static void
fmt_hostport(char *buf, size_t len, const struct ip_addr *ip, uint16_t port)
{
	char a[INET6_ADDRSTRLEN];

	snprintf(buf, len, ip->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip_str(ip, a, sizeof(a)),
	    port);
}

/* The sidecar routes svc's requests itself only when every place its routes can send them is an
 * HBONE workload without a waypoint of its own: the engine speaks nothing else upstream, and a
 * backend's waypoint must not be skipped. Otherwise the L4 path takes the connection (a tcp
 * endpoint passed through, a waypoint'd one through its waypoint) and the routes do not apply. */
static bool
endpoints_hbone(const struct reg_service *svc)
{
	if (svc != NULL && svc->waypoint_p != NULL)
		return false;
	for (size_t i = 0; svc != NULL && i < svc->n_endpoints; i++)
		if (svc->endpoints[i]->protocol != REG_PROTO_HBONE ||
		    svc->endpoints[i]->waypoint_p != NULL)
			return false;
	return true;
}

static bool
routable_here(const struct registry *reg, const struct reg_service *svc)
{
	bool routed = false; /* some route is for svc: else there is nothing to apply here */

	if (!endpoints_hbone(svc))
		return false;
	for (size_t i = 0; i < reg->n[REG_ROUTE]; i++) {
		const struct reg_route *rt = REG_ROUTES(reg)[i];

		if (rt->service_p != svc)
			continue;
		routed = true;
		if (!endpoints_hbone(rt->mirror_p))
			return false;
		for (size_t j = 0; j < rt->backends.n; j++) {
			const struct reg_backend *be = &rt->backends_p[j];

			if ((be->workload != NULL && (be->workload->protocol != REG_PROTO_HBONE ||
			    be->workload->waypoint_p != NULL)) || !endpoints_hbone(be->service))
				return false;
		}
	}
	return routed;
}

static void outbound(struct pworkload *w, uv_stream_t *l, int afd);

void
flows_on_outbound(uv_stream_t *l, int status)
{
	if (status < 0)
		return;
	outbound(l->data, l, -1);
}

void
flows_adopt_outbound(struct pworkload *w, int fd)
{
	outbound(w, NULL, fd);
}

/* A new outbound connection: pending on l, or afd (l NULL). */
static void
outbound(struct pworkload *w, uv_stream_t *l, int afd)
{
	struct flows *fl = w->fl;
	struct flow *f;
	struct ip_addr dip;
	uint16_t dport, hport = fl->cfg.pc->hbone_port;
	const struct reg_vip *vip;
	const struct reg_service *ext;
	const struct reg_waypoint *wp = NULL;
	const struct ip_addr *tip = NULL;
	struct sockaddr_storage hb;
	char authority[300], sid[SPIFFE_ID_MAX];
	const char *dst_ns = NULL, *dst_sa = NULL;
	int fd;

	f = accept_flow(w, l, afd, FLOW_OUT_HBONE);
	if (f == NULL)
		return;
	fd = -1;
	uv_fileno((uv_handle_t *)relay_tcp_a(f->r), &fd);
	if (sock_original_dst(fd, &f->dst) != 0) {
		log_warn("workload %s: outbound connection without an original destination",
		    w->name);
		f->flags = "NR";
		relay_abort(f->r);
		return;
	}
	ip_from_sockaddr(&f->dst, &dip, &dport);
	f->src_wl = registry_find(f->reg, REG_WORKLOAD, w->name);
	vip = registry_service_by_vip(f->reg, &dip, dport);
	if (vip != NULL && vip->service->external) {
		external(f, vip->service, vip->port->target, dip.family);
		return;
	}
	if (vip == NULL && (ext = registry_external_by_addr(f->reg, &dip, dport)) != NULL) {
		external(f, ext, dport, dip.family);
		return;
	}
	if (vip != NULL) {
		f->dst_svc = vip->service;
		if (w->l7 != NULL && vip->service->waypoint_p == NULL &&
		    routable_here(f->reg, vip->service)) {
			/* A sidecar applies the routes of the service it calls (Envoy: client-side). */
			int hfd = relay_hand_off(f->r);

			fl->st.outbound_l7++;
			f->handed = hfd >= 0;
			if (hfd >= 0 && waypoint_take_outbound(w->l7, hfd, &f->src,
			    vip->service->hostname, dport) == 0) {
				fl->l7_active++;
				return;
			}
			/* The app's connection is reset: recorded here as a failed one. */
			log_info("workload %s: cannot route to %s: L7 engine refused it", w->name,
			    vip->service->hostname);
			f->handed = false;
			f->flags = "UF";
			fl->st.connect_failures++;
			return;
		}
		if (vip->service->waypoint_p != NULL) {
			wp = vip->service->waypoint_p;
			snprintf(authority, sizeof(authority), "%s:%u", vip->service->hostname, dport);
		} else {
			if (lb_take(fl->lb, f->reg, vip->service, LB_CONNECTIONS, &f->pool) != 0) {
				/* tcp.max_connections: refused as Envoy's circuit breaker does. */
				log_info("workload %s: service %s at its connection limit: refused",
				    w->name, vip->service->h.name);
				f->flags = "UO";
				relay_abort(f->r);
				return;
			}
			f->dst_wl = lb_pick(fl->lb, f->reg, vip->service, uv_now(fl->cfg.loop));
			if (f->dst_wl == NULL) {
				log_info("workload %s: service %s has no endpoints", w->name,
				    vip->service->h.name);
				f->flags = "UH";
				relay_abort(f->r);
				return;
			}
			f->lb_key = f->dst_wl;
			tip = reg_workload_addr(f->dst_wl, dip.family);
			if (f->dst_wl->protocol == REG_PROTO_TCP) {
				sockaddr_from_ip(&f->dst, tip, vip->port->target);
				passthrough(f);
				return;
			}
			fmt_hostport(authority, sizeof(authority), tip, vip->port->target);
		}
	} else if ((f->dst_wl = registry_workload_by_addr(f->reg, &dip)) != NULL) {
		if (f->dst_wl->protocol == REG_PROTO_TCP) {
			passthrough(f);
			return;
		}
		wp = f->dst_wl->waypoint_p;
		tip = &dip;
		fmt_hostport(authority, sizeof(authority), &dip, dport);
	} else if (fl->cfg.conf->mesh.outbound == CONF_OUTBOUND_REGISTRY_ONLY &&
	    registry_addr_owner(f->reg, &dip) == NULL) {
		blackhole(f);
		return;
	} else {
		/* Not in the mesh: plain TCP to where the app was going. */
		passthrough(f);
		return;
	}
	if (wp != NULL) {
		/* One of its instances; the others stay for a failed connect (out_failover). */
		f->wp = wp;
		f->wp_addr = lb_pick_waypoint(fl->lb, f->reg, wp, 0, uv_now(fl->cfg.loop));
		f->wp_tried = wp_bit(wp, f->wp_addr);
		sockaddr_from_ip(&hb, f->wp_addr, hport);
		dst_ns = wp->namespace;
		dst_sa = wp->service_account;
	} else {
		sockaddr_from_ip(&hb, tip, hport);
		dst_ns = f->dst_wl->namespace;
		dst_sa = f->dst_wl->service_account;
	}
	if (spiffe_format(sid, sizeof(sid), fl->cfg.conf->mesh.trust_domain, dst_ns, dst_sa) != 0 ||
	    (f->dst_principal = strdup(sid)) == NULL || (f->authority = strdup(authority)) == NULL) {
		relay_abort(f->r);
		return;
	}
	out_open(f, &hb, true);
}

/* The CONNECT of outbound flow f to hb (its destination's or its waypoint's HBONE address), as
 * the workload's identity; first: not a failover's (counted once). On failure the app's
 * connection is reset. */
static void
out_open(struct flow *f, const struct sockaddr_storage *hb, bool first)
{
	struct flows *fl = f->fl;
	struct pworkload *w = f->w;
	char fwd[128], a[80], bag[512], tp[64], sid[SPIFFE_ID_MAX];
	struct identity *id;
	struct hbone_open o;
	int r;

	id = identity_store_get_sa(fl->cfg.ids, w->ns, w->sa);
	if (id == NULL) {
		if (spiffe_format(sid, sizeof(sid), fl->cfg.conf->mesh.trust_domain, w->ns, w->sa) != 0)
			snprintf(sid, sizeof(sid), "(too long)");
		log_warn("workload %s: no certificate for %s", w->name, sid);
		f->flags = "UF";
		relay_abort(f->r);
		return;
	}
	snprintf(fwd, sizeof(fwd), "for=\"%s\"", sockaddr_str(&f->src, a, sizeof(a)));
	/* Who is calling and what it called (DESIGN.md 3), for the other side's telemetry. */
	snprintf(bag, sizeof(bag), "k8s.namespace.name=%s,k8s.workload.name=%s%s%s", w->ns,
	    w->name, f->dst_svc ? ",amesh.destination.service=" : "",
	    f->dst_svc ? f->dst_svc->hostname : "");
	rng_traceparent(tp, sizeof(tp));
	memset(&o, 0, sizeof(o));
	o.src = id;
	o.dst_id = f->dst_principal;
	o.dst = (const struct sockaddr *)hb;
	o.authority = f->authority;
	o.forwarded = fwd;
	o.baggage = bag;
	o.traceparent = tp;
	if (first)
		fl->st.outbound_hbone++;
	r = hbone_pool_open(w->pool, &o, &out_cb, f, &f->s);
	identity_unref(id);
	if (r != 0) {
		log_info("workload %s: HBONE to %s: %s", w->name, sockaddr_str(hb, a, sizeof(a)),
		    amesh_strerror(r));
		f->flags = "UO";
		relay_abort(f->r);
	}
}

/* --- inbound --- */

/* Connects handle h to the app inside the namespace, from the client's own address. */
static int
connect_app(struct flow *f, const struct ip_addr *client, uv_tcp_t *h, uv_connect_cb cb)
{
	struct sockaddr_storage cs;
	int fd;

	if (client != NULL)
		sockaddr_from_ip(&cs, client, 0);
	fd = pw_app_socket(f->w, client != NULL ? &cs : NULL, f->dst.ss_family);
	if (fd < 0)
		return fd;
	if (uv_tcp_open(h, fd) != 0) {
		close(fd);
		return UV_EIO;
	}
	f->creq.data = f;
	return uv_tcp_connect(&f->creq, h, (struct sockaddr *)&f->dst, cb);
}

static void
in_pending_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct flow *f = hbone_stream_user(s);

	f->s = NULL; /* the client gave up while we were connecting */
}

static const struct hbone_stream_cb in_pending_cb = { .on_close = in_pending_close };

static void
in_hbone_connected(uv_connect_t *req, int status)
{
	struct flow *f = req->data;

	if (status == UV_ECANCELED) {
		/* The relay was aborted while we connected: the stream must not call into a flow that
		 * is about to be freed. */
		if (f->s != NULL) {
			hbone_stream_set_cb(f->s, NULL, NULL);
			hbone_stream_reset(f->s, NGHTTP2_CANCEL);
			f->s = NULL;
		}
		return;
	}
	if (f->s == NULL) {
		relay_abort(f->r);
		return;
	}
	if (status < 0) {
		f->flags = "UF";
		f->fl->st.connect_failures++;
		hbone_stream_set_cb(f->s, NULL, NULL);
		hbone_stream_respond(f->s, 503);
		f->s = NULL;
		relay_abort(f->r);
		return;
	}
	f->up = true;
	/* The relay's callbacks first: respond() passes on an END_STREAM that came before it. */
	relay_start_hbone(f->r, f->s);
	if (hbone_stream_respond(f->s, 200) != 0) {
		f->up = false;
		f->s = NULL;
		relay_abort(f->r); /* resets the stream */
		return;
	}
	f->s = NULL;
	flow_opened(f);
}

static bool
has_address(const struct reg_workload *wl, const struct ip_addr *ip)
{
	for (size_t i = 0; i < wl->addresses.n; i++)
		if (ip_equal(&wl->addresses.v[i], ip))
			return true;
	return false;
}

/* The client address from `forwarded: for="ADDR:PORT"`, if the peer sent one we can read. */
static bool
forwarded_for(const char *fwd, struct sockaddr_storage *ss)
{
	char buf[128];
	const char *p, *why;
	size_t n;

	if (fwd == NULL || (p = strstr(fwd, "for=\"")) == NULL)
		return false;
	p += 5;
	n = strcspn(p, "\"");
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return parse_sockaddr(buf, ss, &why) == 0;
}

/* The value of key in a W3C baggage header ("k=v,k2=v2"), copied into buf; NULL if absent. */
static const char *
baggage_get(const char *baggage, const char *key, char *buf, size_t len)
{
	size_t kl = strlen(key);

	for (const char *p = baggage; p != NULL && *p != '\0';) {
		size_t n = strcspn(p, ",");

		while (*p == ' ')
			p++, n--;
		if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
			size_t vl = n - kl - 1;

			if (vl >= len)
				return NULL;
			memcpy(buf, p + kl + 1, vl);
			buf[vl] = '\0';
			return buf;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return NULL;
}

static bool
from_waypoint(const struct registry *reg, const struct ip_addr *ip)
{
	const struct reg_addr_owner *o = registry_addr_owner(reg, ip);

	return o != NULL && o->kind == REG_WAYPOINT;
}

void
flows_on_hbone_request(struct hbone_server *srv, struct hbone_stream *s,
    const struct hbone_request *req)
{
	struct pworkload *w = hbone_server_user(srv);
	struct flows *fl = w->fl;
	struct registry *reg = registry_holder_get(fl->cfg.reg);
	const struct reg_workload *wl = reg ? registry_find(reg, REG_WORKLOAD, w->name) : NULL;
	struct authz_l4_req q;
	const struct reg_policy *matched = NULL;
	struct ip_addr dst, peer_ip, client;
	struct sockaddr_storage peer, fwd;
	char td[SPIFFE_ID_MAX], ns[SPIFFE_ID_MAX];
	const char *principal, *why;
	struct flow *f;
	uint16_t port;
	int r;

	fl->st.inbound_hbone++;
	if (wl == NULL || parse_ip(req->host, &dst, &why) != 0 || !has_address(wl, &dst)) {
		log_info("workload %s: HBONE from %s (%s): authority %s is not this workload",
		    w->name, req->peer_addr, req->peer_id, req->authority);
		hbone_stream_respond(s, 400);
		registry_unref(reg);
		return;
	}
	principal = authz_principal(req->peer_id);
	if (spiffe_split(req->peer_id, td, ns, NULL) != 0)
		ns[0] = '\0';
	if (parse_sockaddr(req->peer_addr, &peer, &why) == 0)
		ip_from_sockaddr(&peer, &peer_ip, &port);
	else
		memset(&peer_ip, 0, sizeof(peer_ip));
	q.src_principal = principal;
	q.src_namespace = ns;
	q.src_ip = &peer_ip;
	q.dst_port = req->port;
	/* The same bound as accepted connections: past it the tunnel is refused (the client's
	 * ztunnel resets its app's connection). */
	f = fl->st.active + fl->l7_active < fl->cfg.pc->max_connections && !fl->draining ?
	    flow_new(w, FLOW_IN_HBONE) : NULL;
	if (f == NULL) {
		fl->st.refused_limit++;
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		return;
	}
	f->reg = reg;
	f->dst_wl = wl;
	/* HBONE leaves from the source workload's own address, so the peer address names it. */
	f->src_wl = registry_workload_by_addr(reg, &peer_ip);
	f->peer_principal = strdup(req->peer_id);
	sockaddr_from_ip(&f->dst, &dst, req->port);
	/* The client address a peer claims is believed only from a waypoint (which forwards others'
	 * connections); a workload's HBONE leaves from its own address. Else any mesh peer could
	 * reach the app from 127.0.0.1 or from another workload's address. */
	client = peer_ip;
	sockaddr_from_ip(&f->src, &client, 0);
	if (forwarded_for(req->forwarded, &fwd)) {
		struct ip_addr fip;

		ip_from_sockaddr(&fwd, &fip, &port);
		if (ip_equal(&fip, &peer_ip) || from_waypoint(reg, &peer_ip)) {
			f->src = fwd;
			client = fip;
		}
	}
	{
		/* The service the client addressed, when its ztunnel said (baggage). */
		char svc[256];

		if (baggage_get(req->baggage, "amesh.destination.service", svc, sizeof(svc)))
			f->dst_svc = registry_service_by_hostname(reg, svc);
	}
	/* A sidecar decides each request at L7: here only what no request could pass, with the
	 * subject its requests will have (the client a waypoint forwards for). */
	if (w->l7 != NULL)
		q.src_ip = &client;
	if ((w->l7 != NULL ? authz_l4_prefilter(reg, wl, &q, &matched) :
	    authz_l4(reg, wl, &q, &matched)) == AUTHZ_DENY) {
		fl->st.denied++;
		f->flags = "DENY";
		log_info("workload %s: denied %s from %s to port %u%s%s", w->name, req->peer_id,
		    req->peer_addr, req->port, matched ? " by policy " : "",
		    matched ? matched->h.name : "");
		hbone_stream_respond(s, 401);
		relay_abort(f->r);
		return;
	}
	if (w->l7 != NULL) {
		f->handed = true;
		fl->st.inbound_l7++;
		if (waypoint_take_inbound(w->l7, s, req, &f->src, &f->dst,
		    f->dst_svc ? f->dst_svc->hostname : NULL) != 0) {
			f->handed = false;
			f->flags = "UF";
			hbone_stream_respond(s, 503);
		} else {
			fl->l7_active++;
		}
		relay_abort(f->r);
		return;
	}
	f->s = s;
	hbone_stream_set_cb(s, &in_pending_cb, f);
	r = connect_app(f, client.family ? &client : NULL, relay_tcp_a(f->r), in_hbone_connected);
	if (r != 0) {
		f->flags = "UF";
		hbone_stream_set_cb(s, NULL, NULL);
		hbone_stream_respond(s, 503);
		f->s = NULL;
		relay_abort(f->r);
	}
}

static void inbound_plain(struct pworkload *w, uv_stream_t *l, int afd);

void
flows_on_inbound_plain(uv_stream_t *l, int status)
{
	if (status < 0)
		return;
	inbound_plain(l->data, l, -1);
}

void
flows_adopt_inbound_plain(struct pworkload *w, int fd)
{
	inbound_plain(w, NULL, fd);
}

/* A new plaintext inbound connection: pending on l, or afd (l NULL). */
static void
inbound_plain(struct pworkload *w, uv_stream_t *l, int afd)
{
	struct flows *fl = w->fl;
	struct authz_l4_req q = { .src_principal = "", .src_namespace = "" };
	const struct reg_policy *matched = NULL;
	struct ip_addr client, dst;
	struct flow *f;
	uint16_t cport, dport;
	int fd = -1;

	f = accept_flow(w, l, afd, FLOW_IN_PLAIN);
	if (f == NULL)
		return;
	fl->st.inbound_plaintext++;
	uv_fileno((uv_handle_t *)relay_tcp_a(f->r), &fd);
	if (sock_original_dst(fd, &f->dst) != 0) {
		f->flags = "NR";
		relay_abort(f->r);
		return;
	}
	ip_from_sockaddr(&f->src, &client, &cport);
	ip_from_sockaddr(&f->dst, &dst, &dport);
	f->dst_wl = registry_find(f->reg, REG_WORKLOAD, w->name);
	f->src_wl = registry_workload_by_addr(f->reg, &client);
	if (f->dst_wl == NULL || f->dst_wl->mtls_mode == REG_MTLS_STRICT) {
		fl->st.denied++;
		f->flags = "DENY";
		log_info("workload %s: plaintext connection from %s refused: %s", w->name,
		    inet_ntop(client.family, client.a, (char[64]){ 0 }, 64),
		    f->dst_wl == NULL ? "the workload is no longer in the registry" :
		    "mtls_mode is strict");
		relay_abort(f->r);
		return;
	}
	q.src_ip = &client;
	q.dst_port = dport;
	if (authz_l4(f->reg, f->dst_wl, &q, &matched) == AUTHZ_DENY) {
		fl->st.denied++;
		f->flags = "DENY";
		log_info("workload %s: plaintext connection denied%s%s", w->name,
		    matched ? " by policy " : "", matched ? matched->h.name : "");
		relay_abort(f->r);
		return;
	}
	/* Side A already holds the client; the app connection goes on side B. */
	if (connect_app(f, &client, relay_tcp_b(f->r), tcp_leg_connected) != 0) {
		f->flags = "UF";
		relay_abort(f->r);
	}
}

/* --- the flows of a proxy --- */

struct flows *
flows_new(const struct flows_cfg *cfg)
{
	struct flows *fl = xcalloc(1, sizeof(*fl));

	fl->cfg = *cfg;
	if (cfg->share != NULL) {
		fl->lb = lb_ref(cfg->share->lb);
		fl->xc = cfg->share->xc;
		pthread_mutex_lock(&fl->xc->mu);
		fl->xc->refs++;
		pthread_mutex_unlock(&fl->xc->mu);
		return fl;
	}
	if (lb_new(&fl->lb) != 0)
		fatalx("out of memory");
	lb_set_metrics(fl->lb, cfg->metrics);
	fl->xc = xcalloc(1, sizeof(*fl->xc));
	pthread_mutex_init(&fl->xc->mu, NULL);
	fl->xc->refs = 1;
	return fl;
}

void
flows_free(struct flows *fl)
{
	if (fl == NULL)
		return;
	ext_cache_unref(fl->xc);
	lb_free(fl->lb);
	free(fl);
}

void
flows_stop_accepting(struct flows *fl)
{
	fl->draining = true;
}

void
flows_abort_all(struct flows *fl)
{
	struct flow *f, *next;

	for (f = fl->list; f != NULL; f = next) {
		next = f->next;
		relay_abort(f->r);
	}
}

bool
flows_idle(const struct flows *fl)
{
	return fl->list == NULL;
}

void
flows_counters(const struct flows *fl, struct flow_counters *out)
{
	*out = fl->st;
}

void
flows_on_l7_tun_gone(void *arg)
{
	struct pworkload *w = arg;

	w->fl->l7_active--;
}
