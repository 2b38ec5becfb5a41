/* SPDX-License-Identifier: Apache-2.0 */
/* The DNS proxy's listeners and its forwarding to the upstream resolvers (server.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "dns/msg.h"
#include "dns/server.h"
#include "telemetry/metrics.h"

/* Upper bounds of the forward latency buckets, in milliseconds (+Inf is the count). */
static const unsigned bucket_ms[] = { 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 };
#define NBUCKETS ARRAY_SIZE(bucket_ms)
/* Datagrams a listener reads with one recvmmsg (libuv gives each 64 KiB of the buffer): half
 * the syscalls per query under load, which is what bounds the proxy (bench/dns). */
#define DNS_RECV_BATCH 16
#define DNS_RECV_CHUNK 65536u
/* A TCP client that does not read its answers is closed past this much unsent. */
#define DNS_TCP_MAX_PENDING (256u * 1024)

struct dns_server {
	struct dns_server_cfg cfg;
	struct sockaddr_storage up[DNS_MAX_UPSTREAMS];
	size_t nup;
	size_t inflight;
	/* Every UDP read, handled before the next (loop thread): DNS_RECV_BATCH chunks, of which
	 * only the pages datagrams land in are ever touched. */
	uint8_t *rbuf;
	struct metric_counter *queries[DNS_NQTYPES], *results[DNS_NRESULTS], *upfail;
	struct metric_counter *buckets[NBUCKETS + 1], *dur_count, *dur_sum;
	struct metric_gauge *g_inflight;
	uint16_t ids[128]; /* random query IDs, drawn 256 bytes at a time: a syscall per query costs */
	size_t nids;
};

struct fwd;
struct tclient;
struct upsock;

/* The answers to one recvmmsg batch, sent with one sendmmsg at its end. */
struct outq {
	size_t n;
	uint8_t *msg[DNS_RECV_BATCH];
	size_t len[DNS_RECV_BATCH];
	struct sockaddr_storage to[DNS_RECV_BATCH];
};

struct dns_listener {
	struct dns_server *s;
	char *name, *ns;
	uv_udp_t udp[2];
	uv_tcp_t tcp[2];
	bool has_udp[2], has_tcp[2];
	struct outq *outq[2]; /* answers of the datagrams read together, sent together */
	int (*socket_fn)(void *arg, int family, int type);
	void *arg;
	void (*on_closed)(void *arg);
	int handles; /* UDP and TCP handles, clients and queries in flight not yet freed */
	bool stopping;
	struct fwd *fwds;
	struct tclient *clients;
	size_t nclients;
	struct upsock *us[DNS_MAX_UPSTREAMS]; /* UDP to each upstream, opened at first use */
};

/*
 * The one UDP socket a listener asks upstream i through, open while the listener is. A socket
 * per query would leave, once closed, a conntrack entry without NAT for its port and the
 * upstream (30 s and more); a workload query that drew the same port would match it and skip
 * the capture. A bound socket's port is never given to the workload. Answers are matched to
 * queries by our random ID and by the question.
 */
struct upsock {
	struct dns_listener *l;
	size_t up;
	uv_udp_t h;
};

/* One attempt at an upstream over TCP; it outlives its query when abandoned (f NULL). */
struct upconn {
	struct fwd *f;
	uv_tcp_t tcp;
	uv_connect_t conn;
	uv_write_t wr;
	uint8_t *out; /* length and query */
	uint8_t *in;  /* the answer so far, length first */
	size_t inlen;
};

/* A forwarded query. */
struct fwd {
	struct dns_listener *l;
	struct tclient *tc; /* the TCP client waiting, or NULL: a UDP client */
	int fam;            /* UDP: the listener socket it came in on */
	struct sockaddr_storage client;
	uint8_t *q; /* the query as sent upstream: our ID */
	size_t qlen;
	uint8_t cid[2];    /* the client's ID */
	size_t max_answer; /* UDP: the largest answer the client takes */
	size_t up, tries;
	struct upconn *uc;  /* the TCP attempt in progress */
	struct upsock *us;  /* or the UDP socket an answer is awaited on */
	uint8_t *trunc; /* a truncated UDP answer, kept while asking again over TCP */
	size_t trunclen;
	uint64_t start;
	int qtype;
	uv_timer_t timer;
	struct fwd *prev, *next;
};

struct tclient {
	struct dns_listener *l;
	uv_tcp_t h;
	uv_timer_t idle;
	uint8_t *buf; /* one message: its length, then up to DNS_MAX_MSG bytes */
	size_t len;
	struct fwd *busy;
	int handles;
	bool closing;
	bool processing; /* in tc_process: a query that ends at once lets its loop go on */
	struct tclient *prev, *next;
};

struct wreq {
	uv_write_t req;
	uint8_t data[];
};

static void count(struct dns_server *s, int qtype, int result);

