# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash disable=SC2034
# The options bench/l7/run.sh and bench/sidecar/run.sh share (each one's usage is in its header),
# sourced with the script's arguments after SRC, NAME and OUTFILE are set:
#   -B BUILDDIR  -o FILE|-  -r RATE  -c CONNS  -R ROUNDS  -d SECS  -w SECS  -t SECS
# Sets BUILD, AMESH and SRC_LOADGEN (checked to be built) and the run's parameters.
BUILD=${BUILDDIR:-$SRC}
RATE=1000 CONNS=4 ROUNDS=5 DUR=4 WARM=1 WDUR=5
OPTIND=1
while getopts "B:o:r:c:R:d:w:t:h" opt; do
	case $opt in
	B) BUILD=$OPTARG ;;
	o) OUTFILE=$OPTARG ;;
	r) RATE=$OPTARG ;;
	c) CONNS=$OPTARG ;;
	R) ROUNDS=$OPTARG ;;
	d) DUR=$OPTARG ;;
	w) WARM=$OPTARG ;;
	t) WDUR=$OPTARG ;;
	*) sed -n '/^# usage:/,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
BUILD=$(cd "$BUILD" && pwd) || exit 2
AMESH=$BUILD/amesh
SRC_LOADGEN=$BUILD/bench/loadgen
for f in "$AMESH" "$SRC_LOADGEN"; do
	[ -x "$f" ] || { echo "$NAME: $f is not built (make amesh bench/loadgen)" >&2; exit 1; }
done
