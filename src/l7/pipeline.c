/* SPDX-License-Identifier: Apache-2.0 */
/* The request pipeline shared by the HTTP/1.1 and HTTP/2 modules (pipeline.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/parse.h"
#include "l7/pipeline.h"
#include "l7/tunnel.h"
#include "policy/authz.h"
#include "tls/rng.h"

static void
reply(struct l7_plan *p, int status, const char *body, const char *flags)
{
	p->status = status;
	p->body = body;
	p->flags = flags;
}

/* The Location of a redirect route, from the request's host (and port) and path. */
static void
redirect(struct tun *t, const struct l7_req *rq, const char *path, const char *query,
    struct l7_plan *p)
{
	char host[300];
	uint64_t hport = 0;
	int code = 302;
	const char *colon, *why;

	/* The request's host and port, as route_redirect_location wants them apart. */
	snprintf(host, sizeof(host), "%s", rq->host ? rq->host : t->authority);
	colon = strrchr(host, ':');
	/* "[v6]:port" or "name:port"; a bare "[v6]" has its last ':' inside the brackets. */
	if (colon != NULL && (strchr(host, ']') == NULL || strchr(host, ']') < colon) &&
	    parse_uint(colon + 1, 1, 65535, &hport, &why) == 0)
		host[colon - host] = '\0';
	else
		hport = 0;
	if (route_redirect_location(p->rt, "http", host, (uint16_t)hport, path, query,
	    p->location, sizeof(p->location), &code) != 0) {
		p->location[0] = '\0';
		reply(p, 500, "bad redirect", "-");
		return;
	}
	reply(p, code, "", "-");
}

void
l7_pipeline(struct tun *t, const struct l7_req *rq, struct l7_plan *p)
{
	struct waypoint *wp = t->wp;
	char path[L7_TARGET_MAX], query[L7_TARGET_MAX];
	const char *q, *tp, *why;
	struct route_req rr;
	struct wp_verdict v;
	struct ip_addr src_ip;
	size_t plen;
	bool normalized;

	memset(p, 0, sizeof(*p));
	tp = rq->header(rq->header_arg, "traceparent");
	p->add_traceparent = tp == NULL;
	if (tp != NULL)
		snprintf(p->traceparent, sizeof(p->traceparent), "%s", tp);
	else
		rng_traceparent(p->traceparent, sizeof(p->traceparent));
	/* The policies and routes in force now. */
	if (!wp_tun_refresh_registry(t, &p->moved)) {
		/* What this connection addressed left the registry: nothing to route it to. */
		p->close = true;
		reply(p, 503, "no longer in the registry", "NR");
		return;
	}
	if (rq->target_len >= sizeof(path)) {
		/* Routing and policy must see the whole path: a cut one could dodge a suffix rule. */
		reply(p, 414, "URI too long", "-");
		return;
	}
	/* A fragment has no place in a request (RFC 9112 3.2), and an app could read it as part of
	 * the path. */
	if (memchr(rq->target, '#', rq->target_len) != NULL) {
		reply(p, 400, "a fragment in the request target", "-");
		return;
	}
	if (strcmp(rq->method, "CONNECT") == 0) {
		/* Not proxied at L7: a tunnel inside a tunnel. */
		p->close = true;
		reply(p, 405, "CONNECT is not served here", "-");
		return;
	}
	/* Routes and policy judge, and the application gets, the normalized path. */
	q = memchr(rq->target, '?', rq->target_len);
	plen = q != NULL ? (size_t)(q - rq->target) : rq->target_len;
	if (route_normalize_path(rq->target, plen, path, sizeof(path), &why) != 0) {
		log_info("%s: %s: bad request from %s: %s", wp->role, t->authority, t->peer_id, why);
		reply(p, 400, why, "-");
		return;
	}
	normalized = strlen(path) != plen || memcmp(path, rq->target, plen) != 0;
	snprintf(query, sizeof(query), "%.*s", q ? (int)(rq->target + rq->target_len - q - 1) : 0,
	    q ? q + 1 : "");
	rr.method = rq->method;
	rr.path = path;
	rr.query = query;
	rr.header = rq->header;
	rr.header_arg = rq->header_arg;
	memset(&src_ip, 0, sizeof(src_ip));
	if (t->side == L7_SIDE_IN)
		ip_from_sockaddr(&t->client, &src_ip, NULL); /* as the app will see it */
	{
		struct l7_dest d = { t->reg, t->side, t->svc, t->direct, t->port };
		struct l7_peer peer = { authz_principal(t->peer_id), src_ip.family ? &src_ip : NULL };
		struct l7_choice c = { wp_rnd, wp->lb, uv_now(wp->loop) };

		l7_decide(&d, &peer, &rr, rq->host ? rq->host : t->authority, &c, &v);
	}
	p->rt = v.rt;
	p->ep = v.ep;
	p->balanced = v.balanced;
	p->lb_svc = v.lb_svc;
	p->target = v.target;
	if (v.status == 403 && v.flags != NULL && strcmp(v.flags, "DENY") == 0) {
		wp->st.denied++;
		log_info("%s: %s %s%s to %s denied for %s%s%s", wp->role, rq->method,
		    t->authority, path, v.ep->h.name, t->peer_id, v.policy ? " by policy " : "",
		    v.policy ? v.policy->h.name : "");
	}
	if (p->rt != NULL && p->rt->redirect) {
		if (!rq->redirects) {
			/* Redirects are for browsers; an h2c client is not one (amesh-waypoint(8)). */
			reply(p, 500, "redirect routes are not served over HTTP/2", "-");
			return;
		}
		redirect(t, rq, path, query, p);
		return;
	}
	if (v.status != 0) {
		reply(p, v.status, v.body, v.flags);
		return;
	}
	if (p->rt != NULL && p->rt->rewrite_path_prefix != NULL) {
		char rw[L7_TARGET_MAX];

		/* Never the path un-rewritten instead: the route said where it goes. */
		if (route_rewrite_path(p->rt, path, rw, sizeof(rw)) != 0) {
			reply(p, 414, "URI too long after the route's rewrite", "-");
			return;
		}
		if (asprintf(&p->upstream_target, "%s%s%s", rw, query[0] ? "?" : "", query) < 0) {
			p->upstream_target = NULL;
			reply(p, 500, "out of memory", "-");
			return;
		}
	}
	if (p->upstream_target == NULL && normalized &&
	    asprintf(&p->upstream_target, "%s%s%s", path, query[0] ? "?" : "", query) < 0) {
		/* Never the raw target instead: the app would get what policy did not judge. */
		p->upstream_target = NULL;
		reply(p, 500, "out of memory", "-");
		return;
	}
	if (p->rt != NULL)
		p->timeout_ms = p->rt->timeout;
	if (p->rt != NULL && route_fault_delay(p->rt, wp_rnd(), &p->delay_ms))
		p->delay = true;
}

int
l7_grpc_status(int status)
{
	switch (status) {
	case 400:
		return 13; /* INTERNAL */
	case 401:
		return 16; /* UNAUTHENTICATED */
	case 403:
		return 7; /* PERMISSION_DENIED */
	case 404:
		return 12; /* UNIMPLEMENTED */
	case 429:
	case 502:
	case 503:
	case 504:
		return 14; /* UNAVAILABLE */
	default:
		return 2; /* UNKNOWN */
	}
}
