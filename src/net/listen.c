/* SPDX-License-Identifier: Apache-2.0 */
/* Listeners on sockets opened elsewhere: the handle takes the fd, or it is closed at once. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/listen.h"

int
net_listen_fd(uv_loop_t *loop, uv_tcp_t *h, int fd, int backlog, uv_connection_cb cb)
{
	int r;

	uv_tcp_init(loop, h);
	if ((r = uv_tcp_open(h, fd)) != 0) {
		close(fd); /* the handle did not take it: closing h will not */
		return r;
	}
	return uv_listen((uv_stream_t *)h, backlog, cb);
}

static void
free_tcp(uv_handle_t *h)
{
	free(h);
}

int
net_accept_fd(uv_loop_t *loop, uv_stream_t *l)
{
	uv_tcp_t *t = malloc(sizeof(*t));
	int fd = -1, r;

	if (t == NULL)
		return -ENOMEM;
	uv_tcp_init(loop, t);
	r = uv_accept(l, (uv_stream_t *)t);
	if (r == 0)
		r = uv_fileno((uv_handle_t *)t, &fd);
	if (r == 0 && (fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		r = -errno;
	uv_close((uv_handle_t *)t, free_tcp);
	/* (ENOMEM from libuv here means the connection was taken and lost: not the caller's.) */
	return r == 0 ? fd : r == -ENOMEM ? -EIO : r;
}
