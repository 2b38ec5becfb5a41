/* SPDX-License-Identifier: Apache-2.0 */
/* amesh.conf loader: the keyword table below is the whole schema; amesh.conf(5) documents it. */
#include "config.h"

#include <ctype.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/conf.h"
#include "config/etcdurl.h"
#include "config/ini.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"

#define OFF(field) offsetof(struct amesh_conf, field)

static const char *const sections[] = {
	"mesh", "identity", "log", "ztunnel", "waypoint", "sidecar", "cni", "ca", "dns", "tls", NULL,
};
static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const log_formats[] = { "text", "json", NULL };
static const char *const on_unknown[] = { "fail", "skip", NULL };
static const char *const outbound_modes[] = { "allow_any", "registry_only", NULL };

#define PROXY_KEYS(sec, base)                                                                  \
	{ sec, "outbound_port", KW_PORT, OFF(base.outbound_port), "15001", 0, 0, NULL, false },    \
	{ sec, "inbound_plaintext_port", KW_PORT, OFF(base.inbound_plaintext_port), "15006", 0, 0, \
	    NULL, false },                                                                     \
	{ sec, "hbone_port", KW_PORT, OFF(base.hbone_port), "15008", 0, 0, NULL, false },          \
	{ sec, "dns_port", KW_PORT, OFF(base.dns_port), "15053", 0, 0, NULL, false },              \
	{ sec, "dns_capture", KW_BOOL, OFF(base.dns_capture), "off", 0, 0, NULL, false },          \
	{ sec, "admin_address", KW_SOCKADDR, OFF(base.admin_address), "127.0.0.1:15000", 0, 0,     \
	    NULL, false },                                                                     \
	{ sec, "metrics_address", KW_SOCKADDR, OFF(base.metrics_address), "0.0.0.0:15020", 0, 0,   \
	    NULL, false },                                                                     \
	{ sec, "readiness_address", KW_SOCKADDR, OFF(base.readiness_address), "0.0.0.0:15021", 0, \
	    0, NULL, false },                                                                  \
	{ sec, "drain_timeout", KW_DURATION, OFF(base.drain_timeout), "5s", 0, 0, NULL, false },   \
	{ sec, "connect_timeout", KW_DURATION, OFF(base.connect_timeout), "10s", 1, 0, NULL,       \
	    false },                                                                           \
	{ sec, "handshake_timeout", KW_DURATION, OFF(base.handshake_timeout), "10s", 1, 0, NULL,   \
	    false },                                                                           \
	{ sec, "idle_timeout", KW_DURATION, OFF(base.idle_timeout), "1h", 0, 0, NULL, false },     \
	{ sec, "buffer_size", KW_SIZE, OFF(base.buffer_size), "64k", 0, 0, NULL, false },          \
	{ sec, "max_connections", KW_UINT, OFF(base.max_connections), "65536", 1, 1048576, NULL,   \
	    false },                                                                           \
	{ sec, "pool_max_streams", KW_UINT, OFF(base.pool_max_streams), "100", 1, 1000, NULL,      \
	    false },                                                                           \
	{ sec, "pool_idle_timeout", KW_DURATION, OFF(base.pool_idle_timeout), "5m", 0, 0, NULL,    \
	    false }

