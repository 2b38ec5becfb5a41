/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which library seals TLS 1.2 records fastest on this CPU: mbedTLS (what amesh used), libsodium
 * and OpenSSL's libcrypto, each sealing and opening 16 KiB records in place with a 13-byte
 * additional data, a fresh 12-byte nonce per record and a 16-byte tag, as a record layer does.
 * Rates are per CPU second of this thread (CLOCK_THREAD_CPUTIME_ID). One line per measurement:
 * "lib L aead A op seal|seal+open MB/s N" (seal+open: records sealed and opened again per second,
 * what one proxy does to a byte it relays between two TLS legs); README's dependency list
 * takes its choice from this.
 */
#include "config.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/cipher.h>
#include <openssl/evp.h>
#ifdef HAVE_SODIUM
#include <sodium.h>
#endif

#define TAG 16

static double secs = 1.0;
static size_t rec = 16384;
static uint8_t key[32], nonce[12], aad[13];
static uint8_t *buf;

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One op on buf; op 0 seals, 1 opens what the last seal produced. Returns 0 on success. */
typedef int (*op_fn)(void *ctx, int op, uint64_t i);

static void
report(const char *lib, const char *aead, void *ctx, op_fn fn)
{
	for (int op = 0; op < 2; op++) {
		double t0, t;
		uint64_t n = 0;

		memset(buf, 0x5a, rec + TAG);
		if (op == 1 && fn(ctx, 0, 0) != 0) {
			printf("lib %s aead %s op seal FAILED\n", lib, aead);
			return;
		}
		t0 = cpu_now();
		do {
			for (int k = 0; k < 64; k++, n++) {
				if (op == 1) {
					/* Open needs a valid record: re-seal outside the timed part is too
					 * costly, so seal+open and subtract the seal rate measured above. */
					if (fn(ctx, 0, n) != 0 || fn(ctx, 1, n) != 0) {
						printf("lib %s aead %s op open FAILED\n", lib, aead);
						return;
					}
				} else if (fn(ctx, 0, n) != 0) {
					printf("lib %s aead %s op seal FAILED\n", lib, aead);
					return;
				}
			}
			t = cpu_now() - t0;
		} while (t < secs);
		printf("lib %s aead %s op %s MB/s %.0f\n", lib, aead, op ? "seal+open" : "seal",
		    (double)n * (double)rec / t / 1e6);
		fflush(stdout);
	}
}

static void
set_nonce(uint64_t i)
{
	memcpy(nonce + 4, &i, 8);
	memcpy(aad, &i, 8);
}

/* mbedTLS through the cipher layer, as ssl_msg.c does. */
static int
mbed_op(void *ctx, int op, uint64_t i)
{
	mbedtls_cipher_context_t *c = ctx;
	size_t olen;

	set_nonce(i);
	if (op == 0)
		return mbedtls_cipher_auth_encrypt_ext(c, nonce, 12, aad, 13, buf, rec, buf,
		    rec + TAG, &olen, TAG);
	return mbedtls_cipher_auth_decrypt_ext(c, nonce, 12, aad, 13, buf, rec + TAG, buf, rec,
	    &olen, TAG);
}

static void
run_mbed(const char *name, mbedtls_cipher_type_t type, int bits)
{
	mbedtls_cipher_context_t enc;
	const mbedtls_cipher_info_t *info = mbedtls_cipher_info_from_type(type);

	mbedtls_cipher_init(&enc);
	if (info == NULL || mbedtls_cipher_setup(&enc, info) != 0 ||
	    mbedtls_cipher_setkey(&enc, key, bits, MBEDTLS_ENCRYPT) != 0) {
		printf("lib mbedtls aead %s unavailable\n", name);
		return;
	}
	/* One context opens too: mbedTLS's GCM and ChaCha20-Poly1305 only ever run the cipher
	 * forwards, whatever the operation set with the key. */
	report("mbedtls", name, &enc, mbed_op);
	mbedtls_cipher_free(&enc);
}

#ifdef HAVE_SODIUM
struct sodium_ctx {
	int chacha;
	crypto_aead_aes256gcm_state st;
};

