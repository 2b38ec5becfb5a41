/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the L7 HTTP/1.1 codec (src/l7/http1.c) from arbitrary bytes. The first byte
 * picks requests or responses (and for responses the request method they answer), the next four
 * seed the feeding: the rest is fed once in one piece and once split at seeded points, with the
 * parser paused from its callbacks and resumed by the caller as the proxy does (proto-h1.c). Both
 * runs must see the same messages, body bytes, trailers, error and stopping point. A head kept
 * while paused is read again after h1_feed returned (ASan sees a stale one), and every head is
 * written back with h1_write_head, which must parse again as the same start line.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "l7/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a run saw, in a form that does not depend on how the input was split. */
struct run {
	uint8_t *trace;
	size_t len, cap;
	bool in_body;
	uint32_t rng;        /* 0: one piece, no pauses */
	struct h1_parser *p;
	const struct h1_head *kept; /* a head the caller holds while paused */
	bool upgraded;       /* the last message switched protocols: the parser stays paused */
	bool we_paused;
	enum h1_kind kind;
};

static uint32_t
rnd(struct run *r)
{
	uint32_t x = r->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	r->rng = x;
	return x;
}

static void
put(struct run *r, const void *d, size_t n)
{
	if (r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 1024;

		while (cap < r->len + n)
			cap *= 2;
		r->trace = realloc(r->trace, cap);
		if (r->trace == NULL)
			abort();
		r->cap = cap;
	}
	memcpy(r->trace + r->len, d, n);
	r->len += n;
}

static void
put_str(struct run *r, const char *s, size_t n)
{
	if (s == NULL) {
		put(r, "\xff", 1);
		return;
	}
	if (strlen(s) != n)
		abort();
	put(r, &n, sizeof(n));
	put(r, s, n);
}

/* Reads every byte of a head, so a head that is no longer valid shows under ASan. */
static size_t
touch_head(const struct h1_head *h)
{
	size_t sum = h->n_headers + h->target_len + (size_t)h->status;

	for (size_t i = 0; i < h->n_headers; i++)
		sum += strlen(h->headers[i].name) + strlen(h->headers[i].value);
	if (h->target != NULL)
		sum += strlen(h->target);
	if (h->reason != NULL)
		sum += strlen(h->reason);
	if (h->host != NULL)
		sum += strlen(h->host);
	return sum;
}

static void
maybe_pause(struct run *r)
{
	if (r->rng != 0 && rnd(r) % 4 == 0) {
		h1_pause(r->p, true);
		r->we_paused = true;
	}
}

struct want {
	struct h1_head h;
	bool seen;
};

static int
reparse_head(void *arg, const struct h1_head *h)
{
	struct want *w = arg;
	const struct h1_head *want = &w->h;

	if (h->request != want->request || h->status != want->status ||
	    (h->request && (strcmp(h->method, want->method) != 0 ||
	    strcmp(h->target, want->target) != 0)))
		abort();
	for (size_t i = 0; i < h->n_headers; i++)
		if (strcmp(h->headers[i].name, "x-fuzz-set") == 0 && strcmp(h->headers[i].value, "1") != 0)
			abort();
	w->seen = true;
	return 0;
}

static int
collect(void *arg, const void *d, size_t n)
{
	struct run *out = arg;

	put(out, d, n);
	return 0;
}

