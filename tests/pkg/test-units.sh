#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The systemd units this build installs: systemd-analyze verify, what issue 7 and amesh(8)
# promise of each (notify, watchdog, restart, reload, capabilities, sandbox), and the exposure
# score of systemd-analyze security, so a loosened unit fails here. (That the roles work with
# exactly these capabilities is checked where they carry traffic: tests/e2e run them under
# lab_unit_privs.)
. "$(dirname "$0")/../lib.sh"

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze is not installed (apt-get install systemd)"
	exit 0
fi
trap cleanup EXIT
plan 14

U=$BUILDDIR/packaging/systemd
# verify needs ExecStart's binary and Documentation's man pages to exist: point both at the tree.
mkdir -p "$TMP/units" "$TMP/man/man5" "$TMP/man/man8"
cp "$SRCDIR"/man/*.5 "$TMP/man/man5/" && cp "$SRCDIR"/man/*.8 "$TMP/man/man8/"
for f in amesh-ztunnel.service amesh-waypoint@.service amesh-sidecar@.service amesh-ca.service; do
	sed "s|^ExecStart=[^ ]*/amesh |ExecStart=$AMESH |" "$U/$f" >"$TMP/units/$f"
done
cp "$TMP/units/amesh-waypoint@.service" "$TMP/units/amesh-waypoint@wp1.service"
cp "$TMP/units/amesh-sidecar@.service" "$TMP/units/amesh-sidecar@w1.service"
cd "$TMP/units" || exit 1
run env MANPATH="$TMP/man" systemd-analyze verify ./amesh-ztunnel.service ./amesh-waypoint@wp1.service \
	./amesh-sidecar@w1.service ./amesh-ca.service
check "systemd-analyze verify passes on the four units" '[ "$RC" -eq 0 ] && [ -z "$ERR$OUT" ]'

has() { grep -qx "$2" "$U/$1"; }
check "the built units run this build's binary (${sbin:=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' "$U/amesh-ztunnel.service")})" \
	'[ "$(basename "$sbin")" = amesh ] && grep -q "^ExecStart=$sbin -c \${AMESH_CONFIG} waypoint --name %i$" "$U/amesh-waypoint@.service"'
# amesh(8) SYSTEMD: a drop-in with Environment=AMESH_CONFIG=FILE points any unit at another file.
reads_config() {
	for f in amesh-ztunnel.service amesh-waypoint@.service amesh-sidecar@.service amesh-ca.service; do
		grep -q "^Environment=AMESH_CONFIG=/.*/amesh/amesh.conf$" "$U/$f" &&
			grep -q "^ExecStart=$sbin -c \${AMESH_CONFIG} [a-z]" "$U/$f" || return 1
	done
}
check "every unit runs with -c \${AMESH_CONFIG}, by default the amesh.conf of this build" reads_config
check "ztunnel: Type=notify, WatchdogSec, Restart=on-failure, ExecReload sends SIGHUP (the shell's kill)" \
	'has amesh-ztunnel.service Type=notify && has amesh-ztunnel.service WatchdogSec=30s &&
	 has amesh-ztunnel.service Restart=on-failure &&
	 has amesh-ztunnel.service "ExecReload=/bin/sh -c .kill -HUP \$\$MAINPID."'
check "ztunnel: only CAP_NET_ADMIN and CAP_SYS_ADMIN, NoNewPrivileges, ProtectSystem=strict" \
	'has amesh-ztunnel.service "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN" &&
	 has amesh-ztunnel.service NoNewPrivileges=yes && has amesh-ztunnel.service ProtectSystem=strict'
check "ztunnel: /run/amesh survives restarts (state_dir); /var/lib/amesh (identities from the CA) and nothing else is writable" \
	'has amesh-ztunnel.service RuntimeDirectory=amesh && has amesh-ztunnel.service RuntimeDirectoryPreserve=yes &&
	 has amesh-ztunnel.service StateDirectory=amesh && ! grep -q "^ReadWritePaths" "$U/amesh-ztunnel.service"'
check "waypoint: no capabilities at all (no NET_ADMIN, no SYS_ADMIN)" \
	'has amesh-waypoint@.service CapabilityBoundingSet= && ! grep -q "CAP_" "$U/amesh-waypoint@.service"'
check "sidecar: inside /run/netns/NAME, CAP_NET_ADMIN only" \
	'has amesh-sidecar@.service NetworkNamespacePath=/run/netns/%i &&
	 has amesh-sidecar@.service CapabilityBoundingSet=CAP_NET_ADMIN'
check "ca: no capabilities, writes only its StateDirectory (/var/lib/amesh/ca, 0700), reloads on SIGHUP" \
	'has amesh-ca.service CapabilityBoundingSet= && ! grep -q "CAP_" "$U/amesh-ca.service" &&
	 has amesh-ca.service StateDirectory=amesh/ca && has amesh-ca.service StateDirectoryMode=0700 &&
	 has amesh-ca.service ProtectSystem=strict && has amesh-ca.service Type=notify &&
	 has amesh-ca.service "ExecReload=/bin/sh -c .kill -HUP \$\$MAINPID."'
check "ca: runs amesh ca serve" 'grep -q "^ExecStart=$sbin -c \${AMESH_CONFIG} ca serve$" "$U/amesh-ca.service"'

# Exposure (0 safest, 10 unsandboxed) as systemd-analyze security scores it offline.
exposure() {
	systemd-analyze security --offline=true "./$1" 2>/dev/null |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
for u in amesh-ztunnel.service amesh-waypoint@wp1.service amesh-sidecar@w1.service amesh-ca.service; do
	eval "x_$(echo "$u" | sed 's/[^a-z]//g')=$(exposure "$u")"
done
check "exposure of amesh-ztunnel.service is at most 2.5 (${x_ameshztunnelservice:-none})" \
	'awk "BEGIN { exit !(\"$x_ameshztunnelservice\" != \"\" && $x_ameshztunnelservice <= 2.5) }"'
check "exposure of amesh-waypoint@.service is at most 1.8 (${x_ameshwaypointwpservice:-none})" \
	'awk "BEGIN { exit !(\"$x_ameshwaypointwpservice\" != \"\" && $x_ameshwaypointwpservice <= 1.8) }"'
check "exposure of amesh-sidecar@.service is at most 2.0 (${x_ameshsidecarwservice:-none})" \
	'awk "BEGIN { exit !(\"$x_ameshsidecarwservice\" != \"\" && $x_ameshsidecarwservice <= 2.0) }"'
check "exposure of amesh-ca.service is at most 1.8 (${x_ameshcaservice:-none})" \
	'awk "BEGIN { exit !(\"$x_ameshcaservice\" != \"\" && $x_ameshcaservice <= 1.8) }"'
tap_done
