#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Writes the seed corpus of tests/fuzz/fuzz-l7h2: h2c client byte streams as a real client sends
# them (the h2 module's connection and HPACK encoder, Huffman included), each after the target's
# 5-byte mode and seed prefix (tests/fuzz/fuzz-l7h2.c). Needs python3-h2 (Debian).
# Usage: l7h2seeds.py DIR
import os
import struct
import sys

import h2.config
import h2.connection
import h2.settings


def client(preface=True):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                               validate_outbound_headers=False,
                                                               normalize_outbound_headers=False))
    c.initiate_connection()
    out = c.data_to_send()
    if not preface:
        out = out[len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"):]
    return c, out


def req(method, path, auth="10.96.0.1:80", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path), (":authority", auth)] + list(extra)


def seeds():
    s = {}

    def one(name, fn, mode=0):
        c, out = client(preface=bool(mode & 1))
        fn(c)
        s[name] = (mode, out + c.data_to_send())

    one("get", lambda c: c.send_headers(1, req("GET", "/"), end_stream=True))
    one("get-preface", lambda c: c.send_headers(1, req("GET", "/index.html"), end_stream=True), mode=1)

    def post(c):
        c.send_headers(1, req("POST", "/api/items", extra=[("content-type", "application/json")]))
        c.send_data(1, b'{"a": 1}' * 100)
        c.send_data(1, b"", end_stream=True)
    one("post-api", post)

    def many(c):
        for i, p in enumerate(["/login", "/api/v1", "/r/12?tag=a", "/old/x", "/fault", "/mirror/a",
                               "/admin", "/a/../b", "/%2e%2e/x", "/x#frag"]):
            c.send_headers(1 + 2 * i, req("GET", p, extra=[("x-canary", "true"), ("cookie", "a=b"),
                                                         ("x-debug", "1")]), end_stream=True)
    one("many-routes", many)

    def grpc(c):
        c.send_headers(1, req("POST", "/pkg.Service/Method", auth="10.96.0.2:50051",
                              extra=[("content-type", "application/grpc"), ("te", "trailers"),
                                     ("grpc-timeout", "1S")]))
        c.send_data(1, b"\x00\x00\x00\x00\x03abc", end_stream=True)
    one("grpc", grpc, mode=4)

    def trailers(c):
        c.send_headers(1, req("POST", "/api/up"))
        c.send_data(1, b"x" * 1000)
        c.send_headers(1, [("x-checksum", "abc")], end_stream=True)
    one("request-trailers", trailers)

    def reset(c):
        c.send_headers(1, req("POST", "/mirror/x"))
        c.send_data(1, b"y" * 3000)
        c.reset_stream(1)
        c.send_headers(3, req("GET", "/api/after"), end_stream=True)
        c.ping(b"12345678")
    one("reset-mid-body", reset)

    def big(c):
        c.send_headers(1, req("GET", "/login", extra=[("x-pad-%d" % i, "p" * 600) for i in range(30)]),
                       end_stream=True)
    one("big-head", big)

    def bad(c):
        c.send_headers(1, [(":method", "CONNECT"), (":authority", "10.96.0.1:80")], end_stream=True)
        c.send_headers(3, req("GET", "/" + "l" * 3000), end_stream=True)
        c.send_headers(5, req("GET", "/fault", auth="other.example:80"), end_stream=True)
    one("refused", bad)

    def window(c):
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
        for i in range(5):
            c.send_headers(1 + 2 * i, req("GET", "/api/big%d" % i), end_stream=True)
        c.increment_flow_control_window(1 << 20)
    one("small-window", window, mode=8)

    def goaway(c):
        c.send_headers(1, req("GET", "/api/a"), end_stream=True)
        c.close_connection()
    one("goaway", goaway)

    def direct(c):
        c.send_headers(1, req("GET", "/health", auth="10.1.1.2:8080"), end_stream=True)
    one("direct-workload", direct, mode=6)

    def expect(c):
        c.send_headers(1, req("PUT", "/api/put", extra=[("expect", "100-continue"), ("content-length", "5")]))
        c.send_data(1, b"hello", end_stream=True)
    one("expect-continue", expect, mode=2)
    return s


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: l7h2seeds.py DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, (name, (mode, body)) in enumerate(sorted(seeds().items())):
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([mode]) + struct.pack("<I", 0x9e3779b9 * (i + 1) & 0xffffffff) + body)


main()
