/* SPDX-License-Identifier: Apache-2.0 */
/* L7 routes: selection by Gateway API precedence, backends, header edits, rewrites, resilience. */
#include "config.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/parse.h"
#include "l7/route.h"

/* ---- Random values ---------------------------------------------------------------------- */

/* Maps random uniformly onto [0, n) by its high bits: floor(random * n / 2^32), for any n. */
static uint64_t
scale(uint32_t random, uint64_t n)
{
	/* n = hi * 2^32 + lo, so random * n / 2^32 = random * hi + random * lo / 2^32, no overflow. */
	return (uint64_t)random * (n >> 32) + (((uint64_t)random * (n & 0xffffffffu)) >> 32);
}

bool
route_percent_hit(uint64_t percent, uint32_t random)
{
	if (percent >= 100)
		return true;
	return scale(random, 100) < percent;
}

/* ---- Matching --------------------------------------------------------------------------- */

/*
 * Length of prefix without its trailing '/'s when path matches it element-wise (Gateway API
 * PathPrefix), else -1. The prefix "/" is length 0 and matches every path.
 */
static long
prefix_match_len(const char *prefix, const char *path)
{
	size_t pl = strlen(prefix);

	while (pl > 0 && prefix[pl - 1] == '/')
		pl--;
	if (strncmp(path, prefix, pl) != 0)
		return -1;
	if (path[pl] != '\0' && path[pl] != '/')
		return -1;
	return (long)pl;
}

/* True if enc[0..len), %XX-decoded, equals plain. A malformed escape stands for itself. */
static bool
pct_equal(const char *enc, size_t len, const char *plain)
{
	size_t i = 0;

	while (i < len) {
		char c = enc[i];
		int hi, lo;

		if (c == '%' && i + 2 < len && (hi = parse_hexdigit(enc[i + 1])) >= 0 &&
		    (lo = parse_hexdigit(enc[i + 2])) >= 0) {
			c = (char)(hi << 4 | lo);
			i += 3;
		} else {
			i++;
		}
		if (*plain == '\0' || *plain != c)
			return false;
		plain++;
	}
	return *plain == '\0';
}

