/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for tls/cert.c and tls/ca.c: SPIFFE IDs, identity checks and their refusals, CA files. */
#include "config.h"

#include <errno.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/oid.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "runner.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define TD "cluster.local"

static struct ca *
new_ca(const char *td)
{
	struct ca *ca;
	char why[512];

	if (ca_create(td, 365, time(NULL), &ca, why, sizeof(why)) != 0) {
		fprintf(stderr, "ca_create: %s\n", why);
		ASSERT(!"ca_create failed");
	}
	return ca;
}

static struct ca_issued *
issue(struct ca *ca, const char *ns, const char *sa)
{
	struct ca_issued *is;
	char why[512];

	if (ca_issue(ca, ns, sa, 30, time(NULL), &is, why, sizeof(why)) != 0) {
		fprintf(stderr, "ca_issue: %s\n", why);
		ASSERT(!"ca_issue failed");
	}
	return is;
}

/* Parses an issued identity into chain and key. */
static void
parse_issued(const struct ca_issued *is, mbedtls_x509_crt *chain, mbedtls_pk_context *key)
{
	mbedtls_x509_crt_init(chain);
	ASSERT_EQ(mbedtls_x509_crt_parse(chain, (const unsigned char *)is->chain_pem,
	    is->chain_len + 1), 0);
	if (key != NULL) {
		mbedtls_pk_init(key);
		ASSERT_EQ(mbedtls_pk_parse_key(key, (const unsigned char *)is->key_pem,
		    is->key_len + 1, NULL, 0), 0);
	}
}

static bool
contains(const char *s, const char *sub)
{
	if (strstr(s, sub) != NULL)
		return true;
	fprintf(stderr, "'%s' does not contain '%s'\n", s, sub);
	return false;
}

TEST(cert_spiffe_id_issued)
{
	struct ca *ca = new_ca(TD);
	struct ca_issued *is = issue(ca, "default", "reviews");
	mbedtls_x509_crt chain;
	char id[SPIFFE_ID_MAX];
	time_t now = time(NULL);

	parse_issued(is, &chain, NULL);
	ASSERT_STREQ(is->spiffe_id, "spiffe://cluster.local/ns/default/sa/reviews");
	ASSERT_EQ(cert_spiffe_id(&chain, id, sizeof(id)), 0);
	ASSERT_STREQ(id, "spiffe://cluster.local/ns/default/sa/reviews");
	/* The chain file holds the leaf, then the CA; the CA has no SPIFFE ID. */
	ASSERT(chain.next != NULL && chain.next->raw.p != NULL && chain.next->next == NULL);
	ASSERT(chain.next->ca_istrue && !chain.ca_istrue);
	ASSERT_EQ(cert_spiffe_id(chain.next, id, sizeof(id)), AMESH_ERR_NOTFOUND);
	/* A buffer too small for the ID. */
	ASSERT_EQ(cert_spiffe_id(&chain, id, 10), AMESH_ERR_TOOLONG);
	/* Validity: 5 minutes back, 30 days ahead. */
	ASSERT(cert_not_before(&chain) <= now - CA_BACKDATE_SECONDS + 2);
	ASSERT(cert_not_before(&chain) >= now - CA_BACKDATE_SECONDS - 2);
	ASSERT(cert_not_after(&chain) - cert_not_before(&chain) == 30 * 86400 + CA_BACKDATE_SECONDS);
	ASSERT_EQ(is->not_after, cert_not_after(&chain));
	/* Key usage and extended key usage as issued. */
	ASSERT(chain.key_usage & MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
	ASSERT(!(chain.key_usage & MBEDTLS_X509_KU_KEY_CERT_SIGN));
	ASSERT_EQ(mbedtls_x509_crt_check_extended_key_usage(&chain, MBEDTLS_OID_SERVER_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)), 0);
	ASSERT_EQ(mbedtls_x509_crt_check_extended_key_usage(&chain, MBEDTLS_OID_CLIENT_AUTH,
	    MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)), 0);
	mbedtls_x509_crt_free(&chain);
	ca_issued_free(is);
	ca_free(ca);
}

