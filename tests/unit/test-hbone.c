/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for src/hbone: an HBONE server and a client pool in one process on a private libuv loop, over
 * 127.0.0.1 with identities issued by the mesh CA. Misbehaving peers (silent, refusing, not speaking
 * TLS) are built from tls_conn and plain libuv. Every wait has a deadline, so nothing can hang.
 */
#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "hbone/h2.h"
#include "hbone/hbone.h"
#include "hbone/relay.h"
#include "runner.h"
#include "tls/ca.h"
#include "tls/identity.h"
#include "tls/tls.h"

#define TD "cluster.local"
#define ID_SERVER "spiffe://cluster.local/ns/default/sa/server"
#define ID_SERVER2 "spiffe://cluster.local/ns/default/sa/server2"
#define ID_CLIENT "spiffe://cluster.local/ns/default/sa/client"
#define ID_CLIENT2 "spiffe://cluster.local/ns/default/sa/client2"
#define ID_OTHER "spiffe://cluster.local/ns/default/sa/other"

#define MAX_POOLS 4
#define MAX_SRVS 4
#define MAX_RAWS 2
#define MAX_RELAYS 8
#define MAX_SEEN 8

static uint64_t
now_ms(void)
{
	return uv_hrtime() / 1000000;
}

struct env;

/* --- the echo server --- */

enum srv_mode { SRV_ECHO, SRV_RESET_ON_DATA };

struct srv {
	struct env *e;
	struct hbone_server *h; /* NULL once drained (the server frees itself) */
	int port;
	struct sockaddr_in addr;
	enum srv_mode mode;
	uint32_t reset_code;
	int requests, eofs, closes, resets;
	uint32_t last_err;
	bool drained;
	char peer_id[MAX_SEEN][SPIFFE_ID_MAX];
	char peer_addr[MAX_SEEN][64];
};

/* One server-side tunnel: echoes what it gets, returning the window only for bytes it passed on. */
struct sstream {
	struct srv *sv;
	struct hbone_stream *s;
	uint8_t *buf;
	size_t len, cap;
	bool eof, shut, in_pump, pump_again;
};

/*
 * hbone_stream_write() may call on_writable from inside (its flush made room at once), so the
 * pumps below guard against re-entry and go round again instead, as the relay does.
 */
static void
ss_pump(struct sstream *ss)
{
	size_t n;

	if (ss->in_pump) {
		ss->pump_again = true;
		return;
	}
	ss->in_pump = true;
	do {
		ss->pump_again = false;
		if (ss->len == 0)
			break;
		n = hbone_stream_write(ss->s, ss->buf, ss->len);
		if (n > 0) {
			memmove(ss->buf, ss->buf + n, ss->len - n);
			ss->len -= n;
			hbone_stream_consumed(ss->s, n);
		}
	} while (ss->pump_again);
	ss->in_pump = false;
	if (ss->eof && ss->len == 0 && !ss->shut) {
		ss->shut = true;
		/* May close the stream (and free ss) at once: nothing after this. */
		hbone_stream_shutdown(ss->s);
	}
}

static void
ss_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct sstream *ss = hbone_stream_user(s);

	if (ss->sv->mode == SRV_RESET_ON_DATA) {
		/* on_close runs (and frees ss) inside the reset. */
		hbone_stream_reset(s, ss->sv->reset_code);
		return;
	}
	if (ss->len + len > ss->cap) {
		ss->cap = (ss->len + len) * 2;
		ss->buf = realloc(ss->buf, ss->cap);
		ASSERT(ss->buf != NULL);
	}
	memcpy(ss->buf + ss->len, data, len);
	ss->len += len;
	ss_pump(ss);
}

static void
ss_on_eof(struct hbone_stream *s)
{
	struct sstream *ss = hbone_stream_user(s);

	ss->sv->eofs++;
	ss->eof = true;
	ss_pump(ss);
}

static void
ss_on_writable(struct hbone_stream *s)
{
	ss_pump(hbone_stream_user(s));
}

static void
ss_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct sstream *ss = hbone_stream_user(s);

	ss->sv->closes++;
	ss->sv->resets += reset;
	ss->sv->last_err = err;
	free(ss->buf);
	free(ss);
}

static const struct hbone_stream_cb ss_cb = {
	.on_data = ss_on_data,
	.on_eof = ss_on_eof,
	.on_writable = ss_on_writable,
	.on_close = ss_on_close,
};

static void
srv_on_request(struct hbone_server *hs, struct hbone_stream *s, const struct hbone_request *req)
{
	struct srv *sv = hbone_server_user(hs);
	struct sstream *ss = calloc(1, sizeof(*ss));

	ASSERT(ss != NULL);
	if (sv->requests < MAX_SEEN) {
		snprintf(sv->peer_id[sv->requests], SPIFFE_ID_MAX, "%s", req->peer_id);
		snprintf(sv->peer_addr[sv->requests], 64, "%s", req->peer_addr);
	}
	sv->requests++;
	ASSERT_STREQ(req->authority, "127.0.0.1:9080");
	ASSERT_STREQ(hbone_stream_peer_id(s), req->peer_id);
	ss->sv = sv;
	ss->s = s;
	hbone_stream_set_cb(s, &ss_cb, ss);
	ASSERT_EQ(hbone_stream_respond(s, 200), 0);
}

/* --- client streams --- */

struct cstream {
	struct hbone_stream *s; /* NULL once closed */
	int responses, status;
	const uint8_t *out;     /* what to send once the tunnel is up */
	size_t out_len, out_off;
	bool shut_after;        /* END_STREAM once out is all taken */
	bool shut, in_pump, pump_again;
	uint8_t *in;
	size_t in_len, in_cap;
	uint32_t reset_when_echoed; /* RST_STREAM with this code once out_len bytes came back */
	bool eof, closed, reset;
	uint32_t err;
	int closes;
	uint64_t closed_at;
	struct cstream *more[2]; /* opened from on_response, to more_to */
	struct hbone_pool *more_pool;
	const struct sockaddr_in *more_to;
	struct identity *more_src;
	bool reset_more1; /* and resets more[1] at once (its CONNECT still queued) */
};

static void cs_open(struct hbone_pool *p, struct cstream *cs, struct identity *src,
    const char *dst_id, const struct sockaddr_in *addr);

static void
cs_pump(struct cstream *cs)
{
	if (cs->in_pump) {
		cs->pump_again = true;
		return;
	}
	cs->in_pump = true;
	do {
		cs->pump_again = false;
		while (cs->s != NULL && cs->out_off < cs->out_len) {
			size_t n = hbone_stream_write(cs->s, cs->out + cs->out_off,
			    cs->out_len - cs->out_off);

			if (n == 0)
				break; /* on_writable brings us back */
			cs->out_off += n;
		}
	} while (cs->pump_again);
	cs->in_pump = false;
	if (cs->s != NULL && cs->shut_after && !cs->shut && cs->out_off == cs->out_len) {
		cs->shut = true;
		hbone_stream_shutdown(cs->s);
	}
}

static void
cs_on_response(struct hbone_stream *s, int status)
{
	struct cstream *cs = hbone_stream_user(s);

	cs->responses++;
	cs->status = status;
	for (int i = 0; i < 2; i++)
		if (cs->more[i] != NULL) {
			cs_open(cs->more_pool, cs->more[i], cs->more_src, ID_SERVER, cs->more_to);
			if (i == 1 && cs->reset_more1)
				hbone_stream_reset(cs->more[i]->s, NGHTTP2_CANCEL);
			cs->more[i] = NULL;
		}
	if (status == 200)
		cs_pump(cs);
}

