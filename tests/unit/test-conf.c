/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for config/conf.c and config/ini.c: defaults, the sample file, paths and every error message. */
#include "config.h"

#include <limits.h>
#include <unistd.h>

#include "config/conf.h"
#include "core/parse.h"
#include "runner.h"

static struct amesh_conf *
parse_ok(const char *text)
{
	struct amesh_conf *c;
	struct diag d;

	diag_init(&d);
	if (conf_parse_buffer("t.conf", text, strlen(text), &c, &d) != 0) {
		diag_print(&d, stderr);
		ASSERT(!"config did not parse");
	}
	diag_clear(&d);
	return c;
}

static const char *
addr(const struct sockaddr_storage *ss)
{
	static char buf[80];

	return sockaddr_str(ss, buf, sizeof(buf));
}

TEST(conf_defaults)
{
	struct amesh_conf *c = parse_ok("[mesh]\nnode = node-a\n");

	ASSERT_STREQ(c->mesh.trust_domain, "cluster.local");
	/* /etc, /var and /run unless configure was told otherwise (make distcheck does). */
	ASSERT_STREQ(c->mesh.trust_bundle, SYSCONFDIR "/amesh/ca.crt");
	ASSERT_STREQ(c->mesh.registry, SYSCONFDIR "/amesh/registry.d");
	ASSERT_STREQ(c->mesh.node, "node-a");
	ASSERT_STREQ(c->identity.cert_dir, LOCALSTATEDIR "/lib/amesh/certs");
	ASSERT_EQ(c->identity.expiry_warning, 7ULL * 86400 * 1000);
	ASSERT_EQ(c->log.level, 2);
	ASSERT(c->log.access_log);
	ASSERT(c->tls.record_offload);
	ASSERT_STREQ(c->ztunnel.socket, RUNSTATEDIR "/amesh/ztunnel.sock");
	ASSERT_STREQ(c->ztunnel.state_dir, RUNSTATEDIR "/amesh/workloads");
	ASSERT_EQ(c->ztunnel.proxy.outbound_port, 15001);
	ASSERT_EQ(c->ztunnel.proxy.inbound_plaintext_port, 15006);
	ASSERT_EQ(c->ztunnel.proxy.hbone_port, 15008);
	ASSERT_EQ(c->ztunnel.proxy.dns_port, 15053);
	ASSERT(!c->ztunnel.proxy.dns_capture); /* built in; the sample sets it on */
	ASSERT_STREQ(c->dns.domain, "cluster.local");
	ASSERT_EQ(c->dns.timeout, 5000);
	ASSERT_EQ(c->dns.upstream.n, 0);
	ASSERT_EQ(c->mesh.outbound, CONF_OUTBOUND_ALLOW_ANY);
	ASSERT_STREQ(addr(&c->ztunnel.proxy.admin_address), "127.0.0.1:15000");
	ASSERT_STREQ(addr(&c->ztunnel.proxy.metrics_address), "0.0.0.0:15020");
	ASSERT_STREQ(addr(&c->ztunnel.proxy.readiness_address), "0.0.0.0:15021");
	ASSERT_EQ(c->ztunnel.proxy.drain_timeout, 5000);
	ASSERT_EQ(c->ztunnel.proxy.pool_max_streams, 100);
	ASSERT_EQ(c->ztunnel.proxy.pool_idle_timeout, 300000);
	ASSERT_EQ(c->ztunnel.proxy.buffer_size, 65536);
	ASSERT_STREQ(c->waypoint.name, "default-wp");
	ASSERT_STREQ(addr(&c->waypoint.hbone_address), "0.0.0.0:15008");
	/* [cni] socket follows [ztunnel] socket unless set. */
	ASSERT_STREQ(c->cni.socket, c->ztunnel.socket);
	ASSERT_EQ(c->cni.on_unknown, CONF_ON_UNKNOWN_FAIL);
	ASSERT_EQ(conf_line(c, "mesh", "node"), 2);
	ASSERT_EQ(conf_line(c, "mesh", "registry"), 0);
	ASSERT_EQ(conf_line(c, "mesh", "nope"), -1);
	ASSERT(conf_has_section(c, "mesh") && !conf_has_section(c, "waypoint"));
	conf_free(c);

	c = parse_ok("[ztunnel]\nsocket = /tmp/z.sock\nadmin_address = [::1]:9000\n"
	    "drain_timeout = 250ms\nbuffer_size = 1M\n[log]\nformat = json\nlevel = debug\n"
	    "[mesh]\nnode = n1\n");
	ASSERT_STREQ(c->cni.socket, "/tmp/z.sock");
	ASSERT_STREQ(addr(&c->ztunnel.proxy.admin_address), "[::1]:9000");
	ASSERT_EQ(c->ztunnel.proxy.drain_timeout, 250);
	ASSERT_EQ(c->ztunnel.proxy.buffer_size, 1048576);
	ASSERT_EQ(c->log.format, 1);
	ASSERT_EQ(c->log.level, 3);
	conf_free(c);
	conf_free(NULL);
}

