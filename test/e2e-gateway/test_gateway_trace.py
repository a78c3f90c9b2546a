#!/usr/bin/env python3
"""uvp-gateway's W3C Trace Context (issue 72), end to end.

Usage: test_gateway_trace.py UVP_GATEWAY

A backend of this script's own (http.server on 127.0.0.1, recording the
trace headers of each request it gets) behind uvp-gateway -w 1; requests
sent on raw sockets, so that headers go exactly as written (twice, oddly
cased, oversized).  Checked:
 - a valid traceparent is continued: the answer's traceresponse names a new
   span of the same trace, and the backend gets a traceparent of that trace
   whose parent-id is neither the client's nor the server span's (httpc's
   CLIENT span), with the client's tracestate as sent (two tracestate
   headers joined); a later version's longer header is read by its first
   55 characters;
 - the W3C specification's invalid traceparents (version ff, uppercase
   hex, all-zero trace-id or parent-id, wrong lengths, trailing data after
   version 00, a misplaced dash, non-hex, empty, 4 KB of garbage, two
   headers) are ignored as if absent: 200, no traceresponse, nothing sent
   to the backend, never an error, the gateway alive;
 - an invalid tracestate (33 members, over 512 bytes, a bad key) is
   dropped alone: the traceparent still goes on; keys of the current
   grammar ('@' anywhere after the first character) and a key given twice
   are kept, the header passed on as it came;
 - with --trace-start, a request without a valid traceparent begins a new
   trace (the traceresponse's trace id is what the backend gets), and an
   invalid one's tracestate is not forwarded;
 - with --trace-dir, SIGUSR1's recorder file has the SERVER span (parent:
   the client's span) and the CLIENT span under it (its span id the
   backend's parent-id);
 - under valgrind (UVP_E2E_VALGRIND=1, valgrind installed), the gateway
   serves every malformed case too and exits 0 with no error or leak.
Standard library only.
"""
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import socket

SKIP = 77
IO_TIMEOUT = 60.0

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = "00-%s-%s-01" % (TRACE, PARENT)
# The specification's invalid examples, and more of the same kinds.
INVALID = [
    ("version ff", "ff-%s-%s-01" % (TRACE, PARENT)),
    ("uppercase hex", "00-%s-%s-01" % (TRACE.upper(), PARENT.upper())),
    ("all-zero trace-id", "00-%s-%s-01" % ("0" * 32, PARENT)),
    ("all-zero parent-id", "00-%s-%s-01" % (TRACE, "0" * 16)),
    ("trace-id of 31 digits", "00-%s-%s-01" % (TRACE[:31], PARENT)),
    ("trace-id of 33 digits", "00-%s0-%s-01" % (TRACE, PARENT)),
    ("parent-id of 15 digits", "00-%s-%s-01" % (TRACE, PARENT[:15])),
    ("flags of one digit", "00-%s-%s-1" % (TRACE, PARENT)),
    ("version 00 with trailing data", VALID + "-extra"),
    ("version 00 with a trailing character", VALID + "x"),
    ("version of one digit", "0-%s-%s-01" % (TRACE, PARENT)),
    ("non-hex trace-id", "00-%sg-%s-01" % (TRACE[:31], PARENT)),
    ("a dash misplaced", "00-%s%s--01" % (TRACE, PARENT)),
    ("underscores for dashes", "00_%s_%s_01" % (TRACE, PARENT)),
    ("empty", ""),
    ("garbage", "hello"),
    ("4 KB", "00-" + "a" * 4000),
]
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
BAD_TRACESTATES = [
    ("33 members", ",".join("k%d=v" % i for i in range(33))),
    ("over 512 bytes", "a=" + "b" * 520),
    ("an uppercase key", "Congo=t61rcWkgMzE"),
    ("a key starting with '@'", "@foo=1,bar=2"),
    ("a value with a comma-less space", "a=1 b=2"),
]

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


# ---- the backend: records the trace headers of each request -----------------

class Backend(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.seen = []  # (traceparent list, tracestate list) per request
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.seen.append((
                self.headers.get_all("traceparent") or [],
                self.headers.get_all("tracestate") or []))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# ---- the gateway -------------------------------------------------------------

class Gateway:
    def __init__(self, argv, ready_timeout=20.0):
        self.errfile = tempfile.TemporaryFile()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                  stderr=self.errfile, text=True)
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
            self.stop(signal.SIGKILL)
            raise RuntimeError("uvp-gateway did not start: " + self.stderr())
        self.port = box["port"]
        threading.Thread(target=lambda: self.p.stdout.read(),
                         daemon=True).start()

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


