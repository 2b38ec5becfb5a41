/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh ztunnel and amesh sidecar: startup and wiring of the L4 proxy, which lives in src/proxy/.
 * The ztunnel serves the workloads amesh cni hands it, each in its own namespace; the sidecar runs
 * inside one workload's namespace, installs that namespace's rules itself and enrolls only it,
 * with only its identity.
 */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ca/agent.h"
#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "dns/server.h"
#include "net/netns.h"
#include "nft/rules.h"
#include "proxy/enroll.h"
#include "proxy/proxy.h"
#include "proxy/report.h"
#include "telemetry/accesslog.h"
#include "telemetry/admin.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

/* Registry edits usually come as several writes: reload once they settle. */
struct zt {
	const char *role;             /* "ztunnel" or "sidecar" */
	const char *workload;         /* sidecar: the workload it serves */
	const struct conf_proxy *pc;  /* [ztunnel] or [sidecar] */
	uv_loop_t *loop;
	struct amesh_conf *conf;
	struct registry_holder reg;
	struct identity_store *ids;
	struct idagent *agent; /* identities from the CA service; NULL: from files */
	struct metrics *metrics;
	struct dns_server *dns; /* the DNS proxy, when dns_capture is on */
	struct proxy *px;
	struct enroll *en;
	struct proxy_report *report; /* what the admin endpoints show of the proxy */
	struct admin *admin;
	struct cmd_role life; /* signals, watchdog */
	struct cmd_registry regw; /* the registry: a directory or etcd */
	bool stopping, ready, upgrading;
	int exit_code;
};

static void
describe(const struct registry *r, char *buf, size_t n)
{
	snprintf(buf, n, "%zu workloads, %zu services", r->n[REG_WORKLOAD], r->n[REG_SERVICE]);
}

static void
proxy_drained(void *arg)
{
	struct zt *z = arg;

	log_info("%s: drained", z->role);
	cmd_role_close(&z->life);
	cmd_registry_stop(&z->regw);
	identity_store_unwatch(z->ids);
	if (z->agent != NULL)
		idagent_close(z->agent, NULL, NULL);
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
	cmd_role_stopping();
	log_info("%s: stopping (drain up to %llu ms)", z->role,
	    (unsigned long long)z->pc->drain_timeout);
	if (z->en != NULL)
		enroll_stop(z->en, enroll_stopped, z);
	proxy_drain(z->px, z->pc->drain_timeout, proxy_drained, z);
}

static void
upgrade_done(void *arg, bool ok, int pid)
{
	struct zt *z = arg;

	z->upgrading = false;
	if (!ok) {
		if (z->en != NULL)
			enroll_pause(z->en, false);
		return;
	}
	(void)pid;
	/* The new process serves every listener: this one stops accepting and drains. */
	if (z->en != NULL)
		enroll_keep_path(z->en);
	ztunnel_stop(z);
}

/* SIGUSR2 (the unit's reload): the binary on disk takes over the listeners, nothing refused. */
static void
ztunnel_upgrade(void *arg)
{
	struct zt *z = arg;
	int r;

	if (z->stopping || z->upgrading) {
		log_warn("%s: SIGUSR2: %s; ignored", z->role,
		    z->stopping ? "stopping already" : "an upgrade is under way");
		return;
	}
	/* Enrollment requests wait in the socket's queue for whichever process serves next. */
	if (z->en != NULL)
		enroll_pause(z->en, true);
	z->upgrading = true;
	if ((r = cmd_upgrade_start(z->loop, upgrade_done, z)) != 0) {
		log_error("%s: SIGUSR2: cannot start the new process: %s; this one goes on serving",
		    z->role, amesh_strerror(r));
		z->upgrading = false;
		if (z->en != NULL)
			enroll_pause(z->en, false);
	}
}

/* SIGHUP */
static void
ztunnel_reload(void *arg)
{
	struct zt *z = arg;

	log_info("%s: SIGHUP: reloading the registry and certificates", z->role);
	cmd_registry_reload(&z->regw);
	if (identity_store_reload(z->ids) < 0)
		log_error("%s: certificates: reload failed; the previous ones stay", z->role);
	idagent_kick(z->agent);
}

