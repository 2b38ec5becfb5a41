# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=sh disable=SC2034
# The CA host and the joining nodes of the identity tests (issue 14), on top of tests/e2e/lab.sh
# (source both, then lab_up). Uses tests/lib.sh's run, spawn and TMP.
#
#   ca_host             an offline root ($CAH/root) and an intermediate per CA instance ($CAH/ca1,
#                       $CAH/ca2) under CAH=$LAB_DIR/cahost, the instances' addresses CA1 and CA2
#                       on host A's wire, a config per instance ($CAH/ca1.conf, ca2.conf) and FPR,
#                       the root's fingerprint; returns non-zero when a step fails
#   ca_start I, ca_stop I, ca_hup I   run, stop (SIGTERM, then wait) or reload instance I (in ha)
#   ca_metric I NAME    a metric's value on instance I (NAME as exposed, with its labels)
#   node_confs          $LAB_DIR/node-a.conf and node-b.conf in CA mode (the CAs' addresses, no
#                       certificate and no bundle yet; identities in $LAB_DIR/node-X/certs)
#   token ARGS...       `amesh ca token -c $CAH/ca1.conf ARGS`: the token alone
#   join a|b ARGS...    `amesh ca join` on that host (run: OUT, ERR, RC)
#   zt_start a|b, zt_hup a|b, zt_metric a|b NAME
#   enroll a|b NS WORKLOAD   `amesh cni add` on that host (run: OUT, ERR, RC)
#   conn FROM ADDR PORT [MSG]  a lab-peer connection (run: OUT, ERR, RC)
#   issuer FILE         the issuer of the first certificate in FILE, as `amesh ca show` prints it
# TTL (seconds; default 30) is the lifetime the CAs give workload certificates.

TTL=${TTL:-30}
CA1=192.168.10.20
CA2=192.168.10.21

ca_host() {
	CAH=$LAB_DIR/cahost
	lab_exec ha ip addr add "$CA1/24" dev wire || return 1
	lab_exec ha ip addr add "$CA2/24" dev wire || return 1
	"$AMESH" ca init --dir "$CAH/root" >/dev/null || return 1
	for _i in 1 2; do
		"$AMESH" ca intermediate --root-dir "$CAH/root" --dir "$CAH/ca$_i" --name "ca$_i" \
			>/dev/null || return 1
		cat >"$CAH/ca$_i.conf" <<CONF || return 1
[mesh]
registry = $LAB_REGISTRY
[ca]
dir = $CAH/ca$_i
address = $(eval echo \$CA$_i):15012
admin_address = 127.0.0.1:152${_i}0
metrics_address = 0.0.0.0:152${_i}4
readiness_address = 0.0.0.0:152${_i}3
max_ttl = ${TTL}s
node_ttl = 1h
CONF
	done
	FPR=sha256:$(openssl x509 -in "$CAH/root/ca.crt" -outform DER | sha256sum | cut -d' ' -f1)
}
ca_start() { spawn "ca$1" $(lab_in ha) "$AMESH" ca serve -c "$CAH/ca$1.conf"; }
ca_stop() {
	eval "kill -TERM \$PID_ca$1" 2>/dev/null
	eval "wait \$PID_ca$1" 2>/dev/null
}
ca_hup() { eval "kill -HUP \$PID_ca$1"; }
ca_metric() {
	lab_exec ha curl -s "http://127.0.0.1:152${1}4/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

node_confs() {
	for _h in a b; do
		cat >"$LAB_DIR/node-$_h.conf" <<CONF || return 1
[mesh]
trust_domain = cluster.local
trust_bundle = $LAB_DIR/node-$_h/bundle.crt
registry = $LAB_REGISTRY
node = node-$_h
[identity]
cert_dir = $LAB_DIR/node-$_h/certs
node_cert = $LAB_DIR/node-$_h/node/node.crt
node_key = $LAB_DIR/node-$_h/node/node.key
ca_address = $CA1:15012, $CA2:15012
cert_ttl = ${TTL}s
ca_timeout = 2s
[ztunnel]
socket = $LAB_DIR/node-$_h/ztunnel.sock
state_dir = $LAB_DIR/node-$_h/workloads
${AMESH_TEST_WORKERS:+workers = $AMESH_TEST_WORKERS}
CONF
	done
}
token() { "$AMESH" ca token -c "$CAH/ca1.conf" "$@" 2>/dev/null; }
join() {
	_h=$1
	shift
	run lab_exec "h$_h" "$AMESH" -c "$LAB_DIR/node-$_h.conf" ca join "$@"
}

zt_start() { spawn "zt_$1" $(lab_in "h$1") "$AMESH" ztunnel -c "$LAB_DIR/node-$1.conf"; }
zt_hup() { eval "kill -HUP \$PID_zt_$1"; }
zt_metric() {
	lab_exec "h$1" curl -s http://127.0.0.1:15020/metrics | awk -v m="$2" '$1 == m { print $2 }'
}
enroll() {
	run lab_exec "h$1" "$AMESH" -c "$LAB_DIR/node-$1.conf" cni add --netns "$(lab_ns_path "$2")" \
		--workload "$3"
}
conn() {
	run lab_exec "$1" "$LAB_PY" "$LAB_PEER" connect --addr "$2" --port "$3" --msg "${4:-hello}" \
		--timeout 3
}
issuer() { "$AMESH" ca show "$1" | sed -n 's/^issuer *//p' | head -n 1; }
