#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# HBONE end to end over loopback: an independent HTTP/2 + TLS stack (python3-h2 and Python's ssl)
# against the amesh HBONE server, the amesh client pool against it, refusals, scale and bounds.
. "$(dirname "$0")/../lib.sh"

PY=/usr/bin/python3
PEERS="$SRCDIR/tests/hbone/peers.py"
TOOL="$BUILDDIR/tests/tools/hbone-tool"
if ! $PY -c 'import h2' 2>/dev/null; then
	echo "1..0 # SKIP python3-h2 is not installed (apt-get install python3-h2)"
	exit 0
fi
plan 14

# Identities: the mesh CA, a second CA in another trust domain, and an expired certificate.
"$AMESH" ca init --dir "$TMP/ca" >/dev/null
"$AMESH" ca init --dir "$TMP/ca2" --trust-domain other.local >/dev/null
for sa in server client; do
	"$AMESH" ca issue --dir "$TMP/ca" --namespace default --service-account $sa --out "$TMP/certs" >/dev/null
done
"$AMESH" ca issue --dir "$TMP/ca2" --namespace default --service-account client --out "$TMP/certs2" >/dev/null
# amesh ca will not issue an expired certificate (rightly), so openssl signs one with past dates.
mkdir -p "$TMP/old" "$TMP/certs3/default"
(
	cd "$TMP/old" || exit 1
	: >index.txt
	echo 1000 >serial
	printf '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n[e]\nsubjectAltName = URI:spiffe://cluster.local/ns/default/sa/old\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth, clientAuth\n' >ca.cnf
	openssl ecparam -name prime256v1 -genkey -noout -out old.key 2>/dev/null &&
	openssl req -new -key old.key -subj /CN=old -out old.csr 2>/dev/null &&
	openssl ca -batch -config ca.cnf -cert "$TMP/ca/ca.crt" -keyfile "$TMP/ca/ca.key" \
		-startdate 20200101000000Z -enddate 20200201000000Z -extensions e -in old.csr \
		-out "$TMP/certs3/default/old.crt" >/dev/null 2>&1 &&
	cp old.key "$TMP/certs3/default/old.key"
) || echo "# could not make the expired certificate"
CA="$TMP/ca/ca.crt"
C="$TMP/certs/default/client"

start echo $PY "$PEERS" echo && ECHO=$PORT
start sink $PY "$PEERS" sink && SINK=$PORT
start flood $PY "$PEERS" flood --bytes 2147483648 && FLOOD=$PORT
start srv "$TOOL" server --listen 127.0.0.1:0 --cert-dir "$TMP/certs" --bundle "$CA" \
	--ns default --sa server --max-streams 1000 && SRV=$PORT

h2() { run $PY "$PEERS" h2 --port "$SRV" --ca "$CA" "$@"; }

h2 --cert "$C.crt" --key "$C.key" --authority "127.0.0.1:$ECHO" --streams 10 --bytes 100000
check "python-h2 CONNECT: 10 streams echo their bytes exactly" '[ "$OUT" = "status 200 ok 10 of 10 reset 0" ]'

h2 --authority "127.0.0.1:$ECHO"
check "no client certificate: refused in the handshake" 'echo "$OUT" | grep -q "^tls-refused"'

h2 --cert "$TMP/certs2/default/client.crt" --key "$TMP/certs2/default/client.key" --authority "127.0.0.1:$ECHO"
check "certificate from another trust domain: refused" 'echo "$OUT" | grep -q "^tls-refused"'

h2 --cert "$TMP/certs3/default/old.crt" --key "$TMP/certs3/default/old.key" --authority "127.0.0.1:$ECHO"
check "expired certificate: refused" 'echo "$OUT" | grep -q "^tls-refused"'

h2 --cert "$C.crt" --key "$C.key" --authority "127.0.0.1:$ECHO" --method GET
check "non-CONNECT method: 400" '[ "$OUT" = "status 400 ok 0 of 1 reset 0" ]'

h2 --cert "$C.crt" --key "$C.key" --authority "no-port-here"
check "authority without a port: 400" '[ "$OUT" = "status 400 ok 0 of 1 reset 0" ]'

h2 --cert "$C.crt" --key "$C.key" --authority "127.0.0.1:1"
check "upstream refuses: 503" '[ "$OUT" = "status 503 ok 0 of 1 reset 0" ]'

