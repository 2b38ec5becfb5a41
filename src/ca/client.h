/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A client of the CA service (ca/proto.h) that blocks: `amesh ca join` calls it, and the roles'
 * identity agent (ca/agent.h) calls it from libuv's worker threads. Each request is one TLS
 * connection; the service must present spiffe://TD/amesh/ca chaining to the trust bundle, or (for
 * a join before the node has a bundle) to the root whose SHA-256 fingerprint the caller pinned.
 *
 * Failover: the addresses are tried in order; the next one is tried when a connection, its
 * handshake or its request fails or times out, or the service answers 503. Any other answer is
 * the CA's decision and ends the request.
 */
#ifndef AMESH_CA_CLIENT_H
#define AMESH_CA_CLIENT_H

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <stddef.h>
#include <stdint.h>

/* At most this many CA addresses. */
#define CA_CLIENT_MAX_ADDRS 16

struct ca_client_cfg {
	char *const *addrs;       /* "HOST[:PORT]" or "[V6]:PORT"; the port defaults to 15012 */
	size_t naddrs;
	const char *trust_domain;
	mbedtls_x509_crt *bundle; /* roots to check the service against; NULL: pin instead */
	const char *pin;          /* "sha256:HEX" of a root certificate the service sends */
	mbedtls_x509_crt *chain;  /* our node certificate (leaf first), or NULL to present none */
	mbedtls_pk_context *key;
	uint64_t timeout_ms;      /* per address: connect, handshake, request and answer */
	uint32_t mark;            /* SO_MARK of the connections (0: none): a sidecar's own sockets
	                             must pass its namespace's interception rules */
};

struct ca_client_resp {
	unsigned status;
	char *body;               /* NUL-terminated, malloc'd */
	size_t body_len;
	char addr[300];           /* the address that answered */
	char issuer[256];         /* the CA that signs now: the issuer of the service's own certificate */
};

/*
 * Sends method path with the given extra header lines ("Name: value", NULL-terminated list, may
 * be NULL) and body. Returns 0 with resp filled (whatever the status), or a negative code with why
 * naming each address and what went wrong with it.
 */
int ca_client_request(const struct ca_client_cfg *cfg, const char *method, const char *path,
    const char *const *headers, const char *body, size_t len, struct ca_client_resp *resp,
    char *why, size_t whylen);
void ca_client_resp_free(struct ca_client_resp *resp);

/* Splits "HOST[:PORT]" / "[V6]:PORT" into host (at most hostlen - 1) and port. 0 or AMESH_ERR_INVALID. */
int ca_client_split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);

#endif
