/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 helpers for mesh identities: SPIFFE IDs from URI SANs, bounded PEM loading, identity checks. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "tls/cert.h"

#define SPIFFE_PREFIX "spiffe://"
#define SPIFFE_PREFIX_LEN (sizeof(SPIFFE_PREFIX) - 1)
/* The SPIFFE spec bounds a trust domain name to 255 bytes. */
#define TRUST_DOMAIN_MAX 255
/* GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String. */
#define GN_URI (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)

static int
fail(char *why, size_t whylen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes a reason into why (if any) and returns code. */
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

/* mbedTLS's text for an mbedTLS error code. */
static const char *
mbed_err(int code, char *buf, size_t len)
{
	mbedtls_strerror(code, buf, len);
	return buf;
}

/* The URI SANs of one subjectAltName extension value (GeneralNames). */
static int
scan_general_names(unsigned char *p, const unsigned char *end, const unsigned char **uri,
    size_t *urilen, int *nuri)
{
	size_t len;

	if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0 ||
	    p + len != end)
		return AMESH_ERR_INVALID;
	while (p < end) {
		unsigned char tag = *p++;

		/* GeneralName tags are context-specific [0]..[8]: never the multi-byte form. */
		if ((tag & MBEDTLS_ASN1_TAG_CLASS_MASK) != MBEDTLS_ASN1_CONTEXT_SPECIFIC ||
		    (tag & MBEDTLS_ASN1_TAG_VALUE_MASK) > 8)
			return AMESH_ERR_INVALID;
		if (mbedtls_asn1_get_len(&p, end, &len) != 0)
			return AMESH_ERR_INVALID;
		if (tag == GN_URI) {
			(*nuri)++;
			*uri = p;
			*urilen = len;
		}
		p += len;
	}
	return 0;
}

int
cert_spiffe_id(const mbedtls_x509_crt *crt, char *buf, size_t len)
{
	unsigned char *p, *end;
	const unsigned char *uri = NULL;
	size_t l, urilen = 0;
	int nuri = 0, nsan = 0, r;

	if (buf != NULL && len > 0)
		buf[0] = '\0';
	if (crt == NULL || crt->v3_ext.p == NULL || crt->v3_ext.len == 0)
		return AMESH_ERR_NOTFOUND;
	/* v3_ext is the content of [3]: Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension. */
	p = crt->v3_ext.p;
	end = p + crt->v3_ext.len;
	if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) != 0 ||
	    p + l != end)
		return AMESH_ERR_INVALID;
	while (p < end) {
		unsigned char *ext_end, *oid;
		size_t oidlen;
		int critical;

		/* Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
		 * extnValue OCTET STRING } */
		if (mbedtls_asn1_get_tag(&p, end, &l, MBEDTLS_ASN1_CONSTRUCTED |
		    MBEDTLS_ASN1_SEQUENCE) != 0)
			return AMESH_ERR_INVALID;
		ext_end = p + l;
		if (mbedtls_asn1_get_tag(&p, ext_end, &oidlen, MBEDTLS_ASN1_OID) != 0)
			return AMESH_ERR_INVALID;
		oid = p;
		p += oidlen;
		if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
		    mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
			return AMESH_ERR_INVALID;
		if (mbedtls_asn1_get_tag(&p, ext_end, &l, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
		    p + l != ext_end)
			return AMESH_ERR_INVALID;
		if (oidlen == MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME) &&
		    memcmp(oid, MBEDTLS_OID_SUBJECT_ALT_NAME, oidlen) == 0) {
			nsan++;
			r = scan_general_names(p, ext_end, &uri, &urilen, &nuri);
			if (r != 0)
				return r;
		}
		p = ext_end;
	}
	if (nsan > 1 || nuri > 1)
		return AMESH_ERR_INVALID;
	if (nuri == 0 || urilen < SPIFFE_PREFIX_LEN ||
	    strncmp((const char *)uri, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0)
		return AMESH_ERR_NOTFOUND;
	/* IA5String: printable ASCII only in a URI; a NUL would truncate the ID we compare. */
	for (size_t i = 0; i < urilen; i++)
		if (uri[i] <= 0x20 || uri[i] >= 0x7f)
			return AMESH_ERR_INVALID;
	if (urilen >= SPIFFE_ID_MAX || (buf != NULL && urilen >= len))
		return AMESH_ERR_TOOLONG;
	if (buf != NULL) {
		memcpy(buf, uri, urilen);
		buf[urilen] = '\0';
	}
	return 0;
}

static bool
is_td_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool
is_seg_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '-' || c == '_';
}

/* Length of the path segment at s (up to '/' or the end); 0 if empty, "." or "..", or bad. */
static size_t
segment(const char *s)
{
	size_t n = 0;

	while (s[n] != '\0' && s[n] != '/') {
		if (!is_seg_char(s[n]))
			return 0;
		n++;
	}
	if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	return n;
}

