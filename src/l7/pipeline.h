/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request pipeline both HTTP protocols run on a request head, once, in this order: trace
 * context, move to the registry in force, 414 for a target too long, 400 for a fragment, CONNECT
 * refused, path normalization, the routing decision (decide.h), redirect, local replies the
 * decision asks for, the rewritten target (414 when the rewrite would pass the limit), then the
 * route's timeout and the fault delay. The protocol module then answers locally or forwards as
 * the plan says, with its own framing and timers.
 */
#ifndef AMESH_L7_PIPELINE_H
#define AMESH_L7_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "l7/decide.h"
#include "l7/route.h"

struct tun;

/* The Allow field of a 405 local reply (RFC 9110 15.5.6: a 405 must carry one): the methods the
 * engine forwards, every standard one but CONNECT (other methods are forwarded too). */
#define L7_ALLOW "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"

/* The longest request target routed (2 KiB); longer ones get 414. */
#define L7_TARGET_MAX 2048

/* A request head as its protocol parsed it (borrowed for the call). */
struct l7_req {
	const char *method;              /* never NULL */
	const char *target;              /* path and query as received */
	size_t target_len;
	const char *host;                /* Host or :authority; NULL: the tunnel's authority */
	route_header_fn header;          /* the request's other fields */
	void *header_arg;
	bool redirects;                  /* the protocol answers redirect routes (HTTP/1.1 does;
					    else they get 500) */
};

/* What to do with it. */
struct l7_plan {
	int status;             /* != 0: answer locally with status, body, flags (and location) */
	const char *body, *flags;
	char location[2048];    /* a redirect's Location ("" otherwise) */
	bool close;             /* after the local reply the connection closes (HTTP/1.1) */
	bool moved;             /* the tunnel moved to a newer registry (kept upstreams go) */
	/* Forwarding (status 0): the route, endpoint and port decided. */
	const struct reg_route *rt;
	const struct reg_workload *ep;
	bool balanced;          /* ep is the balancer's pick: a connect failure goes to lb_fail */
	const struct reg_service *lb_svc; /* the service it was picked for (wp_verdict) */
	uint16_t target;
	char *upstream_target;  /* malloc'd, the caller's: the target to send (rewritten or
				   normalized); NULL: the target as received */
	uint64_t timeout_ms;    /* the route's overall timeout from now (0: none) */
	bool delay;             /* fault delay: wait delay_ms before going upstream */
	uint64_t delay_ms;
	char traceparent[64];   /* the request's, or a new one to add (add_traceparent) */
	bool add_traceparent;
};

/* Runs the pipeline on a request of tunnel t; fills plan (the caller frees upstream_target). */
void l7_pipeline(struct tun *t, const struct l7_req *rq, struct l7_plan *plan);

/* The gRPC status a local reply of HTTP status stands for, by gRPC's own mapping
 * (doc/http-grpc-status-mapping.md) as Envoy has it: 7 for 403, 14 for 429/502/503/504, 2 for
 * what has no mapping. The HTTP/2 module answers a gRPC request's local reply Trailers-Only
 * with it. */
int l7_grpc_status(int status);

#endif
