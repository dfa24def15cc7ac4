// nats-server alone (no keel): is a write at an expected last sequence per subject a compare-and-set
// when two clients send it at once? Three routed servers; for a stream of 3 replicas and one of 1,
// ROUNDS rounds each write a first message on a fresh subject, then send two publishes at once, from
// two clients on two servers, both carrying `Nats-Expected-Last-Subject-Sequence` = that message's
// sequence. Exactly one should be confirmed. Counts the rounds in which both were, and reads back
// what the stream holds for those subjects (and whether the header is kept with a message).
// usage: node concurrent_cas.mjs [rounds=300]
// Leaves the servers' configs and logs in $TMPDIR/keel-nats-cas/.
import { connect, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";

const NATS_SERVER = process.env.NATS_SERVER || "/usr/sbin/nats-server";
const ROUNDS = parseInt(process.argv[2] || "300", 10);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePorts(n) {
  const servers = [], ports = [];
  for (let i = 0; i < n; i++) {
    const s = net.createServer();
    await new Promise((r) => s.listen(0, "127.0.0.1", r));
    servers.push(s);
    ports.push(s.address().port);
  }
  for (const s of servers) await new Promise((r) => s.close(r));
  return ports;
}

const BASE = `${process.env.TMPDIR || "/tmp"}/keel-nats-cas`;
fs.rmSync(BASE, { recursive: true, force: true });
fs.mkdirSync(BASE, { recursive: true });
const ports = await freePorts(6);
const nodes = [0, 1, 2].map((i) => ({ name: `n${i + 1}`, client: ports[i], cluster: ports[3 + i] }));
const routes = nodes.map((n) => `nats-route://127.0.0.1:${n.cluster}`).join(", ");
const procs = [];
for (const n of nodes) {
  const conf = `${BASE}/${n.name}.conf`;
  fs.mkdirSync(`${BASE}/${n.name}-store`);
  fs.writeFileSync(conf, `server_name: ${n.name}\nlisten: 127.0.0.1:${n.client}\n` +
    `jetstream { store_dir: "${BASE}/${n.name}-store" }\n` +
    `cluster { name: cas\n listen: 127.0.0.1:${n.cluster}\n routes: [ ${routes} ] }\n`);
  const log = fs.openSync(`${BASE}/${n.name}.log`, "a");
  procs.push(spawn(NATS_SERVER, ["-c", conf], { stdio: ["ignore", log, log] }));
}
const stopAll = () => { for (const p of procs) try { p.kill("SIGKILL"); } catch { } };
process.on("exit", stopAll);

const version = (await new Promise((resolve) => {
  const p = spawn(NATS_SERVER, ["--version"]);
  let out = "";
  p.stdout.on("data", (d) => { out += d; });
  p.on("exit", () => resolve(out.trim()));
}));
const clients = [];
for (const n of nodes) {
  for (let tries = 0; ; tries++) {
    try {
      clients.push(await connect({ servers: [`127.0.0.1:${n.client}`], ignoreClusterUpdates: true, timeout: 5000 }));
      break;
    } catch (e) {
      if (tries > 100) throw e;
      await sleep(100);
    }
  }
}
let jsm;
for (let tries = 0; ; tries++) {
  try {
    // The cluster elects its metadata leader first: until then JetStream answers nothing.
    jsm = await jetstreamManager(clients[0], { timeout: 2000 });
    await jsm.streams.add({ name: "R3", subjects: ["r3.>"], storage: "file", num_replicas: 3 });
    await jsm.streams.add({ name: "R1", subjects: ["r1.>"], storage: "file", num_replicas: 1 });
    break;
  } catch (e) {
    if (tries > 60) throw e;
    await sleep(500);
  }
}
const js = clients.map((c) => jetstream(c, { timeout: 10000 }));

let header = "Nats-Expected-Last-Subject-Sequence";
async function publishAt(client, subject, expected, body) {
  const h = headers();
  h.set(header, String(expected));
  try {
    const ack = await js[client].publish(subject, body, { headers: h });
    return { ok: true, seq: ack.seq };
  } catch (e) {
    return { ok: false, error: String(e?.message || e).slice(0, 80) };
  }
}

const result = { nats_server: version, rounds: ROUNDS };
// Per subject on 3 replicas and on 1; then the stream's own last sequence on 3 replicas
// (`Nats-Expected-Last-Sequence`: nothing at all written to the stream since).
for (const [name, stream, expect] of [["R3", "R3", "Nats-Expected-Last-Subject-Sequence"],
                                      ["R1", "R1", "Nats-Expected-Last-Subject-Sequence"],
                                      ["R3 stream-wide", "R3", "Nats-Expected-Last-Sequence"]]) {
  header = expect;
  const prefix = stream.toLowerCase() + (expect.includes("Subject") ? "" : ".wide");
  let both = 0, one = 0, none = 0, headerKept = null;
  const examples = [];
  for (let round = 0; round < ROUNDS; round++) {
    const subject = `${prefix}.k${round}`;
    const first = await js[0].publish(subject, "first");
    // Two clients on two servers (the leader's and another's, whichever they are), at once.
    const [a, b] = await Promise.all([publishAt(1, subject, first.seq, "from n2"), publishAt(2, subject, first.seq, "from n3")]);
    const confirmed = [a, b].filter((r) => r.ok).length;
    if (confirmed === 2) {
      both++;
      if (examples.length < 3) {
        // What the stream holds on that subject after the first message.
        const held = [];
        for (let seq = first.seq + 1; ; ) {
          let m;
          try { m = await jsm.streams.getMessage(stream, { seq, next_by_subj: subject }); } catch { break; }
          if (!m) break;
          held.push({ seq: m.seq, body: m.string(), expected: m.header?.get(header) || null });
          seq = m.seq + 1;
        }
        examples.push({ subject, expected: first.seq, confirmed: [a.seq, b.seq], held });
      }
    } else if (confirmed === 1) one++;
    else none++;
    if (headerKept === null && (a.ok || b.ok)) {
      const m = await jsm.streams.getMessage(stream, { seq: a.ok ? a.seq : b.seq });
      headerKept = m.header?.get(header) || "";
    }
  }
  result[name] = { both_confirmed: both, one_confirmed: one, none_confirmed: none,
                     expected_header_kept_with_message: headerKept !== "" && headerKept !== null, examples };
}
console.log(JSON.stringify(result, null, 2));
for (const c of clients) await c.close();
stopAll();
