/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HBONE: HTTP/2 CONNECT tunnels over mutual TLS (DESIGN.md section 3), on nghttp2 and libuv.
 *
 * A stream is one tunnel. Bytes flow through it with end-to-end flow control: data handed to the
 * owner (on_data) counts against the HTTP/2 window until the owner calls hbone_stream_consumed(),
 * so a reader that stops reading stops the writer at the far end; data the owner writes is
 * buffered up to HBONE_STREAM_SEND_BUF per stream and hbone_stream_write() takes no more than fits.
 * END_STREAM maps to a TCP half-close and RST_STREAM to a reset, both ways.
 *
 * Server: hbone_server_listen() accepts TLS connections from the trust domain, validates each
 * CONNECT and hands it to on_request with the peer identity and headers; the owner answers with
 * hbone_stream_respond() (200 opens the tunnel; 400, 401, 503 refuse it).
 *
 * Client: a pool keyed by (source identity, destination identity, destination address) that puts up
 * to max_streams streams on a connection, opens another when full, pings idle connections, releases
 * them after idle_timeout, follows GOAWAY, and retries a refused stream on a new connection.
 */
#ifndef AMESH_HBONE_HBONE_H
#define AMESH_HBONE_HBONE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct identity;
struct identity_store;
struct hbone_stream;
struct hbone_server;
struct hbone_pool;

/* Bytes a stream buffers from its owner before hbone_stream_write() accepts less than offered. */
#define HBONE_STREAM_SEND_BUF (64u * 1024)
/* HTTP/2 windows we advertise: per stream, and for the whole connection. */
#define HBONE_STREAM_WINDOW (256u * 1024)
#define HBONE_CONN_WINDOW (4u * 1024 * 1024)
/* Request header block limit (sum of name and value lengths), and header count limit. */
#define HBONE_MAX_HEADER_BYTES (16u * 1024)
#define HBONE_MAX_HEADERS 64

struct hbone_stream_cb {
	/* Tunnel bytes from the peer. They count against the window until hbone_stream_consumed(). */
	void (*on_data)(struct hbone_stream *s, const uint8_t *data, size_t len);
	/* The peer ended its side (END_STREAM): no more on_data. */
	void (*on_eof)(struct hbone_stream *s);
	/* Room again after hbone_stream_write() took less than offered. It may be called from inside
	 * hbone_stream_write() or hbone_stream_consumed() (their flush made room at once): an owner
	 * that writes from here must guard against that re-entry (see src/hbone/relay.c). */
	void (*on_writable)(struct hbone_stream *s);
	/* Client: the response. 200: the tunnel is up. Other codes or a negative error: it failed and
	 * on_close follows. */
	void (*on_response)(struct hbone_stream *s, int status);
	/* The stream is gone (both sides ended, reset, or connection lost); last callback. reset is
	 * true when it ended by RST_STREAM or a lost connection rather than two clean END_STREAMs. */
	void (*on_close)(struct hbone_stream *s, bool reset, uint32_t h2_error);
};

/* What the server saw in a CONNECT, valid while the stream lives. */
struct hbone_request {
	const char *authority; /* as sent: "10.1.2.3:9080" or "reviews.default.svc...:9080" */
	char host[256];        /* authority split: host without brackets */
	uint16_t port;
	const char *peer_id;   /* the client's verified SPIFFE ID */
	const char *peer_addr; /* the client's "ADDR:PORT" */
	const char *forwarded, *baggage, *traceparent; /* NULL when absent */
};

/* Writes up to len bytes; returns how many it took (0 when the send buffer is full). */
size_t hbone_stream_write(struct hbone_stream *s, const uint8_t *data, size_t len);
/* True if the send buffer has room. */
bool hbone_stream_writable(const struct hbone_stream *s);
/* Sends END_STREAM once the buffered bytes are out (the owner's FIN). */
void hbone_stream_shutdown(struct hbone_stream *s);
/* Resets the stream (RST_STREAM with h2_error); on_close follows. */
void hbone_stream_reset(struct hbone_stream *s, uint32_t h2_error);
/* The owner delivered n bytes from on_data: opens the window for n more. */
void hbone_stream_consumed(struct hbone_stream *s, size_t n);
/* Server: answers the CONNECT. 200 opens the tunnel; any other code ends the stream. */
int hbone_stream_respond(struct hbone_stream *s, int status);
void hbone_stream_set_cb(struct hbone_stream *s, const struct hbone_stream_cb *cb, void *user);
void *hbone_stream_user(const struct hbone_stream *s);
const struct hbone_request *hbone_stream_request(const struct hbone_stream *s);
/* The peer's verified SPIFFE ID. */
const char *hbone_stream_peer_id(const struct hbone_stream *s);

/* --- plain TCP legs ---
 *
 * The same stream API on a plain TCP connection, so that the L7 engine (src/l7) serves a sidecar's
 * legs to and from its own application as it serves HBONE tunnels: the captured connection of an
 * outbound request, or the connection to the app of an inbound one. on_data bytes count until
 * hbone_stream_consumed(); with HBONE_STREAM_WINDOW of them unconsumed the leg stops reading, so
 * the peer's TCP window closes. hbone_stream_write() takes bytes while fewer than
 * HBONE_STREAM_SEND_BUF wait for the socket. shutdown is a FIN once they are written, reset an RST.
 * on_close comes once: after EOF both ways (reset false), or a reset, error or failed connect.
 * hbone_stream_respond() does not apply (it fails) and the peer ID is "".
 */

