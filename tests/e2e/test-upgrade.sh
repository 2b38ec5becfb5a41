#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Hitless upgrade of the ztunnel (issue 18; amesh-ztunnel(8) UPGRADE): under open-loop load
# (300 connections a second for 10 s from client-a to the echo service, plus ten 64 MiB
# transfers checked with sha256), host A's ztunnel and then host B's get SIGUSR2: each starts
# the binary again with its listeners handed over, the new process serves, the old one stops
# accepting and drains. Every transfer must come through intact, and the requests failed are
# counted: none may fail. Then: enrollment is served by the new process, an
# upgrade whose new process cannot start (a broken config) leaves the old one serving, and the
# waypoint is replaced the same way under the same load.
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
plan 20

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
# The waypoint (the last part): its identity and registry entry now, its use by echo later.
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
printf 'drain_timeout = 60s\n' >>"$LAB_WP_CONF"
PY=$LAB_PY
LOAD=$SRCDIR/tests/e2e/upgrade-load.py
# Transfers started before an upgrade finish in the old process: give them the time to.
for c in "$LAB_CONF_A" "$LAB_CONF_B"; do
	printf 'drain_timeout = 60s\n' >>"$c"
done
for ns in a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done
conf_of() { eval echo "\$LAB_CONF_$(echo "$1" | tr ab AB)"; }
for h in a b; do
	spawn "zt_$h" $(lab_in h$h) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$(conf_of $h)"
done
check "both ztunnels are ready" 'lab_wait_ready ha && lab_wait_ready hb'
enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(conf_of "$1")" cni add --netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll a a2 echo-a && run enroll b b1 echo-b
check "workloads enrolled" '[ "$RC" -eq 0 ]'


OLD_A=$PID_zt_a
OLD_B=$PID_zt_b
spawn load $(lab_in a1) $PY "$LOAD" --addr 10.96.0.10 --port 80 --rate 300 --seconds 10 \
	--transfers 10 --mib 64
LOADPID=$pid
i=0
while ! grep -q '^start' "$TMP/load.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
NEW_A=$(lab_upgrade "$TMP/zt_a.err" "$OLD_A")
sleep 3
NEW_B=$(lab_upgrade "$TMP/zt_b.err" "$OLD_B")
i=0
while kill -0 "$LOADPID" 2>/dev/null && [ $i -lt 1800 ]; do
	sleep 0.1
	i=$((i + 1))
done
RES=$(grep '^requests' "$TMP/load.out")
# Every transfer must survive and no request may fail. (Until the HBONE client kept the bytes it
# had sent before the answer, a stream refused by the old process after they went was reset:
# tens of requests failed at once under load. It now goes to the next process with them.)
within() { # within RES: every request answered, every transfer intact
	[ "$1" = "requests 3000 failed 0 transfers 10 bad 0" ]
}
check "under load, both ztunnels replaced: $RES" 'within "$RES"'
grep '^fail' "$TMP/load.out" | sed 's/^/# /'
grep -q '^fail' "$TMP/load.out" && grep -hE 'warn|error|refus|reset|fail' "$TMP/zt_a.err" "$TMP/zt_b.err" | grep -v 'connection complete' | head -n 20 | sed 's/^/# zt: /'
check "new ztunnels started: host A $OLD_A -> $NEW_A, host B $OLD_B -> $NEW_B" \
	'[ -n "$NEW_A" ] && [ -n "$NEW_B" ]'
check "the new processes took the listeners (their logs say how many)" \
	'grep -q "inherit: [1-9][0-9]* listeners handed over" "$TMP/zt_a.err" &&
	 grep -q "inherit: [1-9][0-9]* listeners handed over" "$TMP/zt_b.err"'
# Each drains what it still carries for at most drain_timeout (60 s) from its upgrade, which came
# before the load ended; then it exits.
check "the old processes drained and exited" 'lab_gone "$OLD_A" 90 && lab_gone "$OLD_B" 90'
for p in "$OLD_A" "$OLD_B"; do
	lab_alive "$p" || continue
	echo "# $p is still running: its sockets, then the log of its host"
	for ns in ha a1 a2 hb b1 b2; do
		lab_exec $ns ss -tanp 2>/dev/null | grep "pid=$p," | sed "s/^/# $ns: /"
	done
	[ "$p" = "$OLD_A" ] && h=a || h=b
	grep -v ' debug: ' "$TMP/zt_$h.err" | grep -v 'connection complete' | tail -n 20 | sed 's/^/# /'
done
check "they said the new one serves before they stopped accepting" \
	'grep -q "upgrade: the new process (pid $NEW_A) serves" "$TMP/zt_a.err" &&
	 grep -q "upgrade: the new process (pid $NEW_B) serves" "$TMP/zt_b.err"'
