#!/usr/bin/env python3
"""uvp-console's busy and idle times, a task's async stack and the warning
of a call into a context whose loop is not running, in a real terminal.

Usage: test_tasks.py UVP_CONSOLE TASKS_DEMO

tasks-demo listens at PATH with fiber "worker" (30 ms on the CPU, then
parked), fibers root > mid > leaf awaiting one another, and a call into a
context whose loop never runs.  Its own task dump (SIGUSR1, JSON lines)
is what the console must agree with: `--once --json` and `--once` give
the fibers' busy times and the stack's links of the dump; the screen
(tmux capture-pane) shows the BUSY and IDLE columns with the dump's busy
time, the leaf's details show its async stack up to root with the dump's
ids and sites, and the warnings name the stuck call's site.  Skips (77)
without tmux.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The imported tests leave no __pycache__ in the source tree.
sys.dont_write_bytecode = True
import test_console as tc  # noqa: E402
from test_console import check, wait_for, tmux, screen  # noqa: E402


def fmt_us(us):
    """The console's fmt_us (snap.c)."""
    if us is None or us < 0:
        return "-"
    if us < 1000:
        return "%dus" % us
    ms = us // 1000
    if ms < 1000:
        return "%dms" % ms
    if ms < 600000:
        return "%.1fs" % (ms / 1000)
    return "%dm" % (ms // 60000)


def own_dump(demo):
    """The demo's own task dump, by id."""
    demo.send_signal(signal.SIGUSR1)
    tasks = {}
    for line in demo.stdout:
        if line.startswith("end of dump"):
            break
        t = json.loads(line)
        if "id" in t:
            tasks[t["id"]] = t
    return tasks


def by_name(tasks, name):
    return next((t for t in tasks.values() if t.get("name") == name), None)


def main():
    if len(sys.argv) < 3 or shutil.which("tmux") is None:
        print("skipped: needs tmux (Debian's tmux) and the tools built")
        return tc.SKIP
    console, demo_exe = sys.argv[1:3]
    tmp = tempfile.mkdtemp(prefix="uvp-console-tasks-")
    path = os.path.join(tmp, "console.sock")
    demo = subprocess.Popen([demo_exe, path], stdout=subprocess.PIPE,
                            text=True)
    try:
        check(demo.stdout.readline().strip() == "ready", "tasks-demo ready")
        time.sleep(1.3)  # the call has waited a second: a warning
        rc, out, _ = tc.once(console, path, "--json")
        doc = json.loads(out) if rc == 0 else {}
        own = own_dump(demo)
        tasks = {t["id"]: t for t in doc.get("tasks", [])}
        check(sorted(tasks) == sorted(own),
              "--once --json lists the tasks of the program's own dump")
        fibers = [t for t in own.values() if t["task"] == "fiber"]
        check(len(fibers) == 7 and all(
            "busy_us" in t
            and tasks.get(t["id"], {}).get("busy_us") == t["busy_us"]
            for t in fibers),
            "each fiber's busy time is the dump's (they are parked): %s"
            % [(t.get("name"), t.get("busy_us")) for t in fibers])
        worker = by_name(own, "worker")
        check(worker and worker.get("busy_us", 0) >= 30000
              and worker.get("idle_us", 0) >= 1000000,
              "worker: busy 30 ms and more, idle the rest: %s" % worker)
        check(all("busy_us" not in t for t in own.values()
                  if t["task"] != "fiber"),
              "no busy time for what is not a fiber")
        leaf, mid, root = (by_name(own, n) for n in ("leaf", "mid", "root"))
        check(mid.get("waits_id") == leaf["id"]
              and root.get("waits_id") == mid["id"]
              and tasks[mid["id"]].get("waits_id") == leaf["id"],
              "the dump links leaf < mid < root, and --once --json too")
        fan = by_name(own, "fan")
        inputs = [t for t in own.values() if t.get("name") == "input"]
        check(len(inputs) == 2 and fan.get("waits_id")
              and all(t.get("input_of") == fan["waits_id"]
                      and tasks[t["id"]].get("input_of") == fan["waits_id"]
                      for t in inputs),
              "both inputs of fan's all() name it (input_of), in the dump "
              "and --once --json: %s" % [t.get("input_of") for t in inputs])
        warns = [w for w in doc.get("warnings", [])
                 if w["kind"] == "call-stuck"]
        call = own.get(warns[0]["id"]) if warns else None
        check(len(warns) == 1 and call is not None
              and "whose loop has not run" in call["waits_for"]["target"]
              and warns[0]["site"] == call["site"]
              and "not running" in warns[0]["why"],
              "one call-stuck warning, of the dump's stuck call, at its site "
              "%s: %s" % (call and call["site"], warns))
        others = [w for w in doc.get("warnings", [])
                  if w["kind"] != "call-stuck"]
        check(not others, "no other warning (never-settles included: every "
              "chain and the all() can still settle): %s" % others)

        rc, text, _ = tc.once(console, path)
        wrow = next((ln for ln in text.splitlines() if worker["id"] in ln),
                    "")
        check(rc == 0 and " BUSY " in text and " IDLE " in text
              and fmt_us(worker.get("busy_us")) in wrow.split()
              and "call-stuck" in text,
              "--once as text: BUSY and IDLE, the worker's busy time %s, "
              "the warning: %s" % (fmt_us(worker.get("busy_us")), wrow))

        tmux("kill-server")
        tmux("new-session", "-d", "-s", "c", "-x", "220", "-y", "50",
             "%s %s; echo console-exit=$?; sleep 60" % (console, path))
        ok = wait_for(lambda: worker["id"] in screen(), 10)
        shown = screen()
        head = next((ln for ln in shown.splitlines() if "BUSY" in ln), "")
        row = next((ln for ln in shown.splitlines() if worker["id"] in ln),
                   "")
        print("\n".join("    | " + ln for ln in shown.rstrip().splitlines()))
        check(ok and "8BUSY" in head and "9IDLE" in head
              and fmt_us(worker.get("busy_us")) in row.split(),
              "the screen's BUSY and IDLE columns, the worker's busy time "
              "%s as the dump says" % fmt_us(worker.get("busy_us")))
        check(call is not None and re.search(
            r"call-stuck: promise at %s" % re.escape(call["site"]),
            shown) is not None,
              "the warnings on the screen name the stuck call's site")
        # Sorted by BUSY (key 8, again: descending): the worker first.
        tmux("send-keys", "-t", "c", "8")
        tmux("send-keys", "-t", "c", "8")
        ok = wait_for(lambda: [m.group(2) for m in tc.ROW.finditer(screen())]
                      [:1] == [worker["id"]], 5)
        check(ok, "key 8 sorts by BUSY (twice: the busiest first)")
        # The leaf's details: its async stack up to root.
        # (Its id: "leaf" also matches mid's state, "fiber \"leaf\" ...".)
        tmux("send-keys", "-t", "c", "/")
        tmux("send-keys", "-t", "c", "-l", leaf["id"])
        tmux("send-keys", "-t", "c", "Enter")
        wait_for(lambda: len(tc.ROW.findall(screen())) == 1, 5)
        tmux("send-keys", "-t", "c", "Down", "Enter")
        want = ['#0 fiber "leaf" %s at %s' % (leaf["id"], leaf["site"]),
                '#1 awaited by fiber "mid" %s at %s' % (mid["id"], mid["site"]),
                '#2 awaited by fiber "root" %s at %s' % (root["id"],
                                                         root["site"])]
        ok = wait_for(lambda: "async stack:" in screen()
                      and all(w in screen() for w in want), 5)
        print("\n".join("    | " + ln
                        for ln in screen().rstrip().splitlines()))
        check(ok, "Enter on leaf: its async stack leaf < mid < root, with "
              "the dump's ids and spawn sites")
        # An input's details: the stack goes on through the all().
        one = inputs[0] if inputs else {"id": "?", "site": "?"}
        # Escape leaves the details; in the filter, Escape empties it.
        tmux("send-keys", "-t", "c", "Escape")
        time.sleep(0.1)
        tmux("send-keys", "-t", "c", "/")
        tmux("send-keys", "-t", "c", "Escape")
        time.sleep(0.1)
        tmux("send-keys", "-t", "c", "/")
        tmux("send-keys", "-t", "c", "-l", one["id"])
        tmux("send-keys", "-t", "c", "Enter")
        wait_for(lambda: len(tc.ROW.findall(screen())) == 1
                 and one["id"] in screen(), 5)
        tmux("send-keys", "-t", "c", "Down", "Enter")
        want = ['#0 fiber "input" %s at %s' % (one["id"], one["site"]),
                '#1 awaited by fiber "fan" %s at %s through combinator %s'
                % (fan and fan["id"], fan and fan["site"],
                   fan and fan.get("waits_id"))]
        ok = wait_for(lambda: "async stack:" in screen()
                      and all(w in screen() for w in want), 5)
        print("\n".join("    | " + ln
                        for ln in screen().rstrip().splitlines()))
        check(ok, "Enter on an input: its async stack goes through the "
              "all() to fan: %s" % want)
    finally:
        tmux("kill-server")
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(10)
        except subprocess.TimeoutExpired:
            demo.kill()
            code = demo.wait()
        check(code == 0, "tasks-demo ended cleanly (exit %s)" % code)
        shutil.rmtree(tmp, ignore_errors=True)
    return tc.report()


if __name__ == "__main__":
    sys.exit(main())
