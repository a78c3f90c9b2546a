// Workloads (c) and (d) of bench/run in Node v20: Promise.allSettled /
// Promise.all over N pending promises, settled from setImmediate 1000 per
// turn in the same fixed-seed order as bench/combo.c (xorshift32 Fisher-
// Yates, seed 12345; perm_check must match the C programs').  For
// allSettled every 10th input (i % 10 == 9) rejects with -5 (UV_EIO's
// value: a number, not an Error, so V8 captures no stack traces); for all
// every input fulfils.  Input i's value is i.
// Usage: node [--expose-gc] bench/combo.js settled|all [N] [--rounds=R]
//   --rounds=R runs the workload R times in this process (default 1), as
//   bench/combo.c does on one loop: round 1 is the cold figure (wall_ms),
//   the median of rounds 2..R the warm one (warm_ms).  With --expose-gc a
//   full GC runs between rounds, outside the clock; gc=1 in the output.
'use strict';
const { parseRounds, roundsFields, shuffle } = require('./common.js');
const mode = process.argv[2];
if (mode !== 'settled' && mode !== 'all') {
  console.error('usage: node [--expose-gc] bench/combo.js settled|all [N] [--rounds=R]');
  process.exit(2);
}
const settled = mode === 'settled';
const n = +process.argv[3] || 1e6;
const PER_TURN = 1000;

const rounds = parseRounds(process.argv.slice(4));

const perm = new Uint32Array(n);
const check = shuffle(perm);

let ra, rb;
const exec = (a, b) => { ra = a; rb = b; };
let fns, k, t0;
const ns = [];
let allOk = true, coldRss = 0;

function turn() {
  const end = Math.min(k + PER_TURN, n);
  for (; k < end; k++) {
    const i = perm[k];
    fns[i](settled && i % 10 === 9 ? -5 : i);
    fns[i] = null;
  }
  if (k < n) setImmediate(turn);
}

function round() {
  t0 = process.hrtime.bigint();
  const ps = new Array(n);
  fns = new Array(n);
  for (let i = 0; i < n; i++) {
    ps[i] = new Promise(exec);
    fns[i] = settled && i % 10 === 9 ? rb : ra;
  }
  k = 0;
  (settled ? Promise.allSettled(ps) : Promise.all(ps)).then(onResult);
  setImmediate(turn);
}

function onResult(res) {
  const t1 = process.hrtime.bigint();
  let ok = res.length === n;
  for (let i = 0; ok && i < n; i++) {
    if (!settled) ok = res[i] === i;
    else if (i % 10 === 9) ok = res[i].status === 'rejected' && res[i].reason === -5;
    else ok = res[i].status === 'fulfilled' && res[i].value === i;
  }
  ns.push(Number(t1 - t0));
  allOk = allOk && ok && k === n;
  if (ns.length === 1) coldRss = process.resourceUsage().maxRSS;
  fns = null;
  if (ns.length < rounds) {
    // Outside the clock: this round's promises and result are garbage now.
    setImmediate(() => {
      if (typeof global.gc === 'function') global.gc();
      round();
    });
    return;
  }
  console.log(`name=${settled ? 'allSettled' : 'all'} impl=node n=${n} ok=${allOk ? 1 : 0} perm_check=${check}` +
    roundsFields(ns, n, coldRss));
  process.exitCode = allOk ? 0 : 1;
}

process.exitCode = 1; // until the last round's result has been checked
round();
