/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Waypoint data path (waypoint.h). One struct tun per downstream HBONE stream (a tunnel from a
 * ztunnel); in HTTP mode it carries one request at a time: parse the head, authorize (L7), route,
 * open an HBONE stream to the endpoint as the waypoint, forward head and body, parse the response
 * and forward it, then take the next request. Buffers between the two streams are bounded: a
 * stream's bytes are returned to its HTTP/2 window only once they were passed on.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "hbone/hbone.h"
#include "l7/http1.h"
#include "l7/route.h"
#include "l7/waypoint.h"
#include "l7/waypoint-int.h"
#include "net/netns.h"
#include "policy/authz.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"
#include "tls/cert.h"
#include "tls/identity.h"
#include "tls/rng.h"

static void start_upstream(struct tun *t);
static void upgrade_to_l4(struct tun *t, const uint8_t *rest, size_t n);
static void embedded_idle_check(struct waypoint *wp);
static void send_request_head(struct tun *t);
static void mirror_detach(struct tun *t, bool complete);
static void feed_down(struct tun *t);
static void flush_down(struct tun *t);
static void flush_up(struct tun *t);

/* --- small helpers --- */

int
wp_obuf_add(struct obuf *b, const void *data, size_t len)
{
	uint8_t *n;

	if (len == 0)
		return 0;
	if (b->len + len > WP_BUF * 2)
		return AMESH_ERR_TOOLONG; /* a bound the windows should make unreachable */
	n = realloc(b->p, b->len + len);
	if (n == NULL)
		return AMESH_ERR_NOMEM;
	memcpy(n + b->len, data, len);
	b->p = n;
	b->len += len;
	return 0;
}

/* Moves as much of b into stream s as it takes. A call from inside its own write (the stream's
 * on_writable) only asks the outer call for another round. */
void
wp_obuf_flush(struct obuf *b, struct hbone_stream *s)
{
	size_t took;

	if (b->busy) {
		b->again = true;
		return;
	}
	b->busy = true;
	do {
		b->again = false;
		if (b->len == 0 || s == NULL)
			break;
		took = hbone_stream_write(s, b->p, b->len);
		if (took == 0)
			break;
		memmove(b->p, b->p + took, b->len - took);
		b->len -= took;
		if (b->len == 0) {
			free(b->p);
			b->p = NULL;
		}
	} while (b->again);
	b->busy = false;
}

uint32_t
wp_rnd(void)
{
	uint32_t r = 0;

	rng_fill(rng_ctx(), (unsigned char *)&r, sizeof(r));
	return r;
}

/* The endpoint for this request: a route backend, else the addressed service or workload. */
const struct reg_workload *
wp_pick_endpoint(struct tun *t, const struct reg_service *svc)
{
	if (svc == NULL)
		return t->direct;
	if (svc->n_endpoints == 0)
		return NULL;
	return svc->endpoints[t->wp->rr++ % svc->n_endpoints];
}

/* --- telemetry --- */

/* Istio's reporter: the waypoint's own, or a sidecar's side of the call. */
static const char *
reporter(const struct tun *t)
{
	return t->side == SIDE_IN ? "destination" : t->side == SIDE_OUT ? "source" : "waypoint";
}

/* What the client side knows of the connection's security: Istio's source reporters say
 * "unknown"; the receiving side saw the peer's certificate. */
static const char *
security_policy(const struct tun *t)
{
	return t->side == SIDE_OUT ? "unknown" : "mutual_tls";
}

void
wp_principal(const struct tun *t, const struct reg_workload *wl, char *buf, size_t len)
{
	if (wl == NULL)
		snprintf(buf, len, "unknown");
	else
		snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", t->wp->conf->mesh.trust_domain,
		    wl->namespace, wl->service_account);
}

void
wp_request_telemetry(struct tun *t, const struct wp_request_log *q)
{
	struct waypoint *wp = t->wp;
	char dp[SPIFFE_ID_MAX];
	struct http_labels l = {
		.reporter = reporter(t),
		.source_workload = t->src_wl ? t->src_wl->h.name : "unknown",
		.source_workload_namespace = t->src_wl ? t->src_wl->namespace : "unknown",
		.source_principal = t->peer_id,
		.destination_workload = q->ep ? q->ep->h.name : "unknown",
		.destination_workload_namespace = q->ep ? q->ep->namespace : "unknown",
		.destination_service = t->svc ? t->svc->hostname : "unknown",
		.request_protocol = q->grpc ? "grpc" : "http",
		.response_code = (unsigned)q->status,
		.response_flags = q->flags ? q->flags : "-",
		.connection_security_policy = security_policy(t),
	};
	uint64_t ms = uv_now(wp->loop) - q->start;
	char path[512];
	struct log_field f[10];
	size_t n = 0;

	wp_principal(t, q->ep, dp, sizeof(dp));
	l.destination_principal = dp;
	wp->st.requests++;
	if (wp->metrics != NULL)
		metrics_http_request(wp->metrics, &l, (double)ms, q->req_bytes, q->resp_bytes);
	if (!accesslog_enabled())
		return;
	snprintf(path, sizeof(path), "%.*s", (int)q->path_len, q->path);
	f[n++] = (struct log_field){ "method", q->method ? q->method : "-", 0 };
	f[n++] = (struct log_field){ "authority", q->authority ? q->authority : t->authority, 0 };
	f[n++] = (struct log_field){ "path", path, 0 };
	f[n++] = (struct log_field){ "status", NULL, (unsigned long long)q->status };
	f[n++] = (struct log_field){ "duration_ms", NULL, ms };
	f[n++] = (struct log_field){ "upstream", q->ep ? q->ep->h.name : "-", 0 };
	f[n++] = (struct log_field){ "route", q->rt ? q->rt->h.name : "-", 0 };
	f[n++] = (struct log_field){ "src.identity", t->peer_id, 0 };
	f[n++] = (struct log_field){ "flags", q->flags ? q->flags : "-", 0 };
	f[n++] = (struct log_field){ "traceparent", q->traceparent, 0 };
	log_record(LOG_LVL_INFO, "access", q->grpc ? "grpc" : "request", f, n);
}

static void
finish_request_telemetry(struct tun *t)
{
	struct wp_request_log q = {
		.rt = t->rt, .ep = t->ep,
		.method = t->req ? t->req->method : NULL,
		.path = t->req ? t->req->target : "", .path_len = t->req ? t->req->path_len : 0,
		.flags = t->flags, .traceparent = t->traceparent, .status = t->status,
		.start = t->start, .req_bytes = t->req_bytes, .resp_bytes = t->resp_bytes,
	};

	wp_request_telemetry(t, &q);
}

/* Istio's TCP labels for a tunnel relayed at L4; dp holds the principal. */
static void
l4_labels(struct tun *t, struct tcp_labels *l, char *dp, size_t len)
{
	wp_principal(t, t->ep, dp, len);
	*l = (struct tcp_labels){
		.reporter = reporter(t),
		.source_workload = t->src_wl ? t->src_wl->h.name : "unknown",
		.source_workload_namespace = t->src_wl ? t->src_wl->namespace : "unknown",
		.source_principal = t->peer_id,
		.destination_workload = t->ep ? t->ep->h.name : "unknown",
		.destination_workload_namespace = t->ep ? t->ep->namespace : "unknown",
		.destination_service = t->svc ? t->svc->hostname : "unknown",
		.destination_principal = dp,
		.response_flags = t->flags ? t->flags : "-",
		.connection_security_policy = security_policy(t),
	};
}

/* An L4 tunnel ends: TCP metrics and one access-log record, as a ztunnel writes them. */
static void
finish_l4_telemetry(struct tun *t)
{
	char dp[SPIFFE_ID_MAX];
	struct tcp_labels l;

	l4_labels(t, &l, dp, sizeof(dp));
	/* A denied tunnel is opened and closed here, with the same labels (flags DENY). */
	if (t->wp->metrics != NULL && !t->l4_opened)
		metrics_tcp_opened(t->wp->metrics, &l);
	if (t->wp->metrics != NULL)
		metrics_tcp_closed(t->wp->metrics, &l, t->resp_bytes, t->req_bytes);
	accesslog_tcp(&l, NULL, t->authority, t->resp_bytes, t->req_bytes,
	    uv_now(t->wp->loop) - t->start, l.response_flags);
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

	t->resp_bytes += len;
	return wp_obuf_add(&t->to_down, data, len);
}

static int
w_up(void *arg, const void *data, size_t len)
{
	struct tun *t = arg;

	return wp_obuf_add(&t->to_up, data, len);
}

static void
flush_down(struct tun *t)
{
	wp_obuf_flush(&t->to_down, t->down);
	/* FIN downstream only once everything before it is written. */
	if (t->down != NULL && t->to_down.len == 0 &&
	    (t->down_shut_pending || (t->mode == MODE_L4 && t->up_eof))) {
		t->down_shut_pending = false;
		hbone_stream_shutdown(t->down);
	}
	/* Bytes from up are returned to its window once they are on their way down. */
	if (t->up != NULL && t->to_down.len < WP_BUF && t->up_unconsumed > 0) {
		hbone_stream_consumed(t->up, t->up_unconsumed);
		t->up_unconsumed = 0;
	}
}

static void
flush_up(struct tun *t)
{
	wp_obuf_flush(&t->to_up, t->up);
	if (t->mode == MODE_L4 && t->down_eof && t->up != NULL && t->up_ready &&
	    t->to_up.len == 0)
		hbone_stream_shutdown(t->up);
	if (t->mode == MODE_L4 && t->down != NULL && t->to_up.len < WP_BUF && t->in_unconsumed) {
		hbone_stream_consumed(t->down, t->in_unconsumed);
		t->in_unconsumed = 0;
	}
}

static void
shutdown_down(struct tun *t)
{
	t->down_shut_pending = true;
	flush_down(t);
}

