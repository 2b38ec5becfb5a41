#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# [waypoint] workers = 2 (amesh-waypoint(8) WORKERS): the waypoint's L7 engine on two event loops.
# 1,000 concurrent HTTP/1.1 connections through it all answered and spread over both workers (the
# per-worker counts of /config_dump and amesh_worker_connections_total), the counters add up, a
# SIGHUP route change reaches both, a SIGUSR2 upgrade under load loses no request, and SIGTERM
# drains both and exits 0.
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
plan 14

AMESH_TEST_WP_WORKERS=2
export AMESH_TEST_WP_WORKERS
lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
printf 'drain_timeout = 30s\n' >>"$LAB_WP_CONF"
PY=$LAB_PY
WPL="$SRCDIR/tests/e2e/wp-load.py"
# Service web: HTTP/1.1 on port 8081 of the echo workloads, through the waypoint.
cat >"$LAB_REGISTRY/40-web.conf" <<EOF
[service "web"]
namespace = default
vip = 10.96.0.21
ports = 80:8081
selector = app=echo
waypoint = wp
EOF
for ns in a2 b1; do
	start "web_$ns" $(lab_in $ns) $PY "$WPL" serve --port 8081 --name "$ns" || exit 1
done
conf_of() { eval echo "\$LAB_CONF_$(echo "$1" | tr ab AB)"; }
for h in a b; do
	spawn "zt_$h" $(lab_in h$h) "$AMESH" ztunnel -c "$(conf_of $h)"
done
lab_wait_ready ha && lab_wait_ready hb
enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(conf_of "$1")" cni add --netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll a a2 echo-a && run enroll b b1 echo-b
check "ztunnels ready, workloads enrolled" '[ "$RC" -eq 0 ]'

spawn wp $(lab_in ha) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
WP_PID=$pid
lab_wait_ready ha 15121
check "the waypoint is ready with 2 workers, one of them the thread amesh-w1" \
	'grep -q "waypoint: 2 workers" "$TMP/wp.err" && cat /proc/$WP_PID/task/*/comm | grep -qx amesh-w1'

get() { # get PORT PATH: from the waypoint's host
	lab_exec ha $PY -c 'import urllib.request,sys
print(urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]),timeout=10).read().decode())' "$1" "$2"
}
# dump FIELD: from /config_dump, "stats.tunnels" or "workers.K.requests"
dump() {
	get 15100 /config_dump | $PY -c 'import json,sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d[int(k)] if isinstance(d, list) else d[k]
print(d)' "$1" 2>/dev/null || echo 0
}
metric() { # metric NAME-WITH-LABELS: its value, 0 when absent
	get 15120 /metrics | awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}

t0=$(dump workers.0.tunnels)
t1=$(dump workers.1.tunnels)
run lab_exec a1 $PY "$WPL" many --url http://10.96.0.21/ --count 1000 --timeout 120
check "1,000 concurrent HTTP/1.1 connections through the waypoint: $(echo "$OUT" | head -n 1)" \
	'[ "$(echo "$OUT" | head -n 1)" = "ok 1000 of 1000" ]'
echo "$OUT" | grep '^fail' | head -n 3 | sed 's/^/# /'
d0=$(( $(dump workers.0.tunnels) - t0 ))
d1=$(( $(dump workers.1.tunnels) - t1 ))
echo "# tunnels: worker 0 took $d0, worker 1 took $d1"
# The ztunnel's pool multiplexes them on HBONE connections of up to 100 streams, which the
# waypoint hands out round robin: both get a good share, not an exact one.
check "both workers served them ($d0 + $d1 tunnels, each >= 100)" \
	'[ "$d0" -ge 100 ] && [ "$d1" -ge 100 ] && [ $((d0 + d1)) -ge 1000 ]'
c0=$(dump workers.0.connections)
c1=$(dump workers.1.connections)
m0=$(metric 'amesh_worker_connections_total{worker="0"}')
m1=$(metric 'amesh_worker_connections_total{worker="1"}')
check "per-worker HBONE connections: /config_dump $c0 and $c1, metrics $m0 and $m1" \
	'[ "$c0" -ge 1 ] && [ "$c1" -ge 1 ] && [ "$m0" = "$c0" ] && [ "$m1" = "$c1" ]'
