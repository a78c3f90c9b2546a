#!/bin/bash
# uvp-fanout --nats on a server with authorization and TLS (issue 71): one
# nats-server -js with TLS (a CA and a certificate made here by
# gen-certs.sh) and the guide's users and permissions (guide-nats.md,
# "Trust"), each user with its own inbox prefix:
#   core      a coordinator and a worker serve every URL once, over TLS,
#             each user's password from the environment
#   durable   a durable job's coordinator and worker, every URL once; the
#             observer's --status; a rerun prints the job again
#   stranger  a user of another application on the same server: it cannot
#             read the service's subject, publish a reply into the
#             coordinator's inbox, nor plant a result in the job's bucket
#             (each refused by the server: -ERR Permissions Violation)
#   refused   a wrong password, and a certificate not trusted (no --tlsca),
#             end the coordinator and the worker at once with one line
#             naming the cause
#   mtls      a server that verifies clients (tls { verify: true }): a
#             client certificate (--tlscert/--tlskey, NATS_CERT/NATS_KEY)
#             served; none, or one the server refuses, ends the
#             coordinator at once with one line saying so
#   token     a second server with a token (NATS_TOKEN): served
#   nkey      a third with an nkey user (--nkey, its seed made here by
#             nkey-gen.py): served
#   creds     a fourth in operator mode (a memory resolver; the operator,
#             account and user JWTs made here by nkey-gen.py): --creds
#             and NATS_CREDS served; another operator's creds refused
# (nkey-gen.py runs on Debian's python3 with python3-cryptography, which
# .ci/setup installs: the python3 on PATH may be another without it.)
# Usage: test-e2e-fanout-nats-auth.sh FANOUT NATS_SERVER.
set -u
FANOUT=$1
NATS=$2
. "$(dirname "$0")/lib.sh"
RAW="python3 $(dirname "$0")/nats-raw.py"
fail() { echo "FAIL: $*"; for l in "$T"/*.log; do echo "== $l"; tail -n ${TAIL:-30} "$l"; done; exit 1; }
mkdir "$T/certs"
sh "$(dirname "$0")/gen-certs.sh" "$T/certs" || fail "gen-certs.sh"
chmod go-rwx "$T"/certs/*.key # else each use warns (as ssh would)

port=$(free_port)
# The guide's configuration (guide-nats.md, "Trust"), read from the guide
# as it is (job JOB = j1), with TLS and a user of another application (the
# stranger) added
block=$(awk '/^\*\*The permissions\.\*\*/ {p = 1}
             p && /^```conf/ {c = 1; next}
             c && /^```/ {exit}
             c' "$(dirname "$0")/../../docs/guide-nats.md")
[ -n "$block" ] || fail "no permission block in docs/guide-nats.md"
{
  printf 'listen: 127.0.0.1:%s\n' "$port"
  # (timeout: the server's wait for the TLS handshake, 0.5 s by default,
  # which a client under valgrind outlasts)
  printf 'tls { cert_file: "%s/certs/good.pem", key_file: "%s/certs/good.key", timeout: 90 }\n' "$T" "$T"
  printf 'jetstream { store_dir: "%s/store" }\n' "$T"
  printf '%s\n' "$block" | sed -e 's/JOB/j1/g' -e 's/^    \]$/      {user: stranger, password: stranger, permissions: {\
        publish: ["_UVP.CANCEL.>", "other.>"],\
        subscribe: ["_INBOX_stranger.>", "other.>"]}}\
    ]/'
} >"$T/server.conf"
# the server's passwords from its environment too ($VAR in its config)
export COORD_PASS=c0ord WORKER_PASS=w0rker DCOORD_PASS=dc0ord DWORKER_PASS=dw0rker OBSERVER_PASS=0bserver
"$NATS" -c "$T/server.conf" >>"$T/ns.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$port"
URL=nats://127.0.0.1:$port
export NATS_CA=$T/certs/ca.pem # every client below trusts the test's CA
# under valgrind a TLS connect takes seconds (tens of seconds on a loaded
# machine: the mtls case timed out at 30 s with load 8): more than the
# default bound
VGT=""
[ -n "$VG" ] && VGT="--nats-timeout 80000"
"$FANOUT" --serve 0 >"$T/demo" & PIDS="$PIDS $!"
wait_line "$T/demo" listening
DP=$(sed 's/.*://' "$T/demo")
N=20
seq "$N" | sed "s|^|http://127.0.0.1:$DP/fast?|" >"$T/urls"
# ROWS in OUT: each URL once, in order, a 200 from a worker
check() {
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"n":' in l]
n = int(sys.argv[2])
if len(rows) != n:
    print("%d rows of %d" % (len(rows), n)); sys.exit(1)
for i, r in enumerate(rows, 1):
    if r["n"] != i or r.get("status") != 200 or not r.get("worker"):
        print("row %d: %s" % (i, json.dumps(r))); sys.exit(1)
PY
}
# as USER COMMAND...: COMMAND as USER (its password from the environment,
# its inbox prefix _INBOX_USER); bg: the same, in the background, $! the
# command itself (exec'd: a signal reaches it)
as() {
  u=$1; shift
  NATS_USER=$u NATS_PASSWORD=$(eval echo "\$$(echo "$u" | tr a-z A-Z)_PASS") \
    NATS_INBOX_PREFIX=_INBOX_$u "$@"
}
bg() {
  u=$1; shift
  exec env NATS_USER="$u" NATS_PASSWORD="$(eval echo "\$$(echo "$u" | tr a-z A-Z)_PASS")" \
    NATS_INBOX_PREFIX="_INBOX_$u" "$@"
}

# ---- core ------------------------------------------------------------------
bg worker "$FANOUT" --nats "$URL" --worker -c 8 --name w1 >"$T/w1.log" 2>&1 &
w1=$!; PIDS="$PIDS $w1"
wait_line "$T/w1.log" serving
as coord timeout 150 $VG "$FANOUT" $VGT --nats "$URL" -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/coord.log" ||
  fail "core: the coordinator exited $?: $(head -c 600 "$T/coord.log")"
res=$(check "$T/out" "$N") || fail "core: $res"
echo "ok ($SECONDS s) - core: $N URLs through a worker, over TLS, under the guide's permissions"

# ---- stranger ----------------------------------------------------------------
S=nats://stranger:stranger@127.0.0.1:$port
refused() { # WHAT COMMAND...: the server refuses it (a Permissions Violation)
  what=$1; shift
  out=$("$@" 2>&1) && fail "stranger: $what was allowed"
  case "$out" in *"Permissions Violation"*) ;; *) fail "stranger: $what: $out" ;; esac
}
# (the stranger speaks TLS through python's ssl: nats-raw.py over a plain
# socket cannot, so this part uses a server of its own without TLS)
sport=$(free_port)
sed -e "s|^listen: .*|listen: 127.0.0.1:$sport|" -e '/^tls {/d' -e "s|@DIR@/store|$T/store2|" \
  "$T/server.conf" >"$T/plain.conf"
