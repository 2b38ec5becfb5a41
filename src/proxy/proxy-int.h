/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to src/proxy: workload lifetime and the flow list shared by proxy.c and flows.c. */
#ifndef AMESH_PROXY_PROXY_INT_H
#define AMESH_PROXY_PROXY_INT_H

#include "proxy/proxy.h"

/* A workload stays allocated while any part holds it. */
void pw_hold(struct pworkload *w);
void pw_release(struct pworkload *w);

/* A socket inside w's namespace to its app, marked, from client's address when it can be. */
int proxy_app_socket(struct pworkload *w, const struct sockaddr_storage *client, int family);

/* Checks the certificates of enrolled workloads every second (rotation). */
void proxy_start_refresh(struct proxy *px);
/* Resets every relayed connection (drain timeout). */
void proxy_abort_flows(struct proxy *px);
/* Called when a workload is freed or the last flow ends: finishes a drain when all is gone. */
void proxy_check_drained(struct proxy *px);

#endif
