/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tunnel core: a tunnel begins (the waypoint's HBONE server, or a sidecar's inbound or
 * outbound), its protocol is detected from its first bytes, and from then on every event of the
 * client's stream goes to that protocol through t->proto (tunnel.h), which the core never asks
 * about. Protocols: HTTP/1.1 (proto-h1.c), HTTP/2 with prior knowledge (proto-h2.c), anything else
 * relayed as bytes (proto-l4.c).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "l7/tunnel.h"
#include "net/netns.h"
#include "tls/cert.h"

enum detect { DETECT_MORE, DETECT_HTTP, DETECT_H2, DETECT_OTHER };

/* What the first bytes of a tunnel are: an HTTP/1.x request line starts with an upper-case
 * method and a blank within 16 bytes; h2c with prior knowledge with the whole preface. Anything
 * else is decided as soon as a byte rules both out. */
static enum detect
detect(const uint8_t *p, size_t n)
{
	bool whole;

	if (h2_preface(p, n, &whole))
		return whole ? DETECT_H2 : DETECT_MORE;
	if (n >= 4 && memcmp(p, "PRI ", 4) == 0)
		return DETECT_OTHER; /* not the preface, nor an HTTP/1.1 method */
	for (size_t i = 0; i < n && i < 16; i++) {
		if (p[i] == ' ')
			return i > 0 ? DETECT_HTTP : DETECT_OTHER;
		/* Methods are tokens; in practice upper case, with '-' (M-SEARCH, VERSION-CONTROL). */
		if ((p[i] < 'A' || p[i] > 'Z') && (p[i] != '-' || i == 0))
			return DETECT_OTHER;
	}
	return n >= 16 ? DETECT_OTHER : DETECT_MORE;
}

/* The protocol is known: it takes the tunnel (and what t->in holds). */
static void
tun_set_proto(struct tun *t, const struct l7_proto_ops *ops)
{
	t->proto = ops;
	if (ops->start(t) != 0) {
		t->proto = NULL; /* it left nothing behind */
		wp_tun_abort(t);
	}
}

/* Nothing decided the protocol in detect_ms. A client that sent nothing waits for the server to
 * speak: L4. One that sent part of a method (or of the preface: all detect leaves undecided)
 * and paused is read as HTTP/1.1, under request_header_timeout; relaying it at L4 would let a
 * client that trickles its first bytes past every route and L7 policy. */
static void
on_detect_timeout(uv_timer_t *h)
{
	struct tun *t = h->data;

	if (t->proto == NULL && t->state == TUN_OPEN)
		tun_set_proto(t, buf_len(&t->in) > 0 ? &l7_h1_ops : &l7_l4_ops);
}

static void
down_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct tun *t = hbone_stream_user(s);

	if (t->state != TUN_OPEN)
		return;
	t->last = uv_now(t->wp->loop);
	if (t->proto != NULL) {
		t->proto->on_data(t, data, len);
		return;
	}
	/* Bounded by the stream window: we return bytes only as the protocol takes them. */
	if (buf_put(&t->in, data, len) != 0) {
		wp_tun_abort(t);
		return;
	}
	switch (detect(buf_ptr(&t->in), buf_len(&t->in))) {
	case DETECT_MORE:
		return;
	case DETECT_H2:
		/* h2c with prior knowledge (gRPC included). */
		uv_timer_stop(&t->timer);
		tun_set_proto(t, &l7_h2_ops);
		return;
	case DETECT_HTTP:
		uv_timer_stop(&t->timer);
		tun_set_proto(t, &l7_h1_ops);
		return;
	case DETECT_OTHER:
		/* Not HTTP: relayed as bytes, as a ztunnel would. */
		tun_set_proto(t, &l7_l4_ops);
		return;
	}
}

static void
down_on_eof(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	t->down_eof = true;
	if (t->proto == NULL && t->state == TUN_OPEN) {
		/* Sent what it had and half-closed before its protocol was clear: relayed as is. */
		tun_set_proto(t, &l7_l4_ops);
		if (t->state != TUN_OPEN)
			return;
	}
	if (t->proto != NULL)
		t->proto->on_eof(t);
}

static void
down_on_writable(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	if (t->proto != NULL)
		t->proto->on_writable(t);
	else
		tun_flush_down(t);
}

static void
tun_timer_closed(uv_handle_t *h)
{
	struct tun *t = h->data;

	t->timers_open--;
	wp_tun_maybe_free(t);
}

