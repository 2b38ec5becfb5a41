# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=sh disable=SC2034
# The two-host lab of the end-to-end tests (issue 4), built from network namespaces.
# Source it (POSIX sh; needs root, iproute2 and /usr/bin/python3 for the peer helper):
#
#	. "$SRCDIR/tests/e2e/lab.sh"
#	trap 'lab_down; cleanup' EXIT           # cleanup: tests/lib.sh's, if used
#	lab_up "$TMP/lab" || exit 1
#	lab_exec a1 ping -c 1 10.1.2.2
#
# Topology. Every name gets the run's unique prefix LAB_PREFIX ("aml" + 6 random hex digits,
# claimed atomically with `ip netns add`), so labs of concurrent tests never collide with each
# other or with anything else on the machine. Interfaces are created directly inside their
# namespaces (`ip -n NS link add ... peer ... netns NS2`), so none ever exists in the root
# namespace and their short names cannot collide; none is longer than 15 characters.
#
#   netns PREFIX-a1 (client-a)   PREFIX-a2 (echo-a)      PREFIX-b1 (echo-b)   PREFIX-b2 (other-b)
#     eth0 10.1.1.2/24            eth0 10.1.1.3/24         eth0 10.1.2.2/24      eth0 10.1.2.3/24
#          fd00:1::2/64                fd00:1::3/64             fd00:2::2/64          fd00:2::3/64
#       |                           |                        |                     |
#     veth-a1                     veth-a2                  veth-b1               veth-b2
#       +--- br0 10.1.1.1/24 -------+                        +--- br0 10.1.2.1/24 --+
#            fd00:1::1/64                                         fd00:2::1/64
#   netns PREFIX-ha (host A, node-a)                      netns PREFIX-hb (host B, node-b)
#     wire 192.168.10.1/24, fd00:10::1/64 <-- veth --> wire 192.168.10.2/24, fd00:10::2/64
#
# - Hosts forward (net.ipv4.ip_forward and net.ipv6.conf.all.forwarding on); host A routes
#   10.1.2.0/24 and fd00:2::/64 via the wire to host B, and host B the reverse, so every
#   workload reaches every other one, across the wire through both hosts, with its real source
#   address (no NAT anywhere).
# - Workloads have a default route (IPv4 and IPv6) to their bridge gateway (.1 / ::1), and
#   explicit routes for the service VIP ranges 10.96.0.0/16 and fd00:96::/64 to the same
#   gateway: a connect to a VIP leaves the workload namespace, where interception (the nft
#   rules of amesh cni) can catch it. WITHOUT interception VIP traffic goes nowhere: the host
#   has no route for the VIP ranges and answers ICMP unreachable (connect fails at once).
# - None of these addresses exists outside the lab namespaces; the hosts have no uplink, so
#   nothing in the lab can reach the machine's real network either.
# - IPv6 duplicate address detection is off in the lab, so addresses are usable at once.
#
# Registry. lab_up writes, in its directory DIR (LAB_DIR):
#   DIR/registry.d/00-lab.conf    (LAB_REGISTRY is DIR/registry.d; tests add their own files,
#                                  e.g. DIR/registry.d/50-policy.conf, and can rewrite this one)
#     [node "node-a"] address = 192.168.10.1
#     [node "node-b"] address = 192.168.10.2
#     [workload "client-a"] namespace default, sa client, node-a, 10.1.1.2 fd00:1::2, app=client
#     [workload "echo-a"]   namespace default, sa echo,   node-a, 10.1.1.3 fd00:1::3, app=echo, version=a
#     [workload "echo-b"]   namespace default, sa echo,   node-b, 10.1.2.2 fd00:2::2, app=echo, version=b
#     [workload "other-b"]  namespace other,   sa other,  node-b, 10.1.2.3 fd00:2::3, app=other
#     [service "echo"]  namespace default, vip 10.96.0.10 fd00:96::10, ports 80:8080, selector app=echo
#                       (two endpoints: echo-a on host A, echo-b on host B)
#     [service "other"] namespace other,   vip 10.96.0.11 fd00:96::11, ports 80:8080, selector app=other
#   No policies (everything allowed), no waypoints, all workloads protocol hbone (the default).
#   DIR/node-a.conf, DIR/node-b.conf: an amesh.conf(5) per host: [mesh] registry = LAB_REGISTRY,
#     node = node-a|node-b, trust_bundle = DIR/ca/ca.crt; [identity] cert_dir = DIR/node-X/certs;
#     [ztunnel] socket = DIR/node-X/ztunnel.sock, state_dir = DIR/node-X/workloads. Each ztunnel
#     runs in its host namespace (lab_exec ha "$AMESH" ztunnel -c "$LAB_CONF_A"), so the host
#     listeners (admin 127.0.0.1:15000, metrics, readiness) do not collide.
#   lab_certs (optional, needs $AMESH) creates DIR/ca with `amesh ca init` and issues each
#     node's workload identities into its cert_dir.
#
# Functions:
#   lab_up [DIR]          build the lab (DIR defaults to a new temporary directory, removed by
#                         lab_down); sets the variables below; returns non-zero on failure,
#                         leaving whatever it built for lab_down.
#   lab_down              kill every process inside the lab namespaces, delete them and their
#                         links, remove DIR if lab_up created it. Idempotent; safe from an EXIT
#                         trap at any point, even before lab_up or after it failed halfway.
#   lab_ns NS             the netns name of NS; NS is ha|hb|a1|a2|b1|b2, or node-a, node-b,
#                         client-a, echo-a, echo-b, other-b.
#   lab_ns_path NS        /run/netns/NAME (for amesh cni add --netns, CNI_NETNS, setns)
#   lab_unit_privs UNIT   a setpriv(1) prefix giving a command the capability bounding set and
#                         no_new_privs of packaging/systemd/UNIT.in, so tests run each role with
#                         exactly what its systemd unit grants (as root: uid 0 keeps the rest).
#   lab_caps PID          the effective capabilities of PID as capsh names ("cap_a,cap_b" or
#                         "none"), and " nnp" when no_new_privs is set.
#   lab_exec NS CMD...    run CMD inside NS (ip netns exec). In the background (`lab_exec ... &`,
#                         or lib.sh's start), $! is a subshell's pid; lab_down kills the
#                         command itself. lab_in NS prints "ip netns exec NAME" for a direct pid:
#                         `start srv $(lab_in a2) $LAB_PY "$LAB_PEER" serve --port 8080`.
#   lab_wait_port NS ADDR PORT
#                         wait until a TCP socket listens on ADDR:PORT in NS (ADDR '*' or empty:
#                         any address; a wildcard listener matches any ADDR); up to LAB_WAIT
#                         seconds (default 10); returns 1 on timeout.
#   lab_certs             see above.
#   lab_waypoint          (after lab_certs) a waypoint's host side on host A: the address LAB_WP
#                         (192.168.10.9) on the wire, the identity default/waypoint in
#                         DIR/waypoint/certs, and LAB_WP_CONF (DIR/waypoint.conf) with its host
#                         listeners on 15100 (admin), 15120 (metrics) and 15121 (readiness), apart
#                         from the ztunnel's; and its registry entry, [waypoint "wp"] (namespace
#                         default, service_account waypoint, address $LAB_WP, node-a), in
#                         LAB_REGISTRY/39-waypoint.conf. Services name it with waypoint = wp.
#   lab_cap_start, lab_cap_stop   capture the TCP on the wire between the hosts (tcpdump in host
#                         A) into LAB_DIR/wire.pcap; lab_cap_stop waits for the last packets.
#   lab_cap_count FILTER  packets of the last capture that match a tcpdump FILTER
#   lab_cap_has TEXT      the last capture holds TEXT's bytes
#   lab_ready NS [PORT]   the readiness endpoint on 127.0.0.1:PORT (default 15021) in NS says 200.
#   lab_wait_ready NS [PORT]  the same, waiting up to 5 s.
# Variables set by lab_up: LAB_PREFIX LAB_DIR LAB_REGISTRY LAB_CONF_A LAB_CONF_B,
#   LAB_NODE_A=192.168.10.1 LAB_NODE_B=192.168.10.2 (LAB_NODE_A6/B6 fd00:10::1/::2),
#   LAB_A1 LAB_A2 LAB_B1 LAB_B2 (IPv4) and LAB_A1_6 ... LAB_B2_6 (IPv6),
#   LAB_VIP=10.96.0.10 LAB_VIP6=fd00:96::10 (service echo), LAB_VIP_OTHER=10.96.0.11.
# LAB_PY=/usr/bin/python3 and LAB_PEER (tests/e2e/lab-peer.py: TCP serve/connect that report
#   both ends' addresses) are set when this file is sourced.
# Internal names start with _lab; the file sets no trap, no shell option and no other variable.

