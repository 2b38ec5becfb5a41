/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/2 floods from a peer, for every server session (the HBONE listener's and the waypoint's or
 * sidecar's h2c): SETTINGS, PING, PRIORITY and RST_STREAM frames cost us work and answers
 * without a request to show for them (CVE-2019-9512, -9513, -9515; rapid reset, CVE-2023-44487,
 * is HEADERS then RST_STREAM in a loop). Each connection has a token bucket: H2_FLOOD_BURST frames
 * at first, H2_FLOOD_RATE more each second; the frame that finds it empty ends the connection with
 * GOAWAY ENHANCE_YOUR_CALM. nghttp2's own limits are set with it (h2_flood_options).
 */
#ifndef AMESH_HBONE_H2FLOOD_H
#define AMESH_HBONE_H2FLOOD_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

#define H2_FLOOD_BURST 1000
#define H2_FLOOD_RATE 100 /* a second */
/* CONTINUATION frames after one HEADERS (nghttp2 ends the connection past it; CVE-2024-28182) */
#define H2_MAX_CONTINUATIONS 8

struct h2_flood {
	uint64_t tokens; /* in thousandths of a frame */
	uint64_t last;   /* ms of the last refill; 0: full */
};

/* Counts frame f received at now (ms); true when the peer is over the limit. */
static inline bool
h2_flood_over(struct h2_flood *fl, const nghttp2_frame *f, uint64_t now)
{
	switch (f->hd.type) {
	case NGHTTP2_PING:
	case NGHTTP2_SETTINGS:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			return false;
		break;
	case NGHTTP2_PRIORITY:
	case NGHTTP2_RST_STREAM:
		break;
	default:
		return false;
	}
	if (fl->last == 0) {
		fl->tokens = H2_FLOOD_BURST * 1000ull;
		fl->last = now ? now : 1;
	} else if (now > fl->last) {
		fl->tokens += (now - fl->last) * H2_FLOOD_RATE;
		if (fl->tokens > H2_FLOOD_BURST * 1000ull)
			fl->tokens = H2_FLOOD_BURST * 1000ull;
		fl->last = now;
	}
	if (fl->tokens < 1000)
		return true;
	fl->tokens -= 1000;
	return false;
}

/* nghttp2's limits of a server session: its own rapid reset bucket only as a backstop (twice
 * ours, so that ours says ENHANCE_YOUR_CALM first), CONTINUATION frames, SETTINGS entries. */
static inline void
h2_flood_options(nghttp2_option *opt)
{
	nghttp2_option_set_stream_reset_rate_limit(opt, 2 * H2_FLOOD_BURST, 2 * H2_FLOOD_RATE);
	nghttp2_option_set_max_continuations(opt, H2_MAX_CONTINUATIONS);
	nghttp2_option_set_max_settings(opt, 32);
}

#endif
