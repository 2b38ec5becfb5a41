/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The identity store: every certificate under cert_dir (CERT_DIR/NS/SA.crt + .key), checked against
 * the trust bundle and trust domain, indexed by SPIFFE ID. Reloads swap the whole set; an identity
 * is reference-counted, so a live connection keeps the certificate it started with.
 */
#ifndef AMESH_TLS_IDENTITY_H
#define AMESH_TLS_IDENTITY_H

#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <uv.h>

/*
 * Limits: at most IDENTITY_MAX identities are loaded (the rest are logged and ignored), and each
 * certificate, key or bundle file may be at most CERT_FILE_MAX bytes (64 KiB, see cert.h).
 */
#define IDENTITY_MAX 10000
/* A watched store reloads this long after the last change it saw, so writes can settle. */
#define IDENTITY_SETTLE_MS 200

/* What a file was when it was read: a reload re-reads only files whose stamp changed. */
struct file_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

/* The trust anchors one load was checked against; shared by that load's identities. */
struct trust_bundle {
	int refs;
	mbedtls_x509_crt crt;
	struct file_stamp st;
};

struct identity {
	int refs;
	char *spiffe_id; /* spiffe://TD/ns/NS/sa/SA */
	char *ns, *sa;
	char *crt_path;
	mbedtls_x509_crt chain; /* leaf first, then intermediates */
	mbedtls_pk_context key;
	time_t not_before, not_after;
	struct trust_bundle *bundle;
	struct file_stamp crt_st, key_st;
	/* Ready-made TLS configurations for this identity (tls_conf_init). */
	mbedtls_ssl_config server, client;
};

struct identity_store_config {
	const char *cert_dir, *trust_bundle, *trust_domain;
	uint64_t expiry_warning_ms; /* warn this long before notAfter */
	/* Load only this identity (a sidecar holds its workload's alone); NULL: every one. */
	const char *only_ns, *only_sa;
};

struct identity_store;

/* Creates an empty store (copies cfg's strings). Returns 0 or a negative code. */
int identity_store_new(const struct identity_store_config *cfg, struct identity_store **out);
/*
 * Accepts NULL. Identities still referenced elsewhere stay valid until released.
 * For a store that was watched: call it on the loop's thread (it unwatches if needed); the memory
 * is released once the handles' close callbacks and any reload in flight have run, so the caller
 * must keep running the loop (as it must anyway before uv_loop_close).
 */
void identity_store_free(struct identity_store *s);

/*
 * Loads the trust bundle and every identity now, and swaps them in. A bad, mismatched or expired
 * file is logged with its path and skipped. If the bundle itself cannot be loaded, the previous
 * set stays in force and the return is negative. Otherwise returns the number of identities.
 * Safe to call from any thread; lookups see either the old set or the new one.
 */
int identity_store_reload(struct identity_store *s);

/* A new reference to the identity with this SPIFFE ID, or NULL. */
struct identity *identity_store_get(struct identity_store *s, const char *spiffe_id);
/* A new reference to NS/SA in the store's trust domain, or NULL. */
struct identity *identity_store_get_sa(struct identity_store *s, const char *ns, const char *sa);
/* A new reference to the current trust bundle, or NULL before the first good load. */
struct trust_bundle *identity_store_bundle(struct identity_store *s);
/* New references to every identity, sorted by SPIFFE ID; caller unrefs each and frees *out. */
size_t identity_store_list(struct identity_store *s, struct identity ***out);

/*
 * Watches cert_dir (and its namespace subdirectories) and the bundle file on loop; on a change
 * it waits for writes to settle (200 ms) and reloads on a worker thread. Returns 0 or a negative code.
 * Call identity_store_reload first: the namespace directories watched are those the last load
 * found. cert_dir and the bundle's directory must exist. At most one reload runs at a time; a
 * change seen during one brings another after it. Call from the loop's thread, as unwatch.
 * A store whose previous watch is still closing cannot watch again yet (-EBUSY).
 */
int identity_store_watch(struct identity_store *s, uv_loop_t *loop);
/* Stops watching; the handles close asynchronously on the loop. */
void identity_store_unwatch(struct identity_store *s);

struct identity *identity_ref(struct identity *id);
void identity_unref(struct identity *id);
struct trust_bundle *trust_bundle_ref(struct trust_bundle *b);
void trust_bundle_unref(struct trust_bundle *b);

#endif
