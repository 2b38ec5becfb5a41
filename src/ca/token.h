/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Join tokens and node revocation of the CA service (amesh-ca(8) JOIN), kept as files in the CA
 * directory so that `amesh ca token` and `amesh ca revoke-node` work whether the service runs or not:
 *
 *   DIR/tokens/HASH        a token not used yet: "node NAME\nexpires UNIX\n" (0600)
 *   DIR/tokens/used/HASH   the same, once redeemed (a replay is told apart from an unknown token)
 *   DIR/revoked/NAME       a revoked node
 *
 * HASH is the SHA-256 of the token in hex: the token itself is shown once and never stored. A token
 * is single-use: redeeming renames it into used/, which only one caller can do.
 */
#ifndef AMESH_CA_TOKEN_H
#define AMESH_CA_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* "amesh-join-" and 43 base64url characters (256 random bits). */
#define TOKEN_LEN 54
#define TOKEN_PREFIX "amesh-join-"
/* Longest and default lifetime of a token, in seconds. */
#define TOKEN_TTL_MAX (7 * 86400)
#define TOKEN_TTL_DEFAULT 3600
/* At most this many tokens wait unused (older expired ones are swept when it is reached). */
#define TOKEN_MAX_PENDING 10000

enum token_state {
	TOKEN_OK,        /* valid: not used, not expired */
	TOKEN_MALFORMED, /* not a token's shape */
	TOKEN_UNKNOWN,   /* never issued here */
	TOKEN_USED,      /* redeemed before */
	TOKEN_EXPIRED,
};

/* Makes a token for node valid ttl seconds from now into tok (TOKEN_LEN + 1 bytes). Returns 0 or a
 * negative code with why. */
int token_create(const char *dir, const char *node, uint64_t ttl, time_t now, char *tok,
    char *why, size_t whylen);
/* What tok is now, without using it; for TOKEN_OK, TOKEN_USED and TOKEN_EXPIRED the node it was
 * made for and its expiry. A negative return is an I/O error (why says which file). */
int token_peek(const char *dir, const char *tok, time_t now, enum token_state *state, char *node,
    size_t nodelen, time_t *expires, char *why, size_t whylen);
/* Uses tok: 0, or AMESH_ERR_EXISTS when another request used it first. */
int token_consume(const char *dir, const char *tok, char *why, size_t whylen);
const char *token_state_str(enum token_state s);

/* Marks node revoked (undo: false removes the mark). Returns 0 or a negative code with why. */
int node_revoke(const char *dir, const char *node, bool undo, char *why, size_t whylen);
/* Whether node is revoked. */
bool node_revoked(const char *dir, const char *node);

#endif
