/* SPDX-License-Identifier: Apache-2.0 */
/* Metrics store: label sets in a growing hash table, capped; Prometheus text rendering. */
#include "config.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "telemetry/metrics.h"

/* Envoy's default histogram buckets, which Istio uses for its three histograms. */
static const double buckets[] = { 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
	30000, 60000, 300000, 600000, 1800000, 3600000 };
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

enum set_kind { SET_TCP, SET_HTTP, SET_NKINDS };

#define TCP_NLABELS 11
#define HTTP_NLABELS 12
#define MAX_NLABELS 12

static const char *const tcp_label_names[TCP_NLABELS] = { "reporter", "source_workload",
	"source_workload_namespace", "source_principal", "destination_workload",
	"destination_workload_namespace", "destination_service", "destination_principal",
	"request_protocol", "response_flags", "connection_security_policy" };
static const char *const http_label_names[HTTP_NLABELS] = { "reporter", "source_workload",
	"source_workload_namespace", "source_principal", "destination_workload",
	"destination_workload_namespace", "destination_service", "destination_principal",
	"request_protocol", "response_code", "response_flags", "connection_security_policy" };

struct hist {
	uint64_t count[NBUCKETS + 1]; /* per bucket, not cumulative; the last is +Inf */
	uint64_t n;
	double sum;
};

/* One label set and the values of every metric of its kind. */
struct series {
	struct series *hnext; /* hash chain */
	struct series *next;  /* creation order within the kind */
	uint64_t hash;
	size_t keylen;
	const char *val[MAX_NLABELS]; /* point into key */
	union {
		struct {
			uint64_t opened, closed, sent, received;
		} tcp;
		struct {
			uint64_t requests;
			struct hist duration, req_bytes, resp_bytes;
		} http;
	} u;
	char key[]; /* the values, each NUL-terminated, after an enum set_kind byte */
};

enum proc_type { PROC_COUNTER, PROC_GAUGE, PROC_HISTOGRAM };

/* A process metric; counters, gauges and histograms share it and are told apart by type. */
struct proc_metric {
	struct proc_metric *next;
	struct metrics *m; /* its store, whose lock guards it */
	enum proc_type type;
	char *name, *help;
	char *label, *lvalue; /* one label (both NULL: none); one entry per value, kept adjacent */
	uint64_t counter;
	int64_t gauge;
	/* A histogram: its upper bounds, the count per bucket (not cumulative; the last +Inf). */
	double hbound[METRICS_HIST_MAX_BUCKETS];
	uint64_t hcount[METRICS_HIST_MAX_BUCKETS + 1];
	size_t hn;
	uint64_t hobs;
	double hsum;
};

struct metric_histogram {
	struct proc_metric p;
};

struct metric_counter {
	struct proc_metric p;
};

struct metric_gauge {
	struct proc_metric p;
};

static void proc_free(struct proc_metric *p);

struct metrics {
	struct series **tab; /* chains; nbuckets is a power of two */
	size_t nbuckets, nseries, max_series;
	struct series *head[SET_NKINDS], *tail[SET_NKINDS];
	struct proc_metric *procs, *procs_tail;
	uint64_t dropped;
	/* Guards everything above and every value: events come from every worker's thread
	 * (core/worker.h), each a few additions, so one uncontended lock is cheap enough. */
	pthread_mutex_t mu;
};

#define LOCK(m) pthread_mutex_lock(&(m)->mu)
#define UNLOCK(m) pthread_mutex_unlock(&(m)->mu)

int
metrics_new(struct metrics **out)
{
	struct metrics *m;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return AMESH_ERR_NOMEM;
	m->nbuckets = 64;
	m->tab = calloc(m->nbuckets, sizeof(*m->tab));
	if (m->tab == NULL) {
		free(m);
		return AMESH_ERR_NOMEM;
	}
	m->max_series = METRICS_MAX_SERIES;
	pthread_mutex_init(&m->mu, NULL);
	*out = m;
	return 0;
}

