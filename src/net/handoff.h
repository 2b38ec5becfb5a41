/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enrollment hand-off between amesh cni and amesh ztunnel: one SOCK_SEQPACKET message per
 * request on [ztunnel] socket, answered by one ack. A request is a line of text; ADD carries the
 * workload's network namespace as an open file descriptor (SCM_RIGHTS), so the ztunnel needs no
 * path and no race with the namespace going away.
 *
 *   ADD <workload> <netns-path>      + fd   -> "OK" or "ERR <message>"
 *   DEL <workload>                           -> "OK" or "ERR <message>"
 *   LIST                                     -> "OK <workload> <netns-path>\n..." (one message)
 *
 * Names and paths are single tokens (no blanks). A message is at most HANDOFF_MAX bytes.
 */
#ifndef AMESH_NET_HANDOFF_H
#define AMESH_NET_HANDOFF_H

#include <stddef.h>

#define HANDOFF_MAX 65536
/* How long the cni side waits for an ack before giving up (CNI error 11, try again later). */
#define HANDOFF_TIMEOUT_MS 10000

enum handoff_op { HANDOFF_ADD, HANDOFF_DEL, HANDOFF_LIST };

struct handoff_msg {
	enum handoff_op op;
	char workload[256];
	char netns[4096];
	int fd; /* ADD: the namespace fd (owned by the receiver once received); else -1 */
};

/* Formats and sends m on a connected SOCK_SEQPACKET socket. Returns 0 or -errno. */
int handoff_send(int sock, const struct handoff_msg *m);
/*
 * Receives one request. Returns 0 and fills m (m->fd is -1 unless ADD brought one), -EINVAL with a
 * reason in why for a malformed request, 1 when the peer closed, or another -errno.
 */
int handoff_recv(int sock, struct handoff_msg *m, char *why, size_t whylen);
/* Sends an ack: "OK" plus optional text, or "ERR text" when ok is 0. Returns 0 or -errno. */
int handoff_ack(int sock, int ok, const char *text);
/* Waits up to timeout_ms for an ack. Returns 1 for OK (text after "OK " in buf), 0 for ERR (the
 * message in buf), -ETIMEDOUT, or another -errno. */
int handoff_wait_ack(int sock, int timeout_ms, char *buf, size_t len);
/* Connects a SOCK_SEQPACKET socket to path. Returns the fd or -errno. */
int handoff_connect(const char *path);

#endif
