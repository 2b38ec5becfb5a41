/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Load for `amesh ca serve` (bench/identity/run.sh): THREADS threads, each sending POST /v1/sign
 * requests one after another through the real client (ca/client.h's ca_client_request: one TLS
 * connection per request, the node certificate presented, the service checked against the bundle),
 * for SECS seconds of wall time. Each thread makes its own P-256 key and CSR with ca_csr_new for
 * the identity it asks for (spiffe://TD/ns/NS/sa/PREFIXi, i = thread % IDS), once, or for every
 * request with -f, as the identity agent does. Every answer must be 200 with a chain that parses;
 * the first other answer is printed.
 *
 *	caload -a ADDR -T TD -b BUNDLE -c NODE_CRT -k NODE_KEY [-n THREADS] [-d SECS]
 *	       [-N NS] [-p PREFIX] [-i IDS] [-l TTL] [-f]
 *
 * Prints "issued N errors E wall_s W per_s R" and per-request latency p50/p99 in ms.
 */
#include "config.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "ca/client.h"
#include "ca/proto.h"
#include "core/log.h"
#include "tls/ca.h"
#include "tls/cert.h"

#define MAX_LAT 1000000

static const char *addr, *td, *ns = "bench", *prefix = "w", *ttl = "3600";
static int threads = 4, ids = 4, fresh;
static double secs = 10;
static mbedtls_x509_crt bundle, chain;
static mbedtls_pk_context key;
static double deadline;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long issued, errors;
static double *lat;
static size_t nlat;

static double
mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void *
run(void *arg)
{
	int k = (int)(intptr_t)arg;
	char id[SPIFFE_ID_MAX], hid[SPIFFE_ID_MAX + 32], httl[64], why[2048], *csr = NULL;
	char *addrs[1] = { (char *)addr };
	const char *headers[4];
	struct ca_client_cfg cc = {
		.addrs = addrs, .naddrs = 1, .trust_domain = td, .bundle = &bundle, .chain = &chain,
		.key = &key, .timeout_ms = 10000,
	};
	mbedtls_pk_context ck;
	size_t csrlen = 0;

	snprintf(id, sizeof(id), "spiffe://%s/ns/%s/sa/%s%d", td, ns, prefix, k % ids);
	snprintf(hid, sizeof(hid), "%s: %s", CA_HDR_IDENTITY, id);
	snprintf(httl, sizeof(httl), "%s: %s", CA_HDR_TTL, ttl);
	headers[0] = hid;
	headers[1] = "Content-Type: " CA_TYPE_CSR;
	headers[2] = httl;
	headers[3] = NULL;
	mbedtls_pk_init(&ck);
	while (mono() < deadline) {
		struct ca_client_resp resp;
		mbedtls_x509_crt got;
		double t0;
		bool ok;

		if (csr == NULL || fresh) {
			free(csr);
			mbedtls_pk_free(&ck);
			mbedtls_pk_init(&ck);
			if (ca_csr_new(id, &ck, &csr, &csrlen, why, sizeof(why)) != 0) {
				fprintf(stderr, "caload: %s\n", why);
				exit(1);
			}
		}
		memset(&resp, 0, sizeof(resp));
		t0 = mono();
		if (ca_client_request(&cc, "POST", CA_PATH_SIGN, headers, csr, csrlen, &resp, why,
		    sizeof(why)) != 0) {
			pthread_mutex_lock(&mu);
			if (errors++ == 0)
				fprintf(stderr, "caload: %s\n", why);
			pthread_mutex_unlock(&mu);
			continue;
		}
		mbedtls_x509_crt_init(&got);
		ok = resp.status == 200 && mbedtls_x509_crt_parse(&got,
		    (const unsigned char *)resp.body, resp.body_len + 1) == 0;
		mbedtls_x509_crt_free(&got);
		pthread_mutex_lock(&mu);
		if (ok) {
			issued++;
			if (nlat < MAX_LAT)
				lat[nlat++] = (mono() - t0) * 1e3;
		} else if (errors++ == 0) {
			fprintf(stderr, "caload: %s answered %u: %.200s\n", resp.addr, resp.status,
			    resp.body ? resp.body : "");
		}
		pthread_mutex_unlock(&mu);
		ca_client_resp_free(&resp);
	}
	free(csr);
	mbedtls_pk_free(&ck);
	return NULL;
}

int
main(int argc, char **argv)
{
	const char *bpath = NULL, *cpath = NULL, *kpath = NULL;
	pthread_t *tid;
	char why[512];
	double t0, wall;
	int c;

	while ((c = getopt(argc, argv, "a:T:b:c:k:n:d:N:p:i:l:fh")) != -1) {
		switch (c) {
		case 'a': addr = optarg; break;
		case 'T': td = optarg; break;
		case 'b': bpath = optarg; break;
		case 'c': cpath = optarg; break;
		case 'k': kpath = optarg; break;
		case 'n': threads = atoi(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'N': ns = optarg; break;
		case 'p': prefix = optarg; break;
		case 'i': ids = atoi(optarg); break;
		case 'l': ttl = optarg; break;
		case 'f': fresh = 1; break;
		default:
			fprintf(stderr, "usage: caload -a ADDR -T TD -b BUNDLE -c NODE_CRT -k NODE_KEY "
			    "[-n THREADS] [-d SECS] [-N NS] [-p PREFIX] [-i IDS] [-l TTL] [-f]\n");
			return 2;
		}
	}
	if (addr == NULL || td == NULL || bpath == NULL || cpath == NULL || kpath == NULL ||
	    threads < 1 || ids < 1) {
		fprintf(stderr, "caload: -a, -T, -b, -c and -k are needed (-h)\n");
		return 2;
	}
	log_set_level(LOG_LVL_ERROR);
	mbedtls_pk_init(&key);
	if (cert_load_chain(bpath, &bundle, why, sizeof(why)) != 0 ||
	    cert_load_chain(cpath, &chain, why, sizeof(why)) != 0 ||
	    cert_load_key(kpath, &key, why, sizeof(why)) != 0) {
		fprintf(stderr, "caload: %s\n", why);
		return 1;
	}
	lat = calloc(MAX_LAT, sizeof(*lat));
	tid = calloc((size_t)threads, sizeof(*tid));
	if (lat == NULL || tid == NULL)
		return 1;
	t0 = mono();
	deadline = t0 + secs;
	for (int i = 0; i < threads; i++)
		pthread_create(&tid[i], NULL, run, (void *)(intptr_t)i);
	for (int i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	wall = mono() - t0;
	qsort(lat, nlat, sizeof(*lat), cmp);
	printf("issued %lu errors %lu wall_s %.2f per_s %.1f\n", issued, errors, wall,
	    (double)issued / wall);
	if (nlat > 0)
		printf("latency_ms p50 %.2f p99 %.2f max %.2f\n", lat[nlat / 2],
		    lat[nlat * 99 / 100], lat[nlat - 1]);
	return issued > 0 && errors == 0 ? 0 : 2;
}
