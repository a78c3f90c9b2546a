#!/bin/bash
# uvp-fanout --nats sending more than its worker holds: a nats-server of
# its own on a free port on 127.0.0.1, the demo server, one worker of -c 16
# (16 running, 32 waiting, EBUSY past that), and a coordinator of -c 128,
# then of -c 1000, fetching 400 URLs of /slow (300 ms each: 7.5 s of the
# worker's time, past each URL's own 6 s) with -m 5.  An EBUSY is "not
# now": every URL is served, once, in order; and the coordinator learns
# what the worker holds instead of sending its whole -c again and again:
# at most 1.5 sends a URL (main sent 3.2 and 7.3, and failed 76 and 96
# URLs).  Children are killed by PID only.
# Usage: test-e2e-fanout-nats-busy.sh FANOUT NATS_SERVER
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; tail -n 5 "$T/w1"; tail -n 3 "$T/out"; exit 1; }
N=400
port=$(free_port)
"$NATS" -a 127.0.0.1 -p "$port" >"$T/ns.log" 2>&1 & PIDS="$PIDS $!"
wait_port "$port"
URL=nats://127.0.0.1:$port
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
n=0; while [ $n -lt $N ]; do echo "http://127.0.0.1:$DP/slow?$n"; n=$((n + 1)); done >"$T/urls"
"$FANOUT" --nats "$URL" --worker -c 16 --name w1 >"$T/w1" 2>&1 &
w1=$!; PIDS="$PIDS $w1"
wait_line "$T/w1" serving

for c in 128 1000; do
  vg=""
  [ $c = 128 ] && vg=$VG # the coordinator under valgrind once
  t0=$(date +%s%3N)
  timeout 300 $vg "$FANOUT" --nats "$URL" -c $c -m 5 --json -f "$T/urls" >"$T/out"
  rc=$?; t1=$(date +%s%3N)
  [ $rc -eq 0 ] || fail "-c $c: coordinator exited $rc"
  [ "$(grep -c '"n":' "$T/out")" -eq $N ] || fail "-c $c: $(grep -c '"n":' "$T/out") rows, not $N"
  # row n: the n-th URL, served (200)
  bad=$(grep '^{"n":' "$T/out" | awk -v u="http://127.0.0.1:$DP/slow?" '
    index($0, "{\"n\":" NR ",\"url\":\"" u (NR - 1) "\",") != 1 ||
    index($0, ",\"status\":200,") == 0 { print; exit }')
  [ -z "$bad" ] || fail "-c $c: $bad"
  grep -q "\"urls\":$N,\"succeeded\":$N,\"failed\":0" "$T/out" || fail "-c $c: $(tail -n 1 "$T/out")"
  sends=$(sed -n 's/.*"sends":\([0-9]*\).*/\1/p' "$T/out" | awk '{s += $1} END {print s}')
  most=$(sed -n 's/.*"sends":\([0-9]*\).*/\1/p' "$T/out" | sort -n | tail -n 1)
  [ "$sends" -le $((N * 3 / 2)) ] || fail "-c $c: $sends sends for $N URLs"
  echo "ok - -c $c over a worker of -c 16: $N of $N served in $((t1 - t0)) ms, $sends sends (at most $most a URL)"
done
kill -TERM $w1
wait $w1 || fail "w1 exited $? after its drain"
echo "ok - $(grep drained "$T/w1")"