/* A response we make ourselves (deny, redirect, fault, timeout, no route...). */
static void
local_reply(struct tun *t, int status, const char *body, const char *location)
{
	char *head = NULL;
	int n;

	t->status = status;
	t->wp->st.local_replies++;
	/* With a request body still coming we cannot go on with this connection: close it. */
	if (!t->req_body_done && t->req_has_body)
		t->close_after = true;
	n = asprintf(&head, "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\n"
	    "content-length: %zu\r\n%s%s%s%s\r\n", status,
	    status == 403 ? "Forbidden" : status == 404 ? "Not Found" : status == 500 ?
	    "Internal Server Error" : status == 503 ? "Service Unavailable" : status == 504 ?
	    "Gateway Timeout" : status == 502 ? "Bad Gateway" : status >= 300 && status < 400 ?
	    "Redirect" : "Error", strlen(body), location ? "location: " : "",
	    location ? location : "", location ? "\r\n" : "",
	    t->close_after ? "connection: close\r\n" : "");
	t->resp_started = true;
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
	if (t->up == NULL)
		return;
	hbone_stream_set_cb(t->up, NULL, NULL);
	if (reset)
		hbone_stream_reset(t->up, 0x8 /* CANCEL */);
	else
		hbone_stream_shutdown(t->up);
	t->up = NULL;
	t->up_idle = false;
	t->up_unconsumed = 0;
	free(t->to_up.p);
	t->to_up.p = NULL;
	t->to_up.len = 0;
	t->up_ready = false;
	/* It may be the parser whose callback got us here: free it later. */
	h1_parser_free(t->resp_dead);
	t->resp_dead = t->resp_p;
	t->resp_p = NULL;
}

static void
on_up_idle(uv_timer_t *h)
{
	struct tun *t = h->data;

	if (t->up_idle)
		drop_up(t, false);
}

/* The request is answered: account for it and go on with the next one, or close. */
static void
request_done(struct tun *t)
{
	stop_timer(t);
	mirror_detach(t, t->req_body_done);
	finish_request_telemetry(t);
	if (t->up != NULL && t->resp_p != NULL && h1_paused(t->resp_p) && t->status >= 200 &&
	    t->resp_keep_alive && t->req_body_done && t->to_up.len == 0 && !t->close_after) {
		/* A whole exchange, both sides willing: kept for the next request, for WP_UP_IDLE_MS
		 * at most (under the usual keep-alive timeouts of servers, so that we close first). */
		t->up_idle = true;
		if (t->timers_open == 2)
			uv_timer_start(&t->wait, on_up_idle, WP_UP_IDLE_MS, 0);
	} else
		drop_up(t, !t->resp_started || t->status == 0);
	free(t->rewritten);
	t->rewritten = NULL;
	free(t->replay);
	t->replay = NULL;
	t->replay_len = 0;
	t->in_request = false;
	t->rt = NULL;
	t->ep = NULL;
	if (t->close_after || !t->req || !t->req->keep_alive) {
		shutdown_down(t);
		return;
	}
	t->req = NULL;
	if (t->req_p != NULL)
		h1_pause(t->req_p, false);
	/* From inside the request parser, its own h1_feed goes on; else feed it here. */
	if (!t->in_feed)
		feed_down(t);
	if (!t->in_request && t->down_eof && !t->in_feed)
		shutdown_down(t);
}

/* Answers locally and finishes the request. */
static void
reply_and_finish(struct tun *t, int status, const char *body, const char *location,
    const char *flags)
{
	t->flags = flags;
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
	uint64_t wait;

	/* A body is sent again from the copy kept of it: all of it (the request has ended), or none
	 * yet (the parser still holds it) - never from the middle of a stream. */
	if (t->rt == NULL || t->resp_started ||
	    (t->req_has_body && !(t->replay_ok && (t->req_body_done || !t->body_started))) ||
	    !route_should_retry(t->rt, t->attempt, o, status))
		return false;
	wait = route_backoff_ms(t->rt, t->attempt, wp_rnd());
	t->attempt++;
	t->wp->st.retries++;
	drop_up(t, true);
	log_debug("%s: retrying %s %s (attempt %d) in %llu ms", t->wp->role, t->req->method,
	    t->authority, t->attempt, (unsigned long long)wait);
	uv_timer_start(&t->wait, on_wait, wait, 0);
	return true;
}

/* A kept tunnel that failed before any answer (the application closed it as we sent): once more
 * on a new one, if nothing of the request is lost by doing so. Not a retry of the route's. */
static bool
retry_stale(struct tun *t)
{
	const char *m = t->req ? t->req->method : "";

	/* Only when no byte came back on it, and only what may be sent twice (RFC 9110 9.2.1). */
	if (!t->reused || t->up_answered || t->resp_started || t->req_has_body ||
	    (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0))
		return false;
	t->reused = false;
	drop_up(t, true);
	start_upstream(t);
	return true;
}

/* per_try_timeout: this attempt has had no answer in time; the next one, or 504. */
static void
on_per_try(uv_timer_t *h)
{
	struct tun *t = h->data;

	if (t->resp_started || !t->in_request)
		return;
	t->wp->st.timeouts++;
	if (retry_if_allowed(t, ROUTE_OUT_TIMEOUT, 0))
		return;
	reply_and_finish(t, 504, "upstream request timeout", NULL, "UT");
}

static void
per_try_start(struct tun *t)
{
	if (t->mode == MODE_HTTP && t->rt != NULL && t->rt->per_try_timeout > 0 &&
	    t->timers_open == 2)
		uv_timer_start(&t->wait, on_per_try, t->rt->per_try_timeout, 0);
}

static void
on_timeout(uv_timer_t *h)
{
	struct tun *t = h->data;

	t->wp->st.timeouts++;
	if (t->resp_started) {
		/* Half a response went out: the only honest end is to cut the tunnel. */
		t->flags = "UT";
		wp_tun_abort(t);
		return;
	}
	/* The route's overall timeout ends the request; it is not retried (route.h). */
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
	struct h1_head out = *h;
	struct h1_edits e = { 0 };
	int r;

	if (h->status == 101) {
		const char *u = upgrade_field(h);

		/* Only to what was asked for and let through; anything else is not HTTP/1.1 we can
		 * forward (the client would wait for an answer that never comes). */
		if (!upgrade_allowed(t->req) || u == NULL || strcasecmp(u, "websocket") != 0)
			return AMESH_ERR_INVALID; /* a bad response: 502, and the tunnel closes */
	}
	if (h->status == 101) {
		/* Switching protocols (WebSocket): the 101 goes down with its Upgrade field, then
		 * the tunnel carries bytes (up_on_data switches it to L4). */
		struct h1_writer w = { w_down, t };

		e.keep_upgrade = true;
		out.framing = H1_FRAMING_NONE;
		uv_timer_stop(&t->wait);
		t->status = 101;
		t->resp_started = true;
		t->upgraded = true;
		if (h1_write_head(&w, &out, &e) != 0)
			return AMESH_ERR_INVALID;
		flush_down(t);
		return 0;
	}
	if (h->status >= 100 && h->status < 200) {
		/* 100 Continue (a client holding its body for it would otherwise stall until its own
		 * timer) and 103 Early Hints go on to HTTP/1.1 clients, as RFC 9110 15.2 asks; not to
		 * HTTP/1.0 ones. 101 is never forwarded: upgrades are not proxied at L7. */
		if (h->status != 101 && t->req->version_minor >= 1) {
			struct h1_writer w = { w_down, t };

			out.framing = H1_FRAMING_NONE;
			if (h1_write_head(&w, &out, NULL) != 0)
				return AMESH_ERR_INVALID;
			flush_down(t);
		}
		return 0;
	}
	if (retry_if_allowed(t, ROUTE_OUT_STATUS, h->status))
		return AMESH_ERR_INVALID; /* stops this parser; the attempt is gone */
	t->status = h->status;
	t->resp_keep_alive = h->keep_alive && h->framing != H1_FRAMING_CLOSE;
	uv_timer_stop(&t->wait); /* per_try_timeout: answered */
	t->resp_started = true;
	if (t->rt != NULL && route_h1_edits(&e, &t->rt->response_set, &t->rt->response_add,
	    &t->rt->response_remove, 0) != 0)
		return AMESH_ERR_NOMEM; /* a response we cannot forward as the route says: 502 */
	out.framing = h1_forward_framing(h, true);
	t->down_chunked = out.framing == H1_FRAMING_CHUNKED;
	if (t->close_after || !t->req->keep_alive)
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
	struct h1_writer w = { w_down, t };

	/* Written out after the parser's pass (up_on_data), with the head and the end it may
	 * carry: one write rather than one per piece. */
	return t->down_chunked ? h1_write_chunk(&w, data, len) : w_down(t, data, len);
}

