/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The waypoint's internals shared by its HTTP/1.1 path (waypoint.c) and its HTTP/2 path (h2l7.c):
 * the tunnel a ztunnel opened to us (struct tun) and the helpers both paths use.
 */
#ifndef AMESH_L7_WAYPOINT_INT_H
#define AMESH_L7_WAYPOINT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hbone/hbone.h"
#include "l7/http1.h"
#include "l7/waypoint.h"

struct h2d;
struct mirror;

/* Request bodies up to this size are kept for retries; larger ones are not retried. */
#define WP_REPLAY_MAX (64u * 1024)
/* A kept upstream tunnel is closed after this long without a request. */
#define WP_UP_IDLE_MS 4000
/* A mirrored copy still open this long after it started is reset. */
#define WP_MIRROR_TIMEOUT_MS 10000
/* Mirrored requests in flight at once; more are not mirrored (mirrors_dropped). */
#define WP_MAX_MIRRORS 1024

#define WP_MARK_NONE 0

/* Bytes waiting for a stream that took less than offered. */
struct obuf {
	uint8_t *p;
	size_t len;
	bool busy, again; /* hbone_stream_write can call back into obuf_flush (on_writable) */
};

enum tun_mode { MODE_DETECT, MODE_HTTP, MODE_H2, MODE_L4 };
/* Whose tunnel: the waypoint's, or a sidecar's inbound (HBONE in, its app over TCP) or outbound
 * (its app's captured connection in, HBONE out). */
enum tun_side { SIDE_WAYPOINT, SIDE_IN, SIDE_OUT };

struct waypoint {
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	struct registry_holder *reg;
	struct identity_store *ids;
	struct metrics *metrics;
	char *ns, *sa;
	struct identity *id;
	struct hbone_server *srv;
	struct hbone_pool *pool;
	uv_timer_t refresh;
	bool draining;
	int parts; /* server, pool, refresh timer: each finishes the drain when it ends */
	void (*done)(void *);
	void *done_arg;
	struct waypoint_stats st;
	size_t mirrors_open;
	uint32_t rr;
	/* A sidecar's engine (waypoint_embed): no server of its own, the pool is the host's. */
	bool embedded;
	uint64_t idle_ms; /* a tunnel without a byte either way this long is reset (0: never) */
	/* A tunnel whose client has sent nothing that tells its protocol for this long is relayed
	 * at L4 (a server-first protocol: the client waits for the server's greeting); 0: never. */
	uint64_t detect_ms;
	struct l7_host host;
	const char *role; /* "waypoint" or "sidecar", for logs */
	struct tun *tuns; /* every tunnel, for waypoint_abort_all */
};

struct tun {
	struct waypoint *wp;
	struct tun *prev, *next;
	enum tun_side side;
	uint64_t last; /* loop time of its last byte either way, for the idle sweep */
	struct sockaddr_storage app, client; /* SIDE_IN: the app's address, and whom it sees */
	struct hbone_stream *down, *up;
	struct registry *reg;
	const struct reg_service *svc;       /* addressed by service (hostname or VIP) */
	const struct reg_workload *direct;   /* or a workload address */
	uint16_t port;                       /* the port the client asked for */
	char authority[300];
	char *peer_id, *forwarded, *baggage;
	const struct reg_workload *src_wl;
	enum tun_mode mode;
	uv_timer_t timer; /* the route's overall timeout */
	uv_timer_t wait;  /* fault delay and retry backoff */
	int timers_open;
	bool down_closed, down_eof, up_eof, closing, in_feed, down_shut_pending;

	/* bytes from the downstream stream not yet given to the parser (or to up, in L4 mode) */
	uint8_t *in;
	size_t in_len, in_unconsumed;
	struct obuf to_down, to_up;
	size_t up_unconsumed; /* bytes from up not yet returned to its window */

	/* HTTP: the request in flight */
	struct h1_parser *req_p, *resp_p;
	struct h1_parser *resp_dead; /* a dropped attempt's parser, freed when safe */
	const struct h1_head *req; /* valid while the request parser is paused */
	const struct reg_route *rt;
	const struct reg_workload *ep;
	uint16_t target;
	int attempt;
	bool in_request, req_body_done, req_has_body, resp_started, up_ready, close_after;
	bool l4_opened; /* istio_tcp_connections_opened_total counted */
	/* HTTP keep-alive upstream: the tunnel of the last exchange, kept while idle for the next
	 * request to the same endpoint and port. */
	const struct reg_workload *up_ep;
	uint16_t up_target;
	bool up_idle, reused, resp_keep_alive;
	bool up_answered; /* a byte came back on this attempt's tunnel */
	/* The request body as sent so far, kept for a retry while it fits WP_REPLAY_MAX. */
	uint8_t *replay;
	size_t replay_len;
	bool replay_ok, body_started;
	bool bp_paused; /* the request parser waits for upstream to take what it was given */
	bool upgraded;  /* the app answered an Upgrade request with 101: bytes from here on */
	bool down_chunked, up_chunked;
	char *rewritten; /* request target after rewrite.path_prefix */
	int status;
	const char *flags;
	uint64_t start, req_bytes, resp_bytes;
	char traceparent[64];
	bool add_traceparent;

