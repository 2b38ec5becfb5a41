#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read through ${!name}, set through printf -v
#
# Reload benchmark (issue 18, "bench"): failed requests and p99 latency in a window during which
# the proxies are replaced by the hitless upgrade (SIGUSR2: the new process takes the listeners,
# the old one stops accepting and drains), beside the same window without one. Two-host lab of
# tests/e2e/lab.sh, as bench/l4 and bench/l7 run it:
#   l4  client-a -> echo-b:8080: ztunnel A -> HBONE -> ztunnel B; in a reload window ztunnel A
#       is replaced at 30% of the window and ztunnel B one second later;
#   l7  client-a -> service "l7" (VIP 10.96.0.20) whose registry entry names the waypoint on
#       host A: ztunnel A -> waypoint -> ztunnel B; the waypoint is replaced at 30%.
# Each path runs with two kinds of connections from bench/loadgen at a fixed rate (open loop,
# latency from the scheduled time, so a stall anywhere counts):
#   keep  4 keep-alive connections (those opened before the reload stay with the old process
#         until they close: its drain);
#   new   --close: a new connection for every request, so most requests go through the listener
#         hand-over and the new process's accept.
# Quiet and reload windows alternate (their order swaps every round) so that the machine's other
# load falls on both alike. Reported for each path and kind: requests, failed requests, the p99
# of each window, and the median p99 of reload windows over that of quiet ones. Goals: 0 failed,
# p99 within 2x. After each reload the old processes must have exited (drained) before the
# next window starts; a window whose reload did not start a new process fails the run.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-r RATE] [-c CONNS] [-R ROUNDS] [-d SECS] [-w SECS]
#               [-m l4,l7] [-k keep,new]
#   -B  the build tree with amesh and bench/loadgen (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/reload/RESULTS.md in the source tree; -: none)
#   -r  requests per second (default 1000)
#   -c  connections of loadgen (default 4)
#   -R  rounds, each a quiet and a reload window per path and kind (default 2)
#   -d  measured seconds per window (default 10), after -w seconds of warm-up (default 1)
#   -m  the paths (default l4,l7)
#   -k  the kinds of connections (default keep,new)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=reload-bench
OUTFILE=$SRC/bench/reload/RESULTS.md
CMDLINE="bench/reload/run.sh $*"
BUILD=${BUILDDIR:-$SRC}
RATE=1000 CONNS=4 ROUNDS=2 DUR=10 WARM=1 MODES=l4,l7 KINDS=keep,new
while getopts "B:o:r:c:R:d:w:m:k:h" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	r) RATE=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	R) ROUNDS=$OPTARG ;;
	d) DUR=$OPTARG ;;
	w) WARM=$OPTARG ;;
	m) MODES=$OPTARG ;;
	k) KINDS=$OPTARG ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2
AMESH=$BUILD/amesh
LOADGEN=$BUILD/bench/loadgen
for f in "$AMESH" "$LOADGEN"; do
	[ -x "$f" ] || { echo "$NAME: $f is not built (make amesh bench/loadgen)" >&2; exit 1; }
