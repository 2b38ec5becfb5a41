/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/1.1 module of the L7 engine (struct l7_proto_ops): one request at a time per tunnel.
 * Parse the head (http1.c), run the request pipeline (pipeline.c: route, authorize...), open an
 * HBONE stream to the endpoint as the waypoint, forward head and body, parse the response and
 * forward it, then take the next request; timeouts, retries, mirrors, keep-alive upstream, and a
 * WebSocket upgrade handed to the L4 relay (proto-l4.c). Buffers between the two streams are
 * bounded: a stream's bytes are returned to its HTTP/2 window only once they were passed on.
 */
#include "config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/log.h"
#include "l7/http1.h"
#include "l7/mirror.h"
#include "l7/pipeline.h"
#include "l7/proto-l4.h"
#include "l7/route.h"
#include "l7/tunnel.h"

/* Where the tunnel is in its exchange. */
enum h1_state {
	H1_EX_IDLE,     /* no request in flight: the parser reads the next request head */
	H1_EX_REQUEST,  /* a request in flight, nothing of its answer sent yet (it may be retried) */
	H1_EX_RESPONSE, /* its answer (the app's, or ours) has started going down: no retry */
	H1_EX_UPGRADED, /* the app answered 101 (WebSocket): past its head the tunnel carries bytes,
			   handed to the L4 relay (a response that has started, as above) */
};

/* The request body of the request in flight. */
enum h1_req_body {
	H1_BODY_NONE,      /* the request has none (no Content-Length or chunked framing) */
	H1_BODY_STREAMING, /* it has one, not all of it read from the client yet */
	H1_BODY_DONE,      /* it has one and all of it was read */
};

/* The upstream tunnel of the request in flight. */
enum h1_up {
	H1_UP_NONE,  /* none */
	H1_UP_OPENING, /* opened for this attempt, its HBONE answer not there yet */
	H1_UP_READY, /* answered: the request head went, the body may flow */
	H1_UP_KEPT,  /* the last exchange's, idle, kept for the next request to the same place */
};

struct h1t {
	enum h1_state state;
	enum h1_up up_state;
	struct h1_parser *req_p, *resp_p;
	struct h1_parser *resp_dead; /* a dropped attempt's parser, freed when safe */
	const struct h1_head *req; /* valid while the request parser is paused */
	const struct reg_route *rt;
	const struct reg_workload *ep;
	bool balanced; /* ep is the balancer's pick (lb_fail when it cannot be reached) */
	const struct reg_service *lb_svc; /* the service it was picked for (lb_result, lb_take) */
	/* Its places in that service's pool: in flight, and waiting for its upstream tunnel. */
	struct lb_pool *pool_rq, *pool_pend;
	uint16_t target;
	int attempt;
	struct hbone_stream *up;
	struct l7_sendq to_up;
	size_t up_unconsumed; /* bytes from up not yet returned to its window */
	/* The flags below are not states of the exchange: each can hold in any of them. */
	bool in_feed;          /* inside h1_feed of the request parser */
	enum h1_req_body rbody;
	bool close_after;
	/* HTTP keep-alive upstream: the endpoint and port of the kept tunnel. */
	const struct reg_workload *up_ep;
	uint16_t up_target;
	bool reused, resp_keep_alive;
	bool up_answered; /* a byte came back on this attempt's tunnel */
	/* The request body as sent so far, kept for a retry while it fits WP_REPLAY_MAX. */
	struct buf replay;
	bool replay_ok, body_started;
	bool bp_paused; /* the request parser waits for upstream to take what it was given */
	bool down_chunked, up_chunked;
	char *rewritten; /* request target after rewrite.path_prefix (or normalization) */
	int status;
	const char *flags;
	uint64_t start, req_bytes, resp_bytes;
	char traceparent[64];
	bool add_traceparent;
	struct mirror *mirror; /* the copy of the request in flight, while its body passes */
};

static void start_upstream(struct tun *t);
static void upgrade_to_l4(struct tun *t, const uint8_t *rest, size_t n);
static void send_request_head(struct tun *t);
static void feed_down(struct tun *t);
static void flush_down(struct tun *t);
static void flush_up(struct tun *t);
static void h1t_free(void *arg);

/* How the attempt to the balanced endpoint went, for outlier detection (net/lb.h). */
static void
h1_result(struct tun *t, int status)
{
	struct h1t *ht = t->ps;

	if (ht->lb_svc != NULL && ht->ep != NULL)
		lb_result(t->wp->lb, t->reg, ht->lb_svc, ht->ep, status, uv_now(t->wp->loop));
}

/* The request no longer waits for its upstream tunnel. */
static void
h1_pending_done(struct h1t *ht)
{
	lb_release(ht->pool_pend, LB_PENDING);
	ht->pool_pend = NULL;
}

/* The request is over: its places in the service's pool go back. */
static void
h1_pool_release(struct h1t *ht)
{
	h1_pending_done(ht);
	lb_release(ht->pool_rq, LB_REQUESTS);
	ht->pool_rq = NULL;
}

/* The body of Envoy's local reply to a request refused by a circuit breaker (flag UO). */
#define H1_OVERFLOW "upstream connect error or disconnect/reset before headers. reset reason: overflow"

/* The answer has started going down (a local reply between requests changes nothing). */
static void
h1_responding(struct h1t *ht)
{
	if (ht->state == H1_EX_REQUEST)
		ht->state = H1_EX_RESPONSE;
}

