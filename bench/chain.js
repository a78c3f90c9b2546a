// Workload (e) of bench/run in Node v20: the same adoption chain as
// bench/chain.c.  p[0] pending; each p[i] is a new promise resolved with
// p[i-1] (root first); then p[0] is fulfilled and we wait for p[N-1].
//   node bench/chain.js [N]
'use strict';
const n = Math.max(2, +process.argv[2] || 1e6);
const p = new Array(n);
let resolve0;
p[0] = new Promise((r) => { resolve0 = r; });
const t0 = process.hrtime.bigint();
for (let i = 1; i < n; i++) {
  let r;
  p[i] = new Promise((res) => { r = res; });
  r(p[i - 1]);
}
const t1 = process.hrtime.bigint();
resolve0(42);
p[n - 1].then((v) => {
  const t2 = process.hrtime.bigint();
  const ms = (a, b) => (Number(b - a) / 1e6).toFixed(1);
  console.log(`name=chain impl=node n=${n} ok=${v === 42 ? 1 : 0} ` +
    `build_ms=${ms(t0, t1)} settle_ms=${ms(t1, t2)} wall_ms=${ms(t0, t2)} ` +
    `peak_rss_kb=${process.resourceUsage().maxRSS}`);
});
