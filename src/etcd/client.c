/* SPDX-License-Identifier: Apache-2.0 */
/* The blocking etcd gateway client (see client.h): one connection per call or stream. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "etcd/client.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define HEAD_MAX (16u * 1024)

struct etcd_client {
	char **endpoints;
	size_t n;
	size_t cur; /* the endpoint that answered last: calls start there */
	uint64_t timeout_ms;
	uint32_t mark;
	bool tls;
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca, chain;
	mbedtls_pk_context key;
	int cancel_fd; /* eventfd: readable once cancelled */
};

/* One HTTP/1.1 exchange on one connection. */
struct etcd_stream {
	struct etcd_client *c;
	int fd;
	bool tls, ssl_ready;
	mbedtls_ssl_context ssl;
	uint64_t deadline;    /* ms, monotonic; 0: none (a stream after its head) */
	bool stream;          /* a timeout is WANT_READ (the caller's deadline decides), not an error */
	char host[256];
	bool host_is_ip;
	char verify_why[200];
	http_parser hp;
	size_t head_bytes;
	bool head_done, done, too_big;
	struct buf body;      /* the body (a call), or the undelivered bytes of the stream */
};

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for ev on the socket until the deadline (or forever), watching for cancellation.
 * 1 ready, 0 timed out, -ECANCELED. */
static int
wait_fd(struct etcd_stream *s, short ev, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = { { s->fd, ev, 0 }, { s->c->cancel_fd, POLLIN, 0 } };
		uint64_t now = now_ms();
		int r, tmo = -1;

		if (deadline != 0) {
			if (now >= deadline)
				return 0;
			tmo = (int)(deadline - now);
		}
		r = poll(p, 2, tmo);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (p[1].revents != 0)
			return -ECANCELED;
		return r > 0;
	}
}

static int
bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct etcd_stream *s = ctx;
	ssize_t n;
	int w = wait_fd(s, POLLOUT, s->deadline);

	if (w == 0)
		return MBEDTLS_ERR_SSL_TIMEOUT;
	if (w < 0)
		return MBEDTLS_ERR_NET_SEND_FAILED;
	n = send(s->fd, buf, len, MSG_NOSIGNAL);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_WRITE :
		    MBEDTLS_ERR_NET_SEND_FAILED;
	return (int)n;
}

static int
bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct etcd_stream *s = ctx;
	ssize_t n;
	int w = wait_fd(s, POLLIN, s->deadline);

	if (w == 0)
		return s->stream ? MBEDTLS_ERR_SSL_WANT_READ : MBEDTLS_ERR_SSL_TIMEOUT;
	if (w < 0)
		return MBEDTLS_ERR_NET_RECV_FAILED;
	n = recv(s->fd, buf, len, 0);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ :
		    MBEDTLS_ERR_NET_RECV_FAILED;
	return (int)n;
}

/* mbedTLS 2.28 checks DNS names only: an endpoint given as an IP address must be an IP SAN. */
static int
verify_cb(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct etcd_stream *s = ctx;
	unsigned char want[16];
	size_t wl;

	if (depth != 0 || !s->host_is_ip)
		return 0;
	wl = inet_pton(AF_INET, s->host, want) == 1 ? 4 : inet_pton(AF_INET6, s->host, want) == 1 ?
	    16 : 0;
	for (const mbedtls_x509_sequence *san = &crt->subject_alt_names; san != NULL && wl > 0;
	    san = san->next)
		if ((san->buf.tag & MBEDTLS_ASN1_TAG_VALUE_MASK) == MBEDTLS_X509_SAN_IP_ADDRESS &&
		    san->buf.len == wl && memcmp(san->buf.p, want, wl) == 0)
			return 0;
	snprintf(s->verify_why, sizeof(s->verify_why), "etcd's certificate has no IP SAN %.100s",
	    s->host);
	*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
	return 0;
}

