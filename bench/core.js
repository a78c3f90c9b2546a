// Workloads (a) and (b) of bench/run in Node v20 with native promises.
//   node bench/core.js then [N]
//     create, one then, resolve, for N promises; wait for every handler.
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
const mode = process.argv[2];
const n = +process.argv[3] || 1e6;
let captured;
const exec = (resolve) => { captured = resolve; };

if (mode === 'then') {
  let ran = 0, sum = 0;
  let t0;
  const onValue = (v) => {
    ran++;
    sum += v;
    if (ran === n) {
      const ns = Number(process.hrtime.bigint() - t0);
      const ok = sum === (n * (n - 1)) / 2 ? 1 : 0;
      console.log(`name=then impl=node n=${n} ok=${ok} ns_per_promise=${(ns / n).toFixed(1)} ` +
        `peak_rss_kb=${process.resourceUsage().maxRSS} wall_ms=${(ns / 1e6).toFixed(1)}`);
      process.exitCode = ok ? 0 : 1;
    }
  };
  t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const p = new Promise(exec);
    p.then(onValue);
    captured(i);
  }
  process.exitCode = 1; // until the last handler has run
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
  const ok = holders[n - 1] !== null ? 1 : 0;
  console.log(`name=pending impl=node-keep-${keep} n=${n} ok=${ok} bytes_per_promise=${((rss1 - rss0) / n).toFixed(1)} ` +
    `peak_rss_kb=${process.resourceUsage().maxRSS} wall_ms=${(Number(t1 - t0) / 1e6).toFixed(1)}`);
  process.exitCode = ok ? 0 : 1;
} else {
  console.error('usage: node [--expose-gc] bench/core.js then|pending [N] [promise|resolve]');
  process.exit(2);
}
