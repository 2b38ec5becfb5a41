/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test and bench driver for the HBONE engine, built from the same library as amesh:
 *   hbone-tool server: HBONE on --listen; each CONNECT is relayed to its authority (or --upstream);
 *   hbone-tool client: plain TCP on --listen; each connection becomes a stream through the pool.
 * Prints "listening PORT" once ready; SIGTERM drains (GOAWAY) and exits; SIGUSR1 prints stats.
 */
#include "config.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "core/log.h"
#include "core/parse.h"
#include "hbone/hbone.h"
#include "hbone/relay.h"
#include "tls/identity.h"
#include "tls/tls.h"

static struct {
	const char *mode, *listen, *cert_dir, *bundle, *td, *ns, *sa, *upstream, *server;
	const char *server_id, *authority;
	uint32_t max_streams;
	uint64_t idle_ms;
} opt = { .td = "cluster.local", .max_streams = 100 };

static uv_loop_t *loop;
static struct identity_store *store;
static struct identity *me;
static struct hbone_server *srv;
static struct hbone_pool *pool;
static uv_tcp_t plain_listener;
static uv_signal_t sig_term, sig_int, sig_usr1;
static struct sockaddr_storage upstream_addr, server_addr;
static uint64_t relays_done, relays_reset, bytes_up, bytes_down;

static void
usage(void)
{
	fprintf(stderr, "usage: hbone-tool server|client --listen ADDR:PORT --cert-dir DIR "
	    "--bundle FILE --ns NS --sa SA [--td TD] [--upstream ADDR:PORT] [--max-streams N]\n"
	    "       [--offload on|off]\n"
	    "       client also: --server ADDR:PORT --server-id SPIFFE_ID --authority HOST:PORT\n");
	exit(2);
}

static void
on_relay_done(struct relay *r, const struct relay_stats *st, void *user)
{
	relays_done++;
	relays_reset += st->reset;
	bytes_up += st->a_to_b;
	bytes_down += st->b_to_a;
}

/* --- server mode --- */

struct pending {
	struct relay *r;
	struct hbone_stream *s;
	uv_connect_t req;
};

static void
pending_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
	struct pending *p = hbone_stream_user(s);

	/* The client gave up before the upstream answered. */
	p->s = NULL;
}

static const struct hbone_stream_cb pending_cb = { .on_close = pending_on_close };

static void
on_upstream(uv_connect_t *req, int status)
{
	struct pending *p = req->data;

	if (p->s == NULL) {
		relay_abort(p->r);
	} else if (status < 0) {
		hbone_stream_set_cb(p->s, NULL, NULL);
		hbone_stream_respond(p->s, 503);
		relay_abort(p->r);
	} else if (hbone_stream_respond(p->s, 200) == 0) {
		relay_start_hbone(p->r, p->s);
	} else {
		hbone_stream_set_cb(p->s, NULL, NULL);
		relay_abort(p->r);
	}
	free(p);
}

static void
on_request(struct hbone_server *s, struct hbone_stream *st, const struct hbone_request *req)
{
	struct relay_cfg rc = { .idle_timeout_ms = opt.idle_ms, .on_done = on_relay_done };
	struct sockaddr_storage dst;
	struct ip_addr ip;
	const char *why;
	struct pending *p;

	if (opt.upstream != NULL) {
		dst = upstream_addr;
	} else if (parse_ip(req->host, &ip, &why) == 0) {
		/* Connect to the authority itself: the port from the request. */
		char a[300];

		snprintf(a, sizeof(a), ip.family == AF_INET6 ? "[%s]:%u" : "%s:%u", req->host,
		    req->port);
		if (parse_sockaddr(a, &dst, &why) != 0) {
			hbone_stream_respond(st, 400);
			return;
		}
	} else {
		hbone_stream_respond(st, 400);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->r = relay_new(loop, &rc)) == NULL) {
		free(p);
		hbone_stream_respond(st, 503);
		return;
	}
	p->s = st;
	hbone_stream_set_cb(st, &pending_cb, p);
	p->req.data = p;
	if (uv_tcp_connect(&p->req, relay_tcp_a(p->r), (struct sockaddr *)&dst, on_upstream) != 0) {
		hbone_stream_respond(st, 503);
		relay_abort(p->r);
		free(p);
	}
}

/* --- client mode --- */

struct copen {
	struct relay *r;
};

static void
c_on_response(struct hbone_stream *s, int status)
{
	struct relay *r = hbone_stream_user(s);

	if (status == 200) {
		relay_start_hbone(r, s);
		return;
	}
	log_info("client: CONNECT answered %d", status);
	hbone_stream_set_cb(s, NULL, NULL);
	relay_abort(r);
}

