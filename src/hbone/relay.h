/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The relay: a two-way pump between a TCP connection (side A) and either an HBONE stream or a
 * second TCP connection (side B). Bounded: each direction holds at most buffer_size bytes read and
 * not yet accepted by the other side (plus, toward an HBONE stream, the stream's send buffer, and
 * from it, the HTTP/2 window); past that it stops reading. FIN maps to FIN or END_STREAM, a reset to
 * a reset or RST_STREAM, both ways. An idle timeout resets both sides.
 */
#ifndef AMESH_HBONE_RELAY_H
#define AMESH_HBONE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct hbone_stream;
struct relay;

struct relay_stats {
	uint64_t a_to_b; /* bytes read from A and delivered to B */
	uint64_t b_to_a;
	bool reset;      /* ended by a reset, error or timeout rather than two FINs */
	bool idle_timeout;
};

struct relay_cfg {
	size_t buffer_size;       /* per direction; 0: 64 KiB */
	uint64_t idle_timeout_ms; /* 0: none */
	/* Called once when both sides are closed; the relay is freed right after. */
	void (*on_done)(struct relay *r, const struct relay_stats *st, void *user);
	void *user;
};

/* A relay whose side A is a TCP handle the caller accepts or connects into (relay_tcp_a). */
struct relay *relay_new(uv_loop_t *loop, const struct relay_cfg *cfg);
uv_tcp_t *relay_tcp_a(struct relay *r);
uv_tcp_t *relay_tcp_b(struct relay *r);
/* Starts pumping between A and the HBONE stream s (its callbacks are taken over). */
void relay_start_hbone(struct relay *r, struct hbone_stream *s);
/* Starts pumping between A and B, both connected. */
void relay_start_tcp(struct relay *r);
/* Gives up before starting (or at any time): resets both sides; on_done follows. */
void relay_abort(struct relay *r);
/* Before starting: gives side A's connection away (a duplicate of its fd) and closes the relay
 * without touching the connection; on_done follows. On failure (-errno) the relay is aborted. */
int relay_hand_off(struct relay *r);
void *relay_user(const struct relay *r);
/* Bytes held right now in the relay's own buffers (for tests of the bounds). */
size_t relay_buffered(const struct relay *r);

#endif
