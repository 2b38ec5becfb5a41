#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The L4 mesh end to end: two hosts, four workloads in network namespaces, one amesh ztunnel per
# host, identities from amesh ca, enrollment through amesh cni, real clients and servers.
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
# 1,000 concurrent connections need more than the default 1,024 descriptors in each process.
ulimit -n 16384 2>/dev/null || true
plan 30

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY

# Servers: every workload runs the lab peer on 8080 (it names both ends of each connection).
for ns in a1 a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done

zt_start() { # zt_start a|b
	# With the capabilities of amesh-ztunnel.service and nothing more.
	spawn "zt_$1" $(lab_in h$1) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))"
}
# The ztunnel prints no "listening" line; wait for its readiness endpoint instead.
zt_wait_ready() { # zt_wait_ready a|b
	i=0
	while [ $i -lt 50 ]; do
		if lab_exec h$1 $PY -c 'import urllib.request,sys
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:15021/healthz/ready",timeout=1).status==200 else 1)' 2>/dev/null; then
			return 0
		fi
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}
for h in a b; do
	zt_start $h >/dev/null 2>&1
	zt_wait_ready $h
done
check "both ztunnels are ready" 'zt_wait_ready a && zt_wait_ready b'
CAPS=$(lab_caps "$PID_zt_a")
check "the ztunnel runs with only its unit's capabilities ($CAPS)" \
	'[ "$CAPS" = "cap_net_admin,cap_sys_admin nnp" ]'

enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll a a2 echo-a && run enroll b b1 echo-b
check "three workloads enrolled with amesh cni add" '[ "$RC" -eq 0 ]'

# The fourth the way a container runtime does it: amesh-cni as a chained plugin after bridge.
ln -s "$AMESH" "$TMP/amesh-cni"
cni_plugin() { # cni_plugin ADD|DEL: other-b through the plugin, with a prevResult from "bridge"
	printf '{"cniVersion":"1.0.0","name":"lab","type":"amesh-cni","conf":"%s","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"%s/24","interface":0}]}}' \
		"$LAB_CONF_B" "$LAB_B2" >"$TMP/cni.json"
	run lab_exec hb env CNI_COMMAND="$1" CNI_CONTAINERID=other-b CNI_NETNS="$(lab_ns_path b2)" \
		CNI_IFNAME=eth0 CNI_PATH="$TMP" sh -c "\"$TMP/amesh-cni\" <\"$TMP/cni.json\""
}
cni_plugin ADD
check "other-b enrolled through the CNI plugin (prevResult printed back)" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "\"ips\""'

conn() { # conn FROM ADDR PORT [MSG]: connect from workload FROM, print the server's answer line
	run lab_exec "$1" $PY "$LAB_PEER" connect --addr "$2" --port "$3" --msg "${4:-hello}" --timeout 5
}

conn a1 "$LAB_B1" 8080
check "cross-host TCP by workload address" 'echo "$OUT" | grep -q "local $LAB_B1 8080 msg hello"'
check "the server sees the client's real source address" 'echo "$OUT" | grep -q "^peer $LAB_A1 "'

conn a1 "$LAB_A2" 8080
check "same-host TCP between workloads" 'echo "$OUT" | grep -q "^peer $LAB_A1 .* local $LAB_A2 8080"'

conn a1 "$LAB_B1_6" 8080
check "IPv6 workload to workload" 'echo "$OUT" | grep -q "^peer $LAB_A1_6 .* local $LAB_B1_6 8080"'

seen_a=0
seen_b=0
i=0
while [ $i -lt 20 ]; do
	conn a1 "$LAB_VIP" 80
	echo "$OUT" | grep -q "local $LAB_A2 8080" && seen_a=$((seen_a + 1))
	echo "$OUT" | grep -q "local $LAB_B1 8080" && seen_b=$((seen_b + 1))
	i=$((i + 1))
done
check "service VIP 10.96.0.10:80 -> 8080 on both endpoints (echo-a $seen_a, echo-b $seen_b of 20)" \
	'[ $seen_a -ge 5 ] && [ $seen_b -ge 5 ] && [ $((seen_a + seen_b)) -eq 20 ]'

