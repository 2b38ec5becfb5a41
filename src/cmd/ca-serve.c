/* SPDX-License-Identifier: Apache-2.0 */
/* amesh ca serve | token | join | revoke-node: the CA service and joining nodes (amesh-ca(8)). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "ca/client.h"
#include "ca/proto.h"
#include "ca/server.h"
#include "ca/token.h"
#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "telemetry/admin.h"
#include "telemetry/metrics.h"
#include "tls/ca.h"
#include "tls/cert.h"

static const char usage_serve[] = "amesh ca serve [-c FILE]";
static const char usage_token[] = "amesh ca token --node NAME [--ttl DURATION] [--dir DIR]";
static const char usage_join[] = "amesh ca join (--token TOKEN | --token-file FILE) "
    "[--ca-fingerprint sha256:HEX]";
static const char usage_revoke[] = "amesh ca revoke-node NAME [--undo] [--dir DIR]";

enum { O_NODE = 256, O_TTL, O_DIR, O_TOKEN, O_TOKEN_FILE, O_FPR, O_UNDO };

struct sopts {
	const char *node, *ttl, *dir, *token, *token_file, *fpr;
	bool undo;
	int nargs;
	char **args;
};

static int
parse(int argc, char **argv, const struct option *lo, const char *sub, const char *usage,
    struct sopts *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":", lo, NULL)) != -1) {
		switch (c) {
		case O_NODE: o->node = optarg; break;
		case O_TTL: o->ttl = optarg; break;
		case O_DIR: o->dir = optarg; break;
		case O_TOKEN: o->token = optarg; break;
		case O_TOKEN_FILE: o->token_file = optarg; break;
		case O_FPR: o->fpr = optarg; break;
		case O_UNDO: o->undo = true; break;
		case ':':
			return cmd_usage_error("ca", sub, usage, "option '%s' needs a value",
			    argv[optind]);
		default:
			return cmd_usage_error("ca", sub, usage, "unknown option '%s'", argv[optind]);
		}
	}
	o->nargs = argc - 1 - optind;
	o->args = argv + 1 + optind;
	return 0;
}

/* The config, or NULL after printing why. */
static struct amesh_conf *
load_conf(const struct cmd_globals *g, const char *what)
{
	struct amesh_conf *c = NULL;
	struct diag d;

	diag_init(&d);
	if (conf_load(g->conf_path, &c, &d) != 0) {
		diag_print(&d, stderr);
		fprintf(stderr, "amesh ca %s: cannot use %s\n", what, g->conf_path);
	}
	diag_clear(&d);
	return c;
}

/* --- serve --- */

struct cad {
	uv_loop_t *loop;
	struct amesh_conf *conf;
	struct registry_holder reg;
	struct cmd_registry regw; /* the registry: a directory or etcd */
	struct metrics *metrics;
	struct ca_server *srv;
	struct admin *admin;
	struct cmd_role role; /* signals, watchdog */
	bool stopping;
};

static void
describe(const struct registry *r, char *buf, size_t n)
{
	snprintf(buf, n, "%zu nodes, %zu workloads, %zu waypoints", r->n[REG_NODE],
	    r->n[REG_WORKLOAD], r->n[REG_WAYPOINT]);
}

static void
served(void *arg)
{
	struct cad *z = arg;

	cmd_role_close(&z->role);
	cmd_registry_stop(&z->regw);
	admin_stop(z->admin);
}

static void
serve_stop(void *arg)
{
	struct cad *z = arg;

	if (z->stopping)
		return;
	z->stopping = true;
	admin_set_ready(z->admin, false);
	cmd_role_stopping();
	log_info("ca: stopping");
	ca_server_stop(z->srv, served, z);
}

static void
serve_reload(void *arg)
{
	struct cad *z = arg;
	char why[512];

	log_info("ca: SIGHUP: reloading the registry and the CA directory %s", z->conf->ca.dir);
	cmd_registry_reload(&z->regw);
	if (ca_server_reload(z->srv, why, sizeof(why)) != 0)
		log_error("ca: reload refused, the CA in force stays: %s", why);
	else
		log_info("ca: signing with the CA in %s", z->conf->ca.dir);
}

static char *
serve_dump(void *arg)
{
	struct cad *z = arg;

	return cmd_registry_dump(&z->regw, ca_server_dump(z->srv));
}

static void
serve_quit(void *arg)
{
	struct cad *z = arg;

	cmd_call_soon(z->loop, serve_stop, z);
}

