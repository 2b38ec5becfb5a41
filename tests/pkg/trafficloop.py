#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Traffic during a package upgrade (tests/pkg/test-systemd.sh), standard library only.

trafficloop.py --addr A --port P [--interval S] [--duration S] [--stop-file F] [--timeout S]
    Against a tests/e2e/lab-peer.py server: holds one connection open for the whole run and, every
    S seconds (default 0.05), opens a new one, sends a line and waits for the answer. Runs until
    F exists (checked before each connection) or for --duration seconds (default 60), whichever
    comes first. Prints what the client saw:
      connections N ok N failed N
      errors ERRNAME:COUNT ...           (only when some failed)
      longest_outage_ms N                (first to last failure of the longest run of failures)
      held ok|cut ERRNAME                (the connection open from start to end)
    Exits 0 once it has run; the counts are the result.
"""
import argparse
import errno
import os
import socket
import sys
import time


def once(addr, port, timeout, msg):
    """One connection: returns None when the server's answer line came back, else an error name."""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(msg + b"\n")
            data = b""
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return "EOF"
                data += chunk
        return None if b" msg " in data else "BADANSWER"
    except socket.timeout:
        return "ETIMEDOUT"
    except OSError as e:
        return errno.errorcode.get(e.errno, "OSError") if e.errno else "OSError"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--stop-file", default="")
    ap.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args()

    held_err = None
    held = None
    try:
        held = socket.create_connection((a.addr, a.port), timeout=a.timeout)
        held.sendall(b"held\n")
        got = b""
        while b"\n" not in got:
            chunk = held.recv(4096)
            if not chunk:
                raise OSError(0, "EOF")
            got += chunk
    except OSError as e:
        held_err = errno.errorcode.get(e.errno, "EOF") if e.errno else "EOF"
    print("started", flush=True)

    total = ok = 0
    errors = {}
    run_start = None
    longest = 0.0
    end = time.monotonic() + a.duration
    while time.monotonic() < end:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        t = time.monotonic()
        err = once(a.addr, a.port, a.timeout, b"loop %d" % total)
        total += 1
        if err is None:
            ok += 1
            run_start = None
        else:
            errors[err] = errors.get(err, 0) + 1
            if run_start is None:
                run_start = t
            longest = max(longest, time.monotonic() - run_start)
        time.sleep(max(0.0, a.interval - (time.monotonic() - t)))

    if held is not None and held_err is None:
        try:
            held.settimeout(a.timeout)
            held.sendall(b"still there\n")
            got = held.recv(4096)
            if b"still there" not in got:
                held_err = "EOF" if not got else "BADANSWER"
        except socket.timeout:
            held_err = "ETIMEDOUT"
        except OSError as e:
            held_err = errno.errorcode.get(e.errno, "OSError") if e.errno else "OSError"
        held.close()

    print("connections %d ok %d failed %d" % (total, ok, total - ok))
    if errors:
        print("errors " + " ".join("%s:%d" % kv for kv in sorted(errors.items())))
    print("longest_outage_ms %d" % (longest * 1000))
    print("held ok" if held_err is None else "held cut %s" % held_err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
