#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The TLS record layer (tls/record.c, amesh.conf(5) [tls] record_offload) against independent
# stacks: openssl s_client and s_server and Python's ssl (OpenSSL), both directions, both
# offloaded suites, 1 GiB checked with sha256; HBONE with python3-h2 over each suite; a flipped
# bit kills its connection alone with bad_record_mac; an oversize record gets record_overflow;
# renegotiation is refused; close_notify both ways; offload off keeps mbedTLS's records; writes
# are coalesced: many HTTP/2 frames of one loop turn share a record, bulk goes in full records.
. "$(dirname "$0")/../lib.sh"

PY=/usr/bin/python3
REC="$SRCDIR/tests/hbone/recpeer.py"
PEERS="$SRCDIR/tests/hbone/peers.py"
TLS="$BUILDDIR/tests/tools/tls-tool"
HB="$BUILDDIR/tests/tools/hbone-tool"
if ! "$TLS" gen 1 >/dev/null 2>&1; then
	echo "1..0 # SKIP tests/tools/tls-tool is not built"
	exit 0
fi
if ! "$TLS" offload; then
	echo "1..0 # SKIP built without the record layer (configure --without-record-offload)"
	exit 0
fi
if ! command -v openssl >/dev/null || ! $PY -c 'import h2' 2>/dev/null; then
	echo "1..0 # SKIP needs openssl and python3-h2"
	exit 0
fi
plan 28

AES=ECDHE-ECDSA-AES256-GCM-SHA384
CHACHA=ECDHE-ECDSA-CHACHA20-POLY1305
"$AMESH" ca init --dir "$TMP/ca" >/dev/null
for sa in server client; do
	"$AMESH" ca issue --dir "$TMP/ca" --namespace default --service-account $sa --out "$TMP/certs" >/dev/null
done
CA="$TMP/ca/ca.crt"
S="$TMP/certs/default/server"
C="$TMP/certs/default/client"
SID=spiffe://cluster.local/ns/default/sa/server
ID="--cert-dir $TMP/certs --bundle $CA --ns default"
PYC="--ca $CA --cert $C.crt --key $C.key"
PYS="--ca $CA --cert $S.crt --key $S.key"
G=1073741824
M=67108864
sha_of() { "$TLS" gen "$1" | sha256sum | cut -d' ' -f1; }
SHA_G=$(sha_of $G)
SHA_M=$(sha_of $M)
# The sink's line for a digest: "conn I got N SHA peer-closed SUITE".
sunk() { grep " got $1 $2 peer-closed $3\$" "$TMP/$4.out" >/dev/null; }
free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start sink "$TLS" server --listen 127.0.0.1:0 --mode sink $ID --sa server --verbose && SINK=$PORT

# 1-2: openssl s_client sends 1 GiB, then close_notify; amesh opens every record.
sclient() {
	"$TLS" gen "$1" | openssl s_client -connect "127.0.0.1:$2" -cert "$C.crt" -key "$C.key" \
		-CAfile "$CA" -tls1_2 -cipher "$3" -quiet -no_ign_eof -nocommands >"$TMP/sc.out" 2>"$TMP/sc.err"
}
for suite in $AES $CHACHA; do
	# (not $name: check() uses it)
	mbed=TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384
	[ $suite = $CHACHA ] && mbed=TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256
	sclient $G "$SINK" $suite
	RC=$?
	OUT=$(tail -n 3 "$TMP/sink.out")
	ERR=$(tail -n 5 "$TMP/sc.err")
	# Offloaded from sequence number 1 both ways: the Finished messages were record 0.
	check "openssl s_client -> amesh, $suite: 1 GiB, same sha256, offloaded at seq 1/1" \
		'[ $RC -eq 0 ] && sunk $G $SHA_G $mbed sink && grep -q "$mbed (records offloaded at out/in seq 1/1)" "$TMP/sink.err"'
done

# 3-4: Python's ssl sends (two connections at once), then close_notify, and waits for amesh's.
for suite in $AES $CHACHA; do
	run $PY "$REC" client --port "$SINK" $PYC --cipher $suite --send $M --streams 2
	s1=$(echo "$OUT" | sed -n '1s/^sent [0-9]* \([0-9a-f]*\) .* unwrap-ok$/\1/p')
	s2=$(echo "$OUT" | sed -n '2s/^sent [0-9]* \([0-9a-f]*\) .* unwrap-ok$/\1/p')
	sleep 0.2
	check "python ssl -> amesh, $suite: 2 x 64 MiB intact, close_notify answered by close_notify" \
		'[ -n "$s1" ] && [ -n "$s2" ] && grep -q " got $M $s1 " "$TMP/sink.out" && grep -q " got $M $s2 " "$TMP/sink.out"'
done

