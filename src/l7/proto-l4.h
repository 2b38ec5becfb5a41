/* SPDX-License-Identifier: Apache-2.0 */
/* The L4 relay module's entry for a tunnel that was HTTP/1.1 until a WebSocket upgrade. */
#ifndef AMESH_L7_PROTO_L4_H
#define AMESH_L7_PROTO_L4_H

#include "l7/tunnel.h"

/* What an HTTP/1.1 tunnel hands over when its app switched protocols (101). */
struct l4_handover {
	struct hbone_stream *up;          /* the request's upstream tunnel, answered (taken) */
	const struct reg_workload *ep;
	uint16_t target;
	const char *flags;                /* the upgrade request's response flags */
	const uint8_t *to_down;           /* what came from the app after the 101's head */
	size_t to_down_len;
	struct l7_sendq *to_up;           /* bytes for the app not yet written (taken) */
	size_t up_unconsumed;             /* bytes from up not yet returned to its window */
	/* The HTTP/1.1 state, freed with the tunnel (a parser of it may be on the stack). */
	void *prior;
	void (*prior_free)(void *prior);
};

/*
 * t goes on as an L4 relay (t->proto, t->ps replaced): what the client sent after its request head
 * waits in t->in. 0; or an error (nothing taken: the caller resets the tunnel).
 */
int l4_take_upgraded(struct tun *t, const struct l4_handover *h);

#endif
