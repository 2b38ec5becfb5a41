/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/2 side of HBONE: nghttp2 does the framing and no I/O. TLS reads feed
 * nghttp2_session_mem_recv; h2_conn_flush drains nghttp2_session_mem_send into the TLS connection
 * only while its queue is below the high-water mark, and stops TLS reads while it is above, so a
 * peer that does not read cannot make us buffer without bound. Stream windows are returned only
 * when the owner says it delivered the bytes (hbone_stream_consumed): end-to-end backpressure.
 *
 * A client session (the pool's, shared by many downstream clients) that was given a new stream
 * serializes its frames at the end of that loop turn (tls_conn_want_turn), not at once: a stream
 * opened and reset in the same turn (a client's rapid reset relayed by a waypoint or sidecar) is
 * cancelled by nghttp2 before its HEADERS leave, and costs the peer nothing. In other turns it
 * sends at once, as a server does (a tunnel's bulk data is not held to one send per turn).
 * A reset after the HEADERS went out is an RST_STREAM, which the peer counts against its flood
 * limit for the whole connection (h2flood.h): those take a token from the connection's reset
 * budget, and wait for one when it is empty, so that the shared connection is never sent GOAWAY
 * for one client's resets.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "core/worker.h"
#include "hbone/h2.h"
#include "tls/identity.h"

/* DATA payload per frame, so that frame header + payload fill exactly one TLS record. */
#define DATA_FRAME_PAYLOAD (16384 - 9)

static void teardown(struct h2_conn *c);

/*
 * Send buffers go back to a small per-thread list when a stream drains, instead of to free():
 * a stream that drains between every read would otherwise malloc and free 64 KiB each time,
 * and glibc trims and regrows the heap under it (a page fault per page of data).
 */
#define SPARE_SBUFS 8
static _Thread_local uint8_t *spare_sbuf[SPARE_SBUFS];
static _Thread_local unsigned n_spare_sbufs;

static uint8_t *
sbuf_get(void)
{
	return n_spare_sbufs > 0 ? spare_sbuf[--n_spare_sbufs] : malloc(HBONE_STREAM_SEND_BUF);
}

static _Thread_local bool sbufs_hooked;

/* A worker thread's spares go with it (core/worker.h). */
static void
sbufs_free(void)
{
	while (n_spare_sbufs > 0)
		free(spare_sbuf[--n_spare_sbufs]);
}

static void
sbuf_put(uint8_t *b)
{
	if (b != NULL && n_spare_sbufs < SPARE_SBUFS) {
		if (!sbufs_hooked) {
			sbufs_hooked = true;
			worker_at_thread_exit(sbufs_free);
		}
		spare_sbuf[n_spare_sbufs++] = b;
	} else
		free(b);
}

/* An idle stream holds no buffer: memory follows traffic, not stream count. */
static void
sbuf_release_idle(struct hbone_stream *s)
{
	if (s->slen == 0 && s->skept == 0 && s->sbuf != NULL) {
		sbuf_put(s->sbuf);
		s->sbuf = NULL;
		s->shead = 0;
	}
}

void
h2_open_free(struct h2_open *o)
{
	if (o == NULL)
		return;
	identity_unref(o->src);
	free(o->dst_id);
	free(o->authority);
	free(o->forwarded);
	free(o->baggage);
	free(o->traceparent);
	free(o);
}

void
h2_stream_free(struct hbone_stream *s)
{
	if (s == NULL)
		return;
	sbuf_put(s->sbuf);
	free(s->early);
	free(s->hdr_method);
	free(s->hdr_authority);
	free(s->hdr_forwarded);
	free(s->hdr_baggage);
	free(s->hdr_traceparent);
	h2_open_free(s->open);
	free(s);
}

void
h2_conn_attach(struct h2_conn *c, struct hbone_stream *s)
{
	s->conn = c;
	s->prev = NULL;
	s->next = c->streams;
	if (c->streams != NULL)
		c->streams->prev = s;
	c->streams = s;
	c->nstreams++;
}

static void
detach(struct hbone_stream *s)
{
	struct h2_conn *c = s->conn;

	if (c == NULL)
		return;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	c->nstreams--;
	if (s->reset_waiting) {
		s->reset_waiting = false;
		c->resets_waiting--;
	}
	if (s->id > 0 && !c->closed)
		nghttp2_session_set_stream_user_data(c->session, s->id, NULL);
	s->conn = NULL;
}

void
h2_stream_detach(struct hbone_stream *s)
{
	detach(s);
}

/* Ends a stream for its owner: on_close, then the connection owner hears of it, then free. */
static void
finish_stream(struct h2_conn *c, struct hbone_stream *s, bool reset, uint32_t err)
{
	detach(s);
	if (s->cb != NULL && s->cb->on_close != NULL)
		s->cb->on_close(s, reset, err);
	h2_stream_free(s);
	if (c->ops->on_stream_gone != NULL)
		c->ops->on_stream_gone(c);
}

/*
 * RST_STREAM for a client stream, within the connection's reset budget: one whose HEADERS are
 * still queued (nghttp2 has no stream for it yet) is cancelled without a frame; otherwise a token
 * is taken, or the reset waits for one (h2_conn_send_resets) and the owner hears of the stream's
 * end when it went.
 */
static void
submit_reset(struct h2_conn *c, struct hbone_stream *s, uint32_t err)
{
	/* Paced only for an owner that sends the waiting ones (on_resets_waiting). */
	if (!c->is_server && !s->reset_waiting && c->ops->on_resets_waiting != NULL &&
	    nghttp2_session_find_stream(c->session, s->id) != NULL &&
	    (c->resets_waiting > 0 || !h2_bucket_take(&c->resets, uv_now(c->loop),
	    H2_RELAY_RST_BURST, H2_RELAY_RST_RATE))) {
		s->reset_waiting = true;
		s->reset_err = err;
		if (c->resets_waiting++ == 0)
			c->ops->on_resets_waiting(c, h2_bucket_wait_ms(&c->resets,
			    H2_RELAY_RST_RATE));
		return;
	}
	nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, err);
}

uint64_t
h2_conn_send_resets(struct h2_conn *c)
{
	struct hbone_stream *s, *next;

	if (c->closed || c->resets_waiting == 0)
		return 0;
	/* Oldest first: streams are attached at the head. */
	for (s = c->streams; s != NULL && s->next != NULL; s = s->next)
		;
	for (; s != NULL && c->resets_waiting > 0; s = next) {
		next = s->prev;
		if (!s->reset_waiting)
			continue;
		if (!h2_bucket_take(&c->resets, uv_now(c->loop), H2_RELAY_RST_BURST,
		    H2_RELAY_RST_RATE))
			break;
		s->reset_waiting = false;
		c->resets_waiting--;
		nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, s->reset_err);
	}
	h2_conn_flush(c);
	return c->resets_waiting > 0 ? h2_bucket_wait_ms(&c->resets, H2_RELAY_RST_RATE) : 0;
}

/* Data provider: tells nghttp2 how many of the owner's buffered bytes go in the next DATA frame,
 * or defers until there are some. NO_COPY: send_data_cb writes them from the stream's buffer. */
static ssize_t
data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
    uint32_t *flags, nghttp2_data_source *source, void *user)
{
	struct hbone_stream *s = source->ptr;
	size_t n;

	if (s == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (s->slen == 0) {
		if (s->shutdown_wanted) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			return 0;
		}
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = s->slen < length ? s->slen : length;
	*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	return (ssize_t)n;
}

/*
 * A DATA frame whose payload data_read_cb left in the stream's buffer: its header and payload go
 * to tls_conn_write, which seals the payload from here (with record offload, straight into the
 * ciphertext; nghttp2 copies nothing). nghttp2 calls this from nghttp2_session_mem_send.
 */
static int
send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
    size_t length, nghttp2_data_source *source, void *user)
{
	struct h2_conn *c = user;
	struct hbone_stream *s = source->ptr;

	/* We never pad (no select_padding callback), so the frame is header and payload. */
	if (s == NULL || frame->data.padlen != 0 || length > s->slen)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	/* A failing TLS connection ends the session through its on_close; the bytes are dropped. */
	if (tls_conn_write(c->tls, framehd, 9) == 0 && length > 0)
		(void)tls_conn_write(c->tls, s->sbuf + s->shead, length);
	s->shead += length;
	s->slen -= length;
	s->data_sent = true;
	if (!c->is_server && !s->responded)
		s->skept += length;
	sbuf_release_idle(s);
	return 0;
}

