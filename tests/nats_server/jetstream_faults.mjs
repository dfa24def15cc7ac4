// nats-server alone (no keel) under faults: a 3-server cluster with an R3 file stream and an R3
// key-value bucket, one writer acknowledging publishes, one updating keys at expected revisions,
// while one server at a time is killed (SIGKILL, restarted) or paused (SIGSTOP, then SIGCONT),
// chosen at random or because it leads. After the heal, the stream is read back whole under each
// server as leader and every acknowledged write is looked for. docs/RELIABILITY.md has the results.
// usage: node jetstream_faults.mjs <scenario: kill|stop|leaderkill|leaderstop> <seed> [seconds=180]
// Leaves everything in $TMPDIR/keel-nats-faults/<scenario>-<seed>/ (configs, store dirs, server
// logs, summary.json, mismatch.json).
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";

const NATS_SERVER = process.env.NATS_SERVER || "/usr/sbin/nats-server";
const scenario = process.argv[2] || "kill";
const seed = parseInt(process.argv[3] || String(Date.now() % 100000), 10);
const DURATION = parseInt(process.argv[4] || "180", 10) * 1000;
if (!["kill", "stop", "leaderkill", "leaderstop"].includes(scenario)) throw new Error("bad scenario");
console.log(`SEED ${seed} scenario ${scenario} duration ${DURATION / 1000}s`);

// ---------- helpers ----------
function mulberry32(a) { return function () { a |= 0; a = (a + 0x6D2B79F5) | 0; let t = Math.imul(a ^ (a >>> 15), 1 | a); t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return ((t ^ (t >>> 14)) >>> 0) / 4294967296; }; }
const rnd = mulberry32(seed);
const rint = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T0 = Date.now();
const now = () => ((Date.now() - T0) / 1000).toFixed(1);
const log = (...a) => console.log(`[${now()}s]`, ...a);
const ENC = new TextEncoder(); const DEC = new TextDecoder();
function errKey(e) {
  const code = e?.code ?? e?.api_error?.err_code ?? "";
  return `${e?.name || "Error"}${code !== "" ? "(" + code + ")" : ""}: ${String(e?.message || e).slice(0, 70)}`;
}
function bump(obj, k) { obj[k] = (obj[k] || 0) + 1; }
async function freePorts(n) {
  const srvs = []; const ports = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer(); await new Promise((r) => s.listen(0, "127.0.0.1", r));
    srvs.push(s); ports.push(s.address().port);
  }
  for (const s of srvs) await new Promise((r) => s.close(r));
  return ports;
}

// ---------- cluster ----------
const BASE = `${process.env.TMPDIR || "/tmp"}/keel-nats-faults/${scenario}-${seed}`;
fs.rmSync(BASE, { recursive: true, force: true });
fs.mkdirSync(BASE, { recursive: true });
const ports = await freePorts(9);
const N = 3;
const nodes = [];
for (let i = 0; i < N; i++) {
  nodes.push({ name: `n${i + 1}`, client: ports[i], cluster: ports[3 + i], http: ports[6 + i], proc: null, state: "down" });
}
const routes = nodes.map((n) => `nats-route://127.0.0.1:${n.cluster}`).join(", ");
for (const n of nodes) {
  n.store = `${BASE}/${n.name}-store`; n.conf = `${BASE}/${n.name}.conf`; n.logf = `${BASE}/${n.name}.log`;
  fs.mkdirSync(n.store, { recursive: true });
  fs.writeFileSync(n.conf, `server_name: ${n.name}
listen: 127.0.0.1:${n.client}
http: 127.0.0.1:${n.http}
jetstream {
  store_dir: "${n.store}"
}
cluster {
  name: repro
  listen: 127.0.0.1:${n.cluster}
  routes: [ ${routes} ]
}
`);
}
function startNode(n) {
  const fd = fs.openSync(n.logf, "a");
  fs.writeSync(fd, `==== [harness ${now()}s] starting ${n.name}\n`);
  const p = spawn(NATS_SERVER, ["-c", n.conf], { stdio: ["ignore", fd, fd] });
  fs.closeSync(fd);
  n.proc = p; n.state = "up";
  p.on("exit", (code, sig) => { if (n.proc === p) { n.state = "down"; } });
}
function marker(n, text) { try { fs.appendFileSync(n.logf, `==== [harness ${now()}s] ${text}\n`); } catch { } }
async function killNode(n) {
  marker(n, "SIGKILL");
  const p = n.proc; const ex = new Promise((r) => p.once("exit", r));
  p.kill("SIGKILL"); await ex; n.state = "down";
}
function stopNode(n) { marker(n, "SIGSTOP"); n.proc.kill("SIGSTOP"); n.state = "paused"; }
function contNode(n) { marker(n, "SIGCONT"); n.proc.kill("SIGCONT"); n.state = "up"; }
let cleaning = false;
function cleanupAll() {
  if (cleaning) return; cleaning = true;
  for (const n of nodes) { try { if (n.proc && n.proc.exitCode === null) { n.proc.kill("SIGCONT"); n.proc.kill("SIGKILL"); } } catch { } }
}
process.on("exit", cleanupAll);
process.on("SIGINT", () => { cleanupAll(); process.exit(130); });
process.on("uncaughtException", (e) => { console.error("UNCAUGHT", e); cleanupAll(); process.exit(2); });
process.on("unhandledRejection", (e) => { console.error("UNHANDLED", e); });

