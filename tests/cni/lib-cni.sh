# SPDX-License-Identifier: Apache-2.0
# Helpers for the amesh cni tests: root only; every network namespace a test makes has a unique
# name and is deleted on exit (failure included); the stand-in ztunnel (tests/tools/handoff-peer);
# an amesh.conf and a registry under $TMP. Source it instead of lib.sh.

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root"
	exit 0
fi
for tool in ip nft; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "1..0 # SKIP $tool not installed"
		exit 0
	fi
done

. "$(dirname "$0")/../lib.sh"

: "${PEER:=$BUILDDIR/tests/tools/handoff-peer}"
PY=/usr/bin/python3
SOCK=$TMP/ztunnel.sock
STATE=$TMP/workloads
CONF=$TMP/amesh.conf
mkdir -p "$STATE" "$TMP/registry.d"

# Names are amt<pid>-<suffix>: unique per test run, and short enough for interface names.
NS_PREFIX="amt$$"
NETNS_MADE=""
PEER_PID=""

# netns_add SUFFIX: creates namespace amt<pid>-SUFFIX with lo up; prints nothing.
netns_add() {
	ip netns add "$NS_PREFIX-$1" || return 1
	NETNS_MADE="$NETNS_MADE $NS_PREFIX-$1"
	ip netns exec "$NS_PREFIX-$1" ip link set lo up
}

# in_ns SUFFIX CMD...: runs CMD inside namespace amt<pid>-SUFFIX.
in_ns() {
	ns=$1
	shift
	ip netns exec "$NS_PREFIX-$ns" "$@"
}

# start_peer [handoff-peer options]: the stand-in ztunnel on $SOCK, records in $STATE.
start_peer() {
	stop_peer
	: >"$TMP/peer.out"
	"$PEER" --socket "$SOCK" --state-dir "$STATE" "$@" >>"$TMP/peer.out" 2>"$TMP/peer.err" &
	PEER_PID=$!
	i=0
	while [ $i -lt 50 ]; do
		grep -q '^ready$' "$TMP/peer.out" && return 0
		sleep 0.1
		i=$((i + 1))
	done
	echo "# handoff-peer did not start: $(cat "$TMP/peer.err")"
	return 1
}

# stop_peer: stops it and waits, so the next one's socket is not removed by this one's exit.
stop_peer() {
	if [ -n "$PEER_PID" ]; then
		kill "$PEER_PID" 2>/dev/null
		wait "$PEER_PID" 2>/dev/null
		PEER_PID=""
	fi
}

# write_conf FILE [ON_UNKNOWN [DNS_CAPTURE]]: an amesh.conf for node-a using $SOCK and $STATE.
write_conf() {
	cat >"$1" <<EOF
[mesh]
registry = $TMP/registry.d
node = node-a
trust_bundle = $TMP/ca.crt

[ztunnel]
socket = $SOCK
state_dir = $STATE
dns_capture = ${3:-off}

[cni]
on_unknown = ${2:-fail}
EOF
}

# The registry: web is this node's HBONE workload (its address is the first one host-local hands
# out in test-plugin.sh), far runs on node-b, plain has protocol tcp.
cat >"$TMP/registry.d/test.conf" <<'EOF'
[node "node-a"]
address = 192.168.10.1

[node "node-b"]
address = 192.168.10.2

[workload "web"]
namespace = default
service_account = web
node = node-a
addresses = 10.99.0.10, fd99::10

[workload "web2"]
namespace = default
service_account = web
node = node-a
addresses = 10.99.0.20

[workload "far"]
namespace = default
service_account = far
node = node-b
addresses = 10.99.0.30

[workload "plain"]
namespace = default
node = node-a
protocol = tcp
addresses = 10.99.0.40
EOF
write_conf "$CONF"

# routing SUFFIX: the namespace's policy routing, for before/after comparisons. (An emptied table
# 100 stays known to the kernel, which "ip route show table 100" tells only on stderr.)
routing() {
	in_ns "$1" ip rule show
	in_ns "$1" ip -6 rule show
	in_ns "$1" ip route show table 100 2>/dev/null
	in_ns "$1" ip -6 route show table 100 2>/dev/null
}

cni_cleanup() {
	stop_peer
	for ns in $NETNS_MADE; do
		ip netns del "$ns" 2>/dev/null
	done
	cleanup
}
trap cni_cleanup EXIT
