/* SPDX-License-Identifier: Apache-2.0 */
/* src/dns/msg.c: the registry's answers, NXDOMAIN under the mesh domain, forwarding, malformed
 * queries; and the registry's auto-allocated VIPs that the answers carry. */
#include "config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "config/registry.h"
#include "dns/msg.h"
#include "runner.h"

static const char reg_text[] =
    "[node \"n\"]\naddress = 192.168.0.1\n"
    "[workload \"a\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1\nlabels = app=a\n"
    "[service \"web\"]\nnamespace = ns\nvip = 10.96.0.1, fd00:96::1\nports = 80\nselector = app=a\n"
    "[service \"api\"]\nnamespace = other\nhostname = api.example.org\nvip = 10.96.0.2\n"
    "ports = 80\nselector = app=a\n"
    "[service \"auto\"]\nnamespace = ns\nports = 80\nselector = app=a\n";

/* Asks name/type of a zone for namespace ns; returns the action, the answer parsed in *ans. */
static enum dns_action
ask(const struct registry *r, const char *name, ldns_rr_type t, ldns_pkt **ans,
    struct dns_query_info *info)
{
	struct dns_zone z = { .reg = r, .ns = "ns", .domain = "cluster.local", .ttl = 30 };
	ldns_pkt *q = NULL;
	uint8_t *wire = NULL, *out = NULL;
	size_t len = 0, outlen = 0;
	enum dns_action act;

	ASSERT(ldns_pkt_query_new_frm_str(&q, name, t, LDNS_RR_CLASS_IN, LDNS_RD) ==
	    LDNS_STATUS_OK);
	ldns_pkt_set_id(q, 0x4242);
	ASSERT(ldns_pkt2wire(&wire, q, &len) == LDNS_STATUS_OK);
	act = dns_handle_query(&z, wire, len, false, &out, &outlen, info);
	*ans = NULL;
	if (act == DNS_REPLY) {
		ASSERT(ldns_wire2pkt(ans, out, outlen) == LDNS_STATUS_OK);
		ASSERT_EQ(ldns_pkt_id(*ans), 0x4242);
		ASSERT(dns_reply_matches(wire, len, out, outlen));
	}
	free(wire);
	free(out);
	ldns_pkt_free(q);
	return act;
}

/* The answer's single address as text, or "" when there is none. */
static const char *
addr_of(const ldns_pkt *a, char *buf, size_t len)
{
	const ldns_rr_list *an = ldns_pkt_answer(a);
	const ldns_rdf *rd;

	buf[0] = '\0';
	if (ldns_rr_list_rr_count(an) != 1)
		return buf;
	rd = ldns_rr_rdf(ldns_rr_list_rr(an, 0), 0);
	inet_ntop(ldns_rdf_get_type(rd) == LDNS_RDF_TYPE_A ? AF_INET : AF_INET6,
	    ldns_rdf_data(rd), buf, (socklen_t)len);
	return buf;
}

TEST(dns_registry_answers)
{
	struct registry *r = test_registry(reg_text);
	static const struct {
		const char *name;
		ldns_rr_type t;
		const char *want;
	} cases[] = {
		{ "web.ns.svc.cluster.local.", LDNS_RR_TYPE_A, "10.96.0.1" },
		{ "WEB.ns.svc.Cluster.Local", LDNS_RR_TYPE_A, "10.96.0.1" },
		{ "web.ns.svc.cluster.local", LDNS_RR_TYPE_AAAA, "fd00:96::1" },
		{ "web", LDNS_RR_TYPE_A, "10.96.0.1" },
		{ "web.ns", LDNS_RR_TYPE_A, "10.96.0.1" },
		{ "web.ns.svc", LDNS_RR_TYPE_A, "10.96.0.1" },
		{ "api.example.org", LDNS_RR_TYPE_A, "10.96.0.2" },
		{ "api.other", LDNS_RR_TYPE_A, "10.96.0.2" },
		{ "api.other.svc.cluster.local", LDNS_RR_TYPE_A, "10.96.0.2" },
		{ "api.other", LDNS_RR_TYPE_AAAA, "" }, /* NODATA: the name is there */
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dns_query_info info;
		ldns_pkt *a;

		ASSERT_EQ(ask(r, cases[i].name, cases[i].t, &a, &info), DNS_REPLY);
		ASSERT_EQ(info.result, DNS_RES_REGISTRY);
		ASSERT_EQ(ldns_pkt_get_rcode(a), LDNS_RCODE_NOERROR);
		ASSERT(ldns_pkt_aa(a));
		ASSERT_STREQ(addr_of(a, buf, sizeof(buf)), cases[i].want);
		if (cases[i].want[0] != '\0')
			ASSERT_EQ(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(a), 0)), 30);
		ldns_pkt_free(a);
	}
	registry_unref(r);
}

