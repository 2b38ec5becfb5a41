/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Enrolled workloads and their listeners. Each workload gets, inside its own network namespace,
 * the outbound capture listener, the inbound plaintext listener and an HBONE server, for each
 * address family it has an address in. A workload lives until its listeners, its HBONE server, its
 * pool and every flow that refers to it are gone (a count of those parts, released one by one).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "hbone/hbone.h"
#include "l7/waypoint.h"
#include "net/lb.h"
#include "net/listen.h"
#include "net/netns.h"
#include "proxy/proxy-int.h"
#include "tls/identity.h"

static void
pw_free(struct pworkload *w)
{
	struct proxy *px = w->px;

	if (w->l7 != NULL) {
		if (w->l7_prev != NULL)
			w->l7_prev->l7_next = w->l7_next;
		else if (px != NULL)
			px->l7_ws = w->l7_next;
		if (w->l7_next != NULL)
			w->l7_next->l7_prev = w->l7_prev;
		waypoint_free(w->l7);
	}
	identity_unref(w->id);
	if (w->nsfd >= 0)
		close(w->nsfd);
	free(w->name);
	free(w->netns_path);
	free(w->ns);
	free(w->sa);
	free(w);
	if (px != NULL) {
		px->alive--;
		proxy_check_drained(px);
	}
}

void
pw_release(struct pworkload *w)
{
	if (--w->open_handles > 0)
		return;
	log_debug("workload %s: released", w->name);
	pw_free(w);
}

void
pw_hold(struct pworkload *w)
{
	w->open_handles++;
}

static void
on_listener_closed(uv_handle_t *h)
{
	pw_release(h->data);
}

static void
on_hbone_drained(void *arg)
{
	pw_release(arg);
}

static void
on_pool_drained(void *arg)
{
	pw_release(arg);
}

static void
on_l7_drained(void *arg)
{
	pw_release(arg);
}

static void
on_l7_tun_gone(void *arg)
{
	struct pworkload *w = arg;

	w->px->l7_active--;
}

static int
l7_app_socket(void *arg, const struct sockaddr_storage *client, int family)
{
	return proxy_app_socket(arg, client, family);
}

/* A sidecar's L7 engine for w (proxy.l7): it answers for w alone, with w's pool and identity. */
static int
start_l7(struct pworkload *w)
{
	struct proxy *px = w->px;
	struct l7_host h = {
		.role = px->role,
		.workload = w->name,
		.ns = w->ns,
		.sa = w->sa,
		.pool = w->pool,
		.idle_timeout_ms = px->pc->idle_timeout,
		.detect_ms = px->conf->sidecar.protocol_detection_timeout,
		.app_socket = l7_app_socket,
		.tun_gone = on_l7_tun_gone,
		.arg = w,
	};
	int r = waypoint_embed(px->loop, px->conf, px->reg, px->ids, px->metrics, &h, &w->l7);

	if (r != 0)
		return r;
	w->l7_next = px->l7_ws;
	if (px->l7_ws != NULL)
		px->l7_ws->l7_prev = w;
	px->l7_ws = w;
	return 0;
}

/* The pool's socket factory: HBONE leaves from inside the workload's namespace, marked. */
static int
pw_socket(void *arg, int family)
{
	struct pworkload *w = arg;
	struct netns_sock_opts o = { .mark = PROXY_MARK };

	return netns_tcp_socket(w->nsfd, family, &o);
}

int
proxy_init(struct proxy *px, uv_loop_t *loop, const struct amesh_conf *conf,
    const struct conf_proxy *pc, const char *role, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics)
{
	memset(px, 0, sizeof(*px));
	px->loop = loop;
	px->conf = conf;
	px->pc = pc;
	px->role = role;
	px->reg = reg;
	px->ids = ids;
	px->metrics = metrics;
	uv_timer_init(loop, &px->refresh);
	uv_timer_init(loop, &px->drain_timer);
	px->refresh.data = px->drain_timer.data = px;
	px->timers_open = 2;
	if (lb_new(&px->lb) != 0)
		fatalx("out of memory");
	proxy_start_refresh(px);
	return 0;
}

struct pworkload *
proxy_find(struct proxy *px, const char *name)
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

/* Closes what the workload holds; each part releases it as it finishes. */
static void
shut_workload(struct pworkload *w, uint64_t drain_ms)
{
	w->closing = true;
	if (w->l7 != NULL) {
		/* First, so that it opens nothing more on the pool drained below. */
		pw_hold(w);
		waypoint_drain(w->l7, drain_ms, on_l7_drained, w);
	}
	for (int f = 0; f < 2; f++) {
		if (w->has_outbound[f])
			uv_close((uv_handle_t *)&w->outbound_l[f], on_listener_closed);
		if (w->has_inbound[f])
			uv_close((uv_handle_t *)&w->inbound_l[f], on_listener_closed);
		if (w->hbone_s[f] != NULL) {
			hbone_server_drain(w->hbone_s[f], drain_ms, on_hbone_drained, w);
			w->hbone_s[f] = NULL;
		}
	}
	if (w->pool != NULL) {
		hbone_pool_drain(w->pool, drain_ms, on_pool_drained, w);
		w->pool = NULL;
	}
	pw_release(w); /* the enrollment's own hold */
}

