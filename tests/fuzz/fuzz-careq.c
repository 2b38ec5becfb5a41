/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the CA service's request path up to signing (src/ca/server.c). The input is
 * fed to a request reader in two pieces split where its first two bytes say, as a TLS record
 * boundary would split it; a done request goes through ca_req_parse (route and headers), the
 * identity checks on the Amesh-Identity header and ca_csr_check of the body against the identity
 * the server would sign (the node's own ID for a join, whose token the fuzzer cannot forge). A body
 * that is not PEM is also checked wrapped in PEM (base64 of its bytes), which is what a client can
 * send too: so the fuzzer mutates the DER of a request directly, not only its base64.
 */
#include "config.h"

#include <mbedtls/base64.h>
#include <mbedtls/pk.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ca/proto.h"
#include "ca/req.h"
#include "core/err.h"
#include "core/log.h"
#include "telemetry/httpmsg.h"
#include "tls/ca.h"
#include "tls/cert.h"

#define TD "fuzz.example"
#define PEER "spiffe://" TD "/amesh/node/node-a"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A reason must be one line of printable ASCII. */
static void
check_why(const char *why)
{
	if (why[0] == '\0')
		abort();
	for (const char *p = why; *p != '\0'; p++)
		if (*p < 0x20 || *p > 0x7e)
			abort();
}

/* What the server runs before ca_sign: ca_csr_check of len bytes of pem for id. */
static void
check_one(const char *pem, size_t len, const char *id)
{
	mbedtls_pk_context pub;
	char why[512];
	int r;

	why[0] = '\0';
	r = ca_csr_check(pem, len, id, &pub, why, sizeof(why));
	if (r == 0) {
		if (!cert_key_is_p256(&pub))
			abort();
	} else if (r != AMESH_ERR_INVALID) {
		abort();
	} else {
		check_why(why);
	}
	mbedtls_pk_free(&pub);
}

#define BEGIN "-----BEGIN CERTIFICATE REQUEST-----\n"
#define END "-----END CERTIFICATE REQUEST-----\n"

/* The body as sent, and DER in a body wrapped as a PEM block of 64-character lines. */
static void
check_csr(const struct ca_req *cr, const char *id)
{
	static unsigned char b64[CA_CSR_MAX], pem[CA_CSR_MAX + 512];
	size_t n = 0, off;

	check_one(cr->http.body, cr->http.body_len, id);
	if (cr->http.body_len == 0 || cr->http.body_len > (CA_CSR_MAX - 256) / 4 * 3 ||
	    memmem(cr->http.body, cr->http.body_len, "-----", 5) != NULL)
		return;
	if (mbedtls_base64_encode(b64, sizeof(b64), &n, (const unsigned char *)cr->http.body,
	    cr->http.body_len) != 0)
		abort();
	memcpy(pem, BEGIN, strlen(BEGIN));
	off = strlen(BEGIN);
	for (size_t i = 0; i < n; i += 64) {
		size_t k = n - i < 64 ? n - i : 64;

		memcpy(pem + off, b64 + i, k);
		off += k;
		pem[off++] = '\n';
	}
	memcpy(pem + off, END, strlen(END));
	off += strlen(END);
	check_one((const char *)pem, off, id);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_msg m;
	static struct ca_req cr;
	char why[HTTP_MAX_HEAD + 64], td[SPIFFE_ID_MAX], ns[SPIFFE_ID_MAX], sa[SPIFFE_ID_MAX];
	char node[SPIFFE_ID_MAX];
	size_t split, took;
	int status;

	log_set_level(LOG_LVL_ERROR);
	if (size < 2)
		return 0;
	split = (size_t)data[0] << 8 | data[1];
	data += 2;
	size -= 2;
	split %= size + 1;
	http_msg_init(&m, true, CA_REQ_BODY_MAX);
	took = http_msg_feed(&m, (const char *)data, split);
	if (took > split)
		abort();
	if (!m.done && m.err_status == 0) {
		took = http_msg_feed(&m, (const char *)data + split, size - split);
		if (took > size - split)
			abort();
	}
	if (m.done && m.err_status != 0)
		abort();
	if (m.err_status != 0 && m.err_status != -1 && m.err_status != 400 &&
	    m.err_status != 413 && m.err_status != 431)
		abort();
	if (!m.done || m.err_status != 0)
		goto out;
	why[0] = '\0';
	status = ca_req_parse(&m, 86400, &cr, why, sizeof(why));
	if (status != 0) {
		if (status != 400 && status != 404 && status != 405)
			abort();
		goto out;
	}
	if (cr.http.body == NULL || strlen(cr.http.body) > cr.http.body_len)
		abort();
	switch (cr.kind) {
	case CA_REQ_JOIN:
		if (cr.token != NULL)
			check_csr(&cr, PEER);
		break;
	case CA_REQ_SIGN:
		if (cr.identity == NULL)
			break;
		if (cr.ttl_status == 0 && (cr.ttl == 0 || cr.ttl > 86400))
			abort();
		if (strcmp(cr.identity, PEER) == 0 ||
		    spiffe_split_node(cr.identity, td, sizeof(td), node, sizeof(node)) == 0) {
			/* a node renewing itself */
			check_csr(&cr, cr.identity);
		} else if (spiffe_split(cr.identity, td, ns, sa) == 0) {
			/* Past the trust domain and placement checks the server makes. */
			check_csr(&cr, cr.identity);
		}
		break;
	case CA_REQ_BUNDLE:
		break;
	}
out:
	http_msg_free(&m);
	return 0;
}
