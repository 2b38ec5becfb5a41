#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# HBONE benchmark over loopback (bench/README): in one run, on 127.0.0.1 only,
#   - the single-core mbedTLS cost of the three suites' AEADs and of the handshake's public-key
#     operations (bench/hbone/cryptorate), and OpenSSL's AEAD rate for the stunnel comparison;
#   - iperf3 throughput, one stream and 16 streams, through tests/tools/hbone-tool client and
#     server (plain TCP -> pool -> HBONE -> relay -> iperf3 -s), through a stunnel4 client+server
#     pair with the same certificates, suite and curve, and direct; CPU seconds of the proxies;
#   - handshakes per second: connections through a pool that may put one stream on a connection,
#     each held open, so every one costs a full mutual-TLS handshake;
#   - RSS per idle stream (many streams on one HBONE connection) and per idle connection.
# Prints one markdown table and writes it, with the command, date and machine, to RESULTS.md.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-t SECS] [-s STREAMS] [-n CONNS] [-c CONCURRENCY]
#               [-T SECS] [-p]
#   -B  the build tree (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/hbone/RESULTS.md in the source tree; - for none)
#   -t  seconds per iperf3 run (default 10; six runs)
#   -s  idle streams for the memory measurement (default 2000)
#   -n  new connections for the handshake and idle-connection measurement (default 1000)
#   -c  connections in flight while opening them (default 32)
#   -T  seconds per cryptorate measurement (default 0.5)
#   -p  also record perf profiles (perf record -g) of both hbone-tool processes during the
#       single-stream run: perf.{client,server}.data and a summary .txt next to the results file
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILDDIR:-$SRC}
OUTFILE=$SRC/bench/hbone/RESULTS.md
DUR=10
NSTREAMS=2000
NCONNS=1000
CONC=32
CTIME=0.5
PROFILE=0
LIMIT=290 # seconds: the whole run stays under five minutes
CMDLINE="bench/hbone/run.sh $*"

while getopts "B:o:t:s:n:c:T:ph" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	t) DUR=$OPTARG ;;
	s) NSTREAMS=$OPTARG ;;
	n) NCONNS=$OPTARG ;;
	c) CONC=$OPTARG ;;
	T) CTIME=$OPTARG ;;
	p) PROFILE=1 ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2

AMESH=$BUILD/amesh
TOOL=$BUILD/tests/tools/hbone-tool
CRYPTO=$BUILD/bench/hbone/cryptorate
LOAD=$BUILD/bench/hbone/connload
PY=/usr/bin/python3

die() { echo "hbone-bench: $*" >&2; exit 1; }
log() { echo "hbone-bench: $*" >&2; }

for f in "$AMESH" "$TOOL" "$CRYPTO" "$LOAD"; do
	[ -x "$f" ] || die "$f is not built (make bench/hbone/cryptorate bench/hbone/connload" \
		"tests/tools/hbone-tool amesh)"
done
for c in iperf3 stunnel4 openssl ss "$PY"; do
	command -v "$c" >/dev/null || die "$c is not installed"
done
"$TOOL" sanitized && die "hbone-tool is built with AddressSanitizer: numbers would mean nothing"
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || die "-p needs perf"

ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" -ge $((4 * (NSTREAMS > NCONNS ? NSTREAMS : NCONNS) + 100)) ] ||
	die "open file limit $(ulimit -n) is too low for -s $NSTREAMS / -n $NCONNS"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/amesh-hbone-bench.XXXXXX") || die "mktemp failed"
