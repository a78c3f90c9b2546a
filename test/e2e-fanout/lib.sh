# The NATS e2e scripts' scaffolding, sourced after FANOUT and NATS are set:
# a temporary directory $T, children's PIDs in $PIDS killed (by PID only)
# at exit, waits bounded at 10 s, free loopback ports, and $VG, valgrind's
# command line when meson asks for it (UVP_E2E_VALGRIND=1: gcc builds),
# under which leaks and errors exit 99.  Each script defines fail().
T=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
# until FILE has a line matching RE
wait_line() {
  i=0
  while ! grep -q "$2" "$1" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && fail "no '$2' in $1"; sleep 0.02
  done
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
# until something listens on 127.0.0.1:PORT (connected and closed, no byte
# sent: a newline was a client nats-server refused, "authentication error -
# Nkey \"\"" in its log, which read as if a program had sent no key)
wait_port() {
  i=0
  until (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 500 ] && fail "nothing listens on $1"; sleep 0.02
  done 2>/dev/null
}
VG=""
if [ "${UVP_E2E_VALGRIND:-0}" = 1 ] && [ -x /usr/bin/valgrind ]; then
  VG="/usr/bin/valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible --suppressions=${UVP_VALGRIND_SUPP:-/dev/null}"
fi
