/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: a request to the host endpoints (admin, metrics, readiness; src/telemetry/
 * http.c and httpmsg.c) from arbitrary bytes, as the server handles one: the bounded reader fed
 * in seeded pieces (as reads cut it) must end exactly as when fed whole; then, as dispatch() does,
 * the request is split into path and query and routed over the admin routes, GET|POST /logging
 * runs for real (its query decoded into buffers of several sizes) and the answer's head is
 * formatted. The first byte picks a request or, bit 0 set, a response (the CA client's reader).
 * The libuv plumbing around this (accept, timers, writes) carries no parsing and is not here.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "telemetry/http.h"
#include "telemetry/httpmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
h_plain(struct http_req *req, struct http_resp *resp, void *user)
{
	resp->body = strdup("ok\n");
}

/* admin.c's tables, with the role's handlers (config dump, quit, metrics, ready) stubbed. */
static const struct http_route routes[] = {
	{ "GET", "/config_dump", h_plain },
	{ "GET", "/logging", http_handle_logging },
	{ "POST", "/logging", http_handle_logging },
	{ "POST", "/quitquitquit", h_plain },
	{ "GET", "/healthz/ready", h_plain },
	{ "GET", "/metrics", h_plain },
	{ "GET", "/stats/prometheus", h_plain },
	{ NULL, NULL, NULL },
};

static uint32_t
rnd(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

static void
feed(struct http_msg *m, const uint8_t *data, size_t size, uint32_t seed)
{
	size_t off = 0;

	while (off < size && !m->done && m->err_status == 0) {
		size_t n = size - off, got;

		if (seed != 0 && n > 1) {
			size_t cut = 1 + rnd(&seed) % (rnd(&seed) % 2 ? 32 : n);

			n = cut < n ? cut : n;
		}
		got = http_msg_feed(m, (const char *)data + off, n);
		if (got > n || (got < n && !m->done && m->err_status == 0))
			abort();
		off += got;
	}
	if (!m->done && m->err_status == 0)
		http_msg_eof(m);
	if (!m->done && m->err_status == 0)
		abort(); /* after EOF it is one or the other */
}

static void
same(const struct http_msg *a, const struct http_msg *b)
{
	/* Both refused is the same outcome: which status depends on where reads cut a request
	 * that is both malformed and over a limit (a partial field name is counted before the
	 * bad byte after it is seen: 431, where whole it is 400). */
	if (a->done != b->done || (a->err_status != b->err_status &&
	    (a->err_status == 0 || b->err_status == 0))) {
		fprintf(stderr, "fuzz-admin: fed whole: done %d status %d (head %zu bytes); "
		    "in pieces: done %d status %d (head %zu bytes)\n", a->done, a->err_status,
		    a->head_bytes, b->done, b->err_status, b->head_bytes);
		abort();
	}
	if (!a->done)
		return;
	if (a->n_headers != b->n_headers || a->arena_len != b->arena_len ||
	    memcmp(a->arena, b->arena, a->arena_len) != 0 || a->body_len != b->body_len ||
	    (a->body_len > 0 && memcmp(a->body, b->body, a->body_len) != 0))
		abort();
}

static void
serve(struct http_msg *m, uint32_t seed)
{
	struct http_header hv[HTTP_MAX_HEADERS];
	char path[HTTP_MAX_HEAD + 1], allow[64], buf[64], head[512];
	struct http_req req;
	struct http_resp resp = { 200, NULL, NULL, 0 };
	const struct http_route *hit;
	int status;

	if (http_msg_request(m, &req, hv, path) != 0)
		return;
	if (req.path[0] != '/' || strchr(req.path, '?') != NULL || strlen(req.body) > req.body_len ||
	    req.n_headers > HTTP_MAX_HEADERS)
		abort();
	(void)http_req_header(&req, "host");
	for (size_t len = 0; len < 24; len += 1 + rnd(&seed) % 8) {
		const char *v = http_req_query(&req, "level", buf, len);

		if (v != NULL && v != buf && v[0] != '\0')
			abort();
		if (v == buf && strlen(buf) >= len)
			abort();
	}
	hit = http_route_find(routes, req.method, req.path, &status, allow, sizeof(allow));
	if (hit == NULL) {
		char extra[96];

		if (status != 404 && status != 405)
			abort();
		snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
		if (http_format_head(head, sizeof(head), status, NULL, strlen(http_error_body(status)),
		    status == 405 ? extra : NULL, true) == 0)
			abort();
		return;
	}
	hit->handler(&req, &resp, NULL);
	log_set_level(LOG_LVL_ERROR);
	if (resp.body != NULL && resp.body_len == 0)
		resp.body_len = strlen(resp.body);
	if (http_format_head(head, sizeof(head), resp.status, resp.content_type, resp.body_len, NULL,
	    true) == 0)
		abort();
	free(resp.body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_msg a, b;
	bool request;
	uint32_t seed;

	if (size < 5 || size > HTTP_MAX_HEAD + 2 * HTTP_MAX_BODY)
		return 0;
	log_set_level(LOG_LVL_ERROR);
	request = (data[0] & 1) == 0;
	seed = ((uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
	    (uint32_t)data[4] << 24) | 1u;
	data += 5;
	size -= 5;
	http_msg_init(&a, request, HTTP_MAX_BODY);
	http_msg_init(&b, request, HTTP_MAX_BODY);
	feed(&a, data, size, 0);
	feed(&b, data, size, seed);
	same(&a, &b);
	if (a.done && request)
		serve(&a, seed);
	if (a.done && !request)
		(void)http_msg_status(&a);
	if (a.done)
		(void)http_msg_header(&a, "content-type");
	http_msg_free(&a);
	http_msg_free(&b);
	return 0;
}
