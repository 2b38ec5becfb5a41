/* SPDX-License-Identifier: Apache-2.0 */
/* PKCS#10 certificate requests: a host makes one for its own new key; the CA checks one strictly. */
#include "config.h"

#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/x509_csr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define PEM_CSR_BEGIN "-----BEGIN CERTIFICATE REQUEST-----"
#define PEM_CSR_END "-----END CERTIFICATE REQUEST-----"
/* A request for a SPIFFE ID of SPIFFE_ID_MAX bytes, with a P-256 key, fits with room to spare. */
#define CSR_PEM_OUT_MAX (2 * SPIFFE_ID_MAX + 1024)
/* GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String. */
#define GN_URI (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6)
#define SEQ (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)

#define fail cert_fail

/* True if the n bytes at s are printable ASCII without space: what a URI may hold. */
static bool
printable(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return false;
	return true;
}

int
ca_csr_new(const char *spiffe_id, mbedtls_pk_context *key, char **csr_pem, size_t *csr_len,
    char *why, size_t whylen)
{
	mbedtls_x509write_csr w;
	unsigned char extbuf[SPIFFE_ID_MAX + 32], *ext;
	char td[SPIFFE_ID_MAX], subject[SPIFFE_ID_MAX + 8];
	unsigned char *buf = NULL;
	size_t extlen;
	int r;

	mbedtls_pk_init(key);
	*csr_pem = NULL;
	*csr_len = 0;
	mbedtls_x509write_csr_init(&w);
	if (spiffe_trust_domain(spiffe_id, td, sizeof(td)) != 0 ||
	    !printable((const unsigned char *)spiffe_id, strlen(spiffe_id))) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "'%s' is not a SPIFFE ID", spiffe_id);
		goto out;
	}
	buf = malloc(CSR_PEM_OUT_MAX);
	if (buf == NULL) {
		r = fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = cert_key_new(key, why, whylen);
	if (r != 0)
		goto out;
	snprintf(subject, sizeof(subject), "O=%s", td);
	mbedtls_x509write_csr_set_key(&w, key);
	mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
	if ((r = mbedtls_x509write_csr_set_subject_name(&w, subject)) != 0 ||
	    (r = cert_san_uri_der(spiffe_id, extbuf, sizeof(extbuf), &ext, &extlen)) != 0 ||
	    (r = mbedtls_x509write_csr_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), ext, extlen)) != 0 ||
	    (r = mbedtls_x509write_csr_pem(&w, buf, CSR_PEM_OUT_MAX, rng_fill, rng_ctx())) != 0) {
		r = cert_mbed_fail(why, whylen, "cannot make the certificate request", r);
		goto out;
	}
	*csr_len = strlen((char *)buf);
	*csr_pem = (char *)buf;
	buf = NULL;
	r = 0;
out:
	if (r != 0) {
		mbedtls_pk_free(key);
		mbedtls_pk_init(key);
	}
	mbedtls_x509write_csr_free(&w);
	free(buf);
	return r;
}

/* What a request asks for, as found by walking its CertificationRequestInfo. */
struct csr_ask {
	int nsan;                /* subjectAltName extensions */
	int nnames;              /* GeneralNames in it */
	const unsigned char *uri; /* the first URI name */
	size_t urilen;
	int other_tag;           /* the GeneralName tag number of the first name that is not a URI; -1 */
	unsigned seen;           /* bit per ignored extension already seen (keyUsage, EKU, BC) */
};

/* An OID in dotted form for a message ("2.5.29.14"), or "an unreadable OID". */
static const char *
oid_text(const unsigned char *p, size_t len, char *buf, size_t size)
{
	mbedtls_asn1_buf oid = { .tag = MBEDTLS_ASN1_OID, .len = len, .p = (unsigned char *)p };

	if (mbedtls_oid_get_numeric_string(buf, size, &oid) < 0)
		snprintf(buf, size, "an unreadable OID");
	return buf;
}

static bool
oid_is(const unsigned char *p, size_t len, const char *oid, size_t oidlen)
{
	return len == oidlen && memcmp(p, oid, len) == 0;
}

#define OID_IS(p, len, OID) oid_is(p, len, OID, MBEDTLS_OID_SIZE(OID))

