// Where a keel is, as the `keel` command line finds it: the context file that `keel dev` and
// scripts/cluster.sh write ($KEEL_HOME/context.toml, KEEL_HOME defaulting to ~/.keel), and the
// broker's credentials files (TOML: user, password, role; owner-only).
import { readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export interface Credentials {
  user: string;
  password: string;
  role: string;
}

export interface Context {
  natsUrl: string;
  prefix: string;
  namespace: string;
  credentialsFile?: string;
  dashboardUrl?: string;
  home: string;
}

// The few TOML forms these files use: `key = "string"` and `key = integer`, one per line.
function parseFlatToml(text: string, path: string): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z0-9_]+)\s*=\s*(.+)$/.exec(line);
    if (!m) throw new Error(`${path}: cannot read the line "${line}"`);
    const value = m[2].trim();
    if (value.startsWith('"')) out[m[1]] = JSON.parse(value);
    else if (value.startsWith("'") && value.endsWith("'") && value.length >= 2) out[m[1]] = value.slice(1, -1);  // a literal string
    else if (/^-?[0-9]+$/.test(value)) out[m[1]] = Number(value);
    else throw new Error(`${path}: ${m[1]}: expected a string or an integer`);
  }
  return out;
}

export function keelHome(): string {
  return process.env.KEEL_HOME && process.env.KEEL_HOME !== "" ? process.env.KEEL_HOME : join(homedir(), ".keel");
}

export function readContext(home = keelHome()): Context {
  const path = join(home, "context.toml");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new Error(`no keel to reach: ${path} does not exist (start one with \`keel dev\`, or pass servers)`);
  }
  const t = parseFlatToml(text, path);
  return {
    natsUrl: String(t.nats_url ?? "nats://127.0.0.1:4222"),
    prefix: String(t.prefix ?? "keel"),
    namespace: String(t.namespace ?? "default"),
    credentialsFile: t.credentials_file ? String(t.credentials_file) : undefined,
    dashboardUrl: t.dashboard_url ? String(t.dashboard_url) : undefined,
    home,
  };
}

// Refused when others than its owner may read it, as keel refuses it.
export function readCredentials(path: string): Credentials {
  const mode = statSync(path).mode;
  if ((mode & 0o077) !== 0) throw new Error(`${path}: others may read these credentials; chmod 600 ${path}`);
  const t = parseFlatToml(readFileSync(path, "utf8"), path);
  if (typeof t.user !== "string" || typeof t.password !== "string")
    throw new Error(`${path}: a credentials file holds user and password`);
  return { user: t.user, password: t.password, role: String(t.role ?? "person") };
}