LAB_PY=/usr/bin/python3
LAB_PEER="${SRCDIR:-.}/tests/e2e/lab-peer.py"
LAB_NODE_A=192.168.10.1
LAB_NODE_B=192.168.10.2
LAB_NODE_A6=fd00:10::1
LAB_NODE_B6=fd00:10::2
LAB_A1=10.1.1.2
LAB_A2=10.1.1.3
LAB_B1=10.1.2.2
LAB_B2=10.1.2.3
LAB_A1_6=fd00:1::2
LAB_A2_6=fd00:1::3
LAB_B1_6=fd00:2::2
LAB_B2_6=fd00:2::3
LAB_VIP=10.96.0.10
LAB_VIP6=fd00:96::10
LAB_VIP_OTHER=10.96.0.11
LAB_VIP_OTHER6=fd00:96::11

_lab_step=0

# _lab_run CMD...: runs a build step; on failure says which and returns 1. LAB_FAIL_AT=N makes
# step N fail (tests use it to leave a half-built lab).
_lab_run() {
	_lab_step=$((_lab_step + 1))
	if [ -n "${LAB_FAIL_AT:-}" ] && [ "$_lab_step" -eq "$LAB_FAIL_AT" ]; then
		echo "# lab_up: injected failure at step $_lab_step: $*" >&2
		return 1
	fi
	if ! _lab_out=$("$@" 2>&1); then
		echo "# lab_up: step $_lab_step failed: $*: $_lab_out" >&2
		return 1
	fi
	return 0
}

