#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The registry on etcd end to end (issue 16): a three-member etcd cluster with client TLS in host
# A's namespace, the lab's registry pushed with amesh registry push, two ztunnels watching it.
# Policy changes reach both hosts; leader loss, a whole-cluster outage (with a ztunnel restarted
# from its cache), compaction past a watcher, a bad revision forced in with etcdctl, two pushes
# racing and a dead endpoint in the list are all survived.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in etcd etcdctl openssl nft ss; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install etcd-server etcd-client openssl nftables iproute2)"
		exit 0
	fi
done
trap 'lab_down; cleanup' EXIT
plan 27

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
# The waypoint on host A, and service "l7" (VIP 10.96.0.20, echo-b's port 8081) through it, with
# a route that sets a request header: the waypoint reads its routes from etcd as well.
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
cat >"$LAB_REGISTRY/40-l7.conf" <<'EOF2'
[service "l7"]
namespace = default
vip = 10.96.0.20
ports = 80:8081
selector = version=b
waypoint = wp

[route "l7"]
namespace = default
service = l7
backends = echo-b
request_headers.set = x-rev: one
EOF2
PY=$LAB_PY
E=$TMP/etcd
mkdir -p "$E"

# etcd's client TLS: a CA, a server certificate for the address the members listen on, and a
# client certificate for amesh and etcdctl (client-cert-auth is on).
(
	cd "$E" || exit 1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
		-out ca.crt -subj /CN=lab-etcd-ca -days 2 || exit 1
	for who in server client; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key \
			-out $who.csr -subj /CN=lab-etcd-$who || exit 1
	done
	printf 'subjectAltName=IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
		"$LAB_NODE_A" >server.ext
	printf 'extendedKeyUsage=clientAuth\n' >client.ext
	for who in server client; do
		openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
			-extfile $who.ext -out $who.crt || exit 1
	done
) >"$TMP/openssl.out" 2>&1 || { echo "Bail out! openssl: $(tail -3 "$TMP/openssl.out")"; exit 1; }

# Three members in host A's namespace: clients on the wire address (host B's ztunnel reaches
# them across the wire), peers on loopback. Fast elections keep the leader test short.
CLUSTER=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
etcd_start() { # etcd_start N
	spawn "etcd$1" $(lab_in ha) etcd --name "e$1" --data-dir "$E/e$1" \
		--listen-client-urls "https://$LAB_NODE_A:2379$1" \
		--advertise-client-urls "https://$LAB_NODE_A:2379$1" \
		--listen-peer-urls "http://127.0.0.1:2380$1" \
		--initial-advertise-peer-urls "http://127.0.0.1:2380$1" \
		--initial-cluster "$CLUSTER" --initial-cluster-state new \
		--initial-cluster-token "$LAB_PREFIX" \
		--client-cert-auth --trusted-ca-file "$E/ca.crt" --cert-file "$E/server.crt" \
		--key-file "$E/server.key" --heartbeat-interval 50 --election-timeout 500 \
		--max-txn-ops 1024 --max-request-bytes 10485760 --logger zap --log-level warn
}
EPS="https://$LAB_NODE_A:23791,https://$LAB_NODE_A:23792,https://$LAB_NODE_A:23793"
ectl() {
	lab_exec ha env ETCDCTL_API=3 etcdctl --endpoints="$EPS" --cacert "$E/ca.crt" \
		--cert "$E/client.crt" --key "$E/client.key" --command-timeout=3s "$@"
}
etcd_wait() { # all three members healthy, up to 15 s
	i=0
	while [ $i -lt 75 ]; do
		[ "$(ectl endpoint health 2>&1 | grep -c 'is healthy')" -eq 3 ] && return 0
		sleep 0.2
		i=$((i + 1))
	done
	return 1
}
for n in 1 2 3; do etcd_start $n; done
etcd_wait || { echo "Bail out! etcd did not start: $(tail -5 "$TMP/etcd1.err")"; exit 1; }

# The first endpoint has nobody listening: it is skipped on every connection.
URL="etcd://$LAB_NODE_A:23790,$LAB_NODE_A:23791,$LAB_NODE_A:23792,$LAB_NODE_A:23793/lab"
tls_keys() {
	printf 'etcd_ca = %s\netcd_cert = %s\netcd_key = %s\netcd_timeout = 2s\n' "$E/ca.crt" \
		"$E/client.crt" "$E/client.key"
}
for h in a b wp; do
	f=$LAB_DIR/node-$h.conf
	[ $h = wp ] && f=$LAB_WP_CONF
	sed -i "s|^registry = .*|registry = $URL\nregistry_cache = $LAB_DIR/$h.registry.cache|" "$f"
	tls_keys | sed -i "/^registry_cache = /r /dev/stdin" "$f"
