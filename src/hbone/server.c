/* SPDX-License-Identifier: Apache-2.0 */
/* HBONE server: accepts mTLS connections from the trust domain and hands each CONNECT to its owner. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/inherit.h"
#include "core/log.h"
#include "hbone/h2.h"
#include "tls/identity.h"

struct hbone_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_timer_t drain_timer;
	struct hbone_server_cfg cfg;
	char *trust_domain;
	struct identity *id;
	struct h2_conn *conns;
	size_t nconns;
	bool draining, listener_closed, timer_closed;
	void (*drain_done)(void *);
	void *drain_arg;
	struct hbone_server_stats st;
};

static void maybe_finish_drain(struct hbone_server *srv);

/* A place for one more connection under max_connections: taken here, given back by conn_unreserve
 * once the connection is gone (or was not made after all). */
static bool
conn_reserve(struct hbone_server *srv)
{
	size_t *n = srv->cfg.shared_conns;

	if (n == NULL)
		return srv->nconns < srv->cfg.max_connections;
	if (__atomic_add_fetch(n, 1, __ATOMIC_RELAXED) <= srv->cfg.max_connections)
		return true;
	__atomic_sub_fetch(n, 1, __ATOMIC_RELAXED);
	return false;
}

static void
conn_unreserve(struct hbone_server *srv)
{
	if (srv->cfg.shared_conns != NULL)
		__atomic_sub_fetch(srv->cfg.shared_conns, 1, __ATOMIC_RELAXED);
}

static void
srv_on_request(struct h2_conn *c, struct hbone_stream *s)
{
	struct hbone_server *srv = c->owner;

	if (srv->draining) {
		/* REFUSED_STREAM, not a 503: it says the stream was not processed, so the peer
		 * opens it again on another connection (a stream that crossed our GOAWAY; during an
		 * upgrade, the next process takes that connection). */
		srv->st.streams_refused++;
		hbone_stream_reset(s, NGHTTP2_REFUSED_STREAM);
		return;
	}
	srv->st.streams_opened++;
	srv->cfg.on_request(srv, s, &s->req);
}

static void
srv_on_ready(struct h2_conn *c, int status)
{
	struct hbone_server *srv = c->owner;

	if (status != 0)
		srv->st.handshakes_failed++;
}

static void
srv_on_closed(struct h2_conn *c)
{
	struct hbone_server *srv = c->owner;

	if (c->list_prev != NULL)
		c->list_prev->list_next = c->list_next;
	else
		srv->conns = c->list_next;
	if (c->list_next != NULL)
		c->list_next->list_prev = c->list_prev;
	srv->nconns--;
	conn_unreserve(srv);
	maybe_finish_drain(srv);
}

static const struct h2_conn_ops server_ops = {
	.on_request = srv_on_request,
	.on_ready = srv_on_ready,
	.on_closed = srv_on_closed,
};

static void
on_refused_closed(uv_handle_t *h)
{
	free(h);
}

/* Takes a connection off the backlog and closes it. libuv stops watching a listener whose
 * pending connection was not accepted, so every refusal must go through here. */
static void
refuse(struct hbone_server *srv, uv_stream_t *l)
{
	uv_tcp_t *t = malloc(sizeof(*t));

	srv->st.connections_refused++;
	if (t == NULL) {
		log_error("hbone: out of memory: the listener is stalled until a connection is "
		    "accepted");
		return;
	}
	uv_tcp_init(srv->loop, t);
	if (uv_accept(l, (uv_stream_t *)t) == 0)
		log_debug("hbone: connection refused: %zu connections open", srv->nconns);
	uv_close((uv_handle_t *)t, on_refused_closed);
}

static void
add_conn(struct hbone_server *srv, struct h2_conn *c)
{
	srv->st.connections_accepted++;
	c->list_next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->list_prev = c;
	srv->conns = c;
	srv->nconns++;
}

static void
on_connection(uv_stream_t *l, int status)
{
	struct hbone_server *srv = l->data;
	struct tls_conn_opts o = {
		.id = srv->id,
		.trust_domain = srv->trust_domain,
		.handshake_timeout_ms = srv->cfg.handshake_timeout_ms,
	};
	struct h2_conn *c;
	int r;

	if (status < 0) {
		log_warn("hbone: accept: %s", amesh_strerror(status));
		return;
	}
	if (!srv->draining && srv->cfg.dispatch != NULL && srv->cfg.dispatch(srv, l))
		return;
	if (srv->draining || !conn_reserve(srv)) {
		/* Over the limit: take it off the backlog and close it, so it fails fast. */
		refuse(srv, l);
		return;
	}
	c = h2_conn_new(srv->loop, true, srv->cfg.max_streams, &server_ops, srv);
	if (c == NULL) {
		conn_unreserve(srv);
		refuse(srv, l);
		return;
	}
	r = tls_conn_accept(l, &o, &h2_tls_cb, c, &c->tls);
	if (r != 0) {
		conn_unreserve(srv);
		h2_conn_free_unstarted(c);
		log_warn("hbone: accept: %s", amesh_strerror(r));
		if (r == AMESH_ERR_NOMEM)
			refuse(srv, l); /* tls_conn_accept failed before uv_accept */
		else
			srv->st.connections_refused++;
		return;
	}
	add_conn(srv, c);
}

