/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of bench/registry-etcd/run.sh (never part of make check):
 *
 *   regbench watch-dir DIR      watch a registry directory as a role does (config/regwatch.h)
 *                               and print "applied UNIX_MS" each time a reload is swapped in
 *   regbench load CONF [ROUNDS] time ROUNDS reads of CONF's [mesh] registry, directory or
 *                               etcd, whole (read, parse, validate): min / median / max in ms
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"
#include "config/regwatch.h"
#include "core/diag.h"
#include "etcd/regstore.h"

static long long
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* regwatch calls this just before it swaps the new snapshot in. */
static void
describe(const struct registry *r, char *buf, size_t n)
{
	printf("applied %lld %zu\n", wall_ms(), r->n[REG_WORKLOAD]);
	fflush(stdout);
	snprintf(buf, n, "%zu workloads", r->n[REG_WORKLOAD]);
}

static int
watch_dir(const char *dir)
{
	struct registry_holder h;
	struct regwatch w;
	struct diag d;

	diag_init(&d);
	registry_holder_init(&h);
	if (registry_holder_reload(&h, dir, &d) != 0) {
		diag_print(&d, stderr);
		return 1;
	}
	if (regwatch_start(&w, uv_default_loop(), dir, &h, describe) != 0) {
		fprintf(stderr, "regbench: cannot watch %s\n", dir);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	uv_run(uv_default_loop(), UV_RUN_DEFAULT);
	return 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
load(const char *conf_path, int rounds)
{
	struct amesh_conf *c;
	struct diag d;
	double *ms = calloc((size_t)rounds, sizeof(double));
	char what[600];

	diag_init(&d);
	if (ms == NULL || conf_load(conf_path, &c, &d) != 0) {
		diag_print(&d, stderr);
		return 1;
	}
	for (int i = 0; i < rounds; i++) {
		struct registry *r;
		double t0 = mono_ms();

		if (registry_source_read(c, false, &r, what, sizeof(what), &d) != 0) {
			diag_print(&d, stderr);
			return 1;
		}
		ms[i] = mono_ms() - t0;
		registry_unref(r);
	}
	qsort(ms, (size_t)rounds, sizeof(double), cmp_double);
	printf("load %s: %d rounds: min %.1f ms, median %.1f ms, max %.1f ms\n", what, rounds, ms[0],
	    ms[rounds / 2], ms[rounds - 1]);
	free(ms);
	conf_free(c);
	return 0;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && strcmp(argv[1], "watch-dir") == 0)
		return watch_dir(argv[2]);
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "load") == 0)
		return load(argv[2], argc == 4 ? atoi(argv[3]) : 5);
	fprintf(stderr, "usage: regbench watch-dir DIR | regbench load CONF [ROUNDS]\n");
	return 2;
}
