#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read by bench/lib.sh
#
# DNS proxy benchmark (bench/README; issue 15, "bench/dns"). One run, as root, on host A of the
# lab of tests/e2e/lab.sh: a ztunnel with dns_capture = on and client-a (namespace a1) enrolled;
# an upstream dnsmasq on host A's bridge address (10.1.1.1, cache on, one record of its own:
# outside.test); a second dnsmasq in echo-a's namespace (a2, not enrolled, so not captured)
# forwarding everything to the upstream without a cache.
#   (a) throughput and CPU: dnsperf (100 queries in flight, -d seconds) from a1 for a registry
#       name (answered by the proxy) and for outside.test (forwarded through the proxy); beside
#       it, from a2, the upstream dnsmasq answering its own record (its cached-answer rate).
#       utime+stime of the answering process (/proc/PID/stat) before and after give queries per
#       CPU-second, the comparison the issue asks for.
#   (b) latency, one query at a time (a python client, -n queries): p50 and p99 of the proxy's
#       registry answer, a forwarded answer through the proxy, the same name asked of the
#       upstream directly (from a2), and through the forwarding dnsmasq. "Forwarding adds" is
#       (forwarded through the proxy p50) - (upstream directly p50).
#   (c) the ztunnel's RSS before and after.
# Bounded (watchdog 240 s); everything it started, the lab included, goes in an EXIT trap.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-d SECS] [-n QUERIES] [-p]
#   -B  the build tree with amesh (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/dns/RESULTS.md in the source tree; - for none)
#   -d  dnsperf seconds per run (default 10)      -n  latency queries per path (default 2000)
#   -p  also record the ztunnel under perf during the registry run (summary by symbol)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=dns-bench
OUTFILE=$SRC/bench/dns/RESULTS.md
LIMIT=240
CMDLINE="bench/dns/run.sh $*"
BUILD=${BUILDDIR:-$SRC}
DUR=10 N=2000 ROUNDS=4 PERF=''
OPTIND=1
while getopts "B:o:d:n:ph" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	d) DUR=$OPTARG ;;
	n) N=$OPTARG ;;
	p) PERF=1 ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2
AMESH=$BUILD/amesh
[ -x "$AMESH" ] || { echo "$NAME: $AMESH is not built" >&2; exit 1; }
export AMESH
PY=/usr/bin/python3

# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in dnsmasq dnsperf curl "$PY"; do
	command -v "$c" >/dev/null || die "$c is not installed (apt-get install dnsmasq dnsperf curl)"
done
[ -n "$PERF" ] && { command -v perf >/dev/null || die "perf is not installed"; }

UP=10.1.1.1
log "lab: host A, ztunnel with dns_capture = on, upstream dnsmasq at $UP"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
cat >>"$LAB_CONF_A" <<EOF
dns_capture = on
[dns]
upstream = $UP
EOF
bg up ha dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --listen-address=$UP \
	--bind-interfaces --user=root --group=root --cache-size=1000 \
	--host-record=outside.test,192.0.2.7 --pid-file="$TMP/up.pid"
bg fwd a2 dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --listen-address=127.0.0.1 \
	--bind-interfaces --user=root --group=root --cache-size=0 --server=$UP \
	--pid-file="$TMP/fwd.pid"
bg zt ha "$AMESH" ztunnel -c "$LAB_CONF_A"
wait_ready ha 15021 zt
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a \
	>/dev/null || die "cni add failed"
i=0
while [ ! -s "$TMP/up.pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
UPPID=$(cat "$TMP/up.pid") || die "the upstream dnsmasq did not start: $(cat "$TMP/up.err")"
ZT=$PID_zt
ZT=$(pgrep -P "$ZT" amesh || echo "$ZT") # ip netns exec may stay the parent
RSS0=$(status_kb "$ZT" VmRSS)

echo "echo.default.svc.cluster.local A" >"$TMP/q-registry"
echo "outside.test A" >"$TMP/q-outside"
# dnsperf_run NS PID QUERYFILE: "QPS CPU-S" of dnsperf against UP:53 from NS, and PID's CPU.
dnsperf_run() {
	local t0 t1 qps
	t0=$(cpu_ticks "$2")
	qps=$(lab_exec "$1" dnsperf -s $UP -d "$3" -l "$DUR" -q 100 2>/dev/null |
		awk '/Queries per second/ { printf "%.0f", $4 }')
	t1=$(cpu_ticks "$2")
	echo "${qps:-0} $(calc "($t1 - $t0) / $HZ" 2)"
}
log "(a) dnsperf, $DUR s each: registry name, forwarded name, dnsmasq's own record"
if [ -n "$PERF" ]; then
	perf record -g -o "$TMP/perf.data" -p "$ZT" 2>/dev/null &
	PERFPID=$!
	sleep 0.5
fi
read -r QR CR <<<"$(dnsperf_run a1 "$ZT" "$TMP/q-registry")"
if [ -n "$PERF" ]; then
	kill -INT "$PERFPID" && wait "$PERFPID" 2>/dev/null
	perf report -i "$TMP/perf.data" -g none --no-children --sort dso,symbol --stdio 2>/dev/null |
		grep -E "^ +[0-9]" | head -n 40 >"$TMP/perf.txt"
fi
read -r QF CF <<<"$(dnsperf_run a1 "$ZT" "$TMP/q-outside")"
read -r QD CD <<<"$(dnsperf_run a2 "$UPPID" "$TMP/q-outside")"
RSS1=$(status_kb "$ZT" VmRSS)

# lat.py ADDR PORT NAME N OUT: N queries one at a time; appends each latency (µs) to OUT and
# prints the answers that were not NOERROR with data.
cat >"$TMP/lat.py" <<'EOF'
import random, socket, struct, sys, time
addr, port, name, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
lat = []
bad = 0
for i in range(n):
    qid = random.getrandbits(16)
    t = time.perf_counter()
    s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q, (addr, port))
    while True:
        d = s.recv(4096)
        if struct.unpack(">H", d[:2])[0] == qid:
            break
    lat.append((time.perf_counter() - t) * 1e6)
    bad += (d[3] & 0xF) != 0 or struct.unpack(">H", d[6:8])[0] == 0
