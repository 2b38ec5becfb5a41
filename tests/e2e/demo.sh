#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The quick-start demo (`make demo`): two hosts and four workloads in network namespaces (the lab
# of tests/e2e/lab.sh), a CA service (`amesh ca serve`) that both hosts join with single-use tokens,
# one `amesh ztunnel` per host that makes each workload's key and obtains its certificate,
# enrollment with `amesh cni add`, then the evidence, one headed section each: requests across
# hosts by workload address and by service VIP, the client's address as the server sees it, the
# wire between the hosts (TLS on 15008 only), metrics moving, a request refused by an L4 policy,
# the admin /config_dump. Then it removes everything it made.
#
#   sh tests/e2e/demo.sh            run the demo and clean up (as root)
#   sh tests/e2e/demo.sh --keep     leave the lab running; prints the command that removes it
#   sh tests/e2e/demo.sh --down DIR remove a lab left by --keep (DIR, or the lab's prefix
#                                   amlXXXXXX, as printed by --keep)
#
# Environment: AMESH (the binary; default: ./amesh, else SRCDIR/amesh), SRCDIR (the source tree;
# default: two levels above this script), DEMO_DIR_BASE (where the lab directory is made;
# default: ${TMPDIR:-/tmp}).
# Every wait is bounded and every step checked: the script exits 1 at the first step that fails,
# and cleans up on failure, on Ctrl-C and on SIGTERM. POSIX sh; needs root, iproute2, tcpdump and
# /usr/bin/python3 (.ci/install-deps installs them).
# shellcheck disable=SC2317 # functions called through traps and wait_for

me=${0##*/}
if [ -z "${SRCDIR:-}" ]; then
	SRCDIR=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
fi
if [ -z "${AMESH:-}" ]; then
	if [ -x ./amesh ]; then AMESH=$(pwd)/amesh; else AMESH=$SRCDIR/amesh; fi
fi
export SRCDIR AMESH

usage() {
	cat <<EOF
usage: sh tests/e2e/demo.sh [--keep]
       sh tests/e2e/demo.sh --down DIR|PREFIX
Runs the amesh quick-start demo in network namespaces (needs root), then removes it.
  --keep      leave the lab running and print the command that removes it
  --down DIR|PREFIX
              remove a lab left running by --keep (its directory or its prefix)
Environment: AMESH=path/to/amesh SRCDIR=path/to/source (make demo sets both).
EOF
}

KEEP=""
DOWN=""
while [ $# -gt 0 ]; do
	case $1 in
	--keep) KEEP=1 ;;
	--down)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		DOWN=$2
		shift
		;;
	-h | --help) usage; exit 0 ;;
	*) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$(id -u)" -ne 0 ]; then
	cat >&2 <<EOF
$me: the demo needs root: it creates network namespaces, veth links and nftables rules.
Run it as root, from the build directory:
    sudo make demo
or directly:
    sudo AMESH=$AMESH SRCDIR=$SRCDIR sh $SRCDIR/tests/e2e/demo.sh
EOF
	exit 1
fi

. "$SRCDIR/tests/e2e/lab.sh"

# --down DIR|PREFIX: the lab's prefix is in DIR/prefix; lab_down only ever touches amlXXXXXX-*.
if [ -n "$DOWN" ]; then
	case $DOWN in
	aml[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f])
		LAB_PREFIX=$DOWN
		DOWN=""
		for d in "${DEMO_DIR_BASE:-${TMPDIR:-/tmp}}"/amesh-demo.*; do
			[ "$(cat "$d/prefix" 2>/dev/null)" = "$LAB_PREFIX" ] && DOWN=$d
		done
		;;
	*/amesh-demo.*)
		if [ ! -f "$DOWN/prefix" ]; then
			echo "$me: --down: $DOWN/prefix not found: not a lab kept by --keep, or removed already" >&2
			exit 1
		fi
		LAB_PREFIX=$(cat "$DOWN/prefix")
		;;
	*)
		echo "$me: --down: '$DOWN' is neither a demo directory (.../amesh-demo.XXXXXX) nor a lab prefix (amlXXXXXX)" >&2
		exit 2
		;;
	esac
	echo "removing lab $LAB_PREFIX${DOWN:+ ($DOWN)}"
	lab_down
	[ -n "$DOWN" ] && rm -rf "$DOWN"
	if ip netns list 2>/dev/null | grep -q "^$LAB_PREFIX-"; then
		echo "$me: --down: some namespaces of $LAB_PREFIX are still there" >&2
		exit 1
	fi
	echo "removed"
	exit 0