TEST(dns_nxdomain_and_forward)
{
	struct registry *r = test_registry(reg_text);
	struct dns_query_info info;
	ldns_pkt *a;

	/* Under the mesh domain and unknown: NXDOMAIN here. */
	ASSERT_EQ(ask(r, "nosuch.ns.svc.cluster.local", LDNS_RR_TYPE_A, &a, &info), DNS_REPLY);
	ASSERT_EQ(info.result, DNS_RES_NXDOMAIN);
	ASSERT_EQ(ldns_pkt_get_rcode(a), LDNS_RCODE_NXDOMAIN);
	ldns_pkt_free(a);
	ASSERT_EQ(ask(r, "cluster.local", LDNS_RR_TYPE_A, &a, &info), DNS_REPLY);
	ASSERT_EQ(ldns_pkt_get_rcode(a), LDNS_RCODE_NXDOMAIN);
	ldns_pkt_free(a);
	/* The short forms of another namespace's service do not apply to ns. */
	ASSERT_EQ(ask(r, "api", LDNS_RR_TYPE_A, &a, &info), DNS_FORWARD);
	ASSERT_EQ(ask(r, "web.other", LDNS_RR_TYPE_A, &a, &info), DNS_FORWARD);
	ASSERT_EQ(ask(r, "example.org", LDNS_RR_TYPE_A, &a, &info), DNS_FORWARD);
	ASSERT_STREQ(info.name, "example.org");
	ASSERT_EQ(ask(r, "web.ns.svc.cluster.local.evil.example", LDNS_RR_TYPE_A, &a, &info),
	    DNS_FORWARD);
	ASSERT_EQ(ask(r, "x.notcluster.local", LDNS_RR_TYPE_A, &a, &info), DNS_FORWARD);
	/* No registry yet: nothing is ours, the mesh domain still is. */
	ASSERT_EQ(ask(NULL, "web.ns.svc.cluster.local", LDNS_RR_TYPE_A, &a, &info), DNS_REPLY);
	ASSERT_EQ(ldns_pkt_get_rcode(a), LDNS_RCODE_NXDOMAIN);
	ldns_pkt_free(a);
	registry_unref(r);
}

/* A query with header id 0x1234 and the given counts and body. */
static size_t
raw(uint8_t *m, uint16_t qd, uint16_t an, const uint8_t *body, size_t blen)
{
	memset(m, 0, DNS_HEADER_LEN);
	m[0] = 0x12;
	m[1] = 0x34;
	m[2] = 0x01; /* RD */
	m[4] = (uint8_t)(qd >> 8);
	m[5] = (uint8_t)qd;
	m[6] = (uint8_t)(an >> 8);
	m[7] = (uint8_t)an;
	if (blen > 0)
		memcpy(m + DNS_HEADER_LEN, body, blen);
	return DNS_HEADER_LEN + blen;
}

/* The answer as written (msg.c writes it without ldns): the question exactly as asked (case
 * kept), AA and RA, the query's RD and CD, an OPT record of 1232 bytes when the query had EDNS0
 * and none otherwise, the records' owner a pointer to the question, and labels that are not
 * plain host names forwarded. */