static void
read_resolv_conf(struct dns_server *s, const char *path)
{
	FILE *fp = fopen(path, "re");
	char line[512];

	if (fp == NULL) {
		log_warn("dns: cannot read %s: %s", path, strerror(errno));
		return;
	}
	while (s->nup < DNS_MAX_UPSTREAMS && fgets(line, sizeof(line), fp) != NULL) {
		char addr[256];
		struct ip_addr ip;
		const char *why;

		if (sscanf(line, " nameserver %255s", addr) != 1)
			continue;
		if (parse_ip(addr, &ip, &why) != 0) {
			log_warn("dns: %s: nameserver %s: %s", path, addr, why);
			continue;
		}
		sockaddr_from_ip(&s->up[s->nup++], &ip, 53);
	}
	fclose(fp);
}

struct dns_server *
dns_server_new(const struct dns_server_cfg *cfg)
{
	struct dns_server *s = xcalloc(1, sizeof(*s));
	const struct amesh_conf *c = cfg->conf;
	struct metrics *m = cfg->metrics;
	char a[128];

	s->cfg = *cfg;
	s->rbuf = xmalloc(DNS_RECV_BATCH * DNS_RECV_CHUNK);
	for (size_t i = 0; i < c->dns.upstream.n && s->nup < DNS_MAX_UPSTREAMS; i++)
		if (conf_dns_upstream(c->dns.upstream.v[i], &s->up[s->nup]) == 0)
			s->nup++;
	if (c->dns.upstream.n == 0)
		read_resolv_conf(s, c->dns.resolv_conf);
	if (s->nup == 0)
		log_warn("dns: no upstream resolver ([dns] upstream, nameserver in %s): names "
		    "outside the registry get SERVFAIL", c->dns.resolv_conf);
	for (size_t i = 0; i < s->nup; i++)
		log_info("dns: upstream %s", sockaddr_str(&s->up[i], a, sizeof(a)));
	if (m == NULL)
		return s;
	for (int i = 0; i < DNS_NQTYPES; i++)
		s->queries[i] = metrics_counter_l(m, "amesh_dns_queries_total",
		    "DNS queries received by the DNS proxy, by query type", "type", dns_type_name(i));
	for (int i = 0; i < DNS_NRESULTS; i++)
		s->results[i] = metrics_counter_l(m, "amesh_dns_responses_total",
		    "DNS queries by how they ended", "result", dns_result_name(i));
	s->upfail = metrics_counter(m, "amesh_dns_upstream_failures_total",
	    "Upstream attempts that timed out or failed");
	for (size_t i = 0; i <= NBUCKETS; i++) {
		char le[16];

		if (i < NBUCKETS)
			snprintf(le, sizeof(le), "%u", bucket_ms[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		s->buckets[i] = metrics_counter_l(m, "amesh_dns_forward_duration_milliseconds_bucket",
		    "Forwarded queries answered within le milliseconds (cumulative)", "le", le);
	}
	s->dur_count = metrics_counter(m, "amesh_dns_forward_duration_milliseconds_count",
	    "Forwarded queries answered by an upstream");
	s->dur_sum = metrics_counter(m, "amesh_dns_forward_duration_milliseconds_sum",
	    "Milliseconds spent on forwarded queries answered by an upstream");
	s->g_inflight = metrics_gauge(m, "amesh_dns_inflight", "Forwarded queries in flight");
	return s;
}

void
dns_server_free(struct dns_server *s)
{
	if (s == NULL)
		return;
	free(s->rbuf);
	free(s);
}

size_t
dns_server_upstreams(const struct dns_server *s)
{
	return s->nup;
}

const struct sockaddr_storage *
dns_server_upstream(const struct dns_server *s, size_t i)
{
	return i < s->nup ? &s->up[i] : NULL;
}

/* A query ID from the kernel's random source, unpredictable to anyone off the path. */
static uint16_t
random_id(struct dns_server *s)
{
	if (s->nids == 0) {
		if (getrandom(s->ids, sizeof(s->ids), 0) != (ssize_t)sizeof(s->ids))
			return (uint16_t)uv_hrtime(); /* cannot happen for 256 bytes after boot */
		s->nids = ARRAY_SIZE(s->ids);
	}
	return s->ids[--s->nids];
}

static void
count(struct dns_server *s, int qtype, int result)
{
	metrics_counter_add(s->queries[qtype >= 0 && qtype < DNS_NQTYPES ? qtype : DNS_QT_OTHER], 1);
	if (result >= 0 && result < DNS_NRESULTS)
		metrics_counter_add(s->results[result], 1);
}

static void
observe_forward(struct dns_server *s, uint64_t ms)
{
	for (size_t i = 0; i < NBUCKETS; i++)
		if (ms <= bucket_ms[i])
			metrics_counter_add(s->buckets[i], 1);
	metrics_counter_add(s->buckets[NBUCKETS], 1);
	metrics_counter_add(s->dur_count, 1);
	metrics_counter_add(s->dur_sum, ms);
}

static void
listener_unref(struct dns_listener *l)
{
	if (--l->handles > 0 || !l->stopping)
		return;
	if (l->on_closed != NULL)
		l->on_closed(l->arg);
	free(l->name);
	free(l->ns);
	free(l);
}

static void
alloc_shared(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct dns_listener *l = h->data;

	(void)suggested;
	*buf = uv_buf_init((char *)l->s->rbuf, DNS_RECV_BATCH * DNS_RECV_CHUNK);
}

/* --- TCP clients --- */

static void tc_close(struct tclient *tc);
static void tc_process(struct tclient *tc);

static void
tc_write_done(uv_write_t *req, int status)
{
	(void)status;
	free(req);
}

/* Sends one message, length first. */
static void
tc_send(struct tclient *tc, const uint8_t *m, size_t len)
{
	struct wreq *w;
	uv_buf_t b;

	if (tc->closing || len > DNS_MAX_MSG)
		return;
	if (uv_stream_get_write_queue_size((uv_stream_t *)&tc->h) > DNS_TCP_MAX_PENDING) {
		tc_close(tc); /* it does not read its answers */
		return;
	}
	w = malloc(sizeof(*w) + 2 + len);
	if (w == NULL) {
		tc_close(tc);
		return;
	}
	w->data[0] = (uint8_t)(len >> 8);
	w->data[1] = (uint8_t)len;
	memcpy(w->data + 2, m, len);
	b = uv_buf_init((char *)w->data, (unsigned)(2 + len));
	if (uv_write(&w->req, (uv_stream_t *)&tc->h, &b, 1, tc_write_done) != 0) {
		free(w);
		tc_close(tc);
	}
}

/* --- forwarding --- */

static void fwd_attempt(struct fwd *f, bool tcp);

static void
uc_closed(uv_handle_t *h)
{
	struct upconn *uc = h->data;

	free(uc->out);
	free(uc->in);
	free(uc);
}

/* The attempt is over: its callbacks see f NULL until its handle is closed. */
static void
uc_abandon(struct upconn *uc)
{
	if (uc == NULL)
		return;
	if (uc->f != NULL)
		uc->f->uc = NULL;
	uc->f = NULL;
	uv_close((uv_handle_t *)&uc->tcp, uc_closed);
}

/* f's attempt is over, over TCP or UDP: nothing it asked can answer it any more. */
static void
attempt_end(struct fwd *f)
{
	uc_abandon(f->uc);
	f->us = NULL;
}

static void
fwd_closed(uv_handle_t *h)
{
	struct fwd *f = h->data;
	struct dns_listener *l = f->l;

	free(f->q);
	free(f->trunc);
	free(f);
	listener_unref(l);
}

/* Forgets f: off the lists, its attempt abandoned, its timer closed (which frees it). */
static void
fwd_release(struct fwd *f)
{
	struct dns_listener *l = f->l;

	attempt_end(f);
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		l->fwds = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	if (f->tc != NULL)
		f->tc->busy = NULL;
	l->s->inflight--;
	metrics_gauge_set(l->s->g_inflight, (int64_t)l->s->inflight);
	uv_timer_stop(&f->timer);
	uv_close((uv_handle_t *)&f->timer, fwd_closed);
}

/* Sends m (the client's ID already in place) to f's client. */
static void
fwd_reply(struct fwd *f, const uint8_t *m, size_t len)
{
	struct dns_listener *l = f->l;

	if (f->tc != NULL) {
		tc_send(f->tc, m, len);
	} else if (l->has_udp[f->fam] && !l->stopping) {
		uv_buf_t b = uv_buf_init((char *)m, (unsigned)len);

		uv_udp_try_send(&l->udp[f->fam], &b, 1, (const struct sockaddr *)&f->client);
	}
}

/* The query ends: with the upstream's answer ans, else SERVFAIL. */
static void
fwd_finish(struct fwd *f, const uint8_t *ans, size_t len)
{
	struct dns_server *s = f->l->s;
	struct tclient *tc = f->tc;
	uint8_t *m = NULL;
	size_t mlen = 0;
	int result = DNS_RES_FORWARDED;

	/* The TCP client is free again before its answer is sent: sending may close it. */
	if (tc != NULL) {
		tc->busy = NULL;
		f->tc = NULL;
	}

	/* A full answer over TCP that the UDP client cannot take: it gets the truncated one and
	 * asks again over TCP. */
	if (ans != NULL && tc == NULL && len > f->max_answer && f->trunc != NULL) {
		ans = f->trunc;
		len = f->trunclen;
	}
	if (ans != NULL && (m = malloc(len)) != NULL) {
		memcpy(m, ans, len);
		mlen = len;
		observe_forward(s, (uv_hrtime() - f->start) / 1000000);
	} else {
		f->q[0] = f->cid[0];
		f->q[1] = f->cid[1];
		m = dns_servfail(f->q, f->qlen, &mlen);
		result = DNS_RES_SERVFAIL;
	}
	if (m != NULL) {
		m[0] = f->cid[0];
		m[1] = f->cid[1];
		if (tc != NULL)
			tc_send(tc, m, mlen);
		else
			fwd_reply(f, m, mlen);
	} else {
		result = DNS_RES_DROPPED;
	}
	log_debug("dns: %s: forwarded query: %s", f->l->name, dns_result_name(result));
	count(s, f->qtype, result);
	free(m);
	fwd_release(f);
	if (tc != NULL && !tc->closing && !tc->processing)
		tc_process(tc); /* the next buffered query; reading again when none is left */
}

/* This attempt failed: the next upstream, or the end. */
static void
fwd_next(struct fwd *f)
{
	struct dns_server *s = f->l->s;

	metrics_counter_add(s->upfail, 1);
	attempt_end(f);
	if (f->trunc != NULL) {
		/* Asking over TCP after a truncated answer failed: the client has that one. */
		fwd_finish(f, f->trunc, f->trunclen);
		return;
	}
	if (++f->tries >= s->nup) {
		fwd_finish(f, NULL, 0);
		return;
	}
	f->up = (f->up + 1) % s->nup;
	fwd_attempt(f, f->tc != NULL);
}

static void
fwd_timeout(uv_timer_t *t)
{
	struct fwd *f = t->data;
	char a[128];

	log_debug("dns: %s: upstream %s did not answer in time", f->l->name,
	    sockaddr_str(&f->l->s->up[f->up], a, sizeof(a)));
	fwd_next(f);
}

/* An answer from the upstream: ours, complete, or truncated. */
static void
fwd_answer(struct fwd *f, const uint8_t *m, size_t len, bool over_tcp)
{
	if (!dns_reply_matches(f->q, f->qlen, m, len))
		return; /* not the answer to this query: keep waiting */
	if (!over_tcp && dns_truncated(m, len) && f->trunc == NULL) {
		f->trunc = malloc(len);
		if (f->trunc != NULL) {
			memcpy(f->trunc, m, len);
			f->trunclen = len;
			attempt_end(f);
			fwd_attempt(f, true);
			return;
		}
	}
	fwd_finish(f, m, len);
}

/* The query awaiting the answer m on us: our ID, then the same question. */
static struct fwd *
us_waiter(struct upsock *us, const uint8_t *m, size_t len)
{
	for (struct fwd *f = us->l->fwds; f != NULL; f = f->next)
		if (f->us == us && len >= 2 && m[0] == f->q[0] && m[1] == f->q[1])
			return dns_reply_matches(f->q, f->qlen, m, len) ? f : NULL;
	return NULL;
}

/* The first query still awaiting an answer on us, or NULL. */
static struct fwd *
us_first(struct upsock *us)
{
	for (struct fwd *f = us->l->fwds; f != NULL; f = f->next)
		if (f->us == us)
			return f;
	return NULL;
}

static void
us_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
    unsigned flags)
{
	struct upsock *us = h->data;
	struct fwd *f;

	(void)addr; /* connected: only the upstream's datagrams arrive */
	if (nread == 0 || (flags & UV_UDP_PARTIAL) != 0)
		return;
	if (nread < 0) {
		/* E.g. ECONNREFUSED: nothing listens there. It is the socket's error, not one
		 * query's: every query waiting on it moves on (fwd_next takes each off us). */
		while ((f = us_first(us)) != NULL)
			fwd_next(f);
		return;
	}
	if ((f = us_waiter(us, (const uint8_t *)buf->base, (size_t)nread)) != NULL)
		fwd_answer(f, (const uint8_t *)buf->base, (size_t)nread, false);
}

static void
us_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upsock *us = h->data;

	(void)suggested;
	*buf = uv_buf_init((char *)us->l->s->rbuf, DNS_RECV_CHUNK);
}