static void
c_on_close(struct hbone_stream *s, bool reset, uint32_t err)
{
}

static const struct hbone_stream_cb open_cb = {
	.on_response = c_on_response,
	.on_close = c_on_close,
};

static void
on_plain_connection(uv_stream_t *l, int status)
{
	struct relay_cfg rc = { .idle_timeout_ms = opt.idle_ms, .on_done = on_relay_done };
	struct hbone_open o = {
		.src = me,
		.dst_id = opt.server_id,
		.dst = (struct sockaddr *)&server_addr,
		.authority = opt.authority,
	};
	struct hbone_stream *s;
	struct relay *r;
	char fwd[96];
	struct sockaddr_storage peer;
	int len = sizeof(peer);

	if (status < 0)
		return;
	r = relay_new(loop, &rc);
	if (r == NULL)
		return;
	if (uv_accept(l, (uv_stream_t *)relay_tcp_a(r)) != 0) {
		relay_abort(r);
		return;
	}
	if (uv_tcp_getpeername(relay_tcp_a(r), (struct sockaddr *)&peer, &len) == 0) {
		char a[80];

		snprintf(fwd, sizeof(fwd), "for=\"%s\"", sockaddr_str(&peer, a, sizeof(a)));
		o.forwarded = fwd;
	}
	if (hbone_pool_open(pool, &o, &open_cb, r, &s) != 0)
		relay_abort(r);
}

/* --- common --- */

static void
print_stats(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	if (srv != NULL) {
		struct hbone_server_stats st;

		hbone_server_stats(srv, &st);
		printf("stats server conns=%zu streams=%zu accepted=%llu refused=%llu "
		    "handshakes_failed=%llu streams_opened=%llu ", st.connections_open,
		    st.streams_open, (unsigned long long)st.connections_accepted,
		    (unsigned long long)st.connections_refused,
		    (unsigned long long)st.handshakes_failed,
		    (unsigned long long)st.streams_opened);
	}
	if (pool != NULL) {
		struct hbone_pool_stats st;

		hbone_pool_stats(pool, &st);
		printf("stats pool conns=%zu streams=%zu opened=%llu failures=%llu retried=%llu ",
		    st.connections, st.streams, (unsigned long long)st.connections_opened,
		    (unsigned long long)st.connect_failures,
		    (unsigned long long)st.streams_retried);
	}
	printf("relays=%llu reset=%llu up=%llu down=%llu maxrss_kb=%ld\n",
	    (unsigned long long)relays_done, (unsigned long long)relays_reset,
	    (unsigned long long)bytes_up, (unsigned long long)bytes_down, ru.ru_maxrss);
	fflush(stdout);
}

static void
on_closed_handle(uv_handle_t *h)
{
}

static void
drained(void *arg)
{
	uv_close((uv_handle_t *)&sig_term, on_closed_handle);
	uv_close((uv_handle_t *)&sig_int, on_closed_handle);
	uv_close((uv_handle_t *)&sig_usr1, on_closed_handle);
}

