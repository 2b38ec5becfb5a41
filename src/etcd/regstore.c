/* SPDX-License-Identifier: Apache-2.0 */
/* The registry on etcd: snapshots, the guarded push, the local cache (regstore.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/conf.h"
#include "config/etcdurl.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "etcd/kv.h"
#include "etcd/regstore.h"

#define CACHE_VERSION 1

void
etcd_snapshot_free(struct etcd_snapshot *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->files[i].key);
		free(s->files[i].data);
	}
	free(s->files);
	free(s->pushed_by);
	free(s);
}

/* The file name of a key under PREFIX/files/, or NULL when it is no registry file. */
static const char *
file_name(const char *key, const char *files_prefix)
{
	size_t pl = strlen(files_prefix);
	const char *name = key + pl;

	if (strncmp(key, files_prefix, pl) != 0 || name[0] == '.' || strchr(name, '/') != NULL ||
	    !str_has_suffix(name, ".conf"))
		return NULL;
	return name;
}

static void
read_meta(struct etcd_snapshot *s, const char *value, size_t len)
{
	json_t *j = json_loadb(value, len, 0, NULL);
	const char *by = json_string_value(json_object_get(j, "pushed_by"));

	s->pushed_at_ms = etcd_int(json_object_get(j, "pushed_at_ms"));
	if (s->pushed_at_ms < 0)
		s->pushed_at_ms = 0;
	if (by != NULL)
		s->pushed_by = xstrdup(by);
	json_decref(j);
}

int
etcd_snapshot_read(struct etcd_client *c, const char *prefix, int64_t revision,
    struct etcd_snapshot **out, char *why, size_t whylen)
{
	char *key = xasprintf("%s/", prefix), *files = xasprintf("%s/files/", prefix),
	    *meta = xasprintf("%s/meta", prefix), *end = etcd_prefix_end(key);
	char *req = etcd_range_request(key, end, revision, REG_MAX_FILES + 64);
	struct etcd_range rg = { 0 };
	struct etcd_snapshot *s = NULL;
	json_t *resp = NULL;
	int r;

	*out = NULL;
	r = etcd_client_call(c, "/v3/kv/range", req, &resp, why, whylen);
	if (r != 0)
		goto out;
	r = etcd_range_parse(resp, &rg, REG_MAX_FILES + 63, ETCD_REG_MAX_VALUE, why, whylen);
	if (r != 0)
		goto out;
	s = xcalloc(1, sizeof(*s));
	s->read_revision = rg.revision;
	s->files = xcalloc(rg.n + 1, sizeof(*s->files));
	for (size_t i = 0; i < rg.n; i++) {
		struct etcd_kv *kv = &rg.kvs[i];
		const char *name = file_name(kv->key, files);

		if (kv->mod_revision > s->revision)
			s->revision = kv->mod_revision;
		if (strcmp(kv->key, meta) == 0) {
			s->meta_revision = kv->mod_revision;
			read_meta(s, kv->value, kv->vlen);
			continue;
		}
		if (name == NULL)
			continue;
		if (s->n == REG_MAX_FILES) {
			snprintf(why, whylen, "%s: more than %d registry files", files, REG_MAX_FILES);
			r = AMESH_ERR_TOOLONG;
			goto out;
		}
		s->files[s->n] = (struct etcd_regfile){ .key = kv->key, .data = kv->value,
			.len = kv->vlen, .mod_revision = kv->mod_revision };
		s->files[s->n].name = s->files[s->n].key + strlen(files);
		kv->key = NULL;
		kv->value = NULL;
		s->n++;
	}
	*out = s;
	s = NULL;
	r = 0;
out:
	etcd_snapshot_free(s);
	etcd_range_free(&rg);
	json_decref(resp);
	free(req);
	free(key);
	free(files);
	free(meta);
	free(end);
	return r;
}

static int
cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct etcd_regfile *)a)->key, ((const struct etcd_regfile *)b)->key);
}

