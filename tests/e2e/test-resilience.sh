#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Resilience end to end (issue 18): outlier detection and connection pool limits in the shared
# balancer, through the waypoint (HTTP/1.1) and the ztunnel (L4), in the two-host lab. Endpoints
# echo-a (host A) and echo-b (host B) run the python peers on several ports, some answering 503
# to everything.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
trap 'lab_down; cleanup' EXIT
plan 18

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
HTTPD="$SRCDIR/tests/e2e/httpd.py"
GRPC="$SRCDIR/tests/e2e/grpcpeer.py"
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
cat >"$LAB_REGISTRY/40-resilience.conf" <<EOF
; echo-a answers, echo-b answers 503: three in a row eject it for 5 s (then 10 s...). (5 s: a
; loaded machine's slow clients must fit in base_ejection_time; see below.)
[service "od"]
namespace = default
vip = 10.96.0.20
ports = 80:8081
selector = app=echo
waypoint = wp
outlier_detection.consecutive_5xx_errors = 3
outlier_detection.base_ejection_time = 5s
outlier_detection.max_ejection_percent = 50

; Both answer 503: every endpoint may go (100 %), but one always stays.
[service "both"]
namespace = default
vip = 10.96.0.21
ports = 80:8082
selector = app=echo
waypoint = wp
outlier_detection.consecutive_gateway_errors = 2
outlier_detection.max_ejection_percent = 100

; One request in flight at a time (/slow takes 2 s).
[service "cb"]
namespace = default
vip = 10.96.0.22
ports = 80:8080
selector = version=b
waypoint = wp
connection_pool.http.http2_max_requests = 1

; gRPC on echo-a: an UNAVAILABLE first attempt retried; a per-try timeout on a slow call.
[service "grpc"]
namespace = default
vip = 10.96.0.24
ports = 80:9090
selector = version=a
waypoint = wp

[route "grpc-flaky"]
namespace = default
service = grpc
match.path_prefix = /amesh.Echo/Flaky
backends = grpc
retries = 2
retry_on = unavailable

[route "grpc-late"]
namespace = default
service = grpc
match.path_prefix = /amesh.Echo/Late
backends = grpc
retries = 1
retry_on = unavailable

[route "grpc-pertry"]
namespace = default
service = grpc
match.path_prefix = /amesh.Echo/Slow
backends = grpc
timeout = 5s
per_try_timeout = 300ms
retries = 1
retry_on = reset

; Unary calls mirrored to echo-b's gRPC server.
[service "grpc-b"]
namespace = default
vip = 10.96.0.25
ports = 80:9090
selector = version=b

[route "grpc-mirror"]
namespace = default
service = grpc
match.path_prefix = /amesh.Echo/Unary
backends = grpc
mirror = grpc-b

; One connection at a time, at L4 through the ztunnel.
[service "cbl4"]
namespace = default
vip = 10.96.0.23
ports = 80:8080
selector = version=b
connection_pool.tcp.max_connections = 1
EOF

for ns in a2 b1; do
	who=$( [ $ns = a2 ] && echo a || echo b )
	start "http_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name echo-$who --port 8080 || exit 1
	st=200
	[ $ns = b1 ] && st=503
	start "od_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name od-$who --port 8081 --status $st || exit 1
	start "both_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name bad-$who --port 8082 --status 503 \
		--log "$TMP/both-$ns.log" || exit 1
done
start grpc_a2 $(lab_in a2) $PY "$GRPC" serve --name echo-a --port 9090 --log "$TMP/grpc-a2.log" || exit 1
start grpc_b1 $(lab_in b1) $PY "$GRPC" serve --name echo-b --port 9090 --log "$TMP/grpc-b1.log" || exit 1
spawn zt_a $(lab_in ha) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_A"
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
spawn wp $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
lab_wait_ready ha && lab_wait_ready hb && lab_wait_ready ha 15121
check "ztunnels and the waypoint are ready" 'lab_ready ha && lab_ready hb && lab_ready ha 15121'
if ! { lab_ready ha && lab_ready hb && lab_ready ha 15121; }; then
	echo "Bail out! not ready: $(tail -n 3 "$TMP/wp.err" "$TMP/zt_a.err")"
	exit 1
fi
for x in "a a1 client-a" "a a2 echo-a" "b b1 echo-b"; do
	set -- $x
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3" >/dev/null 2>&1
done

get() { # get VIP [ARGS...]: requests from client-a on one keep-alive connection
	v=$1
	shift
	run lab_exec a1 $PY "$HTTPD" get --url "http://$v/x" "$@"
}
count() { echo "$OUT" | sed -n "s/^$1 \([0-9]*\)$/\1/p"; }
# metric PORT NAME MATCH: the sum of NAME's samples whose line contains MATCH (host A).
metric() {
	lab_exec ha $PY -c 'import sys,urllib.request
t=urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1],timeout=2).read().decode()
print(int(sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines()
              if l.split("{")[0].split(" ")[0] == sys.argv[2] and sys.argv[3] in l)))' "$@"
}
WPM=15120
ZTM=15020

