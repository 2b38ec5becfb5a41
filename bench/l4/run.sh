#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read through ${!name}, set through printf -v
#
# L4 mesh benchmark (bench/README; issue 4, "bench/l4"). One run on the two-host lab of
# tests/e2e/lab.sh (network namespaces only: no traffic leaves them) compares three paths from a
# client workload on host A to a server workload on host B:
#   direct   echo-a -> other-b: workloads that are never enrolled; no interception rules and no
#            proxy on the path;
#   amesh    client-a -> echo-b, both enrolled with `amesh cni add`: app -> nft redirect ->
#            ztunnel A (outbound 15001) -> HBONE (mTLS, HTTP/2 CONNECT) -> ztunnel B (15008 in
#            echo-b's namespace) -> app;
#   stunnel  echo-a -> other-b through a stunnel4 pair with the same amesh-issued ECDSA
#            certificates, TLS 1.2 ECDHE-ECDSA-CHACHA20-POLY1305: client side in echo-a's
#            namespace (the app connects to 127.0.0.1), server side in host B's namespace (it
#            connects on to other-b over host B's bridge).
# All three cross the same links: workload veth, host A, the wire, host B, workload veth.
# Measured:
#   (a) HTTP/1.1 GETs answered with 1 KB bodies (`loadgen --serve` in the server workload) at a
#       fixed rate (default 1000/s) over 4 keep-alive connections from bench/loadgen (open loop;
#       latency from each request's scheduled time). The three paths run in interleaved rounds
#       (default 5 rounds of 1 s warm-up + 4 s, the order rotating each round) so that the
#       machine's changing background load hits all of them alike. Reported: the median over
#       rounds of p50/p90/p99, the ADDED latency as that median of the path less that median
#       of direct, each round's p99; CPU seconds of the proxies (utime+stime of
#       /proc/PID/stat, both ztunnels, both stunnels) over all rounds, as vCPU per 1000
#       requests/s; peak RSS (VmHWM, reset through /proc/PID/clear_refs before the first round)
#       of each proxy.
#   (b) iperf3, one stream and 8 streams (-P 8), client in the client workload, server in the
#       server workload, through each path.
#   (c) VmRSS of both ztunnels before and while 10,000 idle connections go through amesh (each
#       carried one byte each way first, so its whole tunnel exists), per connection. The
#       ztunnels are restarted before (c) (they re-open the enrolled namespaces from state_dir)
#       so (c) starts from a fresh heap.
# Prints one markdown table and writes it, with the command, date and machine, to RESULTS.md.
# The whole run is bounded (a watchdog stops it after 290 s); everything it started goes in an
# EXIT trap, lab included.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-r RATE] [-c CONNS] [-R ROUNDS] [-d SECS] [-w SECS]
#               [-i SECS] [-n IDLE] [-S US] [-O on|off] [-W N] [-p] [-s] [-P DIR]
#   -B  the build tree with amesh and bench/loadgen (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/l4/RESULTS.md in the source tree; - for none)
#   -r  requests per second of the fixed-rate runs (default 1000)
#   -c  keep-alive connections of the fixed-rate runs (default 4)
#   -R  rounds of fixed-rate runs, each path once per round (default 5)
#   -d  measured seconds per fixed-rate run (default 4), after -w seconds of warm-up (default 1)
#   -i  seconds per iperf3 run (default 5; six runs)
#   -n  idle connections through amesh (default 10000)
#   -S  loadgen --spin US (default 0: no spinning; see bench/loadgen.c)
#   -O  [tls] record_offload of both ztunnels (default: amesh.conf's default, on)
#   -W  [ztunnel] workers of both ztunnels (default: amesh.conf's default, 1)
#   -p  also profile: one more amesh fixed-rate run (not counted in the table) under
#       `perf record -g` of both ztunnels; `perf report --stdio --no-children` of each goes to
#       profile-ztunnel-{a,b}.txt next to the results file
#   -s  also count system calls: one more fixed-rate run of amesh and one of stunnel4 (neither
#       counted in the table) under `perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_*`
#       of each proxy; reported as system calls per request per proxy (all of them, and the
#       writes, reads and epoll waits among them), requests being what loadgen sent in that
#       run, warm-up included. (perf's tracepoints, not `strace -c`: ptrace stops every call and
#       slows the proxy a hundredfold, so requests pile up and share writes they would not.)
#   -P  also profile iperf3: after (b), one more 1-stream and one more 8-stream iperf3 run
#       through amesh and through stunnel4 (not counted in the table), each proxy under
#       `perf record -F 999` (flat, no call graphs: DWARF unwinding at this rate costs more than
#       the proxy) and `perf stat --per-thread` (task-clock, context switches, system calls);
#       the machine's busy CPUs and each iperf3 end's CPU share too. `perf report --sort
#       dso,sym` of each proxy and the counts go to DIR/iprof-PATH-STREAMS*
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILDDIR:-$SRC}
OUTFILE=$SRC/bench/l4/RESULTS.md
RATE=1000
CONNS=4
ROUNDS=5
DUR=4
WARM=1
IDUR=5
NIDLE=10000
SPIN=0
PROFILE=0
SYSCOUNT=0
IPROF=
OFFLOAD=
LIMIT=290 # seconds: the whole run stays under five minutes
CMDLINE="bench/l4/run.sh $*"

while getopts "B:o:r:c:R:d:w:i:n:S:O:W:P:psh" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	r) RATE=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	R) ROUNDS=$OPTARG ;;
	d) DUR=$OPTARG ;;
	w) WARM=$OPTARG ;;
	i) IDUR=$OPTARG ;;
	n) NIDLE=$OPTARG ;;
	S) SPIN=$OPTARG ;;
	p) PROFILE=1 ;;
	s) SYSCOUNT=1 ;;
	P) IPROF=$OPTARG ;;
	O) OFFLOAD=$OPTARG ;;
	W) export AMESH_TEST_WORKERS=$OPTARG ;; # lab.sh writes it into [ztunnel]
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2

AMESH=$BUILD/amesh
LOADGEN=$BUILD/bench/loadgen
IDLE=$SRC/bench/l4/idle.py
PY=/usr/bin/python3
HTTP_PORT=8080
IPERF_PORT=5201
IDLE_PORT=9000
ST_HTTP=18080 # stunnel client, 127.0.0.1 in echo-a
ST_IPERF=15201
STS_HTTP=18443 # stunnel server, host B's bridge address
STS_IPERF=15443

