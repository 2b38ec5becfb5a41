/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The identity agent of amesh ztunnel, sidecar and waypoint when [identity] ca_address is set
 * (amesh-ca(8) CLIENTS): for each identity the role needs it makes a P-256 key on this host, asks
 * the CA service for a certificate with the node certificate, writes both to cert_dir (the key
 * 0600) and reloads the identity store; it renews each identity at half its life, with jitter
 * (0.4 to 0.6 of the life) so that many identities issued together are not renewed together, and
 * the node certificate the same way. While the CA cannot be reached, the current certificate stays
 * in use and the request is retried with a capped backoff (1 s doubling, at most 60 s and at most
 * an eighth of the certificate's life); every failure is logged and counted. The trust bundle is
 * fetched from the CA every IDAGENT_BUNDLE_REFRESH_S and written to [mesh] trust_bundle when it
 * changed, which is how a root rotation reaches every node.
 *
 * Bounds: at most IDAGENT_MAX identities, IDAGENT_PARALLEL requests in flight (the others wait
 * their turn), each bounded by [identity] ca_timeout per address.
 *
 * Threads: the API on the loop's thread; requests run on libuv's worker threads.
 */
#ifndef AMESH_CA_AGENT_H
#define AMESH_CA_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "config/conf.h"

#define IDAGENT_MAX 4096
#define IDAGENT_PARALLEL 2
#define IDAGENT_BUNDLE_REFRESH_S 300

struct identity_store;
struct metrics;
struct idagent;

struct idagent_cfg {
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	struct identity_store *ids;
	struct metrics *metrics; /* may be NULL */
	/* Whether ns/sa is still needed; one that is not stops being renewed. NULL: always. */
	bool (*in_use)(void *arg, const char *ns, const char *sa);
	void *arg;
	uint32_t mark; /* SO_MARK of its connections to the CA (a sidecar's: AMESH_MARK), or 0 */
};

/* Called once per idagent_want that returned 1: 0 when the identity is in the store, else a
 * negative code and why. */
typedef void (*idagent_done_fn)(void *arg, int status, const char *why);

/* Makes [identity] cert_dir (and its parents) where the agent will write, so that the identity
 * store can load and watch it before the first certificate arrives. 0 or -errno with why. */
int idagent_prepare(const struct amesh_conf *conf, char *why, size_t whylen);
/* Starts the agent (cfg copied). Returns 0 or a negative code with why. */
int idagent_new(const struct idagent_cfg *cfg, struct idagent **out, char *why, size_t whylen);
/*
 * Asks for ns/sa and keeps it renewed. Returns 0 when a current certificate is in the store now
 * (done is not called), 1 when it is being obtained (done follows, unless cancelled), or a
 * negative code with why (not joined, too many identities).
 */
int idagent_want(struct idagent *a, const char *ns, const char *sa, idagent_done_fn done,
    void *arg, char *why, size_t whylen);
/*
 * Startup of a role that serves one identity (a sidecar, a waypoint): runs loop until ns/sa is in
 * the store, asking again once a second for up to 15 s after a failure (the CA's registry may
 * not have the role's entry yet). Returns 0, or a negative code with why (the CA's last refusal,
 * not joined).
 */
int idagent_wait(struct idagent *a, uv_loop_t *loop, const char *ns, const char *sa, char *why,
    size_t whylen);
/* SIGHUP: fetch the trust bundle now and load the node certificate again if it was missing. */
void idagent_kick(struct idagent *a);
/* Forgets every done callback registered with arg. */
void idagent_cancel(struct idagent *a, void *arg);
/* Writes the agent's state as a JSON object (no keys, ever). */
void idagent_dump(struct idagent *a, FILE *f);
/* Whether the node certificate is loaded and current; if not, why says what to do. */
bool idagent_joined(struct idagent *a, char *why, size_t whylen);
/* Stops timers and waits for requests in flight; done(arg) then. */
void idagent_close(struct idagent *a, void (*done)(void *arg), void *arg);
/* After done. Accepts NULL. */
void idagent_free(struct idagent *a);

/*
 * amesh_identity_expiry_timestamp_seconds{identity} for every identity in ids, whether they come
 * from the CA or from files: call before each scrape. *state is the caller's (NULL at first) and
 * is freed by identity_gauges_free.
 */
struct identity_gauges;
void identity_gauges_refresh(struct identity_gauges **state, struct metrics *m,
    struct identity_store *ids);
void identity_gauges_free(struct identity_gauges *g);

#endif
