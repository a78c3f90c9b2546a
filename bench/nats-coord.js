// Node's anchor for bench/run-nats (issue 53, point 7): what
// bench/nats-coord.c does, with @nats-io/transport-node on the same server
// and workers (examples/nats/worker.c, serving "jobs").
//   node nats-coord.js URL rt N      N requests one at a time: the median
//                                    round trip over the last N - N/10
//   node nats-coord.js URL burst N   N requests at once, Promise.allSettled
// One line of key=value, as nats-coord's: rt_us= or wall_ms=, ok=, n=,
// cpu_ms= (user + system of the process during the scenario), rss_kb=
// (peak), threads= (after connecting).  The package is found through NODE_PATH (run-nats sets it).
// The body is "x" and its NUL, as nats-coord's; no Uvp-Timeout-Ms header
// (the worker then uses its default).
"use strict";
const fs = require("fs");
const { connect } = require("@nats-io/transport-node");

const body = new Uint8Array([0x78, 0]);

async function rt(nc, n) {
  const t = new Array(n);
  let ok = 0;
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    try {
      await nc.request("jobs", body, { timeout: 30000 });
      ok++;
    } catch (e) {}
    t[i] = Number(process.hrtime.bigint() - t0) / 1e3;
  }
  const rest = t.slice(Math.floor(n / 10)).sort((a, b) => a - b);
  return { ok, v: rest[Math.floor(rest.length / 2)] };
}

async function burst(nc, n) {
  const t0 = process.hrtime.bigint();
  const ps = new Array(n);
  for (let i = 0; i < n; i++)
    ps[i] = nc.request("jobs", body, { timeout: 60000 });
  const l = await Promise.allSettled(ps);
  const v = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ok: l.filter((r) => r.status === "fulfilled").length, v };
}

async function main() {
  const [url, mode, count] = process.argv.slice(2);
  const n = parseInt(count, 10);
  const nc = await connect({ servers: url });
  const threads = fs.readdirSync("/proc/self/task").length;
  const u0 = process.resourceUsage();
  const r = mode === "rt" ? await rt(nc, n) : await burst(nc, n);
  const u = process.resourceUsage();
  const cpu =
    (u.userCPUTime + u.systemCPUTime - u0.userCPUTime - u0.systemCPUTime) /
    1e3;
  console.log(
    `${mode} ${mode === "rt" ? "rt_us" : "wall_ms"}=${r.v.toFixed(1)} ` +
      `ok=${r.ok} n=${n} cpu_ms=${cpu.toFixed(0)} rss_kb=${u.maxRSS} ` +
      `threads=${threads}`,
  );
  await nc.close();
  process.exitCode = r.ok === n ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 2;
});
