/* SPDX-License-Identifier: Apache-2.0 */
/* Host-endpoint HTTP/1.1 server: libuv sockets, libhttp-parser, one bounded request per connection. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/inherit.h"
#include "core/log.h"
#include "telemetry/http.h"
#include "telemetry/httpmsg.h"

/* After the response, how long at most the server drains what the client still sends. */
#define HTTP_LINGER_MS 2000

enum conn_state { C_READING, C_WRITING, C_LINGER, C_CLOSING };

struct conn {
	struct conn *prev, *next;
	struct http_server *s;
	uv_tcp_t tcp;
	uv_timer_t timer;
	int closed_handles;
	enum conn_state state;
	struct sockaddr_storage peer;
	uv_write_t wr;
	uv_shutdown_t sh;
	char *resp_body;
	bool resp_body_owned;
	char resp_head[512];
	struct http_msg msg;
};

struct http_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	const struct http_route *routes;
	void *user;
	uint64_t timeout_ms;
	unsigned max_conns, nconns;
	uint64_t refused;
	struct conn *conns;
	bool closing, listener_closed;
	void (*done)(void *arg);
	void *done_arg;
	/* Reads are consumed whole in the read callback, so one buffer serves every connection. */
	char rbuf[16384];
};

static const char default_type[] = "text/plain; charset=utf-8";

static void conn_close(struct conn *c);

static void
on_handle_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct http_server *s = c->s;

	if (++c->closed_handles < 2)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->nconns--;
	http_msg_free(&c->msg);
	if (c->resp_body_owned)
		free(c->resp_body);
	free(c);
	if (s->closing && s->listener_closed && s->nconns == 0) {
		void (*done)(void *) = s->done;
		void *arg = s->done_arg;

		free(s);
		if (done != NULL)
			done(arg);
	}
}

static void
conn_close(struct conn *c)
{
	if (c->state == C_CLOSING)
		return;
	c->state = C_CLOSING;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void
on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;

	if (c->state == C_READING)
		log_debug("http: request from a client not complete in %llu ms, closing",
		    (unsigned long long)c->s->timeout_ms);
	conn_close(c);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;

	buf->base = c->s->rbuf;
	buf->len = sizeof(c->s->rbuf);
}

/* After the response: drain the client until it closes or the linger time is over. */
static void
on_read_linger(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = st->data;

	if (nread < 0)
		conn_close(c);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->data;
	uint64_t linger = c->s->timeout_ms < HTTP_LINGER_MS ? c->s->timeout_ms : HTTP_LINGER_MS;

	if (c->state == C_CLOSING)
		return;
	if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read_linger) != 0) {
		conn_close(c);
		return;
	}
	c->state = C_LINGER;
	uv_timer_start(&c->timer, on_timeout, linger, 0);
}

static void
on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	if (c->resp_body_owned)
		free(c->resp_body);
	c->resp_body = NULL;
	c->resp_body_owned = false;
	if (c->state == C_CLOSING)
		return;
	c->sh.data = c;
	if (status < 0 || uv_shutdown(&c->sh, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

/* Sends the response and takes body (owned: freed after sending). extra: more header lines. */
static void
respond(struct conn *c, int status, const char *type, char *body, size_t len, bool owned,
    const char *extra)
{
	uv_buf_t bufs[2];
	size_t n;

	uv_read_stop((uv_stream_t *)&c->tcp);
	c->resp_body = body;
	c->resp_body_owned = owned;
	n = http_format_head(c->resp_head, sizeof(c->resp_head), status, type, len, extra, true);
	if (n == 0)
		n = http_format_head(c->resp_head, sizeof(c->resp_head), status, NULL, len, NULL,
		    true);
	bufs[0] = uv_buf_init(c->resp_head, (unsigned)n);
	bufs[1] = uv_buf_init(body != NULL ? body : (char *)"", (unsigned)len);
	c->state = C_WRITING;
	c->wr.data = c;
	/* The response has the read timeout to be taken up, like the request. */
	uv_timer_start(&c->timer, on_timeout, c->s->timeout_ms, 0);
	if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, len > 0 ? 2 : 1, on_written) != 0)
		conn_close(c);
}

static void
respond_error(struct conn *c, int status, const char *extra)
{
	const char *body = http_error_body(status);

	respond(c, status, NULL, (char *)body, strlen(body), false, extra);
}

static void
dispatch(struct conn *c)
{
	struct http_server *s = c->s;
	const struct http_route *hit;
	struct http_header hv[HTTP_MAX_HEADERS];
	char path[HTTP_MAX_HEAD + 1], allow[64];
	struct http_req req;
	struct http_resp resp = { 200, NULL, NULL, 0 };
	int status;

	if ((status = http_msg_request(&c->msg, &req, hv, path)) != 0) {
		respond_error(c, status, NULL);
		return;
	}
	req.peer = &c->peer;
	hit = http_route_find(s->routes, req.method, req.path, &status, allow, sizeof(allow));
	if (hit == NULL) {
		char extra[96];

		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		respond_error(c, status, status == 405 ? extra : NULL);
		return;
	}
	hit->handler(&req, &resp, s->user);
	if (c->state == C_CLOSING) {
		/* The handler closed the server: nothing can be sent any more. */
		free(resp.body);
		return;
	}
	if (resp.body != NULL && resp.body_len == 0)
		resp.body_len = strlen(resp.body);
	respond(c, resp.status, resp.content_type != NULL ? resp.content_type : default_type,
	    resp.body, resp.body != NULL ? resp.body_len : 0, true, NULL);
}

