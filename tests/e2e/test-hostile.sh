#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Hostile peers (issue 19 item 4): the two-host lab with ztunnels and a waypoint on host A, and
# clients that attack them (tests/e2e/hostile.py): slowloris, clients that never read, HTTP/2
# SETTINGS/PING/rapid-reset/CONTINUATION floods at the waypoint's h2c path and at the HBONE
# listeners (mTLS, with a certificate of the lab's CA), 10,000 half-open connections, 1,000 that
# stop inside their ClientHello. Each is cut off by its documented limit, costs bounded memory,
# and a bystander's latency (200 sequential requests through the waypoint, a new connection
# each) stays within twice the baseline.
# Limits are shortened here so that the test is quick: request_header_timeout 2s,
# handshake_timeout 3s, idle_timeout 4s.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
# 10,000 half-open connections: as many descriptors in the attacker and in the attacked.
if [ "$(ulimit -n)" -lt 12000 ] && ! ulimit -n 12000 2>/dev/null; then
	echo "1..0 # SKIP cannot raise the descriptor limit to 12000"
	exit 0
fi
trap 'lab_down; cleanup' EXIT
# HOSTILE_ONLY="slowloris flood continuation noread halfopen hello" runs only those parts (the
# plan is printed at the end).
ONLY=${HOSTILE_ONLY:-slowloris flood continuation noread halfopen hello}
part() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

lab_up "$TMP/lab" || { echo "Bail out! lab_up failed"; exit 1; }
lab_certs >/dev/null || { echo "Bail out! lab_certs failed"; exit 1; }
PY=$LAB_PY
H="$SRCDIR/tests/e2e/hostile.py"
HTTPD="$SRCDIR/tests/e2e/httpd.py"
lab_waypoint || { echo "Bail out! lab_waypoint failed"; exit 1; }
WP=$LAB_WP
cat >>"$LAB_WP_CONF" <<EOF
request_header_timeout = 2s
handshake_timeout = 3s
idle_timeout = 4s
EOF
for c in "$LAB_CONF_A" "$LAB_CONF_B"; do
	printf 'handshake_timeout = 3s\nidle_timeout = 4s\n' >>"$c"
done
sed -i '/^\[service "echo"\]/a waypoint = wp' "$LAB_REGISTRY/00-lab.conf"
cat >"$LAB_REGISTRY/40-hostile.conf" <<EOF
[service "h2"]
namespace = default
vip = 10.96.0.13
ports = 80:9091
selector = app=echo
waypoint = wp
EOF

for ns in a2 b1; do
	name=$( [ $ns = a2 ] && echo echo-a || echo echo-b )
	start "http_$ns" $(lab_in $ns) $PY "$HTTPD" serve --name $name --port 8080 || exit 1
	mkdir -p "$TMP/www-$ns" && head -c 64M /dev/zero >"$TMP/www-$ns/big"
	spawn "h2_$ns" $(lab_in $ns) nghttpd --no-tls -d "$TMP/www-$ns" 9091
done
spawn zt_a $(lab_in ha) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_A"
ZT_A=$pid
spawn zt_b $(lab_in hb) $(lab_unit_privs amesh-ztunnel.service) "$AMESH" ztunnel -c "$LAB_CONF_B"
spawn wp $(lab_in ha) $(lab_unit_privs amesh-waypoint@.service) "$AMESH" waypoint -c "$LAB_WP_CONF" --name wp
WP_PID=$pid
lab_wait_ready ha && lab_wait_ready hb && lab_wait_ready ha 15121
check "ztunnels and the waypoint are ready" 'lab_ready ha && lab_ready hb && lab_ready ha 15121'
for x in "a a1 client-a" "a a2 echo-a" "b b1 echo-b"; do
	set -- $x
	lab_exec h$1 "$AMESH" -c "$(eval echo \$LAB_CONF_$(echo "$1" | tr ab AB))" cni add \
		--netns "$(lab_ns_path "$2")" --workload "$3" >/dev/null 2>&1
