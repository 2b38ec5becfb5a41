#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read through ${!name}, set through printf -v
#
# Sidecar benchmark (bench/README; issue 6). One run on the two-host lab of tests/e2e/lab.sh:
#   direct   echo-a -> other-b before either has a proxy (first phase, for the baseline);
#   ztunnel  client-a -> echo-b, both enrolled with their host's ztunnel (the ambient path);
#   sidecar  echo-a -> other-b, each with its own `amesh sidecar` in its namespace: at the
#            workload address, so echo-a's sidecar relays at L4 and other-b's reads the requests
#            (L7 authorization, request metrics);
#   routed   the same pair through the VIP of a service with a route, so echo-a's sidecar routes
#            each request too (L7 on both sides, as Envoy sidecars run);
#   l4       last, the sidecar path again with both sidecars restarted with [sidecar] l7 = off
#            (L4 both sides, what the ztunnel does).
# The proxied paths cross the same links and run in interleaved rounds of HTTP/1.1
# GETs with 1 KB answers at a fixed rate (bench/loadgen, default 1000/s over 4 connections).
# Reported: median p50/p90/p99 and the latency added over direct; vCPU per 1000 req/s and peak
# RSS of each proxy; maximum req/s (wrk) with requests per proxy CPU-second. Goal of issue 6:
# <= 0.08 vCPU and <= 6 MB per sidecar per 1000 req/s. Bounded (watchdog 300 s).
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-r RATE] [-c CONNS] [-R ROUNDS] [-d SECS] [-w SECS]
#               [-t SECS]
#   -B  the build tree with amesh and bench/loadgen (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/sidecar/RESULTS.md in the source tree)
#   -r, -c, -R, -d, -w  as bench/l7/run.sh; -t seconds per wrk run (default 5)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=sidecar-bench
OUTFILE=$SRC/bench/sidecar/RESULTS.md
LIMIT=300
CMDLINE="bench/sidecar/run.sh $*"
# shellcheck source=/dev/null
. "$SRC/bench/opts.sh" "$@"
PORT=8080
# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in wrk nft; do command -v "$c" >/dev/null || die "$c is not installed"; done

log "lab: two hosts, identities from amesh ca"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
# Access logs off: the bench measures the data path, not the log.
sed -i 's/^\[mesh\]$/[log]\naccess_log = off\n[mesh]/' "$LAB_CONF_A" "$LAB_CONF_B"
for ns in b1 b2; do
	bg "http_$ns" "$ns" "$SRC_LOADGEN" --serve "0.0.0.0:$PORT" --size 1024
	wait_port "$ns" "$PORT" "http_$ns"
done
URL_direct="http://$LAB_B2:$PORT/" NS_direct=a2 PROXY_direct=""
URL_ztunnel="http://$LAB_B1:$PORT/" NS_ztunnel=a1
URL_sidecar="http://$LAB_B2:$PORT/" NS_sidecar=a2
URL_routed="http://10.96.0.20/" NS_routed=a2
cat >"$LAB_REGISTRY/40-bench.conf" <<EOF
[service "bench"]
namespace = other
vip = 10.96.0.20
ports = 80:$PORT
selector = app=other

[route "bench"]
namespace = other
service = bench
backends = other-b
timeout = 10s
EOF

log "direct: $ROUNDS runs of echo-a -> other-b before any proxy"
for r in $(seq "$ROUNDS"); do fixed direct "$r"; done

log "proxies: ztunnels for client-a and echo-b, sidecars for echo-a and other-b"
bg zt_a ha "$AMESH" ztunnel -c "$LAB_CONF_A"
bg zt_b hb "$AMESH" ztunnel -c "$LAB_CONF_B"
bg sc_a a2 "$AMESH" -c "$LAB_CONF_A" sidecar --workload echo-a
bg sc_b b2 "$AMESH" -c "$LAB_CONF_B" sidecar --workload other-b
wait_ready ha 15021 zt_a
wait_ready hb 15021 zt_b
wait_ready a2 15021 sc_a
wait_ready b2 15021 sc_b
lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a \
	>/dev/null 2>&1 || die "enrolling client-a failed"
lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b \
	>/dev/null 2>&1 || die "enrolling echo-b failed"
