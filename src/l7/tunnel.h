/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L7 engine's insides shared by its files: the engine (struct waypoint, engine.c), the tunnel
 * a client opened to it (struct tun) and the table through which the tunnel core (core.c) drives
 * the protocol it detected (struct l7_proto_ops: proto-h1.c, proto-h2.c, proto-l4.c), and the
 * tunnel services (tunnel.c) every protocol module uses.
 *
 * Who calls whom (never back up except through a pointer in an ops table or a callback such as
 * wp->gone):
 *   engine.c -> core.c -> proto-h1.c, proto-h2.c, proto-l4.c (by their ops tables)
 *   proto-h1.c -> proto-l4.c (a WebSocket upgrade hands the tunnel over), mirror.c
 *   proto-h1.c, proto-h2.c -> pipeline.c -> decide.c (proto-l4.c -> decide.c)
 *   all of them -> tunnel.c, reqlog.c (which call none of them)
 */
#ifndef AMESH_L7_TUNNEL_H
#define AMESH_L7_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "hbone/hbone.h"
#include "l7/decide.h"
#include "l7/waypoint.h"

/* Request bodies up to this size are kept for retries; larger ones are not retried. */
#define WP_REPLAY_MAX (64u * 1024)
/* A kept upstream tunnel is closed after this long without a request. */
#define WP_UP_IDLE_MS 4000
/* A mirrored copy still open this long after it started is reset. */
#define WP_MIRROR_TIMEOUT_MS 10000
/* Mirrored requests in flight at once; more are not mirrored (mirrors_dropped). */
#define WP_MAX_MIRRORS 1024
/* The most a tunnel holds for one direction: windows keep it under WP_BUF, so reaching this is a
 * peer breaking flow control (the append fails, AMESH_ERR_TOOLONG). */
#define WP_QUEUE_MAX (2 * WP_BUF)

struct metric_counter;
struct worker;

/* Bytes waiting for a stream that took less than offered. */
struct l7_sendq {
	struct buf b;
	bool busy, again; /* hbone_stream_write can call back into l7_sendq_flush (on_writable) */
};

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
	bool drain_idle_close;  /* the drain's grace is over: idle connections are closed */
	uint64_t drain_left_ms; /* a sidecar's drain deadline after the grace */
	int parts; /* server, pool, refresh timer: each finishes the drain when it ends */
	void (*done)(void *);
	void *done_arg;
	/* A tunnel or a mirror ended: the engine sees whether its drain is over (engine.c). */
	void (*gone)(struct waypoint *wp);
	struct waypoint_stats st;
	size_t mirrors_open;
	struct lb *lb; /* picks a service's endpoint (net/lb.h), skipping one that failed to connect */
	/* A sidecar's engine (waypoint_embed): no server of its own, the pool is the host's. */
	bool embedded;
	uint64_t idle_ms; /* a tunnel without a byte either way this long is reset (0: never) */
	/* A tunnel whose client has sent nothing that tells its protocol for this long is relayed
	 * at L4 (a server-first protocol: the client waits for the server's greeting); 0: never. */
	uint64_t detect_ms;
	/* An HTTP/1.1 request head not whole this long after its first byte is answered 408 and the
	 * connection closed (slowloris); 0: never. */
	uint64_t header_ms;
	struct l7_host host;
	const char *role; /* "waypoint" or "sidecar", for logs */
	struct tun *tuns; /* every tunnel, for waypoint_abort_all */
	/*
	 * Workers ([waypoint] workers, core/worker.h): worker 0's engine, the front, owns the
	 * listener and the other workers' engines (peers); a peer's server only adopts what the
	 * front hands it, and it shares the front's balancer (lb_ref) and connection count. Each
	 * engine is only ever touched from its own thread (the front asks a peer with worker_call).
	 * With one worker, wk is NULL and npeers 0.
	 */
	struct worker *wk;
	struct waypoint **peers;
	unsigned npeers;
	struct waypoint *front; /* a peer: worker 0's engine */
	unsigned index;         /* its worker's */
	unsigned rr;            /* front: the worker for the next connection */
	size_t conns;           /* front: HBONE connections open on every worker (atomic) */
	size_t active_all;      /* front: tunnels open on every worker (atomic) */
	/* With workers, the count of tunnels that max_connections bounds: the front's active_all,
	 * shared by every worker's engine (each of their tunnels comes through l7_accept_hbone).
	 * NULL: st.active alone. */
	size_t *active_shared;
	uint64_t accepted;      /* HBONE connections handed to this worker */
	struct metric_counter *m_conns; /* amesh_worker_connections_total{worker="N"} */
	unsigned peers_left;    /* front, draining: peers not drained yet */
	bool self_drained;      /* front, draining: its own engine is */
	void (*user_done)(void *); /* front: waypoint_drain's done, once every worker drained */
	void *user_arg;
};

