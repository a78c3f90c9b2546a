#!/bin/bash
# uvp-fanout --nats end to end: a nats-server of its own on a free port on
# 127.0.0.1 (never 4222), the demo server (uvp-fanout --serve), workers,
# and a coordinator fetching 200 URLs of /slow (300 ms each) while one
# worker is killed with kill -9, then while one is drained with SIGTERM:
# every URL reported exactly once, all 200, the others' rows named; a
# worker answering garbage; the server killed and started again, and
# frozen with SIGSTOP; a slow worker beside a quick one.
# Children are killed by PID only.  Usage: test-e2e-fanout-nats.sh FANOUT
# NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; for l in "$T"/ns*.log; do tail -n 5 "$l"; done; tail -n 3 "$T/out"; exit 1; }
port=$(free_port)
"$NATS" -a 127.0.0.1 -p "$port" >"$T/ns.log" 2>&1 & PIDS="$PIDS $!"; nspid=$!
wait_port "$port"
URL=nats://127.0.0.1:$port
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
: >"$T/urls"
n=0; while [ $n -lt 200 ]; do echo "http://127.0.0.1:$DP/slow?$n" >>"$T/urls"; n=$((n + 1)); done

# requests the demo server has answered so far
demo_requests() {
  python3 -c 'import json,sys,urllib.request;print(json.load(urllib.request.urlopen("http://127.0.0.1:%s/stats" % sys.argv[1], timeout=5))["requests"])' "$DP"
}
# until the demo has answered $1 more requests than it had (60 s at most)
wait_requests() {
  base=$(demo_requests); i=0
  # (each look is a request too: not counted)
  while [ $(( $(demo_requests) - base - i - 1 )) -lt "$1" ]; do
    i=$((i + 1)); [ $i -gt 3000 ] && fail "no progress"; sleep 0.02
  done
}

# each of the first $1 URLs reported once, in input order ($2: the case)
once_each() {
  [ "$(grep -c '"n":' "$T/out")" -eq "$1" ] || fail "$2: $(grep -c '"n":' "$T/out") rows, not $1"
  n=1; while [ $n -le "$1" ]; do
    [ "$(grep -c "\"n\":$n,\"url\":\"http://127.0.0.1:$DP/slow?$((n - 1))\"" "$T/out")" -eq 1 ] || fail "$2: row $n"
    n=$((n + 1))
  done
}
run() { # $1: the signal for worker w1 mid-run
  for w in w1 w2 w3; do
    "$FANOUT" --nats "$URL" --worker -c 8 --name "$w" >"$T/$w" 2>&1 &
    eval "pid_$w=$!"; PIDS="$PIDS $!"
  done
  for w in w1 w2 w3; do wait_line "$T/$w" serving; done
  timeout 200 $VG "$FANOUT" --nats "$URL" -c 24 -m 5 --json -f "$T/urls" >"$T/out" &
  coord=$!
  wait_requests 30 # mid-run: 200 x 300 ms over 24 in flight
  kill "-$1" "$pid_w1"
  wait $coord || fail "coordinator exited $?"
  if [ "$1" = TERM ]; then wait "$pid_w1" || fail "w1 drained, exited $?"; fi
  kill -TERM "$pid_w2" "$pid_w3"
  wait "$pid_w2" || fail "w2 exited $?"
  wait "$pid_w3" || fail "w3 exited $?"
  once_each 200 "$1"
  ok=$(grep -c '"status":200' "$T/out")
  [ "$ok" -eq 200 ] || { grep -v '"status":200' "$T/out" | head; fail "$1: $ok of 200 answered 200"; }
  for w in w2 w3; do grep -q "\"worker\":\"$w\"" "$T/out" || fail "$1: no row by $w"; done
  grep -q '"summary":true,"urls":200,"succeeded":200' "$T/out" || fail "$1: summary"
  echo "ok - $1: 200 URLs once each; $(grep -c '"worker":"w1"' "$T/out") by w1"
}
run KILL
run TERM

# A worker that answers garbage (raw NATS protocol, python3): its rows are
# EPROTO naming it, the others 200; every URL once.
cat >"$T/garbage.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
f.readline()  # INFO
s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
          b"SUB uvp-fanout.fetch uvp-fanout 1\r\nPING\r\n")
print("serving as garbage", flush=True)
while True:
    line = f.readline()
    if not line:
        break
    w = line.split()
    if w[0] == b"PING":
        s.sendall(b"PONG\r\n")
    elif w[0] in (b"MSG", b"HMSG"):
        f.read(int(w[-1]) + 2)
        s.sendall(b"PUB %s 9\r\nnot json!\r\n" % w[3])
PY
python3 "$T/garbage.py" "$port" >"$T/garbage" 2>&1 & PIDS="$PIDS $!"; gpid=$!
"$FANOUT" --nats "$URL" --worker -c 8 --name good >"$T/good" 2>&1 & PIDS="$PIDS $!"; good=$!
wait_line "$T/garbage" serving; wait_line "$T/good" serving
timeout 200 $VG "$FANOUT" --nats "$URL" -c 24 -m 5 --json -f "$T/urls" >"$T/out" || fail "garbage: coordinator exited $?"
kill -9 $gpid
once_each 200 garbage
bad=$(grep -c '"error":"EPROTO".*"worker":"?"' "$T/out")
ok=$(grep -c '"status":200.*"worker":"good"' "$T/out")
[ $((bad + ok)) -eq 200 ] && [ "$bad" -gt 0 ] || fail "garbage: $bad EPROTO + $ok ok"
echo "ok - garbage: $bad EPROTO, $ok answered"

