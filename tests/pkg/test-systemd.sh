#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The package under a real systemd (issue 20): a Debian 12 root made once with debootstrap and
# cached, an overlay of it per run, this build's .deb installed inside, the root booted with
# systemd as PID 1 (systemd-nspawn, its own network namespace), and every role run as its unit,
# driven only through systemctl, journalctl and the amesh CLI inside (nsenter into the
# container's namespaces): Type=notify, the watchdog, the sandbox, reload, drain, restart without
# re-enrollment, a waypoint with its drop-in, a sidecar, and an upgrade with traffic running.
#
# The root: debootstrap --variant=minbase bookworm with systemd, dbus, iproute2, nftables,
# python3 (the test's peers) and what the .deb Depends on, kept in
# ${AMESH_TEST_CACHE:-/var/cache/amesh-test}/bookworm-HASH, HASH naming that package list, so it
# is built again only when the list changes. It is built under a lock into .build-XXXXXX there
# and renamed into place whole. Each run mounts an overlay on it (the cached root is never
# written) and removes it at the end. AMESH_TEST_MIRROR overrides the Debian mirror.
#
# The upgrade: the "previous" package is this build's .deb with its version lowered to
# VERSION~prev1 (dpkg-deb -R, -b), unless AMESH_TEST_PREV_DEB names a real older .deb. The
# maintainer scripts and the hand-over of the running roles to the new binary (SIGUSR2) are what
# an upgrade exercises here: the workload's connections through it must all succeed. (With
# AMESH_TEST_PREV_DEB naming a 0.1.0 .deb, whose binary has no such upgrade, postinst restarts
# the roles instead and that check is expected to fail.)
. "$(dirname "$0")/../lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "1..0 # SKIP needs root (debootstrap, mount, systemd-nspawn)"
	exit 0
fi
for t in debootstrap systemd-nspawn nsenter flock dpkg-deb dpkg-buildpackage; do
	if ! command -v $t >/dev/null 2>&1; then
		echo "1..0 # SKIP $t is not installed (.ci/install-deps installs it)"
		exit 0
	fi
done
if ! grep -qw overlay /proc/filesystems && ! modprobe overlay 2>/dev/null; then
	echo "1..0 # SKIP the kernel has no overlayfs"
	exit 0
fi

