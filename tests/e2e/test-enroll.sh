#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Enrollment fails closed (issue 12), with the real ztunnels of the two-host lab: a mistaken
# `amesh cni add` (CLI or CNI plugin) changes nothing that belongs to another workload; an add
# that fails restores exactly what was there; every state a namespace can be left in (ztunnel
# down, restarting, certificate missing, add or del killed half way) refuses traffic and never
# puts it on the wire in the clear, which a capture on the link between the hosts proves, next to
# a positive control (HBONE packets on 15008 in the same capture).
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft tcpdump; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install nftables tcpdump)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 43

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
A1=$(lab_ns_path a1)
A2=$(lab_ns_path a2)
CERTS_A=$LAB_DIR/node-a/certs

for ns in a1 a2 b1; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done

zt_start() { # zt_start a|b
	spawn "zt_$1" $(lab_in h$1) "$AMESH" ztunnel -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))"
}
zt_stop_a() { # SIGTERM and wait: a ztunnel that stops leaves its rules and records in place
	eval "kill -TERM \$PID_zt_a" 2>/dev/null
	i=0
	while eval "kill -0 \$PID_zt_a" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
ready_body() { # ready_body: the readiness answer of host A's ztunnel: "CODE BODY"
	lab_exec ha $PY -c 'import urllib.request, urllib.error
try:
    r = urllib.request.urlopen("http://127.0.0.1:15021/healthz/ready", timeout=2)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError as e:
    print(0, e)'
}
wait_started() { # wait_started: the readiness endpoint answers (200 or 503)
	i=0
	while [ $i -lt 50 ]; do
		case $(ready_body) in 200* | 503*) return 0 ;; esac
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
acni() { lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni "$@"; }
conn() { # conn FROM ADDR PORT [MSG]
	run lab_exec "$1" $PY "$LAB_PEER" connect --addr "$2" --port "$3" --msg "${4:-hello}" --timeout 3
}
# What a namespace's interception looks like, for before/after comparisons.
ns_state() {
	lab_exec "$1" nft list table inet amesh 2>&1
	lab_exec "$1" ip rule show
	lab_exec "$1" ip -6 rule show
	lab_exec "$1" ip route show table 100 2>/dev/null
}

# Wire captures (lab.sh): cap_start, traffic, cap_stop; then CAP_HBONE (packets to or from 15008)
# and CAP_OTHER (all others) count what crossed between the hosts, and cap_has TEXT looks for bytes.
cap_start() { lab_cap_start; }
cap_stop() {
	lab_cap_stop
	CAP_HBONE=$(lab_cap_count "tcp port 15008")
	CAP_OTHER=$(lab_cap_count "not tcp port 15008")
}
cap_has() { lab_cap_has "$1"; }
marker() { echo "amesh-marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"; }

for h in a b; do zt_start $h; done
wait_started && lab_exec hb true
run acni add --netns "$A1" --workload client-a
run acni add --netns "$A2" --workload echo-a
run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b
conn a1 "$LAB_B1" 8080
check "the lab is meshed: client-a reaches echo-b" 'echo "$OUT" | grep -q "^peer $LAB_A1 .* local $LAB_B1 8080"'

# --- 1. The wrong namespace: client's, for echo-a (the operator meant echo-a's own). -----------
ns_state a1 >"$TMP/a1.before"
ns_state a2 >"$TMP/a2.before"
run acni add --netns "$A1" --workload echo-a
check "cni add of echo-a into client-a's namespace is refused and names client-a" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "netns $A1 is enrolled with the ztunnel as workload client-a"'
check "client-a's rules and routes are intact" 'ns_state a1 | cmp -s - "$TMP/a1.before"'
check "echo-a's namespace is untouched" 'ns_state a2 | cmp -s - "$TMP/a2.before"'
run acni list
check "cni list: both still enrolled where they were, serving" \
	'echo "$OUT" | grep -qx "client-a $A1 serving" && echo "$OUT" | grep -qx "echo-a $A2 serving"'
run acni check
check "cni check is clean" '[ "$RC" -eq 0 ]'
conn a1 "$LAB_A2" 8080
check "echo-a still serves in its own namespace" 'echo "$OUT" | grep -q "^peer $LAB_A1 .* local $LAB_A2 8080"'
MARK=$(marker)
cap_start
conn a1 "$LAB_B1" 8080 "$MARK"
cap_stop
check "client-a's next request crossed the wire ($(echo "$OUT" | cut -c1-30))" 'echo "$OUT" | grep -q "msg $MARK"'
check "on the wire: HBONE only ($CAP_HBONE packets on 15008, $CAP_OTHER others), no plaintext" \
	'[ "$CAP_HBONE" -gt 0 ] && [ "$CAP_OTHER" -eq 0 ] && ! cap_has "$MARK"'

# The ztunnel refuses on its own too (a hand-off that skips amesh cni's checks): echo-a handed
# client-a's namespace changes nothing, and echo-a keeps serving.
cat >"$TMP/handoff.py" <<'EOF'
import os, socket, sys
sock, name, path = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sock)
fd = os.open(path, os.O_RDONLY)
socket.send_fds(s, [("ADD %s %s" % (name, path)).encode()], [fd])
print(s.recv(65536).decode())
EOF
run lab_exec ha $PY "$TMP/handoff.py" "$LAB_DIR/node-a/ztunnel.sock" echo-a "$A1"
check "a raw ADD of echo-a with client-a's namespace: the ztunnel refuses it" \
	'echo "$OUT" | grep -q "^ERR namespace $A1 is enrolled as workload client-a"'
