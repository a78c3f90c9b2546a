// Workload (e) of bench/run in Node v20: the same adoption chain as
// bench/chain.c.  p[0] pending; each p[i] is a new promise resolved with
// p[i-1] (root first); then p[0] is fulfilled and we wait for p[N-1].
// With --observed each p[i] has a handler (p[i].then(f)) before it is
// resolved (workload (e')).
//   node bench/chain.js [N] [--observed]
'use strict';
const n = Math.max(2, +process.argv[2] || 1e6);
const observed = process.argv[3] === '--observed';
let calls = 0;
const seen = () => { calls++; };
const p = new Array(n);
const d = observed ? new Array(n) : null;
let resolve0;
const t0 = process.hrtime.bigint();
p[0] = new Promise((r) => { resolve0 = r; });
if (observed) d[0] = p[0].then(seen);
for (let i = 1; i < n; i++) {
  let r;
  p[i] = new Promise((res) => { r = res; });
  if (observed) d[i] = p[i].then(seen);
  r(p[i - 1]);
}
const t1 = process.hrtime.bigint();
resolve0(42);
p[n - 1].then((v) => {
  const t2 = process.hrtime.bigint();
  const ms = (a, b) => (Number(b - a) / 1e6).toFixed(1);
  const ok = v === 42 && calls === (observed ? n : 0);
  console.log(`name=chain${observed ? '-observed' : ''} impl=node n=${n} ` +
    `ok=${ok ? 1 : 0} ` +
    `build_ms=${ms(t0, t1)} settle_ms=${ms(t1, t2)} wall_ms=${ms(t0, t2)} ` +
    `peak_rss_kb=${process.resourceUsage().maxRSS}`);
});
