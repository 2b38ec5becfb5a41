/* SPDX-License-Identifier: Apache-2.0 */
/* The two-way pump of relay.h. Each direction moves bytes from a reader to a writer and pauses the
 * reader while the writer holds buffer_size bytes it has not written.
 *
 * Bytes from an HBONE stream arrive a DATA frame piece at a time (one TLS record holds parts of
 * two frames when frames and records do not line up), and a write() to the local socket each
 * costs the whole TCP send and, on veth and loopback, the receiver's softirq too. So they are
 * gathered per loop turn, up to buffer_size, and written at the end of the turn (the check
 * phase after the reads that brought them, or the prepare phase before the loop would block):
 * one write per turn instead of one or two per frame. One check and one prepare handle per
 * thread serve all its relays; they live while the thread has relays. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/worker.h"
#include "hbone/hbone.h"
#include "hbone/relay.h"

#define DEFAULT_BUFFER (64u * 1024)

/* A TCP write in flight with its own copy of the bytes. */
struct wreq {
	uv_write_t req;
	struct relay *r;
	int dir;    /* the direction it belongs to: 0 A->B, 1 B->A */
	size_t off; /* data[off..off+len) is what is left to write */
	size_t len;
	bool from_stream; /* bytes came from an HBONE stream: return the window when written */
	bool spare;       /* a gather buffer of DEFAULT_BUFFER: back to the spares when done */
	uint8_t data[];
};

struct relay {
	uv_loop_t *loop;
	struct relay_cfg cfg;
	uv_tcp_t tcp[2];   /* A, and B when B is TCP */
	bool b_is_stream;
	struct hbone_stream *s;
	uv_timer_t idle;
	int open_handles;
	bool started, done_called, aborting;

	/* per direction d: reader side d, writer side 1-d */
	struct {
		bool reading;     /* uv_read_start active on tcp[d] */
		bool eof;         /* the reader side ended (FIN or END_STREAM) */
		bool shut;        /* we passed the end on to the writer */
		size_t queued;    /* bytes written to tcp[1-d] (or held for the stream) not yet done */
		uint8_t *pending; /* bytes the stream did not take yet (A->stream only) */
		size_t plen, pcap;
		uint64_t bytes;
	} d[2];
	uv_shutdown_t shut_req[2];
	struct relay_stats st;
	bool stream_closed;
	bool in_push, push_again;

	/* Bytes from the stream gathered for one write at the end of the turn (d[1].queued counts
	 * them); NULL when none, or when the thread has no turn (then every piece is written). */
	struct turn *turn;
	struct wreq *gather;
	size_t gather_cap;
	struct relay *turn_next; /* in turn->head's list while gather holds bytes */
};

static void maybe_done(struct relay *r);
static void update_reads(struct relay *r);
static void wreq_free(struct wreq *w);

/*
 * The end-of-turn flush of one thread's loop (see the top of this file): relays holding gathered
 * bytes are listed until the turn ends. Made by the thread's first relay, closed with its last
 * one (a worker loop must close with no handle left), and made anew after that.
 */
struct turn {
	uv_check_t check;
	uv_prepare_t prepare;
	uv_loop_t *loop;
	struct relay *head;  /* relays with gathered bytes, in the order they got them */
	struct relay **tail;
	unsigned relays;     /* relays using it */
	int handles;         /* open handles, to free it once both are closed */
	bool armed;
};
static _Thread_local struct turn *turn;

/*
 * Reads land in one buffer per thread: on_read copies every byte out before it returns (into a
 * TCP write or the stream), so no relay needs a read buffer of its own, and an idle relay holds
 * none. Bytes the stream could not take wait in a pending buffer; those come from a short list of
 * spares so a busy tunnel does not malloc and free 64 KiB per read.
 */
static _Thread_local uint8_t *read_buf;
static _Thread_local size_t read_buf_cap;
#define SPARE_PENDING 8
static _Thread_local uint8_t *spare_pending[SPARE_PENDING];
static _Thread_local unsigned n_spare_pending;
/* Gather buffers (see the top of this file) the same way: a malloc and free of 64 KiB per turn
 * makes glibc trim and regrow the heap (brk, page faults, TLB shootdowns on every turn). */