PIDS=()
WATCHDOG=
cleanup() {
	local p
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# Every step is bounded on its own; this is the backstop.
watchdog() {
	local s
	trap 'kill $s 2>/dev/null; exit 0' TERM
	sleep "$LIMIT" &
	s=$!
	wait $s && echo "hbone-bench: over ${LIMIT}s: stopping" >&2 && kill -TERM $$
}
watchdog </dev/null >/dev/null &
WATCHDOG=$!

HZ=$(getconf CLK_TCK)
T_START=$(date +%s)

# --- helpers ---

# bg NAME CMD...: runs CMD in the background (stdout NAME.out, stderr NAME.err in $TMP); sets
# PID_NAME. The process is stopped at exit.
bg() {
	local name=$1
	shift
	"$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
	PIDS+=($!)
	printf -v "PID_$name" %s $!
}

# start NAME CMD...: bg, then waits up to 10 s for "listening PORT"; sets PORT_NAME.
start() {
	local name=$1 i port pid
	bg "$@"
	pid=PID_$name
	for i in $(seq 100); do
		port=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$TMP/$name.out")
		[ -n "$port" ] && break
		kill -0 "${!pid}" 2>/dev/null || die "$name exited: $(tail -n 3 "$TMP/$name.err")"
		sleep 0.1
	done
	[ -n "$port" ] || die "$name did not start listening"
	printf -v "PORT_$name" %s "$port"
}

# stop NAME: ends a process started by bg or start, and forgets it (its PID may be reused).
stop() {
	local pid=PID_$1 p keep=()
	kill "${!pid}" 2>/dev/null
	wait "${!pid}" 2>/dev/null
	for p in "${PIDS[@]}"; do
		[ "$p" = "${!pid}" ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
}

free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_listen PORT NAME: until something listens on 127.0.0.1:PORT (without connecting to it).
wait_listen() {
	local i
	for i in $(seq 100); do
		ss -Hltn "sport = :$1" | grep -q . && return 0
		sleep 0.1
	done
	die "$2 is not listening on $1: $(tail -n 3 "$TMP/$2.err" 2>/dev/null)"
}

# wait_line FILE REGEX SECS: until a line matches; prints it.
wait_line() {
	local i
	for i in $(seq $(($3 * 10))); do
		grep -m1 -E "$2" "$1" && return 0
		sleep 0.1
	done
	return 1
}

cpu_ticks() { # utime + stime of a process (all its threads)
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	s=${s##*) }
	set -- $s
	echo $((${12} + ${13}))
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sys_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }
calc() { awk "BEGIN { printf \"%.${2:-1}f\", ($1) }"; }

# hbone-tool's SIGUSR1 statistics: the newest value of KEY (e.g. "streams") in NAME.out.
tool_stat() {
	local pid=PID_$1 n
	n=$(grep -c '^stats' "$TMP/$1.out")
	kill -USR1 "${!pid}"
	for _ in $(seq 50); do
		[ "$(grep -c '^stats' "$TMP/$1.out")" -gt "$n" ] && break
		sleep 0.05
	done
	grep '^stats' "$TMP/$1.out" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# --- identities ---

log "certificates"
"$AMESH" ca init --dir "$TMP/ca" >/dev/null || die "amesh ca init failed"
for sa in server client; do
	"$AMESH" ca issue --dir "$TMP/ca" --namespace default --service-account $sa \
		--out "$TMP/certs" >/dev/null || die "amesh ca issue failed"
done
CA=$TMP/ca/ca.crt
SRV_ID=spiffe://cluster.local/ns/default/sa/server
TOOLARGS=(--cert-dir "$TMP/certs" --bundle "$CA" --ns default)

# --- the background load, before we add ours ---

read -r b0 i0 < <(sys_ticks)
sleep 1
read -r b1 i1 < <(sys_ticks)
BG_LOAD_BEFORE=$(calc "($b1 - $b0) / $HZ" 2)

# --- crypto bounds ---

# Measured at the start and again at the end; the bounds are the mean of the two, and the table
# shows both (on a shared machine they differ by as much as the other load does).
log "mbedTLS single-core rates (cryptorate -t $CTIME)"
"$CRYPTO" -t "$CTIME" >"$TMP/crypto.1" || die "cryptorate failed"
cvals() { # cvals REGEX FIELD: the value after FIELD on the matching line, start and end
	awk -v re="$1" -v f="$2" '$0 ~ re { for (i = 1; i < NF; i++) if ($i == f) print $(i + 1) }' \
		"$TMP"/crypto.*
}
cval() { cvals "$@" | awk '{ t += $1; n++ } END { if (n) printf "%.1f", t / n }'; }
cspread() { cvals "$@" | paste -sd/; }
OSSL_CHACHA=$(openssl speed -seconds 1 -bytes 16384 -evp chacha20-poly1305 2>/dev/null |
	awk '/^ChaCha20-Poly1305/ {sub(/k$/, "", $2); printf "%.1f", $2 / 1000}')

# --- upstreams ---

IPERF_PORT=$(free_port)
bg iperf iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
wait_listen "$IPERF_PORT" iperf
start echo "$LOAD" echo

# --- throughput ---

log "throughput: hbone-tool server + client, stunnel4 pair, direct ($DUR s per run)"
start S1 "$TOOL" server --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa server --max-streams 100 -v
start C1 "$TOOL" client --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa client --server-id "$SRV_ID" \
	--server "127.0.0.1:$PORT_S1" --authority "127.0.0.1:$IPERF_PORT"

# What the amesh server picks, as an OpenSSL client offering everything amesh offers sees it.
openssl s_client -connect "127.0.0.1:$PORT_S1" -tls1_2 -alpn h2 -CAfile "$CA" \
	-cert "$TMP/certs/default/client.crt" -key "$TMP/certs/default/client.key" \
	-cipher 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305' \
	-groups P-256:X25519 </dev/null >"$TMP/s_client.out" 2>&1
CURVE=$(sed -n 's/^Server Temp Key: \([^,]*\),.*/\1/p' "$TMP/s_client.out" | head -n 1)
OSSL_SUITE=$(sed -n 's/.*Cipher is \(.*\)$/\1/p' "$TMP/s_client.out" | head -n 1)

# A warm-up transfer (also the negotiated suite between the amesh client and server).
iperf3 -c 127.0.0.1 -p "$PORT_C1" -t 1 >/dev/null 2>&1 || die "iperf3 through hbone-tool failed"
SUITE_LINE=$(grep -m1 'up with' "$TMP/S1.err" | sed 's/.*, //')
case $SUITE_LINE in
*CHACHA20-POLY1305*) AEAD=CHACHA20-POLY1305 OSSL_CIPHER=ECDHE-ECDSA-CHACHA20-POLY1305 ;;
*AES-128-GCM*) AEAD=AES-128-GCM OSSL_CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256 ;;
*AES-256-GCM*) AEAD=AES-256-GCM OSSL_CIPHER=ECDHE-ECDSA-AES256-GCM-SHA384 ;;
*) die "cannot tell the negotiated suite (server log: $(head -n 3 "$TMP/S1.err"))" ;;
esac
case $CURVE in
X25519) CURVE_KEY=x25519 OSSL_CURVE=X25519:P-256 ;;
*256*) CURVE_KEY=p256 OSSL_CURVE=P-256 CURVE=P-256 ;;
*) CURVE_KEY=x25519 OSSL_CURVE=X25519:P-256 CURVE="X25519 (assumed: s_client saw '$CURVE')" ;;
esac