CACHE=${AMESH_TEST_CACHE:-/var/cache/amesh-test}
MIRROR=${AMESH_TEST_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
T0=$(date +%s)
NSPAWN=""
LEADER=""
RUN=""
MOUNTED=""
BUILDING=""
diag_done=""

# umount_under DIR: unmounts whatever is mounted at or below DIR, deepest first.
umount_under() {
	awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

# down: powers the container off (TERM, then KILL, if it does not go), unmounts the overlay and
# removes a half-built root. Safe at any point; never leaves a machine running.
down() {
	if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
		[ -n "$LEADER" ] && timeout 10 nsenter -t "$LEADER" -a -- systemctl poweroff --no-block >/dev/null 2>&1
		i=0
		while kill -0 "$NSPAWN" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
		if kill -0 "$NSPAWN" 2>/dev/null; then
			echo "# the container did not power off in 20 s: SIGTERM to systemd-nspawn"
			kill -TERM "$NSPAWN" 2>/dev/null
			i=0
			while kill -0 "$NSPAWN" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		fi
		if kill -0 "$NSPAWN" 2>/dev/null; then
			echo "# systemd-nspawn still there: SIGKILL"
			[ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null
			kill -KILL "$NSPAWN" 2>/dev/null
		fi
	fi
	[ -n "$NSPAWN" ] && wait "$NSPAWN" 2>/dev/null
	NSPAWN=""
	LEADER=""
	if [ -n "$MOUNTED" ]; then
		umount_under "$RUN/root"
		MOUNTED=""
	fi
	[ -n "$RUN" ] && rm -rf --one-file-system "$RUN"
	RUN=""
	if [ -n "$BUILDING" ]; then
		umount_under "$BUILDING"
		rm -rf --one-file-system "$BUILDING"
		BUILDING=""
	fi
}
# On a failure, the end of the container's journal goes to the log before the container does.
diag() {
	if [ "$tap_failed" -gt 0 ] && [ -n "$LEADER" ] && [ -z "$diag_done" ] && kill -0 "$NSPAWN" 2>/dev/null; then
		diag_done=1
		echo "# the container's journal, last 80 lines:"
		timeout 10 nsenter -t "$LEADER" -a -- journalctl -b -o short-monotonic --no-pager 2>&1 |
			tail -n ${AMESH_TEST_JOURNAL_LINES:-80} | sed 's/^/#   /'
	fi
}
trap 'diag; down; cleanup' EXIT
plan 32

# cin CMD...: runs CMD inside the container (all its namespaces, a clean environment).
cin() {
	nsenter -t "$LEADER" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
# cns NETNS CMD...: runs CMD in one of the workload namespaces made inside the container.
cns() {
	ns=$1
	shift
	cin ip netns exec "$ns" "$@"
}
PEER=/opt/amesh-test/lab-peer.py
# conn FROM ADDR PORT [MSG]: lab-peer connect from workload FROM; its answer line in $OUT.
conn() { run cns "$1" python3 $PEER connect --addr "$2" --port "$3" --msg "${4:-hello}" --timeout 3; }
# journal UNIT...: the messages of those units in this boot.
journal() {
	args=""
	for u; do args="$args -u $u"; done
	# shellcheck disable=SC2086
	cin journalctl -b -o cat --no-pager $args
}
prop() { cin systemctl show -P "$2" "$1"; }
# wait_for N CMD...: retries CMD every 0.1 s for up to N seconds; its status.
wait_for() {
	n=$(($1 * 10))
	shift
	i=0
	until "$@"; do
		i=$((i + 1))
		[ $i -ge $n ] && return 1
		sleep 0.1
	done
}
reloads() { journal amesh-ztunnel.service | grep -c "^info: registry /etc/amesh/registry.d: reloaded"; }
more_reloads() { [ "$(reloads)" -gt "$1" ]; }

# 1. This build's package, as test-deb.sh finds it: make deb, unless deb/ holds one newer than
# the binary and the sources (make check runs test-deb.sh, which builds it, before this test).
VER=$("$AMESH" --version | sed -n 's/^amesh \([^ ]*\).*/\1/p')
ARCH=$(dpkg --print-architecture)
DEB=$BUILDDIR/deb/amesh_${VER}_$ARCH.deb
how=reused
if [ ! -f "$DEB" ] || [ -n "$(find "$AMESH" "$SRCDIR/src" "$SRCDIR/packaging" "$SRCDIR/etc" \
	"$SRCDIR/Makefile.am" "$SRCDIR/configure.ac" -newer "$DEB" -print 2>/dev/null | head -n 1)" ]; then
	how=built
	t=$(date +%s)
	unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
	OUT=$(make -s -C "$BUILDDIR" deb 2>&1) && RC=0 || RC=$?
	OUT=$(echo "$OUT" | tail -n 30)
	how="built in $(($(date +%s) - t)) s"
fi
RC=${RC:-0}
check "the package of this build, deb/amesh_${VER}_$ARCH.deb ($how)" '[ "$RC" -eq 0 ] && [ -f "$DEB" ]'
[ -f "$DEB" ] || { echo "Bail out! no package"; exit 1; }

# 2. The root, cached by package list: the base, and every package the .deb depends on (first
# alternative, versions dropped).
PKGS=$({
	echo systemd systemd-sysv dbus iproute2 nftables python3
	dpkg-deb -f "$DEB" Depends | sed 's/([^)]*)//g; s/|[^,]*//g' | tr ',' '\n'
} | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ')
KEY=$(printf '%s minbase %s\n' "$SUITE" "$PKGS" | sha256sum | cut -c1-16)
ROOTFS=$CACHE/$SUITE-$KEY
how=reused
if [ ! -d "$ROOTFS" ]; then
	t=$(date +%s)
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.lock"
	if ! flock -w 1800 9; then
		how="lock $CACHE/.lock not granted in 30 min"
	elif [ ! -d "$ROOTFS" ]; then
		# Holding the lock: any .build-* left is from an interrupted build.
		for b in "$CACHE"/.build-*; do
			[ -d "$b" ] || continue
			umount_under "$b"
			rm -rf --one-file-system "$b"
		done
		BUILDING=$(mktemp -d "$CACHE/.build-XXXXXX")
		if debootstrap --variant=minbase --include="$(echo $PKGS | tr ' ' ,)" "$SUITE" \
			"$BUILDING/root" "$MIRROR" >"$TMP/debootstrap.log" 2>&1; then
			rm -f "$BUILDING"/root/var/cache/apt/archives/*.deb
			printf '%s\n' $PKGS >"$BUILDING/root/.amesh-test-packages"
			mv -T "$BUILDING/root" "$ROOTFS"
		fi
		rm -rf --one-file-system "$BUILDING"
		BUILDING=""
		how="built with debootstrap in $(($(date +%s) - t)) s"
	fi
	exec 9>&-
fi
OUT=$(tail -n 15 "$TMP/debootstrap.log" 2>/dev/null)
check "Debian 12 root with $(echo $PKGS | wc -w) packages at $ROOTFS ($how)" '[ -d "$ROOTFS/usr/lib/systemd" ]'
[ -d "$ROOTFS/usr/lib/systemd" ] || { echo "Bail out! no root"; exit 1; }

# 3. A fresh copy: an overlay on the cached root, the packages and the test's peers inside.
RUN=$TMP/run
mkdir -p "$RUN/upper" "$RUN/work" "$RUN/root"
mount -t overlay amesh-test -o "lowerdir=$ROOTFS,upperdir=$RUN/upper,workdir=$RUN/work" "$RUN/root" &&
	MOUNTED=1 || { echo "Bail out! overlay mount failed"; exit 1; }
mkdir -p "$RUN/root/opt/amesh-test"
cp "$DEB" "$RUN/root/opt/amesh-test/amesh.deb"
cp "$SRCDIR/tests/e2e/lab-peer.py" "$SRCDIR/tests/e2e/httpd.py" "$SRCDIR/tests/pkg/trafficloop.py" \
	"$RUN/root/opt/amesh-test/"
if [ -n "${AMESH_TEST_PREV_DEB:-}" ]; then
	cp "$AMESH_TEST_PREV_DEB" "$RUN/root/opt/amesh-test/amesh-prev.deb"
	prev_how="$(basename "$AMESH_TEST_PREV_DEB")"
else
	dpkg-deb -R "$DEB" "$TMP/prev" &&
		sed -i "s/^Version: .*/Version: $VER~prev1/" "$TMP/prev/DEBIAN/control" &&
		dpkg-deb -b "$TMP/prev" "$RUN/root/opt/amesh-test/amesh-prev.deb" >/dev/null
	prev_how="this package as $VER~prev1"
fi
PREV_VER=$(dpkg-deb -f "$RUN/root/opt/amesh-test/amesh-prev.deb" Version)

# 4. Boot: systemd as PID 1 in its own network namespace (only lo), no host systemd needed.
t=$(date +%s)
MACHINE=amesh-test-$$
systemd-nspawn --register=no --keep-unit --private-network --quiet --console=read-only \
	-M "$MACHINE" -b -D "$RUN/root" </dev/null >"$TMP/console.log" 2>&1 &
NSPAWN=$!
leader() {
	for c in $(cat /proc/"$NSPAWN"/task/*/children 2>/dev/null); do
		[ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ] && LEADER=$c && return 0
	done
	return 1
}
wait_for 20 leader
# systemctl answers once PID 1 has made its private socket; then wait for the end of the boot.
state=""
[ -n "$LEADER" ] && wait_for 30 cin test -S /run/systemd/private &&
	state=$(cin timeout 90 systemctl is-system-running --wait 2>/dev/null)
failed=""
[ "$state" = degraded ] && failed=$(cin systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')
OUT=$(tail -n 20 "$TMP/console.log")
ERR=""
RC=0
check "the container boots with systemd as PID 1: ${state:-no answer}${failed:+ (failed: $failed)} in $(($(date +%s) - t)) s" \
	'[ "$state" = running ] || [ "$state" = degraded ]'
[ "$state" = running ] || [ "$state" = degraded ] || { echo "Bail out! no boot"; exit 1; }

run cin apt-get install -y -q /opt/amesh-test/amesh.deb
OUT=$(echo "$OUT" | tail -n 5)
check "apt-get install ./amesh_${VER}_$ARCH.deb inside" '[ "$RC" -eq 0 ]'
run cin systemctl is-enabled amesh-ztunnel.service
en=$OUT
run cin systemctl is-active amesh-ztunnel.service
check "installed, neither enabled nor started ($en, $OUT)" '[ "$en" = disabled ] && [ "$OUT" = inactive ]'

# 5. The setup of amesh(8) EXAMPLES on one node: three workload namespaces on a bridge, the
# registry, the CA and identities made inside with amesh ca, amesh check.
run cin sh -euc '
sed -i "s/^\[mesh\]\$/[mesh]\nnode = node-a/" /etc/amesh/amesh.conf
cat >/etc/amesh/registry.d/mesh.conf <<EOF
[node "node-a"]
address = 10.1.1.1

[workload "client"]
namespace = default
service_account = client
node = node-a
addresses = 10.1.1.2
labels = app=client

[workload "echo-a"]
namespace = default
service_account = echo
node = node-a
addresses = 10.1.1.3
labels = app=echo

[workload "side"]
namespace = default
service_account = side
node = node-a
addresses = 10.1.1.4
labels = app=side

[service "echo"]
namespace = default
vip = 10.96.0.10
ports = 80:8080
selector = app=echo
waypoint = wp

[waypoint "wp"]
namespace = default
service_account = waypoint
address = 10.1.1.9
node = node-a

[route "teapot"]
namespace = default
service = echo
match.path_prefix = /teapot
fault.abort = 418
EOF
amesh ca init --dir /root/amesh-ca >/dev/null
for sa in client echo side; do
	amesh ca issue --dir /root/amesh-ca --namespace default --service-account $sa \
		--out /var/lib/amesh/certs >/dev/null
done
amesh ca issue --dir /root/amesh-ca --namespace default --service-account waypoint \
	--out /var/lib/amesh/waypoint/certs >/dev/null
cp /root/amesh-ca/ca.crt /etc/amesh/ca.crt
echo 1 >/proc/sys/net/ipv4/ip_forward
ip link set lo up
ip link add br0 type bridge forward_delay 0 stp_state 0
ip addr add 10.1.1.1/24 dev br0
ip addr add 10.1.1.9/32 dev br0
ip link set br0 up
i=2
for w in client echo-a side; do
	ip netns add $w
	ip -n $w link set lo up
	ip link add v-$w type veth peer name eth0 netns $w
	ip link set v-$w master br0 up
	ip -n $w addr add 10.1.1.$i/24 dev eth0
	ip -n $w link set eth0 up
	ip -n $w route add default via 10.1.1.1
	i=$((i + 1))
done
amesh check >/dev/null
'
check "inside: namespaces, registry, amesh ca init/issue, amesh check" '[ "$RC" -eq 0 ]'
# The workloads' servers, as transient units in their namespaces.
cin systemd-run -q --unit=peer-echo -p NetworkNamespacePath=/run/netns/echo-a python3 $PEER serve --port 9000
cin systemd-run -q --unit=http-echo -p NetworkNamespacePath=/run/netns/echo-a \
	python3 /opt/amesh-test/httpd.py serve --name echo-a --port 8080
cin systemd-run -q --unit=peer-side -p NetworkNamespacePath=/run/netns/side python3 $PEER serve --port 9000
# Python's HTTPServer looks its own name up first, which takes seconds with no DNS in the
# container: wait for every port.
listens() { cns "$1" ss -Hltn | grep -q ":$2 "; }
wait_for 20 listens echo-a 9000 && wait_for 20 listens echo-a 8080 && wait_for 20 listens side 9000 ||
	echo "# a server did not start: $(cin journalctl -o cat -u peer-echo -u http-echo -u peer-side | tail -n 5)"

# 6. The ztunnel under its unit.
run cin systemctl start amesh-ztunnel.service
ZT_UP=$(date +%s)
wd0=$(prop amesh-ztunnel.service WatchdogTimestampMonotonic)
zt_pid=$(prop amesh-ztunnel.service MainPID)
st="$(prop amesh-ztunnel.service Type) $(prop amesh-ztunnel.service ActiveState) $(prop amesh-ztunnel.service WatchdogUSec)"
check "amesh-ztunnel.service: systemctl start returns once READY=1 came ($st)" \
	'[ "$RC" -eq 0 ] && [ "$st" = "notify active 30s" ] && journal amesh-ztunnel.service | grep -q "ztunnel: node node-a ready"'

run cin sh -c 'amesh cni add --netns /run/netns/client --workload client &&
	amesh cni add --netns /run/netns/echo-a --workload echo-a && amesh cni list'
check "amesh cni add enrolls client and echo-a with the running ztunnel" \
	'[ "$RC" -eq 0 ] && echo "$OUT" | grep -q "^client /run/netns/client serving" &&
	 echo "$OUT" | grep -q "^echo-a /run/netns/echo-a serving"'
conn client 10.1.1.3 9000
check "client reaches echo-a through the ztunnel (setns, nftables, IP_TRANSPARENT, HBONE)" \
	'echo "$OUT" | grep -q "^peer 10.1.1.2 .* local 10.1.1.3 9000 msg hello" &&
	 journal amesh-ztunnel.service | grep "access: connection complete" | grep "dst.addr=10.1.1.3:9000" |
	 grep "direction=inbound" | grep -q "src.identity=spiffe://cluster.local/ns/default/sa/client"'

# 7. Reload: the ztunnel also watches the directory, so the file change is picked up on its own
# first; then systemctl reload (SIGHUP through ExecReload) must succeed and reload once more.
n0=$(reloads)
cin sh -c 'cat >/etc/amesh/registry.d/50-deny.conf' <<'EOF'
[policy "deny-client"]
namespace = default
selector = app=echo
action = deny
from.principals = cluster.local/ns/default/sa/client
EOF
wait_for 5 more_reloads "$n0"
n1=$(reloads)
run cin systemctl reload amesh-ztunnel.service
rl=$RC
wait_for 5 more_reloads "$n1"
n2=$(reloads)
RC=$rl
check "systemctl reload amesh-ztunnel reloads the registry (reloads logged: $n0, $n1 after the edit, $n2 after reload)" \
	'[ "$rl" -eq 0 ] && [ "$n2" -gt "$n1" ]'
conn client 10.1.1.3 9000
check "a deny policy takes effect: client is refused by echo-a ($OUT)" \
	'[ "$RC" -ne 0 ] && journal amesh-ztunnel.service | grep -q "by policy deny-client"'
cin rm /etc/amesh/registry.d/50-deny.conf
run cin systemctl reload amesh-ztunnel.service
rl=$RC
wait_for 5 more_reloads "$n2"
conn client 10.1.1.3 9000
check "removing it and systemctl reload lets client through again" \
	'[ "$rl" -eq 0 ] && echo "$OUT" | grep -q "local 10.1.1.3 9000 msg hello"'

# 8. A waypoint under its unit, pointed at its own file by a drop-in (amesh-waypoint(8) EXAMPLES).
run cin sh -euc '
cat >/etc/amesh/waypoint.conf <<EOF
[mesh]
node = node-a
[identity]
cert_dir = /var/lib/amesh/waypoint/certs
[waypoint]
name = wp
hbone_address = 10.1.1.9:15008
admin_address = 127.0.0.1:15100
metrics_address = 0.0.0.0:15120
readiness_address = 0.0.0.0:15121
EOF
mkdir -p /etc/systemd/system/amesh-waypoint@wp.service.d
printf "[Service]\nEnvironment=AMESH_CONFIG=/etc/amesh/waypoint.conf\n" \
	>/etc/systemd/system/amesh-waypoint@wp.service.d/override.conf
systemctl daemon-reload
systemctl start amesh-waypoint@wp.service
'
st="$(prop amesh-waypoint@wp.service ActiveState) $(prop amesh-waypoint@wp.service DropInPaths)"
check "amesh-waypoint@wp.service with its drop-in reaches active ($st)" \
	'[ "$RC" -eq 0 ] && [ "$st" = "active /etc/systemd/system/amesh-waypoint@wp.service.d/override.conf" ] &&
	 journal amesh-waypoint@wp.service | grep -q "waypoint: wp .* on 10.1.1.9:15008"'
run cns client python3 /opt/amesh-test/httpd.py get --url http://10.96.0.10/
r1=$OUT
run cns client python3 /opt/amesh-test/httpd.py get --url http://10.96.0.10/teapot
r2=$OUT
OUT="$r1 / $r2"
check "the waypoint serves service echo's HTTP route: / -> 200 echo-a, /teapot -> 418 ($(echo $OUT))" \
	'echo "$r1" | grep -q "^200 echo-a 1" && echo "$r2" | grep -q "^418 "'

# 9. A sidecar under its unit, in its namespace.
run cin sh -c 'amesh cni add --mode sidecar --netns /run/netns/side --workload side &&
	systemctl start amesh-sidecar@side.service'
sc_pid=$(prop amesh-sidecar@side.service MainPID)
ns_unit=$(cin readlink "/proc/$sc_pid/ns/net" 2>/dev/null)
ns_side=$(cns side readlink /proc/self/ns/net)
check "amesh-sidecar@side.service reaches active inside /run/netns/side ($ns_unit)" \
	'[ "$RC" -eq 0 ] && [ "$(prop amesh-sidecar@side.service ActiveState)" = active ] &&
	 [ -n "$ns_unit" ] && [ "$ns_unit" = "$ns_side" ]'
run cns side python3 -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:15021/healthz/ready", timeout=2).read().decode().strip())'
rd=$OUT
conn client 10.1.1.4 9000
check "the sidecar is ready ($rd) and serves side: client reaches it through the ztunnel" \
	'[ "$rd" = ready ] && echo "$OUT" | grep -q "^peer 10.1.1.2 .* local 10.1.1.4 9000"'

# 9b. The CA service under its unit: an intermediate of the root made above, a join against it.
run cin sh -c 'amesh ca intermediate --root-dir /root/amesh-ca --dir /var/lib/amesh/ca \
	--name ca-1 >/dev/null && systemctl start amesh-ca.service &&
	tok=$(amesh ca token --node node-a 2>/dev/null) &&
	fpr=$(amesh ca show /root/amesh-ca/ca.crt | sed -n "s/^fingerprint //p") &&
	sed -e "/^\[identity\]/a ca_address = 127.0.0.1:15012" \
		-e "/^\[identity\]/a node_cert = /root/node/node.crt" \
		-e "/^\[identity\]/a node_key = /root/node/node.key" /etc/amesh/amesh.conf >/root/join.conf &&
	amesh -c /root/join.conf ca join --token "$tok" --ca-fingerprint "$fpr" &&
	systemctl reload amesh-ca.service && sleep 1 &&
	ls /var/lib/amesh/ca/tokens/used | wc -l'
used=$OUT
check "amesh-ca.service (no capabilities, only /var/lib/amesh/ca writable) serves a join, uses its token, reloads ($(echo "$used" | tail -n 1) used)" \
	'[ "$RC" -eq 0 ] && [ "$(prop amesh-ca.service ActiveState)" = active ] &&
	 echo "$used" | grep -q "^joined as spiffe://cluster.local/amesh/node/node-a" &&
	 [ "$(echo "$used" | tail -n 1)" = 1 ]'

# The sandbox is in force on each role: a seccomp filter, no_new_privs, and exactly the
# capabilities of its unit (ztunnel NET_ADMIN and SYS_ADMIN, sidecar NET_ADMIN, waypoint none).
sandbox() { # sandbox UNIT: "SECCOMP NNP CAPEFF" of its main process
	cin awk '/^Seccomp:/ { s = $2 } /^NoNewPrivs:/ { n = $2 } /^CapEff:/ { c = $2 }
		END { print s, n, c }' "/proc/$(prop "$1" MainPID)/status"
}
sb_z=$(sandbox amesh-ztunnel.service)
sb_w=$(sandbox amesh-waypoint@wp.service)
sb_s=$(sandbox amesh-sidecar@side.service)
OUT="ztunnel: $sb_z; waypoint: $sb_w; sidecar: $sb_s"
check "the sandbox holds (Seccomp NoNewPrivs CapEff): $OUT" \
	'[ "$sb_z" = "2 1 0000000000201000" ] && [ "$sb_w" = "2 1 0000000000000000" ] &&
	 [ "$sb_s" = "2 1 0000000000001000" ]'

# 10. The watchdog: the ztunnel has been up for more than one WatchdogSec (30 s) by now, the same
# process, still pinging (WatchdogTimestamp moves on), never restarted.
left=$((ZT_UP + 32 - $(date +%s)))
[ $left -gt 0 ] && sleep $left
wd1=$(prop amesh-ztunnel.service WatchdogTimestampMonotonic)
up=$(($(date +%s) - ZT_UP))
check "the ztunnel's watchdog runs past one WatchdogSec: up ${up} s, same pid, pings moving ($wd0 -> $wd1)" \
	'[ "$(prop amesh-ztunnel.service MainPID)" = "$zt_pid" ] && [ "$wd1" -gt "${wd0:-0}" ] &&
	 [ "$(prop amesh-ztunnel.service ActiveState)" = active ]'

# 11. Stop drains, and the workloads fail closed: nothing passes in plain while it is gone.
run cin systemctl stop amesh-ztunnel.service
st="$(prop amesh-ztunnel.service ActiveState) $(prop amesh-ztunnel.service Result)"
check "systemctl stop: the ztunnel drains and exits cleanly ($st)" \
	'[ "$RC" -eq 0 ] && [ "$st" = "inactive success" ] && journal amesh-ztunnel.service | grep -q "ztunnel: drained"'
conn client 10.1.1.3 9000
o1=$OUT
r1=$RC
run cin python3 $PEER connect --addr 10.1.1.3 --port 9000 --timeout 3
check "fail closed: client's connection is refused ($o1), a plaintext client of echo-a too ($OUT)" \
	'[ "$r1" -ne 0 ] && [ "$RC" -ne 0 ] && echo "$o1" | grep -q "^error" && echo "$OUT" | grep -q "^error"'

# 12. Restart brings them back from state_dir, with no amesh cni add.
run cin systemctl restart amesh-ztunnel.service
rs=$RC
run cin amesh cni list
lst=$OUT
conn client 10.1.1.3 9000
check "systemctl restart: both workloads back without re-enrollment, client reaches echo-a" \
	'[ "$rs" -eq 0 ] && echo "$lst" | grep -q "^client .* serving" && echo "$lst" | grep -q "^echo-a .* serving" &&
	 journal amesh-ztunnel.service | grep -q "ztunnel: 2 workloads restored" &&
	 echo "$OUT" | grep -q "local 10.1.1.3 9000 msg hello"'

# 13. Upgrade with traffic running: the previous package first (a downgrade, run before the
# traffic starts), then this one while client connects to echo-a every 50 ms.
run cin apt-get install -y -q --allow-downgrades /opt/amesh-test/amesh-prev.deb
pids0="$(prop amesh-ztunnel.service MainPID) $(prop amesh-waypoint@wp.service MainPID) $(prop amesh-sidecar@side.service MainPID)"
check "the previous package ($prev_how) installed over it, the roles running again" \
	'[ "$RC" -eq 0 ] && [ "$(cin dpkg-query -W -f "\${Version}" amesh)" = "$PREV_VER" ] &&
	 [ "$(cin systemctl is-active amesh-ztunnel.service amesh-waypoint@wp.service amesh-sidecar@side.service | sort -u)" = active ]'
wait_for 5 cin sh -c 'ss -Hltn | grep -q "127.0.0.1:15000 "'
cin rm -f /opt/amesh-test/stop
cns client python3 /opt/amesh-test/trafficloop.py --addr 10.1.1.3 --port 9000 --interval 0.05 \
	--duration 60 --stop-file /opt/amesh-test/stop >"$TMP/loop.out" 2>&1 &
LOOP=$!
PIDS="$PIDS $LOOP"
wait_for 5 grep -q started "$TMP/loop.out"
sleep 1
tu=$(date +%s.%N)
run cin apt-get install -y -q /opt/amesh-test/amesh.deb
tu=$(echo "$tu $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')
up_rc=$RC
up_out=$OUT
sleep 3
: >"$RUN/root/opt/amesh-test/stop"
wait "$LOOP"
pids1="$(prop amesh-ztunnel.service MainPID) $(prop amesh-waypoint@wp.service MainPID) $(prop amesh-sidecar@side.service MainPID)"
restarted=0
for i in 1 2 3; do
	a=$(echo "$pids0" | cut -d' ' -f$i)
	b=$(echo "$pids1" | cut -d' ' -f$i)
	[ -n "$b" ] && [ "$b" != 0 ] && [ "$a" != "$b" ] && restarted=$((restarted + 1))
done
RC=$up_rc
OUT=$(echo "$up_out" | tail -n 5)
check "apt-get install upgrades $PREV_VER -> $VER in ${tu} s and restarts the three roles ($pids0 -> $pids1)" \
	'[ "$RC" -eq 0 ] && [ "$(cin dpkg-query -W -f "\${Version}" amesh)" = "$VER" ] &&
	 [ "$(cin systemctl is-active amesh-ztunnel.service amesh-waypoint@wp.service amesh-sidecar@side.service | sort -u)" = active ] &&
	 [ "$restarted" -eq 3 ]'
sed 's/^/# upgrade: /' "$TMP/loop.out" | grep -v ': started$'
run cat "$TMP/loop.out"
# The roles hand their listeners to the new binary (SIGUSR2 from postinst): nothing refused.
check "the workloads' traffic ran through the upgrade without one failed connection" \
	'grep -q "^connections [1-9][0-9]* ok [1-9][0-9]* failed 0$" "$TMP/loop.out" &&
	 journal amesh-ztunnel.service | grep -q "upgrade: the new process (pid [0-9]*) serves"'
conn client 10.1.1.3 9000
check "after the upgrade client reaches echo-a, still enrolled" \
	'echo "$OUT" | grep -q "local 10.1.1.3 9000 msg hello"'

# 14. What the journal and the manager say of the whole run.
UNITS="amesh-ztunnel.service amesh-waypoint@wp.service amesh-sidecar@side.service amesh-ca.service"
# shellcheck disable=SC2086
run journal $UNITS
den=$(echo "$OUT" | grep -i -E 'SIGSYS|Bad system call|status=31|core-dump|Operation not permitted|EPERM|Permission denied|Read-only file system|Failed at step|status=2[0-9][0-9]/' | head -n 5)
OUT=$den
check "the journal shows no sandbox denial (SIGSYS, EPERM, Failed at step, 2xx exec status)" '[ -z "$den" ]'
run cin sh -c 'journalctl -b -o cat --no-pager _COMM=amesh | grep -i -c -E "not permitted|EPERM|SIGSYS"'
check "no message of amesh's anywhere in the journal says EPERM or SIGSYS" '[ "$OUT" = 0 ]'
nr=""
for u in $UNITS; do nr="$nr $(prop "$u" NRestarts)"; done
check "NRestarts is 0 for the four units ($(echo $nr))" '[ "$(echo $nr)" = "0 0 0 0" ]'
st=$(cin systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' ')
OUT=$st
check "no failed unit in the container (${st:-none})" '[ -z "$st" ]'

# 15. Power off; the overlay and its copy go (down, also run on any failure by the trap).
diag
cin systemctl poweroff --no-block >/dev/null 2>&1
i=0
while kill -0 "$NSPAWN" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$NSPAWN" 2>/dev/null; then
	RC=-1
else
	wait "$NSPAWN"
	RC=$?
	NSPAWN=""
fi
OUT=$(tail -n 10 "$TMP/console.log")
check "systemctl poweroff: the container stops, systemd-nspawn exits $RC" '[ "$RC" -eq 0 ]'
down
check "nothing left: no overlay mounted, no copy" \
	'! grep -q " $TMP/run/" /proc/mounts && [ ! -e "$TMP/run" ]'
echo "# time: $(($(date +%s) - T0)) s in all"
tap_done
