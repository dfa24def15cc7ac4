"""Start agent runs, follow their events live, and answer the steps that wait for a person.

The client speaks keel's HTTP API (docs/HTTP.md): JSON requests with a bearer token, and each
run's Server-Sent Events stream, read again from the last event seen when the connection drops,
so that every event arrives once and in order.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

TERMINAL = ("completed", "failed", "cancelled")


class KeelError(Exception):
    """A request keel refused or could not serve: `status` is the HTTP status, `code` the
    protocol's error code (not_found, conflict, invalid_argument, unavailable, ...)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Event:
    run_id: str
    seq: int
    type: str
    time_ms: int
    data: Dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_json(v: Dict[str, Any]) -> "Event":
        return Event(v.get("run_id", ""), int(v.get("seq", 0)), v.get("event_type", ""), int(v.get("time_ms", 0)),
                     v.get("data") or {})


@dataclass
class Run:
    id: str
    created: bool = True


def _context_url(home: Path) -> Optional[str]:
    path = home / "context.toml"
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "dashboard_url":
                value = value.strip()
                return value.strip("'\"") or None
    except OSError:
        return None
    return None


class Client:
    """A keel gateway. `url` defaults to $KEEL_URL, else the dashboard address in
    $KEEL_HOME/context.toml (what `keel dev` writes); `token` to $KEEL_TOKEN (make one with
    `keel token add NAME`)."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 30.0):
        home = Path(os.environ.get("KEEL_HOME") or Path.home() / ".keel")
        url = url or os.environ.get("KEEL_URL") or _context_url(home)
        if not url:
            raise KeelError(0, "invalid_argument", "no keel to reach: pass url, set KEEL_URL, or start `keel dev`")
        self.url = url.rstrip("/")
        self.token = token or os.environ.get("KEEL_TOKEN")
        if not self.token:
            raise KeelError(0, "invalid_argument", "no token: pass token or set KEEL_TOKEN (`keel token add NAME` makes one)")
        self.timeout = timeout

    # ---- requests

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
                 query: Optional[Dict[str, Any]] = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if method != "GET":
            data = json.dumps(body or {}).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read()) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
            raise KeelError(0, "unavailable", f"{url}: {getattr(e, 'reason', e)}") from None

    def invoke(self, agent: str, input: Any, session_id: Optional[str] = None,
               idempotency_key: Optional[str] = None, provider: Optional[str] = None,
               model: Optional[str] = None, concurrency_key: Optional[str] = None) -> Run:
        """Starts a run. `concurrency_key`: its key in the agent's run queue (docs/WORKFLOWS.md)."""
        body = {"agent": agent, "input": input, "session_id": session_id, "idempotency_key": idempotency_key,
                "provider": provider, "model": model, "concurrency_key": concurrency_key}
        r = self._request("POST", "/api/v1/runs", {k: v for k, v in body.items() if v is not None})
        return Run(r["run_id"], r.get("created", True))

    def get(self, run_id: str) -> Dict[str, Any]:
        return self._request("GET", f"/api/v1/runs/{_id(run_id)}")

    def events(self, run_id: str, after: int = 0) -> List[Event]:
        """The run's stored events after `after`, every page."""
        out: List[Event] = []
        while True:
            page = self._request("GET", f"/api/v1/runs/{_id(run_id)}/events", query={"after": after, "limit": 1000})
            got = [Event.from_json(e) for e in page.get("events", [])]
            out += got
            if not page.get("more") or not got:
                return out
            after = got[-1].seq

    def approve(self, run_id: str, step_key: str, always: Optional[str] = None,
                always_scope: Optional[str] = None) -> Dict[str, Any]:
        body = {k: v for k, v in {"always": always, "always_scope": always_scope}.items() if v is not None}
        return self._request("POST", f"/api/v1/runs/{_id(run_id)}/steps/{_id(step_key)}/approve", body)

    def reject(self, run_id: str, step_key: str, feedback: str = "") -> Dict[str, Any]:
        return self._request("POST", f"/api/v1/runs/{_id(run_id)}/steps/{_id(step_key)}/reject", {"feedback": feedback})

    def resume(self, run_id: str, step_key: str, approved: bool, feedback: str = "") -> Dict[str, Any]:
        """The guide's `resume(..., data={"approved": bool, "feedback": ...})`."""
        return self.approve(run_id, step_key) if approved else self.reject(run_id, step_key, feedback)

    def cancel(self, run_id: str, reason: Optional[str] = None) -> Dict[str, Any]:
        return self._request("POST", f"/api/v1/runs/{_id(run_id)}/cancel", {"reason": reason} if reason else {})

    def signal(self, run_id: str, name: str, payload: Any = None, id: Optional[str] = None) -> Dict[str, Any]:
        """An outside event for a run (docs/WORKFLOWS.md): taken by its wait_for_event of that name, or
        kept until it waits. Give `id` to make a retry safe (a repeat is answered with duplicate: true)."""
        body: Dict[str, Any] = {"name": name, "payload": payload}
        if id is not None:
            body["id"] = id
        return self._request("POST", f"/api/v1/runs/{_id(run_id)}/signals", body)

    def retry(self, run_id: str) -> Dict[str, Any]:
        return self._request("POST", f"/api/v1/runs/{_id(run_id)}/retry", {})

    def list(self, status: Optional[str] = None, agent: Optional[str] = None, session_id: Optional[str] = None,
             q: Optional[str] = None, limit: int = 50) -> List[Dict[str, Any]]:
        return self._request("GET", "/api/v1/runs", query={"status": status, "agent": agent, "session_id": session_id,
                                                            "q": q, "limit": limit}).get("runs", [])

    def approvals(self) -> List[Dict[str, Any]]:
        return self._request("GET", "/api/v1/approvals").get("approvals", [])

    def queues(self) -> List[Dict[str, Any]]:
        """The run queues: their limits, the runs going and the runs in line."""
        return self._request("GET", "/api/v1/queues").get("queues", [])

    def wait(self, run_id: str, timeout: float = 600.0, until_suspended: bool = True) -> Dict[str, Any]:
        """Follows the run's stream until it ends (or, with `until_suspended`, waits for a
        person), then returns its summary."""
        deadline = time.monotonic() + timeout
        for event in self.stream(run_id, timeout=timeout):
            # The stream replays the run's history: a suspension answered already is not one to
            # stop at (the run says whether it waits now).
            if until_suspended and event.type == "suspend":
                summary = self.get(run_id)
                if summary.get("status") == "suspended":
                    return summary
            if time.monotonic() > deadline:
                break
        return self.get(run_id)

    # ---- the live stream

    def stream(self, run_id: str, after: int = 0, timeout: float = 3600.0) -> Iterator[Event]:
        """Every event of the run after `after`, once each and in order, live; ends when the run
        has completed, failed or been cancelled. A dropped connection is opened again from the
        last event seen (Last-Event-ID)."""
        parsed = urllib.parse.urlsplit(self.url)
        last = after
        deadline = time.monotonic() + timeout
        failures = 0
        while time.monotonic() < deadline:
            conn = HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
            try:
                conn.request("GET", f"{parsed.path}/api/v1/runs/{_id(run_id)}/stream",
                             headers={"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream",
                                      "Last-Event-ID": str(last)})
                resp = conn.getresponse()
                if resp.status != 200:
                    err = _error(resp.status, resp.read())
                    if err.code in ("unavailable", "timeout") and failures < 30:
                        failures += 1
                        time.sleep(min(2.0, 0.1 * 2 ** failures))
                        continue
                    raise err
                failures = 0
                for kind, data, event_id in _sse(resp):
                    if kind == "end":
                        return
                    if kind == "stream_error":
                        break  # the owner stopped answering: open again from the last event
                    if kind == "message" and data:
                        event = Event.from_json(json.loads(data))
                        if event.seq <= last:
                            continue
                        last = event.seq
                        yield event
            except (ConnectionError, socket.timeout, OSError):
                failures += 1
                if failures > 30:
                    raise KeelError(0, "unavailable", f"the stream of run {run_id} keeps breaking off")
                time.sleep(min(2.0, 0.1 * 2 ** failures))
            finally:
                conn.close()
        raise KeelError(0, "timeout", f"run {run_id} did not end within {timeout} s")


def _id(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _error(status: int, body: bytes) -> KeelError:
    try:
        e = json.loads(body or b"{}").get("error") or {}
        return KeelError(status, e.get("code", "internal"), e.get("message", body.decode(errors="replace")))
    except ValueError:
        return KeelError(status, "internal", body.decode(errors="replace")[:500])


def _sse(resp: HTTPResponse) -> Iterator[tuple]:
    """(event type, data, id) for each event of a text/event-stream (comments skipped)."""
    kind, data, event_id = "message", [], None
    while True:
        raw = resp.readline()
        if not raw:
            return
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data or kind != "message":
                yield kind, "\n".join(data), event_id
            kind, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
