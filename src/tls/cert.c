/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 helpers for mesh identities: SPIFFE IDs from URI SANs, bounded PEM loading, identity checks. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define SPIFFE_PREFIX "spiffe://"
#define SPIFFE_PREFIX_LEN (sizeof(SPIFFE_PREFIX) - 1)
/* The SPIFFE spec bounds a trust domain name to 255 bytes. */
#define TRUST_DOMAIN_MAX 255
/* GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String. */
#define GN_URI (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)
/* The path of node IDs, of the CA service's ID, and the longest node name (the registry's rule). */
#define NODE_PATH "/amesh/node/"
#define CA_PATH "/amesh/ca"
#define NODE_NAME_MAX 63
#define PEM_CRT_BEGIN "-----BEGIN CERTIFICATE-----\n"
#define PEM_CRT_END "-----END CERTIFICATE-----\n"

int
cert_fail(char *why, size_t whylen, int code, const char *fmt, ...)
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

int
cert_mbed_fail(char *why, size_t whylen, const char *what, int code)
{
	char e[128];

	return cert_fail(why, whylen, AMESH_ERR_INTERNAL, "%s: %s", what, mbed_err(code, e, sizeof(e)));
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

/*
 * Length of the trust domain of id "spiffe://TD..." (up to the first '/' or the end): 0 if id is
 * not a SPIFFE ID of at most SPIFFE_ID_MAX - 1 bytes or TD is empty, too long or has a bad byte.
 */
static size_t
id_trust_domain(const char *id)
{
	const char *p;
	size_t tdl = 0;

	if (id == NULL || strnlen(id, SPIFFE_ID_MAX) >= SPIFFE_ID_MAX ||
	    strncmp(id, SPIFFE_PREFIX, SPIFFE_PREFIX_LEN) != 0)
		return 0;
	p = id + SPIFFE_PREFIX_LEN;
	while (p[tdl] != '\0' && p[tdl] != '/') {
		if (!is_td_char(p[tdl]))
			return 0;
		tdl++;
	}
	return tdl <= TRUST_DOMAIN_MAX ? tdl : 0;
}

/* True if td is a whole trust domain name (what id_trust_domain accepts). */
static bool
valid_td(const char *td)
{
	size_t n = 0;

	while (n <= TRUST_DOMAIN_MAX && td[n] != '\0' && is_td_char(td[n]))
		n++;
	return n > 0 && n <= TRUST_DOMAIN_MAX && td[n] == '\0';
}

/* Copies n bytes of src and a NUL into dst (if not NULL) of size len. */
static int
copy_bounded(char *dst, size_t len, const char *src, size_t n)
{
	if (dst == NULL)
		return 0;
	if (n >= len)
		return AMESH_ERR_TOOLONG;
	copy_out(dst, src, n);
	return 0;
}

int
spiffe_split(const char *id, char *td, char *ns, char *sa)
{
	const char *p, *nsp, *sap;
	size_t tdl, nsl, sal;

	tdl = id_trust_domain(id);
	if (tdl == 0)
		return AMESH_ERR_INVALID;
	p = id + SPIFFE_PREFIX_LEN + tdl;
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

int
spiffe_format_node(char *buf, size_t len, const char *td, const char *node)
{
	size_t nl = segment(node);
	int n;

	if (!valid_td(td) || nl == 0 || nl > NODE_NAME_MAX || node[nl] != '\0')
		return AMESH_ERR_INVALID;
	n = snprintf(buf, len, SPIFFE_PREFIX "%s" NODE_PATH "%s", td, node);
	if (n < 0 || (size_t)n >= len)
		return AMESH_ERR_TOOLONG;
	return 0;
}

int
spiffe_format_ca(char *buf, size_t len, const char *td)
{
	int n;

	if (!valid_td(td))
		return AMESH_ERR_INVALID;
	n = snprintf(buf, len, SPIFFE_PREFIX "%s" CA_PATH, td);
	if (n < 0 || (size_t)n >= len)
		return AMESH_ERR_TOOLONG;
	return 0;
}

int
spiffe_split_node(const char *id, char *td, size_t tdlen, char *node, size_t nodelen)
{
	size_t tdl = id_trust_domain(id), nl;
	const char *np;
	int r;

	if (tdl == 0 || strncmp(id + SPIFFE_PREFIX_LEN + tdl, NODE_PATH, strlen(NODE_PATH)) != 0)
		return AMESH_ERR_INVALID;
	np = id + SPIFFE_PREFIX_LEN + tdl + strlen(NODE_PATH);
	nl = segment(np);
	if (nl == 0 || nl > NODE_NAME_MAX || np[nl] != '\0')
		return AMESH_ERR_INVALID;
	r = copy_bounded(td, tdlen, id + SPIFFE_PREFIX_LEN, tdl);
	if (r == 0)
		r = copy_bounded(node, nodelen, np, nl);
	return r;
}

int
spiffe_trust_domain(const char *id, char *td, size_t tdlen)
{
	size_t tdl = id_trust_domain(id);
	const char *path;

	if (tdl == 0)
		return AMESH_ERR_INVALID;
	path = id + SPIFFE_PREFIX_LEN + tdl;
	if (path[0] != '/' || path[1] == '\0')
		return AMESH_ERR_INVALID;
	return copy_bounded(td, tdlen, id + SPIFFE_PREFIX_LEN, tdl);
}

int
cert_fingerprint(const mbedtls_x509_crt *crt, char *buf, size_t len)
{
	unsigned char h[32];

	if (buf != NULL && len > 0)
		buf[0] = '\0';
	if (crt == NULL || crt->raw.p == NULL || crt->raw.len == 0)
		return AMESH_ERR_INVALID;
	if (buf == NULL || len < CERT_FINGERPRINT_LEN)
		return AMESH_ERR_TOOLONG;
	if (mbedtls_sha256_ret(crt->raw.p, crt->raw.len, h, 0) != 0)
		return AMESH_ERR_INTERNAL;
	memcpy(buf, "sha256:", 7);
	for (size_t i = 0; i < sizeof(h); i++) {
		buf[7 + 2 * i] = "0123456789abcdef"[h[i] >> 4];
		buf[8 + 2 * i] = "0123456789abcdef"[h[i] & 15];
	}
	buf[CERT_FINGERPRINT_LEN - 1] = '\0';
	return 0;
}

bool
cert_key_is_p256(const mbedtls_pk_context *pk)
{
	return mbedtls_pk_get_type(pk) == MBEDTLS_PK_ECKEY &&
	    mbedtls_pk_ec(*pk)->grp.id == MBEDTLS_ECP_DP_SECP256R1;
}

void
cert_key_desc(const mbedtls_pk_context *pk, char *buf, size_t len)
{
	if (mbedtls_pk_can_do(pk, MBEDTLS_PK_ECKEY)) {
		const mbedtls_ecp_keypair *ec = mbedtls_pk_ec(*pk);
		const mbedtls_ecp_curve_info *ci = mbedtls_ecp_curve_info_from_grp_id(ec->grp.id);

		switch (ec->grp.id) {
		case MBEDTLS_ECP_DP_SECP256R1: snprintf(buf, len, "ECDSA P-256"); break;
		case MBEDTLS_ECP_DP_SECP384R1: snprintf(buf, len, "ECDSA P-384"); break;
		case MBEDTLS_ECP_DP_SECP521R1: snprintf(buf, len, "ECDSA P-521"); break;
		default: snprintf(buf, len, "EC %s", ci ? ci->name : "unknown curve"); break;
		}
		return;
	}
	if (mbedtls_pk_get_type(pk) == MBEDTLS_PK_NONE) {
		snprintf(buf, len, "no key");
		return;
	}
	snprintf(buf, len, "%s %zu", mbedtls_pk_get_name(pk), mbedtls_pk_get_bitlen(pk));
}

int
cert_key_new(mbedtls_pk_context *key, char *why, size_t whylen)
{
	int r;

	r = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (r == 0)
		r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), rng_fill,
		    rng_ctx());
	if (r != 0)
		return cert_mbed_fail(why, whylen, "cannot generate a P-256 key", r);
	return 0;
}