async function jsz(n, q = "") {
  const r = await fetch(`http://127.0.0.1:${n.http}/jsz${q}`, { signal: AbortSignal.timeout(1000) });
  return await r.json();
}
async function metaLeaderOn(n) { try { const j = await jsz(n); return j?.meta_cluster?.leader || ""; } catch { return null; } }

for (const n of nodes) startNode(n);
log("servers", nodes.map((n) => `${n.name} client=${n.client} cluster=${n.cluster} http=${n.http} pid=${n.proc.pid}`).join(" | "));
{
  const t = Date.now();
  while (true) {
    const ls = await Promise.all(nodes.map(metaLeaderOn));
    if (ls.every((l) => l && l === ls[0])) { log(`meta leader ${ls[0]} after ${((Date.now() - t) / 1000).toFixed(1)}s`); break; }
    if (Date.now() - t > 60000) throw new Error("no meta leader after 60s");
    await sleep(250);
  }
}

// ---------- clients ----------
const urls = nodes.map((n) => `127.0.0.1:${n.client}`);
const copts = { maxReconnectAttempts: -1, reconnectTimeWait: 250, pingInterval: 2000, maxPingOut: 2, timeout: 3000 };
const nc = await connect({ servers: urls, name: "writer", ...copts });
const js = jetstream(nc, { timeout: 3000 });
const jsm = await jetstreamManager(nc, { timeout: 3000 });
const kvnc = await connect({ servers: urls, name: "kvwriter", ...copts });
const kvjs = jetstream(kvnc, { timeout: 3000 });
const kvjsm = await jetstreamManager(kvnc, { timeout: 3000 });
// one probe connection per server, pinned to it
const pnc = [];
for (const n of nodes) pnc.push(await connect({ servers: [`127.0.0.1:${n.client}`], ignoreClusterUpdates: true, name: `probe-${n.name}`, ...copts }));

const STREAM = "LOG", BUCKET = "lease", KVSTREAM = `KV_${BUCKET}`;
await jsm.streams.add({ name: STREAM, subjects: ["log.>"], storage: "file", num_replicas: 3 });
const kv = await new Kvm(kvjs).create(BUCKET, { history: 1, replicas: 3 });
const KEYS = ["k0", "k1", "k2", "k3"];
const kvState = {};
for (const k of KEYS) { const r = await kv.put(k, "init"); kvState[k] = { lastRev: r, ackedRev: r, ackedVal: "init", acks: 1 }; }
log("stream and bucket created");

// ---------- raw JS API ----------
async function apiReq(conn, subj, body = "", timeout = 1500) {
  const m = await conn.request(subj, ENC.encode(body), { timeout });
  return JSON.parse(DEC.decode(m.data));
}
function classifyInfo(r) {
  if (r.error) return `err ${r.error.err_code}: ${r.error.description}`;
  return "ok";
}

