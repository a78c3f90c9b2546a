#!/bin/bash
# What uvp-fanout --durable prints, against a nats-server -js of its own
# and the demo server (issue 69):
#   deadline  -d 1500 over URLs one worker of -c 2 cannot finish: every
#             row's latency_ms is at most the run's elapsed_ms (a row with
#             no result counts from its publish, not from 0)
#   missing   --purge and --status of a job that does not exist: both
#             exit 1 with "uvp-fanout: no job NAME" on stderr, nothing on
#             stdout
#   terminal  120 URLs of /slow through one worker of -c 8, the
#             coordinator on a pseudo-terminal (stdout and stderr): the
#             screen, as a terminal draws it (\r, ESC[K, \n), holds each
#             row once on a line of its own, never after the progress
#             line, and the progress line below them; every progress line
#             says at most 16 "at workers" (the consumer's unacknowledged
#             deliveries: 8 held, and up to 8 rows whose acks the server
#             has not applied when it serves the pulls that follow them:
#             nats-server's consumer.go queues acks (ackMsgs) and pulls
#             (nextMsgReqs) apart, each drained by a goroutine of its own;
#             9 was seen in CI),
#             and its done, queued and at workers add up to 120 at most
#   restart   10 000 URLs of /fast, the server killed with SIGKILL at a
#             third and started again: once the job is done and what the
#             server had out came back (ack_wait, -m 1: about 2 s),
#             --status says "0 to do; 0 queued", and --json's queued is
#             waiting + in_flight (a killed server may keep messages whose
#             acks its consumer kept: those are "stale", not queued)
# The coordinators of deadline and terminal run under valgrind when meson
# asks for it (lib.sh's $VG).
# Usage: test-e2e-fanout-durable-figures.sh FANOUT NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; for l in "$T"/*.log; do echo "== $l"; tail -n 5 "$l"; done; exit 1; }

port=$(free_port)
ns_start() {
  "$NATS" -js -sd "$T/store" -a 127.0.0.1 -p "$port" >>"$T/ns.log" 2>&1 &
  nspid=$!; PIDS="$PIDS $nspid"
  wait_port "$port"
}
ns_start
URL=nats://127.0.0.1:$port
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
worker() { # JOB C: one worker of -c C, its pid in $wpid
  "$FANOUT" --nats "$URL" --worker --durable "$1" -c "$2" --name w >"$T/w-$1.log" 2>&1 &
  wpid=$!; PIDS="$PIDS $wpid"
}
worker_stop() { kill -TERM "$wpid"; wait "$wpid" || fail "worker exited $?"; }

# ---- deadline -----------------------------------------------------------------
seq 20 | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/urls"
worker deadline 2
$VG "$FANOUT" --nats "$URL" --durable deadline -d 1500 --json -f "$T/urls" >"$T/out" 2>"$T/coord.log" ||
  fail "deadline: the coordinator exited $?"
res=$(python3 - "$T/out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
summ = rows.pop()
late = [r for r in rows if r.get("error") == "ETIMEDOUT"]
if not late or len(rows) != 20:
    print("%d rows, %d with no result: not what -d 1500 leaves" % (len(rows), len(late)))
    sys.exit(1)
for r in rows:
    if not 0 <= r["latency_ms"] <= summ["elapsed_ms"]:
        print("row %d: latency_ms %s, the run took %s ms" % (r["n"], r["latency_ms"], summ["elapsed_ms"]))
        sys.exit(1)
print(len(late), max(r["latency_ms"] for r in late), summ["elapsed_ms"])
PY
) || fail "deadline: $res"
worker_stop
"$FANOUT" --nats "$URL" --durable deadline --purge >/dev/null || fail "purge deadline"
read -r late maxl el <<<"$res"
echo "ok - deadline: $late rows with no result, latency_ms at most $maxl (the run: $el ms)"

# ---- missing ------------------------------------------------------------------
for what in --purge --status; do
  "$FANOUT" --nats "$URL" --durable nosuch "$what" >"$T/o" 2>"$T/e"
  rc=$?
  [ $rc -eq 1 ] && [ ! -s "$T/o" ] && [ "$(cat "$T/e")" = "uvp-fanout: no job nosuch" ] ||
    fail "$what of a missing job: exit $rc, stdout '$(cat "$T/o")', stderr '$(cat "$T/e")'"
done
echo "ok - missing: --purge and --status exit 1, 'uvp-fanout: no job nosuch'"

