#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The two-host namespace lab of tests/e2e/lab.sh: every workload reaches every other one over
# IPv4 and IPv6 with its real address, VIPs leave the workload for the host, the registry it
# writes is valid, two labs coexist, and lab_down leaves nothing behind, even after a lab_up
# that failed halfway.
# check's conditions are eval'd strings: the variables they name are used there.
# shellcheck disable=SC2016,SC2034,SC2154,SC1091
if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root"
	exit 0
fi
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"
if ! command -v ip >/dev/null 2>&1 || [ ! -x "$LAB_PY" ]; then
	echo "1..0 # SKIP needs iproute2 and $LAB_PY (.ci/install-deps)"
	exit 0
fi
trap 'lab_down; cleanup' EXIT
plan 19

links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }
netns_of() { ip netns list | awk -v p="$1-" 'index($1, p) == 1 { print $1 }'; }
root_before=$(links)

# name:netns-key:IPv4:IPv6 of the four workloads
WLS="client-a:a1:$LAB_A1:$LAB_A1_6 echo-a:a2:$LAB_A2:$LAB_A2_6 echo-b:b1:$LAB_B1:$LAB_B1_6 other-b:b2:$LAB_B2:$LAB_B2_6"
field() { echo "$1" | cut -d: -f"$2"; }
# The IPv6 address holds colons: everything after the third field.
v6() { echo "$1" | cut -d: -f4-; }

lab_up "$TMP/lab" 2>"$TMP/lab_up.err" && RC=0 || RC=$?
P=$LAB_PREFIX
ERR=$(cat "$TMP/lab_up.err")
OUT=$(netns_of "$P" | sort | tr '\n' ' ')
check "lab_up builds six namespaces under a fresh prefix ($P)" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "$P-a1 $P-a2 $P-b1 $P-b2 $P-ha $P-hb " ]'
if [ "$RC" -ne 0 ]; then
	echo "Bail out! lab_up failed: $ERR"
	exit 1
fi
TOTAL_STEPS=$_lab_step

root_up=$(links)
OUT=$(ip -o addr show | grep -E '192\.168\.10\.|10\.1\.[12]\.|fd00:(1|2|10)::' || true)
check "the root namespace has no lab link and no lab address" \
	'[ "$root_up" = "$root_before" ] && [ -z "$OUT" ]'

