/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the L7 engine's HTTP/2 path (src/l7/proto-h2.c) from a client's bytes. A
 * tunnel is accepted as the waypoint's HBONE server hands it over (l7_accept_hbone), so the core
 * detects h2c, and the input, an HTTP/2 client byte stream, goes through the downstream nghttp2
 * server session, our callbacks and the request pipeline (routes, policy, faults, rewrites,
 * header edits, mirrors, retries) against a registry with every kind of route. There is no HBONE:
 * the binary is linked with -Wl,--wrap for the hbone_* calls the engine makes, and the stand-ins
 * below are the client's tunnel and each upstream tunnel. Behind an upstream tunnel an nghttp2
 * server session plays the application and answers each request as the seed says (a body, gRPC
 * trailers, 503, a reset stream, GOAWAY, silence); tunnels fail to open, are refused or reset.
 * The input is fed in pieces split at seeded points; send queues fill and drain; the registry is
 * swapped under live requests. Then the client goes away: every tunnel, request and mirror must
 * be freed (LeakSanitizer, and the engine's own counts), nothing may touch freed memory (ASan),
 * and no stream may be used after its on_close (the stand-ins abort).
 */
#include "config.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/conf.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/log.h"
#include "l7/tunnel.h"
#include "net/lb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char reg_text[] =
    "[node \"n\"]\naddress = 192.168.0.1\n"
    "[workload \"front\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.9\nlabels = app=front\n"
    "service_account = front\n"
    "[workload \"a1\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.2\nlabels = app=a, version=v1\n"
    "[workload \"a2\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.3\nlabels = app=a, version=v2\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\nselector = app=a\n"
    "[service \"v1\"]\nnamespace = default\nports = 80\nselector = version=v1\n"
    "[service \"v2\"]\nnamespace = default\nports = 80\nselector = version=v2\n"
    "[service \"grpc\"]\nnamespace = default\nvip = 10.96.0.2\nports = 50051\nselector = app=a\n"
    "[route \"exact\"]\nnamespace = default\nservice = svc\nmatch.path_exact = /login\nbackends = v1\n"
    "request_headers.set = x-a: one\nrequest_headers.add = x-b: two\n"
    "request_headers.remove = cookie\nresponse_headers.set = server: amesh\n"
    "response_headers.remove = x-powered-by\n"
    "[route \"prefix\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /api/\n"
    "match.method = GET, POST\nbackends = v1 90, v2 10\nrewrite.path_prefix = /v2\n"
    "timeout = 2s\nper_try_timeout = 1s\nretries = 2\nretry_on = 5xx, reset, refused-stream\n"
    "[route \"regex\"]\nnamespace = default\nservice = svc\nmatch.path_regex = ^/r/[0-9]+(/|$)\n"
    "match.headers = x-canary: true\nmatch.query = tag=a\nbackends = v2\n"
    "[route \"redirect\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /old\n"
    "redirect.path = /new\n"
    "[route \"fault\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /fault\nbackends = v1\n"
    "fault.abort = 503\nfault.abort_percent = 50\nfault.delay = 1s\nfault.delay_percent = 50\n"
    "[route \"mirror\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /mirror\n"
    "backends = v1\nmirror = v2\nmirror_percent = 100\n"
    "[route \"all\"]\nnamespace = default\nservice = svc\nbackends = svc\n"
    "request_headers.remove = x-debug\n"
    "[route \"grpc\"]\nnamespace = default\nservice = grpc\nbackends = grpc\nretries = 1\n"
    "retry_on = unavailable, cancelled, reset\n"
    "[policy \"no-admin\"]\nnamespace = default\nselector = app=a\naction = deny\n"
    "to.paths = /admin*\n";

/* The same mesh after a reload: a route gone, a backend moved, v2 gone. */
static const char reg_text2[] =
    "[node \"n\"]\naddress = 192.168.0.1\n"
    "[workload \"front\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.9\nlabels = app=front\n"
    "service_account = front\n"
    "[workload \"a1\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.2\nlabels = app=a, version=v1\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\nselector = app=a\n"
    "[service \"v1\"]\nnamespace = default\nports = 80\nselector = version=v1\n"
    "[service \"grpc\"]\nnamespace = default\nvip = 10.96.0.2\nports = 50051\nselector = app=a\n"
    "[route \"prefix\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /api/\nbackends = v1\n";

/* --- the stand-in for struct hbone_stream (h2.c's is opaque outside it) --- */

struct fs {
	struct fs *next;
	const struct hbone_stream_cb *cb;
	void *user;
	bool up;          /* an upstream tunnel (else the client's) */
	bool closing;     /* reset (by either side): on_close is due */
	bool finishing;   /* inside its on_close */
	bool closed;      /* on_close ran: the owner may hold no pointer to it */
	bool shut;        /* the owner's FIN */
	bool peer_eof;    /* the peer's FIN was delivered */
	bool reset;
	bool responded;   /* client's: answered; upstream: on_response ran */
	bool blocked;     /* a write took less than offered: on_writable is due */
	size_t budget;    /* bytes its send buffer takes now */
	size_t unconsumed;
	struct hbone_request req;
	/* upstream: the application behind it */
	nghttp2_session *app;
	struct stream_data *sds;
	bool app_dead;
	int fail;         /* how it opens: 0 fine, 1 answered 503, 2 reset at once */
};

struct stream_data {
	struct stream_data *next; /* the tunnel's, all freed with it */
	size_t left;
	bool grpc, trailers;
	int grpc_status;
};

static struct fs *streams;
static uint32_t rng;
static struct registry_holder holder;
static struct registry *reg1, *reg2;

static uint32_t
rnd(void)
{
	uint32_t x = rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	rng = x;
	return x;
}

/* The engine's randomness (balancer, percentages, trace IDs) follows the seed too. */
int __wrap_rng_fill(void *ctx, unsigned char *out, size_t len);

int
__wrap_rng_fill(void *ctx, unsigned char *out, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)rnd();
	return 0;
}