static void
copy_out(char *dst, const char *src, size_t n)
{
	if (dst != NULL) {
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
}

int
spiffe_split(const char *id, char *td, char *ns, char *sa)
{
	const char *p, *nsp, *sap;
	size_t tdl = 0, nsl, sal;

	if (id == NULL || strnlen(id, SPIFFE_ID_MAX) >= SPIFFE_ID_MAX ||
	    strncmp(id, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0)
		return AMESH_ERR_INVALID;
	p = id + SPIFFE_PREFIX_LEN;
	while (p[tdl] != '\0' && p[tdl] != '/') {
		if (!is_td_char(p[tdl]))
			return AMESH_ERR_INVALID;
		tdl++;
	}
	if (tdl == 0 || tdl > TRUST_DOMAIN_MAX)
		return AMESH_ERR_INVALID;
	p += tdl;
	if (strncmp(p, "/ns/", 4) != 0)
		return AMESH_ERR_INVALID;
	nsp = p + 4;
	nsl = segment(nsp);
	if (nsl == 0 || strncmp(nsp + nsl, "/sa/", 4) != 0)
		return AMESH_ERR_INVALID;
	sap = nsp + nsl + 4;
	sal = segment(sap);
	if (sal == 0 || sap[sal] != '\0')
		return AMESH_ERR_INVALID;
	copy_out(td, id + SPIFFE_PREFIX_LEN, tdl);
	copy_out(ns, nsp, nsl);
	copy_out(sa, sap, sal);
	return 0;
}

int
spiffe_format(char *buf, size_t len, const char *td, const char *ns, const char *sa)
{
	int n = snprintf(buf, len, SPIFFE_PREFIX "%s/ns/%s/sa/%s", td, ns, sa);

	if (n < 0 || (size_t)n >= len)
		return AMESH_ERR_TOOLONG;
	return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
	long long era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long long)doe - 719468;
}

static time_t
x509_time_to_unix(const mbedtls_x509_time *t)
{
	return (time_t)(days_from_civil(t->year, (unsigned)t->mon, (unsigned)t->day) * 86400 +
	    t->hour * 3600 + t->min * 60 + t->sec);
}

time_t
cert_not_before(const mbedtls_x509_crt *crt)
{
	return x509_time_to_unix(&crt->valid_from);
}

time_t
cert_not_after(const mbedtls_x509_crt *crt)
{
	return x509_time_to_unix(&crt->valid_to);
}

/*
 * Reads a whole file of at most CERT_FILE_MAX bytes into a NUL-terminated buffer (mbedTLS wants the
 * NUL counted in PEM lengths). The caller zeroes and frees it.
 */
static int
read_small_file(const char *path, unsigned char **out, size_t *outlen, char *why, size_t whylen)
{
	unsigned char *buf = NULL;
	size_t n = 0;
	struct stat st;
	int fd = -1, r;

	*out = NULL;
	*outlen = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		r = -errno;
		fail(why, whylen, r, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		r = -errno;
		fail(why, whylen, r, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a regular file");
		goto out;
	}
	/* One byte more than the limit, to notice a file that grew past it after fstat. */
	buf = malloc(CERT_FILE_MAX + 2);
	if (buf == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, CERT_FILE_MAX + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			fail(why, whylen, r, "cannot read: %s", strerror(errno));
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > CERT_FILE_MAX) {
			r = fail(why, whylen, AMESH_ERR_TOOLONG, "larger than %d KiB",
			    CERT_FILE_MAX / 1024);
			goto out;
		}
	}
	if (n == 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "empty file");
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n + 1;
	buf = NULL;
	r = 0;
out:
	if (buf != NULL) {
		mbedtls_platform_zeroize(buf, CERT_FILE_MAX + 2);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return r;
}

int
cert_load_chain(const char *path, mbedtls_x509_crt *out, char *why, size_t whylen)
{
	unsigned char *buf = NULL;
	size_t len;
	char e[128];
	int r;

	mbedtls_x509_crt_init(out);
	r = read_small_file(path, &buf, &len, why, whylen);
	if (r != 0)
		goto out;
	r = mbedtls_x509_crt_parse(out, buf, len);
	if (r < 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a certificate: %s",
		    mbed_err(r, e, sizeof(e)));
		goto out;
	}
	if (r > 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "%d of its certificates cannot be parsed", r);
		goto out;
	}
	if (out->raw.p == NULL) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "no certificate in the file");
		goto out;
	}
	r = 0;
out:
	if (r != 0) {
		mbedtls_x509_crt_free(out);
		mbedtls_x509_crt_init(out);
	}
	free(buf);
	return r;
}

int
cert_load_key(const char *path, mbedtls_pk_context *out, char *why, size_t whylen)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	char e[128];
	int r;

	mbedtls_pk_init(out);
	r = read_small_file(path, &buf, &len, why, whylen);
	if (r != 0)
		goto out;
	r = mbedtls_pk_parse_key(out, buf, len, NULL, 0);
	if (r == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || r == MBEDTLS_ERR_PK_PASSWORD_MISMATCH) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "encrypted keys are not supported");
		goto out;
	}
	/* mbedTLS's message names the failure, never the key bytes. */
	if (r != 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a private key: %s",
		    mbed_err(r, e, sizeof(e)));
		goto out;
	}
	r = 0;