OUT=""
for ns in ha hb a1 a2 b1 b2; do
	p=$(lab_ns_path "$ns")
	[ "$p" = "/run/netns/$(lab_ns "$ns")" ] && [ -e "$p" ] || OUT="$OUT $ns"
	for l in $(ip -n "$(lab_ns "$ns")" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
		[ ${#l} -le 15 ] || OUT="$OUT $ns:$l"
	done
done
check "lab_ns_path names /run/netns files; interface names are at most 15 characters" '[ -z "$OUT" ]'

if [ -x "$AMESH" ]; then
	run "$AMESH" check -c "$LAB_CONF_A"
	A=$OUT
	run "$AMESH" check -c "$LAB_CONF_B"
	B=$OUT
	OUT="$A
$B"
	check "amesh check accepts the registry; node-a runs client-a and echo-a, node-b echo-b and other-b" \
		'echo "$A" | grep -q "^registry  $LAB_REGISTRY: ok (files: 1)" &&
		echo "$A" | grep -q "nodes: 2, workloads: 4, services: 2," &&
		[ "$(echo "$A" | sed -n "s/^workload  \([^ ]*\) .*/\1/p" | tr "\n" " ")" = "default/client-a default/echo-a " ] &&
		[ "$(echo "$B" | sed -n "s/^workload  \([^ ]*\) .*/\1/p" | tr "\n" " ")" = "default/echo-b other/other-b " ] &&
		echo "$B" | grep -q "^node      node-b ($LAB_NODE_B)" && [ "$(echo "$B" | tail -n 1)" = ok ]'
	run lab_certs
	run "$AMESH" check -c "$LAB_CONF_B"
	check "lab_certs issues every identity the nodes need" \
		'echo "$OUT" | grep -q "spiffe://cluster.local/ns/other/sa/other (workload): present" &&
		! echo "$OUT" | grep -q "missing"'
else
	ok "# SKIP no amesh binary at $AMESH"
	ok "# SKIP no amesh binary at $AMESH"
fi

# ping between all twelve ordered pairs of workloads (same host and across the wire).
ping_all() {
	bad=""
	for s in $WLS; do
		for d in $WLS; do
			[ "$s" = "$d" ] && continue
			if [ "$1" = 4 ]; then a=$(field "$d" 3); else a=$(v6 "$d"); fi
			lab_exec "$(field "$s" 2)" ping -n -q -c 1 -W 2 "$a" >/dev/null 2>&1 ||
				bad="$bad $(field "$s" 1)->$a"
		done
	done
	OUT=$bad
}
if command -v ping >/dev/null 2>&1; then
	ping_all 4
	check "ping IPv4: all 12 workload pairs" '[ -z "$OUT" ]'
	ping_all 6
	check "ping IPv6: all 12 workload pairs" '[ -z "$OUT" ]'
	OUT=""
	lab_exec ha ping -n -q -c 1 -W 2 "$LAB_NODE_B" >/dev/null 2>&1 || OUT="$OUT v4"
	lab_exec hb ping -n -q -c 1 -W 2 "$LAB_NODE_A6" >/dev/null 2>&1 || OUT="$OUT v6"
	check "the hosts reach each other over the wire (IPv4 and IPv6)" '[ -z "$OUT" ]'
else
	ok "# SKIP ping is not installed (iputils-ping)"
	ok "# SKIP ping is not installed (iputils-ping)"
	ok "# SKIP ping is not installed (iputils-ping)"
fi

# A TCP server in every workload ([::]:8080, dual-stack); a client from every other workload.
SERVERS=""
for w in $WLS; do
	k=$(field "$w" 2)
	# shellcheck disable=SC2046
	start "srv_$k" $(lab_in "$k") "$LAB_PY" "$LAB_PEER" serve --port 8080 && SERVERS="$SERVERS $k"
done
OUT=""
for w in $WLS; do
	lab_wait_port "$(field "$w" 2)" "$(field "$w" 3)" 8080 || OUT="$OUT $(field "$w" 1)"
done
check "lab_wait_port sees the four servers" '[ "$SERVERS" = " a1 a2 b1 b2" ] && [ -z "$OUT" ]'

tcp_all() {
	bad=""
	for s in $WLS; do
		for d in $WLS; do
			[ "$s" = "$d" ] && continue
			if [ "$1" = 4 ]; then a=$(field "$d" 3) src=$(field "$s" 3); else a=$(v6 "$d") src=$(v6 "$s"); fi
			got=$(lab_exec "$(field "$s" 2)" "$LAB_PY" "$LAB_PEER" connect --addr "$a" --port 8080 \
				--msg "from-$(field "$s" 1)" 2>&1)
			case $got in
			"peer $src "[0-9]*" local $a 8080 msg from-$(field "$s" 1)") ;;
			*) bad="$bad
$(field "$s" 1) -> $a: $got" ;;
			esac
		done
	done
	OUT=$bad
}
tcp_all 4
check "TCP IPv4: all 12 pairs connect and the server sees the client's own address" '[ -z "$OUT" ]'
tcp_all 6
check "TCP IPv6: all 12 pairs connect and the server sees the client's own address" '[ -z "$OUT" ]'

# VIPs: routed to the host gateway; without interception the host has no route and refuses fast.
R4=$(lab_exec a1 ip route get "$LAB_VIP")
R6=$(lab_exec b2 ip -6 route get "$LAB_VIP6")
t0=$(date +%s)
run lab_exec a1 "$LAB_PY" "$LAB_PEER" connect --addr "$LAB_VIP" --port 80 --timeout 5
V4=$OUT
run lab_exec b2 "$LAB_PY" "$LAB_PEER" connect --addr "$LAB_VIP6" --port 80 --timeout 5
V6=$OUT
t1=$(date +%s)
OUT="$R4 / $R6 / $V4 / $V6"
check "VIP traffic leaves the workload for its host; uncaught, it fails at once (unreachable)" \
	'echo "$R4" | grep -q "via 10.1.1.1 dev eth0" && echo "$R6" | grep -q "via fd00:2::1 dev eth0" &&
	echo "$V4" | grep -Eq "^error E(NET|HOST)UNREACH" && echo "$V6" | grep -Eq "^error E(NET|HOST)UNREACH" &&
	[ $((t1 - t0)) -le 3 ]'

LAB_WAIT=1 lab_wait_port a1 "$LAB_A1" 9999 2>/dev/null && RC=0 || RC=$?
check "lab_wait_port gives up when nothing listens" '[ "$RC" -eq 1 ]'

# A second lab at the same time: its own prefix, its own traffic; its lab_down spares ours.
(
	LAB_PREFIX=""
	lab_up "$TMP/lab2" 2>&1 || exit 1
	echo "prefix $LAB_PREFIX"
	lab_exec b2 "$LAB_PY" "$LAB_PEER" serve --port 8080 >/dev/null 2>&1 &
	lab_wait_port b2 "$LAB_B2" 8080 || { lab_down; exit 2; }
	lab_exec a1 "$LAB_PY" "$LAB_PEER" connect --addr "$LAB_B2" --port 8080 --msg lab2
	lab_down
) >"$TMP/lab2.out" 2>&1 && RC=0 || RC=$?
P2=$(sed -n 's/^prefix //p' "$TMP/lab2.out")
OUT=$(cat "$TMP/lab2.out")
again=$(lab_exec a1 "$LAB_PY" "$LAB_PEER" connect --addr "$LAB_B2" --port 8080 --msg lab1)
check "a concurrent second lab ($P2) works and its lab_down leaves the first one up" \
	'[ "$RC" -eq 0 ] && [ -n "$P2" ] && [ "$P2" != "$P" ] &&
	echo "$OUT" | grep -q "^peer $LAB_A1 [0-9]* local $LAB_B2 8080 msg lab2$" &&
	[ -z "$(netns_of "$P2")" ] && [ "$(netns_of "$P" | wc -l)" -eq 6 ] &&
	echo "$again" | grep -q "msg lab1$"'

# A background command through the lab_exec function (its $! is a subshell) and the servers.
lab_exec a2 sleep 300 &
BG=$!
sleep 0.2
SLEEP=$(ip netns pids "$(lab_ns a2)" | while read -r p; do
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = sleep ] && echo "$p"
done)
lab_down
RC=$?
wait "$BG" 2>/dev/null
alive=""
for p in $PID_srv_a1 $PID_srv_a2 $PID_srv_b1 $PID_srv_b2 $SLEEP; do
	kill -0 "$p" 2>/dev/null && alive="$alive $p"
