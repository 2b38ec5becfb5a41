/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HBONE client pool (DESIGN.md section 3): connections keyed by source identity, destination identity
 * and destination address; up to max_streams streams on each; a new connection when all are full;
 * PING while idle and drop a connection that stops answering; release after idle_timeout; no new
 * streams on a connection after GOAWAY; a refused stream goes to a new connection (at most 3 times).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "hbone/h2.h"
#include "tls/identity.h"

#define MAX_RETRIES 3

/* The pool's record of one connection; owns the timer that pings it and releases it when idle. */
struct pconn {
	struct hbone_pool *pool;
	struct h2_conn *c;
	char *key;
	uv_timer_t timer;
	uint64_t idle_since, ping_sent_at;
	bool ping_outstanding, no_new_streams;
	struct pconn *prev, *next;
};

struct hbone_pool {
	uv_loop_t *loop;
	struct hbone_pool_cfg cfg;
	struct pconn *conns;
	size_t nconns;
	bool draining;
	bool drain_over; /* the drain's deadline passed: no stream moves to a new connection */
	uv_timer_t drain_timer;
	void (*drain_done)(void *);
	void *drain_arg;
	struct hbone_pool_stats st;
};

static char *
make_key(const struct h2_open *o)
{
	char addr[80];
	char *k = NULL;

	sockaddr_str(&o->dst, addr, sizeof(addr));
	if (asprintf(&k, "%s|%s|%s", o->src->spiffe_id, o->dst_id, addr) < 0)
		return NULL;
	return k;
}

static void
pconn_timer_closed(uv_handle_t *h)
{
	struct pconn *pc = h->data;

	free(pc->key);
	free(pc);
}

static void pool_maybe_done(struct hbone_pool *p);

static void
pc_on_closed(struct h2_conn *c)
{
	struct pconn *pc = c->owner;
	struct hbone_pool *p = pc->pool;

	if (pc->prev != NULL)
		pc->prev->next = pc->next;
	else
		p->conns = pc->next;
	if (pc->next != NULL)
		pc->next->prev = pc->prev;
	p->nconns--;
	pc->c = NULL;
	uv_timer_stop(&pc->timer);
	uv_close((uv_handle_t *)&pc->timer, pconn_timer_closed);
	pool_maybe_done(p);
}

static void
pc_on_ready(struct h2_conn *c, int status)
{
	struct pconn *pc = c->owner;
	struct hbone_stream *s;

	if (status != 0) {
		pc->pool->st.connect_failures++;
		return;
	}
again:
	for (s = c->streams; s != NULL; s = s->next)
		if (s->id == 0 && !s->closing && h2_conn_submit(c, s) != 0) {
			/* The reset frees s (and its on_close may end others): start over. */
			hbone_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
			goto again;
		}
}

static void
pc_on_goaway(struct h2_conn *c)
{
	struct pconn *pc = c->owner;

	pc->no_new_streams = true;
}

/* Draining, a connection closes with its last stream: one opened during the drain (a refused
 * stream's retry) would otherwise stay until idle_timeout, and the drain with it. */
static void
pc_on_stream_gone(struct h2_conn *c)
{
	struct pconn *pc = c->owner;

	if (pc->pool->draining && c->nstreams == 0) {
		pc->no_new_streams = true;
		h2_conn_goaway(c);
	}
}

static bool pc_on_refused(struct h2_conn *c, struct hbone_stream *s);
static void pc_on_resets_waiting(struct h2_conn *c, uint64_t ms);

static const struct h2_conn_ops pool_ops = {
	.on_refused = pc_on_refused,
	.on_ready = pc_on_ready,
	.on_goaway = pc_on_goaway,
	.on_resets_waiting = pc_on_resets_waiting,
	.on_stream_gone = pc_on_stream_gone,
	.on_closed = pc_on_closed,
};