conn a1 "$LAB_A2" 8080
check "after it echo-a still serves in its own namespace" 'echo "$OUT" | grep -q "local $LAB_A2 8080"'

# The CNI plugin's ADD with the same mistake: the spec's error object, the namespace untouched;
# the DEL the runtime then sends leaves client-a alone.
ln -s "$AMESH" "$TMP/amesh-cni"
printf '{"cniVersion":"1.0.0","name":"lab","type":"amesh-cni","conf":"%s","args":{"amesh.workload":"echo-a"}}' \
	"$LAB_CONF_A" >"$TMP/cni.json"
plugin() { # plugin ADD|DEL NETNS
	run lab_exec ha env CNI_COMMAND="$1" CNI_CONTAINERID=wrong CNI_NETNS="$2" CNI_IFNAME=eth0 \
		CNI_PATH="$TMP" sh -c "\"$TMP/amesh-cni\" <\"$TMP/cni.json\""
}
plugin ADD "$A1"
check "CNI ADD into another workload's namespace: error 103, which names it" \
	'[ "$RC" -ne 0 ] && echo "$OUT" | grep -q "\"code\":103" && echo "$OUT" | grep -q "workload client-a"'
plugin DEL "$A1"
check "the runtime's DEL after it succeeds and leaves client-a and echo-a as they were" \
	'[ "$RC" -eq 0 ] && ns_state a1 | cmp -s - "$TMP/a1.before" && ns_state a2 | cmp -s - "$TMP/a2.before" &&
	 [ "$(acni list | grep -c serving)" -eq 2 ]'
run acni add --mode sidecar --netns "$A1" --workload echo-a
check "cni add --mode sidecar into client-a's namespace is refused too" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "enrolled with the ztunnel" && ns_state a1 | cmp -s - "$TMP/a1.before"'
run lab_exec a1 timeout 10 "$AMESH" -c "$LAB_CONF_A" sidecar --workload echo-a
check "amesh sidecar started in client-a's namespace refuses to take it over" \
	'[ "$RC" -ne 0 ] && echo "$ERR" | grep -q "rules belong to ztunnel client-a" && ns_state a1 | cmp -s - "$TMP/a1.before"'
run lab_exec a1 nft list table inet amesh
check "the rules name their owner (nft list shows comment \"ztunnel client-a\")" \
	'echo "$OUT" | grep -q "comment \"ztunnel client-a\""'