int
etcd_client_new(const struct etcd_client_cfg *cfg, struct etcd_client **out, char *why,
    size_t whylen)
{
	struct etcd_client *c;
	int r;

	*out = NULL;
	if (cfg->n == 0) {
		snprintf(why, whylen, "no etcd endpoint");
		return AMESH_ERR_INVALID;
	}
	c = xcalloc(1, sizeof(*c));
	c->endpoints = xcalloc(cfg->n, sizeof(char *));
	for (size_t i = 0; i < cfg->n; i++)
		c->endpoints[i] = xstrdup(cfg->endpoints[i]);
	c->n = cfg->n;
	c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 5000;
	c->mark = cfg->mark;
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_x509_crt_init(&c->chain);
	mbedtls_pk_init(&c->key);
	c->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->cancel_fd < 0) {
		r = -errno;
		snprintf(why, whylen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	c->tls = cfg->ca != NULL;
	if (!c->tls) {
		*out = c;
		return 0;
	}
	if ((r = cert_load_chain(cfg->ca, &c->ca, why, whylen)) != 0)
		goto fail;
	if (cfg->cert != NULL && ((r = cert_load_chain(cfg->cert, &c->chain, why, whylen)) != 0 ||
	    (r = cert_load_key(cfg->key, &c->key, why, whylen)) != 0))
		goto fail;
	r = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
	    MBEDTLS_SSL_PRESET_DEFAULT);
	if (r == 0) {
		mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
		    MBEDTLS_SSL_MINOR_VERSION_3);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
		mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
		mbedtls_ssl_conf_rng(&c->conf, rng_fill, rng_ctx());
		if (cfg->cert != NULL)
			r = mbedtls_ssl_conf_own_cert(&c->conf, &c->chain, &c->key);
	}
	if (r != 0) {
		snprintf(why, whylen, "TLS setup failed (mbedTLS -0x%04x)", -r);
		r = AMESH_ERR_INTERNAL;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	etcd_client_free(c);
	return r;
}

void
etcd_client_free(struct etcd_client *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		free(c->endpoints[i]);
	free(c->endpoints);
	mbedtls_ssl_config_free(&c->conf);
	mbedtls_x509_crt_free(&c->ca);
	mbedtls_x509_crt_free(&c->chain);
	mbedtls_pk_free(&c->key);
	if (c->cancel_fd >= 0)
		close(c->cancel_fd);
	free(c);
}

void
etcd_client_cancel(struct etcd_client *c)
{
	uint64_t one = 1;

	if (c != NULL && write(c->cancel_fd, &one, sizeof(one)) < 0)
		log_debug("etcd: cancel: %s", strerror(errno));
}

int
etcd_client_sleep(struct etcd_client *c, uint64_t ms)
{
	uint64_t end = now_ms() + ms;

	for (;;) {
		struct pollfd p = { c->cancel_fd, POLLIN, 0 };
		uint64_t now = now_ms();
		int r;

		if (now >= end)
			return 0;
		r = poll(&p, 1, (int)(end - now));
		if (r > 0)
			return -ECANCELED;
	}
}

void
etcd_client_rotate(struct etcd_client *c)
{
	__atomic_store_n(&c->cur, (__atomic_load_n(&c->cur, __ATOMIC_RELAXED) + 1) % c->n,
	    __ATOMIC_RELAXED);
}

const char *
etcd_client_endpoint(const struct etcd_client *c)
{
	return c->endpoints[__atomic_load_n(&c->cur, __ATOMIC_RELAXED)];
}

static bool
cancelled(const struct etcd_client *c)
{
	struct pollfd p = { c->cancel_fd, POLLIN, 0 };

	return poll(&p, 1, 0) > 0;
}

/* Splits "HOST:PORT" / "[V6]:PORT" (etcdurl.c made it so). */
static void
split(const char *ep, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon = strrchr(ep, ':');
	const char *h = ep[0] == '[' ? ep + 1 : ep;
	size_t hl = (size_t)(colon - h) - (ep[0] == '[');

	if (hl >= hostlen)
		hl = hostlen - 1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
}

