#!/bin/bash
# uvp-fanout --nats under a pile of requests: a nats-server of its own on a
# free port on 127.0.0.1, the demo server, a worker of -c 10 (-m 2), and
# test/nats/nats-pile publishing 100 000 requests of /slow (300 ms) with
# Uvp-Timeout-Ms 86400000 at once.  The worker holds at most -c + 2 x -c
# of them and answers the rest EBUSY at once; its RSS comes back within
# 2 MB of what it was idle; a coordinator's request sent during the pile
# is served (EBUSY retried).  Then its drain ends by its deadline (-m)
# with jobs that never end (/hang) running and waiting, cutting them; and
# a second SIGTERM ends a drain at once, cleanly.  Children are killed by
# PID only.  Usage: test-e2e-fanout-nats-pile.sh FANOUT NATS_SERVER PILE
set -u
FANOUT=$1
NATS=$2
PILE=$3
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; for l in "$T"/w*; do echo "== $l"; tail -n 5 "$l"; done; exit 1; }
ms() { date +%s%3N; }
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
port=$(free_port)
"$NATS" -a 127.0.0.1 -p "$port" >"$T/ns.log" 2>&1 & PIDS="$PIDS $!"
wait_port "$port"
URL=nats://127.0.0.1:$port
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
hanging() {
  python3 -c 'import json,sys,urllib.request;print(json.load(urllib.request.urlopen("http://127.0.0.1:%s/stats" % sys.argv[1], timeout=5))["hanging"])' "$DP"
}
job() { # a request's body: the demo's $1, with curl's timeout of a day
  echo "{\"v\":1,\"id\":1,\"url\":\"http://127.0.0.1:$DP/$1\",\"opts\":{\"timeout_ms\":86400000}}"
}

"$FANOUT" --nats "$URL" --worker -c 10 -m 2 --name w1 >"$T/w1" 2>&1 &
w1=$!; PIDS="$PIDS $w1"
wait_line "$T/w1" serving
# idle: once it has fetched (libcurl's connection cache, the first reply)
"$FANOUT" --nats "$URL" -m 2 --json "http://127.0.0.1:$DP/fast" >"$T/warm" || fail "warm-up exited $?"
idle=$(rss $w1)

# The pile, and a coordinator's request sent while it comes (not under
# valgrind, which would start it after the pile; the EBUSY path runs under
# valgrind below).
"$PILE" "$URL" uvp-fanout.fetch 100000 86400000 30 "$(job slow)" >"$T/pile" &
pile=$!; PIDS="$PIDS $pile"
sleep 0.3
t0=$(ms)
timeout 60 "$FANOUT" --nats "$URL" -m 10 --json "http://127.0.0.1:$DP/slow" >"$T/fresh"
rc=$?; t1=$(ms)
wait $pile || fail "nats-pile exited $?"
read -r _ n _ busy _ other _ pending _ answered <"$T/pile"
[ "$pending" -le 30 ] || fail "the worker held $pending (-c 10: at most 30)"
[ "$busy" -ge $((100000 - 30 - other)) ] || fail "$busy EBUSY, $other other, $pending pending"
[ $rc -eq 0 ] || fail "fresh request: coordinator exited $rc"
grep -q '"n":1,.*"status":200' "$T/fresh" || fail "fresh request not served: $(head -1 "$T/fresh")"
sends=$(sed -n 's/.*"sends":\([0-9]*\).*/\1/p' "$T/fresh" | head -1)
# RSS within 2 MB of idle (the worker trims a second after the pile);
# not under a sanitizer, whose allocator keeps what is freed for a while
i=0
while [ "${UVP_E2E_SANITIZE:-none}" = none ] && [ $(( $(rss $w1) - idle )) -ge 2048 ]; do
  i=$((i + 1)); [ $i -gt 150 ] && fail "RSS $(rss $w1) kB after the pile, $idle kB idle"; sleep 0.1
