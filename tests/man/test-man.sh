#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# TAP: every man page is clean under `mandoc -Tlint -W warning`, and every amesh.conf and
# registry key of the keyword tables in src/config is documented in its page.
# SRCDIR is the source tree (set by make check); default: two levels above this script.

if [ -z "${SRCDIR:-}" ]; then
	SRCDIR=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
fi

if ! command -v mandoc >/dev/null 2>&1; then
	echo "1..0 # SKIP mandoc not installed"
	exit 0
fi

npages=0
for page in "$SRCDIR"/man/*.[58]; do
	[ -f "$page" ] && npages=$((npages + 1))
done

echo "1..$((npages + 1))"

n=0
failed=0

ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}

not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
}

# Prints its standard input as TAP comments.
comment() {
	sed 's/^/# /'
}

for page in "$SRCDIR"/man/*.[58]; do
	[ -f "$page" ] || continue
	name=${page##*/}
	out=$(mandoc -Tlint -W warning "$page" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && [ -z "$out" ]; then
		ok "lint $name"
	else
		not_ok "lint $name"
		printf '%s\n' "$out" | comment
		echo "# mandoc exit status $rc"
	fi
done

# The key of each keyword-table row. amesh.conf rows are { "section", "key", ... } or, in
# the PROXY_KEYS macro, { sec, "key", ... }. Registry rows are [IDX] = K("kind", "key", ...),
# KE(...), { "kind", "key", ... } or the shorthands PK/RK/RU/SU/SD(IDX, "key", ...).
conf_keys() {
	sed -n \
	    -e 's/^[[:space:]]*{ *"[a-z_]*", *"\([a-z_.]*\)".*/\1/p' \
	    -e 's/^[[:space:]]*{ *sec, *"\([a-z_.]*\)".*/\1/p' \
	    "$SRCDIR/src/config/conf.c" | sort -u
}

registry_keys() {
	sed -n \
	    -e 's/^[[:space:]]*\[[A-Z0-9_]*\] *= *[A-Z]*[({] *"[a-z_]*", *"\([a-z0-9_.]*\)".*/\1/p' \
	    -e 's/^[[:space:]]*[A-Z][A-Z]*([A-Z0-9_]*, *"\([a-z0-9_.]*\)".*/\1/p' \
	    "$SRCDIR/src/config/regkw.c" | sort -u
}

# Prints the keys (from standard input) that page does not document as "Cm KEY".
undocumented() {
	while read -r key; do
		re=$(printf '%s' "$key" | sed 's/\./\\./g')
		grep -Eq "Cm $re( |\$)" "$1" || echo "$key"
	done
}

ckeys=$(conf_keys)
rkeys=$(registry_keys)
nc=$(printf '%s\n' "$ckeys" | grep -c .)
nr=$(printf '%s\n' "$rkeys" | grep -c .)
missing=
# Far fewer keys than the tables hold means the extraction broke, not that all is documented.
if [ "$nc" -lt 20 ] || [ "$nr" -lt 50 ]; then
	missing="# found only $nc amesh.conf keys and $nr registry keys in src/config"
fi
m=$(printf '%s\n' "$ckeys" | undocumented "$SRCDIR/man/amesh.conf.5")
[ -n "$m" ] && missing="$missing
$(printf '%s\n' "$m" | sed 's/^/# amesh.conf.5 lacks key: /')"
m=$(printf '%s\n' "$rkeys" | undocumented "$SRCDIR/man/amesh-registry.5")
[ -n "$m" ] && missing="$missing
$(printf '%s\n' "$m" | sed 's/^/# amesh-registry.5 lacks key: /')"
if [ -z "$missing" ]; then
	ok "keys documented ($nc amesh.conf, $nr registry)"
else
	not_ok "keys documented ($nc amesh.conf, $nr registry)"
	printf '%s\n' "$missing" | sed '/^$/d'
fi

[ "$failed" -eq 0 ]
