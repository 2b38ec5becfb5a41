#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# amesh cni add/del/list/check against a stand-in ztunnel (tests/tools/handoff-peer): the nftables
# table and policy routing of DESIGN.md section 2 in a fresh namespace, idempotence, removal that
# leaves the namespace as it was, and failures (refused, no answer, not running, bad workload) that
# leave nothing behind. Root only; no traffic.
. "$(dirname "$0")/lib-cni.sh"

plan 50

A="$AMESH -c $CONF"
netns_add pod
POD=/run/netns/$NS_PREFIX-pod

# Renders `nft -j list ruleset` as one line per table, chain and rule ("chain NAME type hook prio
# policy", "rule CHAIN: match ... statement"), without handles, for comparisons by eye and diff.
cat >"$TMP/render.py" <<'EOF'
import json, sys

def val(v):
    if isinstance(v, dict):
        (k, x), = v.items()
        if k in ("payload",):
            return "%s %s" % (x["protocol"], x["field"])
        if k in ("meta", "ct"):
            return "%s %s" % (k, x["key"])
        return json.dumps(v, sort_keys=True)
    return str(v)

def right(left, v):
    if isinstance(v, int) and "mark" in left:
        return hex(v)
    return val(v)

def expr(e):
    (k, x), = e.items()
    if k == "match":
        left = val(x["left"])
        return "%s %s %s" % (left, x["op"], right(left, x["right"]))
    if k == "redirect":
        return "redirect :%s" % x["port"]
    if k == "accept":
        return "accept"
    if k == "mangle":
        key = val(x["key"])
        return "%s set %s" % (key, right(key, x["value"]))
    return json.dumps(e, sort_keys=True)

for item in json.load(sys.stdin)["nftables"]:
    (k, x), = item.items()
    if k == "table":
        print("table %s %s" % (x["family"], x["name"]))
    elif k == "chain":
        print("chain %s %s %s %s %s" % (x["name"], x.get("type"), x.get("hook"), x.get("prio"),
                                        x.get("policy")))
    elif k == "rule":
        print("rule %s: %s" % (x["chain"], " ".join(expr(e) for e in x["expr"])))
EOF
render() {
	in_ns pod nft -j list ruleset | $PY "$TMP/render.py"
}

# What DESIGN.md section 2 asks for, with the default ports.
cat >"$TMP/expected" <<'EOF'
table inet amesh
chain prerouting nat prerouting -100 accept
chain output nat output -100 accept
chain mangle_prerouting filter prerouting -150 accept
chain mangle_output route output -150 accept
rule prerouting: ip daddr != 127.0.0.1 tcp dport != 15008 meta mark != 0x539 redirect :15006
rule prerouting: ip6 daddr != ::1 tcp dport != 15008 meta mark != 0x539 redirect :15006
rule output: meta mark == 0x539 accept
rule output: ct mark == 0x111 accept
rule output: meta oifname == lo ip daddr != 127.0.0.1 accept
rule output: meta oifname == lo ip6 daddr != ::1 accept
rule output: meta l4proto == tcp ip daddr != 127.0.0.1 redirect :15001
rule output: meta l4proto == tcp ip6 daddr != ::1 redirect :15001
rule mangle_prerouting: meta mark == 0x539 ct mark set 0x111
rule mangle_output: ct mark == 0x111 meta mark set ct mark
EOF

in_ns pod nft list ruleset >"$TMP/ruleset.before"
routing pod >"$TMP/routing.before"
check "a new namespace has no rules" '[ ! -s "$TMP/ruleset.before" ]'

start_peer
run $A cni add --netns "$POD" --workload web
check "cni add enrolls the workload" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "enrolled default/web (netns $POD)" ]'
check "the ztunnel got ADD with the namespace" 'grep -qx "ADD web $POD" "$TMP/peer.out"'
check "the ztunnel's record names the namespace" '[ "$(cat "$STATE/web")" = "$POD" ]'

render >"$TMP/rendered"
run diff -u "$TMP/expected" "$TMP/rendered"
check "nft -j: table inet amesh with the chains and rules of DESIGN.md" '[ "$RC" -eq 0 ]'
run in_ns pod nft list table inet amesh
check "nft reads the table back" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "redirect to :15001"'
run in_ns pod ip rule show
check "IPv4 rule fwmark 0x111 lookup 100" \
	'[ "$(echo "$OUT" | grep -c "^32764:.*fwmark 0x111 lookup 100")" -eq 1 ]'
run in_ns pod ip -6 rule show
check "IPv6 rule fwmark 0x111 lookup 100" \
	'[ "$(echo "$OUT" | grep -c "^32764:.*fwmark 0x111 lookup 100")" -eq 1 ]'
