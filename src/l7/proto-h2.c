/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/2 module of the L7 engine (struct l7_proto_ops): h2c with prior knowledge, so
 * cleartext gRPC too, inside a tunnel from a ztunnel (tunnel.h). The tunnel's bytes feed an
 * nghttp2 server session; each request stream is routed, authorized and answered locally or sent
 * on in its own HBONE tunnel, as the waypoint, to the chosen endpoint, where an nghttp2 client
 * session speaks h2c to the application.
 * Headers, DATA and trailers (grpc-status) are forwarded as they come; nothing is buffered whole.
 *
 * Flow control, end to end: both sessions run without automatic WINDOW_UPDATE. Request DATA is
 * returned to the client's window (nghttp2_session_consume) only when the upstream session has
 * sent it; response DATA is returned to the application's window only when the downstream
 * session has sent it. So each request holds at most one stream window (H2_STREAM_WINDOW) per
 * direction, and the tunnels' own bytes are returned as soon as nghttp2 has parsed them.
 *
 * Not on this path (amesh-waypoint(8) CAVEATS): retries and per-try timeouts (a request body is
 * never held for replay); the request pipeline (pipeline.c: registry refresh, checks, route, L7
 * policy, faults, rewrites) is the HTTP/1.1 path's, and so are header edits, the route's overall
 * timeout and request telemetry.
 */
#include "config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "hbone/h2flood.h"
#include "l7/mirror.h"
#include "l7/pipeline.h"
#include "l7/route.h"
#include "l7/tunnel.h"
#include "tls/rng.h"

#define H2_STREAM_WINDOW (64u * 1024)
#define H2_CONN_WINDOW (1u * 1024 * 1024)
#define H2_MAX_STREAMS 100
#define H2_MAX_HEADERS 64
#define H2_MAX_HEADER_BYTES (16u * 1024)
#define H2_LINGER_MS 5000
/* Requests a tunnel may hold at once, finished ones still closing their upstream included. */
#define H2_MAX_REQS (4 * H2_MAX_STREAMS)

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct h2r;

/* The tunnel's HTTP/2 connection. */
enum h2_conn_state {
	H2_CS_OPEN, /* the server session reads requests and answers them */
	H2_CS_EOF,  /* the client ended its side: requests already whole finish, then we end ours */
	H2_CS_GONE, /* the tunnel closed: every request is cancelled, the session is done */
};

struct h2d {
	struct tun *t;
	nghttp2_session *s;
	enum h2_conn_state state;
	struct h2r *reqs;
	int nreqs, open_streams;
	bool sending, in_recv; /* inside nghttp2_session_send / _mem_recv */
	struct h2_flood flood; /* the client's control frames (hbone/h2flood.h) */
	bool flooded;          /* over them: GOAWAY ENHANCE_YOUR_CALM sent */
};

/* Where a request's answer is, downstream. */
enum h2r_answer {
	H2R_NO_ANSWER, /* nothing sent to the client yet: a local reply may still answer it */
	H2R_ANSWERING, /* its head went down (the app's or ours); body and trailers follow */
	H2R_ANSWERED,  /* the app's whole answer has come (END_STREAM): what is left goes down */
};

/* How much of a request the client has sent. */
enum h2r_req {
	H2R_REQ_HEAD, /* its HEADERS are being read: the fields are collected */
	H2R_REQ_BODY, /* the head is complete (the pipeline ran on it); DATA may follow */
	H2R_REQ_END,  /* the client ended its stream (END_STREAM): the whole request is here */
};

/* The request's exchange upstream, in this order (a state never goes back). */
enum h2r_up {
	H2R_UP_ACTIVE, /* none opened yet, or its exchange under way */
	H2R_UP_DONE,   /* the exchange is over (the app ended its stream, or it failed): the request
			  body goes nowhere, nothing more comes back */
	H2R_UP_SHUT,   /* we closed the tunnel: reset (cancelled), or shut down after the exchange */
	H2R_UP_LINGER, /* shut down cleanly after a whole exchange: the app has H2_LINGER_MS to close
			  its end (the route's timer is reused), then the tunnel is reset */
};

/* Fields moved out of a request's hv, with their strings (allocated only when needed: a retry's
 * request, a held gRPC head). */
struct h2_fields {
	struct hdr v[H2_MAX_HEADERS];
	char *store[H2_MAX_HEADERS * 2];
	size_t n;
};

/* One request: a downstream stream and, once it goes upstream, its tunnel and client session. */
struct h2r {
	struct h2d *d;
	struct h2r *next;
	int32_t sid;
	/* The request as received: pseudo-headers and the other fields, copied. */
	char *method, *scheme, *authority, *path;
	struct hdr hv[H2_MAX_HEADERS];
	char *hstore[H2_MAX_HEADERS * 2];
	size_t nh, hbytes;
	/* Its fields again once they went upstream (hv then collects the response's), for a
	 * retry's request; only when the route retries. */
	struct h2_fields *rq;
	/* A gRPC answer's head held back while its call may still be retried on a grpc-status in
	 * the trailers that follow it: until the first message, or those trailers. */
	struct h2_fields *held;
	enum h2r_req req_state;
	bool too_big; /* its head passed H2_MAX_HEADERS or H2_MAX_HEADER_BYTES: answered 431 */
	struct registry *reg; /* the snapshot rt and ep belong to, held while the request lives */
	const struct reg_route *rt;
	const struct reg_workload *ep;
	bool balanced; /* ep is the balancer's pick (lb_fail when it cannot be reached) */
	const struct reg_service *lb_svc; /* the service it was picked for (lb_result, lb_take) */
	/* Its places in that service's pool: in flight, and waiting for its upstream tunnel. */
	struct lb_pool *pool_rq, *pool_pend;
	uint16_t target;
	char traceparent[64];
	bool add_tp;
	char *up_path;
	/* Upstream: HBONE tunnel, h2c client session on it, its stream. */
	struct hbone_stream *up;
	nghttp2_session *us;
	struct l7_sendq up_out;
	int32_t usid;
	enum h2r_up up_state;
	bool up_sending, up_in_recv; /* inside nghttp2_session_send / _mem_recv of us */
	struct buf req_body, resp_body; /* each bounded by a stream window */
	/* Retries: the attempt (1 = the first), and the request body kept for them while it fits
	 * WP_REPLAY_MAX (the route retries): every attempt sends it from replay_sent 0, the client
	 * gets its window back as the first attempt to send a byte does (replay_consumed). A body
	 * that outgrows it goes on through req_body and is not retried (replay_over). */
	int attempt;
	struct buf replay;
	size_t replay_sent, replay_consumed;
	bool replay_on, replay_over;
	nghttp2_session *us_dead; /* a dropped attempt's client session, deleted when safe */
	struct mirror *mirror;    /* the route's copy of the request, while its body passes */
	enum h2r_answer answer;
	/* Independent of answer: the client may close its stream at any point, and a reset may
	 * follow any state (sent once). */
	bool down_closed, reset_sent;
	nghttp2_nv *trailers;
	size_t ntrailers;
	char *tstore; /* trailer names and values, back to back */
	/* A local reply's body. */
	const char *lbody;
	size_t lbody_len, lbody_off;
	/* Timers: the route's overall timeout; a fault delay. */
	uv_timer_t timer, wait;
	int timers_open;
	bool timers_closing;
	int status;
	const char *flags;
	bool grpc, counted;
	/* The request got our Trailers-Only gRPC answer (:status 200, grpc-status for status). */
	bool grpc_local;
	uint64_t start, req_bytes, resp_bytes;
};

static void d_flush(struct h2d *d);
static void up_flush(struct h2r *r);
static void r_cancel_up(struct h2r *r);
static void r_maybe_free(struct h2r *r);
static void h2_on_timeout(uv_timer_t *h);
static bool r_retry(struct h2r *r, enum route_outcome o, int status);

bool
h2_preface(const uint8_t *p, size_t n, bool *complete)
{
	size_t m = n < sizeof(preface) - 1 ? n : sizeof(preface) - 1;

	*complete = n >= sizeof(preface) - 1;
	return memcmp(p, preface, m) == 0;
}

