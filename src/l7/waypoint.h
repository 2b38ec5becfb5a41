/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The waypoint's data path (DESIGN.md sections 1 and 3, issue "waypoint"): HBONE in, as the
 * registry's [waypoint "NAME"]; the inner stream is HTTP/1.1 (proto-h1.c: routes, L7
 * authorization, timeouts, retries, faults, request telemetry), HTTP/2 with prior knowledge
 * (proto-h2.c: the same per stream, gRPC included, without retries) or, for anything else, relayed
 * at L4 (proto-l4.c); then HBONE out, as the waypoint, to the chosen endpoint's ztunnel.
 *
 * Bounds: at most [waypoint] max_connections tunnels (with workers, the whole waypoint's); per
 * HTTP/1.1 tunnel one request at a time (pipelined requests wait), per HTTP/2 tunnel 100 streams;
 * bytes held for each direction at most WP_BUF (HTTP/2: one stream window) - past it the sending
 * side's HTTP/2 window is not returned, so the sender stops; request heads at most H1_MAX_HEAD
 * (HTTP/2: 16 KiB).
 */
#ifndef AMESH_L7_WAYPOINT_H
#define AMESH_L7_WAYPOINT_H

#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"

#define WP_BUF (256u * 1024)

struct hbone_pool;
struct hbone_request;
struct hbone_stream;
struct identity_store;
struct metrics;
struct waypoint;

struct waypoint_stats {
	uint64_t tunnels, tunnels_l4, tunnels_h2, requests, denied, local_replies, retries, timeouts,
	    upstream_failures, upstream_reused, mirrors, mirrors_dropped;
	uint64_t l4_resets; /* L4 tunnels reset because bytes could not be queued (l4_put) */
	uint64_t header_timeouts; /* HTTP/1.1 request heads not whole in request_header_timeout */
	uint64_t h2_floods; /* h2c clients sent GOAWAY for too many control frames (hbone/h2.h) */
	size_t active;
};

/*
 * Starts the waypoint named [waypoint] name: its identity must be in the identity store. With
 * workers > 1 (at most WORKER_MAX), the engine runs on that many event loops: loop (worker 0, the
 * caller's) listens and accepts, and hands each HBONE connection round robin to a worker, itself
 * included (amesh-waypoint(8) WORKERS). The other workers' threads end with waypoint_free.
 */
int waypoint_start(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, unsigned workers, struct waypoint **out);
/*
 * The same engine inside a sidecar, for the one workload it serves; the proxy hands it
 * connections (waypoint_take_inbound, waypoint_take_outbound). Requests get what the waypoint
 * gives them, split by side as Envoy sidecars do: inbound, L7 authorization against the workload
 * and request metrics with reporter "destination"; outbound, the routes of the service called
 * (backends, timeouts, retries, faults, mirrors) and reporter "source".
 */
struct l7_host {
	const char *role;     /* "sidecar", in logs */
	const char *workload; /* its registry name */
	const char *ns, *sa;  /* its identity: outbound HBONE is opened as it */
	struct hbone_pool *pool; /* for outbound HBONE; not owned */
	/* A socket inside the workload's namespace for a connection to its app, bound to client's
	 * address when it can be (so the app sees its real peer). An fd or -errno. */
	int (*app_socket)(void *arg, const struct sockaddr_storage *client, int family);
	uint64_t idle_timeout_ms; /* a tunnel idle both ways this long is reset (0: never) */
	uint64_t detect_ms;       /* a client silent this long is relayed at L4 (0: never) */
	uint64_t header_ms;       /* an HTTP/1.1 request head must be whole this soon (0: never) */
	/* A tunnel ended (the host counts them for its drain). */
	void (*tun_gone)(void *arg);
	void *arg;
};
int waypoint_embed(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, const struct l7_host *host,
    struct waypoint **out);
/* An HBONE tunnel to the workload, admitted by authz_l4_prefilter: answered 200 here, its requests
 * delivered to app (the address and port the CONNECT named) from client. svc_host: the service the
 * caller addressed (its baggage), or NULL. 0, or when it could not be taken (the caller answers
 * the CONNECT then): -EAGAIN (no registry yet, or draining), AMESH_ERR_NOTFOUND (the workload is
 * not in the registry) or AMESH_ERR_NOMEM. */
int waypoint_take_inbound(struct waypoint *wp, struct hbone_stream *s,
    const struct hbone_request *req, const struct sockaddr_storage *client,
    const struct sockaddr_storage *app, const char *svc_host);
/* A connection the workload made (accepted fd, from src) to service svc_host's port: routed here.
 * 0, or (fd is closed, the connection reset) -EAGAIN (no registry yet, or draining),
 * AMESH_ERR_NOTFOUND (the service or the workload is not in the registry), AMESH_ERR_NOMEM or
 * hbone_tcp_accepted's code. */
int waypoint_take_outbound(struct waypoint *wp, int fd, const struct sockaddr_storage *src,
    const char *svc_host, uint16_t port);
/* Resets every tunnel (a drain that ran out of time). */
void waypoint_abort_all(struct waypoint *wp);
/* Tunnels open now. */
size_t waypoint_active(const struct waypoint *wp);

/* GOAWAY, then close what is left after timeout_ms; done runs when all is closed (with workers:
 * on every worker; done runs on the caller's loop, which the engine then lets end). */
void waypoint_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg);
/* After the drain: frees the engine, and stops and frees every other worker's. Accepts NULL. */
void waypoint_free(struct waypoint *wp);
/* The counters summed over every worker (asked on their own loops). */
void waypoint_stats(const struct waypoint *wp, struct waypoint_stats *st);
/* The counters of waypoint_stats as a JSON object (config dumps of the waypoint and the sidecar). */
struct json_t;
struct json_t *waypoint_stats_json(const struct waypoint *wp);
/*
 * The routes of registry r (NULL: none) as a new JSON array, each backend with the kind
 * ("service" or "workload") and "NS/NAME" it resolved to (config dumps of every role).
 */
struct json_t *waypoint_routes_json(const struct registry *r);
/* The routes of the registry snapshot in force, as JSON (admin /config_dump); malloc'd. */
char *waypoint_dump(struct waypoint *wp);

#endif