static void
finish_request_telemetry(struct tun *t)
{
	struct h1t *ht = t->ps;
	struct wp_request_log q = {
		.rt = ht->rt, .ep = ht->ep,
		.method = ht->req ? ht->req->method : NULL,
		.path = ht->req ? ht->req->target : "", .path_len = ht->req ? ht->req->path_len : 0,
		.flags = ht->flags, .traceparent = ht->traceparent, .status = ht->status,
		.grpc_status = -1,
		.start = ht->start, .req_bytes = ht->req_bytes, .resp_bytes = ht->resp_bytes,
	};

	wp_request_telemetry(t, &q);
}


/* The one Upgrade field of h, or NULL when it has none or several. */
static const char *
upgrade_field(const struct h1_head *h)
{
	const char *u = NULL;

	for (size_t i = 0; i < h->n_headers; i++)
		if (h->headers[i].name_len == 7 && strncasecmp(h->headers[i].name, "upgrade", 7) == 0) {
			if (u != NULL)
				return NULL;
			u = h->headers[i].value;
		}
	return u;
}

/* Upgrades proxied as such: WebSocket only, asked for once, by a request without a body. Not h2c
 * (its HTTP/2 requests would then pass as bytes, unread by routes and policy: h2c is served with
 * prior knowledge only), not CONNECT, not TLS or anything else the engine cannot vouch for. */
static bool
upgrade_allowed(const struct h1_head *req)
{
	const char *u = upgrade_field(req);

	return req->upgrade && strcmp(req->method, "GET") == 0 &&
	    (req->framing == H1_FRAMING_NONE ||
	    (req->framing == H1_FRAMING_LENGTH && req->content_length == 0)) &&
	    u != NULL && strcasecmp(u, "websocket") == 0;
}

/* --- writing --- */

static int
w_down(void *arg, const void *data, size_t len)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;

	ht->resp_bytes += len;
	return l7_sendq_put(&t->out, data, len);
}

static int
w_up(void *arg, const void *data, size_t len)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;

	return l7_sendq_put(&ht->to_up, data, len);
}

static void
flush_down(struct tun *t)
{
	struct h1t *ht = t->ps;

	tun_flush_down(t);
	/* Bytes from up are returned to its window once they are on their way down. */
	if (ht->up != NULL && l7_sendq_len(&t->out) < WP_BUF && ht->up_unconsumed > 0) {
		hbone_stream_consumed(ht->up, ht->up_unconsumed);
		ht->up_unconsumed = 0;
	}
}

static void
flush_up(struct tun *t)
{
	struct h1t *ht = t->ps;

	l7_sendq_flush(&ht->to_up, ht->up);
}

static void
shutdown_down(struct tun *t)
{
	t->shut_pending = true;
	flush_down(t);
}

/* A response we make ourselves (deny, redirect, fault, timeout, no route...). */
static void
local_reply(struct tun *t, int status, const char *body, const char *location)
{
	struct h1t *ht = t->ps;
	char *head = NULL;
	int n;

	ht->status = status;
	t->wp->st.local_replies++;
	/* With a request body still coming we cannot go on with this connection: close it. */
	if (ht->rbody == H1_BODY_STREAMING)
		ht->close_after = true;
	n = asprintf(&head, "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\n"
	    "content-length: %zu\r\n%s%s%s%s%s\r\n", status,
	    status == 403 ? "Forbidden" : status == 404 ? "Not Found" : status == 405 ?
	    "Method Not Allowed" : status == 408 ? "Request Timeout" : status == 500 ?
	    "Internal Server Error" : status == 503 ? "Service Unavailable" : status == 504 ?
	    "Gateway Timeout" : status == 502 ? "Bad Gateway" : status >= 300 && status < 400 ?
	    "Redirect" : "Error", strlen(body), location ? "location: " : "",
	    location ? location : "", location ? "\r\n" : "",
	    status == 405 ? "allow: " L7_ALLOW "\r\n" : "",
	    ht->close_after ? "connection: close\r\n" : "");
	h1_responding(ht);
	if (n < 0) {
		/* Out of memory for a reply: this tunnel ends, the others go on. */
		wp_tun_abort(t);
		return;
	}
	w_down(t, head, (size_t)n);
	free(head);
	w_down(t, body, strlen(body));
	flush_down(t);
}

/* --- the request cycle --- */

static void
stop_timer(struct tun *t)
{
	if (t->timers_open == 2) {
		uv_timer_stop(&t->timer);
		uv_timer_stop(&t->wait);
	}
}

/* Drops the upstream stream of this attempt; no callback of it reaches us afterwards. */
static void
drop_up(struct tun *t, bool reset)
{
	struct h1t *ht = t->ps;

	if (ht->up == NULL)
		return;
	h1_pending_done(ht);
	hbone_stream_set_cb(ht->up, NULL, NULL);
	if (reset)
		hbone_stream_reset(ht->up, NGHTTP2_CANCEL);
	else
		hbone_stream_shutdown(ht->up);
	ht->up = NULL;
	ht->up_state = H1_UP_NONE;
	ht->up_unconsumed = 0;
	l7_sendq_reset(&ht->to_up);
	/* It may be the parser whose callback got us here: free it later. */
	h1_parser_free(ht->resp_dead);
	ht->resp_dead = ht->resp_p;
	ht->resp_p = NULL;
}

static void
on_up_idle(uv_timer_t *h)
{
	struct tun *t = h->data;
	struct h1t *ht = t->ps;

	if (ht->up_state == H1_UP_KEPT)
		drop_up(t, false);
}