TEST(dns_answer_wire)
{
	struct registry *r = test_registry(reg_text);
	struct dns_zone z = { .reg = r, .ns = "ns", .domain = "cluster.local", .ttl = 30 };
	struct dns_query_info info;
	for (int edns = 0; edns < 2; edns++) {
		ldns_pkt *q = NULL, *a = NULL;
		uint8_t *wire = NULL, *out = NULL;
		size_t len = 0, outlen = 0;
		char *owner;

		ASSERT(ldns_pkt_query_new_frm_str(&q, "Web.NS.svc.Cluster.local", LDNS_RR_TYPE_AAAA,
		    LDNS_RR_CLASS_IN, LDNS_RD | LDNS_CD) == LDNS_STATUS_OK);
		if (edns)
			ldns_pkt_set_edns_udp_size(q, 4096);
		ASSERT(ldns_pkt2wire(&wire, q, &len) == LDNS_STATUS_OK);
		ASSERT_EQ(dns_handle_query(&z, wire, len, false, &out, &outlen, &info), DNS_REPLY);
		ASSERT_EQ(info.max_answer, edns ? 4096 : DNS_UDP_MIN);
		ASSERT(ldns_wire2pkt(&a, out, outlen) == LDNS_STATUS_OK);
		ASSERT(ldns_pkt_qr(a) && ldns_pkt_aa(a) && ldns_pkt_ra(a) && ldns_pkt_rd(a) &&
		    ldns_pkt_cd(a) && !ldns_pkt_tc(a));
		ASSERT_EQ(ldns_pkt_get_rcode(a), LDNS_RCODE_NOERROR);
		ASSERT_EQ(ldns_pkt_qdcount(a), 1);
		ASSERT_EQ(ldns_pkt_ancount(a), 1);
		ASSERT_EQ(ldns_pkt_nscount(a), 0);
		owner = ldns_rdf2str(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(a), 0)));
		ASSERT_STREQ(owner, "Web.NS.svc.Cluster.local.");
		free(owner);
		owner = ldns_rdf2str(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_answer(a), 0)));
		ASSERT_STREQ(owner, "Web.NS.svc.Cluster.local.");
		free(owner);
		ASSERT_EQ(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_answer(a), 0)), LDNS_RR_TYPE_AAAA);
		ASSERT_EQ(ldns_pkt_edns(a), edns != 0);
		if (edns)
			ASSERT_EQ(ldns_pkt_edns_udp_size(a), 1232);
		/* The answer's records point back at the question: 12 + 26 + 4 + (2 + 10 + 16). */
		ASSERT_EQ(outlen, (size_t)(70 + (edns ? 11 : 0)));
		ASSERT_EQ(out[42], 0xc0);
		ASSERT_EQ(out[43], 12);
		/* dns_reply_matches: the question, names compared without case; not the type. */
		ASSERT(dns_reply_matches(wire, len, out, outlen));
		out[13] = 'w';
		ASSERT(dns_reply_matches(wire, len, out, outlen));
		out[39] = LDNS_RR_TYPE_A;
		ASSERT(!dns_reply_matches(wire, len, out, outlen));
		out[39] = LDNS_RR_TYPE_AAAA;
		out[14] = 'x';
		ASSERT(!dns_reply_matches(wire, len, out, outlen));
		ASSERT(!dns_reply_matches(wire, len, out, DNS_HEADER_LEN + 3));
		ldns_pkt_free(a);
		ldns_pkt_free(q);
		free(wire);
		free(out);
	}
	/* Negative answers under the domain carry its SOA (RFC 2308): NXDOMAIN for an unknown
	 * service, NODATA for a type the service has no record of; none for a positive answer. */
	{
		static const struct {
			const char *name;
			ldns_rr_type t;
			ldns_pkt_rcode rcode;
			size_t an, ns;
		} cases[] = {
			{ "nope.ns.svc.Cluster.Local", LDNS_RR_TYPE_A, LDNS_RCODE_NXDOMAIN, 0, 1 },
			{ "cluster.local", LDNS_RR_TYPE_A, LDNS_RCODE_NXDOMAIN, 0, 1 },
			{ "web.ns.svc.cluster.local", LDNS_RR_TYPE_MX, LDNS_RCODE_NOERROR, 0, 1 },
			{ "web.ns.svc.cluster.local", LDNS_RR_TYPE_A, LDNS_RCODE_NOERROR, 1, 0 },
		};

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			ldns_pkt *q = NULL, *a = NULL;
			uint8_t *wire = NULL, *out = NULL;
			size_t len = 0, outlen = 0;
			char *str;

			ASSERT(ldns_pkt_query_new_frm_str(&q, cases[i].name, cases[i].t,
			    LDNS_RR_CLASS_IN, LDNS_RD) == LDNS_STATUS_OK);
			ldns_pkt_set_edns_udp_size(q, 1232);
			ASSERT(ldns_pkt2wire(&wire, q, &len) == LDNS_STATUS_OK);
			ASSERT_EQ(dns_handle_query(&z, wire, len, false, &out, &outlen, &info), DNS_REPLY);
			ASSERT(ldns_wire2pkt(&a, out, outlen) == LDNS_STATUS_OK);
			ASSERT_EQ(ldns_pkt_get_rcode(a), cases[i].rcode);
			ASSERT_EQ(ldns_pkt_ancount(a), cases[i].an);
			ASSERT_EQ(ldns_pkt_nscount(a), cases[i].ns);
			ASSERT(ldns_pkt_edns(a));
			if (cases[i].ns == 1) {
				ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(a), 0);

				ASSERT_EQ(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
				ASSERT_EQ(ldns_rr_ttl(soa), 30);
				str = ldns_rr2str(soa);
				ASSERT(strcasestr(str, "cluster.local.\t30\tIN\tSOA\tns.dns.cluster.local. "
				    "hostmaster.cluster.local. 1 7200 1800 86400 30") != NULL);
				free(str);
			}
			ldns_pkt_free(a);
			ldns_pkt_free(q);
			free(wire);
			free(out);
		}
	}
	/* A label with a dot or a byte outside ASCII is no name of ours: forwarded. */
	{
		static const uint8_t odd[][24] = {
			{ 3, 'w', '.', 'b', 2, 'n', 's', 0 },
			{ 3, 'w', 0xc3, 'b', 2, 'n', 's', 0 },
		};

		for (size_t i = 0; i < 2; i++) {
			uint8_t m[64], *out = NULL;
			size_t n = 8, outlen = 0;
			uint8_t body[64];

			memcpy(body, odd[i], n);
			memcpy(body + n, "\0\1\0\1", 4);
			n = raw(m, 1, 0, body, n + 4);
			ASSERT_EQ(dns_handle_query(&z, m, n, false, &out, &outlen, &info), DNS_FORWARD);
			ASSERT(out == NULL);
		}
	}
	registry_unref(r);
}


