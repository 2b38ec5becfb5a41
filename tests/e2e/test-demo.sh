#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# TAP: the quick-start demo (`make demo`, tests/e2e/demo.sh) runs to the end, prints every
# evidence section, exits 0 and leaves no namespace behind.
. "$(dirname "$0")/../lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (network namespaces, nftables)"
	exit 0
fi
for t in tcpdump timeout; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (apt-get install tcpdump coreutils)"
		exit 0
	fi
done
plan 1

# What make demo runs (lib.sh exports AMESH and SRCDIR); the demo bounds its own waits, the
# timeout only guards against a bug in it (SIGTERM: the demo cleans up).
t0=$(date +%s)
OUT=$(DEMO_DIR_BASE="$TMP" timeout -k 30 170 sh "$SRCDIR/tests/e2e/demo.sh" 2>"$TMP/demo.err") &&
	RC=0 || RC=$?
ERR=$(cat "$TMP/demo.err")
secs=$(($(date +%s) - t0))

missing=""
for s in "Lab: two hosts, four workloads" "Identities:" "ztunnels:" "Enrollment: amesh cni add" \
	"Traffic across hosts by workload address" "Traffic by service VIP" \
	"Source address seen by the server" "The wire between the hosts" "Metrics on :15020" \
	"L4 policy:" "Admin: GET 127.0.0.1:15000/config_dump" "Stop: SIGTERM drains" "Done in"; do
	printf '%s\n' "$OUT" | grep -q "^==> $s" || missing="$missing [$s]"
done
for e in "enrolled default/client-a" "enrolled other/other-b" "answered by echo-a" \
	"answered by echo-b" "has peer 10.1.1.2" "any other TCP: 0" \
	"the marker in the capture: not found" "istio_tcp_connections_opened_total" \
	'response_flags="DENY"' "^enrolled client-a"; do
	printf '%s\n' "$OUT" | grep -q -- "$e" || missing="$missing {$e}"
done
prefix=$(printf '%s\n' "$OUT" | sed -n 's/^  host A: netns \(aml[0-9a-f]*\)-ha,.*/\1/p')
left=""
[ -n "$prefix" ] && left=$(ip netns list 2>/dev/null | grep "^$prefix-")
check "make demo: exit 0 in ${secs} s, every evidence section, lab removed${missing:+ (missing:$missing)}" \
	'[ "$RC" -eq 0 ] && [ -z "$missing" ] && [ -n "$prefix" ] && [ -z "$left" ] &&
	 [ -z "$(ls -d "$TMP"/amesh-demo.* 2>/dev/null)" ]'
tap_done