/* The bytes kept for a replay are no longer needed: the server has answered. */
static void
drop_kept(struct hbone_stream *s)
{
	s->skept = 0;
	sbuf_release_idle(s);
}

/* A refused stream's bytes, sent and kept, are to be sent again: it is as if none had been. */
static void
restore_kept(struct hbone_stream *s)
{
	s->shead -= s->skept;
	s->slen += s->skept;
	s->skept = 0;
	s->data_sent = false;
}

static ssize_t
read_length_cb(nghttp2_session *session, uint8_t frame_type, int32_t stream_id,
    int32_t session_window, int32_t stream_window, uint32_t remote_max_frame, void *user)
{
	ssize_t n = DATA_FRAME_PAYLOAD;

	if (n > session_window)
		n = session_window;
	if (n > stream_window)
		n = stream_window;
	if ((uint32_t)n > remote_max_frame)
		n = (ssize_t)remote_max_frame;
	return n > 0 ? n : 1;
}

static char *
dup_value(const uint8_t *v, size_t len)
{
	char *s = malloc(len + 1);

	if (s != NULL) {
		memcpy(s, v, len);
		s[len] = '\0';
	}
	return s;
}

static int
on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct h2_conn *c = user;
	struct hbone_stream *s;

	if (!c->is_server || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		/* Allocation failure on the data path: refuse this stream, keep the rest. */
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
		    NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	s->id = frame->hd.stream_id;
	h2_conn_attach(c, s);
	nghttp2_session_set_stream_user_data(session, s->id, s);
	return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
	struct h2_conn *c = user;
	struct hbone_stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	char **slot = NULL;

	if (s == NULL || frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (!c->is_server) {
		if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
			int st = 0;

			for (size_t i = 0; i < valuelen && i < 3; i++)
				st = st * 10 + (value[i] - '0');
			s->status = st;
		}
		return 0;
	}
	s->hdr_bytes += namelen + valuelen;
	if (++s->hdr_count > HBONE_MAX_HEADERS || s->hdr_bytes > HBONE_MAX_HEADER_BYTES) {
		s->hdr_bad = true;
		return 0;
	}
	if (namelen == 7 && memcmp(name, ":method", 7) == 0)
		slot = &s->hdr_method;
	else if (namelen == 10 && memcmp(name, ":authority", 10) == 0)
		slot = &s->hdr_authority;
	else if (namelen == 9 && memcmp(name, "forwarded", 9) == 0)
		slot = &s->hdr_forwarded;
	else if (namelen == 7 && memcmp(name, "baggage", 7) == 0)
		slot = &s->hdr_baggage;
	else if (namelen == 11 && memcmp(name, "traceparent", 11) == 0)
		slot = &s->hdr_traceparent;
	if (slot != NULL && *slot == NULL && (*slot = dup_value(value, valuelen)) == NULL)
		s->hdr_bad = true;
	return 0;
}