static void
us_closed(uv_handle_t *h)
{
	struct upsock *us = h->data;
	struct dns_listener *l = us->l;

	free(us);
	listener_unref(l);
}

/* l's UDP socket to upstream i, opened (and connected) at first use; NULL with *err set. */
static struct upsock *
us_get(struct dns_listener *l, size_t i, int *err)
{
	const struct sockaddr_storage *up = &l->s->up[i];
	struct upsock *us = l->us[i];
	int fd;

	if (us != NULL)
		return us;
	if ((fd = l->socket_fn(l->arg, up->ss_family, SOCK_DGRAM)) < 0) {
		*err = fd;
		return NULL;
	}
	if ((us = calloc(1, sizeof(*us))) == NULL) {
		close(fd);
		*err = AMESH_ERR_NOMEM;
		return NULL;
	}
	us->l = l;
	us->up = i;
	uv_udp_init(l->s->cfg.loop, &us->h);
	us->h.data = us;
	l->handles++;
	if ((*err = uv_udp_open(&us->h, fd)) != 0) {
		close(fd);
		uv_close((uv_handle_t *)&us->h, us_closed);
		return NULL;
	}
	if ((*err = uv_udp_connect(&us->h, (const struct sockaddr *)up)) != 0 ||
	    (*err = uv_udp_recv_start(&us->h, us_alloc, us_recv)) != 0) {
		uv_close((uv_handle_t *)&us->h, us_closed);
		return NULL;
	}
	l->us[i] = us;
	return us;
}

