# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash disable=SC2034,SC2154
# Helpers of the lab benchmarks (bench/l4, l7 and sidecar run.sh), sourced after NAME
# (the log prefix), SRC, LIMIT (seconds), and the fixed-rate settings RATE CONNS DUR WARM and
# WDUR (wrk seconds) are set. Starts the run: the lab library, a TMP directory, the EXIT trap
# that stops everything started (the lab included) and a watchdog that ends the run after LIMIT.
#
# Paths are described by three variables each, PATH being a word: URL_PATH (what the client
# asks), NS_PATH (the lab namespace it runs in) and PROXY_PATH (the pids whose CPU counts).
#   fixed PATH ROUND    one bench/loadgen fixed-rate run; CPU ticks of each proxy add up in
#                       CPUT[PATH.N] (N: its place in PROXY_PATH)
#   median PATH KEY     the median over the rounds of latency_ms[KEY] (p50, p90, p99)
#   maxrate PATH        wrk -t1 -c32 for WDUR s: RPS[PATH], and WCPU[PATH.N] CPU-s per proxy
#   vcpu TICKS ROUNDS   vCPU per 1000 req/s over ROUNDS fixed-rate runs

die() { echo "$NAME: $*" >&2; exit 1; }
log() { echo "$NAME: $*" >&2; }
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, nftables)"

SRCDIR=$SRC
# shellcheck source=/dev/null
. "$SRC/tests/e2e/lab.sh"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/amesh-$NAME.XXXXXX") || die "mktemp failed"
PIDS=()
WATCHDOG=
# ours PID: a live child of this shell (pids wrap; one we reaped may be someone else's now).
ours() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- $s
	[ "$2" = "$$" ]
}
cleanup() {
	local p
	[ -n "$WATCHDOG" ] && ours "$WATCHDOG" && kill "$WATCHDOG" 2>/dev/null
	for p in "${PIDS[@]}"; do ours "$p" && kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	lab_down
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
watchdog() {
	local s
	trap 'kill $s 2>/dev/null; exit 0' TERM
	sleep "$LIMIT" &
	s=$!
	wait $s && echo "$NAME: over ${LIMIT}s: stopping" >&2 && kill -TERM $$
}
watchdog </dev/null >/dev/null &
WATCHDOG=$!
HZ=$(getconf CLK_TCK)
T_START=$(date +%s)

bg() { # bg NAME NS CMD...: CMD in lab namespace NS, in the background; sets PID_NAME
	local name=$1 ns=$2
	shift 2
	# shellcheck disable=SC2046
	$(lab_in "$ns") "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	PIDS+=($!)
	printf -v "PID_$name" %s $!
}
wait_port() { LAB_WAIT=10 lab_wait_port "$1" '*' "$2" 2>/dev/null ||
	die "$3 is not listening on $2: $(tail -n 3 "$TMP/$3.err" 2>/dev/null)"; }
wait_ready() { lab_wait_ready "$1" "$2" || die "$3 is not ready: $(tail -n 3 "$TMP/$3.err")"; }
cpu_ticks() { # cpu_ticks PID [user]: utime + stime of a process (all its threads); utime alone
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	# shellcheck disable=SC2086
	set -- "${2:-}" $s
	[ "$1" = user ] && echo "${13}" || echo $((${13} + ${14}))
}
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", ($1) }"; }
verdict() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }
mib() { calc "$1 / 1024" 1; }

declare -A CPUT RPS WCPU
fixed() {
	local path=$1 round=$2 url=URL_$1 ns=NS_$1 proxies=PROXY_$1 p i c0=() out
	out=$TMP/lg.$path.$round
	for p in ${!proxies}; do c0+=("$(cpu_ticks "$p")"); done
	lab_exec "${!ns}" "$SRC_LOADGEN" --url "${!url}" --rate "$RATE" --duration "$DUR" \
		--warmup "$WARM" --connections "$CONNS" >"$out" 2>"$out.err"
	grep -q '^{' "$out" || die "loadgen $path failed: $(tail -n 3 "$out.err" "$out")"
	i=0
	for p in ${!proxies}; do
		i=$((i + 1))
		CPUT[$path.$i]=$((${CPUT[$path.$i]:-0} + $(cpu_ticks "$p") - ${c0[$((i - 1))]}))
	done
	log "  round $round $path: $(grep '^latency' "$out" | cut -c11- | sed 's/, mean.*//')"
}
median() {
	local path=$1 key=$2 f
	for f in "$TMP"/lg."$path".[0-9]*; do
		case $f in *.err) continue ;; esac
		/usr/bin/python3 -c 'import json, sys
print(json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])["latency_ms"][sys.argv[2]])' "$f" "$key"
	done | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
maxrate() {
	local path=$1 url=URL_$1 ns=NS_$1 proxies=PROXY_$1 p c0=() i=0 out=$TMP/wrk.$1
	for p in ${!proxies}; do c0+=("$(cpu_ticks "$p")"); done
	lab_exec "${!ns}" timeout $((WDUR + 20)) wrk -t1 -c32 -d"${WDUR}s" "${!url}" >"$out" 2>&1
	RPS[$path]=$(sed -n 's/^Requests\/sec:[[:space:]]*//p' "$out")
	[ -n "${RPS[$path]}" ] || die "wrk $path failed: $(tail -n 3 "$out")"
	for p in ${!proxies}; do
		i=$((i + 1))
		WCPU[$path.$i]=$(calc "($(cpu_ticks "$p") - ${c0[$((i - 1))]}) / $HZ" 2)
	done
	log "  $path: ${RPS[$path]} req/s"
}
vcpu() { calc "$1 / $HZ / ($2 * ($DUR + $WARM)) / ($RATE / 1000)" 3; }
