/* SPDX-License-Identifier: Apache-2.0 */
/* The policy routing of a workload namespace over rtnetlink (routing.h). */
#include "config.h"

#include <errno.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "nft/nl.h"
#include "nft/routing.h"
#include "nft/rules.h"

static int
link_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
	struct link_info *li = data;

	if (nlh->nlmsg_type == RTM_NEWLINK) {
		li->index = ifi->ifi_index;
		li->flags = ifi->ifi_flags;
	}
	return MNL_CB_OK;
}

int
routing_lo_info(struct nl *nl, struct link_info *li)
{
	char buf[MSG_BUF];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct ifinfomsg *ifi;
	int r;

	nlh->nlmsg_type = RTM_GETLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, "lo");
	li->index = 0;
	r = rt_talk(nl, nlh, link_cb, li);
	if (r == 0 && li->index == 0)
		r = -ENODEV;
	if (r != 0)
		nl_set_err(nl, "loopback interface: %s", strerror(-r));
	return r;
}

int
routing_lo_up(struct nl *nl, const struct link_info *li)
{
	char buf[MSG_BUF];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct ifinfomsg *ifi;
	int r;

	if (li->flags & IFF_UP)
		return 0;
	nlh->nlmsg_type = RTM_NEWLINK;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = li->index;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	r = rt_talk(nl, nlh, NULL, NULL);
	if (r != 0)
		nl_set_err(nl, "cannot bring the loopback interface up: %s", strerror(-r));
	return r;
}

static const char *
fam_name(int family)
{
	return family == AF_INET ? "IPv4" : "IPv6";
}

/* "fwmark 0x111 lookup 100": added with NLM_F_EXCL so an identical rule makes EEXIST. */
static struct nlmsghdr *
fwrule_msg(char *buf, int family, uint16_t type, uint16_t flags, bool with_prio)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct fib_rule_hdr *frh;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
	frh->family = (uint8_t)family;
	frh->action = FR_ACT_TO_TBL;
	frh->table = AMESH_ROUTE_TABLE;
	mnl_attr_put_u32(nlh, FRA_FWMARK, AMESH_CONNMARK);
	mnl_attr_put_u32(nlh, FRA_TABLE, AMESH_ROUTE_TABLE);
	if (with_prio)
		mnl_attr_put_u32(nlh, FRA_PRIORITY, AMESH_RULE_PRIORITY);
	return nlh;
}

/* "local 0.0.0.0/0 dev lo table 100" (or ::/0). */
static struct nlmsghdr *
local_route_msg(char *buf, int family, uint16_t type, uint16_t flags, int lo)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtmsg *rtm;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)family;
	rtm->rtm_dst_len = 0;
	rtm->rtm_table = AMESH_ROUTE_TABLE;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_HOST;
	rtm->rtm_type = RTN_LOCAL;
	mnl_attr_put_u32(nlh, RTA_TABLE, AMESH_ROUTE_TABLE);
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)lo);
	return nlh;
}

/* A namespace without IPv6 answers this way: its IPv6 half is skipped (EACCES: IPv6 disabled on
 * lo, found after the check in nl_open; EAFNOSUPPORT: no IPv6 at all). */
static bool
no_ipv6(int family, int r)
{
	return family == AF_INET6 && (r == -EAFNOSUPPORT || r == -EACCES);
}

int
routing_add(struct nl *nl, int lo)
{
	static const int fams[2] = { AF_INET, AF_INET6 };
	char buf[MSG_BUF];
	int r;

	for (int i = 0; i < (nl->ipv6 ? 2 : 1); i++) {
		r = rt_talk(nl, fwrule_msg(buf, fams[i], RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL,
		    true), NULL, NULL);
		if (no_ipv6(fams[i], r))
			continue;
		if (r != 0 && r != -EEXIST) {
			nl_set_err(nl, "%s rule fwmark 0x%x lookup %u: %s", fam_name(fams[i]),
			    AMESH_CONNMARK, AMESH_ROUTE_TABLE, strerror(-r));
			return r;
		}
		r = rt_talk(nl, local_route_msg(buf, fams[i], RTM_NEWROUTE,
		    NLM_F_CREATE | NLM_F_EXCL, lo), NULL, NULL);
		if (no_ipv6(fams[i], r))
			continue;
		if (r != 0 && r != -EEXIST) {
			nl_set_err(nl, "%s route local %s dev lo table %u: %s", fam_name(fams[i]),
			    fams[i] == AF_INET ? "0.0.0.0/0" : "::/0", AMESH_ROUTE_TABLE,
			    strerror(-r));
			return r;
		}
	}
	return 0;
}

