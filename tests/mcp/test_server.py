#!/usr/bin/env python3
"""An MCP server over stdio for keel's tests, which behaves as its first argument says:
ok (a well-behaved server whose `probe` tool reports what its process holds), garbage, hang,
die, huge, asks (requests of its own before answering), wrong_id, float_id, deep (an answer
nested 100,000 deep), error_text ("isError": "yes"), no_tools, old_version."""
import json
import os
import socket
import sys

mode = sys.argv[1] if len(sys.argv) > 1 else "ok"


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def probe(arguments):
    report = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": os.getcwd(),
              "env": sorted(os.environ.keys()), "fds": {}}
    for fd in os.listdir("/proc/self/fd"):
        try:
            report["fds"][fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            pass
    def attempt(what, f):
        try:
            f()
            report[what] = "allowed"
        except OSError as e:
            report[what] = "refused: " + e.strerror
    attempt("write_outside", lambda: open(arguments.get("outside", "/var/tmp/keel-mcp-probe"), "w").write("x"))
    attempt("write_workspace", lambda: open("probe.txt", "w").write("from the server"))
    attempt("read_shadow", lambda: open("/etc/shadow").read())
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    for key in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
        report[key] = status.get(key, "").strip()
    for name, family, kind in (("unix", socket.AF_UNIX, socket.SOCK_STREAM), ("inet", socket.AF_INET, socket.SOCK_STREAM),
                               ("inet6", socket.AF_INET6, socket.SOCK_DGRAM), ("netlink", socket.AF_NETLINK, socket.SOCK_RAW),
                               ("packet", 17, socket.SOCK_RAW)):
        def make(family=family, kind=kind):
            socket.socket(family, kind).close()
        attempt("socket_" + name, make)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    report["unshare_user"] = "allowed" if libc.unshare(0x10000000) == 0 else "refused: " + os.strerror(ctypes.get_errno())
    report["other_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    port = arguments.get("port")
    if port:
        def connect():
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.close()
        attempt("connect_loopback", connect)
    return report


TOOLS = [
    {"name": "probe", "description": "Reports what this server's process holds",
     "inputSchema": {"type": "object", "properties": {"outside": {"type": "string"}, "port": {"type": "integer"}}}},
    {"name": "echo", "description": "Says it back",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "bad name!", "description": "A name no model may call", "inputSchema": {"type": "object"}},
]

if mode == "slow_start":
    import time
    time.sleep(30)

for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    method = message.get("method")
    ident = message.get("id")
    if method == "initialize":
        version = "1999-01-01" if mode == "old_version" else "2025-06-18"
        capabilities = {} if mode == "no_tools" else {"tools": {"listChanged": True}}
        send({"jsonrpc": "2.0", "id": ident, "result": {"protocolVersion": version, "capabilities": capabilities,
                                                        "serverInfo": {"name": "keel-test-server", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = message["params"]["name"]
        arguments = message["params"].get("arguments", {})
        if mode == "garbage":
            sys.stdout.write("this is not JSON-RPC\n")
            sys.stdout.flush()
            continue
        if mode == "hang":
            continue
        if mode == "die":
            os._exit(3)
        if mode == "huge":
            sys.stdout.write("{" + "x" * (20 << 20))
            sys.stdout.flush()
            continue
        if mode == "deep":
            sys.stdout.write('{"jsonrpc": "2.0", "id": %d, "result": {"content": [], "x": %s%s}}\n' % (ident, "[" * 100000, "]" * 100000))
            sys.stdout.flush()
            continue
        if mode == "float_id":
            send({"jsonrpc": "2.0", "id": float(ident), "result": {"content": []}})
            continue
        if mode == "error_text":
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "odd"}], "isError": "yes"}})
            continue
        if mode == "wrong_id":
            send({"jsonrpc": "2.0", "id": 987654, "result": {"content": []}})
            continue
        if mode == "asks":
            send({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}})
            send({"jsonrpc": "2.0", "id": "s2", "method": "ping"})
            send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}})
            replies = [json.loads(sys.stdin.readline()) for _ in range(2)]
            text = json.dumps([r.get("error", {}).get("code", "ok") for r in replies])
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": text}]}})
            continue
        if name == "probe":
            report = probe(arguments)
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "probed"}],
                                                            "structuredContent": report}})
        elif name == "echo":
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": arguments["text"]}]}})
        else:
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": "no such tool"}],
                                                            "isError": True}})
    elif ident is not None:
        send({"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "unknown method"}})
