#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read through ${!name}, set through printf -v
#
# L7 benchmark (bench/README; issue 5, "bench/l7"). One run on the two-host lab of
# tests/e2e/lab.sh (network namespaces only) compares three paths from host A to a server on B:
#   direct   echo-a -> other-b, never enrolled: no proxy;
#   amesh    client-a -> service "l7" (VIP 10.96.0.20, endpoint echo-b), whose registry entry
#            names a waypoint: app -> ztunnel A -> HBONE -> amesh waypoint (host A) -> HBONE ->
#            ztunnel B -> app. The waypoint parses each HTTP/1.1 request, routes it (a route
#            with a header edit) and opens the tunnel to the endpoint;
#   haproxy  echo-a -> a haproxy pair in HTTP mode, TLS 1.2 ECDHE-ECDSA-CHACHA20-POLY1305 with
#            the same amesh-issued certificates, verified both ways: client side in echo-a's
#            namespace (127.0.0.1), server side in host B's; keep-alive towards the server.
# Measured:
#   (a) HTTP/1.1 GETs with 1 KB answers (`loadgen --serve`) at a fixed rate (default 1000/s)
#       over 4 keep-alive connections from bench/loadgen (open loop), the paths in interleaved
#       rounds (default 5 of 1 s warm-up + 4 s). Reported: median over rounds of p50/p90/p99
#       and the added latency over direct; CPU seconds of the waypoint, the ztunnels and each
#       haproxy, as vCPU per 1000 requests/s; peak RSS of the waypoint and the haproxies.
#   (b) maximum requests/s: wrk (closed loop, 1 thread, 32 connections, 5 s) through each path;
#       with the proxies' CPU seconds over the same run, requests per proxy CPU-second ("per
#       core"): the waypoint alone, the whole amesh path, the haproxy pair.
# Prints one markdown table and writes it to RESULTS.md. Bounded (watchdog 240 s); everything it
# started, the lab included, goes in an EXIT trap.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-r RATE] [-c CONNS] [-R ROUNDS] [-d SECS] [-w SECS]
#               [-t SECS]
#   -B  the build tree with amesh and bench/loadgen (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/l7/RESULTS.md in the source tree; - for none)
#   -r  requests per second of the fixed-rate runs (default 1000)
#   -c  keep-alive connections of the fixed-rate runs (default 4)
#   -R  rounds of fixed-rate runs (default 5)
#   -d  measured seconds per fixed-rate run (default 4), after -w seconds of warm-up (default 1)
#   -t  seconds per wrk run (default 5)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=l7-bench
OUTFILE=$SRC/bench/l7/RESULTS.md
LIMIT=240
CMDLINE="bench/l7/run.sh $*"
# shellcheck source=/dev/null
. "$SRC/bench/opts.sh" "$@"
LOADGEN=$SRC_LOADGEN
PY=/usr/bin/python3
PORT=8080
HP_C=18080          # haproxy client side, 127.0.0.1 in echo-a
HP_S=18443          # haproxy server side, host B's bridge address
HB_BR=10.1.2.1
VIP=10.96.0.20
WP=192.168.10.9     # the waypoint's own address (lab_waypoint adds it on host A's wire)

# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in haproxy wrk nft "$PY"; do command -v "$c" >/dev/null || die "$c is not installed"; done

# --- the lab, the mesh, the waypoint ---
log "lab: two hosts, identities from amesh ca, ztunnels, a waypoint on host A"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
CA=$LAB_DIR/ca/ca.crt
lab_waypoint || die "cannot set up the waypoint's address, identity and configuration"
printf '[log]\naccess_log = off\n' >>"$LAB_WP_CONF"
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
request_headers.set = x-bench: l7
EOF
# Access logs off on every proxy: the bench measures the data path, not the log.
sed -i 's/^\[mesh\]$/[log]\naccess_log = off\n[mesh]/' "$LAB_CONF_A" "$LAB_CONF_B"
for ns in b1 b2; do
	bg "http_$ns" "$ns" "$LOADGEN" --serve "0.0.0.0:$PORT" --size 1024
	wait_port "$ns" "$PORT" "http_$ns"
