#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read by bench/lib.sh
#
# Identity benchmark (bench/README; issue 14, "bench/identity"). One run, as root, on the two-host
# lab of tests/e2e/lab.sh, with `amesh ca serve` on host A (192.168.10.1:15012) and both hosts
# joined with `amesh ca token` / `amesh ca join`:
#   (0) the bound: P-256 ECDSA signs per CPU second of mbedTLS on this machine (signrate, at the
#       start and at the end; the mean counts), with what a signature check and an ECDHE share
#       cost beside it;
#   (a) certificates issued per CPU second of the CA: caload (THREADS threads on host A, the real
#       client, one TLS connection per request with the node certificate) for SECS seconds; the
#       CA's utime+stime from /proc/PID/stat before and after; the ratio to the sign bound (goal
#       >= 80%) and to the bound of what one issue costs the CA in public-key operations;
#   (b) time from `amesh cni add` to the first successful connection of a new identity: WORKLOADS
#       workloads on host A (namespaces of their own on host A's bridge, each with a service
#       account no one had before, so each needs a certificate from the CA) enrolled one after
#       another; each times, from inside its namespace, `amesh cni add` and then connections to
#       service "enr" (VIP 10.96.0.30, endpoint echo-b on host B, enrolled) until one carries a line
#       there and back (a VIP answers only through the ztunnels); p50 / p99 / max (goal p99 < 100 ms);
#   (c) a renewal storm: storm (one identity agent, as a ztunnel runs it) holding IDS identities
#       of node-a with cert_ttl TTL for STORM seconds; the CA's issue counter and CPU every second.
# Prints one markdown table and writes it, with the storm's time series, to RESULTS.md.
# Bounded (watchdog 330 s); everything it started, the lab included, goes in an EXIT trap.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-n THREADS] [-d SECS] [-w WORKLOADS] [-i IDS]
#               [-l TTL] [-s STORM] [-t SECS] [-p]
#   -B  the build tree with amesh and bench/identity/{signrate,caload,storm} (default: $BUILDDIR,
#       else the source tree; make bench-identity builds them)
#   -o  where to write the results (default: bench/identity/RESULTS.md in the source tree; - for none)
#   -n  caload threads (default 4)          -d  caload seconds (default 10)
#   -w  workloads enrolled in (b) (default 30)
#   -i  identities of the storm (default 1000)
#   -l  the storm's cert_ttl in seconds (default 240)   -s  the storm's seconds (default 190)
#   -t  CPU seconds per signrate measurement (default 1)
#   -p  also record the CA under perf during (a) (perf record -g; summary by DSO and symbol)
#   -k DIR  keep the logs of the CA, the ztunnels and storm in DIR (debug level for the ztunnels)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=identity-bench
OUTFILE=$SRC/bench/identity/RESULTS.md
LIMIT=330
CMDLINE="bench/identity/run.sh $*"
BUILD=${BUILDDIR:-$SRC}
THREADS=4 SECS=10 WORKLOADS=30 IDS=1000 TTL=240 STORM=190 SR_SECS=1 PERF='' KEEP=''
OPTIND=1
while getopts "B:o:n:d:w:i:l:s:t:pk:h" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	n) THREADS=$OPTARG ;;
	d) SECS=$OPTARG ;;
	w) WORKLOADS=$OPTARG ;;
	i) IDS=$OPTARG ;;
	l) TTL=$OPTARG ;;
	s) STORM=$OPTARG ;;
	t) SR_SECS=$OPTARG ;;
	p) PERF=1 ;;
	k) KEEP=$OPTARG ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2
AMESH=$BUILD/amesh
SIGNRATE=$BUILD/bench/identity/signrate
CALOAD=$BUILD/bench/identity/caload
STORMB=$BUILD/bench/identity/storm
for f in "$AMESH" "$SIGNRATE" "$CALOAD" "$STORMB"; do
	[ -x "$f" ] || { echo "$NAME: $f is not built (make bench-identity)" >&2; exit 1; }
done
if [ "$WORKLOADS" -lt 1 ] || [ "$WORKLOADS" -gt 99 ] || [ "$IDS" -lt 1 ] || [ "$IDS" -gt 4000 ]; then
	echo "$NAME: -w 1..99, -i 1..4000" >&2
	exit 2
fi
PY=/usr/bin/python3
VIP=10.96.0.30
CA_ADDR=192.168.10.1:15012

# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in nft curl openssl "$PY"; do command -v "$c" >/dev/null || die "$c is not installed"; done
[ -n "$PERF" ] && { command -v perf >/dev/null || die "perf is not installed"; }

# signrate: the bound, as "name ops per_s us" lines into SR_<n>.
signrate() {
	"$SIGNRATE" -t "$SR_SECS" >"$TMP/signrate.$1" || die "signrate failed"
	log "  signrate ($1): $(awk '{printf "%s %s/s; ", $1, $3}' "$TMP/signrate.$1")"
}
sr() { awk -v k="$2" '$1 == k {print $3}' "$TMP/signrate.$1"; }
log "bound: mbedTLS P-256 signs per CPU second"
signrate start

# --- the lab, the CA, the joins ---
log "lab: two hosts; amesh ca serve on host A; both hosts join"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
"$AMESH" ca init --dir "$LAB_DIR/ca" >/dev/null || die "amesh ca init failed"
FP=sha256:$(openssl x509 -in "$LAB_DIR/ca/ca.crt" -outform DER | sha256sum | cut -d' ' -f1)
{
	# (a): caload's identities; (b): one fresh service account per enrolled workload, and a
	# service whose one endpoint is echo-b; (c): the storm's identities.
	for ((i = 0; i < THREADS; i++)); do
		printf '[workload "load-%d"]\nnamespace = bench\nservice_account = w%d\nnode = node-a\n' "$i" "$i"
		printf 'addresses = 10.3.0.%d\n\n' $((i + 1))
	done
	for ((i = 1; i <= WORKLOADS; i++)); do
		printf '[workload "enr-%02d"]\nnamespace = enr\nservice_account = e%02d\nnode = node-a\n' "$i" "$i"
		printf 'addresses = 10.1.1.%d\nlabels = app=enr\n\n' $((100 + i))
	done
	printf '[service "enr"]\nnamespace = default\nvip = %s\nports = 80:8080\nselector = version=b\n\n' "$VIP"
	for ((i = 0; i < IDS; i++)); do
		printf '[workload "storm-%d"]\nnamespace = storm\nservice_account = s%d\nnode = node-a\n' "$i" "$i"
		printf 'addresses = 10.4.%d.%d\n\n' $((i / 250)) $((i % 250 + 1))
	done
} >"$LAB_REGISTRY/50-bench.conf"
cat >"$LAB_DIR/ca.conf" <<EOF
[mesh]
registry = $LAB_REGISTRY
[ca]
dir = $LAB_DIR/ca
address = $CA_ADDR
admin_address = 127.0.0.1:15010
metrics_address = 127.0.0.1:15014
readiness_address = 127.0.0.1:15013
EOF
for h in a b; do
	mkdir -p "$LAB_DIR/node-$h/node"
	cat >>"$LAB_DIR/node-$h.conf" <<EOF
ca_address = $CA_ADDR
node_cert = $LAB_DIR/node-$h/node/node.crt
node_key = $LAB_DIR/node-$h/node/node.key
EOF
	# The [identity] section is not the last one: move the three lines into it.
	"$PY" - "$LAB_DIR/node-$h.conf" <<'EOF' || die "cannot edit the node configuration"
import sys
p = sys.argv[1]
lines = open(p).read().splitlines()
extra, rest = lines[-3:], lines[:-3]
i = rest.index("[identity]") + 1
open(p, "w").write("\n".join(rest[:i] + extra + rest[i:]) + "\n")
EOF
done
sed -i 's/^\[mesh\]$/[log]\naccess_log = off\n[mesh]/' "$LAB_CONF_A" "$LAB_CONF_B"
bg ca ha "$AMESH" ca serve -c "$LAB_DIR/ca.conf"
wait_port ha 15012 ca
for h in a b; do
	tok=$(lab_exec ha "$AMESH" ca token -c "$LAB_DIR/ca.conf" --node "node-$h" 2>/dev/null) ||
		die "amesh ca token --node node-$h failed"
	conf=$LAB_DIR/node-$h.conf
	lab_exec "h$h" "$AMESH" ca join -c "$conf" --token "$tok" --ca-fingerprint "$FP" \
		>"$TMP/join-$h.out" 2>&1 || die "node-$h cannot join: $(tail -n 2 "$TMP/join-$h.out")"