done
CLI=$LAB_CONF_A

push() { # push DIR [ENV...]: amesh registry push from host A; $OUT, $ERR, $RC
	dir=$1
	shift
	run lab_exec ha env "$@" "$AMESH" -c "$CLI" registry push "$dir"
}
push "$LAB_REGISTRY"
REV=$(echo "$OUT" | sed -n 's/.*: revision \([0-9]*\) .*/\1/p')
check "amesh registry push of the lab's registry over client TLS (revision $REV)" \
	'[ "$RC" -eq 0 ] && [ -n "$REV" ] && ectl get /lab/files/00-lab.conf --print-value-only | grep -q "node-a"'
run lab_exec ha "$AMESH" -c "$CLI" check
check "amesh check reads the etcd source" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "registry  $URL (revision $REV): ok"'

zt_start() { # zt_start a|b
	spawn "zt_$1" $(lab_in h$1) "$AMESH" ztunnel -c "$LAB_DIR/node-$1.conf"
}
for h in a b; do zt_start $h; done
check "both ztunnels start from etcd and are ready" 'lab_wait_ready ha && lab_wait_ready hb'
enroll() { # enroll HOST NS WORKLOAD
	lab_exec h$1 "$AMESH" -c "$LAB_DIR/node-$1.conf" cni add --netns "$(lab_ns_path "$2")" \
		--workload "$3" >/dev/null
}
enroll a a1 client-a && enroll a a2 echo-a && enroll b b1 echo-b
for ns in a2 b1; do
	start "srv_$ns" $(lab_in $ns) $PY "$LAB_PEER" serve --port 8080 || exit 1
done
conn() { # conn FROM ADDR: one exchange to ADDR:8080
	run lab_exec "$1" $PY "$LAB_PEER" connect --addr "$2" --port 8080 --timeout 3
}
flows() { # client-a reaches echo-b (across the wire) and echo-a (same host)
	conn a1 "$LAB_B1" && echo "$OUT" | grep -q "local $LAB_B1 8080" &&
		conn a1 "$LAB_A2" && echo "$OUT" | grep -q "local $LAB_A2 8080"
}
check "traffic flows on the registry from etcd" 'flows'

# A sidecar (other-b) watches etcd from inside its namespace, past its own interception rules.
start srv_b2 $(lab_in b2) $PY "$LAB_PEER" serve --port 8080 || exit 1
spawn sc_b2 $(lab_in b2) "$AMESH" -c "$LAB_DIR/node-b.conf" sidecar --workload other-b

dump() { # dump a|b: the ztunnel's /config_dump
	lab_exec h$1 $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15000/config_dump",timeout=2).read().decode())'
}
metric() { # metric a|b NAME: the value of an unlabelled metric
	lab_exec h$1 $PY -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15020/metrics",timeout=2).read().decode())' |
		sed -n "s/^$2 //p"
}
src_rev() { dump "$1" | $PY -c 'import json,sys; print(json.load(sys.stdin)["registry_source"]["revision"])'; }
check "/config_dump and amesh_registry_revision show revision $REV on both hosts" \
	'[ "$(src_rev a)" = "$REV" ] && [ "$(src_rev b)" = "$REV" ] && [ "$(metric b amesh_registry_revision)" = "$REV" ]'

# applied REV: both ztunnels logged revision REV applied (waits up to 10 s); prints the ms waited.
ms() { echo $(($(date +%s%N) / 1000000)); }
applied() {
	t=$(ms)
	while [ $(($(ms) - t)) -lt 10000 ]; do
		if grep -q "revision $1 applied" "$TMP/zt_a.err" && grep -q "revision $1 applied" "$TMP/zt_b.err"; then
			return 0
		fi
		sleep 0.02
	done
	return 1
}
rev_of() { echo "$OUT" | sed -n 's/.*: revision \([0-9]*\) .*/\1/p'; }

# A deny for client-a's principal on app=echo: echo-a is on host A, echo-b on host B.
cat >"$LAB_REGISTRY/50-deny.conf" <<'EOF'
[policy "deny-client"]
namespace = default
selector = app=echo
action = deny
from.principals = cluster.local/ns/default/sa/client
EOF
t0=$(ms)
push "$LAB_REGISTRY"
DENY=$(rev_of)
applied "$DENY"
took=$(($(ms) - t0))
check "a pushed deny applies on both hosts in $took ms (push to both applied, revision $DENY)" \
	'[ -n "$DENY" ] && grep -q "revision $DENY applied" "$TMP/zt_b.err" && [ "$took" -lt 3000 ]'