NAME=l4-bench
SRC_LOADGEN=$LOADGEN
for f in "$AMESH" "$LOADGEN"; do
	[ -x "$f" ] || { echo "$NAME: $f is not built (make amesh bench/loadgen)" >&2; exit 1; }
done
# The run's lifetime (TMP, EXIT trap, watchdog), lab.sh, and the shared helpers.
# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in iperf3 stunnel4 openssl ip nft ss "$PY"; do
	command -v "$c" >/dev/null || die "$c is not installed"
done
[ "$PROFILE" = 0 ] || command -v perf >/dev/null || die "-p needs perf (linux-perf)"
[ "$SYSCOUNT" = 0 ] || command -v perf >/dev/null || die "-s needs perf (linux-perf)"
if [ -n "$IPROF" ]; then
	command -v perf >/dev/null || die "-P needs perf (linux-perf)"
	mkdir -p "$IPROF" || die "-P $IPROF: cannot create it"
	IPROF=$(cd "$IPROF" && pwd) || die "-P $IPROF: cannot enter it"
fi

# Each of the NIDLE connections is a descriptor in the client, in both ztunnels and in the server.
ulimit -Hn $((NIDLE * 2 + 4096)) 2>/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" -ge $((NIDLE + 1000)) ] || die "open file limit $(ulimit -n) is too low for -n $NIDLE"

# --- helpers (the rest are in bench/lib.sh) ---

stop() { # stop NAME: TERM, and wait for it
	local pid=PID_$1
	ours "${!pid}" && kill "${!pid}" 2>/dev/null
	wait "${!pid}" 2>/dev/null
}

# wait_line FILE REGEX SECS: until a line matches; prints the last matching one.
wait_line() {
	local i
	for i in $(seq $(($3 * 10))); do
		grep -E "$2" "$1" 2>/dev/null | tail -n 1 | grep . && return 0
		sleep 0.1
	done
	return 1
}

reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }                         # VmHWM := VmRSS now
sys_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat; }

# --- the lab ---

log "lab: two hosts, four workloads (tests/e2e/lab.sh), identities from amesh ca"
lab_up "$TMP/lab" || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
if [ -n "$OFFLOAD" ]; then
	printf '\n[tls]\nrecord_offload = %s\n' "$OFFLOAD" | tee -a "$LAB_CONF_A" >>"$LAB_CONF_B"
fi
CERTS_A=$LAB_DIR/node-a/certs/default
CERTS_B=$LAB_DIR/node-b/certs/default
CA=$LAB_DIR/ca/ca.crt

read -r b0 i0 < <(sys_ticks)
sleep 1
read -r b1 i1 < <(sys_ticks)
BG_LOAD_BEFORE=$(calc "($b1 - $b0) / $HZ" 2)

# Servers: the 1 KB HTTP/1.1 responder and iperf3 in both server workloads; the idle-connection
# echo in echo-b.
for ns in b1 b2; do
	bg "http_$ns" "$ns" "$LOADGEN" --serve "0.0.0.0:$HTTP_PORT" --size 1024
	bg "iperf_$ns" "$ns" iperf3 -s -p "$IPERF_PORT"
done
bg idlesrv b1 "$PY" "$IDLE" serve --port "$IDLE_PORT"
for ns in b1 b2; do
	wait_port "$ns" "$HTTP_PORT" "http_$ns"
	wait_port "$ns" "$IPERF_PORT" "iperf_$ns"
done
wait_port b1 "$IDLE_PORT" idlesrv

