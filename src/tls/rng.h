/* SPDX-License-Identifier: Apache-2.0 */
/* The process's one random generator (CTR-DRBG over the system entropy), safe to use from any thread. */
#ifndef AMESH_TLS_RNG_H
#define AMESH_TLS_RNG_H

#include <stddef.h>

/* Seeds on first use; aborts if the system has no entropy source (nothing secure can run then). */
void *rng_ctx(void);
/* mbedTLS-style f_rng callback for rng_ctx(). */
int rng_fill(void *ctx, unsigned char *out, size_t len);
/* A W3C traceparent for a new trace into buf (56 bytes and the NUL): version 00, random trace and
 * span ids, sampled. For the proxies that start traces (ztunnel flows, the waypoint). */
void rng_traceparent(char *buf, size_t len);

#endif