# ---- terminal -----------------------------------------------------------------
seq 120 | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/urls"
worker tty 8
res=$(VG="$VG" python3 - "$FANOUT" "$URL" "$T/urls" "$DP" <<'PY'
import fcntl, os, pty, re, shlex, struct, subprocess, sys, termios
fanout, url, urls, dp = sys.argv[1:5]
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
vg = shlex.split(os.environ.get("VG", ""))  # lib.sh's valgrind, if asked
p = subprocess.Popen(vg + [fanout, "--nats", url, "--durable", "tty", "-f", urls],
                     stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
os.close(slave)
raw = b""
while True:
    try:
        b = os.read(master, 65536)
    except OSError:  # EIO: the last writer closed
        break
    if not b:
        break
    raw += b
rc = p.wait()
text = raw.decode()
# the screen's lines, as a terminal draws them (no line longer than 250)
lines, cur, col, i = [], [], 0, 0
while i < len(text):
    if text.startswith("\033[K", i):
        del cur[col:]; i += 3; continue
    c = text[i]; i += 1
    if c == "\r":
        col = 0
    elif c == "\n":
        lines.append("".join(cur)); cur, col = [], 0
    else:
        if col < len(cur):
            cur[col] = c
        else:
            cur.append(c)
        col += 1
if cur:
    lines.append("".join(cur))
def bad(why):
    print(why)
    sys.exit(1)
if rc != 0:
    bad("the coordinator exited %d" % rc)
rows = [l for l in lines if "http://" in l]
for l in rows:
    if not re.match(r"^ *\d+  http://127\.0\.0\.1:%s/slow\?\d+ " % dp, l):
        bad("a row drawn over: %r" % l)
if len(rows) != 120:
    bad("%d rows on the screen" % len(rows))
# every progress line drawn, and what it said the workers hold
shown = re.findall(r"\r\033\[K(\d+/120 done[^\r\n\033]*)", text)
if not shown:
    bad("no progress line: %r" % text[:300])
held = []
for s in shown:
    m = re.search(r"^(\d+)/120 done, \d+ failed, (\d+) queued, (\d+) at workers", s)
    if "in flight" in s or (m and int(m.group(3)) > 16):
        bad("progress: %r (the only worker holds 8, and 8 acks may be on their way)" % s)
    if m and sum(int(g) for g in m.groups()) > 120:
        bad("progress: %r (of 120 URLs)" % s)
    if m:
        held.append(int(m.group(3)))
if not held:
    bad("no progress line said what the workers hold: %r" % shown)
# drawn again under the rows that took it away, not only at the next look
below = len(re.findall(r"\n\r\033\[K\d+/120 done", text))
if below == 0:
    bad("the progress line never drawn right below a row")
print(len(shown), max(held), below)
PY
) || fail "terminal: $res"
worker_stop
"$FANOUT" --nats "$URL" --durable tty --purge >/dev/null || fail "purge tty"
read -r shown held below <<<"$res"
echo "ok - terminal: 120 rows each on a line of its own; $shown progress lines ($below right below a row), at most $held at workers (of 8, and the acks on their way), done + queued + at workers never past 120"

# ---- restart ------------------------------------------------------------------
N=10000
seq "$N" | sed "s|^|http://127.0.0.1:$DP/fast?|" >"$T/urls"
worker restart 16
: >"$T/out"
"$FANOUT" --nats "$URL" --durable restart -c 128 -m 1 --json -f "$T/urls" >"$T/out" 2>"$T/coord.log" &
coord=$!
i=0
while [ "$(grep -c '"n":' "$T/out")" -lt $((N / 3)) ]; do
  i=$((i + 1)); [ $i -gt 6000 ] && fail "restart: no third"; sleep 0.01
done
kill -9 "$nspid"; wait "$nspid" 2>/dev/null
sleep 0.5
ns_start
wait $coord || fail "restart: the coordinator exited $?"
[ "$(grep -c '"n":' "$T/out")" -eq "$N" ] || fail "restart: $(grep -c '"n":' "$T/out") rows"
# what the server had out comes back after ack_wait (-m 1: 2 s), and the
# worker acks it; 30 s at most
end=$((SECONDS + 30))
while :; do
  "$FANOUT" --nats "$URL" --durable restart --status --json >"$T/status" || fail "--status exited $?"
  grep -q '"in_flight":0,' "$T/status" && break
  [ $SECONDS -gt $end ] && fail "restart: still in flight: $(cat "$T/status")"
  sleep 0.5
done
res=$(python3 - "$T/status" "$N" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
if s["urls"] != n or s["results"] != n or s.get("to_do") != 0:
    print("not done: %s" % s); sys.exit(1)
if s["queued"] != s["waiting"] + s["in_flight"] or s["queued"] != 0:
    print("queued: %s" % s); sys.exit(1)
print(s.get("stale"))
PY
) || fail "restart: $res"
"$FANOUT" --nats "$URL" --durable restart --status >"$T/status" || fail "--status exited $?"
grep -q "^job restart: $N URLs, $N results stored, 0 to do; 0 queued" "$T/status" ||
  fail "restart: $(cat "$T/status")"
if [ "$res" -gt 0 ]; then
  grep -q "^$res messages\? left in the stream behind its consumer" "$T/status" ||
    fail "restart: the stale messages not said: $(cat "$T/status")"
fi
worker_stop
echo "ok - restart: done; --status: 0 to do, 0 queued; $res stale messages the killed server left in the stream"
