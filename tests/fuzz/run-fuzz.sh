#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs libFuzzer targets one at a time, as tests/fuzz/RESULTS.md was measured: each under nice,
# from a copy of its committed corpus (tests/fuzz/corpus/NAME, which stays as it is) with its
# dictionary when it has one, until 10 million executions or SECONDS, whichever comes first.
# Prints one markdown row per target from libFuzzer's final stats; a crash, leak or timeout
# leaves its reproducer in WORK/NAME/ and is named in the row.
#
# usage: run-fuzz.sh -B FUZZBUILD [-t SECONDS] [-w WORK] NAME...
#   FUZZBUILD: a tree configured with CC=clang --enable-fuzzing --enable-asan --enable-ubsan
#   -t  seconds per target (default 1800)   -w  work directory (default a new one under /tmp)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD='' SECS=1800 WORK=''
while getopts "B:t:w:h" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	t) SECS=$OPTARG ;;
	w) WORK=$OPTARG ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
if [ -z "$BUILD" ] || [ $# -eq 0 ]; then
	sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
fi
[ -n "$WORK" ] || WORK=$(mktemp -d /tmp/amesh-fuzz.XXXXXX) || exit 1
echo "| target | executions | exec/s | seconds | cov | ft | corpus | findings |"
echo "|---|---|---|---|---|---|---|---|"
for t in "$@"; do
	bin=$BUILD/tests/fuzz/fuzz-$t
	[ -x "$bin" ] || { echo "| $t | not built ($bin) | | | | | | |"; continue; }
	mkdir -p "$WORK/$t/corpus"
	cp "$SRC/tests/fuzz/corpus/$t"/* "$WORK/$t/corpus/" 2>/dev/null
	dict=()
	[ -f "$SRC/tests/fuzz/$t.dict" ] && dict=(-dict="$SRC/tests/fuzz/$t.dict")
	start=$(date +%s)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		nice -n 10 "$bin" "${dict[@]}" -runs=10000000 -max_total_time="$SECS" -print_final_stats=1 \
		-rss_limit_mb=2048 -timeout=10 -artifact_prefix="$WORK/$t/" "$WORK/$t/corpus" \
		>"$WORK/$t/log" 2>&1
	rc=$?
	wall=$(($(date +%s) - start))
	last=$(grep -E '^#[0-9]+' "$WORK/$t/log" | tail -n 1)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t/log")
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$t/log")
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(echo "$last" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
	found=none
	if [ "$rc" -ne 0 ]; then
		found="exit $rc:"
		for f in "$WORK/$t"/crash-* "$WORK/$t"/leak-* "$WORK/$t"/timeout-* "$WORK/$t"/oom-*; do
			[ -e "$f" ] && found="$found ${f##*/}"
		done
	fi
	echo "| $t | ${execs:-?} | ${eps:-?} | $wall | ${cov:-?} | ${ft:-?} | ${corp:-?} | $found |"
done