struct tun;

/*
 * A protocol spoken inside a tunnel. The core calls these and never asks which protocol it holds;
 * t->ps is the protocol's own state, which start creates and free releases.
 */
struct l7_proto_ops {
	const char *name;
	/* Takes over t: t->in holds what the client sent so far, which the protocol takes. 0, or an
	 * error (nothing of the protocol is left: the core resets the tunnel). The protocol may have
	 * reset the tunnel itself (a policy denial): then it returns 0. */
	int (*start)(struct tun *t);
	/* Bytes from the client (they count against its window until hbone_stream_consumed). */
	void (*on_data)(struct tun *t, const uint8_t *data, size_t len);
	/* The client ended its side (t->down_eof is set). */
	void (*on_eof)(struct tun *t);
	/* The downstream stream takes bytes again. */
	void (*on_writable)(struct tun *t);
	/* The downstream stream is gone: everything in flight is cancelled. */
	void (*on_close)(struct tun *t);
	/* The core is about to reset the client's stream: upstream goes first. */
	void (*abort)(struct tun *t);
	/* The engine drains: ask the client to go (GOAWAY, Connection: close...). */
	void (*drain)(struct tun *t);
	/* True when nothing of the protocol is left open, so t may be freed. */
	bool (*idle)(const struct tun *t);
	/* The tunnel ends: its last telemetry, and the state freed. */
	void (*free)(struct tun *t);
};

extern const struct l7_proto_ops l7_h1_ops, l7_h2_ops, l7_l4_ops;

/* The downstream stream, as far as we are concerned. */
enum tun_state {
	TUN_OPEN,    /* the client's stream is there */
	TUN_CLOSING, /* we reset it (or it is going): nothing more is processed */
	TUN_CLOSED,  /* its on_close ran: the tunnel goes once the protocol is idle */
};

struct tun {
	struct waypoint *wp;
	struct tun *prev, *next;
	enum l7_side side;
	enum tun_state state;
	/* The protocol the core detected (NULL until then) and its state. */
	const struct l7_proto_ops *proto;
	void *ps;
	uint64_t last; /* loop time of its last byte either way, for the idle sweep */
	struct sockaddr_storage app, client; /* L7_SIDE_IN: the app's address, and whom it sees */
	struct hbone_stream *down;
	struct registry *reg;
	const struct reg_service *svc;       /* addressed by service (hostname or VIP) */
	const struct reg_workload *direct;   /* or a workload address */
	uint16_t port;                       /* the port the client asked for */
	char authority[300];
	char *peer_id, *forwarded, *baggage;
	const struct reg_workload *src_wl;
	/* Response flags of a tunnel relayed as bytes (its TCP telemetry): DENY, SI (idle). */
	const char *flags;
	/* Detection's deadline, then the protocol's to use (HTTP/1.1: the route timeout, and the
	 * fault delay, retry backoff and idle upstream). Closed when the tunnel ends. */
	uv_timer_t timer, wait;
	int timers_open;
	bool down_eof;     /* the client ended its side */
	bool shut_pending; /* our FIN follows once t->out is written */
	/* Bytes from the client the protocol has not taken yet (bounded by its window). */
	struct buf in;
	/* Bytes for the client. */
	struct l7_sendq out;
};