lab_ns() {
	case $1 in
	ha | node-a) echo "$LAB_PREFIX-ha" ;;
	hb | node-b) echo "$LAB_PREFIX-hb" ;;
	a1 | client-a) echo "$LAB_PREFIX-a1" ;;
	a2 | echo-a) echo "$LAB_PREFIX-a2" ;;
	b1 | echo-b) echo "$LAB_PREFIX-b1" ;;
	b2 | other-b) echo "$LAB_PREFIX-b2" ;;
	*)
		echo "lab_ns: unknown lab namespace '$1'" >&2
		return 1
		;;
	esac
}

lab_ns_path() {
	_lab_n=$(lab_ns "$1") || return 1
	echo "/run/netns/$_lab_n"
}

lab_unit_privs() {
	_lab_f=$SRCDIR/packaging/systemd/$1.in
	[ -f "$_lab_f" ] || { echo "lab_unit_privs: no $_lab_f" >&2; return 1; }
	_lab_set=-all
	for _lab_c in $(sed -n 's/^CapabilityBoundingSet=//p' "$_lab_f" | tr 'A-Z' 'a-z'); do
		_lab_set="$_lab_set,+${_lab_c#cap_}"
	done
	_lab_nnp=
	grep -qx 'NoNewPrivileges=yes' "$_lab_f" && _lab_nnp=--no-new-privs
	echo "setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=$_lab_set $_lab_nnp"
}

lab_caps() {
	_lab_e=$(sed -n 's/^CapEff:[[:space:]]*//p' "/proc/$1/status") || return 1
	_lab_d=$(capsh --decode="$_lab_e" | sed 's/^[^=]*=//')
	[ -n "$_lab_d" ] || _lab_d=none
	grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$1/status" && _lab_d="$_lab_d nnp"
	echo "$_lab_d"
}

lab_in() {
	_lab_n=$(lab_ns "$1") || return 1
	echo "ip netns exec $_lab_n"
}

lab_exec() {
	_lab_n=$(lab_ns "$1") || return 1
	shift
	ip netns exec "$_lab_n" "$@"
}

# _lab_sysctl NS KEY=VALUE...: writes /proc/sys inside NS (no dependency on procps' sysctl).
_lab_sysctl() {
	_lab_n=$1
	shift
	# shellcheck disable=SC2016
	ip netns exec "$_lab_n" sh -c 'for kv; do
		f=/proc/sys/$(printf %s "${kv%%=*}" | tr . /)
		echo "${kv#*=}" >"$f" || exit 1
	done' sh "$@"
}

