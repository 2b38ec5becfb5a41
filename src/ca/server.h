/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh ca serve: the CA service (ca/proto.h). It signs with the CA in its directory (an
 * intermediate, so the root can stay offline), serves TLS with a certificate it makes for itself
 * (spiffe://TD/amesh/ca, sent with the intermediate and the root so a joining node can check the
 * root's fingerprint), redeems join tokens, and signs an identity for a node only when the registry
 * in force places that workload or waypoint on that node and the node is neither revoked nor
 * missing from the registry. Every refusal is logged with the peer and counted by reason.
 *
 * Bounds: at most CA_SERVER_MAX_CONNS connections (more are closed at once and counted); each
 * must finish its handshake and request within the handshake timeout plus CA_SERVER_READ_MS;
 * requests of at most CA_REQ_BODY_MAX bytes.
 *
 * Threads: the loop's thread.
 */
#ifndef AMESH_CA_SERVER_H
#define AMESH_CA_SERVER_H

#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/registry.h"

#define CA_SERVER_MAX_CONNS 256
#define CA_SERVER_READ_MS 10000
/* The service's own TLS certificate lives this long and is made again at half its life. */
#define CA_SERVER_CERT_TTL (7 * 86400)

struct metrics;
struct ca_server;

struct ca_server_cfg {
	uv_loop_t *loop;
	const char *dir;                       /* the CA directory (amesh-ca(8) FILES) */
	const struct sockaddr_storage *address;
	struct registry_holder *reg;
	struct metrics *metrics;
	uint64_t max_ttl, node_ttl;            /* seconds */
	uint64_t handshake_timeout_ms;
};

/* Loads the CA and listens. Returns 0 or a negative code with why; *out is NULL on failure. */
int ca_server_start(const struct ca_server_cfg *cfg, struct ca_server **out, char *why,
    size_t whylen);
/* Loads the CA directory again (a new intermediate, a new bundle) and makes a new TLS
 * certificate; on failure the CA in force stays. Connections open keep what they started with. */
int ca_server_reload(struct ca_server *s, char *why, size_t whylen);
/* The address actually bound. */
int ca_server_addr(const struct ca_server *s, struct sockaddr_storage *out);
/* Connections open now. */
unsigned ca_server_conns(const struct ca_server *s);
/* Writes the /config_dump document: the CA in force (subject, fingerprint of the roots, expiry). */
char *ca_server_dump(struct ca_server *s);
/* Stops listening and closes every connection; done(arg) once all is closed. */
void ca_server_stop(struct ca_server *s, void (*done)(void *arg), void *arg);
/* After done. Accepts NULL. */
void ca_server_free(struct ca_server *s);

#endif