done
ca_metric() { # ca_metric KIND: amesh_ca_issued_total{kind=KIND}
	lab_exec ha curl -s --max-time 2 http://127.0.0.1:15014/metrics |
		awk -v k="kind=\"$1\"" 'index($0, "amesh_ca_issued_total{") == 1 && index($0, k) {print $2}'
}
ca_refused() {
	lab_exec ha curl -s --max-time 2 http://127.0.0.1:15014/metrics |
		awk 'index($0, "amesh_ca_refused_total{") == 1 {s += $2} END {print s + 0}'
}

# --- (a) certificates per CA CPU-second ---
log "(a) caload: $THREADS threads for $SECS s against the CA"
NA=$LAB_DIR/node-a/node
c0=$(cpu_ticks "$PID_ca")
u0=$(cpu_ticks "$PID_ca" user)
i0=$(ca_metric workload)
if [ -n "$PERF" ]; then
	perf record -g -o "$TMP/perf.data" -p "$PID_ca" >/dev/null 2>&1 &
	PIDS+=($!)
	PID_perf=$!
fi
lab_exec ha "$CALOAD" -a "$CA_ADDR" -T cluster.local -b "$LAB_DIR/ca/ca.crt" -c "$NA/node.crt" \
	-k "$NA/node.key" -N bench -p w -i "$THREADS" -n "$THREADS" -d "$SECS" >"$TMP/caload.out" \
	2>"$TMP/caload.err" || die "caload failed: $(tail -n 3 "$TMP/caload.err" "$TMP/caload.out")"
c1=$(cpu_ticks "$PID_ca")
u1=$(cpu_ticks "$PID_ca" user)
i1=$(ca_metric workload)
if [ -n "$PERF" ]; then
	kill -INT "$PID_perf" && wait "$PID_perf" 2>/dev/null
	perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 8 >"$TMP/perf.dso"
	perf report -i "$TMP/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 15 >"$TMP/perf.sym"
fi
read -r _ ISSUED _ ERRS _ WALL _ RATE <"$TMP/caload.out"
LAT=$(sed -n 's/^latency_ms //p' "$TMP/caload.out")
[ "$((i1 - i0))" -eq "$ISSUED" ] || die "caload counted $ISSUED, the CA $((i1 - i0))"
CA_CPU=$(calc "($c1 - $c0) / $HZ" 2)
CA_USER=$(calc "($u1 - $u0) / $HZ" 2)
PER_CPU=$(calc "$ISSUED / $CA_CPU" 1)
log "  $ISSUED issued in $WALL s ($RATE/s), CA CPU $CA_CPU s (user $CA_USER): $PER_CPU per CA CPU-s"

# --- (b) cni add to the first connection ---
log "(b) $WORKLOADS workloads: amesh cni add, then the first connection through the mesh"
bg echo_b b1 "$PY" "$LAB_PEER" serve --port 8080
wait_port b1 8080 echo_b
ZV=()
[ -n "$KEEP" ] && ZV=(-vv)
bg zt_a ha "$AMESH" "${ZV[@]}" ztunnel -c "$LAB_CONF_A"
bg zt_b hb "$AMESH" "${ZV[@]}" ztunnel -c "$LAB_CONF_B"
wait_ready ha 15021 zt_a
wait_ready hb 15021 zt_b
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b \
	>"$TMP/enroll-echo-b.out" 2>&1 || die "enrolling echo-b failed: $(tail -n 2 "$TMP/enroll-echo-b.out")"
for ((i = 1; i <= WORKLOADS; i++)); do
	w=$(printf 'e%02d' "$i")
	ns=$LAB_PREFIX-$w
	ip netns add "$ns" || die "ip netns add $ns failed"
	_lab_workload a "$w" "10.1.1.$((100 + i))" "fd00:1::$((100 + i))" 10.1.1.1 fd00:1::1 ||
		die "cannot make workload namespace $ns"
done
cat >"$TMP/first.py" <<'EOF'
# first.py HOSTNS AMESH CONF NETNS WORKLOAD VIP: run inside the workload's namespace. Times
# `amesh cni add` (run in the host's namespace) and then connections to VIP:80 until one carries a
# line there and back; prints "add_ms first_ms attempts start" (start: UTC, to line up with logs).
import socket, subprocess, sys, time
hostns, amesh, conf, netns, wl, vip = sys.argv[1:7]
start = time.strftime("%H:%M:%S", time.gmtime()) + ".%03d" % (time.time() % 1 * 1000)
t0 = time.monotonic()
r = subprocess.run(["ip", "netns", "exec", hostns, amesh, "-c", conf, "cni", "add", "--netns",
                    netns, "--workload", wl], capture_output=True, text=True)
