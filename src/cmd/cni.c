/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh cni: the command line (add, del, list, check) over the enrollment of cni/enroll.h, and
 * the entry of the chained CNI plugin (cni/plugin.h). Options and printing only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "cni/enroll.h"
#include "cni/plugin.h"
#include "config/kw.h"
#include "core/diag.h"
#include "core/log.h"
#include "nft/rules.h"

/* --- command line ---------------------------------------------------------------------------- */

static const char usage_add[] =
    "amesh cni add --netns PATH --workload NAME [--mode ztunnel|sidecar]";
static const char usage_del[] =
    "amesh cni del --workload NAME | --netns PATH [--mode ztunnel|sidecar]";
static const char usage_list[] = "amesh cni list";
static const char usage_check[] = "amesh cni check";

enum { OPT_NETNS = 256, OPT_WORKLOAD, OPT_MODE };

struct cli_opts {
	const char *netns, *workload;
	bool sidecar; /* --mode sidecar: the namespace's own amesh sidecar serves it */
};

/* getopt_long over argv[1..] (argv[1] is the subcommand). Returns 0 or EXIT_USAGE. */
static int
parse_opts(int argc, char **argv, const char *usage, bool want_netns, bool want_workload,
    struct cli_opts *o)
{
	static const struct option longopts[] = {
		{ "netns", required_argument, NULL, OPT_NETNS },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argv[1];
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_NETNS:
			o->netns = optarg; /* checked below: del takes it with --mode sidecar */
			break;
		case OPT_WORKLOAD:
			if (!want_workload)
				return cmd_usage_error("cni", sub, usage, "unknown option '--workload'");
			o->workload = optarg;
			break;
		case OPT_MODE:
			if (strcmp(sub, "add") != 0 && strcmp(sub, "del") != 0)
				return cmd_usage_error("cni", sub, usage, "unknown option '--mode'");
			if (strcmp(optarg, "sidecar") != 0 && strcmp(optarg, "ztunnel") != 0)
				return cmd_usage_error("cni", sub, usage, "--mode '%s': ztunnel or sidecar",
				    optarg);
			o->sidecar = strcmp(optarg, "sidecar") == 0;
			break;
		case ':':
			return cmd_usage_error("cni", sub, usage, "option '%s' needs a value", argv[optind]);
		default:
			if (optopt != 0)
				return cmd_usage_error("cni", sub, usage, "unknown option '-%c'", optopt);
			return cmd_usage_error("cni", sub, usage, "unknown option '%s'", argv[optind]);
		}
	}
	if (optind < argc - 1)
		return cmd_usage_error("cni", sub, usage, "unexpected argument '%s'", argv[optind + 1]);
	/* cni del --netns: the namespace rather than the workload (a sidecar's, which no ztunnel
	 * knows of, or whatever an interrupted add or del left). */
	if (strcmp(sub, "del") == 0 && (o->sidecar || o->netns != NULL)) {
		if (o->netns == NULL)
			return cmd_usage_error("cni", sub, usage, "--mode sidecar needs --netns");
		if (o->workload != NULL)
			return cmd_usage_error("cni", sub, usage, "give --workload or --netns, not "
			    "both");
		want_workload = false;
	} else if (o->netns != NULL && !want_netns) {
		return cmd_usage_error("cni", sub, usage, "unknown option '--netns'");
	}
	if (want_netns && o->netns == NULL)
		return cmd_usage_error("cni", sub, usage, "--netns is required");
	if (want_workload && o->workload == NULL)
		return cmd_usage_error("cni", sub, usage, "--workload is required");
	if (o->netns != NULL && o->netns[0] != '/')
		return cmd_usage_error("cni", sub, usage, "--netns '%s': give an absolute path, such as "
		    "/run/netns/NAME or /proc/PID/ns/net", o->netns);
	if (o->workload != NULL && !kw_is_hostname(o->workload))
		return cmd_usage_error("cni", sub, usage, "--workload '%s': not a workload name", o->workload);
	return 0;
}

static int
cli_load(const struct cmd_globals *g, const char *sub, struct cni_ctx *x, bool reg_optional)
{
	struct cni_fail f;
	int r;

	if ((r = cni_ctx_load(x, g->conf_path, reg_optional, &f)) != 0) {
		fprintf(stderr, "amesh cni %s: %s\n", sub, f.details);
		return r;
	}
	cmd_log_setup(g, x->conf);
	return 0;
}