# Round robin: od-b answers its 3rd 503 on the 6th request and is out; the rest go to od-a.
get 10.96.0.20 --count 20
bad=$(count "503 od-b")
good=$(count "200 od-a")
check "od: echo-b ejected after 3 consecutive 503s, then all to echo-a (503: ${bad:-0}, 200: ${good:-0})" \
	'[ "$bad" = 3 ] && [ "$good" = 17 ]'
ej=$(metric $WPM amesh_outlier_ejections_total 'service="od.default')
out=$(metric $WPM amesh_outlier_endpoints_ejected 'service="od.default')
check "od: amesh_outlier_ejections_total $ej, amesh_outlier_endpoints_ejected $out" \
	'[ "$ej" = 1 ] && [ "$out" = 1 ]'
check "od: the ejection is logged" 'grep -q "service default/od: endpoint echo-b ejected for 5000 ms" "$TMP/wp.err"'
# Back after base_ejection_time (5 s); its next three 503s eject it again, for twice as long,
# when they come within base_ejection_time of its return (after that the multiplier decays): so
# the next requests go as soon as the return is logged, not after a fixed sleep that a loaded
# machine can stretch past it.
sleep 4.8
for i in $(seq 50); do
	grep -q "endpoint echo-b back from ejection" "$TMP/wp.err" && break
	sleep 0.1
done
out0=$(metric $WPM amesh_outlier_endpoints_ejected 'service="od.default')
get 10.96.0.20 --count 20
bad=$(count "503 od-b")
# Past the first ejection's 5 s (but well within 10 s of the second's start, made during the
# requests above), it is still out.
sleep 5.3
run2=$OUT
get 10.96.0.20 --count 4
later=$OUT
out=$(metric $WPM amesh_outlier_endpoints_ejected 'service="od.default')
ej=$(metric $WPM amesh_outlier_ejections_total 'service="od.default')
OUT=$run2
check "od: back after 5 s (gauge $out0), ejected again after 3 more 503s (${bad:-0}; ejections $ej)" \
	'[ "$out0" = 0 ] && [ "$bad" = 3 ] && [ "$ej" = 2 ]'
check "od: the second ejection in a row lasts 10 s" \
	'grep -q "endpoint echo-b ejected for 10000 ms (consecutive 5xx, ejection 2 in a row)" "$TMP/wp.err"'
OUT=$later
check "od: still out 5.3 s after the second ejection (gauge $out; $(echo $OUT))" \
	'[ "$out" = 1 ] && [ "$(count "200 od-a")" = 4 ]'

# Both endpoints failing with max_ejection_percent = 100: the first is ejected, the other stays.
get 10.96.0.21 --count 20
na=$(wc -l <"$TMP/both-a2.log")
nb=$(wc -l <"$TMP/both-b1.log")
out=$(metric $WPM amesh_outlier_endpoints_ejected 'service="both.default')
check "both: one of two failing endpoints ejected, the other stays (ejected $out; requests a $na, b $nb)" \
	'[ "$out" = 1 ] && [ $((na + nb)) -eq 20 ] && { [ "$na" = 2 ] || [ "$nb" = 2 ]; } &&
	 [ "$(count "503 bad-a")$(count "503 bad-b")" = "${na}${nb}" ]'

# http2_max_requests = 1: a second request while /slow is in flight is refused, 503 UO.
lab_exec a1 $PY "$HTTPD" get --url "http://10.96.0.22/slow" >"$TMP/slow.out" 2>&1 &
SLOW=$!
sleep 0.7
get 10.96.0.22 --count 1
wait $SLOW
check "cb: a second request while one is in flight gets 503 overflow ($(echo $OUT); the first: $(head -n 1 "$TMP/slow.out"))" \
	'echo "$OUT" | grep -q "^503 upstream_connect_error_or_disconnect/res 1$" &&
	 grep -q "^200 echo-b 1$" "$TMP/slow.out"'
ov=$(metric $WPM amesh_circuit_breaker_overflow_total 'service="cb.default')
uo=$(metric $WPM istio_requests_total 'response_flags="UO"')
check "cb: counted (amesh_circuit_breaker_overflow_total $ov, istio_requests_total UO $uo)" \
	'[ "$ov" = 1 ] && [ "$uo" = 1 ]'
check "cb: the access log has the request with flags=UO" \
	'grep "scope=access\|access:" "$TMP/wp.err" | grep -q "flags=UO"'
get 10.96.0.22 --count 3
check "cb: one at a time passes again ($(echo $OUT))" '[ "$(count "200 echo-b")" = 3 ]'

# HTTP/2 parity (issue 18 item 5): retries, per-try timeouts, mirroring of gRPC calls.
stat() { lab_exec ha $PY -c 'import json,sys,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"][sys.argv[1]])' "$1"; }
r0=$(stat retries)
run lab_exec a1 $PY "$GRPC" call --target 10.96.0.24:80 --method /amesh.Echo/Flaky --count 3
r1=$(stat retries)
tries=$(grep -c "^Flaky " "$TMP/grpc-a2.log")
check "gRPC: an UNAVAILABLE first attempt is retried and succeeds ($(echo $OUT); retries +$((r1 - r0)), calls seen $tries)" \
	'[ "$OUT" = "echo-a 3" ] && [ $((r1 - r0)) -eq 3 ] && [ "$tries" -eq 6 ]'
