/* SPDX-License-Identifier: Apache-2.0 */
/* etcd's v3 gateway JSON (kv.h). */
#include "config.h"

#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "etcd/kv.h"

char *
etcd_b64(const void *p, size_t n)
{
	size_t olen = 0, cap = 4 * ((n + 2) / 3) + 1;
	char *out = xmalloc(cap);

	if (mbedtls_base64_encode((unsigned char *)out, cap, &olen, p, n) != 0)
		olen = 0;
	out[olen] = '\0';
	return out;
}

/* Not mbedTLS's decoder: that one is constant-time, for secrets, and a third of the time of
 * reading a large registry went to it. */
int
etcd_unb64(const char *s, char **out, size_t *len)
{
	static signed char val[256];
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t sl = strlen(s), o = 0;
	unsigned acc = 0;
	int bits = 0;
	char *b;

	*out = NULL;
	*len = 0;
	if (val[0] == 0) {
		memset(val, -1, sizeof(val));
		for (int i = 0; i < 64; i++)
			val[(unsigned char)abc[i]] = (signed char)i;
	}
	if (sl % 4 != 0)
		return AMESH_ERR_INVALID;
	b = xmalloc(sl / 4 * 3 + 1);
	for (size_t i = 0; i < sl; i++) {
		int v = val[(unsigned char)s[i]];

		if (s[i] == '=') {
			/* Padding: one or two, at the very end only. */
			if (i + 2 < sl || (i + 1 < sl && s[i + 1] != '='))
				goto bad;
			break;
		}
		if (v < 0)
			goto bad;
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			b[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	b[o] = '\0';
	*out = b;
	*len = o;
	return 0;
bad:
	free(b);
	return AMESH_ERR_INVALID;
}

char *
etcd_prefix_end(const char *prefix)
{
	char *e = xstrdup(prefix);
	size_t n = strlen(e);

	/* Our prefixes are ASCII without 0xff, so the last byte + 1 never carries. */
	if (n > 0)
		e[n - 1]++;
	return e;
}

int64_t
etcd_int(const json_t *v)
{
	if (v == NULL)
		return 0;
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		long long x;

		if (s[0] == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 18)
			return -1;
		x = strtoll(s, &end, 10);
		return (int64_t)x;
	}
	return -1;
}

static char *
dump(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	if (s == NULL)
		s = xstrdup("{}");
	return s;
}

char *
etcd_range_request(const char *key, const char *range_end, int64_t revision, size_t limit)
{
	char *k = etcd_b64(key, strlen(key)), *e = etcd_b64(range_end, strlen(range_end));
	json_t *j = json_pack("{s:s,s:s}", "key", k, "range_end", e);

	if (revision > 0)
		json_object_set_new(j, "revision", json_integer(revision));
	if (limit > 0)
		json_object_set_new(j, "limit", json_integer((json_int_t)limit));
	free(k);
	free(e);
	return dump(j);
}

static int
fail(char *why, size_t whylen, int code, const char *msg)
{
	snprintf(why, whylen, "%s", msg);
	return code;
}

int
etcd_range_parse(const json_t *resp, struct etcd_range *out, size_t max_keys,
    size_t max_value, char *why, size_t whylen)
{
	const json_t *kvs = json_object_get(resp, "kvs");
	size_t i;
	const json_t *kv;

	memset(out, 0, sizeof(*out));
	out->revision = etcd_int(json_object_get(json_object_get(resp, "header"), "revision"));
	if (!json_is_object(resp) || out->revision <= 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "range answer without header.revision");
	out->more = json_is_true(json_object_get(resp, "more"));
	if (kvs == NULL)
		return 0; /* no key: etcd leaves "kvs" out */
	if (!json_is_array(kvs))
		return fail(why, whylen, AMESH_ERR_INVALID, "range answer: kvs is not an array");
	if (json_array_size(kvs) > max_keys || out->more) {
		snprintf(why, whylen, "more than %zu keys under the prefix", max_keys);
		return AMESH_ERR_TOOLONG;
	}
	out->kvs = xcalloc(json_array_size(kvs) + 1, sizeof(*out->kvs));
	json_array_foreach(kvs, i, kv) {
		struct etcd_kv *x = &out->kvs[out->n];
		const char *k = json_string_value(json_object_get(kv, "key"));
		const char *v = json_string_value(json_object_get(kv, "value"));
		size_t kl;

		if (k == NULL || etcd_unb64(k, &x->key, &kl) != 0 || kl == 0 ||
		    memchr(x->key, '\0', kl) != NULL) {
			free(x->key);
			x->key = NULL;
			return fail(why, whylen, AMESH_ERR_INVALID, "range answer: a bad key");
		}
		out->n++;
		if (v == NULL)
			v = ""; /* an empty value is left out */
		if (strlen(v) / 4 * 3 > max_value + 3) {
			snprintf(why, whylen, "%.200s: value larger than %zu bytes", x->key, max_value);
			return AMESH_ERR_TOOLONG;
		}
		if (etcd_unb64(v, &x->value, &x->vlen) != 0) {
			snprintf(why, whylen, "%.200s: the value is not base64", x->key);
			return AMESH_ERR_INVALID;
		}
		if (x->vlen > max_value) {
			snprintf(why, whylen, "%.200s: value larger than %zu bytes", x->key, max_value);
			return AMESH_ERR_TOOLONG;
		}
		x->mod_revision = etcd_int(json_object_get(kv, "mod_revision"));
		if (x->mod_revision < 0) {
			snprintf(why, whylen, "%.200s: a bad mod_revision", x->key);
			return AMESH_ERR_INVALID;
		}
	}
	return 0;
}

void
etcd_range_free(struct etcd_range *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->kvs[i].key);
		free(r->kvs[i].value);
	}
	free(r->kvs);
	memset(r, 0, sizeof(*r));
}