static const struct kw keywords[] = {
	{ "mesh", "trust_domain", KW_HOSTNAME, OFF(mesh.trust_domain), "cluster.local", 0, 0, NULL, false },
	{ "mesh", "trust_bundle", KW_PATH, OFF(mesh.trust_bundle), SYSCONFDIR "/amesh/ca.crt", 0, 0, NULL, false },
	{ "mesh", "registry", KW_PATH, OFF(mesh.registry), SYSCONFDIR "/amesh/registry.d", 0, 0, NULL, false },
	{ "mesh", "node", KW_HOSTNAME, OFF(mesh.node), NULL, 0, 0, NULL, false },
	{ "mesh", "etcd_ca", KW_PATH, OFF(mesh.etcd_ca), NULL, 0, 0, NULL, false },
	{ "mesh", "etcd_cert", KW_PATH, OFF(mesh.etcd_cert), NULL, 0, 0, NULL, false },
	{ "mesh", "etcd_key", KW_PATH, OFF(mesh.etcd_key), NULL, 0, 0, NULL, false },
	{ "mesh", "etcd_timeout", KW_DURATION, OFF(mesh.etcd_timeout), "5s", 100, 0, NULL, false },
	{ "mesh", "registry_cache", KW_PATH, OFF(mesh.registry_cache), LOCALSTATEDIR "/lib/amesh/registry.cache", 0, 0, NULL, false },
	{ "mesh", "outbound", KW_ENUM, OFF(mesh.outbound), "allow_any", 0, 0, outbound_modes, false },
	{ "identity", "cert_dir", KW_PATH, OFF(identity.cert_dir), LOCALSTATEDIR "/lib/amesh/certs", 0, 0, NULL, false },
	{ "identity", "expiry_warning", KW_DURATION, OFF(identity.expiry_warning), "7d", 0, 0, NULL, false },
	{ "identity", "ca_address", KW_STR_LIST, OFF(identity.ca_address), NULL, 0, 0, NULL, false },
	{ "identity", "node_cert", KW_PATH, OFF(identity.node_cert), LOCALSTATEDIR "/lib/amesh/node/node.crt", 0, 0, NULL, false },
	{ "identity", "node_key", KW_PATH, OFF(identity.node_key), LOCALSTATEDIR "/lib/amesh/node/node.key", 0, 0, NULL, false },
	{ "identity", "cert_ttl", KW_DURATION, OFF(identity.cert_ttl), "24h", 10000, 0, NULL, false },
	{ "identity", "ca_timeout", KW_DURATION, OFF(identity.ca_timeout), "10s", 100, 0, NULL, false },
	{ "log", "level", KW_ENUM, OFF(log.level), "info", 0, 0, log_levels, false },
	{ "log", "format", KW_ENUM, OFF(log.format), "text", 0, 0, log_formats, false },
	{ "log", "access_log", KW_BOOL, OFF(log.access_log), "on", 0, 0, NULL, false },
	{ "tls", "record_offload", KW_BOOL, OFF(tls.record_offload), "on", 0, 0, NULL, false },
	{ "ztunnel", "socket", KW_PATH, OFF(ztunnel.socket), RUNSTATEDIR "/amesh/ztunnel.sock", 0, 0, NULL, false },
	{ "ztunnel", "state_dir", KW_PATH, OFF(ztunnel.state_dir), RUNSTATEDIR "/amesh/workloads", 0, 0, NULL, false },
	PROXY_KEYS("ztunnel", ztunnel.proxy),
	{ "ztunnel", "workers", KW_UINT, OFF(ztunnel.proxy.workers), "0", 0, 64, NULL, false },
	{ "waypoint", "name", KW_HOSTNAME, OFF(waypoint.name), "default-wp", 0, 0, NULL, false },
	{ "waypoint", "hbone_address", KW_SOCKADDR, OFF(waypoint.hbone_address), "0.0.0.0:15008", 0, 0, NULL, false },
	{ "waypoint", "admin_address", KW_SOCKADDR, OFF(waypoint.admin_address), "127.0.0.1:15000", 0, 0, NULL, false },
	{ "waypoint", "metrics_address", KW_SOCKADDR, OFF(waypoint.metrics_address), "0.0.0.0:15020", 0, 0, NULL, false },
	{ "waypoint", "readiness_address", KW_SOCKADDR, OFF(waypoint.readiness_address), "0.0.0.0:15021", 0, 0, NULL, false },
	{ "waypoint", "drain_timeout", KW_DURATION, OFF(waypoint.drain_timeout), "5s", 0, 0, NULL, false },
	{ "waypoint", "connect_timeout", KW_DURATION, OFF(waypoint.connect_timeout), "10s", 1, 0, NULL, false },
	{ "waypoint", "handshake_timeout", KW_DURATION, OFF(waypoint.handshake_timeout), "10s", 1, 0, NULL, false },
	{ "waypoint", "idle_timeout", KW_DURATION, OFF(waypoint.idle_timeout), "1h", 0, 0, NULL, false },
	{ "waypoint", "protocol_detection_timeout", KW_DURATION, OFF(waypoint.protocol_detection_timeout), "1s", 0, 0, NULL, false },
	{ "waypoint", "request_header_timeout", KW_DURATION, OFF(waypoint.request_header_timeout), "10s", 0, 0, NULL, false },
	{ "waypoint", "buffer_size", KW_SIZE, OFF(waypoint.buffer_size), "64k", 0, 0, NULL, false },
	{ "waypoint", "max_connections", KW_UINT, OFF(waypoint.max_connections), "65536", 1, 1048576, NULL, false },
	{ "waypoint", "pool_max_streams", KW_UINT, OFF(waypoint.pool_max_streams), "100", 1, 1000, NULL, false },
	{ "waypoint", "pool_idle_timeout", KW_DURATION, OFF(waypoint.pool_idle_timeout), "5m", 0, 0, NULL, false },
	{ "waypoint", "workers", KW_UINT, OFF(waypoint.workers), "0", 0, 64, NULL, false },
	{ "sidecar", "workload", KW_HOSTNAME, OFF(sidecar.workload), NULL, 0, 0, NULL, false },
	{ "sidecar", "l7", KW_BOOL, OFF(sidecar.l7), "on", 0, 0, NULL, false },
	{ "sidecar", "protocol_detection_timeout", KW_DURATION, OFF(sidecar.protocol_detection_timeout), "1s", 0, 0, NULL, false },
	{ "sidecar", "request_header_timeout", KW_DURATION, OFF(sidecar.request_header_timeout), "10s", 0, 0, NULL, false },
	PROXY_KEYS("sidecar", sidecar.proxy),
	{ "cni", "socket", KW_PATH, OFF(cni.socket), NULL, 0, 0, NULL, false },
	{ "cni", "on_unknown", KW_ENUM, OFF(cni.on_unknown), "fail", 0, 0, on_unknown, false },
	{ "ca", "dir", KW_PATH, OFF(ca.dir), LOCALSTATEDIR "/lib/amesh/ca", 0, 0, NULL, false },
	{ "ca", "address", KW_SOCKADDR, OFF(ca.address), "0.0.0.0:15012", 0, 0, NULL, false },
	{ "ca", "admin_address", KW_SOCKADDR, OFF(ca.admin_address), "127.0.0.1:15010", 0, 0, NULL, false },
	{ "ca", "metrics_address", KW_SOCKADDR, OFF(ca.metrics_address), "0.0.0.0:15014", 0, 0, NULL, false },
	{ "ca", "readiness_address", KW_SOCKADDR, OFF(ca.readiness_address), "0.0.0.0:15013", 0, 0, NULL, false },
	{ "ca", "max_ttl", KW_DURATION, OFF(ca.max_ttl), "24h", 10000, 0, NULL, false },
	{ "ca", "node_ttl", KW_DURATION, OFF(ca.node_ttl), "30d", 60000, 0, NULL, false },
	{ "ca", "handshake_timeout", KW_DURATION, OFF(ca.handshake_timeout), "10s", 100, 0, NULL, false },
	{ "dns", "upstream", KW_STR_LIST, OFF(dns.upstream), NULL, 0, 0, NULL, false },
	{ "dns", "resolv_conf", KW_PATH, OFF(dns.resolv_conf), "/etc/resolv.conf", 0, 0, NULL, false },
	{ "dns", "domain", KW_HOSTNAME, OFF(dns.domain), "cluster.local", 0, 0, NULL, false },
	{ "dns", "timeout", KW_DURATION, OFF(dns.timeout), "5s", 100, 0, NULL, false },
	{ "dns", "ttl", KW_DURATION, OFF(dns.ttl), "30s", 0, 0, NULL, false },
	{ "dns", "max_inflight", KW_UINT, OFF(dns.max_inflight), "1024", 1, 65536, NULL, false },
};