STC_PORT=$(free_port)
STS_PORT=$(free_port)
stunnel_conf() { # stunnel_conf NAME client|server ACCEPT CONNECT SA
	cat <<EOF
foreground = yes
pid =
syslog = no
debug = info
[bench]
$([ "$2" = client ] && echo "client = yes")
accept = 127.0.0.1:$3
connect = 127.0.0.1:$4
cert = $TMP/certs/default/$5.crt
key = $TMP/certs/default/$5.key
CAfile = $CA
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
sslVersionMax = TLSv1.2
ciphers = $OSSL_CIPHER
# OpenSSL uses an ECDSA certificate only if its curve (P-256) is among the groups both offer;
# the ECDHE group is the first one in this list.
curves = $OSSL_CURVE
options = NO_TICKET
EOF
}
stunnel_conf st-s server "$STS_PORT" "$IPERF_PORT" server >"$TMP/st-s.conf"
stunnel_conf st-c client "$STC_PORT" "$STS_PORT" client >"$TMP/st-c.conf"
bg STS stunnel4 "$TMP/st-s.conf"
bg STC stunnel4 "$TMP/st-c.conf"
wait_listen "$STS_PORT" STS
wait_listen "$STC_PORT" STC
iperf3 -c 127.0.0.1 -p "$STC_PORT" -t 1 >/dev/null 2>&1 || die "iperf3 through stunnel4 failed"
ST_SUITE=$(grep -h -m1 -o 'ciphersuite: [A-Z0-9-]*' "$TMP/STS.err" | sed 's/.*: //')
ST_SUITE="$ST_SUITE, $(grep -h -m1 -o 'Peer temporary key: [A-Za-z0-9-]*' "$TMP/STC.err" | sed 's/.*: //')"