char *
etcd_watch_request(const char *key, const char *range_end, int64_t start_revision)
{
	char *k = etcd_b64(key, strlen(key)), *e = etcd_b64(range_end, strlen(range_end));
	json_t *j = json_pack("{s:{s:s,s:s}}", "create_request", "key", k, "range_end", e);

	if (start_revision > 0)
		json_object_set_new(json_object_get(j, "create_request"), "start_revision",
		    json_integer(start_revision));
	free(k);
	free(e);
	return dump(j);
}

int
etcd_watch_parse(const json_t *msg, struct etcd_watch_msg *out, char *why, size_t whylen)
{
	const json_t *res = json_object_get(msg, "result"), *evs, *ev;
	const char *reason;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (res == NULL && json_object_get(msg, "error") != NULL) {
		const json_t *err = json_object_get(msg, "error");
		const char *m = json_string_value(json_object_get(err, "message"));

		snprintf(out->reason, sizeof(out->reason), "%s", m != NULL ? m : "(no message)");
		out->canceled = true;
		if (m != NULL && strstr(m, "compacted") != NULL)
			out->compact_revision = 1;
		return 0;
	}
	if (!json_is_object(res))
		return fail(why, whylen, AMESH_ERR_INVALID, "watch message without result");
	out->revision = etcd_int(json_object_get(json_object_get(res, "header"), "revision"));
	out->created = json_is_true(json_object_get(res, "created"));
	out->canceled = json_is_true(json_object_get(res, "canceled"));
	out->compact_revision = etcd_int(json_object_get(res, "compact_revision"));
	reason = json_string_value(json_object_get(res, "cancel_reason"));
	if (reason != NULL)
		snprintf(out->reason, sizeof(out->reason), "%s", reason);
	if (out->revision < 0 || out->compact_revision < 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "watch message: a bad revision");
	evs = json_object_get(res, "events");
	if (evs != NULL && !json_is_array(evs))
		return fail(why, whylen, AMESH_ERR_INVALID, "watch message: events is not an array");
	json_array_foreach(evs, i, ev) {
		int64_t r = etcd_int(json_object_get(json_object_get(ev, "kv"), "mod_revision"));

		if (r < 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "watch event: a bad mod_revision");
		if (r > out->event_revision)
			out->event_revision = r;
		out->nevents++;
	}
	if (out->nevents > 0 && out->event_revision == 0)
		out->event_revision = out->revision;
	return 0;
}

void
etcd_events_free(struct etcd_event *ev, size_t n)
{
	for (size_t i = 0; ev != NULL && i < n; i++) {
		free(ev[i].kv.key);
		free(ev[i].kv.value);
	}
	free(ev);
}

int
etcd_watch_events(const json_t *msg, size_t max_value, struct etcd_event **out, size_t *n,
    char *why, size_t whylen)
{
	const json_t *evs = json_object_get(json_object_get(msg, "result"), "events"), *e;
	struct etcd_event *v;
	size_t i;

	*out = NULL;
	*n = 0;
	if (evs == NULL)
		return 0;
	if (!json_is_array(evs))
		return fail(why, whylen, AMESH_ERR_INVALID, "watch message: events is not an array");
	v = xcalloc(json_array_size(evs) + 1, sizeof(*v));
	json_array_foreach(evs, i, e) {
		const json_t *kv = json_object_get(e, "kv");
		const char *type = json_string_value(json_object_get(e, "type"));
		const char *k = json_string_value(json_object_get(kv, "key"));
		const char *val = json_string_value(json_object_get(kv, "value"));
		struct etcd_event *x = &v[*n];
		size_t kl;

		/* The gateway leaves the default PUT out. */
		x->deleted = type != NULL && strcmp(type, "DELETE") == 0;
		if (k == NULL || etcd_unb64(k, &x->kv.key, &kl) != 0 || kl == 0 ||
		    memchr(x->kv.key, '\0', kl) != NULL) {
			free(x->kv.key);
			x->kv.key = NULL;
			etcd_events_free(v, *n);
			*n = 0;
			return fail(why, whylen, AMESH_ERR_INVALID, "watch event: a bad key");
		}
		(*n)++;
		x->kv.mod_revision = etcd_int(json_object_get(kv, "mod_revision"));
		if (x->kv.mod_revision <= 0) {
			snprintf(why, whylen, "watch event %.200s: a bad mod_revision", x->kv.key);
			goto bad;
		}
		if (x->deleted)
			continue;
		if (val == NULL)
			val = "";
		if (strlen(val) / 4 * 3 > max_value + 3 || etcd_unb64(val, &x->kv.value,
		    &x->kv.vlen) != 0 || x->kv.vlen > max_value) {
			snprintf(why, whylen, "watch event %.200s: a value that is not base64 or larger "
			    "than %zu bytes", x->kv.key, max_value);
			goto bad;
		}
	}
	*out = v;
	return 0;
bad:
	etcd_events_free(v, *n);
	*n = 0;
	return AMESH_ERR_INVALID;
}
