// Worker threads terminated while uvp reads whole files in libuv's pool
// (examples/node/README.md).
//
//   node terminate-mid-read.js ADDON [ROUNDS] [WORKERS]
//
// Each round starts WORKERS workers (4), each loading the addon (its own
// uvp context on its own loop) and reading the test files whole, batch
// after batch (Promise.allSettled, a fiber per read), so that the pool is
// always busy; once every worker has reads in flight, all are terminated
// after a random 0-3 ms.  The main thread reads the same files meanwhile
// and checks every byte.  At the end it starts one more batch and calls
// process.exit with those reads pending.  Node aborts the process
// ("uv_loop_close() while having open handles") if an environment's loop
// is not clean after its cleanup hooks: exit status 0 means every
// teardown waited for uvp's reads.
'use strict';
const { Worker, isMainThread, parentPort, workerData } =
    require('worker_threads');
const fs = require('fs');
const os = require('os');
const path = require('path');

if (!isMainThread) {
  const addon = require(workerData.addon);
  (async () => {
    for (let batch = 0;; batch++) {
      const reads = workerData.files.map((f) => addon.readFile(f));
      if (batch === 0) parentPort.postMessage('reading');
      for (const r of await Promise.allSettled(reads)) {
        if (r.status !== 'fulfilled' || r.value.length !== workerData.size)
          parentPort.postMessage('bad read: ' + (r.reason || r.value.length));
      }
    }
  })();
  return;
}

const addonPath = path.resolve(process.argv[2] || '');
const rounds = Number(process.argv[3] || 20);
const workers = Number(process.argv[4] || 4);
if (!process.argv[2] || !(rounds > 0) || !(workers > 0)) {
  console.error('usage: node terminate-mid-read.js ADDON [ROUNDS] [WORKERS]');
  process.exit(2);
}
const addon = require(addonPath);

// Four files of 8 MiB, each a pattern of its own.
const size = 8 << 20;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'uvp-node-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
const files = [];
for (let i = 0; i < 4; i++) {
  const b = Buffer.alloc(size);
  for (let j = 0; j < size; j += 4096) b.writeUInt32LE((j ^ (i << 28)) >>> 0, j);
  files.push(path.join(dir, 'f' + i));
  fs.writeFileSync(files[files.length - 1], b);
}
const expected = files.map((f) => fs.readFileSync(f));

let verified = 0;
let failed = false;
// The main thread's own reads, checked byte for byte, until told to stop.
async function mainReads(stop) {
  while (!stop.now) {
    const got = await Promise.allSettled(files.map((f) => addon.readFile(f)));
    got.forEach((r, i) => {
      if (r.status !== 'fulfilled' || !r.value.equals(expected[i])) {
        console.error('main thread: bad read of', files[i], r.reason);
        failed = true;
      } else {
        verified++;
      }
    });
  }
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function round(n) {
  const ws = [];
  const reading = [];
  for (let i = 0; i < workers; i++) {
    const w = new Worker(__filename,
                         { workerData: { addon: addonPath, files, size } });
    reading.push(new Promise((resolve, reject) => {
      w.on('message', (m) => {
        if (m === 'reading') resolve();
        else { console.error(`round ${n}: worker ${i}: ${m}`); failed = true; }
      });
      w.on('error', reject);
    }));
    ws.push(w);
  }
  await Promise.all(reading);
  await sleep(Math.floor(Math.random() * 4));
  await Promise.all(ws.map((w) => w.terminate()));
}

(async () => {
  const stop = { now: false };
  const main = mainReads(stop);
  for (let n = 1; n <= rounds; n++) await round(n);
  stop.now = true;
  await main;
  if (failed || verified === 0) {
    console.error('FAILED');
    process.exit(1);
  }
  console.log(`ok: ${rounds} rounds, ${rounds * workers} workers terminated ` +
              `with reads in flight; ${verified} reads checked`);
  // One more batch, left pending: the main environment's teardown.
  files.forEach((f) => addon.readFile(f));
  process.exit(0);
})();
