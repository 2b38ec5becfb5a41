/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to src/hbone: one HTTP/2 session over one TLS connection, shared by server and pool. */
#ifndef AMESH_HBONE_H2_H
#define AMESH_HBONE_H2_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "hbone/h2flood.h"
#include "hbone/hbone.h"
#include "tls/tls.h"

struct h2_conn;

/* What the owner of a connection (server or pool) is told. */
struct h2_conn_ops {
	/* Server: a validated CONNECT; client: never called. */
	void (*on_request)(struct h2_conn *c, struct hbone_stream *s);
	/* Client: a stream was refused before any byte went out; return true if it was re-queued
	 * elsewhere (it is then detached from c and no callback reaches its owner). */
	bool (*on_refused)(struct h2_conn *c, struct hbone_stream *s);
	/* A stream ended (after the owner's on_close). */
	void (*on_stream_gone)(struct h2_conn *c);
	/* The TLS handshake finished: status 0 or an error (the connection is then closing). */
	void (*on_ready)(struct h2_conn *c, int status);
	/* The peer sent GOAWAY. */
	void (*on_goaway)(struct h2_conn *c);
	/* Client: a stream's RST_STREAM waits for c's reset budget (H2_RELAY_RST_*): call
	 * h2_conn_send_resets in ms milliseconds. Optional: without it, resets are not paced. */
	void (*on_resets_waiting)(struct h2_conn *c, uint64_t ms);
	/* The connection is closed; it is freed after this returns. */
	void (*on_closed)(struct h2_conn *c);
};

/* A copy of what hbone_pool_open was given, kept so a refused stream can be retried. */
struct h2_open {
	struct identity *src;
	char *dst_id, *authority, *forwarded, *baggage, *traceparent;
	struct sockaddr_storage dst;
};

struct tcp_leg;

struct hbone_stream {
	struct h2_conn *conn;
	struct tcp_leg *tcp; /* a stream over plain TCP (tcpleg.c) instead of HTTP/2: conn is NULL */
	int32_t id; /* 0 until submitted */
	const struct hbone_stream_cb *cb;
	void *user;
	struct hbone_stream *prev, *next; /* in conn->streams, or a pool's pending list */

	uint8_t *sbuf; /* owner's bytes waiting for DATA frames; allocated while non-empty */
	size_t shead, slen;
	/* Client side, until the response: the bytes already sent stay in sbuf before shead, so
	 * that a stream the server refuses (REFUSED_STREAM, or past its GOAWAY: it processed
	 * nothing) is opened again elsewhere with them. They count against the buffer's room. */
	size_t skept;
	size_t unconsumed; /* delivered by on_data and not yet returned by the owner */
	bool shutdown_wanted, deferred, writer_blocked, eof_seen, responded, data_sent;
	bool closing;
	/* Client: its RST_STREAM (with reset_err) waits for the connection's reset budget. */
	bool reset_waiting;
	uint32_t reset_err;

	/* Server side: the request. */
	struct hbone_request req;
	char *hdr_method, *hdr_authority, *hdr_forwarded, *hdr_baggage, *hdr_traceparent;
	size_t hdr_bytes, hdr_count;
	bool hdr_bad;
	/* Client side: for retries and the pool's bookkeeping. */
	struct h2_open *open;
	int status;
	int retries;
	/* Server: tunnel bytes that came before our 200, held (unconsumed, so within the window). */
	uint8_t *early;
	size_t early_len;
};

struct h2_conn {
	uv_loop_t *loop;
	nghttp2_session *session;
	struct tls_conn *tls; /* set by the creator right after h2_conn_new */
	uint32_t max_streams;
	bool is_server;
	const struct h2_conn_ops *ops;
	void *owner;      /* struct hbone_server or the pool's connection record */
	struct h2_conn *list_prev, *list_next; /* the owner's list of connections */
	struct hbone_stream *streams;
	size_t nstreams;
	bool ready, closing, closed, goaway_recv, goaway_sent;
	bool in_flush, flush_again;
	unsigned syn_queued; /* client: CONNECTs submitted since the last flush (h2_conn_flush) */
	bool tls_closed;
	uint64_t last_activity; /* uv_now of the last frame received */
	struct h2_flood flood;  /* server: the peer's control frames (hbone/h2flood.h) */
	bool flooded;           /* over them: GOAWAY ENHANCE_YOUR_CALM sent */
	struct h2_flood resets; /* client: our RST_STREAMs (H2_RELAY_RST_BURST, _RATE) */
	size_t resets_waiting;  /* streams whose RST_STREAM waits for it */
	bool in_recv; /* inside nghttp2_session_mem_recv: sending waits until it returns */
};

/*
 * A session for a TLS connection the caller creates next with h2_tls_cb and this as its user (then
 * sets c->tls). Settings go out when the handshake completes. A server's nghttp2 session is created
 * then too (c->session is NULL until c->ready). NULL when out of memory.
 */
struct h2_conn *h2_conn_new(uv_loop_t *loop, bool server, uint32_t max_streams,
    const struct h2_conn_ops *ops, void *owner);
/* Frees a session whose TLS connection could not be created. */
void h2_conn_free_unstarted(struct h2_conn *c);
/* TLS callbacks to give tls_conn_accept/tls_conn_connect; user must be the h2_conn. */
extern const struct tls_conn_cb h2_tls_cb;

/* Sends what nghttp2 has queued, as far as the TLS queue allows; a client's at the end of this
 * loop turn once a CONNECT was submitted in it (see h2.c). */
void h2_conn_flush(struct h2_conn *c);
/* Client: sends the RST_STREAMs that waited, as far as the reset budget allows. Returns the ms
 * until the next may go, 0 when none waits. */
uint64_t h2_conn_send_resets(struct h2_conn *c);
/* Submits a client CONNECT for s (already attached). Returns 0 or a negative code. */
int h2_conn_submit(struct h2_conn *c, struct hbone_stream *s);
/* Attaches s to c's stream list / takes it off again. */
void h2_conn_attach(struct h2_conn *c, struct hbone_stream *s);
void h2_stream_detach(struct hbone_stream *s);
/* GOAWAY (graceful: last stream id as is); the connection closes when its streams are done. */
void h2_conn_goaway(struct h2_conn *c);
/* Closes now: streams get on_close(reset). */
void h2_conn_abort(struct h2_conn *c);
/* Sends a PING. */
int h2_conn_ping(struct h2_conn *c);
/* Streams the peer allows at once (its SETTINGS_MAX_CONCURRENT_STREAMS). */
uint32_t h2_conn_remote_max_streams(const struct h2_conn *c);
/* Frees a stream that never got (or no longer has) a connection. */
void h2_stream_free(struct hbone_stream *s);
void h2_open_free(struct h2_open *o);

/* tcpleg.c: the stream API on a plain TCP connection. */
size_t tcpleg_write(struct hbone_stream *s, const uint8_t *data, size_t len);
bool tcpleg_writable(const struct hbone_stream *s);
void tcpleg_shutdown(struct hbone_stream *s);
void tcpleg_reset(struct hbone_stream *s);
void tcpleg_consumed(struct hbone_stream *s, size_t n);
void tcpleg_detached(struct hbone_stream *s);

#endif