void
metrics_free(struct metrics *m)
{
	if (m == NULL)
		return;
	for (int k = 0; k < SET_NKINDS; k++)
		for (struct series *s = m->head[k], *next; s != NULL; s = next) {
			next = s->next;
			free(s);
		}
	for (struct proc_metric *p = m->procs, *next; p != NULL; p = next) {
		next = p->next;
		proc_free(p);
	}
	free(m->tab);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

void
metrics_set_max_series(struct metrics *m, size_t max)
{
	LOCK(m);
	m->max_series = max;
	UNLOCK(m);
}

size_t
metrics_series(const struct metrics *m)
{
	size_t n;

	LOCK((struct metrics *)m);
	n = m->nseries;
	UNLOCK((struct metrics *)m);
	return n;
}

uint64_t
metrics_dropped(const struct metrics *m)
{
	uint64_t n;

	LOCK((struct metrics *)m);
	n = m->dropped;
	UNLOCK((struct metrics *)m);
	return n;
}

/* FNV-1a. */
static uint64_t
hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Doubles the chain table; on failure keeps the old one (longer chains, still correct). */
static void
grow(struct metrics *m)
{
	size_t n = m->nbuckets * 2;
	struct series **tab = calloc(n, sizeof(*tab));

	if (tab == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct series *s = m->tab[i], *next; s != NULL; s = next) {
			next = s->hnext;
			s->hnext = tab[s->hash & (n - 1)];
			tab[s->hash & (n - 1)] = s;
		}
	free(m->tab);
	m->tab = tab;
	m->nbuckets = n;
}

/* Appends one label value to the key: "unknown" (or dflt) for NULL or "", cut at the limit. */
static size_t
key_add(char *key, size_t off, const char *v, const char *dflt)
{
	size_t n;

	if (v == NULL || v[0] == '\0')
		v = dflt;
	n = strnlen(v, METRICS_LABEL_MAX);
	memcpy(key + off, v, n);
	key[off + n] = '\0';
	return off + n + 1;
}

/*
 * Finds or creates the label set of vals; NULL when the cap is reached or memory is short.
 * vals[flags] is response_flags, whose empty value is "-".
 */
static struct series *
lookup(struct metrics *m, enum set_kind kind, const char *const *vals, size_t nvals, size_t flags)
{
	char key[1 + MAX_NLABELS * (METRICS_LABEL_MAX + 1)];
	size_t len = 0, off;
	uint64_t h;
	struct series *s;

	key[len++] = (char)kind;
	for (size_t i = 0; i < nvals; i++)
		len = key_add(key, len, vals[i], i == flags ? "-" : "unknown");
	h = hash_bytes(key, len);
	for (s = m->tab[h & (m->nbuckets - 1)]; s != NULL; s = s->hnext)
		if (s->hash == h && s->keylen == len && memcmp(s->key, key, len) == 0)
			return s;
	if (m->nseries >= m->max_series) {
		m->dropped++;
		return NULL;
	}
	s = calloc(1, sizeof(*s) + len);
	if (s == NULL) {
		m->dropped++;
		return NULL;
	}
	s->hash = h;
	s->keylen = len;
	memcpy(s->key, key, len);
	off = 1;
	for (size_t i = 0; i < nvals; i++) {
		s->val[i] = s->key + off;
		off += strlen(s->key + off) + 1;
	}
	s->hnext = m->tab[h & (m->nbuckets - 1)];
	m->tab[h & (m->nbuckets - 1)] = s;
	if (m->tail[kind] != NULL)
		m->tail[kind]->next = s;
	else
		m->head[kind] = s;
	m->tail[kind] = s;
	if (++m->nseries > m->nbuckets)
		grow(m);
	return s;
}

/* The TCP label values in tcp_label_names order. */
static struct series *
tcp_series(struct metrics *m, const struct tcp_labels *l)
{
	const char *v[TCP_NLABELS] = { l->reporter, l->source_workload, l->source_workload_namespace,
		l->source_principal, l->destination_workload, l->destination_workload_namespace,
		l->destination_service, l->destination_principal, "tcp", l->response_flags,
		l->connection_security_policy };

	return lookup(m, SET_TCP, v, TCP_NLABELS, 9);
}

void
metrics_tcp_opened(struct metrics *m, const struct tcp_labels *l)
{
	struct series *s;

	LOCK(m);
	if ((s = tcp_series(m, l)) != NULL)
		s->u.tcp.opened++;
	UNLOCK(m);
}

void
metrics_tcp_closed(struct metrics *m, const struct tcp_labels *l, uint64_t sent, uint64_t received)
{
	struct series *s;

	LOCK(m);
	if ((s = tcp_series(m, l)) != NULL) {
		s->u.tcp.closed++;
		s->u.tcp.sent += sent;
		s->u.tcp.received += received;
	}
	UNLOCK(m);
}

static void
observe(struct hist *h, double v)
{
	size_t i = 0;

	if (!(v >= 0)) /* NaN and negatives count as 0 */
		v = 0;
	while (i < NBUCKETS && v > buckets[i])
		i++;
	h->count[i]++;
	h->n++;
	h->sum += v;
}

void
metrics_http_request(struct metrics *m, const struct http_labels *l, double duration_ms,
    uint64_t request_bytes, uint64_t response_bytes)
{
	char code[16];
	const char *v[HTTP_NLABELS];
	struct series *s;

	snprintf(code, sizeof(code), "%u", l->response_code);
	v[0] = l->reporter;
	v[1] = l->source_workload;
	v[2] = l->source_workload_namespace;
	v[3] = l->source_principal;
	v[4] = l->destination_workload;
	v[5] = l->destination_workload_namespace;
	v[6] = l->destination_service;
	v[7] = l->destination_principal;
	v[8] = l->request_protocol;
	v[9] = code;
	v[10] = l->response_flags;
	v[11] = l->connection_security_policy;
	LOCK(m);
	s = lookup(m, SET_HTTP, v, HTTP_NLABELS, 10);
	if (s != NULL) {
		s->u.http.requests++;
		observe(&s->u.http.duration, duration_ms);
		observe(&s->u.http.req_bytes, (double)request_bytes);
		observe(&s->u.http.resp_bytes, (double)response_bytes);
	}
	UNLOCK(m);
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static bool
name_ok(const char *s)
{
	if (s == NULL || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
	    *s == ':'))
		return false;
	for (s++; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
		    *s == ':' || (*s >= '0' && *s <= '9')))
			return false;
	return true;
}

