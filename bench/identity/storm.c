/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The renewal storm of bench/identity/run.sh: one identity agent (ca/agent.h), as one ztunnel runs
 * it, holding IDS workload identities (namespace NS, service accounts s0 .. sIDS-1, which the CA's
 * registry must place on the config's [mesh] node) with the config's [identity] cert_ttl, for SECS
 * seconds. The agent obtains them all (first issue), then renews each at 0.4-0.6 of its life; the
 * driver watches the CA's issue counter to see how the jitter spreads the renewals.
 *
 *	storm -c NODE_CONF [-n IDS] [-N NS] [-d SECS]
 *
 * Prints "issued_all N in S s" once every identity has its first certificate, and "done" at the
 * end; exits 1 when the agent cannot start or an identity cannot be obtained.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "ca/agent.h"
#include "config/conf.h"
#include "core/diag.h"
#include "core/log.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

static int pending, failed;
static uint64_t t_start;
static uv_timer_t stop_timer;
static struct idagent *agent;

static void
on_done(void *arg, int status, const char *why)
{
	(void)arg;
	if (status != 0) {
		if (failed++ == 0)
			fprintf(stderr, "storm: %s\n", why);
	}
	if (--pending == 0) {
		printf("issued_all %d in %.2f s (%d failed)\n", (int)(intptr_t)arg, (double)(uv_hrtime() -
		    t_start) / 1e9, failed);
		fflush(stdout);
	}
}

static void
on_closed(void *arg)
{
	(void)arg;
}

static void
on_stop(uv_timer_t *t)
{
	idagent_close(agent, on_closed, NULL);
	uv_close((uv_handle_t *)t, NULL);
}

int
main(int argc, char **argv)
{
	const char *conf_path = NULL, *ns = "storm";
	struct identity_store_config ic = { 0 };
	struct identity_store *ids = NULL;
	struct amesh_conf *conf = NULL;
	struct metrics *m = NULL;
	uv_loop_t *loop = uv_default_loop();
	char why[1024];
	struct diag d;
	double secs = 60;
	int n = 1000, c, r;

	while ((c = getopt(argc, argv, "c:n:N:d:h")) != -1) {
		switch (c) {
		case 'c': conf_path = optarg; break;
		case 'n': n = atoi(optarg); break;
		case 'N': ns = optarg; break;
		case 'd': secs = atof(optarg); break;
		default:
			fprintf(stderr, "usage: storm -c NODE_CONF [-n IDS] [-N NS] [-d SECS]\n");
			return 2;
		}
	}
	if (conf_path == NULL || n < 1) {
		fprintf(stderr, "storm: -c NODE_CONF is needed\n");
		return 2;
	}
	log_set_level(LOG_LVL_WARN);
	diag_init(&d);
	if (conf_load(conf_path, &conf, &d) != 0) {
		diag_print(&d, stderr);
		return 1;
	}
	diag_clear(&d);
	ic.cert_dir = conf->identity.cert_dir;
	ic.trust_bundle = conf->mesh.trust_bundle;
	ic.trust_domain = conf->mesh.trust_domain;
	ic.expiry_warning_ms = conf->identity.cert_ttl / 4;
	if (identity_store_new(&ic, &ids) != 0 || identity_store_reload(ids) < 0) {
		fprintf(stderr, "storm: cannot load the trust bundle %s\n", conf->mesh.trust_bundle);
		return 1;
	}
	if (metrics_new(&m) != 0)
		return 1;
	if (idagent_new(&(struct idagent_cfg){ .loop = loop, .conf = conf, .ids = ids,
	    .metrics = m }, &agent, why, sizeof(why)) != 0) {
		fprintf(stderr, "storm: %s\n", why);
		return 1;
	}
	t_start = uv_hrtime();
	for (int i = 0; i < n; i++) {
		char sa[32];

		snprintf(sa, sizeof(sa), "s%d", i);
		pending++;
		r = idagent_want(agent, ns, sa, on_done, (void *)(intptr_t)n, why, sizeof(why));
		if (r < 0) {
			fprintf(stderr, "storm: %s/%s: %s\n", ns, sa, why);
			return 1;
		}
		if (r == 0)
			pending--;
	}
	uv_timer_init(loop, &stop_timer);
	uv_timer_start(&stop_timer, on_stop, (uint64_t)(secs * 1000), 0);
	uv_run(loop, UV_RUN_DEFAULT);
	idagent_free(agent);
	identity_store_free(ids);
	metrics_free(m);
	conf_free(conf);
	printf("done\n");
	return failed > 0 || pending > 0;
}