# --- 2. The ztunnel down: rules stay, traffic is refused, a retried add changes nothing. -------
zt_stop_a
MARK=$(marker)
cap_start
conn a2 "$LAB_B1" 8080 "$MARK"
OUT_A2=$OUT
# Positive control: the host itself (not a workload) talks to echo-b across the wire.
run lab_exec ha $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg positive --timeout 3
cap_stop
check "ztunnel down: echo-a's outbound connection is refused ($OUT_A2)" 'echo "$OUT_A2" | grep -q "^error"'
conn a1 "$LAB_A2" 8080
check "ztunnel down: client-a cannot reach echo-a around the mesh" 'echo "$OUT" | grep -q "^error"'
check "ztunnel down: nothing of echo-a's on the wire ($CAP_OTHER packets of the host's own control connection, marker absent)" \
	'! cap_has "$MARK" && [ "$CAP_OTHER" -gt 0 ]'
run acni add --netns "$A2" --workload echo-a
check "ztunnel down: a retried add fails and says so" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "not reachable"'
check "ztunnel down: the failed add left echo-a's rules as they were" 'ns_state a2 | cmp -s - "$TMP/a2.before"'

# --- 3. Restarting without echo-a's certificate: not served, not ready, still fail closed. -----
mkdir -p "$TMP/held"
mv "$CERTS_A/default/echo.crt" "$CERTS_A/default/echo.key" "$TMP/held/"
zt_start a
wait_started
run ready_body
check "a ztunnel holding a workload it cannot restore is not ready, and says which" \
	'echo "$OUT" | grep -q "^503 not ready: 1 recorded workloads not served" &&
	 echo "$OUT" | grep -q "workload echo-a (netns $A2): no certificate for spiffe://cluster.local/ns/default/sa/echo"'
run lab_exec ha $PY -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:15020/metrics", timeout=2).read().decode())'
check "metrics: amesh_proxy_workloads_failed 1" 'echo "$OUT" | grep -qx "amesh_proxy_workloads_failed 1"'
run acni list
check "cni list shows echo-a failed, with the reason" \
	'echo "$OUT" | grep -q "^echo-a $A2 failed: no certificate for spiffe://cluster.local/ns/default/sa/echo" &&
	 echo "$OUT" | grep -qx "client-a $A1 serving"'
run acni check
check "cni check fails naming echo-a" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "workload echo-a: .*not served by the ztunnel"'
ns_state a2 >"$TMP/a2.failed"
run acni add --netns "$A2" --workload echo-a
check "the retried add fails with what to run (amesh ca issue ...)" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "amesh ca issue --dir CA_DIR --namespace default --service-account echo --out $CERTS_A"'
check "the failed retry left echo-a's rules in place" \
	'ns_state a2 | cmp -s - "$TMP/a2.failed" && lab_exec a2 nft list table inet amesh >/dev/null'
MARK=$(marker)
cap_start
conn a2 "$LAB_B1" 8080 "$MARK"
OUT_A2=$OUT
conn a1 "$LAB_B1" 8080 positive
cap_stop
check "certificate missing: echo-a's connection is refused ($OUT_A2)" 'echo "$OUT_A2" | grep -q "^error"'
check "certificate missing: HBONE on the wire ($CAP_HBONE, positive control), no plaintext ($CAP_OTHER)" \
	'[ "$CAP_HBONE" -gt 0 ] && [ "$CAP_OTHER" -eq 0 ] && ! cap_has "$MARK"'
mv "$TMP/held/echo.crt" "$TMP/held/echo.key" "$CERTS_A/default/"
i=0
while [ $i -lt 100 ] && ! ready_body | grep -q "^200"; do sleep 0.1; i=$((i + 1)); done
run ready_body
check "the certificate back: echo-a served again within 10 s, ready ($((i / 10)) s)" \
	'echo "$OUT" | grep -q "^200 ready" && acni list | grep -qx "echo-a $A2 serving"'
conn a1 "$LAB_A2" 8080
check "client-a reaches echo-a again" 'echo "$OUT" | grep -q "^peer $LAB_A1 .* local $LAB_A2 8080"'

