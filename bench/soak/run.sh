#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2034,SC2154 # variables read through ${!name}, set through printf -v
#
# Soak (bench/README; issue 19, item 3). The two-host lab of tests/e2e/lab.sh (network namespaces
# only) with both ztunnels and a waypoint on host A; client-a sends, for the whole run, at a fixed
# total rate (default 500/s) through the waypoint to servers on echo-b (host B):
#   50%  HTTP/1.1 GETs, bench/loadgen open loop over 4 kept-alive connections (new ones each
#        minute: one loadgen run a minute), service soak-h1 (loadgen --serve)
#    5%  HTTP/1.1 GETs on a new connection each (bench/soak/load.py), the same service
#   25%  h2c GETs, h2load --rps over 5 connections, new ones every 15 s, service soak-h2 (nghttpd)
#   12%  gRPC unary calls (load.py, python3-grpcio): 10% on one kept channel, 2% on a new
#        channel each, service soak-grpc (tests/e2e/grpcpeer.py)
#    8%  L4 transfers (load.py against tests/e2e/lab-peer.py): 2% round trips of 1 KiB on one
#        kept connection and 4% new connections each moving 16 KiB both ways, through the
#        waypoint (service soak-l4, relayed at L4); 2% the same to echo-b's workload address,
#        ztunnels only
# Every minute: a registry reload (a route's header edit rewritten: all three processes reload,
# kept-alive waypoint connections move to the new snapshot) and a certificate rotation (`amesh ca
# issue` again for every identity of both nodes and the waypoint; the processes pick the new
# files up, as after a renewal). Every 10 s: RSS (VmRSS), open fds and open flows (admin
# /config_dump stats.active) of the three amesh processes, and the requests and errors so far,
# into a CSV (LAB_DIR is removed at the end: the CSV is copied to -o's directory as soak.csv).
#
# Verdict, per process, over the samples after the warm-up (default 3 minutes):
#   RSS  the least-squares slope must stay under 64 KiB/min, and the highest sample of the last
#        quarter under the highest of the warm-up plus 8 MiB;
#   fds  the highest of the last quarter under the highest of the warm-up plus 64;
#   flows  within 30 s of the load's end, every process's open flows back to 0;
#   errors  at most 0.1% of all requests failed (any kind).
# Any miss exits 1; the summary and a table of one sample a minute go to stdout and, with -o, to
# RESULTS.md. Bounded: a watchdog ends the run 5 minutes after its planned end; everything it
# started, the lab included, goes in an EXIT trap.
#
# usage: run.sh [-B BUILDDIR] [-o FILE|-] [-d MINUTES] [-w MINUTES] [-r RATE]
#   -B  the build tree with amesh and bench/loadgen (default: $BUILDDIR, else the source tree)
#   -o  where to write the results (default: bench/soak/RESULTS.md in the source tree; - for none)
#   -d  minutes of load (default 30)
#   -w  minutes of warm-up among them, not judged (default 3; 1 when -d is under 6)
#   -r  requests per second in total (default 500)
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
NAME=soak
OUTFILE=$SRC/bench/soak/RESULTS.md
CMDLINE="bench/soak/run.sh $*"
BUILD=${BUILDDIR:-$SRC}
MIN=30 WARM_MIN='' RATE=500
while getopts "B:o:d:w:r:h" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	d) MIN=$OPTARG ;;
	w) WARM_MIN=$OPTARG ;;
	r) RATE=$OPTARG ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
[ -n "$WARM_MIN" ] || { [ "$MIN" -lt 6 ] && WARM_MIN=1 || WARM_MIN=3; }
BUILD=$(cd "$BUILD" && pwd) || exit 2
AMESH=$BUILD/amesh
SRC_LOADGEN=$BUILD/bench/loadgen
for f in "$AMESH" "$SRC_LOADGEN"; do
	[ -x "$f" ] || { echo "$NAME: $f is not built (make amesh bench/loadgen)" >&2; exit 1; }
done
DUR=$((MIN * 60))
LIMIT=$((DUR + 300))
PY=/usr/bin/python3
WP=192.168.10.9

# shellcheck source=/dev/null
. "$SRC/bench/lib.sh"
for c in h2load nghttpd "$PY"; do command -v "$c" >/dev/null || die "$c is not installed"; done
"$PY" -c 'import grpc' 2>/dev/null || die "python3-grpcio is not installed"