/* The request is answered: account for it and go on with the next one, or close. */
static void
request_done(struct tun *t)
{
	struct h1t *ht = t->ps;

	stop_timer(t);
	l7_mirror_detach(&ht->mirror, ht->rbody != H1_BODY_STREAMING);
	finish_request_telemetry(t);
	h1_pool_release(ht);
	if (ht->up != NULL && ht->resp_p != NULL && h1_paused(ht->resp_p) && ht->status >= 200 &&
	    ht->resp_keep_alive && ht->rbody != H1_BODY_STREAMING && l7_sendq_len(&ht->to_up) == 0 &&
	    !ht->close_after) {
		/* A whole exchange, both sides willing: kept for the next request, for WP_UP_IDLE_MS
		 * at most (under the usual keep-alive timeouts of servers, so that we close first). */
		ht->up_state = H1_UP_KEPT;
		if (t->timers_open == 2)
			uv_timer_start(&t->wait, on_up_idle, WP_UP_IDLE_MS, 0);
	} else
		drop_up(t, ht->state < H1_EX_RESPONSE || ht->status == 0);
	free(ht->rewritten);
	ht->rewritten = NULL;
	buf_reset(&ht->replay);
	ht->state = H1_EX_IDLE;
	ht->rt = NULL;
	ht->ep = NULL;
	if (ht->close_after || !ht->req || !ht->req->keep_alive) {
		shutdown_down(t);
		return;
	}
	ht->req = NULL;
	if (ht->req_p != NULL)
		h1_pause(ht->req_p, false);
	/* From inside the request parser, its own h1_feed goes on; else feed it here. */
	if (!ht->in_feed)
		feed_down(t);
	if (ht->state == H1_EX_IDLE && t->down_eof && !ht->in_feed)
		shutdown_down(t);
}

/* Answers locally and finishes the request. */
static void
reply_and_finish(struct tun *t, int status, const char *body, const char *location,
    const char *flags)
{
	struct h1t *ht = t->ps;

	ht->flags = flags;
	local_reply(t, status, body, location);
	request_done(t);
}

static void
on_wait(uv_timer_t *h)
{
	start_upstream(h->data);
}

static bool
retry_if_allowed(struct tun *t, enum route_outcome o, int status)
{
	struct h1t *ht = t->ps;
	uint64_t wait;

	/* A body is sent again from the copy kept of it: all of it (the request has ended), or none
	 * yet (the parser still holds it) - never from the middle of a stream. */
	if (ht->rt == NULL || ht->state >= H1_EX_RESPONSE ||
	    (ht->rbody != H1_BODY_NONE &&
	    !(ht->replay_ok && (ht->rbody == H1_BODY_DONE || !ht->body_started))) ||
	    !route_should_retry(ht->rt, ht->attempt, o, status))
		return false;
	wait = route_backoff_ms(ht->rt, ht->attempt, wp_rnd());
	ht->attempt++;
	t->wp->st.retries++;
	drop_up(t, true);
	log_debug("%s: retrying %s %s (attempt %d) in %llu ms", t->wp->role, ht->req->method,
	    t->authority, ht->attempt, (unsigned long long)wait);
	uv_timer_start(&t->wait, on_wait, wait, 0);
	return true;
}

/* A kept tunnel that failed before any answer (the application closed it as we sent): once more
 * on a new one, if nothing of the request is lost by doing so. Not a retry of the route's. */
static bool
retry_stale(struct tun *t)
{
	struct h1t *ht = t->ps;
	const char *m = ht->req ? ht->req->method : "";

	/* Only when no byte came back on it, and only what may be sent twice (RFC 9110 9.2.1). */
	if (!ht->reused || ht->up_answered || ht->state >= H1_EX_RESPONSE ||
	    ht->rbody != H1_BODY_NONE ||
	    (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0))
		return false;
	ht->reused = false;
	drop_up(t, true);
	start_upstream(t);
	return true;
}

/* per_try_timeout: this attempt has had no answer in time; the next one, or 504. */
static void
on_per_try(uv_timer_t *h)
{
	struct tun *t = h->data;
	struct h1t *ht = t->ps;

	if (ht->state >= H1_EX_RESPONSE || ht->state == H1_EX_IDLE)
		return;
	t->wp->st.timeouts++;
	h1_result(t, 504);
	if (retry_if_allowed(t, ROUTE_OUT_TIMEOUT, 0))
		return;
	reply_and_finish(t, 504, "upstream request timeout", NULL, "UT");
}

static void
per_try_start(struct tun *t)
{
	struct h1t *ht = t->ps;

	if (ht->rt != NULL && ht->rt->per_try_timeout > 0 &&
	    t->timers_open == 2)
		uv_timer_start(&t->wait, on_per_try, ht->rt->per_try_timeout, 0);
}

static void
on_timeout(uv_timer_t *h)
{
	struct tun *t = h->data;
	struct h1t *ht = t->ps;

	t->wp->st.timeouts++;
	if (ht->state >= H1_EX_RESPONSE) {
		/* Half a response went out: the only honest end is to cut the tunnel. */
		ht->flags = "UT";
		wp_tun_abort(t);
		return;
	}
	/* The route's overall timeout ends the request; it is not retried (route.h). */
	if (ht->up != NULL)
		h1_result(t, 504);
	reply_and_finish(t, 504, "upstream request timeout", NULL, "UT");
}

/* A route's header edits as h1_write_head takes them: every one of them, however many the
 * registry allows (HTTP/2 applies them all too; amesh-waypoint(8)), with extra free slots at the
 * end of add for the caller. 0, or AMESH_ERR_NOMEM with e untouched; free with h1_edits_free(). */
