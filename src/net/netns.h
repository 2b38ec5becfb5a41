/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sockets inside other network namespaces. A socket belongs to the namespace it was created in,
 * for its whole life; so only socket(2) has to run inside the namespace. That runs on one helper
 * thread which enters the namespace and comes back, so the loop thread never changes namespace.
 */
#ifndef AMESH_NET_NETNS_H
#define AMESH_NET_NETNS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Opens a namespace file (/run/netns/NAME, /proc/PID/ns/net). Returns an fd or -errno. */
int netns_open(const char *path);
/* True if fd is a network namespace. */
bool netns_is_netns(int fd);
/* Which namespace a descriptor or path names: its nsfs device and inode (the same for
 * /run/netns/NAME and /proc/PID/ns/net of one namespace). */
struct netns_id {
	uint64_t dev, ino;
};
/* The identity of namespace fd. Returns 0 or -errno. */
int netns_id_of_fd(int fd, struct netns_id *out);
/* The identity of the namespace path names now. Returns 0 or -errno (-ENOENT: no such path). */
int netns_id_of_path(const char *path, struct netns_id *out);
/* True when a and b are set (non-zero) and name the same namespace. */
bool netns_id_eq(const struct netns_id *a, const struct netns_id *b);
/* True when path still names the namespace id: its namespace was not deleted or replaced. */
bool netns_path_is(const char *path, const struct netns_id *id);
/* The caller's own namespace, for nsfd arguments: a sidecar runs inside its workload's. */
#define NETNS_SELF (-1)
/* A non-blocking, close-on-exec socket created inside the namespace nsfd (NETNS_SELF: here, with
 * no namespace change). Returns it or -errno. */
int netns_socket(int nsfd, int family, int type);

/* SO_MARK of every socket the proxy opens in a workload namespace: the interception rules let
 * such sockets through (DESIGN.md section 2). The one definition, for the rules and the proxy. */
#define AMESH_MARK 0x539u

struct netns_sock_opts {
	uint32_t mark;      /* SO_MARK (0: none) */
	bool transparent;   /* IP_TRANSPARENT / IPV6_TRANSPARENT: bind to a foreign address */
	bool reuseaddr;
	bool v6only;        /* IPV6_V6ONLY: a separate IPv4 socket serves IPv4 (so SO_ORIGINAL_DST
	                       is asked of the right family) */
	const struct sockaddr *bind; /* NULL: no bind */
};
/* A TCP socket in nsfd with opts applied (bound if asked). Returns it or -errno. */
int netns_tcp_socket(int nsfd, int family, const struct netns_sock_opts *o);
/* A listening TCP socket in nsfd on addr (IPv6 ones are IPv6-only). Returns it or -errno. */
int netns_listen(int nsfd, const struct sockaddr *addr, int backlog);

/* SO_LINGER 0: closing fd then resets the connection (RST) instead of a FIN. */
void sock_rst_on_close(int fd);

/* The destination a redirected connection had before nat REDIRECT (SO_ORIGINAL_DST). */
int sock_original_dst(int fd, struct sockaddr_storage *out);

#endif
