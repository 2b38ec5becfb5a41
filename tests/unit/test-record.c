/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for tls/record.c: records it seals open with mbedTLS's AEADs given the nonce and additional
 * data that RFC 5246, 5288 and 7905 spell out (built here, independently), and the reverse; a
 * flipped bit anywhere fails; the header checks and size limits; sequence-number exhaustion; the
 * key block split.
 */
#include "config.h"

#include <stdint.h>

#include <mbedtls/cipher.h>

#include "core/err.h"
#include "failalloc.h"
#include "runner.h"
#include "tls/record.h"

/* A build without the record layer (configure --without-record-offload) skips these. */
static void
need_record_layer(void)
{
	if (!record_available()) {
		fprintf(stderr, "built without the record layer\n");
		exit(77);
	}
}

static const enum record_cipher ciphers[] = {
	RECORD_AES_128_GCM, RECORD_AES_256_GCM, RECORD_CHACHA20_POLY1305,
};

static void
secret(struct record_secret *s, enum record_cipher c, uint64_t seq)
{
	memset(s, 0, sizeof(*s));
	s->cipher = c;
	s->key_len = c == RECORD_AES_128_GCM ? 16 : 32;
	for (size_t i = 0; i < s->key_len; i++)
		s->key[i] = (uint8_t)(0x40 + i);
	for (size_t i = 0; i < (c == RECORD_CHACHA20_POLY1305 ? 12u : 4u); i++)
		s->iv[i] = (uint8_t)(0xa0 + i);
	s->seq = seq;
}

static void
be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* The RFC's nonce and additional data for a record, built without tls/record.c. */
static size_t
rfc_nonce_aad(const struct record_secret *s, uint64_t seq, const uint8_t *explicit_nonce,
    uint8_t type, size_t plain_len, uint8_t nonce[12], uint8_t aad[13])
{
	uint8_t sq[8];

	be64(sq, seq);
	memcpy(nonce, s->iv, 12);
	if (s->cipher == RECORD_CHACHA20_POLY1305) {
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= sq[i]; /* RFC 7905 section 2 */
	} else {
		memcpy(nonce + 4, explicit_nonce, 8); /* RFC 5288 section 3 */
	}
	memcpy(aad, sq, 8);
	aad[8] = type;
	aad[9] = 3;
	aad[10] = 3;
	aad[11] = (uint8_t)(plain_len >> 8);
	aad[12] = (uint8_t)plain_len;
	return s->cipher == RECORD_CHACHA20_POLY1305 ? 0 : 8;
}

static void
mbed_ctx(mbedtls_cipher_context_t *m, const struct record_secret *s, mbedtls_operation_t op)
{
	mbedtls_cipher_type_t t = s->cipher == RECORD_AES_128_GCM ? MBEDTLS_CIPHER_AES_128_GCM :
	    s->cipher == RECORD_AES_256_GCM ? MBEDTLS_CIPHER_AES_256_GCM :
	    MBEDTLS_CIPHER_CHACHA20_POLY1305;

	mbedtls_cipher_init(m);
	ASSERT_EQ(mbedtls_cipher_setup(m, mbedtls_cipher_info_from_type(t)), 0);
	ASSERT_EQ(mbedtls_cipher_setkey(m, s->key, (int)s->key_len * 8, op), 0);
}