static void
cs_on_data(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct cstream *cs = hbone_stream_user(s);

	if (cs->in_len + len > cs->in_cap) {
		cs->in_cap = (cs->in_len + len) * 2;
		cs->in = realloc(cs->in, cs->in_cap);
		ASSERT(cs->in != NULL);
	}
	memcpy(cs->in + cs->in_len, data, len);
	cs->in_len += len;
	hbone_stream_consumed(s, len);
	if (cs->reset_when_echoed != 0 && cs->in_len == cs->out_len)
		hbone_stream_reset(s, cs->reset_when_echoed);
}

static void
cs_on_eof(struct hbone_stream *s)
{
	struct cstream *cs = hbone_stream_user(s);

	cs->eof = true;
}

static void
cs_on_writable(struct hbone_stream *s)
{
	cs_pump(hbone_stream_user(s));
}

static void
cs_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct cstream *cs = hbone_stream_user(s);

	cs->closes++;
	cs->closed = true;
	cs->reset = reset;
	cs->err = err;
	cs->s = NULL;
	cs->closed_at = now_ms();
}

static const struct hbone_stream_cb cs_cb = {
	.on_data = cs_on_data,
	.on_eof = cs_on_eof,
	.on_writable = cs_on_writable,
	.on_response = cs_on_response,
	.on_close = cs_on_close,
};

/* --- misbehaving peers: raw TLS and plain TCP --- */

enum raw_mode {
	RAW_SILENT,       /* TLS and the server SETTINGS, then reads and discards everything */
	RAW_REFUSE_FIRST, /* first connection: SETTINGS + GOAWAY(last_stream_id 0); then relays on */
	RAW_NO_TLS,       /* accepts and never says a word */
	/* first connection: SETTINGS; once the client has written, in one go: 200 for stream 1,
	 * GOAWAY(last_stream_id 1), close_notify (a peer's drain or upgrade); then relays on */
	RAW_ANSWER_CLOSE_FIRST,
};

struct rconn {
	struct raw *r;
	struct tls_conn *t; /* TLS modes */
	uv_tcp_t *tcp;      /* RAW_NO_TLS */
	struct rconn *next;
};

struct raw {
	struct env *e;
	enum raw_mode mode;
	uv_tcp_t listener;
	bool listener_closed;
	int port;
	struct sockaddr_in addr, fwd;
	struct identity *id;
	int accepted, tls_up, live;
	size_t discarded;
	bool answered;
	struct rconn *conns;
	struct relay *relays[MAX_RELAYS];
	int nrelays, relays_done;
};

struct rfwd {
	uv_connect_t req;
	struct relay *rel;
};

/* --- environment --- */

struct env {
	uv_loop_t loop;
	uv_timer_t tick;
	char dir[256], certs[300], bundle[320];
	struct ca *ca;
	struct identity_store *store;
	struct identity *server, *server2, *client, *client2;
	struct hbone_pool *pools[MAX_POOLS];
	bool pool_drained[MAX_POOLS];
	int npools;
	struct srv *srvs[MAX_SRVS];
	int nsrvs;
	struct raw *raws[MAX_RAWS];
	int nraws;
};

/* Runs the loop until COND holds; fails the test if it does not within MS milliseconds. The tick
 * timer (5 ms) wakes the loop, so the deadline is checked however quiet the sockets are. */
#define WAIT_UNTIL(E, COND, MS)                                                            \
	do {                                                                               \
		uint64_t dl_ = now_ms() + (MS);                                            \
		while (!(COND) && now_ms() < dl_)                                          \
			uv_run(&(E)->loop, UV_RUN_ONCE);                                   \
		if (!(COND)) {                                                             \
			fprintf(stderr, "%s:%d: timed out after %d ms waiting for %s\n",   \
			    __FILE__, __LINE__, (int)(MS), #COND);                         \
			exit(1);                                                           \
		}                                                                          \
	} while (0)

/* Runs the loop for MS milliseconds. */
static void
run_for(struct env *e, uint64_t ms)
{
	uint64_t dl = now_ms() + ms;

	while (now_ms() < dl)
		uv_run(&e->loop, UV_RUN_ONCE);
}

static void
on_tick(uv_timer_t *t)
{
}

static void
must(int r, const char *what, const char *why)
{
	if (r != 0) {
		fprintf(stderr, "%s: %s\n", what, why);
		ASSERT(!"setup step failed");
	}
}

static void
issue(struct env *e, const char *sa)
{
	struct ca_issued *is;
	char why[512];

	must(ca_issue(e->ca, "default", sa, 30, time(NULL), &is, why, sizeof(why)), "ca_issue", why);
	must(ca_issued_write(is, e->certs, why, sizeof(why)), "ca_issued_write", why);
	ca_issued_free(is);
}

static struct identity *
get_id(struct env *e, const char *sa)
{
	struct identity *id = identity_store_get_sa(e->store, "default", sa);

	ASSERT(id != NULL);
	return id;
}

static void
env_init(struct env *e)
{
	struct identity_store_config cfg = { .trust_domain = TD };
	char why[512], cadir[300];

	memset(e, 0, sizeof(*e));
	signal(SIGPIPE, SIG_IGN);
	snprintf(e->dir, sizeof(e->dir), "%s", test_tmpdir());
	snprintf(cadir, sizeof(cadir), "%s/ca", e->dir);
	snprintf(e->bundle, sizeof(e->bundle), "%s/ca.crt", cadir);
	snprintf(e->certs, sizeof(e->certs), "%s/certs", e->dir);
	must(ca_create(TD, 365, time(NULL), &e->ca, why, sizeof(why)), "ca_create", why);
	must(ca_save(e->ca, cadir, why, sizeof(why)), "ca_save", why);
	issue(e, "server");
	issue(e, "server2");
	issue(e, "client");
	issue(e, "client2");
	cfg.cert_dir = e->certs;
	cfg.trust_bundle = e->bundle;
	ASSERT_EQ(identity_store_new(&cfg, &e->store), 0);
	ASSERT_EQ(identity_store_reload(e->store), 4);
	e->server = get_id(e, "server");
	e->server2 = get_id(e, "server2");
	e->client = get_id(e, "client");
	e->client2 = get_id(e, "client2");
	ASSERT_EQ(uv_loop_init(&e->loop), 0);
	uv_timer_init(&e->loop, &e->tick);
	uv_timer_start(&e->tick, on_tick, 5, 5);
}

static struct hbone_pool *
env_pool(struct env *e, const struct hbone_pool_cfg *cfg)
{
	struct hbone_pool *p;

	ASSERT(e->npools < MAX_POOLS);
	ASSERT_EQ(hbone_pool_new(&e->loop, cfg, &p), 0);
	e->pools[e->npools++] = p;
	return p;
}

static void
set_flag(void *arg)
{
	*(bool *)arg = true;
}

static struct srv *
env_server(struct env *e, struct identity *id, uint32_t max_streams)
{
	struct srv *sv = calloc(1, sizeof(*sv));
	struct sockaddr_in any;
	struct hbone_server_cfg cfg = {
		.fd = -1, .id = id, .trust_domain = TD, .handshake_timeout_ms = 2000,
		.max_streams = max_streams, .on_request = srv_on_request,
	};

	ASSERT(sv != NULL && e->nsrvs < MAX_SRVS);
	ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &any), 0);
	cfg.addr = (const struct sockaddr *)&any;
	cfg.user = sv;
	sv->e = e;
	ASSERT_EQ(hbone_server_listen(&e->loop, &cfg, &sv->h), 0);
	sv->port = hbone_server_port(sv->h);
	ASSERT(sv->port > 0);
	ASSERT_EQ(uv_ip4_addr("127.0.0.1", sv->port, &sv->addr), 0);
	e->srvs[e->nsrvs++] = sv;
	return sv;
}

