/* SPDX-License-Identifier: Apache-2.0 */
/* The interception rules of rules.h: one libnftnl batch per namespace (routing.c: the rest). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/fib_rules.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config/conf.h"
#include "core/log.h"
#include "nft/nl.h"
#include "nft/routing.h"
#include "nft/rules.h"

/* Upper bound on messages in one batch: 4 chains, at most 13 rules, the table three times. */
#define BATCH_MAX 32

void
nft_rules_params_from_conf(struct nft_rules_params *p, const struct conf_proxy *px)
{
	p->outbound_port = px->outbound_port;
	p->inbound_plaintext_port = px->inbound_plaintext_port;
	p->hbone_port = px->hbone_port;
	p->dns_port = px->dns_port;
	p->dns_capture = px->dns_capture;
	p->n_pass_inbound = 0;
	p->owner = NULL;
}

static bool
is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	return ss->ss_family == AF_INET6 &&
	    IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static uint16_t
port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port :
	    ((const struct sockaddr_in *)ss)->sin_port);
}

void
nft_rules_owner_format(char *buf, size_t len, bool sidecar, const char *workload)
{
	snprintf(buf, len, "%s %s", sidecar ? "sidecar" : "ztunnel", workload);
}

void
nft_rules_params_for_sidecar(struct nft_rules_params *p, const struct conf_proxy *px)
{
	const struct sockaddr_storage *a[2] = { &px->metrics_address, &px->readiness_address };

	nft_rules_params_from_conf(p, px);
	for (int i = 0; i < 2; i++)
		if (!is_loopback(a[i]) && port_of(a[i]) != 0)
			p->pass_inbound[p->n_pass_inbound++] = port_of(a[i]);
}

/* --- nftables ----------------------------------------------------------------------------- */

enum fam { FAM_V4, FAM_V6 };

static struct nftnl_expr *
expr_new(struct nftnl_rule *r, const char *name)
{
	struct nftnl_expr *e = nftnl_expr_alloc(name);

	if (e == NULL)
		fatalx("out of memory");
	nftnl_rule_add_expr(r, e);
	return e;
}

static void
x_meta_load(struct nftnl_rule *r, uint32_t key)
{
	struct nftnl_expr *e = expr_new(r, "meta");

	nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
	nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
}

static void
x_cmp(struct nftnl_rule *r, uint32_t op, const void *data, uint32_t len)
{
	struct nftnl_expr *e = expr_new(r, "cmp");

	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
	nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
}

static void
x_cmp_u8(struct nftnl_rule *r, uint32_t op, uint8_t v)
{
	x_cmp(r, op, &v, sizeof(v));
}

static void
x_cmp_u32(struct nftnl_rule *r, uint32_t op, uint32_t v)
{
	x_cmp(r, op, &v, sizeof(v));
}

static void
x_payload(struct nftnl_rule *r, uint32_t base, uint32_t off, uint32_t len)
{
	struct nftnl_expr *e = expr_new(r, "payload");

	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
	nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
}

/* meta nfproto ipv4|ipv6 */
static void
m_family(struct nftnl_rule *r, enum fam f)
{
	x_meta_load(r, NFT_META_NFPROTO);
	x_cmp_u8(r, NFT_CMP_EQ, f == FAM_V4 ? NFPROTO_IPV4 : NFPROTO_IPV6);
}

/* meta l4proto tcp|udp */
static void
m_l4proto(struct nftnl_rule *r, uint8_t proto)
{
	x_meta_load(r, NFT_META_L4PROTO);
	x_cmp_u8(r, NFT_CMP_EQ, proto);
}

/* ip daddr != 127.0.0.1, ip6 daddr != ::1 (after m_family) */
static void
m_not_loopback(struct nftnl_rule *r, enum fam f)
{
	if (f == FAM_V4) {
		struct in_addr a = { htonl(INADDR_LOOPBACK) };

		x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
		x_cmp(r, NFT_CMP_NEQ, &a, sizeof(a));
	} else {
		x_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 24, 16);
		x_cmp(r, NFT_CMP_NEQ, &in6addr_loopback, sizeof(in6addr_loopback));
	}
}

