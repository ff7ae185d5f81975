"""A finished run with a webhook URL gets a pending delivery that the webhook handlers deliver;
every phase change is a Kubernetes Event."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import operator_harness as h
import pytest
from agentrun_devcluster.system import SyncKube

StartOperator = Callable[..., h.OperatorProcess]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append({"body": json.loads(body), "id": self.headers.get("webhook-id")})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_webhook_pending_then_delivered_and_phase_events(
    k: SyncKube, start_operator: StartOperator, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    h.create_credentials(k)
    start_operator()
    h.make_run(k, "wh-1", "hello", webhookUrl=url)
    run = h.wait_transcript_complete(k, "wh-1")
    assert run["status"]["phase"] == "Succeeded"
    assert run["status"]["webhook"]["id"]
    k.wait_for("webhook delivered", lambda: received, timeout=30)
    assert received[0]["body"]["job_id"] == "wh-1"
    assert received[0]["body"]["status"] == "succeeded"
    assert received[0]["id"] == run["status"]["webhook"]["id"]
    k.wait_for(
        "delivered recorded",
        lambda: (h.get_run(k, "wh-1")["status"].get("webhook") or {}).get("state") == "delivered",
        timeout=30,
    )
    events = [
        e
        for e in k.items("/api/v1/namespaces/default/events")
        if (e.get("involvedObject") or {}).get("name") == "wh-1"
    ]
    reasons = [e["reason"] for e in events]
    for phase in ("Queued", "Running", "Succeeded"):
        assert phase in reasons, reasons