TEST(dns_malformed)
{
	struct registry *r = test_registry(reg_text);
	struct dns_zone z = { .reg = r, .ns = "ns", .domain = "cluster.local", .ttl = 30 };
	struct dns_query_info info;
	uint8_t m[512], *out;
	size_t len, outlen;
	static const uint8_t loop[] = { 0xc0, 0x0c, 0, 1, 0, 1 }; /* a name pointing at itself */
	static const uint8_t good[] = { 3, 'w', 'e', 'b', 0, 0, 1, 0, 1 };

	/* Shorter than a header: nothing to answer. */
	ASSERT_EQ(dns_handle_query(&z, (const uint8_t *)"\x12\x34\x01", 3, false, &out, &outlen,
	    &info), DNS_DROP);
	ASSERT(out == NULL);
	/* A compression loop, counts beyond the data, two questions: FORMERR with the ID. */
	len = raw(m, 1, 0, loop, sizeof(loop));
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_REPLY);
	ASSERT_EQ(outlen, DNS_HEADER_LEN);
	ASSERT(out[0] == 0x12 && out[1] == 0x34 && (out[2] & 0x80) && (out[3] & 0x0f) == 1);
	ASSERT_EQ(info.result, DNS_RES_FORMERR);
	free(out);
	len = raw(m, 3, 0, good, sizeof(good));
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_REPLY);
	ASSERT_EQ(out[3] & 0x0f, 1);
	free(out);
	len = raw(m, 0, 0, NULL, 0);
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_REPLY);
	ASSERT_EQ(out[3] & 0x0f, 1);
	free(out);
	/* A response is never answered; another opcode gets NOTIMP. */
	len = raw(m, 1, 0, good, sizeof(good));
	m[2] |= 0x80;
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_DROP);
	len = raw(m, 1, 0, good, sizeof(good));
	m[2] = (uint8_t)(m[2] | (2 << 3)); /* STATUS */
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_REPLY);
	ASSERT_EQ(out[3] & 0x0f, 4);
	free(out);
	/* The well-formed one is answered. */
	len = raw(m, 1, 0, good, sizeof(good));
	ASSERT_EQ(dns_handle_query(&z, m, len, false, &out, &outlen, &info), DNS_REPLY);
	ASSERT_EQ(info.result, DNS_RES_REGISTRY);
	free(out);
	/* SERVFAIL keeps the ID and the question. */
	out = dns_servfail(m, len, &outlen);
	ASSERT(out != NULL && out[0] == 0x12 && out[1] == 0x34 && (out[3] & 0x0f) == 2);
	ASSERT(outlen == len);
	free(out);
	registry_unref(r);
}