run in_ns pod ip route show table 100
check "IPv4 route local 0.0.0.0/0 dev lo table 100" 'echo "$OUT" | grep -q "^local default dev lo"'
run in_ns pod ip -6 route show table 100
check "IPv6 route local ::/0 dev lo table 100" 'echo "$OUT" | grep -q "^local default dev lo"'

# Installing twice changes nothing (handles aside: the table is replaced).
in_ns pod nft -j list ruleset | sed 's/"handle": [0-9]*//g' >"$TMP/json.1"
routing pod >"$TMP/routing.1"
run $A cni add --netns "$POD" --workload web
check "cni add again succeeds" '[ "$RC" -eq 0 ]'
in_ns pod nft -j list ruleset | sed 's/"handle": [0-9]*//g' >"$TMP/json.2"
routing pod >"$TMP/routing.2"
run cmp "$TMP/json.1" "$TMP/json.2"
check "installing twice leaves the same ruleset" '[ "$RC" -eq 0 ]'
run cmp "$TMP/routing.1" "$TMP/routing.2"
check "installing twice leaves the same routing" '[ "$RC" -eq 0 ]'

run $A cni list
check "cni list shows the workload, its namespace and its state" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "web $POD serving" ]'
run $A cni check
check "cni check passes" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -qx "ok web $POD"'

# check notices a rule taken away and a routing rule deleted, and names them.
h=$(in_ns pod nft -a list chain inet amesh output | sed -n 's/.*ct mark 0x00000111 accept # handle //p')
in_ns pod nft delete rule inet amesh output handle "$h"
in_ns pod ip -6 rule del fwmark 0x111 lookup 100
run $A cni check
check "cni check reports a changed chain" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "workload web: $POD: table inet amesh: chain output has 5 rules, expected 6"'
check "cni check reports missing routing" \
	'echo "$ERR" | grep -q "IPv6 rule fwmark 0x111 lookup 100 is missing"'
run $A cni add --netns "$POD" --workload web
run $A cni check
check "cni add repairs it" '[ "$RC" -eq 0 ]'

# dns_capture = on: the output chain sends UDP and TCP port 53 to the DNS proxy's port (15053),
# before the loopback exemption, so a local stub resolver (127.0.0.53) is captured too.
write_conf "$TMP/dns.conf" fail on
run "$AMESH" -c "$TMP/dns.conf" cni add --netns "$POD" --workload web
run in_ns pod nft list chain inet amesh output
check "dns_capture = on: UDP and TCP port 53 are redirected to 15053" \
	'echo "$OUT" | grep -Eq "udp dport 53 .*redirect to :15053" && echo "$OUT" | grep -Eq "tcp dport 53 .*redirect to :15053"'
check "the DNS redirects come before the loopback exemption" \
	'[ "$(echo "$OUT" | grep -n "dport 53" | head -n 1 | cut -d: -f1)" -lt "$(echo "$OUT" | grep -n "oifname \"lo\"" | head -n 1 | cut -d: -f1)" ]'
run $A cni add --netns "$POD" --workload web
run in_ns pod nft list chain inet amesh output
check "and dns_capture = off takes them away again" '! echo "$OUT" | grep -q "dport 53"'

run $A cni del --workload web
check "cni del unenrolls" '[ "$RC" -eq 0 ] && [ "$OUT" = "removed web" ]'
check "the ztunnel got DEL" 'grep -qx "DEL web" "$TMP/peer.out"'
run in_ns pod nft list ruleset
check "after del the ruleset is empty" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'
routing pod >"$TMP/routing.after"
run diff -u "$TMP/routing.before" "$TMP/routing.after"
check "after del ip rule and table 100 are as before" '[ "$RC" -eq 0 ]'
check "the record is gone" '[ ! -e "$STATE/web" ]'
run $A cni del --workload web
check "del of a workload not enrolled succeeds" '[ "$RC" -eq 0 ] && [ "$OUT" = "web: not enrolled" ]'
run $A cni list
check "cni list is empty" '[ "$RC" -eq 0 ] && [ -z "$OUT" ]'

# nothing_left: the namespace has neither rules nor routing left.
nothing_left() {
	[ -z "$(in_ns pod nft list ruleset)" ] && routing pod | cmp -s - "$TMP/routing.before"
}

start_peer --add err
run $A cni add --netns "$POD" --workload web
check "a refusing ztunnel fails the add with its message" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "refused workload default/web: refused by handoff-peer"'
check "a refused add leaves nothing behind" 'nothing_left'

