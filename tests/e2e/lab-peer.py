#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""TCP peers for the lab tests (tests/e2e/lab.sh), standard library only.

serve [--addr A] [--port P] [--greet TEXT]
    Listens on A:P (default [::]:0, dual-stack), prints "listening PORT" and serves each
    connection in a thread: with --greet, first sends "TEXT" and a newline, as a server-first
    protocol (SMTP, MySQL) does; reads one line (at most 64 KiB), answers
    "peer IP PORT local IP PORT msg LINE", then echoes whatever else comes until EOF.
    IPv4-mapped addresses are printed as plain IPv4, so the server names the client's real
    source address the way the client sees its own. A first line "sink" instead makes it read
    to the end and answer "sink BYTES SHA256" (one-way bulk transfers).
connect --addr A --port P [--msg M] [--bind SRC] [--timeout S] [--greeted]
    Connects (with --greeted, reads the server's greeting line first and prints "greeting
    TEXT" and "greeted_after_ms N", N from the connect), sends M and a newline, prints the server's answer line and exits 0; on failure
    prints "error ERRNAME: message" and exits 1 (ECONNREFUSED, EHOSTUNREACH, timeout, ...).
"""
import argparse
import errno
import hashlib
import socket
import sys
import threading
import time


def plain(addr):
    return addr[7:] if addr.startswith("::ffff:") else addr


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def handle(conn, greet):
    with conn:
        conn.settimeout(60)
        data = b""
        try:
            if greet:
                conn.sendall(greet.encode() + b"\n")
            while b"\n" not in data and len(data) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            line, _, rest = data.partition(b"\n")
            if line == b"sink":
                # Reads to the end, then answers with the byte count and sha256 of what came.
                h = hashlib.sha256(rest)
                n = len(rest)
                while True:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                conn.sendall(("sink %d %s\n" % (n, h.hexdigest())).encode())
                return
            peer = conn.getpeername()
            local = conn.getsockname()
            reply = "peer %s %d local %s %d msg %s\n" % (
                plain(peer[0]), peer[1], plain(local[0]), local[1],
                line.decode("utf-8", "replace"))
            conn.sendall(reply.encode())
            if rest:
                conn.sendall(rest)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
        except OSError:
            pass


def serve(args):
    addr = args.addr
    srv = socket.socket(family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family(addr) == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if addr == "::" else 1)
    srv.bind((addr, args.port))
    srv.listen(1024)
    print("listening %d" % srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, args.greet), daemon=True).start()


def connect(args):
    try:
        s = socket.socket(family(args.addr), socket.SOCK_STREAM)
        s.settimeout(args.timeout)
        if args.bind:
            s.bind((args.bind, 0))
        t0 = time.monotonic()
        s.connect((args.addr, args.port))
        data = b""
        if args.greeted:
            while b"\n" not in data and len(data) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            greeting, _, data = data.partition(b"\n")
            print("greeting %s" % greeting.decode("utf-8", "replace"), flush=True)
            # from the connect, without the interpreter's start-up
            print("greeted_after_ms %d" % ((time.monotonic() - t0) * 1000), flush=True)
        s.sendall(args.msg.encode() + b"\n")
        while b"\n" not in data and len(data) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
    except socket.timeout:
        print("error ETIMEDOUT: timed out after %g s" % args.timeout)
        return 1
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "OSError"
        print("error %s: %s" % (name, e.strerror or e))
        return 1
    if b"\n" not in data:
        print("error EOF: no answer line (got %d bytes)" % len(data))
        return 1
    print(data.partition(b"\n")[0].decode("utf-8", "replace"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--addr", default="::")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--greet", default="")
    c = sub.add_parser("connect")
    c.add_argument("--addr", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--msg", default="hello")
    c.add_argument("--bind", default="")
    c.add_argument("--timeout", type=float, default=5.0)
    c.add_argument("--greeted", action="store_true")
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
        return 0
    return connect(args)


if __name__ == "__main__":
    sys.exit(main())