/* th dport OP port (after m_l4proto) */
static void
m_dport(struct nftnl_rule *r, uint32_t op, uint16_t port)
{
	uint16_t be = htons(port);

	x_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
	x_cmp(r, op, &be, sizeof(be));
}

static void
m_mark(struct nftnl_rule *r, uint32_t op, uint32_t mark)
{
	x_meta_load(r, NFT_META_MARK);
	x_cmp_u32(r, op, mark);
}

static void
m_ctmark(struct nftnl_rule *r, uint32_t mark)
{
	struct nftnl_expr *e = expr_new(r, "ct");

	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	x_cmp_u32(r, NFT_CMP_EQ, mark);
}

static void
m_oifname(struct nftnl_rule *r, const char *name)
{
	char pad[IFNAMSIZ] = { 0 };

	memcpy(pad, name, strlen(name));
	x_meta_load(r, NFT_META_OIFNAME);
	x_cmp(r, NFT_CMP_EQ, pad, sizeof(pad));
}

static void
v_accept(struct nftnl_rule *r)
{
	struct nftnl_expr *e = expr_new(r, "immediate");

	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
}

/* redirect to :port (to the primary address of the incoming interface, loopback for output) */
static void
v_redirect(struct nftnl_rule *r, uint16_t port)
{
	uint16_t be = htons(port);
	struct nftnl_expr *e = expr_new(r, "immediate");

	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
	nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &be, sizeof(be));
	e = expr_new(r, "redir");
	nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
	/* The kernel reports max = min when only min is given; say it, so check compares equal. */
	nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_REG_PROTO_MAX, NFT_REG_1);
	nftnl_expr_set_u32(e, NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
}

/* ct mark set 0x111 */
static void
v_set_ctmark(struct nftnl_rule *r, uint32_t mark)
{
	struct nftnl_expr *e = expr_new(r, "immediate");

	nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
	nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &mark, sizeof(mark));
	e = expr_new(r, "ct");
	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_SREG, NFT_REG_1);
}

/* meta mark set ct mark */
static void
v_restore_mark(struct nftnl_rule *r)
{
	struct nftnl_expr *e = expr_new(r, "ct");

	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
	nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	e = expr_new(r, "meta");
	nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, NFT_META_MARK);
	nftnl_expr_set_u32(e, NFTNL_EXPR_META_SREG, NFT_REG_1);
}

struct chain_spec {
	const char *name, *type;
	uint32_t hook;
	int32_t prio;
};

/* Base chains; nat at dstnat (-100) like Istio, the mark chains at mangle (-150). */
static const struct chain_spec chains[] = {
	{ "prerouting", "nat", NF_INET_PRE_ROUTING, -100 },
	{ "output", "nat", NF_INET_LOCAL_OUT, -100 },
	{ "mangle_prerouting", "filter", NF_INET_PRE_ROUTING, -150 },
	/* A route chain: a mark set here re-routes the packet, through table 100. */
	{ "mangle_output", "route", NF_INET_LOCAL_OUT, -150 },
};
#define NCHAINS (sizeof(chains) / sizeof(chains[0]))

struct ruleset {
	struct nftnl_rule *r[BATCH_MAX];
	size_t n;
};

static struct nftnl_rule *
rule_new(struct ruleset *rs, const char *chain)
{
	struct nftnl_rule *r = nftnl_rule_alloc();

	if (r == NULL || rs->n == BATCH_MAX)
		fatalx("out of memory building rules");
	nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, AMESH_NFT_TABLE);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	rs->r[rs->n++] = r;
	return r;
}

static void
ruleset_free(struct ruleset *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		nftnl_rule_free(rs->r[i]);
	rs->n = 0;
}