# The stunnel4 pair.
HB_BR=10.1.2.1 # host B's address on its bridge
stunnel_conf() { # stunnel_conf client|server CERTDIR SA ACCEPT CONNECT [ACCEPT CONNECT]...
	local side=$1 dir=$2 sa=$3 n=0
	shift 3
	cat <<EOF
foreground = yes
pid =
syslog = no
debug = info
$([ "$side" = client ] && echo "client = yes")
cert = $dir/$sa.crt
key = $dir/$sa.key
CAfile = $CA
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.2
sslVersionMax = TLSv1.2
ciphers = ECDHE-ECDSA-CHACHA20-POLY1305
; OpenSSL uses an ECDSA certificate only if its curve (P-256) is among the groups both offer.
curves = X25519:P-256
options = NO_TICKET
EOF
	while [ $# -ge 2 ]; do
		n=$((n + 1))
		printf '[s%d]\naccept = %s\nconnect = %s\n' $n "$1" "$2"
		shift 2
	done
}
stunnel_conf server "$CERTS_B" echo "$HB_BR:$STS_HTTP" "$LAB_B2:$HTTP_PORT" \
	"$HB_BR:$STS_IPERF" "$LAB_B2:$IPERF_PORT" >"$TMP/sts.conf"
stunnel_conf client "$CERTS_A" client "127.0.0.1:$ST_HTTP" "$HB_BR:$STS_HTTP" \
	"127.0.0.1:$ST_IPERF" "$HB_BR:$STS_IPERF" >"$TMP/stc.conf"
bg stc a2 stunnel4 "$TMP/stc.conf"
bg sts hb stunnel4 "$TMP/sts.conf"
wait_port a2 "$ST_HTTP" stc
wait_port hb "$STS_HTTP" sts

# --- the mesh ---

zt_ready() { # zt_ready a|b: the readiness endpoint of ztunnel a|b answers 200
	lab_exec "h$1" "$PY" -c 'import urllib.request, sys
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:15021/healthz/ready", timeout=1).status == 200 else 1)' \
		2>/dev/null
}
zt_start() { # zt_start a|b
	local conf=$LAB_CONF_A i
	[ "$1" = b ] && conf=$LAB_CONF_B
	bg "zt_$1" "h$1" "$AMESH" ztunnel -c "$conf"
	for i in $(seq 50); do
		zt_ready "$1" && return 0
		sleep 0.1
	done
	die "ztunnel $1 is not ready: $(tail -n 3 "$TMP/zt_$1.err")"
}
# probe: one HTTP request from client-a to echo-b (through the mesh once both are enrolled)
probe() {
	lab_exec a1 "$PY" -c 'import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=2)
c.request("GET", "/")
sys.exit(0 if c.getresponse().status == 200 else 1)' "$LAB_B1" "$HTTP_PORT" 2>/dev/null
}
mesh_up() { # until a request goes through the mesh (the access log of ztunnel A shows it)
	local i n
	for i in $(seq 50); do
		n=$(grep -c 'src.workload=client-a' "$TMP/zt_a.err")
		probe && sleep 0.1 && [ "$(grep -c 'src.workload=client-a' "$TMP/zt_a.err")" -gt "$n" ] &&
			return 0
		sleep 0.1
	done
	die "no traffic through the mesh: $(tail -n 3 "$TMP/zt_a.err")"
}

log "amesh: ztunnels on both hosts, client-a and echo-b enrolled with amesh cni add"
zt_start a
zt_start b
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a \
	>"$TMP/enroll.out" 2>&1 || die "enrolling client-a failed: $(cat "$TMP/enroll.out")"
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b \
	>"$TMP/enroll.out" 2>&1 || die "enrolling echo-b failed: $(cat "$TMP/enroll.out")"
mesh_up
# What ztunnel B's HBONE listener picks for a client offering all three suites amesh offers.
lab_exec hb openssl s_client -connect "$LAB_B1:15008" -tls1_2 -alpn h2 -CAfile "$CA" \
	-cert "$CERTS_A/client.crt" -key "$CERTS_A/client.key" \
	-cipher 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305' \
	</dev/null >"$TMP/s_client.out" 2>&1
AM_SUITE=$(sed -n 's/.*Cipher is \(.*\)$/\1/p' "$TMP/s_client.out" | head -n 1)
AM_SUITE="${AM_SUITE:-?}, $(sed -n 's/^Server Temp Key: \([^,]*\),.*/\1/p' "$TMP/s_client.out" | head -n 1)"

# --- (a) fixed-rate HTTP/1.1, interleaved rounds ---

URL_direct="http://$LAB_B2:$HTTP_PORT/"
NS_direct=a2
URL_amesh="http://$LAB_B1:$HTTP_PORT/"
NS_amesh=a1
URL_stunnel="http://127.0.0.1:$ST_HTTP/"
NS_stunnel=a2
PROXY_amesh="$PID_zt_a $PID_zt_b"
PROXY_stunnel="$PID_stc $PID_sts"
PROXY_direct=""
declare -A CPUT CPUU
# heal: restarts whatever of ours has died (a shared machine: someone else's cleanup may signal
# a pid that once was theirs), and says so; the restart shows in RESTARTS.
RESTARTS=
heal() {
	local ns
	for ns in b1 b2; do
		ours "$(eval echo "\$PID_http_$ns")" && continue
		bg "http_$ns" "$ns" "$LOADGEN" --serve "0.0.0.0:$HTTP_PORT" --size 1024
		wait_port "$ns" "$HTTP_PORT" "http_$ns"
		RESTARTS+=" http_$ns"
	done
	ours "$PID_stc" || {
		bg stc a2 stunnel4 "$TMP/stc.conf"
		wait_port a2 "$ST_HTTP" stc
		RESTARTS+=" stunnel-client"
	}
	ours "$PID_sts" || {
		bg sts hb stunnel4 "$TMP/sts.conf"
		wait_port hb "$STS_HTTP" sts
		RESTARTS+=" stunnel-server"
	}
	PROXY_stunnel="$PID_stc $PID_sts"
	for z in a b; do
		ours "$(eval echo "\$PID_zt_$z")" && continue
		zt_start "$z"
		RESTARTS+=" ztunnel-$z"
	done
	PROXY_amesh="$PID_zt_a $PID_zt_b"
	mesh_up
	[ -n "$RESTARTS" ] && log "  restarted so far (killed from outside):$RESTARTS"
}

# fixed PATH ROUND: one loadgen run through PATH; its output goes to lg.PATH.ROUND; the proxies'
# CPU ticks add up in CPUT[PATH.1] and CPUT[PATH.2] (user time alone in CPUU). (No busy-CPU
# figure here: /proc/stat is tick-sampled and misses most of a light, bursty load.)
fixed() {
	local path=$1 round=$2 url ns proxies p i try c0 u0 out
	url=URL_$path ns=NS_$path proxies=PROXY_$path
	out=$TMP/lg.$path.$round
	# A second try if loadgen gets no result (on a shared machine something may kill it); the
	# proxies' CPU counts for the try that gave the result.
	for try in 1 2; do
		c0=() u0=()
		for p in ${!proxies}; do
			c0+=("$(cpu_ticks "$p")")
			u0+=("$(cpu_ticks "$p" user)")
		done
		lab_exec "${!ns}" "$LOADGEN" --url "${!url}" --rate "$RATE" --duration "$DUR" \
			--warmup "$WARM" --connections "$CONNS" --spin "$SPIN" >"$out" 2>"$out.err"
		grep -q '^{' "$out" && break
		[ "$try" = 2 ] && die "loadgen $path failed twice: $(tail -n 3 "$out.err" "$out")"
		log "  round $round $path: loadgen gave no result ($(tail -n 1 "$out.err")): once more"
		heal
	done
	i=0
	for p in ${!proxies}; do
		i=$((i + 1))
		CPUT[$path.$i]=$((${CPUT[$path.$i]:-0} + $(cpu_ticks "$p") - ${c0[$((i - 1))]}))
		CPUU[$path.$i]=$((${CPUU[$path.$i]:-0} + $(cpu_ticks "$p" user) - ${u0[$((i - 1))]}))
	done
	log "  round $round $path: $(grep '^latency' "$out" | cut -c11- | sed 's/, mean.*//')"
}

log "fixed rate: $RATE req/s over $CONNS connections; $ROUNDS rounds of direct, amesh, stunnel4" \
	"(${WARM} s warm-up + ${DUR} s each)"
ZA_BASE=$(status_kb "$PID_zt_a" VmRSS) ZB_BASE=$(status_kb "$PID_zt_b" VmRSS)
ZA_ANON=$(status_kb "$PID_zt_a" RssAnon) ZB_ANON=$(status_kb "$PID_zt_b" RssAnon)
for p in $PROXY_amesh $PROXY_stunnel; do reset_hwm "$p"; done
n_logged=$(grep -c 'src.workload=client-a' "$TMP/zt_a.err")
PATHS=(direct amesh stunnel)
for r in $(seq "$ROUNDS"); do
	for k in 0 1 2; do
		fixed "${PATHS[$(((k + r - 1) % 3))]}" "$r"
	done
done
HWM_ZA=$(status_kb "$PID_zt_a" VmHWM) HWM_ZB=$(status_kb "$PID_zt_b" VmHWM)
pss_kb() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup"; }
PSS_ZA=$(pss_kb "$PID_zt_a") PSS_ZB=$(pss_kb "$PID_zt_b")
PSS_SC=$(pss_kb "$PID_stc") PSS_SS=$(pss_kb "$PID_sts")
HWM_SC=$(status_kb "$PID_stc" VmHWM) HWM_SS=$(status_kb "$PID_sts" VmHWM)
# The mesh carried the amesh runs (ztunnel A logs each connection from client-a); the stunnel
# pair negotiated what it was told to.
[ "$(grep -c 'src.workload=client-a' "$TMP/zt_a.err")" -ge $((n_logged + ROUNDS * CONNS)) ] ||
	die "ztunnel A logged too few connections from client-a: the amesh runs missed the mesh"
ST_SUITE=$(grep -h -m1 -o 'ciphersuite: [A-Z0-9-]*' "$TMP/sts.err" | sed 's/.*: //')
ST_SUITE="${ST_SUITE:-?}, $(grep -h -m1 -o 'Peer temporary key: [A-Za-z0-9-]*' "$TMP/stc.err" | sed 's/.*: //')"

if [ "$PROFILE" = 1 ]; then
	log "profile: one more amesh run ($((WARM + DUR)) s) under perf record -g of both ztunnels"
	for z in a b; do
		pid=PID_zt_$z
		# DWARF unwinding: the binary and libraries have no frame pointers.
		perf record --call-graph dwarf -F 1999 -o "$TMP/perf.$z.data" -p "${!pid}" -- \
			sleep $((WARM + DUR)) >"$TMP/perf.$z.log" 2>&1 &
		PIDS+=($!)
		printf -v "PERF_$z" %s $!
	done
	sleep 0.3
	keep="${CPUT[amesh.1]} ${CPUT[amesh.2]} ${CPUU[amesh.1]} ${CPUU[amesh.2]}"
	fixed amesh profiled
	read -r k1 k2 k3 k4 <<<"$keep"
	CPUT[amesh.1]=$k1 CPUT[amesh.2]=$k2 CPUU[amesh.1]=$k3 CPUU[amesh.2]=$k4 # not counted
	wait "$PERF_a" "$PERF_b"
	for z in a b; do
		{
			echo "# ztunnel $z during $((WARM + DUR)) s at $RATE req/s (bench/l4/run.sh -p)"
			echo "## by shared object"
			perf report -i "$TMP/perf.$z.data" --stdio --no-children -g none --sort dso \
				2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 15
			echo "## inclusive time (children) by symbol"
			perf report -i "$TMP/perf.$z.data" --stdio --children -g none --sort sym \
				2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 250
			echo "## perf report --stdio --no-children (call graphs)"
			perf report -i "$TMP/perf.$z.data" --stdio --no-children --percent-limit 1 \
				2>/dev/null | head -n 300
		} >"$TMP/profile-ztunnel-$z.txt"
	done
	# A summary for RESULTS.md: where each ztunnel's samples go, inclusive of callees.
	profsum() { # profsum a|b
		local f=$TMP/profile-ztunnel-$1.txt
		incl() { # incl LABEL SYMBOL...: the largest inclusive share among the symbols
			local l=$1 v
			shift
			v=$(for sym in "$@"; do
				awk -v s="$sym" '$4 == s && $1 ~ /%$/ { sub(/%/, "", $1); print $1 }' "$f"
			done | sort -g | tail -n 1)
			printf '%s %s%%' "$l" "${v:-0}"
		}
		echo "ztunnel $1: by object $(sed -n '/^## by shared object/,/^##/p' "$f" | grep '%' |
			awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}'); inclusive:" \
			"$(incl 'write()' __GI___libc_write), of which" \
			"$(incl 'softirq delivery in the sender' handle_softirqs);" \
			"$(incl 'epoll_wait()' epoll_wait); $(incl 'switched back in' finish_task_switch.isra.0);" \
			"$(incl 'read()' __GI___libc_read read); $(incl 'epoll_ctl()' do_epoll_ctl);" \
			"$(incl mbedtls_ssl_write mbedtls_ssl_write); $(incl mbedtls_ssl_read mbedtls_ssl_read);" \
			"$(incl 'nghttp2 recv' nghttp2_session_mem_recv); $(incl 'nghttp2 send' nghttp2_session_mem_send)"
	}
	PROFSUM="$(profsum a)
