/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L7 routes ([route] in amesh-registry(5)), modelled on Gateway API HTTPRoute: choosing the route
 * of a request, its backend, header edits, path rewrite, redirect Location, retry decisions and
 * backoff, fault injection and mirroring. Everything here reads the registry snapshot and the
 * caller's buffers only: no allocation, no I/O, no clock, no global state. Randomness comes in as
 * a uint32_t from the caller, so every decision is reproducible and tests can hit exact
 * boundaries. Safe on any thread that holds a reference to the snapshot.
 *
 * Random values: a uint32_t r picks among n equal outcomes as (r * n) >> 32, i.e. by its high
 * bits, so r in [k * 2^32 / n, (k+1) * 2^32 / n) picks outcome k. A percentage p (0-100) holds
 * when (r * 100) >> 32 < p, i.e. when r < p * 2^32 / 100: 0 never, 100 always, 50 for
 * r <= 0x7fffffff.
 *
 * Matching (route_matches):
 *   - match.path_exact: the path equals the value (case-sensitive).
 *   - match.path_prefix: Gateway API PathPrefix, element by element: "/api" matches "/api",
 *     "/api/" and "/api/x", not "/apix"; a trailing '/' of the prefix is ignored ("/api/" is
 *     "/api"), so "/" matches every path.
 *   - match.path_regex: POSIX extended regular expression as compiled by the registry, searched
 *     in the path (regexec semantics, as grep -E): it is not implicitly anchored, write ^...$ to
 *     match the whole path.
 *   - match.method: the request method is one of the list (case-sensitive, methods are).
 *   - match.headers: every listed header is present with exactly that value; names are compared
 *     without regard to case (the header callback's job), values exactly.
 *   - match.query: every listed parameter is in the query string with exactly that value, both
 *     compared after %XX decoding ('+' is not a space); a parameter given several times is
 *     matched on its first occurrence (Gateway API's recommendation).
 *   Conditions are ANDed; a route without match.* fields matches every request.
 *
 * Precedence (route_select), among the matching routes of the service, continuing on ties:
 *   1. path kind: exact > regex > prefix, a route without path condition counting as
 *      the prefix "/" (Gateway API's default match);
 *   2. among prefixes, the longest (characters of match.path_prefix as written);
 *   3. a match.method condition present;
 *   4. the most match.headers entries;
 *   5. the most match.query entries;
 *   6. registry order (file load order, then position in the file).
 * Gateway API fixes exact > longest prefix > method > headers > query and leaves regular
 * expressions implementation-specific. amesh ranks a regex just below exact and above every
 * prefix, as Envoy Gateway does: a regex is written to carve specific paths out of a tree, and
 * ranked below prefixes it would be shadowed by any matching prefix, "/" included. Regexes tie
 * among themselves and go on to rule 3. A route with no match.* at all ranks lowest (a tie only
 * with other catch-alls, and with a bare match.path_prefix = /, broken by registry order): the
 * catch-all of its service.
 */
#ifndef AMESH_L7_ROUTE_H
#define AMESH_L7_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"

/*
 * Looks up a request header by name, case-insensitively; returns its value or NULL when absent.
 * Same contract as authz_header_fn (policy/authz.h), so one function serves both: a header sent
 * several times should be offered as its first value.
 */
typedef const char *(*route_header_fn)(void *arg, const char *name);

struct route_req {
	const char *method; /* "GET"; NULL matches no match.method */
	const char *path;   /* without query, as received: "/api/v1"; NULL is taken as "/" */
	const char *query;  /* after the '?', without it; NULL or "" when none */
	route_header_fn header; /* NULL: no headers (every match.headers condition fails) */
	void *header_arg;
};

/* True if rt's match.* conditions all hold for q (see the top of this file). */
bool route_matches(const struct reg_route *rt, const struct route_req *q);

/*
 * The route for a request to svc: the one of highest precedence among the routes whose service is
 * svc and that match q. NULL when none matches: the caller then forwards to the service's own
 * endpoints (the default route).
 */
/*
 * The path a request's routes and policies see and the application gets, so that no spelling of
 * a path slips past a rule its plain form would meet (Istio's path normalization, with merged
 * slashes): the path of an absolute-form target ("http://h/p" -> "/p"); %XX of unreserved
 * characters decoded and other escapes upper-cased; "." and ".." segments removed (RFC 3986
 * 5.2.4); runs of '/' merged. Refused (0 is not returned): an escaped '/' or '\' (%2F, %5C), a
 * literal '\', a malformed escape, a NUL (or %00), a target that is neither a path nor "*" (kept as it
 * is), or a result that does not fit in outlen. in is n bytes (the path, without the query).
 * Returns 0, or AMESH_ERR_INVALID, AMESH_ERR_TOOLONG (outlen) or AMESH_ERR_NOMEM with *why.
 */
int route_normalize_path(const char *in, size_t n, char *out, size_t outlen, const char **why);
const struct reg_route *route_select(const struct registry *r, const struct reg_service *svc,
    const struct route_req *q);

/*
 * Weighted choice among rt's backends: backend k, in the order written, when
 * (random * total) >> 32 falls in [w0 + ... + w(k-1), w0 + ... + wk). NULL when the route has no
 * backends or all weights are 0: the caller answers 500, as Istio does.
 */
const struct reg_backend *route_pick_backend(const struct reg_route *rt, uint32_t random);

/*
 * A bounded header list the HTTP layer fills and re-emits. It holds pointers only: names and
 * values stay owned by whoever owns them (the parsed request, or the registry snapshot for the
 * values route edits put in), so the list lives no longer than both. Order is kept; names are
 * compared without regard to case.
 */
struct hdr {
	const char *name, *value;
};

struct hdr_list {
	struct hdr *v; /* caller's storage of cap entries */
	size_t n, cap;
};

void hdr_list_init(struct hdr_list *l, struct hdr *storage, size_t cap);
/* Appends an entry (a repeated name is kept as another entry); -ENOSPC when full. */
int hdr_list_add(struct hdr_list *l, const char *name, const char *value);
/*
 * Replaces the value of the first entry named name and drops the others of that name; appends when
 * there is none. -ENOSPC when it would have to append to a full list.
 */
int hdr_list_set(struct hdr_list *l, const char *name, const char *value);
/* Removes every entry named name; returns how many were removed. */
size_t hdr_list_remove(struct hdr_list *l, const char *name);
/* Value of the first entry named name, or NULL. */
const char *hdr_list_get(const struct hdr_list *l, const char *name);
/* hdr_list_get as a route_header_fn / authz_header_fn; arg is the struct hdr_list. */
const char *hdr_list_lookup(void *arg, const char *name);

/*
 * Applies rt's request_headers.* (or response_headers.*) edits to l, Gateway API
 * HTTPHeaderFilter semantics, in Envoy's order: remove, then set, then add.
 *   remove: every entry of each listed name goes;
 *   set:    the header ends up with exactly the configured value (first entry replaced in place,
 *           others dropped; appended when absent);
 *   add:    the configured value is appended as another entry of that name, which HTTP treats as
 *           appending to the existing values ("foo" + add "bar" is "foo, bar").
 * All or nothing: when the result would not fit in l->cap, l is left untouched and -ENOSPC is
 * returned (the caller answers 500 or 431 as it sees fit). Configured names are lower-case
 * (the registry stores them so), which HTTP/2 requires. Returns 0 on success.
 */
int route_edit_request_headers(const struct reg_route *rt, struct hdr_list *l);
int route_edit_response_headers(const struct reg_route *rt, struct hdr_list *l);

/*
 * rewrite.path_prefix, Gateway API ReplacePrefixMatch: the part of path matched by
 * match.path_prefix (element-wise, trailing '/' ignored) is replaced, also without its trailing
 * '/'; an empty result is "/". With prefix "/foo" and replacement "/xyz": "/foo/bar" ->
 * "/xyz/bar", "/foo" -> "/xyz", "/foo/" -> "/xyz/"; with replacement "/": "/foo/bar" -> "/bar",
 * "/foo" -> "/". A route without rewrite, or a path its prefix does not match, gives the path
 * unchanged. Writes a NUL-terminated string; returns 0, or -ENOSPC when out is too small.
 */
int route_rewrite_path(const struct reg_route *rt, const char *path, char *out, size_t outlen);

/*
 * Location for a redirect route (rt->redirect), Gateway API HTTPRequestRedirectFilter; every part
 * not configured keeps the request's:
 *   scheme  redirect.scheme, else the request's scheme ("http" or "https");
 *   host    redirect.host, else host (the request's Host without port; an IPv6 literal is put in
 *           brackets when it has none);
 *   port    redirect.port; else, when redirect.scheme is set, its well-known port (80, 443);
 *           else port, the request's (0: the scheme's well-known port). The port is left out of
 *           the Location when it is the scheme's well-known one;
 *   path    redirect.path: on a route matching by match.path_prefix it replaces the matched
 *           prefix as rewrite.path_prefix does (ReplacePrefixMatch, so a retired /v1 tree
 *           moves whole to /api), on any other route it replaces the whole path
 *           (ReplaceFullPath); unset, the request's path;
 *   query   the request's, unchanged ("?query" when query is not NULL or "").
 * *status is redirect.status, 302 when unset. Returns 0; -EINVAL when rt is not a redirect route
 * or there is no host; -ENOSPC when out is too small.
 */
int route_redirect_location(const struct reg_route *rt, const char *scheme, const char *host,
    uint16_t port, const char *path, const char *query, char *out, size_t outlen, int *status);

/* How one attempt to a backend ended. */
enum route_outcome {
	ROUTE_OUT_STATUS,          /* a response came back, with its status */
	ROUTE_OUT_CONNECT_FAILURE, /* the connection (or tunnel) to the backend could not be opened */
	ROUTE_OUT_RESET,           /* the connection or stream was reset before a response */
	ROUTE_OUT_REFUSED_STREAM,  /* HTTP/2 REFUSED_STREAM: the backend did not process it */
	ROUTE_OUT_TIMEOUT,         /* per_try_timeout elapsed without a response */
	ROUTE_OUT_GRPC,            /* a gRPC answer whose grpc-status (status) came before any
				      message: Trailers-Only, or trailers right after the head */
};

/*
 * Whether to try again after attempt number `attempt` (1 = the first try) ended with outcome o
 * (status is read for ROUTE_OUT_STATUS only). Allowed while attempt <= rt->retries: retries are
 * the attempts after the first. retry_on, as Envoy's (x-envoy-retry-on):
 *   5xx              any 5xx status, and every outcome without a response (connect failure,
 *                    reset, refused stream, per-try timeout);
 *   gateway-error    status 502, 503 or 504, and every outcome without a response (Envoy
 *                    counts those as the 502/503/504 they turn into);
 *   connect-failure  connect failure;
 *   reset            every outcome without a response (connect failure, reset, refused stream,
 *                    per-try timeout): unsafe for non-idempotent requests, as Gateway API
 *                    warns;
 *   refused-stream   refused stream;
 *   cancelled, deadline-exceeded, resource-exhausted, unavailable
 *                    a gRPC answer with that grpc-status (1, 4, 8, 14), as Envoy's
 *                    x-envoy-retry-grpc-on.
 * Without retry_on, a route with retries retries on connect-failure and refused-stream, the
 * failures where the backend certainly did not process the request (Istio's default for HTTP,
 * Gateway API's advice). The route's overall timeout is not a retriable outcome: when it
 * elapses the caller answers 504 without asking. Nor is anything once response bytes have been
 * sent downstream; that, and whether the request body can be replayed, is the caller's to know.
 */
bool route_should_retry(const struct reg_route *rt, int attempt, enum route_outcome o, int status);

/* Default base interval of the retry backoff when retry_backoff is unset (or 0s), as Envoy's. */
#define ROUTE_BACKOFF_BASE_MS 25

/*
 * Wait before retry number `attempt` (1 = the retry after the first try), Envoy's fully jittered
 * exponential backoff: with base B (retry_backoff, else 25 ms) the interval is
 * min(B * 2^(attempt-1), 10 * B) and the wait is uniform in [0, interval), taken from random as
 * (random * interval) >> 32. attempt < 1 is taken as 1.
 */
uint64_t route_backoff_ms(const struct reg_route *rt, int attempt, uint32_t random);

/* fault.delay: true, with *ms set, when this request is to be delayed (fault.delay_percent). */
bool route_fault_delay(const struct reg_route *rt, uint32_t random, uint64_t *ms);
/* fault.abort: true, with *status set, when this request is to be answered with that status. */
bool route_fault_abort(const struct reg_route *rt, uint32_t random, int *status);
/* mirror: true when a copy of this request goes to rt->mirror_p (mirror_percent). */
bool route_mirror(const struct reg_route *rt, uint32_t random);

/* True when a percentage p (0-100) holds for random (see the top of this file). */
bool route_percent_hit(uint64_t percent, uint32_t random);

#endif
