/* SPDX-License-Identifier: Apache-2.0 */
/* CTR-DRBG seeded from mbedTLS's entropy sources; mbedTLS's threading layer serialises access. */
#include "config.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "core/log.h"
#include "tls/rng.h"

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
seed(void)
{
	static const unsigned char pers[] = "amesh";
	int r;

	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	r = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, pers, sizeof(pers) - 1);
	if (r != 0)
		fatalx("cannot seed the random generator (mbedTLS error -0x%04x)", -r);
}

void *
rng_ctx(void)
{
	pthread_once(&once, seed);
	return &drbg;
}

int
rng_fill(void *ctx, unsigned char *out, size_t len)
{
	return mbedtls_ctr_drbg_random(ctx, out, len);
}

void
rng_traceparent(char *buf, size_t len)
{
	uint8_t r[24];
	char hex[49];

	rng_fill(rng_ctx(), r, sizeof(r));
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(hex + 2 * i, 3, "%02x", r[i]);
	snprintf(buf, len, "00-%.32s-%.16s-01", hex, hex + 32);
}
