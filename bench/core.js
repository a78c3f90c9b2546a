// Workloads (a) and (b) of bench/run in Node v20 with native promises.
//   node [--expose-gc] bench/core.js then [N] [--rounds=R]
//     create, one then, resolve, for N promises; wait for every handler.
//     --rounds=R runs that R times in this process (default 1), as the C
//     programs do on one loop: round 1 is the cold figure (wall_ms,
//     ns_per_promise), the median of rounds 2..R the warm one (warm_ms,
//     warm_ns_per_promise: heap grown, code optimised).  With --expose-gc a
//     full GC runs between rounds, outside the clock, so no round pays for
//     the previous one's garbage; gc=1 in the output says it did.
//   node --expose-gc bench/core.js pending [N] [promise|resolve]
//     N pending promises with one then each; RSS growth over their creation
//     (after a full GC on both sides) divided by N.  What is kept alive is
//     each promise (`promise`, the default: the leanest, ~190 bytes) or its
//     resolve function (`resolve`: what a program that settles them later
//     must keep; the C side's promise pointer is that capability).  The
//     holder array is allocated before the first reading, as in C.
// One executor function is shared by every promise, so no per-promise
// closure beyond the resolving functions V8 itself creates.
'use strict';
const { parseRounds, roundsFields } = require('./common.js');
const mode = process.argv[2];
const n = +process.argv[3] || 1e6;
let captured;
const exec = (resolve) => { captured = resolve; };

if (mode === 'then') {
  const rounds = parseRounds(process.argv.slice(4));
  const ns = [];
  let ran = 0, sum = 0, ok = true, coldRss = 0;
  let t0, finish;
  const onValue = (v) => {
    ran++;
    sum += v;
    if (ran === n) finish();
  };
  const round = () => {
    ran = 0;
    sum = 0;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const p = new Promise(exec);
      p.then(onValue);
      captured(i);
    }
  };
  finish = () => {
    ns.push(Number(process.hrtime.bigint() - t0));
    if (sum !== (n * (n - 1)) / 2) ok = false;
    if (ns.length === 1) coldRss = process.resourceUsage().maxRSS;
    if (ns.length < rounds) {
      // Checked once the microtask queue has drained, so a handler run
      // twice shows as ran !== n; the GC is outside every round's clock.
      setImmediate(() => {
        if (ran !== n) ok = false;
        if (typeof global.gc === 'function') global.gc();
        round();
      });
      return;
    }
    setImmediate(() => {
      if (ran !== n) ok = false;
      console.log(`name=then impl=node n=${n} ok=${ok ? 1 : 0}` + roundsFields(ns, n, coldRss));
      process.exitCode = ok ? 0 : 1;
    });
  };
  round();
  process.exitCode = 1; // until the last round has been checked
} else if (mode === 'pending') {
  if (typeof global.gc !== 'function') {
    console.error('run with --expose-gc');
    process.exit(2);
  }
  const keep = process.argv[4] || 'promise';
  if (keep !== 'promise' && keep !== 'resolve') {
    console.error('keep promise or resolve');
    process.exit(2);
  }
  const onValue = () => {};
  const holders = new Array(n).fill(null);
  // As in core-pending.c: WARM promises first, kept, so one-time costs are
  // not spread over the N measured ones.
  const WARM = 10000;
  const warm = new Array(WARM);
  for (let i = 0; i < WARM; i++) {
    const p = new Promise(exec);
    p.then(onValue);
    warm[i] = keep === 'promise' ? p : captured;
  }
  global.gc();
  const rss0 = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const p = new Promise(exec);
    p.then(onValue);
    holders[i] = keep === 'promise' ? p : captured;
  }
  const t1 = process.hrtime.bigint();
  global.gc();
  const rss1 = process.memoryUsage().rss;
  const ok = holders[n - 1] !== null && warm[WARM - 1] !== undefined ? 1 : 0;
  console.log(`name=pending impl=node-keep-${keep} n=${n} ok=${ok} bytes_per_promise=${((rss1 - rss0) / n).toFixed(1)} ` +
    `peak_rss_kb=${process.resourceUsage().maxRSS} wall_ms=${(Number(t1 - t0) / 1e6).toFixed(1)}`);
  process.exitCode = ok ? 0 : 1;
} else {
  console.error('usage: node [--expose-gc] bench/core.js then [N] [--rounds=R]\n' +
    '       node --expose-gc bench/core.js pending [N] [promise|resolve]');
  process.exit(2);
}
