/* SPDX-License-Identifier: Apache-2.0 */
/* The registry feed from etcd (feed.h): a watch thread that hands whole snapshots to the loop. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/etcdurl.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "etcd/client.h"
#include "etcd/feed.h"
#include "etcd/kv.h"
#include "etcd/regstore.h"

#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 5000
/* Events that arrive this close together are validated as one revision. */
#define COALESCE_MS 2
/* The watch thread looks at kicks and stops at least this often. */
#define WAKE_MS 1000

enum feed_ev_kind {
	FEED_APPLY,   /* a good revision: swap it in */
	FEED_REFUSE,  /* a revision that failed validation: log it, keep the snapshot */
	FEED_UP,      /* etcd answers again */
	FEED_DOWN,    /* etcd does not answer: why */
	FEED_RECONNECT, /* the watch was lost and is being reopened */
	FEED_CONFIRM, /* etcd holds the files in force (a start from the cache is over) */
};

struct feed_ev {
	struct feed_ev *next;
	enum feed_ev_kind kind;
	struct registry *fresh;
	int64_t revision;
	int64_t origin_ms;   /* wall clock ms the change started from (push time or event arrival) */
	bool from_push;
	char **msgs;
	size_t nmsgs;
	char why[512];
};

struct etcd_feed {
	struct etcd_feed_cfg cfg;
	struct etcd_url url;
	struct etcd_client *client;
	const char *cache;       /* NULL: none */
	char *source;
	uv_async_t async;
	pthread_t thread;
	bool started, stopping;

	pthread_mutex_t mu;      /* the queue */
	struct feed_ev *head, *tail;
	int kick;                /* atomic: reload whole */

	/* The thread's own. */
	struct etcd_snapshot *last; /* the last revision seen, good or refused */
	int64_t watch_from;
	bool need_full, thread_up;

	/* The loop's own. */
	int64_t applied_rev, refused_rev;
	int64_t applied_at_ms;   /* wall clock */
	bool from_cache, up;
	int64_t down_since_ms;
	char last_error[512];
	struct metric_gauge *m_rev, *m_up, *m_applied_at;
	struct metric_counter *m_fail, *m_reconnect;
	struct metric_histogram *m_latency;
};

static int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
post(struct etcd_feed *f, struct feed_ev *ev)
{
	pthread_mutex_lock(&f->mu);
	if (f->tail != NULL)
		f->tail->next = ev;
	else
		f->head = ev;
	f->tail = ev;
	pthread_mutex_unlock(&f->mu);
	uv_async_send(&f->async);
}

static void
ev_free(struct feed_ev *ev)
{
	registry_unref(ev->fresh);
	for (size_t i = 0; i < ev->nmsgs; i++)
		free(ev->msgs[i]);
	free(ev->msgs);
	free(ev);
}

static void
post_status(struct etcd_feed *f, enum feed_ev_kind kind, const char *why)
{
	struct feed_ev *ev = xcalloc(1, sizeof(*ev));

	ev->kind = kind;
	snprintf(ev->why, sizeof(ev->why), "%s", why != NULL ? why : "");
	post(f, ev);
}

/* Thread: parses and validates snapshot s (taken over) and posts the result. */
static void
process(struct etcd_feed *f, struct etcd_snapshot *s, int64_t seen_ms)
{
	struct feed_ev *ev;
	struct diag d;
	char why[512];
	bool good;

	if (f->last != NULL && etcd_snapshot_same(f->last, s)) {
		/* Another key of the store changed, or the same files were pushed again. */
		etcd_snapshot_free(f->last);
		f->last = s;
		post_status(f, FEED_CONFIRM, NULL);
		return;
	}
	ev = xcalloc(1, sizeof(*ev));
	ev->revision = s->revision;
	/* A push records its time in PREFIX/meta, in the same transaction as the files. */
	ev->from_push = s->meta_revision == s->revision && s->pushed_at_ms > 0;
	ev->origin_ms = ev->from_push ? s->pushed_at_ms : seen_ms;
	diag_init(&d);
	if (etcd_snapshot_build(s, &ev->fresh, &d) == 0) {
		ev->kind = FEED_APPLY;
	} else {
		ev->kind = FEED_REFUSE;
		ev->nmsgs = d.n;
		ev->msgs = xcalloc(d.n + 1, sizeof(char *));
		for (size_t i = 0; i < d.n; i++)
			ev->msgs[i] = xstrdup(d.msg[i]);
	}
	diag_clear(&d);
	etcd_snapshot_free(f->last);
	f->last = s;
	good = ev->kind == FEED_APPLY;
	post(f, ev);
	/* After the swap is under way: the fsync does not delay it. */
	if (good && f->cache != NULL && etcd_snapshot_save(s, f->source, f->cache, why,
	    sizeof(why)) != 0)
		log_warn("%s: registry cache: %s", f->cfg.role, why);
}