# A request is counted when its tunnel is done with it: wait for the tunnels to close.
i=0
while [ "$(dump stats.active)" != 0 ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
tun=$(dump stats.tunnels)
req=$(dump stats.requests)
l4=$(dump stats.tunnels_l4)
# (A tunnel whose client was silent for protocol_detection_timeout is relayed at L4, without
# request telemetry: on a loaded machine a few may be.)
check "the counters add up both workers (tunnels $tun; requests $req + L4 tunnels $l4 >= 1000)" \
	'[ "$tun" -ge 1000 ] && [ $((req + l4)) -ge 1000 ]'
OUT=$(get 15120 /metrics)
n=$(echo "$OUT" | awk '/^istio_requests_total\{/ && /destination_service="web\./ && /response_code="200"/ { s += $2 } END { print s + 0 }')
check "istio_requests_total counts both workers' requests ($n >= $req)" '[ "$n" -ge "$req" ]'

# SIGHUP: a route that answers 418 reaches both workers' engines (they share the registry).
cat >"$LAB_REGISTRY/41-web-route.conf" <<EOF
[route "web-teapot"]
namespace = default
service = web
fault.abort = 418
EOF
kill -HUP "$WP_PID"
i=0
while [ $i -lt 100 ]; do
	[ "$(lab_exec a1 $PY "$WPL" get --url http://10.96.0.21/)" = 418 ] && break
	sleep 0.1
	i=$((i + 1))
done
r0=$(dump workers.0.requests)
r1=$(dump workers.1.requests)
run lab_exec a1 $PY "$WPL" many --url http://10.96.0.21/ --count 400 --expect 418 --timeout 120
r0=$(( $(dump workers.0.requests) - r0 ))
r1=$(( $(dump workers.1.requests) - r1 ))
check "after SIGHUP the new route answers on both workers ($(echo "$OUT" | head -n 1); $r0 + $r1)" \
	'[ "$(echo "$OUT" | head -n 1)" = "ok 400 of 400" ] && [ "$r0" -ge 1 ] && [ "$r1" -ge 1 ]'
rm -f "$LAB_REGISTRY/41-web-route.conf"
kill -HUP "$WP_PID"
i=0
while [ $i -lt 100 ]; do
	[ "$(lab_exec a1 $PY "$WPL" get --url http://10.96.0.21/)" = 200 ] && break
	sleep 0.1
	i=$((i + 1))
done

# A renewed certificate reaches both workers' HBONE servers: four new TLS clients in a row (round
# robin: two on each worker) all see the new serial.
serial_file() { openssl x509 -noout -serial -in "$LAB_DIR/waypoint/certs/default/waypoint.crt" | cut -d= -f2; }
serial_seen() { # the serial the waypoint presents to a new TLS client now
	lab_exec ha openssl s_client -connect "$LAB_WP:15008" -alpn h2 -CAfile "$LAB_DIR/ca/ca.crt" \
		-cert "$LAB_DIR/node-b/certs/other/other.crt" -key "$LAB_DIR/node-b/certs/other/other.key" \
		</dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
old_serial=$(serial_file)
"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace default --service-account waypoint \
	--out "$LAB_DIR/waypoint/certs" >/dev/null
new_serial=$(serial_file)
kill -HUP "$WP_PID"
i=0
while ! grep -q "waypoint: new certificate" "$TMP/wp.err" && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
sleep 2 # each worker's engine looks once a second
seen=""
for i in 1 2 3 4; do
	seen="$seen $(serial_seen)"
done
check "a renewed certificate reaches both workers: 4 new clients see the new serial ($seen)" \
	'[ "$old_serial" != "$new_serial" ] && [ "$seen" = " $new_serial $new_serial $new_serial $new_serial" ]'

# SIGUSR2 under open-loop load: 150 new connections a second for 10 s, each a GET (30 s to answer,
# so a slow moment on a loaded machine is no failure; a reset or refusal is).
spawn load $(lab_in a1) $PY "$WPL" load --url http://10.96.0.21/ --rate 150 --seconds 10 \
	--timeout 30 --out "$TMP/load.res"
LOADPID=$pid
i=0
while ! grep -q '^start' "$TMP/load.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
NEW_WP=$(lab_upgrade "$TMP/wp.err" "$WP_PID")
i=0
while lab_alive "$LOADPID" && [ $i -lt 1200 ]; do
	sleep 0.1
	i=$((i + 1))
done
RES=$($PY "$WPL" analyze --results "$TMP/load.res" --before 0 --after 0)
name="under load, the waypoint with 2 workers replaced ($WP_PID -> $NEW_WP): $(echo "$RES" | head -n 1)"
nfail=$(echo "$RES" | sed -n 's/^requests 1500 failed \([0-9]*\) .*/\1/p')
if [ -n "$NEW_WP" ] && [ "$nfail" = 0 ]; then
	ok "$name"
else
	# (A request that crossed the old process's drain on a pooled HBONE connection used to be
	# reset here, about 1 run in 4: hbone_unsent_streams_move_on_close is that case.)
	fail "$name" "$RES"
fi
echo "$RES" | grep '^fail' | head -n 5 | sed 's/^/# /'
lab_gone "$WP_PID" 60
wait "$WP_PID"
RC=$?
check "the old waypoint drained its 2 workers and exited 0 ($RC)" \
	'[ "$RC" -eq 0 ] && grep -q "upgrade: the new process (pid $NEW_WP) serves" "$TMP/wp.err"'
check "the new one is ready with 2 workers" \
	'lab_wait_ready ha 15121 && [ "$(grep -c "waypoint: 2 workers" "$TMP/wp.err")" -ge 2 ]'

# SIGTERM with tunnels open on both workers: they are asked to go, the process exits 0.
spawn hold $(lab_in a1) $PY "$WPL" many --url http://10.96.0.21/ --count 200 --timeout 60
sleep 1
kill -TERM "$NEW_WP"
check "SIGTERM: both workers drain and the waypoint exits" 'lab_gone "$NEW_WP" 60'
check "both said so: drained" '[ "$(grep -c "waypoint: drained" "$TMP/wp.err")" -ge 2 ]'
tap_done
