/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L4 relay: a tunnel that is not HTTP (or is silent: a server-first protocol), or a WebSocket
 * after its 101, relayed as bytes to the destination, as a ztunnel would, with TCP telemetry. The
 * destination's L4 policy is checked first (decide.h), failing closed on L7 rules: the destination
 * sees only us. Buffers: what a side sent is returned to its window only once passed on.
 */
#include "config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>

#include "core/err.h"
#include "core/log.h"
#include "l7/proto-l4.h"
#include "policy/authz.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"

enum l4_state {
	L4_CONNECTING, /* the upstream tunnel is being opened: the client's bytes wait in to_up */
	L4_OPEN,       /* the upstream tunnel answered: bytes flow both ways */
	L4_GONE,       /* the upstream tunnel is closed (or never opened) */
};

struct l4t {
	enum l4_state state;
	struct hbone_stream *up;
	struct l7_sendq to_up;
	size_t up_unconsumed; /* bytes from up not yet returned to its window */
	size_t in_unconsumed; /* bytes from the client not yet returned to its window */
	bool up_eof;          /* the app sent its FIN: ours follows once t->out is written */
	bool opened;          /* istio_tcp_connections_opened_total counted */
	const struct reg_workload *ep;
	bool balanced; /* ep is the balancer's pick (lb_fail when it cannot be reached) */
	const struct reg_service *lb_svc; /* the service it was picked for (lb_result) */
	struct lb_pool *pool; /* its place among the service's connections (lb_take) */
	uint16_t target;
	uint64_t start, sent, received; /* to the client, from the client */
	void *prior;
	void (*prior_free)(void *prior);
};

static struct l4t *
l4_of(const struct tun *t)
{
	return t->ps;
}

/* Istio's TCP labels for the tunnel; dp holds the principal. */
static void
l4_labels(struct tun *t, struct tcp_labels *l, char *dp, size_t len)
{
	struct l4t *s = l4_of(t);

	wp_principal(t, s->ep, dp, len);
	*l = (struct tcp_labels){
		.reporter = wp_reporter(t),
		.source_workload = t->src_wl ? t->src_wl->h.name : "unknown",
		.source_workload_namespace = t->src_wl ? t->src_wl->namespace : "unknown",
		.source_principal = t->peer_id,
		.destination_workload = s->ep ? s->ep->h.name : "unknown",
		.destination_workload_namespace = s->ep ? s->ep->namespace : "unknown",
		.destination_service = t->svc ? t->svc->hostname : "unknown",
		.destination_principal = dp,
		.response_flags = t->flags ? t->flags : "-",
		.connection_security_policy = wp_security_policy(t),
	};
}

/* The tunnel ends: TCP metrics and one access-log record, as a ztunnel writes them. */
static void
l4_telemetry(struct tun *t)
{
	struct l4t *s = l4_of(t);
	char dp[SPIFFE_ID_MAX];
	struct tcp_labels l;

	l4_labels(t, &l, dp, sizeof(dp));
	/* A denied tunnel is opened and closed here, with the same labels (flags DENY). */
	if (t->wp->metrics != NULL && !s->opened)
		metrics_tcp_opened(t->wp->metrics, &l);
	if (t->wp->metrics != NULL)
		metrics_tcp_closed(t->wp->metrics, &l, s->sent, s->received);
	accesslog_tcp(&l, NULL, t->authority, s->sent, s->received,
	    uv_now(t->wp->loop) - s->start, l.response_flags);
}

static void
l4_flush_down(struct tun *t)
{
	struct l4t *s = l4_of(t);

	if (s->up_eof)
		t->shut_pending = true;
	tun_flush_down(t);
	/* Bytes from up are returned to its window once they are on their way down. */
	if (s->up != NULL && l7_sendq_len(&t->out) < WP_BUF && s->up_unconsumed > 0) {
		hbone_stream_consumed(s->up, s->up_unconsumed);
		s->up_unconsumed = 0;
	}
}

static void
l4_flush_up(struct tun *t)
{
	struct l4t *s = l4_of(t);

	l7_sendq_flush(&s->to_up, s->up);
	if (t->down_eof && s->up != NULL && s->state == L4_OPEN && l7_sendq_len(&s->to_up) == 0)
		hbone_stream_shutdown(s->up);
	if (t->down != NULL && l7_sendq_len(&s->to_up) < WP_BUF && s->in_unconsumed) {
		hbone_stream_consumed(t->down, s->in_unconsumed);
		s->in_unconsumed = 0;
	}
}

/* Drops the upstream tunnel; no callback of it reaches us afterwards. */
static void
l4_drop_up(struct tun *t)
{
	struct l4t *s = l4_of(t);

	if (s == NULL || s->up == NULL)
		return;
	hbone_stream_set_cb(s->up, NULL, NULL);
	hbone_stream_reset(s->up, NGHTTP2_CANCEL);
	s->up = NULL;
	s->up_unconsumed = 0;
	l7_sendq_reset(&s->to_up);
	s->state = L4_GONE;
}