$(profsum b)"
fi

# counted PATH: one more fixed-rate run of PATH (not counted in the table) with `perf stat`
# counting each of its proxies' system calls; sets SC_PATH_1 and SC_PATH_2 to
# "ALL WRITES READS EPOLL" system calls per request of each proxy.
SC_EVENTS=raw_syscalls:sys_enter
for c in write writev sendmsg sendto read readv recvmsg recvfrom epoll_wait epoll_pwait; do
	SC_EVENTS=$SC_EVENTS,syscalls:sys_enter_$c
done
counted() {
	local path=$1 proxies=PROXY_$1 p i=0 spids=() keep sent k
	for p in ${!proxies}; do
		i=$((i + 1))
		perf stat -x, -e "$SC_EVENTS" -o "$TMP/sc.$path.$i" -p "$p" -- \
			sleep $((WARM + DUR + 1)) >/dev/null 2>&1 &
		spids+=($!)
		PIDS+=($!)
	done
	sleep 0.5
	keep="${CPUT[$path.1]} ${CPUT[$path.2]} ${CPUU[$path.1]} ${CPUU[$path.2]}"
	fixed "$path" counted
	read -r k1 k2 k3 k4 <<<"$keep"
	CPUT[$path.1]=$k1 CPUT[$path.2]=$k2 CPUU[$path.1]=$k3 CPUU[$path.2]=$k4 # not counted
	wait "${spids[@]}"
	sent=$($PY -c 'import json, sys
print([json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]["sent"])' \
		"$TMP/lg.$path.counted") || die "no loadgen result for the counted $path run"
	[ "$sent" -gt 0 ] || die "the counted $path run sent no requests"
	for k in $(seq "$i"); do
		grep -q raw_syscalls "$TMP/sc.$path.$k" ||
			die "perf stat of $path proxy $k counted nothing: $(tail -n 2 "$TMP/sc.$path.$k")"
		# perf stat -x,: COUNT,UNIT,EVENT,... ("<not counted>" for an event that never ran)
		printf -v "SC_${path}_$k" %s "$(awk -F, -v n="$sent" '
			{ c = ($1 ~ /^[0-9]+$/) ? $1 : 0 }
			$3 == "raw_syscalls:sys_enter" { all = c }
			$3 ~ /sys_enter_(write|writev|sendmsg|sendto)$/ { w += c }
			$3 ~ /sys_enter_(read|readv|recvmsg|recvfrom)$/ { r += c }
			$3 ~ /sys_enter_epoll_p?wait$/ { e += c }
			END { printf "%.2f %.2f %.2f %.2f", all / n, w / n, r / n, e / n }' \
			"$TMP/sc.$path.$k")"
	done
	SENT_SC[$path]=$sent
}
if [ "$SYSCOUNT" = 1 ]; then
	declare -A SENT_SC
	log "syscalls: one more amesh and one more stunnel4 run ($((WARM + DUR)) s) under perf stat"
	counted amesh
	counted stunnel
	log "  syscalls per request (all writes reads epoll): ztunnel A $SC_amesh_1, B $SC_amesh_2;" \
		"stunnel4 client $SC_stunnel_1, server $SC_stunnel_2"
fi

# --- (b) iperf3 ---

declare -A BPS BYTES ICPU BUSYI
# iperf NAME NS ADDR PORT PARALLEL [PROXY_PID...]
iperf() {
	local name=$1 ns=$2 addr=$3 port=$4 par=$5 p t0=0 t1=0 sb0 si0 sb1 si1 r
	shift 5
	for p in "$@"; do t0=$((t0 + $(cpu_ticks "$p"))); done
	read -r sb0 si0 < <(sys_ticks)
	lab_exec "$ns" timeout $((IDUR + 20)) iperf3 -c "$addr" -p "$port" -t "$IDUR" -P "$par" -J \
		>"$TMP/iperf.$name.json" 2>&1
	read -r sb1 si1 < <(sys_ticks)
	for p in "$@"; do t1=$((t1 + $(cpu_ticks "$p"))); done
	ICPU[$name]=$(calc "($t1 - $t0) / $HZ" 2)
	BUSYI[$name]=$(calc "($sb1 - $sb0) / ($sb1 - $sb0 + $si1 - $si0) * $(nproc)" 1)
	r=$($PY - "$TMP/iperf.$name.json" <<'EOF'
import json, sys
try:
    e = json.load(open(sys.argv[1]))["end"]
    print(e["sum_received"]["bytes"], e["sum_received"]["bits_per_second"])
except Exception:
    print("ERR")
EOF
)
	# shellcheck disable=SC2086
	set -- $r
	if [ "$1" = ERR ]; then
		log "iperf3 $name failed: $(head -c 300 "$TMP/iperf.$name.json")"
		BYTES[$name]=0 BPS[$name]=0
	else
		BYTES[$name]=$1 BPS[$name]=$2
	fi
	log "  $name: $(calc "${BPS[$name]} / 1e9" 2) Gbit/s, proxies ${ICPU[$name]} CPU-s," \
		"${BUSYI[$name]} CPUs busy"
}

log "iperf3: 1 and 8 streams, $IDUR s each, direct, amesh, stunnel4"
for par in 1 8; do
	iperf "direct-$par" a2 "$LAB_B2" "$IPERF_PORT" "$par"
	# shellcheck disable=SC2086
	iperf "amesh-$par" a1 "$LAB_B1" "$IPERF_PORT" "$par" $PROXY_amesh
	# shellcheck disable=SC2086
	iperf "stunnel-$par" a2 127.0.0.1 "$ST_IPERF" "$par" $PROXY_stunnel
done
# iprof NAME NS ADDR PORT PARALLEL PROXY_PID...: one more iperf3 run (not counted) with each
# proxy under perf record and perf stat; reports in $IPROF/iprof-NAME*.
iprof() {
	local name=$1 ns=$2 addr=$3 port=$4 par=$5 p k=0 ppids=() sb0 si0 sb1 si1
	shift 5
	for p in "$@"; do
		k=$((k + 1))
		perf record -F 999 -o "$TMP/iprof.$name.$k.data" -p "$p" -- sleep $((IDUR + 1)) \
			>"$TMP/iprof.$name.$k.log" 2>&1 &
		ppids+=($!)
		PIDS+=($!)
		perf stat --per-thread -e task-clock,context-switches,raw_syscalls:sys_enter \
			-o "$IPROF/iprof-$name-$k.stat" -p "$p" -- sleep $((IDUR + 1)) >/dev/null 2>&1 &
		ppids+=($!)
		PIDS+=($!)
	done
	sleep 0.5
	read -r sb0 si0 < <(sys_ticks)
	lab_exec "$ns" timeout $((IDUR + 20)) iperf3 -c "$addr" -p "$port" -t "$IDUR" -P "$par" -J \
		>"$TMP/iperf.prof.$name.json" 2>&1
	read -r sb1 si1 < <(sys_ticks)
	wait "${ppids[@]}"
	$PY - "$TMP/iperf.prof.$name.json" \
		"$(calc "($sb1 - $sb0) / ($sb1 - $sb0 + $si1 - $si0) * $(nproc)" 2)" \
		>"$IPROF/iprof-$name.iperf" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
r = e["sum_received"]
u = e.get("cpu_utilization_percent", {})
print("%.2f Gbit/s, %d bytes, machine %s CPUs busy, iperf3 client %.1f%% server %.1f%% of a CPU"
      % (r["bits_per_second"] / 1e9, r["bytes"], sys.argv[2], u.get("host_total", 0),
         u.get("remote_total", 0)))
EOF
	for p in $(seq "$k"); do
		{
			echo "## by shared object"
			perf report -i "$TMP/iprof.$name.$p.data" --stdio --no-children --sort dso \
				2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 12
			echo "## by symbol"
			perf report -i "$TMP/iprof.$name.$p.data" --stdio --no-children --sort dso,sym \
				2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60
		} >"$IPROF/iprof-$name-$p.txt"
	done
	log "  profiled $name: $(cat "$IPROF/iprof-$name.iperf")"
}
if [ -n "$IPROF" ]; then
	log "iperf3 profiles (-P): one more 1- and 8-stream run through amesh and stunnel4 each"
	for par in 1 8; do
		# shellcheck disable=SC2086
		iprof "amesh-$par" a1 "$LAB_B1" "$IPERF_PORT" "$par" $PROXY_amesh
		# shellcheck disable=SC2086
		iprof "stunnel-$par" a2 127.0.0.1 "$ST_IPERF" "$par" $PROXY_stunnel
	done
fi
stop stc
stop sts

# --- (c) idle connections ---

log "idle connections: $NIDLE through amesh (ztunnels restarted first)"
stop zt_a
stop zt_b
zt_start a
zt_start b
mesh_up
sleep 0.5
ZA_I0=$(status_kb "$PID_zt_a" VmRSS) ZB_I0=$(status_kb "$PID_zt_b" VmRSS)
bg hold a1 "$PY" "$IDLE" hold --addr "$LAB_B1" --port "$IDLE_PORT" --count "$NIDLE" --conc 200 \
	--timeout 120
IDLE_LINE=$(wait_line "$TMP/hold.out" '^up ' 125) || die "idle.py hold did not finish opening"
sleep 1
ZA_I1=$(status_kb "$PID_zt_a" VmRSS) ZB_I1=$(status_kb "$PID_zt_b" VmRSS)
IDLE_ACC=$(grep '^accepted' "$TMP/idlesrv.out" | tail -n 1 | cut -d' ' -f2)
stop hold
# shellcheck disable=SC2086
set -- $IDLE_LINE # up OK of N failed F secs T
IDLE_OK=$2 IDLE_FAILED=$6 IDLE_SECS=$8

read -r b0 i0 < <(sys_ticks)
sleep 1
read -r b1 i1 < <(sys_ticks)
BG_LOAD_AFTER=$(calc "($b1 - $b0) / $HZ" 2)

# --- the numbers ---

# Medians over the rounds, and the added latency as the path's median less direct's, as shell
# assignments. (Not the median of per-round differences: one round's p99 is noisy enough that a
# difference of two of them mostly adds their noise.)
eval "$($PY - "$TMP" "$ROUNDS" <<'EOF'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
runs = {}
for p in ("direct", "amesh", "stunnel"):
    runs[p] = []
    for r in range(1, rounds + 1):
        line = [l for l in open("%s/lg.%s.%d" % (tmp, p, r)) if l.startswith("{")][-1]
        runs[p].append(json.loads(line))
med = statistics.median
for p, rs in runs.items():
    for q in ("p50", "p90", "p99"):
        print("L_%s_%s=%.3f" % (p, q, med(x["latency_ms"][q] for x in rs)))
        if p != "direct":
            d = med(x["latency_ms"][q] for x in rs) - med(y["latency_ms"][q] for y in runs["direct"])
            print("ADD_%s_%s=%.3f" % (p, q, d))
    for q in ("p50", "p99"):
        print("S_%s_%s=%.3f" % (p, q, med(x["service_ms"][q] for x in rs)))
    print("P99S_%s='%s'" % (p, ", ".join("%.2f" % x["latency_ms"]["p99"] for x in rs)))
    print("OK_%s=%d" % (p, sum(x["ok"] for x in rs)))
    print("ERR_%s=%d" % (p, sum(x["errors"] for x in rs)))
    print("NREQ_%s=%d" % (p, sum(x["requests"] for x in rs)))
# Do the rounds' p99 of amesh and stunnel4 overlap? Then their ratio is the machine's noise.
a = [x["latency_ms"]["p99"] for x in runs["amesh"]]
b = [x["latency_ms"]["p99"] for x in runs["stunnel"]]
print("P99_OVERLAP=%d" % (max(min(a), min(b)) <= min(max(a), max(b))))
EOF
)"
[ -n "${P99_OVERLAP:-}" ] || die "could not read the loadgen results"