TEST(spiffe_split_cases)
{
	static const char *const bad[] = {
		"", "spiffe://", "spiffe:///ns/a/sa/b", "http://cluster.local/ns/a/sa/b",
		"SPIFFE://cluster.local/ns/a/sa/b", "spiffe://Cluster.local/ns/a/sa/b",
		"spiffe://td", "spiffe://td/", "spiffe://td/ns/a", "spiffe://td/ns/a/sa",
		"spiffe://td/ns/a/sa/", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/",
		"spiffe://td/ns/a/sa/b/c", "spiffe://td/ns/a/b/c", "spiffe://td/sa/b/ns/a",
		"spiffe://td/ns/a b/sa/c", "spiffe://td/ns/../sa/c", "spiffe://td/ns/a/sa/.",
		"spiffe://td/ns/a/sa/b?x=1", "spiffe://td/ns/a/sa/b#f", "spiffe://td:8080/ns/a/sa/b",
		"spiffe://td/ns/a/sa/b%41", "spiffe://us@td/ns/a/sa/b", "spiffe://td//ns/a/sa/b",
		"spiffe://td/NS/a/sa/b", "spiffe://td/ns/a/sa/b\n",
	};
	char td[SPIFFE_ID_MAX], ns[SPIFFE_ID_MAX], sa[SPIFFE_ID_MAX], buf[64];
	char *longid;

	ASSERT_EQ(spiffe_split("spiffe://cluster.local/ns/default/sa/reviews", td, ns, sa), 0);
	ASSERT_STREQ(td, "cluster.local");
	ASSERT_STREQ(ns, "default");
	ASSERT_STREQ(sa, "reviews");
	ASSERT_EQ(spiffe_split("spiffe://td_1.ex-a/ns/A.b_c-9/sa/X..y", td, NULL, sa), 0);
	ASSERT_STREQ(td, "td_1.ex-a");
	ASSERT_STREQ(sa, "X..y");
	ASSERT_EQ(spiffe_split("spiffe://a/ns/b/sa/c", NULL, NULL, NULL), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (spiffe_split(bad[i], td, ns, sa) != AMESH_ERR_INVALID) {
			fprintf(stderr, "accepted: '%s'\n", bad[i]);
			ASSERT(!"bad SPIFFE ID accepted");
		}
	/* Longer than SPIFFE_ID_MAX. */
	longid = malloc(SPIFFE_ID_MAX + 64);
	ASSERT(longid != NULL);
	snprintf(longid, SPIFFE_ID_MAX + 64, "spiffe://td/ns/a/sa/");
	memset(longid + strlen(longid), 'x', SPIFFE_ID_MAX);
	longid[SPIFFE_ID_MAX + 20] = '\0';
	ASSERT_EQ(spiffe_split(longid, td, ns, sa), AMESH_ERR_INVALID);
	free(longid);

	ASSERT_EQ(spiffe_format(buf, sizeof(buf), "td", "ns1", "sa1"), 0);
	ASSERT_STREQ(buf, "spiffe://td/ns/ns1/sa/sa1");
	ASSERT_EQ(spiffe_format(buf, 10, "td", "ns1", "sa1"), AMESH_ERR_TOOLONG);
}

TEST(cert_check_identity_refusals)
{
	struct ca *ca = new_ca(TD), *other = new_ca(TD);
	struct ca_issued *is = issue(ca, "default", "reviews"), *is2 = issue(ca, "default", "ratings");
	struct ca_issued *foreign = issue(other, "default", "reviews");
	mbedtls_x509_crt chain, chain2, fchain, both;
	mbedtls_pk_context key, key2, fkey;
	char id[SPIFFE_ID_MAX], why[512];
	time_t now = time(NULL);

	parse_issued(is, &chain, &key);
	parse_issued(is2, &chain2, &key2);
	parse_issued(foreign, &fchain, &fkey);

	/* Good: chains to its CA, in the trust domain, key matches. */
	ASSERT_EQ(cert_check_identity(&chain, &key, &ca->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)), 0);
	ASSERT_STREQ(id, "spiffe://cluster.local/ns/default/sa/reviews");
	/* The key is optional. */
	ASSERT_EQ(cert_check_identity(&chain, NULL, &ca->crt, TD, now, NULL, 0, why, sizeof(why)), 0);
	/* A bundle with several CAs: either issuer is accepted. */
	mbedtls_x509_crt_init(&both);
	ASSERT_EQ(mbedtls_x509_crt_parse_der(&both, other->crt.raw.p, other->crt.raw.len), 0);
	ASSERT_EQ(mbedtls_x509_crt_parse_der(&both, ca->crt.raw.p, ca->crt.raw.len), 0);
	ASSERT_EQ(cert_check_identity(&chain, &key, &both, TD, now, id, sizeof(id), why,
	    sizeof(why)), 0);
	ASSERT_EQ(cert_check_identity(&fchain, &fkey, &both, TD, now, id, sizeof(id), why,
	    sizeof(why)), 0);

	/* Wrong trust domain. */
	ASSERT_EQ(cert_check_identity(&chain, &key, &ca->crt, "example.org", now, id, sizeof(id),
	    why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT(contains(why, "trust domain 'cluster.local' is not 'example.org'"));
	ASSERT_STREQ(id, "");
	/* Expired: a time past notAfter. */
	ASSERT(cert_check_identity(&chain, &key, &ca->crt, TD, cert_not_after(&chain) + 1, id,
	    sizeof(id), why, sizeof(why)) < 0);
	ASSERT(contains(why, "expired at "));
	/* Still good at the last second. */
	ASSERT_EQ(cert_check_identity(&chain, &key, &ca->crt, TD, cert_not_after(&chain), id,
	    sizeof(id), why, sizeof(why)), 0);
	/* Not yet valid: a time before notBefore. */
	ASSERT(cert_check_identity(&chain, &key, &ca->crt, TD, cert_not_before(&chain) - 1, id,
	    sizeof(id), why, sizeof(why)) < 0);
	ASSERT(contains(why, "not valid before "));
	/* Signed by another CA. */
	ASSERT(cert_check_identity(&fchain, &fkey, &ca->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "does not verify against the trust bundle"));
	ASSERT(strchr(why, '\n') == NULL);
	/* A key that belongs to another certificate. */
	ASSERT(cert_check_identity(&chain, &key2, &ca->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "private key does not match"));
	/* The CA certificate used as a workload identity. */
	ASSERT(cert_check_identity(&ca->crt, &ca->key, &ca->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "CA certificate"));
	/* No certificate, no bundle. */
	mbedtls_x509_crt_free(&both);
	mbedtls_x509_crt_init(&both);
	ASSERT(cert_check_identity(&both, NULL, &ca->crt, TD, now, id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(cert_check_identity(&chain, NULL, &both, TD, now, id, sizeof(id), why,
	    sizeof(why)) < 0);

	mbedtls_x509_crt_free(&chain);
	mbedtls_x509_crt_free(&chain2);
	mbedtls_x509_crt_free(&fchain);
	mbedtls_pk_free(&key);
	mbedtls_pk_free(&key2);
	mbedtls_pk_free(&fkey);
	ca_issued_free(is);
	ca_issued_free(is2);
	ca_issued_free(foreign);
	ca_free(ca);
	ca_free(other);
}

/* GeneralNames DER with the given [6] URIs (and a dNSName first). */
static size_t
san_with(const char *const *uris, size_t n, unsigned char *buf, size_t size, unsigned char **start)
{
	unsigned char *p = buf + size;
	size_t len = 0;
	static const char dns[] = "reviews.default.svc";

	for (size_t i = n; i-- > 0;) {
		size_t ul = strlen(uris[i]);

		len += (size_t)mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)uris[i], ul);
		len += (size_t)mbedtls_asn1_write_len(&p, buf, ul);
		len += (size_t)mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 6);
	}
	len += (size_t)mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)dns,
	    sizeof(dns) - 1);
	len += (size_t)mbedtls_asn1_write_len(&p, buf, sizeof(dns) - 1);
	len += (size_t)mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2);
	len += (size_t)mbedtls_asn1_write_len(&p, buf, len);
	len += (size_t)mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
	*start = p;
	return len;
}