/* DESIGN.md section 2, in chain order: the one description that install and check share. */
static void
ruleset_build(struct ruleset *rs, const struct nft_rules_params *p)
{
	struct nftnl_rule *r;

	rs->n = 0;
	/* Inbound TCP except HBONE, to loopback, or from the proxy itself -> inbound_plaintext_port. */
	for (int f = FAM_V4; f <= FAM_V6; f++) {
		r = rule_new(rs, "prerouting");
		m_family(r, (enum fam)f);
		m_l4proto(r, IPPROTO_TCP);
		m_not_loopback(r, (enum fam)f);
		m_dport(r, NFT_CMP_NEQ, p->hbone_port);
		for (size_t i = 0; i < p->n_pass_inbound; i++)
			m_dport(r, NFT_CMP_NEQ, p->pass_inbound[i]);
		m_mark(r, NFT_CMP_NEQ, AMESH_MARK);
		v_redirect(r, p->inbound_plaintext_port);
	}
	/* The proxy's own sockets and connections it delivered pass. */
	r = rule_new(rs, "output");
	m_mark(r, NFT_CMP_EQ, AMESH_MARK);
	v_accept(r);
	r = rule_new(rs, "output");
	m_ctmark(r, AMESH_CONNMARK);
	v_accept(r);
	/* DNS before the loopback exemption, so a local stub resolver (127.0.0.53) is captured too. */
	if (p->dns_capture) {
		static const uint8_t protos[2] = { IPPROTO_UDP, IPPROTO_TCP };

		for (int i = 0; i < 2; i++) {
			r = rule_new(rs, "output");
			m_l4proto(r, protos[i]);
			m_dport(r, NFT_CMP_EQ, 53);
			v_redirect(r, p->dns_port);
		}
	}
	/* The application talking to its own address goes through lo and stays uncaptured (as in
	 * Istio): netfilter does NAT once per connection, so prerouting does not see it either. */
	for (int f = FAM_V4; f <= FAM_V6; f++) {
		r = rule_new(rs, "output");
		m_oifname(r, "lo");
		m_family(r, (enum fam)f);
		m_not_loopback(r, (enum fam)f);
		v_accept(r);
	}
	/* Everything else in TCP -> outbound_port. */
	for (int f = FAM_V4; f <= FAM_V6; f++) {
		r = rule_new(rs, "output");
		m_family(r, (enum fam)f);
		m_l4proto(r, IPPROTO_TCP);
		m_not_loopback(r, (enum fam)f);
		v_redirect(r, p->outbound_port);
	}
	/* Connections the proxy delivered (its sockets carry 0x539) get ct mark 0x111 ... */
	r = rule_new(rs, "mangle_prerouting");
	m_mark(r, NFT_CMP_EQ, AMESH_MARK);
	v_set_ctmark(r, AMESH_CONNMARK);
	/* ... and the workload's replies on them take mark 0x111, hence table 100, back to it. */
	r = rule_new(rs, "mangle_output");
	m_ctmark(r, AMESH_CONNMARK);
	v_restore_mark(r);
}

/* The table; with owner, its comment (what `nft list` shows) names who installed it. */
static struct nftnl_table *
table_new(const char *owner)
{
	struct nftnl_table *t = nftnl_table_alloc();

	if (t == NULL)
		fatalx("out of memory");
	nftnl_table_set_u32(t, NFTNL_TABLE_FAMILY, NFPROTO_INET);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, AMESH_NFT_TABLE);
	if (owner != NULL && *owner != '\0') {
		struct nftnl_udata_buf *ud = nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN);

		if (ud == NULL || !nftnl_udata_put_strz(ud, NFTNL_UDATA_TABLE_COMMENT, owner))
			fatalx("out of memory");
		nftnl_table_set_data(t, NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(ud),
		    nftnl_udata_buf_len(ud));
		nftnl_udata_buf_free(ud);
	}
	return t;
}

static struct nftnl_chain *
chain_new(const struct chain_spec *cs)
{
	struct nftnl_chain *c = nftnl_chain_alloc();

	if (c == NULL)
		fatalx("out of memory");
	nftnl_chain_set_u32(c, NFTNL_CHAIN_FAMILY, NFPROTO_INET);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, AMESH_NFT_TABLE);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, cs->name);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, cs->type);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, cs->hook);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, cs->prio);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
	return c;
}