/* A connected socket to the endpoint, or a negative code with why. */
static int
dial(struct etcd_stream *s, const char *ep, char *why, size_t whylen)
{
	struct addrinfo hints = { 0 }, *res = NULL;
	char port[8];
	unsigned char tmp[16];
	int r, last = 0;

	split(ep, s->host, sizeof(s->host), port, sizeof(port));
	s->host_is_ip = inet_pton(AF_INET, s->host, tmp) == 1 || inet_pton(AF_INET6, s->host, tmp) == 1;
	hints.ai_socktype = SOCK_STREAM;
	r = getaddrinfo(s->host, port, &hints, &res);
	if (r != 0) {
		snprintf(why, whylen, "cannot resolve %s: %s", s->host, gai_strerror(r));
		return AMESH_ERR_NOTFOUND;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		int err = 0, w;
		socklen_t el = sizeof(err);

		s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s->fd < 0)
			continue;
		if (s->c->mark != 0 && setsockopt(s->fd, SOL_SOCKET, SO_MARK, &s->c->mark,
		    sizeof(s->c->mark)) != 0) {
			last = -errno;
			close(s->fd);
			s->fd = -1;
			continue;
		}
		setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		/* A watch is silent for hours: keepalive finds a peer that vanished. */
		setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &(int){ 1 }, sizeof(int));
		setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &(int){ 15 }, sizeof(int));
		setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPINTVL, &(int){ 5 }, sizeof(int));
		setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPCNT, &(int){ 3 }, sizeof(int));
		if (connect(s->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			w = wait_fd(s, POLLOUT, s->deadline);
			if (w > 0 && getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0)
				break;
			last = w < 0 ? w : w == 0 ? -ETIMEDOUT : -err;
		} else {
			last = -errno;
		}
		close(s->fd);
		s->fd = -1;
		if (last == -ECANCELED)
			break;
	}
	freeaddrinfo(res);
	if (s->fd < 0) {
		snprintf(why, whylen, "connect: %s", last == -ETIMEDOUT ? "timed out" :
		    amesh_strerror(last ? last : -ECONNREFUSED));
		return last == -ECANCELED ? -ECANCELED : AMESH_ERR_NOTFOUND;
	}
	return 0;
}

