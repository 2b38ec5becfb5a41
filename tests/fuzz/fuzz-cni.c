/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the CNI plugin (src/cni/plugin.c) as a container runtime runs it, through
 * its entry point cni_plugin_main: the input's first lines up to an empty one are CNI_*
 * variables (NAME=VALUE; other names are ignored), the rest is the network configuration on
 * stdin. It runs against an amesh.conf and registry this target writes once (the "conf" key of
 * a configuration that parses is set to it, so no real one is ever read); the ztunnel's socket does not exist (so a hand-off fails
 * as "ztunnel not running"), and the rules layer is stubbed at the netlink boundary: nl_open
 * (linked with -Wl,--wrap) refuses, so no namespace is ever touched. What it prints on stdout must
 * be one JSON object: the spec's error object (cniVersion, code, msg) when it exits 1, the
 * result or nothing when it exits 0.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cni/plugin.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct nl;
int __wrap_nl_open(struct nl *nl, int netns_fd);
void nl_set_err(struct nl *nl, const char *fmt, ...);

/* The netlink boundary: no socket into any namespace, ever. */
int
__wrap_nl_open(struct nl *nl, int netns_fd)
{
	nl_set_err(nl, "netlink stubbed out (fuzzing)");
	return -EPERM;
}

static const char *const vars[] = {
	"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH",
};

static char dir[64];

static void
no_log_setup(const char *conf_path, const struct amesh_conf *conf)
{
	log_set_level(LOG_LVL_ERROR);
}

static void
write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL || fputs(text, fp) < 0 || fclose(fp) != 0)
		abort();
}

static void
cleanup(void)
{
	static const char *const files[] = { "registry.d/reg.conf", "registry.d", "amesh.conf", "state", "" };
	char path[128];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (unlink(path) != 0)
			(void)rmdir(path);
	}
}

static void
setup(void)
{
	char path[128], text[1024];

	snprintf(dir, sizeof(dir), "/tmp/amesh-fuzz-cni.%ld", (long)getpid());
	snprintf(path, sizeof(path), "%s/registry.d", dir);
	if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || (mkdir(path, 0700) != 0 && errno != EEXIST))
		abort();
	snprintf(path, sizeof(path), "%s/amesh.conf", dir);
	snprintf(text, sizeof(text),
	    "[mesh]\nnode = node-a\nregistry = %s/registry.d\n"
	    "[ztunnel]\nsocket = %s/no-ztunnel.sock\nstate_dir = %s/state\n", dir, dir, dir);
	write_file(path, text);
	snprintf(path, sizeof(path), "%s/registry.d/reg.conf", dir);
	atexit(cleanup);
	write_file(path,
	    "[node \"node-a\"]\naddress = 192.168.10.1\n"
	    "[workload \"web\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2, fd00::2\n"
	    "labels = app=web\n"
	    "[workload \"db\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n"
	    "[workload \"plain\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.4\n"
	    "protocol = tcp\n");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	FILE *in, *out, *save_in = stdin, *save_out = stdout;
	char *text, *body, *line, *printed = NULL, conf_default[160];
	size_t plen = 0;
	json_t *o;
	int rc;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size > 65536)
		return 0;
	text = malloc(size + 1);
	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	/* NAME=VALUE lines up to the first empty line. */
	body = text;
	while ((line = body) != NULL && *line != '\0') {
		char *nl = strchr(line, '\n'), *eq;

		if (nl == NULL)
			break;
		*nl = '\0';
		body = nl + 1;
		if (*line == '\0')
			break;
		if ((eq = strchr(line, '=')) == NULL)
			continue;
		*eq = '\0';
		for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
			if (strcmp(line, vars[i]) == 0)
				setenv(vars[i], eq + 1, 1);
	}
	/* A configuration that parses gets "conf" set to this target's amesh.conf, whatever it
	 * said: the default path, or any other, may be a real one with a running ztunnel. */
	snprintf(conf_default, sizeof(conf_default), "%s/amesh.conf", dir);
	{
		json_t *cfg = json_loads(body, 0, NULL);
		char *copy = NULL;

		if (json_is_object(cfg)) {
			json_object_set_new(cfg, "conf", json_string(conf_default));
			copy = json_dumps(cfg, JSON_COMPACT);
			if (copy == NULL)
				abort();
			body = copy;
		}
		json_decref(cfg);
		in = fmemopen(body, strlen(body), "r");
		if (strlen(body) == 0) {
			fclose(in);
			in = fopen("/dev/null", "r");
		}
		out = open_memstream(&printed, &plen);
		if (in == NULL || out == NULL)
			abort();
		stdin = in;
		stdout = out;
		rc = cni_plugin_main(no_log_setup);
		stdout = save_out;
		stdin = save_in;
		fclose(in);
		fclose(out);
		free(copy);
	}
	log_set_level(LOG_LVL_ERROR);
	if (rc != 0 && rc != 1)
		abort();
	o = plen > 0 ? json_loads(printed, 0, NULL) : NULL;
	if (plen > 0 && (o == NULL || !json_is_object(o)))
		abort(); /* stdout is one JSON object */
	if (rc == 1 && (o == NULL || !json_is_string(json_object_get(o, "cniVersion")) ||
	    !json_is_integer(json_object_get(o, "code")) ||
	    !json_is_string(json_object_get(o, "msg"))))
		abort(); /* an error is the spec's error object */
	json_decref(o);
	free(printed);
	free(text);
	return 0;
}