TEST(conf_sample_file)
{
	struct amesh_conf *c;
	struct diag d;
	char *path = NULL;

	diag_init(&d);
	ASSERT(asprintf(&path, "%s/etc/amesh.conf", TOP_SRCDIR) > 0);
	if (conf_load(path, &c, &d) != 0) {
		diag_print(&d, stderr);
		ASSERT(!"sample amesh.conf did not load");
	}
	ASSERT_STREQ(c->mesh.node, "node-a");
	/* Relative paths in the sample resolve next to it. */
	ASSERT(strstr(c->mesh.registry, "/etc/registry.d") != NULL);
	ASSERT(c->mesh.registry[0] == '/');
	ASSERT(access(c->mesh.registry, R_OK) == 0);
	ASSERT(strstr(c->mesh.trust_bundle, "/etc/ca.crt") != NULL);
	conf_free(c);
	free(path);

	/* A missing file says so with its name. */
	ASSERT(conf_load("/nonexistent/amesh.conf", &c, &d) < 0);
	ASSERT(c == NULL);
	ASSERT_STREQ(diag_first(&d), "/nonexistent/amesh.conf: cannot open: No such file or directory");
	diag_clear(&d);
}

TEST(conf_relative_paths)
{
	const char *dir = test_tmpdir();
	char *sub, *path, *want;
	struct amesh_conf *c;
	struct diag d;

	diag_init(&d);
	ASSERT(asprintf(&sub, "%s/sub", dir) > 0);
	path = strdup(test_write(sub, "a.conf", "[mesh]\nnode = n\nregistry = reg.d\n"
	    "trust_bundle = /abs/ca.crt\n[identity]\ncert_dir = ../certs\n"));
	ASSERT(conf_load(path, &c, &d) == 0);
	ASSERT(asprintf(&want, "%s/reg.d", sub) > 0);
	ASSERT_STREQ(c->mesh.registry, want);
	ASSERT_STREQ(c->mesh.trust_bundle, "/abs/ca.crt");
	free(want);
	ASSERT(asprintf(&want, "%s/../certs", sub) > 0);
	ASSERT_STREQ(c->identity.cert_dir, want);
	free(want);
	conf_free(c);

	/* Loaded through a relative name: still anchored at the file, made absolute. */
	ASSERT(chdir(dir) == 0);
	ASSERT(conf_load("sub/a.conf", &c, &d) == 0);
	ASSERT(asprintf(&want, "%s/reg.d", sub) > 0);
	ASSERT_STREQ(c->mesh.registry, want);
	free(want);
	conf_free(c);
	free(path);
	free(sub);
}

