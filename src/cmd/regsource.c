/* SPDX-License-Identifier: Apache-2.0 */
/* A role's registry source, a directory or etcd (cmd.h, struct cmd_registry): wiring only. */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/etcdurl.h"
#include "config/registry.h"
#include "config/regwatch.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/util.h"
#include "etcd/feed.h"
#include "etcd/regstore.h"
#include "net/netns.h"
#include "telemetry/metrics.h"

int
cmd_registry_load(struct cmd_registry *cr, uv_loop_t *loop, const char *role,
    const struct amesh_conf *conf, struct registry_holder *holder, struct diag *d)
{
	*cr = (struct cmd_registry){ .role = role, .loop = loop, .conf = conf, .holder = holder };
	if (!etcd_url_is(conf->mesh.registry)) {
		cr->stamp = regwatch_stamp(conf->mesh.registry); /* before: see cmd_registry_watch */
		return registry_holder_reload(holder, conf->mesh.registry, d);
	}
	/* A sidecar's own connections must pass the rules of the namespace it runs in. */
	return etcd_feed_new(&(struct etcd_feed_cfg){ .loop = loop, .conf = conf, .holder = holder,
	    .role = role, .mark = strcmp(role, "sidecar") == 0 ? AMESH_MARK : 0 }, &cr->feed, d);
}

void
cmd_registry_watch(struct cmd_registry *cr, struct metrics *m,
    void (*describe)(const struct registry *r, char *buf, size_t n))
{
	if (cr->feed != NULL) {
		/* The description is the feed's to call: set it before the thread starts. */
		etcd_feed_set_describe(cr->feed, describe);
		if (etcd_feed_start(cr->feed, m) != 0)
			log_error("%s: cannot start the registry watch of %s; reload with SIGHUP",
			    cr->role, cr->conf->mesh.registry);
		return;
	}
	cr->dir = xcalloc(1, sizeof(*cr->dir));
	if (regwatch_start(cr->dir, cr->loop, cr->conf->mesh.registry, cr->holder, describe) != 0)
		log_warn("%s: cannot watch %s; reload with SIGHUP", cr->role, cr->conf->mesh.registry);
	/* Written after the first load and before the watch began (a role started as its registry
	 * is edited): no event comes for it, so reload now. */
	else if (regwatch_stamp(cr->conf->mesh.registry) != cr->stamp) {
		log_info("%s: registry %s changed while starting: reloading", cr->role,
		    cr->conf->mesh.registry);
		regwatch_trigger(cr->dir, 0);
	}
}

void
cmd_registry_reload(struct cmd_registry *cr)
{
	if (cr->feed != NULL)
		etcd_feed_kick(cr->feed);
	else if (cr->dir != NULL)
		regwatch_trigger(cr->dir, 0);
}

void
cmd_registry_stop(struct cmd_registry *cr)
{
	if (cr->feed != NULL)
		etcd_feed_stop(cr->feed);
	else if (cr->dir != NULL)
		regwatch_stop(cr->dir);
}

void
cmd_registry_free(struct cmd_registry *cr)
{
	etcd_feed_free(cr->feed);
	cr->feed = NULL;
	free(cr->dir);
	cr->dir = NULL;
}

char *
cmd_registry_dump(const struct cmd_registry *cr, char *dump)
{
	json_t *root;
	char *out;

	if (cr->feed == NULL || dump == NULL)
		return dump;
	root = json_loads(dump, 0, NULL);
	if (root == NULL)
		return dump;
	json_object_set_new(root, "registry_source", etcd_feed_status(cr->feed));
	out = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(root);
	if (out == NULL)
		return dump;
	free(dump);
	return out;
}

int
cmd_registry_read_once(const struct amesh_conf *conf, struct registry **out, char *what,
    size_t whatlen, struct diag *d)
{
	return registry_source_read(conf, false, out, what, whatlen, d);
}
