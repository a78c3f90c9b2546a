#!/usr/bin/env python3
"""The libcurl guide's example, end to end.

    test_readme_example.py FETCH3 UVP_FANOUT

FETCH3 (examples/curl/fetch3.c built; that docs/guide-curl.md holds it
verbatim is docs-programs' check, its block marked file=) is run on three
URLs of the demo server (uvp-fanout --serve, on 127.0.0.1): an answer, a
404 and a refused port, and every line of its output is checked; then
again under valgrind (any error or leak fails) when UVP_E2E_VALGRIND=1,
with the suppressions of UVP_VALGRIND_SUPP."""
import os
import re
import socket
import subprocess
import sys

fetch3, fanout = sys.argv[1:3]

server = subprocess.Popen([fanout, "--serve", "0"], stdout=subprocess.PIPE,
                          text=True)
try:
    line = server.stdout.readline()
    m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
    if not m:
        sys.exit("the demo server did not start: %r" % line)
    port = int(m.group(1))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    refused = s.getsockname()[1]
    s.close()
    urls = ["http://127.0.0.1:%d/fast" % port,
            "http://127.0.0.1:%d/missing" % port,
            "http://127.0.0.1:%d/" % refused]
    want = [
        "%s: HTTP 200, 5 bytes" % urls[0],
        "%s: HTTP 404, 10 bytes" % urls[1],
        "%s: ECONNREFUSED (Failed to connect to 127.0.0.1 port %d after"
        % (urls[2], refused),
    ]
    runs = [[]]
    if os.environ.get("UVP_E2E_VALGRIND") == "1" and \
            not os.access("/usr/bin/valgrind", os.X_OK):
        print("skip    valgrind run: /usr/bin/valgrind not installed")
    if os.environ.get("UVP_E2E_VALGRIND") == "1" and \
            os.access("/usr/bin/valgrind", os.X_OK):
        vg = ["/usr/bin/valgrind", "--quiet", "--error-exitcode=99",
              "--leak-check=full",
              "--errors-for-leak-kinds=definite,indirect,possible"]
        supp = os.environ.get("UVP_VALGRIND_SUPP")
        if supp:
            vg.append("--suppressions=" + supp)
        runs.append(vg)
    for prefix in runs:
        r = subprocess.run(prefix + [fetch3] + urls, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            sys.exit("%s exited %d:\n%s" % (prefix + [fetch3], r.returncode,
                                            r.stderr))
        got = r.stdout.splitlines()
        if len(got) != 3 or any(not g.startswith(w) for g, w in zip(got, want)):
            sys.exit("output:\n%s\nwanted lines starting with:\n%s"
                     % (r.stdout, "\n".join(want)))
        print("ok%s:\n%s" % (" (valgrind)" if prefix else "", r.stdout))
finally:
    server.terminate()
    server.wait()
