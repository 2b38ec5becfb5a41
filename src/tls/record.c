/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS 1.2 AEAD records (RFC 5246 6.2, RFC 5288 for AES-GCM, RFC 7905 for ChaCha20-Poly1305)
 * sealed and opened by OpenSSL's libcrypto: on this project's CPUs it seals 16 KiB records 10-20x
 * faster than mbedTLS 2.28 and 2-3x faster than libsodium (bench/aead). The framing, limits and
 * sequence numbers are here once; the ops table holds only the AEAD.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/ssl_ciphersuites.h>

#ifdef HAVE_RECORD_OFFLOAD
#include <openssl/evp.h>
#endif

#include "core/err.h"
#include "tls/record.h"

static void
put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void
put_hdr(uint8_t *p, uint8_t type, size_t len)
{
	p[0] = type;
	p[1] = 3;
	p[2] = 3;
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
}

/* The additional data of TLS 1.2: seq_num || type || version || plaintext length. */
static void
make_aad(uint8_t aad[13], uint64_t seq, uint8_t type, size_t plain_len)
{
	put_be64(aad, seq);
	put_hdr(aad + 8, type, plain_len);
}

size_t
record_overhead(enum record_cipher cipher)
{
	return cipher == RECORD_CHACHA20_POLY1305 ? RECORD_TAG : RECORD_EXPLICIT_NONCE + RECORD_TAG;
}

int
record_cipher_of_suite(int suite_id)
{
	switch (suite_id) {
	case MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
		return RECORD_AES_128_GCM;
	case MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		return RECORD_AES_256_GCM;
	case MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
		return RECORD_CHACHA20_POLY1305;
	default:
		return -1;
	}
}

int
record_secrets_from_key_block(enum record_cipher cipher, bool is_server, const uint8_t *kb,
    size_t maclen, size_t keylen, size_t ivlen, struct record_secret *tx,
    struct record_secret *rx)
{
	size_t want_key = cipher == RECORD_AES_128_GCM ? 16 : 32;
	size_t want_iv = cipher == RECORD_CHACHA20_POLY1305 ? 12 : 4;
	const uint8_t *ckey, *skey, *civ, *siv;
	struct record_secret *cs = is_server ? rx : tx, *ss = is_server ? tx : rx;

	if (maclen != 0 || keylen != want_key || ivlen != want_iv)
		return AMESH_ERR_INVALID;
	/* RFC 5246 6.3: client_write_MAC_key, server_write_MAC_key (none for an AEAD),
	 * client_write_key, server_write_key, client_write_IV, server_write_IV. */
	ckey = kb;
	skey = ckey + keylen;
	civ = skey + keylen;
	siv = civ + ivlen;
	memset(tx, 0, sizeof(*tx));
	memset(rx, 0, sizeof(*rx));
	cs->cipher = ss->cipher = cipher;
	cs->key_len = ss->key_len = keylen;
	memcpy(cs->key, ckey, keylen);
	memcpy(ss->key, skey, keylen);
	memcpy(cs->iv, civ, ivlen);
	memcpy(ss->iv, siv, ivlen);
	return 0;
}

#ifdef HAVE_RECORD_OFFLOAD

/* One EVP context per direction, keyed once; each record sets only its nonce. */
struct ossl_dir {
	EVP_CIPHER_CTX *ctx;
	uint8_t iv[12];
};

/* The record's 12-byte nonce: salt || explicit (GCM) or iv XOR seq (RFC 7905). */
static void
make_nonce(const struct record_dir *d, const struct ossl_dir *o, uint64_t seq,
    const uint8_t *explicit_nonce, uint8_t nonce[12])
{
	memcpy(nonce, o->iv, 12);
	if (d->cipher == RECORD_CHACHA20_POLY1305) {
		uint8_t s[8];

		put_be64(s, seq);
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= s[i];
	} else {
		memcpy(nonce + 4, explicit_nonce, 8);
	}
}