/* Queues bytes of the relay; when q cannot take them (a peer past its window: WP_QUEUE_MAX, or out
 * of memory) they must not vanish mid-stream while their window is returned: the tunnel is reset
 * and counted (l4_resets). Returns whether they were queued; if not, t is being reset. */
static bool
l4_put(struct tun *t, struct l7_sendq *q, const uint8_t *data, size_t len)
{
	int r = l7_sendq_put(q, data, len);

	if (r == 0)
		return true;
	t->wp->st.l4_resets++;
	log_info("%s: L4 tunnel %s for %s reset: %zu bytes not queued: %s", t->wp->role,
	    t->authority, t->peer_id, len, amesh_strerror(r));
	wp_tun_abort(t);
	return false;
}

static void
l4_up_on_data(struct hbone_stream *hs, const uint8_t *data, size_t len)
{
	struct tun *t = hbone_stream_user(hs);
	struct l4t *s = l4_of(t);

	t->last = uv_now(t->wp->loop);
	s->sent += len;
	if (!l4_put(t, &t->out, data, len))
		return;
	s->up_unconsumed += len;
	l4_flush_down(t);
}

static void
l4_up_on_eof(struct hbone_stream *hs)
{
	struct tun *t = hbone_stream_user(hs);

	l4_of(t)->up_eof = true;
	l4_flush_down(t);
}

static void
l4_up_on_writable(struct hbone_stream *hs)
{
	l4_flush_up(hbone_stream_user(hs));
}

static void
l4_up_on_close(struct hbone_stream *hs, bool reset, uint32_t err)
{
	struct tun *t = hbone_stream_user(hs);
	struct l4t *s = l4_of(t);

	s->up = NULL;
	s->up_unconsumed = 0;
	s->state = L4_GONE;
	if (reset)
		wp_tun_abort(t);
}

static void
l4_up_on_response(struct hbone_stream *hs, int status)
{
	struct tun *t = hbone_stream_user(hs);
	struct l4t *s = l4_of(t);

	if (status != 200) {
		hbone_stream_set_cb(hs, NULL, NULL);
		s->up = NULL;
		s->state = L4_GONE;
		t->wp->st.upstream_failures++;
		/* The pool could not connect: the balancer skips the endpoint for a while. */
		if (status < 0 && s->balanced)
			lb_fail(t->wp->lb, t->reg, s->ep, uv_now(t->wp->loop));
		/* Outlier detection: no connection (or its ztunnel could not reach the app). */
		if (status < 0 || status == 503)
			lb_result(t->wp->lb, t->reg, s->lb_svc, s->ep,
			    status < 0 ? LB_LOCAL_FAILURE : status, uv_now(t->wp->loop));
		wp_tun_abort(t);
		return;
	}
	lb_result(t->wp->lb, t->reg, s->lb_svc, s->ep, 200, uv_now(t->wp->loop));
	s->state = L4_OPEN;
	l4_flush_up(t);
}

static const struct hbone_stream_cb l4_up_cb = {
	.on_data = l4_up_on_data,
	.on_eof = l4_up_on_eof,
	.on_writable = l4_up_on_writable,
	.on_response = l4_up_on_response,
	.on_close = l4_up_on_close,
};

static struct l4t *
l4_new(struct tun *t)
{
	struct l4t *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	l7_sendq_init(&s->to_up);
	s->start = uv_now(t->wp->loop);
	return s;
}