static int
resp_end(void *arg)
{
	struct tun *t = arg;

	if (t->status < 200)
		return 0;
	if (t->down_chunked) {
		struct h1_writer w = { w_down, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	flush_down(t);
	h1_pause(t->resp_p, true);
	return 0;
}

static const struct h1_callbacks resp_cb = { resp_head, resp_body, NULL, resp_end };

/* The app switched protocols (101): the request is logged as answered, and the tunnel relays
 * bytes from now on, as an L4 tunnel does (TCP metrics when it ends). rest: what came from the app
 * after the 101's head; what the client sent after its request head waits in t->in. */
static void
upgrade_to_l4(struct tun *t, const uint8_t *rest, size_t n)
{
	/* The request parser stopped at its head (one request at a time): let it reach the end of
	 * the Upgrade request, where it stops by itself, so only the new protocol's bytes remain. */
	if (t->req_p != NULL && h1_in_message(t->req_p)) {
		h1_pause(t->req_p, false);
		feed_down(t);
		if (t->closing)
			return; /* it was not a valid end of the request */
	}
	stop_timer(t);
	mirror_detach(t, t->req_body_done);
	finish_request_telemetry(t);
	t->in_request = false;
	t->mode = MODE_L4;
	t->start = uv_now(t->wp->loop);
	t->req_bytes = t->in_len;
	t->resp_bytes = n;
	if (wp_obuf_add(&t->to_down, rest, n) != 0 || wp_obuf_add(&t->to_up, t->in, t->in_len) != 0) {
		wp_tun_abort(t);
		return;
	}
	t->in_unconsumed += t->in_len;
	free(t->in);
	t->in = NULL;
	t->in_len = 0;
	/* We are inside its caller's feed: the response parser goes when that is over. */
	h1_parser_free(t->resp_dead);
	t->resp_dead = t->resp_p;
	t->resp_p = NULL;
	flush_down(t);
	flush_up(t);
}

/* Upstream stream callbacks. */

static void
up_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct tun *t = hbone_stream_user(s);
	size_t used = 0;
	int r;

	t->last = uv_now(t->wp->loop);
	if (t->mode == MODE_L4) {
		t->resp_bytes += len;
		wp_obuf_add(&t->to_down, data, len);
		t->up_unconsumed += len;
		flush_down(t);
		return;
	}
	t->up_unconsumed += len;
	if (t->up_idle || !t->in_request || t->resp_p == NULL) {
		/* Bytes on a kept tunnel before a request went on it: the application broke HTTP. */
		drop_up(t, true);
		return;
	}
	t->up_answered = true;
	r = h1_feed(t->resp_p, data, len, &used);
	if (r == 0 && t->upgraded) {
		upgrade_to_l4(t, data + used, len - used);
		return;
	}
	if (r != 0) {
		if (t->up == NULL || t->resp_p == NULL)
			return; /* resp_head started a retry */
		log_info("waypoint: %s: bad response from %s: %s", t->authority,
		    t->ep ? t->ep->h.name : "?", h1_error_text(t->resp_p));
		t->wp->st.upstream_failures++;
		if (!t->resp_started) {
			reply_and_finish(t, 502, "upstream sent a bad response", NULL, "UPE");
			return;
		}
		wp_tun_abort(t);
		return;
	}
	flush_down(t);
	if (h1_paused(t->resp_p)) {
		if (used != len)
			t->resp_keep_alive = false; /* more than one response: do not reuse */
		request_done(t);
	}
}

static void
up_on_eof(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	if (t->mode == MODE_L4) {
		t->up_eof = true;
		flush_down(t);
		return;
	}
	if (t->up_idle || !t->in_request) {
		drop_up(t, false); /* the application closed a kept connection */
		return;
	}
	/* A body delimited by the close ends here; anything else was cut short. */
	if (t->resp_p != NULL && h1_finish(t->resp_p) == 0 && t->resp_started) {
		request_done(t);
		return;
	}
	if (!t->resp_started) {
		if (retry_stale(t) || retry_if_allowed(t, ROUTE_OUT_RESET, 0))
			return;
		reply_and_finish(t, 503, "upstream connect error or disconnect/reset before headers",
		    NULL, "UC");
		return;
	}
	wp_tun_abort(t);
}

static void
up_on_writable(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	flush_up(t);
	if (t->mode == MODE_HTTP && t->bp_paused && t->to_up.len < WP_BUF / 2) {
		t->bp_paused = false;
		h1_pause(t->req_p, false);
		feed_down(t);
	}
}

static void
up_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct tun *t = hbone_stream_user(s);

	if (t->up_idle) {
		/* A kept tunnel went away between requests: its parser goes with it. */
		t->up = NULL;
		t->up_idle = false;
		t->up_unconsumed = 0;
		h1_parser_free(t->resp_dead);
		t->resp_dead = t->resp_p;
		t->resp_p = NULL;
		return;
	}
	t->up = NULL;
	t->up_unconsumed = 0;
	if (t->mode == MODE_L4) {
		if (reset)
			wp_tun_abort(t);
		return;
	}
	if (!t->in_request)
		return;
	if (!t->resp_started) {
		if (retry_stale(t) ||
		    retry_if_allowed(t, err == 0x7 ? ROUTE_OUT_REFUSED_STREAM : ROUTE_OUT_RESET, 0))
			return;
		reply_and_finish(t, 503, "upstream connect error or disconnect/reset before headers",
		    NULL, "UC");
		return;
	}
	wp_tun_abort(t);
}

