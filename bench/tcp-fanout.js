// The same TCP fan-out in Node v20: net + Promise.allSettled, at most K in
// flight.  Usage: node tcp-fanout.js PORT [N] [K]
'use strict';
const net = require('net');
const port = +process.argv[2];
const n = +(process.argv[3] || 10000);
const k = +(process.argv[4] || 1000);
const REQ = 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n';

function request() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(REQ));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

async function main() {
  const u0 = process.cpuUsage().user;
  const t0 = process.hrtime.bigint();
  let next = 0;
  const results = new Array(n);
  // A pool of k workers, each taking the next index: never more than k in
  // flight; every outcome is kept as allSettled would.
  async function worker() {
    while (next < n) {
      const i = next++;
      results[i] = request();
      await results[i].catch(() => {});
    }
  }
  await Promise.all(Array.from({ length: Math.min(k, n) }, worker));
  const settled = await Promise.allSettled(results);
  const t1 = process.hrtime.bigint();
  const u1 = process.cpuUsage().user;
  const ok = settled.filter((r) => r.status === 'fulfilled' &&
    r.value.subarray(0, 12).toString() === 'HTTP/1.0 200').length;
  console.log(`node tcp-fanout n=${n} k=${k} ok=${ok} wall_ms=${(Number(t1 - t0) / 1e6).toFixed(1)} user_us_per_req=${((u1 - u0) / n).toFixed(2)}`);
  process.exitCode = ok === n ? 0 : 1;
}
main();
