/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One bounded HTTP/1.1 message read from bytes, with Debian's libhttp-parser: the request of the
 * host endpoints (telemetry/http.c) and of the CA service, and the CA client's response. It knows
 * nothing of sockets: feed it what arrived, and look at it when it is done.
 *
 * Limits (HTTP_MAX_HEAD, HTTP_MAX_HEADERS in http.h; the body limit per message): a head past its
 * budget is err_status 431, a body past the limit 413 (a declared Content-Length is refused
 * before the body arrives), a malformed message 400, out of memory -1. One message per reader:
 * what follows it is not read.
 */
#ifndef AMESH_TELEMETRY_HTTPMSG_H
#define AMESH_TELEMETRY_HTTPMSG_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#include "telemetry/http.h"

/* What the arena received last, to know when one string ends and the next begins. */
enum http_msg_piece { HTTP_MSG_NONE, HTTP_MSG_URL, HTTP_MSG_FIELD, HTTP_MSG_VALUE };

struct http_msg {
	http_parser parser;
	size_t max_body;
	size_t head_bytes; /* bytes fed to the parser before the head ended */
	bool head_done, done;
	int err_status;    /* an HTTP status to answer (400, 413, 431), or -1: out of memory */
	enum http_msg_piece last;
	size_t arena_len, n_headers;
	struct { size_t name, value; } hdr[HTTP_MAX_HEADERS];
	char *body;        /* NUL-terminated; NULL when there was none */
	size_t body_len, body_cap;
	/* The request target and the headers, each NUL-terminated; the head bounds their size. */
	char arena[HTTP_MAX_HEAD + 2 * HTTP_MAX_HEADERS + 8];
};

/* Starts reading a request (request true) or a response, with a body of at most max_body bytes. */
void http_msg_init(struct http_msg *m, bool request, size_t max_body);
/* Frees the body. The message can be initialised again. */
void http_msg_free(struct http_msg *m);
/*
 * Feeds n bytes; returns how many were taken (fewer once the message is done or failed). Then
 * m->done or m->err_status says whether it is complete, refused, or needs more. eof: the peer
 * closed (ends a response without Content-Length; anything else incomplete is a 400).
 */
size_t http_msg_feed(struct http_msg *m, const char *data, size_t n);
void http_msg_eof(struct http_msg *m);

/*
 * A done request as req (its strings point into m and path, which must outlive req): hv has room
 * for HTTP_MAX_HEADERS, path for HTTP_MAX_HEAD + 1 bytes. req->peer and req->peer_id are left to
 * the caller. Returns 0, or 400 when the target is not an absolute path.
 */
int http_msg_request(struct http_msg *m, struct http_req *req, struct http_header *hv,
    char *path);
/* A done response's status code. */
unsigned http_msg_status(const struct http_msg *m);
/* A header of the done message by name, case-insensitively; NULL when absent. */
const char *http_msg_header(const struct http_msg *m, const char *name);

/*
 * The route of routes (ended by a NULL path) for method and path. NULL when none: then *status
 * is 404 (no such path) or 405 with the methods the path has in allow ("GET, POST").
 */
const struct http_route *http_route_find(const struct http_route *routes, const char *method,
    const char *path, int *status, char *allow, size_t allowlen);

/*
 * Formats a response head: status line (an unknown status is sent as 500), Content-Type (NULL:
 * text/plain), Content-Length, extra header lines (each ending in CRLF, or NULL), and
 * "Connection: close" when close. Returns the length, or 0 when it does not fit in len.
 */
size_t http_format_head(char *buf, size_t len, int status, const char *type, size_t body_len,
    const char *extra, bool close);
/* The body the host endpoints and the CA send with an error status ("not found\n"). */
const char *http_error_body(int status);

#endif
