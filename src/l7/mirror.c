/* SPDX-License-Identifier: Apache-2.0 */
/* Mirroring of HTTP/1.1 and HTTP/2 requests (mirror.h): a copy on its own tunnel, fire and
 * forget. */
#include "config.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "l7/mirror.h"
#include "l7/route.h"
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
	/* An HTTP/2 copy: its h2c client session once the tunnel is up, the request's fields until
	 * then (nv, pointing into store), its body waiting for the session (at most WP_BUF). */
	nghttp2_session *h2;
	nghttp2_nv *nv;
	size_t nnv;
	char *store;
	struct buf body;
	bool h2_copy, body_end, in_h2;
};

static void h2m_send(struct mirror *m);
static void h2m_begin(struct mirror *m);

static void
mirror_close(struct mirror *m, bool reset)
{
	if (m->s == NULL)
		return;
	if (m->h2_copy && !reset) {
		/* The request's end goes as the END_STREAM of its DATA; the tunnel ends with the
		 * answer (h2_on_close). */
		m->body_end = true;
		if (m->h2 != NULL)
			nghttp2_session_resume_data(m->h2, 1);
		h2m_send(m);
		return;
	}
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
	if (m->h2 != NULL) {
		h2m_send(m);
		return;
	}
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
	struct mirror *m = hbone_stream_user(s);

	hbone_stream_consumed(s, len); /* the answer is not wanted */
	if (m->h2 != NULL) {
		/* Read (and dropped) by the session, which returns its windows by itself. */
		m->in_h2 = true;
		if (nghttp2_session_mem_recv(m->h2, data, len) < 0 && m->s != NULL)
			hbone_stream_reset(m->s, NGHTTP2_CANCEL);
		m->in_h2 = false;
		h2m_send(m);
	}
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
	if (m->h2_copy)
		h2m_begin(m);
	mirror_flush(m);
}

