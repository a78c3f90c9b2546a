#!/usr/bin/env python3
"""uvp-console against a real program, in a real terminal.

Usage: test_console.py UVP_CONSOLE UVP_GATEWAY UVP_FANOUT

uvp-gateway (two workers, the stall detector on) runs with
UVP_CONSOLE=PATH in front of a demo backend (`uvp-fanout --serve 0`)
whose /hang never answers, and three clients whose requests hang there.
uvp-console attaches in a tmux pane (PATH and PATH.1, the second
worker's); the screen, read with `tmux capture-pane -p`, must show the
same tasks (their ids) as the gateway's own task dump (SIGUSR1) taken at
the same moment; keys sort, filter and open a task's details;
`--once` (text) and `--once --json` (parsed) say the same; no warning
fires on this normal run; and when the gateway is killed the console
exits 0 saying the program went away.  Skips (77) without tmux.
UVP_CONSOLE_CAPTURE=FILE keeps the screen (the troubleshooting guide's),
and the gateway's dump in FILE.dump.
"""
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

# The imported tests leave no __pycache__ in the source tree.
sys.dont_write_bytecode = True
# The gateway tests' helpers: check, report (the failed checks, listed
# last), wait_for, Proc (a child that prints `listening on
# 127.0.0.1:PORT` once ready).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "e2e-gateway"))
from test_gateway import SKIP, Proc, check, report, wait_for  # noqa: E402


def tmux(*args):
    return subprocess.run(["tmux", "-L", SERVER] + list(args),
                          capture_output=True, text=True, timeout=20)


def screen():
    return tmux("capture-pane", "-p", "-t", "c").stdout


ROW = re.compile(r"^\s*(\d+)\s+(0x[0-9a-f]+)\s+(\S+)", re.M)


def screen_ids(text):
    return sorted(m.group(2) for m in ROW.finditer(text))


def dump_ids(text):
    """The ids of the gateway's SIGUSR1 task dumps (each worker's)."""
    ids = []
    for block in re.findall(r"worker \d+: tasks:\n((?:.+\n)*?)"
                            r"uvp-gateway: worker \d+: \d+ tasks?", text):
        ids += re.findall(r"^\w+(?: \"[^\"]*\")? (0x[0-9a-f]+) at ", block,
                          re.M)
    return sorted(ids)


