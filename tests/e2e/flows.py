#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Flow drivers for the mesh tests, against the lab peer's echo server (tests/e2e/lab-peer.py).

many --addr A --port P --count N [--timeout S]
    Opens N connections at once, sends a line on each, reads the answer line, and only then
    closes them all: N concurrent connections. Prints "ok K of N".
hold --addr A --port P --seconds S
    One connection kept open for S seconds, exchanging a line every 0.2 s (the echo must come
    back each time). Prints "held K exchanges" or "broken after K: REASON".
"""
import argparse
import selectors
import socket
import sys
import time


def many(a):
    sel = selectors.DefaultSelector()
    fam = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    conns = {}
    for i in range(a.count):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((a.addr, a.port))
        conns[s] = {"i": i, "sent": False, "buf": b"", "done": False}
        sel.register(s, selectors.EVENT_WRITE)
    ok = 0
    deadline = time.time() + a.timeout
    pending = len(conns)
    while pending and time.time() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            st = conns[s]
            try:
                if ev & selectors.EVENT_WRITE and not st["sent"]:
                    s.send(b"conn-%d\n" % st["i"])
                    st["sent"] = True
                    sel.modify(s, selectors.EVENT_READ)
                elif ev & selectors.EVENT_READ:
                    d = s.recv(4096)
                    if not d:
                        raise OSError("closed")
                    st["buf"] += d
                    if b"\n" in st["buf"]:
                        if b"msg conn-%d" % st["i"] in st["buf"]:
                            ok += 1
                        st["done"] = True
                        sel.unregister(s)
                        pending -= 1
            except OSError:
                st["done"] = True
                sel.unregister(s)
                pending -= 1
    for s in conns:
        s.close()
    print("ok %d of %d" % (ok, a.count), flush=True)


def hold(a):
    fam = socket.AF_INET6 if ":" in a.addr else socket.AF_INET
    n = 0
    try:
        s = socket.create_connection((a.addr, a.port), timeout=5)
        s.sendall(b"hold\n")
        buf = b""
        while b"\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise OSError("closed before the answer")
            buf += d
        end = time.time() + a.seconds
        while time.time() < end:
            msg = b"ping-%d;" % n
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = s.recv(4096)
                if not d:
                    raise OSError("closed")
                got += d
            if got != msg:
                raise OSError("echo mismatch")
            n += 1
            time.sleep(0.2)
        s.close()
    except OSError as e:
        print("broken after %d: %s" % (n, e), flush=True)
        return 1
    print("held %d exchanges" % n, flush=True)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("many")
    m.add_argument("--addr", required=True)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--count", type=int, required=True)
    m.add_argument("--timeout", type=float, default=60)
    h = sub.add_parser("hold")
    h.add_argument("--addr", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--seconds", type=float, required=True)
    a = p.parse_args()
    sys.exit(many(a) if a.cmd == "many" else hold(a))


if __name__ == "__main__":
    main()