fi

missing=""
for t in ip tcpdump timeout; do
	command -v $t >/dev/null 2>&1 || missing="$missing $t"
done
[ -x /usr/bin/python3 ] || missing="$missing /usr/bin/python3"
if [ -n "$missing" ]; then
	echo "$me: missing:$missing (apt-get install iproute2 tcpdump python3, or .ci/install-deps)" >&2
	exit 1
fi
if [ ! -x "$AMESH" ]; then
	echo "$me: $AMESH is not an executable; build first (make), or set AMESH" >&2
	exit 1
fi

PY=$LAB_PY
DIR=""
OK=""
STOPPED=""
STEP="starting"

say() { printf '%s\n' "$*"; }
section() {
	STEP=$1
	printf '\n==> %s\n' "$1"
}
die() {
	say "demo: FAILED: $STEP: $*" >&2
	exit 1
}

# The shell's own pid, to tell it from its subshells ($$ is the same in both).
MAINPID=$(exec sh -c 'echo $PPID')

# Shows the end of the ztunnels' logs (on failure), then removes the lab and its directory.
# Only the main shell does it: a subshell that a signal catches before it resets its traps
# must not remove the lab under the running demo.
cleanup() {
	trap '' INT TERM
	[ "$(exec sh -c 'echo $PPID')" = "$MAINPID" ] || return
	if [ -z "$OK" ] && [ -z "$STOPPED" ] && [ -n "$DIR" ]; then
		for h in a b; do
			if [ -s "$DIR/ztunnel-$h.log" ]; then
				say "--- last lines of ztunnel on host $h ($DIR/ztunnel-$h.log):" >&2
				tail -n 15 "$DIR/ztunnel-$h.log" >&2
			fi
		done
	fi
	if [ -n "$OK" ] && [ -n "$KEEP" ]; then
		return
	fi
	lab_down
	[ -n "$DIR" ] && rm -rf "$DIR"
	[ -z "$OK" ] && say "demo: the lab is removed" >&2
}
trap cleanup EXIT
trap 'STOPPED=1; say "demo: interrupted" >&2; exit 130' INT
trap 'STOPPED=1; say "demo: terminated" >&2; exit 143' TERM