static int
route_h1_edits(struct h1_edits *e, const struct label_list *s, const struct label_list *a,
    const struct str_list *r, size_t extra)
{
	struct h1_field *set = calloc(s->n + 1, sizeof(*set));
	struct h1_field *add = calloc(a->n + extra + 1, sizeof(*add));
	const char **rm = calloc(r->n + 1, sizeof(*rm));

	if (set == NULL || add == NULL || rm == NULL) {
		free(set);
		free(add);
		free(rm);
		return AMESH_ERR_NOMEM;
	}
	for (size_t i = 0; i < s->n; i++)
		set[i] = (struct h1_field){ s->v[i].key, s->v[i].value };
	for (size_t i = 0; i < a->n; i++)
		add[i] = (struct h1_field){ a->v[i].key, a->v[i].value };
	for (size_t i = 0; i < r->n; i++)
		rm[i] = r->v[i];
	e->set = set;
	e->n_set = s->n;
	e->add = add;
	e->n_add = a->n;
	e->remove = rm;
	e->n_remove = r->n;
	return 0;
}

static void
h1_edits_free(struct h1_edits *e)
{
	free((void *)e->set);
	free((void *)e->add);
	free((void *)e->remove);
}

/* Response parser callbacks (upstream -> downstream). */

static int
resp_head(void *arg, const struct h1_head *h)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;
	struct h1_head out = *h;
	struct h1_edits e = { 0 };
	int r;

	if (h->status == 101) {
		const char *u = upgrade_field(h);

		/* Only to what was asked for and let through; anything else is not HTTP/1.1 we can
		 * forward (the client would wait for an answer that never comes). */
		if (!upgrade_allowed(ht->req) || u == NULL || strcasecmp(u, "websocket") != 0)
			return AMESH_ERR_INVALID; /* a bad response: 502, and the tunnel closes */
	}
	if (h->status == 101) {
		/* Switching protocols (WebSocket): the 101 goes down with its Upgrade field, then
		 * the tunnel carries bytes (up_on_data switches it to L4). */
		struct h1_writer w = { w_down, t };

		e.keep_upgrade = true;
		out.framing = H1_FRAMING_NONE;
		uv_timer_stop(&t->wait);
		ht->status = 101;
		h1_responding(ht);
		ht->state = H1_EX_UPGRADED;
		if (h1_write_head(&w, &out, &e) != 0)
			return AMESH_ERR_INVALID;
		flush_down(t);
		return 0;
	}
	if (h->status >= 100 && h->status < 200) {
		/* 100 Continue (a client holding its body for it would otherwise stall until its own
		 * timer) and 103 Early Hints go on to HTTP/1.1 clients, as RFC 9110 15.2 asks; not to
		 * HTTP/1.0 ones. 101 is never forwarded: upgrades are not proxied at L7. */
		if (h->status != 101 && ht->req->version_minor >= 1) {
			struct h1_writer w = { w_down, t };

			out.framing = H1_FRAMING_NONE;
			if (h1_write_head(&w, &out, NULL) != 0)
				return AMESH_ERR_INVALID;
			flush_down(t);
		}
		return 0;
	}
	h1_result(t, h->status);
	if (retry_if_allowed(t, ROUTE_OUT_STATUS, h->status))
		return AMESH_ERR_INVALID; /* stops this parser; the attempt is gone */
	ht->status = h->status;
	ht->resp_keep_alive = h->keep_alive && h->framing != H1_FRAMING_CLOSE;
	uv_timer_stop(&t->wait); /* per_try_timeout: answered */
	h1_responding(ht);
	if (ht->rt != NULL && route_h1_edits(&e, &ht->rt->response_set, &ht->rt->response_add,
	    &ht->rt->response_remove, 0) != 0)
		return AMESH_ERR_NOMEM; /* a response we cannot forward as the route says: 502 */
	out.framing = h1_forward_framing(h, true);
	ht->down_chunked = out.framing == H1_FRAMING_CHUNKED;
	if (ht->close_after || !ht->req->keep_alive)
		e.connection = "close";
	{
		struct h1_writer w = { w_down, t };

		r = h1_write_head(&w, &out, &e);
	}
	h1_edits_free(&e);
	if (r != 0)
		return AMESH_ERR_INVALID;
	return 0; /* flushed after the parser's pass, with the body that came with it */
}

static int
resp_body(void *arg, const uint8_t *data, size_t len)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;
	struct h1_writer w = { w_down, t };

	/* Written out after the parser's pass (up_on_data), with the head and the end it may
	 * carry: one write rather than one per piece. */
	return ht->down_chunked ? h1_write_chunk(&w, data, len) : w_down(t, data, len);
}

