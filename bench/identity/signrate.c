/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The bound of bench/identity: how many P-256 ECDSA signatures mbedTLS makes per CPU second of one
 * thread on this machine (SHA-256 digests, mbedtls_pk_sign as ca_sign and the TLS handshake call
 * it), and beside it what the CA's other public-key operations cost: a signature check
 * (mbedtls_pk_verify) and one ECDHE share (key pair plus shared secret) on X25519 and P-256. Only
 * mbedTLS (libmbedcrypto), its CTR-DRBG seeded from its entropy collector; nothing of amesh.
 *
 *	signrate [-t SECS]      SECS of CPU per measurement (default 2)
 *
 * Prints one "name ops ops_per_cpu_s us_per_op" line per measurement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>

static mbedtls_ctr_drbg_context drbg;
static double secs = 2.0;

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
	fprintf(stderr, "signrate: %s failed (mbedTLS error -0x%04x)\n", what, (unsigned)-r);
	exit(1);
}

static void
report(const char *name, unsigned long n, double t)
{
	printf("%s %lu %.1f %.1f\n", name, n, (double)n / t, t / (double)n * 1e6);
}

static void
ecdsa(void)
{
	mbedtls_pk_context pk;
	unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
	size_t sig_len = 0;
	unsigned long n = 0;
	double t0, t = 0;
	int r;

	mbedtls_pk_init(&pk);
	if ((r = mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
	    (r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
	    mbedtls_ctr_drbg_random, &drbg)) != 0)
		die("key generation", r);
	memset(hash, 0x5a, sizeof(hash));
	t0 = cpu_now();
	while (t < secs) {
		hash[0] = (unsigned char)n; /* a different digest each time */
		hash[1] = (unsigned char)(n >> 8);
		r = mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, &sig_len,
		    mbedtls_ctr_drbg_random, &drbg);
		if (r != 0)
			die("pk_sign", r);
		n++;
		t = cpu_now() - t0;
	}
	report("ecdsa-p256-sign", n, t);
	n = 0;
	t = 0;
	t0 = cpu_now();
	while (t < secs) {
		r = mbedtls_pk_verify(&pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, sig_len);
		if (r != 0)
			die("pk_verify", r);
		n++;
		t = cpu_now() - t0;
	}
	report("ecdsa-p256-verify", n, t);
	mbedtls_pk_free(&pk);
}

static void
ecdhe(const char *name, mbedtls_ecp_group_id gid)
{
	mbedtls_ecp_group grp;
	mbedtls_mpi d, peer_d, z;
	mbedtls_ecp_point q, peer_q;
	unsigned long n = 0;
	double t0, t = 0;
	int r;

	mbedtls_ecp_group_init(&grp);
	mbedtls_mpi_init(&d);
	mbedtls_mpi_init(&peer_d);
	mbedtls_mpi_init(&z);
	mbedtls_ecp_point_init(&q);
	mbedtls_ecp_point_init(&peer_q);
	if ((r = mbedtls_ecp_group_load(&grp, gid)) != 0)
		die("ecp_group_load", r);
	if ((r = mbedtls_ecdh_gen_public(&grp, &peer_d, &peer_q, mbedtls_ctr_drbg_random,
	    &drbg)) != 0)
		die("ecdh_gen_public", r);
	t0 = cpu_now();
	while (t < secs) {
		r = mbedtls_ecdh_gen_public(&grp, &d, &q, mbedtls_ctr_drbg_random, &drbg);
		if (r == 0)
			r = mbedtls_ecdh_compute_shared(&grp, &z, &peer_q, &d,
			    mbedtls_ctr_drbg_random, &drbg);
		if (r != 0)
			die("ecdh", r);
		n++;
		t = cpu_now() - t0;
	}
	report(name, n, t);
	mbedtls_ecp_group_free(&grp);
	mbedtls_mpi_free(&d);
	mbedtls_mpi_free(&peer_d);
	mbedtls_mpi_free(&z);
	mbedtls_ecp_point_free(&q);
	mbedtls_ecp_point_free(&peer_q);
}

int
main(int argc, char **argv)
{
	mbedtls_entropy_context ent;
	int c, r;

	while ((c = getopt(argc, argv, "t:h")) != -1) {
		switch (c) {
		case 't':
			secs = atof(optarg);
			break;
		default:
			fprintf(stderr, "usage: signrate [-t SECS]\n");
			return 2;
		}
	}
	if (secs <= 0)
		secs = 2.0;
	mbedtls_entropy_init(&ent);
	mbedtls_ctr_drbg_init(&drbg);
	if ((r = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent,
	    (const unsigned char *)"signrate", 8)) != 0)
		die("ctr_drbg_seed", r);
	ecdsa();
	ecdhe("ecdhe-x25519", MBEDTLS_ECP_DP_CURVE25519);
	ecdhe("ecdhe-p256", MBEDTLS_ECP_DP_SECP256R1);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&ent);
	return 0;
}