t1 = time.monotonic()
if r.returncode != 0:
    sys.exit("cni add failed: " + r.stderr.strip()[-300:])
n = 0
while time.monotonic() - t0 < 10:
    n += 1
    try:
        with socket.create_connection((vip, 80), timeout=1) as s:
            s.settimeout(1)
            s.sendall(b"first\n")
            if s.makefile("rb").readline().startswith(b"peer "):
                break
    except OSError:
        time.sleep(0.001)
else:
    sys.exit("no connection within 10 s")
t2 = time.monotonic()
print("%.2f %.2f %d %s" % ((t1 - t0) * 1e3, (t2 - t0) * 1e3, n, start))
EOF
e0=$(ca_metric workload)
: >"$TMP/first.txt"
for ((i = 1; i <= WORKLOADS; i++)); do
	w=$(printf 'e%02d' "$i")
	ip netns exec "$LAB_PREFIX-$w" "$PY" "$TMP/first.py" "$(lab_ns ha)" "$AMESH" "$LAB_CONF_A" \
		"/run/netns/$LAB_PREFIX-$w" "enr-${w#e}" "$VIP" >>"$TMP/first.txt" 2>"$TMP/first.err" ||
		die "enr-${w#e}: $(tail -n 2 "$TMP/first.err")"
done
e1=$(ca_metric workload)
[ "$((e1 - e0))" -ge "$WORKLOADS" ] || die "only $((e1 - e0)) certificates issued for $WORKLOADS new identities"
# The same without the CA: the first workloads again (amesh cni del, then add), their certificates
# now in the store.
AGAIN=$((WORKLOADS < 10 ? WORKLOADS : 10))
: >"$TMP/again.txt"
for ((i = 1; i <= AGAIN; i++)); do
	w=$(printf 'e%02d' "$i")
	lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni del --workload "enr-${w#e}" >/dev/null 2>&1 ||
		die "cni del enr-${w#e} failed"
	ip netns exec "$LAB_PREFIX-$w" "$PY" "$TMP/first.py" "$(lab_ns ha)" "$AMESH" "$LAB_CONF_A" \
		"/run/netns/$LAB_PREFIX-$w" "enr-${w#e}" "$VIP" >>"$TMP/again.txt" 2>"$TMP/first.err" ||
		die "enr-${w#e} again: $(tail -n 2 "$TMP/first.err")"
done
[ "$(ca_metric workload)" -eq "$e1" ] || die "re-enrolling asked the CA for certificates"
pct() { # pct P: the P-th percentile (nearest rank) of the numbers on stdin
	sort -g | awk -v p="$1" '{v[NR] = $1} END {k = int(NR * p / 100); if (k < NR * p / 100) k++
		if (k < 1) k = 1; print v[k]}'
}
ADD_P50=$(awk '{print $1}' "$TMP/first.txt" | pct 50)
FIRST_P50=$(awk '{print $2}' "$TMP/first.txt" | pct 50)
FIRST_P99=$(awk '{print $2}' "$TMP/first.txt" | pct 99)
FIRST_MAX=$(awk '{print $2}' "$TMP/first.txt" | sort -g | tail -n 1)
ATTEMPTS=$(awk '$3 > 1 {n++} END {print n + 0}' "$TMP/first.txt")
AGAIN_ADD=$(awk '{print $1}' "$TMP/again.txt" | pct 50)
AGAIN_FIRST=$(awk '{print $2}' "$TMP/again.txt" | pct 50)
AGAIN_MAX=$(awk '{print $2}' "$TMP/again.txt" | sort -g | tail -n 1)
log "  cni add p50 $ADD_P50 ms; to the first connection p50 $FIRST_P50, p99 $FIRST_P99, max $FIRST_MAX ms"
log "  again, certificate in store: cni add p50 $AGAIN_ADD ms; to the first connection p50 $AGAIN_FIRST, max $AGAIN_MAX ms"
for p in "$PID_zt_a" "$PID_zt_b"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done

