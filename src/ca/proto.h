/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CA service's protocol (amesh-ca(8) PROTOCOL), shared by the server and its clients: TLS 1.2
 * with ALPN "amesh-ca/1" on port 15012, one HTTP/1.1 request per connection.
 *
 *   POST /v1/join    Authorization: Bearer TOKEN; body: PEM CSR for spiffe://TD/amesh/node/NODE
 *                    (no client certificate needed: the token is the credential)
 *   POST /v1/sign    client certificate: a node's; Amesh-Identity: the SPIFFE ID wanted (a workload
 *                    or waypoint the registry places on that node, or the node itself to renew);
 *                    Amesh-TTL: seconds (optional, capped by the CA); body: PEM CSR for that ID
 *   GET  /v1/bundle  the trust bundle (roots), PEM
 *
 * 200 answers a PEM chain (leaf, then the intermediate) as application/pem-certificate-chain; an
 * error is a status (400 bad request or CSR, 401 bad token or no node certificate, 403 not
 * allowed, 413 too large, 429 busy, 500, 503) with a one-line text/plain reason.
 */
#ifndef AMESH_CA_PROTO_H
#define AMESH_CA_PROTO_H

#define CA_DEFAULT_PORT 15012
#define CA_PATH_JOIN "/v1/join"
#define CA_PATH_SIGN "/v1/sign"
#define CA_PATH_BUNDLE "/v1/bundle"
#define CA_HDR_IDENTITY "Amesh-Identity"
#define CA_HDR_TTL "Amesh-TTL"
#define CA_TYPE_CSR "application/pkcs10"
#define CA_TYPE_CHAIN "application/pem-certificate-chain"
/* Largest request body (a P-256 CSR is under 1 KiB) and response body (a chain or a bundle). */
#define CA_REQ_BODY_MAX 16384
#define CA_RESP_BODY_MAX 65536

#endif