static void
on_signal(uv_signal_t *s, int signum)
{
	if (signum == SIGUSR1) {
		print_stats();
		return;
	}
	print_stats();
	if (srv != NULL) {
		hbone_server_drain(srv, 2000, drained, NULL);
		srv = NULL;
	}
	if (pool != NULL) {
		uv_close((uv_handle_t *)&plain_listener, on_closed_handle);
		hbone_pool_drain(pool, 2000, drained, NULL);
		pool = NULL;
	}
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", 1, NULL, 'l' }, { "cert-dir", 1, NULL, 'c' }, { "bundle", 1, NULL, 'b' },
		{ "td", 1, NULL, 't' }, { "ns", 1, NULL, 'n' }, { "sa", 1, NULL, 's' },
		{ "upstream", 1, NULL, 'u' }, { "server", 1, NULL, 'S' },
		{ "server-id", 1, NULL, 'I' }, { "authority", 1, NULL, 'A' },
		{ "max-streams", 1, NULL, 'm' }, { "idle-ms", 1, NULL, 'i' },
		{ "offload", 1, NULL, 'o' }, { "verbose", 0, NULL, 'v' }, { NULL, 0, NULL, 0 },
	};
	struct identity_store_config ic = { 0 };
	struct sockaddr_storage la;
	const char *why;
	int c, r;

	if (argc < 2)
		usage();
	opt.mode = argv[1];
	if (strcmp(opt.mode, "sanitized") == 0) {
		/* Exit 0 if built with AddressSanitizer: RSS bounds mean nothing there. */
#if defined(__SANITIZE_ADDRESS__)
		return 0;
#else
		return 1;
#endif
	}
	log_init(LOG_LVL_WARN, LOG_FMT_TEXT);
	optind = 2;
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		switch (c) {
		case 'l': opt.listen = optarg; break;
		case 'c': opt.cert_dir = optarg; break;
		case 'b': opt.bundle = optarg; break;
		case 't': opt.td = optarg; break;
		case 'n': opt.ns = optarg; break;
		case 's': opt.sa = optarg; break;
		case 'u': opt.upstream = optarg; break;
		case 'S': opt.server = optarg; break;
		case 'I': opt.server_id = optarg; break;
		case 'A': opt.authority = optarg; break;
		case 'm': opt.max_streams = (uint32_t)atoi(optarg); break;
		case 'i': opt.idle_ms = strtoull(optarg, NULL, 10); break;
		case 'o': tls_set_record_offload(strcmp(optarg, "off") != 0); break;
		case 'v': log_set_level(LOG_LVL_DEBUG); break;
		default: usage();
		}
	}
	if (opt.listen == NULL || opt.cert_dir == NULL || opt.bundle == NULL || opt.ns == NULL ||
	    opt.sa == NULL)
		usage();
	if (parse_sockaddr(opt.listen, &la, &why) != 0) {
		/* ADDR:0 asks for any free port (parse_sockaddr, made for configs, refuses 0). */
		char host[64];
		const char *colon = strrchr(opt.listen, ':');

		if (colon == NULL || strcmp(colon, ":0") != 0 ||
		    (size_t)(colon - opt.listen) >= sizeof(host))
			usage();
		memcpy(host, opt.listen, (size_t)(colon - opt.listen));
		host[colon - opt.listen] = '\0';
		if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&la) != 0)
			usage();
	}
	if (opt.upstream != NULL && parse_sockaddr(opt.upstream, &upstream_addr, &why) != 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	ic.cert_dir = opt.cert_dir;
	ic.trust_bundle = opt.bundle;
	ic.trust_domain = opt.td;
	ic.expiry_warning_ms = 0;
	if (identity_store_new(&ic, &store) != 0 || identity_store_reload(store) < 0)
		fatalx("cannot load identities from %s", opt.cert_dir);
	me = identity_store_get_sa(store, opt.ns, opt.sa);
	if (me == NULL)
		fatalx("no identity %s/%s in %s", opt.ns, opt.sa, opt.cert_dir);
	if (strcmp(opt.mode, "server") == 0) {
		struct hbone_server_cfg sc = {
			.addr = (struct sockaddr *)&la, .fd = -1, .id = me, .trust_domain = opt.td,
			.handshake_timeout_ms = 5000, .max_streams = opt.max_streams,
			.on_request = on_request,
		};

		r = hbone_server_listen(loop, &sc, &srv);
		if (r != 0)
			fatalx("listen %s: %s", opt.listen, uv_strerror(r));
		printf("listening %d\n", hbone_server_port(srv));
	} else if (strcmp(opt.mode, "client") == 0) {
		struct hbone_pool_cfg pc = { .max_streams = opt.max_streams };
		struct sockaddr_storage bound;
		int blen = sizeof(bound);

		if (opt.server == NULL || opt.server_id == NULL || opt.authority == NULL ||
		    parse_sockaddr(opt.server, &server_addr, &why) != 0)
			usage();
		if (hbone_pool_new(loop, &pc, &pool) != 0)
			fatalx("pool");
		uv_tcp_init(loop, &plain_listener);
		r = uv_tcp_bind(&plain_listener, (struct sockaddr *)&la, 0);
		if (r == 0)
			r = uv_listen((uv_stream_t *)&plain_listener, 4096, on_plain_connection);
		if (r != 0)
			fatalx("listen %s: %s", opt.listen, uv_strerror(r));
		uv_tcp_getsockname(&plain_listener, (struct sockaddr *)&bound, &blen);
		printf("listening %d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
	} else {
		usage();
	}
	fflush(stdout);
	uv_signal_init(loop, &sig_term);
	uv_signal_init(loop, &sig_int);
	uv_signal_init(loop, &sig_usr1);
	uv_signal_start(&sig_term, on_signal, SIGTERM);
	uv_signal_start(&sig_int, on_signal, SIGINT);
	uv_signal_start(&sig_usr1, on_signal, SIGUSR1);
	uv_run(loop, UV_RUN_DEFAULT);
	identity_unref(me);
	identity_store_free(store);
	uv_loop_close(loop);
	return 0;
}
