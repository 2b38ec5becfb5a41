/* SPDX-License-Identifier: Apache-2.0 */
/* amesh ca: create a mesh CA and its intermediates, issue workload and node identities offline, and
 * show certificates. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "core/err.h"
#include "core/util.h"
#include "tls/ca.h"
#include "tls/cert.h"

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_CA_DAYS 3650
#define DEFAULT_ISSUE_DAYS 30
#define DEFAULT_INTERMEDIATE_DAYS 365

static const char usage_init[] = "amesh ca init --dir DIR [--trust-domain TD] [--days N]";
static const char usage_intermediate[] = "amesh ca intermediate --root-dir ROOT --dir DIR "
    "--name NAME [--days N]";
static const char usage_issue[] = "amesh ca issue --dir DIR (--namespace NS "
    "--service-account SA | --node NAME) --out DIR [--days N]";
static const char usage_show[] = "amesh ca show FILE";

enum {
	OPT_DIR = 256, OPT_TRUST_DOMAIN, OPT_DAYS, OPT_NAMESPACE, OPT_SA, OPT_OUT, OPT_ROOT_DIR,
	OPT_NAME, OPT_NODE,
};

struct ca_opts {
	const char *dir, *trust_domain, *ns, *sa, *out, *days, *root_dir, *name, *node;
	int nargs;
	char **args;
};

/*
 * getopt_long over argv[1..]: argv[1] is the subcommand, which getopt takes as its program name.
 * Returns 0 or EXIT_USAGE (after the message).
 */
static int
parse_opts(int argc, char **argv, const struct option *longopts, const char *usage,
    struct ca_opts *o)
{
	const char *sub = argv[1];
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_DIR: o->dir = optarg; break;
		case OPT_TRUST_DOMAIN: o->trust_domain = optarg; break;
		case OPT_DAYS: o->days = optarg; break;
		case OPT_NAMESPACE: o->ns = optarg; break;
		case OPT_SA: o->sa = optarg; break;
		case OPT_OUT: o->out = optarg; break;
		case OPT_ROOT_DIR: o->root_dir = optarg; break;
		case OPT_NAME: o->name = optarg; break;
		case OPT_NODE: o->node = optarg; break;
		case ':':
			return cmd_usage_error("ca", sub, usage, "option '%s' needs a value", argv[optind]);
		default:
			if (optopt != 0)
				return cmd_usage_error("ca", sub, usage, "unknown option '-%c'", optopt);
			return cmd_usage_error("ca", sub, usage, "unknown option '%s'", argv[optind]);
		}
	}
	o->nargs = argc - 1 - optind;
	o->args = argv + 1 + optind;
	return 0;
}

/* Parses a day count 1..CA_DAYS_MAX, or dflt when s is NULL. Returns 0 or -1. */
static int
parse_days(const char *s, unsigned dflt, unsigned *out)
{
	unsigned long v;
	char *end;

	*out = dflt;
	if (s == NULL)
		return 0;
	if (*s < '0' || *s > '9')
		return -1;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v == 0 || v > CA_DAYS_MAX)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* "WHAT fingerprint sha256:..." of each certificate of list (what may be ""). */
static void
print_fingerprints(const char *what, const mbedtls_x509_crt *list)
{
	char fp[CERT_FINGERPRINT_LEN];

	for (const mbedtls_x509_crt *c = list; c != NULL && c->raw.p != NULL; c = c->next)
		if (cert_fingerprint(c, fp, sizeof(fp)) == 0)
			printf("%s%sfingerprint %s\n", what, *what ? " " : "", fp);
}

