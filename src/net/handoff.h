/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The enrollment hand-off between amesh cni and amesh ztunnel: one SOCK_SEQPACKET message per
 * request on [ztunnel] socket, answered by one ack. A request is a line of text; ADD carries the
 * workload's network namespace as an open file descriptor (SCM_RIGHTS), so the ztunnel needs no
 * path and no race with the namespace going away.
 *
 *   ADD <workload> <netns-path>      + fd   -> "OK" or "ERR <message>"
 *   DEL <workload>                           -> "OK" or "ERR <message>"
 *   LIST                                     -> "OK <workload> <netns-path> <state>...\n..."
 *
 * Names and paths are single tokens (no blanks). A message is at most HANDOFF_MAX bytes.
 */
#ifndef AMESH_NET_HANDOFF_H
#define AMESH_NET_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

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
/*
 * The client's whole exchange: connects to path, sends m, waits up to timeout_ms for the ack.
 * Returns 1 (OK, text in buf), 0 (ERR, message in buf) or -errno; *reached says whether the
 * connect worked, so "not running" and "not answering" differ.
 */
int handoff_request(const char *path, const struct handoff_msg *m, int timeout_ms, char *buf,
    size_t len, bool *reached);

/*
 * LIST: one line per workload, "NAME NETNS STATE[ REASON]". STATE is "serving" or "failed" (held,
 * not served: REASON says why); readers also take "recorded" for an entry read from the records
 * (the ztunnel down), and a line without STATE (an older ztunnel) as serving.
 */
struct handoff_entry {
	char *workload, *netns, *state, *why; /* why: "" when none */
};
struct handoff_list {
	struct handoff_entry *v;
	size_t n;
};
/* Writes one LIST line to fp. */
void handoff_list_line(FILE *fp, const char *workload, const char *netns, const char *state,
    const char *why);
/* Parses a LIST answer (modified in place) into out (emptied first). Returns how many lines were
 * malformed and skipped. */
size_t handoff_list_parse(char *text, struct handoff_list *out);
/* Appends a copy of the entry. */
void handoff_list_add(struct handoff_list *l, const char *workload, const char *netns,
    const char *state, const char *why);
const struct handoff_entry *handoff_list_find(const struct handoff_list *l, const char *workload);
/* Frees the entries; the list is empty after. */
void handoff_list_free(struct handoff_list *l);

#endif
