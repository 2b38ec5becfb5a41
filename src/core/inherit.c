/* SPDX-License-Identifier: Apache-2.0 */
/* Listening sockets handed from one process of a role to the next (inherit.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <dirent.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/inherit.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"

/* How long a new process waits for the old one's list: it is written before the exec. */
#define INHERIT_READ_MS 10000

struct entry {
	int fd;
	dev_t dev;
	ino_t ino;
	char key[INHERIT_KEY_MAX];
};

static struct entry *given; /* handed to this process, not yet taken */
static size_t ngiven;
static int ctl = -1;        /* the control socket to the old process, until READY */
static struct entry *kept;  /* this process's listeners, to hand on */
static size_t nkept, capkept;

/* A socket of this process: its inode and one descriptor that holds it. */
struct held {
	dev_t dev;
	ino_t ino;
	int fd;
};

static int
held_cmp(const void *a, const void *b)
{
	const struct held *x = a, *y = b;

	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->dev < y->dev ? -1 : x->dev > y->dev;
}

/*
 * The sockets this process holds, sorted by inode, from /proc/self/fd: a kept listener is
 * found by its inode, whichever descriptor holds it now (a listener is often dup'ed into the
 * handle that serves it and the first descriptor closed). *n set; NULL when unreadable.
 */
static struct held *
scan(size_t *n)
{
	DIR *d = opendir("/proc/self/fd");
	struct held *h = NULL;
	size_t cap = 0;
	struct dirent *de;

	*n = 0;
	if (d == NULL)
		return NULL;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		int fd = atoi(de->d_name);

		if (de->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) != 0 ||
		    !S_ISSOCK(st.st_mode))
			continue;
		if (*n == cap) {
			cap = cap == 0 ? 256 : cap * 2;
			h = xrealloc(h, cap, sizeof(*h));
		}
		h[*n].dev = st.st_dev;
		h[*n].ino = st.st_ino;
		h[(*n)++].fd = fd;
	}
	closedir(d);
	if (*n > 0)
		qsort(h, *n, sizeof(*h), held_cmp);
	return h;
}

/* Drops the kept listeners this process no longer holds and sets each one's current fd. */
static void
prune(void)
{
	size_t nh, j = 0;
	struct held *h = scan(&nh);

	for (size_t i = 0; h != NULL && i < nkept; i++) {
		struct held k = { .dev = kept[i].dev, .ino = kept[i].ino }, *f;

		f = bsearch(&k, h, nh, sizeof(*h), held_cmp);
		if (f == NULL)
			continue;
		kept[i].fd = f->fd;
		kept[j++] = kept[i];
	}
	if (h != NULL)
		nkept = j;
	free(h);
}

void
inherit_keep(int fd, const char *key)
{
	struct stat st;

	if (fd < 0 || fstat(fd, &st) != 0)
		return;
	if (nkept == capkept)
		prune();
	if (nkept == capkept) {
		if (capkept == INHERIT_MAX) {
			log_warn("inherit: more than %d listeners: %s will not be handed on", INHERIT_MAX,
			    key);
			return;
		}
		capkept = capkept == 0 ? 64 : capkept * 2;
		kept = xrealloc(kept, capkept, sizeof(*kept));
	}
	kept[nkept].fd = fd;
	kept[nkept].dev = st.st_dev;
	kept[nkept].ino = st.st_ino;
	snprintf(kept[nkept].key, sizeof(kept[nkept].key), "%s", key);
	nkept++;
}

size_t
inherit_list(int *fds, const char **keys, size_t max)
{
	size_t n = 0;

	prune();
	for (size_t i = 0; i < nkept && n < max; i++, n++) {
		fds[n] = kept[i].fd;
		keys[n] = kept[i].key;
	}
	return n;
}

char *
inherit_key(char *key, size_t len, const char *proto, int nsfd, const struct sockaddr *addr)
{
	struct sockaddr_storage ss;
	struct stat st;
	char a[128];

	if ((nsfd >= 0 ? fstat(nsfd, &st) : stat("/proc/self/ns/net", &st)) != 0)
		return NULL;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr));
	snprintf(key, len, "%s %llu %s", proto, (unsigned long long)st.st_ino,
	    sockaddr_str(&ss, a, sizeof(a)));
	return key;
}

