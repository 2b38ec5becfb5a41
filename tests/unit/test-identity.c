/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for tls/identity.c: which files load, lookups, reloads that keep held references, watching. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/err.h"
#include "runner.h"
#include "tls/ca.h"
#include "tls/identity.h"

#define TD "cluster.local"

struct fixture {
	char dir[256], ca_dir[300], bundle[320], certs[300];
	struct ca *ca, *other;
};

static void
must(int r, const char *what, const char *why)
{
	if (r != 0) {
		fprintf(stderr, "%s: %s\n", what, why);
		ASSERT(!"setup step failed");
	}
}

/* Issues ns/sa from ca and writes it under certs as ns/file.{crt,key}. */
static void
put(struct fixture *f, struct ca *ca, const char *ns, const char *sa, const char *file)
{
	struct ca_issued *is;
	char why[512], path[512];

	must(ca_issue(ca, ns, sa, 30, time(NULL), &is, why, sizeof(why)), "ca_issue", why);
	if (strcmp(sa, file) == 0) {
		must(ca_issued_write(is, f->certs, why, sizeof(why)), "ca_issued_write", why);
	} else {
		snprintf(path, sizeof(path), "%s/%s", f->certs, ns);
		mkdir(f->certs, 0755);
		mkdir(path, 0755);
		snprintf(path, sizeof(path), "%s/%s/%s.key", f->certs, ns, file);
		must(ca_write_file(path, is->key_pem, is->key_len, 0600, true, why, sizeof(why)),
		    "write key", why);
		snprintf(path, sizeof(path), "%s/%s/%s.crt", f->certs, ns, file);
		must(ca_write_file(path, is->chain_pem, is->chain_len, 0644, true, why, sizeof(why)),
		    "write crt", why);
	}
	ca_issued_free(is);
}

/*
 * cert_dir with three good identities (default/reviews, default/productpage, other/db), a corrupt
 * certificate, one from another CA, one in the wrong place and one without its key.
 */
static void
setup(struct fixture *f)
{
	char why[512], path[512];

	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "%s", test_tmpdir());
	snprintf(f->ca_dir, sizeof(f->ca_dir), "%s/ca", f->dir);
	snprintf(f->bundle, sizeof(f->bundle), "%s/ca.crt", f->ca_dir);
	snprintf(f->certs, sizeof(f->certs), "%s/certs", f->dir);
	must(ca_create(TD, 365, time(NULL), &f->ca, why, sizeof(why)), "ca_create", why);
	must(ca_save(f->ca, f->ca_dir, why, sizeof(why)), "ca_save", why);
	must(ca_create(TD, 365, time(NULL), &f->other, why, sizeof(why)), "ca_create", why);

	put(f, f->ca, "default", "reviews", "reviews");
	put(f, f->ca, "default", "productpage", "productpage");
	put(f, f->ca, "other", "db", "db");
	put(f, f->other, "default", "intruder", "intruder");
	put(f, f->ca, "default", "alice", "bob");
	put(f, f->ca, "default", "nokey", "nokey");
	snprintf(path, sizeof(path), "%s/default/nokey.key", f->certs);
	ASSERT(unlink(path) == 0);
	snprintf(path, sizeof(path), "%s/default", f->certs);
	test_write(path, "corrupt.crt", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
	    "-----END CERTIFICATE-----\n");
	test_write(path, "corrupt.key", "not a key\n");
	/* Files that are not identities are ignored without a word. */
	test_write(path, "README", "hello\n");
	test_write(f->certs, "stray.crt", "not in a namespace directory\n");
}

static void
teardown(struct fixture *f)
{
	ca_free(f->ca);
	ca_free(f->other);
}

static struct identity_store *
new_store(struct fixture *f)
{
	struct identity_store_config cfg = {
		.cert_dir = f->certs, .trust_bundle = f->bundle, .trust_domain = TD,
		.expiry_warning_ms = 7ull * 86400 * 1000,
	};
	struct identity_store *s;

	ASSERT_EQ(identity_store_new(&cfg, &s), 0);
	return s;
}

