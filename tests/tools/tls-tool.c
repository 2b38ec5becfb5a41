/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test driver for amesh's TLS connections (tls/tls.c) without HTTP/2 on top, so that openssl
 * s_client/s_server and Python's ssl can talk to it byte for byte:
 *   tls-tool server --listen ADDR:PORT --mode sink|echo|source [--bytes N]
 *       sink: each connection's bytes are counted and hashed until the peer's close_notify (or
 *       EOF), then "conn I got N SHA256 peer-closed SUITE" and our close_notify;
 *       echo: bytes go back; source: N pattern bytes, then close_notify.
 *   tls-tool client --connect ADDR:PORT --server-id ID --mode send|recv [--bytes N]
 *       send: N pattern bytes, "sent N SHA256 - SUITE", then close_notify; recv: "got N
 *       SHA256 peer-closed SUITE" at the peer's close (close_notify, or EOF: tls.c does not say
 *       which, the peer's own report does).
 *   tls-tool gen N: the same N pattern bytes on stdout (to feed openssl s_client).
 *   tls-tool offload: exits 0 when this build has the offloaded record layer.
 * Both sides take --cert-dir DIR --bundle FILE --ns NS --sa SA [--td TD] [--offload on|off].
 * A connection that ends otherwise prints "conn I failed after N bytes". ALPN is not required.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#ifdef HAVE_RECORD_OFFLOAD
/* OpenSSL's SHA-256 uses the CPU's SHA extensions: mbedTLS's would bound a 1 GiB test here. */
#include <openssl/evp.h>
#define sha_ctx EVP_MD_CTX *
#define sha_init(c) (*(c) = EVP_MD_CTX_new(), EVP_DigestInit_ex(*(c), EVP_sha256(), NULL))
#define sha_update(c, d, n) EVP_DigestUpdate(*(c), d, n)
#define sha_final(c, out) EVP_DigestFinal_ex(*(c), out, NULL)
#define sha_free(c) EVP_MD_CTX_free(*(c))
#else
#include <mbedtls/sha256.h>
#define sha_ctx mbedtls_sha256_context
#define sha_init(c) (mbedtls_sha256_init(c), mbedtls_sha256_starts_ret(c, 0))
#define sha_update(c, d, n) mbedtls_sha256_update_ret(c, d, n)
#define sha_final(c, out) mbedtls_sha256_finish_ret(c, out)
#define sha_free(c) mbedtls_sha256_free(c)
#endif

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "tls/identity.h"
#include "tls/record.h"
#include "tls/tls.h"

static struct {
	const char *mode, *listen, *connect, *cert_dir, *bundle, *td, *ns, *sa, *server_id;
	uint64_t bytes;
} opt = { .td = "cluster.local", .bytes = 0 };

static uv_loop_t *loop;
static struct identity *me;
static uv_tcp_t listener;
static unsigned nconn;

/* The byte stream every side agrees on: xorshift64* from a fixed seed. */
struct pattern {
	uint64_t s;
};

static void
pattern_fill(struct pattern *p, uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t x = p->s;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		p->s = x;
		x *= 0x2545F4914F6CDD1Dull;
		memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
	}
}

struct conn {
	struct tls_conn *t;
	unsigned id;
	sha_ctx sha;
	uint64_t n;        /* bytes received or sent */
	struct pattern pat;
	bool eof, done, closing;
	char suite[64];
};

static void
hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void
report(struct conn *c, const char *what)
{
	uint8_t d[32];
	char h[65];

	sha_final(&c->sha, d);
	hex(d, 32, h);
	printf("conn %u %s %llu %s %s %s\n", c->id, what, (unsigned long long)c->n, h,
	    c->eof ? "peer-closed" : "-", c->suite);
	fflush(stdout);
	c->done = true;
}

/* Writes pattern bytes while the connection takes them; then close_notify. */
static void
pump(struct conn *c)
{
	uint8_t buf[65536];

	while (!c->closing && c->n < opt.bytes && tls_conn_writable(c->t)) {
		size_t k = opt.bytes - c->n < sizeof(buf) ? (size_t)(opt.bytes - c->n) : sizeof(buf);

		pattern_fill(&c->pat, buf, k);
		sha_update(&c->sha, buf, k);
		if (tls_conn_write(c->t, buf, k) != 0)
			return;
		c->n += k;
	}
	if (!c->closing && c->n == opt.bytes) {
		c->closing = true;
		/* Our close_notify follows; the peer's answer is not waited for (tls_conn_close
		 * stops reading), so the peer's own log says whether ours arrived. */
		report(c, "sent");
		tls_conn_close(c->t);
	}
}