/* The connection's timer ticks every tick ms; sooner while resets wait (h2_conn_send_resets). */
static uint64_t
pc_tick(const struct hbone_pool_cfg *cfg)
{
	uint64_t tick = cfg->ping_interval_ms / 2;

	/* Often enough to honour both the ping interval and the idle timeout. */
	if (tick > cfg->idle_timeout_ms / 2)
		tick = cfg->idle_timeout_ms / 2;
	return tick < 50 ? 50 : tick;
}

static void
pc_on_timer(uv_timer_t *t)
{
	struct pconn *pc = t->data;
	struct h2_conn *c = pc->c;
	const struct hbone_pool_cfg *cfg = &pc->pool->cfg;
	uint64_t now = uv_now(t->loop);

	if (c == NULL || !c->ready || c->closed)
		return;
	if (c->resets_waiting > 0) {
		uint64_t ms = h2_conn_send_resets(c);

		if (c->closed)
			return;
		if (ms > 0)
			uv_timer_start(&pc->timer, pc_on_timer, ms, pc_tick(cfg));
	}
	/* >=: uv_now has millisecond steps and a loopback ACK often comes back within the same one.
	 * A PING is sent only when nothing came for ping_interval_ms, so no frame received before
	 * it can carry its timestamp. */
	if (pc->ping_outstanding && c->last_activity >= pc->ping_sent_at)
		pc->ping_outstanding = false;
	if (pc->ping_outstanding && now - pc->ping_sent_at >= cfg->ping_timeout_ms) {
		log_warn("hbone %s: no answer to PING for %llu ms: dropping the connection",
		    tls_conn_peer_addr(c->tls), (unsigned long long)(now - pc->ping_sent_at));
		h2_conn_abort(c);
		return;
	}
	if (!pc->ping_outstanding && now - c->last_activity >= cfg->ping_interval_ms) {
		pc->ping_sent_at = now;
		pc->ping_outstanding = true;
		h2_conn_ping(c);
	}
	if (c->nstreams > 0) {
		pc->idle_since = 0;
	} else if (pc->idle_since == 0) {
		pc->idle_since = now;
	} else if (now - pc->idle_since >= cfg->idle_timeout_ms) {
		log_debug("hbone %s: idle for %llu ms: releasing", tls_conn_peer_addr(c->tls),
		    (unsigned long long)(now - pc->idle_since));
		pc->no_new_streams = true;
		h2_conn_goaway(c);
	}
}

static void
pc_on_resets_waiting(struct h2_conn *c, uint64_t ms)
{
	struct pconn *pc = c->owner;

	uv_timer_start(&pc->timer, pc_on_timer, ms, pc_tick(&pc->pool->cfg));
}

static struct pconn *
pconn_new(struct hbone_pool *p, const struct h2_open *o, const char *key)
{
	struct tls_conn_opts to = {
		.id = o->src,
		.expect = (const char *const[]){ o->dst_id, NULL },
		.handshake_timeout_ms = p->cfg.connect_timeout_ms,
		.mark = p->cfg.mark,
	};
	struct pconn *pc;
	uint64_t tick;
	int r;

	if (p->nconns >= p->cfg.max_connections)
		return NULL;
	pc = calloc(1, sizeof(*pc));
	if (pc == NULL || (pc->key = strdup(key)) == NULL) {
		free(pc);
		return NULL;
	}
	pc->pool = p;
	pc->c = h2_conn_new(p->loop, false, p->cfg.max_streams, &pool_ops, pc);
	if (pc->c == NULL) {
		free(pc->key);
		free(pc);
		return NULL;
	}
	if (p->cfg.socket_fn != NULL) {
		to.use_fd = true;
		to.fd = p->cfg.socket_fn(p->cfg.socket_arg, o->dst.ss_family);
		if (to.fd < 0) {
			char a[80];

			log_warn("hbone %s: cannot make a socket: %s",
			    sockaddr_str(&o->dst, a, sizeof(a)), amesh_strerror(to.fd));
			h2_conn_free_unstarted(pc->c);
			free(pc->key);
			free(pc);
			p->st.connect_failures++;
			return NULL;
		}
	}
	r = tls_conn_connect(p->loop, (const struct sockaddr *)&o->dst, &to, &h2_tls_cb, pc->c,
	    &pc->c->tls);
	if (r != 0) {
		char a[80];

		log_warn("hbone %s: connect: %s", sockaddr_str(&o->dst, a, sizeof(a)),
		    amesh_strerror(r));
		h2_conn_free_unstarted(pc->c);
		free(pc->key);
		free(pc);
		p->st.connect_failures++;
		return NULL;
	}
	uv_timer_init(p->loop, &pc->timer);
	pc->timer.data = pc;
	tick = pc_tick(&p->cfg);
	uv_timer_start(&pc->timer, pc_on_timer, tick, tick);
	pc->next = p->conns;
	if (p->conns != NULL)
		p->conns->prev = pc;
	p->conns = pc;
	p->nconns++;
	p->st.connections_opened++;
	return pc;
}