/* A fresh random ID for f's query that no other query awaiting an answer on us has. */
static void
us_new_id(struct upsock *us, struct fwd *f)
{
	uint16_t id = 0;

	for (int tries = 0; tries < 16; tries++) {
		bool taken = false;

		id = random_id(us->l->s);
		for (struct fwd *o = us->l->fwds; o != NULL && !taken; o = o->next)
			taken = o != f && o->us == us && o->q[0] == (uint8_t)(id >> 8) &&
			    o->q[1] == (uint8_t)id;
		if (!taken)
			break;
	}
	f->q[0] = (uint8_t)(id >> 8);
	f->q[1] = (uint8_t)id;
}

static void
uc_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct upconn *uc = h->data;

	(void)suggested;
	if (uc->in == NULL)
		uc->in = malloc(2 + DNS_MAX_MSG);
	if (uc->in == NULL || uc->inlen >= 2 + DNS_MAX_MSG) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)uc->in + uc->inlen, (unsigned)(2 + DNS_MAX_MSG - uc->inlen));
}

static void
uc_tcp_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct upconn *uc = st->data;
	struct fwd *f = uc->f;
	size_t need;

	(void)buf;
	if (f == NULL)
		return;
	if (nread < 0) {
		fwd_next(f);
		return;
	}
	uc->inlen += (size_t)nread;
	if (uc->inlen < 2)
		return;
	need = 2 + (((size_t)uc->in[0] << 8) | uc->in[1]);
	if (uc->inlen < need)
		return;
	if (!dns_reply_matches(f->q, f->qlen, uc->in + 2, need - 2)) {
		fwd_next(f);
		return;
	}
	fwd_answer(f, uc->in + 2, need - 2, true);
}

