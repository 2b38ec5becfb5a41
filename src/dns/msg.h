/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS messages for the DNS proxy (amesh-ztunnel(8) DNS PROXY): what a query asks, the answer the
 * registry gives to it, and the checks a forwarded answer must pass. Messages are read and written
 * with ldns; nothing here does I/O, so the query path can be fuzzed whole (tests/fuzz/fuzz-dns.c).
 *
 * Names the registry answers, for a workload of namespace NS (lower-cased, without the final dot):
 *   a service's hostname (default NAME.NS.svc.DOMAIN), and its short forms NAME (a service of NS),
 *   NAME.NSX, NAME.NSX.svc and NAME.NSX.svc.DOMAIN (service NAME of namespace NSX).
 * Every other name that is DOMAIN or under it gets NXDOMAIN here; the rest is forwarded.
 */
#ifndef AMESH_DNS_MSG_H
#define AMESH_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"

#define DNS_HEADER_LEN 12
#define DNS_MAX_MSG 65535
/* The UDP answer size a client without EDNS0 takes (RFC 1035). */
#define DNS_UDP_MIN 512

/* What to do with a query. */
enum dns_action {
	DNS_DROP,    /* not a query we answer (too short for a header, a response): say nothing */
	DNS_REPLY,   /* *out is the answer */
	DNS_FORWARD, /* not ours: send it to an upstream resolver */
};

/* How a query ended, for metrics (dns_result_name). */
enum dns_result {
	DNS_RES_REGISTRY,  /* answered from the registry (NOERROR, possibly no record of the type) */
	DNS_RES_NXDOMAIN,  /* a name under the mesh domain the registry does not have */
	DNS_RES_FORWARDED, /* answered by an upstream resolver */
	DNS_RES_SERVFAIL,  /* no upstream answered in time, or too many queries in flight */
	DNS_RES_FORMERR,   /* malformed query */
	DNS_RES_NOTIMP,    /* an opcode other than QUERY */
	DNS_RES_DROPPED,   /* not answered at all */
	DNS_NRESULTS
};

/* The query types counted by name; the others count as "other" (dns_type_name). */
enum dns_qtype_class { DNS_QT_A, DNS_QT_AAAA, DNS_QT_PTR, DNS_QT_SRV, DNS_QT_TXT, DNS_QT_MX,
	DNS_QT_CNAME, DNS_QT_HTTPS, DNS_QT_ANY, DNS_QT_OTHER, DNS_QT_NONE, DNS_NQTYPES };

/* Where the registry's answers come from for one query. */
struct dns_zone {
	const struct registry *reg; /* the snapshot in force (may be NULL: nothing is ours) */
	const char *ns;             /* the asking workload's namespace (short names) */
	const char *domain;         /* the mesh domain, lower case, no final dot ("cluster.local") */
	uint32_t ttl;               /* seconds, for the registry's records */
};

/* What a query asked (filled in as far as it could be read). */
struct dns_query_info {
	int qtype;   /* enum dns_qtype_class */
	int result;  /* enum dns_result, when the action is DNS_REPLY or DNS_DROP */
	char name[256]; /* the name asked, lower case, no final dot ("" for the root or none) */
	size_t max_answer; /* the largest UDP answer the client takes (512, or its EDNS0 size) */
};

/*
 * Handles one query received over UDP (tcp false) or TCP. Returns DNS_REPLY with *out (malloc'd,
 * the caller frees it) and *outlen set, DNS_FORWARD, or DNS_DROP. A malformed message with a
 * header gets FORMERR, another opcode than QUERY NOTIMP. A UDP answer larger than the client
 * takes is sent truncated (TC). info is always filled in.
 */
enum dns_action dns_handle_query(const struct dns_zone *z, const uint8_t *q, size_t len, bool tcp,
    uint8_t **out, size_t *outlen, struct dns_query_info *info);

/* A SERVFAIL answer to query q (header and question copied). Returns a malloc'd message or NULL
 * when q cannot be answered (no header, out of memory). */
uint8_t *dns_servfail(const uint8_t *q, size_t len, size_t *outlen);

/* True when reply r is an answer to query q: a response, same ID, the same question. */
bool dns_reply_matches(const uint8_t *q, size_t qlen, const uint8_t *r, size_t rlen);

/* The TC flag of a message with a header. */
bool dns_truncated(const uint8_t *m, size_t len);

const char *dns_result_name(int result);
const char *dns_type_name(int qtype_class);

#endif
