/* SPDX-License-Identifier: Apache-2.0 */
/* Host-endpoint HTTP/1.1 server: libuv sockets, libhttp-parser, one bounded request per connection. */
#include "config.h"

#include <errno.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/log.h"
#include "telemetry/http.h"

/* After the response, how long at most the server drains what the client still sends. */
#define HTTP_LINGER_MS 2000

enum conn_state { C_READING, C_WRITING, C_LINGER, C_CLOSING };
/* What the arena received last, to know when one string ends and the next begins. */
enum piece { P_NONE, P_URL, P_FIELD, P_VALUE };

struct hdr_off {
	size_t name, value;
};

struct conn {
	struct conn *prev, *next;
	struct http_server *s;
	uv_tcp_t tcp;
	uv_timer_t timer;
	int closed_handles;
	enum conn_state state;
	http_parser parser;
	size_t head_bytes; /* bytes fed to the parser before the head ended */
	bool head_done, msg_done;
	int err_status; /* set by parser callbacks: an HTTP status to answer, or -1 to close */
	enum piece last;
	size_t arena_len, n_headers;
	struct hdr_off hdr[HTTP_MAX_HEADERS];
	char *body;
	size_t body_len, body_cap;
	struct sockaddr_storage peer;
	uv_write_t wr;
	uv_shutdown_t sh;
	char *resp_body;
	bool resp_body_owned;
	char resp_head[512];
	/* The request target and headers, each NUL-terminated; the head bounds their size. */
	char arena[HTTP_MAX_HEAD + 2 * HTTP_MAX_HEADERS + 8];
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

/* Appends to the arena; past its end the head is too large (AMESH_ERR_TOOLONG, answered 431). */
static int
arena_put(struct conn *c, const char *p, size_t n)
{
	if (c->arena_len + n + 1 > sizeof(c->arena)) {
		c->err_status = 431;
		return AMESH_ERR_TOOLONG;
	}
	memcpy(c->arena + c->arena_len, p, n);
	c->arena_len += n;
	return 0;
}

/* Ends the string being received before a new piece starts. 0 or AMESH_ERR_TOOLONG (431). */
static int
piece_switch(struct conn *c, enum piece next)
{
	int r;

	if (c->last == next)
		return 0;
	if (c->last != P_NONE && (r = arena_put(c, "", 1)) != 0)
		return r;
	if (c->last == P_FIELD) {
		/* A header without a value callback: its value is empty. */
		c->hdr[c->n_headers - 1].value = c->arena_len;
		if ((r = arena_put(c, "", 1)) != 0)
			return r;
	}
	if (next == P_FIELD) {
		if (c->n_headers == HTTP_MAX_HEADERS) {
			c->err_status = 431;
			return AMESH_ERR_TOOLONG;
		}
		c->hdr[c->n_headers++].name = c->arena_len;
	}
	c->last = next;
	return 0;
}

/* http_parser's callbacks: non-zero (-1) stops the parser; c->err_status says what to answer. */
static int
on_url(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	return piece_switch(c, P_URL) != 0 || arena_put(c, at, n) != 0 ? -1 : 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->head_done)
		return 0; /* trailers of a chunked body: ignored */
	return piece_switch(c, P_FIELD) != 0 || arena_put(c, at, n) != 0 ? -1 : 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->head_done)
		return 0;
	if (c->last != P_VALUE) {
		if (arena_put(c, "", 1) != 0)
			return -1;
		c->hdr[c->n_headers - 1].value = c->arena_len;
		c->last = P_VALUE;
	}
	return arena_put(c, at, n) != 0 ? -1 : 0;
}

