/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the CA's check of a certificate request (ca_csr_check) over arbitrary bytes.
 * Three ways in, by the first byte:
 *   '-' or white space  the input is the PEM text, passed as it is;
 *   0x00                the rest is a CertificationRequestInfo: the target signs it with a fixed
 *                       P-256 key (FUZZ_KEY, whose public key the seeds carry) and wraps it, so
 *                       mutations get past the signature to the checks of names and extensions;
 *   anything else       the input is the request's DER, wrapped in a PEM block.
 * The last two spare the fuzzer learning base64 (mbedTLS is not instrumented, so it cannot).
 */
#include "config.h"

#include <mbedtls/asn1write.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/sha256.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define WANT "spiffe://cluster.local/ns/default/sa/reviews"
#define BEGIN "-----BEGIN CERTIFICATE REQUEST-----\n"
#define END "-----END CERTIFICATE REQUEST-----\n"

/* Made once with `openssl ecparam -name prime256v1 -genkey -noout`; a test key, nothing else. */
static const char FUZZ_KEY[] =
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIORj4ti8za8s5oqR5CgRKN1ectdpdaSMzenlI2Ymxa4FoAoGCCqGSM49\n"
    "AwEHoUQDQgAEcansI+eau+mT1hxT1ViPDji3X0q1GgJ4fvwkA+3mj3KOH0HEowa5\n"
    "qOliX9FrgRVj7hVWGEFtiAZULGbGZgooXA==\n"
    "-----END EC PRIVATE KEY-----\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const char *pem, size_t len)
{
	mbedtls_pk_context pub;
	char why[512] = "";
	int r = ca_csr_check(pem, len, WANT, &pub, why, sizeof(why));

	/* FUZZ_CSR_VERBOSE=1: the verdict on standard error, to see what a seed reaches. */
	if (getenv("FUZZ_CSR_VERBOSE") != NULL)
		fprintf(stderr, "%s\n", r == 0 ? "accepted" : why);

	if (r == 0) {
		/* Accepted: a P-256 key came back. */
		if (!cert_key_is_p256(&pub))
			abort();
	} else {
		/* Refused: a one-line printable reason, and no key. */
		if (r != AMESH_ERR_INVALID && r != AMESH_ERR_NOMEM)
			abort();
		if (why[0] == '\0' || mbedtls_pk_get_type(&pub) != MBEDTLS_PK_NONE)
			abort();
		for (const char *p = why; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				abort();
	}
	mbedtls_pk_free(&pub);
}

/* CertificationRequest ::= SEQUENCE { cri, ecdsa-with-SHA256, BIT STRING signature } at the end
 * of buf; returns its length, or 0. */
static size_t
sign_cri(const uint8_t *cri, size_t len, unsigned char *buf, size_t size)
{
	static mbedtls_pk_context key;
	static int loaded;
	unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN], *p = buf + size;
	size_t siglen = 0, n = 0;
	int r;

	if (!loaded) {
		mbedtls_pk_init(&key);
		if (mbedtls_pk_parse_key(&key, (const unsigned char *)FUZZ_KEY, sizeof(FUZZ_KEY),
		    NULL, 0) != 0)
			abort();
		loaded = 1;
	}
	if (mbedtls_sha256_ret(cri, len, hash, 0) != 0 ||
	    mbedtls_pk_sign(&key, MBEDTLS_MD_SHA256, hash, 0, sig, &siglen, rng_fill,
	    rng_ctx()) != 0)
		return 0;
	if ((r = mbedtls_asn1_write_bitstring(&p, buf, sig, siglen * 8)) < 0)
		return 0;
	n += (size_t)r;
	/* AlgorithmIdentifier ::= SEQUENCE { ecdsa-with-SHA256 } (no parameters, RFC 5758). */
	if ((r = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_ECDSA_SHA256,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_ECDSA_SHA256))) < 0)
		return 0;
	n += (size_t)r;
	if ((r = mbedtls_asn1_write_len(&p, buf, (size_t)r)) < 0)
		return 0;
	n += (size_t)r;
	if ((r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED |
	    MBEDTLS_ASN1_SEQUENCE)) < 0)
		return 0;
	n += (size_t)r;
	if ((r = mbedtls_asn1_write_raw_buffer(&p, buf, cri, len)) < 0)
		return 0;
	n += (size_t)r;
	if ((r = mbedtls_asn1_write_len(&p, buf, n)) < 0)
		return 0;
	n += (size_t)r;
	if ((r = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED |
	    MBEDTLS_ASN1_SEQUENCE)) < 0)
		return 0;
	return n + (size_t)r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *pem, *signed_der = NULL;
	char *copy;
	size_t cap, olen = 0, bufsize;

	if (size > CA_CSR_MAX)
		return 0;
	if (size == 0 || data[0] == '-' || data[0] == ' ' || data[0] == '\n' || data[0] == '\r' ||
	    data[0] == '\t') {
		/* An exact-size copy, so ASan sees any read past the end. */
		copy = malloc(size ? size : 1);
		if (copy == NULL)
			return 0;
		memcpy(copy, data, size);
		check(copy, size);
		free(copy);
		return 0;
	}
	if (data[0] == 0x00) {
		/* The signature and the wrapping add less than 100 bytes. */
		bufsize = size + 256;
		signed_der = malloc(bufsize);
		if (signed_der == NULL)
			return 0;
		size = sign_cri(data + 1, size - 1, signed_der, bufsize);
		data = signed_der + bufsize - size;
	}
	cap = size * 4 / 3 + size / 48 + 128;
	pem = malloc(cap);
	if (pem != NULL && size > 0 &&
	    mbedtls_pem_write_buffer(BEGIN, END, data, size, pem, cap, &olen) == 0 && olen > 0)
		check((const char *)pem, olen - 1);
	free(pem);
	free(signed_der);
	return 0;
}