// ---------- stats ----------
const stats = {
  pub: { attempts: 0, acked: 0, errors: {}, maxAckGapMs: 0, maxAckGapAt: "" },
  kv: { attempts: 0, acked: 0, errors: {}, regressions: [], maxAckGapMs: 0, maxAckGapAt: "" },
  probes: {}, // server -> kind -> result -> count
  probeFirstLast: {}, // "server kind result" -> [first,last]
  faults: [],
};
for (const n of nodes) stats.probes[n.name] = {};
const acked = []; // [payloadSeq, streamSeq]
let running = true;
const leaders = { stream: "", kv: "", meta: "", at: 0 };

// stream writer
async function streamWriter() {
  let seq = 0, lastAck = Date.now();
  while (running) {
    seq++; stats.pub.attempts++;
    try {
      const pa = await js.publish(`log.${seq % 16}`, ENC.encode(JSON.stringify({ seq })), { timeout: 2000 });
      acked.push([seq, pa.seq]); stats.pub.acked++;
      if (pa.duplicate) bump(stats.pub.errors, "duplicate-flag");
      const gap = Date.now() - lastAck; if (gap > stats.pub.maxAckGapMs) { stats.pub.maxAckGapMs = gap; stats.pub.maxAckGapAt = now(); }
      lastAck = Date.now();
      await sleep(4);
    } catch (e) {
      bump(stats.pub.errors, errKey(e)); await sleep(100);
    }
  }
}
// KV writer: compare-and-set renewals on a few keys
async function kvWriter() {
  let i = 0, lastAck = Date.now();
  while (running) {
    const k = KEYS[i++ % KEYS.length]; const st = kvState[k];
    const val = `v${i}`;
    stats.kv.attempts++;
    try {
      const rev = await kv.update(k, val, st.lastRev);
      if (rev <= st.ackedRev) stats.kv.regressions.push({ t: now(), key: k, kind: "new-ack-rev<=old-ack-rev", rev, prev: st.ackedRev });
      st.lastRev = rev; st.ackedRev = rev; st.ackedVal = val; st.acks++; stats.kv.acked++;
      const gap = Date.now() - lastAck; if (gap > stats.kv.maxAckGapMs) { stats.kv.maxAckGapMs = gap; stats.kv.maxAckGapAt = now(); }
      lastAck = Date.now();
      await sleep(50);
    } catch (e) {
      const key = errKey(e); bump(stats.kv.errors, key.replace(/\d+$/, "N"));
      const m = /wrong last sequence: (\d+)/.exec(String(e?.message || ""));
      if (m) {
        const cur = parseInt(m[1], 10);
        if (cur < st.ackedRev) stats.kv.regressions.push({ t: now(), key: k, kind: "leader's last seq < acked rev", cur, acked: st.ackedRev });
        st.lastRev = cur; // resync (a timed-out update may have been applied)
      }
      await sleep(100);
    }
  }
}
// probe loop: every second ask each server (pinned connection) for stream info and names-by-subject
async function probeOnce(i) {
  const n = nodes[i]; const c = pnc[i]; const P = stats.probes[n.name];
  if (n.state !== "up") return;
  const rec = (kind, res) => {
    const k = `${kind} -> ${res}`; bump(P, k);
    const fk = `${n.name} ${k}`; if (!stats.probeFirstLast[fk]) stats.probeFirstLast[fk] = [now(), now()]; else stats.probeFirstLast[fk][1] = now();
  };
  const tasks = [
    ["INFO " + STREAM, `$JS.API.STREAM.INFO.${STREAM}`, "", (r) => { if (!r.error) leaders.stream = r.cluster?.leader || leaders.stream; }],
    ["INFO " + KVSTREAM, `$JS.API.STREAM.INFO.${KVSTREAM}`, "", (r) => { if (!r.error) leaders.kv = r.cluster?.leader || leaders.kv; }],
    ["NAMES subj log.1", `$JS.API.STREAM.NAMES`, JSON.stringify({ subject: "log.1" }), null],
    [`NAMES subj $KV.${BUCKET}.k0`, `$JS.API.STREAM.NAMES`, JSON.stringify({ subject: `$KV.${BUCKET}.k0` }), null],
  ];
  await Promise.all(tasks.map(async ([kind, subj, body, cb]) => {
    try {
      const r = await apiReq(c, subj, body, 1500);
      if (kind.startsWith("NAMES")) rec(kind, r.error ? `err ${r.error.err_code}: ${r.error.description}` : (r.streams && r.streams.length ? "found" : "EMPTY (=> 'no stream matches subject')"));
      else { rec(kind, classifyInfo(r)); if (cb) cb(r); }
    } catch (e) { rec(kind, errKey(e).replace(/\d+ms/, "")); }
  }));
  const ml = await metaLeaderOn(n); if (ml) leaders.meta = ml;
}
async function probeLoop() {
  while (running) { await Promise.all(nodes.map((_, i) => probeOnce(i))); await sleep(1000); }
}

