/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for the CA of issue 14 in tls/ca.c, tls/csr.c and tls/cert.c: node and CA SPIFFE IDs,
 * fingerprints, intermediates and their directories, ca_sign's leaves, certificate requests. */
#include "config.h"

#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_csr.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "runner.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define TD "cluster.local"
#define WL_ID "spiffe://cluster.local/ns/default/sa/reviews"
#define NODE_ID "spiffe://cluster.local/amesh/node/node-a"
#define CA_ID "spiffe://cluster.local/amesh/ca"
#define CSR_BEGIN "-----BEGIN CERTIFICATE REQUEST-----\n"
#define CSR_END "-----END CERTIFICATE REQUEST-----\n"

static void
want_reason(int r, const char *why, const char *sub)
{
	if (r == 0 || strstr(why, sub) == NULL) {
		fprintf(stderr, "got %d '%s', want an error containing '%s'\n", r, why, sub);
		ASSERT(!"unexpected result");
	}
}

static struct ca *
root_ca(time_t now, unsigned days)
{
	struct ca *ca;
	char why[512];

	if (ca_create(TD, days, now, &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "ca_create: %s\n", why);
		ASSERT(!"ca_create failed");
	}
	return ca;
}

static struct ca *
intermediate(struct ca *root, const char *name, unsigned days, time_t now)
{
	struct ca *ca = NULL;
	char why[512];

	if (ca_create_intermediate(root, name, days, now, &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "ca_create_intermediate: %s\n", why);
		ASSERT(!"ca_create_intermediate failed");
	}
	return ca;
}

static int
count_crts(const mbedtls_x509_crt *c)
{
	int n = 0;

	for (; c != NULL && c->raw.p != NULL; c = c->next)
		n++;
	return n;
}

static bool
same_crt(const mbedtls_x509_crt *a, const mbedtls_x509_crt *b)
{
	return a->raw.len == b->raw.len && memcmp(a->raw.p, b->raw.p, a->raw.len) == 0;
}

static bool
has_eku(mbedtls_x509_crt *c, const char *oid, size_t len)
{
	return mbedtls_x509_crt_check_extended_key_usage(c, oid, len) == 0;
}

TEST(spiffe_node_forms)
{
	static const char *const bad_nodes[] = { "", ".", "..", "a/b", "a b", "é", "a\n" };
	static const char *const not_node[] = {
		"spiffe://td/amesh/node/", "spiffe://td/amesh/node/a/b", "spiffe://td/amesh/node/..",
		"spiffe://td/amesh/nodes/a", "spiffe://td/amesh/ca", "spiffe://td/ns/a/sa/b",
		"spiffe:///amesh/node/a", "spiffe://TD/amesh/node/a", "http://td/amesh/node/a",
		"spiffe://td/amesh/node/a?x", "spiffe://td//amesh/node/a",
	};
	char buf[256], td[64], node[64], long_node[80];

	ASSERT_EQ(spiffe_format_node(buf, sizeof(buf), TD, "node-a"), 0);
	ASSERT_STREQ(buf, NODE_ID);
	ASSERT_EQ(spiffe_format_ca(buf, sizeof(buf), TD), 0);
	ASSERT_STREQ(buf, CA_ID);
	for (size_t i = 0; i < sizeof(bad_nodes) / sizeof(bad_nodes[0]); i++)
		ASSERT_EQ(spiffe_format_node(buf, sizeof(buf), TD, bad_nodes[i]), AMESH_ERR_INVALID);
	memset(long_node, 'n', 64);
	long_node[64] = '\0';
	ASSERT_EQ(spiffe_format_node(buf, sizeof(buf), TD, long_node), AMESH_ERR_INVALID);
	long_node[63] = '\0';
	ASSERT_EQ(spiffe_format_node(buf, sizeof(buf), TD, long_node), 0);
	ASSERT_EQ(spiffe_format_node(buf, 20, TD, "node-a"), AMESH_ERR_TOOLONG);
	ASSERT_EQ(spiffe_format_node(buf, sizeof(buf), "Bad TD", "a"), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_format_ca(buf, sizeof(buf), ""), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_format_ca(buf, 10, TD), AMESH_ERR_TOOLONG);

	ASSERT_EQ(spiffe_split_node(NODE_ID, td, sizeof(td), node, sizeof(node)), 0);
	ASSERT_STREQ(td, TD);
	ASSERT_STREQ(node, "node-a");
	ASSERT_EQ(spiffe_split_node(NODE_ID, NULL, 0, NULL, 0), 0);
	ASSERT_EQ(spiffe_split_node(NODE_ID, td, 5, node, sizeof(node)), AMESH_ERR_TOOLONG);
	ASSERT_EQ(spiffe_split_node(NODE_ID, td, sizeof(td), node, 6), AMESH_ERR_TOOLONG);
	ASSERT_EQ(spiffe_split_node(NULL, td, sizeof(td), node, sizeof(node)), AMESH_ERR_INVALID);
	for (size_t i = 0; i < sizeof(not_node) / sizeof(not_node[0]); i++)
		if (spiffe_split_node(not_node[i], td, sizeof(td), node, sizeof(node)) !=
		    AMESH_ERR_INVALID) {
			fprintf(stderr, "taken for a node ID: '%s'\n", not_node[i]);
			ASSERT(!"not a node ID accepted");
		}
	/* What the HBONE verify uses never takes a node's or the CA's ID for a workload's. */
	ASSERT_EQ(spiffe_split(NODE_ID, NULL, NULL, NULL), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_split(CA_ID, NULL, NULL, NULL), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_split("spiffe://cluster.local/amesh/node/ns/sa/b", NULL, NULL, NULL),
	    AMESH_ERR_INVALID);
	/* And no workload ID is a node ID, even in a namespace named amesh. */
	ASSERT_EQ(spiffe_split_node("spiffe://td/ns/amesh/sa/node", NULL, 0, NULL, 0),
	    AMESH_ERR_INVALID);

	ASSERT_EQ(spiffe_trust_domain(NODE_ID, td, sizeof(td)), 0);
	ASSERT_STREQ(td, TD);
	ASSERT_EQ(spiffe_trust_domain("spiffe://td", td, sizeof(td)), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_trust_domain("spiffe://td/", td, sizeof(td)), AMESH_ERR_INVALID);
	ASSERT_EQ(spiffe_trust_domain(WL_ID, td, 4), AMESH_ERR_TOOLONG);
}

