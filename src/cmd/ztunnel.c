/* SPDX-License-Identifier: Apache-2.0 */
/* amesh ztunnel: startup and wiring of the node proxy; the machinery lives in src/proxy/. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/registry.h"
#include "config/regwatch.h"
#include "core/diag.h"
#include "core/log.h"
#include "proxy/admin.h"
#include "proxy/enroll.h"
#include "proxy/proxy.h"
#include "telemetry/accesslog.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

/* Registry edits usually come as several writes: reload once they settle. */
struct zt {
	uv_loop_t *loop;
	struct amesh_conf *conf;
	struct registry_holder reg;
	struct identity_store *ids;
	struct metrics *metrics;
	struct proxy px;
	struct enroll *en;
	struct admin *admin;
	uv_signal_t sig_hup, sig_term, sig_int;
	struct regwatch regw;
	uv_timer_t watchdog;
	bool stopping, ready;
	int exit_code;
};

static void
describe(const struct registry *r, char *buf, size_t n)
{
	snprintf(buf, n, "%zu workloads, %zu services", r->n[REG_WORKLOAD], r->n[REG_SERVICE]);
}

static void
on_watchdog(uv_timer_t *t)
{
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, "WATCHDOG=1");
#endif
}

static void
closed_handle(uv_handle_t *h)
{
}

static void
proxy_drained(struct proxy *px)
{
	struct zt *z = (struct zt *)((char *)px - offsetof(struct zt, px));

	log_info("ztunnel: drained");
	uv_close((uv_handle_t *)&z->sig_hup, closed_handle);
	uv_close((uv_handle_t *)&z->sig_term, closed_handle);
	uv_close((uv_handle_t *)&z->sig_int, closed_handle);
	regwatch_stop(&z->regw);
	uv_close((uv_handle_t *)&z->watchdog, closed_handle);
	identity_store_unwatch(z->ids);
	admin_stop(z->admin);
}

static void
enroll_stopped(void *arg)
{
}

void ztunnel_stop(void *arg);

/* SIGTERM, SIGINT or /quitquitquit: stop accepting, drain, exit. */
void
ztunnel_stop(void *arg)
{
	struct zt *z = arg;

	if (z->stopping)
		return;
	z->stopping = true;
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, "STOPPING=1");
#endif
	log_info("ztunnel: stopping (drain up to %llu ms)",
	    (unsigned long long)z->conf->ztunnel.proxy.drain_timeout);
	enroll_stop(z->en, enroll_stopped, z);
	proxy_drain(&z->px, z->conf->ztunnel.proxy.drain_timeout, proxy_drained);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	struct zt *z = s->data;

	if (signum == SIGHUP) {
		log_info("ztunnel: SIGHUP: reloading the registry and certificates");
		regwatch_trigger(&z->regw, 0);
		if (identity_store_reload(z->ids) < 0)
			log_error("ztunnel: certificates: reload failed; the previous ones stay");
		return;
	}
	ztunnel_stop(z);
}