done
lab_wait_port a2 '*' 9091

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
wp_stat() { lab_exec ha $PY -c 'import json,sys,urllib.request
d=json.load(urllib.request.urlopen("http://127.0.0.1:15100/config_dump",timeout=2))
print(d["stats"][sys.argv[1]])' "$1" 2>/dev/null; }
alive() { kill -0 "$ZT_A" 2>/dev/null && kill -0 "$WP_PID" 2>/dev/null; }
# A bystander: 200 sequential requests through the waypoint, a new connection each.
bystander() { lab_exec a1 $PY "$H" latency "http://$LAB_VIP/" --n 200; }
# within_2x RESULT: no error, and the median of RESULT within twice the baseline's (plus 1 ms: the
# baseline is a few ms, where scheduling noise alone is a large part). A proxy stalled by an
# attack moves the median. The p90 is printed, not judged: on the test machine's two shared CPUs,
# under ASan and beside three attackers, the tail is other processes' noise (one CI run saw a
# p90 of 16 ms against a 3.3 ms baseline with a median of 3.3) and make check has no timing
# assertions that such noise can fail.
within_2x() {
	set -- $1
	[ "${6:-1}" = 0 ] && awk -v m="$2" -v bm="$BASE_MED" 'BEGIN { exit !(m <= 2 * bm + 1) }'
}
# flood_ok FILE [SLACK]: every attack of FILE ("goaway CODE FRAMES SECONDS", "closed ...",
# "alive ...") ended, at least one with GOAWAY, and every GOAWAY said ENHANCE_YOUR_CALM (11) after
# at most 1000 frames and 100 a second more (H2_FLOOD_BURST, H2_FLOOD_RATE), plus SLACK frames
# the count cannot tell apart (rst-late: GOAWAY's last stream may be a batch of 50 HEADERS past
# the reset that was one too many, and the GOAWAY may cross the next batch: 100). A connection
# closed under us (we sent on after its GOAWAY, so its reset may reach us first) is counted as
# such.
flood_ok() {
	awk -v slack="${2:-0}" '$1 == "alive" ||
		($1 == "goaway" && ($2 != 11 || $3 > 1000 + 100 * $4 + 10 + slack)) { bad = 1 }
		$1 == "goaway" { g++ } END { exit bad || !g }' "$1"
}
flood_sum() {
	awk '{ n[$1]++ } $1 == "goaway" && $3 > m { m = $3 } END {
		for (k in n) printf "%s %d, ", k, n[k]; printf "most frames %d", m }' "$1"
}
# Attackers run at nice 10: on the test's machine they share the CPUs with the proxies (a real
# attacker does not), and the bystander measures the proxies, not the attacker's CPU.
NICE="nice -n 10"
CA=$LAB_DIR/ca/ca.crt
CERT="--tls --ca $CA --cert $LAB_DIR/node-a/certs/default/client.crt --key $LAB_DIR/node-a/certs/default/client.key"

# Baseline (the slowest of two runs, so that a lucky first run does not make the bound tight).
bystander >/dev/null
B1=$(bystander)
B2=$(bystander)
BASE_MED=$(printf '%s\n%s\n' "$B1" "$B2" | awk '{ if ($2 > m) m = $2 } END { print m }')
BASE_P90=$(printf '%s\n%s\n' "$B1" "$B2" | awk '{ if ($4 > m) m = $4 } END { print m }')
OUT="$B1 / $B2"
check "baseline: 2 x 200 requests through the waypoint without error ($OUT)" \
	'echo "$B1" | grep -q "errors 0$" && echo "$B2" | grep -q "errors 0$"'

# --- slowloris: a request head a byte a second, 20 clients at once ---
if part slowloris; then
RSS0=$(rss "$WP_PID")
SP=""
for i in $(seq 20); do
	lab_exec a1 $NICE $PY "$H" slowloris "$LAB_VIP" 80 --max 20 >"$TMP/slow.$i" 2>&1 &
	SP="$SP $!"
