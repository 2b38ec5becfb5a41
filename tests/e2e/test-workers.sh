#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# [ztunnel] workers = 2: two event loops serve the workloads. 1,000 concurrent connections are
# spread over both (per-worker metric, the worker thread's CPU time), admin endpoints and metrics
# add up every worker, a certificate rotation reaches both, and the drain ends both.
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
plan 12

AMESH_TEST_WORKERS=2
export AMESH_TEST_WORKERS
lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
start srv_b1 $(lab_in b1) $PY "$LAB_PEER" serve --port 8080 || exit 1

for h in a b; do
	spawn "zt_$h" $(lab_in h$h) "$AMESH" ztunnel -c "$(eval echo \$LAB_CONF_$(echo "$h" | tr ab AB))"
done
lab_wait_ready ha && lab_wait_ready hb
check "both ztunnels are ready with 2 workers" \
	'grep -q "ztunnel: 2 workers" "$TMP/zt_a.err" && grep -q "ztunnel: 2 workers" "$TMP/zt_b.err"'
tasks() { # tasks PID: the names of its threads
	cat /proc/"$1"/task/*/comm 2>/dev/null
}
check "each ztunnel has a worker thread amesh-w1" \
	'tasks "$PID_zt_a" | grep -qx amesh-w1 && tasks "$PID_zt_b" | grep -qx amesh-w1'

enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll b b1 echo-b
check "workloads enrolled on both workers" '[ "$RC" -eq 0 ]'

get() { # get HOST PORT PATH
	lab_exec h$1 $PY -c 'import urllib.request,sys
print(urllib.request.urlopen("http://127.0.0.1:%s%s" % (sys.argv[1], sys.argv[2]),timeout=5).read().decode())' "$2" "$3"
}
# metric HOST NAME-WITH-LABELS: its value, 0 when absent
metric() {
	get "$1" 15020 /metrics | awk -v n="$2" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}
cpu_of_worker() { # cpu_of_worker PID: utime+stime (ticks) of its thread amesh-w1
	for t in /proc/"$1"/task/*; do
		if [ "$(cat "$t/comm")" = amesh-w1 ]; then
			awk '{ print $14 + $15 }' "$t/stat"
			return
		fi
	done
	echo 0
}
w0a=$(metric a 'amesh_worker_connections_total{worker="0"}')
w1a=$(metric a 'amesh_worker_connections_total{worker="1"}')
cpu0=$(cpu_of_worker "$PID_zt_a")

run lab_exec a1 $PY "$SRCDIR/tests/e2e/flows.py" many --addr "$LAB_B1" --port 8080 --count 1000 --timeout 60
check "1,000 concurrent connections across hosts" '[ "$OUT" = "ok 1000 of 1000" ]'

d0=$(( $(metric a 'amesh_worker_connections_total{worker="0"}') - w0a ))
d1=$(( $(metric a 'amesh_worker_connections_total{worker="1"}') - w1a ))
echo "# host a: worker 0 took $d0, worker 1 took $d1 of the 1,000"
check "host a: both workers served the outbound connections ($d0 + $d1, each >= 400)" \
	'[ "$d0" -ge 400 ] && [ "$d1" -ge 400 ] && [ $((d0 + d1)) -ge 1000 ]'
cpu1=$(cpu_of_worker "$PID_zt_a")
check "host a: the worker thread amesh-w1 used CPU for them ($cpu0 -> $cpu1 ticks)" \
	'[ "$cpu1" -gt "$cpu0" ]'
b0=$(metric b 'amesh_worker_connections_total{worker="0"}')
b1=$(metric b 'amesh_worker_connections_total{worker="1"}')
echo "# host b: HBONE and plaintext connections: worker 0 $b0, worker 1 $b1"
check "host b: both workers served HBONE connections ($b0, $b1)" '[ "$b0" -ge 1 ] && [ "$b1" -ge 1 ]'

OUT=$(get a 15020 /metrics)
opened=$(echo "$OUT" | awk '/^istio_tcp_connections_opened_total\{/ && /source_workload="client-a"/ && /reporter="source"/ { s += $2 } END { print s + 0 }')
check "metrics add up both workers: istio_tcp_connections_opened_total >= 1000 ($opened)" \
	'[ "$opened" -ge 1000 ]'
OUT=$(get a 15000 /config_dump)
conns=$(echo "$OUT" | $PY -c 'import json,sys
d = json.load(sys.stdin)
def walk(x):
    if isinstance(x, dict):
        if x.get("name") == "client-a" and "connections" in x:
            print(x["connections"]); sys.exit(0)
        for v in x.values(): walk(v)
    elif isinstance(x, list):
        for v in x: walk(v)
walk(d); print(0)')
check "/config_dump: client-a's connections count both workers ($conns >= 1000)" \
	'[ "$conns" -ge 1000 ]'

# Rotation: a new certificate for echo-b reaches the HBONE servers of both workers of host b:
# four new TLS clients in a row (round robin: two on each worker) all see the new serial.
serial_file() { openssl x509 -noout -serial -in "$LAB_DIR/node-b/certs/default/echo.crt" | cut -d= -f2; }
serial_seen() { # the serial echo-b's HBONE listener presents to a new TLS client now
	lab_exec hb openssl s_client -connect "$LAB_B1:15008" -alpn h2 -CAfile "$LAB_DIR/ca/ca.crt" \
		-cert "$LAB_DIR/node-b/certs/other/other.crt" -key "$LAB_DIR/node-b/certs/other/other.key" \
		</dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
old_serial=$(serial_file)
"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace default --service-account echo \
	--out "$LAB_DIR/node-b/certs" >/dev/null
new_serial=$(serial_file)
sleep 2.5
seen=""
for i in 1 2 3 4; do
	seen="$seen $(serial_seen)"
done
check "rotation reaches both workers: 4 new clients see the new serial ($seen)" \
	'[ "$old_serial" != "$new_serial" ] && [ "$seen" = " $new_serial $new_serial $new_serial $new_serial" ]'
ok=0
for i in 1 2 3; do
	run lab_exec a1 $PY "$SRCDIR/tests/e2e/flows.py" many --addr "$LAB_B1" --port 8080 --count 50 --timeout 20
	[ "$OUT" = "ok 50 of 50" ] && ok=$((ok + 1))
done
kill -HUP "$PID_zt_b"
sleep 1
for i in 1 2 3; do
	run lab_exec a1 $PY "$SRCDIR/tests/e2e/flows.py" many --addr "$LAB_B1" --port 8080 --count 50 --timeout 20
	[ "$OUT" = "ok 50 of 50" ] && ok=$((ok + 1))
done
check "traffic after the renewal and a SIGHUP reload (6 of 6 rounds of 50: $ok)" '[ "$ok" -eq 6 ]'

# Drain: SIGTERM ends both loops and the process exits 0.
kill -TERM "$PID_zt_a"
i=0
while kill -0 "$PID_zt_a" 2>/dev/null && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
wait "$PID_zt_a"
RC=$?
check "SIGTERM: the ztunnel with 2 workers drains and exits 0 ($RC)" \
	'[ "$RC" -eq 0 ] && grep -q "drained" "$TMP/zt_a.err"'
tap_done
