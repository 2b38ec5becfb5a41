/* SPDX-License-Identifier: Apache-2.0 */
/* Admin, metrics and readiness endpoints of a proxy role (admin.h). */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/parse.h"
#include "hbone/hbone.h"
#include "l7/waypoint.h"
#include "proxy/admin.h"
#include "telemetry/http.h"
#include "telemetry/metrics.h"
#include "tls/identity.h"

struct admin {
	struct proxy *px;
	struct identity_store *ids;
	struct registry_holder *reg;
	struct metrics *metrics;
	void (*quit)(void *);
	void *quit_arg;
	bool ready;
	struct http_server *srv[3];
	struct metric_gauge *g_active, *g_workloads, *g_failed;
	struct metric_counter *c_denied;
	uint64_t denied_seen;
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

char *
admin_config_dump(struct proxy *px, struct identity_store *ids, struct registry_holder *rh)
{
	struct registry *r = registry_holder_get(rh);
	json_t *root = json_object(), *reg = json_object(), *wls = json_array(),
	    *svcs = json_array(), *enrolled = json_array(), *idents = json_array(),
	    *failed = json_array();
	struct identity **list = NULL;
	size_t n;
	char buf[64];
	char *out;

	json_object_set_new(root, "role", json_string(px->role));
	json_object_set_new(root, "node", json_string(px->conf->mesh.node));
	json_object_set_new(root, "trust_domain", json_string(px->conf->mesh.trust_domain));
	if (r != NULL) {
		json_object_set_new(reg, "directory", json_string(px->conf->mesh.registry));
		json_object_set_new(reg, "files", json_integer((json_int_t)r->n_files));
		static const char *const plural[REG_NKINDS] = {
			"nodes", "workloads", "services", "waypoints", "policies", "routes",
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
			json_array_append_new(svcs, json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:s?}",
			    "name", s->h.name, "namespace", s->namespace, "hostname", s->hostname,
			    "vips", addr_list(&s->vips), "ports", ports, "endpoints", eps,
			    "waypoint", s->waypoint));
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
	for (struct pworkload *w = px->workloads; w != NULL; w = w->next) {
		struct hbone_pool_stats ps = { 0 };
		json_t *e;

		if (w->pool != NULL)
			hbone_pool_stats(w->pool, &ps);
		e = json_pack(
		    "{s:s,s:s,s:s,s:{s:i,s:i,s:i},s:I,s:{s:I,s:I,s:I,s:I,s:I}}",
		    "name", w->name, "netns", w->netns_path, "identity", w->id->spiffe_id,
		    "ports", "outbound", px->pc->outbound_port, "inbound_plaintext",
		    px->pc->inbound_plaintext_port, "hbone", px->pc->hbone_port,
		    "connections", (json_int_t)w->connections,
		    "pool", "connections", (json_int_t)ps.connections, "streams",
		    (json_int_t)ps.streams, "connections_opened", (json_int_t)ps.connections_opened,
		    "connect_failures", (json_int_t)ps.connect_failures, "streams_retried",
		    (json_int_t)ps.streams_retried);
		if (e != NULL && w->l7 != NULL)
			json_object_set_new(e, "l7", waypoint_stats_json(w->l7)); /* what its requests met */
		json_array_append_new(enrolled, e);
	}
	json_object_set_new(root, "enrolled", enrolled);
	for (const struct pfailed *f = px->failed; f != NULL; f = f->next)
		json_array_append_new(failed, json_pack("{s:s,s:s,s:s}", "name", f->name, "netns",
		    f->netns_path, "reason", f->why));
	json_object_set_new(root, "failed", failed);
	n = identity_store_list(ids, &list);
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
	json_object_set_new(root, "stats", json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
	    "accepted", (json_int_t)px->st.accepted, "active", (json_int_t)px->st.active,
	    "refused_limit", (json_int_t)px->st.refused_limit,
	    "outbound_hbone", (json_int_t)px->st.outbound_hbone,
	    "outbound_passthrough", (json_int_t)px->st.outbound_passthrough,
	    "inbound_hbone", (json_int_t)px->st.inbound_hbone,
	    "inbound_plaintext", (json_int_t)px->st.inbound_plaintext,
	    "denied", (json_int_t)px->st.denied,
	    "connect_failures", (json_int_t)px->st.connect_failures,
	    "inbound_l7", (json_int_t)px->st.inbound_l7,
	    "outbound_l7", (json_int_t)px->st.outbound_l7));
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	registry_unref(r);
	return out;
}

static void
h_config_dump(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;

	resp->status = 200;
	resp->content_type = "application/json";
	resp->body = admin_config_dump(a->px, a->ids, a->reg);
	if (resp->body == NULL)
		resp->status = 500;
}

