/* SPDX-License-Identifier: Apache-2.0 */
/* amesh.conf(5): this host's settings, one struct for every role, loaded through one keyword table. */
#ifndef AMESH_CONFIG_CONF_H
#define AMESH_CONFIG_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/kw.h"
#include "core/diag.h"

#define AMESH_DEFAULT_CONF SYSCONFDIR "/amesh/amesh.conf"

enum conf_on_unknown { CONF_ON_UNKNOWN_FAIL = 0, CONF_ON_UNKNOWN_SKIP };
/* [mesh] outbound: where captured connections may go. */
enum conf_outbound {
	CONF_OUTBOUND_ALLOW_ANY = 0, /* destinations the registry does not know: plain TCP */
	CONF_OUTBOUND_REGISTRY_ONLY, /* those are refused (BlackHoleCluster) */
};

/* Listener and proxy settings shared by the ztunnel and sidecar sections. */
struct conf_proxy {
	uint16_t outbound_port, inbound_plaintext_port, hbone_port, dns_port;
	bool dns_capture;
	struct sockaddr_storage admin_address, metrics_address, readiness_address;
	uint64_t drain_timeout;     /* ms */
	uint64_t connect_timeout;   /* ms */
	uint64_t handshake_timeout; /* ms */
	uint64_t idle_timeout;      /* ms, relay without traffic in either direction */
	uint64_t buffer_size;       /* bytes per relay direction */
	uint64_t max_connections;
	uint64_t pool_max_streams;
	uint64_t pool_idle_timeout; /* ms */
	uint64_t workers;           /* [ztunnel] event loops (core/worker.h); the sidecar's is 1 */
};

struct amesh_conf {
	char *path; /* the file it came from */
	char *dir;  /* its directory, for relative paths */

	struct {
		char *trust_domain, *trust_bundle, *registry, *node;
		int outbound; /* enum conf_outbound */
		/* registry = etcd://...: its client TLS (PEM files; none: plain HTTP), the timeout of
		 * each request, and the local copy of the last good snapshot (config/etcdurl.h). */
		char *etcd_ca, *etcd_cert, *etcd_key, *registry_cache;
		uint64_t etcd_timeout; /* ms */
	} mesh;
	struct {
		char *cert_dir;
		uint64_t expiry_warning; /* ms before notAfter to start warning */
		struct str_list ca_address; /* CA service addresses; empty: identities are files */
		char *node_cert, *node_key; /* this node's certificate (amesh ca join) */
		uint64_t cert_ttl;          /* ms asked of the CA for each workload certificate */
		uint64_t ca_timeout;        /* ms per CA address and request */
	} identity;
	struct {
		int level;  /* enum log_level */
		int format; /* enum log_format */
		bool access_log;
	} log;
	struct {
		char *socket, *state_dir;
		struct conf_proxy proxy;
	} ztunnel;
	struct {
		char *name;
		struct sockaddr_storage hbone_address, admin_address, metrics_address,
		    readiness_address;
		uint64_t drain_timeout, connect_timeout, handshake_timeout, idle_timeout;
		uint64_t protocol_detection_timeout; /* ms; 0: wait for the client's bytes */
		uint64_t request_header_timeout;     /* ms; 0: none */
		uint64_t buffer_size, max_connections, pool_max_streams, pool_idle_timeout;
		uint64_t workers; /* accepted; the waypoint runs one event loop for now */
	} waypoint;
	struct {
		char *workload;
		bool l7; /* inbound HTTP and routed outbound through the L7 engine */
		uint64_t protocol_detection_timeout; /* ms; 0: wait for the client's bytes */
		uint64_t request_header_timeout;     /* ms; 0: none */
		struct conf_proxy proxy;
	} sidecar;
	struct {
		char *socket;
		int on_unknown; /* enum conf_on_unknown */
	} cni;
	struct {
		struct str_list upstream; /* resolvers "IP" or "IP:PORT"; empty: resolv_conf's */
		char *resolv_conf;        /* where the host's resolvers are read from */
		char *domain;             /* the mesh domain: names under it are answered here */
		uint64_t timeout;         /* ms for a forwarded query, all upstreams together */
		uint64_t ttl;             /* ms, the TTL of registry answers */
		uint64_t max_inflight;    /* forwarded queries at once, per proxy */
	} dns;
	struct {
		char *dir; /* the CA it signs with: ca.crt, ca.key, bundle.crt, tokens/, revoked/ */
		struct sockaddr_storage address, admin_address, metrics_address, readiness_address;
		uint64_t max_ttl, node_ttl; /* ms */
		uint64_t handshake_timeout; /* ms */
	} ca;

	struct {
		bool record_offload; /* records sealed by OpenSSL's AEADs after the handshake */
	} tls;

	/* Which sections the file has, by conf_sections() index. */
	bool has_section[11];
	/* Line each keyword was set on (0: default), by conf_keywords() index. */
	int *lines;
};

/*
 * Loads and validates path. On success *out is a new config; on failure every problem is in d as
 * "FILE:LINE: message" and the return is AMESH_ERR_INVALID (or -errno when the file cannot be read).
 */
int conf_load(const char *path, struct amesh_conf **out, struct diag *d);
/* Same, from memory; file names the input in messages and its directory anchors relative paths. */
int conf_parse_buffer(const char *file, const char *data, size_t len, struct amesh_conf **out,
    struct diag *d);
/* Accepts NULL. */
void conf_free(struct amesh_conf *c);

/* At most this many [dns] upstream resolvers (as resolv.conf's nameserver lines). */
#define DNS_MAX_UPSTREAMS 3
/* A [dns] upstream value ("IP", port 53, or "IP:PORT", "[IPv6]:PORT"). Returns 0 or
 * AMESH_ERR_INVALID. */
int conf_dns_upstream(const char *s, struct sockaddr_storage *out);

/* The keyword table (for docs and tests). */
const struct kw *conf_keywords(size_t *n);
/* Line where section.key was set, 0 if it holds its default, -1 if no such key. */
int conf_line(const struct amesh_conf *c, const char *section, const char *key);
/* True if the file has a [section] header. */
bool conf_has_section(const struct amesh_conf *c, const char *section);

#endif
