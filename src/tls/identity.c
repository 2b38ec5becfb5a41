/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The identity store: scans CERT_DIR/NS/SA.crt + .key, checks each against the trust bundle, and
 * publishes the result as an immutable, reference-counted snapshot swapped under a mutex. Watching
 * uses libuv fs events, a settle timer and one reload at a time on the threadpool.
 */
#include "config.h"

#include <dirent.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/htab.h"
#include "core/log.h"
#include "core/util.h"
#include "tls/cert.h"
#include "tls/identity.h"
#include "tls/rng.h"
#include "tls/tls.h"

/* One load's result: never changed after it is published. */
struct identity_set {
	int refs;
	struct trust_bundle *bundle;
	struct identity **v; /* sorted by SPIFFE ID */
	size_t n;
	struct htab by_id;   /* SPIFFE ID -> identity; keys are the identities' strings */
};

/* One watched directory; freed in its close callback. */
struct dir_watch {
	uv_fs_event_t ev;
	struct identity_store *s;
	struct dir_watch *next;
	char *path;
	char *only; /* if set, only events about this file name count (the bundle's directory) */
	bool ns;    /* a namespace directory, re-synced after each reload */
	bool keep;
};

struct identity_store {
	char *cert_dir, *trust_bundle, *trust_domain;
	char *only_ns, *only_sa; /* NULL: every identity of cert_dir */
	uint64_t expiry_warning_ms;
	pthread_mutex_t reload_mu; /* one reload at a time, whichever thread runs it */
	pthread_mutex_t mu;        /* guards cur and ns_dirs */
	struct identity_set *cur;
	char **ns_dirs;            /* namespace directories the last scan found */
	size_t n_ns_dirs;

	/* Watching: touched on the loop thread only. */
	uv_loop_t *loop;
	uv_timer_t timer;
	uv_work_t work;
	struct dir_watch *watches;
	int open_handles;          /* handles whose close callback has not run yet */
	bool watching, timer_open, in_flight, again, free_requested;
};

/* What a scan of cert_dir found. */
struct scan {
	char **ns;      /* namespace directory names */
	size_t n_ns;
	struct scan_file {
		char *ns, *sa;
	} *files;
	size_t n_files;
};

static char *
str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
str_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

struct identity *
identity_ref(struct identity *id)
{
	if (id != NULL)
		__atomic_add_fetch(&id->refs, 1, __ATOMIC_RELAXED);
	return id;
}