// fault loop
async function faultLoop(endAt) {
  const leaderMode = scenario.startsWith("leader"); const kill = scenario.endsWith("kill");
  await sleep(rint(3000, 6000));
  while (Date.now() < endAt) {
    let target, why = "random";
    if (leaderMode) {
      const kind = ["stream", "kv", "meta"][rint(0, 2)];
      // fresh leader lookup
      try { const r = await apiReq(nc, `$JS.API.STREAM.INFO.${kind === "kv" ? KVSTREAM : STREAM}`, "", 1000); if (!r.error && r.cluster?.leader) leaders[kind === "kv" ? "kv" : "stream"] = r.cluster.leader; } catch { }
      if (kind === "meta") { for (const n of nodes) { const l = await metaLeaderOn(n); if (l) { leaders.meta = l; break; } } }
      target = nodes.find((n) => n.name === leaders[kind]);
      why = `${kind}-leader`;
      if (!target) { target = nodes[rint(0, 2)]; why = `${kind}-leader unknown, random`; }
    } else target = nodes[rint(0, 2)];
    const ev = { t: now(), server: target.name, why, leadersBefore: { ...leaders } };
    if (kill) {
      const down = rint(1000, 5000);
      await killNode(target); ev.action = `SIGKILL, restart after ${down}ms`; log(`fault: ${ev.action} ${target.name} (${why})`);
      await sleep(down); startNode(target);
    } else {
      const down = rint(5000, 15000);
      stopNode(target); ev.action = `SIGSTOP for ${down}ms`; log(`fault: ${ev.action} ${target.name} (${why})`);
      await sleep(down); contNode(target);
    }
    stats.faults.push(ev);
    await sleep(rint(2000, 6000));
  }
}

const endAt = Date.now() + DURATION;
const pw = streamWriter(), kw = kvWriter(), pl = probeLoop();
const fl = faultLoop(endAt);
let lastReport = 0;
while (Date.now() < endAt) {
  await sleep(1000);
  if (Date.now() - lastReport > 15000) {
    lastReport = Date.now();
    log(`pub acked=${stats.pub.acked}/${stats.pub.attempts} kv acked=${stats.kv.acked}/${stats.kv.attempts} leaders stream=${leaders.stream} kv=${leaders.kv} meta=${leaders.meta} states=${nodes.map((n) => n.name + ":" + n.state).join(",")}`);
  }
}
await fl; // finishes its current fault (restarts/continues the server)
for (const n of nodes) { if (n.state === "paused") contNode(n); if (n.state === "down") startNode(n); }
const tHeal = Date.now();
running = false;
await Promise.all([pw, kw, pl]);
log(`HEALED (all 3 running). writers stopped. pub acked=${stats.pub.acked} kv acked=${stats.kv.acked}`);

