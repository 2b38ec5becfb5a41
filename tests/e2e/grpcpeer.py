#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""gRPC server and client for the waypoint tests, on Debian's python3-grpcio (h2c, no TLS: the
mesh carries it in HBONE). Messages are raw bytes (no protobuf), through generic handlers.

serve --name NAME --port PORT
    /amesh.Echo/Unary   answers b"NAME:" + request, with the request's x-canary metadata echoed
                        in the trailing metadata; /amesh.Echo/Chat answers every message of a
                        bidirectional stream the same way, in order; /amesh.Echo/Fail ends with
                        NOT_FOUND and the details "no such thing"; /amesh.Echo/Secret answers like
                        Unary; /amesh.Echo/Slow answers like Unary after 2 s; /amesh.Echo/Flaky
                        ends with UNAVAILABLE the first time it gets a request, then answers like
                        Unary; /amesh.Echo/Late the same with a head before the status (not
                        Trailers-Only). --log FILE: one line per call, "METHOD REQUEST". Prints
                        "listening PORT".
call --target HOST:PORT --method M [--count N] [--metadata K=V ...] [--stream N] [--size B]
     [--deadline S]
    Unary (N calls, one channel): prints one line per distinct answer prefix ("echo-a 7") or
    "status CODE details" per failure. --stream N: one Chat stream of N messages of B bytes;
    prints "stream N ok" when every answer came back in order, else what differed.
"""
import argparse
import sys
import time
from concurrent import futures

import grpc


def serve(a):
    name = a.name.encode()
    seen, seen_late = set(), set()

    def log(method, req):
        if a.log:
            with open(a.log, "a") as f:
                f.write("%s %s\n" % (method, req.decode(errors="replace")))

    def unary(req, ctx):
        log("Unary", req)
        return answer(req, ctx)

    def answer(req, ctx):
        md = dict(ctx.invocation_metadata())
        ctx.set_trailing_metadata((("x-served-by", a.name), ("x-canary", md.get("x-canary", "-"))))
        return name + b":" + req

    def chat(it, ctx):
        for req in it:
            yield name + b":" + req

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def slow(req, ctx):
        log("Slow", req)
        time.sleep(2)
        return name + b":" + req

    def late(req, ctx):
        log("Late", req)
        if req not in seen_late:
            seen_late.add(req)
            # A head first, then the status in trailers: no Trailers-Only answer.
            ctx.send_initial_metadata((("x-late", "1"),))
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return answer(req, ctx)

    def flaky(req, ctx):
        log("Flaky", req)
        if req not in seen:
            seen.add(req)
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return answer(req, ctx)

    ident = (lambda b: b)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Secret": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky, ident, ident),
        "Late": grpc.unary_unary_rpc_method_handler(late, ident, ident),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, ident, ident),
    }
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("amesh.Echo", handlers),))
    port = srv.add_insecure_port("[::]:%d" % a.port)
    srv.start()
    print("listening %d" % port, flush=True)
    srv.wait_for_termination()


def call(a):
    md = tuple(tuple(kv.split("=", 1)) for kv in a.metadata)
    with grpc.insecure_channel(a.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        if a.stream:
            f = ch.stream_stream("/amesh.Echo/Chat")
            msgs = [(b"%06d" % i) + b"x" * max(0, a.size - 6) for i in range(a.stream)]
            try:
                got = list(f(iter(msgs), metadata=md, timeout=30))
            except grpc.RpcError as e:
                print("status %s %s" % (e.code().name, e.details()))
                return 1
            bad = [i for i, (m, g) in enumerate(zip(msgs, got)) if not g.endswith(b":" + m)]
            if len(got) == len(msgs) and not bad:
                print("stream %d ok %s" % (len(got), got[0].split(b":")[0].decode()))
                return 0
            print("stream got %d of %d, first bad %s" % (len(got), len(msgs), bad[:1]))
            return 1
        f = ch.unary_unary(a.method)
        counts = {}
        for i in range(a.count):
            try:
                resp, c = f.with_call(b"hello %d" % i, metadata=md, timeout=a.deadline)
                key = resp.split(b":")[0].decode()
                tm = dict(c.trailing_metadata())
                if resp != key.encode() + b":hello %d" % i or tm.get("x-served-by") != key:
                    key = "garbled"
            except grpc.RpcError as e:
                key = "status %s %s" % (e.code().name, e.details())
            counts[key] = counts.get(key, 0) + 1
        for k in sorted(counts):
            print("%s %d" % (k, counts[k]))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=9090)
    s.add_argument("--log")
    c = sub.add_parser("call")
    c.add_argument("--target", required=True)
    c.add_argument("--method", default="/amesh.Echo/Unary")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--metadata", action="append", default=[])
    c.add_argument("--stream", type=int, default=0)
    c.add_argument("--size", type=int, default=16)
    c.add_argument("--deadline", type=float, default=10)
    a = p.parse_args()
    if a.cmd == "serve":
        serve(a)
        return 0
    return call(a)


if __name__ == "__main__":
    sys.exit(main())