static const char *const builtin_names[] = { "istio_tcp_connections_opened_total",
	"istio_tcp_connections_closed_total", "istio_tcp_sent_bytes_total",
	"istio_tcp_received_bytes_total", "istio_requests_total",
	"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes",
	"amesh_metrics_series_dropped_total" };

static void
proc_free(struct proc_metric *p)
{
	free(p->name);
	free(p->help);
	free(p->label);
	free(p->lvalue);
	free(p);
}

static struct proc_metric *proc_register_locked(struct metrics *m, enum proc_type type,
    const char *name, const char *help, const char *label, const char *lvalue);

static struct proc_metric *
proc_register(struct metrics *m, enum proc_type type, const char *name, const char *help,
    const char *label, const char *lvalue)
{
	struct proc_metric *p;

	LOCK(m);
	p = proc_register_locked(m, type, name, help, label, lvalue);
	UNLOCK(m);
	return p;
}

static struct proc_metric *
proc_register_locked(struct metrics *m, enum proc_type type, const char *name, const char *help,
    const char *label, const char *lvalue)
{
	struct proc_metric *p, *after = NULL;
	size_t sz = sizeof(struct proc_metric);

	if (!name_ok(name) || (label != NULL && (!name_ok(label) || lvalue == NULL)))
		return NULL;
	for (size_t i = 0; i < sizeof(builtin_names) / sizeof(builtin_names[0]); i++)
		if (strcmp(name, builtin_names[i]) == 0)
			return NULL;
	for (p = m->procs; p != NULL; p = p->next) {
		if (strcmp(p->name, name) != 0)
			continue;
		/* One family: the same type and label name throughout. */
		if (p->type != type || (p->label == NULL) != (label == NULL) ||
		    (label != NULL && strcmp(p->label, label) != 0))
			return NULL;
		if (label == NULL || strcmp(p->lvalue, lvalue) == 0)
			return p;
		after = p;
	}
	p = calloc(1, sz);
	if (p == NULL)
		return NULL;
	p->m = m;
	p->type = type;
	p->name = strdup(name);
	p->help = strdup(help != NULL ? help : "");
	if (label != NULL) {
		p->label = strdup(label);
		p->lvalue = strdup(lvalue);
	}
	if (p->name == NULL || p->help == NULL || (label != NULL && (p->label == NULL ||
	    p->lvalue == NULL))) {
		proc_free(p);
		return NULL;
	}
	if (after != NULL) {
		p->next = after->next;
		after->next = p;
		if (m->procs_tail == after)
			m->procs_tail = p;
	} else {
		if (m->procs_tail != NULL)
			m->procs_tail->next = p;
		else
			m->procs = p;
		m->procs_tail = p;
	}
	return p;
}