/* Ours seals, mbedTLS opens; mbedTLS seals, ours opens: every cipher, several sizes and seqs. */
TEST(record_interop_mbedtls)
{
	static uint8_t plain[RECORD_MAX_PLAIN], rec[RECORD_MAX_PLAIN + RECORD_MAX_OVERHEAD];
	static uint8_t out[RECORD_MAX_PLAIN + RECORD_MAX_OVERHEAD];
	const size_t sizes[] = { 0, 1, 13, 1400, RECORD_MAX_PLAIN };

	need_record_layer();

	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 7 + 3);
	for (size_t ci = 0; ci < 3; ci++) {
		struct record_secret s;
		struct record_dir tx, rx;
		mbedtls_cipher_context_t m;
		uint64_t seq0 = ci == 2 ? 0x0102030405060708ull : 1;

		secret(&s, ciphers[ci], seq0);
		ASSERT_EQ(record_dir_init(&tx, &s, true), 0);
		ASSERT_EQ(record_dir_init(&rx, &s, false), 0);
		mbed_ctx(&m, &s, MBEDTLS_DECRYPT);
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			size_t len = sizes[k], olen, off, plen, en;
			uint64_t seq = seq0 + k;
			uint8_t nonce[12], aad[13], type;
			int n = record_seal(&tx, RECORD_APPLICATION_DATA, plain, len, rec, sizeof(rec));

			ASSERT_EQ(n, RECORD_HDR + len + record_overhead(s.cipher));
			ASSERT_EQ(rec[0], 23);
			ASSERT_EQ(rec[1], 3);
			ASSERT_EQ(rec[2], 3);
			ASSERT_EQ((size_t)rec[3] << 8 | rec[4], n - RECORD_HDR);
			en = rfc_nonce_aad(&s, seq, rec + RECORD_HDR, 23, len, nonce, aad);
			if (en) {
				uint8_t sq[8];

				be64(sq, seq); /* our explicit nonce is the sequence number */
				ASSERT(memcmp(rec + RECORD_HDR, sq, 8) == 0);
			}
			ASSERT_EQ(mbedtls_cipher_auth_decrypt_ext(&m, nonce, 12, aad, 13,
			    rec + RECORD_HDR + en, (size_t)n - RECORD_HDR - en, out, sizeof(out),
			    &olen, RECORD_TAG), 0);
			ASSERT_EQ(olen, len);
			ASSERT(len == 0 || memcmp(out, plain, len) == 0);
			/* And ours opens its own record. */
			ASSERT_EQ(record_open(&rx, rec, (size_t)n, &type, &off, &plen), 0);
			ASSERT_EQ(type, 23);
			ASSERT_EQ(plen, len);
			ASSERT(len == 0 || memcmp(rec + off, plain, len) == 0);
		}
		mbedtls_cipher_free(&m);

		/* mbedTLS seals (with an explicit nonce that is not the seq), ours opens. */
		mbed_ctx(&m, &s, MBEDTLS_ENCRYPT);
		for (size_t k = 0; k < 3; k++) {
			uint64_t seq = rx.seq;
			uint8_t nonce[12], aad[13], expl[8] = { 9, 8, 7, 6, 5, 4, 3, (uint8_t)k }, type;
			size_t len = 1000 + k, en, olen, off, plen;

			memcpy(rec + RECORD_HDR, expl, 8);
			en = rfc_nonce_aad(&s, seq, expl, (uint8_t)(21 + k), len, nonce, aad);
			ASSERT_EQ(mbedtls_cipher_auth_encrypt_ext(&m, nonce, 12, aad, 13, plain, len,
			    rec + RECORD_HDR + en, sizeof(rec) - RECORD_HDR - en, &olen, RECORD_TAG), 0);
			rec[0] = aad[8];
			rec[1] = rec[2] = 3;
			rec[3] = (uint8_t)((en + olen) >> 8);
			rec[4] = (uint8_t)(en + olen);
			ASSERT_EQ(record_frame(rec, RECORD_HDR + en + olen), RECORD_HDR + en + olen);
			ASSERT_EQ(record_open(&rx, rec, RECORD_HDR + en + olen, &type, &off, &plen), 0);
			ASSERT_EQ(type, aad[8]);
			ASSERT_EQ(plen, len);
			ASSERT(memcmp(rec + off, plain, len) == 0);
		}
		mbedtls_cipher_free(&m);
		record_dir_free(&tx);
		record_dir_free(&rx);
		record_dir_free(&rx); /* twice is harmless */
	}
}

/* One flipped bit anywhere in a record (header, nonce, ciphertext, tag), or the wrong sequence
 * number, and it does not open: bad_record_mac. */
