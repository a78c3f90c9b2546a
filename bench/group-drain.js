// bench/group-drain.c in Node v20: N pending promises drained in completion
// order through a p-map-style completion queue.  Each promise's then()
// pushes its outcome into the queue; one async consumer awaits the queue's
// next() in a loop, and waits (on a promise the next push resolves)
// whenever the queue is empty.  Not a Promise.race loop, which would be
// quadratic.  The promises are fulfilled from setImmediate 1000 per turn
// in the same fixed-seed order as the C program (xorshift32 Fisher-Yates,
// seed 12345; perm_check must match); input i's value is i.  The queue is
// closed once the promises are in, so the consumer ends on its EOF.
// Correct means: the consumer saw exactly the settle order, all N, then
// EOF.  Wall time covers creating the promises and the queue, settling and
// consuming, up to the consumer's EOF.
// Usage: node [--expose-gc] bench/group-drain.js [N] [--rounds=R]
//   --rounds=R as bench/combo.js: round 1 is the cold figure (wall_ms), the
//   median of rounds 2..R the warm one (warm_ms); with --expose-gc a full
//   GC runs between rounds, outside the clock.
'use strict';
const { parseRounds, roundsFields, shuffle } = require('./common.js');
const n = +process.argv[2] || 1e6;
const PER_TURN = 1000;

const rounds = parseRounds(process.argv.slice(3));

const EOF = Symbol('EOF');

// Results in the order they arrive; next() hands them out in that order,
// a promise per call, and rejects with EOF once closed and drained.
// Arrays with a moving head: taking a result is O(1) whatever the length.
class CompletionQueue {
  constructor() {
    this.items = []; // {ok, v} not yet taken
    this.head = 0;
    this.waiters = []; // [resolve, reject] of next() calls not yet served
    this.whead = 0;
    this.running = 0;
    this.closed = false;
    this.onValue = (v) => this.push(true, v);
    this.onError = (e) => this.push(false, e);
  }
  add(p) {
    this.running++;
    p.then(this.onValue, this.onError);
  }
  close() {
    this.closed = true;
    this.flushEof();
  }
  push(ok, v) {
    this.running--;
    if (this.whead < this.waiters.length) {
      const w = this.waiters[this.whead++];
      if (ok) w[0](v); else w[1](v);
      if (this.whead === this.waiters.length) this.waiters.length = this.whead = 0;
    } else {
      this.items.push({ ok, v });
    }
    this.flushEof();
  }
  next() {
    if (this.head < this.items.length) {
      const it = this.items[this.head++];
      if (this.head === this.items.length) this.items.length = this.head = 0;
      return it.ok ? Promise.resolve(it.v) : Promise.reject(it.v);
    }
    if (this.closed && this.running === 0) return Promise.reject(EOF);
    return new Promise((resolve, reject) => this.waiters.push([resolve, reject]));
  }
  flushEof() {
    if (!this.closed || this.running !== 0 || this.head < this.items.length) return;
    while (this.whead < this.waiters.length) this.waiters[this.whead++][1](EOF);
    this.waiters.length = this.whead = 0;
  }
}

const perm = new Uint32Array(n);
const check = shuffle(perm);

let resolve;
const exec = (r) => { resolve = r; };
let fns, k;
const ns = [];
let allOk = true, coldRss = 0;

function turn() {
  const end = Math.min(k + PER_TURN, n);
  for (; k < end; k++) {
    const i = perm[k];
    fns[i](i);
    fns[i] = null;
  }
  if (k < n) setImmediate(turn);
}

async function consume(q) {
  let got = 0, inOrder = true;
  for (;;) {
    let v;
    try {
      v = await q.next();
    } catch (e) {
      if (e === EOF) break;
      throw e;
    }
    if (got >= n || v !== perm[got]) inOrder = false;
    got++;
  }
  return inOrder && got === n;
}

async function round() {
  const t0 = process.hrtime.bigint();
  const q = new CompletionQueue();
  fns = new Array(n);
  for (let i = 0; i < n; i++) {
    q.add(new Promise(exec));
    fns[i] = resolve;
  }
  q.close();
  k = 0;
  setImmediate(turn);
  const ok = await consume(q);
  const t1 = process.hrtime.bigint();
  ns.push(Number(t1 - t0));
  allOk = allOk && ok && k === n;
  fns = null;
}

async function main() {
  for (let r = 0; r < rounds; r++) {
    if (r > 0) {
      // Outside the clock: the last round's promises are garbage now.
      await new Promise((r) => setImmediate(r));
      if (typeof global.gc === 'function') global.gc();
    }
    await round();
    if (r === 0) coldRss = process.resourceUsage().maxRSS;
  }
  console.log(`name=group-drain impl=node n=${n} ok=${allOk ? 1 : 0} perm_check=${check}` +
    roundsFields(ns, n, coldRss));
  process.exitCode = allOk ? 0 : 1;
}

process.exitCode = 1; // until the last round has been checked
main();