def once(console, path, *extra):
    r = subprocess.run([console, "--once"] + list(extra) + [path],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def main():
    if len(sys.argv) < 4 or shutil.which("tmux") is None:
        print("skipped: needs tmux (Debian's tmux) and the tools built")
        return SKIP
    console, gateway, fanout = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix="uvp-console-e2e-")
    path = os.path.join(tmp, "console.sock")
    backend = Proc([fanout, "--serve", "0"], "backend")
    env = dict(os.environ, UVP_CONSOLE=path)
    gw = Proc([gateway, "-p", "0", "-w", "2", "-t", "60000", "--stall", "200",
               "-b", "http://127.0.0.1:%d/hang" % backend.port], "gateway",
              env=env)
    clients = []
    try:
        check(oct(os.stat(path).st_mode & 0o777) == "0o600"
              and os.path.exists(path + ".1"),
              "the gateway's two workers listen at PATH and PATH.1, mode "
              "0600")
        for i in range(3):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: e2e-%d"
                      b"\r\n\r\n" % i)
            clients.append(s)

        last = [None]

        def settled():
            """The documents once the three requests wait on the backend
            and the task list holds still (the same ids twice running)."""
            time.sleep(0.3)
            rc, out, _ = once(console, path, "--json")
            docs = [json.loads(ln) for ln in out.splitlines()] if rc == 0 \
                else []
            ids = sorted(t["id"] for d in docs for t in d["tasks"])
            members = sum(1 for d in docs for t in d["tasks"]
                          if t["task"] == "member")
            stable, last[0] = ids == last[0], ids
            return docs if members == 3 and stable else None
        docs = wait_for(settled, 30)
        check(docs and len(docs) == 2
              and all(d["console"] == 1 and d["program"] == "uvp-gateway"
                      and d["pid"] == gw.p.pid for d in docs),
              "--once --json: one document per worker, parsed: %s"
              % (docs and [len(d["tasks"]) for d in docs]))
        json_ids = sorted(t["id"] for d in docs or [] for t in d["tasks"])
        check(docs and all(d["warnings"] == [] for d in docs)
              and all(d["panel"]["stall"]["threshold_ms"] == 200
                      for d in docs),
              "no warning on a normal run (the stall detector on at 200 ms)")

        tmux("kill-server")
        tmux("new-session", "-d", "-s", "c", "-x", "200", "-y", "50",
             "%s %s; echo console-exit=$?; sleep 60" % (console, path))
        shown = wait_for(lambda: screen_ids(screen()) if
                         len(screen_ids(screen())) == len(json_ids) else None,
                         20)
        capture = screen()
        gw.p.send_signal(signal.SIGUSR1)
        dumped = wait_for(lambda: dump_ids(gw.stderr()) if
                          len(dump_ids(gw.stderr())) >= len(json_ids)
                          else None, 20)
        print("\n".join("    | " + ln for ln in capture.rstrip().splitlines()))
        check(shown and shown == dumped,
              "the screen shows the tasks of the gateway's own dump, taken "
              "at the same moment (%d tasks): screen %s, dump %s"
              % (len(shown or []), shown, dumped))
        check(shown == json_ids, "and those --once --json gave")
        if os.environ.get("UVP_CONSOLE_CAPTURE"):
            with open(os.environ["UVP_CONSOLE_CAPTURE"], "w") as f:
                f.write(capture)
            with open(os.environ["UVP_CONSOLE_CAPTURE"] + ".dump", "w") as f:
                f.write(gw.stderr())

        rc, text, _ = once(console, path)
        check(rc == 0 and "uvp-gateway pid %d" % gw.p.pid in text
              and sorted(screen_ids(text)) == json_ids
              and re.search(r"HTTP GET http://127\.0\.0\.1:%d/hang"
                            % backend.port, text) is not None,
              "--once as text: the panel and the same tasks")

        # Sort by ID (key 2): the rows in order of their ids.
        tmux("send-keys", "-t", "c", "2")
        ok = wait_for(lambda: [m.group(2) for m in ROW.finditer(screen())]
                      == json_ids, 15)
        check(ok, "key 2 sorts by ID")
        # Filter: only the members.
        tmux("send-keys", "-t", "c", "/", "m", "e", "m", "b", "e", "r",
             "Enter")
        ok = wait_for(lambda: {m.group(3) for m in ROW.finditer(screen())}
                      == {"member"}, 15)
        check(ok, "/member filters the table to the members: %s"
              % screen()[:600])
        # A task's details: its JSON, what it waits for.
        tmux("send-keys", "-t", "c", "Down", "Enter")
        ok = wait_for(lambda: '"waits_for"' in screen()
                      and "HTTP" in screen(), 15)
        check(ok, "Enter shows the selected task's details")

        # Seconds of the live view's snapshots later (the warnings that
        # wait a grace have had it): still none on this normal run.
        time.sleep(1.2)
        rc, out, _ = once(console, path, "--json")
        docs = [json.loads(ln) for ln in out.splitlines()] if rc == 0 else []
        check(len(docs) == 2 and all(d["warnings"] == [] for d in docs),
              "still no warning after %s of live snapshots: %s"
              % ("seconds", [d["warnings"] for d in docs]))

        gw.kill()
        ok = wait_for(lambda: "console-exit=0" in screen(), 10)
        check(ok and "the program went away" in screen(),
              "the gateway killed: the console says the program went away "
              "and exits 0: %s" % screen()[-400:])
    finally:
        tmux("kill-server")
        for s in clients:
            s.close()
        gw.kill()
        backend.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return report()


SERVER = "uvp-console-e2e-%d" % os.getpid()

if __name__ == "__main__":
    sys.exit(main())
