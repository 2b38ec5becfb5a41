/* SPDX-License-Identifier: Apache-2.0 */
/* The mesh CA: roots and intermediates and their files, the one path that signs leaf certificates,
 * offline issuing, atomic file writes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/platform_util.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define CA_SUBJECT_CN "amesh root CA"
#define INTERMEDIATE_CN_PREFIX "amesh intermediate CA "
/* Big enough for any certificate or key this file makes (P-256 keys, short names). */
#define DER_MAX 4096
#define PEM_MAX 6144
/* A root's pathLenConstraint: one intermediate below it, then leaves. */
#define ROOT_PATHLEN 1

#define fail cert_fail
#define mbed_fail cert_mbed_fail

bool
ca_valid_trust_domain(const char *td)
{
	size_t n = 0;

	for (; td[n] != '\0'; n++) {
		char c = td[n];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		    c == '_'))
			return false;
	}
	return n > 0 && n <= CA_TRUST_DOMAIN_MAX;
}

bool
ca_valid_name(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-' || c == '_'))
			return false;
	}
	return n > 0 && n <= CA_NAME_MAX && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}


/* A positive 128-bit random serial number (the top bit clear keeps its DER at 16 bytes). */
static int
random_serial(mbedtls_mpi *serial)
{
	unsigned char b[16];
	int r;

	if (rng_fill(rng_ctx(), b, sizeof(b)) != 0)
		return AMESH_ERR_INTERNAL;
	b[0] &= 0x7f;
	b[0] |= 0x01 << 6; /* never zero, never shorter */
	r = mbedtls_mpi_read_binary(serial, b, sizeof(b));
	return r == 0 ? 0 : AMESH_ERR_NOMEM;
}

/* "YYYYMMDDhhmmss" in UTC, as mbedtls_x509write_crt_set_validity wants. */
static int
x509_time_str(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1950)
		return AMESH_ERR_RANGE;
	/* strftime: gcc cannot see that the fields of a valid struct tm are two digits. */
	if (strftime(buf, len, "%Y%m%d%H%M%S", &tm) != 14)
		return AMESH_ERR_RANGE;
	return 0;
}

/* Fields every certificate we write shares: version 3, SHA-256, serial, validity. */
static int
write_common(mbedtls_x509write_cert *w, time_t from, time_t to, char *why, size_t whylen)
{
	char nb[16], na[16];
	mbedtls_mpi serial;
	int r;

	mbedtls_mpi_init(&serial);
	mbedtls_x509write_crt_set_version(w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(w, MBEDTLS_MD_SHA256);
	if (x509_time_str(from, nb, sizeof(nb)) != 0 || x509_time_str(to, na, sizeof(na)) != 0) {
		r = fail(why, whylen, AMESH_ERR_RANGE, "validity outside the years 1950-9999");
		goto out;
	}
	r = mbedtls_x509write_crt_set_validity(w, nb, na);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot set the validity", r);
		goto out;
	}
	r = random_serial(&serial);
	if (r == 0)
		r = mbedtls_x509write_crt_set_serial(w, &serial);
	if (r != 0) {
		r = fail(why, whylen, AMESH_ERR_INTERNAL, "cannot make a serial number");
		goto out;
	}
	r = 0;
out:
	mbedtls_mpi_free(&serial);
	return r;
}

/* Signs w into the end of der; returns the DER length or a negative code. */
static int
sign(mbedtls_x509write_cert *w, unsigned char *der, size_t len, char *why, size_t whylen)
{
	int n = mbedtls_x509write_crt_der(w, der, len, rng_fill, rng_ctx());

	if (n <= 0)
		return mbed_fail(why, whylen, "cannot sign the certificate", n);
	return n;
}


/*
 * The CA's subject as the string mbedtls_x509write_crt_set_issuer_name parses. That parser knows
 * only "\," as an escape, so a subject it cannot express is refused (ca_issue also verifies the
 * result against the CA).
 */
static int
issuer_string(const mbedtls_x509_crt *ca, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (const mbedtls_x509_name *n = &ca->subject; n != NULL; n = n->next) {
		const char *sn;

		if (n->oid.p == NULL)
			continue;
		if (n->next_merged || mbedtls_oid_get_attr_short_name(&n->oid, &sn) != 0)
			return AMESH_ERR_INVALID;
		o += (size_t)snprintf(buf + o, len - o, "%s%s=", o ? "," : "", sn);
		if (o >= len)
			return AMESH_ERR_TOOLONG;
		for (size_t i = 0; i < n->val.len; i++) {
			unsigned char c = n->val.p[i];

			if (c < 0x20 || c >= 0x7f || (i == 0 && c == ' '))
				return AMESH_ERR_INVALID;
			if (o + 3 >= len)
				return AMESH_ERR_TOOLONG;
			if (c == ',')
				buf[o++] = '\\';
			buf[o++] = (char)c;
		}
		buf[o] = '\0';
	}
	return o > 0 ? 0 : AMESH_ERR_INVALID;
}