/* Runs fn with stderr sent to a file; returns what was written (caller frees). */
static char *
capture_stderr(int (*fn)(struct identity_store *), struct identity_store *s, int *ret)
{
	char path[512];
	int saved = dup(STDERR_FILENO), fd;
	FILE *fp;
	char *buf = calloc(1, 65536);

	snprintf(path, sizeof(path), "%s/stderr.txt", test_tmpdir());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ASSERT(fd >= 0 && saved >= 0 && buf != NULL);
	dup2(fd, STDERR_FILENO);
	close(fd);
	*ret = fn(s);
	dup2(saved, STDERR_FILENO);
	close(saved);
	fp = fopen(path, "r");
	ASSERT(fp != NULL);
	ASSERT(fread(buf, 1, 65535, fp) > 0 || !ferror(fp));
	fclose(fp);
	fputs(buf, stderr);
	return buf;
}

static bool
has_line(const char *log, const char *a, const char *b)
{
	for (const char *l = log; l != NULL && *l != '\0';) {
		const char *nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);
		char line[2048];

		snprintf(line, sizeof(line), "%.*s", (int)n, l);
		if (strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL))
			return true;
		l = nl ? nl + 1 : NULL;
	}
	fprintf(stderr, "no log line with '%s' and '%s'\n", a, b ? b : "");
	return false;
}

TEST(identity_load_good_only)
{
	struct fixture f;
	struct identity_store *s;
	struct identity *id, **all;
	struct trust_bundle *b;
	char *log, p[512];
	size_t n;
	int r;

	setup(&f);
	s = new_store(&f);
	ASSERT(identity_store_bundle(s) == NULL);
	ASSERT(identity_store_get_sa(s, "default", "reviews") == NULL);
	ASSERT_EQ(identity_store_list(s, &all), 0);
	ASSERT(all == NULL);

	log = capture_stderr(identity_store_reload, s, &r);
	ASSERT_EQ(r, 3);
	/* Each bad file is named with its reason. */
	snprintf(p, sizeof(p), "identity %s/default/corrupt.crt: skipped: ", f.certs);
	ASSERT(has_line(log, p, "not a certificate"));
	snprintf(p, sizeof(p), "identity %s/default/intruder.crt: skipped: ", f.certs);
	ASSERT(has_line(log, p, "does not verify against the trust bundle"));
	snprintf(p, sizeof(p), "identity %s/default/bob.crt: skipped: ", f.certs);
	ASSERT(has_line(log, p, "spiffe://cluster.local/ns/default/sa/alice"));
	ASSERT(has_line(log, p, "spiffe://cluster.local/ns/default/sa/bob"));
	snprintf(p, sizeof(p), "identity %s/default/nokey.crt: skipped: key ", f.certs);
	ASSERT(has_line(log, p, "No such file or directory"));
	ASSERT(strstr(log, "README") == NULL && strstr(log, "stray") == NULL);
	ASSERT(has_line(log, "3 identities loaded, 4 skipped", NULL));
	/* Keys are never logged. */
	ASSERT(strstr(log, "PRIVATE KEY") == NULL);
	free(log);

	id = identity_store_get(s, "spiffe://cluster.local/ns/default/sa/reviews");
	ASSERT(id != NULL);
	ASSERT_STREQ(id->ns, "default");
	ASSERT_STREQ(id->sa, "reviews");
	snprintf(p, sizeof(p), "%s/default/reviews.crt", f.certs);
	ASSERT_STREQ(id->crt_path, p);
	ASSERT(id->not_after > time(NULL) + 29 * 86400 && id->not_before < time(NULL));
	ASSERT(id->bundle != NULL && id->bundle->crt.raw.len == f.ca->crt.raw.len);
	ASSERT(id->chain.next != NULL); /* the CA certificate follows the leaf */
	identity_unref(id);
	id = identity_store_get_sa(s, "other", "db");
	ASSERT(id != NULL);
	ASSERT_STREQ(id->spiffe_id, "spiffe://cluster.local/ns/other/sa/db");
	identity_unref(id);
	ASSERT(identity_store_get_sa(s, "default", "bob") == NULL);
	ASSERT(identity_store_get_sa(s, "default", "alice") == NULL);
	ASSERT(identity_store_get_sa(s, "default", "intruder") == NULL);
	ASSERT(identity_store_get_sa(s, "default", "nokey") == NULL);
	ASSERT(identity_store_get(s, "spiffe://cluster.local/ns/default/sa/corrupt") == NULL);

	n = identity_store_list(s, &all);
	ASSERT_EQ(n, 3);
	ASSERT_STREQ(all[0]->spiffe_id, "spiffe://cluster.local/ns/default/sa/productpage");
	ASSERT_STREQ(all[1]->spiffe_id, "spiffe://cluster.local/ns/default/sa/reviews");
	ASSERT_STREQ(all[2]->spiffe_id, "spiffe://cluster.local/ns/other/sa/db");
	for (size_t i = 0; i < n; i++)
		identity_unref(all[i]);
	free(all);
	b = identity_store_bundle(s);
	ASSERT(b != NULL && b->crt.raw.p != NULL);
	trust_bundle_unref(b);
	identity_store_free(s);

	/* A store told to warn 31 days ahead warns about each 30-day certificate, by path. */
	{
		struct identity_store_config cfg = {
			.cert_dir = f.certs, .trust_bundle = f.bundle, .trust_domain = TD,
			.expiry_warning_ms = 31ull * 86400 * 1000,
		};

		ASSERT_EQ(identity_store_new(&cfg, &s), 0);
		log = capture_stderr(identity_store_reload, s, &r);
		ASSERT_EQ(r, 3);
		snprintf(p, sizeof(p), "identity %s/default/reviews.crt: "
		    "spiffe://cluster.local/ns/default/sa/reviews expires at ", f.certs);
		ASSERT(has_line(log, p, "re-issue it"));
		ASSERT(has_line(log, "sa/productpage expires at ", NULL));
		ASSERT(has_line(log, "sa/db expires at ", NULL));
		free(log);
		identity_store_free(s);
	}
	teardown(&f);
}

