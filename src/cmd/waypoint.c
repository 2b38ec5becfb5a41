/* SPDX-License-Identifier: Apache-2.0 */
/* amesh waypoint: startup and wiring of the L7 proxy; the machinery lives in src/l7/. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ca/agent.h"
#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/kw.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "l7/waypoint.h"
#include "telemetry/accesslog.h"
#include "telemetry/admin.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

struct wpd {
	uv_loop_t *loop;
	struct amesh_conf *conf;
	struct registry_holder reg;
	struct identity_store *ids;
	struct idagent *agent; /* its identity from the CA service; NULL: from files */
	struct identity_gauges *id_gauges;
	struct metrics *metrics;
	struct waypoint *wp;
	struct admin *admin; /* admin, metrics and readiness endpoints */
	struct cmd_role role; /* signals, watchdog */
	struct cmd_registry regw; /* the registry: a directory or etcd */
	bool stopping, upgrading, upgraded;
};

static void
describe(const struct registry *r, char *buf, size_t n)
{
	snprintf(buf, n, "%zu routes", r->n[REG_ROUTE]);
}

static void
drained(void *arg)
{
	struct wpd *z = arg;

	log_info("waypoint: drained");
	cmd_role_close(&z->role);
	cmd_registry_stop(&z->regw);
	identity_store_unwatch(z->ids);
	if (z->agent != NULL)
		idagent_close(z->agent, NULL, NULL);
	admin_stop(z->admin);
}

static void
stop(void *arg)
{
	struct wpd *z = arg;

	if (z->stopping)
		return;
	z->stopping = true;
	/* Upgraded, the readiness port is the new process's too: it stays ready. */
	if (!z->upgraded)
		admin_set_ready(z->admin, false);
	cmd_role_stopping();
	log_info("waypoint: stopping (drain up to %llu ms)",
	    (unsigned long long)z->conf->waypoint.drain_timeout);
	waypoint_drain(z->wp, z->conf->waypoint.drain_timeout, drained, z);
}

static void
upgrade_done(void *arg, bool ok, int pid)
{
	struct wpd *z = arg;

	(void)pid;
	z->upgrading = false;
	if (ok) {
		z->upgraded = true;
		stop(z); /* the new process serves: stop accepting, drain */
	}
}

/* SIGUSR2 (the unit's reload): the binary on disk takes over the listeners, nothing refused. */
static void
upgrade(void *arg)
{
	struct wpd *z = arg;
	int r;

	if (z->stopping || z->upgrading) {
		log_warn("waypoint: SIGUSR2: %s; ignored",
		    z->stopping ? "stopping already" : "an upgrade is under way");
		return;
	}
	z->upgrading = true;
	if ((r = cmd_upgrade_start(z->loop, upgrade_done, z)) != 0) {
		log_error("waypoint: SIGUSR2: cannot start the new process: %s; this one goes on "
		    "serving", amesh_strerror(r));
		z->upgrading = false;
	}
}

/* SIGHUP */
static void
reload(void *arg)
{
	struct wpd *z = arg;

	log_info("waypoint: SIGHUP: reloading the registry and certificates");
	cmd_registry_reload(&z->regw);
	if (identity_store_reload(z->ids) < 0)
		log_error("waypoint: certificates: reload failed; the previous ones stay");
	idagent_kick(z->agent);
}

/* The host endpoints (telemetry/admin.h): /config_dump is the engine's; /quitquitquit stops
 * like SIGTERM, from a zero-delay timer: quit is called from inside the HTTP handler, where the
 * admin's listeners must not close. */
static char *
admin_dump(void *arg)
{
	struct wpd *z = arg;

	return cmd_registry_dump(&z->regw, waypoint_dump(z->wp));
}

static void
admin_quit(void *arg)
{
	struct wpd *z = arg;

	cmd_call_soon(z->loop, stop, z);
}

static void
admin_refresh_metrics(void *arg)
{
	struct wpd *z = arg;

	identity_gauges_refresh(&z->id_gauges, z->metrics, z->ids);
}

static const struct admin_ops wp_ops = {
	.config_dump = admin_dump,
	.ready = NULL,
	.refresh_metrics = admin_refresh_metrics,
	.quit = admin_quit,
};

/* With [identity] ca_address: the agent, and the waypoint's own identity before it serves. */
static int
start_agent(struct wpd *z)
{
	struct registry *r = registry_holder_get(&z->reg);
	const struct reg_waypoint *w = registry_find(r, REG_WAYPOINT, z->conf->waypoint.name);
	char ns[256], sa[256], why[1024];

	if (w == NULL) {
		registry_unref(r);
		return 0; /* waypoint_start says what is wrong */
	}
	snprintf(ns, sizeof(ns), "%s", w->namespace);
	snprintf(sa, sizeof(sa), "%s", w->service_account);
	registry_unref(r);
	if (idagent_new(&(struct idagent_cfg){
		.loop = z->loop, .conf = z->conf, .ids = z->ids, .metrics = z->metrics,
	    }, &z->agent, why, sizeof(why)) != 0) {
		log_error("waypoint: %s", why);
		return -1;
	}
	if (idagent_wait(z->agent, z->loop, ns, sa, why, sizeof(why)) != 0) {
		log_error("waypoint: no certificate for %s/%s: %s", ns, sa, why);
		return -1;
	}
	return 0;
}

