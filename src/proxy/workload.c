/* SPDX-License-Identifier: Apache-2.0 */
/* An enrolled workload's lifetime and the sockets it opens in its namespace (workload.h). */
#include "config.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/inherit.h"
#include "core/log.h"
#include "core/parse.h"
#include "dns/server.h"
#include "l7/waypoint.h"
#include "proxy/workload.h"
#include "tls/identity.h"

struct pworkload *
pw_new(const char *name, const char *path, const char *ns, const char *sa)
{
	struct pworkload *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->nsfd = -1;
	if ((w->name = strdup(name)) == NULL || (w->netns_path = strdup(path)) == NULL ||
	    (w->ns = strdup(ns)) == NULL || (w->sa = strdup(sa)) == NULL) {
		pw_free(w);
		return NULL;
	}
	w->open_handles = 1;
	return w;
}

void
pw_free(struct pworkload *w)
{
	if (w->on_free != NULL)
		w->on_free(w, w->on_free_arg);
	if (w->l7 != NULL)
		waypoint_free(w->l7);
	identity_unref(w->id);
	if (w->nsfd >= 0)
		close(w->nsfd);
	free(w->name);
	free(w->netns_path);
	free(w->ns);
	free(w->sa);
	free(w);
}

void
pw_release(struct pworkload *w)
{
	if (--w->open_handles > 0)
		return;
	log_debug("workload %s: released", w->name);
	pw_free(w);
}

void
pw_hold(struct pworkload *w)
{
	w->open_handles++;
}

void
pw_release_cb(void *arg)
{
	pw_release(arg);
}

void
pw_handle_closed(uv_handle_t *h)
{
	pw_release(h->data);
}

int
pw_socket(void *arg, int family)
{
	struct pworkload *w = arg;
	struct netns_sock_opts o = { .mark = AMESH_MARK };

	return netns_tcp_socket(w->nsfd, family, &o);
}

int
pw_app_socket(struct pworkload *w, const struct sockaddr_storage *client, int family)
{
	struct sockaddr_storage bind_to;
	struct netns_sock_opts o = { .mark = AMESH_MARK, .transparent = true };
	struct ip_addr cip;
	uint16_t p;
	int fd;

	if (client != NULL && client->ss_family == family) {
		ip_from_sockaddr(client, &cip, &p);
		sockaddr_from_ip(&bind_to, &cip, 0);
		o.bind = (struct sockaddr *)&bind_to;
	}
	fd = netns_tcp_socket(w->nsfd, family, &o);
	if (fd < 0 && o.bind != NULL) {
		/* Could not take the client's address: still deliver, from our own. */
		log_debug("workload %s: cannot bind the client address: %s", w->name,
		    amesh_strerror(fd));
		o.bind = NULL;
		fd = netns_tcp_socket(w->nsfd, family, &o);
	}
	return fd;
}

int
pw_dns_socket(void *arg, int family, int type)
{
	struct pworkload *w = arg;
	uint32_t mark = AMESH_MARK;
	int fd = netns_socket(w->nsfd, family, type), e;

	if (fd < 0)
		return fd;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* A UDP socket in w's namespace bound to addr. Returns it or -errno. */
static int
udp_bound(struct pworkload *w, const struct sockaddr_storage *addr)
{
	char key[INHERIT_KEY_MAX];
	bool keyed = inherit_key(key, sizeof(key), "udp", w->nsfd,
	    (const struct sockaddr *)addr) != NULL;
	int fd, one = 1, e;

	if (keyed && (fd = inherit_take(key)) >= 0) {
		inherit_keep(fd, key); /* an upgrade: the previous process's socket */
		return fd;
	}
	if ((fd = netns_socket(w->nsfd, addr->ss_family, SOCK_DGRAM)) < 0)
		return fd;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (addr->ss_family == AF_INET6 &&
	    setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
	    bind(fd, (const struct sockaddr *)addr, addr->ss_family == AF_INET6 ?
	    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) != 0) {
		e = errno;
		close(fd);
		return -e;
	}
	if (keyed)
		inherit_keep(fd, key);
	return fd;
}

int
pw_dns_listen(struct pworkload *w, struct dns_server *s, uint16_t port, const bool fam[2])
{
	struct dns_listener_cfg c = {
		.name = w->name,
		.ns = w->ns,
		.udp_fd = { -1, -1 },
		.tcp_fd = { -1, -1 },
		.socket_fn = pw_dns_socket,
		.arg = w,
		.on_closed = pw_release_cb,
	};
	int r = 0;

	for (int f = 0; f < 2 && r == 0; f++) {
		struct sockaddr_storage ss;
		struct ip_addr lo = { .family = f ? AF_INET6 : AF_INET };

		if (!fam[f])
			continue;
		if (f)
			lo.a[15] = 1;
		else {
			lo.a[0] = 127;
			lo.a[3] = 1;
		}
		sockaddr_from_ip(&ss, &lo, port);
		if ((r = udp_bound(w, &ss)) >= 0) {
			c.udp_fd[f] = r;
			r = netns_listen(w->nsfd, (struct sockaddr *)&ss, 128);
			if (r >= 0) {
				c.tcp_fd[f] = r;
				r = 0;
			}
		}
	}
	if (r != 0) {
		for (int f = 0; f < 2; f++) {
			if (c.udp_fd[f] >= 0)
				close(c.udp_fd[f]);
			if (c.tcp_fd[f] >= 0)
				close(c.tcp_fd[f]);
		}
		return r;
	}
	r = dns_listen(s, &c, &w->dns);
	if (r == 0)
		pw_hold(w);
	return r;
}