# The server killed and started again on its port mid-run: every URL
# reported once (sent again after the reconnect), nothing hangs.
timeout 200 $VG "$FANOUT" --nats "$URL" -c 24 -m 5 --json -f "$T/urls" >"$T/out" &
coord=$!
wait_requests 30
kill -9 "$nspid"; wait "$nspid" 2>/dev/null
sleep 0.5
"$NATS" -a 127.0.0.1 -p "$port" >"$T/ns2.log" 2>&1 & PIDS="$PIDS $!"; nspid=$!
wait $coord || fail "restart: coordinator exited $?"
once_each 200 restart
echo "ok - restart: 200 rows, $(grep -c '"status":200' "$T/out") answered 200"
kill -TERM $good; wait $good || fail "good exited $?"

# uvp-fanout's exit: 0 all answered, 1 some failed; anything else (a
# crash, valgrind's 99, timeout's 124) fails the case
exit_ok() { [ "$1" -eq 0 ] || [ "$1" -eq 1 ] || fail "$2: coordinator exited $1"; }

# The server frozen with SIGSTOP past the PING interval (200 ms, 2 out:
# every client's connection goes stale and is dropped on its side), then
# SIGCONT 1.5 s later: no crash, every URL reported once.
for w in f1 f2; do
  "$FANOUT" --nats "$URL" --nats-ping 200 --worker -c 8 --name "$w" >"$T/$w" 2>&1 &
  eval "pid_$w=$!"; PIDS="$PIDS $!"
done
for w in f1 f2; do wait_line "$T/$w" serving; done
timeout 200 $VG "$FANOUT" --nats "$URL" --nats-ping 200 -c 24 -m 5 --json -f "$T/urls" >"$T/out" &
coord=$!
wait_requests 30
kill -STOP "$nspid"; sleep 1.5; kill -CONT "$nspid"
wait $coord; exit_ok $? frozen
once_each 200 frozen
drops=$(sed -n 's/.*"disconnects":\([0-9]*\).*/\1/p' "$T/out")
[ "${drops:-0}" -ge 1 ] || fail "frozen: the coordinator's connection never went stale"
echo "ok - frozen: 200 rows, $(grep -c '"status":200' "$T/out") answered 200; the coordinator's connection dropped $drops time(s)"
kill -TERM "$pid_f1" "$pid_f2"
wait "$pid_f1" || fail "f1 exited $?"
wait "$pid_f2" || fail "f2 exited $?"
# --nats-ping wants 1 ms to a day: a usage error (2) otherwise
for bad in 0 -5 abc 86400001; do
  "$FANOUT" --nats "$URL" --nats-ping "$bad" http://127.0.0.1:1/ >/dev/null 2>&1
  rc=$?; [ $rc -eq 2 ] || fail "--nats-ping $bad: exit $rc, not 2"
done

# A slow worker beside a quick one: it serves one request at a time
# (-c 1, 300 ms each) and holds two more waiting; the others the queue
# group gives it are answered EBUSY at once and sent again (mostly to the
# quick one) within the URL's own time (-m 1: 2 s), past which, with both
# workers full (30 URLs in flight for 1 + 2 and 8 + 16 held), a row says
# EBUSY; one that waited past the coordinator's wait would time out, be
# sent again, and its late reply be dropped: each URL once, each row 200,
# ETIMEDOUT or EBUSY.
head -60 "$T/urls" >"$T/urls60"
"$FANOUT" --nats "$URL" --worker -c 1 --name slow >"$T/slow" 2>&1 & PIDS="$PIDS $!"; slow=$!
"$FANOUT" --nats "$URL" --worker -c 8 --name quick >"$T/quick" 2>&1 & PIDS="$PIDS $!"; quick=$!
wait_line "$T/slow" serving; wait_line "$T/quick" serving
timeout 200 $VG "$FANOUT" --nats "$URL" -c 30 -m 1 --json -f "$T/urls60" >"$T/out"
exit_ok $? slow
once_each 60 slow
ok=$(grep -c '"status":200' "$T/out"); to=$(grep -c '"error":"ETIMEDOUT"' "$T/out")
busy=$(grep -c '"error":"EBUSY"' "$T/out")
[ $((ok + to + busy)) -eq 60 ] || fail "slow: $ok answered + $to ETIMEDOUT + $busy EBUSY, not 60"
grep -q '"status":200.*"worker":"quick"' "$T/out" || fail "slow: none by quick"
kill -TERM $slow $quick
wait $slow || fail "slow exited $?"
wait $quick || fail "quick exited $?"
# the slow one took more than it answered in time: what it answered
# EBUSY, replied to after the coordinator's wait, or dropped unserved
got=$(sed -n 's/^draining slow: received \([0-9]*\),.*/\1/p' "$T/slow")
[ "${got:-0}" -gt "$(grep -c '"worker":"slow"' "$T/out")" ] || fail "slow: received ${got:-?}, nothing too late"
echo "ok - slow: $ok answered ($(grep -c '"worker":"slow"' "$T/out") by slow, which received $got), $to ETIMEDOUT, $busy EBUSY; $(sed -n 's/^draining slow: //p' "$T/slow")"