struct metric_counter *
metrics_counter(struct metrics *m, const char *name, const char *help)
{
	return (struct metric_counter *)proc_register(m, PROC_COUNTER, name, help, NULL, NULL);
}

struct metric_gauge *
metrics_gauge(struct metrics *m, const char *name, const char *help)
{
	return (struct metric_gauge *)proc_register(m, PROC_GAUGE, name, help, NULL, NULL);
}

struct metric_counter *
metrics_counter_l(struct metrics *m, const char *name, const char *help, const char *label,
    const char *value)
{
	return (struct metric_counter *)proc_register(m, PROC_COUNTER, name, help, label, value);
}

struct metric_gauge *
metrics_gauge_l(struct metrics *m, const char *name, const char *help, const char *label,
    const char *value)
{
	return (struct metric_gauge *)proc_register(m, PROC_GAUGE, name, help, label, value);
}

struct metric_histogram *
metrics_histogram(struct metrics *m, const char *name, const char *help, const double *bounds,
    size_t n)
{
	struct proc_metric *p;

	if (n == 0 || n > METRICS_HIST_MAX_BUCKETS)
		return NULL;
	for (size_t i = 1; i < n; i++)
		if (!(bounds[i] > bounds[i - 1]))
			return NULL;
	LOCK(m);
	p = proc_register_locked(m, PROC_HISTOGRAM, name, help, NULL, NULL);
	if (p != NULL && p->hn == 0) {
		memcpy(p->hbound, bounds, n * sizeof(double));
		p->hn = n;
	}
	UNLOCK(m);
	return (struct metric_histogram *)p;
}

void
metrics_histogram_observe(struct metric_histogram *h, double v)
{
	size_t i = 0;

	if (h == NULL)
		return;
	if (!(v >= 0))
		v = 0;
	while (i < h->p.hn && v > h->p.hbound[i])
		i++;
	LOCK(h->p.m);
	h->p.hcount[i]++;
	h->p.hobs++;
	h->p.hsum += v;
	UNLOCK(h->p.m);
}

void
metrics_gauge_remove(struct metrics *m, struct metric_gauge *g)
{
	struct proc_metric *prev = NULL;

	if (g == NULL)
		return;
	LOCK(m);
	for (struct proc_metric *p = m->procs; p != NULL; prev = p, p = p->next) {
		if (p != &g->p)
			continue;
		if (prev != NULL)
			prev->next = p->next;
		else
			m->procs = p->next;
		if (m->procs_tail == p)
			m->procs_tail = prev;
		proc_free(p);
		break;
	}
	UNLOCK(m);
}

/* Process counters and gauges are read and written under their store's lock as well. */
void
metrics_counter_add(struct metric_counter *c, uint64_t v)
{
	if (c == NULL)
		return;
	LOCK(c->p.m);
	c->p.counter += v;
	UNLOCK(c->p.m);
}

uint64_t
metrics_counter_value(const struct metric_counter *c)
{
	uint64_t v;

	if (c == NULL)
		return 0;
	LOCK(c->p.m);
	v = c->p.counter;
	UNLOCK(c->p.m);
	return v;
}

void
metrics_gauge_set(struct metric_gauge *g, int64_t v)
{
	if (g == NULL)
		return;
	LOCK(g->p.m);
	g->p.gauge = v;
	UNLOCK(g->p.m);
}

void
metrics_gauge_add(struct metric_gauge *g, int64_t delta)
{
	if (g == NULL)
		return;
	LOCK(g->p.m);
	g->p.gauge += delta;
	UNLOCK(g->p.m);
}

int64_t
metrics_gauge_value(const struct metric_gauge *g)
{
	int64_t v;

	if (g == NULL)
		return 0;
	LOCK(g->p.m);
	v = g->p.gauge;
	UNLOCK(g->p.m);
	return v;
}

