/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The upgrade of a running role (SIGUSR2, the units' reload; amesh-ztunnel(8) UPGRADE): this
 * process starts the binary now on disk, with its own arguments and its listeners inherited
 * (core/inherit.h), and waits for the new process to say READY. Then the role stops accepting
 * and drains, and systemd is told the new main PID. A new process that exits or stays silent
 * for UPGRADE_TIMEOUT_MS changes nothing: this one goes on serving.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/inherit.h"
#include "core/log.h"
#include "core/util.h"

#define UPGRADE_TIMEOUT_MS 60000
/* The READY line, and room for nothing else. */
#define UPGRADE_MSG_MAX 64

extern char **environ;

static char exe[4096];
static char **args;

struct upgrade {
	uv_loop_t *loop;
	uv_process_t proc;
	uv_pipe_t ctl;
	uv_timer_t timer;
	uv_write_t wr;
	char *map;
	char in[UPGRADE_MSG_MAX];
	size_t inlen;
	int open_handles;
	bool over, exited;
	void (*done)(void *arg, bool ok, int pid);
	void *arg;
};

static struct upgrade *current;

void
cmd_upgrade_init(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	/* The path as it is now: after a package upgrade, /proc/self/exe names the old, deleted
	 * file, while this path holds the new binary. */
	exe[n > 0 ? n : 0] = '\0';
	args = xcalloc((size_t)argc + 1, sizeof(*args));
	for (int i = 0; i < argc; i++)
		args[i] = xstrdup(argv[i]);
}

static void
up_closed(uv_handle_t *h)
{
	struct upgrade *u = h->data;

	if (--u->open_handles > 0)
		return;
	free(u->map);
	free(u);
}

/* The upgrade is over, one way or the other: says so once, and lets go of what it holds. */
static void
up_finish(struct upgrade *u, bool ok, const char *why)
{
	if (u->over)
		return;
	u->over = true;
	current = NULL;
	if (ok) {
		log_info("upgrade: the new process (pid %d) serves: this one stops accepting and "
		    "drains", u->proc.pid);
#ifdef HAVE_LIBSYSTEMD
		/* Then wait until systemd has read it: if it saw this process exit first (a drain
		 * with nothing left is quick), it would take the service for failed and restart it. */
		if (sd_notifyf(0, "MAINPID=%d", u->proc.pid) > 0 &&
		    sd_notify_barrier(0, 5 * 1000000ULL) < 0)
			log_warn("upgrade: systemd did not confirm the new main PID within 5 s");
#endif
		/* It lives on without us: watching its exit would keep this loop from ending. */
		uv_close((uv_handle_t *)&u->proc, up_closed);
	} else {
		log_error("upgrade: %s; this process goes on serving", why);
		if (!u->exited)
			uv_process_kill(&u->proc, SIGTERM);
	}
	uv_timer_stop(&u->timer);
	uv_close((uv_handle_t *)&u->timer, up_closed);
	uv_close((uv_handle_t *)&u->ctl, up_closed);
	u->done(u->arg, ok, u->proc.pid);
}

static void
up_exited(uv_process_t *p, int64_t status, int sig)
{
	struct upgrade *u = p->data;
	char why[128];

	u->exited = true;
	snprintf(why, sizeof(why), "the new process exited (status %lld, signal %d) before it served",
	    (long long)status, sig);
	up_finish(u, false, why);
	uv_close((uv_handle_t *)p, up_closed);
}

static void
up_timeout(uv_timer_t *t)
{
	struct upgrade *u = t->data;
	char why[128];

	snprintf(why, sizeof(why), "the new process did not say it serves within %d s",
	    UPGRADE_TIMEOUT_MS / 1000);
	up_finish(u, false, why);
}

static void
up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upgrade *u = h->data;

	(void)suggested;
	*buf = uv_buf_init(u->in + u->inlen, (unsigned)(sizeof(u->in) - u->inlen));
}

static void
up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct upgrade *u = s->data;

	(void)buf;
	if (u->over)
		return;
	if (nread < 0) {
		/* It closed the socket without READY: its exit follows, or it is stuck. */
		uv_read_stop(s);
		return;
	}
	u->inlen += (size_t)nread;
	if (memchr(u->in, '\n', u->inlen) != NULL) {
		if (u->inlen == 6 && memcmp(u->in, "READY\n", 6) == 0)
			up_finish(u, true, NULL);
		else
			up_finish(u, false, "the new process sent something else than READY");
	} else if (u->inlen == sizeof(u->in)) {
		up_finish(u, false, "the new process sent something else than READY");
	}
}

static void
up_written(uv_write_t *w, int status)
{
	struct upgrade *u = w->data;

	if (status < 0 && status != UV_ECANCELED && !u->over)
		log_warn("upgrade: handing the listeners over: %s", uv_strerror(status));
}

