# Shared by the bench runners (sourced, not run): reading the programs'
# key=value lines, medians, and pairs.  A runner sets $tmp (a scratch
# directory) before calling one.

# field NAME: the numeric value of NAME=... on each line of stdin
field() { sed -n "s/.*[ ]$1=\([0-9.-]*\).*/\1/p"; }

# median [FORMAT]: of the numbers on stdin, "-" if there are none
median() {
  sort -g | awk -v fmt="${1:-%.1f}" '{a[NR]=$1} END {if (NR == 0) {print "-"; exit}
    m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf fmt, m}'
}

# a / b, or "-" when either is missing
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0)
    print "-"; else printf "%.2f", a / b }'
}

# verdict VALUE OP LIMIT [LOW HIGH [COUNT]], OP one of >= <= <: "met",
# "MISSED", "unsettled (...)" or "n/a" when VALUE is "-".  LOW and HIGH are
# the figure's spread on this machine (the quartiles of its runs, or of
# its pairs' ratios), COUNT how many runs or pairs they come from: a
# figure whose spread reaches both sides of LIMIT, or read on fewer than 3
# runs, is not stable enough here to have missed it, and says so instead.
# A figure without a spread (a count, bytes that do not move) is judged
# on VALUE alone.  The one rule every runner's targets go through.
verdict() {
  awk -v v="$1" -v op="$2" -v l="$3" -v lo="${4:-}" -v hi="${5:-}" -v n="${6:-}" '
    function ok(x) { return (op == ">=" && x >= l) || (op == "<=" && x <= l) ||
                            (op == "<" && x < l) }
    BEGIN { if (v == "-") { print "n/a"; exit }
      if (ok(v)) { print "met"; exit }
      if (n != "" && n < 3) { printf "unsettled (%d run(s))\n", n; exit }
      if (lo != "" && hi != "" && lo != "-" && hi != "-" && (ok(lo) || ok(hi)))
        printf "unsettled (spread %s..%s reaches %s)\n", lo, hi, l
      else print "MISSED" }'
}

# quartiles: of the numbers on stdin, "median q1 q3 count" ("- - - 0"
# when there are none); q1 and q3 as pairs takes them.
quartiles() {
  sort -g | awk '{r[NR]=$1} END {if (NR == 0) {print "- - - 0"; exit}
    m=(NR%2)?r[(NR+1)/2]:(r[NR/2]+r[NR/2+1])/2;
    print m, r[int((NR+3)/4)], r[int((3*NR+3)/4)], NR}'
}

# spread [FORMAT]: "median (q1..q3)" of the numbers on stdin, each in
# FORMAT (default %.1f): how every runner prints a median.
spread() {
  quartiles | awk -v f="${1:-%.1f}" '{ if ($4 == 0) { print "-"; exit }
    printf f " (" f ".." f ")\n", $1, $2, $3 }'
}

# cpu_ms PID: the CPU time (user + system) PID has used so far, in ms.
cpu_ms() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) * 1000 / hz }' \
    "/proc/$1/stat"
}

# pairs OP: stdin holds one pair "a b" per line (paste two runs' figures
# side by side); prints "median q1 q3 count" of b/a (OP /) or b-a (OP -)
# over the pairs.  The median of per-pair figures rather than a figure of
# two medians: a shared machine goes through slow and fast stretches that
# last longer than one pair, and each pair sees one of them.
pairs() {
  awk -v op="$1" 'op == "-" || $1 > 0 {print op == "/" ? $2 / $1 : $2 - $1}' |
    sort -g |
    awk '{r[NR]=$1} END {if (NR == 0) {print "- - - 0"; exit}
      m=(NR%2)?r[(NR+1)/2]:(r[NR/2]+r[NR/2+1])/2;
      printf "%.3f %.3f %.3f %d\n", m, r[int((NR+3)/4)], r[int((3*NR+3)/4)], NR}'
}

# bench_cpus: the CPU list (taskset -c syntax) every measured program is
# pinned to, uvp's and its peer's alike: UVP_BENCH_CPUS, else the last CPU
# this shell may run on.  One core for both sides, not "whatever the
# scheduler gives each": on a shared machine with autogroup scheduling a
# process started from another terminal is not lowered by `nice`, so an
# unpinned peer can get a sliver of a core while uvp gets a whole one (or
# the reverse), and the ratio measures the neighbours.  A runner whose
# programs need more threads running at once sets UVP_BENCH_CPUS=0,1 (say).
bench_cpus() {
  if [ -n "${UVP_BENCH_CPUS:-}" ]; then
    echo "$UVP_BENCH_CPUS"
  else
    taskset -pc $$ 2> /dev/null | sed 's/.*: *//; s/.*[,-]//' || echo 0
  fi
}

# pinned CMD...: CMD on bench_cpus (CMD as is where taskset is missing).
# Every program a comparison measures is started through it (directly or
# through one).  PIN holds the words that do it, for a command started in
# the background whose pid the runner reads (a server under test):
# `"${PIN[@]}" CMD &`, since a function in the background is a subshell
# and $! would be the subshell's pid, not the command's.
PIN=()
! command -v taskset > /dev/null || PIN=(taskset -c "$(bench_cpus)")
pinned() { "${PIN[@]}" "$@"; }