out:
	if (r != 0) {
		mbedtls_pk_free(out);
		mbedtls_pk_init(out);
	}
	if (buf != NULL) {
		mbedtls_platform_zeroize(buf, len);
		free(buf);
	}
	return r;
}

/*
 * Verification callback: mbedTLS judges validity by the wall clock; replace that with the caller's
 * time so checks are reproducible (tests pass a time; the store passes time(NULL)).
 */
static int
verify_at(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	time_t now = *(const time_t *)ctx;

	(void)depth;
	*flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
	if (now > cert_not_after(crt))
		*flags |= MBEDTLS_X509_BADCERT_EXPIRED;
	if (now < cert_not_before(crt))
		*flags |= MBEDTLS_X509_BADCERT_FUTURE;
	return 0;
}

/* mbedtls_x509_crt_verify_info() on one line: "reason; reason". */
static void
verify_text(uint32_t flags, char *buf, size_t len)
{
	char tmp[512], *save = NULL;
	size_t o = 0;
	int n;

	buf[0] = '\0';
	n = mbedtls_x509_crt_verify_info(tmp, sizeof(tmp), "", flags);
	if (n <= 0) {
		snprintf(buf, len, "verification flags 0x%08x", (unsigned)flags);
		return;
	}
	for (char *line = strtok_r(tmp, "\n", &save); line != NULL && o + 1 < len;
	    line = strtok_r(NULL, "\n", &save))
		o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "; " : "", line);
}

int
cert_check_identity(mbedtls_x509_crt *chain, const mbedtls_pk_context *key,
    mbedtls_x509_crt *bundle, const char *trust_domain, time_t now, char *id, size_t idlen,
    char *why, size_t whylen)
{
	char sid[SPIFFE_ID_MAX], td[SPIFFE_ID_MAX], t[32], v[400];
	const mbedtls_ecp_keypair *ec;
	uint32_t flags = 0;
	int r;

	if (id != NULL && idlen > 0)
		id[0] = '\0';
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (chain == NULL || chain->raw.p == NULL)
		return fail(why, whylen, AMESH_ERR_INVALID, "no certificate");
	if (bundle == NULL || bundle->raw.p == NULL)
		return fail(why, whylen, AMESH_ERR_INVALID, "no trust bundle");
	if (chain->ca_istrue)
		return fail(why, whylen, AMESH_ERR_INVALID,
		    "a CA certificate (basicConstraints CA:TRUE) cannot be a workload identity");
	r = cert_spiffe_id(chain, sid, sizeof(sid));
	if (r == AMESH_ERR_NOTFOUND)
		return fail(why, whylen, r, "no spiffe:// URI SAN");
	if (r == AMESH_ERR_TOOLONG)
		return fail(why, whylen, r, "SPIFFE ID longer than %d bytes", SPIFFE_ID_MAX - 1);
	if (r != 0)
		return fail(why, whylen, r, "malformed subjectAltName or more than one URI SAN");
	if (spiffe_split(sid, td, NULL, NULL) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not of the form "
		    "spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT", sid);
	if (trust_domain == NULL || strcmp(td, trust_domain) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: trust domain '%s' is not '%s'", sid,
		    td, trust_domain ? trust_domain : "");
	if (!mbedtls_pk_can_do(&chain->pk, MBEDTLS_PK_ECKEY) ||
	    (ec = mbedtls_pk_ec(chain->pk)) == NULL || ec->grp.id != MBEDTLS_ECP_DP_SECP256R1)
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: key is %s, not ECDSA P-256", sid,
		    mbedtls_pk_get_name(&chain->pk));
	if (!(chain->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) ||
	    mbedtls_x509_crt_check_key_usage(chain, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: keyUsage lacks digitalSignature", sid);
	if (!(chain->ext_types & MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE) ||
	    mbedtls_x509_crt_check_extended_key_usage(chain, MBEDTLS_OID_SERVER_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) != 0 ||
	    mbedtls_x509_crt_check_extended_key_usage(chain, MBEDTLS_OID_CLIENT_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID,
		    "%s: extendedKeyUsage lacks serverAuth or clientAuth", sid);
	if (now < cert_not_before(chain))
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: not valid before %s", sid,
		    iso_time(cert_not_before(chain), t, sizeof(t)));
	if (now > cert_not_after(chain))
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: expired at %s", sid,
		    iso_time(cert_not_after(chain), t, sizeof(t)));
	r = mbedtls_x509_crt_verify(chain, bundle, NULL, NULL, &flags, verify_at, &now);
	if (r != 0 || flags != 0) {
		verify_text(flags, v, sizeof(v));
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: does not verify against the trust "
		    "bundle: %s", sid, v);
	}
	if (key != NULL && mbedtls_pk_check_pair(&chain->pk, key) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "%s: private key does not match the "
		    "certificate", sid);
	if (id != NULL && strlen(sid) >= idlen)
		return fail(why, whylen, AMESH_ERR_TOOLONG, "%s: SPIFFE ID too long for the buffer",
		    sid);
	if (id != NULL)
		memcpy(id, sid, strlen(sid) + 1);
	return 0;
}