/* Splits "host:port" / "[v6]:port"; the host must be an IP literal or a DNS name. */
static bool
parse_authority(const char *a, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *why;
	size_t hl;
	struct ip_addr ip;

	if (a == NULL || *a == '\0')
		return false;
	if (a[0] == '[') {
		const char *rb = strchr(a, ']');

		if (rb == NULL || rb[1] != ':')
			return false;
		hl = (size_t)(rb - a - 1);
		if (hl == 0 || hl >= hostlen)
			return false;
		memcpy(host, a + 1, hl);
		host[hl] = '\0';
		if (parse_ip(host, &ip, &why) != 0 || ip.family != AF_INET6)
			return false;
		colon = rb + 1;
	} else {
		colon = strrchr(a, ':');
		if (colon == NULL)
			return false;
		hl = (size_t)(colon - a);
		if (hl == 0 || hl >= hostlen || memchr(a, ':', hl) != NULL)
			return false;
		memcpy(host, a, hl);
		host[hl] = '\0';
		for (size_t i = 0; i < hl; i++)
			if (!(isalnum((unsigned char)host[i]) || host[i] == '.' || host[i] == '-'))
				return false;
	}
	return parse_port(colon + 1, port, &why) == 0;
}

static void
handle_request(struct h2_conn *c, struct hbone_stream *s)
{
	struct hbone_request *r = &s->req;
	int status = 0;

	if (s->hdr_bad) {
		status = 400;
		log_info("hbone %s: stream %d refused: headers too large", tls_conn_peer_addr(c->tls),
		    s->id);
	} else if (s->hdr_method == NULL || strcmp(s->hdr_method, "CONNECT") != 0) {
		status = 400;
		log_info("hbone %s (%s): stream %d refused: method %s is not CONNECT",
		    tls_conn_peer_addr(c->tls), tls_conn_peer_id(c->tls), s->id,
		    s->hdr_method ? s->hdr_method : "(none)");
	} else if (!parse_authority(s->hdr_authority, r->host, sizeof(r->host), &r->port)) {
		status = 400;
		log_info("hbone %s (%s): stream %d refused: bad authority '%s'",
		    tls_conn_peer_addr(c->tls), tls_conn_peer_id(c->tls), s->id,
		    s->hdr_authority ? s->hdr_authority : "");
	}
	if (status != 0) {
		hbone_stream_respond(s, status);
		return;
	}
	r->authority = s->hdr_authority;
	r->peer_id = tls_conn_peer_id(c->tls);
	r->peer_addr = tls_conn_peer_addr(c->tls);
	r->forwarded = s->hdr_forwarded;
	r->baggage = s->hdr_baggage;
	r->traceparent = s->hdr_traceparent;
	c->ops->on_request(c, s);
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
	struct h2_conn *c = user;
	struct hbone_stream *s = NULL;

	c->last_activity = uv_now(c->loop);
	if (c->is_server && h2_flood_over(&c->flood, frame, c->last_activity)) {
		if (!c->flooded)
			log_warn("hbone %s (%s): more than %d SETTINGS, PING, PRIORITY and RST_STREAM "
			    "frames, then %d a second: GOAWAY ENHANCE_YOUR_CALM",
			    tls_conn_peer_addr(c->tls), tls_conn_peer_id(c->tls), H2_FLOOD_BURST,
			    H2_FLOOD_RATE);
		c->flooded = true;
		nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
		return 0;
	}
	if (frame->hd.stream_id != 0)
		s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
	switch (frame->hd.type) {
	case NGHTTP2_HEADERS:
		if (s == NULL)
			break;
		if (c->is_server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
			if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
				s->eof_seen = true;
			handle_request(c, s);
			return 0;
		}
		if (!c->is_server && s->status >= 200 && !s->responded) {
			int status = s->status;

			s->responded = true;
			drop_kept(s);
			if (s->cb != NULL && s->cb->on_response != NULL)
				s->cb->on_response(s, status);
			/* on_response may have reset it. */
			s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
			/* A refused tunnel is over: our half would otherwise stay open (the data
			 * provider waits for bytes that never come) and hold a pool slot. */
			if (s != NULL && status != 200 && !s->closing) {
				s->closing = true;
				submit_reset(c, s, NGHTTP2_CANCEL);
			}
		}
		break;
	case NGHTTP2_GOAWAY:
		c->goaway_recv = true;
		if (c->ops->on_goaway != NULL)
			c->ops->on_goaway(c);
		return 0;
	default:
		break;
	}
	if (s != NULL && (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
	    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !s->eof_seen) {
		s->eof_seen = true;
		if (s->cb != NULL && s->cb->on_eof != NULL && s->responded)
			s->cb->on_eof(s);
	}
	return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
    size_t len, void *user)
{
	struct hbone_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);

	if (s != NULL && ((struct h2_conn *)user)->is_server && !s->responded && !s->closing) {
		/* Tunnel bytes may follow the CONNECT at once (RFC 9113 8.5). Hold them until the
		 * tunnel is up; the stream window we advertised bounds them, as they stay unconsumed. */
		uint8_t *e = realloc(s->early, s->early_len + len);

		if (e == NULL) {
			nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
			    NGHTTP2_INTERNAL_ERROR);
			s->closing = true;
			nghttp2_session_consume(session, stream_id, len);
			return 0;
		}
		memcpy(e + s->early_len, data, len);
		s->early = e;
		s->early_len += len;
		s->unconsumed += len;
		return 0;
	}
	if (s == NULL || s->cb == NULL || s->cb->on_data == NULL || !s->responded || s->closing ||
	    (!((struct h2_conn *)user)->is_server && s->status != 200)) {
		/* Nobody to deliver to (not yet accepted, refused, reset or being torn down): drop
		 * it, and return the window so the connection does not stall. */
		nghttp2_session_consume(session, stream_id, len);
		return 0;
	}
	s->unconsumed += len;
	s->cb->on_data(s, data, len);
	return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t err, void *user)
{
	struct h2_conn *c = user;
	struct hbone_stream *s = nghttp2_session_get_stream_user_data(session, stream_id);

	if (s == NULL)
		return 0;
	/* Bytes the owner never returned still hold the connection window; give them back. */
	if (s->unconsumed > 0) {
		nghttp2_session_consume_connection(session, s->unconsumed);
		s->unconsumed = 0;
	}
	if (!c->is_server && err == NGHTTP2_REFUSED_STREAM && !s->responded && !s->closing &&
	    c->ops->on_refused != NULL) {
		restore_kept(s);
		detach(s);
		s->id = 0;
		s->deferred = false;
		if (c->ops->on_refused(c, s))
			return 0;
		h2_conn_attach(c, s); /* not retried: end it here */
		s->id = stream_id;
		nghttp2_session_set_stream_user_data(session, stream_id, s);
	}
	if (!c->is_server && !s->responded && s->cb != NULL && s->cb->on_response != NULL) {
		s->responded = true;
		s->cb->on_response(s, err == NGHTTP2_REFUSED_STREAM ? UV_EAGAIN : UV_ECONNRESET);
	}
	finish_stream(c, s, err != NGHTTP2_NO_ERROR, err);
	return 0;
}

