#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Python's ssl (OpenSSL) as the independent peer of amesh's TLS record layer (test-record.sh).

  recpeer.py client --port P --ca CA --cert C --key K --cipher NAME (--send N | --recv)
      send: N bytes, then close_notify and wait for the peer's (unwrap); prints
      "sent N SHA256 CIPHER unwrap-ok" or the error. recv: reads to the peer's close_notify
      (an EOF without one is an error here); prints "got N SHA256 CIPHER close_notify".
      --streams K runs K such connections at once and prints one line each. --read-after: after
      sending, read (and print the error an alert raises) instead of closing.
  recpeer.py server --ca CA --cert C --key K --cipher NAME (--send N | --recv)
      one connection, the same lines; prints "listening PORT" first.
  recpeer.py proxy --port P --mode flip|oversize
      TCP relay to 127.0.0.1:P that, in the client's direction, after its first application data
      record, flips one bit in the ciphertext of its third one (flip) or sends a record header
      announcing 16384 + 2048 + 1 bytes instead (oversize). Prints "listening PORT".
"""
import argparse
import hashlib
import os
import socket
import ssl
import sys
import threading

BLOCK = 1 << 20
SKEW = 4093


def make_source():
    # A random block longer than 1 MiB sent from a moving offset: no two chunks are alike, so
    # dropped, repeated or reordered records change the hash.
    return memoryview(os.urandom(BLOCK + SKEW))


def ctx_for(a, server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(a.cipher)
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False  # SPIFFE IDs, no DNS names
    return ctx


def send(s, n):
    src = make_source()
    h = hashlib.sha256()
    i = sent = 0
    while sent < n:
        off = (i * 1237) % SKEW
        k = min(BLOCK, n - sent)
        chunk = src[off:off + k]
        s.sendall(chunk)
        h.update(chunk)
        sent += k
        i += 1
    return sent, h.hexdigest()


def recv(s):
    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(262144)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def session(s, a):
    cipher = s.cipher()[0]
    try:
        if a.send is not None:
            n, digest = send(s, a.send)
            if a.read_after:
                # The peer is expected to answer with an alert: read it before closing.
                d = s.recv(1)
                return "read after send: %r" % d
            s.unwrap()  # our close_notify, then the peer's
            return "sent %d %s %s unwrap-ok" % (n, digest, cipher)
        n, digest = recv(s)
        return "got %d %s %s close_notify" % (n, digest, cipher)
    except (ssl.SSLError, OSError) as e:
        return "error %s: %s" % (type(e).__name__, e)


def client_one(a, out, idx):
    try:
        raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
        s = ctx_for(a, False).wrap_socket(raw, suppress_ragged_eofs=False)
        out[idx] = session(s, a)
        s.close()
    except (ssl.SSLError, OSError) as e:
        out[idx] = "error %s: %s" % (type(e).__name__, e)


def client(a):
    out = [None] * a.streams
    ts = [threading.Thread(target=client_one, args=(a, out, i)) for i in range(a.streams)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for line in out:
        print(line, flush=True)


def server(a):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    print("listening %d" % ls.getsockname()[1], flush=True)
    raw, _ = ls.accept()
    raw.settimeout(a.timeout)
    try:
        s = ctx_for(a, True).wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
    except (ssl.SSLError, OSError) as e:
        print("error %s: %s" % (type(e).__name__, e), flush=True)
        return
    print(session(s, a), flush=True)
    s.close()


def relay_up(c, u, mode):
    """Client to upstream, record by record, with the one change the mode asks for."""
    buf = b""
    app = 0
    dead = False
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
            out = b""
            while len(buf) >= 5:
                n = 5 + int.from_bytes(buf[3:5], "big")
                if len(buf) < n:
                    break
                rec = bytearray(buf[:n])
                buf = buf[n:]
                if rec[0] == 23:
                    app += 1
                    if app == 3 and mode == "flip":
                        rec[5 + 20] ^= 0x04  # inside the ciphertext
                    elif app == 3 and mode == "oversize":
                        rec = bytearray(b"\x17\x03\x03" + (16384 + 2048 + 1).to_bytes(2, "big"))
                        rec += b"\0" * 100
                out += bytes(rec)
            if out and not dead:
                try:
                    u.sendall(out)
                except OSError:
                    dead = True  # keep reading: the client must not block before the alert
    except OSError:
        pass
    try:
        u.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay_down(u, c):
    try:
        while True:
            d = u.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    try:
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def proxy(a):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    print("listening %d" % ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        u = socket.create_connection(("127.0.0.1", a.port))
        threading.Thread(target=relay_up, args=(c, u, a.mode), daemon=True).start()
        threading.Thread(target=relay_down, args=(u, c), daemon=True).start()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["client", "server", "proxy"])
    p.add_argument("--port", type=int)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--cipher", default="ECDHE-ECDSA-AES256-GCM-SHA384")
    p.add_argument("--send", type=int)
    p.add_argument("--recv", action="store_true")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--read-after", action="store_true")
    p.add_argument("--mode", default="flip")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    {"client": client, "server": server, "proxy": proxy}[a.role](a)


if __name__ == "__main__":
    sys.exit(main())
