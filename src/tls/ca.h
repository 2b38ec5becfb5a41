/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mesh CA of amesh-ca(8): creates a self-signed ECDSA P-256 root, stores it as DIR/ca.crt and
 * DIR/ca.key, and issues workload certificates with one URI SAN spiffe://TD/ns/NS/sa/SA. Files are
 * written atomically, keys with mode 0600 from the moment they exist.
 */
#ifndef AMESH_TLS_CA_H
#define AMESH_TLS_CA_H

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "tls/cert.h"

/* The trust domain is the CA's O= attribute, which X.520 bounds to 64 characters. */
#define CA_TRUST_DOMAIN_MAX 64
/* Namespaces and service accounts: at most 63 characters, as in the registry. */
#define CA_NAME_MAX 63
/* Longest validity accepted, in days. */
#define CA_DAYS_MAX 36500
/* Certificates start this long before "now", so a peer whose clock lags a little accepts them. */
#define CA_BACKDATE_SECONDS 300
#define CA_CRT_FILE "ca.crt"
#define CA_KEY_FILE "ca.key"

struct ca {
	mbedtls_x509_crt crt;    /* the CA certificate */
	mbedtls_pk_context key;  /* its private key */
	char trust_domain[CA_TRUST_DOMAIN_MAX + 1];
};

/* A freshly issued identity, PEM encoded. */
struct ca_issued {
	char *ns, *sa;
	char spiffe_id[SPIFFE_ID_MAX];
	char *chain_pem; /* leaf, then the CA certificate */
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
 * Stores ca as dir/ca.key (0600) and dir/ca.crt (0644), creating dir and its missing parents
 * (0700) if needed. Never replaces a file: if either exists, returns AMESH_ERR_EXISTS and why names it.
 */
int ca_save(struct ca *ca, const char *dir, char *why, size_t whylen);
/* Loads dir/ca.crt and dir/ca.key and checks they are a CA and its key. Returns 0 or a negative code. */
int ca_load(const char *dir, struct ca **out, char *why, size_t whylen);
/* Accepts NULL. */
void ca_free(struct ca *ca);

/*
 * Issues ns/sa: a new P-256 key and a certificate signed by ca with the URI SAN
 * spiffe://TD/ns/NS/sa/SA, valid from now - CA_BACKDATE_SECONDS for days days (cut at the CA's own
 * notAfter). Returns 0 or a negative code with a reason in why.
 */
int ca_issue(struct ca *ca, const char *ns, const char *sa, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen);
/*
 * Writes the identity as cert_dir/NS/SA.key (0600) and then cert_dir/NS/SA.crt (0644), each
 * atomically, replacing what was there (rotation). Creates cert_dir and cert_dir/NS (0755) and the
 * missing parents of cert_dir (0700) as needed.
 */
int ca_issued_write(const struct ca_issued *is, const char *cert_dir, char *why, size_t whylen);
/* Accepts NULL. */
void ca_issued_free(struct ca_issued *is);

/*
 * Writes len bytes to path atomically: a new temporary file in the same directory, created with
 * mode (never wider), fsync'd, then renamed over path (replace) or linked to path only if path does
 * not exist yet (!replace: AMESH_ERR_EXISTS otherwise); the directory is fsync'd last.
 */
int ca_write_file(const char *path, const void *data, size_t len, mode_t mode, bool replace,
    char *why, size_t whylen);

#endif