/* Refuses a validity in days outside 1..CA_DAYS_MAX. */
static int
check_days(unsigned days, char *why, size_t whylen)
{
	if (days == 0 || days > CA_DAYS_MAX)
		return fail(why, whylen, AMESH_ERR_RANGE, "days must be 1-%d", CA_DAYS_MAX);
	return 0;
}

/* Refuses to sign with the certificate c of the CA (named what) at now outside its validity. */
static int
check_valid_at(const mbedtls_x509_crt *c, const char *what, time_t now, char *why, size_t whylen)
{
	char t[32];

	if (now > cert_not_after(c))
		return fail(why, whylen, AMESH_ERR_INVALID, "the %s expired at %s", what,
		    iso_time(cert_not_after(c), t, sizeof(t)));
	if (now < cert_not_before(c))
		return fail(why, whylen, AMESH_ERR_INVALID, "the %s is not valid before %s", what,
		    iso_time(cert_not_before(c), t, sizeof(t)));
	return 0;
}

/* What one certificate says; make_cert writes and signs it. */
struct cert_spec {
	mbedtls_pk_context *subject_key; /* the key certified (public part used) */
	const char *subject;             /* "CN=...,O=..." as mbedTLS parses it */
	struct ca *issuer;               /* NULL: self-signed with subject_key */
	time_t from, to;
	int pathlen;                     /* a CA's pathLenConstraint; -1: not a CA */
	unsigned key_usage;
	const char *uri;                 /* the one URI SAN; NULL: none */
	bool eku_server, eku_client;     /* extendedKeyUsage, when uri is set */
};

/* Writes, signs and parses the certificate s describes, appending it to out. */
static int
make_cert(const struct cert_spec *s, mbedtls_x509_crt *out, char *why, size_t whylen)
{
	mbedtls_x509write_cert w;
	unsigned char *der = NULL, *ext;
	unsigned char extbuf[SPIFFE_ID_MAX + 32];
	char issuer[512];
	size_t extlen;
	int r, n;

	mbedtls_x509write_crt_init(&w);
	der = malloc(DER_MAX);
	if (der == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (s->issuer != NULL && issuer_string(&s->issuer->crt, issuer, sizeof(issuer)) != 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "cannot use the CA's subject as an issuer name");
		goto out;
	}
	r = write_common(&w, s->from, s->to, why, whylen);
	if (r != 0)
		goto out;
	mbedtls_x509write_crt_set_subject_key(&w, s->subject_key);
	mbedtls_x509write_crt_set_issuer_key(&w, s->issuer ? &s->issuer->key : s->subject_key);
	if ((r = mbedtls_x509write_crt_set_subject_name(&w, s->subject)) != 0 ||
	    (r = mbedtls_x509write_crt_set_issuer_name(&w, s->issuer ? issuer : s->subject)) != 0 ||
	    (r = mbedtls_x509write_crt_set_basic_constraints(&w, s->pathlen >= 0, s->pathlen)) != 0 ||
	    (r = mbedtls_x509write_crt_set_key_usage(&w, s->key_usage)) != 0 ||
	    (r = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
	    (r = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0) {
		r = mbed_fail(why, whylen, "cannot build the certificate", r);
		goto out;
	}
	if (s->uri != NULL &&
	    ((r = cert_san_uri_der(s->uri, extbuf, sizeof(extbuf), &ext, &extlen)) != 0 ||
	    (r = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, ext, extlen)) != 0 ||
	    (r = cert_eku_der(s->eku_server, s->eku_client, extbuf, sizeof(extbuf), &ext, &extlen)) != 0 ||
	    (r = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, ext, extlen)) != 0)) {
		r = mbed_fail(why, whylen, "cannot build the certificate", r);
		goto out;
	}
	n = sign(&w, der, DER_MAX, why, whylen);
	if (n < 0) {
		r = n;
		goto out;
	}
	r = mbedtls_x509_crt_parse_der(out, der + DER_MAX - n, (size_t)n);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot parse the new certificate", r);
		goto out;
	}
	r = 0;
out:
	mbedtls_x509write_crt_free(&w);
	free(der);
	return r;
}

/* A new, empty struct ca. */
static struct ca *
ca_new(void)
{
	struct ca *ca = calloc(1, sizeof(*ca));

	if (ca == NULL)
		return NULL;
	mbedtls_x509_crt_init(&ca->crt);
	mbedtls_pk_init(&ca->key);
	mbedtls_x509_crt_init(&ca->roots);
	if (pthread_mutex_init(&ca->lock, NULL) != 0) {
		free(ca);
		return NULL;
	}
	return ca;
}

/* Appends a copy of the certificates of list to out. */
static int
copy_crts(mbedtls_x509_crt *out, const mbedtls_x509_crt *list, char *why, size_t whylen)
{
	for (const mbedtls_x509_crt *c = list; c != NULL && c->raw.p != NULL; c = c->next) {
		int r = mbedtls_x509_crt_parse_der(out, c->raw.p, c->raw.len);

		if (r != 0)
			return mbed_fail(why, whylen, "cannot copy a certificate", r);
	}
	return 0;
}

