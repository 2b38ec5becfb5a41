/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Enrollment for amesh ztunnel: the hand-off socket that amesh cni talks to (net/handoff.h), and
 * the record of each enrolled workload in state_dir, so a restarted ztunnel re-opens the same
 * namespaces without the workloads being enrolled again.
 *
 * Bounds: at most ENROLL_MAX_CLIENTS hand-off connections at once (more are closed), one request
 * in flight per connection, messages of at most HANDOFF_MAX bytes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ca/agent.h"
#include "config/registry.h"
#include "core/err.h"
#include "core/inherit.h"
#include "core/log.h"
#include "core/util.h"
#include "net/handoff.h"
#include "net/netns.h"
#include "net/records.h"
#include "proxy/enroll.h"

#define ENROLL_MAX_CLIENTS 64
/* How often recorded workloads that could not be served are tried again (a certificate issued,
 * the registry fixed). */
#define ENROLL_RETRY_MS 2000

struct eclient {
	struct enroll *e;
	int fd;
	uv_poll_t poll;
	struct eclient *next;
	/* An ADD waiting for its workload's identity from the CA (at most one: the client waits
	 * for its answer before it sends again). */
	struct handoff_msg pending;
	bool waiting;
};

struct enroll {
	uv_loop_t *loop;
	struct proxy *px;
	struct idagent *agent; /* identities from the CA service; NULL: from files */
	char *path, *state_dir;
	int fd;
	uv_poll_t poll;
	struct eclient *clients;
	size_t nclients;
	uv_timer_t retry;
	bool closing;
	bool keep_path; /* an upgrade: the next process serves the socket at path */
	int open_handles;
	void (*done)(void *);
	void *done_arg;
};

static void
record_remove(const struct enroll *e, const char *name)
{
	int r = records_remove(e->state_dir, name);

	if (r != 0)
		log_warn("enroll: cannot remove %s/%s: %s", e->state_dir, name, strerror(-r));
}

/* HANDOFF_LIST: one line per served and per failed workload. */
static void
list_served(const struct proxy_workload_view *w, void *arg)
{
	handoff_list_line(arg, w->name, w->netns_path, "serving", "");
}

static void
list_failed(const struct proxy_failed_view *f, void *arg)
{
	handoff_list_line(arg, f->name, f->netns_path, "failed", f->why);
}

/* The ADD once its identity is there (or files are the identities): enroll, record, answer. */
static void
finish_add(struct eclient *c, struct handoff_msg *m)
{
	struct enroll *e = c->e;
	const struct pworkload *before, *now;
	char why[512];
	int r;

	before = proxy_find(e->px, m->workload);
	r = proxy_enroll(e->px, m->workload, m->fd, m->netns, why, sizeof(why));
	if (r != 0) {
		struct proxy_failed_view f;

		/* A failed workload asked again keeps its entry, with the latest reason. */
		if (proxy_find_failed(e->px, m->workload, &f) && r != AMESH_ERR_EXISTS)
			proxy_fail(e->px, m->workload, f.netns_path, NULL, why);
		log_warn("enroll: workload %s: %s", m->workload, why);
		handoff_ack(c->fd, 0, why);
		return;
	}
	now = proxy_find(e->px, m->workload);
	/* The namespace it is served in: a repeated add may name it another way. */
	r = records_write(e->state_dir, m->workload, proxy_workload_netns(now));
	if (r != 0) {
		snprintf(why, sizeof(why), "cannot write %s/%s: %s", e->state_dir,
		    m->workload, strerror(-r));
		/* Without its record a restart would lose the workload: refuse a new
		 * enrollment (one that was served before stays). */
		if (now != before)
			proxy_unenroll(e->px, m->workload);
		handoff_ack(c->fd, 0, why);
		return;
	}
	handoff_ack(c->fd, 1, NULL);
}

/* The identity of the pending ADD arrived, or could not be had. */
static void
identity_ready(void *arg, int status, const char *why)
{
	struct eclient *c = arg;
	char msg[1024];

	c->waiting = false;
	if (status != 0) {
		snprintf(msg, sizeof(msg), "no certificate for workload %s: the CA: %s",
		    c->pending.workload, why != NULL ? why : amesh_strerror(status));
		log_warn("enroll: %s", msg);
		close(c->pending.fd);
		c->pending.fd = -1;
		handoff_ack(c->fd, 0, msg);
		return;
	}
	finish_add(c, &c->pending);
	c->pending.fd = -1;
}

