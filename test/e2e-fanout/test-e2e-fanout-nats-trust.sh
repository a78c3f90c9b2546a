#!/bin/bash
# uvp-fanout --nats against a stranger on the same server (issue 71), who
# speaks NATS's protocol over a plain socket (nats-raw.py):
#   planted   a durable job's results planted before its workers ran, that
#             no coordinator can read (not JSON; JSON of another shape; a
#             result of another URL's id): each URL is fetched all the
#             same and stored over them, every row a 200 from a real fetch,
#             the planted ones marked "refetched" (before: a permanent
#             EPROTO row each)
#   cancels   a stranger reading the service's subject sends forged
#             cancels (the reply subject, no token or a wrong one) for
#             every request it sees: every URL served (before: cut, and
#             each caller waited out its timeout), the worker's drain line
#             counting them
# Usage: test-e2e-fanout-nats-trust.sh FANOUT NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
RAW="python3 $(dirname "$0")/nats-raw.py"
fail() { echo "FAIL: $*"; for l in "$T"/*.log; do echo "== $l"; tail -n 5 "$l"; done; tail -c 600 "$T/out" 2>/dev/null; exit 1; }

port=$(free_port)
"$NATS" -js -sd "$T/store" -a 127.0.0.1 -p "$port" >>"$T/ns.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$port"
URL=nats://127.0.0.1:$port
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
N=40
seq "$N" | sed "s|^|http://127.0.0.1:$DP/fast?|" >"$T/urls"

# check OUT ROWS: each URL once, in order, a 200 from a worker; prints the
# rows marked refetched
check() {
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"n":' in l]
n = int(sys.argv[2])
if len(rows) != n:
    print("%d rows of %d" % (len(rows), n)); sys.exit(1)
for i, r in enumerate(rows, 1):
    if r["n"] != i or r.get("status") != 200 or r.get("worker") in (None, "evil"):
        print("row %d: %s" % (i, json.dumps(r))); sys.exit(1)
print(" ".join(str(r["n"]) for r in rows if r.get("refetched")))
PY
}

# ---- planted results --------------------------------------------------------
# The job's stream and bucket made, its URLs queued, no worker yet: the
# coordinator's deadline ends its first run.  Then unreadable results
# planted (not JSON; another shape; another URL's id) before any worker
# runs: the workers fetch those URLs all the same and store over them.
"$FANOUT" --nats "$URL" --durable plant -d 1000 --json -f "$T/urls" >/dev/null 2>"$T/first.log"
B='$KV.uvp-fanout-plant'
plant() {
  $RAW "$URL" put "$B.r.3" 'not json' || fail "plant r.3"
  $RAW "$URL" put "$B.r.5" '{"v":1,"id":5,"nonsense":true}' || fail "plant r.5"
  $RAW "$URL" put "$B.r.7" '{"v":1,"id":8,"worker":"evil","status":200,"bytes":1,"latency_us":1,"attempts":1,"error":null}' || fail "plant r.7"
}
plant
for w in w1 w2; do
  "$FANOUT" --nats "$URL" --worker --durable plant -c 8 --name "$w" >"$T/$w.log" 2>&1 &
  eval "pid_$w=$!"; PIDS="$PIDS $!"
done
timeout 60 $VG "$FANOUT" --nats "$URL" --durable plant -m 5 --json -f "$T/urls" >"$T/out" 2>"$T/coord.log" ||
  fail "planted: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "planted before the workers: $res"
# Planted over the workers' results, read by a coordinator run again:
# published again, fetched again, every row a 200 and those three marked.
plant
timeout 60 $VG "$FANOUT" --nats "$URL" --durable plant -m 5 --json -f "$T/urls" >"$T/out" 2>"$T/coord.log" ||
  fail "planted: the coordinator run again exited $?"
res=$(check "$T/out" "$N") || fail "planted after: $res"
[ "$res" = "3 5 7" ] || fail "planted: refetched rows '$res', not '3 5 7'"
kill -TERM "$pid_w1" "$pid_w2"
wait "$pid_w1" || fail "w1 exited $?"
wait "$pid_w2" || fail "w2 exited $?"
replaced=$(cat "$T/w1.log" "$T/w2.log" | sed -n 's/.* \([0-9]*\) unreadable results replaced/\1/p' | awk '{s += $1} END {print s + 0}')
[ "$replaced" -ge 6 ] || fail "planted: $replaced results replaced, not 6"
echo "ok - planted: 3 unreadable results before the workers and 3 after them fetched again (rows $res), $replaced replaced by the workers, every row a 200"

# ---- forged cancels ------------------------------------------------------
"$FANOUT" --nats "$URL" --worker -c 16 --name w3 >"$T/w3.log" 2>&1 &
pid_w3=$!; PIDS="$PIDS $pid_w3"
wait_line "$T/w3.log" serving
$RAW "$URL" cancel uvp-fanout.fetch "$N" 20 >"$T/forger" 2>"$T/forger.log" &
forger=$!; PIDS="$PIDS $forger"
sleep 0.3 # its SUB reached the server
seq "$N" | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/slow"
timeout 60 $VG "$FANOUT" --nats "$URL" -c 64 -m 3 --json -f "$T/slow" >"$T/out" 2>"$T/coord2.log" ||
  fail "cancels: the coordinator exited $?"
res=$(python3 - "$T/out" "$N" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"n":' in l]
bad = [r for r in rows if r.get("status") != 200 or r.get("sends") != 1]
print("%d rows, %d not a 200 at the first send" % (len(rows), len(bad)))
sys.exit(1 if bad or len(rows) != int(sys.argv[2]) else 0)
PY
) || fail "cancels: $res"
wait "$forger" || fail "the forger failed: $(cat "$T/forger" "$T/forger.log")"
forged=$(cat "$T/forger")
[ "$forged" -eq "$N" ] || fail "cancels: the forger saw $forged requests of $N"
kill -TERM "$pid_w3"
wait "$pid_w3" || fail "w3 exited $?"
dropped=$(sed -n 's/.*, \([0-9]*\) forged cancels dropped/\1/p' "$T/w3.log")
[ "$dropped" = $((2 * N)) ] || fail "cancels: the worker dropped '$dropped' forged cancels, not $((2 * N))"
echo "ok - cancels: $((2 * N)) forged cancels for $N requests, every one served ($res)"
