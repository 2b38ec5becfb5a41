/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Many-connection load for bench/hbone/run.sh, on one epoll loop, 127.0.0.1 only.
 *
 *   connload echo
 *       A TCP echo server on 127.0.0.1:0 for any number of connections; prints "listening PORT".
 *   connload open -p PORT -n N [-c CONCURRENCY] [-b PROBE_BYTES] [-T TIMEOUT_S]
 *       Opens N connections to 127.0.0.1:PORT, at most CONCURRENCY of them not yet up at a time.
 *       With -b > 0 a connection is up when PROBE_BYTES sent through it came back (through an
 *       HBONE tunnel to the echo server, that is: TCP accept, pool, TLS handshake if a new
 *       connection is needed, CONNECT, upstream connect, and the bytes both ways); with -b 0 it is
 *       up when connect() completes. Prints
 *           up OK of N failed F secs T p50_ms A p99_ms B max_ms C
 *       and then holds every connection open, idle. SIGUSR1: send PROBE_BYTES (at least 1) on
 *       every open connection and wait for them to come back, then print
 *           probed OK of N failed F secs T
 *       SIGTERM or SIGINT: exit (the kernel closes the sockets). A connection the far end closes
 *       or resets counts as failed from then on.
 *
 * Connections are never reused, so with a pool that may put only one stream on a connection every
 * connection costs a new TLS handshake.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

enum cstate { C_FREE, C_CONNECTING, C_PROBING, C_UP, C_FAILED };

struct conn {
	int fd;
	enum cstate st;
	size_t want, got; /* probe bytes expected back / received */
	double t_start;
};

static int ep;
static struct conn *conns;
static size_t nconns;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	fprintf(stderr, "connload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* --- echo server --- */

static void echo_main(void) __attribute__((noreturn));

static void
echo_main(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	struct epoll_event ev, evs[MAX_EVENTS];
	char buf[65536];
	int ls, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ls < 0)
		die("socket");
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 4096) != 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) != 0)
		die("listen");
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.fd = ls;
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	printf("listening %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == ls) {
				int c;

				while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.events = EPOLLIN;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));

				if (r > 0) {
					/* Probes are small: the socket buffer always takes them. A
					 * peer that sends more than fits loses the rest. */
					if (write(fd, buf, (size_t)r) < 0 && errno != EAGAIN)
						break;
					continue;
				}
				if (r < 0 && errno == EAGAIN)
					break;
				/* EOF or error: close (a FIN back after the peer's FIN). */
				close(fd);
				break;
			}
		}
	}
}

/* --- connection opener --- */

static struct {
	int port;
	size_t n, conc, probe;
	double timeout;
} o = { .conc = 64, .probe = 1, .timeout = 120 };

static void
arm(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
fail(struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->st = C_FAILED;
}

/* Starts connection c; returns false if it failed at once. */
static bool
start_conn(struct conn *c)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o.port) };
	struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
	int one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->t_start = now();
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		c->st = C_FAILED;
		return false;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
		close(c->fd);
		c->fd = -1;
		c->st = C_FAILED;
		return false;
	}
	c->st = C_CONNECTING;
	epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	return true;
}

static void
send_probe(struct conn *c)
{
	char buf[4096];
	size_t left = c->want;

	memset(buf, 'p', sizeof(buf));
	while (left > 0) {
		ssize_t w = write(c->fd, buf, left < sizeof(buf) ? left : sizeof(buf));

		if (w <= 0) {
			fail(c);
			return;
		}
		left -= (size_t)w;
	}
	c->got = 0;
	c->st = C_PROBING;
	arm(c, EPOLLIN);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * Runs the loop until every connection in [0, nconns) is up or failed (or the timeout, or a
 * SIGTERM), starting new ones while fewer than conc are pending (opening), or probing every open
 * one (!opening). lat gets the time each one took.
 */
static void
run_until_settled(bool opening, double *lat, int sfd, bool *stop)
{
	struct epoll_event evs[MAX_EVENTS];
	size_t next = opening ? 0 : nconns, pending = 0, settled = 0;
	double deadline = now() + o.timeout;
	char buf[65536];

	if (!opening) {
		for (size_t i = 0; i < nconns; i++) {
			if (conns[i].st == C_UP) {
				conns[i].want = o.probe ? o.probe : 1;
				conns[i].t_start = now();
				send_probe(&conns[i]);
			}
			if (conns[i].st == C_PROBING)
				pending++;
			else
				settled++;
		}
	}
	while (settled < nconns && now() < deadline && !*stop) {
		int n;

		while (opening && next < nconns && pending < o.conc) {
			if (start_conn(&conns[next]))
				pending++;
			else
				settled++;
			next++;
		}
		n = epoll_wait(ep, evs, MAX_EVENTS, 100);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			enum cstate before;

			if (c == NULL) { /* the signalfd */
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGUSR1)
					*stop = true;
				continue;
			}
			before = c->st;
			if (c->st == C_UP || c->st == C_FAILED) {
				/* Hang-up of one that is already settled: stop watching it. */
				if (c->st == C_UP)
					fail(c);
				continue;
			}
			if (c->st == C_CONNECTING) {
				int err = 0;
				socklen_t len = sizeof(err);

				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err != 0) {
					fail(c);
				} else if (o.probe > 0) {
					c->want = o.probe;
					send_probe(c);
				} else {
					c->st = C_UP;
					arm(c, 0);
				}
			} else if (c->st == C_PROBING) {
				ssize_t r = read(c->fd, buf, sizeof(buf));

				if (r > 0) {
					c->got += (size_t)r;
					if (c->got >= c->want) {
						c->st = C_UP;
						/* Idle from now on: no events asked for, but a hang-up
						 * or error is still reported (and counted as failed). */
						arm(c, 0);
					}
				} else if (r == 0 || errno != EAGAIN) {
					fail(c);
				}
			}
			if (before != c->st && (c->st == C_UP || c->st == C_FAILED)) {
				lat[c - conns] = now() - c->t_start;
				pending--;
				settled++;
			}
		}
	}
}

