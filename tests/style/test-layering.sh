#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The layering of src/ (CONVENTIONS.md, "Layout shows the architecture"), checked two ways.
#
# 1. Includes. Each directory of src/ is a layer; a file may include the headers of its own
#    directory and of the layers below it, never of a layer above or beside it:
#
#      0  core                     log, errors, buffers, parsing: needs nothing of ours
#      1  config tls telemetry     amesh.conf and the registry; mbedTLS; metrics and admin HTTP
#      2  net policy ca dns etcd   namespaces, hand-off and records, listeners; authorization;
#                                  the CA service, its client and the roles' identity agent;
#                                  the DNS proxy (sockets in namespaces come from its caller);
#                                  the registry on etcd: its client, push, cache and watch
#      3  nft hbone                interception rules; HTTP/2 CONNECT over TLS, the relay
#      4  l7                       the L7 engine over HBONE
#      5  proxy                    the ztunnel and sidecar core, over HBONE and L7
#      6  cni                      enrollment: rules and the hand-off to a ztunnel
#      7  cmd                      one file per subcommand: wiring only
#      8  main.c                   the command table
#
# 2. No two .c files need each other: A needs B when A uses a symbol B defines (read from the
#    objects in libamesh.a with nm). A callback handed down is not a need, so a module still calls
#    up through a function pointer it was given; it never names the function above it.
. "$(dirname "$0")/../lib.sh"

plan 2

rank() {
	case $1 in
	core) echo 0 ;;
	config | tls | telemetry) echo 1 ;;
	net | policy | ca | dns | etcd) echo 2 ;;
	nft | hbone) echo 3 ;;
	l7) echo 4 ;;
	proxy) echo 5 ;;
	cni) echo 6 ;;
	cmd) echo 7 ;;
	*) echo 99 ;;
	esac
}

bad=""
for f in "$SRCDIR"/src/*/*.c "$SRCDIR"/src/*/*.h; do
	dir=$(basename "$(dirname "$f")")
	mine=$(rank "$dir")
	for inc in $(sed -n 's/^#include "\([a-z0-9_]*\)\/[^"]*".*/\1/p' "$f" | sort -u); do
		[ "$inc" = "$dir" ] && continue
		theirs=$(rank "$inc")
		if [ "$theirs" -ge "$mine" ]; then
			bad="$bad
src/$dir/$(basename "$f") includes $inc/ (layer $theirs, not below $dir's $mine)"
		fi
	done
done
if [ -z "$bad" ]; then
	ok "every file includes only its own layer's headers and those below"
else
	fail "includes that go up or sideways:" "$bad"
fi

LIB=$BUILDDIR/libamesh.a
if [ ! -f "$LIB" ]; then
	fail "no $LIB: build first"
	tap_done
	exit
fi
# "object defined-or-undefined symbol" lines; then every pair of objects that need each other.
# The objects of the library's sources, by path: two sources of one name in two directories
# (cmd/ca.c, tls/ca.c) are two objects. An object whose source is gone is left out.
objs=""
for c in "$SRCDIR"/src/*/*.c; do
	d=$(basename "$(dirname "$c")")
	o="$BUILDDIR/src/$d/libamesh_a-$(basename "$c" .c).o"
	[ -f "$o" ] && objs="$objs $o"
done
# shellcheck disable=SC2086
nm -A $objs 2>/dev/null | awk '
	{ split($1, p, ":"); obj = p[1]; sub(/.*\/src\//, "", obj); sub(/libamesh_a-/, "", obj) }
	$(NF - 1) ~ /^[TDRB]$/ { def[$NF] = obj }
	$(NF - 1) == "U" { use[obj, $NF] = 1 }
	END {
		for (k in use) {
			split(k, q, SUBSEP)
			if (q[2] in def && def[q[2]] != q[1])
				need[q[1], def[q[2]]] = q[2]
		}
		for (k in need) {
			split(k, q, SUBSEP)
			if (q[1] < q[2] && (q[2], q[1]) in need)
				printf "%s and %s need each other (%s, %s)\n", q[1], q[2], need[q[1], q[2]],
				    need[q[2], q[1]]
		}
	}' >"$TMP/cycles"
if [ ! -s "$TMP/cycles" ]; then
	ok "no two objects of libamesh.a need each other"
else
	fail "objects that need each other:" "$(sort "$TMP/cycles")"
fi
tap_done