# http HOST URL [METHOD]: an HTTP request from inside host namespace HOST; prints the body.
http() {
	timeout 10 ip netns exec "$(lab_ns "h$1")" $PY -c 'import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
sys.stdout.write(urllib.request.urlopen(req, timeout=3).read().decode())' "$2" "${3:-GET}"
}
metrics() { http "$1" http://127.0.0.1:15020/metrics; }

# conn FROM ADDR PORT [MSG]: one connection from workload FROM; prints the server's answer line
# ("peer IP PORT local IP PORT msg MSG") or "error ...", and fails when there was no answer.
conn() {
	timeout 15 ip netns exec "$(lab_ns "$1")" $PY "$LAB_PEER" connect --addr "$2" --port "$3" \
		--msg "${4:-hello}" --timeout 5
}

# wait_for SECONDS CMD...: runs CMD every 0.1 s until it succeeds or SECONDS have passed.
wait_for() {
	_end=$(($(date +%s) + $1))
	shift
	while :; do
		"$@" >/dev/null 2>&1 && return 0
		[ "$(date +%s)" -lt "$_end" ] || return 1
		sleep 0.1
	done
}

# exited PID: the process has ended (gone, or a zombie not yet reaped by wait).
exited() {
	[ ! -e "/proc/$1" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# ready H PID: the ztunnel of host H answers 200 on /healthz/ready. It "succeeds" when the
# process is gone too, so that waiting for it ends at once; the caller tells the two apart.
ready() {
	kill -0 "$2" 2>/dev/null || return 0
	http "$1" http://127.0.0.1:15021/healthz/ready
}

t_start=$(date +%s)

section "Lab: two hosts, four workloads (network namespaces)"
DIR=$(mktemp -d "${DEMO_DIR_BASE:-${TMPDIR:-/tmp}}/amesh-demo.XXXXXX") || die "mktemp"
lab_up "$DIR" || die "lab_up failed"
echo "$LAB_PREFIX" >"$DIR/prefix" || die "cannot write $DIR/prefix"
cat <<EOF
  host A: netns $LAB_PREFIX-ha, node-a, wire $LAB_NODE_A
    client-a  $LAB_A1  (netns $LAB_PREFIX-a1, default/client)
    echo-a    $LAB_A2  (netns $LAB_PREFIX-a2, default/echo)
  host B: netns $LAB_PREFIX-hb, node-b, wire $LAB_NODE_B
    echo-b    $LAB_B1  (netns $LAB_PREFIX-b1, default/echo)
    other-b   $LAB_B2  (netns $LAB_PREFIX-b2, other/other)
  service echo: VIP $LAB_VIP:80 -> echo-a, echo-b port 8080
  registry: $LAB_REGISTRY/00-lab.conf; host configs: $LAB_CONF_A, $LAB_CONF_B
EOF
# Every workload runs a small TCP server on 8080 that answers with both ends' addresses.
for w in a1 a2 b1 b2; do
	ip netns exec "$(lab_ns $w)" $PY "$LAB_PEER" serve --port 8080 \
		>"$DIR/server-$w.log" 2>&1 </dev/null &
done
for w in a1 a2 b1 b2; do
	wait_for 10 grep -q '^listening' "$DIR/server-$w.log" ||
		die "the test server in $(lab_ns $w) did not start: $(cat "$DIR/server-$w.log")"
done

section "Identities: a CA service, two nodes join, keys made where they are used (amesh ca)"
# The CA host's address is on host A's side of the wire; its files are apart from the nodes'.
CA_ADDR=192.168.10.20
ip -n "$(lab_ns ha)" addr add "$CA_ADDR/24" dev wire || die "cannot add $CA_ADDR"
out=$(timeout 20 "$AMESH" ca init --dir "$DIR/ca-host/root") || die "amesh ca init: $out"
fpr=$(printf '%s\n' "$out" | sed -n 's/^fingerprint //p')
say "CA host: the root (kept offline): $(printf '%s\n' "$out" | head -n 1 | sed 's/^created //')"
out=$(timeout 20 "$AMESH" ca intermediate --root-dir "$DIR/ca-host/root" --dir "$DIR/ca-host/ca" \
	--name demo-ca) || die "amesh ca intermediate: $out"
say "CA host: the intermediate it signs with: $DIR/ca-host/ca"
cat >"$DIR/ca-host/amesh.conf" <<EOF || die "cannot write the CA's config"
[mesh]
registry = $LAB_REGISTRY
[ca]
dir = $DIR/ca-host/ca
address = $CA_ADDR:15012
admin_address = 127.0.0.1:15110
metrics_address = 0.0.0.0:15114
readiness_address = 0.0.0.0:15113
EOF
ip netns exec "$(lab_ns ha)" "$AMESH" ca serve -c "$DIR/ca-host/amesh.conf" \
	>"$DIR/ca.out" 2>"$DIR/ca.log" </dev/null &
ca_pid=$!
ca_ready() { http a http://127.0.0.1:15113/healthz/ready >/dev/null 2>&1; }
wait_for 10 ca_ready || die "amesh ca serve is not ready after 10 s: $(cat "$DIR/ca.log")"
say "CA host: amesh ca serve on $CA_ADDR:15012 (pid $ca_pid, log $DIR/ca.log)"
for h in a b; do
	conf=$DIR/node-$h.conf
	# The host's amesh.conf learns where the CA is; its bundle and node certificate come by joining.
	sed -i -e "s|^trust_bundle = .*|trust_bundle = $DIR/node-$h/bundle.crt|" \
		-e "s|^cert_dir = .*|&\\
ca_address = $CA_ADDR:15012\\
node_cert = $DIR/node-$h/node/node.crt\\
node_key = $DIR/node-$h/node/node.key|" "$conf" || die "cannot edit $conf"
	tok=$(timeout 20 "$AMESH" ca token -c "$DIR/ca-host/amesh.conf" --node "node-$h" 2>/dev/null) ||
		die "amesh ca token --node node-$h"
	say "CA host: amesh ca token --node node-$h (single use, valid 1h)"
	out=$(printf '%s\n' "$tok" | timeout 20 ip netns exec "$(lab_ns "h$h")" "$AMESH" -c "$conf" \
		ca join --token-file - --ca-fingerprint "$fpr" 2>&1) || die "amesh ca join on host $h: $out"
	say "host $h: amesh ca join: $(printf '%s\n' "$out" | grep '^joined')"
done

section "ztunnels: one amesh ztunnel per host"
for h in a b; do
	conf=$DIR/node-$h.conf
	ip netns exec "$(lab_ns "h$h")" "$AMESH" ztunnel -c "$conf" \
		>"$DIR/ztunnel-$h.out" 2>"$DIR/ztunnel-$h.log" </dev/null &
	if [ "$h" = a ]; then zt_a=$!; else zt_b=$!; fi
	say "host $h: amesh ztunnel -c $conf  (pid $!, log $DIR/ztunnel-$h.log)"
done
for h in a b; do
	if [ "$h" = a ]; then pid=$zt_a; else pid=$zt_b; fi
	wait_for 10 ready "$h" "$pid"
	kill -0 "$pid" 2>/dev/null || die "ztunnel on host $h exited"
	ready "$h" "$pid" >/dev/null 2>&1 || die "ztunnel on host $h is not ready after 10 s"
	say "host $h: GET :15021/healthz/ready -> $(http "$h" http://127.0.0.1:15021/healthz/ready)"
done

section "Enrollment: amesh cni add (nftables rules + hand-off to the ztunnel)"
for x in a:a1:client-a a:a2:echo-a b:b1:echo-b b:b2:other-b; do
	h=${x%%:*}
	w=${x#*:}
	out=$(timeout 20 ip netns exec "$(lab_ns "h$h")" "$AMESH" -c "$DIR/node-$h.conf" cni add \
		--netns "$(lab_ns_path "${w%%:*}")" --workload "${w#*:}" 2>&1) ||
		die "amesh cni add ${w#*:}: $out"
	say "host $h: $out"
done
say "host a: the certificates its ztunnel obtained from the CA (keys made on host a, mode 0600):"
for f in "$DIR"/node-a/certs/*/*.crt; do
	say "    $f: $("$AMESH" ca show "$f" | sed -n 's/^spiffe id *//p' | head -n 1)," \
		"key mode $(stat -c %a "${f%.crt}.key")"
done
say "host a: amesh cni list:"
timeout 10 ip netns exec "$(lab_ns ha)" "$AMESH" -c "$DIR/node-a.conf" cni list | sed 's/^/    /'

section "Traffic across hosts by workload address (client-a -> echo-b $LAB_B1:8080)"
out=$(conn a1 "$LAB_B1" 8080 hello-from-client-a) || die "client-a -> echo-b: $out"
say "echo-b answered: $out"
case $out in
*"local $LAB_B1 8080 msg hello-from-client-a") ;;
*) die "unexpected answer: $out" ;;
esac
wait_for 5 grep -q 'dst.workload=echo-b' "$DIR/ztunnel-a.log" ||
	die "no access log line for the connection on host A"
say "access log of host A's ztunnel:"
grep 'dst.workload=echo-b' "$DIR/ztunnel-a.log" | tail -n 1 | sed 's/^/    /'

section "Traffic by service VIP (client-a -> echo $LAB_VIP:80, 10 connections)"
n_a=0
n_b=0
i=0
while [ $i -lt 10 ]; do
	out=$(conn a1 "$LAB_VIP" 80 "vip-$i") || die "client-a -> $LAB_VIP:80: $out"
	case $out in
	*"local $LAB_A2 8080 "*) n_a=$((n_a + 1)) ;;
	*"local $LAB_B1 8080 "*) n_b=$((n_b + 1)) ;;
	*) die "unexpected answer: $out" ;;
	esac
	i=$((i + 1))
