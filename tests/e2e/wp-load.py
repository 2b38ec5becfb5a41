#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 server, loads and their analysis for tests/e2e/test-waypoint-ha.sh and
test-wp-workers.sh (stdlib only).

serve --port P --name NAME [--delay MS]
    Keep-alive HTTP/1.1: every request is answered 200 "NAME PATH\\n" after MS milliseconds.
    Prints "listening P".
load --url http://ADDR[:PORT]/PATH --rate R --seconds S --out FILE [--timeout T]
    Open loop: R new connections a second for S seconds, on schedule whatever the answers do,
    each one GET with Connection: close, T s (default 5) to connect and as long to answer. Prints "start" when it begins; FILE gets
    one line per request, "START END OK WHY" (wall-clock seconds; OK 1 for a 200 answer).
analyze --results FILE --before T0 --after T1
    The requests around an event between wall-clock times T0 and T1 (a waypoint killed): prints
    "requests N failed F inflight K late L", K those open across the event (started before T1,
    ended after T0), L the failures that started after T1; then "fail WHY" for a few failures.
get --url URL
    One GET; prints the status code (0 when there is no answer).
many --url URL --count N [--expect STATUS] [--timeout S]
    N connections at once, one keep-alive GET on each as soon as it is up, every connection held
    open until all are answered (N concurrent connections), the whole within S seconds (default 60). Prints
    "ok K of N", K the answers with STATUS (default 200), then "fail WHY" for a few others.
"""
import argparse
import asyncio
import sys
import time
import urllib.parse


async def serve(a):
    async def handle(r, w):
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].split()
                path = line[1].decode() if len(line) > 1 else "?"
                close = b"connection: close" in head.lower()
                await asyncio.sleep(a.delay / 1000.0)
                body = ("%s %s\n" % (a.name, path)).encode()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        b"%s\r\n" % (len(body), b"Connection: close\r\n" if close else b"") + body)
                await w.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, None, a.port)  # both families
    print("listening %d" % srv.sockets[0].getsockname()[1], flush=True)
    async with srv:
        await srv.serve_forever()


async def one(host, port, path, rec, timeout=5):
    rec.append(time.time())
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        w.write(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
        w.close()
        status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else b""
        if status == b"200":
            rec += [time.time(), 1, "-"]
        else:
            rec += [time.time(), 0, "answer:%r" % data[:40]]
    except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
        rec += [time.time(), 0, "%s:%s" % (type(e).__name__, str(e).replace(" ", "_"))]


async def load(a):
    u = urllib.parse.urlsplit(a.url)
    host, port, path = u.hostname, u.port or 80, u.path or "/"
    recs = []
    tasks = []
    print("start", flush=True)
    t0 = time.monotonic()
    for i in range(int(a.rate * a.seconds)):
        delay = t0 + i / a.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rec = []
        recs.append(rec)
        tasks.append(asyncio.ensure_future(one(host, port, path, rec, a.timeout)))
    await asyncio.gather(*tasks)
    with open(a.out, "w") as f:
        for r in recs:
            f.write("%.6f %.6f %d %s\n" % tuple(r))
    print("done %d" % len(recs), flush=True)


async def many(a):
    u = urllib.parse.urlsplit(a.url)
    host, port, path = u.hostname, u.port or 80, u.path or "/"
    whys = []
    answered = [0]
    all_in = asyncio.Event()

    async def one_of_many(i):
        # The request goes as soon as the connection is up (a client that sends nothing for
        # [waypoint] protocol_detection_timeout would be relayed at L4), then the connection
        # stays open until every one is answered.
        w = None
        try:
            r, w = await asyncio.open_connection(host, port)
            w.write(("GET %s?i=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, i, host)).encode())
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            await r.readexactly(n)
            return status
        except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
            return "%s:%s" % (type(e).__name__, e)
        finally:
            answered[0] += 1
            if answered[0] == a.count:
                all_in.set()
            await all_in.wait()
            if w is not None:
                w.close()

    async def run():
        res = await asyncio.gather(*[one_of_many(i) for i in range(a.count)])
        ok = 0
        for x in res:
            if x == str(a.expect):
                ok += 1
            else:
                whys.append("answer: %r" % (x,))
        return ok

    try:
        ok = await asyncio.wait_for(run(), a.timeout)
    except asyncio.TimeoutError:
        ok = 0
        whys.append("not all answered in %g s" % a.timeout)
    print("ok %d of %d" % (ok, a.count), flush=True)
    for w in whys[:5]:
        print("fail " + w)


def analyze(a):
    n = failed = inflight = late = 0
    whys = []
    for line in open(a.results):
        start, end, ok, why = line.split(" ", 3)
        start, end, ok = float(start), float(end), int(ok)
        n += 1
        if start < a.after and end > a.before:
            inflight += 1
        if not ok:
            failed += 1
            whys.append("%.3f %s" % (start - a.before, why.strip()))
            if start > a.after:
                late += 1
    print("requests %d failed %d inflight %d late %d" % (n, failed, inflight, late))
    for w in whys[:10]:
        print("fail " + w)


def get(a):
    import http.client
    u = urllib.parse.urlsplit(a.url)
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
        c.request("GET", u.path or "/")
        print(c.getresponse().status)
    except Exception:  # noqa: BLE001
        print(0)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", required=True)
    s.add_argument("--delay", type=float, default=0)
    ld = sub.add_parser("load")
    ld.add_argument("--url", required=True)
    ld.add_argument("--rate", type=float, default=100)
    ld.add_argument("--seconds", type=float, default=10)
    ld.add_argument("--out", required=True)
    ld.add_argument("--timeout", type=float, default=5)
    m = sub.add_parser("many")
    m.add_argument("--url", required=True)
    m.add_argument("--count", type=int, default=1000)
    m.add_argument("--expect", type=int, default=200)
    m.add_argument("--timeout", type=float, default=60)
    an = sub.add_parser("analyze")
    an.add_argument("--results", required=True)
    an.add_argument("--before", type=float, required=True)
    an.add_argument("--after", type=float, required=True)
    g = sub.add_parser("get")
    g.add_argument("--url", required=True)
    a = ap.parse_args()
    if a.cmd == "serve":
        asyncio.run(serve(a))
    elif a.cmd == "load":
        asyncio.run(load(a))
    elif a.cmd == "many":
        asyncio.run(many(a))
    elif a.cmd == "analyze":
        analyze(a)
    else:
        get(a)


if __name__ == "__main__":
    sys.exit(main())
