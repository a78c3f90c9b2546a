// The Node v20 equivalent of uvp-gateway (examples/gateway): an http server
// that answers every GET with Promise.allSettled of one http.get per
// backend, each with a whole-request timeout, and the same JSON summary.
//
//   node bench/gateway.js [-p PORT] [-t MS] [-b URL]... [-f FILE]
//
// Backend connections are kept alive and reused with the same policy as
// uvp-gateway's httpc pool: one keep-alive agent, the most recently used
// idle socket taken first ('lifo'), at most 256 idle sockets per
// host:port (POOL_MAX_IDLE in gateway.c, Node's default maxFreeSockets),
// no cap on sockets in use and no idle timeout (the global agent of Node
// 20 would close idle sockets after 5 s; httpc keeps them until reused).
// Unlike httpc, Node does not retry a request whose reused socket turns
// out to be closed; the benchmark's backends never close idle connections.
// The server side keeps client connections alive, like uvp-gateway.
'use strict';
const http = require('http');
const fs = require('fs');

const agent = new http.Agent({
  keepAlive: true,
  maxFreeSockets: 256,
  scheduling: 'lifo',
});

let port = 8080;
let timeoutMs = 2000;
const backends = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [a, v] = [argv[i], argv[i + 1]];
  if (v === undefined) usage();
  if (a === '-p') port = +v;
  else if (a === '-t') timeoutMs = +v;
  else if (a === '-b') backends.push(v);
  else if (a === '-f') {
    for (const line of fs.readFileSync(v, 'utf8').split('\n')) {
      const url = line.replace(/#.*/, '').trim();
      if (url) backends.push(url);
    }
  } else usage();
}
if (backends.length === 0) usage();

function usage() {
  console.error('usage: node gateway.js [-p PORT] [-t MS] [-b URL]... [-f FILE]');
  process.exit(2);
}

// One backend request: fulfils with {code, bytes, ms} for any HTTP
// response, rejects with an error whose code names the failure.
function get(url) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    let timer = null;
    let req;
    try {
      req = http.get(url, { agent }, (res) => {
        let bytes = 0;
        res.on('data', (d) => { bytes += d.length; });
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            code: res.statusCode,
            bytes,
            ms: Number(process.hrtime.bigint() - t0) / 1e6,
          });
        });
        res.on('error', () => {});
      });
    } catch (e) {
      reject(Object.assign(e, { code: 'EINVAL' }));
      return;
    }
    req.on('error', (e) => { clearTimeout(timer); reject(e); });
    // The timeout covers the whole request, as httpc's timeout_ms does
    // (http's own `timeout` option only measures socket idleness).
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        const e = new Error('timed out');
        e.code = 'ETIMEDOUT';
        req.destroy(e);
      }, timeoutMs);
    }
  });
}

// libuv's names, as uvp-gateway prints them: Node already uses them for
// system errors; its parser's HPE_* errors are httpc's UV_EPROTO.
function errName(e) {
  if (e && typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) return e.code;
  return 'EPROTO';
}

async function fanout() {
  const settled = await Promise.allSettled(backends.map(get));
  let ok = 0;
  let failed = 0;
  const items = settled.map((s, i) => {
    if (s.status === 'fulfilled') {
      ok++;
      return {
        url: backends[i], status: 'fulfilled', code: s.value.code,
        bytes: s.value.bytes, ms: Math.round(s.value.ms * 10) / 10,
      };
    }
    failed++;
    return { url: backends[i], status: 'rejected', error: errName(s.reason) };
  });
  return JSON.stringify({ backends: items, ok, failed }) + '\n';
}

const server = http.createServer((req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const body = '{"error":"Method Not Allowed"}\n';
    res.writeHead(405, { 'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  fanout().then((body) => {
    res.writeHead(200, { 'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
});
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