# The proxies carried warm-up and measured requests alike: all of them count.
NREQ=$(calc "$ROUNDS * $RATE * ($WARM + $DUR)" 0)
vcpu() { calc "$1 / $HZ / ($NREQ / 1000)" 3; } # CPU ticks -> vCPU at 1000 requests/s
V_ZA=$(vcpu "${CPUT[amesh.1]}") V_ZB=$(vcpu "${CPUT[amesh.2]}")
V_SC=$(vcpu "${CPUT[stunnel.1]}") V_SS=$(vcpu "${CPUT[stunnel.2]}")
U_ZA=$(vcpu "${CPUU[amesh.1]}") U_ZB=$(vcpu "${CPUU[amesh.2]}")
U_SC=$(vcpu "${CPUU[stunnel.1]}") U_SS=$(vcpu "${CPUU[stunnel.2]}")
CPU_ZA=$(calc "${CPUT[amesh.1]} / $HZ" 2) CPU_ZB=$(calc "${CPUT[amesh.2]} / $HZ" 2)
CPU_SC=$(calc "${CPUT[stunnel.1]} / $HZ" 2) CPU_SS=$(calc "${CPUT[stunnel.2]} / $HZ" 2)
# user-space share of the proxies' CPU, in percent
USH_Z=$(calc "100 * (${CPUU[amesh.1]} + ${CPUU[amesh.2]}) / (${CPUT[amesh.1]} + ${CPUT[amesh.2]} + 0.001)" 0)
USH_S=$(calc "100 * (${CPUU[stunnel.1]} + ${CPUU[stunnel.2]}) / (${CPUT[stunnel.1]} + ${CPUT[stunnel.2]} + 0.001)" 0)
RATIO_P99=$(calc "$ADD_stunnel_p99 > 0 ? $ADD_amesh_p99 / $ADD_stunnel_p99 : -1" 2)
G_P99=$(verdict "$ADD_amesh_p99 <= 0.10")
G_P99_ST=$(verdict "$ADD_stunnel_p99 > 0 && $ADD_amesh_p99 <= 0.7 * $ADD_stunnel_p99")
[ "$P99_OVERLAP" = 1 ] && G_P99_ST="$G_P99_ST, within noise"
G_CPU=$(verdict "$V_ZA <= 0.03 && $V_ZB <= 0.03")
MB4=$(calc "4000000 / 1024" 0) # 4 MB in KiB
G_MEM=$(verdict "$HWM_ZA <= $MB4 && $HWM_ZB <= $MB4")
PER_A=$(calc "($ZA_I1 - $ZA_I0) / ($IDLE_OK > 0 ? $IDLE_OK : 1)" 2)
PER_B=$(calc "($ZB_I1 - $ZB_I0) / ($IDLE_OK > 0 ? $IDLE_OK : 1)" 2)
G_IDLE=$(verdict "$IDLE_OK == $NIDLE && $PER_A <= 2 && $PER_B <= 2")