static int
resp_end(void *arg)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;

	if (ht->status < 200)
		return 0;
	if (ht->down_chunked) {
		struct h1_writer w = { w_down, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	flush_down(t);
	h1_pause(ht->resp_p, true);
	return 0;
}

static const struct h1_callbacks resp_cb = { resp_head, resp_body, NULL, resp_end };

/* The app switched protocols (101): the request is logged as answered, and the tunnel goes on as
 * an L4 relay (proto-l4.c; TCP metrics when it ends). rest: what came from the app after the 101's
 * head; what the client sent after its request head waits in t->in. */
static void
upgrade_to_l4(struct tun *t, const uint8_t *rest, size_t n)
{
	struct h1t *ht = t->ps;
	struct l4_handover ho;

	/* The request parser stopped at its head (one request at a time): let it reach the end of
	 * the Upgrade request, where it stops by itself, so only the new protocol's bytes remain. */
	if (ht->req_p != NULL && h1_in_message(ht->req_p)) {
		h1_pause(ht->req_p, false);
		feed_down(t);
		if (t->state != TUN_OPEN)
			return; /* it was not a valid end of the request */
	}
	stop_timer(t);
	l7_mirror_detach(&ht->mirror, ht->rbody != H1_BODY_STREAMING);
	finish_request_telemetry(t);
	h1_pool_release(ht);
	ht->state = H1_EX_IDLE;
	ho = (struct l4_handover){
		.up = ht->up, .ep = ht->ep, .target = ht->target, .flags = ht->flags,
		.to_down = rest, .to_down_len = n, .to_up = &ht->to_up,
		.up_unconsumed = ht->up_unconsumed, .prior = ht, .prior_free = h1t_free,
	};
	if (l4_take_upgraded(t, &ho) != 0) {
		wp_tun_abort(t);
		return;
	}
	/* The L4 relay has the upstream tunnel now; the response parser (we are inside its
	 * caller's feed) goes with this state, when the tunnel ends. */
	ht->up = NULL;
	ht->up_state = H1_UP_NONE;
}

/* Upstream stream callbacks. */

static void
up_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct tun *t = hbone_stream_user(s);
	struct h1t *ht = t->ps;
	size_t used = 0;
	int r;

	t->last = uv_now(t->wp->loop);
	ht->up_unconsumed += len;
	if (ht->up_state == H1_UP_KEPT || ht->state == H1_EX_IDLE || ht->resp_p == NULL) {
		/* Bytes on a kept tunnel before a request went on it: the application broke HTTP. */
		drop_up(t, true);
		return;
	}
	ht->up_answered = true;
	r = h1_feed(ht->resp_p, data, len, &used);
	if (r == 0 && ht->state == H1_EX_UPGRADED) {
		upgrade_to_l4(t, data + used, len - used);
		return;
	}
	if (r != 0) {
		if (ht->up == NULL || ht->resp_p == NULL)
			return; /* resp_head started a retry */
		log_info("waypoint: %s: bad response from %s: %s", t->authority,
		    ht->ep ? ht->ep->h.name : "?", h1_error_text(ht->resp_p));
		t->wp->st.upstream_failures++;
		if (ht->state < H1_EX_RESPONSE) {
			reply_and_finish(t, 502, "upstream sent a bad response", NULL, "UPE");
			return;
		}
		wp_tun_abort(t);
		return;
	}
	flush_down(t);
	if (h1_paused(ht->resp_p)) {
		if (used != len)
			ht->resp_keep_alive = false; /* more than one response: do not reuse */
		request_done(t);
	}
}

/* The attempt's upstream ended (o) before the exchange did: before any answer, once more on a
 * new tunnel or a retry, else 503; with half an answer sent, the tunnel is cut. */
static void
upstream_lost(struct tun *t, enum route_outcome o)
{
	struct h1t *ht = t->ps;

	if (ht->state < H1_EX_RESPONSE) {
		if (retry_stale(t))
			return;
		h1_result(t, LB_LOCAL_FAILURE);
		if (retry_if_allowed(t, o, 0))
			return;
		reply_and_finish(t, 503, "upstream connect error or disconnect/reset before headers",
		    NULL, "UC");
		return;
	}
	wp_tun_abort(t);
}

static void
up_on_eof(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);
	struct h1t *ht = t->ps;

	if (ht->up_state == H1_UP_KEPT || ht->state == H1_EX_IDLE) {
		drop_up(t, false); /* the application closed a kept connection */
		return;
	}
	/* A body delimited by the close ends here; anything else was cut short. */
	if (ht->resp_p != NULL && h1_finish(ht->resp_p) == 0 && ht->state >= H1_EX_RESPONSE) {
		request_done(t);
		return;
	}
	upstream_lost(t, ROUTE_OUT_RESET);
}

static void
up_on_writable(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);
	struct h1t *ht = t->ps;

	flush_up(t);
	if (ht->bp_paused && l7_sendq_len(&ht->to_up) < WP_BUF / 2) {
		ht->bp_paused = false;
		h1_pause(ht->req_p, false);
		feed_down(t);
	}
}

static void
up_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct tun *t = hbone_stream_user(s);
	struct h1t *ht = t->ps;

	if (ht->up_state == H1_UP_KEPT) {
		/* A kept tunnel went away between requests: its parser goes with it. */
		ht->up = NULL;
		ht->up_state = H1_UP_NONE;
		ht->up_unconsumed = 0;
		h1_parser_free(ht->resp_dead);
		ht->resp_dead = ht->resp_p;
		ht->resp_p = NULL;
		return;
	}
	ht->up = NULL;
	ht->up_state = H1_UP_NONE;
	ht->up_unconsumed = 0;
	if (ht->state == H1_EX_IDLE)
		return;
	upstream_lost(t, err == NGHTTP2_REFUSED_STREAM ? ROUTE_OUT_REFUSED_STREAM :
	    ROUTE_OUT_RESET);
}