int
etcd_snapshot_apply(const struct etcd_snapshot *base, const char *prefix,
    const struct etcd_event *ev, size_t n, struct etcd_snapshot **out, char *why, size_t whylen)
{
	char *files = xasprintf("%s/files/", prefix), *meta = xasprintf("%s/meta", prefix);
	struct etcd_snapshot *s = xcalloc(1, sizeof(*s));
	size_t cap = base->n + n + 1;
	int r = 0;

	*out = NULL;
	s->files = xcalloc(cap, sizeof(*s->files));
	for (size_t i = 0; i < base->n; i++) {
		struct etcd_regfile *f = &s->files[s->n++];

		f->key = xstrdup(base->files[i].key);
		f->name = f->key + (base->files[i].name - base->files[i].key);
		f->data = xmalloc(base->files[i].len + 1);
		memcpy(f->data, base->files[i].data, base->files[i].len);
		f->data[base->files[i].len] = '\0';
		f->len = base->files[i].len;
		f->mod_revision = base->files[i].mod_revision;
	}
	s->revision = base->revision;
	s->meta_revision = base->meta_revision;
	s->pushed_at_ms = base->pushed_at_ms;
	s->pushed_by = base->pushed_by != NULL ? xstrdup(base->pushed_by) : NULL;
	for (size_t e = 0; e < n; e++) {
		const struct etcd_kv *kv = &ev[e].kv;
		const char *name = file_name(kv->key, files);
		size_t i;

		if (kv->mod_revision > s->revision)
			s->revision = kv->mod_revision;
		if (strcmp(kv->key, meta) == 0) {
			free(s->pushed_by);
			s->pushed_by = NULL;
			s->pushed_at_ms = 0;
			s->meta_revision = ev[e].deleted ? 0 : kv->mod_revision;
			if (!ev[e].deleted)
				read_meta(s, kv->value, kv->vlen);
			continue;
		}
		if (name == NULL)
			continue;
		for (i = 0; i < s->n && strcmp(s->files[i].key, kv->key) != 0; i++)
			;
		if (ev[e].deleted) {
			if (i < s->n) {
				free(s->files[i].key);
				free(s->files[i].data);
				s->files[i] = s->files[--s->n];
			}
			continue;
		}
		if (i == s->n) {
			if (s->n == REG_MAX_FILES) {
				snprintf(why, whylen, "%s: more than %d registry files", files,
				    REG_MAX_FILES);
				r = AMESH_ERR_TOOLONG;
				goto out;
			}
			s->files[i].key = xstrdup(kv->key);
			s->files[i].name = s->files[i].key + strlen(files);
			s->n++;
		} else {
			free(s->files[i].data);
		}
		s->files[i].data = xmalloc(kv->vlen + 1);
		memcpy(s->files[i].data, kv->value, kv->vlen);
		s->files[i].data[kv->vlen] = '\0';
		s->files[i].len = kv->vlen;
		s->files[i].mod_revision = kv->mod_revision;
	}
	s->read_revision = s->revision;
	/* In key order, as a read returns them (and a directory sorts its files). */
	qsort(s->files, s->n, sizeof(*s->files), cmp_file);
	*out = s;
	s = NULL;
out:
	etcd_snapshot_free(s);
	free(files);
	free(meta);
	return r;
}

int
etcd_snapshot_build(const struct etcd_snapshot *s, struct registry **out, struct diag *d)
{
	struct registry_buf *b = xcalloc(s->n + 1, sizeof(*b));
	int r;

	for (size_t i = 0; i < s->n; i++)
		b[i] = (struct registry_buf){ s->files[i].key, s->files[i].data, s->files[i].len };
	r = registry_load_buffers(b, s->n, out, d);
	free(b);
	return r;
}

bool
etcd_snapshot_same(const struct etcd_snapshot *a, const struct etcd_snapshot *b)
{
	if (a == NULL || b == NULL || a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->files[i].key, b->files[i].key) != 0 || a->files[i].len != b->files[i].len ||
		    memcmp(a->files[i].data, b->files[i].data, a->files[i].len) != 0)
			return false;
	return true;
}