gbps() { calc "${BPS[$1]} / 1e9" 2; }
cpg() { [ "${BYTES[$1]}" -gt 0 ] && calc "${ICPU[$1]} / (${BYTES[$1]} / 1073741824)" 2 || echo -; }
lat() { local a=L_$1_p50 b=L_$1_p90 c=L_$1_p99; echo "${!a} / ${!b} / ${!c}"; }
added() { local a=ADD_$1_p50 b=ADD_$1_p90 c=ADD_$1_p99; echo "${!a} / ${!b} / **${!c}**"; }
svc() { local a=S_$1_p50 b=S_$1_p99; echo "${!a} / ${!b}"; }
runinfo() {
	local o=OK_$1 e=ERR_$1 n=NREQ_$1
	echo "${!o} of ${!n} ok, ${!e} errors"
}
p99s() { local v=P99S_$1; echo "${!v}"; }

row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
table() {
	echo "| measurement | direct | amesh L4 (ztunnel A + B) | stunnel4 pair (client + server) | goal: verdict |"
	echo "|---|---|---|---|---|"
	row "(a) latency p50 / p90 / p99, ms (median of $ROUNDS rounds)" \
		"$(lat direct)" "$(lat amesh)" "$(lat stunnel)" ""
	row "(a) **added** latency p50 / p90 / p99 vs direct, ms (the medians above less direct's)" \
		"-" "$(added amesh)" "$(added stunnel)" \
		"p99 <= 0.10 ms: **$G_P99**; <= 0.7x stunnel (amesh/stunnel = $RATIO_P99): **$G_P99_ST**"
	row "(a) p99 of each round, ms" "$(p99s direct)" "$(p99s amesh)" "$(p99s stunnel)" ""
	row "(a) service time p50 / p99, ms (write to response, median)" \
		"$(svc direct)" "$(svc amesh)" "$(svc stunnel)" ""
	row "(a) requests measured" "$(runinfo direct)" "$(runinfo amesh)" "$(runinfo stunnel)" ""
	row "(a) proxy CPU over all rounds, s ($NREQ requests with warm-up)" "-" \
		"$CPU_ZA + $CPU_ZB" "$CPU_SC + $CPU_SS" ""
	row "(a) **vCPU per 1000 req/s**, each proxy" "-" "**$V_ZA + $V_ZB**" "$V_SC + $V_SS" \
		"<= 0.03 per ztunnel: **$G_CPU**"
	row "(a) of which user space (utime: the kernel splits user/system by ticks, roughly)" "-" \
		"$U_ZA + $U_ZB ($USH_Z%)" "$U_SC + $U_SS ($USH_S%)" ""
	row "(a) **peak RSS** (VmHWM over the rounds), each proxy, MiB" "-" \
		"**$(mib "$HWM_ZA") + $(mib "$HWM_ZB")** (before: $(mib "$ZA_BASE") + $(mib "$ZB_BASE"), anonymous $(mib "$ZA_ANON") + $(mib "$ZB_ANON"))" \
		"$(mib "$HWM_SC") + $(mib "$HWM_SS")" "<= 4 MB per ztunnel: **$G_MEM**"
	row "(a) PSS after the rounds (shared library pages divided among their users), MiB" "-" \
		"$(mib "$PSS_ZA") + $(mib "$PSS_ZB")" "$(mib "$PSS_SC") + $(mib "$PSS_SS")" ""
	if [ "$SYSCOUNT" = 1 ]; then
		scs() { # scs PATH N: "all (w writes, r reads, e epoll waits)"
			local v=SC_$1_$2
			set -- ${!v}
			echo "$1 ($2 w, $3 r, $4 epoll)"
		}
		row "(a) **system calls per request**, each proxy (of which writes, reads, epoll waits; -s: one more run under perf stat, ${SENT_SC[amesh]} / ${SENT_SC[stunnel]} requests)" "-" \
			"**$(scs amesh 1) + $(scs amesh 2)**" "$(scs stunnel 1) + $(scs stunnel 2)" ""
	fi
	row "(b) iperf3 1 stream, Gbit/s (proxies' CPU-s per GiB)" \
		"$(gbps direct-1) (${BUSYI[direct-1]} CPUs busy)" \
		"$(gbps amesh-1) ($(cpg amesh-1); ${BUSYI[amesh-1]} busy)" \
		"$(gbps stunnel-1) ($(cpg stunnel-1); ${BUSYI[stunnel-1]} busy)" ""
	row "(b) iperf3 8 streams (-P 8), Gbit/s (proxies' CPU-s per GiB)" \
		"$(gbps direct-8) (${BUSYI[direct-8]} CPUs busy)" \
		"$(gbps amesh-8) ($(cpg amesh-8); ${BUSYI[amesh-8]} busy)" \
		"$(gbps stunnel-8) ($(cpg stunnel-8); ${BUSYI[stunnel-8]} busy)" ""
	row "(c) VmRSS before -> with $IDLE_OK idle connections, KiB" "-" \
		"A $ZA_I0 -> $ZA_I1, B $ZB_I0 -> $ZB_I1" "-" ""
	row "(c) **RSS per idle connection**, KiB" "-" "**A $PER_A + B $PER_B**" "-" \
		"<= 2 KiB (per ztunnel): **$G_IDLE**"
	row "other load on the machine (busy CPUs, 1 s before / after)" \
		"$BG_LOAD_BEFORE / $BG_LOAD_AFTER of $(nproc)" "" "" ""
}