# --- (c) the renewal storm ---
log "(c) storm: $IDS identities, cert_ttl ${TTL}s, for $STORM s"
SD=$LAB_DIR/storm
mkdir -p "$SD/node" "$SD/certs"
cp "$NA/node.crt" "$NA/node.key" "$SD/node/"
cat >"$SD/storm.conf" <<EOF
[log]
level = warn
[mesh]
trust_bundle = $LAB_DIR/ca/ca.crt
registry = $LAB_REGISTRY
node = node-a
[identity]
cert_dir = $SD/certs
ca_address = $CA_ADDR
node_cert = $SD/node/node.crt
node_key = $SD/node/node.key
cert_ttl = ${TTL}s
EOF
s0=$(ca_metric workload)
r0=$(ca_refused)
bg storm ha "$STORMB" -c "$SD/storm.conf" -n "$IDS" -d "$STORM"
t0=$(date +%s.%N)
prev_i=$s0 prev_c=$(cpu_ticks "$PID_ca") sec=0
: >"$TMP/storm.series"
while ours "$PID_storm"; do
	sleep 1
	sec=$((sec + 1))
	i=$(ca_metric workload)
	c=$(cpu_ticks "$PID_ca")
	t=$(date +%s.%N)
	# second, issued in it, CA CPU share in it, issued so far
	echo "$(calc "$t - $t0" 1) $((i - prev_i)) $(calc "($c - $prev_c) / $HZ" 2) $((i - s0))" >>"$TMP/storm.series"
	prev_i=$i prev_c=$c
done
wait "$PID_storm"
grep -q '^done' "$TMP/storm.out" || die "storm failed: $(tail -n 3 "$TMP/storm.err")"
FIRST_ALL=$(sed -n 's/^issued_all [0-9]* in \([0-9.]*\) s.*/\1/p' "$TMP/storm.out")
STORM_REFUSED=$(($(ca_refused) - r0))
STORM_TOTAL=$(tail -n 1 "$TMP/storm.series" | awk '{print $4}')
# Phase 1: until every identity had its first certificate (renewals of the first ones may fall in
# it); phase 2: what was issued after it, all renewals.
read -r P1_PEAK P1_CPU P2_PEAK P2_CPU P2_N P2_FIRST P2_LAST P2_AVG <<<"$(awk -v fa="${FIRST_ALL:-0}" '
	{ t = $1; d = $2; c = $3 }
	t <= fa + 1 { if (d > p1) p1 = d; if (c > c1) c1 = c; next }
	{ if (d > p2) p2 = d; if (c > c2) c2 = c; n2 += d; if (d > 0) { if (!f) f = t; l = t } }
	END { printf "%d %.2f %d %.2f %d %s %s %.1f\n", p1, c1, p2, c2, n2, f ? f : "-", l ? l : "-", (l > f) ? n2 / (l - f + 1) : n2 }