/*
 * With a CA: the workload's identity is obtained before it is enrolled, so its first connection
 * already has it. Returns 1 when the ADD now waits for it (m is kept), 0 to go on, -1 when it
 * was answered (refused).
 */
static int
want_identity(struct eclient *c, struct handoff_msg *m)
{
	struct enroll *e = c->e;
	struct registry *reg;
	const struct reg_workload *wl;
	char ns[256], sa[256], why[512];
	int r;

	if (e->agent == NULL)
		return 0;
	reg = proxy_registry(e->px);
	wl = reg != NULL ? registry_find(reg, REG_WORKLOAD, m->workload) : NULL;
	if (wl == NULL) {
		registry_unref(reg);
		return 0; /* proxy_enroll says what is wrong */
	}
	snprintf(ns, sizeof(ns), "%s", wl->namespace);
	snprintf(sa, sizeof(sa), "%s", wl->service_account);
	registry_unref(reg);
	r = idagent_want(e->agent, ns, sa, identity_ready, c, why, sizeof(why));
	if (r == 0)
		return 0;
	if (r < 0) {
		char msg[1024];

		snprintf(msg, sizeof(msg), "no certificate for workload %.255s: %s", m->workload,
		    why);
		log_warn("enroll: %s", msg);
		close(m->fd);
		handoff_ack(c->fd, 0, msg);
		return -1;
	}
	c->pending = *m;
	c->waiting = true;
	return 1;
}

static void
handle(struct eclient *c, struct handoff_msg *m)
{
	struct enroll *e = c->e;

	switch (m->op) {
	case HANDOFF_ADD:
		if (!records_name_ok(m->workload)) {
			close(m->fd);
			handoff_ack(c->fd, 0, "bad workload name");
			return;
		}
		if (!netns_is_netns(m->fd)) {
			close(m->fd);
			handoff_ack(c->fd, 0, "the descriptor is not a network namespace");
			return;
		}
		if (c->waiting) {
			close(m->fd);
			handoff_ack(c->fd, 0, "one request at a time");
			return;
		}
		if (want_identity(c, m) != 0)
			return;
		finish_add(c, m);
		return;
	case HANDOFF_DEL:
		proxy_unenroll(e->px, m->workload);
		proxy_unfail(e->px, m->workload);
		if (records_name_ok(m->workload))
			record_remove(e, m->workload);
		handoff_ack(c->fd, 1, NULL); /* idempotent: not enrolled is fine */
		return;
	case HANDOFF_LIST: {
		char *list = NULL;
		size_t len = 0;
		FILE *fp = open_memstream(&list, &len);

		if (fp == NULL) {
			handoff_ack(c->fd, 0, "out of memory");
			return;
		}
		proxy_foreach_workload(e->px, list_served, fp);
		proxy_foreach_failed(e->px, list_failed, fp);
		fclose(fp);
		handoff_ack(c->fd, 1, list);
		free(list);
		return;
	}
	}
}

static void client_close(struct eclient *c);

static void
on_client(uv_poll_t *p, int status, int events)
{
	struct eclient *c = p->data;
	struct handoff_msg m;
	char why[256];
	int r;

	if (status < 0) {
		client_close(c);
		return;
	}
	r = handoff_recv(c->fd, &m, why, sizeof(why));
	if (r == 1 || (r < 0 && r != -EINVAL && r != -EAGAIN)) {
		client_close(c);
		return;
	}
	if (r == -EAGAIN)
		return;
	if (r == -EINVAL) {
		log_warn("enroll: bad request: %s", why);
		handoff_ack(c->fd, 0, why);
		return;
	}
	handle(c, &m);
}

static void
client_closed(uv_handle_t *h)
{
	struct eclient *c = h->data;
	struct enroll *e = c->e;

	close(c->fd);
	free(c);
	if (--e->open_handles == 0 && e->done != NULL)
		e->done(e->done_arg);
}