int
cmd_upgrade_start(uv_loop_t *loop, void (*done)(void *arg, bool ok, int pid), void *arg)
{
	int sv[2] = { -1, -1 }, *fds, maxfd, r;
	const char **keys;
	size_t n, mlen = 0, mcap;
	uv_stdio_container_t *stdio;
	uv_process_options_t po = { 0 };
	char **env, envfd[32];
	size_t nenv = 0;
	struct upgrade *u;

	if (current != NULL)
		return -EBUSY;
	if (exe[0] == '\0' || args == NULL)
		return -ENOENT;
	fds = xcalloc(INHERIT_MAX, sizeof(*fds));
	keys = xcalloc(INHERIT_MAX, sizeof(*keys));
	n = inherit_list(fds, keys, INHERIT_MAX);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		r = -errno;
		free(fds);
		free(keys);
		return r;
	}
	u = xcalloc(1, sizeof(*u));
	u->loop = loop;
	u->done = done;
	u->arg = arg;
	/* The list, "FD N KEY" lines then END, for the new process to read as it starts. */
	mcap = n * (INHERIT_KEY_MAX + 16) + 8;
	u->map = xmalloc(mcap);
	maxfd = sv[1];
	for (size_t i = 0; i < n; i++) {
		mlen += (size_t)snprintf(u->map + mlen, mcap - mlen, "FD %d %s\n", fds[i], keys[i]);
		if (fds[i] > maxfd)
			maxfd = fds[i];
	}
	mlen += (size_t)snprintf(u->map + mlen, mcap - mlen, "END\n");
	/* Descriptors keep their numbers in the new process (libuv clears close-on-exec on each
	 * one it maps to itself); the others close on exec. */
	stdio = xcalloc((size_t)maxfd + 1, sizeof(*stdio));
	for (int i = 0; i <= maxfd; i++)
		stdio[i].flags = UV_IGNORE;
	for (int i = 0; i < 3; i++) {
		stdio[i].flags = UV_INHERIT_FD;
		stdio[i].data.fd = i;
	}
	for (size_t i = 0; i < n; i++) {
		stdio[fds[i]].flags = UV_INHERIT_FD;
		stdio[fds[i]].data.fd = fds[i];
	}
	stdio[sv[1]].flags = UV_INHERIT_FD;
	stdio[sv[1]].data.fd = sv[1];
	for (char **e = environ; *e != NULL; e++)
		nenv++;
	env = xcalloc(nenv + 2, sizeof(*env));
	nenv = 0;
	/* Not WATCHDOG_PID: it names this process, and sd_watchdog_enabled in the new one would
	 * then leave its watchdog off, so systemd would kill it WatchdogSec after the hand-over. */
	for (char **e = environ; *e != NULL; e++)
		if (strncmp(*e, INHERIT_ENV "=", strlen(INHERIT_ENV) + 1) != 0 &&
		    strncmp(*e, "WATCHDOG_PID=", 13) != 0)
			env[nenv++] = *e;
	snprintf(envfd, sizeof(envfd), "%s=%d", INHERIT_ENV, sv[1]);
	env[nenv] = envfd;
	po.file = exe;
	po.args = args;
	po.env = env;
	po.stdio = stdio;
	po.stdio_count = maxfd + 1;
	po.exit_cb = up_exited;
	u->proc.data = u;
	r = uv_spawn(loop, &u->proc, &po);
	close(sv[1]);
	free(stdio);
	free(env);
	free(fds);
	free(keys);
	if (r != 0) {
		close(sv[0]);
		free(u->map);
		free(u);
		return r;
	}
	log_info("upgrade: started %s (pid %d) with %zu listeners handed over", exe, u->proc.pid, n);
	u->open_handles = 3;
	uv_pipe_init(loop, &u->ctl, 0);
	u->ctl.data = u;
	uv_timer_init(loop, &u->timer);
	u->timer.data = u;
	u->wr.data = u;
	current = u;
	if (uv_pipe_open(&u->ctl, sv[0]) != 0) {
		close(sv[0]);
		up_finish(u, false, "cannot talk to the new process");
		return 0;
	}
	uv_timer_start(&u->timer, up_timeout, UPGRADE_TIMEOUT_MS, 0);
	{
		uv_buf_t b = uv_buf_init(u->map, (unsigned)mlen);

		if (uv_write(&u->wr, (uv_stream_t *)&u->ctl, &b, 1, up_written) != 0 ||
		    uv_read_start((uv_stream_t *)&u->ctl, up_alloc, up_read) != 0)
			up_finish(u, false, "cannot hand the listeners over");
	}
	return 0;
}
