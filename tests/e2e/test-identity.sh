#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Identities delivered, not copied (issue 14), with the real parts of the two-host lab: a CA host
# (two `amesh ca serve` instances, each signing with its own intermediate of one offline root)
# and two nodes that join with single-use tokens; their ztunnels make each workload's key
# locally, obtain its certificate from the CA when the workload is enrolled, and renew it under
# live traffic. The CA refuses what the registry does not place on the asking node, bad tokens
# and bad CSRs, and counts each refusal; a node keeps serving while the CA is down and fails over
# to the second instance.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"
. "$SRCDIR/tests/e2e/lib-ca.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft tcpdump openssl curl; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install nftables tcpdump openssl curl)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 48

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
PY=$LAB_PY
TTL=30 # seconds: certificates renew every 12-18 s during the test
ca_host
RC=$?
check "a root and two intermediates (one per CA instance)" '[ "$RC" -eq 0 ] && [ -f "$CAH/ca2/bundle.crt" ]'
ca_start 1
ca_start 2
lab_wait_ready ha 15213 && lab_wait_ready ha 15223
check "both CA instances serve (readiness 200)" 'lab_ready ha 15213 && lab_ready ha 15223'

# --- The nodes: amesh.conf with the CA's addresses; no certificate, no bundle yet. ---------------
node_confs
TOK_A=$(token --node node-a)
join a --token "$TOK_A" --ca-fingerprint "$FPR"
check "node-a joins with a token and the root's fingerprint" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "joined as spiffe://cluster.local/amesh/node/node-a"'
check "the join wrote the trust bundle (the root) and the node key with mode 0600" \
	'cmp -s "$LAB_DIR/node-a/bundle.crt" "$CAH/root/ca.crt" &&
	 [ "$(stat -c %a "$LAB_DIR/node-a/node/node.key")" = 600 ]'
TOK_B=$(token --node node-b)
echo "$TOK_B" >"$TMP/tok-b"
cp "$CAH/root/ca.crt" "$LAB_DIR/node-b/bundle.crt"
join b --token-file "$TMP/tok-b"
check "node-b joins with a token file and a bundle installed beforehand" '[ "$RC" -eq 0 ]'

join a --token "$TOK_A"
check "the same token again is refused: already used" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "refused (401): join token for node node-a already used"'
TOK=$(token --node node-a --ttl 1s)
sleep 2
join a --token "$TOK"
check "an expired token is refused" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "expired at"'
TOK=$(token --node node-b)
join a --token "$TOK"
check "node-a with node-b's token is refused (the CSR names node-a)" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "refused (400)" && echo "$ERR" | grep -q "node-b"'
run "$AMESH" ca token -c "$CAH/ca1.conf" --node ghost
check "no token for a node the registry does not have" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "node ghost is not in the registry"'
# A token made without the registry check (--dir only) for a node that is not in it.
TOK=$("$AMESH" ca token --dir "$CAH/ca1" --node ghost 2>/dev/null)
sed -e 's/^node = node-a/node = ghost/' -e "s|node-a/node/|ghost/|" "$LAB_DIR/node-a.conf" >"$TMP/ghost.conf"
run lab_exec ha "$AMESH" -c "$TMP/ghost.conf" ca join --token "$TOK"
check "a join of an unknown node is refused (403)" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "refused (403): node ghost (of this token) is not in the registry"'
run lab_exec ha "$AMESH" -c "$LAB_DIR/node-a.conf" ca join --token "amesh-join-garbage"
check "a malformed token is refused" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "join token malformed"'

# --- Workloads get their identities when enrolled. ------------------------------------------------
for ns in a1 a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done
cap_stop() {
	lab_cap_stop
	CAP_HBONE=$(lab_cap_count "tcp port 15008")
	CAP_CA=$(lab_cap_count "tcp port 15012")
	CAP_OTHER=$(lab_cap_count "not tcp port 15008 and not tcp port 15012")
}
zt_start a
zt_start b
lab_wait_ready ha && lab_wait_ready hb
check "both ztunnels start with only their node certificate" \
	'lab_ready ha && lab_ready hb && [ ! -e "$LAB_DIR/node-a/certs/default" ]'