/* Request bytes that will never go upstream: back to the client's windows (the connection's even
 * when the stream is gone), or the tunnel's other streams would starve. */
static void
r_drop_req_body(struct h2r *r)
{
	size_t n = buf_len(&r->req_body);

	buf_consume(&r->req_body, n);
	if (r->replay_on) {
		/* Kept for a retry that will not come: what the client was not given back yet. */
		n += buf_len(&r->replay) - r->replay_consumed;
		r->replay_consumed = buf_len(&r->replay);
	}
	if (n == 0 || r->d->s == NULL)
		return;
	if (r->down_closed)
		nghttp2_session_consume_connection(r->d->s, n);
	else
		nghttp2_session_consume(r->d->s, r->sid, n);
}

/* --- the balancer: outlier detection and the service's pool (net/lb.h) --- */

/* The body of Envoy's local reply to a request refused by a circuit breaker (flag UO). */
#define H2_OVERFLOW "upstream connect error or disconnect/reset before headers. reset reason: overflow"

/* How the attempt to the balanced endpoint went. */
static void
r_result(struct h2r *r, int status)
{
	if (r->lb_svc != NULL && r->ep != NULL)
		lb_result(r->d->t->wp->lb, r->reg, r->lb_svc, r->ep, status,
		    uv_now(r->d->t->wp->loop));
}

static void
r_pending_done(struct h2r *r)
{
	lb_release(r->pool_pend, LB_PENDING);
	r->pool_pend = NULL;
}

static void
r_pool_release(struct h2r *r)
{
	r_pending_done(r);
	lb_release(r->pool_rq, LB_REQUESTS);
	r->pool_rq = NULL;
}

/* --- telemetry --- */

static void
r_telemetry(struct h2r *r)
{
	const char *path = r->path ? r->path : "-";
	struct wp_request_log q = {
		.rt = r->rt, .ep = r->ep, .method = r->method, .authority = r->authority,
		.path = path, .path_len = strlen(path), .flags = r->flags,
		.traceparent = r->traceparent, .grpc = r->grpc,
		/* A gRPC local reply is recorded as the client saw it, as Istio does: HTTP 200, and
		 * the grpc-status beside it (amesh-waypoint(8) LOCAL REPLIES). */
		.status = r->grpc_local ? 200 : r->status,
		.grpc_status = r->grpc_local ? l7_grpc_status(r->status) : -1,
		.start = r->start, .req_bytes = r->req_bytes, .resp_bytes = r->resp_bytes,
	};

	if (r->counted || r->req_state == H2R_REQ_HEAD)
		return;
	r->counted = true;
	wp_request_telemetry(r->d->t, &q);
}

/* --- responses downstream --- */

/* The downstream response body: the upstream's DATA as it comes, or a local reply's body. */
static ssize_t
resp_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *user)
{
	struct h2r *r = src->ptr;
	size_t n;

	if (r->lbody != NULL) {
		n = r->lbody_len - r->lbody_off;
		if (n > len)
			n = len;
		memcpy(buf, r->lbody + r->lbody_off, n);
		r->lbody_off += n;
		if (r->lbody_off == r->lbody_len) {
			*flags |= NGHTTP2_DATA_FLAG_EOF;
			/* Answered: a client still sending its body may stop (RFC 9113 8.1). */
			if (r->req_state != H2R_REQ_END)
				nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_NO_ERROR);
		}
		r->resp_bytes += n;
		return (ssize_t)n;
	}
	n = buf_len(&r->resp_body);
	if (n == 0) {
		if (r->answer != H2R_ANSWERED)
			return NGHTTP2_ERR_DEFERRED;
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (r->ntrailers > 0) {
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(s, sid, r->trailers, r->ntrailers) != 0)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		return 0;
	}
	if (n > len)
		n = len;
	memcpy(buf, buf_ptr(&r->resp_body), n);
	buf_consume(&r->resp_body, n);
	r->resp_bytes += n;
	/* Sent on: the application may send that much more. */
	if (r->us != NULL && r->usid > 0) {
		nghttp2_session_consume(r->us, r->usid, n);
		up_flush(r);
	}
	return (ssize_t)n;
}

/* A local reply to a gRPC request, as gRPC servers and Envoy send it: Trailers-Only (:status 200,
 * grpc-status and the percent-encoded grpc-message in the one HEADERS frame that ends the
 * stream), so that clients read a status instead of failing to parse an HTTP error. */
static int
grpc_local_reply(struct h2r *r, int status, const char *body)
{
	char gs[8], msg[512];
	size_t m = 0;
	nghttp2_nv nv[] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		    NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"grpc-status", (uint8_t *)gs, 11, 0, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"grpc-message", (uint8_t *)msg, 12, 0, NGHTTP2_NV_FLAG_NONE },
	};

	snprintf(gs, sizeof(gs), "%d", l7_grpc_status(status));
	for (const unsigned char *p = (const unsigned char *)body; *p && m + 4 < sizeof(msg); p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%')
			msg[m++] = (char)*p;
		else
			m += (size_t)snprintf(msg + m, sizeof(msg) - m, "%%%02X", *p);
	}
	nv[2].valuelen = strlen(gs);
	nv[3].valuelen = m;
	r->answer = H2R_ANSWERED; /* the one HEADERS frame is the whole answer */
	r->grpc_local = true;
	/* No RST_STREAM after it for a request body still coming (it is dropped as it arrives):
	 * gRPC clients take a reset that races the status for the call's failure. */
	return nghttp2_submit_response(r->d->s, r->sid, nv, m > 0 ? 4 : 3, NULL);
}

/* Answers the request ourselves (deny, fault, timeout, no route, upstream failure). */
static void
h2_local_reply(struct h2r *r, int status, const char *body, const char *flags)
{
	struct h2d *d = r->d;
	char st[8], cl[24];
	nghttp2_data_provider dp = { .source.ptr = r, .read_callback = resp_read };
	nghttp2_nv nv[] = {
		{ (uint8_t *)":status", (uint8_t *)st, 7, 0, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"content-type", (uint8_t *)"text/plain", 12, 10, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"content-length", (uint8_t *)cl, 14, 0, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)"allow", (uint8_t *)L7_ALLOW, 5, sizeof(L7_ALLOW) - 1,
		    NGHTTP2_NV_FLAG_NONE }, /* a 405's only */
	};

	/* Status first: cancelling the upstream may call back into us (h2_up_on_response). */
	if (r->answer == H2R_NO_ANSWER) {
		r->status = status;
		r->flags = flags;
	} else if (r->flags == NULL) {
		r->flags = flags;
	}
	r_cancel_up(r);
	r_drop_req_body(r);
	if (!r->timers_closing) {
		uv_timer_stop(&r->timer);
		uv_timer_stop(&r->wait);
	}
	if (r->answer != H2R_NO_ANSWER || r->down_closed) {
		/* Half a response went out: the only honest end is to reset the stream. */
		if (!r->down_closed && !r->reset_sent) {
			r->reset_sent = true;
			nghttp2_submit_rst_stream(d->s, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_INTERNAL_ERROR);
		}
		d_flush(d);
		return;
	}
	d->t->wp->st.local_replies++;
	snprintf(st, sizeof(st), "%d", status);
	snprintf(cl, sizeof(cl), "%zu", strlen(body));
	nv[0].valuelen = strlen(st);
	nv[2].valuelen = strlen(cl);
	r->lbody = body;
	r->lbody_len = strlen(body);
	r->lbody_off = 0;
	r->answer = H2R_ANSWERING;
	/* r->status keeps the HTTP status: a gRPC answer's grpc-status is derived from it. */
	if ((r->grpc ? grpc_local_reply(r, status, body) :
	    nghttp2_submit_response(d->s, r->sid, nv, status == 405 ? 4 : 3,
	    r->lbody_len ? &dp : NULL)) != 0 &&
	    !r->reset_sent) {
		r->reset_sent = true;
		nghttp2_submit_rst_stream(d->s, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_INTERNAL_ERROR);
	}
	d_flush(d);
}

/* --- upstream: the HBONE tunnel and the h2c client session in it --- */

