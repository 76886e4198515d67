"""A real local HTTP server that plays a webhook receiver, and helpers to build alert worlds."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from billing.models import Budget
from keys.services import api_key_create
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    # Status codes to answer, in order; then 200 for ever.
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                status = state.script.pop(0) if state.script else 200
                state.received.append(Received(dict(self.headers.items()), body, status))
            reply = b'{"ok": true}' if status < 300 else b"temporarily broken"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/portal"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def spend(group, key, micros: int, at) -> UsageEvent:  # type: ignore[no-untyped-def]
    """Record metered usage of `micros` (what the gateway writes per request)."""
    catalogue_sync()
    return UsageEvent.objects.create(
        request_id=uuid.uuid4().hex, group=group, api_key=key,
        model=AIModel.objects.get(name="sonar"), cost_micros=micros, created_at=at,
    )  # fmt: skip


def budget(group, amount_micros: int, window: str = "monthly", key=None) -> Budget:  # type: ignore[no-untyped-def]
    return Budget.objects.create(
        group=group, api_key=key, amount_micros=amount_micros, window=window
    )


def new_key(group):  # type: ignore[no-untyped-def]
    return api_key_create(group=group, name=f"k-{uuid.uuid4().hex[:6]}").key
