/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Authorization: decides a connection (L4) or a request (L7) to a workload from the policies of
 * the registry, with Istio's AuthorizationPolicy semantics (DESIGN.md section 5,
 * amesh-registry(5) AUTHORIZATION).
 *
 * The policies considered are those of the destination workload's namespace whose selector
 * selects it (no selector: every workload of the namespace); policies of other namespaces never
 * apply. Then, in this order:
 *   1. any matching deny policy denies;
 *   2. no allow policy selects the workload: allow;
 *   3. any matching allow policy allows;
 *   4. otherwise deny.
 * A policy matches when every field it sets matches (fields are ANDed); a field matches when any
 * of its values matches (values are ORed); a not_ field matches when none of its values matches.
 * A policy that sets no from./to./when. field matches everything. Strings match as
 * kw_pattern_match: exact, "prefix*", "*suffix", "*".
 *
 * The source: a plaintext client (src_principal "") has no principal and no namespace, so it never
 * matches from.principals or from.namespaces - not even "*" - and always satisfies
 * from.not_principals and from.not_namespaces (it is not among them), as in Istio. The source
 * namespace is the one of the principal: src_namespace when given, else the NS of
 * "TD/ns/NS/sa/SA". A NULL src_ip matches no from.ip_blocks and satisfies from.not_ip_blocks;
 * an IPv4-mapped IPv6 address is matched as the IPv4 address.
 *
 * Evaluation reads the registry only and allocates nothing; it is safe on any thread that holds a
 * reference to the snapshot.
 */
#ifndef AMESH_POLICY_AUTHZ_H
#define AMESH_POLICY_AUTHZ_H

#include <stdint.h>

#include "config/registry.h"
#include "core/parse.h"

struct authz_l4_req {
	const char *src_principal; /* "TD/ns/NS/sa/SA" without spiffe://, or "" for a plaintext client */
	const char *src_namespace; /* "" if unknown */
	const struct ip_addr *src_ip;
	uint16_t dst_port; /* the workload's (target) port */
};

enum authz_decision { AUTHZ_ALLOW, AUTHZ_DENY };

/* The principal policies match, "TD/ns/NS/sa/SA", of a peer's SPIFFE ID (spiffe:// dropped). */
const char *authz_principal(const char *spiffe_id);

/*
 * L4 decision (ztunnel): evaluates from.principals, from.namespaces, from.ip_blocks, to.ports and
 * their not_ forms. A policy with L7 fields (has_l7) cannot be enforced here: an allow policy with
 * L7 fields never matches (so when it is the only allow policy of dst, L4 denies), a deny policy
 * with L7 fields matches on its L4 fields alone (fail closed).
 * *matched (when matched is not NULL) is set to the deciding policy: the deny or allow policy that
 * matched, or NULL when the connection is allowed because no allow policy selects dst or denied
 * because no allow policy matched.
 */
enum authz_decision authz_l4(const struct registry *r, const struct reg_workload *dst,
    const struct authz_l4_req *q, const struct reg_policy **matched);

/*
 * The L4 part of what a sidecar decides per request later (authz_l7): a policy with L7 fields
 * matches on its L4 fields when it allows (the request may still match it) and never when it
 * denies (the request may not). So a connection this denies, authz_l7 would deny whatever it
 * asks: the sidecar refuses it at once.
 */
enum authz_decision authz_l4_prefilter(const struct registry *r, const struct reg_workload *dst,
    const struct authz_l4_req *q, const struct reg_policy **matched);

/*
 * Looks up a request header by name, case-insensitively; returns its value or NULL when absent.
 * A header sent several times should be offered as its first value.
 */
typedef const char *(*authz_header_fn)(void *arg, const char *name);

struct authz_l7_req {
	struct authz_l4_req l4;
	const char *method; /* "GET" */
	const char *path;   /* request target; a query ("?...") or fragment is ignored for to.paths */
	const char *host;   /* :authority or Host; matched case-insensitively, with or without ":port" */
	authz_header_fn header; /* NULL: no headers (every when.headers condition fails) */
	void *header_arg;
};

/*
 * L7 decision (waypoint, sidecar): the same rules with every field of every policy evaluated,
 * L7 fields included (to.methods, to.paths, to.hosts, when.headers and not_ forms). A NULL method,
 * path or host matches no positive list of that field and satisfies its not_ list.
 */
enum authz_decision authz_l7(const struct registry *r, const struct reg_workload *dst,
    const struct authz_l7_req *q, const struct reg_policy **matched);

const char *authz_decision_name(enum authz_decision d);

#endif
