/* SPDX-License-Identifier: Apache-2.0 */
/* What the L4 proxy reports to the host endpoints: config dump, readiness, gauges (report.h). */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ca/agent.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "l7/waypoint.h"
#include "proxy/report.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

struct proxy_report {
	struct proxy *px;
	const struct amesh_conf *conf;
	const struct conf_proxy *pc;
	const char *role;
	struct identity_store *ids;
	struct registry_holder *reg;
	struct metric_gauge *g_active, *g_workloads, *g_failed;
	struct metrics *metrics;
	struct identity_gauges *id_gauges;
	struct idagent *agent;
};

static const char *
iso(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static json_t *
addr_list(const struct ip_list *l)
{
	json_t *a = json_array();
	char buf[64];

	for (size_t i = 0; i < l->n; i++)
		json_array_append_new(a, json_string(ip_str(&l->v[i], buf, sizeof(buf))));
	return a;
}

struct dump_ctx {
	const struct proxy_report *rp;
	json_t *list;
};

static void
dump_workload(const struct proxy_workload_view *w, void *arg)
{
	const struct dump_ctx *c = arg;
	const struct conf_proxy *pc = c->rp->pc;
	json_t *e = json_pack(
	    "{s:s,s:s,s:s,s:{s:i,s:i,s:i},s:I,s:{s:I,s:I,s:I,s:I,s:I}}",
	    "name", w->name, "netns", w->netns_path, "identity", w->spiffe_id,
	    "ports", "outbound", pc->outbound_port, "inbound_plaintext",
	    pc->inbound_plaintext_port, "hbone", pc->hbone_port,
	    "connections", (json_int_t)w->connections,
	    "pool", "connections", (json_int_t)w->pool.connections, "streams",
	    (json_int_t)w->pool.streams, "connections_opened", (json_int_t)w->pool.connections_opened,
	    "connect_failures", (json_int_t)w->pool.connect_failures, "streams_retried",
	    (json_int_t)w->pool.streams_retried);

	if (e != NULL && w->l7 != NULL)
		json_object_set_new(e, "l7", waypoint_stats_json(w->l7)); /* what its requests met */
	json_array_append_new(c->list, e);
}

static void
dump_failed(const struct proxy_failed_view *f, void *arg)
{
	json_array_append_new(arg, json_pack("{s:s,s:s,s:s}", "name", f->name, "netns",
	    f->netns_path, "reason", f->why));
}

char *
proxy_report_config_dump(struct proxy_report *rp)
{
	struct proxy_stats st;
	struct registry *r = registry_holder_get(rp->reg);
	json_t *root = json_object(), *reg = json_object(), *wls = json_array(),
	    *svcs = json_array(), *enrolled = json_array(), *idents = json_array(),
	    *failed = json_array();
	struct identity **list = NULL;
	size_t n;
	char buf[64];
	char *out;

	json_object_set_new(root, "role", json_string(rp->role));
	json_object_set_new(root, "node", json_string(rp->conf->mesh.node));
	json_object_set_new(root, "trust_domain", json_string(rp->conf->mesh.trust_domain));
	if (r != NULL) {
		json_object_set_new(reg, "directory", json_string(rp->conf->mesh.registry));
		json_object_set_new(reg, "files", json_integer((json_int_t)r->n_files));
		static const char *const plural[REG_NKINDS] = {
			"nodes", "workloads", "services", "waypoints", "policies", "routes",
			"namespaces",
		};

		for (int k = 0; k < REG_NKINDS; k++)
			json_object_set_new(reg, plural[k], json_integer((json_int_t)r->n[k]));
		for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
			const struct reg_workload *w = REG_WORKLOADS(r)[i];

			json_array_append_new(wls, json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:s?}",
			    "name", w->h.name, "namespace", w->namespace,
			    "service_account", w->service_account, "node", w->node,
			    "addresses", addr_list(&w->addresses),
			    "protocol", w->protocol == REG_PROTO_HBONE ? "hbone" : "tcp",
			    "mtls_mode", w->mtls_mode == REG_MTLS_STRICT ? "strict" : "permissive",
			    "waypoint", w->waypoint));
		}
		for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
			const struct reg_service *s = REG_SERVICES(r)[i];
			json_t *ports = json_array(), *eps = json_array();

			for (size_t p = 0; p < s->ports.n; p++)
				json_array_append_new(ports, json_pack("{s:i,s:i}", "port",
				    s->ports.v[p].port, "target_port", s->ports.v[p].target));
			for (size_t e = 0; e < s->n_endpoints; e++)
				json_array_append_new(eps, json_string(s->endpoints[e]->h.name));
			json_array_append_new(svcs, json_pack("{s:s,s:s,s:s,s:o,s:b,s:o,s:o,s:s?,s:b,s:o}",
			    "name", s->h.name, "namespace", s->namespace, "hostname", s->hostname,
			    "vips", addr_list(&s->vips), "vip_auto", s->vip_auto, "ports", ports,
			    "endpoints", eps, "waypoint", s->waypoint, "external", s->external,
			    "addresses", addr_list(&s->addresses)));
		}
		json_object_set_new(reg, "workload_list", wls);
		json_object_set_new(reg, "service_list", svcs);
		/* Sidecars route; every role shows what each backend name resolved to. */
		json_object_set_new(reg, "route_list", waypoint_routes_json(r));
	} else {
		json_decref(wls);
		json_decref(svcs);
	}
	json_object_set_new(root, "registry", reg);
	proxy_foreach_workload(rp->px, dump_workload, &(struct dump_ctx){ rp, enrolled });
	json_object_set_new(root, "enrolled", enrolled);
	proxy_foreach_failed(rp->px, dump_failed, failed);
	json_object_set_new(root, "failed", failed);
	n = identity_store_list(rp->ids, &list);
	for (size_t i = 0; i < n; i++) {
		char nb[32];

		/* The certificate's public facts only: never the key. */
		json_array_append_new(idents, json_pack("{s:s,s:s,s:s,s:s}", "spiffe_id",
		    list[i]->spiffe_id, "certificate", list[i]->crt_path, "not_before",
		    iso(list[i]->not_before, nb, sizeof(nb)), "not_after",
		    iso(list[i]->not_after, buf, sizeof(buf))));
		identity_unref(list[i]);
	}
	free(list);
	json_object_set_new(root, "identities", idents);
	if (rp->agent != NULL) {
		char *txt = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&txt, &len);
		json_t *ag = NULL;

		if (f != NULL) {
			idagent_dump(rp->agent, f);
			fclose(f);
			ag = json_loads(txt, 0, NULL);
		}
		free(txt);
		if (ag != NULL)
			json_object_set_new(root, "identity_agent", ag);
	}
	proxy_get_stats(rp->px, &st);
	json_object_set_new(root, "stats", json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
	    "accepted", (json_int_t)st.accepted, "active", (json_int_t)st.active,
	    "refused_limit", (json_int_t)st.refused_limit,
	    "outbound_hbone", (json_int_t)st.outbound_hbone,
	    "outbound_passthrough", (json_int_t)st.outbound_passthrough,
	    "outbound_external", (json_int_t)st.outbound_external,
	    "outbound_blackhole", (json_int_t)st.outbound_blackhole,
	    "inbound_hbone", (json_int_t)st.inbound_hbone,
	    "inbound_plaintext", (json_int_t)st.inbound_plaintext,
	    "denied", (json_int_t)st.denied,
	    "connect_failures", (json_int_t)st.connect_failures,
	    "inbound_l7", (json_int_t)st.inbound_l7,
	    "outbound_l7", (json_int_t)st.outbound_l7,
	    "waypoint_failovers", (json_int_t)st.waypoint_failovers));
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	registry_unref(r);
	return out;
}

