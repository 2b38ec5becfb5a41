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
plan 18

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY

# Servers: every workload runs the lab peer on 8080 (it names both ends of each connection).
for ns in a1 a2 b1 b2; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done

zt_start() { # zt_start a|b
	spawn "zt_$1" $(lab_in h$1) "$AMESH" ztunnel -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))"
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

enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll a a2 echo-a && run enroll b b1 echo-b && run enroll b b2 other-b
check "four workloads enrolled with amesh cni add" '[ "$RC" -eq 0 ]'

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

# Restart: ztunnel B is killed; a new one re-opens the recorded namespaces within 2 s.
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
check "ztunnel restarted: traffic flows again within 2 s (${ok_after:-never} ms)" \
	'[ -n "$ok_after" ] && [ "$ok_after" -le 2000 ]'

tap_done