static void
up_on_response(struct hbone_stream *s, int status)
{
	struct tun *t = hbone_stream_user(s);

	if (status != 200) {
		hbone_stream_set_cb(s, NULL, NULL);
		t->up = NULL;
		t->wp->st.upstream_failures++;
		if (t->mode == MODE_L4) {
			wp_tun_abort(t);
			return;
		}
		if (retry_if_allowed(t, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		reply_and_finish(t, 503, status == 401 ? "upstream refused the waypoint" :
		    "upstream connect error", NULL, status == 401 ? "DENY" : "UF");
		return;
	}
	t->up_ready = true;
	if (t->mode == MODE_L4) {
		flush_up(t);
		return;
	}
	send_request_head(t);
}

/* The tunnel to the endpoint is up (new, or kept from the previous request): the request head,
 * with the route's edits, a rewritten path and a trace context; then the body may flow. */
static void
send_request_head(struct tun *t)
{
	struct h1_head out;
	struct h1_edits e = { 0 };
	struct h1_field tp[1];
	int r;

	t->up_ready = true;
	out = *t->req;
	if (t->rewritten != NULL) {
		out.target = t->rewritten;
		out.target_len = strlen(t->rewritten);
	}
	if (t->rt != NULL && route_h1_edits(&e, &t->rt->request_set, &t->rt->request_add,
	    &t->rt->request_remove, 1) != 0) {
		drop_up(t, true);
		reply_and_finish(t, 500, "out of memory", NULL, "UPE");
		return;
	}
	if (t->add_traceparent) {
		struct h1_field f = { "traceparent", t->traceparent };

		if (e.add == NULL) {
			tp[0] = f;
			e.add = tp;
		} else {
			((struct h1_field *)e.add)[e.n_add] = f; /* the extra slot */
		}
		e.n_add++;
	}
	/* An Upgrade request (WebSocket) is forwarded as one, authorized like any other. */
	e.keep_upgrade = upgrade_allowed(t->req);
	out.framing = out.framing == H1_FRAMING_CHUNKED ? H1_FRAMING_CHUNKED : out.framing;
	t->up_chunked = out.framing == H1_FRAMING_CHUNKED;
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
	h1_parser_free(t->resp_dead);
	t->resp_dead = NULL;
	if (t->resp_p != NULL) {
		h1_pause(t->resp_p, false); /* a kept tunnel: its parser reads the next response */
	} else if (h1_parser_new(H1_RESPONSE, &resp_cb, t, &t->resp_p) != 0) {
		drop_up(t, true);
		reply_and_finish(t, 500, "out of memory", NULL, "UPE");
		return;
	}
	h1_expect_response_to(t->resp_p, t->req->method);
	if (t->attempt > 1 && t->replay_len > 0) {
		/* A retry: the body sent before goes again from its copy. */
		struct h1_writer w = { w_up, t };

		if ((t->up_chunked ? h1_write_chunk(&w, t->replay, t->replay_len) :
		    w_up(t, t->replay, t->replay_len)) != 0) {
			drop_up(t, true);
			reply_and_finish(t, 500, "cannot forward the request", NULL, "UPE");
			return;
		}
	}
	if (t->attempt > 1 && t->req_body_done && t->req_has_body && t->up_chunked) {
		struct h1_writer w = { w_up, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	/* Now the body may flow: resume the request parser. The head goes out with the body that
	 * is here already, in one write (one HTTP/2 frame, one TLS record), when there is one. */
	if (!t->req_body_done) {
		h1_pause(t->req_p, false);
		feed_down(t);
	}
	if (t->up != NULL)
		flush_up(t);
}

static const struct hbone_stream_cb up_cb = {
	.on_data = up_on_data,
	.on_eof = up_on_eof,
	.on_writable = up_on_writable,
	.on_response = up_on_response,
	.on_close = up_on_close,
};

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

	if (t->side == SIDE_IN) {
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
	if (wp->embedded && wp->draining)
		return -ESHUTDOWN; /* the sidecar's pool is draining, or gone */
	if (ep == NULL || (ip = reg_workload_addr(ep, AF_INET)) == NULL)
		return -ENOENT;
	/* The CONNECT names the endpoint's application port; the tunnel goes to its HBONE port. */
	sockaddr_from_ip(&dst, ip, target);
	sockaddr_str(&dst, auth, sizeof(auth));
	sockaddr_from_ip(&dst, ip, wp->conf->ztunnel.proxy.hbone_port);
	snprintf(dst_id, sizeof(dst_id), "spiffe://%s/ns/%s/sa/%s", wp->conf->mesh.trust_domain,
	    ep->namespace, ep->service_account);
	o.src = wp->id;
	o.dst_id = dst_id;
	o.dst = (struct sockaddr *)&dst;
	o.authority = auth;
	o.forwarded = t->forwarded;
	o.baggage = t->baggage;
	o.traceparent = traceparent != NULL && traceparent[0] ? traceparent : NULL;
	return hbone_pool_open(wp->pool, &o, cb, user, out);
}

/* Opens (or re-opens, for a retry) the upstream tunnel of the request in flight. */
static void
start_upstream(struct tun *t)
{
	int r;

	if (t->up != NULL && t->up_idle) {
		/* HTTP keep-alive towards the endpoint: the previous request's tunnel, and so its
		 * connection to the application, carries this one if it goes to the same place. */
		if (t->mode == MODE_HTTP && t->up_ep == t->ep && t->up_target == t->target) {
			t->up_idle = false;
			t->reused = true;
			t->up_answered = false;
			t->wp->st.upstream_reused++;
			per_try_start(t);
			send_request_head(t);
			return;
		}
		drop_up(t, false);
	} else if (t->up != NULL) {
		drop_up(t, true); /* never two tunnels for one request */
	}
	t->reused = false;
	t->up_ep = t->ep;
	t->up_target = t->target;
	per_try_start(t);
	r = wp_open_upstream(t, t->ep, t->target, t->traceparent, &up_cb, t, &t->up);
	if (r == -ENOENT) {
		if (t->mode == MODE_L4) {
			wp_tun_abort(t);
			return;
		}
		reply_and_finish(t, 503, "no healthy upstream", NULL, "UH");
		return;
	}
	if (r != 0) {
		t->up = NULL;
		t->wp->st.upstream_failures++;
		if (t->mode == MODE_L4) {
			wp_tun_abort(t);
			return;
		}
		if (retry_if_allowed(t, ROUTE_OUT_CONNECT_FAILURE, 0))
			return;
		reply_and_finish(t, 503, "upstream connect error", NULL, "UO");
	}
}

/* --- mirroring: a copy of the request, fire and forget --- */

/*
 * A mirrored request lives on its own: its tunnel, the copy of the head and of the body as it
 * passes (at most WP_BUF waiting; past that the copy is dropped, never the request), the answer
 * read and discarded. It asks the application to close after answering, ends its side once the
 * request is written, and frees itself when the tunnel closes.
 */
struct mirror {
	struct waypoint *wp;
	struct tun *t; /* while the request's body is being copied */
	struct hbone_stream *s;
	struct obuf out;
	uv_timer_t timer; /* WP_MIRROR_TIMEOUT_MS: a copy never lingers */
	bool up, done, chunked;
};

static void
mirror_close(struct mirror *m, bool reset)
{
	if (m->s == NULL)
		return;
	if (reset) {
		hbone_stream_reset(m->s, 0x8);
	} else {
		m->done = true;
		if (m->up && m->out.len == 0)
			hbone_stream_shutdown(m->s);
	}
}

static void
mirror_flush(struct mirror *m)
{
	if (m->s == NULL || !m->up)
		return;
	wp_obuf_flush(&m->out, m->s);
	/* The write may have closed the stream (m_on_close): then m->s is NULL. */
	if (m->s != NULL && m->done && m->out.len == 0)
		hbone_stream_shutdown(m->s);
}

static int
w_mirror(void *arg, const void *data, size_t len)
{
	struct mirror *m = arg;

	/* The copy may not hold back the request: too far behind, it is given up. */
	if (m->out.len + len > WP_BUF)
		return AMESH_ERR_TOOLONG;
	return wp_obuf_add(&m->out, data, len);
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

	free(m->out.p);
	free(m);
	wp->mirrors_open--;
	embedded_idle_check(wp);
}

static void
m_on_timeout(uv_timer_t *h)
{
	struct mirror *m = h->data;

	if (m->s != NULL)
		hbone_stream_reset(m->s, 0x8);
}

/* The tunnel is gone: m goes once its timer is closed, on the loop, so that a caller still
 * inside a write to it (this may run from there) is not left with freed memory. */
static void
m_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct mirror *m = hbone_stream_user(s);

	if (m->t != NULL)
		m->t->mirror = NULL; /* gone before the body was all copied */
	m->t = NULL;
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

/* Detaches the request's mirror: complete, it finishes on its own; cut short, it is reset. */
static void
mirror_detach(struct tun *t, bool complete)
{
	struct mirror *m = t->mirror;

	if (m == NULL)
		return;
	t->mirror = NULL;
	m->t = NULL;
	mirror_close(m, !complete);
}

/* Starts the copy of the request in flight to an endpoint of the route's mirror service, with
 * Host "HOST-shadow" as Envoy sends it. */
static void
mirror_start(struct tun *t)
{
	struct waypoint *wp = t->wp;
	const struct reg_service *ms = t->rt->mirror_p;
	/* A random endpoint: the round robin of the requests themselves stays undisturbed. */
	const struct reg_workload *ep = ms->n_endpoints ?
	    ms->endpoints[wp_rnd() % ms->n_endpoints] : NULL;
	uint16_t target = ms->ports.n ? ms->ports.v[0].target : t->port;
	char host[320];
	struct h1_field set[1];
	struct h1_edits e = { 0 };
	struct h1_head out = *t->req;
	struct h1_writer w;
	struct mirror *m;

	for (size_t i = 0; i < ms->ports.n; i++)
		if (ms->ports.v[i].port == t->port)
			target = ms->ports.v[i].target;
	if (ep == NULL || wp->mirrors_open >= WP_MAX_MIRRORS || (m = calloc(1, sizeof(*m))) == NULL) {
		wp->st.mirrors_dropped++;
		return;
	}
	m->wp = wp;
	snprintf(host, sizeof(host), "%s-shadow", t->req->host ? t->req->host : t->authority);
	set[0] = (struct h1_field){ "host", host };
	e.set = set;
	e.n_set = 1;
	e.connection = "close";
	if (t->rewritten != NULL) {
		out.target = t->rewritten;
		out.target_len = strlen(t->rewritten);
	}
	m->chunked = out.framing == H1_FRAMING_CHUNKED;
	w = (struct h1_writer){ w_mirror, m };
	if (h1_write_head(&w, &out, &e) != 0 ||
	    wp_open_upstream(t, ep, target, t->traceparent, &mirror_cb, m, &m->s) != 0) {
		free(m->out.p);
		free(m);
		wp->st.mirrors_dropped++;
		return;
	}
	wp->mirrors_open++;
	wp->st.mirrors++;
	uv_timer_init(wp->loop, &m->timer);
	m->timer.data = m;
	uv_timer_start(&m->timer, m_on_timeout, WP_MIRROR_TIMEOUT_MS, 0);
	t->mirror = m;
	m->t = t;
	if (!t->req_has_body)
		mirror_detach(t, true);
}

/* A piece of the request body for the mirror too; a copy that falls behind is dropped. */
static void
mirror_body(struct tun *t, const uint8_t *data, size_t len, bool end)
{
	struct mirror *m = t->mirror;
	struct h1_writer w = { w_mirror, m };
	int r = 0;

	if (m == NULL)
		return;
	if (len > 0)
		r = m->chunked ? h1_write_chunk(&w, data, len) : w_mirror(m, data, len);
	if (r == 0 && end && m->chunked)
		r = h1_write_last_chunk(&w, NULL, 0);
	if (r != 0) {
		t->wp->st.mirrors_dropped++;
		mirror_detach(t, false);
		return;
	}
	mirror_flush(m);
	if (end)
		mirror_detach(t, true);
}

void
wp_decide(struct tun *t, const struct route_req *rq, const char *host, struct wp_verdict *v)
{
	struct waypoint *wp = t->wp;
	struct authz_l7_req aq;
	const struct reg_policy *matched = NULL;
	struct ip_addr src_ip;

	memset(v, 0, sizeof(*v));
	/* Routes are the caller's side (Envoy: client-side); a sidecar's inbound only authorizes. */
	v->rt = t->svc != NULL && t->side != SIDE_IN ? route_select(t->reg, t->svc, rq) : NULL;
	/* The port: the addressed service's target for the port asked, unless a backend service
	 * maps it otherwise. */
	v->target = t->port;
	if (t->svc != NULL && t->side != SIDE_IN)
		for (size_t i = 0; i < t->svc->ports.n; i++)
			if (t->svc->ports.v[i].port == t->port)
				v->target = t->svc->ports.v[i].target;
	if (v->rt != NULL && v->rt->redirect)
		return;
	/* The endpoint: from the route's backends, or the addressed service or workload. */
	if (v->rt != NULL && v->rt->backends.n > 0) {
		const struct reg_backend *be = route_pick_backend(v->rt, wp_rnd());

		if (be == NULL) {
			v->status = 500;
			v->body = "no route: every backend has weight 0";
			v->flags = "NR";
			return;
		}
		v->ep = be->workload != NULL ? be->workload : wp_pick_endpoint(t, be->service);
		if (be->service != NULL) {
			/* The backend service's port with the same number, else its first. */
			const struct reg_service *bs = be->service;

			v->target = bs->ports.n ? bs->ports.v[0].target : t->port;
			for (size_t i = 0; i < bs->ports.n; i++)
				if (bs->ports.v[i].port == t->port)
					v->target = bs->ports.v[i].target;
		}
	} else {
		v->ep = t->side == SIDE_IN ? t->direct : wp_pick_endpoint(t, t->svc);
	}
	if (t->side == SIDE_IN && v->ep == NULL) {
		/* Never to the app unjudged: its workload is the one policy is looked up for. */
		v->status = 503;
		v->body = "no longer in the registry";
		v->flags = "NR";
		return;
	}
	/* L7 authorization, against the workload the request is going to; a sidecar's outbound
	 * leaves that to the destination. */
	if (t->side == SIDE_OUT)
		goto fault;
	memset(&aq, 0, sizeof(aq));
	memset(&src_ip, 0, sizeof(src_ip));
	if (t->side == SIDE_IN)
		ip_from_sockaddr(&t->client, &src_ip, NULL); /* as the app will see it */
	aq.l4.src_principal = authz_principal(t->peer_id);
	aq.l4.src_namespace = "";
	aq.l4.src_ip = src_ip.family ? &src_ip : NULL;
	aq.l4.dst_port = v->target;
	aq.method = rq->method;
	aq.path = rq->path;
	aq.host = host;
	aq.header = rq->header;
	aq.header_arg = rq->header_arg;
	if (v->ep != NULL && authz_l7(t->reg, v->ep, &aq, &matched) == AUTHZ_DENY) {
		wp->st.denied++;
		log_info("%s: %s %s%s to %s denied for %s%s%s", wp->role, rq->method,
		    t->authority, rq->path, v->ep->h.name, t->peer_id, matched ? " by policy " : "",
		    matched ? matched->h.name : "");
		v->status = 403;
		v->body = "RBAC: access denied";
		v->flags = "DENY";
		return;
	}
fault:
	if (v->rt != NULL && route_fault_abort(v->rt, wp_rnd(), &v->status)) {
		v->body = "fault filter abort";
		v->flags = "FI";
	}
}

/* Request parser callbacks (downstream -> upstream). */

static const char *
hdr_lookup(void *arg, const char *name)
{
	return h1_header_get(arg, name);
}

static int
req_head(void *arg, const struct h1_head *h)
{
	struct tun *t = arg;
	struct waypoint *wp = t->wp;
	char path[2048], query[2048], loc[2048];
	const char *q, *why;
	struct route_req rq;
	struct wp_verdict v;
	uint64_t delay;
	bool normalized;

	/* One request at a time: the next waits until this one is answered. */
	h1_pause(t->req_p, true);
	t->req = h;
	t->in_request = true;
	t->start = uv_now(wp->loop);
	t->req_bytes = 0;
	t->resp_bytes = 0;
	t->status = 0;
	t->flags = NULL;
	t->attempt = 1;
	t->reused = false;
	t->resp_started = false;
	t->upgraded = false;
	t->req_has_body = h->framing == H1_FRAMING_LENGTH || h->framing == H1_FRAMING_CHUNKED;
	t->req_body_done = !t->req_has_body;
	t->body_started = false;
	t->replay_len = 0;
	t->replay_ok = !(h->framing == H1_FRAMING_LENGTH && h->content_length > WP_REPLAY_MAX);
	t->close_after = false;
	if (!wp_tun_refresh_registry(t)) {
		/* What this connection addressed left the registry: nothing to route it to. */
		t->close_after = true;
		reply_and_finish(t, 503, "no longer in the registry", NULL, "NR");
		return 0;
	}
	if (h->path_len >= sizeof(path) || h->target_len >= sizeof(query)) {
		/* Routing and policy must see the whole path: a cut one could dodge a suffix rule. */
		reply_and_finish(t, 414, "URI too long", NULL, "-");
		return 0;
	}
	/* Routes and policy judge, and the application gets, the normalized path. A fragment has
	 * no place in a request (RFC 9112 3.2), and an app could read it as part of the path. */
	if (memchr(h->target, '#', h->target_len) != NULL) {
		reply_and_finish(t, 400, "a fragment in the request target", NULL, "-");
		return 0;
	}
	if (strcmp(h->method, "CONNECT") == 0) {
		/* Not proxied at L7 (the HTTP/2 path refuses it too): a tunnel inside a tunnel. */
		t->close_after = true;
		reply_and_finish(t, 405, "CONNECT is not served here", NULL, "-");
		return 0;
	}
	if (route_normalize_path(h->target, h->path_len, path, sizeof(path), &why) != 0) {
		log_info("%s: %s: bad request from %s: %s", wp->role, t->authority, t->peer_id, why);
		reply_and_finish(t, 400, why, NULL, "-");
		return 0;
	}
	normalized = strlen(path) != h->path_len || memcmp(path, h->target, h->path_len) != 0;
	q = memchr(h->target, '?', h->target_len);
	snprintf(query, sizeof(query), "%.*s", q ? (int)(h->target + h->target_len - q - 1) : 0,
	    q ? q + 1 : "");
	{
		const char *tp = h1_header_get(h, "traceparent");

		t->add_traceparent = tp == NULL;
		if (tp != NULL)
			snprintf(t->traceparent, sizeof(t->traceparent), "%s", tp);
		else
			rng_traceparent(t->traceparent, sizeof(t->traceparent));
	}
	rq.method = h->method;
	rq.path = path;
	rq.query = query;
	rq.header = hdr_lookup;
	rq.header_arg = (void *)h;
	wp_decide(t, &rq, h->host ? h->host : t->authority, &v);
	t->rt = v.rt;
	t->ep = v.ep;
	t->target = v.target;
	if (t->rt != NULL && t->rt->redirect) {
		char host[300];
		uint64_t hport = 0;
		int code = 302;
		const char *colon;

		/* The request's host and port, as route_redirect_location wants them apart. */
		snprintf(host, sizeof(host), "%s", h->host ? h->host : t->authority);
		colon = strrchr(host, ':');
		/* "[v6]:port" or "name:port"; a bare "[v6]" has its last ':' inside the brackets. */
		if (colon != NULL && (strchr(host, ']') == NULL || strchr(host, ']') < colon) &&
		    parse_uint(colon + 1, 1, 65535, &hport, &why) == 0)
			host[colon - host] = '\0';
		else
			hport = 0;
		if (route_redirect_location(t->rt, "http", host, (uint16_t)hport, path,
		    query, loc, sizeof(loc), &code) != 0) {
			reply_and_finish(t, 500, "bad redirect", NULL, "-");
			return 0;
		}
		reply_and_finish(t, code, "", loc, "-");
		return 0;
	}
	if (v.status != 0) {
		reply_and_finish(t, v.status, v.body, NULL, v.flags);
		return 0;
	}
	if (t->rt != NULL && t->rt->rewrite_path_prefix != NULL) {
		char rw[2048];

		/* Never the path un-rewritten instead: the route said where it goes. */
		if (route_rewrite_path(t->rt, path, rw, sizeof(rw)) != 0) {
			reply_and_finish(t, 414, "URI too long after the route's rewrite", NULL, "-");
			return 0;
		}
		if (asprintf(&t->rewritten, "%s%s%s", rw, query[0] ? "?" : "", query) < 0) {
			t->rewritten = NULL;
			reply_and_finish(t, 500, "out of memory", NULL, "-");
			return 0;
		}
	}
	if (t->rewritten == NULL && normalized &&
	    asprintf(&t->rewritten, "%s%s%s", path, query[0] ? "?" : "", query) < 0) {
		/* Never the raw target instead: the app would get what policy did not judge. */
		t->rewritten = NULL;
		reply_and_finish(t, 500, "out of memory", NULL, "-");
		return 0;
	}
	if (t->rt != NULL && route_mirror(t->rt, wp_rnd()))
		mirror_start(t);
	if (t->rt != NULL && t->rt->timeout > 0)
		uv_timer_start(&t->timer, on_timeout, t->rt->timeout, 0);
	if (t->rt != NULL && route_fault_delay(t->rt, wp_rnd(), &delay)) {
		t->flags = "DI";
		uv_timer_start(&t->wait, on_wait, delay, 0);
		return 0;
	}
	start_upstream(t);
	return 0;
}

static int
req_body(void *arg, const uint8_t *data, size_t len)
{
	struct tun *t = arg;
	struct h1_writer w = { w_up, t };
	int r;

	t->req_bytes += len;
	t->body_started = true;
	if (t->replay_ok && t->rt != NULL && t->rt->retries > 0) {
		uint8_t *n = NULL;

		if (t->replay_len + len <= WP_REPLAY_MAX &&
		    (n = realloc(t->replay, t->replay_len + len)) != NULL) {
			memcpy(n + t->replay_len, data, len);
			t->replay = n;
			t->replay_len += len;
		} else {
			t->replay_ok = false; /* too large to keep: this request is not retried */
		}
	}
	mirror_body(t, data, len, false);
	if (t->up == NULL)
		return 0; /* answered locally: the body is dropped (and the tunnel closes after) */
	r = t->up_chunked ? h1_write_chunk(&w, data, len) : w_up(t, data, len);
	flush_up(t);
	/* Backpressure: stop parsing while upstream holds a full buffer. */
	if (t->to_up.len >= WP_BUF) {
		t->bp_paused = true;
		h1_pause(t->req_p, true);
	}
	return r;
}

static int
req_end(void *arg)
{
	struct tun *t = arg;

	t->req_body_done = true;
	mirror_body(t, NULL, 0, true);
	if (t->up != NULL && t->up_chunked) {
		struct h1_writer w = { w_up, t };

		h1_write_last_chunk(&w, NULL, 0);
	}
	flush_up(t);
	/* The next request waits while this one is in flight. A request without a body may have
	 * been answered already (its end comes after its head was handled): then go on. */
	if (t->in_request)
		h1_pause(t->req_p, true);
	else
		h1_pause(t->req_p, false); /* an Upgrade request, answered as plain HTTP: the parser
					    * paused itself for the other protocol; the next request
					    * on this connection is HTTP/1.1 again */
	return 0;
}

static const struct h1_callbacks req_cb = { req_head, req_body, NULL, req_end };

/* Gives the parser what came from downstream, while it is not paused. */
static void
feed_down(struct tun *t)
{
	size_t used = 0;

	/* Writing upstream can call back here (on_writable) while h1_feed runs: the outer loop
	 * goes on by itself. */
	if (t->in_feed)
		return;

	while (t->mode == MODE_HTTP && t->in_len > 0 && t->req_p != NULL && !h1_paused(t->req_p)) {
		int r;

		t->in_feed = true;
		r = h1_feed(t->req_p, t->in, t->in_len, &used);
		t->in_feed = false;

		if (r != 0) {
			int st = h1_error_status(t->req_p);

			log_info("waypoint: %s: bad request from %s: %s", t->authority, t->peer_id,
			    h1_error_text(t->req_p));
			t->close_after = true;
			if (!t->in_request) {
				t->req = NULL;
				t->start = uv_now(t->wp->loop);
				local_reply(t, st ? st : 400, "bad request", NULL);
				shutdown_down(t);
			} else {
				wp_tun_abort(t);
			}
			return;
		}
		memmove(t->in, t->in + used, t->in_len - used);
		t->in_len -= used;
		if (t->down != NULL && used > 0)
			hbone_stream_consumed(t->down, used);
		if (used == 0)
			break;
	}
	/* A request answered inside the parser may have left the connection to close. */
	if (!t->in_request && (t->down_eof || t->close_after) && t->mode == MODE_HTTP)
		shutdown_down(t);
}

/* --- downstream stream --- */

enum detect { DETECT_MORE, DETECT_HTTP, DETECT_H2, DETECT_OTHER };

/* What the first bytes of a tunnel are: an HTTP/1.x request line starts with an upper-case
 * method and a blank within 16 bytes; h2c with prior knowledge with the whole preface. Anything
 * else is decided as soon as a byte rules both out. */
static enum detect
detect(const uint8_t *p, size_t n)
{
	bool whole;

	if (h2d_preface(p, n, &whole))
		return whole ? DETECT_H2 : DETECT_MORE;
	if (n >= 4 && memcmp(p, "PRI ", 4) == 0)
		return DETECT_OTHER; /* not the preface, nor an HTTP/1.1 method */
	for (size_t i = 0; i < n && i < 16; i++) {
		if (p[i] == ' ')
			return i > 0 ? DETECT_HTTP : DETECT_OTHER;
		/* Methods are tokens; in practice upper case, with '-' (M-SEARCH, VERSION-CONTROL). */
		if ((p[i] < 'A' || p[i] > 'Z') && (p[i] != '-' || i == 0))
			return DETECT_OTHER;
	}
	return n >= 16 ? DETECT_OTHER : DETECT_MORE;
}

/* Not HTTP (or silent: a server-first protocol): relayed as bytes, as a ztunnel would. The
 * workload's L4 policy is checked here, failing closed on L7 rules (authz_l4): the destination
 * sees only us. A sidecar's outbound leaves policy to the destination. */
static void
go_l4(struct tun *t)
{
	t->mode = MODE_L4;
	t->wp->st.tunnels_l4++;
	if (t->timers_open == 2)
		uv_timer_stop(&t->timer);
	wp_obuf_add(&t->to_up, t->in, t->in_len);
	t->in_unconsumed += t->in_len;
	t->req_bytes += t->in_len;
	free(t->in);
	t->in = NULL;
	t->in_len = 0;
	t->target = t->port;
	t->ep = t->side == SIDE_IN ? t->direct : wp_pick_endpoint(t, t->svc);
	if (t->svc != NULL && t->side != SIDE_IN)
		for (size_t i = 0; i < t->svc->ports.n; i++)
			if (t->svc->ports.v[i].port == t->port)
				t->target = t->svc->ports.v[i].target;
	t->start = uv_now(t->wp->loop);
	if (t->side == SIDE_IN && t->ep == NULL) {
		wp_tun_abort(t); /* never to the app unjudged */
		return;
	}
	if (t->ep != NULL && t->side != SIDE_OUT) {
		struct authz_l4_req q = { 0 };
		const struct reg_policy *m = NULL;
		struct ip_addr ip;

		ip_from_sockaddr(&t->client, &ip, NULL); /* family 0 unless SIDE_IN */
		q.src_principal = authz_principal(t->peer_id);
		q.src_namespace = "";
		q.src_ip = ip.family ? &ip : NULL;
		q.dst_port = t->target;
		if (authz_l4(t->reg, t->ep, &q, &m) == AUTHZ_DENY) {
			t->wp->st.denied++;
			t->flags = "DENY";
			log_info("%s: L4 tunnel %s for %s denied%s%s", t->wp->role, t->authority,
			    t->peer_id, m ? " by policy " : "", m ? m->h.name : "");
			wp_tun_abort(t);
			return;
		}
	}
	if (t->wp->metrics != NULL) {
		char dp[SPIFFE_ID_MAX];
		struct tcp_labels l;

		l4_labels(t, &l, dp, sizeof(dp));
		metrics_tcp_opened(t->wp->metrics, &l);
		t->l4_opened = true;
	}
	start_upstream(t);
}

/* Nothing decided the protocol in detect_ms: the client waits for the server to speak. */
static void
on_detect_timeout(uv_timer_t *h)
{
	struct tun *t = h->data;

	if (t->mode == MODE_DETECT && !t->closing)
		go_l4(t);
}

static void
down_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct tun *t = hbone_stream_user(s);
	uint8_t *n;

	if (t->closing)
		return;
	t->last = uv_now(t->wp->loop);
	if (t->mode == MODE_H2) {
		h2d_on_data(t->h2, data, len);
		return;
	}
	if (t->mode == MODE_L4) {
		t->req_bytes += len;
		wp_obuf_add(&t->to_up, data, len);
		t->in_unconsumed += len;
		if (t->up_ready)
			flush_up(t);
		return;
	}
	/* Bounded by the stream window: we return bytes only as the parser takes them. */
	n = realloc(t->in, t->in_len + len);
	if (n == NULL) {
		wp_tun_abort(t);
		return;
	}
	t->in = n;
	memcpy(t->in + t->in_len, data, len);
	t->in_len += len;
	if (t->mode == MODE_DETECT) {
		switch (detect(t->in, t->in_len)) {
		case DETECT_MORE:
			return;
		case DETECT_H2:
			/* h2c with prior knowledge (gRPC included): the HTTP/2 path. */
			uv_timer_stop(&t->timer);
			if (h2d_start(t) != 0)
				wp_tun_abort(t);
			return;
		case DETECT_HTTP:
			uv_timer_stop(&t->timer);
			t->mode = MODE_HTTP;
			if (h1_parser_new(H1_REQUEST, &req_cb, t, &t->req_p) != 0) {
				wp_tun_abort(t);
				return;
			}
			break;
		case DETECT_OTHER:
			go_l4(t);
			return;
		}
	}
	feed_down(t);
}

static void
down_on_eof(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	t->down_eof = true;
	if (t->mode == MODE_H2) {
		h2d_on_eof(t->h2);
		return;
	}
	if (t->mode == MODE_DETECT && !t->closing) {
		/* Sent what it had and half-closed before its protocol was clear: relayed as is. */
		go_l4(t);
		if (t->closing)
			return;
	}
	if (t->mode == MODE_L4) {
		flush_up(t);
		if (t->up != NULL && t->to_up.len == 0)
			hbone_stream_shutdown(t->up);
		return;
	}
	if (t->mode == MODE_HTTP && t->req_p != NULL && !t->in_request)
		feed_down(t);
	if (!t->in_request)
		shutdown_down(t);
}

static void
down_on_writable(struct hbone_stream *s)
{
	struct tun *t = hbone_stream_user(s);

	if (t->mode == MODE_H2)
		h2d_on_writable(t->h2);
	else
		flush_down(t);
}

static void
timer_closed(uv_handle_t *h)
{
	struct tun *t = h->data;

	t->timers_open--;
	wp_tun_maybe_free(t);
}

static void
down_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct tun *t = hbone_stream_user(s);

	t->down = NULL;
	t->down_closed = true;
	if (t->mode == MODE_H2)
		h2d_on_close(t->h2);
	if (t->in_request && !t->resp_started && t->status == 0) {
		t->status = 0;
		t->flags = "DC"; /* downstream went away */
		finish_request_telemetry(t);
		t->in_request = false;
	}
	drop_up(t, !t->up_idle);
	mirror_detach(t, false);
	t->closing = true;
	if (t->timers_open == 2 && !uv_is_closing((uv_handle_t *)&t->timer)) {
		uv_close((uv_handle_t *)&t->timer, timer_closed);
		uv_close((uv_handle_t *)&t->wait, timer_closed);
	}
	wp_tun_maybe_free(t);
}

static const struct hbone_stream_cb down_cb = {
	.on_data = down_on_data,
	.on_eof = down_on_eof,
	.on_writable = down_on_writable,
	.on_close = down_on_close,
};

void
wp_tun_maybe_free(struct tun *t)
{
	struct waypoint *wp = t->wp;

	if (!t->down_closed || t->timers_open > 0 || !h2d_idle(t->h2))
		return;
	wp->st.active--;
	if (t->prev != NULL)
		t->prev->next = t->next;
	else
		wp->tuns = t->next;
	if (t->next != NULL)
		t->next->prev = t->prev;
	h2d_free(t->h2);
	if (t->mode == MODE_L4)
		finish_l4_telemetry(t);
	h1_parser_free(t->req_p);
	h1_parser_free(t->resp_p);
	h1_parser_free(t->resp_dead);
	registry_unref(t->reg);
	free(t->in);
	free(t->to_down.p);
	free(t->to_up.p);
	free(t->rewritten);
	free(t->replay);
	free(t->peer_id);
	free(t->forwarded);
	free(t->baggage);
	free(t);
	if (wp->embedded && wp->host.tun_gone != NULL)
		wp->host.tun_gone(wp->host.arg);
	embedded_idle_check(wp); /* last: it may free wp */
}

bool
wp_tun_refresh_registry(struct tun *t)
{
	struct registry *cur = registry_holder_get(t->wp->reg), *old = t->reg;
	const struct reg_service *svc = NULL;
	const struct reg_workload *direct = NULL;

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
	if ((t->svc != NULL && svc == NULL && t->side != SIDE_IN) ||
	    (t->direct != NULL && direct == NULL)) {
		/* Gone from the registry: the tunnel stays on its snapshot (every pointer valid) and
		 * this request is refused; a later one moves when it is back. */
		registry_unref(cur);
		return false;
	}
	if (t->up != NULL && t->up_idle)
		drop_up(t, false);
	t->svc = svc;
	t->direct = direct;
	if (t->src_wl != NULL)
		t->src_wl = registry_find(cur, REG_WORKLOAD, t->src_wl->h.name);
	t->up_ep = NULL;
	t->reg = cur;
	registry_unref(old);
	return true;
}

/* Resets both sides; the downstream on_close frees the tunnel. */
void
wp_tun_abort(struct tun *t)
{
	drop_up(t, true);
	if (t->down != NULL && !t->closing) {
		t->closing = true;
		hbone_stream_reset(t->down, 0x8);
	}
}

/* The workload an HBONE peer ("ADDR:PORT") is: HBONE leaves from the caller's own address. */
static const struct reg_workload *
peer_workload(const struct registry *reg, const char *peer_addr)
{
	struct sockaddr_storage ps;
	struct ip_addr peer;
	const char *why;

	if (parse_sockaddr(peer_addr, &ps, &why) != 0)
		return NULL;
	ip_from_sockaddr(&ps, &peer, NULL);
	return registry_workload_by_addr(reg, &peer);
}

static struct tun *
tun_new(struct waypoint *wp, struct registry *reg, enum tun_side side)
{
	struct tun *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->wp = wp;
	t->reg = reg;
	t->side = side;
	return t;
}

/* A tunnel that never started: nothing of it is on the loop yet. */
static void
tun_discard(struct tun *t)
{
	registry_unref(t->reg);
	free(t);
}

/* The tunnel is ours from here: its timers, the detection deadline, the downstream stream. */
static void
tun_start(struct tun *t, struct hbone_stream *s)
{
	struct waypoint *wp = t->wp;

	uv_timer_init(wp->loop, &t->timer);
	uv_timer_init(wp->loop, &t->wait);
	t->timer.data = t->wait.data = t;
	t->timers_open = 2;
	if (wp->detect_ms > 0)
		uv_timer_start(&t->timer, on_detect_timeout, wp->detect_ms, 0);
	t->down = s;
	t->last = uv_now(wp->loop);
	t->next = wp->tuns;
	if (wp->tuns != NULL)
		wp->tuns->prev = t;
	wp->tuns = t;
	wp->st.tunnels++;
	wp->st.active++;
	hbone_stream_set_cb(s, &down_cb, t);
}

static void
on_request(struct hbone_server *srv, struct hbone_stream *s, const struct hbone_request *req)
{
	struct waypoint *wp = hbone_server_user(srv);
	struct registry *reg = registry_holder_get(wp->reg);
	struct ip_addr ip;
	const char *why;
	struct tun *t;

	if (reg == NULL || wp->draining || wp->st.active >= wp->conf->waypoint.max_connections) {
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		return;
	}
	t = tun_new(wp, reg, SIDE_WAYPOINT);
	if (t == NULL) {
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		return;
	}
	t->port = req->port;
	snprintf(t->authority, sizeof(t->authority), "%s", req->authority);
	if (parse_ip(req->host, &ip, &why) == 0) {
		const struct reg_vip *v = registry_service_by_vip(reg, &ip, req->port);

		if (v != NULL)
			t->svc = v->service;
		else
			t->direct = registry_workload_by_addr(reg, &ip);
	} else {
		t->svc = registry_service_by_hostname(reg, req->host);
	}
	if (t->svc == NULL && t->direct == NULL) {
		log_info("waypoint: %s from %s: not a service or workload of the registry",
		    req->authority, req->peer_id);
		hbone_stream_respond(s, 400);
		registry_unref(reg);
		free(t);
		return;
	}
	t->peer_id = strdup(req->peer_id);
	t->forwarded = req->forwarded ? strdup(req->forwarded) : NULL;
	t->baggage = req->baggage ? strdup(req->baggage) : NULL;
	t->src_wl = peer_workload(reg, req->peer_addr);
	if (t->peer_id == NULL) {
		hbone_stream_respond(s, 503);
		registry_unref(reg);
		free(t);
		return;
	}
	tun_start(t, s);
	hbone_stream_respond(s, 200);
}

int
waypoint_take_inbound(struct waypoint *wp, struct hbone_stream *s,
    const struct hbone_request *req, const struct sockaddr_storage *client,
    const struct sockaddr_storage *app, const char *svc_host)
{
	struct registry *reg = registry_holder_get(wp->reg);
	struct tun *t;

	t = reg != NULL && !wp->draining ? tun_new(wp, reg, SIDE_IN) : NULL;
	if (t == NULL) {
		registry_unref(reg);
		return -1;
	}
	t->direct = registry_find(reg, REG_WORKLOAD, wp->host.workload);
	t->svc = svc_host != NULL ? registry_service_by_hostname(reg, svc_host) : NULL;
	t->port = req->port;
	t->app = *app;
	t->client = *client;
	snprintf(t->authority, sizeof(t->authority), "%s", req->authority);
	t->peer_id = strdup(req->peer_id);
	t->src_wl = peer_workload(reg, req->peer_addr);
	if (t->direct == NULL || t->peer_id == NULL) {
		free(t->peer_id);
		tun_discard(t);
		return -1;
	}
	tun_start(t, s);
	if (hbone_stream_respond(s, 200) != 0) {
		wp_tun_abort(t);
		return 0; /* the stream's on_close frees the tunnel */
	}
	return 0;
}

/* The app sees a reset, as from a server that refused it. */
static void
close_reset(int fd)
{
	sock_rst_on_close(fd);
	close(fd);
}

int
waypoint_take_outbound(struct waypoint *wp, int fd, const struct sockaddr_storage *src,
    const char *svc_host, uint16_t port)
{
	struct registry *reg = registry_holder_get(wp->reg);
	struct hbone_stream *s;
	char a[80], id[SPIFFE_ID_MAX];
	struct tun *t;
	bool bad;

	t = reg != NULL && !wp->draining ? tun_new(wp, reg, SIDE_OUT) : NULL;
	if (t == NULL) {
		registry_unref(reg);
		close_reset(fd);
		return -1;
	}
	t->svc = registry_service_by_hostname(reg, svc_host);
	t->src_wl = registry_find(reg, REG_WORKLOAD, wp->host.workload);
	t->port = port;
	snprintf(t->authority, sizeof(t->authority), "%s:%u", svc_host, port);
	/* Who calls, for the destination's telemetry and policy (as the L4 path sends them). */
	t->peer_id = spiffe_format(id, sizeof(id), wp->conf->mesh.trust_domain, wp->host.ns,
	    wp->host.sa) == 0 ? strdup(id) : NULL;
	if (asprintf(&t->forwarded, "for=\"%s\"", sockaddr_str(src, a, sizeof(a))) < 0)
		t->forwarded = NULL;
	if (asprintf(&t->baggage, "k8s.namespace.name=%s,k8s.workload.name=%s,"
	    "amesh.destination.service=%s", wp->host.ns, wp->host.workload, svc_host) < 0)
		t->baggage = NULL;
	bad = t->svc == NULL || t->src_wl == NULL || t->peer_id == NULL || t->forwarded == NULL ||
	    t->baggage == NULL;
	if (bad)
		close_reset(fd);
	if (bad || hbone_tcp_accepted(wp->loop, fd, &down_cb, t, &s) != 0) {
		free(t->peer_id);
		free(t->forwarded);
		free(t->baggage);
		tun_discard(t);
		return -1;
	}
	tun_start(t, s);
	return 0;
}

void
waypoint_abort_all(struct waypoint *wp)
{
	struct tun *next;

	for (struct tun *t = wp->tuns; t != NULL; t = next) {
		next = t->next; /* (a tunnel is freed on the loop, never in here) */
		wp_tun_abort(t);
	}
}

size_t
waypoint_active(const struct waypoint *wp)
{
	return wp->st.active;
}

/* --- lifecycle --- */

static void
on_refresh(uv_timer_t *h)
{
	struct waypoint *wp = h->data;
	struct identity *id;
	uint64_t now = uv_now(wp->loop);
	struct tun *next;

	/* Idle tunnels ([waypoint] or [sidecar] idle_timeout), as the L4 relay closes its own. */
	for (struct tun *t = wp->tuns; wp->idle_ms > 0 && t != NULL; t = next) {
		next = t->next; /* (a tunnel is freed on the loop, never in here) */
		if (!t->closing && now - t->last >= wp->idle_ms) {
			log_debug("%s: %s idle for %llu ms: reset", wp->role, t->authority,
			    (unsigned long long)(now - t->last));
			t->flags = "SI";
			wp_tun_abort(t);
		}
	}
	id = identity_store_get_sa(wp->ids, wp->ns, wp->sa);
	if (id == NULL || id == wp->id || (id->chain.raw.len == wp->id->chain.raw.len &&
	    memcmp(id->chain.raw.p, wp->id->chain.raw.p, id->chain.raw.len) == 0)) {
		identity_unref(id);
		return;
	}
	log_info("%s: new certificate for %s", wp->role, id->spiffe_id);
	if (wp->srv != NULL)
		hbone_server_set_identity(wp->srv, id);
	identity_unref(wp->id);
	wp->id = id;
}

/* The pool's sockets leave from the waypoint's own address (its registry address), so the
 * destination ztunnel knows the peer as the waypoint and honours its forwarded header. */
static int
wp_socket(void *arg, int family)
{
	struct waypoint *wp = arg;
	const struct sockaddr_storage *ha = &wp->conf->waypoint.hbone_address;
	struct sockaddr_storage src;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	if (ha->ss_family != family)
		return fd;
	memcpy(&src, ha, sizeof(src));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&src;

		if (s4->sin_addr.s_addr == htonl(INADDR_ANY))
			return fd;
		s4->sin_port = 0;
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&src;

		if (IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr))
			return fd;
		s6->sin6_port = 0;
	}
	setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&src, family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6)) != 0)
		log_debug("waypoint: cannot send from its own address: %s", strerror(errno));
	return fd;
}