static const struct admin_ops ca_ops = {
	.config_dump = serve_dump,
	.quit = serve_quit,
};

static int
ca_serve(const struct cmd_globals *g, int argc, char **argv)
{
	static const struct option lo[] = { { NULL, 0, NULL, 0 } };
	static struct cad z;
	struct sopts o;
	struct diag d;
	char why[512], addr[64];
	int rc;

	if ((rc = parse(argc, argv, lo, "serve", usage_serve, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "serve", usage_serve, "unexpected argument '%s'",
		    o.args[0]);
	if ((z.conf = load_conf(g, "serve")) == NULL)
		return EXIT_FAIL;
	cmd_log_setup(g, z.conf);
	signal(SIGPIPE, SIG_IGN);
	z.loop = uv_default_loop();
	diag_init(&d);
	registry_holder_init(&z.reg);
	/* amesh-ca.service may write only [ca] dir: the registry's cache lives there. */
	if (conf_line(z.conf, "mesh", "registry_cache") <= 0) {
		free(z.conf->mesh.registry_cache);
		z.conf->mesh.registry_cache = path_join(z.conf->ca.dir, "registry.cache");
	}
	if (cmd_registry_load(&z.regw, z.loop, "ca", z.conf, &z.reg, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		log_error("ca: registry %s is invalid", z.conf->mesh.registry);
		return EXIT_FAIL;
	}
	if (metrics_new(&z.metrics) != 0)
		fatalx("out of memory");
	rc = ca_server_start(&(struct ca_server_cfg){
		.loop = z.loop,
		.dir = z.conf->ca.dir,
		.address = &z.conf->ca.address,
		.reg = &z.reg,
		.metrics = z.metrics,
		.max_ttl = z.conf->ca.max_ttl / 1000,
		.node_ttl = z.conf->ca.node_ttl / 1000,
		.handshake_timeout_ms = z.conf->ca.handshake_timeout,
	    }, &z.srv, why, sizeof(why));
	if (rc != 0) {
		log_error("ca: %s", why);
		if (z.srv != NULL) {
			uv_run(z.loop, UV_RUN_DEFAULT);
			ca_server_free(z.srv);
		}
		return EXIT_FAIL;
	}
	if (admin_start(z.loop, &(struct admin_cfg){
		.role = "ca",
		.admin_address = &z.conf->ca.admin_address,
		.metrics_address = &z.conf->ca.metrics_address,
		.readiness_address = &z.conf->ca.readiness_address,
		.metrics = z.metrics,
		.ops = &ca_ops,
		.arg = &z,
	    }, &z.admin) != 0)
		return EXIT_FAIL;
	cmd_registry_watch(&z.regw, z.metrics, describe);
	{
		struct sockaddr_storage ss;

		if (ca_server_addr(z.srv, &ss) == 0)
			sockaddr_str(&ss, addr, sizeof(addr));
		else
			snprintf(addr, sizeof(addr), "?");
	}
	log_info("ca: serving on %s, CA %s, registry %s", addr, z.conf->ca.dir,
	    z.conf->mesh.registry);
	admin_set_ready(z.admin, true);
	z.role.reload = serve_reload;
	z.role.stop = serve_stop;
	z.role.arg = &z;
	cmd_role_start(z.loop, &z.role);
	uv_run(z.loop, UV_RUN_DEFAULT);
	admin_free(z.admin);
	ca_server_free(z.srv);
	metrics_free(z.metrics);
	cmd_registry_free(&z.regw);
	registry_holder_destroy(&z.reg);
	uv_loop_close(z.loop);
	conf_free(z.conf);
	return EXIT_OK;
}

/* --- token --- */

/* The CA directory: --dir, else [ca] dir of the config. NULL after a message. */
static const char *
ca_dir(const struct cmd_globals *g, const char *dir, const char *sub, struct amesh_conf **conf)
{
	*conf = NULL;
	if (dir != NULL)
		return dir;
	if (access(g->conf_path, R_OK) != 0) {
		fprintf(stderr, "amesh ca %s: give --dir DIR (the CA directory), or a config with "
		    "[ca] dir (-c FILE; %s: %s)\n", sub, g->conf_path, strerror(errno));
		return NULL;
	}
	if ((*conf = load_conf(g, sub)) == NULL)
		return NULL;
	return (*conf)->ca.dir;
}

static int
ca_token(const struct cmd_globals *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "node", required_argument, NULL, O_NODE },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "dir", required_argument, NULL, O_DIR },
		{ NULL, 0, NULL, 0 },
	};
	struct amesh_conf *conf = NULL;
	struct registry *reg = NULL;
	struct sopts o;
	struct diag d;
	const char *dir, *perr;
	char tok[TOKEN_LEN + 1], why[512], t[32];
	uint64_t ttl_ms = TOKEN_TTL_DEFAULT * 1000ull;
	time_t now = time(NULL);
	int rc;

	if ((rc = parse(argc, argv, lo, "token", usage_token, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "token", usage_token, "unexpected argument '%s'",
		    o.args[0]);
	if (o.node == NULL)
		return cmd_usage_error("ca", "token", usage_token, "--node is required");
	if (!ca_valid_name(o.node))
		return cmd_usage_error("ca", "token", usage_token, "--node '%s': not a node name",
		    o.node);
	if (o.ttl != NULL && (parse_duration(o.ttl, &ttl_ms, &perr) != 0 || ttl_ms < 1000 ||
	    ttl_ms > TOKEN_TTL_MAX * 1000ull))
		return cmd_usage_error("ca", "token", usage_token, "--ttl '%s': a duration from 1s "
		    "to 7d", o.ttl);
	if ((dir = ca_dir(g, o.dir, "token", &conf)) == NULL)
		return EXIT_FAIL;
	rc = EXIT_FAIL;
	/* A token for a node the registry does not have could never be used: say so now. */
	if (conf != NULL) {
		diag_init(&d);
		if (registry_load_dir(conf->mesh.registry, &reg, &d) != 0) {
			diag_print(&d, stderr);
			fprintf(stderr, "amesh ca token: the registry %s is invalid\n",
			    conf->mesh.registry);
			diag_clear(&d);
			goto out;
		}
		diag_clear(&d);
		if (registry_find(reg, REG_NODE, o.node) == NULL) {
			fprintf(stderr, "amesh ca token: node %s is not in the registry %s: add "
			    "[node \"%s\"] first\n", o.node, conf->mesh.registry, o.node);
			goto out;
		}
	}
	if (node_revoked(dir, o.node)) {
		fprintf(stderr, "amesh ca token: node %s is revoked (amesh ca revoke-node --undo "
		    "%s)\n", o.node, o.node);
		goto out;
	}
	if (token_create(dir, o.node, ttl_ms / 1000, now, tok, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca token: %s\n", why);
		goto out;
	}
	fprintf(stderr, "join token for node %s, single use, valid until %s; on the node: "
	    "amesh ca join --token-file FILE (or AMESH_JOIN_TOKEN=...)\n", o.node,
	    iso_time(now + (time_t)(ttl_ms / 1000), t, sizeof(t)));
	printf("%s\n", tok);
	mbedtls_platform_zeroize(tok, sizeof(tok));
	rc = EXIT_OK;
out:
	registry_unref(reg);
	conf_free(conf);
	return rc;
}

/* --- join --- */

static int
read_token(const struct sopts *o, char *tok, size_t len)
{
	const char *env = getenv("AMESH_JOIN_TOKEN");

	if (o->token != NULL) {
		snprintf(tok, len, "%s", o->token);
	} else if (o->token_file != NULL) {
		FILE *f = strcmp(o->token_file, "-") == 0 ? stdin : fopen(o->token_file, "re");

		if (f == NULL) {
			fprintf(stderr, "amesh ca join: %s: %s\n", o->token_file, strerror(errno));
			return -1;
		}
		if (fgets(tok, (int)len, f) == NULL)
			tok[0] = '\0';
		if (f != stdin)
			fclose(f);
	} else if (env != NULL) {
		snprintf(tok, len, "%s", env);
	} else {
		return 1;
	}
	tok[strcspn(tok, " \r\n")] = '\0';
	return 0;
}

static int
write_with_dirs(const char *path, const void *data, size_t len, mode_t mode, char *why,
    size_t whylen)
{
	char *dir = path_dirname(path), *failed = NULL;
	int r = path_mkdir_parents(dir, 0755, &failed);

	if (r == 0 && mkdir(dir, mode == 0600 ? 0700 : 0755) != 0 && errno != EEXIST)
		r = -errno;
	if (r != 0) {
		snprintf(why, whylen, "cannot create %s: %s", failed ? failed : dir,
		    amesh_strerror(r));
		free(failed);
		free(dir);
		return r;
	}
	free(failed);
	free(dir);
	return ca_write_file(path, data, len, mode, true, why, whylen);
}

static int
ca_join(const struct cmd_globals *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "token", required_argument, NULL, O_TOKEN },
		{ "token-file", required_argument, NULL, O_TOKEN_FILE },
		{ "ca-fingerprint", required_argument, NULL, O_FPR },
		{ NULL, 0, NULL, 0 },
	};
	struct amesh_conf *c;
	struct sopts o;
	struct ca_client_cfg cc = { 0 };
	struct ca_client_resp resp = { 0 };
	mbedtls_x509_crt bundle, chain;
	mbedtls_pk_context key;
	char tok[256], auth[300], id[SPIFFE_ID_MAX], why[2048], t[32], *csr = NULL;
	unsigned char keypem[1024];
	const char *headers[3];
	bool have_bundle;
	size_t csrlen = 0;
	int rc, r;

	if ((rc = parse(argc, argv, lo, "join", usage_join, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "join", usage_join, "unexpected argument '%s'",
		    o.args[0]);
	if ((r = read_token(&o, tok, sizeof(tok))) < 0)
		return EXIT_FAIL;
	if (r > 0 || tok[0] == '\0')
		return cmd_usage_error("ca", "join", usage_join, "which token? Give --token, "
		    "--token-file or AMESH_JOIN_TOKEN (amesh ca token --node NAME on the CA host)");
	if (o.fpr != NULL && (strncmp(o.fpr, "sha256:", 7) != 0 || strlen(o.fpr) != 71 ||
	    strspn(o.fpr + 7, "0123456789abcdefABCDEF") != 64))
		return cmd_usage_error("ca", "join", usage_join, "--ca-fingerprint '%s': expected "
		    "sha256: and 64 hex digits (amesh ca show ROOT prints it)", o.fpr);
	if ((c = load_conf(g, "join")) == NULL)
		return EXIT_FAIL;
	cmd_log_setup(g, c);
	rc = EXIT_FAIL;
	mbedtls_x509_crt_init(&bundle);
	mbedtls_x509_crt_init(&chain);
	mbedtls_pk_init(&key);
	if (c->mesh.node == NULL) {
		fprintf(stderr, "amesh ca join: %s has no [mesh] node: which node is this?\n",
		    c->path);
		goto out;
	}
	if (c->identity.ca_address.n == 0) {
		fprintf(stderr, "amesh ca join: %s has no [identity] ca_address: where is the CA?\n",
		    c->path);
		goto out;
	}
	have_bundle = access(c->mesh.trust_bundle, R_OK) == 0;
	if (have_bundle && cert_load_chain(c->mesh.trust_bundle, &bundle, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca join: trust bundle: %s\n", why);
		goto out;
	}
	if (!have_bundle && o.fpr == NULL) {
		fprintf(stderr, "amesh ca join: no trust bundle at %s: give --ca-fingerprint "
		    "sha256:... (the root's, from amesh ca show on the CA host) so the CA can be "
		    "checked, or install the bundle first\n", c->mesh.trust_bundle);
		goto out;
	}
	spiffe_format_node(id, sizeof(id), c->mesh.trust_domain, c->mesh.node);
	if (ca_csr_new(id, &key, &csr, &csrlen, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca join: %s\n", why);
		goto out;
	}
	cc.addrs = c->identity.ca_address.v;
	cc.naddrs = c->identity.ca_address.n;
	cc.trust_domain = c->mesh.trust_domain;
	cc.bundle = have_bundle ? &bundle : NULL;
	cc.pin = o.fpr;
	cc.timeout_ms = c->identity.ca_timeout;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok);
	headers[0] = auth;
	headers[1] = "Content-Type: " CA_TYPE_CSR;
	headers[2] = NULL;
	r = ca_client_request(&cc, "POST", CA_PATH_JOIN, headers, csr, csrlen, &resp, why,
	    sizeof(why));
	mbedtls_platform_zeroize(auth, sizeof(auth));
	mbedtls_platform_zeroize(tok, sizeof(tok));
	if (r != 0) {
		fprintf(stderr, "amesh ca join: cannot reach the CA: %s\n", why);
		goto out;
	}
	if (resp.status != 200) {
		fprintf(stderr, "amesh ca join: the CA at %s refused (%u): %s", resp.addr,
		    resp.status, resp.body);
		goto out;
	}
	if (mbedtls_x509_crt_parse(&chain, (const unsigned char *)resp.body, resp.body_len + 1) != 0 ||
	    mbedtls_pk_check_pair(&chain.pk, &key) != 0) {
		fprintf(stderr, "amesh ca join: the CA at %s sent a certificate that is not for "
		    "this key\n", resp.addr);
		goto out;
	}
	if (!have_bundle) {
		/* The bundle, over a connection checked against the same pin. */
		struct ca_client_resp br = { 0 };
		mbedtls_x509_crt nb;
		uint32_t flags = 0;

		mbedtls_x509_crt_init(&nb);
		r = ca_client_request(&cc, "GET", CA_PATH_BUNDLE, NULL, NULL, 0, &br, why,
		    sizeof(why));
		if (r != 0 || br.status != 200 || mbedtls_x509_crt_parse(&nb,
		    (const unsigned char *)br.body, br.body_len + 1) != 0 ||
		    mbedtls_x509_crt_verify(&chain, &nb, NULL, NULL, &flags, NULL, NULL) != 0) {
			fprintf(stderr, "amesh ca join: cannot get a trust bundle that the new "
			    "certificate chains to: %s\n", r != 0 ? why : "bad answer");
			mbedtls_x509_crt_free(&nb);
			ca_client_resp_free(&br);
			goto out;
		}
		mbedtls_x509_crt_free(&nb);
		if (write_with_dirs(c->mesh.trust_bundle, br.body, br.body_len, 0644, why,
		    sizeof(why)) != 0) {
			fprintf(stderr, "amesh ca join: %s\n", why);
			ca_client_resp_free(&br);
			goto out;
		}
		printf("wrote the trust bundle %s\n", c->mesh.trust_bundle);
		ca_client_resp_free(&br);
	}
	if (mbedtls_pk_write_key_pem(&key, keypem, sizeof(keypem)) != 0 ||
	    write_with_dirs(c->identity.node_key, keypem, strlen((char *)keypem), 0600, why,
	    sizeof(why)) != 0 ||
	    write_with_dirs(c->identity.node_cert, resp.body, resp.body_len, 0644, why,
	    sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca join: %s\n", why);
		mbedtls_platform_zeroize(keypem, sizeof(keypem));
		goto out;
	}
	mbedtls_platform_zeroize(keypem, sizeof(keypem));
	printf("joined as %s (CA %s), certificate valid until %s\n", id, resp.addr,
	    iso_time(cert_not_after(&chain), t, sizeof(t)));
	printf("wrote %s and %s (mode 0600)\n", c->identity.node_cert, c->identity.node_key);
	rc = EXIT_OK;
out:
	free(csr);
	ca_client_resp_free(&resp);
	mbedtls_pk_free(&key);
	mbedtls_x509_crt_free(&chain);
	mbedtls_x509_crt_free(&bundle);
	conf_free(c);
	return rc;
}

/* --- revoke-node --- */

static int
ca_revoke(const struct cmd_globals *g, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "dir", required_argument, NULL, O_DIR },
		{ "undo", no_argument, NULL, O_UNDO },
		{ NULL, 0, NULL, 0 },
	};
	struct amesh_conf *conf = NULL;
	struct sopts o;
	const char *dir;
	char why[512];
	int rc;

	if ((rc = parse(argc, argv, lo, "revoke-node", usage_revoke, &o)) != 0)
		return rc;
	if (o.nargs != 1)
		return cmd_usage_error("ca", "revoke-node", usage_revoke, o.nargs == 0 ?
		    "which node?" : "one node at a time");
	if (!ca_valid_name(o.args[0]))
		return cmd_usage_error("ca", "revoke-node", usage_revoke, "'%s': not a node name",
		    o.args[0]);
	if ((dir = ca_dir(g, o.dir, "revoke-node", &conf)) == NULL)
		return EXIT_FAIL;
	rc = EXIT_OK;
	if (node_revoke(dir, o.args[0], o.undo, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca revoke-node: %s\n", why);
		rc = EXIT_FAIL;
	} else if (o.undo) {
		printf("node %s may join and obtain identities again\n", o.args[0]);
	} else {
		printf("node %s revoked: the CA refuses it from now on; its certificates end at "
		    "their TTL\n", o.args[0]);
	}
	conf_free(conf);
	return rc;
}

int
cmd_ca_fleet(const struct cmd_globals *g, int argc, char **argv)
{
	const char *sub = argv[1];

	if (strcmp(sub, "serve") == 0)
		return ca_serve(g, argc, argv);
	if (strcmp(sub, "token") == 0)
		return ca_token(g, argc, argv);
	if (strcmp(sub, "join") == 0)
		return ca_join(g, argc, argv);
	if (strcmp(sub, "revoke-node") == 0)
		return ca_revoke(g, argc, argv);
	return -1;
}
