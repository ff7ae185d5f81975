"""One delivery attempt over real HTTP to a receiver on 127.0.0.1 (no cluster needed)."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import httpx
import pytest
from agentrun_webhooks.delivery import AttemptKind, attempt_delivery
from agentrun_webhooks.policy import StaticResolver, WebhookPolicySettings
from agentrun_webhooks.receiver import Answer, WebhookReceiver, payload_of
from agentrun_webhooks.settings import WebhookDeliverySettings
from agentrun_webhooks.signing import new_webhook_id, sign_headers

DEV = WebhookPolicySettings(allow_loopback=True)
FAST = WebhookDeliverySettings(attempt_timeout_seconds=1.0)


def signed(receiver: WebhookReceiver, body: bytes, webhook_id: str = "msg_t") -> dict[str, str]:
    return sign_headers(webhook_id, body, [receiver.secret], datetime.now(UTC))


async def test_2xx_is_delivered_and_signature_verifies(receiver: WebhookReceiver) -> None:
    body = b'{"job_id":"run_x","status":"succeeded"}'
    webhook_id = new_webhook_id()
    outcome = await attempt_delivery(
        receiver.url + "?q=1", body, signed(receiver, body, webhook_id), DEV, FAST
    )
    assert outcome.kind is AttemptKind.DELIVERED
    assert outcome.status_code == 204
    (item,) = receiver.wait_for(1)
    assert item.verification_error is None
    assert item.verified == payload_of(item) == {"job_id": "run_x", "status": "succeeded"}
    assert item.headers["webhook-id"] == webhook_id
    assert item.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert item.headers["content-type"] == "application/json"
    assert item.path == "/hook?q=1"


@pytest.mark.parametrize(
    ("answer", "kind", "retry_after"),
    [
        (Answer(status=500), AttemptKind.HTTP_ERROR, None),
        (Answer(status=503, headers={"Retry-After": "42"}), AttemptKind.HTTP_ERROR, 42.0),
        (Answer(status=410), AttemptKind.GONE, None),
        (Answer(status=302, headers={"Location": "http://10.0.0.1/"}), AttemptKind.REDIRECT, None),
    ],
)
async def test_non_2xx_outcomes(
    receiver: WebhookReceiver, answer: Answer, kind: AttemptKind, retry_after: float | None
) -> None:
    receiver.script(answer)
    outcome = await attempt_delivery(receiver.url, b"{}", signed(receiver, b"{}"), DEV, FAST)
    assert outcome.kind is kind
    assert outcome.status_code == answer.status
    assert outcome.retry_after_seconds == retry_after
    # exactly one request: a redirect is not followed
    await asyncio.sleep(0.2)
    assert len(receiver.received) == 1


async def test_timeout_is_an_outcome(receiver: WebhookReceiver) -> None:
    receiver.script(Answer(delay_seconds=5))
    loop = asyncio.get_running_loop()
    started = loop.time()
    settings = WebhookDeliverySettings(attempt_timeout_seconds=0.3)
    outcome = await attempt_delivery(receiver.url, b"{}", {}, DEV, settings)
    assert outcome.kind is AttemptKind.TIMEOUT
    assert "timed out after 0.3s" in (outcome.error or "")
    assert loop.time() - started < 4  # did not wait for the receiver's 5 s


async def test_connection_refused_is_an_outcome() -> None:
    outcome = await attempt_delivery("http://127.0.0.1:9/hook", b"{}", {}, DEV, FAST)
    assert outcome.kind is AttemptKind.CONNECT_ERROR
    assert "could not connect" in (outcome.error or "")


async def test_refused_by_policy_without_any_request(receiver: WebhookReceiver) -> None:
    outcome = await attempt_delivery(receiver.url, b"{}", {}, WebhookPolicySettings(), FAST)
    assert outcome.kind is AttemptKind.REFUSED
    assert "loopback" in (outcome.error or "")
    outcome = await attempt_delivery(
        "http://nowhere.example.com/", b"{}", {}, DEV, FAST, StaticResolver({})
    )
    assert outcome.kind is AttemptKind.UNRESOLVED
    await asyncio.sleep(0.1)
    assert receiver.received == []


async def test_connects_to_the_checked_address_not_a_second_lookup(
    receiver: WebhookReceiver,
) -> None:
    """DNS rebinding: the name is resolved once, by the policy check, and the connection goes
    to that address with the original Host header."""

    class Rebinding:
        calls = 0

        async def resolve(self, host: str, port: int) -> Sequence[str]:
            self.calls += 1
            # first answer (checked, allowlisted loopback); any later answer would be evil
            return ["127.0.0.1"] if self.calls == 1 else ["10.0.0.1"]

    resolver = Rebinding()
    url = f"http://hooks.example.com:{receiver.port}/hook"
    outcome = await attempt_delivery(url, b"{}", {}, DEV, FAST, resolver)
    assert outcome.kind is AttemptKind.DELIVERED
    assert outcome.address == "127.0.0.1"
    assert resolver.calls == 1
    (item,) = receiver.wait_for(1)
    assert item.headers["host"] == f"hooks.example.com:{receiver.port}"


async def test_tries_the_next_checked_address_when_one_refuses_connections(
    receiver: WebhookReceiver,
) -> None:
    # ::1 may not be listened on (the receiver binds 127.0.0.1): the attempt moves on.
    resolver = StaticResolver({"dual.example.com": ["::1", "127.0.0.1"]})
    url = f"http://dual.example.com:{receiver.port}/hook"
    outcome = await attempt_delivery(url, b"{}", {}, DEV, FAST, resolver)
    assert outcome.kind is AttemptKind.DELIVERED
    assert outcome.address == "127.0.0.1"


@pytest.fixture
def proxy() -> Iterator[list[str]]:
    """An HTTP 'proxy' on 127.0.0.1 that records whatever reaches it."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen.append(f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_proxy_variables_are_ignored(
    receiver: WebhookReceiver, proxy: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_url = proxy.pop(0)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    outcome = await attempt_delivery(receiver.url, b"{}", {}, DEV, FAST)
    assert outcome.kind is AttemptKind.DELIVERED
    assert len(receiver.wait_for(1)) == 1
    assert proxy == []  # nothing went through the proxy