/* Feeds bytes to the request; acts when it is whole or refused. */
static void
feed(struct conn *c, const char *data, size_t n)
{
	http_msg_feed(&c->msg, data, n);
	if (c->msg.err_status < 0)
		conn_close(c);
	else if (c->msg.err_status > 0)
		respond_error(c, c->msg.err_status, NULL);
	else if (c->msg.done)
		dispatch(c);
}

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = st->data;

	if (c->state != C_READING)
		return;
	if (nread < 0) {
		conn_close(c); /* EOF or error before a whole request */
		return;
	}
	if (nread > 0)
		feed(c, buf->base, (size_t)nread);
}

static void
refuse_closed(uv_handle_t *h)
{
	free(h);
}

static void
on_connection(uv_stream_t *ls, int status)
{
	struct http_server *s = ls->data;
	struct conn *c;
	int r;

	if (status < 0) {
		log_warn("http: accept: %s", amesh_strerror(status));
		return;
	}
	if (s->closing)
		return;
	c = s->nconns < s->max_conns ? calloc(1, sizeof(*c)) : NULL;
	if (c == NULL) {
		uv_tcp_t *t = malloc(sizeof(*t));

		/* Accepted only to be closed: the client sees the connection end. */
		if (t == NULL || uv_tcp_init(s->loop, t) != 0) {
			free(t);
			log_error("http: out of memory refusing a connection");
			return;
		}
		if (uv_accept(ls, (uv_stream_t *)t) == 0)
			s->refused++;
		uv_close((uv_handle_t *)t, refuse_closed);
		return;
	}
	c->s = s;
	uv_tcp_init(s->loop, &c->tcp);
	uv_timer_init(s->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	http_msg_init(&c->msg, true, HTTP_MAX_BODY);
	r = uv_accept(ls, (uv_stream_t *)&c->tcp);
	if (r == 0) {
		int len = sizeof(c->peer);

		uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
		r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	}
	if (r != 0) {
		log_debug("http: accept: %s", amesh_strerror(r));
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, s->timeout_ms, 0);
}

static void
free_unlistened(uv_handle_t *h)
{
	free(h->data);
}

int
http_server_listen(uv_loop_t *loop, const struct sockaddr *addr, const struct http_route *routes,
    void *user, struct http_server **out)
{
	struct http_server *s;
	int r, fd;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->loop = loop;
	s->routes = routes;
	s->user = user;
	s->timeout_ms = HTTP_READ_TIMEOUT_MS;
	s->max_conns = HTTP_MAX_CONNS;
	r = uv_tcp_init(loop, &s->listener);
	if (r != 0) {
		free(s);
		return r;
	}
	s->listener.data = s;
	/* Handed over by the previous process on an upgrade, else bound here. */
	fd = inherit_tcp_listen(addr, 128);
	r = fd < 0 ? fd : uv_tcp_open(&s->listener, fd);
	if (r != 0 && fd >= 0)
		close(fd);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
	if (r != 0) {
		/* The handle is freed by its close callback, on the caller's next loop run. */
		uv_close((uv_handle_t *)&s->listener, free_unlistened);
		return r;
	}
	*out = s;
	return 0;
}

int
http_server_addr(const struct http_server *s, struct sockaddr_storage *out)
{
	int len = sizeof(*out);

	return uv_tcp_getsockname(&s->listener, (struct sockaddr *)out, &len);
}

void
http_server_set_limits(struct http_server *s, uint64_t read_timeout_ms, unsigned max_conns)
{
	s->timeout_ms = read_timeout_ms;
	s->max_conns = max_conns;
}

unsigned
http_server_conns(const struct http_server *s)
{
	return s->nconns;
}

uint64_t
http_server_refused(const struct http_server *s)
{
	return s->refused;
}

static void
on_listener_closed(uv_handle_t *h)
{
	struct http_server *s = h->data;

	s->listener_closed = true;
	if (s->nconns == 0) {
		void (*done)(void *) = s->done;
		void *arg = s->done_arg;

		free(s);
		if (done != NULL)
			done(arg);
	}
}

void
http_server_close(struct http_server *s, void (*done)(void *arg), void *arg)
{
	if (s == NULL || s->closing)
		return;
	s->closing = true;
	s->done = done;
	s->done_arg = arg;
	for (struct conn *c = s->conns; c != NULL; c = c->next)
		conn_close(c);
	uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

const char *
http_req_header(const struct http_req *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

const char *
http_req_query(const struct http_req *req, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);

	for (const char *p = req->query; *p != '\0';) {
		size_t n = strcspn(p, "&");

		if (n >= klen && strncmp(p, key, klen) == 0 && (n == klen || p[klen] == '=')) {
			size_t o = 0;

			for (size_t i = klen + (n > klen); i < n; i++) {
				char ch = p[i];

				if (ch == '+') {
					ch = ' ';
				} else if (ch == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 &&
				    hexval(p[i + 2]) >= 0) {
					ch = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
					i += 2;
				}
				if (o + 1 >= len)
					return NULL;
				buf[o++] = ch;
			}
			if (len == 0)
				return NULL;
			buf[o] = '\0';
			return buf;
		}
		p += n;
		if (*p == '&')
			p++;
	}
	return NULL;
}

void
http_handle_logging(struct http_req *req, struct http_resp *resp, void *user)
{
	char level[16];
	int l;

	if (http_req_query(req, "level", level, sizeof(level)) != NULL) {
		l = log_level_parse(level);
		if (l < 0) {
			resp->status = 400;
			resp->body = strdup("level: expected error, warn, info or debug\n");
			return;
		}
		log_set_level((enum log_level)l);
		log_info("admin: log level set to %s", level);
	}
	resp->status = 200;
	if (asprintf(&resp->body, "level: %s\n", log_level_name(log_get_level())) < 0)
		resp->body = NULL;
}
