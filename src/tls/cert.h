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

/*
 * The forms no workload ID (spiffe://TD/ns/NS/sa/SA) can take: spiffe_split() refuses both, so a
 * node's or the CA's certificate never passes as a workload's.
 *
 * spiffe_format_node: "spiffe://TD/amesh/node/NODE". NODE follows the registry's name rules
 * ([A-Za-z0-9._-], 1..63, not "." or ".."); TD those of a trust domain ([a-z0-9._-], 1..255).
 * Returns 0, AMESH_ERR_INVALID (a bad node name or trust domain) or AMESH_ERR_TOOLONG (buf).
 */
int spiffe_format_node(char *buf, size_t len, const char *td, const char *node);
/* "spiffe://TD/amesh/ca", the CA service's own identity. Returns 0, AMESH_ERR_INVALID (a bad TD)
 * or AMESH_ERR_TOOLONG. */
int spiffe_format_ca(char *buf, size_t len, const char *td);
/*
 * Splits a node ID "spiffe://TD/amesh/node/NODE" into td and node (either may be NULL). Returns 0,
 * AMESH_ERR_INVALID if id is not a node ID, or AMESH_ERR_TOOLONG if a part does not fit its buffer.
 */
int spiffe_split_node(const char *id, char *td, size_t tdlen, char *node, size_t nodelen);
/* The trust domain of any SPIFFE ID "spiffe://TD/PATH" (PATH not empty) into td. Returns 0,
 * AMESH_ERR_INVALID or AMESH_ERR_TOOLONG. */
int spiffe_trust_domain(const char *id, char *td, size_t tdlen);

/* "sha256:" + 64 lowercase hex digits of the certificate's DER, and the NUL. */
#define CERT_FINGERPRINT_LEN 72
/* Writes the fingerprint of crt (its first certificate) into buf. Returns 0, AMESH_ERR_INVALID
 * (no certificate) or AMESH_ERR_TOOLONG (len < CERT_FINGERPRINT_LEN). */
int cert_fingerprint(const mbedtls_x509_crt *crt, char *buf, size_t len);

/* "ECDSA P-256", "ECDSA P-384", "RSA 2048", ...: a key's type and size, for messages. */
void cert_key_desc(const mbedtls_pk_context *pk, char *buf, size_t len);
/* True if pk is an ECDSA (id-ecPublicKey) key on P-256, the only kind the mesh uses. */
bool cert_key_is_p256(const mbedtls_pk_context *pk);

/*
 * Verifies that chain (leaf first, then any intermediates) chains to one of roots, with validity
 * periods judged at *at (NULL: periods are not checked). Returns 0 or AMESH_ERR_INVALID with
 * mbedTLS's reasons on one line in why.
 */
int cert_verify_chain(mbedtls_x509_crt *chain, mbedtls_x509_crt *roots, const time_t *at,
    char *why, size_t whylen);

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

/*
 * Helpers shared by the X.509 modules of tls/ (cert.c, ca.c, csr.c).
 */
/* Writes a reason into why (when why != NULL and whylen > 0) and returns code. */
int cert_fail(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "what: mbedTLS's text for code" into why; returns AMESH_ERR_INTERNAL. */
int cert_mbed_fail(char *why, size_t whylen, const char *what, int code);
/* Makes key (initialised, empty) a new ECDSA P-256 key. Returns 0 or AMESH_ERR_INTERNAL. */
int cert_key_new(mbedtls_pk_context *key, char *why, size_t whylen);
/*
 * DER of a subjectAltName extension value holding exactly one URI, written backwards at the end of
 * buf (as mbedTLS's asn1write does): *start and *len receive it. Returns 0 or a negative mbedTLS code.
 */
int cert_san_uri_der(const char *uri, unsigned char *buf, size_t size, unsigned char **start,
    size_t *len);
/* The same for an extendedKeyUsage value: serverAuth and/or clientAuth. */
int cert_eku_der(bool server, bool client, unsigned char *buf, size_t size, unsigned char **start,
    size_t *len);
/*
 * PEM of the first max certificates of list appended into a malloc'd, NUL-terminated *pem
 * (*len excludes the NUL). Returns 0, AMESH_ERR_INVALID (an empty list) or AMESH_ERR_NOMEM.
 */
int cert_list_pem(const mbedtls_x509_crt *list, size_t max, char **pem, size_t *len);

#endif