TEST(identity_reload_rotation)
{
	struct fixture f;
	struct identity_store *s;
	struct identity *old, *cur;
	mbedtls_ssl_context ssl;
	char bundle_away[600];

	setup(&f);
	s = new_store(&f);
	/* At start, without a bundle, there are no previous identities to keep: the log says so. */
	snprintf(bundle_away, sizeof(bundle_away), "%s.away", f.bundle);
	ASSERT(rename(f.bundle, bundle_away) == 0);
	{
		int r;
		char *log = capture_stderr(identity_store_reload, s, &r);

		ASSERT(r < 0);
		ASSERT(has_line(log, "no identity is loaded without it", "amesh ca init"));
		ASSERT(strstr(log, "previous identities stay") == NULL);
		free(log);
	}
	ASSERT(rename(bundle_away, f.bundle) == 0);
	ASSERT_EQ(identity_store_reload(s), 3);
	old = identity_store_get_sa(s, "default", "reviews");
	ASSERT(old != NULL);

	/* Rotate: a new certificate for the same identity. */
	put(&f, f.ca, "default", "reviews", "reviews");
	ASSERT_EQ(identity_store_reload(s), 3);
	cur = identity_store_get_sa(s, "default", "reviews");
	ASSERT(cur != NULL && cur != old);
	ASSERT(cur->chain.raw.len != old->chain.raw.len ||
	    memcmp(cur->chain.raw.p, old->chain.raw.p, cur->chain.raw.len) != 0);
	identity_unref(cur);

	/* The old reference is whole: its certificate, key and TLS configuration still work. */
	ASSERT_STREQ(old->spiffe_id, "spiffe://cluster.local/ns/default/sa/reviews");
	ASSERT_EQ(mbedtls_pk_check_pair(&old->chain.pk, &old->key), 0);
	mbedtls_ssl_init(&ssl);
	ASSERT_EQ(mbedtls_ssl_setup(&ssl, &old->client), 0);
	mbedtls_ssl_free(&ssl);
	identity_unref(old);

	/* A missing bundle fails the reload and keeps the previous set. */
	cur = identity_store_get_sa(s, "default", "reviews");
	ASSERT(rename(f.bundle, bundle_away) == 0);
	{
		int r;
		char *log = capture_stderr(identity_store_reload, s, &r);

		ASSERT(r < 0);
		ASSERT(has_line(log, "the previous identities stay in force", NULL));
		free(log);
	}
	old = identity_store_get_sa(s, "default", "reviews");
	ASSERT(old == cur);
	identity_unref(old);
	identity_unref(cur);
	old = identity_store_get_sa(s, "other", "db");
	ASSERT(old != NULL);
	identity_unref(old);
	/* Back in place: a fresh set again. */
	ASSERT(rename(bundle_away, f.bundle) == 0);
	ASSERT_EQ(identity_store_reload(s), 3);

	/* A key that no longer matches its certificate, as mid-rotation, keeps the previous one. */
	{
		struct ca_issued *is;
		char why[512], path[600];

		cur = identity_store_get_sa(s, "default", "productpage");
		ASSERT_EQ(ca_issue(f.ca, "default", "productpage", 30, time(NULL), &is, why,
		    sizeof(why)), 0);
		snprintf(path, sizeof(path), "%s/default/productpage.key", f.certs);
		ASSERT_EQ(ca_write_file(path, is->key_pem, is->key_len, 0600, true, why,
		    sizeof(why)), 0);
		ASSERT_EQ(identity_store_reload(s), 3);
		old = identity_store_get_sa(s, "default", "productpage");
		ASSERT(old == cur);
		identity_unref(old);
		/* The certificate lands: the new pair replaces it. */
		snprintf(path, sizeof(path), "%s/default/productpage.crt", f.certs);
		ASSERT_EQ(ca_write_file(path, is->chain_pem, is->chain_len, 0644, true, why,
		    sizeof(why)), 0);
		ASSERT_EQ(identity_store_reload(s), 3);
		old = identity_store_get_sa(s, "default", "productpage");
		ASSERT(old != NULL && old != cur);
		identity_unref(old);
		identity_unref(cur);
		ca_issued_free(is);
	}

	/* An empty or missing cert_dir: no identities, not an error. */
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f.certs);
		ASSERT(system(cmd) == 0);
		ASSERT_EQ(identity_store_reload(s), 0);
		ASSERT(identity_store_get_sa(s, "default", "reviews") == NULL);
	}
	identity_store_free(s);
	teardown(&f);
}