static void
srv_drain(struct srv *sv, uint64_t timeout_ms)
{
	struct hbone_server *h = sv->h;

	sv->h = NULL;
	hbone_server_drain(h, timeout_ms, set_flag, &sv->drained);
}

static void
srv_stats(struct srv *sv, struct hbone_server_stats *st)
{
	ASSERT(sv->h != NULL);
	hbone_server_stats(sv->h, st);
}

static void
pool_stats(struct hbone_pool *p, struct hbone_pool_stats *st)
{
	hbone_pool_stats(p, st);
}

/* Opens a tunnel from src to addr expecting the server to be dst_id. */
static void
cs_open(struct hbone_pool *p, struct cstream *cs, struct identity *src, const char *dst_id,
    const struct sockaddr_in *addr)
{
	struct hbone_open o = {
		.src = src, .dst_id = dst_id, .dst = (const struct sockaddr *)addr,
		.authority = "127.0.0.1:9080", .forwarded = "for=\"10.0.0.1:4242\"",
	};

	ASSERT_EQ(hbone_pool_open(p, &o, &cs_cb, cs, &cs->s), 0);
	ASSERT(cs->s != NULL);
}

static void
cs_free(struct cstream *cs)
{
	free(cs->in);
	cs->in = NULL;
}

static uint8_t *
pattern(size_t n, unsigned seed)
{
	uint8_t *b = malloc(n);

	ASSERT(b != NULL);
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (uint8_t)(seed >> 16);
	}
	return b;
}

/* --- raw peers --- */

static void
rconn_unlink(struct rconn *rc)
{
	struct raw *r = rc->r;
	struct rconn **pp;

	for (pp = &r->conns; *pp != NULL; pp = &(*pp)->next)
		if (*pp == rc) {
			*pp = rc->next;
			break;
		}
	r->live--;
}

static void
raw_on_handshake(struct tls_conn *t, int status)
{
	struct rconn *rc = tls_conn_user(t);
	/* An empty SETTINGS frame (the server preface), then GOAWAY(last_stream_id 0, NO_ERROR). */
	static const uint8_t settings[9] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };
	static const uint8_t goaway[17] = { 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };

	if (status != 0)
		return;
	rc->r->tls_up++;
	ASSERT_EQ(tls_conn_write(t, settings, sizeof(settings)), 0);
	if (rc->r->mode == RAW_REFUSE_FIRST)
		ASSERT_EQ(tls_conn_write(t, goaway, sizeof(goaway)), 0);
}

static void
raw_on_read(struct tls_conn *t, const uint8_t *data, size_t len)
{
	struct rconn *rc = tls_conn_user(t);

	/* HEADERS(:status 200, END_HEADERS) on stream 1; GOAWAY(last_stream_id 1, NO_ERROR). */
	static const uint8_t ok[10] = { 0, 0, 1, 1, 4, 0, 0, 0, 1, 0x88 };
	static const uint8_t goaway[17] = { 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };

	if (len == 0) {
		tls_conn_close(t);
		return;
	}
	rc->r->discarded += len;
	if (rc->r->mode == RAW_ANSWER_CLOSE_FIRST && !rc->r->answered) {
		rc->r->answered = true;
		ASSERT_EQ(tls_conn_write(t, ok, sizeof(ok)), 0);
		ASSERT_EQ(tls_conn_write(t, goaway, sizeof(goaway)), 0);
		tls_conn_close(t);
	}
}

static void
raw_on_close(struct tls_conn *t)
{
	struct rconn *rc = tls_conn_user(t);

	rconn_unlink(rc);
	free(rc);
}

static const struct tls_conn_cb raw_tls_cb = {
	.on_handshake = raw_on_handshake,
	.on_read = raw_on_read,
	.on_close = raw_on_close,
};

static void
raw_relay_done(struct relay *rel, const struct relay_stats *st, void *user)
{
	struct raw *r = user;

	for (int i = 0; i < r->nrelays; i++)
		if (r->relays[i] == rel)
			r->relays[i] = NULL;
	r->relays_done++;
	r->live--;
}

static void
raw_fwd_connected(uv_connect_t *req, int status)
{
	struct rfwd *f = req->data;

	if (status == 0)
		relay_start_tcp(f->rel);
	else if (status != UV_ECANCELED)
		relay_abort(f->rel);
	free(f);
}

static void
plain_closed(uv_handle_t *h)
{
	struct rconn *rc = h->data;

	free(rc->tcp);
	rconn_unlink(rc);
	free(rc);
}

static void
raw_on_connection(uv_stream_t *l, int status)
{
	struct raw *r = l->data;
	struct tls_conn_opts o = {
		.id = r->id, .trust_domain = TD, .handshake_timeout_ms = 2000,
	};
	struct rconn *rc;

	ASSERT_EQ(status, 0);
	r->accepted++;
	if ((r->mode == RAW_REFUSE_FIRST || r->mode == RAW_ANSWER_CLOSE_FIRST) && r->accepted > 1) {
		/* Later connections go through to the real server: TLS end to end over a relay. */
		struct relay_cfg rcfg = { .on_done = raw_relay_done, .user = r };
		struct rfwd *f = calloc(1, sizeof(*f));

		ASSERT(f != NULL && r->nrelays < MAX_RELAYS);
		f->rel = relay_new(l->loop, &rcfg);
		ASSERT(f->rel != NULL);
		r->relays[r->nrelays++] = f->rel;
		r->live++;
		ASSERT_EQ(uv_accept(l, (uv_stream_t *)relay_tcp_a(f->rel)), 0);
		f->req.data = f;
		ASSERT_EQ(uv_tcp_connect(&f->req, relay_tcp_b(f->rel),
		    (const struct sockaddr *)&r->fwd, raw_fwd_connected), 0);
		return;
	}
	rc = calloc(1, sizeof(*rc));
	ASSERT(rc != NULL);
	rc->r = r;
	if (r->mode == RAW_NO_TLS) {
		rc->tcp = malloc(sizeof(*rc->tcp));
		ASSERT(rc->tcp != NULL);
		uv_tcp_init(l->loop, rc->tcp);
		rc->tcp->data = rc;
		ASSERT_EQ(uv_accept(l, (uv_stream_t *)rc->tcp), 0);
	} else {
		ASSERT_EQ(tls_conn_accept(l, &o, &raw_tls_cb, rc, &rc->t), 0);
	}
	rc->next = r->conns;
	r->conns = rc;
	r->live++;
}

static struct raw *
env_raw(struct env *e, enum raw_mode mode, struct identity *id)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	ASSERT(r != NULL && e->nraws < MAX_RAWS);
	r->e = e;
	r->mode = mode;
	r->id = id;
	uv_tcp_init(&e->loop, &r->listener);
	r->listener.data = r;
	ASSERT_EQ(uv_ip4_addr("127.0.0.1", 0, &r->addr), 0);
	ASSERT_EQ(uv_tcp_bind(&r->listener, (const struct sockaddr *)&r->addr, 0), 0);
	ASSERT_EQ(uv_listen((uv_stream_t *)&r->listener, 64, raw_on_connection), 0);
	ASSERT_EQ(uv_tcp_getsockname(&r->listener, (struct sockaddr *)&ss, &len), 0);
	r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	ASSERT_EQ(uv_ip4_addr("127.0.0.1", r->port, &r->addr), 0);
	e->raws[e->nraws++] = r;
	return r;
}

