"""Webhook delivery settings, nested as ``webhook`` in the operator's settings
(``AGENTRUN_OPERATOR_WEBHOOK__ATTEMPT_TIMEOUT_SECONDS=5``; Helm ``webhook.attemptTimeoutSeconds``).

The default retry schedule is Standard Webhooks' (immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
10 h, 10 h), each delay spread by jitter, and the whole delivery capped at 24 h: an attempt that
would start later than ``max_total_seconds`` after the first one is not made, and the delivery
is recorded as failed.
"""

from __future__ import annotations

from pathlib import Path

from agentrun_contract import limits
from pydantic import BaseModel, Field, SecretStr, field_validator

STANDARD_WEBHOOKS_SCHEDULE_SECONDS: tuple[float, ...] = (
    0,
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    10 * 3600,
)


class WebhookDeliverySettings(BaseModel):
    """How the operator sends completion webhooks."""

    retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: list(STANDARD_WEBHOOKS_SCHEDULE_SECONDS),
        min_length=1,
        description="Delay before each attempt, the first one included (its delay counts from "
        "the run's end): attempt n waits retry_schedule_seconds[n-1] after attempt n-1. The "
        "number of entries is the number of attempts. Default: Standard Webhooks' schedule.",
    )
    jitter_ratio: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Each retry delay is multiplied by a random factor in [1-j, 1+j], so "
        "receivers that failed together are not retried together.",
    )
    attempt_timeout_seconds: float = Field(
        default=15,
        gt=0,
        description="Timeout of one attempt (connect, send and read the response).",
    )
    max_total_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        description="No attempt starts later than this after the delivery's first attempt; "
        "the delivery then fails.",
    )
    retry_after_max_seconds: float = Field(
        default=6 * 3600,
        ge=0,
        description="Largest Retry-After (from a non-2xx answer) honoured; a longer one is cut "
        "to this. A Retry-After only ever delays the next attempt, never advances it.",
    )
    signing_secrets_dir: Path | None = Field(
        default=None,
        description="A directory (a mounted Secret): every file not starting with '.' is one "
        "signing secret ('whsec_<base64>', or base64). Re-read before each delivery, so keys "
        "rotate without a restart.",
    )
    signing_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Signing secrets given directly (JSON list, for dev and tests); merged "
        "with signing_secrets_dir. With several, every one signs (key rotation).",
    )
    max_payload_bytes: int = Field(
        default=limits.WEBHOOK_PAYLOAD_MAX_BYTES,
        ge=2048,
        le=limits.WEBHOOK_PAYLOAD_MAX_BYTES,
        description="Largest body sent; a longer result is cut and result_truncated is true.",
    )
    max_concurrent_deliveries: int = Field(
        default=20,
        ge=1,
        description="Attempts in flight at once, across all runs of this operator.",
    )
    check_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often a pending delivery whose next attempt is not due yet is looked "
        "at again (bounds how late an attempt can start).",
    )
    user_agent: str = Field(
        default="agentrun-webhooks/0.1",
        description="User-Agent header of deliveries.",
    )

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(d < 0 for d in value):
            raise ValueError("retry delays must be >= 0 seconds")
        return value
