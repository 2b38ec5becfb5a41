/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry loader. Three passes: parse every file into entries (syntax and per-key values), then
 * resolve names and check the whole (regcheck.c: references, uniqueness, per-kind rules), then
 * build the indexes. Any error fails the load: a registry is used whole or not at all. The
 * keyword tables are regkw.c, the snapshot's lookups reglookup.c, the holder regholder.c.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/ini.h"
#include "config/registry-int.h"
#include "config/registry.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"

/* How many keys kind k has. */
static size_t
nkeys(int k)
{
	size_t n;

	registry_keywords((enum reg_kind)k, &n);
	return n;
}

static const size_t kind_size[REG_NKINDS] = {
	sizeof(struct reg_node), sizeof(struct reg_workload), sizeof(struct reg_service),
	sizeof(struct reg_waypoint), sizeof(struct reg_policy), sizeof(struct reg_route),
	sizeof(struct reg_namespace),
};

static void
ent_free(enum reg_kind k, void *e)
{
	struct reg_head *h = e;

	if (e == NULL)
		return;
	size_t n;
	const struct kw *kws = registry_keywords(k, &n);

	for (size_t i = 0; i < n; i++)
		kw_free(&kws[i], e);
	if (k == REG_SERVICE)
		free(((struct reg_service *)e)->endpoints);
	if (k == REG_ROUTE) {
		struct reg_route *rt = e;

		free(rt->backends_p);
		if (rt->has_path_re)
			regfree(&rt->path_re);
	}
	free(h->keyline);
	free(h->name);
	free(e);
}

static void
registry_free(struct registry *r)
{
	for (int k = 0; k < REG_NKINDS; k++) {
		for (size_t i = 0; i < r->n[k]; i++)
			ent_free(k, r->ent[k][i]);
		free(r->ent[k]);
		htab_free(&r->by_name[k]);
	}
	htab_free(&r->by_addr);
	htab_free(&r->by_vip);
	htab_free(&r->by_hostname);
	if (r->by_ns_policy.e != NULL) {
		for (size_t i = 0; i < r->by_ns_policy.cap; i++)
			if (r->by_ns_policy.e[i].key != NULL)
				free(r->by_ns_policy.e[i].val);
		htab_free(&r->by_ns_policy);
	}
	free(r->addr_owners);
	free(r->vip_keys);
	free(r->vip_vals);
	for (size_t i = 0; i < r->n_files; i++)
		free(r->files[i]);
	free(r->files);
	free(r);
}