reading() {
	echo "- Latency: at $RATE req/s amesh adds $ADD_amesh_p50 ms at p50 and $ADD_amesh_p99 ms" \
		"at p99 over direct ($G_P99 against 0.10 ms); the stunnel4 pair adds $ADD_stunnel_p50 and" \
		"$ADD_stunnel_p99 ms, so amesh's p99 addition is ${RATIO_P99}x stunnel's ($G_P99_ST against" \
		"0.7x$(awk "BEGIN { exit !($RATIO_P99 < 0) }" && echo "; stunnel's median addition was not" \
		"positive, so there is no ratio")). Direct p99 was $(p99s direct) ms round by round:" \
		"differences of that order are the shared machine's noise, not the proxies.$(
			[ "$P99_OVERLAP" = 1 ] && echo " The rounds' p99 of amesh ($(p99s amesh)) and" \
				"stunnel4 ($(p99s stunnel)) overlap: on this machine the p99 ratio can come out" \
				"either side of 0.7x from one run to the next; the p50 and p90 are steadier.")"
	echo "- CPU: ztunnel A used $V_ZA and ztunnel B $V_ZB vCPU per 1000 req/s ($G_CPU against" \
		"0.03 each); the stunnel pair $V_SC + $V_SS. By the kernel's tick-sampled split only" \
		"$USH_Z% of the ztunnels' time (stunnel4: $USH_S%) is user space; the rest is the kernel" \
		"working for them: reads, writes, epoll wake-ups and, because veth delivery runs in the" \
		"sender's softirq (and this kernel has no IRQ time accounting), the whole receive path of" \
		"each packet they send, through bridges, netfilter and the far host. amesh carries the" \
		"$CONNS connections as streams of one HBONE connection; stunnel4 runs one TLS connection" \
		"(and thread) for each."
	echo "- Memory: peak RSS over the rounds $(mib "$HWM_ZA") MiB (A) and $(mib "$HWM_ZB") MiB (B)" \
		"($G_MEM against 4 MB each), $((HWM_ZA - ZA_BASE)) and $((HWM_ZB - ZB_BASE)) KiB above" \
		"the idle process, whose own RSS is mostly mapped pages of the binary and shared" \
		"libraries (anonymous: $(mib "$ZA_ANON") + $(mib "$ZB_ANON") MiB; PSS $(mib "$PSS_ZA") +" \
		"$(mib "$PSS_ZB") MiB). stunnel4: $(mib "$HWM_SC") + $(mib "$HWM_SS") MiB."
	echo "- Throughput: one stream $(gbps amesh-1) Gbit/s through amesh, $(gbps stunnel-1)" \
		"through stunnel4, $(gbps direct-1) direct; 8 streams $(gbps amesh-8) / $(gbps stunnel-8)" \
		"/ $(gbps direct-8) (amesh puts them on one HBONE connection, one TLS session; stunnel4" \
		"on 8). Proxies, iperf3 and the other tenants share $(nproc) CPUs: CPU-bound figures," \
		"read the CPU-s per GiB beside them."
	echo "- Idle connections: $IDLE_OK of $NIDLE up ($IDLE_FAILED failed, opened in $IDLE_SECS s," \
		"the server accepted ${IDLE_ACC:-?}); ztunnel A grew $PER_A KiB and ztunnel B $PER_B KiB" \
		"per connection ($G_IDLE against 2 KiB). Kernel socket memory is not in these figures."
}