/* A leaf signed by ca with the given URI SANs (none: no SAN extension), parsed into out. */
static void
make_leaf(struct ca *ca, const char *const *uris, size_t n, mbedtls_x509_crt *out)
{
	mbedtls_x509write_cert w;
	mbedtls_pk_context key;
	mbedtls_mpi serial;
	unsigned char der[4096], ext[512], *p;
	size_t len;
	int r;

	mbedtls_x509write_crt_init(&w);
	mbedtls_pk_init(&key);
	mbedtls_mpi_init(&serial);
	ASSERT_EQ(mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
	ASSERT_EQ(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), rng_fill,
	    rng_ctx()), 0);
	ASSERT_EQ(mbedtls_mpi_lset(&serial, 7), 0);
	ASSERT_EQ(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
	ASSERT_EQ(mbedtls_x509write_crt_set_validity(&w, "20200101000000", "20991231235959"), 0);
	mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&w, &key);
	mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
	ASSERT_EQ(mbedtls_x509write_crt_set_subject_name(&w, "CN=test"), 0);
	ASSERT_EQ(mbedtls_x509write_crt_set_issuer_name(&w, "CN=amesh root CA,O=cluster.local"), 0);
	if (n > 0) {
		len = san_with(uris, n, ext, sizeof(ext), &p);
		ASSERT_EQ(mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
		    MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p, len), 0);
	}
	r = mbedtls_x509write_crt_der(&w, der, sizeof(der), rng_fill, rng_ctx());
	ASSERT(r > 0);
	mbedtls_x509_crt_init(out);
	ASSERT_EQ(mbedtls_x509_crt_parse_der(out, der + sizeof(der) - r, (size_t)r), 0);
	mbedtls_x509write_crt_free(&w);
	mbedtls_pk_free(&key);
	mbedtls_mpi_free(&serial);
}

