#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 flow-control peers for the waypoint tests, on Debian's python3-h2 (h2c, no TLS).

hole --port PORT
    An h2c server that advertises a 16-byte stream window and never returns any of it: what a
    client sends through a proxy piles up in the proxy. Prints "listening PORT".
cancel --addr ADDR --port PORT --streams N --path P --then Q
    One h2c connection: N POSTs to P, each sending for 0.3 s as much as the windows allow and
    then cancelled (RST_STREAM CANCEL); then a POST to Q with a 16 KiB body on the same
    connection. Prints "status S" for Q's answer, or "stalled SENT of 16384" when the
    connection's window never lets its body through (5 s).
"""
import argparse
import selectors
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


def hole(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", a.port))
    srv.listen(64)
    print("listening %d" % a.port, flush=True)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                s, _ = srv.accept()
                c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
                c.initiate_connection()
                c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16})
                s.sendall(c.data_to_send())
                sel.register(s, selectors.EVENT_READ, c)
                continue
            s, c = key.fileobj, key.data
            try:
                d = s.recv(65536)
            except OSError:
                d = b""
            if not d:
                sel.unregister(s)
                s.close()
                continue
            # Parsed (settings are answered) but no DATA is acknowledged: windows stay spent.
            try:
                c.receive_data(d)
            except Exception:
                pass
            out = c.data_to_send()
            if out:
                try:
                    s.sendall(out)
                except OSError:
                    pass


def cancel(a):
    s = socket.create_connection((a.addr, a.port), timeout=5)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())

    def pump(until, deadline):
        s.settimeout(0.02)
        while time.time() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                d = None
            if d == b"":
                return "closed"
            evs = c.receive_data(d) if d else []
            out = c.data_to_send()
            if out:
                s.sendall(out)
            r = until(evs)
            if r:
                return r
        return None

    pump(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs),
         time.time() + 2)
    hdrs = lambda path: [(":method", "POST"), (":scheme", "http"),
                         (":authority", "%s:%d" % (a.addr, a.port)), (":path", path)]
    for _ in range(a.streams):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, hdrs(a.path))
        t_end, sent = time.time() + 0.3, 0
        while time.time() < t_end and sent < 256 * 1024:
            n = min(c.local_flow_control_window(sid), c.max_outbound_frame_size)
            if n > 0:
                c.send_data(sid, b"x" * n)
                sent += n
                s.sendall(c.data_to_send())
            pump(lambda evs: None, time.time() + 0.02)
        c.reset_stream(sid, 8)
        s.sendall(c.data_to_send())
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, hdrs(a.then))
    body, sent = b"y" * 16384, 0
    status = []

    def step(evs):
        nonlocal sent
        for e in evs:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                status.append(dict(e.headers).get(b":status", b"?").decode())
        if sent < len(body):
            n = min(len(body) - sent, c.local_flow_control_window(sid),
                    c.max_outbound_frame_size)
            if n > 0:
                c.send_data(sid, body[sent:sent + n], end_stream=sent + n == len(body))
                sent += n
                s.sendall(c.data_to_send())
        return status[0] if status else None

    r = step([]) or pump(step, time.time() + 5)
    print("status %s" % r if r and r != "closed" else "stalled %d of %d" % (sent, len(body)))
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hole")
    h.add_argument("--port", type=int, required=True)
    c = sub.add_parser("cancel")
    c.add_argument("--addr", required=True)
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--streams", type=int, default=24)
    c.add_argument("--path", default="/hole")
    c.add_argument("--then", default="/ok")
    a = p.parse_args()
    if a.cmd == "hole":
        hole(a)
        return 0
    return cancel(a)


if __name__ == "__main__":
    sys.exit(main())
