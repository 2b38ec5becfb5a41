#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Egress end to end (issue 15): an external service in the registry, reached by name through the
# DNS proxy and its auto-allocated VIP, originated by the caller's ztunnel from its host and
# metered; [mesh] outbound = registry_only refusing what the registry does not know (counted as
# Istio's BlackHoleCluster); from.namespaces keeping other callers out. The "outside" is two extra
# addresses on host B's wire that no registry entry owns.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in nft dig; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install nftables bind9-dnsutils)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 15

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
EXT=192.168.10.50   # the external service's address
UNKNOWN=192.168.10.51 # somewhere the registry does not know
lab_exec hb ip addr add "$EXT/24" dev wire && lab_exec hb ip addr add "$UNKNOWN/24" dev wire

# Host A refuses unknown destinations; host B keeps the default (allow_any). Both run the DNS proxy.
sed -i 's/^\[mesh\]$/[mesh]\noutbound = registry_only/' "$LAB_CONF_A"
for c in "$LAB_CONF_A" "$LAB_CONF_B"; do
	printf 'dns_capture = on\n[dns]\nupstream = 127.0.0.1:9\ntimeout = 500ms\nttl = 2s\n' >>"$c"
done
cat >"$LAB_REGISTRY/60-egress.conf" <<EOF
[service "ext-api"]
namespace = default
external = yes
hostname = api.example.test
ports = 9443
addresses = $EXT
from.namespaces = default

[service "ext-byname"]
namespace = default
external = yes
hostname = ext.lab.test
ports = 9444
EOF
# Host A's resolver knows ext.lab.test from its hosts file (ztunnel A gets a private one).
printf '%s ext.lab.test\n' "$EXT" >"$TMP/hosts"

start out_ext $(lab_in hb) $PY "$LAB_PEER" serve --addr "$EXT" --port 9443 || exit 1
start out_unknown $(lab_in hb) $PY "$LAB_PEER" serve --addr "$UNKNOWN" --port 9443 || exit 1
start out_ext2 $(lab_in hb) $PY "$LAB_PEER" serve --addr "$EXT" --port 9444 || exit 1
start out_unknown2 $(lab_in hb) $PY "$LAB_PEER" serve --addr "$UNKNOWN" --port 9444 || exit 1
spawn zt_a $(lab_in ha) unshare -m sh -c "mount --bind '$TMP/hosts' /etc/hosts &&
	exec $(lab_unit_privs amesh-ztunnel.service) '$AMESH' ztunnel -c '$LAB_CONF_A'"
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
check "both ztunnels are ready" 'lab_wait_ready ha && lab_wait_ready hb'
enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3"
}
run enroll a a1 client-a && run enroll b b2 other-b
check "client-a (default) and other-b (other) enrolled" '[ "$RC" -eq 0 ]'

conn() { # conn FROM ADDR PORT MSG
	run lab_exec "$1" $PY "$LAB_PEER" connect --addr "$2" --port "$3" --msg "$4" --timeout 5
}
run lab_exec a1 dig @10.1.1.1 +short +time=2 +tries=1 api.example.test A
VIP=$OUT
check "the external hostname resolves to an auto-allocated VIP ($VIP)" \
	'case $VIP in 240.240.*) true ;; *) false ;; esac'
conn a1 api.example.test 9443 byname
check "client-a reaches the external service by name" 'echo "$OUT" | grep -q "local $EXT 9443 msg byname"'
check "the connection left from host A, not from the workload" 'echo "$OUT" | grep -q "^peer 192.168.10.1 "'
conn a1 "$EXT" 9443 direct
check "and by its fixed address" 'echo "$OUT" | grep -q "local $EXT 9443 msg direct"'
conn a1 "$UNKNOWN" 9443 unknown
check "registry_only: an unknown destination is refused" '! echo "$OUT" | grep -q "msg unknown"'
conn b2 api.example.test 9443 other
check "from.namespaces: other-b (namespace other) is refused" '! echo "$OUT" | grep -q "msg other"'
conn b2 "$UNKNOWN" 9443 allowany
check "host B (allow_any) passes an unknown destination through" 'echo "$OUT" | grep -q "msg allowany"'

# Without addresses: the hostname is resolved by host A when connecting, kept for [dns] ttl (2s).
conn a1 ext.lab.test 9444 resolved
check "an external service without addresses: its hostname resolved by the host" \
	'echo "$OUT" | grep -q "local $EXT 9444 msg resolved"'
printf '%s ext.lab.test\n' "$UNKNOWN" >"$TMP/hosts"
conn a1 ext.lab.test 9444 cached
check "within the TTL the resolved address is reused" 'echo "$OUT" | grep -q "local $EXT 9444 msg cached"'
sleep 2.2
conn a1 ext.lab.test 9444 again
check "after the TTL it is resolved again" 'echo "$OUT" | grep -q "local $UNKNOWN 9444 msg again"'

metrics() { # metrics HOST
	run lab_exec h$1 $PY -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:15020/metrics", timeout=2).read().decode())'
}
metrics a
check "host A meters the external service (destination_service api.example.test)" \
	'echo "$OUT" | grep "^istio_tcp_connections_closed_total{" | grep "source_workload=\"client-a\"" | grep "destination_service=\"api.example.test\"" | grep -q "response_flags=\"-\""'
check "and the refusal as BlackHoleCluster with flag UH" \
	'echo "$OUT" | grep "^istio_tcp_connections_opened_total{" | grep "destination_service=\"BlackHoleCluster\"" | grep -q "response_flags=\"UH\""'
metrics b
check "host B counts the refused caller with DENY" \
	'echo "$OUT" | grep "^istio_tcp_connections_opened_total{" | grep "destination_service=\"api.example.test\"" | grep -q "response_flags=\"DENY\""'
tap_done