done
sleep 1.8 # (the attackers' own start-up takes the CPUs for a while)
LAT=$(bystander)
wait $SP
OUT=$(cat "$TMP"/slow.* | sort | uniq -c | tr '\n' ';')
check "slowloris through the waypoint: all 20 answered 408 after request_header_timeout (2s) ($OUT)" \
	'[ "$(cat "$TMP"/slow.* | awk "\$1 == \"cut\" && \$2 >= 1.5 && \$2 < 6 && \$3 == 408" | wc -l)" -eq 20 ]'
check "... counted in stats.header_timeouts ($(wp_stat header_timeouts))" '[ "$(wp_stat header_timeouts)" -ge 20 ]'
check "... a bystander within 2x ($LAT; baseline median $BASE_MED p90 $BASE_P90)" 'within_2x "$LAT"'

# At the HBONE listeners: a TLS ClientHello a byte a second is cut by handshake_timeout (3s).
for tgt in "$WP 15008 waypoint" "$LAB_A2 15008 ztunnel-inbound"; do
	set -- $tgt
	run lab_exec ha $PY "$H" slowloris "$1" "$2" --max 20 --tls-hello
	check "slowloris TLS handshake at the $3 HBONE listener: cut by handshake_timeout ($OUT)" \
		'echo "$OUT" | awk "\$1 == \"cut\" && \$2 >= 2.5 && \$2 < 6 { ok = 1 } END { exit !ok }"'
done

fi

# --- HTTP/2 floods: at the waypoint's h2c path (service h2 through the mesh) and at the HBONE
# listeners with a mesh certificate. The flooder reads our answers (so nghttp2's own cap on
# queued acknowledgements never trips) and attacks again (10 connections a second at most) for
# 6 s while the bystander runs. The server must have taken 1000 frames and at most 100 a second
# more (H2_FLOOD_BURST, H2_FLOOD_RATE; counted by their acknowledgements, or for rapid reset by
# GOAWAY's last stream), then said GOAWAY ENHANCE_YOUR_CALM (11), on every connection. Rapid
# reset comes twice: each HEADERS with its RST_STREAM (rst), and 50 HEADERS with their resets
# 20 ms later (rst-late), once the waypoint has opened their upstream streams. ---
for kind in settings ping rst rst-late; do
	part flood || break
	lab_exec a1 $NICE $PY "$H" flood $kind 10.96.0.13 80 --read --repeat 6 >"$TMP/fl.h2c" 2>&1 &
	FP=$!
	lab_exec ha $NICE $PY "$H" flood $kind "$WP" 15008 --read --repeat 6 $CERT >"$TMP/fl.wp" 2>&1 &
	FP2=$!
	lab_exec ha $NICE $PY "$H" flood $kind "$LAB_A2" 15008 --read --repeat 6 $CERT >"$TMP/fl.zt" 2>&1 &
	FP3=$!
	sleep 0.3
	LAT=$(bystander)
	wait $FP $FP2 $FP3
	for w in "h2c waypoint h2c path" "wp waypoint HBONE listener" "zt ztunnel HBONE listener"; do
		set -- $w
		f=$TMP/fl.$1
		shift
		OUT=$(flood_sum "$f")
		check "$kind flood at the $*: GOAWAY ENHANCE_YOUR_CALM after the limit ($OUT)" \
			'flood_ok "$f" "$([ $kind = rst-late ] && echo 100)"'
	done
	check "... a bystander within 2x during the $kind floods ($LAT)" 'within_2x "$LAT"'
	if [ "$kind" != settings ] && [ "$kind" != ping ]; then
		# The waypoint opens an upstream tunnel for each of the h2c attacker's requests, on
		# the pooled HBONE connection it shares with the bystander. Its resets must not reach
		# the endpoint ztunnel's flood limit there, or the shared connection is sent GOAWAY
		# and the bystander's requests on it fail (503 UC): an upstream stream reset in the
		# turn it was opened never leaves, and RST_STREAMs that do are paced (amesh-
		# waypoint(8), HTTP/2 floods). The ztunnels log each connection they end so, with
		# its peer's identity (lab_waypoint's: sa/waypoint).
		OUT=$(cat "$TMP/zt_a.err" "$TMP/zt_b.err" | grep -c "/sa/waypoint): more than")
		check "... the waypoint's pooled connections were not sent GOAWAY by a ztunnel's flood limit ($OUT in the ztunnels' logs)" \
			'[ "$OUT" -eq 0 ]'
	fi