/* --- the tunnel core (core.c) --- */

/* A CONNECT to the waypoint's HBONE server: answered here (200, or 400/503), and a tunnel
 * begins. */
void l7_accept_hbone(struct waypoint *wp, struct hbone_stream *s, const struct hbone_request *req);

/* --- tunnel services (tunnel.c) --- */

void l7_sendq_init(struct l7_sendq *q);
/* Appends to q (at most WP_QUEUE_MAX held); 0 or an AMESH_ERR_* code (nothing appended). */
int l7_sendq_put(struct l7_sendq *q, const void *data, size_t len);
size_t l7_sendq_len(const struct l7_sendq *q);
/* Moves as much of q into s as it takes (s NULL: nothing). */
void l7_sendq_flush(struct l7_sendq *q, struct hbone_stream *s);
/* Frees what q holds. */
void l7_sendq_reset(struct l7_sendq *q);

/* Writes t->out to the client; our FIN goes once all is written and t->shut_pending is set. */
void tun_flush_down(struct tun *t);

uint32_t wp_rnd(void);
/* Opens an HBONE tunnel, as the waypoint, to ep's ztunnel for port target (a sidecar's inbound:
 * TCP to its app). -ENOENT when ep has no address; else hbone_pool_open's result. */
int wp_open_upstream(struct tun *t, const struct reg_workload *ep, uint16_t target,
    const char *traceparent, const struct hbone_stream_cb *cb, void *user,
    struct hbone_stream **out);

/*
 * A request starts: when the registry changed since the tunnel began (or since its last request),
 * the tunnel moves to the current snapshot, so that each request meets the policies and routes in
 * force. Its service, workload and client are found again by name. The caller must hold no pointer
 * into the old snapshot beyond the request (an HTTP/2 request takes its own reference). False when
 * what the tunnel addresses is no longer in the registry: the tunnel then stays on its snapshot,
 * and the caller refuses the request. *moved: the tunnel changed snapshot (a kept upstream tunnel
 * should be let go: its endpoint may be gone).
 */
bool wp_tun_refresh_registry(struct tun *t, bool *moved);

/* Resets both sides of the tunnel; its downstream on_close frees it. */
void wp_tun_abort(struct tun *t);
/* Frees the tunnel once its downstream is closed and nothing of it is left open. */
void wp_tun_maybe_free(struct tun *t);

/* --- telemetry (reqlog.c) --- */

/* spiffe://TD/ns/NS/sa/SA of wl, or "unknown". */
void wp_principal(const struct tun *t, const struct reg_workload *wl, char *buf, size_t len);
/* Istio's reporter for t: "waypoint", or a sidecar's "destination" / "source". */
const char *wp_reporter(const struct tun *t);
/* connection_security_policy as Istio's reporter on t's side says it. */
const char *wp_security_policy(const struct tun *t);

/* One finished request on either HTTP path: what its metrics and access-log record need. */
struct wp_request_log {
	const struct reg_route *rt;
	const struct reg_workload *ep;
	const char *method, *authority; /* NULL: "-", and the tunnel's authority */
	const char *path;               /* path_len bytes of it are logged (at most 511) */
	size_t path_len;
	const char *flags, *traceparent;
	int status;                     /* the HTTP status the client got */
	bool grpc;                      /* request_protocol "grpc", access-log record "grpc" */
	int grpc_status;                /* a gRPC local reply's grpc-status (access-log field
					   grpc_status); -1: not one */
	uint64_t start, req_bytes, resp_bytes;
};
/* istio_requests_total and the histograms (reporter "waypoint"), and the access-log record. */
void wp_request_telemetry(struct tun *t, const struct wp_request_log *q);

/* --- the protocols (proto-h2.c) --- */

/* True when p starts with (a prefix of) the HTTP/2 client preface. */
bool h2_preface(const uint8_t *p, size_t n, bool *complete);

#endif