lab_wait_port() {
	_lab_n=$(lab_ns "$1") || return 1
	_lab_a=$2
	_lab_p=$3
	_lab_i=0
	_lab_max=$((${LAB_WAIT:-10} * 10))
	while [ "$_lab_i" -lt "$_lab_max" ]; do
		# Local address column of listening TCP sockets: 10.1.1.2:8080, [fd00:1::2]:8080,
		# 0.0.0.0:8080, [::]:8080 or *:8080 (and %dev suffixes for scoped binds).
		if ip netns exec "$_lab_n" ss -Hltn 2>/dev/null | awk -v a="$_lab_a" -v p="$_lab_p" '
			{
				l = $4
				n = split(l, parts, ":")
				port = parts[n]
				host = substr(l, 1, length(l) - length(port) - 1)
				gsub(/^\[|\]$/, "", host)
				sub(/%.*/, "", host)
				if (port != p) next
				if (a == "" || a == "*" || host == a || host == "*" || host == "0.0.0.0" || host == "::") found = 1
			}
			END { exit !found }'; then
			return 0
		fi
		sleep 0.1
		_lab_i=$((_lab_i + 1))
	done
	echo "# lab_wait_port: nothing listens on $_lab_a:$_lab_p in $_lab_n after ${LAB_WAIT:-10} s" >&2
	return 1
}

# _lab_claim: picks a fresh prefix and creates its first namespace (atomic: ip netns add
# fails if the name exists), so two runs can never pick the same prefix.
_lab_claim() {
	_lab_i=0
	while [ "$_lab_i" -lt 20 ]; do
		_lab_hex=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
		LAB_PREFIX="aml$_lab_hex"
		if ! ls /run/netns/"$LAB_PREFIX"-* >/dev/null 2>&1 &&
			ip netns add "$LAB_PREFIX-ha" 2>/dev/null; then
			return 0
		fi
		_lab_i=$((_lab_i + 1))
	done
	LAB_PREFIX=""
	echo "# lab_up: could not create a lab namespace (root? iproute2?)" >&2
	return 1
}

_lab_write_registry() {
	cat >"$LAB_REGISTRY/00-lab.conf" <<EOF || return 1
; The lab of tests/e2e/lab.sh (prefix $LAB_PREFIX). Tests add their own files next to this one.
[node "node-a"]
address = $LAB_NODE_A

[node "node-b"]
address = $LAB_NODE_B

; netns $LAB_PREFIX-a1
[workload "client-a"]
namespace = default
service_account = client
node = node-a
addresses = $LAB_A1, $LAB_A1_6
labels = app=client

; netns $LAB_PREFIX-a2
[workload "echo-a"]
namespace = default
service_account = echo
node = node-a
addresses = $LAB_A2, $LAB_A2_6
labels = app=echo, version=a

; netns $LAB_PREFIX-b1
[workload "echo-b"]
namespace = default
service_account = echo
node = node-b
addresses = $LAB_B1, $LAB_B1_6
labels = app=echo, version=b

; netns $LAB_PREFIX-b2
[workload "other-b"]
namespace = other
service_account = other
node = node-b
addresses = $LAB_B2, $LAB_B2_6
labels = app=other

[service "echo"]
namespace = default
vip = $LAB_VIP, $LAB_VIP6
ports = 80:8080
selector = app=echo

[service "other"]
namespace = other
vip = $LAB_VIP_OTHER, $LAB_VIP_OTHER6
ports = 80:8080
selector = app=other
EOF
	for _lab_x in a b; do
		mkdir -p "$LAB_DIR/node-$_lab_x/certs" "$LAB_DIR/node-$_lab_x/workloads" || return 1
		cat >"$LAB_DIR/node-$_lab_x.conf" <<EOF || return 1
; amesh.conf of host $_lab_x in the lab of tests/e2e/lab.sh (prefix $LAB_PREFIX).
[mesh]
trust_domain = cluster.local
trust_bundle = $LAB_DIR/ca/ca.crt
registry = $LAB_REGISTRY
node = node-$_lab_x

[identity]
cert_dir = $LAB_DIR/node-$_lab_x/certs

[ztunnel]
socket = $LAB_DIR/node-$_lab_x/ztunnel.sock
state_dir = $LAB_DIR/node-$_lab_x/workloads
EOF
		# AMESH_TEST_WORKERS=N runs the suite's ztunnels with N event loops ([ztunnel] workers).
		if [ -n "${AMESH_TEST_WORKERS:-}" ]; then
			echo "workers = $AMESH_TEST_WORKERS" >>"$LAB_DIR/node-$_lab_x.conf" || return 1
		fi
	done
	LAB_CONF_A=$LAB_DIR/node-a.conf
	LAB_CONF_B=$LAB_DIR/node-b.conf
}