#define SPARE_GATHER 8
static _Thread_local struct wreq *spare_gather[SPARE_GATHER];
static _Thread_local unsigned n_spare_gather;

static _Thread_local bool bufs_hooked;

/* A worker thread's read buffer and spares go with it (core/worker.h). */
static void
bufs_free(void)
{
	free(read_buf);
	read_buf = NULL;
	read_buf_cap = 0;
	while (n_spare_pending > 0)
		free(spare_pending[--n_spare_pending]);
	while (n_spare_gather > 0)
		free(spare_gather[--n_spare_gather]);
}

static void
bufs_hook(void)
{
	if (!bufs_hooked) {
		bufs_hooked = true;
		worker_at_thread_exit(bufs_free);
	}
}

static uint8_t *
pending_get(size_t size)
{
	if (size == DEFAULT_BUFFER && n_spare_pending > 0)
		return spare_pending[--n_spare_pending];
	return malloc(size);
}

static void
pending_put(uint8_t *b, size_t size)
{
	if (b != NULL && size == DEFAULT_BUFFER && n_spare_pending < SPARE_PENDING) {
		bufs_hook();
		spare_pending[n_spare_pending++] = b;
	} else
		free(b);
}

static void
turn_handle_closed(uv_handle_t *h)
{
	struct turn *t = h->data;

	if (--t->handles == 0)
		free(t);
}

/* The thread's turn, made if needed; NULL if out of memory (the relay then writes at once). */
static struct turn *
turn_get(uv_loop_t *loop)
{
	struct turn *t = turn;

	if (t != NULL && t->loop != loop)
		return NULL; /* one loop per thread everywhere; another one just writes at once */
	if (t == NULL) {
		t = calloc(1, sizeof(*t));
		if (t == NULL)
			return NULL;
		t->loop = loop;
		t->tail = &t->head;
		uv_check_init(loop, &t->check);
		uv_prepare_init(loop, &t->prepare);
		t->check.data = t->prepare.data = t;
		t->handles = 2;
		turn = t;
	}
	t->relays++;
	return t;
}

static void
turn_put(struct turn *t)
{
	if (t == NULL || --t->relays > 0)
		return;
	if (turn == t)
		turn = NULL;
	uv_close((uv_handle_t *)&t->check, turn_handle_closed);
	uv_close((uv_handle_t *)&t->prepare, turn_handle_closed);
}

static void
unlist(struct relay *r)
{
	struct turn *t = r->turn;

	for (struct relay **p = &t->head; *p != NULL; p = &(*p)->turn_next) {
		if (*p == r) {
			*p = r->turn_next;
			if (t->tail == &r->turn_next)
				t->tail = p;
			r->turn_next = NULL;
			return;
		}
	}
}

/* Gathered bytes that will never be written (the relay is failing or gone). */
static void
drop_gathered(struct relay *r)
{
	if (r->gather == NULL)
		return;
	unlist(r);
	r->d[1].queued -= r->gather->len;
	wreq_free(r->gather);
	r->gather = NULL;
}

static void
wreq_free(struct wreq *w)
{
	if (w->spare && n_spare_gather < SPARE_GATHER) {
		bufs_hook();
		spare_gather[n_spare_gather++] = w;
	} else
		free(w);
}

static void
on_closed(uv_handle_t *h)
{
	struct relay *r = h->data;

	if (--r->open_handles > 0)
		return;
	if (!r->done_called && r->cfg.on_done != NULL) {
		r->done_called = true;
		r->cfg.on_done(r, &r->st, r->cfg.user);
	}
	for (int i = 0; i < 2; i++)
		pending_put(r->d[i].pending, r->d[i].pcap);
	drop_gathered(r);
	turn_put(r->turn);
	free(r);
}

