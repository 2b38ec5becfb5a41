/* SPDX-License-Identifier: Apache-2.0 */
/* The mbedTLS configurations of HBONE and of the CA service (see tls.h). */
#include "config.h"

#include <mbedtls/ssl.h>

#include "tls/rng.h"
#include "tls/tls.h"

/* Server preference order with mbedTLS records: CHACHA20-POLY1305 is mbedTLS's fastest here (its
 * AES-GCM has no AES-NI-accelerated GHASH). */
static const int suites[] = {
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	0,
};
/* With record offload (OpenSSL's AEADs): AES-256-GCM is the fastest on CPUs with AES-NI, VAES and
 * PCLMULQDQ (bench/aead: ~4.4 GB/s sealing against ~4.0 for CHACHA20-POLY1305). */
static const int suites_offload[] = {
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	0,
};
static const mbedtls_ecp_group_id curves[] = {
	MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE,
};
static const int sig_hashes[] = { MBEDTLS_MD_SHA256, MBEDTLS_MD_SHA384, MBEDTLS_MD_NONE };
static const char *alpn_h2[] = { "h2", NULL };
/* http/1.1 too, so that curl and openssl s_client can talk to the CA service by hand. */
static const char *alpn_ca[] = { TLS_ALPN_CA, "http/1.1", NULL };

static int
conf_init(mbedtls_ssl_config *conf, int endpoint, mbedtls_x509_crt *chain,
    mbedtls_pk_context *key, mbedtls_x509_crt *bundle, const char **alpn, int authmode)
{
	int r;

	mbedtls_ssl_config_init(conf);
	r = mbedtls_ssl_config_defaults(conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
	    MBEDTLS_SSL_PRESET_DEFAULT);
	if (r != 0)
		return r;
	mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(conf, tls_record_offload() ? suites_offload : suites);
	mbedtls_ssl_conf_export_keys_ext_cb(conf, tls_export_keys, NULL);
	mbedtls_ssl_conf_curves(conf, curves);
	mbedtls_ssl_conf_sig_hashes(conf, sig_hashes);
	mbedtls_ssl_conf_authmode(conf, authmode);
	mbedtls_ssl_conf_ca_chain(conf, bundle, NULL);
	mbedtls_ssl_conf_rng(conf, rng_fill, rng_ctx());
	mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	mbedtls_ssl_conf_session_tickets(conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
	r = mbedtls_ssl_conf_alpn_protocols(conf, alpn);
	if (r != 0)
		return r;
	if (chain == NULL)
		return 0;
	return mbedtls_ssl_conf_own_cert(conf, chain, key);
}

int
tls_conf_init(mbedtls_ssl_config *conf, int endpoint, mbedtls_x509_crt *chain,
    mbedtls_pk_context *key, mbedtls_x509_crt *bundle)
{
	return conf_init(conf, endpoint, chain, key, bundle, alpn_h2, MBEDTLS_SSL_VERIFY_REQUIRED);
}

int
tls_conf_init_ca(mbedtls_ssl_config *conf, int endpoint, mbedtls_x509_crt *chain,
    mbedtls_pk_context *key, mbedtls_x509_crt *bundle, int authmode)
{
	return conf_init(conf, endpoint, chain, key, bundle, alpn_ca, authmode);
}
