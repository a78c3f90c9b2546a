#!/usr/bin/env python3
"""The programs and commands of README.md and docs/guide-*.md, run.

    test_docs.py SOURCE_ROOT BUILD_ROOT [SANITIZE]

A fenced block is tested when its info string says so (GitHub renders
the block by its first word alone, so the marks do not show):

  ```c program [compile-only]
      A complete C program.  It is compiled with cc -Wall -Wextra -Werror
      against the built library, through the pkg-config files of the
      uninstalled build (BUILD_ROOT/meson-uninstalled; uvp-curl's when it
      includes <uvp-curl.h>, uvp-nats's for <uvp-nats.h> or <uvp-nats-js.h>), then run with no arguments: it must exit 0.
      compile-only: not run (it needs arguments or a server; another test
      runs it).
  ```sh run [staged] [continues] [needs=PROGRAM,...]
      Commands, given to bash -e on its standard input as a paste gives
      them to a shell (a command that reads its input, an apt prompt, say,
      would eat the lines after it), in a fresh temporary directory that holds
      a symbolic link to each top-level entry of SOURCE_ROOT and one named
      build to BUILD_ROOT, so that examples/... and build/... resolve as
      from the source root while what the commands write stays in the
      temporary directory; HOME is a directory in it too (a prefix under
      $HOME stays there).  The environment is the test's own, as a user's
      shell has it: pkg-config and the dynamic linker are not pointed at
      the build; what they leave running is killed once bash has exited,
      and is a failure if it is still there 5 s after, unless the next run
      block continues this one: a paste ends with the kill of what it
      started, as a user's would.
      `bash .ci/example` and `bash .ci/test` are never run (CI
      runs them anyway): a block holding one fails.
      staged: as after README's install route, in a staging directory
      instead of /usr/local.  BUILD_ROOT is installed there first (meson
      install --destdir), pkg-config finds it (copies of its .pc files
      whose prefix is the staged one: not PKG_CONFIG_SYSROOT_DIR, which
      CMake cannot take), the dynamic linker finds its libraries and PATH
      its programs; DESTDIR is set, so that the block's own `meson
      install -C build` goes there too, and `ldconfig` is a stand-in that
      does nothing.  Skipped in a sanitized build, whose library programs
      built without the sanitizer cannot load.
      needs=PROGRAM,...: skipped unless each PROGRAM is on PATH (cmake is
      installed by `.ci/setup ci`, not by README's commands); a PROGRAM
      with a slash is a file of the temporary directory (build/examples/
      nats/..., built only where nats.c is found).
      Ports: a fixed port the commands name (127.0.0.1:PORT,
      localhost:PORT, --serve PORT, -p PORT, --port PORT, 1024 and up)
      is replaced by a free one before they run, and back in what they
      print, so that the guides show readable commands (8080) and a
      server of another program on that port cannot fail the test.
      continues: the commands follow those of the run block above (the
      block's text says they do: the same shell, its variables and the
      programs it left running), so the two blocks are run together, as
      one paste; this block's output is what it prints after the first's.
  ```sh deb=build, ```sh deb=install, ```text deb=output
      README's Debian blocks: not run here (they install packages, as
      root); .ci/deb pastes them into fresh Debian 12 roots.
  ```LANG ... file=PATH ...
      Any block, tested or not: it must be SOURCE_ROOT/PATH verbatim
      (that file is built or used elsewhere: meson builds the C ones).
  ```text output [masked]
      What the program or commands of the nearest tested block above print
      on stdout, exactly (trailing blank space aside).
      masked: a report with times and names that differ from run to run:
      in both texts a number followed by ms or s, and a worker's HOST:PID
      (a name, a colon, digits, not in a URL), read as #, and runs of
      blank space as one.

A quote of a report in include/uvp.h's comments, in backquotes and
beginning `uvp: ` (wrapped over comment lines as need be), must be part
of a line that a tested block of the guides printed.

Each program is run again under valgrind (no error, no leak) when
UVP_E2E_VALGRIND=1 and valgrind is installed.  SANITIZE is meson's
b_sanitize: a sanitized library needs the programs built the same way.
Exit 77 (skipped) when pkg-config cannot find the uninstalled build."""
import glob
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

source_root, build_root = (os.path.abspath(a) for a in sys.argv[1:3])
sanitize = sys.argv[3] if len(sys.argv) > 3 else "none"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NEVER = ("bash .ci/example", "bash .ci/test")
# Written by test_docs.py between two blocks run as one paste (continues).
SPLIT = "@@ test_docs.py: the next block @@"
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
    [build_root, os.path.join(build_root, "bindings", "curl"),
     os.path.join(build_root, "bindings", "nats")] +
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


def group_alive(pgid):
    """The command lines of process group pgid's processes but zombies."""
    alive = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = open(stat[:-4] + "cmdline").read()
                alive.append(cmd.replace("\0", " ").strip())
        except OSError:
            continue  # gone meanwhile
    return alive


