/* SPDX-License-Identifier: Apache-2.0 */
/* Listeners on sockets opened elsewhere (inside a workload's namespace): one owner of the fd. */
#ifndef AMESH_NET_LISTEN_H
#define AMESH_NET_LISTEN_H

#include <uv.h>

/*
 * Initialises h on loop, hands it the bound socket fd and listens with the given backlog.
 * 0, or a negative uv code. Either way h is initialised and the caller closes it (uv_close) when
 * done with it; fd belongs to h from the call on: h closes it, or, when h could not take it (a
 * failed uv_tcp_open), it is closed before this returns. The caller never closes fd.
 */
int net_listen_fd(uv_loop_t *loop, uv_tcp_t *h, int fd, int backlog, uv_connection_cb cb);

/*
 * Takes the connection pending on listener l (from its connection callback) out of libuv's hands:
 * a non-blocking, close-on-exec descriptor of its own, for another loop to serve. The fd; or
 * -ENOMEM: nothing was taken, the connection is still pending and the caller must take it (libuv
 * stops watching a listener whose pending connection is left); or another negative code: it was
 * lost (closed). A temporary handle on loop is closed here.
 */
int net_accept_fd(uv_loop_t *loop, uv_stream_t *l);

#endif