' "$TMP/storm.series")"
log "  first issue of $IDS in $FIRST_ALL s (peak $P1_PEAK/s); $P2_N renewals, peak $P2_PEAK/s, CA CPU peak $P2_CPU"
signrate end
if [ -n "$KEEP" ]; then
	mkdir -p "$KEEP" && cp "$TMP"/*.err "$TMP"/*.out "$TMP"/*.txt "$TMP"/storm.series "$KEEP"/
fi

# --- the table ---
SIGN=$(calc "($(sr start ecdsa-p256-sign) + $(sr end ecdsa-p256-sign)) / 2" 1)
VER=$(calc "($(sr start ecdsa-p256-verify) + $(sr end ecdsa-p256-verify)) / 2" 1)
X25519=$(calc "($(sr start ecdhe-x25519) + $(sr end ecdhe-x25519)) / 2" 1)
# What one issue costs the CA in public-key operations (root CA, as here): the TLS handshake signs
# once (ServerKeyExchange), checks the node's chain and its CertificateVerify (2 checks) and makes
# one X25519 share; ca_csr_check checks the CSR's self-signature; ca_sign signs the certificate and
# checks the result against the roots. 2 signs, 4 checks, 1 ECDHE.
MODEL=$(calc "1 / (2 / $SIGN + 4 / $VER + 1 / $X25519)" 1)
R_SIGN=$(calc "100 * $PER_CPU / $SIGN" 1)
R_MODEL=$(calc "100 * $PER_CPU / $MODEL" 1)
G_SIGN=$(verdict "$R_SIGN >= 80")
G_MODEL=$(verdict "$R_MODEL >= 80")
G_FIRST=$(verdict "$FIRST_P99 < 100")
row() { printf '| %s | %s | %s |\n' "$@"; }
TABLE=$(
	echo "|  | measured | goal: verdict |"
	echo "| --- | --- | --- |"
	row "(0) mbedTLS P-256 per CPU-s: sign / verify / X25519 share (start; end)" \
		"**$SIGN** / $VER / $X25519 ($(sr start ecdsa-p256-sign) / $(sr start ecdsa-p256-verify) / $(sr start ecdhe-x25519); $(sr end ecdsa-p256-sign) / $(sr end ecdsa-p256-verify) / $(sr end ecdhe-x25519))" ""
	row "(0) bound of one issue's public-key work (2 signs + 4 checks + 1 X25519), per CPU-s" "$MODEL" ""
	row "(a) caload $THREADS threads, $SECS s: issued, wall rate, latency p50 / p99 / max ms" \
		"$ISSUED, $RATE/s, $(echo "$LAT" | awk '{print $2 " / " $4 " / " $6}')" ""
	row "(a) CA CPU-s (user) over the run; CA busy" "$CA_CPU ($CA_USER); $(calc "100 * $CA_CPU / $WALL" 0)% of one CPU" ""
	row "(a) **certificates per CA CPU-second**" "**$PER_CPU**" ""
	row "(a) ratio to the sign bound" "**$R_SIGN%**" ">= 80%: **$G_SIGN**"
	row "(a) ratio to the bound of one issue's public-key work" "$R_MODEL%" "(>= 80%: $G_MODEL)"
	row "(b) $WORKLOADS new identities: \`cni add\` p50, ms" "$ADD_P50" ""
	row "(b) **\`cni add\` to the first connection**, p50 / p99 / max, ms" \
		"**$FIRST_P50 / $FIRST_P99 / $FIRST_MAX** ($ATTEMPTS needed more than one attempt)" "p99 < 100 ms: **$G_FIRST**"
	row "(b) the same workloads again ($AGAIN; \`cni del\`, then add: certificate in the store, no CA): \`cni add\` p50; to the first connection p50 / max, ms" \
		"$AGAIN_ADD; $AGAIN_FIRST / $AGAIN_MAX" ""
	row "(c) storm: first issue of $IDS identities (one agent)" "$FIRST_ALL s, peak $P1_PEAK/s, CA CPU peak $P1_CPU s/s" ""
	row "(c) **storm: renewals** (cert_ttl ${TTL}s) in $STORM s" \
		"$STORM_TOTAL issued in all ($((STORM_TOTAL - IDS)) renewals); after the first issue: **$P2_N from t=$P2_FIRST to $P2_LAST s, mean $P2_AVG/s, peak $P2_PEAK/s; CA CPU peak $P2_CPU s/s**; $STORM_REFUSED refused" ""
)
SERIES=$(awk '{b = int($1 / 10); n[b] += $2; c[b] += $3; if (b > m) m = b}
	END {for (i = 0; i <= m; i++) printf "%d-%ds: %d issued, CA %.2f CPU-s\n", i * 10, i * 10 + 10, n[i], c[i]}' \
	"$TMP/storm.series")
echo
echo "$TABLE"
if [ "$OUTFILE" != - ]; then
	mkdir -p "$(dirname "$OUTFILE")" || die "cannot create $(dirname "$OUTFILE")"
	{
		echo "Identity benchmark results"
		echo "=========================="
		echo
		echo "Written by bench/identity/run.sh; see bench/README for what each number means."
		echo
		echo "- command: \`$CMDLINE\` (build tree $BUILD)"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s"
		echo "- machine: $(nproc) CPUs, $(uname -sr), mbedTLS $(dpkg-query -W -f '${Version}' libmbedcrypto7 2>/dev/null || echo '?')"
		echo "- CA: \`amesh ca serve\` with a root CA (\`amesh ca init\`), one thread, on host A;" \
			"caload and storm on host A with node-a's certificate"
		echo
		echo "$TABLE"
		echo
		echo "Storm, per 10 s (t from the start of storm):"
		echo
		echo '```'
		echo "$SERIES"
		echo '```'
		if [ -n "$PERF" ]; then
			echo
			echo "CA under perf during (a), by DSO and by symbol (self time):"
			echo
			echo '```'
			cat "$TMP/perf.dso"
			echo
			cat "$TMP/perf.sym"
			echo '```'
		fi
	} >"$OUTFILE.tmp" && mv "$OUTFILE.tmp" "$OUTFILE"
	log "written to $OUTFILE"
fi
