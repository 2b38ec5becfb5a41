/* SPDX-License-Identifier: Apache-2.0 */
/* An enrolled workload's lifetime and the sockets it opens in its namespace (workload.h). */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
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
