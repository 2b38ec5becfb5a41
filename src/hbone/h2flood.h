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

/*
 * What we send on a pooled HBONE connection is counted by the peer's bucket above (its SETTINGS,
 * PING and RST_STREAM frames): a connection shared by many clients must never reach it, or the
 * peer sends it GOAWAY and every client's streams on it fail. Our RST_STREAMs on it use at most
 * half of it (the other half covers our few SETTINGS and PINGs and a peer that reads our frames
 * in bursts); a reset that finds this bucket empty waits for a token (h2.c).
 */
#define H2_RELAY_RST_BURST (H2_FLOOD_BURST / 2)
#define H2_RELAY_RST_RATE (H2_FLOOD_RATE / 2)

struct h2_flood {
	uint64_t tokens; /* in thousandths of a frame */
	uint64_t last;   /* ms of the last refill; 0: full */
};

/* Takes one token at now (ms) from a bucket of burst tokens refilled by rate a second; false
 * when it is empty. */
static inline bool
h2_bucket_take(struct h2_flood *fl, uint64_t now, unsigned burst, unsigned rate)
{
	if (fl->last == 0) {
		fl->tokens = burst * 1000ull;
		fl->last = now ? now : 1;
	} else if (now > fl->last) {
		fl->tokens += (now - fl->last) * rate;
		if (fl->tokens > burst * 1000ull)
			fl->tokens = burst * 1000ull;
		fl->last = now;
	}
	if (fl->tokens < 1000)
		return false;
	fl->tokens -= 1000;
	return true;
}

/* Milliseconds until a bucket refilled by rate a second has a token again (1 at least). */
static inline uint64_t
h2_bucket_wait_ms(const struct h2_flood *fl, unsigned rate)
{
	uint64_t need = fl->tokens >= 1000 ? 0 : 1000 - fl->tokens;

	return need == 0 ? 1 : (need + rate - 1) / rate;
}

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
	return !h2_bucket_take(fl, now, H2_FLOOD_BURST, H2_FLOOD_RATE);
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