static struct fs *
live(const struct hbone_stream *s)
{
	struct fs *f = (struct fs *)(void *)s;

	if (f->closed)
		abort(); /* used after its on_close */
	return f;
}

size_t __wrap_hbone_stream_write(struct hbone_stream *s, const uint8_t *data, size_t len);
bool __wrap_hbone_stream_writable(const struct hbone_stream *s);
void __wrap_hbone_stream_shutdown(struct hbone_stream *s);
void __wrap_hbone_stream_reset(struct hbone_stream *s, uint32_t h2_error);
void __wrap_hbone_stream_consumed(struct hbone_stream *s, size_t n);
int __wrap_hbone_stream_respond(struct hbone_stream *s, int status);
void __wrap_hbone_stream_set_cb(struct hbone_stream *s, const struct hbone_stream_cb *cb,
    void *user);
void *__wrap_hbone_stream_user(const struct hbone_stream *s);
const struct hbone_request *__wrap_hbone_stream_request(const struct hbone_stream *s);
const char *__wrap_hbone_stream_peer_id(const struct hbone_stream *s);
int __wrap_hbone_pool_open(struct hbone_pool *p, const struct hbone_open *o,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out);

static void
finish(struct fs *f, bool reset)
{
	if (f->closed || f->finishing)
		return;
	f->finishing = f->closing = true;
	if (f->cb != NULL && f->cb->on_close != NULL)
		f->cb->on_close((struct hbone_stream *)(void *)f, reset, reset ? 8 : 0);
	f->closed = true;
}

size_t
__wrap_hbone_stream_write(struct hbone_stream *s, const uint8_t *data, size_t len)
{
	struct fs *f = live(s);
	size_t take;

	if (f->shut || f->closing)
		return 0;
	take = len < f->budget ? len : f->budget;
	if (take < len)
		f->blocked = true;
	f->budget -= take;
	if (f->up && f->responded && !f->app_dead && take > 0 &&
	    nghttp2_session_mem_recv(f->app, data, take) < 0)
		f->app_dead = true; /* the app would close: the tunnel is reset below */
	return take;
}