# The wire between the hosts carries only TLS to 15008: a marker sent in the clear by the app
# never shows up there, while the capture does see the HBONE packets (positive control).
MARK="amesh-marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
lab_exec ha tcpdump -i wire -n -U --immediate-mode -w "$TMP/wire.pcap" tcp >"$TMP/tcpdump.out" 2>&1 &
i=0
while ! grep -q "listening on" "$TMP/tcpdump.out" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
conn a1 "$LAB_B1" 8080 "$MARK"
sleep 1
pkill -INT -f "tcpdump -i wire -n -U --immediate-mode -w $TMP/wire.pcap" 2>/dev/null
sleep 0.5
hbone_pkts=$(tcpdump -n -r "$TMP/wire.pcap" "tcp port 15008" 2>/dev/null | wc -l)
other_pkts=$(tcpdump -n -r "$TMP/wire.pcap" "not tcp port 15008" 2>/dev/null | wc -l)
check "the app's exchange crossed the wire (answer: $(echo "$OUT" | cut -c1-40))" 'echo "$OUT" | grep -q "msg $MARK"'
check "capture on the wire: $hbone_pkts packets to/from 15008, $other_pkts others, no marker" \
	'[ "$hbone_pkts" -gt 0 ] && [ "$other_pkts" -eq 0 ] && ! grep -qa "$MARK" "$TMP/wire.pcap"'

# Policy: echo-b admits only client-a's principal; other-b denies namespace default.
cat >"$LAB_REGISTRY/50-policy.conf" <<'EOF'
[policy "echo-b-from-client"]
namespace = default
selector = version=b
action = allow
from.principals = cluster.local/ns/default/sa/client

[policy "other-deny-default"]
namespace = other
action = deny
from.namespaces = default
EOF
sleep 1.5 # the ztunnels watch the registry directory
conn a1 "$LAB_B1" 8080
check "allow by principal: client-a reaches echo-b" 'echo "$OUT" | grep -q "local $LAB_B1 8080"'
conn a2 "$LAB_B1" 8080
check "allow by principal: echo-a (sa echo) is refused by echo-b" '[ "$RC" -ne 0 ]'
conn a1 "$LAB_B2" 8080
check "deny by namespace: client-a (namespace default) is refused by other-b" \
	'[ "$RC" -ne 0 ] && echo "$OUT" | grep -q "^error"'
run lab_exec hb $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15020/metrics",timeout=2).read().decode())'
check "metrics: a denied connection is counted with response_flags DENY" \
	'echo "$OUT" | grep "^istio_tcp_connections_opened_total{" | grep "reporter=\"destination\"" | grep -q "response_flags=\"DENY\""'
check "metrics: mutual_tls connections from client-a are counted" \
	'echo "$OUT" | grep "^istio_tcp_connections_opened_total{" | grep "source_workload=\"client-a\"" | grep -q "connection_security_policy=\"mutual_tls\""'

# A non-mesh client (host A itself, not a workload) connecting straight to echo-a.
run lab_exec ha $PY "$LAB_PEER" connect --addr "$LAB_A2" --port 8080 --timeout 3
check "strict mode refuses a plaintext client" '[ "$RC" -ne 0 ]'
sed -i '/^\[workload "echo-a"\]/a mtls_mode = permissive' "$LAB_REGISTRY/00-lab.conf"
sleep 1.5
run lab_exec ha $PY "$LAB_PEER" connect --addr "$LAB_A2" --port 8080 --timeout 3
check "permissive mode admits it (policy without a principal)" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "local $LAB_A2 8080"'

# A broken registry edit is refused whole; traffic goes on with the previous registry.
printf '[workload "broken"]\nnamespace = default\n' >"$LAB_REGISTRY/60-broken.conf"
sleep 1.5
conn a1 "$LAB_B1" 8080
check "a broken registry file on reload is refused, traffic goes on" \
	'echo "$OUT" | grep -q "local $LAB_B1 8080" && grep -q "reload refused" "$TMP/zt_b.err"'
rm -f "$LAB_REGISTRY/60-broken.conf"

# Restart: ztunnel B is killed; a new one re-opens the recorded namespaces within seconds.
eval "kill -KILL \$PID_zt_b"
sleep 0.2
t0=$(date +%s%N)
zt_start b >/dev/null 2>&1
ok_after=""
while [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 5000 ]; do
	conn a1 "$LAB_B1" 8080
	if echo "$OUT" | grep -q "local $LAB_B1 8080"; then
		ok_after=$(( ($(date +%s%N) - t0) / 1000000 ))
		break
	fi
	sleep 0.1
done
# (3 s: each probe is a Python client's start-up, a few hundred ms on a loaded machine.)
check "ztunnel restarted: traffic flows again within 3 s (${ok_after:-never} ms)" \
	'[ -n "$ok_after" ] && [ "$ok_after" -le 3000 ]'

# Admin: the config dump shows the enrolled workloads and identities, never key material.
run lab_exec hb $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2).read().decode())'
check "admin /config_dump: enrolled workloads, identities with expiry, no keys" \
	'echo "$OUT" | grep -q "\"netns\": \"$(lab_ns_path b1)\"" && echo "$OUT" | grep -q "\"not_after\"" &&
	 ! echo "$OUT" | grep -q "PRIVATE KEY"'