@pytest.fixture
def tls_receiver() -> Iterator[tuple[int, ssl.SSLContext, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for hooks.example.com from a test CA;
    yields (port, a client context trusting that CA, the SNI names it was asked for)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.com").configure_cert(server_context)
    sni: list[str] = []
    server_context.sni_callback = lambda _sock, name, _ctx: sni.append(name or "")  # type: ignore[assignment]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    try:
        yield int(server.server_address[1]), client_context, sni
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_https_to_the_checked_address_verifies_the_url_host(
    tls_receiver: tuple[int, ssl.SSLContext, list[str]],
) -> None:
    port, client_context, sni = tls_receiver
    resolver = StaticResolver(
        {"hooks.example.com": ["127.0.0.1"], "other.example.com": ["127.0.0.1"]}
    )
    outcome = await attempt_delivery(
        f"https://hooks.example.com:{port}/h",
        b"{}",
        {},
        DEV,
        FAST,
        resolver,
        transport=httpx.AsyncHTTPTransport(verify=client_context),
    )
    assert outcome.kind is AttemptKind.DELIVERED, outcome
    assert outcome.address == "127.0.0.1"
    assert sni == ["hooks.example.com"]  # SNI is the URL's host, not the IP connected to
    # the certificate is checked against the URL's host too: a name it does not cover fails
    outcome = await attempt_delivery(
        f"https://other.example.com:{port}/h",
        b"{}",
        {},
        DEV,
        FAST,
        resolver,
        transport=httpx.AsyncHTTPTransport(verify=client_context),
    )
    assert outcome.kind is AttemptKind.CONNECT_ERROR
    assert "certificate" in (outcome.error or "").lower()
