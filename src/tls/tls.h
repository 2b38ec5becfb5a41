/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mbedTLS over libuv: a non-blocking TLS 1.2 connection on a uv_tcp_t. Ciphertext moves through
 * memory BIOs; plaintext is handed to the owner as it is decrypted. Both ends present certificates;
 * the server accepts only its trust domain, the client only the SPIFFE IDs it was told to expect.
 */
#ifndef AMESH_TLS_TLS_H
#define AMESH_TLS_TLS_H

#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "tls/cert.h"

struct identity;

/*
 * Sets up conf for one side (MBEDTLS_SSL_IS_SERVER or _CLIENT) of an HBONE connection: TLS 1.2 only,
 * the suites of DESIGN.md (AES-256-GCM first with record offload, CHACHA20-POLY1305 first without:
 * the fastest here of each record layer), X25519 then P-256 for ECDHE,
 * ALPN "h2", peer certificate required and verified against bundle, no tickets or renegotiation.
 * chain, key and bundle must outlive conf. Returns 0 or a negative mbedTLS code.
 */
int tls_conf_init(mbedtls_ssl_config *conf, int endpoint, mbedtls_x509_crt *chain,
    mbedtls_pk_context *key, mbedtls_x509_crt *bundle);
/*
 * The same for the CA service's protocol (amesh-ca(8)): ALPN TLS_ALPN_CA instead of "h2", and
 * authmode as given (the CA's server takes MBEDTLS_SSL_VERIFY_OPTIONAL: a joining node has no
 * certificate yet). chain and key may be NULL for a client that presents none.
 */
#define TLS_ALPN_CA "amesh-ca/1"
int tls_conf_init_ca(mbedtls_ssl_config *conf, int endpoint, mbedtls_x509_crt *chain,
    mbedtls_pk_context *key, mbedtls_x509_crt *bundle, int authmode);

/*
 * Record offload (amesh.conf(5) [tls] record_offload): on (the default), records after the
 * handshake are sealed and opened by tls/record.h when this build has it; off, by mbedTLS. Set
 * before identities are loaded: the suite order follows it. tls_record_offload() is what is in
 * force (false when the build lacks the record layer).
 */
void tls_set_record_offload(bool on);
bool tls_record_offload(void);
/* mbedTLS's key export callback, which tls_conf_init installs (the key block goes to the
 * connection whose handshake is running; nothing is logged). */
int tls_export_keys(void *p, const unsigned char *ms, const unsigned char *kb, size_t maclen,
    size_t keylen, size_t ivlen, const unsigned char client_random[32],
    const unsigned char server_random[32], mbedtls_tls_prf_types prf);

/* Ciphertext queued for the socket above this stops the owner's writes (tls_conn_writable). */
#define TLS_WRITE_HIGH_WATER (256u * 1024)

struct tls_conn;

struct tls_conn_cb {
	/* Handshake done: status 0 (peer verified, tls_conn_peer_id set) or a negative code. */
	void (*on_handshake)(struct tls_conn *c, int status);
	/* Plaintext arrived. len 0: the peer closed (close_notify or EOF). */
	void (*on_read)(struct tls_conn *c, const uint8_t *data, size_t len);
	/* Queued ciphertext dropped below the high-water mark again. Optional. */
	void (*on_drain)(struct tls_conn *c);
	/* The socket is closed and the connection about to be freed; last callback. */
	void (*on_close)(struct tls_conn *c);
	/* The end of a loop turn in which tls_conn_want_turn was called, before that turn's writes
	 * are sealed and sent: what the owner writes now goes with them. Optional. */
	void (*on_turn)(struct tls_conn *c);
};

struct tls_conn_opts {
	struct identity *id;      /* our certificate (a reference is taken); NULL with conf */
	/* Instead of id's: this configuration (it must outlive the connection), the ALPN protocol
	 * to require ("" : whatever was agreed, or none), and (server) whether a client may present
	 * no certificate: then tls_conn_peer_id is "". Used by the CA service; HBONE uses id and
	 * "h2". */
	const mbedtls_ssl_config *conf;
	const char *alpn;
	bool peer_optional;
	const char *trust_domain; /* server: required peer trust domain */
	const char *const *expect; /* client: acceptable peer SPIFFE IDs, NULL-terminated */
	uint64_t handshake_timeout_ms;
	uint32_t mark;            /* SO_MARK for outgoing connections (0: none) */
	bool use_fd;              /* client: connect with fd (e.g. a socket made in another network */
	int fd;                   /* namespace), which is taken over; else tls_conn_connect makes one */
};

/* Starts the server handshake on fd, a connection accepted elsewhere (another worker's
 * listener); fd is taken over, closed on failure. */
int tls_conn_adopt(uv_loop_t *loop, int fd, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out);
/* Accepts a pending connection from server and starts the server handshake. */
int tls_conn_accept(uv_stream_t *server, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out);
/* Connects to addr and starts the client handshake (connect + handshake share the timeout). */
int tls_conn_connect(uv_loop_t *loop, const struct sockaddr *addr, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out);

/*
 * Encrypts and queues len bytes. Writes of one loop turn are coalesced: plaintext is staged into
 * records of up to 16384 bytes and everything goes to the socket in one write at the end of the
 * turn (before the loop next waits for events). Returns 0, or a negative code if the connection
 * is failing.
 */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);
/* Asks for on_turn at the end of this loop turn (once however often it is asked). */
void tls_conn_want_turn(struct tls_conn *c);
/* True while queued ciphertext (with what this turn staged) is below TLS_WRITE_HIGH_WATER; after
 * it said false, on_drain follows once that is below half of it. */
bool tls_conn_writable(const struct tls_conn *c);
/* Bytes queued to the socket, with what this turn staged. */
size_t tls_conn_queued(const struct tls_conn *c);
/* Stop or resume reading from the socket (backpressure from the owner). */
void tls_conn_read_stop(struct tls_conn *c);
void tls_conn_read_start(struct tls_conn *c);
/* Sends close_notify after what is queued, then closes. on_close follows. */
void tls_conn_close(struct tls_conn *c);
/* Closes at once (RST) without close_notify. on_close follows. */
void tls_conn_abort(struct tls_conn *c);

void *tls_conn_user(const struct tls_conn *c);
void tls_conn_set_user(struct tls_conn *c, void *user);
/* The verified peer SPIFFE ID (after a good handshake), else "". */
const char *tls_conn_peer_id(const struct tls_conn *c);
/* "ADDR:PORT" of the peer, for messages. */
const char *tls_conn_peer_addr(const struct tls_conn *c);
/* The negotiated suite name, or "". */
const char *tls_conn_suite(const struct tls_conn *c);

#endif