static void
m_timer_closed(uv_handle_t *h)
{
	struct mirror *m = h->data;
	struct waypoint *wp = m->wp;

	l7_sendq_reset(&m->out);
	if (m->h2 != NULL)
		nghttp2_session_del(m->h2);
	free(m->nv);
	free(m->store);
	buf_reset(&m->body);
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

/* --- HTTP/2 copies: an h2c client session in the tunnel --- */

static ssize_t
h2m_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *user)
{
	struct mirror *m = user;

	if (m->s == NULL || l7_sendq_len(&m->out) >= WP_BUF)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (l7_sendq_put(&m->out, data, len) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static ssize_t
h2m_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *user)
{
	struct mirror *m = user;
	size_t n = buf_len(&m->body);

	if (n == 0) {
		if (!m->body_end)
			return NGHTTP2_ERR_DEFERRED;
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	if (n > len)
		n = len;
	memcpy(buf, buf_ptr(&m->body), n);
	buf_consume(&m->body, n);
	return (ssize_t)n;
}

/* The copy's stream ended (answered, or reset): its tunnel goes. */
static int
h2m_on_close(nghttp2_session *s, int32_t sid, uint32_t err, void *user)
{
	struct mirror *m = user;

	m->done = true;
	return 0;
}

/* Lets the session write what it has, then ends the tunnel when the copy is over. */
static void
h2m_send(struct mirror *m)
{
	if (m->h2 == NULL || m->in_h2 || m->s == NULL)
		return;
	m->in_h2 = true;
	if (nghttp2_session_send(m->h2) != 0) {
		m->in_h2 = false;
		hbone_stream_reset(m->s, NGHTTP2_CANCEL);
		return;
	}
	m->in_h2 = false;
	l7_sendq_flush(&m->out, m->s);
	if (m->s != NULL && m->done && l7_sendq_len(&m->out) == 0)
		hbone_stream_shutdown(m->s);
}

static nghttp2_session_callbacks *h2m_callbacks;
static pthread_mutex_t h2m_callbacks_mu = PTHREAD_MUTEX_INITIALIZER;

/* The tunnel is up: the session, its request (the fields kept), then the body as it comes. */
static void
h2m_begin(struct mirror *m)
{
	nghttp2_data_provider dp = { .source.ptr = m, .read_callback = h2m_read };
	nghttp2_settings_entry iv[] = { { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 } };
	nghttp2_session_callbacks *cbs;

	/* Made once, by the first worker that mirrors HTTP/2. */
	pthread_mutex_lock(&h2m_callbacks_mu);
	if (h2m_callbacks == NULL && nghttp2_session_callbacks_new(&h2m_callbacks) == 0) {
		nghttp2_session_callbacks_set_send_callback(h2m_callbacks, h2m_send_cb);
		nghttp2_session_callbacks_set_on_stream_close_callback(h2m_callbacks,
		    h2m_on_close);
	}
	cbs = h2m_callbacks;
	pthread_mutex_unlock(&h2m_callbacks_mu);
	if (cbs == NULL)
		goto fail;
	if (nghttp2_session_client_new(&m->h2, cbs, m) != 0) {
		m->h2 = NULL;
		goto fail;
	}
	nghttp2_submit_settings(m->h2, NGHTTP2_FLAG_NONE, iv, 1);
	if (nghttp2_submit_request(m->h2, NULL, m->nv, m->nnv, &dp, m) < 0)
		goto fail;
	free(m->nv); /* nghttp2 copied the fields */
	free(m->store);
	m->nv = NULL;
	m->store = NULL;
	h2m_send(m);
	return;
fail:
	m->wp->st.mirrors_dropped++;
	hbone_stream_reset(m->s, NGHTTP2_CANCEL);
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

/* The endpoint and port of rt's mirror service for tunnel t's port, or NULL. */
static const struct reg_workload *
mirror_target(struct tun *t, const struct reg_route *rt, uint16_t *port)
{
	const struct reg_service *ms = rt->mirror_p;

	*port = ms->ports.n ? ms->ports.v[0].target : t->port;
	for (size_t i = 0; i < ms->ports.n; i++)
		if (ms->ports.v[i].port == t->port)
			*port = ms->ports.v[i].target;
	/* A random endpoint: the round robin of the requests themselves stays undisturbed. */
	return ms->n_endpoints ? ms->endpoints[wp_rnd() % ms->n_endpoints] : NULL;
}

void
l7_mirror_h2_start(struct tun *t, const struct reg_route *rt, const char *method,
    const char *authority, const char *path, const struct hdr *fields, size_t n,
    const char *traceparent, struct mirror **slot)
{
	struct waypoint *wp = t->wp;
	uint16_t port;
	const struct reg_workload *ep = mirror_target(t, rt, &port);
	const char *pseudo[4][2] = { { ":method", method }, { ":scheme", "http" },
		{ ":authority", authority }, { ":path", path } };
	size_t total = 0, off = 0, k = 0;
	struct mirror *m;

	*slot = NULL;
	if (ep == NULL || wp->mirrors_open >= WP_MAX_MIRRORS || (m = calloc(1, sizeof(*m))) == NULL) {
		wp->st.mirrors_dropped++;
		return;
	}
	m->wp = wp;
	m->h2_copy = true;
	buf_init(&m->out.b, WP_BUF);
	buf_init(&m->body, WP_BUF);
	/* The fields, copied back to back: the request's go away before the tunnel is up. */
	for (size_t i = 0; i < 4; i++)
		total += strlen(pseudo[i][0]) + strlen(pseudo[i][1]) + 2;
	total += 7; /* "-shadow" */
	for (size_t i = 0; i < n; i++)
		total += strlen(fields[i].name) + strlen(fields[i].value) + 2;
	m->nv = calloc(n + 4, sizeof(*m->nv));
	m->store = malloc(total);
	if (m->nv == NULL || m->store == NULL)
		goto drop;
	for (size_t i = 0; i < 4 + n; i++) {
		const char *nm = i < 4 ? pseudo[i][0] : fields[i - 4].name;
		const char *v = i < 4 ? pseudo[i][1] : fields[i - 4].value;
		char *np = m->store + off, *vp;
		int len;

		if (i >= 4 && nm[0] == ':')
			continue;
		memcpy(np, nm, strlen(nm) + 1);
		off += strlen(nm) + 1;
		vp = m->store + off;
		len = snprintf(vp, total - off, "%s%s", v, i == 2 ? "-shadow" : "");
		off += (size_t)len + 1;
		m->nv[k++] = (nghttp2_nv){ (uint8_t *)np, (uint8_t *)vp, strlen(np), (size_t)len,
			NGHTTP2_NV_FLAG_NONE };
	}
	m->nnv = k;
	if (wp_open_upstream(t, ep, port, traceparent, &mirror_cb, m, &m->s) != 0)
		goto drop;
	wp->mirrors_open++;
	wp->st.mirrors++;
	uv_timer_init(wp->loop, &m->timer);
	m->timer.data = m;
	uv_timer_start(&m->timer, m_on_timeout, WP_MIRROR_TIMEOUT_MS, 0);
	*slot = m;
	m->slot = slot;
	return;
drop:
	free(m->nv);
	free(m->store);
	l7_sendq_reset(&m->out);
	free(m);
	wp->st.mirrors_dropped++;
}

void
l7_mirror_body(struct mirror **slot, const uint8_t *data, size_t len, bool end)
{
	struct mirror *m = *slot;
	struct h1_writer w = { w_mirror, m };
	int r = 0;

	if (m == NULL)
		return;
	if (m->h2_copy) {
		if (len > 0 && buf_put(&m->body, data, len) != 0) {
			m->wp->st.mirrors_dropped++; /* fell behind: given up */
			l7_mirror_detach(slot, false);
			return;
		}
		if (m->h2 != NULL)
			nghttp2_session_resume_data(m->h2, 1);
		h2m_send(m);
		if (end)
			l7_mirror_detach(slot, true);
		return;
	}
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
