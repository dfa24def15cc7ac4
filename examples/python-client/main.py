"""The guide's main.py on keel: invoke the coding agent, stream its events, and on each step that
waits for a person show what the agent wants to do and answer it. Answers come from the terminal,
or from --answers (y/n per approval, in order) for a run without a person."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from keel import Client  # noqa: E402


def show(form: dict) -> str:
    context = form.get("context", {})
    tool = form.get("tool", "")
    print("=" * 60)
    if tool == "exec":
        print("  COMMAND APPROVAL REQUIRED\n" + "=" * 60)
        print(f"\n  The agent wants to run a command on your machine:\n\n    Command:   {context.get('command')}")
        print(f"    Directory: {context.get('cwd')}\n")
    elif tool in ("write", "edit"):
        print(f"  {tool.upper()} APPROVAL REQUIRED\n" + "=" * 60)
        print(f"\n  The agent wants to use the \"{tool}\" tool:\n\n    Path: {context.get('path')}")
        body = context.get("content") or context.get("diff") or ""
        print("    " + ("Content:" if context.get("content") else "Diff:"))
        for line in body.splitlines()[:20]:
            print(f"      {line}")
        print()
    else:
        print(f"  APPROVAL REQUIRED: {form.get('title') or tool}\n" + "=" * 60)
        print(f"\n  {form}\n")
    return tool


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", nargs="?", default="Create hello.js that prints 'Hello, world!' and run it.")
    parser.add_argument("--agent", default="coder")
    parser.add_argument("--answers", help="y/n per approval, in order (no terminal needed)")
    args = parser.parse_args()
    answers = list(args.answers) if args.answers else None

    client = Client()
    run = client.invoke(args.agent, args.task)
    print(f"Run {run.id}")
    for event in client.stream(run.id):
        if event.type == "suspend":
            show(event.data.get("form", {}))
            reply = answers.pop(0) if answers else input("  Approve this operation? (y/n): ").strip().lower()
            approved = reply == "y"
            feedback = "" if approved else "Not now."
            client.resume(run.id, event.data["step_key"], approved, feedback)
            print("  -> Approved. Resuming...\n" if approved else "  -> Rejected.\n")
        elif event.type == "tool_call_completed":
            print(f"  {event.data.get('tool')}: {event.data.get('text_preview', '')[:200]}")
        elif event.type == "run_completed":
            print(f"\n{event.data.get('output')}")
        elif event.type == "run_failed":
            print(f"\nThe run failed: {event.data.get('error')}", file=sys.stderr)
            return 1
    return 0 if client.get(run.id)["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