def kill_group(pgid):
    """Kills process group pgid and waits (5 s at most) until none of its
    processes is left but zombies: a server a block left running holds its
    port until it is gone, and the next block may start one on that port."""
    try:
        os.killpg(pgid, 9)
    except ProcessLookupError:
        return
    for _ in range(100):
        alive = False
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = open(stat).read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive = True
                break
        if not alive:
            return
        time.sleep(0.05)


def run(where, argv, cwd, run_env=None, timeout=120, stdin=None,
        left=None):
    """Runs argv in its own session, stdin on its input; returns its
    stdout, or None.  It ends when argv has exited: what it left running in
    the background (a server a block started) is killed then, and may hold
    no pipe of ours open meanwhile, so its output goes to files.  left, a
    list: gets the command lines of what was still running 5 s after argv
    exited (what a block's own kill ended has had time to go)."""
    with tempfile.TemporaryFile("w+") as fout, \
            tempfile.TemporaryFile("w+") as ferr:
        p = subprocess.Popen(argv, cwd=cwd, env=run_env or env,
                             stdin=subprocess.DEVNULL if stdin is None
                             else subprocess.PIPE,
                             stdout=fout, stderr=ferr, text=True,
                             start_new_session=True)
        if stdin is not None:
            try:
                p.stdin.write(stdin)  # a block: far less than a pipe holds
                p.stdin.close()
            except BrokenPipeError:
                pass  # it stopped before reading it all: its exit says why
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p.pid)
            p.wait()
            fail(where, "%s: no exit within %d s" % (argv[0], timeout))
            return None
        if left is not None:
            for _ in range(100):
                alive = group_alive(p.pid)
                if not alive:
                    break
                time.sleep(0.05)
            left.extend(alive)
        kill_group(p.pid)  # whatever it left running in the background
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if p.returncode != 0:
        fail(where, "%s exited %d:\n%s%s" % (" ".join(argv), p.returncode,
                                             out, err))
        return None
    return out


def verbatim(where, words, body):
    """file=PATH: the block must be SOURCE_ROOT/PATH verbatim."""
    opts = dict(w.split("=", 1) for w in words if "=" in w)
    if "file" in opts:
        path = os.path.join(source_root, opts["file"])
        if not os.path.exists(path) or open(path).read() != body:
            fail(where, "the block is not %s verbatim" % opts["file"])


def program(where, words, body, d):
    pc = ("uvp-curl" if "#include <uvp-curl.h>" in body else
          "uvp-nats" if re.search(r"#include <uvp-nats(-js)?\.h>", body)
          else "uvp")
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


def build_option(name):
    """A builtin option of BUILD_ROOT (prefix, libdir)."""
    opts = subprocess.run(["meson", "introspect", "--buildoptions",
                           build_root], capture_output=True, text=True)
    return next(o["value"] for o in json.loads(opts.stdout)
                if o["name"] == name)


def staged(where, d, cmd_env):
    """Installs BUILD_ROOT under d/stage and points cmd_env at it; False
    when that fails."""
    stage = os.path.join(d, "stage")
    prefix, libdir = build_option("prefix"), build_option("libdir")
    libdir = os.path.join(prefix, libdir)  # libdir may be absolute
    done = subprocess.run(["meson", "install", "-C", build_root,
                           "--no-rebuild", "--destdir", stage],
                          capture_output=True, text=True)
    if done.returncode != 0:
        fail(where, "meson install --destdir failed:\n" + done.stdout
             + done.stderr)
        return False
    pcdir = os.path.join(d, "pkgconfig")
    os.mkdir(pcdir)
    for pc in glob.glob(stage + libdir + "/pkgconfig/*.pc"):
        text = re.sub(r"(?m)^prefix=.*$", "prefix=" + stage + prefix,
                      open(pc).read())
        open(os.path.join(pcdir, os.path.basename(pc)), "w").write(text)
    stub = os.path.join(d, "stub")
    os.mkdir(stub)
    with open(os.path.join(stub, "ldconfig"), "w") as f:
        f.write("#!/bin/sh\n# test_docs.py: the staged install is on "
                "LD_LIBRARY_PATH instead\nexit 0\n")
    os.chmod(os.path.join(stub, "ldconfig"), 0o755)
    cmd_env.update(DESTDIR=stage, PKG_CONFIG_PATH=pcdir,
                   LD_LIBRARY_PATH=stage + libdir,
                   PATH=os.pathsep.join([stub, stage + prefix + "/bin",
                                         cmd_env.get("PATH", "")]))
    return True


PORT_RE = re.compile(r"(?:\b127\.0\.0\.1:|\blocalhost:|(?<!\S)--serve |"
                     r"(?<!\S)-p |(?<!\S)--port )(\d{4,5})\b")


def free_ports(body):
    """body with each fixed port it names (see the docstring) replaced by
    a free one; returns it and {shown: used}."""
    ports = {}
    for m in PORT_RE.finditer(body):
        shown = int(m.group(1))
        if shown >= 1024 and shown not in ports:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports[shown] = s.getsockname()[1]
    for shown, used in ports.items():
        body = re.sub(r"\b%d\b" % shown, str(used), body)
    return body, ports