/* A connection for key with room for one more stream, or a new one; NULL at the limit. */
static struct pconn *
pick(struct hbone_pool *p, const struct h2_open *o, const char *key, const struct h2_conn *not)
{
	struct pconn *pc;

	for (pc = p->conns; pc != NULL; pc = pc->next) {
		struct h2_conn *c = pc->c;
		uint32_t max = p->cfg.max_streams;

		if (c == NULL || c == not || pc->no_new_streams || c->closing || c->closed ||
		    c->goaway_recv || c->goaway_sent || strcmp(pc->key, key) != 0)
			continue;
		if (c->ready && h2_conn_remote_max_streams(c) < max)
			max = h2_conn_remote_max_streams(c);
		if (c->nstreams < max)
			return pc;
	}
	return pconn_new(p, o, key);
}

static int
place(struct hbone_pool *p, struct hbone_stream *s, const struct h2_conn *not)
{
	char *key = make_key(s->open);
	struct pconn *pc;

	if (key == NULL)
		return AMESH_ERR_NOMEM;
	pc = pick(p, s->open, key, not);
	free(key);
	if (pc == NULL)
		return UV_EAGAIN;
	h2_conn_attach(pc->c, s);
	pc->idle_since = 0;
	if (pc->c->ready) {
		if (h2_conn_submit(pc->c, s) != 0) {
			h2_stream_detach(s);
			return AMESH_ERR_INVALID;
		}
		h2_conn_flush(pc->c);
	}
	return 0;
}

static bool
pc_on_refused(struct h2_conn *c, struct hbone_stream *s)
{
	struct pconn *pc = c->owner;
	struct hbone_pool *p = pc->pool;

	/* The peer is over its limit or going away: stop giving this connection new streams. */
	pc->no_new_streams = true;
	/* Also while draining: the stream carries a connection taken before the drain, which
	 * the drain lets finish (an upgrade: the peer refused it as it handed over to the next
	 * process, whose listener takes the new connection). */
	if (++s->retries > MAX_RETRIES || p->drain_over)
		return false;
	if (place(p, s, c) != 0)
		return false;
	p->st.streams_retried++;
	/* Draining, this connection closes once its last stream is gone (pc_on_stream_gone). */
	if (p->draining && c->nstreams == 0 && !c->closed)
		h2_conn_goaway(c);
	return true;
}

static struct h2_open *
open_copy(const struct hbone_open *o)
{
	struct h2_open *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->src = identity_ref(o->src);
	c->dst_id = strdup(o->dst_id);
	c->authority = strdup(o->authority);
	c->forwarded = o->forwarded ? strdup(o->forwarded) : NULL;
	c->baggage = o->baggage ? strdup(o->baggage) : NULL;
	c->traceparent = o->traceparent ? strdup(o->traceparent) : NULL;
	memcpy(&c->dst, o->dst, o->dst->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in));
	if (c->dst_id == NULL || c->authority == NULL || (o->forwarded && !c->forwarded) ||
	    (o->baggage && !c->baggage) || (o->traceparent && !c->traceparent)) {
		h2_open_free(c);
		return NULL;
	}
	return c;
}

