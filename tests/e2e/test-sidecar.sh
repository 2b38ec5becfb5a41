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
plan 37

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY

for ns in a1 a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done
# HTTP on 8081 in both sidecar workloads (each request logged), and a server-first protocol.
HTTPD="$SRCDIR/tests/e2e/httpd.py"
for ns in a2 b1; do
	name=$( [ $ns = a2 ] && echo echo-a || echo echo-b )
	start "http_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name $name --port 8081 \
		--log "$TMP/requests-$ns.log" || exit 1
done
start greet_b1 $(lab_in b1) $PY "$LAB_PEER" serve --port 8082 --greet "220 echo-b ready" || exit 1
GRPC="$SRCDIR/tests/e2e/grpcpeer.py"
start grpc_b1 $(lab_in b1) $PY "$GRPC" serve --name echo-b --port 9090 || exit 1
# A waypoint on host A for service "viawp" (other-b behind VIP 10.96.0.15).
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
WP=$LAB_WP
# wp is namespace default's: it serves "viawp" of namespace other because it says so.
echo "allowed_namespaces = other" >>"$LAB_REGISTRY/39-waypoint.conf"
cat >"$LAB_REGISTRY/40-waypoint.conf" <<EOF
[service "viawp"]
namespace = other
vip = 10.96.0.15
ports = 80:8080
selector = app=other
waypoint = wp

# No waypoint: its routes are applied by a calling sidecar.
[service "web"]
namespace = default
vip = 10.96.0.17
ports = 80:8081
selector = version=b

[route "web-flaky"]
namespace = default
service = web
match.path_prefix = /flaky
backends = echo-b
retries = 2
retry_on = 5xx

[route "web-slow"]
namespace = default
service = web
match.path_prefix = /slow
backends = echo-b
timeout = 500ms

[route "web-to-a"]
namespace = default
service = web
match.headers = x-to: a
backends = echo-a
EOF
spawn wp $(lab_in ha) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
spawn zt_a $(lab_in ha) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_A"
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
sidecar() { # sidecar NS CONF WORKLOAD: as amesh-sidecar@WORKLOAD.service runs it
	spawn "sc_$1" $(lab_in "$1") $(lab_unit_privs amesh-sidecar@.service) "$AMESH" -c "$2" \
		sidecar --workload "$3"
}
# echo-b's sidecar gives a silent client 300 ms (not the default 1 s) before relaying it at L4.
printf '\n[sidecar]\nprotocol_detection_timeout = 300ms\n' >>"$LAB_CONF_B"
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

