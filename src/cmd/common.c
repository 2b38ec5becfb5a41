/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the commands. */
#include "config.h"

#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cmd/cmd.h"
#include "config/conf.h"
#include "core/inherit.h"
#include "core/log.h"
#include "tls/tls.h"

void
cmd_handle_closed(uv_handle_t *h)
{
}

static void
on_watchdog(uv_timer_t *t)
{
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, "WATCHDOG=1");
#endif
}

void
cmd_notify_ready(uv_timer_t *watchdog)
{
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec = 0;

	sd_notify(0, "READY=1");
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
		uv_timer_start(watchdog, on_watchdog, usec / 2000, usec / 2000);
#else
	(void)watchdog;
#endif
}

void
cmd_log_setup(const struct cmd_globals *g, const struct amesh_conf *c)
{
	int level = c->log.level + g->verbosity;

	if (level < LOG_LVL_ERROR)
		level = LOG_LVL_ERROR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	log_set_level((enum log_level)level);
	log_set_format(g->log_format >= 0 ? (enum log_format)g->log_format :
	    (enum log_format)c->log.format);
	/* Here because every role calls this before it loads identities (their suite order). */
	tls_set_record_offload(c->tls.record_offload);
}

int
cmd_usage_error(const char *cmd, const char *sub, const char *usage, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "amesh %s%s%s: ", cmd, sub ? " " : "", sub ? sub : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: %s\nTry 'amesh %s --help'.\n", usage, cmd);
	return EXIT_USAGE;
}

static void
on_role_signal(uv_signal_t *s, int signum)
{
	struct cmd_role *r = s->data;

	if (signum == SIGHUP)
		r->reload(r->arg);
	else if (signum == SIGUSR2 && r->upgrade != NULL)
		r->upgrade(r->arg);
	else if (signum == SIGUSR2)
		log_warn("SIGUSR2: this role has no upgrade in place; restart it instead");
	else
		r->stop(r->arg);
}

void
cmd_role_start(uv_loop_t *loop, struct cmd_role *r)
{
	uv_signal_init(loop, &r->sig_hup);
	uv_signal_init(loop, &r->sig_term);
	uv_signal_init(loop, &r->sig_int);
	uv_signal_init(loop, &r->sig_usr2);
	r->sig_hup.data = r->sig_term.data = r->sig_int.data = r->sig_usr2.data = r;
	uv_signal_start(&r->sig_hup, on_role_signal, SIGHUP);
	uv_signal_start(&r->sig_term, on_role_signal, SIGTERM);
	uv_signal_start(&r->sig_int, on_role_signal, SIGINT);
	uv_signal_start(&r->sig_usr2, on_role_signal, SIGUSR2);
	uv_timer_init(loop, &r->watchdog);
	/* Listeners handed over and not taken are no longer wanted; then the old process may
	 * stop accepting. */
	inherit_close_unused();
	cmd_notify_ready(&r->watchdog);
	inherit_ready();
}

void
cmd_role_stopping(void)
{
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, "STOPPING=1");
#endif
}

void
cmd_role_close(struct cmd_role *r)
{
	uv_close((uv_handle_t *)&r->sig_hup, cmd_handle_closed);
	uv_close((uv_handle_t *)&r->sig_term, cmd_handle_closed);
	uv_close((uv_handle_t *)&r->sig_int, cmd_handle_closed);
	uv_close((uv_handle_t *)&r->sig_usr2, cmd_handle_closed);
	uv_close((uv_handle_t *)&r->watchdog, cmd_handle_closed);
}

int
cmd_role_inherit(const char *role)
{
	char why[256];

	if (inherit_init(why, sizeof(why)) < 0) {
		log_error("%s: upgrade: %s", role, why);
		return EXIT_FAIL;
	}
	return 0;
}

struct call_soon {
	uv_timer_t t;
	void (*fn)(void *);
	void *arg;
};

static void
call_soon_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
call_soon_fire(uv_timer_t *t)
{
	struct call_soon *c = t->data;

	c->fn(c->arg);
	uv_close((uv_handle_t *)&c->t, call_soon_closed);
}

void
cmd_call_soon(uv_loop_t *loop, void (*fn)(void *arg), void *arg)
{
	struct call_soon *c = malloc(sizeof(*c));

	if (c == NULL) {
		fn(arg); /* no memory for a timer: now rather than never */
		return;
	}
	c->fn = fn;
	c->arg = arg;
	uv_timer_init(loop, &c->t);
	c->t.data = c;
	uv_timer_start(&c->t, call_soon_fire, 0, 0);
}

/* workers = 0 (the default): one per CPU this process may run on, less one left to the host's
 * workloads and the kernel's network processing (on a 2-CPU host 2 workers moved 0.73-0.80x of
 * what 1 did: bench/l4 RESULTS.md), at least 1 and at most 8 (past that, more loops only add
 * cross-thread hand-offs for a proxy that accepts on one). */
#define AUTO_WORKERS_MAX 8

unsigned
cmd_auto_workers(uint64_t configured)
{
	cpu_set_t set;
	int n;

	if (configured > 0)
		return (unsigned)configured;
	n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) - 1 : 1;
	return n < 1 ? 1 : n > AUTO_WORKERS_MAX ? AUTO_WORKERS_MAX : (unsigned)n;
}
