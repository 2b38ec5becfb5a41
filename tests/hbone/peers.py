#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Independent peers for the HBONE tests: upstream TCP servers, and an HTTP/2 CONNECT client
built on Debian's python3-h2 and Python's ssl module (not on amesh's code).

  peers.py echo|sink|flood   -- a TCP upstream on 127.0.0.1 (prints "listening PORT")
  peers.py h2 ...            -- CONNECT streams through an HBONE server (see --help)
  peers.py send ...          -- plain TCP client: send bytes, print the sha256 the sink returns
"""
import argparse
import hashlib
import os
import socket
import ssl
import sys
import threading
import time


def serve(kind, flood_bytes, bind="127.0.0.1"):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind, 0))
    ls.listen(2048)
    print("listening", ls.getsockname()[1], flush=True)

    def handle(c):
        try:
            if kind == "echo":
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    c.sendall(d)
                c.shutdown(socket.SHUT_WR)
            elif kind == "sink":
                h = hashlib.sha256()
                n = 0
                while True:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
                c.shutdown(socket.SHUT_WR)
            elif kind == "flood":
                chunk = b"x" * 65536
                sent = 0
                while sent < flood_bytes:
                    c.sendall(chunk)
                    sent += len(chunk)
                c.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def tls_connect(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # mesh identity is the URI SAN, not a DNS name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["h2"])
    if a.cipher:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(a.cipher)
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=30)
    s = ctx.wrap_socket(raw)
    if a.cipher:
        print("cipher %s" % s.cipher()[0], file=sys.stderr, flush=True)
    if s.selected_alpn_protocol() != "h2":
        raise SystemExit("alpn: %r" % s.selected_alpn_protocol())
    return s


def h2client(a):
    import h2.config
    import h2.connection
    import h2.events

    try:
        s = tls_connect(a)
        # TLS 1.2 verifies the client certificate inside the handshake; a refusal shows up here or
        # on the first read.
        # python-h2 4.1 wants :path on every request, CONNECT too (RFC 9113 8.5 says no):
        # outbound validation off, so we send a well-formed CONNECT.
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
        conn.initiate_connection()
        conn.increment_flow_control_window(16 << 20)
        if a.window:
            # A large stream window: then only the proxy's own backpressure can stop the sender.
            import h2.settings
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: a.window})
            conn.increment_flow_control_window(a.window)
        s.sendall(conn.data_to_send())
    except (ssl.SSLError, OSError) as e:
        print("tls-refused", type(e).__name__, e, flush=True)
        return 0
    payload = os.urandom(a.bytes)
    want = {}
    got = {}
    status = {}
    ended = set()
    reset = set()
    for _ in range(a.streams):
        sid = conn.get_next_available_stream_id()
        if a.method == "CONNECT":
            hdrs = [(":method", "CONNECT"), (":authority", a.authority)]
        else:
            hdrs = [(":method", a.method), (":authority", a.authority), (":scheme", "https"),
                    (":path", "/")]
        conn.send_headers(sid, hdrs, end_stream=(a.method != "CONNECT"))
        want[sid] = payload
        got[sid] = bytearray()
    s.sendall(conn.data_to_send())
    if a.stall:
        # A reader that stops reading: hold the connection without reading anything.
        time.sleep(a.stall)
    pending_send = {sid: memoryview(payload) for sid in want} if a.method == "CONNECT" else {}
    deadline = time.time() + a.timeout
    while len(ended | reset) < len(want):
        if time.time() > deadline:
            print("timeout: status %s ended %d reset %d of %d received %d" % (
                ",".join(str(c) for c in sorted(set(status.values()))), len(ended), len(reset),
                len(want), sum(len(g) for g in got.values())), flush=True)
            return 1
        # Send what the windows allow to streams whose tunnel is up.
        for sid in list(pending_send):
            if status.get(sid) != 200 or sid in reset:
                continue
            mv = pending_send[sid]
            while len(mv) > 0:
                w = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                        len(mv))
                if w <= 0:
                    break
                conn.send_data(sid, bytes(mv[:w]))
                mv = mv[w:]
            pending_send[sid] = mv
            if len(mv) == 0:
                conn.end_stream(sid)
                del pending_send[sid]
        out = conn.data_to_send()
        if out:
            s.sendall(out)
        try:
            data = s.recv(1 << 20)
        except ssl.SSLError as e:
            print("tls-refused", type(e).__name__, e, flush=True)
            return 0
        except ConnectionResetError as e:
            print("tls-refused", type(e).__name__, e, flush=True)
            return 0
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                st = int(dict(ev.headers)[":status"])
                status[ev.stream_id] = st
            elif isinstance(ev, h2.events.DataReceived):
                got[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                reset.add(ev.stream_id)
                pending_send.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                print("goaway", ev.error_code, flush=True)
                reset |= set(want) - ended
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    codes = sorted(set(status.values()))
    ok = sum(1 for sid in want if status.get(sid) == 200 and sid in ended and
             bytes(got[sid]) == want[sid])
    print("status", ",".join(str(c) for c in codes), "ok", ok, "of", len(want),
          "reset", len(reset), flush=True)
    s.close()
    return 0


def send(a):
    c = socket.create_connection((a.host, a.port), timeout=300)
    h = hashlib.sha256()
    chunk = os.urandom(1 << 20)
    left = a.bytes
    while left > 0:
        d = chunk[:min(left, len(chunk))]
        c.sendall(d)
        h.update(d)
        left -= len(d)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        reply += d
    print("sent %d %s" % (a.bytes, h.hexdigest()))
    print("got", reply.decode().strip(), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for k in ("echo", "sink", "flood"):
        sp = sub.add_parser(k)
        sp.add_argument("--bytes", type=int, default=1 << 30)
        sp.add_argument("--bind", default="127.0.0.1")
    h = sub.add_parser("h2")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--ca", required=True)
    h.add_argument("--cert")
    h.add_argument("--key")
    h.add_argument("--authority", required=True)
    h.add_argument("--method", default="CONNECT")
    h.add_argument("--streams", type=int, default=1)
    h.add_argument("--bytes", type=int, default=1000)
    h.add_argument("--stall", type=float, default=0)
    h.add_argument("--window", type=int, default=0)
    h.add_argument("--timeout", type=float, default=60)
    h.add_argument("--cipher", help="TLS 1.2 suites only, these (OpenSSL names); "
                   "the one agreed goes to stderr")
    sd = sub.add_parser("send")
    sd.add_argument("--port", type=int, required=True)
    sd.add_argument("--bytes", type=int, required=True)
    sd.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    if a.cmd in ("echo", "sink", "flood"):
        serve(a.cmd, a.bytes, a.bind)
    elif a.cmd == "h2":
        sys.exit(h2client(a))
    else:
        send(a)


if __name__ == "__main__":
    main()