static void
set_up(struct etcd_feed *f, bool up, const char *why)
{
	if (up == f->thread_up && up)
		return;
	f->thread_up = up;
	post_status(f, up ? FEED_UP : FEED_DOWN, why);
}

/* Thread: reads revision rev (0: latest) and processes it. 0 or the read's error. */
static int
load(struct etcd_feed *f, int64_t rev, int64_t seen_ms)
{
	struct etcd_snapshot *s;
	char why[1024];
	int r = etcd_snapshot_read(f->client, f->url.prefix, rev, &s, why, sizeof(why));

	/* A deletion leaves no mod_revision behind: the event's revision names the change. */
	if (r == 0 && rev > s->revision)
		s->revision = rev;
	if (r == ETCD_ERR_COMPACTED && rev > 0)
		r = etcd_snapshot_read(f->client, f->url.prefix, 0, &s, why, sizeof(why));
	if (r == -ECANCELED)
		return r;
	if (r != 0) {
		set_up(f, false, why);
		return r;
	}
	set_up(f, true, NULL);
	if (s->read_revision + 1 > f->watch_from)
		f->watch_from = s->read_revision + 1;
	process(f, s, seen_ms);
	return 0;
}

/* Thread: applies the events of msg to *s (NULL: to f->last), which it replaces. 0 or a code. */
static int
apply_events(struct etcd_feed *f, const json_t *msg, struct etcd_snapshot **s, char *why,
    size_t whylen)
{
	struct etcd_event *ev;
	struct etcd_snapshot *next;
	size_t n;
	int r = etcd_watch_events(msg, ETCD_REG_MAX_VALUE, &ev, &n, why, whylen);

	if (r == 0 && n > 0) {
		r = etcd_snapshot_apply(*s != NULL ? *s : f->last, f->url.prefix, ev, n, &next, why,
		    whylen);
		if (r == 0) {
			etcd_snapshot_free(*s);
			*s = next;
		}
	}
	etcd_events_free(ev, n);
	return r;
}

/*
 * Thread: one watch connection, until it fails or a whole reload is due. Each change is the
 * snapshot held with the change's events applied: the whole prefix at the change's revision,
 * since etcd delivers a revision's events together and the watch starts right after the
 * snapshot. Should the events not apply, the prefix is read whole at that revision instead.
 */
