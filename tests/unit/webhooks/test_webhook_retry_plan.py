"""The pure retry plan: delivered, retry with jitter, Retry-After, 410, exhaustion, total time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from agentrun_contract.resource import WebhookDelivery, WebhookState
from agentrun_webhooks.delivery import (
    AttemptKind,
    AttemptOutcome,
    due_at,
    parse_retry_after,
    pending_delivery,
    plan_after_attempt,
    redelivery,
)
from agentrun_webhooks.settings import WebhookDeliverySettings

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
NO_JITTER = WebhookDeliverySettings(jitter_ratio=0)
FAIL_500 = AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=500, error="HTTP 500")
OK = AttemptOutcome(kind=AttemptKind.DELIVERED, status_code=204)


def rng() -> random.Random:
    return random.Random(7)


def test_delivered_on_2xx() -> None:
    state = plan_after_attempt(pending_delivery("msg_a"), OK, NO_JITTER, T0, rng())
    assert state.state is WebhookState.DELIVERED
    assert (state.id, state.attempts, state.last_status_code) == ("msg_a", 1, 204)
    assert state.delivered_at == T0
    assert state.next_attempt_at is None
    assert state.last_error is None


def test_default_schedule_is_standard_webhooks_and_capped_at_24h() -> None:
    state = pending_delivery("msg_b")
    now = T0
    gaps: list[float] = []
    while state.state is WebhookState.PENDING:
        state = plan_after_attempt(state, FAIL_500, NO_JITTER, now, rng())
        if state.next_attempt_at is not None:
            gaps.append((state.next_attempt_at - now).total_seconds())
            now = state.next_attempt_at
    # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h; the last 10 h would pass 24 h after the first
    assert gaps == [5, 300, 1800, 7200, 18000, 36000]
    assert state.state is WebhookState.FAILED
    assert state.attempts == 7
    assert "gave up after 7 attempts" in (state.last_error or "")
    assert (now - T0).total_seconds() <= 24 * 3600
    assert state.id == "msg_b"


def test_schedule_exhausted_fails() -> None:
    settings = WebhookDeliverySettings(retry_schedule_seconds=[0, 1], jitter_ratio=0)
    state = plan_after_attempt(pending_delivery(), FAIL_500, settings, T0, rng())
    assert state.state is WebhookState.PENDING
    assert state.next_attempt_at == T0 + timedelta(seconds=1)
    state = plan_after_attempt(state, FAIL_500, settings, T0 + timedelta(seconds=1), rng())
    assert state.state is WebhookState.FAILED
    assert state.attempts == 2
    assert "retry schedule exhausted" in (state.last_error or "")
    assert "HTTP 500" in (state.last_error or "")


def test_jitter_spreads_delays_within_bounds() -> None:
    settings = WebhookDeliverySettings(retry_schedule_seconds=[0, 100], jitter_ratio=0.2)
    generator = random.Random(1)
    delays = set()
    for _ in range(200):
        state = plan_after_attempt(pending_delivery(), FAIL_500, settings, T0, generator)
        assert state.next_attempt_at is not None
        delay = (state.next_attempt_at - T0).total_seconds()
        assert 80 <= delay <= 120
        delays.add(round(delay, 3))
    assert len(delays) > 50


def test_retry_after_delays_but_never_advances() -> None:
    settings = WebhookDeliverySettings(retry_schedule_seconds=[0, 10, 10], jitter_ratio=0)
    later = AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=503, retry_after_seconds=120)
    state = plan_after_attempt(pending_delivery(), later, settings, T0, rng())
    assert state.next_attempt_at == T0 + timedelta(seconds=120)
    sooner = AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=429, retry_after_seconds=1)
    state = plan_after_attempt(pending_delivery(), sooner, settings, T0, rng())
    assert state.next_attempt_at == T0 + timedelta(seconds=10)
    capped = WebhookDeliverySettings(
        retry_schedule_seconds=[0, 10], jitter_ratio=0, retry_after_max_seconds=60
    )
    huge = AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=503, retry_after_seconds=1e9)
    state = plan_after_attempt(pending_delivery(), huge, capped, T0, rng())
    assert state.next_attempt_at == T0 + timedelta(seconds=60)


def test_retry_after_beyond_total_time_fails() -> None:
    settings = WebhookDeliverySettings(
        retry_schedule_seconds=[0, 1], jitter_ratio=0, max_total_seconds=30
    )
    outcome = AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=503, retry_after_seconds=60)
    state = plan_after_attempt(pending_delivery(), outcome, settings, T0, rng())
    assert state.state is WebhookState.FAILED
    assert "more than 30s after the first" in (state.last_error or "")


def test_gone_stops_at_once() -> None:
    gone = AttemptOutcome(kind=AttemptKind.GONE, status_code=410, error="receiver answered 410")
    state = plan_after_attempt(pending_delivery(), gone, NO_JITTER, T0, rng())
    assert state.state is WebhookState.FAILED
    assert state.attempts == 1
    assert state.last_status_code == 410
    assert "410 Gone" in (state.last_error or "")


def test_policy_refusal_is_final_but_dns_failure_retries() -> None:
    refused = AttemptOutcome(kind=AttemptKind.REFUSED, error="webhook_url ... is refused")
    assert plan_after_attempt(pending_delivery(), refused, NO_JITTER, T0, rng()).state is (
        WebhookState.FAILED
    )
    for kind in (
        AttemptKind.UNRESOLVED,
        AttemptKind.TIMEOUT,
        AttemptKind.CONNECT_ERROR,
        AttemptKind.REDIRECT,
    ):
        outcome = AttemptOutcome(kind=kind, error=kind.value)
        state = plan_after_attempt(pending_delivery(), outcome, NO_JITTER, T0, rng())
        assert state.state is WebhookState.PENDING, kind
        assert state.last_error == kind.value


def test_first_attempt_time_is_kept_across_attempts() -> None:
    state = plan_after_attempt(pending_delivery(), FAIL_500, NO_JITTER, T0, rng())
    later = T0 + timedelta(seconds=5)
    state = plan_after_attempt(state, FAIL_500, NO_JITTER, later, rng())
    assert state.first_attempt_at == T0
    assert state.last_attempt_at == later
    assert state.attempts == 2


def test_long_error_is_clipped() -> None:
    outcome = AttemptOutcome(kind=AttemptKind.CONNECT_ERROR, error="e" * 10_000)
    state = plan_after_attempt(pending_delivery(), outcome, NO_JITTER, T0, rng())
    assert len(state.last_error or "") <= 4096
    WebhookDelivery.model_validate(state.to_k8s())  # still a valid status


def test_due_at() -> None:
    settings = WebhookDeliverySettings(retry_schedule_seconds=[2, 5])
    fresh = pending_delivery()
    assert due_at(fresh, T0, settings) == T0 + timedelta(seconds=2)
    planned = fresh.model_copy(update={"next_attempt_at": T0 + timedelta(hours=1)})
    assert due_at(planned, T0, settings) == T0 + timedelta(hours=1)
    done = fresh.model_copy(update={"state": WebhookState.DELIVERED})
    assert due_at(done, T0, settings) is None


def test_redelivery_keeps_the_id_and_restarts_the_schedule() -> None:
    delivered = plan_after_attempt(pending_delivery("msg_keep"), OK, NO_JITTER, T0, rng())
    again = redelivery(delivered, "2")
    assert again.state is WebhookState.PENDING
    assert again.id == "msg_keep"
    assert (again.attempts, again.first_attempt_at, again.next_attempt_at) == (0, None, None)
    assert again.redeliver_token == "2"
    assert again.delivered_at is None
    fresh = redelivery(None, "x")
    assert fresh.state is WebhookState.PENDING
    assert fresh.id.startswith("msg_")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Sun, 29 Nov 2026 10:01:00 GMT", 60.0),
        ("Sun, 29 Nov 2026 09:00:00 GMT", 0.0),
        ("soon", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, T0) == seconds