TEST(record_tamper)
{
	static uint8_t plain[300], rec[300 + RECORD_MAX_OVERHEAD], copy[sizeof(rec)];

	need_record_layer();

	for (size_t ci = 0; ci < 3; ci++) {
		struct record_secret s;
		struct record_dir tx, rx;
		uint8_t type;
		size_t off, plen;
		int n;

		secret(&s, ciphers[ci], 1);
		ASSERT_EQ(record_dir_init(&tx, &s, true), 0);
		ASSERT_EQ(record_dir_init(&rx, &s, false), 0);
		n = record_seal(&tx, RECORD_APPLICATION_DATA, plain, sizeof(plain), rec, sizeof(rec));
		ASSERT(n > 0);
		for (int bit = 0; bit < n * 8; bit += (bit < 80 ? 1 : 13)) {
			if (bit / 8 == 3 || bit / 8 == 4)
				continue; /* the length: framing, not the AEAD, catches that */
			memcpy(copy, rec, (size_t)n);
			copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			if (bit / 8 < RECORD_HDR && record_frame(copy, (size_t)n) < 0)
				continue; /* type or version: refused by the header check */
			ASSERT_EQ(record_open(&rx, copy, (size_t)n, &type, &off, &plen),
			    -RECORD_ALERT_BAD_RECORD_MAC);
			ASSERT_EQ(rx.seq, 1); /* a failed open does not advance */
		}
		/* The intact record opens, once: replayed, its sequence number is wrong. */
		memcpy(copy, rec, (size_t)n);
		ASSERT_EQ(record_open(&rx, copy, (size_t)n, &type, &off, &plen), 0);
		memcpy(copy, rec, (size_t)n);
		ASSERT_EQ(record_open(&rx, copy, (size_t)n, &type, &off, &plen),
		    -RECORD_ALERT_BAD_RECORD_MAC);
		/* Too short to hold a tag. */
		copy[3] = 0;
		copy[4] = RECORD_TAG - 1;
		ASSERT_EQ(record_open(&rx, copy, RECORD_HDR + RECORD_TAG - 1, &type, &off, &plen),
		    -RECORD_ALERT_BAD_RECORD_MAC);
		record_dir_free(&tx);
		record_dir_free(&rx);
	}
}

/* record_seal2 (two pieces, as tls.c seals staged frames and a caller's payload) gives the same
 * record as record_seal of the pieces put together, at every split; its limits hold. */
TEST(record_seal2_gather)
{
	static uint8_t plain[RECORD_MAX_PLAIN + 1], one[sizeof(plain) + RECORD_MAX_OVERHEAD],
	    two[sizeof(one)];
	static const size_t lens[] = { 0, 1, 9, 17, 4096, RECORD_MAX_PLAIN };

	need_record_layer();
	for (size_t i = 0; i < sizeof(plain); i++)
		plain[i] = (uint8_t)(i * 7 + 3);
	for (size_t ci = 0; ci < 3; ci++) {
		for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
			size_t len = lens[li];

			for (size_t split = 0; split <= len; split += (len < 40 ? 1 : len / 5 + 1)) {
				struct record_secret s;
				struct record_dir a, b;
				int n1, n2;

				secret(&s, ciphers[ci], 5);
				ASSERT_EQ(record_dir_init(&a, &s, true), 0);
				ASSERT_EQ(record_dir_init(&b, &s, true), 0);
				n1 = record_seal(&a, RECORD_APPLICATION_DATA, plain, len, one, sizeof(one));
				n2 = record_seal2(&b, RECORD_APPLICATION_DATA, plain, split,
				    plain + split, len - split, two, sizeof(two));
				ASSERT(n1 > 0);
				ASSERT_EQ(n1, n2);
				ASSERT(memcmp(one, two, (size_t)n1) == 0);
				ASSERT_EQ(b.seq, 6);
				/* Over 16384 together is refused, whatever the split. */
				ASSERT(record_seal2(&b, RECORD_APPLICATION_DATA, plain, split,
				    plain, RECORD_MAX_PLAIN + 1 - split, two, sizeof(two)) < 0);
				ASSERT_EQ(b.seq, 6);
				record_dir_free(&a);
				record_dir_free(&b);
			}
		}
	}
}