static nghttp2_session_callbacks *cbs;

/* Built once, whichever worker's loop (core/worker.h) needs them first; read-only after. */
static void
build_callbacks(void)
{
	if (nghttp2_session_callbacks_new(&cbs) != 0)
		fatalx("out of memory");
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, read_length_cb);
	nghttp2_session_callbacks_set_send_data_callback(cbs, send_data_cb);
}

static nghttp2_session_callbacks *
callbacks(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, build_callbacks);
	return cbs;
}

/* Creates c's nghttp2 session (about 25 KiB). 0 or -1 when out of memory. */
static int
session_new(struct h2_conn *c)
{
	nghttp2_option *opt = NULL;
	int r;

	if (nghttp2_option_new(&opt) != 0)
		return -1;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_send_header_block_length(opt, HBONE_MAX_HEADER_BYTES * 2);
	if (c->is_server)
		h2_flood_options(opt);
	else
		nghttp2_option_set_peer_max_concurrent_streams(opt, c->max_streams);
	r = c->is_server ? nghttp2_session_server_new3(&c->session, callbacks(), c, opt,
	    amesh_nghttp2_mem()) :
	    nghttp2_session_client_new3(&c->session, callbacks(), c, opt, amesh_nghttp2_mem());
	nghttp2_option_del(opt);
	return r == 0 ? 0 : -1;
}