TEST(cert_fingerprint_form)
{
	struct ca *a = root_ca(time(NULL), 10), *b = root_ca(time(NULL), 10);
	char fa[CERT_FINGERPRINT_LEN], fb[CERT_FINGERPRINT_LEN], want[CERT_FINGERPRINT_LEN];
	unsigned char h[32];
	mbedtls_x509_crt empty;

	ASSERT_EQ(cert_fingerprint(&a->crt, fa, sizeof(fa)), 0);
	ASSERT_EQ(strlen(fa), CERT_FINGERPRINT_LEN - 1);
	ASSERT(strncmp(fa, "sha256:", 7) == 0);
	ASSERT(strspn(fa + 7, "0123456789abcdef") == 64);
	/* The SHA-256 of the DER, nothing else. */
	ASSERT_EQ(mbedtls_sha256_ret(a->crt.raw.p, a->crt.raw.len, h, 0), 0);
	strcpy(want, "sha256:");
	for (int i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", h[i]);
	ASSERT_STREQ(fa, want);
	ASSERT_EQ(cert_fingerprint(&b->crt, fb, sizeof(fb)), 0);
	ASSERT(strcmp(fa, fb) != 0);
	ASSERT_EQ(cert_fingerprint(&a->crt, fb, CERT_FINGERPRINT_LEN - 1), AMESH_ERR_TOOLONG);
	mbedtls_x509_crt_init(&empty);
	ASSERT_EQ(cert_fingerprint(&empty, fb, sizeof(fb)), AMESH_ERR_INVALID);
	ca_free(a);
	ca_free(b);
}

TEST(ca_intermediate_round_trip)
{
	time_t now = time(NULL);
	struct ca *root = root_ca(now, 365), *im, *loaded = NULL, *im2 = NULL;
	struct ca_issued *is = NULL;
	mbedtls_x509_crt chain;
	char dir[512], path[600], why[512], id[SPIFFE_ID_MAX];
	struct stat st;

	ASSERT(root->is_root);
	ASSERT_STREQ(root->name, "");
	ASSERT(same_crt(&root->roots, &root->crt));
	/* A root leaves room for one intermediate below it. */
	ASSERT_EQ(root->crt.max_pathlen, 2);

	im = intermediate(root, "ca-1", 30, now);
	ASSERT(!im->is_root);
	ASSERT_STREQ(im->name, "ca-1");
	ASSERT_STREQ(im->trust_domain, TD);
	ASSERT(im->crt.ca_istrue);
	ASSERT_EQ(im->crt.max_pathlen, 1); /* pathlen 0 */
	ASSERT_EQ(im->crt.key_usage, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN);
	ASSERT(mbedtls_x509_dn_gets(path, sizeof(path), &im->crt.subject) > 0);
	ASSERT_STREQ(path, "CN=amesh intermediate CA ca-1, O=cluster.local");
	ASSERT_EQ(cert_not_before(&im->crt), now - CA_BACKDATE_SECONDS);
	ASSERT_EQ(cert_not_after(&im->crt), now + 30 * 86400);
	ASSERT(same_crt(&im->roots, &root->crt) && count_crts(&im->roots) == 1);
	ASSERT(mbedtls_pk_check_pair(&im->crt.pk, &im->key) == 0);
	ASSERT_EQ(cert_verify_chain(&im->crt, &root->roots, &now, why, sizeof(why)), 0);

	/* Never longer than the root. */
	im2 = intermediate(root, "long", CA_DAYS_MAX, now);
	ASSERT_EQ(cert_not_after(&im2->crt), cert_not_after(&root->crt));
	/* Refusals: an intermediate signs no CA, bad names and days, an expired root, a root made
	 * with pathlen 0 (before intermediates). */
	want_reason(ca_create_intermediate(im, "x", 1, now, &loaded, why, sizeof(why)), why,
	    "signed by a root, not by the intermediate 'ca-1'");
	ASSERT(loaded == NULL);
	want_reason(ca_create_intermediate(root, "a/b", 1, now, &loaded, why, sizeof(why)), why,
	    "'a/b' is not a valid name");
	want_reason(ca_create_intermediate(root, "x", 0, now, &loaded, why, sizeof(why)), why,
	    "days must be");
	want_reason(ca_create_intermediate(root, "x", 1, cert_not_after(&root->crt) + 1, &loaded,
	    why, sizeof(why)), why, "the root expired at");
	root->crt.max_pathlen = 1;
	want_reason(ca_create_intermediate(root, "x", 1, now, &loaded, why, sizeof(why)), why,
	    "pathlen 0 allows no intermediate");
	root->crt.max_pathlen = 2;

	/* Saved: ca.key 0600, ca.crt and bundle.crt 0644; nothing else. */
	snprintf(dir, sizeof(dir), "%s/im", test_tmpdir());
	ASSERT_EQ(ca_save(im, dir, why, sizeof(why)), 0);
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
	snprintf(path, sizeof(path), "%s/bundle.crt", dir);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
	snprintf(path, sizeof(path),
	    "test \"$(ls -A '%s')\" = \"$(printf 'bundle.crt\\nca.crt\\nca.key')\"", dir);
	ASSERT(system(path) == 0);
	want_reason(ca_save(im2, dir, why, sizeof(why)), why, "/im/ca.key: already exists");

	ASSERT_EQ(ca_load(dir, &loaded, why, sizeof(why)), 0);
	ASSERT(!loaded->is_root);
	ASSERT_STREQ(loaded->name, "ca-1");
	ASSERT_STREQ(loaded->trust_domain, TD);
	ASSERT(same_crt(&loaded->crt, &im->crt));
	ASSERT(same_crt(&loaded->roots, &root->crt) && count_crts(&loaded->roots) == 1);

	/* ca issue from an intermediate: the chain is the leaf and the intermediate, never the root;
	 * it checks against the root alone. */
	ASSERT_EQ(ca_issue(loaded, "default", "reviews", 10, now, &is, why, sizeof(why)), 0);
	mbedtls_x509_crt_init(&chain);
	ASSERT_EQ(mbedtls_x509_crt_parse(&chain, (const unsigned char *)is->chain_pem,
	    is->chain_len + 1), 0);
	ASSERT_EQ(count_crts(&chain), 2);
	ASSERT(same_crt(chain.next, &im->crt));
	ASSERT_EQ(cert_check_identity(&chain, NULL, &root->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)), 0);
	ASSERT_STREQ(id, WL_ID);
	ASSERT(mbedtls_x509_dn_gets(path, sizeof(path), &chain.subject) > 0);
	ASSERT_STREQ(path, "CN=reviews, OU=default, O=cluster.local");
	/* Cut at the intermediate's notAfter, not the root's. */
	ca_issued_free(is);
	ASSERT_EQ(ca_issue(loaded, "default", "reviews", 100, now, &is, why, sizeof(why)), 0);
	ASSERT_EQ(is->not_after, cert_not_after(&im->crt));
	mbedtls_x509_crt_free(&chain);
	ca_issued_free(is);
	ca_free(loaded);
	ca_free(im2);
	ca_free(im);
	ca_free(root);
}

