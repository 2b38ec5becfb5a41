/* SPDX-License-Identifier: Apache-2.0 */
/* The mesh CA: creating and storing the root, issuing workload certificates, atomic file writes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/platform_util.h>
#include <stdarg.h>
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
#define PEM_CRT_BEGIN "-----BEGIN CERTIFICATE-----\n"
#define PEM_CRT_END "-----END CERTIFICATE-----\n"
/* Big enough for any certificate or key this file makes (P-256 keys, short names). */
#define DER_MAX 4096
#define PEM_MAX 6144

static int
fail(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
fail(char *why, size_t whylen, int code, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whylen > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static int
mbed_fail(char *why, size_t whylen, const char *what, int code)
{
	char e[128];

	mbedtls_strerror(code, e, sizeof(e));
	return fail(why, whylen, AMESH_ERR_INTERNAL, "%s: %s", what, e);
}

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

static int
gen_key(mbedtls_pk_context *key, char *why, size_t whylen)
{
	int r;

	r = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (r == 0)
		r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), rng_fill,
		    rng_ctx());
	if (r != 0)
		return mbed_fail(why, whylen, "cannot generate a P-256 key", r);
	return 0;
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

/* PEM of one DER certificate appended to buf (NUL-terminated); returns 0 or a negative code. */
static int
pem_append(const unsigned char *der, size_t derlen, char *buf, size_t size, size_t *off)
{
	size_t olen = 0;
	int r;

	r = mbedtls_pem_write_buffer(PEM_CRT_BEGIN, PEM_CRT_END, der, derlen,
	    (unsigned char *)buf + *off, size - *off, &olen);
	if (r != 0 || olen == 0)
		return AMESH_ERR_TOOLONG;
	*off += olen - 1; /* olen counts the NUL */
	return 0;
}

int
ca_create(const char *trust_domain, unsigned days, time_t now, struct ca **out, char *why,
    size_t whylen)
{
	struct ca *ca = NULL;
	mbedtls_x509write_cert w;
	unsigned char *der = NULL;
	char subject[128];
	int r, n;

	*out = NULL;
	mbedtls_x509write_crt_init(&w);
	if (!ca_valid_trust_domain(trust_domain)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "trust domain '%s' is not valid (lower-case "
		    "letters, digits, '.', '-' and '_', at most %d)", trust_domain, CA_TRUST_DOMAIN_MAX);
		goto out;
	}
	if (days == 0 || days > CA_DAYS_MAX) {
		r = fail(why, whylen, AMESH_ERR_RANGE, "days must be 1-%d", CA_DAYS_MAX);
		goto out;
	}
	ca = calloc(1, sizeof(*ca));
	der = malloc(DER_MAX);
	if (ca == NULL || der == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	mbedtls_x509_crt_init(&ca->crt);
	mbedtls_pk_init(&ca->key);
	r = gen_key(&ca->key, why, whylen);
	if (r != 0)
		goto out;
	r = write_common(&w, now - CA_BACKDATE_SECONDS, now + (time_t)days * 86400, why, whylen);
	if (r != 0)
		goto out;
	snprintf(subject, sizeof(subject), "CN=" CA_SUBJECT_CN ",O=%s", trust_domain);
	mbedtls_x509write_crt_set_subject_key(&w, &ca->key);
	mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
	if ((r = mbedtls_x509write_crt_set_subject_name(&w, subject)) != 0 ||
	    (r = mbedtls_x509write_crt_set_issuer_name(&w, subject)) != 0 ||
	    (r = mbedtls_x509write_crt_set_basic_constraints(&w, 1, 0)) != 0 ||
	    (r = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_KEY_CERT_SIGN |
	    MBEDTLS_X509_KU_CRL_SIGN)) != 0 ||
	    (r = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
	    (r = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0) {
		r = mbed_fail(why, whylen, "cannot build the CA certificate", r);
		goto out;
	}
	n = sign(&w, der, DER_MAX, why, whylen);
	if (n < 0) {
		r = n;
		goto out;
	}
	r = mbedtls_x509_crt_parse_der(&ca->crt, der + DER_MAX - n, (size_t)n);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot parse the new CA certificate", r);
		goto out;
	}
	snprintf(ca->trust_domain, sizeof(ca->trust_domain), "%s", trust_domain);
	*out = ca;
	ca = NULL;
	r = 0;
out:
	mbedtls_x509write_crt_free(&w);
	free(der);
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

int
ca_save(struct ca *ca, const char *dir, char *why, size_t whylen)
{
	char crt[PATH_MAX], key[PATH_MAX];
	char *crt_pem = NULL;
	unsigned char *key_pem = NULL;
	size_t off = 0;
	struct stat st;
	bool wrote_key = false;
	int r;

	r = path_in(crt, sizeof(crt), dir, CA_CRT_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(key, sizeof(key), dir, CA_KEY_FILE, "", why, whylen);
	if (r != 0)
		goto out;
	/* Checked first for a clear message; ca_write_file's no-replace link closes the race. */
	if (lstat(key, &st) == 0 || lstat(crt, &st) == 0) {
		r = fail(why, whylen, AMESH_ERR_EXISTS, "%s: already exists",
		    lstat(key, &st) == 0 ? key : crt);
		goto out;
	}
	r = make_parents(dir, why, whylen);
	if (r == 0)
		r = make_dir(dir, 0700, why, whylen);
	if (r != 0)
		goto out;
	crt_pem = malloc(PEM_MAX);
	key_pem = malloc(PEM_MAX);
	if (crt_pem == NULL || key_pem == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = pem_append(ca->crt.raw.p, ca->crt.raw.len, crt_pem, PEM_MAX, &off);
	if (r != 0) {
		r = fail(why, whylen, r, "cannot encode the CA certificate");
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
	r = ca_write_file(crt, crt_pem, off, 0644, false, why, whylen);
	if (r != 0)
		goto out;
	r = 0;
out:
	/* Leave no half CA behind: a key without its certificate is useless and secret. */
	if (r != 0 && wrote_key)
		unlink(key);
	if (key_pem != NULL) {
		mbedtls_platform_zeroize(key_pem, PEM_MAX);
		free(key_pem);
	}
	free(crt_pem);
	return r;
}

int
ca_load(const char *dir, struct ca **out, char *why, size_t whylen)
{
	char crt[PATH_MAX], key[PATH_MAX], e[256];
	struct ca *ca = NULL;
	const mbedtls_x509_name *n;
	size_t tdlen = 0;
	int r;

	*out = NULL;
	r = path_in(crt, sizeof(crt), dir, CA_CRT_FILE, "", why, whylen);
	if (r == 0)
		r = path_in(key, sizeof(key), dir, CA_KEY_FILE, "", why, whylen);
	if (r != 0)
		goto out;
	ca = calloc(1, sizeof(*ca));
	if (ca == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	mbedtls_x509_crt_init(&ca->crt);
	mbedtls_pk_init(&ca->key);
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
	if (!ca->crt.ca_istrue || ((ca->crt.ext_types & MBEDTLS_X509_EXT_KEY_USAGE) &&
	    mbedtls_x509_crt_check_key_usage(&ca->crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0)) {
		fail(why, whylen, r, "%s: not a CA certificate", crt);
		goto out;
	}
	if (mbedtls_pk_check_pair(&ca->crt.pk, &ca->key) != 0) {
		fail(why, whylen, r, "%s does not match %s", key, crt);
		goto out;
	}
	for (n = &ca->crt.subject; n != NULL; n = n->next)
		if (n->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_ORGANIZATION, &n->oid) == 0) {
			tdlen = n->val.len;
			if (tdlen < sizeof(ca->trust_domain)) {
				memcpy(ca->trust_domain, n->val.p, tdlen);
				ca->trust_domain[tdlen] = '\0';
			}
			break;
		}
	if (n == NULL || tdlen >= sizeof(ca->trust_domain) ||
	    !ca_valid_trust_domain(ca->trust_domain)) {
		fail(why, whylen, r, "%s: its subject has no O= attribute holding a valid trust domain",
		    crt);
		goto out;
	}
	*out = ca;
	ca = NULL;
	r = 0;
out:
	ca_free(ca);
	return r;
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

/* subjectAltName: GeneralNames ::= SEQUENCE { [6] IMPLICIT IA5String uri }, built backwards. */
static int
san_der(const char *uri, unsigned char *buf, size_t size, unsigned char **start, size_t *len)
{
	unsigned char *p = buf + size;
	size_t ul = strlen(uri);
	int r, n = 0;

	if ((r = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)uri, ul)) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_len(&p, buf, ul)) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_len(&p, buf, (size_t)n)) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED |
	    MBEDTLS_ASN1_SEQUENCE)) < 0)
		return r;
	n += r;
	*start = p;
	*len = (size_t)n;
	return 0;
}

/* extKeyUsage: SEQUENCE { id-kp-serverAuth, id-kp-clientAuth } (mbedTLS 2.28 has no setter). */
static int
eku_der(unsigned char *buf, size_t size, unsigned char **start, size_t *len)
{
	unsigned char *p = buf + size;
	int r, n = 0;

	if ((r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH))) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH))) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_len(&p, buf, (size_t)n)) < 0)
		return r;
	n += r;
	if ((r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED |
	    MBEDTLS_ASN1_SEQUENCE)) < 0)
		return r;
	n += r;
	*start = p;
	*len = (size_t)n;
	return 0;
}