int
waypoint_start(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, struct waypoint **out)
{
	struct registry *r = registry_holder_get(reg);
	const struct reg_waypoint *wr = r ? registry_find(r, REG_WAYPOINT, conf->waypoint.name) : NULL;
	struct waypoint *wp;
	char a[80];
	int rc;

	*out = NULL;
	if (wr == NULL) {
		log_error("waypoint: [waypoint] name \"%s\" is not defined in the registry %s",
		    conf->waypoint.name, conf->mesh.registry);
		registry_unref(r);
		return AMESH_ERR_NOTFOUND;
	}
	wp = calloc(1, sizeof(*wp));
	if (wp == NULL) {
		registry_unref(r);
		return AMESH_ERR_NOMEM;
	}
	wp->loop = loop;
	wp->conf = conf;
	wp->reg = reg;
	wp->ids = ids;
	wp->metrics = metrics;
	wp->role = "waypoint";
	wp->idle_ms = conf->waypoint.idle_timeout;
	wp->detect_ms = conf->waypoint.protocol_detection_timeout;
	wp->ns = strdup(wr->namespace);
	wp->sa = strdup(wr->service_account);
	registry_unref(r);
	wp->id = identity_store_get_sa(ids, wp->ns, wp->sa);
	if (wp->id == NULL) {
		log_error("waypoint: no certificate for spiffe://%s/ns/%s/sa/%s in %s (issue it with "
		    "amesh ca issue --namespace %s --service-account %s --out %s)",
		    conf->mesh.trust_domain, wp->ns, wp->sa, conf->identity.cert_dir, wp->ns, wp->sa,
		    conf->identity.cert_dir);
		free(wp->ns);
		free(wp->sa);
		free(wp);
		return AMESH_ERR_NOTFOUND;
	}
	{
		struct hbone_server_cfg sc = {
			.addr = (const struct sockaddr *)&conf->waypoint.hbone_address,
			.fd = -1,
			.id = wp->id,
			.trust_domain = conf->mesh.trust_domain,
			.handshake_timeout_ms = conf->waypoint.handshake_timeout,
			.max_connections = conf->waypoint.max_connections,
			.max_streams = (uint32_t)conf->waypoint.pool_max_streams,
			.on_request = on_request,
			.user = wp,
		};
		struct hbone_pool_cfg pc = {
			.max_streams = (uint32_t)conf->waypoint.pool_max_streams,
			.idle_timeout_ms = conf->waypoint.pool_idle_timeout,
			.connect_timeout_ms = conf->waypoint.connect_timeout,
			.ping_interval_ms = 10000,
			.ping_timeout_ms = 20000,
			.max_connections = 4096,
			.socket_fn = wp_socket,
			.socket_arg = wp,
		};

		rc = hbone_server_listen(loop, &sc, &wp->srv);
		if (rc != 0) {
			struct ip_addr ip;
			char ips[INET6_ADDRSTRLEN], hint[256] = "";

			/* The registry address is the waypoint's own, not its node's: say how to add it. */
			ip_from_sockaddr(&conf->waypoint.hbone_address, &ip, NULL);
			if (rc == UV_EADDRNOTAVAIL)
				snprintf(hint, sizeof(hint), "; %s is not an address of this host: add it "
				    "where the ztunnels reach it (ip addr add %s/%d dev IFACE), or change "
				    "[waypoint] hbone_address", ip_str(&ip, ips, sizeof(ips)), ips,
				    ip.family == AF_INET6 ? 128 : 32);
			else if (rc == UV_EADDRINUSE)
				snprintf(hint, sizeof(hint), "; another process listens there (each waypoint "
				    "of a host needs its own [waypoint] hbone_address)");
			log_error("waypoint: cannot listen on %s: %s%s",
			    sockaddr_str(&conf->waypoint.hbone_address, a, sizeof(a)), uv_strerror(rc),
			    hint);
			identity_unref(wp->id);
			free(wp->ns);
			free(wp->sa);
			free(wp);
			return rc;
		}
		hbone_pool_new(loop, &pc, &wp->pool);
	}
	uv_timer_init(loop, &wp->refresh);
	wp->refresh.data = wp;
	uv_timer_start(&wp->refresh, on_refresh, 1000, 1000);
	log_info("waypoint: %s (spiffe://%s/ns/%s/sa/%s) on %s", conf->waypoint.name,
	    conf->mesh.trust_domain, wp->ns, wp->sa,
	    sockaddr_str(&conf->waypoint.hbone_address, a, sizeof(a)));
	*out = wp;
	return 0;
}

