#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The DNS proxy end to end (issue 15): the two-host lab with dns_capture on, a real upstream
# resolver (dnsmasq, on host A's bridge address, logging every query it sees), and real clients
# in enrolled workloads (dig, glibc's getent, a TCP connect by name). Registry names are answered
# by the ztunnel without reaching the upstream, other names are forwarded from the workload's own
# address, truncated answers are fetched again over TCP, malformed queries do not stop it, and a
# dead upstream gives SERVFAIL within [dns] timeout. Auto-allocated VIPs: the same on both hosts,
# answered by DNS and routed.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft dnsmasq dig getent unshare; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install nftables dnsmasq bind9-dnsutils)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 36

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
UPSTREAM=10.1.1.1 # host A's bridge address: every workload reaches it (host B routes there)

# DNS capture on both hosts, forwarding to the lab's resolver; [ztunnel] is the files' last section.
for c in "$LAB_CONF_A" "$LAB_CONF_B"; do
	cat >>"$c" <<EOF
dns_capture = on
[dns]
upstream = $UPSTREAM
timeout = 2s
EOF
done
# A service without vip (auto-allocated), beside the lab's echo (10.96.0.10) and other.
cat >"$LAB_REGISTRY/20-auto.conf" <<'EOF'
[service "web"]
namespace = default
ports = 80:8080
selector = app=echo
EOF

# The upstream: answers outside.test itself, and big.test with more than 512 bytes, which it sends
# truncated over UDP (edns-packet-max) and whole over TCP. Queries it sees go to its log.
BIG=$(printf '%0200d' 0)
dnsmasq_start() {
	: >"$TMP/dnsmasq.log"
	spawn dnsmasq lab_exec ha dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
		--listen-address=$UPSTREAM --bind-interfaces --log-queries \
		--log-facility="$TMP/dnsmasq.log" --pid-file="$TMP/dnsmasq.pid" --user=root --group=root --edns-packet-max=512 \
		--host-record=outside.test,192.0.2.7,2001:db8::7 \
		--txt-record=big.test,"a$BIG","b$BIG","c$BIG"
	i=0
	while ! grep -q "started" "$TMP/dnsmasq.log" 2>/dev/null && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
}
dnsmasq_start

for h in a b; do
	spawn "zt_$h" $(lab_in h$h) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel \
		-c "$(eval echo \$LAB_CONF_$(echo "$h" | tr ab AB))"
done
check "both ztunnels are ready" 'lab_wait_ready ha && lab_wait_ready hb'
enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll a a2 echo-a && run enroll b b1 echo-b
check "workloads enrolled with dns_capture = on (it is no longer refused)" '[ "$RC" -eq 0 ]'
for ns in a2 b1; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done