void
identity_unref(struct identity *id)
{
	if (id == NULL || __atomic_sub_fetch(&id->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	mbedtls_ssl_config_free(&id->server);
	mbedtls_ssl_config_free(&id->client);
	mbedtls_x509_crt_free(&id->chain);
	mbedtls_pk_free(&id->key);
	trust_bundle_unref(id->bundle);
	free(id->spiffe_id);
	free(id->ns);
	free(id->sa);
	free(id->crt_path);
	free(id);
}

struct trust_bundle *
trust_bundle_ref(struct trust_bundle *b)
{
	if (b != NULL)
		__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

void
trust_bundle_unref(struct trust_bundle *b)
{
	if (b == NULL || __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	mbedtls_x509_crt_free(&b->crt);
	free(b);
}

static struct identity_set *
set_ref(struct identity_set *set)
{
	if (set != NULL)
		__atomic_add_fetch(&set->refs, 1, __ATOMIC_RELAXED);
	return set;
}

static void
set_unref(struct identity_set *set)
{
	if (set == NULL || __atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < set->n; i++)
		identity_unref(set->v[i]);
	free(set->v);
	htab_free(&set->by_id);
	trust_bundle_unref(set->bundle);
	free(set);
}

static struct identity_set *
current_set(struct identity_store *s)
{
	struct identity_set *set;

	pthread_mutex_lock(&s->mu);
	set = set_ref(s->cur);
	pthread_mutex_unlock(&s->mu);
	return set;
}

int
identity_store_new(const struct identity_store_config *cfg, struct identity_store **out)
{
	struct identity_store *s;

	*out = NULL;
	if (cfg == NULL || cfg->cert_dir == NULL || cfg->trust_bundle == NULL ||
	    cfg->trust_domain == NULL)
		return AMESH_ERR_INVALID;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return AMESH_ERR_NOMEM;
	s->cert_dir = strdup(cfg->cert_dir);
	s->trust_bundle = strdup(cfg->trust_bundle);
	s->trust_domain = strdup(cfg->trust_domain);
	s->only_ns = cfg->only_ns ? strdup(cfg->only_ns) : NULL;
	s->only_sa = cfg->only_sa ? strdup(cfg->only_sa) : NULL;
	if (s->cert_dir == NULL || s->trust_bundle == NULL || s->trust_domain == NULL ||
	    (cfg->only_ns != NULL && s->only_ns == NULL) ||
	    (cfg->only_sa != NULL && s->only_sa == NULL)) {
		free(s->cert_dir);
		free(s->trust_bundle);
		free(s->trust_domain);
		free(s->only_ns);
		free(s->only_sa);
		free(s);
		return AMESH_ERR_NOMEM;
	}
	s->expiry_warning_ms = cfg->expiry_warning_ms;
	pthread_mutex_init(&s->reload_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

static void
free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
destroy(struct identity_store *s)
{
	set_unref(s->cur);
	free_names(s->ns_dirs, s->n_ns_dirs);
	pthread_mutex_destroy(&s->mu);
	pthread_mutex_destroy(&s->reload_mu);
	free(s->cert_dir);
	free(s->trust_bundle);
	free(s->trust_domain);
	free(s->only_ns);
	free(s->only_sa);
	free(s);
}

/* Frees a store whose free was asked for once nothing on the loop refers to it any more. */
static void
maybe_destroy(struct identity_store *s)
{
	if (s->free_requested && s->open_handles == 0 && !s->in_flight)
		destroy(s);
}

void
identity_store_free(struct identity_store *s)
{
	if (s == NULL)
		return;
	if (s->watching)
		identity_store_unwatch(s);
	s->free_requested = true;
	maybe_destroy(s);
}

static void
scan_free(struct scan *sc)
{
	free_names(sc->ns, sc->n_ns);
	for (size_t i = 0; i < sc->n_files; i++) {
		free(sc->files[i].ns);
		free(sc->files[i].sa);
	}
	free(sc->files);
	memset(sc, 0, sizeof(*sc));
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
cmp_file(const void *a, const void *b)
{
	const struct scan_file *x = a, *y = b;
	int c = strcmp(x->ns, y->ns);

	return c != 0 ? c : strcmp(x->sa, y->sa);
}

/* True if dir/name is a directory (want_dir) or a regular file, following symlinks. */
static bool
entry_is(DIR *d, const struct dirent *e, bool want_dir)
{
	struct stat st;

	if (e->d_type == DT_DIR)
		return want_dir;
	if (e->d_type == DT_REG)
		return !want_dir;
	if (fstatat(dirfd(d), e->d_name, &st, 0) != 0)
		return false;
	return want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

static int
push_name(char ***v, size_t *n, const char *name)
{
	char **nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (nv == NULL)
		return AMESH_ERR_NOMEM;
	*v = nv;
	if ((nv[*n] = strdup(name)) == NULL)
		return AMESH_ERR_NOMEM;
	(*n)++;
	return 0;
}

/* The *.crt files of one namespace directory, appended to sc. */
static int
scan_ns(struct identity_store *s, const char *ns, struct scan *sc, bool *full)
{
	char *path = str_printf("%s/%s", s->cert_dir, ns);
	DIR *d = NULL;
	struct dirent *e;
	int r = AMESH_ERR_NOMEM;

	if (path == NULL)
		goto out;
	d = opendir(path);
	if (d == NULL) {
		log_warn("identity %s: cannot read the directory: %s", path, strerror(errno));
		r = 0;
		goto out;
	}
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		struct scan_file *nf;

		if (e->d_name[0] == '.' || l <= 4 || strcmp(e->d_name + l - 4, ".crt") != 0 ||
		    !entry_is(d, e, false))
			continue;
		if (s->only_sa != NULL && (l - 4 != strlen(s->only_sa) ||
		    strncmp(e->d_name, s->only_sa, l - 4) != 0))
			continue;
		if (sc->n_files >= IDENTITY_MAX) {
			if (!*full)
				log_warn("identity %s: more than %d identities; the rest are ignored",
				    s->cert_dir, IDENTITY_MAX);
			*full = true;
			break;
		}
		nf = realloc(sc->files, (sc->n_files + 1) * sizeof(*sc->files));
		if (nf == NULL)
			goto out;
		sc->files = nf;
		nf[sc->n_files].ns = strdup(ns);
		nf[sc->n_files].sa = strndup(e->d_name, l - 4);
		sc->n_files++;
		if (nf[sc->n_files - 1].ns == NULL || nf[sc->n_files - 1].sa == NULL)
			goto out;
	}
	r = 0;
out:
	if (d != NULL)
		closedir(d);
	free(path);
	return r;
}

/*
 * Lists cert_dir's namespace directories and their certificates. A missing cert_dir is an empty
 * scan (nothing issued yet); any other failure is an error.
 */
static int
scan_cert_dir(struct identity_store *s, struct scan *sc)
{
	DIR *d;
	struct dirent *e;
	bool full = false;
	int r = 0;

	memset(sc, 0, sizeof(*sc));
	d = opendir(s->cert_dir);
	if (d == NULL) {
		if (errno == ENOENT) {
			log_warn("identity %s: no such directory; no identities (amesh ca issue --out %s "
			    "makes one)", s->cert_dir, s->cert_dir);
			return 0;
		}
		r = -errno;
		log_error("identity %s: cannot read the directory: %s", s->cert_dir, strerror(errno));
		return r;
	}
	while (r == 0 && (e = readdir(d)) != NULL)
		if (e->d_name[0] != '.' && entry_is(d, e, true) &&
		    (s->only_ns == NULL || strcmp(e->d_name, s->only_ns) == 0))
			r = push_name(&sc->ns, &sc->n_ns, e->d_name);
	closedir(d);
	if (r == 0 && sc->n_ns > 0)
		qsort(sc->ns, sc->n_ns, sizeof(*sc->ns), cmp_str);
	for (size_t i = 0; r == 0 && i < sc->n_ns && !full; i++)
		r = scan_ns(s, sc->ns[i], sc, &full);
	if (r == 0 && sc->n_files > 0)
		qsort(sc->files, sc->n_files, sizeof(*sc->files), cmp_file);
	if (r != 0)
		scan_free(sc);
	return r;
}

static void
warn_expiry(struct identity_store *s, const struct identity *id, time_t now)
{
	long long left = (long long)(id->not_after - now);
	char t[32];

	if (s->expiry_warning_ms == 0 || (uint64_t)left * 1000 >= s->expiry_warning_ms)
		return;
	log_warn("identity %s: %s expires at %s (in %lldd %lldh %lldm); re-issue it",
	    id->crt_path, id->spiffe_id, iso_time(id->not_after, t, sizeof(t)), left / 86400,
	    left % 86400 / 3600, left % 3600 / 60);
}

/*
 * While `amesh ca issue` rotates an identity, a reload can read the new key with the old
 * certificate. If the previous load had this identity and it still passes every check, keep it:
 * the rename of the certificate that follows triggers the reload that picks up the pair.
 */
static struct identity *
keep_previous(struct identity_store *s, struct identity_set *old, const char *want,
    struct trust_bundle *b, time_t now)
{
	struct identity *prev = old != NULL ? htab_get_str(&old->by_id, want) : NULL;
	char why[512];

	if (prev == NULL || cert_check_identity(&prev->chain, &prev->key, &b->crt, s->trust_domain,
	    now, NULL, 0, why, sizeof(why)) != 0)
		return NULL;
	/* Its TLS configurations may still trust the previous bundle: only until that next reload. */
	log_info("identity %s: the key does not match the certificate (rotation in progress?); "
	    "keeping the previous certificate", prev->crt_path);
	return identity_ref(prev);
}

static bool
stamp_of(const char *path, struct file_stamp *st)
{
	struct stat sb;

	memset(st, 0, sizeof(*st));
	if (stat(path, &sb) != 0)
		return false;
	st->dev = sb.st_dev;
	st->ino = sb.st_ino;
	st->size = sb.st_size;
	st->mtime = sb.st_mtim;
	return true;
}

static bool
stamp_eq(const struct file_stamp *a, const struct file_stamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	    a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/*
 * The previous load's identity when neither of its files changed (files are replaced by rename,
 * so a new inode) and it was checked against this same bundle: a renewal of one identity among
 * thousands re-reads one pair, not all of them.
 */
static struct identity *
reuse_unchanged(struct identity_set *old, const char *want, const char *crt, const char *key,
    struct trust_bundle *b, time_t now)
{
	struct identity *prev = old != NULL ? htab_get_str(&old->by_id, want) : NULL;
	struct file_stamp cs, ks;

	if (prev == NULL || prev->bundle != b || prev->not_after <= now ||
	    !stamp_of(crt, &cs) || !stamp_of(key, &ks) || !stamp_eq(&cs, &prev->crt_st) ||
	    !stamp_eq(&ks, &prev->key_st))
		return NULL;
	return identity_ref(prev);
}

/*
 * mbedTLS builds the comb table of a group's base point on a key's first use (an ECDSA signature
 * with our key, a verification with a CA's) and caches it in the key's group without a lock.
 * Built here, before the key is published, so worker threads (core/worker.h) only read it.
 */
static void
warm_ec(mbedtls_pk_context *pk)
{
	mbedtls_ecp_keypair *ec;
	mbedtls_ecp_point r;
	mbedtls_mpi one;

	if (!mbedtls_pk_can_do(pk, MBEDTLS_PK_ECKEY) || (ec = mbedtls_pk_ec(*pk)) == NULL)
		return;
	mbedtls_ecp_point_init(&r);
	mbedtls_mpi_init(&one);
	if (mbedtls_mpi_lset(&one, 1) == 0)
		(void)mbedtls_ecp_mul(&ec->grp, &r, &one, &ec->grp.G, rng_fill, rng_ctx());
	mbedtls_ecp_point_free(&r);
	mbedtls_mpi_free(&one);
}

/* Loads and checks one identity; NULL (after logging why) if it is skipped. */
static struct identity *
load_one(struct identity_store *s, const struct scan_file *f, struct trust_bundle *b,
    struct identity_set *old, time_t now)
{
	struct identity *id = NULL, *res = NULL;
	char *crt = str_printf("%s/%s/%s.crt", s->cert_dir, f->ns, f->sa);
	char *key = str_printf("%s/%s/%s.key", s->cert_dir, f->ns, f->sa);
	char why[2 * SPIFFE_ID_MAX + 512], e[512], sid[SPIFFE_ID_MAX], want[SPIFFE_ID_MAX];
	int r;

	why[0] = '\0';
	if (crt == NULL || key == NULL || (id = calloc(1, sizeof(*id))) == NULL) {
		log_error("identity %s/%s: out of memory", f->ns, f->sa);
		goto out;
	}
	id->refs = 1;
	mbedtls_x509_crt_init(&id->chain);
	mbedtls_pk_init(&id->key);
	mbedtls_ssl_config_init(&id->server);
	mbedtls_ssl_config_init(&id->client);
	if (spiffe_format(want, sizeof(want), s->trust_domain, f->ns, f->sa) != 0) {
		snprintf(why, sizeof(why), "SPIFFE ID too long");
		goto out;
	}
	if ((res = reuse_unchanged(old, want, crt, key, b, now)) != NULL)
		goto out;
	/* Stamps first: a file replaced while it is read is read again next time. */
	stamp_of(crt, &id->crt_st);
	stamp_of(key, &id->key_st);
	if (cert_load_chain(crt, &id->chain, e, sizeof(e)) != 0) {
		snprintf(why, sizeof(why), "%s", e);
		goto out;
	}
	if (cert_load_key(key, &id->key, e, sizeof(e)) != 0) {
		snprintf(why, sizeof(why), "key %s: %s", key, e);
		goto out;
	}
	/* The key pair is checked apart, so a mid-rotation mismatch can be told from the rest. */
	if (cert_check_identity(&id->chain, NULL, &b->crt, s->trust_domain, now, sid, sizeof(sid), e,
	    sizeof(e)) != 0) {
		snprintf(why, sizeof(why), "%s", e);
		goto out;
	}
	if (strcmp(sid, want) != 0) {
		snprintf(why, sizeof(why), "the certificate is for %s, but its place in %s means %s",
		    sid, s->cert_dir, want);
		goto out;
	}
	if (mbedtls_pk_check_pair(&id->chain.pk, &id->key) != 0) {
		res = keep_previous(s, old, want, b, now);
		if (res == NULL)
			snprintf(why, sizeof(why), "key %s does not match the certificate", key);
		goto out;
	}
	warm_ec(&id->key);
	if ((id->spiffe_id = strdup(sid)) == NULL || (id->ns = strdup(f->ns)) == NULL ||
	    (id->sa = strdup(f->sa)) == NULL) {
		log_error("identity %s: out of memory", crt);
		goto out;
	}
	id->crt_path = crt;
	crt = NULL;
	id->not_before = cert_not_before(&id->chain);
	id->not_after = cert_not_after(&id->chain);
	id->bundle = trust_bundle_ref(b);
	r = tls_conf_init(&id->server, MBEDTLS_SSL_IS_SERVER, &id->chain, &id->key, &b->crt);
	if (r == 0)
		r = tls_conf_init(&id->client, MBEDTLS_SSL_IS_CLIENT, &id->chain, &id->key, &b->crt);
	if (r != 0) {
		snprintf(why, sizeof(why), "cannot set up TLS (mbedTLS error -0x%04x)", (unsigned)-r);
		crt = id->crt_path;
		id->crt_path = NULL;
		goto out;
	}
	warn_expiry(s, id, now);
	res = id;
	id = NULL;
out:
	if (res == NULL && why[0] != '\0')
		log_warn("identity %s: skipped: %s", crt != NULL ? crt : "?", why);
	identity_unref(id);
	free(crt);
	free(key);
	return res;
}

static int
cmp_identity(const void *a, const void *b)
{
	return strcmp((*(struct identity *const *)a)->spiffe_id,
	    (*(struct identity *const *)b)->spiffe_id);
}

static int
load_bundle(struct identity_store *s, struct trust_bundle **out)
{
	const char *path = s->trust_bundle;
	struct trust_bundle *b;
	char why[512];
	bool had;
	int r;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if (b == NULL)
		return AMESH_ERR_NOMEM;
	b->refs = 1;
	/* An unchanged bundle is the same bundle, so the identities checked against it stay. */
	if (stamp_of(path, &b->st)) {
		struct identity_set *cur = current_set(s);

		if (cur != NULL && cur->bundle != NULL && stamp_eq(&cur->bundle->st, &b->st)) {
			*out = trust_bundle_ref(cur->bundle);
			set_unref(cur);
			free(b);
			return 0;
		}
		set_unref(cur);
	}
	r = cert_load_chain(path, &b->crt, why, sizeof(why));
	if (r != 0) {
		pthread_mutex_lock(&s->mu);
		had = s->cur != NULL;
		pthread_mutex_unlock(&s->mu);
		/* At start there is nothing to keep: say what is missing instead. */
		if (had)
			log_error("identity: trust bundle %s: %s; the previous identities stay in force",
			    path, why);
		else
			log_error("identity: trust bundle %s: %s; no identity is loaded without it: "
			    "install the CA certificate there (ca.crt of amesh ca init)", path, why);
		trust_bundle_unref(b);
		return r;
	}
	for (mbedtls_x509_crt *c = &b->crt; c != NULL && c->raw.len > 0; c = c->next)
		warm_ec(&c->pk);
	*out = b;
	return 0;
}

/* Publishes the namespace directories of a scan for the watcher (takes sc's list). */
static void
set_ns_dirs(struct identity_store *s, struct scan *sc)
{
	char **old;
	size_t n_old;

	pthread_mutex_lock(&s->mu);
	old = s->ns_dirs;
	n_old = s->n_ns_dirs;
	s->ns_dirs = sc->ns;
	s->n_ns_dirs = sc->n_ns;
	pthread_mutex_unlock(&s->mu);
	sc->ns = NULL;
	sc->n_ns = 0;
	free_names(old, n_old);
}

static int
reload_locked(struct identity_store *s)
{
	struct identity_set *set = NULL, *old = NULL;
	struct trust_bundle *b = NULL;
	struct scan sc;
	time_t now = time(NULL);
	size_t skipped = 0;
	int r;

	r = scan_cert_dir(s, &sc);
	if (r != 0)
		return r;
	set_ns_dirs(s, &sc);
	r = load_bundle(s, &b);
	if (r != 0)
		goto out;
	set = calloc(1, sizeof(*set));
	if (set == NULL || (sc.n_files > 0 &&
	    (set->v = calloc(sc.n_files, sizeof(*set->v))) == NULL)) {
		r = AMESH_ERR_NOMEM;
		goto out;
	}
	set->refs = 1;
	set->bundle = trust_bundle_ref(b);
	old = current_set(s);
	for (size_t i = 0; i < sc.n_files; i++) {
		struct identity *id = load_one(s, &sc.files[i], b, old, now);

		if (id != NULL)
			set->v[set->n++] = id;
		else
			skipped++;
	}
	/* Already in path order, which is SPIFFE ID order but for '/' vs. other bytes: sort. */
	if (set->n > 1)
		qsort(set->v, set->n, sizeof(*set->v), cmp_identity);
	htab_init(&set->by_id, set->n);
	for (size_t i = 0; i < set->n; i++)
		htab_put(&set->by_id, set->v[i]->spiffe_id, strlen(set->v[i]->spiffe_id), set->v[i]);
	log_info("identity %s: %zu identit%s loaded, %zu skipped", s->cert_dir, set->n,
	    set->n == 1 ? "y" : "ies", skipped);
	r = (int)set->n;
	pthread_mutex_lock(&s->mu);
	set_unref(s->cur);
	s->cur = set;
	set = NULL;
	pthread_mutex_unlock(&s->mu);
out:
	set_unref(old);
	set_unref(set);
	trust_bundle_unref(b);
	scan_free(&sc);
	return r;
}

int
identity_store_reload(struct identity_store *s)
{
	int r;

	pthread_mutex_lock(&s->reload_mu);
	r = reload_locked(s);
	pthread_mutex_unlock(&s->reload_mu);
	return r;
}

struct identity *
identity_store_get(struct identity_store *s, const char *spiffe_id)
{
	struct identity *id = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->cur != NULL)
		id = identity_ref(htab_get_str(&s->cur->by_id, spiffe_id));
	pthread_mutex_unlock(&s->mu);
	return id;
}

struct identity *
identity_store_get_sa(struct identity_store *s, const char *ns, const char *sa)
{
	char id[SPIFFE_ID_MAX];

	if (spiffe_format(id, sizeof(id), s->trust_domain, ns, sa) != 0)
		return NULL;
	return identity_store_get(s, id);
}

struct trust_bundle *
identity_store_bundle(struct identity_store *s)
{
	struct trust_bundle *b;

	pthread_mutex_lock(&s->mu);
	b = trust_bundle_ref(s->cur != NULL ? s->cur->bundle : NULL);
	pthread_mutex_unlock(&s->mu);
	return b;
}

size_t
identity_store_list(struct identity_store *s, struct identity ***out)
{
	struct identity_set *set = current_set(s);
	struct identity **v = NULL;
	size_t n = 0;

	*out = NULL;
	if (set == NULL || set->n == 0)
		goto out;
	v = calloc(set->n, sizeof(*v));
	if (v == NULL)
		goto out;
	for (n = 0; n < set->n; n++)
		v[n] = identity_ref(set->v[n]);
	*out = v;
out:
	set_unref(set);
	return n;
}

/* Watching. Everything below runs on the loop thread, except reload_work. */

static void start_reload(struct identity_store *s);

static void
on_timer(uv_timer_t *t)
{
	struct identity_store *s = t->data;

	if (s->in_flight) {
		s->again = true;
		return;
	}
	start_reload(s);
}

/* (Re)starts the settle timer: a burst of writes ends in one reload. */
static void
arm(struct identity_store *s)
{
	if (s->watching)
		uv_timer_start(&s->timer, on_timer, IDENTITY_SETTLE_MS, 0);
}

static void
on_fs_event(uv_fs_event_t *ev, const char *filename, int events, int status)
{
	struct dir_watch *w = ev->data;

	(void)events;
	if (status < 0)
		log_warn("identity %s: watch: %s", w->path, amesh_strerror(status));
	if (w->only != NULL && filename != NULL && strcmp(filename, w->only) != 0)
		return;
	arm(w->s);
}

static void
on_watch_closed(uv_handle_t *h)
{
	struct dir_watch *w = h->data;
	struct identity_store *s = w->s;

	free(w->path);
	free(w->only);
	free(w);
	s->open_handles--;
	maybe_destroy(s);
}

static void
close_watch(struct dir_watch *w)
{
	uv_close((uv_handle_t *)&w->ev, on_watch_closed);
}

/* Watches dir; only (if not NULL) limits the events that count to that file name. */
static int
add_watch(struct identity_store *s, const char *dir, const char *only, bool ns)
{
	struct dir_watch *w = calloc(1, sizeof(*w));
	int r;

	if (w == NULL || (w->path = strdup(dir)) == NULL ||
	    (only != NULL && (w->only = strdup(only)) == NULL)) {
		if (w != NULL)
			free(w->path);
		free(w);
		return AMESH_ERR_NOMEM;
	}
	w->s = s;
	w->ns = ns;
	w->ev.data = w;
	r = uv_fs_event_init(s->loop, &w->ev);
	if (r != 0) {
		free(w->path);
		free(w->only);
		free(w);
		return r;
	}
	s->open_handles++;
	r = uv_fs_event_start(&w->ev, on_fs_event, dir, 0);
	if (r != 0) {
		close_watch(w);
		return r;
	}
	w->next = s->watches;
	s->watches = w;
	return 0;
}

/*
 * Watches exactly the namespace directories the last scan found. Returns how many watches were
 * added: files written to a new directory before its watch started are caught by one more reload.
 */
static int
sync_ns_watches(struct identity_store *s)
{
	struct dir_watch **pp, *w;
	char **names = NULL;
	size_t n = 0;
	int added = 0;

	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->n_ns_dirs; i++)
		if (push_name(&names, &n, s->ns_dirs[i]) != 0)
			break;
	pthread_mutex_unlock(&s->mu);
	for (w = s->watches; w != NULL; w = w->next)
		w->keep = !w->ns;
	for (size_t i = 0; i < n; i++) {
		char *path = str_printf("%s/%s", s->cert_dir, names[i]);
		int r;

		if (path == NULL)
			break;
		for (w = s->watches; w != NULL; w = w->next)
			if (w->ns && strcmp(w->path, path) == 0)
				break;
		if (w != NULL) {
			w->keep = true;
		} else if ((r = add_watch(s, path, NULL, true)) == 0) {
			s->watches->keep = true;
			added++;
		} else {
			log_warn("identity %s: cannot watch: %s", path, amesh_strerror(r));
		}
		free(path);
	}
	for (pp = &s->watches; (w = *pp) != NULL;) {
		if (w->keep) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		close_watch(w);
	}
	free_names(names, n);
	return added;
}

static void
reload_work(uv_work_t *req)
{
	identity_store_reload(req->data);
}

static void
reload_done(uv_work_t *req, int status)
{
	struct identity_store *s = req->data;

	(void)status;
	s->in_flight = false;
	if (!s->watching) {
		maybe_destroy(s);
		return;
	}
	if (sync_ns_watches(s) > 0)
		arm(s);
	if (s->again) {
		s->again = false;
		start_reload(s);
	}
}

static void
start_reload(struct identity_store *s)
{
	int r;

	s->work.data = s;
	s->in_flight = true;
	r = uv_queue_work(s->loop, &s->work, reload_work, reload_done);
	if (r != 0) {
		s->in_flight = false;
		log_error("identity %s: cannot start a reload: %s", s->cert_dir, amesh_strerror(r));
	}
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct identity_store *s = h->data;

	s->timer_open = false;
	s->open_handles--;
	maybe_destroy(s);
}

int
identity_store_watch(struct identity_store *s, uv_loop_t *loop)
{
	const char *slash;
	char *bdir = NULL;
	int r;

	if (s->watching || s->timer_open || s->free_requested)
		return -EBUSY;
	if (s->open_handles > 0 && s->loop != loop)
		return -EBUSY;
	s->loop = loop;
	r = uv_timer_init(loop, &s->timer);
	if (r != 0)
		return r;
	s->timer.data = s;
	s->timer_open = true;
	s->open_handles++;
	s->watching = true;
	r = add_watch(s, s->cert_dir, NULL, false);
	if (r != 0) {
		log_error("identity %s: cannot watch: %s", s->cert_dir, amesh_strerror(r));
		goto out;
	}
	slash = strrchr(s->trust_bundle, '/');
	if (slash == NULL)
		bdir = strdup(".");
	else if (slash == s->trust_bundle)
		bdir = strdup("/");
	else
		bdir = strndup(s->trust_bundle, (size_t)(slash - s->trust_bundle));
	if (bdir == NULL) {
		r = AMESH_ERR_NOMEM;
		goto out;
	}
	/* A bundle inside cert_dir is covered by cert_dir's own watch. */
	if (strcmp(bdir, s->cert_dir) != 0) {
		r = add_watch(s, bdir, slash ? slash + 1 : s->trust_bundle, false);
		if (r != 0) {
			log_error("identity %s: cannot watch: %s", bdir, amesh_strerror(r));
			goto out;
		}
	}
	sync_ns_watches(s);
	r = 0;
out:
	free(bdir);
	if (r != 0)
		identity_store_unwatch(s);
	return r;
}

void
identity_store_unwatch(struct identity_store *s)
{
	struct dir_watch *w;

	if (s == NULL || !s->watching)
		return;
	s->watching = false;
	s->again = false;
	uv_timer_stop(&s->timer);
	uv_close((uv_handle_t *)&s->timer, on_timer_closed);
	while ((w = s->watches) != NULL) {
		s->watches = w->next;
		close_watch(w);
	}
}