static void
report(const char *what, double t0, double *lat)
{
	size_t ok = 0, failed = 0, k = 0;
	double *v = malloc(sizeof(double) * (nconns + 1));

	for (size_t i = 0; i < nconns; i++) {
		ok += conns[i].st == C_UP;
		failed += conns[i].st != C_UP;
		if (v != NULL && conns[i].st == C_UP)
			v[k++] = lat[i];
	}
	if (v != NULL && k > 0) {
		qsort(v, k, sizeof(double), cmp_double);
		printf("%s %zu of %zu failed %zu secs %.3f p50_ms %.2f p99_ms %.2f max_ms %.2f\n", what,
		    ok, nconns, failed, now() - t0, v[k / 2] * 1e3, v[(k * 99) / 100] * 1e3,
		    v[k - 1] * 1e3);
	} else {
		printf("%s 0 of %zu failed %zu secs %.3f\n", what, nconns, failed, now() - t0);
	}
	fflush(stdout);
	free(v);
}

static int
open_main(int argc, char **argv)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	sigset_t mask;
	double *lat, t0;
	bool stop = false;
	int c, sfd;

	optind = 2;
	while ((c = getopt(argc, argv, "p:n:c:b:T:")) != -1) {
		switch (c) {
		case 'p': o.port = atoi(optarg); break;
		case 'n': o.n = strtoul(optarg, NULL, 10); break;
		case 'c': o.conc = strtoul(optarg, NULL, 10); break;
		case 'b': o.probe = strtoul(optarg, NULL, 10); break;
		case 'T': o.timeout = atof(optarg); break;
		default: return 2;
		}
	}
	if (o.port <= 0 || o.n == 0 || o.conc == 0)
		return 2;
	nconns = o.n;
	conns = calloc(nconns, sizeof(*conns));
	lat = calloc(nconns, sizeof(*lat));
	if (conns == NULL || lat == NULL)
		die("calloc");
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || ep < 0)
		die("signalfd/epoll");
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);

	t0 = now();
	run_until_settled(true, lat, sfd, &stop);
	report("up", t0, lat);
	while (!stop) {
		struct signalfd_siginfo si;
		struct epoll_event evs[MAX_EVENTS];
		int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr != NULL) {
				/* An idle connection was closed or reset by the far end. */
				fail(evs[i].data.ptr);
				continue;
			}
			if (read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo != SIGUSR1) {
				stop = true;
				break;
			}
			t0 = now();
			run_until_settled(false, lat, sfd, &stop);
			report("probed", t0, lat);
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	if (argc >= 2 && strcmp(argv[1], "echo") == 0)
		echo_main();
	if (argc >= 2 && strcmp(argv[1], "open") == 0) {
		int r = open_main(argc, argv);

		if (r == 2)
			fprintf(stderr, "usage: connload echo | connload open -p PORT -n N "
			    "[-c CONCURRENCY] [-b PROBE_BYTES] [-T TIMEOUT_S]\n");
		return r;
	}
	fprintf(stderr, "usage: connload echo | connload open -p PORT -n N [-c CONCURRENCY] "
	    "[-b PROBE_BYTES] [-T TIMEOUT_S]\n");
	return 2;
}