/* Reads one line (up to '\n', not kept) from fd within the deadline. */
static int
read_line(int fd, char *buf, size_t len, int ms)
{
	size_t n = 0;

	while (n + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;
		int pr = poll(&p, 1, ms);

		if (pr == 0)
			return -ETIMEDOUT;
		if (pr < 0 && errno != EINTR)
			return -errno;
		if (pr < 0)
			continue;
		r = read(fd, buf + n, 1);
		if (r == 0)
			return -EPIPE;
		if (r < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (r < 0)
			continue;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return 0;
		}
		n++;
	}
	return -EMSGSIZE;
}

int
inherit_init(char *why, size_t whylen)
{
	const char *env = getenv(INHERIT_ENV);
	char line[INHERIT_KEY_MAX + 32], *end;
	long v;
	int r;

	why[0] = '\0';
	if (env == NULL)
		return 0;
	v = strtol(env, &end, 10);
	unsetenv(INHERIT_ENV); /* not for processes this one starts */
	if (*end != '\0' || v < 3 || v > 1 << 24 || fcntl((int)v, F_GETFD) < 0) {
		snprintf(why, whylen, "%s=%s is not an open descriptor", INHERIT_ENV, env);
		return -EINVAL;
	}
	ctl = (int)v;
	fcntl(ctl, F_SETFD, FD_CLOEXEC);
	for (;;) {
		unsigned long fd;
		int off = 0;

		if ((r = read_line(ctl, line, sizeof(line), INHERIT_READ_MS)) != 0) {
			snprintf(why, whylen, "reading the listeners handed over: %s", strerror(-r));
			return r;
		}
		if (strcmp(line, "END") == 0)
			break;
		if (sscanf(line, "FD %lu %n", &fd, &off) != 1 || off == 0 || fd > 1 << 24 ||
		    fcntl((int)fd, F_GETFD) < 0 || ngiven == INHERIT_MAX) {
			snprintf(why, whylen, "bad hand-over line \"%.*s\"", 80, line);
			return -EINVAL;
		}
		fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		if (ngiven % 64 == 0)
			given = xrealloc(given, ngiven + 64, sizeof(*given));
		given[ngiven].fd = (int)fd;
		snprintf(given[ngiven].key, sizeof(given[ngiven].key), "%s", line + off);
		ngiven++;
	}
	log_info("inherit: %zu listeners handed over by the previous process", ngiven);
	return (int)ngiven;
}

bool
inherit_pending(void)
{
	return ctl >= 0;
}

int
inherit_take(const char *key)
{
	for (size_t i = 0; i < ngiven; i++)
		if (strcmp(given[i].key, key) == 0) {
			int fd = given[i].fd;

			given[i] = given[--ngiven];
			return fd;
		}
	return -1;
}

void
inherit_close_unused(void)
{
	for (size_t i = 0; i < ngiven; i++) {
		log_debug("inherit: %s is no longer wanted: closed", given[i].key);
		close(given[i].fd);
	}
	ngiven = 0;
	free(given);
	given = NULL;
}

void
inherit_ready(void)
{
	static const char msg[] = "READY\n";

	if (ctl < 0)
		return;
	if (write(ctl, msg, sizeof(msg) - 1) != (ssize_t)(sizeof(msg) - 1))
		log_warn("inherit: cannot tell the previous process that this one serves: %s",
		    strerror(errno));
	close(ctl);
	ctl = -1;
}

int
inherit_tcp_listen(const struct sockaddr *addr, int backlog)
{
	char key[INHERIT_KEY_MAX] = "";
	int fd = -1, one = 1, e;

	if (inherit_key(key, sizeof(key), "tcp", -1, addr) != NULL && (fd = inherit_take(key)) >= 0) {
		inherit_keep(fd, key);
		return fd;
	}
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (addr->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in)) != 0 || listen(fd, backlog) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	if (key[0] != '\0')
		inherit_keep(fd, key);
	return fd;
}