static void
down_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct tun *t = hbone_stream_user(s);

	t->down = NULL;
	t->state = TUN_CLOSED;
	if (t->proto != NULL)
		t->proto->on_close(t);
	if (t->timers_open == 2 && !uv_is_closing((uv_handle_t *)&t->timer)) {
		uv_close((uv_handle_t *)&t->timer, tun_timer_closed);
		uv_close((uv_handle_t *)&t->wait, tun_timer_closed);
	}
	wp_tun_maybe_free(t);
}

static const struct hbone_stream_cb down_cb = {
	.on_data = down_on_data,
	.on_eof = down_on_eof,
	.on_writable = down_on_writable,
	.on_close = down_on_close,
};

/* The workload an HBONE peer ("ADDR:PORT") is: HBONE leaves from the caller's own address. */
static const struct reg_workload *
peer_workload(const struct registry *reg, const char *peer_addr)
{
	struct sockaddr_storage ps;
	struct ip_addr peer;
	const char *why;

	if (parse_sockaddr(peer_addr, &ps, &why) != 0)
		return NULL;
	ip_from_sockaddr(&ps, &peer, NULL);
	return registry_workload_by_addr(reg, &peer);
}

static struct tun *
tun_new(struct waypoint *wp, struct registry *reg, enum l7_side side)
{
	struct tun *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->wp = wp;
	t->reg = reg;
	t->side = side;
	t->state = TUN_OPEN;
	buf_init(&t->in, WP_QUEUE_MAX);
	l7_sendq_init(&t->out);
	return t;
}

/* Gives back tun_reserve's place (with workers; without, st.active counts only started ones). */
static void
tun_unreserve(struct waypoint *wp)
{
	if (wp->active_shared != NULL)
		__atomic_sub_fetch(wp->active_shared, 1, __ATOMIC_RELAXED);
}

/* A tunnel that never started: nothing of it is on the loop yet. A waypoint's had its place. */
static void
tun_discard(struct tun *t)
{
	if (t->side == L7_SIDE_WAYPOINT)
		tun_unreserve(t->wp);
	registry_unref(t->reg);
	free(t->peer_id);
	free(t->forwarded);
	free(t->baggage);
	free(t);
}

/* The tunnel is ours from here: its timers, the detection deadline, the downstream stream. */
static void
tun_start(struct tun *t, struct hbone_stream *s)
{
	struct waypoint *wp = t->wp;

	uv_timer_init(wp->loop, &t->timer);
	uv_timer_init(wp->loop, &t->wait);
	t->timer.data = t->wait.data = t;
	t->timers_open = 2;
	if (wp->detect_ms > 0)
		uv_timer_start(&t->timer, on_detect_timeout, wp->detect_ms, 0);
	t->down = s;
	t->last = uv_now(wp->loop);
	t->next = wp->tuns;
	if (wp->tuns != NULL)
		wp->tuns->prev = t;
	wp->tuns = t;
	wp->st.tunnels++;
	wp->st.active++;
	hbone_stream_set_cb(s, &down_cb, t);
}

/* A place for one more tunnel under [waypoint] max_connections (with workers, the whole
 * waypoint's: given back when the tunnel is freed, wp_tun_maybe_free). */
static bool
tun_reserve(struct waypoint *wp)
{
	size_t max = wp->conf->waypoint.max_connections;

	if (wp->active_shared == NULL)
		return wp->st.active < max;
	if (__atomic_add_fetch(wp->active_shared, 1, __ATOMIC_RELAXED) <= max)
		return true;
	__atomic_sub_fetch(wp->active_shared, 1, __ATOMIC_RELAXED);
	return false;
}

void
l7_accept_hbone(struct waypoint *wp, struct hbone_stream *s, const struct hbone_request *req)
{
	struct registry *reg = registry_holder_get(wp->reg);
	struct ip_addr ip;
	const char *why;
	struct tun *t;

	if (reg == NULL || wp->draining || !tun_reserve(wp)) {
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		return;
	}
	t = tun_new(wp, reg, L7_SIDE_WAYPOINT);
	if (t == NULL) {
		tun_unreserve(wp);
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		return;
	}
	t->port = req->port;
	snprintf(t->authority, sizeof(t->authority), "%s", req->authority);
	if (parse_ip(req->host, &ip, &why) == 0) {
		const struct reg_vip *v = registry_service_by_vip(reg, &ip, req->port);

		if (v != NULL)
			t->svc = v->service;
		else
			t->direct = registry_workload_by_addr(reg, &ip);
	} else {
		t->svc = registry_service_by_hostname(reg, req->host);
	}
	if (t->svc == NULL && t->direct == NULL) {
		log_info("waypoint: %s from %s: not a service or workload of the registry",
		    req->authority, req->peer_id);
		hbone_stream_respond(s, 400);
		tun_discard(t);
		return;
	}
	t->peer_id = strdup(req->peer_id);
	t->forwarded = req->forwarded ? strdup(req->forwarded) : NULL;
	t->baggage = req->baggage ? strdup(req->baggage) : NULL;
	t->src_wl = peer_workload(reg, req->peer_addr);
	if (t->peer_id == NULL) {
		hbone_stream_respond(s, 503);
		tun_discard(t);
		return;
	}
	tun_start(t, s);
	hbone_stream_respond(s, 200);
}

