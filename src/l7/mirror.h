/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mirroring (a route's mirror): a copy of an HTTP/1.1 or HTTP/2 request (gRPC calls included),
 * fire and forget, to an endpoint of the mirror service, with Host (:authority) "HOST-shadow" as
 * Envoy sends it. A copy lives on its own once started: its tunnel (an HTTP/2 copy speaks h2c in
 * it, as its request did), the head and the body as they pass (at most WP_BUF waiting; past that
 * the copy is dropped, never the request), the answer read and discarded.
 */
#ifndef AMESH_L7_MIRROR_H
#define AMESH_L7_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"
#include "l7/http1.h"

struct tun;
struct mirror;

/*
 * Starts the copy of request req (head as received; target: the target sent upstream, NULL: as
 * received) of tunnel t to rt's mirror service. The caller keeps the copy in *slot while it feeds
 * the body (l7_mirror_body); the copy clears *slot itself if it goes first. Dropped (counted in
 * mirrors_dropped): *slot stays NULL.
 */
void l7_mirror_start(struct tun *t, const struct reg_route *rt, const struct h1_head *req,
    const char *target, const char *traceparent, struct mirror **slot);
/* The same for an HTTP/2 request: method, authority (as received), path (as sent upstream) and
 * its other fields (n of them; pseudo-fields are skipped). */
struct hdr;
void l7_mirror_h2_start(struct tun *t, const struct reg_route *rt, const char *method,
    const char *authority, const char *path, const struct hdr *fields, size_t n,
    const char *traceparent, struct mirror **slot);
/* A piece of the request body for the copy too (end: the last); a copy that falls behind is
 * dropped. */
void l7_mirror_body(struct mirror **slot, const uint8_t *data, size_t len, bool end);
/* Detaches the copy in *slot: complete, it finishes on its own; cut short, it is reset. */
void l7_mirror_detach(struct mirror **slot, bool complete);

#endif