void
hbone_server_adopt(struct hbone_server *srv, int fd)
{
	struct tls_conn_opts o = {
		.id = srv->id,
		.trust_domain = srv->trust_domain,
		.handshake_timeout_ms = srv->cfg.handshake_timeout_ms,
	};
	struct h2_conn *c;
	int r;

	if (srv->draining || !conn_reserve(srv)) {
		srv->st.connections_refused++;
		close(fd);
		return;
	}
	if ((c = h2_conn_new(srv->loop, true, srv->cfg.max_streams, &server_ops, srv)) == NULL) {
		conn_unreserve(srv);
		srv->st.connections_refused++;
		close(fd);
		return;
	}
	r = tls_conn_adopt(srv->loop, fd, &o, &h2_tls_cb, c, &c->tls); /* closes fd on failure */
	if (r != 0) {
		conn_unreserve(srv);
		h2_conn_free_unstarted(c);
		log_warn("hbone: accept: %s", amesh_strerror(r));
		srv->st.connections_refused++;
		return;
	}
	add_conn(srv, c);
}

int
hbone_server_listen(uv_loop_t *loop, const struct hbone_server_cfg *cfg,
    struct hbone_server **out)
{
	struct hbone_server *srv;
	int fd, r;

	*out = NULL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return AMESH_ERR_NOMEM;
	srv->loop = loop;
	srv->cfg = *cfg;
	srv->trust_domain = strdup(cfg->trust_domain);
	if (srv->trust_domain == NULL) {
		free(srv);
		return AMESH_ERR_NOMEM;
	}
	if (srv->cfg.max_connections == 0)
		srv->cfg.max_connections = 65536;
	if (srv->cfg.max_streams == 0)
		srv->cfg.max_streams = 100;
	srv->id = identity_ref(cfg->id);
	uv_tcp_init(loop, &srv->listener);
	uv_timer_init(loop, &srv->drain_timer);
	srv->listener.data = srv;
	srv->drain_timer.data = srv;
	if (cfg->addr == NULL && cfg->fd < 0) {
		/* No listener: connections come through hbone_server_adopt. */
		*out = srv;
		return 0;
	} else if (cfg->addr != NULL) {
		/* Handed over by the previous process on an upgrade, else bound here. */
		fd = inherit_tcp_listen(cfg->addr, 511);
		r = fd < 0 ? fd : uv_tcp_open(&srv->listener, fd);
		if (r != 0 && fd >= 0)
			close(fd);
	} else {
		/* The listener gets a copy: closing the handle on failure leaves cfg->fd to the
		 * caller, which owns it until this succeeds (see hbone.h). */
		fd = fcntl(cfg->fd, F_DUPFD_CLOEXEC, 0);
		r = fd < 0 ? -errno : uv_tcp_open(&srv->listener, fd);
		if (r != 0 && fd >= 0)
			close(fd); /* uv_tcp_open failed: the handle did not take it */
	}
	if (r == 0)
		r = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
	if (r != 0) {
		/* Nothing was accepted: drain frees it once the handles are closed. */
		hbone_server_drain(srv, 0, NULL, NULL);
		return r;
	}
	if (cfg->addr == NULL)
		close(cfg->fd); /* the listener holds its copy */
	*out = srv;
	return 0;
}

void
hbone_server_set_identity(struct hbone_server *srv, struct identity *id)
{
	struct identity *old = srv->id;

	srv->id = identity_ref(id);
	identity_unref(old);
}

static void
on_listener_closed(uv_handle_t *h)
{
	struct hbone_server *srv = h->data;

	srv->listener_closed = true;
	maybe_finish_drain(srv);
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct hbone_server *srv = h->data;

	srv->timer_closed = true;
	maybe_finish_drain(srv);
}

static void
maybe_finish_drain(struct hbone_server *srv)
{
	if (!srv->draining || srv->nconns > 0)
		return;
	if (!uv_is_closing((uv_handle_t *)&srv->drain_timer)) {
		uv_timer_stop(&srv->drain_timer);
		uv_close((uv_handle_t *)&srv->drain_timer, on_timer_closed);
		return;
	}
	if (!srv->listener_closed || !srv->timer_closed)
		return;
	if (srv->drain_done != NULL)
		srv->drain_done(srv->drain_arg);
	identity_unref(srv->id);
	free(srv->trust_domain);
	free(srv);
}

static void
on_drain_timeout(uv_timer_t *t)
{
	struct hbone_server *srv = t->data;
	struct h2_conn *c, *next;

	if (srv->nconns > 0)
		log_info("hbone: drain timeout: closing %zu connections", srv->nconns);
	for (c = srv->conns; c != NULL; c = next) {
		next = c->list_next;
		h2_conn_abort(c);
	}
}

void
hbone_server_drain(struct hbone_server *srv, uint64_t timeout_ms, void (*done)(void *arg),
    void *arg)
{
	struct h2_conn *c, *next;

	if (srv->draining)
		return;
	srv->draining = true;
	srv->drain_done = done;
	srv->drain_arg = arg;
	uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
	for (c = srv->conns; c != NULL; c = next) {
		next = c->list_next;
		h2_conn_goaway(c);
	}
	if (srv->nconns > 0)
		uv_timer_start(&srv->drain_timer, on_drain_timeout, timeout_ms, 0);
	maybe_finish_drain(srv);
}

void *
hbone_server_user(const struct hbone_server *srv)
{
	return srv->cfg.user;
}

int
hbone_server_port(const struct hbone_server *srv)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss), r;

	if ((r = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len)) != 0)
		return r;
	return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
}

void
hbone_server_stats(const struct hbone_server *srv, struct hbone_server_stats *st)
{
	struct h2_conn *c;

	*st = srv->st;
	st->connections_open = srv->nconns;
	st->streams_open = 0;
	for (c = srv->conns; c != NULL; c = c->list_next)
		st->streams_open += c->nstreams;
}
