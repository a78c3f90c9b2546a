#!/usr/bin/env python3
"""A timeline of uvp's flight recorder, as an SVG image.

    trace-svg.py TRACE.json [OUT.svg] [--title TEXT]

TRACE.json is what uvp_ctx_recorder_write writes with UVP_RECORD_JSON
(uvp-fanout --trace FILE, uvp-gateway --trace-dir DIR): Chrome's trace
event format, which https://ui.perfetto.dev opens too.  This draws it
without a browser, with python3 alone (no package to install): a row for
the loop (its polls, the I/O callbacks after them and uvp's callbacks), one
for the stall detector's reports, one per fiber (its runs and awaits), one
per group, then one per piece of work (an operation, a timer, a binding's
record: its kind and target), a group's work under it.  Work that ended
fulfilled is green, rejected red, cut by a cancellation orange, with the
cut's cause after it and an arrow from the cancellation; work still running
at the write is hatched.  The image goes to OUT.svg, or standard output."""
import html
import json
import sys

ROW = 18
LEFT = 330
WIDTH = 1100
TOP = 46
COLORS = {"poll": "#d9d9d9", "I/O callbacks": "#a6a6a6", "uvp": "#5b8bd9",
          "run": "#4caf50", "fiber": "#e8f5e9", "stall": "#d32f2f"}


def esc(s):
    return html.escape(str(s), quote=True)


