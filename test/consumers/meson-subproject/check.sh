#!/usr/bin/env bash
# uvp as a Meson subproject of another project (.ci/run's section of that
# name): test/consumers/meson-subproject set up in a temporary directory,
# subprojects/uvp a symbolic link to this checkout, --force-fallback-for=uvp.
# Checks, from `meson introspect --targets`, that the subproject builds
# libuvp alone (shared and static, nothing else: no tests, examples or
# llhttp), and with uvp's curl option on libuvp-curl besides; then builds
# both configurations and runs what they built.
# Usage: bash test/consumers/meson-subproject/check.sh   (from the top)
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp test/consumers/meson-subproject/meson.build \
   test/consumers/meson-subproject/meson_options.txt \
   test/consumers/consumer.c examples/curl/fetch3.c "$dir/"
mkdir "$dir/subprojects"
ln -s "$root" "$dir/subprojects/uvp"

# targets BUILD: uvp's targets in BUILD, "NAME TYPE" a line, sorted.
targets() {
  meson introspect --targets "$1" | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["subproject"] == "uvp":
        print(t["name"], t["type"])' | sort
}
# expect BUILD WANT: uvp's targets are exactly WANT.
expect() {
  local got
  got=$(targets "$1")
  if [ "$got" != "$2" ]; then
    echo "uvp as a subproject builds:"; echo "$got"; echo "expected only:"; echo "$2"
    exit 1
  fi
  echo "uvp's targets: $(echo "$got" | wc -l) ($(echo "$got" | tr '\n' ',' | sed 's/,$//;s/,/, /g'))"
}

meson setup "$dir/build" "$dir" --force-fallback-for=uvp >/dev/null
expect "$dir/build" "uvp shared library
uvp static library"
meson compile -C "$dir/build" > "$dir/compile.log" || { cat "$dir/compile.log"; exit 1; }
"$dir/build/consumer"
echo "consumer built against the subproject and ran"

if pkg-config --exists libcurl; then
  meson setup "$dir/build-curl" "$dir" --force-fallback-for=uvp -Dwith_curl=true >/dev/null
  expect "$dir/build-curl" "uvp shared library
uvp static library
uvp-curl shared library
uvp-curl static library"
  meson compile -C "$dir/build-curl" > "$dir/compile.log" || { cat "$dir/compile.log"; exit 1; }
  out=$("$dir/build-curl/fetch3" http://127.0.0.1:1/a http://127.0.0.1:1/b http://127.0.0.1:1/c)
  [ "$(grep -c ': ECONNREFUSED (' <<< "$out")" = 3 ] ||
    { echo "fetch3 printed:"; echo "$out"; exit 1; }
  echo "with uvp:curl=enabled: fetch3 built against the subproject's uvp-curl and ran"
fi