static void
up_on_response(struct hbone_stream *s, int status)
{
	struct tun *t = hbone_stream_user(s);
	struct h1t *ht = t->ps;

	h1_pending_done(ht);
	if (status != 200) {
		hbone_stream_set_cb(s, NULL, NULL);
		ht->up = NULL;
		ht->up_state = H1_UP_NONE;
		t->wp->st.upstream_failures++;
		/* No connection, or the endpoint's ztunnel could not reach the app (503). */
		if (status < 0 || status == 503)
			h1_result(t, status < 0 ? LB_LOCAL_FAILURE : 503);
		/* The pool could not connect: the balancer skips the endpoint for a while. */
		if (status < 0 && ht->balanced)
			lb_fail(t->wp->lb, t->reg, ht->ep, uv_now(t->wp->loop));
		if (retry_if_allowed(t, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		reply_and_finish(t, 503, status == 401 ? "upstream refused the waypoint" :
		    "upstream connect error", NULL, status == 401 ? "DENY" : "UF");
		return;
	}
	ht->up_state = H1_UP_READY;
	send_request_head(t);
}

/* The tunnel to the endpoint is up (new, or kept from the previous request): the request head,
 * with the route's edits, a rewritten path and a trace context; then the body may flow. */
static void
send_request_head(struct tun *t)
{
	struct h1t *ht = t->ps;
	struct h1_head out;
	struct h1_edits e = { 0 };
	struct h1_field tp[1];
	int r;

	ht->up_state = H1_UP_READY;
	out = *ht->req;
	if (ht->rewritten != NULL) {
		out.target = ht->rewritten;
		out.target_len = strlen(ht->rewritten);
	}
	if (ht->rt != NULL && route_h1_edits(&e, &ht->rt->request_set, &ht->rt->request_add,
	    &ht->rt->request_remove, 1) != 0) {
		drop_up(t, true);
		reply_and_finish(t, 500, "out of memory", NULL, "UPE");
		return;
	}
	if (ht->add_traceparent) {
		struct h1_field f = { "traceparent", ht->traceparent };

		if (e.add == NULL) {
			tp[0] = f;
			e.add = tp;
		} else {
			((struct h1_field *)e.add)[e.n_add] = f; /* the extra slot */
		}
		e.n_add++;
	}
	/* An Upgrade request (WebSocket) is forwarded as one, authorized like any other. */
	e.keep_upgrade = upgrade_allowed(ht->req);
	out.framing = out.framing == H1_FRAMING_CHUNKED ? H1_FRAMING_CHUNKED : out.framing;
	ht->up_chunked = out.framing == H1_FRAMING_CHUNKED;
	{
		struct h1_writer w = { w_up, t };

		r = h1_write_head(&w, &out, &e);
		if (e.add != tp)
			h1_edits_free(&e);
		else
			e.add = NULL;
		if (r != 0) {
			drop_up(t, true);
			reply_and_finish(t, 500, "cannot forward the request", NULL, "UPE");
			return;
		}
	}
	h1_parser_free(ht->resp_dead);
	ht->resp_dead = NULL;
	if (ht->resp_p != NULL) {
		h1_pause(ht->resp_p, false); /* a kept tunnel: its parser reads the next response */
	} else if (h1_parser_new(H1_RESPONSE, &resp_cb, t, &ht->resp_p) != 0) {
		drop_up(t, true);
		reply_and_finish(t, 500, "out of memory", NULL, "UPE");
		return;
	}
	h1_expect_response_to(ht->resp_p, ht->req->method);
	if (ht->attempt > 1 && buf_len(&ht->replay) > 0) {
		/* A retry: the body sent before goes again from its copy. */
		struct h1_writer w = { w_up, t };

		if ((ht->up_chunked ? h1_write_chunk(&w, buf_ptr(&ht->replay), buf_len(&ht->replay)) :
		    w_up(t, buf_ptr(&ht->replay), buf_len(&ht->replay))) != 0) {
			drop_up(t, true);
			reply_and_finish(t, 500, "cannot forward the request", NULL, "UPE");
			return;
		}
	}
	if (ht->attempt > 1 && ht->rbody == H1_BODY_DONE && ht->up_chunked) {
		struct h1_writer w = { w_up, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	/* Now the body may flow: resume the request parser. The head goes out with the body that
	 * is here already, in one write (one HTTP/2 frame, one TLS record), when there is one. */
	if (ht->rbody == H1_BODY_STREAMING) {
		h1_pause(ht->req_p, false);
		feed_down(t);
	}
	if (ht->up != NULL)
		flush_up(t);
}

static const struct hbone_stream_cb up_cb = {
	.on_data = up_on_data,
	.on_eof = up_on_eof,
	.on_writable = up_on_writable,
	.on_response = up_on_response,
	.on_close = up_on_close,
};

/* Opens (or re-opens, for a retry) the upstream tunnel of the request in flight. */
static void
start_upstream(struct tun *t)
{
	struct h1t *ht = t->ps;
	int r;

	if (ht->up != NULL && ht->up_state == H1_UP_KEPT) {
		/* HTTP keep-alive towards the endpoint: the previous request's tunnel, and so its
		 * connection to the application, carries this one if it goes to the same place. */
		if (ht->up_ep == ht->ep && ht->up_target == ht->target) {
			ht->up_state = H1_UP_READY;
			ht->reused = true;
			ht->up_answered = false;
			t->wp->st.upstream_reused++;
			per_try_start(t);
			send_request_head(t);
			return;
		}
		drop_up(t, false);
	} else if (ht->up != NULL) {
		drop_up(t, true); /* never two tunnels for one request */
	}
	ht->reused = false;
	if (ht->lb_svc != NULL && ht->pool_pend == NULL &&
	    lb_take(t->wp->lb, t->reg, ht->lb_svc, LB_PENDING, &ht->pool_pend) != 0) {
		/* http1_max_pending_requests: too many requests wait for a connection already. */
		reply_and_finish(t, 503, H1_OVERFLOW, NULL, "UO");
		return;
	}
	ht->up_ep = ht->ep;
	ht->up_target = ht->target;
	per_try_start(t);
	r = wp_open_upstream(t, ht->ep, ht->target, ht->traceparent, &up_cb, t, &ht->up);
	if (r == 0)
		ht->up_state = H1_UP_OPENING;
	if (r == -ENOENT) {
		reply_and_finish(t, 503, "no healthy upstream", NULL, "UH");
		return;
	}
	if (r != 0) {
		ht->up = NULL;
		h1_pending_done(ht);
		t->wp->st.upstream_failures++;
		h1_result(t, LB_LOCAL_FAILURE);
		if (retry_if_allowed(t, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		reply_and_finish(t, 503, "upstream connect error", NULL, "UO");
	}
}

static const char *
hdr_lookup(void *arg, const char *name)
{
	return h1_header_get(arg, name);
}

static int
req_head(void *arg, const struct h1_head *h)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;
	struct waypoint *wp = t->wp;
	struct l7_req rq = {
		.method = h->method, .target = h->target, .target_len = h->target_len,
		.host = h->host, .header = hdr_lookup, .header_arg = (void *)h, .redirects = true,
	};
	struct l7_plan p;

	/* One request at a time: the next waits until this one is answered. */
	h1_pause(ht->req_p, true);
	if (t->timers_open == 2)
		uv_timer_stop(&t->timer); /* request_header_timeout: the head is whole */
	ht->req = h;
	ht->state = H1_EX_REQUEST;
	ht->start = uv_now(wp->loop);
	ht->req_bytes = 0;
	ht->resp_bytes = 0;
	ht->status = 0;
	ht->flags = NULL;
	ht->attempt = 1;
	ht->lb_svc = NULL;
	ht->reused = false;
	ht->rbody = h->framing == H1_FRAMING_LENGTH || h->framing == H1_FRAMING_CHUNKED ?
	    H1_BODY_STREAMING : H1_BODY_NONE;
	ht->body_started = false;
	ht->replay_ok = !(h->framing == H1_FRAMING_LENGTH && h->content_length > WP_REPLAY_MAX);
	buf_reset(&ht->replay);
	ht->close_after = t->wp->draining; /* draining: this answer is the last */
	l7_pipeline(t, &rq, &p);
	if (p.moved) {
		if (ht->up != NULL && ht->up_state == H1_UP_KEPT)
			drop_up(t, false); /* its endpoint may be gone */
		ht->up_ep = NULL;
	}
	snprintf(ht->traceparent, sizeof(ht->traceparent), "%s", p.traceparent);
	ht->add_traceparent = p.add_traceparent;
	ht->rt = p.rt;
	ht->ep = p.ep;
	ht->balanced = p.balanced;
	ht->target = p.target;
	if (p.status != 0) {
		if (p.close)
			ht->close_after = true;
		reply_and_finish(t, p.status, p.body, p.location[0] ? p.location : NULL, p.flags);
		return 0;
	}
	ht->rewritten = p.upstream_target;
	ht->lb_svc = p.lb_svc;
	if (ht->lb_svc != NULL &&
	    lb_take(wp->lb, t->reg, ht->lb_svc, LB_REQUESTS, &ht->pool_rq) != 0) {
		/* http2_max_requests: the service has that many requests in flight from here. */
		log_info("%s: %s %s refused: service %s at its request limit", wp->role, h->method,
		    t->authority, ht->lb_svc->h.name);
		reply_and_finish(t, 503, H1_OVERFLOW, NULL, "UO");
		return 0;
	}
	if (ht->rt != NULL && route_mirror(ht->rt, wp_rnd())) {
		l7_mirror_start(t, ht->rt, h, ht->rewritten, ht->traceparent, &ht->mirror);
		if (ht->rbody == H1_BODY_NONE)
			l7_mirror_detach(&ht->mirror, true);
	}
	if (p.timeout_ms > 0)
		uv_timer_start(&t->timer, on_timeout, p.timeout_ms, 0);
	if (p.delay) {
		ht->flags = "DI";
		uv_timer_start(&t->wait, on_wait, p.delay_ms, 0);
		return 0;
	}
	start_upstream(t);
	return 0;
}

static int
req_body(void *arg, const uint8_t *data, size_t len)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;
	struct h1_writer w = { w_up, t };
	int r;

	ht->req_bytes += len;
	ht->body_started = true;
	if (ht->replay_ok && ht->rt != NULL && ht->rt->retries > 0 &&
	    buf_put(&ht->replay, data, len) != 0)
		ht->replay_ok = false; /* too large to keep: this request is not retried */
	l7_mirror_body(&ht->mirror, data, len, false);
	if (ht->up == NULL)
		return 0; /* answered locally: the body is dropped (and the tunnel closes after) */
	r = ht->up_chunked ? h1_write_chunk(&w, data, len) : w_up(t, data, len);
	flush_up(t);
	/* Backpressure: stop parsing while upstream holds a full buffer. */
	if (l7_sendq_len(&ht->to_up) >= WP_BUF) {
		ht->bp_paused = true;
		h1_pause(ht->req_p, true);
	}
	return r;
}

static int
req_end(void *arg)
{
	struct tun *t = arg;
	struct h1t *ht = t->ps;

	if (ht->rbody == H1_BODY_STREAMING)
		ht->rbody = H1_BODY_DONE;
	l7_mirror_body(&ht->mirror, NULL, 0, true);
	if (ht->up != NULL && ht->up_chunked) {
		struct h1_writer w = { w_up, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	flush_up(t);
	/* The next request waits while this one is in flight. A request without a body may have
	 * been answered already (its end comes after its head was handled): then go on. */
	if (ht->state != H1_EX_IDLE)
		h1_pause(ht->req_p, true);
	else
		h1_pause(ht->req_p, false); /* an Upgrade request, answered as plain HTTP: the parser
					    * paused itself for the other protocol; the next request
					    * on this connection is HTTP/1.1 again */
	return 0;
}

static const struct h1_callbacks req_cb = { req_head, req_body, NULL, req_end };

/* request_header_timeout: the head that started has not come whole in time (slowloris). */
static void
on_head_timeout(uv_timer_t *h)
{
	struct tun *t = h->data;
	struct h1t *ht = t->ps;

	if (ht == NULL || ht->state != H1_EX_IDLE || t->state != TUN_OPEN)
		return;
	log_info("%s: %s: request head from %s not whole in %llu ms: 408", t->wp->role,
	    t->authority, t->peer_id, (unsigned long long)t->wp->header_ms);
	t->wp->st.header_timeouts++;
	ht->close_after = true;
	ht->req = NULL;
	ht->start = uv_now(t->wp->loop);
	local_reply(t, 408, "request header timeout", NULL);
	shutdown_down(t);
}

/* Part of a request head is here: it must be whole within request_header_timeout of now. */
static void
head_timer(struct tun *t)
{
	struct h1t *ht = t->ps;

	if (t->wp->header_ms == 0 || t->timers_open != 2 || ht->state != H1_EX_IDLE ||
	    ht->close_after || uv_is_active((uv_handle_t *)&t->timer))
		return;
	uv_timer_start(&t->timer, on_head_timeout, t->wp->header_ms, 0);
}

/* Gives the parser what came from downstream, while it is not paused. */
static void
feed_down(struct tun *t)
{
	struct h1t *ht = t->ps;
	size_t used = 0;

	/* Writing upstream can call back here (on_writable) while h1_feed runs: the outer loop
	 * goes on by itself. */
	if (ht->in_feed)
		return;

	while (buf_len(&t->in) > 0 && ht->req_p != NULL && !h1_paused(ht->req_p)) {
		int r;

		ht->in_feed = true;
		r = h1_feed(ht->req_p, buf_ptr(&t->in), buf_len(&t->in), &used);
		ht->in_feed = false;

		if (r != 0) {
			int st = h1_error_status(ht->req_p);

			log_info("waypoint: %s: bad request from %s: %s", t->authority, t->peer_id,
			    h1_error_text(ht->req_p));
			ht->close_after = true;
			if (ht->state == H1_EX_IDLE) {
				ht->req = NULL;
				ht->start = uv_now(t->wp->loop);
				local_reply(t, st ? st : 400, "bad request", NULL);
				shutdown_down(t);
			} else {
				wp_tun_abort(t);
			}
			return;
		}
		buf_consume(&t->in, used);
		if (t->down != NULL && used > 0)
			hbone_stream_consumed(t->down, used);
		if (used == 0)
			break;
	}
	/* A request answered inside the parser may have left the connection to close. */
	if (ht->state == H1_EX_IDLE && (t->down_eof || ht->close_after))
		shutdown_down(t);
	else if (ht->req_p != NULL && (h1_in_message(ht->req_p) || buf_len(&t->in) > 0))
		head_timer(t); /* a head has started */
}

static int
h1m_start(struct tun *t)
{
	struct h1t *ht = calloc(1, sizeof(*ht));

	if (ht == NULL)
		return AMESH_ERR_NOMEM;
	l7_sendq_init(&ht->to_up);
	buf_init(&ht->replay, WP_REPLAY_MAX);
	t->ps = ht;
	if (h1_parser_new(H1_REQUEST, &req_cb, t, &ht->req_p) != 0) {
		t->ps = NULL;
		h1t_free(ht);
		return AMESH_ERR_NOMEM;
	}
	feed_down(t);
	return 0;
}

static void
h1m_on_data(struct tun *t, const uint8_t *data, size_t len)
{
	/* Bounded by the stream window: we return bytes only as the parser takes them. */
	if (buf_put(&t->in, data, len) != 0) {
		wp_tun_abort(t);
		return;
	}
	feed_down(t);
}

static void
h1m_on_eof(struct tun *t)
{
	struct h1t *ht = t->ps;

	if (ht->req_p != NULL && ht->state == H1_EX_IDLE)
		feed_down(t);
	if (ht->state == H1_EX_IDLE)
		shutdown_down(t);
}

static void
h1m_on_writable(struct tun *t)
{
	flush_down(t);
}

static void
h1m_on_close(struct tun *t)
{
	struct h1t *ht = t->ps;

	if (ht->state == H1_EX_REQUEST && ht->status == 0) {
		ht->flags = "DC"; /* downstream went away */
		finish_request_telemetry(t);
		ht->state = H1_EX_IDLE;
	}
	h1_pool_release(ht);
	drop_up(t, ht->up_state != H1_UP_KEPT);
	l7_mirror_detach(&ht->mirror, false);
}

static void
h1m_abort(struct tun *t)
{
	drop_up(t, true);
}

/* Draining: a request gets "Connection: close" on its answer and the connection is closed after
 * it; between requests the connection is closed (FIN) once the drain's grace is over (engine.c,
 * WAYPOINT_DRAIN_IDLE_GRACE_MS: a request may be on its way). */
static void
h1m_drain(struct tun *t)
{
	struct h1t *ht = t->ps;

	ht->close_after = true;
	if (ht->state == H1_EX_IDLE && t->wp->drain_idle_close) {
		drop_up(t, false);
		shutdown_down(t);
	}
}

static bool
h1m_idle(const struct tun *t)
{
	return true;
}

static void
h1t_free(void *arg)
{
	struct h1t *ht = arg;

	if (ht == NULL)
		return;
	h1_pool_release(ht);
	h1_parser_free(ht->req_p);
	h1_parser_free(ht->resp_p);
	h1_parser_free(ht->resp_dead);
	l7_sendq_reset(&ht->to_up);
	buf_reset(&ht->replay);
	free(ht->rewritten);
	free(ht);
}

static void
h1m_free(struct tun *t)
{
	h1t_free(t->ps);
	t->ps = NULL;
}

const struct l7_proto_ops l7_h1_ops = {
	.name = "http/1.1",
	.start = h1m_start,
	.on_data = h1m_on_data,
	.on_eof = h1m_on_eof,
	.on_writable = h1m_on_writable,
	.on_close = h1m_on_close,
	.abort = h1m_abort,
	.drain = h1m_drain,
	.idle = h1m_idle,
	.free = h1m_free,
};