def commands(where, words, body, d, before=None, left=None):
    """before: (words, body) of the run block this one continues; left:
    as run's."""
    for never in NEVER:
        if never in body:
            fail(where, "`%s` is not for this test: leave the block unmarked"
                 % never)
            return None
    if "continues" in words:
        if before is None:
            fail(where, "continues, but no run block above")
            return None
        words = words + before[0]
        body = before[1] + "\necho '%s'\n" % SPLIT + body
    opts = {}
    for w in words:
        if "=" in w:
            k, v = w.split("=", 1)
            opts[k] = opts[k] + "," + v if k in opts else v
    for prog in filter(None, opts.get("needs", "").split(",")):
        if "/" in prog and not os.path.exists(os.path.join(d, prog)):
            print("skip %s: no %s" % (where, prog))
            return None
        if "/" not in prog and shutil.which(prog) is None:
            print("skip %s: %s is not installed" % (where, prog))
            return None
    cmd_env = dict(os.environ)
    cmd_env["HOME"] = os.path.join(d, "home")
    os.mkdir(cmd_env["HOME"])
    if "staged" in words:
        if sanitize_flags:
            print("skip %s: a sanitized build is not installed" % where)
            return None
        if not staged(where, d, cmd_env):
            return None
    body, ports = free_ports(body)
    out = run(where, ["bash", "-e", "-o", "pipefail", "-s"], d, cmd_env,
              timeout=300, stdin=body, left=left)
    for shown, used in ports.items():
        if out is not None:
            out = re.sub(r"\b%d\b" % used, str(shown), out)
    if out is not None and "continues" in words:
        if SPLIT + "\n" not in out:
            fail(where, "the block above printed no end:\n" + out)
            return None
        out = out.split(SPLIT + "\n", 1)[1]
    if out is not None:
        print("ok %s: ran" % where)
    return out


def masked(lines):
    """Lines with times, HOST:PID names and blank space runs as one."""
    out = []
    for l in lines:
        l = re.sub(r"\b\d+(?:\.\d+)?(?= ?m?s\b)", "#", l)
        l = re.sub(r"(?<![\w./:-])[\w.-]+:\d+\b", "#", l)  # not in a URL
        out.append(" ".join(l.split()))
    return out


docs = [os.path.join(source_root, "README.md")] + sorted(
    glob.glob(os.path.join(source_root, "docs", "guide-*.md")))
tested = 0
printed = []  # the lines of every output block as shown
for doc in docs:
    name = os.path.relpath(doc, source_root)
    last = None  # (where, stdout) of the last tested block
    before = None  # (words, body) of the last run block
    # What the last run block left running: a paste leaves nothing
    # behind (it ends with the kill of what it started), unless the next
    # run block continues it.
    running = None
    for line, words, body in blocks(doc):
        where = "%s:%d" % (name, line)
        kind = words[0] if words else ""
        verbatim(where, words, body)
        if kind == "c" and "program" in words[1:]:
            d = scratch()
            try:
                last = (where, program(where, words, body, d))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            tested += 1
        elif kind in ("sh", "console") and "run" in words[1:]:
            if running is not None and "continues" not in words[1:]:
                if running[1]:
                    fail(running[0], "left running: %s"
                         % "; ".join(running[1]))
            left = []
            running = (where, left)
            d = scratch()
            try:
                last = (where, commands(where, words[1:], body, d, before,
                                        left))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if "continues" in words[1:] and before is not None:
                before = (before[0] + words[1:], before[1] + "\n" + body)
            else:
                before = (words[1:], body)
            tested += 1
        elif "output" in words[1:]:
            if last is None:
                fail(where, "an output block with no tested block above it")
            elif last[1] is not None:
                got = [l.rstrip() for l in last[1].rstrip().splitlines()]
                want = [l.rstrip() for l in body.rstrip().splitlines()]
                if "masked" in words[1:]:
                    got, want = masked(got), masked(want)
                if got != want:
                    fail(where, "%s printed:\n%s\nthe document says:\n%s"
                         % (last[0], "\n".join(got), "\n".join(want)))
                else:
                    print("ok %s: output as shown" % where)
                    printed.extend(got)
            last = None
    if running is not None and running[1]:
        fail(running[0], "left running: %s" % "; ".join(running[1]))

# The header's quotes of the guides' output (see the docstring).
header = os.path.join(source_root, "include", "uvp.h")
flat = " ".join(re.sub(r"^\s*(/\*\*?|\*/|\*)?", "", l).strip()
                for l in open(header).read().splitlines())
for quote in re.findall(r"`(uvp: [^`]*)`", flat):
    where = "include/uvp.h: `%s`" % quote
    if not printed:
        print("skipped %s: no output block was compared" % where)
    elif any(quote in line for line in printed):
        print("ok %s: printed by a guide's program" % where)
    else:
        fail(where, "no guide's tested block printed it")
print("%d blocks tested, %d failures" % (tested, len(failures)))
sys.exit(1 if failures or tested == 0 else 0)
