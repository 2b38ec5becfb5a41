/* SPDX-License-Identifier: Apache-2.0 */
/* DNS queries read and answered with ldns (msg.h). */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "dns/msg.h"

static const char *const result_names[DNS_NRESULTS] = {
	"registry", "nxdomain", "forwarded", "servfail", "formerr", "notimp", "dropped",
};
static const char *const type_names[DNS_NQTYPES] = {
	"A", "AAAA", "PTR", "SRV", "TXT", "MX", "CNAME", "HTTPS", "ANY", "other", "none",
};

const char *
dns_result_name(int result)
{
	return result >= 0 && result < DNS_NRESULTS ? result_names[result] : "unknown";
}

const char *
dns_type_name(int qtype_class)
{
	return qtype_class >= 0 && qtype_class < DNS_NQTYPES ? type_names[qtype_class] : "other";
}

static int
qtype_class(ldns_rr_type t)
{
	switch (t) {
	case LDNS_RR_TYPE_A: return DNS_QT_A;
	case LDNS_RR_TYPE_AAAA: return DNS_QT_AAAA;
	case LDNS_RR_TYPE_PTR: return DNS_QT_PTR;
	case LDNS_RR_TYPE_SRV: return DNS_QT_SRV;
	case LDNS_RR_TYPE_TXT: return DNS_QT_TXT;
	case LDNS_RR_TYPE_MX: return DNS_QT_MX;
	case LDNS_RR_TYPE_CNAME: return DNS_QT_CNAME;
	case LDNS_RR_TYPE_HTTPS: return DNS_QT_HTTPS;
	case LDNS_RR_TYPE_ANY: return DNS_QT_ANY;
	default: return DNS_QT_OTHER;
	}
}

bool
dns_truncated(const uint8_t *m, size_t len)
{
	return len >= DNS_HEADER_LEN && (m[2] & 0x02) != 0;
}

/* The query's name as text: lower case, no final dot. False when it is not a plain host name
 * (a label with a dot, a backslash, a space or a byte outside ASCII; over-long): such a name
 * is never the registry's. Read from the owner's wire form, which ldns has checked. */
static bool
name_of(const ldns_rdf *owner, char *out, size_t outlen)
{
	const uint8_t *d = ldns_rdf_data(owner);
	size_t size = ldns_rdf_size(owner), n = 0;

	out[0] = '\0';
	if (d == NULL || ldns_rdf_get_type(owner) != LDNS_RDF_TYPE_DNAME)
		return false;
	for (size_t i = 0; i < size && d[i] != 0;) {
		size_t ll = d[i++];

		if (ll > 63 || i + ll > size || n + ll + 2 > outlen) {
			out[0] = '\0';
			return false;
		}
		if (n > 0)
			out[n++] = '.';
		for (size_t k = 0; k < ll; k++) {
			unsigned char c = d[i + k];

			if (c == '\\' || c == '.' || c <= ' ' || c >= 0x7f) {
				out[0] = '\0';
				return false;
			}
			out[n++] = (char)tolower(c);
		}
		i += ll;
	}
	out[n] = '\0';
	return true;
}

/* Service NAME of namespace ns, if the registry has it. */
static const struct reg_service *
service_in(const struct registry *reg, const char *name, size_t namelen, const char *ns,
    size_t nslen)
{
	char buf[256];
	const struct reg_service *s;

	if (namelen == 0 || namelen >= sizeof(buf) || nslen == 0)
		return NULL;
	memcpy(buf, name, namelen);
	buf[namelen] = '\0';
	s = registry_find(reg, REG_SERVICE, buf);
	if (s == NULL || s->namespace == NULL || strlen(s->namespace) != nslen ||
	    memcmp(s->namespace, ns, nslen) != 0)
		return NULL;
	return s;
}

/* The service a name stands for (msg.h's list of forms); *under says whether the name is the
 * mesh domain or below it. */
