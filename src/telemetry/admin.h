/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host endpoints every role serves (DESIGN.md section 2), written once: admin on
 * admin_address (GET /config_dump, GET|POST /logging?level=L, POST /quitquitquit, GET
 * /healthz/ready), Prometheus GET /metrics (and /stats/prometheus) on metrics_address, GET
 * /healthz/ready on readiness_address. What differs between roles comes in as admin_ops: the
 * config dump, the readiness predicate, gauges to refresh before a scrape, and what quitting does.
 *
 * Readiness: 503 "not ready" until admin_set_ready(true) and after /quitquitquit or admin_stop;
 * in between the role's ready() decides: 200 "ready", or 503 with the reasons it wrote ("not
 * ready" when it wrote none).
 */
#ifndef AMESH_TELEMETRY_ADMIN_H
#define AMESH_TELEMETRY_ADMIN_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

struct admin;
struct metrics;

/* The role's parts; each is called on the loop thread with admin_cfg.arg. */
struct admin_ops {
	/* The /config_dump document (JSON), malloc'd; NULL answers 500. */
	char *(*config_dump)(void *arg);
	/* Whether the role serves now. When not, it may write why, one line each, to why (NULL when
	 * there was no memory for it). NULL: always ready. */
	bool (*ready)(void *arg, FILE *why);
	/* Before each /metrics scrape: set the role's gauges. May be NULL. */
	void (*refresh_metrics)(void *arg);
	/* POST /quitquitquit, once the answer "draining" is made: stop the role. It is called from
	 * inside the HTTP handler: it must not close the admin listeners there (admin_stop) but
	 * later, from the loop (a timer, a close callback). */
	void (*quit)(void *arg);
};

struct admin_cfg {
	const char *role; /* in logs: "ztunnel", "sidecar", "waypoint" */
	const struct sockaddr_storage *admin_address, *metrics_address, *readiness_address;
	struct metrics *metrics; /* rendered on /metrics */
	const struct admin_ops *ops;
	void *arg;
};

/*
 * Listens on the three addresses (cfg is copied; what it points to must outlive the admin). Returns 0,
 * or the negative libuv code of the listen that failed (logged, with the address); then *out
 * still holds the admin, its listeners closing: admin_free it after the loop ran the closes.
 * Abort on out of memory (startup).
 */
int admin_start(uv_loop_t *loop, const struct admin_cfg *cfg, struct admin **out);
/* Readiness from now on: false until called with true. */
void admin_set_ready(struct admin *a, bool ready);
/* Not ready from now on; closes the listeners (asynchronously, on the loop). Accepts NULL. */
void admin_stop(struct admin *a);
/* After the loop has run the closes. Accepts NULL. */
void admin_free(struct admin *a);

#endif
