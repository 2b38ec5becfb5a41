/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L7 engine's routing decision, a pure function of (registry, destination, peer, request):
 * route (Gateway API precedence), backend, endpoint and target port, L7 authorization against that
 * endpoint, then fault abort; and its L4 counterpart for a tunnel relayed as bytes. No I/O, no
 * logging, no counters: what is random (backend weights, faults), the balancer (net/lb.h) and the
 * time come from the caller, so tests can fix them.
 */
#ifndef AMESH_L7_DECIDE_H
#define AMESH_L7_DECIDE_H

#include <stdbool.h>
#include <stdint.h>

#include "config/registry.h"
#include "l7/route.h"
#include "net/lb.h"

/* Whose tunnel: the waypoint's, or a sidecar's inbound (HBONE in, its app over TCP) or outbound
 * (its app's captured connection in, HBONE out). */
enum l7_side { L7_SIDE_WAYPOINT, L7_SIDE_IN, L7_SIDE_OUT };

/* What the tunnel addresses, in registry reg (borrowed). */
struct l7_dest {
	const struct registry *reg;
	enum l7_side side;
	const struct reg_service *svc;     /* addressed by service (hostname or VIP), or NULL */
	const struct reg_workload *direct; /* or a workload (L7_SIDE_IN: the sidecar's own) */
	uint16_t port;                     /* the port the client asked for */
};

/* Who asks. */
struct l7_peer {
	const char *principal;       /* "TD/ns/NS/sa/SA" (authz_principal), "" for plaintext */
	const struct ip_addr *ip;    /* as the app will see it (L7_SIDE_IN), else NULL */
};

/* The decision's choices: rnd() for backend weights and faults; lb the balancer that picks a
 * service's endpoint (round robin per service, skipping one whose connect failed), at now_ms. */
struct l7_choice {
	uint32_t (*rnd)(void);
	struct lb *lb;
	uint64_t now_ms;
};

/* What routing and policy decided for one request (or one L4 tunnel). */
struct wp_verdict {
	const struct reg_route *rt;     /* NULL: the service's own endpoints (default route) */
	const struct reg_workload *ep;  /* where it goes (NULL: nowhere to go) */
	uint16_t target;                /* the application port there */
	int status;                     /* 0: forward (or redirect, when rt->redirect); else the
	                                   local reply's status, with body and flags */
	const char *body, *flags;
	const struct reg_policy *policy; /* status 403: the deny (or the missing allow) that decided */
	bool balanced;                  /* ep is the balancer's pick: report a connect failure to it
	                                   (lb_fail) */
	const struct reg_service *lb_svc; /* balanced: the service ep was picked for (its outlier
	                                     detection and pool limits; lb_result, lb_take) */
};

/* The endpoint for a request to svc of reg: the balancer's pick (lb_pick; NULL when svc has no
 * endpoints); svc NULL: direct. */
const struct reg_workload *l7_pick_endpoint(const struct l7_choice *c, const struct registry *reg,
    const struct reg_service *svc, const struct reg_workload *direct);

/*
 * One request: v is filled (all of it, whatever the outcome). host is the request's :authority or
 * Host. A redirect route stops after choosing it (v->rt->redirect, status 0): the caller answers
 * it as its protocol can. Denied: status 403, flags "DENY", v->policy. Every pointer in v is into
 * d->reg, or static.
 */
void l7_decide(const struct l7_dest *d, const struct l7_peer *p, const struct route_req *rq,
    const char *host, const struct l7_choice *c, struct wp_verdict *v);

/*
 * A tunnel relayed as bytes: endpoint and port (no routes), then the destination's L4 policy
 * (authz_l4; fail closed on L7 rules) unless a sidecar's outbound. status 0: go on; 503 a sidecar's
 * inbound whose workload left the registry; 403 denied (v->policy).
 */
void l7_decide_l4(const struct l7_dest *d, const struct l7_peer *p, const struct l7_choice *c,
    struct wp_verdict *v);

#endif
