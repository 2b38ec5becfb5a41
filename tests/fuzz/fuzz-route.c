/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: what a request's target and headers go through in the route layer
 * (src/l7/route.c), against a small registry with every kind of route. The input is lines: a
 * method, a request target, then "name: value" header fields; the first four bytes seed the random
 * choices. The target's path is normalized (route_normalize_path): a path it accepts starts with
 * '/', has no empty, "." or ".." segment, no %2F, %5C or lower-case escape, and normalizes to
 * itself again. The request is then routed (route_select and route_matches must agree), its
 * headers edited into lists of several sizes (all or nothing; afterwards every set field is there
 * once with its value, every removed one is gone), its path rewritten and its redirect Location
 * built into buffers of several sizes.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/registry.h"
#include "core/err.h"
#include "core/log.h"
#include "l7/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char reg_text[] =
    "[node \"n\"]\naddress = 192.168.0.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.2\nlabels = app=a, version=v1\n"
    "[workload \"a2\"]\nnamespace = default\nnode = n\naddresses = 10.1.1.3\nlabels = app=a, version=v2\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80\nselector = app=a\n"
    "[service \"v1\"]\nnamespace = default\nports = 80\nselector = version=v1\n"
    "[service \"v2\"]\nnamespace = default\nports = 80\nselector = version=v2\n"
    "[route \"exact\"]\nnamespace = default\nservice = svc\nmatch.path_exact = /login\nbackends = v1\n"
    "request_headers.set = x-a: one\nrequest_headers.add = x-b: two, X-A: extra\n"
    "request_headers.remove = x-c, cookie\nresponse_headers.set = server: amesh\n"
    "response_headers.remove = x-powered-by\n"
    "[route \"prefix\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /api/\n"
    "match.method = GET, POST\nbackends = v1 90, v2 10\nrewrite.path_prefix = /v2\n"
    "request_headers.set = x-route: prefix, host: rewritten\n"
    "[route \"regex\"]\nnamespace = default\nservice = svc\nmatch.path_regex = ^/r/[0-9]+(/|$)\n"
    "match.headers = x-canary: true\nmatch.query = tag=a, v=1\nbackends = v2\n"
    "[route \"redirect\"]\nnamespace = default\nservice = svc\nmatch.path_prefix = /old\n"
    "redirect.path = /new\nredirect.scheme = https\nredirect.status = 301\n"
    "[route \"redirect-host\"]\nnamespace = default\nservice = svc\nmatch.path_exact = /moved\n"
    "redirect.host = example.com\nredirect.port = 8443\n"
    "[route \"all\"]\nnamespace = default\nservice = svc\nbackends = v1\nrequest_headers.remove = x-debug\n";

static struct registry *reg;
static const struct reg_service *svc;

#define MAX_FIELDS 40

struct req {
	char *method, *target;
	struct hdr f[MAX_FIELDS];
	size_t n;
};

static const char *
lookup(void *arg, const char *name)
{
	const struct req *q = arg;

	for (size_t i = 0; i < q->n; i++)
		if (strcasecmp(q->f[i].name, name) == 0)
			return q->f[i].value;
	return NULL;
}

