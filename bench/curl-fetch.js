// bench/run-curl's Node client over HTTP/1.1: fetch (undici, Node 20's
// built-in, keep-alive, one connection per request in flight), at most
// CONCURRENCY requests at once, each body read whole.  The CA comes from
// NODE_EXTRA_CA_CERTS.  Prints "N requests, K answered 200".
// Usage: node bench/curl-fetch.js URLS_FILE CONCURRENCY
'use strict';
const fs = require('fs');

async function main() {
  const urls = fs.readFileSync(process.argv[2], 'utf8').split('\n')
    .filter((u) => u.length > 0);
  const limit = Number(process.argv[3]);
  let next = 0;
  let ok = 0;
  async function worker() {
    while (next < urls.length) {
      const res = await fetch(urls[next++]);
      await res.arrayBuffer();
      if (res.status === 200) ok++;
    }
  }
  await Promise.all(Array.from({ length: limit }, worker));
  console.log(`${urls.length} requests, ${ok} answered 200`);
  process.exitCode = ok === urls.length ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
