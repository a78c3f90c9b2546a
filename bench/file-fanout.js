// The same file fan-out in Node v20 with fs.promises and allSettled:
// stat, open, read, close for each name.  Usage: node file-fanout.js DIR NF NM
'use strict';
const fsp = require('fs/promises');
const [dir, nf, nm] = [process.argv[2], +process.argv[3], +process.argv[4]];

async function one(path) {
  await fsp.stat(path);
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(256);
    const { bytesRead } = await fh.read(buf, 0, 256, 0);
    return bytesRead;
  } finally {
    await fh.close();
  }
}

(async () => {
  const n = nf + nm;
  const paths = [];
  for (let i = 0; i < n; i++) paths.push(`${dir}/${i < nf ? 'f' : 'missing'}${i}`);
  const t0 = process.hrtime.bigint();
  const res = await Promise.allSettled(paths.map(one));
  const t1 = process.hrtime.bigint();
  const ok = res.filter((r) => r.status === 'fulfilled' && r.value > 0).length;
  const enoent = res.filter((r) => r.status === 'rejected' && r.reason.code === 'ENOENT').length;
  console.log(`node file-fanout n=${n} ok=${ok} enoent=${enoent} wall_ms=${(Number(t1 - t0) / 1e6).toFixed(1)}`);
  process.exitCode = ok === nf && enoent === nm ? 0 : 1;
})();