def main(argv):
    args = [a for a in argv[1:]]
    title = None
    if "--title" in args:
        i = args.index("--title")
        title = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    with open(args[0]) as f:
        doc = json.load(f)
    events = doc["traceEvents"]
    names = {}  # tid -> thread name
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[e["tid"]] = e["args"]["name"]
    timed = [e for e in events if e.get("ph") != "M"]
    if not timed:
        sys.exit("trace-svg: no events")
    t0 = min(e["ts"] for e in timed)
    t1 = max(e["ts"] + e.get("dur", 0) for e in timed)
    span = max(t1 - t0, 1.0)

    def x(ts):
        return LEFT + (ts - t0) / span * (WIDTH - LEFT - 20)

    # Thread tracks: B/E slices, X slices, instants.
    slices = {}  # tid -> [(begin, end, name, args)]
    stacks = {}
    instants = []  # (tid, ts, name, args)
    for e in timed:
        ph, tid = e["ph"], e["tid"]
        if ph == "B":
            stacks.setdefault(tid, []).append(e)
        elif ph == "E" and stacks.get(tid):
            b = stacks[tid].pop()
            slices.setdefault(tid, []).append(
                (b["ts"], e["ts"], b["name"], {**b.get("args", {}),
                                               **e.get("args", {})}))
        elif ph == "X":
            slices.setdefault(tid, []).append(
                (e["ts"], e["ts"] + e["dur"], e["name"], e.get("args", {})))
        elif ph == "i":
            instants.append((tid, e["ts"], e["name"], e.get("args", {})))

    # Async slices: work and groups, by id.
    works, open_b = [], {}
    for e in timed:
        if e["ph"] == "b":
            open_b[e["id"]] = e
        elif e["ph"] == "e" and e["id"] in open_b:
            b = open_b.pop(e["id"])
            works.append({"cat": b["cat"], "name": b["name"], "begin": b["ts"],
                          "end": e["ts"], "args": {**b.get("args", {}),
                                                   **e.get("args", {})}})

    # Flows: each cut's source, the cancellation.
    starts = {e["id"]: e for e in timed if e["ph"] == "s"}
    sources = {}  # (tid, ts) of a flow's end -> its start
    for e in timed:
        if e["ph"] == "f" and e["id"] in starts:
            sources[(e["tid"], e["ts"])] = starts[e["id"]]

    # The rows, top to bottom.
    rows = []  # (label, kind, payload)
    rows.append(("loop", "thread", 1))
    if slices.get(2):
        rows.append(("stalls", "thread", 2))
    for tid in sorted(t for t in names if t >= 3):
        rows.append((names[tid], "thread", tid))
    works.sort(key=lambda w: w["begin"])
    groups = [w for w in works if w["cat"] == "group"]
    items = [w for w in works if w["cat"] == "work"]
    placed = set()
    for g in groups:
        rows.append((g["args"].get("group", "group"), "group", g))
        for w in items:
            if w["args"].get("in_group") == g["args"].get("id"):
                rows.append(("  " + label(w), "work", w))
                placed.add(id(w))
    for w in items:
        if id(w) not in placed:
            rows.append((label(w), "work", w))
    row_of_tid = {r[2]: i for i, r in enumerate(rows) if r[1] == "thread"}
    row_of_promise = {r[2]["args"].get("promise"): i for i, r in enumerate(rows)
                      if r[1] == "work"}

    height = TOP + ROW * len(rows) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
           f'height="{height}" font-family="sans-serif" font-size="11">',
           '<defs><pattern id="open" width="6" height="6" '
           'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
           '<rect width="3" height="6" fill="#9e9e9e"/></pattern>'
           '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
           'markerWidth="6" markerHeight="6" orient="auto-start-reverse">'
           '<path d="M 0 0 L 10 5 L 0 10 z" fill="#e65100"/></marker></defs>',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="10" y="18" font-size="14" font-weight="bold">'
                   f'{esc(title)}</text>')
    # Time axis, in ms from the first event.
    step = nice_step(span / 1000.0)
    ms = 0.0
    while ms * 1000.0 <= span + 1e-9:
        xx = x(t0 + ms * 1000.0)
        out.append(f'<line x1="{xx:.1f}" y1="{TOP - 6}" x2="{xx:.1f}" '
                   f'y2="{TOP + ROW * len(rows)}" stroke="#eeeeee"/>')
        out.append(f'<text x="{xx:.1f}" y="{TOP - 10}" text-anchor="middle" '
                   f'fill="#616161">{ms:g} ms</text>')
        ms += step
    for i, (lab, kind, payload) in enumerate(rows):
        y = TOP + i * ROW
        out.append(f'<text x="6" y="{y + 13}" fill="#212121">'
                   f'{esc(shorten(lab, 52))}</text>')
        if kind == "thread":
            for (b, e, name, a) in sorted(slices.get(payload, []),
                                          key=lambda s: -(s[1] - s[0])):
                color = COLORS.get(name, "#fff59d" if name.startswith("await")
                                   else "#90a4ae")
                inset = 0 if name == "fiber" else 2
                out.append(rect(x(b), y + 1 + inset, x(e), ROW - 2 - 2 * inset,
                                color, f'{name} {fmt_args(a)}'))
        elif kind == "group":
            out.append(rect(x(payload["begin"]), y + 3, x(payload["end"]),
                            ROW - 6, "#ce93d8", fmt_args(payload["args"])))
        else:
            a = payload["args"]
            color = ("url(#open)" if a.get("open") else "#ffb74d"
                     if "cut" in a else "#66bb6a" if a.get("status") in
                     (None, "fulfilled") else "#ef5350")
            out.append(rect(x(payload["begin"]), y + 3, x(payload["end"]),
                            ROW - 6, color, fmt_args(a)))
            why = shorten(f'cut: {a["cut"]}, {a.get("cause", "")}' if "cut" in a
                          else a.get("status", "open" if a.get("open") else ""),
                          90)
            # After the bar, or inside it where there is no room after.
            at = x(payload["end"]) + 4
            if at + 6 * len(why) > WIDTH:
                at = x(payload["begin"]) + 4
            out.append(f'<text x="{at:.1f}" y="{y + 13}" '
                       f'fill="#424242">{esc(why)}</text>')
    # Each cut: its mark, and an arrow from the cancellation that made it.
    for (tid, ts, name, a) in instants:
        if name != "cut":
            continue
        i = row_of_promise.get(a.get("promise"), row_of_tid.get(tid))
        if i is None:
            continue
        y = TOP + i * ROW + ROW / 2
        out.append(f'<circle cx="{x(ts):.1f}" cy="{y:.1f}" r="3" '
                   f'fill="#e65100"/>')
        src = sources.get((tid, ts))
        if src is not None and src["tid"] in row_of_tid:
            ys = TOP + row_of_tid[src["tid"]] * ROW + ROW / 2
            out.append(f'<path d="M {x(src["ts"]):.1f} {ys:.1f} C '
                       f'{x(src["ts"]) - 30:.1f} {(ys + y) / 2:.1f} '
                       f'{x(ts) - 30:.1f} {(ys + y) / 2:.1f} {x(ts) - 3:.1f} '
                       f'{y:.1f}" fill="none" stroke="#e65100" '
                       f'stroke-width="1.2" marker-end="url(#arrow)"/>')
    ly = TOP + ROW * len(rows) + 24
    legend = [("#5b8bd9", "uvp's callbacks"), ("#d9d9d9", "poll"),
              ("#a6a6a6", "I/O callbacks"), ("#4caf50", "fiber runs"),
              ("#fff59d", "fiber awaits"), ("#66bb6a", "work fulfilled"),
              ("#ef5350", "rejected"), ("#ffb74d", "cut (arrow: its cause)"),
              ("url(#open)", "still running")]
    lx = 6
    for color, text in legend:
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="10" '
                   f'fill="{color}" stroke="#757575" stroke-width="0.5"/>')
        out.append(f'<text x="{lx + 16}" y="{ly + 9}">{esc(text)}</text>')
        lx += 22 + 6.2 * len(text)
    out.append('</svg>')
    text = "\n".join(out) + "\n"
    if len(args) > 1:
        with open(args[1], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def label(w):
    target = w["args"].get("target")
    return f'{w["name"]} {target}' if target else w["name"]


def rect(x0, y, x1, h, color, tip):
    w = max(x1 - x0, 1.0)
    return (f'<rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h}" '
            f'fill="{color}" stroke="#616161" stroke-width="0.3">'
            f'<title>{esc(tip)}</title></rect>')


def fmt_args(a):
    return ", ".join(f"{k}={v}" for k, v in a.items())


def shorten(s, n):
    return s if len(s) <= n else s[:n - 3] + "..."


def nice_step(span_ms):
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100,
                 200, 500, 1000, 2000, 5000, 10000):
        if span_ms / step <= 12:
            return step
    return span_ms / 10


if __name__ == "__main__":
    main(sys.argv)