/* A connected socket (an accepted connection), read from at once. 0, or a negative uv code (fd is
 * closed then). */
int hbone_tcp_accepted(uv_loop_t *loop, int fd, const struct hbone_stream_cb *cb, void *user,
    struct hbone_stream **out);
/* Connects fd, a socket the caller made, to dst: on_response(200) when connected; a negative uv
 * code and then on_close when not. 0, or a negative uv code (no callback then; fd is closed). */
int hbone_tcp_connect(uv_loop_t *loop, int fd, const struct sockaddr *dst,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out);

/* --- server --- */

struct hbone_server_cfg {
	const struct sockaddr *addr;     /* where to listen */
	int fd;                          /* or an already bound socket (addr NULL): see below */
	struct identity *id;             /* the certificate it presents */
	const char *trust_domain;        /* clients must be in it */
	uint64_t handshake_timeout_ms;
	size_t max_connections;          /* further connections are closed at once (counted) */
	/* Optional: a count of open connections shared with other servers (a waypoint's workers),
	 * which together take at most max_connections; updated with atomic operations, and it must
	 * outlive every server using it. NULL: the server counts its own. */
	size_t *shared_conns;
	uint32_t max_streams;            /* SETTINGS_MAX_CONCURRENT_STREAMS we advertise */
	/* A validated CONNECT: the owner sets callbacks and answers with hbone_stream_respond(). */
	void (*on_request)(struct hbone_server *srv, struct hbone_stream *s,
	    const struct hbone_request *req);
	/* Optional: offered each pending connection first (not while draining); true when it
	 * took it off l (workers: another worker's server adopts it). */
	bool (*dispatch)(struct hbone_server *srv, uv_stream_t *l);
	void *user;
};

/* Starts listening; *out is set only on success. 0, or a negative uv/AMESH_ERR code. A cfg->fd
 * passes to the server on success only (it closes it when drained); on failure it is untouched
 * and the caller still owns it and closes it. addr NULL and fd -1: a server without a listener,
 * which serves the connections given to hbone_server_adopt. */
int hbone_server_listen(uv_loop_t *loop, const struct hbone_server_cfg *cfg,
    struct hbone_server **out);
/* Serves fd, a connection accepted elsewhere (taken over), as if accepted here: limits, TLS. */
void hbone_server_adopt(struct hbone_server *srv, int fd);
/* Changes the certificate used for new connections (rotation); live ones keep theirs. */
void hbone_server_set_identity(struct hbone_server *srv, struct identity *id);
/* Stops accepting, sends GOAWAY on every connection, and closes each when its streams are done or
 * after timeout_ms. done (optional) runs when everything is closed; then the server is freed. */
void hbone_server_drain(struct hbone_server *srv, uint64_t timeout_ms,
    void (*done)(void *arg), void *arg);
void *hbone_server_user(const struct hbone_server *srv);
/* The bound port (useful when listening on port 0), or a negative libuv code. */
int hbone_server_port(const struct hbone_server *srv);

struct hbone_server_stats {
	uint64_t connections_accepted, connections_refused, handshakes_failed;
	uint64_t streams_opened, streams_refused;
	size_t connections_open, streams_open;
};
void hbone_server_stats(const struct hbone_server *srv, struct hbone_server_stats *st);

/* --- client pool --- */

struct hbone_pool_cfg {
	uint32_t max_streams;        /* per connection (also capped by the peer's setting) */
	uint64_t idle_timeout_ms;    /* release a connection this long after its last stream */
	uint64_t connect_timeout_ms; /* TCP connect + TLS handshake */
	uint64_t ping_interval_ms;   /* PING an idle-looking connection this often */
	uint64_t ping_timeout_ms;    /* drop it when no PING ACK comes for this long */
	uint32_t mark;               /* SO_MARK on the pool's sockets (0: none) */
	size_t max_connections;      /* total; opening more fails with UV_EAGAIN */
	/* Makes the socket for a new connection (e.g. inside a workload's network namespace, so
	 * HBONE leaves with the workload's address). Returns an fd or -errno. NULL: a plain socket. */
	int (*socket_fn)(void *arg, int family);
	void *socket_arg;
};

struct hbone_open {
	struct identity *src;        /* who we are (a reference is taken) */
	const char *dst_id;          /* the SPIFFE ID the server must present */
	const struct sockaddr *dst;  /* DST_IP:15008 or the waypoint's address */
	const char *authority;       /* the :authority of the CONNECT */
	const char *forwarded, *baggage, *traceparent; /* optional extra headers */
};

int hbone_pool_new(uv_loop_t *loop, const struct hbone_pool_cfg *cfg, struct hbone_pool **out);
/*
 * Opens a tunnel: picks or makes a connection for the key and sends the CONNECT. Callbacks start
 * with on_response. Returns 0 and the stream, or a negative code (no callback then).
 */
int hbone_pool_open(struct hbone_pool *p, const struct hbone_open *o,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out);
/* GOAWAY to every connection; each closes when its streams end or after timeout_ms; then free. */
void hbone_pool_drain(struct hbone_pool *p, uint64_t timeout_ms, void (*done)(void *arg),
    void *arg);

struct hbone_pool_stats {
	size_t connections, streams;
	uint64_t connections_opened, connect_failures, streams_opened, streams_retried;
};
void hbone_pool_stats(const struct hbone_pool *p, struct hbone_pool_stats *st);

#endif
