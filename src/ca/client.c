/* SPDX-License-Identifier: Apache-2.0 */
/* The blocking CA client (see client.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ca/client.h"
#include "ca/proto.h"
#include "core/err.h"
#include "core/log.h"
#include "telemetry/httpmsg.h"
#include "tls/cert.h"
#include "tls/rng.h"
#include "tls/tls.h"

struct io {
	int fd;
	uint64_t deadline; /* ms, monotonic */
	const char *expect_id;
	char verify_why[200];
};

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
wait_fd(struct io *io, short ev)
{
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd p = { io->fd, ev, 0 };
		int r;

		if (now >= io->deadline)
			return 0;
		r = poll(&p, 1, (int)(io->deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		return r;
	}
}

/* BIO callbacks with poll() (not select(): a busy ztunnel has descriptors past FD_SETSIZE). */
static int
bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct io *io = ctx;
	ssize_t n;

	if (wait_fd(io, POLLOUT) <= 0)
		return MBEDTLS_ERR_SSL_TIMEOUT;
	n = send(io->fd, buf, len, MSG_NOSIGNAL);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_WRITE :
		    MBEDTLS_ERR_NET_SEND_FAILED;
	return (int)n;
}

static int
bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct io *io = ctx;
	ssize_t n;

	if (wait_fd(io, POLLIN) <= 0)
		return MBEDTLS_ERR_SSL_TIMEOUT;
	n = recv(io->fd, buf, len, 0);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ :
		    MBEDTLS_ERR_NET_RECV_FAILED;
	return (int)n;
}

/* The service's leaf must be spiffe://TD/amesh/ca. */
static int
verify_cb(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct io *io = ctx;
	char id[SPIFFE_ID_MAX];

	if (depth != 0)
		return 0;
	if (cert_spiffe_id(crt, id, sizeof(id)) != 0 || strcmp(id, io->expect_id) != 0) {
		snprintf(io->verify_why, sizeof(io->verify_why), "the service is %.80s, not %.80s",
		    cert_spiffe_id(crt, id, sizeof(id)) == 0 ? id : "(no SPIFFE ID)", io->expect_id);
		*flags |= MBEDTLS_X509_BADCERT_OTHER;
	}
	return 0;
}

int
ca_client_split_addr(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon, *h = addr;
	size_t hl;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');

		if (end == NULL || (end[1] != '\0' && end[1] != ':'))
			return AMESH_ERR_INVALID;
		h = addr + 1;
		hl = (size_t)(end - h);
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(addr, ':');
		if (colon != NULL && strchr(addr, ':') != colon)
			return AMESH_ERR_INVALID; /* a bare IPv6 address needs brackets */
		hl = colon != NULL ? (size_t)(colon - addr) : strlen(addr);
	}
	if (hl == 0 || hl >= hostlen)
		return AMESH_ERR_INVALID;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (colon == NULL)
		snprintf(port, portlen, "%d", CA_DEFAULT_PORT);
	else if (colon[1] == '\0' || strlen(colon + 1) >= portlen ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return AMESH_ERR_INVALID;
	else
		snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

/* A connected non-blocking socket to addr within the deadline, or -1 with why. */
static int
dial(const char *addr, uint32_t mark, struct io *io, char *why, size_t whylen)
{
	struct addrinfo hints = { 0 }, *res = NULL;
	char host[256], port[8];
	int fd = -1, r;

	if (ca_client_split_addr(addr, host, sizeof(host), port, sizeof(port)) != 0) {
		snprintf(why, whylen, "not HOST[:PORT]");
		return -1;
	}
	hints.ai_socktype = SOCK_STREAM;
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(r));
		return -1;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		int err = 0;
		socklen_t el = sizeof(err);

		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
			snprintf(why, whylen, "SO_MARK: %s", strerror(errno));
			close(fd);
			fd = -1;
			continue;
		}
		io->fd = fd;
		/* The head and the body are two TLS records: without this the body waits for the
		 * CA's delayed ACK of the head (Nagle), which doubled every request's time. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || (errno == EINPROGRESS &&
		    wait_fd(io, POLLOUT) > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
		    err == 0))
			break;
		snprintf(why, whylen, "connect: %s", err ? strerror(err) : errno == EINPROGRESS ?
		    "timed out" : strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* With a pin: the chain must verify against the pinned root it carries. */