lab_cap_start
t0=$(date +%s%N)
enroll a a1 client-a
rc1=$RC
t_add=$(( ($(date +%s%N) - t0) / 1000000 ))
enroll a a2 echo-a
rc2=$RC
enroll b b1 echo-b
check "cni add enrolls the workloads, each obtaining its certificate from the CA (the first in $t_add ms)" \
	'[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$RC" -eq 0 ]'
MARK=amesh-marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
conn a1 "$LAB_B1" 8080 "$MARK"
t1=$(date +%s%N)
check "client-a reaches echo-b across the hosts ($(( (t1 - t0) / 1000000 )) ms from the first cni add)" \
	'echo "$OUT" | grep -q "^peer $LAB_A1 .* local $LAB_B1 8080 msg $MARK"'
cap_stop
check "on the wire only TLS on 15008 ($CAP_HBONE packets) and 15012 ($CAP_CA), nothing else ($CAP_OTHER)" \
	'[ "$CAP_HBONE" -gt 0 ] && [ "$CAP_CA" -gt 0 ] && [ "$CAP_OTHER" -eq 0 ] && ! lab_cap_has "$MARK"'
check "keys were made on the nodes (mode 0600), certificates beside them" \
	'[ "$(stat -c %a "$LAB_DIR/node-a/certs/default/client.key")" = 600 ] &&
	 [ -f "$LAB_DIR/node-a/certs/default/echo.crt" ] && [ -f "$LAB_DIR/node-b/certs/default/echo.crt" ]'
run "$AMESH" ca show "$LAB_DIR/node-b/certs/default/echo.crt"
check "echo-b's certificate is spiffe://cluster.local/ns/default/sa/echo, issued by ca1" \
	'echo "$OUT" | grep -q "spiffe id   spiffe://cluster.local/ns/default/sa/echo" &&
	 issuer "$LAB_DIR/node-b/certs/default/echo.crt" | grep -q "ca1"'
