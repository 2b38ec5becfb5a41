#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# amesh ca as an operator uses it: init, issue, rotate, show, bad usage; OpenSSL judges the result.
. "$(dirname "$0")/../lib.sh"

OPENSSL=/usr/bin/openssl
if [ ! -x "$OPENSSL" ]; then
	echo "1..0 # SKIP $OPENSSL not installed"
	exit 0
fi

CA=$TMP/ca
CERTS=$TMP/certs
ID=spiffe://cluster.local/ns/default/sa/reviews
plan 46

mode() { stat -c %a "$1"; }
# key_matches KEY CERT: the private key KEY is the one of the (first) certificate in CERT.
key_matches() {
	pub_key=$("$OPENSSL" pkey -in "$1" -pubout) && pub_crt=$("$OPENSSL" x509 -in "$2" -noout -pubkey) &&
		[ -n "$pub_key" ] && [ "$pub_key" = "$pub_crt" ]
}

run "$AMESH" ca init --dir "$CA"
check "ca init creates the CA" \
	'[ "$RC" -eq 0 ] && [ -s "$CA/ca.crt" ] && [ -s "$CA/ca.key" ] &&
	 echo "$OUT" | grep -q "^created $CA/ca.crt: CA of trust domain cluster.local, valid until 20[0-9-]*T[0-9:]*Z$"'
check "ca.key is 0600, ca.crt 0644, the CA directory 0700" \
	'[ "$(mode "$CA/ca.key")" = 600 ] && [ "$(mode "$CA/ca.crt")" = 644 ] && [ "$(mode "$CA")" = 700 ]'

sum=$(cksum <"$CA/ca.key")
run "$AMESH" ca init --dir "$CA" --trust-domain other.local
check "ca init refuses an existing CA, naming the file, and changes nothing" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "$CA/ca.key: already exists" &&
	 [ "$(cksum <"$CA/ca.key")" = "$sum" ] && [ "$(ls -A "$CA" | wc -l)" -eq 2 ]'

run "$OPENSSL" x509 -in "$CA/ca.crt" -noout -text
check "the CA certificate: critical CA:TRUE and keyCertSign, trust domain in O=" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -A1 "Basic Constraints: critical" | grep -q "CA:TRUE" &&
	 echo "$OUT" | grep -A1 "Key Usage: critical" | grep -q "Certificate Sign, CRL Sign" &&
	 echo "$OUT" | grep -q "Subject: CN = amesh root CA, O = cluster.local"'

run "$AMESH" ca issue --dir "$CA" --namespace default --service-account reviews --out "$CERTS"
check "ca issue writes an identity" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^issued $ID, valid until " &&
	 [ -s "$CERTS/default/reviews.crt" ] && [ -s "$CERTS/default/reviews.key" ]'
check "the key is 0600, the certificate 0644, the namespace directory 0755" \
	'[ "$(mode "$CERTS/default/reviews.key")" = 600 ] &&
	 [ "$(mode "$CERTS/default/reviews.crt")" = 644 ] && [ "$(mode "$CERTS/default")" = 755 ]'

"$OPENSSL" x509 -in "$CERTS/default/reviews.crt" -out "$TMP/leaf.pem"
run "$OPENSSL" verify -CAfile "$CA/ca.crt" "$TMP/leaf.pem"
check "openssl verify: the leaf alone is OK under ca.crt" '[ "$RC" -eq 0 ] && [ "$OUT" = "$TMP/leaf.pem: OK" ]'
run "$OPENSSL" verify -CAfile "$CA/ca.crt" -untrusted "$CERTS/default/reviews.crt" \
	"$CERTS/default/reviews.crt"
check "openssl verify: the chain file is OK under ca.crt" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "$CERTS/default/reviews.crt: OK" ]'
run "$OPENSSL" verify -x509_strict -purpose sslserver -CAfile "$CA/ca.crt" "$TMP/leaf.pem"
check "openssl verify: fit for a TLS server (x509_strict)" '[ "$RC" -eq 0 ]'
run "$OPENSSL" verify -x509_strict -purpose sslclient -CAfile "$CA/ca.crt" "$TMP/leaf.pem"
check "openssl verify: fit for a TLS client (x509_strict)" '[ "$RC" -eq 0 ]'
"$AMESH" ca init --dir "$TMP/other" >/dev/null
run "$OPENSSL" verify -CAfile "$TMP/other/ca.crt" "$TMP/leaf.pem"
check "openssl verify: refused under another CA" '[ "$RC" -ne 0 ]'

