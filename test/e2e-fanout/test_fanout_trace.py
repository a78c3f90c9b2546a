#!/usr/bin/env python3
"""uvp-fanout --trace FILE: the demo fan-out under a 300 ms deadline,
recorded by uvp's flight recorder and written at the end as Chrome trace
JSON, which python's json module parses and this checks: well formed
(every begin has its end on its track or by its id, flows pair up, times
never go back on a track) and complete (each URL's transfer is a slice
with its target; those the deadline cut end with the cut and its cause,
linked to the cancellation by a flow); docs/trace-svg.py draws it as SVG;
a file that cannot be written stops the run before it starts.

    test_fanout_trace.py UVP_FANOUT TRACE_SVG_PY"""
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAILED: ") + what)
    if not cond:
        failures += 1


def well_formed(doc):
    """None, or what is wrong with the trace."""
    stacks, last, async_open, flows = {}, {}, {}, {}
    for i, e in enumerate(doc["traceEvents"]):
        ph = e["ph"]
        if ph == "M":
            continue
        if ph in ("b", "e"):
            if ph == "b":
                if e["id"] in async_open:
                    return "event %d: async %s begins twice" % (i, e["id"])
                async_open[e["id"]] = e
            elif async_open.pop(e["id"], None) is None:
                return "event %d: async %s ends unbegun" % (i, e["id"])
            continue
        tid, ts = e["tid"], e["ts"]
        if ts < last.get(tid, 0):
            return "event %d: track %d goes back in time" % (i, tid)
        last[tid] = ts
        if ph == "B":
            stacks.setdefault(tid, []).append(e["name"])
        elif ph == "E":
            if not stacks.get(tid):
                return "event %d: an end without a begin" % i
            stacks[tid].pop()
        elif ph in ("s", "f"):
            if (ph == "s") == (e["id"] in flows):
                return "event %d: flow %s out of pairs" % (i, e["id"])
            flows[e["id"]] = ph
    if any(stacks.values()) or async_open:
        return "slices left open: %s %s" % (stacks, list(async_open))
    if any(v != "f" for v in flows.values()):
        return "flows without an end"
    return None


def main():
    fanout, svg_tool = sys.argv[1:3]
    tmp = tempfile.mkdtemp(prefix="uvp-fanout-trace-")
    trace = os.path.join(tmp, "trace.json")
    out = subprocess.run([fanout, "-d", "300", "--trace", trace],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 0 and "12 URLs in" in out.stdout,
          "the demo under -d 300 with --trace: exit 0, its report "
          "(%d, %s)" % (out.returncode, out.stderr[-500:]))
    with open(trace) as f:
        doc = json.load(f)
    check(isinstance(doc.get("traceEvents"), list)
          and doc.get("otherData", {}).get("overwritten") == 0,
          "the file is one JSON object, its events all there")
    wrong = well_formed(doc)
    check(wrong is None, "well formed: %s" % (wrong or "every begin ended, "
                                              "flows paired, times in order"))
    evs = doc["traceEvents"]
    begins = {e["id"]: e for e in evs if e["ph"] == "b" and e["cat"] == "work"}
    ends = {e["id"]: e for e in evs if e["ph"] == "e" and e["cat"] == "work"}
    targets = sorted(b["args"].get("target", "") for b in begins.values()
                     if b["name"] == "HTTP")
    check(len(targets) == 12 and all(t.startswith("GET http") for t in
                                     targets),
          "each of the 12 URLs' transfers is an HTTP slice with its target "
          "(%s)" % targets)
    cut = [ends[i] for i, b in begins.items() if b["name"] == "HTTP"
           and "cut" in ends.get(i, {}).get("args", {})]
    hang = [i for i, b in begins.items()
            if b["args"].get("target", "").endswith("/hang")]
    check(hang and "cut" in ends[hang[0]]["args"]
          and ends[hang[0]]["args"]["cut"] == "ETIMEDOUT"
          and "deadline" in ends[hang[0]]["args"].get("cause", ""),
          "/hang's transfer ends cut by the deadline, with its cause (%s)"
          % (ends[hang[0]]["args"] if hang else None))
    cuts = [e for e in evs if e["ph"] == "i" and e["name"] == "cut"]
    flows = [e for e in evs if e["ph"] == "f" and e["cat"] == "cause"]
    check(len(cut) >= 1 and len(cuts) >= len(cut) and len(flows) == len(cuts),
          "each cut marked and linked to its cancellation by a flow "
          "(%d cut, %d marks, %d flows)" % (len(cut), len(cuts), len(flows)))
    check(any(e["ph"] == "B" and e["name"] == "poll" for e in evs)
          and any(e["ph"] == "B" and e["name"] == "uvp" for e in evs),
          "the loop's track: its polls and uvp's callbacks")

    svg = os.path.join(tmp, "timeline.svg")
    out = subprocess.run([sys.executable, svg_tool, trace, svg],
                         capture_output=True, text=True, timeout=60)
    rects = 0
    if out.returncode == 0:
        rects = len(ET.parse(svg).getroot().findall(
            "{http://www.w3.org/2000/svg}rect"))
    check(out.returncode == 0 and rects > 12,
          "docs/trace-svg.py draws it (%d rectangles) %s"
          % (rects, out.stderr[-300:]))

    bad = os.path.join(tmp, "no-such-dir", "trace.json")
    out = subprocess.run([fanout, "-d", "300", "--trace", bad],
                         capture_output=True, text=True, timeout=60)
    check(out.returncode == 1 and bad in out.stderr and out.stdout == "",
          "--trace into a directory that does not exist: exit 1 before the "
          "run, saying why (%r)" % out.stderr)
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)
    sys.exit(1 if failures else 0)


main()