TEST(cert_spiffe_id_san_shapes)
{
	static const char *const one[] = { "spiffe://cluster.local/ns/a/sa/b" };
	static const char *const two[] = { "spiffe://cluster.local/ns/a/sa/b",
		"spiffe://cluster.local/ns/a/sa/c" };
	static const char *const https[] = { "https://example.org/x" };
	static const char *const mixed[] = { "https://example.org/x", "spiffe://cluster.local/ns/a/sa/b" };
	struct ca *ca = new_ca(TD);
	mbedtls_x509_crt c;
	char id[SPIFFE_ID_MAX], why[512];

	make_leaf(ca, one, 1, &c);
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), 0);
	ASSERT_STREQ(id, one[0]);
	/* No keyUsage/extendedKeyUsage in these leaves: the identity check refuses them. */
	ASSERT(cert_check_identity(&c, NULL, &ca->crt, TD, time(NULL), id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "keyUsage"));
	mbedtls_x509_crt_free(&c);

	make_leaf(ca, two, 2, &c);
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), AMESH_ERR_INVALID);
	ASSERT(cert_check_identity(&c, NULL, &ca->crt, TD, time(NULL), id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "more than one URI SAN"));
	mbedtls_x509_crt_free(&c);

	make_leaf(ca, mixed, 2, &c);
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), AMESH_ERR_INVALID);
	mbedtls_x509_crt_free(&c);

	make_leaf(ca, https, 1, &c);
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), AMESH_ERR_NOTFOUND);
	mbedtls_x509_crt_free(&c);

	make_leaf(ca, NULL, 0, &c);
	ASSERT_EQ(cert_spiffe_id(&c, id, sizeof(id)), AMESH_ERR_NOTFOUND);
	ASSERT(cert_check_identity(&c, NULL, &ca->crt, TD, time(NULL), id, sizeof(id), why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "no spiffe:// URI SAN"));
	mbedtls_x509_crt_free(&c);
	ca_free(ca);
}

