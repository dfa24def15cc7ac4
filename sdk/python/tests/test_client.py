"""The Python client against a real `keel dev` (KEEL_BINARY names the keel to start; default the
repository's build/apps/keel): invoke, stream, approve and reject, pick up a stream again from
an event, and what each refusal gets."""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "sdk" / "python"))
from keel import Client, KeelError  # noqa: E402

KEEL = os.environ.get("KEEL_BINARY") or str(ROOT / "build" / "apps" / "keel")

WAITER = {"turns": [
    {"text": "", "tool_calls": [{"name": "wait_for_event", "arguments": {"name": "go", "timeout_seconds": 300}}]},
    {"text": "Got: {{last_tool_result}}"},
]}

TURNS = {"turns": [
    {"text": "Writing it.", "tool_calls": [{"name": "write", "arguments": {"path": "note.txt", "content": "hello\n"}}]},
    {"text": "Result: {{last_tool_result}}"},
]}


class KeelDev:
    def __init__(self):
        self.home = tempfile.mkdtemp(prefix="keel-py-")
        os.chmod(self.home, 0o711)
        Path(self.home, "writer.script.json").write_text(json.dumps(TURNS))
        Path(self.home, "waiter.script.json").write_text(json.dumps(WAITER))
        Path(self.home, "keel.toml").write_text(
            '[agents.writer]\nprovider = "scripted"\nscript = "writer.script.json"\ntools = ["write"]\n'
            '[agents.writer.sandbox]\nworkspace = "%s/ws"\n'
            '[agents.waiter]\nprovider = "scripted"\nscript = "waiter.script.json"\ntools = []\n'
            'workflow_tools = ["wait_for_event"]\n[agents.waiter.sandbox]\nworkspace = "%s/ws"\n'
            '[run_queues.solo]\nconcurrency = 1\nkey_concurrency = 1\n'
            '[agents.lined]\nprovider = "scripted"\nscript = "waiter.script.json"\ntools = []\nrun_queue = "solo"\n'
            'workflow_tools = ["wait_for_event"]\n[agents.lined.sandbox]\nworkspace = "%s/ws"\n' % (self.home, self.home, self.home))
        self.env = dict(os.environ, KEEL_HOME=self.home)
        self.log = open(Path(self.home, "dev.log"), "w")
        self.dev = subprocess.Popen([KEEL, "dev", "--config", f"{self.home}/keel.toml", "--data-dir", f"{self.home}/dev",
                                     "--gateway", "127.0.0.1:0"],
                                    env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        until = time.monotonic() + 60
        while "Press Ctrl-C" not in Path(self.home, "dev.log").read_text():
            if self.dev.poll() is not None or time.monotonic() > until:
                raise RuntimeError("keel dev did not start: " + Path(self.home, "dev.log").read_text())
            time.sleep(0.1)
        self.token = subprocess.run([KEEL, "token", "add", "py-test"], env=self.env, capture_output=True, text=True,
                                    check=True).stdout.strip()
        time.sleep(1.2)  # the gateway reads its tokens again within a second

    def stop(self):
        self.dev.send_signal(2)
        self.dev.wait(60)
        self.log.close()
        subprocess.run(["rm", "-rf", self.home])


class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keel = KeelDev()
        os.environ["KEEL_HOME"] = cls.keel.home
        cls.client = Client(token=cls.keel.token)

    @classmethod
    def tearDownClass(cls):
        cls.keel.stop()

    def test_a_run_is_streamed_whole_in_order_and_approved_from_its_form(self):
        run = self.client.invoke("writer", "Write a note.")
        self.assertTrue(run.created)
        seen = []
        for event in self.client.stream(run.id):
            seen.append(event)
            if event.type == "suspend":
                self.assertTrue(event.data["form"]["context"]["path"].endswith("note.txt"))
                self.assertFalse(self.client.approve(run.id, event.data["step_key"])["duplicate"])
                self.assertTrue(self.client.approve(run.id, event.data["step_key"])["duplicate"])
        self.assertEqual([e.seq for e in seen], list(range(1, len(seen) + 1)))
        self.assertEqual(seen[-1].type, "run_completed")
        self.assertIn("Wrote 6 bytes", seen[-1].data["output"])
        resumed = next(e for e in seen if e.type == "resumed")
        self.assertEqual(resumed.data["by"], "py-test")  # the token's name
        # From an event on: the rest, the same ones.
        rest = [e.seq for e in self.client.stream(run.id, after=3)]
        self.assertEqual(rest, [e.seq for e in seen[3:]])
        self.assertEqual([e.seq for e in self.client.events(run.id)], [e.seq for e in seen])
        self.assertEqual(self.client.get(run.id)["status"], "completed")
        self.assertIn(run.id, [r["run_id"] for r in self.client.list(agent="writer")])

    def test_a_rejection_reaches_the_model_and_the_inbox_empties(self):
        run = self.client.invoke("writer", "Write a note.", idempotency_key="py-reject")
        again = self.client.invoke("writer", "Write a note.", idempotency_key="py-reject")
        self.assertEqual(again.id, run.id)
        self.assertFalse(again.created)
        summary = self.client.wait(run.id, timeout=60)
        self.assertEqual(summary["status"], "suspended")
        key = summary["waiting"]["step_key"]
        self.assertIn(run.id, [a["run_id"] for a in self.client.approvals()])
        self.client.resume(run.id, key, False, "not in this folder")
        with self.assertRaises(KeelError) as e:
            self.client.approve(run.id, key)
        self.assertEqual((e.exception.status, e.exception.code), (409, "conflict"))
        done = self.client.wait(run.id, timeout=60)
        self.assertEqual(done["status"], "completed")
        self.assertIn("not in this folder", done["output"])

    def test_an_event_sent_to_a_waiting_run_is_taken_once(self):
        run = self.client.invoke("waiter", "wait for the go").id
        until = time.monotonic() + 30
        while self.client.get(run)["status"] != "waiting":
            self.assertLess(time.monotonic(), until, "the run never waited")
            time.sleep(0.1)
        sent = self.client.signal(run, "go", {"ship": True}, id="go-1")
        self.assertTrue(sent["delivered"])
        again = self.client.signal(run, "go", {"ship": True}, id="go-1")
        self.assertTrue(again["duplicate"])
        while self.client.get(run)["status"] != "completed":
            self.assertLess(time.monotonic(), until, "the run never ended")
            time.sleep(0.1)
        self.assertIn("ship", self.client.get(run)["output"])
        with self.assertRaises(KeelError) as e:
            self.client.signal(run, "go", id="go-2")  # ended: nothing is kept
        self.assertEqual(e.exception.status, 409)

    def test_a_run_queue_lets_one_go_and_keeps_the_next_in_line(self):
        first = self.client.invoke("lined", "first", concurrency_key="repo-1").id
        second = self.client.invoke("lined", "second", concurrency_key="repo-1").id
        until = time.monotonic() + 30
        while self.client.get(first)["status"] != "waiting" or self.client.get(second)["status"] != "queued":
            self.assertLess(time.monotonic(), until, "the line never formed")
            time.sleep(0.1)
        self.assertEqual(self.client.get(second)["queue"], {"name": "solo", "key": "repo-1",
                                                             "since_ms": self.client.get(second)["queue"]["since_ms"]})
        (solo,) = self.client.queues()
        self.assertEqual((solo["name"], solo["running"], solo["waiting"]), ("solo", 1, 1))
        self.assertEqual(solo["keys"], [{"key": "repo-1", "running": 1, "waiting": 1}])
        self.client.signal(first, "go", "now")
        while self.client.get(second)["status"] != "waiting":
            self.assertLess(time.monotonic(), until, "the second never went")
            time.sleep(0.1)
        self.client.cancel(second, "done")
        with self.assertRaises(KeelError) as e:
            self.client.invoke("writer", "x", concurrency_key="k")  # no run queue
        self.assertEqual((e.exception.status, e.exception.code), (400, "invalid_argument"))

    def test_refusals_say_what_was_wrong(self):
        with self.assertRaises(KeelError) as e:
            self.client.get("not-a-run-id")  # not of keel's form: any orchestrator says so
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(KeelError) as e:
            self.client.invoke("no-such-agent", "x")
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(KeelError) as e:
            Client(token="not-a-token").list()
        self.assertEqual(e.exception.status, 401)
        with self.assertRaises(KeelError) as e:
            Client(url="http://127.0.0.1:9", token="x").list()
        self.assertEqual(e.exception.code, "unavailable")


if __name__ == "__main__":
    unittest.main()
