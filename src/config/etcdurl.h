/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The etcd registry source of [mesh] registry: "etcd://HOST[:PORT][,HOST[:PORT]...]/PREFIX".
 * Each endpoint is a host name, an IPv4 address or a bracketed IPv6 address, port 2379 unless
 * given. PREFIX is the URL's path, leading slash included: etcd://h/amesh keeps its registry
 * files under the keys "/amesh/files/NAME.conf" (amesh-registry(5), ETCD).
 */
#ifndef AMESH_CONFIG_ETCDURL_H
#define AMESH_CONFIG_ETCDURL_H

#include <stdbool.h>
#include <stddef.h>

#define ETCD_URL_SCHEME "etcd://"
#define ETCD_DEFAULT_PORT "2379"
/* At most this many endpoints, and this long a prefix. */
#define ETCD_MAX_ENDPOINTS 16
#define ETCD_MAX_PREFIX 200

struct etcd_url {
	char *endpoints[ETCD_MAX_ENDPOINTS]; /* "HOST:PORT" or "[V6]:PORT", malloc'd */
	size_t n;
	char *prefix;                        /* "/amesh": no trailing slash */
};

/* True if s names an etcd source (starts with etcd://) rather than a directory. */
bool etcd_url_is(const char *s);
/*
 * Parses s into u (zeroed first; free with etcd_url_free even on failure). Returns 0, or
 * AMESH_ERR_INVALID with why saying what is wrong.
 */
int etcd_url_parse(const char *s, struct etcd_url *u, char *why, size_t whylen);
/* Accepts a zeroed or parsed u. */
void etcd_url_free(struct etcd_url *u);

#endif