struct batch {
	struct mnl_nlmsg_batch *b;
	char *buf;
	uint32_t first_seq, seq;
	char label[BATCH_MAX + 4][40]; /* what each message did, by seq - first_seq */
	size_t nacks;                 /* messages that ask for an ack */
};

static struct nlmsghdr *
batch_msg(struct batch *bt, uint16_t type, uint16_t flags, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static struct nlmsghdr *
batch_msg(struct batch *bt, uint16_t type, uint16_t flags, const char *fmt, ...)
{
	size_t i = bt->seq - bt->first_seq;
	struct nlmsghdr *nlh;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bt->label[i], sizeof(bt->label[i]), fmt, ap);
	va_end(ap);
	nlh = nftnl_nlmsg_build_hdr(mnl_nlmsg_batch_current(bt->b), type, NFPROTO_INET,
	    flags | NLM_F_ACK, bt->seq++);
	bt->nacks++;
	return nlh;
}

/*
 * One transaction: "add table; delete table" makes the delete succeed whether or not the table
 * was there; with install, the table, its chains and rules follow. The kernel applies all of it
 * or none.
 */
static void
batch_build(struct batch *bt, const struct nft_rules_params *p)
{
	struct nftnl_table *t = table_new(NULL);
	struct nlmsghdr *nlh;

	nftnl_batch_begin(mnl_nlmsg_batch_current(bt->b), bt->seq++);
	mnl_nlmsg_batch_next(bt->b);
	nlh = batch_msg(bt, NFT_MSG_NEWTABLE, NLM_F_CREATE, "table inet %s", AMESH_NFT_TABLE);
	nftnl_table_nlmsg_build_payload(nlh, t);
	mnl_nlmsg_batch_next(bt->b);
	nlh = batch_msg(bt, NFT_MSG_DELTABLE, 0, "delete table inet %s", AMESH_NFT_TABLE);
	nftnl_table_nlmsg_build_payload(nlh, t);
	mnl_nlmsg_batch_next(bt->b);
	if (p != NULL) {
		struct ruleset rs;
		size_t k[NCHAINS] = { 0 };

		struct nftnl_table *owned = table_new(p->owner);

		nlh = batch_msg(bt, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, "table inet %s",
		    AMESH_NFT_TABLE);
		nftnl_table_nlmsg_build_payload(nlh, owned);
		nftnl_table_free(owned);
		mnl_nlmsg_batch_next(bt->b);
		for (size_t i = 0; i < NCHAINS; i++) {
			struct nftnl_chain *c = chain_new(&chains[i]);

			nlh = batch_msg(bt, NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, "chain %s",
			    chains[i].name);
			nftnl_chain_nlmsg_build_payload(nlh, c);
			mnl_nlmsg_batch_next(bt->b);
			nftnl_chain_free(c);
		}
		ruleset_build(&rs, p);
		for (size_t i = 0; i < rs.n; i++) {
			const char *cn = nftnl_rule_get_str(rs.r[i], NFTNL_RULE_CHAIN);
			size_t ci = 0;

			while (ci < NCHAINS - 1 && strcmp(chains[ci].name, cn) != 0)
				ci++;
			nlh = batch_msg(bt, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND,
			    "rule %zu of chain %s", ++k[ci], cn);
			nftnl_rule_nlmsg_build_payload(nlh, rs.r[i]);
			mnl_nlmsg_batch_next(bt->b);
		}
		ruleset_free(&rs);
	}
	nftnl_batch_end(mnl_nlmsg_batch_current(bt->b), bt->seq++);
	mnl_nlmsg_batch_next(bt->b);
	nftnl_table_free(t);
}

/*
 * Sends the batch and collects one ack per message. The kernel processes a netfilter batch inside
 * sendmsg(), so the answers are queued by the time it returns; the poll is a safety net.
 */
