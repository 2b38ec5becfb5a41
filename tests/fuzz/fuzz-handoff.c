/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the enrollment hand-off messages (src/net/handoff.c). The first byte says how
 * many descriptors ride along (SCM_RIGHTS, 0 to 3); the rest is one SOCK_SEQPACKET message, read
 * by handoff_recv as the ztunnel reads a request from amesh cni. A request it accepts is well
 * formed (one op, single-token names within their sizes, a descriptor exactly for ADD); one it
 * refuses says why; either way no descriptor is left open. The same bytes are also read as an
 * ack (handoff_wait_ack) and as a LIST answer (handoff_list_parse), the cni side's inputs.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/handoff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
open_fds(void)
{
	int n = 0;

	for (int fd = 0; fd < 256; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			n++;
	return n;
}

static void
send_with_fds(int sock, const uint8_t *data, size_t size, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 3)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)data, size };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[3];

	if (nfds > 0) {
		struct cmsghdr *c;

		for (int i = 0; i < nfds; i++)
			if ((fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
				abort();
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		abort();
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

static void
check_request(const uint8_t *data, size_t size, int nfds)
{
	struct handoff_msg m;
	char why[256] = "";
	int sv[2], before, r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	before = open_fds();
	send_with_fds(sv[1], data, size, nfds);
	r = handoff_recv(sv[0], &m, why, sizeof(why));
	if (r == 0) {
		if ((m.op == HANDOFF_ADD) != (m.fd >= 0))
			abort();
		if (m.op != HANDOFF_LIST && (m.workload[0] == '\0' ||
		    strlen(m.workload) >= sizeof(m.workload) || strpbrk(m.workload, " \t\n\r") != NULL))
			abort();
		if (m.op == HANDOFF_ADD && (m.netns[0] == '\0' || strpbrk(m.netns, " \t\n\r") != NULL))
			abort();
		if (m.fd >= 0)
			close(m.fd);
	} else if (r == -EINVAL) {
		if (why[0] == '\0' || m.fd != -1)
			abort();
	} else if (r != 1) {
		abort();
	}
	/* Counted twice: a sanitizer's background thread opens /proc/self/statm for a moment when
	 * an RSS limit is set (ASAN_OPTIONS=hard_rss_limit_mb, test-corpus.sh's); a leaked
	 * descriptor stays. */
	if (open_fds() != before && open_fds() != before)
		abort(); /* a passed descriptor leaked */
	close(sv[0]);
	close(sv[1]);
}

static void
check_ack(const uint8_t *data, size_t size)
{
	char buf[512];
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	send_with_fds(sv[1], data, size, 0);
	r = handoff_wait_ack(sv[0], 0, buf, sizeof(buf));
	if (size == 0 ? r != -ECONNRESET && r != -ETIMEDOUT : r != 0 && r != 1)
		abort();
	if (r >= 0 && strlen(buf) >= sizeof(buf))
		abort();
	close(sv[0]);
	close(sv[1]);
}

static void
check_list(const uint8_t *data, size_t size)
{
	struct handoff_list l = { 0 };
	char *text = malloc(size + 1);

	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	(void)handoff_list_parse(text, &l);
	for (size_t i = 0; i < l.n; i++)
		if (l.v[i].workload[0] == '\0' || l.v[i].netns[0] == '\0' || l.v[i].state[0] == '\0' ||
		    handoff_list_find(&l, l.v[i].workload) == NULL)
			abort();
	handoff_list_free(&l);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > HANDOFF_MAX + 1)
		return 0;
	check_request(data + 1, size - 1, data[0] & 3);
	check_ack(data + 1, size - 1);
	check_list(data + 1, size - 1);
	return 0;
}
