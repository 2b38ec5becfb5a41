#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Counts the TLS records an HBONE server sends, from the outside: a TCP relay between a
python3-h2 client (Python's ssl) and the server parses the record headers of the server's bytes.

  coalesce.py pings --port P --ca CA --cert C --key K [--pings N] [--cipher SUITE]
      After the HTTP/2 preface, sends N PING frames in one TLS record and waits for the N ACKs.
      Prints "acks A records R bytes B": R application-data records carried the A ACKs (and
      whatever else the server sent meanwhile: nothing is expected).
  coalesce.py bulk --port P --ca CA --cert C --key K --authority HOST:PORT [--bytes N]
      One CONNECT stream to a flood upstream; reads N bytes. Prints "got N records R full F
      share S": F of the R application-data records carried 16384 bytes of plaintext, and
      those F records carried S percent of all the records' ciphertext.
"""
import argparse
import socket
import ssl
import struct
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events

# TLS 1.2 AEAD overhead per record: 8 bytes of explicit nonce (AES-GCM) and a 16-byte tag.
OVERHEAD = {"gcm": 24, "chacha": 16}


class Relay:
    """One connection: client <-> relay <-> server; records of the server's side counted."""

    def __init__(self, port):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.server_port = port
        self.lock = threading.Lock()
        self.app_records = []  # ciphertext lengths of the server's application-data records
        threading.Thread(target=self.run, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.app_records), sum(self.app_records), list(self.app_records)

    def run(self):
        c, _ = self.ls.accept()
        u = socket.create_connection(("127.0.0.1", self.server_port))
        threading.Thread(target=self.pump, args=(c, u, False), daemon=True).start()
        self.pump(u, c, True)

    def pump(self, src, dst, parse):
        buf = b""
        while True:
            try:
                d = src.recv(1 << 16)
            except OSError:
                d = b""
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            dst.sendall(d)
            if not parse:
                continue
            buf += d
            while len(buf) >= 5:
                typ, _, n = struct.unpack("!BHH", buf[:5])
                if len(buf) < 5 + n:
                    break
                if typ == 23:
                    with self.lock:
                        self.app_records.append(n)
                buf = buf[5 + n:]


def connect(a, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(a.ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["h2"])
    if a.cipher:
        ctx.set_ciphers(a.cipher)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    s.settimeout(a.timeout)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
    conn.initiate_connection()
    conn.increment_flow_control_window(16 << 20)
    s.sendall(conn.data_to_send())
    return s, conn


def settle(s, conn, secs):
    """Reads (and answers) whatever the server sends for secs seconds."""
    end = time.time() + secs
    s.settimeout(0.05)
    while time.time() < end:
        try:
            d = s.recv(1 << 16)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        if not d:
            break
        conn.receive_data(d)
        out = conn.data_to_send()
        if out:
            s.sendall(out)


def pings(a):
    r = Relay(a.port)
    s, conn = connect(a, r.port)
    settle(s, conn, 0.5)  # SETTINGS both ways and their ACKs, the window updates
    n0, _, _ = r.count()
    for i in range(a.pings):
        conn.ping(struct.pack("!Q", i))
    data = conn.data_to_send()
    assert len(data) < 16384, "the pings must fit one record"
    s.sendall(data)  # one TLS record
    acks = 0
    s.settimeout(a.timeout)
    while acks < a.pings:
        d = s.recv(1 << 16)
        if not d:
            break
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.PingAckReceived):
                acks += 1
    time.sleep(0.2)
    n1, _, lens = r.count()
    print("acks %d records %d bytes %d" % (acks, n1 - n0, sum(lens[n0:])), flush=True)
    return 0 if acks == a.pings else 1


def bulk(a):
    r = Relay(a.port)
    s, conn = connect(a, r.port)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", a.authority)])
    s.sendall(conn.data_to_send())
    got = 0
    while got < a.bytes:
        d = s.recv(1 << 16)
        if not d:
            break
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.DataReceived):
                got += len(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    cipher = s.cipher()[0]
    over = OVERHEAD["chacha" if "CHACHA" in cipher else "gcm"]
    _, _, lens = r.count()
    full = sum(1 for n in lens if n == 16384 + over)
    share = 100.0 * full * (16384 + over) / max(1, sum(lens))
    print("got %d records %d full %d share %.0f" % (got, len(lens), full, share), flush=True)
    return 0 if got >= a.bytes else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pings", "bulk"):
        sp = sub.add_parser(name)
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--ca", required=True)
        sp.add_argument("--cert", required=True)
        sp.add_argument("--key", required=True)
        sp.add_argument("--cipher")
        sp.add_argument("--timeout", type=float, default=30)
        if name == "pings":
            sp.add_argument("--pings", type=int, default=50)
        else:
            sp.add_argument("--authority", required=True)
            sp.add_argument("--bytes", type=int, default=8 << 20)
    a = p.parse_args()
    return pings(a) if a.cmd == "pings" else bulk(a)


if __name__ == "__main__":
    sys.exit(main())
