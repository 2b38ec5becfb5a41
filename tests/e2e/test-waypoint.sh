#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The waypoint end to end: the two-host lab, ztunnels on both hosts, an amesh waypoint on host A
# (at 192.168.10.9) for service "echo", real HTTP/1.1 clients and servers in the workloads.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
trap 'lab_down; cleanup' EXIT
plan 48

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
HTTPD="$SRCDIR/tests/e2e/httpd.py"
GRPC="$SRCDIR/tests/e2e/grpcpeer.py"
# The waypoint's address, identity and configuration (lab_waypoint in lab.sh).
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
WP=$LAB_WP
# Not this name: the waypoint runs with --name wp, as amesh-waypoint@wp.service does.
echo "name = default-wp" >>"$LAB_WP_CONF"
# Service echo goes through the waypoint; routes and an L7 policy for it.
sed -i '/^\[service "echo"\]/a waypoint = wp' "$LAB_REGISTRY/00-lab.conf"
cat >"$LAB_REGISTRY/40-waypoint.conf" <<EOF
[route "split"]
namespace = default
service = echo
backends = echo-a 90, echo-b 10

[route "canary"]
namespace = default
service = echo
match.headers = x-canary: true
backends = echo-b

[route "slow"]
namespace = default
service = echo
match.path_prefix = /slow
backends = echo-b
timeout = 500ms

[route "teapot"]
namespace = default
service = echo
match.path_prefix = /abort
fault.abort = 418

[service "grpc"]
namespace = default
vip = 10.96.0.12
ports = 80:9090
selector = app=echo
waypoint = wp

[service "h2"]
namespace = default
vip = 10.96.0.13
ports = 80:9091
selector = app=echo
waypoint = wp

[service "echo-b-svc"]
namespace = default
vip = 10.96.0.14
ports = 80:8080
selector = version=b

[route "mirrored"]
namespace = default
service = echo
match.path_prefix = /mirrored
backends = echo-a
mirror = echo-b-svc

[route "pertry"]
namespace = default
service = echo
match.path_prefix = /pertry
rewrite.path_prefix = /slow
backends = echo-b
timeout = 3s
per_try_timeout = 300ms
retries = 1
retry_on = 5xx

[route "grpc-slow"]
namespace = default
service = grpc
match.path_prefix = /amesh.Echo/Slow
backends = echo-a, echo-b
timeout = 500ms

[service "hole"]
namespace = default
vip = 10.96.0.16
ports = 80:9092
selector = version=a
waypoint = wp

[route "hole-ok"]
namespace = default
service = hole
match.path_prefix = /ok
backends = h2

[route "grpc-canary"]
namespace = default
service = grpc
match.headers = x-canary: true
backends = echo-b

[route "longrw"]
namespace = default
service = echo
match.path_prefix = /longrw
rewrite.path_prefix = /longrw/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
backends = echo-a

[route "h2-longrw"]
namespace = default
service = h2
match.path_prefix = /longrw
rewrite.path_prefix = /longrw/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
backends = h2

[route "flaky"]
namespace = default
service = echo
match.path_prefix = /flaky
backends = echo-b
retries = 2
retry_on = 5xx

EOF
# Service "lbt": echo-a and "ghost", an endpoint nobody answers HBONE for (host A's bridge address:
# nothing listens on its port 15008 there, so the connect is refused at once).
sed -i 's/^labels = app=echo, version=a$/labels = app=echo, version=a, lbt=1/' "$LAB_REGISTRY/00-lab.conf"
cat >>"$LAB_REGISTRY/40-waypoint.conf" <<EOF
[workload "ghost"]
namespace = default
service_account = echo
node = node-a
addresses = 10.1.1.1
labels = lbt=1

[service "lbt"]
namespace = default
vip = 10.96.0.18
ports = 80:8080
selector = lbt=1
waypoint = wp

EOF
# Two routes with 80 edits in each header list (the registry takes up to 1,024 per list).
edits() { for i in $(seq 80); do echo "request_headers.add = x-edit-$i: $i"; echo "response_headers.add = x-redit-$i: $i"; done; }
{
	printf '\n[route "many-edits"]\nnamespace = default\nservice = echo\nmatch.path_prefix = /manyedits\nbackends = echo-a\n'
	edits
	printf '\n[route "h2-many-edits"]\nnamespace = default\nservice = h2\nmatch.path_prefix = /who\nmatch.headers = x-many: 1\nbackends = h2\n'
	edits
} >>"$LAB_REGISTRY/40-waypoint.conf"