static void
on_handshake(struct tls_conn *t, int status)
{
	struct conn *c = tls_conn_user(t);

	if (status != 0) {
		printf("conn %u handshake failed: %s\n", c->id, amesh_strerror(status));
		fflush(stdout);
		return;
	}
	snprintf(c->suite, sizeof(c->suite), "%s", tls_conn_suite(t));
	if (strcmp(opt.mode, "source") == 0 || strcmp(opt.mode, "send") == 0)
		pump(c);
}

static void
on_read(struct tls_conn *t, const uint8_t *data, size_t len)
{
	struct conn *c = tls_conn_user(t);

	if (len == 0) {
		/* tls.c says len 0 for close_notify and for a bare EOF alike; the peers in the tests
		 * send close_notify, and a missing one shows as "failed" from the peer's side. */
		c->eof = true;
		if (strcmp(opt.mode, "send") != 0 && strcmp(opt.mode, "source") != 0)
			report(c, "got");
		if (!c->closing) {
			c->closing = true;
			tls_conn_close(t);
		}
		return;
	}
	if (strcmp(opt.mode, "echo") == 0) {
		tls_conn_write(t, data, len);
		if (!tls_conn_writable(t))
			tls_conn_read_stop(t);
	}
	sha_update(&c->sha, data, len);
	if (strcmp(opt.mode, "sink") == 0 || strcmp(opt.mode, "recv") == 0 ||
	    strcmp(opt.mode, "echo") == 0)
		c->n += len;
}

static void
on_drain(struct tls_conn *t)
{
	struct conn *c = tls_conn_user(t);

	if (strcmp(opt.mode, "echo") == 0)
		tls_conn_read_start(t);
	else
		pump(c);
}

static void
on_close(struct tls_conn *t)
{
	struct conn *c = tls_conn_user(t);

	if (!c->done) {
		printf("conn %u failed after %llu bytes\n", c->id, (unsigned long long)c->n);
		fflush(stdout);
	}
	sha_free(&c->sha);
	free(c);
	if (strcmp(opt.mode, "send") == 0 || strcmp(opt.mode, "recv") == 0)
		uv_stop(loop);
}

static const struct tls_conn_cb cbs = {
	.on_handshake = on_handshake,
	.on_read = on_read,
	.on_drain = on_drain,
	.on_close = on_close,
};

static struct conn *
conn_new(void)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		exit(1);
	c->id = nconn++;
	c->pat.s = 0x9E3779B97F4A7C15ull;
	sha_init(&c->sha);
	return c;
}

static void
on_conn(uv_stream_t *srv, int status)
{
	struct tls_conn_opts o = { .id = me, .trust_domain = opt.td, .alpn = "",
		.handshake_timeout_ms = 10000 };
	struct conn *c;

	if (status < 0)
		return;
	c = conn_new();
	if (tls_conn_accept(srv, &o, &cbs, c, &c->t) != 0)
		free(c);
}

static void
usage(void)
{
	fprintf(stderr, "usage: tls-tool server --listen ADDR:PORT --mode sink|echo|source "
	    "[--bytes N] COMMON\n       tls-tool client --connect ADDR:PORT --server-id ID "
	    "--mode send|recv [--bytes N] COMMON\n       tls-tool gen N\n"
	    "COMMON: --cert-dir DIR --bundle FILE --ns NS --sa SA [--td TD] [--offload on|off]\n");
	exit(2);
}