static int
on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;

	if (piece_switch(c, P_NONE) != 0 || arena_put(c, "", 1) != 0)
		return -1;
	c->head_done = true;
	/* ULLONG_MAX: no Content-Length. A declared body too large is refused before it arrives. */
	if (p->content_length != (uint64_t)-1 && p->content_length > HTTP_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;

	if (c->body_len + n > HTTP_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	if (c->body_len + n + 1 > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 1024;
		char *nb;

		while (cap < c->body_len + n + 1)
			cap *= 2;
		nb = realloc(c->body, cap);
		if (nb == NULL) {
			c->err_status = -1;
			return -1;
		}
		c->body = nb;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, at, n);
	c->body_len += n;
	c->body[c->body_len] = '\0';
	return 0;
}

static int
on_message_complete(http_parser *p)
{
	struct conn *c = p->data;

	c->msg_done = true;
	http_parser_pause(p, 1); /* one request per connection: a pipelined one is ignored */
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

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
	free(c->body);
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
	int n;

	uv_read_stop((uv_stream_t *)&c->tcp);
	c->resp_body = body;
	c->resp_body_owned = owned;
	if (status < 100 || status > 999)
		status = 500;
	n = snprintf(c->resp_head, sizeof(c->resp_head),
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
	    status, http_status_str((enum http_status)status), type, len, extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof(c->resp_head)) {
		n = snprintf(c->resp_head, sizeof(c->resp_head),
		    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		    "Connection: close\r\n\r\n", status, http_status_str((enum http_status)status),
		    default_type, len);
	}
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
	static const struct {
		int status;
		const char *body;
	} msgs[] = {
		{ 400, "bad request\n" }, { 404, "not found\n" }, { 405, "method not allowed\n" },
		{ 413, "request body too large\n" }, { 431, "request header fields too large\n" },
		{ 500, "internal error\n" },
	};
	const char *body = "error\n";

	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
		if (msgs[i].status == status)
			body = msgs[i].body;
	respond(c, status, default_type, (char *)body, strlen(body), false, extra);
}

static void
dispatch(struct conn *c)
{
	struct http_server *s = c->s;
	const char *method = http_method_str((enum http_method)c->parser.method);
	const char *target = c->arena, *q;
	const struct http_route *hit = NULL;
	struct http_header hv[HTTP_MAX_HEADERS];
	char path[HTTP_MAX_HEAD + 1], allow[64] = "";
	struct http_req req;
	struct http_resp resp = { 200, default_type, NULL, 0 };
	bool path_known = false;
	size_t plen;

	if (target[0] != '/') {
		respond_error(c, 400, NULL);
		return;
	}
	q = strchr(target, '?');
	plen = q != NULL ? (size_t)(q - target) : strlen(target);
	memcpy(path, target, plen);
	path[plen] = '\0';
	for (const struct http_route *r = s->routes; r->path != NULL; r++) {
		if (strcmp(r->path, path) != 0)
			continue;
		if (!path_known || strstr(allow, r->method) == NULL) {
			size_t al = strlen(allow);

			snprintf(allow + al, sizeof(allow) - al, "%s%s", al ? ", " : "", r->method);
		}
		path_known = true;
		if (hit == NULL && strcmp(r->method, method) == 0)
			hit = r;
	}
	if (hit == NULL) {
		char extra[96];

		if (!path_known) {
			respond_error(c, 404, NULL);
			return;
		}
		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		respond_error(c, 405, extra);
		return;
	}
	for (size_t i = 0; i < c->n_headers; i++) {
		hv[i].name = c->arena + c->hdr[i].name;
		hv[i].value = c->arena + c->hdr[i].value;
	}
	req.method = method;
	req.target = target;
	req.path = path;
	req.query = q != NULL ? q + 1 : "";
	req.body = c->body != NULL ? c->body : "";
	req.body_len = c->body_len;
	req.headers = hv;
	req.n_headers = c->n_headers;
	req.peer = &c->peer;
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

/* Feeds bytes to the parser, holding the head to HTTP_MAX_HEAD bytes; acts when a request ends. */
static void
feed(struct conn *c, const char *data, size_t n)
{
	size_t off = 0;

	while (off < n && !c->msg_done && c->err_status == 0) {
		size_t chunk = n - off, got;
		bool in_head = !c->head_done;
		enum http_errno e;

		/* Within the head, feed no more than its budget: one byte past it is a 431. */
		if (in_head && chunk > HTTP_MAX_HEAD - c->head_bytes)
			chunk = HTTP_MAX_HEAD - c->head_bytes;
		got = http_parser_execute(&c->parser, &parser_settings, data + off, chunk);
		if (in_head)
			c->head_bytes += got;
		off += got;
		e = HTTP_PARSER_ERRNO(&c->parser);
		if (c->err_status != 0 || c->msg_done)
			break;
		if (e != HPE_OK) {
			log_debug("http: bad request: %s", http_errno_description(e));
			c->err_status = 400;
			break;
		}
		if (!c->head_done && c->head_bytes >= HTTP_MAX_HEAD) {
			c->err_status = 431;
			break;
		}
		if (got < chunk) {
			c->err_status = 400;
			break;
		}
	}
	if (c->err_status < 0)
		conn_close(c);
	else if (c->err_status > 0)
		respond_error(c, c->err_status, NULL);
	else if (c->msg_done)
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
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
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
	int r;

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
	r = uv_tcp_bind(&s->listener, addr, 0);
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