static const struct reg_service *
lookup(const struct dns_zone *z, const char *name, bool *under)
{
	size_t n = strlen(name), dl = z->domain != NULL ? strlen(z->domain) : 0, bl;
	const char *l[4];
	size_t ll[4], nl = 0;
	const struct reg_service *s;

	*under = dl > 0 && (strcmp(name, z->domain) == 0 ||
	    (n > dl + 1 && name[n - dl - 1] == '.' && strcmp(name + n - dl, z->domain) == 0));
	if (z->reg == NULL || n == 0)
		return NULL;
	if ((s = registry_service_by_hostname(z->reg, name)) != NULL)
		return s;
	bl = *under ? (n > dl ? n - dl - 1 : 0) : n;
	/* The labels of the name without the domain: at most three matter. */
	for (size_t i = 0, start = 0; i <= bl; i++) {
		if (i < bl && name[i] != '.')
			continue;
		if (nl == 3)
			return NULL;
		l[nl] = name + start;
		ll[nl++] = i - start;
		start = i + 1;
	}
	if (bl == 0)
		return NULL;
	if (nl == 3 && !(ll[2] == 3 && memcmp(l[2], "svc", 3) == 0))
		return NULL;
	if (*under) /* only NAME.NS.svc.DOMAIN */
		return nl == 3 ? service_in(z->reg, l[0], ll[0], l[1], ll[1]) : NULL;
	if (nl == 1)
		return z->ns != NULL ? service_in(z->reg, l[0], ll[0], z->ns, strlen(z->ns)) : NULL;
	return service_in(z->reg, l[0], ll[0], l[1], ll[1]);
}

static ldns_pkt *
answer_to(const ldns_pkt *q, ldns_pkt_rcode rcode)
{
	ldns_pkt *a = ldns_pkt_new();
	const ldns_rr_list *qs = ldns_pkt_question(q);

	if (a == NULL)
		return NULL;
	ldns_pkt_set_id(a, ldns_pkt_id(q));
	ldns_pkt_set_qr(a, true);
	ldns_pkt_set_opcode(a, ldns_pkt_get_opcode(q));
	ldns_pkt_set_rd(a, ldns_pkt_rd(q));
	ldns_pkt_set_cd(a, ldns_pkt_cd(q));
	ldns_pkt_set_ra(a, true);
	ldns_pkt_set_rcode(a, (uint8_t)rcode);
	if (qs != NULL && ldns_rr_list_rr_count(qs) == 1) {
		ldns_rr *c = ldns_rr_clone(ldns_rr_list_rr(qs, 0));

		if (c == NULL || !ldns_pkt_push_rr(a, LDNS_SECTION_QUESTION, c)) {
			ldns_rr_free(c);
			ldns_pkt_free(a);
			return NULL;
		}
	}
	if (ldns_pkt_edns(q))
		ldns_pkt_set_edns_udp_size(a, 1232);
	return a;
}

static uint8_t *
put16(uint8_t *w, unsigned v)
{
	w[0] = (uint8_t)(v >> 8);
	w[1] = (uint8_t)v;
	return w + 2;
}

/*
 * The registry's answer to query q (parsed as p, its one question): NOERROR with s's addresses
 * of the asked type, or NXDOMAIN when s is NULL; authoritative, the question as asked, each
 * record's owner a pointer to it, an OPT record (1232 bytes) when the query had EDNS0. Over
 * UDP an answer larger than max goes without records and with TC. A negative answer (NXDOMAIN,
 * or NOERROR without records) for a name under the mesh domain (dl: its length, 0 when the name
 * is not under it) carries the domain's SOA in the authority section, so that resolvers cache
 * it for the TTL (RFC 2308) rather than ask again each time. Written directly rather
 * than through ldns_pkt2wire: that builds a packet and a compression tree per answer, half of
 * the proxy's CPU per query (bench/dns); ldns has read the query, which is all we copy from.
 */
/* The SOA record of a negative answer: owner pointer, type, class, TTL, length (12), MNAME
 * ns.dns + pointer (9), RNAME hostmaster + pointer (13), five 32-bit numbers (20). */
#define SOA_RR_LEN (12 + 9 + 13 + 20)

