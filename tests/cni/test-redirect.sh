#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The rules of amesh cni at work: a workload namespace ("pod") joined by a veth pair to a second
# namespace ("peer"), rules installed by `amesh cni add` (stand-in ztunnel), python3 listeners in
# place of the ztunnel's. Outbound TCP lands on 15001 and inbound on 15006 with SO_ORIGINAL_DST
# telling the real destination; the proxy's own marked sockets, HBONE and loopback pass; a
# transparent delivery with the client's address gets its replies back through ct mark 0x111 and
# table 100. Root only; traffic stays inside the two namespaces.
. "$(dirname "$0")/lib-cni.sh"

plan 16

A="$AMESH -c $CONF"
netns_add pod
netns_add peer
POD=/run/netns/$NS_PREFIX-pod
ip link add "$NS_PREFIX-p0" netns "$NS_PREFIX-pod" type veth peer name "$NS_PREFIX-q0" \
	netns "$NS_PREFIX-peer"
in_ns pod ip link set "$NS_PREFIX-p0" up
in_ns pod ip addr add 10.99.1.2/24 dev "$NS_PREFIX-p0"
in_ns pod ip -6 addr add fd99:1::2/64 dev "$NS_PREFIX-p0" nodad
in_ns peer ip link set "$NS_PREFIX-q0" up
in_ns peer ip addr add 10.99.1.1/24 dev "$NS_PREFIX-q0"
in_ns peer ip -6 addr add fd99:1::1/64 dev "$NS_PREFIX-q0" nodad

# srv.py PORT...: listens on 0.0.0.0 and [::] on each port; per connection logs "accept PORT
# ORIGDST-IP ORIGDST-PORT CLIENT-IP" (SO_ORIGINAL_DST) and greets with "hello from PORT".
cat >"$TMP/srv.py" <<'EOF'
import select, socket, struct, sys
SO_ORIGINAL_DST = 80
socks = {}
for port in map(int, sys.argv[1:]):
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.listen(16)
        socks[s] = port
print("ready", flush=True)
while True:
    for s in select.select(list(socks), [], [])[0]:
        c, peer = s.accept()
        try:
            if s.family == socket.AF_INET:
                raw = c.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
                dst = socket.inet_ntop(socket.AF_INET, raw[4:8])
            else:
                raw = c.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
                dst = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            dport = struct.unpack("!H", raw[2:4])[0]
        except OSError:
            # No conntrack entry (a namespace without NAT): the destination is our own address.
            dst, dport = c.getsockname()[:2]
        print("accept %d %s %d %s" % (socks[s], dst, dport, peer[0]), flush=True)
        c.sendall(b"hello from %d\n" % socks[s])
        c.close()
EOF

# cli.py ADDR PORT [MARK]: connects (with SO_MARK when given) and prints the greeting.
cat >"$TMP/cli.py" <<'EOF'
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(3)
if len(sys.argv) > 3:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[3], 0))
try:
    s.connect((addr, port))
    print(s.makefile().readline().strip())
except OSError as e:
    print("error: %s" % e)
EOF

# tp.py CLIENT APP: what the ztunnel does to deliver inbound: a socket marked 0x539 with
# IP_TRANSPARENT, bound to the remote client's address, connects to the app in its own namespace.
# The app must see CLIENT, and its reply must come back to this socket (not leave for CLIENT).
cat >"$TMP/tp.py" <<'EOF'
import socket, sys
client, app = sys.argv[1], sys.argv[2]
fam = socket.AF_INET6 if ":" in app else socket.AF_INET
l = socket.socket(fam, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((app, 9090))
l.listen(1)
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x539)
if fam == socket.AF_INET:
    s.setsockopt(socket.SOL_IP, 19, 1)          # IP_TRANSPARENT
else:
    s.setsockopt(socket.IPPROTO_IPV6, 75, 1)    # IPV6_TRANSPARENT
s.bind((client, 0))
try:
    s.connect((app, 9090))
    c, peer = l.accept()
    c.sendall(b"reply\n")
    print("app saw %s, proxy got %s" % (peer[0], s.makefile().readline().strip()))
except OSError as e:
    print("error: %s" % e)
EOF

# wait_ready FILE: until the server in FILE says ready (5 s).
wait_ready() {
	i=0
	while [ $i -lt 50 ]; do
		grep -q '^ready$' "$1" && return 0
		sleep 0.1
		i=$((i + 1))
	done
	echo "# server did not start: $(cat "$1")"
	return 1
}