/* Value of the first parameter key in query (still encoded), with its length; false if absent. */
static bool
query_find(const char *query, const char *key, const char **val, size_t *vlen)
{
	const char *p = query;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		size_t klen = eq ? (size_t)(eq - p) : len;

		if (len > 0 && pct_equal(p, klen, key)) {
			*val = eq ? eq + 1 : p + len;
			*vlen = eq ? len - klen - 1 : 0;
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

bool
route_matches(const struct reg_route *rt, const struct route_req *q)
{
	const char *path = q->path != NULL ? q->path : "/";

	if (rt->path_exact != NULL && strcmp(rt->path_exact, path) != 0)
		return false;
	if (rt->path_prefix != NULL && prefix_match_len(rt->path_prefix, path) < 0)
		return false;
	if (rt->path_regex != NULL &&
	    (!rt->has_path_re || regexec(&rt->path_re, path, 0, NULL, 0) != 0))
		return false;
	if (rt->match_methods.n > 0) {
		size_t i;

		if (q->method == NULL)
			return false;
		for (i = 0; i < rt->match_methods.n; i++)
			if (strcmp(rt->match_methods.v[i], q->method) == 0)
				break;
		if (i == rt->match_methods.n)
			return false;
	}
	for (size_t i = 0; i < rt->match_headers.n; i++) {
		const char *v = q->header ? q->header(q->header_arg, rt->match_headers.v[i].key) : NULL;

		if (v == NULL || strcmp(v, rt->match_headers.v[i].value) != 0)
			return false;
	}
	for (size_t i = 0; i < rt->match_query.n; i++) {
		const char *v;
		size_t vlen;

		if (q->query == NULL || !query_find(q->query, rt->match_query.v[i].key, &v, &vlen) ||
		    !pct_equal(v, vlen, rt->match_query.v[i].value))
			return false;
	}
	return true;
}

/* ---- Precedence ------------------------------------------------------------------------- */

enum path_kind { PK_PREFIX, PK_REGEX, PK_EXACT };

struct rank {
	int kind;       /* enum path_kind */
	size_t plen;    /* characters of match.path_prefix */
	bool method;
	size_t headers, query;
};

static struct rank
rank_of(const struct reg_route *rt)
{
	/* No path condition is Gateway API's default, PathPrefix "/". */
	struct rank k = { PK_PREFIX, 1, rt->match_methods.n > 0, rt->match_headers.n,
		rt->match_query.n };

	if (rt->path_exact != NULL) {
		k.kind = PK_EXACT;
	} else if (rt->path_regex != NULL) {
		k.kind = PK_REGEX;
	} else if (rt->path_prefix != NULL) {
		k.kind = PK_PREFIX;
		k.plen = strlen(rt->path_prefix);
	}
	return k;
}

/* True if a takes precedence over b (strictly; ties keep registry order). */
static bool
rank_better(const struct rank *a, const struct rank *b)
{
	if (a->kind != b->kind)
		return a->kind > b->kind;
	if (a->plen != b->plen)
		return a->plen > b->plen;
	if (a->method != b->method)
		return a->method;
	if (a->headers != b->headers)
		return a->headers > b->headers;
	return a->query > b->query;
}

static bool
unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '.' || c == '_' || c == '~';
}

int
route_normalize_path(const char *in, size_t n, char *out, size_t outlen, const char **why)
{
	char *tmp;
	size_t o = 0, i = 0;
	int rc = AMESH_ERR_INVALID;

	*why = "the path is too long";
	if (outlen == 0)
		return AMESH_ERR_TOOLONG;
	/* Absolute form: scheme "://" authority, then the path. */
	for (size_t k = 0; k + 2 < n; k++) {
		if (in[k] == ':' && in[k + 1] == '/' && in[k + 2] == '/') {
			const char *p = memchr(in + k + 3, '/', n - k - 3);

			i = p != NULL ? (size_t)(p - in) : n;
			break;
		}
		if (!((in[k] >= 'a' && in[k] <= 'z') || (in[k] >= 'A' && in[k] <= 'Z') ||
		    (k > 0 && ((in[k] >= '0' && in[k] <= '9') || in[k] == '+' || in[k] == '-' ||
		    in[k] == '.'))))
			break;
	}
	if (i == n && i > 0) {
		/* "http://host" alone: the root. */
		if (outlen < 2)
			goto toolong;
		memcpy(out, "/", 2);
		return 0;
	}
	if (n == 1 && in[0] == '*') {
		/* OPTIONS *: nothing to normalize. */
		if (outlen < 2)
			goto toolong;
		memcpy(out, "*", 2);
		return 0;
	}
	if (i == n || in[i] != '/') {
		*why = "a request target that is not a path";
		return AMESH_ERR_INVALID;
	}
	/* Pass 1: escapes, into tmp. */
	if ((tmp = malloc(n - i + 1)) == NULL) {
		*why = "out of memory";
		return AMESH_ERR_NOMEM;
	}
	for (; i < n; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '\0' || c == '\\') {
			*why = c ? "a backslash in the path" : "a NUL in the path";
			goto out;
		}
		if (c == '%') {
			int hi = i + 2 < n ? parse_hexdigit(in[i + 1]) : -1;
			int lo = i + 2 < n ? parse_hexdigit(in[i + 2]) : -1;
			unsigned char d;

			if (hi < 0 || lo < 0) {
				*why = "a malformed %-escape in the path";
				goto out;
			}
			d = (unsigned char)(hi << 4 | lo);
			if (d == '/' || d == '\\') {
				*why = "an escaped '/' or '\\' in the path";
				goto out;
			}
			if (d == '\0') {
				/* An application in C would end the path there: "/admin%00/x". */
				*why = "an escaped NUL in the path";
				goto out;
			}
			i += 2;
			if (unreserved(d)) {
				tmp[o++] = (char)d;
			} else {
				static const char hx[] = "0123456789ABCDEF";

				/* Kept escaped (upper case), so it is never read as a separator; three
				 * bytes for the three read, so tmp holds it. */
				tmp[o++] = '%';
				tmp[o++] = hx[d >> 4];
				tmp[o++] = hx[d & 15];
			}
			continue;
		}
		tmp[o++] = (char)c;
	}
	/* Pass 2: segments, from tmp into out; ".." never climbs above the root. */
	{
		size_t len = o, w = 0, p = 0;
		bool trail = len > 0 && tmp[len - 1] == '/';

		while (p < len) {
			size_t st, e;

			while (p < len && tmp[p] == '/')
				p++; /* merged slashes */
			if (p == len)
				break;
			st = p;
			while (p < len && tmp[p] != '/')
				p++;
			e = p;
			if (e - st == 1 && tmp[st] == '.') {
				trail = true; /* "/a/." is the directory "/a/" */
				continue;
			}
			if (e - st == 2 && tmp[st] == '.' && tmp[st + 1] == '.') {
				while (w > 0 && out[w - 1] != '/')
					w--;
				if (w > 0)
					w--; /* "/seg" removed */
				trail = true;
				continue;
			}
			if (w + 1 + (e - st) >= outlen)
				goto toolong_free;
			out[w++] = '/';
			memcpy(out + w, tmp + st, e - st);
			w += e - st;
			trail = p < len; /* a slash follows */
		}
		if (w == 0 || trail) {
			if (w + 1 >= outlen)
				goto toolong_free;
			out[w++] = '/';
		}
		out[w] = '\0';
	}
	rc = 0;
	goto out;
toolong_free:
	free(tmp);
toolong:
	*why = "the path is too long";
	return AMESH_ERR_TOOLONG;
out:
	free(tmp);
	return rc;
}

