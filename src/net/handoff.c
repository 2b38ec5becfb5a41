/* SPDX-License-Identifier: Apache-2.0 */
/* Encoding, fd passing and acks of the cni -> ztunnel hand-off (handoff.h). */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/util.h"
#include "net/handoff.h"

int
handoff_send(int sock, const struct handoff_msg *m)
{
	char buf[HANDOFF_MAX];
	struct msghdr mh = { 0 };
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	int n;

	switch (m->op) {
	case HANDOFF_ADD:
		if (!str_is_word(m->workload) || !str_is_word(m->netns) || m->fd < 0)
			return -EINVAL;
		n = snprintf(buf, sizeof(buf), "ADD %s %s", m->workload, m->netns);
		break;
	case HANDOFF_DEL:
		if (!str_is_word(m->workload))
			return -EINVAL;
		n = snprintf(buf, sizeof(buf), "DEL %s", m->workload);
		break;
	default:
		n = snprintf(buf, sizeof(buf), "LIST");
		break;
	}
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -EMSGSIZE;
	iov.iov_base = buf;
	iov.iov_len = (size_t)n;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (m->op == HANDOFF_ADD) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &m->fd, sizeof(int));
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

int
handoff_recv(int sock, struct handoff_msg *m, char *why, size_t whylen)
{
	char buf[HANDOFF_MAX + 1];
	struct msghdr mh = { 0 };
	struct iovec iov = { buf, HANDOFF_MAX };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} ctl;
	struct cmsghdr *c;
	char op[8], a[sizeof(m->netns)], b[sizeof(m->netns)], extra[2];
	ssize_t n;
	int fields;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	/* Take every passed fd so none leaks, keep the first. */
	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (m->fd < 0)
				m->fd = fd;
			else
				close(fd);
		}
	}
	if (n == 0) {
		/* The peer closed, or sent an empty message (perhaps with descriptors). */
		if (m->fd >= 0)
			close(m->fd);
		m->fd = -1;
		return 1;
	}
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
		snprintf(why, whylen, "message too long");
		goto bad;
	}
	if (memchr(buf, '\0', (size_t)n) != NULL) {
		snprintf(why, whylen, "message contains a NUL byte");
		goto bad;
	}
	fields = sscanf(buf, "%7s %4095s %4095s %1s", op, a, b, extra);
	if (fields >= 1 && strcmp(op, "ADD") == 0 && fields == 3) {
		if (m->fd < 0) {
			snprintf(why, whylen, "ADD without a namespace descriptor");
			goto bad;
		}
		m->op = HANDOFF_ADD;
	} else if (fields >= 1 && strcmp(op, "DEL") == 0 && fields == 2) {
		m->op = HANDOFF_DEL;
	} else if (fields == 1 && strcmp(op, "LIST") == 0) {
		m->op = HANDOFF_LIST;
	} else {
		snprintf(why, whylen, "malformed request '%.60s'", buf);
		goto bad;
	}
	if (fields >= 2) {
		if (strlen(a) >= sizeof(m->workload)) {
			snprintf(why, whylen, "workload name too long");
			goto bad;
		}
		memcpy(m->workload, a, strlen(a) + 1);
	}
	if (fields >= 3)
		memcpy(m->netns, b, strlen(b) + 1);
	if (m->op != HANDOFF_ADD && m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	return 0;
bad:
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	return -EINVAL;
}

int
handoff_ack(int sock, int ok, const char *text)
{
	char buf[HANDOFF_MAX];
	int n = snprintf(buf, sizeof(buf), "%s%s%s", ok ? "OK" : "ERR",
	    text && *text ? " " : "", text ? text : "");

	if (n < 0)
		return -EINVAL;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (send(sock, buf, (size_t)n, MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

int
handoff_wait_ack(int sock, int timeout_ms, char *buf, size_t len)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	char tmp[HANDOFF_MAX + 1];
	ssize_t n;
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	n = recv(sock, tmp, HANDOFF_MAX, 0);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	tmp[n] = '\0';
	if (strncmp(tmp, "OK", 2) == 0 && (tmp[2] == '\0' || tmp[2] == ' ')) {
		snprintf(buf, len, "%s", tmp[2] ? tmp + 3 : "");
		return 1;
	}
	snprintf(buf, len, "%s", strncmp(tmp, "ERR ", 4) == 0 ? tmp + 4 : tmp);
	return 0;
}

int
handoff_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int
handoff_request(const char *path, const struct handoff_msg *m, int timeout_ms, char *buf,
    size_t len, bool *reached)
{
	int s = handoff_connect(path), r;

	*reached = s >= 0;
	buf[0] = '\0';
	if (s < 0)
		return s;
	r = handoff_send(s, m);
	if (r == 0)
		r = handoff_wait_ack(s, timeout_ms, buf, len);
	close(s);
	return r;
}

void
handoff_list_line(FILE *fp, const char *workload, const char *netns, const char *state,
    const char *why)
{
	fprintf(fp, "%s %s %s%s%s\n", workload, netns, state, why[0] ? " " : "", why);
}

size_t
handoff_list_parse(char *text, struct handoff_list *out)
{
	char *save = NULL, *line;
	size_t bad = 0;

	handoff_list_free(out);
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char w[256], ns[4096], st[32] = "serving";
		int at = 0, n = sscanf(line, "%255s %4095s %31s %n", w, ns, st, &at);

		if (n >= 2)
			handoff_list_add(out, w, ns, st, n == 3 && at > 0 ? line + at : "");
		else
			bad++;
	}
	return bad;
}

void
handoff_list_add(struct handoff_list *l, const char *workload, const char *netns,
    const char *state, const char *why)
{
	l->v = xrealloc(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n].workload = xstrdup(workload);
	l->v[l->n].netns = xstrdup(netns);
	l->v[l->n].state = xstrdup(state);
	l->v[l->n].why = xstrdup(why);
	l->n++;
}

const struct handoff_entry *
handoff_list_find(const struct handoff_list *l, const char *workload)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].workload, workload) == 0)
			return &l->v[i];
	return NULL;
}

void
handoff_list_free(struct handoff_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].workload);
		free(l->v[i].netns);
		free(l->v[i].state);
		free(l->v[i].why);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