run "$OPENSSL" x509 -in "$TMP/leaf.pem" -noout -text
check "the certificate carries the URI SAN $ID" 'echo "$OUT" | grep -q "URI:$ID"'
check "and no other subject alternative name" \
	'[ "$(echo "$OUT" | grep -A1 "Subject Alternative Name" | tail -n 1 | sed "s/^ *//")" = "URI:$ID" ]'
check "keyUsage is a critical digitalSignature, basicConstraints CA:FALSE" \
	'echo "$OUT" | grep -A1 "Key Usage: critical" | grep -qx " *Digital Signature" &&
	 echo "$OUT" | grep -A1 "Basic Constraints" | grep -q "CA:FALSE"'
check "the key is ECDSA P-256 and the signature ECDSA with SHA-256" \
	'echo "$OUT" | grep -q "NIST CURVE: P-256" && echo "$OUT" | grep -q "Signature Algorithm: ecdsa-with-SHA256"'
run "$OPENSSL" x509 -in "$TMP/leaf.pem" -noout -ext extendedKeyUsage
check "extendedKeyUsage: TLS Web Server and Client Authentication" \
	'echo "$OUT" | grep -q "TLS Web Server Authentication" && echo "$OUT" | grep -q "TLS Web Client Authentication"'
check "the key file matches the certificate" 'key_matches "$CERTS/default/reviews.key" "$TMP/leaf.pem"'

run "$AMESH" ca show "$CERTS/default/reviews.crt"
check "ca show prints the SPIFFE ID" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -qx "spiffe id   $ID"'
check "ca show prints both certificates of the chain" \
	'echo "$OUT" | grep -qx "certificate 1 of 2" && echo "$OUT" | grep -qx "certificate 2 of 2" &&
	 [ "$(echo "$OUT" | grep -c "^key         ECDSA P-256$")" -eq 2 ] &&
	 echo "$OUT" | grep -qx "ca          no" && echo "$OUT" | grep -qx "ca          yes" &&
	 echo "$OUT" | grep -qx "subject     CN=reviews, OU=default, O=cluster.local" &&
	 echo "$OUT" | grep -qx "issuer      CN=amesh root CA, O=cluster.local"'
