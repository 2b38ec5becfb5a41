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
enum { N_ADDRESS };
enum { WP_NAMESPACE, WP_SA, WP_ADDRESS, WP_NODE };
enum { WL_NAMESPACE, WL_SA, WL_NODE, WL_ADDRESSES, WL_LABELS, WL_PROTOCOL, WL_WAYPOINT, WL_MTLS };
enum { SV_NAMESPACE, SV_HOSTNAME, SV_VIP, SV_PORTS, SV_SELECTOR, SV_WAYPOINT };
enum {
	PO_NAMESPACE, PO_SELECTOR, PO_ACTION, PO_PRINCIPALS, PO_NOT_PRINCIPALS, PO_NAMESPACES,
	PO_NOT_NAMESPACES, PO_IP_BLOCKS, PO_NOT_IP_BLOCKS, PO_PORTS, PO_NOT_PORTS, PO_METHODS,
	PO_NOT_METHODS, PO_PATHS, PO_NOT_PATHS, PO_HOSTS, PO_NOT_HOSTS, PO_WHEN_HEADERS,
};
enum {
	RT_NAMESPACE, RT_SERVICE, RT_PATH_EXACT, RT_PATH_PREFIX, RT_PATH_REGEX, RT_HEADERS,
	RT_METHOD, RT_QUERY, RT_BACKENDS, RT_TIMEOUT, RT_PER_TRY, RT_RETRIES, RT_RETRY_ON,
	RT_BACKOFF, RT_DELAY, RT_DELAY_PCT, RT_ABORT, RT_ABORT_PCT, RT_MIRROR, RT_MIRROR_PCT,
	RT_REQ_SET, RT_REQ_ADD, RT_REQ_REMOVE, RT_RESP_SET, RT_RESP_ADD, RT_RESP_REMOVE,
	RT_REWRITE, RT_RD_SCHEME, RT_RD_HOST, RT_RD_PORT, RT_RD_PATH, RT_RD_STATUS,
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