"$NATS" -c "$T/plain.conf" >>"$T/ns2.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$sport"
S=nats://stranger:stranger@127.0.0.1:$sport
refused "reading the service's subject" $RAW "$S" cancel uvp-fanout.fetch 1 1
refused "a reply into the coordinator's inbox" $RAW "$S" put _INBOX_coord.x.1 '{"v":1,"id":1}'
refused "a result planted in the job's bucket" $RAW "$S" put '$KV.uvp-fanout-j1.r.3' '{"v":1,"id":3}'
refused "a request to the service" $RAW "$S" put uvp-fanout.fetch '{"v":1,"id":1}'
echo "ok ($SECONDS s) - stranger: the service's subject, the coordinator's inbox and the job's bucket refused"

# ---- durable -----------------------------------------------------------------
bg dworker "$FANOUT" --nats "$URL" --worker --durable j1 -c 8 --name w2 >"$T/w2.log" 2>&1 &
w2=$!; PIDS="$PIDS $w2"
wait_line "$T/w2.log" "waiting for job\|serving job"
as dcoord timeout 60 "$FANOUT" --nats "$URL" --durable j1 -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/dcoord.log" ||
  fail "durable: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "durable: $res"
as observer timeout 30 "$FANOUT" --nats "$URL" --durable j1 --status >"$T/status" 2>"$T/status.log" ||
  fail "durable: --status exited $?"
grep -q "job j1: $N URLs, $N results stored" "$T/status" || fail "durable: --status said $(cat "$T/status")"
as dcoord timeout 60 "$FANOUT" --nats "$URL" --durable j1 -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/dcoord.log" ||
  fail "durable: the coordinator run again exited $?"