static void
close_all(struct relay *r, bool reset)
{
	if (r->aborting)
		return;
	r->aborting = true;
	if (reset)
		r->st.reset = true;
	drop_gathered(r);
	uv_timer_stop(&r->idle);
	uv_close((uv_handle_t *)&r->idle, on_closed);
	for (int i = 0; i < (r->b_is_stream ? 1 : 2); i++) {
		if (uv_is_closing((uv_handle_t *)&r->tcp[i]))
			continue;
		if (!reset || uv_tcp_close_reset(&r->tcp[i], on_closed) != 0)
			uv_close((uv_handle_t *)&r->tcp[i], on_closed);
	}
	if (r->b_is_stream && r->s != NULL && !r->stream_closed) {
		struct hbone_stream *s = r->s;

		/* The RST_STREAM may only go out later (the TLS queue is full) and we are freed once
		 * our handles close: let go of the stream first, so no callback reaches us after. */
		r->s = NULL;
		r->stream_closed = true;
		hbone_stream_set_cb(s, NULL, NULL);
		hbone_stream_reset(s, reset ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL);
	}
}

static void
touch(struct relay *r)
{
	if (r->cfg.idle_timeout_ms > 0 && !r->aborting)
		uv_timer_again(&r->idle);
}

static void
on_idle(uv_timer_t *t)
{
	struct relay *r = t->data;

	r->st.idle_timeout = true;
	log_debug("relay: idle for %llu ms: closing", (unsigned long long)r->cfg.idle_timeout_ms);
	close_all(r, true);
}

/* Both directions ended cleanly and everything was written: close without reset. */
static void
maybe_done(struct relay *r)
{
	if (r->aborting)
		return;
	for (int i = 0; i < 2; i++)
		if (!r->d[i].shut || r->d[i].queued > 0 || r->d[i].plen > 0)
			return;
	if (r->b_is_stream && !r->stream_closed)
		return; /* the stream's on_close finishes it */
	close_all(r, false);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct relay *r = req->data;

	if (status < 0 && status != UV_ECANCELED && !r->aborting)
		log_debug("relay: shutdown: %s", amesh_strerror(status));
	maybe_done(r);
}

/* Passes the end of direction d on to its writer once what it read has been written. */
static void
pass_eof(struct relay *r, int d)
{
	int w = 1 - d;

	if (!r->d[d].eof || r->d[d].shut || r->d[d].queued > 0 || r->d[d].plen > 0 || r->aborting)
		return;
	r->d[d].shut = true;
	if (w == 1 && r->b_is_stream) {
		if (r->s == NULL) {
			/* The stream is gone: nobody to pass the end to. */
			close_all(r, true);
			return;
		}
		hbone_stream_shutdown(r->s);
	} else {
		r->shut_req[d].data = r;
		if (uv_shutdown(&r->shut_req[d], (uv_stream_t *)&r->tcp[w], on_shutdown) != 0)
			close_all(r, true);
		return;
	}
	maybe_done(r);
}

static void
on_write(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct relay *r = w->r;
	int d = w->dir;

	r->d[d].queued -= w->len;
	if (w->from_stream && r->s != NULL && !r->stream_closed && status == 0)
		hbone_stream_consumed(r->s, w->len);
	wreq_free(w);
	if (r->aborting)
		return;
	if (status < 0) {
		close_all(r, true);
		return;
	}
	pass_eof(r, d);
	update_reads(r);
}

/* Hands w (its len bytes counted in d[w->dir].queued) to uv_write; false if the relay is failing. */
static bool
submit(struct relay *r, struct wreq *w)
{
	int d = w->dir;
	uv_buf_t buf = uv_buf_init((char *)w->data + w->off, (unsigned int)w->len);

	if (uv_write(&w->req, (uv_stream_t *)&r->tcp[1 - d], &buf, 1, on_write) != 0) {
		r->d[d].queued -= w->len;
		wreq_free(w);
		close_all(r, true);
		return false;
	}
	r->d[d].bytes += w->len;
	if (d == 0)
		r->st.a_to_b += w->len;
	else
		r->st.b_to_a += w->len;
	return true;
}

/* Writes bytes of direction d to its TCP writer; returns false if the relay is failing. */
static bool
tcp_write(struct relay *r, int d, const uint8_t *data, size_t len, bool from_stream)
{
	struct wreq *w;

	w = malloc(sizeof(*w) + len);
	if (w == NULL) {
		/* Data-path allocation failure: this connection ends, others go on. */
		close_all(r, true);
		return false;
	}
	w->r = r;
	w->dir = d;
	w->off = 0;
	w->len = len;
	w->from_stream = from_stream;
	w->spare = false;
	memcpy(w->data, data, len);
	r->d[d].queued += len;
	return submit(r, w);
}

