/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to src/nft: the policy routing of a workload namespace over rtnetlink (rules.h):
 * ip rule fwmark 0x111 lookup 100 and local 0.0.0.0/0 dev lo table 100, with their IPv6 twins,
 * and the loopback interface they need up.
 */
#ifndef AMESH_NFT_ROUTING_H
#define AMESH_NFT_ROUTING_H

#include "core/diag.h"
#include "nft/nl.h"

struct link_info {
	int index;
	unsigned flags;
};

/* The loopback interface's index and flags. Returns 0 or -errno with the error set. */
int routing_lo_info(struct nl *nl, struct link_info *li);
/* Brings lo up if it is down. Returns 0 or -errno. */
int routing_lo_up(struct nl *nl, const struct link_info *li);
/* Adds the rule and route of each family the namespace has; present ones are kept. */
int routing_add(struct nl *nl, int lo);
/* Deletes them; absent ones are not an error. */
int routing_del(struct nl *nl, int lo);
/* Adds "WHAT: ..." to problems for each one missing. Returns 0, or -errno with the error set when
 * the routing cannot be read. */
int routing_check(struct nl *nl, int lo, const char *what, struct diag *problems);

#endif
