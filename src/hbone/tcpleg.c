/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HBONE stream API on a plain TCP connection (hbone.h, "plain TCP legs"): the sidecar's legs
 * to and from its own application, so src/l7 drives them with the calls it uses for tunnels.
 * Bounded as a tunnel is: at most HBONE_STREAM_SEND_BUF bytes queued for the socket, and reading
 * stops while HBONE_STREAM_WINDOW bytes wait for hbone_stream_consumed().
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "hbone/h2.h"
#include "net/netns.h"

/* A leg its owner let go of (callbacks cleared) is reset this long after our FIN if the peer
 * has not closed its side by then. */
#define LEG_LINGER_MS 5000

struct tcp_leg {
	struct hbone_stream s;
	uv_tcp_t h;
	uv_timer_t linger;
	int handles; /* h and linger, until both are closed */
	uv_connect_t creq;
	uv_shutdown_t sreq;
	size_t queued;     /* bytes handed to uv_write and not written yet */
	size_t unconsumed; /* bytes given to on_data and not yet consumed */
	bool connecting, reading, eof, fin_wanted, fin_started, fin_sent, closing, reset, blocked;
	uint8_t rbuf[16384];
};

struct leg_write {
	uv_write_t req;
	struct tcp_leg *l;
	size_t len;
	uint8_t data[];
};

static void
on_closed(uv_handle_t *h)
{
	struct tcp_leg *l = h->data;
	struct hbone_stream *s = &l->s;

	if (--l->handles > 0)
		return;
	if (s->cb != NULL && s->cb->on_close != NULL)
		s->cb->on_close(s, l->reset, l->reset ? NGHTTP2_CANCEL : NGHTTP2_NO_ERROR);
	free(l);
}

/* Ends the leg: an RST when reset (or on an error), else a plain close after FIN both ways. */
static void
leg_close(struct tcp_leg *l, bool reset)
{
	if (l->closing)
		return;
	l->closing = true;
	l->reset = reset;
	uv_timer_stop(&l->linger);
	uv_close((uv_handle_t *)&l->linger, on_closed);
	if (reset && !l->connecting) {
		/* Not uv_tcp_close_reset: it refuses while a shutdown is pending. */
		uv_os_fd_t fd;

		if (uv_fileno((uv_handle_t *)&l->h, &fd) == 0)
			sock_rst_on_close(fd);
	}
	uv_close((uv_handle_t *)&l->h, on_closed);
}

static void
on_linger(uv_timer_t *t)
{
	leg_close(t->data, true);
}

static void
maybe_done(struct tcp_leg *l)
{
	if (l->eof && l->fin_sent)
		leg_close(l, false);
}

static void
alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct tcp_leg *l = h->data;

	size_t room = HBONE_STREAM_WINDOW - l->unconsumed;

	(void)hint;
	/* The owner copies what it keeps during on_data, so one buffer serves every read; never
	 * more than the window has room for, as a peer's HTTP/2 flow control would allow. */
	if (room > sizeof(l->rbuf))
		room = sizeof(l->rbuf);
	*buf = uv_buf_init((char *)l->rbuf, (unsigned)room);
}

static void
read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct tcp_leg *l = st->data;
	struct hbone_stream *s = &l->s;

	(void)buf;
	if (n == 0 || l->closing)
		return;
	if (n < 0) {
		uv_read_stop(st);
		l->reading = false;
		if (n != UV_EOF) {
			log_debug("tcp leg: read: %s", amesh_strerror((int)n));
			leg_close(l, true);
			return;
		}
		l->eof = true;
		if (s->cb != NULL && s->cb->on_eof != NULL)
			s->cb->on_eof(s);
		if (!l->closing)
			maybe_done(l);
		return;
	}
	if (s->cb == NULL || s->cb->on_data == NULL)
		return; /* nobody reads it: dropped */
	l->unconsumed += (size_t)n;
	s->cb->on_data(s, l->rbuf, (size_t)n);
	/* Backpressure: the owner has not passed these on yet. */
	if (!l->closing && l->reading && l->unconsumed >= HBONE_STREAM_WINDOW) {
		uv_read_stop(st);
		l->reading = false;
	}
}

