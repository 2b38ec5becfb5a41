#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# amesh sidecar end to end, beside ambient workloads: on the two-host lab, echo-a (host A) and
# echo-b (host B) each run their own `amesh sidecar` inside their namespace, as
# amesh-sidecar@NAME.service does (with that unit's capabilities); client-a and other-b are
# ambient, enrolled with their host's ztunnel. Traffic every way, the wire, policy at the
# receiving sidecar, metrics, and what is left when a sidecar dies.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft tcpdump setpriv capsh; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (.ci/install-deps installs it)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 18

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY

for ns in a1 a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done
# A waypoint on host A for service "viawp" (other-b behind VIP 10.96.0.15).
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
WP=$LAB_WP
cat >"$LAB_REGISTRY/40-waypoint.conf" <<EOF
[service "viawp"]
namespace = other
vip = 10.96.0.15
ports = 80:8080
selector = app=other
waypoint = wp
EOF
spawn wp $(lab_in ha) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
spawn zt_a $(lab_in ha) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_A"
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
sidecar() { # sidecar NS CONF WORKLOAD: as amesh-sidecar@WORKLOAD.service runs it
	spawn "sc_$1" $(lab_in "$1") $(lab_unit_privs amesh-sidecar@.service) "$AMESH" -c "$2" \
		sidecar --workload "$3"
}
sidecar a2 "$LAB_CONF_A" echo-a
# echo-b the way a runtime would set it up: captured by amesh cni first, its sidecar after.
run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --mode sidecar --netns "$(lab_ns_path b1)" \
	--workload echo-b
added=$OUT
lab_wait_ready hb
run lab_exec b2 $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg early --timeout 3
early=$OUT
run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni list
check "cni add --mode sidecar: captured, not enrolled with the ztunnel, closed until the sidecar runs" \
	'echo "$added" | grep -q "^captured default/echo-b for its sidecar" &&
	 ! echo "$OUT" | grep -q "^echo-b " && ! echo "$early" | grep -q "msg early"'
sidecar b1 "$LAB_CONF_B" echo-b
check "ztunnels and both sidecars are ready" \
	'lab_wait_ready ha && lab_wait_ready hb && lab_wait_ready a2 && lab_wait_ready b1'
wp_tunnels() { lab_exec ha $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"]["tunnels"])'; }
CAPS=$(lab_caps "$PID_sc_b1")
check "a sidecar runs with its unit's capabilities only ($CAPS)" '[ "$CAPS" = "cap_net_admin nnp" ]'
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a \
	>/dev/null 2>&1
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b2)" --workload other-b \
	>/dev/null 2>&1
run lab_exec b1 nft list table inet amesh
check "the sidecar installed the interception rules in its own namespace" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "redirect to :15001"'

conn() { # conn FROM ADDR [MSG]
	run lab_exec "$1" $PY "$LAB_PEER" connect --addr "$2" --port 8080 --msg "${3:-hello}" --timeout 5
}
conn a2 "$LAB_B2"
check "sidecar -> ambient across hosts (echo-a -> other-b), the source address kept" \
	'echo "$OUT" | grep -q "local $LAB_B2 8080 msg hello" && echo "$OUT" | grep -q "^peer $LAB_A2 "'
conn a1 "$LAB_B1"
check "ambient -> sidecar across hosts (client-a -> echo-b)" \
	'echo "$OUT" | grep -q "local $LAB_B1 8080 msg hello" && echo "$OUT" | grep -q "^peer $LAB_A1 "'

MARK=amesh-sidecar-marker-$$
lab_exec ha tcpdump -i wire -n -U --immediate-mode -w "$TMP/wire.pcap" tcp >"$TMP/tcpdump.out" 2>&1 &
i=0
while ! grep -q "listening on" "$TMP/tcpdump.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
conn a2 "$LAB_B1" "$MARK"
sleep 1
pkill -INT -f "tcpdump -i wire -n -U --immediate-mode -w $TMP/wire.pcap" 2>/dev/null
sleep 0.5
hbone=$(tcpdump -n -r "$TMP/wire.pcap" "tcp port 15008" 2>/dev/null | wc -l)
other=$(tcpdump -n -r "$TMP/wire.pcap" "not tcp port 15008" 2>/dev/null | wc -l)
check "sidecar -> sidecar across hosts (echo-a -> echo-b)" 'echo "$OUT" | grep -q "msg $MARK"'
check "the wire carries only TLS on 15008 ($hbone packets, $other others, no marker)" \
	'[ "$hbone" -gt 0 ] && [ "$other" -eq 0 ] && ! grep -qa "$MARK" "$TMP/wire.pcap"'