static void
uc_tcp_written(uv_write_t *w, int status)
{
	struct upconn *uc = w->data;

	if (uc->f != NULL && status < 0)
		fwd_next(uc->f);
}

static void
uc_tcp_connected(uv_connect_t *c, int status)
{
	struct upconn *uc = c->data;
	struct fwd *f = uc->f;
	uv_buf_t b;

	if (f == NULL)
		return;
	if (status < 0) {
		fwd_next(f);
		return;
	}
	b = uv_buf_init((char *)uc->out, (unsigned)(2 + f->qlen));
	uc->wr.data = uc;
	if (uv_write(&uc->wr, (uv_stream_t *)&uc->tcp, &b, 1, uc_tcp_written) != 0 ||
	    uv_read_start((uv_stream_t *)&uc->tcp, uc_tcp_alloc, uc_tcp_read) != 0)
		fwd_next(f);
}

/* Starts asking upstream f->up, over UDP or TCP. A failure to even start moves on. */
static void
fwd_attempt(struct fwd *f, bool tcp)
{
	struct dns_listener *l = f->l;
	struct dns_server *s = l->s;
	const struct sockaddr_storage *up = &s->up[f->up];
	struct upconn *uc;
	int fd, r;

	uv_timer_start(&f->timer, fwd_timeout, s->cfg.conf->dns.timeout / s->nup, 0);
	if (!tcp) {
		struct upsock *us = us_get(l, f->up, &r);
		uv_buf_t b;

		if (us == NULL) {
			char a[128];

			log_warn("dns: %s: cannot open a socket to %s: %s", l->name,
			    sockaddr_str(up, a, sizeof(a)), amesh_strerror(r));
			fwd_next(f);
			return;
		}
		us_new_id(us, f);
		b = uv_buf_init((char *)f->q, (unsigned)f->qlen);
		f->us = us;
		if (uv_udp_try_send(&us->h, &b, 1, NULL) < 0)
			fwd_next(f); /* e.g. its send buffer is full: the upstream is not keeping up */
		return;
	}
	if ((uc = calloc(1, sizeof(*uc))) == NULL) {
		fwd_finish(f, NULL, 0);
		return;
	}
	fd = l->socket_fn(l->arg, up->ss_family, SOCK_STREAM);
	if (fd < 0) {
		char a[128];

		log_warn("dns: %s: cannot open a socket to %s: %s", l->name,
		    sockaddr_str(up, a, sizeof(a)), amesh_strerror(fd));
		free(uc);
		fwd_next(f);
		return;
	}
	uc->f = f;
	f->uc = uc;
	uc->out = malloc(2 + f->qlen);
	uv_tcp_init(l->s->cfg.loop, &uc->tcp);
	uc->tcp.data = uc;
	uc->conn.data = uc;
	if (uc->out == NULL || (r = uv_tcp_open(&uc->tcp, fd)) != 0) {
		close(fd);
		fwd_next(f);
		return;
	}
	uc->out[0] = (uint8_t)(f->qlen >> 8);
	uc->out[1] = (uint8_t)f->qlen;
	memcpy(uc->out + 2, f->q, f->qlen);
	if (uv_tcp_connect(&uc->conn, &uc->tcp, (const struct sockaddr *)up,
	    uc_tcp_connected) != 0)
		fwd_next(f);
}

