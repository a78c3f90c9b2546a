#!/usr/bin/env python3
"""uvp-fanout --nats --trace FILE and --worker --trace FILE end to end: a
nats-server -js of its own (a free port on 127.0.0.1, a store of its own),
the demo server, and

  core     a worker (--trace) and a coordinator (--trace) fetching three
           URLs: the coordinator's file has a root span per URL ("uvp-fanout
           url", each a trace of its own) and a CLIENT span child of it for
           the URL's NATS request; the worker's has a SERVER span per URL
           whose trace and parent are that CLIENT span's
  durable  --durable: a URL of /hang published under its root span (a
           PRODUCER span), taken by a worker killed with SIGKILL while it
           fetches, redelivered after ack_wait to a second worker
           (--trace): its CONSUMER span is in the URL's trace, child of
           the PRODUCER span, and the row says delivery 2

Every process exits 0; children are killed by PID only.

    test_fanout_nats_trace.py UVP_FANOUT NATS_SERVER"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAILED: ") + what)
    if not cond:
        failures += 1


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(cond, what, secs=20):
    end = time.time() + secs
    while not cond():
        if time.time() > end:
            raise SystemExit("FAILED: no " + what)
        time.sleep(0.02)


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def line_in(path, text):
    try:
        with open(path) as f:
            return text in f.read()
    except OSError:
        return False


def spans(path):
    """{span_id: begin args + name + status} of the trace file at path."""
    with open(path) as f:
        doc = json.load(f)
    out, ends = {}, {}
    for e in doc["traceEvents"]:
        if e.get("cat") != "span":
            continue
        if e["ph"] == "b":
            a = dict(e["args"])
            a["name"] = e["name"]
            out[a["span_id"]] = a
            check(e["id"] == "0x" + a["span_id"], "%s: its id is its span id" % e["name"])
        elif e["ph"] == "e":
            ends[e["id"][2:]] = e["args"].get("status")
    for sid, a in out.items():
        a["status"] = ends.get(sid)
    return out


def named(sp, name):
    return [a for a in sp.values() if a["name"] == name]


def main():
    fanout, nats = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp()
    procs = []

    def start(args, out):
        p = subprocess.Popen(args, stdout=open(out, "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        port = free_port()
        start([nats, "-js", "-sd", os.path.join(tmp, "store"), "-a", "127.0.0.1",
               "-p", str(port)], os.path.join(tmp, "ns.log"))
        wait_for(lambda: listening(port), "nats-server")
        url = "nats://127.0.0.1:%d" % port
        demo_out = os.path.join(tmp, "demo")
        start([fanout, "--serve", "0"], demo_out)
        wait_for(lambda: line_in(demo_out, "listening"), "demo server")
        dp = int(open(demo_out).read().strip().rsplit(":", 1)[1])
        base = "http://127.0.0.1:%d" % dp

        # ---- core: a worker and a coordinator, both traced ----------------
        wtrace = os.path.join(tmp, "w1.json")
        wout = os.path.join(tmp, "w1.log")
        w1 = start([fanout, "--nats", url, "--worker", "-c", "4", "--name", "w1",
                    "--trace", wtrace], wout)
        wait_for(lambda: line_in(wout, "serving as"), "serving worker")
        ctrace = os.path.join(tmp, "c.json")
        urls = [base + "/fast?1", base + "/fast?2", base + "/slow?3"]
        r = subprocess.run([fanout, "--nats", url, "-c", "4", "-m", "5", "--json",
                            "--trace", ctrace] + urls,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60, text=True)
        check(r.returncode == 0, "coordinator exits 0 (%d: %s)" % (r.returncode, r.stdout[-300:]))
        w1.send_signal(signal.SIGTERM)
        check(w1.wait(30) == 0, "worker drained, exits 0")
        cs, ws = spans(ctrace), spans(wtrace)
        roots = named(cs, "uvp-fanout url")
        clients = named(cs, "request uvp-fanout.fetch")
        servers = named(ws, "serve uvp-fanout.fetch")
        check(len(roots) == 3, "a root span per URL (%d)" % len(roots))
        check(len({a["trace_id"] for a in roots}) == 3, "each URL a trace of its own")
        check(all("parent_id" not in a and a["kind"] == "internal" for a in roots),
              "the roots have no parent")
        check(all(a["status"] == "fulfilled" for a in roots), "each root ended, fulfilled")
        check(len(clients) == 3, "a CLIENT span per request (%d)" % len(clients))
        by_id = {a["span_id"]: a for a in roots}
        check(all(a["kind"] == "client" and a["parent_id"] in by_id and
                  by_id[a["parent_id"]]["trace_id"] == a["trace_id"] for a in clients),
              "each CLIENT span a child of its URL's root, in its trace")
        check(len(servers) == 3, "a SERVER span per request served (%d)" % len(servers))
        cl = {a["span_id"]: a for a in clients}
        check(all(a["kind"] == "server" and a["parent_id"] in cl and
                  cl[a["parent_id"]]["trace_id"] == a["trace_id"] for a in servers),
              "each SERVER span a child of a CLIENT span, in its trace")
        check(len({a["parent_id"] for a in servers}) == 3, "each request served once")
        check(all(a["status"] == "fulfilled" for a in servers + clients), "each ended fulfilled (replied)")

        # ---- durable: a redelivery joins the URL's trace -------------------
        dctrace = os.path.join(tmp, "dc.json")
        dcout = os.path.join(tmp, "dc.out")
        coord = subprocess.Popen([fanout, "--nats", url, "--durable", "tr", "-m", "1",
                                  "--json", "--trace", dctrace, base + "/hang"],
                                 stdout=open(dcout, "w"), stderr=subprocess.STDOUT)
        procs.append(coord)
        d1 = start([fanout, "--nats", url, "--durable", "tr", "--worker", "-c", "1",
                    "--name", "d1"], os.path.join(tmp, "d1.log"))

        def hanging():
            with urllib.request.urlopen(base + "/stats", timeout=5) as f:
                return json.load(f)["hanging"] > 0
        wait_for(hanging, "fetch of /hang")
        d1.kill()
        d1.wait()
        d2trace = os.path.join(tmp, "d2.json")
        d2 = start([fanout, "--nats", url, "--durable", "tr", "--worker", "-c", "1",
                    "--name", "d2", "--trace", d2trace], os.path.join(tmp, "d2.log"))
        check(coord.wait(60) == 0, "durable coordinator exits 0")
        d2.send_signal(signal.SIGTERM)
        check(d2.wait(30) == 0, "second worker drained, exits 0")
        rows = [json.loads(l) for l in open(dcout) if '"n":' in l]
        check(len(rows) == 1 and rows[0].get("delivery") == 2 and
              rows[0].get("worker") == "d2",
              "the URL redelivered to the second worker: %s" % rows)
        dcs, d2s = spans(dctrace), spans(d2trace)
        droots = named(dcs, "uvp-fanout url")
        prods = named(dcs, "publish uvp-fanout.job.tr")
        cons = named(d2s, "consume uvp-fanout.job.tr")
        check(len(droots) == 1 and len(prods) == 1, "a root and a PRODUCER span")
        if droots and prods and cons:
            check(prods[0]["kind"] == "producer" and
                  prods[0]["parent_id"] == droots[0]["span_id"] and
                  prods[0]["trace_id"] == droots[0]["trace_id"],
                  "the PRODUCER span a child of the URL's root")
            check(len(cons) == 1 and cons[0]["kind"] == "consumer" and
                  cons[0]["trace_id"] == droots[0]["trace_id"] and
                  cons[0]["parent_id"] == prods[0]["span_id"],
                  "the redelivery's CONSUMER span in the URL's trace, child of "
                  "the PRODUCER span")
        else:
            check(False, "CONSUMER span in the second worker's trace (%d)" % len(cons))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        sys.exit(1)


main()
