// keel's wire protocol (docs/PROTOCOL.md): MessagePack maps with string keys, each with `v` and
// `type`; an error reply is `{v, type: "error", error: {code, message}}`.
import { decode, encode } from "@msgpack/msgpack";

export const PROTOCOL_VERSION = 1;

export type Value = unknown;
export type Message = Record<string, Value>;

export function pack(message: Message): Uint8Array {
  return encode(message, { ignoreUndefined: true });
}

export function unpack(bytes: Uint8Array): Message {
  const v = decode(bytes);
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array)
    throw new KeelError("malformed", "a keel message is a map");
  return v as Message;
}

// A request keel refused, or could not serve: `code` is one of the protocol's error codes
// (malformed, invalid_argument, not_found, conflict, unavailable, timeout, denied, ...).
export class KeelError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "KeelError";
  }
}

// The reply's body, or the error it carries, thrown.
export function expectReply(bytes: Uint8Array, type: string): Message {
  const m = unpack(bytes);
  if (m.type === "error") {
    const e = (m.error ?? {}) as { code?: string; message?: string };
    throw new KeelError(e.code ?? "internal", e.message ?? "keel answered with an error");
  }
  if (m.type !== type) throw new KeelError("malformed", `expected a ${type} reply, got ${String(m.type)}`);
  return m;
}

// Names that stand in subjects: 1 to 64 of A-Z a-z 0-9 _ -.
export function validName(name: string): boolean {
  return /^[A-Za-z0-9_-]{1,64}$/.test(name);
}
