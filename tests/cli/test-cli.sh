#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Drives the built amesh binary the way a user does: help, version, check, bad configs, CNI mode.
. "$(dirname "$0")/../lib.sh"

CONF=$SRCDIR/etc/amesh.conf
plan 39

run "$AMESH" --help
check "--help exits 0" '[ "$RC" -eq 0 ]'
check "--help lists the six commands" \
	'for c in ztunnel waypoint sidecar cni ca check; do echo "$OUT" | grep -q "^  $c " || exit 1; done'

run "$AMESH" --version
check "--version prints the version" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -Eq "^amesh [0-9]+\.[0-9]+\.[0-9]+$"'

run "$AMESH" check --help
check "check --help shows the command's usage" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^usage: amesh check" && echo "$OUT" | grep -q "amesh-check(8)"'

run "$AMESH" check -c "$CONF"
check "check accepts the sample config" '[ "$RC" -eq 0 ] && echo "$OUT" | tail -n 1 | grep -qx ok'
check "check shows counts per kind" \
	'echo "$OUT" | grep -q "nodes: 2, workloads: 4, services: 2, waypoints: 1, policies: 2, routes: 1"'
check "check shows this node's workloads" \
	'echo "$OUT" | grep -q "^workload  default/reviews-v1 sa=reviews addresses=10.1.1.3,fd00:1::3 protocol=hbone" &&
	 ! echo "$OUT" | grep -q "^workload .*reviews-v2"'
check "check lists the expected identities" \
	'echo "$OUT" | grep -q "^identity  spiffe://cluster.local/ns/default/sa/productpage (workload): missing"'
check "check shows what each route backend resolved to" \
	'echo "$OUT" | grep -qxF "route     default/reviews-canary: backend reviews-v1 -> workload default/reviews-v1, weight 90" &&
	 echo "$OUT" | grep -qxF "route     default/reviews-canary: backend reviews-v2 -> workload default/reviews-v2, weight 10"'
first=$OUT

run "$AMESH" -c "$CONF" check
check "-c before the command means the same" '[ "$RC" -eq 0 ] && [ "$OUT" = "$first" ]'
run "$AMESH" --config="$CONF" -q check -vv
check "--config= and -v/-q anywhere" '[ "$RC" -eq 0 ] && [ "$OUT" = "$first" ]'

# Identities present in cert_dir are reported as such.
mkdir -p "$TMP/certs/default"
: >"$TMP/certs/default/productpage.crt"
: >"$TMP/certs/default/productpage.key"
: >"$TMP/certs/default/reviews.crt"
sed "s|^;cert_dir = .*|cert_dir = $TMP/certs|" "$CONF" >"$TMP/withcerts.conf"
sed -i "s|^registry = registry.d|registry = $SRCDIR/etc/registry.d|" "$TMP/withcerts.conf"
run "$AMESH" check -c "$TMP/withcerts.conf"
check "check sees present and half-present identities" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "sa/productpage (workload): present" &&
	 echo "$OUT" | grep -q "sa/reviews (workload): missing key"'

run "$AMESH" frobnicate
check "unknown command exits 2" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "unknown command .frobnicate."'
run "$AMESH" --frob check
check "unknown option exits 2" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "unknown option .--frob."'
run "$AMESH" check --log-format=xml
check "bad --log-format exits 2" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "expected text or json"'
run "$AMESH"
check "no command prints usage and exits 2" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "^usage: amesh"'

run "$AMESH" -c "$CONF" sidecar --workload
check "sidecar --workload without a value: exit 2 with the usage" \
	'[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "^usage: amesh sidecar \[-c FILE\] \[--workload NAME\]"'

ln -s "$AMESH" "$TMP/amesh-cni"
run env -u CNI_COMMAND "$TMP/amesh-cni"
check "called as amesh-cni without CNI_COMMAND: CNI error 4 in JSON" \
	'[ "$RC" -ne 0 ] && echo "$OUT" | grep -q "\"code\":4" && echo "$OUT" | grep -q "\"cniVersion\""'
run env CNI_COMMAND=VERSION "$AMESH" check
check "CNI_COMMAND in the environment takes the CNI path (VERSION)" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "\"supportedVersions\":\[\"1.0.0\",\"1.1.0\"\]"'

run "$AMESH" check -c "$TMP/missing.conf"
check "missing config file is named" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "^$TMP/missing.conf: cannot open: No such file or directory"'

