#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Rotation of the CA itself (issue 14), with traffic running and no failed connection: a new
# intermediate; then a new root, through a trust bundle that holds the old and the new root, then
# the new one only. The steps are those of amesh-ca(8) ROTATION; the nodes' ztunnels follow on
# their own (the agent fetches the bundle and renews what the previous CA signed), prompted here
# by SIGHUP (systemctl reload) instead of waiting for the bundle refresh.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"
. "$SRCDIR/tests/e2e/lib-ca.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft openssl curl; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install nftables openssl curl)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 14

TTL=40
lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
ca_host || { echo "Bail out! ca_host failed"; exit 1; }
node_confs || exit 1
ca_start 1
lab_wait_ready ha 15213
for h in a b; do
	cp "$CAH/root/ca.crt" "$LAB_DIR/node-$h/bundle.crt"
	join "$h" --token "$(token --node "node-$h")"
done
for ns in a1 b1; do
	start "srv_$ns" $(lab_in $ns) "$LAB_PY" "$LAB_PEER" serve --port 8080 || exit 1
done
zt_start a
zt_start b
lab_wait_ready ha && lab_wait_ready hb
enroll a a1 client-a
enroll b b1 echo-b
conn a1 "$LAB_B1" 8080
check "the lab is meshed with certificates from ca1" \
	'echo "$OUT" | grep -q "local $LAB_B1 8080" && issuer "$LAB_DIR/node-b/certs/default/echo.crt" | grep -q ca1'

# Traffic all along: a new connection every 0.2 s from client-a to echo-b; failures are counted.
cat >"$TMP/traffic.py" <<'EOF'
import os, socket, sys, time
addr, stop = sys.argv[1], sys.argv[2]
ok = bad = 0
while not os.path.exists(stop):
    try:
        s = socket.create_connection((addr, 8080), timeout=3)
        s.sendall(b"rot\n")
        if s.makefile("rb").readline().startswith(b"peer "):
            ok += 1
        else:
            bad += 1
        s.close()
    except OSError as e:
        bad += 1
        print("failed:", e, flush=True)
    time.sleep(0.2)
print("ok", ok, "failed", bad, flush=True)
EOF
lab_exec a1 "$LAB_PY" "$TMP/traffic.py" "$LAB_B1" "$TMP/stop" >"$TMP/traffic.out" 2>&1 &
TRAFFIC=$!

# all_issued_by NAME: every certificate the nodes use (workloads' and nodes') is NAME's, within 30 s
certs() { ls "$LAB_DIR"/node-?/certs/*/*.crt "$LAB_DIR"/node-?/node/node.crt; }
all_issued_by() {
	_i=0
	while [ $_i -lt 150 ]; do
		_left=0
		for _f in $(certs); do
			issuer "$_f" | grep -q "CA $1," || _left=$((_left + 1))
		done
		[ $_left -eq 0 ] && return 0
		sleep 0.2
		_i=$((_i + 1))
	done
	return 1
}
# bundles_hold N: both nodes' trust bundles hold N certificates, within 10 s
bundles_hold() {
	_i=0
	while [ $_i -lt 50 ]; do
		[ "$(grep -c BEGIN "$LAB_DIR/node-a/bundle.crt")" -eq "$1" ] &&
			[ "$(grep -c BEGIN "$LAB_DIR/node-b/bundle.crt")" -eq "$1" ] && return 0
		sleep 0.2
		_i=$((_i + 1))
	done
	return 1
}
install_ca() { # install_ca DIR: the CA in DIR becomes ca1's, then ca1 reloads
	cp "$1/ca.crt" "$1/ca.key" "$1/bundle.crt" "$CAH/ca1/" && ca_hup 1
}

# --- 1. A new intermediate from the same root. ----------------------------------------------------
run "$AMESH" ca intermediate --root-dir "$CAH/root" --dir "$CAH/ca1b" --name ca1b
install_ca "$CAH/ca1b"
sleep 0.5
zt_hup a
zt_hup b
check "after a new intermediate (ca1b) and a reload, every certificate is renewed by ca1b" \
	'all_issued_by ca1b'
conn a1 "$LAB_B1" 8080
check "traffic flows with the new certificates" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'

# --- 2. A new root: old and new roots in the bundle first. -----------------------------------------
"$AMESH" ca init --dir "$CAH/root2" >/dev/null
cat "$CAH/root/ca.crt" "$CAH/root2/ca.crt" >"$CAH/ca1/bundle.crt"
ca_hup 1
sleep 0.5
zt_hup a
zt_hup b
check "the nodes fetch the bundle with both roots" 'bundles_hold 2'
run "$AMESH" ca intermediate --root-dir "$CAH/root2" --dir "$CAH/ca1r2" --name ca1r2
cat "$CAH/root/ca.crt" "$CAH/root2/ca.crt" >"$CAH/ca1r2/bundle.crt"
install_ca "$CAH/ca1r2"
sleep 0.5
zt_hup a
zt_hup b
check "an intermediate of the new root (ca1r2): every certificate is renewed by it" \
	'all_issued_by ca1r2'
bad=""
for f in $(certs); do
	openssl verify -CAfile "$CAH/root2/ca.crt" -untrusted "$f" "$f" >/dev/null 2>&1 || bad="$bad $f"
done
check "every certificate in use chains to the new root" '[ -z "$bad" ]'

# --- 3. The old root leaves the bundle. ------------------------------------------------------------
cp "$CAH/root2/ca.crt" "$CAH/ca1/bundle.crt"
ca_hup 1
sleep 0.5
zt_hup a
zt_hup b
check "the nodes fetch the bundle with the new root only" 'bundles_hold 1'
check "it is the new root" 'cmp -s "$LAB_DIR/node-a/bundle.crt" "$CAH/root2/ca.crt"'
conn a1 "$LAB_B1" 8080
check "traffic flows on the new root alone" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'
run "$AMESH" ca token -c "$CAH/ca1.conf" --node node-b
TOK=$OUT
rm -rf "$LAB_DIR/node-b/node"
join b --token "$TOK"
check "a node joins with the new bundle" '[ "$RC" -eq 0 ]'
check "both ztunnels stayed ready" 'lab_ready ha && lab_ready hb'
# A certificate of the old root is refused now (a peer that missed the rotation).
"$AMESH" ca issue --dir "$CAH/root" --namespace default --service-account client --out "$TMP/old" >/dev/null
check "a certificate of the old root no longer verifies against the nodes' bundle" \
	'! openssl verify -CAfile "$LAB_DIR/node-a/bundle.crt" "$TMP/old/default/client.crt" >/dev/null 2>&1'

touch "$TMP/stop"
wait "$TRAFFIC"
OUT=$(tail -n 1 "$TMP/traffic.out")
check "no connection failed through both rotations ($OUT)" \
	'echo "$OUT" | grep -q "^ok [1-9][0-9]* failed 0$"'
check "the CA logged no refusal" \
	'[ "$(ca_metric 1 "amesh_ca_refused_total{reason=\"bad_csr\"}")" = 0 ] && ! grep -q "refused" "$TMP/ca1.err"'
tap_done
