// A real keel for the SDK's tests: `keel dev` (nats-server and one node with every role) in a
// temporary KEEL_HOME, with the agents a test writes. KEEL_BINARY names the keel to run (the
// tests' build), else the repository's build/apps/keel.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../../..");
export const keelBinary = process.env.KEEL_BINARY || join(root, "build/apps/keel");

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export async function eventually(what, f, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(50);
  }
}

// Starts keel dev with `config` (TOML; files beside it from `files`), returns where it lives.
export async function startKeel(config, files = {}) {
  const home = mkdtempSync(join(tmpdir(), "keel-sdk-"));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(home, name), text);
  writeFileSync(join(home, "keel.toml"), config);
  const log = join(home, "dev.log");
  writeFileSync(log, "");
  const env = { ...process.env, KEEL_HOME: home };
  const { openSync } = await import("node:fs");
  const out = openSync(log, "a");
  const dev = spawn(keelBinary, ["dev", "--config", join(home, "keel.toml"), "--data-dir", join(home, "dev"), "--gateway", "127.0.0.1:0"],
                    { env, stdio: ["ignore", out, out] });
  await eventually("keel dev ready (" + log + ")", () => {
    if (dev.exitCode !== null) throw new Error("keel dev exited: " + readFileSync(log, "utf8"));
    return readFileSync(log, "utf8").includes("Press Ctrl-C");
  }, 60_000);
  return {
    home,
    log,
    workerCredentials: join(home, "dev/credentials/worker.creds"),
    async stop() {
      dev.kill("SIGINT");
      await new Promise((r) => (dev.exitCode !== null ? r() : dev.once("exit", r)));
      rmSync(home, { recursive: true, force: true });
    },
  };
}

// An agent on the scripted model with these turns and tools.
export function agentConfig(name, tools, extra = "") {
  return `[agents.${name}]
provider = "scripted"
script = "${name}.script.json"
tools = ${JSON.stringify(tools)}
max_steps = 20
${extra}
`;
}