done
say "answered by echo-a ($LAB_A2:8080, host A): $n_a"
say "answered by echo-b ($LAB_B1:8080, host B): $n_b"
if [ "$n_a" -eq 0 ] || [ "$n_b" -eq 0 ]; then
	die "not both endpoints answered (echo-a $n_a, echo-b $n_b)"
fi

section "Source address seen by the server"
out=$(conn a1 "$LAB_B1" 8080 who-am-i) || die "client-a -> echo-b: $out"
peer=$(printf '%s\n' "$out" | awk '{ print $2 }')
say "client-a ($LAB_A1) -> echo-b: the server's accepted socket has peer $peer"
[ "$peer" = "$LAB_A1" ] || die "echo-b saw $peer, not client-a's address $LAB_A1"
say "(the tunnel between the hosts is HBONE; the ztunnel on host B delivers the connection"
say " from client-a's own address, not its own)"

section "The wire between the hosts: only TLS on port 15008, no plaintext"
MARK="amesh-demo-marker-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
ip netns exec "$(lab_ns ha)" tcpdump -i wire -n -U --immediate-mode -w "$DIR/wire.pcap" tcp \
	>"$DIR/tcpdump.log" 2>&1 </dev/null &
tcpdump_pid=$!
wait_for 10 grep -q 'listening on' "$DIR/tcpdump.log" ||
	die "tcpdump did not start: $(cat "$DIR/tcpdump.log")"
