/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: HBONE server input (src/hbone/h2.c). A whole HTTP/2 byte stream from a client,
 * after its TLS, goes into a server session: nghttp2, then our callbacks (CONNECT validation,
 * early tunnel bytes, flow control, stream ends). There is no TLS: the binary is linked with
 * -Wl,--wrap for the tls_conn_* calls h2.c makes, and the wrappers below stand in for one TLS
 * connection (its output is thrown away, its send queue fills and drains as the first byte says).
 * The input is fed in pieces split at seeded points, as TLS records would cut it; the tunnels that
 * open answer, echo, half-close or reset as the seed says. Then the peer goes away: every stream
 * and the session must be freed (LeakSanitizer), and nothing may touch freed memory (ASan).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "hbone/h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The stand-in for struct tls_conn (tls.c's is opaque outside it; only these wrappers see this). */
struct fake_tls {
	void *user;
	uint32_t rng;
	size_t budget;     /* bytes the send queue takes before it is full; SIZE_MAX: never full */
	bool closing;      /* tls_conn_close or tls_conn_abort was called: on_close is due */
	bool reading;
};

static struct fake_tls *cur;

static uint32_t
rnd(void)
{
	uint32_t x = cur->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	cur->rng = x;
	return x;
}

void *__wrap_tls_conn_user(const struct tls_conn *t);
bool __wrap_tls_conn_writable(const struct tls_conn *t);
int __wrap_tls_conn_write(struct tls_conn *t, const uint8_t *data, size_t len);
void __wrap_tls_conn_read_start(struct tls_conn *t);
void __wrap_tls_conn_read_stop(struct tls_conn *t);
void __wrap_tls_conn_close(struct tls_conn *t);
void __wrap_tls_conn_abort(struct tls_conn *t);
const char *__wrap_tls_conn_peer_id(const struct tls_conn *t);
const char *__wrap_tls_conn_peer_addr(const struct tls_conn *t);

void *
__wrap_tls_conn_user(const struct tls_conn *t)
{
	return ((const struct fake_tls *)(const void *)t)->user;
}

bool
__wrap_tls_conn_writable(const struct tls_conn *t)
{
	const struct fake_tls *f = (const void *)t;

	return !f->closing && f->budget > 0;
}

int
__wrap_tls_conn_write(struct tls_conn *t, const uint8_t *data, size_t len)
{
	struct fake_tls *f = (void *)t;
	volatile uint8_t sink = 0;

	if (f->closing)
		return -1;
	for (size_t i = 0; i < len; i += 97)
		sink ^= data[i];
	(void)sink;
	if (f->budget != SIZE_MAX)
		f->budget = len < f->budget ? f->budget - len : 0;
	return 0;
}

void
__wrap_tls_conn_read_start(struct tls_conn *t)
{
	((struct fake_tls *)(void *)t)->reading = true;
}

void
__wrap_tls_conn_read_stop(struct tls_conn *t)
{
	((struct fake_tls *)(void *)t)->reading = false;
}

void
__wrap_tls_conn_close(struct tls_conn *t)
{
	((struct fake_tls *)(void *)t)->closing = true;
}

void
__wrap_tls_conn_abort(struct tls_conn *t)
{
	((struct fake_tls *)(void *)t)->closing = true;
}

const char *
__wrap_tls_conn_peer_id(const struct tls_conn *t)
{
	return "spiffe://fuzz.example/ns/default/sa/client";
}

const char *
__wrap_tls_conn_peer_addr(const struct tls_conn *t)
{
	return "10.0.0.1:40000";
}

/* --- the owner of the tunnels: what the ztunnel's inbound side does with them, roughly --- */

static void
t_data(struct hbone_stream *s, const uint8_t *d, size_t n)
{
	uint32_t r = rnd();

	if (r % 8 == 0) {
		hbone_stream_reset(s, 0x8 /* CANCEL */);
		return;
	}
	if (r % 3 != 0)
		(void)hbone_stream_write(s, d, n); /* echo; takes what fits */
	if (r % 5 != 0)
		hbone_stream_consumed(s, n); /* else keep the window closed */
}