/* Each bad input yields exactly one message, with the file, the line and the reason. */
static const struct {
	const char *text, *error;
} conf_bad[] = {
	{ "[mesh]\nbogus = 1",
	    "t.conf:2: unknown key 'bogus' in [mesh]" },
	{ "[meshy]\nnode = a",
	    "t.conf:1: unknown section [meshy] (expected one of: mesh, identity, log, ztunnel, waypoint, sidecar, cni, ca, dns, tls)" },
	{ "node = a",
	    "t.conf:1: key 'node' outside of any section" },
	{ "[mesh]\nnode = a\n[mesh]",
	    "t.conf:3: section [mesh] appears twice (first at line 1)" },
	{ "[mesh]\nnode = a\nnode = b",
	    "t.conf:3: duplicate key 'node' in [mesh] (first set at line 2)" },
	{ "[ztunnel]\nhbone_port = 0",
	    "t.conf:2: [ztunnel] hbone_port: '0': port out of range 1-65535" },
	{ "[ztunnel]\nhbone_port = 70000",
	    "t.conf:2: [ztunnel] hbone_port: '70000': port out of range 1-65535" },
	{ "[ztunnel]\nhbone_port = abc",
	    "t.conf:2: [ztunnel] hbone_port: 'abc': expected a port number 1-65535" },
	{ "[ztunnel]\ndrain_timeout = 5",
	    "t.conf:2: [ztunnel] drain_timeout: '5': duration needs a unit (ms, s, m, h or d)" },
	{ "[ztunnel]\ndrain_timeout = 5 seconds",
	    "t.conf:2: [ztunnel] drain_timeout: '5 seconds': unknown duration unit (use ms, s, m, h or d)" },
	{ "[ztunnel]\ndrain_timeout = -5s",
	    "t.conf:2: [ztunnel] drain_timeout: '-5s': expected a duration such as 500ms, 10s, 5m, 2h or 1d" },
	{ "[ztunnel]\nbuffer_size = 64x",
	    "t.conf:2: [ztunnel] buffer_size: '64x': unknown size suffix (use k, M or G)" },
	{ "[ztunnel]\nbuffer_size = 1k",
	    "t.conf:2: [ztunnel] buffer_size: must be between 16k and 16M" },
	{ "[ztunnel]\nadmin_address = 127.0.0.1",
	    "t.conf:2: [ztunnel] admin_address: '127.0.0.1': expected ADDRESS:PORT" },
	{ "[ztunnel]\nadmin_address = ::1:15000",
	    "t.conf:2: [ztunnel] admin_address: '::1:15000': IPv6 address needs brackets: [ADDRESS]:PORT" },
	{ "[ztunnel]\nadmin_address = localhost:15000",
	    "t.conf:2: [ztunnel] admin_address: 'localhost:15000': expected an IPv4 or IPv6 address" },
	{ "[ztunnel]\nadmin_address = [127.0.0.1]:15000",
	    "t.conf:2: [ztunnel] admin_address: '[127.0.0.1]:15000': brackets are for IPv6 addresses" },
	{ "[ztunnel]\nmetrics_address = 0.0.0.0:0",
	    "t.conf:2: [ztunnel] metrics_address: '0.0.0.0:0': port out of range 1-65535" },
	{ "[log]\nlevel = loud",
	    "t.conf:2: [log] level: 'loud': expected one of error, warn, info, debug" },
	{ "[log]\nformat = xml",
	    "t.conf:2: [log] format: 'xml': expected one of text, json" },
	{ "[log]\naccess_log = maybe",
	    "t.conf:2: [log] access_log: 'maybe': expected on/off, yes/no, true/false or 1/0" },
	{ "[ztunnel]\npool_max_streams = 0",
	    "t.conf:2: [ztunnel] pool_max_streams: '0': expected an integer 1-1000" },
	{ "[ztunnel]\npool_max_streams = 5000",
	    "t.conf:2: [ztunnel] pool_max_streams: '5000': expected an integer 1-1000" },
	{ "[ztunnel]\nhbone_port = 15001",
	    "t.conf:2: [ztunnel] outbound_port and hbone_port are both 15001" },
	{ "[mesh]\ntrust_domain = Cluster_Local",
	    "t.conf:2: [mesh] trust_domain: 'Cluster_Local' is not a valid DNS name" },
	{ "[mesh]\nnode = ",
	    "t.conf:2: [mesh] node: empty value" },
	{ "[mesh]\nregistry =",
	    "t.conf:2: [mesh] registry: empty value" },
	{ "[mesh\nnode = a",
	    "t.conf:1: section header without closing ']'" },
	{ "[mesh] x\nnode = a",
	    "t.conf:1: unexpected text after section header" },
	{ "[mesh]\njust some words",
	    "t.conf:2: expected 'key = value' or '[section]'" },
	{ "[mesh]\nnode: a",
	    "t.conf:2: expected 'key = value' or '[section]'" },
	{ "[mesh]\n= a",
	    "t.conf:2: missing key name before '='" },
	{ "[cni]\non_unknown = ignore",
	    "t.conf:2: [cni] on_unknown: 'ignore': expected one of fail, skip" },
	{ "[sidecar]\nhbone_port = 15009",
	    "t.conf:2: [ztunnel] hbone_port 15008 and [sidecar] hbone_port 15009 differ: ztunnels "
	    "and sidecars reach each other on one HBONE port" },
	{ "[waypoint]\nhbone_address = 0.0.0.0:99999",
	    "t.conf:2: [waypoint] hbone_address: '0.0.0.0:99999': port out of range 1-65535" },
	{ "[mesh]\nnode = a ; comment\nlevel = x",
	    "t.conf:3: unknown key 'level' in [mesh]" },
	{ "[identity]\nexpiry_warning = 1y",
	    "t.conf:2: [identity] expiry_warning: '1y': unknown duration unit (use ms, s, m, h or d)" },
	{ "[waypoint \"x\"]\nname = a",
	    "t.conf:1: unknown section [waypoint \"x\"] (expected one of: mesh, identity, log, ztunnel, waypoint, sidecar, cni, ca, dns, tls)" },
	{ "[ztunnel]\nsocket =",
	    "t.conf:2: [ztunnel] socket: empty value" },
	{ "[waypoint]\nbuffer_size = 32M",
	    "t.conf:2: [waypoint] buffer_size: must be between 16k and 16M" },
	{ "[sidecar]\nworkload = w\ndns_port = 15006",
	    "t.conf:3: [sidecar] inbound_plaintext_port and dns_port are both 15006" },
	{ "[ztunnel]\nmax_connections = 0",
	    "t.conf:2: [ztunnel] max_connections: '0': expected an integer 1-1048576" },
	{ "[ztunnel]\nadmin_address = [::1]",
	    "t.conf:2: [ztunnel] admin_address: '[::1]': expected [IPv6]:PORT" },
	{ "[ztunnel]\nidle_timeout = 10ms5",
	    "t.conf:2: [ztunnel] idle_timeout: '10ms5': unknown duration unit (use ms, s, m, h or d)" },
	{ "[mesh]\nnode = a\n\n[log]\nlevel = debug\nlevel = info",
	    "t.conf:6: duplicate key 'level' in [log] (first set at line 5)" },
	{ "[mesh]\nnode = a\n; " "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx registry = /evil",
	    "t.conf:3: line too long (247 bytes; at most 198)" },
	{ "[mesh]\nnode = a\x00" "b\n", "t.conf:2: line contains a NUL byte" },
	{ "[ztunnel]\ndrain_timeout = 1.5s",
	    "t.conf:2: [ztunnel] drain_timeout: '1.5s': durations are whole numbers (write 1500ms, not 1.5s)" },
	{ "[ztunnel]\nconnect_timeout = 0s",
	    "t.conf:2: [ztunnel] connect_timeout: '0s': must be at least 1ms" },
	{ "[ mesh ]\nnode = a\nnodes = b",
	    "t.conf:3: unknown key 'nodes' in [mesh]" },
	{ "[mesh]\noutbound = deny",
	    "t.conf:2: [mesh] outbound: 'deny': expected one of allow_any, registry_only" },
	{ "[dns]\nupstream = 10.0.0.1, resolver.example",
	    "t.conf:2: [dns] upstream: 'resolver.example' is not an address (IP or IP:PORT, [IPv6]:PORT)" },
	{ "[dns]\nupstream = 10.0.0.1, 10.0.0.2, 10.0.0.3:5353, [fd00::1]:53",
	    "t.conf:2: [dns] upstream: at most 3 resolvers" },
};