# 5-6: amesh sends 64 MiB then close_notify; Python reads to the close_notify (a bare EOF would
# raise: suppress_ragged_eofs is off).
start source "$TLS" server --listen 127.0.0.1:0 --mode source --bytes $M $ID --sa server && SOURCE=$PORT
for suite in $AES $CHACHA; do
	run $PY "$REC" client --port "$SOURCE" $PYC --cipher $suite --recv
	check "amesh -> python ssl, $suite: 64 MiB intact, then close_notify" \
		'[ "$OUT" = "got $M $SHA_M $suite close_notify" ]'
done

# 7-8: amesh as the client: sends to a Python server (1 GiB with ChaCha20).
for suite in $AES $CHACHA; do
	n=$M
	[ $suite = $CHACHA ] && n=$G
	start pys $PY "$REC" server $PYS --cipher $suite --recv
	run "$TLS" client --connect "127.0.0.1:$PORT" $ID --sa client --server-id $SID --mode send --bytes $n
	sleep 0.3
	want=$(sha_of $n)
	check "amesh client -> python ssl server, $suite: $n bytes intact, then close_notify" \
		'grep -q "^got $n $want $suite close_notify$" "$TMP/pys.out"'
done

# 9-10: amesh as the client receives from a Python server.
for suite in $AES $CHACHA; do
	start pys $PY "$REC" server $PYS --cipher $suite --send $M
	run "$TLS" client --connect "127.0.0.1:$PORT" $ID --sa client --server-id $SID --mode recv
	sleep 0.3
	got=$(echo "$OUT" | sed -n 's/^conn 0 got \([0-9]*\) \([0-9a-f]*\) peer-closed .*$/\1 \2/p')
	want=$(sed -n 's/^sent \([0-9]*\) \([0-9a-f]*\) .* unwrap-ok$/\1 \2/p' "$TMP/pys.out")
	check "python ssl server -> amesh client, $suite: 64 MiB intact, close_notify both ways" \
		'[ -n "$want" ] && [ "$got" = "$want" ]'
done

# 11-12: amesh client -> openssl s_server (whose stdin stays open: a fifo nobody writes).
mkfifo "$TMP/fifo"
exec 3<>"$TMP/fifo"
for suite in $AES $CHACHA; do
	p=$(free_port)
	# Not spawn: an asynchronous command's stdin is /dev/null unless it names its own.
	openssl s_server -accept "127.0.0.1:$p" -naccept 1 -cert "$S.crt" -key "$S.key" -CAfile "$CA" \
		-Verify 2 -verify_return_error -tls1_2 -cipher $suite -quiet \
		<"$TMP/fifo" >"$TMP/ss.out" 2>"$TMP/ss.err" &
	PID_ss=$!
	PIDS="$PIDS $PID_ss"
	i=0
	while ! ss -Hltn "sport = :$p" | grep -q . && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	run "$TLS" client --connect "127.0.0.1:$p" $ID --sa client --server-id $SID --mode send --bytes $M
	i=0
	while kill -0 "$PID_ss" 2>/dev/null && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	got=$(sha256sum <"$TMP/ss.out" | cut -d' ' -f1)
	check "amesh client -> openssl s_server, $suite: 64 MiB intact" \
		'[ "$got" = "$SHA_M" ] && echo "$OUT" | grep -q " sent $M $SHA_M "'
done
exec 3>&-

# 13-14: HBONE: python3-h2 over each suite to the amesh HBONE server, offloaded.
start echo $PY "$PEERS" echo && ECHO=$PORT
start hb "$HB" server --listen 127.0.0.1:0 --cert-dir "$TMP/certs" --bundle "$CA" --ns default --sa server && HBP=$PORT
for suite in $AES $CHACHA; do
	run $PY "$PEERS" h2 --port "$HBP" --ca "$CA" --cert "$C.crt" --key "$C.key" \
		--authority "127.0.0.1:$ECHO" --streams 10 --bytes 1000000 --cipher $suite
	check "python-h2 HBONE over $suite: 10 streams echo 1 MB each" \
		'[ "$OUT" = "status 200 ok 10 of 10 reset 0" ] && [ "$ERR" = "cipher $suite" ]'
done

# 15-16: one bit flipped in one record: that connection gets bad_record_mac and ends; another
# connection running at the same time is untouched.
start flip $PY "$REC" proxy --port "$SINK" --mode flip && FLIP=$PORT
for suite in $AES $CHACHA; do
	$PY "$REC" client --port "$SINK" $PYC --cipher $suite --send $M >"$TMP/clean.out" 2>&1 &
	clean=$!
	run $PY "$REC" client --port "$FLIP" $PYC --cipher $suite --send 1000000 --read-after --timeout 20
	wait $clean
	s1=$(sed -n 's/^sent [0-9]* \([0-9a-f]*\) .* unwrap-ok$/\1/p' "$TMP/clean.out")
	sleep 0.2
	check "flipped bit, $suite: bad_record_mac to that peer, the other connection intact" \
		'echo "$OUT" | grep -q "SSLV3_ALERT_BAD_RECORD_MAC" && [ -n "$s1" ] && grep -q " got $M $s1 " "$TMP/sink.out"'
