#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The Debian package as an operator meets it: dpkg-buildpackage from the release tree with
# packaging/debian as debian/, lintian, dpkg -i, the installed binary, units and man pages, an
# upgrade between two binaries that keeps the mesh (the packaged ztunnel replaced by this build's
# on the same state_dir), then dpkg -r and dpkg -P leaving nothing behind.
. "$(dirname "$0")/../lib.sh"
. "$SRCDIR/tests/e2e/lab.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (dpkg -i, network namespaces)"
	exit 0
fi
for t in dpkg-buildpackage dh lintian systemd-analyze man; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (.ci/install-deps installs it)"
		exit 0
	fi
done
if dpkg-query -W -f='${Status}' amesh 2>/dev/null | grep -q "ok installed"; then
	echo "1..0 # SKIP the amesh package is installed on this machine; not replacing it"
	exit 0
fi
installed=""
purge() { [ -n "$installed" ] && dpkg -P amesh >/dev/null 2>&1; installed=""; }
trap 'purge; lab_down; cleanup' EXIT
plan 15

VER=$("$AMESH" --version | sed -n 's/^amesh \([^ ]*\).*/\1/p')
ARCH=$(dpkg --print-architecture)
DEB=$BUILDDIR/deb/amesh_${VER}_$ARCH.deb
# `make deb`, as README says, but not under the make check that runs us: its MAKEFLAGS (TEST_LOGS,
# jobserver) would reach the package build's own make check and run this test inside itself.
# The package build runs the unit and CLI tests itself (debian/rules).
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
OUT=$(make -s -C "$BUILDDIR" deb 2>&1) && RC=0 || RC=$?
OUT=$(echo "$OUT" | tail -n 30)
check "make deb (dpkg-buildpackage -us -uc -b) builds amesh_${VER}_$ARCH.deb" '[ "$RC" -eq 0 ] && [ -f "$DEB" ]'

run lintian "$DEB"
check "lintian: no errors or warnings" '! echo "$OUT" | grep -q "^[EW]:"'

files=$(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\.||')
missing=""
for f in /usr/sbin/amesh /usr/lib/cni/amesh-cni /etc/amesh/amesh.conf /etc/amesh/registry.d/ \
	/lib/systemd/system/amesh-ztunnel.service /lib/systemd/system/amesh-waypoint@.service \
	/lib/systemd/system/amesh-sidecar@.service /lib/systemd/system/amesh-ca.service \
	/usr/lib/tmpfiles.d/amesh.conf \
	/usr/share/bash-completion/completions/amesh /var/lib/amesh/certs/ \
	/usr/share/doc/amesh/examples/registry.d/example.conf; do
	echo "$files" | grep -qxF "$f" || missing="$missing $f"
done
for m in "$SRCDIR"/man/*.[58]; do
	p=$(basename "$m")
	echo "$files" | grep -qxF "/usr/share/man/man${p##*.}/$p.gz" || missing="$missing $p"
done
[ -z "$missing" ] || echo "# missing:$missing"
check "the package holds the binary, CNI link, man pages, config, units, tmpfiles, completion" \
	'[ -z "$missing" ]'
OUT=$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles)
check "/etc/amesh/amesh.conf is a conffile" '[ "$OUT" = "/etc/amesh/amesh.conf" ]'

run dpkg -i "$DEB"
[ "$RC" -eq 0 ] && installed=yes
check "dpkg -i installs it" '[ "$RC" -eq 0 ]'
run /usr/sbin/amesh --version
check "amesh --version from the package ($OUT)" '[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^amesh $VER"'
check "tmpfiles.d made /run/amesh; no unit was enabled" \
	'[ -d /run/amesh ] && ! ls /etc/systemd/system/*.wants/amesh-* >/dev/null 2>&1'
run man -w amesh-ztunnel
check "man finds the installed pages ($OUT)" '[ "$RC" -eq 0 ] && [ "$OUT" = /usr/share/man/man8/amesh-ztunnel.8.gz ]'
run systemd-analyze verify amesh-ztunnel.service amesh-waypoint@wp1.service amesh-sidecar@w1.service \
	amesh-ca.service
check "systemd-analyze verify passes on every installed unit" '[ "$RC" -eq 0 ] && [ -z "$ERR" ]'

# Upgrade between two binaries on the lab: host A's ztunnel is first the packaged one, then this
# build's, on the same state_dir; the workload enrolled with the first needs no new enrollment.
lab_up "$TMP/lab" >/dev/null 2>&1 && lab_certs >/dev/null 2>&1 || { echo "Bail out! lab failed"; exit 1; }
start srv_b1 $(lab_in b1) "$LAB_PY" "$LAB_PEER" serve --port 8080 || exit 1
ready() { # ready HOST: the ztunnel of HOST answers its readiness endpoint
	lab_exec "$1" "$LAB_PY" -c 'import urllib.request,sys
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:15021/healthz/ready",timeout=1).status==200 else 1)' 2>/dev/null
}
wait_ready() {
	i=0
	while [ $i -lt 50 ] && ! ready "$1"; do sleep 0.1; i=$((i + 1)); done
	ready "$1"
}
privs=$(lab_unit_privs amesh-ztunnel.service)
spawn zt_old $(lab_in ha) $privs /usr/sbin/amesh ztunnel -c "$LAB_CONF_A"
spawn zt_b $(lab_in hb) $privs "$AMESH" ztunnel -c "$LAB_CONF_B"
wait_ready ha && wait_ready hb
lab_exec ha /usr/sbin/amesh -c "$LAB_CONF_A" cni add --netns "$(lab_ns_path a1)" --workload client-a >/dev/null &&
	lab_exec hb "$AMESH" -c "$LAB_CONF_B" cni add --netns "$(lab_ns_path b1)" --workload echo-b >/dev/null
conn() { run lab_exec a1 "$LAB_PY" "$LAB_PEER" connect --addr "$LAB_B1" --port 8080 --msg "$1" --timeout 5; }
conn before
check "the packaged ztunnel carries client-a to echo-b" 'echo "$OUT" | grep -q "local $LAB_B1 8080 msg before"'

eval "kill -TERM \$PID_zt_old"
eval "wait \$PID_zt_old" 2>/dev/null
spawn zt_new $(lab_in ha) $privs "$AMESH" ztunnel -c "$LAB_CONF_A"
wait_ready ha
conn after
check "after the switch to this build's ztunnel, new connections work without re-enrollment" \
	'echo "$OUT" | grep -q "local $LAB_B1 8080 msg after"'
run lab_exec ha "$AMESH" -c "$LAB_CONF_A" cni list
check "client-a is still enrolled ($OUT)" 'echo "$OUT" | grep -q "^client-a "'

run dpkg -r amesh
check "dpkg -r removes the binary and keeps the conffile" \
	'[ "$RC" -eq 0 ] && [ ! -e /usr/sbin/amesh ] && [ -f /etc/amesh/amesh.conf ]'
run dpkg -P amesh
installed=""
left=""
for f in $files; do
	case $f in */) continue ;; esac
	[ -e "$f" ] || [ -L "$f" ] && left="$left $f"
done
for d in /etc/amesh /var/lib/amesh; do [ -e $d ] && left="$left $d"; done
[ -z "$left" ] || echo "# left:$left"
check "dpkg -P leaves none of its files, nor /etc/amesh and /var/lib/amesh" \
	'[ "$RC" -eq 0 ] && [ -z "$left" ]'
run dpkg-query -W -f='${Status}' amesh
check "dpkg knows it no more" '! echo "$OUT" | grep -q "installed"'
tap_done