static int
ca_init(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "trust-domain", required_argument, NULL, OPT_TRUST_DOMAIN },
		{ "days", required_argument, NULL, OPT_DAYS },
		{ NULL, 0, NULL, 0 },
	};
	struct ca_opts o;
	struct ca *ca = NULL;
	unsigned days;
	char why[512], t[32];
	int rc;

	if ((rc = parse_opts(argc, argv, longopts, usage_init, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "init", usage_init, "unexpected argument '%s'", o.args[0]);
	if (o.dir == NULL)
		return cmd_usage_error("ca", "init", usage_init, "--dir is required");
	if (o.trust_domain == NULL)
		o.trust_domain = DEFAULT_TRUST_DOMAIN;
	if (!ca_valid_trust_domain(o.trust_domain))
		return cmd_usage_error("ca", "init", usage_init, "--trust-domain '%s': use lower-case letters, "
		    "digits, '.', '-' and '_', at most %d", o.trust_domain, CA_TRUST_DOMAIN_MAX);
	if (parse_days(o.days, DEFAULT_CA_DAYS, &days) != 0)
		return cmd_usage_error("ca", "init", usage_init, "--days '%s': expected 1-%d", o.days,
		    CA_DAYS_MAX);
	rc = EXIT_FAIL;
	if (ca_create(o.trust_domain, days, time(NULL), &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca init: %s\n", why);
		goto out;
	}
	if (ca_save(ca, o.dir, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca init: %s%s\n", why,
		    strstr(why, "already exists") ? " (refusing to overwrite a CA)" : "");
		goto out;
	}
	printf("created %s/%s: CA of trust domain %s, valid until %s\n", o.dir, CA_CRT_FILE,
	    o.trust_domain, iso_time(cert_not_after(&ca->crt), t, sizeof(t)));
	printf("created %s/%s (mode 0600): keep it secret\n", o.dir, CA_KEY_FILE);
	print_fingerprints("", &ca->roots);
	rc = EXIT_OK;
out:
	ca_free(ca);
	return rc;
}

static int
ca_intermediate(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "root-dir", required_argument, NULL, OPT_ROOT_DIR },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "name", required_argument, NULL, OPT_NAME },
		{ "days", required_argument, NULL, OPT_DAYS },
		{ NULL, 0, NULL, 0 },
	};
	struct ca_opts o;
	struct ca *root = NULL, *ca = NULL;
	unsigned days;
	char why[768], t[32];
	int rc;

	if ((rc = parse_opts(argc, argv, longopts, usage_intermediate, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "intermediate", usage_intermediate,
		    "unexpected argument '%s'", o.args[0]);
	if (o.root_dir == NULL || o.dir == NULL || o.name == NULL)
		return cmd_usage_error("ca", "intermediate", usage_intermediate, "%s is required",
		    o.root_dir == NULL ? "--root-dir" : o.dir == NULL ? "--dir" : "--name");
	if (!ca_valid_name(o.name))
		return cmd_usage_error("ca", "intermediate", usage_intermediate, "--name '%s': use "
		    "letters, digits, '.', '-' and '_', at most %d", o.name, CA_NAME_MAX);
	if (parse_days(o.days, DEFAULT_INTERMEDIATE_DAYS, &days) != 0)
		return cmd_usage_error("ca", "intermediate", usage_intermediate,
		    "--days '%s': expected 1-%d", o.days, CA_DAYS_MAX);
	rc = EXIT_FAIL;
	if (ca_load(o.root_dir, &root, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca intermediate: %s\n", why);
		goto out;
	}
	if (!root->is_root) {
		fprintf(stderr, "amesh ca intermediate: %s holds the intermediate CA '%s', not a root "
		    "(an intermediate signs no CA)\n", o.root_dir, root->name);
		goto out;
	}
	if (ca_create_intermediate(root, o.name, days, time(NULL), &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca intermediate: %s\n", why);
		goto out;
	}
	if (ca_save(ca, o.dir, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca intermediate: %s%s\n", why,
		    strstr(why, "already exists") ? " (refusing to overwrite a CA)" : "");
		goto out;
	}
	printf("created %s/%s: intermediate CA %s of trust domain %s, valid until %s\n", o.dir,
	    CA_CRT_FILE, o.name, ca->trust_domain,
	    iso_time(cert_not_after(&ca->crt), t, sizeof(t)));
	if (cert_not_after(&ca->crt) < time(NULL) + (time_t)days * 86400)
		fprintf(stderr, "amesh ca intermediate: warning: validity cut to the root's notAfter\n");
	printf("created %s/%s (mode 0600): keep it secret\n", o.dir, CA_KEY_FILE);
	printf("created %s/%s: the trust bundle (the root)\n", o.dir, CA_BUNDLE_FILE);
	print_fingerprints("root", &ca->roots);
	rc = EXIT_OK;
out:
	ca_free(ca);
	ca_free(root);
	return rc;
}

static int
ca_issue_cmd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "namespace", required_argument, NULL, OPT_NAMESPACE },
		{ "service-account", required_argument, NULL, OPT_SA },
		{ "node", required_argument, NULL, OPT_NODE },
		{ "out", required_argument, NULL, OPT_OUT },
		{ "days", required_argument, NULL, OPT_DAYS },
		{ NULL, 0, NULL, 0 },
	};
	struct ca_opts o;
	struct ca *ca = NULL;
	struct ca_issued *is = NULL;
	unsigned days;
	char why[768], t[32], *crt = NULL, *key = NULL;
	time_t now = time(NULL);
	bool replacing;
	int rc, r;

	if ((rc = parse_opts(argc, argv, longopts, usage_issue, &o)) != 0)
		return rc;
	if (o.nargs > 0)
		return cmd_usage_error("ca", "issue", usage_issue, "unexpected argument '%s'", o.args[0]);
	if (o.node != NULL && (o.ns != NULL || o.sa != NULL))
		return cmd_usage_error("ca", "issue", usage_issue, "--node and %s exclude each other",
		    o.ns != NULL ? "--namespace" : "--service-account");
	if (o.node == NULL && o.ns == NULL && o.sa == NULL)
		return cmd_usage_error("ca", "issue", usage_issue, "--namespace and "
		    "--service-account, or --node, are required");
	if (o.dir == NULL || o.out == NULL || (o.node == NULL && (o.ns == NULL || o.sa == NULL)))
		return cmd_usage_error("ca", "issue", usage_issue, "%s is required",
		    o.dir == NULL ? "--dir" : o.out == NULL ? "--out" :
		    o.ns == NULL ? "--namespace" : "--service-account");
	if (o.node != NULL && !ca_valid_name(o.node))
		return cmd_usage_error("ca", "issue", usage_issue, "--node '%s': use letters, digits, "
		    "'.', '-' and '_', at most %d", o.node, CA_NAME_MAX);
	if (o.node == NULL && (!ca_valid_name(o.ns) || !ca_valid_name(o.sa)))
		return cmd_usage_error("ca", "issue", usage_issue, "%s '%s': use letters, digits, '.', '-' "
		    "and '_', at most %d", ca_valid_name(o.ns) ? "--service-account" :
		    "--namespace", ca_valid_name(o.ns) ? o.sa : o.ns, CA_NAME_MAX);
	if (parse_days(o.days, DEFAULT_ISSUE_DAYS, &days) != 0)
		return cmd_usage_error("ca", "issue", usage_issue, "--days '%s': expected 1-%d", o.days,
		    CA_DAYS_MAX);
	rc = EXIT_FAIL;
	if (ca_load(o.dir, &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca issue: %s\n", why);
		goto out;
	}
	if (o.node != NULL)
		r = ca_issue_node(ca, o.node, days, now, &is, why, sizeof(why));
	else
		r = ca_issue(ca, o.ns, o.sa, days, now, &is, why, sizeof(why));
	if (r != 0) {
		if (o.node != NULL)
			fprintf(stderr, "amesh ca issue: node %s: %s\n", o.node, why);
		else
			fprintf(stderr, "amesh ca issue: %s/%s: %s\n", o.ns, o.sa, why);
		goto out;
	}
	if (o.node != NULL)
		r = asprintf(&crt, "%s/%s", o.out, CA_NODE_CRT_FILE) < 0 ||
		    asprintf(&key, "%s/%s", o.out, CA_NODE_KEY_FILE) < 0;
	else
		r = asprintf(&crt, "%s/%s/%s.crt", o.out, o.ns, o.sa) < 0 ||
		    asprintf(&key, "%s/%s/%s.key", o.out, o.ns, o.sa) < 0;
	if (r != 0) {
		fprintf(stderr, "amesh ca issue: out of memory\n");
		goto out;
	}
	replacing = access(crt, F_OK) == 0;
	if (ca_issued_write(is, o.out, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca issue: %s\n", why);
		goto out;
	}
	if (is->not_after < now + (time_t)days * 86400)
		fprintf(stderr, "amesh ca issue: warning: validity cut to the CA's own notAfter\n");
	printf("%s %s, valid until %s\n", replacing ? "rotated" : "issued", is->spiffe_id,
	    iso_time(is->not_after, t, sizeof(t)));
	printf("wrote %s (with the %s certificate)\n", crt, ca->is_root ? "CA" :
	    "intermediate CA");
	printf("wrote %s (mode 0600)\n", key);
	rc = EXIT_OK;
out:
	free(crt);
	free(key);
	ca_issued_free(is);
	ca_free(ca);
	return rc;
}

static int
ca_show(int argc, char **argv)
{
	static const struct option longopts[] = { { NULL, 0, NULL, 0 } };
	struct ca_opts o;
	mbedtls_x509_crt chain;
	const mbedtls_x509_crt *c;
	char why[512], buf[1024], id[SPIFFE_ID_MAX], t[32], fp[CERT_FINGERPRINT_LEN];
	int rc, n = 0, i = 0, r;

	if ((rc = parse_opts(argc, argv, longopts, usage_show, &o)) != 0)
		return rc;
	if (o.nargs != 1)
		return cmd_usage_error("ca", "show", usage_show, o.nargs == 0 ? "a FILE is required" :
		    "one FILE only");
	rc = EXIT_FAIL;
	if (cert_load_chain(o.args[0], &chain, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh ca show: %s: %s\n", o.args[0], why);
		goto out;
	}
	for (c = &chain; c != NULL && c->raw.p != NULL; c = c->next)
		n++;
	for (c = &chain; c != NULL && c->raw.p != NULL; c = c->next) {
		if (n > 1)
			printf("%scertificate %d of %d\n", i > 0 ? "\n" : "", i + 1, n);
		i++;
		if (mbedtls_x509_dn_gets(buf, sizeof(buf), &c->subject) < 0)
			snprintf(buf, sizeof(buf), "(cannot print)");
		printf("subject     %s\n", buf);
		r = cert_spiffe_id(c, id, sizeof(id));
		printf("spiffe id   %s\n", r == 0 ? id : r == AMESH_ERR_NOTFOUND ? "(none)" :
		    "(invalid: malformed or more than one URI SAN)");
		if (mbedtls_x509_dn_gets(buf, sizeof(buf), &c->issuer) < 0)
			snprintf(buf, sizeof(buf), "(cannot print)");
		printf("issuer      %s\n", buf);
		if (mbedtls_x509_serial_gets(buf, sizeof(buf), &c->serial) < 0)
			snprintf(buf, sizeof(buf), "(cannot print)");
		printf("serial      %s\n", buf);
		printf("not before  %s\n", iso_time(cert_not_before(c), t, sizeof(t)));
		printf("not after   %s\n", iso_time(cert_not_after(c), t, sizeof(t)));
		cert_key_desc(&c->pk, buf, sizeof(buf));
		printf("key         %s\n", buf);
		printf("ca          %s\n", c->ca_istrue ? "yes" : "no");
		if (cert_fingerprint(c, fp, sizeof(fp)) == 0)
			printf("fingerprint %s\n", fp);
	}
	rc = EXIT_OK;
out:
	mbedtls_x509_crt_free(&chain);
	return rc;
}

/* The subcommands of amesh ca; one line each (fn NULL: cmd_ca_fleet). */
static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} subcommands[] = {
	{ "init", ca_init },
	{ "intermediate", ca_intermediate },
	{ "issue", ca_issue_cmd },
	{ "show", ca_show },
	/* The CA service and joining (cmd/ca-serve.c): they read amesh.conf. */
	{ "serve", NULL },
	{ "token", NULL },
	{ "join", NULL },
	{ "revoke-node", NULL },
};

static int
exec_ca(const struct cmd_globals *g, int argc, char **argv)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	char usage[256];
	size_t o;

	for (size_t i = 0; sub != NULL && i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		if (strcmp(sub, subcommands[i].name) == 0)
			return subcommands[i].fn != NULL ? subcommands[i].fn(argc, argv) :
			    cmd_ca_fleet(g, argc, argv);
	o = (size_t)snprintf(usage, sizeof(usage), "amesh ca ");
	for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]) && o < sizeof(usage);
	    i++)
		o += (size_t)snprintf(usage + o, sizeof(usage) - o, "%s%s", i ? "|" : "",
		    subcommands[i].name);
	if (o < sizeof(usage))
		snprintf(usage + o, sizeof(usage) - o, " [ARGS]");
	if (sub == NULL)
		return cmd_usage_error("ca", NULL, usage, "a subcommand is required");
	return cmd_usage_error("ca", NULL, usage, "unknown subcommand '%s'", sub);
}

