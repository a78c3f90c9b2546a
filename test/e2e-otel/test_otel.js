// W3C Trace Context between uvp and OpenTelemetry's JavaScript SDK (issue
// 72, point 5): a Node.js HTTP service instrumented with OpenTelemetry
// (@opentelemetry/api, @opentelemetry/core's W3CTraceContextPropagator,
// @opentelemetry/sdk-trace-base's in-memory exporter; the propagation is
// done by hand with the propagator's extract and inject, as an
// instrumentation does) is called
//  (a) by a C client through uvp-curl (otel-client, under a trace of its
//      own): the Node span's trace id is uvp's, its parent uvp-curl's
//      CLIENT span (read from the client's flight recorder), and the
//      tracestate arrives as sent;
//  (b) by the same client through uvp-gateway: the Node span is in the
//      client's trace, its parent the gateway's backend CLIENT span, whose
//      parent is the gateway's SERVER span, whose parent is the client's
//      CLIENT span (the gateway's recorder, --trace-dir and SIGUSR1);
//  (c) the other way: a Node client's OpenTelemetry span injected into a
//      request to uvp-gateway is continued: the gateway's SERVER span
//      (named in the `traceresponse` header it answers with, and in its
//      recorder) is in Node's trace with Node's client span as parent,
//      and the backend's span is in it too.
//
// Usage: node test_otel.js UVP_GATEWAY OTEL_CLIENT
// Exit 77 (skip) when node_modules is missing (.ci/setup test runs
// `npm ci` here).
'use strict';
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { spawn, execFile } = require('child_process');

let otel, core, sdk;
try {
  otel = require('@opentelemetry/api');
  core = require('@opentelemetry/core');
  sdk = require('@opentelemetry/sdk-trace-base');
} catch (e) {
  console.log(`skipped: OpenTelemetry's packages are not installed (` +
              `cd test/e2e-otel && npm ci): ${e.message.split('\n')[0]}`);
  process.exit(77);
}
const [gatewayExe, clientExe] = process.argv.slice(2);
if (!gatewayExe || !clientExe) {
  console.error('usage: node test_otel.js UVP_GATEWAY OTEL_CLIENT');
  process.exit(2);
}

let failures = 0, passed = 0;
function check(cond, what) {
  if (cond) {
    passed++;
    console.log('ok      ' + what);
  } else {
    failures++;
    console.log('FAILED  ' + what);
  }
  return cond;
}

// ---- the instrumented Node service -----------------------------------------

const exporter = new sdk.InMemorySpanExporter();
const provider = new sdk.BasicTracerProvider({
  spanProcessors: [new sdk.SimpleSpanProcessor(exporter)],
});
const tracer = provider.getTracer('uvp-e2e-otel');
const propagator = new core.W3CTraceContextPropagator();
const getter = otel.defaultTextMapGetter;
const setter = otel.defaultTextMapSetter;

const service = http.createServer((req, res) => {
  const parent = propagator.extract(otel.ROOT_CONTEXT, req.headers, getter);
  const span = tracer.startSpan(`GET ${req.url}`,
                                { kind: otel.SpanKind.SERVER }, parent);
  span.setAttribute('http.target', req.url);
  const body = JSON.stringify({ path: req.url });
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(body, () => span.end());
});

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1',
                                                () => resolve(server.address().port)));
}

// The service's finished spans for `target`.
function serverSpans(target) {
  return exporter.getFinishedSpans().filter(
      (s) => s.kind === otel.SpanKind.SERVER && s.attributes['http.target'] === target);
}

