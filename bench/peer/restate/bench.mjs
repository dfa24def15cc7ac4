// The peer benchmark: Restate's single-node server (from npm, its defaults: the log synced per
// batch) and a service of durable steps (service.mjs, its own process, as keel's worker is),
// measured as keel_bench measures keel: the time of a step at low load (runs one at a time, each
// run's time over its steps), and steps per second with many runs at once. Prints one JSON object
// per figure, as keel_bench does ({"name", "value"}), for bench/run.sh.
//   node bench.mjs [--steps 21] [--latency-runs 200] [--seconds 15] [--concurrency 64,400]
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const steps = Number(option("steps", "21"));
const latencyRuns = Number(option("latency-runs", "200"));
const seconds = Number(option("seconds", "15"));
const concurrencies = option("concurrency", "64,400").split(",").map(Number);

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const figure = (name, value) => console.log(JSON.stringify({ name, value }));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};
// CPU seconds a process has used so far (user + system, from /proc).
const cpuSeconds = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
};

const base = mkdtempSync(join(tmpdir(), "keel-peer-restate-"));
const children = [];
const stopAll = () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  rmSync(base, { recursive: true, force: true });
};
process.on("exit", stopAll);
process.on("SIGINT", () => process.exit(130));

const [ingress, admin, nodePort, servicePort] = [await freePort(), await freePort(), await freePort(), await freePort()];
const serverLog = [];
// The server's own binary (the npm package's launcher would stand between, and its CPU is not the
// server's).
const serverBinary = join(here, `node_modules/@restatedev/restate-server-linux-${process.arch}/bin/restate-server`);
const server = spawn(serverBinary, ["--no-logo", "--listen-mode", "tcp"], {
  env: {
    ...process.env,
    RESTATE_BASE_DIR: join(base, "data"),
    RESTATE_BIND_ADDRESS: `127.0.0.1:${nodePort}`,
    RESTATE_ADVERTISED_ADDRESS: `http://127.0.0.1:${nodePort}`,
    RESTATE_ADMIN__BIND_ADDRESS: `127.0.0.1:${admin}`,
    RESTATE_INGRESS__BIND_ADDRESS: `127.0.0.1:${ingress}`,
    RESTATE_DISABLE_TELEMETRY: "true",
    RESTATE_LOG_FILTER: "warn",
  },
  stdio: ["ignore", "pipe", "pipe"],
});
children.push(server);
server.stdout.on("data", (d) => serverLog.push(String(d)));
server.stderr.on("data", (d) => serverLog.push(String(d)));
const service = spawn(process.execPath, [join(here, "service.mjs"), String(servicePort)], { stdio: ["ignore", "ignore", "inherit"] });
children.push(service);

const until = async (what, check, ms = 60_000) => {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      console.error(`restate peer: ${what} did not happen within ${ms / 1000} s\n${serverLog.join("").slice(-4000)}`);
      process.exit(1);
    }
    await sleep(200);
  }
};
await until("the server's admin API answering", async () => (await fetch(`http://127.0.0.1:${admin}/health`)).ok);
await until("the service registered", async () => {
  const r = await fetch(`http://127.0.0.1:${admin}/deployments`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uri: `http://127.0.0.1:${servicePort}`, force: true }),
  });
  return r.ok;
});
const invoke = async () => {
  const r = await fetch(`http://127.0.0.1:${ingress}/agent/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ steps }),
  });
  if (!r.ok) throw new Error(`an invocation failed: ${r.status} ${await r.text()}`);
  const body = await r.json();
  if (body.steps !== steps) throw new Error(`an invocation answered ${JSON.stringify(body)}`);
};
await until("the ingress taking invocations", async () => (await invoke(), true));
for (let i = 0; i < 20; ++i) await invoke();  // warm-up

// Low load: one run at a time; a step's time is the run's over its steps.
const perStep = [];
for (let i = 0; i < latencyRuns; ++i) {
  const t0 = process.hrtime.bigint();
  await invoke();
  perStep.push(Number(process.hrtime.bigint() - t0) / 1000 / steps);
}
figure("peer.restate.steps_per_run", steps);
figure("peer.restate.step_us", median(perStep));

// Many at once: `c` clients, each invoking again as soon as its run ends, for `seconds`.
let best = 0;
for (const c of concurrencies) {
  let done = 0, failed = 0;
  const serverCpu = cpuSeconds(server.pid), serviceCpu = cpuSeconds(service.pid);
  const started = Date.now(), end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (Date.now() < end) {
        try {
          await invoke();
          ++done;
        } catch {
          ++failed;
        }
      }
    }),
  );
  const wall = (Date.now() - started) / 1000;
  const rate = (done * steps) / wall;
  figure(`peer.restate.throughput_${c}.steps_per_second`, rate);
  figure(`peer.restate.throughput_${c}.failed`, failed);
  figure(`peer.restate.throughput_${c}.server_cores`, (cpuSeconds(server.pid) - serverCpu) / wall);
  figure(`peer.restate.throughput_${c}.service_cores`, (cpuSeconds(service.pid) - serviceCpu) / wall);
  best = Math.max(best, rate);
}
figure("peer.restate.steps_per_second", best);
process.exit(0);