const struct cmd_entry cmd_ca_entry = {
	"ca", "init|intermediate|issue|show|serve|token|join|revoke-node [ARGS]",
	"the mesh CA: create it, serve it, join nodes, issue identities offline",
	"  init --dir DIR [--trust-domain TD] [--days N]\n"
	"        create a root CA: DIR/ca.crt and DIR/ca.key (mode 0600). TD defaults to\n"
	"        " DEFAULT_TRUST_DOMAIN ", N to 3650 days. Never overwrites an existing CA.\n"
	"        Prints the root's fingerprint.\n"
	"  intermediate --root-dir ROOT --dir DIR --name NAME [--days N]\n"
	"        create an intermediate CA signed by the root in ROOT: DIR/ca.crt,\n"
	"        DIR/ca.key (mode 0600) and DIR/bundle.crt (the root). N defaults to 365\n"
	"        days. Never overwrites an existing CA.\n"
	"  issue --dir DIR --namespace NS --service-account SA --out CERT_DIR [--days N]\n"
	"        issue spiffe://TD/ns/NS/sa/SA: CERT_DIR/NS/SA.crt (the certificate, then\n"
	"        the CA's) and CERT_DIR/NS/SA.key (mode 0600). N defaults to 30 days.\n"
	"        An existing identity is replaced atomically (rotation).\n"
	"  issue --dir DIR --node NAME --out NODE_DIR [--days N]\n"
	"        issue the node identity spiffe://TD/amesh/node/NAME: NODE_DIR/node.crt\n"
	"        and NODE_DIR/node.key (mode 0600), for offline use.\n"
	"  show FILE\n"
	"        print each certificate in FILE: subject, SPIFFE ID, issuer, serial,\n"
	"        validity (UTC), key type, whether it is a CA, and its fingerprint.\n"
	"  serve [-c FILE]\n"
	"        run the CA service on [ca] address (15012), signing with the CA in\n"
	"        [ca] dir for the nodes of [mesh] registry (amesh-ca.service).\n"
	"  token --node NAME [--ttl DURATION] [--dir DIR]\n"
	"        print a single-use join token for node NAME (default lifetime 1h).\n"
	"  join (--token TOKEN | --token-file FILE) [--ca-fingerprint sha256:HEX]\n"
	"        on a node: obtain its node certificate from [identity] ca_address; the\n"
	"        key is made here. Without a trust bundle, pin the root's fingerprint.\n"
	"  revoke-node NAME [--undo] [--dir DIR]\n"
	"        the CA refuses node NAME from now on.\n",
	exec_ca, "amesh-ca(8)",
};
