#!/usr/bin/env python3
"""End-to-end test of uvp-gateway against real loopback backends.

Usage: test_gateway.py UVP_GATEWAY [UVP_FANOUT]

Backends are `uvp-fanout --serve 0` (the demo server); without UVP_FANOUT
the test is skipped (exit 77).  Covered: fan-out outcomes, keep-alive,
pipelining, client aborts and half-closes, strict parsing (what Debian's
lenient llhttp lets through), the client timeouts (silent, slowloris,
idle keep-alive, a client that does not read), RLIMIT_NOFILE below the
number of clients (idle keep-alive connections closed first, then the
silent ones that waited longest; accept paused when none is idle; 300
silent connections at ulimit -n 256 with probes served within 1 s), a
pipelined flood by clients that never read (backpressure, a probe's
latency, the send timeout), memory with 1000 backends (at start, at a
burst's peak and after it, against one backend), --max-body (a 100 MB
backend body, request bodies), SIGTERM/SIGINT drains; request ids (header, JSON, the
log lines of failing backends), a client reset cancelling its task group
(the backend sees the gateway's connection close), SIGUSR1 listing a stuck
request with its async trace; the load test (wrk, 64 connections, two
workers) with a disconnecting client process alongside, then descriptors
back to their count and RSS steady from one run to the next; and the
timeout, teardown and load-with-cancellations paths under valgrind.
Issue 51: 300 clients that pipeline and never read at ulimit -n 256 (reset
for room once their answers stop moving, probes served within seconds),
stderr a pipe nobody reads through SIGUSR1 dumps (workers still serve,
drops counted, SIGTERM still stops it), an idle backend connection
outliving the deadline of the request that pooled it.
Everything is on 127.0.0.1 and bounded in time; timing assertions are
bounds with wide slack, never exact figures.
UVP_E2E_ONLY=name,... runs only the cases named in main() (with
UVP_E2E_ONLY_VALGRIND=1, those that take a prefix under valgrind).
Standard library only: this script itself may run under valgrind in CI.
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
IO_TIMEOUT = 60.0  # one response; generous for a loaded or valgrind'ed run

failures = []
passed = [0]


def check(cond, what):
    if cond:
        passed[0] += 1
        print("ok      " + what, flush=True)
    else:
        print("FAILED  " + what, flush=True)
        failures.append(what)
    return cond


# ---- processes ---------------------------------------------------------------

class Proc:
    """A child that prints `listening on 127.0.0.1:PORT` once ready."""

    def __init__(self, argv, name, ready_timeout=20.0, env=None):
        self.name = name
        self.errfile = tempfile.TemporaryFile()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                  stderr=self.errfile, text=True, env=env)
        self.port = None
        box = {}

        def read_port():
            for line in self.p.stdout:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m:
                    box["port"] = int(m.group(1))
                    break
        t = threading.Thread(target=read_port, daemon=True)
        t.start()
        t.join(ready_timeout)
        if "port" not in box:
            self.kill()
            raise RuntimeError("%s did not start: %s" % (name, self.stderr()))
        self.port = box["port"]
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=lambda: self.p.stdout.read(),
                         daemon=True).start()

    def alive(self):
        return self.p.poll() is None

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Send sig (None: only wait) and wait; returns the exit status
        (None if it hung)."""
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def refused_port():
    """A port where nothing listens: bind an ephemeral one, then close it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def big_refused_urls(n, size):
    """n URLs of about `size` bytes each, distinct, all on one port where
    nothing listens: backends refused at once that make big summaries."""
    port = refused_port()
    return ["http://127.0.0.1:%d/%s" % (port, chr(ord("a") + i) * size)
            for i in range(n)]


# ---- a tiny HTTP/1.1 client on raw sockets (to see keep-alive and pipelining
# exactly as they happen on the wire) -------------------------------------------

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def response(self, head_request=False):
        """(status, headers dict (lowercase), body bytes)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_request else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def at_eof(self, timeout=IO_TIMEOUT):
        self.s.settimeout(timeout)
        try:
            return not self.buf and self.s.recv(1) == b""
        except (ConnectionResetError, socket.timeout):
            return False


def request(method="GET", path="/", extra=""):
    return ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n"
            % (method, path, extra)).encode()


def get(port, path="/"):
    s = connect(port)
    try:
        s.sendall(request("GET", path, "Connection: close\r\n"))
        return Reader(s).response()
    finally:
        s.close()


def summary(body):
    return json.loads(body.decode())


def backend_stats(port):
    """The demo backend's counters (this request and its connection
    included): {"connections": N, "requests": M}."""
    st, h, body = get(port, "/stats")
    return json.loads(body.decode()) if st == 200 else {}


def sequential(gw, n, expect_ok, path="/"):
    """n GETs one after another on one client connection; how many were
    answered 200 with `expect_ok` backends fulfilled with code 200 and a
    5-byte body (what /fast and /close-after send)."""
    s = connect(gw.port)
    r = Reader(s)
    good = 0
    try:
        for _ in range(n):
            s.sendall(request("GET", path))
            st, h, body = r.response()
            doc = summary(body) if st == 200 else {}
            if (doc.get("ok") == expect_ok and all(
                    b.get("code") == 200 and b.get("bytes") == 5
                    for b in doc.get("backends", []))):
                good += 1
            else:
                print("    unexpected answer: %d %r" % (st, body[:300]))
    finally:
        s.close()
    return good


# ---- the cases -----------------------------------------------------------------

def check_mixed_summary(status, headers, body, urls, elapsed, timeout_ms,
                        label):
    check(status == 200, label + ": status 200 (got %d)" % status)
    check(headers.get("content-type") == "application/json",
          label + ": content-type application/json")
    try:
        doc = summary(body)
    except ValueError:
        check(False, label + ": body is JSON: %r" % body[:200])
        return
    b = doc.get("backends", [])
    check([x.get("url") for x in b] == urls,
          label + ": one entry per backend, in order")
    if len(b) != len(urls):
        return
    fast, slow, missing, hang, refused = b
    check(fast["status"] == "fulfilled" and fast["code"] == 200
          and fast["bytes"] == 5 and fast["ms"] >= 0,
          label + ": /fast fulfilled 200, 5 bytes: %s" % fast)
    check(slow["status"] == "fulfilled" and slow["code"] == 200
          and slow["ms"] >= 250 and slow["ms"] < timeout_ms,
          label + ": /slow fulfilled 200 after >= 250 ms: %s" % slow)
    check(missing["status"] == "fulfilled" and missing["code"] == 404,
          label + ": /missing fulfilled with code 404: %s" % missing)
    check(hang == {"url": urls[3], "status": "rejected",
                   "error": "ETIMEDOUT"},
          label + ": /hang rejected ETIMEDOUT: %s" % hang)
    check(refused == {"url": urls[4], "status": "rejected",
                      "error": "ECONNREFUSED"},
          label + ": refused port rejected ECONNREFUSED: %s" % refused)
    check(doc.get("ok") == 3 and doc.get("failed") == 2,
          label + ": ok 3, failed 2")
    # The answer waits for the timed-out backend, and no longer than that
    # plus slack.
    check(elapsed >= timeout_ms / 1000.0 * 0.9,
          label + ": answered after the timeout (%.2f s)" % elapsed)
    check(elapsed < timeout_ms / 1000.0 + 20,
          label + ": answered within timeout + 20 s (%.2f s)" % elapsed)


