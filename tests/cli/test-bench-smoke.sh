#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Keeps the benchmarks honest: their generated inputs must still load (no timing is asserted).
. "$(dirname "$0")/../lib.sh"
plan 1
run "$BUILDDIR/bench/registry-load" -w 400 -s 40 -p 40 -n 1
check "bench/registry-load: the generated registry loads and every lookup is right" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "all correct" && ! echo "$ERR" | grep -q "failed"'
tap_done