for ns in a2 b1; do
	name=$( [ $ns = a2 ] && echo echo-a || echo echo-b )
	start "http_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name $name --port 8080 \
		--log "$TMP/requests-$ns.log" || exit 1
done
start srv_b2 $(lab_in b2) $PY "$HTTPD" serve --name other-b --port 8080 || exit 1
# gRPC (python3-grpcio) and plain h2c (nghttpd) servers on both echo endpoints.
for ns in a2 b1; do
	who=$( [ $ns = a2 ] && echo echo-a || echo echo-b )
	mkdir -p "$TMP/www-$ns" && echo "$who" >"$TMP/www-$ns/who"
	start "grpc_$ns" $(lab_in $ns) $PY "$GRPC" serve --name $who --port 9090 || exit 1
	spawn "h2_$ns" $(lab_in $ns) nghttpd --no-tls -d "$TMP/www-$ns" 9091
done
# An h2c server that never reads (its windows stay spent), behind service "hole".
start hole_a2 $(lab_in a2) $PY "$SRCDIR/tests/e2e/h2window.py" hole --port 9092 || exit 1
spawn zt_a $(lab_in ha) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_A"
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
spawn wp $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
WP_PID=$pid
lab_wait_ready ha && lab_wait_ready hb && lab_wait_ready ha 15121
check "ztunnels and the waypoint are ready" 'lab_ready ha && lab_ready hb && lab_ready ha 15121'
if ! { lab_ready ha && lab_ready hb && lab_ready ha 15121; }; then
	echo "Bail out! not ready: $(tail -n 3 "$TMP/wp.err" "$TMP/zt_a.err")"
	exit 1
fi
CAPS=$(lab_caps "$PID_wp")
check "the waypoint runs with no capabilities, as its unit grants ($CAPS)" '[ "$CAPS" = "none nnp" ]'
for x in "a a1 client-a" "a a2 echo-a" "b b1 echo-b" "b b2 other-b"; do
	set -- $x
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3" >/dev/null 2>&1
done

get() { # get PATH [ARGS...]: requests from client-a to the echo VIP
	p=$1
	shift
	run lab_exec a1 $PY "$HTTPD" get --url "http://$LAB_VIP/$p" "$@"
}
wp_requests() { lab_exec ha $PY -c 'import urllib.request
t=urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode()
print(sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines() if l.startswith("istio_requests_total{")))'; }

# 1,000 requests over one keep-alive connection: 90/10 within 5 standard deviations (9.5 each).
get "" --count 1000
a=$(echo "$OUT" | sed -n 's/^200 echo-a \([0-9]*\)$/\1/p')
b=$(echo "$OUT" | sed -n 's/^200 echo-b \([0-9]*\)$/\1/p')
check "90/10 split over 1,000 requests (echo-a ${a:-0}, echo-b ${b:-0})" \
	'[ -n "$a" ] && [ -n "$b" ] && [ $((a + b)) -eq 1000 ] && [ "$a" -ge 853 ] && [ "$a" -le 947 ]'

