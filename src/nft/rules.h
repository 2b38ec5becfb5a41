/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Traffic interception inside a workload's network namespace (DESIGN.md section 2): the nftables
 * table "inet amesh", written through libnftnl in one atomic batch, and the policy routing that
 * brings replies of transparently delivered connections back to the proxy (rtnetlink via libmnl):
 *
 *   ip rule   fwmark 0x111 lookup 100 (priority 32764)     and its IPv6 twin
 *   ip route  local 0.0.0.0/0 dev lo table 100             and local ::/0 dev lo table 100
 *
 * A namespace is named by an open file descriptor (from open("/run/netns/NAME") or
 * "/proc/PID/ns/net"); -1 means the caller's own namespace (the sidecar). The calling thread enters
 * the namespace only to create its netlink sockets and returns at once: a netlink socket stays bound
 * to the namespace it was created in, so every later request goes there from the original
 * namespace. This needs CAP_SYS_ADMIN (setns) and CAP_NET_ADMIN, and affects only the calling
 * thread, so it is safe in a threaded process too; no fork, no helper process.
 *
 * Every function writes a message naming the namespace (the "what" argument, usually its path)
 * and the netlink error into err when it fails.
 */
#ifndef AMESH_NFT_RULES_H
#define AMESH_NFT_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/diag.h"
#include "net/netns.h" /* AMESH_MARK */

#define AMESH_NFT_TABLE "amesh"     /* family inet */
#define AMESH_CONNMARK 0x111u       /* ct mark of connections the proxy delivered inbound */
#define AMESH_ROUTE_TABLE 100u      /* policy routing table for replies to those connections */
#define AMESH_RULE_PRIORITY 32764u  /* of the fwmark rule: before "main" (32766), like Istio */

struct conf_proxy;

/* What the rules redirect to; from [ztunnel] (or [sidecar]) of amesh.conf. */
struct nft_rules_params {
	uint16_t outbound_port;          /* TCP leaving the workload -> here (15001) */
	uint16_t inbound_plaintext_port; /* TCP arriving, except to hbone_port -> here (15006) */
	uint16_t hbone_port;             /* left alone on the way in (15008) */
	uint16_t dns_port;               /* UDP/TCP port 53 -> here when dns_capture (15053) */
	bool dns_capture;
	/* Also left alone on the way in: a sidecar's own metrics and readiness ports, which live
	 * in the workload's namespace (none for a ztunnel, whose endpoints are on the host). */
	uint16_t pass_inbound[2];
	size_t n_pass_inbound;
	/* Who the rules belong to, kept as the table's comment ("ztunnel NAME" or "sidecar NAME",
	 * amesh-cni(8)) so that any later add or del can tell whose namespace this is; NULL: none. */
	const char *owner;
};

/* The longest owner comment kept (the kernel allows 256 bytes of table userdata). */
#define NFT_OWNER_MAX 240

/* The owner comment of one workload's rules: "ztunnel NAME" or, for its own sidecar, "sidecar
 * NAME". The one format amesh cni and amesh sidecar write and compare. */
void nft_rules_owner_format(char *buf, size_t len, bool sidecar, const char *workload);

void nft_rules_params_from_conf(struct nft_rules_params *p, const struct conf_proxy *px);
/* The same for a sidecar: [sidecar]'s ports, and its metrics and readiness ports passed when they
 * listen beyond loopback (so that scrapes and probes from outside reach them). */
void nft_rules_params_for_sidecar(struct nft_rules_params *p, const struct conf_proxy *px);

/*
 * Installs the table and the policy routing in the namespace of netns_fd. The table is deleted (if
 * present) and created with its chains and rules in the same batch, so the namespace sees either
 * the old rules or the new ones, and installing twice leaves the same state. Routing entries that
 * exist already are kept. The loopback interface is brought up if it is down: the redirects deliver
 * through it. IPv6 routing is skipped when the namespace has no IPv6. Returns 0 or -errno; when
 * the routing fails the new table stays (fail closed): the caller removes it if the namespace had
 * none before.
 */
int nft_rules_install(int netns_fd, const char *what, const struct nft_rules_params *p, char *err,
    size_t errlen);

/*
 * Deletes the table, the fwmark rules and the table-100 local routes from the namespace; what is
 * absent already is not an error, so removing twice is fine. Returns 0 or -errno.
 */
int nft_rules_remove(int netns_fd, const char *what, char *err, size_t errlen);

/*
 * Whether the namespace holds table inet amesh, and its owner comment. Returns 1 (present; owner
 * is its comment, "" when it has none: rules of an older amesh), 0 (absent), or -errno with err.
 */
int nft_rules_owner(int netns_fd, const char *what, char *owner, size_t len, char *err,
    size_t errlen);

/*
 * Compares the namespace with what nft_rules_install(p) would leave: the table, each chain's type,
 * hook and priority, every rule, and the routing entries. Each difference is added to problems as
 * "WHAT: message". Returns 0 when it could look (problems may still have been added), or -errno
 * with err set when it could not (the namespace cannot be entered, netlink failed).
 */
int nft_rules_check(int netns_fd, const char *what, const struct nft_rules_params *p,
    struct diag *problems, char *err, size_t errlen);

#endif
