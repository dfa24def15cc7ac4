"""keel's client for Python, on the HTTP API (docs/HTTP.md) with the standard library only."""

from keel.client import Client, Event, KeelError, Run

__all__ = ["Client", "Event", "KeelError", "Run"]