end=$(date -u -d "$("$OPENSSL" x509 -in "$TMP/leaf.pem" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)
start=$(date -u -d "$("$OPENSSL" x509 -in "$TMP/leaf.pem" -noout -startdate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ)
check "ca show gives the validity in UTC ISO 8601, as OpenSSL reads it" \
	'echo "$OUT" | grep -qx "not after   $end" && echo "$OUT" | grep -qx "not before  $start"'
run "$AMESH" ca show "$CERTS/default/reviews.key"
check "ca show of a key file fails, naming it" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "reviews.key: not a certificate"'

serial=$("$OPENSSL" x509 -in "$CERTS/default/reviews.crt" -noout -serial)
run "$AMESH" ca issue --dir "$CA" --namespace default --service-account reviews --out "$CERTS" --days 2
check "issuing again rotates: a new certificate and key, same modes, no leftovers" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^rotated $ID, valid until " &&
	 [ "$("$OPENSSL" x509 -in "$CERTS/default/reviews.crt" -noout -serial)" != "$serial" ] &&
	 [ "$(mode "$CERTS/default/reviews.key")" = 600 ] &&
	 [ "$(ls -A "$CERTS/default" | tr "\n" " ")" = "reviews.crt reviews.key " ]'
check "--days sets the validity" \
	'"$OPENSSL" x509 -in "$CERTS/default/reviews.crt" -noout -checkend $((2 * 86400 - 60)) >/dev/null &&
	 ! "$OPENSSL" x509 -in "$CERTS/default/reviews.crt" -noout -checkend $((2 * 86400 + 600)) >/dev/null'

run "$AMESH" ca init --dir "$TMP/td" --trust-domain example.org --days 10
run "$AMESH" ca issue --dir "$TMP/td" --namespace ns1 --service-account sa1 --out "$TMP/tdcerts"
check "--trust-domain: the CA's domain goes into the identities it issues" \
	'[ "$RC" -eq 0 ] && "$OPENSSL" x509 -in "$TMP/tdcerts/ns1/sa1.crt" -noout -text | grep -q "URI:spiffe://example.org/ns/ns1/sa/sa1"'

# The examples' staging paths (/srv/node-a/certs) have no parent on a fresh host.
run "$AMESH" ca issue --dir "$CA" --namespace default --service-account reviews --out "$TMP/srv/node-a/certs"
check "ca issue creates the missing parents of --out (0700), --out itself 0755" \
	'[ "$RC" -eq 0 ] && [ -s "$TMP/srv/node-a/certs/default/reviews.key" ] &&
	 [ "$(mode "$TMP/srv")" = 700 ] && [ "$(mode "$TMP/srv/node-a")" = 700 ] &&
	 [ "$(mode "$TMP/srv/node-a/certs")" = 755 ]'
run "$AMESH" ca init --dir "$TMP/fresh/amesh-ca"
check "ca init creates the missing parents of --dir (0700)" \
	'[ "$RC" -eq 0 ] && [ -s "$TMP/fresh/amesh-ca/ca.key" ] && [ "$(mode "$TMP/fresh")" = 700 ] &&
	 [ "$(mode "$TMP/fresh/amesh-ca")" = 700 ]'

run "$AMESH" ca issue --dir "$TMP/missing" --namespace a --service-account b --out "$CERTS"
check "ca issue without a CA exits 1, naming the file" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "$TMP/missing/ca.crt: cannot open: No such file or directory"'

# Fingerprints: lowercase hex of SHA-256 over the DER, as OpenSSL computes it.
fpr() { "$OPENSSL" x509 -in "$1" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr A-F a-f; }
run "$AMESH" ca init --dir "$TMP/root"
ROOT_FP=sha256:$(fpr "$TMP/root/ca.crt")
check "ca init prints the root's fingerprint" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -qx "fingerprint $ROOT_FP"'

# An intermediate per CA instance: the root key can stay offline.
IM=$TMP/im
run "$AMESH" ca intermediate --root-dir "$TMP/root" --dir "$IM" --name ca-1
check "ca intermediate writes ca.crt, ca.key and bundle.crt, and prints the root's fingerprint" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^created $IM/ca.crt: intermediate CA ca-1 of trust domain cluster.local, valid until " &&
	 echo "$OUT" | grep -qx "created $IM/ca.key (mode 0600): keep it secret" &&
	 echo "$OUT" | grep -qx "created $IM/bundle.crt: the trust bundle (the root)" &&
	 echo "$OUT" | grep -qx "root fingerprint $ROOT_FP"'
check "ca.key 0600, ca.crt and bundle.crt 0644, the directory 0700; bundle.crt is the root" \
	'[ "$(mode "$IM/ca.key")" = 600 ] && [ "$(mode "$IM/ca.crt")" = 644 ] &&
	 [ "$(mode "$IM/bundle.crt")" = 644 ] && [ "$(mode "$IM")" = 700 ] &&
	 cmp -s "$IM/bundle.crt" "$TMP/root/ca.crt"'
run "$OPENSSL" x509 -in "$IM/ca.crt" -noout -text
check "the intermediate: CA:TRUE pathlen:0, keyCertSign and cRLSign, issued by the root" \
	'echo "$OUT" | grep -A1 "Basic Constraints: critical" | grep -q "CA:TRUE, pathlen:0" &&
	 echo "$OUT" | grep -A1 "Key Usage: critical" | grep -q "Certificate Sign, CRL Sign" &&
	 echo "$OUT" | grep -q "Subject: CN = amesh intermediate CA ca-1, O = cluster.local" &&
	 echo "$OUT" | grep -q "Issuer: CN = amesh root CA, O = cluster.local"'
run "$OPENSSL" verify -x509_strict -CAfile "$IM/bundle.crt" "$IM/ca.crt"
check "openssl verify: the intermediate is OK under its bundle (x509_strict)" '[ "$RC" -eq 0 ]'
sum=$(cksum <"$IM/ca.key")
run "$AMESH" ca intermediate --root-dir "$TMP/root" --dir "$IM" --name ca-2
check "ca intermediate refuses an existing CA and changes nothing" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "$IM/ca.key: already exists" &&
	 [ "$(cksum <"$IM/ca.key")" = "$sum" ] && [ "$(ls -A "$IM" | wc -l)" -eq 3 ]'
run "$AMESH" ca intermediate --root-dir "$IM" --dir "$TMP/im2" --name x
check "an intermediate signs no intermediate" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "holds the intermediate CA .ca-1., not a root" &&
	 [ ! -e "$TMP/im2" ]'

# Issued from the intermediate: the chain is the leaf and the intermediate, never the root.
second() { awk '/BEGIN CERT/ { n++ } n == 2' "$1"; }
run "$AMESH" ca issue --dir "$IM" --namespace default --service-account reviews --out "$TMP/imcerts"
check "ca issue from an intermediate writes the leaf and the intermediate" \
	'[ "$RC" -eq 0 ] && [ "$(grep -c "BEGIN CERTIFICATE" "$TMP/imcerts/default/reviews.crt")" -eq 2 ] &&
	 [ "$(second "$TMP/imcerts/default/reviews.crt")" = "$(cat "$IM/ca.crt")" ]'
second "$TMP/imcerts/default/reviews.crt" >"$TMP/untrusted.pem"
"$OPENSSL" x509 -in "$TMP/imcerts/default/reviews.crt" -out "$TMP/imleaf.pem"
run "$OPENSSL" verify -x509_strict -purpose sslserver -CAfile "$IM/bundle.crt" -untrusted "$TMP/untrusted.pem" \
	"$TMP/imleaf.pem"
check "openssl verify: the workload chains through the intermediate to bundle.crt" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "$TMP/imleaf.pem: OK" ]'
run "$OPENSSL" verify -CAfile "$IM/bundle.crt" "$TMP/imleaf.pem"
check "openssl verify: and not without the intermediate" '[ "$RC" -ne 0 ]'

# Node identities, offline.
NODE=$TMP/nodes/node-a
run "$AMESH" ca issue --dir "$IM" --node node-a --out "$NODE"
check "ca issue --node writes node.crt (0644) and node.key (0600)" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^issued spiffe://cluster.local/amesh/node/node-a, valid until " &&
	 echo "$OUT" | grep -qx "wrote $NODE/node.crt (with the intermediate CA certificate)" &&
	 [ "$(mode "$NODE/node.key")" = 600 ] && [ "$(mode "$NODE/node.crt")" = 644 ] &&
	 [ "$(ls -A "$NODE" | tr "\n" " ")" = "node.crt node.key " ]'
second "$NODE/node.crt" >"$TMP/untrusted.pem"
"$OPENSSL" x509 -in "$NODE/node.crt" -out "$TMP/nodeleaf.pem"
run "$OPENSSL" verify -x509_strict -purpose sslclient -CAfile "$IM/bundle.crt" -untrusted "$TMP/untrusted.pem" \
	"$TMP/nodeleaf.pem"
check "openssl verify: the node certificate chains to bundle.crt, fit for a TLS client" '[ "$RC" -eq 0 ]'
run "$OPENSSL" verify -purpose sslserver -CAfile "$IM/bundle.crt" -untrusted "$TMP/untrusted.pem" "$TMP/nodeleaf.pem"
check "openssl verify: but not for a TLS server (clientAuth only)" '[ "$RC" -ne 0 ]'
run "$OPENSSL" x509 -in "$TMP/nodeleaf.pem" -noout -text
check "the node certificate: the URI SAN spiffe://cluster.local/amesh/node/node-a alone" \
	'[ "$(echo "$OUT" | grep -A1 "Subject Alternative Name" | tail -n 1 | sed "s/^ *//")" = "URI:spiffe://cluster.local/amesh/node/node-a" ]'
check "node.key matches node.crt" 'key_matches "$NODE/node.key" "$NODE/node.crt"'

run "$AMESH" ca show "$NODE/node.crt"
check "ca show prints each certificate's fingerprint" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -qx "fingerprint sha256:$(fpr "$TMP/nodeleaf.pem")" &&
	 echo "$OUT" | grep -qx "fingerprint sha256:$(fpr "$IM/ca.crt")"'

# An intermediate whose ca.crt does not chain to its bundle.crt is refused.
cp -R "$IM" "$TMP/imbad"
cp "$TMP/other/ca.crt" "$TMP/imbad/bundle.crt"
run "$AMESH" ca issue --dir "$TMP/imbad" --node node-a --out "$TMP/nodes/bad"
check "ca issue refuses an intermediate that does not chain to bundle.crt" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "$TMP/imbad/ca.crt does not chain to a root of $TMP/imbad/bundle.crt" &&
	 [ ! -e "$TMP/nodes/bad" ]'

# Each line: arguments that must be refused with exit 2 and a usage line.
bad=0
while IFS= read -r args; do
	# shellcheck disable=SC2086
	run "$AMESH" $args
	if [ "$RC" -ne 2 ] || ! echo "$ERR" | grep -q "^usage: amesh ca"; then
		echo "# not a usage error (exit $RC): amesh $args"
		printf '%s\n' "$ERR" | sed 's/^/#   /'
		bad=$((bad + 1))
	fi
done <<EOF
ca
ca frob
ca init
ca init --dir
ca init --dir $TMP/x --frob
ca init --dir $TMP/x -z
ca init --dir $TMP/x --days 0
ca init --dir $TMP/x --days 12x
ca init --dir $TMP/x --trust-domain Bad.Domain
ca init --dir $TMP/x extra
ca init --dir $TMP/x --namespace default
ca issue --dir $CA --namespace default --out $CERTS
ca issue --dir $CA --service-account a --namespace .. --out $CERTS
ca issue --dir $CA --service-account a/b --namespace default --out $CERTS
ca issue --dir $CA --service-account a --namespace default --out $CERTS --days 99999999
ca issue --dir $CA --node n1 --namespace default --out $CERTS
ca issue --dir $CA --node n1 --service-account sa --out $CERTS
ca issue --dir $CA --node a/b --out $TMP/x
ca issue --dir $CA --node .. --out $TMP/x
ca issue --dir $CA --out $TMP/x
ca intermediate
ca intermediate --root-dir $CA --dir $TMP/x
ca intermediate --root-dir $CA --name a
ca intermediate --dir $TMP/x --name a
ca intermediate --root-dir $CA --dir $TMP/x --name a/b
ca intermediate --root-dir $CA --dir $TMP/x --name a --days 0
ca intermediate --root-dir $CA --dir $TMP/x --name a extra
ca show
ca show a b
ca show --dir x
EOF
check "bad subcommands, options and values exit 2 with a usage line" '[ "$bad" -eq 0 ] && [ ! -e "$TMP/x" ]'

# amesh check sees the identities issued into its cert_dir.
"$AMESH" ca issue --dir "$CA" --namespace default --service-account productpage --out "$CERTS" >/dev/null
sed -e "s|^;cert_dir = .*|cert_dir = $CERTS|" -e "s|^registry = registry.d|registry = $SRCDIR/etc/registry.d|" \
	-e "s|^trust_bundle = ca.crt|trust_bundle = $CA/ca.crt|" "$SRCDIR/etc/amesh.conf" >"$TMP/amesh.conf"
run "$AMESH" check -c "$TMP/amesh.conf"
check "amesh check reports the issued identities and the bundle present" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^identity  spiffe://cluster.local/ns/default/sa/productpage (workload): present$" &&
	 echo "$OUT" | grep -q "^identity  $ID (workload): present$" &&
	 echo "$OUT" | grep -q "^bundle    $CA/ca.crt: present$" && ! echo "$OUT" | grep -q "^warning"'

tap_done
