/* SPDX-License-Identifier: Apache-2.0 */
/* A bounded HTTP/1.1 message from bytes (see httpmsg.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/log.h"
#include "telemetry/httpmsg.h"

static const char default_type[] = "text/plain; charset=utf-8";

/* Appends to the arena; past its end the head is too large (AMESH_ERR_TOOLONG, answered 431). */
static int
arena_put(struct http_msg *m, const char *p, size_t n)
{
	if (m->arena_len + n + 1 > sizeof(m->arena)) {
		m->err_status = 431;
		return AMESH_ERR_TOOLONG;
	}
	memcpy(m->arena + m->arena_len, p, n);
	m->arena_len += n;
	return 0;
}

/* Ends the string being received before a new piece starts. 0 or AMESH_ERR_TOOLONG (431). */
static int
piece_switch(struct http_msg *m, enum http_msg_piece next)
{
	int r;

	if (m->last == next)
		return 0;
	if (m->last != HTTP_MSG_NONE && (r = arena_put(m, "", 1)) != 0)
		return r;
	if (m->last == HTTP_MSG_FIELD) {
		/* A header without a value callback: its value is empty. */
		m->hdr[m->n_headers - 1].value = m->arena_len;
		if ((r = arena_put(m, "", 1)) != 0)
			return r;
	}
	if (next == HTTP_MSG_FIELD) {
		if (m->n_headers == HTTP_MAX_HEADERS) {
			m->err_status = 431;
			return AMESH_ERR_TOOLONG;
		}
		m->hdr[m->n_headers++].name = m->arena_len;
	}
	m->last = next;
	return 0;
}

/* http_parser's callbacks: non-zero (-1) stops the parser; m->err_status says what to answer. */
static int
on_url(http_parser *p, const char *at, size_t n)
{
	struct http_msg *m = p->data;

	return piece_switch(m, HTTP_MSG_URL) != 0 || arena_put(m, at, n) != 0 ? -1 : 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t n)
{
	struct http_msg *m = p->data;

	if (m->head_done)
		return 0; /* trailers of a chunked body: ignored */
	return piece_switch(m, HTTP_MSG_FIELD) != 0 || arena_put(m, at, n) != 0 ? -1 : 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t n)
{
	struct http_msg *m = p->data;

	if (m->head_done)
		return 0;
	if (m->last != HTTP_MSG_VALUE) {
		if (arena_put(m, "", 1) != 0)
			return -1;
		m->hdr[m->n_headers - 1].value = m->arena_len;
		m->last = HTTP_MSG_VALUE;
	}
	return arena_put(m, at, n) != 0 ? -1 : 0;
}

static int
on_headers_complete(http_parser *p)
{
	struct http_msg *m = p->data;

	if (piece_switch(m, HTTP_MSG_NONE) != 0 || arena_put(m, "", 1) != 0)
		return -1;
	m->head_done = true;
	/* ULLONG_MAX: no Content-Length. A declared body too large is refused before it arrives. */
	if (p->content_length != (uint64_t)-1 && p->content_length > m->max_body) {
		m->err_status = 413;
		return -1;
	}
	return 0;
}

static int
on_body(http_parser *p, const char *at, size_t n)
{
	struct http_msg *m = p->data;

	if (m->body_len + n > m->max_body) {
		m->err_status = 413;
		return -1;
	}
	if (m->body_len + n + 1 > m->body_cap) {
		size_t cap = m->body_cap ? m->body_cap : 1024;
		char *nb;

		while (cap < m->body_len + n + 1)
			cap *= 2;
		nb = realloc(m->body, cap);
		if (nb == NULL) {
			m->err_status = -1;
			return -1;
		}
		m->body = nb;
		m->body_cap = cap;
	}
	memcpy(m->body + m->body_len, at, n);
	m->body_len += n;
	m->body[m->body_len] = '\0';
	return 0;
}

static int
on_message_complete(http_parser *p)
{
	struct http_msg *m = p->data;

	m->done = true;
	http_parser_pause(p, 1); /* one message per reader: what follows is not read */
	return 0;
}