static void
raw_listener_closed(uv_handle_t *h)
{
	struct raw *r = h->data;

	r->listener_closed = true;
}

static void
raw_close(struct raw *r)
{
	struct rconn *rc, *next;

	if (!uv_is_closing((uv_handle_t *)&r->listener))
		uv_close((uv_handle_t *)&r->listener, raw_listener_closed);
	for (rc = r->conns; rc != NULL; rc = next) {
		next = rc->next;
		if (rc->t != NULL)
			tls_conn_abort(rc->t);
		else if (!uv_is_closing((uv_handle_t *)rc->tcp))
			uv_close((uv_handle_t *)rc->tcp, plain_closed);
	}
	for (int i = 0; i < r->nrelays; i++)
		if (r->relays[i] != NULL)
			relay_abort(r->relays[i]);
}

/* Drains every pool and server, closes the raw peers, and checks the loop ends with no handle open. */
static void
env_done(struct env *e)
{
	uint64_t dl = now_ms() + 3000;
	bool all;
	int i;

	for (i = 0; i < e->npools; i++)
		if (!e->pool_drained[i]) /* a drained pool is freed: a test drained it itself */
			hbone_pool_drain(e->pools[i], 0, set_flag, &e->pool_drained[i]);
	for (i = 0; i < e->nsrvs; i++)
		if (e->srvs[i]->h != NULL)
			srv_drain(e->srvs[i], 0);
	for (i = 0; i < e->nraws; i++)
		raw_close(e->raws[i]);
	for (;;) {
		all = true;
		for (i = 0; i < e->npools; i++)
			all = all && e->pool_drained[i];
		for (i = 0; i < e->nsrvs; i++)
			all = all && e->srvs[i]->drained;
		for (i = 0; i < e->nraws; i++)
			all = all && e->raws[i]->listener_closed && e->raws[i]->live == 0;
		if (all || now_ms() >= dl)
			break;
		uv_run(&e->loop, UV_RUN_ONCE);
	}
	ASSERT(all);
	uv_close((uv_handle_t *)&e->tick, NULL);
	for (i = 0; i < 100 && uv_loop_alive(&e->loop); i++)
		uv_run(&e->loop, UV_RUN_NOWAIT);
	if (uv_loop_alive(&e->loop))
		uv_print_all_handles(&e->loop, stderr);
	ASSERT(!uv_loop_alive(&e->loop));
	ASSERT_EQ(uv_loop_close(&e->loop), 0);
	for (i = 0; i < e->nsrvs; i++)
		free(e->srvs[i]);
	for (i = 0; i < e->nraws; i++)
		free(e->raws[i]);
	identity_unref(e->server);
	identity_unref(e->server2);
	identity_unref(e->client);
	identity_unref(e->client2);
	identity_store_free(e->store);
	ca_free(e->ca);
}

/* Sends stderr to a file until capture_end(), which returns what was written (caller frees). */
struct capture {
	char path[512];
	int saved;
};

static void
capture_start(struct env *e, struct capture *c)
{
	int fd;

	snprintf(c->path, sizeof(c->path), "%s/stderr.txt", e->dir);
	fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	c->saved = dup(STDERR_FILENO);
	ASSERT(fd >= 0 && c->saved >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static char *
capture_end(struct capture *c)
{
	char *buf = calloc(1, 65536);
	FILE *fp;

	dup2(c->saved, STDERR_FILENO);
	close(c->saved);
	fp = fopen(c->path, "r");
	ASSERT(fp != NULL && buf != NULL);
	ASSERT(fread(buf, 1, 65535, fp) > 0 || !ferror(fp));
	fclose(fp);
	fputs(buf, stderr);
	return buf;
}

/* --- tests --- */

TEST(hbone_tunnel_echo)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream cs = { 0 };
	struct hbone_pool_stats ps;
	struct hbone_server_stats ss;
	/* Larger than the stream window and the send buffer: flow control has to work both ways. */
	size_t n = 1024 * 1024 + 123;
	uint8_t *data = pattern(n, 1);

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);
	cs.out = data;
	cs.out_len = n;
	cs.shut_after = true;
	cs_open(p, &cs, e.client, ID_SERVER, &sv->addr);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.streams, 1);
	ASSERT_EQ(ps.connections, 1);

	WAIT_UNTIL(&e, cs.closed && sv->closes == 1, 3000);
	ASSERT_EQ(cs.responses, 1);
	ASSERT_EQ(cs.status, 200);
	ASSERT_EQ(cs.in_len, n);
	for (size_t i = 0; i < n; i++)
		if (cs.in[i] != data[i]) {
			fprintf(stderr, "first difference at byte %zu of %zu\n", i, n);
			break;
		}
	ASSERT(memcmp(cs.in, data, n) == 0);
	/* Our END_STREAM reached the server as EOF; its END_STREAM came back the same way. */
	ASSERT_EQ(sv->eofs, 1);
	ASSERT(cs.eof);
	ASSERT_EQ(cs.closes, 1);
	ASSERT(!cs.reset);
	ASSERT_EQ(cs.err, 0);
	ASSERT_EQ(sv->resets, 0);
	ASSERT_EQ(sv->last_err, 0);
	ASSERT_STREQ(sv->peer_id[0], ID_CLIENT);
	ASSERT(strncmp(sv->peer_addr[0], "127.0.0.1:", 10) == 0);

	pool_stats(p, &ps);
	ASSERT_EQ(ps.streams, 0);
	ASSERT_EQ(ps.connections, 1);
	ASSERT_EQ(ps.connections_opened, 1);
	ASSERT_EQ(ps.streams_opened, 1);
	ASSERT_EQ(ps.connect_failures, 0);
	ASSERT_EQ(ps.streams_retried, 0);
	srv_stats(sv, &ss);
	ASSERT_EQ(ss.connections_accepted, 1);
	ASSERT_EQ(ss.connections_open, 1);
	ASSERT_EQ(ss.streams_opened, 1);
	ASSERT_EQ(ss.streams_open, 0);
	ASSERT_EQ(ss.handshakes_failed, 0);

	cs_free(&cs);
	free(data);
	env_done(&e);
}

TEST(hbone_reset_mapping)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream a = { 0 }, b = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t hello[] = "hello through the tunnel";

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);

	/* Server resets with CANCEL (0x8) when data arrives: the client sees that code. */
	sv->mode = SRV_RESET_ON_DATA;
	sv->reset_code = 0x8;
	a.out = hello;
	a.out_len = sizeof(hello);
	cs_open(p, &a, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, a.closed && sv->closes == 1, 2000);
	ASSERT_EQ(a.responses, 1);
	ASSERT_EQ(a.status, 200);
	ASSERT(a.reset);
	ASSERT_EQ(a.err, 0x8);
	ASSERT(!a.eof);
	ASSERT_EQ(sv->resets, 1);
	ASSERT_EQ(sv->last_err, 0x8);

	/* The other way: the client resets after its echo came back; the server sees the code. */
	sv->mode = SRV_ECHO;
	b.out = hello;
	b.out_len = sizeof(hello);
	b.reset_when_echoed = 0x8;
	cs_open(p, &b, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, b.closed && sv->closes == 2, 2000);
	ASSERT_EQ(b.status, 200);
	ASSERT_EQ(b.in_len, sizeof(hello));
	ASSERT(memcmp(b.in, hello, sizeof(hello)) == 0);
	ASSERT(b.reset);
	ASSERT_EQ(b.err, 0x8);
	ASSERT_EQ(sv->resets, 2);
	ASSERT_EQ(sv->last_err, 0x8);
	ASSERT_EQ(sv->eofs, 0);

	/* A reset is per stream: the connection carried both and is still there. */
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections, 1);
	ASSERT_EQ(ps.connections_opened, 1);
	ASSERT_EQ(ps.streams, 0);
	cs_free(&a);
	cs_free(&b);
	env_done(&e);
}

