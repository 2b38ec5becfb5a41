/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 helpers: SPIFFE IDs in URI SANs, PEM loading, and the checks every mesh certificate must pass. */
#ifndef AMESH_TLS_CERT_H
#define AMESH_TLS_CERT_H

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Longest SPIFFE ID we accept (the SPIFFE spec's limit is 2048 bytes). */
#define SPIFFE_ID_MAX 2048
/* Largest certificate, chain, bundle or key file the loaders below read (64 KiB). */
#define CERT_FILE_MAX (64 * 1024)

/*
 * Writes the certificate's SPIFFE ID (its single URI SAN starting with "spiffe://") into buf.
 * mbedTLS 2.28 does not list URI SANs, so this walks the extension DER itself.
 * Returns 0, AMESH_ERR_NOTFOUND (no spiffe:// URI SAN), AMESH_ERR_INVALID (malformed, or more
 * than one URI SAN), or AMESH_ERR_TOOLONG.
 */
int cert_spiffe_id(const mbedtls_x509_crt *crt, char *buf, size_t len);

/*
 * Splits "spiffe://TD/ns/NS/sa/SA" into its parts (copied into the given buffers of at least
 * SPIFFE_ID_MAX bytes; any may be NULL). Returns 0 or AMESH_ERR_INVALID.
 */
int spiffe_split(const char *id, char *td, char *ns, char *sa);

/* Formats "spiffe://TD/ns/NS/sa/SA" into buf. Returns 0 or AMESH_ERR_TOOLONG. */
int spiffe_format(char *buf, size_t len, const char *td, const char *ns, const char *sa);

/* notBefore/notAfter as Unix times (UTC). */
time_t cert_not_before(const mbedtls_x509_crt *crt);
time_t cert_not_after(const mbedtls_x509_crt *crt);

/*
 * Loads a PEM file of one or more certificates (leaf first). Returns 0 or a negative code; why gets text.
 * out is initialised here (any previous content must have been freed); on failure it is left empty,
 * so mbedtls_x509_crt_free(out) is always safe. The same holds for cert_load_key.
 */
int cert_load_chain(const char *path, mbedtls_x509_crt *out, char *why, size_t whylen);
/* Loads a PEM private key (unencrypted). Returns 0 or a negative code; why gets text, never key bytes. */
int cert_load_key(const char *path, mbedtls_pk_context *out, char *why, size_t whylen);

/*
 * Checks a leaf chain as a mesh identity: chains to bundle, is within validity at now, has a
 * SPIFFE ID in trust_domain, an ECDSA P-256 key matching key (if key is not NULL), and key usage
 * digitalSignature with serverAuth and clientAuth. On success writes the SPIFFE ID to id.
 * Returns 0 or a negative code with a one-line reason in why.
 */
int cert_check_identity(mbedtls_x509_crt *chain, const mbedtls_pk_context *key,
    mbedtls_x509_crt *bundle, const char *trust_domain, time_t now, char *id, size_t idlen,
    char *why, size_t whylen);

#endif