int
waypoint_embed(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, const struct l7_host *host,
    struct waypoint **out)
{
	struct waypoint *wp = calloc(1, sizeof(*wp));

	*out = NULL;
	if (wp == NULL)
		return AMESH_ERR_NOMEM;
	wp->loop = loop;
	wp->conf = conf;
	wp->reg = reg;
	wp->ids = ids;
	wp->metrics = metrics;
	wp->embedded = true;
	wp->host = *host;
	wp->role = host->role;
	wp->idle_ms = host->idle_timeout_ms;
	wp->detect_ms = host->detect_ms;
	wp->pool = host->pool;
	wp->ns = strdup(host->ns);
	wp->sa = strdup(host->sa);
	wp->id = identity_store_get_sa(ids, host->ns, host->sa);
	if (wp->ns == NULL || wp->sa == NULL || wp->id == NULL) {
		waypoint_free(wp);
		return AMESH_ERR_NOTFOUND;
	}
	uv_timer_init(loop, &wp->refresh);
	wp->refresh.data = wp;
	uv_timer_start(&wp->refresh, on_refresh, 1000, 1000);
	*out = wp;
	return 0;
}

static void
part_done(void *arg)
{
	struct waypoint *wp = arg;

	if (--wp->parts == 0 && wp->done != NULL)
		wp->done(wp->done_arg);
}