#define NKW ARRAY_SIZE(keywords)

/* Relay buffers below this cannot hold one TLS record; above it one tunnel could pin a lot of memory. */
#define BUFFER_MIN (16u * 1024)
#define BUFFER_MAX (16u * 1024 * 1024)

struct conf_ctx {
	struct amesh_conf *c;
	struct diag *d;
	const char *file;
	int section;      /* index in sections[], -1 unknown, -2 none yet */
	int section_line[ARRAY_SIZE(sections)];
};

const struct kw *
conf_keywords(size_t *n)
{
	*n = NKW;
	return keywords;
}

static int
section_index(const char *name)
{
	for (int i = 0; sections[i] != NULL; i++)
		if (strcmp(sections[i], name) == 0)
			return i;
	return -1;
}

static void
on_section(void *user, const char *text, int line)
{
	struct conf_ctx *x = user;
	int i;

	if (text == NULL) {
		x->section = -1;
		return;
	}
	i = section_index(text);
	x->section = i;
	if (i < 0) {
		diag_add(x->d, x->file, line, "unknown section [%s] (expected one of: mesh, identity, "
		    "log, ztunnel, waypoint, sidecar, cni, ca, dns, tls)", text);
		return;
	}
	if (x->section_line[i] != 0) {
		diag_add(x->d, x->file, line, "section [%s] appears twice (first at line %d)", text,
		    x->section_line[i]);
		x->section = -1; /* its keys would only repeat the error */
		return;
	}
	x->section_line[i] = line;
	x->c->has_section[i] = true;
}