struct h2_conn *
h2_conn_new(uv_loop_t *loop, bool server, uint32_t max_streams,
    const struct h2_conn_ops *ops, void *owner)
{
	struct h2_conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->is_server = server;
	c->max_streams = max_streams;
	/* A client submits its streams before the handshake ends; a server's session waits for
	 * its handshake, so that an accepted connection that sends nothing costs little. */
	if (!server && session_new(c) != 0) {
		free(c);
		return NULL;
	}
	c->loop = loop;
	c->ops = ops;
	c->owner = owner;
	return c;
}

void
h2_conn_free_unstarted(struct h2_conn *c)
{
	nghttp2_session_del(c->session);
	free(c);
}

static void
send_settings(struct h2_conn *c, uint32_t max_streams)
{
	nghttp2_settings_entry iv[3];
	size_t n = 0;

	iv[n].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
	iv[n++].value = HBONE_STREAM_WINDOW;
	if (c->is_server) {
		iv[n].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
		iv[n++].value = max_streams;
	} else {
		iv[n].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
		iv[n++].value = 0;
	}
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, n);
	nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, HBONE_CONN_WINDOW);
}

/* Calls on_writable for streams whose writer was turned away and now has room. */
static void
notify_writers(struct h2_conn *c)
{
	struct hbone_stream *s, *next;

	for (s = c->streams; s != NULL; s = next) {
		next = s->next;
		if (s->writer_blocked && s->slen + s->skept < HBONE_STREAM_SEND_BUF) {
			s->writer_blocked = false;
			if (s->cb != NULL && s->cb->on_writable != NULL)
				s->cb->on_writable(s);
		}
	}
}

/* Sends now what nghttp2 has queued (h2_conn_flush). */
static void
flush_now(struct h2_conn *c)
{
	if (c->closed || !c->ready)
		return;
	/* nghttp2 keeps pointers to the stream whose frame it is handing us; a send from inside
	 * could close (and free) that stream under it. tls_on_read flushes after mem_recv. */
	if (c->in_recv)
		return;
	if (c->in_flush) {
		c->flush_again = true;
		return;
	}
	c->in_flush = true;
	do {
		c->flush_again = false;
		while (tls_conn_writable(c->tls)) {
			const uint8_t *data;
			ssize_t n = nghttp2_session_mem_send(c->session, &data);

			if (n < 0) {
				log_warn("hbone %s: %s", tls_conn_peer_addr(c->tls),
				    nghttp2_strerror((int)n));
				c->in_flush = false;
				h2_conn_abort(c);
				return;
			}
			if (n == 0)
				break;
			if (tls_conn_write(c->tls, data, (size_t)n) != 0)
				break;
		}
		if (!c->closed)
			notify_writers(c);
	} while (c->flush_again && !c->closed);
	c->in_flush = false;
	/* Those CONNECTs are out, or wait for the peer's stream limit or the TLS queue: a reset of
	 * them is still free then. */
	c->syn_queued = 0;
	if (c->closed)
		return;
	/* While the peer is not taking our output, do not read input that makes more of it. */
	if (tls_conn_writable(c->tls))
		tls_conn_read_start(c->tls);
	else
		tls_conn_read_stop(c->tls);
	if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
	    !c->closing) {
		c->closing = true;
		tls_conn_close(c->tls);
	}
}