# Each backend as written and what it resolved to, in the waypoint's and the ztunnel's dumps.
resolved() { lab_exec ha $PY -c 'import json,sys,urllib.request
d=json.load(urllib.request.urlopen("http://127.0.0.1:%s/config_dump" % sys.argv[1],timeout=2))
routes=d["routes"] if "routes" in d else d["registry"]["route_list"]
print(" ".join("%s=%s:%s" % (b["name"], b["kind"], b["target"]) for r in routes
               if r["name"] in ("split", "hole-ok") for b in r["backends"]))' "$1"; }
rw=$(resolved 15100)
rz=$(resolved 15000)
check "config_dump: each backend's kind and target (waypoint: $rw; ztunnel: $rz)" \
	'[ "$rw" = "echo-a=workload:default/echo-a echo-b=workload:default/echo-b h2=service:default/h2" ] &&
	 [ "$rz" = "$rw" ]'

reused() { lab_exec ha $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"]["upstream_reused"])'; }
r0=$(reused)
get "" --count 20 --header "x-canary: true"
check "header routing: x-canary: true always reaches echo-b" '[ "$(echo "$OUT" | head -n 1)" = "200 echo-b 20" ]'
r1=$(reused)
check "keep-alive upstream: 19 of the 20 requests reuse the first one's tunnel ($r0 -> $r1)" \
	'[ $((r1 - r0)) -eq 19 ]'
# A kept tunnel unused for 4 s is closed: 2 s apart the second request reuses it, 4.5 s apart not.
get "" --count 2 --pause 2 --header "x-canary: true"
r2=$(reused)
get "" --count 2 --pause 4.5 --header "x-canary: true"
r3=$(reused)
check "a kept upstream tunnel idle for 4 s is closed (2 s apart: +$((r2 - r1)); 4.5 s apart: +$((r3 - r2)))" \
	'[ $((r2 - r1)) -eq 1 ] && [ $((r3 - r2)) -eq 0 ] && echo "$OUT" | grep -q "^200 echo-b 2$"'

get slow --timeout 5 --elapsed
ms=$(echo "$OUT" | sed -n 's/^elapsed_ms //p')
check "a slow backend yields 504 at the route timeout (${ms} ms)" \
	'echo "$OUT" | grep -q "^504 " && [ "${ms:-9999}" -lt 1800 ]'

get abort
check "100% abort answers the configured status 418" 'echo "$OUT" | grep -q "^418 "'

get flaky/one
check "a backend failing its first try with 503 succeeds after retry" 'echo "$OUT" | grep -q "^200 echo-b 1$"'
# With a body: sent again from the copy kept of it (up to 64 KiB); a larger one is not retried.
get flaky/body --method POST --upload 5000
small=$(echo "$OUT" | head -n 1)
get flaky/big --method POST --upload 100000
big=$(echo "$OUT" | head -n 1)
tries=$(grep -c "^POST /flaky/body 10.96.0.10 5000$" "$TMP/requests-b1.log")
check "a POST with a 5000-byte body is retried whole (both tries got it: $tries; $small); 100 KB is not ($big)" \
	'[ "$small" = "200 echo-b 1" ] && [ "$tries" -eq 2 ] && [ "$big" = "503 echo-b 1" ]'

# Anything that is neither HTTP/1.1 nor HTTP/2 (here bytes shaped like a TLS record) is relayed
# at L4 to an endpoint: the app's own answer comes back (Python's server answers a line it cannot
# parse with a bare HTML error page), not the waypoint's (a text/plain "bad request").
NOTHTTP='b"\x16\x03\x01\x00\x20" + b"x" * 32 + b"\r\n\r\n"'
run lab_exec a1 $PY -c 'import socket,sys
s=socket.create_connection((sys.argv[1],80),timeout=5)
s.sendall('"$NOTHTTP"')
d=b""
try:
    while len(d)<4096:
        c=s.recv(4096)
        if not c: break
        d+=c
except OSError: pass
print(d.decode(errors="replace").splitlines()[0] if d else "nothing")' "$LAB_VIP"
l4=$(lab_exec ha $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"]["tunnels_l4"])')
check "bytes that are not HTTP are relayed at L4 to the app (answer: $OUT; L4 tunnels: $l4)" \
	'echo "$OUT" | grep -q "^<!DOCTYPE HTML>\|^HTTP/1.[01] [45]0[0-9]" && [ "$l4" -ge 1 ]'

tcp=$(lab_exec ha $PY -c 'import urllib.request
t=urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode()
def total(name):
    return sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines()
               if l.startswith(name+"{") and "reporter=\"waypoint\"" in l and "destination_service=\"echo." in l)
print(int(total("istio_tcp_connections_closed_total")), int(total("istio_tcp_received_bytes_total")))')
check "the L4 tunnel is in the waypoint's TCP metrics (closed, bytes from the client: $tcp)" \
	'set -- $tcp; [ "$1" -ge 1 ] && [ "$2" -ge 24 ]'

# An L7 policy: no DELETE from client-a. (A deny with an L7 field fails closed at L4: the
# destination ztunnels see the waypoint and let it pass; the waypoint checks it in full.)
cat >"$LAB_REGISTRY/45-policy.conf" <<'EOF'
[policy "no-delete-from-client"]
namespace = default
selector = app=echo
action = deny
from.principals = cluster.local/ns/default/sa/client
to.methods = DELETE
EOF
sleep 1.5
h2probe() {
	run lab_exec a1 $PY -c 'import socket,sys
s=socket.create_connection((sys.argv[1],80),timeout=5)
s.sendall('"$NOTHTTP"')
try:
    d=s.recv(4096)
except OSError as e:
    d=b""
print(d.decode(errors="replace").splitlines()[0] if d else "nothing")' "$LAB_VIP"
}
h2probe
check "the same L4 tunnel from client-a is now refused (the deny fails closed at L4)" \
	'[ "$OUT" = "nothing" ]'
deny=$(lab_exec ha $PY -c 'import urllib.request
t=urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode()
def total(name):
    return sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines()
               if l.startswith(name+"{") and "reporter=\"waypoint\"" in l and "response_flags=\"DENY\"" in l)
print(int(total("istio_tcp_connections_opened_total")), int(total("istio_tcp_connections_closed_total")))')
check "the refused L4 tunnel is counted opened and closed with response_flags DENY ($deny)" \
	'[ "$deny" = "1 1" ]'
get "" --method DELETE
check "L7 deny by method: DELETE gets 403 RBAC: access denied" 'echo "$OUT" | grep -q "^403 RBAC:_access_denied 1$"'
get "" --method GET
check "the same path with GET passes" 'echo "$OUT" | grep -q "^200 echo-"'

run lab_exec a1 curl -sS -m 5 -o /dev/null -w "%{http_code} %{http_version}" "http://$LAB_VIP/curl"
check "curl (HTTP/1.1) through the waypoint" '[ "$OUT" = "200 1.1" ]'

# An h2c upgrade is not proxied (its requests would escape routes and policy): Upgrade is dropped,
# the application answers the plain request, and the client's connection carries the next request.
run lab_exec a1 curl -sS -m 5 -o /dev/null -o /dev/null -w "%{http_code} " -H "Connection: Upgrade" \
	-H "Upgrade: h2c" "http://$LAB_VIP/up1" "http://$LAB_VIP/up2"
check "an h2c Upgrade request gets the application's plain answer, and the next one follows ($OUT)" \
	'[ "$OUT" = "200 200 " ]'
# A WebSocket upgrade is: 101, then the tunnel carries the new protocol (the app echoes).
run lab_exec a1 $PY "$HTTPD" upgrade --url "http://$LAB_VIP/ws" --msg "through-the-waypoint"
check "a WebSocket upgrade through the waypoint: 101, then bytes both ways" \
	'echo "$OUT" | grep -q "^HTTP/1.1 101 " && echo "$OUT" | grep -q "^echo through-the-waypoint$"'

# Expect: 100-continue: the client holds its body until the backend's 100 Continue reaches it
# through the waypoint (it gives up waiting after 3 s and reports "no 100").
run lab_exec a1 $PY -c 'import socket,sys
s=socket.create_connection((sys.argv[1],80),timeout=3)
s.sendall(b"POST /expect HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
d=b""
try:
    while b"\r\n\r\n" not in d:
        c=s.recv(4096)
        if not c: break
        d+=c
except OSError: pass
if not d.startswith(b"HTTP/1.1 100 "):
    print("no 100:", d[:40]); sys.exit(0)
s.sendall(b"hello")
d=d.split(b"\r\n\r\n",1)[1]
try:
    while b"body_bytes" not in d:
        c=s.recv(4096)
        if not c: break
        d+=c
except OSError: pass
print("100 then", d.split(b" ")[1].decode() if d.startswith(b"HTTP/1.1 ") else d[:40], "body_bytes" , d.split(b"\"body_bytes\": ")[1].split(b",")[0].decode() if b"body_bytes" in d else "?")' "$LAB_VIP"
check "Expect: 100-continue: the backend's 100 Continue is forwarded, then the body and the 200 ($OUT)" \
	'[ "$OUT" = "100 then 200 body_bytes 5" ]'

get "" --show --count 1
check "W3C traceparent is created and propagated to the backend" \
	'echo "$OUT" | grep -q "\"traceparent\": \"00-[0-9a-f]\{32\}-[0-9a-f]\{16\}-01\""'

# HTTP/2 at L7: gRPC (python3-grpcio client and server) and h2c (curl, nghttp, nghttpd).
grpc_call() { run lab_exec a1 $PY "$GRPC" call --target 10.96.0.12:80 "$@"; }
grpc_call --count 20
a=$(echo "$OUT" | sed -n 's/^echo-a \([0-9]*\)$/\1/p')
b=$(echo "$OUT" | sed -n 's/^echo-b \([0-9]*\)$/\1/p')
check "gRPC unary through the waypoint: 20 calls, both endpoints answer (echo-a ${a:-0}, echo-b ${b:-0})" \
	'[ -n "$a" ] && [ -n "$b" ] && [ $((a + b)) -eq 20 ]'
grpc_call --count 10 --metadata x-canary=true
check "gRPC header routing: metadata x-canary: true always reaches echo-b" '[ "$OUT" = "echo-b 10" ]'
grpc_call --stream 200 --size 16384
check "gRPC bidirectional stream, 200 messages of 16 KiB each way, in order" \
	'echo "$OUT" | grep -q "^stream 200 ok echo-"'
grpc_call --method /amesh.Echo/Fail
check "gRPC status and message in trailers come through (NOT_FOUND)" \
	'[ "$OUT" = "status NOT_FOUND no such thing 1" ]'
cat >"$LAB_REGISTRY/46-grpc-policy.conf" <<'EOF'
[policy "no-secret"]
namespace = default
selector = app=echo
action = deny
from.principals = cluster.local/ns/default/sa/client
to.paths = /amesh.Echo/Secret
EOF
sleep 1.5
grpc_call --method /amesh.Echo/Secret
secret=$OUT
grpc_call --method /amesh.Echo/Unary
check "gRPC L7 deny by path: PERMISSION_DENIED for Secret ($secret), Unary passes" \
	'echo "$secret" | grep -q "^status PERMISSION_DENIED " && echo "$OUT" | grep -q "^echo-[ab] 1$"'
# The deny is a gRPC answer, as Envoy gives it: Trailers-Only, grpc-status 7 and the reason.
run lab_exec a1 curl -sS -m 5 --http2-prior-knowledge -D - -o /dev/null -X POST --data-binary '' \
	-H "content-type: application/grpc" -H "te: trailers" http://10.96.0.12/amesh.Echo/Secret
wire=$(echo "$OUT" | tr -d '\r' | grep -Ei '^(HTTP/2|content-type|grpc-)' | sed 's/ *$//' | tr '\n' ';')
check "gRPC deny: Trailers-Only grpc-status 7 ($wire client: $secret)" \
	'[ "$wire" = "HTTP/2 200;content-type: application/grpc;grpc-status: 7;grpc-message: RBAC: access denied;" ] &&
	 [ "$secret" = "status PERMISSION_DENIED RBAC: access denied 1" ]'
# Its metrics say what the client saw, as Istio's do: response_code 200, the deny in response_flags.
run lab_exec ha $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode())'
check "gRPC deny in istio_requests_total: response_code 200, response_flags DENY" \
	'echo "$OUT" | grep "^istio_requests_total{" | grep "request_protocol=\"grpc\"" |
	 grep "response_flags=\"DENY\"" | grep -q "response_code=\"200\"" &&
	 ! echo "$OUT" | grep "^istio_requests_total{" | grep "request_protocol=\"grpc\"" |
	 grep -q "response_code=\"403\""'
rm -f "$LAB_REGISTRY/46-grpc-policy.conf"
# Timed against a quick call of the same client, so that the interpreter's and grpcio's start-up
# (a second under ASan on a busy machine) is not counted: the slow method answers after 2 s.
t0=$(date +%s%N)
grpc_call --method /amesh.Echo/Unary
fast=$(( ($(date +%s%N) - t0) / 1000000 ))
t0=$(date +%s%N)
grpc_call --method /amesh.Echo/Slow
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "gRPC route timeout: 504 at 500 ms, UNAVAILABLE for the client (${ms} ms, a quick call ${fast} ms: $OUT)" \
	'[ "$OUT" = "status UNAVAILABLE upstream request timeout 1" ] && [ $((ms - fast)) -lt 1500 ]'
# A client that gives up (deadline) and one that sends DATA on stream 0 after the preface lose their own
# call or connection only; the waypoint holds nothing of them afterwards.
grpc_call --method /amesh.Echo/Slow --deadline 0.3
dl=$OUT
run lab_exec a1 $PY -c 'import socket,sys
s=socket.create_connection(("10.96.0.12",80),timeout=5)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00" + b"junk")
closed=False
try:
    while True:
        if not s.recv(4096):
            closed=True
            break
except OSError: pass
print("closed" if closed else "open")'
junk=$OUT
grpc_call --count 3
check "a cancelled call ($dl) and a garbage connection ($junk) do not disturb the next calls" \
	'echo "$dl" | grep -q "^status DEADLINE_EXCEEDED" && [ "$junk" = closed ] && echo "$OUT" | grep -q "^echo-"'
# 24 streams cancelled while their bodies wait in front of that server (24 x 64 KiB is past the
# connection's 1 MiB window): what they held goes back to the client's window, so a request on
# the same connection still gets its body through and an answer.
run lab_exec a1 $PY "$SRCDIR/tests/e2e/h2window.py" cancel --addr 10.96.0.16 --streams 24
check "24 cancelled streams with bodies in flight leave the connection's window whole ($OUT)" \
	'echo "$OUT" | grep -q "^status [0-9]"'
i=0
active=-1
while [ $i -lt 30 ]; do
	active=$(lab_exec ha $PY -c 'import json,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"]["active"])')
	[ "$active" = 0 ] && break
	sleep 0.1
	i=$((i + 1))
done
check "after the HTTP/2 tests no tunnel is left open in the waypoint (active $active)" '[ "$active" = 0 ]'
run lab_exec a1 curl -sS -m 5 --http2-prior-knowledge -w " %{http_code} %{http_version}" \
	http://10.96.0.13/who
check "curl --http2-prior-knowledge (h2c) through the waypoint ($OUT)" \
	'echo "$OUT" | grep -q "^echo-[ab]" && echo "$OUT" | grep -q " 200 2$"'
run lab_exec a1 nghttp -n -s http://10.96.0.13/who http://10.96.0.13/who?again http://10.96.0.13/missing
check "nghttp: three requests on one h2c connection (2 x 200, 1 x 404)" \
	'[ "$(echo "$OUT" | grep -c " 200 ")" -eq 2 ] && [ "$(echo "$OUT" | grep -c " 404 ")" -eq 1 ]'
# A path of 1,998 bytes fits; rewritten with 101 more it does not: 414, never the path un-rewritten.
long=$(printf 'a%.0s' $(seq 1990))
get "longrw/$long"
h1=$OUT
run lab_exec a1 curl -sS -m 5 --http2-prior-knowledge -o /dev/null -w "%{http_code}" \
	"http://10.96.0.13/longrw/$long"
check "a rewrite past the path limit is answered 414 (HTTP/1.1: $(echo "$h1" | head -n 1); h2: $OUT)" \
	'echo "$h1" | grep -q "^414 URI_too_long_after_the_route" && [ "$OUT" = 414 ]'
# A route's 80 header edits of each list are all applied, over HTTP/1.1 and HTTP/2 alike (80: the
# echo server takes at most 100 fields; HTTP/2 used to have room for 80 in all).
get manyedits --show
h1req=$(echo "$OUT" | grep -o '"x-edit-[0-9]*"' | sort -u | wc -l)
run lab_exec a1 curl -sS -m 5 -D - -o /dev/null "http://$LAB_VIP/manyedits"
h1resp=$(echo "$OUT" | grep -ci '^x-redit-')
run lab_exec a1 curl -sS -m 5 --http2-prior-knowledge -D - -o /dev/null -H "x-many: 1" \
	http://10.96.0.13/who
h2resp=$(echo "$OUT" | grep -ci '^x-redit-')
h2st=$(echo "$OUT" | sed -n 's/^HTTP\/2 \([0-9]*\).*/\1/p')
check "80 header edits per list all applied (HTTP/1.1: $h1req request, $h1resp response; h2: $h2st, $h2resp response)" \
	'[ "$h1req" = 80 ] && [ "$h1resp" = 80 ] && [ "$h2st" = 200 ] && [ "$h2resp" = 80 ]'
# CONNECT inside the tunnel is not served at L7: one answer, 405 with its Allow field, over HTTP/1.1
# and HTTP/2.
run lab_exec a1 $PY -c 'import socket,sys
import h2.config,h2.connection,h2.events
s=socket.create_connection((sys.argv[1],80),timeout=3)
s.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
r=s.recv(4096)
a=[l.split(b":",1)[1].strip().decode() for l in r.split(b"\r\n") if l.lower().startswith(b"allow:")]
print("h1", r.split(b" ")[1].decode(), a[0] if a else "no-allow")
s=socket.create_connection(("10.96.0.13",80),timeout=3)
c=h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,validate_outbound_headers=False))
c.initiate_connection()
c.send_headers(1,[(":method","CONNECT"),(":authority","example.com:443")])
s.sendall(c.data_to_send())
st="none"
while st=="none":
    d=s.recv(65536)
    if not d: break
    for e in c.receive_data(d):
        if isinstance(e,h2.events.ResponseReceived):
            h=dict(e.headers); st=h[b":status"].decode()+" "+h.get(b"allow",b"no-allow").decode()
        elif isinstance(e,h2.events.StreamReset) and st=="none": st="reset"
    s.sendall(c.data_to_send())
print("h2", st)' "$LAB_VIP"
allow="GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH"
check "CONNECT is answered 405 with Allow over HTTP/1.1 and HTTP/2 alike ($(echo $OUT))" \
	'[ "$OUT" = "$(printf "h1 405 %s\nh2 405 %s" "$allow" "$allow")" ]'
run lab_exec ha $PY -c 'import json,urllib.request
t=urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode()
n=sum(float(l.rsplit(" ",1)[1]) for l in t.splitlines() if l.startswith("istio_requests_total{")
      and "request_protocol=\"grpc\"" in l and "response_code=\"200\"" in l and "destination_service=\"grpc." in l)
d=json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"]
print(int(n), d["tunnels_h2"])'
check "istio_requests_total counts the gRPC calls (request_protocol grpc; requests, h2 tunnels: $OUT)" \
	'set -- $OUT; [ "$1" -ge 32 ] && [ "$2" -ge 6 ]'

# Mirroring: echo-a answers; echo-b gets a copy (Host "...-shadow"), body included.
stat_wp() { lab_exec ha $PY -c 'import json,sys,urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))["stats"][sys.argv[1]])' "$1"; }
m0=$(stat_wp mirrors)
get mirrored/x --count 3
main=$(echo "$OUT" | head -n 1)
get mirrored/up --method POST --upload 100000
main="$main / $(echo "$OUT" | head -n 1)"
i=0
while [ $i -lt 30 ] && [ "$(grep -c -- "-shadow" "$TMP/requests-b1.log" 2>/dev/null)" -lt 4 ]; do
	sleep 0.1
	i=$((i + 1))
done
shadow=$(grep -- "-shadow" "$TMP/requests-b1.log" 2>/dev/null | sort | uniq -c | awk '{$1=$1; print}' | tr '\n' ';')
m1=$(stat_wp mirrors)
check "mirroring: echo-a answers ($main), echo-b gets each copy with its body ($shadow)" \
	'echo "$main" | grep -q "^200 echo-a 3" && echo "$main" | grep -q "/ 200 echo-a 1" &&
	 echo "$shadow" | grep -q "^3 GET /mirrored/x 10.96.0.10-shadow 0;" &&
	 echo "$shadow" | grep -q "1 POST /mirrored/up 10.96.0.10-shadow 100000;" && [ $((m1 - m0)) -eq 4 ]'
# Requiring the waypoint (amesh-waypoint(8)): the workloads admit only the waypoint at L4, the
# clients by an L7 allow that only the waypoint evaluates. (The DELETE deny above is set aside
# meanwhile: it fails closed at L4 for client-a, which would refuse the direct path anyway.)
mv "$LAB_REGISTRY/45-policy.conf" "$TMP/45-policy.conf"
sleep 1.5
run lab_exec a1 $PY "$HTTPD" get --url "http://$LAB_B1:8080/" --timeout 3
before=$(echo "$OUT" | head -n 1)
cat >"$LAB_REGISTRY/47-via-waypoint.conf" <<'EOF'
[policy "echo-via-waypoint"]
namespace = default
selector = app=echo
action = allow
from.principals = cluster.local/ns/default/sa/waypoint

[policy "echo-clients"]
namespace = default
selector = app=echo
action = allow
from.principals = cluster.local/ns/default/sa/client
to.methods = *
EOF
sleep 1.5
get "" --count 2
via=$(echo "$OUT" | head -n 1)
run lab_exec a1 $PY "$HTTPD" get --url "http://$LAB_B1:8080/" --timeout 3
check "requiring the waypoint: through it passes ($via), echo-b's address directly no more ($before before)" \
	'[ "$before" = "200 echo-b 1" ] && echo "$via" | grep -q "^200 echo-" && ! echo "$OUT" | grep -q "^200 "'
rm -f "$LAB_REGISTRY/47-via-waypoint.conf"
mv "$TMP/45-policy.conf" "$LAB_REGISTRY/45-policy.conf"
sleep 1.5

# per_try_timeout: two tries of 300 ms against a backend that takes 2 s, then 504.
n0=$(stat_wp retries)
get pertry --timeout 5 --elapsed
ms=$(echo "$OUT" | sed -n 's/^elapsed_ms //p')
n1=$(stat_wp retries)
check "per_try_timeout: 300 ms per try, one retry, then 504 (${ms} ms, retries $n0 -> $n1)" \
	'echo "$OUT" | grep -q "^504 " && [ "${ms:-0}" -ge 550 ] && [ "${ms:-9999}" -lt 1800 ] && [ $((n1 - n0)) -eq 1 ]'

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wpid=$(pgrep -f "waypoint -c $LAB_DIR/waypoint.conf" | head -n 1)
before=$(rss "$wpid")
get upload --method POST --upload 104857600 --timeout 60
after=$(rss "$wpid")
if "$BUILDDIR/tests/tools/hbone-tool" sanitized; then
	check "a 100 MB upload streams through (RSS not asserted under AddressSanitizer)" \
		'echo "$OUT" | grep -q "^200 echo-"'
else
	# Streamed, not buffered: the waypoint holds at most a few windows' worth at a time.
	check "a 100 MB upload streams through (waypoint RSS $before -> $after KiB)" \
		'echo "$OUT" | grep -q "^200 echo-" && [ $((after - before)) -le 16384 ]'
fi

n0=$(wp_requests)
run lab_exec a1 $PY "$HTTPD" get --url "http://$LAB_VIP_OTHER/" --count 5
n1=$(wp_requests)
check "a service without a waypoint never touches it (waypoint requests $n0 -> $n1)" \
	'echo "$OUT" | grep -q "^200 other-b 5$" && [ "$n0" = "$n1" ]'

run lab_exec ha $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15120/metrics",timeout=2).read().decode())'
check "request metrics: istio_requests_total with response_code 403 and reporter waypoint" \
	'echo "$OUT" | grep "^istio_requests_total{" | grep "reporter=\"waypoint\"" | grep -q "response_code=\"403\""'

# The balancer: an endpoint the waypoint could not connect to is skipped for 5 s, then tried again.
run lab_exec a1 $PY "$HTTPD" get --url "http://10.96.0.18/" --count 8
lb1=$(echo "$OUT" | tr '\n' ';')
sleep 5.5
run lab_exec a1 $PY "$HTTPD" get --url "http://10.96.0.18/" --count 4
lb2=$(echo "$OUT" | tr '\n' ';')
check "a failed endpoint is skipped for 5 s, then tried again (8 requests: $lb1 4 after 5 s: $lb2)" \
	'echo "$lb1" | grep -q "200 echo-a 7;" && echo "$lb1" | grep -q "503 upstream_connect_error 1;" &&
	 echo "$lb2" | grep -q "200 echo-a 3;" && echo "$lb2" | grep -q "503 upstream_connect_error 1;"'

# The admin /logging endpoint: a level is set and reported, an unknown one is refused with 400.
run lab_exec ha $PY -c 'import urllib.request,urllib.error
def call(q,method):
    try:
        r=urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:15100/logging"+q,method=method,data=b"" if method=="POST" else None),timeout=2)
        return "%d %s" % (r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        return "%d %s" % (e.code, e.read().decode().strip())
print(call("?level=debug","POST"), "|", call("?level=loud","GET"), "|", call("","GET"), "|", call("?level=info","POST"))'
check "admin /logging sets the level and refuses an unknown one ($OUT)" \
	'[ "$OUT" = "200 level: debug | 400 level: expected error, warn, info or debug | 200 level: debug | 200 level: info" ]'

# POST /quitquitquit answers "draining"; readiness goes, and the waypoint drains and exits 0.
run lab_exec ha $PY -c 'import urllib.request,urllib.error
def call(port,path,method):
    try:
        r=urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d%s" % (port,path),method=method,data=b"" if method=="POST" else None),timeout=2)
        return "%d %s" % (r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        return "%d %s" % (e.code, e.read().decode().strip())
    except OSError as e:
        return "closed"
print(call(15100,"/healthz/ready","GET"), "|", call(15100,"/quitquitquit","POST"))'
quit=$OUT
for i in $(seq 100); do kill -0 "$WP_PID" 2>/dev/null || break; sleep 0.2; done
wait "$WP_PID"
rc=$?
check "POST /quitquitquit: draining, then the waypoint exits 0 ($quit; exit $rc)" \
	'[ "$quit" = "200 ready | 200 draining" ] && [ "$rc" -eq 0 ]'

tap_done
