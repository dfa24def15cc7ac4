"""Runs the notes agent and answers its approvals: the MCP server's write_file asks first.
Prints each tool call as it completes; exits 0 when the run completed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from keel import Client  # noqa: E402


def main() -> int:
    client = Client()
    run = client.invoke("notes", "Write a note about keel's tools and count its lines.")
    print(f"Run {run.id}")
    for event in client.stream(run.id):
        if event.type == "suspend":
            form = event.data.get("form", {})
            context = form.get("context", {})
            print(f"  approval: {form.get('tool')} on MCP server {context.get('server')} with {context.get('arguments')}")
            client.approve(run.id, event.data["step_key"])
        elif event.type == "tool_call_completed":
            print(f"  {event.data.get('tool')}: {event.data.get('text_preview', '')[:120]!r}")
        elif event.type == "run_completed":
            print(event.data.get("output"))
        elif event.type == "run_failed":
            print(f"The run failed: {event.data.get('error')}", file=sys.stderr)
            return 1
    return 0 if client.get(run.id)["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