done
IFS=, read -r -a PATHS <<<"$MODES"
IFS=, read -r -a CKINDS <<<"$KINDS"
# Every window, plus the waits for the drains, bounded.
LIMIT=$((ROUNDS * ${#PATHS[@]} * ${#CKINDS[@]} * 2 * (DUR + WARM + 25) + 120))
PY=/usr/bin/python3
PORT=8080
VIP=10.96.0.20
# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
command -v nft >/dev/null || die "nft is not installed"

log "lab: two hosts, identities from amesh ca, ztunnels, a waypoint on host A"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
lab_waypoint || die "cannot set up the waypoint's address, identity and configuration"
cat >"$LAB_REGISTRY/40-l7.conf" <<EOF
[service "l7"]
namespace = default
vip = $VIP
ports = 80:$PORT
selector = version=b
waypoint = wp

[route "l7"]
namespace = default
service = l7
backends = echo-b
request_headers.set = x-bench: reload
EOF
# Access logs off (the bench measures the data path); drains long enough for any window.
# (lab.sh's confs end in their [ztunnel] and [waypoint] sections.)
for c in "$LAB_CONF_A" "$LAB_CONF_B" "$LAB_WP_CONF"; do
	printf 'drain_timeout = 60s\n[log]\naccess_log = off\n' >>"$c"
done
# A new connection per request at RATE for every window: tens of thousands of TIME_WAIT
# entries in the namespaces that connect (client, ztunnels, waypoint). Widen the port range
# and let connect() reuse them, as a busy host would.
for ns in a1 a2 b1 b2 ha hb; do
	lab_exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" \
		net.ipv4.tcp_tw_reuse=1 >/dev/null 2>&1
done
bg http_b1 b1 "$LOADGEN" --serve "0.0.0.0:$PORT" --size 1024
wait_port b1 "$PORT" http_b1
bg zt_a ha "$AMESH" ztunnel -c "$LAB_CONF_A"
bg zt_b hb "$AMESH" ztunnel -c "$LAB_CONF_B"
bg wp ha "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
wait_ready ha 15021 zt_a
wait_ready hb 15021 zt_b
wait_ready ha 15121 wp
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a \
	>/dev/null 2>&1 || die "enrolling client-a failed"
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b \
	>/dev/null 2>&1 || die "enrolling echo-b failed"
probe() { lab_exec a1 "$PY" -c 'import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=3)
c.request("GET", "/")
sys.exit(0 if c.getresponse().status == 200 else 1)' "$1" "$2"; }
probe "$LAB_B1" "$PORT" || die "no answer through the mesh"
probe "$VIP" 80 || die "no answer through the waypoint"

# The processes now serving; an upgrade replaces them (the new ones are not our children).
CUR_zt_a=$PID_zt_a CUR_zt_b=$PID_zt_b CUR_wp=$PID_wp
URL_l4="http://$LAB_B1:$PORT/"
URL_l7="http://$VIP/"
TARGETS_l4="zt_a zt_b"
TARGETS_l7="wp"
UPGRADES=0

# upgrade NAME: SIGUSR2 to the process now serving as NAME (lab_upgrade); CUR_NAME becomes the
# new one.
upgrade() {
	local cur=CUR_$1 new
	new=$(lab_upgrade "$TMP/$1.err" "${!cur}") ||
		die "$1: no new process 10 s after SIGUSR2: $(tail -n 3 "$TMP/$1.err")"
	OLD+=("${!cur}")
	printf -v "$cur" %s "$new"
	UPGRADES=$((UPGRADES + 1))
}
# drained: the replaced processes have all exited (they drain their connections first); the
# first ones are this shell's children (zombies until reaped), the later ones init's.
drained() {
	local p
	for p in "${OLD[@]}"; do
		lab_gone "$p" 30 || die "the replaced process $p has not exited 30 s after its window"
		wait "$p" 2>/dev/null
	done
	OLD=()
}

# window PATH KIND ROUND quiet|reload: one loadgen run; its output goes to lg.PATH.KIND.TYPE.ROUND.
window() {
	local path=$1 kind=$2 round=$3 type=$4 url=URL_$1 targets=TARGETS_$1 out t lg extra=()
	out=$TMP/lg.$path.$kind.$type.$round
	[ "$kind" = new ] && extra=(--close)
	OLD=()
	lab_exec a1 "$LOADGEN" --url "${!url}" --rate "$RATE" --duration "$DUR" --warmup "$WARM" \
		--connections "$CONNS" "${extra[@]}" >"$out" 2>"$out.err" &
	lg=$!
	if [ "$type" = reload ]; then
		sleep "$(calc "$WARM + $DUR * 0.3" 2)"
		for t in ${!targets}; do
			upgrade "$t"
			sleep 1
		done
	fi
	wait "$lg"
	grep -q '^{' "$out" || die "loadgen $path $kind failed: $(tail -n 3 "$out.err" "$out")"
	[ "$type" = reload ] && drained
	log "  round $round $path/$kind $type: $(field "$out" errors) failed of $(field "$out" sent)" \
		"$(field "$out" errors_by_kind), p99 $(field "$out" p99) ms, max $(field "$out" max) ms"
}
# field FILE KEY: from loadgen's JSON line: sent, errors, or a latency percentile (p50, p99).
field() {
	"$PY" -c 'import json, sys
j = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
k = sys.argv[2]
print(j["latency_ms"][k] if k[0] == "p" or k == "max" else j[k])' "$1" "$2"
}

log "fixed rate: $RATE req/s over $CONNS connections, $ROUNDS rounds of ${WARM}+${DUR} s windows"
for r in $(seq "$ROUNDS"); do
	for path in "${PATHS[@]}"; do
		for kind in "${CKINDS[@]}"; do
			if [ $((r % 2)) = 1 ]; then
				window "$path" "$kind" "$r" quiet
				window "$path" "$kind" "$r" reload
			else
				window "$path" "$kind" "$r" reload
				window "$path" "$kind" "$r" quiet
			fi
		done
	done
done

# --- the table ---
sum() { local f s=0; for f in "$TMP"/lg."$1".[0-9]*; do case $f in *.err) continue ;; esac
	s=$((s + $(field "$f" "$2"))); done; echo $s; }
each() { local f; for f in "$TMP"/lg."$1".[0-9]*; do case $f in *.err) continue ;; esac
	field "$f" p99; done | paste -sd, | sed 's/,/, /g'; }
med() { local f; for f in "$TMP"/lg."$1".[0-9]*; do case $f in *.err) continue ;; esac
	field "$f" p99; done | sort -g |
	awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
{
	echo "| path / connections | requests quiet / reload | **failed** quiet / reload | p99 quiet, ms (each window) | p99 reload, ms (each window) | **p99 reload / quiet** (medians) | goal: 0 failed, p99 <= 2x |"
	echo "|---|---|---|---|---|---|---|"
	for path in "${PATHS[@]}"; do
		for kind in "${CKINDS[@]}"; do
			k=$path.$kind
			fq=$(sum "$k.quiet" errors) fr=$(sum "$k.reload" errors)
			mq=$(med "$k.quiet") mr=$(med "$k.reload")
			ratio=$(calc "$mr / $mq" 2)
			v1=$(verdict "$fr == 0") v2=$(verdict "$ratio <= 2")
			echo "| $path / $kind | $(sum "$k.quiet" sent) / $(sum "$k.reload" sent) |" \
				"$fq / **$fr** | $(each "$k.quiet") | $(each "$k.reload") | **$ratio** |" \
				"failed: **$v1**; p99: **$v2** |"
		done
	done
} >"$TMP/table.md"
{
	echo "Reload benchmark results"
	echo "========================"
	echo
	echo "Written by bench/reload/run.sh; see bench/README for what each number means."
	echo
	echo "- command: \`$CMDLINE\`"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s," \
		"$UPGRADES upgrades, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- machine: $(nproc) CPUs, $(uname -sr)"
	echo "- load: \`loadgen --rate $RATE --connections $CONNS --warmup $WARM --duration $DUR\`" \
		"(keep) and the same with \`--close\` (new); reload windows replace ztunnel A at" \
		"30% and ztunnel B a second later (l4), or the waypoint at 30% (l7), by SIGUSR2"
	echo
	cat "$TMP/table.md"
} >"$TMP/results.md"
cat "$TMP/results.md"
[ "$OUTFILE" = - ] || cp "$TMP/results.md" "$OUTFILE"
