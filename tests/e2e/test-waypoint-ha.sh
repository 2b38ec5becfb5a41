#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Replicated and namespace waypoints (issue 18 items 2 and 3), end to end in the two-host lab:
# waypoint "wp" runs as two amesh waypoint processes, one on each host (192.168.10.9 on host A,
# 192.168.10.10 on host B, one identity), and is namespace default's waypoint ([namespace
# "default"]), so service echo, which names none, goes through it. Under open-loop load (100
# requests a second for 10 s from client-a through its ztunnel, 30 from echo-a through its
# sidecar, each answered after 200 ms) the tunnels spread over both instances; the one on host B
# is killed (SIGKILL) after 3 s: only requests in flight across the kill may fail (counted in the
# TAP line), none started after it. Then: waypoint = none
# bypasses the namespace's waypoint, and a service of another namespace naming the waypoint is
# refused at load time (amesh check says where) until the waypoint's allowed_namespaces lists it.
# shellcheck disable=SC1091,SC2016,SC2034,SC2046,SC2086,SC2154,SC3045  # check eval's its quoted tests; lab_in and unit prefixes split on purpose
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
if ! command -v nft >/dev/null 2>&1; then
	echo "1..0 # SKIP nft is not installed (apt-get install nftables)"
	exit 0
fi
trap 'lab_down; cleanup' EXIT
ulimit -n 16384 2>/dev/null || true
plan 13

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
PY=$LAB_PY
LOAD=$SRCDIR/tests/e2e/wp-load.py
WP1=$LAB_WP
WP2=192.168.10.10
# The second instance: same identity and certificate, its own address on host B's wire.
lab_exec hb ip addr add "$WP2/24" dev wire || { echo "Bail out! cannot add $WP2"; exit 1; }
sed -e "s/^hbone_address = .*/hbone_address = $WP2:15008/" -e 's/^node = node-a/node = node-b/' \
	"$LAB_WP_CONF" >"$LAB_DIR/waypoint-b.conf"
cat >"$LAB_REGISTRY/39-waypoint.conf" <<EOF
[waypoint "wp"]
namespace = default
service_account = waypoint
address = $WP1, $WP2
node = node-a, node-b
EOF
cat >"$LAB_REGISTRY/40-ns.conf" <<EOF
; Every service and workload of namespace default goes through wp unless it says otherwise.
[namespace "default"]
waypoint = wp

; Only the waypoint answers 418: a request that gets it went through the waypoint.
[route "teapot"]
namespace = default
service = echo
match.path_prefix = /teapot
fault.abort = 418

; The same endpoints, without a waypoint.
[service "direct"]
namespace = default
vip = 10.96.0.14
ports = 80:8080
selector = app=echo
waypoint = none

[route "direct-teapot"]
namespace = default
service = direct
match.path_prefix = /teapot
fault.abort = 418
EOF

for x in a2:echo-a b1:echo-b b2:other-b; do
	start "srv_${x%%:*}" $(lab_in "${x%%:*}") $PY "$LOAD" serve --port 8080 --name "${x#*:}" \
		--delay 200 || exit 1
done
conf_of() { eval echo "\$LAB_CONF_$(echo "$1" | tr ab AB)"; }
for h in a b; do
	spawn "zt_$h" $(lab_in h$h) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$(conf_of $h)"
done
spawn wp1 $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
spawn wp2 $(lab_in hb) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_DIR/waypoint-b.conf" --name wp
# echo-a runs its own sidecar (as amesh-sidecar@echo-a.service): a second kind of caller.
spawn sc_a2 $(lab_in a2) $(lab_unit_privs amesh-sidecar@.service) "$AMESH" -c "$LAB_CONF_A" \
	sidecar --workload echo-a
check "ztunnels, the sidecar and both waypoint instances are ready" \
	'lab_wait_ready ha && lab_wait_ready hb && lab_wait_ready ha 15121 && lab_wait_ready hb 15121 &&
	 lab_wait_ready a2'
for x in "a a1 client-a" "b b1 echo-b" "b b2 other-b"; do
	set -- $x
	lab_exec h$1 "$AMESH" -c "$(conf_of "$1")" cni add --netns "$(lab_ns_path "$2")" \
		--workload "$3" >/dev/null 2>&1
