#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A small HTTP/1.1 server and client for the waypoint tests (standard library only).

serve --name NAME [--port 8080] [--log FILE] [--status N]
    Keep-alive HTTP/1.1. With --log, one line per request is appended to FILE:
    "METHOD PATH HOST BODY_BYTES". Every answer is JSON: {"server": NAME, "method", "path", "headers",
    "body_bytes", "body_sha256"}. /slow sleeps 2 s first; /flaky/KEY answers 503 the first time
    a KEY is seen and 200 after; /status/N answers N; /bytes/N answers N bytes "b" (not JSON).
    --status N: every other path is answered N.
    A request with "Upgrade: websocket" (or echo, or h2c) is answered 101 and the connection then
    echoes bytes.
    Prints "listening PORT".
upgrade --url URL [--msg M] [--proto P]
    Sends a GET with "Connection: Upgrade" and "Upgrade: P" (websocket), prints the status line, then
    sends M and prints what is echoed ("echo M").
get --url URL [--count N] [--method M] [--header 'K: V' ...] [--upload BYTES] [--pause S]
    Sends N requests on one keep-alive connection (S seconds apart with --pause); prints one line per distinct
    "status server" pair with its count ("200 echo-a 903"), then "bytes SENT".
"""
import argparse
import hashlib
import http.client
import http.server
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse

seen = set()
lock = threading.Lock()


def serve(a):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self):
            if self.headers.get("upgrade", "").lower() in ("websocket", "echo", "h2c"):
                self.send_response(101)
                self.send_header("Upgrade", self.headers["upgrade"])
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                while True:
                    d = self.connection.recv(65536)
                    if not d:
                        break
                    self.connection.sendall(d)
                return
            n = 0
            h = hashlib.sha256()
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    left = size
                    while left:
                        d = self.rfile.read(min(left, 1 << 20))
                        h.update(d)
                        left -= len(d)
                        n += len(d)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("content-length", "0"))
                while left:
                    d = self.rfile.read(min(left, 1 << 20))
                    if not d:
                        break
                    h.update(d)
                    left -= len(d)
                    n += len(d)
            if a.log:
                with lock, open(a.log, "a") as f:
                    f.write("%s %s %s %d\n" % (self.command, self.path,
                                                self.headers.get("host", "-"), n))
            path = urllib.parse.urlparse(self.path).path
            status = a.status
            if path == "/slow":
                time.sleep(2)
            elif path.startswith("/flaky/"):
                with lock:
                    if path not in seen:
                        seen.add(path)
                        status = 503
            elif path.startswith("/status/"):
                status = int(path.split("/")[2])
            elif path.startswith("/bytes/"):
                left = int(path.split("/")[2])
                self.send_response(200)
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(left))
                self.end_headers()
                chunk = b"b" * (1 << 16)
                while left > 0 and self.command != "HEAD":
                    self.wfile.write(chunk[:min(left, len(chunk))])
                    left -= min(left, len(chunk))
                return
            body = json.dumps({"server": a.name, "method": self.command, "path": self.path,
                               "headers": {k.lower(): v for k, v in self.headers.items()},
                               "body_bytes": n, "body_sha256": h.hexdigest()}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    s = S(("0.0.0.0", a.port), H)
    print("listening", s.server_address[1], flush=True)
    s.serve_forever()


def get(a):
    u = urllib.parse.urlparse(a.url)
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=a.timeout)
    counts = {}
    sent = 0
    t0 = time.monotonic()
    for i in range(a.count):
        hdrs = dict(h.split(": ", 1) for h in a.header)
        body = None
        if a.upload:
            chunk = b"u" * (1 << 20)

            def gen(total=a.upload):
                left = total
                while left > 0:
                    d = chunk[:min(left, len(chunk))]
                    left -= len(d)
                    yield d
            body = gen()
            hdrs["content-length"] = str(a.upload)
            sent += a.upload
        try:
            c.request(a.method, u.path or "/", body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            try:
                server = json.loads(data).get("server", "-")
                if a.show:
                    print("body", data.decode(), flush=True)
            except ValueError:
                server = data.decode(errors="replace").strip().replace(" ", "_")[:40] or "-"
            key = "%d %s" % (r.status, server)
        except (OSError, http.client.HTTPException) as e:
            key = "error %s" % type(e).__name__
            c.close()
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=a.timeout)
        counts[key] = counts.get(key, 0) + 1
        if a.pause and i + 1 < a.count:
            time.sleep(a.pause)
    for k in sorted(counts):
        print(k, counts[k], flush=True)
    print("bytes", sent, flush=True)
    if a.elapsed:  # the requests' own time, without the interpreter's start-up
        print("elapsed_ms %d" % ((time.monotonic() - t0) * 1000), flush=True)


def upgrade(a):
    import socket
    u = urllib.parse.urlparse(a.url)
    s = socket.create_connection((u.hostname, u.port or 80), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
               % (u.path or "/", u.netloc, a.proto)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    print(head.split(b"\r\n")[0].decode(), flush=True)
    s.sendall(a.msg.encode())
    while len(rest) < len(a.msg):
        d = s.recv(65536)
        if not d:
            break
        rest += d
    print("echo", rest.decode(errors="replace"), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--log")
    s.add_argument("--status", type=int, default=200)
    g = sub.add_parser("get")
    g.add_argument("--url", required=True)
    up = sub.add_parser("upgrade")
    up.add_argument("--url", required=True)
    up.add_argument("--msg", default="hello")
    up.add_argument("--proto", default="websocket")
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--method", default="GET")
    g.add_argument("--header", action="append", default=[])
    g.add_argument("--upload", type=int, default=0)
    g.add_argument("--timeout", type=float, default=10)
    g.add_argument("--show", action="store_true")
    g.add_argument("--pause", type=float, default=0)
    g.add_argument("--elapsed", action="store_true")
    a = p.parse_args()
    sys.exit(serve(a) if a.cmd == "serve" else upgrade(a) if a.cmd == "upgrade" else get(a))


if __name__ == "__main__":
    main()
