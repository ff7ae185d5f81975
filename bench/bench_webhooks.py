"""Benchmark of webhook delivery (issue 7), in one process, against a receiver on 127.0.0.1.

Prints, from one run:

1. ``build_webhook_payload`` for a small result and for a 512 KiB result (cut to fit 20 KB);
2. ``sign_headers`` with one and with two secrets (key rotation);
3. ``check_webhook_url`` (the SSRF policy) with a static resolver;
4. one delivery attempt (``attempt_delivery``: policy check, connect to the checked address,
   POST) p50/p99, against the in-run comparison: a plain httpx POST of the same body to the
   same receiver with a fresh client each time (building its TLS context, or sharing one, as
   attempt_delivery does), and with one reused client.

Usage: ``python bench/bench_webhooks.py`` or ``--smoke`` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
from agentrun_contract.resource import AgentRun, AgentRunSpec, AgentRunStatus, ObjectMeta, Phase
from agentrun_webhooks.delivery import AttemptKind, attempt_delivery
from agentrun_webhooks.payload import build_webhook_payload
from agentrun_webhooks.policy import StaticResolver, WebhookPolicySettings, check_webhook_url
from agentrun_webhooks.receiver import WebhookReceiver
from agentrun_webhooks.settings import WebhookDeliverySettings
from agentrun_webhooks.signing import generate_secret, sign_headers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{label:<58} p50 {percentile(ms, 0.5):8.3f} ms  p99 {percentile(ms, 0.99):8.3f} ms"
        f"  mean {statistics.fmean(ms):8.3f} ms  (n={len(ms)})"
    )


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


async def timed_async(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


def finished_run() -> AgentRun:
    return AgentRun(
        metadata=ObjectMeta(name="run-bench", namespace="default"),
        spec=AgentRunSpec(prompt="p", webhook_url="https://hooks.example.com/x"),
        status=AgentRunStatus(
            phase=Phase.SUCCEEDED, completed_at=datetime.now(UTC), duration_seconds=1.0
        ),
    )


async def main(smoke: bool) -> None:
    n = 30 if smoke else 500
    run = finished_run()
    small = build_webhook_payload(run, "short result", "https://agents.example.com")
    big_result = "x" * (512 * 1024)
    report("payload, 12 B result", timed(lambda: build_webhook_payload(run, "r", "h"), n))
    report(
        "payload, 512 KiB result (cut to fit 20 KB)",
        timed(lambda: build_webhook_payload(run, big_result, "h"), max(5, n // 10)),
    )
    one, two = [generate_secret()], [generate_secret(), generate_secret()]
    now = datetime.now(UTC)
    report("sign_headers, 1 secret", timed(lambda: sign_headers("msg_x", small, one, now), n))
    report("sign_headers, 2 secrets", timed(lambda: sign_headers("msg_x", small, two, now), n))
    policy = WebhookPolicySettings(allow_loopback=True)
    resolver = StaticResolver({"hooks.example.com": ["93.184.216.34"]})
    report(
        "check_webhook_url (static resolver)",
        await timed_async(
            lambda: check_webhook_url(
                "https://hooks.example.com/h", policy, resolver=resolver, at_submit=False
            ),
            n,
        ),
    )

    receiver = WebhookReceiver().start()
    try:
        settings = WebhookDeliverySettings()
        headers = sign_headers("msg_bench", small, one, now)
        url = receiver.url

        async def attempt() -> None:
            outcome = await attempt_delivery(url, small, headers, policy, settings)
            assert outcome.kind is AttemptKind.DELIVERED, outcome

        async def plain_fresh() -> None:
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.post(url, content=small, headers=headers)
                assert response.status_code == 204

        context = httpx.create_ssl_context()

        async def plain_fresh_shared_tls() -> None:
            async with httpx.AsyncClient(trust_env=False, verify=context) as client:
                response = await client.post(url, content=small, headers=headers)
                assert response.status_code == 204

        await attempt()  # warm up
        attempts = await timed_async(attempt, n)
        fresh = await timed_async(plain_fresh, n)
        fresh_shared = await timed_async(plain_fresh_shared_tls, n)
        async with httpx.AsyncClient(trust_env=False) as shared:

            async def plain_reused() -> None:
                response = await shared.post(url, content=small, headers=headers)
                assert response.status_code == 204

            reused = await timed_async(plain_reused, n)
        report("attempt_delivery (policy + checked IP + POST)", attempts)
        report("comparison: httpx POST, fresh client (builds a TLS context)", fresh)
        report("comparison: httpx POST, fresh client, shared TLS context", fresh_shared)
        report("comparison: httpx POST, reused client", reused)
        ratio = percentile(attempts, 0.5) / percentile(fresh_shared, 0.5)
        print(f"attempt_delivery / fresh-client POST (shared TLS context), p50 ratio: {ratio:.2f}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI size")
    args = parser.parse_args()
    asyncio.run(main(args.smoke))