/*
 * Writes what r gathered this turn. Most turns' bytes fit in the socket at once: written here,
 * they need no write request, whose completion would also cost an epoll_ctl (libuv 1.44 re-arms
 * the watcher after every completed request) and a callback in the next turn. What the socket
 * does not take goes to uv_write.
 */
static void
flush_gathered(struct relay *r)
{
	struct wreq *w = r->gather;
	uv_buf_t buf;
	int n;

	if (w == NULL)
		return;
	unlist(r);
	r->gather = NULL;
	buf = uv_buf_init((char *)w->data, (unsigned int)w->len);
	n = uv_try_write((uv_stream_t *)&r->tcp[0], &buf, 1);
	if (n < 0 && n != UV_EAGAIN) {
		r->d[1].queued -= w->len;
		wreq_free(w);
		close_all(r, true);
		return;
	}
	if (n > 0) {
		w->off = (size_t)n;
		w->len -= (size_t)n;
		r->d[1].queued -= (size_t)n;
		r->d[1].bytes += (size_t)n;
		r->st.b_to_a += (size_t)n;
		if (r->s != NULL && !r->stream_closed)
			hbone_stream_consumed(r->s, (size_t)n); /* may end the stream (s_on_close) */
	}
	if (w->len == 0 || r->aborting) {
		r->d[1].queued -= w->len;
		wreq_free(w);
		if (!r->aborting) {
			pass_eof(r, 1);
			update_reads(r);
		}
		return;
	}
	if (submit(r, w))
		update_reads(r);
}

static void
turn_end(struct turn *t)
{
	t->armed = false;
	uv_check_stop(&t->check);
	uv_prepare_stop(&t->prepare);
	while (t->head != NULL)
		flush_gathered(t->head); /* unlists it */
}

static void
on_turn_check(uv_check_t *h)
{
	turn_end(h->data);
}

static void
on_turn_prepare(uv_prepare_t *h)
{
	turn_end(h->data);
}

/*
 * Bytes from the stream for A: gathered until the end of the turn, up to buffer_size (more than
 * that goes out at once); written at once where the thread has no turn. false if the relay is
 * failing.
 */
static bool
stream_write(struct relay *r, const uint8_t *data, size_t len)
{
	struct turn *t = r->turn;
	struct wreq *w = r->gather;

	if (t == NULL)
		return tcp_write(r, 1, data, len, true);
	if (w != NULL && w->len + len > r->gather_cap && r->gather_cap < r->cfg.buffer_size &&
	    w->len + len <= r->cfg.buffer_size) {
		/* A second piece this turn: move to a whole buffer (see below). */
		struct wreq *g = r->cfg.buffer_size == DEFAULT_BUFFER && n_spare_gather > 0 ?
		    spare_gather[--n_spare_gather] : malloc(sizeof(*w) + r->cfg.buffer_size);

		if (g == NULL) {
			close_all(r, true);
			return false;
		}
		*g = *w;
		g->spare = r->cfg.buffer_size == DEFAULT_BUFFER;
		memcpy(g->data, w->data, w->len);
		free(w);
		r->gather = w = g;
		r->gather_cap = r->cfg.buffer_size;
	}
	if (w != NULL && w->len + len > r->gather_cap) {
		/* Full in mid-turn (inside nghttp2's receive callbacks): a plain uv_write, which
		 * returns the window from its completion, not from in here. */
		unlist(r);
		r->gather = NULL;
		if (!submit(r, w))
			return false;
		w = NULL;
	}
	if (w == NULL) {
		/*
		 * The first piece of a turn gets a buffer of its own size, as a plain write would:
		 * most turns of a request/response tunnel bring one piece, and 64 KiB for each of
		 * many tunnels per turn would churn the heap (brk, page faults). Only a second piece
		 * moves to a whole buffer_size one (above), from the spares.
		 */
		w = malloc(sizeof(*w) + len);
		if (w == NULL) {
			close_all(r, true);
			return false;
		}
		w->r = r;
		w->dir = 1;
		w->off = 0;
		w->len = 0;
		w->from_stream = true;
		w->spare = false;
		r->gather = w;
		r->gather_cap = len;
		r->turn_next = NULL;
		*t->tail = r;
		t->tail = &r->turn_next;
		if (!t->armed) {
			t->armed = true;
			uv_check_start(&t->check, on_turn_check);
			uv_prepare_start(&t->prepare, on_turn_prepare);
		}
	}
	memcpy(w->data + w->len, data, len);
	w->len += len;
	r->d[1].queued += len;
	return true;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct relay *r = h->data;

	if (read_buf_cap < r->cfg.buffer_size) {
		uint8_t *b = realloc(read_buf, r->cfg.buffer_size);

		if (b == NULL) {
			*buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
			return;
		}
		read_buf = b;
		read_buf_cap = r->cfg.buffer_size;
		bufs_hook();
	}
	*buf = uv_buf_init((char *)read_buf, (unsigned int)r->cfg.buffer_size);
}

