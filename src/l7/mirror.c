/* SPDX-License-Identifier: Apache-2.0 */
/* Mirroring of HTTP/1.1 requests (mirror.h): a copy on its own tunnel, fire and forget. */
#include "config.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "l7/mirror.h"
#include "l7/tunnel.h"

/*
 * A mirrored request asks the application to close after answering, ends its side once the
 * request is written, and frees itself when the tunnel closes.
 */
struct mirror {
	struct waypoint *wp;
	struct mirror **slot; /* the request's pointer to it, while its body is being copied */
	struct hbone_stream *s;
	struct l7_sendq out;  /* at most WP_BUF */
	uv_timer_t timer; /* WP_MIRROR_TIMEOUT_MS: a copy never lingers */
	bool up, done, chunked;
};

static void
mirror_close(struct mirror *m, bool reset)
{
	if (m->s == NULL)
		return;
	if (reset) {
		hbone_stream_reset(m->s, NGHTTP2_CANCEL);
	} else {
		m->done = true;
		if (m->up && l7_sendq_len(&m->out) == 0)
			hbone_stream_shutdown(m->s);
	}
}

static void
mirror_flush(struct mirror *m)
{
	if (m->s == NULL || !m->up)
		return;
	l7_sendq_flush(&m->out, m->s);
	/* The write may have closed the stream (m_on_close): then m->s is NULL. */
	if (m->s != NULL && m->done && l7_sendq_len(&m->out) == 0)
		hbone_stream_shutdown(m->s);
}

/* The copy may not hold back the request: too far behind (WP_BUF), it is given up. */
static int
w_mirror(void *arg, const void *data, size_t len)
{
	struct mirror *m = arg;

	return l7_sendq_put(&m->out, data, len);
}

static void
m_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	hbone_stream_consumed(s, len); /* the answer is not wanted */
}

static void
m_on_eof(struct hbone_stream *s)
{
	struct mirror *m = hbone_stream_user(s);

	mirror_close(m, !m->done);
}

static void
m_on_writable(struct hbone_stream *s)
{
	mirror_flush(hbone_stream_user(s));
}

static void
m_on_response(struct hbone_stream *s, int status)
{
	struct mirror *m = hbone_stream_user(s);

	if (status != 200)
		return; /* on_close follows */
	m->up = true;
	mirror_flush(m);
}

static void
m_timer_closed(uv_handle_t *h)
{
	struct mirror *m = h->data;
	struct waypoint *wp = m->wp;

	l7_sendq_reset(&m->out);
	free(m);
	wp->mirrors_open--;
	wp->gone(wp);
}

static void
m_on_timeout(uv_timer_t *h)
{
	struct mirror *m = h->data;

	if (m->s != NULL)
		hbone_stream_reset(m->s, NGHTTP2_CANCEL);
}

/* The tunnel is gone: m goes once its timer is closed, on the loop, so that a caller still
 * inside a write to it (this may run from there) is not left with freed memory. */
static void
m_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct mirror *m = hbone_stream_user(s);

	if (m->slot != NULL)
		*m->slot = NULL; /* gone before the body was all copied */
	m->slot = NULL;
	m->s = NULL;
	uv_close((uv_handle_t *)&m->timer, m_timer_closed); /* mirrors_open counts it until then */
}

static const struct hbone_stream_cb mirror_cb = {
	.on_data = m_on_data,
	.on_eof = m_on_eof,
	.on_writable = m_on_writable,
	.on_response = m_on_response,
	.on_close = m_on_close,
};

void
l7_mirror_detach(struct mirror **slot, bool complete)
{
	struct mirror *m = *slot;

	if (m == NULL)
		return;
	*slot = NULL;
	m->slot = NULL;
	mirror_close(m, !complete);
}

void
l7_mirror_start(struct tun *t, const struct reg_route *rt, const struct h1_head *req,
    const char *target, const char *traceparent, struct mirror **slot)
{
	struct waypoint *wp = t->wp;
	const struct reg_service *ms = rt->mirror_p;
	/* A random endpoint: the round robin of the requests themselves stays undisturbed. */
	const struct reg_workload *ep = ms->n_endpoints ?
	    ms->endpoints[wp_rnd() % ms->n_endpoints] : NULL;
	uint16_t port = ms->ports.n ? ms->ports.v[0].target : t->port;
	char host[320];
	struct h1_field set[1];
	struct h1_edits e = { 0 };
	struct h1_head out = *req;
	struct h1_writer w;
	struct mirror *m;

	*slot = NULL;
	for (size_t i = 0; i < ms->ports.n; i++)
		if (ms->ports.v[i].port == t->port)
			port = ms->ports.v[i].target;
	if (ep == NULL || wp->mirrors_open >= WP_MAX_MIRRORS || (m = calloc(1, sizeof(*m))) == NULL) {
		wp->st.mirrors_dropped++;
		return;
	}
	m->wp = wp;
	buf_init(&m->out.b, WP_BUF);
	snprintf(host, sizeof(host), "%s-shadow", req->host ? req->host : t->authority);
	set[0] = (struct h1_field){ "host", host };
	e.set = set;
	e.n_set = 1;
	e.connection = "close";
	if (target != NULL) {
		out.target = target;
		out.target_len = strlen(target);
	}
	m->chunked = out.framing == H1_FRAMING_CHUNKED;
	w = (struct h1_writer){ w_mirror, m };
	if (h1_write_head(&w, &out, &e) != 0 ||
	    wp_open_upstream(t, ep, port, traceparent, &mirror_cb, m, &m->s) != 0) {
		l7_sendq_reset(&m->out);
		free(m);
		wp->st.mirrors_dropped++;
		return;
	}
	wp->mirrors_open++;
	wp->st.mirrors++;
	uv_timer_init(wp->loop, &m->timer);
	m->timer.data = m;
	uv_timer_start(&m->timer, m_on_timeout, WP_MIRROR_TIMEOUT_MS, 0);
	*slot = m;
	m->slot = slot;
}

void
l7_mirror_body(struct mirror **slot, const uint8_t *data, size_t len, bool end)
{
	struct mirror *m = *slot;
	struct h1_writer w = { w_mirror, m };
	int r = 0;

	if (m == NULL)
		return;
	if (len > 0)
		r = m->chunked ? h1_write_chunk(&w, data, len) : w_mirror(m, data, len);
	if (r == 0 && end && m->chunked)
		r = h1_write_last_chunk(&w, NULL, 0);
	if (r != 0) {
		m->wp->st.mirrors_dropped++;
		l7_mirror_detach(slot, false);
		return;
	}
	mirror_flush(m);
	if (end)
		l7_mirror_detach(slot, true);
}