/* Reads GeneralNames (the subjectAltName's value, [p, end)) into a. */
static int
scan_names(unsigned char *p, const unsigned char *end, struct csr_ask *a, char *why, size_t whylen)
{
	size_t len;

	if (mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0 || p + len != end)
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed subject alternative "
		    "name extension");
	while (p < end) {
		unsigned char tag = *p++;

		/* GeneralName tags are context-specific [0]..[8]: never the multi-byte form. */
		if ((tag & MBEDTLS_ASN1_TAG_CLASS_MASK) != MBEDTLS_ASN1_CONTEXT_SPECIFIC ||
		    (tag & MBEDTLS_ASN1_TAG_VALUE_MASK) > 8 || mbedtls_asn1_get_len(&p, end, &len) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed subject "
			    "alternative name");
		a->nnames++;
		if (tag == GN_URI && a->uri == NULL) {
			a->uri = p;
			a->urilen = len;
		} else if (tag != GN_URI && a->other_tag < 0) {
			a->other_tag = tag & MBEDTLS_ASN1_TAG_VALUE_MASK;
		}
		p += len;
	}
	return 0;
}

/* Reads one Extensions value of an extensionRequest ([*pp, end)) into a. */
static int
scan_extensions(unsigned char **pp, const unsigned char *end, struct csr_ask *a, char *why,
    size_t whylen)
{
	static const struct {
		const char *oid;
		size_t len;
		const char *name;
	} ignored[] = {
		{ MBEDTLS_OID_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_KEY_USAGE), "keyUsage" },
		{ MBEDTLS_OID_EXTENDED_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
		    "extendedKeyUsage" },
		{ MBEDTLS_OID_BASIC_CONSTRAINTS, MBEDTLS_OID_SIZE(MBEDTLS_OID_BASIC_CONSTRAINTS),
		    "basicConstraints" },
	};
	unsigned char *p = *pp, *exts_end, *ext_end, *oid;
	size_t len, oidlen;
	char o[64];
	int critical, r;

	if (mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed extensionRequest");
	exts_end = p + len;
	while (p < exts_end) {
		size_t i;

		/* Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
		 * extnValue OCTET STRING } */
		if (mbedtls_asn1_get_tag(&p, exts_end, &len, SEQ) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed extension");
		ext_end = p + len;
		if (mbedtls_asn1_get_tag(&p, ext_end, &oidlen, MBEDTLS_ASN1_OID) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed extension");
		oid = p;
		p += oidlen;
		if (p < ext_end && *p == MBEDTLS_ASN1_BOOLEAN &&
		    mbedtls_asn1_get_bool(&p, ext_end, &critical) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed extension");
		if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING) != 0 ||
		    p + len != ext_end)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed extension");
		if (OID_IS(oid, oidlen, MBEDTLS_OID_SUBJECT_ALT_NAME)) {
			if (++a->nsan > 1)
				return fail(why, whylen, AMESH_ERR_INVALID, "CSR requests "
				    "subjectAltName twice");
			r = scan_names(p, ext_end, a, why, whylen);
			if (r != 0)
				return r;
			p = ext_end;
			continue;
		}
		for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
			if (oid_is(oid, oidlen, ignored[i].oid, ignored[i].len))
				break;
		if (i == sizeof(ignored) / sizeof(ignored[0]))
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR requests extension %s, which "
			    "the CA does not grant", oid_text(oid, oidlen, o, sizeof(o)));
		if (a->seen & (1u << i))
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR requests %s twice",
			    ignored[i].name);
		a->seen |= 1u << i;
		p = ext_end;
	}
	*pp = p;
	return 0;
}

/*
 * Walks CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo,
 * attributes [0] IMPLICIT SET OF Attribute }: one attribute only, an extensionRequest holding one
 * Extensions value. mbedTLS 2.28 parsed the first three fields and skipped the attributes.
 */
