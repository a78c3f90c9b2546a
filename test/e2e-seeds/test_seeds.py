#!/usr/bin/env python3
"""End-to-end test of one seed example (examples/seeds/).

Usage: test_seeds.py NAME EXE               a seed: run `EXE fibers` and
                                            `EXE handlers`
       test_seeds.py users EXE

A seed must exit 0 in both modes and print exactly the result lines below
in both (lines starting with "timing:" are measured times: those are only
checked against loose bounds, in the plain runs).  `users` is the fiber
guide's first example (examples/seeds/users.c; that docs/guide-fibers.md
holds it verbatim is docs-programs' check): its output is checked.  With
UVP_E2E_VALGRIND=1 and valgrind
installed, each run is repeated under memcheck: no error, no leak.
Everything is on 127.0.0.1 (the seeds start their own demo server) and
bounded in time.  Standard library only.
"""
import os
import re
import shutil
import subprocess
import sys

PLAIN_TIMEOUT = 20.0
VALGRIND_TIMEOUT = 120.0
# Every leak kind counts, "still reachable" too: a promise reference never
# released keeps its context's memory reachable through uvp's registry,
# and a seed ends with nothing in use.
VALGRIND = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--show-leak-kinds=all", "--errors-for-leak-kinds=all"]

# What each seed must print, in order, timing lines left out.  The inputs
# are fixed by the programs (which files exist, which demo endpoints are
# asked), so every line follows from them.
EXPECTED = {
    "users": [
        "loaded 3 users, 1 failed: user 2 (ENOENT)",
        "  user 1: Alice",
        "  user 3: Charlie",
        "  user 4: Dave",
    ],
    "allsettled": [
        "loaded 3 users, 1 failed: user 2 (ENOENT)",
        "successful: Alice, Charlie, Dave",
        "notifications: 1 sent, 2 failed",
        "failed users: Charlie (HTTP 500), Dave (ECONNRESET)",
    ],
    "dashboard": [
        "round 1: 4 cards, 2 failed",
        "  profile: 200 fast",
        "  news: failed (ECONNREFUSED), retry offered",
        "  orders: 200 slow",
        "  ads: failed (HTTP 500), retry offered",
        "the news service is back",
        "round 2: 2 cards, 1 failed",
        "  news: 200 fast",
        "  ads: failed (HTTP 500), retry offered",
        "dashboard: 3 of 4 cards shown",
    ],
    "all-vs-allsettled": [
        "Promise.all caught: ECONNRESET",
        "Promise.allSettled results:",
        "  0: success - 200 fast",
        "  1: failed - ECONNRESET",
        "  2: success - 200 slow",
    ],
    "race-timeout": [
        "race([fetch /slow, timeout(1000)]): 200 slow (timeout cancelled)",
        "race([fetch /slow, timeout(100)]): ETIMEDOUT (fetch cancelled)",
        "race([fetch /hang, timeout(100)]): ETIMEDOUT (fetch cancelled)",
    ],
    "any-mirrors": [
        "case 1: first working mirror: 4 (200 fast)",
        "  mirror 1: ECONNREFUSED",
        "  mirror 2: HTTP 404",
        "  mirror 3: ECANCELED",
        "  mirror 4: 200 fast",
        "case 2: no mirror works (EAGGREGATE): ECONNREFUSED, ECONNRESET",
    ],
    "sequential": [
        "sequential: 200 slow, 200 one byte at a time., 200 fast, 200 slow",
        "parallel: 200 slow, 200 one byte at a time., 200 fast, 200 slow",
    ],
}

failures = []


