/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The waypoint's data path (DESIGN.md sections 1 and 3, issue "waypoint"): HBONE in, as the
 * registry's [waypoint "NAME"]; the inner stream is HTTP/1.1 (routes, L7 authorization, timeouts,
 * retries, faults, request telemetry), HTTP/2 with prior knowledge (h2l7.c: the same per stream,
 * gRPC included, without retries) or, for anything else, relayed at L4; then HBONE out, as the
 * waypoint, to the chosen endpoint's ztunnel.
 *
 * Bounds: at most [waypoint] max_connections tunnels; per HTTP/1.1 tunnel one request at a time
 * (pipelined requests wait), per HTTP/2 tunnel 100 streams; bytes held for each direction at most
 * WP_BUF (HTTP/2: one stream window) - past it the sending side's HTTP/2 window is not returned,
 * so the sender stops; request heads at most H1_MAX_HEAD (HTTP/2: 16 KiB).
 */
#ifndef AMESH_L7_WAYPOINT_H
#define AMESH_L7_WAYPOINT_H

#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"

#define WP_BUF (256u * 1024)

struct identity_store;
struct metrics;
struct waypoint;

struct waypoint_stats {
	uint64_t tunnels, tunnels_l4, tunnels_h2, requests, denied, local_replies, retries, timeouts,
	    upstream_failures, upstream_reused, mirrors, mirrors_dropped;
	size_t active;
};

/* Starts the waypoint named [waypoint] name: its identity must be in the identity store. */
int waypoint_start(uv_loop_t *loop, const struct amesh_conf *conf, struct registry_holder *reg,
    struct identity_store *ids, struct metrics *metrics, struct waypoint **out);
/* GOAWAY, then close what is left after timeout_ms; done runs when all is closed. */
void waypoint_drain(struct waypoint *wp, uint64_t timeout_ms, void (*done)(void *arg), void *arg);
void waypoint_free(struct waypoint *wp);
void waypoint_stats(const struct waypoint *wp, struct waypoint_stats *st);
/* The routes of the registry snapshot in force, as JSON (admin /config_dump); malloc'd. */
char *waypoint_dump(struct waypoint *wp);

#endif