# A pair that has not talked yet, so the capture holds a whole TLS connection, handshake included.
out=$(conn a1 "$LAB_B2" 8080 "$MARK") || die "client-a -> other-b: $out"
sleep 0.5
kill -INT "$tcpdump_pid" 2>/dev/null
i=0
while kill -0 "$tcpdump_pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "$tcpdump_pid" 2>/dev/null
wait "$tcpdump_pid" 2>/dev/null
say "client-a sent \"$MARK\" in the clear to other-b ($LAB_B2:8080);"
say "other-b answered: $out"
say "tcpdump -i wire on host A (first packets):"
timeout 10 tcpdump -n -r "$DIR/wire.pcap" 2>/dev/null | head -n 4 | cut -c 1-120 | sed 's/^/    /'
hbone=$(timeout 10 tcpdump -n -r "$DIR/wire.pcap" 'tcp port 15008' 2>/dev/null | wc -l)
other=$(timeout 10 tcpdump -n -r "$DIR/wire.pcap" 'not tcp port 15008' 2>/dev/null | wc -l)
# The TLS records of each direction, read from the capture (classic pcap, Ethernet, IPv4/IPv6).
tls=$(timeout 10 $PY - "$DIR/wire.pcap" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
le = data[:4] == b"\xd4\xc3\xb2\xa1"
e = "<" if le else ">"
off, streams = 24, {}
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    eth = struct.unpack(">H", pkt[12:14])[0]
    if eth == 0x0800:
        ihl = (pkt[14] & 15) * 4
        ip, proto, l4 = pkt[14:], pkt[23], 14 + ihl
        src, dst = ip[12:16], ip[16:20]
    elif eth == 0x86DD:
        ip, proto, l4 = pkt[14:], pkt[20], 54
        src, dst = ip[8:24], ip[24:40]
    else:
        continue
    if proto != 6:
        continue
    sport, dport, seq = struct.unpack(">HHI", pkt[l4:l4 + 8])
    payload = pkt[l4 + (pkt[l4 + 12] >> 4) * 4:]
    if payload:
        streams.setdefault((src, sport, dst, dport), {})[seq] = payload
names = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
counts, bad = {}, 0
for key, segs in streams.items():
    buf = b"".join(segs[s] for s in sorted(segs))
    i = 0
    while i + 5 <= len(buf):
        t, ver, ln = buf[i], buf[i + 1:i + 3], struct.unpack(">H", buf[i + 3:i + 5])[0]
        if t not in names or ver not in (b"\x03\x01", b"\x03\x03"):
            bad += 1
            break
        counts[names[t]] = counts.get(names[t], 0) + 1
        i += 5 + ln
print("TLS records: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())) +
      "; streams not TLS: %d" % bad)
EOF
) || die "cannot read the capture: $tls"
say "packets to or from port 15008: $hbone; any other TCP: $other"
say "$tls"
if grep -qa "$MARK" "$DIR/wire.pcap"; then marker=found; else marker="not found"; fi
say "the marker in the capture: $marker"
[ "$hbone" -gt 0 ] || die "the capture holds no HBONE packet (it missed the traffic)"
[ "$other" -eq 0 ] || die "$other packets on the wire are not HBONE"
[ "$marker" = "not found" ] || die "the plaintext marker is on the wire"
case $tls in
*"handshake "*"streams not TLS: 0") ;;
*) die "the capture is not all TLS: $tls" ;;
esac