/* Splits the input (modified) into method, target and fields; false when it has too few lines. */
static bool
split(char *s, struct req *q)
{
	char *save = NULL, *line;

	q->method = strtok_r(s, "\n", &save);
	q->target = q->method ? strtok_r(NULL, "\n", &save) : NULL;
	if (q->target == NULL)
		return false;
	q->n = 0;
	while (q->n < MAX_FIELDS && (line = strtok_r(NULL, "\n", &save)) != NULL) {
		char *colon = strchr(line, ':');

		if (colon == NULL)
			continue;
		*colon = '\0';
		q->f[q->n].name = line;
		q->f[q->n].value = colon + 1 + strspn(colon + 1, " ");
		q->n++;
	}
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* What a normalized path must look like. */
static void
check_normal(const char *p)
{
	if (strcmp(p, "*") == 0)
		return;
	if (p[0] != '/' || strstr(p, "//") != NULL || strchr(p, '\\') != NULL)
		abort();
	for (const char *s = p; *s != '\0'; s++) {
		if (*s == '%') {
			int v;

			if (hexval(s[1]) < 0 || hexval(s[2]) < 0)
				abort(); /* malformed or lower-case escape */
			v = hexval(s[1]) * 16 + hexval(s[2]);
			if (v == '/' || v == '\\' || v == 0 || (v >= 'a' && v <= 'z') ||
			    (v >= 'A' && v <= 'Z') || (v >= '0' && v <= '9') || strchr("-._~", v) != NULL)
				abort(); /* an escape that should have been decoded, or refused */
		}
		if (*s == '/' && s[1] == '.' && (s[2] == '/' || s[2] == '\0' ||
		    (s[2] == '.' && (s[3] == '/' || s[3] == '\0'))))
			abort(); /* a dot segment left */
	}
}

static void
check_edits(const struct reg_route *rt, const struct req *q, uint32_t seed)
{
	struct hdr store[MAX_FIELDS + 8];
	struct hdr_list l;
	size_t cap = seed % (MAX_FIELDS + 8) + 1;

	hdr_list_init(&l, store, cap);
	for (size_t i = 0; i < q->n && i < cap; i++)
		if (hdr_list_add(&l, q->f[i].name, q->f[i].value) != 0)
			abort();
	{
		struct hdr before[MAX_FIELDS + 8];
		size_t nb = l.n;
		int r;

		memcpy(before, store, sizeof(store[0]) * l.n);
		r = route_edit_request_headers(rt, &l);
		if (r == -ENOSPC) {
			if (l.n != nb || memcmp(before, store, sizeof(store[0]) * nb) != 0)
				abort(); /* all or nothing */
		} else if (r != 0) {
			abort();
		} else {
			for (size_t i = 0; i < rt->request_remove.n; i++) {
				bool added = false;

				for (size_t j = 0; j < rt->request_add.n; j++)
					added |= strcasecmp(rt->request_add.v[j].key, rt->request_remove.v[i]) == 0;
				for (size_t j = 0; j < rt->request_set.n; j++)
					added |= strcasecmp(rt->request_set.v[j].key, rt->request_remove.v[i]) == 0;
				if (!added && hdr_list_get(&l, rt->request_remove.v[i]) != NULL)
					abort();
			}
			for (size_t j = 0; j < rt->request_set.n; j++) {
				const char *v = hdr_list_get(&l, rt->request_set.v[j].key);

				if (v == NULL || strcmp(v, rt->request_set.v[j].value) != 0) {
					fprintf(stderr, "fuzz-route: route %s set %s: %s, got %s\n",
					    rt->h.name, rt->request_set.v[j].key,
					    rt->request_set.v[j].value, v ? v : "(none)");
					for (size_t k = 0; k < l.n; k++)
						fprintf(stderr, "  %s: %s\n", l.v[k].name, l.v[k].value);
					abort();
				}
			}
			if (l.n > l.cap)
				abort();
		}
	}
	hdr_list_init(&l, store, cap);
	for (size_t i = 0; i < q->n && i < cap; i++)
		(void)hdr_list_add(&l, q->f[i].name, q->f[i].value);
	(void)route_edit_response_headers(rt, &l);
	if (l.n > l.cap)
		abort();
	(void)hdr_list_remove(&l, "x-b");
	(void)hdr_list_set(&l, "X-New", "v");
	(void)hdr_list_lookup(&l, "x-new");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char norm[8192], again[8192], out[8192];
	struct route_req rq;
	struct req q;
	const struct reg_route *sel;
	const char *why = NULL, *qm;
	char *text;
	size_t plen;
	uint32_t seed;
	int r;

	if (reg == NULL) {
		struct diag d;

		log_set_level(LOG_LVL_ERROR);
		diag_init(&d);
		if (registry_parse_buffer("fuzz.conf", reg_text, strlen(reg_text), &reg, &d) != 0) {
			diag_print(&d, stderr);
			abort();
		}
		diag_clear(&d);
		svc = registry_find(reg, REG_SERVICE, "svc");
		if (svc == NULL)
			abort();
	}
	if (size < 4 || size > 16384)
		return 0;
	seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
	    (uint32_t)data[3] << 24;
	text = malloc(size - 4 + 1);
	if (text == NULL)
		abort();
	memcpy(text, data + 4, size - 4);
	text[size - 4] = '\0';
	if (!split(text, &q))
		goto out;

	qm = strchr(q.target, '?');
	plen = qm != NULL ? (size_t)(qm - q.target) : strlen(q.target);
	/* The output buffer's size varies, so the TOOLONG edge is reached. */
	r = route_normalize_path(q.target, plen, norm, 1 + seed % sizeof(norm), &why);
	if (r != 0) {
		if ((r != AMESH_ERR_INVALID && r != AMESH_ERR_TOOLONG && r != AMESH_ERR_NOMEM) ||
		    why == NULL || why[0] == '\0')
			abort();
		goto out;
	}
	if (strlen(norm) >= 1 + seed % sizeof(norm))
		abort();
	check_normal(norm);
	if (route_normalize_path(norm, strlen(norm), again, sizeof(again), &why) != 0 ||
	    strcmp(norm, again) != 0)
		abort(); /* normalizing is idempotent */

	rq = (struct route_req){ .method = q.method, .path = norm, .query = qm ? qm + 1 : NULL,
		.header = lookup, .header_arg = &q };
	sel = route_select(reg, svc, &rq);
	if (sel != NULL && !route_matches(sel, &rq))
		abort();
	for (size_t i = 0; i < reg->n[REG_ROUTE]; i++) {
		const struct reg_route *rt = REG_ROUTES(reg)[i];
		int status = 0;

		if (route_matches(rt, &rq) && sel == NULL)
			abort(); /* a matching route of the service, and none selected */
		check_edits(rt, &q, seed >> (i % 8));
		r = route_rewrite_path(rt, norm, out, 1 + (seed >> 8) % sizeof(out));
		if (r == 0 && ((out[0] != '/' && strcmp(norm, "*") != 0) ||
		    strlen(out) >= 1 + (seed >> 8) % sizeof(out)))
			abort();
		if (r != 0 && r != -ENOSPC)
			abort();
		r = route_redirect_location(rt, seed & 1 ? "https" : "http", lookup(&q, "host"),
		    (uint16_t)(seed >> 16), norm, rq.query, out, 1 + (seed >> 4) % 512, &status);
		if (r == 0 && (!rt->redirect || status < 301 || status > 308 ||
		    strlen(out) >= 1 + (seed >> 4) % 512))
			abort();
		if (r != 0 && r != -EINVAL && r != -ENOSPC)
			abort();
		(void)route_pick_backend(rt, seed);
	}
out:
	free(text);
	return 0;
}