res=$(check "$T/out" "$N") || fail "durable, again: $res"
grep -q "\"found\":$N" "$T/out" || fail "durable: the rerun did not find the $N results"
# least privilege both ways: nothing a role does is refused (each refusal
# is said at once, with its subject)
for l in w1 w2 coord dcoord status; do
  grep -h "Permissions Violation" "$T/$l.log" 2>/dev/null && fail "durable: $l was refused a permission"
done
echo "ok ($SECONDS s) - durable: $N URLs once under the guide's permissions; the observer's --status; a rerun found every result"

# ---- refused -----------------------------------------------------------------
once() { # WHAT WANT COMMAND...: exits 1 within 3 s with one line saying WANT
  what=$1 want=$2; shift 2
  t0=$(date +%s%N)
  "$@" >/dev/null 2>"$T/err"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ $rc = 1 ] || fail "$what: exited $rc ($(cat "$T/err"))"
  [ "$(wc -l <"$T/err")" = 1 ] || fail "$what: not one line: $(cat "$T/err")"
  grep -q "$want" "$T/err" || fail "$what: $(cat "$T/err")"
  [ $ms -lt 3000 ] || fail "$what: took $ms ms"
  echo "  $what: $ms ms: $(cat "$T/err")"
}
once "wrong password, coordinator" "Authorization Violation" \
  env NATS_PASSWORD=wrong "$FANOUT" --nats "$URL" --nats-user coord -f "$T/urls"
once "wrong password, worker" "Authorization Violation" \
  env NATS_PASSWORD=wrong "$FANOUT" --nats "$URL" --nats-user worker --worker
once "wrong password, durable" "Authorization Violation" \
  env NATS_PASSWORD=wrong "$FANOUT" --nats "$URL" --nats-user dcoord --durable j1 --status
once "untrusted certificate" "certificate" \
  env -u NATS_CA NATS_PASSWORD=c0ord "$FANOUT" --nats "$URL" --nats-user coord --tlsname localhost -f "$T/urls"
once "another host's name" "hostname mismatch" \
  env NATS_PASSWORD=c0ord "$FANOUT" --nats "$URL" --nats-user coord --tlsname other.invalid -f "$T/urls"
echo "ok ($SECONDS s) - refused: wrong passwords and untrusted certificates end at once, in one line"
kill -TERM "$w1" "$w2"
wait "$w1" || fail "w1 exited $?"
wait "$w2" || fail "w2 exited $?"

# ---- mtls --------------------------------------------------------------------
mport=$(free_port)
C=$T/certs
printf 'listen: 127.0.0.1:%s\ntls { cert_file: "%s", key_file: "%s", ca_file: "%s", verify: true, timeout: 90 }\n' \
  "$mport" "$C/good.pem" "$C/good.key" "$C/ca.pem" >"$T/mtls.conf"
"$NATS" -c "$T/mtls.conf" >>"$T/ns6.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$mport"
NATS_CERT=$C/client.pem NATS_KEY=$C/client.key "$FANOUT" --nats "nats://127.0.0.1:$mport" --worker --name w6 >"$T/w6.log" 2>&1 &
w6=$!; PIDS="$PIDS $w6"
wait_line "$T/w6.log" serving
timeout 150 $VG "$FANOUT" $VGT --nats "nats://127.0.0.1:$mport" --tlscert "$C/client.pem" --tlskey "$C/client.key" \
  -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/mcoord.log" || fail "mtls: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "mtls: $res"
once "no client certificate" "it wants a client certificate" \
  "$FANOUT" --nats "nats://127.0.0.1:$mport" -f "$T/urls"
once "a server's certificate as the client's" "it did not accept the client certificate" \
  "$FANOUT" --nats "nats://127.0.0.1:$mport" --tlscert "$C/good.pem" --tlskey "$C/good.key" -f "$T/urls"
kill -TERM "$w6"; wait "$w6" || fail "w6 exited $?"
echo "ok ($SECONDS s) - mtls: $N URLs with --tlscert/--tlskey and NATS_CERT/NATS_KEY; none, or the wrong kind, refused in one line"