check "access log: one line per connection with source and destination workloads" \
	'grep -q "src.workload=client-a" "$TMP/zt_a.err" && grep -q "dst.workload=echo-b" "$TMP/zt_a.err"'

run lab_exec a1 $PY "$SRCDIR/tests/e2e/flows.py" many --addr "$LAB_B1" --port 8080 --count 1000 --timeout 60
check "1,000 concurrent connections across hosts" '[ "$OUT" = "ok 1000 of 1000" ]'

start sink $(lab_in b1) $PY "$SRCDIR/tests/hbone/peers.py" sink --bind 0.0.0.0 || true
SINK=$PORT
run lab_exec a1 $PY "$SRCDIR/tests/hbone/peers.py" send --port "$SINK" --bytes 1073741824 --host "$LAB_B1"
sent=$(echo "$OUT" | sed -n 's/^sent \([0-9]*\) \([0-9a-f]*\)$/\1 \2/p')
got=$(echo "$OUT" | sed -n 's/^got \([0-9]*\) \([0-9a-f]*\)$/\1 \2/p')
check "1 GiB across hosts: same length and sha256 at the far end" '[ -n "$sent" ] && [ "$sent" = "$got" ]'

# Rotation: re-issue echo-b's certificate while a connection to it is open.
lab_exec a1 $PY "$SRCDIR/tests/e2e/flows.py" hold --addr "$LAB_B1" --port 8080 --seconds 6 >"$TMP/hold.out" 2>&1 &
hold=$!
sleep 1
serial_new() { openssl x509 -noout -serial -in "$LAB_DIR/node-b/certs/default/echo.crt" | cut -d= -f2; }
serial_seen() { # the serial echo-b's HBONE listener presents to a new TLS client now
	lab_exec hb openssl s_client -connect "$LAB_B1:15008" -alpn h2 -CAfile "$LAB_DIR/ca/ca.crt" \
		-cert "$LAB_DIR/node-b/certs/other/other.crt" -key "$LAB_DIR/node-b/certs/other/other.key" \
		</dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
old_serial=$(serial_seen)
"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace default --service-account echo \
	--out "$LAB_DIR/node-b/certs" >/dev/null
sleep 2.5
new_serial=$(serial_seen)
wait $hold
check "certificate rotated while a stream runs: the stream survives" 'grep -q "^held [0-9]* exchanges" "$TMP/hold.out"'
check "new connections get the new certificate (old $old_serial, new $new_serial)" \
	'[ -n "$new_serial" ] && [ "$new_serial" = "$(serial_new)" ] && [ "$new_serial" != "$old_serial" ]'

# Removal: CNI DEL and amesh cni del leave the namespaces' rulesets empty.
cni_plugin DEL
run lab_exec b2 nft list ruleset
check "CNI DEL: nft list ruleset in other-b is empty" '[ -z "$OUT" ]'
run lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni del --workload client-a
run lab_exec a1 nft list ruleset
check "amesh cni del: nft list ruleset in client-a is empty" '[ -z "$OUT" ]'

# systemd readiness: a ztunnel with NOTIFY_SOCKET says READY=1 once it serves.
$PY -c 'import socket,sys
s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(10)
print(s.recv(4096).decode().replace("\n"," "), flush=True)' "$TMP/notify.sock" >"$TMP/notify.out" 2>&1 &
notify=$!
sleep 0.3
eval "kill -TERM \$PID_zt_b"
t0=$(date +%s)
while eval "kill -0 \$PID_zt_b" 2>/dev/null && [ $(($(date +%s) - t0)) -lt 10 ]; do sleep 0.1; done
drain_s=$(($(date +%s) - t0))
# Refused tunnels (the policy tests above) must not leave streams behind: with none open the
# drain ends at once instead of waiting out drain_timeout (5 s).
check "SIGTERM: ztunnel B drains and exits in ${drain_s} s, without waiting out the drain timeout" \
	'! eval "kill -0 \$PID_zt_b" 2>/dev/null && [ "$drain_s" -le 3 ] && ! grep -q "drain timeout" "$TMP/zt_b.err"'
NOTIFY_SOCKET="$TMP/notify.sock" spawn zt_b2 $(lab_in hb) env NOTIFY_SOCKET="$TMP/notify.sock" "$AMESH" ztunnel -c "$LAB_CONF_B"
wait $notify
check "sd_notify: READY=1 sent once serving" 'grep -q "READY=1" "$TMP/notify.out"'

tap_done