/* Rendering: core's buffer (METRICS_RENDER_MAX at most); a failed append sticks and the render
 * returns nothing. */
#define METRICS_RENDER_MAX (64u * 1024 * 1024)

struct mtext {
	struct buf b;
	int err; /* the first append that failed */
};

static void
mt_put(struct mtext *t, const char *s, size_t n)
{
	if (t->err == 0)
		t->err = buf_put(&t->b, s, n);
}

static void
mt_str(struct mtext *b, const char *s)
{
	mt_put(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
mt_printf(struct mtext *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		mt_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Label values: backslash, double quote and line feed are escaped. HELP text: backslash, LF. */
static void
mt_escaped(struct mtext *b, const char *s, bool quote)
{
	const char *run = s;

	for (; *s != '\0'; s++) {
		const char *esc = NULL;

		if (*s == '\\')
			esc = "\\\\";
		else if (*s == '\n')
			esc = "\\n";
		else if (*s == '"' && quote)
			esc = "\\\"";
		if (esc != NULL) {
			mt_put(b, run, (size_t)(s - run));
			mt_str(b, esc);
			run = s + 1;
		}
	}
	mt_put(b, run, (size_t)(s - run));
}

/* Numbers as Prometheus and Envoy print them: integers without a fraction, others shortest. */
static void
fmt_double(char *out, size_t len, double v)
{
	if (isinf(v)) {
		snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
	} else if (isnan(v)) {
		snprintf(out, len, "NaN");
	} else if (v > -1e15 && v < 1e15 && (double)(int64_t)v == v) {
		snprintf(out, len, "%" PRId64, (int64_t)v);
	} else {
		snprintf(out, len, "%.15g", v);
		if (strtod(out, NULL) != v)
			snprintf(out, len, "%.17g", v);
	}
}

static void
family_head(struct mtext *b, const char *name, const char *type, const char *help)
{
	mt_str(b, "# HELP ");
	mt_str(b, name);
	mt_str(b, " ");
	mt_escaped(b, help, false);
	mt_str(b, "\n# TYPE ");
	mt_str(b, name);
	mt_str(b, " ");
	mt_str(b, type);
	mt_str(b, "\n");
}

/* name{labels[,le="x"]} value */
static void
sample(struct mtext *b, const char *name, const char *suffix, const char *const *names,
    const struct series *s, size_t nlabels, const char *le, const char *value)
{
	mt_str(b, name);
	mt_str(b, suffix);
	mt_str(b, "{");
	for (size_t i = 0; i < nlabels; i++) {
		if (i > 0)
			mt_str(b, ",");
		mt_str(b, names[i]);
		mt_str(b, "=\"");
		mt_escaped(b, s->val[i], true);
		mt_str(b, "\"");
	}
	if (le != NULL) {
		mt_str(b, ",le=\"");
		mt_str(b, le);
		mt_str(b, "\"");
	}
	mt_str(b, "} ");
	mt_str(b, value);
	mt_str(b, "\n");
}

static void
render_tcp(struct metrics *m, struct mtext *b)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} fam[] = {
		{ "istio_tcp_connections_opened_total", "TCP connections opened.",
		    offsetof(struct series, u.tcp.opened) },
		{ "istio_tcp_connections_closed_total", "TCP connections closed.",
		    offsetof(struct series, u.tcp.closed) },
		{ "istio_tcp_sent_bytes_total",
		    "Bytes sent to the client of a TCP connection (response direction).",
		    offsetof(struct series, u.tcp.sent) },
		{ "istio_tcp_received_bytes_total",
		    "Bytes received from the client of a TCP connection (request direction).",
		    offsetof(struct series, u.tcp.received) },
	};

	if (m->head[SET_TCP] == NULL)
		return;
	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		family_head(b, fam[f].name, "counter", fam[f].help);
		for (const struct series *s = m->head[SET_TCP]; s != NULL; s = s->next) {
			char v[32];

			snprintf(v, sizeof(v), "%" PRIu64,
			    *(const uint64_t *)(const void *)((const char *)s + fam[f].off));
			sample(b, fam[f].name, "", tcp_label_names, s, TCP_NLABELS, NULL, v);
		}
	}
}