/* Replaces dir/name with the PEM of the first max certificates of list. */
static void
put_crts(const char *dir, const char *name, const mbedtls_x509_crt *list, size_t max)
{
	char path[600], *pem;
	size_t len;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	ASSERT_EQ(cert_list_pem(list, max, &pem, &len), 0);
	ASSERT_EQ(ca_write_file(path, pem, len, 0644, true, NULL, 0), 0);
	free(pem);
}

TEST(ca_load_refusals)
{
	time_t now = time(NULL);
	struct ca *root = root_ca(now, 365), *other = root_ca(now, 365), *im, *loaded = NULL;
	char dir[512], rdir[512], path[600], why[768];

	im = intermediate(root, "ca-1", 30, now);
	snprintf(dir, sizeof(dir), "%s/im", test_tmpdir());
	snprintf(rdir, sizeof(rdir), "%s/root", test_tmpdir());
	ASSERT_EQ(ca_save(im, dir, why, sizeof(why)), 0);
	ASSERT_EQ(ca_save(root, rdir, why, sizeof(why)), 0);

	/* bundle.crt holds another root: ca.crt does not chain to it. */
	put_crts(dir, CA_BUNDLE_FILE, &other->crt, 1);
	want_reason(ca_load(dir, &loaded, why, sizeof(why)), why, "does not chain to a root of");
	ASSERT(loaded == NULL);
	/* Both roots (a root rotation): it chains to one of them. */
	ASSERT_EQ(mbedtls_x509_crt_parse_der(&other->roots, root->crt.raw.p, root->crt.raw.len), 0);
	put_crts(dir, CA_BUNDLE_FILE, &other->roots, 2);
	ASSERT_EQ(ca_load(dir, &loaded, why, sizeof(why)), 0);
	ASSERT_EQ(count_crts(&loaded->roots), 2);
	ca_free(loaded);
	/* A bundle holding an intermediate. */
	put_crts(dir, CA_BUNDLE_FILE, &im->crt, 1);
	want_reason(ca_load(dir, &loaded, why, sizeof(why)), why,
	    "bundle.crt: certificate 1 is not a self-signed root CA");
	/* An intermediate without its bundle. */
	snprintf(path, sizeof(path), "%s/%s", dir, CA_BUNDLE_FILE);
	ASSERT(unlink(path) == 0);
	want_reason(ca_load(dir, &loaded, why, sizeof(why)), why, "not self-signed, and");
	/* A root's directory with a bundle.crt. */
	put_crts(rdir, CA_BUNDLE_FILE, &root->crt, 1);
	want_reason(ca_load(rdir, &loaded, why, sizeof(why)), why, "a self-signed root, but");
	/* ca.crt with the chain in it. */
	put_crts(dir, CA_BUNDLE_FILE, &root->crt, 1);
	ASSERT_EQ(mbedtls_x509_crt_parse_der(&im->crt, root->crt.raw.p, root->crt.raw.len), 0);
	put_crts(dir, CA_CRT_FILE, &im->crt, 2);
	want_reason(ca_load(dir, &loaded, why, sizeof(why)), why, "holds more than one certificate");
	/* Back to the intermediate alone: it loads again. */
	put_crts(dir, CA_CRT_FILE, &im->crt, 1);
	ASSERT_EQ(ca_load(dir, &loaded, why, sizeof(why)), 0);
	ca_free(loaded);
	/* A key that is not ca.crt's. */
	put_crts(dir, CA_CRT_FILE, &other->crt, 1);
	want_reason(ca_load(dir, &loaded, why, sizeof(why)), why, "does not match");
	ca_free(im);
	ca_free(other);
	ca_free(root);
}