const struct reg_route *
route_select(const struct registry *r, const struct reg_service *svc, const struct route_req *q)
{
	const struct reg_route *best = NULL;
	struct rank best_rank = { 0 };

	if (r == NULL || svc == NULL)
		return NULL;
	for (size_t i = 0; i < r->n[REG_ROUTE]; i++) {
		const struct reg_route *rt = REG_ROUTES(r)[i];
		struct rank k;

		if (rt->service_p != svc)
			continue;
		k = rank_of(rt);
		if (best != NULL && !rank_better(&k, &best_rank))
			continue;
		if (!route_matches(rt, q))
			continue;
		best = rt;
		best_rank = k;
	}
	return best;
}

/* ---- Backends --------------------------------------------------------------------------- */

const struct reg_backend *
route_pick_backend(const struct reg_route *rt, uint32_t random)
{
	uint64_t total = 0, at;

	for (size_t i = 0; i < rt->backends.n; i++)
		total += rt->backends_p[i].weight;
	if (total == 0)
		return NULL;
	at = scale(random, total);
	for (size_t i = 0; i < rt->backends.n; i++) {
		if (at < rt->backends_p[i].weight)
			return &rt->backends_p[i];
		at -= rt->backends_p[i].weight;
	}
	return NULL; /* not reached: at < total */
}

/* ---- Header lists ----------------------------------------------------------------------- */

void
hdr_list_init(struct hdr_list *l, struct hdr *storage, size_t cap)
{
	l->v = storage;
	l->n = 0;
	l->cap = cap;
}

int
hdr_list_add(struct hdr_list *l, const char *name, const char *value)
{
	if (l->n >= l->cap)
		return -ENOSPC;
	l->v[l->n].name = name;
	l->v[l->n].value = value;
	l->n++;
	return 0;
}

size_t
hdr_list_remove(struct hdr_list *l, const char *name)
{
	size_t j = 0, n = l->n;

	for (size_t i = 0; i < n; i++)
		if (strcasecmp(l->v[i].name, name) != 0)
			l->v[j++] = l->v[i];
	l->n = j;
	return n - j;
}

int
hdr_list_set(struct hdr_list *l, const char *name, const char *value)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcasecmp(l->v[i].name, name) == 0) {
			struct hdr_list rest = { l->v + i + 1, l->n - i - 1, l->cap - i - 1 };

			l->v[i].name = name;
			l->v[i].value = value;
			l->n -= hdr_list_remove(&rest, name);
			return 0;
		}
	}
	return hdr_list_add(l, name, value);
}

const char *
hdr_list_get(const struct hdr_list *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcasecmp(l->v[i].name, name) == 0)
			return l->v[i].value;
	return NULL;
}

const char *
hdr_list_lookup(void *arg, const char *name)
{
	return hdr_list_get(arg, name);
}

static bool
in_strs(const struct str_list *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcasecmp(s->v[i], name) == 0)
			return true;
	return false;
}

static bool
in_labels(const struct label_list *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcasecmp(s->v[i].key, name) == 0)
			return true;
	return false;
}

static int
edit_headers(struct hdr_list *l, const struct str_list *remove, const struct label_list *set,
    const struct label_list *add)
{
	size_t gone = 0;

	/* Count first, so a list that cannot take the result is left as it was. */
	for (size_t i = 0; i < l->n; i++)
		if (in_strs(remove, l->v[i].name) || in_labels(set, l->v[i].name))
			gone++;
	if (l->n - gone + set->n + add->n > l->cap)
		return -ENOSPC;
	for (size_t i = 0; i < remove->n; i++)
		hdr_list_remove(l, remove->v[i]);
	/* The names already there first, in place: that drops their duplicates, so the names
	 * appended next fit in what the count above allowed. */
	for (size_t i = 0; i < set->n; i++)
		if (hdr_list_get(l, set->v[i].key) != NULL)
			(void)hdr_list_set(l, set->v[i].key, set->v[i].value);
	for (size_t i = 0; i < set->n; i++)
		(void)hdr_list_set(l, set->v[i].key, set->v[i].value);
	for (size_t i = 0; i < add->n; i++)
		(void)hdr_list_add(l, add->v[i].key, add->v[i].value);
	return 0;
}