/* Header checks: whole records only, TLS 1.2 only, the four content types, 16384 + 2048 at most;
 * and plaintext over 16384 is refused on both sides. */
TEST(record_limits)
{
	static uint8_t big[RECORD_MAX_FRAGMENT + RECORD_HDR + 1];
	static uint8_t plain[RECORD_MAX_PLAIN + 1];
	uint8_t h[RECORD_HDR] = { 23, 3, 3, 0, 0 };
	struct record_secret s;
	struct record_dir tx, rx;
	size_t out_len, off, plen;
	uint8_t type;

	need_record_layer();

	ASSERT_EQ(record_frame(h, 4), 0);
	ASSERT_EQ(record_frame(h, 5), 5);
	h[3] = (uint8_t)(RECORD_MAX_FRAGMENT >> 8);
	h[4] = (uint8_t)RECORD_MAX_FRAGMENT;
	ASSERT_EQ(record_frame(h, 5), 0); /* the largest legal record: wait for the rest */
	memcpy(big, h, 5);
	ASSERT_EQ(record_frame(big, RECORD_HDR + RECORD_MAX_FRAGMENT),
	    RECORD_HDR + RECORD_MAX_FRAGMENT);
	h[4]++;
	ASSERT_EQ(record_frame(h, 5), -RECORD_ALERT_RECORD_OVERFLOW);
	h[3] = 0xff;
	h[4] = 0xff;
	ASSERT_EQ(record_frame(h, 5), -RECORD_ALERT_RECORD_OVERFLOW);
	h[3] = h[4] = 0;
	h[2] = 1;
	ASSERT_EQ(record_frame(h, 5), -RECORD_ALERT_PROTOCOL_VERSION);
	h[2] = 3;
	h[0] = 24; /* heartbeat: not offered */
	ASSERT_EQ(record_frame(h, 5), -RECORD_ALERT_UNEXPECTED_MESSAGE);
	h[0] = 0x80; /* an SSLv2 header */
	ASSERT_EQ(record_frame(h, 5), -RECORD_ALERT_UNEXPECTED_MESSAGE);

	secret(&s, RECORD_AES_256_GCM, 1);
	ASSERT_EQ(record_dir_init(&tx, &s, true), 0);
	ASSERT_EQ(record_dir_init(&rx, &s, false), 0);
	ASSERT(record_seal(&tx, RECORD_APPLICATION_DATA, plain, sizeof(plain), big, sizeof(big)) < 0);
	ASSERT(record_seal(&tx, RECORD_APPLICATION_DATA, plain, 100, big, 100) < 0); /* no room */
	ASSERT_EQ(tx.seq, 1);
	/* A peer that seals 16385 bytes (the ops, past record_seal's check): record_overflow. */
	ASSERT_EQ(tx.ops->seal(&tx, 1, RECORD_APPLICATION_DATA, plain, sizeof(plain), NULL, 0, big,
	    &out_len), 0);
	ASSERT_EQ(record_frame(big, out_len), (int)out_len);
	ASSERT_EQ(record_open(&rx, big, out_len, &type, &off, &plen), -RECORD_ALERT_RECORD_OVERFLOW);
	record_dir_free(&tx);
	record_dir_free(&rx);
}

/* Sequence numbers never wrap: 2^64 - 1 is the last one used, then sealing and opening stop. */
TEST(record_seq_exhaustion)
{
	uint8_t rec[64], copy[64], type;
	struct record_secret s;
	struct record_dir tx, rx;
	size_t off, plen;
	int n;

	need_record_layer();

	for (size_t ci = 0; ci < 3; ci++) {
		secret(&s, ciphers[ci], UINT64_MAX - 1);
		ASSERT_EQ(record_dir_init(&tx, &s, true), 0);
		ASSERT_EQ(record_dir_init(&rx, &s, false), 0);
		for (int i = 0; i < 2; i++) {
			n = record_seal(&tx, RECORD_ALERT, (const uint8_t *)"\1\0", 2, rec, sizeof(rec));
			ASSERT(n > 0);
			memcpy(copy, rec, (size_t)n);
			ASSERT_EQ(record_open(&rx, copy, (size_t)n, &type, &off, &plen), 0);
			ASSERT_EQ(type, RECORD_ALERT);
		}
		ASSERT(tx.spent && rx.spent);
		ASSERT_EQ(record_seal(&tx, RECORD_ALERT, (const uint8_t *)"\1\0", 2, rec, sizeof(rec)),
		    AMESH_ERR_RANGE);
		ASSERT_EQ(record_open(&rx, rec, (size_t)n, &type, &off, &plen),
		    -RECORD_ALERT_INTERNAL_ERROR);
		record_dir_free(&tx);
		record_dir_free(&rx);
	}
}

