/* SPDX-License-Identifier: Apache-2.0 */
/* amesh entry point: the command table, global options, and dispatch. */
#include "config.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "core/log.h"
#include "core/util.h"

static const struct cmd_entry *const commands[] = {
	&cmd_ztunnel_entry, &cmd_waypoint_entry, &cmd_sidecar_entry,
	&cmd_cni_entry, &cmd_ca_entry, &cmd_check_entry, &cmd_registry_entry, NULL,
};

static const char global_help[] =
    "  -c, --config FILE     configuration file (default " AMESH_DEFAULT_CONF ")\n"
    "  -v, --verbose         one log level more than [log] level (repeat for more)\n"
    "  -q, --quiet           one log level less than [log] level (repeat for less)\n"
    "      --log-format FMT  text or json (overrides [log] format)\n"
    "  -h, --help            show help and exit\n"
    "      --version         show the version and exit\n";

static void
usage(FILE *fp)
{
	fprintf(fp, "usage: amesh [OPTIONS] COMMAND [ARGS]\n\n"
	    "An ambient-style service-mesh data plane for bare-metal and VM hosts.\n\n"
	    "Commands:\n");
	for (size_t i = 0; commands[i] != NULL; i++)
		fprintf(fp, "  %-10s %s\n", commands[i]->name, commands[i]->desc);
	fprintf(fp, "\nOptions (before or after the command):\n%s\n"
	    "Run 'amesh COMMAND --help' for a command's options; see amesh(8).\n", global_help);
}

static void
command_usage(const struct cmd_entry *c, FILE *fp)
{
	fprintf(fp, "usage: amesh %s %s\n\n%s\n", c->name, c->usage, c->desc);
	if (c->help != NULL)
		fprintf(fp, "\nOptions:\n%s", c->help);
	fprintf(fp, "\nGlobal options:\n%s\nSee %s.\n", global_help, c->man ? c->man : "amesh(8)");
}

static const struct cmd_entry *
find_command(const char *name)
{
	for (size_t i = 0; commands[i] != NULL; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

enum opt_result { OPT_NONE, OPT_TAKEN, OPT_HELP, OPT_VERSION, OPT_ERROR };

/*
 * Recognises one global option at argv[*i] (consuming its value if any).
 * -v and -q may be bundled ("-vv"); -c takes "-c F", "-cF", "--config F" or "--config=F".
 */
static enum opt_result
global_option(int argc, char **argv, int *i, struct cmd_globals *g)
{
	const char *a = argv[*i];
	const char *val = NULL;

	if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
		return OPT_HELP;
	if (strcmp(a, "--version") == 0)
		return OPT_VERSION;
	if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
	    strcmp(a, "--log-format") == 0) {
		if (*i + 1 >= argc) {
			fprintf(stderr, "amesh: option '%s' needs a value\n", a);
			return OPT_ERROR;
		}
		val = argv[++*i];
	} else if (strncmp(a, "--config=", 9) == 0) {
		val = a + 9;
	} else if (strncmp(a, "--log-format=", 13) == 0) {
		val = a + 13;
	} else if (strncmp(a, "-c", 2) == 0 && a[2] != '\0') {
		val = a + 2;
	}
	if (val != NULL) {
		if (strncmp(a, "--log-format", 12) == 0) {
			g->log_format = log_format_parse(val);
			if (g->log_format < 0) {
				fprintf(stderr, "amesh: --log-format: '%s': expected text or json\n", val);
				return OPT_ERROR;
			}
		} else {
			if (*val == '\0') {
				fprintf(stderr, "amesh: -c: empty file name\n");
				return OPT_ERROR;
			}
			g->conf_path = val;
		}
		return OPT_TAKEN;
	}
	if (strcmp(a, "--verbose") == 0) {
		g->verbosity++;
		return OPT_TAKEN;
	}
	if (strcmp(a, "--quiet") == 0) {
		g->verbosity--;
		return OPT_TAKEN;
	}
	if (a[0] == '-' && (a[1] == 'v' || a[1] == 'q')) {
		for (const char *p = a + 1; *p != '\0'; p++)
			if (*p != 'v' && *p != 'q')
				return OPT_NONE;
		for (const char *p = a + 1; *p != '\0'; p++)
			g->verbosity += *p == 'v' ? 1 : -1;
		return OPT_TAKEN;
	}
	return OPT_NONE;
}

static int
apply_log_options(const struct cmd_globals *g)
{
	int level = LOG_LVL_INFO + g->verbosity;

	if (level < LOG_LVL_ERROR)
		level = LOG_LVL_ERROR;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	log_init((enum log_level)level, g->log_format >= 0 ? (enum log_format)g->log_format :
	    LOG_FMT_TEXT);
	return level;
}

int
main(int argc, char **argv)
{
	struct cmd_globals g = { .conf_path = AMESH_DEFAULT_CONF, .log_format = -1 };
	const struct cmd_entry *cmd = NULL;
	char **rest;
	int nrest = 0, i;
	bool dashdash = false;
	char *prog = xstrdup(argv[0]);

	/* A container runtime runs us as /usr/lib/cni/amesh-cni, or with CNI_COMMAND set. */
	if (strcmp(basename(prog), "amesh-cni") == 0 || getenv("CNI_COMMAND") != NULL) {
		free(prog);
		return cmd_cni_plugin();
	}
	cmd_upgrade_init(argc, argv); /* what a role's upgrade starts again */
	free(prog);
	log_init(LOG_LVL_INFO, LOG_FMT_TEXT);

	rest = xcalloc((size_t)argc + 1, sizeof(char *));
	for (i = 1; i < argc; i++) {
		enum opt_result o;

		if (dashdash) {
			rest[nrest++] = argv[i];
			continue;
		}
		if (cmd != NULL && strcmp(argv[i], "--") == 0) {
			dashdash = true;
			rest[nrest++] = argv[i];
			continue;
		}
		o = global_option(argc, argv, &i, &g);
		switch (o) {
		case OPT_TAKEN:
			continue;
		case OPT_ERROR:
			free(rest);
			return EXIT_USAGE;
		case OPT_VERSION:
			printf("amesh %s\n", PACKAGE_VERSION);
			free(rest);
			return EXIT_OK;
		case OPT_HELP:
			if (cmd != NULL)
				command_usage(cmd, stdout);
			else
				usage(stdout);
			free(rest);
			return EXIT_OK;
		case OPT_NONE:
			break;
		}
		if (cmd != NULL) {
			rest[nrest++] = argv[i];
			continue;
		}
		if (argv[i][0] == '-') {
			fprintf(stderr, "amesh: unknown option '%s'\nTry 'amesh --help'.\n", argv[i]);
			free(rest);
			return EXIT_USAGE;
		}
		cmd = find_command(argv[i]);
		if (cmd == NULL) {
			fprintf(stderr, "amesh: unknown command '%s'\nTry 'amesh --help'.\n", argv[i]);
			free(rest);
			return EXIT_USAGE;
		}
		rest[nrest++] = argv[i];
	}
	if (cmd == NULL) {
		usage(stderr);
		free(rest);
		return EXIT_USAGE;
	}
	apply_log_options(&g);
	i = cmd->exec(&g, nrest, rest);
	free(rest);
	return i;
}
