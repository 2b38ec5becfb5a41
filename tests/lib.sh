# SPDX-License-Identifier: Apache-2.0
# TAP helpers for the shell tests: source it, call plan N, then ok/fail per case.
# Sets SRCDIR, BUILDDIR and AMESH from the environment make check provides, or from the tree.

: "${SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${BUILDDIR:=$SRCDIR}"
: "${AMESH:=$BUILDDIR/amesh}"
export SRCDIR BUILDDIR AMESH

tap_n=0
tap_failed=0

plan() { echo "1..$1"; }

ok() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $1"
}

# todo TEXT: a known problem's check that failed: "not ok N - TEXT", TEXT ending in "# TODO why"
# (XFAIL). Reported, and not counted against the run's exit status as fail is.
todo() {
	tap_n=$((tap_n + 1))
	echo "not ok $tap_n - $1"
}

fail() {
	tap_n=$((tap_n + 1))
	tap_failed=$((tap_failed + 1))
	echo "not ok $tap_n - $1"
	shift
	for line in "$@"; do
		printf '%s\n' "$line" | sed 's/^/# /'
	done
}

# run CMD...: runs a command, keeping its stdout in $OUT, stderr in $ERR and status in $RC.
run() {
	OUT=$("$@" 2>"$TMP/stderr") && RC=0 || RC=$?
	ERR=$(cat "$TMP/stderr")
}

# check NAME COND: passes when the shell condition holds; on failure shows the last run.
check() {
	name=$1
	shift
	if eval "$@"; then
		ok "$name"
	else
		fail "$name" "condition: $*" "exit: $RC" "stdout: $OUT" "stderr: $ERR"
	fi
}

tap_done() {
	[ "$tap_failed" -eq 0 ]
}

# start NAME CMD...: runs CMD in the background (output in $TMP/NAME.out), waits up to 10 s for
# its "listening PORT" line and sets $PORT; the process is killed when the test exits.
PIDS=""
start() {
	name=$1
	shift
	: >"$TMP/$name.out"
	"$@" >>"$TMP/$name.out" 2>"$TMP/$name.err" &
	pid=$!
	PIDS="$PIDS $pid"
	eval "PID_$name=$pid"
	i=0
	while [ $i -lt 100 ]; do
		PORT=$(sed -n 's/^listening \([0-9]*\)$/\1/p' "$TMP/$name.out" | head -n 1)
		[ -n "$PORT" ] && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	echo "# $name did not start: $(cat "$TMP/$name.err")"
	return 1
}

# spawn NAME CMD...: like start, for a process that prints no "listening" line.
spawn() {
	name=$1
	shift
	: >"$TMP/$name.out"
	"$@" >>"$TMP/$name.out" 2>"$TMP/$name.err" &
	pid=$!
	PIDS="$PIDS $pid"
	eval "PID_$name=$pid"
}

# mine PID: true while PID is still a child of this shell (a reaped pid may belong to anyone now).
mine() {
	[ "$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')" = "$$" ]
}

cleanup() {
	for p in $PIDS; do
		mine "$p" && kill "$p" 2>/dev/null
	done
	for p in $PIDS; do
		wait "$p" 2>/dev/null
	done
	if [ -n "${KEEP_TMP:-}" ]; then
		echo "# kept $TMP"
	else
		rm -rf "$TMP"
	fi
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/amesh-test.XXXXXX")
trap cleanup EXIT
trap 'exit 1' INT TERM