done

status() { lab_exec a1 $PY "$LOAD" get --url "http://$1/$2"; }
# wp_requests HOST: the requests the waypoint instance on HOST has counted.
wp_requests() { lab_exec "h$1" $PY -c 'import urllib.request
t=urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode()
print(int(sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines() if l.startswith("istio_requests_total{"))))' 2>/dev/null || echo 0; }
# reloads NAME: how many registry loads (accepted or refused) process NAME has logged.
reloads() { grep -c "registry .*: reload" "$TMP/$1.err"; }
# wait_reloads N0...: until every process has logged one more registry load than N0 (5 s).
wait_reloads() {
	_i=0
	while [ $_i -lt 50 ]; do
		[ "$(reloads zt_a)" -gt "$1" ] && [ "$(reloads zt_b)" -gt "$2" ] &&
			[ "$(reloads wp1)" -gt "$3" ] && [ "$(reloads wp2)" -gt "$4" ] && return 0
		sleep 0.1
		_i=$((_i + 1))
	done
	return 1
}

run "$AMESH" check -c "$LAB_DIR/waypoint-b.conf"
ok1=$OUT
sed "s/^hbone_address = .*/hbone_address = 192.168.10.99:15008/" "$LAB_DIR/waypoint-b.conf" >"$TMP/wrong.conf"
run "$AMESH" check -c "$TMP/wrong.conf"
check "amesh check shows both instances, and warns of an instance address the registry lacks" \
	'echo "$ok1" | grep -qxF "waypoint  default/wp sa=waypoint address=$WP1,$WP2" &&
	 ! echo "$ok1" | grep -q "^warning   \[waypoint\]" && [ "$RC" -eq 0 ] &&
	 echo "$OUT" | grep -q "^warning   \[waypoint\] hbone_address 192.168.10.99 is none of waypoint \"wp\"'"'"'s addresses"'

# Item 3: service echo names no waypoint; its namespace's takes it.
s=$(status "$LAB_VIP" teapot)
d=$(status 10.96.0.14 teapot)
check "the namespace's waypoint takes service echo (418 from its route: $s); waypoint = none bypasses it (the app's $d)" \
	'[ "$s" = 418 ] && [ "$d" = 200 ]'
# A workload addressed directly: the namespace's waypoint too (it counts the request).
n0=$(( $(wp_requests a) + $(wp_requests b) ))
s=$(status "$LAB_B1:8080" direct)
n1=$(( $(wp_requests a) + $(wp_requests b) ))
check "a workload of the namespace, called by its address, goes through the waypoint ($s; requests $n0 -> $n1)" \
	'[ "$s" = 200 ] && [ $((n1 - n0)) -eq 1 ]'

# Item 2: load over both instances, one killed under it: 100 requests a second from client-a
# (ambient: its ztunnel) and 30 from echo-a (its sidecar).
a0=$(wp_requests a)
b0=$(wp_requests b)
spawn load2 $(lab_in a2) $PY "$LOAD" load --url "http://$LAB_VIP/load2" --rate 30 --seconds 10 \
	--out "$TMP/load2.txt"
LOADPID2=$pid
spawn load $(lab_in a1) $PY "$LOAD" load --url "http://$LAB_VIP/load" --rate 100 --seconds 10 \
	--out "$TMP/load.txt"
LOADPID=$pid
i=0
while ! grep -q '^start' "$TMP/load.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
a1=$(wp_requests a)
b1=$(wp_requests b)
T0=$(date +%s.%N)
kill -KILL "$PID_wp2"
T1=$(date +%s.%N)
i=0
while { kill -0 "$LOADPID" || kill -0 "$LOADPID2"; } 2>/dev/null && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
da=$((a1 - a0))
db=$((b1 - b0))
check "requests under load spread over both instances before the kill (host A $da, host B $db)" \
	'[ $((da + db)) -ge 150 ] && [ $((da * 3)) -ge $((da + db)) ] && [ $((db * 3)) -ge $((da + db)) ]'