int
hbone_pool_new(uv_loop_t *loop, const struct hbone_pool_cfg *cfg, struct hbone_pool **out)
{
	struct hbone_pool *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (p == NULL)
		return AMESH_ERR_NOMEM;
	p->loop = loop;
	p->cfg = *cfg;
	if (p->cfg.max_streams == 0)
		p->cfg.max_streams = 100;
	if (p->cfg.idle_timeout_ms == 0)
		p->cfg.idle_timeout_ms = 300000;
	if (p->cfg.connect_timeout_ms == 0)
		p->cfg.connect_timeout_ms = 10000;
	if (p->cfg.ping_interval_ms == 0)
		p->cfg.ping_interval_ms = 10000;
	if (p->cfg.ping_timeout_ms == 0)
		p->cfg.ping_timeout_ms = 20000;
	if (p->cfg.max_connections == 0)
		p->cfg.max_connections = 4096;
	uv_timer_init(loop, &p->drain_timer);
	p->drain_timer.data = p;
	*out = p;
	return 0;
}

int
hbone_pool_open(struct hbone_pool *p, const struct hbone_open *o,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out)
{
	struct hbone_stream *s;
	int r;

	*out = NULL;
	if (p->draining)
		return UV_ESHUTDOWN;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return AMESH_ERR_NOMEM;
	s->open = open_copy(o);
	if (s->open == NULL) {
		free(s);
		return AMESH_ERR_NOMEM;
	}
	s->cb = cb;
	s->user = user;
	r = place(p, s, NULL);
	if (r != 0) {
		h2_stream_free(s);
		return r;
	}
	p->st.streams_opened++;
	*out = s;
	return 0;
}

static void
drain_timer_closed(uv_handle_t *h)
{
	struct hbone_pool *p = h->data;

	if (p->drain_done != NULL)
		p->drain_done(p->drain_arg);
	free(p);
}

static void
pool_maybe_done(struct hbone_pool *p)
{
	if (!p->draining || p->nconns > 0 || uv_is_closing((uv_handle_t *)&p->drain_timer))
		return;
	uv_timer_stop(&p->drain_timer);
	uv_close((uv_handle_t *)&p->drain_timer, drain_timer_closed);
}

static void
on_pool_drain_timeout(uv_timer_t *t)
{
	struct hbone_pool *p = t->data;
	struct pconn *pc, *next;

	p->drain_over = true; /* what is reset now stays reset: no new connection outlives this */
	for (pc = p->conns; pc != NULL; pc = next) {
		next = pc->next;
		if (pc->c != NULL)
			h2_conn_abort(pc->c);
	}
}

void
hbone_pool_drain(struct hbone_pool *p, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	struct pconn *pc, *next;

	if (p->draining)
		return;
	p->draining = true;
	p->drain_done = done;
	p->drain_arg = arg;
	for (pc = p->conns; pc != NULL; pc = next) {
		next = pc->next;
		pc->no_new_streams = true;
		if (pc->c != NULL)
			h2_conn_goaway(pc->c);
	}
	if (p->nconns > 0)
		uv_timer_start(&p->drain_timer, on_pool_drain_timeout, timeout_ms, 0);
	pool_maybe_done(p);
}

void
hbone_pool_stats(const struct hbone_pool *p, struct hbone_pool_stats *st)
{
	const struct pconn *pc;

	*st = p->st;
	st->connections = p->nconns;
	st->streams = 0;
	for (pc = p->conns; pc != NULL; pc = pc->next)
		if (pc->c != NULL)
			st->streams += pc->c->nstreams;
}
