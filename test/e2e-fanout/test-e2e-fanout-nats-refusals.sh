#!/bin/bash
# uvp-fanout --nats facing a server that holds it or refuses it: every
# wait bounded, every failure said.
#   stall      a server that sends INFO and never answers the first PING,
#              or announces TLS and never speaks it (nats-stall.py): the
#              coordinator and the worker each print an error within
#              10 s and exit 1 (before: nothing, for ever); a worker
#              given SIGTERM while it connects exits 0 at once (before:
#              it took SIGKILL)
#   mute       a server that completes the handshake, then answers
#              nothing: SIGTERM ends the worker at once, with no
#              "unhandled rejection" line (before: one, 30 s later)
#   rotated    the server restarted with another password: the worker
#              says "Authorization Violation" and exits 1 (before: it
#              said nothing, served nothing, outlived SIGTERM)
#   gone       the server killed: SIGTERM ends the worker at once (before:
#              30 s later, its drain's deadline)
#   denied     a role without a permission: the worker refused its
#              subscription exits 1 at once, the coordinator refused its
#              publish says so at once and its rows are EACCES, --status
#              refused its JetStream calls says so at once; each line
#              with the server's words and the subject (before: silence,
#              minutes of retries, "connection timed out")
#   secrets    a password or token in the URL printed as ***; -u refused
#              with --nats; a key file others may read warned of; NATS_URL
#              taken by --worker
# Usage: test-e2e-fanout-nats-refusals.sh FANOUT NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
STALL="python3 $(dirname "$0")/nats-stall.py"
fail() { echo "FAIL: $*"; for l in "$T"/*.log; do echo "== $l"; tail -n 5 "$l"; done; exit 1; }
now() { date +%s%N; }
ms_since() { echo $((($(now) - $1) / 1000000)); }
# until PID has exited, MS at most; its status in $rc
wait_exit() {
  local i=0
  while kill -0 "$1" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt $(($2 / 20)) ] && return 1; sleep 0.02
  done
  wait "$1"; rc=$?
}
echo "http://127.0.0.1:9/x" >"$T/urls"
# "at once" for a tool under valgrind (which starts it in seconds): 40 s
AT_ONCE=10000
[ -n "$VG" ] && AT_ONCE=40000

# ---- stall -----------------------------------------------------------------
# Not under valgrind: the connect abandoned is still inside nats.c when the
# tool exits (its peer never lets it go), and its thread's memory with it.
for mode in nopong tlsstall; do
  $STALL $mode "$T/port.$mode" & PIDS="$PIDS $!"
  wait_line "$T/port.$mode" '[0-9]'
  SU=nats://127.0.0.1:$(cat "$T/port.$mode")
  t0=$(now)
  timeout -k 1 20 "$FANOUT" --nats "$SU" -m 2 -f "$T/urls" >"$T/c.$mode.log" 2>&1
  rc=$?; ms=$(ms_since "$t0")
  [ $rc = 1 ] || fail "stall $mode: the coordinator exited $rc after $ms ms"
  [ "$ms" -lt 15000 ] || fail "stall $mode: the coordinator took $ms ms (its bound: 7 s)"
  grep -q "did not complete the NATS handshake" "$T/c.$mode.log" ||
    fail "stall $mode: the coordinator did not say why"
  t0=$(now)
  timeout -k 1 20 "$FANOUT" --nats "$SU" --worker >"$T/w.$mode.log" 2>&1
  rc=$?; ms=$(ms_since "$t0")
  [ $rc = 1 ] || fail "stall $mode: the worker exited $rc after $ms ms"
  [ "$ms" -lt 15000 ] || fail "stall $mode: the worker took $ms ms (its bound: 7 s)"
  grep -q "did not complete the NATS handshake" "$T/w.$mode.log" ||
    fail "stall $mode: the worker did not say why"
  "$FANOUT" --nats "$SU" --worker >"$T/wt.$mode.log" 2>&1 & w=$!; PIDS="$PIDS $w"
  sleep 0.5
  t0=$(now); kill -TERM "$w"
  wait_exit "$w" 5000 || fail "stall $mode: the worker outlived SIGTERM by 5 s"
  [ $rc = 0 ] || fail "stall $mode: the worker stopped while connecting exited $rc"
done
echo "ok ($SECONDS s) - stall: a server that never answers the PING or never speaks TLS: said within the 7 s bound; SIGTERM while connecting"

# ---- mute ------------------------------------------------------------------
$STALL mute "$T/port.mute" & PIDS="$PIDS $!"
wait_line "$T/port.mute" '[0-9]'
"$FANOUT" --nats "nats://127.0.0.1:$(cat "$T/port.mute")" --worker >"$T/w.mute.log" 2>&1 & w=$!; PIDS="$PIDS $w"
sleep 1
kill -TERM "$w"
wait_exit "$w" 5000 || fail "mute: the worker outlived SIGTERM by 5 s"
grep -q "unhandled rejection" "$T/w.mute.log" && fail "mute: an unhandled rejection"
echo "ok ($SECONDS s) - mute: SIGTERM ends a worker whose server answers nothing, nothing left unhandled"

# ---- rotated, gone ---------------------------------------------------------
port=$(free_port)
srv() {
  printf 'listen: 127.0.0.1:%s\nauthorization { user: alice, password: "%s" }\n' "$port" "$1" >"$T/pw.conf"
  "$NATS" -c "$T/pw.conf" >>"$T/ns.log" 2>&1 & ns=$!; PIDS="$PIDS $ns"
  wait_port "$port"
}
for case in rotated gone; do
  srv pw1
  NATS_USER=alice NATS_PASSWORD=pw1 "$FANOUT" --nats "nats://127.0.0.1:$port" --worker -c 4 --name w -m 20 >"$T/w.$case.log" 2>&1 &
  w=$!; PIDS="$PIDS $w"
  wait_line "$T/w.$case.log" serving
  kill -KILL "$ns"; wait "$ns" 2>/dev/null
  if [ $case = rotated ]; then
    srv pw2
    wait_exit "$w" 15000 || fail "rotated: the worker still runs 15 s after the server refused its password"
    [ $rc = 1 ] || fail "rotated: the worker exited $rc"
    grep -q "Authorization Violation" "$T/w.$case.log" || fail "rotated: the worker did not say why"
    kill "$ns"; wait "$ns" 2>/dev/null
  else
    sleep 1
    t0=$(now); kill -TERM "$w"
    wait_exit "$w" 5000 || fail "gone: the worker outlived SIGTERM by 5 s (its -m is 20 s)"
    [ $rc = 0 ] || fail "gone: the worker exited $rc"
  fi
done
echo "ok ($SECONDS s) - rotated: a refused password said and the worker ended; gone: SIGTERM ends a worker with nothing held at once"

# ---- denied ----------------------------------------------------------------
port=$(free_port)
cat >"$T/perm.conf" <<EOF
listen: 127.0.0.1:$port
jetstream { store_dir: "$T/js" }
accounts {
  APP {
    jetstream: enabled
    users: [
      {user: nosub, password: p, permissions: {subscribe: ["_INBOX_nosub.>"]}}
      {user: nopub, password: p, permissions: {publish: ["other.>"],
                                                subscribe: ["_INBOX_nopub.>"]}}
      {user: nojs, password: p, permissions: {publish: ["other.>"],
                                               subscribe: ["_INBOX_nojs.>"]}}
    ]
  }
}
EOF
"$NATS" -c "$T/perm.conf" >>"$T/ns.log" 2>&1 & PIDS="$PIDS $!"
wait_port "$port"
DU=nats://127.0.0.1:$port
as() { u=$1; shift; NATS_USER=$u NATS_PASSWORD=p NATS_INBOX_PREFIX=_INBOX_$u "$@"; }
t0=$(now)
as nosub timeout -k 1 20 $VG "$FANOUT" --nats "$DU" --worker >"$T/w.denied.log" 2>&1
rc=$?; ms=$(ms_since "$t0")
[ $rc = 1 ] || fail "denied: the worker refused its subscription exited $rc after $ms ms"
[ "$ms" -lt $AT_ONCE ] || fail "denied: the worker took $ms ms"
grep -q 'Permissions Violation for Subscription to "uvp-fanout.fetch"' "$T/w.denied.log" ||
  fail "denied: the worker did not say which subscription"
t0=$(now)
as nopub timeout -k 1 90 $VG "$FANOUT" --nats "$DU" -m 60 --json -f "$T/urls" >"$T/out" 2>"$T/c.denied.log"
rc=$?; ms=$(ms_since "$t0")
[ "$ms" -lt $AT_ONCE ] || fail "denied: the coordinator took $ms ms (its -m is 60 s)"
grep -q '"error":"EACCES"' "$T/out" || fail "denied: the coordinator's row is not EACCES"
grep -q 'Permissions Violation for Publish to "uvp-fanout.fetch"' "$T/c.denied.log" ||
  fail "denied: the coordinator did not say which publish"
t0=$(now)
as nojs timeout -k 1 60 $VG "$FANOUT" --nats "$DU" --durable j1 --status >"$T/out" 2>"$T/s.denied.log"
rc=$?; ms=$(ms_since "$t0")
[ $rc != 0 ] || fail "denied: --status without its permissions exited 0"
[ "$ms" -lt $AT_ONCE ] || fail "denied: --status took $ms ms"
grep -q 'Permissions Violation for Publish to "\$JS.API' "$T/s.denied.log" ||
  fail "denied: --status did not say which call"
echo "ok ($SECONDS s) - denied: a refused subscription, publish and JetStream call each said at once with its subject"

# ---- secrets ---------------------------------------------------------------
# A password or a token in the URL never printed (as curl: ***); -u with
# --nats refused (curl's web login, or the NATS server's?); a key file
# others may read warned of (as ssh); NATS_URL taken by --worker.
dead=$(free_port)
"$FANOUT" --nats "nats://alice:s3cr3t@127.0.0.1:$dead,nats://t0k3n@127.0.0.1:$dead" --worker >"$T/sec.log" 2>&1
grep -q "s3cr3t\|t0k3n" "$T/sec.log" && fail "secrets: a secret printed: $(cat "$T/sec.log")"
grep -q "nats://alice:\*\*\*@127.0.0.1:$dead,nats://\*\*\*@127.0.0.1:$dead" "$T/sec.log" ||
  fail "secrets: the URL not shown redacted: $(cat "$T/sec.log")"
"$FANOUT" -s "nats://127.0.0.1:$dead" -u alice:pw -f "$T/urls" >"$T/u.log" 2>&1
[ $? = 2 ] || fail "secrets: -u with --nats not refused"
grep -q "http-user" "$T/u.log" || fail "secrets: -u's refusal does not say what to use"
printf 'not a key\n' >"$T/key.pem"; chmod 644 "$T/key.pem"
"$FANOUT" --nats "nats://127.0.0.1:$dead" --tlscert "$T/key.pem" --tlskey "$T/key.pem" --worker >"$T/k.log" 2>&1
grep -q "key.pem is readable by others" "$T/k.log" || fail "secrets: no warning for a key file others may read"
NATS_URL="nats://127.0.0.1:$dead" "$FANOUT" --worker >"$T/env.log" 2>&1
grep -q "127.0.0.1:$dead: connection refused" "$T/env.log" || fail "secrets: NATS_URL not taken: $(cat "$T/env.log")"
echo "ok ($SECONDS s) - secrets: redacted in what is printed, -u refused with --nats, a readable key warned of, NATS_URL taken"
