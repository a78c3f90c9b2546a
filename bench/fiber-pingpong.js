// The ping-pong of bench/fiber-pingpong.c in Node v20: two async functions,
// each N iterations of: a new pending Promise of its own, resolve the other
// one's, await its own.  Medians of REPS runs after a warm-up, in ns per
// await (2N awaits per run) and per round.
// Usage: node fiber-pingpong.js [N] [REPS]   (defaults 1000000 and 5)
'use strict';
const n = +(process.argv[2] || 1000000);
const reps = +(process.argv[3] || 5);

let resolveA = null;
let resolveB = null;
let awaits = 0;

async function a(steps) {
  for (let i = 0; i < steps; i++) {
    const p = new Promise((r) => { resolveA = r; });
    if (resolveB !== null) resolveB();
    await p;
    awaits++;
  }
  // B waits for its last step.
  if (resolveB !== null) resolveB();
}

async function b(steps) {
  for (let i = 0; i < steps; i++) {
    const p = new Promise((r) => { resolveB = r; });
    resolveA();
    await p;
    awaits++;
  }
}

// ns per await of a ping-pong of `steps` rounds
async function pingpong(steps) {
  resolveA = resolveB = null;
  awaits = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all([a(steps), b(steps)]);
  const t1 = process.hrtime.bigint();
  if (awaits !== 2 * steps) throw new Error(`${awaits} awaits`);
  return Number(t1 - t0) / (2 * steps);
}

function median(v) {
  v.sort((x, y) => x - y);
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

async function main() {
  await pingpong(10000); // warm-up, as the C program's
  const v = [];
  for (let r = 0; r < reps; r++) v.push(await pingpong(n));
  const m = median(v);
  console.log(`node fiber-pingpong n=${n} reps=${reps} ok=1 ` +
    `per_await=${m.toFixed(1)} per_round=${(2 * m).toFixed(1)}`);
}
main();