static bool
answer_wire(const uint8_t *q, const ldns_pkt *p, const ldns_rr *question,
    const struct reg_service *s, uint32_t ttl, size_t dl, bool tcp, size_t max, uint8_t **out,
    size_t *outlen)
{
	const ldns_rdf *owner = ldns_rr_owner(question);
	ldns_rr_type t = ldns_rr_get_type(question);
	int family = t == LDNS_RR_TYPE_A ? AF_INET : t == LDNS_RR_TYPE_AAAA ? AF_INET6 : 0;
	size_t alen = family == AF_INET ? 4 : 16, nrec = 0, qn = ldns_rdf_size(owner), size;
	bool edns = ldns_pkt_edns(p), tc = false;
	uint8_t *m, *w;

	for (size_t i = 0; s != NULL && family != 0 && i < s->vips.n; i++)
		nrec += s->vips.v[i].family == family;
	size_t nsoa, dom = 0;

	size = DNS_HEADER_LEN + qn + 4 + nrec * (12 + alen) + (edns ? 11 : 0);
	if (!tcp && size > max) {
		size -= nrec * (12 + alen);
		nrec = 0;
		tc = true;
	}
	/* The domain's name is the end of the question's (dl + 2 bytes on the wire: its labels'
	 * lengths and the root), pointed to from the SOA record. */
	nsoa = nrec == 0 && !tc && dl > 0 && qn >= dl + 2 ? 1 : 0;
	if (nsoa) {
		dom = DNS_HEADER_LEN + qn - (dl + 2);
		size += SOA_RR_LEN;
	}
	if ((m = malloc(size)) == NULL)
		return false;
	m[0] = q[0];
	m[1] = q[1];
	/* QR, the query's opcode, AA, TC when cut, the query's RD; RA, the query's CD, rcode. */
	m[2] = (uint8_t)(0x80 | (q[2] & 0x79) | 0x04 | (tc ? 0x02 : 0));
	m[3] = (uint8_t)(0x80 | (q[3] & 0x10) | (s != NULL ? LDNS_RCODE_NOERROR : LDNS_RCODE_NXDOMAIN));
	w = put16(m + 4, 1);
	w = put16(w, (unsigned)nrec);
	w = put16(w, (unsigned)nsoa);
	w = put16(w, edns ? 1 : 0);
	memcpy(w, ldns_rdf_data(owner), qn);
	w = put16(w + qn, t);
	w = put16(w, ldns_rr_get_class(question));
	for (size_t i = 0; nrec > 0 && i < s->vips.n; i++) {
		if (s->vips.v[i].family != family)
			continue;
		w = put16(w, 0xc000 | DNS_HEADER_LEN); /* the question's name */
		w = put16(w, t);
		w = put16(w, LDNS_RR_CLASS_IN);
		w = put16(w, ttl >> 16);
		w = put16(w, ttl & 0xffff);
		w = put16(w, (unsigned)alen);
		memcpy(w, s->vips.v[i].a, alen);
		w += alen;
	}
	if (nsoa) {
		/* DOMAIN SOA ns.dns.DOMAIN hostmaster.DOMAIN 1 7200 1800 86400 TTL (as CoreDNS
		 * answers for a cluster domain); TTL and minimum are [dns] ttl. */
		static const uint8_t ns_dns[] = { 2, 'n', 's', 3, 'd', 'n', 's' };
		static const uint8_t hostmaster[] = { 10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r' };
		const uint32_t nums[5] = { 1, 7200, 1800, 86400, ttl };

		w = put16(w, 0xc000 | (unsigned)dom);
		w = put16(w, LDNS_RR_TYPE_SOA);
		w = put16(w, LDNS_RR_CLASS_IN);
		w = put16(w, ttl >> 16);
		w = put16(w, ttl & 0xffff);
		w = put16(w, SOA_RR_LEN - 12);
		memcpy(w, ns_dns, sizeof(ns_dns));
		w = put16(w + sizeof(ns_dns), 0xc000 | (unsigned)dom);
		memcpy(w, hostmaster, sizeof(hostmaster));
		w = put16(w + sizeof(hostmaster), 0xc000 | (unsigned)dom);
		for (size_t i = 0; i < 5; i++) {
			w = put16(w, nums[i] >> 16);
			w = put16(w, nums[i] & 0xffff);
		}
	}
	if (edns) {
		*w++ = 0; /* root */
		w = put16(w, LDNS_RR_TYPE_OPT);
		w = put16(w, 1232); /* the UDP size we take */
		w = put16(w, 0);    /* extended rcode, version 0 */
		w = put16(w, 0);    /* flags */
		w = put16(w, 0);    /* no options */
	}
	*out = m;
	*outlen = (size_t)(w - m);
	return true;
}

/* FORMERR or NOTIMP from the header alone (the rest could not be read or is not ours). */
static uint8_t *
header_only(const uint8_t *q, uint8_t rcode, size_t *outlen)
{
	uint8_t *m = calloc(1, DNS_HEADER_LEN);

	if (m == NULL)
		return NULL;
	m[0] = q[0];
	m[1] = q[1];
	m[2] = (uint8_t)(0x80 | (q[2] & 0x79)); /* QR, the opcode and RD of the query */
	m[3] = (uint8_t)(0x80 | (rcode & 0x0f)); /* RA */
	*outlen = DNS_HEADER_LEN;
	return m;
}

enum dns_action
dns_handle_query(const struct dns_zone *z, const uint8_t *q, size_t len, bool tcp, uint8_t **out,
    size_t *outlen, struct dns_query_info *info)
{
	ldns_pkt *p = NULL, *a = NULL;
	const ldns_rr *question;
	const struct reg_service *s;
	enum dns_action act = DNS_DROP;
	bool under;

	*out = NULL;
	*outlen = 0;
	memset(info, 0, sizeof(*info));
	info->qtype = DNS_QT_NONE;
	info->result = DNS_RES_DROPPED;
	info->max_answer = DNS_UDP_MIN;
	if (len < DNS_HEADER_LEN || (q[2] & 0x80) != 0)
		return DNS_DROP; /* no header to answer, or a response: never answer those */
	if (((q[2] >> 3) & 0x0f) != LDNS_PACKET_QUERY) {
		*out = header_only(q, LDNS_RCODE_NOTIMPL, outlen);
		info->result = DNS_RES_NOTIMP;
		return *out != NULL ? DNS_REPLY : DNS_DROP;
	}
	if (ldns_wire2pkt(&p, q, len) != LDNS_STATUS_OK || ldns_pkt_qdcount(p) != 1 ||
	    ldns_pkt_ancount(p) != 0 || ldns_rr_list_rr_count(ldns_pkt_question(p)) != 1) {
		ldns_pkt_free(p);
		*out = header_only(q, LDNS_RCODE_FORMERR, outlen);
		info->result = DNS_RES_FORMERR;
		return *out != NULL ? DNS_REPLY : DNS_DROP;
	}
	question = ldns_rr_list_rr(ldns_pkt_question(p), 0);
	info->qtype = qtype_class(ldns_rr_get_type(question));
	if (ldns_pkt_edns(p) && ldns_pkt_edns_udp_size(p) > DNS_UDP_MIN)
		info->max_answer = ldns_pkt_edns_udp_size(p);
	if (!name_of(ldns_rr_owner(question), info->name, sizeof(info->name)) ||
	    ldns_rr_get_class(question) != LDNS_RR_CLASS_IN) {
		act = DNS_FORWARD; /* not a name of ours */
		goto out;
	}
	s = lookup(z, info->name, &under);
	if (s == NULL && !under) {
		act = DNS_FORWARD;
		goto out;
	}
	if (!answer_wire(q, p, question, s, z->ttl, under ? strlen(z->domain) : 0, tcp,
	    info->max_answer, out, outlen))
		goto out;
	info->result = s != NULL ? DNS_RES_REGISTRY : DNS_RES_NXDOMAIN;
	act = DNS_REPLY;
out:
	ldns_pkt_free(a);
	ldns_pkt_free(p);
	return act;
}

uint8_t *
dns_servfail(const uint8_t *q, size_t len, size_t *outlen)
{
	ldns_pkt *p = NULL, *a;
	uint8_t *out = NULL;

	*outlen = 0;
	if (len < DNS_HEADER_LEN)
		return NULL;
	if (ldns_wire2pkt(&p, q, len) != LDNS_STATUS_OK)
		return header_only(q, LDNS_RCODE_SERVFAIL, outlen);
	a = answer_to(p, LDNS_RCODE_SERVFAIL);
	if (a == NULL || ldns_pkt2wire(&out, a, outlen) != LDNS_STATUS_OK) {
		out = NULL;
		*outlen = 0;
	}
	ldns_pkt_free(a);
	ldns_pkt_free(p);
	return out;
}

/* The question of message m (its one question's name, read by ldns, and type and class). */
static bool
question_of(const uint8_t *m, size_t len, ldns_rdf **name, uint8_t typeclass[4])
{
	size_t pos = DNS_HEADER_LEN;

	*name = NULL;
	if (len < DNS_HEADER_LEN || m[4] != 0 || m[5] != 1 ||
	    ldns_wire2dname(name, m, len, &pos) != LDNS_STATUS_OK)
		return false;
	if (pos + 4 > len)
		return false;
	memcpy(typeclass, m + pos, 4);
	return true;
}

bool
dns_reply_matches(const uint8_t *q, size_t qlen, const uint8_t *r, size_t rlen)
{
	ldns_rdf *nq = NULL, *nr = NULL;
	uint8_t tq[4], tr[4];
	bool ok;

	/* Only the question is compared: the rest of the answer is the client's to read. */
	if (qlen < DNS_HEADER_LEN || rlen < DNS_HEADER_LEN || q[0] != r[0] || q[1] != r[1] ||
	    (r[2] & 0x80) == 0)
		return false;
	ok = question_of(q, qlen, &nq, tq) && question_of(r, rlen, &nr, tr) &&
	    memcmp(tq, tr, 4) == 0 && ldns_dname_compare(nq, nr) == 0;
	ldns_rdf_deep_free(nq);
	ldns_rdf_deep_free(nr);
	return ok;
}