declare -A BPS BYTES PCPU PCPUS BUSY
# run_case NAME PORT PARALLEL [PROXY_PID...]: one iperf3 run (client -> server); records the rate,
# the bytes received, the CPU seconds the proxies used and how many CPUs the machine kept busy.
run_case() {
	local name=$1 port=$2 par=$3 p c0=() c1=0 sb0 si0 sb1 si1 r i
	shift 3
	for p in "$@"; do c0+=("$(cpu_ticks "$p")"); done
	read -r sb0 si0 < <(sys_ticks)
	iperf3 -c 127.0.0.1 -p "$port" -t "$DUR" -P "$par" -J >"$TMP/iperf.$name.json" 2>&1
	read -r sb1 si1 < <(sys_ticks)
	PCPUS[$name]=
	i=0
	for p in "$@"; do
		r=$(($(cpu_ticks "$p") - ${c0[$i]}))
		c1=$((c1 + r))
		PCPUS[$name]+="$(calc "$r / $HZ" 2) "
		i=$((i + 1))
	done
	PCPU[$name]=$(calc "$c1 / $HZ" 2)
	BUSY[$name]=$(calc "($sb1 - $sb0) / ($sb1 - $sb0 + $si1 - $si0) * $(nproc)" 1)
	r=$($PY - "$TMP/iperf.$name.json" <<'EOF'
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    print(e["sum_received"]["bytes"], e["sum_received"]["bits_per_second"])
except Exception as x:
    print("ERR")
EOF
)
	set -- $r
	if [ "$1" = ERR ]; then
		log "iperf3 $name failed: $(head -c 300 "$TMP/iperf.$name.json")"
		BYTES[$name]=0 BPS[$name]=0
	else
		BYTES[$name]=$1 BPS[$name]=$2
	fi
	log "  $name: $(calc "${BPS[$name]} / 1e9" 2) Gbit/s, proxies ${PCPU[$name]} CPU-s," \
		"machine ${BUSY[$name]} CPUs busy"
}