static int
ossl_seal(struct record_dir *d, uint64_t seq, uint8_t type, const uint8_t *in, size_t len1,
    const uint8_t *in2, size_t len2, uint8_t *out, size_t *out_len)
{
	struct ossl_dir *o = d->impl;
	uint8_t nonce[12], aad[13], *p = out + RECORD_HDR;
	size_t over = record_overhead(d->cipher), len = len1 + len2;
	int n, n2 = 0, m;

	if (d->cipher != RECORD_CHACHA20_POLY1305) {
		/* The explicit nonce is the sequence number: unique per key, as RFC 5288 asks. */
		put_be64(p, seq);
		p += RECORD_EXPLICIT_NONCE;
	}
	make_nonce(d, o, seq, out + RECORD_HDR, nonce);
	make_aad(aad, seq, type, len);
	if (!EVP_EncryptInit_ex(o->ctx, NULL, NULL, NULL, nonce) ||
	    !EVP_EncryptUpdate(o->ctx, NULL, &n, aad, sizeof(aad)) ||
	    !EVP_EncryptUpdate(o->ctx, p, &n, in, (int)len1) ||
	    (len2 > 0 && !EVP_EncryptUpdate(o->ctx, p + n, &n2, in2, (int)len2)) ||
	    !EVP_EncryptFinal_ex(o->ctx, p + n + n2, &m) ||
	    !EVP_CIPHER_CTX_ctrl(o->ctx, EVP_CTRL_AEAD_GET_TAG, RECORD_TAG, p + len))
		return AMESH_ERR_INTERNAL;
	put_hdr(out, type, len + over);
	*out_len = RECORD_HDR + len + over;
	return 0;
}

static int
ossl_open(struct record_dir *d, uint64_t seq, const uint8_t hdr[RECORD_HDR], uint8_t *frag,
    size_t len, size_t *plain_off, size_t *plain_len)
{
	struct ossl_dir *o = d->impl;
	size_t over = record_overhead(d->cipher);
	size_t off = over - RECORD_TAG, plen;
	uint8_t nonce[12], aad[13];
	int n, m;

	if (len < over)
		return AMESH_ERR_INVALID;
	plen = len - over;
	make_nonce(d, o, seq, frag, nonce);
	make_aad(aad, seq, hdr[0], plen);
	if (!EVP_DecryptInit_ex(o->ctx, NULL, NULL, NULL, nonce) ||
	    !EVP_DecryptUpdate(o->ctx, NULL, &n, aad, sizeof(aad)) ||
	    !EVP_DecryptUpdate(o->ctx, frag + off, &n, frag + off, (int)plen) ||
	    !EVP_CIPHER_CTX_ctrl(o->ctx, EVP_CTRL_AEAD_SET_TAG, RECORD_TAG, frag + off + plen) ||
	    EVP_DecryptFinal_ex(o->ctx, frag + off + n, &m) <= 0)
		return AMESH_ERR_INVALID;
	*plain_off = off;
	*plain_len = plen;
	return 0;
}

static void
ossl_destroy(struct record_dir *d)
{
	struct ossl_dir *o = d->impl;

	EVP_CIPHER_CTX_free(o->ctx);
	OPENSSL_cleanse(o, sizeof(*o));
	free(o);
}

static const struct record_ops ossl_ops = {
	.name = "openssl",
	.seal = ossl_seal,
	.open = ossl_open,
	.destroy = ossl_destroy,
};

/*
 * The ciphers, fetched once (record_init): EVP_aes_128_gcm() and the like make every
 * EVP_CipherInit_ex fetch the implementation again, and the first fetch initializes OpenSSL's
 * provider store, which an allocation failure there leaves broken (a later fetch crashes on a
 * NULL lock: found with AMESH_FAILALLOC). NULL: not fetched, the legacy way is used.
 */
static EVP_CIPHER *fetched[3];
static const char *const fetch_names[3] = { "AES-128-GCM", "AES-256-GCM", "ChaCha20-Poly1305" };

static void
record_fini(void)
{
	for (size_t i = 0; i < 3; i++) {
		EVP_CIPHER_free(fetched[i]);
		fetched[i] = NULL;
	}
}

int
record_init(void)
{
	static bool done;

	if (done)
		return 0;
	for (size_t i = 0; i < 3; i++)
		if ((fetched[i] = EVP_CIPHER_fetch(NULL, fetch_names[i], NULL)) == NULL) {
			record_fini();
			return AMESH_ERR_NOMEM;
		}
	atexit(record_fini); /* before OpenSSL's own cleanup, registered earlier */
	done = true;
	return 0;
}

bool
record_available(void)
{
	return true;
}