# --- the lab, the mesh, the waypoint, the servers ---
log "lab: two hosts, identities from amesh ca, ztunnels, a waypoint on host A"
lab_up "$TMP/lab" >/dev/null || die "lab_up failed"
lab_certs >/dev/null || die "lab_certs failed"
lab_waypoint || die "cannot set up the waypoint's address, identity and configuration"
# Access logs off: 500 lines a second would only measure the log.
printf '[log]\naccess_log = off\n' >>"$LAB_WP_CONF"
sed -i 's/^\[mesh\]$/[log]\naccess_log = off\n[mesh]/' "$LAB_CONF_A" "$LAB_CONF_B"
svc() { # svc NAME VIP PORTS
	printf '[service "%s"]\nnamespace = default\nvip = %s\nports = %s\nselector = version=b\nwaypoint = wp\n\n' "$@"
}
{
	svc soak-h1 10.96.0.20 80:8080
	svc soak-h2 10.96.0.21 80:8081
	svc soak-grpc 10.96.0.22 9090
	svc soak-l4 10.96.0.23 9000
	printf '[route "soak-grpc"]\nnamespace = default\nservice = soak-grpc\nbackends = echo-b\n'
	printf 'retries = 1\nretry_on = unavailable\n'
} >"$LAB_REGISTRY/40-soak.conf"
GEN=0
reload_registry() { # a changed route: every process reloads; written whole, then renamed
	GEN=$((GEN + 1))
	printf '[route "soak-h1"]\nnamespace = default\nservice = soak-h1\nbackends = echo-b\nrequest_headers.set = x-soak-gen: %s\n' \
		"$GEN" >"$LAB_DIR/41-soak-route.tmp"
	mv "$LAB_DIR/41-soak-route.tmp" "$LAB_REGISTRY/41-soak-route.conf"
}
rotate_certs() { # every identity issued again by the same CA, as a renewal does
	local x h w
	for x in a:default:client a:default:echo b:default:echo b:other:other; do
		h=${x%%:*} w=${x#*:}
		"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace "${w%%:*}" --service-account "${w#*:}" \
			--out "$LAB_DIR/node-$h/certs" >/dev/null || return 1
	done
	"$AMESH" ca issue --dir "$LAB_DIR/ca" --namespace default --service-account waypoint \
		--out "$LAB_DIR/waypoint/certs" >/dev/null
}
reload_registry
mkdir -p "$TMP/www" && head -c 1024 /dev/zero | tr '\0' x >"$TMP/www/x"
bg http b1 "$SRC_LOADGEN" --serve 0.0.0.0:8080 --size 1024
bg h2 b1 nghttpd --no-tls -d "$TMP/www" 8081
bg grpc b1 "$PY" "$SRC/tests/e2e/grpcpeer.py" serve --name echo-b --port 9090
bg l4 b1 "$PY" "$SRC/tests/e2e/lab-peer.py" serve --port 9000
for p in 8080:http 8081:h2 9090:grpc 9000:l4; do wait_port b1 "${p%%:*}" "${p#*:}"; done
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
lab_exec a1 curl -sf -o /dev/null --max-time 5 http://10.96.0.20/ || die "no HTTP/1.1 answer through the waypoint"
lab_exec a1 curl -sf -o /dev/null --max-time 5 --http2-prior-knowledge http://10.96.0.21/x ||
	die "no h2c answer through the waypoint"

# --- sampling ---
PROCS="zt_a zt_b wp"
# flows NS PORT: stats.active of the admin /config_dump on 127.0.0.1:PORT in NS
flows() { lab_exec "$1" "$PY" -c 'import json, sys, urllib.request
try:
    print(json.load(urllib.request.urlopen("http://127.0.0.1:%s/config_dump" % sys.argv[1], timeout=3))["stats"]["active"])
except Exception:
    print(-1)' "$2" 2>/dev/null; }
# tally: "REQUESTS ERRORS" so far, from every finished loadgen and h2load run and load.py's stats
tally() {
	"$PY" - "$TMP" <<'EOF'
import glob, json, re, sys
d = sys.argv[1]
req = err = 0
for f in glob.glob(d + "/lg.*.out"):
    for line in open(f):
        if line.startswith("{"):
            j = json.loads(line)
            req += j["requests"]
            err += j["errors"]
for f in glob.glob(d + "/h2l.*.out"):
    text = open(f).read()
    m = re.search(r"requests: (\d+) total", text)
    ok = re.search(r"status codes: (\d+) 2xx", text)
    if m:
        req += int(m.group(1))
        err += int(m.group(1)) - (int(ok.group(1)) if ok else 0)
last = {}
try:
    for line in open(d + "/load.stats"):
        t, kind, ok, bad = line.split()
        last[kind] = (int(ok), int(bad))
except FileNotFoundError:
    pass
for ok, bad in last.values():
    req += ok + bad
    err += bad
print(req, err)
EOF
}
CSV=$TMP/soak.csv
echo "t,proc,rss_kb,fds,flows,requests,errors" >"$CSV"
sample() { # sample T
	local p pid fl tl
	tl=$(tally)
	for p in $PROCS; do
		pid=PID_$p
		case $p in zt_a) fl=$(flows ha 15000) ;; zt_b) fl=$(flows hb 15000) ;; wp) fl=$(flows ha 15100) ;; esac
		echo "$1,$p,$(status_kb "${!pid}" VmRSS),$(find "/proc/${!pid}/fd" -mindepth 1 -maxdepth 1 | wc -l),$fl,${tl% *},${tl#* }" >>"$CSV"
	done
}