# --- 4. cni add killed at each step, cni del killed half way. ---------------------------------
run acni del --workload echo-a
ns_state a2 >"$TMP/a2.empty"
run lab_exec ha env AMESH_TEST_KILL_AT=inspected "$AMESH" -c "$LAB_CONF_A" cni add --netns "$A2" --workload echo-a
check "add killed after inspecting: nothing changed" \
	'[ "$RC" -eq 137 ] && ns_state a2 | cmp -s - "$TMP/a2.empty" && ! acni list | grep -q echo-a'
run lab_exec ha env AMESH_TEST_KILL_AT=rules "$AMESH" -c "$LAB_CONF_A" cni add --netns "$A2" --workload echo-a
KILL_RC=$RC
MARK=$(marker)
cap_start
conn a2 "$LAB_B1" 8080 "$MARK"
OUT_A2=$OUT
conn a1 "$LAB_B1" 8080 positive
cap_stop
check "add killed after the rules: captured, not enrolled, echo-a's connection refused" \
	'[ "$KILL_RC" -eq 137 ] && lab_exec a2 nft list table inet amesh | grep -q "ztunnel echo-a" &&
	 ! acni list | grep -q echo-a && echo "$OUT_A2" | grep -q "^error"'
check "add killed after the rules: no plaintext on the wire ($CAP_HBONE HBONE, $CAP_OTHER other)" \
	'[ "$CAP_HBONE" -gt 0 ] && [ "$CAP_OTHER" -eq 0 ] && ! cap_has "$MARK"'
conn a1 "$LAB_A2" 8080
check "add killed after the rules: client-a cannot reach echo-a around the mesh" 'echo "$OUT" | grep -q "^error"'
run acni add --netns "$A2" --workload echo-a
check "the add run again completes it" '[ "$RC" -eq 0 ] && acni list | grep -qx "echo-a $A2 serving"'
run acni del --workload echo-a
run lab_exec ha env AMESH_TEST_KILL_AT=handoff "$AMESH" -c "$LAB_CONF_A" cni add --netns "$A2" --workload echo-a
conn a1 "$LAB_A2" 8080
check "add killed after the hand-off: enrolled and serving" \
	'acni list | grep -qx "echo-a $A2 serving" && echo "$OUT" | grep -q "local $LAB_A2 8080"'
run lab_exec ha env AMESH_TEST_KILL_AT=released "$AMESH" -c "$LAB_CONF_A" cni del --workload echo-a
conn a2 "$LAB_B1" 8080
check "del killed after the ztunnel let go: rules left, echo-a's traffic refused" \
	'lab_exec a2 nft list table inet amesh >/dev/null && ! acni list | grep -q echo-a && echo "$OUT" | grep -q "^error"'
run acni del --netns "$A2"
check "cni del --netns removes what the interrupted del left" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "removed the rules of $A2" ] && ns_state a2 | cmp -s - "$TMP/a2.empty"'
run acni add --netns "$A2" --workload echo-a
conn a1 "$LAB_A2" 8080
check "echo-a enrolled again serves" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "local $LAB_A2 8080"'

# --- 5. A move: refused while the old namespace exists; make-before-break once it is gone. ----
ip netns add "$LAB_PREFIX-a9" # removed by lab_down with the others, if the test fails
A9=/run/netns/$LAB_PREFIX-a9
ip netns exec "$LAB_PREFIX-a9" ip link set lo up
run acni add --netns "$A9" --workload echo-a
check "moving echo-a while its namespace exists is refused, nothing changed in either" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "enrolled in netns $A2 (serving), which still exists" &&
	 [ -z "$(ip netns exec "$LAB_PREFIX-a9" nft list ruleset)" ] && acni list | grep -qx "echo-a $A2 serving"'
run acni del --netns "$A9"
check "cni del --netns of an empty namespace succeeds and changes nothing" \
	'[ "$RC" -eq 0 ] && acni list | grep -qx "echo-a $A2 serving"'
ip netns del "$LAB_PREFIX-a9"
run acni del --netns "$A1" --workload client-a
check "cni del with both --netns and --workload is a usage error" '[ "$RC" -eq 2 ]'

tap_done
