/* SPDX-License-Identifier: Apache-2.0 */
/* The etcd:// registry source (etcdurl.h): parsed once here so that every role and the CLI agree. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/etcdurl.h"
#include "core/err.h"
#include "core/util.h"

bool
etcd_url_is(const char *s)
{
	return s != NULL && strncmp(s, ETCD_URL_SCHEME, strlen(ETCD_URL_SCHEME)) == 0;
}

static int bad(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return AMESH_ERR_INVALID;
}

/* One endpoint of len bytes at p, as "HOST:PORT"; NULL when it is not one. */
static char *
endpoint(const char *p, size_t len)
{
	char host[256], port[8];
	const char *colon = NULL, *h = p;
	size_t hl;

	if (len == 0 || len > 300)
		return NULL;
	if (p[0] == '[') {
		const char *end = memchr(p, ']', len);

		if (end == NULL)
			return NULL;
		h = p + 1;
		hl = (size_t)(end - h);
		if (end + 1 < p + len) {
			if (end[1] != ':')
				return NULL;
			colon = end + 1;
		}
		if (hl == 0 || strspn(h, "0123456789abcdefABCDEF:.") < hl)
			return NULL;
	} else {
		for (const char *q = p; q < p + len; q++)
			if (*q == ':') {
				if (colon != NULL)
					return NULL; /* a bare IPv6 address needs brackets */
				colon = q;
			}
		hl = colon != NULL ? (size_t)(colon - p) : len;
		if (hl == 0 || strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789.-") < hl)
			return NULL;
	}
	if (hl >= sizeof(host))
		return NULL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (colon != NULL) {
		size_t pl = (size_t)(p + len - colon - 1);
		unsigned long v;

		if (pl == 0 || pl >= sizeof(port) || strspn(colon + 1, "0123456789") < pl)
			return NULL;
		memcpy(port, colon + 1, pl);
		port[pl] = '\0';
		v = strtoul(port, NULL, 10);
		if (v == 0 || v > 65535)
			return NULL;
	} else {
		snprintf(port, sizeof(port), "%s", ETCD_DEFAULT_PORT);
	}
	return p[0] == '[' ? xasprintf("[%s]:%s", host, port) : xasprintf("%s:%s", host, port);
}

int
etcd_url_parse(const char *s, struct etcd_url *u, char *why, size_t whylen)
{
	const char *hosts, *slash, *p;
	size_t plen;

	memset(u, 0, sizeof(*u));
	if (!etcd_url_is(s))
		return bad(why, whylen, "'%s' is not etcd://HOST[:PORT][,...]/PREFIX", s);
	hosts = s + strlen(ETCD_URL_SCHEME);
	slash = strchr(hosts, '/');
	if (slash == NULL || slash == hosts)
		return bad(why, whylen, "'%s': expected etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX", s);
	for (p = hosts; p < slash;) {
		const char *comma = memchr(p, ',', (size_t)(slash - p));
		size_t len = comma != NULL ? (size_t)(comma - p) : (size_t)(slash - p);
		char *ep;

		if (u->n == ETCD_MAX_ENDPOINTS) {
			snprintf(why, whylen, "'%s': more than %d endpoints", s, ETCD_MAX_ENDPOINTS);
			return AMESH_ERR_INVALID;
		}
		ep = endpoint(p, len);
		if (ep == NULL) {
			snprintf(why, whylen, "'%.*s' is not an etcd endpoint (HOST[:PORT] or [IPv6]:PORT)",
			    (int)(len > 300 ? 300 : len), p);
			return AMESH_ERR_INVALID;
		}
		u->endpoints[u->n++] = ep;
		p += len + (comma != NULL);
		if (comma != NULL && p == slash)
			return bad(why, whylen, "'%s': an empty endpoint after ','", s);
	}
	/* The prefix: "/seg[/seg...]" of key-safe characters, no empty segment. */
	plen = strlen(slash);
	if (plen < 2 || plen > ETCD_MAX_PREFIX)
		return bad(why, whylen, "'%s': the prefix must be /NAME, at most 200 bytes", s);
	if (strspn(slash, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") < plen ||
	    strstr(slash, "//") != NULL || slash[plen - 1] == '/')
		return bad(why, whylen, "'%s': the prefix may have letters, digits, '.', '_', '-' and "
		    "'/' between names, and no trailing '/'", s);
	u->prefix = xstrdup(slash);
	return 0;
}

void
etcd_url_free(struct etcd_url *u)
{
	for (size_t i = 0; i < u->n; i++)
		free(u->endpoints[i]);
	free(u->prefix);
	memset(u, 0, sizeof(*u));
}
