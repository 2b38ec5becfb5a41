/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Listening sockets handed from one process of a role to the next, for an upgrade without a
 * refused connection (amesh-ztunnel(8) UPGRADE). Every listener a role opens is kept here under
 * a key that names it the same way in any process: "tcp NETNS ADDR", "udp NETNS ADDR" (NETNS
 * the network namespace's inode) or "unix PATH". The old process starts the new one with these
 * descriptors inherited (cmd/upgrade.c) and a control socket in AMESH_INHERIT_FD, over which it
 * sends one line per descriptor, "FD N KEY", then "END". The new process takes each listener it
 * would have opened (inherit_take) instead of opening it, closes those it does not want, and
 * writes "READY" once it serves; then the old process stops accepting and drains.
 *
 * Limits: INHERIT_MAX descriptors (past that, the rest are opened afresh by the new process: a
 * bind that fails while the old one holds the port is logged as the listener's error); a key is
 * at most INHERIT_KEY_MAX bytes. Threads: the loop thread only.
 */
#ifndef AMESH_CORE_INHERIT_H
#define AMESH_CORE_INHERIT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define INHERIT_MAX 65536
#define INHERIT_KEY_MAX 160
#define INHERIT_ENV "AMESH_INHERIT_FD"

/*
 * At startup: when started by an upgrade, reads the descriptors handed over. Returns how many
 * (0 when not an upgrade) or a negative AMESH_ERR_* / -errno with why set (a broken hand-over:
 * the process should exit, and the old one goes on serving).
 */
int inherit_init(char *why, size_t whylen);
/* Whether this process was started by an upgrade and has not said READY yet. */
bool inherit_pending(void);
/* The listener handed over under key, now the caller's; -1 when there is none. */
int inherit_take(const char *key);
/* Closes what was handed over and not taken: listeners this process no longer wants. */
void inherit_close_unused(void);
/* Tells the old process that this one serves (once); it then stops accepting and drains. */
void inherit_ready(void);

/* Keeps fd, a listener of this process, to hand on under key. It is known by its socket's
 * inode: a dup of it serves as well, and once no descriptor holds it, it is forgotten. */
void inherit_keep(int fd, const char *key);
/*
 * The kept listeners still open: up to max of them into fds and keys (pointers into this
 * module, valid until the next inherit_* call). Returns how many.
 */
size_t inherit_list(int *fds, const char **keys, size_t max);

/* "tcp NETNS ADDR" for a socket of family/type bound to addr in the namespace nsfd (-1: this
 * process's own). Returns key, or NULL when the namespace cannot be read. */
char *inherit_key(char *key, size_t len, const char *proto, int nsfd, const struct sockaddr *addr);

/*
 * A TCP listener on addr in this process's namespace: the one handed over, else a new socket
 * (SO_REUSEADDR, IPV6_V6ONLY, non-blocking, close-on-exec) bound and listening, kept for the
 * next process. Returns the fd or -errno.
 */
int inherit_tcp_listen(const struct sockaddr *addr, int backlog);

#endif