static ssize_t
up_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *user)
{
	struct h2r *r = user;

	if (r->up == NULL || l7_sendq_len(&r->up_out) >= WP_BUF)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (l7_sendq_put(&r->up_out, data, len) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static void
up_flush(struct h2r *r)
{
	/* Never from inside the client session's own callbacks: the caller flushes after. */
	if (r->us == NULL || r->up == NULL || r->up_sending || r->up_in_recv)
		return;
	r->up_sending = true;
	for (;;) {
		l7_sendq_flush(&r->up_out, r->up);
		if (l7_sendq_len(&r->up_out) >= WP_BUF || !nghttp2_session_want_write(r->us))
			break;
		if (nghttp2_session_send(r->us) != 0) {
			r->up_sending = false;
			h2_local_reply(r, 503, "upstream protocol error", "UPE");
			return;
		}
		if (l7_sendq_len(&r->up_out) == 0)
			break;
	}
	l7_sendq_flush(&r->up_out, r->up);
	r->up_sending = false;
}

/* The request body upstream: the client's DATA as it comes. */
static ssize_t
req_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *user)
{
	struct h2r *r = src->ptr;
	struct h2d *d = r->d;
	size_t n;

	if (r->replay_on && r->replay_sent < buf_len(&r->replay)) {
		/* The kept body: each attempt sends all of it; the client's window is given back
		 * for the bytes no attempt sent before. */
		n = buf_len(&r->replay) - r->replay_sent;
		if (n > len)
			n = len;
		memcpy(buf, buf_ptr(&r->replay) + r->replay_sent, n);
		r->replay_sent += n;
		if (r->replay_sent > r->replay_consumed) {
			size_t c = r->replay_sent - r->replay_consumed;

			r->replay_consumed = r->replay_sent;
			if (!r->down_closed) {
				nghttp2_session_consume(d->s, r->sid, c);
				d_flush(d);
			}
		}
		return (ssize_t)n;
	}
	n = buf_len(&r->req_body);
	if (n == 0) {
		if (r->req_state != H2R_REQ_END)
			return NGHTTP2_ERR_DEFERRED;
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return 0;
	}
	if (n > len)
		n = len;
	memcpy(buf, buf_ptr(&r->req_body), n);
	buf_consume(&r->req_body, n);
	/* Sent on: the client may send that much more. */
	if (!r->down_closed) {
		nghttp2_session_consume(d->s, r->sid, n);
		d_flush(d);
	}
	return (ssize_t)n;
}

/* Appends a field to r->hv (the caller checked the bounds). */
static int
hv_add(struct h2r *r, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	r->hstore[2 * r->nh] = strndup((const char *)name, nlen);
	r->hstore[2 * r->nh + 1] = strndup((const char *)value, vlen);
	if (r->hstore[2 * r->nh] == NULL || r->hstore[2 * r->nh + 1] == NULL) {
		/* Past nh nothing is freed: the half that was made goes now. */
		free(r->hstore[2 * r->nh]);
		free(r->hstore[2 * r->nh + 1]);
		r->hstore[2 * r->nh] = r->hstore[2 * r->nh + 1] = NULL;
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	r->hv[r->nh].name = r->hstore[2 * r->nh];
	r->hv[r->nh].value = r->hstore[2 * r->nh + 1];
	r->nh++;
	return 0;
}

static int
up_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct h2r *r = user;

	if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != r->usid)
		return 0;
	if (r->nh >= H2_MAX_HEADERS || r->hbytes + nlen + vlen > H2_MAX_HEADER_BYTES)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	/* Response headers and trailers are collected in hv (the request's are no longer needed
	 * once it went upstream), emitted at the end of the block. */
	r->hbytes += nlen + vlen;
	return hv_add(r, name, nlen, value, vlen);
}

/* Moves hv's fields out into a new set, hv left empty; NULL (hv untouched) without memory. */
static struct h2_fields *
fields_take(struct h2r *r)
{
	struct h2_fields *f = malloc(sizeof(*f));

	if (f == NULL)
		return NULL;
	memcpy(f->v, r->hv, r->nh * sizeof(r->hv[0]));
	memcpy(f->store, r->hstore, 2 * r->nh * sizeof(r->hstore[0]));
	f->n = r->nh;
	memset(r->hstore, 0, 2 * r->nh * sizeof(r->hstore[0]));
	r->nh = 0;
	r->hbytes = 0;
	return f;
}

static void
fields_free(struct h2_fields *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < 2 * f->n; i++)
		free(f->store[i]);
	free(f);
}

/* Keeps the request's fields (in hv) for a retry's request; hv is left empty for the response's.
 * Without memory for them the request cannot be retried. */
static void
save_request_fields(struct h2r *r)
{
	r->rq = fields_take(r);
	if (r->rq == NULL)
		r->replay_over = true;
}

/* Sets the response head (in hv) aside; hv is left empty for what follows. False (nothing held)
 * without memory. */
static bool
hold_head(struct h2r *r)
{
	r->held = fields_take(r);
	return r->held != NULL;
}

/* Frees a held head (dropped with its attempt, or with r). */
static void
drop_held_head(struct h2r *r)
{
	fields_free(r->held);
	r->held = NULL;
}

/* The grpc-status field among hv (a Trailers-Only head or trailers), or -1. */
static int
grpc_status_of(const struct h2r *r)
{
	for (size_t i = 0; i < r->nh; i++)
		if (strcmp(r->hv[i].name, "grpc-status") == 0)
			return atoi(r->hv[i].value);
	return -1;
}

/* The HTTP status a gRPC status stands for, as Envoy reports it to outlier detection
 * (Grpc::Utility::grpcToHttpStatus). */
static int
grpc_http_status(int gs)
{
	static const int map[] = { 200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501,
		500, 503, 500, 401 };

	return gs >= 0 && gs < (int)(sizeof(map) / sizeof(map[0])) ? map[gs] : 500;
}

static void
clear_headers(struct h2r *r)
{
	for (size_t i = 0; i < 2 * r->nh; i++) {
		free(r->hstore[i]);
		r->hstore[i] = NULL;
	}
	r->nh = 0;
	r->hbytes = 0;
}

/* Puts a held head back into hv (whatever hv held is freed) for send_response_head. */
static void
unhold_head(struct h2r *r)
{
	struct h2_fields *f = r->held;

	clear_headers(r);
	memcpy(r->hv, f->v, f->n * sizeof(r->hv[0]));
	memcpy(r->hstore, f->store, 2 * f->n * sizeof(r->hstore[0]));
	r->nh = f->n;
	free(f);
	r->held = NULL;
}

/* True when a gRPC status could still have this call retried (route and attempts allow). */
static bool
grpc_may_retry(const struct h2r *r)
{
	static const int st[] = { 1, 4, 8, 14 };

	if (!r->grpc || r->rt == NULL || r->replay_over)
		return false;
	for (size_t i = 0; i < sizeof(st) / sizeof(st[0]); i++)
		if (route_should_retry(r->rt, r->attempt, ROUTE_OUT_GRPC, st[i]))
			return true;
	return false;
}

