#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Open-loop load for the upgrade test (tests/e2e/test-upgrade.sh), standard library only.

upgrade-load.py --addr A --port P [--rate R] [--seconds S] [--transfers N] [--mib M]

Opens R new connections a second for S seconds, on schedule whatever the answers do (open
loop): each sends "r I", must read back the lab peer's answer line naming it (within 30 s: a
slow answer on a loaded machine is not a failure, a reset or refusal is), and closes. Beside
them, N connections each send M MiB of a deterministic stream to the peer's "sink" and must get
back its byte count and sha256. Writes "start" when it begins, then one line at the end:
"requests R failed F transfers T bad B" and, for each failure, "fail WHAT: WHY".
"""
import argparse
import asyncio
import hashlib
import sys
import time


async def request(addr, port, i, fails):
    try:
        # Generous: on a loaded machine an answer may be slow; a failure is a reset or refusal.
        r, w = await asyncio.wait_for(asyncio.open_connection(addr, port), 30)
        w.write(b"r %d\n" % i)
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 30)
        w.close()
        if not line.startswith(b"peer ") or not line.rstrip().endswith(b"msg r %d" % i):
            fails.append("request %d: answer %r" % (i, line[:80]))
    except Exception as e:  # noqa: BLE001 - every failure counts, whatever it is
        fails.append("request %d: %s %s" % (i, type(e).__name__, e))


async def transfer(addr, port, k, mib, fails):
    block = hashlib.sha256(b"block %d" % k).digest() * 2048  # 64 KiB
    h = hashlib.sha256()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(addr, port), 5)
        w.write(b"sink\n")
        for _ in range(mib * 16):
            w.write(block)
            h.update(block)
            await w.drain()
        w.write_eof()
        line = await asyncio.wait_for(r.readline(), 120)
        w.close()
        want = "sink %d %s" % (mib << 20, h.hexdigest())
        if line.decode(errors="replace").strip() != want:
            fails.append("transfer %d: answer %r" % (k, line[:100]))
            return False
        return True
    except Exception as e:  # noqa: BLE001
        fails.append("transfer %d: %s %s" % (k, type(e).__name__, e))
        return False


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--transfers", type=int, default=10)
    ap.add_argument("--mib", type=int, default=64)
    a = ap.parse_args()
    fails = []
    print("start", flush=True)
    xfers = [asyncio.ensure_future(transfer(a.addr, a.port, k, a.mib, fails))
             for k in range(a.transfers)]
    reqs = []
    t0 = time.monotonic()
    n = int(a.rate * a.seconds)
    for i in range(n):
        delay = t0 + i / a.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        reqs.append(asyncio.ensure_future(request(a.addr, a.port, i, fails)))
    await asyncio.gather(*reqs)
    ok = await asyncio.gather(*xfers)
    print("requests %d failed %d transfers %d bad %d" % (
        n, sum(1 for f in fails if f.startswith("request")), len(ok),
        sum(1 for x in ok if not x)))
    for f in fails[:20]:
        print("fail " + f)


asyncio.run(main())