done
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
wp_requests() { lab_exec ha "$PY" -c 'import json, urllib.request
print(json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump", timeout=2))["stats"]["requests"])'; }
n0=$(wp_requests)
lab_exec a1 "$PY" -c 'import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=3)
c.request("GET", "/")
sys.exit(0 if c.getresponse().status == 200 else 1)' "$VIP" || die "no answer through the waypoint"
[ "$(wp_requests)" -gt "$n0" ] || die "the probe did not go through the waypoint"

# --- the haproxy pair ---
for s in client echo; do
	d=$LAB_DIR/node-a/certs/default
	[ "$s" = echo ] && d=$LAB_DIR/node-b/certs/default
	cat "$d/$s.crt" "$d/$s.key" >"$TMP/$s.pem"
done
hp_global() {
	cat <<EOF
global
	nbthread 1
	ssl-default-bind-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 no-tls-tickets
	ssl-default-bind-ciphers ECDHE-ECDSA-CHACHA20-POLY1305
	ssl-default-server-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2 no-tls-tickets
	ssl-default-server-ciphers ECDHE-ECDSA-CHACHA20-POLY1305
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	http-reuse always
EOF
}
{
	hp_global
	printf 'frontend f\n\tbind 127.0.0.1:%s\n\tdefault_backend b\n' "$HP_C"
	printf 'backend b\n\tserver s %s:%s ssl crt %s ca-file %s verify required\n' \
		"$HB_BR" "$HP_S" "$TMP/client.pem" "$CA"
} >"$TMP/hpc.cfg"
{
	hp_global
	printf 'frontend f\n\tbind %s:%s ssl crt %s ca-file %s verify required\n\tdefault_backend b\n' \
		"$HB_BR" "$HP_S" "$TMP/echo.pem" "$CA"
	printf 'backend b\n\thttp-request set-header x-bench l7\n\tserver s %s:%s\n' "$LAB_B2" "$PORT"
} >"$TMP/hps.cfg"
bg hpc a2 haproxy -db -f "$TMP/hpc.cfg"
bg hps hb haproxy -db -f "$TMP/hps.cfg"
wait_port a2 "$HP_C" hpc
wait_port hb "$HP_S" hps

# --- (a) fixed rate, interleaved rounds ---
URL_direct="http://$LAB_B2:$PORT/" NS_direct=a2
URL_amesh="http://$VIP/" NS_amesh=a1
URL_haproxy="http://127.0.0.1:$HP_C/" NS_haproxy=a2
PROXY_direct="" PROXY_amesh="$PID_wp $PID_zt_a $PID_zt_b" PROXY_haproxy="$PID_hpc $PID_hps"
log "fixed rate: $RATE req/s over $CONNS connections; $ROUNDS rounds of direct, amesh, haproxy"
WP_BASE=$(status_kb "$PID_wp" VmRSS)
for p in $PROXY_amesh $PROXY_haproxy; do echo 5 >"/proc/$p/clear_refs"; done
PATHS=(direct amesh haproxy)
for r in $(seq "$ROUNDS"); do
	for k in 0 1 2; do fixed "${PATHS[$(((k + r - 1) % 3))]}" "$r"; done
done
HWM_WP=$(status_kb "$PID_wp" VmHWM) HWM_HC=$(status_kb "$PID_hpc" VmHWM)
HWM_HS=$(status_kb "$PID_hps" VmHWM)
for path in "${PATHS[@]}"; do
	for q in p50 p90 p99; do printf -v "M_${path}_$q" %s "$(median "$path" "$q")"; done
done
for path in amesh haproxy; do
	for q in p50 p90 p99; do
		m=M_${path}_$q d=M_direct_$q
		printf -v "ADD_${path}_$q" %s "$(calc "${!m} - ${!d}" 3)"
	done
done
V_WP=$(vcpu "${CPUT[amesh.1]}" "$ROUNDS") V_ZA=$(vcpu "${CPUT[amesh.2]}" "$ROUNDS")
V_ZB=$(vcpu "${CPUT[amesh.3]}" "$ROUNDS")
V_HC=$(vcpu "${CPUT[haproxy.1]}" "$ROUNDS") V_HS=$(vcpu "${CPUT[haproxy.2]}" "$ROUNDS")

# --- (b) maximum requests/s, closed loop ---
log "maximum rate: wrk -t1 -c32 -d${WDUR}s through each path"
for path in "${PATHS[@]}"; do maxrate "$path"; done
percore() { calc "$1 * $WDUR / ($2)" 0; } # requests per CPU-second of the listed proxies
PC_WP=$(percore "${RPS[amesh]}" "${WCPU[amesh.1]}")
PC_AM=$(percore "${RPS[amesh]}" "${WCPU[amesh.1]} + ${WCPU[amesh.2]} + ${WCPU[amesh.3]}")
PC_HP=$(percore "${RPS[haproxy]}" "${WCPU[haproxy.1]} + ${WCPU[haproxy.2]}")
PC_HP1=$(percore "${RPS[haproxy]}" "(${WCPU[haproxy.1]} + ${WCPU[haproxy.2]}) / 2")

G_CPU=$(verdict "$V_WP <= 0.10")
G_MEM=$(verdict "$HWM_WP <= 8192")
G_CORE=$(verdict "$PC_WP >= $PC_HP")
G_CORE1=$(verdict "$PC_WP >= $PC_HP1")
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
TABLE=$(
	row "" direct "amesh (ztunnel A, waypoint, ztunnel B)" "haproxy pair (TLS, HTTP mode)" "goal: verdict"
	row "---" "---" "---" "---" "---"
	row "(a) latency p50 / p90 / p99 at $RATE req/s, ms (median of $ROUNDS rounds)" \
		"$M_direct_p50 / $M_direct_p90 / $M_direct_p99" \
		"$M_amesh_p50 / $M_amesh_p90 / $M_amesh_p99" \
		"$M_haproxy_p50 / $M_haproxy_p90 / $M_haproxy_p99" ""
	row "(a) **added** over direct, p50 / p90 / p99, ms" "-" \
		"**$ADD_amesh_p50 / $ADD_amesh_p90 / $ADD_amesh_p99**" \
		"$ADD_haproxy_p50 / $ADD_haproxy_p90 / $ADD_haproxy_p99" ""
	row "(a) **vCPU per 1000 req/s**" "-" \
		"**waypoint $V_WP**; ztunnels $V_ZA + $V_ZB" "$V_HC + $V_HS" \
		"waypoint <= 0.10: **$G_CPU**"
	row "(a) **peak RSS** (VmHWM over the rounds), MiB" "-" \
		"**waypoint $(mib "$HWM_WP")** (idle before: $(mib "$WP_BASE"))" \
		"$(mib "$HWM_HC") + $(mib "$HWM_HS")" "waypoint <= 8 MB: **$G_MEM**"
	row "(b) maximum req/s (wrk -t1 -c32, closed loop)" "${RPS[direct]}" "${RPS[amesh]}" \
		"${RPS[haproxy]}" ""
	row "(b) proxies' CPU-s over the wrk run" "-" \
		"waypoint ${WCPU[amesh.1]}, ztunnels ${WCPU[amesh.2]} + ${WCPU[amesh.3]}" \
		"${WCPU[haproxy.1]} + ${WCPU[haproxy.2]}" ""
	row "(b) **requests per proxy CPU-second**" "-" \
		"**waypoint $PC_WP**; whole path $PC_AM" "pair $PC_HP; per haproxy $PC_HP1" \
		"waypoint >= the pair (each does TLS in, HTTP, TLS out): **$G_CORE**; >= one haproxy: **$G_CORE1**"
)
echo
echo "$TABLE"
if [ "$OUTFILE" != - ]; then
	mkdir -p "$(dirname "$OUTFILE")" || die "cannot create $(dirname "$OUTFILE")"
	{
		echo "L7 benchmark results"
		echo "===================="
		echo
		echo "Written by bench/l7/run.sh; see bench/README for what each number means."
		echo
		echo "- command: \`$CMDLINE\` (build tree $BUILD)"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s"
		echo "- machine: $(nproc) CPUs, $(uname -sr), $(haproxy -v | head -n 1 | cut -d' ' -f1-3)," \
			"$(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
		echo "- load: \`bench/loadgen --rate $RATE --connections $CONNS --warmup $WARM --duration $DUR\`," \
			"$ROUNDS interleaved rounds; 1024-byte answers from \`loadgen --serve\`; access logs off"
		echo
		echo "$TABLE"
		echo
		echo "Goals of issue 5: waypoint <= 0.10 vCPU and <= 8 MB per 1000 req/s; requests/s per" \
			"core >= haproxy's. The waypoint terminates one TLS session and originates another for" \
			"every request, as the haproxy pair does between them, so the like-for-like per-core" \
			"figure is the pair's; one haproxy does half of that work."
	} >"$OUTFILE.tmp" && mv "$OUTFILE.tmp" "$OUTFILE"
	log "written to $OUTFILE"
fi