static int
exec_ztunnel(const struct cmd_globals *g, int argc, char **argv)
{
	struct zt z;
	struct diag d;
	struct registry *r;
	struct identity_store_config ic;
	uint64_t wd_usec = 0;
	size_t restored;
	int rc;

	if (argc > 1) {
		fprintf(stderr, "amesh ztunnel: unexpected argument '%s'\nTry 'amesh ztunnel --help'.\n",
		    argv[1]);
		return EXIT_USAGE;
	}
	memset(&z, 0, sizeof(z));
	diag_init(&d);
	if (conf_load(g->conf_path, &z.conf, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		return EXIT_FAIL;
	}
	cmd_log_setup(g, z.conf);
	accesslog_set_enabled(z.conf->log.access_log);
	signal(SIGPIPE, SIG_IGN);
	z.loop = uv_default_loop();
	registry_holder_init(&z.reg);
	if (registry_holder_reload(&z.reg, z.conf->mesh.registry, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		log_error("ztunnel: registry %s is invalid", z.conf->mesh.registry);
		return EXIT_FAIL;
	}
	r = registry_holder_get(&z.reg);
	if (registry_find(r, REG_NODE, z.conf->mesh.node) == NULL) {
		log_error("ztunnel: %s: [mesh] node \"%s\" is not defined in the registry %s",
		    z.conf->path, z.conf->mesh.node, z.conf->mesh.registry);
		registry_unref(r);
		return EXIT_FAIL;
	}
	registry_unref(r);
	ic.cert_dir = z.conf->identity.cert_dir;
	ic.trust_bundle = z.conf->mesh.trust_bundle;
	ic.trust_domain = z.conf->mesh.trust_domain;
	ic.expiry_warning_ms = z.conf->identity.expiry_warning;
	if (identity_store_new(&ic, &z.ids) != 0 || identity_store_reload(z.ids) < 0) {
		log_error("ztunnel: cannot load the trust bundle %s", z.conf->mesh.trust_bundle);
		return EXIT_FAIL;
	}
	identity_store_watch(z.ids, z.loop);
	if (metrics_new(&z.metrics) != 0)
		fatalx("out of memory");
	proxy_init(&z.px, z.loop, z.conf, &z.conf->ztunnel.proxy, "ztunnel", &z.reg, z.ids,
	    z.metrics);
	rc = enroll_start(&z.px, z.conf->ztunnel.socket, z.conf->ztunnel.state_dir, &z.en);
	if (rc != 0)
		return EXIT_FAIL;
	restored = enroll_restore(z.en);
	if (restored > 0)
		log_info("ztunnel: %zu workloads restored from %s", restored,
		    z.conf->ztunnel.state_dir);
	rc = admin_start(z.loop, z.conf, &z.conf->ztunnel.proxy, &z.px, z.ids, &z.reg, z.metrics,
	    ztunnel_stop, &z, &z.admin);
	if (rc != 0)
		return EXIT_FAIL;
	uv_timer_init(z.loop, &z.watchdog);
	if (regwatch_start(&z.regw, z.loop, z.conf->mesh.registry, &z.reg, describe) != 0)
		log_warn("ztunnel: cannot watch %s; reload with SIGHUP", z.conf->mesh.registry);
	uv_signal_init(z.loop, &z.sig_hup);
	uv_signal_init(z.loop, &z.sig_term);
	uv_signal_init(z.loop, &z.sig_int);
	z.sig_hup.data = z.sig_term.data = z.sig_int.data = &z;
	uv_signal_start(&z.sig_hup, on_signal, SIGHUP);
	uv_signal_start(&z.sig_term, on_signal, SIGTERM);
	uv_signal_start(&z.sig_int, on_signal, SIGINT);
	admin_set_ready(z.admin, true);
	log_info("ztunnel: node %s ready: %zu workloads, hand-off on %s", z.conf->mesh.node,
	    z.px.nworkloads, z.conf->ztunnel.socket);
#ifdef HAVE_LIBSYSTEMD
	sd_notify(0, "READY=1");
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0)
		uv_timer_start(&z.watchdog, on_watchdog, wd_usec / 2000, wd_usec / 2000);
#endif
	(void)wd_usec;
	uv_run(z.loop, UV_RUN_DEFAULT);
	proxy_free(&z.px);
	identity_store_free(z.ids);
	enroll_free(z.en);
	admin_free(z.admin);
	metrics_free(z.metrics);
	registry_holder_destroy(&z.reg);
	uv_loop_close(z.loop);
	conf_free(z.conf);
	diag_clear(&d);
	return EXIT_OK;
}

const struct cmd_entry cmd_ztunnel_entry = {
	"ztunnel", "[-c FILE]", "run the node L4 proxy (HBONE, mTLS, L4 policy)",
	NULL, exec_ztunnel, "amesh-ztunnel(8)",
};
