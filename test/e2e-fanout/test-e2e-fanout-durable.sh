#!/bin/bash
# uvp-fanout --nats --durable end to end: a nats-server -js of its own
# (a free port on 127.0.0.1, a store of its own), the demo server, two
# workers, and N URLs of /fast (10 000; 1 000 when the coordinator runs
# under valgrind, which makes it 20 to 50 times slower), through a job
# JetStream keeps:
#   kill      the coordinator killed with SIGKILL at about half its rows,
#             then run again: every URL once, in order, the rest fetched,
#             and URLs fetched twice (the demo server's count less N) no
#             more than could be in flight at the kill (the workers' -c)
#   worker    600 URLs of /slow (300 ms), a worker killed with SIGKILL at
#             a third: its URLs come back after ack_wait to the other;
#             every URL once, those redelivered ("delivery" > 1) and
#             fetched twice at most its -c
#   restart   300 URLs of /slow, the server killed with SIGKILL at a
#             third and started again on its store: every URL once
#   cluster   a 3-node cluster (1 200 URLs of /slow): 3 replicas,
#             the stream's leader killed with SIGKILL at a third: every
#             URL once; the time until fetching resumed is printed
# and --status, --purge, a second list under the same job refused.  Each
# coordinator and worker exits 0 (uvp-fanout exits 1 when uv_loop_close
# fails).  Children are killed by PID only.
# Usage: test-e2e-fanout-durable.sh FANOUT NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
fail() { echo "FAIL: $*"; for l in "$T"/*.log; do echo "== $l"; tail -n 5 "$l"; done; tail -c 600 "$T/out" 2>/dev/null; exit 1; }
N=10000
[ -n "$VG" ] && N=1000

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
seq "$N" | sed "s|^|http://127.0.0.1:$DP/fast?|" >"$T/urls"

# the demo server's request count in REQ; each look is a request too,
# counted in LOOKS so that a difference can leave them out
LOOKS=0
look() {
  LOOKS=$((LOOKS + 1))
  REQ=$(python3 -c 'import json,sys,urllib.request;print(json.load(urllib.request.urlopen("http://127.0.0.1:%s/stats" % sys.argv[1], timeout=5))["requests"])' "$DP")
}
# until the demo has fetched $1 URLs since $base (60 s at most)
wait_requests() {
  end=$((SECONDS + 60))
  look
  while [ $((REQ - base - LOOKS)) -lt "$1" ]; do
    [ $SECONDS -gt $end ] && fail "no progress: $((REQ - base - LOOKS)) fetched, waiting for $1"
    sleep 0.02; look
  done
}
# what the demo fetched since $base, the looks left out
# check OUT ROWS [PATH]: each of the first ROWS URLs (of /fast, or PATH)
# once, in order, a 200; prints
# "redelivered found published duplicates disconnects summary-redelivered
# workers..."
check() {
  python3 - "$1" "$2" "$DP" "${3:-fast}" <<'PY'
import json, sys
out, n, dp, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows, summ = [], None
for line in open(out):
    o = json.loads(line)
    if o.get("summary"):
        summ = o
    elif "n" in o:
        rows.append(o)
def bad(why):
    print(why)
    sys.exit(1)
if len(rows) != n:
    bad("%d rows, not %d" % (len(rows), n))
for i, r in enumerate(rows, 1):
    if r["n"] != i or r["url"] != "http://127.0.0.1:%s/%s?%d" % (dp, path, i):
        bad("row %d is %s" % (i, json.dumps(r)))
    if r.get("status") != 200:
        bad("row %d: %s" % (i, json.dumps(r)))
if summ is None or summ["urls"] != n or summ["succeeded"] != n:
    bad("summary: %s" % json.dumps(summ))
redel = sum(1 for r in rows if r["delivery"] > 1)
print(redel, summ["found"], summ["published"], summ["duplicates"],
      summ["disconnects"], summ["redelivered"],
      " ".join(sorted(set(r["worker"] for r in rows))))
PY
}
workers() { # JOB C URLS: two workers of -c C
  for w in w1 w2; do
    "$FANOUT" --nats "$3" --worker --durable "$1" -c "$2" --name "$w" >"$T/$w.log" 2>&1 &
    eval "pid_$w=$!"; PIDS="$PIDS $!"
  done
}
workers_stop() {
  for p in "$@"; do kill -TERM "$p"; done
  for p in "$@"; do wait "$p" || fail "worker $p exited $?"; done
}
coord() { # JOB URLS [more]: in the background, its pid in $coord
  job=$1; u=$2; shift 2
  : >"$T/out" # there before anything counts its rows
  $VG "$FANOUT" --nats "$u" --durable "$job" -c 128 -m 5 --json -f "$T/urls" "$@" >"$T/out" 2>"$T/coord.log" &
  coord=$!
}

# ---- the coordinator killed at half, and run again -------------------------
look; base=$REQ; LOOKS=0
workers kill 32 "$URL"
coord kill "$URL"
i=0
while [ "$(grep -c '"n":' "$T/out")" -lt $((N / 2)) ]; do
  i=$((i + 1)); [ $i -gt 6000 ] && fail "kill: no half"; sleep 0.01
done
kill -9 $coord; wait $coord 2>/dev/null
killed_at=$(grep -c '"n":' "$T/out")
coord kill "$URL"
wait $coord || fail "kill: the coordinator run again exited $?"
res=$(check "$T/out" "$N") || fail "$res"
read -r redel found published dups _ _ ws <<<"$res"
[ "$found" -gt 0 ] || fail "kill: the second run found no result stored"
[ $((found + published)) -le "$N" ] || fail "kill: found $found + published $published > $N"
workers_stop "$pid_w1" "$pid_w2"
look; fetched=$((REQ - base - LOOKS))
twice=$((fetched - N))
[ "$twice" -ge 0 ] && [ "$twice" -le 64 ] || fail "kill: $fetched fetches for $N URLs"
"$FANOUT" --nats "$URL" --durable kill --status >"$T/status" || fail "--status exited $?"
grep -q "^job kill: $N URLs, $N results stored, 0 to do; 0 queued" "$T/status" || fail "status: $(cat "$T/status")"
echo "ok - kill: killed after $killed_at rows printed; run again: $found found stored, $published published ($dups the stream had), $twice fetched twice (of 64 the workers could hold); by $ws"
# another list under the same job is refused, and nothing is fetched
head -3 "$T/urls" >"$T/urls3"
"$FANOUT" --nats "$URL" --durable kill -f "$T/urls3" >/dev/null 2>"$T/refused.log"
rc=$?; [ $rc -eq 1 ] && grep -q "another list of URLs" "$T/refused.log" || fail "another list: exit $rc"
"$FANOUT" --nats "$URL" --durable kill --purge | grep -q "job kill purged" || fail "--purge"
"$FANOUT" --nats "$URL" --durable kill --status >/dev/null 2>&1
[ $? -eq 1 ] || fail "--status of a purged job: not 1"
echo "ok - another list refused; --status, --purge"

# ---- a worker killed ---------------------------------------------------------
# 600 URLs of /slow (300 ms each): a worker always holds its -c
cp "$T/urls" "$T/urls-fast"
seq 600 | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/urls"
look; base=$REQ; LOOKS=0
workers worker 16 "$URL"
coord worker "$URL"
wait_requests 200
kill -9 "$pid_w1"; wait "$pid_w1" 2>/dev/null
t0=$(date +%s.%N)
wait $coord || fail "worker: the coordinator exited $?"
res=$(check "$T/out" 600 slow) || fail "$res"
read -r redel found published dups _ sredel ws <<<"$res"
workers_stop "$pid_w2"
# what w1 held when it died comes back to w2: fetched again, or acked if
# w1 had stored its result (w2's drain line counts those)
kept=$(sed -n 's/.*(\([0-9]*\) redelivered with a result stored.*/\1/p' "$T/w2.log")
back=$((redel + ${kept:-0}))
[ "$back" -ge 1 ] && [ "$back" -le 16 ] && [ "$redel" -eq "$sredel" ] || fail "worker: $redel rows redelivered ($sredel in the summary), $kept stored"
look; twice=$((REQ - base - LOOKS - 600))
[ "$twice" -ge 0 ] && [ "$twice" -le 16 ] || fail "worker: $twice fetched twice"
echo "ok - worker: w1 killed at 200 of 600; $back URLs came back to w2 after ack_wait (6 s): $redel stored by their second delivery, $kept acked with w1's result; $twice fetched twice; done $(python3 -c "import sys,time;print('%.1f' % (time.time()-float(sys.argv[1])))" "$t0") s after the kill"
"$FANOUT" --nats "$URL" --durable worker --purge >/dev/null || fail "purge worker"

# ---- the server killed and started again on its store ------------------------
# 300 URLs of /slow (300 ms each) through 32 fetches at a time: about 3 s,
# so that the job is still running when the server dies at a third (of
# /fast, a loaded machine's polling could see the whole job done first).
R=300
seq "$R" | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/urls"
look; base=$REQ; LOOKS=0
workers restart 16 "$URL"
coord restart "$URL"
wait_requests $((R / 3))
kill -9 "$nspid"; wait "$nspid" 2>/dev/null
sleep 0.5
ns_start
wait $coord || fail "restart: the coordinator exited $?"
res=$(check "$T/out" "$R" slow) || fail "$res"
read -r redel found published dups disc _ ws <<<"$res"
[ "$disc" -ge 1 ] || fail "restart: the coordinator's connection never dropped"
workers_stop "$pid_w1" "$pid_w2"
look; twice=$((REQ - base - LOOKS - R))
[ "$twice" -ge 0 ] && [ "$twice" -le 32 ] || fail "restart: $twice fetched twice"
echo "ok - restart: every URL once; $redel redelivered, $twice fetched twice, $published published ($dups the stream had); by $ws"
"$FANOUT" --nats "$URL" --durable restart --purge >/dev/null || fail "purge restart"
kill -9 "$nspid"; wait "$nspid" 2>/dev/null

# ---- a 3-node cluster, the stream's leader killed ----------------------------
# 1 200 URLs of /slow (300 ms each) through 32 fetches at a time: about
# 11 s, the kill at a third
N=1200
seq "$N" | sed "s|^|http://127.0.0.1:$DP/slow?|" >"$T/urls"
cps=() nps=() npid=()
for k in 1 2 3; do cps+=("$(free_port)"); nps+=("$(free_port)"); done
for k in 1 2 3; do
  cat >"$T/n$k.conf" <<EOF
server_name: n$k
listen: 127.0.0.1:${nps[$((k - 1))]}
jetstream { store_dir: "$T/n$k" }
cluster {
  name: uvp
  listen: 127.0.0.1:${cps[$((k - 1))]}
  routes: [nats-route://127.0.0.1:${cps[0]}, nats-route://127.0.0.1:${cps[1]}, nats-route://127.0.0.1:${cps[2]}]
}
EOF
  "$NATS" -c "$T/n$k.conf" >"$T/n$k.log" 2>&1 & npid+=($!); PIDS="$PIDS $!"
done
for k in 1 2 3; do wait_port "${nps[$((k - 1))]}"; done
CURL=nats://127.0.0.1:${nps[0]},nats://127.0.0.1:${nps[1]},nats://127.0.0.1:${nps[2]}
look; base=$REQ; LOOKS=0
workers cluster 16 "$CURL"
coord cluster "$CURL"
end=$((SECONDS + 30))
until "$FANOUT" --nats "$CURL" --durable cluster --status >"$T/status" 2>/dev/null; do
  [ $SECONDS -gt $end ] && fail "cluster: no job"
  # The ports answer before the three servers know each other: a cluster
  # still forming refuses a stream of 3 replicas ("no suitable peers for
  # placement"), and the coordinator, refused, exits: it starts again.
  if ! kill -0 "$coord" 2>/dev/null && grep -q "no suitable peers" "$T/coord.log"; then
    wait "$coord" 2>/dev/null
    coord cluster "$CURL"
  fi
  sleep 0.1
done
grep -q "^3 replicas (leader n[123])" "$T/status" || fail "cluster: $(cat "$T/status")"
leader=$(sed -n 's/^3 replicas (leader n\([123]\)).*/\1/p' "$T/status")
wait_requests $((N / 3))
look; at=$((REQ - base - LOOKS))
kill -9 "${npid[$((leader - 1))]}"
t0=$(date +%s.%N)
wait_requests $((at + 50))
resumed=$(python3 -c "import sys,time;print('%.1f' % (time.time()-float(sys.argv[1])))" "$t0")
wait $coord || fail "cluster: the coordinator exited $?"
done_after=$(python3 -c "import sys,time;print('%.1f' % (time.time()-float(sys.argv[1])))" "$t0")
res=$(check "$T/out" "$N" slow) || fail "$res"
read -r redel found published dups disc _ ws <<<"$res"
workers_stop "$pid_w1" "$pid_w2"
look; twice=$((REQ - base - LOOKS - N))
[ "$twice" -ge 0 ] && [ "$twice" -le 32 ] || fail "cluster: $twice fetched twice"
echo "ok - cluster: 3 replicas; leader n$leader killed at $at fetches: fetching resumed $resumed s after, the job done $done_after s after; every URL once, $redel redelivered, $twice fetched twice"