done
part flood && check "... counted in stats.h2_floods ($(wp_stat h2_floods))" '[ "$(wp_stat h2_floods)" -ge 3 ]'

# CONTINUATION flood: one HEADERS and CONTINUATION frames without END_HEADERS, sent as fast as
# the connection takes them: closed at the 9th (H2_MAX_CONTINUATIONS), well within a second
# (without the limit the header block never ends and the connection lives on).
for tgt in "10.96.0.13 80 a1 waypoint-h2c" "$WP 15008 ha waypoint-HBONE" "$LAB_A2 15008 ha ztunnel-HBONE"; do
	part continuation || break
	set -- $tgt
	t=$4
	if [ "$2" = 15008 ]; then
		run lab_exec "$3" $PY "$H" flood continuation "$1" "$2" --max 10 --read $CERT
	else
		run lab_exec "$3" $PY "$H" flood continuation "$1" "$2" --max 10 --read
	fi
	check "CONTINUATION flood at $t: closed within a second ($OUT)" \
		'echo "$OUT" | awk "{ t = \$1 == \"goaway\" ? \$4 : \$3 } \$1 != \"alive\" && t < 1 { ok = 1 } END { exit !ok }"'
done

# --- clients that never read: a 64 MB answer, over HTTP/1.1 and HTTP/2 (window 0) ---
if part noread; then
RSS0=$(rss "$WP_PID")
ZRSS0=$(rss "$ZT_A")
lab_exec a1 $PY "$H" noread h1 "$LAB_VIP" 80 /bytes/67108864 --hold 9 >"$TMP/nr.h1" 2>&1 &
N1=$!
lab_exec a1 $PY "$H" noread h2 10.96.0.13 80 /big --hold 9 >"$TMP/nr.h2" 2>&1 &
N2=$!
sleep 2
RSS1=$(rss "$WP_PID")
ZRSS1=$(rss "$ZT_A")
LAT=$(bystander)
wait $N1 $N2
OUT="$(cat "$TMP/nr.h1") / $(cat "$TMP/nr.h2")"
check "HTTP/1.1 client that never reads a 64 MB answer: cut by idle_timeout (4s), not all of it sent ($OUT)" \
	'awk "\$1 == \"cut\" && \$3 < 16777216 { ok = 1 } END { exit !ok }" "$TMP/nr.h1"'
check "HTTP/2 client with window 0: cut by idle_timeout (4s) ($OUT)" \
	'awk "\$1 == \"cut\" && \$3 < 1048576 { ok = 1 } END { exit !ok }" "$TMP/nr.h2"'
OUT="waypoint $RSS0 -> $RSS1 KiB, ztunnel $ZRSS0 -> $ZRSS1 KiB"
check "... while held they cost under 4 MiB of RSS in each process ($OUT)" \
	'[ $((RSS1 - RSS0)) -lt 4096 ] && [ $((ZRSS1 - ZRSS0)) -lt 4096 ]'
check "... a bystander within 2x ($LAT)" 'within_2x "$LAT"'
fi