/*
 * Forwards query q (len bytes) of a UDP client (tc NULL) or of TCP client tc. Returns 0 when
 * under way, or a negative code when it could not be (no upstream, too many in flight, out of
 * memory): the caller answers SERVFAIL then.
 */
static int
forward(struct dns_listener *l, struct tclient *tc, int fam, const struct sockaddr *client,
    const uint8_t *q, size_t len, const struct dns_query_info *info)
{
	struct dns_server *s = l->s;
	struct fwd *f;
	uint16_t id;

	if (s->nup == 0 || s->inflight >= s->cfg.conf->dns.max_inflight)
		return AMESH_ERR_RANGE;
	if ((f = calloc(1, sizeof(*f))) == NULL || (f->q = malloc(len)) == NULL) {
		free(f);
		return AMESH_ERR_NOMEM;
	}
	id = random_id(s);
	memcpy(f->q, q, len);
	f->qlen = len;
	f->cid[0] = q[0];
	f->cid[1] = q[1];
	f->q[0] = (uint8_t)(id >> 8);
	f->q[1] = (uint8_t)id;
	f->l = l;
	f->tc = tc;
	f->fam = fam;
	if (client != NULL)
		memcpy(&f->client, client, client->sa_family == AF_INET6 ?
		    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
	f->max_answer = info->max_answer;
	f->qtype = info->qtype;
	f->start = uv_hrtime();
	uv_timer_init(s->cfg.loop, &f->timer);
	f->timer.data = f;
	f->next = l->fwds;
	if (l->fwds != NULL)
		l->fwds->prev = f;
	l->fwds = f;
	l->handles++;
	s->inflight++;
	metrics_gauge_set(s->g_inflight, (int64_t)s->inflight);
	if (tc != NULL) {
		tc->busy = f;
		uv_read_stop((uv_stream_t *)&tc->h);
	}
	fwd_attempt(f, tc != NULL);
	return 0;
}

/*
 * One query from a client: answered here, forwarded, or dropped. Returns the answer to send now
 * (malloc'd), or NULL (forwarded, or nothing to say); *drop is set when a TCP client should go.
 */
static uint8_t *
query(struct dns_listener *l, struct tclient *tc, int fam, const struct sockaddr *client,
    const uint8_t *q, size_t len, size_t *outlen, bool *drop)
{
	struct dns_server *s = l->s;
	struct registry *reg = registry_holder_get(s->cfg.reg);
	char domain[256];
	struct dns_zone z = {
		.reg = reg,
		.ns = l->ns,
		.domain = domain,
		.ttl = (uint32_t)(s->cfg.conf->dns.ttl / 1000),
	};
	struct dns_query_info info;
	uint8_t *out = NULL;
	enum dns_action act;

	{
		const char *d = s->cfg.conf->dns.domain;
		size_t i = 0;

		for (; d[i] != '\0' && i < sizeof(domain) - 1; i++)
			domain[i] = (char)(d[i] >= 'A' && d[i] <= 'Z' ? d[i] - 'A' + 'a' : d[i]);
		domain[i] = '\0';
	}
	*drop = false;
	act = dns_handle_query(&z, q, len, tc != NULL, &out, outlen, &info);
	registry_unref(reg);
	switch (act) {
	case DNS_DROP:
		*drop = true;
		count(s, info.qtype, DNS_RES_DROPPED);
		return NULL;
	case DNS_REPLY:
		log_debug("dns: %s: %s %s: %s", l->name, dns_type_name(info.qtype), info.name,
		    dns_result_name(info.result));
		count(s, info.qtype, info.result);
		return out;
	case DNS_FORWARD:
		break;
	}
	if (forward(l, tc, fam, client, q, len, &info) == 0)
		return NULL;
	count(s, info.qtype, DNS_RES_SERVFAIL);
	return dns_servfail(q, len, outlen);
}

/* --- UDP clients --- */

/* Queues answer m (taken) to addr until the batch ends; false when it cannot be queued. */
static bool
outq_add(struct dns_listener *l, int fam, uint8_t *m, size_t len, const struct sockaddr *addr)
{
	struct outq *q = l->outq[fam];

	if (q == NULL && (q = l->outq[fam] = calloc(1, sizeof(*q))) == NULL)
		return false;
	if (q->n == DNS_RECV_BATCH)
		return false;
	q->msg[q->n] = m;
	q->len[q->n] = len;
	memcpy(&q->to[q->n], addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in));
	q->n++;
	return true;
}

/*
 * Sends the queued answers with as few sendmmsg calls as the socket takes; what it does not
 * take at once (its buffer full) is dropped, as uv_udp_try_send drops it: the client asks again.
 */