TEST(cert_load_errors)
{
	const char *dir = test_tmpdir();
	mbedtls_x509_crt c;
	mbedtls_pk_context k;
	char why[512], *big, path[512];
	FILE *fp;

	ASSERT(cert_load_chain("/nonexistent/x.crt", &c, why, sizeof(why)) == -ENOENT);
	ASSERT(contains(why, "cannot open: No such file or directory"));
	mbedtls_x509_crt_free(&c);
	ASSERT(cert_load_chain(test_write(dir, "garbage.crt", "hello\n"), &c, why, sizeof(why)) < 0);
	ASSERT(contains(why, "not a certificate"));
	mbedtls_x509_crt_free(&c);
	ASSERT(cert_load_chain(test_write(dir, "empty.crt", ""), &c, why, sizeof(why)) < 0);
	ASSERT(contains(why, "empty file"));
	mbedtls_x509_crt_free(&c);
	ASSERT(cert_load_chain(dir, &c, why, sizeof(why)) < 0);
	ASSERT(contains(why, "not a regular file"));
	mbedtls_x509_crt_free(&c);
	ASSERT(cert_load_key(test_write(dir, "garbage.key", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n"
	    "-----END EC PRIVATE KEY-----\n"), &k, why, sizeof(why)) < 0);
	ASSERT(contains(why, "not a private key"));
	mbedtls_pk_free(&k);

	/* Past 64 KiB: refused before parsing. */
	big = malloc(CERT_FILE_MAX + 2);
	ASSERT(big != NULL);
	memset(big, 'A', CERT_FILE_MAX + 1);
	big[CERT_FILE_MAX + 1] = '\0';
	snprintf(path, sizeof(path), "%s/big.crt", dir);
	fp = fopen(path, "w");
	ASSERT(fp != NULL && fputs(big, fp) >= 0 && fclose(fp) == 0);
	ASSERT_EQ(cert_load_chain(path, &c, why, sizeof(why)), AMESH_ERR_TOOLONG);
	ASSERT(contains(why, "larger than 64 KiB"));
	mbedtls_x509_crt_free(&c);
	ASSERT_EQ(cert_load_key(path, &k, why, sizeof(why)), AMESH_ERR_TOOLONG);
	mbedtls_pk_free(&k);
	free(big);
}