void
ca_issued_free(struct ca_issued *is)
{
	if (is == NULL)
		return;
	free(is->ns);
	free(is->sa);
	free(is->chain_pem);
	if (is->key_pem != NULL) {
		mbedtls_platform_zeroize(is->key_pem, is->key_len);
		free(is->key_pem);
	}
	free(is);
}

int
ca_issue(struct ca *ca, const char *ns, const char *sa, unsigned days, time_t now,
    struct ca_issued **out, char *why, size_t whylen)
{
	struct ca_issued *is = NULL;
	mbedtls_x509write_cert w;
	mbedtls_pk_context key;
	mbedtls_x509_crt leaf;
	unsigned char *der = NULL, *ext, *kp = NULL;
	unsigned char extbuf[SPIFFE_ID_MAX + 32];
	char subject[3 * CA_NAME_MAX + CA_TRUST_DOMAIN_MAX + 16], issuer[512], t[32], e[400];
	size_t extlen, off = 0;
	time_t from = now - CA_BACKDATE_SECONDS, to = now + (time_t)days * 86400;
	int r, n;

	*out = NULL;
	mbedtls_x509write_crt_init(&w);
	mbedtls_pk_init(&key);
	mbedtls_x509_crt_init(&leaf);
	if (!ca_valid_name(ns) || !ca_valid_name(sa)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not a valid name (letters, digits, "
		    "'.', '-' and '_', at most %d)", ca_valid_name(ns) ? sa : ns, CA_NAME_MAX);
		goto out;
	}
	if (days == 0 || days > CA_DAYS_MAX) {
		r = fail(why, whylen, AMESH_ERR_RANGE, "days must be 1-%d", CA_DAYS_MAX);
		goto out;
	}
	if (now > cert_not_after(&ca->crt)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "the CA expired at %s",
		    iso_time(cert_not_after(&ca->crt), t, sizeof(t)));
		goto out;
	}
	/* A certificate cannot outlive the CA that vouches for it. */
	if (to > cert_not_after(&ca->crt))
		to = cert_not_after(&ca->crt);
	is = calloc(1, sizeof(*is));
	der = malloc(DER_MAX);
	kp = malloc(PEM_MAX);
	if (is == NULL || der == NULL || kp == NULL || (is->ns = strdup(ns)) == NULL ||
	    (is->sa = strdup(sa)) == NULL || (is->chain_pem = malloc(2 * PEM_MAX)) == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = spiffe_format(is->spiffe_id, sizeof(is->spiffe_id), ca->trust_domain, ns, sa);
	if (r != 0) {
		fail(why, whylen, r, "SPIFFE ID too long");
		goto out;
	}
	r = issuer_string(&ca->crt, issuer, sizeof(issuer));
	if (r != 0) {
		fail(why, whylen, r, "cannot use the CA's subject as an issuer name");
		goto out;
	}
	r = gen_key(&key, why, whylen);
	if (r != 0)
		goto out;
	r = write_common(&w, from, to, why, whylen);
	if (r != 0)
		goto out;
	snprintf(subject, sizeof(subject), "CN=%s,OU=%s,O=%s", sa, ns, ca->trust_domain);
	mbedtls_x509write_crt_set_subject_key(&w, &key);
	mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
	if ((r = mbedtls_x509write_crt_set_subject_name(&w, subject)) != 0 ||
	    (r = mbedtls_x509write_crt_set_issuer_name(&w, issuer)) != 0 ||
	    (r = mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1)) != 0 ||
	    (r = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
	    (r = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
	    (r = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0 ||
	    (r = san_der(is->spiffe_id, extbuf, sizeof(extbuf), &ext, &extlen)) != 0 ||
	    (r = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, ext, extlen)) != 0 ||
	    (r = eku_der(extbuf, sizeof(extbuf), &ext, &extlen)) != 0 ||
	    (r = mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, ext, extlen)) != 0) {
		r = mbed_fail(why, whylen, "cannot build the certificate", r);
		goto out;
	}
	n = sign(&w, der, DER_MAX, why, whylen);
	if (n < 0) {
		r = n;
		goto out;
	}
	r = mbedtls_x509_crt_parse_der(&leaf, der + DER_MAX - n, (size_t)n);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot parse the new certificate", r);
		goto out;
	}
	/* The certificate must pass the very check the identity store applies to it. */
	r = cert_check_identity(&leaf, &key, &ca->crt, ca->trust_domain, now, NULL, 0, e,
	    sizeof(e));
	if (r != 0) {
		fail(why, whylen, AMESH_ERR_INTERNAL, "the new certificate fails its check: %s", e);
		goto out;
	}
	if ((r = pem_append(leaf.raw.p, leaf.raw.len, is->chain_pem, 2 * PEM_MAX, &off)) != 0 ||
	    (r = pem_append(ca->crt.raw.p, ca->crt.raw.len, is->chain_pem, 2 * PEM_MAX, &off)) != 0) {
		fail(why, whylen, r, "cannot encode the certificate chain");
		goto out;
	}
	is->chain_len = off;
	r = mbedtls_pk_write_key_pem(&key, kp, PEM_MAX);
	if (r != 0) {
		r = mbed_fail(why, whylen, "cannot encode the key", r);
		goto out;
	}
	is->key_len = strlen((char *)kp);
	is->key_pem = (char *)kp;
	kp = NULL;
	is->not_before = cert_not_before(&leaf);
	is->not_after = cert_not_after(&leaf);
	*out = is;
	is = NULL;
	r = 0;
out:
	if (kp != NULL) {
		mbedtls_platform_zeroize(kp, PEM_MAX);
		free(kp);
	}
	mbedtls_x509write_crt_free(&w);
	mbedtls_pk_free(&key);
	mbedtls_x509_crt_free(&leaf);
	free(der);
	ca_issued_free(is);
	return r;
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
	r = path_in(dir, sizeof(dir), cert_dir, is->ns, "", why, whylen);
	if (r == 0)
		r = make_dir(dir, 0755, why, whylen);
	if (r == 0)
		r = path_in(crt, sizeof(crt), dir, is->sa, ".crt", why, whylen);
	if (r == 0)
		r = path_in(key, sizeof(key), dir, is->sa, ".key", why, whylen);
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