/* Wraps the n bytes written before *p (backwards, down to buf) in a SEQUENCE; sets start/len. */
static int
wrap_sequence(unsigned char *p, unsigned char *buf, int n, unsigned char **start, size_t *len)
{
	int r;

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

/* subjectAltName: GeneralNames ::= SEQUENCE { [6] IMPLICIT IA5String uri }, built backwards. */
int
cert_san_uri_der(const char *uri, unsigned char *buf, size_t size, unsigned char **start,
    size_t *len)
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
	if ((r = mbedtls_asn1_write_tag(&p, buf, GN_URI)) < 0)
		return r;
	n += r;
	return wrap_sequence(p, buf, n, start, len);
}

/* extKeyUsage: SEQUENCE { id-kp-serverAuth?, id-kp-clientAuth? } (mbedTLS 2.28 has no setter). */
int
cert_eku_der(bool server, bool client, unsigned char *buf, size_t size, unsigned char **start,
    size_t *len)
{
	unsigned char *p = buf + size;
	int r, n = 0;

	if (client) {
		if ((r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_CLIENT_AUTH,
		    MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH))) < 0)
			return r;
		n += r;
	}
	if (server) {
		if ((r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
		    MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH))) < 0)
			return r;
		n += r;
	}
	return wrap_sequence(p, buf, n, start, len);
}