static int
cli_add(const struct cmd_globals *g, int argc, char **argv)
{
	const struct reg_workload *w;
	struct cli_opts o;
	struct cni_ctx x;
	struct cni_fail f;
	enum cni_wl_state st;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_add, true, true, &o)) != 0)
		return rc;
	if (cli_load(g, "add", &x, false) != 0)
		return EXIT_FAIL;
	rc = EXIT_FAIL;
	if ((st = cni_workload_state(&x, o.workload, &w)) != CNI_WL_OK) {
		cni_workload_fail(&x, o.workload, st, w, &f);
		fprintf(stderr, "amesh cni add: %s\n", f.details);
		goto out;
	}
	if (o.sidecar) {
		if (cni_sidecar_capture(&x, w, o.netns, &f) != 0) {
			fprintf(stderr, "amesh cni add: %s\n", f.details);
			goto out;
		}
		printf("captured %s/%s for its sidecar (netns %s): start amesh-sidecar@%s\n",
		    w->namespace, w->h.name, o.netns, w->h.name);
		rc = EXIT_OK;
		goto out;
	}
	if (cni_enroll(&x, w, o.netns, &f) != 0) {
		fprintf(stderr, "amesh cni add: %s\n", f.details);
		goto out;
	}
	printf("enrolled %s/%s (netns %s)\n", w->namespace, w->h.name, o.netns);
	rc = EXIT_OK;
out:
	cni_ctx_free(&x);
	return rc;
}

static int
cli_del(const struct cmd_globals *g, int argc, char **argv)
{
	struct cli_opts o;
	struct cni_ctx x;
	struct cni_fail f;
	bool done;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_del, false, true, &o)) != 0)
		return rc;
	/* The workload may have left the registry already: del works without it. */
	if (cli_load(g, "del", &x, true) != 0)
		return EXIT_FAIL;
	if (o.netns != NULL) {
		char *name;

		rc = EXIT_OK;
		if (cni_release(&x, o.netns, o.sidecar, &name, &f) != 0) {
			fprintf(stderr, "amesh cni del: %s\n", f.details);
			rc = EXIT_FAIL;
		} else if (name != NULL) {
			printf("removed %s (netns %s)\n", name, o.netns);
		} else {
			printf("removed the rules of %s\n", o.netns);
		}
		free(name);
		cni_ctx_free(&x);
		return rc;
	}
	if (cni_unenroll(&x, o.workload, NULL, &done, &f) != 0) {
		fprintf(stderr, "amesh cni del: %s\n", f.details);
		rc = EXIT_FAIL;
	} else {
		printf(done ? "removed %s\n" : "%s: not enrolled\n", o.workload);
		rc = EXIT_OK;
	}
	cni_ctx_free(&x);
	return rc;
}

static int
cli_list(const struct cmd_globals *g, int argc, char **argv)
{
	struct handoff_list el;
	struct cli_opts o;
	struct cni_ctx x;
	struct cni_fail f;
	bool from_records;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_list, false, false, &o)) != 0)
		return rc;
	if (cli_load(g, "list", &x, true) != 0)
		return EXIT_FAIL;
	if (cni_enrolled_get(&x, &el, &from_records, &f) != 0) {
		fprintf(stderr, "amesh cni list: %s\n", f.details);
		cni_ctx_free(&x);
		return EXIT_FAIL;
	}
	if (from_records)
		fprintf(stderr, "amesh cni list: ztunnel not reachable at %s; showing the records in "
		    "%s\n", x.conf->cni.socket, x.conf->ztunnel.state_dir);
	for (size_t i = 0; i < el.n; i++)
		printf("%s %s %s%s%s\n", el.v[i].workload, el.v[i].netns, el.v[i].state,
		    el.v[i].why[0] ? ": " : "", el.v[i].why);
	handoff_list_free(&el);
	cni_ctx_free(&x);
	return EXIT_OK;
}

