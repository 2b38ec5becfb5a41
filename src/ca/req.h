/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the CA service reads from a request (ca/proto.h) before it looks at the peer, the registry
 * or the tokens: the route and what that route takes from the headers. No I/O and no state, so the
 * fuzz target tests/fuzz/fuzz-careq.c runs exactly what the server runs.
 */
#ifndef AMESH_CA_REQ_H
#define AMESH_CA_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "telemetry/http.h"

struct http_msg;

enum ca_req_kind {
	CA_REQ_JOIN,   /* POST /v1/join */
	CA_REQ_SIGN,   /* POST /v1/sign */
	CA_REQ_BUNDLE, /* GET /v1/bundle */
};

struct ca_req {
	enum ca_req_kind kind;
	struct http_req http;  /* its strings point into the message and into path below */
	struct http_header hv[HTTP_MAX_HEADERS];
	char path[HTTP_MAX_HEAD + 1];
	const char *token;     /* join: what follows "Authorization: Bearer "; NULL when absent */
	const char *identity;  /* sign: Amesh-Identity; NULL when absent */
	int ttl_status;        /* sign: 0, or 400 when Amesh-TTL is not a positive number */
	uint64_t ttl;          /* sign: Amesh-TTL in seconds capped at max_ttl; max_ttl when absent */
};

/*
 * Reads the done request m into *out (which points into m: m must outlive it). Returns 0, or the
 * status to refuse it with (400: a bad target; 404 or 405: no such route) and a one-line why.
 * What is missing or malformed in the headers is left for the caller to refuse in its order (a
 * NULL token or identity, ttl_status).
 */
int ca_req_parse(struct http_msg *m, uint64_t max_ttl, struct ca_req *out, char *why,
    size_t whylen);

#endif