TEST(conf_bad_inputs)
{
	ASSERT(sizeof(conf_bad) / sizeof(conf_bad[0]) >= 30);
	for (size_t i = 0; i < sizeof(conf_bad) / sizeof(conf_bad[0]); i++) {
		struct amesh_conf *c = (void *)1;
		struct diag d;
		/* The NUL-byte case needs its real length; the others are strings. */
		size_t len = strlen(conf_bad[i].text);

		if (strstr(conf_bad[i].error, "NUL byte") != NULL)
			len = strlen("[mesh]\nnode = a") + 3;
		diag_init(&d);
		if (conf_parse_buffer("t.conf", conf_bad[i].text, len, &c, &d) == 0 ||
		    c != NULL || diag_count(&d) != 1 ||
		    strcmp(diag_first(&d), conf_bad[i].error) != 0) {
			fprintf(stderr, "case %zu:\n%s\n--- got:\n", i, conf_bad[i].text);
			diag_print(&d, stderr);
			fprintf(stderr, "--- want:\n%s\n", conf_bad[i].error);
			exit(1);
		}
		diag_clear(&d);
	}
}

TEST(conf_all_errors_reported)
{
	const char *text = "[mesh]\nnode = a\nbogus = 1\n[ztunnel]\nhbone_port = 0\n"
	    "drain_timeout = 5\n[nope]\nx = 1\n[log]\nlevel = info\n";
	struct amesh_conf *c;
	struct diag d;

	diag_init(&d);
	ASSERT(conf_parse_buffer("t.conf", text, strlen(text), &c, &d) != 0);
	ASSERT_EQ(diag_count(&d), 4);
	ASSERT_STREQ(d.msg[0], "t.conf:3: unknown key 'bogus' in [mesh]");
	ASSERT_STREQ(d.msg[1], "t.conf:5: [ztunnel] hbone_port: '0': port out of range 1-65535");
	ASSERT_STREQ(d.msg[2], "t.conf:6: [ztunnel] drain_timeout: '5': duration needs a unit "
	    "(ms, s, m, h or d)");
	ASSERT_STREQ(d.msg[3], "t.conf:7: unknown section [nope] (expected one of: mesh, identity, "
	    "log, ztunnel, waypoint, sidecar, cni, ca, dns, tls)");
	diag_clear(&d);
}