static void
outq_flush(struct dns_listener *l, int fam)
{
	struct outq *q = l->outq[fam];
	struct mmsghdr v[DNS_RECV_BATCH];
	struct iovec iov[DNS_RECV_BATCH];
	uv_os_fd_t fd;
	size_t sent = 0;

	if (q == NULL || q->n == 0)
		return;
	if (!l->stopping && l->has_udp[fam] && uv_fileno((uv_handle_t *)&l->udp[fam], &fd) == 0) {
		memset(v, 0, sizeof(v[0]) * q->n);
		for (size_t i = 0; i < q->n; i++) {
			iov[i].iov_base = q->msg[i];
			iov[i].iov_len = q->len[i];
			v[i].msg_hdr.msg_iov = &iov[i];
			v[i].msg_hdr.msg_iovlen = 1;
			v[i].msg_hdr.msg_name = &q->to[i];
			v[i].msg_hdr.msg_namelen = q->to[i].ss_family == AF_INET6 ?
			    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		}
		while (sent < q->n) {
			int r = sendmmsg(fd, v + sent, (unsigned)(q->n - sent), MSG_DONTWAIT);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			sent += (size_t)r;
		}
	}
	for (size_t i = 0; i < q->n; i++)
		free(q->msg[i]);
	q->n = 0;
}

static void
udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
    unsigned flags)
{
	struct dns_listener *l = h->data;
	int fam = h == &l->udp[1];
	uint8_t *out;
	size_t outlen = 0;
	bool drop;

	if (nread == 0 && (flags & UV_UDP_MMSG_FREE) != 0) {
		outq_flush(l, fam); /* the batch is over */
		return;
	}
	if (nread <= 0 || addr == NULL || l->stopping)
		return;
	if ((flags & UV_UDP_PARTIAL) != 0) {
		count(l->s, DNS_QT_NONE, DNS_RES_DROPPED);
		return;
	}
	out = query(l, NULL, fam, addr, (const uint8_t *)buf->base, (size_t)nread, &outlen, &drop);
	if (out == NULL)
		return;
	if ((flags & UV_UDP_MMSG_CHUNK) != 0 && outq_add(l, fam, out, outlen, addr))
		return;
	{
		uv_buf_t b = uv_buf_init((char *)out, (unsigned)outlen);

		uv_udp_try_send(h, &b, 1, addr);
		free(out);
	}
}

/* --- TCP clients --- */

static void
tc_freed(uv_handle_t *h)
{
	struct tclient *tc = h->data;
	struct dns_listener *l = tc->l;

	if (--tc->handles > 0)
		return;
	free(tc->buf);
	free(tc);
	listener_unref(l);
}

static void
tc_close(struct tclient *tc)
{
	struct dns_listener *l = tc->l;

	if (tc->closing)
		return;
	tc->closing = true;
	if (tc->busy != NULL) {
		struct fwd *f = tc->busy;

		f->tc = NULL;
		tc->busy = NULL;
		count(l->s, f->qtype, DNS_RES_DROPPED);
		fwd_release(f);
	}
	if (tc->prev != NULL)
		tc->prev->next = tc->next;
	else
		l->clients = tc->next;
	if (tc->next != NULL)
		tc->next->prev = tc->prev;
	l->nclients--;
	uv_timer_stop(&tc->idle);
	uv_close((uv_handle_t *)&tc->idle, tc_freed);
	uv_close((uv_handle_t *)&tc->h, tc_freed);
}

static void
tc_idle(uv_timer_t *t)
{
	struct tclient *tc = t->data;

	if (tc->busy == NULL)
		tc_close(tc);
}

static void
tc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tclient *tc = h->data;

	(void)suggested;
	*buf = uv_buf_init((char *)tc->buf + tc->len, (unsigned)(2 + DNS_MAX_MSG - tc->len));
}

static void tc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Answers the complete messages buffered, one at a time: a forwarded one stops reading until its
 * answer is sent. */
static void
tc_process(struct tclient *tc)
{
	struct dns_listener *l = tc->l;

	tc->processing = true;
	while (!tc->closing && tc->busy == NULL && tc->len >= 2) {
		size_t mlen = ((size_t)tc->buf[0] << 8) | tc->buf[1], outlen = 0;
		uint8_t *msg, *out;
		bool drop;

		if (tc->len < 2 + mlen)
			break;
		msg = malloc(mlen > 0 ? mlen : 1);
		if (msg == NULL) {
			tc_close(tc);
			break;
		}
		memcpy(msg, tc->buf + 2, mlen);
		memmove(tc->buf, tc->buf + 2 + mlen, tc->len - 2 - mlen);
		tc->len -= 2 + mlen;
		uv_timer_start(&tc->idle, tc_idle, DNS_TCP_IDLE_MS, 0);
		out = query(l, tc, 0, NULL, msg, mlen, &outlen, &drop);
		free(msg);
		if (out != NULL) {
			tc_send(tc, out, outlen);
			free(out);
		} else if (drop) {
			tc_close(tc);
			break;
		}
	}
	tc->processing = false;
	if (!tc->closing && tc->busy == NULL)
		uv_read_start((uv_stream_t *)&tc->h, tc_alloc, tc_read);
}