# ---- token -------------------------------------------------------------------
unset NATS_CA # the servers below have no TLS
tport=$(free_port)
printf 'listen: 127.0.0.1:%s\nauthorization { token: "s3cret-t0ken" }\n' "$tport" >"$T/token.conf"
"$NATS" -c "$T/token.conf" >>"$T/ns3.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$tport"
NATS_TOKEN=s3cret-t0ken "$FANOUT" --nats "nats://127.0.0.1:$tport" --worker --name w3 >"$T/w3.log" 2>&1 &
w3=$!; PIDS="$PIDS $w3"
wait_line "$T/w3.log" serving
timeout 30 "$FANOUT" --nats "nats://127.0.0.1:$tport" --nats-token s3cret-t0ken -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/tcoord.log" ||
  fail "token: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "token: $res"
once "wrong token" "Authorization Violation" \
  "$FANOUT" --nats "nats://127.0.0.1:$tport" --nats-token wrong -f "$T/urls"
kill -TERM "$w3"; wait "$w3" || fail "w3 exited $?"
echo "ok ($SECONDS s) - token: $N URLs with NATS_TOKEN and --nats-token; a wrong one refused"

# ---- nkey --------------------------------------------------------------------
NKEYGEN="/usr/bin/python3 $(dirname "$0")/nkey-gen.py"
/usr/bin/python3 -c 'import cryptography' 2>/dev/null ||
  fail "nkey: /usr/bin/python3 has no cryptography module (install python3-cryptography: .ci/setup test)"
$NKEYGEN "$T/user.nk" >"$T/user.pub" || fail "nkey-gen.py"
nport=$(free_port)
printf 'listen: 127.0.0.1:%s\nauthorization { users = [ {nkey: %s} ] }\n' "$nport" "$(cat "$T/user.pub")" >"$T/nkey.conf"
"$NATS" -c "$T/nkey.conf" >>"$T/ns4.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$nport"
NATS_NKEY=$T/user.nk "$FANOUT" --nats "nats://127.0.0.1:$nport" --worker --name w4 >"$T/w4.log" 2>&1 &
w4=$!; PIDS="$PIDS $w4"
wait_line "$T/w4.log" serving
timeout 150 $VG "$FANOUT" $VGT --nats "nats://127.0.0.1:$nport" --nkey "$T/user.nk" -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/ncoord.log" ||
  fail "nkey: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "nkey: $res"
kill -TERM "$w4"; wait "$w4" || fail "w4 exited $?"
echo "ok ($SECONDS s) - nkey: $N URLs with --nkey and NATS_NKEY"

# ---- creds -------------------------------------------------------------------
# operator mode: the server trusts the operator's JWT and knows the account
# from it (resolver MEMORY); the user's JWT and seed in a .creds file
mkdir "$T/jwt" "$T/jwt2"
$NKEYGEN --creds "$T/jwt" && $NKEYGEN --creds "$T/jwt2" || fail "nkey-gen.py --creds"
cport=$(free_port)
read -r apub ajwt <"$T/jwt/account"
printf 'listen: 127.0.0.1:%s\noperator: "%s"\nresolver: MEMORY\nresolver_preload: { %s: "%s" }\n' \
  "$cport" "$(cat "$T/jwt/operator.jwt")" "$apub" "$ajwt" >"$T/creds.conf"
"$NATS" -c "$T/creds.conf" >>"$T/ns5.log" 2>&1 &
PIDS="$PIDS $!"
wait_port "$cport"
NATS_CREDS=$T/jwt/user.creds "$FANOUT" --nats "nats://127.0.0.1:$cport" --worker --name w5 >"$T/w5.log" 2>&1 &
w5=$!; PIDS="$PIDS $w5"
wait_line "$T/w5.log" serving
timeout 150 $VG "$FANOUT" $VGT --nats "nats://127.0.0.1:$cport" --creds "$T/jwt/user.creds" -m 3 --json -f "$T/urls" >"$T/out" 2>"$T/ccoord.log" ||
  fail "creds: the coordinator exited $?"
res=$(check "$T/out" "$N") || fail "creds: $res"
once "another operator's creds" "Authorization Violation" \
  "$FANOUT" --nats "nats://127.0.0.1:$cport" --creds "$T/jwt2/user.creds" -f "$T/urls"
kill -TERM "$w5"; wait "$w5" || fail "w5 exited $?"
echo "ok ($SECONDS s) - creds: $N URLs with --creds and NATS_CREDS in operator mode; another operator's refused"