int
waypoint_take_inbound(struct waypoint *wp, struct hbone_stream *s,
    const struct hbone_request *req, const struct sockaddr_storage *client,
    const struct sockaddr_storage *app, const char *svc_host)
{
	struct registry *reg = registry_holder_get(wp->reg);
	struct tun *t;
	int r;

	if (reg == NULL || wp->draining) {
		registry_unref(reg);
		return -EAGAIN; /* no registry yet, or going away */
	}
	if ((t = tun_new(wp, reg, L7_SIDE_IN)) == NULL) {
		registry_unref(reg);
		return AMESH_ERR_NOMEM;
	}
	t->direct = registry_find(reg, REG_WORKLOAD, wp->host.workload);
	t->svc = svc_host != NULL ? registry_service_by_hostname(reg, svc_host) : NULL;
	t->port = req->port;
	t->app = *app;
	t->client = *client;
	snprintf(t->authority, sizeof(t->authority), "%s", req->authority);
	t->peer_id = strdup(req->peer_id);
	t->src_wl = peer_workload(reg, req->peer_addr);
	if (t->direct == NULL || t->peer_id == NULL) {
		r = t->direct == NULL ? AMESH_ERR_NOTFOUND : AMESH_ERR_NOMEM;
		tun_discard(t);
		return r;
	}
	tun_start(t, s);
	if (hbone_stream_respond(s, 200) != 0) {
		wp_tun_abort(t);
		return 0; /* the stream's on_close frees the tunnel */
	}
	return 0;
}

/* The app sees a reset, as from a server that refused it. */
static void
close_reset(int fd)
{
	sock_rst_on_close(fd);
	close(fd);
}

int
waypoint_take_outbound(struct waypoint *wp, int fd, const struct sockaddr_storage *src,
    const char *svc_host, uint16_t port)
{
	struct registry *reg = registry_holder_get(wp->reg);
	struct hbone_stream *s;
	char a[80], id[SPIFFE_ID_MAX];
	struct tun *t;
	int r;

	if (reg == NULL || wp->draining || (t = tun_new(wp, reg, L7_SIDE_OUT)) == NULL) {
		r = reg == NULL || wp->draining ? -EAGAIN : AMESH_ERR_NOMEM;
		registry_unref(reg);
		close_reset(fd);
		return r;
	}
	t->svc = registry_service_by_hostname(reg, svc_host);
	t->src_wl = registry_find(reg, REG_WORKLOAD, wp->host.workload);
	t->port = port;
	snprintf(t->authority, sizeof(t->authority), "%s:%u", svc_host, port);
	/* Who calls, for the destination's telemetry and policy (as the L4 path sends them). */
	t->peer_id = spiffe_format(id, sizeof(id), wp->conf->mesh.trust_domain, wp->host.ns,
	    wp->host.sa) == 0 ? strdup(id) : NULL;
	if (asprintf(&t->forwarded, "for=\"%s\"", sockaddr_str(src, a, sizeof(a))) < 0)
		t->forwarded = NULL;
	if (asprintf(&t->baggage, "k8s.namespace.name=%s,k8s.workload.name=%s,"
	    "amesh.destination.service=%s", wp->host.ns, wp->host.workload, svc_host) < 0)
		t->baggage = NULL;
	if (t->svc == NULL || t->src_wl == NULL)
		r = AMESH_ERR_NOTFOUND;
	else if (t->peer_id == NULL || t->forwarded == NULL || t->baggage == NULL)
		r = AMESH_ERR_NOMEM;
	else
		r = 0;
	if (r != 0)
		close_reset(fd);
	if (r != 0 || (r = hbone_tcp_accepted(wp->loop, fd, &down_cb, t, &s)) != 0) {
		tun_discard(t);
		return r;
	}
	tun_start(t, s);
	return 0;
}
