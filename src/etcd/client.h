/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A blocking client of etcd's v3 HTTP/JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/watch):
 * the CLI calls it directly, the roles from the registry feed's own thread (etcd/feed.h), never
 * from the loop. HTTP/1.1 over TCP, or over TLS 1.2 (mbedTLS) when a CA is given: etcd's server
 * certificate must chain to it and name the endpoint (DNS or IP SAN); a client certificate is
 * presented when given.
 *
 * Failover: the endpoints are tried in turn from the one that answered last; the next one is
 * tried when a connection, its handshake or its request fails or times out, or etcd answers
 * "unavailable" (no leader, stopping). Any other answer ends the call.
 *
 * Bounds: a response body past ETCD_MAX_RESPONSE, a watch message past ETCD_MAX_MESSAGE, or a
 * response head past 16 KiB is refused; each request (connect, handshake, send, answer) has the
 * configured timeout; a watch stream has none but TCP keepalive (a silent peer is dropped in
 * about 30 s). etcd_client_cancel() from any thread makes a blocked call return -ECANCELED.
 */
#ifndef AMESH_ETCD_CLIENT_H
#define AMESH_ETCD_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_RESPONSE (64u * 1024 * 1024)
#define ETCD_MAX_MESSAGE (64u * 1024 * 1024)

/* etcd's error for a revision older than its compaction (range or watch), as our code. */
#define ETCD_ERR_COMPACTED (-1100)

struct etcd_client_cfg {
	char *const *endpoints;  /* "HOST:PORT" or "[V6]:PORT" (config/etcdurl.h) */
	size_t n;
	const char *ca;          /* PEM roots for etcd's certificate; NULL: plain HTTP */
	const char *cert, *key;  /* our client certificate and key (PEM), or both NULL */
	uint64_t timeout_ms;     /* per endpoint and request; 0: 5 s */
	uint32_t mark;           /* SO_MARK of the connections (0: none): a sidecar's own sockets
	                            must pass its namespace's interception rules */
};

struct etcd_client;
struct etcd_stream;

/* Loads the TLS material. Returns 0, or a negative code with why naming the file. */
int etcd_client_new(const struct etcd_client_cfg *cfg, struct etcd_client **out, char *why,
    size_t whylen);
/* Accepts NULL. No call may be in progress. */
void etcd_client_free(struct etcd_client *c);
/* From any thread: blocked and later calls fail with -ECANCELED. */
void etcd_client_cancel(struct etcd_client *c);
/* Sleeps ms unless cancelled first: 0, or -ECANCELED. */
int etcd_client_sleep(struct etcd_client *c, uint64_t ms);
/* The next call starts with the next endpoint (a watch on this one failed). */
void etcd_client_rotate(struct etcd_client *c);
/* The endpoint that answered last ("HOST:PORT"). */
const char *etcd_client_endpoint(const struct etcd_client *c);

/*
 * POSTs the JSON body to path ("/v3/kv/range"); on HTTP 200 *out is the parsed JSON object the
 * caller owns. Returns 0; ETCD_ERR_COMPACTED; AMESH_ERR_INVALID when etcd refused the request
 * (why has its message); AMESH_ERR_NOTFOUND when no endpoint answered (why names each and what
 * went wrong with it); -ECANCELED.
 */
int etcd_client_call(struct etcd_client *c, const char *path, const char *body, json_t **out,
    char *why, size_t whylen);

/*
 * Opens a streaming request (POST /v3/watch): 0 with *out once etcd answered 200 and the head is
 * read, or an error as etcd_client_call's.
 */
int etcd_stream_open(struct etcd_client *c, const char *path, const char *body,
    struct etcd_stream **out, char *why, size_t whylen);
/*
 * The next newline-delimited JSON message of the stream, waiting at most wait_ms (-1: as long as
 * it takes). Returns 0 with *msg (caller owns); -ETIMEDOUT when none came in time (the stream
 * stays usable); another negative code when the stream ended or failed (why says how).
 */
int etcd_stream_next(struct etcd_stream *s, int wait_ms, json_t **msg, char *why, size_t whylen);
/* Accepts NULL. */
void etcd_stream_close(struct etcd_stream *s);

#endif