/* The sidecar's own namespace: its rules, then the workload enrolled in place (NETNS_SELF). */
static int
sidecar_setup(struct zt *z)
{
	struct nft_rules_params p;
	char err[256], why[256], owner[NFT_OWNER_MAX], had[NFT_OWNER_MAX];
	int r;

	nft_rules_params_for_sidecar(&p, z->pc);
	nft_rules_owner_format(owner, sizeof(owner), true, z->workload);
	p.owner = owner;
	/* A namespace whose rules are another's (a ztunnel's workload, another sidecar) is not
	 * taken over: its traffic would leave the proxy that serves it. */
	r = nft_rules_owner(-1, "this namespace", had, sizeof(had), err, sizeof(err));
	if (r < 0) {
		log_error("sidecar: cannot read the interception rules: %s", err);
		return r;
	}
	if (r == 1 && had[0] != '\0' && strcmp(had, owner) != 0) {
		log_error("sidecar: workload %s: this namespace's rules belong to %s (table inet amesh): "
		    "amesh cni del first if that is wrong", z->workload, had);
		return AMESH_ERR_EXISTS;
	}
	r = nft_rules_install(-1, "this namespace", &p, err, sizeof(err));
	if (r != 0) {
		log_error("sidecar: cannot install the interception rules: %s", err);
		return r;
	}
	r = proxy_enroll(z->px, z->workload, NETNS_SELF, "(this namespace)", why, sizeof(why));
	if (r != 0) {
		log_error("sidecar: workload %s: %s", z->workload, why);
		return r;
	}
	return 0;
}

/* The host endpoints show the proxy's report; /quitquitquit stops like SIGTERM. */
static char *
admin_dump(void *arg)
{
	struct zt *z = arg;

	return cmd_registry_dump(&z->regw, proxy_report_config_dump(z->report));
}

static bool
admin_ready(void *arg, FILE *why)
{
	struct zt *z = arg;

	return proxy_report_ready(z->report, why);
}

static void
admin_refresh_metrics(void *arg)
{
	struct zt *z = arg;

	proxy_report_refresh_metrics(z->report);
}

static const struct admin_ops zt_admin_ops = {
	.config_dump = admin_dump,
	.ready = admin_ready,
	.refresh_metrics = admin_refresh_metrics,
	.quit = ztunnel_stop,
};

/* Whether an enrolled or failed workload of this proxy has identity ns/sa. */
struct in_use_ctx {
	struct zt *z;
	struct registry *r;
	const char *ns, *sa;
	bool found;
};

static void
in_use_served(const struct proxy_workload_view *v, void *arg)
{
	struct in_use_ctx *x = arg;
	const struct reg_workload *w = x->r != NULL ? registry_find(x->r, REG_WORKLOAD, v->name) :
	    NULL;

	if (w != NULL && strcmp(w->namespace, x->ns) == 0 && strcmp(w->service_account, x->sa) == 0)
		x->found = true;
}

static void
in_use_failed(const struct proxy_failed_view *v, void *arg)
{
	struct in_use_ctx *x = arg;
	const struct reg_workload *w = x->r != NULL ? registry_find(x->r, REG_WORKLOAD, v->name) :
	    NULL;

	if (w != NULL && strcmp(w->namespace, x->ns) == 0 && strcmp(w->service_account, x->sa) == 0)
		x->found = true;
}

static bool
identity_in_use(void *arg, const char *ns, const char *sa)
{
	struct in_use_ctx x = { arg, NULL, ns, sa, false };

	if (x.z->px == NULL)
		return true;
	x.r = registry_holder_get(&x.z->reg);
	proxy_foreach_workload(x.z->px, in_use_served, &x);
	if (!x.found)
		proxy_foreach_failed(x.z->px, in_use_failed, &x);
	registry_unref(x.r);
	return x.found;
}

/* Before serving its only workload, a sidecar waits for that identity from the CA. */
static int
sidecar_identity(struct zt *z, const char *ns, const char *sa)
{
	char why[1024];

	if (idagent_wait(z->agent, z->loop, ns, sa, why, sizeof(why)) == 0)
		return 0;
	log_error("sidecar: no certificate for %s/%s: %s", ns, sa, why);
	return -1;
}