static int
batch_run(struct nl *nl, const struct nft_rules_params *p)
{
	struct batch *bt = calloc(1, sizeof(*bt));
	size_t acks = 0;
	int r = 0, fd;

	if (bt == NULL || (bt->buf = malloc(NL_BUF)) == NULL) {
		free(bt);
		nl_set_err(nl, "nftables: out of memory");
		return -ENOMEM;
	}
	bt->b = mnl_nlmsg_batch_start(bt->buf, NL_BUF);
	bt->first_seq = bt->seq = ++nl->seq;
	batch_build(bt, p);
	nl->seq = bt->seq;
	fd = mnl_socket_get_fd(nl->nf);
	if (mnl_socket_sendto(nl->nf, mnl_nlmsg_batch_head(bt->b), mnl_nlmsg_batch_size(bt->b)) < 0) {
		r = -errno;
		nl_set_err(nl, "nftables: cannot send the batch: %s", strerror(-r));
		goto out;
	}
	while (acks < bt->nacks && r == 0) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		const struct nlmsghdr *nlh;
		ssize_t got;
		int pr, n;

		do
			pr = poll(&pfd, 1, 5000);
		while (pr < 0 && errno == EINTR);
		if (pr <= 0) {
			r = pr == 0 ? -ETIMEDOUT : -errno;
			nl_set_err(nl, "nftables: no answer to the batch: %s", strerror(-r));
			break;
		}
		got = recv(fd, bt->buf, NL_BUF, 0);
		if (got < 0) {
			r = -errno;
			nl_set_err(nl, "nftables: %s", strerror(-r));
			break;
		}
		n = (int)got;
		for (nlh = (const struct nlmsghdr *)bt->buf; mnl_nlmsg_ok(nlh, n);
		     nlh = mnl_nlmsg_next(nlh, &n)) {
			const struct nlmsgerr *e;
			size_t i = nlh->nlmsg_seq - bt->first_seq;

			if (nlh->nlmsg_type != NLMSG_ERROR)
				continue;
			e = mnl_nlmsg_get_payload(nlh);
			acks++;
			if (e->error != 0 && r == 0) {
				r = e->error;
				nl_set_err(nl, "nftables: %s: %s", i < BATCH_MAX + 4 ? bt->label[i] :
				    "batch", strerror(-r));
			}
		}
	}
out:
	mnl_nlmsg_batch_stop(bt->b);
	free(bt->buf);
	free(bt);
	return r;
}

/* --- check -------------------------------------------------------------------------------- */

/* A rule's expressions as text, the form `nft --debug=netlink` shows; table and handle left out. */
static char *
rule_text(const struct nftnl_rule *r)
{
	struct nftnl_expr_iter *it = nftnl_expr_iter_create(r);
	struct nftnl_expr *e;
	size_t len = 0, cap = 1024;
	char *s = malloc(cap);

	if (it == NULL || s == NULL)
		fatalx("out of memory");
	s[0] = '\0';
	while ((e = nftnl_expr_iter_next(it)) != NULL) {
		char one[512];
		int n = nftnl_expr_snprintf(one, sizeof(one), e, NFTNL_OUTPUT_DEFAULT, 0);
		size_t need;

		if (n < 0)
			n = 0;
		need = len + (size_t)n + 32;
		if (need > cap) {
			cap = need * 2;
			if ((s = realloc(s, cap)) == NULL)
				fatalx("out of memory");
		}
		len += (size_t)snprintf(s + len, cap - len, "[ %s %s]",
		    nftnl_expr_get_str(e, NFTNL_EXPR_NAME), one);
	}
	nftnl_expr_iter_destroy(it);
	return s;
}

struct got_chain {
	struct nftnl_chain *c;
	char *rules[BATCH_MAX];
	size_t n;
};

struct dump_state {
	struct got_chain ch[16];
	size_t n;
	size_t other; /* chains past the array */
	int table;    /* 1 when the table was seen */
	char owner[NFT_OWNER_MAX]; /* its comment, "" when it has none */
};