/* A new key on curve (P-256 or P-384). */
static void
ec_key(mbedtls_pk_context *k, mbedtls_ecp_group_id curve)
{
	mbedtls_pk_init(k);
	ASSERT_EQ(mbedtls_pk_setup(k, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
	ASSERT_EQ(mbedtls_ecp_gen_key(curve, mbedtls_pk_ec(*k), rng_fill, rng_ctx()), 0);
}

/* Signs pub from ca and parses the chain into out; returns ca_sign's result. */
static int
sign_into(struct ca *ca, mbedtls_pk_context *pub, const char *id, enum ca_leaf_kind kind,
    uint64_t ttl, time_t now, mbedtls_x509_crt *out, time_t *nb, time_t *na, char *serial,
    char *why, size_t whylen)
{
	char *pem = (char *)"x";
	size_t len = 1;
	int r;

	mbedtls_x509_crt_init(out);
	r = ca_sign(ca, pub, id, kind, ttl, now, &pem, &len, nb, na, serial, why, whylen);
	if (r != 0) {
		ASSERT(pem == NULL && len == 0);
		return r;
	}
	ASSERT_EQ(strlen(pem), len);
	ASSERT_EQ(mbedtls_x509_crt_parse(out, (const unsigned char *)pem, len + 1), 0);
	free(pem);
	return 0;
}

TEST(ca_sign_leaves)
{
	time_t now = time(NULL), nb, na;
	struct ca *root = root_ca(now, 365), *im = intermediate(root, "ca-1", 30, now);
	mbedtls_x509_crt c;
	mbedtls_pk_context k, k384;
	uint32_t flags;
	char why[768], id[SPIFFE_ID_MAX], serial[41], serial2[41], sub[256];

	ec_key(&k, MBEDTLS_ECP_DP_SECP256R1);
	ec_key(&k384, MBEDTLS_ECP_DP_SECP384R1);

	/* A workload from the intermediate: the leaf then the intermediate; it verifies against
	 * the roots and passes the identity store's check. */
	ASSERT_EQ(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, 3600, now, &c, &nb, &na, serial, why,
	    sizeof(why)), 0);
	ASSERT_EQ(count_crts(&c), 2);
	ASSERT(same_crt(c.next, &im->crt));
	ASSERT_EQ(mbedtls_x509_crt_verify(&c, &im->roots, NULL, NULL, &flags, NULL, NULL), 0);
	ASSERT_EQ(cert_check_identity(&c, &k, &im->roots, TD, now, id, sizeof(id), why,
	    sizeof(why)), 0);
	ASSERT_STREQ(id, WL_ID);
	ASSERT(has_eku(&c, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
	ASSERT(has_eku(&c, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
	ASSERT(!c.ca_istrue);
	ASSERT_EQ(c.key_usage, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
	ASSERT(mbedtls_x509_dn_gets(sub, sizeof(sub), &c.subject) > 0);
	ASSERT_STREQ(sub, "O=cluster.local");
	/* Backdated for skew; the TTL counts from now. */
	ASSERT_EQ(nb, now - CA_BACKDATE_SECONDS);
	ASSERT_EQ(cert_not_before(&c), nb);
	ASSERT_EQ(na, now + 3600);
	ASSERT_EQ(cert_not_after(&c), na);
	/* The serial: 128 random bits, in lowercase hex. */
	ASSERT_EQ(c.serial.len, 16);
	ASSERT_EQ(strlen(serial), 32);
	ASSERT(strspn(serial, "0123456789abcdef") == 32);
	for (int i = 0; i < 16; i++) {
		char b[3];

		snprintf(b, sizeof(b), "%02x", c.serial.p[i]);
		ASSERT(memcmp(serial + 2 * i, b, 2) == 0);
	}
	mbedtls_x509_crt_free(&c);
	ASSERT_EQ(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, 3600, now, &c, NULL, NULL, serial2,
	    why, sizeof(why)), 0);
	ASSERT(strcmp(serial, serial2) != 0);
	mbedtls_x509_crt_free(&c);

	/* A node: clientAuth only, and no workload identity. */
	ASSERT_EQ(sign_into(im, &k, NODE_ID, CA_LEAF_NODE, 3600, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), 0);
	ASSERT_EQ(mbedtls_x509_crt_verify(&c, &im->roots, NULL, NULL, &flags, NULL, NULL), 0);
	ASSERT(has_eku(&c, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
	ASSERT(!has_eku(&c, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), 0);
	ASSERT_STREQ(id, NODE_ID);
	want_reason(cert_check_identity(&c, &k, &im->roots, TD, now, NULL, 0, why, sizeof(why)),
	    why, "is not of the form");
	mbedtls_x509_crt_free(&c);

	/* The CA service: serverAuth only. */
	ASSERT_EQ(sign_into(root, &k, CA_ID, CA_LEAF_SERVER, 3600, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), 0);
	ASSERT_EQ(count_crts(&c), 2);
	ASSERT(same_crt(c.next, &root->crt));
	ASSERT_EQ(mbedtls_x509_crt_verify(&c, &root->roots, NULL, NULL, &flags, NULL, NULL), 0);
	ASSERT(has_eku(&c, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)));
	ASSERT(!has_eku(&c, MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)));
	want_reason(cert_check_identity(&c, &k, &root->roots, TD, now, NULL, 0, why, sizeof(why)),
	    why, "is not of the form");
	mbedtls_x509_crt_free(&c);

	/* Refusals: an ID of another form or trust domain, a key that is not P-256, a TTL out of
	 * range, an expired CA. */
	want_reason(sign_into(im, &k, NODE_ID, CA_LEAF_WORKLOAD, 60, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), why, "is not a workload ID");
	want_reason(sign_into(im, &k, WL_ID, CA_LEAF_NODE, 60, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), why, "is not a node ID");
	want_reason(sign_into(im, &k, NODE_ID, CA_LEAF_SERVER, 60, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), why, "is not the CA's ID spiffe://cluster.local/amesh/ca");
	want_reason(sign_into(im, &k, "spiffe://other.td/ns/a/sa/b", CA_LEAF_WORKLOAD, 60, now, &c,
	    NULL, NULL, NULL, why, sizeof(why)), why,
	    "trust domain 'other.td' is not the CA's 'cluster.local'");
	want_reason(sign_into(im, &k, "spiffe://other.td/amesh/node/a", CA_LEAF_NODE, 60, now, &c,
	    NULL, NULL, NULL, why, sizeof(why)), why, "trust domain 'other.td'");
	want_reason(sign_into(im, &k384, WL_ID, CA_LEAF_WORKLOAD, 60, now, &c, NULL, NULL, NULL,
	    why, sizeof(why)), why, "the key is ECDSA P-384, want ECDSA P-256");
	want_reason(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, 0, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), why, "TTL must be");
	want_reason(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, (uint64_t)CA_DAYS_MAX * 86400 + 1,
	    now, &c, NULL, NULL, NULL, why, sizeof(why)), why, "TTL must be");
	want_reason(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, 60, cert_not_after(&im->crt) + 1, &c,
	    NULL, NULL, NULL, why, sizeof(why)), why, "the CA expired at");
	mbedtls_pk_free(&k384);
	mbedtls_pk_free(&k);
	ca_free(im);
	ca_free(root);
}

TEST(ca_sign_ttl_cut)
{
	time_t now = time(NULL), na;
	struct ca *root = root_ca(now, 1), *im, *im2 = NULL;
	mbedtls_x509_crt c;
	mbedtls_pk_context k;
	char why[512];

	ec_key(&k, MBEDTLS_ECP_DP_SECP256R1);
	/* Asked for a week from a root of one day: cut at the root's notAfter. */
	ASSERT_EQ(sign_into(root, &k, WL_ID, CA_LEAF_WORKLOAD, 7 * 86400, now, &c, NULL, &na, NULL,
	    why, sizeof(why)), 0);
	ASSERT_EQ(na, cert_not_after(&root->crt));
	ASSERT_EQ(na, now + 86400);
	mbedtls_x509_crt_free(&c);
	/* From an intermediate that ends in an hour, with its root. */
	ca_free(root);
	root = root_ca(now - 86400 + 3600, 1);
	im = intermediate(root, "short", 30, now);
	ASSERT_EQ(cert_not_after(&im->crt), now + 3600);
	ASSERT_EQ(sign_into(im, &k, NODE_ID, CA_LEAF_NODE, 86400, now, &c, NULL, &na, NULL, why,
	    sizeof(why)), 0);
	ASSERT_EQ(na, now + 3600);
	mbedtls_x509_crt_free(&c);
	/* A signing time in the past (a test clock): still backdated from that time. */
	ASSERT_EQ(sign_into(root, &k, WL_ID, CA_LEAF_WORKLOAD, 60, now - 100, &c, NULL, NULL, NULL,
	    why, sizeof(why)), 0);
	ASSERT_EQ(cert_not_before(&c), now - 100 - CA_BACKDATE_SECONDS);
	ASSERT_EQ(cert_not_after(&c), now - 40);
	mbedtls_x509_crt_free(&c);
	/* Not before the CA itself. */
	want_reason(sign_into(im, &k, WL_ID, CA_LEAF_WORKLOAD, 60, cert_not_before(&im->crt) - 1,
	    &c, NULL, NULL, NULL, why, sizeof(why)), why, "the CA is not valid before");
	want_reason(ca_create_intermediate(root, "x", 1, cert_not_before(&root->crt) - 1, &im2, why,
	    sizeof(why)), why, "the root is not valid before");
	mbedtls_pk_free(&k);
	ca_free(im);
	ca_free(root);
}

TEST(ca_bundle_pem_roots)
{
	time_t now = time(NULL);
	struct ca *root = root_ca(now, 10), *im = intermediate(root, "ca-1", 5, now);
	mbedtls_x509_crt b;
	char *pem = NULL;
	size_t len = 0;

	ASSERT_EQ(ca_bundle_pem(im, &pem, &len), 0);
	ASSERT_EQ(strlen(pem), len);
	mbedtls_x509_crt_init(&b);
	ASSERT_EQ(mbedtls_x509_crt_parse(&b, (const unsigned char *)pem, len + 1), 0);
	ASSERT_EQ(count_crts(&b), 1);
	ASSERT(same_crt(&b, &root->crt));
	mbedtls_x509_crt_free(&b);
	free(pem);
	ca_free(im);
	ca_free(root);
}

struct signer {
	struct ca *ca;
	mbedtls_pk_context *pub;
	int failures;
};

static void *
sign_many(void *arg)
{
	struct signer *sg = arg;
	time_t now = time(NULL);

	for (int i = 0; i < 25; i++) {
		mbedtls_x509_crt c;
		char why[512];
		uint32_t flags;

		if (sign_into(sg->ca, sg->pub, i % 2 ? WL_ID : NODE_ID,
		    i % 2 ? CA_LEAF_WORKLOAD : CA_LEAF_NODE, 600, now, &c, NULL, NULL, NULL, why,
		    sizeof(why)) != 0 ||
		    mbedtls_x509_crt_verify(&c, &sg->ca->roots, NULL, NULL, &flags, NULL, NULL) != 0)
			sg->failures++;
		mbedtls_x509_crt_free(&c);
	}
	return NULL;
}

/* One CA signs from several threads at once (a server's worker pool). */
TEST(ca_sign_threads)
{
	struct ca *root = root_ca(time(NULL), 10), *im = intermediate(root, "ca-1", 5, time(NULL));
	mbedtls_pk_context k;
	struct signer sg[4];
	pthread_t t[4];

	ec_key(&k, MBEDTLS_ECP_DP_SECP256R1);
	for (int i = 0; i < 4; i++) {
		sg[i] = (struct signer){ .ca = im, .pub = &k };
		ASSERT_EQ(pthread_create(&t[i], NULL, sign_many, &sg[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
		ASSERT_EQ(sg[i].failures, 0);
	}
	mbedtls_pk_free(&k);
	ca_free(im);
	ca_free(root);
}

/* --- Certificate requests ---------------------------------------------------------------- */

struct gn {
	int tag; /* GeneralName tag number: 2 DNS, 6 URI, 7 IP */
	const char *value;
};

/* DER of GeneralNames holding names, at the end of buf; returns its length. */
static size_t
general_names(const struct gn *names, size_t n, unsigned char *buf, size_t size,
    unsigned char **start)
{
	unsigned char *p = buf + size;
	int len = 0;

	for (size_t i = n; i-- > 0;) {
		size_t vl = strlen(names[i].value);

		len += mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)names[i].value,
		    vl);
		len += mbedtls_asn1_write_len(&p, buf, vl);
		len += mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | names[i].tag);
	}
	len += mbedtls_asn1_write_len(&p, buf, (size_t)len);
	len += mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
	*start = p;
	return (size_t)len;
}

/* A PEM request signed by key, with the given SAN names (none: no SAN extension) and, if
 * extra_oid, one more extension. Returns malloc'd PEM. */
static char *
make_csr(mbedtls_pk_context *key, const struct gn *names, size_t n, const char *extra_oid,
    size_t extra_len)
{
	mbedtls_x509write_csr w;
	unsigned char ext[512], *start, *pem = malloc(8192);
	static const unsigned char null_ext[] = { 0x05, 0x00 };
	size_t len;

	ASSERT(pem != NULL);
	mbedtls_x509write_csr_init(&w);
	mbedtls_x509write_csr_set_key(&w, key);
	mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
	ASSERT_EQ(mbedtls_x509write_csr_set_subject_name(&w, "CN=test,O=" TD), 0);
	if (n > 0) {
		len = general_names(names, n, ext, sizeof(ext), &start);
		ASSERT_EQ(mbedtls_x509write_csr_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
		    MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), start, len), 0);
	}
	if (extra_oid != NULL)
		ASSERT_EQ(mbedtls_x509write_csr_set_extension(&w, extra_oid, extra_len, null_ext,
		    sizeof(null_ext)), 0);
	ASSERT_EQ(mbedtls_x509write_csr_pem(&w, pem, 8192, rng_fill, rng_ctx()), 0);
	mbedtls_x509write_csr_free(&w);
	return (char *)pem;
}

