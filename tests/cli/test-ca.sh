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
plan 29

mode() { stat -c %a "$1"; }

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
pub_key=$("$OPENSSL" pkey -in "$CERTS/default/reviews.key" -pubout)
pub_crt=$("$OPENSSL" x509 -in "$TMP/leaf.pem" -noout -pubkey)
check "the key file matches the certificate" '[ -n "$pub_key" ] && [ "$pub_key" = "$pub_crt" ]'

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
