/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the commands. */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cmd/cmd.h"
#include "config/conf.h"
#include "core/log.h"

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