void
h2_conn_flush(struct h2_conn *c)
{
	if (c->closed || !c->ready)
		return;
	/* (From inside flush_now, as its writers are told of room: it goes round again.) */
	if (c->syn_queued > 0 && !c->in_flush) {
		tls_conn_want_turn(c->tls); /* tls_on_turn */
		return;
	}
	flush_now(c);
}

/* --- TLS callbacks --- */

static void
tls_on_handshake(struct tls_conn *t, int status)
{
	struct h2_conn *c = tls_conn_user(t);

	if (status == 0 && c->session == NULL && session_new(c) != 0) {
		log_warn("hbone %s: out of memory for the HTTP/2 session", tls_conn_peer_addr(t));
		status = AMESH_ERR_NOMEM;
		c->closing = true;
		tls_conn_abort(t);
	}
	if (status != 0) {
		if (c->ops->on_ready != NULL)
			c->ops->on_ready(c, status);
		return;
	}
	c->ready = true;
	c->last_activity = uv_now(c->loop);
	send_settings(c, c->max_streams);
	if (c->ops->on_ready != NULL)
		c->ops->on_ready(c, 0);
	if (c->goaway_sent) /* asked for while the handshake ran (h2_conn_goaway) */
		nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR, NULL, 0);
	/* Now, not at the end of the turn: the streams that waited for the handshake go before
	 * the peer's SETTINGS are read, as they would have without a handshake to wait for (past
	 * its stream limit it refuses them and they are retried elsewhere; nghttp2 would hold them
	 * until a stream ends, maybe never). Resets of them came while they had no id: no frame. */
	flush_now(c);
}

static void
tls_on_read(struct tls_conn *t, const uint8_t *data, size_t len)
{
	struct h2_conn *c = tls_conn_user(t);
	ssize_t n;

	if (c->closed || c->session == NULL)
		return;
	if (len == 0) {
		/* The peer closed TLS: whatever streams remain are cut. */
		h2_conn_abort(c);
		return;
	}
	c->in_recv = true;
	n = nghttp2_session_mem_recv(c->session, data, len);
	c->in_recv = false;
	if (n < 0) {
		log_info("hbone %s: protocol error: %s", tls_conn_peer_addr(t),
		    nghttp2_strerror((int)n));
		h2_conn_abort(c);
		return;
	}
	h2_conn_flush(c);
}

static void
tls_on_drain(struct tls_conn *t)
{
	h2_conn_flush(tls_conn_user(t));
}

static void
tls_on_close(struct tls_conn *t)
{
	teardown(tls_conn_user(t));
}

/* A client's frames of this turn (h2_conn_flush). */
static void
tls_on_turn(struct tls_conn *t)
{
	flush_now(tls_conn_user(t));
}

const struct tls_conn_cb h2_tls_cb = {
	tls_on_handshake, tls_on_read, tls_on_drain, tls_on_close, tls_on_turn,
};

/*
 * A client stream whose CONNECT never left: nghttp2 has no stream for it yet (it waited for the
 * peer's stream limit, or for this turn's flush). Its owner sent nothing the peer processed. Not
 * one its owner reset meanwhile (closing: nghttp2 cancels the queued HEADERS at its next send).
 */
static bool
never_sent(const struct h2_conn *c, const struct hbone_stream *s)
{
	return !c->is_server && c->ready && !s->responded && !s->closing && s->id > 0 &&
	    nghttp2_session_find_stream(c->session, s->id) == NULL;
}