TEST(ca_save_load)
{
	const char *tmp = test_tmpdir();
	struct ca *ca = new_ca("example.org"), *again = NULL, *loaded = NULL, *bad = NULL;
	struct ca_issued *is;
	char dir[512], path[600], why[512];
	struct stat st;
	mbedtls_x509_crt chain;
	mbedtls_pk_context key;

	snprintf(dir, sizeof(dir), "%s/ca", tmp);
	ASSERT_EQ(ca_save(ca, dir, why, sizeof(why)), 0);
	ASSERT(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
	/* No temporary files left behind. */
	snprintf(path, sizeof(path), "test \"$(ls -A '%s')\" = \"$(printf 'ca.crt\\nca.key')\"", dir);
	ASSERT(system(path) == 0);

	/* A second CA into the same directory is refused, naming the file; nothing is changed. */
	again = new_ca("example.org");
	ASSERT_EQ(ca_save(again, dir, why, sizeof(why)), AMESH_ERR_EXISTS);
	ASSERT(contains(why, "/ca/ca.key: already exists"));
	ASSERT_EQ(ca_load(dir, &loaded, why, sizeof(why)), 0);
	ASSERT_EQ(loaded->crt.raw.len, ca->crt.raw.len);
	ASSERT(memcmp(loaded->crt.raw.p, ca->crt.raw.p, ca->crt.raw.len) == 0);
	ASSERT_STREQ(loaded->trust_domain, "example.org");
	ASSERT(loaded->crt.ca_istrue);
	ASSERT(loaded->crt.key_usage & MBEDTLS_X509_KU_KEY_CERT_SIGN);

	/* A loaded CA issues certificates that check against the saved ca.crt. */
	ASSERT_EQ(ca_issue(loaded, "ns1", "sa1", 10, time(NULL), &is, why, sizeof(why)), 0);
	parse_issued(is, &chain, &key);
	ASSERT_EQ(cert_check_identity(&chain, &key, &ca->crt, "example.org", time(NULL), NULL, 0,
	    why, sizeof(why)), 0);
	mbedtls_x509_crt_free(&chain);
	mbedtls_pk_free(&key);
	ca_issued_free(is);

	/* Bad names and day counts. */
	ASSERT(ca_issue(loaded, "..", "sa1", 10, time(NULL), &is, why, sizeof(why)) < 0 && is == NULL);
	ASSERT(ca_issue(loaded, "ns", "a/b", 10, time(NULL), &is, why, sizeof(why)) < 0);
	ASSERT(ca_issue(loaded, "ns", "sa", 0, time(NULL), &is, why, sizeof(why)) < 0);
	/* A CA that has expired issues nothing. */
	ASSERT(ca_issue(loaded, "ns", "sa", 1, cert_not_after(&loaded->crt) + 1, &is, why,
	    sizeof(why)) < 0);
	ASSERT(contains(why, "the CA expired"));
	/* A leaf never outlives its CA. */
	ASSERT_EQ(ca_issue(loaded, "ns", "sa", CA_DAYS_MAX, time(NULL), &is, why, sizeof(why)), 0);
	ASSERT_EQ(is->not_after, cert_not_after(&loaded->crt));
	ca_issued_free(is);

	ASSERT(!ca_valid_trust_domain("Cluster.local"));
	ASSERT(!ca_valid_trust_domain(""));
	ASSERT(ca_valid_trust_domain("a-b_c.d9"));
	ASSERT_EQ(ca_create("bad domain", 10, time(NULL), &bad, why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT(bad == NULL);
	ASSERT_EQ(ca_create("ok", 0, time(NULL), &bad, why, sizeof(why)), AMESH_ERR_RANGE);

	/* A missing key file. */
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	ASSERT(unlink(path) == 0);
	ca_free(loaded);
	ASSERT(ca_load(dir, &loaded, why, sizeof(why)) < 0 && loaded == NULL);
	ASSERT(contains(why, "ca.key: cannot open"));
	ca_free(again);
	ca_free(ca);
}

TEST(ca_write_file_atomic)
{
	const char *tmp = test_tmpdir();
	char path[512], why[512], buf[64];
	struct stat st;
	FILE *fp;
	mode_t old = umask(0);

	snprintf(path, sizeof(path), "%s/f.key", tmp);
	ASSERT_EQ(ca_write_file(path, "one", 3, 0600, false, why, sizeof(why)), 0);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	/* Without replace, an existing file stays as it is. */
	ASSERT_EQ(ca_write_file(path, "two", 3, 0600, false, why, sizeof(why)), AMESH_ERR_EXISTS);
	/* With replace, it is swapped whole. */
	ASSERT_EQ(ca_write_file(path, "three", 5, 0600, true, why, sizeof(why)), 0);
	fp = fopen(path, "r");
	ASSERT(fp != NULL && fgets(buf, sizeof(buf), fp) != NULL);
	fclose(fp);
	ASSERT_STREQ(buf, "three");
	/* A restrictive umask does not change the modes asked for; a permissive one does not widen them. */
	umask(077);
	snprintf(path, sizeof(path), "%s/f.crt", tmp);
	ASSERT_EQ(ca_write_file(path, "crt", 3, 0644, true, why, sizeof(why)), 0);
	ASSERT(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
	umask(old);
	/* Only the two files: no temporary left behind. */
	snprintf(path, sizeof(path), "test \"$(ls -A '%s' | wc -l)\" -eq 2", tmp);
	ASSERT(system(path) == 0);
	snprintf(path, sizeof(path), "%s/nodir/f", tmp);
	ASSERT(ca_write_file(path, "x", 1, 0600, true, why, sizeof(why)) == -ENOENT);
}
