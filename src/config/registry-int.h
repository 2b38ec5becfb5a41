/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to the registry loader: the state of one load, shared by registry.c (parsing, the
 * snapshot and its lookups) and regcheck.c (the checks across entries and the indexes).
 */
#ifndef AMESH_CONFIG_REGISTRY_INT_H
#define AMESH_CONFIG_REGISTRY_INT_H

#include <stdbool.h>
#include <stdlib.h>

#include "config/registry.h"
#include "core/diag.h"

/* A VIP index key: the address as struct ip_addr, then the port, big-endian. */
#define VIP_KEY_LEN (sizeof(struct ip_addr) + 2)

/* The policies of one namespace, the value type of by_ns_policy. */
struct ns_policies {
	size_t n;
	const struct reg_policy *v[];
};

/* Parse state across all files of one load. */
struct builder {
	struct registry *r;
	struct diag *d;
	size_t cap[REG_NKINDS];
	const char *file;  /* current file (interned) */
	int kind;          /* current section's kind; -1 none/ignored */
	bool in_section;   /* a header, valid or not, has been seen in this file */
	struct reg_head *cur;
	size_t total;
	size_t diag_before; /* messages already in d when the load started */
};

/* Keyline of key idx of entry h, or the header line when the key was not set. */
static inline int
kline(const struct reg_head *h, int idx)
{
	return h->keyline[idx] != 0 ? abs(h->keyline[idx]) : h->line;
}

/* True if key idx was set to a valid value (a negative keyline marks an invalid one). */
static inline bool
has(const struct reg_head *h, int idx)
{
	return h->keyline[idx] > 0;
}

/* The index of each key in its kind's keyword table, for keyline[] and has(). */
enum { REG_N_ADDRESS };
enum { REG_WP_NAMESPACE, REG_WP_SA, REG_WP_ADDRESS, REG_WP_NODE, REG_WP_ALLOWED_NS };
enum { REG_NS_WAYPOINT };
enum {
	REG_WL_NAMESPACE, REG_WL_SA, REG_WL_NODE, REG_WL_ADDRESSES, REG_WL_LABELS, REG_WL_PROTOCOL,
	REG_WL_WAYPOINT, REG_WL_MTLS,
};
enum {
	REG_SV_NAMESPACE, REG_SV_HOSTNAME, REG_SV_VIP, REG_SV_PORTS, REG_SV_SELECTOR,
	REG_SV_WAYPOINT, REG_SV_EXTERNAL, REG_SV_ADDRESSES, REG_SV_FROM_PRINCIPALS,
	REG_SV_FROM_NAMESPACES, REG_SV_OD_5XX, REG_SV_OD_GATEWAY, REG_SV_OD_BASE, REG_SV_OD_MAX_TIME,
	REG_SV_OD_MAX_PCT, REG_SV_CP_MAX_CONN, REG_SV_CP_MAX_PENDING, REG_SV_CP_MAX_REQUESTS,
};
enum {
	REG_PO_NAMESPACE, REG_PO_SELECTOR, REG_PO_ACTION, REG_PO_PRINCIPALS, REG_PO_NOT_PRINCIPALS,
	REG_PO_NAMESPACES, REG_PO_NOT_NAMESPACES, REG_PO_IP_BLOCKS, REG_PO_NOT_IP_BLOCKS,
	REG_PO_PORTS, REG_PO_NOT_PORTS, REG_PO_METHODS, REG_PO_NOT_METHODS, REG_PO_PATHS,
	REG_PO_NOT_PATHS, REG_PO_HOSTS, REG_PO_NOT_HOSTS, REG_PO_WHEN_HEADERS,
};
enum {
	REG_RT_NAMESPACE, REG_RT_SERVICE, REG_RT_PATH_EXACT, REG_RT_PATH_PREFIX, REG_RT_PATH_REGEX,
	REG_RT_HEADERS, REG_RT_METHOD, REG_RT_QUERY, REG_RT_BACKENDS, REG_RT_TIMEOUT,
	REG_RT_PER_TRY, REG_RT_RETRIES, REG_RT_RETRY_ON, REG_RT_BACKOFF, REG_RT_DELAY,
	REG_RT_DELAY_PCT, REG_RT_ABORT, REG_RT_ABORT_PCT, REG_RT_MIRROR, REG_RT_MIRROR_PCT,
	REG_RT_REQ_SET, REG_RT_REQ_ADD, REG_RT_REQ_REMOVE, REG_RT_RESP_SET, REG_RT_RESP_ADD,
	REG_RT_RESP_REMOVE, REG_RT_REWRITE, REG_RT_RD_SCHEME, REG_RT_RD_HOST, REG_RT_RD_PORT,
	REG_RT_RD_PATH, REG_RT_RD_STATUS,
};

/* An error about key idx of entry h. */
#define ERR(h, idx, ...) diag_add(b->d, (h)->file, kline((h), (idx)), __VA_ARGS__)

/* The checks across entries, in order: required keys, addresses (and their index), workloads,
 * services, endpoints, policies, routes. Each problem is added to b->d. */
void registry_check(struct builder *b);
/* A named entry of the snapshot being built or in force; NULL when there is none. */
const void *registry_find_entry(const struct registry *r, enum reg_kind k, const char *name);
/* Whether a POSIX extended regex stays within what regcomp() may expand it to (regex-cost.c). */
bool regex_size_ok(const char *re);

#endif
