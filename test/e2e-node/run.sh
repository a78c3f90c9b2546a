#!/usr/bin/env bash
# run.sh NODE DRIVER ADDON ROUNDS: the Node-API example's test
# (examples/node/terminate-mid-read.js).  exec, so that a wrapper such as
# valgrind (which does not follow an exec) checks this shell only.
set -euo pipefail
node=$1
shift
exec "$node" "$@"
