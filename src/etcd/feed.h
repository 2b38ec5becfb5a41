/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A role's registry from etcd ([mesh] registry = etcd://...): loaded whole at one revision at
 * startup, then watched. Each change gives the whole prefix at the new revision (the snapshot
 * held with the change's events applied, or a whole read after a reconnect or a compaction),
 * which is parsed and validated whole (the same checks as a directory) and swapped into the
 * holder; a revision that fails is refused with its messages and the snapshot in force stays.
 *
 * The etcd client blocks, so it runs on the feed's own thread and never on the loop; the thread
 * hands each result to the loop (uv_async), where the holder is swapped, the log written and the
 * metrics counted. Lost connections resume the watch from the last revision on the next
 * endpoint, with backoff from 200 ms doubling to 5 s; a compacted revision reloads whole.
 *
 * etcd unreachable at startup: the last good snapshot from [mesh] registry_cache is used, with a
 * warning; it is rewritten (atomically) after every good load. etcd lost later: the snapshot in
 * force stays and the role says so (log, amesh_registry_etcd_up, /config_dump's registry_source).
 */
#ifndef AMESH_ETCD_FEED_H
#define AMESH_ETCD_FEED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/conf.h"
#include "config/registry.h"
#include "core/diag.h"
#include "telemetry/metrics.h"

/* What the loop learns of each revision (for amesh registry watch). */
struct etcd_feed_event {
	bool applied;              /* false: refused */
	int64_t revision;
	const struct registry *r;  /* applied: the new snapshot */
	const char *const *msgs;   /* refused: the messages, "KEY:LINE: message" */
	size_t nmsgs;
	double latency_ms;         /* from the push (or the watch event) to now */
	bool from_push;            /* latency_ms counts from PREFIX/meta's pushed_at_ms */
};

struct etcd_feed_cfg {
	uv_loop_t *loop;
	const struct amesh_conf *conf; /* mesh.registry (the etcd:// URL), etcd_*, registry_cache */
	struct registry_holder *holder;
	const char *role;              /* "ztunnel"... for the log */
	void (*describe)(const struct registry *r, char *buf, size_t n);
	void (*on_event)(void *arg, const struct etcd_feed_event *ev); /* NULL: none */
	void *arg;
	bool no_cache;                 /* neither read nor write registry_cache (the CLI) */
	uint32_t mark;                 /* SO_MARK of its connections (a sidecar: AMESH_MARK) */
};

struct etcd_feed;

/*
 * Loads the registry (from etcd, else from the cache) into cfg->holder, blocking: call it before
 * the loop runs. Returns 0 with *out; on failure d says why (the revision's messages, or why
 * neither etcd nor the cache gave a registry).
 */
int etcd_feed_new(const struct etcd_feed_cfg *cfg, struct etcd_feed **out, struct diag *d);
/* Registers the metrics in m (NULL: none) and starts the watch thread. 0 or a negative code. */
int etcd_feed_start(struct etcd_feed *f, struct metrics *m);
/* What the log says of an applied snapshot; before etcd_feed_start. */
void etcd_feed_set_describe(struct etcd_feed *f,
    void (*describe)(const struct registry *r, char *buf, size_t n));
/* Reload whole now (SIGHUP). */
void etcd_feed_kick(struct etcd_feed *f);
/* Stops the thread (joins it: it wakes at once) and closes the loop handle. */
void etcd_feed_stop(struct etcd_feed *f);
/* After the loop ended. Accepts NULL. */
void etcd_feed_free(struct etcd_feed *f);
/* The source's state for /config_dump (a new object): revision, its age, etcd up or down. */
json_t *etcd_feed_status(const struct etcd_feed *f);

#endif
