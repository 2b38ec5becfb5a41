/* SPDX-License-Identifier: Apache-2.0 */
/* Netlink sockets bound to a workload namespace (nl.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "nft/nl.h"

void
nl_set_err(struct nl *nl, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (nl->err == NULL || nl->errlen == 0 || nl->err[0] != '\0')
		return;
	n = snprintf(nl->err, nl->errlen, "netns %s: ", nl->what);
	if (n < 0 || (size_t)n >= nl->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(nl->err + n, nl->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

/* --- entering the namespace --------------------------------------------------------------- */

void
nl_close(struct nl *nl)
{
	if (nl->nf != NULL)
		mnl_socket_close(nl->nf);
	if (nl->rt != NULL)
		mnl_socket_close(nl->rt);
	nl->nf = nl->rt = NULL;
}

static struct mnl_socket *
nl_socket(int bus, int *e)
{
	struct mnl_socket *s = mnl_socket_open2(bus, SOCK_CLOEXEC);

	if (s == NULL) {
		*e = errno;
		return NULL;
	}
	if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) != 0) {
		*e = errno;
		mnl_socket_close(s);
		return NULL;
	}
	return s;
}

/* Read from inside the namespace: /proc/sys/net shows the namespace of the opener. */
static bool
ipv6_enabled(void)
{
	FILE *fp = fopen("/proc/sys/net/ipv6/conf/lo/disable_ipv6", "re");
	int c;

	if (fp == NULL)
		return false; /* no IPv6 in this kernel */
	c = fgetc(fp);
	fclose(fp);
	return c == '0';
}

int
nl_open(struct nl *nl, int netns_fd)
{
	int self = -1, e = 0;

	nl->seq = (uint32_t)time(NULL);
	if (netns_fd >= 0) {
		self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (self < 0) {
			e = errno;
			nl_set_err(nl, "cannot open this thread's network namespace: %s", strerror(e));
			return -e;
		}
		if (setns(netns_fd, CLONE_NEWNET) != 0) {
			e = errno;
			close(self);
			nl_set_err(nl, "cannot enter the namespace: %s", e == EINVAL ?
			    "not a network namespace" : strerror(e));
			return -e;
		}
	}
	nl->ipv6 = ipv6_enabled();
	nl->nf = nl_socket(NETLINK_NETFILTER, &e);
	if (nl->nf != NULL)
		nl->rt = nl_socket(NETLINK_ROUTE, &e);
	if (self >= 0) {
		/* Going on in the wrong namespace would put every later socket there: stop. */
		if (setns(self, CLONE_NEWNET) != 0)
			fatal("netns %s: cannot return to the original network namespace", nl->what);
		close(self);
	}
	if (nl->nf == NULL || nl->rt == NULL) {
		nl_close(nl);
		nl_set_err(nl, "netlink socket: %s", strerror(e));
		return -e;
	}
	return 0;
}

int
nl_talk(struct mnl_socket *sock, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	uint32_t portid = mnl_socket_get_portid(sock);
	char *buf;
	ssize_t n;
	int r;

	if (mnl_socket_sendto(sock, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	buf = malloc(NL_BUF);
	if (buf == NULL)
		return -ENOMEM;
	do {
		n = mnl_socket_recvfrom(sock, buf, NL_BUF);
		if (n < 0) {
			r = -errno;
			break;
		}
		r = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, cb, data);
		if (r < 0)
			r = errno > 0 ? -errno : -EPROTO;
	} while (r > 0);
	free(buf);
	return r < 0 ? r : 0;
}

int
rt_talk(struct nl *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	nlh->nlmsg_seq = ++nl->seq;
	return nl_talk(nl->rt, nlh, cb, data);
}