/* Writes h for forwarding, with edits, and parses the result: the same start line again. */
static void
write_back(const struct h1_head *h, const char *expect)
{
	static const struct h1_field set[] = { { "x-fuzz-set", "1" } };
	static const struct h1_field add[] = { { "x-fuzz-add", "a b" } };
	static const char *const remove[] = { "cookie" };
	const struct h1_edits e = { .set = set, .n_set = 1, .add = add, .n_add = 1,
		.remove = remove, .n_remove = 1 };
	struct run out = { 0 };
	struct h1_writer w = { collect, &out };
	struct want want = { *h, false };
	const struct h1_callbacks cb = { .on_head = reparse_head };
	struct h1_parser *p;
	size_t used;
	int rc;

	want.h.framing = h1_forward_framing(h, true);
	rc = h1_write_head(&w, &want.h, &e);
	if (rc != 0) {
		if (rc != AMESH_ERR_INVALID || out.len != 0)
			abort();
		return;
	}
	if (h->request && h->host == NULL)
		goto out; /* an HTTP/1.0 request without Host, now sent as 1.1: the proxy adds one */
	if (h1_parser_new(h->request ? H1_REQUEST : H1_RESPONSE, &cb, &want, &p) != 0)
		abort();
	h1_expect_response_to(p, expect);
	/* Our fields on top of 100 received ones, or of 64 KiB, exceed the limits: the receiver
	 * may refuse that head as too large, and nothing else. */
	rc = h1_feed(p, out.trace, out.len, &used);
	if (rc == AMESH_ERR_TOOLONG && h->n_headers + 3 <= H1_MAX_HEADERS && out.len <= H1_MAX_HEAD)
		abort();
	if ((rc != 0 && rc != AMESH_ERR_TOOLONG) || (rc == 0 && !want.seen))
		abort();
	h1_parser_free(p);
out:
	free(out.trace);
}

static int
on_head(void *arg, const struct h1_head *h)
{
	struct run *r = arg;
	char c = 'H';

	r->in_body = false;
	put(r, &c, 1);
	put(r, &h->request, sizeof(h->request));
	put_str(r, h->method, h->method ? strlen(h->method) : 0);
	put_str(r, h->target, h->target_len);
	if (h->target != NULL && h->path_len > h->target_len)
		abort();
	put(r, &h->status, sizeof(h->status));
	put_str(r, h->reason, h->reason ? strlen(h->reason) : 0);
	put(r, &h->version_major, sizeof(h->version_major));
	put(r, &h->version_minor, sizeof(h->version_minor));
	put(r, &h->n_headers, sizeof(h->n_headers));
	if (h->n_headers > H1_MAX_HEADERS)
		abort();
	for (size_t i = 0; i < h->n_headers; i++) {
		put_str(r, h->headers[i].name, h->headers[i].name_len);
		put_str(r, h->headers[i].value, h->headers[i].value_len);
	}
	put_str(r, h->host, h->host ? strlen(h->host) : 0);
	put(r, &h->framing, sizeof(h->framing));
	put(r, &h->content_length, sizeof(h->content_length));
	put(r, &h->keep_alive, sizeof(h->keep_alive));
	put(r, &h->upgrade, sizeof(h->upgrade));
	if (h->request == (r->kind == H1_RESPONSE))
		abort();
	if (r->rng == 0)
		write_back(h, NULL);
	r->kept = h;
	maybe_pause(r);
	return 0;
}

static int
on_body(void *arg, const uint8_t *d, size_t n)
{
	struct run *r = arg;

	if (n == 0)
		abort();
	if (!r->in_body) {
		put(r, "B", 1);
		r->in_body = true;
	}
	put(r, d, n);
	maybe_pause(r);
	return 0;
}

static int
on_trailers(void *arg, const struct h1_header *t, size_t n)
{
	struct run *r = arg;

	r->in_body = false;
	put(r, "T", 1);
	put(r, &n, sizeof(n));
	if (n == 0 || n > H1_MAX_HEADERS)
		abort();
	for (size_t i = 0; i < n; i++) {
		put_str(r, t[i].name, t[i].name_len);
		put_str(r, t[i].value, t[i].value_len);
	}
	return 0;
}

static int
on_end(void *arg)
{
	struct run *r = arg;

	r->in_body = false;
	put(r, "E", 1);
	if (r->kept != NULL && r->kept->upgrade)
		r->upgraded = true;
	maybe_pause(r);
	return 0;
}