struct registry *
registry_ref(struct registry *r)
{
	if (r != NULL)
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void
registry_unref(struct registry *r)
{
	if (r != NULL && __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0)
		registry_free(r);
}

/* Splits `kind "name"`; returns the kind, or AMESH_ERR_INVALID with a message in b->d. */
static int
parse_header(struct builder *b, const char *text, int line, char **name)
{
	const char *sp = strpbrk(text, " \t");
	size_t kl = sp ? (size_t)(sp - text) : strlen(text);
	const char *q;
	int k;

	*name = NULL;
	for (k = 0; k < REG_NKINDS; k++)
		if (strlen(registry_kind_name(k)) == kl && strncmp(text, registry_kind_name(k), kl) == 0)
			break;
	if (k == REG_NKINDS) {
		diag_add(b->d, b->file, line, "unknown section kind '%.*s' (expected node, workload, "
		    "service, waypoint, policy, route or namespace)", (int)kl, text);
		return AMESH_ERR_INVALID;
	}
	q = sp ? sp + strspn(sp, " \t") : NULL;
	if (q == NULL || *q != '"') {
		diag_add(b->d, b->file, line, "section [%s] needs a name: [%s \"NAME\"]",
		    registry_kind_name(k), registry_kind_name(k));
		return AMESH_ERR_INVALID;
	}
	q++;
	sp = strchr(q, '"');
	if (sp == NULL || sp[1] != '\0') {
		diag_add(b->d, b->file, line, "section name must be one double-quoted word: "
		    "[%s \"NAME\"]", registry_kind_name(k));
		return AMESH_ERR_INVALID;
	}
	*name = xstrndup(q, (size_t)(sp - q));
	if (!kw_is_hostname(*name)) {
		diag_add(b->d, b->file, line, "%s name '%s' is not valid (lower-case letters, digits, "
		    "'-' and '.', at most 253)", registry_kind_name(k), *name);
		free(*name);
		*name = NULL;
		return AMESH_ERR_INVALID;
	}
	return k;
}

static void
on_section(void *user, const char *text, int line)
{
	struct builder *b = user;
	struct registry *r = b->r;
	struct reg_head *h, *prev;
	char *name;
	int k;

	b->cur = NULL;
	b->kind = -1;
	b->in_section = true;
	if (text == NULL)
		return;
	k = parse_header(b, text, line, &name);
	if (k < 0)
		return;
	if (b->total >= REG_MAX_ENTRIES) {
		if (b->total++ == REG_MAX_ENTRIES)
			diag_add(b->d, b->file, line, "registry has more than %d entries",
			    REG_MAX_ENTRIES);
		free(name);
		return;
	}
	b->total++;
	/* Names are checked for duplicates now, against a growing list: cheap with the hash below. */
	if (r->by_name[k].cap == 0)
		htab_init(&r->by_name[k], 1024);
	if (r->by_name[k].n * 2 + 2 > r->by_name[k].cap) {
		struct htab bigger;

		htab_init(&bigger, r->by_name[k].cap);
		for (size_t i = 0; i < r->n[k]; i++) {
			struct reg_head *eh = r->ent[k][i];

			htab_put(&bigger, eh->name, strlen(eh->name), eh);
		}
		htab_free(&r->by_name[k]);
		r->by_name[k] = bigger;
	}
	h = xcalloc(1, kind_size[k]);
	h->file = b->file;
	h->line = line;
	h->name = name;
	h->keyline = xcalloc(nkeys(k), sizeof(int));
	prev = htab_put(&r->by_name[k], h->name, strlen(h->name), h);
	if (prev != NULL) {
		diag_add(b->d, b->file, line, "duplicate %s \"%s\" (first defined at %s:%d)",
		    registry_kind_name(k), name, prev->file, prev->line);
		ent_free(k, h);
		return;
	}
	if (r->n[k] == b->cap[k]) {
		b->cap[k] = b->cap[k] ? b->cap[k] * 2 : 64;
		r->ent[k] = xrealloc(r->ent[k], b->cap[k], sizeof(void *));
	}
	r->ent[k][r->n[k]++] = h;
	b->cur = h;
	b->kind = k;
}

static void
on_key(void *user, const char *section, const char *key, const char *value, int line)
{
	struct builder *b = user;
	char why[512];
	int k = b->kind;

	if (!b->in_section) {
		diag_add(b->d, b->file, line, "key '%s' outside of any section", key);
		return;
	}
	if (b->cur == NULL)
		return; /* the header was bad and has been reported */
	size_t nkw;
	const struct kw *kws = registry_keywords((enum reg_kind)k, &nkw);

	for (size_t i = 0; i < nkw; i++) {
		const struct kw *kw = &kws[i];

		if (strcmp(kw->key, key) != 0)
			continue;
		if (b->cur->keyline[i] != 0 && !kw_is_list(kw->type)) {
			diag_add(b->d, b->file, line, "%s \"%s\": duplicate key '%s' (first set at "
			    "line %d)", registry_kind_name(k), b->cur->name, key, abs(b->cur->keyline[i]));
			return;
		}
		if (b->cur->keyline[i] < 0)
			return; /* an earlier line of this list was bad and has been reported */
		/* A list key may repeat: its lines add up (lines are at most 198 bytes). */
		if ((b->cur->keyline[i] > 0 ? kw_append(kw, b->cur, value, why, sizeof(why)) :
		    kw_set(kw, b->cur, value, NULL, why, sizeof(why))) != 0) {
			diag_add(b->d, b->file, line, "%s \"%s\": %s: %s", registry_kind_name(k),
			    b->cur->name, key, why);
			/* Given but invalid: not "missing", and not valid for the checks (see has()). */
			b->cur->keyline[i] = -line;
			return;
		}
		if (b->cur->keyline[i] == 0)
			b->cur->keyline[i] = line;
		return;
	}
	diag_add(b->d, b->file, line, "%s \"%s\": unknown key '%s'", registry_kind_name(k), b->cur->name,
	    key);
}

static void
builder_add(struct builder *b, const char *file, const char *data, size_t len)
{
	static const struct ini_callbacks cb = { on_section, on_key };
	struct registry *r = b->r;

	r->files = xrealloc(r->files, r->n_files + 1, sizeof(char *));
	r->files[r->n_files] = xstrdup(file);
	b->file = r->files[r->n_files++];
	b->cur = NULL;
	b->kind = -1;
	b->in_section = false;
	ini_parse_buffer(b->file, data, len, &cb, b, b->d);
}


static int
builder_finish(struct builder *b, struct registry **out)
{
	struct registry *r = b->r;

	for (int k = 0; k < REG_NKINDS; k++)
		if (r->by_name[k].cap == 0)
			htab_init(&r->by_name[k], 0);
	registry_check(b);
	if (diag_count(b->d) != b->diag_before) {
		registry_free(r);
		return AMESH_ERR_INVALID;
	}
	r->refs = 1;
	*out = r;
	return 0;
}

static void
builder_init(struct builder *b, struct diag *d)
{
	memset(b, 0, sizeof(*b));
	static uint64_t gen;

	b->r = xcalloc(1, sizeof(*b->r));
	b->r->gen = __atomic_add_fetch(&gen, 1, __ATOMIC_RELAXED);
	b->d = d;
	b->diag_before = diag_count(d);
}

int
registry_parse_buffer(const char *file, const char *data, size_t len, struct registry **out,
    struct diag *d)
{
	struct builder b;

	*out = NULL;
	builder_init(&b, d);
	builder_add(&b, file, data, len);
	return builder_finish(&b, out);
}

int
registry_load_files(char *const *paths, size_t n, struct registry **out, struct diag *d)
{
	struct builder b;

	*out = NULL;
	builder_init(&b, d);
	for (size_t i = 0; i < n; i++) {
		char *data;
		size_t len;

		if (ini_slurp(paths[i], &data, &len, d) != 0)
			continue;
		builder_add(&b, paths[i], data, len);
		free(data);
	}
	return builder_finish(&b, out);
}

int
registry_load_buffers(const struct registry_buf *f, size_t n, struct registry **out,
    struct diag *d)
{
	struct builder b;

	*out = NULL;
	if (n > REG_MAX_FILES) {
		diag_add(d, n > 0 ? f[0].name : "registry", 0, "more than %d registry files",
		    REG_MAX_FILES);
		return AMESH_ERR_INVALID;
	}
	builder_init(&b, d);
	for (size_t i = 0; i < n; i++)
		builder_add(&b, f[i].name, f[i].data, f[i].len);
	return builder_finish(&b, out);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
registry_load_dir(const char *dir, struct registry **out, struct diag *d)
{
	DIR *dp;
	struct dirent *de;
	char **paths = NULL;
	size_t n = 0, before = diag_count(d);
	int r;

	*out = NULL;
	dp = opendir(dir);
	if (dp == NULL) {
		r = -errno;
		diag_add(d, dir, 0, "cannot open registry directory: %s", strerror(errno));
		return r;
	}
	while ((de = readdir(dp)) != NULL) {
		if (de->d_name[0] == '.' || !str_has_suffix(de->d_name, ".conf"))
			continue;
		if (n >= REG_MAX_FILES) {
			diag_add(d, dir, 0, "more than %d registry files", REG_MAX_FILES);
			break;
		}
		paths = xrealloc(paths, n + 1, sizeof(char *));
		paths[n++] = path_join(dir, de->d_name);
	}
	closedir(dp);
	if (diag_count(d) != before) {
		r = AMESH_ERR_INVALID;
		goto out;
	}
	qsort(paths, n, sizeof(char *), cmp_str);
	r = registry_load_files(paths, n, out, d);
out:
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	return r;
}
