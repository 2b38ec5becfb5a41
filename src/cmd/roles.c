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
exec_ztunnel(const struct cmd_globals *g, int argc, char **argv)
{
	return cmd_not_built("ztunnel");
}

static int
exec_waypoint(const struct cmd_globals *g, int argc, char **argv)
{
	return cmd_not_built("waypoint");
}

static int
exec_sidecar(const struct cmd_globals *g, int argc, char **argv)
{
	return cmd_not_built("sidecar");
}

static int
exec_cni(const struct cmd_globals *g, int argc, char **argv)
{
	return cmd_not_built("cni");
}

/* The CNI protocol wants a JSON error on stdout; 100 is the first plugin-specific code. */
int
cmd_cni_plugin(void)
{
	printf("{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"amesh-cni is not built yet\","
	    "\"details\":\"amesh %s does not implement the CNI plugin\"}\n", PACKAGE_VERSION);
	fprintf(stderr, "amesh-cni: not built yet: amesh %s does not implement the CNI plugin\n",
	    PACKAGE_VERSION);
	return EXIT_USAGE;
}

const struct cmd_entry cmd_ztunnel_entry = {
	"ztunnel", "", "run the node L4 proxy (HBONE, mTLS, L4 policy)", NULL, exec_ztunnel, NULL,
};
const struct cmd_entry cmd_waypoint_entry = {
	"waypoint", "", "run the L7 proxy for services that need one", NULL, exec_waypoint, NULL,
};
const struct cmd_entry cmd_sidecar_entry = {
	"sidecar", "", "run a per-workload proxy inside one network namespace", NULL, exec_sidecar, NULL,
};
const struct cmd_entry cmd_cni_entry = {
	"cni", "add|del|list|check [ARGS]", "install interception and enroll workloads", NULL,
	exec_cni, NULL,
};