TABLE=$(table)
READING=$(reading)
echo
echo "$TABLE"
echo
echo "$READING"

if [ "$OUTFILE" != - ]; then
	OUTDIR=$(dirname "$OUTFILE")
	mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
	{
		echo "L4 mesh benchmark results"
		echo "========================="
		echo
		echo "Written by bench/l4/run.sh; see bench/README for what each number means."
		echo
		echo "- command: \`$CMDLINE\` (build tree $BUILD)"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s"
		echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)," \
			"$(uname -sr), mbedTLS $(dpkg-query -W -f '${Version}' libmbedtls-dev 2>/dev/null || echo '?')," \
			"$(openssl version | cut -d' ' -f1-2), $(stunnel4 -version 2>&1 | grep -m1 -o 'stunnel [0-9.]*')," \
			"$(iperf3 --version | head -n 1 | cut -d' ' -f1-2)"
		echo "- paths (lab of tests/e2e/lab.sh): direct and stunnel4 echo-a -> other-b, amesh" \
			"client-a -> echo-b (same links); server \`loadgen --serve\` with 1024-byte bodies;" \
			"load \`bench/loadgen --rate $RATE --connections $CONNS --warmup $WARM --duration $DUR" \
			"--spin $SPIN\`, $ROUNDS interleaved rounds; iperf3 $IDUR s per run"
		[ -n "$RESTARTS" ] && echo "- restarted during the run after something outside killed them:$RESTARTS"
		echo "- negotiated: amesh $AM_SUITE (what OpenSSL sees from ztunnel B's HBONE listener;" \
			"[tls] record_offload ${OFFLOAD:-default, on}); stunnel4 $ST_SUITE"
		echo
		echo "$TABLE"
		echo
		echo "Goals of issue 4: p99 added <= 0.10 ms and <= 0.7x the stunnel pair; <= 0.03 vCPU and" \
			"<= 4 MB per ztunnel per 1000 rps; <= 2 KiB per idle connection. Reading:"
		echo
		echo "$READING"
		if [ "$PROFILE" = 1 ]; then
			echo
			echo "Profile (-p: \`perf record --call-graph dwarf\` of each ztunnel during one more" \
				"amesh run, not counted above; percentages of its samples):"
			echo
			while IFS= read -r l; do echo "- $l"; done <<<"$PROFSUM"
		fi
	} >"$OUTFILE.tmp" && mv "$OUTFILE.tmp" "$OUTFILE"
	log "written to $OUTFILE"
	if [ "$PROFILE" = 1 ]; then
		for z in a b; do
			cp "$TMP/profile-ztunnel-$z.txt" "$OUTDIR/profile-ztunnel-$z.txt"
		done
		log "profiles in $OUTDIR/profile-ztunnel-{a,b}.txt"
	fi
fi