static const struct h1_callbacks cbs = { on_head, on_body, on_trailers, on_end };

/* Feeds data as the proxy does; returns how much was taken before an upgrade stopped it, or
 * SIZE_MAX after an error. */
static size_t
run(struct run *r, enum h1_kind kind, const char *expect, const uint8_t *data, size_t size)
{
	size_t off = 0, used;
	int rc = 0, fin;

	r->kind = kind;
	if (h1_parser_new(kind, &cbs, r, &r->p) != 0)
		abort();
	h1_expect_response_to(r->p, expect);
	while (off < size && rc == 0) {
		size_t n = size - off;

		if (r->rng != 0 && n > 1) {
			size_t cut = 1 + rnd(r) % (rnd(r) % 2 ? 16 : n);

			n = cut < n ? cut : n;
		}
		rc = h1_feed(r->p, data + off, n, &used);
		if (used > n)
			abort();
		off += used;
		if (rc != 0)
			break;
		if (h1_paused(r->p)) {
			if (r->kept != NULL)
				(void)touch_head(r->kept);
			if (r->upgraded)
				break; /* the bytes after it belong to another protocol */
			r->we_paused = false;
			h1_pause(r->p, false);
		} else if (used < n) {
			abort(); /* not paused and no error: it takes everything */
		}
		if (h1_in_message(r->p) == false)
			r->kept = NULL;
	}
	put(r, "R", 1);
	put(r, &rc, sizeof(rc));
	if (rc != 0) {
		const char *nm = h1_error_name(r->p);
		int st = h1_error_status(r->p);

		put_str(r, nm, strlen(nm));
		if (st == 0 || nm[0] == '\0' || h1_error_text(r->p)[0] == '\0')
			abort();
		if (h1_feed(r->p, (const uint8_t *)"x", 1, &used) != rc)
			abort(); /* a dead parser stays dead */
	} else if (!r->upgraded) {
		h1_pause(r->p, false);
		fin = h1_finish(r->p);
		put(r, &fin, sizeof(fin));
	}
	h1_parser_free(r->p);
	/* After an error the parser is dead and how far it got depends on where pieces ended
	 * (a header name cut in two fails at its second piece): not compared. */
	return rc != 0 ? SIZE_MAX : off;
}

/* Says where two runs parted, for whoever reads a crash report. */
static void
differ(const struct run *a, const struct run *b)
{
	size_t i = 0;

	while (i < a->len && i < b->len && a->trace[i] == b->trace[i])
		i++;
	fprintf(stderr, "fuzz-h1: whole and split feeding differ at trace byte %zu of %zu/%zu\n",
	    i, a->len, b->len);
	for (const struct run *r = a; r != NULL; r = r == a ? b : NULL) {
		fprintf(stderr, "  %s: ", r == a ? "whole" : "split");
		for (size_t j = i > 16 ? i - 16 : 0; j < r->len && j < i + 32; j++)
			fprintf(stderr, r->trace[j] >= 0x20 && r->trace[j] < 0x7f ? "%c" : "\\x%02x",
			    r->trace[j]);
		fprintf(stderr, "\n");
	}
	abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const expect[] = { NULL, "HEAD", "CONNECT", "GET" };
	struct run a = { 0 }, b = { 0 };
	enum h1_kind kind;
	const char *ex;
	size_t oa, ob;

	if (size < 5 || size > 200000)
		return 0;
	kind = data[0] & 1 ? H1_RESPONSE : H1_REQUEST;
	ex = expect[(data[0] >> 1) & 3];
	b.rng = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
	    (uint32_t)data[4] << 24 | 1u;
	data += 5;
	size -= 5;
	oa = run(&a, kind, ex, data, size);
	ob = run(&b, kind, ex, data, size);
	if (oa != ob || a.len != b.len || memcmp(a.trace, b.trace, a.len) != 0)
		differ(&a, &b);
	free(a.trace);
	free(b.trace);
	return 0;
}
