/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tunnel services every protocol module uses (tunnel.h): the send queues, writing to the client,
 * opening upstream tunnels, moving a tunnel to a newer registry, resetting and freeing it. Calls
 * no protocol module by name: what a protocol must do on abort or free goes through t->proto.
 */
#include "config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/parse.h"
#include "l7/tunnel.h"
#include "tls/cert.h"
#include "tls/rng.h"

void
l7_sendq_init(struct l7_sendq *q)
{
	buf_init(&q->b, WP_QUEUE_MAX);
	q->busy = q->again = false;
}

int
l7_sendq_put(struct l7_sendq *q, const void *data, size_t len)
{
	return buf_put(&q->b, data, len);
}

size_t
l7_sendq_len(const struct l7_sendq *q)
{
	return buf_len(&q->b);
}

void
l7_sendq_reset(struct l7_sendq *q)
{
	buf_reset(&q->b);
}

/* Moves as much of q into stream s as it takes. A call from inside its own write (the stream's
 * on_writable) only asks the outer call for another round. */
void
l7_sendq_flush(struct l7_sendq *q, struct hbone_stream *s)
{
	size_t took;

	if (q->busy) {
		q->again = true;
		return;
	}
	q->busy = true;
	do {
		q->again = false;
		if (buf_len(&q->b) == 0 || s == NULL)
			break;
		took = hbone_stream_write(s, buf_ptr(&q->b), buf_len(&q->b));
		if (took == 0)
			break;
		buf_consume(&q->b, took);
	} while (q->again);
	q->busy = false;
}

void
tun_flush_down(struct tun *t)
{
	l7_sendq_flush(&t->out, t->down);
	/* FIN downstream only once everything before it is written. */
	if (t->down != NULL && l7_sendq_len(&t->out) == 0 && t->shut_pending) {
		t->shut_pending = false;
		hbone_stream_shutdown(t->down);
	}
}

uint32_t
wp_rnd(void)
{
	uint32_t r = 0;

	rng_fill(rng_ctx(), (unsigned char *)&r, sizeof(r));
	return r;
}

int
wp_open_upstream(struct tun *t, const struct reg_workload *ep, uint16_t target,
    const char *traceparent, const struct hbone_stream_cb *cb, void *user,
    struct hbone_stream **out)
{
	struct waypoint *wp = t->wp;
	const struct ip_addr *ip;
	struct sockaddr_storage dst;
	char dst_id[SPIFFE_ID_MAX], auth[128];
	struct hbone_open o = { 0 };

	if (t->side == L7_SIDE_IN) {
		/* A sidecar's own app, over TCP from the client's address: where the CONNECT said. */
		struct sockaddr_storage app;
		struct ip_addr aip;
		int fd = wp->host.app_socket(wp->host.arg, &t->client, t->app.ss_family);

		if (fd < 0)
			return fd;
		ip_from_sockaddr(&t->app, &aip, NULL);
		sockaddr_from_ip(&app, &aip, target);
		return hbone_tcp_connect(wp->loop, fd, (struct sockaddr *)&app, cb, user, out);
	}
	/* A sidecar's pool drains once its engine has (src/proxy/proxy.c): a request answered
	 * during the engine's drain may still open a stream; none can after it. */
	if (wp->embedded && wp->draining && wp->parts == 0)
		return -ESHUTDOWN;
	if (ep == NULL || (ip = reg_workload_addr(ep, AF_INET)) == NULL)
		return -ENOENT;
	/* The CONNECT names the endpoint's application port; the tunnel goes to its HBONE port. */
	sockaddr_from_ip(&dst, ip, target);
	sockaddr_str(&dst, auth, sizeof(auth));
	sockaddr_from_ip(&dst, ip, wp->conf->ztunnel.proxy.hbone_port);
	if (spiffe_format(dst_id, sizeof(dst_id), wp->conf->mesh.trust_domain, ep->namespace,
	    ep->service_account) != 0)
		return AMESH_ERR_TOOLONG;
	o.src = wp->id;
	o.dst_id = dst_id;
	o.dst = (struct sockaddr *)&dst;
	o.authority = auth;
	o.forwarded = t->forwarded;
	o.baggage = t->baggage;
	o.traceparent = traceparent != NULL && traceparent[0] ? traceparent : NULL;
	return hbone_pool_open(wp->pool, &o, cb, user, out);
}

bool
wp_tun_refresh_registry(struct tun *t, bool *moved)
{
	struct registry *cur = registry_holder_get(t->wp->reg), *old = t->reg;
	const struct reg_service *svc = NULL;
	const struct reg_workload *direct = NULL;

	*moved = false;
	if (cur == NULL || cur == old) {
		registry_unref(cur);
		return true;
	}
	if (t->svc != NULL)
		svc = registry_service_by_hostname(cur, t->svc->hostname);
	if (t->direct != NULL)
		direct = registry_find(cur, REG_WORKLOAD, t->direct->h.name);
	/* A sidecar's inbound service is the caller's word (baggage), a label: only its workload
	 * must still be there. */
	if ((t->svc != NULL && svc == NULL && t->side != L7_SIDE_IN) ||
	    (t->direct != NULL && direct == NULL)) {
		/* Gone from the registry: the tunnel stays on its snapshot (every pointer valid) and
		 * this request is refused; a later one moves when it is back. */
		registry_unref(cur);
		return false;
	}
	t->svc = svc;
	t->direct = direct;
	if (t->src_wl != NULL)
		t->src_wl = registry_find(cur, REG_WORKLOAD, t->src_wl->h.name);
	t->reg = cur;
	registry_unref(old);
	*moved = true;
	return true;
}

/* Resets both sides; the downstream on_close frees the tunnel. */
void
wp_tun_abort(struct tun *t)
{
	if (t->proto != NULL)
		t->proto->abort(t);
	if (t->down != NULL && t->state == TUN_OPEN) {
		t->state = TUN_CLOSING;
		hbone_stream_reset(t->down, NGHTTP2_CANCEL);
	}
}

void
wp_tun_maybe_free(struct tun *t)
{
	struct waypoint *wp = t->wp;

	if (t->state != TUN_CLOSED || t->timers_open > 0 ||
	    (t->proto != NULL && !t->proto->idle(t)))
		return;
	wp->st.active--;
	if (wp->active_shared != NULL)
		__atomic_sub_fetch(wp->active_shared, 1, __ATOMIC_RELAXED);
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		wp->tuns = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	if (t->proto != NULL)
		t->proto->free(t);
	registry_unref(t->reg);
	buf_reset(&t->in);
	l7_sendq_reset(&t->out);
	free(t->peer_id);
	free(t->forwarded);
	free(t->baggage);
	free(t);
	if (wp->embedded && wp->host.tun_gone != NULL)
		wp->host.tun_gone(wp->host.arg);
	wp->gone(wp); /* last: it may free wp */
}