def check(cond, what):
    print(("ok      " if cond else "FAILED  ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def run(argv, timeout):
    try:
        p = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, [], "timed out after %.0f s" % timeout
    return p.returncode, p.stdout.splitlines(), p.stderr


def numbers(line, pattern):
    m = re.search(pattern, line)
    return [float(x) for x in m.groups()] if m else None


# ---- the timing lines: loose bounds on what the programs measured -----------
# The demo server answers /slow after 300 ms and /trickle in ~200 ms; a
# loaded machine only makes things slower, so lower bounds are tight and
# upper bounds wide.

def timing_all_vs_allsettled(t):
    v = numbers(" ".join(t), r"Promise\.all settled after ([\d.]+) ms, "
                             r"Promise\.allSettled after ([\d.]+) ms")
    if check(v is not None, "timing line present"):
        all_ms, settled_ms = v
        check(all_ms < 250, "all failed fast (%.1f ms), without waiting for "
                            "/slow" % all_ms)
        check(settled_ms >= 290, "allSettled waited for /slow (%.1f ms)"
                                 % settled_ms)


def timing_race_timeout(t):
    ms = [numbers(x, r"case \d settled after ([\d.]+) ms") for x in t]
    if check(len(ms) == 3 and None not in ms, "three timing lines"):
        (a,), (b,), (c,) = ms
        check(290 <= a < 1000, "case 1 waited for /slow, not the timeout "
                               "(%.1f ms)" % a)
        check(90 <= b < 290, "case 2 ended at its timeout (%.1f ms)" % b)
        check(90 <= c < 1000, "case 3 ended at its timeout (%.1f ms)" % c)


def timing_sequential(t):
    pat = r"(\w+) took ([\d.]+) ms; latencies: sum ([\d.]+) ms, max ([\d.]+)"
    got = {}
    for line in t:
        m = re.search(pat, line)
        if m:
            got[m.group(1)] = [float(x) for x in m.groups()[1:]]
    if not check(set(got) == {"sequential", "parallel"}, "two timing lines"):
        return
    seq, seq_sum, _ = got["sequential"]
    par, _, par_max = got["parallel"]
    # Sequential is the sum of the latencies, parallel the max of them.
    check(seq >= 700, "sequential took the sum: %.1f ms >= 700" % seq)
    check(seq + 1 >= seq_sum, "sequential %.1f ms >= sum of latencies "
                              "%.1f ms" % (seq, seq_sum))
    check(par >= 290, "parallel took the max: %.1f ms >= 290" % par)
    check(par + 1 >= par_max, "parallel %.1f ms >= max latency %.1f ms"
                              % (par, par_max))
    check(seq / par >= 1.5, "parallel %.1fx faster (>= 1.5)" % (seq / par))
    ratio = [numbers(x, r"parallel took ([\d.]+) of the sequential time")
             for x in t]
    ratio = [r for r in ratio if r]
    check(len(ratio) == 1 and abs(ratio[0][0] - par / seq) < 0.01,
          "the printed ratio is parallel / sequential")


# Seeds also run on uvp's virtual clock (seed-NAME MODE virtual-clock,
# UVP_CLOCK_AUTO): the same result lines and the same timing bounds.  In
# race-timeout every wait has a request in flight, so the clock keeps the
# loop's pace: /slow (300 ms) still beats timeout(1000), which a clock
# jumping whenever the loop waits would fire first, and timeout(100) still
# beats /slow and /hang.
VIRTUAL = {"race-timeout"}

TIMING = {
    "all-vs-allsettled": timing_all_vs_allsettled,
    "race-timeout": timing_race_timeout,
    "sequential": timing_sequential,
}


def run_mode(name, argv, label, valgrind):
    """Run once; check exit status and result lines; return them."""
    if valgrind:
        argv = VALGRIND + argv
    rc, out, err = run(argv, VALGRIND_TIMEOUT if valgrind else PLAIN_TIMEOUT)
    check(rc == 0, "%s: exit status %s%s" % (label, rc,
                                             "" if rc == 0 else "\n" + err))
    check(err.strip() == "", "%s: nothing on stderr%s" %
          (label, "" if err.strip() == "" else ":\n" + err))
    results = [x for x in out if not x.startswith("timing:")]
    timing = [x for x in out if x.startswith("timing:")]
    ok = check(results == EXPECTED[name], "%s: result lines as expected"
               % label)
    if not ok:
        print("  got:\n    " + "\n    ".join(results))
    if not valgrind and name in TIMING:
        TIMING[name](timing)
    return results


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in EXPECTED:
        sys.exit(__doc__)
    name, exe = sys.argv[1], sys.argv[2]
    use_valgrind = (os.environ.get("UVP_E2E_VALGRIND") == "1"
                    and shutil.which("valgrind") is not None)
    if (os.environ.get("UVP_E2E_VALGRIND") == "1" and not use_valgrind):
        print("skip    valgrind runs: valgrind not installed")
    if name == "users":
        modes = [[]]
    else:
        modes = [["fibers"], ["handlers"]]
    if name in VIRTUAL:
        modes += [m + ["virtual-clock"] for m in modes]
    for valgrind in ([False, True] if use_valgrind else [False]):
        got = [run_mode(name, [exe] + m, " ".join([name] + m) +
                        (" (valgrind)" if valgrind else ""), valgrind)
               for m in modes]
        if len(got) >= 2:
            check(all(g == got[0] for g in got),
                  "fibers and handlers%s print the same results%s"
                  % (" on both clocks" if len(got) > 2 else "",
                     " (valgrind)" if valgrind else ""))
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