int
ca_create(const char *trust_domain, unsigned days, time_t now, struct ca **out, char *why,
    size_t whylen)
{
	struct ca *ca = NULL;
	char subject[128];
	struct cert_spec s = {
		.subject = subject, .from = now - CA_BACKDATE_SECONDS,
		.to = now + (time_t)days * 86400, .pathlen = ROOT_PATHLEN,
		.key_usage = MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN,
	};
	int r;

	*out = NULL;
	if (!ca_valid_trust_domain(trust_domain)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "trust domain '%s' is not valid (lower-case "
		    "letters, digits, '.', '-' and '_', at most %d)", trust_domain, CA_TRUST_DOMAIN_MAX);
		goto out;
	}
	r = check_days(days, why, whylen);
	if (r != 0)
		goto out;
	ca = ca_new();
	if (ca == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cert_key_new(&ca->key, why, whylen);
	if (r != 0)
		goto out;
	snprintf(subject, sizeof(subject), "CN=" CA_SUBJECT_CN ",O=%s", trust_domain);
	s.subject_key = &ca->key;
	r = make_cert(&s, &ca->crt, why, whylen);
	if (r == 0)
		r = copy_crts(&ca->roots, &ca->crt, why, whylen);
	if (r != 0)
		goto out;
	ca->is_root = true;
	snprintf(ca->trust_domain, sizeof(ca->trust_domain), "%s", trust_domain);
	*out = ca;
	ca = NULL;
	r = 0;
out:
	ca_free(ca);
	return r;
}

int
ca_create_intermediate(struct ca *root, const char *name, unsigned days, time_t now,
    struct ca **out, char *why, size_t whylen)
{
	struct ca *ca = NULL;
	char subject[sizeof(INTERMEDIATE_CN_PREFIX) + CA_NAME_MAX + CA_TRUST_DOMAIN_MAX + 16];
	char e[400];
	struct cert_spec s = {
		.subject = subject, .issuer = root, .from = now - CA_BACKDATE_SECONDS,
		.to = now + (time_t)days * 86400, .pathlen = 0,
		.key_usage = MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN,
	};
	int r;

	*out = NULL;
	if (!root->is_root) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "an intermediate CA is signed by a root, not "
		    "by the intermediate '%s'", root->name);
		goto out;
	}
	/* mbedTLS stores pathLenConstraint + 1: 1 is a root made before intermediates existed. */
	if (root->crt.max_pathlen == 1) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "the root's basicConstraints pathlen 0 allows "
		    "no intermediate below it; make a new root with amesh ca init");
		goto out;
	}
	if (!ca_valid_name(name)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not a valid name (letters, digits, "
		    "'.', '-' and '_', at most %d)", name, CA_NAME_MAX);
		goto out;
	}
	r = check_days(days, why, whylen);
	if (r != 0)
		goto out;
	r = check_valid_at(&root->crt, "root", now, why, whylen);
	if (r != 0)
		goto out;
	/* A CA cannot outlive the root that vouches for it. */
	if (s.to > cert_not_after(&root->crt))
		s.to = cert_not_after(&root->crt);
	ca = ca_new();
	if (ca == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cert_key_new(&ca->key, why, whylen);
	if (r != 0)
		goto out;
	snprintf(subject, sizeof(subject), "CN=" INTERMEDIATE_CN_PREFIX "%s,O=%s", name,
	    root->trust_domain);
	s.subject_key = &ca->key;
	pthread_mutex_lock(&root->lock);
	r = make_cert(&s, &ca->crt, why, whylen);
	pthread_mutex_unlock(&root->lock);
	if (r == 0)
		r = copy_crts(&ca->roots, &root->roots, why, whylen);
	if (r != 0)
		goto out;
	if (cert_verify_chain(&ca->crt, &ca->roots, &now, e, sizeof(e)) != 0) {
		r = fail(why, whylen, AMESH_ERR_INTERNAL, "the new intermediate does not verify: %s", e);
		goto out;
	}
	ca->is_root = false;
	snprintf(ca->trust_domain, sizeof(ca->trust_domain), "%s", root->trust_domain);
	snprintf(ca->name, sizeof(ca->name), "%s", name);
	*out = ca;
	ca = NULL;
	r = 0;
out:
	ca_free(ca);
	return r;
}

void
ca_free(struct ca *ca)
{
	if (ca == NULL)
		return;
	mbedtls_x509_crt_free(&ca->crt);
	mbedtls_pk_free(&ca->key);
	mbedtls_x509_crt_free(&ca->roots);
	pthread_mutex_destroy(&ca->lock);
	free(ca);
}

/* Creates dir with mode unless it exists as a directory. */
static int
make_dir(const char *dir, mode_t mode, char *why, size_t whylen)
{
	struct stat st;

	if (mkdir(dir, mode) == 0)
		return 0;
	if (errno != EEXIST)
		return fail(why, whylen, -errno, "%s: cannot create: %s", dir, strerror(errno));
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return fail(why, whylen, -ENOTDIR, "%s: not a directory", dir);
	return 0;
}