/* The upstream response head: on downstream, with the route's response edits. */
static void
send_response_head(struct h2r *r, bool no_body)
{
	struct h2d *d = r->d;
	struct hdr *storage;
	struct hdr_list l;
	nghttp2_nv *nv;
	nghttp2_data_provider dp = { .source.ptr = r, .read_callback = resp_read };
	const char *st = NULL;
	/* Room for every field and every edit of the route: all are applied (amesh-waypoint(8)). */
	size_t n = 0, cap = r->nh + (r->rt != NULL ? r->rt->response_set.n +
	    r->rt->response_add.n : 0) + 1;

	storage = calloc(cap, sizeof(*storage));
	nv = calloc(cap + 1, sizeof(*nv)); /* :status and the list */
	if (storage == NULL || nv == NULL) {
		free(storage);
		free(nv);
		h2_local_reply(r, 502, "out of memory", "UPE");
		return;
	}
	hdr_list_init(&l, storage, cap);
	for (size_t i = 0; i < r->nh; i++) {
		if (strcmp(r->hv[i].name, ":status") == 0)
			st = r->hv[i].value;
		else if (r->hv[i].name[0] != ':')
			hdr_list_add(&l, r->hv[i].name, r->hv[i].value);
	}
	if (st == NULL) {
		free(storage);
		free(nv);
		h2_local_reply(r, 502, "upstream sent no :status", "UPE");
		return;
	}
	r->status = atoi(st);
	if (!r->timers_closing)
		uv_timer_stop(&r->wait); /* per_try_timeout: answered */
	if (r->rt != NULL && route_edit_response_headers(r->rt, &l) != 0) {
		free(storage);
		free(nv);
		h2_local_reply(r, 500, "response headers do not fit", "UPE");
		return;
	}
	nv[n++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)st, 7, strlen(st),
		NGHTTP2_NV_FLAG_NONE };
	for (size_t i = 0; i < l.n; i++)
		nv[n++] = (nghttp2_nv){ (uint8_t *)l.v[i].name, (uint8_t *)l.v[i].value,
			strlen(l.v[i].name), strlen(l.v[i].value), NGHTTP2_NV_FLAG_NONE };
	r->answer = H2R_ANSWERING;
	/* Without a body (gRPC's Trailers-Only) the head carries END_STREAM itself. */
	if (no_body)
		r->answer = H2R_ANSWERED;
	if (nghttp2_submit_response(d->s, r->sid, nv, n, no_body ? NULL : &dp) != 0) {
		r->reset_sent = true;
		nghttp2_submit_rst_stream(d->s, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_INTERNAL_ERROR);
	}
	free(storage); /* nghttp2 copied the fields */
	free(nv);
	clear_headers(r);
	d_flush(d);
}

/* Trailers (a HEADERS block after the head): kept until the body before them is sent. */
static int
keep_trailers(struct h2r *r)
{
	size_t total = 0, off = 0;

	for (size_t i = 0; i < r->nh; i++)
		total += strlen(r->hv[i].name) + strlen(r->hv[i].value) + 2;
	r->trailers = calloc(r->nh ? r->nh : 1, sizeof(*r->trailers));
	r->tstore = malloc(total ? total : 1);
	if (r->trailers == NULL || r->tstore == NULL)
		return AMESH_ERR_NOMEM;
	for (size_t i = 0; i < r->nh; i++) {
		size_t nl = strlen(r->hv[i].name), vl = strlen(r->hv[i].value);
		char *nm = r->tstore + off, *vv = r->tstore + off + nl + 1;

		memcpy(nm, r->hv[i].name, nl + 1);
		memcpy(vv, r->hv[i].value, vl + 1);
		off += nl + vl + 2;
		if (nm[0] == ':')
			continue;
		r->trailers[r->ntrailers++] = (nghttp2_nv){ (uint8_t *)nm, (uint8_t *)vv, nl, vl,
			NGHTTP2_NV_FLAG_NONE };
	}
	clear_headers(r);
	return 0;
}

static int
up_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h2r *r = user;

	if (f->hd.stream_id != r->usid || r->usid <= 0)
		return 0;
	if (f->hd.type == NGHTTP2_DATA && r->held != NULL && !r->down_closed) {
		unhold_head(r); /* an empty DATA (its END_STREAM): the head goes now */
		send_response_head(r, false);
	}
	if (f->hd.type == NGHTTP2_HEADERS) {
		/* The final response follows any 1xx as a plain HEADERS block (nghttp2's category
		 * HCAT_HEADERS): the first non-1xx block is the head, a later one the trailers. */
		if (r->answer == H2R_NO_ANSWER && r->held == NULL) {
			const char *st = NULL;

			for (size_t i = 0; i < r->nh; i++)
				if (strcmp(r->hv[i].name, ":status") == 0)
					st = r->hv[i].value;
			bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
			int code, gs;

			if (st != NULL && st[0] == '1') {
				clear_headers(r); /* 1xx: not forwarded */
				return 0;
			}
			code = st != NULL ? atoi(st) : 0;
			/* Trailers-Only: the call's status is here already. */
			gs = r->grpc && end ? grpc_status_of(r) : -1;
			if (!r->grpc || end)
				r_result(r, gs >= 0 ? grpc_http_status(gs) : code);
			if (code != 0 && (r_retry(r, ROUTE_OUT_STATUS, code) ||
			    (gs >= 0 && r_retry(r, ROUTE_OUT_GRPC, gs))))
				return 0; /* the attempt is dropped: nothing of it went down */
			/* Its grpc-status may come in trailers right after this head: the head
			 * waits for them, or for the first message. */
			if (!end && code == 200 && grpc_may_retry(r) && hold_head(r))
				return 0;
			send_response_head(r, end);
		} else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
			int gs = r->grpc ? grpc_status_of(r) : -1;

			if (r->grpc)
				r_result(r, gs >= 0 ? grpc_http_status(gs) : 200);
			if (r->held != NULL && gs >= 0 && r_retry(r, ROUTE_OUT_GRPC, gs))
				return 0; /* no message came: the call failed as a whole */
			if (keep_trailers(r) != 0) {
				h2_local_reply(r, 502, "out of memory", "UPE");
				return 0;
			}
			if (r->held != NULL) {
				unhold_head(r);
				send_response_head(r, false); /* its trailers follow at once */
			}
		}
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && r->answer != H2R_NO_ANSWER) {
		r->answer = H2R_ANSWERED;
		if (!r->timers_closing)
			uv_timer_stop(&r->timer); /* all of it is here: the route timeout is met */
		nghttp2_session_resume_data(r->d->s, r->sid);
		d_flush(r->d);
	}
	return 0;
}

static int
up_on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
    size_t len, void *user)
{
	struct h2r *r = user;

	if (sid == r->usid && r->held != NULL && !r->down_closed) {
		/* The call's first message: it is answering, the held head goes first. */
		unhold_head(r);
		send_response_head(r, false);
	}
	if (sid != r->usid || r->answer == H2R_NO_ANSWER || r->down_closed)
		return 0;
	/* Bounded by the stream window we give the application: consumed only once sent on. */
	if (buf_put(&r->resp_body, data, len) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	nghttp2_session_resume_data(r->d->s, r->sid);
	d_flush(r->d);
	return 0;
}

static int
up_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *user)
{
	struct h2r *r = user;

	if (sid != r->usid || r->up_state >= H2R_UP_DONE)
		return 0;
	r->up_state = H2R_UP_DONE;
	if (r->answer != H2R_ANSWERED) {
		if (r->answer == H2R_NO_ANSWER)
			r_result(r, LB_LOCAL_FAILURE);
		if (r->answer == H2R_NO_ANSWER && r_retry(r, err == NGHTTP2_REFUSED_STREAM ?
		    ROUTE_OUT_REFUSED_STREAM : ROUTE_OUT_RESET, 0))
			return 0;
		if (r->answer == H2R_NO_ANSWER)
			h2_local_reply(r, 503, "upstream connect error or disconnect/reset before headers",
			    err == NGHTTP2_REFUSED_STREAM ? "UR" : "UC");
		else
			h2_local_reply(r, r->status, "", "UR"); /* cut mid-response: reset downstream */
		return 0;
	}
	/* The exchange is complete: the tunnel ends (the application sees its connection close). */
	r_cancel_up(r);
	return 0;
}

static nghttp2_session_callbacks *up_callbacks;

static void
h2_up_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct h2r *r = hbone_stream_user(s);
	ssize_t n;

	if (r->us == NULL) {
		hbone_stream_consumed(s, len);
		return;
	}
	r->d->t->last = uv_now(r->d->t->wp->loop); /* a long answer keeps the tunnel alive */
	r->up_in_recv = true;
	n = nghttp2_session_mem_recv(r->us, data, len);
	r->up_in_recv = false;
	if (r->up != NULL)
		hbone_stream_consumed(s, len);
	if (n < 0) {
		log_debug("waypoint: h2c from %s: %s", r->ep ? r->ep->h.name : "?",
		    nghttp2_strerror((int)n));
		if (r->answer == H2R_NO_ANSWER)
			h2_local_reply(r, 502, "upstream protocol error", "UPE");
		else
			h2_local_reply(r, r->status, "", "UPE");
		return;
	}
	up_flush(r);
}