start_peer --add silent
run env AMESH_HANDOFF_TIMEOUT_MS=500 $A cni add --netns "$POD" --workload web
check "a ztunnel that does not answer fails the add" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "did not answer within 500 ms"'
check "an unanswered add leaves nothing behind" 'nothing_left'

stop_peer
run $A cni add --netns "$POD" --workload web
check "no ztunnel: add fails and says so" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "ztunnel not reachable at $SOCK"'
check "no ztunnel: nothing installed" 'nothing_left'

start_peer
run $A cni add --netns "$POD" --workload nope
check "unknown workload is refused by name" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -qx "amesh cni add: workload nope is not in the registry $TMP/registry.d"'
run $A cni add --netns "$POD" --workload far
check "a workload of another node is refused" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "workload default/far runs on node node-b, not on this node (node-a)"'
run $A cni add --netns "$POD" --workload plain
check "a protocol tcp workload is refused" '[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "has protocol tcp"'
: >"$TMP/not-a-netns"
run $A cni add --netns "$TMP/not-a-netns" --workload web
check "a file that is not a namespace is named" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "netns $TMP/not-a-netns: cannot enter the namespace: not a network namespace"'
check "refused workloads leave nothing behind" 'nothing_left && ! grep -q "^ADD" "$TMP/peer.out"'

# With the ztunnel down, del and list work from the records.
run $A cni add --netns "$POD" --workload web
stop_peer
run $A cni list
check "cni list falls back to the records" \
	'[ "$RC" -eq 0 ] && [ "$OUT" = "web $POD recorded" ] && echo "$ERR" | grep -q "showing the records in $STATE"'
run $A cni check
check "cni check with the ztunnel down fails and says why" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "ztunnel not reachable" && echo "$OUT" | grep -qx "ok web $POD"'
run $A cni del --workload web
check "cni del with the ztunnel down removes rules and record" \
	'[ "$RC" -eq 0 ] && nothing_left && [ ! -e "$STATE/web" ]'

# A workload whose namespace still exists is not taken from it by an add elsewhere (a mistaken
# --netns): refused, nothing changed. Once its namespace is gone, an add moves it.
netns_add pod2
start_peer
run $A cni add --netns "$POD" --workload web
render >"$TMP/rendered.pod"
run $A cni add --netns "/run/netns/$NS_PREFIX-pod2" --workload web
check "adding in another namespace while the first exists is refused, nothing changed" \
	'[ "$RC" -eq 1 ] && echo "$ERR" | grep -q "workload default/web is enrolled in netns $POD (serving), which still exists: amesh cni del --workload web first" &&
	 [ "$($A cni list)" = "web $POD serving" ] && [ -z "$(in_ns pod2 nft list ruleset)" ] &&
	 render | cmp -s - "$TMP/rendered.pod" && [ "$(grep -c "^ADD web" "$TMP/peer.out")" -eq 1 ]'
ip netns del "$NS_PREFIX-pod"
run $A cni add --netns "/run/netns/$NS_PREFIX-pod2" --workload web
check "once its namespace is gone, an add moves the workload" \
	'[ "$RC" -eq 0 ] && [ "$($A cni list)" = "web /run/netns/$NS_PREFIX-pod2 serving" ] &&
	 in_ns pod2 nft list table inet amesh | grep -q "comment \"ztunnel web\""'
run $A cni del --workload web
check "del of the moved workload empties its namespace" \
	'[ "$RC" -eq 0 ] && [ -z "$(in_ns pod2 nft list ruleset)" ]'

# A namespace with IPv6 disabled gets the IPv4 routing only, and check expects no more.
netns_add nov6
in_ns nov6 sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.lo.disable_ipv6=1
routing nov6 >"$TMP/routing.nov6"
start_peer
run $A cni add --netns "/run/netns/$NS_PREFIX-nov6" --workload web
check "IPv6 disabled: add succeeds with IPv4 routing only" \
	'[ "$RC" -eq 0 ] && in_ns nov6 ip rule show | grep -q "fwmark 0x111 lookup 100" &&
	 ! in_ns nov6 ip -6 rule show | grep -q "fwmark 0x111"'
run $A cni check
check "IPv6 disabled: check passes" '[ "$RC" -eq 0 ]'
run $A cni del --workload web
check "IPv6 disabled: del leaves the namespace as it was" \
	'[ "$RC" -eq 0 ] && [ -z "$(in_ns nov6 nft list ruleset)" ] && routing nov6 | cmp -s - "$TMP/routing.nov6"'

run $A cni add --workload web
check "add without --netns is a usage error" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "netns is required"'
run $A cni del
check "del without --workload is a usage error" '[ "$RC" -eq 2 ] && echo "$ERR" | grep -q "workload is required"'

tap_done
