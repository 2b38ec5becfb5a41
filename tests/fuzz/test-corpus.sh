#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Replays the committed fuzz corpora through the fuzz targets: every seed and every saved crash
# reproducer must load or be rejected cleanly (no crash, abort, leak, sanitizer report or exit).
# Works with both builds: the replayer (tests/fuzz/replay.c) and the libFuzzer binaries take files
# as arguments. One TAP line per corpus directory.

: "${SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${BUILDDIR:=$SRCDIR}"

# Seconds one input may take before it counts as a hang (when timeout(1) is available).
: "${CORPUS_TIMEOUT:=60}"
: "${UBSAN_OPTIONS:=print_stacktrace=1}"
export UBSAN_OPTIONS
# Memory one input may use (MiB): an input that blows up (say a regex that regcomp() expands into
# millions of nodes) must fail here, not take the machine. ASan builds get a hard RSS limit; other
# builds a virtual memory limit (not for ASan, which reserves terabytes of address space).
: "${CORPUS_MEM_MB:=1024}"
case ${ASAN_OPTIONS-} in
*hard_rss_limit_mb*) ;;
*) ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}hard_rss_limit_mb=$CORPUS_MEM_MB" ;;
esac
export ASAN_OPTIONS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/amesh-corpus.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT INT TERM

n=0
failed=0

if command -v timeout >/dev/null 2>&1; then
	with_timeout() { timeout "$CORPUS_TIMEOUT" "$@"; }
else
	with_timeout() { "$@"; }
fi

# check_corpus NAME: runs $BUILDDIR/tests/fuzz/fuzz-NAME over $SRCDIR/tests/fuzz/corpus/NAME/*.
check_corpus() {
	name=$1
	bin=$BUILDDIR/tests/fuzz/fuzz-$name
	dir=$SRCDIR/tests/fuzz/corpus/$name
	n=$((n + 1))
	: >"$TMP/report"

	if [ ! -x "$bin" ]; then
		failed=$((failed + 1))
		echo "not ok $n - $name corpus (no fuzz target)"
		echo "# $bin is missing or not executable (run make check, or make $bin)"
		return
	fi
	if [ ! -d "$dir" ]; then
		failed=$((failed + 1))
		echo "not ok $n - $name corpus (no corpus directory)"
		echo "# $dir does not exist"
		return
	fi

	if grep -q __asan_init "$bin"; then
		vlimit=unlimited
	else
		vlimit=$((CORPUS_MEM_MB * 2 * 1024))
	fi

	inputs=0
	bad=0
	for f in "$dir"/*; do
		[ -f "$f" ] || continue
		inputs=$((inputs + 1))
		# One process per input, so one bad input cannot hide the next and each is named.
		# ulimit -v is not POSIX but dash, bash and busybox sh have it; elsewhere no limit.
		# shellcheck disable=SC3045
		if (ulimit -v "$vlimit" 2>/dev/null; with_timeout "$bin" "$f") >"$TMP/out" 2>&1; then
			continue
		else
			rc=$?
		fi
		bad=$((bad + 1))
		{
			if [ "$rc" -eq 124 ]; then
				echo "${f#"$SRCDIR"/}: timed out after ${CORPUS_TIMEOUT}s"
			else
				echo "${f#"$SRCDIR"/}: exit $rc"
			fi
			# The sanitizer's verdict and the top of its stack, else the end of the output.
			if grep -Eq 'ERROR: |runtime error:|SUMMARY: |fatal|deadly signal|rss limit' "$TMP/out"; then
				grep -E 'ERROR: |runtime error:|SUMMARY: |fatal|deadly signal|rss limit|^    #[0-4] ' \
				    "$TMP/out" | head -n 12 | sed 's/^/  /'
			else
				tail -n 5 "$TMP/out" | sed 's/^/  /'
			fi
		} >>"$TMP/report"
	done

	if [ "$inputs" -eq 0 ]; then
		failed=$((failed + 1))
		echo "not ok $n - $name corpus (0 inputs)"
		echo "# $dir holds no inputs"
	elif [ "$bad" -eq 0 ]; then
		echo "ok $n - $name corpus ($inputs inputs)"
	else
		failed=$((failed + 1))
		echo "not ok $n - $name corpus ($inputs inputs, $bad failed)"
		sed 's/^/# /' "$TMP/report"
	fi
}

echo "1..13"
check_corpus conf
check_corpus registry
check_corpus csr
check_corpus careq
check_corpus dns
check_corpus record
check_corpus h1
check_corpus hbone
check_corpus handoff
check_corpus admin
check_corpus route
check_corpus cni
check_corpus l7h2
[ "$failed" -eq 0 ]