static void
tc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct tclient *tc = st->data;

	(void)buf;
	if (nread < 0) {
		tc_close(tc);
		return;
	}
	tc->len += (size_t)nread;
	tc_process(tc);
}

static void
on_tcp_client(uv_stream_t *server, int status)
{
	struct dns_listener *l = server->data;
	struct tclient *tc;

	if (status < 0 || l->stopping)
		return;
	tc = calloc(1, sizeof(*tc));
	if (tc == NULL || (tc->buf = malloc(2 + DNS_MAX_MSG)) == NULL) {
		free(tc);
		log_warn("dns: %s: out of memory for a TCP client", l->name);
		return;
	}
	tc->l = l;
	uv_tcp_init(l->s->cfg.loop, &tc->h);
	uv_timer_init(l->s->cfg.loop, &tc->idle);
	tc->h.data = tc->idle.data = tc;
	tc->handles = 2;
	tc->next = l->clients;
	if (l->clients != NULL)
		l->clients->prev = tc;
	l->clients = tc;
	l->nclients++;
	l->handles++;
	if (uv_accept(server, (uv_stream_t *)&tc->h) != 0 || l->nclients > DNS_MAX_TCP_CLIENTS) {
		tc_close(tc);
		return;
	}
	uv_timer_start(&tc->idle, tc_idle, DNS_TCP_IDLE_MS, 0);
	uv_read_start((uv_stream_t *)&tc->h, tc_alloc, tc_read);
}

/* --- listeners --- */

static void
handle_closed(uv_handle_t *h)
{
	listener_unref(h->data);
}

int
dns_listen(struct dns_server *s, const struct dns_listener_cfg *c, struct dns_listener **out)
{
	struct dns_listener *l = calloc(1, sizeof(*l));
	int r = 0;

	*out = NULL;
	if (l == NULL || (l->name = strdup(c->name)) == NULL || (l->ns = strdup(c->ns)) == NULL) {
		if (l != NULL) {
			free(l->name);
			free(l);
		}
		for (int f = 0; f < 2; f++) {
			if (c->udp_fd[f] >= 0)
				close(c->udp_fd[f]);
			if (c->tcp_fd[f] >= 0)
				close(c->tcp_fd[f]);
		}
		return AMESH_ERR_NOMEM;
	}
	l->s = s;
	l->socket_fn = c->socket_fn;
	l->arg = c->arg;
	l->on_closed = c->on_closed;
	l->handles = 1; /* our own, until the end of dns_listener_stop */
	for (int f = 0; f < 2; f++) {
		if (c->udp_fd[f] >= 0) {
			uv_udp_init_ex(s->cfg.loop, &l->udp[f], AF_UNSPEC | UV_UDP_RECVMMSG);
			l->udp[f].data = l;
			l->has_udp[f] = true;
			l->handles++;
			if (r == 0 && (r = uv_udp_open(&l->udp[f], c->udp_fd[f])) != 0)
				close(c->udp_fd[f]);
			else if (r == 0)
				r = uv_udp_recv_start(&l->udp[f], alloc_shared, udp_recv);
			else
				close(c->udp_fd[f]);
		}
		if (c->tcp_fd[f] >= 0) {
			uv_tcp_init(s->cfg.loop, &l->tcp[f]);
			l->tcp[f].data = l;
			l->has_tcp[f] = true;
			l->handles++;
			if (r == 0 && (r = uv_tcp_open(&l->tcp[f], c->tcp_fd[f])) != 0)
				close(c->tcp_fd[f]);
			else if (r == 0)
				r = uv_listen((uv_stream_t *)&l->tcp[f], 128, on_tcp_client);
			else
				close(c->tcp_fd[f]);
		}
	}
	if (r != 0) {
		l->on_closed = NULL;
		dns_listener_stop(l);
		return r;
	}
	*out = l;
	return 0;
}

void
dns_listener_stop(struct dns_listener *l)
{
	if (l->stopping)
		return;
	l->stopping = true;
	while (l->clients != NULL)
		tc_close(l->clients);
	while (l->fwds != NULL) {
		count(l->s, l->fwds->qtype, DNS_RES_DROPPED);
		fwd_release(l->fwds);
	}
	for (int f = 0; f < 2; f++) {
		if (l->has_udp[f])
			uv_close((uv_handle_t *)&l->udp[f], handle_closed);
		if (l->has_tcp[f])
			uv_close((uv_handle_t *)&l->tcp[f], handle_closed);
		l->has_udp[f] = l->has_tcp[f] = false;
	}
	for (int f = 0; f < 2; f++) {
		outq_flush(l, f); /* stopping: frees them unsent */
		free(l->outq[f]);
		l->outq[f] = NULL;
	}
	for (size_t i = 0; i < DNS_MAX_UPSTREAMS; i++)
		if (l->us[i] != NULL) {
			uv_close((uv_handle_t *)&l->us[i]->h, us_closed);
			l->us[i] = NULL;
		}
	listener_unref(l);
}