/*
 * Offers A's pending bytes to the stream; keeps what it does not take. The stream may call
 * on_writable from inside hbone_stream_write (its flush made room at once): that re-entry only
 * asks for another round here.
 */
static void
push_to_stream(struct relay *r)
{
	if (r->in_push) {
		r->push_again = true;
		return;
	}
	r->in_push = true;
	do {
		size_t took;

		r->push_again = false;
		if (r->d[0].plen == 0 || r->stream_closed || r->s == NULL)
			break;
		took = hbone_stream_write(r->s, r->d[0].pending, r->d[0].plen);
		r->st.a_to_b += took;
		r->d[0].bytes += took;
		memmove(r->d[0].pending, r->d[0].pending + took, r->d[0].plen - took);
		r->d[0].plen -= took;
		if (r->d[0].plen == 0) {
			pending_put(r->d[0].pending, r->d[0].pcap);
			r->d[0].pending = NULL;
			r->d[0].pcap = 0;
		}
	} while (r->push_again);
	r->in_push = false;
}

static void
on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct relay *r = st->data;
	int d = (uv_tcp_t *)st == &r->tcp[0] ? 0 : 1;

	if (r->aborting)
		return;
	if (n == UV_EOF) {
		r->d[d].eof = true;
		uv_read_stop(st);
		r->d[d].reading = false;
		pass_eof(r, d);
		return;
	}
	if (n < 0) {
		/* ECONNRESET and friends: the reset travels on. */
		close_all(r, true);
		return;
	}
	if (n == 0)
		return;
	touch(r);
	if (d == 0 && r->b_is_stream) {
		const uint8_t *p = (const uint8_t *)buf->base;
		size_t len = (size_t)n, took = 0;

		/* Nothing queued ahead of these bytes: offer them to the stream straight away (under
		 * push_to_stream's guard: an on_writable from inside only asks for another round). */
		if (r->d[0].plen == 0 && !r->in_push && !r->stream_closed && r->s != NULL) {
			r->in_push = true;
			took = hbone_stream_write(r->s, p, len);
			r->in_push = false;
			r->st.a_to_b += took;
			r->d[0].bytes += took;
			if (r->aborting)
				return;
			if (r->stream_closed)
				took = len; /* ended under us (s_on_close): the rest has nowhere to go */
		}
		if (took < len) {
			if (r->d[0].pending == NULL) {
				r->d[0].pending = pending_get(r->cfg.buffer_size);
				r->d[0].pcap = r->cfg.buffer_size;
				if (r->d[0].pending == NULL) {
					close_all(r, true);
					return;
				}
			}
			/* update_reads() never lets pending exceed one buffer. */
			memcpy(r->d[0].pending + r->d[0].plen, p + took, len - took);
			r->d[0].plen += len - took;
			push_to_stream(r);
		}
	} else if (!tcp_write(r, d, (const uint8_t *)buf->base, (size_t)n, false)) {
		return;
	}
	update_reads(r);
}

static void
update_reads(struct relay *r)
{
	for (int d = 0; d < (r->b_is_stream ? 1 : 2); d++) {
		bool want;

		if (r->aborting || !r->started)
			return;
		if (d == 0 && r->b_is_stream)
			want = !r->d[0].eof && r->d[0].plen == 0 && !r->stream_closed;
		else
			want = !r->d[d].eof && r->d[d].queued < r->cfg.buffer_size;
		if (want == r->d[d].reading)
			continue;
		if (want) {
			if (uv_read_start((uv_stream_t *)&r->tcp[d], on_alloc, on_read) == 0)
				r->d[d].reading = true;
		} else {
			uv_read_stop((uv_stream_t *)&r->tcp[d]);
			r->d[d].reading = false;
		}
	}
}

