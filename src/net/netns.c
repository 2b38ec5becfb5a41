/* SPDX-License-Identifier: Apache-2.0 */
/* Namespace socket factory (netns.h): one helper thread, one request at a time. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/inherit.h"
#include "core/log.h"
#include "net/netns.h"

/* From linux/netfilter_ipv4.h and ip6_tables.h, which clash with glibc's netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3)
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int home_ns = -1;
static struct {
	bool pending, done;
	int nsfd, family, type;
	int result;
} req;

static void *
worker(void *arg)
{
	pthread_mutex_lock(&mu);
	for (;;) {
		int fd, e = 0;

		while (!req.pending)
			pthread_cond_wait(&cv, &mu);
		if (setns(req.nsfd, CLONE_NEWNET) != 0) {
			e = errno;
			fd = -1;
		} else {
			fd = socket(req.family, req.type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0)
				e = errno;
			/* Back home: if that fails this thread can never be trusted again. */
			if (setns(home_ns, CLONE_NEWNET) != 0)
				fatal("netns: cannot return to the original network namespace");
		}
		req.result = fd >= 0 ? fd : -e;
		req.pending = false;
		req.done = true;
		pthread_cond_broadcast(&cv);
	}
	return NULL;
}

static void
start(void)
{
	pthread_t t;
	pthread_attr_t a;

	home_ns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home_ns < 0)
		fatal("netns: cannot open our own network namespace");
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, worker, NULL) != 0)
		fatalx("netns: cannot start the helper thread");
	pthread_attr_destroy(&a);
}

int
netns_open(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (!netns_is_netns(fd)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

bool
netns_is_netns(int fd)
{
	return ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET;
}

int
netns_id_of_fd(int fd, struct netns_id *out)
{
	struct stat st;

	out->dev = out->ino = 0;
	if (fstat(fd, &st) != 0)
		return -errno;
	out->dev = (uint64_t)st.st_dev;
	out->ino = (uint64_t)st.st_ino;
	return 0;
}

int
netns_id_of_path(const char *path, struct netns_id *out)
{
	struct stat st;

	out->dev = out->ino = 0;
	if (stat(path, &st) != 0)
		return -errno;
	out->dev = (uint64_t)st.st_dev;
	out->ino = (uint64_t)st.st_ino;
	return 0;
}

bool
netns_id_eq(const struct netns_id *a, const struct netns_id *b)
{
	return a->ino != 0 && a->dev == b->dev && a->ino == b->ino;
}

bool
netns_path_is(const char *path, const struct netns_id *id)
{
	struct netns_id now;

	return netns_id_of_path(path, &now) == 0 && netns_id_eq(&now, id);
}

int
netns_socket(int nsfd, int family, int type)
{
	int r;

	if (nsfd == NETNS_SELF) {
		r = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		return r >= 0 ? r : -errno;
	}
	pthread_once(&once, start);
	pthread_mutex_lock(&mu);
	while (req.pending || req.done)
		pthread_cond_wait(&cv, &mu);
	req.nsfd = nsfd;
	req.family = family;
	req.type = type;
	req.pending = true;
	pthread_cond_broadcast(&cv);
	while (!req.done)
		pthread_cond_wait(&cv, &mu);
	r = req.result;
	req.done = false;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	return r;
}

int
netns_tcp_socket(int nsfd, int family, const struct netns_sock_opts *o)
{
	int fd = netns_socket(nsfd, family, SOCK_STREAM), one = 1, e;

	if (fd < 0)
		return fd;
	if (o->mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &o->mark, sizeof(o->mark)) != 0)
		goto fail;
	if (o->reuseaddr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
		goto fail;
	if (o->v6only && family == AF_INET6 &&
	    setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
		goto fail;
	if (o->transparent &&
	    (family == AF_INET6 ?
	    setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) :
	    setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))) != 0)
		goto fail;
	if (o->bind != NULL && bind(fd, o->bind, family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) != 0)
		goto fail;
	return fd;
fail:
	e = errno;
	close(fd);
	return -e;
}

int
netns_listen(int nsfd, const struct sockaddr *addr, int backlog)
{
	struct netns_sock_opts o = { .reuseaddr = true, .v6only = true, .bind = addr };
	char key[INHERIT_KEY_MAX];
	bool keyed = inherit_key(key, sizeof(key), "tcp", nsfd, addr) != NULL;
	int fd, e;

	/* An upgrade: the previous process's listener, which never stopped accepting. */
	if (keyed && (fd = inherit_take(key)) >= 0) {
		inherit_keep(fd, key);
		return fd;
	}
	if ((fd = netns_tcp_socket(nsfd, addr->sa_family, &o)) < 0)
		return fd;
	if (listen(fd, backlog) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	if (keyed)
		inherit_keep(fd, key);
	return fd;
}

void
sock_rst_on_close(int fd)
{
	struct linger lg = { 1, 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

int
sock_original_dst(int fd, struct sockaddr_storage *out)
{
	socklen_t len = sizeof(*out);
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);

	memset(out, 0, sizeof(*out));
	if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0)
		return -errno;
	if (local.ss_family == AF_INET6) {
		if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &len) != 0)
			return -errno;
	} else if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len) != 0) {
		return -errno;
	}
	return 0;
}