bad=""
for f in "$LAB_DIR"/node-?/certs/*/*.crt "$LAB_DIR"/node-?/node/node.crt; do
	openssl verify -CAfile "$CAH/root/ca.crt" -untrusted "$f" "$f" >/dev/null 2>&1 || bad="$bad $f"
done
check "openssl verify accepts every issued chain against the root" '[ -z "$bad" ]'
keys=$(grep -rl "PRIVATE KEY" "$CAH" | sort | tr '\n' ' ')
check "the CA host holds no key but its CAs' ($keys)" \
	'[ "$keys" = "$CAH/ca1/ca.key $CAH/ca2/ca.key $CAH/root/ca.key " ]'

# --- The CA signs only what the registry places on the asking node. -------------------------------
csr() { # csr FILE ID [openssl req options...]: a P-256 CSR for ID
	f=$1
	id=$2
	shift 2
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$f.key" \
		-subj /O=cluster.local -addext "subjectAltName=URI:$id" "$@" -out "$f" 2>/dev/null
}
ask() { # ask a|b ID CSRFILE: POST /v1/sign as that node (curl -k: curl cannot check a SPIFFE ID)
	lab_exec "h$1" curl -sk --cert "$LAB_DIR/node-$1/node/node.crt" --key "$LAB_DIR/node-$1/node/node.key" \
		"https://$CA1:15012/v1/sign" -H "Amesh-Identity: $2" -H "Content-Type: application/pkcs10" \
		--data-binary "@$3" -w '\n%{http_code}'
}
before=$(ca_metric 1 'amesh_ca_refused_total{reason="not_on_node"}')
csr "$TMP/other.csr" spiffe://cluster.local/ns/other/sa/other
OUT=$(ask a spiffe://cluster.local/ns/other/sa/other "$TMP/other.csr")
check "node-a asking for other/other (a workload of node-b) is refused with 403 and the reason" \
	'echo "$OUT" | tail -n 1 | grep -qx 403 && echo "$OUT" | grep -q "node node-a runs no workload or waypoint with identity"'
after=$(ca_metric 1 'amesh_ca_refused_total{reason="not_on_node"}')
check "the refusal is counted (amesh_ca_refused_total{reason=\"not_on_node\"} $before -> $after)" \
	'[ "$after" -eq $((before + 1)) ]'
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/other.csr")
check "node-b gets other/other from an OpenSSL-made CSR" 'echo "$OUT" | tail -n 1 | grep -qx 200'

openssl req -new -newkey rsa:2048 -nodes -keyout "$TMP/rsa.key" -subj /O=cluster.local \
	-addext "subjectAltName=URI:spiffe://cluster.local/ns/other/sa/other" -out "$TMP/rsa.csr" 2>/dev/null
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/rsa.csr")
check "a CSR with an RSA key is refused (400)" 'echo "$OUT" | tail -n 1 | grep -qx 400 && echo "$OUT" | grep -qi "rsa"'
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/x.key" \
	-subj /O=cluster.local -addext "subjectAltName=URI:spiffe://cluster.local/ns/other/sa/other,DNS:evil.example" \
	-out "$TMP/extra.csr" 2>/dev/null
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/extra.csr")
check "a CSR with an extra SAN is refused (400)" 'echo "$OUT" | tail -n 1 | grep -qx 400'
csr "$TMP/wrong.csr" spiffe://cluster.local/ns/default/sa/echo
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/wrong.csr")
check "a CSR for another SPIFFE ID than the one asked is refused (400)" 'echo "$OUT" | tail -n 1 | grep -qx 400'
head -c 3000 /dev/urandom >"$TMP/garbage.csr"
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/garbage.csr")
check "garbage is refused (400)" 'echo "$OUT" | tail -n 1 | grep -qx 400'
OUT=$(lab_exec hb curl -sk "https://$CA1:15012/v1/sign" -H "Amesh-Identity: spiffe://cluster.local/ns/other/sa/other" \
	--data-binary "@$TMP/other.csr" -w '\n%{http_code}')
check "signing without a node certificate is refused (401)" 'echo "$OUT" | tail -n 1 | grep -qx 401'
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/other.csr")
check "after all that the CA still signs" 'echo "$OUT" | tail -n 1 | grep -qx 200'

# --- Renewal under a live stream. -----------------------------------------------------------------
cat >"$TMP/stream.py" <<'EOF'
import socket, sys, time
addr, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((addr, port), timeout=5)
s.sendall(b"stream\n")
f = s.makefile("rb")
f.readline()
n, end = 0, time.time() + secs
while time.time() < end:
    msg = b"tick %d\n" % n
    s.sendall(msg)
    if f.readline() != msg:
        print("broken at", n); sys.exit(1)
    n += 1
    time.sleep(0.25)
print("ok", n)
EOF
serial() { "$AMESH" ca show "$1" | awk '/^serial/ { print $2; exit }'; }
S0=$(serial "$LAB_DIR/node-b/certs/default/echo.crt")
R0=$(zt_metric b amesh_identity_renewals_total)
run lab_exec a1 $PY "$TMP/stream.py" "$LAB_B1" 8080 $((TTL * 7 / 10))
S1=$(serial "$LAB_DIR/node-b/certs/default/echo.crt")
R1=$(zt_metric b amesh_identity_renewals_total)
check "a stream of $(echo "$OUT" | cut -d' ' -f2) echoes over $((TTL * 7 / 10)) s survives the renewals" '[ "$RC" -eq 0 ]'
check "echo-b's certificate was renewed meanwhile (serial changed, renewals $R0 -> $R1)" \
	'[ -n "$S0" ] && [ "$S0" != "$S1" ] && [ "$R1" -gt "$R0" ]'
conn a1 "$LAB_B1" 8080
check "a new connection after the renewal works" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'
EXP=$(zt_metric b 'amesh_identity_expiry_timestamp_seconds{identity="spiffe://cluster.local/ns/default/sa/echo"}')
check "the expiry gauge shows the new certificate's notAfter ($EXP)" \
	'[ "$EXP" -gt "$(date +%s)" ] && [ "$EXP" -le $(( $(date +%s) + TTL + 5 )) ]'
run lab_exec hb curl -s http://127.0.0.1:15000/config_dump
check "/config_dump shows the agent's identities and expiries, never a key" \
	'echo "$OUT" | grep -q "\"identity_agent\"" && echo "$OUT" | grep -q "renew_at" && ! echo "$OUT" | grep -q "PRIVATE"'

# --- The CA down for a while: traffic continues; renewal resumes when it is back. ------------------
# Stop them 2 s before node-a's next renewal is due, so one falls due while they are down; every
# certificate has at least 0.4 of its life (12 s) left at any time, more than the downtime.
next_renewal() {
	lab_exec ha curl -s http://127.0.0.1:15000/config_dump | $PY -c 'import json, sys, calendar, time
ids = json.load(sys.stdin)["identity_agent"]["identities"]
t = [calendar.timegm(time.strptime(i["renew_at"], "%Y-%m-%dT%H:%M:%SZ")) for i in ids
     if i["kind"] == "workload" and i["renew_at"]]
print(min(t))'
}
due=$(next_renewal)
while [ "$(date +%s)" -lt $((due - 2)) ]; do sleep 0.2; done
F0=$(zt_metric a amesh_identity_renewal_failures_total)
ca_stop 1
ca_stop 2
fails=0
end=$(( $(date +%s) + TTL * 4 / 10 - 1 ))
while [ "$(date +%s)" -lt "$end" ]; do
	conn a1 "$LAB_B1" 8080
	echo "$OUT" | grep -q "local $LAB_B1 8080" || fails=$((fails + 1))
	conn a1 "$LAB_A2" 8080
	echo "$OUT" | grep -q "local $LAB_A2 8080" || fails=$((fails + 1))
	sleep 0.5
done
F1=$(zt_metric a amesh_identity_renewal_failures_total)
check "with both CAs down for $((TTL * 4 / 10 - 1)) s no connection failed ($fails)" '[ "$fails" -eq 0 ]'
check "the renewals that fell due failed and were counted ($F0 -> $F1)" '[ "$F1" -gt "$F0" ]'
check "both ztunnels stay ready meanwhile" 'lab_ready ha && lab_ready hb'
ca_start 1
ca_start 2
lab_wait_ready ha 15213
R2=$(zt_metric a amesh_identity_renewals_total)
i=0
while [ $i -lt 100 ] && [ "$(zt_metric a amesh_identity_renewals_total)" -le "$R2" ]; do sleep 0.2; i=$((i + 1)); done
check "renewal resumes once the CA is back" '[ "$(zt_metric a amesh_identity_renewals_total)" -gt "$R2" ]'
conn a1 "$LAB_B1" 8080
check "and traffic still flows" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'

# --- Failover to the second instance. -------------------------------------------------------------
ca_stop 1
I0=$(ca_metric 2 'amesh_ca_issued_total{kind="workload"}')
enroll b b2 other-b
I1=$(ca_metric 2 'amesh_ca_issued_total{kind="workload"}')
check "with CA 1 down, a new workload's certificate comes from CA 2 ($I0 -> $I1)" \
	'[ "$RC" -eq 0 ] && [ "$I1" -gt "$I0" ]'
run "$AMESH" ca show "$LAB_DIR/node-b/certs/other/other.crt"
check "other-b's certificate is issued by ca2" 'echo "$OUT" | grep -q "issuer .*ca2"'
conn a1 "$LAB_B2" 8080
check "client-a reaches other-b" 'echo "$OUT" | grep -q "local $LAB_B2 8080"'
ca_start 1
lab_wait_ready ha 15213 # its registry loaded and watched: the waypoint's entry below is a reload

# --- A waypoint and a sidecar obtain their own identities. ----------------------------------------
WP=192.168.10.9
lab_exec ha ip addr add "$WP/24" dev wire
cat >"$LAB_REGISTRY/39-waypoint.conf" <<EOF
[waypoint "wp"]
namespace = default
service_account = waypoint
address = $WP
node = node-a
EOF
sed -e "s|^cert_dir = .*|cert_dir = $LAB_DIR/waypoint/certs|" "$LAB_DIR/node-a.conf" >"$TMP/wp.conf"
cat >>"$TMP/wp.conf" <<EOF
[waypoint]
name = wp
hbone_address = $WP:15008
admin_address = 127.0.0.1:15100
metrics_address = 0.0.0.0:15120
readiness_address = 0.0.0.0:15121
EOF
# The CAs sign for the waypoint once their registry has it: wait for both to reload.
i=0
while [ $i -lt 300 ] && ! { grep -q "reloaded (.* 1 waypoints)" "$TMP/ca1.err" &&
	grep -q "reloaded (.* 1 waypoints)" "$TMP/ca2.err"; }; do
	sleep 0.1
	i=$((i + 1))
done
[ $i -lt 300 ] || echo "# the CAs did not both log the reload: $(grep -c 'reloaded' "$TMP/ca1.err") $(grep -c 'reloaded' "$TMP/ca2.err")"
spawn wp $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" -c "$TMP/wp.conf" waypoint
i=0 # it serves once the CA signed: a handshake and a signature, slow on a loaded machine
while [ $i -lt 200 ] && ! lab_ready ha 15121 && kill -0 "$PID_wp" 2>/dev/null; do
	sleep 0.1
	i=$((i + 1))
done
OUT=$(tail -n 5 "$TMP/wp.err")
check "a waypoint (no capabilities) obtains its own identity from the CA and serves" \
	'lab_ready ha 15121 && [ "$(stat -c %a "$LAB_DIR/waypoint/certs/default/waypoint.key")" = 600 ] &&
	 grep -q "certificate from the CA" "$TMP/wp.err"'
# other-b moves from ztunnel B to a sidecar in its own namespace, with identities of its own.
run lab_exec hb "$AMESH" -c "$LAB_DIR/node-b.conf" cni del --workload other-b
sed -e "s|^cert_dir = .*|cert_dir = $LAB_DIR/sidecar/certs|" "$LAB_DIR/node-b.conf" >"$TMP/sc.conf"
spawn sc $(lab_in b2) $(lab_unit_privs amesh-sidecar@.service) "$AMESH" -c "$TMP/sc.conf" \
	sidecar --workload other-b
lab_wait_ready b2
check "a sidecar obtains its workload's identity from the CA, from inside its namespace" \
	'lab_ready b2 && [ -f "$LAB_DIR/sidecar/certs/other/other.crt" ]'
conn a1 "$LAB_B2" 8080
check "client-a reaches other-b through its sidecar" 'echo "$OUT" | grep -q "local $LAB_B2 8080"'
# Its next request to the CA passes its own interception rules (SO_MARK), on a reload.
F0=$(lab_exec b2 curl -s http://127.0.0.1:15020/metrics | awk '$1 == "amesh_identity_renewal_failures_total" { print $2 }')
kill -HUP "$PID_sc"
sleep 1
F1=$(lab_exec b2 curl -s http://127.0.0.1:15020/metrics | awk '$1 == "amesh_identity_renewal_failures_total" { print $2 }')
check "the sidecar talks to the CA past its own rules, not through its own proxy ($F0 -> $F1 failures)" \
	'[ "$F0" = "$F1" ] && ! grep -q "trust bundle refresh" "$TMP/sc.err" &&
	 ! grep -q "dst.addr=$CA1:15012" "$TMP/sc.err"'
kill -TERM "$PID_sc" "$PID_wp"
wait "$PID_sc" "$PID_wp" 2>/dev/null
run lab_exec hb "$AMESH" -c "$LAB_DIR/node-b.conf" cni del --mode sidecar --netns "$(lab_ns_path b2)"
enroll b b2 other-b

# --- Revocation. ----------------------------------------------------------------------------------
run "$AMESH" ca revoke-node -c "$CAH/ca1.conf" node-b
run "$AMESH" ca revoke-node --dir "$CAH/ca2" node-b
lab_wait_ready ha 15213
OUT=$(ask b spiffe://cluster.local/ns/other/sa/other "$TMP/other.csr")
check "a revoked node gets nothing more (403)" \
	'echo "$OUT" | tail -n 1 | grep -qx 403 && echo "$OUT" | grep -q "node node-b is revoked"'
run lab_exec hb "$AMESH" -c "$LAB_DIR/node-b.conf" cni del --workload other-b
rm -f "$LAB_DIR/node-b/certs/other/other.crt" "$LAB_DIR/node-b/certs/other/other.key"
i=0 # the store sees them gone
while [ $i -lt 50 ] && lab_exec hb curl -s http://127.0.0.1:15000/config_dump | grep -q '"spiffe://cluster.local/ns/other/sa/other"'; do
	sleep 0.1
	i=$((i + 1))
done
enroll b b2 other-b
check "so a revoked node cannot enroll a workload that needs a new identity" \
	'[ "$RC" -ne 0 ] && echo "$ERR" | grep -q "revoked"'
conn a1 "$LAB_B1" 8080
check "its current certificates work until their TTL" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'

tap_done