# dig from a workload: the query goes to the upstream's address on port 53 and is captured.
q() { # q NS NAME [TYPE] [dig options...]: dig's +short answer in $OUT
	_ns=$1 _name=$2 _type=${3:-A}
	shift 3 2>/dev/null || shift $#
	run lab_exec "$_ns" dig @$UPSTREAM +time=5 +tries=1 "$@" "$_name" "$_type"
}
short() { q "$@" +short; }
status() { # status NS NAME [TYPE] [options]: the answer's status word in $STATUS
	q "$@"
	STATUS=$(echo "$OUT" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')
}

short a1 echo.default.svc.cluster.local A
check "dig A of a service FQDN: its VIP" '[ "$OUT" = 10.96.0.10 ]'
short a1 echo.default.svc.cluster.local AAAA
check "dig AAAA of a service FQDN: its IPv6 VIP" '[ "$OUT" = fd00:96::10 ]'
short a1 echo A && A1=$OUT
short a1 echo.default A && A2=$OUT
short a1 echo.default.svc A && A3=$OUT
check "short names of the workload's namespace: echo, echo.default, echo.default.svc" \
	'[ "$A1" = 10.96.0.10 ] && [ "$A2" = 10.96.0.10 ] && [ "$A3" = 10.96.0.10 ]'
short a1 other.other A
check "another namespace's service by NAME.NS" '[ "$OUT" = 10.96.0.11 ]'
status a1 echo.default.svc.cluster.local A +tcp
check "over TCP too ($STATUS)" '[ "$STATUS" = NOERROR ] && echo "$OUT" | grep -q "10.96.0.10"'

# glibc, with a search list as a cluster's resolv.conf has (in a private mount namespace).
printf 'nameserver %s\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n' \
	"$UPSTREAM" >"$TMP/resolv.conf"
gent() { # gent NS DB NAME
	run lab_exec "$1" unshare -m sh -c "mount --bind '$TMP/resolv.conf' /etc/resolv.conf && getent $2 $3"
}
gent a1 ahostsv4 echo
check "getent ahostsv4 echo (search list)" 'echo "$OUT" | grep -q "^10.96.0.10 "'
gent a1 hosts echo.default.svc.cluster.local
check "getent hosts of the FQDN" 'echo "$OUT" | grep -Eq "^(10.96.0.10|fd00:96::10) "'
run lab_exec a1 $PY "$LAB_PEER" connect --addr echo.default.svc.cluster.local --port 80 --msg byname --timeout 5
check "connect by name reaches the service through the mesh" 'echo "$OUT" | grep -Eq "local (10.1.1.3|10.1.2.2) 8080 msg byname"'

status a1 nosuch.default.svc.cluster.local A
check "unknown name under cluster.local: NXDOMAIN ($STATUS)" '[ "$STATUS" = NXDOMAIN ]'
SOA=$(echo "$OUT" | awk '/AUTHORITY SECTION/ { getline; print $1, $4, $5, $6 }')
check "... with the domain's SOA for negative caching ($SOA)" \
	'[ "$SOA" = "cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local." ]'
short a1 outside.test A
check "an outside name is forwarded and answered" '[ "$OUT" = 192.0.2.7 ]'
sleep 0.3
check "the upstream saw the outside name, from the workload's own address" \
	'grep -q "query\[A\] outside.test from 10.1.1.2" "$TMP/dnsmasq.log"'
check "the upstream never saw a registry or mesh-domain name" \
	'! grep -Eq "cluster.local|query\[[A-Z]*\] echo" "$TMP/dnsmasq.log"'

# Truncation: the upstream sends big.test truncated over UDP; the proxy asks again over TCP and,
# as the client takes 4096 bytes, sends it whole over UDP (dig +ignore would not retry itself).
q a1 big.test TXT +bufsize=4096 +ignore
check "a truncated upstream answer is fetched over TCP and sent whole" \
	'echo "$OUT" | grep -q "ANSWER: 1," && ! echo "$OUT" | grep -q "flags:.* tc" && echo "$OUT" | grep -q "c0000"'
q a1 big.test TXT +noedns
check "without EDNS0 the client gets TC and the answer over TCP (dig retries)" \
	'echo "$OUT" | grep -q "ANSWER: 1," && echo "$OUT" | grep -q "c0000"'
check "the upstream was asked over TCP (its forked TCP handler logged the query)" \
	'[ "$(grep "query\[TXT\] big.test" "$TMP/dnsmasq.log" | sed "s/.*dnsmasq\[\([0-9]*\)\].*/\1/" | sort -u | wc -l)" -ge 2 ]'

# Several queries on one TCP connection, a forwarded one between registry ones: answered in order.
run lab_exec a1 $PY - "$UPSTREAM" <<'EOF'
import socket, struct, sys
def q(i, name):
    m = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        m += bytes([len(l)]) + l.encode()
    return m + b"\0\0\1\0\1"
s = socket.create_connection((sys.argv[1], 53), timeout=5)
s.sendall(b"".join(struct.pack(">H", len(m)) + m for m in
                   (q(1, "echo"), q(2, "outside.test"), q(3, "other.other"))))
f = s.makefile("rb")
for _ in range(3):
    n = struct.unpack(">H", f.read(2))[0]
    r = f.read(n)
    print("id=%d rcode=%d an=%d %s" % (struct.unpack(">H", r[:2])[0], r[3] & 15,
          struct.unpack(">H", r[6:8])[0], socket.inet_ntoa(r[-4:])))
EOF
check "pipelined TCP queries are answered in order" \
	'[ "$(echo "$OUT" | tr "\n" " ")" = "id=1 rcode=0 an=1 10.96.0.10 id=2 rcode=0 an=1 192.0.2.7 id=3 rcode=0 an=1 10.96.0.11 " ]'

# A registry change is answered at once after the reload.
cat >"$LAB_REGISTRY/30-fresh.conf" <<'EOF'
[service "fresh"]
namespace = default
vip = 10.96.0.30
ports = 80:8080
selector = app=echo
EOF
lab_exec ha kill -HUP "$PID_zt_a" 2>/dev/null || kill -HUP "$PID_zt_a"
i=0
while [ $i -lt 30 ]; do
	short a1 fresh A
	[ "$OUT" = 10.96.0.30 ] && break
	sleep 0.1
	i=$((i + 1))
done
check "a service added to the registry resolves after the reload" '[ "$OUT" = 10.96.0.30 ]'

# Auto-allocated VIP: the same on both hosts, in 240.240.0.0/16 and 2001:2::/48, and routed.
short a1 web.default.svc.cluster.local A && WA=$OUT
short b1 web.default.svc.cluster.local A && WB=$OUT
short a1 web.default.svc.cluster.local AAAA && WA6=$OUT
check "auto-allocated VIP of web: $WA on host A, $WB on host B, $WA6" \
	'[ -n "$WA" ] && [ "$WA" = "$WB" ] && case $WA in 240.240.*) true ;; *) false ;; esac &&
	 case $WA6 in 2001:2:*) true ;; *) false ;; esac'