/* mbedTLS's key block (RFC 5246 6.3 order) lands in the right direction for each side. */
TEST(record_key_block)
{
	uint8_t kb[88];
	struct record_secret ctx_, crx, stx, srx;

	for (size_t i = 0; i < sizeof(kb); i++)
		kb[i] = (uint8_t)i;
	ASSERT_EQ(record_secrets_from_key_block(RECORD_AES_256_GCM, false, kb, 0, 32, 4, &ctx_,
	    &crx), 0);
	ASSERT_EQ(record_secrets_from_key_block(RECORD_AES_256_GCM, true, kb, 0, 32, 4, &stx, &srx),
	    0);
	ASSERT_EQ(ctx_.key[0], 0);   /* client_write_key */
	ASSERT_EQ(crx.key[0], 32);   /* server_write_key */
	ASSERT_EQ(ctx_.iv[0], 64);   /* client_write_IV (the GCM salt) */
	ASSERT_EQ(crx.iv[0], 68);    /* server_write_IV */
	ASSERT_EQ(ctx_.iv[4], 0);
	ASSERT(memcmp(&ctx_, &srx, sizeof(ctx_)) == 0);
	ASSERT(memcmp(&crx, &stx, sizeof(crx)) == 0);
	ASSERT_EQ(record_secrets_from_key_block(RECORD_CHACHA20_POLY1305, false, kb, 0, 32, 12,
	    &ctx_, &crx), 0);
	ASSERT_EQ(crx.iv[0], 76);
	ASSERT_EQ(crx.iv[11], 87);
	ASSERT_EQ(record_secrets_from_key_block(RECORD_AES_128_GCM, false, kb, 0, 16, 4, &ctx_,
	    &crx), 0);
	ASSERT_EQ(crx.key[0], 16);
	ASSERT_EQ(ctx_.iv[0], 32);
	/* Lengths that are not the cipher's (a CBC suite's MAC keys, a wrong key size). */
	ASSERT_EQ(record_secrets_from_key_block(RECORD_AES_256_GCM, false, kb, 32, 32, 4, &ctx_,
	    &crx), AMESH_ERR_INVALID);
	ASSERT_EQ(record_secrets_from_key_block(RECORD_AES_128_GCM, false, kb, 0, 32, 4, &ctx_,
	    &crx), AMESH_ERR_INVALID);
	ASSERT_EQ(record_secrets_from_key_block(RECORD_CHACHA20_POLY1305, false, kb, 0, 32, 4,
	    &ctx_, &crx), AMESH_ERR_INVALID);
}

/* A failed allocation in record_dir_init leaves nothing behind and says so (tls.c then keeps
 * mbedTLS's records for that connection). */
TEST(record_init_alloc_failure)
{
	struct record_secret s;
	struct record_dir d;

	need_record_layer();
	secret(&s, RECORD_AES_256_GCM, 1);
	failalloc_arm(0);
	ASSERT_EQ(record_dir_init(&d, &s, true), AMESH_ERR_NOMEM);
	failalloc_disarm();
	ASSERT_STREQ(failalloc_failed(), "calloc");
	ASSERT_EQ(failalloc_live(), 0);
	ASSERT(d.ops == NULL && d.impl == NULL);
	record_dir_free(&d);
	ASSERT_EQ(record_dir_init(&d, &s, true), 0);
	record_dir_free(&d);
}