# Not through in_ns: a backgrounded function is a subshell, and cleanup's kill would reach only it,
# leaving the server running. ip netns exec execs the server, so $! is the server itself.
ip netns exec "$NS_PREFIX-pod" $PY "$TMP/srv.py" 15001 15006 15008 8080 >"$TMP/pod.log" 2>&1 &
PIDS="$PIDS $!"
ip netns exec "$NS_PREFIX-peer" $PY "$TMP/srv.py" 80 >"$TMP/peer.log" 2>&1 &
PIDS="$PIDS $!"
wait_ready "$TMP/pod.log" && wait_ready "$TMP/peer.log"

# Before: nothing is redirected (positive control for the listeners and the wire).
run in_ns pod $PY "$TMP/cli.py" 10.99.1.1 80
check "without rules the pod reaches the peer directly" '[ "$OUT" = "hello from 80" ]'

start_peer
run $A cni add --netns "$POD" --workload web
check "cni add installs the rules" '[ "$RC" -eq 0 ]'

run in_ns pod $PY "$TMP/cli.py" 10.99.1.1 80
check "outbound IPv4 TCP lands on 15001" '[ "$OUT" = "hello from 15001" ]'
check "SO_ORIGINAL_DST gives the original IPv4 destination" \
	'tail -n 1 "$TMP/pod.log" | grep -qx "accept 15001 10.99.1.1 80 10.99.1.2"'
run in_ns pod $PY "$TMP/cli.py" fd99:1::1 80
check "outbound IPv6 TCP lands on 15001" '[ "$OUT" = "hello from 15001" ]'
check "SO_ORIGINAL_DST gives the original IPv6 destination" \
	'tail -n 1 "$TMP/pod.log" | grep -qx "accept 15001 fd99:1::1 80 fd99:1::2"'
run in_ns pod $PY "$TMP/cli.py" 10.99.1.1 80 0x539
check "a socket with SO_MARK 0x539 is not redirected" '[ "$OUT" = "hello from 80" ]'
run in_ns pod $PY "$TMP/cli.py" 127.0.0.1 8080
check "connections to 127.0.0.1 are not redirected" '[ "$OUT" = "hello from 8080" ]'

run in_ns peer $PY "$TMP/cli.py" 10.99.1.2 8080
check "inbound IPv4 TCP lands on 15006 with its destination" \
	'[ "$OUT" = "hello from 15006" ] && tail -n 1 "$TMP/pod.log" | grep -qx "accept 15006 10.99.1.2 8080 10.99.1.1"'
run in_ns peer $PY "$TMP/cli.py" fd99:1::2 8080
check "inbound IPv6 TCP lands on 15006 with its destination" \
	'[ "$OUT" = "hello from 15006" ] && tail -n 1 "$TMP/pod.log" | grep -qx "accept 15006 fd99:1::2 8080 fd99:1::1"'
run in_ns peer $PY "$TMP/cli.py" 10.99.1.2 15008
check "inbound HBONE port 15008 is left alone" '[ "$OUT" = "hello from 15008" ]'

run in_ns pod $PY "$TMP/tp.py" 10.99.1.1 10.99.1.2
check "transparent IPv4 delivery: the app sees the client, replies return" \
	'[ "$OUT" = "app saw 10.99.1.1, proxy got reply" ]'
run in_ns pod $PY "$TMP/tp.py" fd99:1::1 fd99:1::2
check "transparent IPv6 delivery: the app sees the client, replies return" \
	'[ "$OUT" = "app saw fd99:1::1, proxy got reply" ]'
# Negative control: without the policy route the replies leave for the client and are lost.
in_ns pod ip rule del fwmark 0x111 lookup 100
run in_ns pod $PY "$TMP/tp.py" 10.99.1.1 10.99.1.2
check "without fwmark 0x111 lookup 100 the same delivery fails" '[ "$OUT" != "app saw 10.99.1.1, proxy got reply" ]'

run $A cni del --workload web
check "cni del removes the rules" '[ "$RC" -eq 0 ] && [ -z "$(in_ns pod nft list ruleset)" ]'
run in_ns pod $PY "$TMP/cli.py" 10.99.1.1 80
check "after del the pod reaches the peer directly again" '[ "$OUT" = "hello from 80" ]'

tap_done
