/* SPDX-License-Identifier: Apache-2.0 */
/* amesh ztunnel's enrollment: the hand-off socket for amesh cni and the state_dir records. */
#ifndef AMESH_PROXY_ENROLL_H
#define AMESH_PROXY_ENROLL_H

#include <stddef.h>
#include <uv.h>

#include "proxy/proxy.h"

struct enroll;

struct idagent;

/*
 * Listens on socket_path (SOCK_SEQPACKET, mode 0600; a stale socket file is replaced) and keeps
 * one record per enrolled workload in state_dir (created 0700). With agent (identities from the
 * CA service), an ADD whose workload has no certificate yet is answered once the agent obtained
 * it (or failed to), and a recorded workload that failed for want of one asks the agent for it.
 * Returns 0 or -errno.
 */
int enroll_start(uv_loop_t *loop, struct proxy *px, struct idagent *agent,
    const char *socket_path, const char *state_dir, struct enroll **out);
/* Re-enrolls the workloads recorded in state_dir (after a restart); drops records whose
 * namespace is gone. Returns how many came back. */
size_t enroll_restore(struct enroll *e);
/* Stops listening (the socket file is removed; records stay for the next start). */
void enroll_stop(struct enroll *e, void (*done)(void *arg), void *arg);
/* Stops (pause) or starts again accepting hand-off requests; they wait in the socket's queue
 * meanwhile: during an upgrade only one process takes them. */
void enroll_pause(struct enroll *e, bool pause);
/* On stop, leave the socket's path: the next process (an upgrade) serves it. */
void enroll_keep_path(struct enroll *e);
/* Frees after enroll_stop's done. Accepts NULL. */
void enroll_free(struct enroll *e);

#endif