done
root_after=$(links)
OUT="left: $(netns_of "$P") alive:$alive new links: $(echo "$root_after" | grep -vxF "$root_before")"
check "lab_down: no namespace of the prefix, no new link in the root namespace, no process left" \
	'[ "$RC" -eq 0 ] && [ -z "$(netns_of "$P")" ] && [ -z "$alive" ] && [ -n "$SLEEP" ] &&
	[ -z "$(echo "$root_after" | grep -vxF "$root_before" | grep -E "^(wire|br0|veth-|eth0|$P)")" ] &&
	[ -z "$LAB_PREFIX" ]'

lab_down && RC=0 || RC=$?
check "lab_down again: nothing to do, status 0" '[ "$RC" -eq 0 ]'

(
	LAB_PREFIX=""
	unset LAB_DIR
	lab_down
) && RC=0 || RC=$?
check "lab_down before any lab_up: status 0, nothing touched" '[ "$RC" -eq 0 ]'

# Half-built labs: lab_up fails at step N inside a shell whose EXIT trap calls lab_down.
half() {
	sh -c '. "$1"; trap lab_down EXIT; LAB_FAIL_AT=$2; export LAB_FAIL_AT
		lab_up "$3" 2>/dev/null && exit 0
		echo "prefix $LAB_PREFIX built $(ip netns list | grep -c "^$LAB_PREFIX-")"
		exit 1' sh "$SRCDIR/tests/e2e/lab.sh" "$1" "$TMP/half.$1"
}
OUT=""
for n in 1 3 $((TOTAL_STEPS / 3)) $((TOTAL_STEPS / 2)) $((TOTAL_STEPS - 1)) "$TOTAL_STEPS"; do
	got=$(half "$n") && rc=0 || rc=$?
	hp=$(echo "$got" | sed -n 's/^prefix \([^ ]*\) .*/\1/p')
	OUT="$OUT
step $n of $TOTAL_STEPS: rc $rc, $got, left: $(netns_of "$hp" | tr '\n' ' ')"
	if [ "$rc" -ne 1 ] || [ -z "$hp" ] || [ -n "$(netns_of "$hp")" ]; then
		OUT="$OUT <- FAILED"
	fi
done
check "lab_up failing halfway (6 points; up to 6 namespaces built) is undone by lab_down in a trap" \
	'! echo "$OUT" | grep -q FAILED && echo "$OUT" | grep -q "built 6"'
root_end=$(links)
OUT=$(echo "$root_end" | grep -vxF "$root_before")
check "after all that, no new link in the root namespace" \
	'[ -z "$(echo "$OUT" | grep -E "^(wire|br0|veth-|eth0|aml)")" ]'

tap_done