# _lab_host H NET4 NET6 PEER_NET4 PEER_NET6 PEER_NODE4 PEER_NODE6 (NET4 as 10.1.1, NET6 as fd00:1):
# host H's forwarding, bridge with the gateway addresses, routes to the other host's workloads.
_lab_host() {
	_lab_h="$LAB_PREFIX-h$1"
	_lab_run _lab_sysctl "$_lab_h" net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
		net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || return 1
	_lab_run ip -n "$_lab_h" link add br0 type bridge forward_delay 0 stp_state 0 \
		mcast_snooping 0 || return 1
	_lab_run ip -n "$_lab_h" addr add "$2.1/24" dev br0 || return 1
	_lab_run ip -n "$_lab_h" addr add "$3::1/64" dev br0 nodad || return 1
	_lab_run ip -n "$_lab_h" link set br0 up || return 1
	_lab_run ip -n "$_lab_h" route add "$4.0/24" via "$6" dev wire || return 1
	_lab_run ip -n "$_lab_h" -6 route add "$5::/64" via "$7" dev wire || return 1
}

# _lab_workload H W ADDR4 ADDR6 GW4 GW6: workload namespace W on host H's bridge.
_lab_workload() {
	_lab_h="$LAB_PREFIX-h$1"
	_lab_w="$LAB_PREFIX-$2"
	_lab_run ip -n "$_lab_h" link add "veth-$2" type veth peer name eth0 netns "$_lab_w" || return 1
	_lab_run ip -n "$_lab_h" link set "veth-$2" master br0 up || return 1
	_lab_run ip -n "$_lab_w" addr add "$3/24" dev eth0 || return 1
	_lab_run ip -n "$_lab_w" addr add "$4/64" dev eth0 nodad || return 1
	_lab_run ip -n "$_lab_w" link set eth0 up || return 1
	_lab_run ip -n "$_lab_w" route add default via "$5" dev eth0 || return 1
	_lab_run ip -n "$_lab_w" -6 route add default via "$6" dev eth0 || return 1
	_lab_run ip -n "$_lab_w" route add 10.96.0.0/16 via "$5" dev eth0 || return 1
	_lab_run ip -n "$_lab_w" -6 route add fd00:96::/64 via "$6" dev eth0 || return 1
}

lab_up() {
	if [ -n "${LAB_PREFIX:-}" ]; then
		echo "# lab_up: a lab ($LAB_PREFIX) is already up in this shell; lab_down first" >&2
		return 1
	fi
	_lab_step=0
	LAB_DIR_CREATED=""
	if [ -n "${1:-}" ]; then
		LAB_DIR=$1
		mkdir -p "$LAB_DIR" || return 1
	else
		LAB_DIR=$(mktemp -d "${TMPDIR:-/tmp}/amesh-lab.XXXXXX") || return 1
		LAB_DIR_CREATED=1
	fi
	LAB_REGISTRY=$LAB_DIR/registry.d
	mkdir -p "$LAB_REGISTRY" || return 1
	_lab_claim || return 1
	for _lab_x in hb a1 a2 b1 b2; do
		_lab_run ip netns add "$LAB_PREFIX-$_lab_x" || return 1
	done
	for _lab_x in ha hb a1 a2 b1 b2; do
		# DAD off before any interface exists: new interfaces take the "default" values.
		_lab_run _lab_sysctl "$LAB_PREFIX-$_lab_x" net.ipv6.conf.all.accept_dad=0 \
			net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_ra=0 \
			net.ipv6.conf.default.accept_ra=0 || return 1
		_lab_run ip -n "$LAB_PREFIX-$_lab_x" link set lo up || return 1
	done
	# The wire between the hosts.
	_lab_run ip -n "$LAB_PREFIX-ha" link add wire type veth peer name wire \
		netns "$LAB_PREFIX-hb" || return 1
	_lab_run ip -n "$LAB_PREFIX-ha" addr add "$LAB_NODE_A/24" dev wire || return 1
	_lab_run ip -n "$LAB_PREFIX-ha" addr add "$LAB_NODE_A6/64" dev wire nodad || return 1
	_lab_run ip -n "$LAB_PREFIX-hb" addr add "$LAB_NODE_B/24" dev wire || return 1
	_lab_run ip -n "$LAB_PREFIX-hb" addr add "$LAB_NODE_B6/64" dev wire nodad || return 1
	_lab_run ip -n "$LAB_PREFIX-ha" link set wire up || return 1
	_lab_run ip -n "$LAB_PREFIX-hb" link set wire up || return 1
	_lab_host a 10.1.1 fd00:1 10.1.2 fd00:2 "$LAB_NODE_B" "$LAB_NODE_B6" || return 1
	_lab_host b 10.1.2 fd00:2 10.1.1 fd00:1 "$LAB_NODE_A" "$LAB_NODE_A6" || return 1
	_lab_workload a a1 "$LAB_A1" "$LAB_A1_6" 10.1.1.1 fd00:1::1 || return 1
	_lab_workload a a2 "$LAB_A2" "$LAB_A2_6" 10.1.1.1 fd00:1::1 || return 1
	_lab_workload b b1 "$LAB_B1" "$LAB_B1_6" 10.1.2.1 fd00:2::1 || return 1
	_lab_workload b b2 "$LAB_B2" "$LAB_B2_6" 10.1.2.1 fd00:2::1 || return 1
	_lab_run _lab_write_registry || return 1
	LAB_CONF_A=$LAB_DIR/node-a.conf
	LAB_CONF_B=$LAB_DIR/node-b.conf
	return 0
}

