#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# amesh-cni as a chained CNI plugin, run the way a container runtime runs it (tests/cni/cnirun.py):
# a conflist with Debian's bridge + host-local first and amesh-cni after, each plugin executed
# with the CNI_* environment and its configuration (and prevResult) on stdin. The runtime side runs
# in a namespace of its own ("host") so the bridge is made there; the stand-in ztunnel
# (tests/tools/handoff-peer) takes the hand-off. Root only; no traffic.
. "$(dirname "$0")/lib-cni.sh"

if [ ! -x /usr/lib/cni/bridge ] || [ ! -x /usr/lib/cni/host-local ]; then
	echo "1..0 # SKIP /usr/lib/cni/bridge and host-local not installed (containernetworking-plugins)"
	exit 0
fi

plan 47

netns_add host
netns_add pod
netns_add pod2
POD=/run/netns/$NS_PREFIX-pod
POD2=/run/netns/$NS_PREFIX-pod2
mkdir -p "$TMP/bin" "$TMP/cache" "$TMP/ipam" "$TMP/trace"
ln -s /usr/lib/cni/bridge /usr/lib/cni/host-local "$TMP/bin/"
ln -s "$AMESH" "$TMP/bin/amesh-cni"
CNI=$TMP/bin/amesh-cni

# conflist FILE AMESH_CONF: bridge + host-local, then amesh-cni with "conf".
conflist() {
	cat >"$1" <<EOF
{"cniVersion": "1.0.0", "name": "amesh-test", "plugins": [
  {"type": "bridge", "bridge": "amt-br0", "isGateway": true,
   "ipam": {"type": "host-local", "dataDir": "$TMP/ipam",
            "ranges": [[{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.10"}]]}},
  {"type": "amesh-cni", "conf": "$2"}
]}
EOF
}
conflist "$TMP/net.conflist" "$CONF"
write_conf "$TMP/skip.conf" skip
conflist "$TMP/skip.conflist" "$TMP/skip.conf"

# runtime COMMAND CONFLIST NETNS CONTAINERID [CNI_ARGS]: the chain, run from the host namespace.
runtime() {
	rm -f "$TMP"/trace/*
	run in_ns host env CNI_PATH="$TMP/bin" CNIRUN_TRACE="$TMP/trace" CNI_ARGS="${5:-}" \
		$PY "$SRCDIR/tests/cni/cnirun.py" "$1" "$2" "$3" "$4" eth0 "$TMP/cache"
}

# Short enough for the "not answering" cases, long enough for a sanitizer build.
AMESH_HANDOFF_TIMEOUT_MS=2000
export AMESH_HANDOFF_TIMEOUT_MS

# plugin COMMAND [VAR=VALUE...] < CONFIG: amesh-cni alone, as a runtime would call it.
plugin() {
	cmd=$1
	shift
	run env CNI_COMMAND="$cmd" CNI_PATH="$TMP/bin" "$@" "$CNI"
}

# json_eq A B: the two files hold equal JSON.
json_eq() {
	$PY -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' "$1" "$2"
}

# cni_error CODE: $OUT is a CNI error object with that code, and the exit status is not 0.
cni_error() {
	[ "$RC" -ne 0 ] && echo "$OUT" | $PY -c 'import json, sys
e = json.load(sys.stdin)
sys.exit(not (e["code"] == int(sys.argv[1]) and e["msg"] and e["details"] and e["cniVersion"]))' "$1"
}

routing pod >"$TMP/routing.before"

echo '{"cniVersion": "1.1.0"}' >"$TMP/version.json"
plugin VERSION <"$TMP/version.json"
check "VERSION lists 1.0.0 and 1.1.0" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | $PY -c "import json, sys; v = json.load(sys.stdin); sys.exit(not {\"1.0.0\", \"1.1.0\"} <= set(v[\"supportedVersions\"]))"'
# Found by tests/fuzz/fuzz-cni: details quoting bytes that are not UTF-8 made no error object.
echo '{"cniVersion": "1.1.0", "name": "n", "type": "amesh-cni"}' >"$TMP/min.json"
plugin "$(printf 'AD\234D')" <"$TMP/min.json"
check "an unknown command that is not UTF-8 still gets the error object" 'cni_error 4'

start_peer
runtime ADD "$TMP/net.conflist" "$POD" c1
check "ADD through bridge, host-local and amesh-cni succeeds" '[ "$RC" -eq 0 ]'
check "amesh-cni prints the prevResult unchanged" \
	'json_eq "$TMP/trace/1-bridge-ADD.json" "$TMP/trace/2-amesh-cni-ADD.json"'
check "the workload is found by its address from host-local" \
	'grep -qx "ADD web $POD" "$TMP/peer.out"'
run in_ns pod nft list table inet amesh
check "the rules are in the pod namespace" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "redirect to :15001"'
run in_ns pod ip -br addr show eth0
check "the bridge plugin's interface is there too" 'echo "$OUT" | grep -q "10.99.0.10/24"'

runtime CHECK "$TMP/net.conflist" "$POD" c1
check "CHECK passes" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'
h=$(in_ns pod nft -a list chain inet amesh prerouting | sed -n 's/.*ip6 daddr.* # handle //p')
in_ns pod nft delete rule inet amesh prerouting handle "$h"
runtime CHECK "$TMP/net.conflist" "$POD" c1
check "CHECK fails with code 102 when a rule is gone" \
	'cni_error 102 && echo "$OUT" | grep -q "chain prerouting has 1 rules, expected 2"'

runtime DEL "$TMP/net.conflist" "$POD" c1
check "DEL succeeds" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'
check "the ztunnel got DEL" 'grep -qx "DEL web" "$TMP/peer.out"'
run in_ns pod nft list ruleset
check "after DEL the pod's ruleset is empty" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'
routing pod >"$TMP/routing.after"
run diff -u "$TMP/routing.before" "$TMP/routing.after"
check "after DEL the pod's policy routing is as before" '[ "$RC" -eq 0 ]'
runtime DEL "$TMP/net.conflist" "$POD" c1
check "a second DEL succeeds" '[ "$RC" -eq 0 ]'

# amesh-cni alone, spec 1.1.0, the workload named in args (the CNI conventions' labels).
cat >"$TMP/add11.json" <<EOF
{"cniVersion": "1.1.0", "name": "amesh-test", "type": "amesh-cni", "conf": "$CONF",
 "args": {"cni": {"labels": [{"key": "app", "value": "x"}, {"key": "amesh.workload", "value": "web2"}]}},
 "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.77.0.5/24"}], "dns": {}}}
EOF
plugin ADD CNI_CONTAINERID=c2 CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/add11.json"
echo "$OUT" >"$TMP/add11.out"
check "1.1.0 ADD with args.cni.labels amesh.workload" \
	'[ "$RC" -eq 0 ] && grep -qx "ADD web2 $POD" "$TMP/peer.out"'
check "1.1.0 ADD prints prevResult with cniVersion 1.1.0" \
	'$PY -c "import json, sys; a = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))[\"prevResult\"]; sys.exit(a != p)" "$TMP/add11.out" "$TMP/add11.json"'
plugin STATUS <"$TMP/add11.json"
check "STATUS with the ztunnel up succeeds quietly" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'
plugin DEL CNI_CONTAINERID=c2 CNI_NETNS="$POD" CNI_IFNAME=eth0 CNI_ARGS="IgnoreUnknown=1;amesh.workload=web2" \
	<"$TMP/add11.json"
check "DEL with CNI_ARGS amesh.workload" \
	'[ "$RC" -eq 0 ] && grep -qx "DEL web2" "$TMP/peer.out" && [ -z "$(in_ns pod nft list ruleset)" ]'

# A runtime that lost the container's details: DEL finds the workload by namespace via LIST.
plugin ADD CNI_CONTAINERID=c3 CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/add11.json"
echo '{"cniVersion": "1.1.0", "name": "amesh-test", "type": "amesh-cni", "conf": "'"$CONF"'"}' \
	>"$TMP/bare.json"
plugin DEL CNI_CONTAINERID=c3 CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/bare.json"
check "DEL without names or prevResult finds the workload by its namespace" \
	'[ "$RC" -eq 0 ] && [ "$(grep -c "^DEL web2$" "$TMP/peer.out")" -eq 2 ] && [ -z "$(in_ns pod nft list ruleset)" ]'
plugin DEL CNI_CONTAINERID=c4 CNI_IFNAME=eth0 <"$TMP/bare.json"
check "DEL without CNI_NETNS and nothing enrolled succeeds" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'

# An ADD of a workload whose namespace still exists, in another namespace, is refused with our
# code 103 and changes nothing; the DEL a runtime sends after the failed ADD leaves the workload
# where it is. Once the old namespace is let go, the ADD works.
plugin ADD CNI_CONTAINERID=c11 CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/add11.json"
plugin ADD CNI_CONTAINERID=c12 CNI_NETNS="$POD2" CNI_IFNAME=eth0 <"$TMP/add11.json"
check "ADD in a second namespace while the first exists: code 103, nothing changed" \
	'[ "$RC" -ne 0 ] && echo "$OUT" | grep -q "\"code\":103" &&
	 echo "$OUT" | grep -q "enrolled in netns $POD" && [ -z "$(in_ns pod2 nft list ruleset)" ] &&
	 [ "$(grep -c "^ADD web2 $POD2" "$TMP/peer.out")" -eq 0 ]'
plugin DEL CNI_CONTAINERID=c12 CNI_NETNS="$POD2" CNI_IFNAME=eth0 <"$TMP/add11.json"
check "the DEL after the refused ADD leaves the workload in its namespace" \
	'[ "$RC" -eq 0 ] && [ "$(grep -c "^DEL web2$" "$TMP/peer.out")" -eq 2 ] &&
	 in_ns pod nft list table inet amesh >/dev/null'
plugin DEL CNI_CONTAINERID=c11 CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/add11.json"
plugin ADD CNI_CONTAINERID=c12 CNI_NETNS="$POD2" CNI_IFNAME=eth0 <"$TMP/add11.json"
check "after the DEL of the old namespace the ADD in the new one works" \
	'[ "$RC" -eq 0 ] && [ "$(grep -c "^DEL web2$" "$TMP/peer.out")" -eq 3 ] &&
	 in_ns pod2 nft list table inet amesh >/dev/null && [ -z "$(in_ns pod nft list ruleset)" ]'
plugin DEL CNI_CONTAINERID=c12 CNI_NETNS="$POD2" CNI_IFNAME=eth0 <"$TMP/add11.json"
check "DEL of the new namespace unenrolls it" \
	'[ "$RC" -eq 0 ] && [ "$(grep -c "^DEL web2$" "$TMP/peer.out")" -eq 4 ] && [ -z "$(in_ns pod2 nft list ruleset)" ]'

# GC: a workload whose namespace went away without a DEL is let go.
netns_add gone
plugin ADD CNI_CONTAINERID=c5 CNI_NETNS="/run/netns/$NS_PREFIX-gone" CNI_IFNAME=eth0 <"$TMP/add11.json"
ip netns del "$NS_PREFIX-gone"
echo '{"cniVersion": "1.1.0", "name": "amesh-test", "type": "amesh-cni", "conf": "'"$CONF"'", "cni.dev/valid-attachments": []}' \
	>"$TMP/gc.json"
plugin GC <"$TMP/gc.json"
check "GC unenrolls workloads whose namespace is gone" \
	'[ "$RC" -eq 0 ] && [ -z "$OUT" ] && [ "$(grep -c "^DEL web2$" "$TMP/peer.out")" -eq 5 ] && [ ! -e "$STATE/web2" ]'

# An address in no registry workload: fail, or pass through with on_unknown = skip.
: >"$TMP/peer.out" # (appended to: the requests from here on)
runtime ADD "$TMP/net.conflist" "$POD2" c6
check "unknown workload: ADD fails with CNI error 100" \
	'cni_error 100 && echo "$OUT" | grep -q "no workload of the registry"'
check "unknown workload: nothing installed, no hand-off" \
	'[ -z "$(in_ns pod2 nft list ruleset)" ] && ! grep -q "ADD.*$POD2" "$TMP/peer.out"'
runtime DEL "$TMP/net.conflist" "$POD2" c6
check "DEL after the failed ADD succeeds" '[ "$RC" -eq 0 ]'
runtime ADD "$TMP/skip.conflist" "$POD2" c7
check "on_unknown = skip: ADD passes through" \
	'[ "$RC" -eq 0 ] && json_eq "$TMP/trace/1-bridge-ADD.json" "$TMP/trace/2-amesh-cni-ADD.json"'
check "on_unknown = skip: nothing installed, no hand-off" \
	'[ -z "$(in_ns pod2 nft list ruleset)" ] && ! grep -q "ADD.*$POD2" "$TMP/peer.out"'
runtime CHECK "$TMP/skip.conflist" "$POD2" c7
check "on_unknown = skip: CHECK passes" '[ "$RC" -eq 0 ]'
runtime DEL "$TMP/skip.conflist" "$POD2" c7
check "on_unknown = skip: DEL passes" '[ "$RC" -eq 0 ]'

# The ztunnel down: ADD asks to try again later and leaves nothing; STATUS says unavailable.
# (host-local hands out new addresses now: the workload is named in CNI_ARGS.)
stop_peer
runtime ADD "$TMP/net.conflist" "$POD" c8 "IgnoreUnknown=1;amesh.workload=web"
check "ztunnel down: ADD fails with code 11 (try again later)" \
	'cni_error 11 && echo "$OUT" | grep -q "ztunnel not reachable"'
check "ztunnel down: nothing installed" '[ -z "$(in_ns pod nft list ruleset)" ]'
plugin STATUS <"$TMP/add11.json"
check "ztunnel down: STATUS fails with code 50" 'cni_error 50'
runtime DEL "$TMP/net.conflist" "$POD" c8 "IgnoreUnknown=1;amesh.workload=web"
check "ztunnel down: DEL succeeds" '[ "$RC" -eq 0 ]'
start_peer --add silent
runtime ADD "$TMP/net.conflist" "$POD" c9 "IgnoreUnknown=1;amesh.workload=web"
check "ztunnel not answering: ADD fails with code 11" \
	'cni_error 11 && echo "$OUT" | grep -q "did not answer"'
check "ztunnel not answering: nothing installed" '[ -z "$(in_ns pod nft list ruleset)" ]'
runtime DEL "$TMP/net.conflist" "$POD" c9 "IgnoreUnknown=1;amesh.workload=web"
start_peer --add err
runtime ADD "$TMP/net.conflist" "$POD" c10 "IgnoreUnknown=1;amesh.workload=web"
check "ztunnel refusing: ADD fails with code 101 and its message" \
	'cni_error 101 && echo "$OUT" | grep -q "refused by handoff-peer"'
check "ztunnel refusing: nothing installed" '[ -z "$(in_ns pod nft list ruleset)" ]'
runtime DEL "$TMP/net.conflist" "$POD" c10 "IgnoreUnknown=1;amesh.workload=web"
start_peer

# Protocol errors.
echo '{"cniVersion": "0.4.0", "name": "n", "type": "amesh-cni"}' >"$TMP/old.json"
plugin ADD CNI_CONTAINERID=c CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/old.json"
check "cniVersion 0.4.0: code 1" 'cni_error 1 && echo "$OUT" | grep -q "0.4.0"'
plugin ADD CNI_CONTAINERID=c CNI_IFNAME=eth0 <"$TMP/add11.json"
check "ADD without CNI_NETNS: code 4 naming it" 'cni_error 4 && echo "$OUT" | grep -q CNI_NETNS'
echo '{"cniVersion": ' >"$TMP/broken.json"
plugin ADD CNI_CONTAINERID=c CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/broken.json"
check "undecodable configuration: code 6" 'cni_error 6'
sed "s|\"conf\": \"$CONF\"|\"conf\": \"$TMP/missing.conf\"|" "$TMP/add11.json" >"$TMP/noconf.json"
plugin ADD CNI_CONTAINERID=c CNI_NETNS="$POD" CNI_IFNAME=eth0 <"$TMP/noconf.json"
check "missing amesh.conf: code 7 naming it" 'cni_error 7 && echo "$OUT" | grep -q "missing.conf"'
plugin FROB <"$TMP/add11.json"
check "unknown CNI_COMMAND: code 4" 'cni_error 4 && echo "$OUT" | grep -q FROB'
run env -u CNI_COMMAND "$CNI" </dev/null
check "amesh-cni without CNI_COMMAND: code 4" 'cni_error 4 && echo "$OUT" | grep -q CNI_COMMAND'
check "no ADD reached the ztunnel from the bad requests" '! grep -q "^ADD" "$TMP/peer.out"'

tap_done