static int
watch(struct etcd_feed *f)
{
	char *key = xasprintf("%s/", f->url.prefix), *end = etcd_prefix_end(key);
	char *req = etcd_watch_request(key, end, f->watch_from);
	struct etcd_stream *st = NULL;
	char why[1024], awhy[512];
	int r;

	r = etcd_stream_open(f->client, "/v3/watch", req, &st, why, sizeof(why));
	if (r != 0) {
		if (r != -ECANCELED)
			set_up(f, false, why);
		goto out;
	}
	for (;;) {
		struct etcd_watch_msg m;
		struct etcd_snapshot *s = NULL;
		json_t *msg;
		int64_t rev, seen;
		int ar;
		bool lost = false;

		if (__atomic_load_n(&f->kick, __ATOMIC_ACQUIRE)) {
			r = 0; /* SIGHUP: the caller reloads whole */
			break;
		}
		r = etcd_stream_next(st, WAKE_MS, &msg, why, sizeof(why));
		if (r == -ETIMEDOUT)
			continue;
		if (r != 0)
			break;
		r = etcd_watch_parse(msg, &m, why, sizeof(why));
		if (r == 0 && m.created) {
			set_up(f, true, NULL);
			log_debug("%s: registry watch on %s from revision %lld", f->cfg.role,
			    etcd_client_endpoint(f->client), (long long)f->watch_from);
		}
		if (r == 0 && m.compact_revision > 0) {
			log_info("%s: registry %s: etcd compacted past revision %lld: loading it whole",
			    f->cfg.role, f->source, (long long)f->watch_from);
			f->need_full = true;
		} else if (r == 0 && m.canceled) {
			snprintf(why, sizeof(why), "etcd cancelled the watch: %s", m.reason);
			r = AMESH_ERR_INVALID;
		}
		if (r != 0 || m.canceled || m.nevents == 0) {
			json_decref(msg);
			if (r != 0 || m.canceled)
				break;
			continue;
		}
		seen = wall_ms();
		rev = m.event_revision;
		awhy[0] = '\0';
		ar = f->last != NULL ? apply_events(f, msg, &s, awhy, sizeof(awhy)) : AMESH_ERR_NOTFOUND;
		json_decref(msg);
		/* What else is already there joins this change: a burst is validated once. */
		while ((r = etcd_stream_next(st, COALESCE_MS, &msg, why, sizeof(why))) == 0) {
			if (etcd_watch_parse(msg, &m, why, sizeof(why)) != 0 || m.canceled) {
				lost = true; /* read whole below, then watch again */
				ar = AMESH_ERR_INVALID;
			} else if (m.nevents > 0) {
				if (m.event_revision > rev)
					rev = m.event_revision;
				if (ar == 0)
					ar = apply_events(f, msg, &s, awhy, sizeof(awhy));
			}
			json_decref(msg);
			if (lost)
				break;
		}
		if (ar == 0 && s != NULL) {
			if (s->read_revision + 1 > f->watch_from)
				f->watch_from = s->read_revision + 1;
			process(f, s, seen);
		} else {
			if (awhy[0] != '\0')
				log_warn("%s: registry %s: revision %lld: %s; reading it whole",
				    f->cfg.role, f->source, (long long)rev, awhy);
			etcd_snapshot_free(s);
			if (load(f, rev, seen) != 0 && r == -ETIMEDOUT)
				r = AMESH_ERR_NOTFOUND;
		}
		if (lost) {
			r = 0;
			break;
		}
		if (r != -ETIMEDOUT)
			break; /* the stream failed while coalescing */
	}
out:
	if (r != 0 && r != -ECANCELED && r != -ETIMEDOUT) {
		log_warn("%s: registry %s: watch lost (%s): resuming from revision %lld",
		    f->cfg.role, f->source, why, (long long)f->watch_from);
		/* That member may answer and still not serve (no leader): try another first. */
		if (st != NULL)
			etcd_client_rotate(f->client);
	}
	etcd_stream_close(st);
	free(req);
	free(key);
	free(end);
	return r;
}

static void *
feed_thread(void *arg)
{
	struct etcd_feed *f = arg;
	uint64_t backoff = BACKOFF_MIN_MS;

	while (!__atomic_load_n(&f->stopping, __ATOMIC_ACQUIRE)) {
		int r = 0;

		if (__atomic_exchange_n(&f->kick, 0, __ATOMIC_ACQ_REL))
			f->need_full = true;
		if (f->need_full) {
			r = load(f, 0, wall_ms());
			if (r == 0)
				f->need_full = false;
		}
		if (r == 0)
			r = watch(f);
		if (r == -ECANCELED)
			break;
		if (r == 0 && f->thread_up) {
			backoff = BACKOFF_MIN_MS;
			continue; /* a whole reload is due, or a kick */
		}
		post_status(f, FEED_RECONNECT, NULL);
		{
			/* Jitter (0.8 to 1.2) so that a fleet does not reconnect in step. */
			uint64_t j = backoff * (800 + (uint64_t)(wall_ms() % 400)) / 1000;

			if (etcd_client_sleep(f->client, j) != 0)
				break;
		}
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
		if (f->thread_up)
			backoff = BACKOFF_MIN_MS;
	}
	return NULL;
}

static void
log_refused(const struct etcd_feed *f, int64_t rev, char *const *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		log_error("%s: registry %s: revision %lld: %s", f->cfg.role, f->source, (long long)rev,
		    msgs[i]);
}

