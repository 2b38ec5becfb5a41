/* SPDX-License-Identifier: Apache-2.0 */
/* Authorization evaluation: Istio's deny-then-allow rules over the registry's policies. */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "config/kw.h"
#include "policy/authz.h"

/* What one evaluation knows about the connection or request; NULL strings are absent values. */
struct subject {
	const char *principal; /* NULL: plaintext */
	const char *ns;        /* NULL: unknown (always so for plaintext) */
	const struct ip_addr *ip;
	uint16_t port;
	bool l7;  /* false: L4 evaluation (ztunnel) */
	bool pre; /* authz_l4_prefilter */
	const struct authz_l7_req *req;
};

static bool
any_match(const struct str_list *l, const char *s)
{
	for (size_t i = 0; i < l->n; i++)
		if (kw_pattern_match(l->v[i], s))
			return true;
	return false;
}

/* One string field and its not_ form; an absent value matches no pattern. */
static bool
str_field(const struct str_list *in, const struct str_list *not_in, const char *s)
{
	if (in->n > 0 && (s == NULL || !any_match(in, s)))
		return false;
	if (not_in->n > 0 && s != NULL && any_match(not_in, s))
		return false;
	return true;
}

static bool
any_prefix(const struct prefix_list *l, const struct ip_addr *ip)
{
	for (size_t i = 0; i < l->n; i++)
		if (ip_in_prefix(ip, &l->v[i]))
			return true;
	return false;
}

static bool
any_port(const struct port_list *l, uint16_t port)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] == port)
			return true;
	return false;
}

/* kw_pattern_match over s[0..sn), optionally ignoring ASCII case (host names). */
static bool
pattern_match_n(const char *p, const char *s, size_t sn, bool ci)
{
	size_t pn = strlen(p);
	int (*cmp)(const char *, const char *, size_t) = ci ? strncasecmp : strncmp;

	if (strcmp(p, "*") == 0)
		return true;
	if (pn > 0 && p[pn - 1] == '*')
		return sn >= pn - 1 && cmp(p, s, pn - 1) == 0;
	if (p[0] == '*')
		return sn >= pn - 1 && cmp(s + sn - (pn - 1), p + 1, pn - 1) == 0;
	return pn == sn && cmp(p, s, sn) == 0;
}

static bool
pattern_match_ci(const char *p, const char *s, size_t sn)
{
	return pattern_match_n(p, s, sn, true);
}

/* A host matches a pattern as sent, or without its ":port" (Istio's hosts ignore the port). */
static bool
host_match(const char *p, const char *host)
{
	size_t n = strlen(host);
	const char *colon = strrchr(host, ':');

	if (pattern_match_ci(p, host, n))
		return true;
	/* "[v6]:port" or "name:port"; a bare IPv6 literal has more than one colon and no ']'. */
	if (colon != NULL && colon[1] != '\0' && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
	    (host[0] == '[' ? colon > host && colon[-1] == ']' : strchr(host, ':') == colon))
		return pattern_match_ci(p, host, (size_t)(colon - host));
	return false;
}

static bool
host_field(const struct str_list *in, const struct str_list *not_in, const char *host)
{
	bool hit = false;

	if (in->n > 0) {
		for (size_t i = 0; host != NULL && i < in->n && !hit; i++)
			hit = host_match(in->v[i], host);
		if (!hit)
			return false;
	}
	for (size_t i = 0; host != NULL && i < not_in->n; i++)
		if (host_match(not_in->v[i], host))
			return false;
	return true;
}

/* to.paths match the path without its query or fragment. */
static bool
path_field(const struct str_list *in, const struct str_list *not_in, const char *target)
{
	size_t n;
	bool hit = false;

	if (target == NULL)
		return str_field(in, not_in, NULL);
	n = strcspn(target, "?#");
	for (size_t i = 0; i < in->n && !hit; i++)
		hit = pattern_match_n(in->v[i], target, n, false);
	if (in->n > 0 && !hit)
		return false;
	for (size_t i = 0; i < not_in->n; i++)
		if (pattern_match_n(not_in->v[i], target, n, false))
			return false;
	return true;
}

/* Every when.headers condition must hold. */
static bool
when_field(const struct label_list *when, const struct authz_l7_req *q)
{
	for (size_t i = 0; i < when->n; i++) {
		const char *v = q->header != NULL ? q->header(q->header_arg, when->v[i].key) : NULL;

		if (v == NULL || !kw_pattern_match(when->v[i].value, v))
			return false;
	}
	return true;
}

static bool
l4_fields_match(const struct reg_policy *p, const struct subject *s)
{
	if (!str_field(&p->principals, &p->not_principals, s->principal))
		return false;
	if (!str_field(&p->namespaces, &p->not_namespaces, s->ns))
		return false;
	if (p->ip_blocks.n > 0 && (s->ip == NULL || !any_prefix(&p->ip_blocks, s->ip)))
		return false;
	if (p->not_ip_blocks.n > 0 && s->ip != NULL && any_prefix(&p->not_ip_blocks, s->ip))
		return false;
	if (p->ports.n > 0 && !any_port(&p->ports, s->port))
		return false;
	if (p->not_ports.n > 0 && any_port(&p->not_ports, s->port))
		return false;
	return true;
}

