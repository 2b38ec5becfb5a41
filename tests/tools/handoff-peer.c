/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A stand-in for the ztunnel's end of the enrollment hand-off (net/handoff.h), to test amesh cni
 * alone: it opens no listeners and proxies nothing. It keeps the enrolled workloads in memory,
 * answers LIST from them, and writes and removes the state_dir records the way the ztunnel does.
 *
 *   handoff-peer --socket PATH [--state-dir DIR] [--add ok|err|silent] [--del ok|err|silent]
 *
 * "err" answers "ERR refused by handoff-peer", "silent" never answers (the cni side times out).
 * Prints "ready" once listening, then one line per request ("ADD NAME NETNS", "DEL NAME", "LIST").
 * SIGTERM or SIGINT removes the socket and exits.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/handoff.h"
#include "net/records.h"

enum mode { M_OK, M_ERR, M_SILENT };

#define MAX_CONNS 64
#define MAX_WORKLOADS 256

static struct {
	char name[256], netns[4096];
	int fd; /* the namespace, held like the ztunnel holds it */
} enrolled[MAX_WORKLOADS];
static size_t nenrolled;
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int
parse_mode(const char *s, enum mode *m)
{
	if (strcmp(s, "ok") == 0)
		*m = M_OK;
	else if (strcmp(s, "err") == 0)
		*m = M_ERR;
	else if (strcmp(s, "silent") == 0)
		*m = M_SILENT;
	else
		return -1;
	return 0;
}

/* The records as the ztunnel keeps them (net/records.h): the same module writes them. */
static void
record(const char *dir, const char *name, const char *netns)
{
	int r;

	if (dir == NULL)
		return;
	r = netns == NULL ? records_remove(dir, name) : records_write(dir, name, netns);
	if (r != 0)
		fprintf(stderr, "handoff-peer: %s/%s: %s\n", dir, name, strerror(-r));
}

static size_t
find(const char *name)
{
	size_t i;

	for (i = 0; i < nenrolled; i++)
		if (strcmp(enrolled[i].name, name) == 0)
			break;
	return i;
}

static void
forget(size_t i)
{
	close(enrolled[i].fd);
	enrolled[i] = enrolled[--nenrolled];
}

/* Serves one request; returns -1 when the connection is done. */
static int
serve(int c, enum mode add, enum mode del, const char *state_dir)
{
	struct handoff_msg m;
	char why[256];
	int r = handoff_recv(c, &m, why, sizeof(why));
	size_t i;

	if (r == 1 || r == -ECONNRESET)
		return -1;
	if (r != 0) {
		printf("BAD %s\n", r == -EINVAL ? why : strerror(-r));
		fflush(stdout);
		handoff_ack(c, 0, why);
		return r == -EINVAL ? 0 : -1;
	}
	switch (m.op) {
	case HANDOFF_ADD:
		printf("ADD %s %s\n", m.workload, m.netns);
		fflush(stdout);
		if (add != M_OK) {
			close(m.fd);
			if (add == M_ERR)
				handoff_ack(c, 0, "refused by handoff-peer");
			return 0;
		}
		if ((i = find(m.workload)) < nenrolled)
			forget(i);
		if (nenrolled == MAX_WORKLOADS) {
			close(m.fd);
			handoff_ack(c, 0, "too many workloads");
			return 0;
		}
		snprintf(enrolled[nenrolled].name, sizeof(enrolled[0].name), "%s", m.workload);
		snprintf(enrolled[nenrolled].netns, sizeof(enrolled[0].netns), "%s", m.netns);
		enrolled[nenrolled++].fd = m.fd;
		record(state_dir, m.workload, m.netns);
		handoff_ack(c, 1, NULL);
		break;
	case HANDOFF_DEL:
		printf("DEL %s\n", m.workload);
		fflush(stdout);
		if (del != M_OK) {
			if (del == M_ERR)
				handoff_ack(c, 0, "refused by handoff-peer");
			return 0;
		}
		if ((i = find(m.workload)) < nenrolled)
			forget(i);
		record(state_dir, m.workload, NULL);
		handoff_ack(c, 1, NULL);
		break;
	case HANDOFF_LIST: {
		static char buf[HANDOFF_MAX];
		size_t n = 0;

		printf("LIST\n");
		fflush(stdout);
		buf[0] = '\0';
		for (i = 0; i < nenrolled && n < sizeof(buf); i++)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s %s\n", enrolled[i].name,
			    enrolled[i].netns);
		handoff_ack(c, 1, buf);
		break;
	}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "add", required_argument, NULL, 'a' },
		{ "del", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct pollfd pfd[1 + MAX_CONNS];
	const char *sock = NULL, *state_dir = NULL;
	enum mode add = M_OK, del = M_OK;
	size_t nconn = 0;
	int c, lfd;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'd': state_dir = optarg; break;
		case 'a':
			if (parse_mode(optarg, &add) != 0)
				goto usage;
			break;
		case 'x':
			if (parse_mode(optarg, &del) != 0)
				goto usage;
			break;
		default:
			goto usage;
		}
	}
	if (sock == NULL || optind != argc || strlen(sock) >= sizeof(sa.sun_path))
		goto usage;
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	unlink(sock);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 16) != 0) {
		fprintf(stderr, "handoff-peer: %s: %s\n", sock, strerror(errno));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	pfd[0].fd = lfd;
	pfd[0].events = POLLIN;
	while (!stop) {
		if (poll(pfd, 1 + nconn, 200) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (size_t i = 1; i <= nconn; i++) {
			if (pfd[i].revents == 0)
				continue;
			if (serve(pfd[i].fd, add, del, state_dir) != 0) {
				close(pfd[i].fd);
				pfd[i] = pfd[nconn--];
				i--;
			}
		}
		if ((pfd[0].revents & POLLIN) && nconn < MAX_CONNS) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0) {
				nconn++;
				pfd[nconn].fd = fd;
				pfd[nconn].events = POLLIN;
				pfd[nconn].revents = 0;
			}
		}
	}
	unlink(sock);
	return 0;
usage:
	fprintf(stderr, "usage: handoff-peer --socket PATH [--state-dir DIR] [--add ok|err|silent] "
	    "[--del ok|err|silent]\n");
	return 2;
}
