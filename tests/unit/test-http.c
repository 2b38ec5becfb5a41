/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for telemetry/http.c: the server on a real libuv loop on 127.0.0.1:0, driven by a client
 * thread with blocking sockets (and curl when installed), with a hard timeout so nothing hangs.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "telemetry/http.h"
#include "runner.h"

static void
hello(struct http_req *req, struct http_resp *resp, void *user)
{
	resp->body = strdup("hello\n");
}

/* Echoes what the request carried, to check parsing and the helpers. */
static void
echo(struct http_req *req, struct http_resp *resp, void *user)
{
	char level[64], *body;
	const char *lv = http_req_query(req, "level", level, sizeof(level));
	const char *xt = http_req_header(req, "X-Test");

	ASSERT(asprintf(&body, "%s %s q=%s level=%s x-test=%s body=%.*s", req->method, req->path,
	    req->query, lv ? lv : "(none)", xt ? xt : "(none)", (int)req->body_len, req->body) > 0);
	resp->status = 201;
	resp->content_type = "application/json";
	resp->body = body;
}

static const struct http_route routes[] = {
	{ "GET", "/hello", hello },
	{ "GET", "/echo", echo },
	{ "POST", "/echo", echo },
	{ NULL, NULL, NULL },
};

struct ctx {
	uv_loop_t loop;
	uv_async_t done;
	uv_timer_t hard;
	struct http_server *srv, *srv2; /* srv: short read timeout; srv2: default limits */
	int port, port2, closed;
};