static void
start_reading(struct tcp_leg *l)
{
	if (l->reading || l->eof || l->closing || l->connecting ||
	    l->unconsumed >= HBONE_STREAM_WINDOW)
		return;
	if (uv_read_start((uv_stream_t *)&l->h, alloc_cb, read_cb) == 0)
		l->reading = true;
	else
		leg_close(l, true);
}

static void
shutdown_cb(uv_shutdown_t *req, int status)
{
	struct tcp_leg *l = req->data;

	if (status == UV_ECANCELED || l->closing)
		return;
	if (status < 0) {
		leg_close(l, true);
		return;
	}
	l->fin_sent = true;
	maybe_done(l);
}

static void
send_fin(struct tcp_leg *l)
{
	if (l->fin_started)
		return;
	l->fin_started = true;
	l->sreq.data = l;
	if (uv_shutdown(&l->sreq, (uv_stream_t *)&l->h, shutdown_cb) != 0)
		leg_close(l, true);
}

static void
write_cb(uv_write_t *req, int status)
{
	struct leg_write *w = (struct leg_write *)req;
	struct tcp_leg *l = w->l;
	struct hbone_stream *s = &l->s;

	l->queued -= w->len;
	free(w);
	if (l->closing)
		return;
	if (status < 0) {
		leg_close(l, true);
		return;
	}
	if (l->blocked && l->queued < HBONE_STREAM_SEND_BUF) {
		l->blocked = false;
		if (s->cb != NULL && s->cb->on_writable != NULL)
			s->cb->on_writable(s);
	}
}

size_t
tcpleg_write(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct tcp_leg *l = s->tcp;
	size_t take, done = 0;
	struct leg_write *w;
	uv_buf_t b;

	if (l->closing || l->fin_wanted || len == 0)
		return 0;
	if (l->connecting || l->queued >= HBONE_STREAM_SEND_BUF) {
		l->blocked = true;
		return 0;
	}
	if (l->queued == 0) {
		/* Straight to the socket what it takes now; only the rest counts against the bound
		 * (so that a refusal is always followed by a write_cb, hence on_writable). */
		int n;

		b = uv_buf_init((char *)data, len > UINT32_MAX / 2 ? UINT32_MAX / 2 : (unsigned)len);
		n = uv_try_write((uv_stream_t *)&l->h, &b, 1);
		if (n > 0)
			done = (size_t)n;
		else if (n != UV_EAGAIN && n != 0) {
			leg_close(l, true);
			return 0;
		}
		if (done == len)
			return len;
	}
	take = HBONE_STREAM_SEND_BUF - l->queued;
	if (take > len - done)
		take = len - done;
	if (done + take < len)
		l->blocked = true;
	take += done; /* from here: bytes taken in all, done of them written */
	w = malloc(sizeof(*w) + (take - done));
	if (w == NULL) {
		leg_close(l, true);
		return 0;
	}
	w->l = l;
	w->len = take - done;
	memcpy(w->data, data + done, w->len);
	b = uv_buf_init((char *)w->data, (unsigned)w->len);
	if (uv_write(&w->req, (uv_stream_t *)&l->h, &b, 1, write_cb) != 0) {
		free(w);
		leg_close(l, true);
		return 0;
	}
	l->queued += w->len;
	return take;
}

bool
tcpleg_writable(const struct hbone_stream *s)
{
	const struct tcp_leg *l = s->tcp;

	return !l->closing && !l->fin_wanted && !l->connecting &&
	    l->queued < HBONE_STREAM_SEND_BUF;
}