TEST(conf_long_line_not_truncated)
{
	char text[1024], value[256];
	struct amesh_conf *c;
	struct diag d;

	/* A line of exactly the limit is accepted whole. */
	memset(value, 'a', sizeof(value));
	value[198 - strlen("node = ")] = '\0';
	value[60] = '.';
	value[120] = '.';
	value[180] = '.';
	snprintf(text, sizeof(text), "[mesh]\r\nnode = %s\r\n", value);
	diag_init(&d);
	if (conf_parse_buffer("t.conf", text, strlen(text), &c, &d) != 0) {
		diag_print(&d, stderr);
		ASSERT(!"198-byte line rejected");
	}
	ASSERT_STREQ(c->mesh.node, value);
	conf_free(c);
	/* One byte more is an error, not a silently shortened value. */
	snprintf(text, sizeof(text), "[mesh]\nnode = %sa\n", value);
	ASSERT(conf_parse_buffer("t.conf", text, strlen(text), &c, &d) != 0);
	ASSERT_STREQ(diag_first(&d), "t.conf:2: line too long (199 bytes; at most 198)");
	diag_clear(&d);
	/* UTF-8 BOM and CRLF line ends are fine. */
	c = parse_ok("\xEF\xBB\xBF[mesh]\r\nnode = bom\r\n");
	ASSERT_STREQ(c->mesh.node, "bom");
	conf_free(c);
}