static void
teardown(struct h2_conn *c)
{
	unsigned moved = 0, lost = 0;

	c->closed = true;
	while (c->streams != NULL) {
		struct hbone_stream *s = c->streams;
		bool unsent = never_sent(c, s);

		/* The peer went away (a drain or an upgrade: GOAWAY then close_notify, read in one
		 * go) before these went out: another connection takes them, as refused streams. */
		if (unsent && c->ops->on_refused != NULL) {
			restore_kept(s);
			detach(s);
			s->id = 0; /* not again: re-attached below if not taken */
			s->deferred = false;
			if (c->ops->on_refused(c, s)) {
				moved++;
				continue;
			}
			h2_conn_attach(c, s);
		}
		if (!c->is_server && !s->responded && s->cb != NULL && s->cb->on_response != NULL) {
			lost++;
			s->responded = true;
			/* (Not taken elsewhere: as a refused one that is not retried.) */
			s->cb->on_response(s, unsent ? UV_EAGAIN :
			    c->ready ? UV_ECONNRESET : UV_ECONNREFUSED);
		}
		if (s->conn == c)
			finish_stream(c, s, true, NGHTTP2_CONNECT_ERROR);
	}
	if (moved > 0 || (lost > 0 && c->ready))
		log_info("hbone %s: connection closed: %u streams unanswered were reset, %u not yet sent "
		    "went to another connection", tls_conn_peer_addr(c->tls), lost, moved);
	if (c->ops->on_closed != NULL)
		c->ops->on_closed(c);
	nghttp2_session_del(c->session);
	free(c);
}

int
h2_conn_submit(struct h2_conn *c, struct hbone_stream *s)
{
	const struct h2_open *o = s->open;
	nghttp2_nv nv[6];
	size_t n = 0;
	nghttp2_data_provider prd;
	int32_t id;

#define NV(N_, V_)                                                                        \
	do {                                                                              \
		nv[n].name = (uint8_t *)(N_);                                             \
		nv[n].namelen = strlen(N_);                                               \
		nv[n].value = (uint8_t *)(V_);                                            \
		nv[n].valuelen = strlen(V_);                                              \
		nv[n].flags = NGHTTP2_NV_FLAG_NONE;                                       \
		n++;                                                                      \
	} while (0)
	NV(":method", "CONNECT");
	NV(":authority", o->authority);
	if (o->forwarded != NULL)
		NV("forwarded", o->forwarded);
	if (o->baggage != NULL)
		NV("baggage", o->baggage);
	if (o->traceparent != NULL)
		NV("traceparent", o->traceparent);
#undef NV
	prd.source.ptr = s;
	prd.read_callback = data_read_cb;
	id = nghttp2_submit_request(c->session, NULL, nv, n, &prd, s);
	if (id < 0)
		return AMESH_ERR_INVALID;
	s->id = id;
	c->syn_queued++; /* h2_conn_flush */
	return 0;
}

void
h2_conn_goaway(struct h2_conn *c)
{
	if (c->closed || c->goaway_sent)
		return;
	c->goaway_sent = true;
	/* Still in its handshake: finish it, then say GOAWAY. A client's streams waiting for it
	 * go out first; a server's peer learns that its streams were not taken and opens them
	 * elsewhere, where aborting would have reset them (a drain, an upgrade). */
	if (!c->ready)
		return;
	nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
	    nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR, NULL, 0);
	h2_conn_flush(c);
}

void
h2_conn_abort(struct h2_conn *c)
{
	/* Also when closing gracefully: that close may wait forever on a peer that does not read. */
	if (c->closed)
		return;
	c->closing = true;
	tls_conn_abort(c->tls);
}

int
h2_conn_ping(struct h2_conn *c)
{
	int r;

	if (c->closed || !c->ready)
		return AMESH_ERR_INVALID;
	r = nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL);
	h2_conn_flush(c);
	return r == 0 ? 0 : AMESH_ERR_INVALID;
}