/* Not HTTP (or silent): the destination's L4 policy, TCP metrics opened, the upstream tunnel. */
static int
l4_start(struct tun *t)
{
	struct waypoint *wp = t->wp;
	struct l4t *s = l4_new(t);
	struct wp_verdict v;
	struct ip_addr ip;
	int r;

	if (s == NULL)
		return AMESH_ERR_NOMEM;
	t->ps = s;
	wp->st.tunnels_l4++;
	if (t->timers_open == 2)
		uv_timer_stop(&t->timer);
	if (!l4_put(t, &s->to_up, buf_ptr(&t->in), buf_len(&t->in)))
		return 0;
	s->in_unconsumed += buf_len(&t->in);
	s->received += buf_len(&t->in);
	buf_reset(&t->in);
	ip_from_sockaddr(&t->client, &ip, NULL); /* family 0 unless L7_SIDE_IN */
	{
		struct l7_dest d = { t->reg, t->side, t->svc, t->direct, t->port };
		struct l7_peer p = { authz_principal(t->peer_id), ip.family ? &ip : NULL };
		struct l7_choice c = { wp_rnd, wp->lb, uv_now(wp->loop) };

		l7_decide_l4(&d, &p, &c, &v);
	}
	s->ep = v.ep;
	s->balanced = v.balanced;
	s->lb_svc = v.lb_svc;
	s->target = v.target;
	if (v.status == 503) {
		wp_tun_abort(t); /* never to the app unjudged */
		return 0;
	}
	if (v.status != 0) {
		wp->st.denied++;
		t->flags = "DENY";
		log_info("%s: L4 tunnel %s for %s denied%s%s", wp->role, t->authority,
		    t->peer_id, v.policy ? " by policy " : "", v.policy ? v.policy->h.name : "");
		wp_tun_abort(t);
		return 0;
	}
	if (s->lb_svc != NULL &&
	    lb_take(wp->lb, t->reg, s->lb_svc, LB_CONNECTIONS, &s->pool) != 0) {
		/* The service's connection limit (tcp.max_connections): refused, as Envoy's circuit
		 * breaker does, with its flag. */
		t->flags = "UO";
		log_info("%s: L4 tunnel %s for %s refused: service %s at its connection limit",
		    wp->role, t->authority, t->peer_id, s->lb_svc->h.name);
		wp_tun_abort(t);
		return 0;
	}
	if (wp->metrics != NULL) {
		char dp[SPIFFE_ID_MAX];
		struct tcp_labels l;

		l4_labels(t, &l, dp, sizeof(dp));
		metrics_tcp_opened(wp->metrics, &l);
		s->opened = true;
	}
	r = wp_open_upstream(t, s->ep, s->target, NULL, &l4_up_cb, t, &s->up);
	if (r != 0) {
		s->up = NULL;
		s->state = L4_GONE;
		if (r != -ENOENT) {
			wp->st.upstream_failures++;
			lb_result(wp->lb, t->reg, s->lb_svc, s->ep, LB_LOCAL_FAILURE, uv_now(wp->loop));
		}
		wp_tun_abort(t);
	}
	return 0;
}

int
l4_take_upgraded(struct tun *t, const struct l4_handover *h)
{
	struct l4t *s = l4_new(t);

	if (s == NULL)
		return AMESH_ERR_NOMEM;
	s->state = L4_OPEN;
	s->up = h->up;
	s->ep = h->ep;
	s->target = h->target;
	s->opened = false;
	s->up_unconsumed = h->up_unconsumed;
	s->received = buf_len(&t->in);
	s->sent = h->to_down_len;
	if (l7_sendq_put(&t->out, h->to_down, h->to_down_len) != 0 ||
	    l7_sendq_put(&s->to_up, buf_ptr(&h->to_up->b), buf_len(&h->to_up->b)) != 0 ||
	    l7_sendq_put(&s->to_up, buf_ptr(&t->in), buf_len(&t->in)) != 0) {
		l7_sendq_reset(&s->to_up);
		free(s);
		return AMESH_ERR_NOMEM;
	}
	l7_sendq_reset(h->to_up);
	s->in_unconsumed = buf_len(&t->in);
	buf_reset(&t->in);
	s->prior = h->prior;
	s->prior_free = h->prior_free;
	t->flags = h->flags;
	t->proto = &l7_l4_ops;
	t->ps = s;
	hbone_stream_set_cb(s->up, &l4_up_cb, t);
	l4_flush_down(t);
	l4_flush_up(t);
	return 0;
}

static void
l4_on_data(struct tun *t, const uint8_t *data, size_t len)
{
	struct l4t *s = l4_of(t);

	s->received += len;
	if (!l4_put(t, &s->to_up, data, len))
		return;
	s->in_unconsumed += len;
	if (s->state == L4_OPEN)
		l4_flush_up(t);
}

static void
l4_on_eof(struct tun *t)
{
	struct l4t *s = l4_of(t);

	l4_flush_up(t);
	if (s->up != NULL && l7_sendq_len(&s->to_up) == 0)
		hbone_stream_shutdown(s->up);
}

static void
l4_on_writable(struct tun *t)
{
	l4_flush_down(t);
}

static void
l4_on_close(struct tun *t)
{
	l4_drop_up(t);
}

static void
l4_drain(struct tun *t)
{
	/* Bytes carry no way to ask the client to go: the tunnel runs until the deadline. */
}

static bool
l4_idle(const struct tun *t)
{
	return true;
}

static void
l4_free(struct tun *t)
{
	struct l4t *s = l4_of(t);

	if (s == NULL)
		return;
	l4_telemetry(t);
	lb_release(s->pool, LB_CONNECTIONS);
	l7_sendq_reset(&s->to_up);
	if (s->prior_free != NULL)
		s->prior_free(s->prior);
	free(s);
	t->ps = NULL;
}

const struct l7_proto_ops l7_l4_ops = {
	.name = "l4",
	.start = l4_start,
	.on_data = l4_on_data,
	.on_eof = l4_on_eof,
	.on_writable = l4_on_writable,
	.on_close = l4_on_close,
	.abort = l4_drop_up,
	.drain = l4_drain,
	.idle = l4_idle,
	.free = l4_free,
};