int
proxy_unenroll(struct proxy *px, const char *name)
{
	struct pworkload *w = proxy_find(px, name);

	if (w == NULL)
		return AMESH_ERR_NOTFOUND;
	log_info("workload %s: unenrolled", name);
	unlink_workload(px, w);
	/* The namespace is going away: do not wait long for its connections. */
	shut_workload(w, 1000);
	return 0;
}

/* Opens a listener of the given family and port inside the workload's namespace. */
static int
listen_in(struct pworkload *w, int family, uint16_t port, uv_tcp_t *h, uv_connection_cb cb)
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
	r = net_listen_fd(w->px->loop, h, fd, 511, cb); /* takes fd, even when it fails */
	h->data = w;
	if (r != 0) {
		/* The handle is initialised: it must be closed, and it holds the workload. */
		w->open_handles++;
		uv_close((uv_handle_t *)h, on_listener_closed);
		return r;
	}
	w->open_handles++;
	return 0;
}

struct pfailed *
proxy_find_failed(struct proxy *px, const char *name)
{
	for (struct pfailed *f = px->failed; f != NULL; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

bool
proxy_fail(struct proxy *px, const char *name, const char *path, const struct netns_id *nsid,
    const char *why)
{
	struct pfailed *f = proxy_find_failed(px, name);
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

int
proxy_enroll(struct proxy *px, const char *name, int nsfd, const char *path, char *why,
    size_t whylen)
{
	struct registry *reg = registry_holder_get(px->reg);
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
	if (strcmp(wl->node, px->conf->mesh.node) != 0) {
		snprintf(why, whylen, "workload %s runs on node %s, this is node %s", name, wl->node,
		    px->conf->mesh.node);
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
	old = proxy_find(px, name);
	if (old != NULL && netns_id_eq(&old->nsid, &nsid)) {
		/* Already served there: a repeated add changes nothing. */
		log_debug("workload %s: enrolled in %s already", name, old->netns_path);
		r = 0;
		goto fail;
	}
	if ((r = ns_conflict(px, name, old, &nsid, path, why, whylen)) != 0)
		goto fail;
	r = AMESH_ERR_INVALID;
	id = identity_store_get_sa(px->ids, wl->namespace, wl->service_account);
	if (id == NULL) {
		snprintf(why, whylen, "no certificate for spiffe://%s/ns/%s/sa/%s in %s: issue it "
		    "with amesh ca issue --dir CA_DIR --namespace %s --service-account %s --out %s",
		    px->conf->mesh.trust_domain, wl->namespace, wl->service_account,
		    px->conf->identity.cert_dir, wl->namespace, wl->service_account,
		    px->conf->identity.cert_dir);
		goto fail;
	}
	if (px->nworkloads - (old != NULL ? 1 : 0) >= PROXY_MAX_WORKLOADS) {
		snprintf(why, whylen, "%d workloads enrolled already", PROXY_MAX_WORKLOADS);
		goto fail;
	}
	for (size_t i = 0; i < wl->addresses.n; i++)
		fam[wl->addresses.v[i].family == AF_INET6] = true;
	w = calloc(1, sizeof(*w));
	if (w == NULL || (w->name = strdup(name)) == NULL || (w->netns_path = strdup(path)) == NULL ||
	    (w->ns = strdup(wl->namespace)) == NULL || (w->sa = strdup(wl->service_account)) == NULL) {
		snprintf(why, whylen, "out of memory");
		r = AMESH_ERR_NOMEM;
		goto fail;
	}
	w->px = px;
	px->alive++;
	w->nsid = nsid;
	w->nsfd = nsfd;
	nsfd = -1;
	w->id = id;
	id = NULL;
	w->open_handles = 1; /* the enrollment itself */
	for (int f = 0; f < 2; f++) {
		int family = f ? AF_INET6 : AF_INET;
		struct sockaddr_storage ss;
		int fd;

		if (!fam[f])
			continue;
		r = listen_in(w, family, px->pc->outbound_port, &w->outbound_l[f], proxy_on_outbound);
		if (r != 0) {
			snprintf(why, whylen, "outbound listener on port %u: %s", px->pc->outbound_port,
			    uv_strerror(r));
			goto fail_open;
		}
		w->has_outbound[f] = true;
		r = listen_in(w, family, px->pc->inbound_plaintext_port, &w->inbound_l[f],
		    proxy_on_inbound_plain);
		if (r != 0) {
			snprintf(why, whylen, "inbound listener on port %u: %s",
			    px->pc->inbound_plaintext_port, uv_strerror(r));
			goto fail_open;
		}
		w->has_inbound[f] = true;
		memset(&ss, 0, sizeof(ss));
		ss.ss_family = (sa_family_t)family;
		((struct sockaddr_in *)&ss)->sin_port = htons(px->pc->hbone_port);
		if (family == AF_INET6)
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(px->pc->hbone_port);
		fd = netns_listen(w->nsfd, (struct sockaddr *)&ss, 511);
		if (fd < 0) {
			r = fd;
			snprintf(why, whylen, "HBONE listener on port %u: %s", px->pc->hbone_port,
			    uv_strerror(r));
			goto fail_open;
		}
		{
			struct hbone_server_cfg sc = {
				.fd = fd,
				.id = w->id,
				.trust_domain = px->conf->mesh.trust_domain,
				.handshake_timeout_ms = px->pc->handshake_timeout,
				.max_connections = px->pc->max_connections,
				.max_streams = (uint32_t)px->pc->pool_max_streams,
				.on_request = proxy_on_hbone_request,
				.user = w,
			};

			r = hbone_server_listen(px->loop, &sc, &w->hbone_s[f]);
			if (r != 0) {
				close(fd); /* a failed listen leaves the fd to us (hbone.h) */
				snprintf(why, whylen, "HBONE listener: %s", uv_strerror(r));
				goto fail_open;
			}
			w->open_handles++;
		}
	}
	{
		struct hbone_pool_cfg pc = {
			.max_streams = (uint32_t)px->pc->pool_max_streams,
			.idle_timeout_ms = px->pc->pool_idle_timeout,
			.connect_timeout_ms = px->pc->connect_timeout,
			.ping_interval_ms = 10000,
			.ping_timeout_ms = 20000,
			.max_connections = 4096,
			.socket_fn = pw_socket,
			.socket_arg = w,
		};

		r = hbone_pool_new(px->loop, &pc, &w->pool);
		if (r != 0) {
			snprintf(why, whylen, "out of memory");
			goto fail_open;
		}
		w->open_handles++;
	}
	if (px->l7 && (r = start_l7(w)) != 0) {
		snprintf(why, whylen, "L7 engine: %s", amesh_strerror(r));
		goto fail_open;
	}
	if (old != NULL) {
		/* Its old namespace is gone (ns_conflict checked): the new listeners are up, so
		 * the old ones can go. */
		log_info("workload %s: moves from %s (gone) to %s", name, old->netns_path, path);
		proxy_unenroll(px, name);
	}
	w->next = px->workloads;
	if (px->workloads != NULL)
		px->workloads->prev = w;
	px->workloads = w;
	px->nworkloads++;
	proxy_unfail(px, name);
	log_info("workload %s: enrolled (namespace %s, %s)", name, path, w->id->spiffe_id);
	registry_unref(reg);
	return 0;
fail_open:
	shut_workload(w, 0);
	registry_unref(reg);
	return r < 0 ? r : AMESH_ERR_INVALID;
fail:
	identity_unref(id);
	if (w != NULL) {
		w->nsfd = nsfd; /* calloc left 0 there: pw_free would close stdin */
		pw_free(w);
	} else if (nsfd >= 0) {
		close(nsfd);
	}
	registry_unref(reg);
	return r;
}

static void
drain_timer_fired(uv_timer_t *t)
{
	struct proxy *px = t->data;

	log_info("%s: drain timeout: resetting the remaining connections", px->role);
	proxy_abort_flows(px);
}

static void
timer_closed(uv_handle_t *h)
{
	struct proxy *px = h->data;

	if (--px->timers_open == 0 && px->on_drained != NULL) {
		void (*done)(struct proxy *) = px->on_drained;

		px->on_drained = NULL;
		done(px);
	}
}

void
proxy_check_drained(struct proxy *px)
{
	if (!px->draining || px->alive > 0 || px->flows != NULL ||
	    uv_is_closing((uv_handle_t *)&px->refresh))
		return;
	uv_timer_stop(&px->refresh);
	uv_timer_stop(&px->drain_timer);
	uv_close((uv_handle_t *)&px->refresh, timer_closed);
	uv_close((uv_handle_t *)&px->drain_timer, timer_closed);
}

void
proxy_drain(struct proxy *px, uint64_t timeout_ms, void (*done)(struct proxy *px))
{
	if (px->draining)
		return;
	px->draining = true;
	px->on_drained = done;
	log_info("%s: draining %zu workloads for up to %llu ms", px->role, px->nworkloads,
	    (unsigned long long)timeout_ms);
	uv_timer_stop(&px->refresh);
	uv_timer_start(&px->drain_timer, drain_timer_fired, timeout_ms, 0);
	while (px->workloads != NULL) {
		struct pworkload *w = px->workloads;

		unlink_workload(px, w);
		shut_workload(w, timeout_ms);
	}
	proxy_check_drained(px);
}
