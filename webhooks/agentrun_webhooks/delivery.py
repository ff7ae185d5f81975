"""One delivery attempt, and the pure plan of what happens after it.

:func:`attempt_delivery` sends one POST:

- the URL is checked again with the policy (:func:`agentrun_webhooks.policy.check_webhook_url`,
  ``at_submit=False``) and the connection goes to an address that check accepted, with the
  ``Host`` header and the TLS server name (SNI, and so certificate verification) set to the URL's
  host: there is no second DNS lookup for a rebinding attacker to answer differently;
- ``trust_env=False`` (proxy variables cannot route around the check), no redirects followed (a
  3xx is a failed attempt), one timeout for the whole attempt.

:func:`plan_after_attempt` turns the outcome into the next durable
:class:`~agentrun_contract.resource.WebhookDelivery`: any 2xx is delivered; 410 Gone and a URL
refused by the policy fail at once; anything else retries on the schedule, with jitter, never
earlier than a ``Retry-After``, until the schedule or the total time runs out.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Final

import httpx
from agentrun_contract import limits
from agentrun_contract.resource import WebhookDelivery, WebhookState

from agentrun_webhooks.policy import (
    Resolver,
    WebhookPolicySettings,
    WebhookURLRefused,
    check_webhook_url,
)
from agentrun_webhooks.settings import WebhookDeliverySettings
from agentrun_webhooks.signing import new_webhook_id

GONE: Final = 410


class AttemptKind(enum.StrEnum):
    """What became of one attempt (also the ``outcome`` label of the attempts metric)."""

    DELIVERED = "delivered"
    HTTP_ERROR = "http_error"
    GONE = "gone"
    REDIRECT = "redirect"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    UNRESOLVED = "unresolved"
    REFUSED = "refused"
    CONFIG_ERROR = "config_error"
    """Not sent: the operator's own configuration (e.g. a signing secret) is unusable."""


@dataclass(frozen=True)
class AttemptOutcome:
    kind: AttemptKind
    status_code: int | None = None
    error: str | None = None
    retry_after_seconds: float | None = None
    """From a non-2xx answer's Retry-After, in seconds (an HTTP date is converted)."""
    address: str | None = None
    """The address the request went to (or last tried)."""

    @property
    def delivered(self) -> bool:
        return self.kind is AttemptKind.DELIVERED

    @property
    def final(self) -> bool:
        """No retry can help: 410 Gone, or a URL the policy refuses."""
        return self.kind in (AttemptKind.GONE, AttemptKind.REFUSED)


def pending_delivery(webhook_id: str | None = None) -> WebhookDelivery:
    """A new delivery, to be set as ``status.webhook`` when a run with a webhook_url ends."""
    return WebhookDelivery(state=WebhookState.PENDING, id=webhook_id or new_webhook_id())


def redelivery(state: WebhookDelivery | None, token: str) -> WebhookDelivery:
    """The delivery after ``agentrun.dev/redeliver=<token>``: pending again, from the first
    attempt of the schedule, with the *same* webhook-id (Standard Webhooks: the id identifies
    the message and stays the same when it is re-sent, so a receiver that already processed
    it can recognise it). A missing state (never delivered) gets a new id."""
    if state is None:
        return pending_delivery().model_copy(update={"redeliver_token": token})
    return state.model_copy(
        update={
            "state": WebhookState.PENDING,
            "attempts": 0,
            "first_attempt_at": None,
            "next_attempt_at": None,
            "delivered_at": None,
            "redeliver_token": token,
        }
    )


def due_at(
    state: WebhookDelivery, completed_at: datetime | None, settings: WebhookDeliverySettings
) -> datetime | None:
    """When the next attempt of a pending delivery is due (None when not pending). A fresh
    delivery waits the schedule's first delay (normally 0) from the run's end."""
    if state.state is not WebhookState.PENDING:
        return None
    if state.next_attempt_at is not None:
        return _aware(state.next_attempt_at)
    base = _aware(completed_at) if completed_at is not None else datetime.fromtimestamp(0, UTC)
    return base + timedelta(seconds=settings.retry_schedule_seconds[0])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _clip(message: str | None) -> str | None:
    if message is None or len(message) <= limits.MESSAGE_MAX_CHARS:
        return message
    return message[: limits.MESSAGE_MAX_CHARS - 3] + "..."


def describe_outcome(outcome: AttemptOutcome) -> str:
    """A one-line account of a failed attempt (for lastError and the Kubernetes Event)."""
    if outcome.error:
        return outcome.error
    if outcome.status_code is not None:
        return f"receiver answered HTTP {outcome.status_code}"
    return outcome.kind.value