# --- L7 in the sidecars ---
stat_l7() { # stat_l7 NS KEY: the sidecar's L7 engine counter
	lab_exec "$1" $PY -c 'import json,sys,urllib.request
d=json.load(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2))
print(d["enrolled"][0]["l7"][sys.argv[1]])' "$2"
}
get() { # get NS URL [httpd.py get options]: OUT is its output
	_ns=$1 _url=$2
	shift 2
	run lab_exec "$_ns" $PY "$HTTPD" get --url "$_url" "$@"
}
metrics() { lab_exec "$1" $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15020/metrics",timeout=2).read().decode())'; }

r0=$(stat_l7 a2 retries)
get a2 http://10.96.0.17/flaky/one
r1=$(stat_l7 a2 retries)
tries=$(grep -c "^GET /flaky/one " "$TMP/requests-b1.log")
check "outbound retry applied by the calling sidecar: 503 then 200 (echo-b saw $tries tries; its retries $r0 -> $r1)" \
	'echo "$OUT" | grep -q "^200 echo-b 1$" && [ "$tries" -eq 2 ] && [ "$r1" -eq $((r0 + 1)) ]'
get a2 http://10.96.0.17/slow --timeout 5 --elapsed
ms=$(echo "$OUT" | sed -n 's/^elapsed_ms //p')
check "the route timeout is applied by the calling sidecar: 504 (${ms} ms)" \
	'echo "$OUT" | grep -q "^504 " && [ "${ms:-9999}" -lt 1800 ]'
get a2 http://10.96.0.17/ --count 4 --header "x-to: a"
to_a=$OUT
get a2 http://10.96.0.17/ --count 4
check "the calling sidecar picks the route's backend (x-to: a -> echo-a; else echo-b)" \
	'echo "$to_a" | grep -q "^200 echo-a 4$" && echo "$OUT" | grep -q "^200 echo-b 4$"'
run metrics a2
check "the calling sidecar reports its requests with reporter source" \
	'echo "$OUT" | grep "^istio_requests_total{" | grep "reporter=\"source\"" |
	 grep "source_workload=\"echo-a\"" | grep "destination_service=\"web.default.svc.cluster.local\"" |
	 grep -q "response_code=\"504\""'

# L7 policy at the receiving sidecar: echo-b admits GET and HEAD only. (A ztunnel cannot check
# methods: it would refuse every connection, failing closed.)
cat >"$LAB_REGISTRY/50-policy.conf" <<'EOF'
[policy "echo-b-read-only"]
namespace = default
selector = version=b
action = allow
to.methods = GET, HEAD

[policy "echo-b-no-admin"]
namespace = default
selector = version=b
action = deny
to.paths = /admin, /admin/*
EOF
sleep 1.5
get a1 "http://$LAB_B1:8081/doc"
ok_get=$OUT
get a1 "http://$LAB_B1:8081/doc" --method POST --upload 10
denied=$OUT
posts=$(grep -c "^POST /doc " "$TMP/requests-b1.log")
check "L7 deny enforced by the receiving sidecar: GET 200, POST 403 from ambient client-a (POSTs that reached echo-b: $posts)" \
	'echo "$ok_get" | grep -q "^200 echo-b 1$" && echo "$denied" | grep -q "^403 RBAC:_access_denied 1$" &&
	 [ "$posts" -eq 0 ]'
# Other spellings of /admin meet the same rule; the app gets the path that was judged.
codes=$(for p in /admin //admin /public/../admin /%61dmin /x/%2e%2e/admin/ "/a%2fb"; do
	lab_exec a1 curl -s -o /dev/null -w "%{http_code} " --max-time 5 --path-as-is "http://$LAB_B1:8081$p"
done)
# (curl never sends a fragment: this one goes raw.)
frag=$(lab_exec a1 $PY -c 'import socket, sys
s = socket.create_connection((sys.argv[1], 8081), timeout=5)
s.sendall(b"GET /public#/../admin HTTP/1.1\r\nHost: x\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())' "$LAB_B1")
run lab_exec a1 curl -s -o /dev/null -w "%{http_code}" --max-time 5 --path-as-is "http://$LAB_B1:8081/x/./../doc2"
check "paths are normalized before policy: /admin in 5 spellings 403, an escaped slash 400 ($codes), a fragment 400 ($frag); /x/./../doc2 reaches the app as /doc2" \
	'[ "$codes" = "403 403 403 403 403 400 " ] && echo "$frag" | grep -q "^HTTP/1.1 400 " &&
	 [ "$OUT" = 200 ] && grep -q "^GET /doc2 " "$TMP/requests-b1.log"'
# A policy added while a client keeps its connection open applies to its next request.
lab_exec a1 $PY "$HTTPD" get --url "http://$LAB_B1:8081/late" --count 2 --pause 3.5 >"$TMP/late.out" 2>&1 &
late=$!
sleep 1
cat >"$LAB_REGISTRY/51-late.conf" <<'EOF'
[policy "echo-b-not-late"]
namespace = default
selector = version=b
action = deny
to.paths = /late
EOF
wait $late
late_out=$(cat "$TMP/late.out")
check "a policy added meanwhile applies to the next request on a kept-alive connection ($(echo $late_out))" \
	'grep -q "^200 echo-b 1$" "$TMP/late.out" && grep -q "^403 RBAC:_access_denied 1$" "$TMP/late.out"'
rm -f "$LAB_REGISTRY/51-late.conf"
# An Upgrade (WebSocket-style) request is authorized, then the tunnel carries the new protocol.
run lab_exec a1 $PY "$HTTPD" upgrade --url "http://$LAB_B1:8081/ws" --msg "upgraded-tunnel"
up_ok=$OUT
run lab_exec a1 $PY "$HTTPD" upgrade --url "http://$LAB_B1:8081/admin/ws" --msg x
check "an Upgrade request is authorized (/admin/ws: $(echo "$OUT" | head -n 1)), then relayed as bytes after 101" \
	'echo "$up_ok" | grep -q "^HTTP/1.1 101 " && echo "$up_ok" | grep -q "^echo upgraded-tunnel$" &&
	 echo "$OUT" | grep -q "^HTTP/1.1 403 "'
run lab_exec a1 $PY "$HTTPD" upgrade --url "http://$LAB_B1:8081/h2" --proto h2c --msg x
h2c=$(echo "$OUT" | head -n 1)
run lab_exec a1 $PY "$HTTPD" upgrade --url "http://$LAB_B1:8081/other" --proto echo --msg x
check "Upgrade: h2c and other protocols are not passed on: the app answers plain HTTP/1.1 ($h2c; $(echo "$OUT" | head -n 1))" \
	'[ "$h2c" = "HTTP/1.1 200 OK" ] && echo "$OUT" | grep -q "^HTTP/1.1 200 "'
get a2 http://10.96.0.17/doc --method DELETE
check "... and from sidecar echo-a through its routes: DELETE 403" \
	'echo "$OUT" | grep -q "^403 RBAC:_access_denied 1$"'
run metrics b1
check "the receiving sidecar reports requests with reporter destination (200 and 403 from client-a)" \
	'echo "$OUT" | grep "^istio_requests_total{" | grep "reporter=\"destination\"" |
	 grep "source_workload=\"client-a\"" | grep "destination_workload=\"echo-b\"" |
	 grep -q "response_code=\"403\"" &&
	 echo "$OUT" | grep "^istio_requests_total{" | grep "reporter=\"destination\"" |
	 grep "source_workload=\"client-a\"" | grep -q "response_code=\"200\""'
conn a1 "$LAB_B1"
check "not HTTP: the method-only policy cannot match, so the sidecar refuses it (fail closed)" \
	'! echo "$OUT" | grep -q "msg hello"'
rm -f "$LAB_REGISTRY/50-policy.conf"
# gRPC (h2c) into the sidecar: the HTTP/2 path, each call to the app over its own connection.
cat >"$LAB_REGISTRY/50-policy.conf" <<'EOF'
[policy "no-secret"]
namespace = default
selector = version=b
action = deny
to.paths = /amesh.Echo/Secret
EOF
sleep 1.5
grpc_b() { run lab_exec a1 $PY "$GRPC" call --target "$LAB_B1:9090" "$@"; }
grpc_b --method /amesh.Echo/Secret
secret=$OUT
grpc_b --method /amesh.Echo/Unary --count 5
unary=$OUT
grpc_b --stream 200 --size 16384
# The deny is a gRPC answer (grpc-status 7 with its reason), not an HTTP 403 the client decodes.
check "gRPC into the sidecar: Secret denied ($secret), Unary x5 and a 200 x 16 KiB stream pass" \
	'[ "$secret" = "status PERMISSION_DENIED RBAC: access denied 1" ] && echo "$unary" | grep -q "^echo-b 5$" &&
	 echo "$OUT" | grep -q "^stream 200 ok"'
rm -f "$LAB_REGISTRY/50-policy.conf"
sleep 1.5
# Bulk through both engines (echo-a's outbound, echo-b's inbound): the TCP legs' flow control.
head -c 20000000 /dev/urandom >"$TMP/up.bin"
want_up=$(sha256sum <"$TMP/up.bin" | cut -d" " -f1)
want_down=$(head -c 20000000 /dev/zero | tr '\0' b | sha256sum | cut -d" " -f1)
run lab_exec a2 curl -sS --max-time 60 --data-binary "@$TMP/up.bin" http://10.96.0.17/upload
up=$OUT
run lab_exec a2 sh -c 'curl -sS --max-time 60 http://10.96.0.17/bytes/20000000 | sha256sum'
check "20 MB up and 20 MB down through both sidecars' L7 engines arrive whole" \
	'echo "$up" | grep -q "\"body_sha256\": \"$want_up\"" && echo "$OUT" | grep -q "^$want_down "'
run lab_exec a1 $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8082 --greeted --msg hi --timeout 5
ms=$(echo "$OUT" | sed -n 's/^greeted_after_ms //p')
check "a server-first protocol through the sidecar: relayed at L4 once the client stays silent for protocol_detection_timeout (300 ms; greeting after ${ms} ms)" \
	'echo "$OUT" | grep -q "^greeting 220 echo-b ready" && echo "$OUT" | grep -q "msg hi" &&
	 [ "${ms:-0}" -ge 300 ] && [ "${ms:-9999}" -lt 1000 ]'

# Strict mTLS: a plaintext client (host B itself, outside the mesh) cannot reach echo-b; it can
# scrape the sidecar's metrics (their port is left out of the capture).
run lab_exec hb $PY -c 'import urllib.request,sys
print(urllib.request.urlopen("http://%s:15020/metrics" % sys.argv[1],timeout=3).status)' "$LAB_B1"
scrape=$OUT
run lab_exec hb $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg plain --timeout 3
check "plaintext from outside the mesh is refused by the sidecar (strict); metrics scrape ($scrape)" \
	'! echo "$OUT" | grep -q "msg plain" && [ "$scrape" = 200 ]'

# SIGUSR2 replaces echo-b's sidecar in place under load from client-a (ambient): the new process
# takes its listeners; nothing refused or reset, every transfer intact, the old one drains.
spawn sload $(lab_in a1) $PY "$SRCDIR/tests/e2e/upgrade-load.py" --addr "$LAB_B1" --port 8080 \
	--rate 100 --seconds 6 --transfers 4 --mib 16
SLOADPID=$pid
i=0
while ! grep -q '^start' "$TMP/sload.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 2
OLD_SC=$PID_sc_b1
NEW_SC=$(lab_upgrade "$TMP/sc_b1.err" "$OLD_SC")
i=0
while kill -0 "$SLOADPID" 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
RES=$(grep '^requests' "$TMP/sload.out")
lab_gone "$OLD_SC" 10 && wait "$OLD_SC" 2>/dev/null
check "SIGUSR2 under load replaces echo-b's sidecar ($OLD_SC -> $NEW_SC; $RES), the old one drained and exited" \
	'[ -n "$NEW_SC" ] && [ "$RES" = "requests 600 failed 0 transfers 4 bad 0" ] && ! lab_alive "$OLD_SC"'
grep '^fail' "$TMP/sload.out" | head -n 5 | sed 's/^/# /'
[ -n "$NEW_SC" ] && PID_sc_b1=$NEW_SC
run lab_exec a1 $PY "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg after-upgrade --timeout 5
check "the new sidecar serves, with the rules in place (client-a -> echo-b)" \
	'echo "$OUT" | grep -q "msg after-upgrade"'

# SIGTERM with two kept-alive request connections open: echo-a's sidecar closes them (a FIN
# between requests, as an HTTP server may) once the drain's 1 s grace is over (a request sent
# meanwhile would be answered with "Connection: close"). One client closes in turn; the other
# never reads, so its connection is reset at the drain timeout (5 s), and then the sidecar exits 0.
lab_exec a2 $PY "$HTTPD" get --url http://10.96.0.17/deaf --count 2 --pause 20 >/dev/null 2>&1 &
deaf=$!
lab_exec a2 $PY -c 'import http.client, os, sys, time
c = http.client.HTTPConnection("10.96.0.17", 80, timeout=10)
c.request("GET", "/kept")
r = c.getresponse()
r.read()
print("first", r.status, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
t0 = time.time()
d = c.sock.recv(1)
print("closed by the proxy" if d == b"" else "data", round(time.time() - t0, 1), flush=True)
c.close()' "$TMP/termed" >"$TMP/kept.out" 2>&1 &
kept=$!
# A third one sends its next request 0.3 s into the drain: answered, with "Connection: close".
# Its first request timed out (/slow: 504 at the route's 500 ms, its upstream stream reset), so
# the second needs a new stream from the sidecar's pool: the pool drains after the L7 engine.
lab_exec a2 $PY -c 'import http.client, os, sys, time
c = http.client.HTTPConnection("10.96.0.17", 80, timeout=10)
c.request("GET", "/slow")
r = c.getresponse()
r.read()
print("first", r.status, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
time.sleep(0.3)
c.request("GET", "/late2")
r = c.getresponse()
r.read()
print("second", r.status, r.getheader("connection"), flush=True)' "$TMP/termed" >"$TMP/late.out" 2>&1 &
late=$!
i=0
# Both connections must be open first: the deaf client's request in the access log too (it starts
# as slowly as the other one, and lost that race on a loaded machine).
while ! { grep -q "^first 200" "$TMP/kept.out" && grep -q "^first 504" "$TMP/late.out" &&
	grep -q "path=/deaf " "$TMP/sc_a2.err"; } &&
	[ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
eval "kill -TERM \$PID_sc_a2"
t0=$(date +%s%N)
touch "$TMP/termed"
rc=timeout
for i in $(seq 1 100); do
	if ! eval "kill -0 \$PID_sc_a2" 2>/dev/null; then
		eval "wait \$PID_sc_a2"
		rc=$?
		break
	fi
	sleep 0.1
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait $kept 2>/dev/null
wait $late 2>/dev/null
kill $deaf 2>/dev/null
wait $deaf 2>/dev/null
check "SIGTERM: kept-alive clients are closed after the 1 s grace (seconds after the signal: $(tr '\n' ' ' <"$TMP/kept.out")), one that never reads is reset at the drain timeout, exit $rc after ${ms} ms" \
	'[ "$rc" = 0 ] && [ "$ms" -ge 4000 ] && [ "$ms" -lt 9000 ] &&
	 grep -Eq "^closed by the proxy (0\.[89]|1\.[0-9]|2\.[0-4])" "$TMP/kept.out" && grep -q "drain timeout" "$TMP/sc_a2.err"'

check "a request sent 0.3 s into the drain on a kept-alive connection is answered, with Connection: close ($(tr '\n' ' ' <"$TMP/late.out"))" \
	'grep -q "^second 200 close" "$TMP/late.out"'

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
