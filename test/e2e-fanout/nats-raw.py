#!/usr/bin/env python3
"""A stranger on a NATS server, in NATS's text protocol over a plain socket
(no client library: what anyone with a socket can do).  Used by
test-e2e-fanout-nats-trust.sh:

  nats-raw.py URL put SUBJECT PAYLOAD...    publish each PAYLOAD on SUBJECT
                                            (a KV put is a publish on
                                            $KV.<bucket>.<key>)
  nats-raw.py URL cancel SUBJECT N SECS     read SUBJECT (a service's) for
                                            SECS, and for each of the first N
                                            requests seen publish forged
                                            cancels on _UVP.CANCEL.SUBJECT:
                                            its reply subject without the
                                            token its Uvp-Cancel-Token header
                                            holds, then with a wrong one;
                                            prints how many

URL: nats://[user:password@]host:port.  Exits 1 on -ERR (the server's
refusal: a permission), printing it."""
import socket
import sys
import time
import urllib.parse


class Reader:
    """Lines and bytes from s, None when nothing came within s's timeout."""

    def __init__(self, s):
        self.s, self.buf = s, b""

    def fill(self):
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return False
        if not data:
            sys.exit("connection closed")
        self.buf += data
        return True

    def readline(self):
        while b"\r\n" not in self.buf:
            if not self.fill():
                return None
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def connect(url):
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=5)
    f = Reader(s)
    f.readline()  # INFO
    auth = ""
    if u.username:
        auth = ',"user":"%s","pass":"%s"' % (
            urllib.parse.unquote(u.username),
            urllib.parse.unquote(u.password or ""))
    s.sendall(('CONNECT {"verbose":false,"pedantic":false,"headers":true,'
               '"no_responders":true%s}\r\nPING\r\n' % auth).encode())
    line = f.readline()
    if line is None or not line.startswith(b"PONG"):
        sys.exit("refused: %s" % (line or b"").decode().strip())
    return s, f


def ping(s, f):
    """Flush, and fail on any -ERR the server sent meanwhile."""
    s.sendall(b"PING\r\n")
    while True:
        line = f.readline()
        if line is None:
            sys.exit("no PONG")
        if line.startswith(b"-ERR"):
            print(line.decode().strip())
            sys.exit(1)
        if line.startswith(b"PONG"):
            return


def hpub(s, subject, reply, headers, payload):
    h = "NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in headers) + "\r\n"
    hb, pb = h.encode(), payload.encode()
    s.sendall(("HPUB %s %s%d %d\r\n" % (subject, reply + " " if reply else "",
                                        len(hb), len(hb) + len(pb))).encode()
              + hb + pb + b"\r\n")


def main():
    url, what = sys.argv[1], sys.argv[2]
    s, f = connect(url)
    if what == "put":
        for payload in sys.argv[4:]:
            hpub(s, sys.argv[3], None, [], payload)
        ping(s, f)
        return
    subject, n, secs = sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    s.sendall(("SUB %s 1\r\n" % subject).encode())
    ping(s, f)
    s.settimeout(0.2)
    sent, end = 0, time.time() + secs
    while time.time() < end and sent < n:
        line = f.readline()
        if line is None:
            continue
        if line.startswith(b"PING"):
            s.sendall(b"PONG\r\n")
            continue
        if line.startswith(b"-ERR"):
            print(line.decode().strip())
            sys.exit(1)
        if not (line.startswith(b"HMSG") or line.startswith(b"MSG")):
            continue
        parts = line.split()
        reply = parts[3].decode() if len(parts) >= (6 if parts[0] == b"HMSG" else 5) else None
        s.settimeout(5)
        body = f.read(int(parts[-1]) + 2)
        s.settimeout(0.2)
        if reply is None:
            continue
        head = body[:int(parts[-2])] if parts[0] == b"HMSG" else b""
        if b"\r\nUvp-Cancel-Token: " not in head:
            print("the request to %s carries no token" % reply)
            sys.exit(1)
        for token in (None, "0" * 32):
            headers = [("Uvp-Cause", "forged")]
            if token is not None:
                headers.append(("Uvp-Cancel-Token", token))
            hpub(s, "_UVP.CANCEL." + subject, None, headers, reply)
        sent += 1
    ping(s, f)
    print(sent)


main()