uint32_t
h2_conn_remote_max_streams(const struct h2_conn *c)
{
	return nghttp2_session_get_remote_settings(c->session,
	    NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

/* --- stream API (hbone.h) --- */

size_t
hbone_stream_write(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	size_t room, take;

	if (s->tcp != NULL)
		return tcpleg_write(s, data, len);
	if (s->shutdown_wanted || s->closing)
		return 0;
	room = HBONE_STREAM_SEND_BUF - s->slen - s->skept;
	take = len < room ? len : room;
	if (take < len)
		s->writer_blocked = true;
	if (take == 0)
		return 0;
	if (s->sbuf == NULL) {
		s->sbuf = sbuf_get();
		if (s->sbuf == NULL) {
			hbone_stream_reset(s, NGHTTP2_INTERNAL_ERROR);
			return 0;
		}
		s->shead = 0;
	}
	if (s->shead + s->slen + take > HBONE_STREAM_SEND_BUF) {
		memmove(s->sbuf, s->sbuf + s->shead - s->skept, s->skept + s->slen);
		s->shead = s->skept;
	}
	memcpy(s->sbuf + s->shead + s->slen, data, take);
	s->slen += take;
	if (s->deferred && s->conn != NULL && s->id > 0) {
		s->deferred = false;
		nghttp2_session_resume_data(s->conn->session, s->id);
	}
	if (s->conn != NULL)
		h2_conn_flush(s->conn);
	return take;
}

bool
hbone_stream_writable(const struct hbone_stream *s)
{
	if (s->tcp != NULL)
		return tcpleg_writable(s);
	return s->slen + s->skept < HBONE_STREAM_SEND_BUF && !s->shutdown_wanted;
}

void
hbone_stream_shutdown(struct hbone_stream *s)
{
	if (s->tcp != NULL) {
		tcpleg_shutdown(s);
		return;
	}
	if (s->shutdown_wanted)
		return;
	s->shutdown_wanted = true;
	if (s->deferred && s->conn != NULL && s->id > 0) {
		s->deferred = false;
		nghttp2_session_resume_data(s->conn->session, s->id);
	}
	if (s->conn != NULL)
		h2_conn_flush(s->conn);
}

void
hbone_stream_reset(struct hbone_stream *s, uint32_t h2_error)
{
	struct h2_conn *c = s->conn;

	if (s->tcp != NULL) {
		tcpleg_reset(s);
		return;
	}
	if (s->closing)
		return;
	s->closing = true;
	if (c == NULL || c->closed)
		return;
	if (s->id <= 0) {
		/* Not on the wire yet (its connection is still coming up): end it here. */
		finish_stream(c, s, true, h2_error);
		return;
	}
	submit_reset(c, s, h2_error);
	h2_conn_flush(c);
}

void
hbone_stream_consumed(struct hbone_stream *s, size_t n)
{
	struct h2_conn *c = s->conn;

	if (s->tcp != NULL) {
		tcpleg_consumed(s, n);
		return;
	}
	if (n > s->unconsumed)
		n = s->unconsumed;
	s->unconsumed -= n;
	if (c == NULL || c->closed || s->id <= 0 || n == 0)
		return;
	nghttp2_session_consume(c->session, s->id, n);
	h2_conn_flush(c);
}

int
hbone_stream_respond(struct hbone_stream *s, int status)
{
	struct h2_conn *c = s->conn;
	char code[4];
	nghttp2_nv nv;
	nghttp2_data_provider prd;
	int r;

	if (c == NULL || c->closed || !c->is_server || s->responded)
		return AMESH_ERR_INVALID;
	if (status < 100 || status > 599)
		status = 500;
	snprintf(code, sizeof(code), "%d", status);
	nv.name = (uint8_t *)":status";
	nv.namelen = 7;
	nv.value = (uint8_t *)code;
	nv.valuelen = 3;
	nv.flags = NGHTTP2_NV_FLAG_NONE;
	prd.source.ptr = s;
	prd.read_callback = data_read_cb;
	s->responded = true;
	s->status = status;
	r = nghttp2_submit_response(c->session, s->id, &nv, 1, status == 200 ? &prd : NULL);
	if (r != 0)
		return AMESH_ERR_INVALID;
	if (s->early != NULL) {
		uint8_t *e = s->early;
		size_t n = s->early_len;

		s->early = NULL;
		s->early_len = 0;
		if (status == 200 && s->cb != NULL && s->cb->on_data != NULL)
			s->cb->on_data(s, e, n); /* the owner returns the window as usual */
		else
			hbone_stream_consumed(s, n);
		free(e);
	}
	/* The client may have half-closed together with its CONNECT (or after early bytes). */
	if (status == 200 && s->eof_seen && s->cb != NULL && s->cb->on_eof != NULL)
		s->cb->on_eof(s);
	h2_conn_flush(c);
	return 0;
}

void
hbone_stream_set_cb(struct hbone_stream *s, const struct hbone_stream_cb *cb, void *user)
{
	s->cb = cb;
	s->user = user;
	if (s->tcp != NULL && cb == NULL)
		tcpleg_detached(s);
}

void *
hbone_stream_user(const struct hbone_stream *s)
{
	return s->user;
}

const struct hbone_request *
hbone_stream_request(const struct hbone_stream *s)
{
	return &s->req;
}

const char *
hbone_stream_peer_id(const struct hbone_stream *s)
{
	return s->conn != NULL ? tls_conn_peer_id(s->conn->tls) : "";
}
