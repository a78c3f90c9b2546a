// Shared by the Node benchmarks (bench/core.js, bench/combo.js,
// bench/group-drain.js), the counterpart of bench/core-common.h: the
// --rounds option, the fields every round-based program prints, and the
// fixed-seed shuffle the C programs reproduce bit for bit.
'use strict';

// --rounds=R anywhere in args; 1..100 as in core-common.h.
function parseRounds(args) {
  let rounds = 1;
  for (const a of args) {
    if (!a.startsWith('--rounds=')) continue;
    rounds = Number(a.slice(9));
    if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) {
      console.error(`bad rounds (1..100): ${a}`);
      process.exit(2);
    }
  }
  return rounds;
}

// The fields after the program's own, as bench_print_rounds prints them:
// ns[] holds each round's wall time in ns, round 1 first.
function roundsFields(ns, n, coldRss) {
  const rounds = ns.length;
  let s = ` rounds=${rounds} gc=${typeof global.gc === 'function' ? 1 : 0}` +
    ` ns_per_promise=${(ns[0] / n).toFixed(1)} wall_ms=${(ns[0] / 1e6).toFixed(1)}`;
  if (rounds > 1) {
    const w = ns.slice(1).sort((a, b) => a - b);
    const m = w.length % 2 ? w[(w.length - 1) / 2] : (w[w.length / 2 - 1] + w[w.length / 2]) / 2;
    s += ` warm_ns_per_promise=${(m / n).toFixed(1)} warm_ms=${(m / 1e6).toFixed(1)}`;
  }
  return s + ` cold_peak_rss_kb=${coldRss} peak_rss_kb=${process.resourceUsage().maxRSS}`;
}

// perm[k] is the input settled k-th: bench_shuffle's xorshift32
// Fisher-Yates with seed 12345 over 0..perm.length-1.  Returns the same
// order-sensitive checksum (perm_check), which the runners compare.
function shuffle(perm) {
  const n = perm.length;
  let state = 12345;
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n; i > 1; i--) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    const j = state % i;
    const t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
  let sum = 0;
  for (let k = 0; k < n; k++) sum = (sum + Math.imul(perm[k], k + 1)) >>> 0;
  return sum;
}

module.exports = { parseRounds, roundsFields, shuffle };