// ---------- recovery timing ----------
const recovery = {};
{
  const deadline = tHeal + 90000;
  while (Date.now() < deadline && Object.keys(recovery).length < 4) {
    const el = ((Date.now() - tHeal) / 1000).toFixed(1);
    if (!recovery.meta) { const ls = await Promise.all(nodes.map(metaLeaderOn)); if (ls.every((l) => l && l === ls[0])) recovery.meta = `${ls[0]} at +${el}s`; }
    for (const [key, s] of [["stream", STREAM], ["kv", KVSTREAM]]) {
      if (recovery[key]) continue;
      try {
        const r = await apiReq(nc, `$JS.API.STREAM.INFO.${s}`, "", 1000);
        if (!r.error && r.cluster?.leader && (r.cluster.replicas || []).length === 2 && r.cluster.replicas.every((x) => x.current && !x.offline)) recovery[key] = `${r.cluster.leader} (replicas current) at +${el}s`;
      } catch { }
    }
    if (!recovery.write && recovery.stream && recovery.kv) {
      try { await js.publish("log.probe", ENC.encode("after-heal"), { timeout: 1000 }); recovery.write = `publish acked at +${el}s`; } catch { }
    }
    await sleep(250);
  }
  for (const k of ["meta", "stream", "kv", "write"]) if (!recovery[k]) recovery[k] = "NOT within 90s";
  log("recovery", JSON.stringify(recovery));
}

// ---------- verification ----------
const verify = { perServer: {}, readbacks: [], kv: {}, jsz: {} };
for (let i = 0; i < N; i++) {
  const n = nodes[i]; const o = {};
  for (const [kind, subj, body] of [["INFO LOG", `$JS.API.STREAM.INFO.${STREAM}`, ""], ["INFO KV", `$JS.API.STREAM.INFO.${KVSTREAM}`, ""],
  ["NAMES log.1", `$JS.API.STREAM.NAMES`, JSON.stringify({ subject: "log.1" })], ["NAMES $KV", `$JS.API.STREAM.NAMES`, JSON.stringify({ subject: `$KV.${BUCKET}.k0` })]]) {
    try {
      const r = await apiReq(pnc[i], subj, body, 3000);
      if (r.error) o[kind] = `err ${r.error.err_code}: ${r.error.description}`;
      else if (kind.startsWith("NAMES")) o[kind] = r.streams && r.streams.length ? r.streams.join(",") : "EMPTY";
      else o[kind] = `leader=${r.cluster?.leader} msgs=${r.state.messages} first=${r.state.first_seq} last=${r.state.last_seq}`;
    } catch (e) { o[kind] = errKey(e); }
  }
  try {
    const j = await jsz(n, "?accounts=true&streams=true");
    o.jsz_meta_leader = j.meta_cluster?.leader;
    const det = (j.account_details || []).flatMap((a) => a.stream_detail || []);
    for (const s of det) o[`jsz replica ${s.name}`] = `msgs=${s.state.messages} first=${s.state.first_seq} last=${s.state.last_seq} leader=${s.cluster?.leader}`;
    if (!det.find((s) => s.name === STREAM)) o[`jsz replica ${STREAM}`] = "ABSENT on this server";
    if (!det.find((s) => s.name === KVSTREAM)) o[`jsz replica ${KVSTREAM}`] = "ABSENT on this server";
  } catch (e) { o.jsz = errKey(e); }
  verify.perServer[n.name] = o;
}
console.log("PER-SERVER", JSON.stringify(verify.perServer, null, 1));