static int
sodium_op(void *ctx, int op, uint64_t i)
{
	struct sodium_ctx *s = ctx;

	set_nonce(i);
	if (s->chacha) {
		if (op == 0)
			return crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf, buf + rec,
			    NULL, buf, rec, aad, 13, NULL, nonce, key);
		return crypto_aead_chacha20poly1305_ietf_decrypt_detached(buf, NULL, buf, rec,
		    buf + rec, aad, 13, nonce, key);
	}
	if (op == 0)
		return crypto_aead_aes256gcm_encrypt_detached_afternm(buf, buf + rec, NULL, buf,
		    rec, aad, 13, NULL, nonce, &s->st);
	return crypto_aead_aes256gcm_decrypt_detached_afternm(buf, NULL, buf, rec, buf + rec,
	    aad, 13, nonce, &s->st);
}

static void
run_sodium(void)
{
	struct sodium_ctx s;

	if (sodium_init() < 0)
		return;
	s.chacha = 0;
	if (crypto_aead_aes256gcm_is_available()) {
		crypto_aead_aes256gcm_beforenm(&s.st, key);
		report("libsodium", "aes-256-gcm", &s, sodium_op);
	} else {
		printf("lib libsodium aead aes-256-gcm unavailable (no AES-NI)\n");
	}
	s.chacha = 1;
	report("libsodium", "chacha20-poly1305", &s, sodium_op);
}
#else
static void
run_sodium(void)
{
	printf("lib libsodium unavailable (built without it)\n");
}
#endif

static int
ossl_op(void *ctx, int op, uint64_t i)
{
	EVP_CIPHER_CTX **c = ctx;
	int l;

	set_nonce(i);
	if (op == 0) {
		if (!EVP_EncryptInit_ex(c[0], NULL, NULL, NULL, nonce) ||
		    !EVP_EncryptUpdate(c[0], NULL, &l, aad, 13) ||
		    !EVP_EncryptUpdate(c[0], buf, &l, buf, (int)rec) ||
		    !EVP_EncryptFinal_ex(c[0], buf + l, &l) ||
		    !EVP_CIPHER_CTX_ctrl(c[0], EVP_CTRL_AEAD_GET_TAG, TAG, buf + rec))
			return -1;
		return 0;
	}
	if (!EVP_DecryptInit_ex(c[1], NULL, NULL, NULL, nonce) ||
	    !EVP_DecryptUpdate(c[1], NULL, &l, aad, 13) ||
	    !EVP_DecryptUpdate(c[1], buf, &l, buf, (int)rec) ||
	    !EVP_CIPHER_CTX_ctrl(c[1], EVP_CTRL_AEAD_SET_TAG, TAG, buf + rec) ||
	    EVP_DecryptFinal_ex(c[1], buf + l, &l) <= 0)
		return -1;
	return 0;
}

static void
run_ossl(const char *name, const EVP_CIPHER *ci)
{
	EVP_CIPHER_CTX *c[2] = { EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_new() };

	if (!EVP_EncryptInit_ex(c[0], ci, NULL, key, NULL) ||
	    !EVP_DecryptInit_ex(c[1], ci, NULL, key, NULL)) {
		printf("lib openssl aead %s unavailable\n", name);
		return;
	}
	report("openssl", name, c, ossl_op);
	EVP_CIPHER_CTX_free(c[0]);
	EVP_CIPHER_CTX_free(c[1]);
}

int
main(int argc, char **argv)
{
	int o;

	while ((o = getopt(argc, argv, "t:s:h")) != -1) {
		if (o == 't')
			secs = atof(optarg);
		else if (o == 's')
			rec = (size_t)atol(optarg);
		else {
			fprintf(stderr, "usage: %s [-t SECONDS] [-s RECORD_BYTES]\n", argv[0]);
			return o == 'h' ? 0 : 1;
		}
	}
	buf = malloc(rec + TAG);
	if (buf == NULL)
		return 1;
	memset(key, 0x11, sizeof(key));
	memset(nonce, 0x22, sizeof(nonce));
	memset(aad, 0x33, sizeof(aad));
	printf("record %zu bytes, %.1f s per measurement\n", rec, secs);
	run_mbed("aes-128-gcm", MBEDTLS_CIPHER_AES_128_GCM, 128);
	run_mbed("aes-256-gcm", MBEDTLS_CIPHER_AES_256_GCM, 256);
	run_mbed("chacha20-poly1305", MBEDTLS_CIPHER_CHACHA20_POLY1305, 256);
	run_sodium();
	run_ossl("aes-128-gcm", EVP_aes_128_gcm());
	run_ossl("aes-256-gcm", EVP_aes_256_gcm());
	run_ossl("chacha20-poly1305", EVP_chacha20_poly1305());
	free(buf);
	return 0;
}