static int
connect_to(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ASSERT(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ASSERT(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
	return fd;
}

static void
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		ASSERT(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

/* Reads until EOF (or reset); returns what came, in a static buffer. */
static char *
read_all(int fd)
{
	static char buf[65536];
	size_t n = 0;

	for (;;) {
		ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);

		if (r == 0 || (r < 0 && errno == ECONNRESET))
			break;
		ASSERT(r > 0); /* a timeout here means the server neither answered nor closed */
		n += (size_t)r;
		ASSERT(n < sizeof(buf) - 1);
	}
	buf[n] = '\0';
	return buf;
}

static char *
request(int port, const char *raw, size_t len)
{
	int fd = connect_to(port);
	char *out;

	send_all(fd, raw, len);
	out = read_all(fd);
	close(fd);
	return out;
}

static char *
request_str(int port, const char *raw)
{
	return request(port, raw, strlen(raw));
}

static void
assert_status(const char *resp, int status)
{
	char want[32];

	snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
	if (strncmp(resp, want, strlen(want)) != 0) {
		fprintf(stderr, "want status %d, got: %s\n", status, resp);
		ASSERT(0);
	}
	/* Every response closes the connection and says so. */
	ASSERT(strstr(resp, "\r\nConnection: close\r\n") != NULL);
}

/* A GET whose head (request line, headers, blank line) is exactly total bytes long. */
static char *
head_of_size(size_t total)
{
	const char *pre = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Pad: ", *post = "\r\n\r\n";
	size_t pad = total - strlen(pre) - strlen(post);
	char *s = malloc(total + 1);

	ASSERT(s != NULL && total > strlen(pre) + strlen(post));
	memcpy(s, pre, strlen(pre));
	memset(s + strlen(pre), 'a', pad);
	memcpy(s + strlen(pre) + pad, post, strlen(post) + 1);
	ASSERT(strlen(s) == total);
	return s;
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

static void *
client(void *arg)
{
	struct ctx *x = arg;
	int port = x->port, port2 = x->port2;
	char *r, *big;

	/* 200, with the handler's body, type and length. */
	r = request_str(port, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n");
	assert_status(r, 200);
	ASSERT(strstr(r, "\r\nContent-Type: text/plain; charset=utf-8\r\n") != NULL);
	ASSERT(strstr(r, "\r\nContent-Length: 6\r\n") != NULL);
	ASSERT(strlen(r) > 10 && strcmp(r + strlen(r) - 10, "\r\n\r\nhello\n") == 0);
	/* HTTP/1.0 works too. */
	assert_status(request_str(port, "GET /hello HTTP/1.0\r\n\r\n"), 200);

	/* 404, 405 with Allow, and a method the server does not do at all. */
	r = request_str(port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_status(r, 404);
	r = request_str(port, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
	assert_status(r, 405);
	ASSERT(strstr(r, "\r\nAllow: GET\r\n") != NULL);
	r = request_str(port, "DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_status(r, 405);
	ASSERT(strstr(r, "\r\nAllow: GET, POST\r\n") != NULL);

	/* Query, headers (any case), body: fixed length and chunked. */
	r = request_str(port, "POST /echo?a=1&level=de%62ug+x HTTP/1.1\r\nHost: x\r\n"
	    "x-test: yes\r\nContent-Length: 3\r\n\r\nabc");
	assert_status(r, 201);
	ASSERT(strstr(r, "\r\nContent-Type: application/json\r\n") != NULL);
	ASSERT(strstr(r, "\r\n\r\nPOST /echo q=a=1&level=de%62ug+x level=debug x "
	    "x-test=yes body=abc") != NULL);
	r = request_str(port, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");
	assert_status(r, 201);
	ASSERT(strstr(r, "level=(none) x-test=(none) body=abcde") != NULL);
	/* Pipelined: only the first request is answered. */
	r = request_str(port, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
	assert_status(r, 200);
	ASSERT(strstr(r, "404") == NULL);

	/* Malformed requests and targets. */
	assert_status(request_str(port, "GARBAGE\r\n\r\n"), 400);
	assert_status(request_str(port, "GET http://x/hello HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
	assert_status(request_str(port, "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n"), 400);

	/* The head limit, to the byte. */
	big = head_of_size(HTTP_MAX_HEAD);
	assert_status(request_str(port, big), 200);
	free(big);
	big = head_of_size(HTTP_MAX_HEAD + 1);
	assert_status(request_str(port, big), 431);
	free(big);
	/* Far over it, the client still gets its 431 rather than a reset. */
	big = head_of_size(HTTP_MAX_HEAD * 4);
	assert_status(request_str(port, big), 431);
	free(big);
	/* Too many headers. */
	{
		char *many = malloc(HTTP_MAX_HEAD), *p = many;

		p += sprintf(p, "GET /hello HTTP/1.1\r\n");
		for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
			p += sprintf(p, "h%d: v\r\n", i);
		sprintf(p, "\r\n");
		ASSERT(strlen(many) < HTTP_MAX_HEAD);
		assert_status(request_str(port, many), 431);
		free(many);
	}
	/* Bodies: declared too large, or sent too large in chunks. */
	assert_status(request_str(port, "POST /echo HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: 1000000\r\n\r\n"), 413);
	{
		size_t n = HTTP_MAX_BODY + 4096, off;
		char *body = malloc(n + 256);

		off = (size_t)sprintf(body, "POST /echo HTTP/1.1\r\nHost: x\r\n"
		    "Transfer-Encoding: chunked\r\n\r\n%zx\r\n", n - 64);
		memset(body + off, 'b', n - 64);
		off += n - 64;
		off += (size_t)sprintf(body + off, "\r\n0\r\n\r\n");
		assert_status(request(port, body, off), 413);
		free(body);
	}

	/* A slow client: the request is not complete in time, the server closes without a word. */
	{
		int fd = connect_to(port);
		double t0;
		char *got;

		send_all(fd, "GET /hello HTTP/1.1\r\n", 21);
		t0 = now_ms();
		got = read_all(fd);
		ASSERT_STREQ(got, "");
		ASSERT(now_ms() - t0 >= 200 && now_ms() - t0 < 3000);
		close(fd);
	}

	/*
	 * Connection limit (on the server with the default 10 s timeout): 64 open connections, the
	 * 65th is closed at once, the others still work.
	 */
	port = port2;
	{
		int fds[HTTP_MAX_CONNS], extra, fd = -1;
		char *got;

		for (int i = 0; i < HTTP_MAX_CONNS; i++) {
			fds[i] = connect_to(port);
			send_all(fds[i], "GET /hello HTTP/1.1\r\n", 21);
		}
		extra = connect_to(port);
		got = read_all(extra);
		ASSERT_STREQ(got, "");
		close(extra);
		send_all(fds[7], "Host: x\r\n\r\n", 11);
		assert_status(read_all(fds[7]), 200);
		for (int i = 0; i < HTTP_MAX_CONNS; i++)
			close(fds[i]);
		/* Once the server has seen them close, new connections are served again. */
		for (int tries = 0; tries < 100; tries++) {
			fd = connect_to(port);
			send_all(fd, "GET /hello HTTP/1.1\r\n\r\n", 23);
			got = read_all(fd);
			close(fd);
			if (got[0] != '\0')
				break;
			usleep(20000);
		}
		assert_status(got, 200);
	}

	/* A real client. */
	if (access("/usr/bin/curl", X_OK) == 0) {
		char cmd[256], out[256] = "";
		FILE *p;

		snprintf(cmd, sizeof(cmd), "/usr/bin/curl -s -m 5 -w ' %%{http_code}' "
		    "-d 'x=1' 'http://127.0.0.1:%d/echo?level=info'", port);
		p = popen(cmd, "r");
		ASSERT(p != NULL);
		ASSERT(fgets(out, sizeof(out), p) != NULL);
		pclose(p);
		ASSERT_STREQ(out, "POST /echo q=level=info level=info x-test=(none) body=x=1 201");
	}
	uv_async_send(&x->done);
	return NULL;
}

static void
on_closed(void *arg)
{
	struct ctx *x = arg;

	x->closed++;
}

static void
set_flag(void *arg)
{
	*(bool *)arg = true;
}

static void
on_done(uv_async_t *a)
{
	struct ctx *x = a->data;

	ASSERT_EQ(http_server_refused(x->srv), 0);
	/* At least the 65th; a retry racing the server's view of the closes may be refused too. */
	ASSERT(http_server_refused(x->srv2) >= 1);
	http_server_close(x->srv, on_closed, x);
	http_server_close(x->srv2, on_closed, x);
	uv_close((uv_handle_t *)&x->done, NULL);
	uv_close((uv_handle_t *)&x->hard, NULL);
}

static void
on_hard_timeout(uv_timer_t *t)
{
	fprintf(stderr, "test-http: hard timeout, the client is stuck\n");
	exit(1);
}

TEST(http_server_requests)
{
	struct ctx x;
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	pthread_t th;

	memset(&x, 0, sizeof(x));
	ASSERT(uv_loop_init(&x.loop) == 0);
	ASSERT(uv_ip4_addr("127.0.0.1", 0, &sin) == 0);
	ASSERT(http_server_listen(&x.loop, (struct sockaddr *)&sin, routes, NULL, &x.srv) == 0);
	/* A short read timeout so the slow client is cut quickly; the limit stays at 64. */
	http_server_set_limits(x.srv, 300, HTTP_MAX_CONNS);
	ASSERT(http_server_addr(x.srv, &ss) == 0);
	x.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	ASSERT(x.port > 0);
	ASSERT(http_server_listen(&x.loop, (struct sockaddr *)&sin, routes, NULL, &x.srv2) == 0);
	ASSERT(http_server_addr(x.srv2, &ss) == 0);
	x.port2 = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	uv_async_init(&x.loop, &x.done, on_done);
	x.done.data = &x;
	uv_timer_init(&x.loop, &x.hard);
	uv_timer_start(&x.hard, on_hard_timeout, 45000, 0);
	ASSERT(pthread_create(&th, NULL, client, &x) == 0);
	ASSERT(uv_run(&x.loop, UV_RUN_DEFAULT) == 0);
	pthread_join(th, NULL);
	ASSERT_EQ(x.closed, 2);
	ASSERT(uv_loop_close(&x.loop) == 0);
}

/* Closing with connections open and a port already taken. */
TEST(http_server_close_busy)
{
	uv_loop_t loop;
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	struct http_server *s, *s2;
	bool closed = false;
	int fd, port;

	ASSERT(uv_loop_init(&loop) == 0);
	ASSERT(uv_ip4_addr("127.0.0.1", 0, &sin) == 0);
	ASSERT(http_server_listen(&loop, (struct sockaddr *)&sin, routes, NULL, &s) == 0);
	ASSERT(http_server_addr(s, &ss) == 0);
	port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	/* The same address again: the bind or listen error comes back, nothing leaks. */
	sin.sin_port = htons((uint16_t)port);
	ASSERT(http_server_listen(&loop, (struct sockaddr *)&sin, routes, NULL, &s2) == UV_EADDRINUSE);
	ASSERT(s2 == NULL);
	fd = connect_to(port);
	send_all(fd, "GET /hel", 8);
	/* Let the server accept and read it. */
	for (int i = 0; i < 100 && http_server_conns(s) == 0; i++)
		uv_run(&loop, UV_RUN_NOWAIT), usleep(1000);
	ASSERT_EQ(http_server_conns(s), 1);
	http_server_close(s, set_flag, &closed);
	ASSERT(uv_run(&loop, UV_RUN_DEFAULT) == 0);
	ASSERT(closed);
	ASSERT_STREQ(read_all(fd), "");
	close(fd);
	http_server_close(NULL, NULL, NULL);
	ASSERT(uv_loop_close(&loop) == 0);
}