TEST(hbone_idle_release)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000, .idle_timeout_ms = 300 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream a = { 0 }, b = { 0 };
	struct hbone_pool_stats ps;
	struct hbone_server_stats ss;
	static const uint8_t msg[] = "idle soon";
	uint64_t t0, t1;

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);
	a.out = msg;
	a.out_len = sizeof(msg);
	a.shut_after = true;
	cs_open(p, &a, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, a.closed, 2000);
	ASSERT(!a.reset && a.in_len == sizeof(msg));
	t0 = now_ms();
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections, 1);

	/* Released 300 ms after its last stream (checked on a 150 ms tick), by both ends. */
	WAIT_UNTIL(&e, (pool_stats(p, &ps), ps.connections == 0), 1000);
	t1 = now_ms();
	fprintf(stderr, "released after %llu ms\n", (unsigned long long)(t1 - t0));
	ASSERT(t1 - t0 >= 250);
	WAIT_UNTIL(&e, (srv_stats(sv, &ss), ss.connections_open == 0), 1000);

	/* The next stream makes a new connection. */
	b.out = msg;
	b.out_len = sizeof(msg);
	b.shut_after = true;
	cs_open(p, &b, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, b.closed, 2000);
	ASSERT_EQ(b.status, 200);
	ASSERT(!b.reset && b.in_len == sizeof(msg));
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections_opened, 2);
	ASSERT_EQ(ps.connect_failures, 0);
	srv_stats(sv, &ss);
	ASSERT_EQ(ss.connections_accepted, 2);
	cs_free(&a);
	cs_free(&b);
	env_done(&e);
}

TEST(hbone_ping_keepalive)
{
	struct env e;
	struct hbone_pool_cfg pc = {
		.connect_timeout_ms = 2000, .ping_interval_ms = 100, .ping_timeout_ms = 300,
	};
	struct hbone_pool *p;
	struct srv *sv;
	struct raw *silent;
	struct cstream a = { 0 }, b = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t msg[] = "still here";
	uint64_t t0, t1, seen;

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);

	/* A healthy connection with an open but quiet stream: PINGs are answered, nothing drops. */
	cs_open(p, &a, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, a.responses == 1, 2000);
	ASSERT_EQ(a.status, 200);
	seen = a.s->conn->last_activity;
	run_for(&e, 1200);
	ASSERT(!a.closed);
	/* Frames kept arriving on the quiet connection: only PING ACKs can have. */
	fprintf(stderr, "last frame %llu ms after the response\n",
	    (unsigned long long)(a.s->conn->last_activity - seen));
	ASSERT(a.s->conn->last_activity - seen >= 900);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections, 1);
	ASSERT_EQ(ps.connections_opened, 1);
	/* And the tunnel still works. */
	a.out = msg;
	a.out_len = sizeof(msg);
	a.shut_after = true;
	cs_pump(&a);
	WAIT_UNTIL(&e, a.closed, 2000);
	ASSERT(!a.reset);
	ASSERT_EQ(a.in_len, sizeof(msg));

	/* A peer that completes TLS and sends its SETTINGS, then never answers anything. */
	silent = env_raw(&e, RAW_SILENT, e.server);
	t0 = now_ms();
	cs_open(p, &b, e.client, ID_SERVER, &silent->addr);
	WAIT_UNTIL(&e, b.closed, 1500);
	t1 = now_ms();
	fprintf(stderr, "silent peer dropped after %llu ms\n", (unsigned long long)(t1 - t0));
	ASSERT(t1 - t0 <= 1000);
	ASSERT_EQ(silent->tls_up, 1);
	ASSERT(silent->discarded > 0);
	ASSERT_EQ(b.responses, 1);
	ASSERT(b.status < 0);
	ASSERT(b.reset);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections_opened, 2);
	ASSERT_EQ(ps.connections, 1); /* the healthy one stays */
	cs_free(&a);
	cs_free(&b);
	env_done(&e);
}

TEST(hbone_goaway_drain)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream a = { 0 }, b = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t one[] = "before the drain", two[] = "after the GOAWAY";
	uint8_t both[sizeof(one) + sizeof(two)];
	uint64_t t0;

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);
	a.out = one;
	a.out_len = sizeof(one);
	cs_open(p, &a, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, a.in_len == sizeof(one), 2000);

	/* Drain: stop listening, GOAWAY. The client's connection hears it. */
	t0 = now_ms();
	srv_drain(sv, 2000);
	WAIT_UNTIL(&e, a.s != NULL && a.s->conn != NULL && a.s->conn->goaway_recv, 1000);

	/*
	 * A new stream must not go on the GOAWAY'd connection; the pool opens another, and that one
	 * fails cleanly because the server no longer listens.
	 */
	cs_open(p, &b, e.client, ID_SERVER, &sv->addr);
	ASSERT(b.s->conn != a.s->conn);
	WAIT_UNTIL(&e, b.closed, 2000);
	ASSERT_EQ(b.responses, 1);
	ASSERT(b.status < 0);
	ASSERT(b.reset);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections_opened, 2);
	ASSERT_EQ(ps.connect_failures, 1);

	/* The open stream still carries its echo both ways and ends cleanly. */
	ASSERT(!a.closed);
	memcpy(both, one, sizeof(one));
	memcpy(both + sizeof(one), two, sizeof(two));
	a.out = both;
	a.out_len = sizeof(both);
	a.shut_after = true;
	cs_pump(&a);
	WAIT_UNTIL(&e, a.closed, 2000);
	ASSERT(!a.reset);
	ASSERT(a.eof);
	ASSERT_EQ(a.in_len, sizeof(both));
	ASSERT(memcmp(a.in, both, sizeof(both)) == 0);
	ASSERT_EQ(sv->closes, 1);
	ASSERT_EQ(sv->resets, 0);
	ASSERT_EQ(sv->requests, 1);

	/* With its last stream done the server closes and frees itself, well before the timeout. */
	WAIT_UNTIL(&e, sv->drained, 1500);
	fprintf(stderr, "drained after %llu ms\n", (unsigned long long)(now_ms() - t0));
	ASSERT(now_ms() - t0 < 1900);
	WAIT_UNTIL(&e, (pool_stats(p, &ps), ps.connections == 0), 1000);
	cs_free(&a);
	cs_free(&b);
	env_done(&e);
}