dump_web() { # dump_web HOST: web's vips and vip_auto from the admin /config_dump
	lab_exec h$1 $PY -c 'import json, urllib.request
d = json.load(urllib.request.urlopen("http://127.0.0.1:15000/config_dump", timeout=2))
s = [s for s in d["registry"]["service_list"] if s["name"] == "web"][0]
print(" ".join(s["vips"]), s["vip_auto"])'
}
DA=$(dump_web a)
DB=$(dump_web b)
check "config_dump shows the auto VIPs, the same on both hosts ($DA)" \
	'[ "$DA" = "$DB" ] && [ "$DA" = "$WA $WA6 True" ]'
run lab_exec a1 $PY "$LAB_PEER" connect --addr "$WA" --port 80 --msg auto --timeout 5
check "a connection to the auto VIP reaches an endpoint" 'echo "$OUT" | grep -Eq "local (10.1.1.3|10.1.2.2) 8080 msg auto"'
run lab_exec a1 $PY "$LAB_PEER" connect --addr web --port 80 --msg autoname --timeout 5
check "and by its short name" 'echo "$OUT" | grep -q "msg autoname"'

# Malformed queries, sent raw to the captured port 53: FORMERR or nothing, and the proxy goes on.
run lab_exec a1 $PY - "$UPSTREAM" <<'EOF'
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def ask(m):
    s.sendto(m, (sys.argv[1], 53))
    try:
        r = s.recv(4096)
    except socket.timeout:
        return "none"
    return "rcode=%d id=%04x" % (r[3] & 15, struct.unpack(">H", r[:2])[0])
hdr = lambda qd, an=0: struct.pack(">HHHHHH", 0xbeef, 0x0100, qd, an, 0, 0)
print("short", ask(b"\xbe\xef\x01"))
print("loop", ask(hdr(1) + b"\xc0\x0c\x00\x01\x00\x01"))
print("counts", ask(hdr(5) + b"\x04echo\x00\x00\x01\x00\x01"))
print("cut", ask(hdr(1) + b"\x04ech"))
print("oversize", ask(hdr(1) + b"\x3f" + b"a" * 63 + b"\x00\x00\x01\x00\x01" + b"\x00" * 3000))
EOF
check "malformed: short header dropped, compression loop, bad counts and a cut name FORMERR" \
	'echo "$OUT" | grep -q "^short none" && echo "$OUT" | grep -q "^loop rcode=1 id=beef" &&
	 echo "$OUT" | grep -q "^counts rcode=1" && echo "$OUT" | grep -q "^cut rcode=1" &&
	 echo "$OUT" | grep -Eq "^oversize (none|rcode=1)"'
short a1 echo A
check "the proxy keeps answering after them" '[ "$OUT" = 10.96.0.10 ]'

