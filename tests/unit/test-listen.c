/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for src/net/listen.c: whatever fails, the fd handed over is closed once, never leaked. */
#include "config.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "net/listen.h"
#include "runner.h"

static void
on_conn(uv_stream_t *s, int status)
{
}

/*
 * uv_tcp_open refuses an fd the loop already watches (UV_EEXIST): the fd did not go to the handle,
 * so it is closed at once. uv_listen refusing (a UDP socket) leaves it with the handle, which
 * closes it. Either way the caller never has to close it, and nothing leaks.
 */
TEST(listen_fd_failures_close_fd)
{
	uv_loop_t loop;
	uv_poll_t poll;
	uv_tcp_t h;
	int fd;

	ASSERT_EQ(uv_loop_init(&loop), 0);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT(fd >= 0);
	ASSERT_EQ(uv_poll_init_socket(&loop, &poll, fd), 0);
	ASSERT_EQ(uv_poll_start(&poll, UV_READABLE, NULL), 0);
	ASSERT_EQ(net_listen_fd(&loop, &h, fd, 16, on_conn), UV_EEXIST);
	ASSERT(fcntl(fd, F_GETFD) == -1); /* closed before returning, nothing opened since */
	uv_close((uv_handle_t *)&poll, NULL);
	uv_close((uv_handle_t *)&h, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT(fd >= 0);
	ASSERT(net_listen_fd(&loop, &h, fd, 16, on_conn) < 0);
	ASSERT(fcntl(fd, F_GETFD) != -1); /* the handle holds it */
	uv_close((uv_handle_t *)&h, NULL);
	ASSERT(fcntl(fd, F_GETFD) == -1);
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT_EQ(uv_loop_close(&loop), 0);
}
