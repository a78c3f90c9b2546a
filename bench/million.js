// bench/million.c's tasks in Node v20: N async functions, each awaiting a
// promise of its own setTimeout(MS), joined with Promise.all.  Prints the
// same fields: the resident set before the tasks (after one task ran), the
// peak (VmHWM) at the end, their difference per task, VmPTE and the
// resident set once every task waits, the time to start them and the whole
// run's.
// Usage: node million.js [N] [MS]   (defaults 1000000 and 10000)
'use strict';
const fs = require('fs');
const n = +(process.argv[2] || 1000000);
const ms = +(process.argv[3] || 10000);

function statusKb(name) {
  const m = fs.readFileSync('/proc/self/status', 'utf8')
    .match(new RegExp('^' + name + ':\\s+(\\d+)', 'm'));
  return m ? +m[1] : -1;
}

let waiting = 0;
let done = 0;

async function task(delay) {
  const p = new Promise((resolve) => setTimeout(resolve, delay));
  waiting++;
  await p;
  done++;
}

async function main() {
  await task(0);
  waiting = done = 0;
  const rss0 = statusKb('VmRSS');
  const t0 = process.hrtime.bigint();
  const ps = new Array(n);
  for (let i = 0; i < n; i++) ps[i] = task(ms);
  const t1 = process.hrtime.bigint();
  const pte = statusKb('VmPTE');
  const rssWaiting = statusKb('VmRSS');
  await Promise.all(ps);
  const t2 = process.hrtime.bigint();
  const hwm = statusKb('VmHWM');
  const ok = waiting === n && done === n ? 1 : 0;
  console.log(`node million kind=node n=${n} ms=${ms} ok=${ok} rss0_kb=${rss0} ` +
    `peak_kb=${hwm} bytes_per_task=${Math.round((hwm - rss0) * 1024 / n)} ` +
    `waiting_rss_kb=${rssWaiting} pte_kb=${pte} ` +
    `start_ms=${Math.round(Number(t1 - t0) / 1e6)} ` +
    `wall_ms=${Math.round(Number(t2 - t0) / 1e6)}`);
}

main();