section "Metrics on :15020 moving (host B, client-a -> echo-b)"
# The four istio_tcp_* counters of the series reporter=destination, client-a -> echo-b.
series() {
	metrics b | grep '^istio_tcp_' | grep 'reporter="destination"' |
		grep 'source_workload="client-a"' | grep 'destination_workload="echo-b"' |
		grep 'response_flags="-"'
}
value() { # value METRIC: that counter summed over the matching series in $snap (connections
	# by address and by service VIP are separate series: destination_service differs)
	printf '%s\n' "$snap" | awk -v m="$1" 'index($0, m "{") == 1 { s += $NF } END { print s + 0 }'
}
snap=$(series) || die "GET :15020/metrics on host B"
say "one series in full:"
printf '%s\n' "$snap" | grep '^istio_tcp_connections_opened_total' | sed 's/^/    /'
before_o=$(value istio_tcp_connections_opened_total)
before_c=$(value istio_tcp_connections_closed_total)
before_r=$(value istio_tcp_received_bytes_total)
before_s=$(value istio_tcp_sent_bytes_total)
i=0
while [ $i -lt 5 ]; do
	out=$(conn a1 "$LAB_B1" 8080 "metrics-$i") || die "client-a -> echo-b: $out"
	i=$((i + 1))
done
# A connection is counted closed once both of its ends are: give the last one a moment.
closed_after() { snap=$(series) && [ "$(value istio_tcp_connections_closed_total)" -ge $((before_c + 5)) ]; }
wait_for 5 closed_after || die "the closed-connection counter did not move"
snap=$(series)
printf '%-40s %8s %8s\n' "" before after
for m in connections_opened_total:$before_o connections_closed_total:$before_c \
	received_bytes_total:$before_r sent_bytes_total:$before_s; do
	printf '%-40s %8s %8s\n' "istio_tcp_${m%%:*}" "${m#*:}" "$(value "istio_tcp_${m%%:*}")"
done
[ "$(value istio_tcp_connections_opened_total)" -ge $((before_o + 5)) ] ||
	die "istio_tcp_connections_opened_total did not move by 5"
[ "$(value istio_tcp_received_bytes_total)" -gt "$before_r" ] ||
	die "istio_tcp_received_bytes_total did not move"

section "L4 policy: echo-b admits only client-a's identity"
reloads() { grep -c 'reloaded' "$DIR/ztunnel-b.log"; }
reloads_before=$(reloads)
reloaded() { [ "$(reloads)" -gt "$reloads_before" ]; }
cat >"$LAB_REGISTRY/50-demo-policy.conf" <<'EOF' || die "cannot write the policy"
[policy "echo-b-from-client"]
namespace = default
selector = version=b
action = allow
from.principals = cluster.local/ns/default/sa/client
EOF
say "added $LAB_REGISTRY/50-demo-policy.conf:"
sed 's/^/    /' "$LAB_REGISTRY/50-demo-policy.conf"
# Both ztunnels watch the registry directory and reload it on a change; host B's enforces it.
wait_for 10 reloaded || die "host B's ztunnel did not reload the registry"
say "host B: $(grep 'reloaded' "$DIR/ztunnel-b.log" | tail -n 1 | sed 's/^[^ ]* //')"
out=$(conn a2 "$LAB_B1" 8080 from-echo-a) && die "echo-a -> echo-b was not refused: $out"
say "echo-a (spiffe://cluster.local/ns/default/sa/echo) -> echo-b: $out"
out=$(conn a1 "$LAB_B1" 8080 from-client-a) || die "client-a -> echo-b refused: $out"
say "client-a (spiffe://cluster.local/ns/default/sa/client) -> echo-b: $out"
wait_for 5 grep -q 'denied spiffe://cluster.local/ns/default/sa/echo' "$DIR/ztunnel-b.log" ||
	die "host B's ztunnel did not log the denial"