/* ca_csr_check of pem for want; on failure *pub must be empty. */
static int
check(const char *pem, size_t len, const char *want, char *why, size_t whylen)
{
	mbedtls_pk_context pub;
	int r;

	why[0] = '\0';
	r = ca_csr_check(pem, len, want, &pub, why, whylen);
	if (r != 0)
		ASSERT_EQ(mbedtls_pk_get_type(&pub), MBEDTLS_PK_NONE);
	mbedtls_pk_free(&pub);
	return r;
}

TEST(csr_round_trip)
{
	time_t now = time(NULL);
	struct ca *root = root_ca(now, 10), *im = intermediate(root, "ca-1", 5, now);
	mbedtls_pk_context key, pub;
	mbedtls_x509_csr csr;
	mbedtls_x509_crt c;
	char *pem = NULL, why[512], *padded;
	size_t len = 0;

	ASSERT_EQ(ca_csr_new(WL_ID, &key, &pem, &len, why, sizeof(why)), 0);
	ASSERT_EQ(strlen(pem), len);
	ASSERT(strncmp(pem, CSR_BEGIN, strlen(CSR_BEGIN)) == 0);
	/* A P-256 key, subject O=TD. */
	ASSERT(cert_key_is_p256(&key));
	mbedtls_x509_csr_init(&csr);
	ASSERT_EQ(mbedtls_x509_csr_parse(&csr, (const unsigned char *)pem, len + 1), 0);
	ASSERT(mbedtls_x509_dn_gets(why, sizeof(why), &csr.subject) > 0);
	ASSERT_STREQ(why, "O=cluster.local");
	mbedtls_x509_csr_free(&csr);

	/* The CA's check takes it (with or without a counted NUL) and gives back the key. */
	ASSERT_EQ(ca_csr_check(pem, len, WL_ID, &pub, why, sizeof(why)), 0);
	ASSERT_EQ(mbedtls_pk_check_pair(&pub, &key), 0);
	ASSERT_EQ(check(pem, len + 1, WL_ID, why, sizeof(why)), 0);
	/* White space around the block is fine. */
	ASSERT(asprintf(&padded, "\n  \r\n%s\n\n", pem) > 0);
	ASSERT_EQ(check(padded, strlen(padded), WL_ID, why, sizeof(why)), 0);
	free(padded);

	/* And signs it: the certificate is for the request's key. */
	ASSERT_EQ(sign_into(im, &pub, WL_ID, CA_LEAF_WORKLOAD, 86400, now, &c, NULL, NULL, NULL, why,
	    sizeof(why)), 0);
	ASSERT_EQ(cert_check_identity(&c, &key, &im->roots, TD, now, NULL, 0, why, sizeof(why)), 0);
	mbedtls_x509_crt_free(&c);
	mbedtls_pk_free(&pub);
	mbedtls_pk_free(&key);
	free(pem);

	/* A node's request. */
	ASSERT_EQ(ca_csr_new(NODE_ID, &key, &pem, &len, why, sizeof(why)), 0);
	ASSERT_EQ(check(pem, len, NODE_ID, why, sizeof(why)), 0);
	mbedtls_pk_free(&key);
	free(pem);
	/* No request for what is not a SPIFFE ID; key is empty then. */
	want_reason(ca_csr_new("http://x/y", &key, &pem, &len, why, sizeof(why)), why,
	    "'http://x/y' is not a SPIFFE ID");
	ASSERT(pem == NULL && len == 0);
	ASSERT_EQ(mbedtls_pk_get_type(&key), MBEDTLS_PK_NONE);
	mbedtls_pk_free(&key);
	ca_free(im);
	ca_free(root);
}