int
route_edit_request_headers(const struct reg_route *rt, struct hdr_list *l)
{
	return edit_headers(l, &rt->request_remove, &rt->request_set, &rt->request_add);
}

int
route_edit_response_headers(const struct reg_route *rt, struct hdr_list *l)
{
	return edit_headers(l, &rt->response_remove, &rt->response_set, &rt->response_add);
}

/* ---- Rewrite and redirect --------------------------------------------------------------- */

/* Gateway API ReplacePrefixMatch of prefix by repl in path; path unchanged if it does not match. */
static int
replace_prefix(const char *path, const char *prefix, const char *repl, char *out, size_t outlen)
{
	long pl = prefix_match_len(prefix, path);
	size_t rl = strlen(repl);
	const char *rest;
	int n;

	if (pl < 0) {
		n = snprintf(out, outlen, "%s", path);
	} else {
		while (rl > 0 && repl[rl - 1] == '/')
			rl--;
		rest = path + pl;
		if (rl == 0 && *rest == '\0')
			n = snprintf(out, outlen, "/");
		else
			n = snprintf(out, outlen, "%.*s%s", (int)rl, repl, rest);
	}
	return n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
}

int
route_rewrite_path(const struct reg_route *rt, const char *path, char *out, size_t outlen)
{
	int n;

	if (path == NULL)
		path = "/";
	if (outlen == 0)
		return -ENOSPC;
	if (rt->rewrite_path_prefix != NULL && rt->path_prefix != NULL)
		return replace_prefix(path, rt->path_prefix, rt->rewrite_path_prefix, out, outlen);
	n = snprintf(out, outlen, "%s", path);
	return n < 0 || (size_t)n >= outlen ? -ENOSPC : 0;
}

/* True if rt sets redirect.scheme (0 is both "http" and unset in the parsed field). */
static bool
has_redirect_scheme(const struct reg_route *rt)
{
	size_t n;
	const struct kw *kw = registry_keywords(REG_ROUTE, &n);

	for (size_t i = 0; i < n; i++)
		if (kw[i].key != NULL && strcmp(kw[i].key, "redirect.scheme") == 0)
			return rt->h.keyline != NULL && rt->h.keyline[i] > 0;
	return false;
}

static unsigned
well_known_port(const char *scheme)
{
	if (strcmp(scheme, "http") == 0)
		return 80;
	if (strcmp(scheme, "https") == 0)
		return 443;
	return 0;
}

int
route_redirect_location(const struct reg_route *rt, const char *scheme, const char *host,
    uint16_t port, const char *path, const char *query, char *out, size_t outlen, int *status)
{
	bool scheme_set = has_redirect_scheme(rt);
	const char *sch = scheme_set ? (rt->redirect_scheme ? "https" : "http") :
	    (scheme != NULL && *scheme != '\0' ? scheme : "http");
	const char *h = rt->redirect_host != NULL ? rt->redirect_host : host;
	bool brackets;
	unsigned p, wk = well_known_port(sch);
	char portbuf[16] = "";
	size_t used;
	int n;

	if (!rt->redirect || h == NULL || *h == '\0')
		return -EINVAL;
	if (outlen == 0)
		return -ENOSPC;
	if (path == NULL)
		path = "/";
	brackets = strchr(h, ':') != NULL && h[0] != '[';
	if (rt->redirect_port != 0)
		p = (unsigned)rt->redirect_port;
	else if (scheme_set || port == 0)
		p = wk;
	else
		p = port;
	if (p != 0 && p != wk)
		snprintf(portbuf, sizeof(portbuf), ":%u", p);
	n = snprintf(out, outlen, "%s://%s%s%s%s", sch, brackets ? "[" : "", h, brackets ? "]" : "",
	    portbuf);
	if (n < 0 || (size_t)n >= outlen)
		return -ENOSPC;
	used = (size_t)n;
	if (rt->redirect_path == NULL)
		n = snprintf(out + used, outlen - used, "%s", path);
	else if (rt->path_prefix != NULL)
		n = replace_prefix(path, rt->path_prefix, rt->redirect_path, out + used,
		    outlen - used) == 0 ? (int)strlen(out + used) : -1;
	else
		n = snprintf(out + used, outlen - used, "%s", rt->redirect_path);
	if (n < 0 || (size_t)n >= outlen - used)
		return -ENOSPC;
	used += (size_t)n;
	if (query != NULL && *query != '\0') {
		n = snprintf(out + used, outlen - used, "?%s", query);
		if (n < 0 || (size_t)n >= outlen - used)
			return -ENOSPC;
	}
	if (status != NULL)
		*status = rt->redirect_status != 0 ? (int)rt->redirect_status : 302;
	return 0;
}

