// Workloads (c) and (d) of bench/run in Node v20: Promise.allSettled /
// Promise.all over N pending promises, settled from setImmediate 1000 per
// turn in the same fixed-seed order as bench/combo.c (xorshift32 Fisher-
// Yates, seed 12345; perm_check must match the C programs').  For
// allSettled every 10th input (i % 10 == 9) rejects with -5 (UV_EIO's
// value: a number, not an Error, so V8 captures no stack traces); for all
// every input fulfils.  Input i's value is i.
// Usage: node bench/combo.js settled|all [N]
'use strict';
const mode = process.argv[2];
if (mode !== 'settled' && mode !== 'all') {
  console.error('usage: node bench/combo.js settled|all [N]');
  process.exit(2);
}
const settled = mode === 'settled';
const n = +process.argv[3] || 1e6;
const PER_TURN = 1000;

function shuffle(perm) {
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

const perm = new Uint32Array(n);
const check = shuffle(perm);

let ra, rb;
const exec = (a, b) => { ra = a; rb = b; };
const t0 = process.hrtime.bigint();
const ps = new Array(n);
const fns = new Array(n);
for (let i = 0; i < n; i++) {
  ps[i] = new Promise(exec);
  fns[i] = settled && i % 10 === 9 ? rb : ra;
}
let k = 0;
function turn() {
  const end = Math.min(k + PER_TURN, n);
  for (; k < end; k++) {
    const i = perm[k];
    fns[i](settled && i % 10 === 9 ? -5 : i);
    fns[i] = null;
  }
  if (k < n) setImmediate(turn);
}

function onResult(res) {
  const t1 = process.hrtime.bigint();
  let ok = res.length === n;
  for (let i = 0; ok && i < n; i++) {
    if (!settled) ok = res[i] === i;
    else if (i % 10 === 9) ok = res[i].status === 'rejected' && res[i].reason === -5;
    else ok = res[i].status === 'fulfilled' && res[i].value === i;
  }
  console.log(`name=${settled ? 'allSettled' : 'all'} impl=node n=${n} ok=${ok ? 1 : 0} perm_check=${check} ` +
    `wall_ms=${(Number(t1 - t0) / 1e6).toFixed(1)} peak_rss_kb=${process.resourceUsage().maxRSS}`);
  process.exitCode = ok ? 0 : 1;
}
(settled ? Promise.allSettled(ps) : Promise.all(ps)).then(onResult);
process.exitCode = 1; // until onResult has run
setImmediate(turn);