done
check "the refusal is logged with the peer and the alert" \
	'grep -q "tls 127.0.0.1:[0-9]*: a record does not authenticate: fatal alert 20 sent" "$TMP/sink.err"'

# 18: a record header announcing more than 16384 + 2048 bytes.
start over $PY "$REC" proxy --port "$SINK" --mode oversize && OVER=$PORT
run $PY "$REC" client --port "$OVER" $PYC --cipher $AES --send 1000000 --read-after --timeout 20
check "oversize record: record_overflow alert, logged" \
	'echo "$OUT" | grep -q "TLSV1_ALERT_RECORD_OVERFLOW" && grep -q "length 18433): fatal alert 22 sent" "$TMP/sink.err"'

# 19: renegotiation (s_client's R command) is refused.
(printf 'hello\n'; sleep 0.5; printf 'R\n'; sleep 1) | openssl s_client -connect "127.0.0.1:$SINK" \
	-cert "$C.crt" -key "$C.key" -CAfile "$CA" -tls1_2 -quiet -no_ign_eof >"$TMP/sc.out" 2>"$TMP/sc.err"
ERR=$(tail -n 3 "$TMP/sc.err")
check "renegotiation: unexpected_message alert, logged" \
	'grep -q "alert unexpected message" "$TMP/sc.err" && grep -q "peer tried to renegotiate: fatal alert 10 sent" "$TMP/sink.err"'

# 20-22: offload on prefers AES-256-GCM; off, mbedTLS keeps the records and prefers ChaCha20.
run $PY "$REC" client --port "$SINK" $PYC --cipher "$CHACHA:$AES" --send 1000
check "offload on: the server picks AES-256-GCM over ChaCha20-Poly1305" \
	'echo "$OUT" | grep -q " $AES unwrap-ok$"'
start sinkoff "$TLS" server --listen 127.0.0.1:0 --mode sink $ID --sa server --offload off --verbose && OFF=$PORT
run $PY "$REC" client --port "$OFF" $PYC --cipher "$CHACHA:$AES" --send 1000
check "offload off: the server picks ChaCha20-Poly1305" 'echo "$OUT" | grep -q " $CHACHA unwrap-ok$"'
sclient $M "$OFF" $AES
sclient $M "$OFF" $CHACHA
check "offload off: both suites through mbedTLS's records, intact" \
	'sunk $M $SHA_M TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384 sinkoff && sunk $M $SHA_M TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256 sinkoff && ! grep -q "records offloaded" "$TMP/sinkoff.err"'

# 23-24: amesh with mbedTLS's records against amesh offloaded, both ways (two implementations of
# the same records: the offloaded server picks AES-256-GCM, the mbedTLS one ChaCha20-Poly1305).
run "$TLS" client --connect "127.0.0.1:$SINK" $ID --sa client --server-id $SID --mode send --bytes $M --offload off
sleep 0.2
check "amesh mbedTLS records -> amesh offloaded, AES-256-GCM: 64 MiB intact" \
	'echo "$OUT" | grep -q " sent $M $SHA_M - TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384$" && sunk $M $SHA_M TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384 sink'
run "$TLS" client --connect "127.0.0.1:$OFF" $ID --sa client --server-id $SID --mode send --bytes $M --offload on
sleep 0.2
check "amesh offloaded -> amesh mbedTLS records, ChaCha20-Poly1305: 64 MiB intact" \
	'echo "$OUT" | grep -q " sent $M $SHA_M - TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256$" && [ "$(grep -c " got $M $SHA_M peer-closed TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256$" "$TMP/sinkoff.out")" -eq 2 ]'

# 25-28: coalescing (tls.c stages plaintext per loop turn). 50 PINGs in one record make nghttp2
# queue 50 PING ACK frames in one turn: without coalescing each was a record of its own. A flood
# through one stream: most of the ciphertext goes in records of 16384 bytes of plaintext (a turn's
# last record is short). Counted by a relay that parses the server's record headers; offload on
# and off (mbedTLS's records).
COAL="$SRCDIR/tests/hbone/coalesce.py"
start flood $PY "$PEERS" flood --bytes 100000000 && FLOOD=$PORT
for off in on off; do
	start "hbc$off" "$HB" server --listen 127.0.0.1:0 --cert-dir "$TMP/certs" --bundle "$CA" \
		--ns default --sa server --offload $off && HBC=$PORT
	run $PY "$COAL" pings --port "$HBC" $PYC --pings 50
	check "offload $off: 50 PING ACKs of one turn go in at most 2 records" \
		'set -- $OUT; [ "$1 $2" = "acks 50" ] && [ "$4" -ge 1 ] && [ "$4" -le 2 ]'
	run $PY "$COAL" bulk --port "$HBC" $PYC --authority "127.0.0.1:$FLOOD" --bytes 8000000
	check "offload $off: a flood through one stream goes mostly in full 16 KiB records" \
		'set -- $OUT; [ "$2" -ge 8000000 ] && [ "$8" -ge 60 ]'
done

[ $tap_failed -eq 0 ]