TEST(dns_auto_vips)
{
	struct registry *r = test_registry(reg_text), *r2;
	const struct reg_service *s = registry_find(r, REG_SERVICE, "auto"), *s2;
	const struct reg_vip *v;
	struct dns_query_info info;
	ldns_pkt *a;
	char buf[64], want[64];

	ASSERT(s != NULL && s->vip_auto && s->vips.n == 2);
	ASSERT(!((const struct reg_service *)registry_find(r, REG_SERVICE, "web"))->vip_auto);
	ASSERT(s->vips.v[0].family == AF_INET && s->vips.v[0].a[0] == 240 &&
	    s->vips.v[0].a[1] == 240);
	ASSERT(s->vips.v[1].family == AF_INET6 && s->vips.v[1].a[0] == 0x20 &&
	    s->vips.v[1].a[1] == 0x01 && s->vips.v[1].a[2] == 0 && s->vips.v[1].a[3] == 2);
	/* Routed like a VIP. */
	v = registry_service_by_vip(r, &s->vips.v[0], 80);
	ASSERT(v != NULL && v->service == s);
	/* Answered by DNS. */
	ASSERT_EQ(ask(r, "auto", LDNS_RR_TYPE_A, &a, &info), DNS_REPLY);
	inet_ntop(AF_INET, s->vips.v[0].a, want, sizeof(want));
	ASSERT_STREQ(addr_of(a, buf, sizeof(buf)), want);
	ldns_pkt_free(a);
	/* The same registry in another order, with more services: the same address. */
	r2 = test_registry(
	    "[service \"zz\"]\nnamespace = ns\nports = 80\nselector = app=a\n"
	    "[service \"auto\"]\nnamespace = ns\nports = 80\nselector = app=a\n"
	    "[service \"aa\"]\nnamespace = ns\nports = 80\nselector = app=a\n"
	    "[node \"n\"]\naddress = 192.168.0.1\n"
	    "[workload \"a\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1\nlabels = app=a\n");
	s2 = registry_find(r2, REG_SERVICE, "auto");
	ASSERT(memcmp(&s2->vips.v[0], &s->vips.v[0], sizeof(struct ip_addr)) == 0);
	ASSERT(memcmp(&s2->vips.v[1], &s->vips.v[1], sizeof(struct ip_addr)) == 0);
	/* Distinct services, distinct addresses. */
	ASSERT(memcmp(&((const struct reg_service *)registry_find(r2, REG_SERVICE, "zz"))->vips.v[0],
	    &s2->vips.v[0], sizeof(struct ip_addr)) != 0);
	registry_unref(r2);
	registry_unref(r);
}

TEST(dns_external_service)
{
	struct registry *r = test_registry(
	    "[service \"ext\"]\nnamespace = ns\nexternal = yes\nhostname = api.example.com\n"
	    "ports = 443\naddresses = 192.0.2.10, 2001:db8::10\nfrom.namespaces = ns\n");
	const struct reg_service *s = registry_find(r, REG_SERVICE, "ext");
	struct dns_query_info info;
	struct ip_addr ip = { .family = AF_INET, .a = { 192, 0, 2, 10 } };
	ldns_pkt *a;
	char buf[64], want[64];

	ASSERT(s != NULL && s->external && s->vip_auto && s->n_endpoints == 0);
	ASSERT(registry_external_by_addr(r, &ip, 443) == s);
	ASSERT(registry_external_by_addr(r, &ip, 80) == NULL);
	ip.a[3] = 11;
	ASSERT(registry_external_by_addr(r, &ip, 443) == NULL);
	/* Its hostname answers its VIP (the capture sends it to the ztunnel), not its addresses. */
	ASSERT_EQ(ask(r, "api.example.com", LDNS_RR_TYPE_A, &a, &info), DNS_REPLY);
	inet_ntop(AF_INET, s->vips.v[0].a, want, sizeof(want));
	ASSERT_STREQ(addr_of(a, buf, sizeof(buf)), want);
	ldns_pkt_free(a);
	registry_unref(r);
}