static void
refresh_closed(uv_handle_t *h)
{
	part_done(h->data);
}

/* A sidecar's engine has drained when its last tunnel and mirror are gone: its timer (the
 * drain deadline by then) closes, and done runs from there. */
static void
embedded_idle_check(struct waypoint *wp)
{
	if (wp->embedded && wp->draining && wp->st.active == 0 && wp->mirrors_open == 0 &&
	    !uv_is_closing((uv_handle_t *)&wp->refresh)) {
		uv_timer_stop(&wp->refresh);
		uv_close((uv_handle_t *)&wp->refresh, refresh_closed);
	}
}

static void
on_drain_deadline(uv_timer_t *h)
{
	struct waypoint *wp = h->data;

	log_info("%s: drain timeout: resetting %zu L7 tunnels", wp->role, wp->st.active);
	waypoint_abort_all(wp);
}

/* Draining: clients are asked to go, as HTTP lets a server do. An HTTP/1.1 connection between
 * requests is closed (FIN), one in a request gets "Connection: close" on its answer and is closed
 * after it; an HTTP/2 one gets GOAWAY. What is left at the deadline is reset. */
static void
drain_tunnels(struct waypoint *wp)
{
	for (struct tun *t = wp->tuns; t != NULL; t = t->next) {
		if (t->closing || t->down == NULL)
			continue;
		if (t->mode == MODE_H2) {
			h2d_goaway(t->h2);
		} else if (t->mode == MODE_HTTP) {
			t->close_after = true;
			if (!t->in_request) {
				drop_up(t, false);
				shutdown_down(t);
			}
		}
	}
}