int
etcd_snapshot_save(const struct etcd_snapshot *s, const char *source, const char *path,
    char *why, size_t whylen)
{
	json_t *root = json_object(), *files = json_array();
	char *tmp = xasprintf("%s.%ld.tmp", path, (long)getpid()), *dir = path_dirname(path);
	char *failed = NULL;
	char stamp[64];
	int fd = -1, r;

	for (size_t i = 0; i < s->n; i++) {
		char *v = etcd_b64(s->files[i].data, s->files[i].len);

		json_array_append_new(files, json_pack("{s:s,s:I,s:s}", "key", s->files[i].key,
		    "mod_revision", (json_int_t)s->files[i].mod_revision, "value", v));
		free(v);
	}
	json_object_set_new(root, "version", json_integer(CACHE_VERSION));
	json_object_set_new(root, "source", json_string(source));
	json_object_set_new(root, "revision", json_integer(s->revision));
	json_object_set_new(root, "read_revision", json_integer(s->read_revision));
	json_object_set_new(root, "meta_revision", json_integer(s->meta_revision));
	json_object_set_new(root, "pushed_at_ms", json_integer(s->pushed_at_ms));
	if (s->pushed_by != NULL)
		json_object_set_new(root, "pushed_by", json_string(s->pushed_by));
	json_object_set_new(root, "written_at", json_string(iso_time(time(NULL), stamp,
	    sizeof(stamp))));
	json_object_set_new(root, "files", files);
	r = path_mkdir_parents(path, 0755, &failed);
	if (r != 0) {
		snprintf(why, whylen, "cannot make %s: %s", failed != NULL ? failed : dir,
		    strerror(-r));
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || json_dumpfd(root, fd, JSON_COMPACT) != 0 || fsync(fd) != 0) {
		r = -errno;
		snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) != 0) {
		r = -errno;
		snprintf(why, whylen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	/* The rename itself must survive a crash. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		fsync(fd);
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r != 0)
		unlink(tmp);
	json_decref(root);
	free(tmp);
	free(dir);
	free(failed);
	return r;
}

int
etcd_snapshot_load(const char *path, const char *source, struct etcd_snapshot **out,
    char *why, size_t whylen)
{
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je), *files, *f;
	struct etcd_snapshot *s = NULL;
	const char *src, *by;
	size_t i;
	int r = AMESH_ERR_INVALID;

	*out = NULL;
	if (root == NULL) {
		if (access(path, F_OK) != 0) {
			snprintf(why, whylen, "%s: %s", path, strerror(errno));
			return -ENOENT;
		}
		snprintf(why, whylen, "%s:%d: not a registry cache: %s", path, je.line, je.text);
		return AMESH_ERR_INVALID;
	}
	src = json_string_value(json_object_get(root, "source"));
	files = json_object_get(root, "files");
	if (etcd_int(json_object_get(root, "version")) != CACHE_VERSION || src == NULL ||
	    !json_is_array(files) || json_array_size(files) > REG_MAX_FILES) {
		snprintf(why, whylen, "%s: not a registry cache of version %d", path, CACHE_VERSION);
		goto out;
	}
	if (strcmp(src, source) != 0) {
		snprintf(why, whylen, "%s: a cache of %s, not of %s", path, src, source);
		goto out;
	}
	s = xcalloc(1, sizeof(*s));
	s->revision = etcd_int(json_object_get(root, "revision"));
	s->read_revision = etcd_int(json_object_get(root, "read_revision"));
	s->meta_revision = etcd_int(json_object_get(root, "meta_revision"));
	s->pushed_at_ms = etcd_int(json_object_get(root, "pushed_at_ms"));
	by = json_string_value(json_object_get(root, "pushed_by"));
	if (by != NULL)
		s->pushed_by = xstrdup(by);
	s->files = xcalloc(json_array_size(files) + 1, sizeof(*s->files));
	json_array_foreach(files, i, f) {
		const char *k = json_string_value(json_object_get(f, "key"));
		const char *v = json_string_value(json_object_get(f, "value"));
		struct etcd_regfile *x = &s->files[s->n];
		const char *slash;

		if (k == NULL || v == NULL || (slash = strrchr(k, '/')) == NULL ||
		    etcd_unb64(v, &x->data, &x->len) != 0) {
			snprintf(why, whylen, "%s: file %zu is damaged", path, i);
			goto out;
		}
		x->key = xstrdup(k);
		x->name = x->key + (slash - k) + 1;
		x->mod_revision = etcd_int(json_object_get(f, "mod_revision"));
		s->n++;
	}
	*out = s;
	s = NULL;
	r = 0;
out:
	etcd_snapshot_free(s);
	json_decref(root);
	return r;
}

/* A put of key = value (len bytes) for a transaction's success list. */
static json_t *
op_put(const char *key, const char *value, size_t len)
{
	char *k = etcd_b64(key, strlen(key)), *v = etcd_b64(value, len);
	json_t *j = json_pack("{s:{s:s,s:s}}", "request_put", "key", k, "value", v);

	free(k);
	free(v);
	return j;
}

static json_t *
op_delete(const char *key)
{
	char *k = etcd_b64(key, strlen(key));
	json_t *j = json_pack("{s:{s:s}}", "request_delete_range", "key", k);

	free(k);
	return j;
}

int
etcd_push(struct etcd_client *c, const char *prefix, const struct etcd_snapshot *base,
    const struct etcd_push_file *files, size_t n, const char *meta_json, bool force,
    int64_t *revision, char *why, size_t whylen)
{
	char *all = xasprintf("%s/", prefix), *end = etcd_prefix_end(all),
	    *meta = xasprintf("%s/meta", prefix);
	char *b_all = etcd_b64(all, strlen(all)), *b_end = etcd_b64(end, strlen(end)),
	    *b_meta = etcd_b64(meta, strlen(meta));
	json_t *txn = json_object(), *cmp = json_array(), *ops = json_array(), *resp = NULL;
	char *body = NULL;
	int r;

	*revision = 0;
	for (size_t i = 0; i < base->n; i++) {
		const struct etcd_regfile *f = &base->files[i];
		bool keep = false;

		for (size_t j = 0; j < n && !keep; j++)
			keep = strcmp(files[j].name, f->name) == 0;
		if (!keep)
			json_array_append_new(ops, op_delete(f->key));
	}
	for (size_t j = 0; j < n; j++) {
		const struct etcd_regfile *old = NULL;
		char *key;

		for (size_t i = 0; i < base->n && old == NULL; i++)
			if (strcmp(files[j].name, base->files[i].name) == 0)
				old = &base->files[i];
		if (old != NULL && old->len == files[j].len &&
		    memcmp(old->data, files[j].data, old->len) == 0)
			continue;
		key = xasprintf("%s/files/%s", prefix, files[j].name);
		json_array_append_new(ops, op_put(key, files[j].data, files[j].len));
		free(key);
	}
	json_array_append_new(ops, op_put(meta, meta_json, strlen(meta_json)));
	if (!force) {
		/* Nothing under the prefix written since the read, and meta not created or deleted
		 * since (a range compare cannot see a deletion; every push rewrites meta). */
		json_array_append_new(cmp, json_pack("{s:s,s:s,s:s,s:s,s:I}", "target", "MOD",
		    "key", b_all, "range_end", b_end, "result", "LESS", "mod_revision",
		    (json_int_t)base->read_revision + 1));
		json_array_append_new(cmp, json_pack("{s:s,s:s,s:s,s:I}", "target", "MOD", "key",
		    b_meta, "result", "EQUAL", "mod_revision", (json_int_t)base->meta_revision));
	}
	json_object_set_new(txn, "compare", cmp);
	json_object_set_new(txn, "success", ops);
	body = json_dumps(txn, JSON_COMPACT);
	if (body == NULL) {
		r = AMESH_ERR_NOMEM;
		goto out;
	}
	r = etcd_client_call(c, "/v3/kv/txn", body, &resp, why, whylen);
	if (r != 0)
		goto out;
	*revision = etcd_int(json_object_get(json_object_get(resp, "header"), "revision"));
	if (!json_is_true(json_object_get(resp, "succeeded"))) {
		snprintf(why, whylen, "the registry under %s changed after it was read at revision "
		    "%lld (etcd is at %lld now): another push won. Look with amesh registry diff, "
		    "then push again, or push --force to overwrite", prefix,
		    (long long)base->read_revision, (long long)*revision);
		r = AMESH_ERR_EXISTS;
		goto out;
	}
	r = 0;
out:
	json_decref(txn);
	json_decref(resp);
	free(body);
	free(all);
	free(end);
	free(meta);
	free(b_all);
	free(b_end);
	free(b_meta);
	return r;
}

int
registry_source_read(const struct amesh_conf *conf, bool use_cache, struct registry **out,
    char *what, size_t whatlen, struct diag *d)
{
	struct etcd_url u;
	struct etcd_client *c = NULL;
	struct etcd_snapshot *s = NULL;
	char why[1024];
	int r;

	*out = NULL;
	snprintf(what, whatlen, "%s", conf->mesh.registry);
	if (!etcd_url_is(conf->mesh.registry))
		return registry_load_dir(conf->mesh.registry, out, d);
	r = etcd_url_parse(conf->mesh.registry, &u, why, sizeof(why));
	if (r == 0)
		r = etcd_client_new(&(struct etcd_client_cfg){ .endpoints = u.endpoints, .n = u.n,
		    .ca = conf->mesh.etcd_ca, .cert = conf->mesh.etcd_cert,
		    .key = conf->mesh.etcd_key,
		    .timeout_ms = conf->mesh.etcd_timeout }, &c, why, sizeof(why));
	if (r == 0)
		r = etcd_snapshot_read(c, u.prefix, 0, &s, why, sizeof(why));
	if (r != 0 && use_cache && r != ETCD_ERR_COMPACTED && r != AMESH_ERR_INVALID) {
		char cwhy[512];

		/* etcd unreachable: the last good snapshot a role on this host cached. */
		if (etcd_snapshot_load(conf->mesh.registry_cache, conf->mesh.registry, &s, cwhy,
		    sizeof(cwhy)) == 0) {
			log_warn("registry %s: %s; using the cache %s", conf->mesh.registry, why,
			    conf->mesh.registry_cache);
			r = 0;
		}
	}
	if (r != 0) {
		diag_add(d, conf->mesh.registry, 0, "%s", why);
	} else {
		struct diag pd;

		diag_init(&pd);
		snprintf(what, whatlen, "%s (revision %lld)", conf->mesh.registry,
		    (long long)s->revision);
		r = etcd_snapshot_build(s, out, &pd);
		for (size_t i = 0; i < pd.n; i++)
			diag_add(d, conf->mesh.registry, 0, "revision %lld: %s", (long long)s->revision,
			    pd.msg[i]);
		diag_clear(&pd);
	}
	etcd_snapshot_free(s);
	etcd_client_free(c);
	etcd_url_free(&u);
	return r;
}
