#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Where the slow requests of an l4 reload fall in time (issue 18): the lab's two ztunnels, loadgen
# at RATE for SECS from client-a to echo-b (4 keep-alive connections, or a new one per request),
# ztunnel A replaced by SIGUSR2 UPAT seconds in (default 5) and ztunnel B a second later. Prints
# loadgen's summary, then the requests at least SLOWMS late (loadgen --slow) counted per 100 ms
# from A's replacement, and the ztunnels' upgrade log lines, so that a stall can be told to come
# from the hand-over or from the machine. Needs root; a few seconds more than SECS.
#
# usage: timeline.sh [RATE] [SECS] [SLOWMS] [keep|new]   (defaults 1000 12 3 keep)
set -u
NAME=reload-timeline
SRC=$(cd "$(dirname "$0")/../.." && pwd)
LIMIT=300
RATE=${1:-1000} SECS=${2:-12} SLOW=${3:-3} KIND=${4:-keep}
. "$SRC/bench/lib.sh"
BUILD=${BUILDDIR:-$SRC}
AMESH=$BUILD/amesh
LOADGEN=$BUILD/bench/loadgen
for f in "$AMESH" "$LOADGEN"; do
	[ -x "$f" ] || die "$f is not built (make amesh bench/loadgen)"
done
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
for c in "$LAB_CONF_A" "$LAB_CONF_B"; do
	printf 'drain_timeout = 60s\n[log]\naccess_log = off\n' >>"$c"
done
for ns in a1 a2 b1 b2 ha hb; do
	lab_exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" \
		net.ipv4.tcp_tw_reuse=1 >/dev/null 2>&1
done
bg http_b1 b1 "$LOADGEN" --serve "0.0.0.0:8080" --size 1024
wait_port b1 8080 http_b1
bg zt_a ha "$AMESH" ztunnel -c "$LAB_CONF_A"
bg zt_b hb "$AMESH" ztunnel -c "$LAB_CONF_B"
wait_ready ha 15021 zt_a
wait_ready hb 15021 zt_b
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a >/dev/null 2>&1 || die enroll
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b >/dev/null 2>&1 || die enroll
sleep 1
CL=""
[ "$KIND" = new ] && CL=--close
lab_exec a1 "$LOADGEN" --url "http://$LAB_B1:8080/" --rate "$RATE" --duration "$SECS" --warmup 1 $CL --slow "${SLOW}ms" >"$TMP/lg.out" 2>"$TMP/lg.err" &
LG=$!
sleep ${UPAT:-5}
t_a=$(date +%s.%N)
na=$(lab_upgrade "$TMP/zt_a.err" "$PID_zt_a") || die "upgrade a"
sleep 1
t_b=$(date +%s.%N)
nb=$(lab_upgrade "$TMP/zt_b.err" "$PID_zt_b") || die "upgrade b"
wait $LG
echo "upgrade A at $t_a (new $na), B at $t_b (new $nb)"
for p in $na $nb; do
	echo "new $p: cpu ticks $(cpu_ticks $p) (HZ $(getconf CLK_TCK))"
done
echo "old A ticks $(cpu_ticks $PID_zt_a 2>/dev/null) old B $(cpu_ticks $PID_zt_b 2>/dev/null)"
grep "latency" "$TMP/lg.out" | head -2
echo "slow requests: $(grep -c '^slow' "$TMP/lg.err")"
# Histogram of slow requests per 100 ms relative to upgrade A.
awk -v a="$t_a" '/^slow/ { d = int(($2 - a) * 10) / 10; n[d]++; if ($3 > m[d]) m[d] = $3 }
	END { for (k in n) printf "%+.1f s: %d slow, max %.1f ms\n", k, n[k], m[k] }' "$TMP/lg.err" | sort -g
echo "--- zt logs around the upgrades"
grep -h -E "upgrade|ready|handed|drain" "$TMP"/zt_a.err "$TMP"/zt_b.err 2>/dev/null | cut -c1-160 | head -40