/* Deletes every copy (any priority) until the kernel finds none. */
int
routing_del(struct nl *nl, int lo)
{
	static const int fams[2] = { AF_INET, AF_INET6 };
	char buf[MSG_BUF];
	int r = 0, first = 0;

	for (int i = 0; i < 2; i++) {
		for (int k = 0; k < 16; k++) {
			r = rt_talk(nl, fwrule_msg(buf, fams[i], RTM_DELRULE, 0, false), NULL, NULL);
			if (r != 0)
				break;
		}
		if (r != 0 && r != -ENOENT && !no_ipv6(fams[i], r)) {
			nl_set_err(nl, "cannot delete %s rule fwmark 0x%x lookup %u: %s",
			    fam_name(fams[i]), AMESH_CONNMARK, AMESH_ROUTE_TABLE, strerror(-r));
			first = first ? first : r;
		}
		for (int k = 0; k < 16; k++) {
			r = rt_talk(nl, local_route_msg(buf, fams[i], RTM_DELROUTE, 0, lo), NULL,
			    NULL);
			if (r != 0)
				break;
		}
		if (r != 0 && r != -ESRCH && r != -ENOENT && !no_ipv6(fams[i], r)) {
			nl_set_err(nl, "cannot delete %s route local %s dev lo table %u: %s",
			    fam_name(fams[i]), fams[i] == AF_INET ? "0.0.0.0/0" : "::/0",
			    AMESH_ROUTE_TABLE, strerror(-r));
			first = first ? first : r;
		}
	}
	return first;
}

struct routing_seen {
	int lo;
	bool rule[2], route[2];
	int idx; /* 0 IPv4, 1 IPv6: the family being dumped */
};

static int
rule_dump_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct fib_rule_hdr *frh = mnl_nlmsg_get_payload(nlh);
	struct routing_seen *s = data;
	const struct nlattr *a;
	uint32_t table = frh->table, mark = 0;
	bool has_mark = false;

	if (nlh->nlmsg_type != RTM_NEWRULE || frh->action != FR_ACT_TO_TBL)
		return MNL_CB_OK;
	mnl_attr_for_each(a, nlh, sizeof(*frh)) {
		if (mnl_attr_get_type(a) == FRA_TABLE && mnl_attr_get_payload_len(a) == 4)
			table = mnl_attr_get_u32(a);
		else if (mnl_attr_get_type(a) == FRA_FWMARK && mnl_attr_get_payload_len(a) == 4) {
			mark = mnl_attr_get_u32(a);
			has_mark = true;
		}
	}
	if (has_mark && mark == AMESH_CONNMARK && table == AMESH_ROUTE_TABLE)
		s->rule[s->idx] = true;
	return MNL_CB_OK;
}

static int
route_dump_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	struct routing_seen *s = data;
	const struct nlattr *a;
	uint32_t table = rtm->rtm_table, oif = 0;

	if (nlh->nlmsg_type != RTM_NEWROUTE || rtm->rtm_type != RTN_LOCAL || rtm->rtm_dst_len != 0)
		return MNL_CB_OK;
	mnl_attr_for_each(a, nlh, sizeof(*rtm)) {
		if (mnl_attr_get_type(a) == RTA_TABLE && mnl_attr_get_payload_len(a) == 4)
			table = mnl_attr_get_u32(a);
		else if (mnl_attr_get_type(a) == RTA_OIF && mnl_attr_get_payload_len(a) == 4)
			oif = mnl_attr_get_u32(a);
	}
	if (table == AMESH_ROUTE_TABLE && (int)oif == s->lo)
		s->route[s->idx] = true;
	return MNL_CB_OK;
}

static int
dump(struct nl *nl, uint16_t type, int family, size_t hdrlen, mnl_cb_t cb, void *data)
{
	char buf[MSG_BUF];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtgenmsg *g;

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	/* struct rtmsg and struct fib_rule_hdr both start with the family byte. */
	g = mnl_nlmsg_put_extra_header(nlh, hdrlen);
	g->rtgen_family = (unsigned char)family;
	return rt_talk(nl, nlh, cb, data);
}

int
routing_check(struct nl *nl, int lo, const char *what, struct diag *problems)
{
	struct routing_seen rs = { .lo = lo };
	int r;

	if (!nl->ipv6)
		rs.rule[1] = rs.route[1] = true; /* nothing to expect */
	for (rs.idx = 0; rs.idx < (nl->ipv6 ? 2 : 1); rs.idx++) {
		int fam = rs.idx == 0 ? AF_INET : AF_INET6;

		r = dump(nl, RTM_GETRULE, fam, sizeof(struct fib_rule_hdr), rule_dump_cb, &rs);
		if (r == 0)
			r = dump(nl, RTM_GETROUTE, fam, sizeof(struct rtmsg), route_dump_cb, &rs);
		if (no_ipv6(fam, r)) {
			rs.rule[1] = rs.route[1] = true;
			continue;
		}
		if (r != 0) {
			nl_set_err(nl, "cannot read the %s routing: %s", fam_name(fam), strerror(-r));
			return r;
		}
	}
	for (int i = 0; i < 2; i++) {
		if (!rs.rule[i])
			diag_add(problems, what, 0, "%s rule fwmark 0x%x lookup %u is missing",
			    fam_name(i == 0 ? AF_INET : AF_INET6), AMESH_CONNMARK, AMESH_ROUTE_TABLE);
		if (!rs.route[i])
			diag_add(problems, what, 0, "%s route local %s dev lo table %u is missing",
			    fam_name(i == 0 ? AF_INET : AF_INET6), i == 0 ? "0.0.0.0/0" : "::/0",
			    AMESH_ROUTE_TABLE);
	}
	return 0;
}
