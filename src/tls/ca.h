/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh CA of amesh-ca(8): a self-signed ECDSA P-256 root, intermediates it signs (so the root
 * key can stay offline), certificates signed from either for workloads, nodes and the CA service,
 * and the certificate requests (PKCS#10) by which a host obtains one without its key leaving it.
 * A CA directory holds ca.crt and ca.key, and for an intermediate bundle.crt (its roots). Files are
 * written atomically, keys with mode 0600 from the moment they exist.
 */
#ifndef AMESH_TLS_CA_H
#define AMESH_TLS_CA_H

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "tls/cert.h"

/* The trust domain is the CA's O= attribute, which X.520 bounds to 64 characters. */
#define CA_TRUST_DOMAIN_MAX 64
/* Namespaces, service accounts, node and intermediate names: at most 63 characters, as in the
 * registry. */
#define CA_NAME_MAX 63
/* Longest validity accepted, in days. */
#define CA_DAYS_MAX 36500
/* Certificates start this long before "now", so a peer whose clock lags a little accepts them. */
#define CA_BACKDATE_SECONDS 300
#define CA_CRT_FILE "ca.crt"
#define CA_KEY_FILE "ca.key"
/* In an intermediate's directory: the root certificate(s) it chains to, the trust bundle. */
#define CA_BUNDLE_FILE "bundle.crt"
/* An offline node identity (amesh ca issue --node) in its directory. */
#define CA_NODE_CRT_FILE "node.crt"
#define CA_NODE_KEY_FILE "node.key"
/* Largest PEM certificate request ca_csr_check reads. */
#define CA_CSR_MAX (16 * 1024)

struct ca {
	mbedtls_x509_crt crt;   /* the signing certificate (root or intermediate) */
	mbedtls_pk_context key; /* its private key */
	mbedtls_x509_crt roots; /* the trust bundle: root certificate(s) only */
	bool is_root;
	char trust_domain[CA_TRUST_DOMAIN_MAX + 1];
	char name[CA_NAME_MAX + 1]; /* intermediate's name ("" for a root) */
	pthread_mutex_t lock;       /* serialises the signing functions on this CA */
};

/* A freshly issued identity, PEM encoded. */
struct ca_issued {
	char *ns, *sa;   /* a workload's; both NULL for a node */
	char *node;      /* a node's name; NULL for a workload */
	char spiffe_id[SPIFFE_ID_MAX];
	char *chain_pem; /* leaf, then the signing certificate */
	size_t chain_len;
	char *key_pem;   /* zeroed by ca_issued_free */
	size_t key_len;
	time_t not_before, not_after;
};

/* True if td is a trust domain ca_create accepts: [a-z0-9._-], 1..CA_TRUST_DOMAIN_MAX characters. */
bool ca_valid_trust_domain(const char *td);
/* True if s is a namespace or service account ca_issue accepts: [A-Za-z0-9._-], not "." or "..". */
bool ca_valid_name(const char *s);

/*
 * Creates a CA in memory: a new P-256 key and a self-signed certificate "CN=amesh root CA,
 * O=trust_domain" valid from now - CA_BACKDATE_SECONDS for days days. Returns 0 or a negative code
 * with a reason in why.
 */
int ca_create(const char *trust_domain, unsigned days, time_t now, struct ca **out, char *why,
    size_t whylen);
/*
 * Creates an intermediate CA signed by root (root->is_root): a new P-256 key and a certificate
 * "CN=amesh intermediate CA NAME, O=TD" (TD the root's), basicConstraints CA:TRUE pathlen 0,
 * keyUsage keyCertSign and cRLSign, valid from now - CA_BACKDATE_SECONDS for days days, cut at the
 * root's notAfter. Its roots are a copy of root's. name follows ca_valid_name. Returns 0 or a
 * negative code (AMESH_ERR_INVALID, AMESH_ERR_RANGE, ...) with a reason in why.
 */
int ca_create_intermediate(struct ca *root, const char *name, unsigned days, time_t now,
    struct ca **out, char *why, size_t whylen);
/*
 * Stores ca as dir/ca.key (0600), dir/ca.crt (0644) and, for an intermediate, dir/bundle.crt
 * (its roots, 0644), creating dir and its missing parents (0700) if needed. Never replaces a file:
 * if any of the three exists, returns AMESH_ERR_EXISTS and why names it.
 */
int ca_save(struct ca *ca, const char *dir, char *why, size_t whylen);
/*
 * Loads a CA directory. If dir/bundle.crt exists the CA is an intermediate: dir/ca.crt must hold
 * one CA certificate that chains to one of bundle.crt's self-signed roots (validity periods aside).
 * Otherwise dir/ca.crt must hold one self-signed CA certificate, which is also its roots. Either
 * way dir/ca.key must be its key and its subject's O= a valid trust domain. Returns 0 or a
 * negative code with a reason in why.
 */
int ca_load(const char *dir, struct ca **out, char *why, size_t whylen);
/* Accepts NULL. */
void ca_free(struct ca *ca);

/* The kinds of leaf certificate ca_sign makes. */
enum ca_leaf_kind {
	CA_LEAF_WORKLOAD, /* spiffe://TD/ns/NS/sa/SA: digitalSignature, EKU serverAuth+clientAuth
			   * (cert_check_identity accepts it) */
	CA_LEAF_NODE,     /* spiffe://TD/amesh/node/N: digitalSignature, EKU clientAuth only */
	CA_LEAF_SERVER,   /* spiffe://TD/amesh/ca: digitalSignature, EKU serverAuth only (the CA
			   * service's own TLS certificate) */
};

/*
 * Signs pub (an ECDSA P-256 public key) as spiffe_id, which must be in ca's trust domain and of
 * kind's form: subject O=TD, one URI SAN, basicConstraints CA:FALSE, a random 128-bit serial,
 * valid from now - CA_BACKDATE_SECONDS to now + ttl_seconds (1 s .. CA_DAYS_MAX days), cut at the
 * signing certificate's notAfter. The result is verified against ca->roots before it is returned.
 * *chain_pem (malloc'd, NUL-terminated, *chain_len without the NUL): the leaf, then ca->crt (never
 * the root of an intermediate CA). not_before, not_after and serial_hex (lowercase hex, at least 41
 * bytes) may be NULL. Returns 0, AMESH_ERR_INVALID (a bad ID or key, an expired CA),
 * AMESH_ERR_RANGE (ttl) or another negative code, with a reason in why. Thread-safe: calls on one
 * ca (ca_sign, ca_issue, ca_issue_node, ca_create_intermediate) are serialised by ca->lock, as
 * mbedTLS may cache computed tables inside a key on its first use.
 */
int ca_sign(struct ca *ca, const mbedtls_pk_context *pub, const char *spiffe_id,
    enum ca_leaf_kind kind, uint64_t ttl_seconds, time_t now, char **chain_pem, size_t *chain_len,
    time_t *not_before, time_t *not_after, char *serial_hex, char *why, size_t whylen);
/* PEM of the trust bundle (ca->roots) into a malloc'd, NUL-terminated *pem (*len without the NUL).
 * Returns 0 or a negative code. */
int ca_bundle_pem(const struct ca *ca, char **pem, size_t *len);

/*
 * Issues ns/sa offline: a new P-256 key and a workload certificate signed with ca_sign, subject
 * "CN=SA, OU=NS, O=TD", valid for days days (cut at the CA's own notAfter). Returns 0 or a
 * negative code with a reason in why.
 */
int ca_issue(struct ca *ca, const char *ns, const char *sa, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen);
/* The same for a node identity spiffe://TD/amesh/node/NODE (CA_LEAF_NODE), subject
 * "CN=NODE, O=TD". */
int ca_issue_node(struct ca *ca, const char *node, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen);
/*
 * Writes a workload identity as cert_dir/NS/SA.key (0600) and then cert_dir/NS/SA.crt (0644), a
 * node identity as cert_dir/node.key and cert_dir/node.crt, each atomically, replacing what was
 * there (rotation). Creates cert_dir and cert_dir/NS (0755) and the missing parents of cert_dir
 * (0700) as needed.
 */
int ca_issued_write(const struct ca_issued *is, const char *cert_dir, char *why, size_t whylen);
/* Accepts NULL. */
void ca_issued_free(struct ca_issued *is);

/*
 * Client side of a certificate request: makes key (initialised here; the caller frees it with
 * mbedtls_pk_free, also on failure) a new P-256 key and *csr_pem (malloc'd, NUL-terminated,
 * *csr_len without the NUL) a PEM PKCS#10 request signed by it: subject O=TD (spiffe_id's trust
 * domain), and an extensionRequest holding exactly one subjectAltName URI, spiffe_id. Returns 0,
 * AMESH_ERR_INVALID (spiffe_id is not a SPIFFE ID) or another negative code, with a reason in why.
 */
int ca_csr_new(const char *spiffe_id, mbedtls_pk_context *key, char **csr_pem, size_t *csr_len,
    char *why, size_t whylen);
/*
 * CA side: parses a PEM certificate request (len bytes, not necessarily NUL-terminated, at most
 * CA_CSR_MAX; white space only around the one PEM block) and checks it for want_id: well-formed
 * PKCS#10 v1, an ECDSA P-256 key, a valid self-signature over the CertificationRequestInfo, no
 * attribute but one extensionRequest, whose subjectAltName holds exactly one GeneralName, a URI
 * equal to want_id; other requested extensions only keyUsage, extendedKeyUsage and
 * basicConstraints (ignored: the CA sets its own); the subject is ignored too. On success copies
 * the public key into *pub. *pub is initialised here in every case (the caller frees it with
 * mbedtls_pk_free). Returns 0, AMESH_ERR_INVALID (the request is refused: a one-line reason in
 * why, printable ASCII only), or AMESH_ERR_NOMEM / AMESH_ERR_INTERNAL (the CA's own failure, not
 * the request's). Structural refusals come before the signature check. Never reads outside
 * pem[0..len).
 */
int ca_csr_check(const char *pem, size_t len, const char *want_id, mbedtls_pk_context *pub,
    char *why, size_t whylen);

/*
 * Writes len bytes to path atomically: a new temporary file in the same directory, created with
 * mode (never wider), fsync'd, then renamed over path (replace) or linked to path only if path does
 * not exist yet (!replace: AMESH_ERR_EXISTS otherwise); the directory is fsync'd last.
 */
int ca_write_file(const char *path, const void *data, size_t len, mode_t mode, bool replace,
    char *why, size_t whylen);

#endif