lab_certs() {
	[ -n "${LAB_DIR:-}" ] || return 1
	if [ ! -f "$LAB_DIR/ca/ca.crt" ]; then
		"$AMESH" ca init --dir "$LAB_DIR/ca" >/dev/null || return 1
	fi
	for _lab_x in a:default:client a:default:echo b:default:echo b:other:other; do
		_lab_h=${_lab_x%%:*}
		_lab_w=${_lab_x#*:}
		"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace "${_lab_w%%:*}" \
			--service-account "${_lab_w#*:}" --out "$LAB_DIR/node-$_lab_h/certs" >/dev/null ||
			return 1
	done
}

lab_waypoint() {
	[ -n "${LAB_DIR:-}" ] || return 1
	LAB_WP=192.168.10.9
	LAB_WP_CONF=$LAB_DIR/waypoint.conf
	lab_exec ha ip addr add "$LAB_WP/24" dev wire || return 1
	mkdir -p "$LAB_DIR/waypoint" || return 1
	"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace default --service-account waypoint \
		--out "$LAB_DIR/waypoint/certs" >/dev/null || return 1
	cat >"$LAB_WP_CONF" <<EOF || return 1
[mesh]
trust_bundle = $LAB_DIR/ca/ca.crt
registry = $LAB_REGISTRY
node = node-a
[identity]
cert_dir = $LAB_DIR/waypoint/certs
[waypoint]
hbone_address = $LAB_WP:15008
admin_address = 127.0.0.1:15100
metrics_address = 0.0.0.0:15120
readiness_address = 0.0.0.0:15121
EOF
	# AMESH_TEST_WP_WORKERS=N runs the suite's waypoints with N event loops ([waypoint] workers).
	if [ -n "${AMESH_TEST_WP_WORKERS:-}" ]; then
		echo "workers = $AMESH_TEST_WP_WORKERS" >>"$LAB_WP_CONF" || return 1
	fi
	cat >"$LAB_REGISTRY/39-waypoint.conf" <<EOF
[waypoint "wp"]
namespace = default
service_account = waypoint
address = $LAB_WP
node = node-a
EOF
}

lab_cap_start() {
	rm -f "$LAB_DIR/wire.pcap"
	lab_exec ha tcpdump -i wire -n -U --immediate-mode -w "$LAB_DIR/wire.pcap" tcp \
		>"$LAB_DIR/tcpdump.out" 2>&1 &
	_lab_i=0
	while ! grep -q "listening on" "$LAB_DIR/tcpdump.out" && [ $_lab_i -lt 50 ]; do
		sleep 0.1
		_lab_i=$((_lab_i + 1))
	done
}

lab_cap_stop() {
	sleep 1
	pkill -INT -f "tcpdump -i wire -n -U --immediate-mode -w $LAB_DIR/wire.pcap" 2>/dev/null
	sleep 0.5
}

lab_cap_count() { tcpdump -n -r "$LAB_DIR/wire.pcap" "$1" 2>/dev/null | wc -l; }
lab_cap_has() { grep -qa "$1" "$LAB_DIR/wire.pcap"; }

# lab_upgrade LOG PID: sends PID SIGUSR2 (the hitless upgrade) and prints the pid of the process
# it starts, read from its log line "upgrade: started ... (pid N)" in LOG, which the new process
# inherits (the old one may be gone, and its child with a new parent, before pgrep -P would see
# it). Fails after 10 s without that line.
lab_upgrade() {
	_lab_n=$(grep -c "upgrade: started" "$1")
	kill -USR2 "$2" || return 1
	_lab_i=0
	while [ $_lab_i -lt 200 ]; do
		if [ "$(grep -c "upgrade: started" "$1")" -gt "$_lab_n" ]; then
			grep "upgrade: started" "$1" | tail -n 1 | sed -n 's/.*(pid \([0-9]*\)).*/\1/p'
			return 0
		fi
		sleep 0.05
		_lab_i=$((_lab_i + 1))
	done
	return 1
}

# lab_alive PID: running, not a zombie (a replaced process that was the caller's child stays one
# until reaped; its successor is nobody's child once it has exited).
lab_alive() {
	_lab_st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1 # read once: it may go meanwhile
	[ -n "$_lab_st" ] && ! echo "$_lab_st" | sed 's/.*) //' | grep -q '^Z'
}

# lab_gone PID SECONDS: true once PID has exited, waiting up to SECONDS.
lab_gone() {
	_lab_end=$(($(date +%s) + $2)) # by the clock: on a loaded machine each turn takes longer
	while lab_alive "$1" && [ "$(date +%s)" -lt $_lab_end ]; do
		sleep 0.1
	done
	! lab_alive "$1"
}

lab_ready() {
	lab_exec "$1" "$LAB_PY" -c 'import urllib.request, sys
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:%s/healthz/ready" % sys.argv[1], timeout=1).status == 200 else 1)' \
		"${2:-15021}" 2>/dev/null
}

lab_wait_ready() {
	_lab_i=0
	while [ $_lab_i -lt 50 ] && ! lab_ready "$1" "${2:-}"; do
		sleep 0.1
		_lab_i=$((_lab_i + 1))
	done
	lab_ready "$1" "${2:-}"
}

lab_down() {
	# Only ever touch names of the form amlXXXXXX-*: an unset or odd prefix deletes nothing.
	case ${LAB_PREFIX:-} in
	aml[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
	*)
		LAB_PREFIX=""
		_lab_rmdir
		return 0
		;;
	esac
	_lab_list=$(ip netns list 2>/dev/null | awk -v p="$LAB_PREFIX-" 'index($1, p) == 1 { print $1 }')
	# Processes inside the lab (servers, proxies) keep a namespace and its links alive after
	# `ip netns del`: end them first, by pid, TERM then KILL.
	_lab_pids=""
	for _lab_n in $_lab_list; do
		_lab_pids="$_lab_pids $(ip netns pids "$_lab_n" 2>/dev/null | tr '\n' ' ')"
	done
	if [ -n "$(echo "$_lab_pids" | tr -d ' ')" ]; then
		# shellcheck disable=SC2086
		kill -TERM $_lab_pids 2>/dev/null
		_lab_i=0
		while [ "$_lab_i" -lt 20 ]; do
			_lab_alive=""
			for _lab_p in $_lab_pids; do
				kill -0 "$_lab_p" 2>/dev/null && _lab_alive="$_lab_alive $_lab_p"
			done
			[ -z "$_lab_alive" ] && break
			sleep 0.1
			_lab_i=$((_lab_i + 1))
		done
		# shellcheck disable=SC2086
		[ -n "$_lab_alive" ] && kill -KILL $_lab_alive 2>/dev/null
	fi
	# Deleting a namespace deletes its interfaces; a veth's peer goes with it.
	for _lab_n in $_lab_list; do
		ip netns del "$_lab_n" 2>/dev/null
	done
	LAB_PREFIX=""
	_lab_rmdir
	return 0
}

_lab_rmdir() {
	if [ -n "${LAB_DIR_CREATED:-}" ] && [ -n "${LAB_DIR:-}" ]; then
		rm -rf "$LAB_DIR"
	fi
	LAB_DIR_CREATED=""
}