# bad_conf NAME TEXT EXPECTED: amesh check on a config with TEXT fails with EXPECTED on stderr.
bad_conf() {
	want="$TMP/bad.conf:$3"
	printf "$2" >"$TMP/bad.conf"
	run "$AMESH" check -c "$TMP/bad.conf"
	check "$1 (and nothing said ok)" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -qxF "$want" &&
	 ! echo "$OUT" | grep -q ": ok"'
}
bad_conf "config: unknown key" '[mesh]\nnode = node-a\nnodes = x\n' \
	"3: unknown key 'nodes' in [mesh]"
bad_conf "config: bad port" '[ztunnel]\nhbone_port = 150080\n' \
	"2: [ztunnel] hbone_port: '150080': port out of range 1-65535"
bad_conf "config: bad duration" '[ztunnel]\n\ndrain_timeout = 5 sec\n' \
	"3: [ztunnel] drain_timeout: '5 sec': unknown duration unit (use ms, s, m, h or d)"
long=$(printf '%0250d' 0)
bad_conf "config: over-long line" "[mesh]\\n; $long\\n" \
	"2: line too long (252 bytes; at most 198)"

# bad_reg NAME TEXT EXPECTED: the registry file TEXT (after the sample one) fails with EXPECTED.
bad_reg() {
	rm -rf "$TMP/reg.d"
	mkdir -p "$TMP/reg.d"
	cp "$SRCDIR/etc/registry.d/example.conf" "$TMP/reg.d/10-example.conf"
	printf "$2" >"$TMP/reg.d/20-bad.conf"
	printf '[mesh]\nnode = node-a\nregistry = reg.d\n' >"$TMP/reg.conf"
	want="$TMP/reg.d/20-bad.conf:$3"
	run "$AMESH" check -c "$TMP/reg.conf"
	check "$1 (and nothing said ok)" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -qxF "$want" &&
	 ! echo "$OUT" | grep -q ": ok"'
}
bad_reg "registry: duplicate workload address" \
	'[workload "x"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.3\n' \
	"4: workload \"x\": address 10.1.1.3 is already used by workload \"reviews-v1\" ($TMP/reg.d/10-example.conf:17)"
bad_reg "registry: route to a missing service" \
	'\n[route "r"]\nnamespace = default\nservice = ratings\nbackends = reviews\n' \
	"4: route \"r\": service \"ratings\" is not defined"
# A workload named as the sample's service "reviews": a bare backend "reviews" could mean either.
amb='[workload "reviews"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.5\n\n[route "r"]\nnamespace = default\nservice = reviews\n'
bad_reg "registry: a backend that is both a service and a workload" \
	"${amb}backends = reviews\n" \
	"9: route \"r\": backend \"reviews\" is both service \"reviews\" ($TMP/reg.d/10-example.conf:44) and workload \"reviews\" ($TMP/reg.d/20-bad.conf:1); write service/reviews or workload/reviews"
printf "${amb}backends = service/reviews 90, workload/reviews 10\n" >"$TMP/reg.d/20-bad.conf"
run "$AMESH" check -c "$TMP/reg.conf"
check "check: service/ and workload/ say which, and check shows it" \
	'[ "$RC" -eq 0 ] &&
	 echo "$OUT" | grep -qxF "route     default/r: backend service/reviews -> service default/reviews, weight 90" &&
	 echo "$OUT" | grep -qxF "route     default/r: backend workload/reviews -> workload default/reviews, weight 10"'

printf '[mesh]\nnode = node-z\nregistry = %s/etc/registry.d\n' "$SRCDIR" >"$TMP/node.conf"
run "$AMESH" check -c "$TMP/node.conf"
check "check: node missing from the registry" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -qxF "$TMP/node.conf:2: [mesh] node \"node-z\" is not defined in the registry $SRCDIR/etc/registry.d" &&
	 echo "$ERR" | grep -qxF "amesh check: $TMP/node.conf: invalid" && ! echo "$OUT" | grep -q ": ok"'

# One amesh.conf serves every waypoint of the host (amesh waypoint --name): without [waypoint] name
# check shows this node's waypoints; a name the registry lacks is an error, never after "ok".
mkdir -p "$TMP/wpreg.d"
sed 's/default-wp/wp-a/' "$SRCDIR/etc/registry.d/example.conf" >"$TMP/wpreg.d/example.conf"
printf '[mesh]\nnode = node-a\nregistry = wpreg.d\n[waypoint]\nhbone_address = 10.1.1.9:15008\n' \
	>"$TMP/wpname.conf"