bool
__wrap_hbone_stream_writable(const struct hbone_stream *s)
{
	const struct fs *f = live(s);

	return !f->shut && !f->closing && f->budget > 0;
}

void
__wrap_hbone_stream_shutdown(struct hbone_stream *s)
{
	live(s)->shut = true;
}

void
__wrap_hbone_stream_reset(struct hbone_stream *s, uint32_t h2_error)
{
	struct fs *f = live(s);

	if (f->closing)
		return;
	f->closing = f->reset = true;
	/* Not on the wire yet (no connection): h2.c ends it from inside the call. */
	if (f->up && !f->responded)
		finish(f, true);
}

void
__wrap_hbone_stream_consumed(struct hbone_stream *s, size_t n)
{
	struct fs *f = live(s);

	f->unconsumed -= n < f->unconsumed ? n : f->unconsumed;
}

int
__wrap_hbone_stream_respond(struct hbone_stream *s, int status)
{
	struct fs *f = live(s);

	if (f->up || f->responded)
		return -22;
	f->responded = true;
	if (status != 200)
		f->closing = true; /* the stream ends with the answer */
	return 0;
}

void
__wrap_hbone_stream_set_cb(struct hbone_stream *s, const struct hbone_stream_cb *cb, void *user)
{
	struct fs *f = live(s);

	f->cb = cb;
	f->user = user;
}

void *
__wrap_hbone_stream_user(const struct hbone_stream *s)
{
	return live(s)->user;
}

const struct hbone_request *
__wrap_hbone_stream_request(const struct hbone_stream *s)
{
	return &live(s)->req;
}

const char *
__wrap_hbone_stream_peer_id(const struct hbone_stream *s)
{
	return "spiffe://cluster.local/ns/default/sa/front";
}

/* --- the application behind an upstream tunnel: an h2c server answering as the seed says --- */

static ssize_t
app_send(nghttp2_session *s, const uint8_t *d, size_t n, int flags, void *u)
{
	return NGHTTP2_ERR_WOULDBLOCK; /* mem_send only */
}

static ssize_t
body_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *u)
{
	struct stream_data *sd = src->ptr;
	size_t n = sd->left < len ? sd->left : len;

	memset(buf, 'b', n);
	if (sd->grpc && n >= 5 && sd->left == 5 + 3) {
		buf[0] = 0; /* one gRPC message of 3 bytes */
		buf[1] = buf[2] = buf[3] = 0;
		buf[4] = 3;
	}
	sd->left -= n;
	if (sd->left == 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (sd->trailers) {
			char st[12];
			nghttp2_nv tr[] = {
				{ (uint8_t *)"grpc-status", (uint8_t *)st, 11, 0, NGHTTP2_NV_FLAG_NONE },
				{ (uint8_t *)"grpc-message", (uint8_t *)"x", 12, 1, NGHTTP2_NV_FLAG_NONE },
			};

			tr[0].valuelen = (size_t)snprintf(st, sizeof(st), "%d", sd->grpc_status);
			if (nghttp2_submit_trailer(s, sid, tr, 2) == 0)
				*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
		}
	}
	return (ssize_t)n;
}

static struct stream_data *
stream_data(nghttp2_session *s, int32_t sid, struct fs *f)
{
	struct stream_data *sd = nghttp2_session_get_stream_user_data(s, sid);

	if (sd == NULL) {
		sd = calloc(1, sizeof(*sd));
		if (sd == NULL)
			abort();
		sd->next = f->sds;
		f->sds = sd;
		nghttp2_session_set_stream_user_data(s, sid, sd);
	}
	return sd;
}

static int
app_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen, uint8_t flags, void *u)
{
	struct stream_data *sd = stream_data(s, fr->hd.stream_id, u);

	if (namelen == 12 && memcmp(name, "content-type", 12) == 0 &&
	    valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0)
		sd->grpc = true;
	return 0;
}