TEST(hbone_refused_stream_retried)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct raw *front;
	struct cstream a = { 0 }, b = { 0 }, c = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t msg[] = "second time lucky";

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	/*
	 * One address: its first connection is a raw peer that answers the handshake with SETTINGS
	 * and GOAWAY(last_stream_id 0), so the stream already sent is refused (REFUSED_STREAM) before
	 * any data; later connections are relayed to the real server.
	 */
	front = env_raw(&e, RAW_REFUSE_FIRST, e.server);
	front->fwd = sv->addr;
	p = env_pool(&e, &pc);
	a.out = msg;
	a.out_len = sizeof(msg);
	a.shut_after = true;
	cs_open(p, &a, e.client, ID_SERVER, &front->addr);
	WAIT_UNTIL(&e, a.closed, 3000);
	ASSERT_EQ(front->accepted, 2);
	ASSERT_EQ(front->tls_up, 1);
	/* The owner never heard of the refusal: one response, 200, and a clean tunnel. */
	ASSERT_EQ(a.responses, 1);
	ASSERT_EQ(a.status, 200);
	ASSERT_EQ(a.closes, 1);
	ASSERT(!a.reset);
	ASSERT_EQ(a.in_len, sizeof(msg));
	ASSERT(memcmp(a.in, msg, sizeof(msg)) == 0);
	ASSERT_EQ(sv->requests, 1);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.streams_retried, 1);
	ASSERT_EQ(ps.connections_opened, 2);
	ASSERT_EQ(ps.connect_failures, 0);
	ASSERT_EQ(ps.streams_opened, 1);

	/*
	 * The same through the real server's stream limit: max_streams 1, and two streams sent before
	 * its SETTINGS arrive; the second is refused (nghttp2 refuses past the unacknowledged limit)
	 * and goes to a new connection.
	 */
	{
		struct srv *one = env_server(&e, e.server, 1);
		struct hbone_pool *p2 = env_pool(&e, &pc);

		b.out = c.out = msg;
		b.out_len = c.out_len = sizeof(msg);
		b.shut_after = c.shut_after = true;
		cs_open(p2, &b, e.client, ID_SERVER, &one->addr);
		cs_open(p2, &c, e.client, ID_SERVER, &one->addr);
		WAIT_UNTIL(&e, b.closed && c.closed, 3000);
		ASSERT(b.status == 200 && c.status == 200);
		ASSERT(b.responses == 1 && c.responses == 1);
		ASSERT(!b.reset && !c.reset);
		ASSERT(b.in_len == sizeof(msg) && c.in_len == sizeof(msg));
		pool_stats(p2, &ps);
		ASSERT_EQ(ps.streams_retried, 1);
		ASSERT_EQ(ps.connections_opened, 2);
		ASSERT_EQ(one->requests, 2);
	}
	cs_free(&a);
	cs_free(&b);
	cs_free(&c);
	env_done(&e);
}

/*
 * A peer that drains (or hands over to its next process) with nothing of ours left in flight sends
 * GOAWAY and close_notify at once. Streams placed on that connection in the same loop turn, whose
 * CONNECT had not left yet, go to a new connection; they used to be reset with the connection.
 */
TEST(hbone_unsent_streams_move_on_close)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct raw *front;
	struct cstream a = { 0 }, b = { 0 }, c = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t msg[] = "moved, not reset";

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	front = env_raw(&e, RAW_ANSWER_CLOSE_FIRST, e.server);
	front->fwd = sv->addr;
	p = env_pool(&e, &pc);
	/* b and c are opened from a's response, read in the same go as the GOAWAY and close_notify. */
	a.more[0] = &b;
	a.more[1] = &c;
	a.more_pool = p;
	a.more_to = &front->addr;
	a.more_src = e.client;
	b.out = c.out = msg;
	b.out_len = c.out_len = sizeof(msg);
	b.shut_after = c.shut_after = true;
	cs_open(p, &a, e.client, ID_SERVER, &front->addr);
	WAIT_UNTIL(&e, a.closed && b.closed && c.closed, 3000);
	ASSERT_EQ(a.status, 200);
	ASSERT_EQ(b.status, 200);
	ASSERT_EQ(c.status, 200);
	ASSERT(!b.reset && !c.reset);
	ASSERT(b.in_len == sizeof(msg) && c.in_len == sizeof(msg));
	ASSERT_EQ(sv->requests, 2);
	ASSERT_EQ(front->accepted, 2);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.streams_retried, 2);
	ASSERT_EQ(ps.connections_opened, 2);
	cs_free(&a);
	cs_free(&b);
	cs_free(&c);
	env_done(&e);
}

/* The same, but the owner resets one of the two before the close: that one stays reset, it is not
 * sent again on the new connection (only the other reaches the server). */
TEST(hbone_reset_unsent_stream_not_moved)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct raw *front;
	struct cstream a = { 0 }, b = { 0 }, c = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t msg[] = "only b";

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	front = env_raw(&e, RAW_ANSWER_CLOSE_FIRST, e.server);
	front->fwd = sv->addr;
	p = env_pool(&e, &pc);
	a.more[0] = &b;
	a.more[1] = &c;
	a.more_pool = p;
	a.more_to = &front->addr;
	a.more_src = e.client;
	a.reset_more1 = true;
	b.out = msg;
	b.out_len = sizeof(msg);
	b.shut_after = true;
	cs_open(p, &a, e.client, ID_SERVER, &front->addr);
	WAIT_UNTIL(&e, a.closed && b.closed && c.closed, 3000);
	ASSERT_EQ(b.status, 200);
	ASSERT(b.in_len == sizeof(msg) && !b.reset);
	ASSERT(c.reset && c.status != 200);
	run_for(&e, 100);
	ASSERT_EQ(sv->requests, 1);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.streams_retried, 1);
	cs_free(&a);
	cs_free(&b);
	cs_free(&c);
	env_done(&e);
}

/*
 * A draining pool lets a stream it had taken finish, on a new connection if the peer refused it;
 * that connection closes with the stream, so the drain ends then, not at its deadline.
 */
TEST(hbone_pool_drain_closes_retry_connection)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct raw *front;
	struct cstream a = { 0 };
	static const uint8_t msg[] = "finished during the drain";
	uint64_t t0;

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	front = env_raw(&e, RAW_REFUSE_FIRST, e.server);
	front->fwd = sv->addr;
	p = env_pool(&e, &pc);
	a.out = msg;
	a.out_len = sizeof(msg);
	a.shut_after = true;
	cs_open(p, &a, e.client, ID_SERVER, &front->addr);
	/* Its flag is env_done's: a pool drained (and so freed) here is not drained again there. */
	hbone_pool_drain(p, 10000, set_flag, &e.pool_drained[e.npools - 1]);
	t0 = now_ms();
	WAIT_UNTIL(&e, a.closed, 3000);
	ASSERT_EQ(a.status, 200);
	ASSERT(a.in_len == sizeof(msg) && !a.reset);
	ASSERT_EQ(front->accepted, 2);
	WAIT_UNTIL(&e, e.pool_drained[e.npools - 1], 3000);
	fprintf(stderr, "pool drained %llu ms after the drain began\n",
	    (unsigned long long)(now_ms() - t0));
	cs_free(&a);
	env_done(&e);
}

/* Makes cs send msg and END_STREAM once its tunnel is up. */
static void
echo_msg(struct cstream *cs, const uint8_t *msg, size_t len)
{
	cs->out = msg;
	cs->out_len = len;
	cs->shut_after = true;
}

/* How many of the n streams have had their response (or, with closed, their on_close). */
static int
count(const struct cstream *cs, int n, bool closed)
{
	int k = 0;

	for (int i = 0; i < n; i++)
		k += closed ? cs[i].closed : cs[i].responses > 0;
	return k;
}

/*
 * A pooled connection shared by many owners never reaches the peer's flood limit by their resets
 * (hbone/h2flood.h): streams opened and reset in one loop turn cost no frame, and RST_STREAMs of
 * open streams go out H2_RELAY_RST_BURST at once, then H2_RELAY_RST_RATE a second.
 */