async function readBack(label) {
  const res = { label };
  try {
    const si = await jsm.streams.info(STREAM);
    res.leader = si.cluster?.leader; res.state = { messages: si.state.messages, first: si.state.first_seq, last: si.state.last_seq };
    const bySeq = new Map(); let count = 0;
    if (si.state.messages > 0) {
      const oc = await js.consumers.get(STREAM, { opt_start_seq: 1 });
      const it = await oc.consume({ max_messages: 2000 });
      let last = Date.now();
      const wd = setInterval(() => { if (Date.now() - last > 15000) { res.readTimeout = true; it.stop(); } }, 1000);
      for await (const m of it) {
        last = Date.now(); count++;
        let p = null; try { p = JSON.parse(m.string()).seq; } catch { }
        if (p !== null) { if (bySeq.has(p)) res.dupPayloads = (res.dupPayloads || 0) + 1; bySeq.set(p, m.seq); }
        if (m.seq >= si.state.last_seq) break;
      }
      clearInterval(wd);
    }
    res.read = count;
    let lost = 0, moved = 0; const lostSamples = [];
    for (const [p, s] of acked) {
      if (!bySeq.has(p)) { lost++; if (lostSamples.length < 10) lostSamples.push([p, s]); }
      else if (bySeq.get(p) !== s) moved++;
    }
    res.acked = acked.length; res.lostAcked = lost; res.ackedAtDifferentSeq = moved; res.lostSamples = lostSamples;
    res.unackedButStored = [...bySeq.keys()].length - (acked.length - lost);
    if (label === "after heal" && (lost || moved)) {
      // mismatches: [payloadSeq, streamSeqInPubAck, streamSeqNowOrNull]
      const mm = acked.filter(([p, s]) => bySeq.get(p) !== s).map(([p, s]) => [p, s, bySeq.has(p) ? bySeq.get(p) : null]);
      const ackedSet = new Set(acked.map(([p]) => p));
      const unackedStored = [...bySeq.entries()].filter(([p]) => !ackedSet.has(p));
      fs.writeFileSync(`${BASE}/mismatch.json`, JSON.stringify({ mismatches: mm, unackedStored }, null, 0));
    }
  } catch (e) { res.error = errKey(e); }
  console.log("READBACK", JSON.stringify(res));
  return res;
}
verify.readbacks.push(await readBack("after heal"));
// step the stream leader down twice and read again from each new leader
for (let k = 0; k < 2; k++) {
  try {
    const r = await apiReq(nc, `$JS.API.STREAM.LEADER.STEPDOWN.${STREAM}`, "", 3000);
    if (r.error) { verify.readbacks.push({ label: `stepdown ${k + 1}`, error: r.error.description }); continue; }
  } catch (e) { verify.readbacks.push({ label: `stepdown ${k + 1}`, error: errKey(e) }); continue; }
  const t = Date.now();
  while (Date.now() - t < 30000) { try { const r = await apiReq(nc, `$JS.API.STREAM.INFO.${STREAM}`, "", 1000); if (!r.error && r.cluster?.leader) break; } catch { } await sleep(250); }
  verify.readbacks.push(await readBack(`after stepdown ${k + 1} (+${((Date.now() - t) / 1000).toFixed(1)}s)`));
}
// KV check through the leader (STREAM.MSG.GET last_by_subj)
for (const k of KEYS) {
  const st = kvState[k];
  try {
    const r = await apiReq(kvnc, `$JS.API.STREAM.MSG.GET.${KVSTREAM}`, JSON.stringify({ last_by_subj: `$KV.${BUCKET}.${k}` }), 3000);
    if (r.error) verify.kv[k] = { ackedRev: st.ackedRev, got: `err ${r.error.err_code}: ${r.error.description}`, LOST: true };
    else {
      const val = Buffer.from(r.message.data || "", "base64").toString();
      verify.kv[k] = { ackedRev: st.ackedRev, ackedVal: st.ackedVal, gotRev: r.message.seq, gotVal: val, LOST: r.message.seq < st.ackedRev || (r.message.seq === st.ackedRev && val !== st.ackedVal) };
    }
  } catch (e) { verify.kv[k] = { ackedRev: st.ackedRev, got: errKey(e), LOST: "unknown" }; }
}
console.log("KV", JSON.stringify(verify.kv));

const summary = { seed, scenario, durationS: DURATION / 1000, nats_server: execFileSync(NATS_SERVER, ["--version"]).toString().trim(), stats, recovery, verify, leadersAtEnd: leaders };
fs.writeFileSync(`${BASE}/summary.json`, JSON.stringify(summary, null, 1));
console.log("FAULTS", stats.faults.length, JSON.stringify(stats.faults.map((f) => `${f.t}s ${f.server} ${f.why} ${f.action}`)));
console.log("PUB", JSON.stringify(stats.pub));
console.log("KVSTATS", JSON.stringify({ ...stats.kv }));
console.log("PROBES", JSON.stringify(stats.probes, null, 1));
const bad = Object.entries(stats.probeFirstLast).filter(([k]) => /EMPTY|10059|not found/.test(k));
console.log("PROBE stream-not-found/EMPTY windows", JSON.stringify(bad));
await Promise.allSettled([nc.close(), kvnc.close(), ...pnc.map((c) => c.close())]);
cleanupAll();
log("done; logs in", BASE);
process.exit(0);