# one OUT CMD...: run CMD pinned (pinned), alone, and append its output
# to $tmp/OUT, its last line with what the kernel accounted to it, from getrusage of
# the child (bash's time) and GNU time's peak RSS where installed:
#   child_cpu_ms  user + system CPU time of CMD and its threads
#   child_wall_ms wall time around it (start-up included)
#   child_rss_kb  peak resident set ("-" without /usr/bin/time)
# CPU time is the fair figure on a loaded machine: it does not count the
# time CMD waited for the core, which wall time does.  Stops the runner
# when CMD fails.
one() {
  local out=$1 rc=0 t rss=- TIMEFORMAT='%3R %3U %3S'
  shift
  local -a wrap=()
  [ ! -x /usr/bin/time ] || wrap=(/usr/bin/time -f %M -o "$tmp/.rss")
  { time pinned "${wrap[@]}" "$@" > "$tmp/.line" 2>&3 || rc=$?; } 3>&2 2> "$tmp/.time"
  if [ $rc -ne 0 ]; then
    echo "failed: $* -> $(cat "$tmp/.line")" >&2
    exit 1
  fi
  t=$(tail -n 1 "$tmp/.time")
  [ ! -s "$tmp/.rss" ] || rss=$(tail -n 1 "$tmp/.rss")
  # on the last line of CMD's output, where a runner reads its fields
  sed "\$ s/\$/ $(echo "$t" | awk -v r="$rss" \
    '{printf "child_cpu_ms=%.0f child_wall_ms=%.0f child_rss_kb=%s", ($2 + $3) * 1000, $1 * 1000, r}')/" \
    "$tmp/.line" >> "$tmp/$out"
}

# fair LABEL OPS A B [NAME_A NAME_B]: the comparison line of two programs
# run by one into $tmp/A and $tmp/B, interleaved (A, B, A, B, ...) on the
# same pinned CPU(s): CPU time and wall time per operation (OPS
# operations a run, or OPS_A:OPS_B where a side's process does more
# rounds), the median of each side with its min..max, and the
# median of the pairs' ratios B/A with its min..max.  Warns when there
# are fewer than five pairs: below that a median says little here.
fair() {
  local label=$1 ops=$2 a=$3 b=$4 na=${5:-$3} nb=${6:-$4} f
  for f in child_cpu_ms child_wall_ms; do
    paste <(field $f < "$tmp/$a") <(field $f < "$tmp/$b") |
      awk -v oa="${ops%%:*}" -v ob="${ops#*:}" -v f="$f" -v na="$na" -v nb="$nb" -v lab="$label" '
        function med(x, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && x[j-1] > x[j]; j--) {
            t = x[j]; x[j] = x[j-1]; x[j-1] = t }
          return (n % 2) ? x[(n+1)/2] : (x[n/2] + x[n/2+1]) / 2 }
        function g(x) { if (x >= 100) return sprintf("%.0f", x)
          return sprintf(x >= 10 ? "%.1f" : "%.3f", x) }
        function cell(x, n,   m) { m = med(x, n)
          return g(m) " (" g(x[1]) ".." g(x[n]) ")" }
        NF == 2 { n++; u[n] = $1 * 1e6 / oa; p[n] = $2 * 1e6 / ob
          if (u[n] > 0) { k++; r[k] = p[n] / u[n] } }
        END { if (n == 0) { printf "fair %s: no pairs\n", lab; exit }
          printf "fair %s, %s ns/op, %d pair(s)%s: %s %s, %s %s, %s/%s %s\n",
            lab, f == "child_cpu_ms" ? "CPU (user+sys)" : "wall", n,
            n < 5 ? " (fewer than 5: not a figure)" : "",
            na, cell(u, n), nb, cell(p, n), nb, na, k ? cell(r, k) : "-" }'
  done
}

# machine: one line naming the processor, the CPUs this process may use
# and the load when the runner starts, printed beside a runner's figures.
# The same code has read 1.7x and 2.2x Node's ping-pong on two machines of
# this kind (docs/internals/fibers.md 13.5), and a loaded machine moves wall times most:
# a figure is only compared with one taken on the same processor.
machine() {
  awk -F': *' -v np="$(nproc)" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
    /^model name/ && m == "" {m = $2}
    /^cpu family/ && f == "" {f = $2}
    /^model[ \t]*:/ && d == "" {d = $2}
    /^processor/ {n++}
    /^flags/ && / hypervisor/ {v = ", virtual"}
    END {printf "machine: %s, family %s model %s, %d CPUs%s (nproc %d), load %s\n",
      m, f, d, n, v, np, load}' /proc/cpuinfo
  echo "measured programs pinned to CPU(s) $(bench_cpus), one at a time (bench/lib.sh pinned)"
}