static int
check_pin(mbedtls_ssl_context *ssl, const char *pin, const char *expect_id, char *why,
    size_t whylen)
{
	const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(ssl);
	mbedtls_x509_crt root, chain;
	char fp[CERT_FINGERPRINT_LEN + 1], id[SPIFFE_ID_MAX];
	uint32_t flags = 0;
	int r = -1;

	if (peer == NULL) {
		snprintf(why, whylen, "the service sent no certificate");
		return -1;
	}
	mbedtls_x509_crt_init(&root);
	mbedtls_x509_crt_init(&chain);
	for (const mbedtls_x509_crt *c = peer; c != NULL && c->raw.len > 0; c = c->next) {
		mbedtls_x509_crt_parse_der(&chain, c->raw.p, c->raw.len);
		if (cert_fingerprint(c, fp, sizeof(fp)) == 0 && strcasecmp(fp, pin) == 0 &&
		    c->ca_istrue)
			mbedtls_x509_crt_parse_der(&root, c->raw.p, c->raw.len);
	}
	if (root.raw.len == 0) {
		snprintf(why, whylen, "the service's chain has no CA certificate with fingerprint %s",
		    pin);
	} else if (mbedtls_x509_crt_verify(&chain, &root, NULL, NULL, &flags, NULL, NULL) != 0) {
		char info[200];

		mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
		info[strcspn(info, "\n")] = '\0';
		snprintf(why, whylen, "the service's chain does not verify against the pinned root: %s",
		    info);
	} else if (cert_spiffe_id(peer, id, sizeof(id)) != 0 || strcmp(id, expect_id) != 0) {
		snprintf(why, whylen, "the service is not %.200s", expect_id);
	} else {
		r = 0;
	}
	mbedtls_x509_crt_free(&root);
	mbedtls_x509_crt_free(&chain);
	return r;
}

static const char *
mbed_str(int r, char *buf, size_t len)
{
	mbedtls_strerror(r, buf, len);
	return buf;
}

/* One attempt at one address. 0 with resp, 1 to try the next address, or a negative code. */
static int
attempt(const struct ca_client_cfg *cfg, mbedtls_ssl_config *conf, const char *addr,
    const char *head, size_t headlen, const char *body, size_t len,
    struct ca_client_resp *resp, char *why, size_t whylen)
{
	struct io io = { .fd = -1 };
	mbedtls_ssl_context ssl;
	struct http_msg *msg = NULL;
	char expect[SPIFFE_ID_MAX], buf[160];
	const char *alpn;
	int r, ret = 1;

	spiffe_format_ca(expect, sizeof(expect), cfg->trust_domain);
	io.expect_id = expect;
	io.deadline = now_ms() + (cfg->timeout_ms ? cfg->timeout_ms : 10000);
	if (dial(addr, cfg->mark, &io, why, whylen) < 0)
		return 1;
	mbedtls_ssl_init(&ssl);
	if ((r = mbedtls_ssl_setup(&ssl, conf)) != 0) {
		snprintf(why, whylen, "TLS setup: %s", mbed_str(r, buf, sizeof(buf)));
		goto out;
	}
	mbedtls_ssl_set_bio(&ssl, &io, bio_send, bio_recv, NULL);
	mbedtls_ssl_set_verify(&ssl, verify_cb, &io);
	while ((r = mbedtls_ssl_handshake(&ssl)) != 0) {
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (io.verify_why[0] != '\0')
			snprintf(why, whylen, "TLS: %s", io.verify_why);
		else if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
			char info[200];

			mbedtls_x509_crt_verify_info(info, sizeof(info), "",
			    mbedtls_ssl_get_verify_result(&ssl));
			info[strcspn(info, "\n")] = '\0';
			snprintf(why, whylen, "TLS: the service's certificate is not trusted: %s",
			    info);
		} else
			snprintf(why, whylen, "TLS handshake: %s", r == MBEDTLS_ERR_SSL_TIMEOUT ?
			    "timed out" : mbed_str(r, buf, sizeof(buf)));
		goto out;
	}
	alpn = mbedtls_ssl_get_alpn_protocol(&ssl);
	if (alpn == NULL || (strcmp(alpn, TLS_ALPN_CA) != 0 && strcmp(alpn, "http/1.1") != 0)) {
		snprintf(why, whylen, "the peer does not speak %s (not an amesh CA?)", TLS_ALPN_CA);
		goto out;
	}
	if (cfg->bundle == NULL && check_pin(&ssl, cfg->pin, expect, why, whylen) != 0) {
		ret = AMESH_ERR_INVALID; /* a pin mismatch is not a reason to try the next one */
		goto out;
	}
	for (size_t off = 0; off < headlen + len;) {
		const char *p = off < headlen ? head + off : body + (off - headlen);
		size_t n = off < headlen ? headlen - off : len - (off - headlen);

		r = mbedtls_ssl_write(&ssl, (const unsigned char *)p, n);
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (r < 0) {
			snprintf(why, whylen, "sending: %s", mbed_str(r, buf, sizeof(buf)));
			goto out;
		}
		off += (size_t)r;
	}
	msg = malloc(sizeof(*msg));
	if (msg == NULL) {
		ret = AMESH_ERR_NOMEM;
		goto out;
	}
	http_msg_init(msg, false, CA_RESP_BODY_MAX);
	while (!msg->done && msg->err_status == 0) {
		unsigned char rb[4096];

		r = mbedtls_ssl_read(&ssl, rb, sizeof(rb));
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
			http_msg_eof(msg);
			break;
		}
		if (r < 0) {
			snprintf(why, whylen, "reading the answer: %s", r == MBEDTLS_ERR_SSL_TIMEOUT ?
			    "timed out" : mbed_str(r, buf, sizeof(buf)));
			goto out;
		}
		http_msg_feed(msg, (const char *)rb, (size_t)r);
	}
	if (!msg->done) {
		snprintf(why, whylen, "a malformed answer (HTTP %d)", msg->err_status);
		goto out;
	}
	resp->status = http_msg_status(msg);
	if (resp->status == 503) {
		snprintf(why, whylen, "503: %.200s", msg->body != NULL ? msg->body : "");
		goto out;
	}
	resp->body = msg->body != NULL ? msg->body : calloc(1, 1);
	resp->body_len = msg->body_len;
	msg->body = NULL;
	if (resp->body == NULL) {
		ret = AMESH_ERR_NOMEM;
		goto out;
	}
	snprintf(resp->addr, sizeof(resp->addr), "%s", addr);
	{
		const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&ssl);

		if (peer == NULL || mbedtls_x509_dn_gets(resp->issuer, sizeof(resp->issuer),
		    &peer->issuer) < 0)
			resp->issuer[0] = '\0';
	}
	mbedtls_ssl_close_notify(&ssl);
	ret = 0;