check "the new ztunnels are ready" 'lab_wait_ready ha && lab_wait_ready hb'
run lab_exec a1 $PY "$LAB_PEER" connect --addr 10.1.2.2 --port 8080 --msg after --timeout 5
check "a new connection across hosts after the upgrades" 'echo "$OUT" | grep -q "msg after"'

# Enrollment: the socket path stayed, and the new process answers on it.
run lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni list
check "cni list is answered by the new ztunnel" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "echo-b"'
run enroll b b2 other-b
check "a workload enrolls after the upgrade" '[ "$RC" -eq 0 ]'
run lab_exec a1 $PY "$LAB_PEER" connect --addr 10.1.2.3 --port 8080 --msg fresh --timeout 5
check "and is served through the mesh" 'echo "$OUT" | grep -q "msg fresh"'

# A new process that cannot start (a broken config): the old one goes on as if nothing happened.
cp "$LAB_CONF_A" "$TMP/conf_a.good"
printf 'no_such_key = 1\n' >>"$LAB_CONF_A"
kill -USR2 "$NEW_A"
i=0
while ! grep -q "upgrade: the new process exited" "$TMP/zt_a.err" && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
check "a failed upgrade is logged as such" \
	'grep -q "upgrade: the new process exited (status 1, signal 0) before it served; this process goes on serving" "$TMP/zt_a.err"'
run lab_exec a1 $PY "$LAB_PEER" connect --addr 10.1.2.2 --port 8080 --msg still --timeout 5
check "and the ztunnel it was to replace still serves" \
	'lab_alive "$NEW_A" && echo "$OUT" | grep -q "msg still" && lab_wait_ready ha'
run lab_exec ha "$AMESH" -c "$TMP/conf_a.good" cni list
check "its enrollment socket accepts again" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "client-a"'

# With the config fixed, the next upgrade goes through.
cp "$TMP/conf_a.good" "$LAB_CONF_A"
NEWER_A=$(lab_upgrade "$TMP/zt_a.err" "$NEW_A")
check "the next upgrade works ($NEW_A -> $NEWER_A)" \
	'[ -n "$NEWER_A" ] && lab_gone "$NEW_A" 60 && lab_wait_ready ha'
[ -z "$NEWER_A" ] && grep -v 'connection complete' "$TMP/zt_a.err" | tail -n 12 | sed 's/^/# zt: /'
run lab_exec a1 $PY "$LAB_PEER" connect --addr 10.1.2.2 --port 8080 --msg last --timeout 5
check "traffic flows after it" 'echo "$OUT" | grep -q "msg last"'

# The waypoint: service echo goes through it, and it is replaced under the same load.
sed -i '/^\[service "echo"\]/a waypoint = wp' "$LAB_REGISTRY/00-lab.conf"
kill -HUP "$NEWER_A" "$NEW_B"
spawn wp $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
OLD_WP=$pid
lab_wait_ready ha 15121
i=0
while [ $i -lt 50 ]; do
	run lab_exec a1 $PY "$LAB_PEER" connect --addr 10.96.0.10 --port 80 --msg viawp --timeout 5
	grep -q "dst.service=echo" "$TMP/wp.err" 2>/dev/null && break
	sleep 0.1
	i=$((i + 1))
done
check "service echo now goes through the waypoint" \
	'echo "$OUT" | grep -q "msg viawp" && grep -q "dst.service=echo" "$TMP/wp.err"'
spawn load2 $(lab_in a1) $PY "$LOAD" --addr 10.96.0.10 --port 80 --rate 300 --seconds 10 \
	--transfers 10 --mib 64
LOADPID=$pid
i=0
while ! grep -q '^start' "$TMP/load2.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
NEW_WP=$(lab_upgrade "$TMP/wp.err" "$OLD_WP")
i=0
while lab_alive "$LOADPID" && [ $i -lt 1800 ]; do
	sleep 0.1
	i=$((i + 1))
done
RES=$(grep '^requests' "$TMP/load2.out")
check "under load through it, the waypoint replaced ($OLD_WP -> $NEW_WP): $RES" \
	'[ -n "$NEW_WP" ] && within "$RES"'
grep '^fail' "$TMP/load2.out" | head -n 3 | sed 's/^/# /'
grep -q '^fail' "$TMP/load2.out" && grep -hE 'warn|error|refus|reset|fail' "$TMP/zt_a.err" "$TMP/wp.err" | grep -v 'connection complete' | tail -n 12 | sed 's/^/# zt: /'
check "the old waypoint drained and exited, the new one is ready" \
	'lab_gone "$OLD_WP" 60 && lab_wait_ready ha 15121 &&
	 grep -q "upgrade: the new process (pid $NEW_WP) serves" "$TMP/wp.err"'
tap_done