	struct h2d *h2; /* MODE_H2: the HTTP/2 session on this tunnel (h2l7.c) */
	struct mirror *mirror; /* the copy of the request in flight, while its body passes */
};


/* Appends to b (bounded at 2 * WP_BUF); 0 or an AMESH_ERR_* code. */
int wp_obuf_add(struct obuf *b, const void *data, size_t len);
/* Moves as much of b into s as it takes. */
void wp_obuf_flush(struct obuf *b, struct hbone_stream *s);
uint32_t wp_rnd(void);
/* The endpoint for a request: an endpoint of svc (round robin), or t->direct when svc is NULL. */
const struct reg_workload *wp_pick_endpoint(struct tun *t, const struct reg_service *svc);
/* spiffe://TD/ns/NS/sa/SA of wl, or "unknown". */
void wp_principal(const struct tun *t, const struct reg_workload *wl, char *buf, size_t len);
/* Opens an HBONE tunnel, as the waypoint, to ep's ztunnel for port target. -ENOENT when ep has
 * no address; else hbone_pool_open's result. */
int wp_open_upstream(struct tun *t, const struct reg_workload *ep, uint16_t target,
    const char *traceparent, const struct hbone_stream_cb *cb, void *user,
    struct hbone_stream **out);
/* What routing and policy decided for one request, on either HTTP path. */
struct wp_verdict {
	const struct reg_route *rt;     /* NULL: the service's own endpoints (default route) */
	const struct reg_workload *ep;  /* where it goes (NULL: nowhere to go) */
	uint16_t target;                /* the application port there */
	int status;                     /* 0: forward (or redirect, when rt->redirect); else the
	                                   local reply's status, with body and flags */
	const char *body, *flags;
};
struct route_req;
/*
 * Route (Gateway API precedence), backend, endpoint and target port, L7 authorization against
 * that endpoint, then fault abort, for a request to t's service or workload. host is the
 * request's :authority or Host. A redirect route stops after choosing it (v->rt->redirect, status
 * 0): the caller answers it as its protocol can.
 */
void wp_decide(struct tun *t, const struct route_req *rq, const char *host, struct wp_verdict *v);

/* One finished request on either HTTP path: what its metrics and access-log record need. */
struct wp_request_log {
	const struct reg_route *rt;
	const struct reg_workload *ep;
	const char *method, *authority; /* NULL: "-", and the tunnel's authority */
	const char *path;               /* path_len bytes of it are logged (at most 511) */
	size_t path_len;
	const char *flags, *traceparent;
	int status;
	bool grpc;                      /* request_protocol "grpc", access-log record "grpc" */
	uint64_t start, req_bytes, resp_bytes;
};
/* istio_requests_total and the histograms (reporter "waypoint"), and the access-log record. */
void wp_request_telemetry(struct tun *t, const struct wp_request_log *q);

/*
 * A request starts: when the registry changed since the tunnel began (or since its last request),
 * the tunnel moves to the current snapshot, so that each request meets the policies and routes in
 * force. Its service, workload and client are found again by name; a kept upstream tunnel is let
 * go (its endpoint may be gone). The caller must hold no pointer into the old snapshot beyond the
 * request (an HTTP/2 request takes its own reference). False when what the tunnel addresses is no
 * longer in the registry: the tunnel then stays on its snapshot, and the caller refuses the
 * request.
 */
bool wp_tun_refresh_registry(struct tun *t);

/* Resets both sides of the tunnel; its downstream on_close frees it. */
void wp_tun_abort(struct tun *t);
/* Frees the tunnel once its downstream is closed and nothing of it is left open. */
void wp_tun_maybe_free(struct tun *t);

/* --- the HTTP/2 path (h2l7.c) --- */

/* True when p starts with (a prefix of) the HTTP/2 client preface. */
bool h2d_preface(const uint8_t *p, size_t n, bool *complete);
/* Takes over t (MODE_H2): t->in holds the bytes received so far, which it consumes. 0 or -1. */
int h2d_start(struct tun *t);
void h2d_on_data(struct h2d *d, const uint8_t *data, size_t len);
void h2d_on_eof(struct h2d *d);
void h2d_on_writable(struct h2d *d);
/* Draining: GOAWAY, so the client opens no more requests on this tunnel; those begun finish. */
void h2d_goaway(struct h2d *d);
/* The downstream tunnel is gone: every request is cancelled. */
void h2d_on_close(struct h2d *d);
/* True when nothing of d is left open (requests, timers, upstream tunnels). */
bool h2d_idle(const struct h2d *d);
void h2d_free(struct h2d *d);

#endif
