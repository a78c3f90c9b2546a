// bench/run-curl's Node client over HTTP/2: node:http2 with one session
// to the origin, at most CONCURRENCY streams requested at once (the
// server's SETTINGS_MAX_CONCURRENT_STREAMS bounds those open; nghttp2
// holds the rest until a stream ends), each body read whole.
// Prints "N requests, K answered 200".
// Usage: node bench/curl-h2.js URLS_FILE CONCURRENCY CA_FILE
'use strict';
const fs = require('fs');
const http2 = require('http2');

async function main() {
  const urls = fs.readFileSync(process.argv[2], 'utf8').split('\n')
    .filter((u) => u.length > 0);
  const limit = Number(process.argv[3]);
  const origin = new URL(urls[0]).origin;
  const session = http2.connect(origin, { ca: fs.readFileSync(process.argv[4]) });
  session.on('error', (e) => { throw e; });
  function one(u) {
    const url = new URL(u);
    return new Promise((resolve, reject) => {
      const req = session.request({ ':path': url.pathname + url.search });
      let status = 0;
      req.on('response', (h) => { status = h[':status']; });
      req.on('data', () => {});
      req.on('end', () => resolve(status));
      req.on('error', reject);
      req.end();
    });
  }
  let next = 0;
  let ok = 0;
  async function worker() {
    while (next < urls.length) {
      if ((await one(urls[next++])) === 200) ok++;
    }
  }
  await Promise.all(Array.from({ length: limit }, worker));
  session.close();
  console.log(`${urls.length} requests, ${ok} answered 200`);
  process.exitCode = ok === urls.length ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