static void
on_key(void *user, const char *section, const char *key, const char *value, int line)
{
	struct conf_ctx *x = user;
	char why[512];

	if (x->section == -2) {
		diag_add(x->d, x->file, line, "key '%s' outside of any section", key);
		return;
	}
	if (x->section < 0)
		return; /* reported once at the header */
	/* Our own idea of the section: inih keeps blanks that "[ mesh ]" has inside its brackets. */
	section = sections[x->section];
	for (size_t i = 0; i < NKW; i++) {
		const struct kw *kw = &keywords[i];

		if (strcmp(kw->section, section) != 0 || strcmp(kw->key, key) != 0)
			continue;
		if (x->c->lines[i] != 0) {
			diag_add(x->d, x->file, line, "duplicate key '%s' in [%s] (first set at line %d)",
			    key, section, x->c->lines[i]);
			return;
		}
		if (kw_set(kw, x->c, value, x->c->dir, why, sizeof(why)) != 0) {
			diag_add(x->d, x->file, line, "[%s] %s: %s", section, key, why);
			return;
		}
		/* The registry is a directory or an etcd:// source, which is no path to anchor. */
		if (kw->off == OFF(mesh.registry) && etcd_url_is(value)) {
			struct etcd_url u;

			free(x->c->mesh.registry);
			x->c->mesh.registry = xstrdup(value);
			if (etcd_url_parse(value, &u, why, sizeof(why)) != 0)
				diag_add(x->d, x->file, line, "[mesh] registry: %s", why);
			etcd_url_free(&u);
		}
		x->c->lines[i] = line;
		return;
	}
	diag_add(x->d, x->file, line, "unknown key '%s' in [%s]", key, section);
}

static void
set_defaults(struct amesh_conf *c)
{
	char why[256];

	for (size_t i = 0; i < NKW; i++)
		if (keywords[i].dflt != NULL &&
		    kw_set(&keywords[i], c, keywords[i].dflt, "/", why, sizeof(why)) != 0)
			fatalx("bad built-in default for %s.%s: %s", keywords[i].section,
			    keywords[i].key, why);
}

/* Checks that need more than one key, and defaults that come from elsewhere. */
static void
finish(struct conf_ctx *x)
{
	struct amesh_conf *c = x->c;
	const struct conf_proxy *proxies[2] = { &c->ztunnel.proxy, &c->sidecar.proxy };
	const char *pnames[2] = { "ztunnel", "sidecar" };

	if (c->mesh.node == NULL) {
		char host[HOST_NAME_MAX + 1] = "";

		/* Like Consul's node_name: the host name (lower-cased, as registry names are) unless set. */
		if (gethostname(host, sizeof(host)) == 0)
			for (char *p = host; *p != '\0'; p++)
				*p = (char)tolower((unsigned char)*p);
		if (host[0] != '\0' && kw_is_hostname(host))
			c->mesh.node = xstrdup(host);
		else
			diag_add(x->d, x->file, 0, "[mesh] node is not set and the host name '%s' "
			    "is not a valid node name", host);
	}
	if (c->cni.socket == NULL)
		c->cni.socket = xstrdup(c->ztunnel.socket);
	if ((c->mesh.etcd_cert == NULL) != (c->mesh.etcd_key == NULL))
		diag_add(x->d, x->file, conf_line(c, "mesh", c->mesh.etcd_cert != NULL ? "etcd_cert" :
		    "etcd_key"), "[mesh] etcd_cert and etcd_key go together: give both or neither");
	/* With the CA service the bundle is fetched and rewritten by the roles (a root rotation):
	 * it lives beside the node's certificates, not in /etc, which their units cannot write. */
	if (c->identity.ca_address.n > 0 && conf_line(c, "mesh", "trust_bundle") <= 0) {
		free(c->mesh.trust_bundle);
		c->mesh.trust_bundle = xstrdup(LOCALSTATEDIR "/lib/amesh/ca.crt");
	}
	for (int p = 0; p < 2; p++) {
		const struct conf_proxy *px = proxies[p];
		uint16_t ports[4] = { px->outbound_port, px->inbound_plaintext_port, px->hbone_port,
			px->dns_port };
		static const char *const pk[4] = { "outbound_port", "inbound_plaintext_port",
			"hbone_port", "dns_port" };

		for (int i = 0; i < 4; i++)
			for (int j = 0; j < i; j++)
				if (ports[i] == ports[j])
					diag_add(x->d, x->file, conf_line(c, pnames[p], pk[i]) > 0 ?
					    conf_line(c, pnames[p], pk[i]) : conf_line(c, pnames[p], pk[j]),
					    "[%s] %s and %s are both %u", pnames[p], pk[j], pk[i], ports[i]);
		if (px->buffer_size < BUFFER_MIN || px->buffer_size > BUFFER_MAX)
			diag_add(x->d, x->file, conf_line(c, pnames[p], "buffer_size"),
			    "[%s] buffer_size: must be between 16k and 16M", pnames[p]);
	}
	for (size_t i = 0; i < c->dns.upstream.n; i++) {
		struct sockaddr_storage ss;

		if (conf_dns_upstream(c->dns.upstream.v[i], &ss) != 0)
			diag_add(x->d, x->file, conf_line(c, "dns", "upstream"), "[dns] upstream: "
			    "'%s' is not an address (IP or IP:PORT, [IPv6]:PORT)", c->dns.upstream.v[i]);
	}
	if (c->dns.upstream.n > DNS_MAX_UPSTREAMS)
		diag_add(x->d, x->file, conf_line(c, "dns", "upstream"), "[dns] upstream: at most "
		    "%d resolvers", DNS_MAX_UPSTREAMS);
	if (c->waypoint.buffer_size < BUFFER_MIN || c->waypoint.buffer_size > BUFFER_MAX)
		diag_add(x->d, x->file, conf_line(c, "waypoint", "buffer_size"),
		    "[waypoint] buffer_size: must be between 16k and 16M");
	/* Both roles dial their peers' HBONE on their own hbone_port: one port for the mesh, so
	 * [sidecar] takes [ztunnel]'s unless set, and may not set another. */
	if (conf_line(c, "sidecar", "hbone_port") <= 0)
		c->sidecar.proxy.hbone_port = c->ztunnel.proxy.hbone_port;
	else if (c->ztunnel.proxy.hbone_port != c->sidecar.proxy.hbone_port)
		diag_add(x->d, x->file, conf_line(c, "sidecar", "hbone_port"),
		    "[ztunnel] hbone_port %u and [sidecar] hbone_port %u differ: ztunnels and "
		    "sidecars reach each other on one HBONE port", c->ztunnel.proxy.hbone_port,
		    c->sidecar.proxy.hbone_port);
}