static void
render_hist(struct mtext *b, const char *name, const struct series *s, const struct hist *h)
{
	uint64_t cum = 0;
	char le[32], v[48];

	for (size_t i = 0; i <= NBUCKETS; i++) {
		cum += h->count[i];
		if (i < NBUCKETS)
			fmt_double(le, sizeof(le), buckets[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		snprintf(v, sizeof(v), "%" PRIu64, cum);
		sample(b, name, "_bucket", http_label_names, s, HTTP_NLABELS, le, v);
	}
	fmt_double(v, sizeof(v), h->sum);
	sample(b, name, "_sum", http_label_names, s, HTTP_NLABELS, NULL, v);
	snprintf(v, sizeof(v), "%" PRIu64, h->n);
	sample(b, name, "_count", http_label_names, s, HTTP_NLABELS, NULL, v);
}

static void
render_http(struct metrics *m, struct mtext *b)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} hists[] = {
		{ "istio_request_duration_milliseconds", "Duration of requests in milliseconds.",
		    offsetof(struct series, u.http.duration) },
		{ "istio_request_bytes", "Size of requests in bytes.",
		    offsetof(struct series, u.http.req_bytes) },
		{ "istio_response_bytes", "Size of responses in bytes.",
		    offsetof(struct series, u.http.resp_bytes) },
	};
	const struct series *s;

	if (m->head[SET_HTTP] == NULL)
		return;
	family_head(b, "istio_requests_total", "counter", "Requests handled.");
	for (s = m->head[SET_HTTP]; s != NULL; s = s->next) {
		char v[32];

		snprintf(v, sizeof(v), "%" PRIu64, s->u.http.requests);
		sample(b, "istio_requests_total", "", http_label_names, s, HTTP_NLABELS, NULL, v);
	}
	for (size_t f = 0; f < sizeof(hists) / sizeof(hists[0]); f++) {
		family_head(b, hists[f].name, "histogram", hists[f].help);
		for (s = m->head[SET_HTTP]; s != NULL; s = s->next)
			render_hist(b, hists[f].name, s,
			    (const struct hist *)(const void *)((const char *)s + hists[f].off));
	}
}

size_t
metrics_render(struct metrics *m, char **out)
{
	struct mtext b = { .err = 0 };
	size_t len;

	*out = NULL;
	buf_init(&b.b, METRICS_RENDER_MAX);
	LOCK(m);
	for (const struct proc_metric *p = m->procs, *prev = NULL; p != NULL; prev = p, p = p->next) {
		if (prev == NULL || strcmp(prev->name, p->name) != 0)
			family_head(&b, p->name, p->type == PROC_COUNTER ? "counter" :
			    p->type == PROC_GAUGE ? "gauge" : "histogram", p->help);
		if (p->type == PROC_HISTOGRAM) {
			uint64_t cum = 0;
			char le[32], v[48];

			for (size_t i = 0; i <= p->hn; i++) {
				cum += p->hcount[i];
				if (i < p->hn)
					fmt_double(le, sizeof(le), p->hbound[i]);
				else
					snprintf(le, sizeof(le), "+Inf");
				mt_printf(&b, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", p->name, le, cum);
			}
			fmt_double(v, sizeof(v), p->hsum);
			mt_printf(&b, "%s_sum %s\n%s_count %" PRIu64 "\n", p->name, v, p->name,
			    p->hobs);
			continue;
		}
		mt_str(&b, p->name);
		if (p->label != NULL) {
			mt_str(&b, "{");
			mt_str(&b, p->label);
			mt_str(&b, "=\"");
			mt_escaped(&b, p->lvalue, true);
			mt_str(&b, "\"}");
		}
		if (p->type == PROC_COUNTER)
			mt_printf(&b, " %" PRIu64 "\n", p->counter);
		else
			mt_printf(&b, " %" PRId64 "\n", p->gauge);
	}
	render_tcp(m, &b);
	render_http(m, &b);
	family_head(&b, "amesh_metrics_series_dropped_total", "counter",
	    "Metric events not counted because the label-set limit was reached.");
	mt_printf(&b, "amesh_metrics_series_dropped_total %" PRIu64 "\n", m->dropped);
	UNLOCK(m);
	if (b.err != 0 || (*out = buf_take_str(&b.b, &len)) == NULL) {
		buf_reset(&b.b);
		return 0;
	}
	return len;
}
