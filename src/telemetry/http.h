/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small, bounded HTTP/1.1 server on libuv for the host endpoints of DESIGN.md section 2: admin
 * (127.0.0.1:15000), Prometheus metrics (:15020) and readiness (:15021). Requests are parsed by
 * Debian's libhttp-parser.
 *
 * One request per connection: every response carries "Connection: close" and the connection is
 * shut down after it. GET and POST only. Limits, each answered as a client would expect:
 *   - request head (request line and headers) at most HTTP_MAX_HEAD bytes and HTTP_MAX_HEADERS
 *     headers: 431;
 *   - POST body at most HTTP_MAX_BODY bytes: 413;
 *   - a malformed request, or a target that is not an absolute path: 400;
 *   - no route for the path: 404; a route for the path but not for the method: 405 with Allow;
 *   - the whole request must arrive within the read timeout (HTTP_READ_TIMEOUT_MS): else the
 *     connection is closed without an answer;
 *   - at most HTTP_MAX_CONNS connections at a time: a further one is accepted and closed at once.
 * After the response the server reads and discards what the client still sends for a short while
 * (so the client reads the answer instead of a reset), then closes.
 *
 * Threads: everything runs on the loop's thread; handlers are called there and must not block.
 */
#ifndef AMESH_TELEMETRY_HTTP_H
#define AMESH_TELEMETRY_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_BODY 65536
#define HTTP_READ_TIMEOUT_MS 10000
#define HTTP_MAX_CONNS 64

struct http_header {
	const char *name, *value;
};

/* A request, valid during the handler call only. */
struct http_req {
	const char *method; /* "GET" or "POST" */
	const char *target; /* as sent: "/logging?level=debug" */
	const char *path;   /* the target up to '?': "/logging" (not percent-decoded) */
	const char *query;  /* after '?', "" when none: "level=debug" */
	const char *body;   /* POST body (NUL-terminated), "" when none */
	size_t body_len;
	const struct http_header *headers; /* in the order sent */
	size_t n_headers;
	const struct sockaddr_storage *peer;
	const char *peer_id; /* the client's verified SPIFFE ID over TLS (the CA service), else NULL */
};

/* What a handler answers. The server sets status 200, the default content type and no body. */
struct http_resp {
	int status;
	const char *content_type; /* not copied: a string literal; default "text/plain; charset=utf-8" */
	char *body;               /* heap memory; the server frees it after sending. NULL: empty body */
	size_t body_len;          /* 0: strlen(body) */
};

typedef void (*http_handler_fn)(struct http_req *req, struct http_resp *resp, void *user);

struct http_route {
	const char *method; /* "GET" or "POST" */
	const char *path;   /* exact match on the path (without query) */
	http_handler_fn handler;
};

struct http_server;

/*
 * Listens on addr (AF_INET or AF_INET6; port 0 picks one, see http_server_addr) and serves routes,
 * an array ended by an entry whose path is NULL; routes and user must outlive the server. Returns
 * 0, or a negative libuv/errno code (bind and listen failures, -ENOMEM); *out is NULL on failure.
 */
int http_server_listen(uv_loop_t *loop, const struct sockaddr *addr, const struct http_route *routes,
    void *user, struct http_server **out);
/* The address actually bound. Returns 0 or a negative libuv code. */
int http_server_addr(const struct http_server *s, struct sockaddr_storage *out);
/* Overrides HTTP_READ_TIMEOUT_MS and HTTP_MAX_CONNS for connections accepted from now on (tests). */
void http_server_set_limits(struct http_server *s, uint64_t read_timeout_ms, unsigned max_conns);
/* Connections open now, and connections refused since start because HTTP_MAX_CONNS were open. */
unsigned http_server_conns(const struct http_server *s);
uint64_t http_server_refused(const struct http_server *s);
/*
 * Stops listening and closes every connection (a request being answered is dropped). done(arg),
 * if not NULL, is called once every handle is closed and the server freed; keep the loop running
 * until then. Accepts NULL (then done is not called). A handler that wants its own response sent
 * before the server closes must close it later (from a timer), not from inside the handler.
 */
void http_server_close(struct http_server *s, void (*done)(void *arg), void *arg);

/* A header of req by name, case-insensitively; NULL when absent. */
const char *http_req_header(const struct http_req *req, const char *name);
/*
 * The value of key in req's query ("a=1&b=x%20y"), percent-decoded ('+' is a space) into buf.
 * Returns buf, "" for a key without '=', or NULL when absent or longer than len - 1.
 */
const char *http_req_query(const struct http_req *req, const char *key, char *buf, size_t len);


/*
 * GET|POST /logging[?level=error|warn|info|debug], shared by every role's admin listener: sets
 * the process log level when asked, answers "level: LEVEL" (400 for an unknown level).
 */
void http_handle_logging(struct http_req *req, struct http_resp *resp, void *user);

#endif