static int
scan_cri(const mbedtls_x509_buf *cri, struct csr_ask *a, char *why, size_t whylen)
{
	unsigned char *p = cri->p, *end = cri->p + cri->len, *attr_end, *set_end, *oid;
	size_t len, oidlen;
	char o[64];
	int nreq = 0, r;

	if (mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0 || p + len != end ||
	    mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_INTEGER) != 0 || (p += len) > end ||
	    mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0 || (p += len) > end ||
	    mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0 || (p += len) > end ||
	    mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONTEXT_SPECIFIC |
	    MBEDTLS_ASN1_CONSTRUCTED) != 0 || p + len != end)
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR has malformed attributes");
	while (p < end) {
		/* Attribute ::= SEQUENCE { type OID, values SET OF AttributeValue } */
		if (mbedtls_asn1_get_tag(&p, end, &len, SEQ) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed attribute");
		attr_end = p + len;
		if (mbedtls_asn1_get_tag(&p, attr_end, &oidlen, MBEDTLS_ASN1_OID) != 0)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed attribute");
		oid = p;
		p += oidlen;
		if (mbedtls_asn1_get_tag(&p, attr_end, &len, MBEDTLS_ASN1_CONSTRUCTED |
		    MBEDTLS_ASN1_SET) != 0 || p + len != attr_end)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has a malformed attribute");
		set_end = attr_end;
		if (!OID_IS(oid, oidlen, MBEDTLS_OID_PKCS9_CSR_EXT_REQ))
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has attribute %s; only an "
			    "extensionRequest is accepted", oid_text(oid, oidlen, o, sizeof(o)));
		if (++nreq > 1)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR has more than one "
			    "extensionRequest");
		r = scan_extensions(&p, set_end, a, why, whylen);
		if (r != 0)
			return r;
		if (p != set_end)
			return fail(why, whylen, AMESH_ERR_INVALID, "CSR's extensionRequest holds more "
			    "than one value");
	}
	return 0;
}

/* "a DNS name", ...: GeneralName choices by tag number, for messages. */
static const char *
name_kind(int tag)
{
	static const char *const kinds[] = {
		"an otherName", "an email address", "a DNS name", "an X.400 address",
		"a directory name", "an EDI party name", "a URI", "an IP address", "a registered ID",
	};

	return tag >= 0 && tag <= 8 ? kinds[tag] : "an unknown name";
}

/* Decodes the one PEM block of a request that must hold nothing else (white space aside). */
static int
pem_decode(const char *pem, size_t len, mbedtls_pem_context *pc, char *why, size_t whylen)
{
	const char *p, *rest;
	char *buf;
	size_t used = 0;
	int r;

	if (len > 0 && pem[len - 1] == '\0')
		len--; /* a counted NUL */
	if (len > CA_CSR_MAX)
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR larger than %d bytes", CA_CSR_MAX);
	if (len == 0 || memchr(pem, '\0', len) != NULL)
		return fail(why, whylen, AMESH_ERR_INVALID, "not a PEM certificate request");
	/* mbedTLS's PEM reader wants a NUL-terminated string. */
	buf = malloc(len + 1);
	if (buf == NULL)
		return fail(why, whylen, AMESH_ERR_NOMEM, "out of memory");
	memcpy(buf, pem, len);
	buf[len] = '\0';
	p = buf + strspn(buf, " \t\r\n");
	if (strncmp(p, PEM_CSR_BEGIN, strlen(PEM_CSR_BEGIN)) != 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a PEM certificate request");
		goto out;
	}
	r = mbedtls_pem_read_buffer(pc, PEM_CSR_BEGIN, PEM_CSR_END, (const unsigned char *)p, NULL,
	    0, &used);
	if (r != 0) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a PEM certificate request (%s)",
		    r == MBEDTLS_ERR_PEM_NO_HEADER_FOOTER_PRESENT ? "no END line" :
		    r == MBEDTLS_ERR_PEM_PASSWORD_REQUIRED ? "encrypted" : "bad base64");
		goto out;
	}
	rest = p + used;
	if (rest[strspn(rest, " \t\r\n")] != '\0') {
		r = fail(why, whylen, AMESH_ERR_INVALID, "data after the PEM certificate request");
		goto out;
	}
	r = 0;
out:
	free(buf);
	return r;
}