/*
 * Creates the missing ancestors of path, mode 0700, as `mkdir -p` would: the paths the examples
 * use (/srv/node-a/certs) have no parent on a fresh host. path itself is left to the caller.
 */
static int
make_parents(const char *path, char *why, size_t whylen)
{
	char *failed;
	int r = path_mkdir_parents(path, 0700, &failed);

	if (r == -ENOTDIR)
		fail(why, whylen, r, "%s: not a directory", failed);
	else if (r != 0)
		fail(why, whylen, r, "%s: cannot create: %s", failed, strerror(-r));
	free(failed);
	return r;
}

static int
path_in(char *buf, size_t len, const char *dir, const char *name, const char *ext, char *why,
    size_t whylen)
{
	int n = snprintf(buf, len, "%s/%s%s", dir, name, ext);

	if (n < 0 || (size_t)n >= len)
		return fail(why, whylen, AMESH_ERR_TOOLONG, "%s/%s%s: path too long", dir, name, ext);
	return 0;
}

/* Writes the first max certificates of list as PEM to path (0644, never replacing). */
static int
write_crts(const char *path, const mbedtls_x509_crt *list, size_t max, char *why, size_t whylen)
{
	char *pem = NULL;
	size_t len;
	int r;

	r = cert_list_pem(list, max, &pem, &len);
	if (r != 0)
		return fail(why, whylen, r, "%s: cannot encode the certificates", path);
	r = ca_write_file(path, pem, len, 0644, false, why, whylen);
	free(pem);
	return r;
}