run "$AMESH" check -c "$TMP/wpname.conf"
check "check: [waypoint] without a name shows this node's waypoints ($(echo "$ERR" | head -n 1))" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -qxF "waypoint  default/wp-a sa=waypoint address=10.1.1.9" &&
	 echo "$OUT" | grep -q "^identity  spiffe://cluster.local/ns/default/sa/waypoint (waypoint): missing"'
printf 'name = wp-z\n' >>"$TMP/wpname.conf"
run "$AMESH" check -c "$TMP/wpname.conf"
check "check: a [waypoint] name the registry lacks fails, and config is not said ok" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -qxF "$TMP/wpname.conf:6: [waypoint] name \"wp-z\" is not defined in the registry" &&
	 ! echo "$OUT" | grep -q ": ok"'

# A [sidecar] section without a workload serves the sidecars --workload names (amesh-sidecar@NAME).
printf '[mesh]\nnode = node-a\nregistry = %s/etc/registry.d\n[sidecar]\nl7 = on\n' "$SRCDIR" >"$TMP/sc.conf"
run "$AMESH" check -c "$TMP/sc.conf"
check "check: [sidecar] without a workload is valid and says who names one" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -qxF "sidecar   (no workload; amesh sidecar --workload NAME serves one)"'

# A waypoint that cannot start says what to do. Nothing here listens: it exits before.
WP=$TMP/wp
"$AMESH" ca init --dir "$WP/ca" >/dev/null
mkdir -p "$WP/certs"
wp_conf() { # wp_conf TRUST_BUNDLE HBONE_ADDRESS
	printf '[mesh]\nnode = node-a\nregistry = %s/etc/registry.d\ntrust_bundle = %s\n[identity]\ncert_dir = %s\n[waypoint]\nname = default-wp\nhbone_address = %s\nadmin_address = 127.0.0.1:25100\nmetrics_address = 127.0.0.1:25120\nreadiness_address = 127.0.0.1:25121\n' \
		"$SRCDIR" "$1" "$WP/certs" "$2" >"$WP/wp.conf"
}
wp_conf "$WP/nope.crt" 127.0.0.1:25108
run timeout 10 "$AMESH" -c "$WP/wp.conf" waypoint
check "waypoint: a trust bundle missing at start says no identity is loaded, not that previous ones stay" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "trust bundle $WP/nope.crt: .*no identity is loaded without it" &&
	 ! echo "$ERR" | grep -q "previous identities"'
wp_conf "$WP/ca/ca.crt" 127.0.0.1:25108
run timeout 10 "$AMESH" -c "$WP/wp.conf" waypoint
check "waypoint: a missing certificate names the amesh ca issue that makes it" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -qF "(issue it with amesh ca issue --dir CA_DIR --namespace default --service-account waypoint --out $WP/certs)"'
"$AMESH" ca issue --dir "$WP/ca" --namespace default --service-account waypoint --out "$WP/certs" >/dev/null
# 192.0.2.77 (TEST-NET-1) is on no host: bind fails with EADDRNOTAVAIL, and nothing is sent.
wp_conf "$WP/ca/ca.crt" 192.0.2.77:15008
run timeout 10 "$AMESH" -c "$WP/wp.conf" waypoint
check "waypoint: an hbone_address not on the host says to add it (ip addr add)" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -qF "cannot listen on 192.0.2.77:15008: address not available; 192.0.2.77 is not an address of this host: add it where the ztunnels reach it (ip addr add 192.0.2.77/32 dev IFACE)"'

# amesh registry: usage, and a config whose registry is a directory.
run "$AMESH" registry
check "registry without a subcommand: exit 2 with the usage" \
	'[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "push \[--force\] DIR"'
run "$AMESH" registry pull --force "$TMP/x"
check "registry pull --force: exit 2, --force is for push" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "force is for push"'
run "$AMESH" -c "$CONF" registry diff "$SRCDIR/etc/registry.d"
check "registry diff with a directory registry says to set an etcd source" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "is not an etcd source"'
printf '[mesh]\nnode = node-a\nregistry = etcd://127.0.0.1:1/amesh\netcd_timeout = 200ms\nregistry_cache = %s/none.cache\n' "$TMP" >"$TMP/etcd.conf"
run "$AMESH" check -c "$TMP/etcd.conf"
check "check with an etcd source nobody serves names the endpoint and fails" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "127.0.0.1:1: connect: connection refused"'

tap_done
