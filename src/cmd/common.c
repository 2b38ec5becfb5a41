/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the commands. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "core/log.h"

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