int
cert_list_pem(const mbedtls_x509_crt *list, size_t max, char **pem, size_t *len)
{
	const mbedtls_x509_crt *c;
	size_t size = 1, off = 0, olen;
	char *buf;

	*pem = NULL;
	*len = 0;
	/* Base64 grows 3 bytes to 4, plus a newline per 64 and the two armour lines. */
	for (c = list; c != NULL && c->raw.p != NULL && off < max; c = c->next, off++)
		size += c->raw.len / 3 * 4 + c->raw.len / 48 + 8 + sizeof(PEM_CRT_BEGIN PEM_CRT_END);
	if (off == 0)
		return AMESH_ERR_INVALID;
	buf = malloc(size);
	if (buf == NULL)
		return AMESH_ERR_NOMEM;
	max = off;
	off = 0;
	for (c = list; max > 0; c = c->next, max--) {
		if (mbedtls_pem_write_buffer(PEM_CRT_BEGIN, PEM_CRT_END, c->raw.p, c->raw.len,
		    (unsigned char *)buf + off, size - off, &olen) != 0 || olen == 0) {
			free(buf);
			return AMESH_ERR_NOMEM;
		}
		off += olen - 1; /* olen counts the NUL */
	}
	*pem = buf;
	*len = off;
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
		cert_fail(why, whylen, r, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		r = -errno;
		cert_fail(why, whylen, r, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "not a regular file");
		goto out;
	}
	/* One byte more than the limit, to notice a file that grew past it after fstat. */
	buf = malloc(CERT_FILE_MAX + 2);
	if (buf == NULL) {
		r = cert_fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, CERT_FILE_MAX + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			cert_fail(why, whylen, r, "cannot read: %s", strerror(errno));
			goto out;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > CERT_FILE_MAX) {
			r = cert_fail(why, whylen, AMESH_ERR_TOOLONG, "larger than %d KiB",
			    CERT_FILE_MAX / 1024);
			goto out;
		}
	}
	if (n == 0) {
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "empty file");
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
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "not a certificate: %s",
		    mbed_err(r, e, sizeof(e)));
		goto out;
	}
	if (r > 0) {
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "%d of its certificates cannot be parsed", r);
		goto out;
	}
	if (out->raw.p == NULL) {
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "no certificate in the file");
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
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "encrypted keys are not supported");
		goto out;
	}
	/* mbedTLS's message names the failure, never the key bytes. */
	if (r != 0) {
		r = cert_fail(why, whylen, AMESH_ERR_INVALID, "not a private key: %s",
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
	const time_t *at = ctx;

	(void)depth;
	*flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
	if (at == NULL)
		return 0;
	if (*at > cert_not_after(crt))
		*flags |= MBEDTLS_X509_BADCERT_EXPIRED;
	if (*at < cert_not_before(crt))
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
cert_verify_chain(mbedtls_x509_crt *chain, mbedtls_x509_crt *roots, const time_t *at,
    char *why, size_t whylen)
{
	uint32_t flags = 0;
	char v[400];
	int r;

	r = mbedtls_x509_crt_verify(chain, roots, NULL, NULL, &flags, verify_at, (void *)at);
	if (r != 0 || flags != 0) {
		verify_text(flags, v, sizeof(v));
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s", v);
	}
	return 0;
}

int
cert_check_identity(mbedtls_x509_crt *chain, const mbedtls_pk_context *key,
    mbedtls_x509_crt *bundle, const char *trust_domain, time_t now, char *id, size_t idlen,
    char *why, size_t whylen)
{
	char sid[SPIFFE_ID_MAX], td[SPIFFE_ID_MAX], t[32], v[400];
	int r;

	if (id != NULL && idlen > 0)
		id[0] = '\0';
	if (why != NULL && whylen > 0)
		why[0] = '\0';
	if (chain == NULL || chain->raw.p == NULL)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "no certificate");
	if (bundle == NULL || bundle->raw.p == NULL)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "no trust bundle");
	if (chain->ca_istrue)
		return cert_fail(why, whylen, AMESH_ERR_INVALID,
		    "a CA certificate (basicConstraints CA:TRUE) cannot be a workload identity");
	r = cert_spiffe_id(chain, sid, sizeof(sid));
	if (r == AMESH_ERR_NOTFOUND)
		return cert_fail(why, whylen, r, "no spiffe:// URI SAN");
	if (r == AMESH_ERR_TOOLONG)
		return cert_fail(why, whylen, r, "SPIFFE ID longer than %d bytes", SPIFFE_ID_MAX - 1);
	if (r != 0)
		return cert_fail(why, whylen, r, "malformed subjectAltName or more than one URI SAN");
	if (spiffe_split(sid, td, NULL, NULL) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not of the form "
		    "spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT", sid);
	if (trust_domain == NULL || strcmp(td, trust_domain) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: trust domain '%s' is not '%s'", sid,
		    td, trust_domain ? trust_domain : "");
	if (!cert_key_is_p256(&chain->pk)) {
		cert_key_desc(&chain->pk, v, sizeof(v));
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: key is %s, not ECDSA P-256", sid,
		    v);
	}
	if (!(chain->ext_types & MBEDTLS_X509_EXT_KEY_USAGE) ||
	    mbedtls_x509_crt_check_key_usage(chain, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: keyUsage lacks digitalSignature", sid);
	if (!(chain->ext_types & MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE) ||
	    mbedtls_x509_crt_check_extended_key_usage(chain, MBEDTLS_OID_SERVER_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) != 0 ||
	    mbedtls_x509_crt_check_extended_key_usage(chain, MBEDTLS_OID_CLIENT_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID,
		    "%s: extendedKeyUsage lacks serverAuth or clientAuth", sid);
	if (now < cert_not_before(chain))
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: not valid before %s", sid,
		    iso_time(cert_not_before(chain), t, sizeof(t)));
	if (now > cert_not_after(chain))
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: expired at %s", sid,
		    iso_time(cert_not_after(chain), t, sizeof(t)));
	if (cert_verify_chain(chain, bundle, &now, v, sizeof(v)) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: does not verify against the trust "
		    "bundle: %s", sid, v);
	if (key != NULL && mbedtls_pk_check_pair(&chain->pk, key) != 0)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "%s: private key does not match the "
		    "certificate", sid);
	if (id != NULL && strlen(sid) >= idlen)
		return cert_fail(why, whylen, AMESH_ERR_TOOLONG, "%s: SPIFFE ID too long for the buffer",
		    sid);
	if (id != NULL)
		memcpy(id, sid, strlen(sid) + 1);
	return 0;
}
