/* SPDX-License-Identifier: Apache-2.0 */
/* The routing decision of one request or one L4 tunnel (decide.h): routes, endpoints, policy. */
#include "config.h"

#include <string.h>

#include "l7/decide.h"
#include "policy/authz.h"

const struct reg_workload *
l7_pick_endpoint(const struct l7_choice *c, const struct registry *reg,
    const struct reg_service *svc, const struct reg_workload *direct)
{
	if (svc == NULL)
		return direct;
	return lb_pick(c->lb, reg, svc, c->now_ms);
}

/* The addressed service's target for the port asked (the port itself when it maps none). */
static uint16_t
service_target(const struct l7_dest *d)
{
	uint16_t target = d->port;

	if (d->svc != NULL && d->side != L7_SIDE_IN)
		for (size_t i = 0; i < d->svc->ports.n; i++)
			if (d->svc->ports.v[i].port == d->port)
				target = d->svc->ports.v[i].target;
	return target;
}

void
l7_decide(const struct l7_dest *d, const struct l7_peer *p, const struct route_req *rq,
    const char *host, const struct l7_choice *c, struct wp_verdict *v)
{
	struct authz_l7_req aq;
	const struct reg_policy *matched = NULL;

	memset(v, 0, sizeof(*v));
	/* Routes are the caller's side (Envoy: client-side); a sidecar's inbound only authorizes. */
	v->rt = d->svc != NULL && d->side != L7_SIDE_IN ? route_select(d->reg, d->svc, rq) : NULL;
	/* The port: the addressed service's target for the port asked, unless a backend service
	 * maps it otherwise. */
	v->target = service_target(d);
	if (v->rt != NULL && v->rt->redirect)
		return;
	/* The endpoint: from the route's backends, or the addressed service or workload. */
	if (v->rt != NULL && v->rt->backends.n > 0) {
		const struct reg_backend *be = route_pick_backend(v->rt, c->rnd());

		if (be == NULL) {
			v->status = 500;
			v->body = "no route: every backend has weight 0";
			v->flags = "NR";
			return;
		}
		v->balanced = be->workload == NULL;
		v->lb_svc = be->service;
		v->ep = be->workload != NULL ? be->workload :
		    l7_pick_endpoint(c, d->reg, be->service, NULL);
		if (be->service != NULL) {
			/* The backend service's port with the same number, else its first. */
			const struct reg_service *bs = be->service;

			v->target = bs->ports.n ? bs->ports.v[0].target : d->port;
			for (size_t i = 0; i < bs->ports.n; i++)
				if (bs->ports.v[i].port == d->port)
					v->target = bs->ports.v[i].target;
		}
	} else {
		v->balanced = d->side != L7_SIDE_IN && d->svc != NULL;
		v->lb_svc = v->balanced ? d->svc : NULL;
		v->ep = d->side == L7_SIDE_IN ? d->direct :
		    l7_pick_endpoint(c, d->reg, d->svc, d->direct);
	}
	if (d->side == L7_SIDE_IN && v->ep == NULL) {
		/* Never to the app unjudged: its workload is the one policy is looked up for. */
		v->status = 503;
		v->body = "no longer in the registry";
		v->flags = "NR";
		return;
	}
	/* L7 authorization, against the workload the request is going to; a sidecar's outbound
	 * leaves that to the destination. */
	if (d->side != L7_SIDE_OUT) {
		memset(&aq, 0, sizeof(aq));
		aq.l4.src_principal = p->principal;
		aq.l4.src_namespace = "";
		aq.l4.src_ip = p->ip;
		aq.l4.dst_port = v->target;
		aq.method = rq->method;
		aq.path = rq->path;
		aq.host = host;
		aq.header = rq->header;
		aq.header_arg = rq->header_arg;
		if (v->ep != NULL && authz_l7(d->reg, v->ep, &aq, &matched) == AUTHZ_DENY) {
			v->status = 403;
			v->body = "RBAC: access denied";
			v->flags = "DENY";
			v->policy = matched;
			return;
		}
	}
	if (v->rt != NULL && route_fault_abort(v->rt, c->rnd(), &v->status)) {
		v->body = "fault filter abort";
		v->flags = "FI";
	}
}

void
l7_decide_l4(const struct l7_dest *d, const struct l7_peer *p, const struct l7_choice *c,
    struct wp_verdict *v)
{
	memset(v, 0, sizeof(*v));
	v->balanced = d->side != L7_SIDE_IN && d->svc != NULL;
	v->lb_svc = v->balanced ? d->svc : NULL;
	v->ep = d->side == L7_SIDE_IN ? d->direct : l7_pick_endpoint(c, d->reg, d->svc, d->direct);
	v->target = service_target(d);
	if (d->side == L7_SIDE_IN && v->ep == NULL) {
		v->status = 503; /* never to the app unjudged */
		v->flags = "NR";
		return;
	}
	if (v->ep != NULL && d->side != L7_SIDE_OUT) {
		struct authz_l4_req q = { 0 };
		const struct reg_policy *m = NULL;

		q.src_principal = p->principal;
		q.src_namespace = "";
		q.src_ip = p->ip;
		q.dst_port = v->target;
		if (authz_l4(d->reg, v->ep, &q, &m) == AUTHZ_DENY) {
			v->status = 403;
			v->flags = "DENY";
			v->policy = m;
		}
	}
}