/* The request's self-signature: ECDSA with SHA-2 over the CertificationRequestInfo. */
static int
check_signature(const mbedtls_x509_csr *csr, char *why, size_t whylen)
{
	const mbedtls_md_info_t *md = mbedtls_md_info_from_type(csr->sig_md);
	unsigned char hash[MBEDTLS_MD_MAX_SIZE];

	if (csr->sig_pk != MBEDTLS_PK_ECDSA || md == NULL || (csr->sig_md != MBEDTLS_MD_SHA256 &&
	    csr->sig_md != MBEDTLS_MD_SHA384 && csr->sig_md != MBEDTLS_MD_SHA512))
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR signature algorithm is not ECDSA "
		    "with SHA-256, SHA-384 or SHA-512");
	if (mbedtls_md(md, csr->cri.p, csr->cri.len, hash) != 0 ||
	    mbedtls_pk_verify((mbedtls_pk_context *)&csr->pk, csr->sig_md, hash,
	    mbedtls_md_get_size(md), csr->sig.p, csr->sig.len) != 0)
		return fail(why, whylen, AMESH_ERR_INVALID, "CSR signature does not verify");
	return 0;
}

/* Copies the public key of src into pub (initialised, empty). */
static int
copy_public_key(mbedtls_pk_context *src, mbedtls_pk_context *pub, char *why, size_t whylen)
{
	unsigned char der[256];
	int n = mbedtls_pk_write_pubkey_der(src, der, sizeof(der));

	if (n <= 0 || mbedtls_pk_parse_public_key(pub, der + sizeof(der) - n, (size_t)n) != 0)
		return fail(why, whylen, AMESH_ERR_INTERNAL, "cannot copy the CSR's public key");
	return 0;
}

int
ca_csr_check(const char *pem, size_t len, const char *want_id, mbedtls_pk_context *pub,
    char *why, size_t whylen)
{
	mbedtls_pem_context pc;
	mbedtls_x509_csr csr;
	struct csr_ask a = { .other_tag = -1 };
	char e[256];
	int r;

	mbedtls_pk_init(pub);
	mbedtls_pem_init(&pc);
	mbedtls_x509_csr_init(&csr);
	if (pem == NULL || want_id == NULL) {
		r = fail(why, whylen, AMESH_ERR_INVALID, "no request or no identity");
		goto out;
	}
	r = pem_decode(pem, len, &pc, why, whylen);
	if (r != 0)
		goto out;
	r = mbedtls_x509_csr_parse_der(&csr, pc.buf, pc.buflen);
	if (r != 0) {
		mbedtls_strerror(r, e, sizeof(e));
		r = fail(why, whylen, AMESH_ERR_INVALID, "not a valid PKCS#10 certificate request: %s",
		    e);
		goto out;
	}
	r = AMESH_ERR_INVALID;
	if (!cert_key_is_p256(&csr.pk)) {
		if (mbedtls_pk_can_do(&csr.pk, MBEDTLS_PK_ECKEY))
			cert_key_desc(&csr.pk, e, sizeof(e));
		else
			snprintf(e, sizeof(e), "%s", mbedtls_pk_get_name(&csr.pk));
		fail(why, whylen, r, "CSR key is %s, want ECDSA P-256", e);
		goto out;
	}
	/* The structure first (nothing is taken from it yet), then the signature over it. */
	r = scan_cri(&csr.cri, &a, why, whylen);
	if (r == 0)
		r = check_signature(&csr, why, whylen);
	if (r != 0)
		goto out;
	r = AMESH_ERR_INVALID;
	if (a.nsan == 0 || a.nnames == 0) {
		fail(why, whylen, r, "CSR has no subject alternative name");
		goto out;
	}
	if (a.nnames > 1) {
		fail(why, whylen, r, "CSR has %d subject alternative names", a.nnames);
		goto out;
	}
	if (a.uri == NULL) {
		fail(why, whylen, r, "CSR's subject alternative name is %s, want the URI %s",
		    name_kind(a.other_tag), want_id);
		goto out;
	}
	if (!printable(a.uri, a.urilen)) {
		fail(why, whylen, r, "CSR's URI is not printable ASCII");
		goto out;
	}
	if (a.urilen != strlen(want_id) || memcmp(a.uri, want_id, a.urilen) != 0) {
		fail(why, whylen, r, "CSR names %.*s but the request is for %s",
		    (int)(a.urilen < SPIFFE_ID_MAX ? a.urilen : SPIFFE_ID_MAX), a.uri, want_id);
		goto out;
	}
	r = copy_public_key(&csr.pk, pub, why, whylen);
	if (r != 0)
		goto out;
	r = 0;
out:
	if (r != 0) {
		mbedtls_pk_free(pub);
		mbedtls_pk_init(pub);
	}
	mbedtls_x509_csr_free(&csr);
	mbedtls_pem_free(&pc);
	return r;
}
