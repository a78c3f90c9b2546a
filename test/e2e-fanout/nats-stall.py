#!/usr/bin/env python3
"""nats-stall.py MODE PORTFILE: a "NATS server" that holds its clients,
on a free port of 127.0.0.1 (written to PORTFILE once it listens):
  nopong     sends INFO, reads CONNECT and PING, never answers
  tlsstall   sends INFO with tls_required, then never speaks TLS
  mute       a full handshake (PONG), then answers nothing ever again
One thread per client; runs until killed."""
import json
import socket
import sys
import threading
import time

mode, portfile = sys.argv[1], sys.argv[2]
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
port = s.getsockname()[1]
INFO = b"INFO " + json.dumps({
    "server_id": "STALL", "version": "2.9.10", "proto": 1, "headers": True,
    "max_payload": 1048576, "host": "127.0.0.1", "port": port,
    "tls_required": mode == "tlsstall"}).encode() + b"\r\n"


def client(c):
    try:
        c.sendall(INFO)
        if mode == "tlsstall":
            time.sleep(3600)
        buf = b""
        while b"PING\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
        if mode == "nopong":
            time.sleep(3600)
        c.sendall(b"PONG\r\n")
        while c.recv(65536):
            pass
    except OSError:
        pass


with open(portfile + ".tmp", "w") as f:
    f.write("%d\n" % port)
import os  # noqa: E402
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = s.accept()
    threading.Thread(target=client, args=(c,), daemon=True).start()
