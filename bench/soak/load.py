#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The soak's own clients (bench/soak/run.sh), for what bench/loadgen and h2load do not do:
gRPC (python3-grpcio, raw bytes against tests/e2e/grpcpeer.py's /amesh.Echo/Unary), HTTP/1.1 on
a new connection per request, and L4 transfers (against tests/e2e/lab-peer.py serve: a line,
its answer, then TRANSFER bytes echoed back). Each kind runs at its rate in its own threads,
kept-alive and new connections both:

    grpc-keep   unary calls on one channel (one HTTP/2 connection) kept all along
    grpc-new    one call on a new channel each time
    h1-new      GET on a new connection each time (Connection: close)
    l4-keep     one TCP connection kept all along, a 1 KiB round trip each time
    l4-new      a new connection each time: line, answer, TRANSFER bytes there and back
    l4z-new     the same to a workload address, not a service: ztunnels only, no waypoint

A request is due at T0 + i/RATE; one that is late is sent at once (the rate holds unless the
path stalls, and then the stall shows as errors or a lower count). Every request has a 5 s
deadline; a failure, a wrong answer or a timeout counts as an error. Every 10 s, and at the end,
one line goes to --stats: "T KIND ok err ..." with the counts since the start (T seconds).
"""
import argparse
import os
import socket
import sys
import threading
import time

import grpc

counts = {}
lock = threading.Lock()
stop = threading.Event()


def count(kind, ok):
    with lock:
        c = counts.setdefault(kind, [0, 0])
        c[0 if ok else 1] += 1


def paced(kind, rate, fn):
    """Runs fn() at rate per second until stop; fn returns True when the answer was right."""
    if rate <= 0:
        return
    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        due = t0 + i / rate
        now = time.monotonic()
        if due > now:
            if stop.wait(due - now):
                break
        i += 1
        try:
            ok = fn()
        except Exception:  # noqa: BLE001 - every failure is an error of this kind
            ok = False
        count(kind, ok)


def grpc_call(ch, i):
    f = ch.unary_unary("/amesh.Echo/Unary")
    msg = b"soak %d" % i
    resp = f(msg, timeout=5)
    return resp.endswith(b":" + msg)


def grpc_keep(target, rate):
    ch = grpc.insecure_channel(target)
    n = [0]

    def one():
        n[0] += 1
        return grpc_call(ch, n[0])
    paced("grpc-keep", rate, one)
    ch.close()


def grpc_new(target, rate):
    n = [0]

    def one():
        n[0] += 1
        with grpc.insecure_channel(target) as ch:
            return grpc_call(ch, n[0])
    paced("grpc-new", rate, one)


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def h1_new(target, rate):
    host, port = addr(target)
    req = ("GET /new HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()

    def one():
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(req)
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        return data.startswith(b"HTTP/1.1 200 ")
    paced("h1-new", rate, one)


def recv_exactly(f, n):
    data = f.read(n)
    return data if data is not None and len(data) == n else None


def l4_new(kind, target, rate, size):
    host, port = addr(target)
    blob = os.urandom(size)

    def one():
        with socket.create_connection((host, port), timeout=5) as s:
            f = s.makefile("rb")
            s.sendall(b"soak\n")
            if not f.readline().startswith(b"peer "):
                return False
            s.sendall(blob)
            s.shutdown(socket.SHUT_WR)
            return recv_exactly(f, size) == blob and f.read() == b""
    paced(kind, rate, one)


def l4_keep(target, rate):
    host, port = addr(target)
    blob = os.urandom(1024)
    state = {"s": None}

    def one():
        if state["s"] is None:
            s = socket.create_connection((host, port), timeout=5)
            f = s.makefile("rb")
            s.sendall(b"soak\n")
            if not f.readline().startswith(b"peer "):
                s.close()
                return False
            state["s"], state["f"] = s, f
        try:
            state["s"].sendall(blob)
            if recv_exactly(state["f"], len(blob)) == blob:
                return True
        except OSError:
            pass
        state["s"].close()
        state["s"] = None  # counted as an error; the next one connects again
        return False
    paced("l4-keep", rate, one)
    if state["s"] is not None:
        state["s"].close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--grpc", help="HOST:PORT")
    p.add_argument("--grpc-keep", type=float, default=0)
    p.add_argument("--grpc-new", type=float, default=0)
    p.add_argument("--h1", help="HOST:PORT")
    p.add_argument("--h1-new", type=float, default=0)
    p.add_argument("--l4", help="HOST:PORT (a service: through the waypoint)")
    p.add_argument("--l4-keep", type=float, default=0)
    p.add_argument("--l4-new", type=float, default=0)
    p.add_argument("--l4z", help="HOST:PORT (a workload: ztunnels only)")
    p.add_argument("--l4z-new", type=float, default=0)
    p.add_argument("--transfer", type=int, default=16384)
    a = p.parse_args()
    jobs = []
    if a.grpc:
        jobs += [(grpc_keep, (a.grpc, a.grpc_keep)), (grpc_new, (a.grpc, a.grpc_new))]
    if a.h1:
        jobs += [(h1_new, (a.h1, a.h1_new))]
    if a.l4:
        jobs += [(l4_keep, (a.l4, a.l4_keep)), (l4_new, ("l4-new", a.l4, a.l4_new, a.transfer))]
    if a.l4z:
        jobs += [(l4_new, ("l4z-new", a.l4z, a.l4z_new, a.transfer))]
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in jobs]
    t0 = time.monotonic()
    for t in threads:
        t.start()

    def report():
        with lock, open(a.stats, "a") as f:
            t = time.monotonic() - t0
            for k in sorted(counts):
                f.write("%d %s %d %d\n" % (t, k, counts[k][0], counts[k][1]))
    while not stop.wait(10):
        report()
        if time.monotonic() - t0 >= a.duration:
            stop.set()
    for t in threads:
        t.join(10)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