static int
cli_check(const struct cmd_globals *g, int argc, char **argv)
{
	struct handoff_list el;
	struct cli_opts o;
	struct cni_ctx x;
	struct cni_fail f;
	struct diag d;
	bool from_records;
	size_t problems = 0;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_check, false, false, &o)) != 0)
		return rc;
	if (cli_load(g, "check", &x, false) != 0)
		return EXIT_FAIL;
	if (cni_enrolled_get(&x, &el, &from_records, &f) != 0) {
		fprintf(stderr, "amesh cni check: %s\n", f.details);
		cni_ctx_free(&x);
		return EXIT_FAIL;
	}
	if (from_records) {
		fprintf(stderr, "amesh cni check: ztunnel not reachable at %s; checking the records "
		    "in %s\n", x.conf->cni.socket, x.conf->ztunnel.state_dir);
		problems++;
	}
	diag_init(&d);
	for (size_t i = 0; i < el.n; i++) {
		const struct handoff_entry *e = &el.v[i];
		const struct reg_workload *w;
		enum cni_wl_state st = cni_workload_state(&x, e->workload, &w);
		size_t before = diag_count(&d);
		char err[512];
		int fd;

		if (st != CNI_WL_OK) {
			cni_workload_fail(&x, e->workload, st, w, &f);
			diag_add(&d, e->netns, 0, "%s", f.details);
		}
		if (strcmp(e->state, "failed") == 0)
			diag_add(&d, e->netns, 0, "not served by the ztunnel, its traffic is refused: "
			    "%s", e->why);
		fd = open(e->netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			diag_add(&d, e->netns, 0, "cannot open: %s", strerror(errno));
		} else {
			if (nft_rules_check(fd, e->netns, &x.params, &d, err, sizeof(err)) != 0)
				diag_add(&d, e->netns, 0, "%s", err);
			close(fd);
		}
		if (diag_count(&d) == before) {
			printf("ok %s %s\n", e->workload, e->netns);
			continue;
		}
		for (size_t k = before; k < d.n; k++)
			fprintf(stderr, "amesh cni check: workload %s: %s\n", e->workload, d.msg[k]);
		problems++;
	}
	if (d.dropped > 0)
		fprintf(stderr, "amesh cni check: %zu more problems\n", d.dropped);
	diag_clear(&d);
	if (el.n == 0)
		printf("no workload enrolled\n");
	handoff_list_free(&el);
	cni_ctx_free(&x);
	return problems > 0 ? EXIT_FAIL : EXIT_OK;
}

static int
exec_cni(const struct cmd_globals *g, int argc, char **argv)
{
	if (argc < 2)
		return cmd_usage_error("cni", NULL, "amesh cni add|del|list|check [ARGS]",
		    "a subcommand is required");
	if (strcmp(argv[1], "add") == 0)
		return cli_add(g, argc, argv);
	if (strcmp(argv[1], "del") == 0)
		return cli_del(g, argc, argv);
	if (strcmp(argv[1], "list") == 0)
		return cli_list(g, argc, argv);
	if (strcmp(argv[1], "check") == 0)
		return cli_check(g, argc, argv);
	return cmd_usage_error("cni", NULL, "amesh cni add|del|list|check [ARGS]", "unknown subcommand '%s'",
	    argv[1]);
}

const struct cmd_entry cmd_cni_entry = {
	"cni", "add|del|list|check [ARGS]", "install interception and enroll workloads",
	"  add --netns PATH --workload NAME\n"
	"                        install the rules in PATH and enroll NAME with the ztunnel\n"
	"  add ... --mode sidecar\n"
	"                        install the rules only, for the namespace's own amesh sidecar\n"
	"  del --workload NAME   unenroll NAME and remove its rules\n"
	"  del --netns PATH      unenroll whatever workload PATH holds, or remove rules an\n"
	"                        interrupted add left there\n"
	"  del --mode sidecar --netns PATH\n"
	"                        remove the rules a sidecar's namespace got\n"
	"  list                  show the enrolled workloads: NAME NETNS STATE\n"
	"  check                 verify the rules of every enrolled workload\n",
	exec_cni, "amesh-cni(8)",
};


static void
plugin_log_setup(const char *conf_path, const struct amesh_conf *conf)
{
	struct cmd_globals g = { .conf_path = conf_path, .log_format = -1 };

	cmd_log_setup(&g, conf);
}

int
cmd_cni_plugin(void)
{
	return cni_plugin_main(plugin_log_setup);
}