int
conf_parse_buffer(const char *file, const char *data, size_t len, struct amesh_conf **out,
    struct diag *d)
{
	struct amesh_conf *c = xcalloc(1, sizeof(*c));
	struct conf_ctx x = { .c = c, .d = d, .file = file, .section = -2 };
	static const struct ini_callbacks cb = { on_section, on_key };
	size_t before = diag_count(d);
	char abs[PATH_MAX];

	*out = NULL;
	c->path = xstrdup(file);
	/* Relative paths in the file are relative to the file, wherever amesh was started. */
	c->dir = path_dirname(file);
	if (c->dir[0] != '/' && realpath(c->dir, abs) != NULL) {
		free(c->dir);
		c->dir = xstrdup(abs);
	}
	c->lines = xcalloc(NKW, sizeof(int));
	set_defaults(c);
	ini_parse_buffer(file, data, len, &cb, &x, d);
	finish(&x);
	if (diag_count(d) != before) {
		conf_free(c);
		return AMESH_ERR_INVALID;
	}
	*out = c;
	return 0;
}

int
conf_load(const char *path, struct amesh_conf **out, struct diag *d)
{
	char *data;
	size_t len;
	int r;

	*out = NULL;
	r = ini_slurp(path, &data, &len, d);
	if (r != 0)
		return r;
	r = conf_parse_buffer(path, data, len, out, d);
	free(data);
	return r;
}

void
conf_free(struct amesh_conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < NKW; i++)
		kw_free(&keywords[i], c);
	free(c->lines);
	free(c->path);
	free(c->dir);
	free(c);
}

int
conf_dns_upstream(const char *s, struct sockaddr_storage *out)
{
	struct ip_addr ip;
	const char *why;

	if (parse_ip(s, &ip, &why) == 0) {
		sockaddr_from_ip(out, &ip, 53);
		return 0;
	}
	return parse_sockaddr(s, out, &why) == 0 ? 0 : AMESH_ERR_INVALID;
}

int
conf_line(const struct amesh_conf *c, const char *section, const char *key)
{
	for (size_t i = 0; i < NKW; i++)
		if (strcmp(keywords[i].section, section) == 0 && strcmp(keywords[i].key, key) == 0)
			return c->lines[i];
	return -1;
}

bool
conf_has_section(const struct amesh_conf *c, const char *section)
{
	int i = section_index(section);

	return i >= 0 && c->has_section[i];
}