h2 --cert "$C.crt" --key "$C.key" --authority "127.0.0.1:$ECHO" --streams 1000 --bytes 2000 --timeout 120
check "1,000 concurrent streams on one connection" '[ "$OUT" = "status 200 ok 1000 of 1000 reset 0" ]'

grep -q "handshake failed" "$TMP/srv.err"
check "refusals are logged with the peer address and reason" \
	'grep -q "tls 127.0.0.1:[0-9]*: handshake failed: peer .* is not in trust domain cluster.local" "$TMP/srv.err"'

# The amesh client pool against the amesh server.
start cli "$TOOL" client --listen 127.0.0.1:0 --cert-dir "$TMP/certs" --bundle "$CA" \
	--ns default --sa client --server "127.0.0.1:$SRV" \
	--server-id spiffe://cluster.local/ns/default/sa/server --authority "127.0.0.1:$SINK" && CLI=$PORT
run $PY "$PEERS" send --port "$CLI" --bytes 1073741824
sent=$(echo "$OUT" | sed -n 's/^sent \([0-9]*\) \([0-9a-f]*\)$/\1 \2/p')
got=$(echo "$OUT" | sed -n 's/^got \([0-9]*\) \([0-9a-f]*\)$/\1 \2/p')
check "1 GiB through one stream: same length and sha256 at the far end" '[ -n "$sent" ] && [ "$sent" = "$got" ]'

# 16 parallel tunnels from the pool share one connection.
i=0
while [ $i -lt 16 ]; do
	$PY "$PEERS" send --port "$CLI" --bytes 1000000 >"$TMP/par.$i" &
	i=$((i + 1))
done
wait_ok=0
for f in "$TMP"/par.*; do :; done
sleep 0.2
while [ "$(grep -l '^got' "$TMP"/par.* 2>/dev/null | wc -l)" -lt 16 ] && [ $wait_ok -lt 300 ]; do
	sleep 0.1
	wait_ok=$((wait_ok + 1))
done
matches=0
for f in "$TMP"/par.*; do
	s=$(sed -n 's/^sent \(.*\)$/\1/p' "$f")
	g=$(sed -n 's/^got \(.*\)$/\1/p' "$f")
	[ -n "$s" ] && [ "$s" = "$g" ] && matches=$((matches + 1))
done
kill -USR1 "$PID_cli"
sleep 0.3
check "16 parallel tunnels all arrive intact" '[ "$matches" -eq 16 ]'
check "the pool used one connection for them" \
	'tail -n 1 "$TMP/cli.out" | grep -q "stats pool conns=1 .* opened=1 "'

# A reader that stops reading for 10 s: the upstream floods, the proxy must not buffer it all.
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss "$PID_srv")
$PY "$PEERS" h2 --port "$SRV" --ca "$CA" --cert "$C.crt" --key "$C.key" --authority "127.0.0.1:$FLOOD" \
	--stall 10 --window 1073741824 --bytes 0 --timeout 1 >"$TMP/stall.out" 2>&1 &
stall=$!
sleep 9
during=$(rss "$PID_srv")
wait $stall
# Positive control: the tunnel was up and the flood was flowing once the reader read again.
received=$(sed -n 's/^timeout: status 200 ended 0 reset 0 of 1 received \([0-9]*\)$/\1/p' "$TMP/stall.out")
OUT=$(cat "$TMP/stall.out")
# The reader granted a 1 GiB window, so only our backpressure holds the flood back: the TLS queue
# high-water mark (256 KiB) + one TLS record + the stream send buffer and relay buffer (64 KiB
# each), plus allocator slack: at most 8 MiB over what the server held before.
if "$TOOL" sanitized; then
	check "stalled reader: the tunnel was up and data flowed after the stall" \
		'[ -n "$received" ] && [ "$received" -gt 1000000 ]'
	echo "# RSS bound not asserted: AddressSanitizer's quarantine makes RSS meaningless"
else
	check "stalled reader: server RSS grew by at most 8 MiB (before ${before} KiB, during ${during} KiB)" \
		'[ -n "$received" ] && [ "$received" -gt 1000000 ] && [ -n "$during" ] && [ $((during - before)) -le 8192 ]'
fi

kill -TERM "$PID_srv"
i=0
while kill -0 "$PID_srv" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
check "SIGTERM drains and exits" '! kill -0 "$PID_srv" 2>/dev/null'

tap_done