static int
run_proxy(const struct cmd_globals *g, struct zt *z)
{
	struct diag d;
	struct registry *r;
	const struct reg_workload *wl = NULL;
	struct identity_store_config ic = { 0 };
	size_t restored;
	int rc;

	diag_init(&d);
	if (conf_load(g->conf_path, &z->conf, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		return EXIT_FAIL;
	}
	cmd_log_setup(g, z->conf);
	accesslog_set_enabled(z->conf->log.access_log);
	signal(SIGPIPE, SIG_IGN);
	if (cmd_role_inherit(z->role) != 0)
		return EXIT_FAIL;
	if (z->workload == NULL && strcmp(z->role, "sidecar") == 0) {
		if (z->conf->sidecar.workload == NULL) {
			fprintf(stderr, "amesh sidecar: which workload? Give --workload NAME or [sidecar] "
			    "workload in %s\n", z->conf->path);
			return EXIT_USAGE;
		}
		z->workload = z->conf->sidecar.workload;
	}
	/* A sidecar serves its workload; the ztunnel the workloads handed to it. */
	z->pc = z->workload != NULL ? &z->conf->sidecar.proxy : &z->conf->ztunnel.proxy;
	z->loop = uv_default_loop();
	registry_holder_init(&z->reg);
	if (cmd_registry_load(&z->regw, z->loop, z->role, z->conf, &z->reg, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		log_error("%s: registry %s is invalid", z->role, z->conf->mesh.registry);
		return EXIT_FAIL;
	}
	r = registry_holder_get(&z->reg);
	if (registry_find(r, REG_NODE, z->conf->mesh.node) == NULL) {
		log_error("%s: %s: [mesh] node \"%s\" is not defined in the registry %s", z->role,
		    z->conf->path, z->conf->mesh.node, z->conf->mesh.registry);
		registry_unref(r);
		return EXIT_FAIL;
	}
	if (z->workload != NULL &&
	    (wl = registry_find(r, REG_WORKLOAD, z->workload)) == NULL) {
		log_error("sidecar: workload \"%s\" is not defined in the registry %s", z->workload,
		    z->conf->mesh.registry);
		registry_unref(r);
		return EXIT_FAIL;
	}
	ic.cert_dir = z->conf->identity.cert_dir;
	ic.trust_bundle = z->conf->mesh.trust_bundle;
	ic.trust_domain = z->conf->mesh.trust_domain;
	ic.expiry_warning_ms = z->conf->identity.expiry_warning;
	/* Certificates from the CA live a day: warn only when renewal is badly late. */
	if (z->conf->identity.ca_address.n > 0 &&
	    ic.expiry_warning_ms > z->conf->identity.cert_ttl / 4)
		ic.expiry_warning_ms = z->conf->identity.cert_ttl / 4;
	if (wl != NULL) {
		/* A sidecar holds its workload's identity and no other. */
		ic.only_ns = wl->namespace;
		ic.only_sa = wl->service_account;
	}
	if (z->conf->identity.ca_address.n > 0) {
		char why[512];

		if (idagent_prepare(z->conf, why, sizeof(why)) != 0) {
			log_error("%s: %s", z->role, why);
			return EXIT_FAIL;
		}
	}
	rc = identity_store_new(&ic, &z->ids);
	registry_unref(r);
	if (rc != 0 || identity_store_reload(z->ids) < 0) {
		log_error("%s: cannot load the trust bundle %s", z->role, z->conf->mesh.trust_bundle);
		return EXIT_FAIL;
	}
	identity_store_watch(z->ids, z->loop);
	if (metrics_new(&z->metrics) != 0)
		fatalx("out of memory");
	if (z->conf->identity.ca_address.n > 0) {
		char why[512];

		if (idagent_new(&(struct idagent_cfg){
			.loop = z->loop,
			.conf = z->conf,
			.ids = z->ids,
			.metrics = z->metrics,
			.in_use = identity_in_use,
			.arg = z,
			/* A sidecar runs inside its workload's namespace, behind its own rules. */
			.mark = z->workload != NULL ? AMESH_MARK : 0,
		    }, &z->agent, why, sizeof(why)) != 0) {
			log_error("%s: %s", z->role, why);
			return EXIT_FAIL;
		}
		if (z->workload != NULL) {
			struct registry *cur = registry_holder_get(&z->reg);
			const struct reg_workload *w = registry_find(cur, REG_WORKLOAD, z->workload);
			char ns[256], sa[256];

			snprintf(ns, sizeof(ns), "%s", w->namespace);
			snprintf(sa, sizeof(sa), "%s", w->service_account);
			registry_unref(cur);
			if (sidecar_identity(z, ns, sa) != 0)
				return EXIT_FAIL;
		}
	}
	if (z->pc->dns_capture)
		z->dns = dns_server_new(&(struct dns_server_cfg){
			.loop = z->loop,
			.conf = z->conf,
			.reg = &z->reg,
			.metrics = z->metrics,
		});
	{
		struct proxy_cfg pc = {
			.loop = z->loop,
			.dns = z->dns,
			.conf = z->conf,
			.pc = z->pc,
			.role = z->role,
			.reg = &z->reg,
			.ids = z->ids,
			.metrics = z->metrics,
			.l7 = z->workload != NULL && z->conf->sidecar.l7,
			.workers = z->workload != NULL ? 1 : cmd_auto_workers(z->pc->workers),
		};

		z->px = proxy_new(&pc);
	}
	if (z->workload != NULL) {
		if (sidecar_setup(z) != 0)
			return EXIT_FAIL;
	} else {
		rc = enroll_start(z->loop, z->px, z->agent, z->conf->ztunnel.socket,
		    z->conf->ztunnel.state_dir, &z->en);
		if (rc != 0)
			return EXIT_FAIL;
		restored = enroll_restore(z->en);
		if (restored > 0)
			log_info("ztunnel: %zu workloads restored from %s", restored,
			    z->conf->ztunnel.state_dir);
	}
	z->report = proxy_report_new(z->px, z->conf, z->pc, z->role, z->ids, &z->reg, z->metrics);
	proxy_report_set_agent(z->report, z->agent);
	{
		struct admin_cfg ac = {
			.role = z->role,
			.admin_address = &z->pc->admin_address,
			.metrics_address = &z->pc->metrics_address,
			.readiness_address = &z->pc->readiness_address,
			.metrics = z->metrics,
			.ops = &zt_admin_ops,
			.arg = z,
		};

		rc = admin_start(z->loop, &ac, &z->admin);
	}
	if (rc != 0)
		return EXIT_FAIL;
	cmd_registry_watch(&z->regw, z->metrics, describe);
	admin_set_ready(z->admin, true);
	if (z->workload != NULL)
		log_info("sidecar: workload %s ready in this namespace (node %s)", z->workload,
		    z->conf->mesh.node);
	else
		log_info("ztunnel: node %s ready: %zu workloads, hand-off on %s", z->conf->mesh.node,
		    proxy_nworkloads(z->px), z->conf->ztunnel.socket);
	if (proxy_nfailed(z->px) > 0)
		log_warn("ztunnel: %zu recorded workloads not served (their traffic is refused): "
		    "not ready until they are; see amesh cni list", proxy_nfailed(z->px));
	z->life.reload = ztunnel_reload;
	z->life.stop = ztunnel_stop;
	z->life.upgrade = ztunnel_upgrade;
	z->life.arg = z;
	cmd_role_start(z->loop, &z->life);
	uv_run(z->loop, UV_RUN_DEFAULT);
	proxy_free(z->px);
	dns_server_free(z->dns);
	idagent_free(z->agent);
	identity_store_free(z->ids);
	enroll_free(z->en);
	admin_free(z->admin);
	proxy_report_free(z->report);
	metrics_free(z->metrics);
	cmd_registry_free(&z->regw);
	registry_holder_destroy(&z->reg);
	uv_loop_close(z->loop);
	conf_free(z->conf);
	diag_clear(&d);
	return EXIT_OK;
}

static int
exec_ztunnel(const struct cmd_globals *g, int argc, char **argv)
{
	static struct zt z;

	if (argc > 1) {
		fprintf(stderr, "amesh ztunnel: unexpected argument '%s'\nTry 'amesh ztunnel --help'.\n",
		    argv[1]);
		return EXIT_USAGE;
	}
	z.role = "ztunnel";
	return run_proxy(g, &z);
}

static int
exec_sidecar(const struct cmd_globals *g, int argc, char **argv)
{
	static struct zt z;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--workload") == 0 && i + 1 < argc)
			z.workload = argv[++i];
		else if (strncmp(argv[i], "--workload=", 11) == 0)
			z.workload = argv[i] + 11;
		else
			return cmd_usage_error("sidecar", NULL, "amesh sidecar [-c FILE] [--workload NAME]",
			    strcmp(argv[i], "--workload") == 0 ? "option '--workload' needs a value" :
			    "unexpected argument '%s'", argv[i]);
	}
	z.role = "sidecar";
	return run_proxy(g, &z);
}

const struct cmd_entry cmd_sidecar_entry = {
	"sidecar", "[-c FILE] [--workload NAME]",
	"run a per-workload proxy inside one network namespace",
	"  --workload NAME       the registry's workload whose namespace this is (default:\n"
	"                        [sidecar] workload); amesh-sidecar@NAME.service passes it\n",
	exec_sidecar, "amesh-sidecar(8)",
};

const struct cmd_entry cmd_ztunnel_entry = {
	"ztunnel", "[-c FILE]", "run the node L4 proxy (HBONE, mTLS, L4 policy)",
	NULL, exec_ztunnel, "amesh-ztunnel(8)",
};