static void
h_quit(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;

	resp->status = 200;
	resp->body = strdup("draining\n");
	a->ready = false;
	a->quit(a->quit_arg);
}

static void
h_metrics(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;
	char *text = NULL;

	metrics_gauge_set(a->g_active, (int64_t)a->px->st.active);
	metrics_gauge_set(a->g_workloads, (int64_t)a->px->nworkloads);
	metrics_gauge_set(a->g_failed, (int64_t)a->px->nfailed);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	metrics_render(a->metrics, &text);
	resp->body = text;
}

static void
h_ready(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;
	bool ok = a->ready && !a->px->draining && a->px->nfailed == 0;
	char *body = NULL;
	size_t len = 0;
	FILE *fp;

	resp->status = ok ? 200 : 503;
	if (ok || !a->ready || a->px->draining || (fp = open_memstream(&body, &len)) == NULL) {
		resp->body = strdup(ok ? "ready\n" : "not ready\n");
		return;
	}
	/* A workload it holds but cannot serve: its traffic is refused, so say which and why. */
	fprintf(fp, "not ready: %zu recorded workloads not served\n", a->px->nfailed);
	for (const struct pfailed *f = a->px->failed; f != NULL; f = f->next)
		fprintf(fp, "workload %s (netns %s): %s\n", f->name, f->netns_path, f->why);
	fclose(fp);
	resp->body = body;
}

static const struct http_route admin_routes[] = {
	{ "GET", "/config_dump", h_config_dump },
	{ "GET", "/logging", http_handle_logging },
	{ "POST", "/logging", http_handle_logging },
	{ "POST", "/quitquitquit", h_quit },
	{ "GET", "/healthz/ready", h_ready },
	{ NULL, NULL, NULL },
};
static const struct http_route metrics_routes[] = {
	{ "GET", "/metrics", h_metrics },
	{ "GET", "/stats/prometheus", h_metrics },
	{ NULL, NULL, NULL },
};
static const struct http_route ready_routes[] = {
	{ "GET", "/healthz/ready", h_ready },
	{ NULL, NULL, NULL },
};

int
admin_start(uv_loop_t *loop, const struct amesh_conf *conf, const struct conf_proxy *pc,
    struct proxy *px, struct identity_store *ids, struct registry_holder *reg,
    struct metrics *metrics, void (*quit)(void *arg), void *quit_arg, struct admin **out)
{
	const struct {
		const struct sockaddr_storage *addr;
		const struct http_route *routes;
		const char *what;
	} l[3] = {
		{ &pc->admin_address, admin_routes, "admin" },
		{ &pc->metrics_address, metrics_routes, "metrics" },
		{ &pc->readiness_address, ready_routes, "readiness" },
	};
	struct admin *a = calloc(1, sizeof(*a));
	char buf[80];

	*out = NULL;
	if (a == NULL)
		return -1;
	a->px = px;
	a->ids = ids;
	a->reg = reg;
	a->metrics = metrics;
	a->quit = quit;
	a->quit_arg = quit_arg;
	a->g_active = metrics_gauge(metrics, "amesh_proxy_connections_active",
	    "Relayed connections open now.");
	a->g_workloads = metrics_gauge(metrics, "amesh_proxy_workloads_enrolled",
	    "Workloads enrolled in this proxy.");
	a->g_failed = metrics_gauge(metrics, "amesh_proxy_workloads_failed",
	    "Workloads recorded for this proxy that it cannot serve (their traffic is refused).");
	for (int i = 0; i < 3; i++) {
		int r = http_server_listen(loop, (const struct sockaddr *)l[i].addr, l[i].routes, a,
		    &a->srv[i]);

		if (r != 0) {
			log_error("%s: cannot listen on %s (%s): %s", px->role,
			    sockaddr_str(l[i].addr, buf, sizeof(buf)), l[i].what, uv_strerror(r));
			for (int j = 0; j < i; j++)
				http_server_close(a->srv[j], NULL, NULL);
			a->srv[0] = a->srv[1] = a->srv[2] = NULL;
			*out = a; /* freed by the caller after the loop ran the closes */
			return r;
		}
		log_info("%s: %s on %s", px->role, l[i].what,
		    sockaddr_str(l[i].addr, buf, sizeof(buf)));
	}
	*out = a;
	return 0;
}

void
admin_set_ready(struct admin *a, bool ready)
{
	a->ready = ready;
}

void
admin_stop(struct admin *a)
{
	if (a == NULL)
		return;
	a->ready = false;
	for (int i = 0; i < 3; i++) {
		if (a->srv[i] != NULL)
			http_server_close(a->srv[i], NULL, NULL);
		a->srv[i] = NULL;
	}
}

void
admin_free(struct admin *a)
{
	free(a);
}
