/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal to src/proxy: one enrolled workload (its namespace, the listeners and HBONE parts it
 * has there) and its lifetime. It stays allocated while any part holds it: the enrollment, each
 * listener and HBONE server, its pool, its L7 engine and every flow; the last release frees it.
 * The sockets it opens inside its namespace are made here. Below flows.c and proxy.c: calls
 * neither, and tells its owner that it is freed through the callback it was handed.
 */
#ifndef AMESH_PROXY_WORKLOAD_H
#define AMESH_PROXY_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "net/netns.h" /* AMESH_MARK */

struct dns_listener;
struct dns_server;
struct flows;
struct hbone_pool;
struct hbone_server;
struct identity;
struct waypoint;

struct pworkload {
	char *name, *netns_path;
	int nsfd;             /* owned; NETNS_SELF for the sidecar's own namespace */
	struct netns_id nsid; /* which namespace nsfd is (zero for NETNS_SELF) */
	char *ns, *sa;        /* from the registry when enrolled */
	/* Per address family (0: IPv4, 1: IPv6), for the families the workload has addresses in. */
	uv_tcp_t outbound_l[2], inbound_l[2];
	bool has_outbound[2], has_inbound[2];
	struct hbone_server *hbone_s[2];
	struct hbone_pool *pool;
	struct identity *id;  /* the identity the HBONE server presents now (a reference) */
	int open_handles;     /* parts still holding the workload */
	uint64_t connections; /* relayed since enrolled */
	struct dns_listener *dns; /* its DNS proxy listeners, else NULL (they hold the workload) */
	struct waypoint *l7;  /* a sidecar's L7 engine for this workload, else NULL (owned) */
	uint64_t drain_ms;    /* shut_workload: the pool drains for this long, after the L7 engine */
	struct flows *fl;     /* where its listeners' connections go (flows.h); not owned */
	/* Called once when the last part released it, just before it is freed. */
	void (*on_free)(struct pworkload *w, void *arg);
	void *on_free_arg;
	/* proxy.c's lists: the enrolled workloads, and those with an L7 engine. */
	struct pworkload *prev, *next;
	struct pworkload *l7_prev, *l7_next;
};

/*
 * A workload named name, recorded in netns path, of identity ns/sa, held once (by the caller);
 * nsfd is -1 until the caller sets it (then owned). Returns NULL when out of memory.
 */
struct pworkload *pw_new(const char *name, const char *path, const char *ns, const char *sa);
/* A part holds w / lets it go; the last release frees it (on_free first). */
void pw_hold(struct pworkload *w);
void pw_release(struct pworkload *w);
/* pw_release for drain callbacks (hbone servers, pool, L7 engine): arg is the workload. */
void pw_release_cb(void *arg);
/* The close callback of a listener handle whose data is the workload: releases it. */
void pw_handle_closed(uv_handle_t *h);
/* Frees w now, whatever holds it (a failed enrollment, before any part took it). */
void pw_free(struct pworkload *w);

/* The pool's socket factory (arg: the workload): TCP in its namespace, marked. Returns an fd or
 * a negative libuv code. */
int pw_socket(void *arg, int family);
/* A socket inside w's namespace to its app, marked, bound to client's address (IP_TRANSPARENT)
 * when it can be, else to its own. Returns an fd or a negative libuv code. */
int pw_app_socket(struct pworkload *w, const struct sockaddr_storage *client, int family);

/* The DNS proxy's socket factory (arg: the workload): UDP or TCP in its namespace, marked, for
 * queries to the upstream resolvers. Returns an fd or a negative code. */
int pw_dns_socket(void *arg, int family, int type);
/* Opens w's DNS listeners on the loopback address of each family in fam (127.0.0.1, ::1), port
 * port, UDP and TCP, served by s; they hold w until stopped. Returns 0 or a negative code. */
int pw_dns_listen(struct pworkload *w, struct dns_server *s, uint16_t port, const bool fam[2]);

#endif
