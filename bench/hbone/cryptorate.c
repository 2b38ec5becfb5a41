/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Single-core mbedTLS cost of what an HBONE connection does: the AEAD of each of the three TLS
 * suites amesh offers, sealing and opening 16 KiB records exactly as TLS 1.2 does (13-byte
 * additional data, 12-byte nonce, 16-byte tag, in place, through the cipher layer that ssl_msg.c
 * uses), and the public-key operations of a handshake: P-256 ECDSA sign and verify (SHA-256,
 * deterministic k, as mbedtls_pk_sign does in the handshake) and one ECDHE share (key generation
 * plus shared secret) on X25519 and on P-256.
 *
 * Rates are per CPU second of this thread (CLOCK_THREAD_CPUTIME_ID), so a busy machine slows the
 * run but does not change the numbers much. One line per measurement, "key value" pairs, for the
 * bench/hbone/run.sh driver; see bench/README.
 */
#include "config.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/cipher.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecp.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

#include "tls/rng.h"

#define TAG_LEN 16
#define AAD_LEN 13 /* TLS 1.2: seq_num(8) + type(1) + version(2) + length(2) */
#define NONCE_LEN 12

static double secs = 1.0;
static size_t record = 16384;

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what, int r)
{
	fprintf(stderr, "cryptorate: %s failed (mbedTLS error -0x%04x)\n", what, (unsigned)-r);
	exit(1);
}

/*
 * Seals and opens records of the given AEAD for about secs CPU seconds each way: first sealing
 * only, then sealing and opening each record (what one byte costs on a TLS hop: the sender seals
 * it, the receiver opens it). The opened tag is checked every time.
 */
static void
aead(const char *name, mbedtls_cipher_type_t type, int keybits)
{
	const mbedtls_cipher_info_t *info = mbedtls_cipher_info_from_type(type);
	mbedtls_cipher_context_t enc, dec;
	unsigned char key[32], nonce[NONCE_LEN], aad[AAD_LEN];
	unsigned char *buf = malloc(record + TAG_LEN);
	double t0, t, enc_s, both_s;
	uint64_t n_enc = 0, n_both = 0, seq = 0;
	size_t olen;
	int r;

	if (info == NULL || buf == NULL) {
		fprintf(stderr, "cryptorate: %s is not available in this mbedTLS\n", name);
		exit(1);
	}
	rng_fill(rng_ctx(), key, sizeof(key));
	rng_fill(rng_ctx(), nonce, sizeof(nonce));
	rng_fill(rng_ctx(), buf, record);
	memset(aad, 0x17, sizeof(aad));
	mbedtls_cipher_init(&enc);
	mbedtls_cipher_init(&dec);
	if ((r = mbedtls_cipher_setup(&enc, info)) != 0 || (r = mbedtls_cipher_setup(&dec, info)) != 0)
		die("cipher_setup", r);
	if ((r = mbedtls_cipher_setkey(&enc, key, keybits, MBEDTLS_ENCRYPT)) != 0 ||
	    (r = mbedtls_cipher_setkey(&dec, key, keybits, MBEDTLS_DECRYPT)) != 0)
		die("cipher_setkey", r);

	/* Seal only. The nonce changes per record as the sequence number does in TLS. */
	t0 = cpu_now();
	do {
		for (int i = 0; i < 16; i++, n_enc++) {
			memcpy(nonce + 4, &seq, sizeof(seq));
			memcpy(aad, &seq, sizeof(seq));
			seq++;
			r = mbedtls_cipher_auth_encrypt_ext(&enc, nonce, sizeof(nonce), aad, sizeof(aad),
			    buf, record, buf, record + TAG_LEN, &olen, TAG_LEN);
			if (r != 0)
				die("auth_encrypt_ext", r);
		}
		t = cpu_now() - t0;
	} while (t < secs);
	enc_s = t / (double)n_enc;

	/* Seal then open the same record (in place, back to the plaintext). */
	t0 = cpu_now();
	do {
		for (int i = 0; i < 16; i++, n_both++) {
			memcpy(nonce + 4, &seq, sizeof(seq));
			memcpy(aad, &seq, sizeof(seq));
			seq++;
			r = mbedtls_cipher_auth_encrypt_ext(&enc, nonce, sizeof(nonce), aad, sizeof(aad),
			    buf, record, buf, record + TAG_LEN, &olen, TAG_LEN);
			if (r != 0)
				die("auth_encrypt_ext", r);
			r = mbedtls_cipher_auth_decrypt_ext(&dec, nonce, sizeof(nonce), aad, sizeof(aad),
			    buf, record + TAG_LEN, buf, record, &olen, TAG_LEN);
			if (r != 0 || olen != record)
				die("auth_decrypt_ext (tag check)", r);
		}
		t = cpu_now() - t0;
	} while (t < secs);
	both_s = t / (double)n_both;

	printf("aead %s record %zu seal_MBps %.1f open_MBps %.1f sealopen_MBps %.1f "
	    "sealopen_ns_per_byte %.3f\n", name, record, (double)record / enc_s / 1e6,
	    (double)record / (both_s - enc_s) / 1e6, (double)record / both_s / 1e6,
	    both_s / (double)record * 1e9);
	mbedtls_cipher_free(&enc);
	mbedtls_cipher_free(&dec);
	free(buf);
}

static void
report_pk(const char *name, uint64_t n, double t)
{
	printf("pk %s ops_per_s %.1f us_per_op %.1f\n", name, (double)n / t, t / (double)n * 1e6);
}