static void
h2_up_on_eof(struct hbone_stream *s)
{
	struct h2r *r = hbone_stream_user(s);

	if (r->up_state < H2R_UP_DONE && r->answer != H2R_ANSWERED) {
		r->up_state = H2R_UP_DONE;
		if (r->answer == H2R_NO_ANSWER) {
			r_result(r, LB_LOCAL_FAILURE);
			if (r_retry(r, ROUTE_OUT_RESET, 0))
				return;
		}
		h2_local_reply(r, r->answer != H2R_NO_ANSWER ? r->status : 503,
		    "upstream connect error or disconnect/reset before headers", "UC");
	}
}

static void
h2_up_on_writable(struct hbone_stream *s)
{
	up_flush(hbone_stream_user(s));
}

static void
h2_up_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct h2r *r = hbone_stream_user(s);

	r->up = NULL;
	r_pending_done(r);
	if (r->up_state < H2R_UP_DONE && r->answer != H2R_ANSWERED) {
		r->up_state = H2R_UP_DONE;
		if (r->answer == H2R_NO_ANSWER)
			r_result(r, LB_LOCAL_FAILURE);
		if (r->answer == H2R_NO_ANSWER && r_retry(r, ROUTE_OUT_RESET, 0))
			return;
		h2_local_reply(r, r->answer != H2R_NO_ANSWER ? r->status : 503,
		    "upstream connect error or disconnect/reset before headers", "UC");
	}
	r_maybe_free(r); /* the client session goes with r: this may be inside its callbacks */
}