static void
client_close(struct eclient *c)
{
	struct enroll *e = c->e;
	struct eclient **pp;

	for (pp = &e->clients; *pp != NULL; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	e->nclients--;
	if (c->waiting) {
		idagent_cancel(e->agent, c);
		close(c->pending.fd);
		c->waiting = false;
	}
	uv_poll_stop(&c->poll);
	uv_close((uv_handle_t *)&c->poll, client_closed);
}

static void
on_accept(uv_poll_t *p, int status, int events)
{
	struct enroll *e = p->data;
	struct eclient *c;
	int fd;

	if (status < 0)
		return;
	fd = accept4(e->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (e->nclients >= ENROLL_MAX_CLIENTS || e->closing || (c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("enroll: too many hand-off connections; closing one");
		close(fd);
		return;
	}
	c->e = e;
	c->fd = fd;
	c->next = e->clients;
	e->clients = c;
	e->nclients++;
	uv_poll_init(e->loop, &c->poll, fd);
	c->poll.data = c;
	e->open_handles++;
	uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, on_client);
}

int
enroll_start(uv_loop_t *loop, struct proxy *px, struct idagent *agent, const char *socket_path,
    const char *state_dir, struct enroll **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char key[INHERIT_KEY_MAX];
	struct enroll *e;
	int r;

	*out = NULL;
	if (strlen(socket_path) >= sizeof(sa.sun_path)) {
		log_error("enroll: socket path %s is too long", socket_path);
		return -ENAMETOOLONG;
	}
	r = path_mkdir_parents(socket_path, 0755, NULL);
	if (r == 0)
		r = path_mkdir_parents(state_dir, 0755, NULL);
	if (r == 0 && mkdir(state_dir, 0700) != 0 && errno != EEXIST)
		r = -errno;
	if (r != 0) {
		log_error("enroll: cannot create %s: %s", state_dir, strerror(-r));
		return r;
	}
	e = xcalloc(1, sizeof(*e));
	e->loop = loop;
	e->px = px;
	e->agent = agent;
	e->path = xstrdup(socket_path);
	e->state_dir = xstrdup(state_dir);
	snprintf(key, sizeof(key), "unix %s", socket_path);
	/* An upgrade: the previous process's socket, requests queued on it kept. */
	if ((e->fd = inherit_take(key)) >= 0)
		goto listening;
	e->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	/* A socket left by a previous run is stale: nobody else may own this path. */
	unlink(socket_path);
	if (e->fd < 0 || bind(e->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    chmod(socket_path, 0600) != 0 || listen(e->fd, 64) != 0) {
		r = -errno;
		log_error("enroll: cannot listen on %s: %s", socket_path, strerror(errno));
		if (e->fd >= 0)
			close(e->fd);
		free(e->path);
		free(e->state_dir);
		free(e);
		return r;
	}
listening:
	inherit_keep(e->fd, key);
	uv_poll_init(loop, &e->poll, e->fd);
	e->poll.data = e;
	uv_timer_init(loop, &e->retry);
	e->retry.data = e;
	e->open_handles = 2;
	uv_poll_start(&e->poll, UV_READABLE, on_accept);
	*out = e;
	return 0;
}

/*
 * Serves the recorded workload name in netns again. A namespace that is gone (or, with was, is
 * no longer the one it was) takes the workload with it: the record goes. A failure keeps the
 * record and makes a failed entry (proxy_fail): the namespace keeps its rules, so its traffic is
 * refused until a retry works. Returns 0 when served, 1 when forgotten, -1 when failed.
 */
static int
restore_one(struct enroll *e, const char *name, const char *netns, const struct netns_id *was)
{
	struct netns_id nsid = { 0, 0 };
	char why[512];
	int fd = netns[0] ? netns_open(netns) : -ENOENT;

	if (fd >= 0 && (netns_id_of_fd(fd, &nsid) != 0 || (was != NULL && was->ino != 0 &&
	    !netns_id_eq(&nsid, was)))) {
		close(fd);
		fd = -ESTALE;
	}
	if (fd < 0) {
		log_info("enroll: workload %s: namespace %s is gone (%s); forgetting it", name,
		    netns, fd == -ESTALE ? "replaced by another" : strerror(-fd));
		proxy_unfail(e->px, name);
		record_remove(e, name);
		return 1;
	}
	if (proxy_enroll(e->px, name, fd, netns, why, sizeof(why)) != 0) {
		if (proxy_fail(e->px, name, netns, &nsid, why))
			log_warn("enroll: workload %s: not served, its traffic is refused: %s", name,
			    why);
		return -1;
	}
	return 0;
}

/* A copy of the failed entries (at most n): restore_one changes the list. */
struct retry_todo {
	size_t n, k;
	struct {
		char *name, *netns;
		struct netns_id nsid;
	} *v;
};

static void
copy_failed(const struct proxy_failed_view *f, void *arg)
{
	struct retry_todo *t = arg;

	if (t->k >= t->n)
		return;
	t->v[t->k].name = xstrdup(f->name);
	t->v[t->k].netns = xstrdup(f->netns_path);
	t->v[t->k].nsid = f->nsid;
	t->k++;
}

static void on_retry(uv_timer_t *t);

/* The identity a failed workload lacked may be there now: try at once. */
static void
recorded_identity_ready(void *arg, int status, const char *why)
{
	struct enroll *e = arg;

	(void)why;
	if (status == 0 && !e->closing)
		uv_timer_start(&e->retry, on_retry, 0, ENROLL_RETRY_MS);
}

/* With a CA: asks for the identity of a recorded workload (restored or failed). */
static void
want_recorded(struct enroll *e, const char *name)
{
	struct registry *reg;
	const struct reg_workload *wl;
	char why[512];

	if (e->agent == NULL)
		return;
	reg = proxy_registry(e->px);
	wl = reg != NULL ? registry_find(reg, REG_WORKLOAD, name) : NULL;
	if (wl != NULL && idagent_want(e->agent, wl->namespace, wl->service_account,
	    recorded_identity_ready, e, why, sizeof(why)) < 0)
		log_warn("enroll: workload %s: %s", name, why);
	registry_unref(reg);
}

/* Tries the failed workloads again; stops itself once none is left. */
static void
on_retry(uv_timer_t *t)
{
	struct enroll *e = t->data;
	size_t n = proxy_nfailed(e->px), k;
	struct retry_todo todo = { .n = n };

	if (n == 0 || e->closing) {
		uv_timer_stop(t);
		return;
	}
	/* A copy: restore_one changes the list. */
	todo.v = xcalloc(n, sizeof(*todo.v));
	proxy_foreach_failed(e->px, copy_failed, &todo);
	k = todo.k;
	for (size_t i = 0; i < k; i++) {
		want_recorded(e, todo.v[i].name);
		if (restore_one(e, todo.v[i].name, todo.v[i].netns, &todo.v[i].nsid) == 0)
			log_info("enroll: workload %s: served after all", todo.v[i].name);
		free(todo.v[i].name);
		free(todo.v[i].netns);
	}
	free(todo.v);
	if (proxy_nfailed(e->px) == 0)
		uv_timer_stop(t);
}

struct restore_count {
	struct enroll *e;
	size_t n;
};

static void
restore_record(const char *name, const char *netns, void *arg)
{
	struct restore_count *rc = arg;

	want_recorded(rc->e, name);
	if (restore_one(rc->e, name, netns, NULL) == 0)
		rc->n++;
}

size_t
enroll_restore(struct enroll *e)
{
	struct restore_count rc = { e, 0 };

	records_foreach(e->state_dir, restore_record, &rc);
	if (proxy_nfailed(e->px) > 0)
		uv_timer_start(&e->retry, on_retry, ENROLL_RETRY_MS, ENROLL_RETRY_MS);
	return rc.n;
}

static void
listener_closed(uv_handle_t *h)
{
	struct enroll *e = h->data;

	close(e->fd);
	if (!e->keep_path)
		unlink(e->path);
	if (--e->open_handles == 0 && e->done != NULL)
		e->done(e->done_arg);
}

static void
retry_closed(uv_handle_t *h)
{
	struct enroll *e = h->data;

	if (--e->open_handles == 0 && e->done != NULL)
		e->done(e->done_arg);
}

void
enroll_stop(struct enroll *e, void (*done)(void *arg), void *arg)
{
	e->closing = true;
	e->done = done;
	e->done_arg = arg;
	if (e->agent != NULL)
		idagent_cancel(e->agent, e);
	uv_poll_stop(&e->poll);
	uv_close((uv_handle_t *)&e->poll, listener_closed);
	uv_timer_stop(&e->retry);
	uv_close((uv_handle_t *)&e->retry, retry_closed);
	while (e->clients != NULL)
		client_close(e->clients);
}

void
enroll_pause(struct enroll *e, bool pause)
{
	if (e->closing)
		return;
	if (pause)
		uv_poll_stop(&e->poll);
	else
		uv_poll_start(&e->poll, UV_READABLE, on_accept);
}

void
enroll_keep_path(struct enroll *e)
{
	e->keep_path = true;
}

void
enroll_free(struct enroll *e)
{
	if (e == NULL)
		return;
	free(e->path);
	free(e->state_dir);
	free(e);
}