def plan_after_attempt(
    state: WebhookDelivery,
    outcome: AttemptOutcome,
    schedule: WebhookDeliverySettings,
    now: datetime,
    rng: random.Random,
) -> WebhookDelivery:
    """The delivery state to record after an attempt made at ``now`` (pure).

    Attempt n (1-based) is followed, if it failed and may be retried, by attempt n+1 after
    ``retry_schedule_seconds[n]`` times a jitter factor in [1-j, 1+j], or after the (capped)
    Retry-After when that is later. No attempt is planned past ``max_total_seconds`` after the
    first attempt, nor beyond the schedule's length: the delivery then fails."""
    now = _aware(now)
    attempts = state.attempts + 1
    first = _aware(state.first_attempt_at) if state.first_attempt_at is not None else now
    common: dict[str, object] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "first_attempt_at": first,
    }
    if outcome.delivered:
        return state.model_copy(
            update={
                **common,
                "state": WebhookState.DELIVERED,
                "delivered_at": now,
                "next_attempt_at": None,
                "last_error": None,
            }
        )
    error = describe_outcome(outcome)

    def failed(why: str) -> WebhookDelivery:
        return state.model_copy(
            update={
                **common,
                "state": WebhookState.FAILED,
                "next_attempt_at": None,
                "last_error": _clip(why),
            }
        )

    if outcome.final:
        stop = "stopped: the receiver answered 410 Gone" if outcome.kind is AttemptKind.GONE else ""
        return failed(f"{error}; {stop}" if stop else error)
    delays = schedule.retry_schedule_seconds
    if attempts >= len(delays):
        return failed(f"{error}; gave up after {attempts} attempts (retry schedule exhausted)")
    delay = delays[attempts] * rng.uniform(1 - schedule.jitter_ratio, 1 + schedule.jitter_ratio)
    if outcome.retry_after_seconds is not None:
        delay = max(delay, min(outcome.retry_after_seconds, schedule.retry_after_max_seconds))
    next_at = now + timedelta(seconds=delay)
    if (next_at - first).total_seconds() > schedule.max_total_seconds:
        return failed(
            f"{error}; gave up after {attempts} attempts: the next would start more than "
            f"{schedule.max_total_seconds:g}s after the first"
        )
    return state.model_copy(
        update={
            **common,
            "state": WebhookState.PENDING,
            "next_attempt_at": next_at,
            "last_error": _clip(error),
        }
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or
    unreadable; never negative."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, (_aware(when) - _aware(now)).total_seconds())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every attempt: building one (loading the CA bundle) costs
    tens of milliseconds of CPU on the event loop. Only the context is shared; each attempt has
    its own client and connections, so a TLS session verified for one host name never carries a
    request for another host on the same address."""
    return httpx.create_ssl_context()


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[scheme]
    return shown if port == default else f"{shown}:{port}"


async def attempt_delivery(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: WebhookPolicySettings,
    settings: WebhookDeliverySettings,
    resolver: Resolver | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AttemptOutcome:
    """Send one attempt; never raises for network or HTTP problems (they are outcomes).

    ``transport`` is for tests only (httpx's default transport otherwise)."""
    started = time.monotonic()
    try:
        target = await check_webhook_url(url, policy, resolver=resolver, at_submit=False)
    except WebhookURLRefused as exc:
        kind = AttemptKind.UNRESOLVED if exc.retryable else AttemptKind.REFUSED
        return AttemptOutcome(kind=kind, error=exc.message)
    remaining = settings.attempt_timeout_seconds - (time.monotonic() - started)
    if remaining <= 0:
        return AttemptOutcome(
            kind=AttemptKind.TIMEOUT,
            error=f"timed out after {settings.attempt_timeout_seconds:g}s (DNS lookup)",
        )
    request_headers = {
        **dict(headers),
        "host": _host_header(target.host, target.port, target.scheme),
        "user-agent": settings.user_agent,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    last = AttemptOutcome(kind=AttemptKind.CONNECT_ERROR, error="no address to connect to")
    async with httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(settings.attempt_timeout_seconds),
        transport=transport,
        verify=_tls_context(),
    ) as client:
        try:
            async with asyncio.timeout(remaining):
                for address in target.addresses:
                    request = client.build_request(
                        "POST",
                        httpx.URL(
                            scheme=target.scheme,
                            host=address,
                            port=target.port,
                            raw_path=target.target.encode("ascii"),
                        ),
                        content=body,
                        headers=request_headers,
                        extensions=extensions,
                    )
                    try:
                        response = await client.send(request, stream=True)
                    except httpx.ConnectError as exc:
                        last = AttemptOutcome(
                            kind=AttemptKind.CONNECT_ERROR,
                            error=f"could not connect to {target.host} ({address}): "
                            f"{exc or type(exc).__name__}",
                            address=address,
                        )
                        continue  # the next checked address, if any
                    await response.aclose()  # the body is not needed
                    return _classify(response, address, datetime.now(UTC))
        except (TimeoutError, httpx.TimeoutException):
            return AttemptOutcome(
                kind=AttemptKind.TIMEOUT,
                error=f"timed out after {settings.attempt_timeout_seconds:g}s",
            )
        except httpx.HTTPError as exc:
            return AttemptOutcome(
                kind=AttemptKind.CONNECT_ERROR,
                error=f"request to {target.host} failed: {type(exc).__name__}: {exc}",
            )
    return last


def _classify(response: httpx.Response, address: str, now: datetime) -> AttemptOutcome:
    code = response.status_code
    if 200 <= code < 300:
        return AttemptOutcome(kind=AttemptKind.DELIVERED, status_code=code, address=address)
    if code == GONE:
        return AttemptOutcome(
            kind=AttemptKind.GONE,
            status_code=code,
            error="receiver answered HTTP 410 Gone",
            address=address,
        )
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        return AttemptOutcome(
            kind=AttemptKind.REDIRECT,
            status_code=code,
            error=f"receiver answered HTTP {code} redirect to {location[:200]!r}; redirects "
            "are not followed: configure the final URL",
            address=address,
        )
    return AttemptOutcome(
        kind=AttemptKind.HTTP_ERROR,
        status_code=code,
        error=f"receiver answered HTTP {code}",
        retry_after_seconds=parse_retry_after(response.headers.get("retry-after"), now),
        address=address,
    )