/* The table comment from a table's userdata (TLV), into owner. */
static void
table_owner(const struct nftnl_table *t, char *owner, size_t len)
{
	const struct nftnl_udata *attr;
	const void *data;
	uint32_t dlen = 0;

	owner[0] = '\0';
	if (!nftnl_table_is_set(t, NFTNL_TABLE_USERDATA) ||
	    (data = nftnl_table_get_data(t, NFTNL_TABLE_USERDATA, &dlen)) == NULL)
		return;
	for (attr = data; (const char *)attr + 2 <= (const char *)data + dlen;
	     attr = nftnl_udata_next(attr)) {
		uint8_t n = nftnl_udata_len(attr);

		if ((const char *)nftnl_udata_get(attr) + n > (const char *)data + dlen)
			break;
		if (nftnl_udata_type(attr) == NFTNL_UDATA_TABLE_COMMENT && n > 0) {
			snprintf(owner, len, "%.*s", (int)n, (const char *)nftnl_udata_get(attr));
			return;
		}
	}
}

static int
nft_dump_cb(const struct nlmsghdr *nlh, void *data)
{
	struct dump_state *ds = data;
	uint16_t type = NFNL_MSG_TYPE(nlh->nlmsg_type);

	if (type == NFT_MSG_NEWTABLE) {
		struct nftnl_table *t = nftnl_table_alloc();

		if (t != NULL && nftnl_table_nlmsg_parse(nlh, t) == 0 &&
		    strcmp(nftnl_table_get_str(t, NFTNL_TABLE_NAME), AMESH_NFT_TABLE) == 0) {
			ds->table = 1;
			table_owner(t, ds->owner, sizeof(ds->owner));
		}
		nftnl_table_free(t);
	} else if (type == NFT_MSG_NEWCHAIN) {
		struct nftnl_chain *c = nftnl_chain_alloc();

		if (c == NULL || nftnl_chain_nlmsg_parse(nlh, c) != 0 ||
		    strcmp(nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE), AMESH_NFT_TABLE) != 0) {
			nftnl_chain_free(c);
			return MNL_CB_OK;
		}
		if (ds->n == sizeof(ds->ch) / sizeof(ds->ch[0])) {
			ds->other++;
			nftnl_chain_free(c);
			return MNL_CB_OK;
		}
		ds->ch[ds->n++].c = c;
	} else if (type == NFT_MSG_NEWRULE) {
		struct nftnl_rule *r = nftnl_rule_alloc();

		if (r != NULL && nftnl_rule_nlmsg_parse(nlh, r) == 0 &&
		    strcmp(nftnl_rule_get_str(r, NFTNL_RULE_TABLE), AMESH_NFT_TABLE) == 0) {
			const char *cn = nftnl_rule_get_str(r, NFTNL_RULE_CHAIN);

			for (size_t i = 0; i < ds->n; i++) {
				struct got_chain *g = &ds->ch[i];

				if (strcmp(nftnl_chain_get_str(g->c, NFTNL_CHAIN_NAME), cn) != 0)
					continue;
				if (g->n < BATCH_MAX)
					g->rules[g->n] = rule_text(r);
				g->n++; /* counted even past the array: "more rules than expected" */
				break;
			}
		}
		nftnl_rule_free(r);
	}
	return MNL_CB_OK;
}

/* A get or dump on the netfilter socket; the answers go through nft_dump_cb. */
static int
nft_get(struct nl *nl, uint16_t type, uint16_t flags, struct dump_state *ds)
{
	char buf[MSG_BUF];
	struct nlmsghdr *nlh;

	nlh = nftnl_nlmsg_build_hdr(buf, type, NFPROTO_INET, flags, ++nl->seq);
	if (type == NFT_MSG_GETTABLE) {
		struct nftnl_table *t = table_new(NULL);

		nftnl_table_nlmsg_build_payload(nlh, t);
		nftnl_table_free(t);
	} else if (type == NFT_MSG_GETRULE) {
		struct nftnl_rule *rl = nftnl_rule_alloc();

		if (rl == NULL)
			fatalx("out of memory");
		nftnl_rule_set_str(rl, NFTNL_RULE_TABLE, AMESH_NFT_TABLE);
		nftnl_rule_nlmsg_build_payload(nlh, rl);
		nftnl_rule_free(rl);
	}
	return nl_talk(nl->nf, nlh, nft_dump_cb, ds);
}

