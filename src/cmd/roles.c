/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Command entries for the roles that this version does not implement yet. Each says so and exits 2;
 * none pretends to run. A role moves to its own file (cmd/ztunnel.c, ...) when it is built.
 */
#include "config.h"

#include <stdio.h>

#include "cmd/cmd.h"

int
cmd_not_built(const char *name)
{
	fprintf(stderr, "amesh %s: not built yet: amesh %s does not implement this command\n",
	    name, PACKAGE_VERSION);
	return EXIT_USAGE;
}

static int
exec_sidecar(const struct cmd_globals *g, int argc, char **argv)
{
	return cmd_not_built("sidecar");
}

const struct cmd_entry cmd_sidecar_entry = {
	"sidecar", "", "run a per-workload proxy inside one network namespace", NULL, exec_sidecar, NULL,
};