def get(port, path, headers):
    """GET path with `headers` ((name, value) pairs, sent as they are):
    (status, headers dict of lowercase names, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        extra = "".join("%s: %s\r\n" % (k, v) for k, v in headers)
        s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                   "Connection: close\r\n\r\n" % (path, extra)).encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Case:
    """One request through the gateway, and what the backend saw."""
    n = [0]

    def __init__(self, gw, backend, headers):
        Case.n[0] += 1
        self.path = "/c%d" % Case.n[0]
        with backend.lock:
            before = len(backend.seen)
        self.status, self.headers, self.body = get(gw.port, self.path, headers)
        try:
            self.doc = json.loads(self.body.decode())
        except ValueError:
            self.doc = {}
        # The gateway asks its one backend once per request, one request
        # at a time here: what the backend got is the one new entry.
        with backend.lock:
            new = backend.seen[before:]
        self.sent = new[0] if len(new) == 1 else (None, None)
        m = TP.match(self.headers.get("traceresponse", ""))
        self.response = m.groups() if m else None
        tps = self.sent[0] or []
        m = TP.match(tps[0]) if len(tps) == 1 else None
        self.forwarded = m.groups() if m else None

    def answered(self):
        return self.status == 200 and self.doc.get("ok") == 1


def continued(c, trace, parent):
    """The request was continued: same trace, a new server span, the
    backend under a third span of it."""
    return (c.answered() and c.response is not None
            and c.response[0] == trace and c.response[1] != parent
            and c.forwarded is not None and c.forwarded[0] == trace
            and c.forwarded[1] not in (parent, c.response[1]))


def untraced(c):
    return (c.answered() and "traceresponse" not in c.headers
            and c.sent[0] == [] and c.sent[1] == [])


def run_cases(gw, backend, tag):
    c = Case(gw, backend, [("traceparent", VALID),
                           ("tracestate", TRACESTATE)])
    check(continued(c, TRACE, PARENT) and c.response[2] == "01"
          and c.forwarded[2] == "01",
          "%s: a valid traceparent is continued (traceresponse %s, the "
          "backend got %s)" % (tag, c.headers.get("traceresponse"), c.sent[0]))
    check(c.sent[1] == [TRACESTATE],
          "%s: its tracestate reaches the backend as sent (%s)"
          % (tag, c.sent[1]))
    first = c
    c = Case(gw, backend, [("TraceParent", VALID), ("tracestate", "a=1"),
                           ("tracestate", "b=2")])
    check(continued(c, TRACE, PARENT) and c.sent[1] == ["a=1,b=2"],
          "%s: header names in any case; two tracestate headers joined (%s)"
          % (tag, c.sent[1]))
    check(c.response is not None and first.response is not None
          and c.response[1] != first.response[1],
          "%s: each request has a server span of its own" % tag)
    c = Case(gw, backend, [("traceparent", "00-%s-%s-0b" % (TRACE, PARENT))])
    check(continued(c, TRACE, PARENT) and c.response[2] == "03"
          and c.forwarded[2] == "03",
          "%s: sampled and random-trace-id go on, the reserved flags are "
          "zeroed (Level 2) (%s)" % (tag, c.headers.get("traceresponse")))
    future = "cc-%s-%s-01-what-the-future-will-be-like" % (TRACE, PARENT)
    c = Case(gw, backend, [("traceparent", future)])
    check(continued(c, TRACE, PARENT),
          "%s: a later version's longer traceparent is read by its first 55 "
          "characters (%s)" % (tag, c.sent[0]))
    for what, tp in INVALID:
        c = Case(gw, backend, [("traceparent", tp),
                               ("tracestate", TRACESTATE)])
        check(untraced(c), "%s: invalid traceparent ignored, the request "
              "answered untraced: %s (%s, %s)" % (tag, what, c.status,
                                                   c.sent))
    c = Case(gw, backend, [("traceparent", VALID), ("traceparent", VALID)])
    check(untraced(c), "%s: two traceparent headers: ignored (%s)"
          % (tag, c.sent))
    for what, ts in BAD_TRACESTATES:
        c = Case(gw, backend, [("traceparent", VALID), ("tracestate", ts)])
        check(continued(c, TRACE, PARENT) and c.sent[1] == [],
              "%s: invalid tracestate dropped alone, the trace continued: "
              "%s (%s)" % (tag, what, c.sent[1]))
    for ts in ["foo@=1,bar=2", "t" * 242 + "@v=1", "foo=1,foo=2"]:
        c = Case(gw, backend, [("traceparent", VALID), ("tracestate", ts)])
        check(continued(c, TRACE, PARENT) and c.sent[1] == [ts],
              "%s: tracestate kept as it came: %s (%s)"
              % (tag, ts[:20], c.sent[1]))
    ok32 = ",".join("k%d=v" % i for i in range(32))
    c = Case(gw, backend, [("traceparent", VALID), ("tracestate", ok32)])
    check(continued(c, TRACE, PARENT) and c.sent[1] == [ok32],
          "%s: a tracestate of 32 members is kept" % tag)
    c = Case(gw, backend, [])
    check(untraced(c), "%s: no traceparent: untraced, nothing sent" % tag)
    return first


def recorded_spans(path):
    with open(path) as f:
        doc = json.load(f)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    return [dict(e.get("args", {}), name=e.get("name"))
            for e in events if e.get("cat") == "span" and e.get("ph") == "b"]


def main():
    if len(sys.argv) != 2:
        print("usage: test_gateway_trace.py UVP_GATEWAY")
        return 2
    gateway = sys.argv[1]
    backend = Backend()
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/b" % backend.server_address[1]
    tmp = tempfile.mkdtemp(prefix="uvp-e2e-trace-")
    gws = []
    try:
        gw = Gateway([gateway, "-p", "0", "-w", "1", "-b", url,
                      "--trace-dir", tmp])
        gws.append(gw)
        first = run_cases(gw, backend, "gateway")

        # The recorder has both spans of the first case, linked.
        gw.p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        name = None
        while name is None and time.monotonic() < deadline:
            m = re.search(r"flight recorder: \d+ events in (\S+\.json)",
                          gw.stderr())
            name = m.group(1) if m else None
            time.sleep(0.05)
        spans = recorded_spans(name) if name else []
        by_id = {s.get("span_id"): s for s in spans}
        server = by_id.get(first.response[1] if first.response else None)
        client = by_id.get(first.forwarded[1] if first.forwarded else None)
        check(server is not None and server.get("kind") == "server"
              and server.get("trace_id") == TRACE
              and server.get("parent_id") == PARENT
              and server.get("name") == "GET " + first.path,
              "recorder: the SERVER span, the client's span its parent (%s)"
              % server)
        check(client is not None and client.get("kind") == "client"
              and client.get("trace_id") == TRACE and server is not None
              and client.get("parent_id") == server.get("span_id"),
              "recorder: the backend request's CLIENT span under it (%s)"
              % client)
        check(gw.stop() == 0, "gateway: exit status 0 on SIGTERM")

        gw = Gateway([gateway, "-p", "0", "-w", "1", "-b", url,
                      "--trace-start"])
        gws.append(gw)
        c = Case(gw, backend, [])
        check(c.answered() and c.response is not None
              and c.forwarded is not None
              and c.forwarded[0] == c.response[0]
              and c.forwarded[1] != c.response[1]
              and c.response[2] == "03" and c.sent[1] == [],
              "--trace-start: a request without traceparent begins a new "
              "sampled trace, its trace id flagged random (Trace Context "
              "Level 2), the backend in it (%s, %s)"
              % (c.headers.get("traceresponse"), c.sent[0]))
        c2 = Case(gw, backend, [])
        check(c2.response is not None and c.response is not None
              and c2.response[0] != c.response[0],
              "--trace-start: a new trace for each request")
        c = Case(gw, backend, [("traceparent", INVALID[0][1]),
                               ("tracestate", TRACESTATE)])
        check(c.answered() and c.response is not None
              and c.response[0] != TRACE and c.forwarded is not None
              and c.forwarded[0] == c.response[0] and c.sent[1] == [],
              "--trace-start: an invalid traceparent begins a new trace, "
              "its tracestate not forwarded (%s)" % (c.sent,))
        c = Case(gw, backend, [("traceparent", VALID)])
        check(continued(c, TRACE, PARENT),
              "--trace-start: a valid traceparent is still continued")
        check(gw.stop() == 0, "--trace-start gateway: exit status 0")

        if (shutil.which("valgrind")
                and os.environ.get("UVP_E2E_VALGRIND", "1") == "1"):
            vg = ["valgrind", "--quiet", "--error-exitcode=99",
                  "--leak-check=full",
                  "--show-leak-kinds=definite,indirect,possible",
                  "--errors-for-leak-kinds=definite,indirect,possible"]
            gw = Gateway(vg + [gateway, "-p", "0", "-w", "1", "-b", url,
                               "-t", "20000"], ready_timeout=120)
            gws.append(gw)
            run_cases(gw, backend, "valgrind")
            rc = gw.stop(timeout=120)
            check(rc == 0, "valgrind: exit status 0, no error, no leak (%s)%s"
                  % (rc, "" if rc == 0 else ": " + gw.stderr()[-2000:]))
        else:
            print("(valgrind case skipped)")
    finally:
        for g in gws:
            if g.p.poll() is None:
                g.stop(signal.SIGKILL)
        backend.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed[0], len(failures)))
    for f in failures:
        print("  - " + f.splitlines()[0])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