/* The watch test: waits on the loop for the store to show a different reviews certificate. */
struct watch_wait {
	struct identity_store *s;
	const char *ns, *sa;
	struct identity *old;
	bool changed;
	uv_timer_t poll, deadline;
};

static void
on_poll(uv_timer_t *t)
{
	struct watch_wait *w = t->data;
	struct identity *id = identity_store_get_sa(w->s, w->ns, w->sa);

	if (id != NULL && id != w->old) {
		w->changed = true;
		uv_stop(t->loop);
	}
	identity_unref(id);
}

static void
on_deadline(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Runs the loop until ns/sa differs from old, or 2 s pass. Returns whether it changed. */
static bool
wait_change(uv_loop_t *loop, struct identity_store *s, const char *ns, const char *sa,
    struct identity *old)
{
	struct watch_wait w = { .s = s, .ns = ns, .sa = sa, .old = old };

	uv_timer_init(loop, &w.poll);
	uv_timer_init(loop, &w.deadline);
	w.poll.data = w.deadline.data = &w;
	uv_timer_start(&w.poll, on_poll, 20, 20);
	uv_timer_start(&w.deadline, on_deadline, 2000, 0);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&w.poll, NULL);
	uv_close((uv_handle_t *)&w.deadline, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return w.changed;
}

TEST(identity_watch)
{
	struct fixture f;
	struct identity_store *s;
	struct identity *old;
	uv_loop_t loop;
	uint64_t t0;

	setup(&f);
	ASSERT_EQ(uv_loop_init(&loop), 0);
	s = new_store(&f);
	ASSERT_EQ(identity_store_reload(s), 3);
	ASSERT_EQ(identity_store_watch(s, &loop), 0);
	ASSERT_EQ(identity_store_watch(s, &loop), -EBUSY);

	/* Rewrite an identity's files: the store picks the new certificate up within 2 s. */
	old = identity_store_get_sa(s, "default", "reviews");
	ASSERT(old != NULL);
	uv_update_time(&loop);
	t0 = uv_now(&loop);
	put(&f, f.ca, "default", "reviews", "reviews");
	ASSERT(wait_change(&loop, s, "default", "reviews", old));
	fprintf(stderr, "picked up after %llu ms\n", (unsigned long long)(uv_now(&loop) - t0));
	identity_unref(old);

	/* A namespace directory created after the watch started is watched too. */
	put(&f, f.ca, "new-ns", "svc", "svc");
	ASSERT(wait_change(&loop, s, "new-ns", "svc", NULL));
	old = identity_store_get_sa(s, "new-ns", "svc");
	put(&f, f.ca, "new-ns", "svc", "svc");
	ASSERT(wait_change(&loop, s, "new-ns", "svc", old));
	identity_unref(old);

	/* The bundle's directory: a restored bundle brings a reload. */
	{
		char away[600];

		snprintf(away, sizeof(away), "%s/elsewhere.crt", f.dir);
		old = identity_store_get_sa(s, "other", "db");
		ASSERT(rename(f.bundle, away) == 0);
		ASSERT(!wait_change(&loop, s, "other", "db", old)); /* the old set stays */
		/* Put back as a new file (as any real change is): an unchanged file (same inode
		 * and time) is the same bundle, and the identities checked against it stay. */
		{
			char cmd[4096];

			snprintf(cmd, sizeof(cmd), "cp '%s' '%s.new' && mv '%s.new' '%s' && rm '%s'",
			    away, f.bundle, f.bundle, f.bundle, away);
			ASSERT(system(cmd) == 0);
		}
		ASSERT(wait_change(&loop, s, "other", "db", old));  /* a new set with the bundle */
		identity_unref(old);
	}

	/* Unwatch and free: the store goes once its handles have closed; the loop then closes. */
	identity_store_unwatch(s);
	identity_store_free(s);
	ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ASSERT_EQ(uv_loop_close(&loop), 0);
	teardown(&f);
}

TEST(identity_watch_free_while_watching)
{
	struct fixture f;
	struct identity_store *s;
	uv_loop_t loop;

	setup(&f);
	ASSERT_EQ(uv_loop_init(&loop), 0);
	s = new_store(&f);
	ASSERT_EQ(identity_store_reload(s), 3);
	ASSERT_EQ(identity_store_watch(s, &loop), 0);
	/* A change arms the timer and a reload may be in flight when the store is freed. */
	put(&f, f.ca, "default", "reviews", "reviews");
	uv_run(&loop, UV_RUN_NOWAIT);
	identity_store_free(s);
	ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ASSERT_EQ(uv_loop_close(&loop), 0);

	/* Watching a cert_dir that does not exist fails cleanly. */
	{
		struct identity_store_config cfg = {
			.cert_dir = "/nonexistent/certs", .trust_bundle = f.bundle, .trust_domain = TD,
		};

		ASSERT_EQ(uv_loop_init(&loop), 0);
		ASSERT_EQ(identity_store_new(&cfg, &s), 0);
		ASSERT(identity_store_watch(s, &loop) < 0);
		identity_store_free(s);
		ASSERT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
		ASSERT_EQ(uv_loop_close(&loop), 0);
	}
	teardown(&f);
}