static void
ready_failed(const struct proxy_failed_view *f, void *arg)
{
	fprintf(arg, "workload %s (netns %s): %s\n", f->name, f->netns_path, f->why);
}

bool
proxy_report_ready(struct proxy_report *rp, FILE *why)
{
	struct proxy_stats st;

	proxy_get_stats(rp->px, &st);
	if (st.draining)
		return false;
	if (st.failed == 0)
		return true;
	if (why == NULL)
		return false;
	/* A workload it holds but cannot serve: its traffic is refused, so say which and why. */
	fprintf(why, "not ready: %zu recorded workloads not served\n", st.failed);
	proxy_foreach_failed(rp->px, ready_failed, why);
	return false;
}

void
proxy_report_refresh_metrics(struct proxy_report *rp)
{
	struct proxy_stats st;

	proxy_get_stats(rp->px, &st);
	metrics_gauge_set(rp->g_active, (int64_t)st.active);
	metrics_gauge_set(rp->g_workloads, (int64_t)st.workloads);
	metrics_gauge_set(rp->g_failed, (int64_t)st.failed);
	identity_gauges_refresh(&rp->id_gauges, rp->metrics, rp->ids);
}

void
proxy_report_set_agent(struct proxy_report *rp, struct idagent *a)
{
	rp->agent = a;
}

struct proxy_report *
proxy_report_new(struct proxy *px, const struct amesh_conf *conf, const struct conf_proxy *pc,
    const char *role, struct identity_store *ids, struct registry_holder *reg,
    struct metrics *metrics)
{
	struct proxy_report *rp = xcalloc(1, sizeof(*rp));

	rp->px = px;
	rp->conf = conf;
	rp->pc = pc;
	rp->role = role;
	rp->ids = ids;
	rp->reg = reg;
	rp->metrics = metrics;
	rp->g_active = metrics_gauge(metrics, "amesh_proxy_connections_active",
	    "Relayed connections open now.");
	rp->g_workloads = metrics_gauge(metrics, "amesh_proxy_workloads_enrolled",
	    "Workloads enrolled in this proxy.");
	rp->g_failed = metrics_gauge(metrics, "amesh_proxy_workloads_failed",
	    "Workloads recorded for this proxy that it cannot serve (their traffic is refused).");
	return rp;
}

void
proxy_report_free(struct proxy_report *rp)
{
	if (rp == NULL)
		return;
	identity_gauges_free(rp->id_gauges);
	free(rp);
}