/* pem with one DER byte flipped: the first byte of find in it, or else the last byte (of the
 * signature). Returns malloc'd PEM. */
static char *
corrupt_der(const char *pem, const char *find)
{
	mbedtls_pem_context pc;
	unsigned char *out = malloc(8192), *at;
	size_t used, olen;

	mbedtls_pem_init(&pc);
	ASSERT_EQ(mbedtls_pem_read_buffer(&pc, "-----BEGIN CERTIFICATE REQUEST-----",
	    "-----END CERTIFICATE REQUEST-----", (const unsigned char *)pem, NULL, 0, &used), 0);
	at = pc.buf + pc.buflen - 1;
	if (find != NULL)
		at = memmem(pc.buf, pc.buflen, find, strlen(find));
	ASSERT(at != NULL);
	*at ^= 0x01;
	ASSERT_EQ(mbedtls_pem_write_buffer(CSR_BEGIN, CSR_END, pc.buf, pc.buflen, out, 8192, &olen),
	    0);
	mbedtls_pem_free(&pc);
	return (char *)out;
}

/* A request made by make_csr must be refused for WL_ID with exactly reason. */
static void
refused(mbedtls_pk_context *key, const struct gn *names, size_t n, const char *extra_oid,
    size_t extra_len, const char *reason)
{
	char *pem = make_csr(key, names, n, extra_oid, extra_len), why[512];

	ASSERT_EQ(check(pem, strlen(pem), WL_ID, why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT_STREQ(why, reason);
	free(pem);
}

TEST(csr_refusals)
{
	static const struct gn uri[] = { { 6, WL_ID } };
	static const struct gn uri_dns[] = { { 6, WL_ID }, { 2, "reviews.default.svc" } };
	static const struct gn two_uris[] = { { 6, WL_ID }, { 6, WL_ID } };
	static const struct gn dns[] = { { 2, "reviews.default.svc" } };
	static const struct gn other[] = { { 6, "spiffe://cluster.local/ns/default/sa/admin" } };
	static const struct gn ctrl[] = { { 6, "spiffe://cluster.local/ns/a/sa/b\x01" } };
	mbedtls_pk_context k256, k384, krsa;
	char why[512], *pem, *bad;
	size_t len;

	ec_key(&k256, MBEDTLS_ECP_DP_SECP256R1);
	ec_key(&k384, MBEDTLS_ECP_DP_SECP384R1);
	mbedtls_pk_init(&krsa);
	ASSERT_EQ(mbedtls_pk_setup(&krsa, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), 0);
	ASSERT_EQ(mbedtls_rsa_gen_key(mbedtls_pk_rsa(krsa), rng_fill, rng_ctx(), 1024, 65537), 0);

	/* The control: well made, it passes. */
	pem = make_csr(&k256, uri, 1, NULL, 0);
	ASSERT_EQ(check(pem, strlen(pem), WL_ID, why, sizeof(why)), 0);

	/* Keys. */
	refused(&k384, uri, 1, NULL, 0, "CSR key is ECDSA P-384, want ECDSA P-256");
	refused(&krsa, uri, 1, NULL, 0, "CSR key is RSA, want ECDSA P-256");
	/* Names. */
	refused(&k256, uri_dns, 2, NULL, 0, "CSR has 2 subject alternative names");
	refused(&k256, two_uris, 2, NULL, 0, "CSR has 2 subject alternative names");
	refused(&k256, dns, 1, NULL, 0, "CSR's subject alternative name is a DNS name, want the URI "
	    WL_ID);
	refused(&k256, NULL, 0, NULL, 0, "CSR has no subject alternative name");
	refused(&k256, other, 1, NULL, 0, "CSR names spiffe://cluster.local/ns/default/sa/admin but "
	    "the request is for " WL_ID);
	refused(&k256, ctrl, 1, NULL, 0, "CSR's URI is not printable ASCII");
	/* The right ID for another request is the wrong one for this. */
	want_reason(check(pem, strlen(pem), NODE_ID, why, sizeof(why)), why,
	    "CSR names " WL_ID " but the request is for " NODE_ID);

	/* Extensions: keyUsage is ignored, anything else not granted is refused. */
	bad = make_csr(&k256, uri, 1, MBEDTLS_OID_KEY_USAGE, MBEDTLS_OID_SIZE(MBEDTLS_OID_KEY_USAGE));
	ASSERT_EQ(check(bad, strlen(bad), WL_ID, why, sizeof(why)), 0);
	free(bad);
	refused(&k256, uri, 1, MBEDTLS_OID_NAME_CONSTRAINTS,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_NAME_CONSTRAINTS),
	    "CSR requests extension 2.5.29.30, which the CA does not grant");

	/* The signature: a flipped byte in it, or in what it signs. */
	bad = corrupt_der(pem, NULL);
	ASSERT_EQ(check(bad, strlen(bad), WL_ID, why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT_STREQ(why, "CSR signature does not verify");
	free(bad);
	bad = corrupt_der(pem, "reviews");
	ASSERT_EQ(check(bad, strlen(bad), WL_ID, why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT_STREQ(why, "CSR signature does not verify");
	free(bad);
	len = strlen(pem);

	/* Not a request at all, or not only one. */
	want_reason(check("hello", 5, WL_ID, why, sizeof(why)), why, "not a PEM certificate request");
	want_reason(check("", 0, WL_ID, why, sizeof(why)), why, "not a PEM certificate request");
	want_reason(check(NULL, 10, WL_ID, why, sizeof(why)), why, "no request");
	want_reason(check(pem, len / 2, WL_ID, why, sizeof(why)), why,
	    "not a PEM certificate request (no END line)");
	ASSERT(asprintf(&bad, "%sjunk\n", pem) > 0);
	want_reason(check(bad, strlen(bad), WL_ID, why, sizeof(why)), why,
	    "data after the PEM certificate request");
	free(bad);
	ASSERT(asprintf(&bad, "%s%s", pem, pem) > 0);
	want_reason(check(bad, strlen(bad), WL_ID, why, sizeof(why)), why,
	    "data after the PEM certificate request");
	free(bad);
	ASSERT(asprintf(&bad, "text\n%s", pem) > 0);
	want_reason(check(bad, strlen(bad), WL_ID, why, sizeof(why)), why,
	    "not a PEM certificate request");
	free(bad);
	bad = strdup(pem);
	memcpy(bad + strlen(CSR_BEGIN) + 10, "!!!!", 4);
	want_reason(check(bad, strlen(bad), WL_ID, why, sizeof(why)), why,
	    "not a PEM certificate request (bad base64)");
	free(bad);
	bad = strdup(pem);
	bad[100] = '\0';
	want_reason(check(bad, len, WL_ID, why, sizeof(why)), why, "not a PEM certificate request");
	free(bad);
	/* A certificate is not a request. */
	bad = strdup(pem);
	memcpy(bad + 11, "CERTIFICATE-----\n", 17);
	want_reason(check(bad, len, WL_ID, why, sizeof(why)), why, "not a PEM certificate request");
	free(bad);
	bad = malloc(CA_CSR_MAX + 2);
	memset(bad, ' ', CA_CSR_MAX + 1);
	memcpy(bad, pem, len);
	want_reason(check(bad, CA_CSR_MAX + 1, WL_ID, why, sizeof(why)), why,
	    "CSR larger than 16384 bytes");
	free(bad);
	/* Every truncation is refused, none read past its end (ASan builds prove the second). */
	for (size_t i = 0; i < len - 2; i++) {
		bad = malloc(i + 1);
		memcpy(bad, pem, i);
		ASSERT_EQ(check(bad, i, WL_ID, why, sizeof(why)), AMESH_ERR_INVALID);
		free(bad);
	}
	free(pem);
	mbedtls_pk_free(&krsa);
	mbedtls_pk_free(&k384);
	mbedtls_pk_free(&k256);
}

#define OPENSSL "/usr/bin/openssl"

/* Runs `openssl req -new` with a new key of keyalg (genpkey options) and the -addext arguments
 * in ext (may be ""), into dir/name.{key,csr}; returns the CSR text (malloc'd). */
static char *
openssl_csr(const char *dir, const char *name, const char *keyalg, const char *ext)
{
	char cmd[1024], path[600];
	FILE *fp;
	char *buf = calloc(1, 16384);
	size_t n;

	snprintf(cmd, sizeof(cmd), "cd '%s' && " OPENSSL " genpkey %s -out %s.key 2>/dev/null && "
	    OPENSSL " req -new -key %s.key -subj /O=" TD " %s -out %s.csr 2>/dev/null", dir,
	    keyalg, name, name, ext, name);
	ASSERT(system(cmd) == 0);
	snprintf(path, sizeof(path), "%s/%s.csr", dir, name);
	fp = fopen(path, "r");
	ASSERT(fp != NULL && buf != NULL);
	n = fread(buf, 1, 16383, fp);
	ASSERT(n > 0);
	fclose(fp);
	return buf;
}

#define P256 "-algorithm EC -pkeyopt ec_paramgen_curve:P-256"
#define SAN_ARG "-addext subjectAltName=URI:" WL_ID

TEST(csr_openssl_interop)
{
	static const struct {
		const char *name, *keyalg, *ext, *why; /* why NULL: accepted */
	} cases[] = {
		{ "plain", P256, SAN_ARG, NULL },
		{ "sha384", P256, SAN_ARG " -sha384", NULL },
		{ "usages", P256, SAN_ARG " -addext keyUsage=critical,digitalSignature"
		    " -addext extendedKeyUsage=clientAuth -addext basicConstraints=CA:TRUE", NULL },
		{ "p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384", SAN_ARG,
		    "CSR key is ECDSA P-384, want ECDSA P-256" },
		{ "rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048", SAN_ARG,
		    "CSR key is RSA, want ECDSA P-256" },
		{ "ed25519", "-algorithm ED25519", SAN_ARG, "not a valid PKCS#10 certificate request" },
		{ "dns", P256, "-addext subjectAltName=URI:" WL_ID ",DNS:reviews.default.svc",
		    "CSR has 2 subject alternative names" },
		{ "nosan", P256, "", "CSR has no subject alternative name" },
		{ "email", P256, "-addext subjectAltName=email:a@b.c",
		    "CSR's subject alternative name is an email address, want the URI " WL_ID },
		{ "other", P256, "-addext subjectAltName=URI:spiffe://cluster.local/ns/x/sa/y",
		    "CSR names spiffe://cluster.local/ns/x/sa/y but the request is for " WL_ID },
		{ "ski", P256, SAN_ARG " -addext subjectKeyIdentifier=hash",
		    "CSR requests extension 2.5.29.14, which the CA does not grant" },
	};
	const char *dir = test_tmpdir();
	mbedtls_pk_context pub, key;
	char why[512], path[600];

	if (access(OPENSSL, X_OK) != 0) {
		fprintf(stderr, OPENSSL " not installed\n");
		exit(77);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *pem = openssl_csr(dir, cases[i].name, cases[i].keyalg, cases[i].ext);
		int r = ca_csr_check(pem, strlen(pem), WL_ID, &pub, why, sizeof(why));

		if (cases[i].why == NULL && r != 0) {
			fprintf(stderr, "%s: refused: %s\n", cases[i].name, why);
			ASSERT(!"an OpenSSL request was refused");
		}
		if (cases[i].why != NULL && (r == 0 || strstr(why, cases[i].why) == NULL)) {
			fprintf(stderr, "%s: got %d '%s', want '%s'\n", cases[i].name, r, why,
			    cases[i].why);
			ASSERT(!"an OpenSSL request was not refused as it should be");
		}
		if (r == 0) {
			/* The key handed back is the one OpenSSL made. */
			snprintf(path, sizeof(path), "%s/%s.key", dir, cases[i].name);
			mbedtls_pk_init(&key);
			ASSERT_EQ(mbedtls_pk_parse_keyfile(&key, path, NULL), 0);
			ASSERT_EQ(mbedtls_pk_check_pair(&pub, &key), 0);
			mbedtls_pk_free(&key);
		}
		mbedtls_pk_free(&pub);
		free(pem);
	}
}