static void
dump_free(struct dump_state *ds)
{
	for (size_t i = 0; i < ds->n; i++) {
		for (size_t k = 0; k < ds->ch[i].n && k < BATCH_MAX; k++)
			free(ds->ch[i].rules[k]);
		nftnl_chain_free(ds->ch[i].c);
	}
	ds->n = 0;
}

static void
check_chains(struct dump_state *ds, const struct nft_rules_params *p, const char *what,
    struct diag *problems)
{
	struct ruleset rs;

	ruleset_build(&rs, p);
	for (size_t i = 0; i < NCHAINS; i++) {
		const struct chain_spec *cs = &chains[i];
		struct got_chain *g = NULL;
		size_t want = 0, k = 0;

		for (size_t j = 0; j < ds->n; j++)
			if (strcmp(nftnl_chain_get_str(ds->ch[j].c, NFTNL_CHAIN_NAME), cs->name) == 0)
				g = &ds->ch[j];
		if (g == NULL) {
			diag_add(problems, what, 0, "table inet %s: chain %s is missing",
			    AMESH_NFT_TABLE, cs->name);
			continue;
		}
		if (!nftnl_chain_is_set(g->c, NFTNL_CHAIN_HOOKNUM) ||
		    nftnl_chain_get_u32(g->c, NFTNL_CHAIN_HOOKNUM) != cs->hook ||
		    nftnl_chain_get_s32(g->c, NFTNL_CHAIN_PRIO) != cs->prio ||
		    strcmp(nftnl_chain_get_str(g->c, NFTNL_CHAIN_TYPE), cs->type) != 0 ||
		    nftnl_chain_get_u32(g->c, NFTNL_CHAIN_POLICY) != NF_ACCEPT)
			diag_add(problems, what, 0, "table inet %s: chain %s is not a %s chain at "
			    "priority %d with policy accept", AMESH_NFT_TABLE, cs->name, cs->type,
			    cs->prio);
		for (size_t j = 0; j < rs.n; j++) {
			char *t;

			if (strcmp(nftnl_rule_get_str(rs.r[j], NFTNL_RULE_CHAIN), cs->name) != 0)
				continue;
			want++;
			if (k >= g->n || k >= BATCH_MAX) {
				k++;
				continue;
			}
			t = rule_text(rs.r[j]);
			if (strcmp(t, g->rules[k]) != 0) {
				log_debug("netns %s: chain %s rule %zu: have %s, want %s", what,
				    cs->name, k + 1, g->rules[k], t);
				diag_add(problems, what, 0, "table inet %s: chain %s: rule %zu differs "
				    "from what amesh installs", AMESH_NFT_TABLE, cs->name, k + 1);
			}
			free(t);
			k++;
		}
		if (g->n != want)
			diag_add(problems, what, 0, "table inet %s: chain %s has %zu rules, expected "
			    "%zu", AMESH_NFT_TABLE, cs->name, g->n, want);
	}
	for (size_t j = 0; j < ds->n; j++) {
		const char *name = nftnl_chain_get_str(ds->ch[j].c, NFTNL_CHAIN_NAME);
		bool known = false;

		for (size_t i = 0; i < NCHAINS; i++)
			known = known || strcmp(chains[i].name, name) == 0;
		if (!known)
			diag_add(problems, what, 0, "table inet %s: unexpected chain %s",
			    AMESH_NFT_TABLE, name);
	}
	if (ds->other > 0)
		diag_add(problems, what, 0, "table inet %s: %zu more unexpected chains",
		    AMESH_NFT_TABLE, ds->other);
	ruleset_free(&rs);
}

/* --- the three operations ----------------------------------------------------------------- */