PERF_PIDS=()
for par in 1 16; do
	run_case "direct-$par" "$IPERF_PORT" "$par"
	if [ "$par" = 1 ] && [ "$PROFILE" = 1 ]; then
		perf record -g -o "$TMP/perf.server.data" -p "$PID_S1" -- sleep "$DUR" \
			>/dev/null 2>&1 &
		PERF_PIDS+=($!)
		perf record -g -o "$TMP/perf.client.data" -p "$PID_C1" -- sleep "$DUR" \
			>/dev/null 2>&1 &
		PERF_PIDS+=($!)
	fi
	run_case "amesh-$par" "$PORT_C1" "$par" "$PID_C1" "$PID_S1"
	for p in "${PERF_PIDS[@]}"; do wait "$p"; done
	if [ ${#PERF_PIDS[@]} -gt 0 ]; then
		PERF_DIR=$([ "$OUTFILE" = - ] && pwd || dirname "$OUTFILE")
		for w in client server; do
			cp "$TMP/perf.$w.data" "$PERF_DIR/perf.$w.data" &&
				perf report -i "$PERF_DIR/perf.$w.data" --stdio --no-children \
					--sort dso,sym -g none 2>/dev/null | grep '%' | head -n 40 \
					>"$PERF_DIR/perf.$w.txt"
		done
		log "perf profiles of the single-stream run: $PERF_DIR/perf.{client,server}.{data,txt}"
	fi
	PERF_PIDS=()
	run_case "stunnel-$par" "$STC_PORT" "$par" "$PID_STC" "$PID_STS"
done
AMESH_MAXRSS_C1=$(tool_stat C1 maxrss_kb)
AMESH_MAXRSS_S1=$(tool_stat S1 maxrss_kb)
stop C1
stop S1
stop STC
stop STS

# --- memory per idle stream: many streams on one HBONE connection ---

# idle_streams NAME BURST: a fresh client and server; one HBONE connection with one stream is the
# baseline, then NSTREAMS more streams on it. BURST=1: all opened at once and never used (the
# tunnels are counted on the server). BURST=0: opened CONC at a time, each carrying one byte each
# way before it counts as up (what a connection between requests looks like). Sets
# STREAMS_<NAME>="server_KiB client_KiB streams_on_server connections_on_server".
idle_streams() {
	local name=$1 burst=$2 sb cb n
	start S2 "$TOOL" server --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa server \
		--max-streams $((NSTREAMS + 100))
	start C2 "$TOOL" client --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa client \
		--server-id "$SRV_ID" --server "127.0.0.1:$PORT_S2" --authority "127.0.0.1:$PORT_echo" \
		--max-streams $((NSTREAMS + 100))
	bg L0 "$LOAD" open -p "$PORT_C2" -n 1 -b 1 -T 20
	wait_line "$TMP/L0.out" '^up 1 of 1' 20 >/dev/null || die "no tunnel through hbone-tool"
	sleep 0.5
	sb=$(rss_kb "$PID_S2") cb=$(rss_kb "$PID_C2")
	if [ "$burst" = 1 ]; then
		bg L1 "$LOAD" open -p "$PORT_C2" -n "$NSTREAMS" -b 0 -c 256 -T 30
	else
		bg L1 "$LOAD" open -p "$PORT_C2" -n "$NSTREAMS" -b 1 -c "$CONC" -T 60
	fi
	wait_line "$TMP/L1.out" '^up ' 60 >/dev/null || die "connload did not finish opening"
	for _ in $(seq 150); do
		n=$(tool_stat S2 streams)
		[ "${n:-0}" -ge $((NSTREAMS + 1)) ] && break
		sleep 0.2
	done
	sleep 1
	printf -v "STREAMS_$name" '%s %s %s %s' \
		"$(per "$(rss_kb "$PID_S2") - $sb" "$NSTREAMS")" \
		"$(per "$(rss_kb "$PID_C2") - $cb" "$NSTREAMS")" \
		"$(tool_stat S2 streams)" "$(tool_stat S2 conns)"
	stop L1
	stop L0
	stop C2
	stop S2
}
per() { calc "($1) / $2" 2; } # KiB per item

log "idle streams: $NSTREAMS on one connection, opened at once and never used"
idle_streams BURST 1
log "idle streams: $NSTREAMS on one connection, $CONC opening at a time, one byte each way"
idle_streams USED 0

# --- handshakes and memory per idle connection ---

log "handshakes: $NCONNS new connections, $CONC in flight, one stream each"
start S3 "$TOOL" server --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa server
start C3 "$TOOL" client --listen 127.0.0.1:0 "${TOOLARGS[@]}" --sa client --server-id "$SRV_ID" \
	--server "127.0.0.1:$PORT_S3" --authority "127.0.0.1:$PORT_echo" --max-streams 1
bg L2 "$LOAD" open -p "$PORT_C3" -n 1 -b 1 -T 20
wait_line "$TMP/L2.out" '^up 1 of 1' 20 >/dev/null || die "no tunnel through hbone-tool"
sleep 0.5
S3_BASE=$(rss_kb "$PID_S3") C3_BASE=$(rss_kb "$PID_C3")
S3_CPU0=$(cpu_ticks "$PID_S3") C3_CPU0=$(cpu_ticks "$PID_C3")
read -r hb0 hi0 < <(sys_ticks)
bg L3 "$LOAD" open -p "$PORT_C3" -n "$NCONNS" -c "$CONC" -b 1 -T 120
HS_LINE=$(wait_line "$TMP/L3.out" '^up ' 125) || die "connload did not finish opening"
S3_CPU1=$(cpu_ticks "$PID_S3") C3_CPU1=$(cpu_ticks "$PID_C3")
read -r hb1 hi1 < <(sys_ticks)
HS_BUSY=$(calc "($hb1 - $hb0) / ($hb1 - $hb0 + $hi1 - $hi0) * $(nproc)" 1)
sleep 1
S3_IDLE=$(rss_kb "$PID_S3") C3_IDLE=$(rss_kb "$PID_C3")
POOL_OPENED=$(tool_stat C3 opened)
SRV_ACCEPTED=$(tool_stat S3 accepted)
stop L3
stop L2
stop C3
stop S3

read -r b0 i0 < <(sys_ticks)
sleep 1
read -r b1 i1 < <(sys_ticks)
BG_LOAD_AFTER=$(calc "($b1 - $b0) / $HZ" 2)
log "mbedTLS single-core rates again"
"$CRYPTO" -t "$CTIME" >"$TMP/crypto.2" || die "cryptorate failed"

# --- the numbers ---

set -- $HS_LINE # up OK of N failed F secs T p50_ms A p99_ms B max_ms C
HS_OK=$2 HS_FAILED=$6 HS_SECS=$8 HS_P50=${10} HS_P99=${12}
HS_S_CPU=$(calc "($S3_CPU1 - $S3_CPU0) / $HZ" 2)
HS_C_CPU=$(calc "($C3_CPU1 - $C3_CPU0) / $HZ" 2)
HS_WALL=$(calc "$HS_OK / $HS_SECS" 1)
HS_PER_SCPU=$(calc "$HS_S_CPU > 0 ? $HS_OK / $HS_S_CPU : 0" 1)
HS_PER_CCPU=$(calc "$HS_C_CPU > 0 ? $HS_OK / $HS_C_CPU : 0" 1)
SIGN=$(cval 'ecdsa-p256-sign' ops_per_s)
VERIFY=$(cval 'ecdsa-p256-verify' ops_per_s)
ECDHE=$(cval "ecdhe-$CURVE_KEY " ops_per_s)
HS_BOUND=$(cval "bound_${CURVE_KEY}_per_s" "bound_${CURVE_KEY}_per_s")
HS_BOUND_SV=$(cval bound_sign_verify_per_s bound_sign_verify_per_s)
HS_RATIO=$(calc "100 * $HS_PER_SCPU / $HS_BOUND" 0)
HS_RATIO_SV=$(calc "100 * $HS_PER_SCPU / $HS_BOUND_SV" 0)
HS_RATIO_WALL=$(calc "100 * $HS_WALL / $HS_BOUND" 0)

AEAD_BOTH=$(cval "aead $AEAD " sealopen_MBps)
AEAD_SEAL=$(cval "aead $AEAD " seal_MBps)
AEAD_OPEN=$(cval "aead $AEAD " open_MBps)
mbps() { calc "${BPS[$1]} / 8e6" 1; }
gbps() { calc "${BPS[$1]} / 1e9" 2; }
# CPU seconds of both proxies per GiB carried, and the AEAD's own share of it.
cpg() { [ "${BYTES[$1]}" -gt 0 ] && calc "${PCPU[$1]} / (${BYTES[$1]} / 1073741824)" 2 || echo -; }
# cpg1 NAME N: the same for the Nth proxy process of the run (1: client side, 2: server side)
cpg1() {
	local v
	v=$(echo "${PCPUS[$1]}" | awk -v n="$2" '{print $n}')
	[ "${BYTES[$1]}" -gt 0 ] && calc "$v / (${BYTES[$1]} / 1073741824)" 2 || echo -
}
CRYPTO_CPG=$(calc "1073741824 / ($AEAD_BOTH * 1e6)" 2)
share() { [ "${BYTES[$1]}" -gt 0 ] && calc "100 * $CRYPTO_CPG / $(cpg "$1")" 0 || echo -; }
ONE_RATIO=$(calc "100 * $(mbps amesh-1) / $AEAD_BOTH" 0)
SIXTEEN_RATIO=$(calc "100 * $(mbps amesh-16) / $AEAD_BOTH" 0)
VS_ST1=$(calc "100 * ${BPS[amesh-1]} / (${BPS[stunnel-1]} > 0 ? ${BPS[stunnel-1]} : 1)" 0)
VS_ST16=$(calc "100 * ${BPS[amesh-16]} / (${BPS[stunnel-16]} > 0 ? ${BPS[stunnel-16]} : 1)" 0)

read -r ST_S_IDLE ST_C_IDLE STREAMS_UP STREAM_CONNS <<<"$STREAMS_BURST"
read -r ST_S_USED ST_C_USED STREAMS_UP2 STREAM_CONNS2 <<<"$STREAMS_USED"
CN_S=$(per "$S3_IDLE - $S3_BASE" "$NCONNS")
CN_C=$(per "$C3_IDLE - $C3_BASE" "$NCONNS")
CN_S_NET=$(calc "$CN_S - $ST_S_USED" 1)
CN_C_NET=$(calc "$CN_C - $ST_C_USED" 1)

verdict() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }
V_ONE=$(verdict "$ONE_RATIO >= 85")
V_HS=$(verdict "$HS_RATIO >= 90")
V_ST_IDLE=$(verdict "$ST_S_IDLE <= 2 && $ST_C_IDLE <= 2")
V_ST_USED=$(verdict "$ST_S_USED <= 2 && $ST_C_USED <= 2")

row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
table() {
	echo "| measurement | result | compared with | ratio | goal |"
	echo "|---|---|---|---|---|"
	row "mbedTLS $AEAD (negotiated), 16 KiB records, 1 core" \
		"seal $AEAD_SEAL, open $AEAD_OPEN, seal+open **$AEAD_BOTH MB/s** (start/end $(cspread "aead $AEAD " sealopen_MBps))" \
		"" "" "the single-core bound"
	for a in CHACHA20-POLY1305 AES-128-GCM AES-256-GCM; do
		[ "$a" = "$AEAD" ] && continue
		row "mbedTLS $a, same" "seal $(cval "aead $a " seal_MBps), open $(cval "aead $a " open_MBps), seal+open $(cval "aead $a " sealopen_MBps) MB/s" \
			"$AEAD seal+open" "$(calc "100 * $(cval "aead $a " sealopen_MBps) / $AEAD_BOTH" 0)%" ""
	done
	row "OpenSSL chacha20-poly1305 seal (stunnel4's AEAD)" "${OSSL_CHACHA:-?} MB/s" \
		"mbedTLS seal" "$(calc "${OSSL_CHACHA:-0} / $AEAD_SEAL" 1)x" ""
	row "mbedTLS P-256 ECDSA sign / verify; ECDHE $CURVE (keygen+shared), 1 core" \
		"$SIGN / $VERIFY / $ECDHE per s" "" "" ""
	row "1 stream, amesh (hbone-tool client -> server)" \
		"**$(mbps amesh-1) MB/s** ($(gbps amesh-1) Gbit/s), $(cpg amesh-1) CPU-s/GiB (client $(cpg1 amesh-1 1) + server $(cpg1 amesh-1 2)), ${BUSY[amesh-1]} CPUs busy" \
		"seal+open bound $AEAD_BOTH MB/s" "**$ONE_RATIO%**" ">= 85%: $V_ONE"
	row "1 stream, amesh, CPU-normalised: both proxies' work on one core" \
		"$(calc "1073741824 / $(cpg amesh-1) / 1e6" 1) MB/s" "seal+open bound" \
		"$(share amesh-1)%" "(machine-load independent)"
	row "1 stream, stunnel4 pair ($ST_SUITE)" \
		"$(mbps stunnel-1) MB/s ($(gbps stunnel-1) Gbit/s), $(cpg stunnel-1) CPU-s/GiB, ${BUSY[stunnel-1]} CPUs busy" \
		"amesh / stunnel4" "$VS_ST1%" ""
	row "1 stream, direct" "$(mbps direct-1) MB/s ($(gbps direct-1) Gbit/s), ${BUSY[direct-1]} CPUs busy" "" "" ""
	row "16 streams, amesh (one HBONE connection)" \
		"$(mbps amesh-16) MB/s ($(gbps amesh-16) Gbit/s), $(cpg amesh-16) CPU-s/GiB, ${BUSY[amesh-16]} CPUs busy" \
		"seal+open bound" "$SIXTEEN_RATIO%" ""
	row "16 streams, stunnel4 pair (16 TLS connections)" \
		"$(mbps stunnel-16) MB/s ($(gbps stunnel-16) Gbit/s), $(cpg stunnel-16) CPU-s/GiB, ${BUSY[stunnel-16]} CPUs busy" \
		"amesh / stunnel4" "$VS_ST16%" ""
	row "16 streams, direct" "$(mbps direct-16) MB/s ($(gbps direct-16) Gbit/s), ${BUSY[direct-16]} CPUs busy" "" "" ""
	row "AEAD share of amesh proxy CPU (1 / 16 streams)" \
		"$(share amesh-1)% / $(share amesh-16)%" \
		"seal+open alone: $CRYPTO_CPG CPU-s/GiB" "" ""
	row "handshakes, amesh ($HS_OK of $NCONNS new connections, $CONC in flight)" \
		"**$HS_PER_SCPU per server CPU-s** ($HS_PER_CCPU per client CPU-s; $HS_WALL/s wall, p50 $HS_P50 ms, p99 $HS_P99 ms; $HS_BUSY CPUs busy)" \
		"sign + 2 verify + ECDHE $CURVE per side: $HS_BOUND/s (start/end $(cspread "bound_${CURVE_KEY}_per_s" "bound_${CURVE_KEY}_per_s"))" \
		"**$HS_RATIO%** (wall $HS_RATIO_WALL%)" \
		">= 90%: $V_HS"
	row "handshakes, same, against sign + 2 verify only" "" "$HS_BOUND_SV/s" "$HS_RATIO_SV%" ""
	row "RSS per idle stream: $NSTREAMS opened at once, never used ($STREAMS_UP streams on $STREAM_CONNS connection)" \
		"**server $ST_S_IDLE + client $ST_C_IDLE KiB**" "" "" "<= 2 KiB each: $V_ST_IDLE"
	row "RSS per idle stream: $NSTREAMS opened $CONC at a time, one byte each way ($STREAMS_UP2 on $STREAM_CONNS2)" \
		"**server $ST_S_USED + client $ST_C_USED KiB**" "" "" "<= 2 KiB each: $V_ST_USED"
	row "RSS per idle connection (with its one stream, used)" \
		"server $CN_S + client $CN_C KiB" "less the used stream" \
		"server $CN_S_NET + client $CN_C_NET KiB" ""
	row "other load on the machine (busy CPUs, 1 s before / after)" \
		"$BG_LOAD_BEFORE / $BG_LOAD_AFTER" "2 CPUs" "" ""
}

reading() {
	echo "- Single stream: $(mbps amesh-1) MB/s is $ONE_RATIO% of the single-core $AEAD seal+open" \
		"rate ($AEAD_BOTH MB/s): $V_ONE against >= 85%. The proxies spent $(cpg amesh-1)" \
		"CPU-s per GiB, of which the AEAD itself accounts for $CRYPTO_CPG ($(share amesh-1)%)." \
		"stunnel4 (OpenSSL, AEAD ${OSSL_CHACHA:-?} MB/s) carried $(mbps stunnel-1) MB/s with" \
		"$(cpg stunnel-1) CPU-s/GiB."
	echo "- 16 streams on one HBONE connection: $(mbps amesh-16) MB/s ($SIXTEEN_RATIO% of the" \
		"bound); one connection means one TLS session, so one core per direction at most."
	echo "- Handshakes: $HS_PER_SCPU per server CPU-second is $HS_RATIO% of the $HS_BOUND/s that" \
		"one P-256 sign, two verifies and one $CURVE ECDHE allow on one core: $V_HS against" \
		">= 90% ($HS_RATIO_SV% of the sign+verify-only bound). Wall clock: $HS_WALL/s with" \
		"client and server sharing the machine. $POOL_OPENED pool connections opened for" \
		"$((NCONNS + 1)) tunnels; the server accepted $SRV_ACCEPTED; $HS_FAILED failed."
	echo "- Idle streams (RSS growth of each process over one connection with one stream, per" \
		"added stream): opened all at once and never used, server $ST_S_IDLE + client" \
		"$ST_C_IDLE KiB, $V_ST_IDLE against <= 2 KiB; opened $CONC at a time with one byte each" \
		"way, server $ST_S_USED + client $ST_C_USED KiB: $V_ST_USED."
	echo "- Idle connections: server $CN_S + client $CN_C KiB each (with one used stream); no goal."
}

TABLE=$(table)
READING=$(reading)
echo
echo "$TABLE"
echo
echo "$READING"

if [ "$OUTFILE" != - ]; then
	{
		echo "HBONE benchmark results"
		echo "======================="
		echo
		echo "Written by bench/hbone/run.sh; bench/README says what each number means and reads the results."
		echo
		echo "- command: \`$CMDLINE\` (build tree $BUILD)"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s"
		echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
			"$(uname -sr), mbedTLS $(dpkg-query -W -f '${Version}' libmbedtls-dev 2>/dev/null || echo '?')," \
			"$(openssl version | cut -d' ' -f1-2), $(stunnel4 -version 2>&1 | grep -m1 -o 'stunnel [0-9.]*'), $(iperf3 --version | head -n 1 | cut -d' ' -f1-2)"
		echo "- negotiated: amesh client and server $SUITE_LINE; the amesh server gave an OpenSSL" \
			"client that offered AES-128-GCM and P-256 first $OSSL_SUITE with ECDHE $CURVE" \
			"(server preference); stunnel4 $ST_SUITE (configured $OSSL_CIPHER, $OSSL_CURVE)"
		echo "- iperf3: $DUR s per run, client -> server (the tunnel's client encrypts, its server" \
			"decrypts); peak RSS of the throughput proxies: client $AMESH_MAXRSS_C1 KiB, server" \
			"$AMESH_MAXRSS_S1 KiB"
		echo
		echo "$TABLE"
		echo
		echo "Reading against the goals of issue 3:"
		echo
		echo "$READING"
	} >"$OUTFILE.tmp" && mv "$OUTFILE.tmp" "$OUTFILE"
	log "written to $OUTFILE"
fi