out:
	if (msg != NULL) {
		http_msg_free(msg);
		free(msg);
	}
	mbedtls_ssl_free(&ssl);
	if (io.fd >= 0)
		close(io.fd);
	return ret;
}

int
ca_client_request(const struct ca_client_cfg *cfg, const char *method, const char *path,
    const char *const *headers, const char *body, size_t len, struct ca_client_resp *resp,
    char *why, size_t whylen)
{
	mbedtls_ssl_config conf;
	char head[HTTP_MAX_HEAD], err[400];
	size_t off = 0, wl = 0;
	int r, n;

	memset(resp, 0, sizeof(*resp));
	if (whylen > 0)
		why[0] = '\0';
	if (cfg->naddrs == 0) {
		snprintf(why, whylen, "no CA address ([identity] ca_address)");
		return AMESH_ERR_INVALID;
	}
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: amesh-ca\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n", method, path, len);
	off = n > 0 ? (size_t)n : 0;
	for (size_t i = 0; headers != NULL && headers[i] != NULL && off < sizeof(head); i++) {
		n = snprintf(head + off, sizeof(head) - off, "%s\r\n", headers[i]);
		off += n > 0 ? (size_t)n : 0;
	}
	if (off + 3 > sizeof(head)) {
		snprintf(why, whylen, "request head too long");
		return AMESH_ERR_TOOLONG;
	}
	off += (size_t)snprintf(head + off, sizeof(head) - off, "\r\n");
	r = tls_conf_init_ca(&conf, MBEDTLS_SSL_IS_CLIENT, cfg->chain, cfg->key, cfg->bundle,
	    cfg->bundle != NULL ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_OPTIONAL);
	if (r != 0) {
		mbedtls_ssl_config_free(&conf);
		snprintf(why, whylen, "TLS setup failed (mbedTLS -0x%04x)", -r);
		return AMESH_ERR_INTERNAL;
	}
	r = 1;
	for (size_t i = 0; i < cfg->naddrs && r == 1; i++) {
		err[0] = '\0';
		r = attempt(cfg, &conf, cfg->addrs[i], head, off, body, len, resp, err, sizeof(err));
		if (r != 0) {
			int k = snprintf(why + wl, whylen > wl ? whylen - wl : 0, "%s%s: %s",
			    wl ? "; " : "", cfg->addrs[i], err[0] ? err : amesh_strerror(r));

			wl += k > 0 ? (size_t)k : 0;
			if (wl >= whylen)
				wl = whylen ? whylen - 1 : 0;
		}
	}
	mbedtls_ssl_config_free(&conf);
	return r == 1 ? AMESH_ERR_NOTFOUND : r;
}

void
ca_client_resp_free(struct ca_client_resp *resp)
{
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}