async function waitFor(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- uvp's side: the flight recorder's spans -------------------------------

// Span beginnings of a recorder file (Chrome trace JSON): "cat":"span",
// "ph":"b", args trace_id, span_id, parent_id (absent: a root), kind.
function recordedSpans(file) {
  const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  const events = Array.isArray(doc) ? doc : doc.traceEvents;
  return events.filter((e) => e.cat === 'span' && e.ph === 'b')
      .map((e) => Object.assign({ name: e.name }, e.args));
}

// The client runs while this process's loop serves it: not a Sync call.
function runClient(url, record, tracestate) {
  const args = [url, record];
  if (tracestate) args.push(tracestate);
  return new Promise((resolve, reject) => {
    execFile(clientExe, args, { timeout: 60000 }, (err, out, errText) => {
      if (err) reject(new Error(`otel-client ${url}: ${err.message} ${errText}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

// ---- uvp-gateway -----------------------------------------------------------

function startGateway(backend, traceDir) {
  const p = spawn(gatewayExe, ['-p', '0', '-w', '1', '-b', backend,
                               '--trace-dir', traceDir],
                  { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stderrText = '';
  p.stderr.on('data', (d) => { p.stderrText += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ proc: p, port: Number(m[1]) });
    });
    p.on('exit', (code) => reject(new Error('uvp-gateway exited: ' + code +
                                            ': ' + p.stderrText)));
  });
}

function get(port, target, headers) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: target, headers }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.setTimeout(30000, () => req.destroy(new Error('timeout')));
  });
}

const hexId = (n) => new RegExp(`^[0-9a-f]{${n}}$`);

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'uvp-e2e-otel-'));
  const port = await listen(service);
  const base = `http://127.0.0.1:${port}`;

  // (a) uvp-curl -> Node.
  {
    const rec = path.join(tmp, 'client-a.json');
    const r = await runClient(`${base}/a`, rec, 'uvp=t61rcWkgMzE,rojo=00f067aa0ba902b7');
    check(r.status === 200, '(a) uvp-curl -> Node: answered 200');
    const client = recordedSpans(rec).filter((s) => s.kind === 'client');
    check(client.length === 1, '(a) the client recorded one CLIENT span');
    const node = await waitFor('the Node span of /a', () => serverSpans('/a')[0]);
    const ctx = node.spanContext();
    check(ctx.traceId === r.trace_id, `(a) Node's span is in uvp's trace (${ctx.traceId})`);
    check(client.length === 1 && client[0].trace_id === r.trace_id &&
          client[0].parent_id === r.root_id,
          "(a) uvp-curl's CLIENT span is the child of the client's own span");
    check(client.length === 1 && node.parentSpanContext !== undefined &&
          node.parentSpanContext.spanId === client[0].span_id &&
          node.parentSpanContext.isRemote === true,
          `(a) Node's parent span is uvp-curl's CLIENT span (${client[0] && client[0].span_id})`);
    check(ctx.traceState !== undefined &&
          ctx.traceState.serialize() === 'uvp=t61rcWkgMzE,rojo=00f067aa0ba902b7',
          "(a) the client's tracestate reached Node as sent");
    check((ctx.traceFlags & otel.TraceFlags.SAMPLED) === otel.TraceFlags.SAMPLED,
          '(a) sampled, as uvp began it');
  }

  const traceDir = path.join(tmp, 'gw');
  fs.mkdirSync(traceDir);
  const gw = await startGateway(`${base}/b`, traceDir);
  try {
    // (b) uvp-curl -> uvp-gateway -> Node.
    const recB = path.join(tmp, 'client-b.json');
    const rb = await runClient(`http://127.0.0.1:${gw.port}/via-gateway`, recB);
    check(rb.status === 200 && /"ok":1/.test(rb.body),
          '(b) uvp-curl -> uvp-gateway -> Node: answered, the backend fulfilled');
    const clientB = recordedSpans(recB).filter((s) => s.kind === 'client');
    const nodeB = await waitFor('the Node span of (b)',
                                () => serverSpans('/b').find(
                                    (s) => s.spanContext().traceId === rb.trace_id));
    check(nodeB !== undefined, "(b) Node's span is in the client's trace");

    // (c) Node (OpenTelemetry client span) -> uvp-gateway -> Node.
    const nodeClient = tracer.startSpan('GET /from-node', { kind: otel.SpanKind.CLIENT });
    const headers = {};
    propagator.inject(otel.trace.setSpan(otel.ROOT_CONTEXT, nodeClient), headers, setter);
    headers.tracestate = 'node=1';
    const rc = await get(gw.port, '/from-node', headers);
    nodeClient.end();
    const nc = nodeClient.spanContext();
    check(rc.status === 200 && /"ok":1/.test(rc.body),
          '(c) Node -> uvp-gateway -> Node: answered, the backend fulfilled');
    const tr = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(
        rc.headers.traceresponse || '');
    check(tr !== null && tr[1] === nc.traceId && tr[2] !== nc.spanId,
          `(c) the gateway's traceresponse names a span of Node's trace (${rc.headers.traceresponse})`);
    const nodeC = await waitFor('the Node span of (c)',
                                () => serverSpans('/b').find(
                                    (s) => s.spanContext().traceId === nc.traceId));
    check(nodeC.spanContext().traceState !== undefined &&
          nodeC.spanContext().traceState.serialize() === 'node=1',
          "(c) the Node client's tracestate went through the gateway");

    // The gateway's recorder: SIGUSR1 writes it (once: at most one a 10 s).
    gw.proc.kill('SIGUSR1');
    const file = await waitFor('the gateway\'s recorder file', () => {
      const m = /flight recorder: \d+ events in (\S+\.json)/.exec(gw.proc.stderrText);
      return m ? m[1] : null;
    });
    const spans = recordedSpans(file);
    const byId = new Map(spans.map((s) => [s.span_id, s]));

    // (b): client CLIENT -> gateway SERVER -> gateway CLIENT -> Node SERVER.
    const gwClientB = byId.get(nodeB && nodeB.parentSpanContext &&
                               nodeB.parentSpanContext.spanId);
    check(gwClientB !== undefined && gwClientB.kind === 'client' &&
          gwClientB.trace_id === rb.trace_id,
          "(b) Node's parent is the gateway's backend CLIENT span, in the client's trace");
    const gwServerB = gwClientB && byId.get(gwClientB.parent_id);
    check(gwServerB !== undefined && gwServerB.kind === 'server' &&
          gwServerB.name === 'GET /via-gateway',
          "(b) whose parent is the gateway's SERVER span of the request");
    check(gwServerB !== undefined && clientB.length === 1 &&
          gwServerB.parent_id === clientB[0].span_id,
          "(b) whose parent is uvp-curl's CLIENT span in the client");

    // (c): Node CLIENT -> gateway SERVER -> gateway CLIENT -> Node SERVER.
    const gwServerC = tr && byId.get(tr[2]);
    check(gwServerC !== undefined && gwServerC.kind === 'server' &&
          gwServerC.trace_id === nc.traceId && gwServerC.parent_id === nc.spanId,
          "(c) the gateway's SERVER span continues Node's trace, Node's client span its parent");
    const gwClientC = byId.get(nodeC.parentSpanContext && nodeC.parentSpanContext.spanId);
    check(gwClientC !== undefined && gwClientC.kind === 'client' &&
          gwClientC.parent_id === (tr && tr[2]),
          "(c) the backend's Node span's parent is the gateway's CLIENT span under it");
    for (const s of spans)
      if (!hexId(32).test(s.trace_id) || !hexId(16).test(s.span_id))
        check(false, `recorded span ids are lowercase hex: ${JSON.stringify(s)}`);
  } finally {
    gw.proc.removeAllListeners('exit');
    gw.proc.kill('SIGTERM');
    await new Promise((r) => gw.proc.on('exit', (code) => {
      check(code === 0, 'uvp-gateway exits 0 on SIGTERM');
      r();
    }));
    service.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failures} failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log('FAILED  ' + (e.stack || e));
  process.exit(1);
});
