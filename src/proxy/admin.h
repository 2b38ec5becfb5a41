/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host endpoints of a proxy role (DESIGN.md section 2): admin on [ztunnel] admin_address
 * (GET /config_dump, GET|POST /logging?level=L, POST /quitquitquit), Prometheus GET /metrics on
 * metrics_address, GET /healthz/ready on readiness_address (200 once serving, 503 while starting
 * or draining). /config_dump shows the registry snapshot, the enrolled workloads, the identities
 * with their expiry (never keys) and the pool state.
 */
#ifndef AMESH_PROXY_ADMIN_H
#define AMESH_PROXY_ADMIN_H

#include <stdbool.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"
#include "proxy/proxy.h"

struct admin;
struct identity_store;
struct metrics;

int admin_start(uv_loop_t *loop, const struct amesh_conf *conf, const struct conf_proxy *pc,
    struct proxy *px, struct identity_store *ids, struct registry_holder *reg,
    struct metrics *metrics, void (*quit)(void *arg), void *quit_arg, struct admin **out);
void admin_set_ready(struct admin *a, bool ready);
/* Closes the listeners (asynchronously, on the loop). */
void admin_stop(struct admin *a);
/* After the loop has run the closes. Accepts NULL. */
void admin_free(struct admin *a);
/* The /config_dump document (JSON), malloc'd. */
char *admin_config_dump(struct proxy *px, struct identity_store *ids,
    struct registry_holder *reg);

#endif