done
after=$(rss $w1)
echo "ok - pile: $busy of $n answered EBUSY within ${answered} ms, $other served, $pending held; RSS ${idle} kB idle, ${after} kB after (+$((after - idle)) kB); a request sent during it served in $((t1 - t0)) ms ($sends sends)"

# The drain's deadline: 10 jobs that never end running, 20 waiting, 10
# refused; SIGTERM ends it within -m (2 s), the jobs cut.
"$PILE" "$URL" uvp-fanout.fetch 40 86400000 30 "$(job hang)" >"$T/pile" || fail "nats-pile exited $?"
read -r _ n _ busy _ other _ pending _ answered <"$T/pile"
[ "$busy" -eq 10 ] && [ "$pending" -eq 30 ] || fail "hang pile: $busy EBUSY, $pending held"
i=0 # the 10 running: their fetches reach the demo server soon after
while [ "$(hanging)" -ne 10 ]; do
  i=$((i + 1)); [ $i -gt 100 ] && fail "$(hanging) fetches hang, not 10"; sleep 0.1
done
# A URL sent to the full worker: answered EBUSY, sent again for its own
# time (-m 1: 2 s), then reported EBUSY naming the worker.
timeout 60 $VG "$FANOUT" --nats "$URL" -m 1 --json "http://127.0.0.1:$DP/fast" >"$T/busy"
rc=$?
[ $rc -eq 0 ] || fail "busy: coordinator exited $rc"
grep -q '"n":1,.*"error":"EBUSY".*"worker":"w1"' "$T/busy" || fail "busy: $(head -1 "$T/busy")"
sends=$(sed -n 's/.*"sends":\([0-9]*\).*/\1/p' "$T/busy" | head -1)
[ "$sends" -ge 2 ] || fail "busy: sent $sends times"
echo "ok - a URL sent to the full worker: EBUSY after $sends sends"
t0=$(ms)
kill -TERM $w1
wait $w1; rc=$?; t1=$(ms)
[ $rc -eq 0 ] || fail "w1 exited $rc after its drain"
# at its deadline, not before, and not at the jobs' end (never): the
# upper bound is only the loaded machine's slack
[ $((t1 - t0)) -ge 1900 ] && [ $((t1 - t0)) -lt 15000 ] || fail "drain within 2 s took $((t1 - t0)) ms"
grep -q "drained w1: .*, 30 cut by the drain's deadline" "$T/w1" || fail "w1: $(grep drained "$T/w1")"
i=0
while [ "$(hanging)" -ne 0 ]; do
  i=$((i + 1)); [ $i -gt 50 ] && fail "$(hanging) fetches still hang after the drain"; sleep 0.1
done
echo "ok - drain within -m 2: ended in $((t1 - t0)) ms; $(grep drained "$T/w1")"

# A second SIGTERM: a drain within 30 s of 10 hanging jobs ends at once.
"$FANOUT" --nats "$URL" --worker -c 10 -m 30 --name w2 >"$T/w2" 2>&1 &
w2=$!; PIDS="$PIDS $w2"
wait_line "$T/w2" serving
"$PILE" "$URL" uvp-fanout.fetch 15 86400000 15 "$(job hang)" >"$T/pile" || fail "nats-pile exited $?"
kill -TERM $w2
sleep 0.5
kill -0 $w2 2>/dev/null || fail "w2 did not wait for its jobs"
t0=$(ms)
kill -TERM $w2
wait $w2; rc=$?; t1=$(ms)
[ $rc -eq 0 ] || fail "w2 exited $rc on its second SIGTERM (143: killed by it)"
[ $((t1 - t0)) -lt 10000 ] || fail "second SIGTERM: $((t1 - t0)) ms (the drain's own end is 30 s)"
grep -q "drained w2: .*, 15 cut by the drain's deadline" "$T/w2" || fail "w2: $(grep drained "$T/w2")"
echo "ok - second SIGTERM: w2 ended in $((t1 - t0)) ms, exit 0; $(grep drained "$T/w2")"