with open(out, "a") as f:
    f.write("".join("%.1f\n" % x for x in lat))
print(bad)
EOF
# pct FILE: "p50 p99" of the latencies in FILE.
pct() { sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%.0f %.0f", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }'; }
fwd() { lab_exec ha curl -s http://127.0.0.1:15020/metrics |
	awk '$1 == "amesh_dns_responses_total{result=\"forwarded\"}" { print $2 }'; }
# The four paths take turns, in ROUNDS rounds of N/ROUNDS queries each, so that the noise of a
# shared machine falls on all of them alike.
log "(b) latency, $N queries one at a time per path, in $ROUNDS rounds"
BR=0 BF=0 BD=0 BM=0 FR=0 FF=0
for ((r = 0; r < ROUNDS; r++)); do
	F0=$(fwd)
	BR=$((BR + $(lab_exec a1 "$PY" "$TMP/lat.py" $UP 53 echo.default.svc.cluster.local $((N / ROUNDS)) "$TMP/l.reg")))
	F1=$(fwd)
	BF=$((BF + $(lab_exec a1 "$PY" "$TMP/lat.py" $UP 53 outside.test $((N / ROUNDS)) "$TMP/l.fwd")))
	F2=$(fwd)
	BD=$((BD + $(lab_exec a2 "$PY" "$TMP/lat.py" $UP 53 outside.test $((N / ROUNDS)) "$TMP/l.dir")))
	BM=$((BM + $(lab_exec a2 "$PY" "$TMP/lat.py" 127.0.0.1 53 outside.test $((N / ROUNDS)) "$TMP/l.dm")))
	FR=$((FR + F1 - F0))
	FF=$((FF + F2 - F1))
done
read -r LR50 LR99 <<<"$(pct "$TMP/l.reg")"
read -r LF50 LF99 <<<"$(pct "$TMP/l.fwd")"
read -r LD50 LD99 <<<"$(pct "$TMP/l.dir")"
read -r LM50 LM99 <<<"$(pct "$TMP/l.dm")"

per() { awk -v q="$1" -v c="$2" -v d="$DUR" 'BEGIN { if (c > 0) printf "%.0f", q * d / c; else print "n/a" }'; }
PR=$(per "$QR" "$CR")
PF=$(per "$QF" "$CF")
PD=$(per "$QD" "$CD")
report() {
	cat <<EOF
DNS proxy benchmark
===================

Written by bench/dns/run.sh (bench/README).

- command: \`$CMDLINE\` (build $BUILD), dnsperf $DUR s with 100 queries in flight, latency
  over $N queries one at a time per path ($ROUNDS rounds, the paths in turn)
- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s
- machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)

| (a) throughput | queries/s | CPU-s of the answering process | queries per CPU-s |
| --- | --- | --- | --- |
| proxy, registry answer | $QR | $CR (ztunnel) | **$PR** |
| proxy, forwarded to dnsmasq | $QF | $CF (ztunnel only) | $PF |
| dnsmasq answering its own record directly | $QD | $CD (dnsmasq) | **$PD** |

Registry answers per CPU-s against dnsmasq's cached answers: **$(awk -v a="$PR" -v b="$PD" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }')** (goal >= 1x).

| (b) latency, one query at a time, µs | p50 | p99 | answers not NOERROR with data |
| --- | --- | --- | --- |
| proxy, registry answer | $LR50 | $LR99 | $BR |
| proxy, forwarded | $LF50 | $LF99 | $BF |
| the upstream directly (not captured) | $LD50 | $LD99 | $BD |
| a dnsmasq forwarding to the same upstream | $LM50 | $LM99 | $BM |

The proxy's forwarded counter moved by $FR during the registry queries and by $FF during the
forwarded ones (of $(((N / ROUNDS) * ROUNDS))): the forwarded queries did go through it.

Forwarding through the proxy adds **$((LF50 - LD50)) µs** at p50 over asking the upstream
directly (goal <= 50 µs); a forwarding dnsmasq adds $((LM50 - LD50)) µs.

(c) ztunnel RSS: $RSS0 KiB before, $RSS1 KiB after the runs.
EOF
	if [ -n "$PERF" ]; then
		printf '\nThe ztunnel under perf during the registry run (self time, by DSO and symbol):\n\n'
		sed 's/^/    /' "$TMP/perf.txt"
	fi
}
if [ "$OUTFILE" = - ]; then
	report
else
	report >"$OUTFILE"
	cat "$OUTFILE"
fi