/* --- HBONE stream side --- */

static void
s_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct relay *r = hbone_stream_user(s);

	if (r->aborting)
		return;
	touch(r);
	/* The HTTP/2 window bounds what can be queued here; it reopens as writes complete. */
	stream_write(r, data, len);
}

static void
s_on_eof(struct hbone_stream *s)
{
	struct relay *r = hbone_stream_user(s);

	r->d[1].eof = true;
	pass_eof(r, 1);
}

static void
s_on_writable(struct hbone_stream *s)
{
	struct relay *r = hbone_stream_user(s);

	if (r->aborting)
		return;
	push_to_stream(r);
	pass_eof(r, 0);
	update_reads(r);
}

static void
s_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct relay *r = hbone_stream_user(s);

	r->stream_closed = true;
	r->s = NULL;
	if (reset || !r->d[1].eof) {
		close_all(r, true);
		return;
	}
	if (!r->d[0].shut) {
		/* The peer ended cleanly before we did (END_STREAM, then RST_STREAM(NO_ERROR)): what A
		 * still sends has nowhere to go. Finish writing to A, then close. */
		r->d[0].eof = r->d[0].shut = true;
		r->d[0].plen = 0;
		update_reads(r);
	}
	maybe_done(r);
}

static const struct hbone_stream_cb stream_cb = {
	.on_data = s_on_data,
	.on_eof = s_on_eof,
	.on_writable = s_on_writable,
	.on_close = s_on_close,
};

struct relay *
relay_new(uv_loop_t *loop, const struct relay_cfg *cfg)
{
	struct relay *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->loop = loop;
	r->cfg = *cfg;
	if (r->cfg.buffer_size == 0)
		r->cfg.buffer_size = DEFAULT_BUFFER;
	uv_tcp_init(loop, &r->tcp[0]);
	uv_tcp_init(loop, &r->tcp[1]);
	uv_timer_init(loop, &r->idle);
	r->tcp[0].data = r->tcp[1].data = r->idle.data = r;
	r->open_handles = 3;
	r->turn = turn_get(loop);
	return r;
}

uv_tcp_t *
relay_tcp_a(struct relay *r)
{
	return &r->tcp[0];
}

uv_tcp_t *
relay_tcp_b(struct relay *r)
{
	return &r->tcp[1];
}

static void
start(struct relay *r)
{
	r->started = true;
	uv_tcp_nodelay(&r->tcp[0], 1);
	if (!r->b_is_stream)
		uv_tcp_nodelay(&r->tcp[1], 1);
	if (r->cfg.idle_timeout_ms > 0)
		uv_timer_start(&r->idle, on_idle, r->cfg.idle_timeout_ms, r->cfg.idle_timeout_ms);
	update_reads(r);
}

void
relay_start_hbone(struct relay *r, struct hbone_stream *s)
{
	r->b_is_stream = true;
	r->s = s;
	/* tcp[1] is unused: close it now so only A and the timer remain. */
	uv_close((uv_handle_t *)&r->tcp[1], on_closed);
	hbone_stream_set_cb(s, &stream_cb, r);
	start(r);
}

void
relay_start_tcp(struct relay *r)
{
	start(r);
}

void
relay_abort(struct relay *r)
{
	close_all(r, true);
}

int
relay_hand_off(struct relay *r)
{
	int fd = -1, d;

	if (uv_fileno((uv_handle_t *)&r->tcp[0], &fd) != 0) {
		close_all(r, true);
		return -EBADF;
	}
	d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (d < 0) {
		d = -errno;
		close_all(r, true);
		return d;
	}
	/* A plain close of our fd: the duplicate keeps the connection open. */
	close_all(r, false);
	return d;
}

void *
relay_user(const struct relay *r)
{
	return r->cfg.user;
}

size_t
relay_buffered(const struct relay *r)
{
	return r->d[0].queued + r->d[1].queued + r->d[0].plen;
}