/* Loop: what the thread posted. */
static void
on_async(uv_async_t *h)
{
	struct etcd_feed *f = h->data;
	struct feed_ev *ev, *next;

	pthread_mutex_lock(&f->mu);
	ev = f->head;
	f->head = f->tail = NULL;
	pthread_mutex_unlock(&f->mu);
	for (; ev != NULL; ev = next) {
		struct etcd_feed_event out = { .revision = ev->revision };
		char what[128] = "";
		int64_t now = wall_ms();

		next = ev->next;
		switch (ev->kind) {
		case FEED_APPLY:
			if (f->cfg.describe != NULL)
				f->cfg.describe(ev->fresh, what, sizeof(what));
			out.applied = true;
			out.r = ev->fresh;
			out.latency_ms = (double)(now - ev->origin_ms);
			out.from_push = ev->from_push;
			registry_holder_set(f->cfg.holder, registry_ref(ev->fresh));
			f->applied_rev = ev->revision;
			f->applied_at_ms = now;
			f->from_cache = false;
			metrics_gauge_set(f->m_rev, ev->revision);
			metrics_gauge_set(f->m_applied_at, now / 1000);
			metrics_histogram_observe(f->m_latency, out.latency_ms / 1000.0);
			log_info("%s: registry %s: revision %lld applied (%s), %.0f ms after its %s",
			    f->cfg.role, f->source, (long long)ev->revision, what, out.latency_ms,
			    ev->from_push ? "push" : "watch event");
			break;
		case FEED_REFUSE:
			out.msgs = (const char *const *)ev->msgs;
			out.nmsgs = ev->nmsgs;
			f->refused_rev = ev->revision;
			metrics_counter_add(f->m_fail, 1);
			log_refused(f, ev->revision, ev->msgs, ev->nmsgs);
			log_error("%s: registry %s: revision %lld refused; revision %lld stays in force",
			    f->cfg.role, f->source, (long long)ev->revision, (long long)f->applied_rev);
			break;
		case FEED_UP:
			if (!f->up)
				log_info("%s: registry %s: etcd answers (%s)", f->cfg.role, f->source,
				    etcd_client_endpoint(f->client));
			f->up = true;
			f->last_error[0] = '\0';
			metrics_gauge_set(f->m_up, 1);
			break;
		case FEED_DOWN:
			if (f->up || f->down_since_ms == 0) {
				f->down_since_ms = now;
				log_warn("%s: registry %s: etcd unreachable (%s); serving revision %lld, "
				    "applied %lld s ago", f->cfg.role, f->source, ev->why,
				    (long long)f->applied_rev, (long long)(now - f->applied_at_ms) / 1000);
			}
			f->up = false;
			snprintf(f->last_error, sizeof(f->last_error), "%s", ev->why);
			metrics_gauge_set(f->m_up, 0);
			break;
		case FEED_RECONNECT:
			metrics_counter_add(f->m_reconnect, 1);
			break;
		case FEED_CONFIRM:
			if (f->from_cache && f->refused_rev <= f->applied_rev)
				log_info("%s: registry %s: etcd holds revision %lld as cached",
				    f->cfg.role, f->source, (long long)f->applied_rev);
			if (f->refused_rev <= f->applied_rev)
				f->from_cache = false;
			break;
		}
		if (ev->kind == FEED_UP)
			f->down_since_ms = 0;
		if ((ev->kind == FEED_APPLY || ev->kind == FEED_REFUSE) && f->cfg.on_event != NULL)
			f->cfg.on_event(f->cfg.arg, &out);
		ev_free(ev);
	}
}

static void
print_refused(struct diag *d, const char *source, int64_t rev, struct diag *msgs)
{
	for (size_t i = 0; i < msgs->n; i++)
		diag_add(d, source, 0, "revision %lld: %s", (long long)rev, msgs->msg[i]);
}

