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

# one OUT CMD...: run CMD, append its line to $tmp/OUT; stop on failure.
one() {
  local out=$1 line
  shift
  if ! line=$("$@"); then
    echo "failed: $* -> $line" >&2
    exit 1
  fi
  echo "$line" >> "$tmp/$out"
}

# machine: one line naming the processor, the CPUs this process may use
# and the load when the runner starts, printed beside a runner's figures.
# The same code has read 1.7x and 2.2x Node's ping-pong on two machines of
# this kind (internals 13.5), and a loaded machine moves wall times most:
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
}