static int
gen(const char *arg)
{
	struct pattern p = { 0x9E3779B97F4A7C15ull };
	uint8_t buf[65536];
	uint64_t n;

	if (parse_size(arg, &n, NULL) != 0)
		usage();
	while (n > 0) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);

		pattern_fill(&p, buf, k);
		if (fwrite(buf, 1, k, stdout) != k)
			return 1;
		n -= k;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "listen", 1, NULL, 'l' }, { "connect", 1, NULL, 'c' }, { "mode", 1, NULL, 'm' },
		{ "bytes", 1, NULL, 'b' }, { "cert-dir", 1, NULL, 'd' }, { "bundle", 1, NULL, 'B' },
		{ "ns", 1, NULL, 'n' }, { "sa", 1, NULL, 's' }, { "td", 1, NULL, 't' },
		{ "server-id", 1, NULL, 'i' }, { "offload", 1, NULL, 'o' }, { "verbose", 0, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	struct identity_store_config ic = { 0 };
	struct identity_store *store;
	struct sockaddr_storage sa;
	const char *why = NULL;
	bool server;
	int c, r;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "gen") == 0)
		return argc == 3 ? gen(argv[2]) : (usage(), 2);
	if (strcmp(argv[1], "offload") == 0)
		return record_available() ? 0 : 1; /* the build has the record layer */
	server = strcmp(argv[1], "server") == 0;
	if (!server && strcmp(argv[1], "client") != 0)
		usage();
	log_set_level(LOG_LVL_WARN);
	while ((c = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
		switch (c) {
		case 'l': opt.listen = optarg; break;
		case 'c': opt.connect = optarg; break;
		case 'm': opt.mode = optarg; break;
		case 'b':
			if (parse_size(optarg, &opt.bytes, NULL) != 0)
				usage();
			break;
		case 'd': opt.cert_dir = optarg; break;
		case 'B': opt.bundle = optarg; break;
		case 'n': opt.ns = optarg; break;
		case 's': opt.sa = optarg; break;
		case 't': opt.td = optarg; break;
		case 'i': opt.server_id = optarg; break;
		case 'o': tls_set_record_offload(strcmp(optarg, "off") != 0); break;
		case 'v': log_set_level(LOG_LVL_DEBUG); break;
		default: usage();
		}
	}
	if (opt.mode == NULL || opt.cert_dir == NULL || opt.bundle == NULL || opt.ns == NULL ||
	    opt.sa == NULL || (server ? opt.listen == NULL : opt.connect == NULL ||
	    opt.server_id == NULL))
		usage();
	loop = uv_default_loop();
	ic.cert_dir = opt.cert_dir;
	ic.trust_bundle = opt.bundle;
	ic.trust_domain = opt.td;
	ic.only_ns = opt.ns;
	ic.only_sa = opt.sa;
	if (identity_store_new(&ic, &store) != 0 || identity_store_reload(store) < 0 ||
	    (me = identity_store_get_sa(store, opt.ns, opt.sa)) == NULL) {
		fprintf(stderr, "tls-tool: no identity %s/%s in %s\n", opt.ns, opt.sa, opt.cert_dir);
		return 1;
	}
	if (parse_sockaddr(server ? opt.listen : opt.connect, &sa, &why) != 0) {
		/* IPV4:0 asks for any free port (parse_sockaddr, made for configs, refuses 0). */
		char host[64];
		const char *a = server ? opt.listen : opt.connect, *colon = strrchr(a, ':');

		if (!server || colon == NULL || strcmp(colon, ":0") != 0 ||
		    (size_t)(colon - a) >= sizeof(host)) {
			fprintf(stderr, "tls-tool: %s: %s\n", a, why);
			return 1;
		}
		memcpy(host, a, (size_t)(colon - a));
		host[colon - a] = '\0';
		if (uv_ip4_addr(host, 0, (struct sockaddr_in *)&sa) != 0)
			usage();
	}
	if (server) {
		int len = sizeof(sa);

		uv_tcp_init(loop, &listener);
		if ((r = uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0)) != 0 ||
		    (r = uv_listen((uv_stream_t *)&listener, 128, on_conn)) != 0) {
			fprintf(stderr, "tls-tool: listen: %s\n", uv_strerror(r));
			return 1;
		}
		uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &len);
		printf("listening %u\n", ntohs(((struct sockaddr_in *)&sa)->sin_port));
		fflush(stdout);
	} else {
		const char *expect[] = { opt.server_id, NULL };
		struct tls_conn_opts o = { .id = me, .expect = expect, .alpn = "",
			.handshake_timeout_ms = 10000 };
		struct conn *cn = conn_new();

		if ((r = tls_conn_connect(loop, (struct sockaddr *)&sa, &o, &cbs, cn, &cn->t)) != 0) {
			fprintf(stderr, "tls-tool: connect: %s\n", amesh_strerror(r));
			return 1;
		}
	}
	uv_run(loop, UV_RUN_DEFAULT);
	/* A client ends here (the server is killed): leave nothing for LeakSanitizer. */
	identity_unref(me);
	identity_store_free(store);
	uv_loop_close(loop);
	return 0;
}