int
etcd_feed_new(const struct etcd_feed_cfg *cfg, struct etcd_feed **out, struct diag *d)
{
	struct etcd_feed *f = xcalloc(1, sizeof(*f));
	const struct amesh_conf *c = cfg->conf;
	struct etcd_snapshot *s = NULL;
	struct registry *r = NULL;
	struct diag pd;
	char why[1024], cwhy[512];
	int rc;

	*out = NULL;
	diag_init(&pd);
	f->cfg = *cfg;
	f->source = xstrdup(c->mesh.registry);
	f->cache = cfg->no_cache ? NULL : c->mesh.registry_cache;
	f->watch_from = 0;
	pthread_mutex_init(&f->mu, NULL);
	if ((rc = etcd_url_parse(c->mesh.registry, &f->url, why, sizeof(why))) != 0) {
		diag_add(d, c->path, conf_line(c, "mesh", "registry"), "[mesh] registry: %s", why);
		goto fail;
	}
	rc = etcd_client_new(&(struct etcd_client_cfg){ .endpoints = f->url.endpoints,
	    .n = f->url.n, .ca = c->mesh.etcd_ca, .cert = c->mesh.etcd_cert, .key = c->mesh.etcd_key,
	    .timeout_ms = c->mesh.etcd_timeout, .mark = cfg->mark }, &f->client, why, sizeof(why));
	if (rc != 0) {
		diag_add(d, c->path, conf_line(c, "mesh", "etcd_ca"), "etcd client: %s", why);
		goto fail;
	}
	rc = etcd_snapshot_read(f->client, f->url.prefix, 0, &s, why, sizeof(why));
	if (rc == 0) {
		f->up = f->thread_up = true;
		f->watch_from = s->read_revision + 1;
		if (etcd_snapshot_build(s, &r, &pd) == 0) {
			if (f->cache != NULL && etcd_snapshot_save(s, f->source, f->cache, cwhy,
			    sizeof(cwhy)) != 0)
				log_warn("%s: registry cache: %s", cfg->role, cwhy);
			f->applied_rev = s->revision;
			f->last = s;
			s = NULL;
			goto ok;
		}
		/* Refused: the cache may still hold the last good one. */
		f->refused_rev = s->revision;
		f->last = s;
		s = NULL;
		if (f->cache == NULL) {
			print_refused(d, f->source, f->refused_rev, &pd);
			rc = AMESH_ERR_INVALID;
			goto fail;
		}
		log_refused(f, f->refused_rev, pd.msg, pd.n);
		log_error("%s: registry %s: revision %lld refused", cfg->role, f->source,
		    (long long)f->refused_rev);
		snprintf(why, sizeof(why), "revision %lld is invalid", (long long)f->refused_rev);
	} else if (rc == -ECANCELED) {
		goto fail;
	}
	if (f->cache == NULL) {
		diag_add(d, f->source, 0, "etcd: %s", why);
		goto fail;
	}
	rc = etcd_snapshot_load(f->cache, f->source, &s, cwhy, sizeof(cwhy));
	if (rc == 0) {
		diag_clear(&pd);
		diag_init(&pd);
		rc = etcd_snapshot_build(s, &r, &pd);
		if (rc != 0)
			snprintf(cwhy, sizeof(cwhy), "%s: %s", f->cache, diag_first(&pd));
	}
	if (rc != 0) {
		diag_add(d, f->source, 0, "etcd: %s", why);
		diag_add(d, f->source, 0, "and no usable cache of it: %s", cwhy);
		goto fail;
	}
	log_warn("%s: registry %s: %s; serving revision %lld from the cache %s (pushed %s%s)",
	    cfg->role, f->source, why, (long long)s->revision, f->cache,
	    s->pushed_by != NULL ? "by " : "", s->pushed_by != NULL ? s->pushed_by : "at an unknown time");
	f->from_cache = true;
	f->need_full = true;
	f->applied_rev = s->revision;
	if (f->last == NULL) {
		f->last = s;
		s = NULL;
	}
	if (rc == 0 && !f->up)
		snprintf(f->last_error, sizeof(f->last_error), "%.500s", why);
ok:
	etcd_snapshot_free(s);
	diag_clear(&pd);
	registry_holder_set(cfg->holder, r);
	f->applied_at_ms = wall_ms();
	uv_async_init(cfg->loop, &f->async, on_async);
	f->async.data = f;
	*out = f;
	return 0;
fail:
	etcd_snapshot_free(s);
	diag_clear(&pd);
	etcd_snapshot_free(f->last);
	etcd_client_free(f->client);
	etcd_url_free(&f->url);
	pthread_mutex_destroy(&f->mu);
	free(f->source);
	free(f);
	return rc != 0 ? rc : AMESH_ERR_INVALID;
}