static void
h2_up_on_response(struct hbone_stream *s, int status)
{
	struct h2r *r = hbone_stream_user(s);
	struct hdr *storage;
	struct hdr_list l;
	nghttp2_nv *nv;
	nghttp2_data_provider dp = { .source.ptr = r, .read_callback = req_read };
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
	};
	nghttp2_option *opt;
	const struct hdr *src;
	size_t n = 0, cap, ns;

	r_pending_done(r);
	if (status != 200) {
		bool ours = r->up_state >= H2R_UP_SHUT; /* our own cancel, not a failure */

		hbone_stream_set_cb(s, NULL, NULL);
		r->up = NULL;
		if (!ours) {
			r->up_state = H2R_UP_DONE;
			r->d->t->wp->st.upstream_failures++;
		}
		/* The pool could not connect: the balancer skips the endpoint for a while. */
		if (!ours && status < 0 && r->balanced)
			lb_fail(r->d->t->wp->lb, r->reg, r->ep, uv_now(r->d->t->wp->loop));
		/* No connection, or the endpoint's ztunnel could not reach the app (503). */
		if (!ours && (status < 0 || status == 503))
			r_result(r, status < 0 ? LB_LOCAL_FAILURE : 503);
		if (!ours && status != 401 && r_retry(r, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		if (!ours && r->status == 0 && !r->down_closed)
			h2_local_reply(r, 503, status == 401 ? "upstream refused the waypoint" :
			    "upstream connect error", status == 401 ? "DENY" : "UF");
		r_maybe_free(r);
		return;
	}
	if (r->up_state >= H2R_UP_DONE || r->down_closed || r->status != 0)
		return; /* answered or gone meanwhile: r_cancel_up has reset the tunnel */
	if (nghttp2_option_new(&opt) != 0) {
		h2_local_reply(r, 500, "out of memory", "UPE");
		return;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	if (nghttp2_session_client_new3(&r->us, up_callbacks, r, opt, amesh_nghttp2_mem()) != 0) {
		nghttp2_option_del(opt);
		r->us = NULL;
		h2_local_reply(r, 500, "out of memory", "UPE");
		return;
	}
	nghttp2_option_del(opt);
	nghttp2_submit_settings(r->us, NGHTTP2_FLAG_NONE, iv, 2);
	/* Room for every field, every edit of the route (all are applied, as over HTTP/1.1:
	 * amesh-waypoint(8)) and a traceparent. A retry sends the fields kept of the first. */
	src = r->rq != NULL ? r->rq->v : r->hv;
	ns = r->rq != NULL ? r->rq->n : r->nh;
	cap = ns + (r->rt != NULL ? r->rt->request_set.n + r->rt->request_add.n : 0) + 1;
	storage = calloc(cap, sizeof(*storage));
	nv = calloc(cap + 4, sizeof(*nv)); /* the four pseudo-fields and the list */
	if (storage == NULL || nv == NULL) {
		free(storage);
		free(nv);
		h2_local_reply(r, 500, "out of memory", "UPE");
		return;
	}
	hdr_list_init(&l, storage, cap);
	for (size_t i = 0; i < ns; i++)
		hdr_list_add(&l, src[i].name, src[i].value);
	if (r->rt != NULL && route_edit_request_headers(r->rt, &l) != 0) {
		free(storage);
		free(nv);
		h2_local_reply(r, 500, "request headers do not fit", "UPE");
		return;
	}
	if (r->add_tp)
		hdr_list_add(&l, "traceparent", r->traceparent);
	nv[n++] = (nghttp2_nv){ (uint8_t *)":method", (uint8_t *)r->method, 7, strlen(r->method),
		NGHTTP2_NV_FLAG_NONE };
	nv[n++] = (nghttp2_nv){ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE };
	nv[n++] = (nghttp2_nv){ (uint8_t *)":authority", (uint8_t *)r->authority, 10,
		strlen(r->authority), NGHTTP2_NV_FLAG_NONE };
	nv[n++] = (nghttp2_nv){ (uint8_t *)":path", (uint8_t *)r->up_path, 5, strlen(r->up_path),
		NGHTTP2_NV_FLAG_NONE };
	for (size_t i = 0; i < l.n; i++)
		nv[n++] = (nghttp2_nv){ (uint8_t *)l.v[i].name, (uint8_t *)l.v[i].value,
			strlen(l.v[i].name), strlen(l.v[i].value), NGHTTP2_NV_FLAG_NONE };
	r->usid = nghttp2_submit_request(r->us, NULL, nv, n,
	    r->req_state == H2R_REQ_END && buf_len(&r->req_body) == 0 &&
	    buf_len(&r->replay) == 0 ? NULL : &dp, r);
	free(storage); /* nghttp2 copied the fields */
	free(nv);
	/* The request's fields are sent; hv now collects the response's. */
	if (r->replay_on && r->rq == NULL && !r->replay_over)
		save_request_fields(r);
	else
		clear_headers(r);
	if (r->usid < 0) {
		h2_local_reply(r, 500, "cannot forward the request", "UPE");
		return;
	}
	up_flush(r);
}

static const struct hbone_stream_cb h2_up_cb = {
	.on_data = h2_up_on_data,
	.on_eof = h2_up_on_eof,
	.on_writable = h2_up_on_writable,
	.on_response = h2_up_on_response,
	.on_close = h2_up_on_close,
};

/* Stops the upstream of r, if any: RST_STREAM to the application and the tunnel closed. */
static void
r_cancel_up(struct h2r *r)
{
	bool was_done = r->up_state >= H2R_UP_DONE;

	if (r->up == NULL || r->up_state >= H2R_UP_SHUT)
		return;
	r->up_state = H2R_UP_SHUT;
	if (was_done && r->us != NULL && r->usid > 0) {
		/* The exchange is complete: a clean close, which the application answers with its
		 * own; if it does not within H2_LINGER_MS, the tunnel is reset. */
		hbone_stream_shutdown(r->up);
		if (!r->timers_closing) {
			r->up_state = H2R_UP_LINGER;
			uv_timer_stop(&r->wait);
			uv_timer_start(&r->timer, h2_on_timeout, H2_LINGER_MS, 0);
		}
	} else {
		/* Cancelled (or still connecting): the application's connection is reset. */
		hbone_stream_reset(r->up, NGHTTP2_CANCEL);
	}
	/* h2_up_on_close lets r go. */
}

static void h2_on_wait(uv_timer_t *h);

/* per_try_timeout: this attempt has had no answer in time; the next one, or 504. */
static void
h2_on_per_try(uv_timer_t *h)
{
	struct h2r *r = h->data;

	if (r->down_closed || r->answer != H2R_NO_ANSWER || r->status != 0)
		return;
	r->d->t->wp->st.timeouts++;
	r_result(r, 504);
	if (r_retry(r, ROUTE_OUT_TIMEOUT, 0))
		return;
	h2_local_reply(r, 504, "upstream request timeout", "UT");
}

/* Lets the attempt in flight go: its tunnel reset, its client session deleted once we are
 * surely out of its callbacks (the next attempt's start, or r's end). */
static void
r_drop_attempt(struct h2r *r)
{
	if (r->up != NULL) {
		hbone_stream_set_cb(r->up, NULL, NULL);
		hbone_stream_reset(r->up, NGHTTP2_CANCEL);
		r->up = NULL;
	}
	r_pending_done(r);
	if (r->us != NULL) {
		if (r->us_dead != NULL)
			nghttp2_session_del(r->us_dead);
		r->us_dead = r->us;
		r->us = NULL;
	}
	r->usid = 0;
	l7_sendq_reset(&r->up_out);
	buf_consume(&r->resp_body, buf_len(&r->resp_body));
	clear_headers(r);
	drop_held_head(r);
	r->up_state = H2R_UP_ACTIVE;
	r->replay_sent = 0;
}

/*
 * The attempt ended with o (status: the HTTP status, or the grpc-status for ROUTE_OUT_GRPC)
 * before anything of its answer went down: once more after the route's backoff, if the route
 * says so and the body sent so far is kept whole (WP_REPLAY_MAX). True when retrying.
 */
static bool
r_retry(struct h2r *r, enum route_outcome o, int status)
{
	struct waypoint *wp = r->d->t->wp;
	uint64_t wait;

	if (r->rt == NULL || r->answer != H2R_NO_ANSWER || r->down_closed || r->status != 0 ||
	    r->timers_closing || r->replay_over || (!r->replay_on && r->req_bytes > 0) ||
	    !route_should_retry(r->rt, r->attempt, o, status))
		return false;
	wait = route_backoff_ms(r->rt, r->attempt, wp_rnd());
	r->attempt++;
	wp->st.retries++;
	r_drop_attempt(r);
	log_debug("%s: retrying %s %s%s (attempt %d) in %llu ms", wp->role, r->method,
	    r->authority, r->path, r->attempt, (unsigned long long)wait);
	uv_timer_start(&r->wait, h2_on_wait, wait, 0);
	return true;
}

static void
start_up(struct h2r *r)
{
	struct waypoint *wp = r->d->t->wp;
	int rc;

	if (r->us_dead != NULL) {
		nghttp2_session_del(r->us_dead); /* the last attempt's (we are on a timer) */
		r->us_dead = NULL;
	}
	if (r->lb_svc != NULL && r->pool_pend == NULL &&
	    lb_take(wp->lb, r->reg, r->lb_svc, LB_PENDING, &r->pool_pend) != 0) {
		/* http1_max_pending_requests: too many requests wait for a connection already. */
		h2_local_reply(r, 503, H2_OVERFLOW, "UO");
		return;
	}
	if (r->rt != NULL && r->rt->per_try_timeout > 0)
		uv_timer_start(&r->wait, h2_on_per_try, r->rt->per_try_timeout, 0);
	rc = wp_open_upstream(r->d->t, r->ep, r->target, r->traceparent, &h2_up_cb, r, &r->up);
	if (rc == -ENOENT) {
		r->up = NULL;
		r_pending_done(r);
		h2_local_reply(r, 503, "no healthy upstream", "UH");
	} else if (rc != 0) {
		r->up = NULL;
		r_pending_done(r);
		wp->st.upstream_failures++;
		r_result(r, LB_LOCAL_FAILURE);
		if (r_retry(r, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		h2_local_reply(r, 503, "upstream connect error", "UO");
	}
}

static void
h2_on_wait(uv_timer_t *h)
{
	struct h2r *r = h->data;

	if (!r->down_closed && r->status == 0)
		start_up(r);
}

static void
h2_on_timeout(uv_timer_t *h)
{
	struct h2r *r = h->data;

	if (r->up_state == H2R_UP_LINGER) {
		/* The application kept its end open after the exchange: close it for it. */
		if (r->up != NULL)
			hbone_stream_reset(r->up, NGHTTP2_CANCEL);
		return;
	}
	if (r->down_closed || r->answer == H2R_ANSWERED)
		return;
	r->d->t->wp->st.timeouts++;
	if (r->up != NULL && r->answer == H2R_NO_ANSWER)
		r_result(r, 504);
	h2_local_reply(r, 504, "upstream request timeout", "UT");
}

/* --- downstream: the server session on the tunnel --- */

static ssize_t
d_send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *user)
{
	struct h2d *d = user;

	if (d->t->down == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	if (l7_sendq_len(&d->t->out) >= WP_BUF)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (l7_sendq_put(&d->t->out, data, len) != 0)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static void
d_flush(struct h2d *d)
{
	struct tun *t = d->t;

	/* Never from inside the server session's own callbacks: the caller flushes after. */
	if (d->sending || d->in_recv || d->state == H2_CS_GONE || d->s == NULL)
		return;
	d->sending = true;
	for (;;) {
		l7_sendq_flush(&t->out, t->down);
		if (l7_sendq_len(&t->out) >= WP_BUF || !nghttp2_session_want_write(d->s))
			break;
		if (nghttp2_session_send(d->s) != 0) {
			d->sending = false;
			wp_tun_abort(t);
			return;
		}
		if (l7_sendq_len(&t->out) == 0)
			break;
	}
	l7_sendq_flush(&t->out, t->down);
	d->sending = false;
	/* The client ended the tunnel and every stream is done (or the session is): end ours
	 * once the bytes are out. */
	if (l7_sendq_len(&t->out) == 0 && t->down != NULL && !t->shut_pending &&
	    ((d->state == H2_CS_EOF && d->open_streams == 0) ||
	    (!nghttp2_session_want_read(d->s) && !nghttp2_session_want_write(d->s)))) {
		t->shut_pending = true; /* (set: it is sent now, and only once) */
		hbone_stream_shutdown(t->down);
	}
}

static int
d_on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h2d *d = user;
	struct h2r *r;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (d->nreqs >= H2_MAX_REQS) {
		/* Finished requests still closing their upstream hold the place of new ones. */
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
		    NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	r->d = d;
	r->sid = f->hd.stream_id;
	r->start = uv_now(d->t->wp->loop);
	uv_timer_init(d->t->wp->loop, &r->timer);
	uv_timer_init(d->t->wp->loop, &r->wait);
	r->timer.data = r->wait.data = r;
	r->timers_open = 2;
	l7_sendq_init(&r->up_out);
	buf_init(&r->req_body, WP_QUEUE_MAX);
	buf_init(&r->resp_body, WP_QUEUE_MAX);
	buf_init(&r->replay, WP_REPLAY_MAX);
	r->attempt = 1;
	r->next = d->reqs;
	d->reqs = r;
	d->nreqs++;
	d->open_streams++;
	nghttp2_session_set_stream_user_data(s, r->sid, r);
	return 0;
}

static int
d_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct h2r *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	char **slot = NULL;

	if (r == NULL || f->hd.type != NGHTTP2_HEADERS || r->req_state != H2R_REQ_HEAD)
		return 0; /* request trailers are not forwarded (gRPC clients send none) */
	if (r->hbytes + nlen + vlen > H2_MAX_HEADER_BYTES || r->nh >= H2_MAX_HEADERS) {
		r->too_big = true;
		return 0;
	}
	r->hbytes += nlen + vlen;
	if (nlen == 7 && memcmp(name, ":method", 7) == 0)
		slot = &r->method;
	else if (nlen == 7 && memcmp(name, ":scheme", 7) == 0)
		slot = &r->scheme;
	else if (nlen == 10 && memcmp(name, ":authority", 10) == 0)
		slot = &r->authority;
	else if (nlen == 5 && memcmp(name, ":path", 5) == 0)
		slot = &r->path;
	if (slot != NULL) {
		free(*slot);
		*slot = strndup((const char *)value, vlen);
		return *slot == NULL ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : 0;
	}
	if (name[0] == ':')
		return 0;
	return hv_add(r, name, nlen, value, vlen);
}

static const char *
hlookup(void *arg, const char *name)
{
	struct h2r *r = arg;

	if (strcasecmp(name, "host") == 0 && r->authority != NULL)
		return r->authority;
	for (size_t i = 0; i < r->nh; i++)
		if (strcasecmp(r->hv[i].name, name) == 0)
			return r->hv[i].value;
	return NULL;
}

/* The request's trace context, for a reply made before the pipeline ran. */
static void
early_traceparent(struct h2r *r)
{
	const char *tp = hlookup(r, "traceparent");

	r->add_tp = tp == NULL;
	if (tp != NULL)
		snprintf(r->traceparent, sizeof(r->traceparent), "%s", tp);
	else
		rng_traceparent(r->traceparent, sizeof(r->traceparent));
}

/* The request head is complete: the pipeline (route, authorize...), then answer or go upstream. */
static void
request_head(struct h2r *r)
{
	struct tun *t = r->d->t;
	const char *ct;
	struct l7_req rq;
	struct l7_plan p;

	if (r->req_state == H2R_REQ_HEAD) /* END_STREAM on the HEADERS: already H2R_REQ_END */
		r->req_state = H2R_REQ_BODY;
	ct = hlookup(r, "content-type");
	r->grpc = ct != NULL && strncmp(ct, "application/grpc", 16) == 0;
	if (r->too_big) {
		early_traceparent(r);
		h2_local_reply(r, 431, "request header fields too large", "-");
		return;
	}
	/* Malformed for us: no :method or :path. A CONNECT has no :path: the pipeline answers it
	 * 405, as over HTTP/1.1 (amesh-waypoint(8)). */
	if (r->method == NULL || (r->path == NULL && strcmp(r->method, "CONNECT") != 0)) {
		early_traceparent(r);
		h2_local_reply(r, 400, "bad request", "-");
		return;
	}
	if (r->authority == NULL && (r->authority = strdup(t->authority)) == NULL) {
		early_traceparent(r);
		h2_local_reply(r, 500, "out of memory", "-");
		return;
	}
	rq = (struct l7_req){
		.method = r->method, .target = r->path != NULL ? r->path : "",
		.target_len = r->path != NULL ? strlen(r->path) : 0,
		.host = r->authority, .header = hlookup, .header_arg = r, .redirects = false,
	};
	l7_pipeline(t, &rq, &p);
	/* The snapshot rt and ep belong to, while the request lives (requests in flight keep
	 * theirs when a later one moves the tunnel). */
	r->reg = registry_ref(t->reg);
	snprintf(r->traceparent, sizeof(r->traceparent), "%s", p.traceparent);
	r->add_tp = p.add_traceparent;
	r->rt = p.rt;
	r->ep = p.ep;
	r->balanced = p.balanced;
	r->target = p.target;
	if (p.status != 0) {
		h2_local_reply(r, p.status, p.body, p.flags);
		return;
	}
	r->up_path = p.upstream_target != NULL ? p.upstream_target : strdup(r->path);
	if (r->up_path == NULL) {
		h2_local_reply(r, 500, "out of memory", "-");
		return;
	}
	r->lb_svc = p.lb_svc;
	r->replay_on = r->rt != NULL && r->rt->retries > 0;
	if (r->lb_svc != NULL &&
	    lb_take(t->wp->lb, r->reg, r->lb_svc, LB_REQUESTS, &r->pool_rq) != 0) {
		/* http2_max_requests: the service has that many requests in flight from here. */
		log_info("%s: %s %s%s refused: service %s at its request limit", t->wp->role,
		    r->method, r->authority, r->path, r->lb_svc->h.name);
		h2_local_reply(r, 503, H2_OVERFLOW, "UO");
		return;
	}
	if (r->rt != NULL && route_mirror(r->rt, wp_rnd())) {
		/* The copy gets the request as received (its path as sent upstream). */
		l7_mirror_h2_start(t, r->rt, r->method, r->authority, r->up_path, r->hv, r->nh,
		    r->traceparent, &r->mirror);
		if (r->req_state == H2R_REQ_END)
			l7_mirror_detach(&r->mirror, true);
	}
	if (p.timeout_ms > 0)
		uv_timer_start(&r->timer, h2_on_timeout, p.timeout_ms, 0);
	if (p.delay) {
		r->flags = "DI";
		uv_timer_start(&r->wait, h2_on_wait, p.delay_ms, 0);
		return;
	}
	start_up(r);
}

static int
d_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct h2d *d = user;
	struct h2r *r;

	if (h2_flood_over(&d->flood, f, uv_now(d->t->wp->loop))) {
		if (!d->flooded) {
			log_warn("%s: %s: h2c client %s sent more than %d SETTINGS, PING, PRIORITY and "
			    "RST_STREAM frames, then %d a second: GOAWAY ENHANCE_YOUR_CALM",
			    d->t->wp->role, d->t->authority, d->t->peer_id, H2_FLOOD_BURST,
			    H2_FLOOD_RATE);
			d->t->wp->st.h2_floods++;
		}
		d->flooded = true;
		nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
		return 0;
	}
	r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
	if (r == NULL)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
			r->req_state = H2R_REQ_END;
		request_head(r);
		return 0;
	}
	if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		r->req_state = H2R_REQ_END;
		l7_mirror_body(&r->mirror, NULL, 0, true);
		if (r->us != NULL && r->usid > 0) {
			nghttp2_session_resume_data(r->us, r->usid);
			up_flush(r);
		}
	}
	return 0;
}

static int
d_on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
    void *user)
{
	struct h2d *d = user;
	struct h2r *r = nghttp2_session_get_stream_user_data(s, sid);

	if (r == NULL)
		return 0;
	r->req_bytes += len;
	l7_mirror_body(&r->mirror, data, len, false);
	if ((r->status != 0 && r->up == NULL) || r->up_state >= H2R_UP_DONE) {
		/* Answered, or its upstream is gone: the body goes nowhere; give the window back. */
		nghttp2_session_consume(d->s, sid, len);
		return 0;
	}
	/* Kept for retries while it fits; past that the request is not retried (as over
	 * HTTP/1.1) and the rest goes on as it comes. */
	if (r->replay_on && !r->replay_over && buf_put(&r->replay, data, len) != 0)
		r->replay_over = true;
	/* Bounded by the stream window: consumed only once sent upstream (req_read). */
	if ((!r->replay_on || r->replay_over) && buf_put(&r->req_body, data, len) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (r->us != NULL && r->usid > 0) {
		nghttp2_session_resume_data(r->us, r->usid);
		up_flush(r);
	}
	return 0;
}

static int
d_on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *user)
{
	struct h2r *r = nghttp2_session_get_stream_user_data(s, sid);

	if (r == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	r->d->open_streams--;
	r->down_closed = true;
	if (err != NGHTTP2_NO_ERROR && r->status == 0 && r->answer == H2R_NO_ANSWER)
		r->flags = "DC"; /* the client went away */
	r_telemetry(r);
	r_pool_release(r); /* answered (or gone): a lingering upstream holds no place */
	l7_mirror_detach(&r->mirror, r->req_state == H2R_REQ_END);
	if (!r->timers_closing && r->up_state != H2R_UP_LINGER)
		uv_timer_stop(&r->timer);
	r_cancel_up(r);
	r_drop_req_body(r);
	r_maybe_free(r);
	return 0;
}

static nghttp2_session_callbacks *d_callbacks;

static void
h2_timer_closed(uv_handle_t *h)
{
	struct h2r *r = h->data;

	r->timers_open--;
	r_maybe_free(r);
}

/* r goes once its downstream stream and upstream tunnel are done; timers close first. */
static void
r_maybe_free(struct h2r *r)
{
	struct h2d *d = r->d;

	if (!r->down_closed || r->up != NULL)
		return;
	if (!r->timers_closing) {
		r->timers_closing = true;
		uv_close((uv_handle_t *)&r->timer, h2_timer_closed);
		uv_close((uv_handle_t *)&r->wait, h2_timer_closed);
		return;
	}
	if (r->timers_open > 0)
		return;
	for (struct h2r **pp = &d->reqs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	d->nreqs--;
	r_pool_release(r);
	l7_mirror_detach(&r->mirror, false);
	if (r->us != NULL)
		nghttp2_session_del(r->us);
	if (r->us_dead != NULL)
		nghttp2_session_del(r->us_dead);
	fields_free(r->rq);
	drop_held_head(r);
	buf_reset(&r->replay);
	clear_headers(r);
	registry_unref(r->reg);
	free(r->method);
	free(r->scheme);
	free(r->authority);
	free(r->path);
	free(r->up_path);
	buf_reset(&r->req_body);
	buf_reset(&r->resp_body);
	l7_sendq_reset(&r->up_out);
	free(r->trailers);
	free(r->tstore);
	free(r);
	if (d->state == H2_CS_GONE && d->reqs == NULL)
		wp_tun_maybe_free(d->t);
}

/* Made once, by the first worker that needs them (a failure leaves them to the next try). */
static pthread_mutex_t callbacks_mu = PTHREAD_MUTEX_INITIALIZER;

static int
init_callbacks_locked(void)
{
	if (d_callbacks != NULL && up_callbacks != NULL)
		return 0;
	/* (Both or neither: one made without the other would pass the test above next time.) */
	if ((d_callbacks == NULL && nghttp2_session_callbacks_new(&d_callbacks) != 0) ||
	    nghttp2_session_callbacks_new(&up_callbacks) != 0)
		return AMESH_ERR_NOMEM; /* nghttp2's only failure here */
	nghttp2_session_callbacks_set_send_callback(d_callbacks, d_send_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(d_callbacks, d_on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(d_callbacks, d_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(d_callbacks, d_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(d_callbacks, d_on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(d_callbacks, d_on_stream_close);
	nghttp2_session_callbacks_set_send_callback(up_callbacks, up_send_cb);
	nghttp2_session_callbacks_set_on_header_callback(up_callbacks, up_on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(up_callbacks, up_on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(up_callbacks, up_on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(up_callbacks, up_on_stream_close);
	return 0;
}

static int
init_callbacks(void)
{
	int r;

	pthread_mutex_lock(&callbacks_mu);
	r = init_callbacks_locked();
	pthread_mutex_unlock(&callbacks_mu);
	return r;
}

static void h2m_on_data(struct tun *t, const uint8_t *data, size_t len);

static int
h2m_start(struct tun *t)
{
	struct h2d *d;
	nghttp2_option *opt;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_BYTES },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};

	if (init_callbacks() != 0 || (d = calloc(1, sizeof(*d))) == NULL)
		return AMESH_ERR_NOMEM;
	d->t = t;
	if (nghttp2_option_new(&opt) != 0) {
		free(d);
		return AMESH_ERR_NOMEM;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	h2_flood_options(opt);
	if (nghttp2_session_server_new3(&d->s, d_callbacks, d, opt, amesh_nghttp2_mem()) != 0) {
		nghttp2_option_del(opt);
		free(d);
		return AMESH_ERR_NOMEM;
	}
	nghttp2_option_del(opt);
	nghttp2_submit_settings(d->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
	/* A connection window larger than one stream's, so a stalled stream does not stall the
	 * others; its bytes are returned as each stream's are. */
	nghttp2_session_set_local_window_size(d->s, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
	t->ps = d;
	t->wp->st.tunnels_h2++;
	if (buf_len(&t->in) > 0) {
		struct buf in = t->in;

		buf_init(&t->in, WP_QUEUE_MAX);
		h2m_on_data(t, buf_ptr(&in), buf_len(&in));
		buf_reset(&in);
	} else {
		d_flush(d);
	}
	return 0;
}

static void
h2m_on_data(struct tun *t, const uint8_t *data, size_t len)
{
	struct h2d *d = t->ps;
	ssize_t n;

	if (d->state == H2_CS_GONE || d->s == NULL)
		return;
	d->in_recv = true;
	n = nghttp2_session_mem_recv(d->s, data, len);
	d->in_recv = false;
	/* Parsed: DATA is held per request, within the windows we advertised. */
	if (t->down != NULL)
		hbone_stream_consumed(t->down, len);
	if (d->state == H2_CS_GONE) {
		wp_tun_maybe_free(t); /* the tunnel closed under us: it may go now */
		return;
	}
	if (n < 0) {
		log_debug("waypoint: h2c from %s: %s", t->peer_id, nghttp2_strerror((int)n));
		wp_tun_abort(t);
		return;
	}
	d_flush(d);
}

static void
h2m_on_eof(struct tun *t)
{
	struct h2d *d = t->ps;

	/* The client ended its side: streams with a whole request finish, then the tunnel ends;
	 * those still waiting for request bytes can never get them and are reset. */
	d->state = H2_CS_EOF;
	for (struct h2r *r = d->reqs; r != NULL; r = r->next)
		if (!r->down_closed && r->req_state != H2R_REQ_END && !r->reset_sent && d->s != NULL) {
			r->reset_sent = true;
			nghttp2_submit_rst_stream(d->s, NGHTTP2_FLAG_NONE, r->sid, NGHTTP2_CANCEL);
		}
	d_flush(d);
}

/* Draining: GOAWAY, so the client opens no more requests on this tunnel; those begun finish. */
static void
h2m_drain(struct tun *t)
{
	struct h2d *d = t->ps;

	if (d == NULL || d->s == NULL || d->state == H2_CS_GONE)
		return;
	/* RFC 9113 6.8: first a GOAWAY that refuses nothing (the last stream ID 2^31-1) while the
	 * drain's grace runs, so that requests already on their way are still served; then the
	 * real one with the last stream processed. */
	if (!t->wp->drain_idle_close)
		nghttp2_submit_shutdown_notice(d->s);
	else
		nghttp2_submit_goaway(d->s, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(d->s), NGHTTP2_NO_ERROR, NULL, 0);
	d_flush(d);
}

static void
h2m_on_writable(struct tun *t)
{
	d_flush(t->ps);
}

/* The downstream tunnel is gone: every request is cancelled. */
static void
h2m_on_close(struct tun *t)
{
	struct h2d *d = t->ps;
	struct h2r *r, *next;

	if (d->state == H2_CS_GONE)
		return;
	d->state = H2_CS_GONE;
	for (r = d->reqs; r != NULL; r = next) {
		next = r->next;
		if (!r->down_closed) {
			r->down_closed = true;
			if (r->status == 0 && r->answer == H2R_NO_ANSWER)
				r->flags = "DC";
			r_telemetry(r);
		}
		l7_mirror_detach(&r->mirror, false);
		if (r->up != NULL) {
			hbone_stream_set_cb(r->up, NULL, NULL);
			hbone_stream_reset(r->up, NGHTTP2_CANCEL);
			r->up = NULL;
		}
	}
	for (r = d->reqs; r != NULL; r = next) {
		next = r->next;
		r_maybe_free(r);
	}
}

/* Nothing of d is left open (requests, timers, upstream tunnels). */
static bool
h2m_idle(const struct tun *t)
{
	const struct h2d *d = t->ps;

	return d == NULL || (d->reqs == NULL && !d->in_recv && !d->sending);
}

static void
h2m_free(struct tun *t)
{
	struct h2d *d = t->ps;

	if (d == NULL)
		return;
	if (d->s != NULL)
		nghttp2_session_del(d->s);
	free(d);
	t->ps = NULL;
}

/* Before the core resets the tunnel: nothing (requests are cancelled when it closes). */
static void
h2m_abort(struct tun *t)
{
}

const struct l7_proto_ops l7_h2_ops = {
	.name = "h2c",
	.start = h2m_start,
	.on_data = h2m_on_data,
	.on_eof = h2m_on_eof,
	.on_writable = h2m_on_writable,
	.on_close = h2m_on_close,
	.abort = h2m_abort,
	.drain = h2m_drain,
	.idle = h2m_idle,
	.free = h2m_free,
};
