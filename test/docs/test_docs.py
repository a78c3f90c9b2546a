#!/usr/bin/env python3
"""The programs and commands of README.md and docs/guide-*.md, run.

    test_docs.py SOURCE_ROOT BUILD_ROOT [SANITIZE]

A fenced block is tested when its info string says so (GitHub renders
the block by its first word alone, so the marks do not show):

  ```c program [file=PATH] [compile-only]
      A complete C program.  It is compiled with cc -Wall -Wextra -Werror
      against the built library, through the pkg-config files of the
      uninstalled build (BUILD_ROOT/meson-uninstalled; uvp-curl's when it
      includes <uvp-curl.h>), then run with no arguments: it must exit 0.
      file=PATH: the block must be SOURCE_ROOT/PATH verbatim (that file is
      built by meson too).  compile-only: not run (it needs arguments or a
      server; another test runs it).
  ```sh run
      Commands, run with bash -e in a fresh temporary directory that holds
      a symbolic link to each top-level entry of SOURCE_ROOT and one named
      build to BUILD_ROOT, so that examples/... and build/... resolve as
      from the source root while what the commands write stays in the
      temporary directory.  pkg-config finds the uninstalled build and the
      dynamic linker its libraries.  `bash .ci/example` and `bash .ci/test`
      are never run (CI runs them anyway): a block holding one fails.
  ```text output
      What the program or commands of the nearest tested block above print
      on stdout, exactly (trailing blank space aside).

Each program is run again under valgrind (no error, no leak) when
UVP_E2E_VALGRIND=1 and valgrind is installed.  SANITIZE is meson's
b_sanitize: a sanitized library needs the programs built the same way.
Exit 77 (skipped) when pkg-config cannot find the uninstalled build."""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

source_root, build_root = (os.path.abspath(a) for a in sys.argv[1:3])
sanitize = sys.argv[3] if len(sys.argv) > 3 else "none"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NEVER = ("bash .ci/example", "bash .ci/test")
failures = []


def fail(where, why):
    failures.append("%s: %s" % (where, why))
    print("FAIL %s: %s" % (where, why))


def blocks(path):
    """(line, words of the info string, body) of every fenced block."""
    text = open(path).read()
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        yield line, m.group(1).split(), m.group(2)


env = dict(os.environ)
env["PKG_CONFIG_PATH"] = os.path.join(build_root, "meson-uninstalled")
env["LD_LIBRARY_PATH"] = os.pathsep.join(
    [build_root, os.path.join(build_root, "bindings", "curl")] +
    ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
env.pop("UVP_TRACES", None)
if subprocess.run(["pkg-config", "--exists", "uvp"], env=env).returncode:
    print("pkg-config finds no uninstalled uvp in %s: skipped"
          % env["PKG_CONFIG_PATH"])
    sys.exit(77)
cc = shlex.split(os.environ.get("CC", "cc"))
sanitize_flags = [] if sanitize in ("none", "") else ["-fsanitize=" + sanitize]
valgrind = (os.environ.get("UVP_E2E_VALGRIND") == "1" and sanitize_flags == []
            and shutil.which("valgrind") is not None)
VALGRIND = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible"]
supp = os.path.join(source_root, "test", "valgrind.supp")
if os.path.exists(supp):
    VALGRIND.append("--suppressions=" + supp)


def scratch():
    """A temporary directory that looks like the source root."""
    d = tempfile.mkdtemp(prefix="uvp-docs-")
    for name in os.listdir(source_root):
        if name not in ("build",) and not name.startswith("."):
            os.symlink(os.path.join(source_root, name), os.path.join(d, name))
    os.symlink(os.path.abspath(build_root), os.path.join(d, "build"))
    return d


def run(where, argv, cwd):
    """Runs argv in its own session; returns its stdout, or None."""
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.communicate()
        fail(where, "%s: no exit within 120 s" % argv[0])
        return None
    try:
        os.killpg(p.pid, 9)  # whatever it left running in the background
    except ProcessLookupError:
        pass
    if p.returncode != 0:
        fail(where, "%s exited %d:\n%s%s" % (" ".join(argv), p.returncode,
                                             out, err))
        return None
    return out


def program(where, words, body, d):
    opts = dict(w.split("=", 1) for w in words if "=" in w)
    if "file" in opts:
        path = os.path.join(source_root, opts["file"])
        if not os.path.exists(path) or open(path).read() != body:
            fail(where, "the block is not %s verbatim" % opts["file"])
    pc = "uvp-curl" if "#include <uvp-curl.h>" in body else "uvp"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", pc], env=env,
                           capture_output=True, text=True)
    if flags.returncode != 0:
        print("skip %s: pkg-config %s: %s" % (where, pc, flags.stderr.strip()))
        return None
    src = os.path.join(d, "prog.c")
    open(src, "w").write(body)
    built = subprocess.run(cc + ["-Wall", "-Wextra", "-Werror"] +
                           sanitize_flags + ["-o", os.path.join(d, "prog"),
                                             src] + flags.stdout.split(),
                           env=env, capture_output=True, text=True)
    if built.returncode != 0:
        fail(where, "does not compile:\n" + built.stderr)
        return None
    if "compile-only" in words:
        print("ok %s: compiles" % where)
        return None
    out = run(where, [os.path.join(d, "prog")], d)
    if out is not None and valgrind:
        again = run(where + " (valgrind)", VALGRIND + [os.path.join(d, "prog")],
                    d)
        if again is not None and again != out:
            print("note %s: valgrind's run printed otherwise:\n%s"
                  % (where, again))
    if out is not None:
        print("ok %s: ran" % where)
    return out


def commands(where, body, d):
    for never in NEVER:
        if never in body:
            fail(where, "`%s` is not for this test: leave the block unmarked"
                 % never)
            return None
    out = run(where, ["bash", "-e", "-o", "pipefail", "-c", body], d)
    if out is not None:
        print("ok %s: ran" % where)
    return out


docs = [os.path.join(source_root, "README.md")] + sorted(
    glob.glob(os.path.join(source_root, "docs", "guide-*.md")))
tested = 0
for doc in docs:
    name = os.path.relpath(doc, source_root)
    last = None  # (where, stdout) of the last tested block
    for line, words, body in blocks(doc):
        where = "%s:%d" % (name, line)
        kind = words[0] if words else ""
        if kind == "c" and "program" in words[1:]:
            d = scratch()
            try:
                last = (where, program(where, words, body, d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            tested += 1
        elif kind in ("sh", "console") and "run" in words[1:]:
            d = scratch()
            try:
                last = (where, commands(where, body, d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            tested += 1
        elif "output" in words[1:]:
            if last is None:
                fail(where, "an output block with no tested block above it")
            elif last[1] is not None:
                got = [l.rstrip() for l in last[1].rstrip().splitlines()]
                want = [l.rstrip() for l in body.rstrip().splitlines()]
                if got != want:
                    fail(where, "%s printed:\n%s\nthe document says:\n%s"
                         % (last[0], "\n".join(got), "\n".join(want)))
                else:
                    print("ok %s: output as shown" % where)
            last = None
print("%d blocks tested, %d failures" % (tested, len(failures)))
sys.exit(1 if failures or tested == 0 else 0)