void
waypoint_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg)
{
	if (wp->draining)
		return;
	wp->draining = true;
	drain_tunnels(wp);
	wp->done = done;
	wp->done_arg = arg;
	uv_timer_stop(&wp->refresh);
	if (wp->embedded) {
		/* A sidecar's server and pool are its proxy's: it waits for its own tunnels, and
		 * resets them at the deadline. */
		wp->parts = 1;
		uv_timer_start(&wp->refresh, on_drain_deadline, timeout_ms, 0);
		embedded_idle_check(wp);
		return;
	}
	wp->parts = 3;
	uv_close((uv_handle_t *)&wp->refresh, refresh_closed);
	hbone_server_drain(wp->srv, timeout_ms, part_done, wp);
	hbone_pool_drain(wp->pool, timeout_ms, part_done, wp);
}

void
waypoint_free(struct waypoint *wp)
{
	if (wp == NULL)
		return;
	identity_unref(wp->id);
	free(wp->ns);
	free(wp->sa);
	free(wp);
}

void
waypoint_stats(const struct waypoint *wp, struct waypoint_stats *st)
{
	*st = wp->st;
}

json_t *
waypoint_stats_json(const struct waypoint *wp)
{
	const struct waypoint_stats *st = &wp->st;

	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
	    "tunnels", (json_int_t)st->tunnels, "tunnels_l4", (json_int_t)st->tunnels_l4,
	    "tunnels_h2", (json_int_t)st->tunnels_h2,
	    "requests", (json_int_t)st->requests, "denied", (json_int_t)st->denied,
	    "local_replies", (json_int_t)st->local_replies,
	    "retries", (json_int_t)st->retries, "timeouts", (json_int_t)st->timeouts,
	    "upstream_failures", (json_int_t)st->upstream_failures,
	    "upstream_reused", (json_int_t)st->upstream_reused,
	    "mirrors", (json_int_t)st->mirrors,
	    "mirrors_dropped", (json_int_t)st->mirrors_dropped,
	    "active", (json_int_t)st->active);
}

json_t *
waypoint_routes_json(const struct registry *r)
{
	json_t *routes = json_array();
	char target[320];

	for (size_t i = 0; r != NULL && i < r->n[REG_ROUTE]; i++) {
		const struct reg_route *rt = REG_ROUTES(r)[i];
		json_t *be = json_array();

		/* Each backend as written and what it resolved to, so a name that is both a service
		 * and a workload shows which one it means. */
		for (size_t j = 0; j < rt->backends.n; j++) {
			const struct reg_backend *b = &rt->backends_p[j];

			snprintf(target, sizeof(target), "%s/%s", b->service ? b->service->namespace :
			    b->workload->namespace, b->service ? b->service->h.name :
			    b->workload->h.name);
			json_array_append_new(be, json_pack("{s:s,s:i,s:s,s:s}", "name",
			    rt->backends.v[j].name, "weight", rt->backends.v[j].weight, "kind",
			    b->service ? "service" : "workload", "target", target));
		}
		json_array_append_new(routes, json_pack("{s:s,s:s,s:s,s:o,s:I,s:I}", "name",
		    rt->h.name, "namespace", rt->namespace, "service", rt->service, "backends", be,
		    "timeout_ms", (json_int_t)rt->timeout, "retries", (json_int_t)rt->retries));
	}
	return routes;
}

char *
waypoint_dump(struct waypoint *wp)
{
	struct registry *r = registry_holder_get(wp->reg);
	json_t *root = json_object();
	char *out;

	json_object_set_new(root, "waypoint", json_string(wp->conf->waypoint.name));
	json_object_set_new(root, "identity", json_string(wp->id ? wp->id->spiffe_id : ""));
	json_object_set_new(root, "routes", waypoint_routes_json(r));
	json_object_set_new(root, "stats", waypoint_stats_json(wp));
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	registry_unref(r);
	return out;
}