TEST(hbone_pool_resets_paced)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000, .max_streams = 1000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream *cs, keep = { 0 };
	struct hbone_pool_stats ps;
	static const uint8_t msg[] = "still here";
	const int k = 100, n = H2_RELAY_RST_BURST + H2_RELAY_RST_RATE;
	uint64_t t0, t1;
	int now;

	env_init(&e);
	sv = env_server(&e, e.server, 1000);
	p = env_pool(&e, &pc);
	cs = calloc((size_t)(k + n), sizeof(*cs));
	ASSERT(cs != NULL);
	/* A bystander on the connection. */
	cs_open(p, &keep, e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, keep.responses == 1, 2000);
	ASSERT_EQ(keep.status, 200);

	/* Opened and reset in the same turn: their HEADERS never leave. */
	for (int i = 0; i < k; i++) {
		cs_open(p, &cs[i], e.client, ID_SERVER, &sv->addr);
		ASSERT(cs[i].s->conn == keep.s->conn);
	}
	for (int i = 0; i < k; i++)
		hbone_stream_reset(cs[i].s, NGHTTP2_CANCEL);
	WAIT_UNTIL(&e, count(cs, k, true) == k, 1000);
	run_for(&e, 50);
	ASSERT_EQ(sv->requests, 1);
	ASSERT_EQ(sv->resets, 0);
	for (int i = 0; i < k; i++)
		ASSERT(cs[i].reset && cs[i].err == NGHTTP2_CANCEL && cs[i].closes == 1);

	/* Open ones, all reset at once: the budget's worth now, the rest paced. */
	for (int i = k; i < k + n; i++)
		cs_open(p, &cs[i], e.client, ID_SERVER, &sv->addr);
	WAIT_UNTIL(&e, count(cs + k, n, false) == n && sv->requests == 1 + n, 3000);
	t0 = now_ms();
	for (int i = k; i < k + n; i++)
		hbone_stream_reset(cs[i].s, NGHTTP2_CANCEL);
	run_for(&e, 200);
	now = sv->resets;
	t1 = now_ms();
	fprintf(stderr, "%d of %d resets within %llu ms\n", now, n, (unsigned long long)(t1 - t0));
	ASSERT(now >= H2_RELAY_RST_BURST);
	ASSERT((uint64_t)now <= H2_RELAY_RST_BURST + H2_RELAY_RST_RATE * (t1 - t0) / 1000 + 2);
	/* The owners of those waiting hear of their end only when their reset went. */
	ASSERT(count(cs + k, n, true) <= now + 1);
	WAIT_UNTIL(&e, sv->resets == n && count(cs + k, n, true) == n, 3000);
	t1 = now_ms();
	fprintf(stderr, "all %d after %llu ms\n", n, (unsigned long long)(t1 - t0));
	ASSERT(t1 - t0 >= 900);

	/* The connection was never sent GOAWAY, and the bystander's tunnel still works. */
	ASSERT(keep.s != NULL && !keep.s->conn->goaway_recv);
	echo_msg(&keep, msg, sizeof(msg));
	cs_pump(&keep);
	WAIT_UNTIL(&e, keep.closed, 2000);
	ASSERT(!keep.reset);
	ASSERT_EQ(keep.in_len, sizeof(msg));
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections_opened, 1);
	for (int i = 0; i < k + n; i++)
		cs_free(&cs[i]);
	free(cs);
	cs_free(&keep);
	env_done(&e);
}

TEST(hbone_pool_per_key)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p, *p2;
	struct srv *s1, *s2, *s3;
	struct cstream a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 }, x = { 0 }, f = { 0 };
	struct cstream *many;
	struct hbone_pool_stats ps;
	struct hbone_server_stats ss;
	static const uint8_t msg[] = "k";
	int n = 150;

	env_init(&e);
	s1 = env_server(&e, e.server, 0);
	s2 = env_server(&e, e.server, 0);  /* same identity, another address */
	s3 = env_server(&e, e.server2, 0); /* another identity */
	p = env_pool(&e, &pc);
	echo_msg(&a, msg, sizeof(msg));
	echo_msg(&b, msg, sizeof(msg));
	echo_msg(&c, msg, sizeof(msg));
	echo_msg(&d, msg, sizeof(msg));
	echo_msg(&x, msg, sizeof(msg));
	echo_msg(&f, msg, sizeof(msg));
	cs_open(p, &a, e.client, ID_SERVER, &s1->addr);
	cs_open(p, &b, e.client, ID_SERVER, &s1->addr);   /* same key as a: same connection */
	ASSERT(a.s->conn == b.s->conn);
	cs_open(p, &c, e.client, ID_SERVER, &s2->addr);   /* another address */
	cs_open(p, &d, e.client, ID_SERVER2, &s3->addr);  /* another destination identity */
	cs_open(p, &x, e.client2, ID_SERVER, &s1->addr);  /* another source identity */
	/* Another destination identity at s1's address: never a connection verified for another. */
	cs_open(p, &f, e.client, ID_OTHER, &s1->addr);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connections, 5);
	ASSERT_EQ(ps.connections_opened, 5);
	ASSERT_EQ(ps.streams, 6);
	WAIT_UNTIL(&e, a.closed && b.closed && c.closed && d.closed && x.closed && f.closed, 3000);
	ASSERT(a.status == 200 && b.status == 200 && c.status == 200 && d.status == 200 &&
	    x.status == 200);
	ASSERT(!a.reset && !b.reset && !c.reset && !d.reset && !x.reset);
	ASSERT(f.status < 0 && f.reset);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connect_failures, 1);
	/* s1 saw a and b on one connection (one client port) as client, x as client2. */
	ASSERT_EQ(s1->requests, 3);
	{
		int ia = -1, ix = -1, nclient = 0;

		for (int i = 0; i < 3; i++) {
			if (strcmp(s1->peer_id[i], ID_CLIENT) == 0) {
				if (ia < 0)
					ia = i;
				else
					ASSERT_STREQ(s1->peer_addr[i], s1->peer_addr[ia]);
				nclient++;
			} else {
				ASSERT_STREQ(s1->peer_id[i], ID_CLIENT2);
				ix = i;
			}
		}
		ASSERT(nclient == 2 && ix >= 0 && ia >= 0);
		ASSERT(strcmp(s1->peer_addr[ix], s1->peer_addr[ia]) != 0);
	}
	srv_stats(s1, &ss);
	ASSERT_EQ(ss.connections_accepted, 3); /* a+b, x, and f's refused handshake */
	ASSERT_EQ(ss.handshakes_failed, 1);
	ASSERT_EQ(s2->requests, 1);
	ASSERT_EQ(s3->requests, 1);
	ASSERT_STREQ(s3->peer_id[0], ID_CLIENT);

	/* 150 streams to one key, 100 per connection: two connections. */
	p2 = env_pool(&e, &(struct hbone_pool_cfg){ .connect_timeout_ms = 2000, .max_streams = 100 });
	many = calloc((size_t)n, sizeof(*many));
	ASSERT(many != NULL);
	for (int i = 0; i < n; i++)
		cs_open(p2, &many[i], e.client, ID_SERVER, &s2->addr);
	pool_stats(p2, &ps);
	ASSERT_EQ(ps.connections, 2);
	ASSERT_EQ(ps.streams, n);
	/* All of them up at once. */
	WAIT_UNTIL(&e, count(many, n, false) == n, 3000);
	for (int i = 0; i < n; i++)
		ASSERT_EQ(many[i].status, 200);
	pool_stats(p2, &ps);
	ASSERT_EQ(ps.connections, 2);
	ASSERT_EQ(ps.connections_opened, 2);
	ASSERT_EQ(ps.streams, n);
	srv_stats(s2, &ss);
	ASSERT_EQ(ss.streams_open, n);
	ASSERT_EQ(ss.connections_open, 3); /* c's, and the two */
	/* Then each echoes and ends cleanly. */
	for (int i = 0; i < n; i++) {
		echo_msg(&many[i], msg, sizeof(msg));
		cs_pump(&many[i]);
	}
	WAIT_UNTIL(&e, count(many, n, true) == n, 3000);
	for (int i = 0; i < n; i++) {
		ASSERT(!many[i].reset);
		ASSERT_EQ(many[i].in_len, sizeof(msg));
		cs_free(&many[i]);
	}
	free(many);
	cs_free(&a);
	cs_free(&b);
	cs_free(&c);
	cs_free(&d);
	cs_free(&x);
	cs_free(&f);
	env_done(&e);
}