r0=$(stat retries)
run lab_exec a1 $PY "$GRPC" call --target 10.96.0.24:80 --method /amesh.Echo/Late --count 2
r1=$(stat retries)
tries=$(grep -c "^Late " "$TMP/grpc-a2.log")
check "gRPC: UNAVAILABLE in trailers after a head (no message yet) is retried too ($(echo $OUT); retries +$((r1 - r0)), calls seen $tries)" \
	'[ "$OUT" = "echo-a 2" ] && [ $((r1 - r0)) -eq 2 ] && [ "$tries" -eq 4 ]'
# Timed against a quick call of the same client (Fail: answered at once, neither retried nor
# mirrored; the interpreter's and grpcio's start-up is not
# the proxy's): two tries of 300 ms, where one slow answer alone takes 2 s.
t0=$(date +%s%N)
run lab_exec a1 $PY "$GRPC" call --target 10.96.0.24:80 --method /amesh.Echo/Fail
fast=$(( ($(date +%s%N) - t0) / 1000000 ))
t0=$(date +%s%N)
run lab_exec a1 $PY "$GRPC" call --target 10.96.0.24:80 --method /amesh.Echo/Slow
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
slow=$(grep -c "^Slow " "$TMP/grpc-a2.log")
check "gRPC: per_try_timeout 300 ms on a slow call, retried once, then UNAVAILABLE ($OUT; ${ms} ms, a quick call ${fast} ms; attempts $slow)" \
	'[ "$OUT" = "status UNAVAILABLE upstream request timeout 1" ] && [ "$slow" -eq 2 ] && [ $((ms - fast)) -lt 1500 ]'

m0=$(stat mirrors)
run lab_exec a1 $PY "$GRPC" call --target 10.96.0.24:80 --method /amesh.Echo/Unary --count 3
for i in $(seq 20); do [ "$(grep -c "^Unary hello" "$TMP/grpc-b1.log" 2>/dev/null)" -ge 3 ] && break; sleep 0.1; done
m1=$(stat mirrors)
shadow=$(grep "^Unary hello" "$TMP/grpc-b1.log" 2>/dev/null | sort | tr '\n' ',')
check "gRPC: mirrored calls reach the mirror whole ($(echo $OUT); mirror got: $shadow; mirrors +$((m1 - m0)))" \
	'[ "$OUT" = "echo-a 3" ] && [ "$shadow" = "Unary hello 0,Unary hello 1,Unary hello 2," ] &&
	 [ $((m1 - m0)) -eq 3 ] && [ "$(grep -c "^Unary hello" "$TMP/grpc-a2.log")" -eq 3 ]'

# tcp.max_connections = 1 at the ztunnel: a second connection is refused while one is open.
run lab_exec a1 $PY -c 'import socket,sys,time
def ask(s): # one whole response (head and content-length body), or "nothing"
    s.sendall(b"GET / HTTP/1.1\r\nHost: cbl4\r\n\r\n")
    d=b""
    try:
        while b"\r\n\r\n" not in d:
            c=s.recv(4096)
            if not c: break
            d+=c
        head,_,body=d.partition(b"\r\n\r\n")
        n=[int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        while n and len(body)<n[0]:
            c=s.recv(4096)
            if not c: break
            body+=c
    except OSError:
        pass
    return d.split(b"\r\n")[0].decode() if d else "nothing"
a=socket.create_connection(("10.96.0.23",80),timeout=5)
print("first", ask(a))
try: # refused: reset at once (even before connect returns) or right after
    b=socket.create_connection(("10.96.0.23",80),timeout=5)
    print("second", ask(b))
    b.close()
except OSError:
    print("second nothing")
print("first again", ask(a))
a.close()
time.sleep(1) # the ztunnel ends the flow once both sides closed
c=socket.create_connection(("10.96.0.23",80),timeout=5)
print("after", ask(c))'
check "cbl4: the ztunnel refuses a second connection while one is open ($(echo $OUT))" \
	'[ "$(echo $OUT)" = "first HTTP/1.0 200 OK second nothing first again HTTP/1.0 200 OK after HTTP/1.0 200 OK" ] ||
	 [ "$(echo $OUT)" = "first HTTP/1.1 200 OK second nothing first again HTTP/1.1 200 OK after HTTP/1.1 200 OK" ]'
ov=$(metric $ZTM amesh_circuit_breaker_overflow_total 'service="cbl4.default')
uo=$(metric $ZTM istio_tcp_connections_closed_total 'response_flags="UO"')
check "cbl4: counted (amesh_circuit_breaker_overflow_total $ov, TCP connections closed with UO $uo) and logged" \
	'[ "$ov" = 1 ] && [ "$uo" = 1 ] && grep -q "flags=UO" "$TMP/zt_a.err"'

tap_done
