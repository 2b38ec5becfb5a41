/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh registry push|pull|diff|watch: the registry on etcd from the command line (amesh(8),
 * REGISTRY; amesh-registry(5), ETCD). The etcd client blocks here; the roles use etcd/feed.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/etcdurl.h"
#include "config/ini.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "etcd/client.h"
#include "etcd/feed.h"
#include "etcd/regstore.h"

static const char usage[] = "[-c FILE] push [--force] DIR | pull DIR | diff DIR | watch";

/* What every subcommand needs: the config, the etcd:// source, a client. */
struct reg_ctx {
	const char *sub;
	struct amesh_conf *conf;
	struct etcd_url url;
	struct etcd_client *client;
};

static void
ctx_free(struct reg_ctx *x)
{
	etcd_client_free(x->client);
	etcd_url_free(&x->url);
	conf_free(x->conf);
}

static int
ctx_open(struct reg_ctx *x, const struct cmd_globals *g, const char *etcd)
{
	struct diag d;
	char why[512];

	diag_init(&d);
	if (conf_load(g->conf_path, &x->conf, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		fprintf(stderr, "amesh registry %s: %s: invalid\n", x->sub, g->conf_path);
		return EXIT_FAIL;
	}
	cmd_log_setup(g, x->conf);
	if (etcd != NULL) {
		free(x->conf->mesh.registry);
		x->conf->mesh.registry = xstrdup(etcd);
	}
	if (etcd_url_parse(x->conf->mesh.registry, &x->url, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry %s: %s: [mesh] registry is not an etcd source (%s); "
		    "set it to etcd://HOST:PORT/PREFIX or give --etcd URL\n", x->sub,
		    x->conf->path, why);
		return EXIT_FAIL;
	}
	if (etcd_client_new(&(struct etcd_client_cfg){ .endpoints = x->url.endpoints,
	    .n = x->url.n, .ca = x->conf->mesh.etcd_ca, .cert = x->conf->mesh.etcd_cert,
	    .key = x->conf->mesh.etcd_key, .timeout_ms = x->conf->mesh.etcd_timeout },
	    &x->client, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry %s: etcd client: %s\n", x->sub, why);
		return EXIT_FAIL;
	}
	return 0;
}

/* The registry files of dir as a directory load sees them: "*.conf", no dot files, sorted. */
struct dir_files {
	struct etcd_push_file *f;
	char **names, **data;
	size_t n;
};

static void
dir_files_free(struct dir_files *df)
{
	for (size_t i = 0; i < df->n; i++) {
		free(df->names[i]);
		free(df->data[i]);
	}
	free(df->names);
	free(df->data);
	free(df->f);
	memset(df, 0, sizeof(*df));
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
dir_files_read(const char *dir, struct dir_files *df, struct diag *d)
{
	DIR *dp = opendir(dir);
	struct dirent *de;

	memset(df, 0, sizeof(*df));
	if (dp == NULL) {
		diag_add(d, dir, 0, "cannot open registry directory: %s", strerror(errno));
		return -errno;
	}
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.' || !str_has_suffix(de->d_name, ".conf"))
			continue;
		if (df->n == REG_MAX_FILES) {
			diag_add(d, dir, 0, "more than %d registry files", REG_MAX_FILES);
			break;
		}
		df->names = xrealloc(df->names, df->n + 1, sizeof(char *));
		df->names[df->n++] = xstrdup(de->d_name);
	}
	closedir(dp);
	qsort(df->names, df->n, sizeof(char *), cmp_str);
	df->data = xcalloc(df->n + 1, sizeof(char *));
	df->f = xcalloc(df->n + 1, sizeof(*df->f));
	for (size_t i = 0; i < df->n; i++) {
		char *path = path_join(dir, df->names[i]);
		size_t len = 0;

		if (ini_slurp(path, &df->data[i], &len, d) == 0 && len > ETCD_REG_MAX_VALUE)
			diag_add(d, path, 0, "larger than %u bytes, the limit of one etcd value",
			    ETCD_REG_MAX_VALUE);
		df->f[i] = (struct etcd_push_file){ df->names[i], df->data[i] ? df->data[i] : "",
			len };
		free(path);
	}
	return diag_count(d) > 0 ? AMESH_ERR_INVALID : 0;
}

static const char *
who(char *buf, size_t len)
{
	struct passwd *pw = getpwuid(getuid());
	char host[HOST_NAME_MAX + 1] = "";

	gethostname(host, sizeof(host));
	snprintf(buf, len, "%s@%s", pw != NULL ? pw->pw_name : "?", host);
	return buf;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
do_push(struct reg_ctx *x, const char *dir, bool force)
{
	struct dir_files df;
	struct etcd_snapshot *base = NULL;
	struct registry *r = NULL;
	struct diag d;
	char why[2048], by[300], abs[PATH_MAX];
	json_t *meta;
	char *mj = NULL;
	int64_t rev;
	size_t changed = 0, removed = 0;
	int rc = EXIT_FAIL;

	diag_init(&d);
	/* Validated whole first, as amesh check and every role would. */
	if (registry_load_dir(dir, &r, &d) != 0) {
		diag_print(&d, stderr);
		fprintf(stderr, "amesh registry push: %s: invalid; nothing pushed\n", dir);
		diag_clear(&d);
		return EXIT_FAIL;
	}
	registry_unref(r);
	if (dir_files_read(dir, &df, &d) != 0) {
		diag_print(&d, stderr);
		goto out;
	}
	if (etcd_snapshot_read(x->client, x->url.prefix, 0, &base, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry push: etcd: %s\n", why);
		goto out;
	}
	for (size_t j = 0; j < df.n; j++) {
		bool same = false;

		for (size_t i = 0; i < base->n; i++)
			if (strcmp(base->files[i].name, df.f[j].name) == 0)
				same = base->files[i].len == df.f[j].len &&
				    memcmp(base->files[i].data, df.f[j].data, df.f[j].len) == 0;
		changed += !same;
	}
	for (size_t i = 0; i < base->n; i++) {
		bool kept = false;

		for (size_t j = 0; j < df.n && !kept; j++)
			kept = strcmp(base->files[i].name, df.f[j].name) == 0;
		removed += !kept;
	}
	if (changed == 0 && removed == 0 && !force) {
		printf("%s%s: already up to date (revision %lld, %zu files)\n", x->conf->mesh.registry,
		    "", (long long)base->revision, df.n);
		rc = EXIT_OK;
		goto out;
	}
	/* Tests make two pushes overlap here (tests/e2e/test-registry-etcd.sh). */
	if (getenv("AMESH_TEST_PUSH_DELAY_MS") != NULL)
		usleep((useconds_t)atoi(getenv("AMESH_TEST_PUSH_DELAY_MS")) * 1000);
	meta = json_pack("{s:I,s:s,s:s,s:i}", "pushed_at_ms", (json_int_t)now_ms(), "pushed_by",
	    who(by, sizeof(by)), "source", realpath(dir, abs) != NULL ? abs : dir, "files",
	    (int)df.n);
	mj = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(meta);
	if (etcd_push(x->client, x->url.prefix, base, df.f, df.n, mj != NULL ? mj : "{}", force,
	    &rev, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry push: %s\n", why);
		goto out;
	}
	printf("pushed %s to %s: revision %lld (%zu files, %zu changed, %zu removed)\n", dir,
	    x->conf->mesh.registry, (long long)rev, df.n, changed, removed);
	rc = EXIT_OK;
out:
	free(mj);
	etcd_snapshot_free(base);
	dir_files_free(&df);
	diag_clear(&d);
	return rc;
}

/* Writes data to dir/name through a temporary file and a rename. 0 or -errno. */
static int
write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
	char *path = path_join(dir, name), *tmp = xasprintf("%s/.%s.tmp", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), r = 0;

	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) != 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r == 0 && rename(tmp, path) != 0)
		r = -errno;
	if (r != 0)
		unlink(tmp);
	free(path);
	free(tmp);
	return r;
}

static int
do_pull(struct reg_ctx *x, const char *dir)
{
	struct etcd_snapshot *s = NULL;
	struct dir_files df = { 0 };
	struct diag d;
	char why[2048], *failed = NULL;
	size_t removed = 0;
	int rc = EXIT_FAIL, r;

	diag_init(&d);
	if (etcd_snapshot_read(x->client, x->url.prefix, 0, &s, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry pull: etcd: %s\n", why);
		goto out;
	}
	if ((r = path_mkdir_parents(dir, 0755, &failed)) != 0 ||
	    (mkdir(dir, 0755) != 0 && errno != EEXIST && (r = -errno) != 0)) {
		fprintf(stderr, "amesh registry pull: cannot make %s: %s\n", failed ? failed : dir,
		    strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < s->n; i++)
		if ((r = write_atomic(dir, s->files[i].name, s->files[i].data, s->files[i].len)) != 0) {
			fprintf(stderr, "amesh registry pull: %s/%s: %s\n", dir, s->files[i].name,
			    strerror(-r));
			goto out;
		}
	/* The directory becomes what etcd holds: registry files etcd has not are removed. */
	dir_files_read(dir, &df, &d);
	for (size_t j = 0; j < df.n; j++) {
		bool keep = false;

		for (size_t i = 0; i < s->n && !keep; i++)
			keep = strcmp(s->files[i].name, df.names[j]) == 0;
		if (!keep) {
			char *p = path_join(dir, df.names[j]);

			if (unlink(p) == 0)
				removed++;
			free(p);
		}
	}
	printf("pulled %s revision %lld into %s (%zu files, %zu removed)\n",
	    x->conf->mesh.registry, (long long)s->revision, dir, s->n, removed);
	rc = EXIT_OK;
out:
	free(failed);
	dir_files_free(&df);
	diag_clear(&d);
	etcd_snapshot_free(s);
	return rc;
}

/* diff -u of the etcd copy and the local file, or one line when diff(1) is not there. */
static void
show_diff(const char *key, const char *data, size_t len, const char *local)
{
	char tmp[] = "/tmp/amesh-registry-XXXXXX";
	int fd = mkstemp(tmp);
	pid_t pid;

	fflush(stdout);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
		printf("~ %s differs from %s\n", key, local);
		if (fd >= 0) {
			close(fd);
			unlink(tmp);
		}
		return;
	}
	close(fd);
	pid = fork();
	if (pid == 0) {
		char *label = xasprintf("etcd:%s", key);

		execlp("diff", "diff", "-u", "--label", label, "--label", local, tmp, local,
		    (char *)NULL);
		printf("~ %s differs from %s\n", key, local);
		_exit(0);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
	unlink(tmp);
}

static int
do_diff(struct reg_ctx *x, const char *dir)
{
	struct etcd_snapshot *s = NULL;
	struct dir_files df;
	struct diag d;
	char why[2048];
	size_t ndiff = 0;
	int rc = 2;

	diag_init(&d);
	if (dir_files_read(dir, &df, &d) != 0) {
		diag_print(&d, stderr);
		goto out;
	}
	if (etcd_snapshot_read(x->client, x->url.prefix, 0, &s, why, sizeof(why)) != 0) {
		fprintf(stderr, "amesh registry diff: etcd: %s\n", why);
		goto out;
	}
	for (size_t i = 0; i < s->n; i++) {
		bool found = false;

		for (size_t j = 0; j < df.n && !found; j++) {
			char *p;

			if (strcmp(s->files[i].name, df.names[j]) != 0)
				continue;
			found = true;
			if (s->files[i].len == df.f[j].len &&
			    memcmp(s->files[i].data, df.f[j].data, df.f[j].len) == 0)
				continue;
			p = path_join(dir, df.names[j]);
			show_diff(s->files[i].key, s->files[i].data, s->files[i].len, p);
			free(p);
			ndiff++;
		}
		if (!found) {
			printf("- %s: only in etcd\n", s->files[i].key);
			ndiff++;
		}
	}
	for (size_t j = 0; j < df.n; j++) {
		bool found = false;

		for (size_t i = 0; i < s->n && !found; i++)
			found = strcmp(s->files[i].name, df.names[j]) == 0;
		if (!found) {
			printf("+ %s/%s: only in the directory\n", dir, df.names[j]);
			ndiff++;
		}
	}
	fflush(stdout);
	if (ndiff == 0)
		printf("%s is the same as %s (revision %lld, %zu files)\n", dir,
		    x->conf->mesh.registry, (long long)s->revision, s->n);
	rc = ndiff == 0 ? EXIT_OK : EXIT_FAIL;
out:
	dir_files_free(&df);
	diag_clear(&d);
	etcd_snapshot_free(s);
	return rc;
}

/* amesh registry watch: each revision as a role would apply or refuse it. */
struct watch_ctx {
	struct etcd_feed *feed;
	uv_signal_t sig_int, sig_term;
};

static void
describe(const struct registry *r, char *buf, size_t n)
{
	snprintf(buf, n, "%zu files, %zu nodes, %zu workloads, %zu services, %zu policies, "
	    "%zu routes", r->n_files, r->n[REG_NODE], r->n[REG_WORKLOAD], r->n[REG_SERVICE],
	    r->n[REG_POLICY], r->n[REG_ROUTE]);
}

static void
on_event(void *arg, const struct etcd_feed_event *ev)
{
	char what[256], t[64];

	iso_time(time(NULL), t, sizeof(t));
	if (ev->applied) {
		describe(ev->r, what, sizeof(what));
		printf("%s revision %lld applied: %s; %.0f ms after its %s\n", t,
		    (long long)ev->revision, what, ev->latency_ms, ev->from_push ? "push" :
		    "watch event");
	} else {
		printf("%s revision %lld refused:\n", t, (long long)ev->revision);
		for (size_t i = 0; i < ev->nmsgs; i++)
			printf("  %s\n", ev->msgs[i]);
	}
	fflush(stdout);
}

static void
on_signal(uv_signal_t *h, int sig)
{
	struct watch_ctx *w = h->data;

	etcd_feed_stop(w->feed);
	uv_close((uv_handle_t *)&w->sig_int, NULL);
	uv_close((uv_handle_t *)&w->sig_term, NULL);
}

static int
do_watch(struct reg_ctx *x)
{
	struct registry_holder h;
	struct watch_ctx w = { 0 };
	struct registry *r;
	uv_loop_t *loop = uv_default_loop();
	struct diag d;
	char what[256], t[64];
	json_t *st;

	diag_init(&d);
	registry_holder_init(&h);
	if (etcd_feed_new(&(struct etcd_feed_cfg){ .loop = loop, .conf = x->conf, .holder = &h,
	    .role = "registry watch", .on_event = on_event, .no_cache = true }, &w.feed, &d) != 0) {
		diag_print(&d, stderr);
		diag_clear(&d);
		registry_holder_destroy(&h);
		return EXIT_FAIL;
	}
	r = registry_holder_get(&h);
	st = etcd_feed_status(w.feed);
	describe(r, what, sizeof(what));
	printf("%s revision %lld loaded: %s\n", iso_time(time(NULL), t, sizeof(t)),
	    (long long)json_integer_value(json_object_get(st, "revision")), what);
	fflush(stdout);
	json_decref(st);
	registry_unref(r);
	etcd_feed_set_describe(w.feed, describe);
	uv_signal_init(loop, &w.sig_int);
	uv_signal_init(loop, &w.sig_term);
	w.sig_int.data = w.sig_term.data = &w;
	uv_signal_start(&w.sig_int, on_signal, SIGINT);
	uv_signal_start(&w.sig_term, on_signal, SIGTERM);
	if (etcd_feed_start(w.feed, NULL) != 0) {
		fprintf(stderr, "amesh registry watch: cannot start the watch thread\n");
		return EXIT_FAIL;
	}
	uv_run(loop, UV_RUN_DEFAULT);
	etcd_feed_free(w.feed);
	registry_holder_destroy(&h);
	uv_loop_close(loop);
	return EXIT_OK;
}

static int
exec_registry(const struct cmd_globals *g, int argc, char **argv)
{
	enum { OPT_FORCE = 1, OPT_ETCD };
	static const struct option longopts[] = {
		{ "force", no_argument, NULL, OPT_FORCE },
		{ "etcd", required_argument, NULL, OPT_ETCD },
		{ NULL, 0, NULL, 0 },
	};
	struct reg_ctx x = { 0 };
	const char *etcd = NULL, *sub;
	bool force = false;
	int c, rc, nargs;

	if (argc < 2)
		return cmd_usage_error("registry", NULL, usage, "which subcommand? push, pull, diff "
		    "or watch");
	sub = argv[1];
	if (strcmp(sub, "push") != 0 && strcmp(sub, "pull") != 0 && strcmp(sub, "diff") != 0 &&
	    strcmp(sub, "watch") != 0)
		return cmd_usage_error("registry", NULL, usage, "unknown subcommand '%s'", sub);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "+:", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_FORCE:
			if (strcmp(sub, "push") != 0)
				return cmd_usage_error("registry", sub, usage, "--force is for push");
			force = true;
			break;
		case OPT_ETCD:
			etcd = optarg;
			break;
		case ':':
			return cmd_usage_error("registry", sub, usage, "option '%s' needs a value",
			    argv[optind]);
		default:
			return cmd_usage_error("registry", sub, usage, "unknown option '%s'",
			    argv[optind]);
		}
	}
	nargs = argc - 1 - optind;
	if (strcmp(sub, "watch") == 0 ? nargs != 0 : nargs != 1)
		return cmd_usage_error("registry", sub, usage, strcmp(sub, "watch") == 0 ?
		    "unexpected argument" : "expected one directory");
	x.sub = sub;
	rc = ctx_open(&x, g, etcd);
	if (rc == 0) {
		const char *dir = nargs > 0 ? argv[1 + optind] : NULL;

		if (strcmp(sub, "push") == 0)
			rc = do_push(&x, dir, force);
		else if (strcmp(sub, "pull") == 0)
			rc = do_pull(&x, dir);
		else if (strcmp(sub, "diff") == 0)
			rc = do_diff(&x, dir);
		else
			rc = do_watch(&x);
	}
	ctx_free(&x);
	return rc;
}

const struct cmd_entry cmd_registry_entry = {
	"registry", "[-c FILE] push [--force] DIR | pull DIR | diff DIR | watch",
	"the registry on etcd: push a directory, pull, diff, watch",
	"  push DIR              validate DIR, then replace the registry on etcd in one\n"
	"                        transaction; refused if it changed since read (--force)\n"
	"  pull DIR              write the registry on etcd into DIR\n"
	"  diff DIR              show how DIR differs from etcd (exit 1 if it does)\n"
	"  watch                 print each revision as the roles would apply or refuse it\n"
	"  --etcd URL            etcd://HOST:PORT[,...]/PREFIX instead of [mesh] registry\n",
	exec_registry, "amesh(8)",
};