static void
app_answer(nghttp2_session *s, int32_t sid, struct fs *f)
{
	struct stream_data *sd = stream_data(s, sid, f);
	uint32_t x = rnd();
	static const char *const codes[] = { "200", "200", "200", "503", "404", "204", "500", "502" };
	const char *code = codes[x % 8];
	nghttp2_data_provider prd = { .read_callback = body_read };
	nghttp2_nv nv[4];
	size_t n = 0;

	prd.source.ptr = sd;
	switch ((x >> 4) % 12) {
	case 0:
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_REFUSED_STREAM);
		return;
	case 1:
		nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_NO_ERROR, NULL, 0);
		break;
	case 2:
		return; /* never answers */
	case 3:
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
		return;
	default:
		break;
	}
	nv[n++] = (nghttp2_nv){ (uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE };
	nv[n++] = (nghttp2_nv){ (uint8_t *)"x-powered-by", (uint8_t *)"app", 12, 3, NGHTTP2_NV_FLAG_NONE };
	if (sd->grpc) {
		code = "200";
		nv[0].value = (uint8_t *)code;
		nv[n++] = (nghttp2_nv){ (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
		    NGHTTP2_NV_FLAG_NONE };
		sd->trailers = true;
		sd->grpc_status = (x >> 12) % 3 == 0 ? 14 : (x >> 12) % 3 == 1 ? 1 : 0;
		sd->left = (x >> 14) % 2 ? 5 + 3 : 0;
	} else if (strcmp(code, "204") != 0) {
		static const size_t sizes[] = { 0, 5, 1000, 70000, 200000 };

		sd->left = sizes[(x >> 12) % 5];
		sd->trailers = (x >> 16) % 4 == 0;
	}
	if (sd->left == 0 && !sd->trailers)
		nghttp2_submit_response(s, sid, nv, n, NULL);
	else
		nghttp2_submit_response(s, sid, nv, n, &prd);
}

static int
app_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *u)
{
	if ((fr->hd.type == NGHTTP2_HEADERS || fr->hd.type == NGHTTP2_DATA) &&
	    (fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
		app_answer(s, fr->hd.stream_id, u);
	else if (fr->hd.type == NGHTTP2_HEADERS && rnd() % 8 == 0)
		app_answer(s, fr->hd.stream_id, u); /* answers before the request's end */
	return 0;
}

static nghttp2_session_callbacks *app_cbs;

int
__wrap_hbone_pool_open(struct hbone_pool *p, const struct hbone_open *o,
    const struct hbone_stream_cb *cb, void *user, struct hbone_stream **out)
{
	uint32_t x = rnd();
	struct fs *f;

	if (x % 16 == 0)
		return -111; /* ECONNREFUSED, at once */
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		abort();
	f->up = true;
	f->cb = cb;
	f->user = user;
	f->budget = (x >> 4) % 4 == 0 ? 100 : HBONE_STREAM_SEND_BUF;
	f->fail = (x >> 8) % 16 == 0 ? 1 : (x >> 8) % 16 == 1 ? 2 : 0;
	if (nghttp2_session_server_new(&f->app, app_cbs, f) != 0 ||
	    nghttp2_submit_settings(f->app, NGHTTP2_FLAG_NONE, NULL, 0) != 0)
		abort();
	f->next = streams;
	streams = f;
	*out = (struct hbone_stream *)(void *)f;
	return 0;
}

/* --- driving the streams --- */

static struct fs *down;

/* One round of what the tunnels' peers do. True when something happened. */
static bool
pump(void)
{
	bool did = false;

	for (struct fs *f = streams; f != NULL; f = f->next) {
		if (f->closed)
			continue;
		if (f->closing) {
			finish(f, f->reset);
			did = true;
			continue;
		}
		if (f->up && !f->responded) {
			f->responded = true;
			did = true;
			if (f->fail == 1) {
				f->closing = true;
				f->cb->on_response((struct hbone_stream *)(void *)f, 503);
				finish(f, true);
				continue;
			}
			f->cb->on_response((struct hbone_stream *)(void *)f, 200);
			if (f->closed || f->closing)
				continue;
			if (f->fail == 2) {
				f->closing = f->reset = true;
				continue;
			}
		}
		if (f->up && !f->peer_eof) {
			const uint8_t *p;
			ssize_t n;

			if (f->app_dead) {
				f->closing = f->reset = true;
				did = true;
				continue;
			}
			/* What the app sends, in pieces, within the tunnel's window. */
			while (!f->closed && !f->closing && f->unconsumed < HBONE_STREAM_WINDOW &&
			    (n = nghttp2_session_mem_send(f->app, &p)) > 0) {
				/* As TLS records and TCP cut it: in pieces, each maybe mid-frame. */
				while (n > 0 && !f->closed && !f->closing) {
					size_t cut = rnd() % 4 ? (size_t)n : 1 + rnd() % (size_t)n;

					f->unconsumed += cut;
					f->cb->on_data((struct hbone_stream *)(void *)f, p, cut);
					p += cut;
					n -= (ssize_t)cut;
				}
				did = true;
			}
			if (f->closed || f->closing)
				continue;
			/* The app closes its end after we closed ours, or when it is done. */
			if ((f->shut || !nghttp2_session_want_read(f->app)) &&
			    !nghttp2_session_want_write(f->app) && rnd() % 2) {
				f->peer_eof = true;
				f->cb->on_eof((struct hbone_stream *)(void *)f);
				did = true;
				if (f->closed || f->closing)
					continue;
			}
			if (rnd() % 64 == 0) {
				f->closing = f->reset = true; /* the app or its node went away */
				did = true;
				continue;
			}
		}
		if (f->shut && f->peer_eof) {
			finish(f, false);
			did = true;
			continue;
		}
		/* The peer read some of our output: the send buffer drains. */
		if (f->budget < HBONE_STREAM_SEND_BUF && rnd() % 2) {
			f->budget = HBONE_STREAM_SEND_BUF;
			if (f->blocked) {
				f->blocked = false;
				if (f->cb->on_writable != NULL)
					f->cb->on_writable((struct hbone_stream *)(void *)f);
				did = true;
			}
		}
	}
	return did;
}

static void
wp_gone(struct waypoint *wp)
{
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uv_loop_t loop;
	static struct amesh_conf *conf;
	static struct waypoint wp;
	static const char *const auths[] = { "10.96.0.1:80", "svc.default.svc.cluster.local:80",
		"10.96.0.2:50051", "10.1.1.2:8080" };
	struct fs *f;
	size_t off = 0;
	int rounds;

	if (size < 5 || size > 1 << 20)
		return 0;
	if (conf == NULL) {
		struct diag d;

		log_set_level(LOG_LVL_ERROR);
		diag_init(&d);
		if (conf_parse_buffer("fuzz.conf", "", 0, &conf, &d) != 0 ||
		    registry_parse_buffer("r1", reg_text, strlen(reg_text), &reg1, &d) != 0 ||
		    registry_parse_buffer("r2", reg_text2, strlen(reg_text2), &reg2, &d) != 0) {
			diag_print(&d, stderr);
			abort();
		}
		diag_clear(&d);
		if (uv_loop_init(&loop) != 0 || nghttp2_session_callbacks_new(&app_cbs) != 0)
			abort();
		nghttp2_session_callbacks_set_send_callback(app_cbs, app_send);
		nghttp2_session_callbacks_set_on_header_callback(app_cbs, app_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(app_cbs, app_frame_recv);
		registry_holder_init(&holder);
		wp.loop = &loop;
		wp.conf = conf;
		wp.reg = &holder;
		wp.role = "waypoint";
		wp.gone = wp_gone;
		if (lb_new(&wp.lb) != 0)
			abort();
	}
	/* data[0]: bit 0 the preface is in the input (else it is sent first), bits 1-2 the
	 * authority the CONNECT named, bit 3 a small send buffer downstream; data[1..4] the seed. */
	rng = ((uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
	    (uint32_t)data[4] << 24) | 1u;
	registry_ref(reg1);
	registry_holder_set(&holder, reg1);

	down = f = calloc(1, sizeof(*f));
	if (f == NULL)
		abort();
	f->budget = data[0] & 8 ? 200 : HBONE_STREAM_SEND_BUF;
	snprintf(f->req.host, sizeof(f->req.host), "%s", auths[(data[0] >> 1) & 3]);
	*strrchr(f->req.host, ':') = '\0';
	f->req.authority = auths[(data[0] >> 1) & 3];
	f->req.port = (uint16_t)atoi(strrchr(f->req.authority, ':') + 1);
	f->req.peer_id = "spiffe://cluster.local/ns/default/sa/front";
	f->req.peer_addr = "10.1.1.9:40000";
	f->req.baggage = "k8s.namespace.name=default";
	f->next = streams;
	streams = f;
	l7_accept_hbone(&wp, (struct hbone_stream *)(void *)f, &f->req);
	if (!f->responded)
		abort();
	if (!(data[0] & 1) && !f->closing && !f->closed) {
		f->unconsumed += sizeof(preface) - 1;
		f->cb->on_data((struct hbone_stream *)(void *)f, preface, sizeof(preface) - 1);
	}
	data += 5;
	size -= 5;
	while (off < size && !f->closing && !f->closed) {
		size_t n = size - off;

		if (n > 1) {
			size_t cut = 1 + rnd() % (rnd() % 2 ? 64 : n);

			n = cut < n ? cut : n;
		}
		if (f->unconsumed + n > HBONE_STREAM_WINDOW) {
			f->closing = f->reset = true; /* past its window: nghttp2 resets the stream */
			break;
		}
		f->unconsumed += n;
		f->cb->on_data((struct hbone_stream *)(void *)f, data + off, n);
		off += n;
		if (rnd() % 32 == 0)
			registry_holder_set(&holder, registry_ref(rnd() % 2 ? reg2 : reg1));
		for (int i = 0; i < 4 && pump(); i++)
			;
	}
	/* The client half-closes and waits a little, or is gone at once. */
	if (!f->closed && !f->closing && rnd() % 2) {
		f->peer_eof = true;
		f->cb->on_eof((struct hbone_stream *)(void *)f);
	}
	for (rounds = 0; rounds < 32 && pump(); rounds++)
		;
	finish(f, true);
	/* The client's connection is lost: so are the upstream ones the engine did not end. */
	for (rounds = 0; pump(); rounds++)
		if (rounds > 1000)
			abort();
	for (f = streams; f != NULL; f = f->next)
		finish(f, true);
	for (int i = 0; i < 8; i++)
		(void)uv_run(&loop, UV_RUN_NOWAIT); /* the handles' close callbacks */
	if (getenv("L7H2_STATS") != NULL) /* what the engine did with a seed, when writing seeds */
		fprintf(stderr, "tunnels %lu h2 %lu requests %lu denied %lu local %lu retries %lu "
		    "upstream_failures %lu mirrors %lu\n", (unsigned long)wp.st.tunnels,
		    (unsigned long)wp.st.tunnels_h2, (unsigned long)wp.st.requests,
		    (unsigned long)wp.st.denied, (unsigned long)wp.st.local_replies,
		    (unsigned long)wp.st.retries, (unsigned long)wp.st.upstream_failures,
		    (unsigned long)wp.st.mirrors);
	if (wp.st.active != 0 || wp.mirrors_open != 0)
		abort(); /* a tunnel or a mirror outlived every stream */
	while ((f = streams) != NULL) {
		streams = f->next;
		if (f->app != NULL)
			nghttp2_session_del(f->app);
		while (f->sds != NULL) {
			struct stream_data *sd = f->sds;

			f->sds = sd->next;
			free(sd);
		}
		free(f);
	}
	down = NULL;
	return 0;
}