# --- 10,000 half-open connections at each HBONE listener (TCP only, no ClientHello), opened
# within about 4 s. Each is closed handshake_timeout (3s) after its accept: the attacker sees
# them all closed. Peak RSS sampled over the attack: at most 8 KiB a connection (measured
# about 2.8: struct tls_conn with its libuv handles and the HTTP/2 connection record; the TLS
# input buffer, mbedTLS's record buffers and the nghttp2 session, 88 KiB in all, wait for the
# client's first bytes, which never come). And a bystander stays within 2x: before, the first
# attack on a fresh process took 880 MB of page faults and slowed it past that. ---
# Under AddressSanitizer (CI's build) every allocation carries redzones and freed memory waits in
# a quarantine, and the process runs several times slower: 2,000 connections, and a looser bound.
HO_N=10000
if ldd "$AMESH" 2>/dev/null | grep -q libasan; then
	HO_N=2000
fi
for tgt in "$WP $WP_PID waypoint" "$LAB_A2 $ZT_A ztunnel"; do
	part halfopen || break
	set -- $tgt
	R0=$(rss "$2")
	lab_exec ha $NICE $PY "$H" halfopen "$1" 15008 --n $HO_N --max 60 >"$TMP/ho" 2>&1 &
	HP=$!
	sleep 1
	LAT=$(bystander)
	PEAK=$R0
	while kill -0 $HP 2>/dev/null; do
		r=$(rss "$2")
		[ "$r" -gt "$PEAK" ] && PEAK=$r
		sleep 0.5
	done
	wait $HP
	R2=$(rss "$2")
	OUT="$(tail -n 1 "$TMP/ho"); RSS $R0 -> peak $PEAK -> $R2 KiB"
	check "$HO_N half-open connections at the $3's 15008: all closed by handshake_timeout ($OUT)" \
		'tail -n 1 "$TMP/ho" | grep -q " closed $HO_N$"'
	# Under ASan: 24 KiB (its redzones and shadow memory, and the few connections' worth of
	# everything else, weigh more with 2,000 connections).
	HO_KIB=8
	[ "$HO_N" = 10000 ] || HO_KIB=24
	check "... at most $HO_KIB KiB each ($(( (PEAK - R0) * 1024 / HO_N )) bytes each)" \
		'[ $((PEAK - R0)) -le $((HO_KIB * HO_N)) ]'
	check "... a bystander within 2x ($LAT)" 'within_2x "$LAT"'
done

# --- 1,000 connections at each HBONE listener that send the first 100 bytes of a ClientHello
# and no more: their handshakes have begun (mbedTLS's record buffers and handshake state, about
# 45 KiB, are allocated; the TLS input buffer went back once mbedTLS took the bytes) and wait;
# handshake_timeout closes them. At most 64 KiB each (measured about 41 KiB of RSS on a fresh
# process; less after the half-open part, whose freed memory malloc hands out again). ---
HE_N=1000
for tgt in "$WP $WP_PID waypoint" "$LAB_A2 $ZT_A ztunnel"; do
	part hello || break
	set -- $tgt
	R0=$(rss "$2")
	lab_exec ha $NICE $PY "$H" halfopen "$1" 15008 --n $HE_N --send 100 --max 60 \
		>"$TMP/he" 2>&1 &
	HP=$!
	PEAK=$R0
	while kill -0 $HP 2>/dev/null; do
		r=$(rss "$2")
		[ "$r" -gt "$PEAK" ] && PEAK=$r
		sleep 0.5
	done
	wait $HP
	OUT="$(tail -n 1 "$TMP/he"); RSS $R0 -> peak $PEAK KiB"
	check "$HE_N connections with 100 bytes of a ClientHello at the $3's 15008: all closed by handshake_timeout ($OUT)" \
		'tail -n 1 "$TMP/he" | grep -q " closed $HE_N$"'
	HE_KIB=64
	[ "$HO_N" = 10000 ] || HE_KIB=160
	check "... at most $HE_KIB KiB each ($(( (PEAK - R0) * 1024 / HE_N )) bytes each)" \
		'[ $((PEAK - R0)) -le $((HE_KIB * HE_N)) ]'
done

check "no process died, all still ready" 'alive && lab_ready ha && lab_ready hb && lab_ready ha 15121'
plan $tap_n
tap_done
