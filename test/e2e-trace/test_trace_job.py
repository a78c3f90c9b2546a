#!/usr/bin/env python3
"""One job across five processes, followed in one timeline: a nats-server
of its own, a backend (uvp-fanout --serve), uvp-gateway in front of it
(--trace-dir, one worker), two workers (uvp-fanout --nats --worker --trace)
and a coordinator (uvp-fanout --nats --trace) fetching URLs of the gateway.
uvp-trace merges the four trace files; this checks, in the merged file,
that every URL's request can be followed from the coordinator to a worker
to the gateway to the backend and back: a "request" flow from each client
span to the span that served it in another process, each served span
inside its request's span on the merged clock within the two processes'
stated bounds, no inconsistency reported, and (all on one machine, one
monotonic clock) each process's offset within its bound of the true one.
It also draws the job as SVG.  Then a durable job over the same
nats-server (-js): its worker's file, its wall clock put 3 s behind,
merged with its coordinator's must be placed by the messages, every
delivery after its publish.

    test_trace_job.py UVP_FANOUT UVP_GATEWAY UVP_TRACE NATS_SERVER [SVG_OUT]"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

# Enough that both workers serve some (a queue group picks one at random
# for each request: with 6, both went to one worker about one run in 32).
URLS = 16
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAILED: ") + what, flush=True)
    if not cond:
        failures += 1
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(path, pattern, what, proc=None):
    """The first match of pattern in the file at path (10 s at most)."""
    for _ in range(500):
        try:
            with open(path, errors="replace") as f:
                m = re.search(pattern, f.read())
            if m:
                return m
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    sys.exit("FAILED: %s: no '%s' in %s" % (what, pattern, path))


def wait_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit("FAILED: nothing listens on %d" % port)


def spans_of(doc):
    """span id -> {pid, begin, end, kind, parent, trace, name}."""
    spans = {}
    for e in doc["traceEvents"]:
        if e.get("cat") != "span":
            continue
        if e["ph"] == "b":
            a = e["args"]
            spans[e["id"]] = {"pid": e["pid"], "begin": e["ts"], "end": None,
                              "kind": a.get("kind"), "name": e["name"],
                              "parent": "0x" + a["parent_id"]
                              if "parent_id" in a else None,
                              "trace": a.get("trace_id")}
        elif e["ph"] == "e" and e["id"] in spans:
            spans[e["id"]]["end"] = e["ts"]
    return spans


def check_merged(doc, names):
    other = doc["otherData"]
    procs = {p["pid"]: p for p in other["processes"]}
    check([procs[p]["name"] for p in sorted(procs)] == names,
          "the merged file's processes, in order: %s" % names)
    check(all(p["aligned_by"] != "wall clock only" for p in procs.values()),
          "every process's clock placed (%s)" %
          ", ".join("%s %+.1f us within %.1f" %
                    (p["name"], p["offset_us"], p["bound_us"] or 0)
                    for p in procs.values()))
    check(other["inconsistent"] == 0, "no inconsistency reported")
    spans = spans_of(doc)
    flows = {}
    for e in doc["traceEvents"]:
        if e.get("cat") == "request":
            flows.setdefault(e["id"], {})[e["ph"]] = e
    paired = [f for f in flows.values() if set(f) == {"s", "f"}]
    check(len(paired) == len(flows) and flows,
          "%d request flows, each an \"s\" and an \"f\"" % len(flows))
    # Perfetto reads a flow's id as a hex number and drops one that is not.
    bad = [e["id"] for e in doc["traceEvents"] if e.get("ph") in ("s", "f")
           and not re.fullmatch(r"0x[0-9a-f]{16}", e["id"])]
    check(not bad, "every flow's id a hex number: %s" % (bad[:3] or "yes"))
    # Each flow: the client's span in the "s" event's process, the served
    # one in the "f"'s, the service inside the request within the bounds.
    served = {}  # client span id -> served span id
    late = []
    for fid, f in flows.items():
        cid, sid = f["s"]["args"]["client"], f["s"]["args"]["server"]
        c, s = spans.get(cid), spans.get(sid)
        if c is None or s is None or c["pid"] != f["s"]["pid"] or \
                s["pid"] != f["f"]["pid"] or s["parent"] != cid or \
                not re.fullmatch(r"0x[0-9a-f]{16}", fid):
            late.append("%s: not a client span and its child" % fid)
            continue
        served[cid] = sid
        if c["pid"] == s["pid"]:
            continue
        tol = procs[c["pid"]]["bound_us"] + procs[s["pid"]]["bound_us"] + 2e-3
        if s["begin"] < c["begin"] - tol or \
                (c["kind"] == "client" and s["end"] > c["end"] + tol):
            late.append("%s: served [%.3f, %.3f], asked [%.3f, %.3f], "
                        "bounds %.3f" % (fid, s["begin"], s["end"],
                                         c["begin"], c["end"], tol))
    check(not late, "each service inside its request on the merged clock, "
          "within the bounds: %s" % (late[:3] or "all %d" % len(flows)))
    return spans, served, procs


def follow(spans, served, root):
    """The processes a request from root's trace goes through, following
    the requests: each hop a client span in one process served in the
    next (a span's children by parent id within a process)."""
    children = {}
    for sid, s in spans.items():
        if s["parent"]:
            children.setdefault(s["parent"], []).append(sid)
    path = [spans[root]["pid"]]

    def walk(sid, path):
        best = list(path)
        for child in children.get(sid, []):
            c = spans[child]
            if c["pid"] != spans[sid]["pid"] and served.get(sid) != child:
                continue  # across processes only through a request's flow
            p = path + [c["pid"]] if c["pid"] != path[-1] else path
            got = walk(child, p)
            if len(got) > len(best):
                best = got
        return best

    return walk(root, path)


def durable_job(fanout, trace_tool, nats_url, bport, tmp, start, vg):
    """A durable job (JetStream): the coordinator publishes each URL under
    a PRODUCER span, the worker takes it under a CONSUMER span; no reply
    links them.  With the worker's wall clock put 3 s behind, the merge
    must place it by the messages (every delivery after its publish) and
    say so, not keep the wrong wall clock and report it consistent."""
    dc, dw = os.path.join(tmp, "dc.json"), os.path.join(tmp, "dw.json")
    urls = ["http://127.0.0.1:%s/fast?d%d" % (bport, i) for i in range(8)]
    coord, cout = start("dcoord", [fanout, "--nats", nats_url, "--durable",
                                   "tj", "--json", "--trace", dc] + urls)
    worker, wout = start("dworker", [fanout, "--nats", nats_url, "--durable",
                                     "tj", "--worker", "-c", "2", "--trace",
                                     dw])
    check(coord.wait(timeout=60) == 0, "durable coordinator exits 0")
    worker.send_signal(signal.SIGTERM)
    check(worker.wait(timeout=30) == 0, "durable worker drained, exits 0")
    with open(dw) as f:
        doc = json.load(f)
    doc["otherData"]["wall_origin_ns"] -= 3000000000
    skewed = os.path.join(tmp, "dw-skewed.json")
    with open(skewed, "w") as f:
        json.dump(doc, f)
    merged = os.path.join(tmp, "durable.json")
    m = subprocess.run(vg + [trace_tool, "merge", "-o", merged,
                             "coordinator=" + dc, "worker=" + skewed],
                       capture_output=True, text=True, timeout=120)
    print(m.stdout + m.stderr, end="")
    if not check(m.returncode == 0, "durable: uvp-trace merge: exit 0"):
        return
    with open(merged) as f:
        doc = json.load(f)
    procs = {p["name"]: p for p in doc["otherData"]["processes"]}
    check(procs["worker"]["aligned_by"] == "messages" and
          doc["otherData"].get("messages", 0) >= len(urls),
          "durable: the worker's clock 3 s behind, placed by the %d "
          "messages (%s, offset %.1f us)" % (
              doc["otherData"].get("messages", 0), procs["worker"]["aligned_by"],
              procs["worker"]["offset_us"]))
    spans = spans_of(doc)
    early = [sid for sid, s in spans.items() if s["kind"] == "consumer" and
             s["parent"] in spans and s["begin"] < spans[s["parent"]]["begin"]]
    check(not early and doc["otherData"]["inconsistent"] == 0,
          "durable: every delivery after its publish on the merged clock "
          "(%d before)" % len(early))


def main():
    fanout, gateway, trace_tool, nats = sys.argv[1:5]
    svg_out = sys.argv[5] if len(sys.argv) > 5 else None
    tmp = tempfile.mkdtemp(prefix="uvp-trace-job-")
    procs = []
    vg = []
    if os.environ.get("UVP_E2E_VALGRIND") == "1" and \
            os.path.exists("/usr/bin/valgrind"):
        vg = ["/usr/bin/valgrind", "--quiet", "--error-exitcode=99",
              "--leak-check=full", "--errors-for-leak-kinds=definite,indirect,possible"]

    def start(name, argv):
        out = open(os.path.join(tmp, name + ".out"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p, os.path.join(tmp, name + ".out")

    try:
        port = free_port()
        start("nats", [nats, "-a", "127.0.0.1", "-p", str(port), "-js",
                       "-sd", os.path.join(tmp, "js")])
        wait_port(port)
        nats_url = "nats://127.0.0.1:%d" % port
        backend, out = start("backend", [fanout, "--serve", "0"])
        bport = wait_for(out, r"listening.*:(\d+)", "backend", backend).group(1)
        gw_dir = os.path.join(tmp, "gateway")
        os.mkdir(gw_dir)
        gw, gw_out = start("gateway", [gateway, "-p", "0", "-w", "1",
                                       "--trace-dir", gw_dir, "-b",
                                       "http://127.0.0.1:%s/fast" % bport])
        gport = wait_for(gw_out, r"listening on 127\.0\.0\.1:(\d+)",
                         "gateway", gw).group(1)
        workers = []
        for w in ("w1", "w2"):
            p, out = start(w, [fanout, "--nats", nats_url, "--worker",
                               "--name", w, "-c", "2", "--trace",
                               os.path.join(tmp, w + ".json")])
            workers.append((p, out))
        for p, out in workers:
            wait_for(out, "serving", "worker", p)
        urls = ["http://127.0.0.1:%s/job?%d" % (gport, i) for i in range(URLS)]
        coord = subprocess.run(
            [fanout, "--nats", nats_url, "--json", "-c", "4", "--trace",
             os.path.join(tmp, "coordinator.json")] + urls,
            capture_output=True, text=True, timeout=60)
        rows = [json.loads(l) for l in coord.stdout.splitlines()
                if l.startswith("{") and '"n":' in l]
        check(coord.returncode == 0 and len(rows) == URLS and
              all(r.get("status") == 200 for r in rows),
              "the coordinator: %d URLs through the workers and the gateway, "
              "each 200 (exit %d, %s)" % (len(rows), coord.returncode,
                                          coord.stderr[-300:]))
        check({r.get("worker") for r in rows} <= {"w1", "w2"},
              "the rows name the workers: %s" %
              sorted({r.get("worker") for r in rows}))
        for p, out in workers:
            p.send_signal(signal.SIGTERM)
        for p, out in workers:
            check(p.wait(timeout=30) == 0, "a worker drained on SIGTERM, "
                  "its trace written")
        gw.send_signal(signal.SIGUSR1)
        gw_file = wait_for(gw_out, r"flight recorder: \d+ events in (\S+)",
                           "the gateway's trace", gw).group(1)
        gw.send_signal(signal.SIGTERM)
        check(gw.wait(timeout=30) == 0, "the gateway exited 0 on SIGTERM")

        names = ["coordinator", "w1", "w2", "gateway"]
        files = [os.path.join(tmp, "coordinator.json"),
                 os.path.join(tmp, "w1.json"), os.path.join(tmp, "w2.json"),
                 gw_file]
        merged = os.path.join(tmp, "merged.json")
        svg = svg_out or os.path.join(tmp, "job.svg")
        m = subprocess.run(vg + [trace_tool, "merge", "-o", merged, "--svg", svg,
                                 "--title", "uvp-fanout --nats: one job, %d URLs"
                                 % URLS] +
                           ["%s=%s" % nf for nf in zip(names, files)],
                           capture_output=True, text=True, timeout=120)
        print(m.stdout + m.stderr, end="")
        if not check(m.returncode == 0, "uvp-trace merge: exit 0"):
            return
        with open(merged) as f:
            doc = json.load(f)
        spans, served, pinfo = check_merged(doc, names)
        # All on one machine, one CLOCK_MONOTONIC: each file's true offset
        # from the reference is what its wall and monotonic origins say.
        origin = []
        for path in files:
            with open(path) as f:
                o = json.load(f)["otherData"]
            origin.append((o["wall_origin_ns"] - o["ts_origin_ns"]) / 1e3)
        off = ["%s %+.1f us (true %+.1f)" % (pinfo[i + 1]["name"],
                                            pinfo[i + 1]["offset_us"],
                                            origin[i] - origin[0])
               for i in range(len(files))
               if pinfo[i + 1]["bound_us"] is None or
               abs(pinfo[i + 1]["offset_us"] - (origin[i] - origin[0])) >
               pinfo[i + 1]["bound_us"] + 2e-3]
        check(not off, "each offset within its bound of the true one%s" %
              (": " + ", ".join(off) if off else ""))
        # Every URL: from the coordinator's span for it (a root), through a
        # worker and the gateway, to the gateway's request to the backend.
        roots = [sid for sid, s in spans.items()
                 if s["pid"] == 1 and s["parent"] is None]
        check(len(roots) == URLS, "the coordinator's trace: a root span per "
              "URL (%d)" % len(roots))
        gw_pid = 4
        whole = 0
        for root in roots:
            path = follow(spans, served, root)
            # the gateway's request to the backend, inside its service
            served_gw = [s for s in spans.values()
                         if s["pid"] == gw_pid and s["kind"] == "server" and
                         s["trace"] == spans[root]["trace"]]
            to_backend = [sid for sid, s in spans.items()
                          if s["pid"] == gw_pid and s["kind"] == "client" and
                          s["trace"] == spans[root]["trace"] and
                          any(g["begin"] <= s["begin"] and
                              s["end"] <= g["end"] for g in served_gw)]
            if len(path) >= 3 and path[0] == 1 and path[1] in (2, 3) and \
                    path[2] == gw_pid and to_backend:
                whole += 1
            else:
                print("  %s (%s): through pids %s, %d requests to the backend"
                      % (root, spans[root]["name"], path, len(to_backend)))
        check(whole == URLS, "every URL followed coordinator -> worker -> "
              "gateway -> backend (%d of %d)" % (whole, URLS))
        tree = ET.parse(svg)
        texts = [t.text for t in tree.iter("{http://www.w3.org/2000/svg}text")]
        check(all(n in texts for n in names),
              "the SVG: a lane for each process")
        arrows = [l for l in tree.iter("{http://www.w3.org/2000/svg}line")
                  if l.get("marker-end")]
        check(len(arrows) >= 2 * URLS, "the SVG: arrows for the requests "
              "(%d)" % len(arrows))
        durable_job(fanout, trace_tool, nats_url, bport, tmp, start, vg)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if failures == 0:
            shutil.rmtree(tmp)
        else:
            print("the processes' output and traces kept in %s" % tmp)


if __name__ == "__main__":
    main()
    sys.exit(1 if failures else 0)