int
ca_save(struct ca *ca, const char *dir, char *why, size_t whylen)
{
	char crt[PATH_MAX], key[PATH_MAX], bundle[PATH_MAX];
	unsigned char *key_pem = NULL;
	struct stat st;
	bool wrote_key = false, wrote_crt = false;
	int r;

	r = path_in(crt, sizeof(crt), dir, CA_CRT_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(key, sizeof(key), dir, CA_KEY_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(bundle, sizeof(bundle), dir, CA_BUNDLE_FILE, "", why, whylen);
	if (r != 0)
		goto out;
	/* Checked first for a clear message; ca_write_file's no-replace link closes the race. A
	 * stray bundle.crt would make a root's directory load as an intermediate's. */
	if (lstat(key, &st) == 0 || lstat(crt, &st) == 0 || lstat(bundle, &st) == 0) {
		r = fail(why, whylen, AMESH_ERR_EXISTS, "%s: already exists",
		    lstat(key, &st) == 0 ? key : lstat(crt, &st) == 0 ? crt : bundle);
		goto out;
	}
	r = make_parents(dir, why, whylen);
	if (r == 0)
		r = make_dir(dir, 0700, why, whylen);
	if (r != 0)
		goto out;
	key_pem = malloc(PEM_MAX);
	if (key_pem == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = mbedtls_pk_write_key_pem(&ca->key, key_pem, PEM_MAX);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot encode the CA key", r);
		goto out;
	}
	r = ca_write_file(key, key_pem, strlen((char *)key_pem), 0600, false, why, whylen);
	if (r != 0)
		goto out;
	wrote_key = true;
	r = write_crts(crt, &ca->crt, 1, why, whylen);
	if (r != 0)
		goto out;
	wrote_crt = true;
	if (!ca->is_root) {
		r = write_crts(bundle, &ca->roots, SIZE_MAX, why, whylen);
		if (r != 0)
			goto out;
	}
	r = 0;
out:
	/* Leave no half CA behind: a key without its certificate is useless and secret. */
	if (r != 0 && wrote_crt)
		unlink(crt);
	if (r != 0 && wrote_key)
		unlink(key);
	if (key_pem != NULL) {
		mbedtls_platform_zeroize(key_pem, PEM_MAX);
		free(key_pem);
	}
	return r;
}

/* Copies the value of the first subject attribute oid of crt into buf; false if none or too long. */
static bool
subject_attr(const mbedtls_x509_crt *crt, const char *oid, size_t oidlen, char *buf, size_t len)
{
	for (const mbedtls_x509_name *n = &crt->subject; n != NULL; n = n->next)
		if (n->oid.p != NULL && n->oid.len == oidlen && memcmp(n->oid.p, oid, oidlen) == 0) {
			if (n->val.len >= len || memchr(n->val.p, '\0', n->val.len) != NULL)
				return false;
			memcpy(buf, n->val.p, n->val.len);
			buf[n->val.len] = '\0';
			return true;
		}
	return false;
}

/* True if crt is issued by its own subject and its signature verifies with its own key. */
static bool
self_signed(const mbedtls_x509_crt *crt)
{
	unsigned char hash[MBEDTLS_MD_MAX_SIZE];
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(crt->sig_md);

	if (md == NULL || crt->issuer_raw.len != crt->subject_raw.len ||
	    memcmp(crt->issuer_raw.p, crt->subject_raw.p, crt->subject_raw.len) != 0 ||
	    mbedtls_md(md, crt->tbs.p, crt->tbs.len, hash) != 0)
		return false;
	return mbedtls_pk_verify_ext(crt->sig_pk, crt->sig_opts, (mbedtls_pk_context *)&crt->pk,
	    crt->sig_md, hash, mbedtls_md_get_size(md), crt->sig.p, crt->sig.len) == 0;
}

/* True if crt may sign certificates: CA:TRUE and, when keyUsage is present, keyCertSign. */
static bool
is_ca_cert(const mbedtls_x509_crt *crt)
{
	return crt->ca_istrue && (!(crt->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) ||
	    mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) == 0);
}

/* Loads path (bundle.crt) into ca->roots: self-signed CA certificates only. */
static int
load_roots(struct ca *ca, const char *path, char *why, size_t whylen)
{
	char e[256];
	int r, i = 1;

	r = cert_load_chain(path, &ca->roots, e, sizeof(e));
	if (r != 0)
		return fail(why, whylen, r, "%s: %s", path, e);
	for (const mbedtls_x509_crt *c = &ca->roots; c != NULL && c->raw.p != NULL; c = c->next, i++)
		if (!is_ca_cert(c) || !self_signed(c))
			return fail(why, whylen, AMESH_ERR_INVALID, "%s: certificate %d is not a "
			    "self-signed root CA (the bundle holds roots only)", path, i);
	return 0;
}

int
ca_load(const char *dir, struct ca **out, char *why, size_t whylen)
{
	char crt[PATH_MAX], key[PATH_MAX], bundle[PATH_MAX], e[400], cn[CA_NAME_MAX + 32];
	struct ca *ca = NULL;
	struct stat st;
	int r;

	*out = NULL;
	r = path_in(crt, sizeof(crt), dir, CA_CRT_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(key, sizeof(key), dir, CA_KEY_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(bundle, sizeof(bundle), dir, CA_BUNDLE_FILE, "", why, whylen);
	if (r != 0)
		goto out;
	ca = ca_new();
	if (ca == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cert_load_chain(crt, &ca->crt, e, sizeof(e));
	if (r != 0) {
		fail(why, whylen, r, "%s: %s", crt, e);
		goto out;
	}
	r = cert_load_key(key, &ca->key, e, sizeof(e));
	if (r != 0) {
		fail(why, whylen, r, "%s: %s", key, e);
		goto out;
	}
	r = AMESH_ERR_INVALID;
	if (ca->crt.next != NULL) {
		fail(why, whylen, r, "%s: holds more than one certificate (the CA's own only)", crt);
		goto out;
	}
	if (!is_ca_cert(&ca->crt)) {
		fail(why, whylen, r, "%s: not a CA certificate", crt);
		goto out;
	}
	if (mbedtls_pk_check_pair(&ca->crt.pk, &ca->key) != 0) {
		fail(why, whylen, r, "%s does not match %s", key, crt);
		goto out;
	}
	if (!subject_attr(&ca->crt, MBEDTLS_OID_AT_ORGANIZATION,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORGANIZATION), ca->trust_domain,
	    sizeof(ca->trust_domain)) || !ca_valid_trust_domain(ca->trust_domain)) {
		fail(why, whylen, r, "%s: its subject has no O= attribute holding a valid trust domain",
		    crt);
		goto out;
	}
	if (lstat(bundle, &st) != 0) {
		/* A root: its own trust bundle. */
		if (!self_signed(&ca->crt)) {
			fail(why, whylen, r, "%s: not self-signed, and %s has no %s (an intermediate's "
			    "directory holds its roots there)", crt, dir, CA_BUNDLE_FILE);
			goto out;
		}
		r = copy_crts(&ca->roots, &ca->crt, why, whylen);
		if (r != 0)
			goto out;
		ca->is_root = true;
	} else {
		r = load_roots(ca, bundle, why, whylen);
		if (r != 0)
			goto out;
		r = AMESH_ERR_INVALID;
		if (self_signed(&ca->crt)) {
			fail(why, whylen, r, "%s: a self-signed root, but %s has a %s (only an "
			    "intermediate's directory has one)", crt, dir, CA_BUNDLE_FILE);
			goto out;
		}
		/* Validity aside: an expired CA loads, and says so when asked to sign. */
		if (cert_verify_chain(&ca->crt, &ca->roots, NULL, e, sizeof(e)) != 0) {
			fail(why, whylen, r, "%s does not chain to a root of %s: %s", crt, bundle, e);
			goto out;
		}
		/* Its name is in its CN, as ca_create_intermediate wrote it (else ""). */
		if (subject_attr(&ca->crt, MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN), cn,
		    sizeof(cn)) && strncmp(cn, INTERMEDIATE_CN_PREFIX,
		    strlen(INTERMEDIATE_CN_PREFIX)) == 0) {
			const char *name = cn + strlen(INTERMEDIATE_CN_PREFIX);

			if (ca_valid_name(name)) /* so at most CA_NAME_MAX bytes */
				memcpy(ca->name, name, strlen(name) + 1);
		}
	}
	*out = ca;
	ca = NULL;
	r = 0;
out:
	ca_free(ca);
	return r;
}

int
ca_bundle_pem(const struct ca *ca, char **pem, size_t *len)
{
	return cert_list_pem(&ca->roots, SIZE_MAX, pem, len);
}

/* Checks that id is of kind's form and in td; writes the reason otherwise. */
static int
check_leaf_id(const char *id, enum ca_leaf_kind kind, const char *td, char *why, size_t whylen)
{
	char got[SPIFFE_ID_MAX], want[SPIFFE_ID_MAX];
	int r;

	switch (kind) {
	case CA_LEAF_WORKLOAD:
		r = spiffe_split(id, got, NULL, NULL);
		if (r != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "'%.*s' is not a workload ID "
			    "spiffe://TD/ns/NS/sa/SA", SPIFFE_ID_MAX, id);
		break;
	case CA_LEAF_NODE:
		r = spiffe_split_node(id, got, sizeof(got), NULL, 0);
		if (r != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "'%.*s' is not a node ID "
			    "spiffe://TD/amesh/node/NODE", SPIFFE_ID_MAX, id);
		break;
	case CA_LEAF_SERVER:
		if (spiffe_format_ca(want, sizeof(want), td) != 0 || strcmp(id, want) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "'%.*s' is not the CA's ID %s",
			    SPIFFE_ID_MAX, id, want);
		return 0;
	default:
		return fail(why, whylen, AMESH_ERR_INVALID, "unknown certificate kind %d", (int)kind);
	}
	if (strcmp(got, td) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: trust domain '%s' is not the CA's '%s'",
		    id, got, td);
	return 0;
}

/*
 * Makes the leaf s describes into chain, then ca's certificate after it, and verifies the chain:
 * what leaves here verifies against the bundle, and a workload's passes the identity store's check.
 */
static int
make_leaf(struct ca *ca, const struct cert_spec *s, enum ca_leaf_kind kind, time_t now,
    mbedtls_x509_crt *chain, char *why, size_t whylen)
{
	char e[600];
	int r;

	r = make_cert(s, chain, why, whylen);
	if (r == 0)
		r = copy_crts(chain, &ca->crt, why, whylen);
	if (r != 0)
		return r;
	if (kind == CA_LEAF_WORKLOAD)
		r = cert_check_identity(chain, NULL, &ca->roots, ca->trust_domain, now, NULL, 0, e,
		    sizeof(e));
	else
		r = cert_verify_chain(chain, &ca->roots, &now, e, sizeof(e));
	if (r != 0)
		return fail(why, whylen, AMESH_ERR_INTERNAL, "the new certificate fails its check: %s",
		    e);
	return 0;
}

/* ca_sign with a subject of the caller's choice ("O=TD" when NULL): the one signing path. */
static int
sign_leaf(struct ca *ca, const mbedtls_pk_context *pub, const char *spiffe_id,
    enum ca_leaf_kind kind, const char *subject, uint64_t ttl_seconds, time_t now,
    char **chain_pem, size_t *chain_len, time_t *not_before, time_t *not_after, char *serial_hex,
    char *why, size_t whylen)
{
	mbedtls_x509_crt chain;
	char t[32], o[CA_TRUST_DOMAIN_MAX + 8];
	struct cert_spec s = {
		/* mbedTLS's writer only reads the public part, but takes no const key. */
		.subject_key = (mbedtls_pk_context *)pub, .subject = subject, .issuer = ca,
		.from = now - CA_BACKDATE_SECONDS, .pathlen = -1,
		.key_usage = MBEDTLS_X509_KU_DIGITAL_SIGNATURE, .uri = spiffe_id,
		.eku_server = kind != CA_LEAF_NODE, .eku_client = kind != CA_LEAF_SERVER,
	};
	int r;

	*chain_pem = NULL;
	*chain_len = 0;
	if (serial_hex != NULL)
		serial_hex[0] = '\0';
	mbedtls_x509_crt_init(&chain);
	r = check_leaf_id(spiffe_id, kind, ca->trust_domain, why, whylen);
	if (r != 0)
		goto out;
	if (!cert_key_is_p256(pub)) {
		cert_key_desc(pub, t, sizeof(t));
		r = fail(why, whylen, AMESH_ERR_INVALID, "the key is %s, want ECDSA P-256", t);
		goto out;
	}
	if (ttl_seconds == 0 || ttl_seconds > (uint64_t)CA_DAYS_MAX * 86400) {
		r = fail(why, whylen, AMESH_ERR_RANGE, "TTL must be 1 s to %d days", CA_DAYS_MAX);
		goto out;
	}
	r = check_valid_at(&ca->crt, "CA", now, why, whylen);
	if (r != 0)
		goto out;
	/* A certificate cannot outlive the CA that vouches for it. */
	s.to = now + (time_t)ttl_seconds;
	if (s.to > cert_not_after(&ca->crt))
		s.to = cert_not_after(&ca->crt);
	if (s.subject == NULL) {
		snprintf(o, sizeof(o), "O=%s", ca->trust_domain);
		s.subject = o;
	}
	pthread_mutex_lock(&ca->lock);
	r = make_leaf(ca, &s, kind, now, &chain, why, whylen);
	pthread_mutex_unlock(&ca->lock);
	if (r != 0)
		goto out;
	r = cert_list_pem(&chain, 2, chain_pem, chain_len);
	if (r != 0) {
		fail(why, whylen, r, "cannot encode the certificate chain");
		goto out;
	}
	if (not_before != NULL)
		*not_before = cert_not_before(&chain);
	if (not_after != NULL)
		*not_after = cert_not_after(&chain);
	if (serial_hex != NULL)
		for (size_t i = 0; i < chain.serial.len && i < 20; i++)
			snprintf(serial_hex + 2 * i, 3, "%02x", chain.serial.p[i]);
	r = 0;
out:
	mbedtls_x509_crt_free(&chain);
	return r;
}

int
ca_sign(struct ca *ca, const mbedtls_pk_context *pub, const char *spiffe_id,
    enum ca_leaf_kind kind, uint64_t ttl_seconds, time_t now, char **chain_pem, size_t *chain_len,
    time_t *not_before, time_t *not_after, char *serial_hex, char *why, size_t whylen)
{
	return sign_leaf(ca, pub, spiffe_id, kind, NULL, ttl_seconds, now, chain_pem, chain_len,
	    not_before, not_after, serial_hex, why, whylen);
}

void
ca_issued_free(struct ca_issued *is)
{
	if (is == NULL)
		return;
	free(is->ns);
	free(is->sa);
	free(is->node);
	free(is->chain_pem);
	if (is->key_pem != NULL) {
		mbedtls_platform_zeroize(is->key_pem, is->key_len);
		free(is->key_pem);
	}
	free(is);
}

/* A new key, and is->spiffe_id signed for it as kind with subject; fills the rest of is. */
static int
issue_with_key(struct ca *ca, struct ca_issued *is, enum ca_leaf_kind kind, const char *subject,
    unsigned days, time_t now, char *why, size_t whylen)
{
	mbedtls_pk_context key;
	unsigned char *kp = NULL;
	int r;

	mbedtls_pk_init(&key);
	r = check_days(days, why, whylen);
	if (r != 0)
		goto out;
	kp = malloc(PEM_MAX);
	if (kp == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cert_key_new(&key, why, whylen);
	if (r == 0)
		r = sign_leaf(ca, &key, is->spiffe_id, kind, subject, (uint64_t)days * 86400, now,
		    &is->chain_pem, &is->chain_len, &is->not_before, &is->not_after, NULL, why,
		    whylen);
	if (r != 0)
		goto out;
	r = mbedtls_pk_write_key_pem(&key, kp, PEM_MAX);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot encode the key", r);
		goto out;
	}
	is->key_len = strlen((char *)kp);
	is->key_pem = (char *)kp;
	kp = NULL;
	r = 0;
out:
	if (kp != NULL) {
		mbedtls_platform_zeroize(kp, PEM_MAX);
		free(kp);
	}
	mbedtls_pk_free(&key);
	return r;
}

/* Issues the workload ns/sa (node NULL) or the node (ns and sa NULL) with a new key. */
static int
issue_named(struct ca *ca, const char *ns, const char *sa, const char *node, unsigned days,
    time_t now, struct ca_issued **out, char *why, size_t whylen)
{
	struct ca_issued *is = NULL;
	char subject[3 * CA_NAME_MAX + CA_TRUST_DOMAIN_MAX + 16];
	const char *bad = node ? (ca_valid_name(node) ? NULL : node) :
	    !ca_valid_name(ns) ? ns : !ca_valid_name(sa) ? sa : NULL;
	int r;

	*out = NULL;
	if (bad != NULL) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not a valid %sname (letters, digits, "
		    "'.', '-' and '_', at most %d)", bad, node ? "node " : "", CA_NAME_MAX);
		goto out;
	}
	is = calloc(1, sizeof(*is));
	if (is == NULL || (node != NULL && (is->node = strdup(node)) == NULL) ||
	    (node == NULL && ((is->ns = strdup(ns)) == NULL || (is->sa = strdup(sa)) == NULL))) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (node != NULL) {
		r = spiffe_format_node(is->spiffe_id, sizeof(is->spiffe_id), ca->trust_domain, node);
		snprintf(subject, sizeof(subject), "CN=%s,O=%s", node, ca->trust_domain);
	} else {
		r = spiffe_format(is->spiffe_id, sizeof(is->spiffe_id), ca->trust_domain, ns, sa);
		snprintf(subject, sizeof(subject), "CN=%s,OU=%s,O=%s", sa, ns, ca->trust_domain);
	}
	if (r != 0) {
		fail(why, whylen, r, "cannot form the SPIFFE ID");
		goto out;
	}
	r = issue_with_key(ca, is, node ? CA_LEAF_NODE : CA_LEAF_WORKLOAD, subject, days, now, why,
	    whylen);
	if (r != 0)
		goto out;
	*out = is;
	is = NULL;
out:
	ca_issued_free(is);
	return r;
}

int
ca_issue(struct ca *ca, const char *ns, const char *sa, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen)
{
	return issue_named(ca, ns, sa, NULL, days, now, out, why, whylen);
}

int
ca_issue_node(struct ca *ca, const char *node, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen)
{
	return issue_named(ca, NULL, NULL, node, days, now, out, why, whylen);
}

int
ca_issued_write(const struct ca_issued *is, const char *cert_dir, char *why, size_t whylen)
{
	char dir[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
	int r;

	r = make_parents(cert_dir, why, whylen);
	if (r == 0)
		r = make_dir(cert_dir, 0755, why, whylen);
	if (r != 0)
		goto out;
	if (is->node != NULL) {
		r = path_in(crt, sizeof(crt), cert_dir, CA_NODE_CRT_FILE, "", why, whylen);
		if (r == 0)
			r = path_in(key, sizeof(key), cert_dir, CA_NODE_KEY_FILE, "", why, whylen);
	} else {
		r = path_in(dir, sizeof(dir), cert_dir, is->ns, "", why, whylen);
		if (r == 0)
			r = make_dir(dir, 0755, why, whylen);
		if (r == 0)
			r = path_in(crt, sizeof(crt), dir, is->sa, ".crt", why, whylen);
		if (r == 0)
			r = path_in(key, sizeof(key), dir, is->sa, ".key", why, whylen);
	}
	if (r != 0)
		goto out;
	/*
	 * Key first: a reader that sees the new key with the old certificate finds a mismatch and
	 * keeps the identity it had (identity.c), and the next event brings the certificate.
	 */
	r = ca_write_file(key, is->key_pem, is->key_len, 0600, true, why, whylen);
	if (r == 0)
		r = ca_write_file(crt, is->chain_pem, is->chain_len, 0644, true, why, whylen);
out:
	return r;
}

int
ca_write_file(const char *path, const void *data, size_t len, mode_t mode, bool replace,
    char *why, size_t whylen)
{
	char dir[PATH_MAX], tmp[PATH_MAX];
	const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	const unsigned char *p = data;
	unsigned char rnd[6];
	size_t dl = slash ? (size_t)(slash - path) : 0;
	int fd = -1, dfd = -1, r;
	bool created = false;

	if (*base == '\0' || dl >= sizeof(dir)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "%s: not a file name", path);
		goto out;
	}
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (dl == 0)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)dl, path);
	/* A hidden name in the same directory: rename(2) is atomic only within a file system. */
	for (int tries = 0; tries < 16 && fd < 0; tries++) {
		int n;

		if (rng_fill(rng_ctx(), rnd, sizeof(rnd)) != 0) {
			r = fail(why, whylen, AMESH_ERR_INTERNAL, "random generator failed");
			goto out;
		}
		n = snprintf(tmp, sizeof(tmp), "%s/.%s.%02x%02x%02x%02x%02x%02x.tmp", dir, base,
		    rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
		if (n < 0 || (size_t)n >= sizeof(tmp)) {
			r = fail(why, whylen, AMESH_ERR_TOOLONG, "%s: path too long", path);
			goto out;
		}
		/* Created with its final mode: a key is never readable by others, even briefly. */
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
		if (fd < 0 && errno != EEXIST) {
			r = fail(why, whylen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
			goto out;
		}
	}
	if (fd < 0) {
		r = fail(why, whylen, -EEXIST, "%s: cannot create a temporary file", path);
		goto out;
	}
	created = true;
	/* The umask may have narrowed mode; set it exactly (never wider than asked). */
	if (fchmod(fd, mode) != 0) {
		r = fail(why, whylen, -errno, "%s: chmod: %s", tmp, strerror(errno));
		goto out;
	}
	while (len > 0) {
		ssize_t k = write(fd, p, len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = fail(why, whylen, -errno, "%s: write: %s", tmp, strerror(errno));
			goto out;
		}
		p += k;
		len -= (size_t)k;
	}
	if (fsync(fd) != 0) {
		r = fail(why, whylen, -errno, "%s: fsync: %s", tmp, strerror(errno));
		goto out;
	}
	r = close(fd);
	fd = -1;
	if (r != 0) {
		r = fail(why, whylen, -errno, "%s: close: %s", tmp, strerror(errno));
		goto out;
	}
	if (replace) {
		if (rename(tmp, path) != 0) {
			r = fail(why, whylen, -errno, "%s: rename: %s", path, strerror(errno));
			goto out;
		}
	} else {
		/* link(2) fails if path exists: no check-then-rename race. */
		if (link(tmp, path) != 0) {
			r = fail(why, whylen, errno == EEXIST ? AMESH_ERR_EXISTS : -errno, "%s: %s",
			    path, errno == EEXIST ? "already exists" : strerror(errno));
			goto out;
		}
		unlink(tmp);
	}
	created = false;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) != 0) {
		r = fail(why, whylen, -errno, "%s: fsync: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	if (created)
		unlink(tmp);
	return r;
}