static int
exec_waypoint(const struct cmd_globals *g, int argc, char **argv)
{
	static struct wpd z;
	struct diag d;
	struct identity_store_config ic = { 0 };
	const char *name = NULL;

	for (int i = 1; i < argc; i++) {
		/* --name lets one amesh.conf serve amesh-waypoint@NAME.service instances. */
		if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
			name = argv[++i];
		else if (strncmp(argv[i], "--name=", 7) == 0)
			name = argv[i] + 7;
		else
			return cmd_usage_error("waypoint", NULL, "amesh waypoint [-c FILE] [--name NAME]",
			    strcmp(argv[i], "--name") == 0 ? "option '--name' needs a value" :
			    "unexpected argument '%s'", argv[i]);
		if (!kw_is_hostname(name))
			return cmd_usage_error("waypoint", NULL, "amesh waypoint [-c FILE] [--name NAME]",
			    "--name '%s': not a waypoint name (letters, digits, '-' and '.')", name);
	}
	diag_init(&d);
	if (conf_load(g->conf_path, &z.conf, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		return EXIT_FAIL;
	}
	if (name != NULL) {
		free(z.conf->waypoint.name);
		if ((z.conf->waypoint.name = strdup(name)) == NULL)
			fatalx("out of memory");
	}
	cmd_log_setup(g, z.conf);
	accesslog_set_enabled(z.conf->log.access_log);
	signal(SIGPIPE, SIG_IGN);
	if (cmd_role_inherit("waypoint") != 0)
		return EXIT_FAIL;
	z.loop = uv_default_loop();
	registry_holder_init(&z.reg);
	if (cmd_registry_load(&z.regw, z.loop, "waypoint", z.conf, &z.reg, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		log_error("waypoint: registry %s is invalid", z.conf->mesh.registry);
		return EXIT_FAIL;
	}
	ic.cert_dir = z.conf->identity.cert_dir;
	ic.trust_bundle = z.conf->mesh.trust_bundle;
	ic.trust_domain = z.conf->mesh.trust_domain;
	ic.expiry_warning_ms = z.conf->identity.expiry_warning;
	if (z.conf->identity.ca_address.n > 0 &&
	    ic.expiry_warning_ms > z.conf->identity.cert_ttl / 4)
		ic.expiry_warning_ms = z.conf->identity.cert_ttl / 4;
	if (z.conf->identity.ca_address.n > 0) {
		char why[512];

		if (idagent_prepare(z.conf, why, sizeof(why)) != 0) {
			log_error("waypoint: %s", why);
			return EXIT_FAIL;
		}
	}
	if (identity_store_new(&ic, &z.ids) != 0 || identity_store_reload(z.ids) < 0) {
		log_error("waypoint: cannot load the trust bundle %s", z.conf->mesh.trust_bundle);
		return EXIT_FAIL;
	}
	identity_store_watch(z.ids, z.loop);
	if (metrics_new(&z.metrics) != 0)
		fatalx("out of memory");
	if (z.conf->identity.ca_address.n > 0 && start_agent(&z) != 0)
		return EXIT_FAIL;
	if (waypoint_start(z.loop, z.conf, &z.reg, z.ids, z.metrics,
	    cmd_auto_workers(z.conf->waypoint.workers), &z.wp) != 0)
		return EXIT_FAIL;
	if (admin_start(z.loop, &(struct admin_cfg){
		.role = "waypoint",
		.admin_address = &z.conf->waypoint.admin_address,
		.metrics_address = &z.conf->waypoint.metrics_address,
		.readiness_address = &z.conf->waypoint.readiness_address,
		.metrics = z.metrics,
		.ops = &wp_ops,
		.arg = &z,
	    }, &z.admin) != 0)
		return EXIT_FAIL; /* logged, with the address */
	cmd_registry_watch(&z.regw, z.metrics, describe);
	admin_set_ready(z.admin, true);
	z.role.reload = reload;
	z.role.stop = stop;
	z.role.upgrade = upgrade;
	z.role.arg = &z;
	cmd_role_start(z.loop, &z.role);
	uv_run(z.loop, UV_RUN_DEFAULT);
	admin_free(z.admin);
	waypoint_free(z.wp);
	idagent_free(z.agent);
	identity_gauges_free(z.id_gauges);
	identity_store_free(z.ids);
	metrics_free(z.metrics);
	cmd_registry_free(&z.regw);
	registry_holder_destroy(&z.reg);
	uv_loop_close(z.loop);
	conf_free(z.conf);
	return EXIT_OK;
}

const struct cmd_entry cmd_waypoint_entry = {
	"waypoint", "[-c FILE] [--name NAME]", "run the L7 proxy for services that need one",
	"  --name NAME           run as the registry's [waypoint \"NAME\"] instead of\n"
	"                        [waypoint] name (amesh-waypoint@NAME.service)\n",
	exec_waypoint, "amesh-waypoint(8)",
};