/* ---- Retries ---------------------------------------------------------------------------- */

enum {
	RO_5XX = 1 << 0,
	RO_GATEWAY = 1 << 1,
	RO_CONNECT = 1 << 2,
	RO_RESET = 1 << 3,
	RO_REFUSED = 1 << 4,
	RO_GRPC_CANCELLED = 1 << 5,
	RO_GRPC_DEADLINE = 1 << 6,
	RO_GRPC_EXHAUSTED = 1 << 7,
	RO_GRPC_UNAVAILABLE = 1 << 8,
};

static unsigned
retry_on_bits(const struct reg_route *rt)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = {
		{ "5xx", RO_5XX }, { "gateway-error", RO_GATEWAY }, { "connect-failure", RO_CONNECT },
		{ "reset", RO_RESET }, { "refused-stream", RO_REFUSED },
		{ "cancelled", RO_GRPC_CANCELLED }, { "deadline-exceeded", RO_GRPC_DEADLINE },
		{ "resource-exhausted", RO_GRPC_EXHAUSTED }, { "unavailable", RO_GRPC_UNAVAILABLE },
	};
	unsigned bits = 0;

	if (rt->retry_on.n == 0)
		return RO_CONNECT | RO_REFUSED;
	for (size_t i = 0; i < rt->retry_on.n; i++)
		for (size_t j = 0; j < sizeof(names) / sizeof(names[0]); j++)
			if (strcmp(rt->retry_on.v[i], names[j].name) == 0)
				bits |= names[j].bit;
	return bits;
}

bool
route_should_retry(const struct reg_route *rt, int attempt, enum route_outcome o, int status)
{
	unsigned bits;

	if (attempt < 1 || (uint64_t)attempt > rt->retries)
		return false;
	bits = retry_on_bits(rt);
	switch (o) {
	case ROUTE_OUT_STATUS:
		if ((bits & RO_5XX) && status >= 500 && status <= 599)
			return true;
		return (bits & RO_GATEWAY) && (status == 502 || status == 503 || status == 504);
	case ROUTE_OUT_CONNECT_FAILURE:
		return (bits & (RO_5XX | RO_GATEWAY | RO_RESET | RO_CONNECT)) != 0;
	case ROUTE_OUT_REFUSED_STREAM:
		return (bits & (RO_5XX | RO_GATEWAY | RO_RESET | RO_REFUSED)) != 0;
	case ROUTE_OUT_RESET:
	case ROUTE_OUT_TIMEOUT:
		return (bits & (RO_5XX | RO_GATEWAY | RO_RESET)) != 0;
	case ROUTE_OUT_GRPC:
		return (status == 1 && (bits & RO_GRPC_CANCELLED)) ||
		    (status == 4 && (bits & RO_GRPC_DEADLINE)) ||
		    (status == 8 && (bits & RO_GRPC_EXHAUSTED)) ||
		    (status == 14 && (bits & RO_GRPC_UNAVAILABLE));
	}
	return false;
}

uint64_t
route_backoff_ms(const struct reg_route *rt, int attempt, uint32_t random)
{
	uint64_t base = rt->retry_backoff != 0 ? rt->retry_backoff : ROUTE_BACKOFF_BASE_MS;
	uint64_t cap = base <= UINT64_MAX / 10 ? base * 10 : base, interval = base;

	if (attempt < 1)
		attempt = 1;
	for (int i = 1; i < attempt && interval < cap; i++)
		interval *= 2;
	if (interval > cap)
		interval = cap;
	return scale(random, interval);
}

/* ---- Faults and mirroring --------------------------------------------------------------- */

bool
route_fault_delay(const struct reg_route *rt, uint32_t random, uint64_t *ms)
{
	if (rt->fault_delay == 0 || !route_percent_hit(rt->fault_delay_percent, random))
		return false;
	if (ms != NULL)
		*ms = rt->fault_delay;
	return true;
}

bool
route_fault_abort(const struct reg_route *rt, uint32_t random, int *status)
{
	if (rt->fault_abort == 0 || !route_percent_hit(rt->fault_abort_percent, random))
		return false;
	if (status != NULL)
		*status = (int)rt->fault_abort;
	return true;
}

bool
route_mirror(const struct reg_route *rt, uint32_t random)
{
	return rt->mirror_p != NULL && route_percent_hit(rt->mirror_percent, random);
}