TEST(hbone_identity_mismatch)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 2000 };
	struct hbone_pool *p;
	struct srv *sv;
	struct cstream a = { 0 };
	struct hbone_pool_stats ps;
	struct hbone_server_stats ss;
	struct capture cap;
	char *log;

	env_init(&e);
	sv = env_server(&e, e.server, 0);
	p = env_pool(&e, &pc);
	capture_start(&e, &cap);
	cs_open(p, &a, e.client, ID_OTHER, &sv->addr);
	WAIT_UNTIL(&e, a.closed && (srv_stats(sv, &ss), ss.handshakes_failed == 1), 2000);
	log = capture_end(&cap);
	ASSERT_EQ(a.responses, 1);
	ASSERT(a.status < 0);
	ASSERT(a.reset);
	ASSERT(!a.eof && a.in_len == 0);
	ASSERT_EQ(sv->requests, 0);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connect_failures, 1);
	ASSERT_EQ(ps.connections, 0);
	ASSERT_EQ(ps.streams, 0);
	/* The log names who answered and who was expected. */
	ASSERT(strstr(log, "handshake failed") != NULL);
	ASSERT(strstr(log, "peer is " ID_SERVER ", expected " ID_OTHER) != NULL);
	free(log);
	cs_free(&a);
	env_done(&e);
}

TEST(hbone_handshake_timeout)
{
	struct env e;
	struct hbone_pool_cfg pc = { .connect_timeout_ms = 300 };
	struct hbone_pool *p;
	struct raw *mute;
	struct cstream a = { 0 };
	struct hbone_pool_stats ps;
	uint64_t t0, t;

	env_init(&e);
	mute = env_raw(&e, RAW_NO_TLS, NULL);
	p = env_pool(&e, &pc);
	t0 = now_ms();
	cs_open(p, &a, e.client, ID_SERVER, &mute->addr);
	WAIT_UNTIL(&e, a.closed, 2000);
	t = now_ms() - t0;
	fprintf(stderr, "failed after %llu ms\n", (unsigned long long)t);
	ASSERT(t >= 250 && t < 1000);
	ASSERT_EQ(mute->accepted, 1);
	ASSERT_EQ(a.responses, 1);
	ASSERT(a.status < 0);
	ASSERT(a.reset);
	pool_stats(p, &ps);
	ASSERT_EQ(ps.connect_failures, 1);
	ASSERT_EQ(ps.connections, 0);
	cs_free(&a);
	env_done(&e);
}

/*
 * A listen that fails after the socket was handed over (listen() on a UDP socket fails once
 * uv_tcp_open took it) leaves the caller's fd open and its own: the caller closes it exactly once.
 * It used to be closed by the server's drain as well, so the caller's close hit whatever reused
 * the number. A success takes the fd: it is closed when the server is drained.
 */
TEST(hbone_server_listen_fd_owner)
{
	uv_loop_t loop;
	struct hbone_server_cfg cfg = { .trust_domain = TD };
	struct hbone_server *srv = (struct hbone_server *)1;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd;

	ASSERT_EQ(uv_loop_init(&loop), 0);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT(fd >= 0);
	cfg.fd = fd;
	ASSERT(hbone_server_listen(&loop, &cfg, &srv) < 0);
	ASSERT(srv == NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT(fcntl(fd, F_GETFD) != -1); /* still the caller's */
	ASSERT_EQ(close(fd), 0);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cfg.fd = fd;
	ASSERT_EQ(hbone_server_listen(&loop, &cfg, &srv), 0);
	ASSERT(srv != NULL);
	ASSERT(hbone_server_port(srv) > 0);
	hbone_server_drain(srv, 0, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	ASSERT(fcntl(fd, F_GETFD) == -1); /* the server took it and closed it */
	ASSERT_EQ(uv_loop_close(&loop), 0);
}

/* A TCP connection over loopback: *srv_fd the accepted end (for hbone_server_adopt), returns the
 * client's end. */
static int
tcp_pair(int *srv_fd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c;

	ASSERT(l >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_EQ(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ASSERT_EQ(listen(l, 1), 0);
	ASSERT_EQ(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT(c >= 0);
	ASSERT_EQ(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
	*srv_fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	ASSERT(*srv_fd >= 0);
	close(l);
	return c;
}

static size_t
open_conns(struct hbone_server *srv)
{
	struct hbone_server_stats st;

	hbone_server_stats(srv, &st);
	return st.connections_open;
}

/*
 * Servers sharing a count (a waypoint's workers, shared_conns) take max_connections together: with
 * one open on the first, the second refuses the next; once it closed, the second takes one.
 */
TEST(hbone_server_shared_limit)
{
	struct env e;
	struct hbone_server_cfg cfg = {
		.fd = -1, .trust_domain = TD, .handshake_timeout_ms = 5000, .max_connections = 1,
		.on_request = srv_on_request,
	};
	struct hbone_server *a, *b;
	struct hbone_server_stats st;
	size_t shared = 0;
	bool a_done = false, b_done = false;
	int fd, c1, c2, c3;
	char ch;

	env_init(&e);
	cfg.id = e.server;
	cfg.shared_conns = &shared;
	ASSERT_EQ(hbone_server_listen(&e.loop, &cfg, &a), 0); /* adopt-only: no addr, no fd */
	ASSERT_EQ(hbone_server_listen(&e.loop, &cfg, &b), 0);
	c1 = tcp_pair(&fd);
	hbone_server_adopt(a, fd);
	ASSERT_EQ(open_conns(a), 1);
	ASSERT_EQ(shared, 1);
	c2 = tcp_pair(&fd);
	hbone_server_adopt(b, fd); /* the whole is at its limit: refused, closed */
	hbone_server_stats(b, &st);
	ASSERT_EQ(st.connections_refused, 1);
	ASSERT_EQ(st.connections_open, 0);
	ASSERT_EQ(read(c2, &ch, 1), 0);
	close(c1); /* the first goes (its handshake sees EOF): a place again */
	WAIT_UNTIL(&e, open_conns(a) == 0, 3000);
	ASSERT_EQ(shared, 0);
	c3 = tcp_pair(&fd);
	hbone_server_adopt(b, fd);
	ASSERT_EQ(open_conns(b), 1);
	ASSERT_EQ(shared, 1);
	hbone_server_drain(a, 0, set_flag, &a_done);
	hbone_server_drain(b, 0, set_flag, &b_done);
	WAIT_UNTIL(&e, a_done && b_done, 3000);
	ASSERT_EQ(shared, 0);
	close(c2);
	close(c3);
	env_done(&e);
}
