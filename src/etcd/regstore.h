/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry on etcd (amesh-registry(5), ETCD): every registry file is the key
 * PREFIX/files/NAME.conf holding the file's INI text, and PREFIX/meta records the last push
 * ({"pushed_at_ms", "pushed_by", "source", "files"}). A snapshot is the whole prefix read at one
 * revision; it becomes a registry through the same parser and checks as a directory, its
 * messages naming the key and line. A local cache file keeps the last good snapshot for a role
 * that starts while etcd is unreachable.
 *
 * Bounds: at most REG_MAX_FILES files of at most ETCD_REG_MAX_VALUE bytes each; more is an error
 * naming the key, never a partial load.
 */
#ifndef AMESH_ETCD_REGSTORE_H
#define AMESH_ETCD_REGSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/registry.h"
#include "core/diag.h"
#include "etcd/client.h"

#define ETCD_REG_MAX_VALUE (4u * 1024 * 1024)

struct etcd_regfile {
	char *key;              /* "/amesh/files/base.conf" */
	const char *name;       /* "base.conf", inside key */
	char *data;
	size_t len;
	int64_t mod_revision;
};

struct etcd_snapshot {
	int64_t revision;       /* the newest change under the prefix (max mod_revision); 0: empty */
	int64_t read_revision;  /* the store's revision it was read at */
	struct etcd_regfile *files; /* sorted by key, as etcd returns them */
	size_t n;
	int64_t meta_revision;  /* PREFIX/meta's mod_revision; 0: no push recorded */
	int64_t pushed_at_ms;   /* its pushed_at_ms (Unix ms); 0: none */
	char *pushed_by;        /* its pushed_by; NULL: none */
};

/* Accepts NULL. */
void etcd_snapshot_free(struct etcd_snapshot *s);

/*
 * Reads prefix at revision (0: the latest). Keys under PREFIX/files/ that are not "NAME.conf"
 * (one level, no dot file) are ignored, as a directory's other files are. Returns 0 with *out,
 * or a code of etcd_client_call (ETCD_ERR_COMPACTED when revision is gone) with why.
 */
int etcd_snapshot_read(struct etcd_client *c, const char *prefix, int64_t revision,
    struct etcd_snapshot **out, char *why, size_t whylen);

struct etcd_event;
/*
 * The snapshot at the revision of events (a watch's, in order) from base, the snapshot at the
 * revision just before them: what etcd_snapshot_read would read at that revision, without the
 * read. 0 with *out, or AMESH_ERR_TOOLONG (more than REG_MAX_FILES files) with why.
 */
int etcd_snapshot_apply(const struct etcd_snapshot *base, const char *prefix,
    const struct etcd_event *ev, size_t n, struct etcd_snapshot **out, char *why, size_t whylen);

/* Parses and validates the snapshot's files as one registry; as registry_load_buffers. */
int etcd_snapshot_build(const struct etcd_snapshot *s, struct registry **out, struct diag *d);

/* True if both hold the same file names and contents. */
bool etcd_snapshot_same(const struct etcd_snapshot *a, const struct etcd_snapshot *b);

/*
 * Writes s to path atomically (a temporary file beside it, fsync, rename), with source (the
 * etcd:// URL) to refuse a cache of another source later. 0 or -errno with why.
 */
int etcd_snapshot_save(const struct etcd_snapshot *s, const char *source, const char *path,
    char *why, size_t whylen);
/* Reads what etcd_snapshot_save wrote for source. 0, -ENOENT, or another code with why. */
int etcd_snapshot_load(const char *path, const char *source, struct etcd_snapshot **out,
    char *why, size_t whylen);

struct etcd_push_file {
	const char *name;       /* "base.conf" */
	const char *data;
	size_t len;
};

/*
 * Replaces every file under PREFIX/files/ by files in one transaction, and records the push in
 * PREFIX/meta (meta_json). Unless force, the transaction applies only if nothing under the prefix
 * changed since base was read (base->read_revision, base->meta_revision): else AMESH_ERR_EXISTS
 * and why says so. Unchanged files are not rewritten (etcd's --max-txn-ops, default 128, bounds
 * the operations of one transaction). 0 with *revision the new revision.
 */
int etcd_push(struct etcd_client *c, const char *prefix, const struct etcd_snapshot *base,
    const struct etcd_push_file *files, size_t n, const char *meta_json, bool force,
    int64_t *revision, char *why, size_t whylen);

struct amesh_conf;
/*
 * The registry of conf's [mesh] registry, read once, whichever the source: a directory, or etcd
 * (with use_cache, its registry_cache when etcd does not answer, with a warning). 0 with *out,
 * or a code with d saying why; what names where it came from ("etcd://... (revision 42)").
 */
int registry_source_read(const struct amesh_conf *conf, bool use_cache, struct registry **out,
    char *what, size_t whatlen, struct diag *d);

#endif