int
etcd_feed_start(struct etcd_feed *f, struct metrics *m)
{
	int r;

	if (m != NULL) {
		static const double lat[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
			10, 30, 60 };

		f->m_rev = metrics_gauge(m, "amesh_registry_revision",
		    "The etcd revision of the registry snapshot in force.");
		f->m_applied_at = metrics_gauge(m, "amesh_registry_applied_timestamp_seconds",
		    "When the registry snapshot in force was applied (Unix time).");
		f->m_up = metrics_gauge(m, "amesh_registry_etcd_up",
		    "1 while etcd answers the registry watch, 0 while the last good snapshot is served.");
		f->m_fail = metrics_counter(m, "amesh_registry_load_failures_total",
		    "Registry revisions refused (validation failed).");
		f->m_reconnect = metrics_counter(m, "amesh_registry_watch_reconnects_total",
		    "Times the etcd watch was lost and reopened.");
		f->m_latency = metrics_histogram(m, "amesh_registry_apply_latency_seconds",
		    "From a registry push (PREFIX/meta pushed_at_ms; else the watch event's arrival) "
		    "to its application.", lat, sizeof(lat) / sizeof(lat[0]));
	}
	metrics_gauge_set(f->m_rev, f->applied_rev);
	metrics_gauge_set(f->m_applied_at, f->applied_at_ms / 1000);
	metrics_gauge_set(f->m_up, f->up);
	r = pthread_create(&f->thread, NULL, feed_thread, f);
	if (r != 0)
		return -r;
	f->started = true;
	return 0;
}

void
etcd_feed_set_describe(struct etcd_feed *f,
    void (*describe)(const struct registry *r, char *buf, size_t n))
{
	f->cfg.describe = describe;
}

void
etcd_feed_kick(struct etcd_feed *f)
{
	if (f != NULL)
		__atomic_store_n(&f->kick, 1, __ATOMIC_RELEASE);
}

void
etcd_feed_stop(struct etcd_feed *f)
{
	if (f == NULL || f->stopping)
		return;
	__atomic_store_n(&f->stopping, true, __ATOMIC_RELEASE);
	etcd_client_cancel(f->client);
	if (f->started)
		pthread_join(f->thread, NULL);
	f->started = false;
	uv_close((uv_handle_t *)&f->async, NULL);
}

void
etcd_feed_free(struct etcd_feed *f)
{
	struct feed_ev *ev, *next;

	if (f == NULL)
		return;
	for (ev = f->head; ev != NULL; ev = next) {
		next = ev->next;
		ev_free(ev);
	}
	etcd_snapshot_free(f->last);
	etcd_client_free(f->client);
	etcd_url_free(&f->url);
	pthread_mutex_destroy(&f->mu);
	free(f->source);
	free(f);
}

json_t *
etcd_feed_status(const struct etcd_feed *f)
{
	int64_t now = wall_ms();
	json_t *eps = json_array(), *j;

	for (size_t i = 0; i < f->url.n; i++)
		json_array_append_new(eps, json_string(f->url.endpoints[i]));
	j = json_pack("{s:s,s:s,s:o,s:s,s:I,s:I,s:b,s:b,s:s}", "kind", "etcd", "url", f->source,
	    "endpoints", eps, "prefix", f->url.prefix, "revision", (json_int_t)f->applied_rev,
	    "age_seconds", (json_int_t)((now - f->applied_at_ms) / 1000), "etcd_up", f->up,
	    "from_cache", f->from_cache, "endpoint", etcd_client_endpoint(f->client));
	if (f->refused_rev > f->applied_rev)
		json_object_set_new(j, "refused_revision", json_integer(f->refused_rev));
	if (!f->up) {
		json_object_set_new(j, "error", json_string(f->last_error));
		if (f->down_since_ms > 0)
			json_object_set_new(j, "down_seconds",
			    json_integer((now - f->down_since_ms) / 1000));
	}
	if (f->cache != NULL)
		json_object_set_new(j, "cache", json_string(f->cache));
	return j;
}