/* P-256 ECDSA over a SHA-256 digest: what the handshake's CertificateVerify / ServerKeyExchange
 * signature and each certificate signature check cost. */
static void
ecdsa(double *sign_us, double *verify_us)
{
	mbedtls_pk_context pk;
	unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
	size_t sig_len = 0;
	uint64_t n;
	double t0, t;
	int r;

	mbedtls_pk_init(&pk);
	if ((r = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0)
		die("pk_setup", r);
	r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk), rng_fill, rng_ctx());
	if (r != 0)
		die("ecp_gen_key", r);
	memset(hash, 0x5a, sizeof(hash));

	n = 0;
	t0 = cpu_now();
	do {
		hash[0] = (unsigned char)n; /* a different digest each time, as in real handshakes */
		r = mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, &sig_len,
		    rng_fill, rng_ctx());
		if (r != 0)
			die("pk_sign", r);
		n++;
		t = cpu_now() - t0;
	} while (t < secs);
	report_pk("ecdsa-p256-sign", n, t);
	*sign_us = t / (double)n * 1e6;

	n = 0;
	t0 = cpu_now();
	do {
		r = mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, sig_len);
		if (r != 0)
			die("pk_verify", r);
		n++;
		t = cpu_now() - t0;
	} while (t < secs);
	report_pk("ecdsa-p256-verify", n, t);
	*verify_us = t / (double)n * 1e6;
	mbedtls_pk_free(&pk);
}

/* One side's ECDHE work: a fresh key pair, then the shared secret with the peer's public key. */
static double
ecdhe(const char *name, mbedtls_ecp_group_id gid)
{
	mbedtls_ecp_group grp;
	mbedtls_mpi d, peer_d, z;
	mbedtls_ecp_point q, peer_q;
	uint64_t n = 0;
	double t0, t;
	int r;

	mbedtls_ecp_group_init(&grp);
	mbedtls_mpi_init(&d);
	mbedtls_mpi_init(&peer_d);
	mbedtls_mpi_init(&z);
	mbedtls_ecp_point_init(&q);
	mbedtls_ecp_point_init(&peer_q);
	if ((r = mbedtls_ecp_group_load(&grp, gid)) != 0)
		die("ecp_group_load", r);
	if ((r = mbedtls_ecdh_gen_public(&grp, &peer_d, &peer_q, rng_fill, rng_ctx())) != 0)
		die("ecdh_gen_public", r);
	t0 = cpu_now();
	do {
		r = mbedtls_ecdh_gen_public(&grp, &d, &q, rng_fill, rng_ctx());
		if (r == 0)
			r = mbedtls_ecdh_compute_shared(&grp, &z, &peer_q, &d, rng_fill, rng_ctx());
		if (r != 0)
			die("ecdh", r);
		n++;
		t = cpu_now() - t0;
	} while (t < secs);
	report_pk(name, n, t);
	mbedtls_ecp_group_free(&grp);
	mbedtls_mpi_free(&d);
	mbedtls_mpi_free(&peer_d);
	mbedtls_mpi_free(&z);
	mbedtls_ecp_point_free(&q);
	mbedtls_ecp_point_free(&peer_q);
	return t / (double)n * 1e6;
}

static void
usage(void)
{
	fprintf(stderr, "usage: cryptorate [-t SECONDS_PER_TEST] [-r RECORD_BYTES] [-a] [-p]\n"
	    "  -a  AEADs only   -p  public-key operations only\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	bool only_aead = false, only_pk = false;
	double sign_us, verify_us, x25519_us, p256_us;
	int c;

	while ((c = getopt(argc, argv, "t:r:aph")) != -1) {
		switch (c) {
		case 't': secs = atof(optarg); break;
		case 'r': record = (size_t)strtoul(optarg, NULL, 10); break;
		case 'a': only_aead = true; break;
		case 'p': only_pk = true; break;
		default: usage();
		}
	}
	if (secs <= 0 || record == 0 || record > 16384)
		usage();
	if (!only_pk) {
		aead("CHACHA20-POLY1305", MBEDTLS_CIPHER_CHACHA20_POLY1305, 256);
		aead("AES-128-GCM", MBEDTLS_CIPHER_AES_128_GCM, 128);
		aead("AES-256-GCM", MBEDTLS_CIPHER_AES_256_GCM, 256);
	}
	if (!only_aead) {
		ecdsa(&sign_us, &verify_us);
		x25519_us = ecdhe("ecdhe-x25519", MBEDTLS_ECP_DP_CURVE25519);
		p256_us = ecdhe("ecdhe-p256", MBEDTLS_ECP_DP_SECP256R1);
		/* Each side of an HBONE handshake signs once (CertificateVerify or ServerKeyExchange),
		 * verifies twice (the peer's leaf against the CA, and the peer's handshake signature)
		 * and does one ECDHE share. */
		printf("handshake side_sign_verify_us %.1f bound_sign_verify_per_s %.1f\n",
		    sign_us + 2 * verify_us, 1e6 / (sign_us + 2 * verify_us));
		printf("handshake side_x25519_us %.1f bound_x25519_per_s %.1f\n",
		    sign_us + 2 * verify_us + x25519_us, 1e6 / (sign_us + 2 * verify_us + x25519_us));
		printf("handshake side_p256_us %.1f bound_p256_per_s %.1f\n",
		    sign_us + 2 * verify_us + p256_us, 1e6 / (sign_us + 2 * verify_us + p256_us));
	}
	return 0;
}