# Capture after load: thousands of forwarded queries leave their conntrack entries (30 s and
# more), then 300 queries from fresh sockets, as a stub resolver makes them, must all still be
# redirected to the proxy. With an upstream socket per forwarded query, a fresh socket that
# drew the port of one of them matched its un-NATed entry and reached the upstream directly.
run lab_exec a1 $PY - "$UPSTREAM" <<'EOF'
import socket, struct, sys
up = (sys.argv[1], 53)
def q(i, name):
    m = struct.pack(">HHHHHH", i, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        m += bytes([len(l)]) + l.encode()
    return m + b"\0\0\1\0\1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
got = 0
for burst in range(100):          # 6000 forwarded queries, 60 in flight at a time
    for i in range(60):
        s.sendto(q(i, "outside.test"), up)
    try:
        for i in range(60):
            s.recv(4096)
            got += 1
    except socket.timeout:
        pass
ok = other = 0
for i in range(300):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.sendto(q(i, "echo"), up)
    try:
        r = c.recv(4096)
        if r[3] & 15 == 0 and r[-4:] == socket.inet_aton("10.96.0.10"):
            ok += 1
        else:
            other += 1
    except socket.timeout:
        other += 1
    c.close()
print("forwarded=%d ok=%d other=%d" % (got, ok, other))
EOF
check "after 6000 forwarded queries, 300 fresh-socket queries all meet the proxy ($OUT)" \
	'echo "$OUT" | grep -q " ok=300 other=0" && ! grep -q "query\[A\] echo" "$TMP/dnsmasq.log"'

# The upstream goes away: SERVFAIL within [dns] timeout (2s), registry names still answered.
DPID=$(cat "$TMP/dnsmasq.pid")
kill "$DPID" 2>/dev/null
i=0
while kill -0 "$DPID" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
T0=$(date +%s%N)
status a1 outside.test A +time=10
T1=$(date +%s%N)
MS=$(((T1 - T0) / 1000000))
check "upstream down: SERVFAIL ($STATUS) in ${MS} ms (timeout 2s)" '[ "$STATUS" = SERVFAIL ] && [ "$MS" -lt 4000 ]'
short a1 echo A
check "registry names are answered with the upstream down" '[ "$OUT" = 10.96.0.10 ]'

scrape() {
	run lab_exec ha $PY -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:15020/metrics", timeout=2).read().decode())'
	M=$OUT
}
metric() { echo "$M" | sed -n "s/^$1 \\([0-9]*\\)$/\\1/p"; }
# A query still waiting for the dead upstream (the oversize one above) ends within the timeout.
i=0
scrape
while [ "$(metric amesh_dns_inflight)" != 0 ] && [ $i -lt 40 ]; do
	sleep 0.1
	scrape
	i=$((i + 1))
done
check "metrics: queries by type, results registry/nxdomain/forwarded/servfail/formerr" \
	'[ "$(metric "amesh_dns_queries_total{type=\"A\"}")" -gt 0 ] &&
	 [ "$(metric "amesh_dns_queries_total{type=\"AAAA\"}")" -gt 0 ] &&
	 [ "$(metric "amesh_dns_responses_total{result=\"registry\"}")" -gt 5 ] &&
	 [ "$(metric "amesh_dns_responses_total{result=\"nxdomain\"}")" -ge 1 ] &&
	 [ "$(metric "amesh_dns_responses_total{result=\"forwarded\"}")" -ge 3 ] &&
	 [ "$(metric "amesh_dns_responses_total{result=\"servfail\"}")" -ge 1 ] &&
	 [ "$(metric "amesh_dns_responses_total{result=\"formerr\"}")" -ge 3 ]'
check "metrics: forward latency buckets and upstream failures" \
	'[ "$(metric "amesh_dns_forward_duration_milliseconds_bucket{le=\"+Inf\"}")" -ge 3 ] &&
	 [ "$(metric amesh_dns_forward_duration_milliseconds_count)" -ge 3 ] &&
	 [ "$(metric amesh_dns_upstream_failures_total)" -ge 1 ] &&
	 [ "$(metric amesh_dns_inflight)" -eq 0 ]'

# Unenrolled: the proxy's sockets go with the workload (nothing left listening on 15053).
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni del --workload client-a >/dev/null 2>&1
sleep 0.3
run lab_exec a1 ss -Hlntu "( sport = :15053 or sport = :15001 )"
check "after cni del nothing listens on 15053 (nor 15001) in the workload" '[ -z "$OUT" ]'
run lab_exec a1 ss -Hanu
check "nor is any UDP socket of the proxy left there (its upstream sockets closed)" '[ -z "$OUT" ]'

# The sidecar serves DNS in its own namespace the same way; its upstream queries carry the mark,
# so they leave instead of coming back to it.
printf '[sidecar]\ndns_capture = on\n' >>"$LAB_CONF_A"
dnsmasq_start
run lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --mode sidecar --netns "$(lab_ns_path a1)" \
	--workload client-a
spawn sc_a1 $(lab_in a1) $(lab_unit_privs amesh-sidecar@.service) "$AMESH" -c "$LAB_CONF_A" \
	sidecar --workload client-a
check "client-a's sidecar is ready" 'lab_wait_ready a1'
short a1 echo.default.svc.cluster.local A
check "the sidecar answers a registry name" '[ "$OUT" = 10.96.0.10 ]'
short a1 outside.test A
check "the sidecar forwards an outside name (its upstream socket is marked)" '[ "$OUT" = 192.0.2.7 ]'
tap_done