void
tcpleg_shutdown(struct hbone_stream *s)
{
	struct tcp_leg *l = s->tcp;

	if (l->fin_wanted || l->closing)
		return;
	l->fin_wanted = true;
	if (!l->connecting)
		send_fin(l); /* uv_shutdown waits for the queued writes */
}

void
tcpleg_reset(struct hbone_stream *s)
{
	leg_close(s->tcp, true);
}

/* The owner let go (callbacks cleared): what still comes is read and dropped, so that the peer's
 * FIN is seen, and a peer that never sends one is reset LEG_LINGER_MS after ours. */
void
tcpleg_detached(struct hbone_stream *s)
{
	struct tcp_leg *l = s->tcp;

	if (l->closing)
		return;
	l->unconsumed = 0;
	start_reading(l);
	if (!uv_is_active((uv_handle_t *)&l->linger))
		uv_timer_start(&l->linger, on_linger, LEG_LINGER_MS, 0);
}

void
tcpleg_consumed(struct hbone_stream *s, size_t n)
{
	struct tcp_leg *l = s->tcp;

	l->unconsumed -= n < l->unconsumed ? n : l->unconsumed;
	if (!l->reading && l->unconsumed < HBONE_STREAM_WINDOW)
		start_reading(l);
}

static struct tcp_leg *
leg_new(uv_loop_t *loop, int fd, const struct hbone_stream_cb *cb, void *user, int *err)
{
	struct tcp_leg *l = calloc(1, sizeof(*l));

	*err = UV_ENOMEM;
	if (l == NULL) {
		close(fd);
		return NULL;
	}
	uv_tcp_init(loop, &l->h);
	uv_timer_init(loop, &l->linger);
	l->h.data = l->linger.data = l;
	l->handles = 2;
	if ((*err = uv_tcp_open(&l->h, fd)) != 0) {
		close(fd);
		l->s.cb = NULL;
		leg_close(l, false);
		return NULL;
	}
	uv_tcp_nodelay(&l->h, 1);
	l->s.tcp = l;
	l->s.cb = cb;
	l->s.user = user;
	return l;
}

int
hbone_tcp_accepted(uv_loop_t *loop, int fd, const struct hbone_stream_cb *cb, void *user,
    struct hbone_stream **out)
{
	int err;
	struct tcp_leg *l = leg_new(loop, fd, cb, user, &err);

	*out = NULL;
	if (l == NULL)
		return err;
	start_reading(l);
	*out = &l->s;
	return 0;
}

static void
connect_cb(uv_connect_t *req, int status)
{
	struct tcp_leg *l = req->data;
	struct hbone_stream *s = &l->s;

	if (status == UV_ECANCELED || l->closing)
		return;
	l->connecting = false;
	if (status < 0) {
		if (s->cb != NULL && s->cb->on_response != NULL)
			s->cb->on_response(s, status);
		leg_close(l, true);
		return;
	}
	if (s->cb != NULL && s->cb->on_response != NULL)
		s->cb->on_response(s, 200);
	if (l->closing)
		return;
	start_reading(l);
	if (l->fin_wanted)
		send_fin(l); /* unless on_response sent it already */
	else if (l->blocked) {
		l->blocked = false;
		if (s->cb != NULL && s->cb->on_writable != NULL)
			s->cb->on_writable(s);
	}
}

int
hbone_tcp_connect(uv_loop_t *loop, int fd, const struct sockaddr *dst,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out)
{
	int err;
	struct tcp_leg *l = leg_new(loop, fd, cb, user, &err);

	*out = NULL;
	if (l == NULL)
		return err;
	l->connecting = true;
	l->creq.data = l;
	if ((err = uv_tcp_connect(&l->creq, &l->h, dst, connect_cb)) != 0) {
		l->s.cb = NULL; /* no callback when it fails here */
		l->connecting = false;
		leg_close(l, false);
		return err;
	}
	*out = &l->s;
	return 0;
}