# --- the load ---
R_H1=$(calc "$RATE * 0.50" 1) R_H1NEW=$(calc "$RATE * 0.05" 1)
R_H2C=$(calc "$RATE * 0.25 / 5" 1)
R_GK=$(calc "$RATE * 0.10" 1) R_GN=$(calc "$RATE * 0.02" 1)
R_LK=$(calc "$RATE * 0.02" 1) R_LN=$(calc "$RATE * 0.04" 1) R_LZ=$(calc "$RATE * 0.02" 1)
log "load: $RATE req/s for $MIN min (warm-up $WARM_MIN min); registry reload and certificate rotation every minute"
T0=$(date +%s)
END=$((T0 + DUR))
( # HTTP/1.1 kept-alive: one loadgen run a minute, so its connections are new each minute
	i=0
	while [ "$(date +%s)" -lt "$END" ]; do
		i=$((i + 1))
		left=$((END - $(date +%s)))
		[ "$left" -gt 60 ] && left=60
		[ "$left" -ge 5 ] || break
		lab_exec a1 nice -n 10 "$SRC_LOADGEN" --url http://10.96.0.20/ --rate "$R_H1" --duration "$left" \
			--warmup 0 --connections 4 --timeout 5 >"$TMP/lg.$i.tmp" 2>"$TMP/lg.$i.err"
		mv "$TMP/lg.$i.tmp" "$TMP/lg.$i.out"
	done
) &
PIDS+=($!)
( # h2c: 5 connections, new ones every 15 s
	i=0
	while [ "$(date +%s)" -lt "$END" ]; do
		i=$((i + 1))
		left=$((END - $(date +%s)))
		[ "$left" -gt 15 ] && left=15
		[ "$left" -ge 3 ] || break
		lab_exec a1 nice -n 10 h2load -c 5 -m 4 --rps "$R_H2C" -D "$left" -T 5 -N 5 \
			http://10.96.0.21/x >"$TMP/h2l.$i.tmp" 2>&1
		mv "$TMP/h2l.$i.tmp" "$TMP/h2l.$i.out"
	done
) &
PIDS+=($!)
bg load a1 nice -n 10 "$PY" "$SRC/bench/soak/load.py" --duration "$DUR" --stats "$TMP/load.stats" \
	--grpc 10.96.0.22:9090 --grpc-keep "$R_GK" --grpc-new "$R_GN" --h1 10.96.0.20:80 --h1-new "$R_H1NEW" \
	--l4 10.96.0.23:9000 --l4-keep "$R_LK" --l4-new "$R_LN" --l4z "$LAB_B1:9000" --l4z-new "$R_LZ"

next_sample=$T0 next_churn=$((T0 + 60))
while :; do
	now=$(date +%s)
	[ "$now" -ge "$END" ] && break
	if [ "$now" -ge "$next_sample" ]; then
		sample $((now - T0))
		next_sample=$((next_sample + 10))
	fi
	if [ "$now" -ge "$next_churn" ]; then
		reload_registry
		rotate_certs || log "certificate rotation failed at $((now - T0)) s"
		next_churn=$((next_churn + 60))
	fi
	sleep 1
done
log "load over; waiting for the clients and for every flow to close"
wait "$PID_load" 2>/dev/null
for p in "${PIDS[@]}"; do
	case " $PID_zt_a $PID_zt_b $PID_wp $PID_http $PID_h2 $PID_grpc $PID_l4 " in *" $p "*) ;; *) wait "$p" 2>/dev/null ;; esac
done
sample $(($(date +%s) - T0))
DRAINED=no
for _ in $(seq 30); do
	if [ "$(flows ha 15000)" = 0 ] && [ "$(flows hb 15000)" = 0 ] && [ "$(flows ha 15100)" = 0 ]; then
		DRAINED=yes
		break
	fi
	sleep 1
done
sample $(($(date +%s) - T0))
for p in $PROCS; do
	pid=PID_$p
	kill -0 "${!pid}" 2>/dev/null || die "$p died during the soak: $(tail -n 5 "$TMP/$p.err")"
done

# --- the verdict ---
[ "$OUTFILE" = - ] || cp "$CSV" "$(dirname "$OUTFILE")/soak.csv"
"$PY" "$SRC/bench/soak/report.py" --csv "$CSV" --warmup $((WARM_MIN * 60)) --end "$DUR" \
	--drained "$DRAINED" --cmdline "$CMDLINE" --rate "$RATE" --minutes "$MIN" \
	--out "$OUTFILE" --machine "$(nproc) CPUs, $(uname -r)"