int
nft_rules_install(int netns_fd, const char *what, const struct nft_rules_params *p, char *err,
    size_t errlen)
{
	struct nl nl = { .what = what, .err = err, .errlen = errlen };
	struct link_info lo;
	int r;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((r = nl_open(&nl, netns_fd)) != 0)
		return r;
	if ((r = routing_lo_info(&nl, &lo)) != 0 || (r = routing_lo_up(&nl, &lo)) != 0)
		goto out;
	if ((r = batch_run(&nl, p)) != 0)
		goto out;
	/* A routing failure leaves the table in: captured without reply routing fails closed, and
	 * only the caller knows whether the namespace had rules before (amesh-cni(8)). */
	if ((r = routing_add(&nl, lo.index)) != 0)
		goto out;
	log_debug("netns %s: table inet %s and policy routing installed", what, AMESH_NFT_TABLE);
out:
	nl_close(&nl);
	return r;
}

int
nft_rules_remove(int netns_fd, const char *what, char *err, size_t errlen)
{
	struct nl nl = { .what = what, .err = err, .errlen = errlen };
	struct link_info lo;
	int r, r2;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((r = nl_open(&nl, netns_fd)) != 0)
		return r;
	r = batch_run(&nl, NULL);
	if ((r2 = routing_lo_info(&nl, &lo)) == 0)
		r2 = routing_del(&nl, lo.index);
	r = r != 0 ? r : r2;
	if (r == 0)
		log_debug("netns %s: table inet %s and policy routing removed", what,
		    AMESH_NFT_TABLE);
	nl_close(&nl);
	return r;
}

int
nft_rules_check(int netns_fd, const char *what, const struct nft_rules_params *p,
    struct diag *problems, char *err, size_t errlen)
{
	struct nl nl = { .what = what, .err = err, .errlen = errlen };
	struct dump_state ds = { .n = 0 };
	struct link_info lo;
	int r;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((r = nl_open(&nl, netns_fd)) != 0)
		return r;
	if ((r = routing_lo_info(&nl, &lo)) != 0)
		goto out;
	if (!(lo.flags & IFF_UP))
		diag_add(problems, what, 0, "the loopback interface is down");
	r = nft_get(&nl, NFT_MSG_GETTABLE, NLM_F_ACK, &ds);
	if (r == -ENOENT) {
		diag_add(problems, what, 0, "table inet %s is missing", AMESH_NFT_TABLE);
	} else if (r != 0) {
		nl_set_err(&nl, "nftables: cannot read table inet %s: %s", AMESH_NFT_TABLE,
		    strerror(-r));
		goto out;
	} else {
		if ((r = nft_get(&nl, NFT_MSG_GETCHAIN, NLM_F_DUMP, &ds)) != 0 ||
		    (r = nft_get(&nl, NFT_MSG_GETRULE, NLM_F_DUMP, &ds)) != 0) {
			nl_set_err(&nl, "nftables: cannot list table inet %s: %s", AMESH_NFT_TABLE,
			    strerror(-r));
			goto out;
		}
		check_chains(&ds, p, what, problems);
	}
	if ((r = routing_check(&nl, lo.index, what, problems)) != 0)
		goto out;
	r = 0;
out:
	dump_free(&ds);
	nl_close(&nl);
	return r;
}

int
nft_rules_owner(int netns_fd, const char *what, char *owner, size_t len, char *err, size_t errlen)
{
	struct nl nl = { .what = what, .err = err, .errlen = errlen };
	struct dump_state ds = { .n = 0 };
	int r;

	owner[0] = '\0';
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((r = nl_open(&nl, netns_fd)) != 0)
		return r;
	r = nft_get(&nl, NFT_MSG_GETTABLE, NLM_F_ACK, &ds);
	if (r == -ENOENT) {
		r = 0;
	} else if (r != 0) {
		nl_set_err(&nl, "nftables: cannot read table inet %s: %s", AMESH_NFT_TABLE,
		    strerror(-r));
	} else {
		snprintf(owner, len, "%s", ds.owner);
		r = 1;
	}
	nl_close(&nl);
	return r;
}