int
record_dir_init(struct record_dir *d, const struct record_secret *s, bool seal)
{
	const EVP_CIPHER *ci;
	struct ossl_dir *o;

	memset(d, 0, sizeof(*d));
	switch (s->cipher) {
	case RECORD_AES_128_GCM:
		ci = fetched[0] ? fetched[0] : EVP_aes_128_gcm();
		break;
	case RECORD_AES_256_GCM:
		ci = fetched[1] ? fetched[1] : EVP_aes_256_gcm();
		break;
	case RECORD_CHACHA20_POLY1305:
		ci = fetched[2] ? fetched[2] : EVP_chacha20_poly1305();
		break;
	default:
		return AMESH_ERR_INVALID;
	}
	if ((size_t)EVP_CIPHER_key_length(ci) != s->key_len)
		return AMESH_ERR_INVALID;
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return AMESH_ERR_NOMEM;
	o->ctx = EVP_CIPHER_CTX_new();
	if (o->ctx == NULL || !EVP_CipherInit_ex(o->ctx, ci, NULL, s->key, NULL, seal ? 1 : 0)) {
		EVP_CIPHER_CTX_free(o->ctx);
		free(o);
		return AMESH_ERR_NOMEM;
	}
	memcpy(o->iv, s->iv, sizeof(o->iv));
	d->ops = &ossl_ops;
	d->impl = o;
	d->cipher = s->cipher;
	d->seq = s->seq;
	return 0;
}

#else /* !HAVE_RECORD_OFFLOAD */

int
record_init(void)
{
	return 0;
}

bool
record_available(void)
{
	return false;
}

int
record_dir_init(struct record_dir *d, const struct record_secret *s, bool seal)
{
	(void)s;
	(void)seal;
	memset(d, 0, sizeof(*d));
	return AMESH_ERR_INVALID;
}

#endif

void
record_dir_free(struct record_dir *d)
{
	if (d->ops != NULL && d->ops->destroy != NULL)
		d->ops->destroy(d);
	d->ops = NULL;
	d->impl = NULL;
}

int
record_seal2(struct record_dir *d, uint8_t type, const uint8_t *in, size_t len,
    const uint8_t *in2, size_t len2, uint8_t *out, size_t cap)
{
	size_t out_len;
	int r;

	if (d->ops == NULL || len > RECORD_MAX_PLAIN || len2 > RECORD_MAX_PLAIN - len ||
	    cap < RECORD_HDR + len + len2 + record_overhead(d->cipher))
		return AMESH_ERR_INTERNAL;
	if (d->spent)
		return AMESH_ERR_RANGE;
	r = d->ops->seal(d, d->seq, type, in, len, in2, len2, out, &out_len);
	if (r != 0)
		return r;
	/* RFC 5246 6.1: sequence numbers do not wrap; after the last one the connection ends. */
	if (d->seq == UINT64_MAX)
		d->spent = true;
	else
		d->seq++;
	return (int)out_len;
}

int
record_seal(struct record_dir *d, uint8_t type, const uint8_t *in, size_t len, uint8_t *out,
    size_t cap)
{
	return record_seal2(d, type, in, len, NULL, 0, out, cap);
}

int
record_frame(const uint8_t *buf, size_t len)
{
	size_t flen;

	if (len < RECORD_HDR)
		return 0;
	if (buf[0] < RECORD_CHANGE_CIPHER_SPEC || buf[0] > RECORD_APPLICATION_DATA)
		return -RECORD_ALERT_UNEXPECTED_MESSAGE;
	if (buf[1] != 3 || buf[2] != 3)
		return -RECORD_ALERT_PROTOCOL_VERSION;
	flen = (size_t)buf[3] << 8 | buf[4];
	if (flen > RECORD_MAX_FRAGMENT)
		return -RECORD_ALERT_RECORD_OVERFLOW;
	if (len < RECORD_HDR + flen)
		return 0;
	return (int)(RECORD_HDR + flen);
}

int
record_open(struct record_dir *d, uint8_t *rec, size_t rec_len, uint8_t *type,
    size_t *plain_off, size_t *plain_len)
{
	size_t off, plen;

	if (d->ops == NULL)
		return -RECORD_ALERT_INTERNAL_ERROR;
	if (d->spent)
		return -RECORD_ALERT_INTERNAL_ERROR;
	if (rec_len < RECORD_HDR + record_overhead(d->cipher))
		return -RECORD_ALERT_BAD_RECORD_MAC;
	if (d->ops->open(d, d->seq, rec, rec + RECORD_HDR, rec_len - RECORD_HDR, &off, &plen) != 0)
		return -RECORD_ALERT_BAD_RECORD_MAC;
	if (plen > RECORD_MAX_PLAIN)
		return -RECORD_ALERT_RECORD_OVERFLOW;
	if (d->seq == UINT64_MAX)
		d->spent = true;
	else
		d->seq++;
	*type = rec[0];
	*plain_off = RECORD_HDR + off;
	*plain_len = plen;
	return 0;
}