say "host B's log: $(grep 'denied spiffe' "$DIR/ztunnel-b.log" | tail -n 1 | sed 's/^[^ ]* //')"
deny=$(metrics b | grep '^istio_tcp_connections_opened_total{' | grep 'response_flags="DENY"' |
	grep 'source_workload="echo-a"')
[ -n "$deny" ] || die "no istio_tcp_connections_opened_total series with response_flags=\"DENY\""
say "host B's metrics:"
printf '%s\n' "$deny" | sed 's/^/    /'

section "Admin: GET 127.0.0.1:15000/config_dump (host A, summary)"
dump=$(http a http://127.0.0.1:15000/config_dump) || die "GET /config_dump on host A"
printf '%s\n' "$dump" | timeout 10 $PY -c 'import json, sys
d = json.load(sys.stdin)
r = d["registry"]
print("role %s, node %s, trust domain %s" % (d["role"], d["node"], d["trust_domain"]))
print("registry %s: %d files, %d nodes, %d workloads, %d services, %d policies" % (
    r["directory"], r["files"], r["nodes"], r["workloads"], r["services"], r["policies"]))
for w in d["enrolled"]:
    print("enrolled %-9s %s  %s  connections %d, pool connections %d" % (
        w["name"], w["netns"], w["identity"], w["connections"], w["pool"]["connections"]))
for i in d["identities"]:
    print("identity %s  valid until %s" % (i["spiffe_id"], i["not_after"]))
s = d["stats"]
print("stats: " + ", ".join("%s %d" % (k, s[k]) for k in sorted(s)))' || die "cannot read /config_dump"
case $dump in
*"PRIVATE KEY"*) die "/config_dump shows key material" ;;
esac

if [ -z "$KEEP" ]; then
	section "Stop: SIGTERM drains each ztunnel (GOAWAY, up to drain_timeout), then it exits"
	t0=$(date +%s%N)
	kill -TERM "$zt_a" "$zt_b" 2>/dev/null
	for h in a b; do
		if [ "$h" = a ]; then pid=$zt_a; else pid=$zt_b; fi
		# Bounded: drain_timeout is 5 s; a ztunnel still there after 10 s is killed.
		wait_for 10 exited "$pid" || kill -KILL "$pid" 2>/dev/null
		wait "$pid"
		rc=$?
		say "host $h: exit status $rc, $((($(date +%s%N) - t0) / 1000000)) ms after the signal;" \
			"its log:"
		grep -E 'ztunnel: (stopping|drain|drained)' "$DIR/ztunnel-$h.log" |
			sed 's/^[^ ]* /    /'
		[ "$rc" -eq 0 ] || die "ztunnel on host $h exited with status $rc"
	done
fi

OK=1
section "Done in $(($(date +%s) - t_start)) s"
if [ -n "$KEEP" ]; then
	say "The lab is still running (prefix $LAB_PREFIX, directory $DIR):"
	say "  ip netns exec $LAB_PREFIX-a1 /usr/bin/python3 $LAB_PEER connect --addr $LAB_VIP --port 80"
	say "  ip netns exec $LAB_PREFIX-ha /usr/bin/python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:15020/metrics\").read().decode())'"
	say "Remove it with:"
	say "  sh $SRCDIR/tests/e2e/demo.sh --down $DIR"
	say "(or --down $LAB_PREFIX)"
else
	say "Removing the lab."
fi
exit 0