static bool
l7_fields_match(const struct reg_policy *p, const struct authz_l7_req *q)
{
	return str_field(&p->methods, &p->not_methods, q->method) &&
	    path_field(&p->paths, &p->not_paths, q->path) &&
	    host_field(&p->hosts, &p->not_hosts, q->host) && when_field(&p->when_headers, q);
}

static bool
policy_matches(const struct reg_policy *p, const struct subject *s)
{
	if (s->pre && p->has_l7)
		return p->action == REG_ALLOW && l4_fields_match(p, s); /* may match at L7 */
	if (!s->l7 && p->has_l7 && p->action == REG_ALLOW)
		return false; /* ztunnel cannot check the L7 part: never allow on its behalf */
	if (!l4_fields_match(p, s))
		return false;
	/* At L4 a deny with L7 fields matches on its L4 part alone: fail closed. */
	return !s->l7 || l7_fields_match(p, s->req);
}

static enum authz_decision
evaluate(const struct registry *r, const struct reg_workload *dst, const struct subject *s,
    const struct reg_policy **matched)
{
	const struct reg_policy *const *pol;
	const struct reg_policy *allow_hit = NULL;
	bool any_allow = false;
	size_t n;

	if (matched != NULL)
		*matched = NULL;
	pol = registry_policies_in(r, dst->namespace, &n);
	for (size_t i = 0; i < n; i++) {
		const struct reg_policy *p = pol[i];

		if (!registry_selects(&p->selector, &dst->labels))
			continue;
		if (p->action == REG_DENY) {
			if (policy_matches(p, s)) {
				if (matched != NULL)
					*matched = p;
				return AUTHZ_DENY;
			}
			continue;
		}
		any_allow = true;
		if (allow_hit == NULL && policy_matches(p, s))
			allow_hit = p; /* keep looking: a later deny still wins */
	}
	if (!any_allow)
		return AUTHZ_ALLOW;
	if (allow_hit != NULL) {
		if (matched != NULL)
			*matched = allow_hit;
		return AUTHZ_ALLOW;
	}
	return AUTHZ_DENY;
}

/* The namespace of "TD/ns/NS/sa/SA" into buf; NULL when the principal is not of that shape. */
static const char *
principal_ns(const char *principal, char *buf, size_t len)
{
	const char *ns = strstr(principal, "/ns/"), *end;

	if (ns == NULL)
		return NULL;
	ns += 4;
	end = strstr(ns, "/sa/");
	if (end == NULL || end == ns || (size_t)(end - ns) >= len)
		return NULL;
	memcpy(buf, ns, (size_t)(end - ns));
	buf[end - ns] = '\0';
	return buf;
}

/* Fills s from an L4 request; buffers live in the caller's frame. */
static void
subject_init(struct subject *s, const struct authz_l4_req *q, struct ip_addr *ipbuf, char *nsbuf,
    size_t nslen)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(s, 0, sizeof(*s));
	s->port = q->dst_port;
	if (q->src_principal != NULL && q->src_principal[0] != '\0') {
		s->principal = q->src_principal;
		if (q->src_namespace != NULL && q->src_namespace[0] != '\0')
			s->ns = q->src_namespace;
		else
			s->ns = principal_ns(q->src_principal, nsbuf, nslen);
	}
	s->ip = q->src_ip;
	if (s->ip != NULL && s->ip->family == AF_INET6 && memcmp(s->ip->a, v4mapped, 12) == 0) {
		memset(ipbuf, 0, sizeof(*ipbuf));
		ipbuf->family = AF_INET;
		memcpy(ipbuf->a, s->ip->a + 12, 4);
		s->ip = ipbuf;
	}
}

const char *
authz_principal(const char *spiffe_id)
{
	return strncmp(spiffe_id, "spiffe://", 9) == 0 ? spiffe_id + 9 : spiffe_id;
}

enum authz_decision
authz_l4(const struct registry *r, const struct reg_workload *dst, const struct authz_l4_req *q,
    const struct reg_policy **matched)
{
	struct subject s;
	struct ip_addr ipbuf;
	char nsbuf[256];

	subject_init(&s, q, &ipbuf, nsbuf, sizeof(nsbuf));
	return evaluate(r, dst, &s, matched);
}

enum authz_decision
authz_l4_prefilter(const struct registry *r, const struct reg_workload *dst,
    const struct authz_l4_req *q, const struct reg_policy **matched)
{
	struct subject s;
	struct ip_addr ipbuf;
	char nsbuf[256];

	subject_init(&s, q, &ipbuf, nsbuf, sizeof(nsbuf));
	s.pre = true;
	return evaluate(r, dst, &s, matched);
}

enum authz_decision
authz_l7(const struct registry *r, const struct reg_workload *dst, const struct authz_l7_req *q,
    const struct reg_policy **matched)
{
	struct subject s;
	struct ip_addr ipbuf;
	char nsbuf[256];

	subject_init(&s, &q->l4, &ipbuf, nsbuf, sizeof(nsbuf));
	s.l7 = true;
	s.req = q;
	return evaluate(r, dst, &s, matched);
}

const char *
authz_decision_name(enum authz_decision d)
{
	return d == AUTHZ_ALLOW ? "allow" : "deny";
}
