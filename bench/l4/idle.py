#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Many idle TCP connections for bench/l4/run.sh (standard library only, one epoll loop).

serve --port P [--addr A]
    Listens on A:P (default 0.0.0.0), prints "listening PORT", accepts any number of
    connections and echoes whatever arrives on them. Prints "accepted N" (running total)
    at most every 0.2 s while the number changes.
hold --addr A --port P --count N [--conc C] [--timeout S]
    Opens N connections to A:P, at most C (default 200) of them not yet up at a time. A
    connection is up when one byte sent through it came back from the echo server, so
    through a mesh the whole tunnel exists (accept, pool, CONNECT, upstream connect, both
    directions). Prints "up OK of N failed F secs T" once every connection is up or failed
    (or S seconds, default 120, have passed) and then holds every connection open, idle,
    until SIGTERM or SIGINT.
The open-file limit is raised to its hard limit; raise the hard limit (ulimit -Hn) first.
"""
import argparse
import resource
import select
import signal
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(a):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.addr, a.port))
    ls.listen(4096)
    ls.setblocking(False)
    print("listening %d" % ls.getsockname()[1], flush=True)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}
    accepted = 0
    shown = 0
    last = 0.0
    while True:
        for fd, ev in ep.poll(0.2):
            if fd == ls.fileno():
                while True:
                    try:
                        s, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:  # EMFILE and the like: say so, keep serving
                        print("accept error %s" % e, file=sys.stderr, flush=True)
                        break
                    s.setblocking(False)
                    conns[s.fileno()] = s
                    ep.register(s.fileno(), select.EPOLLIN)
                    accepted += 1
                continue
            s = conns.get(fd)
            if s is None:
                continue
            try:
                d = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                d = b""
            if not d:
                ep.unregister(fd)
                del conns[fd]
                s.close()
                continue
            try:
                s.send(d)
            except OSError:
                pass
        now = time.monotonic()
        if accepted != shown and now - last >= 0.2:
            print("accepted %d" % accepted, flush=True)
            shown = accepted
            last = now


def hold(a):
    ep = select.epoll()
    conns = {}  # fd -> [socket, state]  state: 0 connecting, 1 waiting for the echo
    up = []
    failed = 0
    started = 0
    t0 = time.monotonic()
    deadline = t0 + a.timeout

    def fail(fd):
        nonlocal failed
        s = conns.pop(fd)[0]
        try:
            ep.unregister(fd)
        except OSError:
            pass
        s.close()
        failed += 1

    while (started < a.count or conns) and time.monotonic() < deadline:
        while started < a.count and len(conns) < a.conc:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            try:
                s.connect((a.addr, a.port))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                s.close()
                failed += 1
                continue
            conns[s.fileno()] = [s, 0]
            ep.register(s.fileno(), select.EPOLLOUT)
        for fd, ev in ep.poll(0.2):
            c = conns.get(fd)
            if c is None:
                continue
            s = c[0]
            if ev & (select.EPOLLERR | select.EPOLLHUP) and c[1] == 0:
                fail(fd)
                continue
            try:
                if c[1] == 0:
                    s.send(b"x")
                    c[1] = 1
                    ep.modify(fd, select.EPOLLIN)
                else:
                    d = s.recv(16)
                    if d != b"x":
                        fail(fd)
                        continue
                    ep.unregister(fd)
                    del conns[fd]
                    up.append(s)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                fail(fd)
    failed += len(conns) + (a.count - started)
    print("up %d of %d failed %d secs %.2f" % (len(up), a.count, failed, time.monotonic() - t0),
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--addr", default="0.0.0.0")
    s.add_argument("--port", type=int, default=0)
    h = sub.add_parser("hold")
    h.add_argument("--addr", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--conc", type=int, default=200)
    h.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()
    raise_nofile()
    try:
        serve(a) if a.cmd == "serve" else hold(a)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