static void
t_eof(struct hbone_stream *s)
{
	if (rnd() % 2)
		hbone_stream_shutdown(s);
}

static void
t_writable(struct hbone_stream *s)
{
	static const uint8_t more[64];

	if (rnd() % 4 == 0)
		(void)hbone_stream_write(s, more, sizeof(more));
}

static void
t_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	if (hbone_stream_user(s) != cur)
		abort();
}

static const struct hbone_stream_cb tunnel_cb = {
	.on_data = t_data, .on_eof = t_eof, .on_writable = t_writable, .on_close = t_close,
};

static void
on_request(struct h2_conn *c, struct hbone_stream *s)
{
	const struct hbone_request *r = hbone_stream_request(s);
	static const int refuse[] = { 400, 401, 503, 599, 42 };
	uint32_t x = rnd();

	/* What validation let through: a CONNECT to host:port. */
	if (r->authority == NULL || r->host[0] == '\0' || r->port == 0 || r->peer_id == NULL)
		abort();
	hbone_stream_set_cb(s, &tunnel_cb, cur);
	switch (x % 8) {
	case 0:
		(void)hbone_stream_respond(s, refuse[(x >> 8) % 5]);
		break;
	case 1:
		hbone_stream_reset(s, 0x7 /* REFUSED_STREAM */);
		break;
	case 2:
		break; /* answered later, or never */
	default:
		if (hbone_stream_respond(s, 200) != 0)
			abort();
		if (x & 0x100)
			(void)hbone_stream_write(s, (const uint8_t *)"SSH-2.0-hello\r\n", 15);
		break;
	}
}

static const struct h2_conn_ops ops = { .on_request = on_request };

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static bool loop_ready;
	struct fake_tls f = { 0 };
	struct tls_conn *t = (struct tls_conn *)(void *)&f;
	struct h2_conn *c;
	size_t off = 0;

	if (size < 5 || size > 1 << 20)
		return 0;
	if (!loop_ready) {
		log_set_level(LOG_LVL_ERROR);
		if (uv_loop_init(&loop) != 0)
			abort();
		loop_ready = true;
	}
	/* data[0]: bit 0 the preface is in the input (else it is sent first), bits 1-2 how much the
	 * send queue takes before it is full; data[1..4] the seed. */
	f.rng = ((uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
	    (uint32_t)data[4] << 24) | 1u;
	switch ((data[0] >> 1) & 3) {
	case 0: f.budget = SIZE_MAX; break;
	case 1: f.budget = 16; break;
	case 2: f.budget = 1024; break;
	default: f.budget = 65536; break;
	}
	cur = &f;
	c = h2_conn_new(&loop, true, 100, &ops, NULL);
	if (c == NULL)
		abort();
	f.user = c;
	c->tls = t;
	h2_tls_cb.on_handshake(t, 0);
	if (!(data[0] & 1) && !f.closing)
		h2_tls_cb.on_read(t, preface, sizeof(preface) - 1);
	data += 5;
	size -= 5;
	while (off < size && !f.closing) {
		size_t n = size - off;

		if (n > 1) {
			size_t cut = 1 + rnd() % (rnd() % 2 ? 64 : n);

			n = cut < n ? cut : n;
		}
		if (f.reading || f.budget > 0) {
			h2_tls_cb.on_read(t, data + off, n);
			off += n;
		}
		if (!f.closing && f.budget != SIZE_MAX && (f.budget == 0 || rnd() % 4 == 0)) {
			/* The peer read some of our output: the queue drains. */
			f.budget = 1 + rnd() % 4096;
			h2_tls_cb.on_drain(t);
		}
	}
	if (!f.closing)
		h2_tls_cb.on_read(t, NULL, 0); /* the peer went away */
	if (!f.closing)
		abort(); /* a lost peer aborts the connection */
	h2_tls_cb.on_close(t); /* frees c and its streams */
	cur = NULL;
	return 0;
}
