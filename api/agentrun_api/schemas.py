"""Response bodies of the HTTP API (documented in the OpenAPI schema at /schema).

Shapes follow shared/CONTRACT.md, "HTTP API" and "Status object", a superset of PraisonAI's
jobs server. Data only: no Litestar here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

RunStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ReasonName = Literal[
    "timeout",
    "cancelled",
    "agent_error",
    "bad_input",
    "missing_credentials",
    "image_pull",
    "unschedulable",
    "cannot_create_pod",
    "evicted",
    "oom_killed",
    "pod_deleted",
    "job_deleted",
    "pending_timeout",
    "internal",
]


class ErrorBody(BaseModel):
    """Every error answer: one sentence a person can act on."""

    detail: str


class ProgressView(BaseModel):
    percentage: float = Field(ge=0, le=100)
    current_step: str | None


class SubmitAccepted(BaseModel):
    """The 202 body of a first ``POST /runs``."""

    job_id: str
    status: Literal["queued"]
    created_at: str = Field(description="ISO 8601 UTC with a Z.")
    poll_url: str
    stream_url: str


class RunStatusView(BaseModel):
    """The status object: a superset of the 202 body."""

    job_id: str
    status: RunStatusName
    progress: ProgressView
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None
    session_id: str | None
    error: str | None
    reason: ReasonName | None
    queue_position: int | None = Field(description="1-based; null when not queued.")
    retry_after: Literal[2, 5] | None = Field(
        description="Seconds before the next poll: 2 queued, 5 running, null once finished."
    )
    poll_url: str
    stream_url: str


class RunListView(BaseModel):
    jobs: list[RunStatusView]
    total: int
    page: int
    page_size: int


class RunResultView(BaseModel):
    job_id: str
    status: RunStatusName
    result: str | None
    error: str | None
    reason: ReasonName | None
    created_at: str | None
    started_at: str | None
    completed_at: str | None
    duration_seconds: float | None


class HealthView(BaseModel):
    status: Literal["healthy", "unhealthy"]
    kubernetes: Literal["reachable", "unreachable"]
    namespace: str
    cache_synced: bool
    cache_stale: bool = Field(
        default=False,
        description="True when the run cache heard nothing from the Kubernetes API for longer "
        "than cache_stale_seconds (then 503 while it re-lists).",
    )
    detail: str | None = None


class LiveView(BaseModel):
    status: Literal["alive"]
