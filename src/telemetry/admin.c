/* SPDX-License-Identifier: Apache-2.0 */
/* The admin, metrics and readiness endpoints of every role (admin.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "telemetry/admin.h"
#include "telemetry/http.h"
#include "telemetry/metrics.h"

struct admin {
	struct admin_cfg cfg;
	bool ready;
	struct http_server *srv[3]; /* admin, metrics, readiness */
};

static void
h_config_dump(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;

	resp->status = 200;
	resp->content_type = "application/json";
	resp->body = a->cfg.ops->config_dump(a->cfg.arg);
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
	a->cfg.ops->quit(a->cfg.arg);
}

static void
h_metrics(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;
	char *text = NULL;

	if (a->cfg.ops->refresh_metrics != NULL)
		a->cfg.ops->refresh_metrics(a->cfg.arg);
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4";
	metrics_render(a->cfg.metrics, &text);
	resp->body = text;
}

static void
h_ready(struct http_req *req, struct http_resp *resp, void *user)
{
	struct admin *a = user;
	bool ok = a->ready;
	char *why = NULL;
	size_t len = 0;
	FILE *fp = NULL;

	if (ok && a->cfg.ops->ready != NULL) {
		fp = open_memstream(&why, &len);
		ok = a->cfg.ops->ready(a->cfg.arg, fp);
		if (fp != NULL)
			fclose(fp);
	}
	resp->status = ok ? 200 : 503;
	if (!ok && why != NULL && len > 0) {
		resp->body = why; /* the role's reasons */
		return;
	}
	free(why);
	resp->body = strdup(ok ? "ready\n" : "not ready\n");
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
admin_start(uv_loop_t *loop, const struct admin_cfg *cfg, struct admin **out)
{
	const struct {
		const struct sockaddr_storage *addr;
		const struct http_route *routes;
		const char *what;
	} l[3] = {
		{ cfg->admin_address, admin_routes, "admin" },
		{ cfg->metrics_address, metrics_routes, "metrics" },
		{ cfg->readiness_address, ready_routes, "readiness" },
	};
	struct admin *a = xcalloc(1, sizeof(*a));
	char buf[80];

	a->cfg = *cfg;
	for (int i = 0; i < 3; i++) {
		int r = http_server_listen(loop, (const struct sockaddr *)l[i].addr, l[i].routes, a,
		    &a->srv[i]);

		if (r != 0) {
			log_error("%s: cannot listen on %s (%s): %s", cfg->role,
			    sockaddr_str(l[i].addr, buf, sizeof(buf)), l[i].what, amesh_strerror(r));
			for (int j = 0; j < i; j++)
				http_server_close(a->srv[j], NULL, NULL);
			a->srv[0] = a->srv[1] = a->srv[2] = NULL;
			*out = a; /* freed by the caller after the loop ran the closes */
			return r;
		}
		log_info("%s: %s on %s", cfg->role, l[i].what,
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