echo "# push -> applied on both ztunnels: $took ms"
conn a1 "$LAB_B1"
r1=$RC
conn a1 "$LAB_A2"
check "the deny is enforced by both hosts (echo-b exit $r1, echo-a exit $RC)" '[ "$r1" -ne 0 ] && [ "$RC" -ne 0 ]'
i=0
while ! grep -q "revision $DENY applied" "$TMP/sc_b2.err" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
conn a1 "$LAB_B2"
check "the sidecar of other-b reaches etcd from its namespace: ready, revision $DENY applied, serving" \
	'lab_ready b2 && grep -q "revision $DENY applied" "$TMP/sc_b2.err" && echo "$OUT" | grep -q "local $LAB_B2 8080"'
rm -f "$LAB_REGISTRY/50-deny.conf"
push "$LAB_REGISTRY"
applied "$(rev_of)"
check "the deny removed by the next push: traffic flows again" 'flows'

# The waypoint starts from etcd, and a route change pushed there applies to the next request.
start http_b1 $(lab_in b1) $PY "$SRCDIR/tests/e2e/httpd.py" serve --name echo-b --port 8081 || exit 1
spawn wp $(lab_in ha) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
wp_get() { run lab_exec a1 curl -s --max-time 5 http://10.96.0.20/; }
lab_wait_ready ha 15121
wp_get
check "the waypoint starts from etcd, ready, and applies its route (x-rev: one)" \
	'lab_ready ha 15121 && echo "$OUT" | grep -q "\"x-rev\": \"one\""'
sed -i 's/^request_headers.set = x-rev: one$/request_headers.set = x-rev: two/' "$LAB_REGISTRY/40-l7.conf"
push "$LAB_REGISTRY"
R=$(rev_of)
i=0
while ! grep -q "revision $R applied" "$TMP/wp.err" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wp_get
check "a route change pushed to etcd applies at the waypoint (revision $R; x-rev: two)" \
	'grep -q "revision $R applied" "$TMP/wp.err" && echo "$OUT" | grep -q "\"x-rev\": \"two\""'

# The leader dies; the next push still reaches both ztunnels.
leader=$(ectl endpoint status -w json 2>/dev/null | $PY -c 'import json,sys
for e in json.load(sys.stdin):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"][-1])')
eval "kill -KILL \$PID_etcd$leader"
printf '[node "node-c"]\naddress = 192.168.10.3\n' >"$LAB_REGISTRY/10-node-c.conf"
t0=$(ms)
i=0
push "$LAB_REGISTRY"
while [ "$RC" -ne 0 ] && [ $i -lt 20 ]; do # an election may be under way
	sleep 0.25
	push "$LAB_REGISTRY"
	i=$((i + 1))
done
R=$(rev_of)
applied "$R"
check "leader e$leader killed: the next push applies on both hosts ($(($(ms) - t0)) ms)" \
	'[ -n "$R" ] && grep -q "revision $R applied" "$TMP/zt_a.err" && grep -q "revision $R applied" "$TMP/zt_b.err"'
etcd_start "$leader"
etcd_wait

# Every member stops: traffic goes on, the ztunnels say so, and a ztunnel restarted meanwhile
# comes up from its cache.
for n in 1 2 3; do eval "kill -KILL \$PID_etcd$n"; done
i=0
while ! grep -q "etcd unreachable" "$TMP/zt_b.err" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "etcd down: ztunnel B says it serves revision $R (log, amesh_registry_etcd_up 0, /config_dump)" \
	'grep -q "etcd unreachable.*serving revision $R" "$TMP/zt_b.err" && [ "$(metric b amesh_registry_etcd_up)" = 0 ] &&
	 dump b | grep "\"etcd_up\": false" >/dev/null'
check "etcd down: traffic continues" 'flows'
eval "kill -KILL \$PID_zt_b"
zt_start b
check "ztunnel B restarted while etcd is down: ready from its cache, with a warning" \
	'lab_wait_ready hb && grep -q "serving revision $R from the cache" "$TMP/zt_b.err" &&
	 dump b | grep "\"from_cache\": true" >/dev/null'
check "traffic flows through the ztunnel started from its cache" 'flows'
for n in 1 2 3; do etcd_start $n; done
etcd_wait
rm -f "$LAB_REGISTRY/10-node-c.conf"
push "$LAB_REGISTRY"
R=$(rev_of)
applied "$R"
check "etcd back: a push applies on both hosts (revision $R)" \
	'[ -n "$R" ] && grep -q "revision $R applied" "$TMP/zt_a.err" && grep -q "revision $R applied" "$TMP/zt_b.err"'

# Compaction past a watcher: ztunnel B is frozen and its watch connection cut; a change and a
# compaction later it resumes from a revision etcd no longer has, and reloads whole.
PID_B=$PID_zt_b
kill -STOP "$PID_B"
lab_exec hb ss -K dst "$LAB_NODE_A" >/dev/null 2>&1
printf '[node "node-d"]\naddress = 192.168.10.4\n' >"$LAB_REGISTRY/11-node-d.conf"
push "$LAB_REGISTRY"
printf '[node "node-e"]\naddress = 192.168.10.5\n' >"$LAB_REGISTRY/11-node-d.conf"
push "$LAB_REGISTRY"
R=$(rev_of)
ectl compaction "$R" >/dev/null 2>&1
compacted=$?
kill -CONT "$PID_B"
applied "$R"
check "compaction past ztunnel B's revision: it reloads whole and applies revision $R" \
	'[ "$compacted" -eq 0 ] && grep -q "compacted past revision" "$TMP/zt_b.err" && grep -q "revision $R applied" "$TMP/zt_b.err"'
check "after the whole reload ztunnel B shows revision $R and traffic flows" '[ "$(src_rev b)" = "$R" ] && flows'

# A bad registry forced in with etcdctl (no amesh validation on the way): every role refuses it
# with the key, the line and the revision; the snapshot in force stays.
printf '[workload "broken"]\nnamespace = default\nflavour = strawberry\n' >"$TMP/bad.conf"
ectl put /lab/files/70-bad.conf <"$TMP/bad.conf" >/dev/null
BAD=$(ectl get /lab/files/70-bad.conf -w json | $PY -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
i=0
while ! grep -q "revision $BAD refused" "$TMP/zt_b.err" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
for h in a b; do
	check "ztunnel $(echo $h | tr ab AB) refuses revision $BAD naming /lab/files/70-bad.conf:3" \
		"grep -q 'revision $BAD: /lab/files/70-bad.conf:3: workload \"broken\": unknown key .flavour.' \"\$TMP/zt_$h.err\" &&
		 grep -q 'revision $BAD refused; revision $R stays in force' \"\$TMP/zt_$h.err\""
done
check "the refused revision is counted (amesh_registry_load_failures_total) and traffic continues" \
	'[ "$(metric a amesh_registry_load_failures_total)" -ge 1 ] && flows'
ectl del /lab/files/70-bad.conf >/dev/null

# Two pushes read the same revision and race: the transaction guard lets exactly one through.
mkdir -p "$TMP/p1" "$TMP/p2"
cp "$LAB_REGISTRY"/*.conf "$TMP/p1/"
cp "$LAB_REGISTRY"/*.conf "$TMP/p2/"
printf '[node "node-p1"]\naddress = 192.168.10.11\n' >"$TMP/p1/12-p.conf"
printf '[node "node-p2"]\naddress = 192.168.10.12\n' >"$TMP/p2/12-p.conf"
lab_exec ha env AMESH_TEST_PUSH_DELAY_MS=700 "$AMESH" -c "$CLI" registry push "$TMP/p1" >"$TMP/p1.out" 2>&1 &
p1=$!
lab_exec ha env AMESH_TEST_PUSH_DELAY_MS=700 "$AMESH" -c "$CLI" registry push "$TMP/p2" >"$TMP/p2.out" 2>&1 &
p2=$!
wait $p1
rc1=$?
wait $p2
rc2=$?
won=$(cat "$TMP/p1.out" "$TMP/p2.out" | grep -c '^pushed')
told=$(cat "$TMP/p1.out" "$TMP/p2.out" | grep -c 'another push won')
check "two concurrent pushes: exactly one wins (exits $rc1 $rc2), the other is told" \
	'[ "$won" -eq 1 ] && [ "$told" -eq 1 ] && [ $((rc1 + rc2)) -eq 1 ]'
push "$TMP/p1" AMESH_TEST_PUSH_DELAY_MS=0
run lab_exec ha "$AMESH" -c "$CLI" registry push --force "$LAB_REGISTRY"
check "push --force overwrites; diff then finds nothing" \
	'[ "$RC" -eq 0 ] && lab_exec ha "$AMESH" -c "$CLI" registry diff "$LAB_REGISTRY" >/dev/null'
run lab_exec ha "$AMESH" -c "$CLI" registry pull "$TMP/pulled"
check "pull writes the same files" '[ "$RC" -eq 0 ] && diff -r "$LAB_REGISTRY" "$TMP/pulled" >/dev/null'

check "the dead endpoint in the list was skipped: ztunnels watch a live one" \
	'dump a | grep "\"endpoint\": \"$LAB_NODE_A:2379[123]\"" >/dev/null && flows'
# Its connections to etcd carry the proxy's mark: its own rules never captured one (each would
# be an access-log line to the etcd port, at the latest when the outage above closed them).
check "the sidecar's etcd connections passed its own interception rules (none in its access log)" \
	'grep -q "revision $R applied" "$TMP/sc_b2.err" && ! grep "dst.addr" "$TMP/sc_b2.err" | grep -q "$LAB_NODE_A:2379"'

tap_done