static int
xmit(struct etcd_stream *s, const char *p, size_t n, char *why, size_t whylen)
{
	while (n > 0) {
		ssize_t w;

		if (s->tls) {
			w = mbedtls_ssl_write(&s->ssl, (const unsigned char *)p, n);
			if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE)
				continue;
		} else {
			int r = wait_fd(s, POLLOUT, s->deadline);

			if (r <= 0) {
				snprintf(why, whylen, "sending: %s", r == 0 ? "timed out" :
				    amesh_strerror(r));
				return r == -ECANCELED ? r : AMESH_ERR_NOTFOUND;
			}
			w = send(s->fd, p, n, MSG_NOSIGNAL);
			if (w < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
		}
		if (w < 0) {
			snprintf(why, whylen, "sending: %s", s->tls ? "TLS write failed" :
			    strerror(errno));
			return cancelled(s->c) ? -ECANCELED : AMESH_ERR_NOTFOUND;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads what arrived: >0 bytes, 0 the peer closed, -ETIMEDOUT, -ECANCELED, other < 0 failed. */
static ssize_t
recv_some(struct etcd_stream *s, char *buf, size_t len)
{
	for (;;) {
		if (s->tls) {
			int r = mbedtls_ssl_read(&s->ssl, (unsigned char *)buf, len);

			if (r > 0)
				return r;
			if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
				return 0;
			if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
				if (cancelled(s->c))
					return -ECANCELED;
				if (s->deadline != 0 && now_ms() >= s->deadline)
					return -ETIMEDOUT;
				continue;
			}
			if (cancelled(s->c))
				return -ECANCELED;
			return r == MBEDTLS_ERR_SSL_TIMEOUT ? -ETIMEDOUT : -EIO;
		} else {
			int w = wait_fd(s, POLLIN, s->deadline);
			ssize_t n;

			if (w == 0)
				return -ETIMEDOUT;
			if (w < 0)
				return w;
			n = recv(s->fd, buf, len, 0);
			if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			return n < 0 ? -errno : n;
		}
	}
}

static int
on_body(http_parser *hp, const char *at, size_t len)
{
	struct etcd_stream *s = hp->data;

	if (buf_put(&s->body, at, len) != 0) {
		s->too_big = true;
		return 1;
	}
	return 0;
}

static int
on_headers_complete(http_parser *hp)
{
	struct etcd_stream *s = hp->data;

	s->head_done = true;
	return 0;
}

static int
on_message_complete(http_parser *hp)
{
	struct etcd_stream *s = hp->data;

	s->done = true;
	return 0;
}

static const http_parser_settings settings = {
	.on_body = on_body,
	.on_headers_complete = on_headers_complete,
	.on_message_complete = on_message_complete,
};

/* Feeds n bytes to the HTTP parser. 0, or a negative code with why. */
static int
feed(struct etcd_stream *s, const char *p, size_t n, char *why, size_t whylen)
{
	size_t took;

	if (!s->head_done) {
		s->head_bytes += n;
		if (s->head_bytes > HEAD_MAX + n && !s->head_done) {
			snprintf(why, whylen, "response head longer than %u bytes", HEAD_MAX);
			return AMESH_ERR_TOOLONG;
		}
	}
	took = http_parser_execute(&s->hp, &settings, p, n);
	if (s->too_big) {
		snprintf(why, whylen, "response larger than %zu bytes", s->body.max);
		return AMESH_ERR_TOOLONG;
	}
	if (took != n && !s->done) {
		snprintf(why, whylen, "malformed HTTP response: %s",
		    http_errno_description(HTTP_PARSER_ERRNO(&s->hp)));
		return AMESH_ERR_INVALID;
	}
	return 0;
}

static void
stream_free(struct etcd_stream *s)
{
	if (s == NULL)
		return;
	if (s->ssl_ready)
		mbedtls_ssl_free(&s->ssl);
	if (s->fd >= 0)
		close(s->fd);
	buf_reset(&s->body);
	free(s);
}

/* etcd's JSON error ({"error": ..., "code": N}) as a code and a message in why. */
static int
etcd_error(unsigned status, const char *body, char *why, size_t whylen)
{
	json_t *j = json_loads(body, 0, NULL);
	const char *msg = json_string_value(json_object_get(j, "message"));
	json_int_t code = json_integer_value(json_object_get(j, "code"));
	int r;

	if (msg == NULL)
		msg = json_string_value(json_object_get(j, "error"));
	snprintf(why, whylen, "HTTP %u: %.300s", status, msg != NULL ? msg : body);
	if (msg != NULL && strstr(msg, "compacted") != NULL)
		r = ETCD_ERR_COMPACTED;
	/* gRPC UNAVAILABLE (no leader, stopping) and server errors: another member may answer. */
	else if (code == 14 || status == 503 || (status >= 500 && msg == NULL))
		r = AMESH_ERR_NOTFOUND;
	else
		r = AMESH_ERR_INVALID;
	json_decref(j);
	return r;
}

/*
 * One attempt at endpoint ep: connects, sends, reads the head (stream) or the whole answer.
 * 0 with *out; AMESH_ERR_NOTFOUND to try the next endpoint; another code ends the call.
 */
static int
attempt(struct etcd_client *c, const char *ep, const char *path, const char *body, bool stream,
    struct etcd_stream **out, char *why, size_t whylen)
{
	struct etcd_stream *s = xcalloc(1, sizeof(*s));
	char head[512], rb[16384], mb[120];
	int r, n;

	*out = NULL;
	s->c = c;
	s->fd = -1;
	s->tls = c->tls;
	s->deadline = now_ms() + c->timeout_ms;
	buf_init(&s->body, stream ? ETCD_MAX_MESSAGE + 1 : ETCD_MAX_RESPONSE);
	http_parser_init(&s->hp, HTTP_RESPONSE);
	s->hp.data = s;
	if ((r = dial(s, ep, why, whylen)) != 0)
		goto out;
	if (s->tls) {
		mbedtls_ssl_init(&s->ssl);
		s->ssl_ready = true;
		if ((r = mbedtls_ssl_setup(&s->ssl, &c->conf)) != 0 ||
		    (!s->host_is_ip && (r = mbedtls_ssl_set_hostname(&s->ssl, s->host)) != 0)) {
			mbedtls_strerror(r, mb, sizeof(mb));
			snprintf(why, whylen, "TLS setup: %s", mb);
			r = AMESH_ERR_INTERNAL;
			goto out;
		}
		mbedtls_ssl_set_bio(&s->ssl, s, bio_send, bio_recv, NULL);
		mbedtls_ssl_set_verify(&s->ssl, verify_cb, s);
		while ((r = mbedtls_ssl_handshake(&s->ssl)) != 0) {
			if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
				continue;
			if (cancelled(c)) {
				r = -ECANCELED;
				goto out;
			}
			if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
				char info[200];

				mbedtls_x509_crt_verify_info(info, sizeof(info), "",
				    mbedtls_ssl_get_verify_result(&s->ssl));
				info[strcspn(info, "\n")] = '\0';
				snprintf(why, whylen, "TLS: etcd's certificate is not trusted: %s",
				    s->verify_why[0] ? s->verify_why : info);
			} else {
				mbedtls_strerror(r, mb, sizeof(mb));
				snprintf(why, whylen, "TLS handshake: %s", r == MBEDTLS_ERR_SSL_TIMEOUT ?
				    "timed out" : mb);
			}
			r = AMESH_ERR_NOTFOUND;
			goto out;
		}
	}
	/* A stream asks for etcd's "require leader": a member cut off from its cluster ends the
	 * watch ("no leader") instead of keeping a silent one open, so the next member is tried. */
	n = snprintf(head, sizeof(head), "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
	    "application/json\r\nContent-Length: %zu\r\n%s\r\n", path, ep, strlen(body),
	    stream ? "Grpc-Metadata-hasleader: true\r\n" : "Connection: close\r\n");
	if ((r = xmit(s, head, (size_t)n, why, whylen)) != 0 ||
	    (r = xmit(s, body, strlen(body), why, whylen)) != 0)
		goto out;
	while (!(stream ? s->head_done : s->done)) {
		ssize_t got = recv_some(s, rb, sizeof(rb));

		if (got <= 0) {
			if (got == 0) {
				http_parser_execute(&s->hp, &settings, NULL, 0);
				if (s->done)
					break;
			}
			snprintf(why, whylen, "reading the answer: %s", got == 0 ?
			    "connection closed early" : got == -ETIMEDOUT ? "timed out" :
			    amesh_strerror((int)got));
			r = got == -ECANCELED ? -ECANCELED : AMESH_ERR_NOTFOUND;
			goto out;
		}
		if ((r = feed(s, rb, (size_t)got, why, whylen)) != 0) {
			if (r != AMESH_ERR_TOOLONG)
				r = AMESH_ERR_NOTFOUND;
			goto out;
		}
	}
	if (s->hp.status_code != 200) {
		/* A stream's error body follows its head: read it, within the deadline. */
		while (stream && !s->done) {
			ssize_t got = recv_some(s, rb, sizeof(rb));

			if (got <= 0 || feed(s, rb, (size_t)got, why, whylen) != 0)
				break;
		}
		{
			size_t bl;
			char *b = buf_take_str(&s->body, &bl);

			r = etcd_error(s->hp.status_code, b != NULL ? b : "", why, whylen);
			free(b);
		}
		goto out;
	}
	r = 0;
	*out = s;
	s = NULL;
out:
	stream_free(s);
	return r;
}

/* Tries each endpoint from the current one. */
static int
request(struct etcd_client *c, const char *path, const char *body, bool stream,
    struct etcd_stream **out, char *why, size_t whylen)
{
	size_t wl = 0, start = __atomic_load_n(&c->cur, __ATOMIC_RELAXED);
	char err[400];
	int r = AMESH_ERR_NOTFOUND;

	if (whylen > 0)
		why[0] = '\0';
	for (size_t k = 0; k < c->n && r == AMESH_ERR_NOTFOUND; k++) {
		size_t i = (start + k) % c->n;

		if (cancelled(c))
			return -ECANCELED;
		err[0] = '\0';
		r = attempt(c, c->endpoints[i], path, body, stream, out, err, sizeof(err));
		if (r == 0 || r == ETCD_ERR_COMPACTED || r == AMESH_ERR_INVALID) {
			__atomic_store_n(&c->cur, i, __ATOMIC_RELAXED);
			if (r != 0)
				snprintf(why, whylen, "%s: %s", c->endpoints[i], err);
			return r;
		}
		if (r == -ECANCELED) {
			snprintf(why, whylen, "cancelled");
			return r;
		}
		{
			int m = snprintf(why + wl, whylen > wl ? whylen - wl : 0, "%s%s: %s",
			    wl ? "; " : "", c->endpoints[i], err[0] ? err : amesh_strerror(r));

			wl += m > 0 ? (size_t)m : 0;
			if (wl >= whylen)
				wl = whylen ? whylen - 1 : 0;
		}
	}
	return r;
}

int
etcd_client_call(struct etcd_client *c, const char *path, const char *body, json_t **out,
    char *why, size_t whylen)
{
	struct etcd_stream *s = NULL;
	json_error_t je;
	char *b;
	size_t bl;
	int r;

	*out = NULL;
	r = request(c, path, body, false, &s, why, whylen);
	if (r != 0)
		return r;
	b = buf_take_str(&s->body, &bl);
	if (b == NULL) {
		r = AMESH_ERR_NOMEM;
		goto out;
	}
	*out = json_loadb(b, bl, 0, &je);
	if (*out == NULL || !json_is_object(*out)) {
		snprintf(why, whylen, "%s: the answer is not a JSON object: %s",
		    etcd_client_endpoint(c), *out == NULL ? je.text : "wrong type");
		json_decref(*out);
		*out = NULL;
		r = AMESH_ERR_INVALID;
	}
out:
	free(b);
	stream_free(s);
	return r;
}

int
etcd_stream_open(struct etcd_client *c, const char *path, const char *body,
    struct etcd_stream **out, char *why, size_t whylen)
{
	int r = request(c, path, body, true, out, why, whylen);

	if (r == 0) {
		(*out)->deadline = 0;
		(*out)->stream = true;
	}
	return r;
}

int
etcd_stream_next(struct etcd_stream *s, int wait_ms, json_t **msg, char *why, size_t whylen)
{
	char rb[16384];

	*msg = NULL;
	s->deadline = wait_ms < 0 ? 0 : now_ms() + (uint64_t)wait_ms;
	for (;;) {
		const uint8_t *p = buf_ptr(&s->body);
		const uint8_t *nl = p != NULL ? memchr(p, '\n', buf_len(&s->body)) : NULL;

		if (nl != NULL) {
			json_error_t je;
			size_t len = (size_t)(nl - p);

			*msg = json_loadb((const char *)p, len, 0, &je);
			buf_consume(&s->body, len + 1);
			if (*msg == NULL) {
				snprintf(why, whylen, "a watch message is not JSON: %s", je.text);
				return AMESH_ERR_INVALID;
			}
			return 0;
		}
		if (buf_len(&s->body) > ETCD_MAX_MESSAGE) {
			snprintf(why, whylen, "a watch message is larger than %u bytes", ETCD_MAX_MESSAGE);
			return AMESH_ERR_TOOLONG;
		}
		if (s->done) {
			snprintf(why, whylen, "etcd ended the watch");
			return -EPIPE;
		}
		ssize_t got = recv_some(s, rb, sizeof(rb));

		if (got == -ETIMEDOUT)
			return -ETIMEDOUT;
		if (got <= 0) {
			snprintf(why, whylen, "%s", got == 0 ? "etcd closed the connection" :
			    amesh_strerror((int)got));
			return got == 0 ? -EPIPE : (int)got;
		}
		int r = feed(s, rb, (size_t)got, why, whylen);

		if (r != 0)
			return r;
	}
}

void
etcd_stream_close(struct etcd_stream *s)
{
	stream_free(s);
}
