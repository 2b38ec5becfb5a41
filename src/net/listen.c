/* SPDX-License-Identifier: Apache-2.0 */
/* Listeners on sockets opened elsewhere: the handle takes the fd, or it is closed at once. */
#include "config.h"

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