static const http_parser_settings settings = {
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void
http_msg_init(struct http_msg *m, bool request, size_t max_body)
{
	memset(m, 0, offsetof(struct http_msg, arena));
	m->arena[0] = '\0';
	m->max_body = max_body;
	http_parser_init(&m->parser, request ? HTTP_REQUEST : HTTP_RESPONSE);
	m->parser.data = m;
}

void
http_msg_free(struct http_msg *m)
{
	free(m->body);
	m->body = NULL;
	m->body_len = m->body_cap = 0;
}

size_t
http_msg_feed(struct http_msg *m, const char *data, size_t n)
{
	size_t off = 0;

	while (off < n && !m->done && m->err_status == 0) {
		size_t chunk = n - off, got;
		bool in_head = !m->head_done;
		enum http_errno e;

		/* Within the head, feed no more than its budget: one byte past it is a 431. */
		if (in_head && chunk > HTTP_MAX_HEAD - m->head_bytes)
			chunk = HTTP_MAX_HEAD - m->head_bytes;
		got = http_parser_execute(&m->parser, &settings, data + off, chunk);
		if (in_head)
			m->head_bytes += got;
		off += got;
		e = HTTP_PARSER_ERRNO(&m->parser);
		if (m->err_status != 0 || m->done)
			break;
		if (e != HPE_OK) {
			log_debug("http: bad message: %s", http_errno_description(e));
			m->err_status = 400;
			break;
		}
		if (!m->head_done && m->head_bytes >= HTTP_MAX_HEAD) {
			m->err_status = 431;
			break;
		}
		if (got < chunk) {
			m->err_status = 400;
			break;
		}
	}
	return off;
}

void
http_msg_eof(struct http_msg *m)
{
	if (m->done || m->err_status != 0)
		return;
	/* A zero-length execute tells the parser the stream ended (a body read to EOF is done). */
	http_parser_execute(&m->parser, &settings, NULL, 0);
	if (!m->done && m->err_status == 0)
		m->err_status = 400;
}

int
http_msg_request(struct http_msg *m, struct http_req *req, struct http_header *hv, char *path)
{
	const char *target = m->arena, *q;
	size_t plen;

	if (target[0] != '/')
		return 400;
	q = strchr(target, '?');
	plen = q != NULL ? (size_t)(q - target) : strlen(target);
	memcpy(path, target, plen);
	path[plen] = '\0';
	for (size_t i = 0; i < m->n_headers; i++) {
		hv[i].name = m->arena + m->hdr[i].name;
		hv[i].value = m->arena + m->hdr[i].value;
	}
	memset(req, 0, sizeof(*req));
	req->method = http_method_str((enum http_method)m->parser.method);
	req->target = target;
	req->path = path;
	req->query = q != NULL ? q + 1 : "";
	req->body = m->body != NULL ? m->body : "";
	req->body_len = m->body_len;
	req->headers = hv;
	req->n_headers = m->n_headers;
	return 0;
}

unsigned
http_msg_status(const struct http_msg *m)
{
	return m->parser.status_code;
}

const char *
http_msg_header(const struct http_msg *m, const char *name)
{
	for (size_t i = 0; i < m->n_headers; i++)
		if (strcasecmp(m->arena + m->hdr[i].name, name) == 0)
			return m->arena + m->hdr[i].value;
	return NULL;
}

const struct http_route *
http_route_find(const struct http_route *routes, const char *method, const char *path,
    int *status, char *allow, size_t allowlen)
{
	const struct http_route *hit = NULL;
	bool path_known = false;

	if (allowlen > 0)
		allow[0] = '\0';
	for (const struct http_route *r = routes; r->path != NULL; r++) {
		if (strcmp(r->path, path) != 0)
			continue;
		if (allowlen > 0 && (!path_known || strstr(allow, r->method) == NULL)) {
			size_t al = strlen(allow);

			snprintf(allow + al, allowlen - al, "%s%s", al ? ", " : "", r->method);
		}
		path_known = true;
		if (hit == NULL && strcmp(r->method, method) == 0)
			hit = r;
	}
	if (hit == NULL)
		*status = path_known ? 405 : 404;
	return hit;
}

size_t
http_format_head(char *buf, size_t len, int status, const char *type, size_t body_len,
    const char *extra, bool close)
{
	int n;

	if (status < 100 || status > 999)
		status = 500;
	n = snprintf(buf, len, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
	    status, http_status_str((enum http_status)status), type != NULL ? type : default_type,
	    body_len, extra != NULL ? extra : "", close ? "Connection: close\r\n" : "");
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

const char *
http_error_body(int status)
{
	static const struct {
		int status;
		const char *body;
	} msgs[] = {
		{ 400, "bad request\n" }, { 404, "not found\n" }, { 405, "method not allowed\n" },
		{ 413, "request body too large\n" }, { 431, "request header fields too large\n" },
		{ 500, "internal error\n" },
	};

	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++)
		if (msgs[i].status == status)
			return msgs[i].body;
	return "error\n";
}
