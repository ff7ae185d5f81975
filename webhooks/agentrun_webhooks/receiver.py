"""A small webhook receiver that verifies Standard Webhooks signatures: for tests and for
trying webhooks locally with ``agentrun dev``.

    python -m agentrun_webhooks.receiver --port 9000 --secret whsec_...

prints every webhook it receives, with whether its signature verified. In tests,
:class:`WebhookReceiver` runs on its own event loop in a daemon thread (so it answers while a
test or an operator thread blocks); :meth:`WebhookReceiver.script` sets its next answers
(status, headers, delay) and :attr:`WebhookReceiver.received` records what arrived.

Needs aiohttp (the ``dev`` extra); the operator never imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agentrun_webhooks.signing import generate_secret


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""
    wall: float
    """time.time() when the request arrived."""
    verified: Any
    """The JSON payload if the signature verified, else None."""
    verification_error: str | None
    answered: int


class WebhookReceiver:
    def __init__(self, secret: str | None = None, port: int = 0) -> None:
        self.secret = secret or generate_secret()
        self.received: list[Received] = []
        self._answers: dict[str | None, list[Answer]] = {}
        self.default = Answer()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def url_for(self, name: str) -> str:
        """A URL of its own for one test case: its answers and records are kept apart."""
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def script(self, *answers: Answer, path: str | None = None) -> None:
        """Answer the next requests (to ``path``, e.g. ``/hook/x``, or to any path) with these,
        in order, then with :attr:`default`."""
        with self._lock:
            self._answers.setdefault(path, []).extend(answers)

    def requests(self, path: str | None = None) -> list[Received]:
        """What arrived (at ``path`` only, if given)."""
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def wait_for(
        self, count: int, timeout: float = 30.0, path: str | None = None
    ) -> list[Received]:
        """Block until ``count`` requests (to ``path``, if given) arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests(path)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"expected {count} webhook requests to {path or 'any path'} within {timeout}s, "
            f"got {len(self.requests(path))}"
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived, arrived_wall = time.monotonic(), time.time()
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified: Any = None
        error: str | None = None
        try:
            verified = Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            queue = self._answers.get(request.path) or self._answers.get(None) or []
            answer = queue.pop(0) if queue else self.default
            # Recorded on arrival: a request the sender abandons (timeout) still counts.
            self.received.append(
                Received(
                    path=request.path_qs,
                    headers=headers,
                    body=body,
                    at=arrived,
                    wall=arrived_wall,
                    verified=verified,
                    verification_error=error,
                    answered=answer.status,
                )
            )
        if answer.delay_seconds:
            await asyncio.sleep(answer.delay_seconds)
        return web.Response(status=answer.status, headers=answer.headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def payload_of(item: Received) -> dict[str, Any]:
    """The JSON body of a received webhook."""
    value = json.loads(item.body)
    if not isinstance(value, dict):
        raise ValueError("webhook body is not a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Receive and verify agentrun webhooks.")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--secret", default=None, help="signing secret (whsec_...); default: a new one, printed"
    )
    args = parser.parse_args(argv)
    receiver = WebhookReceiver(secret=args.secret, port=args.port).start()
    print(f"listening on {receiver.url}  secret: {receiver.secret}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            items = receiver.received[seen:]
            seen += len(items)
            for item in items:
                state = "verified" if item.verification_error is None else item.verification_error
                print(
                    f"{item.headers.get('webhook-id')} [{state}] {item.body.decode()}", flush=True
                )
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