PROXY_ztunnel="$PID_zt_a $PID_zt_b" PROXY_sidecar="$PID_sc_a $PID_sc_b"
PROXY_routed=$PROXY_sidecar
# Every path must really go through its proxies: the destination proxy's connections or
# requests (reporter destination), and for the routed path the caller's (reporter source).
opened() { lab_exec "$1" /usr/bin/python3 -c 'import sys, urllib.request
t = urllib.request.urlopen("http://127.0.0.1:15020/metrics", timeout=2).read().decode()
print(int(sum(float(l.rsplit(" ", 1)[1]) for l in t.splitlines()
              if l.startswith(("istio_tcp_connections_opened_total{", "istio_requests_total{"))
              and "reporter=\"%s\"" % sys.argv[1] in l)))' "${2:-destination}"; }
o_zt=$(opened hb) o_sc=$(opened b2) o_rt=$(opened a2 source)

log "fixed rate: $RATE req/s over $CONNS connections; $ROUNDS rounds of ztunnel, sidecar, routed"
BASE_SA=$(status_kb "$PID_sc_a" VmRSS) BASE_SB=$(status_kb "$PID_sc_b" VmRSS)
for p in $PROXY_ztunnel $PROXY_sidecar; do echo 5 >"/proc/$p/clear_refs"; done
for r in $(seq "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then fixed ztunnel "$r"; fixed sidecar "$r"; fixed routed "$r"
	else fixed routed "$r"; fixed sidecar "$r"; fixed ztunnel "$r"; fi
done
[ "$(opened hb)" -gt "$o_zt" ] && [ "$(opened b2)" -gt "$o_sc" ] && [ "$(opened a2 source)" -gt "$o_rt" ] ||
	die "a path missed its proxies (their metrics did not move)"
HWM_ZA=$(status_kb "$PID_zt_a" VmHWM) HWM_ZB=$(status_kb "$PID_zt_b" VmHWM)
HWM_SA=$(status_kb "$PID_sc_a" VmHWM) HWM_SB=$(status_kb "$PID_sc_b" VmHWM)
PATHS=(direct ztunnel sidecar routed)
for path in "${PATHS[@]}"; do
	for q in p50 p90 p99; do printf -v "M_${path}_$q" %s "$(median "$path" "$q")"; done
done
for path in ztunnel sidecar routed; do
	for q in p50 p90 p99; do
		m=M_${path}_$q d=M_direct_$q
		printf -v "ADD_${path}_$q" %s "$(calc "${!m} - ${!d}" 3)"
	done
done
V_ZA=$(vcpu "${CPUT[ztunnel.1]}" "$ROUNDS") V_ZB=$(vcpu "${CPUT[ztunnel.2]}" "$ROUNDS")
V_SA=$(vcpu "${CPUT[sidecar.1]}" "$ROUNDS") V_SB=$(vcpu "${CPUT[sidecar.2]}" "$ROUNDS")
V_RA=$(vcpu "${CPUT[routed.1]}" "$ROUNDS") V_RB=$(vcpu "${CPUT[routed.2]}" "$ROUNDS")

log "maximum rate: wrk -t1 -c32 -d${WDUR}s through each proxied path"
for path in ztunnel sidecar routed; do maxrate "$path"; done

log "l7 = off: both sidecars restarted, $ROUNDS rounds and wrk of the sidecar path at L4"
for p in "$PID_sc_a" "$PID_sc_b"; do kill -TERM "$p" 2>/dev/null; done
for p in "$PID_sc_a" "$PID_sc_b"; do
	i=0
	while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
done
for c in A B; do
	v=LAB_CONF_$c
	{ cat "${!v}"; printf '\n[sidecar]\nl7 = off\n'; } >"$TMP/l4-$c.conf"
done
bg sc4_a a2 "$AMESH" -c "$TMP/l4-A.conf" sidecar --workload echo-a
bg sc4_b b2 "$AMESH" -c "$TMP/l4-B.conf" sidecar --workload other-b
wait_ready a2 15021 sc4_a
wait_ready b2 15021 sc4_b
URL_l4=$URL_sidecar NS_l4=a2 PROXY_l4="$PID_sc4_a $PID_sc4_b"
for p in $PROXY_l4; do echo 5 >"/proc/$p/clear_refs"; done
for r in $(seq "$ROUNDS"); do fixed l4 "$r"; done
for q in p50 p90 p99; do
	printf -v "M_l4_$q" %s "$(median l4 "$q")"
	m=M_l4_$q d=M_direct_$q
	printf -v "ADD_l4_$q" %s "$(calc "${!m} - ${!d}" 3)"
done
V_LA=$(vcpu "${CPUT[l4.1]}" "$ROUNDS") V_LB=$(vcpu "${CPUT[l4.2]}" "$ROUNDS")
HWM_LA=$(status_kb "$PID_sc4_a" VmHWM) HWM_LB=$(status_kb "$PID_sc4_b" VmHWM)
maxrate l4
PC_L4=$(calc "${RPS[l4]} * $WDUR / (${WCPU[l4.1]} + ${WCPU[l4.2]})" 0)
PC_ZT=$(calc "${RPS[ztunnel]} * $WDUR / (${WCPU[ztunnel.1]} + ${WCPU[ztunnel.2]})" 0)
PC_SC=$(calc "${RPS[sidecar]} * $WDUR / (${WCPU[sidecar.1]} + ${WCPU[sidecar.2]})" 0)
PC_RT=$(calc "${RPS[routed]} * $WDUR / (${WCPU[routed.1]} + ${WCPU[routed.2]})" 0)

G_CPU=$(verdict "$V_SA <= 0.08 && $V_SB <= 0.08")
G_CPU_RT=$(verdict "$V_RA <= 0.08 && $V_RB <= 0.08")
G_CPU_L4=$(verdict "$V_LA <= 0.08 && $V_LB <= 0.08")
G_MEM=$(verdict "$HWM_SA <= 6144 && $HWM_SB <= 6144")
row() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
TABLE=$(
	row "" "direct (first phase)" "ztunnel pair (ambient)" "sidecar pair (L4 out, L7 in)" \
		"sidecar pair, routed (L7 out and in)" "sidecar pair, l7 = off (last phase)" \
		"goal: verdict"
	row "---" "---" "---" "---" "---" "---" "---"
	row "latency p50 / p90 / p99 at $RATE req/s, ms (median of $ROUNDS runs)" \
		"$M_direct_p50 / $M_direct_p90 / $M_direct_p99" \
		"$M_ztunnel_p50 / $M_ztunnel_p90 / $M_ztunnel_p99" \
		"$M_sidecar_p50 / $M_sidecar_p90 / $M_sidecar_p99" \
		"$M_routed_p50 / $M_routed_p90 / $M_routed_p99" \
		"$M_l4_p50 / $M_l4_p90 / $M_l4_p99" ""
	row "**added** over direct, p50 / p90 / p99, ms" "-" \
		"$ADD_ztunnel_p50 / $ADD_ztunnel_p90 / $ADD_ztunnel_p99" \
		"**$ADD_sidecar_p50 / $ADD_sidecar_p90 / $ADD_sidecar_p99**" \
		"**$ADD_routed_p50 / $ADD_routed_p90 / $ADD_routed_p99**" \
		"$ADD_l4_p50 / $ADD_l4_p90 / $ADD_l4_p99" ""
	row "**vCPU per 1000 req/s**, each proxy" "-" "$V_ZA + $V_ZB" "**$V_SA + $V_SB**" \
		"**$V_RA + $V_RB**" "$V_LA + $V_LB" \
		"<= 0.08 per sidecar: **$G_CPU** (routed: **$G_CPU_RT**; l7 = off: **$G_CPU_L4**)"
	row "**peak RSS**, each proxy, MiB (the L7 sidecar paths share the processes)" "-" \
		"$(mib "$HWM_ZA") + $(mib "$HWM_ZB")" \
		"**$(mib "$HWM_SA") + $(mib "$HWM_SB")** (idle: $(mib "$BASE_SA") + $(mib "$BASE_SB"))" \
		"(same)" "$(mib "$HWM_LA") + $(mib "$HWM_LB")" "<= 6 MB per sidecar: **$G_MEM**"
	row "maximum req/s (wrk -t1 -c32), requests per proxy CPU-second" "-" \
		"${RPS[ztunnel]}, $PC_ZT" "${RPS[sidecar]}, $PC_SC" "${RPS[routed]}, $PC_RT" \
		"${RPS[l4]}, $PC_L4" ""
)
echo
echo "$TABLE"
if [ "$OUTFILE" != - ]; then
	mkdir -p "$(dirname "$OUTFILE")" || die "cannot create $(dirname "$OUTFILE")"
	{
		echo "Sidecar benchmark results"
		echo "========================="
		echo
		echo "Written by bench/sidecar/run.sh; see bench/README for what each number means."
		echo
		echo "- command: \`$CMDLINE\` (build tree $BUILD)"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $(($(date +%s) - T_START)) s"
		echo "- machine: $(nproc) CPUs, $(uname -sr)"
		echo "- load: \`bench/loadgen --rate $RATE --connections $CONNS --warmup $WARM --duration $DUR\`;" \
			"1024-byte answers from \`loadgen --serve\`; access logs off"
		echo
		echo "$TABLE"
		echo
		echo "Goal of issue 6: <= 0.08 vCPU and <= 6 MB per sidecar per 1000 req/s (Envoy sidecar:" \
			"0.20 vCPU, 60 MB). The sidecar reads its inbound requests at L7 (authorization," \
			"request metrics); the routed path adds the caller's L7 (routes), as Envoy sidecars run" \
			"both sides. The ztunnel pair is L4 both sides, as is the sidecar pair with l7 = off," \
			"measured last (not interleaved with the others: compare it with care)."
	} >"$OUTFILE.tmp" && mv "$OUTFILE.tmp" "$OUTFILE"
	log "written to $OUTFILE"
fi
