#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus of tests/fuzz/fuzz-hbone: HTTP/2 client byte streams (frames with HPACK
# literals, no Huffman), each after the target's 5-byte mode and seed prefix.
# Usage: h2seeds.py hbone DIR
import os
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def hint(v, prefix, first=0):
    lim = (1 << prefix) - 1
    if v < lim:
        return bytes([first | v])
    out = [first | lim]
    v -= lim
    while v >= 128:
        out.append((v & 0x7f) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack(headers):
    out = b""
    for n, v in headers:
        n, v = n.encode(), v.encode()
        out += b"\x00" + hint(len(n), 7) + n + hint(len(v), 7) + v
    return out


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*kv):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in kv))


def headers(sid, hdrs, end_stream=False, end_headers=True):
    return frame(1, (4 if end_headers else 0) | (1 if end_stream else 0), sid, hpack(hdrs))


def data(sid, payload, end_stream=False):
    return frame(0, 1 if end_stream else 0, sid, payload)


def rst(sid, code):
    return frame(3, 0, sid, struct.pack(">I", code))


def window(sid, inc):
    return frame(8, 0, sid, struct.pack(">I", inc))


PING = frame(6, 0, 0, b"12345678")
SACK = frame(4, 1, 0)
GOAWAY = frame(7, 0, 0, struct.pack(">II", 0, 0))


def connect(auth, extra=()):
    return [(":method", "CONNECT"), (":authority", auth)] + list(extra)


def hbone():
    s = settings((3, 100), (4, 65535))
    return {
        "connect-data-eof": s + SACK + headers(1, connect("10.0.0.2:9080")) + data(1, b"hello") + data(1, b"", True),
        "connect-early-data": s + headers(1, connect("reviews.default.svc.cluster.local:9080")) + data(1, b"x" * 300),
        "connect-end-stream": s + headers(1, connect("10.0.0.2:80"), end_stream=True),
        "connect-v6": s + headers(1, connect("[fd00::2]:443", [("forwarded", "for=10.0.0.9"), ("baggage", "k=v"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])) + data(1, b"ping"),
        "get-refused": s + headers(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a:1")], end_stream=True),
        "bad-authorities": s + headers(1, connect("a:b:80")) + headers(3, connect("host:0")) + headers(5, connect("[10.0.0.1]:80")) + headers(7, connect("h_x:80")) + headers(9, connect("")),
        "many-streams-rst": s + b"".join(headers(i, connect("10.0.0.2:%d" % (1000 + i))) for i in range(1, 30, 2)) + b"".join(rst(i, 8) for i in range(1, 30, 4)) + PING + window(0, 1 << 20),
        "continuation": s + headers(1, connect("10.0.0.2:9080")[:1], end_headers=False) + frame(9, 4, 1, hpack([(":authority", "10.0.0.2:9080")])) + data(1, b"abc", True),
        "goaway": s + headers(1, connect("10.0.0.2:9080")) + GOAWAY + data(1, b"late"),
        "window-flood": s + headers(1, connect("10.0.0.2:9080")) + data(1, b"y" * 16000) + data(1, b"y" * 16000) + window(1, 0x7fffffff) + window(1, 1),
        "big-header": s + headers(1, connect("10.0.0.2:9080", [("x-pad", "p" * 4000)] * 3)),
    }


def main():
    which, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if which != "hbone":
        sys.exit("usage: h2seeds.py hbone DIR")
    seeds = hbone()
    for i, (name, body) in enumerate(sorted(seeds.items())):
        # mode byte 0: the target sends the preface itself; one seed carries its own
        mode = 0
        if name == "goaway":
            mode, body = 1, PREFACE + body
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([mode]) + struct.pack("<I", 0x9e3779b9 * (i + 1) & 0xffffffff) + body)
    if which == "hbone":
        # a small send queue that fills and drains
        with open(os.path.join(out, "slow-reader"), "wb") as f:
            f.write(bytes([2]) + struct.pack("<I", 77) + seeds["connect-data-eof"] + data(1, b"z" * 1000))


main()