run lab_exec b1 $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15020/metrics",timeout=2).read().decode())'
check "the receiving sidecar reports TCP metrics with reporter destination, mutual TLS" \
	'echo "$OUT" | grep "^istio_tcp_connections_opened_total{" | grep "reporter=\"destination\"" |
	 grep "destination_workload=\"echo-b\"" | grep -q "connection_security_policy=\"mutual_tls\""'
run lab_exec b1 $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2).read().decode())'
check "the sidecar holds its workload's identity only (config dump: echo, no other)" \
	'echo "$OUT" | grep -q "sa/echo" && ! echo "$OUT" | grep -q "sa/other"'

n0=$(wp_tunnels)
# (Not HTTP, so the waypoint relays it at L4 once the first bytes show that: a blank in them.)
run lab_exec a2 $PY "$LAB_PEER" connect --addr 10.96.0.15 --port 80 --msg "hello waypoint" \
	--timeout 5
n1=$(wp_tunnels)
check "sidecar -> a service with a waypoint goes through the waypoint (its tunnels $n0 -> $n1)" \
	'echo "$OUT" | grep -q "local $LAB_B2 8080 msg hello waypoint" && [ "$n1" -eq $((n0 + 1)) ]'

# Policy at the receiving sidecar: echo-b admits client-a only.
cat >"$LAB_REGISTRY/50-policy.conf" <<'EOF'
[policy "echo-b-from-client"]
namespace = default
selector = version=b
action = allow
from.principals = cluster.local/ns/default/sa/client
EOF
sleep 1.5
conn a2 "$LAB_B1"
denied=$OUT
conn a1 "$LAB_B1"
check "L4 policy at the receiving sidecar: echo-a refused, client-a admitted" \
	'! echo "$denied" | grep -q "msg hello" && echo "$OUT" | grep -q "msg hello"'
rm -f "$LAB_REGISTRY/50-policy.conf"
sleep 1.5

# Strict mTLS: a plaintext client (host B itself, outside the mesh) cannot reach echo-b; it can
# scrape the sidecar's metrics (their port is left out of the capture).
run lab_exec hb $PY -c 'import urllib.request,sys
print(urllib.request.urlopen("http://%s:15020/metrics" % sys.argv[1],timeout=3).status)' "$LAB_B1"
scrape=$OUT
run lab_exec hb $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg plain --timeout 3
check "plaintext from outside the mesh is refused by the sidecar (strict); metrics scrape ($scrape)" \
	'! echo "$OUT" | grep -q "msg plain" && [ "$scrape" = 200 ]'

# Killed, the sidecar leaves its rules: nothing reaches echo-b in the clear, nothing leaves it.
eval "kill -KILL \$PID_sc_b1"
sleep 0.3
conn a1 "$LAB_B1"
in_after=$OUT
run lab_exec b1 $PY "$LAB_PEER" connect --addr "$LAB_B2" --port 8080 --msg out --timeout 3
check "with the sidecar killed there is no plaintext path in or out of echo-b" \
	'! echo "$in_after" | grep -q "msg hello" && ! echo "$OUT" | grep -q "msg out" &&
	 lab_exec b1 nft list table inet amesh >/dev/null 2>&1'

run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --mode sidecar --netns "$(lab_ns_path b2)" \
	--workload other-b
check "cni add --mode sidecar refuses a workload the ztunnel serves" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "is enrolled with the ztunnel"'
run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni del --mode sidecar --netns "$(lab_ns_path b1)"
check "cni del --mode sidecar removes the namespace's rules" \
	'[ "$RC" -eq 0 ] && ! lab_exec b1 nft list table inet amesh >/dev/null 2>&1'

run "$AMESH" -c "$LAB_CONF_B" sidecar --workload nobody
check "an unknown workload: exit 1 naming it" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "workload \"nobody\" is not defined in the registry"'
run "$AMESH" -c "$LAB_CONF_B" sidecar
check "no workload given: exit 2 saying how to give one" \
	'[ "$RC" -eq 2 ] && echo "$ERR" | grep -q -- "--workload NAME"'
tap_done