def wait_for(cond, timeout, step=0.05):
    """Poll cond() until it is true or `timeout` seconds have passed; its
    last value."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


GENERATED_ID = re.compile(r"^\d+-\d+$")


def request_id_of(headers, body):
    """(the X-Request-Id header, the JSON's "request_id")."""
    try:
        doc = summary(body)
    except ValueError:
        doc = {}
    return headers.get("x-request-id"), doc.get("request_id")


def failure_lines(gw, rid):
    """The gateway's log lines about request `rid`'s failing backends."""
    return [ln for ln in gw.stderr().splitlines()
            if ": request %s: backend " % rid in ln]


def case_mixed(gw, urls, timeout_ms):
    t0 = time.monotonic()
    status, headers, body = get(gw.port)
    check_mixed_summary(status, headers, body, urls, time.monotonic() - t0,
                        timeout_ms, "mixed backends")
    # The request id: made by the gateway, in the header and the JSON, and
    # in the log line of each failing backend (read from the request's
    # scope by the handler that logs it).
    hid, jid = request_id_of(headers, body)
    check(hid is not None and hid == jid and GENERATED_ID.match(hid),
          "request id: X-Request-Id %r is the JSON's request_id %r, made "
          "as WORKER-N" % (hid, jid))
    lines = wait_for(lambda: len(failure_lines(gw, hid)) >= 2 and
                     failure_lines(gw, hid), 10)
    check(lines and any(urls[3] in ln and "ETIMEDOUT" in ln for ln in lines)
          and any(urls[4] in ln and "ECONNREFUSED" in ln for ln in lines)
          and len(lines) == 2,
          "request id: a log line per failing backend carries it: %s"
          % lines)
    # The client's own id, if sane, is kept; another is replaced.  (All at
    # once: each answer waits for the timeout.)
    sent_ids = [("e2e-client.id:1_x", True), ("a b", False), ("x" * 65, False),
                ("a\xe9", False)]
    socks = []
    for sent, kept in sent_ids:
        s = connect(gw.port)
        s.sendall(request("GET", "/", "Connection: close\r\n"
                          "X-Request-Id: %s\r\n" % sent))
        socks.append(s)
    for (sent, kept), s in zip(sent_ids, socks):
        st, h, body = Reader(s).response()
        s.close()
        hid, jid = request_id_of(h, body)
        ok = st == 200 and hid == jid and (
            hid == sent if kept else bool(GENERATED_ID.match(hid or "")))
        if kept:
            ok = ok and bool(wait_for(lambda: len(failure_lines(gw, sent))
                                      == 2, 10))
        check(ok, "request id: the client's X-Request-Id %r %s (%s, %r, %r)"
              % (sent[:20], "kept, in the log lines too" if kept
                 else "refused, one made instead", st, hid, jid))


def case_methods_and_errors(gw):
    s = connect(gw.port)
    r = Reader(s)
    s.sendall(request("HEAD"))
    st, h, body = r.response(head_request=True)
    check(st == 200 and int(h["content-length"]) > 0 and body == b"",
          "HEAD: 200, a content-length, no body")
    s.sendall(request("POST", "/", "Content-Length: 5\r\n") + b"hello")
    st, h, body = r.response()
    hid, jid = request_id_of(h, body)
    check(st == 405 and hid is not None and hid == jid,
          "POST: 405 with its request id (got %d, %r, %r)" % (st, hid, jid))
    # The same connection still works after both.
    s.sendall(request("GET"))
    st, h, body = r.response()
    check(st == 200 and summary(body)["ok"] == 3,
          "keep-alive after HEAD and 405: GET still answered")
    s.close()

    s = connect(gw.port)
    s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
    r = Reader(s)
    st, h, body = r.response()
    check(st == 400 and r.at_eof(), "garbage: 400, then the connection closes")
    s.close()

    s = connect(gw.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
              b"\r\n\r\n")
    r = Reader(s)
    try:
        st, h, body = r.response()
    except (EOFError, ConnectionResetError):
        st = None
    check(st == 431, "20 kB of headers: 431 (got %s)" % st)
    s.close()


def case_keepalive_concurrent(gw, expect_ok, clients=8, per_client=10):
    """Several clients, each doing sequential requests on one connection."""
    results = [None] * clients

    def client(i):
        try:
            s = connect(gw.port)
            r = Reader(s)
            good = 0
            for _ in range(per_client):
                s.sendall(request())
                st, h, body = r.response()
                if (st == 200 and "close" not in h.get("connection", "")
                        and summary(body)["ok"] == expect_ok):
                    good += 1
            s.close()
            results[i] = good
        except Exception as e:  # reported below
            results[i] = repr(e)

    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(IO_TIMEOUT * 2)
    check(results == [per_client] * clients,
          "%d concurrent keep-alive clients x %d requests on one connection "
          "each: %s" % (clients, per_client, results))


def case_pipelining(gw, expect_ok):
    s = connect(gw.port)
    s.sendall(request("GET") + request("HEAD") +
              request("POST", "/", "Content-Length: 3\r\n") + b"abc" +
              request("GET", "/again", "Connection: close\r\n"))
    r = Reader(s)
    a = r.response()
    b = r.response(head_request=True)
    c = r.response()
    d = r.response()
    check(a[0] == 200 and summary(a[2])["ok"] == expect_ok,
          "pipelined 1/4: GET answered first")
    # (HEAD's length is its own summary's: the "ms" figures differ.)
    check(b[0] == 200 and b[2] == b"" and int(b[1]["content-length"]) > 0,
          "pipelined 2/4: HEAD answered second, no body")
    check(c[0] == 405, "pipelined 3/4: POST answered third (405)")
    check(d[0] == 200 and d[1].get("connection") == "close" and
          summary(d[2])["ok"] == expect_ok,
          "pipelined 4/4: GET with Connection: close answered last")
    check(r.at_eof(), "pipelined: connection closed after the last")
    # Each request its own scope: its own id, in its header and its JSON.
    ids = [request_id_of(x[1], x[2]) for x in (a, c, d)]
    check(all(h == j for h, j in ids) and b[1].get("x-request-id")
          and len(set([h for h, j in ids] + [b[1].get("x-request-id")])) == 4,
          "pipelined: four requests, four request ids: %s" % ids)
    s.close()


def case_big_responses(gateway):
    """Responses larger than the socket takes at once: 20 backends with
    50 kB URLs on a port where nothing listens (refused at once) make a
    1 MB summary; 8 of them pipelined to a client with a small receive
    buffer that reads only after a second.  The gateway writes what the
    socket takes, queues the rest, and answers each request in order and
    whole."""
    urls = big_refused_urls(20, 50000)
    gw = Proc(gateway_argv(gateway, urls, 1000), "uvp-gateway (big)")
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(IO_TIMEOUT)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(request() * 7 +
                  request("GET", "/last", "Connection: close\r\n"))
        time.sleep(1.0)
        r = Reader(s)
        good = 0
        for i in range(8):
            st, h, body = r.response()
            try:
                doc = summary(body)
            except ValueError:
                doc = {}
            if (st == 200 and doc.get("failed") == 20 and
                    [b["url"] for b in doc["backends"]] == urls and
                    all(b["error"] == "ECONNREFUSED"
                        for b in doc["backends"]) and
                    (h.get("connection") == "close") == (i == 7)):
                good += 1
        check(good == 8, "8 pipelined 1 MB summaries to a slow reader: "
              "each whole and in order (%d)" % good)
        check(r.at_eof(), "big summaries: closed after the last")
        s.close()
        rc = gw.stop()
        check(rc == 0, "big summaries: gateway exits 0 (got %s) %s"
              % (rc, gw.stderr()))
    finally:
        gw.kill()


def case_client_aborts(gw, urls, timeout_ms):
    """Clients that go away while their fan-out is in flight (the mixed set
    waits for a hanging backend): half of them close, half reset."""
    socks = []
    for i in range(16):
        s = connect(gw.port)
        s.sendall(request())
        socks.append(s)
    time.sleep(0.1)
    for i, s in enumerate(socks):
        if i % 2:
            # SO_LINGER 0: close sends RST instead of FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
        s.close()
    # Half-sent request, then gone.
    s = connect(gw.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.")
    s.close()
    time.sleep(timeout_ms / 1000.0 + 0.2)  # their fan-outs have ended now
    check(gw.alive(), "gateway alive after 17 clients aborted mid-request")
    t0 = time.monotonic()
    st, h, body = get(gw.port)
    check_mixed_summary(st, h, body, urls, time.monotonic() - t0, timeout_ms,
                        "after aborts")


def case_graceful_stop(gw, urls, timeout_ms):
    """SIGTERM while a request is in flight: the request is still answered
    (with Connection: close), an idle connection is closed, exit 0."""
    idle = connect(gw.port)
    busy = connect(gw.port)
    busy.sendall(request())
    time.sleep(0.2)
    gw.p.send_signal(signal.SIGTERM)
    r = Reader(busy)
    try:
        st, h, body = r.response()
        ok = st == 200 and h.get("connection") == "close" and \
            summary(body)["failed"] == 2
    except Exception as e:
        ok = False
        print("   ", repr(e))
    check(ok, "SIGTERM: the request in flight is answered, Connection: close")
    check(Reader(idle).at_eof(), "SIGTERM: an idle keep-alive connection is "
          "closed")
    # Already signalled: a second signal would mean "cancel everything".
    rc = gw.stop(None, timeout=timeout_ms / 1000.0 + 30)
    check(rc == 0, "SIGTERM: gateway exits 0 (got %s) %s" % (rc, gw.stderr()))
    try:
        connect(gw.port).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    check(refused, "SIGTERM: the port is closed")
    idle.close()
    busy.close()


def case_forced_stop(gw, label):
    """A second signal does not wait for the backends: the fan-out in flight
    (on a hanging backend with a long timeout) is cancelled, its client's
    connection closed, and the gateway still exits 0."""
    s = connect(gw.port)
    s.sendall(request())
    time.sleep(0.5)
    gw.p.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    check(gw.alive(), label + ": after one SIGTERM, still waiting for the "
          "request in flight")
    gw.p.send_signal(signal.SIGTERM)
    r = Reader(s)
    check(r.at_eof(), label + ": second SIGTERM closes the client's "
          "connection without an answer")
    rc = gw.stop(None, timeout=60)
    check(rc == 0, label + ": exit 0 after the second SIGTERM (got %s)\n%s"
          % (rc, gw.stderr()))
    s.close()


def case_demo_keepalive(port):
    """The demo backend itself: pipelined requests on one connection are
    answered in order (/slow holds back the ones after it) and keep it
    alive until one says Connection: close; /close-after answers without a
    Connection header, then closes."""
    s = connect(port)
    s.sendall(request("GET", "/fast") + request("GET", "/slow") +
              request("GET", "/missing") + request("GET", "/stats") +
              request("GET", "/fast", "Connection: close\r\n"))
    r = Reader(s)
    got = []
    try:
        for _ in range(5):
            st, h, body = r.response()
            got.append((st, h.get("connection"), body[:5]))
    except (EOFError, OSError) as e:
        got.append(repr(e))
    check(got == [(200, "keep-alive", b"fast\n"),
                  (200, "keep-alive", b"slow\n"),
                  (404, "keep-alive", b"not f"),
                  (200, "keep-alive", b'{"con'),
                  (200, "close", b"fast\n")],
          "demo backend: 5 pipelined requests answered in order on one "
          "connection: %s" % got)
    check(r.at_eof(), "demo backend: closed after Connection: close")
    s.close()

    s = connect(port)
    s.sendall(request("GET", "/close-after"))
    r = Reader(s)
    st, h, body = r.response()
    check(st == 200 and "connection" not in h and body == b"fast\n"
          and r.at_eof(), "demo backend: /close-after answers as if "
          "keep-alive, then closes")
    s.close()


def case_backend_reuse(gateway, fanout):
    """Backend connections are kept alive: 20 sequential gateway requests
    to one backend use one backend connection.  Then the backend restarts
    on the same port: the idle connection the gateway kept is dead, and the
    next request is retried on a new connection instead of failing."""
    be = Proc([fanout, "--serve", "0"], "backend (reuse)")
    url = "http://127.0.0.1:%d/fast" % be.port
    gw = Proc(gateway_argv(gateway, [url], 5000), "uvp-gateway (reuse)")
    try:
        good = sequential(gw, 20, expect_ok=1)
        check(good == 20, "reuse: 20 sequential requests fulfilled (%d)"
              % good)
        st = backend_stats(be.port)
        check(st.get("requests") == 21,
              "reuse: the backend got each request once (%s)" % st)
        check(st.get("connections") == 2,
              "reuse: one backend connection for 20 requests, plus the "
              "/stats one (%s)" % st)

        port = be.port
        rc = be.stop()
        check(rc == 0, "reuse: backend stopped (exit %s)" % rc)
        be = Proc([fanout, "--serve", str(port)], "backend (restarted)")
        good = sequential(gw, 5, expect_ok=1)
        check(good == 5, "backend restarted: 5 requests fulfilled, the "
              "dead idle connection retried (%d)" % good)
        st = backend_stats(be.port)
        check(st.get("requests") == 6 and st.get("connections") == 2,
              "backend restarted: one new connection, each request once "
              "(%s)" % st)
        rc = gw.stop()
        check(rc == 0, "reuse: gateway exits 0 on SIGTERM (got %s) %s"
              % (rc, gw.stderr()))
    finally:
        gw.kill()
        be.kill()


def case_backend_closes_idle(gateway, fanout, argv_prefix=(), label="",
                             n=20):
    """A backend that closes every connection right after its response
    without saying so (/close-after, a keep-alive timeout that ran out):
    each request finds its pooled connection closed, is retried once on a
    new one, and succeeds; the backend sees each request exactly once."""
    label = label or "closing backend"
    be = Proc([fanout, "--serve", "0"], "backend (close-after)")
    urls = ["http://127.0.0.1:%d/close-after" % be.port,
            "http://127.0.0.1:%d/fast" % be.port]
    gw = Proc(list(argv_prefix) + gateway_argv(gateway, urls, 20000),
              "uvp-gateway (%s)" % label, ready_timeout=120)
    try:
        good = sequential(gw, n, expect_ok=2)
        check(good == n, "%s: %d sequential requests fulfilled (%d)"
              % (label, n, good))
        st = backend_stats(be.port)
        # Per gateway request, 2 backend requests; a connection for the
        # /close-after one (or the /fast one, which may have taken the
        # closed connection from the pool first), /fast reusing the other.
        check(st.get("requests") == 2 * n + 1,
              "%s: the backend got each request once, none twice (%s)"
              % (label, st))
        check(n + 1 <= st.get("connections", 0) <= n + 3,
              "%s: one new connection per closed one (%s)" % (label, st))
        rc = gw.stop(timeout=120)
        check(rc == 0, "%s: gateway exits 0 on SIGTERM (got %s) %s"
              % (label, rc, gw.stderr()))
    finally:
        gw.kill()
        be.kill()


def case_pool_outlives_deadline(gateway, fanout, prefix=()):
    """An idle backend connection stays in the pool until
    --backend-idle-timeout, whatever the deadline (-t) of the request that
    gave it back: that request's deadline (0.5 s) passes 1.5 s before the
    next request, which still reuses it.  Backends /hang then /fast, on
    one host:port: the first request's /fast connection goes back to the
    pool; the second request's /hang takes it (its member starts first)
    and is still stopped by its own deadline on it."""
    be = Proc([fanout, "--serve", "0"], "backend (pool and deadline)")
    base = "http://127.0.0.1:%d" % be.port
    gw = Proc(list(prefix) +
              gateway_argv(gateway, [base + "/hang", base + "/fast"], 500) +
              ["-w", "1", "--backend-idle-timeout", "30000"],
              "uvp-gateway (pool and deadline)", ready_timeout=120)
    try:
        outcomes = []
        for i in range(2):
            if i == 1:
                time.sleep(1.5)  # three times the request's deadline
            t0 = time.monotonic()
            st, h, body = get(gw.port)
            doc = summary(body) if st == 200 else {}
            errors = [b.get("error") or b.get("code")
                      for b in doc.get("backends", [])]
            outcomes.append((st, errors, round(time.monotonic() - t0, 2)))
        check(all(o[1] == ["ETIMEDOUT", 200] and o[2] < 2.5
                  for o in outcomes),
              "pool and deadline: /hang ETIMEDOUT at the 0.5 s deadline, "
              "/fast 200, twice (%s)" % outcomes)
        st = backend_stats(be.port)
        # /hang's and /fast's of the first request, /fast's of the second
        # (its /hang took the pooled one), and this /stats one; 5 if the
        # pooled connection had closed at the first request's deadline.
        check(st.get("connections") == 4 and st.get("requests") == 5,
              "pool and deadline: the idle connection outlived the 0.5 s "
              "deadline of the request that pooled it and was reused 1.5 s "
              "later (4 backend connections for 4 backend requests and "
              "/stats: %s)" % st)
        rc = gw.stop(timeout=120)
        check(rc == 0, "pool and deadline: exit 0 (got %s) %s"
              % (rc, gw.stderr()[-2000:] if rc else ""))
    finally:
        gw.kill()
        be.kill()

WRK_LUA = r"""
-- Count every response that is not a 200 carrying the expected summary.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; checked = 0 end
function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or not string.find(body, EXPECT, 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local b, c = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad"); c = c + t:get("checked")
  end
  io.write(string.format("LUA checked=%d bad=%d\n", c, b))
end
"""


# Another client process: connections that send a request and reset
# (SO_LINGER 0) one of DELAYS seconds later, 8 at a time, for DURATION
# seconds; most resets reach the gateway while the request's fan-out is in
# flight, and cancel its group.  Prints how many it sent.
ABORTER = r"""
import random, socket, struct, sys, time
port, dur = int(sys.argv[1]), float(sys.argv[2])
delays = [float(d) for d in sys.argv[3].split(",")]
req = b"GET /gone HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
rnd = random.Random(7)
end = time.monotonic() + dur
n = errors = 0
while time.monotonic() < end:
    socks = []
    for _ in range(8):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            socks.append(s)
        except OSError:
            errors += 1
    time.sleep(rnd.choice(delays))
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        s.close()
        n += 1
    time.sleep(0.005)
print("ABORTED %d ERRORS %d" % (n, errors), flush=True)
"""


def start_aborter(port, duration, delays="0,0.001,0.002,0.004"):
    return subprocess.Popen([sys.executable, "-c", ABORTER, str(port),
                             str(duration), delays], stdout=subprocess.PIPE,
                            text=True)


def aborter_result(proc, label):
    try:
        out = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
    m = re.search(r"ABORTED (\d+) ERRORS (\d+)", out or "")
    check(m is not None and int(m.group(1)) > 0 and m.group(2) == "0",
          "%s: the disconnecting client ran (%s)" % (label, (out or "").strip()))


def run_wrk(gw, expect, label, duration, conns=64, threads=2):
    """wrk with every response's summary checked; True if it held: no
    error, every response 200 with `expect` in it.  Returns (held, the
    number of responses checked)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("EXPECT = %s\n" % json.dumps(expect))
        f.write(WRK_LUA)
        script = f.name
    try:
        out = subprocess.run(
            [shutil.which("wrk"), "-t%d" % threads, "-c%d" % conns,
             "-d%ds" % duration, "--timeout", "10s", "--latency", "-s",
             script, "http://127.0.0.1:%d/" % gw.port],
            capture_output=True, text=True, timeout=120).stdout
    finally:
        os.unlink(script)
    print("\n".join("    " + ln for ln in out.splitlines()
                    if "requests in" in ln or "Requests/sec" in ln or
                    "LUA" in ln or "errors" in ln or "Non-2xx" in ln))
    m = re.search(r"LUA checked=(\d+) bad=(\d+)", out)
    reqs = re.search(r"(\d+) requests in", out)
    check(m is not None and reqs is not None, label + ": wrk ran to completion")
    if not m or not reqs:
        return False, 0
    checked = int(m.group(1))
    check(int(reqs.group(1)) > 0 and checked > 0,
          label + ": responses checked (%d)" % checked)
    check(int(m.group(2)) == 0,
          label + ": every response is 200 with the expected summary "
          "(bad=%s)" % m.group(2))
    check("Socket errors" not in out, label + ": no socket errors")
    check("Non-2xx" not in out, label + ": no non-2xx responses")
    return True, checked


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def case_load(gw, expect, backend_port, idle_s, duration=4):
    """wrk, 64 connections, twice, each time with a disconnecting client
    process alongside (requests cancelled mid-flight): zero errors, every
    summary right, backend connections reused.  After each run, once the
    pool's idle backend connections have expired (--backend-idle-timeout
    idle_s), the open descriptors are back to the count before the load,
    and RSS after the second run (and the trim that follows it) is within
    5 % of RSS after the first, or, if not, a third run does not grow it by
    half as much again."""
    if not shutil.which("wrk"):
        print("skip    wrk load test: wrk not installed")
        return
    pid = gw.p.pid
    # The cases before have left idle backend connections in the pool:
    # the count before the load is the one without them.  (libuv opens a
    # descriptor of its own per loop at the first connection: the cases
    # before have made it.)
    time.sleep(idle_s + 1.0)
    base_fds = fds(pid)
    before = backend_stats(backend_port)
    cut_before = cut_short(gw.stderr())
    rss, checked = [], 0
    for run in (1, 2, 3):
        # A third run only when the second grew past 5 %: a leak grows by
        # as much again, a heap's top left higher by one run's peak does
        # not (CI saw 6176 kB then 6508 kB, 5.4 %, on a loaded machine).
        if run == 3 and rss[1] <= 1.05 * rss[0]:
            break
        label = "load run %d (wrk -c64, disconnecting clients)" % run
        aborter = start_aborter(gw.port, duration)
        held, n = run_wrk(gw, expect, label, duration)
        aborter_result(aborter, label)
        checked += n
        check(gw.alive(), label + ": gateway alive")
        if not gw.alive():
            return
        back = wait_for(lambda: fds(pid) == base_fds, idle_s + 15, step=0.2)
        check(back, "%s: open descriptors back to %d, the count before the "
              "load (now %d)" % (label, base_fds, fds(pid)))
        # The trim that follows the load's end (within 2 s, the help text
        # says) has run before RSS is read, after either run alike: read
        # at once, one run's RSS had it and the other's not.
        time.sleep(2.5)
        rss.append(vm_rss_kb(pid))
    after = backend_stats(backend_port)
    reqs = after.get("requests", 0) - before.get("requests", 0)
    conns = after.get("connections", 0) - before.get("connections", 0)
    # A cancelled request closes the connections of the backend requests
    # it cut short, and the pool opens new ones in their place: how many
    # depends on how fast the disconnecting client is against the gateway,
    # not on reuse.  The rest are the pool's: 64 clients (and the
    # disconnecting client's 8) x 3 backends in flight at most, a few
    # hundred, for 3 backend requests per response.  (Counting them all
    # against the requests left a slow machine a margin of 4x.)
    cut = cut_short(gw.stderr()) - cut_before
    pooled = conns - cut
    # And a loose bound on all of them, in case the cut-short count ever
    # covers them all (it also counts requests cut before they had a
    # connection): 70x here, 34x on a loaded core.
    check(reqs >= 3 * checked and pooled * 10 < reqs and conns * 2 < reqs,
          "load: backend connections reused (%d connections for %d "
          "backend requests; %d of them replace connections closed by "
          "cancelled requests)" % (conns, reqs, min(cut, conns)))
    # A sanitizer's allocator keeps freed memory in quarantine (ASan: up
    # to 256 MB), filling it run after run: RSS says nothing about the
    # gateway there.  The plain builds check it.
    if os.environ.get("UVP_E2E_SANITIZED", "0") == "1":
        print("skip    load: RSS comparison in a sanitizer build (%s kB)"
              % ", ".join(str(r) for r in rss))
        return
    if len(rss) == 2:
        check(abs(rss[1] - rss[0]) <= 0.05 * rss[0],
              "load: RSS after the second run within 5 %% of the first "
              "(%d kB, %d kB)" % tuple(rss))
    else:
        grew = rss[1] - rss[0]
        check(rss[2] - rss[1] <= grew / 2,
              "load: RSS not growing run after run (%d kB, %d kB, %d kB: "
              "the third grew by less than half the second's growth)"
              % tuple(rss))


def cancelled_count(text):
    """How many requests the gateway says it cancelled (its exit line)."""
    m = re.search(r"(\d+) requests? cancelled \(client gone\)", text)
    return int(m.group(1)) if m else None


def cut_short(text):
    """How many backend requests the gateway has cut short (and closed
    the connections of) for clients gone, from its 'client gone' lines."""
    return sum(int(n) for n in re.findall(
        r": client gone after \d+ ms: group cancelled, (\d+) of \d+ "
        r"backend requests? cut short", text))


def check_cancelled(gw, label):
    """After exit: requests were cancelled, one 'client gone' line each."""
    text = gw.stderr()
    n = cancelled_count(text)
    lines = len(re.findall(r": request \S+: client gone after \d+ ms: group "
                           r"cancelled", text))
    check(n is not None and n > 0 and lines == n,
          "%s: requests cancelled by disconnecting clients, each logged "
          "with its id (%s cancelled, %d lines)" % (label, n, lines))


def case_trace_written(gw, trace_dir, hang_url):
    """--trace-dir: SIGUSR1 wrote each worker's flight recorder to a file
    named in its dump; the stuck request's worker's holds its group and its
    HTTP request to /hang, both still open, as Chrome trace JSON."""
    # Every worker that dumped writes its trace, one worker at a time: wait
    # for all of them, not the first (which may not be the stuck one's).
    def written():
        text = gw.stderr()
        found = re.findall(r"worker \d+: flight recorder: (\d+) events in "
                           r"(\S+)\n", text)
        dumped = set(re.findall(r"worker (\d+): SIGUSR1: ", text))
        return found if found and len(found) >= len(dumped) else None
    named = wait_for(written, 20) or []
    docs = []
    for n, path in named:
        try:
            with open(path) as f:
                docs.append((int(n), path, json.load(f)))
        except (OSError, ValueError) as e:
            check(False, "--trace-dir: %s reads as JSON (%s)" % (path, e))
    check(named and all(os.path.dirname(p) == trace_dir for _, p, _ in docs),
          "--trace-dir: each worker's ring written there, named in its dump "
          "(%s)" % named)

    def hang_open(doc):
        evs = doc["traceEvents"]
        begins = {e["id"]: e for e in evs if e["ph"] == "b"}
        return any(e["ph"] == "e" and e["args"].get("open")
                   and begins.get(e["id"], {}).get("name") == "HTTP"
                   and begins[e["id"]]["args"].get("target") ==
                   "GET " + hang_url for e in evs) and any(
            e["ph"] == "b" and e["cat"] == "group" for e in evs)
    check(any(n > 0 and hang_open(d) for n, _, d in docs),
          "--trace-dir: the stuck request's worker's trace holds its group "
          "and its HTTP GET %s, open" % hang_url)


def case_trace_flood(gateway, base, prefix=()):
    """--trace-dir under a flood of SIGUSR1 (issue 69: 190 MB in 8 s): each
    worker writes its trace at most once every 10 s, one worker at a time,
    and every other SIGUSR1 still dumps, saying the trace was not
    written."""
    trace_dir = tempfile.mkdtemp(prefix="uvp-gateway-flood-")
    gw = Proc(list(prefix) + gateway_argv(gateway, [base + "/fast"], 5000)
              + ["-w", "2", "--trace-dir", trace_dir],
              "uvp-gateway (trace flood)")
    try:
        # Events in each worker's ring: a few requests.
        for _ in range(4):
            s = connect(gw.port)
            s.sendall(request("GET", "/", "Connection: close\r\n"))
            Reader(s).response()
            s.close()
        signals = 20
        t0 = time.monotonic()
        for _ in range(signals):
            gw.p.send_signal(signal.SIGUSR1)
            time.sleep(0.1)
        dumps = lambda: len(re.findall(r"worker \d+: SIGUSR1: ",
                                       gw.stderr()))
        wait_for(lambda: dumps() >= 2 * 3, 20)
        time.sleep(1.0)  # a write that waits for its turn
        elapsed = time.monotonic() - t0
        text = gw.stderr()
        files = sorted(os.listdir(trace_dir))
        written = re.findall(r"worker (\d+): flight recorder: \d+ events in "
                             r"(\S+)\n", text)
        skipped = len(re.findall(r"worker \d+: flight recorder: not written:"
                                 r" the last was \d+ ms ago \(one every "
                                 r"10 s\)\n", text))
        per_worker = {}
        for wid, _ in written:
            per_worker[wid] = per_worker.get(wid, 0) + 1
        most = 2 * (1 + int(elapsed // 10))
        check(0 < len(files) <= most and len(files) == len(written)
              and sorted(os.path.basename(p) for _, p in written) == files
              and len(per_worker) == 2,
              "trace flood: %d SIGUSR1 in %.1f s wrote %d traces (each "
              "worker's, at most %d), each named in its dump: %s"
              % (signals, elapsed, len(files), most, per_worker))
        check(skipped > 0 and dumps() > len(files),
              "trace flood: the other dumps (%d) say the trace was not "
              "written (%d lines)" % (dumps(), skipped))
        rc = gw.stop()
        check(rc == 0, "trace flood: SIGTERM, exit 0 (got %s)" % rc)
    finally:
        gw.kill()
        shutil.rmtree(trace_dir, ignore_errors=True)


def case_trace_disk_full(gateway, base):
    """--trace-dir on a disk that takes 64 KiB (RLIMIT_FSIZE, SIGXFSZ
    ignored: each write past it fails with EFBIG, as a full disk's with
    ENOSPC): the dump names the file and the reason, and the file cut
    short is removed."""
    trace_dir = tempfile.mkdtemp(prefix="uvp-gateway-full-")

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    argv = gateway_argv(gateway, [base + "/fast"], 5000) + [
        "-w", "1", "--trace-dir", trace_dir]
    gw = subprocess.Popen(argv, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=small_disk)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)",
                             gw.stdout.readline()).group(1))
        for _ in range(200):  # more than 64 KiB of trace
            s = connect(port)
            s.sendall(request("GET", "/", "Connection: close\r\n"))
            Reader(s).response()
            s.close()
        gw.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        gw.send_signal(signal.SIGTERM)
        _, err = gw.communicate(timeout=30)
        m = re.search(r"worker 0: flight recorder: (%s/\S+\.json): (.*)\n"
                      % re.escape(trace_dir), err)
        check(m is not None and "too large" in m.group(2).lower()
              and m.group(2).endswith("(removed)")
              and not os.path.exists(m.group(1))
              and os.listdir(trace_dir) == [] and gw.returncode == 0,
              "disk full: the dump names the trace's file and the reason, "
              "the file is removed, exit 0: %s"
              % (m.group(0).strip() if m else err[-2000:]))
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
        shutil.rmtree(trace_dir, ignore_errors=True)


def case_stuck_and_cancelled(gw, backend_port, urls, trace_dir=None):
    """A request stuck on a hanging backend (-t 60 s): SIGUSR1 prints it
    with its pending backend request's async trace; then its client resets
    the connection: the group is cancelled, and the backend sees the
    gateway's /hang connection close at once."""
    rid = "e2e-stuck-1"
    hanging = lambda: backend_stats(backend_port).get("hanging")
    base = hanging()
    s = connect(gw.port)
    s.sendall(request("GET", "/", "X-Request-Id: %s\r\n" % rid))
    check(wait_for(lambda: hanging() == base + 1, 10),
          "stuck: the backend holds the gateway's /hang request")
    time.sleep(0.6)  # /slow has answered: /hang alone is pending
    gw.p.send_signal(signal.SIGUSR1)

    def block():
        """The lines SIGUSR1 printed for the stuck request (each worker
        writes its list at once)."""
        lines = gw.stderr().splitlines()
        for i, ln in enumerate(lines):
            if ": request %s: GET / for " % rid in ln:
                j = i + 1
                while j < len(lines) and lines[j].startswith("  "):
                    j += 1
                if j < len(lines) and lines[j].endswith(": tasks:"):
                    return lines[i:j]
        return None
    b = wait_for(block, 10) or []
    print("\n".join("    | " + ln for ln in b))
    check(b and "1 of 5 backend requests pending" in b[0],
          "SIGUSR1: the stuck request listed with its id: %s"
          % (b[:1] or gw.stderr()[-2000:]))
    frames = b[2:]
    check(len(b) >= 2 and b[1] == "  backend %s, async trace:" % urls[3]
          and any(re.match(r"  promise at \S*httpc\.c:\d+$", f)
                  for f in frames)
          and any(re.match(r"  group at \S*gateway\.c:\d+$", f)
                  for f in frames),
          "SIGUSR1: the pending /hang request with its async trace (its "
          "promise in httpc.c, its group in gateway.c): %s" % b[1:])
    # Then the task dump: the member waits for its HTTP request, the
    # request's read for the backend, each in the request's group, under
    # its deadline (-t 60 s), with the request id.
    text = gw.stderr()
    port = urls[3].split(":")[2].split("/")[0]
    in_group = (r"; in group at \S*gateway\.c:\d+; deadline in (\d+) ms; "
                r"slots 0=%s\n" % re.escape(rid))
    member = re.search(r"\nmember \S+ at \S*httpc\.c:\d+, \d+ ms old, waiting "
                       r"\d+ ms for HTTP GET %s" % re.escape(urls[3])
                       + in_group, text)
    read = re.search(r"\npromise \S+ at \S*httpc\.c:\d+, \d+ ms old, waiting "
                     r"\d+ ms for tcp\.read 127\.0\.0\.1:%s" % port
                     + in_group, text)
    ok = (member is not None and read is not None
          and 55000 < int(member.group(1)) <= 60000
          and re.search(r"worker \d+: \d+ tasks?\n", text) is not None)
    check(ok, "SIGUSR1: then the task dump: the member waits for HTTP GET "
          "%s, its read for the backend, in the request's group with its "
          "deadline and id%s" % (urls[3], "" if ok else ": " + text[-3000:]))
    # Beside it, the stall detector's histogram (--stall): a sample of the
    # slices the worker ran so far (and its check callbacks), none held
    # the loop 30 s.
    hist = re.search(r"worker \d+: slices: (\d+) timed, 0 stalls, longest "
                     r"\d+ us:( <\d+us \d+)+\n", text)
    check(hist is not None and int(hist.group(1)) > 0,
          "SIGUSR1: the slices' histogram beside the task dump: %s"
          % (hist.group(0).strip() if hist else text[-2000:]))
    if trace_dir is not None:
        case_trace_written(gw, trace_dir, urls[3])

    t0 = time.monotonic()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    gone = wait_for(lambda: hanging() == base, 10, step=0.02)
    elapsed = time.monotonic() - t0
    check(gone and elapsed < 2.0,
          "client reset: its group cancelled, the backend's /hang "
          "connection closed promptly (%.2f s)" % elapsed)
    lines = wait_for(lambda: [ln for ln in gw.stderr().splitlines()
                              if ": request %s: client gone" % rid in ln], 10)
    check(lines and "1 of 5 backend requests cut short" in lines[0],
          "client reset: logged with the request id: %s" % lines)
    check(gw.alive(), "client reset: gateway alive")


# ---- --health-down: one backend's health shared by the workers ------------

def worker_of(doc):
    """The worker that answered, from a generated request id "W-N"."""
    return int(doc["request_id"].split("-")[0])


def one_per_worker(gw, nworkers, tries=400):
    """GETs on new connections (SO_REUSEPORT spreads them) until every
    worker has answered one: {worker: summary}."""
    seen = {}
    for _ in range(tries):
        st, h, body = get(gw.port)
        if st != 200:
            continue
        doc = summary(body)
        seen.setdefault(worker_of(doc), doc)
        if len(seen) == nworkers:
            break
    return seen


def case_health(gateway, fanout, base, prefix=()):
    """--health-down: a backend that goes down fails one request on one
    worker; the owner of its health (a worker chosen by its URL's hash)
    hears of it by a call and tells every worker by calls, so the others
    skip it (EHOSTDOWN) without sending it a request.  With a short
    --health-down, the backend back up is tried again, answers, and is up
    again on every worker."""
    nw = 3
    for down_ms, label in ((60000, "shared"), (300, "recovery")):
        dead = Proc([fanout, "--serve", "0"], "uvp-fanout --serve (to kill)")
        url = "http://127.0.0.1:%d/fast" % dead.port
        gw = Proc(list(prefix)
                  + gateway_argv(gateway, [base + "/fast", url], 5000)
                  + ["-w", str(nw), "--health-down", str(down_ms)],
                  "uvp-gateway (health %s)" % label, ready_timeout=120)
        try:
            up = one_per_worker(gw, nw)
            check(len(up) == nw and all(
                d["ok"] == 2 for d in up.values()),
                "health %s: %d workers each forward to both backends (%s)"
                % (label, nw, {k: d["ok"] for k, d in up.items()}))
            dead.kill()
            st, h, body = get(gw.port)
            doc = summary(body) if st == 200 else {}
            first = doc.get("backends", [{}, {}])[1]
            failed_on = worker_of(doc) if doc else None
            check(first.get("status") == "rejected"
                  and first.get("error") != "EHOSTDOWN",
                  "health %s: the backend down fails a request on worker %s"
                  " (%s)" % (label, failed_on, first))
            down_line = "backend %s down for %d ms: a request failed on " \
                "worker %s" % (url, down_ms, failed_on)
            owner = wait_for(lambda: re.search(
                r"worker (\d+): " + re.escape(down_line), gw.stderr()), 10)
            check(owner is not None, "health %s: its owner logs '%s'"
                  % (label, down_line))
            if label == "shared":
                # The owner's pushes are calls already on their way when it
                # logs; a moment for the workers' loops to take them.
                time.sleep(0.3)
                after = one_per_worker(gw, nw)
                errs = {k: d["backends"][1].get("error")
                        for k, d in after.items()}
                check(len(after) == nw and all(
                    e == "EHOSTDOWN" for e in errs.values()) and all(
                    d["backends"][0]["status"] == "fulfilled"
                    for d in after.values()),
                    "health shared: every worker (owner %s, failed on %s) "
                    "skips the backend down, EHOSTDOWN (%s)"
                    % (owner and owner.group(1), failed_on, errs))
                real = [ln for ln in gw.stderr().splitlines()
                        if ": backend %s: " % url in ln
                        and "EHOSTDOWN" not in ln]
                check(len(real) == 1, "health shared: one request in all "
                      "reached the backend down (%d: %s)"
                      % (len(real), real))
            else:
                back = Proc([fanout, "--serve", str(dead.port)],
                            "uvp-fanout --serve (back up)")
                try:
                    def answered():
                        st, h, body = get(gw.port)
                        return st == 200 and summary(body)["ok"] == 2
                    check(wait_for(answered, 20, 0.1),
                          "health recovery: the backend back up is tried "
                          "again once --health-down has passed, and answers")
                    upl = wait_for(lambda: "backend %s up again" % url
                                   in gw.stderr(), 10)
                    check(upl, "health recovery: its owner logs it up again")
                    again = one_per_worker(gw, nw)
                    check(len(again) == nw and all(
                        d["ok"] == 2 for d in again.values()),
                        "health recovery: every worker forwards to it again")
                finally:
                    back.kill()
            rc = gw.stop(timeout=120)
            check(rc == 0, "health %s: exit 0 after SIGTERM (got %s) %s"
                  % (label, rc, gw.stderr()[-2000:]))
        finally:
            gw.kill()
            dead.kill()


# ---- client timeouts, descriptors, strict parsing, half-close, workers ------

def wait_eof(sock, timeout):
    """(seconds until the peer closed or reset the connection, bytes that
    came before); seconds is None if it was still open after `timeout`."""
    t0 = time.monotonic()
    data = b""
    sock.settimeout(timeout)
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError:
        pass
    except socket.timeout:
        return None, data
    return time.monotonic() - t0, data


def gateway_stats(text):
    """The totals line uvp-gateway prints at exit, as a dict."""
    m = re.search(r"(\d+) connections?, (\d+) requests?; timeouts: header "
                  r"(\d+), keep-alive (\d+), send (\d+); accept paused (\d+)"
                  r".*closed at the descriptor limit: (\d+) idle keep-alive, "
                  r"(\d+) waiting for a request, (\d+) not reading (?:its|"
                  r"their) answers; over --max-body: (\d+) backend bod(?:y|"
                  r"ies), (\d+) request bod(?:y|ies)", text)
    if not m:
        return {}
    keys = ("connections", "requests", "header", "keepalive", "send",
            "paused", "idle_closed", "waiting_closed", "stalled_closed",
            "backend_bodies", "request_bodies")
    return dict(zip(keys, map(int, m.groups())))


def case_slow_clients(gw, hdr, ka, fanout_s):
    """--client-header-timeout hdr, --keepalive-timeout ka (seconds); each
    answer takes fanout_s, longer than hdr (a backend hangs until -t)."""
    # Connects and sends nothing: closed, without a word, once the header
    # timeout has run from the accept.
    s = connect(gw.port)
    t, data = wait_eof(s, hdr + 30)
    check(t is not None and data == b"" and 0.9 * hdr <= t < hdr + 20,
          "silent client: closed after the header timeout, nothing sent "
          "(%s s, %r)" % (t, data[:60]))
    s.close()

    # Slowloris: a byte every 0.1 s, forever.  The timeout counts from the
    # first byte, not from the last: 408, then the connection closes.
    s = connect(gw.port)
    msg = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 400
    got, i, t0 = b"", 0, time.monotonic()
    s.settimeout(0.1)
    while time.monotonic() - t0 < hdr + 20 and b"\r\n\r\n" not in got:
        try:
            if i < len(msg):
                s.send(msg[i:i + 1])
                i += 1
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not d:
            break
        got += d
    elapsed = time.monotonic() - t0
    r = Reader(s)
    r.buf = got
    try:
        st = r.response()[0]
    except (EOFError, OSError, ValueError, IndexError):
        st = None
    check(st == 408 and 0.9 * hdr <= elapsed < hdr + 20 and 1 < i < len(msg),
          "slowloris (a byte every 0.1 s): 408 after the header timeout "
          "(%s after %.2f s, %d bytes sent)" % (st, elapsed, i))
    check(r.at_eof(), "slowloris: then the connection closes")
    s.close()

    # A request whose answer takes longer than the header timeout is
    # answered (no timeout runs while the gateway works on it); then the
    # idle keep-alive connection is closed after ka, not after hdr.
    s = connect(gw.port)
    r = Reader(s)
    t0 = time.monotonic()
    s.sendall(request())
    st, h, body = r.response()
    elapsed = time.monotonic() - t0
    check(st == 200 and h.get("connection") == "keep-alive"
          and elapsed >= 0.9 * fanout_s,
          "an answer slower than the header timeout is not cut (%d after "
          "%.2f s)" % (st, elapsed))
    t, data = wait_eof(s, ka + 30)
    check(t is not None and data == b"" and 0.9 * ka <= t < ka + 20,
          "idle keep-alive connection closed after the keep-alive timeout "
          "(%s s)" % t)
    s.close()

    # The next request on a kept-alive connection, started and not
    # finished: 408 once the header timeout has run from its first byte.
    s = connect(gw.port)
    r = Reader(s)
    s.sendall(request())
    r.response()
    t0 = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\nHo")
    try:
        st = r.response()[0]
    except (EOFError, OSError):
        st = None
    elapsed = time.monotonic() - t0
    check(st == 408 and 0.9 * hdr <= elapsed < hdr + 20 and r.at_eof(),
          "second request cut short: 408 after the header timeout, then "
          "closed (%s after %.2f s)" % (st, elapsed))
    s.close()


def case_send_timeout(gateway):
    """A client that pipelines requests for 1 MB answers and reads nothing:
    once the gateway's writes make no progress for --send-timeout, the
    connection is dropped, and other clients are served meanwhile."""
    urls = big_refused_urls(20, 50000)
    gw = Proc(gateway_argv(gateway, urls, 1000) +
              ["-w", "1", "--send-timeout", "1000"], "uvp-gateway (send)")
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(request() * 8)
        st, h, body = get(gw.port)
        check(st == 200 and summary(body).get("failed") == 20,
              "send timeout: another client served while one reads nothing")
        time.sleep(3.0)
        t, data = wait_eof(s, IO_TIMEOUT)
        check(t is not None and len(data) < 8 * 1000000,
              "send timeout: the client that read nothing was dropped "
              "(%d bytes of 8 MB came)" % len(data))
        s.close()
        rc = gw.stop()
        stats = gateway_stats(gw.stderr())
        check(rc == 0 and stats.get("send") == 1,
              "send timeout: counted once, exit 0 (%s, %s)" % (rc, stats))
    finally:
        gw.kill()


# ---- hostile load: descriptors, floods, memory, bodies ----------------------
#
# The attackers are processes of their own (sys.executable -c): under
# CI's valgrind run this script is valgrind's, its children are not, so
# hundreds of sockets and megabytes of traffic stay quick there too.

def child(script, *args):
    """A client process running `script`; its stdout lines are collected
    in .lines, and closing its stdin tells it to finish."""
    p = subprocess.Popen([sys.executable, "-c", script] +
                         [str(a) for a in args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    p.lines = []

    def read():
        for ln in p.stdout:
            p.lines.append(ln.strip())
    threading.Thread(target=read, daemon=True).start()
    return p


def child_line(p, prefix, timeout):
    """The first line of p's starting with prefix, waiting up to timeout
    seconds; None if none came."""
    def find():
        for ln in list(p.lines):
            if ln.startswith(prefix):
                return ln
        return None
    return wait_for(find, timeout)


def child_finish(p, timeout=60):
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# Connections that send nothing, held until stdin closes; then says which
# the gateway closed (EOF or a reset, not a byte received).
SILENT = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = [socket.create_connection(("127.0.0.1", port), timeout=30)
         for _ in range(n)]
print("READY %d" % len(socks), flush=True)
sys.stdin.read()
closed = data = 0
for s in socks:
    s.setblocking(False)
    try:
        d = s.recv(1)
        closed += d == b""
        data += d != b""
    except BlockingIOError:
        pass
    except ConnectionResetError:
        closed += 1
print("CLOSED %d DATA %d" % (closed, data), flush=True)
"""


# Clients that pipeline PER requests each with a 4 KB receive buffer and
# never read a byte of the answers; held until stdin closes.
FLOODER = r"""
import socket, sys
port, n, per = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
req = b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * per
socks = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    socks.append(s)
sent = 0
for s in socks:
    try:
        s.sendall(req)
        sent += 1
    except OSError:
        pass
print("READY %d %d" % (len(socks), sent), flush=True)
sys.stdin.read()
for s in socks:
    s.close()
"""


# A backend whose every answer is a body of BYTES bytes (Content-Length),
# written as fast as it is taken; prints how many bytes each connection
# got out before it ended.
BIG_BACKEND = r"""
import socket, sys, threading
size = int(sys.argv[1])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
chunk = b"x" * 65536
def serve(c):
    sent = 0
    try:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % size)
        while sent < size:
            sent += c.send(chunk[:min(len(chunk), size - sent)])
    except OSError:
        pass
    finally:
        print("SENT %d" % sent, flush=True)
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def closed_now(sock):
    """Whether the peer has closed or reset `sock` (nothing was sent to
    it: data counts as open), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(IO_TIMEOUT)


class BackendCount:
    """The demo backend's request count, less the /stats requests that
    read it."""

    def __init__(self, port):
        self.port, self.reads = port, 0

    def __call__(self):
        self.reads += 1
        return backend_stats(self.port).get("requests", 0) - self.reads


def gw_fds(gw):
    return len(os.listdir("/proc/%d/fd" % gw.p.pid))


def sanitized():
    return os.environ.get("UVP_E2E_SANITIZED", "0") == "1"


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))


def memory_report(gw):
    """SIGUSR1's memory lines: the process's, and per worker (uvp pools
    kB, trims)."""
    pat = (r"worker (\d+): memory: uvp pools (\d+) kB .*; (\d+) backends? "
           r"(\d+) kB; .*trimmed (\d+) times?")
    # Asked again if the lines do not come: diagnostics that would block
    # are dropped (a pipe this harness drains late, on a loaded machine),
    # never waited for.  Only the lines after the latest signal count.
    r = None
    for _ in range(4):
        mark = len(gw.stderr())
        gw.p.send_signal(signal.SIGUSR1)

        def got():
            text = gw.stderr()[mark:]
            workers = re.findall(pat, text)
            proc = re.search(r"uvp-gateway: memory: RSS (\d+) kB; malloc: "
                             r"(\d+) kB in use, (\d+) kB free", text)
            if proc and len(workers) == gw.nworkers:
                return proc, workers
            return None
        r = wait_for(got, 5)
        if r:
            break
    if not r:
        return {}
    proc, workers = r
    return {"rss": int(proc.group(1)), "in_use": int(proc.group(2)),
            "free": int(proc.group(3)),
            "pools": sum(int(w[1]) for w in workers),
            "backends_kb": sum(int(w[3]) for w in workers),
            "trims": sum(int(w[4]) for w in workers)}


def case_memory(gateway, base):
    """1000 distinct backends against one, 2 workers each: what an idle
    configured backend costs (at most 16 KB), what a backend request in
    flight costs (at most 16 KB), and RSS after the burst back within 2x
    of what it was before, once the idle time the help text states has
    passed (the idle backend connections closed after 1 s, then up to
    2 s): checked against 1.5x, and uvp's pools back to what they held
    before (uvp_ctx_trim: a gateway that did not trim them kept 1.45-1.56x
    here, all of it the pools' growth)."""
    if sanitized():
        print("skip    memory: RSS in a sanitizer build says nothing about "
              "the gateway (its allocator keeps freed memory)")
        return
    n, gets = 1000, 4
    with tempfile.NamedTemporaryFile("w", suffix=".urls",
                                     delete=False) as f:
        for i in range(n):
            f.write("%s/fast?b=%d\n" % (base, i))
        urls = f.name
    one = many = None
    try:
        one = Proc(gateway_argv(gateway, [base + "/fast"], 20000) +
                   ["-w", "2"], "uvp-gateway (1 backend)")
        many = Proc([gateway, "-p", "0", "-t", "20000", "-f", urls, "-w", "2",
                     "--backend-idle-timeout", "1000"],
                    "uvp-gateway (%d backends)" % n)
        one.nworkers = many.nworkers = 2
        time.sleep(0.5)
        r1, r0 = vm_rss_kb(one.p.pid), vm_rss_kb(many.p.pid)
        m0 = memory_report(many)
        per = (r0 - r1) / (n - 1.0)
        check(per <= 16, "memory: an idle configured backend costs %.1f KB "
              "of RSS (at most 16; RSS %d kB with %d backends, %d kB with "
              "one; their own structures %s kB)"
              % (per, r0, n, r1, m0.get("backends_kb")))
        # The burst: GETs at once, each one backend request per backend.
        oks = [None] * gets

        def one_get(i):
            try:
                st, h, body = get(many.port)
                oks[i] = summary(body).get("ok") if st == 200 else st
            except Exception as e:  # reported below
                oks[i] = repr(e)
        ts = [threading.Thread(target=one_get, args=(i,))
              for i in range(gets)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(IO_TIMEOUT * 2)
        check(oks == [n] * gets, "memory: %d GETs at once, %d backends "
              "each, all fulfilled (%s)" % (gets, n, oks))
        peak = vm_hwm_kb(many.p.pid)
        per_call = (peak - r0) / float(n * gets)
        check(per_call <= 16, "memory: a backend request in flight costs "
              "%.2f KB (at most 16; peak RSS %d kB for %d at once)"
              % (per_call, peak, n * gets))
        # Back within 2x once the idle backend connections have closed
        # (--backend-idle-timeout 1 s) and a trim has followed (2 s), as
        # the help text says: measured after that (and a second of slack),
        # then, on a loaded machine, up to 10 s more.
        time.sleep(1 + 2 + 1)
        back = wait_for(lambda: vm_rss_kb(many.p.pid) <= 1.5 * r0, 10,
                        step=0.5)
        after = vm_rss_kb(many.p.pid)
        m1 = memory_report(many)
        held = m1.get("pools", 0) - m0.get("pools", 0)
        check(back and after <= 1.5 * r0 and m1.get("trims", 0) >= 1,
              "memory: after the burst, RSS %d kB, %.2fx the %d kB before "
              "(at most 1.5x; the issue asks 2x), trimmed %s times (peak "
              "%d kB)" % (after, after / float(r0), r0, m1.get("trims"),
                          peak))
        # The pools gave the burst's slabs back (uvp_ctx_trim), keeping
        # the startup reservation.
        check(held <= 256,
              "memory: after the burst, uvp's pools hold %d kB more than "
              "before it (at most 256)" % held)
        print("    memory: %s before, %s after" % (m0, m1))
    finally:
        for g in (one, many):
            if g is not None:
                rc = g.stop()
                check(rc == 0, "memory: %s exits 0 (%s)" % (g.name, rc))
        os.unlink(urls)


def case_flood(gateway, base):
    """Clients that pipeline 1000 requests each and read nothing (a 4 KB
    receive buffer): each gets the few answers the kernel holds for it
    (16 KiB unsent), then the gateway stops reading it, so the backend
    requests stop; a probe client meanwhile is answered at once; and the
    send timeout drops the flooders, counted from when their queue stopped
    moving."""
    clients, per, send_s = 100, 1000, 3.0
    gw = Proc(gateway_argv(gateway, [base + "/fast"], 5000) +
              ["-w", "2", "--send-timeout", str(int(send_s * 1000)),
               "--backend-idle-timeout", "1000"], "uvp-gateway (flood)")
    fl = None
    try:
        base_fds = gw_fds(gw)
        requests = BackendCount(int(base.rsplit(":", 1)[1]))
        before = requests()
        t0 = time.monotonic()
        fl = child(FLOODER, gw.port, clients, per)
        ready = child_line(fl, "READY", 60)
        check(ready == "READY %d %d" % (clients, clients),
              "flood: %d clients pipelined %d requests each (%s)"
              % (clients, per, ready))
        # The backend requests stop once every flooder is blocked: wait
        # for the count to stay put for half a second.
        last = [requests(), time.monotonic()]

        def settled():
            n = requests()
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return time.monotonic() - last[1] >= 0.5
        wait_for(settled, 20, step=0.1)
        answered = last[0] - before
        stopped = time.monotonic() - t0
        check(answered <= clients * per / 4,
              "flood: %d of %d pipelined requests served before every "
              "flooder was blocked (%.1f s): about the 16 KiB each the "
              "kernel holds, not all" % (answered, clients * per, stopped))
        # A probe meanwhile: answered as on an idle gateway.
        s = connect(gw.port)
        r = Reader(s)
        lat = []
        for _ in range(20):
            t = time.monotonic()
            s.sendall(request())
            st, h, body = r.response()
            if st == 200 and summary(body).get("ok") == 1:
                lat.append(time.monotonic() - t)
        s.close()
        lat.sort()
        check(len(lat) == 20 and lat[10] < 0.1,
              "flood: a probe client's 20 requests answered, median %.1f "
              "ms, slowest %.1f ms" % (1000 * lat[len(lat) // 2] if lat
                                       else -1, 1000 * max(lat or [0])))
        more = requests() - before - answered - 20
        check(more <= clients,
              "flood: the flooders got nothing more meanwhile (%d)" % more)
        # A client that pipelines as they do but reads after a second:
        # held back meanwhile, then served as it reads, every answer.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(IO_TIMEOUT)
        s.connect(("127.0.0.1", gw.port))
        n0 = requests()
        s.sendall(request("GET", "/slow-reader") * 499 +
                  request("GET", "/last", "Connection: close\r\n"))
        time.sleep(1.0)
        held = requests() - n0
        r = Reader(s)
        got = 0
        try:
            for _ in range(500):
                st, h, body = r.response()
                got += st == 200 and summary(body).get("ok") == 1
        except (EOFError, OSError, ValueError) as e:
            print("    slow reader: %r" % e)
        check(held < 250 and got == 500 and r.at_eof(),
              "flood: a client that reads only after 1 s is held back "
              "meanwhile (%d of 500 served), then gets all 500 answers as it "
              "reads (%d)" % (held, got))
        s.close()
        # The send timeout: from when each queue stopped moving.  (The
        # backend connections the flood used close after 1 s idle.)
        back = wait_for(lambda: gw_fds(gw) <= base_fds + 2, send_s + 20,
                        step=0.2)
        check(back and time.monotonic() - t0 >= 0.9 * send_s,
              "flood: every flooder dropped by the %.0f s send timeout, "
              "descriptors back to %d (%d) after %.1f s"
              % (send_s, base_fds, gw_fds(gw), time.monotonic() - t0))
        child_finish(fl)
        rc = gw.stop()
        st = gateway_stats(gw.stderr())
        check(rc == 0 and st.get("send") == clients,
              "flood: exit 0, %d send timeouts (%s, %s)" % (clients, rc, st))
    finally:
        if fl is not None:
            child_finish(fl)
        gw.kill()


def ulimit_gateway(gateway, limit, args, name, prefix=(), ready=20.0):
    """`prefix` (valgrind's command line) `gateway` -p 0 `args` at
    RLIMIT_NOFILE `limit`."""
    # The shell's ulimit rather than a preexec_fn: this script may run
    # under valgrind, which refuses a process's own RLIMIT_NOFILE changes.
    return Proc(["sh", "-c", 'ulimit -n %d && exec "$@"' % limit, "sh"] +
                list(prefix) + [gateway, "-p", "0"] + args, name,
                ready_timeout=ready)


def timed_get(port, timeout=IO_TIMEOUT):
    """(status, summary, seconds) of one GET on a new connection."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            s.sendall(request("GET", "/", "Connection: close\r\n"))
            st, h, body = Reader(s).response()
        finally:
            s.close()
        doc = summary(body) if st == 200 else {}
    except (EOFError, OSError, ValueError) as e:
        st, doc = repr(e), {}
    return st, doc, time.monotonic() - t0


def case_fd_shed(gateway, url):
    """The attack's shape: 300 silent connections at ulimit -n 256, 2
    workers, the default 60 s header timeout.  New clients are not left
    waiting for it: the connections that have waited longest are closed
    to accept them, so a probe is served within 1 s, every time."""
    limit, silent = 256, 300
    gw = ulimit_gateway(gateway, limit, ["-t", "5000", "-b", url, "-w", "2"],
                        "uvp-gateway (ulimit -n %d)" % limit)
    sc = None
    try:
        sc = child(SILENT, gw.port, silent)
        check(child_line(sc, "READY", 60) == "READY %d" % silent,
              "shed: %d silent connections made" % silent)
        # Closing a few at a time, accepting the rest: near the limit.
        check(wait_for(lambda: "waiting longest" in gw.stderr(), 10)
              and gw_fds(gw) >= limit - 2 * 32,
              "shed: they take the gateway to its %d descriptors (%d)"
              % (limit, gw_fds(gw)))
        for i in range(3):
            st, doc, t = timed_get(gw.port)
            check(st == 200 and doc.get("ok") == 1 and t < 1.0,
                  "shed: probe %d served within 1 s (%s, ok %s, %.3f s)"
                  % (i + 1, st, doc.get("ok"), t))
        child_finish(sc)
        closed = child_line(sc, "CLOSED", 30) or ""
        m = re.match(r"CLOSED (\d+) DATA (\d+)", closed)
        check(m and int(m.group(1)) >= silent - limit and m.group(2) == "0",
              "shed: the silent connections closed to make room got no "
              "byte (%s)" % closed)
        lines = [ln for ln in gw.stderr().splitlines()
                 if "waiting longest" in ln]
        check(lines and all(re.search(r"accept: (EMFILE|descriptors "
                                      r"running out).* closed 0 idle "
                                      r"keep-alive and \d+ waiting", ln)
                            for ln in lines),
              "shed: logged, at most a line a second per worker: %s"
              % lines[:2])
        rc = gw.stop()
        st = gateway_stats(gw.stderr())
        check(rc == 0 and st.get("waiting_closed", 0) >= silent - limit
              and st.get("idle_closed") == 0,
              "shed: exit 0, the closed ones counted (%s)" % st)
    finally:
        if sc is not None:
            child_finish(sc)
        gw.kill()


def case_fd_stalled(gateway):
    """300 clients that pipeline requests and never read (a 4 KB receive
    buffer), at ulimit -n 256, 2 workers, the gateway's defaults (the
    60 s send timeout).  Once their answers have stopped moving for a
    second, they count as idle at the descriptor limit: they are reset to
    accept new clients, so a probe is served within a few seconds, not
    after the send timeout.  The backend is a port where nothing listens
    (refused at once; its 2 KB URL makes each answer 2 KB: a flooder is
    blocked after a dozen)."""
    limit, clients, per = 256, 300, 200
    bad = big_refused_urls(1, 2000)[0]
    gw = ulimit_gateway(gateway, limit, ["-b", bad, "-w", "2"],
                        "uvp-gateway (ulimit -n %d, flood)" % limit)
    fl = None
    try:
        fl = child(FLOODER, gw.port, clients, per)
        check(child_line(fl, "READY", 60) == "READY %d %d"
              % (clients, clients),
              "stalled: %d clients pipelined %d requests each and read "
              "nothing" % (clients, per))
        time.sleep(1.0)
        for i in range(3):
            st, doc, t = timed_get(gw.port, timeout=8.0)
            check(st == 200 and doc.get("failed") == 1 and t < 6.0,
                  "stalled: probe %d served within 6 s, not after the 60 s "
                  "send timeout (%s, %.3f s)" % (i + 1, st, t))
        # A shed within a second of the last line is said by the next
        # line, at most a second later.
        deadline, lines = time.monotonic() + 3.0, []
        while not lines and time.monotonic() < deadline:
            lines = [ln for ln in gw.stderr().splitlines()
                     if "not reading their answers (none sent for 1000 ms)"
                     in ln]
            if not lines:
                time.sleep(0.1)
        check(lines, "stalled: logged: %s" % lines[:1])
        child_finish(fl)
        fl = None
        rc = gw.stop()
        st = gateway_stats(gw.stderr())
        check(rc == 0 and st.get("stalled_closed", 0) >= clients - limit
              and st.get("send") == 0,
              "stalled: exit 0, at least %d reset for room, none by the "
              "send timeout (%s)" % (clients - limit, st))
    finally:
        if fl is not None:
            child_finish(fl)
        gw.kill()

def read_pipe(fd):
    """What the pipe holds now (non-blocking read end)."""
    out = b""
    while True:
        try:
            d = os.read(fd, 65536)
        except BlockingIOError:
            return out
        if not d:
            return out
        out += d


def case_stalled_stderr(gateway, base, prefix=()):
    """stderr a pipe nobody reads (a stalled log collector): SIGUSR1's
    dumps fill it, and the gateway goes on as if nothing happened: the
    workers still answer at once, what did not fit is dropped and counted
    (said first once stderr takes text again), and SIGTERM still stops it,
    exit 0, with the pipe full.  Before, the workers blocked in the write
    of the dump, the main thread in its own, and only SIGKILL stopped
    it."""
    hang = [base + "/hang"] * 20
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    argv = (list(prefix) + gateway_argv(gateway, hang, 60000) +
            ["-w", "2", "--traces"])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=wfd, text=True)
    os.close(wfd)
    clients = []
    try:
        line = p.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
        # Fan-outs in flight, 20 hanging backend requests each: their
        # tasks make each worker's dump tens of KB.
        for i in range(16):
            c = connect(port)
            c.sendall(request("GET", "/stuck-%d" % i))
            clients.append(c)
        time.sleep(1.0)
        for _ in range(3):
            p.send_signal(signal.SIGUSR1)
            time.sleep(0.3)

        def answered_now():
            t0 = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=3)
                s.sendall(request("POST", "/", "Connection: close\r\n"))
                st, h, body = Reader(s).response()
                s.close()
            except (EOFError, OSError, ValueError) as e:
                return repr(e), time.monotonic() - t0
            return st, time.monotonic() - t0
        probes = [answered_now() for _ in range(6)]
        check(all(st == 405 and t < 2.0 for st, t in probes),
              "stalled stderr: after 3 SIGUSR1 dumps into a pipe nobody "
              "reads, both workers still answer at once (%s)"
              % [(st, round(t, 3)) for st, t in probes])
        text = read_pipe(rfd).decode(errors="replace")
        check(len(text) > 32768 and text.endswith("\n"),
              "stalled stderr: the pipe was filled (%d bytes), with whole "
              "lines" % len(text))
        p.send_signal(signal.SIGUSR1)  # the pipe has room again
        got = wait_for(lambda: read_pipe(rfd), 5)
        first = (got or b"").decode(errors="replace").split("\n", 1)[0]
        check(re.match(r"uvp-gateway: \d+ bytes? \(\d+ lines?\) of "
                       r"diagnostics dropped: stderr would block$", first),
              "stalled stderr: once it takes text again, a line says what "
              "was dropped first: %r" % first[:200])
        for _ in range(3):  # full again
            p.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
        for c in clients:  # a reset: the fan-outs are cancelled
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            c.close()
        clients = []
        time.sleep(0.5)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(15 if not prefix else 120)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "stalled stderr: SIGTERM stops it with stderr full, "
              "exit 0 (got %s after %.1f s)" % (rc, time.monotonic() - t0))
    finally:
        for c in clients:
            c.close()
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(rfd)

def case_fd_limit(gateway, url, hang_url):
    """RLIMIT_NOFILE 64, one worker.  As descriptors run out, idle
    keep-alive connections are closed first, the oldest first, then the
    silent ones that waited longest, so that a new client is served at
    once (its backend request has a descriptor too).  And when no
    connection is idle (every one has a request in flight), accept pauses
    as before: the clients wait in the backlog, nobody is reset, EMFILE is
    logged, and they are served once descriptors free up."""
    limit = 64
    gw = ulimit_gateway(gateway, limit, ["-t", "5000", "-b", url, "-w", "1"],
                        "uvp-gateway (ulimit -n %d)" % limit)
    silent, idle, newer = [], [], []

    def first_closed(socks):
        """How many of socks the gateway has closed, if they are a prefix
        of the list (the oldest); None if another one was closed."""
        gone = [closed_now(s) for s in socks]
        k = sum(gone)
        return k if gone[:k] == [True] * k else None
    # httpd keeps this many descriptors free for what accepted clients
    # ask: a client accepted above it makes it close idle ones (at least
    # 250 ms idle).
    low = limit - min(16, limit // 8)
    try:
        idle_fds = gw_fds(gw)
        silent = [connect(gw.port) for _ in range(8)]
        wait_for(lambda: gw_fds(gw) >= idle_fds + 8, 5)
        # Keep-alive clients, each idle after one answer (a few ms apart),
        # up to that mark.
        while gw_fds(gw) < low and len(idle) < limit:
            s = connect(gw.port)
            s.sendall(request())
            Reader(s).response()
            idle.append(s)
            time.sleep(0.003)
        time.sleep(0.3)
        st, doc, t = timed_get(gw.port)
        check(st == 200 and doc.get("ok") == 1 and t < 1.0,
              "ulimit: a client that comes with 8 silent and %d idle "
              "keep-alive ones near the limit is served at once (%s, ok %s, "
              "%.3f s)" % (len(idle), st, doc.get("ok"), t))
        time.sleep(0.2)
        k = first_closed(idle)
        check(k is not None and k >= 2 and
              not any(closed_now(s) for s in silent),
              "ulimit: the oldest idle keep-alive connections closed for "
              "it first (%s of %d), no silent one" % (k, len(idle)))
        # No idle keep-alive connection left: the silent ones go, the
        # oldest first.
        for s in idle:
            s.close()
        time.sleep(0.3)
        while gw_fds(gw) < low and len(newer) < limit:
            n = gw_fds(gw)
            newer.append(connect(gw.port))
            wait_for(lambda: gw_fds(gw) > n, 5, step=0.01)  # accepted
        time.sleep(0.3)
        st, doc, t = timed_get(gw.port)
        check(st == 200 and doc.get("ok") == 1 and t < 1.0,
              "ulimit: with no idle keep-alive connection, a client served "
              "at once again (%s, ok %s, %.3f s)" % (st, doc.get("ok"), t))
        time.sleep(0.2)
        k = sum(closed_now(s) for s in silent)
        check(k >= 2 and not any(closed_now(s) for s in newer),
              "ulimit: the silent ones waiting longest closed for it (%d "
              "of the 8 oldest, none of %d newer)" % (k, len(newer)))
        rc = gw.stop()
        stats = gateway_stats(gw.stderr())
        check(rc == 0 and stats.get("idle_closed", 0) >= 2
              and stats.get("waiting_closed", 0) >= 2
              and stats.get("paused") == 0,
              "ulimit: exit 0, both kinds counted, accept never paused (%s)"
              % stats)
    finally:
        for s in silent + idle + newer:
            s.close()
        gw.kill()

    # Nothing idle to close: every connection waits for a hanging backend.
    hdr = 2.0
    gw = ulimit_gateway(gateway, limit, ["-t", str(int(hdr * 1000)),
                                         "-b", hang_url, "-w", "1"],
                        "uvp-gateway (ulimit -n %d, busy)" % limit)
    socks = []
    try:
        # Each costs two descriptors, its own and its backend request's:
        # one at a time until they fill them, then 8 more.
        t0 = time.monotonic()
        while gw_fds(gw) < limit - 1 and len(socks) < limit:
            n = gw_fds(gw)
            s = connect(gw.port)
            s.sendall(request("GET", "/", "Connection: close\r\n"))
            socks.append(s)
            wait_for(lambda: gw_fds(gw) >= n + 2, 5, step=0.01)
        for _ in range(8):
            s = connect(gw.port)
            s.sendall(request("GET", "/", "Connection: close\r\n"))
            socks.append(s)
        n = len(socks)
        answers = []
        for s in socks:
            try:
                st = Reader(s).response()[0]
            except (EOFError, OSError) as e:
                st = repr(e)
            answers.append(st)
        elapsed = time.monotonic() - t0
        check(answers == [200] * n and elapsed < 4 * hdr + 20,
              "ulimit, busy: %d clients with requests in flight, more than "
              "the descriptors: all answered once backends timed out "
              "(%.2f s): %s" % (n, elapsed, answers))
        log = gw.stderr()
        check(log.count("accepting again as descriptors free up") >= 1
              and "accepting again after" in log,
              "ulimit, busy: EMFILE logged, accept paused, then accepting "
              "again:\n%s" % "\n".join("      " + ln for ln in
                                       log.splitlines() if "accept" in ln))
        rc = gw.stop()
        stats = gateway_stats(gw.stderr())
        check(rc == 0 and stats.get("paused", 0) >= 1
              and stats.get("connections") == n,
              "ulimit, busy: exit 0, accept paused (%s)" % stats)
    finally:
        for s in socks:
            s.close()
        gw.kill()


def case_max_body(gateway, base):
    """--max-body 1M: a backend's 100 MB body is that backend's EFBIG
    (logged, counted), its connection closed after about 1 MB, the other
    backends' answers unchanged; a request body over the cap gets 413."""
    size = 100 << 20
    be = child(BIG_BACKEND, size)
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)",
                 child_line(be, "listening on", 20) or "")
    if not check(m is not None, "max-body: the big backend started"):
        be.kill()
        return
    big = "http://127.0.0.1:%s/big" % m.group(1)
    gw = None
    try:
        gw = Proc(gateway_argv(gateway, [big, base + "/fast"], 30000) +
                  ["-w", "1", "--max-body", "1M"], "uvp-gateway (max-body)")
        st, doc, t = timed_get(gw.port)
        b = doc.get("backends") or [{}, {}]
        check(st == 200 and b[0] == {"url": big, "status": "rejected",
                                     "error": "EFBIG"}
              and b[1].get("code") == 200 and doc.get("ok") == 1,
              "max-body: a 100 MB backend body past 1M is EFBIG, the other "
              "backend fulfilled (%s, %s, %.2f s)" % (st, b, t))
        sent = wait_for(lambda: [int(ln.split()[1]) for ln in
                                 list(be.lines) if ln.startswith("SENT")],
                        10)
        check(sent and sent[0] < size // 4,
              "max-body: the backend's connection closed early (%s of %d "
              "bytes out)" % (sent, size))
        check(wait_for(lambda: "EFBIG (response body larger than 1048576 "
                       "bytes)" in gw.stderr(), 10),
              "max-body: logged with the cap")
        # Request bodies: Content-Length over the cap, at once; chunked,
        # as it comes; one under the cap is read and ignored.
        s = connect(gw.port)
        s.sendall(request("POST", "/", "Content-Length: %d\r\n" % (2 << 20)))
        st1 = Reader(s).response()[0]
        s.close()
        s = connect(gw.port)
        s.sendall(request("POST", "/", "Transfer-Encoding: chunked\r\n") +
                  b"200000\r\n" + b"y" * (1100 << 10))
        try:
            st2 = Reader(s).response()[0]
        except (EOFError, OSError) as e:
            st2 = repr(e)
        s.close()
        s = connect(gw.port)
        s.sendall(request("GET", "/", "Content-Length: 5\r\n"
                          "Connection: close\r\n") + b"hello")
        st3, h, body = Reader(s).response()
        s.close()
        check((st1, st2, st3) == (413, 413, 200),
              "max-body: request bodies: 2 MB declared 413, chunked past "
              "1 MB 413, 5 bytes 200 (%s, %s, %s)" % (st1, st2, st3))
        rc = gw.stop()
        stats = gateway_stats(gw.stderr())
        # Two GETs, each with its 100 MB backend: two backend bodies.
        check(rc == 0 and stats.get("backend_bodies") == 2
              and stats.get("request_bodies") == 2,
              "max-body: exit 0, counted (%s)" % stats)
    finally:
        if gw is not None:
            gw.kill()
        be.kill()
        be.wait()


STRICT_REFUSED = [
    ("HTTP/0.9 (no version)", b"GET /\r\n\r\n", 400),
    ("HTTP/0.9, the request line alone", b"GET /\r\n", 400),
    ("a space before a colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("a tab before a colon", b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400),
    ("a space inside a name", b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n",
     400),
    ("an empty name", b"GET / HTTP/1.1\r\nHost: x\r\n: z\r\n\r\n", 400),
    ("obs-fold (SP)", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
     400),
    ("obs-fold (HT)", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
     400),
    ("obs-fold after an empty value",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n b\r\n\r\n", 400),
    ("a folded Host", b"GET / HTTP/1.1\r\nHost:\r\n x\r\n\r\n", 400),
    ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
    ("a Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("a Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("a bare LF ending the head", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    ("a bare CR", b"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", 400),
    ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
     400),
    ("a control byte in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b"
     b"\r\n\r\n", 400),
    ("Transfer-Encoding in HTTP/1.0",
     b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("HTTP/2.0 as text", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
]

STRICT_ACCEPTED = [
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
    ("Host with a port, blanks after values",
     b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80 \t\r\nConnection: close  \r\n\r\n"),
    ("an IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n"
     b"Connection: close\r\n\r\n"),
    ("an empty Host", b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n"),
    ("an empty line before the request",
     b"\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("tabs and obs-text in a value", b"GET / HTTP/1.1\r\nHost: x\r\n"
     b"X-A: a\tb \xe9\r\nConnection: close\r\n\r\n"),
]


def send_pieces(port, pieces, pause=0.05, half_close=False):
    """Send `pieces` with a pause between them (separate reads at the
    server), then shut the write side if `half_close`; (status, closed
    after it) of the answer."""
    s = connect(port)
    try:
        for i, p in enumerate(pieces):
            if i:
                time.sleep(pause)
            s.sendall(p)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        r = Reader(s)
        st = r.response()[0]
        return st, r.at_eof(10)
    except (EOFError, OSError) as e:
        return repr(e), None
    finally:
        s.close()


def case_strict(gw, backend_port):
    for what, raw, want in STRICT_REFUSED:
        st, closed = send_pieces(gw.port, [raw])
        check(st == want and closed, "strict: %s: %d and closed (got %s, %s)"
              % (what, want, st, closed))
    for what, raw in STRICT_ACCEPTED:
        st, closed = send_pieces(gw.port, [raw])
        check(st == 200, "strict: %s: accepted (got %s)" % (what, st))
    # Across reads: the checks keep their place from one read to the next.
    st, closed = send_pieces(gw.port, [b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r",
                                       b"\n", b" b\r\n\r\n"])
    check(st == 400 and closed, "strict: obs-fold split over three reads: "
          "400 (got %s)" % st)
    st, closed = send_pieces(gw.port, [b"GET / HTTP/1.1\r\nHost", b" : x\r\n",
                                       b"\r\n"])
    check(st == 400, "strict: 'Host' then ' :' in another read: 400 (got %s)"
          % st)
    raw = request("GET", "/", "Connection: close\r\nX-Long: " + "v" * 300 +
                  "\r\n")
    st, closed = send_pieces(gw.port, [raw[i:i + 7]
                                       for i in range(0, len(raw), 7)],
                             pause=0.002)
    check(st == 200, "strict: a good request in 7-byte reads: 200 (got %s)"
          % st)
    # The demo backend is served by the same httpd: the same checks.
    st, closed = send_pieces(backend_port, [b"GET /fast HTTP/1.1\r\n\r\n"])
    check(st == 400 and closed, "strict: demo backend, no Host: 400 (got %s)"
          % st)
    st, closed = send_pieces(backend_port, [b"GET /fast HTTP/1.1\r\nHost: x"
                                            b"\r\nX: a\r\n b\r\n\r\n"])
    check(st == 400, "strict: demo backend, obs-fold: 400 (got %s)" % st)


def case_half_close(gw, expect_ok, label, min_s=0.0):
    """Request(s), then shutdown(SHUT_WR), as nc -N does: every request
    sent is answered, then EOF.  An answer that comes after the end of
    input (min_s > 0: the backends take that long) says Connection: close;
    a faster one may have been written before the gateway read the end."""
    s = connect(gw.port)
    t0 = time.monotonic()
    s.sendall(request())
    s.shutdown(socket.SHUT_WR)
    r = Reader(s)
    try:
        st, h, body = r.response()
        ok = summary(body).get("ok") if st == 200 else None
    except (EOFError, OSError) as e:
        st, h, ok = repr(e), {}, None
    elapsed = time.monotonic() - t0
    check(st == 200 and ok == expect_ok and elapsed >= 0.9 * min_s
          and (h.get("connection") == "close" or min_s == 0),
          "%s: half-closed client answered (%s, ok %s, %s, %.2f s)"
          % (label, st, ok, h.get("connection"), elapsed))
    check(r.at_eof(), label + ": then the connection closes")
    s.close()

    s = connect(gw.port)
    s.sendall(request() + request("HEAD", "/2"))
    s.shutdown(socket.SHUT_WR)
    r = Reader(s)
    try:
        a = r.response()
        b = r.response(head_request=True)
        good = (a[0] == 200 and summary(a[2]).get("ok") == expect_ok
                and b[0] == 200 and (b[1].get("connection") == "close"
                                     or min_s == 0))
    except (EOFError, OSError) as e:
        good = repr(e)
    check(good is True and r.at_eof(), "%s: two pipelined requests, then "
          "half-closed: both answered, then closed (%s)" % (label, good))
    s.close()


def case_cli(gateway):
    opts = ["--workers", "--client-header-timeout", "--keepalive-timeout",
            "--send-timeout", "--port", "--timeout", "--backend", "--version"]
    for flag in ("--help", "-h"):
        out = subprocess.run([gateway, flag], capture_output=True, text=True,
                             timeout=30)
        check(out.returncode == 0 and out.stdout.startswith("usage: ")
              and all(o in out.stdout for o in opts) and out.stderr == "",
              "%s: the usage on stdout, exit 0, lists %s"
              % (flag, " ".join(opts)))
    out = subprocess.run([gateway, "--version"], capture_output=True,
                         text=True, timeout=30)
    check(out.returncode == 0
          and re.fullmatch(r"uvp-gateway \d+\.\d+\.\d+\n", out.stdout)
          and out.stderr == "",
          "--version: 'uvp-gateway VERSION' on stdout, exit 0 (%r)"
          % out.stdout)
    # A usage error: one line on stderr saying what is wrong, exit 2.
    hint = " (uvp-gateway --help lists the options)\n"
    for bad, line in (
            (["--workers", "0"],
             "uvp-gateway: -w/--workers wants a number from 1 to 1024\n"),
            (["--send-timeout", "x"], "uvp-gateway: --send-timeout wants "
             "milliseconds, 0 to 86400000\n"),
            (["--bogus"], "uvp-gateway: unknown option '--bogus'" + hint),
            (["-z"], "uvp-gateway: unknown option '-z'" + hint),
            (["--traces=1"],
             "uvp-gateway: option '--traces' takes no argument" + hint),
            (["--stall"],
             "uvp-gateway: option '--stall' needs an argument" + hint),
            (["-p"], "uvp-gateway: option '-p' needs an argument" + hint),
            (["extra-argument"], "uvp-gateway: unexpected argument "
             "'extra-argument': a backend is -b URL" + hint)):
        out = subprocess.run([gateway, "-b", "http://127.0.0.1:1/"] + bad,
                             capture_output=True, text=True, timeout=30)
        check(out.returncode == 2 and out.stdout == "" and out.stderr == line,
              "usage error %s: exit 2, one line %r (%r)"
              % (bad, line, out.stderr[:300]))
    # A backend httpc cannot ask is refused at start, from -b or -f.
    for url, why in (("not-a-url", "not an http:// or https:// URL"),
                     ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
                     ("http:///x", "no host in the URL"),
                     ("http://127.0.0.1:70000/", "port out of range"),
                     ("http://127.0.0.1:/", "empty port"),
                     ("http://[::1/", "malformed URL")):
        for argv in (["-b", "http://127.0.0.1:1/", "-b", url],
                     ["-f", "/dev/stdin"]):
            line = "uvp-gateway: backend '%s': %s" % (url, why)
            try:
                out = subprocess.run([gateway, "-p", "0"] + argv,
                                     capture_output=True, text=True,
                                     timeout=10,
                                     input="http://127.0.0.1:1/\n%s\n" % url)
                good = (out.returncode == 2 and out.stdout == ""
                        and out.stderr.startswith(line)
                        and out.stderr.count("\n") == 1)
                got = out.stderr[:300]
            except subprocess.TimeoutExpired:
                good, got = False, "still running after 10 s"
            check(good, "bad backend %s %s: exit 2 at start, one line %r (%r)"
                  % (argv[0], url, line, got))
    out = subprocess.run([gateway], capture_output=True, text=True,
                         timeout=30)
    check(out.returncode == 2 and out.stderr == "uvp-gateway: no backend: "
          "-b URL or -f FILE" + hint,
          "no backend: exit 2, one line (%r)" % out.stderr[:300])


def worker_connections(text):
    return [int(n) for n in
            re.findall(r"worker \d+: (\d+) connections?", text)]


def case_workers_sigint(gateway, url):
    """Three workers: each stops on one SIGINT, exit 0, every worker's
    figures printed."""
    gw = Proc(gateway_argv(gateway, [url], 5000) + ["-w", "3"],
              "uvp-gateway (3 workers)")
    try:
        good = sequential(gw, 3, expect_ok=1)
        check(good == 3, "3 workers: requests answered (%d)" % good)
        rc = gw.stop(signal.SIGINT)
        err = gw.stderr()
        check(rc == 0 and len(worker_connections(err)) == 3
              and "3 workers" in err,
              "3 workers: SIGINT, exit 0, each worker's figures (%s)\n%s"
              % (rc, err))
    finally:
        gw.kill()

def gateway_argv(exe, urls, timeout_ms):
    argv = [exe, "-p", "0", "-t", str(timeout_ms)]
    for u in urls:
        argv += ["-b", u]
    return argv


def valgrind_slow_clients(gw, hdr, ka):
    """The timeout, strict and half-close paths once each, at once, on a
    gateway under valgrind (whose memcheck then sees their teardown)."""
    def silent():
        s = connect(gw.port)
        t, data = wait_eof(s, hdr + 60)
        check(t is not None and data == b"", "valgrind: silent client closed "
              "by the header timeout (%s s)" % t)
        s.close()

    def partial():
        st, closed = send_pieces(gw.port, [b"GET / HTTP/1.1\r\nHo"])
        check(st == 408 and closed, "valgrind: a request cut short: 408 "
              "(%s)" % st)

    def idle():
        s = connect(gw.port)
        s.sendall(request())
        st = Reader(s).response()[0]
        t, data = wait_eof(s, ka + 60)
        check(st == 200 and t is not None and t >= 0.9 * ka,
              "valgrind: idle keep-alive connection closed (%s s)" % t)
        s.close()

    def strict():
        st, closed = send_pieces(gw.port, [b"GET / HTTP/1.1\r\nX: a\r\n b"
                                           b"\r\n\r\n"])
        check(st == 400 and closed, "valgrind: obs-fold refused (%s)" % st)

    def half_closed():
        st, closed = send_pieces(gw.port, [request()], half_close=True)
        check(st == 200 and closed, "valgrind: half-closed client answered "
              "(%s)" % st)

    ts = [threading.Thread(target=f)
          for f in (silent, partial, idle, strict, half_closed)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(IO_TIMEOUT * 3)


def valgrind_hostile(vg, gateway, base):
    """Issue 41's paths once each on gateways under valgrind (exit status
    99 on any error or leak): a backend body over --max-body, a request
    body over it, a fan-out wide enough to trim after, a small pipelined
    flood held back then dropped by the send timeout; then, at ulimit -n
    64, silent connections closed to serve a client."""
    be = child(BIG_BACKEND, 4 << 20)
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)",
                 child_line(be, "listening on", 20) or "")
    big = "http://127.0.0.1:%s/big" % (m.group(1) if m else "1")
    urls = [big] + ["%s/fast?b=%d" % (base, i) for i in range(70)]
    gw = fl = sc = None
    try:
        gw = Proc(vg + gateway_argv(gateway, urls, 20000) +
                  ["-w", "2", "--max-body", "64K", "--send-timeout", "2000",
                   "--backend-idle-timeout", "1000"],
                  "uvp-gateway under valgrind (hostile)", ready_timeout=120)
        st, doc, t = timed_get(gw.port, IO_TIMEOUT * 2)
        b = doc.get("backends") or [{}]
        check(st == 200 and b[0].get("error") == "EFBIG"
              and doc.get("ok") == 70,
              "valgrind: a backend body over --max-body is EFBIG, 70 others "
              "fulfilled (%s, %s, ok %s)" % (st, b[0], doc.get("ok")))
        s = connect(gw.port)
        s.sendall(request("POST", "/", "Content-Length: 100000\r\n"))
        st = Reader(s).response()[0]
        s.close()
        check(st == 413, "valgrind: a request body over --max-body: 413 "
              "(%s)" % st)
        fl = child(FLOODER, gw.port, 4, 200)
        check(child_line(fl, "READY", 60) == "READY 4 4",
              "valgrind: 4 clients pipelined 200 requests each")
        # Held back, then dropped by the send timeout; the trim after the
        # wide fan-out and the flood has run by then.
        time.sleep(2.0 + 6.0)
        child_finish(fl)
        rc = gw.stop(timeout=120)
        stats = gateway_stats(gw.stderr())
        check(rc == 0 and stats.get("send") == 4
              and stats.get("requests", 0) < 2 + 4 * 200,
              "valgrind: flooders held back and dropped by the send timeout, "
              "exit 0, no error or leak (%s, %s)\n%s"
              % (rc, stats, gw.stderr()[-2000:]))
        gw = ulimit_gateway(gateway, 64, ["-t", "20000", "-b", base + "/fast",
                                          "-w", "1"],
                            "uvp-gateway under valgrind (ulimit -n 64)", vg,
                            120)
        sc = child(SILENT, gw.port, 70)
        check(child_line(sc, "READY", 60) == "READY 70",
              "valgrind: 70 silent connections at ulimit -n 64")
        time.sleep(3.0)
        st, doc, t = timed_get(gw.port)
        check(st == 200 and doc.get("ok") == 1 and t < 10,
              "valgrind: silent ones closed to serve a client (%s, ok %s, "
              "%.2f s)" % (st, doc.get("ok"), t))
        child_finish(sc)
        rc = gw.stop(timeout=120)
        stats = gateway_stats(gw.stderr())
        check(rc == 0 and stats.get("waiting_closed", 0) > 0,
              "valgrind: shedding, exit 0, no error or leak (%s, %s)\n%s"
              % (rc, stats, gw.stderr()[-2000:]))
    finally:
        for p in (fl, sc):
            if p is not None:
                child_finish(p)
        if gw is not None:
            gw.kill()
        be.kill()
        be.wait()


def main():
    if len(sys.argv) < 3 or not sys.argv[2]:
        print("uvp-fanout is not built: no demo backends, skipping")
        return SKIP
    gateway, fanout = sys.argv[1], sys.argv[2]

    backend = Proc([fanout, "--serve", "0"], "uvp-fanout --serve")
    base = "http://127.0.0.1:%d" % backend.port
    # UVP_E2E_ONLY=name,name: only those cases (a developer's shortcut;
    # meson runs them all).
    only = [n for n in os.environ.get("UVP_E2E_ONLY", "").split(",") if n]
    if only:
        # UVP_E2E_ONLY_VALGRIND=1: those that take a prefix run the
        # gateway under valgrind.
        vgp = ()
        if os.environ.get("UVP_E2E_ONLY_VALGRIND") == "1":
            vgp = ("valgrind", "--quiet", "--error-exitcode=99",
                   "--leak-check=full",
                   "--show-leak-kinds=definite,indirect,possible",
                   "--errors-for-leak-kinds=definite,indirect,possible")
        cases = {
            "cli": lambda: case_cli(gateway),
            "pool_outlives_deadline":
                lambda: case_pool_outlives_deadline(gateway, fanout, vgp),
            "fd_stalled": lambda: case_fd_stalled(gateway),
            "stalled_stderr":
                lambda: case_stalled_stderr(gateway, base, vgp),
            "fd_shed": lambda: case_fd_shed(gateway, base + "/fast"),
            "fd_limit": lambda: case_fd_limit(gateway, base + "/fast",
                                              base + "/hang"),
            "flood": lambda: case_flood(gateway, base),
            "health": lambda: case_health(gateway, fanout, base, vgp),
            "trace_flood": lambda: case_trace_flood(gateway, base),
            "trace_disk_full": lambda: case_trace_disk_full(gateway, base),
        }
        try:
            for n in only:
                cases[n]()
        finally:
            backend.kill()
        return report()
    mixed = [base + "/fast", base + "/slow", base + "/missing",
             base + "/hang", "http://127.0.0.1:%d/" % refused_port()]
    fast = [base + "/fast", base + "/fast", base + "/missing"]
    timeout_ms = 1000
    procs = [backend]
    try:
        case_cli(gateway)
        case_demo_keepalive(backend.port)
        # Workers: one per CPU by default.
        gw = Proc(gateway_argv(gateway, mixed, timeout_ms), "uvp-gateway")
        procs.append(gw)
        case_mixed(gw, mixed, timeout_ms)
        case_methods_and_errors(gw)
        case_client_aborts(gw, mixed, timeout_ms)
        case_half_close(gw, 3, "mixed backends", min_s=timeout_ms / 1000.0)

        gwf = Proc(gateway_argv(gateway, fast, 5000) +
                   ["-w", "2", "--backend-idle-timeout", "1500"],
                   "uvp-gateway (fast, 2 workers)")
        procs.append(gwf)
        case_keepalive_concurrent(gwf, expect_ok=3)
        case_pipelining(gwf, expect_ok=3)
        case_strict(gwf, backend.port)
        case_half_close(gwf, 3, "fast backends")
        case_load(gwf, '],"ok":3,"failed":0}', backend.port, 1.5)
        rc = gwf.stop()
        check(rc == 0, "fast gateway: SIGTERM after load, exit 0 (got %s) %s"
              % (rc, gwf.stderr()[-3000:]))
        check_cancelled(gwf, "load")
        conns = worker_connections(gwf.stderr())
        check(len(conns) == 2 and min(conns) > 0,
              "2 workers on one port: both accepted connections %s" % conns)

        case_graceful_stop(gw, mixed, timeout_ms)

        # Timeouts: each answer takes 1.2 s (a hanging backend, -t 1200),
        # longer than the 1 s header timeout.
        gwt = Proc(gateway_argv(gateway, [base + "/fast", base + "/hang"],
                                1200) +
                   ["--client-header-timeout", "1000",
                    "--keepalive-timeout", "2500"], "uvp-gateway (timeouts)")
        procs.append(gwt)
        case_slow_clients(gwt, 1.0, 2.5, 1.2)
        rc = gwt.stop()
        st = gateway_stats(gwt.stderr())
        check(rc == 0 and st.get("header") == 3 and st.get("keepalive") == 1,
              "timeouts: exit 0; 3 header timeouts, 1 keep-alive (%s)" % st)
        case_send_timeout(gateway)
        case_fd_limit(gateway, base + "/fast", base + "/hang")
        case_fd_shed(gateway, base + "/fast")
        case_fd_stalled(gateway)
        case_stalled_stderr(gateway, base)
        case_flood(gateway, base)
        case_memory(gateway, base)
        case_max_body(gateway, base)
        case_workers_sigint(gateway, base + "/fast")
        case_health(gateway, fanout, base)

        case_big_responses(gateway)
        case_backend_reuse(gateway, fanout)
        case_backend_closes_idle(gateway, fanout)
        case_pool_outlives_deadline(gateway, fanout)

        trace_dir = tempfile.mkdtemp(prefix="uvp-gateway-trace-")
        gwh = Proc(gateway_argv(gateway, mixed, 60000)
                   + ["--traces", "--stall", "30000", "--trace-dir",
                      trace_dir], "uvp-gateway (hang)")
        procs.append(gwh)
        case_stuck_and_cancelled(gwh, backend.port, mixed, trace_dir)
        case_forced_stop(gwh, "forced stop")
        shutil.rmtree(trace_dir, ignore_errors=True)
        case_trace_flood(gateway, base)
        case_trace_disk_full(gateway, base)

        # Meson says whether this build can run under valgrind (not a
        # sanitizer build); missing valgrind skips the case too.
        if (shutil.which("valgrind")
                and os.environ.get("UVP_E2E_VALGRIND", "1") == "1"):
            vg = ["valgrind", "--quiet", "--error-exitcode=99",
                  "--leak-check=full",
                  "--show-leak-kinds=definite,indirect,possible",
                  "--errors-for-leak-kinds=definite,indirect,possible"]
            # valgrind makes the gateway 20-50x slower: a longer timeout,
            # still far below the hanging backend's forever.
            vt = 4000
            gwv = Proc(vg + gateway_argv(gateway, mixed, vt) +
                       ["-w", "2", "--client-header-timeout", "2000",
                        "--keepalive-timeout", "3000"],
                       "uvp-gateway under valgrind", ready_timeout=120)
            procs.append(gwv)
            t0 = time.monotonic()
            st, h, body = get(gwv.port)
            check_mixed_summary(st, h, body, mixed, time.monotonic() - t0, vt,
                                "valgrind")
            s = connect(gwv.port)
            s.sendall(request())
            time.sleep(0.3)
            # SO_LINGER 0: a reset, the abort that cancels the fan-out.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            s.close()
            st, h, body = get(gwv.port, "/again")
            check(st == 200, "valgrind: served after a client abort")
            valgrind_slow_clients(gwv, 2.0, 3.0)
            # Then stopped by two signals with a fan-out in flight: valgrind
            # checks the cancellation and teardown paths too (exit status 99
            # on any error or leak).
            case_forced_stop(gwv, "valgrind")
            # The load test, shortened: wrk and a disconnecting client
            # process at once, then SIGTERM (exit status 99 on any error
            # or leak).
            # Its fan-out includes /slow (250 ms), so a reset 20-100 ms
            # after the request lands while the group is in flight: with
            # fast backends alone, how many did depended on valgrind's pace
            # (a fresh machine's run once saw 0 of 408).
            paced = [base + "/fast", base + "/slow", base + "/missing"]
            gwl = Proc(vg + gateway_argv(gateway, paced, 5000) + ["-w", "2"],
                       "uvp-gateway under valgrind (load)",
                       ready_timeout=120)
            procs.append(gwl)
            if shutil.which("wrk"):
                # Slower under valgrind: resets after the request is read.
                aborter = start_aborter(gwl.port, 3, "0.02,0.05,0.1")
                run_wrk(gwl, '],"ok":3,"failed":0}', "valgrind load", 3,
                        conns=16, threads=1)
                aborter_result(aborter, "valgrind load")
            rc = gwl.stop(timeout=120)
            check(rc == 0, "valgrind load: exit 0 after SIGTERM, no error or "
                  "leak (got %s)\n%s" % (rc, gwl.stderr()[-3000:]))
            if shutil.which("wrk"):
                check_cancelled(gwl, "valgrind load")
            # The pool's retry and its close at SIGTERM, under valgrind.
            case_backend_closes_idle(gateway, fanout, vg, "valgrind, "
                                     "closing backend", n=5)
            valgrind_hostile(vg, gateway, base)
        else:
            print("skip    valgrind case: valgrind not installed")
    finally:
        for p in procs:
            p.kill()

    return report()


def report():
    if failures:
        print("\n%d check(s) failed:" % len(failures))
        for f in failures:
            print("  - " + f.splitlines()[0])
        return 1
    print("\n%d passed, 0 failed" % passed[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
