/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to src/nft: the two netlink sockets (netfilter and route) bound to one workload
 * namespace, which rules.c (nftables) and routing.c (rtnetlink) share, and the error text every
 * operation leaves in the caller's buffer.
 */
#ifndef AMESH_NFT_NL_H
#define AMESH_NFT_NL_H

#include <libmnl/libmnl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Dumps come in messages of up to 32 KiB; the kernel sizes them after our receive buffer. */
#define NL_BUF 65536
/* One request: a header and a few attributes. */
#define MSG_BUF 8192

struct nl {
	struct mnl_socket *nf, *rt;
	bool ipv6; /* the namespace has IPv6 enabled on lo: its routing gets the IPv6 twins */
	uint32_t seq;
	const char *what;
	char *err;
	size_t errlen;
};

/* Writes "netns WHAT: message" into the caller's buffer, keeping the first error only. */
void nl_set_err(struct nl *nl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * Creates the netfilter and route netlink sockets inside netns_fd's namespace (-1: this one). The
 * thread is in the workload's namespace only between two setns() calls; the sockets stay bound
 * to it. Returns 0 or -errno with the error set.
 */
int nl_open(struct nl *nl, int netns_fd);
void nl_close(struct nl *nl);
/* Sends one request on sock and runs cb on each answer until the ack or the end of the dump.
 * Returns 0 or -errno. */
int nl_talk(struct mnl_socket *sock, struct nlmsghdr *nlh, mnl_cb_t cb, void *data);
/* An rtnetlink request, numbered on the shared sequence. */
int rt_talk(struct nl *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data);

#endif
