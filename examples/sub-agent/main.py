"""Runs the lead agent; its writer's run asks for approval, which this client finds in the same
inbox (with the chain of runs above it) and approves. Exits 0 when the lead completed."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from keel import Client  # noqa: E402


def main() -> int:
    client = Client()
    lead = client.invoke("lead", "Add a changelog entry for sub-agents.")
    print(f"Run {lead.id} (lead)")
    deadline = time.time() + 120
    while time.time() < deadline:
        for waiting in client.approvals():
            chain = " -> ".join(waiting.get("chain", []) + [waiting["run_id"]])
            form = waiting.get("form", {})
            print(f"  approval in {chain}: {form.get('tool')} {form.get('context', {}).get('path', '')}")
            client.approve(waiting["run_id"], waiting["step_key"])
        shown = client.get(lead.id)
        if shown["status"] in ("completed", "failed", "cancelled"):
            for child in shown.get("children", []):
                print(f"  sub-agent run {child['run_id']} (agent {child['agent']})")
            print(f"  tokens: lead {shown['usage']['input_tokens']} in, with sub-agents {shown['total_usage']['input_tokens']} in")
            print(shown.get("output") or shown.get("error"))
            return 0 if shown["status"] == "completed" else 1
        time.sleep(0.3)
    print("the lead did not finish in time", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
