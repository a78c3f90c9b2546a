#!/bin/bash
# README's first command, .ci/example, begins with .ci/setup, which
# installs what is missing with apt-get: run by a user other than root it
# must say to run it as root (or with sudo), and stop before apt-get (whose
# own word is "Could not open lock file", status 100).  The user is a real
# one (nobody, through setpriv, when this runs as root); what is missing
# is made up: a dpkg-query first on PATH that finds nothing installed.
# nobody runs a copy of .ci in a directory of the test's own: the source
# tree may be where nobody cannot read it (a clone under /root, mode 700).
# Usage: test-ci-setup.sh SOURCE_ROOT.
set -u
src=$1
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
chmod 755 "$t"
cp -R "$src/.ci" "$t/ci" && chmod -R a+rX "$t/ci" || { echo "FAIL: cannot copy $src/.ci"; exit 1; }
printf '#!/bin/sh\nexit 1\n' >"$t/dpkg-query"
chmod 755 "$t/dpkg-query"
as=()
if [ "$(id -u)" = 0 ]; then
  command -v setpriv >/dev/null || { echo "skipped: no setpriv to run as nobody"; exit 77; }
  as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
(cd "$t" && "${as[@]}" env PATH="$t:$PATH" bash "$t/ci/setup" example) >"$t/out" 2>"$t/err"
rc=$?
fail() { echo "FAIL: $*"; echo "== stdout"; cat "$t/out"; echo "== stderr"; cat "$t/err"; exit 1; }
[ $rc -ne 0 ] || fail "exit 0"
grep -q "run it as root (or with sudo)" "$t/err" || fail "no hint to run it as root"
! grep -q "^E: \|lock file" "$t/out" "$t/err" || fail "apt-get ran"
echo "ok - .ci/setup as $("${as[@]}" id -un): exit $rc, '$(tail -1 "$t/err")', apt-get not run"