RES=$($PY "$LOAD" analyze --results "$TMP/load.txt" --before "$T0" --after "$T1")
LINE=$(echo "$RES" | head -n 1)
set -- $LINE
N=$2 F=$4 K=$6 L=$8
check "instance on host B killed under load: $N requests, $F failed, $K in flight across the kill, $L failed after it" \
	'[ "$N" = 1000 ] && [ "$F" -le "$K" ] && [ "$L" -eq 0 ]'
echo "$RES" | grep '^fail' | sed 's/^/# /'
FO=$(lab_exec ha $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2))["stats"]["waypoint_failovers"])')
check "the ztunnel moved tunnels whose connect failed to the live instance ($FO moves, logged)" \
	'[ "$FO" -ge 1 ] && grep -q "waypoint wp at $WP2 failed (.*): trying $WP1" "$TMP/zt_a.err"'
RES=$($PY "$LOAD" analyze --results "$TMP/load2.txt" --before "$T0" --after "$T1")
set -- $(echo "$RES" | head -n 1)
N=$2 F=$4 K=$6 L=$8
FO=$(lab_exec a2 $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2))["stats"]["waypoint_failovers"])')
check "the same through echo-a's sidecar: $N requests, $F failed, $K in flight across the kill, $L failed after it; $FO moves" \
	'[ "$N" = 300 ] && [ "$F" -le "$K" ] && [ "$L" -eq 0 ] && [ "$FO" -ge 1 ]'
echo "$RES" | grep '^fail' | sed 's/^/# sidecar /'
s=$(status "$LAB_VIP" teapot)
check "after the kill, the waypoint still serves (418)" '[ "$s" = 418 ]'

# The instance back: after the failure penalty (5 s) it gets tunnels again.
spawn wp2 $(lab_in hb) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_DIR/waypoint-b.conf" --name wp
lab_wait_ready hb 15121
sleep 5
b0=$(wp_requests b)
for i in 1 2 3 4 5 6; do status "$LAB_VIP" again >/dev/null; done
b1=$(wp_requests b)
check "the restarted instance takes its share again ($((b1 - b0)) of 6)" '[ $((b1 - b0)) -ge 2 ]'

# Across namespaces: service "shop" of namespace other names wp, which serves default only.
r0="$(reloads zt_a) $(reloads zt_b) $(reloads wp1) $(reloads wp2)"
cat >"$LAB_REGISTRY/60-other.conf" <<EOF
[service "shop"]
namespace = other
vip = 10.96.0.15
ports = 80:8080
selector = app=other
waypoint = wp

[route "shop-teapot"]
namespace = other
service = shop
match.path_prefix = /teapot
fault.abort = 418
EOF
run "$AMESH" check -c "$LAB_CONF_A"
want="$LAB_REGISTRY/60-other.conf:6: service \"shop\" (namespace other): waypoint \"wp\" (namespace default, $LAB_REGISTRY/39-waypoint.conf:1) does not serve namespace other; list it in the waypoint's allowed_namespaces"
check "a service of a namespace the waypoint does not serve is refused at load, with file and line" \
	'[ "$RC" -ne 0 ] && echo "$ERR" | grep -qxF "$want"'
# shellcheck disable=SC2086
wait_reloads $r0
s=$(status 10.96.0.15 teapot)
check "the running roles refused it and keep the previous registry (shop has no VIP: $s)" \
	'grep -q "reload refused" "$TMP/zt_a.err" && [ "$s" != 418 ] && [ "$(status "$LAB_VIP" teapot)" = 418 ]'
r0="$(reloads zt_a) $(reloads zt_b) $(reloads wp1) $(reloads wp2)"
echo "allowed_namespaces = other" >>"$LAB_REGISTRY/39-waypoint.conf"
# shellcheck disable=SC2086
wait_reloads $r0
run "$AMESH" check -c "$LAB_CONF_A"
s=$(status 10.96.0.15 teapot)
check "once the waypoint allows namespace other, the registry loads and shop goes through it ($s)" \
	'[ "$RC" -eq 0 ] && [ "$s" = 418 ]'
tap_done
